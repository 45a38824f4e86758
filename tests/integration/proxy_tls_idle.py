#!/usr/bin/env python3
"""proxy_tls_idle.sh's client (real TLS through Python's ssl module, i.e. OpenSSL).

Usage: proxy_tls_idle.py PORT CAFILE BEARER ADMIN_SOCKET N

Opens N TLS keep-alive connections to 127.0.0.1:PORT (half TLS 1.3, half TLS 1.2), makes one
request on each, then waits (60 s at most) until custos' /metrics, read over the admin Unix
socket, counts at least N idle connections that gave their TLS record buffers back. Then each
connection is used again: a chat completion with a 40 KiB body (several TLS records into the
re-allocated read buffer), a streamed one, or two pipelined requests, and every answer must be
complete and 200. Prints "ok ..." and "FAIL ..." lines; exit 0 only when nothing failed."""
import json
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyhttp  # noqa: E402
from pyhttp import read_response  # noqa: E402

port, cafile, key, admin, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
fails = 0


def fail(msg):
    global fails
    fails += 1
    print("FAIL", msg, flush=True)


def metric(name):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(admin)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def req(method, path, body=b""):
    return pyhttp.req(method, path, key, body)


def chat(stream, filler):
    msg = {"model": "test-model", "stream": stream,
           "messages": [{"role": "user", "content": "x" * filler}]}
    return req("POST", "/v1/chat/completions", json.dumps(msg).encode())


base = metric("custos_tls_buffer_releases_total")
if base is None:
    fail("/metrics has no custos_tls_buffer_releases_total")
    sys.exit(1)
conns = []
for i in range(n):
    ctx = ssl.create_default_context(cafile=cafile)
    v = ssl.TLSVersion.TLSv1_3 if i % 2 == 0 else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                        server_hostname="localhost")
    s.sendall(req("GET", "/v1/models"))
    st, _, left = read_response(s)
    if st != 200 or left:
        fail("connection %d: first request got %d" % (i, st))
    conns.append(s)
print("ok   %d TLS keep-alive connections made one request each" % n, flush=True)

end = time.time() + 60
got = 0
while time.time() < end:
    got = metric("custos_tls_buffer_releases_total") - base
    if got >= n:
        break
    time.sleep(0.05)
if got >= n:
    print("ok   custos gave back the record buffers of the %d quiet connections (%d)" % (n, got), flush=True)
else:
    fail("after 60 s only %d of %d quiet connections gave their TLS buffers back" % (got, n))

for i, s in enumerate(conns):
    kind = i % 3
    try:
        if kind == 0:  # a body of several TLS records into the re-allocated read buffer
            s.sendall(chat(False, 40 * 1024))
            st, body, left = read_response(s)
            good = st == 200 and b"chat.completion" in body and not left
        elif kind == 1:  # a streamed answer (SSE, chunked) through the re-allocated write buffer
            s.sendall(chat(True, 16))
            st, body, left = read_response(s)
            good = st == 200 and body.rstrip().endswith(b"data: [DONE]") and not left
        else:  # two pipelined requests in one TLS write
            s.sendall(req("GET", "/v1/models") + chat(False, 16))
            st, _, left = read_response(s)
            st2, body, left = read_response(s, left)
            good = st == 200 and st2 == 200 and b"chat.completion" in body and not left
        if not good:
            fail("connection %d (%s): second use got %d" %
                 (i, ["40 KiB body", "stream", "pipelined"][kind], st))
    except (OSError, EOFError, ValueError) as e:
        fail("connection %d: second use failed: %s" % (i, e))
if fails == 0:
    print("ok   every connection served again after its buffers were released "
          "(40 KiB bodies, streams, pipelined pairs; TLS 1.3 and 1.2)", flush=True)
for s in conns:
    s.close()
sys.exit(1 if fails else 0)
