#!/usr/bin/env bash
# `custos config check` through the real binary: the example passes; a misspelled key, a wrong
# type, a missing required key, an out-of-range value, cipher strings OpenSSL refuses, a bound
# of `custos up` itself (17 listeners, body_max above 64MiB) and a group-writable file each fail
# with exit 1 and a message naming file:line:col; several errors are all reported; usage is
# exit 2. With --host, the files it names as the user that opens them, and what they hold
# (certificates not PEM, expired or not yet valid, keys not PEM or not the certificate's, CA
# files without a certificate, a JWKS without a usable key), each at the setting's file:line,
# with nothing under the checked paths changed; SSL_CERT_FILE and SSL_CERT_DIR missing,
# relative or of the wrong type, in the words `custos up` refuses them.
set -u
unset SSL_CERT_FILE SSL_CERT_DIR # the test's own choice only
bin=${CUSTOS_BIN:?CUSTOS_BIN not set}
src=${CUSTOS_SRC:?CUSTOS_SRC not set}
example="$src/conf/custos.example.yaml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

# expect NAME FILE RC PATTERN...: runs the check, compares the exit code, greps the output.
expect() {
	local name=$1 file=$2 rc=$3
	shift 3
	local out got
	out=$("$bin" config check "$file" 2>&1)
	got=$?
	if [ "$got" -ne "$rc" ]; then
		echo "FAIL $name: exit $got, expected $rc"
		echo "$out"
		fail=1
		return
	fi
	for pat in "$@"; do
		if ! grep -Eq -- "$pat" <<<"$out"; then
			echo "FAIL $name: output lacks /$pat/"
			echo "$out"
			fail=1
			return
		fi
	done
	echo "ok   $name"
}

# copy NAME SED-EXPR: a 0644 copy of the example with one edit, checked to have changed.
copy() {
	local f="$work/$1.yaml"
	sed -e "$2" "$example" >"$f"
	chmod 0644 "$f"
	if cmp -s "$f" "$example"; then
		echo "FAIL $1: the edit '$2' changed nothing (example changed?)"
		fail=1
	fi
	echo "$f"
}

cp "$example" "$work/example.yaml"
chmod 0644 "$work/example.yaml"
expect example "$work/example.yaml" 0 ': ok: 3 listener'

f=$(copy misspelled 's/^  durability: batch/  durabilty: batch/')
line=$(grep -n '^  durabilty:' "$f" | cut -d: -f1)
expect misspelled-key "$f" 1 "^$f:$line:3: error: unknown key 'durabilty'" "did you mean 'durability'"

f=$(copy wrong-type 's/^  header_count: 100/  header_count: lots/')
line=$(grep -n 'header_count: lots' "$f" | cut -d: -f1)
expect wrong-type "$f" 1 "^$f:$line:17: error: 'header_count'"

f=$(copy missing-required 's/^version: 1/# no version/')
expect missing-required "$f" 1 "^$f:[0-9]+:[0-9]+: error: missing required key 'version'"

f=$(copy out-of-range 's/^  json_depth: 64/  json_depth: 1000/')
line=$(grep -n 'json_depth: 1000' "$f" | cut -d: -f1)
expect out-of-range "$f" 1 "^$f:$line:15: error: 'json_depth': 1000 is out of range"

f=$(copy public-plain 's/"127.0.0.1:8080"/"0.0.0.0:8080"/')
expect plain-http-on-public "$f" 1 "error: plain HTTP listener 'local'"

f=$(copy admin-public 's/"127.0.0.1:9090"/"0.0.0.0:9090"/')
expect admin-tcp-public "$f" 1 "error: admin TCP address '0.0.0.0:9090' is not loopback"

f=$(copy bad-profile 's/profile: vm-gpu/profile: vm-gpo/')
expect unknown-profile "$f" 1 "error: unknown sandbox profile 'vm-gpo'" "did you mean 'vm-gpu'"

f=$(copy bad-ciphers 's/^      # ciphers: .*/      ciphers: "NOPE-CIPHER"/; s/^      # ciphersuites: .*/      ciphersuites: "TLS_BOGUS"/')
line=$(grep -n 'ciphers: "NOPE-CIPHER"' "$f" | cut -d: -f1)
expect bad-ciphers "$f" 1 "^$f:$line:16: error: ciphers 'NOPE-CIPHER'" \
	"^$f:$((line + 1)):21: error: 'TLS_BOGUS' is not a TLS 1.3 cipher suite"

