#!/usr/bin/env bash
# A sandboxed model through `custos up`: the model-server TEST FIXTURE runs in a process
# sandbox (own network namespace with loopback only); custos reaches it through a socket made
# inside that namespace, with no port on the host. A chat completion and a stream go through;
# the host cannot reach the model's port directly. What the model server writes to its stdout
# and stderr becomes log lines naming the model (JSON lines here: every line of custos' stderr
# parses), control characters replaced.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
mport=18000
EXTRA_MODELS="" write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" 1
# Replace the plain-upstream model by a sandboxed one.
# The model server runs under a wrapper that writes to stdout and stderr first.
# (a directory of its own: $work is 0700, which the sandbox's root cannot enter)
fxw=$(mktemp -d /tmp/custos-fxw.XXXXXX)
chmod 755 "$fxw"
trap 'cleanup; rm -rf "$fxw"' EXIT
cat >"$fxw/model.sh" <<'SH'
#!/bin/sh
echo "hello from the model on stdout"
printf 'a terminal escape \033[31m on stderr\n' >&2
echo "LONGV has ${#LONGV} bytes"
echo "TZ is ${TZ-unset}"
if ln -s /nowhere /tmp/custos-deny-probe 2>/dev/null; then echo "symlink ran"; else echo "symlink refused"; fi
# a flood (the first instance only): logged up to the rate limit, the rest dropped and counted
[ -e /opt/fxw/counted ] || seq 1 20000
# nothing more until the test has counted the flood (at most 15 s: start_timeout is 20 s)
i=0
until [ -e /opt/fxw/counted ] || [ "$i" -ge 150 ]; do sleep 0.1; i=$((i + 1)); done
exec "$@"
SH
chmod 755 "$fxw/model.sh"
# An env value of 4096 bytes (the most custos.yaml takes) reaches the model whole: LONGV=<value>
# is longer than the 4096-byte buffer `up` used to print it into.
longv=$(head -c 4096 /dev/zero | tr '\0' v)
perl -0777 -i -pe 's/models:\n  - id: test-model\n    upstream:\n      url: "http:\/\/127.0.0.1:1\/"\n/models:\n  - id: test-model\n    sandbox:\n      type: process\n      profile: fx\n      command: [\/bin\/sh, \/opt\/fxw\/model.sh, \/opt\/fx\/model-server, --listen, "127.0.0.1:'"$mport"'", --tokens, "4", --model-id, test-model]\n      env: { ASAN_OPTIONS: "detect_leaks=0", LONGV: "'"$longv"'" }\n      port: '"$mport"'\n      health: { start_timeout: 20s }\n/' "$work/custos.yaml"
cat >>"$work/custos.yaml" <<CFG
sandbox_profiles:
  fx:
    binds:
      - { src: $(dirname "$fixture"), dst: /opt/fx }
      - { src: $fxw, dst: /opt/fxw }
    limits: { memory: 1GiB, pids: 64 }
    seccomp: { deny: [symlink, symlinkat] }
    devices: [/dev/zero]
CFG
grep -q 'type: process' "$work/custos.yaml" || { fail "config rewrite"; exit 1; }
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
# The flood of 20000 lines (written in far less than the 190 s the limit would log them in):
# the burst and the rate are logged, the rest is dropped and counted in warnings; together
# they are every line.
dropped() { grep -o '"msg":"sandbox test-model: [0-9]* lines of output ([0-9]* bytes) dropped' "$work/custos.log" |
	grep -o ': [0-9]* lines' | awk '{ s += $2 } END { if (NR) print s }'; }
