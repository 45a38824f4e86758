#!/usr/bin/env python3
"""Fixture for egress_origin_stops_reading.sh: a TLS data source that answers a request with
a body before reading it, then stops reading (as a server that refuses an upload early does
when it leaves its socket open):

  early_answer_upstream.py CERT KEY PORTFILE LOG

Listens on 127.0.0.1 (a free port, written to PORTFILE), TLS 1.3, one thread a connection.
A request head with a body (Content-Length or chunked) is answered at once with 413 and
"Connection: close", and from then on nothing more is read from that connection, which stays
open (its receive buffer fills, the peer's send buffer behind it): "early PATH" goes to LOG
after the answer was sent. A request without a body gets 200 "ok" and the connection is
closed: "get PATH" goes to LOG.
"""
import os
import socket
import ssl
import sys
import threading
import time

cert, key, portfile, log = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
lock = threading.Lock()
held = []  # connections left unread, kept open until the process ends


def record(line):
    with lock, open(log, "a") as f:
        f.write(line + "\n")


def serve(conn):
    try:
        s = ctx.wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                return
            data += chunk
        head = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
        path = head[0].split(b" ")[1].decode()
        body = any(line.lower().startswith((b"content-length:", b"transfer-encoding:"))
                   for line in head[1:])
        if body:
            msg = b"too large\n"
            s.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(msg) + msg)
            held.append(s)
            record("early " + path)
            return  # never read again, never closed
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                  b"Connection: close\r\n\r\nok\n")
        record("get " + path)
        s.close()
    except (ssl.SSLError, OSError) as e:
        record("failed %s" % e)


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
    threading.Thread(target=serve, args=(c,), daemon=True).start()
