#!/usr/bin/env python3
"""proxy_drain.sh's client: connections in every state a SIGTERM's drain meets, then the
SIGTERM, then what each got.

Usage: proxy_drain_client.py PLAIN_PORT TLS_PORT CAFILE BEARER CUSTOS_PID LOG OUTDIR

Before the SIGTERM (to CUSTOS_PID): two idle keep-alive connections (one request answered on
each, one plain, one TLS), a third one that is left idle, a connection with a stream that
outlasts the shutdown deadline (4 s), one with a request whose answer (not streamed) would come
after it, and one with a short stream and a second request pipelined behind it (sent in one
write, before the stream's first event). Once custos' worker logs that it holds its drain
(CUSTOS_TEST_DRAIN_HOLD_MS: listeners closed, connections not yet drained), the idle ones get
a complete request each: the request reached custos before it closed the connection, so it
must be answered, with Connection: close, and then closed; so must a new connection that
waits in the listener's queue with its request then. Writes OUTDIR/phase (the phase
reached) for the script, which sends SIGHUP, a second SIGTERM and an admin reload during the
drain. Prints "ok ..." and "FAIL ..." lines; exit 0 only when nothing failed."""
import os
import signal
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyhttp import read_head, req  # noqa: E402

plain, tlsport, cafile, key, pid, log, outdir = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                                 sys.argv[4], int(sys.argv[5]), sys.argv[6],
                                                 sys.argv[7])
fails = 0


def fail(msg):
    global fails
    fails += 1
    print("FAIL", msg, flush=True)


def ok(msg):
    print("ok  ", msg, flush=True)


def phase(name):
    with open(os.path.join(outdir, "phase.new"), "w") as f:
        f.write(name + "\n")
    os.rename(os.path.join(outdir, "phase.new"), os.path.join(outdir, "phase"))


def connect(tls=False):
    s = socket.create_connection(("127.0.0.1", tlsport if tls else plain), timeout=30)
    if tls:
        ctx = ssl.create_default_context(cafile=cafile)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def response(s, rest=b"", head=None):
    """One response: (status, headers, body (a chunked one decoded, its last chunk read),
    leftover). head: (line, headers, rest) when its head was read already."""
    line, hdr, data = head if head else read_head(s, rest)
    status = int(line.split()[1])
    if "content-length" in hdr:
        want = int(hdr["content-length"])
        while len(data) < want:
            c = s.recv(65536)
            if not c:
                raise EOFError("connection closed in the body")
            data += c
        return status, hdr, data[:want], data[want:]
    body = b""
    while True:
        while b"\r\n" not in data:
            c = s.recv(65536)
            if not c:
                raise EOFError("connection closed in a chunk size (body so far: %r)" % body[-200:])
            data += c
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(data) < size + 2:
            c = s.recv(65536)
            if not c:
                raise EOFError("connection closed in a chunk (body so far: %r)" % body[-200:])
            data += c
        if size == 0:
            return status, hdr, body, data[2:]
        body += data[:size]
        data = data[size + 2:]


def closed_after(s, rest, what):
    """The connection ends (EOF, nothing more) within 15 s."""
    if rest:
        fail("%s: %d unexpected bytes after the answer: %r" % (what, len(rest), rest[:80]))
        return
    try:
        c = s.recv(65536)
    except ssl.SSLEOFError:
        c = b""  # closed without close_notify: closed all the same
    except (ConnectionResetError, ssl.SSLError) as e:
        fail("%s: reset instead of closed: %s" % (what, e))
        return
    except socket.timeout:
        fail("%s: not closed after the answer" % what)
        return
    if c:
        fail("%s: more bytes after the answer: %r" % (what, c[:80]))
    else:
        ok("%s: closed after the answer" % what)


def chat(model, stream, max_tokens):
    body = ('{"model":"%s","stream":%s,"max_tokens":%d,"messages":[{"role":"user",'
            '"content":"drain"}]}' % (model, "true" if stream else "false", max_tokens)).encode()
    return req("POST", "/v1/chat/completions", key, body)


models = req("GET", "/v1/models", key)

# -- before the SIGTERM
idle = {}
for name, tls in (("idle plain", False), ("idle TLS", True), ("idle left alone", False)):
    s = connect(tls)
    s.sendall(models)
    st, hdr, _, rest = response(s)
    if st != 200 or hdr.get("connection", "").lower() == "close" or rest:
        fail("%s: first request: %d %s" % (name, st, hdr))
    idle[name] = s

