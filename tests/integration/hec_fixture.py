#!/usr/bin/env python3
"""A Splunk HTTP Event Collector stand-in (fixture: no Splunk here) for the audit HEC tests.

hec_fixture.py OUT PORTFILE TOKEN [--fail-first N] [--ok-error N] [--max-body N]
               [--ack-polls N] [--tls CERT KEY]

- POST /services/collector/event: checks `Authorization: Splunk TOKEN` (TOKEN "@FILE": the
  token in FILE, read at each request, so a test can rotate it) and the request channel,
  parses the concatenated event objects and appends each event's seq to OUT (and writes the
  host names seen, JSON-encoded, one a line, to OUT.hosts); answers an ackId.
  A refused token is answered 401 and a line appended to OUT.401. --fail-first N: the first N
  event posts are answered 503 (retry). --ok-error N: the next N event posts (after those) are
  answered HTTP 200 with an error in the body ("code":6, invalid data format), nothing kept.
  --max-body N: an event post of more than N bytes is answered 413, nothing kept.
- POST /services/collector/ack: an ackId is acknowledged once it was polled --ack-polls times
  (default 1: at once).
- The port it bound is written to PORTFILE; --tls serves HTTPS with CERT and KEY.
"""
import argparse, json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("portfile")
ap.add_argument("token")
ap.add_argument("--fail-first", type=int, default=0)
ap.add_argument("--ack-polls", type=int, default=1)
ap.add_argument("--ok-error", type=int, default=0)
ap.add_argument("--max-body", type=int, default=0)
ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
a = ap.parse_args()
lock = threading.Lock()
state = {"fail": a.fail_first, "ok_error": a.ok_error, "next": 1, "polls": {}}
hosts = set()


def token():
    if a.token.startswith("@"):
        with open(a.token[1:]) as f:
            return f.read().strip()
    return a.token


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Authorization") != "Splunk " + token():
            with open(a.out + ".401", "a") as f:
                f.write("refused\n")
            return self.reply(401, {"text": "Invalid token", "code": 4})
        if not self.headers.get("X-Splunk-Request-Channel"):
            return self.reply(400, {"text": "Data channel is missing", "code": 10})
        with lock:
            if self.path == "/services/collector/event":
                if a.max_body and len(body) > a.max_body:  # a body limit in front of it
                    return self.reply(413, {"text": "Content too large", "code": 27})
                if state["fail"] > 0:
                    state["fail"] -= 1
                    return self.reply(503, {"text": "Server is busy", "code": 9})
                if state["ok_error"] > 0:  # HTTP 200, but an error in the body: nothing kept
                    state["ok_error"] -= 1
                    return self.reply(200, {"text": "Invalid data format", "code": 6,
                                            "invalid-event-number": 0})
                dec, text, i, seqs = json.JSONDecoder(), body.decode(), 0, []
                while i < len(text):
                    obj, i = dec.raw_decode(text, i)
                    assert obj["sourcetype"] == "custos:audit" and isinstance(obj["time"], float)
                    seqs.append(obj["event"]["seq"])
                    hosts.add(obj["host"])
                with open(a.out, "a") as f:
                    f.write("".join(f"{s}\n" for s in seqs))
                with open(a.out + ".hosts", "w") as f:  # each host name seen, JSON-encoded
                    f.write("".join(json.dumps(h) + "\n" for h in sorted(hosts)))
                ack = state["next"]
                state["next"] += 1
                state["polls"][ack] = 0
                return self.reply(200, {"text": "Success", "code": 0, "ackId": ack})
            if self.path == "/services/collector/ack":
                res = {}
                for k in json.loads(body)["acks"]:
                    state["polls"][k] = state["polls"].get(k, 0) + 1
                    res[str(k)] = state["polls"][k] >= a.ack_polls
                return self.reply(200, {"acks": res})
        self.reply(404, {"text": "not found", "code": 404})


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
if a.tls:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.tls[0], a.tls[1])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(a.portfile, "w") as f:
    f.write(str(srv.server_address[1]))
srv.serve_forever()
