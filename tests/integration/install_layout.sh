#!/usr/bin/env bash
# ctest: cost=70 (seconds, about: started first)
# Operations: what `cmake --install` lays out, checked against what uses it. The unit names the
# binary and the files it was installed as (also under cmake's default prefix); its writable
# paths hold the packaged custos.yaml's audit directory and log; systemd-analyze verifies it;
# its system call filter lets through every call custos makes and its sandbox profiles allow
# (systemd-analyze expands the sets); no setting breaks what a sandbox does (sethostname in its
# UTS namespace) or hands custos' directories to root; under its filter, capability bounding
# set and NoNewPrivileges (emulated with libseccomp and setpriv: systemd is not pid 1 here)
# `custos sandbox exec` builds a sandbox and `custos up` confines its proxy and serves; its
# timeouts fit custos' own; logrotate signals the main pid only. Then, in a throwaway root (an
# overlay of this machine's / in a private mount namespace, as ops_package.sh): postinst run
# twice leaves the same state (user, group, modes) and a directory for the VM images that
# QEMU's user (not custos) can read; docs/OPERATIONS.md "First start" and "Key
# rotation" done as written pass `custos config check --host` (the proxy's user reads its key,
# writes its trail); logrotate rotates the log it names; postrm remove keeps the trail, purge
# removes it and the user.
set -uo pipefail
src=${CUSTOS_SRC:?}
build=${CUSTOS_BUILD:?}
work=$(mktemp -d /tmp/custos-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
fails=0
ok() { echo "ok   $*"; }
fail() {
	echo "FAIL $*"
	fails=$((fails + 1))
}
skip() {
	echo "SKIPPED: $*"
	exit 77
}
for tool in cmake systemd-analyze; do
	command -v "$tool" >/dev/null || skip "$tool not installed"
done

dest="$work/root"
if ! DESTDIR="$dest" cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1; then
	cat "$work/install.log"
	fail "cmake --install into a DESTDIR"
	exit 1
fi
unit="$dest/usr/lib/systemd/system/custos.service"
conf="$dest/etc/custos/custos.yaml"
# unit_values KEY: the values of KEY= in the installed unit, one per line
unit_values() { sed -n "s/^$1=//p" "$unit"; }

# ---- layout against the unit and the packaged configuration -------------------------------------
[ -x "$dest/usr/bin/custos" ] && ok "binary at /usr/bin/custos" || fail "no /usr/bin/custos"
[ -f "$unit" ] && ok "unit at /usr/lib/systemd/system" || fail "no unit"
for f in custos.yaml policy.yaml policy.tests.yaml; do
	m=$(stat -c %a "$dest/etc/custos/$f" 2>/dev/null)
	[ "$m" = 640 ] && ok "/etc/custos/$f, 0640" || fail "/etc/custos/$f: mode '$m', want 640"
done
[ -f "$dest/etc/logrotate.d/custos" ] && ok "logrotate snippet" || fail "no /etc/logrotate.d/custos"
for m in man8/custos.8 man5/custos.yaml.5 man5/custos-policy.5; do
	[ -f "$dest/usr/share/man/$m" ] || fail "no man page $m"
done
[ -f "$dest/usr/share/doc/custos/OPERATIONS.md" ] || fail "no docs in /usr/share/doc/custos"

# Every absolute path on the unit's command lines is a file this install made.
missing=""
while read -r p; do
	[ -e "$dest$p" ] || missing="$missing $p"
done < <(grep -E '^Exec[A-Za-z]*=' "$unit" | grep -oE '(^|[ =])[-@+!:]*/[^ ]+' |
	sed -E 's/^[ =]?[-@+!:]*//' | grep -v '^/bin/kill$' | sort -u)
[ -z "$missing" ] && ok "the unit's command lines name installed files" ||
	fail "the unit names files the install did not make:$missing"
pol=$(sed -n 's/^  file: *\([^ ]*\).*/\1/p' "$conf" | tail -1)
[ -n "$pol" ] && [ -f "$dest$pol" ] && ok "custos.yaml's policy.file ($pol) is installed" ||
	fail "custos.yaml's policy.file '$pol' is not installed"

# The unit's ExecStartPre= on the packaged files (config check without --host: the example
# names certificates and hosts of its own).
"$dest/usr/bin/custos" policy check "$dest/etc/custos/policy.yaml" >"$work/pc.out" 2>&1 &&
	ok "policy check passes on the installed policy.yaml (its includes installed)" ||
	fail "policy check on the installed policy.yaml: $(tail -3 "$work/pc.out")"
"$dest/usr/bin/custos" policy test "$dest/etc/custos/policy.yaml" "$dest/etc/custos/policy.tests.yaml" \
	>"$work/pt.out" 2>&1 && ok "policy test passes on the installed policy.tests.yaml" ||
	fail "policy test on the installed files: $(tail -3 "$work/pt.out")"
"$dest/usr/bin/custos" config check "$conf" >"$work/cc.out" 2>&1 &&
	ok "config check passes on the installed custos.yaml" ||
	fail "config check on the installed custos.yaml: $(tail -3 "$work/cc.out")"
# Every file below /etc/custos is a conffile: dpkg keeps the operator's edits on upgrade.
while read -r f; do
	grep -qx "${f#"$dest"}" "$src/packaging/conffiles" ||
		fail "${f#"$dest"} is installed but not in packaging/conffiles (an upgrade overwrites it)"
done < <(find "$dest/etc" -type f)

# What custos' proxy user writes must be writable under ProtectSystem=strict, and no directory
# setting may give it to root: StateDirectory= and friends chown their tree to User= (root
# when unset) at every start.
rw=$(unit_values ReadWritePaths | tr ' ' '\n' | sed 's/^-//')
for d in StateDirectory LogsDirectory CacheDirectory; do
	if [ -n "$(unit_values $d)" ] && [ -z "$(unit_values User)" ]; then
		fail "$d= without User=: systemd chowns that tree (the audit trail) to root at each start"
	fi
done
below_rw() { # below_rw PATH: PATH is below one of the unit's writable paths
	local r
	for r in $rw $(unit_values StateDirectory | sed 's#^#/var/lib/#') \
		$(unit_values LogsDirectory | sed 's#^#/var/log/#'); do
		case "$1/" in "$r"/*) return 0 ;; esac
	done
	return 1
}
adir=$(sed -n '/^audit:/,/^[a-z]/s/^  dir: *\([^ ]*\).*/\1/p' "$conf")
logf=$(sed -n 's/^ *# *file: *\(\/[^ ]*\).*/\1/p' "$conf" | head -1)
rotated=$(grep -E '^/' "$dest/etc/logrotate.d/custos" | awk '{ print $1 }')
for p in $(printf '%s\n' "$adir" "$logf" "$rotated" | sort -u); do
	[ -n "$p" ] && below_rw "$p" && ok "$p is writable for custos (ReadWritePaths)" ||
		fail "'$p' (audit.dir, log.file, the rotated log) is read-only under the unit"
done
[ "$logf" = "$rotated" ] && ok "logrotate rotates custos.yaml's log.file" ||
	fail "logrotate rotates '$rotated', custos.yaml's log.file is '$logf'"

# ---- the unit ------------------------------------------------------------------------------------
sed "s#/usr/bin/custos#$dest/usr/bin/custos#g" "$unit" >"$work/custos.service"
if systemd-analyze verify --man=no "$work/custos.service" >"$work/verify.out" 2>&1 &&
	! grep -i 'unknown\|ignoring' "$work/verify.out" | grep -v 'No such file.*\.target'; then
	ok "systemd-analyze verify accepts the unit"
else
	fail "systemd-analyze verify: $(cat "$work/verify.out")"
fi
[ "$(unit_values Type)" = notify ] && [ "$(unit_values NotifyAccess)" = all ] &&
	ok "Type=notify, NotifyAccess=all (the proxy, a child, sends READY=1)" ||
	fail "Type=notify needs NotifyAccess=all: the proxy, not the main pid, notifies"
unit_values ExecReload | tail -1 | grep -qx '/bin/kill -HUP $MAINPID' &&
	ok "ExecReload ends with SIGHUP to the main pid" || fail "ExecReload does not SIGHUP \$MAINPID"
# The checks before start and reload name custos.yaml only: `config check --host` compiles the
# policy.file it names, so a policy kept elsewhere is checked without editing the unit.
others=$(unit_values 'Exec\(StartPre\|Reload\)' | grep -o '/[^ ]*\.ya\?ml' | grep -vx '/etc/custos/custos.yaml' || true)
[ -z "$others" ] && unit_values ExecStartPre | grep -q 'config check --host /etc/custos/custos.yaml' &&
	ok "ExecStartPre/ExecReload check custos.yaml with --host and name no other file" ||
	fail "the unit's checks name files other than custos.yaml ($others) or lack config check --host"
[ -z "$(unit_values ProtectHostname | grep -ix 'yes\|true\|on\|1')" ] &&
	ok "no ProtectHostname (its filter refuses sethostname in a sandbox's UTS namespace)" ||
	fail "ProtectHostname=yes: sethostname fails with EPERM in every sandbox's UTS namespace"

# The system call filter: systemd-analyze expands the sets; the first SystemCallFilter= line
# without ~ makes it an allow-list, ~ lines take calls out of it.
expand_sets() {
	local x
	for x in "$@"; do
		case $x in
		@*) systemd-analyze syscall-filter --no-pager "$x" 2>/dev/null | sed -n '2,$p' |
			sed 's/^ *//; /^#/d; /^$/d' | while read -r y; do expand_sets "$y"; done ;;
		*) echo "$x" ;;
		esac
	done
}
: >"$work/allow"
: >"$work/deny"
while read -r line; do
	case $line in
	~*) expand_sets ${line#\~} >>"$work/deny" ;;
	*) expand_sets $line >>"$work/allow" ;;
	esac
