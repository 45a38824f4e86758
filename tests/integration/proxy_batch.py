#!/usr/bin/env python3
"""proxy_batch.sh's client: many connections at once, so that custos' worker handles several of
them in one batch of events and sends their data together at its end (proxy/conn.c, "Writes at
the end of the batch").

Usage: proxy_batch.py PLAIN_PORT TLS_PORT CAFILE BEARER N ROUNDS

N plain and N TLS keep-alive connections (one thread each, started together) each make ROUNDS
chat completions whose prompt names the connection and the round ("c7-r3"), then a pipelined
pair and a streamed completion. The model-server fixture echoes the prompt, so every answer
must carry its own request's text: an answer sent on the wrong connection, out of order, cut
short or run into the next would show. Prints "ok ..." and "FAIL ..." lines; exit 0 only when
nothing failed."""
import json
import os
import socket
import ssl
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyhttp import read_response, req  # noqa: E402

plain, tls, cafile, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
n, rounds = int(sys.argv[5]), int(sys.argv[6])
errors = []
lock = threading.Lock()
start = threading.Barrier(2 * n)


def chat(text, stream=False):
    msg = {"model": "test-model", "stream": stream, "messages": [{"role": "user", "content": text}]}
    return req("POST", "/v1/chat/completions", key, json.dumps(msg).encode())


def content(body):
    return json.loads(body)["choices"][0]["message"]["content"]


def client(i, use_tls):
    name = "%s%d" % ("t" if use_tls else "p", i)
    try:
        s = socket.create_connection(("127.0.0.1", tls if use_tls else plain), timeout=60)
        if use_tls:
            s = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname="localhost")
        start.wait(60)
        left = b""
        for r in range(rounds):
            text = "%s-r%d" % (name, r)
            s.sendall(chat(text))
            st, body, left = read_response(s, left)
            if st != 200 or content(body) != text:
                raise ValueError("round %d: status %d, %r" % (r, st, body[:120]))
        s.sendall(chat(name + "-a") + chat(name + "-b"))  # a pipelined pair, in order
        for part in ("a", "b"):
            st, body, left = read_response(s, left)
            if st != 200 or content(body) != "%s-%s" % (name, part):
                raise ValueError("pipelined %s: status %d, %r" % (part, st, body[:120]))
        s.sendall(chat(name + "-s", stream=True))
        st, body, left = read_response(s, left)
        text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                       for line in body.decode().splitlines()
                       if line.startswith("data: {") and '"choices":[{' in line)
        if st != 200 or not body.rstrip().endswith(b"data: [DONE]") or text != name + "-s":
            raise ValueError("stream: status %d, text %r" % (st, text))
        if left:
            raise ValueError("%d stray bytes after the last answer" % len(left))
        s.close()
    except Exception as e:  # noqa: BLE001 - every failure is reported by connection
        with lock:
            errors.append("%s: %s" % (name, e))


threads = [threading.Thread(target=client, args=(i, t)) for t in (False, True) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for e in errors:
    print("FAIL", e)
if not errors:
    print("ok   %d plain and %d TLS connections at once: %d echoed answers each, a pipelined "
          "pair and a stream, every one on its own connection and in order" % (n, n, rounds))
sys.exit(1 if errors else 0)