f=$(copy several 's/^  durability: batch/  durabilty: batch/; s/^  header_count: 100/  header_count: lots/; s/^  json_depth: 64/  json_depth: 1000/')
expect all-errors "$f" 1 "durabilty" "header_count" "json_depth" ": 3 error\(s\)"

# Bounds of `custos up` itself (include/custos/config.h): refused here at their position, never
# first by `up` at its start. 16 listeners pass, a 17th is refused at the list.
listeners_file() {
	local f="$work/listeners-$1.yaml" i
	{
		printf 'version: 1\nlisteners:\n'
		for ((i = 0; i < $1; i++)); do
			printf '  - {id: l%d, address: "unix:/run/custos-test/l%d.sock"}\n' "$i" "$i"
		done
	} >"$f"
	chmod 0644 "$f"
	echo "$f"
}
f=$(listeners_file 16)
expect listeners-16 "$f" 0 ': ok: 16 listener'
f=$(listeners_file 17)
expect listeners-17 "$f" 1 "^$f:3:3: error: 'listeners' has 17 entries; the limit is 16" \
	"custos up serves at most 16 listeners \(PROXY_MAX_LISTENERS\)"

f=$(copy body-max-over 's/^  body_max: 10MiB/  body_max: 100MiB/')
line=$(grep -n '^  body_max: 100MiB' "$f" | cut -d: -f1)
expect body-max-over "$f" 1 "^$f:$line:13: error: 'body_max': 104857600 bytes is above the limit of 67108864 bytes" \
	"PROXY_BODY_MAX"

# A sink id naming a cursor the head check would skip as a replacement being written.
f=$(copy sink-id-tmp 's/^    - id: splunk/    - id: splunk.tmp1/')
line=$(grep -n 'id: splunk.tmp1' "$f" | cut -d: -f1)
expect sink-id-tmp "$f" 1 "^$f:$line:11: error: a sink id names its cursor file \\(cursor.<id>\\): no '.tmp' in it"

cp "$example" "$work/group-writable.yaml"
chmod 0664 "$work/group-writable.yaml"
expect group-writable "$work/group-writable.yaml" 1 "writable by group or others"

expect missing-file "$work/nonexistent.yaml" 1 "nonexistent.yaml"