long_s = connect()
long_s.sendall(chat("slow-model", True, 40))  # 40 events 150 ms apart: past the 4 s deadline
long_head = read_head(long_s)
pipe_s = connect()
pipe_s.sendall(chat("slow-model", True, 10) + models)  # a 1.5 s stream, a request behind it
pipe_head = read_head(pipe_s)
slow_s = connect()
slow_s.sendall(chat("slow-model", False, 40))  # its answer would come after 6 s
time.sleep(0.3)  # the request on its way upstream (custos reads it at once)

os.kill(pid, signal.SIGTERM)
phase("sigterm")
end = time.time() + 30
while time.time() < end:
    with open(log, errors="replace") as f:
        if "test hook: drain held" in f.read():
            break
    time.sleep(0.01)
else:
    fail("no 'test hook: drain held' in the log 30 s after the SIGTERM")
# The worker holds (not drained yet, its listener not read): requests on the idle connections
# now, and a new connection that waits in the listener's queue with its request.
idle["idle plain"].sendall(models)
idle["idle TLS"].sendall(models)
queued = connect()
queued.sendall(models)
idle["queued at the listener"] = queued
phase("held")

# -- what each connection got
for name in ("idle plain", "idle TLS", "queued at the listener"):
    s = idle[name]
    try:
        st, hdr, body, rest = response(s)
    except (EOFError, ConnectionResetError, ssl.SSLError, socket.timeout) as e:
        fail("%s: a request sent as the drain began was not answered: %s" % (name, e))
        continue
    if st == 200 and hdr.get("connection", "").lower() == "close":
        ok("%s: a request sent as the drain began answered %d with Connection: close" % (name, st))
    else:
        fail("%s: answered %d, Connection: %s" % (name, st, hdr.get("connection")))
    closed_after(s, rest, name)

s = idle["idle left alone"]
t0 = time.time()
try:
    c = s.recv(100)
    if c:
        fail("idle connection: got %r" % c[:80])
    elif time.time() - t0 < 2.5:
        ok("idle keep-alive connection closed at the drain (%.1f s after the hold)" % (time.time() - t0))
    else:
        fail("idle keep-alive connection closed only after %.1f s" % (time.time() - t0))
except (ConnectionResetError, socket.timeout) as e:
    fail("idle connection: %s" % e)

try:
    st, hdr, body, rest = response(pipe_s, head=pipe_head)
    if st == 200 and hdr.get("connection", "").lower() != "close" and b"[DONE]" in body:
        ok("pipelined: the stream in flight completed (%d)" % st)
    else:
        fail("pipelined: the stream: %d %r" % (st, body[-120:]))
    st2, hdr2, body2, rest2 = response(pipe_s, rest)
    if st2 == 200 and hdr2.get("connection", "").lower() == "close" and b"test-model" in body2:
        ok("pipelined: the request behind the stream answered %d with Connection: close" % st2)
    else:
        fail("pipelined: the request behind the stream: %d %s" % (st2, hdr2))
    closed_after(pipe_s, rest2, "pipelined")
except (EOFError, ConnectionResetError, socket.timeout) as e:
    fail("pipelined: the request behind the stream was not answered: %s" % e)

try:
    st, hdr, body, rest = response(slow_s)
    if st == 503 and hdr.get("connection", "").lower() == "close" and b"shutdown deadline passed" in body:
        ok("a request without an answer at the deadline: 503 with Connection: close")
    else:
        fail("a request without an answer at the deadline: %d %s %r" % (st, hdr, body[:200]))
    closed_after(slow_s, rest, "503 at the deadline")
except (EOFError, ConnectionResetError, socket.timeout) as e:
    fail("a request without an answer at the deadline got none: %s" % e)

try:
    st, hdr, body, rest = response(long_s, head=long_head)
    events = [e for e in body.split(b"\n\n") if e.strip()]
    if (len(events) >= 3 and b'"code":"shutdown"' in events[-2] and events[-1].strip() == b"data: [DONE]"
            and len(events) < 40):
        ok("stream past the deadline ended with an error event and [DONE] (%d events)" % len(events))
    else:
        fail("stream past the deadline: %d events, last %r" % (len(events), events[-2:]))
    with open(os.path.join(outdir, "long.rid"), "w") as f:
        f.write(hdr.get("x-request-id", "") + "\n")
    closed_after(long_s, rest, "stream past the deadline")
except (EOFError, ConnectionResetError, socket.timeout) as e:
    fail("stream past the deadline not ended cleanly: %s" % e)

phase("done")
sys.exit(1 if fails else 0)
