#!/usr/bin/env bash
# VM sandbox through `custos up` (docs/PERFORMANCE.md, "VM sandbox ... through custos up").
# One custos.yaml, one plain listener, API-key auth, policy and audit (batch) on every request,
# three models served by the same model-server fixture (the static custos-guest-model-server,
# echo mode, one binary for all three):
#   direct   plain upstream: the fixture on host loopback
#   process  sandbox.type: process (builtin profile; the fixture bound in read-only)
#   vm       sandbox.type: vm, TCG guest, channel auto (virtio-serial here) -> custos-guest
# REPS times (default 3): start `custos up` (boots the VM), record boot-to-ready, then wrk POST
# /v1/chat/completions to each model at 1 and 16 connections (DURATION s each, default 5),
# then stop custos up. Medians over the repetitions; `uptime` before each repetition.
# Needs root (system libvirtd started by hand, as tests/integration/vm_tcg.sh does) and wrk.
#   bench/vm/up.sh [BUILD_DIR]     (default build/rel, a Release tree)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=${1:-build/rel}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
OUT=$top/build/bench-vm
mkdir -p "$OUT"
[ "$(id -u)" -eq 0 ] || { echo "bench-vm up: run as root" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench-vm up: wrk is not installed" >&2; exit 1; }

# gcc 12 -O2 reports maybe-uninitialized false positives in other modules (sandbox/supervise.c)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCUSTOS_TESTS=ON \
	-DCMAKE_C_FLAGS="-Wno-error=maybe-uninitialized" >/dev/null
cmake --build "$BUILD" -j2 --target custos custos-guest custos-guest-model-server >/dev/null
BUILD=$(cd "$BUILD" && pwd)
CUSTOS=$BUILD/cli/custos
FIX=$BUILD/guest/custos-guest-model-server
IMG=$BUILD/vm-image
bash scripts/vm-guest-image.sh "$IMG" "$BUILD/guest/custos-guest" "$FIX" --mode echo >/dev/null
chmod 755 "$BUILD" "$IMG" "$BUILD/guest"
chmod 644 "$IMG/vmlinuz" "$IMG/initrd.img"

WORK=$(mktemp -d /tmp/custos-bench-vm-up.XXXXXX)
chmod 755 "$WORK"
PIDS=() # stopped in reverse order
CUSTOS_PID=""
stop_pid() {
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
	set +e
	[ -n "$CUSTOS_PID" ] && stop_pid "$CUSTOS_PID"
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
	rm -rf "$WORK"
}
trap cleanup EXIT
wait_for() { local n=$(($1 * 10)); shift; while ! "$@" 2>/dev/null; do n=$((n-1)); [ $n -gt 0 ] || return 1; sleep 0.1; done; }

# libvirt by hand (see tests/integration/vm_tcg.sh)
if ! { [ -S /run/libvirt/virtlogd-sock ] && virt-admin -c virtlogd:///system version >/dev/null 2>&1; }; then
	virtlogd -d -p "$WORK/virtlogd.pid"
	wait_for 10 test -s "$WORK/virtlogd.pid"
	PIDS+=("$(cat "$WORK/virtlogd.pid")")
fi
mkdir -p "$WORK/sock" "$WORK/chan"
chown libvirt-qemu: "$WORK/chan" 2>/dev/null || chmod 1777 "$WORK/chan"
printf 'unix_sock_dir = "%s"\nauth_unix_ro = "none"\nauth_unix_rw = "none"\n' "$WORK/sock" >"$WORK/libvirtd.conf"
libvirtd -d -p "$WORK/libvirtd.pid" -f "$WORK/libvirtd.conf"
wait_for 20 test -S "$WORK/sock/libvirt-sock"
PIDS+=("$(cat "$WORK/libvirtd.pid")")
URI="qemu+unix:///system?socket=$WORK/sock/libvirt-sock"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_IN=$(port)
P_DIRECT=$(port)
"$FIX" --listen "127.0.0.1:$P_DIRECT" --mode echo >/dev/null 2>&1 &
PIDS+=($!)
KEY=bench-key-vm
KEYSHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
"$CUSTOS" audit keygen "$WORK/keys" >/dev/null
cat >"$WORK/custos.yaml" <<EOF
version: 1
log: { level: info, format: text }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
auth:
  api_keys:
    - { id: bench, sha256: "$KEYSHA" }
models:
  - id: direct
    upstream: { url: "http://127.0.0.1:$P_DIRECT/" }
  - id: process
    sandbox:
      type: process
      profile: fx
      command: [/opt/fx/custos-guest-model-server, --listen, "127.0.0.1:8000", --mode, echo]
      port: 8000
      health: { start_timeout: 30s }
  - id: vm
    sandbox:
      type: vm
      profile: tcg
      port: 8000
      health: { start_timeout: 300s }
sandbox_profiles:
  fx:
    binds:
      - { src: $BUILD/guest, dst: /opt/fx }
    limits: { memory: 1GiB, pids: 256 }
  tcg:
    vm:
      type: qemu
      libvirt_uri: "$URI"
      vcpus: 1
      memory: 256MiB
      kernel: $IMG/vmlinuz
      initrd: $IMG/initrd.img
      cmdline: "console=ttyS0 quiet panic=-1"
      channel: auto
      channel_socket: $WORK/chan/mux.sock
      console_log: $WORK/console.log
audit: { dir: "$WORK/audit", signing_key: "$WORK/keys/audit.key" }
policy: { file: "$WORK/policy.yaml" }
EOF
cat >"$WORK/policy.yaml" <<EOF
version: 1
mode: enforce
principals:
  bench: { match: { api_key_sha256: "$KEYSHA" } }
rules:
  - id: bench-may-chat
    effect: allow
    when: { direction: ingress, principal: bench }
EOF
chmod 600 "$WORK/custos.yaml" "$WORK/policy.yaml"
"$CUSTOS" config check "$WORK/custos.yaml" >/dev/null

for m in direct process vm; do
	cat >"$WORK/$m.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"$m","messages":[{"role":"user","content":"hello from the benchmark"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
done
chat() {
	curl -s -m 10 -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
		-d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" \
		"http://127.0.0.1:$P_IN/v1/chat/completions"
}

RAW=$OUT/up-raw.txt
: >"$RAW"
for rep in $(seq "$REPS"); do
	echo "# rep $rep $(uptime)" | tee -a "$RAW"
	: >"$WORK/custos.log"
	t0=$(date +%s.%N)
	"$CUSTOS" up -c "$WORK/custos.yaml" >"$WORK/custos.log" 2>&1 &
	CUSTOS_PID=$!
	wait_for 400 grep -q "up: listener 1 on port $P_IN" "$WORK/custos.log" || {
		tail -30 "$WORK/custos.log"
		exit 1
	}
	t1=$(date +%s.%N)
	until chat vm | grep -q choices; do sleep 0.05; done
	t2=$(date +%s.%N)
	vmready=$(sed -n 's/.*model vm: VM .* ready (QEMU under seccomp, channel up) in \([0-9.]*\) s.*/\1/p' "$WORK/custos.log")
	chan=$(sed -n 's/.*VM custos-vm started (channel \([a-z-]*\)).*/\1/p' "$WORK/custos.log")
	printf 'boot rep=%s channel=%s vm_start_to_ready_s=%s up_start_to_listening_s=%.2f up_start_to_first_vm_completion_s=%.2f\n' \
		"$rep" "$chan" "$vmready" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)" | tee -a "$RAW"
	for m in direct process vm; do chat "$m" | grep -q choices || { echo "no answer from $m" >&2; exit 1; }; done
	for c in 1 16; do
		for m in direct process vm; do
			thr=1; [ "$c" -gt 1 ] && thr=2
			r=$(wrk -t$thr -c$c -d"${DURATION}"s --latency -s "$WORK/$m.lua" "http://127.0.0.1:$P_IN/v1/chat/completions")
			rps=$(echo "$r" | awk '/Requests\/sec/ {print $2}')
			p50=$(echo "$r" | awk '$1=="50%" {print $2}')
			p99=$(echo "$r" | awk '$1=="99%" {print $2}')
			errs=$(echo "$r" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
			printf 'wrk rep=%s model=%s c=%s rps=%s p50=%s p99=%s %s\n' "$rep" "$m" "$c" "$rps" "$p50" "$p99" "$errs" | tee -a "$RAW"
		done
	done
	stop_pid "$CUSTOS_PID"
	wait "$CUSTOS_PID" || true
	CUSTOS_PID=""
done
echo "# end $(uptime)" | tee -a "$RAW"

# Medians (wrk's p50/p99 are normalised to microseconds).
python3 - "$RAW" <<'PY' | tee "$OUT/up-results.txt"
import re, statistics, sys
def us(v):
    m = re.match(r"([0-9.]+)(us|ms|s)$", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
rows, boots = {}, []
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if line.startswith("wrk "):
        rows.setdefault((f["model"], int(f["c"])), []).append(
            (float(f["rps"]), us(f["p50"]), us(f["p99"])))
    elif line.startswith("boot "):
        boots.append(f)
med = statistics.median
print("# medians of %d repetitions" % len(boots))
for k in ("vm_start_to_ready_s", "up_start_to_listening_s", "up_start_to_first_vm_completion_s"):
    vals = [float(b[k]) for b in boots if b.get(k)]
    if vals:
        print("boot %-36s median %.2f  (all: %s)" % (k, med(vals), ", ".join("%.2f" % v for v in vals)))
print("%-8s %-4s %10s %10s %10s" % ("model", "c", "req/s", "p50 us", "p99 us"))
for (m, c), v in sorted(rows.items(), key=lambda kv: (kv[0][1], ["direct", "process", "vm"].index(kv[0][0]))):
    print("%-8s %-4d %10.0f %10.0f %10.0f   (req/s: %s)" % (m, c, med(x[0] for x in v), med(x[1] for x in v),
          med(x[2] for x in v), ", ".join("%.0f" % x[0] for x in v)))
PY
