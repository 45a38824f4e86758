#!/usr/bin/env bash
# docs/POLICY.md statement by statement against the real engine, through `custos policy test`:
# each case below is one sentence of the reference (default deny, deny overrides in any order,
# every deciding rule named, obligations merged most restrictively, shadow mode, facts a
# caller lacks, direction-less rules, method case, route and path normalisation, prefixes on
# segment boundaries, globs, refused paths, body size, overnight windows, longest data
# prefix, isolation, taint, attribute references). Then what keeps `policy test` honest about
# the proxy: a request context the proxy cannot produce (data, url, taint or isolation on
# ingress; a route that disagrees with its method or path) is an error, not a passing case;
# and the check warnings for obligations the proxy does not act on.
set -euo pipefail
: "${CUSTOS_BIN:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022
fails=0
fail() {
	echo "FAIL: $*" >&2
	fails=$((fails + 1))
}
C=$CUSTOS_BIN

mkdir "$work/sem.d"
cat >"$work/sem.yaml" <<'Y'
version: 1
include: [sem.d/egress.yaml]
principals:
  alice: { match: { cert_cn: alice }, groups: [staff], attributes: { clearance: internal } }
  bob:   { match: { cert_cn: bob }, groups: [staff, hr], attributes: { clearance: restricted } }
  eve:   { match: { cert_cn: eve } }
models:
  small: { isolation: process }
  big:   { isolation: vm }
rules:
  # deny listed before and after the allows: order does not matter
  - { id: no-eve, effect: deny, description: "eve is blocked", when: { principal: eve } }
  - id: staff-chat
    effect: allow
    when: { direction: ingress, principal.groups: staff, route: "POST /v1/chat/completions" }
    limits: { max_body: 1MiB, max_tokens: 4096, requests_per_minute: 600 }
    inspect: { prompt: { email: redact } }
    audit: metadata
  - id: small-chat
    effect: allow
    when: { direction: ingress, model: small, route: "POST /v1/chat/completions" }
    limits: { max_body: 64KiB, max_tokens: 8192, requests_per_minute: 60 }
    inspect: { prompt: { email: deny, payment_card: log } }
    audit: bodies_hashed
  - { id: eve-allowed, effect: allow, when: { direction: ingress, principal: eve } }
  - { id: no-eve-again, effect: deny, when: { direction: ingress, principal: eve, method: POST } }
  - { id: models-list, effect: allow, when: { direction: ingress, path: /v1/models, method: GET } }
  - { id: files, effect: allow, when: { direction: ingress, path: { prefix: /v1/files }, method: GET } }
  - { id: slash-prefix, effect: allow, when: { direction: ingress, path: { prefix: /v2/ }, method: GET } }
  - { id: jobs, effect: allow, when: { direction: ingress, path: { glob: "/v1/*/jobs" } } }
  - { id: deep, effect: allow, when: { direction: ingress, path: { glob: "/deep/**" } } }
  - { id: big-body, effect: deny, when: { direction: ingress, body_size: { above: 2MiB } } }
  - id: night-batch
    effect: allow
    when: { direction: ingress, path: /batch, time: { days: [fri], from: "22:00", to: "06:00", tz: UTC } }
  # a window's defaults: every day, 00:00 to 24:00, UTC; 'to' is exclusive
  - { id: tuesdays, effect: allow, when: { direction: ingress, path: /tue, time: { days: [tue] } } }
  - { id: ten-to-eleven, effect: allow, when: { direction: ingress, path: /ten, time: { from: "10:00", to: "11:00" } } }
  # no direction: applies to ingress and egress
  - { id: no-delete-anywhere, effect: deny, when: { method: DELETE } }
Y
cat >"$work/sem.d/egress.yaml" <<'Y'
data:
  wiki:     { url: "https://wiki.example/", classification: internal }
  hr-api:   { url: "https://hr.example/api/", classification: confidential }
  hr-admin: { url: "https://hr.example/api/admin", classification: restricted }
  web:      { url: "https://web.example/", classification: public }