# ---- --host: the files, as the user that opens them
h="$work/host"
mkdir -p "$h/tls" "$h/keys" "$h/log" "$h/run"
printf 'version: 1\n' >"$h/policy.yaml"
# Real PEM: the check parses the listeners' certificates and keys and the CA bundles (out of
# $h, whose snapshot must not change: made in $work/pki and copied in).
pki="$work/pki"
mkdir -p "$pki/db"
(
	cd "$pki" || exit 1
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/CN=check CA" -keyout ca.key -out ca.crt
	for n in srv other; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
			-keyout $n.key -out $n.csr
	done
	openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out srv.crt
	# An expired and a not-yet-valid certificate for srv.key (openssl ca sets both dates).
	: >db/index.txt
	echo 01 >db/serial
	cat >ca.cnf <<CNF
[ca]
default_ca = d
[d]
database = $pki/db/index.txt
new_certs_dir = $pki/db
serial = $pki/db/serial
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
CNF
	openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in srv.csr -notext \
		-startdate 200101000000Z -enddate 200201000000Z -out expired.crt
	openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in srv.csr -notext \
		-startdate 20990101000000Z -enddate 20991231000000Z -out future.crt
) >"$work/pki.log" 2>&1 || { cat "$work/pki.log"; echo "FAIL could not make the test PKI"; exit 1; }
cp "$pki/srv.crt" "$h/tls/srv.crt"
cp "$pki/srv.key" "$h/tls/srv.key"
cp "$pki/ca.crt" "$h/tls/siem-ca.crt"
printf 'not parsed by the check\n' >"$h/keys/audit.key"
printf 'token\n' >"$h/hec.token"
chmod 600 "$h/tls/srv.key" "$h/keys/audit.key" "$h/hec.token"
chmod 644 "$h/policy.yaml" "$h/tls/srv.crt" "$h/tls/siem-ca.crt"
# host_config FILE [EXTRA_YAML]: a config naming the files above (the audit dir does not exist
# yet: `up` would make it).
host_config() {
	cat >"$1" <<CFG
version: 1
listeners:
  - id: tls
    address: "127.0.0.1:8443"
    tls: { cert: $h/tls/srv.crt, key: $h/tls/srv.key }
  - id: sock
    address: "unix:$h/run/custos.sock"
auth:
  api_keys: [{ id: a, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }]
models:
  - { id: m, upstream: { url: "http://127.0.0.1:9/" } }
log:
  file: $h/log/custos.log
audit:
  dir: $h/audit
  signing_key: $h/keys/audit.key
  sinks:
    - { id: siem, type: syslog, address: "127.0.0.1:6514", tls: { ca: $h/tls/siem-ca.crt } }
    - id: splunk
      type: http
      http:
        url: "https://127.0.0.1:8088/services/collector/event"
        token_file: $h/hec.token
admin:
  socket: $h/run/admin.sock
policy:
  file: $h/policy.yaml
${2:-}
CFG
	chmod 600 "$1"
}
# snapshot: every path under $h with its size, change times, mode and owner (not the access
# times: reading a directory is no change).
snapshot() { find "$h" -printf '%p %s %T@ %C@ %m %u %g\n' | sort; }
# line_of FILE TEXT: the number of the first line of FILE holding TEXT.
line_of() { grep -nF -- "$2" "$1" | head -1 | cut -d: -f1; }
# host NAME FILE RC PATTERN...: as expect, with --host; and nothing under $h changed.
host() {
	local name=$1 file=$2 rc=$3 before out got
	shift 3
	before=$(snapshot)
	out=$("$bin" config check --host "$file" 2>&1)
	got=$?
	if [ "$got" -ne "$rc" ]; then
		echo "FAIL $name: exit $got, expected $rc"
		echo "$out"
		fail=1
		return
	fi
	for pat in "$@"; do
		if ! grep -Eq -- "$pat" <<<"$out"; then
			echo "FAIL $name: output lacks /$pat/"
			echo "$out"
			fail=1
			return
		fi
	done
	if [ "$before" != "$(snapshot)" ]; then
		echo "FAIL $name: the check changed files:"
		diff <(echo "$before") <(snapshot)
		fail=1
		return
	fi
	echo "ok   $name (nothing under the checked paths changed)"
}

f="$work/host-good.yaml"
host_config "$f"
host host-good "$f" 0 ': ok: 2 listener'
[ -e "$h/audit" ] && { echo "FAIL host-good: the check made the audit dir"; fail=1; }
[ -e "$h/log/custos.log" ] && { echo "FAIL host-good: the check made the log file"; fail=1; }
host host-example "$work/example.yaml" 1 \
	"^$work/example.yaml:[0-9]+:[0-9]+: error: policy.file '/etc/custos/policy.yaml': No such file"

# Each problem at the setting's position; without --host none of them is seen.
chmod 644 "$h/tls/srv.key"
host host-key-mode "$f" 1 \
	"^$f:$(line_of "$f" "key: $h/tls/srv.key"):[0-9]+: error: listeners\[0\] \(tls\).tls key: .*srv.key: refusing a key file accessible by group or others"
expect without-host "$f" 0 ': ok: 2 listener.*files not opened: --host checks them'
chmod 600 "$h/tls/srv.key"
mv "$h/tls/siem-ca.crt" "$h/tls/siem-ca.moved"
host host-sink-ca "$f" 1 \
	"^$f:$(line_of "$f" "ca: $h/tls/siem-ca.crt"):[0-9]+: error: audit.sinks\[0\] \(siem\).tls.ca '$h/tls/siem-ca.crt': No such file or directory"
mv "$h/tls/siem-ca.moved" "$h/tls/siem-ca.crt"
# What the files hold (parsed with OpenSSL, nothing written), at the setting's position.
keyline=$(line_of "$f" "key: $h/tls/srv.key")
printf 'not a certificate\n' >"$h/tls/srv.crt"
host host-cert-not-pem "$f" 1 \
	"^$f:$keyline:[0-9]+: error: listeners\[0\] \(tls\).tls certificate '$h/tls/srv.crt': no PEM certificate in it"
