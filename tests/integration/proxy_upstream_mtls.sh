#!/usr/bin/env bash
# A client certificate custos presents to an https upstream (models[].upstream.cert/key),
# through the real binary, with `openssl s_server -WWW -Verify 1 -verify_return_error` as a
# model server that requires one from the test CA:
#   - with the certificate: 200; without one, or with one from another CA: 502 (audited); the
#     upstream's refusal, a TLS 1.3 alert on custos' first read after the handshake, is the
#     audited reason ("upstream refused the client certificate (TLS alert unknown_ca)",
#     "upstream requires a client certificate, none is configured (TLS alert
#     certificate_required)"), not a closed connection;
#   - `config check --host` refuses a key readable by others and a key that does not match its
#     certificate, naming the setting; `custos up` refuses the first, naming the file;
#   - a SIGHUP reload reads renewed files in place: the model that had the good certificate
#     now presents the rogue one and gets 502 (no TLS session made under the old certificate
#     is resumed), the other one now gets 200;
#   - a reload whose key does not load is refused, saying why, and the old certificate stays.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
(cd "$work/tls" && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-subj /CN=other -keyout other.key -out other.csr &&
	openssl x509 -req -in other.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
		-out other.crt && chmod 600 other.key) >/dev/null 2>&1 ||
	skip "openssl could not make test certificates"
# The client certificates live outside every other directory custos reads, so the reloads
# below read them only through their own entries in the proxy's Landlock view.
upd=$(mktemp -d /tmp/custos-upcert.XXXXXX) && chmod 700 "$upd" || skip "mktemp"
trap 'cleanup; rm -rf "$upd"' EXIT
mkdir -p "$work/www"
# s_server -WWW answers GET with a file: one route per model (/ta test-model, /tb slow-model,
# /tc down-model), each a file the upstream serves.
for f in ta tb tc; do printf 'file %s\n' "$f" >"$work/www/$f"; done
# The files custos reads: test-model starts with the test CA's client certificate, slow-model
# with the rogue one (another CA). Replaced in place by the reload below.
install -m 644 "$work/tls/cli.crt" "$upd/a.crt"
install -m 600 "$work/tls/cli.key" "$upd/a.key"
install -m 644 "$work/tls/rogue.crt" "$upd/b.crt"
install -m 600 "$work/tls/rogue.key" "$upd/b.key"
up_port=$(free_port)
(cd "$work/www" && exec openssl s_server -quiet -accept "127.0.0.1:$up_port" \
	-cert "$work/tls/srv.crt" -key "$work/tls/srv.key" -CAfile "$work/tls/ca.crt" \
	-Verify 1 -verify_return_error -WWW) >"$work/s_server.log" 2>&1 &
pids+=($!)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$up_port") 2>/dev/null; }
wait_until 60 listening || skip "openssl s_server did not start: $(head -3 "$work/s_server.log")"

write_policy "$work/policy.yaml"
cat >>"$work/policy.yaml" <<POL
  - id: files
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: ["GET /ta", "GET /tb", "GET /tc"]
      model: [test-model, down-model, slow-model]
POL
write_config "$work/custos.yaml" 1
up="\"https://localhost:$up_port/\""
perl -0777 -i -pe 's|url: "http://127.0.0.1:1/"|url: '"$up"'\n      ca_file: '"$work"'/tls/ca.crt\n      cert: '"$upd"'/a.crt\n      key: '"$upd"'/a.key|' "$work/custos.yaml"
EXTRA="  - id: down-model
    upstream:
      url: $up
      ca_file: $work/tls/ca.crt
  - id: slow-model
    upstream:
      url: $up
      ca_file: $work/tls/ca.crt
      cert: $upd/b.crt
      key: $upd/b.key"
perl -0777 -i -pe 's|(      key: [^\n]*/a.key\n)|$1'"$(printf '%s' "$EXTRA" | sed 's/|/\\|/g')"'\n|' "$work/custos.yaml"
perl -0777 -i -pe 's|\naudit:|\nroutes:\n  - { path: /ta, model: test-model }\n  - { path: /tb, model: slow-model }\n  - { path: /tc, model: down-model }\naudit:|' "$work/custos.yaml"
chmod 600 "$work/custos.yaml"
"$bin" config check --host "$work/custos.yaml" >"$work/check.out" 2>&1 || { cat "$work/check.out"; fail "config check --host"; exit 1; }

