#!/usr/bin/env python3
"""TEST FIXTURE for http_hostile.sh: a hostile model server. It answers each request with the
raw bytes its X-Case field names (default ok), so the test can see what custos makes of a
response that breaks HTTP/1.1's framing rules.

  hostile_upstream.py PORTFILE LOGFILE

LOGFILE gets one line per request: its request line, as received.
"""
import os
import re
import socket
import sys
import threading

BODY = (b'{"id":"h-1","object":"chat.completion","model":"test-model","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"hostile ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
      % len(BODY)) + BODY
CASES = {
    "ok": OK,
    # both framings: a CL-reading client and a chunked-reading one see different bodies
    "cl-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\n\r\n"),
    "cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    "te-xchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    # 101 although custos never asked for an upgrade: an uninspected tunnel otherwise
    "switch": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n\r\nRAW"),
    # interim answers before the final one: skipped, never forwarded
    "early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" + OK,
    # more bytes than Content-Length: a second, smuggled response behind the real one
    "cl-longer": OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
}
CLOSE = ("switch", "bare-lf")

log = open(sys.argv[2], "a", buffering=1)


def serve(c):
    data = b""
    try:
        while True:
            while b"\r\n\r\n" not in data:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            head, data = data.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            n = int(m.group(1)) if m else 0
            while len(data) < n:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            data = data[n:]
            # forwarding fields and Host first ("fwd NAME: VALUE"), the name of the first
            # field ("first NAME"), then the request line
            fields = head.split(b"\r\n")[1:]
            for line in fields:
                if re.match(rb"(?i)(forwarded|x-real-ip|x-forwarded-[a-z]+|host):", line):
                    log.write("fwd " + line.decode("latin-1") + "\n")
            if fields:
                log.write("first " + fields[0].split(b":")[0].decode("latin-1") + "\n")
            log.write(head.split(b"\r\n", 1)[0].decode("latin-1") + "\n")
            m = re.search(rb"(?i)\r\nx-case: *([^\r]+)", head)
            case = m.group(1).decode() if m else "ok"
            c.sendall(CASES[case])
            if case in CLOSE:
                return
    except OSError:
        pass
    finally:
        c.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
