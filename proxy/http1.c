/*
 * Strict HTTP/1.1 codec: head parser, body framing decoder, chunked encoder and head writer.
 * Anything ambiguous is an error (docs/HTTP.md lists each rule with its RFC 9112 / smuggling
 * reference). Lines are found with memchr and checked with byte-class tables; parsed fields are
 * views into the caller's bytes, never copies.
 */
#include <string.h>

#include "custos/proxy.h"
#include "http1.h"

/* ---------------------------------------------------------------------------------------------
 * Byte classes (RFC 9110 §5.6.2 tchar, §5.5 field-vchar/obs-text, RFC 3986 URI characters).
 */
enum {
	C_TCHAR = 0x01, /* token character */
	C_FVAL = 0x02,  /* allowed in a field value: HTAB, SP, VCHAR, obs-text */
	C_URI = 0x04,   /* allowed in a request-target */
	C_HEX = 0x08,   /* hexadecimal digit */
	C_HOST = 0x10,  /* reg-name / IP-literal characters in a Host or authority */
	C_DIGIT = 0x20,
};

#define TOK (C_TCHAR | C_FVAL | C_URI | C_HOST)
static const uint8_t cls[256] = {
	['\t'] = C_FVAL,
	[' '] = C_FVAL,
	['!'] = TOK,
	['"'] = C_FVAL,
	['#'] = C_TCHAR | C_FVAL,
	['$'] = TOK,
	['%'] = C_TCHAR | C_FVAL | C_URI | C_HOST,
	['&'] = TOK,
	['\''] = TOK,
	['('] = C_FVAL | C_URI | C_HOST,
	[')'] = C_FVAL | C_URI | C_HOST,
	['*'] = TOK,
	['+'] = TOK,
	[','] = C_FVAL | C_URI | C_HOST,
	['-'] = TOK,
	['.'] = TOK,
	['/'] = C_FVAL | C_URI,
	['0' ... '9'] = TOK | C_HEX | C_DIGIT,
	[':'] = C_FVAL | C_URI | C_HOST,
	[';'] = C_FVAL | C_URI | C_HOST,
	['<'] = C_FVAL,
	['='] = C_FVAL | C_URI | C_HOST,
	['>'] = C_FVAL,
	['?'] = C_FVAL | C_URI,
	['@'] = C_FVAL | C_URI,
	['A' ... 'F'] = TOK | C_HEX,
	['G' ... 'Z'] = TOK,
	['['] = C_FVAL | C_URI | C_HOST,
	['\\'] = C_FVAL,
	[']'] = C_FVAL | C_URI | C_HOST,
	['^'] = C_TCHAR | C_FVAL,
	['_'] = TOK,
	['`'] = C_TCHAR | C_FVAL,
	['a' ... 'f'] = TOK | C_HEX,
	['g' ... 'z'] = TOK,
	['{'] = C_FVAL,
	['|'] = C_TCHAR | C_FVAL,
	['}'] = C_FVAL,
	['~'] = TOK,
	[0x80 ... 0xff] = C_FVAL,
};
#undef TOK

static inline bool is_cls(unsigned char c, uint8_t m)
{
	return (cls[c] & m) != 0;
}

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static inline unsigned hexval(unsigned char c)
{
	if (c <= '9')
		return (unsigned)(c - '0');
	return (unsigned)(lower(c) - 'a' + 10);
}

/* Case-insensitive compare of s with a lowercase literal. */
static bool eq_lit(span s, const char *lit, size_t n)
{
	if (s.len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)s.ptr[i]) != (unsigned char)lit[i])
			return false;
	return true;
}
#define EQ(s, lit) eq_lit((s), (lit), sizeof(lit) - 1)

/* ---------------------------------------------------------------------------------------------
 * Names and reasons.
 */
