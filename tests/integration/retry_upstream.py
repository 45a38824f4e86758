#!/usr/bin/env python3
"""Fixture for proxy_retry.sh: an upstream that fails on purpose, one scripted action per
request, to show when custos retries and when it must not.

  retry_upstream.py PORTFILE LOGFILE [--tls CERT KEY] PLAN...

PLAN k is a comma-separated list of actions for the requests of the k-th connection accepted
(connections past the plans, and requests past a plan's list, are served). Actions:
  serve        read the whole request, answer 200 (keep-alive)
  close        read the whole request, close without answering
  rst-partial  read the head and at most 1000 body bytes, reset the connection (RST)
  early-413    read the head only, answer 413 (keep-alive) at once, wait 1 s, then read what
               comes until EOF or 3 s and log whether the peer closed
  tls-abort    (with --tls) read the ClientHello, close before answering it
The receive buffer is small (4 KiB), so a large body is still being sent when a request fails.
LOGFILE gets one line per event: "conn K", "req K I METHOD PATH BODY_BYTES_READ ACTION",
"drain K BYTES eof|open".
"""
import os
import socket
import ssl
import struct
import sys
import threading
import time

lock = threading.Lock()
conns = 0


def log(logf, line):
    with lock:
        with open(logf, "a") as f:
            f.write(line + "\n")


def recv_head(s, pending):
    while b"\r\n\r\n" not in pending:
        d = s.recv(65536)
        if not d:
            return None, pending
        pending += d
    head, rest = pending.split(b"\r\n\r\n", 1)
    return head, rest


def handle(s, k, plan, logf, ctx):
    if ctx is not None:
        if plan and plan[0] == "tls-abort":
            s.recv(4096)  # the ClientHello
            log(logf, "req %d 1 - - 0 tls-abort" % k)
            s.close()
            return
        s = ctx.wrap_socket(s, server_side=True)
    pending = b""
    i = 0
    while True:
        i += 1
        act = plan[i - 1] if i <= len(plan) else "serve"
        head, pending = recv_head(s, pending)
        if head is None:
            s.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        clen = 0
        for h in lines[1:]:
            name, _, v = h.partition(":")
            if name.strip().lower() == "content-length":
                clen = int(v.strip())
        if act == "rst-partial":
            got = len(pending)
            while got < min(clen, 1000):
                d = s.recv(1000 - got)
                if not d:
                    break
                got += len(d)
            log(logf, "req %d %d %s %s %d %s" % (k, i, method, path, min(got, 1000), act))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            return
        if act == "early-413":
            log(logf, "req %d %d %s %s %d %s" % (k, i, method, path, len(pending), act))
            s.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
            time.sleep(1)
            s.settimeout(30)  # custos closes at once; the bound is for a loaded machine
            n, eof = len(pending), "open"
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        eof = "eof"
                        break
                    n += len(d)
            except (socket.timeout, ConnectionError):
                pass
            log(logf, "drain %d %d %s" % (k, n, eof))
            s.close()
            return
        while len(pending) < clen:
            d = s.recv(65536)
            if not d:
                break
            pending += d
        got = min(len(pending), clen)
        pending = pending[clen:]
        log(logf, "req %d %d %s %s %d %s" % (k, i, method, path, got, act))
        if act == "close":
            s.close()
            return
        body = b'{"object":"ok","conn":%d,"req":%d}' % (k, i)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def main():
    global conns
    portfile, logf = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    ctx = None
    if args[:1] == ["--tls"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[1], args[2])
        args = args[3:]
    plans = [p.split(",") for p in args]
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(tmp, portfile)
    while True:
        s, _ = ls.accept()
        conns += 1
        log(logf, "conn %d" % conns)
        plan = plans[conns - 1] if conns <= len(plans) else []
        threading.Thread(target=handle, args=(s, conns, plan, logf, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
