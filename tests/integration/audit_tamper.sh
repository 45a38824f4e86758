#!/usr/bin/env bash
# ctest: cost=200 (seconds, about: started first)
# audit_tamper: verify passes on an untouched, rotated, signed log and catches and locates each
# tampering: an edited byte, a deleted, swapped or inserted line, a re-chained rewrite (only
# the signatures catch it), a truncated tail (inside a record and at a record boundary), a
# forged shutdown seal, raw invalid UTF-8 and a removed rotated file. Cases 8-24: an attacker
# who can write the audit directory (and recompute any hash, audit.head included) but holds no
# signing key, or only a retired one; what verify cannot see by design is asserted as such.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 missing"; exit 77; }
command -v openssl >/dev/null || { echo "SKIPPED: openssl (the attacker's signing tool) missing"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null
# A second key pair: a log signed by it must not verify against the first.
"$CUSTOS_BIN" audit keygen "$T/other" >/dev/null
chmod 0644 "$T/keys/audit.key"
if "$LOAD" "$T/bad" --key "$T/keys/audit.key" --events 1 >/dev/null 2>"$T/err"; then
	fail "the writer accepted a private key readable by others"
fi
grep -q "refusing a key file" "$T/err" || fail "no mode error: $(cat "$T/err")"
chmod 0600 "$T/keys/audit.key"

"$LOAD" "$T/log" --key "$T/keys/audit.key" --events 3000 --threads 2 --rotate-bytes 300000 \
	--checkpoint-events 500 >/dev/null
nfiles=$(ls "$T/log"/audit-*.jsonl | wc -l)
[ "$nfiles" -ge 3 ] || fail "expected rotation into >= 3 files, got $nfiles"
PUB="$T/keys/audit.pub"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log") || fail "untouched log: $out"
grep -q "^OK: 30[0-9][0-9] records verified" <<<"$out" || fail "unexpected: $out"
echo "untouched: $out"
# Files given one by one verify the same as the directory.
"$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log"/audit-*.jsonl >/dev/null || fail "file list"
# The wrong key is refused.
if out=$("$CUSTOS_BIN" audit verify --pubkey "$T/other/audit.pub" "$T/log"); then
	fail "verified with another key"
fi
grep -q "signed by another key" <<<"$out" || fail "wrong key: $out"

F1=$(ls "$T/log"/audit-*.jsonl | sed -n 1p)
F2=$(ls "$T/log"/audit-*.jsonl | sed -n 2p)
# expect NAME FILE-PATTERN LINE WHAT [OPTION...] -- runs verify (with the options) on $T/case
# and checks the report.
expect() {
	local name=$1 file=$2 line=$3 what=$4 out rc=0
	shift 4
	out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$@" "$T/case") || rc=$?
	[ "$rc" -eq 1 ] || fail "$name: verify exit $rc, expected 1: $out"
	grep -q "first bad record: .*$file:$line seq" <<<"$out" ||
		fail "$name: wrong location (want $file:$line): $out"
	grep -q "$what" <<<"$out" || fail "$name: wrong reason (want '$what'): $out"
	echo "$name: caught: $(grep -m1 '^first bad record' <<<"$out")"
}
fresh() { rm -rf "$T/case"; cp -a "$T/log" "$T/case"; }
# rechain_line FILE N: recomputes line N's hash over its (edited) bytes; rechain_last FILE: the
# last line's.
rechain_line() {
	python3 - "$1" "$2" <<'PY'
import hashlib, sys
p, n = sys.argv[1], int(sys.argv[2])
lines = open(p, 'rb').read().split(b'\n')
l = lines[n - 1]
cut = l.rindex(b',"prev":"')
canon = l[:cut + 9 + 64 + 1]
lines[n - 1] = canon + b',"hash":"' + hashlib.sha256(canon).hexdigest().encode() + b'"}'
open(p, 'wb').write(b'\n'.join(lines))
PY
}
rechain_last() { rechain_line "$1" "$(wc -l <"$1")"; }
f1=$(basename "$F1")
f2=$(basename "$F2")

fresh # 1. one byte edited inside a record
sed -i '50s/"decision":"allow"/"decision":"allaw"/' "$T/case/$f1"
expect "edit a byte" "$f1" 50 "hash mismatch"

fresh # 2. a line deleted
sed -i '60d' "$T/case/$f1"
expect "delete a line" "$f1" 60 "seq 61, expected 60"

fresh # 3. two lines swapped
sed -i '70{h;d};71{G}' "$T/case/$f1"
expect "swap two lines" "$f1" 70 "seq 71, expected 70"

fresh # 4. a line inserted (a copy of line 80 placed after it)
sed -i '80p' "$T/case/$f1"
expect "insert a line" "$f1" 81 "seq 80, expected 81"

fresh # 5. a rewrite from line 100 on with every hash recomputed: only signatures catch it
python3 - "$T/case/$f1" <<'PY'
import hashlib, sys
p = sys.argv[1]
lines = open(p, 'rb').read().split(b'\n')[:-1]
head = None
for i, l in enumerate(lines):
    if i + 1 < 100:
        continue
    if i + 1 == 100:
        l = l.replace(b'"decision":"allow"', b'"decision":"deny!"')
    cut = l.rindex(b',"prev":"')
    prev = l[cut + 9:cut + 9 + 64] if head is None else head
    canon = l[:cut] + b',"prev":"' + prev + b'"'
    head = hashlib.sha256(canon).hexdigest().encode()
    lines[i] = canon + b',"hash":"' + head + b'"}'
open(p, 'wb').write(b'\n'.join(lines) + b'\n')
PY
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") && fail "re-chained rewrite passed: $out"
grep -q "checkpoint signature does not verify\|signed head differs" <<<"$out" ||
	fail "re-chain: $out"
echo "re-chained rewrite: caught: $(echo "$out" | tail -1)"

fresh # 6a. truncated inside a record (the last file's final bytes cut)
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
truncate -s -40 "$LAST"
n=$(wc -l <"$LAST")
expect "truncate inside a record" "$(basename "$LAST")" $((n + 1)) "ends inside a record"

fresh # 6b. truncated at a record boundary: the shutdown seal is gone, and audit.head names it
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
n=$(wc -l <"$LAST")
sed -i '$d' "$LAST"
sed -i '$d' "$LAST"
hs=$(awk '{print $2}' "$T/case/audit.head")
expect "truncate the tail" "$(basename "$LAST")" $((n - 2)) \
	"below the last signed checkpoint recorded in $T/case/audit.head (seq $hs,"
# Without audit.head (a copy taken without it) only the missing seal shows the truncation.
out=$("$CUSTOS_BIN" audit verify --no-head --pubkey "$PUB" "$T/case") && fail "tail truncation passed"
grep -q "without a shutdown checkpoint" <<<"$out" || fail "tail truncation: $out"
grep -q "records after seq [0-9]* (the last one a checkpoint signs)" <<<"$out" || fail "how far: $out"
echo "truncate the tail, --no-head: caught: $(echo "$out" | sed -n 2p)"
# --live accepts an unsealed end (a running or crashed writer) and says how far it is signed,
# but not an end below audit.head.
"$CUSTOS_BIN" audit verify --live --no-head --pubkey "$PUB" "$T/case" | grep -q "signed through seq" ||
	fail "--live on an unsealed log"
expect "truncate the tail, --live" "$(basename "$LAST")" $((n - 2)) "below the last signed checkpoint" --live

fresh # 6c. a forged seal: the log cut after a signed interval checkpoint whose reason is then
#     changed to "shutdown" and its hash recomputed. The signature covers the reason.
ck=$(grep -n '"reason":"interval"' "$T/case/$f1" | head -1 | cut -d: -f1)
[ -n "$ck" ] || fail "no interval checkpoint in $f1"
for f in "$T/case"/audit-*.jsonl; do [ "$(basename "$f")" = "$f1" ] || rm "$f"; done
sed -i "$((ck + 1)),\$d" "$T/case/$f1"
sed -i "${ck}s/\"reason\":\"interval\"/\"reason\":\"shutdown\"/" "$T/case/$f1"
rechain_last "$T/case/$f1"
expect "forge a shutdown seal" "$f1" "$ck" "checkpoint signature does not verify"

fresh # 6d. the tail cut and an empty file named past it (a crash during rotation): the report
#     names the last record, not the empty file
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
sed -i '$d' "$LAST"
n=$(wc -l <"$LAST")
s=$(tail -1 "$LAST" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
touch "$T/case/$(printf 'audit-%020d.jsonl' $((s + 1)))"
expect "empty last file" "$(basename "$LAST")" "$n" "below the last signed checkpoint"
expect "empty last file, --no-head" "$(basename "$LAST")" "$n" "without a shutdown checkpoint" --no-head
# Without --pubkey no signature was checked, so none is claimed.
out=$("$CUSTOS_BIN" audit verify --no-head "$T/case") && fail "unsealed, no key: passed"
grep -q "signatures were not checked" <<<"$out" || fail "no-key unsealed: $out"
grep -q "last signed checkpoint" <<<"$out" && fail "no-key unsealed claims signatures: $out"

fresh # 6e. raw invalid UTF-8 in a record (its hash recomputed): not valid JSON
sed -i '50s/"decision":"allow"/"decision":"all\xffw"/' "$T/case/$f1"
rechain_line "$T/case/$f1" 50
expect "invalid UTF-8" "$f1" 50 "invalid UTF-8"

# Options after the paths are options, not paths.
"$CUSTOS_BIN" audit verify "$T/log" --pubkey "$PUB" | grep -q "with valid signatures" ||
	fail "--pubkey after the path"
rc=0
"$CUSTOS_BIN" audit verify "$T/log" --bogus >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "unknown option after a path: exit $rc, expected 2"

fresh # 7a. a rotated file in the middle removed
rm "$T/case/$f2"
F3=$(ls "$T/case"/audit-*.jsonl | sed -n 2p)
expect "remove a rotated file" "$(basename "$F3")" 1 "records are missing before this file"

fresh # 7b. the first file removed
rm "$T/case/$f1"
expect "remove the first file" "$f2" 1 "does not start at genesis"

# Rotation by age and checkpoints by time: ~1.5 s of writing with 300 ms files and 100 ms
# checkpoints gives several files and many signed checkpoints; the chain runs across them.
"$LOAD" "$T/timed" --key "$T/keys/audit.key" --events 1500 --rate 1000 --rotate-ms 300 \
	--checkpoint-ms 100 >/dev/null
nt=$(ls "$T/timed"/audit-*.jsonl | wc -l)
[ "$nt" -ge 3 ] || fail "time rotation: $nt files"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/timed") || fail "time rotation: $out"
# 1500 events never reach the 10000-event checkpoint interval: these come from the clock.
nck=$(cat "$T/timed"/audit-*.jsonl | grep -c '"reason":"interval"' || true)
[ "$nck" -ge 1 ] || fail "no time-based checkpoint under steady traffic"
echo "time rotation: $nt files, $nck time-based checkpoints: OK"

# A log without the key check still verifies its chain and says signatures were not checked.
"$CUSTOS_BIN" audit verify "$T/log" | grep -q "signatures NOT checked" || fail "no-key message"

# ---- An attacker who can write the directory but holds no signing key (8-25): each case on a
# fresh copy of the rotated, signed trail; an attacker recomputes every hash he likes.
cat >"$T/tool.py" <<'PY'
import glob, hashlib, os, re, subprocess, sys, tempfile
FR = re.compile(rb'^\{"v":1,"seq":(\d+),(.*),"prev":"([0-9a-f]{64})","hash":"([0-9a-f]{64})"\}$',
                re.S)
def files(d):
    return sorted(glob.glob(os.path.join(d, 'audit-*.jsonl')))
def load(p):
    data = open(p, 'rb').read()
    nl = data.endswith(b'\n')
    lines = data.split(b'\n')
    return (lines[:-1] if nl else lines), nl
def save(p, lines, nl):
    open(p, 'wb').write(b'\n'.join(lines) + (b'\n' if nl else b''))
def rechain(d, renumber=False):
    """Recomputes prev and hash of every record in chain order (and renumbers seq)."""
    head, seq = b'0' * 64, 0
    for p in files(d):
        lines, nl = load(p)
        for i, l in enumerate(lines):
            m = FR.match(l)
            if not m:
                continue
            s = seq + 1 if renumber else int(m.group(1))
            canon = b'{"v":1,"seq":%d,' % s + m.group(2) + b',"prev":"' + head + b'"'
            head = hashlib.sha256(canon).hexdigest().encode()
            lines[i] = canon + b',"hash":"' + head + b'"}'
            seq = s
        save(p, lines, nl)
def rehead(d):
    """Rewrites audit.head to the hash now at its seq (it is not signed)."""
    f = os.path.join(d, 'audit.head')
    w = open(f).read().split()
    for p in files(d):
        for l in load(p)[0]:
            m = FR.match(l)
            if m and int(m.group(1)) == int(w[1]):
                w[2] = m.group(4).decode()
    open(f, 'w').write(' '.join(w) + '\n')
def forge(d, f, n, key, kid):
    """Re-signs the checkpoint at f:n with key (key_id kid, '-' keeps it) over the chain."""
    rechain(d)
    lines, nl = load(f)
    l = lines[n - 1]
    m = FR.match(l)
    l = re.sub(rb'"signed_seq":\d+', b'"signed_seq":%d' % (int(m.group(1)) - 1), l)
    l = re.sub(rb'"signed_hash":"[0-9a-f]{64}"', b'"signed_hash":"' + m.group(3) + b'"', l)
    if kid != '-':
        l = re.sub(rb'"key_id":"[0-9a-f]{16}"', b'"key_id":"' + kid.encode() + b'"', l)
    cut = l.index(b',"sig":"')
    with tempfile.NamedTemporaryFile() as t:
        t.write(b'custos-audit-checkpoint/2\n' + l[:cut])
        t.flush()
        sig = subprocess.run(['openssl', 'pkeyutl', '-sign', '-inkey', key, '-rawin', '-in',
                              t.name], capture_output=True, check=True).stdout
    lines[n - 1] = l[:cut] + b',"sig":"' + sig.hex().encode() + l[cut + 8 + 128:]
    save(f, lines, nl)
    rechain(d)
cmd = sys.argv[1]
if cmd == 'rechain':
    rechain(sys.argv[2], len(sys.argv) > 3)
elif cmd == 'rehead':
    rehead(sys.argv[2])
elif cmd == 'forge':
    forge(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
elif cmd == 'insert':  # insert FILE AFTER-LINE BYTES-FILE: a raw line after that line
    lines, nl = load(sys.argv[2])
    lines.insert(int(sys.argv[3]), open(sys.argv[4], 'rb').read())
    save(sys.argv[2], lines, nl)
PY
tool() { python3 "$T/tool.py" "$@"; }
# key_id of a public key: the first 16 hex digits of SHA-256 of its raw 32 bytes
key_id() { openssl pkey -pubin -in "$1" -outform DER | tail -c 32 | sha256sum | cut -c1-16; }
KID=$(key_id "$PUB")
OKID=$(key_id "$T/other/audit.pub")
grep -q "\"key_id\":\"$KID\"" "$T/log/$f1" || fail "key_id $KID not in the log"
nth() { ls "$T/case"/audit-*.jsonl | sed -n "$1p"; }
name_of() { printf 'audit-%020d.jsonl' "$1"; }
seq_of() { basename "$1" | sed 's/^audit-0*\([0-9][0-9]*\)\.jsonl$/\1/'; }
# verify_ok NAME WHAT [OPTION...]: verify passes on $T/case and says WHAT (undetectable by design)
verify_ok() {
	local name=$1 what=$2 out
	shift 2
	out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$@" "$T/case") ||
		fail "$name: verify failed: $out"
	grep -q "$what" <<<"$out" || fail "$name: want '$what': $out"
	echo "$name: passes (by design): $(echo "$out" | head -1)"
}
ck1=$(grep -n '"reason":"interval"' "$T/log/$f1" | head -1 | cut -d: -f1)
[ -n "$ck1" ] && [ "$ck1" -gt 60 ] || fail "no interval checkpoint past line 60 in $f1"

fresh # 8. a field edited and its own hash recomputed: the next record's prev no longer matches
sed -i '50s/"decision":"allow"/"decision":"deny"/' "$T/case/$f1"
rechain_line "$T/case/$f1" 50
expect "edit, own hash recomputed" "$f1" 51 "prev does not match the hash of seq 50"

fresh # 9. the last file removed: audit.head names its records; without it, no seal
NF=$(ls "$T/case"/audit-*.jsonl | wc -l)
PL=$(nth $((NF - 1)))
rm "$(nth "$NF")"
n=$(wc -l <"$PL")
expect "remove the last file" "$(basename "$PL")" "$n" "below the last signed checkpoint"
expect "remove the last file, --no-head" "$(basename "$PL")" "$n" "without a shutdown checkpoint" --no-head

fresh # 10. two files swapped by name, a file renamed, a file duplicated under a later name
A=$(nth 2)
B=$(nth 3)
mv "$A" "$T/tmp.jsonl"
mv "$B" "$A"
mv "$T/tmp.jsonl" "$B"
expect "swap two files" "$(basename "$A")" 1 "file name says it starts at seq $(seq_of "$A"), it starts at $(seq_of "$B")"
fresh
A=$(nth 2)
s2=$(seq_of "$A")
mv "$A" "$T/case/$(name_of $((s2 + 1)))"
expect "rename a file" "$(name_of $((s2 + 1)))" 1 "file name says it starts at seq $((s2 + 1)), it starts at $s2"
fresh
cp "$(nth 2)" "$T/case/$(name_of $((s2 + 5)))"
expect "duplicate a file" "$(name_of $((s2 + 5)))" 1 "file name says it starts at seq $((s2 + 5)), it starts at $s2"

# Another custos instance's trail, signed by the other key, and a twin signed by the same key.
"$LOAD" "$T/olog" --key "$T/other/audit.key" --events 3000 --threads 2 --rotate-bytes 300000 \
	--checkpoint-events 500 >/dev/null
"$LOAD" "$T/twin" --key "$T/keys/audit.key" --events 3000 --threads 2 --rotate-bytes 300000 \
	--checkpoint-events 500 >/dev/null
fresh # 11. records spliced in from another instance's trail: same seqs, another chain
of1=$(ls "$T/olog"/audit-*.jsonl | head -1)
python3 - "$T/case/$f1" "$of1" <<'PY'
import sys
a = open(sys.argv[1], 'rb').read().split(b'\n')
b = open(sys.argv[2], 'rb').read().split(b'\n')
a[99:109] = b[99:109]
open(sys.argv[1], 'wb').write(b'\n'.join(a))
PY
expect "splice another instance's records" "$f1" 100 "prev does not match the hash of seq 99"
fresh # 12. the whole trail replaced by another instance's: signed by another key
rm "$T/case"/audit-*.jsonl
cp -a "$T/olog"/audit-*.jsonl "$T/case/"
out=$("$CUSTOS_BIN" audit verify --no-head --pubkey "$PUB" "$T/case") && fail "another key's trail: $out"
grep -q "first bad record: .*:2 seq 2: checkpoint signed by another key (key_id \"$OKID\"" <<<"$out" ||
	fail "another key's trail: $out"
echo "another instance's trail: caught: $(echo "$out" | sed -n 2p)"
fresh # 13. replaced by a twin signed with the same key: only audit.head (or an off-host copy of
#     it, --head) tells them apart; with the twin's audit.head too, nothing can (by design)
rm "$T/case"/audit-*.jsonl
cp -a "$T/twin"/audit-*.jsonl "$T/case/"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") && fail "twin trail passed: $out"
grep -q "audit.head" <<<"$out" || fail "twin trail: $out"
echo "a twin trail, same key: caught by audit.head: $(echo "$out" | sed -n 2p)"
cp "$T/twin/audit.head" "$T/case/audit.head"
cp "$T/log/audit.head" "$T/head.copy"
verify_ok "a twin trail with its audit.head" "reaches audit.head"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" --head "$T/head.copy" "$T/case") &&
	fail "twin trail against a kept copy of audit.head: $out"
echo "a twin trail with its audit.head, --head with a kept copy: caught"

fresh # 14. an older checkpoint replayed as the shutdown seal (seq set, chain and audit.head redone)
LAST=$(nth "$NF")
n=$(wc -l <"$LAST")
ls=$(seq_of "$LAST")
ls=$((ls + n - 1))
old=$(sed -n "${ck1}p" "$T/case/$f1" | sed "s/^{\"v\":1,\"seq\":[0-9]*,/{\"v\":1,\"seq\":$ls,/")
sed -i '$d' "$LAST"
printf '%s\n' "$old" >>"$LAST"
tool rechain "$T/case"
tool rehead "$T/case"
expect "replay an older checkpoint" "$(basename "$LAST")" "$n" "checkpoint signs seq $((ck1 - 1)), not its predecessor"

# 15. forged checkpoints, each with the chain after it recomputed
fresh
sed -i "${ck1}s/\"sig\":\"\(.\)/\"sig\":\"X\1/; ${ck1}s/\"sig\":\"X0/\"sig\":\"1/; ${ck1}s/\"sig\":\"X./\"sig\":\"0/" "$T/case/$f1"
tool rechain "$T/case"
expect "a signature digit changed" "$f1" "$ck1" "checkpoint signature does not verify"
fresh
sed -i "${ck1}s/\"key_id\":\"$KID\"/\"key_id\":\"$OKID\"/" "$T/case/$f1"
tool rechain "$T/case"
expect "key_id of another key" "$f1" "$ck1" "signed by another key"
expect "key_id of another key, both keys given" "$f1" "$ck1" "checkpoint signature does not verify" --pubkey "$T/other/audit.pub"
fresh # key_id removed: verify read an unset span for the report and crashed (SIGSEGV) on main
sed -i "${ck1}s/\"key_id\":\"$KID\",//" "$T/case/$f1"
tool rechain "$T/case"
expect "key_id removed" "$f1" "$ck1" "signed by another key (key_id (none) is not among"
fresh
tool forge "$T/case" "$T/case/$f1" "$ck1" "$T/other/audit.key" "$OKID"
expect "signed with the attacker's own key" "$f1" "$ck1" "signed by another key"
fresh
tool forge "$T/case" "$T/case/$f1" "$ck1" "$T/other/audit.key" -
expect "signed with another key under this key_id" "$f1" "$ck1" "checkpoint signature does not verify"
fresh
sed -i "${ck1}s/\"signed_seq\":[0-9]*/\"signed_seq\":999999/" "$T/case/$f1"
tool rechain "$T/case"
expect "signed_seq of a record not there" "$f1" "$ck1" "checkpoint signs seq 999999, not its predecessor"
fresh
sed -i "${ck1}s/\"signed_hash\":\"[0-9a-f]*\"/\"signed_hash\":\"$(printf '%064d' 7)\"/" "$T/case/$f1"
tool rechain "$T/case"
expect "signed_hash of a record not there" "$f1" "$ck1" "signed head differs from the chain"
fresh # the seal's signature in uppercase hex: the same signature, another record (fixed here)
LAST=$(nth "$NF")
n=$(wc -l <"$LAST")
sed -i '$s/"sig":"[0-9a-f]*"/\U&/; $s/"SIG"/"sig"/' "$LAST"
tool rechain "$T/case"
tool rehead "$T/case"
expect "the seal's sig in uppercase" "$(basename "$LAST")" "$n" "sig is not lowercase hex"

# 16. audit.head rolled back or deleted: alone it only weakens the check (by design); with the
#     log cut back to an interval checkpoint, the missing seal still shows the cut
ckh=$(sed -n "${ck1}p" "$T/log/$f1" | sed 's/.*"hash":"\([0-9a-f]*\)"}$/\1/')
fresh
echo "custos-audit-head/1 $ck1 $ckh $f1 $KID" >"$T/case/audit.head"
verify_ok "audit.head rolled back" "reaches audit.head (seq $ck1)"
for f in "$T/case"/audit-*.jsonl; do [ "$(basename "$f")" = "$f1" ] || rm "$f"; done
sed -i "$((ck1 + 1)),\$d" "$T/case/$f1"
expect "audit.head rolled back, log cut back to it" "$f1" "$ck1" "without a shutdown checkpoint"
rm "$T/case/audit.head"
expect "audit.head deleted, log cut back" "$f1" "$ck1" "without a shutdown checkpoint"
fresh
rm "$T/case/audit.head"
verify_ok "audit.head deleted" "no audit.head checked"

# 17. records that read differently to another JSON reader, hashes and chain recomputed:
#     named where they are, not only at the next checkpoint
for m in '"typ\\u0065":"checkpoint"' '"se\\u0071":7' '"time":"2000-01-01T00:00:00Z"' \
	'"\\u0068ash":"0"'; do
	fresh
	sed -i "50s/,\"prev\":\"/,$m&/" "$T/case/$f1"
	tool rechain "$T/case"
	expect "a record with $m" "$f1" 50 "record breaks the writer's rules: event sets the reserved member"
done
fresh # whitespace or another number form: any byte counts; the next checkpoint's signature shows it
sed -i '50s/"decision":"allow"/"decision" : "allow"/' "$T/case/$f1"
tool rechain "$T/case"
expect "whitespace added, chain recomputed" "$f1" "$ck1" "signed head differs from the chain"

# 18. a NUL, a raw newline, an enormous line, a missing final newline
fresh
sed -i '50s/"decision":"allow"/"decision":"al\x00ow"/' "$T/case/$f1"
tool rechain "$T/case"
expect "a raw NUL" "$f1" 50 "not valid JSON: control byte 0x00"
fresh
sed -i '50s/"decision":"allow"/"decision":"al\nlow"/' "$T/case/$f1"
expect "a raw newline" "$f1" 50 "malformed record"
fresh
head -c 2097152 /dev/zero | tr '\0' 'a' >"$T/big"
tool insert "$T/case/$f1" 50 "$T/big"
expect "a 2 MiB line" "$f1" 51 "longer than 8704 bytes"
fresh
LAST=$(nth "$NF")
n=$(wc -l <"$LAST")
truncate -s -1 "$LAST"
expect "no final newline" "$(basename "$LAST")" "$n" "file ends inside a record"

fresh # 19. a FIFO or a device in a log's place: refused, never waited on
mkfifo "$T/case/$(name_of 99999999)"
rc=0
out=$(timeout 60 "$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") || rc=$?
[ "$rc" -eq 1 ] || fail "a FIFO: exit $rc: $out"
grep -q "problem: .*$(name_of 99999999): not a regular file" <<<"$out" || fail "a FIFO: $out"
fresh
ln -s /dev/zero "$T/case/$(name_of 99999999)"
rc=0
out=$(timeout 60 "$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") || rc=$?
[ "$rc" -eq 1 ] && grep -q "not a regular file" <<<"$out" || fail "/dev/zero: exit $rc: $out"
fresh
rm "$T/case/audit.head"
mkfifo "$T/case/audit.head"
rc=0
out=$(timeout 60 "$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") || rc=$?
[ "$rc" -eq 1 ] && grep -q "problem: .*audit.head: not a regular file" <<<"$out" ||
	fail "a FIFO as audit.head: exit $rc: $out"
# The writer's start counts it as a damaged anchor: it refuses to start (fail closed), not hang.
rc=0
timeout 60 "$LOAD" "$T/case" --key "$T/keys/audit.key" --events 1 >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "audit.head: not a regular file" "$T/err" ||
	fail "the writer with a FIFO as audit.head: exit $rc: $(cat "$T/err")"
echo "a FIFO, /dev/zero, a FIFO as audit.head: refused (verify and the writer's start)"

# 20. A crashed writer (kill -9): no seal, only the start checkpoint signed (none by count or
#     time before the kill). Cutting the unsigned tail is undetectable by design; --live says
#     how much is unsigned, and without --live verify names the unsigned tail.
LP=""
WP=""
trap '[ -n "$WP" ] && kill -9 "$WP" 2>/dev/null; [ -n "$LP" ] && kill -9 "$LP" 2>/dev/null; rm -rf "$T"' EXIT
"$LOAD" "$T/crash" --key "$T/keys/audit.key" --forever --rate 2000 --checkpoint-events 100000000 \
	--checkpoint-ms 3600000 >"$T/load.out" 2>"$T/load.err" &
LP=$!
end=$((SECONDS + 120))
until [ "$(cat "$T/crash"/audit-*.jsonl 2>/dev/null | wc -l)" -gt 200 ] && grep -q '^writer_pid=' "$T/load.out"; do
	[ "$SECONDS" -lt "$end" ] || fail "the crash trail did not grow: $(cat "$T/load.err")"
	sleep 0.1
done
WP=$(sed -n 's/^writer_pid=//p' "$T/load.out")
kill -9 "$WP" "$LP"
wait "$LP" 2>/dev/null || true
LP=""
WP=""
python3 - "$T/crash" <<'PY' # what recovery would cut: a torn last record
import glob, os, sys
p = sorted(glob.glob(sys.argv[1] + '/audit-*.jsonl'))[-1]
d = open(p, 'rb').read()
open(p, 'wb').write(d[:d.rindex(b'\n') + 1])
PY
CF=$(basename "$(ls "$T/crash"/audit-*.jsonl)")
[ "$(ls "$T/crash"/audit-*.jsonl | wc -l)" -eq 1 ] || fail "the crash trail rotated"
[ "$(grep -c '"type":"checkpoint"' "$T/crash/$CF")" -eq 1 ] || fail "more than the start checkpoint"
crash() { rm -rf "$T/case"; cp -a "$T/crash" "$T/case"; }
crash
sed -i '$d' "$T/case/$CF"
sed -i '$d' "$T/case/$CF"
n=$(wc -l <"$T/case/$CF")
verify_ok "cut after the last checkpoint, --live" "signed through seq 1 ($((n - 1)) records after it are not covered by a signature)" --live
expect "cut after the last checkpoint" "$CF" "$n" "$((n - 1)) records after seq 1 (the last one a checkpoint signs) are not covered by a signature"
crash # 21. every checkpoint removed, renumbered and re-chained: passed --live before
sed -i '/"type":"checkpoint"/d' "$T/case/$CF"
tool rechain "$T/case" renumber
tool rehead "$T/case"
expect "all checkpoints removed, --live" "$CF" 2 "not a checkpoint: the writer follows" --live

# 22. Key rotation: a second run signs with the other key and records previous_key_id. Someone
#     who still holds the retired key re-signs a later checkpoint with it (and fixes
#     audit.head): caught, the key changes only at a recorded restart.
"$LOAD" "$T/rot" --key "$T/keys/audit.key" --events 300 --checkpoint-events 50 >/dev/null
"$LOAD" "$T/rot" --key "$T/other/audit.key" --events 300 --checkpoint-events 50 >/dev/null
grep -q "\"previous_key_id\":\"$KID\"" "$T/rot"/audit-*.jsonl || fail "no previous_key_id"
cat "$PUB" "$T/other/audit.pub" >"$T/ring.pem"
out=$("$CUSTOS_BIN" audit verify --pubkey "$T/ring.pem" "$T/rot") || fail "rotated: $out"
rm -rf "$T/case"
cp -a "$T/rot" "$T/case"
RF=$(ls "$T/case"/audit-*.jsonl | tail -1)
n=$(wc -l <"$RF")
tool forge "$T/case" "$RF" "$n" "$T/keys/audit.key" "$KID"
tool rehead "$T/case"
expect "the seal re-signed with the retired key" "$(basename "$RF")" "$n" \
	"checkpoint signed by key $KID, but the checkpoint before it by key $OKID" --pubkey "$T/other/audit.pub"

# 23. Not a false alarm: a power cut tears a restart's start checkpoint off after its audit.start
#     (audit.head still names the seal before); the next start cuts it and writes a recovery
#     event and its own start checkpoint: the log verifies.
"$LOAD" "$T/torn" --key "$T/keys/audit.key" --events 20 >/dev/null
cp "$T/torn/audit.head" "$T/head1"
"$LOAD" "$T/torn" --key "$T/keys/audit.key" --events 20 >/dev/null
TF=$(ls "$T/torn"/audit-*.jsonl | tail -1)
L=$(grep -n '"type":"audit.start"' "$TF" | tail -1 | cut -d: -f1)
[ "$L" -gt 1 ] || fail "no second audit.start in $TF"
python3 - "$TF" "$L" <<'PY2'
import sys
p, n = sys.argv[1], int(sys.argv[2])
d = open(p, 'rb').read()
cut = 0
for _ in range(n):
    cut = d.index(b'\n', cut) + 1
open(p, 'wb').write(d[:cut + 30])
PY2
cp "$T/head1" "$T/torn/audit.head"
"$LOAD" "$T/torn" --key "$T/keys/audit.key" --events 20 >/dev/null
sed -n "$((L + 1))p" "$TF" | grep -q '"type":"recovery"' || fail "no recovery after the torn start"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/torn") || fail "torn start checkpoint: $out"
echo "a torn start checkpoint, recovered: $(echo "$out" | head -1)"

# 24. Not a false alarm either: a run with a new key cut after its start checkpoint with
#     audit.head still at the run before (a crash before the anchor moved): the next start names
#     the stale key in previous_key_id, the checkpoints go on with the new key; it verifies.
"$LOAD" "$T/stale" --key "$T/keys/audit.key" --events 20 >/dev/null
cp "$T/stale/audit.head" "$T/head1"
"$LOAD" "$T/stale" --key "$T/other/audit.key" --events 20 >/dev/null
SF=$(ls "$T/stale"/audit-*.jsonl | tail -1)
L=$(grep -n '"reason":"start"' "$SF" | tail -1 | cut -d: -f1)
sed -i "$((L + 3)),\$d" "$SF"
cp "$T/head1" "$T/stale/audit.head"
"$LOAD" "$T/stale" --key "$T/other/audit.key" --events 20 >/dev/null
[ "$(grep -c "\"previous_key_id\":\"$KID\"" "$SF")" -eq 2 ] || fail "no stale previous_key_id"
out=$("$CUSTOS_BIN" audit verify --pubkey "$T/ring.pem" "$T/stale") || fail "stale previous_key_id: $out"
echo "a stale previous_key_id after a crash: $(echo "$out" | head -1)"
echo "PASS"
