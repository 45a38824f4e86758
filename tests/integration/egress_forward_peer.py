#!/usr/bin/env python3
"""Helpers for egress_forward.sh: a raw HTTP/1.1 source and raw forward-proxy clients.

server PORT STATE        source on PORT (0: any free one; the port it listens on is written
                         to STATE.port): /echo/X (body "X", keep-alive), /big/N (N bytes,
                         counted in STATE.sent), /len (the request body's length), /slow (no
                         answer: waits until the client gives up and closes); every path
                         logged to STATE.log
pipeline PROXY PORT N    N absolute-URI GETs in one write on one connection; prints the bodies
flood PROXY PORT N PAUSE STATE  GET /big/N, read nothing for PAUSE s; prints bytes the source
                         had sent by then, then the bytes received
abandon PROXY PORT N K   GET /big/N, read K bytes, close; prints K
many PROXY PORT C R      C connections x R keep-alive GETs each in parallel; prints failures
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egress_peerlib import in_parallel, serve, write_file  # noqa: E402

def recv_head(s, buf=b""):
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed in head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def read_response(s, buf=b""):
    """One response (Content-Length or chunked); returns (status, body, leftover)."""
    head, rest = recv_head(s, buf)
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        # A bytearray: `bytes += chunk` copies everything so far on every recv, quadratic in
        # a 48 MiB body, and on a loaded machine slow enough to stall the transfer past the
        # proxy's read timeout (the client, not the proxy, was what stopped).
        acc = bytearray(rest)
        while len(acc) < n:
            d = s.recv(65536)
            if not d:
                raise EOFError("closed in body")
            acc += d
        return status, bytes(acc[:n]), bytes(acc[n:])
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            line, rest = rest.split(b"\r\n", 1)
            n = int(line.split(b";")[0], 16)
            while len(rest) < n + 2:
                rest += s.recv(65536)
            body += rest[:n]
            rest = rest[n + 2:]
            if n == 0:
                return status, body, rest
    return status, b"", rest


def bump(path, k):
    """Writes k to path as one step: a reader never sees the file empty or half written."""
    write_file(path, str(k))


def read_body(c, buf, n):
    """Reads until buf holds n bytes; returns them as a bytearray (appending to bytes copies
    everything so far on every recv: quadratic in a 4 MiB body, and slow enough on a loaded
    machine that the proxy's read timeout ran out before the response)."""
    acc = bytearray(buf)
    while len(acc) < n:
        d = c.recv(65536)
        if not d:
            raise EOFError("closed in body")
        acc += d
    return acc


def serve_conn(c, state):
    buf = b""
    try:
        while True:
            head, buf = recv_head(c, buf)
            path = head.split("\r\n")[0].split()[1]
            with open(state + ".log", "a") as f:
                f.write(path + "\n")
            if path.startswith("/echo/"):
                body = path[6:].encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            elif path.startswith("/big/"):
                n = int(path[5:])
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                block = b"b" * 65536
                sent = 0
                while sent < n:
                    k = c.send(block[: min(len(block), n - sent)])
                    sent += k
                    bump(state + ".sent", sent)
            elif path == "/len":
                hl = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                      for ln in head.split("\r\n")[1:] if ":" in ln}
                if "content-length" in hl:
                    n = int(hl["content-length"])
                    got, buf = n, bytes(read_body(c, buf, n)[n:])
                else:
                    got = 0
                    while True:
                        while b"\r\n" not in buf:
                            d = c.recv(65536)
                            if not d:
                                raise EOFError("closed in chunk size")
                            buf += d
                        line, buf = buf.split(b"\r\n", 1)
                        n = int(line.split(b";")[0], 16)
                        acc = read_body(c, buf, n + 2)
                        got += n
                        buf = bytes(acc[n + 2:])
                        if n == 0:
                            break
                body = str(got).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            elif path == "/slow":  # silent until the client (the proxy, timing out) closes
                c.settimeout(120)
                while c.recv(65536):
                    pass
            else:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except (OSError, EOFError):
        pass
    finally:
        c.close()


def server(port, state):
    serve(port, state, 256, serve_conn, state)


def get(path, port):
    return b"GET http://localhost:%d%s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (port, path, port)


def main():
    cmd = sys.argv[1]
    if cmd == "server":
        server(int(sys.argv[2]), sys.argv[3])
        return
    proxy, port = int(sys.argv[2]), int(sys.argv[3])
    s = socket.create_connection(("127.0.0.1", proxy))
    s.settimeout(30)
    if cmd == "pipeline":
        n = int(sys.argv[4])
        s.sendall(b"".join(get(b"/echo/r%d" % i, port) for i in range(n)))
        rest, out = b"", []
        for _ in range(n):
            st, body, rest = read_response(s, rest)
            out.append("%d:%s" % (st, body.decode()))
        print(" ".join(out))
    elif cmd == "flood":
        n, pause, state = int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(get(b"/big/%d" % n, port))
        # Once the source has begun (a loaded machine may take a while), `pause` without reading:
        # what it managed to send by then is what the buffers on the way held.
        for _ in range(400):
            try:
                with open(state + ".sent") as f:
                    if int(f.read().strip() or 0) > 0:
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        time.sleep(pause)
        with open(state + ".sent") as f:
            print(f.read().strip())
        st, body, _ = read_response(s)
        print(len(body))
    elif cmd == "abandon":
        n, k = int(sys.argv[4]), int(sys.argv[5])
        s.sendall(get(b"/big/%d" % n, port))
        got = 0
        while got < k:
            d = s.recv(65536)
            if not d:
                break
            got += len(d)
        s.close()
        print(k if got >= k else got)
    elif cmd == "many":
        s.close()
        conns, reqs = int(sys.argv[4]), int(sys.argv[5])
        fails = []

        def one(i):
            try:
                c = socket.create_connection(("127.0.0.1", proxy))
                c.settimeout(30)
                rest = b""
                for j in range(reqs):
                    c.sendall(get(b"/echo/c%dr%d" % (i, j), port))
                    st, body, rest = read_response(c, rest)
                    if st != 200 or body != b"c%dr%d" % (i, j):
                        fails.append((i, j, st, body[:40]))
                c.close()
            except Exception as e:  # noqa: BLE001 - any failure counts
                fails.append((i, repr(e)))

        in_parallel(conns, one)
        print(len(fails), fails[:3])


if __name__ == "__main__":
    main()
