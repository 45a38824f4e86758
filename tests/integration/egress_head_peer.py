#!/usr/bin/env python3
"""Helpers for egress_inspect_head.sh: a keep-alive data source whose answers carry no body
(HEAD, 304, 204) under heads that response inspection would hold, and a client that sends
a sequence of requests on one connection through the egress proxy.

server STATE LOG [CERT KEY]   the source (TLS with CERT/KEY); writes the port it bound to
    STATE.port and appends "METHOD PATH" of every request to LOG. By the first segment:
    /json/..    200 application/json, Content-Length: 1234 (GET: a JSON body of 1234 bytes
                with an address in it; HEAD: the head alone)
    /gzip/..    the same head with Content-Encoding: gzip (GET: 1234 bytes, not gzip)
    /big/..     200 application/json, Content-Length: 9000000 (HEAD only: 502 on GET)
    /sse/..     200 text/event-stream, chunked (HEAD only)
    /ndjson/.., /form/.., /mp/..   200 under those types, Content-Length: 1234 (HEAD only)
    /cond/..    304 (ETag "v1", application/json, Content-Length: 1234) when If-None-Match
                is "v1", else 200 like /json/
    /nc/..      204 under Content-Type: application/json
client PROXYPORT URL_BASE CA REQ...   one connection to the proxy at 127.0.0.1:PROXYPORT (for
    an https URL_BASE a CONNECT tunnel, TLS verified against CA; "-" for http), each REQ
    "METHOD PATH" or "METHOD PATH INM" (If-None-Match: INM) sent in turn, each answer read
    whole before the next; prints for each "METHOD PATH -> STATUS ct=.. cl=.. ce=.. te=..
    body=N mail=(masked|clear|-)", then "connects=N" (1: every request on one connection);
    an error (a timeout: 20 s, an answer out of step) is printed as "error: ..." (exit 1).
"""
import http.client
import ssl
import sys
import urllib.parse

sys.path.insert(0, __import__("os").path.dirname(__file__))
import egress_peerlib  # noqa: E402

MAIL = b"jane.doe@example.com"


def json_body(n):
    head = b'{"mail":"' + MAIL + b'","pad":"'
    return head + b"x" * (n - len(head) - 2) + b'"}'


def answer(c, head):
    lines = head.split(b"\r\n")
    method, path = lines[0].split(b" ")[0], lines[0].split(b" ")[1]
    hdrs = {}
    for ln in lines[1:]:
        if b":" in ln:
            k, v = ln.split(b":", 1)
            hdrs[k.strip().lower()] = v.strip()
    seg = path.split(b"/")[1] if path.count(b"/") >= 1 else b""
    head_only = method == b"HEAD"

    def send(status, fields, body=b""):
        c.sendall(b"HTTP/1.1 " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) +
                  b"\r\n" + (b"" if head_only else body))

    js = b"Content-Type: application/json"
    cl = b"Content-Length: 1234"
    if seg == b"json":
        send(b"200 OK", [js, cl], json_body(1234))
    elif seg == b"gzip":
        send(b"200 OK", [js, b"Content-Encoding: gzip", cl], json_body(1234))
    elif seg == b"big" and head_only:
        send(b"200 OK", [js, b"Content-Length: 9000000"])
    elif seg == b"sse" and head_only:
        send(b"200 OK", [b"Content-Type: text/event-stream", b"Cache-Control: no-cache",
                         b"Transfer-Encoding: chunked"])
    elif seg == b"ndjson" and head_only:
        send(b"200 OK", [b"Content-Type: application/x-ndjson", cl])
    elif seg == b"form" and head_only:
        send(b"200 OK", [b"Content-Type: application/x-www-form-urlencoded", cl])
    elif seg == b"mp" and head_only:
        send(b"200 OK", [b"Content-Type: multipart/mixed; boundary=XyZ", cl])
    elif seg == b"cond":
        if hdrs.get(b"if-none-match") == b'"v1"':
            send(b"304 Not Modified", [b'ETag: "v1"', js, cl])
        else:
            send(b"200 OK", [b'ETag: "v1"', js, cl], json_body(1234))
    elif seg == b"nc":
        send(b"204 No Content", [js])
    else:
        send(b"502 Bad Gateway", [b"Content-Length: 7"], b"no such")
    return method + b" " + path


def handle(c, log, ctx):
    try:
        if ctx:
            c = ctx.wrap_socket(c, server_side=True)
        buf = b""
        while True:
            head, buf = egress_peerlib.recv_head(c, buf)
            if head is None:
                return
            what = answer(c, head)
            with open(log, "ab") as f:
                f.write(what + b"\n")
    except (OSError, ssl.SSLError):
        pass
    finally:
        c.close()


def server(state, log, cert=None, key=None):
    ctx = None
    if cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    egress_peerlib.serve(0, state, 64, handle, log, ctx)


def client(pport, base, ca, reqs):
    u = urllib.parse.urlsplit(base)
    connects = [0]

    class Counted:
        def connect(self):
            connects[0] += 1
            super().connect()

    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca)

        class Conn(Counted, http.client.HTTPSConnection):
            pass

        conn = Conn("127.0.0.1", int(pport), timeout=20, context=ctx)
        conn.set_tunnel(u.hostname, u.port)
        prefix = ""
    else:

        class Conn(Counted, http.client.HTTPConnection):
            pass

        conn = Conn("127.0.0.1", int(pport), timeout=20)
        prefix = base.rstrip("/")
    try:
        for r in reqs:
            parts = r.split(" ")
            method, path = parts[0], parts[1]
            hdrs = {"If-None-Match": parts[2]} if len(parts) > 2 else {}
            conn.request(method, prefix + path, headers=hdrs)
            resp = conn.getresponse()
            body = resp.read()
            mail = "-" if not body else "clear" if MAIL in body else (
                "masked" if b"[REDACTED:EMAIL]" in body else "-")
            print("%s %s -> %d ct=%s cl=%s ce=%s te=%s body=%d mail=%s" % (
                method, path, resp.status, resp.getheader("Content-Type", "-"),
                resp.getheader("Content-Length", "-"), resp.getheader("Content-Encoding", "-"),
                resp.getheader("Transfer-Encoding", "-"), len(body), mail), flush=True)
    except Exception as e:  # noqa: BLE001 (the test reads the line)
        print("error: %s: %s" % (type(e).__name__, e), flush=True)
        print("connects=%d" % connects[0])
        sys.exit(1)
    print("connects=%d" % connects[0])


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(*sys.argv[2:])
    else:
        client(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
