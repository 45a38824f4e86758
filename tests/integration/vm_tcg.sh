#!/usr/bin/env bash
# Integration test of the VM sandbox under TCG: starts virtlogd and libvirtd by hand (own
# socket directory and pidfiles; stopped by PID), builds the test guest (Debian kernel fetched
# with apt-get download + busybox initramfs with custos-guest and the model-server fixture),
# and runs `custos vm run`, which boots it with no network interface, refuses to route until
# QEMU is seen under seccomp, and bridges the channel. Checked:
#   - a chat completion answered from inside the VM (host curl -> custos vm run's forward
#     listener -> multiplexed virtio-serial channel -> custos-guest -> model server in the VM);
#     the proxy's ingress (`custos up` with a vm route) is not merged yet, so the host side is
#     `custos vm run --forward`, not the TLS ingress;
#   - egress from inside the VM: busybox wget with http_proxy=127.0.0.1:3128 -> custos-guest ->
#     channel -> custos vm run -> the host's egress listener. The egress proxy is not written
#     yet, so that listener is a STAND-IN in this script (egress_standin.py) that asks custos'
#     policy engine (`custos policy explain` on a test policy: vm-isolated models may GET the
#     confidential host-data source, everything else is default deny), forwards allowed calls
#     and writes one JSON audit line per decision. Proven for custos: the VM's egress reaches
#     the host only through the channel and is decided by custos policy; the proxying and the
#     audit record are the stand-in's until the egress proxy (and its audit events) exist;
#   - QEMU runs as an unprivileged user under seccomp (-sandbox on,obsolete=deny,...), the live
#     domain has no <interface>, the guest sees only lo;
#   - QEMU killed -> libvirt event -> custos restarts it with backoff (audited in the events
#     file), re-checks seccomp, reconnects, and a second chat completion is answered.
# Exit 0 pass, 1 fail, 77 skipped (reason printed).
set -euo pipefail

SRC=${CUSTOS_SRC:?CUSTOS_SRC is not set}
BUILD=${CUSTOS_BUILD:?CUSTOS_BUILD is not set}
CUSTOS=${CUSTOS_BIN:?CUSTOS_BIN is not set}
AGENT=$BUILD/guest/custos-guest
GUEST_MODEL=$BUILD/guest/custos-guest-model-server
HOST_MODEL=${CUSTOS_FIXTURES:?}/model-server/model-server

