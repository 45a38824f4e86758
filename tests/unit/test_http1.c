/*
 * HTTP/1.1 codec tests: requests and responses accepted and rejected, body framing, the
 * smuggling corpus (tests/fixtures/smuggling), pipelining, the writer and the chunked encoder.
 * Every message is also fed one byte at a time and split in two at every offset, into freshly
 * allocated buffers (so spans are rebased and ASan sees any read past the bytes given), and
 * must give the same result.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http1.h"

/* ---------------------------------------------------------------------------------------------
 * Driver: runs one message through head parser and body decoder, feeding it in pieces.
 */
typedef struct result {
	int status;      /* 0 accepted; else the error status */
	bool incomplete; /* all bytes given, message not finished */
	bool head_error;
	size_t err_offset; /* head errors only */
	size_t head_len;
	size_t consumed; /* head + body bytes */
	http1_head head;
	char *base; /* the buffer the head's spans point into (owned) */
	buf body;
} result;

enum { FEED_FULL = 0, FEED_BYTES, FEED_SPLIT };

static void result_free(result *r)
{
	free(r->base);
	buf_free(&r->body);
}

static void run(const char *data, size_t n, int mode, size_t split, bool response,
                http1_method req_meth, const http1_limits *lim, result *r)
{
	http1_parser p;
	http1_body b;
	bool head_done = false;
	size_t pos = 0;
	char *cur = NULL;
	const char *head_base = NULL;
	/* Copying each prefix is quadratic: only for inputs of moderate size. */
	bool copy = n <= 4096;

	memset(r, 0, sizeof(*r));
	buf_init(&r->body, 1u << 24);
	if (response)
		http1_parser_init_response(&p, lim, req_meth);
	else
		http1_parser_init_request(&p, lim);

	size_t step = 0;
	for (;;) {
		size_t avail;
		if (mode == FEED_FULL)
			avail = n;
		else if (mode == FEED_BYTES)
			avail = step + 1 > n ? n : step + 1;
		else
			avail = step == 0 ? split : n;
		step++;
		char *nb;
		if (copy) {
			nb = malloc(avail ? avail : 1);
			assert_non_null(nb);
			if (avail)
				memcpy(nb, data, avail);
			free(cur);
			cur = nb;
		} else {
			if (cur == NULL) {
				cur = malloc(n ? n : 1);
				assert_non_null(cur);
				if (n)
					memcpy(cur, data, n);
			}
			nb = cur;
		}
		if (!head_done) {
			ssize_t k = http1_parse_head(&p, nb, avail);
			if (k < 0) {
				r->status = (int)p.err.status;
				assert_non_null(p.err.reason);
				r->head_error = true;
				r->err_offset = p.err.offset;
				break;
			}
			if (k > 0) {
				head_done = true;
				head_base = nb;
				r->head_len = (size_t)k;
				pos = (size_t)k;
				http1_body_init(&b, &p.head, lim);
			}
		}
		bool done = false;
		if (head_done) {
			done = http1_body_done(&b);
			while (pos < avail && !done) {
				span d;
				ssize_t k = http1_body_decode(&b, nb + pos, avail - pos, &d, &done);
				if (k < 0) {
					r->status = (int)b.err.status;
					assert_non_null(b.err.reason);
					goto out;
				}
				if (d.len > 0) {
					assert_true(d.ptr >= nb + pos &&
					            d.ptr + d.len <= nb + avail);
					assert_int_equal(buf_append(&r->body, d.ptr, d.len),
					                 CUSTOS_OK);
				}
				pos += (size_t)k;
				if (k == 0)
					break;
			}
		}
		if (done) {
			r->consumed = pos;
			break;
		}
		if (avail == n) {
			r->incomplete = true;
			r->consumed = pos;
			break;
		}
	}
out:
	if (head_done) {
		/* The buffer may have moved since the head completed. */
		r->head = p.head;
		http1_head_rebase(&r->head, head_base, cur);
	}
	r->base = cur;
}

static void expect_same_span(span a, const char *abase, span b, const char *bbase)
{
	assert_int_equal(a.len, b.len);
	if (a.len) {
		assert_memory_equal(a.ptr, b.ptr, a.len);
		assert_int_equal(a.ptr - abase, b.ptr - bbase);
	}
}

static void expect_same(const result *a, const result *b)
{
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->incomplete, b->incomplete);
	assert_int_equal(a->head_error, b->head_error);
	if (a->head_error)
		assert_int_equal(a->err_offset, b->err_offset);
	assert_int_equal(a->head_len, b->head_len);
	assert_int_equal(a->consumed, b->consumed);
	assert_int_equal(buf_used(&a->body), buf_used(&b->body));
	if (buf_used(&a->body))
		assert_memory_equal(buf_ptr(&a->body), buf_ptr(&b->body), buf_used(&a->body));
	if (a->head_len == 0)
		return;
	const http1_head *x = &a->head, *y = &b->head;
	expect_same_span(x->method, a->base, y->method, b->base);
	expect_same_span(x->target, a->base, y->target, b->base);
	expect_same_span(x->path, a->base, y->path, b->base);
	expect_same_span(x->authority, a->base, y->authority, b->base);
	expect_same_span(x->host, a->base, y->host, b->base);
	expect_same_span(x->reason, a->base, y->reason, b->base);
	assert_int_equal(x->nhdrs, y->nhdrs);
	for (size_t i = 0; i < x->nhdrs; i++) {
		expect_same_span(x->hdrs[i].name, a->base, y->hdrs[i].name, b->base);
		expect_same_span(x->hdrs[i].value, a->base, y->hdrs[i].value, b->base);
	}
	assert_int_equal(x->framing, y->framing);
	assert_int_equal(x->content_length, y->content_length);
	assert_int_equal(x->keep_alive, y->keep_alive);
	assert_int_equal(x->status, y->status);
	assert_int_equal(x->version, y->version);
}