done < <(unit_values SystemCallFilter)
expand_sets @known | sort -u >"$work/known"
sort -u "$work/allow" -o "$work/allow"
sort -u "$work/deny" -o "$work/deny"
comm -23 "$work/allow" "$work/deny" >"$work/effective"
if [ "$(wc -l <"$work/known")" -lt 300 ] || [ "$(wc -l <"$work/effective")" -lt 200 ]; then
	fail "systemd-analyze syscall-filter expanded too little ($(wc -l <"$work/known") known)"
fi
# What sandbox/seccomp.c allows a model server (default, gpu, the calls it filters by
# argument) and the confined proxy (allow_self), and what custos' own setup calls.
lists=$(sed -n '/^static const char \*const \(allow_default\|allow_gpu\|allow_self\|arg_filtered\)\[\]/,/NULL/p' \
	"$src/sandbox/seccomp.c" | grep -oE '"[a-z0-9_]+"' | tr -d '"')
own="unshare setns clone3 mount umount2 pivot_root open_tree move_mount mount_setattr sethostname
	seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self capset setresuid
	setresgid setgroups pidfd_open pidfd_send_signal memfd_create close_range prctl chown"
n=$(echo "$lists" | sort -u | wc -l)
[ "$n" -ge 150 ] || fail "read only $n names from sandbox/seccomp.c's allow-lists"
blocked="" unknown=""
for c in $lists $own; do
	if ! grep -qx "$c" "$work/known"; then
		unknown="$unknown $c"
	elif ! grep -qx "$c" "$work/effective"; then
		blocked="$blocked $c"
	fi
