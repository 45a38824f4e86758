#!/usr/bin/env bash
# TLS session resumption towards upstreams, through the real binary: the model servers
# (tls_resume_upstream.py, Python's ssl) close the connection after every response, so each
# request is a new TLS connection, and record whether its handshake was full or resumed as the
# server saw it. One worker, so that every request finds the same worker's session slot.
#   - TLS 1.3: the first handshake is full, the next ones resume (each on the ticket the
#     previous connection brought: a ticket is used once);
#   - another upstream (same server, same CA) is not offered the first upstream's session;
#   - TLS 1.2: the session resumes again and again; a failed handshake drops it (the retry
#     after it is a full handshake, not an attempt to resume the same session again). The
#     failure is a connection reset after the ClientHello: on an error with an alert OpenSSL
#     marks the offered session unresumable itself, on a socket error it does not;
#   - the metric custos_upstream_tls_handshakes_total counts full and resumed handshakes;
#   - a worker keeps several TLS 1.3 tickets per upstream, for new connections made at once;
#   - a reload starts with empty slots;
#   - a session whose upstream certificate has expired since its full handshake is not
#     offered (a resumed handshake verifies no certificate): the next connection is a full
#     handshake, which fails verification.
. "$(dirname "$0")/proxy_lib.bash"

command -v python3 >/dev/null || skip "python3 not installed"
make_pki
fx="$(dirname "$0")/tls_resume_upstream.py"
# An upstream certificate valid for EXP_S seconds (the test CA's, made with `openssl ca`), for
# the upstream c, used first and checked again after it expired.
EXP_S=${EXP_S:-20}
make_short_cert exp localhost srv.ext "$EXP_S"
exp_end=$SHORT_CERT_END
start_up() { # NAME [tls1.2] (CERT=, KEY=: another certificate)
	python3 "$fx" "${CERT:-$work/tls/srv.crt}" "${KEY:-$work/tls/srv.key}" "$work/$1.port" \
		"$work/$1.log" "${@:2}" >"$work/$1.out" 2>&1 &
	pids+=($!)
	wait_until 60 test -s "$work/$1.port" || { cat "$work/$1.out"; skip "python TLS fixture did not start"; }
	touch "$work/$1.log"
}
start_up a
start_up b tls1.2
CERT=$work/tls/exp.crt KEY=$work/tls/exp.key start_up c
PA=$(cat "$work/a.port") PB=$(cat "$work/b.port") PC=$(cat "$work/c.port")

write_policy "$work/policy.yaml"
perl -0777 -i -pe 's/model: \[test-model, down-model, slow-model\]/model: [test-model, down-model, slow-model, other-model, exp-model]/; s/(  slow-model: \{ isolation: none \}\n)/$1  other-model: { isolation: none }\n  exp-model: { isolation: none }\n/' "$work/policy.yaml"
EXTRA_MODELS="  - id: slow-model
    upstream:
      url: \"https://localhost:$PB/\"
      ca_file: $work/tls/ca.crt
  - id: other-model
    upstream:
      url: \"https://localhost:$PA/\"
      ca_file: $work/tls/ca.crt
  - id: exp-model
    upstream:
      url: \"https://localhost:$PC/\"
      ca_file: $work/tls/ca.crt" WORKERS=1 write_config "$work/custos.yaml" 1
perl -0777 -i -pe 's|url: "http://127.0.0.1:1/"|url: "https://localhost:'"$PA"'/"\n      ca_file: '"$work"'/tls/ca.crt|' "$work/custos.yaml"
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config"; exit 1; }
start_custos "$work/custos.yaml"

chat() { # MODEL: the status of one chat request over the plain listener
	curl -sS --max-time 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
		-d '{"model":"'"$1"'","messages":[{"role":"user","content":"x"}]}' \
		"http://127.0.0.1:$PORT2/v1/chat/completions"
}
lines() { paste -sd, "$work/$1.log"; }

# The short-lived certificate first, while it is valid: a full handshake, which leaves tickets.
exp_ok=""
if [ "$(chat exp-model)" = 200 ] && [ "$(date +%s)" -lt "$exp_end" ]; then
	check "short-lived certificate: a full handshake while it is valid" "$(lines c)" "TLSv1.3 full"
	exp_ok=1
fi

for i in 1 2 3; do check "TLS 1.3 upstream, request $i" "$(chat test-model)" 200; done
check "TLS 1.3: full handshake, then resumed ones" "$(lines a)" "TLSv1.3 full,TLSv1.3 resumed,TLSv1.3 resumed"
check "another upstream on the same server" "$(chat other-model)" 200
check "its first handshake is full (no session of the other upstream)" "$(sed -n 4p "$work/a.log")" "TLSv1.3 full"
check "and its second one resumes" "$(chat other-model)" 200
check "... resumed" "$(sed -n 5p "$work/a.log")" "TLSv1.3 resumed"

