#!/usr/bin/env bash
# `custos up`: the command line's --log-level and --log-format win over custos.yaml's log:
# section, each on its own (a flag not given leaves the file's value), as with every daemon.
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
	for i in $(seq 200); do
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
[ "$fails" -eq 0 ]