# The host checks: a key readable by others; a key that is not the certificate's.
chmod 644 "$upd/a.key"
"$bin" config check --host "$work/custos.yaml" >"$work/check.out" 2>&1
check "config check --host: key readable by others refused" "$?" 1
grep -q 'models\[0\] (test-model).upstream.key' "$work/check.out" && ok "the error names models[0] (test-model).upstream.key" ||
	fail "no error naming the key: $(cat "$work/check.out")"
chmod 600 "$upd/a.key"
cp "$work/custos.yaml" "$work/mismatch.yaml"
perl -i -pe "s|$upd/b.key|$work/tls/other.key|" "$work/mismatch.yaml"
"$bin" config check --host "$work/mismatch.yaml" >"$work/check.out" 2>&1
check "config check --host: key of another certificate refused" "$?" 1
grep 'models\[2\] (slow-model).upstream.key' "$work/check.out" | grep -q 'does not match the certificate' &&
	ok "the error names models[2] (slow-model).upstream.key and the mismatch" ||
	fail "mismatch not reported: $(cat "$work/check.out")"

# custos up itself refuses a key readable by others (it never reads such a key).
chmod 644 "$upd/a.key"
timeout 120 "$bin" up -c "$work/custos.yaml" </dev/null >"$work/up-mode.log" 2>&1
check "custos up with a key readable by others: refused" "$?" 1
grep -q "$upd/a.key" "$work/up-mode.log" && ok "custos up names the key file" ||
	fail "custos up did not name the key: $(tail -3 "$work/up-mode.log")"
chmod 600 "$upd/a.key"

start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o "$work/out" -w '%{http_code}')
get() { "${C[@]}" -H "Authorization: Bearer $ALICE" "https://localhost:$PORT/$1"; }
check "with the client certificate: 200" "$(get ta)" 200
check "the upstream's answer" "$(cat "$work/out")" "file ta"
check "without a client certificate: 502" "$(get tc)" 502
check "with a certificate from another CA: 502" "$(get tb)" 502
check "with the client certificate again: 200" "$(get ta)" 200

# Renewed in place: test-model now holds the rogue certificate, slow-model the test CA's.
install -m 644 "$work/tls/rogue.crt" "$upd/a.crt"
install -m 600 "$work/tls/rogue.key" "$upd/a.key"
install -m 644 "$work/tls/cli.crt" "$upd/b.crt"
install -m 600 "$work/tls/cli.key" "$upd/b.key"
kill -HUP "$CU_PID"
wait_log 'reloaded' 1
check "after the reload, test-model's new (rogue) certificate: 502, no session of the old one resumed" "$(get ta)" 502
check "after the reload, slow-model's new certificate: 200" "$(get tb)" 200

# A key that does not load: the reload is refused, saying why; the certificates in force stay.
printf 'not a key\n' >"$upd/b.key.new" && chmod 600 "$upd/b.key.new" && mv "$upd/b.key.new" "$upd/b.key"
kill -HUP "$CU_PID"
wait_log 'reload failed' 1
grep 'reload failed' "$work/custos.log" | grep -q "$upd/b.key" && ok "the failed reload names the key file" ||
	fail "failed reload reason: $(grep 'reload failed' "$work/custos.log")"
check "after the failed reload, slow-model keeps the certificate in force: 200" "$(get tb)" 200
check "and test-model its own: 502" "$(get ta)" 502

kill -TERM "$CU_PID"
wait "$CU_PID"
check "custos exit status" "$?" 0
check "502s audited" "$(audit_grep '"status":502' | wc -l | tr -d ' ')" 4
# The refusals say what the upstream said (one alert each: -verify_return_error sends the
# verify error's alert, certificate_required for none), in the audit trail and the log.
check "the certificate from another CA: audited as refused by the upstream" \
	"$(audit_grep '"status":502.*"reason":"upstream refused the client certificate \(TLS alert unknown_ca\)"' | wc -l | tr -d ' ')" 3
check "no certificate: audited as required by the upstream" \
	"$(audit_grep '"status":502.*"reason":"upstream requires a client certificate, none is configured \(TLS alert certificate_required\)"' | wc -l | tr -d ' ')" 1
grep -q 'upstream .*: upstream refused the client certificate (TLS alert unknown_ca)' "$work/custos.log" &&
	ok "the log names the refusal too" || fail "no refusal in the log: $(grep -i 'upstream' "$work/custos.log" | tail -3)"
[ "$fails" -eq 0 ]
