#!/usr/bin/env python3
"""Fixture for the egress tests: a data source (HTTP or HTTPS) and a model server that reads a
data source through the egress proxy while it answers a chat request.

  egress_upstream.py data PORT NAME [CERT KEY]   data source; TLS when CERT/KEY are given
                                                 (EGRESS_SINK=FILE: every request body it
                                                 receives is appended to FILE)
  egress_upstream.py model PORT PROXY URL        model server: POST /v1/chat/completions fetches
                                                 URL through PROXY and returns it as the reply
                                                 (a prompt "fetch http://...": that URL instead)
"""
import json
import os
import re
import ssl
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


PII = (b"record 17\nmail: jane.doe@example.com\ncard: 4111 1111 1111 1111\n"
       b"key: AKIAIOSFODNN7EXAMPLE\nend of record\n")
# The same values obfuscated: fullwidth @ and dot, no-break spaces, zero-width characters.
PII_UNI = ("record 17\nmail: jane.doe\uff20example\uff0ecom\n"
           "card: 4111\u00a01111\u202f1111\u00a01111\n"
           "key: AKIA\u200bIOSF\u2060ODNN7EXAMPLE\nend of record\n").encode()
# The same values in JSON, written with escapes (\u0040 for @, \u0020 spaces, \/ slashes), the
# card once more as a number; NDJSON: one such object per line.
PII_JSON_ESC = (b'{"id":17,"mail":"jane.doe\\u0040example.com",'
                b'"card":"4111\\u00201111\\u00201111\\u00201111",'
                b'"url":"https:\\/\\/x.example\\/r\\/17","num":4111111111111111,'
                b'"key":"AKIA\\u0049OSFODNN7EXAMPLE"}')
PII_NDJSON = (b'{"n":1,"mail":"jane.doe\\u0040example.com"}\n'
              b'{"n":2,"card":"4111\\u00201111\\u00201111\\u00201111"}\n'
              b'{"n":3,"key":"AKIA\\u0049OSFODNN7EXAMPLE"}\n')


class Data(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "data"

    def log_message(self, *a):
        pass

    def send_body(self, code, body, ctype="text/plain", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/redirect"):
            self.send_body(302, b"moved\n", extra={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif self.path.startswith("/big"):
            self.send_body(200, b"x" * (2 << 20))
        elif self.path.startswith("/hang"):  # a source that never answers
            time.sleep(30)
        elif self.path.startswith("/drop"):  # keep-alive response, then the source hangs up
            self.send_body(200, b"dropping\n")
            self.close_connection = True
        elif self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n")
        elif self.path.startswith("/close"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited body\n")
            self.close_connection = True
        elif "/pii" in self.path:  # sensitive values for response inspection
            self.send_pii()
        elif self.path.startswith("/echo-headers"):
            self.send_body(200, json.dumps(dict(self.headers)).encode(), "application/json")
        else:
            self.send_body(200, ("hello from %s %s\n" % (self.name, self.path)).encode())

    do_HEAD = do_GET

    def send_pii(self):
        body = PII_UNI if "uni" in self.path else PII
        ctype = "application/json" if "json" in self.path else "text/plain"
        if "late" in self.path:  # the value after more than the proxy buffers
            body = b"filler line, nothing to see\n" * 10000 + PII
        if "jsonesc" in self.path:
            body = PII_JSON_ESC
        if "ndjson" in self.path:
            body, ctype = PII_NDJSON, "application/x-ndjson"
        if "jsonbad" in self.path:  # not JSON, under a JSON media type
            body = b'{"mail": jane.doe@example.com, "key": "AKIAIOSFODNN7EXAMPLE"'
        if "jsonlarge" in self.path:  # 1 MB of JSON, the escaped value at its end
            body = (b'{"rows":[' + b",".join(b'"row %d filler text"' % i for i in range(40000)) +
                    b'],"mail":"jane.doe\\u0040example.com"}')
        if "jsonmid" in self.path:  # about 44 KB of JSON, the escaped value at its end
            body = (b'{"rows":[' + b",".join(b'"row %d filler text"' % i for i in range(2000)) +
                    b'],"mail":"jane.doe\\u0040example.com"}')
        if "jsonbig" in self.path:  # a JSON body past what the proxy holds to inspect
            body = b'["' + b"x" * (9 << 20) + b'"]'
        if "gzip" in self.path:  # an encoding the proxy cannot inspect
            self.send_body(200, body, extra={"Content-Encoding": "gzip"})
        elif "split" in self.path:  # every value cut over many 3-byte chunks
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for i in range(0, len(body), 3):
                piece = body[i:i + 3]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.002)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_body(200, body, ctype)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self):
        body = self.read_body()
        sink = os.environ.get("EGRESS_SINK")
        if sink:
            with open(sink, "ab") as f:
                f.write(b"%s %s\n%s\n--\n" % (self.command.encode(), self.path.encode(), body))
        if "/echo" in self.path:  # the body as received, and how it was framed
            te = self.headers.get("Transfer-Encoding", "")
            self.send_body(200, body, extra={
                "X-Got-Length": self.headers.get("Content-Length", "none"),
                "X-Got-Chunked": "yes" if te.lower() == "chunked" else "no"})
            return
        self.send_body(200, b"posted " + str(len(body)).encode() + b"\n")

    do_PUT = do_POST


class Model(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy = ""
    url = ""

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        prompt = self.rfile.read(n)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": self.proxy, "https": self.proxy}))
        m = re.search(rb"fetch (http://[^\"\s]+)", prompt)
        req = urllib.request.Request(m.group(1).decode() if m else self.url)
        if b"forward-request-id" in prompt:  # batching servers name the request they serve
            req.add_header("X-Custos-Request-Id", self.headers.get("X-Request-Id", ""))
        try:
            with opener.open(req, timeout=10) as r:
                got = "%d %s" % (r.status, r.read().decode(errors="replace").strip())
        except urllib.error.HTTPError as e:
            got = "%d %s" % (e.code, e.headers.get("X-Custos-Reason", ""))
        except Exception as e:  # noqa: BLE001 - the reply says what happened
            got = "error %s" % e
        reply = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m1",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": got},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "data":
        Data.name = sys.argv[3]
        srv = ThreadingHTTPServer(("127.0.0.1", port), Data)
        if len(sys.argv) > 5:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(sys.argv[4], sys.argv[5])
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    else:
        Model.proxy, Model.url = sys.argv[3], sys.argv[4]
        srv = ThreadingHTTPServer(("127.0.0.1", port), Model)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