const char *http1_status_reason(unsigned status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

const char *proxy_status_reason(unsigned status)
{
	const char *r = http1_status_reason(status);
	return strcmp(r, "Unknown") == 0 ? NULL : r;
}

static const char *const method_names[] = {
	[HTTP1_M_OTHER] = "",          [HTTP1_M_GET] = "GET",         [HTTP1_M_HEAD] = "HEAD",
	[HTTP1_M_POST] = "POST",       [HTTP1_M_PUT] = "PUT",         [HTTP1_M_DELETE] = "DELETE",
	[HTTP1_M_CONNECT] = "CONNECT", [HTTP1_M_OPTIONS] = "OPTIONS", [HTTP1_M_TRACE] = "TRACE",
	[HTTP1_M_PATCH] = "PATCH",
};

const char *http1_method_name(http1_method m)
{
	if ((size_t)m >= CUSTOS_ARRAY_LEN(method_names))
		return "";
	return method_names[m];
}

/* Methods are case-sensitive (RFC 9110 §9.1). */
static http1_method method_of(span m)
{
	for (size_t i = 1; i < CUSTOS_ARRAY_LEN(method_names); i++) {
		size_t n = strlen(method_names[i]);
		if (m.len == n && memcmp(m.ptr, method_names[i], n) == 0)
			return (http1_method)i;
	}
	return HTTP1_M_OTHER;
}

/* ---------------------------------------------------------------------------------------------
 * Head parser.
 */
enum { ST_START = 0, ST_HEADERS, ST_DONE, ST_ERROR };

/* Bits of p->seen. */
#define SEEN_CL   0x1u
#define SEEN_TE   0x2u
#define SEEN_HOST 0x4u

static void limits_fill(http1_limits *out, const http1_limits *in)
{
	http1_limits d = { 0 };
	if (in != NULL)
		d = *in;
#define LIM(f, def)                                                                                \
	do {                                                                                       \
		if (d.f == 0 || d.f > (def))                                                       \
			d.f = (def);                                                               \
	} while (0)
	LIM(max_head_bytes, HTTP1_MAX_HEAD_BYTES);
	LIM(max_headers, HTTP1_MAX_HEADERS);
	LIM(max_request_line, HTTP1_MAX_REQUEST_LINE);
	LIM(max_chunk_line, HTTP1_MAX_CHUNK_LINE);
	LIM(max_trailer_bytes, HTTP1_MAX_TRAILER_BYTES);
	LIM(max_body, HTTP1_MAX_BODY);
#undef LIM
	*out = d;
}

void http1_parser_init_request(http1_parser *p, const http1_limits *lim)
{
	memset(p, 0, offsetof(http1_parser, head));
	limits_fill(&p->lim, lim);
	p->response = false;
	http1_parser_reset(p);
}

void http1_parser_init_response(http1_parser *p, const http1_limits *lim, http1_method req_meth)
{
	memset(p, 0, offsetof(http1_parser, head));
	limits_fill(&p->lim, lim);
	p->response = true;
	p->req_meth = req_meth;
	http1_parser_reset(p);
}

void http1_parser_reset(http1_parser *p)
{
	p->state = ST_START;
	p->pos = p->line_start = p->crlfs = 0;
	p->base = NULL;
	p->seen = 0;
	p->err = (http1_error){ 0 };
	p->pend = (http1_error){ 0 };
	/* Only the scalar part of the head: hdrs[] is overwritten as it fills. */
	memset(&p->head, 0, offsetof(http1_head, hdrs));
	p->head.nhdrs = 0;
	p->head.framing = HTTP1_BODY_NONE;
	p->head.content_length = 0;
	p->head.conn_flags = 0;
	p->head.keep_alive = false;
	p->head.expect_continue = false;
	p->head.upgrade = false;
	p->head.head_len = 0;
	p->head.is_response = p->response;
}

static ssize_t fail(http1_parser *p, unsigned status, const char *reason, size_t off)
{
	p->state = ST_ERROR;
	p->err.status = p->response ? 502 : status;
	p->err.reason = reason;
	p->err.offset = off;
	return -1;
}

static void rebase_span(span *s, const char *ob, const char *nb)
{
	if (s->ptr != NULL)
		s->ptr = nb + (s->ptr - ob);
}

void http1_head_rebase(http1_head *h, const char *old_base, const char *new_base)
{
	if (old_base == new_base || old_base == NULL)
		return;
	rebase_span(&h->method, old_base, new_base);
	rebase_span(&h->target, old_base, new_base);
	rebase_span(&h->scheme, old_base, new_base);
	rebase_span(&h->authority, old_base, new_base);
	rebase_span(&h->path, old_base, new_base);
	rebase_span(&h->host, old_base, new_base);
	rebase_span(&h->reason, old_base, new_base);
	for (size_t i = 0; i < h->nhdrs; i++) {
		rebase_span(&h->hdrs[i].name, old_base, new_base);
		rebase_span(&h->hdrs[i].value, old_base, new_base);
	}
}

/* uri-host [":" port]: reg-name, IPv4 or an IP-literal in brackets; port digits <= 65535.
 * require_port for authority-form (CONNECT). No userinfo (RFC 9110 §4.2.4). */
static bool valid_authority(span a, bool require_port)
{
	size_t i = 0, n = a.len;
	const unsigned char *s = (const unsigned char *)a.ptr;

	if (n == 0)
		return false;
	if (s[0] == '[') {
		/* IP-literal: hex digits, ':' and '.', (IPvFuture not accepted). */
		for (i = 1; i < n && s[i] != ']'; i++)
			if (!is_cls(s[i], C_HEX) && s[i] != ':' && s[i] != '.')
				return false;
		if (i >= n || i == 1)
			return false;
		i++;
	} else {
		for (; i < n && s[i] != ':'; i++) {
			if (!is_cls(s[i], C_HOST) || s[i] == '[' || s[i] == ']')
				return false;
			if (s[i] == '%' &&
			    (i + 2 >= n || !is_cls(s[i + 1], C_HEX) || !is_cls(s[i + 2], C_HEX)))
				return false;
		}
		if (i == 0)
			return false;
	}
	if (i == n)
		return !require_port;
	if (s[i] != ':')
		return false;
	i++;
	if (i == n)
		return !require_port; /* "host:" is allowed by RFC 3986 (empty port) */
	unsigned port = 0;
	size_t digits = 0;
	for (; i < n; i++, digits++) {
		if (!is_cls(s[i], C_DIGIT) || digits >= 5)
			return false;
		port = port * 10 + (unsigned)(s[i] - '0');
	}
	return port <= 65535;
}

/* Checks every byte of a request-target and its percent-encodings. */
static bool valid_target_bytes(span t, size_t *bad)
{
	const unsigned char *s = (const unsigned char *)t.ptr;
	for (size_t i = 0; i < t.len; i++) {
		if (!is_cls(s[i], C_URI)) {
			*bad = i;
			return false;
		}
		if (s[i] == '%' &&
		    (i + 2 >= t.len || !is_cls(s[i + 1], C_HEX) || !is_cls(s[i + 2], C_HEX))) {
			*bad = i;
			return false;
		}
	}
	return true;
}

/* Length of a path separator at s[i]: "/", or "%2F" / "%5C" which some upstreams decode into
 * one before resolving dot segments; 0 otherwise. */
static size_t sep_len(const char *s, size_t i, size_t n)
{
	if (s[i] == '/')
		return 1;
	if (s[i] == '%' && i + 2 < n &&
	    ((s[i + 1] == '2' && (s[i + 2] == 'f' || s[i + 2] == 'F')) ||
	     (s[i + 1] == '5' && (s[i + 2] == 'c' || s[i + 2] == 'C'))))
		return 3;
	return 0;
}

/* True when the path (up to '?') has a "." or ".." segment, literally or percent-encoded, also
 * between encoded separators: upstreams resolve them (RFC 3986 §5.2.4) after policy matched
 * the unresolved path. */
static bool has_dot_segment(span path)
{
	size_t i = 0, n = path.len;
	const char *s = path.ptr;
	while (i < n && s[i] != '?') {
		size_t sl = sep_len(s, i, n);
		if (sl == 0) {
			i++;
			continue;
		}
		i += sl;
		size_t dots = 0, k = i;
		for (;;) {
			if (k < n && s[k] == '.') {
				k++;
			} else if (k + 2 < n && s[k] == '%' && s[k + 1] == '2' &&
			           (s[k + 2] == 'e' || s[k + 2] == 'E')) {
				k += 3;
			} else {
				break;
			}
			dots++;
		}
		if ((dots == 1 || dots == 2) && (k == n || s[k] == '?' || sep_len(s, k, n) > 0))
			return true;
		i = k;
	}
	return false;
}

/* "HTTP/" DIGIT "." DIGIT: 1 ok (version set), 0 malformed, -1 well-formed but unsupported. */
static int parse_version(const char *v, size_t n, uint8_t *out)
{
	if (n != 8 || memcmp(v, "HTTP/", 5) != 0)
		return 0;
	if (!is_cls((unsigned char)v[5], C_DIGIT) || v[6] != '.' ||
	    !is_cls((unsigned char)v[7], C_DIGIT))
		return 0;
	if (v[5] == '1' && (v[7] == '0' || v[7] == '1')) {
		*out = (uint8_t)(10 + (v[7] - '0'));
		return 1;
	}
	return -1;
}

static ssize_t parse_request_line(http1_parser *p, const char *d, size_t a, size_t b)
{
	http1_head *h = &p->head;
	size_t i = a;

	while (i < b && is_cls((unsigned char)d[i], C_TCHAR))
		i++;
	if (i == a)
		return fail(p, 400, "request line does not start with a method token", i);
	if (i == b || d[i] != ' ')
		return fail(p, 400, "method not followed by a single space", i);
	h->method = span_of(d + a, i - a);
	h->meth = method_of(h->method);
	size_t t = ++i;
	while (i < b && d[i] != ' ')
		i++;
	if (i == t)
		return fail(p, 400, "empty request-target or more than one space", i);
	if (i == b)
		return fail(p, 400, "request line without an HTTP version (HTTP/0.9)", i);
	h->target = span_of(d + t, i - t);
	if (h->target.len > p->lim.max_request_line)
		return fail(p, 414, "request-target too long", t);
	i++;
	int v = parse_version(d + i, b - i, &h->version);
	if (v == 0)
		return fail(p, 400, "malformed HTTP version in request line", i);
	if (v < 0)
		return fail(p, 505, "HTTP version other than 1.0 or 1.1", i);

	size_t bad = 0;
	if (!valid_target_bytes(h->target, &bad))
		return fail(p, 400, "invalid character in request-target", t + bad);

	span tg = h->target;
	if (h->meth == HTTP1_M_CONNECT) {
		if (!valid_authority(tg, true))
			return fail(p, 400, "CONNECT needs an authority-form target host:port", t);
		h->form = HTTP1_TARGET_AUTHORITY;
		h->authority = tg;
	} else if (tg.ptr[0] == '/') {
		h->form = HTTP1_TARGET_ORIGIN;
		h->path = tg;
	} else if (tg.len == 1 && tg.ptr[0] == '*') {
		if (h->meth != HTTP1_M_OPTIONS)
			return fail(p, 400, "asterisk-form target only with OPTIONS", t);
		h->form = HTTP1_TARGET_ASTERISK;
	} else {
		/* absolute-form: scheme "://" authority path-abempty ["?" query] */
		size_t k = 0;
		while (k < tg.len && tg.ptr[k] != ':')
			k++;
		span scheme = span_of(tg.ptr, k);
		if (!(EQ(scheme, "http") || EQ(scheme, "https")))
			return fail(p, 400, "request-target is not origin-form or an http(s) URI",
			            t);
		if (tg.len - k < 3 || tg.ptr[k + 1] != '/' || tg.ptr[k + 2] != '/')
			return fail(p, 400, "absolute-form target without //authority", t + k);
		size_t as = k + 3, ae = as;
		while (ae < tg.len && tg.ptr[ae] != '/' && tg.ptr[ae] != '?')
			ae++;
		span auth = span_of(tg.ptr + as, ae - as);
		if (memchr(auth.ptr, '@', auth.len) != NULL)
			return fail(p, 400, "userinfo in request-target authority", t + as);
		if (!valid_authority(auth, false))
			return fail(p, 400, "invalid authority in absolute-form target", t + as);
		h->form = HTTP1_TARGET_ABSOLUTE;
		h->scheme = scheme;
		h->authority = auth;
		h->path = span_of(tg.ptr + ae, tg.len - ae);
	}
	if (h->path.len > 0 && has_dot_segment(h->path))
		return fail(p, 400, "dot segment in the request path", t);
	return 1;
}

static ssize_t parse_status_line(http1_parser *p, const char *d, size_t a, size_t b)
{
	http1_head *h = &p->head;
	if (b - a < 12 || d[a + 8] != ' ')
		return fail(p, 502, "malformed status line", a);
	int v = parse_version(d + a, 8, &h->version);
	if (v <= 0)
		return fail(p, 502, "unsupported HTTP version in status line", a);
	size_t i = a + 9;
	unsigned st = 0;
	for (size_t k = 0; k < 3; k++, i++) {
		if (!is_cls((unsigned char)d[i], C_DIGIT))
			return fail(p, 502, "malformed status code", i);
		st = st * 10 + (unsigned)(d[i] - '0');
	}
	if (st < 100 || st > 599)
		return fail(p, 502, "status code out of range", a + 9);
	h->status = st;
	if (i < b) {
		if (d[i] != ' ')
			return fail(p, 502, "status code not followed by a space", i);
		i++;
		for (size_t k = i; k < b; k++)
			if (!is_cls((unsigned char)d[k], C_FVAL))
				return fail(p, 502, "control character in reason phrase", k);
		h->reason = span_of(d + i, b - i);
	} else {
		h->reason = span_of(d + i, 0);
	}
	return 1;
}

/* Walks a comma-separated list, calling fn on each trimmed, non-empty element. */
typedef bool (*list_fn)(void *ctx, span elem);
static bool list_each(span list, list_fn fn, void *ctx)
{
	size_t i = 0;
	while (i <= list.len) {
		size_t j = i;
		while (j < list.len && list.ptr[j] != ',')
			j++;
		span e = span_trim(span_of(list.ptr + i, j - i));
		if (e.len > 0 && !fn(ctx, e))
			return false;
		i = j + 1;
	}
	return true;
}

bool http1_list_has(span list, span token)
{
	size_t i = 0;
	while (i <= list.len) {
		size_t j = i;
		while (j < list.len && list.ptr[j] != ',')
			j++;
		span e = span_trim(span_of(list.ptr + i, j - i));
		if (span_case_eq(e, token))
			return true;
		i = j + 1;
	}
	return false;
}

static bool conn_token(void *ctx, span e)
{
	unsigned *f = ctx;
	if (EQ(e, "close"))
		*f |= HTTP1_CONN_CLOSE;
	else if (EQ(e, "keep-alive"))
		*f |= HTTP1_CONN_KEEP_ALIVE;
	else if (EQ(e, "upgrade"))
		*f |= HTTP1_CONN_UPGRADE;
	else
		*f |= HTTP1_CONN_OTHER;
	return true;
}

/* OWS: spaces and tabs. */
static size_t skip_ows(span v, size_t i)
{
	while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t'))
		i++;
	return i;
}

static size_t skip_token(span v, size_t i)
{
	while (i < v.len && is_cls((unsigned char)v.ptr[i], C_TCHAR))
		i++;
	return i;
}

/* Transfer-Encoding value (RFC 9112 §6.1, RFC 9110 §10.1.4):
 *   #( token *( OWS ";" OWS token BWS "=" BWS token ) )
 * Returns 0 for exactly "chunked", 400 for a malformed list (empty element, a non-token,
 * two codings not separated by a comma, quoted parameter values, chunked with parameters,
 * not last or applied twice: RFC 9112 §6.3 p4 and §7), 501 for a well-formed list with a
 * coding custos does not implement (RFC 9112 §6.1). */
static unsigned check_te(span v)
{
	if (EQ(v, "chunked"))
		return 0;
	bool chunked_seen = false, last_chunked = false;
	size_t i = 0;
	for (;;) {
		i = skip_ows(v, i);
		size_t t = i;
		i = skip_token(v, i);
		if (i == t)
			return 400; /* empty element, or not a token */
		bool chunked = EQ(span_of(v.ptr + t, i - t), "chunked");
		bool params = false;
		i = skip_ows(v, i);
		while (i < v.len && v.ptr[i] == ';') {
			params = true;
			i = skip_ows(v, i + 1);
			size_t n = i;
			i = skip_token(v, i);
			if (i == n)
				return 400;
			i = skip_ows(v, i);
			if (i == v.len || v.ptr[i] != '=')
				return 400;
			i = skip_ows(v, i + 1);
			n = i;
			i = skip_token(v, i); /* a quoted-string value is refused: not worth a
			                         differential in a field nothing here decodes */
			if (i == n)
				return 400;
			i = skip_ows(v, i);
		}
		if (chunked && (params || chunked_seen))
			return 400;
		chunked_seen = chunked_seen || chunked;
		last_chunked = chunked;
		if (i == v.len)
			break;
		if (v.ptr[i] != ',')
			return 400; /* "chun ked", "chunked x": two words in one element */
		i++;
	}
	if (chunked_seen && !last_chunked)
		return 400;
	return 501;
}

/* Statuses other than 400 found in a field (413 for Content-Length, 417 for Expect, 501 for
 * a coding) wait until the whole head is in: a syntax error, a repetition or a framing
 * conflict anywhere in the head is then answered 400 whatever the field order, so the
 * status cannot depend on which field came first. Of several, the highest rank stays. */
static unsigned defer_rank(unsigned status)
{
	return status == 501 ? 3 : status == 413 ? 2 : status == 417 ? 1 : 0;
}

static void defer_fail(http1_parser *p, unsigned status, const char *reason, size_t off)
{
	if (defer_rank(status) > defer_rank(p->pend.status))
		p->pend = (http1_error){ status, reason, off };
}

static ssize_t header_semantics(http1_parser *p, const http1_header *f, size_t off)
{
	http1_head *h = &p->head;
	span n = f->name;

	switch (n.len) {
	case 4:
		if (EQ(n, "host")) {
			if (p->seen & SEEN_HOST)
				return fail(p, 400, "more than one Host field", off);
			p->seen |= SEEN_HOST;
			h->host = f->value;
			if (!p->response && f->value.len > 0 && !valid_authority(f->value, false))
				return fail(p, 400, "invalid Host field value", off);
		}
		break;
	case 6:
		if (EQ(n, "expect") && !p->response && h->version == 11) {
			if (EQ(f->value, "100-continue"))
				h->expect_continue = true;
			else
				defer_fail(p, 417, "unsupported expectation", off);
		}
		break;
	case 7:
		if (EQ(n, "upgrade"))
			h->upgrade = true;
		break;
	case 10:
		if (EQ(n, "connection"))
			(void)list_each(f->value, conn_token, &h->conn_flags);
		break;
	case 14:
		if (EQ(n, "content-length")) {
			if (p->seen & SEEN_CL)
				return fail(p, 400, "repeated Content-Length field", off);
			if (p->seen & SEEN_TE)
				return fail(p, 400, "both Content-Length and Transfer-Encoding",
				            off);
			p->seen |= SEEN_CL;
			span v = f->value;
			if (v.len == 0)
				return fail(p, 400, "empty Content-Length", off);
			uint64_t cl = 0;
			bool too_big = false;
			for (size_t i = 0; i < v.len; i++) {
				unsigned char c = (unsigned char)v.ptr[i];
				if (!is_cls(c, C_DIGIT))
					return fail(p, 400, "Content-Length is not only digits",
					            off);
				if (cl > (UINT64_MAX - 9) / 10)
					too_big = true; /* the digits are still checked */
				else
					cl = cl * 10 + (uint64_t)(c - '0');
			}
			if (too_big)
				defer_fail(p, 413, "Content-Length too large", off);
			else if (cl > p->lim.max_body)
				defer_fail(p, 413, "Content-Length above the body limit", off);
			h->content_length = too_big ? 0 : cl;
		}
		break;
	case 17:
		if (EQ(n, "transfer-encoding")) {
			if (p->seen & SEEN_TE)
				return fail(p, 400, "repeated Transfer-Encoding field", off);
			if (p->seen & SEEN_CL)
				return fail(p, 400, "both Content-Length and Transfer-Encoding",
				            off);
			p->seen |= SEEN_TE;
			unsigned st = check_te(f->value);
			if (st == 501)
				defer_fail(p, 501, "transfer coding other than chunked", off);
			else if (st != 0)
				return fail(p, 400, "malformed Transfer-Encoding", off);
		}
		break;
	default:
		break;
	}
	return 1;
}

/* Skips 8 bytes at a time while none is a control (HTAB included: the byte loop that follows
 * accepts it) or DEL: SWAR tests on a 64-bit word, exact for "is there such a byte". */
static size_t fval_run8(const unsigned char *s, size_t i, size_t b)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	while (b - i >= 8) {
		uint64_t x;
		memcpy(&x, s + i, 8);
		uint64_t d = x ^ (ones * 0x7f);
		uint64_t ctl = (x - ones * 0x20) & ~x;
		uint64_t del = (d - ones) & ~d;
		if (((ctl | del) & highs) != 0)
			break;
		i += 8;
	}
	return i;
}

