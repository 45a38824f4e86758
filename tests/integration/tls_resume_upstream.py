#!/usr/bin/env python3
"""Fixture for proxy_upstream_resume.sh: a TLS model server that closes the connection after
each response (as some servers and load balancers do) and records, for each connection, how its
TLS handshake went, as its server side saw it (OpenSSL's SSL_session_reused):

  tls_resume_upstream.py CERT KEY PORTFILE LOG [tls1.2]

Listens on 127.0.0.1 (a free port, written to PORTFILE); TLS 1.3 unless told tls1.2 (then at
most TLS 1.2, session tickets on: OpenSSL's defaults). One line per connection goes to LOG:
"TLSv1.3 full", "TLSv1.3 resumed", ... written before the answer is sent. When the file
LOG.fail exists, the next connection is reset after its ClientHello (the line "aborted") and
the file removed: the client's handshake fails on a socket error. While LOG.hold exists, no
connection is served (they wait, accepted or in the listen queue, with their ClientHello).
When LOG.batch exists (it holds a number N), it is removed and the next N connections are
accepted and held until each of them has sent its first bytes (the ClientHello, with the
session it offers), at most 30 s, then served one after the other: N clients that connect at
once have all chosen their session before any handshake ends and brings the next ticket.
"""
import json
import os
import select
import socket
import ssl
import struct
import sys
import time

cert, key, portfile, log = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
if len(sys.argv) > 5 and sys.argv[5] == "tls1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}).encode()


def record(line):
    with open(log, "a") as f:
        f.write(line + "\n")


def serve(conn):
    if os.path.exists(log + ".fail"):
        os.unlink(log + ".fail")
        # Read the ClientHello, then reset the connection (RST): the client sees a socket
        # error, no alert (OpenSSL itself then leaves the session it offered resumable).
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        record("aborted")
        conn.close()
        return
    try:
        s = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as e:
        record("failed %s" % e)
        conn.close()
        return
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                return
            body += chunk
        record("%s %s" % (s.version(), "resumed" if s.session_reused else "full"))
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY)
    except (ssl.SSLError, OSError):
        pass
    finally:
        s.close()


lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("127.0.0.1", 0))
lsock.listen(16)
tmp = portfile + ".tmp"
with open(tmp, "w") as f:
    f.write(str(lsock.getsockname()[1]))
os.rename(tmp, portfile)
while True:
    c, _ = lsock.accept()
    while os.path.exists(log + ".hold"):
        time.sleep(0.01)
    if os.path.exists(log + ".batch"):
        with open(log + ".batch") as f:
            n = int(f.read().strip() or "1")
        os.unlink(log + ".batch")
        held = [c]
        end = time.monotonic() + 30
        while len(held) < n and time.monotonic() < end:
            r, _, _ = select.select([lsock], [], [], 0.1)
            if r:
                held.append(lsock.accept()[0])
        waiting = list(held)
        while waiting and time.monotonic() < end:
            r, _, _ = select.select(waiting, [], [], 0.1)
            waiting = [w for w in waiting if w not in r]
        if len(held) < n or waiting:
            record("batch short: %d of %d connected, %d silent" % (len(held), n, len(waiting)))
        for h in held:
            serve(h)
        continue
    serve(c)
