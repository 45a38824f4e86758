#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# `custos sandbox exec`: exit status passthrough (codes and signals), stdout, the environment
# allow-list, the view of the filesystem, usage errors, and profiles that must be refused.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
C="$CUSTOS_BIN"
ESCAPE="$CUSTOS_FIXTURES/escape/escape"
if ! "$C" sandbox exec -- /bin/true 2>/dev/null; then
	echo "SKIPPED: namespaces unavailable here: $("$C" sandbox exec -- /bin/true 2>&1 | tail -1)"
	exit 77
fi
export ASAN_OPTIONS=detect_leaks=0
T0=$(mktemp -d /tmp/custos-exec0.XXXXXX)
trap 'rm -rf "$T0"' EXIT
chmod 755 "$T0"
printf 'version: 1\nsandbox_profiles:\n  noll: { landlock: false }\n' >"$T0/noll.yaml"
chmod 644 "$T0/noll.yaml"
fail=0
check() { # name expected actual
	if [ "$2" != "$3" ]; then echo "FAIL: $1: want '$2', got '$3'"; fail=1; else echo "ok: $1"; fi
}
status() { set +e; "$@" >/dev/null 2>&1; echo $?; set -e; }

check "exit 0" 0 "$(status "$C" sandbox exec -- /bin/true)"
check "exit 1" 1 "$(status "$C" sandbox exec -- /bin/false)"
check "exit 42" 42 "$(status "$C" sandbox exec -- /bin/sh -c 'exit 42')"
check "killed by SIGKILL" 137 "$(status "$C" sandbox exec -- /bin/sh -c 'kill -9 $$')"
check "killed by SIGTERM" 143 "$(status "$C" sandbox exec -- /bin/sh -c 'kill -15 $$')"
check "missing command" 127 "$(status "$C" sandbox exec -- /nonexistent)"
check "PATH search" 0 "$(status "$C" sandbox exec -- true)"
check "stdout passes" "hello world" "$("$C" sandbox exec -- /bin/echo hello world 2>/dev/null)"
check "stdin passes" "abc" "$(echo abc | "$C" sandbox exec -- /bin/cat 2>/dev/null)"
check "args pass" "a b|c" "$("$C" sandbox exec -- /bin/sh -c 'printf "%s|%s" "$1" "$2"' sh 'a b' c 2>/dev/null)"

# Environment: only the allow-list and the profile's variables.
export CUSTOS_TEST_SECRET=leak
check "env not leaked" "" "$("$C" sandbox exec -- /bin/sh -c 'echo ${CUSTOS_TEST_SECRET:-}' 2>/dev/null)"
check "env keep" "leak" "$("$C" sandbox exec --keep-env CUSTOS_TEST_SECRET -- /bin/sh -c 'echo $CUSTOS_TEST_SECRET' 2>/dev/null)"
check "env set" "http://127.0.0.1:3128" "$("$C" sandbox exec --setenv HTTP_PROXY=http://127.0.0.1:3128 -- /bin/sh -c 'echo $HTTP_PROXY' 2>/dev/null)"
check "PATH default" "/usr/local/bin:/usr/bin:/bin" "$("$C" sandbox exec -- /bin/sh -c 'echo $PATH' 2>/dev/null)"