/* "Transfer_Encoding" and "Content_Length" are framing fields to gateways that map '_' to
 * '-' (CGI-style environments): an ambiguity, so refused. */
static bool framing_lookalike(span n)
{
	if (n.len != 14 && n.len != 17)
		return false;
	if (memchr(n.ptr, '_', n.len) == NULL)
		return false;
	const char *want = n.len == 14 ? "content-length" : "transfer-encoding";
	for (size_t i = 0; i < n.len; i++) {
		unsigned char c = lower((unsigned char)n.ptr[i]);
		if (c == '_')
			c = '-';
		if (c != (unsigned char)want[i])
			return false;
	}
	return true;
}

static ssize_t parse_header_line(http1_parser *p, const char *d, size_t a, size_t b)
{
	http1_head *h = &p->head;
	const unsigned char *s = (const unsigned char *)d;

	if (s[a] == ' ' || s[a] == '\t')
		return fail(p, 400, "obs-fold or whitespace before a field name", a);
	size_t i = a;
	while (i < b && is_cls(s[i], C_TCHAR))
		i++;
	if (i == b)
		return fail(p, 400, "header line without a colon", i);
	if (s[i] != ':') {
		if (s[i] == ' ' || s[i] == '\t')
			return fail(p, 400, "whitespace between field name and colon", i);
		return fail(p, 400, "invalid character in field name", i);
	}
	if (i == a)
		return fail(p, 400, "empty field name", i);
	if (h->nhdrs >= p->lim.max_headers)
		return fail(p, 431, "too many header fields", a);
	span name = span_of(d + a, i - a);
	if (framing_lookalike(name))
		return fail(p, 400, "framing field name spelt with '_'", a);
	i++;
	while (i < b && (s[i] == ' ' || s[i] == '\t'))
		i++;
	size_t vs = i;
	i = fval_run8(s, i, b);
	for (; i < b; i++)
		if (!is_cls(s[i], C_FVAL))
			return fail(p, 400, "control character in field value", i);
	size_t ve = b;
	while (ve > vs && (s[ve - 1] == ' ' || s[ve - 1] == '\t'))
		ve--;
	http1_header *f = &h->hdrs[h->nhdrs++];
	f->name = name;
	f->value = span_of(d + vs, ve - vs);
	return header_semantics(p, f, a);
}