for i in 1 2 3; do check "TLS 1.2 upstream, request $i" "$(chat slow-model)" 200; done
check "TLS 1.2: full, then the same session resumed twice" "$(lines b)" "TLSv1.2 full,TLSv1.2 resumed,TLSv1.2 resumed"
touch "$work/b.log.fail"
check "a failed handshake is retried (the retry answers)" "$(chat slow-model)" 200
check "the retry after the failed handshake is a full one" "$(sed -n '4,5p' "$work/b.log" | paste -sd,)" "aborted,TLSv1.2 full"
check "the next request resumes the new session" "$(chat slow-model)" 200
check "... resumed" "$(sed -n 6p "$work/b.log")" "TLSv1.2 resumed"

curl -sS --max-time 20 --unix-socket "$work/admin.sock" http://admin/metrics >"$work/metrics.txt"
check "metrics: full upstream handshakes" "$(sed -n 's/^custos_upstream_tls_handshakes_total{session="full"} //p' "$work/metrics.txt")" $((4 + ${exp_ok:-0}))
check "metrics: resumed upstream handshakes" "$(sed -n 's/^custos_upstream_tls_handshakes_total{session="resumed"} //p' "$work/metrics.txt")" 6
# Several new connections at a time: a TLS 1.3 ticket is used once, so the slot keeps several.
# The upstream holds its connections until custos has opened all 4 (and offered each the
# slot's newest ticket, if one is left). other-model's slot holds 2 tickets now (a full
# handshake brings 2, a resumption uses 1 and brings 1): of 4 connections at once, 2 resume
# and 2 are full, which leaves 2 + 2 + 2*2 = 6 tickets, so the next 4 at once all resume (a
# single slot would resume one of each 4).
held_batch() {
	local i bp=()
	touch "$work/a.log.hold"
	for i in 1 2 3 4; do
		chat other-model >"$work/batch.$i" &
		bp+=($!)
	done
	opened() { [ "$(ss -Htn state established "( dport = :$PA )" | wc -l)" -ge 4 ]; }
	wait_until 60 opened || fail "custos did not open 4 connections to the upstream at once"
	rm -f "$work/a.log.hold"
	wait "${bp[@]}"
	check "4 requests at once" "$(cat "$work"/batch.*)" 200200200200
	rm -f "$work"/batch.*
}
if command -v ss >/dev/null; then
	held_batch
	check "4 connections at once, 2 tickets: 2 resumed, 2 full" \
		"$(sed -n '6,9p' "$work/a.log" | sort | uniq -c | awk '{print $1, $3}' | paste -sd,)" "2 full,2 resumed"
	held_batch
	check "the next 4 at once all resume" "$(sed -n '10,13p' "$work/a.log" | paste -sd,)" \
		"TLSv1.3 resumed,TLSv1.3 resumed,TLSv1.3 resumed,TLSv1.3 resumed"
else
	echo "SKIPPED (part): ss (iproute2) not installed: connections at once not checked"
fi
# The short-lived certificate has expired (waited for if need be): its tickets are not offered,
# so the connection is a full handshake that fails verification, not a resumption of a session
# with a certificate no longer valid (without the check: 200, "TLSv1.3 resumed"). Before the
# reload below, which would empty the slot for another reason.
if [ -n "$exp_ok" ]; then
	expired() { [ "$(date +%s)" -gt "$((exp_end + 1))" ]; }
	wait_until $((EXP_S + 30)) expired || fail "the short-lived certificate did not expire"
	n=$(wc -l <"$work/c.log")
	check "expired upstream certificate: refused" "$(chat exp-model)" 502
	check "... no resumed handshake with it" "$(sed -n "$((n + 1)),\$p" "$work/c.log" | grep -c resumed)" 0
else
	echo "SKIPPED (part): the short-lived certificate expired before its first use (slow machine)"
fi
# A reload makes new upstream contexts: their slots start empty (the CA or the name may have
# changed), so the first handshake after it is full, the next one resumes.
n=$(wc -l <"$work/a.log")
kill -HUP "$CU_PID"
wait_log 'reloaded' 1
check "after a reload: answered" "$(chat test-model)$(chat test-model)" 200200
check "after a reload: full, then resumed" "$(sed -n "$((n + 1)),$((n + 2))p" "$work/a.log" | paste -sd,)" \
	"TLSv1.3 full,TLSv1.3 resumed"
kill -TERM "$CU_PID"
wait "$CU_PID"
check "custos exits cleanly (no leak under ASan)" "$?" 0
[ "$fails" -eq 0 ]