# The view: identity, hostname, no capabilities, seccomp on, read-only root, scratch writable.
check "uid" "1000" "$("$C" sandbox exec -- /usr/bin/id -u 2>/dev/null)"
check "hostname" "default" "$("$C" sandbox exec -- /bin/cat /etc/hostname 2>/dev/null)"
check "CapEff" "0000000000000000" "$("$C" sandbox exec -- /bin/sh -c 'grep CapEff /proc/self/status | cut -f2' 2>/dev/null)"
check "CapBnd" "0000000000000000" "$("$C" sandbox exec -- /bin/sh -c 'grep CapBnd /proc/self/status | cut -f2' 2>/dev/null)"
check "NoNewPrivs" "1" "$("$C" sandbox exec -- /bin/sh -c 'grep NoNewPrivs /proc/self/status | cut -f2' 2>/dev/null)"
check "Seccomp" "2" "$("$C" sandbox exec -- /bin/sh -c 'grep "^Seccomp:" /proc/self/status | cut -f2' 2>/dev/null)"
check "pid 1 is the sandbox init" "2" "$("$C" sandbox exec -- /bin/sh -c 'echo $$' 2>/dev/null)"
check "root read-only (sh: redirection failed)" 2 "$(status "$C" sandbox exec -- /bin/sh -c 'echo x > /x')"
# /dev read-only, also without Landlock; its nodes and /dev/shm still writable.
for how in "" "-c $T0/noll.yaml --profile noll"; do
	check "/dev read-only ($how)" "ok" "$("$C" sandbox exec $how -- /bin/sh -c \
		'! touch /dev/x 2>/dev/null && ! mkdir /dev/y 2>/dev/null && echo > /dev/null && echo > /dev/shm/z && echo ok' 2>/dev/null)"
done
check "scratch writable" 0 "$(status "$C" sandbox exec -- /bin/sh -c 'echo x > /tmp/x && test -s /tmp/x')"
check "only lo" "lo" "$("$C" sandbox exec -- /bin/sh -c 'ls /proc/sys/net/ipv4/conf | grep -v -e all -e default' 2>/dev/null)"
T=$(mktemp -d /tmp/custos-exec.XXXXXX)
trap 'rm -rf "$T" "$T0"' EXIT
chmod 755 "$T"
echo data >"$T/model.bin"
chmod 644 "$T/model.bin"
check "ro bind readable" "data" "$("$C" sandbox exec --ro-bind "$T:/models" -- /bin/cat /models/model.bin 2>/dev/null)"
check "ro bind read-only (sh: redirection failed)" 2 "$(status "$C" sandbox exec --ro-bind "$T:/models" -- /bin/sh -c 'echo x >> /models/model.bin')"
mkdir "$T/scratch" && chmod 777 "$T/scratch"
check "scratch dir" 0 "$(status "$C" sandbox exec --scratch "$T/scratch" -- /bin/sh -c 'echo out > /tmp/result')"
check "scratch dir content" "out" "$(cat "$T/scratch/result")"

# A profile from custos.yaml (-c): limits, binds, env_allow and a seccomp deny list apply.
cat >"$T/custos.yaml" <<'YAML'
version: 1
sandbox_profiles:
  small:
    limits: { memory: 64MiB, pids: 32, cpu: "0.5", nofile: 100 }
    seccomp: { base: default, deny: [getppid] }
    binds: [ { src: /etc/os-release, dst: /etc/os-release } ]
    env_allow: [CUSTOS_TEST_SECRET]
YAML
chmod 644 "$T/custos.yaml"
out=$("$C" sandbox exec -c "$T/custos.yaml" --profile small --events "$T/cfg-ev.json" -- /bin/sh -c \
	'grep -c . /etc/os-release >/dev/null && echo $CUSTOS_TEST_SECRET; grep "open files" /proc/self/limits | tr -s " " | cut -d" " -f4' 2>/dev/null)
check "config profile" "leak
100" "$out"
# Only env_allow passes from a custos.yaml profile (default none; not the built-in profiles'
# LANG, LC_ALL, TZ, TERM).
check "config profile: env_allow only" "leak" "$(LANG=C.UTF-8 TERM=xterm "$C" sandbox exec -c "$T/custos.yaml" \
	--profile small -- /bin/sh -c 'echo ${LANG:-}${TERM:-}$CUSTOS_TEST_SECRET' 2>/dev/null)"
check "config profile without env_allow: none" "" "$(LANG=C.UTF-8 TZ=UTC TERM=xterm "$C" sandbox exec \
	-c "$T0/noll.yaml" --profile noll -- /bin/sh -c 'echo ${LANG:-}${TZ:-}${TERM:-}' 2>/dev/null)"
