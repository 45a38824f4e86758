/*
 * SSE parser and writer tests: line endings, multi-line data, comments, fields, [DONE], the
 * event limit, and streams fed whole, byte by byte and split at every offset with the same
 * events coming out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/sse.h"

/* Events of a stream, flattened into one text for comparison:
 * "type|data|id|flags;" per event. */
typedef struct collected {
	buf text;
	buf raw; /* concatenated raw bytes */
	size_t events;
	size_t done;
	int err;
	bool pending;
} collected;

static void collect(collected *c, const sse_event *ev)
{
	assert_int_equal(buf_append(&c->text, ev->type.ptr, ev->type.len), CUSTOS_OK);
	assert_int_equal(buf_append_byte(&c->text, '|'), CUSTOS_OK);
	assert_int_equal(buf_append(&c->text, ev->data.ptr, ev->data.len), CUSTOS_OK);
	assert_int_equal(buf_append_byte(&c->text, '|'), CUSTOS_OK);
	assert_int_equal(buf_append(&c->text, ev->id.ptr, ev->id.len), CUSTOS_OK);
	assert_int_equal(buf_printf(&c->text, "|%d%d%d%d:%llu:%zu;", ev->has_data, ev->has_id,
	                            ev->has_retry, ev->done, (unsigned long long)ev->retry,
	                            ev->comments),
	                 CUSTOS_OK);
	assert_int_equal(buf_append(&c->raw, ev->raw.ptr, ev->raw.len), CUSTOS_OK);
	c->events++;
	c->done += ev->done;
}

/* Feeds s in pieces: sizes from `cuts` (positions), each piece in its own exact allocation. */
static void run(const char *s, size_t n, const size_t *cuts, size_t ncuts, size_t max, collected *c)
{
	sse_parser p;
	sse_parser_init(&p, max);
	memset(c, 0, sizeof(*c));
	buf_init(&c->text, 1 << 20);
	buf_init(&c->raw, 1 << 20);
	size_t start = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : n;
		size_t len = end - start;
		char *piece = malloc(len ? len : 1);
		assert_non_null(piece);
		memcpy(piece, s + start, len);
		size_t off = 0;
		while (off < len) {
			sse_event ev;
			bool have;
			ssize_t r = sse_parse(&p, piece + off, len - off, &ev, &have);
			if (r < 0) {
				c->err = 1;
				free(piece);
				goto out;
			}
			assert_true(r > 0);
			off += (size_t)r;
			if (have)
				collect(c, &ev);
		}
		free(piece);
		start = end;
	}
out:
	c->pending = sse_parser_pending(&p);
	sse_parser_free(&p);
}

static void collected_free(collected *c)
{
	buf_free(&c->text);
	buf_free(&c->raw);
}

static void expect_equal(const collected *a, const collected *b)
{
	assert_int_equal(a->err, b->err);
	assert_int_equal(a->events, b->events);
	assert_int_equal(a->pending, b->pending);
	if (!span_eq(buf_span(&a->text), buf_span(&b->text)))
		fail_msg("events differ:\n%.*s\n%.*s", (int)buf_used(&a->text),
		         (const char *)buf_ptr(&a->text), (int)buf_used(&b->text),
		         (const char *)buf_ptr(&b->text));
}

/* Whole, byte by byte, and split in two at every offset. */
static void all_ways(const char *s, size_t max, collected *whole)
{
	size_t n = strlen(s);
	run(s, n, NULL, 0, max, whole);
	if (!whole->err) {
		/* Raw bytes of the events are the input, except bytes of a pending event. */
		assert_true(buf_used(&whole->raw) <= n);
		assert_memory_equal(buf_ptr(&whole->raw), s, buf_used(&whole->raw));
	}
	size_t *cuts = malloc((n + 1) * sizeof(*cuts));
	assert_non_null(cuts);
	for (size_t i = 0; i < n; i++)
		cuts[i] = i + 1;
	collected o;
	run(s, n, cuts, n ? n - 1 : 0, max, &o);
	expect_equal(whole, &o);
	collected_free(&o);
	for (size_t k = 0; k <= n; k++) {
		run(s, n, &k, 1, max, &o);
		expect_equal(whole, &o);
		collected_free(&o);
	}
	free(cuts);
}

static const char *text(const collected *c)
{
	static char tmp[4096];
	size_t n = buf_used(&c->text) < sizeof(tmp) - 1 ? buf_used(&c->text) : sizeof(tmp) - 1;
	memcpy(tmp, buf_ptr(&c->text), n);
	tmp[n] = '\0';
	return tmp;
}

static void test_openai_stream(void **state)
{
	(void)state;
	const char *s = "data: {\"choices\":[{\"delta\":{\"content\":\"4111 1111\"}}]}\n\n"
	                "data: {\"choices\":[{\"delta\":{\"content\":\" 1111 1111\"}}]}\n\n"
	                ": keep-alive\n\n"
	                "data: [DONE]\n\n";
	collected c;
	all_ways(s, 0, &c);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.events, 4);
	assert_int_equal(c.done, 1);
	assert_false(c.pending);
	assert_string_equal(text(&c),
	                    "|{\"choices\":[{\"delta\":{\"content\":\"4111 1111\"}}]}||1000:0:0;"
	                    "|{\"choices\":[{\"delta\":{\"content\":\" 1111 1111\"}}]}||1000:0:0;"
	                    "|||0000:0:1;"
	                    "|[DONE]||1001:0:0;");
	assert_int_equal(buf_used(&c.raw), strlen(s));
	collected_free(&c);
}

