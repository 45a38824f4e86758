#!/usr/bin/env python3
"""Client side of egress_refusals_audited.sh: requests the egress proxy must refuse, each
written by hand on a raw socket (curl cannot send a head and stop). Usage:
  egress_refusals_client.py PROXY_PORT CASE [ARG] [HOST PORT CAFILE]
CASE:
  cut          a plain request head cut off by the client (half-close after half a head)
  slow         a plain request head that never ends: prints the proxy's status line (408)
  trickle      a plain request head sent a byte every 0.2 s (600 bytes at most): prints the
               answer's status line and "while trickling" when it came before the client
               ran out of bytes
  send BYTES   BYTES (Python escapes: \\r\\n; {big} is 40 KiB of a header) sent as they are
  early H P    a CONNECT to H:P with bytes sent behind it before its answer
  icpt-send BYTES H P CAFILE   BYTES inside an intercepted tunnel to H:P (custos' CA CAFILE)
  icpt-cut H P CAFILE          inside an intercepted tunnel, a head cut off by the client
Prints what came back (the first line, or "closed")."""
import socket
import ssl
import sys


def first_line(read):
    buf = b""
    while b"\r\n" not in buf:
        try:
            d = read(4096)
        except (ConnectionError, ssl.SSLError, socket.timeout):
            break
        if not d:
            break
        buf += d
    return buf.split(b"\r\n", 1)[0].decode("latin-1") if buf else "closed"


def payload(arg):
    big = "X-Big: " + "a" * 40960 + "\\r\\n"
    return arg.replace("{big}", big).encode("latin-1").decode("unicode_escape").encode("latin-1")


def main():
    port, case = int(sys.argv[1]), sys.argv[2]
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    if case in ("cut", "slow"):
        s.sendall(b"GET http://localhost/refusal-mark HTTP/1.1\r\nHost: loc")
        if case == "cut":
            s.shutdown(socket.SHUT_WR)
        print(first_line(s.recv))
        return
    if case == "trickle":
        import select
        import time
        s.sendall(b"GET http://localhost/refusal-trickle HTTP/1.1\r\nX-Slow: ")
        for _ in range(600):
            if select.select([s], [], [], 0)[0]:
                print(first_line(s.recv) + " while trickling")
                return
            try:
                s.sendall(b"a")
            except OSError:
                print(first_line(s.recv) + " while trickling")
                return
            time.sleep(0.2)
        print("no answer while trickling")
        return
    if case == "send":
        s.sendall(payload(sys.argv[3]))
        print(first_line(s.recv))
        return
    if case == "early":
        host, hport = sys.argv[3], int(sys.argv[4])
        s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n\x16\x03\x01" % (
            host.encode(), hport, host.encode(), hport))
        print(first_line(s.recv))
        return
    data = payload(sys.argv[3]) if case == "icpt-send" else b""
    args = sys.argv[4:] if case == "icpt-send" else sys.argv[3:]
    host, hport, cafile = args[0], int(args[1]), args[2]
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), hport,
                                                                host.encode(), hport))
    line = first_line(lambda n: s.recv(1))  # byte by byte: nothing past the answer's head
    while True:  # the rest of the CONNECT answer's head
        rest = b""
        while not rest.endswith(b"\r\n"):
            rest += s.recv(1)
        if rest == b"\r\n":
            break
    if not line.startswith("HTTP/1.1 200"):
        print("CONNECT answered: " + line)
        return
    ctx = ssl.create_default_context(cafile=cafile)
    t = ctx.wrap_socket(s, server_hostname=host)
    if case == "icpt-send":
        t.sendall(data)
        print(first_line(t.recv))
    else:
        t.sendall(b"GET /x HTTP/1.1\r\nHo")
        try:
            raw = t.unwrap()  # close_notify: the end of the client's stream
        except (OSError, ssl.SSLError):
            print("closed")
            return
        print(first_line(raw.recv))


if __name__ == "__main__":
    main()