done
blocked=$(echo "$blocked" | tr ' ' '\n' | sort -u | tr '\n' ' ')
[ -z "${blocked// /}" ] &&
	ok "SystemCallFilter= lets through all $n+ calls custos makes and its sandboxes allow" ||
	fail "SystemCallFilter= kills (SIGSYS) what custos makes or a sandbox profile allows:$blocked"
[ -z "$unknown" ] ||
	echo "note: systemd $(systemctl --version | awk 'NR==1{print $2}') has no name for:$(echo "$unknown" | tr ' ' '\n' | sort -u | tr '\n' ' ')"

# The unit's confinement, emulated for `custos sandbox exec` (systemd is not pid 1 here): its
# SystemCallFilter= as systemd loads it (an allow-list, default kill, plus the calls systemd
# always allows), ProtectHostname='s filter when set, NoNewPrivileges= and the bounding set.
# LeakSanitizer (sanitizer builds) stops the world with ptrace, which @debug kills: off here.
if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null || ! command -v python3 >/dev/null ||
	! python3 -c 'import ctypes; ctypes.CDLL("libseccomp.so.2")' 2>/dev/null; then
	echo "SKIPPED part: emulating the unit needs root, setpriv, python3 and libseccomp.so.2"
else
	cat >"$work/unit_exec.py" <<-'PY'
		import ctypes, errno, os, sys
		allow_file, hostname_deny, argv = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
		lib = ctypes.CDLL("libseccomp.so.2")
		lib.seccomp_init.restype = ctypes.c_void_p
		lib.seccomp_init.argtypes = [ctypes.c_uint32]
		lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
		lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
		lib.seccomp_load.argtypes = [ctypes.c_void_p]
		KILL_PROCESS, ALLOW, EPERM = 0x80000000, 0x7FFF0000, 0x00050000 | errno.EPERM
		def load(default, rules):
		    ctx = lib.seccomp_init(default)
		    for name, action in rules:
		        nr = lib.seccomp_syscall_resolve_name(name.encode())
		        if nr >= 0:
		            lib.seccomp_rule_add(ctx, action, nr, 0)
		    if lib.seccomp_load(ctx) != 0:
		        sys.exit("seccomp_load failed")
		names = [l.strip() for l in open(allow_file) if l.strip()]
		names += ["execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn",
		          "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep",
		          "clock_nanosleep"]  # what systemd always allows
		if hostname_deny:
		    load(ALLOW, [("sethostname", EPERM), ("setdomainname", EPERM)])
		load(KILL_PROCESS, [(n, ALLOW) for n in names])
		os.execv(argv[0], argv)
	PY
	caps=$(unit_values CapabilityBoundingSet | tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_/+/p' | paste -sd,)
	hn=0
	unit_values ProtectHostname | grep -qix 'yes\|true\|on\|1' && hn=1
	nnp=()
	unit_values NoNewPrivileges | grep -qix 'yes\|true\|on\|1' && nnp=(--nnp)
	out=$(ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" timeout 60 setpriv "${nnp[@]}" \
		--bounding-set="-all${caps:+,$caps}" python3 "$work/unit_exec.py" "$work/effective" "$hn" \
		"$dest/usr/bin/custos" sandbox exec -- /bin/hostname 2>&1)
	rc=$?
	[ "$rc" = 0 ] && [ "$out" = default ] &&
		ok "custos sandbox exec runs under the unit's filter and capabilities" ||
		fail "custos sandbox exec under the unit's confinement: status $rc$([ "$rc" = 159 ] &&
			echo ' (SIGSYS: a call outside SystemCallFilter=)'): $(echo "$out" | tail -2)"
	# custos up: the proxy confines itself (Landlock, its own seccomp filter) and serves; a
	# request passes authentication and policy to an upstream that is down (502).
	if command -v curl >/dev/null; then
		key=install-layout-key
		h=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
		port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		mkdir "$work/up"
		printf 'version: 1\nmode: enforce\nprincipals:\n  ops: { match: { api_key_sha256: "%s" } }\nmodels:\n  m: { isolation: none }\nrules:\n  - id: list\n    effect: allow\n    when: { direction: ingress, principal: [ops], route: "GET /v1/models" }\n' \
			"$h" >"$work/up/policy.yaml"
		printf 'version: 1\nlisteners:\n  - id: plain\n    address: "127.0.0.1:%s"\nauth:\n  api_keys:\n    - { id: ops, sha256: "%s" }\nmodels:\n  - id: m\n    upstream: { url: "http://127.0.0.1:9/" }\naudit:\n  dir: %s/up/audit\nadmin:\n  enabled: false\npolicy:\n  file: %s/up/policy.yaml\n' \
			"$port" "$h" "$work" "$work" >"$work/up/custos.yaml"
		chmod 600 "$work/up/custos.yaml"
		ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" setpriv "${nnp[@]}" \
			--bounding-set="-all${caps:+,$caps}" python3 "$work/unit_exec.py" "$work/effective" \
			"$hn" "$dest/usr/bin/custos" up -c "$work/up/custos.yaml" 2>"$work/up/up.log" &
		up_pid=$!
		for _ in $(seq 120); do
			grep -q 'is confined and serving' "$work/up/up.log" && break
			kill -0 "$up_pid" 2>/dev/null || break
			sleep 0.5
		done
		code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
			"http://127.0.0.1:$port/v1/models")
		kill -TERM "$up_pid" 2>/dev/null
		wait "$up_pid"
		rc=$?
		[ "$code" = 502 ] && [ "$rc" = 0 ] &&
			ok "custos up confines its proxy and serves under the unit's filter and capabilities" ||
			fail "custos up under the unit's confinement: HTTP $code, status $rc: $(tail -3 "$work/up/up.log")"
	fi