check "built-in profile: LANG passes" "C.UTF-8" "$(LANG=C.UTF-8 "$C" sandbox exec -- /bin/sh -c 'echo $LANG' 2>/dev/null)"
check "config profile: exit status" 9 "$(status "$C" sandbox exec -c "$T/custos.yaml" --profile small -- /bin/sh -c 'exit 9')"
check "config profile: unknown id" 1 "$(status "$C" sandbox exec -c "$T/custos.yaml" --profile nope -- /bin/true)"
jq -e -s 'any(.[]; .event == "start" and .sandbox == "small")' "$T/cfg-ev.json" >/dev/null ||
	{ echo "FAIL: config profile events"; fail=1; }

# A custom profile that names clone, socket and ioctl keeps their argument filters (namespace
# flags, families and protocols, requests): the escape fixture's namespace, netlink, raw socket,
# TIOCSTI... vectors stay blocked, from the command line and from custos.yaml.
cat >"$T/custom.yaml" <<'YAML'
version: 1
sandbox_profiles:
  m:
    seccomp: { base: default, allow: [clone, ioctl, socket, socketpair, personality] }
YAML
chmod 644 "$T/custom.yaml"
for how in "--allow-syscall clone --allow-syscall socket --allow-syscall ioctl" \
	"-c $T/custom.yaml --profile m"; do
	out=$("$C" sandbox exec $how --ro-bind "$ESCAPE:/opt/escape" -- /opt/escape --skip-resources 2>/dev/null || true)
	check "custom ($how): vectors run" 1 "$(echo "$out" | jq -s '[.[] | select(.vector)] | length > 30' | grep -c true)"
	check "custom ($how): nothing escapes" 0 \
		"$(echo "$out" | jq -s '[.[] | select((.vector and .result != "BLOCKED") or (.control and .ok != true))] | length')"
done

# Refused up front: usage errors exit 2, bad profiles exit 1 with the reason.
check "no command" 2 "$(status "$C" sandbox exec)"
check "unknown profile" 2 "$(status "$C" sandbox exec --profile nope -- /bin/true)"
check "bad gpu" 2 "$(status "$C" sandbox exec --gpu intel -- /bin/true)"
check "relative bind" 1 "$(status "$C" sandbox exec --ro-bind relative/path -- /bin/true)"
check "dotdot bind" 1 "$(status "$C" sandbox exec --ro-bind /usr:/x/../etc -- /bin/true)"
check "custom allows ptrace" 1 "$(status "$C" sandbox exec --allow-syscall ptrace -- /bin/true)"
check "custom unknown syscall" 1 "$(status "$C" sandbox exec --allow-syscall no_such_call -- /bin/true)"
check "missing bind source" 1 "$(status "$C" sandbox exec --ro-bind /nonexistent/dir -- /bin/true)"
msg=$("$C" sandbox exec --allow-syscall mount -- /bin/true 2>&1 || true)
case "$msg" in *"always denied"*) echo "ok: denied message" ;; *) echo "FAIL: message: $msg"; fail=1 ;; esac
# A violation kills the whole sandbox when the profile says so: the init dies by SIGKILL.
check "kill on violation" 137 "$(status "$C" sandbox exec --kill-on-violation -- /bin/sh -c 'unshare -U true; exit 0')"
# The profile's SHA-256 is in every event of an events file and on the debug log's START
# line; without either, exec skips hashing (no OpenSSL initialisation on that path).
"$C" sandbox exec --events "$T/hash-ev.json" -- /bin/true
check "events carry the profile hash" 2 \
	"$(grep -c '"profile_sha256":"[0-9a-f]\{64\}"' "$T/hash-ev.json")"
check "debug log shows the profile hash" 1 \
	"$("$C" --log-level debug sandbox exec -- /bin/true 2>&1 | grep -c 'profile sha256 [0-9a-f]\{64\}')"
