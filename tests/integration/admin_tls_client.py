#!/usr/bin/env python3
"""TLS clients of the admin gate for admin_tls_mhd_shed.sh and admin_tls_stall.sh (a helper, not a
test: CTest runs *.sh).

idle PORT CA N OUT
    Opens N TLS connections to 127.0.0.1:PORT one after the other (each handshake complete,
    no request sent) and keeps them open until SIGTERM, watching how the server ends them.
    OUT (rewritten whole on each change): "opened=N open=K notify=A raw=B reset=C oldest=yes|no"
    notify: ended with a TLS close_notify; raw: TCP end without one; reset: RST;
    oldest: the ended ones are the first opened (give or take a few places).

stall PORT CA TOKEN COUNT OUT [resume]
    Connects with a small receive buffer, sends COUNT pipelined GET /metrics requests (the last
    with Connection: close) and reads nothing: the answers pile up in the kernel's buffers and
    the server's. OUT gets "sent", then "stalled BYTES" once the bytes waiting in our receive
    queue have stopped growing. With resume, it then waits for SIGUSR1 and reads all of it:
    OUT gets "answers WHOLE notify|raw|reset", WHOLE the number of 200 answers whole by their
    Content-Length, then how the connection ended.
"""
import os
import select
import signal
import socket
import ssl
import sys
import termios
import fcntl
import struct
import time


def ctx_of(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the certificate names localhost; we connect by address
    return ctx


def put(out, text):
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, out)


def how_ended(s):
    """Reads what is left on a non-blocking TLS socket: None while it is open."""
    try:
        while True:
            d = s.recv(4096)
            if d == b"":
                return "notify"
    except ssl.SSLWantReadError:
        return None
    except BlockingIOError:
        return None
    except ssl.SSLEOFError:
        return "raw"
    except (ConnectionResetError, ssl.SSLError, OSError):
        return "reset"


def idle(port, ca, n, out):
    ctx = ctx_of(ca)
    conns = []
    ended = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

    def report():
        k = len(ended)
        # libmicrohttpd's two threads may see two connections handed over together in either
        # order: "the oldest" allows a few places of slack
        oldest = not ended or max(ended) < k + 8
        counts = {w: sum(1 for v in ended.values() if v == w) for w in ("notify", "raw", "reset")}
        put(out, "opened=%d open=%d notify=%d raw=%d reset=%d oldest=%s" %
            (len(conns), len(conns) - k, counts["notify"], counts["raw"], counts["reset"],
             "yes" if oldest else "no"))

    def poll(timeout):
        live = [c for i, c in enumerate(conns) if i not in ended]
        if not live:
            return
        r, _, _ = select.select(live, [], [], timeout)
        for c in r:
            w = how_ended(c)
            if w:
                ended[conns.index(c)] = w

    for i in range(n):
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
        s = ctx.wrap_socket(raw, suppress_ragged_eofs=False)
        s.setblocking(False)
        conns.append(s)
        poll(0)
    report()
    last = None
    while not stop:
        poll(0.2)
        st = len(ended)
        if st != last:
            report()
            last = st
    report()


def stall(port, ca, token, count, out, resume):
    ctx = ctx_of(ca)
    go = []
    signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    raw.settimeout(60)
    raw.connect(("127.0.0.1", port))
    s = ctx.wrap_socket(raw, suppress_ragged_eofs=False)
    req = b""
    for i in range(count):
        req += ("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                "%s\r\n" % (token, "Connection: close\r\n" if i == count - 1 else "")).encode()
    s.sendall(req)
    put(out, "sent")

    def queued():
        b = fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", b)[0]

    # The answers have stopped coming in when our receive queue stays the same, checked every
    # 0.2 s, 10 times in a row (the server waits for room in our window).
    same, prev = 0, -1
    while same < 10:
        time.sleep(0.2)
        q = queued()
        same = same + 1 if q == prev and q > 0 else 0
        prev = q
    put(out, "stalled %d" % prev)
    while not go:
        signal.pause()  # without resume: till the test ends us
        if not resume:
            go.clear()
    data = bytearray()
    end = "reset"
    s.settimeout(60)
    try:
        while True:
            d = s.recv(65536)
            if d == b"":
                end = "notify"
                break
            data += d
    except ssl.SSLEOFError:
        end = "raw"
    except (OSError, ssl.SSLError):
        end = "reset"
    whole, at = 0, 0
    while True:
        h = data.find(b"\r\n\r\n", at)
        if h < 0:
            break
        lines = bytes(data[at:h]).split(b"\r\n")
        clen = None
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            if k.strip().lower() == b"content-length":
                clen = int(v.strip())
        if clen is None or h + 4 + clen > len(data) or b" 200 " not in lines[0]:
            break
        whole += 1
        at = h + 4 + clen
    put(out, "answers %d%s %s" % (whole, "" if at == len(data) else "+junk", end))


def main():
    a = sys.argv
    if a[1] == "idle":
        idle(int(a[2]), a[3], int(a[4]), a[5])
    elif a[1] == "stall":
        stall(int(a[2]), a[3], a[4], int(a[5]), a[6], len(a) > 7 and a[7] == "resume")
    else:
        sys.exit("usage: see the docstring")


if __name__ == "__main__":
    main()
