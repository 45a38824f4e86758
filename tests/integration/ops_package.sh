#!/usr/bin/env bash
# ctest: cost=170 (seconds, about: started first)
# Operations: `cmake --install` into a DESTDIR lays out the FHS tree; CPack builds a .deb whose
# metadata dpkg-deb shows (conffiles, maintainer scripts, the unit's binary); systemd-analyze
# verifies the unit; dpkg -i installs a working `custos version` and a policy that passes
# `policy check`, and the package is purged again, both in a throwaway root: an overlay of this
# machine's / (its upper layer a tmpfs) in a private mount namespace, chrooted into, so the
# maintainer scripts (adduser, chown, deluser) run for real but nothing reaches the host's
# files, users or dpkg database (checked at the end).
set -euo pipefail
src=${CUSTOS_SRC:?}
work=$(mktemp -d /tmp/custos-ops.XXXXXX)
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
for tool in dpkg-deb cpack systemd-analyze; do
	if ! command -v "$tool" >/dev/null; then
		echo "SKIPPED: $tool not available"
		exit 77
	fi
done

# A release build of its own (no sanitizers: the package is what users get).
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	-DCUSTOS_TESTS=OFF >/dev/null
cmake --build "$work/build" -j"$(nproc)" >/dev/null

dest="$work/root"
DESTDIR="$dest" cmake --install "$work/build" >/dev/null
check "binary at /usr/bin/custos" test -x "$dest/usr/bin/custos"
check "example custos.yaml in /etc/custos, mode 0640" \
	bash -c "[ \"\$(stat -c %a '$dest/etc/custos/custos.yaml')\" = 640 ]"
check "example policy.yaml in /etc/custos, mode 0640" \
	bash -c "[ \"\$(stat -c %a '$dest/etc/custos/policy.yaml')\" = 640 ]"
check "systemd unit installed" test -f "$dest/usr/lib/systemd/system/custos.service"
check "man page custos(8)" test -f "$dest/usr/share/man/man8/custos.8"
check "man page custos.yaml(5)" test -f "$dest/usr/share/man/man5/custos.yaml.5"
check "man page custos-policy(5)" test -f "$dest/usr/share/man/man5/custos-policy.5"
check "docs in /usr/share/doc/custos" test -f "$dest/usr/share/doc/custos/README.md"
check "logrotate snippet" test -f "$dest/etc/logrotate.d/custos"
check "man pages render" bash -c "for m in '$dest'/usr/share/man/man*/*; do groff -mandoc -Tutf8 -ww -z \"\$m\" || exit 1; done"

# custos(8) documents every command that `custos --help` lists.
missing=""
while read -r cmd; do
	grep -q "^\.It Cm $cmd\b" "$src/man/custos.8" || missing="$missing '$cmd'"
done < <("$dest/usr/bin/custos" --help | sed -n '/^commands:/,/^$/p' | grep -E '^  [a-z]' |
	awk '{ if ($2 ~ /^[a-z]+$/ && $1 !~ /^version$/) print $1 " " $2; else print $1 }')
check "custos(8) documents every command in --help${missing:+ (missing:$missing)}" test -z "$missing"

# The unit, pointed at the DESTDIR binary, must satisfy systemd's own checker.
sed "s#/usr/bin/custos#$dest/usr/bin/custos#g" "$dest/usr/lib/systemd/system/custos.service" \
	>"$work/custos.service"
check "systemd-analyze verify accepts the unit" \
	systemd-analyze verify --man=no "$work/custos.service"

(cd "$work/build" && cpack -G DEB >/dev/null)
deb=$(ls "$work"/build/custos_*.deb)
check "dpkg-deb reads the package" dpkg-deb --info "$deb"
dpkg-deb --info "$deb" >"$work/info"
check "Depends lists the shared libraries' packages" \
	bash -c "grep -E '^ Depends:.*libssl3.*' '$work/info' | grep -q libyaml"
check "Depends names the libraries loaded on first use (libmicrohttpd, Hyperscan)" \
	bash -c "grep -E '^ Depends:' '$work/info' | grep libmicrohttpd | grep -q libhyperscan"
check "Recommends names libvirt (VM backend only)" \
	bash -c "grep -E '^ Recommends:' '$work/info' | grep -q libvirt"
check "the binary does not link libvirt, libmicrohttpd or Hyperscan (bound on first use)" \
	bash -c "! readelf -d '$dest/usr/bin/custos' | grep NEEDED | grep -E 'libvirt|libmicrohttpd|libhs'"
check "conffiles list /etc/custos/custos.yaml" \
	bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/custos/custos.yaml"
check "postinst creates the custos user" \
	bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./postinst | grep -q 'adduser --system'"
