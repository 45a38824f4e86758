#!/usr/bin/env bash
# What a reload leaves behind. With the log in JSON lines: a configuration or policy error on
# SIGHUP is logged as JSON lines (no raw diagnostic text in the stream), and the logged reason of
# the refusal names the first error's file:line:col. In the audit trail: one policy.reload event
# per reload, SIGHUP or admin API, applied or refused, with the reason and the policy hashes
# before and after.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
LOG_FORMAT=json start_custos "$work/custos.yaml"
cp "$work/custos.yaml" "$work/custos.yaml.good"
cp "$work/policy.yaml" "$work/policy.yaml.good"

count() { grep -c "$1" "$work/custos.log"; }
hup() { # hup PATTERN N: SIGHUP, wait until PATTERN was logged N times
	kill -HUP "$CU_PID"
	for _ in $(seq 600); do [ "$(count "$1")" -ge "$2" ] && break; sleep 0.1; done
	check "SIGHUP $2: '$1' logged" "$(count "$1")" "$2"
}
# The message of the last "reload failed" line (decoded: the line must be JSON).
failed_reason() {
	grep 'reload failed' "$work/custos.log" | tail -1 |
		perl -MJSON::PP -ne 'print JSON::PP::decode_json($_)->{msg}'
}
log_is_json() {
	perl -MJSON::PP -ne 'eval { JSON::PP::decode_json($_); 1 } or do { print "line $.: $_"; exit 1 }' \
		"$work/custos.log"
}

# A configuration error: 'listeners' at 2:12.
printf 'version: 1\nlisteners: 3\n' >"$work/custos.yaml"
hup 'reload failed' 1
reason=$(failed_reason)
case $reason in
*"custos.yaml:2:12: 'listeners' must be a list"*) ok "config refusal names file:line:col ($reason)" ;;
*) fail "config refusal: '$reason'" ;;
esac
bad=$(log_is_json) && ok "every log line is JSON" || fail "not JSON: $bad"
grep -q '"level":"error".*custos.yaml:2:12: error: ' "$work/custos.log" &&
	ok "the diagnostic is a JSON log line" || fail "diagnostic not in the log"

# A policy error: 'effect' at 4:13.
cp "$work/custos.yaml.good" "$work/custos.yaml"
printf 'version: 1\nrules:\n  - id: x\n    effect: maybe\n' >"$work/policy.yaml"
hup 'reload failed' 2
reason=$(failed_reason)
case $reason in
*"policy.yaml:4:13: 'maybe' is not a valid value"*) ok "policy refusal names file:line:col ($reason)" ;;
*) fail "policy refusal: '$reason'" ;;
esac
bad=$(log_is_json) && ok "every log line is JSON" || fail "not JSON: $bad"

# Applied reloads: the same policy again, then a changed one (bob allowed); then the admin API:
# the same policy, then a broken one.
cp "$work/policy.yaml.good" "$work/policy.yaml"
hup 'proxy: reloaded' 1
sed -i 's/principal: \[alice, analytics, sso\]/principal: [alice, bob, analytics, sso]/' "$work/policy.yaml"
hup 'proxy: reloaded' 2
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
ctl policy reload | grep -q '"reloaded":true' && ok "admin API reload" || fail "admin API reload"
printf 'version: 1\nrules:\n  - id: x\n    effect: maybe\n' >"$work/policy.yaml"
ctl policy reload 2>&1 | grep -q '"reloaded":false' && ok "admin API refusal" || fail "admin API refusal"
kill -TERM "$CU_PID"
wait "$CU_PID"

# One line per policy.reload event: trigger, outcome, the policy in force after it against the
# one before (same / changed), where the reason points, and whether each "before" hash is the
# previous event's "after".
got=$(audit_grep '"type":"policy.reload"' | perl -MJSON::PP -ne '
	my $e = JSON::PP::decode_json($_);
	my ($old, $new) = ($e->{old_policy_hash} // "", $e->{policy_hash} // "");
	my $h = $new eq $old ? "same" : "changed";
	my $at = ($e->{reason} // "") =~ /(custos|policy)\.yaml:(\d+:\d+): / ? "$1.yaml:$2" : "-";
	my $chain = (!defined $prev || $prev eq $old) && $old =~ /^[0-9a-f]{64}$/ ? "" : " BROKEN";
	$prev = $new;
	print join(" ", $e->{trigger}, $e->{outcome}, $h, $at) . $chain . "\n";')
want="sighup refused same custos.yaml:2:12
sighup refused same policy.yaml:4:13
sighup reloaded same -
sighup reloaded changed -
admin reloaded same -
admin refused same policy.yaml:4:13"
check "policy.reload events" "$got" "$want"
audit_grep '"type":"policy.reload".*"trigger":"admin"' | grep -q '"principal":"uid:' &&
	ok "the admin API's event names the caller" || fail "no principal in the admin API's event"
[ "$fails" -eq 0 ]
