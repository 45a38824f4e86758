#!/usr/bin/env python3
"""Fixture for proxy_http_edges.sh, proxy_inspect.sh and proxy_inspect_head.sh: a model server
that answers with raw bytes, to show what custos sends its client when an upstream answers HEAD
or without a body, or breaks its response body.

  raw_upstream.py PORTFILE LOGFILE

Each request is read whole (head, and a Content-Length body); the X-Raw field picks the
answer (default ok):
  ok            200, a JSON body with Content-Length (keep-alive)
  head-length   the head a GET would get, Content-Length: 1234, and no body (an answer to HEAD)
  bad-chunk     a chunked head and a malformed first chunk size ("zz") in one write
  bad-chunk-later  the head and one valid chunk, 0.5 s later a malformed chunk size
  gzip          200, the ok JSON body gzip-compressed, Content-Encoding: gzip (keep-alive)
  br-sse        200, an event stream, chunked, under Content-Encoding: identity and br fields
                (the bytes are not compressed: a proxy must not look)
  gzip-204      204 with Content-Encoding: gzip, no body
  head-gzip     the head a GET would get under Content-Encoding: gzip (Content-Length: 1234),
                no body (an answer to HEAD)
  head-big      the head a GET would get, JSON, Content-Length: 5242880 (past the 4 MiB custos
                holds for inspection), no body (an answer to HEAD)
  head-sse      the head a GET would get for a stream (text/event-stream, chunked), no body
  no-content    204 with Content-Type: application/json, no body
  not-modified  304 with Content-Type: application/json, an ETag and Content-Length: 1234 (the
                length a 200 would have), no body
LOGFILE gets one line per request: "METHOD PATH X-RAW"; LOGFILE.conns one line per accepted
connection.
"""
import gzip
import os
import re
import socket
import sys
import threading
import time

OK_BODY = (b'{"id":"raw-1","object":"chat.completion","model":"test-model","choices":[{"index":0,'
           b'"message":{"role":"assistant","content":"raw ok"},"finish_reason":"stop"}],'
           b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}')
OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
      % len(OK_BODY)) + OK_BODY
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
GZ_BODY = gzip.compress(OK_BODY)
SSE_BODY = b'data: {"choices":[{"index":0,"delta":{"content":"raw ok"}}]}\n\ndata: [DONE]\n\n'
ANSWERS = {
    "gzip": [(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
              b"Content-Length: %d\r\n\r\n" % len(GZ_BODY)) + GZ_BODY],
    "br-sse": [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: identity\r\n"
               b"Content-Encoding: br\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(SSE_BODY), SSE_BODY)],
    "gzip-204": [b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n"],
    "ok": [OK],
    "head-length": [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1234\r\n\r\n"],
    "head-gzip": [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                  b"Content-Length: 1234\r\n\r\n"],
    "head-big": [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5242880\r\n\r\n"],
    "head-sse": [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n"],
    "no-content": [b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\r\n"],
    "not-modified": [b"HTTP/1.1 304 Not Modified\r\nContent-Type: application/json\r\n"
                     b"ETag: \"raw-1\"\r\nContent-Length: 1234\r\n\r\n"],
    "bad-chunk": [CHUNKED_HEAD + b"zz\r\nabc\r\n0\r\n\r\n"],
    "bad-chunk-later": [CHUNKED_HEAD + b"5\r\nfirst\r\n", 0.5, b"zz\r\n"],
}

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
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            m = re.search(rb"(?i)\r\nx-raw: *([a-z0-9-]+)", head)
            mode = m.group(1).decode() if m else "ok"
            log.write("%s %s %s\n" % (line[0], line[1], mode))
            for part in ANSWERS.get(mode, ANSWERS["ok"]):
                if isinstance(part, float):
                    time.sleep(part)
                else:
                    c.sendall(part)
            if mode.startswith("bad-"):
                time.sleep(1)
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
# One line per accepted connection, in LOG.conns (connection reuse is counted there).
conns = open(sys.argv[2] + ".conns", "a", buffering=1)
while True:
    conn, _ = s.accept()
    conns.write("accept\n")
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