static void test_fields_and_endings(void **state)
{
	(void)state;
	collected c;
	/* CRLF, CR and LF endings; multi-line data; event, id, retry; no space after colon;
	 * unknown fields and a field without a colon ignored. */
	all_ways("event: update\r\ndata: line1\r\ndata:line2\r\nid: 7\r\nretry: 1500\r\n"
	         "foo: bar\r\ndata\r\n\r\n"
	         "data: cr\rdata: only\r\r"
	         "data:  two spaces\n\n",
	         0, &c);
	assert_int_equal(c.err, 0);
	assert_string_equal(text(&c), "update|line1\nline2\n|7|1110:1500:0;"
	                              "|cr\nonly||1000:0:0;"
	                              "| two spaces||1000:0:0;");
	collected_free(&c);
	/* Bad retry ignored; id with NUL ignored; empty data line gives empty data. */
	const char nul_id[] = "retry: 1x\nid: a\0b\ndata:\n\n";
	collected d;
	run(nul_id, sizeof(nul_id) - 1, NULL, 0, 0, &d);
	assert_string_equal(text(&d), "|||1000:0:0;");
	collected_free(&d);
	/* A BOM at the start is skipped; a partial BOM is data. */
	all_ways("\xef\xbb\xbf"
	         "data: x\n\n",
	         0, &c);
	assert_string_equal(text(&c), "|x||1000:0:0;");
	collected_free(&c);
	all_ways("\xef\xbb"
	         "data: x\n\n",
	         0, &c);
	assert_string_equal(text(&c), "|||0000:0:0;");
	collected_free(&c);
	/* An unfinished event is pending; blank lines alone are empty events. */
	all_ways("\n\ndata: partial", 0, &c);
	assert_int_equal(c.events, 2);
	assert_true(c.pending);
	collected_free(&c);
}

static void test_limit(void **state)
{
	(void)state;
	collected c;
	all_ways("data: 0123456789\n\n", 16, &c);
	assert_int_equal(c.err, 1);
	collected_free(&c);
	all_ways("data: 012345678\n\n", 17, &c);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.events, 1);
	collected_free(&c);
	/* The limit applies per event, not per stream. */
	all_ways("data: 012345678\n\ndata: 012345678\n\ndata: 012345678\n\n", 17, &c);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.events, 3);
	collected_free(&c);
	sse_parser p;
	sse_parser_init(&p, SIZE_MAX);
	assert_int_equal(p.max, SSE_MAX_EVENT_BYTES);
	sse_parser_free(&p);
}

static void test_writer(void **state)
{
	(void)state;
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(sse_write_event(&out, SPAN_LIT(""), SPAN_LIT("{\"a\":1}")), CUSTOS_OK);
	assert_int_equal(sse_write_event(&out, SPAN_LIT("error"), SPAN_LIT("l1\nl2\r\nl3\rl4")),
	                 CUSTOS_OK);
	assert_int_equal(sse_write_event(&out, SPAN_LIT(""), SPAN_LIT("")), CUSTOS_OK);
	assert_int_equal(sse_write_comment(&out, SPAN_LIT("ping")), CUSTOS_OK);
	assert_int_equal(sse_write_event(&out, SPAN_LIT(""), SPAN_LIT("[DONE]")), CUSTOS_OK);
	const char *want = "data: {\"a\":1}\n\n"
	                   "event: error\ndata: l1\ndata: l2\ndata: l3\ndata: l4\n\n"
	                   "data: \n\n"
	                   ": ping\n"
	                   "data: [DONE]\n\n";
	assert_true(span_eq_cstr(buf_span(&out), want));
	/* Round trip through the parser. */
	assert_int_equal(buf_append_byte(&out, '\0'), CUSTOS_OK);
	collected c;
	all_ways((const char *)buf_ptr(&out), 0, &c);
	assert_string_equal(text(&c), "|{\"a\":1}||1000:0:0;"
	                              "error|l1\nl2\nl3\nl4||1000:0:0;"
	                              "|||1000:0:0;"
	                              "|[DONE]||1001:0:1;");
	collected_free(&c);
	buf_reset(&out);
	assert_int_equal(sse_write_event(&out, SPAN_LIT("a\nb"), SPAN_LIT("x")), CUSTOS_ERR_INVAL);
	assert_int_equal(sse_write_comment(&out, SPAN_LIT("a\rb")), CUSTOS_ERR_INVAL);
	/* An empty id and data given as the span of a buf never written, (NULL, 0): written
	 * without offsetting NULL (undefined behaviour, which clang's -fsanitize=undefined stops
	 * on; found by fuzz_ingress_inspect on an event whose data redacts to nothing). */
	sse_parser p;
	sse_event ev;
	bool have = false;
	buf none;
	sse_parser_init(&p, 0);
	buf_init(&none, 16);
	assert_int_equal(sse_parse(&p, "id\ndata\n\n", 9, &ev, &have), 9);
	assert_true(have && ev.has_id && ev.id.len == 0);
	buf_reset(&out);
	assert_null(buf_span(&none).ptr);
	assert_int_equal(sse_write_event_from(&out, &ev, buf_span(&none)), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "id: \ndata: \n\n"));
	sse_parser_free(&p);
	buf_free(&none);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_openai_stream),
		cmocka_unit_test(test_fields_and_endings),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_writer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
