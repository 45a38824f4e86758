#!/usr/bin/env bash
# custos policy check / test / explain through the real binary: the example policy passes its
# tests; a misspelled key, an unknown principal and a duplicate rule id are each rejected with
# file:line:col; failing test cases are reported one per line with the summary and exit 1.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_SRC:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
conf="$CUSTOS_SRC/conf"

# --- the example policy and its tests
out=$("$CUSTOS_BIN" policy check "$conf/policy.example.yaml")
grep -q "ok, .* rules, mode enforce, sha256 [0-9a-f]\{64\}" <<<"$out" || fail "check: $out"
out=$("$CUSTOS_BIN" policy test "$conf/policy.example.yaml" "$conf/policy.example.tests.yaml")
summary=$(tail -1 <<<"$out")
[[ $summary =~ ^([0-9]+)\ passed,\ 0\ failed$ ]] || fail "test summary: $out"
[ "${BASH_REMATCH[1]}" -ge 40 ] || fail "fewer than 40 cases: $summary"

# --- explain: decision, deciding rules, a line per rule with why
out=$("$CUSTOS_BIN" policy explain "$conf/policy.example.yaml" --request \
	'{"direction":"egress","principal":"hr-app","model":"llama-8b","url":"https://hr.corp.example:8443/api/x","method":"GET"}')
grep -q '^decision: deny$' <<<"$out" || fail "explain decision: $out"
grep -q '^deciding rules: confidential-needs-vm$' <<<"$out" || fail "explain rules: $out"
grep -q 'hr-data-for-hr .*all conditions hold => MATCH' <<<"$out" || fail "explain match line: $out"
grep -q 'no-writes-to-hr .*method .GET. is not one of the rule.s methods => no match' <<<"$out" ||
	fail "explain no-match line: $out"
printf '{"direction":"ingress","principal":"analysts","model":"llama-8b","route":"POST /v1/chat/completions"}' >"$work/req.json"
out=$("$CUSTOS_BIN" policy explain "$conf/policy.example.yaml" --request "@$work/req.json")
grep -q '^decision: allow$' <<<"$out" || fail "explain @file: $out"
grep -q 'inspect prompt payment_card: deny' <<<"$out" || fail "explain obligations: $out"
# a request read from a file has its errors placed in that file, not in "<request>"
printf '{"direction": "ingress",\n "principle": "analysts"}\n' >"$work/bad-req.json"
"$CUSTOS_BIN" policy explain "$conf/policy.example.yaml" --request "@$work/bad-req.json" \
	>/dev/null 2>"$work/err" && fail "explain took a bad request file"
grep -q "^$work/bad-req.json:2:2: error: unknown key 'principle'" "$work/err" ||
	fail "explain @file error position: $(cat "$work/err")"
if "$CUSTOS_BIN" policy explain "$conf/policy.example.yaml" --request '{"direction":"ingress","principal":"nobody"}' 2>"$work/err"; then
	fail "explain accepted an unknown principal"
fi
grep -q "unknown principal 'nobody'" "$work/err" || fail "explain error: $(cat "$work/err")"
# a malformed url is an error at its place, not "no data source" (the parser /v1/decide and
# the policy's own url values use)
for bad in 'http://[::1' 'https://hr.corp.example:99999/x' 'https://u@hr.corp.example/'; do
	if "$CUSTOS_BIN" policy explain "$conf/policy.example.yaml" --request \
		"{\"direction\":\"egress\",\"principal\":\"hr-app\",\"url\":\"$bad\"}" 2>"$work/err" >/dev/null; then
		fail "explain accepted the url $bad"
	fi
	grep -q "<request>:1:[0-9]*: error: url: bad url '" "$work/err" && grep -qF "'$bad'" "$work/err" ||
		fail "explain url error for $bad: $(cat "$work/err")"
done

# --- errors with file:line:col
expect_error() { # file, expected "line:col: error: text" fragment
	local f=$1 want=$2
	if "$CUSTOS_BIN" policy check "$f" >"$work/out" 2>"$work/err"; then
		fail "check accepted $f"
	fi
	grep -qF "$f:$want" "$work/err" || fail "$f: want '$f:$want', got: $(cat "$work/err")"
}
cat >"$work/misspelled.yaml" <<'Y'
version: 1
models:
  m: { isolation: vm }
rules:
  - id: r1
    efect: allow
    when: { model: m }
