#!/usr/bin/env bash
# ctest: lock=libvirt cost=150 (vm_tcg.sh over vsock: the system libvirtd, a TCG guest)
# The VM sandbox over vsock, end to end: tests/integration/vm_tcg.sh with `channel: vsock`.
# custos reserves a guest CID, writes <vsock model='virtio'><cid auto='no' address='N'/></vsock>
# (and no virtio-serial channel), connects over AF_VSOCK to custos-guest's port 1024 in the
# guest once QEMU is seen under seccomp, and runs the same multiplexed protocol; the chat
# completion, the egress calls decided by policy and audited, the crash/restart and the admin
# API are checked as in vm_tcg.sh, plus the CID in the live domain XML.
# Needs /dev/vhost-vsock (production hosts; not this CI machine): otherwise it prints
# "SKIPPED: no /dev/vhost-vsock" and exits 77.
set -euo pipefail
if ! [ -c /dev/vhost-vsock ]; then
	echo "SKIPPED: no /dev/vhost-vsock"
	exit 77
fi
CUSTOS_VM_CHANNEL=vsock exec bash "$(dirname "$0")/vm_tcg.sh"
