#!/usr/bin/env python3
"""Client for http_hostile.sh: sends one hostile request (or pipelined requests) by name on a
raw TCP connection and prints what came back:

  http_hostile_client.py PORT CASE [want]

want is the number of answers to read (default 1); then, with "close" as a third argument, the
connection is read to its end (30 s bound a hang, not a pass). Prints one line:
  <status>[,<status>...] <closed|open> <X-Request-Id>[,...]
"""
import socket
import sys

KEY = b"Authorization: Bearer sk-test-alice\r\n"
BODY = b'{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
BIG = b'{"model":"test-model","max_tokens":50000,"messages":[{"role":"user","content":"hi"}]}'


def req(extra=b"", target=b"/v1/chat/completions", body=BODY, ver=b"HTTP/1.1", cl=True,
        meth=b"POST", host=b"Host: x\r\n"):
    h = meth + b" " + target + b" " + ver + b"\r\n" + host + KEY + extra
    if cl:
        h += b"Content-Length: %d\r\n" % len(body)
    return h + b"\r\n" + body


def chunked(b, size_line=None):
    return (size_line if size_line is not None else b"%x" % len(b)) + b"\r\n" + b + b"\r\n0\r\n\r\n"


TE = b"Transfer-Encoding: chunked\r\n"
CASES = {
    "ok": req(),
    # path spellings the policy normalises: the body's max_tokens must still be checked
    "dslash-big": req(target=b"//v1/chat/completions", body=BIG),
    "pct-big": req(target=b"/%761/chat/completions", body=BIG),
    "dslash-ok": req(target=b"//v1//chat/completions?x=%2F//y"),
    # forwarding fields a client forges: none reaches the model server
    "fwd-forged": req(b"Forwarded: for=10.9.9.9;proto=https;host=admin.example\r\n"
                      b"X-Real-IP: 10.9.9.9\r\nX-Forwarded-Proto: https\r\n"
                      b"X-Forwarded-Host: admin.example\r\nx-forwarded-port: 443\r\n"
                      b"X-Forwarded-For: 10.9.9.9\r\n"),
    # another virtual host named: the model server gets its own name, not this one
    "vhost": req(host=b"Host: admin.internal.example\r\n"),
    # framing refusals (client to ingress)
    "cl-te": req(TE, body=chunked(BODY)),
    "cl-list": req(b"Content-Length: 5, 5\r\n", cl=False, body=b"hello"),
    "cl-plus": req(b"Content-Length: +%d\r\n" % len(BODY), cl=False),
    "cl-huge": req(b"Content-Length: 99999999999999999999999\r\n", cl=False),
    "te-te": req(b"Transfer-Encoding: chunked, chunked\r\n", cl=False, body=chunked(BODY)),
    "te-xchunked": req(b"Transfer-Encoding: xchunked\r\n", cl=False, body=chunked(BODY)),
    "te-http10": req(TE, cl=False, body=chunked(BODY), ver=b"HTTP/1.0"),
    "chunk-0x": req(TE, cl=False, body=chunked(BODY, b"0x%x" % len(BODY))),
    "chunk-overflow": req(TE, cl=False, body=chunked(BODY, b"1%016x" % len(BODY))),
    "bare-lf": req(b"X-A: b\n"),
    "bare-cr": req(b"X-A: a\rb\r\n"),
    "nul": req(b"X-A: a\x00b\r\n"),
    "obs-fold": req(b"X-A: a\r\n b\r\n"),
    "space-colon": req(b"X-A : b\r\n"),
    "hash-target": req(target=b"/v1/chat/completions#x"),
    "dot-target": req(target=b"/v1/../admin"),
    "absolute": req(target=b"http://x/v1/chat/completions"),
    "host-twice": req(host=b"Host: x\r\nHost: y\r\n"),
    "expect-other": req(b"Expect: 103-checkpoint\r\n"),
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    # a refused request, then a valid one behind it: one answer, then the connection ends
    "pipeline-after-400": req(b"Content-Length: 1\r\n" + TE, cl=False,
                              body=b"0\r\n\r\n") + req(),
    # hostile model server answers (upstream to ingress)
    "up-cl-te": req(b"X-Case: cl-te\r\n"),
    "up-cl-list": req(b"X-Case: cl-list\r\n"),
    "up-te-xchunked": req(b"X-Case: te-xchunked\r\n"),
    "up-obs-fold": req(b"X-Case: obs-fold\r\n"),
    "up-bare-lf": req(b"X-Case: bare-lf\r\n"),
    "up-switch": req(b"X-Case: switch\r\n"),
    "up-early-hints": req(b"X-Case: early-hints\r\n"),
    "up-cl-longer": req(b"X-Case: cl-longer\r\n") + req(),
}


def read_answers(s, want, close):
    data, out, ids = b"", [], []
    s.settimeout(30)
    eof = False
    while len(out) < want or close:
        while b"\r\n\r\n" not in data:
            d = s.recv(65536)
            if not d:
                eof = True
                break
            data += d
        if eof or b"\r\n\r\n" not in data:
            break
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ")[1].decode()
        n = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            if k.lower() == b"content-length":
                n = int(v.strip())
            if k.lower() == b"x-request-id":
                ids.append(v.strip().decode())
        while len(data) < n:
            d = s.recv(65536)
            if not d:
                eof = True
                break
            data += d
        body, data = data[:n], data[n:]
        out.append(status)
        if b"EVIL" in body:
            out.append("smuggled")
        if eof:
            break
        if len(out) >= want and not close:
            break
    return out, eof or (close and not data), ids


port, case = int(sys.argv[1]), sys.argv[2]
want = int(sys.argv[3]) if len(sys.argv) > 3 else 1
close = len(sys.argv) > 4 and sys.argv[4] == "close"
s = socket.create_connection(("127.0.0.1", port))
s.sendall(CASES[case])
answers, closed, ids = read_answers(s, want, close)
print(",".join(answers) or "none", "closed" if closed else "open", ",".join(ids) or "-")
