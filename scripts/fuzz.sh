#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, from its seed corpus
# (tests/fuzz/corpus/<name>/), FUZZ_JOBS (default: the CPUs) at a time. Any crash, leak or
# sanitizer report fails the run.
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
secs=${2:-30}
top=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
targets=("$build"/tests/fuzz/fuzz_*)
if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz: no targets built in $build" >&2
	exit 1
fi
# run_one TARGET REPORT: fuzzes TARGET, its messages (and a failure's reproducers) in REPORT,
# and 0 in REPORT.rc, or 1 on a crash, leak or sanitizer report.
run_one() {
	local t=$1 report=$2 name work a rc=0
	name=$(basename "$t")
	name=${name#fuzz_}
	local seeds="$top/tests/fuzz/corpus/$name"
	work=$(mktemp -d)
	local dirs=("$work/corpus")
	mkdir -p "$work/corpus"
	[ -d "$seeds" ] && dirs+=("$seeds")
	{
		echo "fuzz: $name for ${secs}s"
		if ! "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix="$work/" "${dirs[@]}" >"$work/log" 2>&1; then
			rc=1
			echo "fuzz: $name FAILED; last lines:"
			tail -40 "$work/log"
			# Keep the reproducers (the work directory goes): in BUILD_DIR/fuzz-artifacts,
			# and in the log as base64 (a CI log is often all that is left of a run).
			mkdir -p "$build/fuzz-artifacts"
			for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
				cp "$a" "$build/fuzz-artifacts/${name}-$(basename "$a")"
				echo "fuzz: reproducer $build/fuzz-artifacts/${name}-$(basename "$a") (run: $t FILE), base64:"
				base64 -w 100 "$a" | head -c 65536
				echo
			done
		else
			grep -E 'stat::number_of_executed_units|Done' "$work/log" | tail -2 || true
		fi
	} >"$report" 2>&1
	rm -rf "$work"
	echo "$rc" >"$report.rc"
}

# Each libFuzzer process is one thread: FUZZ_JOBS (default: the CPUs) run at once, each for
# SECONDS, so a 2-core machine fuzzes every target as long in half the wall time. Reports are
# printed in target order once all have ended.
jobs_max=${FUZZ_JOBS:-$(nproc)}
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
i=0
for t in "${targets[@]}"; do
	[ -x "$t" ] || continue
	while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
		wait -n || true
	done
	run_one "$t" "$reports/$i" &
	i=$((i + 1))
done
wait
fail=0
for ((k = 0; k < i; k++)); do
	cat "$reports/$k"
	# no status file: the job itself died (killed, out of memory): a failure too
	[ "$(cat "$reports/$k.rc" 2>/dev/null)" = 0 ] || fail=1
done
[ "$fail" -eq 0 ] || echo "fuzz: FAILED (reports above)" >&2
exit $fail