/* The whole head is in: cross-field rules and framing (RFC 9112 §6.1-6.3). */
static ssize_t finish_request(http1_parser *p, size_t end)
{
	http1_head *h = &p->head;

	if (h->version == 11 && !(p->seen & SEEN_HOST))
		return fail(p, 400, "HTTP/1.1 request without Host", end);
	if (h->version == 11 && h->host.len == 0 && h->form != HTTP1_TARGET_ASTERISK)
		return fail(p, 400, "empty Host", end);
	if ((h->form == HTTP1_TARGET_ABSOLUTE || h->form == HTTP1_TARGET_AUTHORITY) &&
	    (p->seen & SEEN_HOST) && !span_case_eq(h->host, h->authority))
		return fail(p, 400, "Host differs from the request-target authority", end);
	if (p->seen & SEEN_TE) {
		if (h->version == 10)
			return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request", end);
		h->framing = HTTP1_BODY_CHUNKED;
	} else if (p->seen & SEEN_CL) {
		h->framing = HTTP1_BODY_LENGTH;
	} else {
		h->framing = HTTP1_BODY_NONE;
	}
	if (h->meth == HTTP1_M_CONNECT &&
	    (h->framing == HTTP1_BODY_CHUNKED || h->content_length > 0))
		return fail(p, 400, "CONNECT request with content", end);
	if (p->pend.status)
		return fail(p, p->pend.status, p->pend.reason, p->pend.offset);
	if (h->version == 11)
		h->keep_alive = !(h->conn_flags & HTTP1_CONN_CLOSE);
	else
		h->keep_alive = (h->conn_flags & (HTTP1_CONN_KEEP_ALIVE | HTTP1_CONN_CLOSE)) ==
		                HTTP1_CONN_KEEP_ALIVE;
	return 1;
}

