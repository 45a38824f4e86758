#!/usr/bin/env bash
# egress_policy_scope: which data source an egress call is decides from the policy's own
# catalogue (policy.yaml `data:`), as `custos policy test` with `url:` does, not from the entry
# of the same id when custos.yaml's source is wider. custos.yaml's source `web` covers the
# whole host; policy.yaml's `web` only /api/, and its rule allows `data: web`:
# - GET /api/x: the policy's web: allowed (200), the event names data_source web;
# - GET /other: custos.yaml's source, but no data source of the policy: default deny (403);
#   before, the proxy fell back to the policy entry of the same id and allowed it, while
#   `custos policy test` decided deny for the same URL;
# - `custos policy test` decides both URLs as the proxy did;
# - `custos config check --host` warns, at the source's url, that it is wider than the policy's.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-policy-scope curl python3
P_IN=$(port); P_EG=$(port)
cd "$W"
eg_upstream_pki
eg_record_source
eg_m1_conf info "$(eg_source_yaml web "http://localhost:$P_D/" internal)" "$EG_TIMEOUTS"
eg_m1_policy <<EOY
$(eg_policy_data web "http://localhost:$P_D/api/" internal)
rules:
  - id: read-api
    effect: allow
    when: { direction: egress, data: web, method: GET }
EOY
chmod 600 policy.yaml custos.yaml
# config check --host says so, at the source's url.
"$BIN" config check --host custos.yaml >check.out 2>&1
grep -F "warning: data_sources[0] (web): url http://localhost:$P_D/ is not within the policy's data source web (url http://localhost:$P_D/api/)" check.out >/dev/null &&
	ok "config check --host warns at the wider source" || bad "config check --host: $(cat check.out)"
eg_start "$P_D"
get() { curl -s -o /dev/null -w '%{http_code}' -x "$PX" "$@"; }

check "inside the policy's web (/api/x): 200" test "$(get "http://localhost:$P_D/api/x")" = 200
check "outside it (/other): 403" test "$(get "http://localhost:$P_D/other")" = 403
ev=$(eg_event /other) || bad "no event for /other"
grep -q '"decision":"deny"' <<<"$ev" && grep -q 'no rule allows' <<<"$ev" &&
	ok "/other: audited as denied by default" || bad "/other: $ev"
grep -qx '/other' targets.txt 2>/dev/null && bad "/other reached the source" || ok "/other never reached the source"

cat >tests.yaml <<EOY
cases:
  - name: the policy's web
    request: { direction: egress, model: m1, url: "http://localhost:$P_D/api/x", method: GET }
    expect: allow
  - name: outside the policy's web
    request: { direction: egress, model: m1, url: "http://localhost:$P_D/other", method: GET }
    expect: deny
EOY
out=$("$BIN" policy test policy.yaml tests.yaml 2>&1)
check "policy test decides as the proxy did" test "$(tail -1 <<<"$out")" = "2 passed, 0 failed"
eg_stop
eg_done
