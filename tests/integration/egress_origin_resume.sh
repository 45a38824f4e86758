#!/usr/bin/env bash
# Egress: TLS sessions with origins are resumed. Two intercepted HTTPS data sources
# (tls_resume_upstream.py: TLS 1.3 and TLS 1.2, closing after each response, recording per
# connection whether the handshake was full or resumed as the server saw it); each curl through
# the egress proxy is a new tunnel, so a new TLS connection from custos to the origin:
#   - TLS 1.3: full, then resumed (each on the ticket the previous connection brought); then
#     rounds of five GETs at once (the fixture holds the five connections until each has sent
#     its ClientHello, so all five chose their session before any brought a new ticket): the
#     first round resumes what is kept and brings more tickets (two a full handshake), and the
#     second resumes all five (the origin keeps a stack of sessions, not one: with one, four
#     of them would be full handshakes);
#   - TLS 1.2: full, then resumed; a failed handshake (the origin resets the connection after
#     the ClientHello) drops the session, so the next connection is a full handshake;
#   - the other source's origin never got a session of the first (its first handshake is full).
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-resume curl openssl python3

P_D=$(port) P_IN=$(port) P_EG=$(port)
cd "$W" || exit 1
eg_upstream_pki
FX="$SRC/tests/integration/tls_resume_upstream.py"
python3 "$FX" srv.crt srv.key a.port a.log >a.out 2>&1 &
PIDS+=($!)
python3 "$FX" srv.crt srv.key b.port b.log tls1.2 >b.out 2>&1 &
PIDS+=($!)
P_A=$(eg_port_file "$W/a.port") || exit 1
P_B=$(eg_port_file "$W/b.port") || exit 1
touch a.log b.log

eg_m1_conf info "$(eg_source_yaml ra "https://localhost:$P_A/" public "intercept: true, ca_file: \"$W/upca.crt\"")
$(eg_source_yaml rb "https://localhost:$P_B/" public "intercept: true, ca_file: \"$W/upca.crt\"")" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
eg_m1_policy <<EOY
  ra: { url: "https://localhost:$P_A/", classification: public }
  rb: { url: "https://localhost:$P_B/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: [ra, rb], method: GET }
EOY
eg_start # not the origins' ports: a probe would be a connection in their logs

get() { curl -s -o /dev/null -w '%{http_code}' --max-time 20 --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$1/x"; }
lines() { paste -sd, "$W/$1.log"; }
is() { [ "$1" = "$2" ] || { echo "  got '$1', want '$2'" >&2; return 1; }; }

check "TLS 1.3 origin: three GETs answered" is "$(get "$P_A")$(get "$P_A")$(get "$P_A")" 200200200
check "TLS 1.3 origin: full, then resumed, resumed" is "$(lines a)" "TLSv1.3 full,TLSv1.3 resumed,TLSv1.3 resumed"
# N GETs at once through the proxy (each its own tunnel, so its own origin connection), held
# by the fixture until all N have sent their ClientHello; prints their status codes.
at_once() {
	echo "$2" >"$W/a.log.batch"
	local i pids=()
	for ((i = 0; i < $2; i++)); do
		get "$1" >"$W/once.$i" &
		pids+=($!)
	done
	wait "${pids[@]}"
	for ((i = 0; i < $2; i++)); do cat "$W/once.$i"; done
}
check "TLS 1.3 origin: five GETs at once answered" is "$(at_once "$P_A" 5)" 200200200200200
check "all five held together by the origin" is "$(grep -c 'batch short' "$W/a.log")" 0
check "five more at once answered" is "$(at_once "$P_A" 5)" 200200200200200
check "TLS 1.3 origin: each of the five resumed (one ticket each)" \
	is "$(sed -n '9,13p' "$W/a.log" | paste -sd,)" \
	"TLSv1.3 resumed,TLSv1.3 resumed,TLSv1.3 resumed,TLSv1.3 resumed,TLSv1.3 resumed"
check "TLS 1.2 origin: two GETs answered" is "$(get "$P_B")$(get "$P_B")" 200200
check "TLS 1.2 origin: its first handshake is full (no session of the other origin), then resumed" \
	is "$(lines b)" "TLSv1.2 full,TLSv1.2 resumed"
touch "$W/b.log.fail"
check "a handshake the origin resets: 502" is "$(get "$P_B")" 502
check "the next GET is answered" is "$(get "$P_B")" 200
check "after the failed handshake, a full one (the session was dropped)" \
	is "$(sed -n '3,4p' "$W/b.log" | paste -sd,)" "aborted,TLSv1.2 full"
check "and then resumed again" is "$(get "$P_B")$(sed -n 5p "$W/b.log")" "200TLSv1.2 resumed"
eg_stop
eg_done