check "prerm stops the service on remove" \
	bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./prerm | grep -q 'systemctl stop custos'"
check "conffiles list every file the package puts under /etc" \
	bash -c "diff <(dpkg-deb --fsys-tarfile '$deb' | tar -t | grep '^\./etc/.*[^/]\$' | sed 's/^\.//' | sort) \
		<(dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | sort)"
check "the package's unit runs /usr/bin/custos (CPack's prefix, not its staging directory)" \
	bash -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/lib/systemd/system/custos.service |
		grep -qx 'ExecStart=/usr/bin/custos up -c /etc/custos/custos.yaml'"

# The install part runs in its own mount namespace: a tmpfs, an overlay of / on it and a chroot
# into the overlay (with its own /dev, /proc and an empty /run, so no systemctl reaches the host's
# systemd). All of it goes when the namespace's last process exits.
in_throwaway_root() {
	local r="$work/ov/root"
	if ! { mount -t tmpfs -o mode=0755 custos-ops "$work/ov" &&
		mkdir "$work/ov/up" "$work/ov/wk" "$r" &&
		mount -t overlay overlay -o "lowerdir=/,upperdir=$work/ov/up,workdir=$work/ov/wk" "$r" &&
		mount --bind /dev "$r/dev" && mount -t proc proc "$r/proc" &&
		mount -t tmpfs tmpfs "$r/run" && cp "$deb" "$r/tmp/custos-test.deb"; }; then
		echo "FAIL: the throwaway root could not be set up"
		exit 1
	fi
	in_root() { chroot "$r" "$@"; }
	check "dpkg -i installs the package" in_root dpkg -i /tmp/custos-test.deb
	check "installed custos version runs" in_root /usr/bin/custos version
	check "custos system user exists" in_root getent passwd custos
	check "/var/lib/custos is 0750 custos" \
		bash -c "[ \"\$(chroot '$r' stat -c '%a %U' /var/lib/custos)\" = '750 custos' ]"
	check "/etc/custos/custos.yaml is 0640 root:custos" \
		bash -c "[ \"\$(chroot '$r' stat -c '%a %U:%G' /etc/custos/custos.yaml)\" = '640 root:custos' ]"
	check "installed config passes config check" \
		in_root /usr/bin/custos config check /etc/custos/custos.yaml
	check "installed policy passes policy check" \
		in_root /usr/bin/custos policy check /etc/custos/policy.yaml
	check "systemd-analyze verify accepts the installed unit" \
		in_root systemd-analyze verify /usr/lib/systemd/system/custos.service
	check "dpkg --purge removes it" in_root dpkg --purge custos
	check "purge removed the binary, /etc/custos, /var/lib/custos, /var/log/custos and the user" \
		bash -c "! chroot '$r' test -e /usr/bin/custos && ! chroot '$r' test -e /etc/custos &&
			! chroot '$r' test -e /var/lib/custos && ! chroot '$r' test -e /var/log/custos &&
			! chroot '$r' getent passwd custos"
	exit $fail
}

host_state() { # what the install part must leave as it was on this machine
	dpkg-query -W -f='${Status} ${Version}\n' custos 2>&1 || true
	getent passwd custos || true
	getent group custos || true
	ls -ld /etc/custos /var/lib/custos /var/log/custos /usr/bin/custos 2>&1 || true
}
if [ "$(id -u)" -ne 0 ]; then
	echo "SKIPPED part: dpkg -i into a throwaway root needs root (mount, chroot)"
elif ! unshare -m sh -c "mkdir '$work/probe' && mount -t tmpfs t '$work/probe' &&
	mkdir '$work/probe/u' '$work/probe/w' '$work/probe/m' &&
	mount -t overlay o -o lowerdir=/,upperdir='$work/probe/u',workdir='$work/probe/w' '$work/probe/m' &&
	for t in /bin/sh /usr/bin/dpkg /usr/sbin/adduser /etc/passwd /var/lib/dpkg/status; do
		test -e \"$work/probe/m\$t\" || { echo \"the overlay of / lacks \$t (a file system of its own?)\"; exit 1; }
	done" >"$work/probe.out" 2>&1; then
	echo "SKIPPED part: no throwaway root here: a private mount namespace with an overlay of / ($(tail -1 "$work/probe.out"))"
else
	host_state >"$work/host.before"
	mkdir "$work/ov"
	export -f check in_throwaway_root
	export work deb fail
	unshare -m bash -c in_throwaway_root || fail=1
	host_state >"$work/host.after"
	check "the host is untouched (its dpkg database, custos user and group, files)" \
		diff "$work/host.before" "$work/host.after"
fi
exit $fail
