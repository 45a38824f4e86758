#!/usr/bin/env bash
# Installs every build and test dependency of custos from Debian's packages.
# Idempotent: packages already present are skipped, and apt-get runs only when one is missing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  clang clang-format libclang-rt-14-dev llvm
  libssl-dev openssl
  libyaml-dev
  libseccomp-dev
  libcap-dev
  libmicrohttpd-dev
  libvirt-dev
  libcmocka-dev
  libhyperscan-dev libpcre2-dev
  curl
  prometheus wrk
  rsyslog rsyslog-openssl
  procps psmisc iproute2
  libvirt-daemon-system qemu-system-x86 busybox-static cpio file
  jq util-linux  # sandbox tests: JSON lines of the escape suite, setpriv
  dnsmasq-base  # egress_dns: a real DNS server on loopback for the egress resolver
  strace  # audit_cursor_durable: the order of the shipper's fsync and rename calls
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run as root: apt-get update && $cmd" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; an old list can miss current versions.
apt-get update -qq || apt-get update
$cmd
