#!/usr/bin/env bash
# Routing by path and by model through the real binary with curl: custos.yaml's routes: sends
# /v1/embeddings to the embedding server whatever the body's model says (a path route wins),
# chat requests go by the body's model to two other servers, requests naming no model go to the
# first model; prefixes match whole segments, and a percent-encoded spelling of the path is
# routed like the plain one. The policy and the audit trail see the path route's model.
# A reload applies new routes (a bad one keeps the old ones). `custos config check` refuses
# unknown models, duplicate and overlapping prefixes and bad prefixes with file:line:col.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture chat --log "$work/chat.req"
chat_port=$FX_PORT
start_fixture other --log "$work/other.req" --model-id other-model
other_port=$FX_PORT
start_fixture embed --log "$work/embed.req" --model-id embedder
embed_port=$FX_PORT

cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
models:
  test-model: { isolation: none }
  other-model: { isolation: none }
  embedder: { isolation: none }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: alice, model: [test-model, other-model] }
  - id: embeddings-only-on-the-embedder
    effect: allow
    when: { direction: ingress, principal: alice, model: embedder, route: "POST /v1/embeddings" }
  - id: list-models
    effect: allow
    when: { direction: ingress, principal: alice, route: "GET /v1/models" }
POL
chmod 644 "$work/policy.yaml"
EXTRA_MODELS="  - id: other-model
    upstream: { url: \"http://127.0.0.1:$other_port/\" }
  - id: embedder
    aliases: [text-embedding-3-small]
    upstream: { url: \"http://127.0.0.1:$embed_port/\" }"
write_config "$work/custos.yaml" "$chat_port"
cat >>"$work/custos.yaml" <<CFG
routes:
  - path: /v1/embeddings
    model: text-embedding-3-small
CFG

# ---- config check: the good file, then each kind of bad route with its position
check "config check accepts the routes" "$("$bin" config check "$work/custos.yaml" >/dev/null 2>&1; echo $?)" 0
bad() { # bad NAME ROUTES_YAML EXPECTED_REGEX
	cp "$work/custos.yaml" "$work/bad.yaml"
	sed -i '/^routes:/,$d' "$work/bad.yaml"
	printf 'routes:\n%s\n' "$2" >>"$work/bad.yaml"
	chmod 600 "$work/bad.yaml"
	local out rc
	out=$("$bin" config check "$work/bad.yaml" 2>&1)
	rc=$?
	if [ "$rc" -eq 1 ] && grep -Eq -- "$3" <<<"$out"; then ok "config check: $1"; else fail "config check: $1 (rc $rc): $out"; fi
}
n=$(grep -c '' "$work/custos.yaml")
l1=$((n - 1)) l2=$n # line numbers of the first and second route entries in bad.yaml
bad "unknown model, with a hint" "  - { path: /v1/embeddings, model: embeder }" \
	"bad.yaml:$l1:[0-9]+: error: unknown model 'embeder'.*did you mean 'embedder'"
bad "duplicate prefix" "  - { path: /v1/embeddings, model: embedder }
  - { path: /v1/embeddings, model: test-model }" \
	"bad.yaml:$l2:13: error: duplicate route path '/v1/embeddings': already routed \(line $l1\)"
bad "overlapping prefixes" "  - { path: /v1/embeddings, model: embedder }
  - { path: /v1, model: test-model }" \
	"bad.yaml:$l2:13: error: route path '/v1' overlaps '/v1/embeddings' \(line $l1\)"
bad "prefix without a leading /" "  - { path: v1/embeddings, model: embedder }" \
	"bad.yaml:$l1:13: error: a route path starts with '/'"
bad "prefix with a trailing /" "  - { path: /v1/embeddings/, model: embedder }" \
	"bad.yaml:$l1:13: error: a route path does not end with '/'"
bad "percent-encoded prefix" "  - { path: /v1/%65mbeddings, model: embedder }" \
	"bad.yaml:$l1:13: error: percent-encoding in a route path"
bad "dot segment" "  - { path: /v1/../admin, model: embedder }" "bad.yaml:$l1:13: error: '.' or '..' segment"

start_custos "$work/custos.yaml"
base="https://localhost:$PORT"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -H "Authorization: Bearer $ALICE")
status() { "${C[@]}" -o "$work/last.out" -D "$work/last.hdr" -w '%{http_code}' "$@"; }
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/last.hdr" | tr -d '\r'; }
# served_by LOG: the request line count in a fixture's log (one line per request it read).
count() { grep -c "$1" "$work/$2.req" 2>/dev/null; }

# ---- the path route wins over the body's model
check "POST /v1/embeddings naming a chat model" "$(status -d '{"model":"test-model","input":"hello"}' "$base/v1/embeddings")" 200
emb_id=$(rid)
grep -q '"embedding"' "$work/last.out" && ok "an embedding came back" || fail "no embedding: $(cat "$work/last.out")"
check "... reached the embedding server" "$(count 'POST /v1/embeddings' embed)" 1
check "... not the chat model's server" "$(count 'POST /v1/embeddings' chat)" 0
# (the policy allows only exactly "POST /v1/embeddings": 403, judged as the embedder's request)
check "POST /v1/embeddings/x (under the prefix)" "$(status -d '{"model":"test-model","input":"a"}' "$base/v1/embeddings/x")" 403
sub_id=$(rid)
# ---- a second spelling of the same path is routed the same way, and the policy sees the same
# route ("POST /v1/embeddings": allowed); the embedding server gets the path the policy judged
# (docs/HTTP.md section 5a), so it answers although it does not decode %65 itself
check "POST /v1/%65mbeddings is path-routed too" "$(status -d '{"model":"other-model","input":"a"}' "$base/v1/%65mbeddings")" 200
enc_id=$(rid)
check "... reached the embedding server as /v1/embeddings" "$(count 'POST /v1/embeddings' embed)" 2
check "... never as /v1/%65mbeddings" "$(count 'POST /v1/%65mbeddings' embed)" 0
check "... and never reached other-model's server" "$(count 'mbeddings' other)" 0
# ---- a sibling sharing bytes but not a whole segment goes by model
check "POST /v1/embeddingsx goes by model" "$(status -d '{"model":"other-model","input":"a"}' "$base/v1/embeddingsx")" 404
check "... to other-model's server" "$(count 'POST /v1/embeddingsx' other)" 1

# ---- chat by model to two servers; no model: the first model
check "chat with test-model" "$(status -d '{"model":"test-model","messages":[{"role":"user","content":"to one"}]}' "$base/v1/chat/completions")" 200
chat_id=$(rid)
check "... served by test-model's server" "$(count 'POST /v1/chat/completions' chat)" 1
check "chat with other-model" "$(status -d '{"model":"other-model","messages":[{"role":"user","content":"to other"}]}' "$base/v1/chat/completions")" 200
check "... served by other-model's server" "$(count 'POST /v1/chat/completions' other)" 1
check "chat with the embedder's alias goes by model" "$(status -d '{"model":"text-embedding-3-small","messages":[]}' "$base/v1/chat/completions")" 403
alias_id=$(rid)
check "GET /v1/models (no model) -> first model" "$(status "$base/v1/models")" 200
check "... served by test-model's server" "$(count 'GET /v1/models' chat)" 1
check "unknown model on a chat path -> 404" "$(status -d '{"model":"nope","messages":[]}' "$base/v1/chat/completions")" 404

# ---- reload: a bad route keeps the routes in force; dropping the route sends by model
reloads() { grep -c "$1" "$work/custos.log"; }
sed -i 's|    model: text-embedding-3-small|    model: text-embedding-4|' "$work/custos.yaml"
kill -HUP "$CU_PID"
for _ in $(seq 600); do [ "$(reloads 'reload failed')" -ge 1 ] && break; sleep 0.1; done
check "reload with an unknown route model fails" "$(reloads 'reload failed')" 1
check "... the path route stays in force" "$(status -d '{"model":"test-model","input":"again"}' "$base/v1/embeddings")" 200
check "... (the embedding server answered)" "$(count 'POST /v1/embeddings' embed)" 3
sed -i '/^routes:/,$d' "$work/custos.yaml"
kill -HUP "$CU_PID"
for _ in $(seq 600); do [ "$(reloads 'reloaded')" -ge 1 ] && break; sleep 0.1; done
check "reload without routes" "$(reloads 'reloaded')" 1
check "POST /v1/embeddings now goes by model (test-model's server)" "$(status -d '{"model":"test-model","input":"by model"}' "$base/v1/embeddings")" 200
check "... served by test-model's server" "$(count 'POST /v1/embeddings' chat)" 1

kill -TERM "$CU_PID"
wait "$CU_PID"
line=$(audit_grep "\"request_id\":\"$emb_id\"")
grep -q '"model":"embedder"' <<<"$line" && ok "audit: the path-routed request names model embedder" || fail "audit model: $line"
grep -q '"model_requested":"test-model"' <<<"$line" && ok "audit: ... and the body's model as model_requested" || fail "audit model_requested: $line"
grep -q '"status":200' <<<"$line" && ok "audit: status 200" || fail "audit status: $line"
line=$(audit_grep "\"request_id\":\"$alias_id\"")
grep -q '"model":"embedder".*"model_requested":"text-embedding-3-small"' <<<"$line" && ok "audit: an alias names the id judged and the alias asked for" || fail "audit alias: $line"
line=$(audit_grep "\"request_id\":\"$chat_id\"")
grep -q '"model":"test-model"' <<<"$line" && ! grep -q model_requested <<<"$line" && ok "audit: no model_requested when the body named the id" || fail "audit same model: $line"
line=$(audit_grep "\"request_id\":\"$sub_id\"")
grep -q '"model":"embedder"' <<<"$line" && ok "audit: a path under the prefix was judged as the embedder's" || fail "audit model: $line"
line=$(audit_grep "\"request_id\":\"$enc_id\"")
grep -q '"model":"embedder"' <<<"$line" && ok "audit: the encoded path was judged as the embedder's" || fail "audit model: $line"
[ "$fails" -eq 0 ]
