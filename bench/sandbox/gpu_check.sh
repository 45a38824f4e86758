#!/usr/bin/env bash
# GPU check for the process sandbox (issue 6): nvidia-smi and a small CUDA workload inside a
# gpu: nvidia sandbox and outside it, timed side by side, plus any seccomp denials the NVIDIA
# stack hit (they would be the gpu seccomp profile's gaps).
#
#   bash bench/sandbox/gpu_check.sh --build   # here: builds build/gpu-check/{sandbox_run,cuda_check}
#   bash bench/sandbox/gpu_check.sh           # on the GPU machine (carry build/gpu-check)
#
# sandbox_run is statically linked (no custos build needed there); cuda_check needs only libc
# and the driver's libcuda.so.1 (dlopen, PTX JIT: no CUDA toolkit). Results go to stdout and
# $OUT/gpu_check.txt (OUT defaults to build/gpu-check).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
G=$top/build/gpu-check
OUT=${OUT:-$G}
mkdir -p "$G" "$OUT"

if [ "${1:-}" = "--build" ]; then
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
		cmake --build build/release -j2 --target custos_sandbox custos_core >/dev/null || exit 1
	cc -O2 -D_GNU_SOURCE -I include -static -o "$G/sandbox_run" bench/sandbox/sandbox_run.c \
		build/release/sandbox/libcustos_sandbox.a build/release/core/libcustos_core.a \
		-lseccomp -lcap -lyaml -lcrypto -lpthread 2>/dev/null || exit 1
	cc -O2 -o "$G/cuda_check" bench/sandbox/cuda_check.c -ldl || exit 1
	chmod 755 "$G" "$G"/*
	echo "built: $G/sandbox_run $G/cuda_check"
	exit 0
fi

exec > >(tee "$OUT/gpu_check.txt") 2>&1
R=$G/sandbox_run
[ -x "$R" ] || { echo "SKIPPED: $R missing (run with --build first and carry build/gpu-check)"; exit 77; }
ls /dev/nvidia0 /dev/nvidiactl >/dev/null 2>&1 || { echo "SKIPPED: no NVIDIA device nodes"; exit 77; }
SMI=$(command -v nvidia-smi || true)
[ -n "$SMI" ] || { echo "SKIPPED: nvidia-smi not found"; exit 77; }
CC=$G/cuda_check
if ! "$CC" >/dev/null 2>&1 && command -v cc >/dev/null; then
	cc -O2 -o "$OUT/cuda_check" bench/sandbox/cuda_check.c -ldl 2>/dev/null && CC=$OUT/cuda_check
fi
chmod 755 "$G" "$OUT" 2>/dev/null
echo "== machine: $(uname -r), $(nproc) CPU, uid $(id -u); $("$SMI" --query-gpu=name,driver_version --format=csv,noheader | head -1)"
EV=$OUT/gpu_events.json
: >"$EV"
# Driver libraries outside /usr (container images) and the check programs.
BINDS=(--ro-bind /usr/local/nvidia --ro-bind /opt --ro-bind "$G:/opt/gpu-check")
[ "$CC" = "$OUT/cuda_check" ] && BINDS+=(--ro-bind "$OUT/cuda_check:/opt/cuda_check") && CCIN=/opt/cuda_check || CCIN=/opt/gpu-check/cuda_check
SMIDIR=$(dirname "$(readlink -f "$SMI")")
case "$SMIDIR" in /usr/*) ;; *) BINDS+=(--ro-bind "$SMIDIR") ;; esac
IN=("$R" --profile gpu-nvidia "${BINDS[@]}" --events "$EV" --)

t() { # runs "$@" 5 times, prints the median wall ms and the last output line
	local times=() out rc
	for _ in 1 2 3 4 5; do
		local a b
		a=$(date +%s%N)
		out=$("$@" 2>&1)
		rc=$?
		b=$(date +%s%N)
		times+=($(((b - a) / 1000)))
	done
	local med
	med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
	printf 'median %d.%03d ms, exit %d: %s\n' $((med / 1000)) $((med % 1000)) "$rc" "$(echo "$out" | tail -1)"
}
Q=(--query-gpu=name,memory.total,utilization.gpu --format=csv,noheader)
echo "== nvidia-smi ${Q[*]}"
printf 'outside: '; t "$SMI" "${Q[@]}"
printf 'inside:  '; t "${IN[@]}" "$SMI" "${Q[@]}"
printf 'outside nvidia-smi -L: '; t "$SMI" -L
printf 'inside  nvidia-smi -L: '; t "${IN[@]}" "$SMI" -L
echo "== CUDA workload (PTX JIT, 200 x 16M-float kernel; init, kernels, total)"
printf 'outside: '; t "$CC"
printf 'inside:  '; t "${IN[@]}" "$CCIN"
echo "== seccomp denials inside (the gpu profile's gaps, if any):"
if command -v jq >/dev/null; then
	jq -r 'select(.event=="violation") | .syscall' "$EV" | sort | uniq -c
	jq -r 'select(.event=="start") | .detail' "$EV" | sort -u
else
	grep -o '"syscall":"[a-z0-9_]*"' "$EV" | sort | uniq -c
fi
echo "== done ($OUT/gpu_check.txt)"
