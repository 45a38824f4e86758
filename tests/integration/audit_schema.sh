#!/usr/bin/env bash
# docs/AUDIT.md is the contract SIEM parsers are built on; this holds the code and a real trail
# to it (tests/integration/audit_schema.py):
# - the C sources: every member name and event type written has a row in section 2.3, every
#   row's member is written by some code and has its meaning in section 2 or 2.1;
# - a real `custos up` run (allowed, denied and refused requests, a failed TLS handshake, a
#   reload by SIGHUP and one by the admin API, admin refusals, a signing key): every event's
#   type has rows, every member is listed for its type with its JSON type, the `always` ones
#   are in every event; a record given a member no row names fails, naming type and member;
# - `custos audit verify` as section 5 says: exit 0 and OK on the trail, 1 and `first bad
#   record: FILE:LINE seq S: hash mismatch...` for an edited byte, 2 for an unknown option;
# - bytes_in of a request refused inside its head counts what came of it;
# - `custos audit export`: exit 1 naming a record it cannot render, 2 for an unknown format;
#   the trail in CEF, LEEF 2.0 and RFC 5424 parses by the specs
#   (header fields, escapes, no raw delimiter or control character, token lengths).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"
schema="$src/tests/integration/audit_schema.py"
doc="$src/docs/AUDIT.md"

# ---- the code against the table
if out=$(python3 "$schema" "$doc" code "$src" 2>&1); then
	ok "code: $out"
else
	fail "code against docs/AUDIT.md section 2.3:"
	echo "$out"
fi

make_pki
start_fixture model
write_policy "$work/policy.yaml"
mkdir -p "$work/keys"
"$bin" audit keygen "$work/keys" >/dev/null || fail "audit keygen"
AUDIT_YAML="  signing_key: $work/keys/audit.key" write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket after 60 s"

chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
C=(curl -sS --max-time 20 -o /dev/null -w '%{http_code}')
U=(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' --unix-socket "$work/admin.sock")
check "allowed chat" "$("${C[@]}" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
	-d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions")" 200
check "denied chat (no rule)" "$("${C[@]}" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
	-d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions")" 403
check "no credentials" "$("${C[@]}" -H 'Content-Type: application/json' -d "$chat" \
	"http://127.0.0.1:$PORT2/v1/chat/completions")" 401
check "malformed JSON" "$("${C[@]}" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
	-d '{"model":' "http://127.0.0.1:$PORT2/v1/chat/completions")" 400
check "allowed chat over TLS" "$("${C[@]}" --cacert "$work/tls/ca.crt" -H "Authorization: Bearer $ALICE" \
	-H 'Content-Type: application/json' -d "$chat" "https://localhost:$PORT/v1/chat/completions")" 200
# plain HTTP to the TLS listener: a failed handshake (tls.reject)
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >"$work/plain.req"
raw_http "$PORT" "$work/plain.req" >/dev/null
# a path with the renderings' delimiters and escapes (| = \ ] " are ASCII a request-target may
# hold): refused (no route), and audited with it, for the export checks below
printf 'GET /x|a=b\\c]d"e=%%5C HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' "$ALICE" >"$work/odd.req"
raw_http "$PORT2" "$work/odd.req" | head -1 | grep -q '^HTTP/1.1 [45]' || fail "no refusal of an odd path"
check "admin: unknown path" "$("${U[@]}" http://localhost/v1/no-such-thing)" 404
check "admin: reload" "$("${U[@]}" -X POST http://localhost/v1/policy)" 200
kill -HUP "$CU_PID"
has() { audit_grep "\"type\":\"$1\"" >/dev/null; }
for t in http.request http.reject tls.reject admin.request; do
	wait_until 60 has "$t" || fail "no $t event after 60 s"
done
sighup() { audit_grep '"type":"policy.reload".*"trigger":"sighup"' >/dev/null; }
wait_until 60 sighup || fail "no policy.reload event of the SIGHUP after 60 s"
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null

