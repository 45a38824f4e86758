#!/usr/bin/env bash
# Sandbox benchmarks (docs/PERFORMANCE.md, "Process sandbox"):
#  1. spawn-to-exit latency of `true`, side by side in one run: plain fork/exec, unshare
#     (user+net+pid+mount), bubblewrap --unshare-all with equivalent mounts, firejail, and
#     custos sandbox exec with its full setup (seccomp, Landlock, cgroup), without the cpu
#     controller and without cgroups (and bwrap, custos, custos without the cpu controller and
#     without cgroups again, alternated start by start: bench/sandbox/alternate.c); custos --help (the binary's start alone) and custos version
#     (which loads libvirt, libmicrohttpd and Hyperscan, bound on first use, on purpose);
#     with --events (the profile hash, OpenSSL's initialisation); the CPU time of each (perf);
#  2. the seccomp filter's cost on a syscall-heavy loop: plain, inside bwrap (namespaces, no
#     filter) and inside custos (namespaces + filter).
# Installs bubblewrap, firejail and hyperfine (Debian packages) for itself; builds a release
# custos. Run as root for the full comparison. RUNS=N changes the sample count, REPS=N the
# number of repetitions (default 3; medians of each and the median of those are printed).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
RUNS=${RUNS:-200}
REPS=${REPS:-3}
REL=${1:-build/release} # release build directory (make bench-sandbox passes it)
case "$REL" in /*) ;; *) REL=$top/$REL ;; esac
OUT=${OUT:-$top/build/bench-sandbox}
mkdir -p "$OUT"

bash scripts/deps.sh >/dev/null
need=()
for p in bubblewrap firejail hyperfine; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench: run as root or install: ${need[*]}" >&2
		exit 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi

cmake -S . -B "$REL" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$REL" -j2 --target custos >/dev/null
C=$REL/cli/custos
cc -O2 -o "$OUT/syscall_loop" bench/sandbox/syscall_loop.c
cc -O2 -o "$OUT/alternate" bench/sandbox/alternate.c
# The library path `custos up` takes: no custos process start per sandbox.
cc -O2 -D_GNU_SOURCE -I include -o "$OUT/spawn_loop" bench/sandbox/spawn_loop.c \
	"$REL/sandbox/libcustos_sandbox.a" "$REL/core/libcustos_core.a" \
	-lseccomp -lcap -lyaml -lssl -lcrypto -lpthread
chmod 755 "$OUT" "$OUT/syscall_loop"

BWRAP=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin
	--symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc
	--dev /dev --tmpfs /tmp)
echo "== machine: $(nproc) CPU, kernel $(uname -r), uid $(id -u), load average:" \
	"$(cut -d' ' -f1-3 /proc/loadavg), $(readelf -d "$C" | grep -c NEEDED) libraries linked," \
	"custos cgroup backend:" \
	"$("$C" --log-level debug sandbox exec -- /bin/true 2>&1 | grep -o 'cgroup [a-z0-9]*' | head -1)"
echo "== 1. spawn-to-exit of true ($REPS repetitions of one hyperfine run, $RUNS runs each)"
for rep in $(seq 1 "$REPS"); do
	hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$OUT/spawn.$rep.json" --style none \
		-n plain "/bin/true" \
		-n unshare "unshare --user --map-root-user --net --pid --fork --mount /bin/true" \
		-n bwrap "${BWRAP[*]} /bin/true" \
		-n firejail "firejail --quiet --noprofile /bin/true" \
		-n custos "$C sandbox exec -- /bin/true" \
		-n custos-nocpu "$C sandbox exec --cpu 0 -- /bin/true" \
		-n custos-nocgroup "$C sandbox exec --cgroup off -- /bin/true" \
		-n custos-events "$C sandbox exec --events /dev/null -- /bin/true" \
		-n custos-startup-only "$C --help" \
		-n custos-version "$C version" >/dev/null 2>&1
	echo "   repetition $rep done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
# Per command: the median of each repetition, and the median of those (ms); custos/bwrap ratio.
jq -rs '[.[].results] | transpose | map({c: .[0].command, m: map(.median * 1000)})
	| (map(select(.c == "bwrap"))[0].m | sort | .[length / 2 | floor]) as $bw
	| .[] | (.m | sort | .[length / 2 | floor]) as $med
	| "\(.c)\tmedians \(.m | map(. * 100 | floor / 100) | join(" / ")) ms\tmedian \($med * 100 | floor / 100) ms\tx bwrap \($med / $bw * 100 | floor / 100)"' \
	$(seq -f "$OUT/spawn.%g.json" 1 "$REPS")

# The same starts alternated one by one (every command under the same load drift): medians.
ALT=${ALT:-$((RUNS * 2))}
echo "== 1a. spawn-to-exit of true, alternated ($ALT rounds: median, quartiles, x bwrap)"
"$OUT/alternate" "$ALT" "$(command -v bwrap)" "${BWRAP[@]:1}" /bin/true ,, \
	"$C" sandbox exec -- /bin/true ,, "$C" sandbox exec --cpu 0 -- /bin/true ,, \
	"$C" sandbox exec --cgroup off -- /bin/true ,, /bin/true

# CPU time per start (all threads and children), steadier than wall time on a shared machine.
if command -v perf >/dev/null; then
	echo "== 1c. CPU per start (perf stat -r $RUNS: task-clock ms, page faults, context switches)"
	cpu() { # label cmd...
		local l=$1
		shift
		perf stat -x, -r "$RUNS" -e task-clock,page-faults,context-switches "$@" 2>&1 >/dev/null |
			awk -F, -v l="$l" '{v[$3]=$1} END {printf "%s\ttask-clock %.2f ms\tpage faults %d\tcontext switches %d\n", l, v["task-clock"], v["page-faults"], v["context-switches"]}'
	}
	cpu plain /bin/true
	cpu bwrap "${BWRAP[@]}" /bin/true
	cpu custos "$C" sandbox exec -- /bin/true
	cpu custos-nocgroup "$C" sandbox exec --cgroup off -- /bin/true
	cpu custos-events "$C" sandbox exec --events /dev/null -- /bin/true
	cpu custos-startup-only "$C" --help
fi

echo "== 1b. through the library (sandbox_spawn + wait + free of /bin/true, $RUNS runs)"
printf 'library full setup\t%s\n' "$("$OUT/spawn_loop" "$RUNS")"
printf 'library --cgroup off\t%s\n' "$("$OUT/spawn_loop" "$RUNS" --cgroup off)"

echo "== 2. seccomp cost on a syscall loop (ns per call, best of 3)"
best() { # label cmd...
	local b=""
	for _ in 1 2 3; do
		r=$("$@" 2>/dev/null | tail -1)
		v=$(echo "$r" | jq .getppid_ns)
		if [ -z "$b" ] || [ "$(echo "$v < $(echo "$b" | jq .getppid_ns)" | bc -l 2>/dev/null || echo 0)" = 1 ]; then b=$r; fi
	done
	echo "$b"
}
N=2000000
printf 'plain\t%s\n' "$(best "$OUT/syscall_loop" $N)"
printf 'bwrap (no filter)\t%s\n' "$(best "${BWRAP[@]}" --ro-bind "$OUT/syscall_loop" /opt/loop /opt/loop $N)"
printf 'custos (filter)\t%s\n' "$(best "$C" sandbox exec --ro-bind "$OUT/syscall_loop:/opt/loop" -- /opt/loop $N)"
printf 'custos denied calls\t%s\n' "$("$C" sandbox exec --events /dev/null --ro-bind "$OUT/syscall_loop:/opt/loop" -- /opt/loop 1000 --denied 5000 2>/dev/null)"
