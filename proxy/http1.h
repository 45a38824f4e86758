/*
 * Strict HTTP/1.1 codec for hostile input (proxy-internal). Incremental and zero-copy: parsed
 * fields are span views into the caller's bytes; nothing is allocated per message or header.
 * What it accepts and rejects, and why, is in docs/HTTP.md (RFC 9110/9112, smuggling classes).
 *
 * Parse contract (HAProxy style), for http1_parse_head and http1_body_decode:
 *   -1  error: p->err has the status to answer (400/413/414/417/431/501/505; 502 for a bad
 *       upstream response), a static reason and the byte offset where it was found;
 *    0  need more bytes (call again with the same message start and more bytes after it);
 *   >0  bytes consumed. For a head: exactly the head (start line through the empty line), so
 *       the body, or the next pipelined message, starts right after.
 *
 * Buffer moves: the caller passes the message from its first byte on every call. The parser
 * remembers offsets, so the bytes may move between calls (buf compaction, realloc); spans in
 * the head point into the bytes of the latest call. http1_head_rebase() re-points them after
 * the caller moved the bytes itself.
 */
#ifndef CUSTOS_PROXY_HTTP1_H
#define CUSTOS_PROXY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "custos/core.h"

/* ---------------------------------------------------------------------------------------------
 * Named limits. The config may lower them (http1_limits); a zero field means the default.
 */
#define HTTP1_MAX_HEAD_BYTES    (32u * 1024u)       /* start line + header section + CRLFs -> 431 */
#define HTTP1_MAX_HEADERS       100u                /* header fields per message -> 431 */
#define HTTP1_MAX_REQUEST_LINE  (8u * 1024u)        /* request line, and the target -> 414 */
#define HTTP1_MAX_CHUNK_LINE    1024u               /* chunk-size line with its extensions -> 400 */
#define HTTP1_MAX_TRAILER_BYTES (8u * 1024u)        /* trailer section -> 431 */
#define HTTP1_MAX_BODY          (UINT64_C(1) << 40) /* Content-Length / decoded chunked -> 413 */
#define HTTP1_MAX_LEADING_CRLF  8u /* empty lines tolerated before a request line */

typedef struct http1_limits {
	size_t max_head_bytes;    /* 0 = HTTP1_MAX_HEAD_BYTES; never above it */
	size_t max_headers;       /* 0 = HTTP1_MAX_HEADERS; never above it */
	size_t max_request_line;  /* 0 = HTTP1_MAX_REQUEST_LINE */
	size_t max_chunk_line;    /* 0 = HTTP1_MAX_CHUNK_LINE */
	size_t max_trailer_bytes; /* 0 = HTTP1_MAX_TRAILER_BYTES */
	uint64_t max_body;        /* 0 = HTTP1_MAX_BODY */
} http1_limits;

/* ---------------------------------------------------------------------------------------------
 * A parsed head. All spans point into the caller's bytes (see Buffer moves above).
 */
typedef enum http1_method {
	HTTP1_M_OTHER = 0, /* a valid token we do not know; `method` has it */
	HTTP1_M_GET,
	HTTP1_M_HEAD,
	HTTP1_M_POST,
	HTTP1_M_PUT,
	HTTP1_M_DELETE,
	HTTP1_M_CONNECT,
	HTTP1_M_OPTIONS,
	HTTP1_M_TRACE,
	HTTP1_M_PATCH,
} http1_method;

typedef enum http1_target_form {
	HTTP1_TARGET_ORIGIN = 0, /* /path?query */
	HTTP1_TARGET_ABSOLUTE,   /* http://host:port/path?query (forward proxy) */
	HTTP1_TARGET_AUTHORITY,  /* host:port (CONNECT only) */
	HTTP1_TARGET_ASTERISK,   /* * (OPTIONS only) */
} http1_target_form;

/* How the body that follows the head is delimited (RFC 9112 §6.3). */
typedef enum http1_framing {
	HTTP1_BODY_NONE = 0, /* no body: requests without CL/TE, 1xx/204/304, HEAD responses */
	HTTP1_BODY_LENGTH,   /* Content-Length bytes */
	HTTP1_BODY_CHUNKED,  /* Transfer-Encoding: chunked */
	HTTP1_BODY_CLOSE,    /* responses only: until the upstream closes */
	HTTP1_BODY_TUNNEL,   /* 2xx answer to CONNECT: raw bytes both ways from here */
} http1_framing;

typedef struct http1_header {
	span name;  /* token, case as received */
	span value; /* without leading/trailing OWS; may be empty */
} http1_header;

/* Flags for tokens of the Connection header field (and what the codec derived). */
#define HTTP1_CONN_CLOSE      0x1u /* "close" listed */
#define HTTP1_CONN_KEEP_ALIVE 0x2u /* "keep-alive" listed */
#define HTTP1_CONN_UPGRADE    0x4u /* "upgrade" listed (never honoured: see docs/HTTP.md) */
#define HTTP1_CONN_OTHER      0x8u /* other tokens listed: those fields are hop-by-hop too */