# ---- the trail against the table, `always` members included
types=$(cat "$work"/audit/*.jsonl | sed -n 's/.*"type":"\([^"]*\)".*/\1/p' | sort -u | tr '\n' ' ')
for t in http.request http.reject tls.reject policy.reload admin.request checkpoint audit.start; do
	case " $types" in *" $t "*) ;; *) fail "the trail has no $t event (types: $types)" ;; esac
done
if out=$(python3 "$schema" "$doc" trail --strict "$work/audit" 2>&1); then
	ok "trail ($types): $out"
else
	fail "trail against docs/AUDIT.md section 2.3:"
	echo "$out"
fi
# bytes_in of a request refused inside its head: the bytes of it that came (it was 0)
odd=$(audit_grep '"type":"http.reject".*"path":"/x\|a=b' | sed -n 's/.*"bytes_in":\([0-9]*\).*/\1/p')
check "bytes_in of a head refused by the parser" "$odd" "$(wc -c <"$work/odd.req")"
# The checker fails on a member no row names, naming it and its event type.
mkdir "$work/forged"
sed '0,/"type":"http.request"/s/"type":"http.request",/"type":"http.request","zz_new":7,/' \
	"$work"/audit/audit-*.jsonl >"$work/forged/audit-00000000000000000001.jsonl"
out=$(python3 "$schema" "$doc" trail "$work/forged" 2>&1)
rc=$?
if [ "$rc" = 1 ] && echo "$out" | grep -q 'member `zz_new` of event type `http.request`.*not documented'; then
	ok "an undocumented member is named"
else
	fail "forged member not caught ($rc): $out"
fi

# ---- custos audit verify (section 5)
out=$("$bin" audit verify --pubkey "$work/keys/audit.pub" "$work/audit" 2>&1)
rc=$?
check "verify: exit status of an untouched trail" "$rc" 0
echo "$out" | grep -q '^OK: .* records verified .*with valid signatures.*sealed by a shutdown checkpoint; reaches audit.head' &&
	ok "verify: OK line" || fail "verify: $out"
mkdir "$work/copy"
cp "$work"/audit/audit-*.jsonl "$work/copy/"
f=$(ls "$work"/copy/audit-*.jsonl | head -1)
# line 3, a byte of its body: the decimal digits of "v":1 stay, one letter of the type changes
perl -i -pe 's/"type":"(.)/"type":"X/ if $. == 3' "$f"
out=$("$bin" audit verify --no-head "$work/copy" 2>&1)
rc=$?
check "verify: exit status of an edited record" "$rc" 1
echo "$out" | grep -qF "first bad record: $f:3 seq 3: hash mismatch: the record was modified" &&
	ok "verify names the first bad record" || fail "verify of an edited record: $out"
"$bin" audit verify --no-such-option "$work/audit" >/dev/null 2>&1
check "verify: exit status of an unknown option" "$?" 2

# ---- the export renderings against the specs
for fmt in cef leef rfc5424; do
	"$bin" audit export --format "$fmt" "$work"/audit/audit-*.jsonl >"$work/export.$fmt" ||
		fail "export --format $fmt"
done
# a record export cannot render: exit 1, naming it; an unknown format: a usage error (2)
printf '{"v":1,"seq":1,"time":"2026-11-27T01:55:11.1Z","type":"x"}\nnot json\n' >"$work/bad.jsonl"
out=$("$bin" audit export --format cef "$work/bad.jsonl" 2>&1 >/dev/null)
check "export: exit status of a record it cannot render" "$?" 1
echo "$out" | grep -qF "$work/bad.jsonl:2:" && ok "export names the record" || fail "export of a bad record: $out"
"$bin" audit export --format xml "$work/audit" >/dev/null 2>&1
check "export: exit status of an unknown format" "$?" 2
if out=$(python3 "$schema" "$doc" export "$work/export.cef" "$work/export.leef" "$work/export.rfc5424" 2>&1); then
	ok "export: $out"
else
	fail "export renderings:"
	echo "$out"
fi

[ "$fails" -eq 0 ]
