#!/usr/bin/env bash
# The command line as custos(8) describes it, through the real binary: a usage error is exit 2
# and says what is wrong (an unknown option, a missing or extra argument, a value out of range
# or with trailing junk, a value given twice) before the usage line; a word starting with '-'
# where a file or directory is expected is an unknown option, never created as a directory
# (`ca init --force`); `vm run` does not ignore a stray word; `ctl` names an unknown command
# and refuses --insecure-remote without --url http://; `audit export --help` shows --format as
# optional, as it is; a directory without log files is not an empty export; stdout that
# cannot be written is exit 1; with --log-format json every line on stderr is a JSON object,
# usage errors, failures and a check's diagnostics alike.
set -u
bin=${CUSTOS_BIN:?CUSTOS_BIN not set}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
command -v python3 >/dev/null || {
	echo "SKIPPED: python3 is needed to parse the JSON lines"
	exit 77
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
ok() { echo "ok   $1"; }
bad() {
	echo "FAIL $1"
	fail=1
}

# expect NAME RC PATTERN ARGS...: runs custos ARGS (stdin closed, in $work), compares the exit
# status and looks for PATTERN (extended regex; empty: none) in stderr.
expect() {
	local name=$1 rc=$2 pat=$3 got
	shift 3
	timeout 60 "$bin" "$@" </dev/null >"$work/out" 2>"$work/err"
	got=$?
	if [ "$got" -ne "$rc" ]; then
		bad "$name: exit $got, expected $rc: $(head -c 400 "$work/err")"
	elif [ -n "$pat" ] && ! grep -Eq -- "$pat" "$work/err"; then
		bad "$name: stderr lacks /$pat/: $(head -c 400 "$work/err")"
	else
		ok "$name"
	fi
}
# expect_json NAME PATTERN ARGS...: exit 2, every stderr line a JSON object, one of them
# matching PATTERN.
expect_json() {
	local name=$1 pat=$2
	shift 2
	expect "$name" 2 "$pat" --log-format json "$@"
	python3 -c '
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1):
    try:
        assert isinstance(json.loads(line), dict)
    except Exception:
        sys.exit("line %d is not a JSON object: %r" % (n, line))
' "$work/err" && ok "$name: every line JSON" || bad "$name: not all JSON: $(head -c 400 "$work/err")"
}

# Options mistaken for directory names: nothing may be created.
expect "ca init --force" 2 "custos ca init: unknown option '--force'" ca init --force
expect "audit keygen --force" 2 "custos audit keygen: unknown option '--force'" audit keygen --force
expect "audit accept-head -x" 2 "custos audit accept-head: unknown option '-x'" audit accept-head -x
[ -e "$work/--force" ] && bad "a directory named --force was created" || ok "no directory --force"
expect "ca init -- -dir (after --, a name)" 0 "" ca init -- -dir
[ -f "$work/-dir/ca.key" ] && ok "ca init -- -dir made -dir/ca.key" || bad "no -dir/ca.key"
expect "policy check --strict" 2 "custos policy check: unknown option '--strict'" policy check --strict
expect "policy check, two files" 2 "unexpected argument 'b'" policy check a b
expect "policy test, one file" 2 "custos policy test: missing argument" policy test a
expect "policy explain, no --request" 2 "missing --request" policy explain p.yaml
expect "policy explain --request without a value" 2 "option '--request' needs a value" \
	policy explain p.yaml --request
expect "policy explain --request twice" 2 "--request given twice" \
	policy explain p.yaml --request '{}' --request '{}'
expect "policy explain, unknown option" 2 "unknown option '--verbose'" \
	policy explain p.yaml --verbose --request '{}'

# config check, version, help
expect "config check, no file" 2 "custos config check: missing FILE" config check
expect "config check, two files" 2 "custos config check: unexpected argument 'b'" config check a b
expect "config check --bogus" 2 "custos config check: unknown option '--bogus'" config check --bogus a
expect "config check --host=yes" 2 "option '--host' takes no value" config check --host=yes a
expect "config keys extra" 2 "custos config keys: unexpected argument 'x'" config keys x
expect "version extra" 2 "custos version: unexpected argument 'extra'" version extra
expect "version, usage line without a trailing blank" 2 "^usage: custos version$" version extra
expect "help extra" 2 "help takes no argument" help extra

# up: in JSON (the default off a terminal) and in text, the problem is named
expect "up -x (json)" 2 "\"msg\":\"up: unknown option '-x'\"" up -x
expect "up -c without a value" 2 "option '-c' needs a value" up -c
expect "up, extra argument" 2 "unexpected argument 'b'" up -c a b
expect "up -c twice" 2 "-c given twice" up -c a -c b
expect "up, no -c" 2 "missing -c FILE" up
expect "up -x (text)" 2 "^custos up: unknown option '-x'" --log-format text up -x

# audit verify / export
expect "audit verify, no path" 2 "custos audit verify: missing PATH" audit verify
expect "audit verify --head twice" 2 "--head given twice" audit verify --head a --head b x
expect "audit verify --pubkey without a value" 2 "option '--pubkey' needs a value" audit verify x --pubkey
expect "audit export, no path" 2 "custos audit export: missing PATH" audit export
expect "audit export --format xml" 2 "--format: unknown format 'xml'" audit export --format xml x
mkdir "$work/empty"
expect "audit export of a directory without log files" 1 "empty: no audit files found" \
	audit export "$work/empty"
