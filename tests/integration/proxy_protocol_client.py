#!/usr/bin/env python3
"""PROXY protocol client for proxy_protocol.sh: sends a hand-made PROXY header (v1 or v2, or
bytes given raw), then an HTTP request, plain or over TLS (TLS starts after the header), and
prints the status code of the answer, or "closed" when custos closed the connection without
one. --split sends the header a few bytes at a time, each write its own segment. --crc adds a
PP2_TYPE_CRC32C TLV to a --v2 PROXY header, with the right checksum or a wrong one;
--authority and --unique-id add PP2_TYPE_AUTHORITY and PP2_TYPE_UNIQUE_ID TLVs (before the
checksum, which covers them), each given twice to send it twice. --repeat N sends N requests
pipelined on the connection (the last one closes it) and prints each status."""
import argparse
import re
import socket
import ssl
import struct
import sys
import time

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def crc32c(data):
    """CRC32c (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: written apart from
    custos' table-driven one."""
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def with_crc(hdr, at, good):
    """hdr with its checksum (4 zero bytes at offset at) set, right or off by one bit."""
    c = crc32c(hdr) ^ (0 if good else 1)
    return hdr[:at] + struct.pack("!I", c) + hdr[at + 4:]


def v2(cmd, src=None, dst=None, sport=0, dport=0, tlvs=b""):
    """A v2 header: cmd 0 LOCAL, 1 PROXY; addresses IPv4 or IPv6 (by their text)."""
    if src is None:
        return SIG + bytes([0x20 | cmd, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        fam, body = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(
            socket.AF_INET6, dst)
    else:
        fam, body = 0x11, socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(
            socket.AF_INET, dst)
    body += struct.pack("!HH", sport, dport) + tlvs
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--v1", help="the v1 line without PROXY and CRLF, e.g. 'TCP4 a b 1 2'")
    ap.add_argument("--v2", help="LOCAL, or 'SRC DST SPORT DPORT'")
    ap.add_argument("--raw", help="header bytes as a Python bytes literal body")
    ap.add_argument("--tls-ca", help="speak TLS (server name localhost) after the header")
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--crc", choices=["good", "bad"],
                    help="with --v2 SRC DST SPORT DPORT: a CRC32C TLV before the NOOP one")
    ap.add_argument("--authority", action="append", default=[],
                    help="with --v2 SRC DST SPORT DPORT: a PP2_TYPE_AUTHORITY TLV (its text)")
    ap.add_argument("--unique-id", action="append", default=[],
                    help="with --v2 SRC DST SPORT DPORT: a PP2_TYPE_UNIQUE_ID TLV (hex)")
    ap.add_argument("--token", default="")
    ap.add_argument("--chat", metavar="MODEL",
                    help="send POST /v1/chat/completions for MODEL instead of GET /v1/models")
    ap.add_argument("--repeat", type=int, default=1,
                    help="N requests on the connection, pipelined; prints N statuses")
    ap.add_argument("--header-only", action="store_true",
                    help="send the header, no request; wait for custos to close")
    ap.add_argument("--shut", action="store_true",
                    help="with --header-only: shut the sending side down after the header")
    a = ap.parse_args()

    hdr = b""
    if a.v1 is not None:
        hdr = b"PROXY " + a.v1.encode() + b"\r\n"
    elif a.v2 == "LOCAL":
        hdr = v2(0)
    elif a.v2:
        s, d, sp, dp = a.v2.split()
        # one TLV (PP2_TYPE_NOOP) that custos must skip
        tlvs = b"\x04\x00\x02ab"
        if a.crc:
            tlvs = b"\x03\x00\x04\x00\x00\x00\x00" + tlvs
        pre = b""
        for name in a.authority:
            v = name.encode("latin-1")
            pre += b"\x02" + struct.pack("!H", len(v)) + v
        for uid in a.unique_id:
            v = bytes.fromhex(uid)
            pre += b"\x05" + struct.pack("!H", len(v)) + v
        tlvs = pre + tlvs
        hdr = v2(1, s, d, int(sp), int(dp), tlvs=tlvs)
        if a.crc:
            # the checksum's value follows the addresses, the TLVs before it and its head
            at = 16 + (36 if ":" in s else 12) + len(pre) + 3
            hdr = with_crc(hdr, at, a.crc == "good")
    elif a.raw is not None:
        hdr = a.raw.encode().decode("unicode_escape").encode("latin-1")
    req = ("GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
           "Connection: close\r\n\r\n" % a.token).encode()
    if a.chat:
        body = ('{"model":"%s","messages":[{"role":"user","content":"hi"}],'
                '"max_tokens":4}' % a.chat).encode()
        req = ("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
               "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\nConnection: close\r\n\r\n"
               % (a.token, len(body))).encode() + body

    if a.repeat > 1:
        keep = req.replace(b"Connection: close\r\n", b"")
        req = keep * (a.repeat - 1) + req

    sock = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if a.header_only:
            sock.sendall(hdr)
            if a.shut:
                sock.shutdown(socket.SHUT_WR)
            data = sock.recv(65536)
            print("closed" if not data else "answered")
            return 0
        if a.split:
            for i in range(0, len(hdr), 5):
                sock.sendall(hdr[i:i + 5])
                time.sleep(0.02)  # separate segments; the result does not depend on it
        elif a.tls_ca:
            sock.sendall(hdr)
        if a.tls_ca:
            ctx = ssl.create_default_context(cafile=a.tls_ca)
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            sock.sendall(req)
        elif a.split:
            sock.sendall(req)
        else:
            sock.sendall(hdr + req)  # the request in the header's segment: it must stay
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, ssl.SSLError, OSError):
        data = b""
    if a.repeat > 1:
        print(" ".join(m.decode() for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data))
              or "closed")
    elif data.startswith(b"HTTP/1.1 "):
        print(data[9:12].decode())
    else:
        print("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
