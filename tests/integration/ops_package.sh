#!/usr/bin/env bash
# Operations: `cmake --install` into a DESTDIR lays out the FHS tree; CPack builds a .deb whose
# metadata dpkg-deb shows; systemd-analyze verifies the unit; dpkg -i installs a working
# `custos version` (skipped when a custos package is already installed on this machine, so a
# developer's own install is never replaced), and the package is purged again.
set -euo pipefail
src=${CUSTOS_SRC:?}
work=$(mktemp -d /tmp/custos-ops.XXXXXX)
installed_by_us=0
cleanup() {
	if [ "$installed_by_us" = 1 ]; then
		dpkg_locked --purge custos >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
fail=0
# dpkg refuses while apt runs elsewhere on the machine: wait for its lock (bounded).
dpkg_locked() { # dpkg_locked ARGS... : runs dpkg, retrying while the lock is held
	local i
	for i in $(seq 1 60); do
		if dpkg "$@" >"$work/dpkg.out" 2>&1; then
			cat "$work/dpkg.out"
			return 0
		fi
		grep -q 'lock' "$work/dpkg.out" || break
		sleep 5
	done
	cat "$work/dpkg.out"
	return 1
}
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

if dpkg -s custos >/dev/null 2>&1; then
	echo "SKIPPED part: a custos package is already installed here; not replacing it"
elif [ "$(id -u)" -ne 0 ]; then
	echo "SKIPPED part: dpkg -i needs root"
else
	installed_by_us=1
	check "dpkg -i installs the package" dpkg_locked -i "$deb"
	check "installed custos version runs" /usr/bin/custos version
	check "custos system user exists" getent passwd custos
	check "/var/lib/custos is 0750 custos" \
		bash -c "[ \"\$(stat -c '%a %U' /var/lib/custos)\" = '750 custos' ]"
	check "installed config passes config check" \
		/usr/bin/custos config check /etc/custos/custos.yaml
	check "systemd-analyze verify accepts the installed unit" \
		systemd-analyze verify /usr/lib/systemd/system/custos.service
	check "dpkg --purge removes it" dpkg_locked --purge custos
	installed_by_us=0
fi
exit $fail
