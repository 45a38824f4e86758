#!/usr/bin/env python3
"""Clients of the admin API for admin_refusals_audited.sh (a helper, not a test: CTest runs *.sh).

admin_refusals_client.py tcp PORT CASE PATH [TOKEN]
admin_refusals_client.py unix SOCKET CASE PATH [TOKEN]
admin_refusals_client.py tls PORT CASE PATH [TOKEN] CA

Sends one request of CASE with request-target PATH, then reads until the server closes the
connection (60 s bound a hang only). Prints "status N" (the answer's status, "none" when the
server closed without one, "reset" when the connection was reset before one came), then
"closed". Cases:
  big      a field of 70000 bytes: over the 64 KiB of connection memory (431)
  field    a field line without a colon (400)
  version  the request line of HTTP/2.0 (505)
  nospace  a request line without a space (libmicrohttpd closes without an answer)
  probe    connects and closes at once, sending nothing
  slow     a request line, then one byte of a field every 0.2 s until the server closes
  idle     nothing at all, until the server closes
  answered a GET with TOKEN (when given) on a kept-alive connection, its answer, then nothing
           until the server closes
  flood    40 connections one after the other, each the field case (its answer read)
"""
import socket
import ssl
import sys
import time


def connect(kind, addr, ca):
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(addr)
        return s
    s = socket.create_connection(("127.0.0.1", int(addr)))
    if kind == "tls":
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False  # the certificate names localhost; we connect by address
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def read_all(s):
    data = b""
    s.settimeout(60)
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError, OSError):
            return data, True
        if not chunk:
            return data, False
        data += chunk


def status_of(data, reset):
    if data.startswith(b"HTTP/1."):
        return data.split(b" ", 2)[1].decode()
    return "reset" if reset else "none"


def main():
    kind, addr, case, path = sys.argv[1:5]
    token = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    ca = sys.argv[6] if len(sys.argv) > 6 else None
    if case == "flood":
        for _ in range(40):
            s = connect(kind, addr, ca)
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n")
            data, reset = read_all(s)
            s.close()
        print("status", status_of(data, reset))
        print("closed")
        return
    s = connect(kind, addr, ca)
    auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
    p = path.encode()
    try:
        if case == "big":
            s.sendall(b"GET " + p + b" HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 +
                      b"\r\n\r\n")
        elif case == "field":
            s.sendall(b"GET " + p + b" HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n")
        elif case == "version":
            s.sendall(b"GET " + p + b" HTTP/2.0\r\nHost: a\r\n\r\n")
        elif case == "nospace":
            s.sendall(b"GARBAGE\r\n\r\n")
        elif case == "probe":
            s.close()
            print("status none")
            print("closed")
            return
        elif case == "slow":
            s.sendall(b"GET " + p + b" HTTP/1.1\r\nX-Slow: ")
            s.setblocking(False)
            while True:  # until the server closes: EOF, or a write that fails
                time.sleep(0.2)
                try:
                    if s.recv(1) == b"":
                        break
                except (BlockingIOError, ssl.SSLWantReadError):
                    pass
                s.send(b"a")
            s.setblocking(True)
        elif case == "answered":
            s.sendall(b"GET " + p + b" HTTP/1.1\r\nHost: a\r\n" + auth + b"\r\n")
            s.settimeout(60)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(65536)
                if not chunk:
                    break
                head += chunk
            print("answered", status_of(head, False), flush=True)
        elif case != "idle":
            sys.exit("unknown case " + case)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        pass  # the server closed while we wrote: what it answered is read below
    data, reset = read_all(s)
    print("status", status_of(data, reset))
    print("closed")


main()
