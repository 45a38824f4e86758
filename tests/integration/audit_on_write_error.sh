#!/usr/bin/env bash
# audit_on_write_error: what `custos up` does when its audit writer cannot write (here: the
# writer process is killed). audit.on_write_error: deny (the default) refuses requests with
# 503 (fail closed); continue serves them and logs a warning (at most every 10 s).
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
status() {
	curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $ALICE" \
		-d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
}
# kill_writer: SIGKILL to the proxy's audit writer (custos-audit, a child of the proxy).
kill_writer() {
	local proxy p w=""
	proxy=$(sed -n 's/.*proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
	for p in $(pgrep -P "$proxy"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = custos-audit ] && w=$p
	done
	[ -n "$w" ] || { fail "no audit writer under the proxy"; return 1; }
	kill -KILL "$w"
	sleep 0.5
}

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

[ "$fails" -eq 0 ] || exit 1
echo "PASS"