rules:
  - { id: read-all, effect: allow, when: { direction: egress, method: [GET, HEAD] } }
  - id: clearance
    effect: deny
    when: { direction: egress, data.classification: { above: principal.attributes.clearance } }
  - id: above-internal-needs-vm
    effect: deny
    when: { direction: egress, data.classification: { above: internal }, model.isolation: { below: vm } }
  - id: no-public-after-restricted
    effect: deny
    when: { direction: egress, taint: restricted, data.classification: { below: internal } }
Y
cat >"$work/sem.tests.yaml" <<'Y'
cases:
  # 1. default deny: no rule allows => deny, and no rule is named
  - { name: default deny, request: { direction: ingress, path: /nowhere, method: GET }, expect: deny, rules: [] }
  # 2. deny overrides allow, whatever the order in the file; every matching deny is named
  - name: deny overrides and names every deny
    request: { direction: ingress, identity: { cert_cn: eve }, route: "POST /v1/chat/completions" }
    expect: deny
    rules: [no-eve, no-eve-again]
  # 3. an allow names every matching allow; obligations merge most restrictively
  - name: allows merged most restrictively
    request: { direction: ingress, principal: alice, model: small, route: "POST /v1/chat/completions" }
    expect: allow
    rules: [staff-chat, small-chat]
    obligations: { audit: bodies_hashed, max_body: 64KiB, max_tokens: 4096, prompt: { email: deny, payment_card: log } }
  # 4. shadow mode: allowed, enforcement would deny, and no obligations
  - name: shadow allows what enforcement denies
    request: { direction: ingress, principal: eve, route: "POST /v1/chat/completions", shadow: true }
    expect: allow
    would: deny
    obligations: { audit: metadata, prompt: { email: none } }
  # 5. a condition over a fact the caller lacks is false (groups of no principal)
  - { name: unauthenticated is in no group, request: { direction: ingress, route: "POST /v1/chat/completions" }, expect: deny }
  # 6. a rule without direction applies both ways
  - { name: delete denied on ingress, request: { direction: ingress, method: DELETE, path: /v1/models }, expect: deny, rules: [no-delete-anywhere] }
  - { name: delete denied on egress, request: { direction: egress, principal: bob, model: big, method: DELETE, url: "https://wiki.example/x" }, expect: deny, rules: [no-delete-anywhere] }
  # 7. methods are case-sensitive
  - { name: method case-sensitive, request: { direction: ingress, method: get, path: /v1/models }, expect: deny }
  # 8. routes: the path part is normalised; the route never holds on egress
  - { name: route percent-encoded, request: { direction: ingress, principal: alice, route: "POST /v1/%63hat/completions" }, expect: allow, rules: [staff-chat] }
  - { name: route double slash, request: { direction: ingress, principal: alice, route: "POST //v1/chat//completions" }, expect: allow, rules: [staff-chat] }
  - { name: route method case, request: { direction: ingress, principal: alice, route: "post /v1/chat/completions" }, expect: deny }
  # 9. exact paths: a trailing slash stays, case stays, the query is dropped
  - { name: exact path, request: { direction: ingress, method: GET, path: /v1/models }, expect: allow, rules: [models-list] }
  - { name: exact path trailing slash, request: { direction: ingress, method: GET, path: /v1/models/ }, expect: deny }
  - { name: exact path case, request: { direction: ingress, method: GET, path: /V1/models }, expect: deny }
  - { name: query not in path, request: { direction: ingress, method: GET, path: "/v1/models?limit=5" }, expect: allow, rules: [models-list] }
  # 10. prefix on a segment boundary
  - { name: prefix itself, request: { direction: ingress, method: GET, path: /v1/files }, expect: allow, rules: [files] }
  - { name: prefix below, request: { direction: ingress, method: GET, path: /v1/files/abc }, expect: allow, rules: [files] }
  - { name: prefix not mid-segment, request: { direction: ingress, method: GET, path: /v1/filesX }, expect: deny }
  - { name: slash prefix below, request: { direction: ingress, method: GET, path: /v2/x }, expect: allow, rules: [slash-prefix] }
  - { name: slash prefix not its parent, request: { direction: ingress, method: GET, path: /v2 }, expect: deny }
  # 11. globs: * stays in a segment, ** crosses them
  - { name: glob one segment, request: { direction: ingress, method: POST, path: /v1/fine-tune/jobs }, expect: allow, rules: [jobs] }
  - { name: glob not two segments, request: { direction: ingress, method: POST, path: /v1/a/b/jobs }, expect: deny }
  - { name: glob double star, request: { direction: ingress, method: POST, path: /deep/a/b/c }, expect: allow, rules: [deep] }
  # 12. refused paths are denied whatever the rules
  - { name: dot segment refused, request: { direction: ingress, method: GET, path: /v1/x/../models }, expect: deny, rules: [] }
  - { name: encoded slash refused, request: { direction: ingress, method: GET, path: /v1%2Fmodels }, expect: deny, rules: [] }
  # 13. body size
  - { name: body above 2MiB, request: { direction: ingress, method: GET, path: /v1/models, body_size: 3MiB }, expect: deny, rules: [big-body] }
  - { name: body at 2MiB, request: { direction: ingress, method: GET, path: /v1/models, body_size: 2MiB }, expect: allow }
  # 14. overnight window belongs to the day it starts on (2026-07-03 is a Friday)
  - { name: friday night, request: { direction: ingress, method: POST, path: /batch, time: "2026-07-03T23:00:00Z" }, expect: allow, rules: [night-batch] }
  - { name: saturday early, request: { direction: ingress, method: POST, path: /batch, time: "2026-07-04T05:59:00Z" }, expect: allow, rules: [night-batch] }
  - { name: saturday 06:00 closed, request: { direction: ingress, method: POST, path: /batch, time: "2026-07-04T06:00:00Z" }, expect: deny }
  - { name: saturday night closed, request: { direction: ingress, method: POST, path: /batch, time: "2026-07-04T23:00:00Z" }, expect: deny }
  - { name: friday early closed, request: { direction: ingress, method: POST, path: /batch, time: "2026-07-03T05:00:00Z" }, expect: deny }
  # 14b. window defaults (2026-12-01 is a Tuesday)
  - { name: all tuesday from midnight, request: { direction: ingress, method: GET, path: /tue, time: "2026-12-01T00:00:00Z" }, expect: allow, rules: [tuesdays] }
  - { name: all tuesday to midnight, request: { direction: ingress, method: GET, path: /tue, time: "2026-12-01T23:59:59Z" }, expect: allow, rules: [tuesdays] }
  - { name: not wednesday, request: { direction: ingress, method: GET, path: /tue, time: "2026-12-02T00:00:00Z" }, expect: deny }
  - { name: any day in the window, request: { direction: ingress, method: GET, path: /ten, time: "2026-12-05T10:59:00Z" }, expect: allow, rules: [ten-to-eleven] }
  - { name: to is exclusive, request: { direction: ingress, method: GET, path: /ten, time: "2026-12-05T11:00:00Z" }, expect: deny }
  # 15. data sources: the longest path prefix wins; rules from an included file
  - { name: hr admin is restricted, request: { direction: egress, principal: bob, model: big, method: GET, url: "https://hr.example/api/admin/x" }, expect: allow, rules: [read-all] }
  - { name: clearance below data, request: { direction: egress, principal: alice, model: big, method: GET, url: "https://hr.example/api/x" }, expect: deny, rules: [clearance] }
  - { name: encoded admin is admin, request: { direction: egress, principal: alice, model: big, method: GET, url: "https://hr.example/api/%61dmin/x" }, expect: deny, rules: [clearance] }
  # 16. isolation: the model's declared level, or the running sandbox's on egress
  - { name: process model reads confidential, request: { direction: egress, principal: bob, model: small, method: GET, url: "https://hr.example/api/x" }, expect: deny, rules: [above-internal-needs-vm] }
  - { name: running sandbox level wins, request: { direction: egress, principal: bob, model: big, isolation: process, method: GET, url: "https://hr.example/api/x" }, expect: deny, rules: [above-internal-needs-vm] }
  # 17. taint on egress
  - { name: tainted sandbox to public web, request: { direction: egress, principal: bob, model: big, taint: restricted, method: GET, url: "https://web.example/" }, expect: deny, rules: [no-public-after-restricted] }
  - { name: untainted to public web, request: { direction: egress, principal: bob, model: big, method: GET, url: "https://web.example/" }, expect: allow }
  # 18. a missing attribute makes the comparison false: the deny does not fire (unauthenticated egress)
  - { name: "no principal: the clearance deny is silent", request: { direction: egress, model: big, method: GET, url: "https://hr.example/api/admin/x" }, expect: allow, rules: [read-all] }
