#!/usr/bin/env python3
"""A stalling SIEM peer (fixture) for tests/integration/audit_sink_stall.sh.

sink_stall_fixture.py MODE PORTFILE

Listens on 127.0.0.1 (the port it bound written to PORTFILE) and, on each connection:
- tls-trickle: reads the ClientHello, then answers a TLS handshake record header announcing
  16 KiB and sends its body one byte every 0.5 s: the handshake never ends, and the client
  never waits 10 s for a byte.
- tcp-trickle: a syslog receiver with a small receive buffer that reads 512 bytes every 0.1 s
  (5 KiB/s): every write of the client makes progress, slowly.
- tcp-slow: the same reading 4 KiB every 50 ms (80 KiB/s).
Each connection accepted appends a line to PORTFILE.conns.
"""
import socket, sys, threading, time

mode, portfile = sys.argv[1], sys.argv[2]


def tls_trickle(c):
    c.recv(65536)
    c.sendall(b"\x16\x03\x03\x40\x00")
    while True:
        c.sendall(b"\x02")
        time.sleep(0.5)


def tcp_trickle(c):
    while c.recv(512):
        time.sleep(0.1)


def tcp_slow(c):
    while c.recv(4096):
        time.sleep(0.05)


def serve(c):
    try:
        {"tls-trickle": tls_trickle, "tcp-trickle": tcp_trickle, "tcp-slow": tcp_slow}[mode](c)
    except OSError:
        pass
    finally:
        c.close()


ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets
ls.bind(("127.0.0.1", 0))
ls.listen(8)
with open(portfile, "w") as f:
    f.write(str(ls.getsockname()[1]))
while True:
    c, _ = ls.accept()
    with open(portfile + ".conns", "a") as f:
        f.write("conn\n")
    threading.Thread(target=serve, args=(c,), daemon=True).start()