skip() {
	echo "SKIPPED: $*"
	exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root to run a system libvirtd by hand"
for t in libvirtd virtlogd virsh qemu-system-x86_64 busybox apt-get dpkg-deb cpio curl python3; do
	command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (scripts/deps.sh)"
done
for f in "$AGENT" "$GUEST_MODEL" "$HOST_MODEL" "$CUSTOS"; do
	[ -x "$f" ] || {
		echo "FAIL: not built: $f"
		exit 1
	}
done

WORK=$(mktemp -d /tmp/custos-vm-tcg.XXXXXX)
chmod 755 "$WORK"
NAME="custos-vmtest-$$"
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
	[ -n "${URI:-}" ] && virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1
	for ((i = ${#PIDS_TO_STOP[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS_TO_STOP[$i]}"
	done
	stop_pid "$LIBVIRTD_PID"
	stop_pid "$VIRTLOGD_PID"
	if [ "$FAILED" -ne 0 ]; then
		echo "--- custos vm run log"
		tail -30 "$WORK/custos.log" 2>/dev/null
		echo "--- guest console"
		tail -30 "$WORK/console.log" 2>/dev/null
		echo "--- events"
		cat "$WORK/events.jsonl" 2>/dev/null
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.2 s
	local n=$(($1 * 5))
	shift
	while ! "$@" 2>/dev/null; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
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

# KVM cannot be trusted here (a paravirtual host reports it and then hangs); TCG always works.
DOMTYPE=qemu

# ---- guest image ------------------------------------------------------------------------------
cat >"$WORK/egress-hook.sh" <<'EOF'
# Test hook run by the guest's init: egress through custos-guest's loopback proxy port.
export http_proxy=http://127.0.0.1:3128
for i in $(seq 90); do
	if wget -q -O /tmp/eg http://data.custos.test/v1/models 2>/dev/null; then
		echo "EGRESS-OK $(cat /tmp/eg)"
		break
	fi
	sleep 1
done
if wget -q -O /tmp/eg2 http://exfil.example/upload 2>/tmp/eg2.err; then
	echo "EGRESS-UNEXPECTED $(cat /tmp/eg2)"
else
	echo "EGRESS-DENIED $(cat /tmp/eg2.err)"
fi
EOF
IMG=$BUILD/vm-image
if ! CUSTOS_VM_GUEST_HOOK="$WORK/egress-hook.sh" bash "$SRC/scripts/vm-guest-image.sh" "$IMG" \
	"$AGENT" "$GUEST_MODEL" --mode canned --canned "Hello from inside the VM." \
	>"$WORK/image.log" 2>&1; then
	cat "$WORK/image.log"
	if grep -q "apt-get download\|package lists" "$WORK/image.log"; then
		skip "the guest kernel could not be fetched from the Debian archive"
	fi
	echo "FAIL: building the guest image"
	exit 1
fi
chmod 755 "$BUILD" "$IMG" 2>/dev/null || true
chmod 644 "$IMG/vmlinuz" "$IMG/initrd.img"

# ---- host side: the egress target and the egress stand-in -----------------------------------
"$HOST_MODEL" --listen 127.0.0.1:0 --port-file "$WORK/data.port" --mode canned \
	--canned "data from the host" >"$WORK/data.log" 2>&1 &
PIDS_TO_STOP+=($!)
wait_for 10 test -s "$WORK/data.port" || {
	fail "host data fixture did not start"
	exit 1
}
# The egress decision is custos' own policy engine (`custos policy explain`, the evaluator's
# matcher); the HTTP proxying and the audit line around it are a stand-in until the egress proxy
# exists.
cat >"$WORK/policy.yaml" <<'EOF'
version: 1
models:
  vm-model:   { isolation: vm }
  proc-model: { isolation: process }
data:
  host-data: { url: "http://data.custos.test/", classification: confidential }
rules:
  - id: chat-vm-model
    effect: allow
    when: { direction: ingress, model: [vm-model, proc-model] }
  - id: vm-models-read-host-data
    effect: allow
    when: { direction: egress, data: host-data, method: GET, model.isolation: { at_least: vm } }
  - id: confidential-needs-vm
    effect: deny
    when: { direction: egress, data.classification: { above: internal }, model.isolation: { below: vm } }
EOF
chmod 600 "$WORK/policy.yaml"
"$CUSTOS" policy check "$WORK/policy.yaml" >/dev/null 2>&1 || {
	fail "test policy does not check"
	exit 1
}
cat >"$WORK/egress_standin.py" <<'EOF'
# STAND-IN for custos' egress proxy (not written yet): the decision comes from
# `custos policy explain` (custos' policy engine); this script forwards allowed calls and
# writes one JSON audit line per decision.
import http.server, json, os, subprocess, sys, time, urllib.parse, urllib.request
custos, policy, model, target_port, audit_path, port_file = sys.argv[1:7]
def decide(method, url):
    req = json.dumps({"direction": "egress", "model": model, "url": url, "method": method})
    out = subprocess.run([custos, "policy", "explain", policy, "--request", req],
                         capture_output=True, text=True).stdout
    decision = rules = None
    for line in out.splitlines():
        if line.startswith("decision: "):
            decision = line.split(": ", 1)[1].strip()
        elif line.startswith("deciding rules: "):
            rules = line.split(": ", 1)[1].strip()
    return decision == "allow", decision or "deny", rules
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        allow, decision, rules = decide("GET", self.path)
        with open(audit_path, "a") as f:
            f.write(json.dumps({"time": time.time(), "direction": "egress", "model": model,
                                "method": "GET", "host": u.hostname, "path": u.path,
                                "decision": decision, "rules": rules}) + "\n")
        if not allow:
            self.send_error(403, "denied by policy")
            return
        with urllib.request.urlopen("http://127.0.0.1:%s%s" % (target_port, u.path)) as r:
            body = r.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(port_file + ".tmp", "w").write(str(s.server_address[1]))
os.rename(port_file + ".tmp", port_file)
s.serve_forever()
EOF
python3 "$WORK/egress_standin.py" "$CUSTOS" "$WORK/policy.yaml" vm-model \
	"$(cat "$WORK/data.port")" "$WORK/egress-audit.jsonl" "$WORK/egress.port" &
PIDS_TO_STOP+=($!)
wait_for 10 test -s "$WORK/egress.port" || {
	fail "egress stand-in did not start"
	exit 1
}

# ---- boot ------------------------------------------------------------------------------------
mkdir -p "$WORK/chan"
chown libvirt-qemu: "$WORK/chan" 2>/dev/null || chmod 1777 "$WORK/chan"
FWD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CUSTOS" vm run --uri "$URI" --name "$NAME" --type "$DOMTYPE" --memory-mib 256 \
	--kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" \
	--cmdline "console=ttyS0 quiet panic=-1" \
	--channel "$WORK/chan/mux.sock" --console-log "$WORK/console.log" \
	--forward "127.0.0.1:$FWD_PORT=8000" --egress-to "127.0.0.1:$(cat "$WORK/egress.port")" \
	--ready-file "$WORK/ready" --events "$WORK/events.jsonl" --timeout-s 120 \
	>"$WORK/custos.log" 2>&1 &
CUSTOS_PID=$!
# The first start on a fresh machine includes libvirt probing QEMU's capabilities (~1 min).
if ! wait_for 150 test -s "$WORK/ready"; then
	fail "custos vm run did not become ready"
	exit 1
fi
echo "ok - VM started, QEMU seccomp checked, channel up"
wait_for 60 grep -q CUSTOS-GUEST-READY "$WORK/console.log" || fail "guest did not boot"
grep -qE "CUSTOS-GUEST-READY interfaces: lo[[:space:]]*$" "$WORK/console.log" ||
	fail "the guest has a network interface besides lo: $(grep READY "$WORK/console.log")"

# ---- isolation as configured -----------------------------------------------------------------
QPID=$(cat /run/libvirt/qemu/"$NAME".pid)
tr '\0' ' ' </proc/"$QPID"/cmdline >"$WORK/qemu.cmdline"
grep -q -- "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny" \
	"$WORK/qemu.cmdline" || fail "QEMU runs without -sandbox on,...: $(cat "$WORK/qemu.cmdline")"
grep -qE -- "-netdev|-nic |virtio-net|e1000" "$WORK/qemu.cmdline" && fail "QEMU has a NIC"
grep -q "^Seccomp:[[:space:]]2" /proc/"$QPID"/status || fail "QEMU has no seccomp filter"
quid=$(awk '/^Uid:/ {print $2}' /proc/"$QPID"/status)
[ "$quid" != 0 ] || fail "QEMU runs as root"
virsh -c "$URI" dumpxml "$NAME" >"$WORK/live.xml"
grep -q "<interface" "$WORK/live.xml" && fail "the live domain has an <interface>"
echo "ok - QEMU pid $QPID: uid $quid, Seccomp 2, -sandbox on, no NIC, guest has lo only"

# ---- ingress: a chat completion answered inside the VM --------------------------------------
chat() {
	curl --silent --show-error --max-time 30 "http://127.0.0.1:$FWD_PORT/v1/chat/completions" \
		-H 'content-type: application/json' \
		-d '{"model":"fixture-model","messages":[{"role":"user","content":"hello VM"}]}'
}
reply=$(chat) || fail "chat completion through the channel failed"
echo "$reply" | grep -q '"content":"Hello from inside the VM."' ||
	fail "unexpected reply: $reply"
echo "ok - chat completion answered from inside the VM"
# Many at once over the one virtio-serial port.
for i in $(seq 16); do chat >"$WORK/par.$i" & done
wait_ok=0
for i in $(seq 16); do
	wait_for 60 grep -q 'Hello from inside the VM.' "$WORK/par.$i" && wait_ok=$((wait_ok + 1))
done
[ "$wait_ok" -eq 16 ] || fail "only $wait_ok of 16 concurrent completions answered"
echo "ok - 16 concurrent completions over one channel"

# ---- egress: from the VM, out through the channel -------------------------------------------
wait_for 90 grep -q "EGRESS-DENIED\|EGRESS-UNEXPECTED" "$WORK/console.log" ||
	fail "the guest's egress calls did not finish"
grep -q 'EGRESS-OK .*fixture-model' "$WORK/console.log" ||
	fail "allowed egress call from the VM did not get the host's answer"
grep -q 'EGRESS-DENIED' "$WORK/console.log" || fail "denied egress call was not denied"
grep -q '"host": "data.custos.test".*"decision": "allow", "rules": "vm-models-read-host-data"' \
	"$WORK/egress-audit.jsonl" ||
	fail "no allow decision recorded for the egress call"
grep -q '"host": "exfil.example".*"decision": "deny"' "$WORK/egress-audit.jsonl" ||
	fail "no deny decision recorded for the egress call"
echo "ok - egress from the VM out through the channel, decided by custos policy (allow + default deny)"

# ---- crash -> restart with backoff, audited ---------------------------------------------------
kill -KILL "$QPID"
wait_for 60 grep -q '"action":"restarted"' "$WORK/events.jsonl" || fail "no restart after crash"
grep -q '"action":"crashed"' "$WORK/events.jsonl" || fail "crash not reported"
wait_for 60 grep -q "channel up again" "$WORK/custos.log" || fail "channel not re-established"
NEWPID=$(cat /run/libvirt/qemu/"$NAME".pid 2>/dev/null || echo none)
[ "$NEWPID" != "$QPID" ] || fail "QEMU pid did not change"
ok=0
for _ in $(seq 30); do
	if chat 2>/dev/null | grep -q 'Hello from inside the VM.'; then
		ok=1
		break
	fi
	sleep 1
done
[ "$ok" -eq 1 ] || fail "no completion after the restart"
echo "ok - QEMU killed: crash audited, restarted with backoff, seccomp re-checked, answering again"

# ---- clean stop -------------------------------------------------------------------------------
stop_pid "$CUSTOS_PID"
rc=0
wait "$CUSTOS_PID" 2>/dev/null || rc=$?
CUSTOS_PID=""
[ "$rc" -eq 0 ] || fail "custos vm run exited with $rc after SIGTERM"
grep -q "Sanitizer" "$WORK/custos.log" && fail "sanitizer report from custos vm run"
grep -q '"action":"stopped"' "$WORK/events.jsonl" || fail "stop not reported"
if virsh -c "$URI" list --name | grep -qx "$NAME"; then
	fail "domain still running after custos vm run stopped"
fi

if [ "$FAILED" -ne 0 ]; then
	exit 1
fi
echo "PASS: vm_tcg"
