#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, from its seed corpus
# (tests/fuzz/corpus/<name>/). Any crash, leak or sanitizer report fails the run.
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
fail=0
for t in "${targets[@]}"; do
	[ -x "$t" ] || continue
	name=$(basename "$t")
	name=${name#fuzz_}
	seeds="$top/tests/fuzz/corpus/$name"
	work=$(mktemp -d)
	echo "fuzz: $name for ${secs}s"
	dirs=("$work/corpus")
	mkdir -p "$work/corpus"
	[ -d "$seeds" ] && dirs+=("$seeds")
	if ! "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$work/" "${dirs[@]}" >"$work/log" 2>&1; then
		echo "fuzz: $name FAILED; last lines:" >&2
		tail -40 "$work/log" >&2
		# Keep the reproducers (the work directory goes): in BUILD_DIR/fuzz-artifacts, and
		# in the log as base64 (a CI log is often all that is left of a run).
		mkdir -p "$build/fuzz-artifacts"
		for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
			cp "$a" "$build/fuzz-artifacts/${name}-$(basename "$a")"
			echo "fuzz: reproducer $build/fuzz-artifacts/${name}-$(basename "$a") (run: $t FILE), base64:" >&2
			base64 -w 100 "$a" | head -c 65536 >&2
			echo >&2
		done
		fail=1
	else
		grep -E 'stat::number_of_executed_units|Done' "$work/log" | tail -2 || true
	fi
	rm -rf "$work"
done
exit $fail
