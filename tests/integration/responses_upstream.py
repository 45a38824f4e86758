#!/usr/bin/env python3
"""Fixture for proxy_inspect.sh: a model server that streams the OpenAI responses API (the
model-server fixture speaks chat and completions only). Every POST is answered with the event
stream of one reply, each event written and flushed on its own, chunked:

  responses_upstream.py PORTFILE TEXT TOKENS

TEXT (UTF-8) is cut into TOKENS response.output_text.delta events of roughly equal byte length
(cuts moved to UTF-8 boundaries, as a model streams), framed by the events the API sends
around them: response.created, output_item.added, content_part.added, then
output_text.done, content_part.done, output_item.done and response.completed, which repeat
the whole text. No [DONE]: the responses API ends with response.completed.
"""
import json
import os
import socket
import sys
import threading

TEXT = sys.argv[2].encode()
TOKENS = int(sys.argv[3])


def pieces():
    out, at = [], 0
    for k in range(1, TOKENS + 1):
        end = len(TEXT) * k // TOKENS
        while 0 < end < len(TEXT) and (TEXT[end] & 0xC0) == 0x80:
            end += 1
        out.append(TEXT[at:end].decode())
        at = end
    return out


def events():
    text = TEXT.decode()
    seq = [0]

    def ev(obj):
        seq[0] += 1
        obj["sequence_number"] = seq[0]
        return ("event: %s\ndata: %s\n\n" % (obj["type"], json.dumps(obj))).encode()

    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
            "content": [part]}
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    yield ev({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    yield ev({"type": "response.output_item.added", "output_index": 0,
              "item": dict(item, status="in_progress", content=[])})
    yield ev(dict(ids, type="response.content_part.added",
                  part={"type": "output_text", "text": "", "annotations": []}))
    for p in pieces():
        yield ev(dict(ids, type="response.output_text.delta", delta=p, logprobs=[]))
    yield ev(dict(ids, type="response.output_text.done", text=text, logprobs=[]))
    yield ev(dict(ids, type="response.content_part.done", part=part))
    yield ev({"type": "response.output_item.done", "output_index": 0, "item": item})
    yield ev({"type": "response.completed",
              "response": {"id": "resp_1", "status": "completed", "output": [item]}})


def serve(c):
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = c.recv(65536)
            if not d:
                return
            data += d
        head, data = data.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v.strip())
        while len(data) < n:
            d = c.recv(65536)
            if not d:
                return
            data += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for e in events():
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