cp "$pki/expired.crt" "$h/tls/srv.crt"
host host-cert-expired "$f" 1 \
	"^$f:$keyline:[0-9]+: error: listeners\[0\] \(tls\).tls certificate '$h/tls/srv.crt': expired \(not after 2020-02-01 00:00:00 UTC\)"
cp "$pki/future.crt" "$h/tls/srv.crt"
host host-cert-not-yet-valid "$f" 1 \
	"^$f:$keyline:[0-9]+: error: listeners\[0\] \(tls\).tls certificate '$h/tls/srv.crt': not valid yet \(not before 2099-01-01 00:00:00 UTC\)"
cp "$pki/srv.crt" "$h/tls/srv.crt"
cp "$pki/other.key" "$h/tls/srv.key"
host host-key-mismatch "$f" 1 \
	"^$f:$keyline:[0-9]+: error: listeners\[0\] \(tls\).tls key '$h/tls/srv.key': does not match the certificate $h/tls/srv.crt"
printf -- '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n' >"$h/tls/srv.key"
host host-key-not-pem "$f" 1 \
	"^$f:$keyline:[0-9]+: error: listeners\[0\] \(tls\).tls key '$h/tls/srv.key': no usable PEM private key in it"
cp "$pki/srv.key" "$h/tls/srv.key"
cp "$pki/ca.key" "$h/tls/siem-ca.crt"
host host-ca-no-cert "$f" 1 \
	"^$f:$(line_of "$f" "ca: $h/tls/siem-ca.crt"):[0-9]+: error: audit.sinks\[0\] \(siem\).tls.ca '$h/tls/siem-ca.crt': no certificate in it"
cp "$pki/ca.crt" "$h/tls/siem-ca.crt"
host host-good-again "$f" 0 ': ok: 2 listener'
# The trust store OpenSSL reads from custos' environment: what `custos up` refuses at start,
# --host reports with the same message (and up still refuses it in those words).
trust() { # NAME VAR VALUE MESSAGE: --host fails with MESSAGE, and so does up
	local name=$1 var=$2 val=$3 msg=$4 upout
	export "$var=$val"
	host "host-$name" "$f" 1 "^$f: error: $(sed 's/[][().*^$?+{}|\\]/\\&/g' <<<"$msg")"
	# up logs to log.file: what it wrote there too, then the file goes (the check makes none).
	upout=$(timeout 60 "$bin" up --config "$f" 2>&1; cat "$h/log/custos.log" 2>/dev/null)
	rm -f "$h/log/custos.log"
	unset "$var"
	if grep -Fq -- "up: $msg" <<<"$upout"; then
		echo "ok   up-$name (custos up says the same)"
	else
		echo "FAIL up-$name: custos up does not say 'up: $msg':"
		echo "$upout"
		fail=1
	fi
}
mkdir -p "$work/store"
touch "$work/store/bundle.pem"
trust ssl-file-missing SSL_CERT_FILE "$work/store/none.pem" \
	"SSL_CERT_FILE=$work/store/none.pem (the trust store OpenSSL reads from custos' environment): No such file or directory"
trust ssl-file-relative SSL_CERT_FILE "store/bundle.pem" \
	"SSL_CERT_FILE='store/bundle.pem': not an absolute path"
trust ssl-file-dir SSL_CERT_FILE "$work/store" \
	"SSL_CERT_FILE=$work/store: not a regular file (a PEM bundle of CA certificates)"
trust ssl-dir-missing SSL_CERT_DIR "$work/store:$work/nodir" \
	"SSL_CERT_DIR entry $work/nodir (the trust store OpenSSL reads from custos' environment): No such file or directory"
trust ssl-dir-relative SSL_CERT_DIR "store" \
	"SSL_CERT_DIR entry 'store': not an absolute path"
trust ssl-dir-file SSL_CERT_DIR "$work/store/bundle.pem" \
	"SSL_CERT_DIR entry $work/store/bundle.pem: not a directory (hashed CA certificates)"
