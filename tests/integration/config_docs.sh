#!/usr/bin/env bash
# config_docs: the custos.yaml reference and the parser agree, through the real binary.
#  - keys: every key `custos config keys` lists (the parser's own key tables) is a key of a
#    table in docs/CONFIG.md, and every key those tables document is one the parser takes; a
#    key the parser knows only to refuse (auth.mtls.identity) is in no table. A table belongs
#    to the section whose heading is a backticked path (`listeners[].tls`); its first column
#    names keys (`timeouts.connect` / `.read`), a type `list of {a, b}` names an item's keys;
#    a section (`limits.timeouts`) is documented by its keys.
#  - sections: every top-level key is a section of man/custos.yaml.5.
#  - examples: conf/custos.example.yaml, conf/demo.yaml (its @...@ filled in as scripts/demo.sh
#    does) and every ```yaml block of docs/*.md whose top-level keys are custos.yaml sections
#    pass `custos config check`; a partial block is checked inside a minimal file whose
#    sections it replaces.
set -u
bin=${CUSTOS_BIN:?CUSTOS_BIN not set}
src=${CUSTOS_SRC:?CUSTOS_SRC not set}
if ! command -v python3 >/dev/null; then
	echo "SKIPPED: python3 not installed"
	exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

if ! "$bin" config keys >"$work/keys.txt"; then
	echo "FAIL custos config keys failed"
	exit 1
fi

# keys: CONFIG.md's tables against the parser's.
python3 - "$work/keys.txt" "$src/docs/CONFIG.md" "$src/man/custos.yaml.5" <<'PY' || fail=1
import re, sys

def norm(p):
    return re.sub(r'\.?<id>', '', p.replace('[]', '')).strip('.')

known, refused, top = set(), set(), set()
for line in open(sys.argv[1]):
    path, _, flag = line.rstrip('\n').partition('\t')
    (refused if flag == 'refused' else known).add(norm(path))
    if '.' not in path:
        top.add(path)

doc = {}  # normalized key -> line number
section = None
header = None
for no, line in enumerate(open(sys.argv[2]), 1):
    h = re.match(r'#{2,4} (.*)', line)
    if h:
        title = h.group(1).strip()
        m = re.fullmatch(r'`([^`]+)`', title)
        section = m.group(1) if m else ('' if title == 'Top level' else None)
        header = None
        continue
    if not line.startswith('|'):
        header = None
        continue
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if header is None:
        header = cells
        continue
    if set(cells[0]) <= set('-: ') or section is None or header[0] != 'key':
        continue
    prev = None
    for tok in re.findall(r'`([^`]+)`', cells[0]):
        if tok.startswith('.') and prev:
            tok = prev.rsplit('.', 1)[0] + tok
        prev = tok
        key = (section + '.' if section else '') + tok
        doc.setdefault(norm(key), no)
        kids = re.search(r'`\{([\w, ]+)\}`', cells[1]) if len(cells) > 1 else None
        if kids:
            for k in kids.group(1).split(','):
                doc.setdefault(norm(key + '.' + k.strip()), no)

bad = 0
# a section (limits.timeouts) is documented by its keys (timeouts.client_header)
for k in sorted(k for k in known - set(doc) if not any(d.startswith(k + '.') for d in doc)):
    print(f'FAIL key {k}: the parser takes it, no table of docs/CONFIG.md documents it')
    bad = 1
for k in sorted(set(doc) - known - refused):
    print(f'FAIL key {k} (docs/CONFIG.md:{doc[k]}): documented, the parser does not take it')
    bad = 1
for k in sorted(set(doc) & refused):
    print(f'FAIL key {k} (docs/CONFIG.md:{doc[k]}): documented as a key, the parser refuses it')
    bad = 1
man = open(sys.argv[3]).read()
for k in sorted(top):
    if not re.search(r'^\.It Ic ' + re.escape(k) + r'$', man, re.M):
        print(f'FAIL section {k}: not a section of man/custos.yaml.5')
        bad = 1
if len(known) < 150 or len(doc) < 150:
    print(f'FAIL only {len(known)} parser keys, {len(doc)} documented: extraction broken?')
    bad = 1
if not bad:
    print(f'ok   keys: {len(known)} parser keys, all documented; {len(doc)} documented, all taken')
sys.exit(bad)
PY

# examples: the conf/ files and the docs' custos.yaml blocks.
python3 - "$work/keys.txt" "$work" "$src" <<'PY' || fail=1
import glob, os, re, sys
top = {l.split('\t')[0].strip() for l in open(sys.argv[1]) if '.' not in l.split('\t')[0]}
work, src = sys.argv[2], sys.argv[3]
base = {
    'version': 'version: 1\n',
    'listeners': 'listeners:\n  - id: local\n    address: "127.0.0.1:8080"\n',
    'models': 'models:\n  - id: m\n    upstream: { url: "http://127.0.0.1:8000" }\n',
}

def sections(text):
    """Top-level sections in order: name -> text, or None when a line is outside any."""
    out, cur = {}, None
    for line in text.splitlines(keepends=True):
        m = re.match(r'([A-Za-z_][\w]*):', line)
        if m:
            cur = m.group(1)
            if cur in out:
                return None
            out[cur] = ''
        elif cur is None and line.strip() and not line.lstrip().startswith('#'):
            return None
        if cur is not None:
            out[cur] += line
    return out

n = 0
for md in sorted(glob.glob(os.path.join(src, 'docs', '*.md'))):
    lines = open(md).read().split('\n')
    i = 0
    while i < len(lines):
        if lines[i].strip() == '```yaml':
            j = i + 1
            while lines[j].strip() != '```':
                j += 1
            block = '\n'.join(lines[i + 1:j]) + '\n'
            s = sections(block)
            if s and set(s) <= top:
                merged = dict(base)
                merged.update(s)
                n += 1
                name = f'{os.path.basename(md)}:{i + 1}'
                with open(os.path.join(work, f'block{n}.yaml'), 'w') as f:
                    f.write(''.join(merged.values()))
                with open(os.path.join(work, f'block{n}.name'), 'w') as f:
                    f.write(name)
            i = j
        i += 1
demo = open(os.path.join(src, 'conf', 'demo.yaml')).read()
demo = demo.replace('@DEMO_DIR@', '/tmp/custos-demo').replace('@MODEL_PORT@', '8000')
open(os.path.join(work, 'demo.yaml'), 'w').write(demo.replace('@PORT@', '8080'))
PY
nblocks=$(find "$work" -name 'block*.yaml' | wc -l)
# CONFIG.md's routes block at least; fewer found means the extraction broke
if [ "$nblocks" -lt 1 ] || ! grep -qx 'CONFIG.md:[0-9]*' "$work"/block*.name; then
	echo "FAIL examples: no custos.yaml block found in docs/CONFIG.md"
	fail=1
fi
cp "$src/conf/custos.example.yaml" "$work/example.yaml"
check() {
	local name=$1 file=$2 out
	chmod 0600 "$file"
	if out=$("$bin" config check "$file" 2>&1); then
		echo "ok   example $name"
	else
		echo "FAIL example $name does not pass custos config check:"
		echo "$out"
		echo "--- the file checked:"
		cat "$file"
		fail=1
	fi
}
check conf/custos.example.yaml "$work/example.yaml"
check conf/demo.yaml "$work/demo.yaml"
for f in "$work"/block*.yaml; do
	[ -e "$f" ] || continue
	check "docs/$(cat "${f%.yaml}.name")" "$f"
done
exit $fail
