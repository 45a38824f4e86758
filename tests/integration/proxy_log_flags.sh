#!/usr/bin/env bash
# `custos up`: the command line's --log-level and --log-format win over custos.yaml's log:
# section, each on its own (a flag not given leaves the file's value), as with every daemon.
# In JSON mode every line custos writes to stderr is JSON (each parsed with python3), from the
# first: configuration errors and warnings, usage errors, a log file that cannot be opened.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/base.yaml" "$FX_PORT"
plain_port=$(sed -n '/id: plain/{n;s/.*127\.0\.0\.1:\([0-9]*\).*/\1/p}' "$work/base.yaml")
[ -n "$plain_port" ] || { fail "no plain listener port in the config"; exit 1; }
with_log() { # with_log FILE LOG_YAML
	{ cat "$work/base.yaml"; printf 'log: %s\n' "$2"; } >"$1"
	chmod 600 "$1"
}
# run_up NAME CONFIG GLOBAL_FLAGS...: starts custos up, waits until the plain listener answers
# a request, stops it; its stderr is in $work/NAME.log.
run_up() {
	local name=$1 cfg=$2 i code=""
	shift 2
	"$bin" "$@" up -c "$cfg" 2>"$work/$name.log" &
	local pid=$!
	pids+=("$pid")
	local end=$((SECONDS + 60)) # a start under ASan on a loaded machine
	while [ "$SECONDS" -lt "$end" ]; do
		code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
			"http://127.0.0.1:$plain_port/v1/models" 2>/dev/null)
		[ "$code" = 200 ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	check "$name: custos served a request" "$code" 200
	kill -TERM "$pid"
	wait "$pid"
}
text_lines() { grep -cE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z custos\[[0-9]+\] '"$2"': ' "$work/$1.log" || true; }
json_lines() { grep -c '^{.*"level":"'"$2"'"' "$work/$1.log" || true; }

# ---- both flags given: they win over log: {level: error, format: json}
with_log "$work/a.yaml" "{ level: error, format: json }"
run_up both "$work/a.yaml" --log-level debug --log-format text
[ "$(text_lines both debug)" -gt 0 ] && ok "both: debug lines (the flag's level, not error)" || fail "both: no debug text lines: $(head -3 "$work/both.log")"
check "both: text format (the flag's, not json)" "$(json_lines both '[a-z]*')" 0
check "both: the listener line is there" "$(grep -c 'listener 1 on port' "$work/both.log")" 1

# ---- only the level given: the file's format stays
run_up level "$work/a.yaml" --log-level info
[ "$(json_lines level info)" -gt 0 ] && ok "level only: info lines (the flag's level), in JSON (the file's format)" || fail "level only: $(head -3 "$work/level.log")"
check "level only: no debug lines" "$(json_lines level debug)" 0
check "level only: no text lines" "$(text_lines level '[a-z]*')" 0

# ---- only the format given: the file's level stays
with_log "$work/w.yaml" "{ level: warn, format: json }"
run_up format "$work/w.yaml" --log-format text
check "format only: no info lines (the file's level, warn)" "$(text_lines format info)$(json_lines format info)" 00

# ---- no flags: the file decides
with_log "$work/d.yaml" "{ level: debug, format: json }"
run_up file "$work/d.yaml"
[ "$(json_lines file debug)" -gt 0 ] && ok "no flags: the file's level (debug) and format (json)" || fail "no flags: $(head -3 "$work/file.log")"

# ---- JSON mode: every stderr line is JSON, those before the log is set up included
command -v python3 >/dev/null || skip "python3 not installed"
# all_json NAME FILE: every line of FILE parses as a JSON object with a level and a message.
all_json() {
	local bad
	bad=$(python3 -c '
import json, sys
n = 0
for i, line in enumerate(open(sys.argv[1], encoding="utf-8", errors="strict"), 1):
    try:
        o = json.loads(line)
        assert isinstance(o, dict) and "level" in o and "msg" in o
        n += 1
    except Exception:
        print("line %d: %r" % (i, line))
        sys.exit(1)
if n == 0:
    print("no lines at all")
    sys.exit(1)
' "$2") && ok "$1: every stderr line is JSON ($(wc -l <"$2") lines)" || fail "$1: $bad"
}
# up_fails NAME PATTERN ARGS...: custos ARGS exits non-zero, its stderr all JSON and matching PATTERN.
up_fails() {
	local name=$1 pat=$2 rc=0
	shift 2
	timeout 30 "$bin" "$@" 2>"$work/$name.err" >/dev/null || rc=$?
	[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ok "$name: refused (exit $rc)" || fail "$name: exit $rc"
	all_json "$name" "$work/$name.err"
	grep -q -- "$pat" "$work/$name.err" && ok "$name: says why" || fail "$name: no /$pat/: $(cat "$work/$name.err")"
}
{ cat "$work/base.yaml"; printf 'log: { format: json }\nbogus_key: 1\n'; } >"$work/bad-json.yaml"
{ cat "$work/base.yaml"; printf 'log: { format: text }\nbogus_key: 1\n'; } >"$work/bad-text.yaml"
printf 'version: 1\nlog: { format: json\n' >"$work/bad-yaml.yaml"
chmod 600 "$work"/bad-*.yaml
up_fails "flag json, config error" "bad-text.yaml:[0-9]*:[0-9]*: error: unknown key 'bogus_key'" \
	--log-format json up -c "$work/bad-text.yaml"
up_fails "file's format json, config error" "bad-json.yaml:[0-9]*:[0-9]*: error: unknown key 'bogus_key'" \
	up -c "$work/bad-json.yaml"
up_fails "YAML syntax error, not a terminal (auto)" "bad-yaml.yaml:3:1: error: YAML syntax" \
	up -c "$work/bad-yaml.yaml"
up_fails "missing file" "nonexistent.yaml" --log-format json up -c "$work/nonexistent.yaml"
up_fails "up without -c" "usage: custos up -c FILE" --log-format json up
up_fails "up with an unknown option" "usage: custos up -c FILE" --log-format json up -x
up_fails "unknown global option" "unknown option '--bogus'" --log-format json --bogus up
up_fails "bad level before the format" "unknown log level 'loud'" --log-level loud --log-format json up
up_fails "unknown command" "unknown command 'upp'" --log-format json upp
{ cat "$work/base.yaml"; printf 'log: { format: json, file: %s/no-such-dir/custos.log }\n' "$work"; } >"$work/nolog.yaml"
chmod 600 "$work/nolog.yaml"
up_fails "log file that cannot be opened" "no-such-dir/custos.log" up -c "$work/nolog.yaml"
# A full run whose config has a warning (printed before the log was set up, once): JSON too.
perl -0pe 's/^audit:\n/audit:\n  on_write_error: continue\n/m' "$work/d.yaml" >"$work/warn.yaml"
chmod 600 "$work/warn.yaml"
run_up warn "$work/warn.yaml"
all_json "a full run with a config warning" "$work/warn.log"
grep -q '"level":"warn".*requests will be served while the audit trail cannot be written' "$work/warn.log" &&
	ok "the config warning is a JSON log line" || fail "no config warning line: $(head -3 "$work/warn.log")"
[ "$fails" -eq 0 ]
