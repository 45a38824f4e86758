#!/usr/bin/env python3
"""Fixture for egress_relay.sh: both ends of a CONNECT tunnel through custos, with raw bytes
after a real-looking TLS ClientHello (custos checks its SNI, then relays opaque bytes).

  egress_relay_peer.py server PORT STATE     upstream on PORT (0: any free one), the port it
                                             listens on written to STATE.port; counts
                                             connections in STATE.conns; after
                                             the ClientHello a command byte says what to do:
                                             S sink to EOF, answer "got N", close
                                             F<8-byte n> send n bytes (progress in STATE.sent)
                                             I idle until the peer goes away
                                             anything else: a minimal HTTP server counting
                                             requests in STATE.reqs
  egress_relay_peer.py sink PROXY HOST PORT N       tunnel, send N bytes, half-close, print reply
  egress_relay_peer.py flood PROXY HOST PORT N PAUSE STATE
                                             tunnel, ask for N bytes, read nothing for PAUSE s,
                                             print the peer's progress then, then read all and
                                             print the byte count received
  egress_relay_peer.py idle PROXY HOST PORT T       tunnel, then wait up to T s for custos to
                                             close it: prints "closed" or "open"
  egress_relay_peer.py hold PROXY HOST PORT N READY SECS
                                             opens N tunnels, touches READY, keeps them busy
                                             for SECS s
  egress_relay_peer.py connect PROXY HOST PORT      prints custos' answer to a CONNECT (status)
"""
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egress_peerlib import client_hello, connect, recv_exact, serve, write_file  # noqa: E402

def bump(path, k=1):
    with lock:
        try:
            v = int(open(path).read() or 0)
        except (FileNotFoundError, ValueError):
            v = 0
        write_file(path, str(v + k))


lock = threading.Lock()


def serve_conn(c, state):
    try:
        first = recv_exact(c, 5)
        if first[0] != 0x16:  # plain HTTP: count requests, answer, keep alive
            data = first
            while True:
                while b"\r\n\r\n" not in data:
                    d = c.recv(65536)
                    if not d:
                        return
                    data += d
                _, data = data.split(b"\r\n\r\n", 1)
                bump(state + ".reqs")
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        recv_exact(c, struct.unpack("!H", first[3:5])[0])
        cmd = recv_exact(c, 1)
        if cmd == b"S":
            n = 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
            c.sendall(b"got %d\n" % n)
        elif cmd == b"F":
            n = struct.unpack("!Q", recv_exact(c, 8))[0]
            chunk = b"f" * 65536
            sent = 0
            while sent < n:
                k = c.send(chunk[: min(len(chunk), n - sent)])
                sent += k
                write_file(state + ".sent", str(sent))
        elif cmd == b"I":
            while c.recv(65536):
                pass
    except (EOFError, OSError):
        pass
    finally:
        c.close()


def server(port, state):
    serve(port, state, 64, serve_conn, state, on_accept=lambda: bump(state + ".conns"))


def tunnel(proxy, host, port):
    s, head = connect(proxy, host, port)
    status = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 1 else "none"
    if status == "200":
        s.sendall(client_hello(host))
    return s, status


def main():
    cmd = sys.argv[1]
    if cmd == "server":
        server(int(sys.argv[2]), sys.argv[3])
    elif cmd == "connect":
        s, st = tunnel(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        print(st)
    elif cmd == "sink":
        s, st = tunnel(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        n = int(sys.argv[5])
        s.sendall(b"S")
        block = b"s" * 65536
        left = n
        while left:
            k = s.send(block[: min(left, len(block))])
            left -= k
        s.shutdown(socket.SHUT_WR)  # half-close: the reply must still come back
        s.settimeout(20)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        print(out.decode().strip())
    elif cmd == "flood":
        s, st = tunnel(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        n, pause, state = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"F" + struct.pack("!Q", n))
        time.sleep(pause)
        try:
            print(open(state + ".sent").read())
        except FileNotFoundError:
            print(0)
        s.settimeout(30)
        got = 0
        while got < n:
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
        print(got)
    elif cmd == "idle":
        s, st = tunnel(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        s.sendall(b"I")
        s.settimeout(float(sys.argv[5]))
        try:
            while s.recv(65536):
                pass
            print("closed")
        except socket.timeout:
            print("open")
        except OSError:
            print("closed")
    elif cmd == "hold":
        socks = []
        for _ in range(int(sys.argv[5])):
            s, st = tunnel(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
            s.sendall(b"I")
            socks.append((s, st))
        print(" ".join(st for _, st in socks))
        sys.stdout.flush()
        open(sys.argv[6], "w").close()
        end = time.monotonic() + float(sys.argv[7])
        while time.monotonic() < end:  # a byte now and then: not idle
            for s, _ in socks:
                s.sendall(b"k")
            time.sleep(0.2)


if __name__ == "__main__":
    main()