typedef struct http1_head {
	bool is_response;
	uint8_t version; /* 10 or 11 */

	/* Requests. */
	http1_method meth;
	span method; /* the token as received */
	span target; /* the request-target as received */
	http1_target_form form;
	span scheme;    /* absolute-form: "http" or "https" (case as received); else empty */
	span authority; /* absolute-form and authority-form: host[:port]; else empty */
	span path;      /* origin-form and absolute-form: path[?query]; absolute-form without a
	                   path gives "" or "?query": write "/" before it (the writer does) */
	span host;      /* the Host field value (required once in 1.1; may be empty in 1.0) */

	/* Responses. */
	unsigned status; /* 100..599 */
	span reason;     /* reason-phrase, may be empty */

	http1_header hdrs[HTTP1_MAX_HEADERS];
	size_t nhdrs;

	/* Derived by the parser. */
	http1_framing framing;
	uint64_t content_length; /* valid when framing == HTTP1_BODY_LENGTH */
	unsigned conn_flags;     /* HTTP1_CONN_* from Connection */
	bool keep_alive;         /* the connection may carry another message after this one */
	bool expect_continue;    /* request: Expect: 100-continue */
	bool upgrade;            /* request asked for Upgrade (h2c, websocket): ignored, stripped */
	size_t head_len;         /* bytes of the head, leading empty lines included */
} http1_head;

/* ---------------------------------------------------------------------------------------------
 * Head parser.
 */
typedef struct http1_error {
	unsigned status;    /* 400, 413, 414, 417, 431, 501, 505 (requests); 502 (responses) */
	const char *reason; /* static text for logs and audit, never NULL after an error */
	size_t offset;      /* where it was found: from the message start (head), or from the
	                       start of the failing call's input (body decoder) */
} http1_error;

typedef struct http1_parser {
	/* Private state; read p->head and p->err only. */
	http1_limits lim;
	bool response;
	http1_method req_meth; /* responses: the method of the request they answer */
	int state;
	size_t pos;        /* next byte to scan */
	size_t line_start; /* start of the line being scanned */
	size_t crlfs;      /* leading empty lines skipped */
	const char *base;  /* data of the latest call (to rebase spans) */
	unsigned seen;     /* bit set of singleton fields seen */
	http1_error pend;  /* a 413/417/501 found in a field, answered at the head's end unless
	                      a 400 comes first (the status never depends on field order) */
	http1_error err;
	http1_head head;
} http1_parser;

/* Prepares p for a request head; lim may be NULL (defaults). Owns nothing. */
void http1_parser_init_request(http1_parser *p, const http1_limits *lim);
/* Prepares p for a response head answering a request with method req_meth (HEAD and CONNECT
 * change the framing). */
void http1_parser_init_response(http1_parser *p, const http1_limits *lim, http1_method req_meth);
/* Resets p for the next message on the same connection, keeping limits and kind. */
void http1_parser_reset(http1_parser *p);

/* Parses a head from data[len] (the message's first byte at data[0]). Returns -1 (p->err),
 * 0 (need more) or the head length (p->head filled). After -1 or >0 the parser must be reset
 * before reuse. */
ssize_t http1_parse_head(http1_parser *p, const char *data, size_t len) CUSTOS_WUR;

/* A cheap test for callers that keep no parser between reads (to save its 3.5 KiB on idle
 * connections): true once data[0..len) holds an empty line (an LF followed by CRLF or LF) or
 * reached max_head bytes (0 = HTTP1_MAX_HEAD_BYTES), i.e. when calling http1_parse_head is
 * worth it; while false, it would answer "need more" (or an error it will also find later).
 * *scan (0 for a new message) remembers how far it looked, so a head trickling in byte by
 * byte is scanned once, not once per read. */
bool http1_head_ready(const char *data, size_t len, size_t max_head, size_t *scan);

/* Re-points the head's spans from the bytes at old_base to the same bytes at new_base. */
void http1_head_rebase(http1_head *h, const char *old_base, const char *new_base);

/* ---------------------------------------------------------------------------------------------
 * Header lookup (case-insensitive names).
 */
/* Value of the first field named `name` into *value; false when absent. */
bool http1_header_get(const http1_head *h, span name, span *value);
/* Number of fields named `name`. */
size_t http1_header_count(const http1_head *h, span name);
/* True if `token` appears (case-insensitive) in the comma-separated list `list`. */
bool http1_list_has(span list, span token);
/* True for hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade) and for fields the head's Connection lists. */
bool http1_is_hop_by_hop(const http1_head *h, span name);

/* ---------------------------------------------------------------------------------------------
 * Body decoder: streams the body of one message with the framing of its head. Zero-copy: each
 * call returns at most one contiguous piece of body data as a view into the input.
 */
typedef struct http1_body {
	/* Private state. */
	http1_framing framing;
	http1_limits lim;
	int state;
	uint64_t remaining; /* bytes left in the message (LENGTH) or in the current chunk */
	uint64_t total;     /* body bytes seen so far */
	size_t line_len;    /* bytes of the current chunk-size / trailer line so far */
	size_t trailer_bytes;
	size_t trailers;
	bool response; /* errors are 502 (a bad upstream), not 4xx */
	bool done;
	http1_error err;
} http1_body;

