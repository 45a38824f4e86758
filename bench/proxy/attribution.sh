#!/usr/bin/env bash
# bench/proxy/attribution.sh: how much of custos' CPU per keep-alive request is the per-request
# audit trail. Builds a second custos from the current tree in a scratch git worktree with one
# change and runs ab_keepalive.sh with the normal build as "before" and that build as "after",
# side by side with HAProxy, BREAKDOWN=1. The change (VARIANT):
#   events (default)  proxy/emit.c's emit_event returns before it builds or submits anything:
#                     no request event exists (checkpoints still do).
#   writer            the events are built, queued and shipped to the writer process as usual,
#                     but audit/writer.c's process_pending acknowledges each group at once
#                     without rendering, hashing, writing or committing it: what the producer
#                     side costs, and what the writer's own work costs the rest.
# The modified build exists only for this measurement: it is never installed, and custos itself
# has no switch that turns the trail off.
# Usage: bench/proxy/attribution.sh [BUILD_DIR]   (default build/release; built if missing)
# Env: VARIANT (events|writer); as ab_keepalive.sh (ROUNDS, DURATION, CASES, AUDIT_WINDOW...);
# KEEP=1 keeps the worktree.
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
VARIANT=${VARIANT:-events}
case $VARIANT in
events) # The first statement of emit_event returns.
	perl -0pi -e 's/(custos_err emit_event\([^)]*\)\n\{\n)/$1\t(void)w;\n\t(void)b;\n\t(void)in;\n\treturn CUSTOS_OK; \/* attribution.sh: no request event *\/\n/' \
		"$wt/proxy/emit.c"
	grep -q 'attribution.sh: no request event' "$wt/proxy/emit.c" ||
		{ echo "attribution: could not patch proxy/emit.c (emit_event changed?)" >&2; exit 1; }
	what="no request events" ;;
writer) # The first statement of process_pending acknowledges what is pending and drops it.
	perl -0pi -e 's/(static custos_err process_pending\(struct wstate \*w, int sock\)\n\{\n)/$1\tif (w) { \/* attribution.sh: nothing written *\/\n\t\tbuf_reset(&w->pending);\n\t\tw->acked_gen = w->pending_gen;\n\t\tsend_ack(w, sock, CUSTOS_OK);\n\t\treturn CUSTOS_OK;\n\t}\n/' \
		"$wt/audit/writer.c"
	grep -q 'attribution.sh: nothing written' "$wt/audit/writer.c" ||
		{ echo "attribution: could not patch audit/writer.c (process_pending changed?)" >&2; exit 1; }
	what="events shipped, not written" ;;
*) echo "attribution: VARIANT is events or writer, not $VARIANT" >&2; exit 2 ;;
esac
# The rest of the patched function stays valid C (and used): the build keeps -Werror.
cmake -S "$wt" -B "$wt/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUSTOS_TESTS=OFF >/dev/null
cmake --build "$wt/build" -j"$(nproc)" --target custos >/dev/null
echo "attribution: before = $build (trail on), after = $wt/build ($what)"
BREAKDOWN=1 bash "$top/bench/proxy/ab_keepalive.sh" "$build" "$wt/build"