Y
if ! out=$("$C" policy test "$work/sem.yaml" "$work/sem.tests.yaml" 2>&1); then
	fail "sem.tests.yaml: $out"
fi
summary=$(grep -o '[0-9]* passed, [0-9]* failed' <<<"$out" || true)
[ "$summary" = "45 passed, 0 failed" ] || fail "summary: $summary"

# --- the first matching principal wins, files in the order read: the top file whole, then
# its includes (wherever the include key stands)
mkdir "$work/inc"
cat >"$work/inc/top.yaml" <<'Y'
version: 1
include: [more.yaml]
principals:
  top-p: { match: { cert_cn: x } }
rules:
  - { id: r-top, effect: allow, when: { direction: ingress, principal: top-p } }
  - { id: r-inc, effect: allow, when: { direction: ingress, principal: inc-p } }
Y
printf 'principals:\n  inc-p: { match: { cert_cn: x } }\n' >"$work/inc/more.yaml"
printf 'cases:\n  - { name: top file first, request: { direction: ingress, identity: { cert_cn: x } }, expect: allow, rules: [r-top] }\n' >"$work/inc/t.yaml"
"$C" policy test "$work/inc/top.yaml" "$work/inc/t.yaml" >"$work/out" 2>&1 || fail "principal order: $(cat "$work/out")"

