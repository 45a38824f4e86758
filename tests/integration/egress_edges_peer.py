#!/usr/bin/env python3
"""Helpers for egress_edges.sh: a raw HTTP/1.1 source whose answers are written byte by
byte (odd and broken ones included), and a raw client inside an intercepted tunnel.

server PORT LOG [CERT KEY]  source (TLS with CERT/KEY); every request head is appended to LOG
    /size       200, Content-Length: 1234 (no body for HEAD)
    /upgrade    101 Switching Protocols, then raw bytes
    /bare-lf    a header line ended by a bare LF
    /fold       an obs-fold continuation line
    /no-status  a line that is no status line
    /two-cl     two Content-Length fields
    /cl-te      Content-Length and Transfer-Encoding: chunked together
    /te-te      Transfer-Encoding: chunked, chunked
    /xchunked   Transfer-Encoding: xchunked
    /early      103 Early Hints, then 200 "ok early"
    /smuggle    200 "ok" with Content-Length, kept; 0.3 s later a second response nobody
                asked for ("EVIL"), then "SMUGGLED" in LOG
    /cap/len    200 with Content-Length: 5000
    /cap/close  5000 bytes, close-delimited
    /cap/chunk  5000 bytes in 1000-byte chunks
    /echo       200, the request head as the body
    else        200 "ok PATH"
smuggle PROXY PORT LOG [CA]   on one connection through PROXY: GET /smuggle, its answer, then (once
    LOG says SMUGGLED once more) GET /after-smuggle; prints both answers' bodies. With CA:
    inside an intercepted tunnel to localhost:PORT, verified against CA
tunnel PROXY PORT CA HEAD   CONNECT localhost:PORT through PROXY, TLS with SNI localhost
    verified against CA, sends HEAD (\\r\\n escapes, origin-form) and prints the answer's
    status line and X-Custos-Reason
"""
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
import egress_peerlib  # noqa: E402


def answer(c, head):
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    method, path = parts[0], parts[1] if len(parts) > 1 else b"/"
    head_only = method == b"HEAD"

    def send(body, extra=b""):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) +
                  (b"" if head_only else body))

    if path == b"/size":
        send(b"a" * 1234)
    elif path == b"/upgrade":
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\nRAW-FRAMES")
        return False
    elif path == b"/bare-lf":
        c.sendall(b"HTTP/1.1 200 OK\r\nX-A: b\nX-Injected: c\r\nContent-Length: 2\r\n\r\nok")
        return False
    elif path == b"/fold":
        c.sendall(b"HTTP/1.1 200 OK\r\nX-A: b\r\n X-Injected: c\r\nContent-Length: 2\r\n\r\nok")
        return False
    elif path == b"/no-status":
        c.sendall(b"just bytes, no status line\r\n\r\n")
        return False
    elif path == b"/two-cl":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello")
        return False
    elif path == b"/cl-te":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        return False
    elif path == b"/te-te":
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        return False
    elif path == b"/xchunked":
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        return False
    elif path == b"/early":
        c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        send(b"ok early")
    elif path == b"/smuggle":
        send(b"ok")
        # later than custos' read of the answer, so that only a check of the idle connection
        # before its reuse can see these bytes
        time.sleep(0.3)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
        with open(LOG, "ab") as f:
            f.write(b"SMUGGLED\n")
    elif path == b"/cap/len":
        send(b"y" * 5000)
    elif path == b"/cap/close":
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 5000)
        return False
    elif path == b"/cap/chunk":
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            c.sendall(b"3e8\r\n" + b"c" * 1000 + b"\r\n")
        c.sendall(b"0\r\n\r\n")
    elif path == b"/echo":
        send(head)
    else:
        send(b"ok " + path)
    return True


def serve(c, log):
    buf = b""
    try:
        while True:
            head, buf = egress_peerlib.recv_head(c, buf)
            if head is None:
                return
            with open(log, "ab") as f:
                f.write(head.split(b"\r\n\r\n")[0].replace(b"\r\n", b" | ") + b"\n")
            if not answer(c, head):
                return
    except OSError:
        pass
    finally:
        c.close()


LOG = None


def server(port, log, cert=None, key=None):
    global LOG
    LOG = log
    ctx = None
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        if ctx:
            try:
                c = ctx.wrap_socket(c, server_side=True)
            except (OSError, ssl.SSLError):
                c.close()
                continue
        threading.Thread(target=serve, args=(c, log), daemon=True).start()


def connect(proxy, host, port):
    ph, pp = proxy.rsplit(":", 1)
    s = socket.create_connection((ph, int(pp)), timeout=10)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port,
                                                                 host.encode(), port))
    head, _ = egress_peerlib.recv_head(s, b"")
    if head is None or b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit("CONNECT refused: %r" % head)
    return s


def tunnel(proxy, port, ca, head):
    s = connect(proxy, "localhost", port)
    ctx = ssl.create_default_context(cafile=ca)
    t = ctx.wrap_socket(s, server_hostname="localhost")
    t.sendall(head.encode().decode("unicode_escape").encode("latin-1"))
    got, _ = egress_peerlib.recv_head(t, b"")
    lines = (got or b"").decode("latin-1").split("\r\n")
    reason = [x.split(":", 1)[1].strip() for x in lines if x.lower().startswith("x-custos-reason:")]
    print(lines[0], "|", reason[0] if reason else "")


def read_answer(s, buf):
    head, buf = egress_peerlib.recv_head(s, buf)
    if head is None:
        raise SystemExit("no answer")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(buf) < n:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    return buf[:n], buf[n:]


def smuggle(proxy, port, log, ca=None):
    if ca:  # inside an intercepted tunnel to localhost:PORT, origin-form
        s = connect(proxy, "localhost", port)
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
        req = b"GET %%s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % port
    else:
        ph, pp = proxy.rsplit(":", 1)
        s = socket.create_connection((ph, int(pp)), timeout=20)
        req = b"GET http://127.0.0.1:%d%%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (port, port)
    def smuggled():
        with open(log, "rb") as f:
            return f.read().count(b"SMUGGLED\n")
    before = smuggled()
    s.sendall(req % b"/smuggle")
    body, buf = read_answer(s, b"")
    end = time.time() + 30
    while smuggled() == before and time.time() < end:
        time.sleep(0.05)
    s.sendall(req % b"/after-smuggle")
    body2, _ = read_answer(s, buf)
    print((body + b" " + body2).decode("latin-1"))


def main():
    cmd = sys.argv[1]
    if cmd == "server":
        server(int(sys.argv[2]), sys.argv[3], *sys.argv[4:6])
    elif cmd == "smuggle":
        smuggle(sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:6])
    elif cmd == "tunnel":
        tunnel(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])


if __name__ == "__main__":
    main()