SSL_CERT_FILE=$work/store/bundle.pem SSL_CERT_DIR=$work/store host host-ssl-good "$f" 0 ': ok: 2 listener'
# A JWKS the proxy would refuse at start: no usable signing key (only an encryption key).
fj="$work/host-jwt.yaml"
host_config "$fj"
sed -i "s|^  api_keys: \(.*\)|  api_keys: \1\n  jwt: { jwks_file: $h/jwks.json, issuers: [\"https://issuer.test\"], audiences: [custos] }|" "$fj"
printf '{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}\n' >"$h/jwks.json"
chmod 644 "$h/jwks.json"
host host-jwks-no-key "$fj" 1 \
	"^$fj:$(line_of "$fj" "jwks_file: $h/jwks.json"):[0-9]+: error: auth.jwt.jwks_file: jwks $h/jwks.json: no usable signing key"
printf '{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}\n' >"$h/jwks.json"
host host-jwks-good "$fj" 0 ': ok: 2 listener'
rm "$h/jwks.json"
rmdir "$h/log" "$h/run"
host host-missing-dirs "$f" 1 \
	"^$f:$(line_of "$f" "file: $h/log"):[0-9]+: error: log.file '$h/log/custos.log': its directory $h/log: No such file" \
	"^$f:$(line_of "$f" "unix:$h/run"):[0-9]+: error: listeners\[1\] \(sock\).address" \
	"^$f:$(line_of "$f" "socket: $h/run"):[0-9]+: warning: admin.socket"
mkdir "$h/log" "$h/run"
f2="$work/host-audit.yaml"
host_config "$f2"
sed -i "s|  dir: $h/audit|  dir: $h/nowhere/audit|" "$f2"
host host-audit-dir-unmakeable "$f2" 1 \
	"^$f2:$(line_of "$f2" "dir: $h/nowhere"):[0-9]+: error: audit.dir '$h/nowhere/audit': its directory $h/nowhere: No such file"

if [ "$(id -u)" -eq 0 ] && getent passwd nobody >/dev/null; then
	# As root with proxy.user: what the proxy opens after the drop is checked as that user.
	chmod 755 "$work" "$h" "$h/tls" "$h/keys"
	mkdir -p "$h/audit"
	chown nobody "$h/audit" "$h/keys/audit.key" "$h/hec.token"
	f="$work/host-nobody.yaml"
	host_config "$f" "proxy: { user: nobody }"
	host host-nobody-good "$f" 0 ': ok: 2 listener'
	chown root "$h/hec.token"
	host host-nobody-token "$f" 1 \
		"^$f:$(line_of "$f" "token_file: "):[0-9]+: error: audit.sinks\[1\] \(splunk\).http.token_file '$h/hec.token': cannot be read by proxy.user nobody \(uid [0-9]+\): Permission denied"
	chown nobody "$h/hec.token"
	chown root "$h/audit"
	chmod 700 "$h/audit"
	host host-nobody-audit-dir "$f" 1 \
		"^$f:$(line_of "$f" "dir: $h/audit"):[0-9]+: error: audit.dir '$h/audit': cannot be written by proxy.user nobody"
	chown nobody "$h/audit"
	printf '12\n' >"$h/audit/cursor.splunk"
	chmod 600 "$h/audit/cursor.splunk"
	host host-nobody-cursor "$f" 1 \
		"^$f:$(line_of "$f" "id: splunk"):[0-9]+: error: audit.dir: $h/audit/cursor.splunk cannot be read and written by proxy.user nobody"
	chown nobody "$h/audit/cursor.splunk"
	# The cursors now live in ship/, the shipper's one writable directory.
	mv "$h/audit/cursor.splunk" "$h/audit/cursor.splunk.old"
	mkdir -p "$h/audit/ship"
	chmod 700 "$h/audit/ship"
	host host-nobody-ship-dir "$f" 1 \
		"^$f:$(line_of "$f" "dir: $h/audit"):[0-9]+: error: audit.dir: $h/audit/ship cannot be read and written by proxy.user nobody"
	chown nobody "$h/audit/ship"
	printf '12\n' >"$h/audit/ship/cursor.splunk"
	chmod 600 "$h/audit/ship/cursor.splunk"
	host host-nobody-ship-cursor "$f" 1 \
		"^$f:$(line_of "$f" "id: splunk"):[0-9]+: error: audit.dir: $h/audit/ship/cursor.splunk cannot be read and written by proxy.user nobody"
	chown nobody "$h/audit/ship/cursor.splunk"
	rm "$h/audit/cursor.splunk.old"
	chmod 600 "$h/policy.yaml"
	host host-nobody-reload "$f" 0 \
		"^$f:$(line_of "$f" "file: $h/policy.yaml"):[0-9]+: warning: policy.file '$h/policy.yaml': cannot be read by proxy.user nobody.*a reload reads it again"
	chmod 644 "$h/policy.yaml"
	host_config "$work/host-nouser.yaml" "proxy: { user: custos-no-such-user }"
	host host-no-user "$work/host-nouser.yaml" 1 \
		"error: proxy.user: no user named custos-no-such-user"
