#!/usr/bin/env python3
"""Holds the audit trail and the code to docs/AUDIT.md section 2.3 (not a test itself: the
integration tests run it; CTest runs *.sh only).

  audit_schema.py DOC trail [--strict] PATH...   every event of the trails (log files or
      audit directories) has a documented type, only members its row lists, with their JSON
      types; --strict: also every member the table marks `always`.
  audit_schema.py DOC code SRCDIR                 every member name and event type the C sources
      write (literal keys of audit_event_* / audit_rec_*) has a row; every row's member is
      written by some code; every member of the table has its meaning in section 2 or 2.1.
  audit_schema.py DOC export CEF LEEF RFC5424     the export renderings of one trail, line by
      line, against the specs: CEF header fields and extension escaping, LEEF 2.0 attributes
      and delimiter, RFC 5424 header token lengths and structured-data escaping.

Exit 0 when all holds, 1 with one line per problem naming the event type and member."""
import json
import os
import re
import sys

SECTION = "docs/AUDIT.md section 2.3"
JTYPES = {"string", "number", "true", "bool", "object", "array"}
# Members the builders write without a literal key in a producer's call.
BUILTIN = {"v", "seq", "time", "type", "prev", "hash", "sig", "findings", "duration_ns"}


def names(cell):
    return re.findall(r"`([^`]+)`", cell)


def parse_doc(path):
    """{type or '*': {member: (jtype, always)}} from the section 2.3 table, and the text of
    sections 2 to 2.1 (where each member's meaning is)."""
    text = open(path, encoding="utf-8").read()
    m = re.search(r"^### 2\.3 .*?$(.*?)^## 3\.", text, re.M | re.S)
    if not m:
        sys.exit("%s: no section '### 2.3' before '## 3.'" % path)
    table = {}
    problems = []
    for ln, line in enumerate(m.group(1).splitlines()):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or cells[0] in ("type", "---"):
            continue
        types = ["*"] if cells[0] == "(every type)" else names(cells[0])
        members, jtype = names(cells[1]), cells[2]
        if not types or not members or jtype not in JTYPES:
            problems.append("%s: malformed row: %s" % (SECTION, line.strip()))
            continue
        always = cells[3].startswith("always")
        for t in types:
            for mb in members:
                row = table.setdefault(t, {})
                if mb in row:
                    problems.append("%s: `%s` of `%s` has two rows" % (SECTION, mb, t))
                row[mb] = (jtype, always)
    # Where a member's meaning is: the first cell of a row of the tables of sections 2 and
    # 2.1, or the paragraph on the writer's own members.
    s2 = re.search(r"^## 2\. Fields$(.*?)^### 2\.2 ", text, re.M | re.S)
    meant = set()
    for line in (s2.group(1) if s2 else "").splitlines():
        if line.startswith("|"):
            meant.update(names(line.strip("|").split("|")[0]))
        elif line.startswith("Writer-only members") or line.startswith("`recovery`"):
            meant.update(names(line))
    wo = re.search(r"^Writer-only members:(.*?)\n\n", text, re.M | re.S)
    if wo:
        meant.update(names(wo.group(1)))
    return table, problems, meant


def jtype_of(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int) and v >= 0:
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def type_ok(doc, got):
    if doc == "bool":
        return got in ("true", "false")
    return doc == got


def trail_files(paths):
    for p in paths:
        if os.path.isdir(p):
            for f in sorted(os.listdir(p)):
                if f.startswith("audit-") and f.endswith(".jsonl"):
                    yield os.path.join(p, f)
        else:
            yield p


def check_trail(table, paths, strict):
    problems, seen, n = [], set(), 0
    common = table.get("*", {})
    for f in trail_files(paths):
        with open(f, encoding="utf-8", errors="replace") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.endswith("\n"):
                    continue  # a live log's last record may be incomplete
                try:
                    ev = json.loads(line)
                except ValueError as e:
                    problems.append("%s:%d: not JSON: %s" % (f, ln, e))
                    continue
                n += 1
                t = ev.get("type")
                where = "%s:%d seq %s" % (f, ln, ev.get("seq"))
                row = table.get(t)
                if row is None:
                    key = ("type", t)
                    if key not in seen:
                        seen.add(key)
                        problems.append("event type `%s` (%s) has no row in %s" %
                                        (t, where, SECTION))
                    continue
                for mb, v in ev.items():
                    doc = row.get(mb) or common.get(mb)
                    got = jtype_of(v)
                    if doc is None:
                        key = (t, mb)
                        if key not in seen:
                            seen.add(key)
                            problems.append(
                                "member `%s` of event type `%s` (%s, a %s) is not documented: "
                                "add a row `| `%s` | `%s` | %s | <when> |` to %s" %
                                (mb, t, where, got, t, mb, got if got != "false" else "bool",
                                 SECTION))
                    elif not type_ok(doc[0], got):
                        key = (t, mb, "type")
                        if key not in seen:
                            seen.add(key)
                            problems.append("member `%s` of event type `%s` (%s) is a %s, "
                                            "%s says %s" % (mb, t, where, got, SECTION, doc[0]))
                if strict:
                    for mb, (jt, always) in list(row.items()) + list(common.items()):
                        key = (t, mb, "missing")
                        if always and mb not in ev and key not in seen:
                            seen.add(key)
                            problems.append("member `%s` of event type `%s` is missing (%s), "
                                            "%s says always" % (mb, t, where, SECTION))
    return problems, n