# --- request contexts the proxy cannot produce are errors (proxy/decide.c decides ingress
# with no data source, the model's declared isolation, route = method + path); taint it does
# know on ingress (the model's sandbox's), so a case may give it
cat >"$work/mis.tests.yaml" <<'Y'
cases:
  - { name: taint on ingress, request: { direction: ingress, principal: alice, taint: restricted, route: "POST /v1/chat/completions" }, expect: allow }
  - { name: isolation on ingress, request: { direction: ingress, principal: alice, isolation: vm, route: "POST /v1/chat/completions" }, expect: allow }
  - { name: data on ingress, request: { direction: ingress, principal: alice, data: wiki, route: "POST /v1/chat/completions" }, expect: allow }
  - { name: url on ingress, request: { direction: ingress, principal: alice, url: "https://wiki.example/", route: "POST /v1/chat/completions" }, expect: allow }
  - { name: route vs method, request: { direction: ingress, principal: alice, method: GET, route: "POST /v1/chat/completions" }, expect: allow }
  - { name: route vs path, request: { direction: ingress, principal: alice, path: /v1/models, route: "POST /v1/chat/completions" }, expect: allow }
Y
if "$C" policy test "$work/sem.yaml" "$work/mis.tests.yaml" >"$work/out" 2>&1; then
	fail "policy test accepted contexts the proxy cannot produce: $(cat "$work/out")"
