#!/usr/bin/env bash
# ctest: serial (a fork bomb and a memory bomb inside the sandbox)
# Hostile model server: tests/fixtures/hostile runs as the sandboxed command of `custos sandbox
# exec` and tries to reach past custos — sockets of every family, the host's services on
# 127.0.0.1, ::1 and its own addresses, a host daemon's abstract Unix socket, io_uring, bpf,
# perf, userfaultfd, keys, ptrace and process_vm_*, new user namespaces (and mount/sethostname
# inside), the mount API, kexec and modules, iopl/ioperm, TIOCSTI/TIOCLINUX, /proc/1 and
# /proc/kcore, /sys/kernel, host paths outside its grants (/etc/shadow, /root, custos' config,
# keys and audit trail), writes to a read-only grant, setuid files in a writable grant,
# inherited fds, personality, the clock, reboot, swapon, acct, chroot, file handles, the i386
# (int $0x80) and x32 entries, a fork bomb and a memory bomb. Each attempt prints
# "CHECK <name> BLOCKED|ESCAPED|SKIPPED ..."; any ESCAPED fails the test; SKIPPED names what
# this kernel lacks. The host side is checked too: no setuid file in the writable grant, the
# host service alive, the hostname unchanged. Four phases: `custos sandbox exec` as root
# (with the resource bombs, and the fork bomb again without cgroups), the attacker as a model
# of `custos up` (its egress listener the one channel out), custos unprivileged, and the
# gpu-nvidia profile with stand-in devices. HOSTILE_KEEP=1 keeps the work directory.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
HOSTILE="$CUSTOS_FIXTURES/hostile/hostile"

if [ "$(id -u)" -ne 0 ]; then
	echo "SKIPPED: the hostile suite runs custos as root (the outside uid must differ from the caller's)"
	exit 77
fi
if ! "$CUSTOS_BIN" sandbox exec -- /bin/true 2>/dev/null; then
	echo "SKIPPED: namespaces unavailable here: $("$CUSTOS_BIN" sandbox exec -- /bin/true 2>&1 | tail -1)"
	exit 77
fi

