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


def hello(host):
    name = host.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    ext = struct.pack("!HH", 0, len(sni)) + sni
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01" +
            b"\x01\x00" + struct.pack("!H", len(ext)) + ext)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def recv_exact(s, n, buf=b""):
    while len(buf) < n:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def head_of(s, buf):
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed in a head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs, rest


def serve_conn(c):
    try:
        first = recv_exact(c, 5)
        if first[0] == 0x16:  # a tunnel: echo after the ClientHello, half-close after the client
            n = struct.unpack("!H", first[3:5])[0]
            rest = recv_exact(c, 5 + n, first)[5 + n:]
            if rest:
                c.sendall(rest)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
            return
        buf = first
        while True:
            line, hdrs, buf = head_of(c, buf)
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


def server(port, state):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(256)
    with open(state + ".port.tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.replace(state + ".port.tmp", state + ".port")
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()


def read_response(s, buf):
    line, hdrs, rest = head_of(s, buf)
    n = int(hdrs["content-length"])
    rest = recv_exact(s, n, rest)
    return int(line.split(" ")[1]), rest[:n], rest[n:]


def fwd_one(proxy, port, i, reqs, fails):
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


def tunnel_one(proxy, port, i, writes, fails):
    try:
        s = socket.create_connection(("127.0.0.1", proxy))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(60)
        s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (port, port))
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            if not d:
                raise EOFError("closed before the CONNECT answer")
            head += d
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError("CONNECT answered %r" % head[:40])
        s.sendall(hello("localhost"))
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
        server(int(sys.argv[2]), sys.argv[3])
        return
    proxy, port, conns, n = (int(a) for a in sys.argv[2:6])
    fails = []
    fn = fwd_one if cmd == "fwd" else tunnel_one
    ts = [threading.Thread(target=fn, args=(proxy, port, i, n, fails)) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(len(fails), fails[:3])


if __name__ == "__main__":
    main()
