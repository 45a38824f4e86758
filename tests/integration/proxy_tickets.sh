#!/usr/bin/env bash
# ctest: serial
# TLS session tickets with rotating keys through the real binary with openssl s_client
# (-sess_out / -sess_in, "Reused" or "New"): resumption works on TLS 1.2 and 1.3 (and on TLS 1.3
# a resumed connection gets a fresh ticket, so a chain of connections keeps resuming); with
# ticket_key_rotation: 5s a ticket is still accepted after its key was rotated out (for one more
# period, and the client gets a fresh ticket), and refused once that period is over (a full
# handshake), even while the ticket's own session is younger than its lifetime.
# The windows are seconds wide; a machine too loaded to hit them makes the test SKIP, not pass.
. "$(dirname "$0")/proxy_lib.bash"

P=5 # seconds: ticket_key_rotation below
make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
sed -i "s|      min_version: \"1.2\"|      min_version: \"1.2\"\n      ticket_key_rotation: ${P}s|" "$work/custos.yaml"
grep -q "ticket_key_rotation: ${P}s" "$work/custos.yaml" || { fail "config not rewritten"; exit 1; }
start_custos "$work/custos.yaml" # waits on the log only: no handshake has made a key yet

now_ms() { date +%s%3N; }
# sess VERSION OUT [IN]: one handshake and request; saves the session (with the ticket the server
# sent after the handshake) to OUT, resumes from IN; prints New or Reused.
sess() {
	local v=$1 out=$2 in=${3:-}
	printf 'GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
		timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost \
			-CAfile "$work/tls/ca.crt" "-$v" -ign_eof -sess_out "$work/$out" \
			${in:+-sess_in "$work/$in"} 2>&1 | sed -n 's/^\(New\|Reused\), TLS.*/\1/p' | head -1
}
sleep_until() { # sleep_until MS_SINCE_T0
	local left=$(($1 - ($(now_ms) - t0)))
	[ "$left" -gt 0 ] && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
}
window() { # window NAME LO_MS HI_MS: SKIP when the step ran outside [LO, HI) ms after t0
	local t=$(($(now_ms) - t0))
	if [ "$t" -lt "$2" ] || [ "$t" -ge "$3" ]; then
		skip "machine too loaded: step '$1' ran ${t} ms after the first ticket, outside [$2, $3) ms"
	fi
}

# ---- t0: the first handshake makes key K0; T1 is issued under it. t0 is when custos made K0
# (the time of its log line), not when the client started: a key is refused 2P after it was
# made, and a slow first handshake would shift every window below by its delay.
check "TLS 1.3 full handshake" "$(sess tls1_3 t1.pem)" New
key0_logged() { grep -q 'session ticket key rotated' "$work/custos.log"; }
wait_until 30 key0_logged || { fail "no 'session ticket key rotated' after the first handshake"; exit 1; }
t0=$(date -d "$(sed -n 's/^\([0-9T:.-]*Z\) .*session ticket key rotated.*/\1/p' "$work/custos.log" | head -1)" +%s%3N)
[ -n "$t0" ] || { fail "no time on the key's log line"; exit 1; }
check "TLS 1.3: resumed from its ticket" "$(sess tls1_3 r.pem t1.pem)" Reused
# TLS 1.3 tickets are single-use: the resumed connection must have been sent a fresh ticket,
# or the client's next connection is a full handshake (wrk, browsers: every other one)
check "TLS 1.3: the resumed connection's fresh ticket resumes the next one" "$(sess tls1_3 r2.pem r.pem)" Reused
check "... and the one after" "$(sess tls1_3 r3.pem r2.pem)" Reused
check "TLS 1.2 full handshake" "$(sess tls1_2 t12.pem)" New
check "TLS 1.2: resumed from its ticket" "$(sess tls1_2 r12.pem t12.pem)" Reused
# T3: a later ticket under K0 (K0 issues for P seconds after t0)
sleep_until 2500
check "T3 from a full handshake under the same key" "$(sess tls1_3 t3.pem)" New
window "T3 issued under K0" 0 $((P * 1000))
t3=$(($(now_ms) - t0))

# ---- after one period: K0 rotated out, still accepted; the client gets a ticket under K1
sleep_until $((P * 1000 + 1500))
check "after rotation: the old ticket is still accepted" "$(sess tls1_3 t2.pem t1.pem)" Reused
window "grace check" $((P * 1000)) $((2 * P * 1000))
check "keys made so far (K0, then K1)" "$(grep -c 'session ticket key rotated' "$work/custos.log")" 2
check "... and the fresh ticket it got resumes" "$(sess tls1_3 t2b.pem t2.pem)" Reused

# ---- after two periods: K0 is dropped; T3's session (issued at t3) is younger than its lifetime
# (2P), so only the dropped key refuses it
sleep_until $((2 * P * 1000 + 500))
window "refusal check (T3's session still within its lifetime)" $((2 * P * 1000)) $((t3 + 2 * P * 1000))
check "after two periods: a ticket of the dropped key gets a full handshake" "$(sess tls1_3 y.pem t3.pem)" New
check "... while the ticket issued under the new key still resumes" "$(sess tls1_3 z.pem t2.pem)" Reused
[ "$fails" -eq 0 ]