"$bin" audit export --help >"$work/out" 2>&1
grep -q 'audit export \[--format json|cef|leef|rfc5424\] PATH' "$work/out" &&
	ok "audit export --help: --format optional" || bad "audit export --help: $(cat "$work/out")"

# sandbox exec: numbers, ports, lists (refused before any sandbox is made)
expect "sandbox exec --allow-tcp-bind 0" 2 "--allow-tcp-bind 0: 0 is out of range \[1, 65535\]" \
	sandbox exec --allow-tcp-bind 0 -- true
expect "sandbox exec --allow-tcp-connect 70000" 2 "--allow-tcp-connect 70000: 70000 is out of range" \
	sandbox exec --allow-tcp-connect 70000 -- true
expect "sandbox exec --pids 5x" 2 "--pids 5x: '5x' is not a whole number" sandbox exec --pids 5x -- true
ports=()
for p in $(seq 1 17); do ports+=(--allow-tcp-bind "$p"); done
expect "sandbox exec, 17 ports" 2 "more than 16 --allow-tcp-bind" sandbox exec "${ports[@]}" -- true
expect "sandbox exec --bogus" 2 "custos sandbox exec: unknown option '--bogus'" sandbox exec --bogus -- true

# vm run: options only; nothing is started for a usage error
expect "vm run, stray word" 2 "custos vm run: unexpected argument 'extra'" \
	vm run --uri test:///default --name x --kernel /nonexistent --channel "$work/c.sock" extra
expect "vm run --vcpus 0" 2 "--vcpus 0: 0 is out of range \[1, " vm run --vcpus 0
expect "vm run --memory-mib 64x" 2 "--memory-mib 64x: '64x' is not a whole number" vm run --memory-mib 64x
expect "vm run --bogus" 2 "custos vm run: unknown option '--bogus'" vm run --bogus

# ctl: refused before any connection
expect "ctl, no command" 2 "custos ctl: missing COMMAND" ctl
expect "ctl bogus" 2 "custos ctl: unknown command 'bogus'" ctl --socket "$work/none.sock" bogus
expect "ctl health extra" 2 "health: unexpected argument 'extra'" ctl --socket "$work/none.sock" health extra
expect "ctl decide, no context" 2 "decide: missing argument" ctl --socket "$work/none.sock" decide
expect "ctl policy bogus" 2 "policy: unknown subcommand 'bogus'" ctl --socket "$work/none.sock" policy bogus
expect "ctl --insecure-remote without --url" 2 "--insecure-remote goes with --url http://" \
	ctl --socket "$work/none.sock" --insecure-remote health
expect "ctl bogus, before the token file is read" 2 "custos ctl: unknown command 'bogus'" \
	ctl --url http://127.0.0.1:1 --token-file "$work/no-token" bogus
expect "ctl restart with a bad id, before the token file is read" 2 "restart: not a sandbox id" \
	ctl --url http://127.0.0.1:1 --token-file "$work/no-token" restart 'a b'
expect "ctl --timeout 5s" 2 "--timeout 5s: want whole seconds" ctl --timeout 5s health

# --log-format json: the problem and the usage line, each a JSON object
expect_json "json: config check --bogus" "unknown option '--bogus'" config check --bogus a
expect_json "json: ctl --socket with --url" "--socket and --url: one or the other" \
	ctl --socket a --url http://127.0.0.1:1 --token-file t health
expect_json "json: ctl bogus" "unknown command 'bogus'" ctl bogus
expect_json "json: sandbox exec --gpu x" "--gpu x: none, nvidia or amd" sandbox exec --gpu x -- true
expect_json "json: vm run --vcpus 0" "--vcpus 0: 0 is out of range" vm run --vcpus 0
expect_json "json: policy explain" "missing --request" policy explain p.yaml

# Output that cannot be written is a failure, not a lost answer with exit 0.
if [ -w /dev/full ]; then
	for args in "version" "config keys" "--help"; do
		# shellcheck disable=SC2086 # the words of $args are the arguments
		"$bin" $args </dev/null >/dev/full 2>"$work/err"
		rc=$?
		[ "$rc" -eq 1 ] && grep -q "standard output" "$work/err" &&
			ok "$args >/dev/full: exit 1, said" ||
			bad "$args >/dev/full: exit $rc: $(head -c 300 "$work/err")"
	done
else
	echo "skip /dev/full cases: no writable /dev/full"
fi

# --log-format json: a failure and a check's diagnostics too (exit 1)
printf 'version: 1\nbogus_key: 1\n' >"$work/bad.yaml"
for args in "config check $work/bad.yaml" "policy check $work/bad.yaml" "ca init $work/no/such/dir" \
	"audit verify $work/nonexistent"; do
	# shellcheck disable=SC2086 # the words of $args are the arguments
	"$bin" --log-format json $args </dev/null >/dev/null 2>"$work/err"
	rc=$?
	if [ "$rc" -ne 1 ] || ! [ -s "$work/err" ] || grep -qv '^{.*}$' "$work/err"; then
		bad "json: $args: exit $rc, stderr: $(head -c 400 "$work/err")"
	else
		ok "json: $args: exit 1, every line JSON"
	fi
done
grep -q '"msg":"[^"]*bad.yaml:2:1: error: unknown key' <(
	"$bin" --log-format json config check "$work/bad.yaml" 2>&1
) && ok "json: config check names file:line:col" || bad "json: config check lacks file:line:col"

exit $fail
