"""Shared by the integration tests' Python clients: HTTP/1.1 over a connected socket (plain or
TLS), strict enough to notice a response cut short, out of order or run together."""


def read_head(s, rest=b""):
    """One HTTP/1.1 head (a request's or a response's); returns (first line, headers by
    lower-case name, leftover)."""
    data = rest
    while b"\r\n\r\n" not in data:
        c = s.recv(65536)
        if not c:
            raise EOFError("connection closed in the head")
        data += c
    head, data = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    hdr = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return lines[0], hdr, data


def read_response(s, rest=b""):
    """One HTTP/1.1 response (Content-Length or chunked); returns (status, body, leftover)."""
    line, hdr, data = read_head(s, rest)
    status = int(line.split()[1])
    if "content-length" in hdr:
        want = int(hdr["content-length"])
        while len(data) < want:
            c = s.recv(65536)
            if not c:
                raise EOFError("connection closed in the body")
            data += c
        return status, data[:want], data[want:]
    if hdr.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in data:
                c = s.recv(65536)
                if not c:
                    raise EOFError("connection closed in a chunk size")
                data += c
            size_line, data = data.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                c = s.recv(65536)
                if not c:
                    raise EOFError("connection closed in a chunk")
                data += c
            if size == 0:
                return status, body, data[2:]
            body += data[:size]
            data = data[size + 2:]
    raise ValueError("response without a length")


def req(method, path, key, body=b""):
    h = "%s %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n" % (method, path, key)
    if body:
        h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return h.encode() + b"\r\n" + body
