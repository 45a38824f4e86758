#!/usr/bin/env python3
"""bench/proxy helper: opens N TLS keep-alive connections to 127.0.0.1:PORT, sends one request
on each (so each is a used, idle keep-alive connection), prints "ready" and holds them for
HOLD seconds. Usage: idle_tls.py PORT N BEARER HOLD"""
import socket
import ssl
import sys
import time

port, n, key, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conns = []
req = ("GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n" % key).encode()
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    conns.append(s)
print("ready", len(conns), flush=True)
time.sleep(hold)
