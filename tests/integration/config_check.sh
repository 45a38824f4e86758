#!/usr/bin/env bash
# `custos config check` through the real binary: the example passes; a misspelled key, a wrong
# type, a missing required key, an out-of-range value, cipher strings OpenSSL refuses and a
# group-writable file each fail with exit 1 and a message naming file:line:col; several errors
# are all reported; usage is exit 2.
set -u
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

cp "$example" "$work/group-writable.yaml"
chmod 0664 "$work/group-writable.yaml"
expect group-writable "$work/group-writable.yaml" 1 "writable by group or others"

expect missing-file "$work/nonexistent.yaml" 1 "nonexistent.yaml"

"$bin" config check >/dev/null 2>&1
rc=$?
if [ "$rc" -ne 2 ]; then
	echo "FAIL usage: exit $rc, expected 2"
	fail=1
else
	echo "ok   usage"
fi
exit $fail
