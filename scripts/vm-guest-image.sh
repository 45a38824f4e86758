#!/usr/bin/env bash
# Builds a small custos test guest: a Debian 6.1 kernel (fetched with apt-get download, unpacked
# with dpkg-deb -x, cached) and an initramfs of busybox-static, the virtio modules, custos-guest
# and a static model server. Works on a fresh machine with only Debian's archive reachable.
#
#   vm-guest-image.sh OUTDIR CUSTOS_GUEST MODEL_SERVER [MODEL_ARGS...]
#
# Writes OUTDIR/vmlinuz and OUTDIR/initrd.img and prints "kernel=... initrd=..." on success.
# The guest: mounts proc/sys/dev, brings lo up, loads virtio_ring before virtio and the rest,
# starts MODEL_SERVER --listen 127.0.0.1:8000 MODEL_ARGS and custos-guest (channel: the
# virtio-serial port org.custos.mux.0 or vsock port 1024, whichever the VM has; ingress to port
# 8000, egress proxy on 127.0.0.1:3128), prints CUSTOS-GUEST-READY on the console, then runs the
# commands in /etc/custos-guest.d/*.sh (a test hook; none by default). Each custos.arg=X on the
# kernel command line (the VM profile's cmdline) adds X to MODEL_ARGS, in order, after them (X
# without spaces): two VMs of one image can serve differently (tests/integration/vm_reload.sh).
# Environment: CUSTOS_VM_KERNEL_FLAVOUR (cloud-amd64 | amd64; default cloud-amd64),
# CUSTOS_VM_GUEST_HOOK (a shell file copied to /etc/custos-guest.d/hook.sh),
# CUSTOS_VM_GUEST_EXTRA (static binaries, space-separated, copied to /bin for the hook).
# Modules not loaded at boot but available to a hook: /lib/modules/extra/vsock_loopback.ko.
set -euo pipefail

if [ $# -lt 3 ]; then
	sed -n '2,19p' "$0" >&2
	exit 2
fi
OUT=$1
GUEST_AGENT=$2
MODEL=$3
shift 3
MODEL_ARGS=("$@")
FLAVOUR=${CUSTOS_VM_KERNEL_FLAVOUR:-cloud-amd64}

for f in "$GUEST_AGENT" "$MODEL"; do
	if ! file "$f" 2>/dev/null | grep -q 'statically linked'; then
		echo "vm-guest-image: $f is missing or not a static binary" >&2
		exit 1
	fi
done
BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
	echo "vm-guest-image: busybox-static is not installed (scripts/deps.sh)" >&2
	exit 1
fi
for t in cpio gzip dpkg-deb apt-get apt-cache; do
	command -v "$t" >/dev/null || {
		echo "vm-guest-image: $t not found" >&2
		exit 1
	}
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ---- kernel (cached by package name) --------------------------------------------------------
pkg=$(apt-cache depends "linux-image-$FLAVOUR" 2>/dev/null |
	awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	echo "vm-guest-image: no linux-image-$FLAVOUR in the package lists (apt-get update?)" >&2
	exit 1
fi
kdir="$OUT/kernel/$pkg"
if [ ! -f "$kdir/.done" ]; then
	rm -rf "$kdir"
	mkdir -p "$kdir/dl"
	(cd "$kdir/dl" && apt-get download "$pkg" >/dev/null 2>&1) || {
		echo "vm-guest-image: apt-get download $pkg failed" >&2
		exit 1
	}
	dpkg-deb -x "$kdir"/dl/*.deb "$kdir/root"
	rm -rf "$kdir/dl"
	touch "$kdir/.done"
fi
kver=$(basename "$(ls -d "$kdir"/root/lib/modules/*)")
cp "$kdir/root/boot/vmlinuz-$kver" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"

# ---- initramfs -------------------------------------------------------------------------------
root=$(mktemp -d "$OUT/initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,etc/custos-guest.d,lib/modules,usr/bin,usr/sbin}
cp "$BUSYBOX" "$root/bin/busybox"
for a in sh mount insmod ip echo cat sleep seq wget ls mkdir poweroff grep tr; do
	ln -s busybox "$root/bin/$a"
done
cp "$GUEST_AGENT" "$root/bin/custos-guest"
cp "$MODEL" "$root/bin/model-server"
for f in ${CUSTOS_VM_GUEST_EXTRA:-}; do
	if ! file "$f" 2>/dev/null | grep -q 'statically linked'; then
		echo "vm-guest-image: $f is missing or not a static binary" >&2
		exit 1
	fi
	cp "$f" "$root/bin/"
done
mods=(drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
	drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/char/virtio_console
	net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common
	net/vmw_vsock/vmw_vsock_virtio_transport)
for m in "${mods[@]}"; do
	src="$kdir/root/lib/modules/$kver/kernel/$m.ko"
	[ -f "$src" ] || src="$src.xz"
	if [ -f "$src" ]; then
		cp "$src" "$root/lib/modules/"
		echo "$(basename "$src")" >>"$root/lib/modules/order"
	fi
done
mkdir -p "$root/lib/modules/extra"
for m in net/vmw_vsock/vsock_loopback; do
	src="$kdir/root/lib/modules/$kver/kernel/$m.ko"
	[ -f "$src" ] || src="$src.xz"
	if [ -f "$src" ]; then cp "$src" "$root/lib/modules/extra/"; fi
done
if [ -n "${CUSTOS_VM_GUEST_HOOK:-}" ]; then
	cp "$CUSTOS_VM_GUEST_HOOK" "$root/etc/custos-guest.d/hook.sh"
fi
printf '%s\n' "${MODEL_ARGS[@]}" >"$root/etc/model-args"
cat >"$root/init" <<'EOF'
#!/bin/sh
# custos test guest: no network interface exists; lo only.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m 2>/dev/null || echo "custos-init: insmod $m failed"
done
set --
while IFS= read -r a; do [ -n "$a" ] && set -- "$@" "$a"; done </etc/model-args
for w in $(cat /proc/cmdline); do
	case "$w" in custos.arg=*) set -- "$@" "${w#custos.arg=}" ;; esac
done
/bin/model-server --listen 127.0.0.1:8000 --port-file /tmp/model.port "$@" &
/bin/custos-guest --port-name org.custos.mux.0 --vsock-port 1024 --allow-port 8000 \
	--proxy-port 3128 &
for i in $(seq 300); do [ -s /tmp/model.port ] && break; sleep 0.1; done
echo "CUSTOS-GUEST-READY interfaces: $(ls /sys/class/net | tr '\n' ' ')"
for h in /etc/custos-guest.d/*.sh; do [ -f "$h" ] && sh "$h"; done
while true; do sleep 3600; done
EOF
chmod 755 "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
echo "kernel=$OUT/vmlinuz initrd=$OUT/initrd.img ($pkg)"