/* Runs data whole, then byte by byte and split at every offset; all must agree. The whole-run
 * result is left in *r for the caller's assertions. */
static void check_all_ways(const char *data, size_t n, bool response, http1_method req_meth,
                           const http1_limits *lim, result *r)
{
	run(data, n, FEED_FULL, 0, response, req_meth, lim, r);
	result o;
	run(data, n, FEED_BYTES, 0, response, req_meth, lim, &o);
	expect_same(r, &o);
	result_free(&o);
	for (size_t k = 0; k <= n; k++) {
		run(data, n, FEED_SPLIT, k, response, req_meth, lim, &o);
		expect_same(r, &o);
		result_free(&o);
	}
}

static void req_all_ways(const char *s, result *r)
{
	check_all_ways(s, strlen(s), false, HTTP1_M_OTHER, NULL, r);
}

static int req_status(const char *s)
{
	result r;
	req_all_ways(s, &r);
	int st = r.incomplete ? -1 : r.status;
	result_free(&r);
	return st;
}

static int resp_status(const char *s, http1_method m)
{
	result r;
	check_all_ways(s, strlen(s), true, m, NULL, &r);
	int st = r.incomplete ? -1 : r.status;
	result_free(&r);
	return st;
}

static bool span_is(span s, const char *lit)
{
	return span_eq_cstr(s, lit);
}

/* ---------------------------------------------------------------------------------------------
 * Requests.
 */
static void test_simple_get(void **state)
{
	(void)state;
	const char *m = "GET /v1/models?x=1 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: t \r\n"
	                "Accept:   */*\r\n\r\n";
	result r;
	req_all_ways(m, &r);
	assert_int_equal(r.status, 0);
	assert_false(r.incomplete);
	assert_int_equal(r.head_len, strlen(m));
	assert_int_equal(r.consumed, strlen(m));
	assert_int_equal(r.head.meth, HTTP1_M_GET);
	assert_true(span_is(r.head.method, "GET"));
	assert_true(span_is(r.head.target, "/v1/models?x=1"));
	assert_true(span_is(r.head.path, "/v1/models?x=1"));
	assert_int_equal(r.head.form, HTTP1_TARGET_ORIGIN);
	assert_true(span_is(r.head.host, "api.example"));
	assert_int_equal(r.head.version, 11);
	assert_int_equal(r.head.nhdrs, 3);
	assert_true(span_is(r.head.hdrs[1].name, "User-Agent"));
	assert_true(span_is(r.head.hdrs[1].value, "t"));
	assert_true(span_is(r.head.hdrs[2].value, "*/*"));
	assert_int_equal(r.head.framing, HTTP1_BODY_NONE);
	assert_true(r.head.keep_alive);
	span v;
	assert_true(http1_header_get(&r.head, SPAN_LIT("user-agent"), &v));
	assert_true(span_is(v, "t"));
	assert_false(http1_header_get(&r.head, SPAN_LIT("cookie"), &v));
	assert_int_equal(http1_header_count(&r.head, SPAN_LIT("HOST")), 1);
	result_free(&r);
}

static void test_need_more(void **state)
{
	(void)state;
	http1_parser p;
	http1_parser_init_request(&p, NULL);
	const char *m = "GET / HTTP/1.1\r\nHost: a\r\n";
	assert_int_equal(http1_parse_head(&p, m, strlen(m)), 0);
	assert_int_equal(http1_parse_head(&p, m, 0 + strlen(m)), 0);
	/* Empty input is need-more too. */
	http1_parser_init_request(&p, NULL);
	assert_int_equal(http1_parse_head(&p, "", 0), 0);
}

static void test_post_length(void **state)
{
	(void)state;
	const char *m = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n"
	                "\r\nhello worldGET / HTTP/1.1\r\n";
	result r;
	req_all_ways(m, &r);
	assert_int_equal(r.status, 0);
	assert_false(r.incomplete);
	assert_int_equal(r.head.framing, HTTP1_BODY_LENGTH);
	assert_int_equal(r.head.content_length, 11);
	assert_int_equal(buf_used(&r.body), 11);
	assert_memory_equal(buf_ptr(&r.body), "hello world", 11);
	/* Pipelining: exactly the first message is consumed. */
	assert_int_equal(r.consumed, strlen(m) - strlen("GET / HTTP/1.1\r\n"));
	result_free(&r);
}

static void test_chunked(void **state)
{
	(void)state;
	const char *m = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\nNEXT";
	result r;
	req_all_ways(m, &r);
	assert_int_equal(r.status, 0);
	assert_false(r.incomplete);
	assert_int_equal(r.head.framing, HTTP1_BODY_CHUNKED);
	assert_int_equal(buf_used(&r.body), 11);
	assert_memory_equal(buf_ptr(&r.body), "hello world", 11);
	assert_int_equal(r.consumed, strlen(m) - 4);
	result_free(&r);

	/* Incomplete chunked body: no error, not done, eof is a truncation. */
	const char *t = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
	req_all_ways(t, &r);
	assert_true(r.incomplete);
	result_free(&r);
	http1_head h = { .framing = HTTP1_BODY_CHUNKED };
	http1_body b;
	http1_body_init(&b, &h, NULL);
	span d;
	bool done;
	assert_int_equal(http1_body_decode(&b, "5\r\nhel", 6, &d, &done), 6);
	assert_int_equal(d.len, 3);
	assert_false(done);
	assert_int_equal(http1_body_eof(&b), CUSTOS_ERR_PARSE);
}

