#!/usr/bin/env python3
"""Fixture for egress_batch.sh: a data source and clients that put many small writes and
pipelined requests into the egress loops at once, checking every byte and its order.

  server PORT STATE            source on PORT (0: any free one; the port it got written to
                               STATE.port). A connection opening with a TLS record (0x16) is a
                               tunnel: after the ClientHello every byte is echoed back, and the
                               source half-closes once the client did (then closes). Anything
                               else is HTTP/1.1: each request is answered 200 with the body
                               "PATH|BODY" (its request body, Content-Length), kept alive unless
                               the request says Connection: close.
  fwd PROXY PORT C R           C connections at once, each writing R absolute-URI requests
                               (every third a POST with a body, the last one Connection:
                               close) as one pipeline cut into 7-byte writes; each must get R
                               answers, its own and in order, then the end of the stream.
                               Prints the number of failures and the first few.
  tunnel PROXY PORT C W        C CONNECT tunnels at once, each writing W numbered records in
                               W writes (a thread reads meanwhile), then half-closing: each
                               must read back exactly what it wrote, then the end of the stream.
                               Prints the number of failures and the first few.
"""
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egress_peerlib import client_hello, connect, in_parallel, recv_exact, serve  # noqa: E402
from pyhttp import read_head, read_response  # noqa: E402


def serve_conn(c):
    try:
        first = recv_exact(c, 5)
        if first[0] == 0x16:  # a tunnel: echo after the ClientHello, half-close after the client
            recv_exact(c, struct.unpack("!H", first[3:5])[0])
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
            return
        buf = first
        while True:
            line, hdrs, buf = read_head(c, buf)
            n = int(hdrs.get("content-length", "0"))
            buf = recv_exact(c, n, buf)
            body, buf = buf[:n], buf[n:]
            out = line.split(" ")[1].encode() + b"|" + body
            close = hdrs.get("connection", "").lower() == "close"
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" %
                      (len(out), b"Connection: close\r\n" if close else b"", out))
            if close:
                return
    except (EOFError, OSError):
        pass
    finally:
        c.close()


def fwd_one(i, proxy, port, reqs, fails):
    try:
        c = socket.create_connection(("127.0.0.1", proxy))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(60)
        pipe, want = b"", []
        for j in range(reqs):
            path = b"/c%dr%d" % (i, j)
            last = j == reqs - 1
            body = b"body-%d-%d-" % (i, j) * (j % 7 + 1) if j % 3 == 2 else b""
            pipe += b"%s http://localhost:%d%s HTTP/1.1\r\nHost: localhost:%d\r\n" % (
                b"POST" if body else b"GET", port, path, port)
            if body:
                pipe += b"Content-Length: %d\r\n" % len(body)
            if last:
                pipe += b"Connection: close\r\n"
            pipe += b"\r\n" + body
            want.append(path + b"|" + body)
        for k in range(0, len(pipe), 7):  # many small writes: many reads in one batch
            c.sendall(pipe[k:k + 7])
        rest = b""
        for j in range(reqs):
            st, body, rest = read_response(c, rest)
            if st != 200 or body != want[j]:
                fails.append((i, j, st, body[:60]))
                return
        tail = rest + c.recv(65536)
        if tail:
            fails.append((i, "bytes after the last answer", tail[:60]))
        c.close()
    except Exception as e:  # noqa: BLE001 - any failure counts
        fails.append((i, repr(e)))


def tunnel_one(i, proxy, port, writes, fails):
    try:
        s, head = connect(proxy, "localhost", port, timeout=60, nodelay=True)
        if not head.startswith(b"HTTP/1.1 200") or not head.endswith(b"\r\n\r\n"):
            raise ValueError("CONNECT answered %r" % head[:40])
        s.sendall(client_hello("localhost"))
        got = bytearray()
        err = []

        def reader():
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        return
                    got.extend(d)
            except Exception as e:  # noqa: BLE001
                err.append(repr(e))

        t = threading.Thread(target=reader)
        t.start()
        sent = bytearray()
        for j in range(writes):
            rec = b"t%dw%d;" % (i, j)
            s.sendall(rec)
            sent += rec
        s.shutdown(socket.SHUT_WR)  # half-close: everything must still come back, then EOF
        t.join(90)
        if t.is_alive():
            fails.append((i, "no end of stream", len(got), len(sent)))
        elif err:
            fails.append((i, err[0]))
        elif got != sent:
            k = next((x for x in range(min(len(got), len(sent))) if got[x] != sent[x]),
                     min(len(got), len(sent)))
            fails.append((i, "got %d of %d bytes, first difference at %d" %
                          (len(got), len(sent), k), bytes(got[k:k + 30])))
        s.close()
    except Exception as e:  # noqa: BLE001 - any failure counts
        fails.append((i, repr(e)))


def main():
    cmd = sys.argv[1]
    if cmd == "server":
        serve(int(sys.argv[2]), sys.argv[3], 256, serve_conn)
        return
    proxy, port, conns, n = (int(a) for a in sys.argv[2:6])
    fails = []
    fn = fwd_one if cmd == "fwd" else tunnel_one
    in_parallel(conns, fn, proxy, port, n, fails)
    print(len(fails), fails[:3])


if __name__ == "__main__":
    main()