static ssize_t finish_response(http1_parser *p, size_t end)
{
	http1_head *h = &p->head;
	unsigned st = h->status;

	if ((p->seen & SEEN_TE) && h->version == 10)
		return fail(p, 502, "Transfer-Encoding in an HTTP/1.0 response", end);
	if (p->pend.status)
		return fail(p, 502, p->pend.reason, p->pend.offset);
	if (st == 101)
		return fail(p, 502, "101 Switching Protocols was never asked for", end);
	if (st < 200 || st == 204 || st == 304 || p->req_meth == HTTP1_M_HEAD)
		h->framing = HTTP1_BODY_NONE;
	else if (p->req_meth == HTTP1_M_CONNECT && st < 300)
		h->framing = HTTP1_BODY_TUNNEL;
	else if (p->seen & SEEN_TE)
		h->framing = HTTP1_BODY_CHUNKED;
	else if (p->seen & SEEN_CL)
		h->framing = HTTP1_BODY_LENGTH;
	else
		h->framing = HTTP1_BODY_CLOSE;
	if (h->framing == HTTP1_BODY_NONE)
		h->content_length = 0;
	if (h->version == 11)
		h->keep_alive = !(h->conn_flags & HTTP1_CONN_CLOSE);
	else
		h->keep_alive = (h->conn_flags & (HTTP1_CONN_KEEP_ALIVE | HTTP1_CONN_CLOSE)) ==
		                HTTP1_CONN_KEEP_ALIVE;
	if (h->framing == HTTP1_BODY_CLOSE || h->framing == HTTP1_BODY_TUNNEL)
		h->keep_alive = false;
	return 1;
}

ssize_t http1_parse_head(http1_parser *p, const char *data, size_t len)
{
	if (p->state == ST_DONE)
		return (ssize_t)p->head.head_len;
	if (p->state == ST_ERROR)
		return -1;
	if (p->base != data) {
		http1_head_rebase(&p->head, p->base, data);
		p->base = data;
	}
	const size_t max_head = p->lim.max_head_bytes;

	for (;;) {
		/* Find the end of the current line within the limits. */
		size_t bound = len < max_head ? len : max_head;
		bool line_limit = false;
		if (p->state == ST_START) {
			size_t lb = p->line_start + p->lim.max_request_line + 2;
			if (lb < bound) {
				bound = lb;
				line_limit = true;
			}
		}
		const char *lf = NULL;
		if (p->pos < bound)
			lf = memchr(data + p->pos, '\n', bound - p->pos);
		if (lf == NULL) {
			if (bound < len || len >= max_head) {
				if (line_limit)
					return fail(p, 414, "request line too long", p->line_start);
				return fail(p, 431, "header section too large", bound);
			}
			p->pos = len;
			return 0;
		}
		size_t e = (size_t)(lf - data); /* index of LF */
		size_t a = p->line_start;
		if (e == a || data[e - 1] != '\r')
			return fail(p, 400, "bare LF line ending", e);
		size_t b = e - 1; /* line contents are data[a..b) */
		p->line_start = p->pos = e + 1;

		if (p->state == ST_START) {
			if (a == b) {
				/* RFC 9112 §2.2: empty lines before a request line are ignored. */
				if (p->response || ++p->crlfs > HTTP1_MAX_LEADING_CRLF)
					return fail(p, 400, "empty line before the start line", a);
				continue;
			}
			ssize_t r = p->response ? parse_status_line(p, data, a, b)
			                        : parse_request_line(p, data, a, b);
			if (r < 0)
				return r;
			p->state = ST_HEADERS;
			continue;
		}
		if (a == b) {
			ssize_t r = p->response ? finish_response(p, a) : finish_request(p, a);
			if (r < 0)
				return r;
			p->state = ST_DONE;
			p->head.head_len = e + 1;
			return (ssize_t)(e + 1);
		}
		ssize_t r = parse_header_line(p, data, a, b);
		if (r < 0)
			return r;
	}
}

