#!/usr/bin/env bash
# Bind sources and targets and symbolic links: a sandbox that can write below a bind source (a
# writable bind holding another bind's source) replaces that source with a link to the host's
# /proc, / or /proc itself; the next start must refuse it, with a message that says why, and
# never mount what the link points to. Links only root could have made (root's, in a directory
# of root's nobody else may write, as /etc/os-release) are still followed. The same for a link
# on the way to a bind's mount point (below a writable bind or the scratch directory): refused,
# and nothing made where it points. Also as an unprivileged caller (setpriv to nobody), whose
# own links are the sandbox's too.
set -euo pipefail
: "${CUSTOS_BIN:?}"
C="$CUSTOS_BIN"
"$C" sandbox exec -- /bin/true 2>/dev/null || { echo "SKIPPED: namespaces unavailable"; exit 77; }
export ASAN_OPTIONS=detect_leaks=0
T=$(mktemp -d /tmp/custos-binds.XXXXXX)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"
fail=0
check() {
	if [ "$2" != "$3" ]; then echo "FAIL: $1: want '$2', got '$3'"; fail=1; else echo "ok: $1"; fi
}

# as: the caller's identity; each case gets its own data directory.
run_case() { # name target as...
	local name=$1 target=$2
	shift 2
	local d="$T/$name"
	mkdir -p "$d/data/models"
	chmod 755 "$d"
	chmod 777 "$d/data" "$d/data/models"
	echo weights >"$d/data/models/w.bin"
	chmod 666 "$d/data/models/w.bin"
	local binds=(--bind "$d/data:/data" --ro-bind "$d/data/models:/models")
	# First start: the sandbox may write /data; it swaps /data/models for a link.
	check "$name: first start" "weights" "$("$@" "$C" sandbox exec "${binds[@]}" -- /bin/sh -c \
		"cat /models/w.bin && rm -rf /data/models && ln -s $target /data/models" 2>/dev/null)"
	[ -L "$d/data/models" ] || { echo "FAIL: $name: the link was not made"; fail=1; }
	# Second start: refused, and nothing of the link's target shows.
	set +e
	out=$("$@" "$C" sandbox exec "${binds[@]}" -- /bin/sh -c 'ls /models; echo STARTED' 2>"$d/err")
	rc=$?
	set -e
	check "$name: second start refused" 1 "$rc"
	case "$out" in *STARTED*) echo "FAIL: $name: the sandbox ran with the link mounted: $out"; fail=1 ;; esac
	grep -q "symbolic link" "$d/err" || { echo "FAIL: $name: message: $(cat "$d/err")"; fail=1; }
}

run_case oldroot-proc /oldroot/proc
run_case host-proc /proc
run_case host-root /
run_case relative ../../..

# Bind targets and symbolic links: a bind's mount point below a writable bind (or the scratch
# directory) is made there when missing. The sandbox leaves a link on that path, to the host
# (/oldroot/..., or ../../../../oldroot/... from /newroot/data), as a directory on the way or
# as the mount point itself; the next start, with a bind there, must be refused, name the
# link, and make nothing where it points (custos made directories and files there).
# target_case name where(mid|last) link-target kind(dir|file) mount-at(/data|/tmp) as...
target_case() {
	local name=$1 where=$2 to=$3 kind=$4 at=$5
	shift 5
	local d="$T/t-$name"
	mkdir -p "$d/data" "$d/outside" "$d/src"
	chmod 755 "$d" "$d/src"
	chmod 777 "$d/data" "$d/outside"
	echo weights >"$d/src/w.bin"
	chmod 644 "$d/src/w.bin"
	local mine=(--bind "$d/data:/data")
	[ "$at" = /tmp ] && mine=(--scratch "$d/data")
	local link="$at/sub" target="$at/sub/leaf"
	[ "$where" = last ] && link="$at/leaf" target="$at/leaf"
	to=${to//@OUT@/$d/outside}
	check "$name: link made" 0 "$(set +e; "$@" "$C" sandbox exec "${mine[@]}" -- /bin/ln -s "$to" "$link" 2>/dev/null; echo $?)"
	local src="$d/src"
	[ "$kind" = file ] && src="$d/src/w.bin"
	set +e
	out=$("$@" "$C" sandbox exec "${mine[@]}" --ro-bind "$src:$target" -- /bin/sh -c 'echo STARTED' 2>"$d/err")
	rc=$?
	set -e
	check "$name: start refused" 1 "$rc"
	case "$out" in *STARTED*) echo "FAIL: $name: the sandbox ran"; fail=1 ;; esac
	grep -q "$link is a symbolic link" "$d/err" || { echo "FAIL: $name: message: $(cat "$d/err")"; fail=1; }
	check "$name: nothing made outside" "" "$(ls -A "$d/outside")"
}

