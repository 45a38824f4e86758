#!/usr/bin/env bash
# Libraries bound on first use (dl/, docs/ARCHITECTURE.md "Startup cost"): the custos binary
# has no DT_NEEDED entry for libvirt, libmicrohttpd or Hyperscan; `custos version` loads each
# and prints its version; with libvirt unloadable (a private mount namespace where /dev/null
# covers the file) `custos vm run` fails closed with an error naming libvirt.so.0, and
# `custos sandbox exec`, which never needs it, still runs. OpenSSL likewise on x86-64 (dl/openssl.c):
# no DT_NEEDED entry, `custos version` loads it, a running `custos sandbox exec` has not mapped
# it, and with libssl.so.3 unloadable `sandbox exec` runs while a command that needs OpenSSL
# stops with a message naming the file.
set -euo pipefail
bin=${CUSTOS_BIN:?}
work=$(mktemp -d /tmp/custos-lazylib.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@" >"$work/out" 2>&1; then
		echo "PASS: $what"
	else
		echo "FAIL: $what"
		sed 's/^/    /' "$work/out" | tail -20
		fail=1
	fi
}
command -v readelf >/dev/null || {
	echo "SKIPPED: readelf not available"
	exit 77
}

readelf -d "$bin" | grep NEEDED >"$work/needed"
check "no DT_NEEDED for libvirt, libmicrohttpd, libhs" \
	bash -c "! grep -E 'libvirt|libmicrohttpd|libhs' '$work/needed'"
"$bin" version >"$work/version"
check "custos version loads libvirt" grep -E '^  libvirt +[0-9]+\.' "$work/version"
check "custos version loads libmicrohttpd" grep -E '^  libmicrohttpd +[0-9]+\.' "$work/version"
check "custos version loads Hyperscan" grep -E '^  Hyperscan +[0-9]+\.' "$work/version"
check "custos version loads OpenSSL" grep -E '^  OpenSSL +OpenSSL 3\.' "$work/version"

lazy_ssl=0
if readelf -h "$bin" | grep -q 'X86-64'; then
	lazy_ssl=1
	check "no DT_NEEDED for libssl, libcrypto (x86-64)" \
		bash -c "! grep -E 'libssl|libcrypto' '$work/needed'"
	# A sandbox exec that is running: custos has not mapped OpenSSL (no hash asked for).
	# (its command outlives the checks, however slow the start: it is stopped after them)
	"$bin" sandbox exec -- /bin/sleep 600 >/dev/null 2>&1 &
	sbpid=$!
	end=$((SECONDS + 60))
	while [ -z "$(pgrep -P "$sbpid" || true)" ] && [ "$SECONDS" -lt "$end" ]; do
		sleep 0.05
	done
	cp "/proc/$sbpid/maps" "$work/maps" 2>/dev/null || : >"$work/maps"
	check "running sandbox exec has its sandbox child" test -n "$(pgrep -P "$sbpid" || true)"
	check "running sandbox exec has not mapped libcrypto or libssl" \
		bash -c "grep -q custos '$work/maps' && ! grep -E 'libcrypto|libssl' '$work/maps'"
	kill -TERM "$sbpid" 2>/dev/null || true
	wait "$sbpid" || true
fi

if [ "$(id -u)" -ne 0 ] || ! unshare -m --propagation private true 2>/dev/null; then
	echo "SKIPPED part: hiding libvirt needs root and a private mount namespace"
	exit $fail
fi
lib=$(ldconfig -p | awk '/libvirt\.so\.0 / && !seen { print $NF; seen = 1 }') # reads it all (pipefail)
if [ -z "$lib" ]; then
	echo "SKIPPED part: libvirt.so.0 not in the loader cache"
	exit $fail
fi
real=$(readlink -f "$lib")
hidden() { # hidden COMMAND...: runs COMMAND where libvirt.so.0 cannot be loaded
	unshare -m --propagation private bash -c 'mount --bind /dev/null "$0" && exec "$@"' \
		"$real" "$@"
}
set +e
hidden "$bin" vm run --uri test:///default --name lazylib-t --kernel /nonexistent \
	--channel "$work/ch.sock" >"$work/vm.out" 2>&1
rc=$?
set -e
check "vm run without libvirt fails (exit 1, got $rc)" test "$rc" = 1
check "vm run names libvirt.so.0 and its package" \
	grep -q 'the VM backend needs libvirt.so.0, which cannot be loaded: .*(package libvirt0)' \
	"$work/vm.out"
check "version says libvirt is not available, naming the file" \
	bash -c "hidden() { unshare -m --propagation private bash -c 'mount --bind /dev/null \"\$0\" && exec \"\$@\"' '$real' \"\$@\"; }; hidden '$bin' version | grep -E '^  libvirt +not available: .*libvirt\.so\.0'"
check "sandbox exec runs without libvirt" hidden "$bin" sandbox exec -- /bin/true

if [ "$lazy_ssl" = 1 ]; then
	ssl=$(ldconfig -p | awk '/libssl\.so\.3 / && !seen { print $NF; seen = 1 }')
	if [ -z "$ssl" ]; then
		echo "SKIPPED part: libssl.so.3 not in the loader cache"
		exit $fail
	fi
	realssl=$(readlink -f "$ssl")
	hidden_ssl() {
		unshare -m --propagation private bash -c 'mount --bind /dev/null "$0" && exec "$@"' \
			"$realssl" "$@"
	}
	check "sandbox exec runs without libssl" hidden_ssl "$bin" sandbox exec -- /bin/true
	set +e
	hidden_ssl "$bin" version >"$work/ssl.out" 2>&1
	rc=$?
	set -e
	check "version without libssl stops (abort, got $rc)" test "$rc" -ne 0
	check "version without libssl names libssl.so.3 and its package" \
		grep -q 'custos: fatal: custos needs libssl.so.3 (OpenSSL), which cannot be loaded: .*(package libssl3)' \
		"$work/ssl.out"
fi
exit $fail