bool http1_head_ready(const char *data, size_t len, size_t max_head, size_t *scan)
{
	if (max_head == 0 || max_head > HTTP1_MAX_HEAD_BYTES)
		max_head = HTTP1_MAX_HEAD_BYTES;
	if (len >= max_head)
		return true;
	size_t i = *scan;
	while (i < len) {
		const char *lf = memchr(data + i, '\n', len - i);
		if (lf == NULL) {
			i = len;
			break;
		}
		size_t k = (size_t)(lf - data);
		if (k + 1 < len && data[k + 1] == '\n')
			return true;
		if (k + 2 < len && data[k + 1] == '\r' && data[k + 2] == '\n')
			return true;
		if (k + 1 == len || (k + 2 == len && data[k + 1] == '\r')) {
			i = k; /* the empty line may complete with the next read */
			break;
		}
		i = k + 1;
	}
	*scan = i;
	return false;
}

/* ---------------------------------------------------------------------------------------------
 * Header lookup.
 */
bool http1_header_get(const http1_head *h, span name, span *value)
{
	for (size_t i = 0; i < h->nhdrs; i++)
		if (span_case_eq(h->hdrs[i].name, name)) {
			*value = h->hdrs[i].value;
			return true;
		}
	return false;
}

size_t http1_header_count(const http1_head *h, span name)
{
	size_t n = 0;
	for (size_t i = 0; i < h->nhdrs; i++)
		if (span_case_eq(h->hdrs[i].name, name))
			n++;
	return n;
}

static bool static_hop_by_hop(span n)
{
	switch (n.len) {
	case 2:
		return EQ(n, "te");
	case 7:
		return EQ(n, "trailer") || EQ(n, "upgrade");
	case 10:
		return EQ(n, "connection") || EQ(n, "keep-alive");
	case 16:
		return EQ(n, "proxy-connection");
	case 17:
		return EQ(n, "transfer-encoding");
	default:
		return false;
	}
}

bool http1_is_hop_by_hop(const http1_head *h, span name)
{
	if (static_hop_by_hop(name))
		return true;
	/* A client must not be able to strip Host by listing it in Connection. */
	if (!(h->conn_flags & HTTP1_CONN_OTHER) || EQ(name, "host"))
		return false;
	for (size_t i = 0; i < h->nhdrs; i++)
		if (EQ(h->hdrs[i].name, "connection") && http1_list_has(h->hdrs[i].value, name))
			return true;
	return false;
}

/* ---------------------------------------------------------------------------------------------
 * Body decoder.
 */
enum {
	B_DONE = 0,
	B_LENGTH,
	B_RAW, /* close-delimited or tunnel */
	B_SIZE,
	B_SIZE_MORE, /* after the first hex digit */
	B_EXT,
	B_SIZE_LF,
	B_DATA,
	B_DATA_CR,
	B_DATA_LF,
	B_TRL_START, /* start of a trailer line (or the final CRLF) */
	B_TRL_NAME,
	B_TRL_VALUE,
	B_TRL_LF,
	B_END_LF, /* CR of the final empty line seen */
	B_ERROR,
};

void http1_body_init(http1_body *b, const http1_head *h, const http1_limits *lim)
{
	memset(b, 0, sizeof(*b));
	limits_fill(&b->lim, lim);
	b->framing = h->framing;
	b->response = h->is_response;
	switch (h->framing) {
	case HTTP1_BODY_NONE:
		b->state = B_DONE;
		b->done = true;
		break;
	case HTTP1_BODY_LENGTH:
		b->remaining = h->content_length;
		b->state = h->content_length ? B_LENGTH : B_DONE;
		b->done = h->content_length == 0;
		break;
	case HTTP1_BODY_CHUNKED:
		b->state = B_SIZE;
		break;
	case HTTP1_BODY_CLOSE:
	case HTTP1_BODY_TUNNEL:
		b->state = B_RAW;
		break;
	}
}

static ssize_t body_fail(http1_body *b, unsigned status, const char *reason, size_t off)
{
	b->state = B_ERROR;
	b->err.status = b->response ? 502 : status;
	b->err.reason = reason;
	b->err.offset = off;
	return -1;
}