fi

# Timeouts: READY=1 waits for every sandbox's health check; a stop drains for the shutdown bound,
# then the shipper's 5 s and the audit seal.
secs() { # secs DURATION: seconds in a systemd or custos duration (s, min, m, h)
	case $1 in
	*min) echo $((${1%min} * 60)) ;; *ms) echo 0 ;; *s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;; *h) echo $((${1%h} * 3600)) ;; *) echo "$1" ;;
	esac
}
start_to=$(grep -oE 'start_timeout: *[0-9]+[a-z]+' "$conf" | awk '{ print $2 }' | sort -n | tail -1)
shutdown=$(sed -n 's/^ *shutdown: *\([0-9a-z]*\).*/\1/p' "$conf" | head -1)
tstart=$(unit_values TimeoutStartSec)
tstop=$(unit_values TimeoutStopSec)
[ -n "$tstart" ] && [ "$(secs "$tstart")" -gt "$(secs "${start_to:-90s}")" ] &&
	ok "TimeoutStartSec=$tstart exceeds health.start_timeout $start_to" ||
	fail "TimeoutStartSec='$tstart' (default 90s) does not exceed health.start_timeout $start_to"
[ -n "$tstop" ] && [ "$(secs "$tstop")" -gt $(($(secs "$shutdown") + 5)) ] &&
	ok "TimeoutStopSec=$tstop exceeds limits.timeouts.shutdown $shutdown + 5 s" ||
	fail "TimeoutStopSec='$tstop' leaves no time past limits.timeouts.shutdown $shutdown + 5 s"