KEY_CALL = re.compile(
    r"\b(?:audit_(?:event|rec)_(?:cstr|str|u64|bool|strs)|put_cut)\(\s*[^,()]+,\s*\"([^\"]+)\"")
# Tables of member names handed to a writer (proxy/emit.c: the body keys of `audit: bodies`).
KEY_TABLE = re.compile(r"\bbody_keys\s+\w+\s*=\s*\{([^}]*)\}")
TYPE_CALLS = [
    re.compile(r"\baudit_(?:event|rec)_begin(?:_at)?\(\s*[^,()]+,\s*\"([^\"]+)\""),
    re.compile(r"\bconn_audit\(\s*\w+,\s*\"([^\"]+)\""),
    re.compile(r"\bemit_conn_reject\([^;]*?\"([a-z_]+\.[a-z_]+)\""),
    re.compile(r"\bconn_refuse_as\([^;]*?\"(http\.[a-z_]+)\""),
]


def check_code(table, s2text, srcdir):
    problems = []
    keys, types = {}, {}
    for sub in ("audit", "proxy", "cli", "sandbox", "core", "policy"):
        d = os.path.join(srcdir, sub)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if not f.endswith(".c"):
                continue
            p = os.path.join(d, f)
            text = open(p, encoding="utf-8", errors="replace").read()
            rel = os.path.join(sub, f)
            for m in KEY_CALL.finditer(text):
                keys.setdefault(m.group(1), "%s:%d" % (rel, text.count("\n", 0, m.start()) + 1))
            for m in KEY_TABLE.finditer(text):
                for k in re.findall(r"\"([^\"]+)\"", m.group(1)):
                    keys.setdefault(k, "%s:%d" % (rel, text.count("\n", 0, m.start()) + 1))
            for rx in TYPE_CALLS:
                for m in rx.finditer(text):
                    types.setdefault(m.group(1),
                                     "%s:%d" % (rel, text.count("\n", 0, m.start()) + 1))
    documented = set()
    for t, row in table.items():
        documented.update(row)
    for k, where in sorted(keys.items()):
        if k not in documented:
            problems.append("member `%s` (%s) is written but no row of %s names it" %
                            (k, where, SECTION))
    for t, where in sorted(types.items()):
        if t not in table:
            problems.append("event type `%s` (%s) is written but %s has no row for it" %
                            (t, where, SECTION))
    for t in sorted(table):
        if t != "*" and t not in types:
            problems.append("event type `%s` has rows in %s but no code writes it" %
                            (t, SECTION))
    for mb in sorted(documented):
        if mb not in keys and mb not in BUILTIN:
            problems.append("member `%s` has a row in %s but no code writes it" % (mb, SECTION))
        if mb not in s2text:
            problems.append("member `%s` of %s has no meaning in section 2 or 2.1" %
                            (mb, SECTION))
    return problems, len(keys), len(types)


# --- export renderings -------------------------------------------------------------------

