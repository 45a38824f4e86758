/*
 * The admin API's answers as a client reads them (custos ctl): fed the bytes read so far, it says
 * whether the answer is whole by its framing (Content-Length, the last chunk), and only a clean
 * end of the connection completes one without (docs/ADMIN.md, "custos ctl"). Strict parsing by
 * the proxy's own HTTP/1.1 codec (http1.c), as for an upstream's answers.
 */
#include <stdlib.h>

#include "custos/admin.h"
#include "http1.h"

struct admin_answer {
	http1_parser p;
	http1_body b;
	bool head_done, whole;
	unsigned status;
	size_t off; /* bytes of the answer consumed: the head, then the body */
	buf body;   /* decoded (dechunked) */
};

admin_answer *admin_answer_new(size_t max_body)
{
	admin_answer *a = xcalloc(1, sizeof(*a));

	http1_parser_init_response(&a->p, NULL, HTTP1_M_GET);
	buf_init(&a->body, max_body);
	return a;
}

void admin_answer_free(admin_answer *a)
{
	if (a == NULL)
		return;
	buf_free(&a->body);
	free(a);
}

custos_err admin_answer_feed(admin_answer *a, span in, admin_answer_end end)
{
	ENSURE(!a->whole, CUSTOS_ERR_INVAL, "the answer was already whole");
	ENSURE(in.len >= a->off, CUSTOS_ERR_INVAL, "the answer's bytes shrank");
	if (!a->head_done) {
		ssize_t n = http1_parse_head(&a->p, in.ptr, in.len);
		if (n < 0)
			return err_set(CUSTOS_ERR_PARSE, "not an HTTP answer: %s (at byte %zu)",
			               a->p.err.reason, a->p.err.offset);
		if (n == 0) {
			if (end == ADMIN_END_OPEN)
				return CUSTOS_ERR_AGAIN;
			return err_set(CUSTOS_ERR_PARSE,
			               "the connection ended inside the answer's head");
		}
		a->head_done = true;
		a->status = a->p.head.status;
		a->off = (size_t)n;
		http1_body_init(&a->b, &a->p.head, NULL);
	}
	bool done = http1_body_done(&a->b) || a->p.head.framing == HTTP1_BODY_NONE;
	while (!done && a->off < in.len) {
		span data = { NULL, 0 };
		ssize_t n =
		        http1_body_decode(&a->b, in.ptr + a->off, in.len - a->off, &data, &done);
		if (n < 0)
			return err_set(CUSTOS_ERR_PARSE, "the answer's body: %s", a->b.err.reason);
		if (data.len)
			GUARD(buf_append_span(&a->body, data));
		a->off += (size_t)n;
		if (n == 0)
			break;
	}
	if (done) {
		a->whole = true; /* bytes past the framing's end, if any, are not the answer's */
		return CUSTOS_OK;
	}
	if (end == ADMIN_END_OPEN)
		return CUSTOS_ERR_AGAIN;
	if (http1_body_eof(&a->b) != CUSTOS_OK)
		return err_set(CUSTOS_ERR_PARSE,
		               "the answer was cut short: the connection ended %zu byte(s) into "
		               "a %s body",
		               a->body.len,
		               a->p.head.framing == HTTP1_BODY_CHUNKED ? "chunked"
		                                                       : "Content-Length");
	/* delimited by the connection's end: only a clean end says nothing was cut off */
	ENSURE(end == ADMIN_END_CLEAN, CUSTOS_ERR_PARSE,
	       "the answer has no length and the connection ended without a TLS close_notify: "
	       "it may have been cut short");
	a->whole = true;
	return CUSTOS_OK;
}

unsigned admin_answer_status(const admin_answer *a)
{
	return a->whole ? a->status : 0;
}

span admin_answer_body(const admin_answer *a)
{
	return a->whole ? buf_span(&a->body) : (span){ NULL, 0 };
}
