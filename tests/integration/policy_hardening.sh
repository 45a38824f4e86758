#!/usr/bin/env bash
# custos policy check / test / explain on the policy's hard edges, through the real binary:
# a glob over a fact the caller lacks, path spellings, routes on egress, limits over several
# windows, what check refuses (with file:line:col) and that `policy test` predicts the proxy.
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

# run_tests POLICY TESTS: expects every case to pass
run_tests() {
	local out
	if ! out=$("$C" policy test "$1" "$2" 2>&1); then
		fail "$(basename "$2"): $out"
	fi
}
# expect_check_error FILE FRAGMENT: check fails and prints FILE:FRAGMENT
expect_check_error() {
	if "$C" policy check "$1" >"$work/out" 2>"$work/err"; then
		fail "check accepted $1"
		return
	fi
	grep -qF "$1:$2" "$work/err" || fail "$1: want '$1:$2', got: $(cat "$work/err")"
}

# --- identities: a key over a fact the caller does not have never holds
cat >"$work/id.yaml" <<'Y'
version: 1
principals:
  q: { match: { jwt_iss: i, jwt_sub: "user?" } }
  g17: { match: { jwt_group: target } }
  jwt-users: { match: { jwt_sub: "*" } }
  certapp: { match: { cert_cn: app } }
  up: { match: { cert_san_dns: "*.SEC.corp.example" } }
models:
  m1: { isolation: vm }
rules:
  - { id: jwt-chat, effect: allow, when: { direction: ingress, principal: jwt-users } }
  - { id: apps, effect: allow, when: { direction: ingress, principal: certapp } }
  - { id: sec, effect: allow, when: { direction: ingress, principal: up } }
  - { id: users, effect: allow, when: { direction: ingress, principal: q } }
  - { id: grp, effect: allow, when: { direction: ingress, principal: g17 } }
Y
cat >"$work/id.tests.yaml" <<'Y'
cases:
  - { name: random key, request: { direction: ingress, identity: { api_key: sk-random } }, expect: deny }
  - { name: cert only, request: { direction: ingress, identity: { cert_cn: app } }, expect: allow, rules: [apps] }
  - { name: jwt, request: { direction: ingress, identity: { jwt_sub: u1 } }, expect: allow, rules: [jwt-chat] }
  - { name: dns upper pattern, request: { direction: ingress, identity: { cert_san_dns: a.sec.corp.example } }, expect: allow, rules: [sec] }
  - { name: q one character, request: { direction: ingress, identity: { jwt_iss: i, jwt_sub: "useré" } }, expect: allow, rules: [users] }
  - name: 17th group is beyond the proxy's 16
    request: { direction: ingress, identity: { jwt_groups: [g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13, g14, g15, g16, target] } }
    expect: deny
  - name: 16th group
    request: { direction: ingress, identity: { jwt_groups: [g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13, g14, g15, target] } }
    expect: allow
    rules: [grp]
Y
run_tests "$work/id.yaml" "$work/id.tests.yaml"

# --- paths: one spelling, ambiguous ones refused; routes never on egress
cat >"$work/paths.yaml" <<'Y'
version: 1
models:
  m1: { isolation: vm }
data:
  hr-api: { url: "https://hr.corp.example:8443/api/", classification: confidential }
  hr-admin: { url: "https://hr.corp.example:8443/api/admin", classification: restricted }
rules:
  - { id: alice-any, effect: allow, when: { direction: ingress, model: m1 } }
  - { id: no-files, effect: deny, when: { direction: ingress, path: { prefix: /v1/files } } }
  - { id: list-models, effect: allow, when: { route: "GET /v1/models" } }
  - { id: hr-read, effect: allow, when: { direction: egress, data: hr-api, method: GET } }
