/*
 * libFuzzer target for the HTTP/1.1 codec. The first byte picks request or response parsing
 * (and the request method a response answers) and a split point; the rest is a stream of
 * pipelined messages. Properties checked beyond memory safety:
 *  - feeding the stream whole or in two pieces gives the same messages and the same error;
 *  - every head accepted, written back out by the writer, is accepted again with the same
 *    framing, method, target and status;
 *  - body data spans lie inside the bytes given; consumption never passes the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct outcome {
	size_t messages;
	size_t consumed;
	unsigned status;
	uint64_t body_bytes;
	uint64_t body_sum; /* a checksum of body bytes, position-weighted */
} outcome;

static void check(int cond)
{
	if (!cond)
		abort();
}

static void round_trip(const http1_head *h, http1_method req_meth)
{
	buf out;
	buf_init(&out, 1u << 20);
	http1_write_opts o = {
		.framing = h->framing == HTTP1_BODY_TUNNEL ? HTTP1_BODY_NONE : h->framing,
		.content_length = h->content_length,
	};
	if (!h->is_response && h->host.len == 0 && h->form != HTTP1_TARGET_ABSOLUTE)
		o.host =
		        h->form == HTTP1_TARGET_AUTHORITY ? h->authority : SPAN_LIT("fuzz.example");
	custos_err e = h->is_response ? http1_write_response_head(&out, h, &o)
	                              : http1_write_request_head(&out, h, &o);
	check(e == CUSTOS_OK);
	http1_parser q;
	if (h->is_response)
		http1_parser_init_response(&q, NULL, req_meth);
	else
		http1_parser_init_request(&q, NULL);
	ssize_t r = http1_parse_head(&q, (const char *)buf_ptr(&out), buf_used(&out));
	/* Writing can only grow a head (Host added, "/" before a query): a head near the size
	 * limit may not fit again; anything else must parse back the same. */
	if (r < 0 && q.err.status == 431) {
		buf_free(&out);
		return;
	}
	check(r == (ssize_t)buf_used(&out));
	check(q.head.framing == h->framing);
	if (h->framing == HTTP1_BODY_LENGTH)
		check(q.head.content_length == h->content_length);
	if (h->is_response) {
		check(q.head.status == h->status);
	} else {
		check(q.head.meth == h->meth);
		check(span_eq(q.head.method, h->method));
		check(q.head.expect_continue == false);
	}
	buf_free(&out);
}

/* Runs the stream; pieces: [0, split) then the rest. */
static void run(const char *d, size_t n, size_t split, int response, http1_method rm, outcome *oc,
                int write_back)
{
	http1_parser p;
	http1_body b;
	size_t base = 0, pos = 0; /* start of the current message; next body byte */
	size_t avail = split < n ? split : n;
	int in_body = 0;

	memset(oc, 0, sizeof(*oc));
	if (response)
		http1_parser_init_response(&p, NULL, rm);
	else
		http1_parser_init_request(&p, NULL);
	for (;;) {
		if (!in_body) {
			ssize_t r = http1_parse_head(&p, d + base, avail - base);
			if (r < 0) {
				check(p.err.status >= 400 && p.err.reason != NULL);
				check(p.err.offset <= avail - base);
				oc->status = p.err.status;
				oc->consumed = base + p.err.offset;
				return;
			}
			if (r == 0) {
				if (avail == n)
					break;
				avail = n; /* the second piece arrives */
				continue;
			}
			check((size_t)r <= avail - base);
			if (write_back)
				round_trip(&p.head, rm);
			http1_body_init(&b, &p.head, NULL);
			in_body = 1;
			pos = base + (size_t)r;
		}
		bool done = http1_body_done(&b);
		while (!done && pos < avail) {
			span s;
			ssize_t r = http1_body_decode(&b, d + pos, avail - pos, &s, &done);
			if (r < 0) {
				check(b.err.status >= 400 && b.err.reason != NULL);
				/* The absolute error position must not depend on the split. */
				check(b.err.offset < avail - pos);
				oc->status = b.err.status;
				oc->consumed = pos + b.err.offset;
				return;
			}
			check(r > 0 && (size_t)r <= avail - pos);
			check(s.len == 0 || (s.ptr >= d + pos && s.ptr + s.len <= d + avail));
			for (size_t i = 0; i < s.len; i++)
				oc->body_sum = oc->body_sum * 31 + (uint8_t)s.ptr[i];
			oc->body_bytes += s.len;
			pos += (size_t)r;
		}
		if (done) {
			oc->messages++;
			base = pos;
			in_body = 0;
			http1_parser_reset(&p);
			continue;
		}
		if (avail == n)
			break;
		avail = n;
	}
	oc->consumed = in_body ? pos : base;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	int response = data[0] & 1;
	static const http1_method ms[] = { HTTP1_M_GET, HTTP1_M_HEAD, HTTP1_M_POST,
		                           HTTP1_M_CONNECT };
	http1_method rm = ms[(data[0] >> 1) & 3];
	const char *d = (const char *)data + 2;
	size_t n = size - 2;
	/* An exact copy, so reads past the end are caught. */
	char *copy = malloc(n ? n : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, d, n);
	outcome a, b;
	run(copy, n, n, response, rm, &a, 1);
	size_t split = n ? data[1] % (n + 1) : 0;
	run(copy, n, split, response, rm, &b, 0);
	check(a.messages == b.messages);
	check(a.status == b.status);
	check(a.body_bytes == b.body_bytes);
	check(a.body_sum == b.body_sum);
	check(a.consumed == b.consumed);
	free(copy);
	return 0;
}