/* Prepares b for the body announced by head h (uses h->framing and h->content_length). */
void http1_body_init(http1_body *b, const http1_head *h, const http1_limits *lim);
/* Decodes from in[len] (bytes after those already consumed). Returns -1 (b->err), else the
 * bytes consumed (0 = need more); *data is set to the body bytes found (a view into in, maybe
 * empty). Call again with the rest while it consumes. *done becomes true once the message
 * ended; the bytes consumed then stop exactly at its end (pipelining), trailers included and
 * discarded (see docs/HTTP.md). For HTTP1_BODY_CLOSE and HTTP1_BODY_TUNNEL everything is
 * data and *done never becomes true here. */
ssize_t http1_body_decode(http1_body *b, const char *in, size_t len, span *data,
                          bool *done) CUSTOS_WUR;
/* The peer closed: CUSTOS_OK if that ends the body (close-delimited or already done),
 * CUSTOS_ERR_PARSE for a truncated body. */
custos_err http1_body_eof(http1_body *b) CUSTOS_WUR;
/* True once the whole body was decoded. */
static inline bool http1_body_done(const http1_body *b)
{
	return b->done;
}

/* ---------------------------------------------------------------------------------------------
 * Chunked encoder (for forwarding bodies of unknown length).
 */
#define HTTP1_CHUNK_HDR_MAX 20 /* 16 hex digits + CRLF + NUL */
/* Writes the chunk header for n (> 0) bytes ("1a2b\r\n") into out; returns its length. The
 * caller sends header, the n bytes, then "\r\n" (writev-friendly, no copy of the data). */
size_t http1_chunk_header(char out[HTTP1_CHUNK_HDR_MAX], size_t n);
/* Appends one whole chunk (header, data, CRLF) to out; nothing for empty data. */
custos_err http1_chunk_append(buf *out, span data) CUSTOS_WUR;
/* Appends the last chunk and an empty trailer section ("0\r\n\r\n"). */
custos_err http1_chunk_end(buf *out) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Serialising a head for forwarding: hop-by-hop fields dropped, framing and extra fields added.
 */
typedef struct http1_write_opts {
	span target;             /* requests: target to write (empty = h->path, or h->target for
	                            authority/asterisk form) */
	span host;               /* requests: Host to write instead of the received one (needed
	                            for HTTP/1.0 requests without Host); empty = keep */
	http1_framing framing;   /* NONE: no framing field; LENGTH: Content-Length: content_length;
	                            CHUNKED: Transfer-Encoding: chunked; CLOSE: none */
	uint64_t content_length; /* for HTTP1_BODY_LENGTH */
	bool close;              /* add "Connection: close" */
	bool keep_alive;         /* add "Connection: keep-alive" (an HTTP/1.0 peer kept: RFC 9112
	                            §9.3, persistence is announced); ignored with close */
	const span *drop;        /* more field names to leave out (case-insensitive), may be NULL */
	size_t ndrop;
	const http1_header *add; /* fields appended after the kept ones (e.g. X-Request-Id) */
	size_t nadd;
} http1_write_opts;

/* Appends h as an HTTP/1.1 request head (method, target, kept fields, Content-Length /
 * Transfer-Encoding per opts, added fields, CRLF) to out. Host is kept, or written first from
 * opts->host, or from the authority of an absolute-form target. Expect is never forwarded:
 * the proxy answers 100-continue itself. Nothing is written on error. */
custos_err http1_write_request_head(buf *out, const http1_head *h,
                                    const http1_write_opts *opts) CUSTOS_WUR;
/* Appends h as an HTTP/1.1 response head (status line with h's status and reason) likewise.
 * Content-Length is always rewritten from opts: pass HTTP1_BODY_LENGTH with the received
 * length to keep it on HEAD and 304 answers. */
custos_err http1_write_response_head(buf *out, const http1_head *h,
                                     const http1_write_opts *opts) CUSTOS_WUR;
/* Flags of http1_write_simple_response. */
#define HTTP1_SIMPLE_CLOSE      0x1u /* "Connection: close" */
#define HTTP1_SIMPLE_KEEP_ALIVE 0x2u /* "Connection: keep-alive" (an HTTP/1.0 client kept) */
#define HTTP1_SIMPLE_HEAD                                                                          \
	0x4u /* it answers HEAD: the Content-Length a GET would get, and
                                        no content after the head (RFC 9110 §9.3.2) */
/* Appends a complete small response: status line, Content-Type (if given), Content-Length,
 * extra fields, the Connection field the flags ask for, body (not for HEAD). For errors the
 * proxy generates. */
custos_err http1_write_simple_response(buf *out, unsigned status, span content_type, span body,
                                       const http1_header *add, size_t nadd,
                                       unsigned flags) CUSTOS_WUR;

/* Static reason phrase for a status code ("Bad Request"); "Unknown" when not known. */
const char *http1_status_reason(unsigned status);
/* Static name of a method ("GET"), "" for HTTP1_M_OTHER. */
const char *http1_method_name(http1_method m);

#endif /* CUSTOS_PROXY_HTTP1_H */
