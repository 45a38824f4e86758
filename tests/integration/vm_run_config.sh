#!/usr/bin/env bash
# `custos vm run --config FILE --model ID` through the real binary, on libvirt's test driver
# (test:///default, inside the process: no daemon, no QEMU, nothing boots): the domain it
# would start (--print-xml) carries every key of the model's profile's vm: block, mapped as
# `custos up` maps it (domain custos-<id>, the profile's channel socket and console log, a
# kernel with a disk, PCI devices, pinning, hugepages, kvm); a VM model with sandbox.env is
# refused at that key, as config check refuses it; a process model, a missing --model and a VM setting given
# on the command line beside --config are refused; a real start on the test driver fails
# closed on the seccomp check within the model's health.start_timeout and says why.
set -u
bin=${CUSTOS_BIN:?CUSTOS_BIN not set}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
no() {
	echo "FAIL $1"
	[ -n "${2:-}" ] && echo "$2"
	fail=1
}

cat >"$work/c.yaml" <<YAML
version: 1
models:
  - id: m
    sandbox: { type: vm, profile: g, port: 8001, health: { start_timeout: 2s } }
  - id: proc
    sandbox: { profile: g, command: [/bin/true] }
sandbox_profiles:
  g:
    vm:
      type: kvm
      libvirt_uri: "test:///default"
      vcpus: 2
      memory: 2GiB
      hugepages: true
      cpu_pinning: [6, 7]
      kernel: /img/vmlinuz
      initrd: /img/initrd.img
      cmdline: "console=ttyS0 root=/dev/vda"
      disk: /img/root.qcow2
      hostdev: ["0000:65:00.0"]
      channel: virtio-serial
      channel_socket: $work/mux.sock
      console_log: $work/console.log
YAML
chmod 600 "$work/c.yaml"

out=$("$bin" vm run --config "$work/c.yaml" --model m --print-xml 2>&1)
rc=$?
[ "$rc" -eq 0 ] || no "print-xml: exit $rc" "$out"
for want in "<domain type='kvm'>" "<name>custos-m</name>" "<memory unit='MiB'>2048</memory>" \
	"<hugepages/>" "<vcpu placement='static'>2</vcpu>" "<vcpupin vcpu='1' cpuset='7'/>" \
	"<kernel>/img/vmlinuz</kernel>" "<initrd>/img/initrd.img</initrd>" \
	"<cmdline>console=ttyS0 root=/dev/vda</cmdline>" "<source file='/img/root.qcow2'/>" \
	"<transient/>" "<source path='$work/console.log'/>" \
	"<source mode='bind' path='$work/mux.sock'/>" "name='org.custos.mux.0'" \
	"bus='0x65' slot='0x00' function='0x0'"; do
	grep -qF -- "$want" <<<"$out" || no "print-xml lacks $want" "$out"
done
grep -q "<interface" <<<"$out" && no "print-xml has an interface" "$out"

# A VM model with sandbox.env: the configuration is refused at that key (config check's
# error), before any mapping.
sed 's/^    sandbox: { type: vm, profile: g, port: 8001,/    sandbox: { type: vm, profile: g, env: { CUDA_VISIBLE_DEVICES: "0" }, port: 8001,/' \
	"$work/c.yaml" >"$work/env.yaml"
grep -q CUDA_VISIBLE_DEVICES "$work/env.yaml" || no "env.yaml: not rewritten"
out=$("$bin" vm run --config "$work/env.yaml" --model m --print-xml 2>&1)
rc=$?
[ "$rc" -eq 1 ] || no "withenv: exit $rc, expected 1" "$out"
grep -q "env.yaml:4:[0-9]*: error: sandbox.env is not passed into a VM" <<<"$out" ||
	no "withenv: no reason at its position" "$out"
grep -q "<domain" <<<"$out" && no "withenv: printed a domain" "$out"

# expect_refused RC PATTERN ARGS...: vm run ARGS exits RC and says PATTERN.
expect_refused() {
	local want=$1 pat=$2 out rc
	shift 2
	out=$("$bin" vm run "$@" 2>&1)
	rc=$?
	if [ "$rc" -ne "$want" ] || ! grep -q -- "$pat" <<<"$out"; then
		no "vm run $*: exit $rc (expected $want), /$pat/ wanted" "$out"
	fi
}
expect_refused 1 "no model 'proc' with sandbox.type: vm" --config "$work/c.yaml" --model proc
expect_refused 2 "--config and --model go together" --config "$work/c.yaml" --print-xml
expect_refused 2 "--kernel: with --config" --config "$work/c.yaml" --model m --kernel /k
expect_refused 2 "--memory-mib: with --config" --config "$work/c.yaml" --model m --memory-mib 512
expect_refused 2 "--name: with --config" --config "$work/c.yaml" --model m --name other
expect_refused 2 "--vsock-cid: with --config" --config "$work/c.yaml" --model m --vsock-cid auto

# A real start on the test driver (no PCI devices there): started, then no QEMU under seccomp
# to be found, so nothing is routed and the domain is destroyed. Bounded by start_timeout 2s.
sed -i '/hostdev/d' "$work/c.yaml"
out=$(timeout 60 "$bin" vm run --config "$work/c.yaml" --model m --forward 127.0.0.1:0 2>&1)
rc=$?
[ "$rc" -eq 1 ] || no "test-driver start: exit $rc, expected 1" "$out"
for want in "custos-m: profile_sha256 [0-9a-f]{64}" "refusing to route to custos-m" \
	"custos-m: stopped"; do
	grep -Eq -- "$want" <<<"$out" || no "test-driver start lacks /$want/" "$out"
done

[ "$fail" -eq 0 ] && echo "vm_run_config: ok"
exit "$fail"
