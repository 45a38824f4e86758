#!/usr/bin/env bash
# The custos demo: throwaway certificates and keys, the model-server TEST FIXTURE as the model,
# custos up with conf/demo.yaml, and a scripted curl session (allowed, streamed, denied by
# policy, over budget, unauthenticated), then `custos audit verify` and a summary.
# Usage: scripts/demo.sh BUILD_DIR   (make demo runs it on build/release)
# Exit 0 only when every step behaved as expected. Everything started is stopped by PID.
set -uo pipefail

build=${1:-build/release}
top=$(cd "$(dirname "$0")/.." && pwd)
case "$build" in /*) ;; *) build="$top/$build" ;; esac
custos="$build/cli/custos"
fixture="$build/tests/fixtures/model-server/model-server"
for f in "$custos" "$fixture"; do
	if [ ! -x "$f" ]; then
		echo "demo: $f not built (make demo builds it; CUSTOS_TESTS=ON builds the fixture)" >&2
		exit 1
	fi
done
for t in curl openssl perl; do
	command -v "$t" >/dev/null || { echo "demo: $t is needed" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/custos-demo.XXXXXX)
chmod 700 "$dir"
fx_pid="" cu_pid=""
cleanup() {
	[ -n "$cu_pid" ] && kill -TERM "$cu_pid" 2>/dev/null && wait "$cu_pid" 2>/dev/null
	[ -n "$fx_pid" ] && kill -TERM "$fx_pid" 2>/dev/null && wait "$fx_pid" 2>/dev/null
	if [ -z "${CUSTOS_DEMO_KEEP:-}" ]; then rm -rf "$dir"; else echo "demo: kept $dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass=0 fail=0
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { pass=$((pass + 1)); printf '   ok: %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf '   FAILED: %s\n' "$*"; }

step "1. throwaway certificates and keys in $dir"
mkdir -p "$dir/tls" "$dir/keys" "$dir/audit"
(
	cd "$dir/tls" || exit 1
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
		-subj "/CN=custos demo CA" -keyout ca.key -out ca.crt 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >srv.ext
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
		-keyout server-ecdsa.key -out ecdsa.csr 2>/dev/null
	openssl x509 -req -in ecdsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
		-extfile srv.ext -out server-ecdsa.crt 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server-rsa.key \
		-out rsa.csr 2>/dev/null
	openssl x509 -req -in rsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
		-extfile srv.ext -out server-rsa.crt 2>/dev/null
	chmod 600 ./*.key
) || { echo "demo: openssl failed" >&2; exit 1; }
"$custos" audit keygen "$dir/keys" >/dev/null || { echo "demo: audit keygen failed" >&2; exit 1; }
ok "CA, ECDSA and RSA server certificates, Ed25519 audit signing key"

alice_key=sk-demo-alice bob_key=sk-demo-bob
sha() { printf '%s' "$1" | openssl dgst -sha256 -r | cut -d' ' -f1; }
sed -e "s|@ALICE_SHA256@|$(sha $alice_key)|" -e "s|@BOB_SHA256@|$(sha $bob_key)|" \
	"$top/conf/demo-policy.yaml" >"$dir/policy.yaml"
"$custos" policy check "$dir/policy.yaml" >/dev/null || { echo "demo: policy check failed" >&2; exit 1; }

step "2. the model server (TEST FIXTURE, echo mode, 8 tokens per reply)"
"$fixture" --listen 127.0.0.1:0 --port-file "$dir/model.port" --mode echo --tokens 8 \
	--model-id demo-model >"$dir/model.log" 2>&1 &
fx_pid=$!
for _ in $(seq 100); do [ -s "$dir/model.port" ] && break; sleep 0.05; done
model_port=$(cat "$dir/model.port" 2>/dev/null)
[ -n "$model_port" ] || { echo "demo: model server did not start" >&2; cat "$dir/model.log"; exit 1; }
ok "model server on 127.0.0.1:$model_port"

step "3. custos up -c custos.yaml"
port=$(perl -MIO::Socket::INET -e 'my $s=IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1:0") or die; print $s->sockport')
sed -e "s|@DEMO_DIR@|$dir|g" -e "s|@MODEL_PORT@|$model_port|g" -e "s|@PORT@|$port|g" \
	"$top/conf/demo.yaml" >"$dir/custos.yaml"
chmod 600 "$dir/custos.yaml"
"$custos" --log-format text up -c "$dir/custos.yaml" 2>"$dir/custos.log" &
cu_pid=$!
started=""
for _ in $(seq 200); do
	grep -q 'worker(s) serving' "$dir/custos.log" && started=1 && break
	kill -0 "$cu_pid" 2>/dev/null || break
	sleep 0.05
done
[ -n "$started" ] || { echo "demo: custos did not start:" >&2; cat "$dir/custos.log" >&2; exit 1; }
ok "custos listening on https://localhost:$port (TLS 1.2/1.3, ECDSA + RSA)"
url="https://localhost:$port/v1/chat/completions"
CURL=(curl -sS --cacert "$dir/tls/ca.crt" --max-time 20)
body='{"model":"demo-model","messages":[{"role":"user","content":"Say hello to the demo"}]}'
sbody='{"model":"demo-model","stream":true,"messages":[{"role":"user","content":"Say hello to the demo"}]}'

# run NAME EXPECTED_STATUS CURL_ARGS...: prints the status, the request id and the body.
run() {
	local name=$1 want=$2
	shift 2
	local out="$dir/$name.out" hdr="$dir/$name.hdr" code
	code=$("${CURL[@]}" -D "$hdr" -o "$out" -w '%{http_code}' "$@") || code="curl-error"
	local rid
	rid=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$hdr" 2>/dev/null | tr -d '\r')
	printf '   HTTP %s  X-Request-Id %s\n' "$code" "${rid:--}"
	head -c 600 "$out" | sed 's/^/   | /'
	echo
	if [ "$code" = "$want" ]; then ok "$name: $want as expected"; else bad "$name: got $code, want $want"; fi
}

step "4. allowed: alice, chat completion"
run allowed 200 -H "Authorization: Bearer $alice_key" -H 'Content-Type: application/json' -d "$body" "$url"
grep -q '"usage"' "$dir/allowed.out" && ok "usage reported (charged to alice's token budget)" || bad "no usage in the reply"

step "5. streamed: alice, stream=true (SSE forwarded event by event)"
run streamed 200 -N -H "Authorization: Bearer $alice_key" -H 'Content-Type: application/json' -d "$sbody" "$url"
n=$(grep -c '^data: ' "$dir/streamed.out")
grep -q '^data: \[DONE\]' "$dir/streamed.out" && ok "$n SSE events, ending with [DONE]" || bad "stream did not end with [DONE]"

step "6. denied by policy: bob has no rule for chat (default deny)"
run denied 403 -H "Authorization: Bearer $bob_key" -H 'Content-Type: application/json' -d "$body" "$url"

step "7. over budget: alice has used her 20 tokens for this hour"
run over-budget 429 -H "Authorization: Bearer $alice_key" -H 'Content-Type: application/json' -d "$body" "$url"

step "8. unauthenticated: no credentials"
run unauthenticated 401 -H 'Content-Type: application/json' -d "$body" "$url"

step "9. stop custos (SIGTERM: drain, seal the audit log)"
kill -TERM "$cu_pid"
wait "$cu_pid"
rc=$?
cu_pid=""
[ "$rc" = 0 ] && ok "custos exited 0" || bad "custos exited $rc"

step "10. custos audit verify"
if "$custos" audit verify --pubkey "$dir/keys/audit.pub" "$dir/audit" >"$dir/verify.out" 2>&1; then
	ok "$(tail -1 "$dir/verify.out")"
else
	bad "audit verify failed:"
	sed 's/^/   | /' "$dir/verify.out"
fi
events=$(cat "$dir"/audit/audit-*.jsonl 2>/dev/null | grep -c '"http\.')
printf '   audit events for requests and rejections: %s\n' "$events"
printf '   %-13s %-32s %-10s %-6s %-6s %s\n' type request_id principal status decision "total/policy us"
cat "$dir"/audit/audit-*.jsonl 2>/dev/null | grep '"http\.' |
	sed -n 's/.*"type":"\([^"]*\)".*"request_id":"\([^"]*\)".*"principal":"\([^"]*\)".*"status":\([0-9]*\).*"decision":"\([^"]*\)".*"total":\([0-9]*\).*"policy":\([0-9]*\).*/\1 \2 \3 \4 \5 \6 \7/p' |
	while read -r ty id pr st de tot pol; do
		printf '   %-13s %-32s %-10s %-6s %-6s %d/%d\n' "$ty" "$id" "$pr" "$st" "$de" $((tot / 1000)) $((pol / 1000))
	done
[ "$events" -ge 5 ] && ok "one audit event per request and rejection" || bad "expected 5 request events, found $events"

step "summary"
printf '   %d checks passed, %d failed\n' "$pass" "$fail"
[ "$fail" -eq 0 ]
