#!/usr/bin/env bash
# audit_on_write_error: what `custos up` does when its audit writer cannot write (here: the
# writer process is killed). audit.on_write_error: deny (the default) refuses requests with
# 503 (fail closed); continue serves them and logs a warning (at most every 10 s). And
# audit.on_full: deny with the writer stopped (SIGSTOP): once the queue is full new requests
# get 503, every request that was served has its event in the trail, and trail.queue_full
# events count the refused requests and their lost events.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
status() {
	curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $ALICE" \
		-d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
}
# writer_pid: the proxy's audit writer (custos-audit, a child of the proxy).
writer_pid() {
	local proxy p
	proxy=$(sed -n 's/.*proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
	for p in $(pgrep -P "$proxy"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = custos-audit ] && echo "$p"
	done
}
# kill_writer: SIGKILL to the writer.
kill_writer() {
	local w
	w=$(writer_pid)
	[ -n "$w" ] || { fail "no audit writer under the proxy"; return 1; }
	kill -KILL "$w"
	# the proxy notices when the writer's socket closes (a request before that still passes)
	wait_until 30 grep -q 'the writer process went away' "$work/custos.log" ||
		fail "the proxy did not notice the writer's end"
	# It logs that line just before it marks the writer dead (audit/client.c, one critical
	# section): a request admitted in between still passes. audit-status reads the mark under
	# the same lock, so once it says failing, every request sees it.
	wait_until 30 writer_failing || fail "audit-status does not report the writer failing"
}
writer_failing() { "$bin" ctl --socket "$work/admin.sock" audit-status 2>/dev/null | grep -q '"writer_failing":true'; }

for mode in deny continue; do
	AUDIT_YAML="  on_write_error: $mode" write_config "$work/custos.yaml" "$FX_PORT"
	start_custos "$work/custos.yaml"
	check "$mode: allowed while the trail works" "$(status)" 200
	kill_writer || continue
	if [ "$mode" = deny ]; then
		check "deny: refused once the writer is gone" "$(status)" 503
	else
		check "continue: still served once the writer is gone" "$(status)" 200
		check "continue: and again" "$(status)" 200
		grep -q 'serving requests without it (audit.on_write_error: continue)' "$work/custos.log" &&
			ok "continue: the warning is logged" || fail "continue: no warning"
		check "continue: one warning for both requests" \
			"$(grep -c 'serving requests without it' "$work/custos.log")" 1
	fi
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null
	mv "$work/custos.log" "$work/custos.$mode.log"
done

# on_full: deny. The writer is stopped, so the queue fills once the socket to it is full; a
# request admitted before that keeps its queue slot and its event is written after SIGCONT.
AUDIT_YAML=$'  on_full: deny\n  queue_size: 16' WORKERS=1 write_config "$work/custos.yaml" "$FX_PORT"
rm -rf "$work/audit"
start_custos "$work/custos.yaml"
check "on_full deny: allowed while the writer runs" "$(status)" 200
w=$(writer_pid)
if [ -z "$w" ]; then
	fail "on_full deny: no audit writer under the proxy"
else
	kill -STOP "$w"
	# 3000 requests on one kept connection (one curl, the URLs in turn); the socket to the
	# stopped writer takes some hundreds of events, the queue 16 more.
	urls=()
	for _ in $(seq 3000); do urls+=("http://127.0.0.1:$PORT2/v1/chat/completions"); done
	curl -sS --max-time 120 -H "Authorization: Bearer $ALICE" -d "$chat" \
		-w '\n%{http_code}\n' "${urls[@]}" >"$work/full.out" 2>&1
	n200=$(grep -cx 200 "$work/full.out" || true)
	n503=$(grep -cx 503 "$work/full.out" || true)
	echo "on_full deny: $n200 served, $n503 refused while the writer was stopped"
	[ "$n503" -gt 0 ] && ok "on_full deny: requests refused with 503 once the queue is full" ||
		fail "on_full deny: no request refused with the writer stopped ($n200 served)"
	[ $((n200 + n503)) -eq 3000 ] && ok "on_full deny: every request answered 200 or 503" ||
		fail "on_full deny: $n200 + $n503 answers of 3000"
	grep -q '"type":"audit_unavailable"' "$work/full.out" &&
		grep -q 'audit queue full: request refused (audit.on_full: deny)' "$work/full.out" &&
		ok "on_full deny: the 503 names the full audit queue" ||
		fail "on_full deny: the 503 does not name the audit queue"
	grep -q 'audit: queue full (16 events): denying requests' "$work/custos.log" &&
		ok "on_full deny: the refusal is logged" || fail "on_full deny: not logged"
	kill -CONT "$w"
	# The queue drains: no slot stays taken (every later request is served). Once the events of
	# every request served so far are on disk the writer has caught up: a request sent before
	# then could still find the queue full, however briefly, on a loaded machine.
	served_on_disk() { [ "$(cat "$work"/audit/*.jsonl 2>/dev/null | grep '"type":"http.request"' |
		grep -c '"status":200')" -ge $((n200 + 1)) ]; }
	wait_until 60 served_on_disk || fail "on_full deny: the writer did not write the $((n200 + 1)) events of the requests served in 60 s"
	ok20=0
	for _ in $(seq 20); do [ "$(status)" = 200 ] && ok20=$((ok20 + 1)); done
	check "on_full deny: served again once the writer runs" "$ok20" 20
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null
	# Every request served has its event: the first, the n200 and the 20 after.
	served=$(cat "$work"/audit/*.jsonl | grep '"type":"http.request"' | grep -c '"status":200' || true)
	check "on_full deny: an event for every request served" "$served" $((n200 + 21))
	# The gap is in the trail: trail.queue_full events count the requests refused (a 503
	# each) and the events lost (those 503s' own events), once the queue took events again.
	sum() { cat "$work"/audit/*.jsonl | grep '"type":"trail.queue_full"' |
		sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" | awk '{s += $1} END {print s + 0}'; }
	check "on_full deny: trail.queue_full counts the requests refused" "$(sum requests_refused)" "$n503"
	check "on_full deny: and their events lost" "$(sum events_refused)" "$n503"
	"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1 && ok "on_full deny: the trail verifies" ||
		{ cat "$work/verify.out"; fail "on_full deny: the trail does not verify"; }
fi

[ "$fails" -eq 0 ] || exit 1
echo "PASS"