fi
for want in \
	"mis.tests.yaml:3:95: error: 'isolation' is not known on ingress" \
	"mis.tests.yaml:4:85: error: 'data' is not known on ingress" \
	"mis.tests.yaml:5:83: error: 'url' is not known on ingress" \
	"mis.tests.yaml:6:99: error: route 'POST /v1/chat/completions' disagrees with method 'GET'" \
	"mis.tests.yaml:7:102: error: route 'POST /v1/chat/completions' disagrees with method 'POST' and path '/v1/models'"; do
	grep -qF "$want" "$work/out" || fail "want '$want', got: $(cat "$work/out")"
done
grep -qF "mis.tests.yaml:2:" "$work/out" && fail "taint on ingress refused: $(cat "$work/out")"
# agreeing route, method and path are fine (and equal to the route alone)
cat >"$work/agree.tests.yaml" <<'Y'
cases:
  - { name: route with its method and path, request: { direction: ingress, principal: alice, method: POST, path: /v1/chat/completions, route: "POST /v1/chat/completions" }, expect: allow, rules: [staff-chat] }
  - { name: method and path alone make the route, request: { direction: ingress, principal: alice, method: POST, path: /v1/chat/completions }, expect: allow, rules: [staff-chat] }
  - { name: GET on the chat path is no chat route, request: { direction: ingress, principal: alice, method: GET, path: /v1/chat/completions }, expect: deny }
Y
"$C" policy test "$work/sem.yaml" "$work/agree.tests.yaml" >"$work/out" 2>&1 || fail "agree: $(cat "$work/out")"
# explain and the admin decision point read the same request parser
if "$C" policy explain "$work/sem.yaml" --request \
	'{"direction":"ingress","principal":"alice","isolation":"vm","method":"GET","path":"/v1/models"}' \
	>"$work/out" 2>&1; then
	fail "explain accepted isolation on ingress: $(cat "$work/out")"
fi
grep -qF "'isolation' is not known on ingress" "$work/out" || fail "explain: $(cat "$work/out")"
"$C" policy explain "$work/sem.yaml" --request \
	'{"direction":"ingress","principal":"alice","taint":"restricted","method":"GET","path":"/v1/models"}' \
	>"$work/out" 2>&1 || fail "explain refused taint on ingress: $(cat "$work/out")"
grep -qF "taint=restricted" "$work/out" || fail "explain: no taint=restricted: $(cat "$work/out")"

# --- check warns about what the proxy does not act on
cat >"$work/warn.yaml" <<'Y'
version: 1
models:
  m: { isolation: vm }
data:
  web: { url: "https://web.example/", classification: public }
rules:
  - id: egress-limited
    effect: allow
    when: { direction: egress, data: web }
    limits: { requests_per_minute: 10 }
  - id: audited
    effect: allow
    when: { direction: ingress, model: m }
    audit: bodies
  - id: ingress-taint
    effect: deny
    when: { direction: ingress, taint: restricted }
Y
"$C" policy check "$work/warn.yaml" >"$work/out" 2>"$work/err" || fail "warn.yaml refused: $(cat "$work/err")"
for want in \
	"warn.yaml:10:13: warning: rule 'egress-limited' applies to egress only, where 'limits' are not enforced"; do
	grep -qF "$want" "$work/err" || fail "want '$want', got: $(cat "$work/err")"
done
# taint on ingress is the model's sandbox's (proxy/decide.c): nothing to warn about
grep -qF "rule 'ingress-taint'" "$work/err" && fail "ingress taint warned: $(cat "$work/err")"
# `audit: bodies` on an ingress rule records the bodies: no warning about it any more.
grep -q "rule 'audited'" "$work/err" && fail "a warning about 'audited': $(cat "$work/err")"

[ "$fails" -eq 0 ] || exit 1
echo "policy_semantics: ok"
