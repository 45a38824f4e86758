"""Shared by the egress tests' Python peers (egress_batch_peer.py, egress_forward_peer.py,
egress_relay_peer.py): a loopback server that reports the port it bound, clients in parallel
threads, exact reads, and a
CONNECT tunnel through the egress listener opened with a real-looking TLS ClientHello (custos
checks its SNI, then relays opaque bytes)."""
import os
import socket
import struct
import threading


def write_file(path, text):
    """Writes text to path as one step (a rename): a reader never sees it empty or half written."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def serve(port, state, backlog, handle, *args, on_accept=None):
    """Listens on 127.0.0.1:PORT (0: any free one), writes the port it got to STATE.port, then
    runs handle(conn, *args) in a thread of its own for every connection (on_accept(), if
    given, first, in the accepting thread). Never returns."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(backlog)
    write_file(state + ".port", str(ls.getsockname()[1]))
    while True:
        c, _ = ls.accept()
        if on_accept:
            on_accept()
        threading.Thread(target=handle, args=(c,) + args, daemon=True).start()


def in_parallel(n, fn, *args):
    """Runs fn(i, *args) for i in 0..n-1, each in a thread of its own; returns once all ended."""
    ts = [threading.Thread(target=fn, args=(i,) + args) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def recv_head(c, buf):
    """Reads a request or response head: (the head with its blank line, what came after it),
    or (None, buf) when the peer closes first."""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return None, buf
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def recv_exact(s, n, buf=b""):
    """Reads until buf holds n bytes, never past the n-th; returns buf (longer than n only when
    it already was). EOFError when the peer closes first."""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def client_hello(host):
    """A TLS 1.3 ClientHello record naming HOST (SNI)."""
    name = host.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    ext = struct.pack("!HH", 0, len(sni)) + sni
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01" +
            b"\x01\x00" + struct.pack("!H", len(ext)) + ext)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def connect(proxy, host, port, timeout=None, nodelay=False):
    """CONNECT HOST:PORT through the egress listener on 127.0.0.1:PROXY; returns the socket and
    the answer's head, read a byte at a time (nothing after it is consumed), cut short where
    the proxy closed. TIMEOUT and TCP_NODELAY are set before the request is sent."""
    s = socket.create_connection(("127.0.0.1", proxy))
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port,
                                                                    host.encode(), port))
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    return s, head
