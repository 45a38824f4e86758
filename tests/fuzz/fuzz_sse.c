/*
 * libFuzzer target for the SSE parser and writer: the stream (after a first byte giving a
 * split point and the event limit) is parsed whole and in two pieces; the events must agree.
 * Every event written back with sse_write_event parses to the same type and data.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

/* FNV-1a over the events' type, data and flags. */
static uint64_t mix(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

static void round_trip(const sse_event *ev)
{
	buf out;
	buf_init(&out, 1u << 24);
	if (sse_write_event(&out, ev->type, ev->data) != CUSTOS_OK) {
		/* Only a type with a line break is refused, and the parser never yields one. */
		abort();
	}
	sse_parser p;
	sse_parser_init(&p, 0);
	sse_event e2;
	bool have;
	ssize_t r = sse_parse(&p, (const char *)buf_ptr(&out), buf_used(&out), &e2, &have);
	if (r >= 0 && buf_used(&out) <= SSE_MAX_EVENT_BYTES) {
		check(have && (size_t)r == buf_used(&out));
		check(span_eq(e2.type, ev->type));
		check(span_eq(e2.data, ev->data));
	}
	sse_parser_free(&p);
	buf_free(&out);
}

static uint64_t run(const char *d, size_t n, size_t split, size_t max, int *err, int rt)
{
	sse_parser p;
	uint64_t h = 0xcbf29ce484222325ull;
	sse_parser_init(&p, max);
	size_t cuts[2] = { split, n };
	size_t pos = 0;
	*err = 0;
	for (int k = 0; k < 2; k++) {
		while (pos < cuts[k]) {
			sse_event ev;
			bool have;
			ssize_t r = sse_parse(&p, d + pos, cuts[k] - pos, &ev, &have);
			if (r < 0) {
				*err = 1;
				goto out;
			}
			check(r > 0 && (size_t)r <= cuts[k] - pos);
			pos += (size_t)r;
			if (!have)
				continue;
			check(ev.raw.len <= p.max + 1); /* + the LF of a final CRLF */
			uint8_t flags[4] = { ev.has_data, ev.has_id, ev.has_retry, ev.done };
			h = mix(h, ev.type.ptr, ev.type.len);
			h = mix(h, "|", 1);
			h = mix(h, ev.data.ptr, ev.data.len);
			h = mix(h, "|", 1);
			h = mix(h, ev.id.ptr, ev.id.len);
			h = mix(h, flags, sizeof(flags));
			h = mix(h, &ev.retry, sizeof(ev.retry));
			if (rt)
				round_trip(&ev);
		}
	}
out:
	sse_parser_free(&p);
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t n = size - 1;
	char *d = malloc(n ? n : 1);
	if (d == NULL)
		return 0;
	memcpy(d, data + 1, n);
	size_t max = (data[0] & 0x80) ? 64 : 0;
	size_t split = n ? (data[0] & 0x7f) % (n + 1) : 0;
	int e1, e2;
	uint64_t a = run(d, n, n, max, &e1, 1);
	uint64_t b = run(d, n, split, max, &e2, 0);
	check(e1 == e2);
	check(a == b);
	free(d);
	return 0;
}
