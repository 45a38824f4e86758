#!/usr/bin/env python3
"""TEST FIXTURE for the egress tests: a data source over HTTP and HTTPS on loopback that
records every target it receives.

Usage: egress_record_source.py DIR

Serves on two ephemeral ports, written (by rename, once listening) to DIR/src.port (HTTP) and
DIR/tls.port (HTTPS, with DIR/srv.crt and DIR/srv.key: eg_upstream_pki makes them). Every
request target (GET or DELETE) is appended to DIR/targets.txt and answered 200 with
"target TARGET\\n"; the target as its request line carried it, byte for byte, is appended to
DIR/lines.txt (http.server merges a leading "//" in self.path)."""
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

W = sys.argv[1]
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self):
        with lock:
            with open(W + "/targets.txt", "a") as f:
                f.write(self.path + "\n")
            with open(W + "/lines.txt", "a") as f:
                f.write(self.requestline.split(" ")[1] + "\n")
        body = ("target %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_DELETE = answer


def serve(name, tls):
    s = ThreadingHTTPServer(("127.0.0.1", 0), H)
    if tls:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain(W + "/srv.crt", W + "/srv.key")
        s.socket = c.wrap_socket(s.socket, server_side=True)
    with open("%s/%s.tmp" % (W, name), "w") as f:
        f.write(str(s.server_address[1]))
    os.rename("%s/%s.tmp" % (W, name), "%s/%s" % (W, name))
    s.serve_forever()


threading.Thread(target=serve, args=("tls.port", True), daemon=True).start()
serve("src.port", False)