. "$(dirname "$0")/ports.bash"
T=$(mktemp -d /tmp/custos-hostile.XXXXXX)
chmod 755 "$T" # as root the sandbox maps to nobody, which must reach the binds
pids=()
ipc_ids=()
mounts=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
	[ ${#ipc_ids[@]} -eq 0 ] || ipcrm "${ipc_ids[@]}" 2>/dev/null || true
	rm -f "/dev/shm/custos-hostile-$$"
	port_release "$T"
	rm -rf "$T"
}
[ -n "${HOSTILE_KEEP:-}" ] || trap cleanup EXIT

# Host targets: a TCP service on every address and an abstract Unix socket.
ABSTRACT="custos-hostile-$$"
for _try in 1 2 3 4 5; do
	PORT=$(port_reserve "$T")
	"$HOSTILE" --listen "$PORT" "$ABSTRACT" >"$T/listen.out" 2>&1 &
	LISTEN_PID=$!
	pids+=("$LISTEN_PID")
	for _ in $(seq 100); do
		grep -q listening "$T/listen.out" && break
		kill -0 "$LISTEN_PID" 2>/dev/null || break
		sleep 0.1
	done
	grep -q listening "$T/listen.out" && break
done
grep -q listening "$T/listen.out" || { echo "FAIL: host service did not start: $(cat "$T/listen.out")"; exit 1; }
host_args=()
for a in $(ip -o addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -4); do
	host_args+=(--host-addr "$a")
done
[ ${#host_args[@]} -gt 0 ] || echo "note: the host has no global address; only loopback is tried"

# The host's IPC objects: a SysV segment and queue, a POSIX shared memory file.
ipc_args=()
if command -v ipcmk >/dev/null; then
	SHMID=$(ipcmk -M 4096 | awk '{print $NF}')
	ipc_ids+=(-m "$SHMID")
	MSQID=$(ipcmk -Q | awk '{print $NF}')
	ipc_ids+=(-q "$MSQID")
	ipc_args+=(--host-shmid "$SHMID" --host-msqid "$MSQID")
else
	echo "SKIPPED: sysv_shm_host, sysv_msg_host: ipcmk missing"
fi
echo "host shared memory" >"/dev/shm/custos-hostile-$$"
ipc_args+=(--host-shm-name "custos-hostile-$$")

# custos' own secrets beside the sandbox: a config, a key, an audit trail (none granted).
mkdir -p "$T/etc" "$T/keys" "$T/audit" "$T/ro" "$T/rw"
echo "listen: 127.0.0.1:1" >"$T/etc/custos.yaml"
echo "-----BEGIN PRIVATE KEY-----" >"$T/keys/server.key"
chmod 600 "$T/keys/server.key"
echo '{"event":"start"}' >"$T/audit/trail.jsonl"
echo "granted read-only" >"$T/ro/data"
chmod 644 "$T/ro/data"
chown 65534:65534 "$T/rw" # the sandbox's outside uid (nobody) writes there
hostname_before=$(hostname)

PIDS=48
export ASAN_OPTIONS=detect_leaks=0 # custos' leaks are the unit tests' business
set +e
"$CUSTOS_BIN" sandbox exec --memory 64M --pids "$PIDS" --nofile 256 \
	--ro-bind "$HOSTILE:/opt/hostile" --ro-bind "$T/ro:/ro" --bind "$T/rw:/rw" \
	--events "$T/events.json" -- \
	/opt/hostile --port "$PORT" "${host_args[@]}" "${ipc_args[@]}" --abstract "$ABSTRACT" --host-pid $$ \
	--host-path "$T/etc/custos.yaml" --host-path "$T/keys/server.key" \
	--host-path "$T/audit/trail.jsonl" --host-path /etc/custos --host-path /var/lib/custos \
	--ro /ro --rw /rw --pids "$PIDS" </dev/null >"$T/out.txt" 2>"$T/err.txt"
rc=$?
# Without a cgroup (an unprivileged custos without delegation: `cgroup: auto` falls back), the
# pids limit is RLIMIT_NPROC; memory and CPU are then not bounded (docs/SANDBOX.md), so only
# the fork bomb runs there.
"$CUSTOS_BIN" sandbox exec --cgroup off --pids "$PIDS" --ro-bind "$HOSTILE:/opt/hostile" -- \
	/opt/hostile --only-fork-bomb --pids "$PIDS" </dev/null >>"$T/out.txt" 2>>"$T/err.txt"
rc_nocg=$?
set -e
fail=0

# Phase 2, production shape: the same attacker as a model of `custos up` (stdin /dev/null,
# stdout and stderr a pipe to custos' log, custos' egress listener inside its network
# namespace: the one channel out, which it must reach), beside custos' own config, policy,
# admin socket and audit trail (none granted). Its lines arrive in up.log.
P_IN=$(port_reserve "$T")
P_EG=$(port_reserve "$T")
P_HR=$(port_reserve "$T") # a data source nobody serves: egress is set up for it
mkdir -p "$T/fx" "$T/rw2"
cp "$HOSTILE" "$T/fx/hostile"
chown 65534:65534 "$T/rw2"
KEYSHA=$(printf %s hostile-key | sha256sum | cut -d' ' -f1)
cat >"$T/policy.yaml" <<EOY
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$KEYSHA" } }
models:
  m1: { isolation: process }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: alice, model: m1 }
EOY
cat >"$T/custos.yaml" <<EOY
version: 1
log: { level: info }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
auth:
  api_keys:
    - { id: alice, sha256: "$KEYSHA" }
models:
  - id: m1
    sandbox:
      type: process
      profile: fx
      command: [/opt/fx/hostile, --skip-resources, --serve, "8000", --egress, "$P_EG",
                --port, "$P_IN", --host-pid, "$$", --ro, /ro, --rw, /rw,
                --host-path, "$T/custos.yaml", --host-path, "$T/policy.yaml",
                --host-path, "$T/admin.sock", --host-path, "$T/audit"]
      port: 8000
      health: { start_timeout: 30s }
sandbox_profiles:
  fx:
    binds:
      - { src: $T/fx, dst: /opt/fx }
      - { src: $T/ro, dst: /ro }
      - { src: $T/rw2, dst: /rw, rw: true }
    limits: { memory: 256MiB, pids: 64 }
data_sources:
  - { id: hr, url: "http://localhost:$P_HR/", classification: confidential, allow_private_addresses: true }
egress:
  port: $P_EG
audit: { dir: "$T/audit" }
admin: { socket: "$T/admin.sock" }
policy: { file: "$T/policy.yaml" }
EOY
chmod 600 "$T/custos.yaml" "$T/policy.yaml"
"$CUSTOS_BIN" config check "$T/custos.yaml" >"$T/check.txt" 2>&1 ||
	{ cat "$T/check.txt"; echo "FAIL: config check of the custos up phase"; exit 1; }
"$CUSTOS_BIN" up -c "$T/custos.yaml" >"$T/up.log" 2>&1 &
UP=$!
pids+=("$UP")
for _ in $(seq 600); do # the attempts run before the model answers its health probe
	grep -q 'output: SUMMARY' "$T/up.log" && break
	kill -0 "$UP" 2>/dev/null || break
	sleep 0.1
done
kill "$UP" 2>/dev/null || true
wait "$UP" 2>/dev/null || true
sed -n 's/.*output: \(\(CHECK\|CONTROL\|SUMMARY\) [^"]*\).*/\1/p' "$T/up.log" |
	sed 's/^CHECK /CHECK up_/; s/^CONTROL /CONTROL up_/; s/^SUMMARY /SUMMARY_UP /' >"$T/up.txt"
cat "$T/up.txt" >>"$T/out.txt"

# Phase 3, custos unprivileged (setpriv to nobody): the sandbox's outside uid is then the
# caller's own, as is a host process's (a sleep of nobody's, the ptrace and kill target). The
# resource bombs stay out: without a delegated cgroup only rlimits apply.
if command -v setpriv >/dev/null; then
	mkdir -p "$T/rw3"
	chown 65534:65534 "$T/rw3"
	setpriv --reuid=65534 --regid=65534 --clear-groups -- sleep 600 &
	SLEEPER=$!
	pids+=("$SLEEPER")
	set +e
	setpriv --reuid=65534 --regid=65534 --clear-groups -- "$CUSTOS_BIN" sandbox exec \
		--ro-bind "$HOSTILE:/opt/hostile" --ro-bind "$T/ro:/ro" --bind "$T/rw3:/rw" -- \
		/opt/hostile --skip-resources --port "$PORT" "${host_args[@]}" "${ipc_args[@]}" --abstract "$ABSTRACT" \
		--host-pid "$SLEEPER" --host-path "$T/etc/custos.yaml" --ro /ro --rw /rw \
		</dev/null 2>>"$T/err.txt" |
		sed 's/^CHECK /CHECK unpriv_/; s/^CONTROL /CONTROL unpriv_/; s/^SUMMARY /SUMMARY_UNPRIV /' >"$T/unpriv.txt"
	set -e
	cat "$T/unpriv.txt" >>"$T/out.txt"
	grep -q '^SUMMARY_UNPRIV .* escaped=0 ' "$T/unpriv.txt" ||
		{ echo "FAIL: the unprivileged phase gave no clean summary"; tail -5 "$T/err.txt"; fail=1; }
	kill -0 "$SLEEPER" || { echo "FAIL: the unprivileged sandbox killed a host process of its uid"; fail=1; }
else
	echo "SKIPPED: the unprivileged phase: setpriv missing"
fi

# Phase 4, the gpu-nvidia profile (its own seccomp program: any ioctl but the terminal ones,
# migrate_pages/move_pages; a read-only /sys; device nodes), with stand-in nodes (bind mounts
# of /dev/null, as sandbox_gpu.sh) and a stand-in /sys root.
mkdir -p "$T/gdev/dri" "$T/gsys/module/nvidia" "$T/rw4"
chown 65534:65534 "$T/rw4"
for n in nvidia0 nvidiactl nvidia-uvm dri/renderD128; do
	touch "$T/gdev/$n"
	mount --bind /dev/null "$T/gdev/$n"
	mounts+=("$T/gdev/$n")
done
echo "550.54.15" >"$T/gsys/module/nvidia/version"
set +e
"$CUSTOS_BIN" sandbox exec --profile gpu-nvidia --device-root "$T/gdev" --sys-root "$T/gsys" \
	--ro-bind "$HOSTILE:/opt/hostile" --ro-bind "$T/ro:/ro" --bind "$T/rw4:/rw" -- \
	/opt/hostile --skip-resources --port "$PORT" "${host_args[@]}" "${ipc_args[@]}" \
	--abstract "$ABSTRACT" --host-pid $$ --host-path "$T/etc/custos.yaml" --ro /ro --rw /rw \
	</dev/null 2>>"$T/err.txt" |
	sed 's/^CHECK /CHECK gpu_/; s/^CONTROL /CONTROL gpu_/; s/^SUMMARY /SUMMARY_GPU /' >"$T/gpu.txt"
set -e
cat "$T/gpu.txt" >>"$T/out.txt"
grep -q '^SUMMARY_GPU .* escaped=0 ' "$T/gpu.txt" ||
	{ echo "FAIL: the gpu phase gave no clean summary"; tail -5 "$T/err.txt"; fail=1; }

grep -q '^SUMMARY_UP .* escaped=0 ' "$T/up.txt" ||
	{ echo "FAIL: the custos up phase gave no clean summary"; tail -20 "$T/up.log" | cut -c1-300; fail=1; }
suid=$(find "$T/rw2" "$T/rw3" "$T/rw4" -perm /6000 2>/dev/null)
[ -z "$suid" ] || { echo "FAIL: setuid/setgid files left on the host by the up or unprivileged phase: $suid"; fail=1; }
while read -r _ name result why detail; do
	case $result in
	BLOCKED) echo "ok: $name refused ($why${detail:+; $detail})" ;;
	SKIPPED) echo "SKIPPED: $name: $detail ($why)" ;;
	*) echo "FAIL: $name $result ($why${detail:+; $detail})"; fail=1 ;;
	esac
