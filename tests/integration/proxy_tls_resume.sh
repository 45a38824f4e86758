#!/usr/bin/env bash
# Session resumption cannot carry a client past client authentication (the real binary and
# openssl s_client -sess_out/-sess_in, TLS 1.2 and 1.3): a session made without a certificate on
# a listener where one is optional does not resume on one where it is required; a session made
# with a certificate from CA A does not resume on a listener that trusts only CA B; a SIGHUP that
# makes a certificate required, or replaces the client CA bundle's content at the same path,
# ends resumption of older sessions, while a SIGHUP that changes neither keeps it; a session
# whose client certificate has expired since does not resume. Each refused resumption is a full
# handshake, which then fails for want of a (valid) certificate.
# The expiry check depends on the wall clock (the certificate's notAfter, in whole seconds): its
# certificate is made valid for EXP_S seconds at the start, its sessions are made and resumed at
# once, the other checks run, and the test waits for the notAfter time to have passed only then.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
(
	cd "$work/tls" || exit 1
	# CA B, and a client certificate under it with the same SPIFFE ID as cli.crt (CA A).
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
		-subj "/CN=test CA B" -keyout cab.key -out cab.crt
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-subj /CN=analytics-b -keyout bcli.key -out bcli.csr
	openssl x509 -req -in bcli.csr -CA cab.crt -CAkey cab.key -CAcreateserial -days 1 \
		-extfile cli.ext -out bcli.crt
	cp ca.crt req-ca.crt # the "req" listener's bundle: CA A now, CA B's bytes after a reload
	chmod 600 ./*.key
) >/dev/null 2>&1 || skip "openssl could not make test certificates"
start_fixture model
write_policy "$work/policy.yaml"
P_OPT=$(free_port) P_REQ=$(free_port) P_REQB=$(free_port)
# write_resume_config OPT_AUTH: three TLS listeners in front of one model server.
write_resume_config() {
	cat >"$work/custos.yaml" <<CFG
version: 1
workers: 2
listeners:
  - id: opt
    address: "127.0.0.1:$P_OPT"
    tls: { cert: $work/tls/srv.crt, key: $work/tls/srv.key, client_ca: $work/tls/ca.crt, client_auth: $1 }
  - id: req
    address: "127.0.0.1:$P_REQ"
    tls: { cert: $work/tls/srv.crt, key: $work/tls/srv.key, client_ca: $work/tls/req-ca.crt, client_auth: required }
  - id: reqb
    address: "127.0.0.1:$P_REQB"
    tls: { cert: $work/tls/srv.crt, key: $work/tls/srv.key, client_ca: $work/tls/cab.crt, client_auth: required }
models:
  - id: test-model
    upstream:
      url: "http://127.0.0.1:$FX_PORT/"
audit:
  dir: $work/audit
policy:
  file: $work/policy.yaml
CFG
	chmod 600 "$work/custos.yaml"
}
write_resume_config optional
start_custos "$work/custos.yaml"

chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
# sess PORT VERSION OUT IN CERT KEY: one handshake (resuming from IN when given, with the client
# certificate CERT when given) and one chat request (as alice when KEY is "alice"); saves the
# session of a full handshake to OUT (s_client writes none for a resumed one); prints
# "New|Reused|none STATUS|none".
sess() {
	local port=$1 v=$2 out=$3 in=${4:-} cert=${5:-} key=${6:-} auth="" o
	if [ -n "$in" ] && [ ! -s "$work/$in" ]; then
		echo "no session file $in"
		return
	fi
	[ "$key" = alice ] && auth="Authorization: Bearer $ALICE"$'\r\n'
	o=$(printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
		"$auth" "${#chat}" "$chat" |
		timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
			-CAfile "$work/tls/ca.crt" "-$v" -ign_eof -sess_out "$work/$out" \
			${in:+-sess_in "$work/$in"} \
			${cert:+-cert "$work/tls/$cert.crt" -key "$work/tls/$cert.key"} 2>&1)
	local how status
	how=$(printf '%s\n' "$o" | sed -n 's/^\(New\|Reused\), TLS.*/\1/p' | head -1)
	status=$(printf '%s\n' "$o" | sed -n 's/^HTTP\/1\.1 \([0-9]*\).*/\1/p' | head -1)
	echo "${how:-none} ${status:-none}"
}
# refused NAME RESULT: a resumption that must not happen (neither resumed nor served).
refused() {
	case $2 in
	"New none" | "none none") ok "$1 ($2)" ;;
	*) fail "$1: got '$2', want no resumption and no response" ;;
	esac
}
reloads() { grep -c 'proxy: reloaded' "$work/custos.log"; }
hup() { # hup N: SIGHUP, wait for the Nth "reloaded"
	kill -HUP "$CU_PID"
	for _ in $(seq 600); do [ "$(reloads)" -ge "$1" ] && break; sleep 0.1; done
	check "reload $1 applied" "$(reloads)" "$1"
}