def split_unescaped(s, sep, limit):
    """Splits s at unescaped sep (backslash escapes), at most limit times."""
    out, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c == sep and len(out) < limit:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def check_cef(lines):
    problems = []
    for n, line in enumerate(lines, 1):
        if any(ord(c) < 0x20 for c in line):
            problems.append("cef line %d: a raw control character" % n)
        parts = split_unescaped(line, "|", 7)
        if len(parts) != 8 or parts[0] != "CEF:0":
            problems.append("cef line %d: not 8 header fields: %r" % (n, line[:120]))
            continue
        for i, h in enumerate(parts[1:7]):
            bad = re.search(r"\\[^|\\]", h)
            if bad:
                problems.append("cef line %d: header field %d has an escape CEF has not: %r"
                                % (n, i + 1, h))
        if not re.fullmatch(r"(?:[0-9]|10)", parts[6]):
            problems.append("cef line %d: severity %r" % (n, parts[6]))
        # extension: key=value pairs; a value ends where ' key=' begins; '=' in it escaped
        ext = parts[7]
        pairs = re.split(r" (?=[A-Za-z0-9_]+=)", ext)
        keys = []
        for p in pairs:
            m = re.match(r"([A-Za-z0-9_]+)=(.*)\Z", p, re.S)
            if not m:
                problems.append("cef line %d: extension piece %r" % (n, p[:80]))
                continue
            keys.append(m.group(1))
            v = m.group(2)
            i = 0
            while i < len(v):
                if v[i] == "\\":
                    if i + 1 >= len(v) or v[i + 1] not in "\\=nr":
                        problems.append("cef line %d: %s: an escape CEF has not: %r" %
                                        (n, m.group(1), v))
                        break
                    i += 2
                    continue
                if v[i] == "=":
                    problems.append("cef line %d: %s: a raw '=' in a value" % (n, m.group(1)))
                    break
                i += 1
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            problems.append("cef line %d: keys twice: %s" % (n, sorted(dup)))
    return problems


def check_leef(lines):
    problems = []
    for n, line in enumerate(lines, 1):
        parts = split_unescaped(line, "|", 6)
        if len(parts) != 7 or parts[0] != "LEEF:2.0" or parts[5] != "x09":
            problems.append("leef line %d: not LEEF:2.0 with 5 header fields and x09: %r" %
                            (n, line[:120]))
            continue
        if any(ord(c) < 0x20 for c in "".join(parts[:6])):
            problems.append("leef line %d: a control character in the header" % n)
        keys = []
        for a in parts[6].split("\t"):
            m = re.match(r"([A-Za-z0-9_]+)=(.*)\Z", a, re.S)
            if not m:
                problems.append("leef line %d: attribute %r is no key=value" % (n, a[:80]))
                continue
            keys.append(m.group(1))
            if any(ord(c) < 0x20 for c in m.group(2)):
                problems.append("leef line %d: %s: a raw control character" % (n, m.group(1)))
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            problems.append("leef line %d: keys twice: %s" % (n, sorted(dup)))
    return problems


RFC5424 = re.compile(
    r"<(\d{1,3})>1 (\S+) ([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) (.*)\Z", re.S)
SD_PARAM = re.compile(r'([!-~]+?)="((?:[^"\\\]]|\\["\\\]])*)"')


def check_5424(lines):
    problems = []
    for n, line in enumerate(lines, 1):
        m = RFC5424.match(line)
        if not m:
            problems.append("rfc5424 line %d: header does not parse: %r" % (n, line[:120]))
            continue
        if int(m.group(1)) > 191:
            problems.append("rfc5424 line %d: PRI %s" % (n, m.group(1)))
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)",
                            m.group(2)):
            problems.append("rfc5424 line %d: TIMESTAMP %r" % (n, m.group(2)))
        rest = m.group(7)
        if rest.startswith("-"):
            continue
        i = 0
        while i < len(rest) and rest[i] == "[":
            mm = re.match(r"\[([!-~]+?)((?: " + SD_PARAM.pattern + r")*)\]", rest[i:])
            if not mm or any(c in mm.group(1) for c in '= ]"'):
                problems.append("rfc5424 line %d: structured data does not parse: %r" %
                                (n, rest[i:i + 120]))
                break
            i += mm.end()
        if i < len(rest) and rest[i] != " ":
            problems.append("rfc5424 line %d: no space before MSG" % n)
    return problems


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    table, problems, s2text = parse_doc(argv[1])
    mode = argv[2]
    if mode == "trail":
        strict = "--strict" in argv[3:]
        paths = [a for a in argv[3:] if a != "--strict"]
        p, n = check_trail(table, paths, strict)
        problems += p
        summary = "%d events checked against %s" % (n, SECTION)
    elif mode == "code":
        p, nk, nt = check_code(table, s2text, argv[3])
        problems += p
        summary = "%d member names and %d event types in the code match %s" % (nk, nt, SECTION)
    elif mode == "export":
        rd = lambda f: open(f, encoding="utf-8", errors="replace").read().splitlines()
        cef, leef, r5424 = rd(argv[3]), rd(argv[4]), rd(argv[5])
        problems += check_cef(cef) + check_leef(leef) + check_5424(r5424)
        summary = "%d CEF, %d LEEF, %d RFC 5424 lines parse" % (len(cef), len(leef), len(r5424))
    else:
        sys.exit(__doc__)
    for p in problems:
        print("audit schema: " + p)
    if problems:
        return 1
    print("audit schema: " + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
