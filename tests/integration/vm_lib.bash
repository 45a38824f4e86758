# Shared by the VM integration tests (vm_tcg.sh, vm_reload.sh), sourced after their checks of
# what the machine has: a work directory, fail/stop_pid/wait_for, the clean-up trap (custos, the
# domains NAME and EXTRA_NAMES, what the test started, then libvirtd and virtlogd, all by PID;
# logs, console and the audit events matching VM_AUDIT_RE shown on failure), and virtlogd and
# libvirtd started by hand with their sockets in the work directory (URI is set). The caller
# sets VM_TEST (the work directory's name), VM_AUDIT_WHAT, VM_AUDIT_RE and VM_AUDIT_TAIL, and
# defines skip.
# shellcheck shell=bash
WORK=$(mktemp -d "/tmp/custos-$VM_TEST.XXXXXX")
chmod 755 "$WORK"
NAME=""
EXTRA_NAMES="" # other domains the test may leave (a replacement's), destroyed with NAME
PIDS_TO_STOP=() # "pid" of processes this test started, stopped in reverse order
VIRTLOGD_PID="" LIBVIRTD_PID="" CUSTOS_PID=""
FAILED=0
fail() {
	echo "FAIL: $*"
	FAILED=1
}

stop_pid() { # stop_pid PID: TERM, wait up to 10 s, then KILL
	local pid=$1 _
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	set +e
	stop_pid "$CUSTOS_PID"
	for n in $NAME $EXTRA_NAMES; do
		[ -n "${URI:-}" ] && virsh -c "$URI" destroy "$n" >/dev/null 2>&1
	done
	for ((i = ${#PIDS_TO_STOP[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS_TO_STOP[$i]}"
	done
	stop_pid "$LIBVIRTD_PID"
	stop_pid "$VIRTLOGD_PID"
	if [ "$FAILED" -ne 0 ]; then
		echo "--- custos up log"
		grep -v '"egress.request' "$WORK/custos.log" 2>/dev/null | tail -40
		echo "--- guest console"
		tail -30 "$WORK/console.log" 2>/dev/null
		echo "--- audit ($VM_AUDIT_WHAT)"
		cat "$WORK"/audit/*.jsonl 2>/dev/null | grep -E "$VM_AUDIT_RE" | tail -"$VM_AUDIT_TAIL"
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds (0) or SECONDS have passed (1),
# the time CMD itself takes included. A condition that changes over time is a function (an
# argument "$(...)" would be expanded once, before the first try).
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@" 2>/dev/null; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}

# ---- libvirt, by hand -------------------------------------------------------------------------
# virtlogd: the QEMU driver talks to it at /run/libvirt/virtlogd-sock; reuse one that already
# runs (a host with libvirt installed as a service), else start our own and stop it by PID.
if [ -S /run/libvirt/virtlogd-sock ] && virt-admin -c virtlogd:///system version >/dev/null 2>&1; then
	echo "using the running virtlogd"
else
	virtlogd -d -p "$WORK/virtlogd.pid" || skip "virtlogd does not start"
	wait_for 10 test -s "$WORK/virtlogd.pid" || skip "virtlogd wrote no pidfile"
	VIRTLOGD_PID=$(cat "$WORK/virtlogd.pid")
fi
# libvirtd: our own, with its sockets in $WORK. QEMU settings come from /etc/libvirt/qemu.conf:
# Debian's defaults are user/group libvirt-qemu and seccomp_sandbox = 1 (both checked below on
# the running QEMU rather than trusted).
mkdir -p "$WORK/sock"
cat >"$WORK/libvirtd.conf" <<EOF
unix_sock_dir = "$WORK/sock"
auth_unix_ro = "none"
auth_unix_rw = "none"
EOF
libvirtd -d -p "$WORK/libvirtd.pid" -f "$WORK/libvirtd.conf" || skip "libvirtd does not start"
wait_for 20 test -S "$WORK/sock/libvirt-sock" || skip "libvirtd made no socket"
LIBVIRTD_PID=$(cat "$WORK/libvirtd.pid")
URI="qemu+unix:///system?socket=$WORK/sock/libvirt-sock"
virsh -c "$URI" version >/dev/null 2>&1 || skip "libvirtd does not answer on $URI"
