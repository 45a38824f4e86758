#!/usr/bin/env bash
# VM sandbox benchmarks (docs/PERFORMANCE.md, "VM sandbox"), side by side in one run:
#  1. boot-to-ready: `custos vm run` start -> QEMU up, seccomp checked, channel connected
#     (includes libvirt's QEMU capability probe) -> first chat completion answered by the guest;
#  2. request latency (1 connection) and throughput (16 connections) of POST
#     /v1/chat/completions against the same model-server fixture (echo mode):
#       direct     the fixture on host loopback, no forwarder
#       sandbox    custos process sandbox (netns, seccomp...), host forwarder thread per
#                  connection + a socket made inside the sandbox's netns (bench/vm/sandbox_forward.c)
#       mux        the channel without a VM: forwarder + vm_channel + socketpair + a second mux
#                  connecting to the direct fixture (bench/vm/mux_forward.c): protocol cost alone
#       vm         TCG guest, `custos vm run --forward`: forwarder + multiplexed virtio-serial
#                  channel + custos-guest + guest loopback
# Needs root (system libvirtd started by hand, as tests/integration/vm_tcg.sh does), wrk.
# DURATION=seconds per wrk run (default 8).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=${1:-build/release}
DURATION=${DURATION:-8}
OUT=$top/build/bench-vm
mkdir -p "$OUT"
[ "$(id -u)" -eq 0 ] || { echo "bench-vm: run as root" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get install -y --no-install-recommends wrk >/dev/null; }

# gcc 12 -O2 reports maybe-uninitialized false positives in other modules (sandbox/supervise.c)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCUSTOS_TESTS=ON \
	-DCMAKE_C_FLAGS="-Wno-error=maybe-uninitialized" >/dev/null
cmake --build "$BUILD" -j2 --target custos model-server custos-guest custos-guest-model-server \
	custos_sandbox custos_core >/dev/null
cc -O2 -D_GNU_SOURCE -I include -o "$OUT/sandbox_forward" bench/vm/sandbox_forward.c \
	"$BUILD"/sandbox/libcustos_sandbox.a "$BUILD"/core/libcustos_core.a \
	-lseccomp -lcap -lyaml -lcrypto -lvirt -lpthread
cc -O2 -D_GNU_SOURCE -I include -I . -o "$OUT/mux_forward" bench/vm/mux_forward.c \
	"$BUILD"/sandbox/libcustos_sandbox.a "$BUILD"/core/libcustos_core.a \
	-lseccomp -lcap -lyaml -lcrypto -lvirt -lpthread
IMG=$BUILD/vm-image
bash scripts/vm-guest-image.sh "$IMG" "$BUILD/guest/custos-guest" \
	"$BUILD/guest/custos-guest-model-server" --mode echo >/dev/null
chmod 755 "$BUILD" "$IMG"

WORK=$(mktemp -d /tmp/custos-bench-vm.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
	set +e
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[$i]}" 2>/dev/null
		for _ in $(seq 50); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
wait_for() { local n=$(($1 * 10)); shift; while ! "$@" 2>/dev/null; do n=$((n-1)); [ $n -gt 0 ] || return 1; sleep 0.1; done; }

# libvirt by hand (see tests/integration/vm_tcg.sh)
if ! [ -S /run/libvirt/virtlogd-sock ]; then
	virtlogd -d -p "$WORK/virtlogd.pid"
	wait_for 10 test -s "$WORK/virtlogd.pid"
	VL=$(cat "$WORK/virtlogd.pid")
fi
mkdir -p "$WORK/sock" "$WORK/chan"
chown libvirt-qemu: "$WORK/chan"
printf 'unix_sock_dir = "%s"\nauth_unix_ro = "none"\nauth_unix_rw = "none"\n' "$WORK/sock" >"$WORK/libvirtd.conf"
libvirtd -d -p "$WORK/libvirtd.pid" -f "$WORK/libvirtd.conf"
wait_for 20 test -S "$WORK/sock/libvirt-sock"
PIDS+=(${VL:-} "$(cat "$WORK/libvirtd.pid")")
URI="qemu+unix:///system?socket=$WORK/sock/libvirt-sock"

P_DIRECT=18301 P_SB=18302 P_VM=18303 P_MUX=18304
"$BUILD/tests/fixtures/model-server/model-server" --listen 127.0.0.1:$P_DIRECT --mode echo >/dev/null 2>&1 &
PIDS+=($!)
"$OUT/mux_forward" $P_MUX $P_DIRECT >"$WORK/mux.log" 2>&1 &
PIDS+=($!)
"$OUT/sandbox_forward" "$top/$BUILD/tests/fixtures/model-server/model-server" $P_SB --mode echo >"$WORK/sb.log" 2>&1 &
PIDS+=($!)

t0=$(date +%s.%N)
"$BUILD/cli/custos" vm run --uri "$URI" --name custos-bench-vm --memory-mib 256 \
	--kernel "$top/$IMG/vmlinuz" --initrd "$top/$IMG/initrd.img" --cmdline "console=ttyS0 quiet" \
	--channel "$WORK/chan/mux.sock" --console-log "$WORK/console.log" \
	--forward 127.0.0.1:$P_VM=8000 --ready-file "$WORK/ready" >"$WORK/vm.log" 2>&1 &
PIDS+=($!)
wait_for 150 test -s "$WORK/ready" || { cat "$WORK/vm.log"; exit 1; }
t1=$(date +%s.%N)
body='{"model":"fixture-model","messages":[{"role":"user","content":"hello from the benchmark"}]}'
until curl -s -m 5 -H 'content-type: application/json' -d "$body" http://127.0.0.1:$P_VM/v1/chat/completions | grep -q choices; do
	sleep 0.05
done
t2=$(date +%s.%N)
wait_for 20 grep -q ready "$WORK/sb.log" || { cat "$WORK/sb.log"; exit 1; }

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA
{
	echo "# bench/vm $(date -u +%FT%TZ) $(nproc) CPUs, $(qemu-system-x86_64 --version | head -1), TCG"
	printf 'boot: start->ready (QEMU up, seccomp checked, channel) %.1f s; ready->first completion (guest boot) %.1f s; total %.1f s\n' \
		"$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$(echo "$t2 - $t0" | bc)"
	for t in direct:$P_DIRECT sandbox:$P_SB mux:$P_MUX vm:$P_VM; do
		name=${t%%:*} port=${t##*:}
		for c in 1 16; do
			thr=1; [ "$c" -gt 1 ] && thr=2
			r=$(wrk -t$thr -c$c -d${DURATION}s --latency -s "$WORK/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
			rps=$(echo "$r" | awk '/Requests\/sec/ {print $2}')
			p50=$(echo "$r" | awk '$1=="50%" {print $2}')
			p99=$(echo "$r" | awk '$1=="99%" {print $2}')
			errs=$(echo "$r" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
			printf '%-8s c=%-3s req/s %-10s p50 %-9s p99 %-9s %s\n' "$name" "$c" "$rps" "$p50" "$p99" "$errs"
		done
	done
} | tee "$OUT/results.txt"