else
	echo "ok   # SKIP the proxy.user checks: they need root and a user nobody"
fi

# --- ids and VM settings the sandbox and VM code refuse at start (sandbox/profile.c,
# sandbox/vm_xml.c): refused by the check at their file:line:col, in the same words.
printf 'version: 1\nsandbox_profiles:\n  org/p: {}\n' >"$work/id-profile.yaml"
chmod 0644 "$work/id-profile.yaml"
expect profile-id "$work/id-profile.yaml" 1 \
	"^$work/id-profile.yaml:3:3: error: sandbox profile 'org/p': name must be 1-64 of \\[A-Za-z0-9_.-\\]"
printf 'version: 1\nsandbox_profiles: {v: {vm: {disk: /d}}}\nmodels:\n  - id: "org/m:q4"\n    sandbox: {type: vm, profile: v}\n' >"$work/id-vm.yaml"
chmod 0644 "$work/id-vm.yaml"
expect vm-model-id "$work/id-vm.yaml" 1 \
	"^$work/id-vm.yaml:4:9: error: model 'org/m:q4' runs in a VM, whose name \\(custos-org/m:q4\\) must be characters of \\[A-Za-z0-9_.-\\]"
printf 'version: 1\nsandbox_profiles:\n  v:\n    vm: {kernel: boot/vmlinuz, hostdev: [0000:00:20.0]}\n' >"$work/vm-paths.yaml"
chmod 0644 "$work/vm-paths.yaml"
expect vm-kernel-hostdev "$work/vm-paths.yaml" 1 \
	"^$work/vm-paths.yaml:4:18: error: 'kernel' must be an absolute path" \
	"^$work/vm-paths.yaml:4:42: error: '0000:00:20.0' is not a PCI address"
# A file for `sandbox exec -c` alone passes; --host (what `custos up` would refuse) does not.
printf 'version: 1\nsandbox_profiles: {p: {}}\n' >"$work/exec-only.yaml"
chmod 0644 "$work/exec-only.yaml"
expect exec-only "$work/exec-only.yaml" 0 ': ok: 0 listener'
out=$("$bin" config check --host "$work/exec-only.yaml" 2>&1)
rc=$?
if [ "$rc" -eq 1 ] && grep -q "error: proxy: 1\.\.16 listeners needed: the file has none" <<<"$out" &&
	grep -q "error: proxy: 1\.\.64 upstreams needed: the file has no models" <<<"$out"; then
	echo "ok   exec-only --host"
else
	echo "FAIL exec-only --host: exit $rc"
	echo "$out"
	fail=1
fi
# --host parses auth.api_keys_file as `custos up` does at start.
printf 'a 0000000000000000000000000000000000000000000000000000000000000000\nb nothex\n' >"$work/keys.txt"
chmod 0600 "$work/keys.txt"
printf 'version: 1\nauth: {api_keys_file: %s}\n' "$work/keys.txt" >"$work/keys.yaml"
chmod 0644 "$work/keys.yaml"
out=$("$bin" config check --host "$work/keys.yaml" 2>&1)
if grep -q "^$work/keys.yaml:2:23: error: auth.api_keys_file: $work/keys.txt:2: bad id or SHA-256 (64 hex digits)" <<<"$out"; then
	echo "ok   api-keys-file --host"
else
	echo "FAIL api-keys-file --host"
	echo "$out"
	fail=1
