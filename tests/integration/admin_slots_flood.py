#!/usr/bin/env python3
"""Holds K admin connections open, each having sent one byte of a request head (never a whole
head), and opens a new one whenever the server closes one: a client without the token trying to
keep every connection slot. argv: TARGET (tcp:HOST:PORT or unix:PATH), K, STATUS file. Writes
"opened closed" to STATUS after each change (by rename); ends on SIGTERM."""
import os
import selectors
import signal
import socket
import sys

target, k, status = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sel = selectors.DefaultSelector()
opened = closed = 0
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def write_status():
    tmp = status + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (opened, closed))
    os.rename(tmp, status)


def connect():
    global opened
    if target.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target[5:])
    else:
        host, port = target[4:].rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    s.sendall(b"G")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    opened += 1


for _ in range(k):
    connect()
write_status()
while not stop:
    for key, _ in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            continue  # not expected: the head is never complete
        sel.unregister(s)
        s.close()
        closed += 1
        if not stop:
            connect()
        write_status()
write_status()