# ---- logrotate -----------------------------------------------------------------------------------
lr="$dest/etc/logrotate.d/custos"
if grep -A20 postrotate "$lr" | grep -E '^\s*systemctl kill' | grep -qv -- '--kill-who\(m\)\?=main'; then
	fail "logrotate's systemctl kill signals every process of the unit, sandboxed models included"
else
	ok "logrotate signals the main pid only"
fi
# ---- cmake's default prefix: the unit follows the binary -----------------------------------------
if DESTDIR="$work/local" cmake --install "$build" --prefix /usr/local >/dev/null 2>&1; then
	u="$work/local/usr/local/lib/systemd/system/custos.service"
	if grep -q '^ExecStart=/usr/local/bin/custos up' "$u" && ! grep -q '/usr/bin/custos' "$u" &&
		[ -x "$work/local/usr/local/bin/custos" ]; then
		ok "under /usr/local the unit runs /usr/local/bin/custos"
	else
		fail "under /usr/local the unit runs: $(grep '^ExecStart=' "$u")"
	fi
else
	fail "cmake --install --prefix /usr/local"
fi

# ---- the maintainer scripts and OPERATIONS.md's procedures, in a throwaway root -------------------
state() { # what postinst sets, as one text
	chroot "$r" sh -c 'getent passwd custos; getent group custos
		stat -c "%n %a %U:%G" /var/lib/custos /var/log/custos /var/lib/custos-vm \
			/etc/custos/*.yaml'
}
in_throwaway_root() {
	r="$work/ov/root"
	mount -t tmpfs -o mode=0755 custos-install "$work/ov" &&
		mkdir "$work/ov/up" "$work/ov/wk" "$r" &&
		mount -t overlay overlay -o "lowerdir=/,upperdir=$work/ov/up,workdir=$work/ov/wk" "$r" &&
		mount --bind /dev "$r/dev" && mount -t proc proc "$r/proc" &&
		mount -t tmpfs tmpfs "$r/run" && mount -t tmpfs tmpfs "$r/tmp" &&
		cp -a "$dest/." "$r/" && cp "$src"/packaging/{postinst,prerm,postrm} "$r/tmp/" || {
		echo "FAIL the throwaway root could not be set up"
		exit 1
	}
	in_root() { chroot "$r" "$@"; }
	in_root /tmp/postinst configure && ok "postinst configure" || fail "postinst configure"
	state >"$work/state1"
	in_root /tmp/postinst configure && ok "postinst configure, again" || fail "postinst, twice"
	state >"$work/state2"
	diff "$work/state1" "$work/state2" >/dev/null && ok "postinst twice leaves the same state" ||
		fail "postinst twice: $(diff "$work/state1" "$work/state2")"
	grep -q '^custos:x:[0-9]*:[0-9]*:[^:]*:/var/lib/custos:/usr/sbin/nologin$' "$work/state1" &&
		ok "custos: a system user, home /var/lib/custos, no shell" ||
		fail "custos user: $(head -1 "$work/state1")"
	grep -q '^/var/lib/custos 750 custos:custos$' "$work/state1" &&
		grep -q '^/var/log/custos 750 custos:custos$' "$work/state1" &&
		grep -q '^/etc/custos/custos.yaml 640 root:custos$' "$work/state1" &&
		ok "state and log directories 0750 custos, configuration 0640 root:custos" ||
		fail "modes: $(cat "$work/state1")"
	# The VM images: QEMU runs as libvirt's user, not custos (nobody stands in for it here).
	in_root sh -c 'echo kernel >/var/lib/custos-vm/vmlinuz && chmod 0644 /var/lib/custos-vm/vmlinuz &&
		mkdir -p /var/lib/custos/vm && cp -p /var/lib/custos-vm/vmlinuz /var/lib/custos/vm/'
	if grep -q '^/var/lib/custos-vm 755 root:root$' "$work/state1" &&
		in_root setpriv --reuid=nobody --regid=nogroup --clear-groups cat /var/lib/custos-vm/vmlinuz >/dev/null 2>&1 &&
		! in_root setpriv --reuid=nobody --regid=nogroup --clear-groups cat /var/lib/custos/vm/vmlinuz >/dev/null 2>&1; then
		ok "/var/lib/custos-vm 0755 root: QEMU's user reads the images there (not under /var/lib/custos)"
	else
		fail "VM images: $(grep custos-vm "$work/state1")"
	fi
	in_root rm -rf /var/lib/custos/vm /var/lib/custos-vm/vmlinuz

	# docs/OPERATIONS.md, "First start": a signing key the proxy's user reads, checked by
	# config check --host. The packaged example names hosts and files of its own, so a small
	# custos.yaml of the same layout stands in for it.
	in_root sh -c 'cat >/etc/custos/custos.yaml' <<-'CFG'
		version: 1
		log:
		  file: /var/log/custos/custos.log
		listeners:
		  - id: plain
		    address: "127.0.0.1:18080"
		models:
		  - id: m
		    upstream:
		      url: "http://127.0.0.1:9/"
		audit:
		  dir: /var/lib/custos/audit
		  signing_key: /etc/custos/audit/audit.key
		  public_key: /etc/custos/audit/audit.pub
		admin:
		  enabled: false
		proxy:
		  user: custos
		policy:
		  file: /etc/custos/policy.yaml
	CFG
	in_root /tmp/postinst configure >/dev/null # the modes of the files just written
	# keygen makes its directory 0700 root: the key alone given to custos is out of its reach.
	in_root sh -c 'custos audit keygen /etc/custos/audit >/dev/null &&
		chown custos /etc/custos/audit/audit.key' || fail "keygen"
	in_root custos config check --host /etc/custos/custos.yaml >"$work/check0" 2>&1 &&
		fail "config check --host passes with the key in a directory custos cannot enter" ||
		ok "config check --host: the key out of custos' reach ($(grep -m1 -o 'audit.key.*' "$work/check0" | cut -c1-60))"
	in_root chown -R custos: /etc/custos/audit && ok "First start: keygen, chown -R" ||
		fail "First start: keygen and chown as documented"
	in_root custos config check --host /etc/custos/custos.yaml >"$work/check1" 2>&1 &&
		ok "First start: config check --host passes" ||
		fail "First start: config check --host: $(tail -5 "$work/check1")"
	# "Key rotation", steps 1 and 2.
	in_root sh -c 'custos audit keygen /etc/custos/audit-2027 >/dev/null &&
		chown -R custos: /etc/custos/audit-2027 &&
		sed -i "s#/etc/custos/audit/#/etc/custos/audit-2027/#" /etc/custos/custos.yaml' &&
		ok "Key rotation: keygen, chown, custos.yaml" || fail "Key rotation steps 1-2"
	in_root custos config check --host /etc/custos/custos.yaml >"$work/check2" 2>&1 &&
		ok "Key rotation: config check --host passes with the new key" ||
		fail "Key rotation: config check --host: $(tail -5 "$work/check2")"

	# The logrotate snippet, forced, on this root's log: moved, a new one for custos, the
	# moved one kept (postrotate's systemctl finds no systemd here and is ignored).
	if command -v logrotate >/dev/null; then
		echo line | in_root sh -c 'cat >/var/log/custos/custos.log'
		if in_root logrotate -f -s /tmp/logrotate.state /etc/logrotate.d/custos >"$work/lr.out" 2>&1 &&
			[ "$(in_root stat -c '%a %U:%G %s' /var/log/custos/custos.log)" = "640 custos:custos 0" ] &&
			[ "$(cat "$r/var/log/custos/custos.log.1")" = line ]; then
			ok "logrotate moves custos.log and creates a new one, 0640 custos"
		else
			fail "logrotate: $(tail -5 "$work/lr.out"; ls -l "$r/var/log/custos")"
		fi
	else
		echo "note: logrotate not installed, the snippet not run"
	fi

	mkdir -p "$r/var/lib/custos/audit" && echo evidence >"$r/var/lib/custos/audit/audit-1.jsonl"
	in_root /tmp/prerm remove && in_root /tmp/postrm remove && ok "prerm, postrm remove" ||
		fail "prerm/postrm remove"
	[ -f "$r/var/lib/custos/audit/audit-1.jsonl" ] && in_root getent passwd custos >/dev/null &&
		ok "remove keeps the trail and the user" || fail "remove lost the trail or the user"
	in_root /tmp/postrm purge && ok "postrm purge" || fail "postrm purge"
	! [ -e "$r/var/lib/custos" ] && ! [ -e "$r/var/log/custos" ] &&
		! in_root getent passwd custos >/dev/null && ok "purge removes state, logs and the user" ||
		fail "purge left state, logs or the user"
	exit "$fails"
}
host_state() {
	getent passwd custos || true
	getent group custos || true
	ls -ld /etc/custos /var/lib/custos /var/log/custos /usr/bin/custos 2>&1 || true
}
if [ "$(id -u)" -ne 0 ]; then
	echo "SKIPPED part: the maintainer scripts run in a throwaway root, which needs root"
elif ! mkdir "$work/ov" || ! unshare -m mount -t tmpfs t "$work/ov" >/dev/null 2>&1; then
	echo "SKIPPED part: no private mount namespace with a tmpfs here"
else
	host_state >"$work/host.before"
	export -f ok fail state in_throwaway_root
	export work dest src fails
	unshare -m bash -c in_throwaway_root
	fails=$((fails + $?))
	host_state >"$work/host.after"
	diff "$work/host.before" "$work/host.after" >/dev/null && ok "the host is untouched" ||
		fail "the host changed: $(diff "$work/host.before" "$work/host.after")"
fi
[ "$fails" -eq 0 ]
