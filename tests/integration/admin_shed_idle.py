#!/usr/bin/env python3
"""Driver for admin_shed_idle.sh: connections that send nothing at all on the admin API's plain
TCP listener, opened one at a time, and curl with the bearer token between them; checks which of
them the server closes (sheds) and in what order.

  admin_shed_idle.py PORT TOKEN_FILE SLOTS

SLOTS is ADMIN_MAX_CONNECTIONS. Prints "ok ..." / "FAIL ..." lines like the shell tests and
stops at the first failure (exit 1); on success prints "shed N" (the connections the server
shed, for the audit and metric checks) and exits 0 holding nothing.

Between steps it waits for the server to have settled (no timing): the listening socket's
accept queue empty (/proc/net/tcp, rx_queue of the LISTEN socket), so that each connection is
accepted before the next is opened (libmicrohttpd registers it, the STARTED notification, in
the call that accepts it) and "oldest" is the order they were opened in; and no server-side
socket of the port in CLOSE_WAIT, so that a finished curl's connection, which the server counts
until it has seen the end, is gone before the next step counts slots."""
import socket
import subprocess
import sys
import time

port, token_file, slots = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
token = open(token_file).read().strip()
held = []  # every idle connection opened, oldest first


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok   " + msg, flush=True)


def wait_until(cond, what, secs=60):
    """Bounds a wait on a condition (a hang under ASan on a loaded machine included)."""
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            fail("after %d s: %s" % (secs, what))
        time.sleep(0.02)


def server_sockets():
    """(state, rx_queue) of each socket whose local port is ours (IPv4 loopback)."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            lport = int(p[1].split(":")[1], 16)
            if lport == port:
                out.append((p[3], int(p[4].split(":")[1], 16)))
    return out


def settled():
    s = server_sockets()
    listen = [q for st, q in s if st == "0A"]
    return len(listen) == 1 and listen[0] == 0 and not any(st == "08" for st, _ in s)


def settle(what):
    wait_until(settled, "the server did not settle (%s): %s" % (what, server_sockets()))


def is_closed(s):
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: closed too


def closed_idx():
    return [i for i, s in enumerate(held) if is_closed(s)]


def open_idle():
    s = socket.create_connection(("127.0.0.1", port))
    held.append(s)
    settle("accepting idle connection %d" % (len(held) - 1))


def curl_ok(what):
    r = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}",
                        "-H", "Authorization: Bearer " + token,
                        "http://127.0.0.1:%d/healthz" % port],
                       capture_output=True, text=True)
    got = " ".join(r.stdout.split())
    if r.returncode != 0 or got != '{"status":"ok"} 200':
        fail("%s: curl with the token: exit %d, '%s' %s" % (what, r.returncode, got,
                                                           r.stderr.strip()))
    ok("%s: curl with the token answered (%s)" % (what, got))
    settle("curl's connection gone")


def expect_closed(want, what):
    """Waits until the closed ones are as many as want, then checks they are exactly want."""
    wait_until(lambda: len(closed_idx()) >= len(want),
               "%s: %d of the idle connections closed, want %d" % (what, len(closed_idx()),
                                                                   len(want)))
    got = closed_idx()
    if got != want:
        fail("%s: closed %s, want %s" % (what, short(got), short(want)))
    ok("%s: closed %s" % (what, short(want)))


def short(v):
    if len(v) > 4 and v == list(range(v[0], v[-1] + 1)):
        return "#%d..#%d (%d)" % (v[0], v[-1], len(v))
    return "[" + ", ".join("#%d" % i for i in v) + "]"


settle("before the first connection")
# 1. Every slot taken by a connection that sends nothing: none is shed.
for _ in range(slots):
    open_idle()
expect_closed([], "%d idle connections (the limit)" % slots)
# 2. A caller with the token is answered: its connection is one too many and sheds the oldest.
curl_ok("with %d idle held" % slots)
expect_closed([0], "the %dth connection (curl)" % (slots + 1))
# 3. Within the limit nothing more is shed: another caller is answered, nothing closed.
curl_ok("with %d idle held" % (slots - 1))
expect_closed([0], "a connection within the limit")
# 4. One more idle connection (within the limit again), then a caller: the oldest still open
#    goes (#1), not the newest.
open_idle()
expect_closed([0], "a new idle connection within the limit")
curl_ok("with %d idle held" % slots)
expect_closed([0, 1], "the next caller past the limit")
# 5. Twice the slots more idle connections, each past the limit: each sheds the oldest open
#    one, so that libmicrohttpd's own limit (twice ours) is never reached and a caller is
#    still answered.
for _ in range(2 * slots):
    open_idle()
curl_ok("after %d more idle connections" % (2 * slots))
n = len(held) - (slots - 1)
expect_closed(list(range(n)), "the oldest first")
for s in held:
    s.close()
print("shed %d" % n, flush=True)