static void test_bad_requests(void **state)
{
	(void)state;
	/* A selection beyond the corpus, with exact statuses. */
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\tfolded\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n"), 0);
	assert_int_equal(req_status(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
	                            "Content-Length: 1\r\n\r\nx"),
	                 400);
	assert_int_equal(
	        req_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616"
	                   "\r\n\r\n"),
	        413);
	assert_int_equal(req_status("GET / HTTP/3\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/9.9\r\nHost: a\r\n\r\n"), 505);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a%2\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a%2e\r\n\r\n"), 0);
	assert_int_equal(req_status("GET http://a:80x/ HTTP/1.1\r\nHost: a:80x\r\n\r\n"), 400);
	assert_int_equal(req_status("GET http:/a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	assert_int_equal(req_status("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
	assert_int_equal(req_status("POST / HTTP/1.0\r\nExpect: nonsense\r\nContent-Length: 0"
	                            "\r\n\r\n"),
	                 0); /* Expect is ignored in 1.0 (RFC 9110 §10.1.1) */
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n\r"), -1);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n"), 400);
	assert_int_equal(req_status("\r"), -1);
	assert_int_equal(req_status("\r\r\n"), 400);
	/* The status never depends on field order: a framing conflict, a repetition or a
	 * malformed list anywhere is 400 before a 413, 417 or 501 found in another field. */
	static const char *const framing_400[][2] = {
		{ "Content-Length: 5\r\n", "Transfer-Encoding: xchunked\r\n" },
		{ "Content-Length: 5\r\n", "Transfer-Encoding: identity\r\n" },
		{ "Content-Length: 99999999999999999999999\r\n", "Transfer-Encoding: chunked\r\n" },
		{ "Content-Length: 2000000000000\r\n", "Transfer-Encoding: chunked\r\n" },
		{ "Transfer-Encoding: gzip\r\n", "Transfer-Encoding: chunked\r\n" },
		{ "Expect: 200-ok\r\n", "Transfer-Encoding: chun ked\r\n" },
		{ "Expect: 200-ok\r\nContent-Length: 1\r\n", "Content-Length: 1\r\n" },
		{ "Transfer-Encoding: gzip\r\n", "Host: b\r\n" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(framing_400); i++) {
		char m[256];
		for (int order = 0; order < 2; order++) {
			snprintf(m, sizeof(m), "POST / HTTP/1.1\r\nHost: a\r\n%s%s\r\n",
			         framing_400[i][order], framing_400[i][!order]);
			if (req_status(m) != 400)
				fail_msg("not 400 (%d): %s", req_status(m), m);
		}
	}
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br\r\n"
	                            "Expect: 200-ok\r\n\r\n"),
	                 501);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n"
	                            "Content-Length: 2000000000000\r\n\r\n"),
	                 413);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"), 417);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\n"
	                            "Transfer-Encoding: x-y ;a=b;c = d , chunked\r\n\r\n"),
	                 501);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\n"
	                            "Transfer-Encoding: gzip;, chunked\r\n\r\n"),
	                 400);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\n"
	                            "Transfer-Encoding: gzip,\r\n\r\n"),
	                 400);
	/* The leading CRLF allowance. */
	assert_int_equal(
	        req_status("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
}

static void test_connection_semantics(void **state)
{
	(void)state;
	result r;
	req_all_ways("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	assert_false(r.head.keep_alive);
	assert_true(r.head.conn_flags & HTTP1_CONN_CLOSE);
	result_free(&r);
	req_all_ways("GET / HTTP/1.0\r\n\r\n", &r);
	assert_false(r.head.keep_alive);
	result_free(&r);
	req_all_ways("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r);
	assert_true(r.head.keep_alive);
	result_free(&r);
	req_all_ways("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &r);
	assert_false(r.head.keep_alive);
	result_free(&r);
	req_all_ways("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, x-foo\r\nUpgrade: h2c\r\n"
	             "X-Foo: 1\r\nX-Bar: 2\r\n\r\n",
	             &r);
	assert_true(r.head.upgrade);
	assert_true(r.head.keep_alive);
	assert_true(http1_is_hop_by_hop(&r.head, SPAN_LIT("X-FOO")));
	assert_true(http1_is_hop_by_hop(&r.head, SPAN_LIT("keep-alive")));
	assert_false(http1_is_hop_by_hop(&r.head, SPAN_LIT("x-bar")));
	result_free(&r);
	req_all_ways(
	        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
	        &r);
	assert_true(r.head.expect_continue);
	result_free(&r);
}

static void test_absolute_and_connect(void **state)
{
	(void)state;
	result r;
	req_all_ways("GET HTTP://Api.Example:8080?q=1 HTTP/1.1\r\nHost: api.example:8080\r\n\r\n",
	             &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.head.form, HTTP1_TARGET_ABSOLUTE);
	assert_true(span_is(r.head.scheme, "HTTP"));
	assert_true(span_is(r.head.authority, "Api.Example:8080"));
	assert_true(span_is(r.head.path, "?q=1"));
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(http1_write_request_head(&out, &r.head, NULL), CUSTOS_OK);
	const char *want = "GET /?q=1 HTTP/1.1\r\nHost: Api.Example:8080\r\n\r\n";
	assert_int_equal(buf_used(&out), strlen(want));
	assert_memory_equal(buf_ptr(&out), want, strlen(want));
	buf_free(&out);
	result_free(&r);

	req_all_ways("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.head.form, HTTP1_TARGET_AUTHORITY);
	assert_int_equal(r.head.meth, HTTP1_M_CONNECT);
	assert_true(span_is(r.head.authority, "[2001:db8::1]:443"));
	result_free(&r);
}

static void test_limits(void **state)
{
	(void)state;
	http1_limits lim = { .max_headers = 2, .max_head_bytes = 64, .max_request_line = 20 };
	result r;
	const char *m = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &lim, &r);
	assert_int_equal(r.status, 431);
	result_free(&r);
	m = "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &lim, &r);
	assert_int_equal(r.status, 414);
	result_free(&r);
	m = "GET / HTTP/1.1\r\nHost: a\r\nA: 11111111111111111111111111111111111111111\r\n\r\n";
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &lim, &r);
	assert_int_equal(r.status, 431);
	result_free(&r);
	/* A head of exactly the limit passes. */
	m = "GET / HTTP/1.1\r\nHost: a\r\nA: 11111111111111111111111111111111\r\n\r\n";
	assert_int_equal(strlen(m), 64);
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &lim, &r);
	assert_int_equal(r.status, 0);
	result_free(&r);
	/* Limits above the compiled maximum are clamped. */
	http1_limits big = { .max_headers = 100000 };
	http1_parser p;
	http1_parser_init_request(&p, &big);
	assert_int_equal(p.lim.max_headers, HTTP1_MAX_HEADERS);
	/* Body limit on chunked and Content-Length. */
	http1_limits bl = { .max_body = 10 };
	m = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &bl, &r);
	assert_int_equal(r.status, 413);
	result_free(&r);
	m = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &bl, &r);
	assert_int_equal(r.status, 413);
	result_free(&r);
	/* Trailer limits. */
	http1_limits tl = { .max_trailer_bytes = 8 };
	m = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Long: "
	    "1\r\n\r\n";
	check_all_ways(m, strlen(m), false, HTTP1_M_OTHER, &tl, &r);
	assert_int_equal(r.status, 431);
	result_free(&r);
}