flood_counted() {
	local d l
	d=$(dropped) l=$(grep -c '"msg":"sandbox test-model: output: [0-9]*"' "$work/custos.log")
	[ -n "$d" ] && [ "$d" -gt 0 ] && [ $((d + l)) -eq 20000 ]
}
# the model waits for this before its server starts (and writes lines of its own)
( wait_until 60 flood_counted && echo "$(dropped)" >"$work/flood.dropped"; touch "$fxw/counted" ) &
# custos' own stdin is a file here (a background job's would be /dev/null already): the
# model server must not get it.
echo marker >"$work/stdin"
# TZ is set for custos; the profile's env_allow (none) passes none of its variables.
TZ=Europe/Paris CUSTOS_STDIN="$work/stdin" LOG_FORMAT=json start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
url="https://localhost:$PORT/v1/chat/completions"
code=$("${C[@]}" -o "$work/out" -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","messages":[{"role":"user","content":"inside the sandbox"}]}' "$url")
check "chat with the sandboxed model" "$code" 200
grep -q 'inside the sandbox' "$work/out" && ok "reply came from the sandboxed model" || fail "unexpected reply: $(cat "$work/out")"
"${C[@]}" -N -o "$work/sse" -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","stream":true,"messages":[{"role":"user","content":"x y"}]}' "$url"
grep -q '^data: \[DONE\]' "$work/sse" && ok "stream from the sandboxed model" || fail "stream failed"
if (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null; then
	fail "the model's port is reachable from the host"
else
	ok "the model's port is not reachable from the host network namespace"
fi
grep -q 'sandbox started' "$work/custos.log" && ok "sandbox start logged"
# The model server's stdin is /dev/null, not whatever custos was started with (a terminal).
# Looked for among this custos' descendants only: another test's sandboxed model server (run
# beside this one by ctest -j) may have the same command line.
descendants() { # descendants PID: the pids under PID, depth first
	local c
	for c in $(pgrep -P "$1"); do
		echo "$c"
		descendants "$c"
	done
}
mpid=""
for p in $(descendants "$CU_PID"); do
	if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "model-server --listen 127.0.0.1:$mport"; then
		mpid=$p
		break
	fi
done
if [ -n "$mpid" ]; then
	check "the model server's stdin" "$(readlink "/proc/$mpid/fd/0")" /dev/null
else
	fail "model server process not found"
fi
# The profile's seccomp.deny is in force under `up` (it was dropped), and a long env value
# arrives whole (it was cut to fit 4096 bytes with its name). The supervisor's output thread
# of the sandbox logs what the wrapper wrote, on its own time: the model answering does not
# mean those lines are in custos.log yet, so each is waited for.
logged() { grep -q "$1" "$work/custos.log"; }
wait_until 30 logged '"msg":"sandbox test-model: output: symlink refused"' &&
	ok "seccomp.deny of the profile applies" || fail "seccomp.deny ignored: $(grep -o 'output: symlink [a-z]*' "$work/custos.log")"
wait_until 30 logged '"msg":"sandbox test-model: output: TZ is unset"' &&
	ok "a profile without env_allow passes no host variable" || fail "host variable passed: $(grep -o 'output: TZ is [^"]*' "$work/custos.log")"
wait_until 30 logged '"msg":"sandbox test-model: output: LONGV has 4096 bytes"' &&
	ok "a 4096-byte env value reaches the model whole" || fail "env value cut: $(grep -o 'output: LONGV has [0-9]* bytes' "$work/custos.log")"
# The model server's output: log lines naming it, JSON like every other line.
wait_until 30 logged '"msg":"sandbox test-model: output: hello from the model on stdout"' &&
	ok "the model's stdout is a log line naming it" || fail "no stdout line: $(grep -v '^{' "$work/custos.log" | head -3)"
wait_until 30 logged '"msg":"sandbox test-model: output: a terminal escape ?\[31m on stderr"' &&
	ok "the model's stderr is a log line, its escape character replaced" || fail "no stderr line"
[ -s "$work/flood.dropped" ] &&
	ok "a flood of output is rate-limited: $(cat "$work/flood.dropped") of 20000 lines dropped and counted" ||
	fail "flood: dropped '$(dropped)', logged $(grep -c '"msg":"sandbox test-model: output: [0-9]*"' "$work/custos.log")"
if command -v python3 >/dev/null; then
	bad=$(python3 -c 'import json, sys
for i, l in enumerate(open(sys.argv[1]), 1):
    try: json.loads(l)
    except Exception: print("line %d: %r" % (i, l)); sys.exit(1)' "$work/custos.log") &&
		ok "every line custos wrote to stderr is JSON" || fail "not JSON: $bad"
fi

# The policy may not declare more isolation than custos.yaml runs the model with: test-model
# runs in a process sandbox, a policy declaring `vm` would let ingress rules trust a VM that is
# not there. Refused by config check --host at the model's id, by a reload (the policy in force
# stays), and at start.
cp "$work/policy.yaml" "$work/policy.good"
sed -i 's/^  test-model: { isolation: none }$/  test-model: { isolation: vm }/' "$work/policy.yaml"
grep -q 'test-model: { isolation: vm }' "$work/policy.yaml" || fail "policy rewrite"
why="models[0] (test-model): the policy declares isolation vm, but custos.yaml runs it in a process sandbox (isolation process)"
"$bin" config check --host "$work/custos.yaml" >"$work/iso.check" 2>&1 && fail "config check --host passed a policy declaring vm"
grep "^$work/custos.yaml:[0-9]*:[0-9]*: error: " "$work/iso.check" | grep -qF "$why" &&
	ok "config check --host: refused at the model's id" || fail "config check --host: $(cat "$work/iso.check")"
n=$(grep -c 'reload failed' "$work/custos.log")
kill -HUP "$CU_PID"
wait_log 'reload failed' $((n + 1))
grep 'reload failed' "$work/custos.log" | tail -1 | grep -qF "$why" &&
	ok "reload: refused, naming the model and both levels" || fail "reload: $(grep 'reload failed' "$work/custos.log" | tail -1)"
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","messages":[{"role":"user","content":"still"}]}' "$url")
check "reload refused: still served" "$code" 200
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
timeout 120 "$bin" up -c "$work/custos.yaml" >"$work/iso.up" 2>&1 && fail "custos up started with a policy declaring vm"
grep -qF "$why" "$work/iso.up" && ok "start: refused, naming the model" || fail "start: $(tail -5 "$work/iso.up")"
cp "$work/policy.good" "$work/policy.yaml"
[ "$fails" -eq 0 ]