fi
# The same digest under two ids (in the file, or inline and in the file) would name the first:
# refused at the line. CRLF line ends are read as LF; an id is a custos.yaml id.
h0=0000000000000000000000000000000000000000000000000000000000000000
h1=1111111111111111111111111111111111111111111111111111111111111111
keys_case() { # NAME FILE_TEXT YAML_AUTH_EXTRA EXPECT_REGEX ('' = no api_keys_file error)
	printf '%b' "$2" >"$work/keys2.txt"
	chmod 0600 "$work/keys2.txt"
	printf 'version: 1\nauth: {api_keys_file: %s%s}\n' "$work/keys2.txt" "$3" >"$work/keys2.yaml"
	chmod 0644 "$work/keys2.yaml"
	out=$("$bin" config check --host "$work/keys2.yaml" 2>&1)
	if { [ -z "$4" ] && ! grep -q "auth.api_keys_file: $work/keys2.txt" <<<"$out"; } ||
		{ [ -n "$4" ] && grep -Eq "$4" <<<"$out"; }; then
		echo "ok   api-keys-file $1"
	else
		echo "FAIL api-keys-file $1"
		echo "$out"
		fail=1
	fi
}
keys_case crlf "# keys\r\na $h0\r\n\r\nb $h1\r\n" "" ""
keys_case dup-digest "a $h0\nb $h1\nc $h0\n" "" "error: auth.api_keys_file: $work/keys2.txt:3: the SHA-256 of key a again"
keys_case dup-inline "x $h1\n" ", api_keys: [{id: inl, sha256: $h1}]" "error: auth.api_keys_file: $work/keys2.txt:1: the SHA-256 of key inl again"
keys_case id-control "a\001b $h0\n" "" "error: auth.api_keys_file: $work/keys2.txt:1: bad id or SHA-256"
keys_case id-quote "a\"b $h0\n" "" "error: auth.api_keys_file: $work/keys2.txt:1: bad id or SHA-256"
# --host compiles policy.file as `custos up` does at start: its errors at its own positions.
printf 'version: 1\nrules:\n  - id: r\n    effect: allow\n    when: { principal: nobody }\n' >"$work/bad-policy.yaml"
chmod 0644 "$work/bad-policy.yaml"
printf 'version: 1\npolicy: {file: %s}\n' "$work/bad-policy.yaml" >"$work/pol.yaml"
chmod 0644 "$work/pol.yaml"
out=$("$bin" config check --host "$work/pol.yaml" 2>&1)
if grep -q "^$work/bad-policy.yaml:5:24: error: unknown principal 'nobody'" <<<"$out" &&
	grep -q "^$work/pol.yaml:2:16: error: policy.file: $work/bad-policy.yaml: 1 error(s)" <<<"$out"; then
	echo "ok   policy-file --host"
else
	echo "FAIL policy-file --host"
	echo "$out"
	fail=1
fi
# --host: two certificates of one key type on a listener, refused by `custos up` at start.
mkdir -p "$work/two"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj /CN=localhost -keyout "$work/two/b.key" -out "$work/two/b.crt" 2>/dev/null
cp "$pki/srv.crt" "$pki/srv.key" "$work/two/"
chmod 600 "$work/two/b.key" "$work/two/srv.key"
cat >"$work/two.yaml" <<CFG
version: 1
listeners:
  - id: t
    address: "127.0.0.1:8443"
    tls:
      cert: $work/two/srv.crt
      key: $work/two/srv.key
      certificates: [{ cert: $work/two/b.crt, key: $work/two/b.key }]
CFG
chmod 0644 "$work/two.yaml"
out=$("$bin" config check --host "$work/two.yaml" 2>&1)
if grep -q "^$work/two.yaml:8:[0-9]*: error: tls: $work/two/srv.crt and $work/two/b.crt are both ECDSA certificates" <<<"$out"; then
	echo "ok   two-ecdsa --host"
else
	echo "FAIL two-ecdsa --host"
	echo "$out"
	fail=1
fi
# --- end of the start-time parity cases

"$bin" config check >/dev/null 2>&1
rc=$?
if [ "$rc" -ne 2 ]; then
	echo "FAIL usage: exit $rc, expected 2"
	fail=1
else
	echo "ok   usage"
fi
exit $fail
