#!/usr/bin/env python3
"""Fixture for admin_tls.sh: both sides of how an https answer ends, with TLS records under this
script's control (ssl.SSLObject over memory BIOs, so that it closes the TCP connection with or
without a close_notify exactly as told).

  ctl_tls_fixture.py server CERT KEY PORTFILE
      A TLS server on 127.0.0.1 (a free port, written to PORTFILE) standing in for the admin
      API; each connection reads one request and answers by its path, then closes the TCP
      connection WITHOUT a close_notify unless the path says otherwise:
        /healthz          Content-Length, whole            (ctl: 0)
        /readyz           Content-Length, body cut short   (ctl: 1, cut short)
        /metrics          chunked, whole                   (ctl: 0)
        /v1/sandboxes     chunked, no last chunk           (ctl: 1, cut short)
        /v1/audit/status  no length (to EOF), no close_notify   (ctl: 1, may be cut short)
        /v1/policy        no length (to EOF), close_notify      (ctl: 0)
  ctl_tls_fixture.py client PORT CAFILE PATH TOKEN
      GETs PATH from the admin API at 127.0.0.1:PORT (Connection: close), reads to the end and
      prints the status line and "close_notify" or "no close_notify": how the server ended.
"""
import socket
import ssl
import sys

BODY = b'{"status":"ok"}'
ANSWERS = {
    b"/healthz": (b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY, False),
    b"/readyz": (b"Content-Length: %d\r\n\r\n" % (len(BODY) + 10) + BODY, False),
    b"/metrics": (b"Transfer-Encoding: chunked\r\n\r\n5\r\n" + BODY[:5] + b"\r\n%x\r\n" % (len(BODY) - 5)
                  + BODY[5:] + b"\r\n0\r\n\r\n", False),
    b"/v1/sandboxes": (b"Transfer-Encoding: chunked\r\n\r\n5\r\n" + BODY[:5] + b"\r\n", False),
    b"/v1/audit/status": (b"\r\n" + BODY, False),
    b"/v1/policy": (b"\r\n" + BODY, True),
}


class Tls:
    """One TLS connection over a socket, records moved by hand."""

    def __init__(self, sock, ctx, server_side, host=None):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side, server_hostname=host)

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def more(self):
        data = self.sock.recv(65536)
        if not data:
            self.inc.write_eof()
        else:
            self.inc.write(data)
        return bool(data)

    def call(self, fn, *args):
        while True:
            try:
                r = fn(*args)
                self.flush()
                return r
            except ssl.SSLWantReadError:
                self.flush()
                if not self.more():
                    raise EOFError("EOF")


def server(cert, key, portfile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    import os
    os.rename(portfile + ".tmp", portfile)
    while True:
        s, _ = ls.accept()
        try:
            t = Tls(s, ctx, True)
            t.call(t.obj.do_handshake)
            req = b""
            while b"\r\n\r\n" not in req:
                req += t.call(t.obj.read, 65536)
            path = req.split(b" ")[1]
            body, notify = ANSWERS.get(path, (b"Content-Length: 0\r\n\r\n", True))
            t.obj.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + body)
            t.flush()
            if notify:
                try:
                    t.obj.unwrap()
                except ssl.SSLWantReadError:
                    pass  # ours is sent; the client's is not waited for
                t.flush()
            s.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, ssl.SSLError) as e:
            print("fixture: %s" % e, file=sys.stderr)
        finally:
            s.close()


def client(port, cafile, path, token):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    ctx.check_hostname = False
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
    t = Tls(s, ctx, False)
    t.call(t.obj.do_handshake)
    t.obj.write(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
                 % (path, token)).encode())
    t.flush()
    got, how = b"", "?"
    while True:
        try:
            data = t.call(t.obj.read, 65536)
        except ssl.SSLZeroReturnError:
            how = "close_notify"
            break
        except (ssl.SSLEOFError, EOFError):
            how = "no close_notify"
            break
        if not data:
            how = "close_notify"
            break
        got += data
    print(got.split(b"\r\n")[0].decode(errors="replace"))
    print(how)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(*sys.argv[2:5])
    elif sys.argv[1] == "client":
        client(*sys.argv[2:6])
    else:
        sys.exit("usage: see the docstring")