/* ---------------------------------------------------------------------------------------------
 * Responses.
 */
static void test_responses(void **state)
{
	(void)state;
	result r;
	const char *m =
	        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
	check_all_ways(m, strlen(m), true, HTTP1_M_GET, NULL, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.head.status, 200);
	assert_true(span_is(r.head.reason, "OK"));
	assert_int_equal(buf_used(&r.body), 2);
	assert_true(r.head.keep_alive);
	result_free(&r);

	/* Close-delimited: every byte is body, never done, eof ends it. */
	m = "HTTP/1.1 200 OK\r\n\r\nsome data";
	check_all_ways(m, strlen(m), true, HTTP1_M_GET, NULL, &r);
	assert_true(r.incomplete);
	assert_int_equal(r.head.framing, HTTP1_BODY_CLOSE);
	assert_false(r.head.keep_alive);
	assert_int_equal(buf_used(&r.body), 9);
	result_free(&r);
	http1_head ch = { .framing = HTTP1_BODY_CLOSE };
	http1_body b;
	http1_body_init(&b, &ch, NULL);
	assert_int_equal(http1_body_eof(&b), CUSTOS_OK);

	/* No body: HEAD, 204, 304, 1xx, even with Content-Length. */
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP1_M_HEAD),
	                 0);
	assert_int_equal(resp_status("HTTP/1.1 204 No Content\r\n\r\n", HTTP1_M_GET), 0);
	assert_int_equal(
	        resp_status("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", HTTP1_M_GET),
	        0);
	assert_int_equal(resp_status("HTTP/1.1 100 Continue\r\n\r\n", HTTP1_M_POST), 0);
	assert_int_equal(resp_status("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", HTTP1_M_GET), 0);
	assert_int_equal(resp_status("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", HTTP1_M_GET), 0);
	m = "HTTP/1.1 200 Connection established\r\n\r\nTLS...";
	check_all_ways(m, strlen(m), true, HTTP1_M_CONNECT, NULL, &r);
	assert_int_equal(r.head.framing, HTTP1_BODY_TUNNEL);
	result_free(&r);
	m = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
	check_all_ways(m, strlen(m), true, HTTP1_M_POST, NULL, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.consumed, strlen(m));
	result_free(&r);

	/* Bad responses are 502. */
	assert_int_equal(resp_status("HTTP/1.1 2000 OK\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(resp_status("HTTP/1.1 099 X\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(resp_status("HTTP/2 200 OK\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(resp_status("HTTP/1.1 101 Switching Protocols\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
	                             "chunked\r\n\r\n",
	                             HTTP1_M_GET),
	                 502);
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n"
	                             "\r\nx",
	                             HTTP1_M_GET),
	                 502);
	assert_int_equal(resp_status("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", HTTP1_M_GET),
	                 502);
	assert_int_equal(resp_status("HTTP/1.1 200 O\x01K\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(resp_status("\r\nHTTP/1.1 200 OK\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(
	        resp_status("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_M_GET),
	        502);
	assert_int_equal(
	        resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", HTTP1_M_GET),
	        502);
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
	                             "Content-Length: 1\r\n\r\n",
	                             HTTP1_M_HEAD),
	                 502);
	/* Body errors in responses are 502 too. */
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\n",
	                             HTTP1_M_GET),
	                 502);
}

/* ---------------------------------------------------------------------------------------------
 * A hostile peer's edge cases (docs/HTTP.md, "Hostile peers"): what is taken, what is refused,
 * and that what is taken is framed exactly.
 */