# cgroup v1 (as root here): the command runs in the sandbox's cgroups, its init back in custos'
# own (so that the cgroups can go as soon as the command's status is known); nothing is left
# behind, also when the command leaves a process running.
cgroup_of() { grep -E '^[0-9]+:pids:' "/proc/$1/cgroup" | cut -d: -f3; }
if [ "$(id -u)" = 0 ] && grep -q 'cgroup v1' <<<"$("$C" --log-level debug sandbox exec -- /bin/true 2>&1)"; then
	# The command runs until the test closes the FIFO on its stdin (not for a fixed time, which
	# a slow start under load could use up before its cgroups are read).
	mkfifo "$T0/hold"
	"$C" sandbox exec -- /bin/sh -c 'read -r x; exit 0' <"$T0/hold" >/dev/null 2>&1 &
	exec_pid=$!
	exec 7>"$T0/hold"
	cmd=""
	end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		init=$(pgrep -P "$exec_pid" || true)
		[ -n "$init" ] && cmd=$(pgrep -P "$init" || true)
		[ -n "$cmd" ] && break
		sleep 0.05
	done
	check "v1: the command is in the sandbox's pids cgroup" "custos-default-$exec_pid-1" \
		"$(basename "$(cgroup_of "$cmd")")"
	check "v1: its init is back in custos' own" "$(cgroup_of "$exec_pid")" "$(cgroup_of "$init")"
	exec 7>&- # EOF: the command ends
	wait "$exec_pid"
	check "v1: no cgroup left after the command" "" \
		"$(find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-default-$exec_pid-*" 2>/dev/null)"
	"$C" sandbox exec -- /bin/sh -c 'sleep 30 & exit 0' >/dev/null 2>&1 &
	exec_pid=$!
	set +e
	wait "$exec_pid"
	rc=$?
	set -e
	check "v1: a command that leaves a process behind: exit status" 0 "$rc"
	check "v1: ... and no cgroup left either" "" \
		"$(find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-default-$exec_pid-*" 2>/dev/null)"
	# TCP socket buffers are memory too: v1 counts them apart (memory.kmem.tcp), under the
	# same limit. Without it 64M let 512 MiB (all that was asked) queue on loopback.
	if ls /sys/fs/cgroup/memory/memory.kmem.tcp.limit_in_bytes >/dev/null 2>&1; then
		q=$("$C" sandbox exec --memory 64M --ro-bind "$ESCAPE:/opt/escape" -- \
			/opt/escape --tcp-fill 512 2>/dev/null || echo 999)
		if [ "${q:-999}" -lt 128 ]; then
			echo "ok: v1: TCP buffers bounded by the memory limit ($q MiB queued, limit 64M)"
		else
			echo "FAIL: v1: $q MiB queued in TCP buffers under a 64M limit"; fail=1
		fi
	fi
	# A custos.yaml profile that sets no memory or CPU limit gets the built-in profile's (1 GiB,
	# 1 CPU), as custos up runs the same profile: read from the command's own cgroups.
	mkfifo "$T0/hold2"
	"$C" sandbox exec -c "$T0/noll.yaml" --profile noll -- /bin/sh -c 'read -r x; exit 0' \
		<"$T0/hold2" >/dev/null 2>&1 &
	exec_pid=$!
	exec 7>"$T0/hold2"
	cmd=""
	end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		init=$(pgrep -P "$exec_pid" || true)
		[ -n "$init" ] && cmd=$(pgrep -P "$init" || true)
		[ -n "$cmd" ] && break
		sleep 0.05
	done
	v1_of() { grep -E "^[0-9]+:([a-z]+,)*$1(,[a-z]+)*:" "/proc/$2/cgroup" | cut -d: -f3; }
	mem=$(cat "/sys/fs/cgroup/memory$(v1_of memory "$cmd")/memory.limit_in_bytes" 2>/dev/null || true)
	check "v1: config profile without limits: the built-in memory limit" 1073741824 "$mem"
	cpu_dir=/sys/fs/cgroup/cpu
	[ -d "$cpu_dir" ] || cpu_dir=/sys/fs/cgroup/cpu,cpuacct
	quota=$(cat "$cpu_dir$(v1_of cpu "$cmd")/cpu.cfs_quota_us" 2>/dev/null || true)
	period=$(cat "$cpu_dir$(v1_of cpu "$cmd")/cpu.cfs_period_us" 2>/dev/null || true)
	check "v1: config profile without limits: the built-in CPU limit (quota = period)" \
		"${period:-none}" "${quota:-unset}"
	exec 7>&-
	wait "$exec_pid"
fi
[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