target_case mid-abs-dir mid /oldroot@OUT@ dir /data
target_case mid-rel-dir mid ../../../../oldroot@OUT@ dir /data
target_case mid-abs-file mid /oldroot@OUT@ file /data
target_case mid-rel-file mid ../../../../oldroot@OUT@ file /data
target_case last-abs-dir last /oldroot@OUT@/made dir /data
target_case last-rel-file last ../../../../oldroot@OUT@/made file /data
target_case last-existing-dir last /oldroot@OUT@ dir /data
target_case scratch-mid-abs mid /oldroot@OUT@ dir /tmp
target_case scratch-last-rel last ../../../../oldroot@OUT@/made file /tmp

# Nested mount points below a writable bind still work, made the first time and found the next.
d="$T/nested"
mkdir -p "$d/data" "$d/src"
chmod 755 "$d" "$d/src"
chmod 777 "$d/data"
echo weights >"$d/src/w.bin"
chmod 644 "$d/src/w.bin"
for i in 1 2; do
	check "nested mount points, start $i" "weights weights" "$("$C" sandbox exec --bind "$d/data:/data" \
		--ro-bind "$d/src:/data/models/a/b" --ro-bind "$d/src/w.bin:/data/one/two/w.bin" -- \
		/bin/sh -c 'echo $(cat /data/models/a/b/w.bin /data/one/two/w.bin)' 2>/dev/null)"
done
[ -d "$d/data/models/a/b" ] && [ -f "$d/data/one/two/w.bin" ] || { echo "FAIL: nested mount points not in the writable bind"; fail=1; }

# A link only root could have made is followed (here: root's link in a root-only directory).
if [ "$(id -u)" -eq 0 ]; then
	mkdir -p "$T/root-only/real"
	echo real >"$T/root-only/real/f"
	chmod 755 "$T/root-only" "$T/root-only/real"
	chmod 644 "$T/root-only/real/f"
	ln -s real "$T/root-only/link"
	check "root's link followed" "real" \
		"$("$C" sandbox exec --ro-bind "$T/root-only/link:/x" -- /bin/cat /x/f 2>/dev/null)"
	# ... but not the same link in a directory others may write.
	mkdir "$T/open" && chmod 777 "$T/open"
	ln -s "$T/root-only/real" "$T/open/link"
	check "root's link in a world-writable directory refused" 1 \
		"$(set +e; "$C" sandbox exec --ro-bind "$T/open/link:/x" -- /bin/true 2>/dev/null; echo $?)"
	check "/etc/os-release (a link of the system's)" 1 \
		"$("$C" sandbox exec --ro-bind /etc/os-release:/x -- /bin/sh -c 'grep -c "^ID=" /x' 2>/dev/null)"
	if command -v setpriv >/dev/null &&
		setpriv --reuid=65534 --regid=65534 --clear-groups -- "$C" sandbox exec -- /bin/true 2>/dev/null; then
		run_case unprivileged /oldroot/proc setpriv --reuid=65534 --regid=65534 --clear-groups --
		target_case unprivileged-mid mid /oldroot@OUT@ file /data \
			setpriv --reuid=65534 --regid=65534 --clear-groups --
	else
		echo "note: unprivileged case skipped (no unprivileged user namespaces)"
	fi
fi
[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