done < <(grep '^CHECK ' "$T/out.txt")
while read -r _ name ok; do
	[ "$ok" = ok ] || { echo "FAIL: control $name failed (the fixture is broken)"; fail=1; }
done < <(grep '^CONTROL ' "$T/out.txt")
n=$(grep -c '^CHECK ' "$T/out.txt" || true)
if [ "$n" -lt 120 ]; then
	echo "FAIL: only $n checks ran (want >= 120): the fixture stopped early"; fail=1
fi
grep -q '^SUMMARY .* escaped=0 ' "$T/out.txt" || { echo "FAIL: no clean summary"; fail=1; }
[ "$rc" -eq 0 ] || { echo "FAIL: the fixture exited $rc (want 0)"; fail=1; }
[ "$rc_nocg" -eq 0 ] || { echo "FAIL: the fork bomb without cgroups exited $rc_nocg (want 0)"; fail=1; }
grep -q '^CHECK fork_bomb_no_cgroup ' "$T/out.txt" || { echo "FAIL: no fork bomb without cgroups"; fail=1; }

# The host side.
suid=$(find "$T/rw" -perm /6000 2>/dev/null)
[ -z "$suid" ] || { echo "FAIL: setuid/setgid files left on the host: $suid"; fail=1; }
kill -0 "$LISTEN_PID" || { echo "FAIL: the host service was killed"; fail=1; }
[ ! -e /dev/shm/custos-hostile-planted ] || { echo "FAIL: the sandbox wrote the host's /dev/shm"; rm -f /dev/shm/custos-hostile-planted; fail=1; }
[ "$(hostname)" = "$hostname_before" ] || { echo "FAIL: the host's hostname changed"; fail=1; }
grep -q "granted read-only" "$T/ro/data" || { echo "FAIL: the read-only grant changed"; fail=1; }
# Every call the filter refused (in the first phase, which writes events.json) reached the
# supervisor, which reported it: by name up to the per-second event budget, the rest summed
# in a "*" event with its count.
n_eperm=$(grep -v '^CHECK \(up\|unpriv\|gpu\)_' "$T/out.txt" | grep -c '^CHECK [^ ]* BLOCKED EPERM' || true)
n_events=$(jq -s '[.[] | select(.event == "violation") | (.count // 1)] | add // 0' "$T/events.json")
if [ "$n_events" -lt "$n_eperm" ]; then
	echo "FAIL: $n_eperm attempts refused with EPERM, only $n_events violations reported"; fail=1
fi
jq -e -s 'any(.[]; .event == "violation" and .syscall == "socket")' "$T/events.json" >/dev/null ||
	{ echo "FAIL: no violation event naming socket"; fail=1; }
if [ "$fail" -ne 0 ]; then
	echo "--- stderr"; tail -20 "$T/err.txt"
	exit 1
fi
echo "PASS: $n checks, $(grep -c '^CHECK .* BLOCKED' "$T/out.txt") refused, $(grep -c '^CHECK .* SKIPPED' "$T/out.txt" || true) skipped"
