#!/usr/bin/env bash
# GPU profiles with stand-in device nodes: a device root whose nvidia0, nvidiactl, nvidia-uvm,
# dri/renderD128 (and kfd for AMD) are bind mounts of /dev/null, and a /sys root with the
# parts the stacks read. Checks the nodes appear as character devices, /sys parts are there
# read-only, other host nodes are not, and device ioctls pass under the gpu seccomp profile
# while the default profile denies and audits them.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
ESCAPE="$CUSTOS_FIXTURES/escape/escape"
C="$CUSTOS_BIN"
[ "$(id -u)" -eq 0 ] || { echo "SKIPPED: stand-in device nodes need root (bind mounts of /dev/null)"; exit 77; }
"$C" sandbox exec -- /bin/true 2>/dev/null || { echo "SKIPPED: namespaces unavailable"; exit 77; }
export ASAN_OPTIONS=detect_leaks=0
T=$(mktemp -d /tmp/custos-gpu.XXXXXX)
mounts=()
cleanup() {
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT
chmod 755 "$T"
mkdir -p "$T/dev/dri" "$T/sys/module/nvidia" "$T/sys/class/kfd" "$T/sys/bus/pci/devices" "$T/sys/devices"
for n in nvidia0 nvidiactl nvidia-uvm kfd dri/renderD128; do
	touch "$T/dev/$n"
	mount --bind /dev/null "$T/dev/$n"
	mounts+=("$T/dev/$n")
done
touch "$T/dev/sda" # a node no profile asks for
echo "550.54.15" >"$T/sys/module/nvidia/version"
fail=0
check() {
	if [ "$2" != "$3" ]; then echo "FAIL: $1: want '$2', got '$3'"; fail=1; else echo "ok: $1"; fi
}
G=(--device-root "$T/dev" --sys-root "$T/sys" --ro-bind "$ESCAPE:/opt/escape")

out=$("$C" sandbox exec --profile gpu-nvidia "${G[@]}" -- /bin/sh -c '
	for n in nvidia0 nvidiactl nvidia-uvm dri/renderD128; do test -c /dev/$n || echo "missing $n"; done
	test -e /dev/kfd && echo "unexpected kfd"
	test -e /dev/sda && echo "unexpected sda"
	cat /sys/module/nvidia/version
	echo x > /sys/module/nvidia/version 2>/dev/null && echo "sys writable"
	/opt/escape --ioctl /dev/nvidia0' 2>/dev/null)
check "nvidia profile" "550.54.15
ioctl ENOTTY" "$out"

out=$("$C" sandbox exec --profile gpu-amd "${G[@]}" -- /bin/sh -c '
	test -c /dev/kfd || echo "missing kfd"; test -c /dev/dri/renderD128 || echo "missing dri"
	test -e /dev/nvidia0 && echo "unexpected nvidia0"; test -d /sys/class/kfd || echo "no sys kfd"
	/opt/escape --ioctl /dev/kfd' 2>/dev/null)
check "amd profile" "ioctl ENOTTY" "$out"

# --gpu on the default profile switches to the gpu seccomp profile as well.
check "--gpu nvidia" "ioctl ENOTTY" "$("$C" sandbox exec --gpu nvidia "${G[@]}" -- /opt/escape --ioctl /dev/nvidia0 2>/dev/null)"

# The same node given as a plain device under the default seccomp profile: ioctl denied, audited.
out=$("$C" sandbox exec --device nvidia0 "${G[@]}" --events "$T/ev.json" -- /opt/escape --ioctl /dev/nvidia0 2>/dev/null)
check "default profile denies device ioctl" "ioctl EPERM" "$out"
jq -e -s 'any(.[]; .event == "violation" and .syscall == "ioctl")' "$T/ev.json" >/dev/null ||
	{ echo "FAIL: ioctl violation not audited"; fail=1; }
jq -e -s 'all(.[]; .event != "start" or (.detail | test("seccomp default")))' "$T/ev.json" >/dev/null ||
	{ echo "FAIL: START detail"; fail=1; }

# No GPU nodes at the device root: the profile is refused (fail closed), not silently GPU-less.
mkdir "$T/empty"
set +e
"$C" sandbox exec --profile gpu-nvidia --device-root "$T/empty" -- /bin/true 2>"$T/err"
rc=$?
set -e
check "no nodes refused" 1 "$rc"
grep -q "no device nodes" "$T/err" || { echo "FAIL: message: $(cat "$T/err")"; fail=1; }
[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
