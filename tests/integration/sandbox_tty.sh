#!/usr/bin/env bash
# The sandbox and custos' terminal: custos runs on a pseudo-terminal (script(1)), as an operator
# runs it from a shell. The command keeps the terminal on its stdio but must not have it as its
# controlling terminal (a session of its own), and TIOCSTI (input injection into the operator's
# shell) must be refused and audited in every seccomp profile, the gpu one (any other ioctl
# allowed) included.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
ESCAPE="$CUSTOS_FIXTURES/escape/escape"
C="$CUSTOS_BIN"
command -v script >/dev/null || { echo "SKIPPED: script(1) (util-linux) missing"; exit 77; }
"$C" sandbox exec -- /bin/true 2>/dev/null || { echo "SKIPPED: namespaces unavailable"; exit 77; }
export ASAN_OPTIONS=detect_leaks=0
T=$(mktemp -d /tmp/custos-tty.XXXXXX)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"
fail=0
check() {
	if [ "$2" != "$3" ]; then echo "FAIL: $1: want '$2', got '$3'"; fail=1; else echo "ok: $1"; fi
}
# Runs custos on a new pseudo-terminal; prints the fixture's line (the terminal adds CRs).
on_tty() {
	script -qec "$*" /dev/null </dev/null 2>/dev/null | tr -d '\r' | grep -o 'isatty.*' || true
}

for sc in default gpu custom; do
	extra=""
	[ "$sc" = custom ] && extra="--allow-syscall ioctl"
	out=$(on_tty "$C" sandbox exec --seccomp "$sc" $extra --events "$T/$sc.json" \
		--ro-bind "$ESCAPE:/opt/escape" -- /opt/escape --tty)
	check "seccomp $sc: no controlling terminal, TIOCSTI refused" "isatty 1 tty ENXIO sti EPERM" "$out"
	jq -e -s 'any(.[]; .event == "violation" and .syscall == "ioctl")' "$T/$sc.json" >/dev/null ||
		{ echo "FAIL: seccomp $sc: TIOCSTI not audited"; fail=1; }
done
# The gpu profile still lets every other ioctl through (a device's request: /dev/null answers
# ENOTTY once seccomp lets it pass).
check "gpu: other ioctls pass" "ioctl ENOTTY" \
	"$("$C" sandbox exec --seccomp gpu --ro-bind "$ESCAPE:/opt/escape" -- /opt/escape --ioctl /dev/null 2>/dev/null)"
[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