ssize_t http1_body_decode(http1_body *b, const char *in, size_t len, span *data, bool *done)
{
	size_t i = 0;
	const unsigned char *s = (const unsigned char *)in;

	*data = span_of(in, 0);
	*done = b->done;
	if (b->state == B_ERROR)
		return -1;
	while (i < len) {
		unsigned char c = s[i];
		switch (b->state) {
		case B_DONE:
			*done = true;
			return (ssize_t)i;
		case B_RAW: {
			*data = span_of(in, len);
			b->total += len;
			return (ssize_t)len;
		}
		case B_LENGTH: {
			size_t n = len - i;
			if (n > b->remaining)
				n = (size_t)b->remaining;
			*data = span_of(in + i, n);
			b->remaining -= n;
			b->total += n;
			if (b->remaining == 0) {
				b->state = B_DONE;
				b->done = *done = true;
			}
			return (ssize_t)(i + n);
		}
		case B_SIZE:
		case B_SIZE_MORE:
			if (++b->line_len > b->lim.max_chunk_line)
				return body_fail(b, 400, "chunk-size line too long", i);
			if (is_cls(c, C_HEX)) {
				if (b->remaining > (UINT64_MAX >> 4))
					return body_fail(b, 413, "chunk size overflows", i);
				b->remaining = (b->remaining << 4) | hexval(c);
				if (b->remaining > b->lim.max_body - b->total)
					return body_fail(b, 413, "chunked body above the limit", i);
				b->state = B_SIZE_MORE;
			} else if (b->state == B_SIZE) {
				return body_fail(b, 400,
				                 "chunk-size does not start with a hex digit", i);
			} else if (c == ';') {
				b->state = B_EXT;
			} else if (c == '\r') {
				b->state = B_SIZE_LF;
			} else {
				/* "0x", "-", "+", whitespace without an extension, bare LF... */
				return body_fail(b, 400, "invalid character after chunk-size", i);
			}
			i++;
			break;
		case B_EXT:
			/* Extensions are discarded (the proxy re-frames); only their bytes are
			 * checked: no controls but HTAB, bounded by the line limit. */
			if (++b->line_len > b->lim.max_chunk_line)
				return body_fail(b, 400, "chunk extensions too long", i);
			if (c == '\r')
				b->state = B_SIZE_LF;
			else if (!is_cls(c, C_FVAL))
				return body_fail(b, 400, "control character in chunk extension", i);
			i++;
			break;
		case B_SIZE_LF:
			if (c != '\n')
				return body_fail(b, 400, "chunk-size line not ended by CRLF", i);
			i++;
			b->line_len = 0;
			b->state = b->remaining ? B_DATA : B_TRL_START;
			break;
		case B_DATA: {
			size_t n = len - i;
			if (n > b->remaining)
				n = (size_t)b->remaining;
			*data = span_of(in + i, n);
			b->remaining -= n;
			b->total += n;
			if (b->remaining == 0)
				b->state = B_DATA_CR;
			return (ssize_t)(i + n);
		}
		case B_DATA_CR:
			if (c != '\r')
				return body_fail(b, 400, "chunk data not followed by CRLF", i);
			b->state = B_DATA_LF;
			i++;
			break;
		case B_DATA_LF:
			if (c != '\n')
				return body_fail(b, 400, "chunk data not followed by CRLF", i);
			b->state = B_SIZE;
			i++;
			break;
		case B_TRL_START:
			if (c == '\r') {
				b->state = B_END_LF;
				i++;
				break;
			}
			if (++b->trailers > b->lim.max_headers)
				return body_fail(b, 431, "too many trailer fields", i);
			if (!is_cls(c, C_TCHAR))
				return body_fail(b, 400, "invalid trailer field line", i);
			b->state = B_TRL_NAME;
			goto trailer_byte;
		case B_TRL_NAME:
			if (c == ':')
				b->state = B_TRL_VALUE;
			else if (!is_cls(c, C_TCHAR))
				return body_fail(b, 400, "invalid character in trailer field name",
				                 i);
			goto trailer_byte;
		case B_TRL_VALUE:
			if (c == '\r')
				b->state = B_TRL_LF;
			else if (!is_cls(c, C_FVAL))
				return body_fail(b, 400, "control character in trailer field", i);
			goto trailer_byte;
		case B_TRL_LF:
			if (c != '\n')
				return body_fail(b, 400, "bare CR in trailer section", i);
			b->state = B_TRL_START;
			goto trailer_byte;
		case B_END_LF:
			if (c != '\n')
				return body_fail(b, 400, "chunked body not ended by CRLF", i);
			i++;
			b->state = B_DONE;
			b->done = *done = true;
			return (ssize_t)i;
		default:
			return body_fail(b, 400, "decoder in a bad state", i);
		}
		continue;
	trailer_byte:
		if (++b->trailer_bytes > b->lim.max_trailer_bytes)
			return body_fail(b, 431, "trailer section too large", i);
		i++;
	}
	*done = b->done;
	return (ssize_t)i;
}

custos_err http1_body_eof(http1_body *b)
{
	if (b->done || b->state == B_RAW)
		return CUSTOS_OK;
	return err_set(CUSTOS_ERR_PARSE, "connection closed inside a %s body",
	               b->framing == HTTP1_BODY_CHUNKED ? "chunked" : "length-delimited");
}

/* ---------------------------------------------------------------------------------------------
 * Chunked encoder.
 */
size_t http1_chunk_header(char out[HTTP1_CHUNK_HDR_MAX], size_t n)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	size_t k = 0;
	do {
		tmp[k++] = hex[n & 0xf];
		n >>= 4;
	} while (n != 0 && k < sizeof(tmp));
	size_t o = 0;
	while (k > 0)
		out[o++] = tmp[--k];
	out[o++] = '\r';
	out[o++] = '\n';
	out[o] = '\0';
	return o;
}

custos_err http1_chunk_append(buf *out, span data)
{
	if (data.len == 0)
		return CUSTOS_OK;
	char hdr[HTTP1_CHUNK_HDR_MAX];
	size_t hl = http1_chunk_header(hdr, data.len);
	GUARD(buf_reserve(out, hl + data.len + 2));
	GUARD(buf_append(out, hdr, hl));
	GUARD(buf_append(out, data.ptr, data.len));
	return buf_append(out, "\r\n", 2);
}

custos_err http1_chunk_end(buf *out)
{
	return buf_append(out, "0\r\n\r\n", 5);
}

/* ---------------------------------------------------------------------------------------------
 * Head writer. Sizes are computed first so the output is reserved once and filled with memcpy.
 */
typedef struct emitter {
	uint8_t *p;
	size_t n;
} emitter;

static inline void emit(emitter *e, const void *src, size_t n)
{
	if (e->p != NULL && n > 0)
		memcpy(e->p + e->n, src, n);
	e->n += n;
}
static inline void emit_span(emitter *e, span s)
{
	emit(e, s.ptr, s.len);
}
#define EMIT_LIT(e, lit) emit((e), (lit), sizeof(lit) - 1)