Y
expect_error "$work/misspelled.yaml" "6:5: error: unknown key 'efect' (hint: did you mean 'effect'?)"
cat >"$work/unknown.yaml" <<'Y'
version: 1
principals:
  analysts: { match: { cert_cn: analytics } }
rules:
  - id: r1
    effect: allow
    when: { direction: ingress, principal: analyst }
Y
expect_error "$work/unknown.yaml" "7:44: error: unknown principal 'analyst' (hint: did you mean 'analysts'?)"
cat >"$work/dup.yaml" <<'Y'
version: 1
rules:
  - id: same
    effect: allow
  - id: same
    effect: deny
Y
expect_error "$work/dup.yaml" "5:9: error: duplicate rule id 'same' (hint: first defined at $work/dup.yaml:3:9)"
# The hint is a command to copy: one %, as printf wants it.
cat >"$work/keyhex.yaml" <<'Y'
version: 1
principals:
  svc: { match: { api_key_sha256: sk-not-a-digest } }
Y
expect_error "$work/keyhex.yaml" "3:35: error: api_key_sha256 must be 64 hex digits (hint: store the key's SHA-256 digest: printf %s KEY | sha256sum)"

# --- warnings do not fail check
cat >"$work/warn.yaml" <<'Y'
version: 1
rules:
  - id: everyone
    effect: allow
    when: { direction: ingress }
  - id: lockdown
    effect: deny
    when: { direction: ingress }
Y
"$CUSTOS_BIN" policy check "$work/warn.yaml" >"$work/out" 2>"$work/err" || fail "warnings failed check"
grep -qF "$work/warn.yaml:3:9: warning: allow rule 'everyone' is shadowed by deny rule 'lockdown'" "$work/err" ||
	fail "shadow warning: $(cat "$work/err")"

# --- failing cases: one line each, then the summary, exit 1
cat >"$work/tests.yaml" <<'Y'
cases:
  - name: should pass
    request: { direction: ingress, route: "GET /v1/models", principal: batch }
    expect: allow
  - name: wrong on purpose
    request: { direction: ingress, route: "GET /v1/models" }
    expect: allow
  - name: wrong rules on purpose
    request: { direction: ingress, model: legacy, principal: analysts }
    expect: deny
    rules: [contractors-out]
Y
if "$CUSTOS_BIN" policy test "$conf/policy.example.yaml" "$work/tests.yaml" >"$work/out" 2>&1; then
	fail "policy test passed with failing cases"
fi
[ "$(tail -1 "$work/out")" = "1 passed, 2 failed" ] || fail "summary: $(cat "$work/out")"
grep -q "tests.yaml:5:5: FAIL 'wrong on purpose': expected allow, got deny" "$work/out" ||
	fail "failure line: $(cat "$work/out")"
grep -q "tests.yaml:8:5: FAIL 'wrong rules on purpose': deciding rules \[no-legacy-model\], expected \[contractors-out\]" "$work/out" ||
	fail "rules failure line: $(cat "$work/out")"
# A test file with errors: refused (exit 1), and the summary does not read as a clean run.
printf 'cases:\n  - name: bad\n    request: { direction: ingress, principal: nobody }\n    expect: allow\n' >"$work/bad-tests.yaml"
"$CUSTOS_BIN" policy test "$conf/policy.example.yaml" "$work/bad-tests.yaml" >"$work/out" 2>/dev/null &&
	fail "policy test passed a test file with errors"
[ "$(tail -1 "$work/out")" = "0 passed, 0 failed, the test file refused (1 error(s) above)" ] ||
	fail "summary of a refused test file: $(tail -1 "$work/out")"
# Each error is said once, at its place: no second line naming the file twice, and none
# without a message (an empty test file).
printf '' >"$work/empty-tests.yaml"
for t in bad-tests empty-tests missing-tests; do
	"$CUSTOS_BIN" policy test "$conf/policy.example.yaml" "$work/$t.yaml" >/dev/null 2>"$work/err" &&
		fail "policy test passed $t.yaml"
	[ "$(wc -l <"$work/err")" -eq 1 ] || fail "$t.yaml: not one error line: $(cat "$work/err")"
	grep -q "^$work/$t.yaml:.*error: ..*" "$work/err" || fail "$t.yaml: error line: $(cat "$work/err")"
done

# --- usage errors exit 2
set +e
"$CUSTOS_BIN" policy check >/dev/null 2>&1
[ $? -eq 2 ] || fail "usage exit"
set -e
echo "policy_cli: ok"