# A client certificate that expires after its session was made: the session does not resume.
# Made first, valid for EXP_S seconds: its sessions are made and resumed while it is valid, and
# the refusal is checked after (a), before any reload (which would end them for another reason).
EXP_S=${EXP_S:-20}
make_short_cert exp analytics-short cli.ext "$EXP_S"
exp_end=$SHORT_CERT_END
fails0=$fails
for v in tls1_2 tls1_3; do
	check "$v: opt, certificate valid for seconds" "$(sess "$P_OPT" $v e-$v.pem "" exp)" "New 200"
	check "$v: ... its session resumes while it is valid" "$(sess "$P_OPT" $v x.pem e-$v.pem)" "Reused 200"
done
# Checks that ended after the notAfter time may have failed because of it: no verdict on them,
# and no expiry check below; the other checks go on, and the test SKIPs if they all pass.
exp_late=""
if [ "$(date +%s)" -ge "$exp_end" ]; then
	exp_late="machine too loaded: the certificate (valid $EXP_S s) expired before its sessions were checked"
	[ "$fails" -eq "$fails0" ] || echo "(the $((fails - fails0)) failure(s) above may be the certificate's expiry: not counted)"
	fails=$fails0
fi

for v in tls1_2 tls1_3; do
	# (a) optional -> required: a session without a certificate
	check "$v: opt, no certificate, API key" "$(sess "$P_OPT" $v o-$v.pem "" "" alice)" "New 200"
	check "$v: opt resumes its own session" "$(sess "$P_OPT" $v x.pem o-$v.pem "" alice)" "Reused 200"
	refused "$v: opt's certificate-less session on req (client_auth required)" \
		"$(sess "$P_REQ" $v x.pem o-$v.pem "" alice)"
	# (a) CA A -> CA B: a session verified against CA A
	check "$v: req, CA A certificate (principal analytics)" "$(sess "$P_REQ" $v r-$v.pem "" cli)" "New 200"
	check "$v: req resumes its own session" "$(sess "$P_REQ" $v x.pem r-$v.pem)" "Reused 200"
	refused "$v: req's CA A session on reqb (trusts CA B only)" "$(sess "$P_REQB" $v x.pem r-$v.pem)"
	check "$v: reqb, CA B certificate" "$(sess "$P_REQB" $v b-$v.pem "" bcli)" "New 200"
	refused "$v: reqb's CA B session on req (trusts CA A only)" "$(sess "$P_REQ" $v x.pem b-$v.pem)"
done

# The certificate has expired (the wall clock is past its notAfter second): its sessions are
# refused. This waits on time itself: nothing else marks the expiry.
# (exp_end, not end: wait_until has a local of that name, which a function it calls would see)
expired() { [ "$(date +%s)" -gt "$exp_end" ]; }
if [ -z "$exp_late" ]; then
	wait_until $((EXP_S + 60)) expired || fail "the clock did not pass the certificate's notAfter ($exp_end)"
	# opt takes clients without a certificate (optional): the full handshake completes, and the
	# request, with neither the certificate's principal nor an API key, is a 401.
	for v in tls1_2 tls1_3; do
		check "$v: once the certificate has expired, its session (full handshake, no principal)" \
			"$(sess "$P_OPT" $v x.pem e-$v.pem)" "New 401"
	done
	check "custos refused the expired certificate's sessions for their validity" \
		"$(grep -c "a session ticket's client certificate is outside its validity period: full handshake" "$work/custos.log")" 2
fi

# (b) A reload that changes nothing that decides client authentication keeps resumption.
hup 1
for v in tls1_2 tls1_3; do
	check "$v: after an unchanged reload, opt's session resumes" "$(sess "$P_OPT" $v x.pem o-$v.pem "" alice)" "Reused 200"
	check "$v: after an unchanged reload, req's session resumes" "$(sess "$P_REQ" $v x.pem r-$v.pem)" "Reused 200"
done
# (b) opt: client_auth required; req: its bundle's bytes become CA B's (same path).
write_resume_config required
cp "$work/tls/cab.crt" "$work/tls/req-ca.crt"
hup 2
for v in tls1_2 tls1_3; do
	refused "$v: after client_auth became required, an older certificate-less session" \
		"$(sess "$P_OPT" $v x.pem o-$v.pem "" alice)"
	refused "$v: after the client CA bundle was replaced, an older CA A session" \
		"$(sess "$P_REQ" $v x.pem r-$v.pem)"
	check "$v: req now takes CA B certificates" "$(sess "$P_REQ" $v x.pem "" bcli)" "New 200"
done
[ "$fails" -eq 0 ] || exit 1
[ -z "$exp_late" ] || skip "$exp_late (every other check passed)"