Y
cat >"$work/paths.tests.yaml" <<'Y'
cases:
  - { name: encoded f, request: { direction: ingress, model: m1, method: POST, path: /v1/%66iles }, expect: deny, rules: [no-files] }
  - { name: double slash, request: { direction: ingress, model: m1, method: POST, path: //v1/files }, expect: deny, rules: [no-files] }
  - { name: encoded slash, request: { direction: ingress, model: m1, method: POST, path: /v1/files%2Fx }, expect: deny, rules: [] }
  - { name: dot segment, request: { direction: ingress, model: m1, method: POST, path: /v1/x/%2e%2e/files }, expect: deny, rules: [] }
  - { name: admin encoded, request: { direction: egress, method: GET, url: "https://hr.corp.example:8443/api/%61dmin/users" }, expect: deny }
  - { name: admin slashes, request: { direction: egress, method: GET, url: "https://hr.corp.example:8443/api//admin/users" }, expect: deny }
  - { name: hr api, request: { direction: egress, method: GET, url: "https://hr.corp.example:8443/api/x" }, expect: allow, rules: [hr-read] }
  - { name: route on egress, request: { direction: egress, method: GET, url: "https://evil.example/v1/models" }, expect: deny }
  - { name: route on ingress, request: { direction: ingress, route: "GET /v1/models" }, expect: allow, rules: [list-models] }
Y
run_tests "$work/paths.yaml" "$work/paths.tests.yaml"
out=$("$C" policy explain "$work/paths.yaml" --request '{"direction":"egress","method":"GET","url":"https://hr.corp.example:8443/api/%61dmin/users"}')
grep -q '^request: .*data=hr-admin .*path=/api/admin/users ' <<<"$out" || fail "explain data source: $out"
out=$("$C" policy explain "$work/paths.yaml" --request '{"direction":"ingress","model":"m1","method":"POST","path":"/v1/a%2F..%2Ffiles"}')
grep -q "^path refused: it has an encoded '/'" <<<"$out" || fail "explain refused path: $out"
"$C" policy check "$work/paths.yaml" 2>"$work/err" >/dev/null || fail "paths.yaml: $(cat "$work/err")"
grep -qF "$work/paths.yaml:10:54: warning: rule 'list-models' has a route and no direction" "$work/err" ||
	fail "route warning: $(cat "$work/err")"

# --- limits: every window applies; max_body 0 is refused
cat >"$work/lim.yaml" <<'Y'
version: 1
principals:
  a: { match: { cert_cn: a } }
models:
  m1: { isolation: vm }
rules:
  - id: per-second
    effect: allow
    when: { direction: ingress, principal: a }
    limits: { requests_per_second: 2 }
  - id: per-day
    effect: allow
    when: { direction: ingress, model: m1 }
    limits: { requests_per_day: 100000, max_body: 1KiB }
Y
out=$("$C" policy explain "$work/lim.yaml" --request '{"direction":"ingress","principal":"a","model":"m1"}')
grep -q '^obligations: .*max_body=1024 .*requests=2/1s,100000/86400s ' <<<"$out" || fail "merged limits: $out"
sed 's/requests_per_second: 2 }/requests_per_second: 2, max_body: 0 }/' "$work/lim.yaml" >"$work/lim0.yaml"
expect_check_error "$work/lim0.yaml" "10:49: error: max_body must be at least 1 byte"

# --- check refuses, with the position
cat >"$work/det.yaml" <<'Y'
version: 1
detectors:
  secretword: { patterns: ['(unclosed'] }
rules:
  - { id: r, effect: allow, when: { direction: ingress }, inspect: { prompt: { secretword: deny } } }
Y
expect_check_error "$work/det.yaml" "3:28: error: detector 'secretword': pattern: Missing close parenthesis"
cat >"$work/attr.yaml" <<'Y'
version: 1
principals:
  a: { match: { cert_cn: a }, attributes: { clearance: internal } }
rules:
  - id: r
    effect: deny
    when: { principal.attributes: { clearance: public, clearance: internal } }
Y
expect_check_error "$work/attr.yaml" "7:56: error: duplicate key 'clearance' (first at line 7)"
cat >"$work/typo.yaml" <<'Y'
version: 1
principals:
  hr-app: { match: { cert_cn: hr }, attributes: { clearance: confidental } }
data:
  payroll: { url: "https://payroll.corp.example/", classification: restricted }
rules:
  - id: clearance-covers-data
    effect: deny
    when: { direction: egress, data.classification: { above: principal.attributes.clearance } }
Y
expect_check_error "$work/typo.yaml" "3:62: error: attribute 'clearance' of principal 'hr-app' is 'confidental', not a classification level"
cat >"$work/dupid.yaml" <<'Y'
version: 1
models:
  m: { isolation: vm }
  m: { isolation: none }
Y
expect_check_error "$work/dupid.yaml" "4:3: error: duplicate model id 'm' (hint: first defined at $work/dupid.yaml:3:3)"
printf 'version: 1\nrules:\n  - { id: r, effect: allow, description: "a\0b" }\n' >"$work/nul.yaml"
expect_check_error "$work/nul.yaml" "3:44: error: YAML syntax: control characters are not allowed"
mkfifo "$work/fifo.yaml"
printf 'version: 1\ninclude: [fifo.yaml]\n' >"$work/fifo-top.yaml"
if timeout 10 "$C" policy check "$work/fifo-top.yaml" >"$work/out" 2>"$work/err"; then
	fail "a FIFO include was accepted"
fi
grep -qF "$work/fifo-top.yaml:2:11: error: include: $work/fifo.yaml: not a regular file" "$work/err" ||
	fail "FIFO include: $(cat "$work/err")"
printf 'version: 1\ninclude: [cyc-b.yaml]\n' >"$work/cyc-a.yaml"
printf 'include: [cyc-a.yaml]\n' >"$work/cyc-b.yaml"
expect_check_error "$work/cyc-a.yaml" ""
grep -qF "$work/cyc-b.yaml:1:11: error: include cycle: '$work/cyc-b.yaml' includes '$work/cyc-a.yaml'" "$work/err" ||
	fail "cycle: $(cat "$work/err")"

# --- an id listed twice counts once; `rules:` is checked against every deciding rule
cat >"$work/dup.yaml" <<'Y'
version: 1
principals:
  a: { match: { cert_cn: a } }
models:
  m1: { isolation: vm }
rules:
  - { id: r1, effect: allow, when: { direction: ingress, principal: [a, a], model: m1 } }
  - { id: r2, effect: allow, when: { direction: ingress, model: m1, route: ["POST /x", "POST /x"] } }
Y
out=$("$C" policy explain "$work/dup.yaml" --request '{"direction":"ingress","principal":"a","model":"m1","route":"POST /x"}')
grep -q '^deciding rules: r1 r2$' <<<"$out" || fail "deciding rules listed twice: $out"
{
	echo 'version: 1'
	echo 'rules:'
	for i in $(seq 10); do echo "  - { id: d$i, effect: deny, when: { direction: ingress } }"; done
} >"$work/ten.yaml"
cat >"$work/ten.tests.yaml" <<'Y'
cases:
  - { name: ten, request: { direction: ingress }, expect: deny, rules: [d1, d2, d3, d4, d5, d6, d7, d8, d9, d10] }
Y
run_tests "$work/ten.yaml" "$work/ten.tests.yaml"
printf 'cases:\n  - { name: eight, request: { direction: ingress }, expect: deny, rules: [d1, d2, d3, d4, d5, d6, d7, d8] }\n' >"$work/eight.tests.yaml"
if "$C" policy test "$work/ten.yaml" "$work/eight.tests.yaml" >/dev/null 2>&1; then
	fail "8 of 10 deciding rules passed as 'exactly these'"
fi

# --- the hash is the content's, however the path is spelled
mkdir "$work/h"
cp "$work/lim.yaml" "$work/h/p.yaml"
h1=$("$C" policy check "$work/h/p.yaml" | sed 's/.*sha256 \([0-9a-f]*\).*/\1/')
h2=$(cd "$work/h" && "$C" policy check ./p.yaml | sed 's/.*sha256 \([0-9a-f]*\).*/\1/')
h3=$(cd "$work" && "$C" policy check h/../h/p.yaml | sed 's/.*sha256 \([0-9a-f]*\).*/\1/')
[ "$h1" = "$h2" ] && [ "$h1" = "$h3" ] || fail "hash depends on the path: $h1 $h2 $h3"

[ "$fails" -eq 0 ] || exit 1
echo "policy_hardening: ok"
