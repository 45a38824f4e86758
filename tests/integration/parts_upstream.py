#!/usr/bin/env python3
"""Fixture for proxy_inspect.sh: a model server that streams one reply in the event formats
the model-server fixture does not speak, each value split over events of one part, with the
parts' events interleaved. Every POST is answered by its path, each event written and flushed
on its own, chunked, with an id: line (1, 2, ...; the first event also has retry: 2500):

  parts_upstream.py PORTFILE TEXT DENY_TEXT TOKENS

TEXT (or DENY_TEXT when the request body holds "deny") is cut into TOKENS pieces of roughly
equal byte length (cuts moved to UTF-8 boundaries).
- /v1/chat/completions: chat chunks with three choices; choice 0 streams the text as its
  reasoning_content and its content, and the JSON {"card": TEXT} as the arguments of two tool
  calls (index 0 and 1); choice 1 streams the text as content and as its audio transcript;
  choice 2 as content given as arrays of text parts (the first with an image part after its
  text). First, choice 0's tool call 2 streams the
  text as its function name, piece after piece (then its arguments "{}"); then round robin over
  all parts, then finish_reason for each choice and [DONE].
- /v1/messages: Anthropic-style events: a thinking block (index 0), a text block (1) and a
  tool_use block (2, input_json_delta of {"card": TEXT}); the deltas of blocks 1 and 2
  interleaved; then citations_delta events of block 1 whose cited_text is TEXT in pieces;
  content_block_stop for each, message_delta, message_stop.
- anything else (llama.cpp's /completion): {"index":0,"content":..,"stop":false} events, then
  one with "stop": true and the settings.
"""
import json
import os
import socket
import sys
import threading

TEXTS = (sys.argv[2].encode(), sys.argv[3].encode())
TOKENS = int(sys.argv[4])


def pieces(raw):
    out, at = [], 0
    for k in range(1, TOKENS + 1):
        end = len(raw) * k // TOKENS
        while 0 < end < len(raw) and (raw[end] & 0xC0) == 0x80:
            end += 1
        out.append(raw[at:end].decode())
        at = end
    return out


def data(obj, event=None):
    head = "event: %s\n" % event if event else ""
    return ("%sdata: %s\n\n" % (head, json.dumps(obj))).encode()


IMAGE = {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}


def chat(text):
    args = json.dumps({"card": text.decode()}).encode()
    def chunk(i, delta, fin=None):
        return data({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": i, "delta": delta, "finish_reason": fin}]})
    parts = [
        [chunk(0, {"reasoning_content": p}) for p in pieces(text)],
        [chunk(1, {"content": p}) for p in pieces(text)],
        [chunk(0, {"content": p}) for p in pieces(text)],
        [chunk(2, {"content": [{"type": "text", "text": p}] + ([IMAGE] if k == 0 else [])})
         for k, p in enumerate(pieces(text))],
        [chunk(1, {"audio": {"id": "au_1", "transcript": p}}) for p in pieces(text)],
    ] + [[chunk(0, {"tool_calls": [{"index": t, "function": {"arguments": p}}]})
          for p in pieces(args)] for t in (0, 1)]
    for k, p in enumerate(pieces(text)):
        first = {"id": "call_2", "type": "function"} if k == 0 else {}
        yield chunk(0, {"tool_calls": [dict(index=2, **first, function={"name": p})]})
    yield chunk(0, {"tool_calls": [{"index": 2, "function": {"arguments": "{}"}}]})
    for k in range(TOKENS):
        for p in parts:
            yield p[k]
    yield chunk(1, {}, "stop")
    yield chunk(2, {}, "stop")
    yield chunk(0, {}, "tool_calls")
    yield b"data: [DONE]\n\n"


def messages(text):
    args = json.dumps({"card": text.decode()}).encode()
    def delta(i, kind, field, p):
        return data({"type": "content_block_delta", "index": i,
                     "delta": {"type": kind, field: p}}, "content_block_delta")
    def start(i, block):
        return data({"type": "content_block_start", "index": i, "content_block": block},
                    "content_block_start")
    def stop(i):
        return data({"type": "content_block_stop", "index": i}, "content_block_stop")
    yield data({"type": "message_start", "message": {"id": "msg_1", "content": []}},
               "message_start")
    yield start(0, {"type": "thinking", "thinking": ""})
    for p in pieces(text):
        yield delta(0, "thinking_delta", "thinking", p)
    yield stop(0)
    yield start(1, {"type": "text", "text": ""})
    yield start(2, {"type": "tool_use", "id": "tu_1", "name": "pay", "input": {}})
    for p, q in zip(pieces(text), pieces(args)):
        yield delta(1, "text_delta", "text", p)
        yield delta(2, "input_json_delta", "partial_json", q)
    for p in pieces(text):
        yield data({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "citations_delta",
                              "citation": {"type": "char_location", "cited_text": p,
                                           "document_index": 0, "document_title": "Doc",
                                           "start_char_index": 0, "end_char_index": 9}}},
                   "content_block_delta")
    yield stop(1)
    yield stop(2)
    yield data({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta")
    yield data({"type": "message_stop"}, "message_stop")


def completion(text):
    for p in pieces(text):
        yield data({"index": 0, "content": p, "tokens": [], "stop": False, "id_slot": 0})
    yield data({"index": 0, "content": "", "tokens": [], "stop": True, "id_slot": 0,
                "model": "m", "stopping_word": "", "tokens_predicted": TOKENS})


def serve(c):
    data_in = b""
    try:
        while b"\r\n\r\n" not in data_in:
            d = c.recv(65536)
            if not d:
                return
            data_in += d
        head, body = data_in.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v.strip())
        while len(body) < n:
            d = c.recv(65536)
            if not d:
                return
            body += d
        path = head.split(b" ")[1].decode()
        text = TEXTS[1] if b"deny" in body else TEXTS[0]
        gen = chat if path.startswith("/v1/chat/") else \
            messages if path.startswith("/v1/messages") else completion
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for k, e in enumerate(gen(text), 1):
            # every event numbered by an id: line, the first with a retry: line too: a
            # rewritten event must carry them over
            e = (b"id: %d\n" % k) + (b"retry: 2500\n" if k == 1 else b"") + e
            c.sendall(b"%x\r\n%s\r\n" % (len(e), e))
        c.sendall(b"0\r\n\r\n")
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