static void test_hostile_edges(void **state)
{
	(void)state;
	result r;

	/* OWS around a coding and its case do not matter (RFC 9112 §6.1, RFC 9110 §5.5). */
	const char *te[] = { "chunked ", "chunked\t", "CHUNKED", " Chunked" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(te); i++) {
		char m[256];
		snprintf(m, sizeof(m),
		         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n"
		         "5\r\nhello\r\n0\r\n\r\n",
		         te[i]);
		req_all_ways(m, &r);
		assert_int_equal(r.status, 0);
		assert_int_equal(r.head.framing, HTTP1_BODY_CHUNKED);
		assert_int_equal(r.consumed, strlen(m));
		assert_memory_equal(buf_ptr(&r.body), "hello", 5);
		result_free(&r);
	}
	/* Leading zeros are 1*DIGIT; a sign, a list or a 21-digit value are not taken. */
	req_all_ways("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\nhello", &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.head.content_length, 5);
	result_free(&r);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
	                 400);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"),
	                 400);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"),
	                 400);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\n"
	                            "Content-Length: 184467440737095516160\r\n\r\n"),
	                 413);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\n"
	                            "Content-Length: 18446744073709551616\r\n\r\n"),
	                 413);

	/* Chunk extensions are discarded whatever their shape (a bare ';', a quoted ';'), so
	 * they never reach an upstream; a control inside one is refused. */
	const char *ext[] = { "5;\r\n", "5;a=\"x;y\"\r\n", "5;a=b;c\r\n", "5; a = b\r\n" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ext); i++) {
		char m[256];
		snprintf(m, sizeof(m),
		         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
		         "%shello\r\n0\r\n\r\n",
		         ext[i]);
		req_all_ways(m, &r);
		assert_int_equal(r.status, 0);
		assert_int_equal(buf_used(&r.body), 5);
		assert_int_equal(r.consumed, strlen(m));
		result_free(&r);
	}
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	                            "\r\n5;a=\"x\ry\"\r\nhello\r\n0\r\n\r\n"),
	                 400);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	                            "\r\n 5\r\nhello\r\n0\r\n\r\n"),
	                 400);
	/* BWS before the ';' (RFC 9112 §7.1.1 lets a recipient take it): refused, as whitespace
	 * after a size is (docs/HTTP.md). */
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	                            "\r\n5 ;a\r\nhello\r\n0\r\n\r\n"),
	                 400);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	                            "\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
	                 413);

	/* A framing field in the trailers is dropped with them: the body ends where the chunked
	 * framing says, and the next message starts right after. */
	const char *tr = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	                 "5\r\nhello\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: x\r\n\r\n";
	req_all_ways(tr, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.consumed, strlen(tr));
	assert_int_equal(buf_used(&r.body), 5);
	result_free(&r);
	assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	                            "\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
	                 400);

	/* Names and methods: tokens only; an empty name is refused. */
	assert_int_equal(req_status("PO(ST / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n"), 400);
	assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"), 400);
	assert_int_equal(req_status("GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	req_all_ways("post / HTTP/1.1\r\nHost: a\r\n\r\n", &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.head.meth, HTTP1_M_OTHER); /* case-sensitive: not POST */
	result_free(&r);
	assert_int_equal(req_status("GET //v1//x HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	assert_int_equal(req_status("GET /v1/%2e%2E/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET /v1%2F..%2Fadmin HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
	assert_int_equal(req_status("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);

	/* Responses without a body, whatever their framing fields say: the bytes after the head
	 * are not theirs (the proxy then drops the connection, never reads them as the next
	 * answer). */
	const char *nb[] = {
		"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(nb); i++) {
		char m[256];
		snprintf(m, sizeof(m), "%shello", nb[i]);
		check_all_ways(m, strlen(m), true, HTTP1_M_GET, NULL, &r);
		assert_int_equal(r.status, 0);
		assert_int_equal(r.head.framing, HTTP1_BODY_NONE);
		assert_int_equal(r.consumed, strlen(nb[i]));
		result_free(&r);
	}
	const char *hd = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	check_all_ways(hd, strlen(hd), true, HTTP1_M_HEAD, NULL, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.head.framing, HTTP1_BODY_NONE);
	result_free(&r);
	/* Both framings, in either order, a list of lengths, an unknown coding: 502. */
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	                             "Content-Length: 5\r\n\r\n",
	                             HTTP1_M_GET),
	                 502);
	assert_int_equal(
	        resp_status("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", HTTP1_M_GET),
	        502);
	assert_int_equal(
	        resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n", HTTP1_M_GET),
	        502);
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n", HTTP1_M_GET), 502);
	assert_int_equal(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                             "5\r\nhello\r\n0\r\nX-T : a\r\n\r\n",
	                             HTTP1_M_GET),
	                 502);
}

/* Connection cannot strip Host, and cannot strip what the proxy adds: added fields come after
 * the kept ones and are not subject to the client's Connection list. */
static void test_connection_strips(void **state)
{
	(void)state;
	const char *m = "POST /x HTTP/1.1\r\nHost: h\r\nConnection: Host, Authorization, "
	                "X-Request-Id, X-Forwarded-For, Content-Type\r\nAuthorization: Bearer k\r\n"
	                "Content-Type: application/json\r\nX-Request-Id: forged\r\n\r\n";
	http1_parser p;
	http1_parser_init_request(&p, NULL);
	assert_int_equal(http1_parse_head(&p, m, strlen(m)), (ssize_t)strlen(m));
	http1_header add[] = { { SPAN_LIT("X-Request-Id"), SPAN_LIT("r1") },
		               { SPAN_LIT("X-Forwarded-For"), SPAN_LIT("192.0.2.1") } };
	http1_write_opts o = { .add = add, .nadd = 2 };
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(http1_write_request_head(&out, &p.head, &o), CUSTOS_OK);
	const char *want = "POST /x HTTP/1.1\r\nHost: h\r\nX-Request-Id: r1\r\n"
	                   "X-Forwarded-For: 192.0.2.1\r\n\r\n";
	assert_int_equal(buf_used(&out), strlen(want));
	assert_memory_equal(buf_ptr(&out), want, strlen(want));
	buf_free(&out);
}

/* ---------------------------------------------------------------------------------------------
 * The smuggling corpus: every vector rejected with its status, every look-alike accepted.
 */
static void check_ready(const char *d, size_t n);

static char *load(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char *d = malloc(1u << 20);
	assert_non_null(d);
	*n = fread(d, 1, 1u << 20, f);
	fclose(f);
	return d;
}

static void test_smuggling_corpus(void **state)
{
	(void)state;
	const char *src = getenv("CUSTOS_SRC");
	assert_non_null(src); /* ctest sets it */
	char dir[4096];
	assert_true((size_t)snprintf(dir, sizeof(dir), "%s/tests/fixtures/smuggling", src) <
	            sizeof(dir));
	DIR *dp = opendir(dir);
	assert_non_null(dp);
	struct dirent *de;
	size_t vectors = 0, ok = 0;
	while ((de = readdir(dp)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 6 || strcmp(de->d_name + nl - 5, ".http") != 0)
			continue;
		/* <name>.<expect>.http */
		char name[512];
		assert_true(nl < sizeof(name));
		memcpy(name, de->d_name, nl - 5);
		name[nl - 5] = '\0';
		char *dot = strrchr(name, '.');
		assert_non_null(dot);
		char path[4700];
		assert_true((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) <
		            sizeof(path));
		size_t n;
		char *d = load(path, &n);
		result r;
		check_all_ways(d, n, false, HTTP1_M_OTHER, NULL, &r);
		if (n <= 4096)
			check_ready(d, n);
		if (strcmp(dot + 1, "ok") == 0) {
			if (r.status != 0 || r.incomplete || r.consumed != n)
				fail_msg("%s: expected accepted whole, got status %d incomplete %d "
				         "consumed %zu of %zu",
				         de->d_name, r.status, r.incomplete, r.consumed, n);
			ok++;
		} else {
			int want = (int)strtol(dot + 1, NULL, 10);
			if (r.status != want)
				fail_msg("%s: expected %d, got %d (incomplete %d)", de->d_name,
				         want, r.status, r.incomplete);
			vectors++;
		}
		result_free(&r);
		free(d);
	}
	closedir(dp);
	assert_true(vectors >= 100);
	assert_true(ok >= 20);
}

/* ---------------------------------------------------------------------------------------------
 * Pipelining: several messages in one buffer, each parsed right after the previous one.
 */
static void test_pipelining(void **state)
{
	(void)state;
	const char *m = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
	                "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
	                "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "1\r\nx\r\n0\r\n\r\n"
	                "\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\n";
	const char *paths[] = { "/1", "/2", "/3", "/4" };
	size_t n = strlen(m), off = 0;
	http1_parser p;
	http1_parser_init_request(&p, NULL);
	for (size_t i = 0; i < 4; i++) {
		http1_parser_reset(&p);
		ssize_t k = http1_parse_head(&p, m + off, n - off);
		assert_true(k > 0);
		assert_true(span_is(p.head.target, paths[i]));
		off += (size_t)k;
		http1_body b;
		http1_body_init(&b, &p.head, NULL);
		bool done = http1_body_done(&b);
		while (!done) {
			span d;
			k = http1_body_decode(&b, m + off, n - off, &d, &done);
			assert_true(k > 0);
			off += (size_t)k;
		}
	}
	assert_int_equal(off, n);
}

/* ---------------------------------------------------------------------------------------------
 * Writer and encoder.
 */
static void test_write_request(void **state)
{
	(void)state;
	const char *m = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.example\r\n"
	                "Connection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
	                "Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n"
	                "Upgrade: h2c\r\nX-Secret: s\r\nAuthorization: Bearer k\r\n"
	                "Transfer-Encoding: chunked\r\nX-Keep: yes\r\n\r\n";
	http1_parser p;
	http1_parser_init_request(&p, NULL);
	assert_int_equal(http1_parse_head(&p, m, strlen(m)), (ssize_t)strlen(m));
	buf out;
	buf_init(&out, 4096);
	span drop[] = { SPAN_LIT("authorization") };
	http1_header add[] = { { SPAN_LIT("X-Request-Id"), SPAN_LIT("abc123") } };
	http1_write_opts o = {
		.framing = HTTP1_BODY_LENGTH,
		.content_length = 42,
		.drop = drop,
		.ndrop = 1,
		.add = add,
		.nadd = 1,
	};
	assert_int_equal(http1_write_request_head(&out, &p.head, &o), CUSTOS_OK);
	const char *want = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.example\r\n"
	                   "X-Keep: yes\r\nContent-Length: 42\r\nX-Request-Id: abc123\r\n\r\n";
	assert_int_equal(buf_used(&out), strlen(want));
	assert_memory_equal(buf_ptr(&out), want, strlen(want));

	/* The written head parses back to the same request. */
	http1_parser q;
	http1_parser_init_request(&q, NULL);
	assert_int_equal(http1_parse_head(&q, (const char *)buf_ptr(&out), buf_used(&out)),
	                 (ssize_t)buf_used(&out));
	assert_int_equal(q.head.content_length, 42);

	/* Header injection through added fields is refused. */
	buf_reset(&out);
	http1_header bad[] = { { SPAN_LIT("X-A"), SPAN_LIT("v\r\nX-Injected: 1") } };
	http1_write_opts ob = { .add = bad, .nadd = 1 };
	assert_int_equal(http1_write_request_head(&out, &p.head, &ob), CUSTOS_ERR_INVAL);
	http1_header badn[] = { { SPAN_LIT("X A"), SPAN_LIT("v") } };
	http1_write_opts obn = { .add = badn, .nadd = 1 };
	assert_int_equal(http1_write_request_head(&out, &p.head, &obn), CUSTOS_ERR_INVAL);
	http1_write_opts obt = { .target = SPAN_LIT("/a b") };
	assert_int_equal(http1_write_request_head(&out, &p.head, &obt), CUSTOS_ERR_INVAL);
	/* Chunked framing and close; a response head is not a request head. */
	http1_write_opts oc = { .framing = HTTP1_BODY_CHUNKED,
		                .close = true,
		                .target = SPAN_LIT("/other") };
	assert_int_equal(http1_write_request_head(&out, &p.head, &oc), CUSTOS_OK);
	/* X-Secret is listed in Connection: dropped. */
	assert_null(memmem(buf_ptr(&out), buf_used(&out), "X-Secret", 8));
	assert_non_null(memmem(buf_ptr(&out), buf_used(&out), "Connection: close\r\n", 19));
	assert_int_equal(http1_write_response_head(&out, &p.head, NULL), CUSTOS_ERR_INVAL);
	/* A full buffer is a limit error, not a partial write. */
	buf small;
	buf_init(&small, 16);
	assert_int_equal(http1_write_request_head(&small, &p.head, NULL), CUSTOS_ERR_LIMIT);
	assert_int_equal(buf_used(&small), 0);
	buf_free(&small);
	buf_free(&out);
}

static void test_write_response(void **state)
{
	(void)state;
	const char *m = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	                "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n";
	http1_parser p;
	http1_parser_init_response(&p, NULL, HTTP1_M_POST);
	assert_int_equal(http1_parse_head(&p, m, strlen(m)), (ssize_t)strlen(m));
	buf out;
	buf_init(&out, 4096);
	http1_write_opts o = { .framing = HTTP1_BODY_CHUNKED };
	assert_int_equal(http1_write_response_head(&out, &p.head, &o), CUSTOS_OK);
	const char *want = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	                   "Transfer-Encoding: chunked\r\n\r\n";
	assert_int_equal(buf_used(&out), strlen(want));
	assert_memory_equal(buf_ptr(&out), want, strlen(want));
	buf_reset(&out);

	http1_header add[] = { { SPAN_LIT("X-Request-Id"), SPAN_LIT("r1") } };
	assert_int_equal(http1_write_simple_response(&out, 400, SPAN_LIT("application/json"),
	                                             SPAN_LIT("{\"error\":\"bad\"}"), add, 1,
	                                             HTTP1_SIMPLE_CLOSE),
	                 CUSTOS_OK);
	const char *want2 = "HTTP/1.1 400 Bad Request\r\nContent-Length: 15\r\nConnection: close"
	                    "\r\nContent-Type: application/json\r\nX-Request-Id: r1\r\n\r\n"
	                    "{\"error\":\"bad\"}";
	assert_int_equal(buf_used(&out), strlen(want2));
	assert_memory_equal(buf_ptr(&out), want2, strlen(want2));
	buf_reset(&out);
	/* An answer to HEAD: the same head, Content-Length included, and no content; an HTTP/1.0
	 * client kept is told so. */
	assert_int_equal(http1_write_simple_response(&out, 403, SPAN_LIT("application/json"),
	                                             SPAN_LIT("{\"error\":\"bad\"}"), add, 1,
	                                             HTTP1_SIMPLE_HEAD | HTTP1_SIMPLE_KEEP_ALIVE),
	                 CUSTOS_OK);
	const char *want3 =
	        "HTTP/1.1 403 Forbidden\r\nContent-Length: 15\r\nConnection: "
	        "keep-alive\r\nContent-Type: application/json\r\nX-Request-Id: r1\r\n\r\n";
	assert_int_equal(buf_used(&out), strlen(want3));
	assert_memory_equal(buf_ptr(&out), want3, strlen(want3));
	buf_reset(&out);
	assert_int_equal(http1_write_simple_response(&out, 204, (span){ NULL, 0 },
	                                             (span){ NULL, 0 }, NULL, 0, 0),
	                 CUSTOS_OK);
	assert_int_equal(buf_used(&out), strlen("HTTP/1.1 204 No Content\r\n\r\n"));
	assert_int_equal(http1_write_simple_response(&out, 42, (span){ NULL, 0 }, (span){ NULL, 0 },
	                                             NULL, 0, 0),
	                 CUSTOS_ERR_INVAL);
	assert_string_equal(http1_status_reason(413), "Content Too Large");
	assert_string_equal(http1_status_reason(999), "Unknown");
	assert_string_equal(http1_method_name(HTTP1_M_PATCH), "PATCH");
	buf_free(&out);
}

static void test_chunk_encoder(void **state)
{
	(void)state;
	char h[HTTP1_CHUNK_HDR_MAX];
	assert_int_equal(http1_chunk_header(h, 1), 3);
	assert_string_equal(h, "1\r\n");
	assert_int_equal(http1_chunk_header(h, 0x1a2b), 6);
	assert_string_equal(h, "1a2b\r\n");
	assert_int_equal(http1_chunk_header(h, SIZE_MAX), 18);
	buf out;
	buf_init(&out, 1 << 20);
	assert_int_equal(http1_chunk_append(&out, SPAN_LIT("hello")), CUSTOS_OK);
	assert_int_equal(http1_chunk_append(&out, SPAN_LIT("")), CUSTOS_OK);
	char big[300];
	memset(big, 'z', sizeof(big));
	assert_int_equal(http1_chunk_append(&out, span_of(big, sizeof(big))), CUSTOS_OK);
	assert_int_equal(http1_chunk_end(&out), CUSTOS_OK);
	/* Round trip through the decoder, at every split. */
	http1_head ch = { .framing = HTTP1_BODY_CHUNKED };
	for (size_t k = 0; k <= buf_used(&out); k++) {
		http1_body b;
		http1_body_init(&b, &ch, NULL);
		size_t got = 0, pos = 0;
		bool done = false;
		const char *d = (const char *)buf_ptr(&out);
		size_t lens[2] = { k, buf_used(&out) };
		for (int piece = 0; piece < 2 && !done; piece++) {
			while (pos < lens[piece] && !done) {
				span s;
				ssize_t r = http1_body_decode(&b, d + pos, lens[piece] - pos, &s,
				                              &done);
				assert_true(r > 0);
				pos += (size_t)r;
				got += s.len;
			}
		}
		assert_true(done);
		assert_int_equal(got, 305);
		assert_int_equal(pos, buf_used(&out));
	}
	buf_free(&out);
}

static void test_write_host_expect(void **state)
{
	(void)state;
	buf out;
	buf_init(&out, 4096);
	http1_parser p;
	/* HTTP/1.0 without Host: the proxy supplies one; Expect is never forwarded; a field
	 * named in Connection is dropped, but never Host. */
	const char *m = "POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n";
	http1_parser_init_request(&p, NULL);
	assert_int_equal(http1_parse_head(&p, m, strlen(m)), (ssize_t)strlen(m));
	assert_false(p.head.expect_continue); /* ignored in 1.0 */
	http1_write_opts o = { .host = SPAN_LIT("upstream:8000"), .framing = HTTP1_BODY_LENGTH };
	assert_int_equal(http1_write_request_head(&out, &p.head, &o), CUSTOS_OK);
	const char *want = "POST /x HTTP/1.1\r\nHost: upstream:8000\r\nContent-Length: 0\r\n\r\n";
	assert_true(span_eq_cstr(buf_span(&out), want));
	buf_reset(&out);
	m = "GET / HTTP/1.1\r\nHost: a\r\nConnection: host, x-a\r\nX-A: 1\r\nExpect: "
	    "100-continue\r\n"
	    "\r\n";
	http1_parser_init_request(&p, NULL);
	assert_int_equal(http1_parse_head(&p, m, strlen(m)), (ssize_t)strlen(m));
	assert_true(p.head.expect_continue);
	assert_false(http1_is_hop_by_hop(&p.head, SPAN_LIT("Host")));
	assert_int_equal(http1_write_request_head(&out, &p.head, NULL), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
	/* The Host override replaces the received one; an invalid override is refused. */
	buf_reset(&out);
	http1_write_opts oh = { .host = SPAN_LIT("b:1") };
	assert_int_equal(http1_write_request_head(&out, &p.head, &oh), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "GET / HTTP/1.1\r\nHost: b:1\r\n\r\n"));
	http1_write_opts bad = { .host = SPAN_LIT("b\r\nX: 1") };
	assert_int_equal(http1_write_request_head(&out, &p.head, &bad), CUSTOS_ERR_INVAL);
	buf_free(&out);
}

/* Whenever the parser would complete a head, the pre-check must already say ready, fed
 * whole or one byte at a time. */
static void check_ready(const char *d, size_t n)
{
	size_t scan = 0;
	for (size_t l = 0; l <= n; l++) {
		http1_parser p;
		http1_parser_init_request(&p, NULL);
		ssize_t r = http1_parse_head(&p, d, l);
		size_t fresh = 0;
		bool ready_fresh = http1_head_ready(d, l, 0, &fresh);
		bool ready_inc = http1_head_ready(d, l, 0, &scan);
		assert_int_equal(ready_fresh, ready_inc);
		if (r > 0 && !ready_inc)
			fail_msg("parser completed at %zu bytes before the pre-check", l);
		if (ready_inc)
			scan = 0; /* a caller parses now; keep checking the property */
	}
}

static void test_head_ready(void **state)
{
	(void)state;
	const char *ms[] = {
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ms); i++)
		check_ready(ms[i], strlen(ms[i]));
	size_t scan = 0;
	assert_false(http1_head_ready("GET / HTTP/1.1\r\nHost: a\r\n", 25, 0, &scan));
	assert_true(scan > 0 && scan <= 25);
	assert_true(http1_head_ready("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, 0, &scan));
	scan = 0;
	assert_true(http1_head_ready("0123456789", 10, 10, &scan)); /* the limit */
	scan = 0;
	assert_false(http1_head_ready("0123456789", 10, 11, &scan));
	assert_int_equal(scan, 10);
}

static void test_rebase(void **state)
{
	(void)state;
	const char *m = "GET /x HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
	size_t n = strlen(m);
	char *a = malloc(n), *b = malloc(n);
	assert_non_null(a);
	assert_non_null(b);
	memcpy(a, m, n);
	memcpy(b, m, n);
	http1_parser p;
	http1_parser_init_request(&p, NULL);
	assert_int_equal(http1_parse_head(&p, a, n), (ssize_t)n);
	http1_head_rebase(&p.head, a, b);
	free(a);
	assert_true(p.head.target.ptr == b + 4);
	assert_true(span_is(p.head.hdrs[1].value, "y"));
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_need_more),
		cmocka_unit_test(test_post_length),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_connection_semantics),
		cmocka_unit_test(test_absolute_and_connect),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_responses),
		cmocka_unit_test(test_hostile_edges),
		cmocka_unit_test(test_connection_strips),
		cmocka_unit_test(test_smuggling_corpus),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_write_request),
		cmocka_unit_test(test_write_response),
		cmocka_unit_test(test_chunk_encoder),
		cmocka_unit_test(test_write_host_expect),
		cmocka_unit_test(test_head_ready),
		cmocka_unit_test(test_rebase),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