static void emit_u64(emitter *e, uint64_t v)
{
	char tmp[24];
	size_t k = sizeof(tmp);
	do {
		tmp[--k] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	emit(e, tmp + k, sizeof(tmp) - k);
}

static bool dropped(const http1_head *h, const http1_write_opts *o, span name, span host)
{
	if (http1_is_hop_by_hop(h, name))
		return true;
	if (EQ(name, "content-length"))
		return true;
	if (!h->is_response && (EQ(name, "expect") || (host.len > 0 && EQ(name, "host"))))
		return true;
	for (size_t i = 0; i < o->ndrop; i++)
		if (span_case_eq(o->drop[i], name))
			return true;
	return false;
}

/* host: a Host value written first, replacing the received field; empty = keep that one. */
static void emit_fields(emitter *e, const http1_head *h, const http1_write_opts *o, span host,
                        const bool *keep)
{
	if (host.len > 0) {
		EMIT_LIT(e, "Host: ");
		emit_span(e, host);
		EMIT_LIT(e, "\r\n");
	}
	for (size_t i = 0; i < h->nhdrs; i++) {
		const http1_header *f = &h->hdrs[i];
		if (!keep[i])
			continue;
		emit_span(e, f->name);
		EMIT_LIT(e, ": ");
		emit_span(e, f->value);
		EMIT_LIT(e, "\r\n");
	}
	if (o->framing == HTTP1_BODY_LENGTH) {
		EMIT_LIT(e, "Content-Length: ");
		emit_u64(e, o->content_length);
		EMIT_LIT(e, "\r\n");
	} else if (o->framing == HTTP1_BODY_CHUNKED) {
		EMIT_LIT(e, "Transfer-Encoding: chunked\r\n");
	}
	if (o->close)
		EMIT_LIT(e, "Connection: close\r\n");
	else if (o->keep_alive)
		EMIT_LIT(e, "Connection: keep-alive\r\n");
	for (size_t i = 0; i < o->nadd; i++) {
		emit_span(e, o->add[i].name);
		EMIT_LIT(e, ": ");
		emit_span(e, o->add[i].value);
		EMIT_LIT(e, "\r\n");
	}
	EMIT_LIT(e, "\r\n");
}

/* Added fields come from the proxy, but a CR or LF in them would split the head: refuse. */
static custos_err check_added(const http1_write_opts *o)
{
	for (size_t i = 0; i < o->nadd; i++) {
		span n = o->add[i].name, v = o->add[i].value;
		ENSURE(n.len > 0, CUSTOS_ERR_INVAL, "empty header name to add");
		for (size_t k = 0; k < n.len; k++)
			ENSURE(is_cls((unsigned char)n.ptr[k], C_TCHAR), CUSTOS_ERR_INVAL,
			       "invalid header name to add");
		for (size_t k = 0; k < v.len; k++)
			ENSURE(is_cls((unsigned char)v.ptr[k], C_FVAL), CUSTOS_ERR_INVAL,
			       "control character in a header value to add");
	}
	return CUSTOS_OK;
}

static custos_err write_head(buf *out, const http1_head *h, const http1_write_opts *o,
                             bool response)
{
	static const http1_write_opts none = { 0 };
	if (o == NULL)
		o = &none;
	GUARD(check_added(o));
	span host = { "", 0 };
	if (!response && o->host.len > 0) {
		ENSURE(valid_authority(o->host, false), CUSTOS_ERR_INVAL, "invalid Host to write");
		host = o->host;
	} else if (!response && h->form == HTTP1_TARGET_ABSOLUTE) {
		host = h->authority;
	}
	span target = o->target;
	bool slash = false;
	if (!response && target.len == 0) {
		if (h->form == HTTP1_TARGET_ORIGIN || h->form == HTTP1_TARGET_ABSOLUTE) {
			target = h->path;
			slash = target.len == 0 || target.ptr[0] != '/';
		} else {
			target = h->target;
		}
	}
	for (size_t k = 0; k < target.len; k++)
		ENSURE(is_cls((unsigned char)target.ptr[k], C_URI) || target.ptr[k] == '*',
		       CUSTOS_ERR_INVAL, "invalid character in request-target to write");

	bool keep[HTTP1_MAX_HEADERS];
	for (size_t i = 0; i < h->nhdrs; i++)
		keep[i] = !dropped(h, o, h->hdrs[i].name, host);

	for (int pass = 0; pass < 2; pass++) {
		emitter e = { NULL, 0 };
		if (pass == 1) {
			e.p = buf_tail(out);
		}
		if (response) {
			char st[4] = { (char)('0' + h->status / 100 % 10),
				       (char)('0' + h->status / 10 % 10),
				       (char)('0' + h->status % 10), ' ' };
			EMIT_LIT(&e, "HTTP/1.1 ");
			emit(&e, st, 4);
			emit_span(&e, h->reason);
			EMIT_LIT(&e, "\r\n");
		} else {
			if (h->meth != HTTP1_M_OTHER)
				emit(&e, method_names[h->meth], strlen(method_names[h->meth]));
			else
				emit_span(&e, h->method);
			EMIT_LIT(&e, " ");
			if (slash)
				EMIT_LIT(&e, "/");
			emit_span(&e, target);
			EMIT_LIT(&e, " HTTP/1.1\r\n");
		}
		emit_fields(&e, h, o, host, keep);
		if (pass == 0)
			GUARD(buf_reserve(out, e.n));
		else
			buf_commit(out, e.n);
	}
	return CUSTOS_OK;
}

custos_err http1_write_request_head(buf *out, const http1_head *h, const http1_write_opts *opts)
{
	ENSURE(!h->is_response, CUSTOS_ERR_INVAL, "not a request head");
	return write_head(out, h, opts, false);
}

custos_err http1_write_response_head(buf *out, const http1_head *h, const http1_write_opts *opts)
{
	ENSURE(h->is_response && h->status >= 100 && h->status <= 599, CUSTOS_ERR_INVAL,
	       "not a response head");
	return write_head(out, h, opts, true);
}

custos_err http1_write_simple_response(buf *out, unsigned status, span content_type, span body,
                                       const http1_header *add, size_t nadd, unsigned flags)
{
	ENSURE(status >= 100 && status <= 599, CUSTOS_ERR_INVAL, "bad status %u", status);
	http1_head h;
	memset(&h, 0, offsetof(http1_head, hdrs));
	h.is_response = true;
	h.status = status;
	h.reason = span_cstr(http1_status_reason(status));
	h.nhdrs = 0;
	h.conn_flags = 0;
	http1_header extra[1 + 16];
	ENSURE(nadd <= 16, CUSTOS_ERR_LIMIT, "too many fields for a simple response");
	size_t n = 0;
	if (content_type.len > 0)
		extra[n++] = (http1_header){ SPAN_LIT("Content-Type"), content_type };
	for (size_t i = 0; i < nadd; i++)
		extra[n++] = add[i];
	http1_write_opts o = {
		.framing = HTTP1_BODY_LENGTH,
		.content_length = body.len,
		.close = (flags & HTTP1_SIMPLE_CLOSE) != 0,
		.keep_alive = (flags & HTTP1_SIMPLE_KEEP_ALIVE) != 0,
		.add = extra,
		.nadd = n,
	};
	if (status < 200 || status == 204 || status == 304)
		o.framing = HTTP1_BODY_NONE;
	GUARD(write_head(out, &h, &o, true));
	if (o.framing == HTTP1_BODY_NONE || body.len == 0 || (flags & HTTP1_SIMPLE_HEAD))
		return CUSTOS_OK;
	return buf_append(out, body.ptr, body.len);
}
