#!/usr/bin/env python3
"""Data source of egress_refusals_audited.sh that fails on purpose, by the request's path:
  /cut-head   half a response head, then the connection closed
  /cut-body   Content-Length 100, 10 bytes of it, then closed
  /bad-chunk  a chunked body whose first chunk size is not hex
  /big-head   a response head past 32 KiB
  /stall-body Content-Length 100, 10 bytes of it, then nothing (until the proxy closes)
Usage: egress_refusals_origin.py PORTFILE (the port it bound written there once it listens)."""
import os
import socket
import sys
import threading

ANSWERS = {
    "/cut-head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "/cut-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "/stall-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    "/big-head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 40960 + b"\r\nContent-Length: 0\r\n\r\n",
}


def serve(c):
    with c:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        target = buf.split(b" ", 2)[1].decode("latin-1")
        path = target.split("?", 1)[0]
        c.sendall(ANSWERS.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        try:
            if path != "/stall-body":
                c.shutdown(socket.SHUT_WR)
            while c.recv(4096):
                pass
        except OSError:
            pass


def main():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(tmp, sys.argv[1])
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
