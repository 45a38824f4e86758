#!/usr/bin/env bash
# bench/proxy/attribution.sh: how much of custos' CPU per keep-alive request is the per-request
# audit trail. Builds a second custos from the current tree in a scratch git worktree with one
# change, proxy/emit.c's emit_event returning before it builds or submits anything (no request
# event reaches the writer; checkpoints still do), and runs ab_keepalive.sh with the normal build
# as "before" and that build as "after", side by side with HAProxy, BREAKDOWN=1.
# The modified build exists only for this measurement: it is never installed, and custos itself
# has no switch that turns the trail off.
# Usage: bench/proxy/attribution.sh [BUILD_DIR]   (default build/release; built if missing)
# Env: as ab_keepalive.sh (ROUNDS, DURATION, CASES, AUDIT_WINDOW...); KEEP=1 keeps the worktree.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build/release}
case "$build" in /*) ;; *) build="$top/$build" ;; esac
if [ ! -x "$build/cli/custos" ]; then
	cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$build" -j"$(nproc)" --target custos >/dev/null
fi

wt=$(mktemp -d /tmp/custos-notrail.XXXXXX)
cleanup() {
	if [ -z "${KEEP:-}" ]; then
		git -C "$top" worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
	else
		echo "kept $wt"
	fi
}
trap cleanup EXIT
git -C "$top" worktree add --detach -q "$wt" HEAD
# The one change: the first statement of emit_event returns.
perl -0pi -e 's/(custos_err emit_event\([^)]*\)\n\{\n)/$1\t(void)w;\n\t(void)b;\n\t(void)r;\n\treturn CUSTOS_OK; \/* attribution.sh: no request event *\/\n/' \
	"$wt/proxy/emit.c"
grep -q 'attribution.sh: no request event' "$wt/proxy/emit.c" ||
	{ echo "attribution: could not patch proxy/emit.c (emit_event changed?)" >&2; exit 1; }
# The rest of the function stays valid C (and used): the build keeps -Werror.
cmake -S "$wt" -B "$wt/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUSTOS_TESTS=OFF >/dev/null
cmake --build "$wt/build" -j"$(nproc)" --target custos >/dev/null
echo "attribution: before = $build (trail on), after = $wt/build (no request events)"
BREAKDOWN=1 bash "$top/bench/proxy/ab_keepalive.sh" "$build" "$wt/build"
