/*
 * Unit tests for content inspection on the proxy's ingress path (proxy/ingress_inspect.c):
 * an SSE stream whose card number is split over four events, fed to the proxy in two pieces
 * at every byte offset and byte by byte, comes out redacted as valid chunk events; a deny
 * mid-stream ends with an error event and [DONE]; a finish without a content field gets the
 * held-back tail in an event before it; prompts are redacted as JSON (escapes included),
 * denied, or refused when unreadable; JSON responses; content-encoded responses are refused
 * (asked at the head, the reason naming the coding); the audit summary has types and counts; responses-API delta events are streamed per part
 * (a card over four events cut at every byte offset, parts, arguments, deny, logprobs).
 * Parts of a stream, each its own joined text, with other parts' events between them: chat
 * choices, reasoning, refusals and tool calls interleaved; content as arrays of text parts,
 * audio transcripts and tool names (whole per event); Anthropic-style content blocks
 * (text, thinking, partial_json; the tail before content_block_stop, a thinking block's before
 * its signature); llama.cpp /completion
 * events; cut at every byte offset; values split between two parts are not joined.
 * Egress data (raw byte-stream mode): a card split at every offset (written with Unicode
 * look-alikes too) is redacted whatever the content type, a deny releases nothing of the
 * value, and which decisions ask for response inspection. Negative cases first in each group.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "custos/inspect.h"
#include "custos/policy.h"
#include "proxy/egress_int.h"
#include "proxy/ingress_inspect.h"
#include "proxy/json.h"
#include "proxy/openai.h"
#include "proxy/sse.h"

static inspect_engine *eng;

static int setup(void **state)
{
	(void)state;
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL };
	return inspect_engine_new(&o, &eng) == CUSTOS_OK ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	inspect_engine_free(eng);
	return 0;
}

static void make_dec(decide_out *d, bool shadow)
{
	memset(d, 0, sizeof(*d));
	d->has_inspect = true;
	d->shadow = shadow;
	d->insp_engine = eng;
	d->insp_engine_id = 1;
	d->insp_prompt[INSPECT_EMAIL] = INSPECT_ACT_REDACT;
	d->insp_prompt[INSPECT_US_SSN] = INSPECT_ACT_DENY;
	d->insp_prompt[INSPECT_IPV4] = INSPECT_ACT_LOG;
	d->insp_response[INSPECT_PAYMENT_CARD] = INSPECT_ACT_REDACT;
	d->insp_response[INSPECT_AWS_ACCESS_KEY] = INSPECT_ACT_DENY;
}

/* A request state with an empty prompt (response inspection only). */
static ingress_insp *new_insp(bool shadow)
{
	decide_out d;
	ingress_insp *ip = NULL;
	const char *why = NULL;
	buf body;

	make_dec(&d, shadow);
	buf_init(&body, 16);
	assert_int_equal(ingress_inspect_request(&ip, &d, false, NULL, &body, &why), 0);
	buf_free(&body);
	assert_non_null(ip);
	return ip;
}

static http1_head *resp_head(const char *ctype, const char *encoding)
{
	http1_head *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h->is_response = true;
	h->version = 11;
	h->status = 200;
	h->framing = HTTP1_BODY_CHUNKED;
	h->hdrs[h->nhdrs++] = (http1_header){ SPAN_LIT("Content-Type"), span_cstr(ctype) };
	if (encoding)
		h->hdrs[h->nhdrs++] =
		        (http1_header){ SPAN_LIT("Content-Encoding"), span_cstr(encoding) };
	return h;
}

static void chunk_event(buf *b, const char *content, bool fin)
{
	buf esc;
	buf_init(&esc, 4096);
	assert_int_equal(json_escape(&esc, span_cstr(content)), CUSTOS_OK);
	assert_int_equal(buf_printf(b,
	                            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	                            "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
	                            "\"delta\":{\"content\":\"%.*s\"},\"finish_reason\":%s}]}\n\n",
	                            (int)buf_used(&esc), (const char *)buf_ptr(&esc),
	                            fin ? "\"stop\"" : "null"),
	                 CUSTOS_OK);
	buf_free(&esc);
}

/* Parses what the client got: every data event must be JSON (or [DONE]); joins content. */
static void client_text(span sse, buf *text, size_t *events, bool *done, bool *error)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	*events = 0;
	*done = *error = false;
	const char *s = sse.ptr;
	size_t n = sse.len;
	while (n > 0) {
		sse_event ev;
		bool have = false;
		ssize_t k = sse_parse(&p, s, n, &ev, &have);
		assert_true(k >= 0);
		if (have && ev.has_data) {
			assert_false(*done); /* nothing after [DONE] */
			if (ev.done) {
				*done = true;
			} else {
				jsonr_val root, v;
				assert_int_equal(jsonr_parse(ev.data, NULL, &root), CUSTOS_OK);
				if (jsonr_obj_get(root, "error", &v)) {
					*error = true;
				} else {
					openai_chunk c;
					assert_int_equal(openai_chunk_parse(ev.data, &c),
					                 CUSTOS_OK);
					for (size_t i = 0; i < c.ndeltas; i++)
						if (c.deltas[i].has_content)
							assert_int_equal(
							        jsonr_unescape(c.deltas[i].content,
							                       text),
							        CUSTOS_OK);
				}
				(*events)++;
			}
		}
		s += k;
		n -= (size_t)k;
		if (k == 0 && !have)
			break;
	}
	sse_parser_free(&p);
}

/* Runs body through a fresh response inspector in pieces cut at `cuts` (sorted offsets). */
static custos_err run_stream(span body, const size_t *cuts, size_t ncuts, buf *client,
                             ingress_insp **keep)
{
	ingress_insp *ip = new_insp(false);
	http1_head *h = resp_head("text/event-stream", NULL);
	assert_true(ingress_inspect_response_begin(ip, h));
	assert_true(ingress_inspect_response_active(ip));
	free(h);
	custos_err e = CUSTOS_OK;
	size_t at = 0;
	for (size_t i = 0; i <= ncuts && e == CUSTOS_OK; i++) {
		size_t end = i < ncuts ? cuts[i] : body.len;
		span out;
		e = ingress_inspect_response_data(ip, span_of(body.ptr + at, end - at), &out);
		assert_int_equal(buf_append_span(client, out), CUSTOS_OK);
		at = end;
	}
	if (e == CUSTOS_OK) {
		span out;
		e = ingress_inspect_response_end(ip, &out);
		assert_int_equal(buf_append_span(client, out), CUSTOS_OK);
	}
	if (keep)
		*keep = ip;
	else
		ingress_inspect_free(ip);
	return e;
}

static void card_body(buf *b)
{
	/* "Card 4111 1111 1111 1111." as the fixture splits it with --tokens 4 */
	chunk_event(b, "Card 4", false);
	chunk_event(b, "111 11", false);
	chunk_event(b, "11 111", false);
	chunk_event(b, "1 1111.", true);
	assert_int_equal(buf_append_cstr(b, "data: [DONE]\n\n"), CUSTOS_OK);
}

static void check_card_client(span client)
{
	buf text;
	size_t events;
	bool done, error;
	buf_init(&text, 4096);
	client_text(client, &text, &events, &done, &error);
	assert_true(done);
	assert_false(error);
	assert_int_equal(events, 4);
	assert_int_equal(buf_used(&text), strlen("Card [REDACTED:PAYMENT_CARD]."));
	assert_memory_equal(buf_ptr(&text), "Card [REDACTED:PAYMENT_CARD].", buf_used(&text));
	assert_null(memmem(client.ptr, client.len, "4111", 4));
	assert_null(memmem(client.ptr, client.len, "1 1", 3));
	buf_free(&text);
}

static void test_sse_card_every_split(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	card_body(&body);
	span b = buf_span(&body);
	for (size_t cut = 0; cut <= b.len; cut++) {
		buf_reset(&client);
		assert_int_equal(run_stream(b, &cut, 1, &client, NULL), CUSTOS_OK);
		check_card_client(buf_span(&client));
	}
	/* byte by byte */
	size_t *cuts = calloc(b.len, sizeof(size_t));
	assert_non_null(cuts);
	for (size_t i = 0; i < b.len; i++)
		cuts[i] = i + 1;
	buf_reset(&client);
	ingress_insp *ip = NULL;
	assert_int_equal(run_stream(b, cuts, b.len - 1, &client, &ip), CUSTOS_OK);
	check_card_client(buf_span(&client));
	const audit_finding *f;
	size_t n;
	const char *sum;
	uint64_t ns;
	ingress_inspect_audit(ip, &f, &n, &sum, &ns);
	assert_int_equal(n, 1);
	assert_string_equal(f[0].type, "payment_card");
	assert_int_equal(f[0].count, 1);
	assert_string_equal(sum, "prompt:none response:redact");
	const char *decision = "allow", *reason = "r";
	ingress_inspect_outcome(ip, &decision, &reason);
	assert_string_equal(decision, "allow");
	ingress_inspect_free(ip);
	free(cuts);
	buf_free(&body);
	buf_free(&client);
}

static void test_sse_deny_midstream(void **state)
{
	(void)state;
	buf body, client, text;
	size_t events;
	bool done, error;
	ingress_insp *ip;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	buf_init(&text, 4096);
	chunk_event(&body, "Starting the answer, all fine so far. ", false);
	chunk_event(&body, "The key is AKIAIOSF", false);
	chunk_event(&body, "ODNN7EXAMPLE and more", false);
	chunk_event(&body, " text follows.", true);
	assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, &ip), CUSTOS_ERR_DENIED);
	client_text(buf_span(&client), &text, &events, &done, &error);
	assert_true(error);
	assert_true(done);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "follows", 7));
	assert_true(buf_used(&text) > 0 && memcmp(buf_ptr(&text), "Starting", 8) == 0);
	/* later data is refused too */
	span out;
	assert_int_equal(ingress_inspect_response_data(ip, SPAN_LIT("data: x\n\n"), &out),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(out.len, 0);
	const char *decision = "allow", *reason = "r";
	ingress_inspect_outcome(ip, &decision, &reason);
	assert_string_equal(decision, "deny");
	assert_non_null(strstr(reason, "aws_access_key"));
	const audit_finding *f;
	size_t n;
	const char *sum;
	uint64_t ns;
	ingress_inspect_audit(ip, &f, &n, &sum, &ns);
	assert_int_equal(n, 1);
	assert_string_equal(f[0].type, "aws_access_key");
	assert_string_equal(sum, "prompt:none response:deny");
	ingress_inspect_free(ip);
	buf_free(&body);
	buf_free(&client);
	buf_free(&text);
}

/* Data events that are not chunks with choices (the responses API, Anthropic-style events,
 * an error object) are inspected as a whole: every string value. */
static void test_sse_not_a_chunk(void **state)
{
	(void)state;
	static const char *const evs[] = {
		"{\"type\":\"response.output_text.delta\",\"delta\":\"card 4111 1111 1111 1111 "
		"ok\"}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
		"\"text\":\"card 4111 1111 1111 1111 ok\"}}",
		"{\"error\":{\"message\":\"card 4111 1111 1111 1111 ok\"}}",
		/* Anthropic citations: the cited text whole, in its event */
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		"\"citations_delta\",\"citation\":{\"type\":\"char_location\",\"cited_text\":"
		"\"card 4111 1111 1111 1111 ok\",\"document_index\":0,\"start_char_index\":0}}}",
		"{\"usage\":{\"prompt_tokens\":1},\"text\":\"card 4111 1111 1111 1111 ok\"}",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(evs); i++) {
		buf body, client;
		buf_init(&body, 1 << 16);
		buf_init(&client, 1 << 20);
		assert_int_equal(buf_printf(&body, "data: %s\n\ndata: [DONE]\n\n", evs[i]),
		                 CUSTOS_OK);
		assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
		assert_non_null(memmem(buf_ptr(&client), buf_used(&client),
		                       "card [REDACTED:PAYMENT_CARD] ok", 31));
		/* a deny detector in such an event ends the stream */
		buf_reset(&body);
		buf_reset(&client);
		assert_int_equal(
		        buf_printf(&body,
		                   "data: {\"type\":\"x\",\"delta\":\"AKIAIOSFODNN7EXAMPLE\"}\n\n"),
		        CUSTOS_OK);
		assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL),
		                 CUSTOS_ERR_DENIED);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
		buf_free(&body);
		buf_free(&client);
	}
}

/* One responses-API event: `event: TYPE` and its data with item id, indices and "delta" (or,
 * for a ".done" event, "text"); cidx < 0: no content_index. */
static void resp_ev(buf *b, const char *type, const char *item, int cidx, const char *field,
                    const char *value)
{
	buf esc;
	buf_init(&esc, 4096);
	assert_int_equal(json_escape(&esc, span_cstr(value)), CUSTOS_OK);
	char ci[32] = "";
	if (cidx >= 0)
		snprintf(ci, sizeof(ci), ",\"content_index\":%d", cidx);
	static int seq;
	assert_int_equal(buf_printf(b,
	                            "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%d,"
	                            "\"item_id\":\"%s\",\"output_index\":0%s,\"%s\":\"%.*s\"}\n\n",
	                            type, type, ++seq, item, ci, field, (int)buf_used(&esc),
	                            (const char *)buf_ptr(&esc)),
	                 CUSTOS_OK);
	buf_free(&esc);
}

/* What a responses-API client reads: per (type, item, content index) the deltas joined, every
 * data event JSON, the order of events kept; the ".done" events' text. */
typedef struct resp_view {
	char text[2][256]; /* output_text deltas of content index 0 and 1 */
	char args[256];    /* function_call_arguments deltas */
	char done[256];    /* output_text.done text of content index 0 */
	bool tail_before_done, completed, error;
} resp_view;

static void resp_read(span sse, resp_view *v)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	memset(v, 0, sizeof(*v));
	v->tail_before_done = true;
	bool done_seen = false;
	const char *s = sse.ptr;
	size_t n = sse.len;
	while (n > 0) {
		sse_event ev;
		bool have = false;
		ssize_t k = sse_parse(&p, s, n, &ev, &have);
		assert_true(k >= 0);
		if (have && ev.has_data && !ev.done) {
			static const char *const names[] = { "type", "delta", "content_index",
				                             "text", "error" };
			jsonr_val root, f[5];
			assert_int_equal(jsonr_parse(ev.data, NULL, &root), CUSTOS_OK);
			uint32_t got = jsonr_obj_pick(root, names, 5, f);
			buf t;
			buf_init(&t, 4096);
			if (got & 16) {
				v->error = true;
			} else if (jsonr_str_eq(f[0].str, "response.output_text.delta") ||
			           jsonr_str_eq(f[0].str,
			                        "response.function_call_arguments.delta")) {
				assert_true(
				        span_eq(ev.type, f[0].str)); /* the event line is kept */
				assert_int_equal(jsonr_unescape(f[1].str, &t), CUSTOS_OK);
				char *dst = jsonr_str_eq(f[0].str, "response.output_text.delta")
				                    ? v->text[f[2].raw.ptr[0] == '1']
				                    : v->args;
				size_t cur = strlen(dst), m = buf_used(&t);
				if (m > 255 - cur)
					m = 255 - cur;
				if (m > 0)
					memcpy(dst + cur, buf_ptr(&t), m);
				dst[cur + m] = '\0';
				if (done_seen)
					v->tail_before_done = false;
			} else if (jsonr_str_eq(f[0].str, "response.output_text.done") &&
			           f[2].raw.ptr[0] == '0') {
				assert_int_equal(jsonr_unescape(f[3].str, &t), CUSTOS_OK);
				snprintf(v->done, sizeof(v->done), "%.*s", (int)buf_used(&t),
				         (const char *)buf_ptr(&t));
				done_seen = true;
			} else if (jsonr_str_eq(f[0].str, "response.completed")) {
				v->completed = true;
			}
			buf_free(&t);
		}
		s += k;
		n -= (size_t)k;
		if (k == 0 && !have)
			break;
	}
	sse_parser_free(&p);
}

/* The responses API: a card split over four output_text.delta events (as a model streams it),
 * fed to the proxy cut at every byte offset and byte by byte: each event's delta is replaced
 * by what is released, the held-back tail comes in one more delta event before the ".done"
 * event, and the ".done" text (the whole text again) is masked too. */
static void test_sse_responses_split(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	assert_int_equal(buf_append_cstr(&body, "event: response.created\ndata: {\"type\":"
	                                        "\"response.created\",\"response\":{\"id\":"
	                                        "\"resp_1\"}}\n\n"),
	                 CUSTOS_OK);
	const char *parts[] = { "Card 4", "111 11", "11 111", "1 1111." };
	for (size_t i = 0; i < 4; i++)
		resp_ev(&body, "response.output_text.delta", "msg_1", 0, "delta", parts[i]);
	resp_ev(&body, "response.output_text.done", "msg_1", 0, "text",
	        "Card 4111 1111 1111 1111.");
	assert_int_equal(buf_append_cstr(&body, "event: response.completed\ndata: {\"type\":"
	                                        "\"response.completed\",\"response\":{\"id\":"
	                                        "\"resp_1\",\"status\":\"completed\"}}\n\n"),
	                 CUSTOS_OK);
	span b = buf_span(&body);
	size_t *cuts = calloc(b.len, sizeof(size_t));
	assert_non_null(cuts);
	for (size_t i = 0; i < b.len; i++)
		cuts[i] = i + 1;
	for (size_t cut = 0; cut <= b.len + 1; cut++) {
		buf_reset(&client);
		if (cut <= b.len)
			assert_int_equal(run_stream(b, &cut, 1, &client, NULL), CUSTOS_OK);
		else /* byte by byte */
			assert_int_equal(run_stream(b, cuts, b.len - 1, &client, NULL), CUSTOS_OK);
		resp_view v;
		resp_read(buf_span(&client), &v);
		assert_string_equal(v.text[0], "Card [REDACTED:PAYMENT_CARD].");
		assert_string_equal(v.done, "Card [REDACTED:PAYMENT_CARD].");
		assert_true(v.tail_before_done);
		assert_true(v.completed);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "1 1", 3));
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "111", 3));
	}
	free(cuts);
	buf_free(&body);
	buf_free(&client);
}

/* A responses-API delta event with another string beside its "delta" (OpenAI's
 * "obfuscation" padding; any text a server puts there): that string is inspected whole, as
 * in Anthropic-style and llama.cpp events, and the copy of the event that carries the tail
 * holds it as redacted. It used to pass uninspected (found by fuzz_ingress_inspect). Negative
 * first: a string with nothing in it goes out unchanged. */
static void test_sse_responses_other_members(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	static const char ev1[] =
	        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
	        "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Card "
	        "4111 "
	        "1111 \",\"obfuscation\":\"%s\"}\n\n";
	static const char ev2[] =
	        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
	        "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"1111 "
	        "1111.\",\"obfuscation\":\"%s\"}\n\n";
	static const char done[] =
	        "event: response.completed\ndata: {\"type\":\"response.completed\","
	        "\"response\":{\"id\":\"resp_1\"}}\n\n";
	assert_int_equal(buf_printf(&body, ev1, "Zq3x"), CUSTOS_OK);
	assert_int_equal(buf_printf(&body, ev2, "k9"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&body, done), CUSTOS_OK);
	resp_view v;
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	resp_read(buf_span(&client), &v);
	assert_string_equal(v.text[0], "Card [REDACTED:PAYMENT_CARD].");
	assert_non_null(
	        memmem(buf_ptr(&client), buf_used(&client), "\"obfuscation\":\"Zq3x\"", 20));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "\"obfuscation\":\"k9\"", 18));
	/* a card whole in the other member, in the first event (whose copy carries no tail) and in
	 * the last (whose copy carries the tail) */
	buf_reset(&body);
	buf_reset(&client);
	assert_int_equal(buf_printf(&body, ev1, "card 4111111111111111 ok"), CUSTOS_OK);
	assert_int_equal(buf_printf(&body, ev2, "card 5555 5555 5555 4444 ok"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&body, done), CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	resp_read(buf_span(&client), &v);
	assert_string_equal(v.text[0], "Card [REDACTED:PAYMENT_CARD].");
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "4111", 4));
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "5555", 4));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client),
	                       "\"obfuscation\":\"card [REDACTED:PAYMENT_CARD] ok\"", 47));
	/* a key there is denied */
	buf_reset(&body);
	buf_reset(&client);
	assert_int_equal(buf_printf(&body, ev1, "key AKIAIOSFODNN7EXAMPLE"), CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "content_denied", 14));
	buf_free(&body);
	buf_free(&client);
}

/* Parts are streams of their own: two content parts interleaved, function-call arguments (JSON
 * in pieces, masks quoted where they stand for a number), a deny mid-part, token logprobs
 * written []; a stream without [DONE] or terminal event is finished at the end of the body.
 * Negative: a value whose halves are in two different parts is two texts (not joined). */
static void test_sse_responses_parts(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	resp_ev(&body, "response.output_text.delta", "msg_1", 0, "delta", "one 5555 5555 ");
	resp_ev(&body, "response.output_text.delta", "msg_1", 1, "delta", "two 4111 11");
	resp_ev(&body, "response.output_text.delta", "msg_1", 0, "delta", "5555 4444 end");
	resp_ev(&body, "response.output_text.delta", "msg_1", 1, "delta", "11 1111 1111 end");
	resp_ev(&body, "response.function_call_arguments.delta", "fc_1", -1, "delta",
	        "{\"n\":4111111");
	resp_ev(&body, "response.function_call_arguments.delta", "fc_1", -1, "delta",
	        "111111111,\"ok\":true}");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	resp_view v;
	resp_read(buf_span(&client), &v);
	assert_string_equal(v.text[0], "one [REDACTED:PAYMENT_CARD] end");
	assert_string_equal(v.text[1], "two [REDACTED:PAYMENT_CARD] end");
	assert_string_equal(v.args, "{\"n\":\"[REDACTED:PAYMENT_CARD]\",\"ok\":true}");
	/* halves in two parts: two texts, neither holds a value */
	buf_reset(&body);
	buf_reset(&client);
	resp_ev(&body, "response.output_text.delta", "msg_1", 0, "delta", "4111 1111");
	resp_ev(&body, "response.output_text.delta", "msg_1", 1, "delta", " 1111 1111");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	resp_read(buf_span(&client), &v);
	assert_string_equal(v.text[0], "4111 1111");
	assert_string_equal(v.text[1], " 1111 1111");
	/* a deny in a part: an error event and [DONE], nothing of the key */
	buf_reset(&body);
	buf_reset(&client);
	resp_ev(&body, "response.output_text.delta", "msg_1", 0, "delta",
	        "Fine so far. Key AKIAIO");
	resp_ev(&body, "response.output_text.delta", "msg_1", 0, "delta",
	        "SFODNN7EXAMPLE and more");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	resp_read(buf_span(&client), &v);
	assert_true(v.error);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "and more", 8));
	/* a delta event with an outlandish type (2,000 bytes) is not followed as a part: it is
	 * inspected whole, like any other event */
	buf_reset(&body);
	buf_reset(&client);
	assert_int_equal(buf_append_cstr(&body, "data: {\"type\":\""), CUSTOS_OK);
	for (int k = 0; k < 2000; k++)
		assert_int_equal(buf_append_cstr(&body, "x"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&body, ".delta\",\"delta\":\"card 4111 1111 1111 1111 "
	                                        "ok\"}\n\n"),
	                 CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client),
	                       "\"delta\":\"card [REDACTED:PAYMENT_CARD] ok\"", 41));
	/* token logprobs would carry the digits past the stream: written [] */
	buf_reset(&body);
	buf_reset(&client);
	assert_int_equal(
	        buf_append_cstr(&body, "data: {\"type\":\"response.output_text.delta\",\"item_id\":"
	                               "\"m\",\"output_index\":0,\"content_index\":0,\"delta\":"
	                               "\"4111 1111 1111 1111\",\"logprobs\":[{\"token\":"
	                               "\"4111\"}]}\n\n"),
	        CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "4111", 4));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "\"logprobs\":[]", 13));
	buf_free(&body);
	buf_free(&client);
}

/* logprobs in a chunk carry the token texts past the content stream: they are dropped. */
static void test_sse_logprobs_dropped(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	assert_int_equal(
	        buf_append_cstr(&body,
	                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":"
	                        "\"4111\"},\"logprobs\":{\"content\":[{\"token\":\"4111\"}]}}]}\n\n"
	                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":"
	                        "\" 1111 1111 1111\"},\"logprobs\":{\"content\":[{\"token\":"
	                        "\" 1111 1111 1111\"}]},\"finish_reason\":\"stop\"}]}\n\n"
	                        "data: [DONE]\n\n"),
	        CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "\"logprobs\":null", 15));
	buf_free(&body);
	buf_free(&client);
}

static void test_sse_finish_without_content(void **state)
{
	(void)state;
	buf body, client, text;
	size_t events;
	bool done, error;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	buf_init(&text, 4096);
	chunk_event(&body, "ends with 4111 1111 1111 1111", false);
	assert_int_equal(
	        buf_append_cstr(&body, ": keep-alive\n\n"
	                               "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	                               "\"choices\":[{\"index\":0,\"delta\":{},"
	                               "\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"),
	        CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	client_text(buf_span(&client), &text, &events, &done, &error);
	assert_true(done);
	assert_false(error);
	assert_int_equal(events, 3); /* the chunk, the synthetic tail, the finish */
	assert_int_equal(buf_used(&text), strlen("ends with [REDACTED:PAYMENT_CARD]"));
	assert_memory_equal(buf_ptr(&text), "ends with [REDACTED:PAYMENT_CARD]", buf_used(&text));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), ": keep-alive", 12));
	buf_free(&body);
	buf_free(&client);
	buf_free(&text);
}

static void test_sse_no_done(void **state)
{
	(void)state;
	buf body, client, text;
	size_t events;
	bool done, error;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	buf_init(&text, 4096);
	chunk_event(&body, "cut off at 4111 1111 1111 1111", false);
	/* the upstream ends with no finish_reason and no [DONE]: the tail still comes out */
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	client_text(buf_span(&client), &text, &events, &done, &error);
	assert_false(done);
	assert_memory_equal(buf_ptr(&text), "cut off at [REDACTED:PAYMENT_CARD]", buf_used(&text));
	buf_free(&body);
	buf_free(&client);
	buf_free(&text);
}

static void tool_event(buf *b, const char *args, bool fin)
{
	buf esc;
	buf_init(&esc, 4096);
	assert_int_equal(json_escape(&esc, span_cstr(args)), CUSTOS_OK);
	assert_int_equal(buf_printf(b,
	                            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	                            "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
	                            "\"index\":0,\"function\":{\"arguments\":\"%.*s\"}}]},"
	                            "\"finish_reason\":%s}]}\n\n",
	                            (int)buf_used(&esc), (const char *)buf_ptr(&esc),
	                            fin ? "\"tool_calls\"" : "null"),
	                 CUSTOS_OK);
	buf_free(&esc);
}

/* Joins the tool-call arguments the client got (choice 0, tool 0). */
static void client_args(span client, buf *args)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	const char *q = client.ptr;
	size_t n = client.len;
	while (n > 0) {
		sse_event ev;
		bool have = false;
		ssize_t k = sse_parse(&p, q, n, &ev, &have);
		assert_true(k >= 0);
		jsonr_val root, ch, c, d, tcs, tc, fn, a;
		if (have && ev.has_data && !ev.done) {
			assert_int_equal(jsonr_parse(ev.data, NULL, &root), CUSTOS_OK);
			jsonr_iter it;
			assert_true(jsonr_obj_get(root, "choices", &ch));
			jsonr_iter_init(&it, ch);
			assert_true(jsonr_arr_next(&it, &c));
			if (jsonr_obj_get(c, "delta", &d) && jsonr_obj_get(d, "tool_calls", &tcs)) {
				jsonr_iter it2;
				jsonr_iter_init(&it2, tcs);
				assert_true(jsonr_arr_next(&it2, &tc));
				assert_true(jsonr_obj_get(tc, "function", &fn));
				assert_true(jsonr_obj_get(fn, "arguments", &a));
				assert_int_equal(jsonr_unescape(a.str, args), CUSTOS_OK);
			}
		}
		q += k;
		n -= (size_t)k;
		if (k == 0 && !have)
			break;
	}
	sse_parser_free(&p);
}

/* Tool-call arguments streamed in fragments: reassembled and redacted like content. */
static void test_sse_tool_call_args(void **state)
{
	(void)state;
	buf body, client, args;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	buf_init(&args, 4096);
	tool_event(&body, "{\"card\": \"4111 11", false);
	tool_event(&body, "11 1111 1", false);
	tool_event(&body, "111\"}", true);
	assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
	span b = buf_span(&body);
	for (size_t cut = 0; cut <= b.len; cut += 7) {
		buf_reset(&client);
		buf_reset(&args);
		assert_int_equal(run_stream(b, &cut, 1, &client, NULL), CUSTOS_OK);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "4111", 4));
		client_args(buf_span(&client), &args);
		const char *want = "{\"card\": \"[REDACTED:PAYMENT_CARD]\"}";
		assert_int_equal(buf_used(&args), strlen(want));
		assert_memory_equal(buf_ptr(&args), want, strlen(want));
	}
	buf_free(&body);
	buf_free(&client);
	buf_free(&args);
}

/* Streamed arguments are a JSON text in pieces: escapes inside it are decoded (a \u0034 is a
 * 4) before detection, and a number masked outside a string becomes a string, so the joined
 * arguments stay valid JSON. */
static void test_sse_tool_args_escaped(void **state)
{
	(void)state;
	static const char *const cases[][4] = {
		{ "{\"card\": \"\\u003", "4111 11", "11 1111 1", "111\"}" },
		{ "{\"n\": 41111", "11111", "111111", "}" },
		{ "{\"n\": \"\\\\u0034\", \"c\": \"\\ud83d", "\\ude00 4111 1111 ", "1111 1111",
		  "\"}" },
	};
	static const char *const want[] = {
		"{\"card\": \"[REDACTED:PAYMENT_CARD]\"}",
		"{\"n\": \"[REDACTED:PAYMENT_CARD]\"}",
		"{\"n\": \"\\\\u0034\", \"c\": \"\xf0\x9f\x98\x80 [REDACTED:PAYMENT_CARD]\"}",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		buf body, client, args;
		buf_init(&body, 1 << 16);
		buf_init(&client, 1 << 20);
		buf_init(&args, 4096);
		for (size_t k = 0; k < 4; k++)
			tool_event(&body, cases[i][k], k == 3);
		assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
		span b = buf_span(&body);
		for (size_t cut = 0; cut <= b.len; cut += 5) {
			buf_reset(&client);
			buf_reset(&args);
			assert_int_equal(run_stream(b, &cut, 1, &client, NULL), CUSTOS_OK);
			client_args(buf_span(&client), &args);
			assert_int_equal(buf_used(&args), strlen(want[i]));
			assert_memory_equal(buf_ptr(&args), want[i], strlen(want[i]));
		}
		buf_free(&body);
		buf_free(&client);
		buf_free(&args);
	}
}

/* ---------------------------------------------------------------------------------------------
 * Parts of a stream: each its own joined text.
 */
enum { SEL_CHAT, SEL_ANTH, SEL_LLAMA };

/* What the client reads of one part: kind SEL_CHAT, choices[index == idx].delta[field] (a
 * string, or the texts of an array of parts; field "args": tool_calls[index == tool].function
 * .arguments, "name": its function.name, "transcript": delta.audio.transcript); SEL_ANTH, content_block_delta events
 * of block idx, delta[field]; SEL_LLAMA, every event's content (index idx). Every data event
 * must be JSON or [DONE]; *error is set when one is an error object. */
static void part_text(span sse, int kind, uint32_t idx, uint32_t tool, const char *field, buf *out,
                      bool *error)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	const char *q = sse.ptr;
	size_t n = sse.len;
	if (error)
		*error = false;
	while (n > 0) {
		sse_event ev;
		bool have = false;
		ssize_t k = sse_parse(&p, q, n, &ev, &have);
		assert_true(k >= 0);
		jsonr_val root, v, c, d, x, tc, fn, a;
		uint64_t i;
		if (have && ev.has_data && !ev.done) {
			assert_int_equal(jsonr_parse(ev.data, NULL, &root), CUSTOS_OK);
			if (jsonr_obj_get(root, "error", &v) && error)
				*error = true;
			if (kind == SEL_CHAT && jsonr_obj_get(root, "choices", &v)) {
				jsonr_iter it;
				jsonr_iter_init(&it, v);
				while (jsonr_arr_next(&it, &c)) {
					assert_true(jsonr_obj_get(c, "index", &x));
					assert_int_equal(jsonr_u64(x, 1000, &i), CUSTOS_OK);
					if (i != idx || !jsonr_obj_get(c, "delta", &d))
						continue;
					if (strcmp(field, "transcript") == 0 &&
					    jsonr_obj_get(d, "audio", &x) &&
					    jsonr_obj_get(x, "transcript", &x))
						assert_int_equal(jsonr_unescape(x.str, out),
						                 CUSTOS_OK);
					if (strcmp(field, "args") != 0 &&
					    strcmp(field, "name") != 0) {
						if (jsonr_obj_get(d, field, &x) &&
						    x.type == JSONR_STRING)
							assert_int_equal(jsonr_unescape(x.str, out),
							                 CUSTOS_OK);
						jsonr_iter ip2;
						jsonr_val part, pt;
						if (jsonr_obj_get(d, field, &x) &&
						    x.type == JSONR_ARRAY) { /* parts */
							jsonr_iter_init(&ip2, x);
							while (jsonr_arr_next(&ip2, &part))
								if (jsonr_obj_get(part, "text",
								                  &pt))
									assert_int_equal(
									        jsonr_unescape(
									                pt.str,
									                out),
									        CUSTOS_OK);
						}
						continue;
					}
					if (!jsonr_obj_get(d, "tool_calls", &x))
						continue;
					jsonr_iter it2;
					jsonr_iter_init(&it2, x);
					while (jsonr_arr_next(&it2, &tc)) {
						assert_true(jsonr_obj_get(tc, "index", &a));
						assert_int_equal(jsonr_u64(a, 1000, &i), CUSTOS_OK);
						if (i == tool &&
						    jsonr_obj_get(tc, "function", &fn) &&
						    jsonr_obj_get(fn,
						                  strcmp(field, "name") == 0
						                          ? "name"
						                          : "arguments",
						                  &a))
							assert_int_equal(jsonr_unescape(a.str, out),
							                 CUSTOS_OK);
					}
				}
			} else if (kind == SEL_ANTH && jsonr_obj_get(root, "type", &v) &&
			           jsonr_str_eq(v.str, "content_block_delta")) {
				assert_true(jsonr_obj_get(root, "index", &x));
				assert_int_equal(jsonr_u64(x, 1000, &i), CUSTOS_OK);
				if (i == idx && jsonr_obj_get(root, "delta", &d) &&
				    jsonr_obj_get(d, field, &x))
					assert_int_equal(jsonr_unescape(x.str, out), CUSTOS_OK);
			} else if (kind == SEL_LLAMA && jsonr_obj_get(root, "content", &v)) {
				i = 0;
				if (jsonr_obj_get(root, "index", &x))
					assert_int_equal(jsonr_u64(x, 1000, &i), CUSTOS_OK);
				if (i == idx)
					assert_int_equal(jsonr_unescape(v.str, out), CUSTOS_OK);
			}
		}
		q += k;
		n -= (size_t)k;
		if (k == 0 && !have)
			break;
	}
	sse_parser_free(&p);
}

static void assert_part(span sse, int kind, uint32_t idx, uint32_t tool, const char *field,
                        const char *want)
{
	buf t;
	buf_init(&t, 1 << 16);
	part_text(sse, kind, idx, tool, field, &t, NULL);
	assert_int_equal(buf_append(&t, "", 1), CUSTOS_OK);
	assert_string_equal((const char *)buf_ptr(&t), want);
	buf_free(&t);
}

/* A chat chunk for choice `choice` whose delta is `delta` (raw JSON); fin: finish_reason. */
static void chat_ev(buf *b, unsigned choice, const char *delta, const char *fin)
{
	assert_int_equal(buf_printf(b,
	                            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	                            "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":%u,"
	                            "\"delta\":%s,\"finish_reason\":%s}]}\n\n",
	                            choice, delta, fin ? fin : "null"),
	                 CUSTOS_OK);
}

static void tool_ev(buf *b, unsigned choice, unsigned tool, const char *args)
{
	buf esc, d;
	buf_init(&esc, 4096);
	buf_init(&d, 8192);
	assert_int_equal(json_escape(&esc, span_cstr(args)), CUSTOS_OK);
	assert_int_equal(buf_printf(&d,
	                            "{\"tool_calls\":[{\"index\":%u,\"function\":{\"arguments\":"
	                            "\"%.*s\"}}]}",
	                            tool, (int)buf_used(&esc), (const char *)buf_ptr(&esc)),
	                 CUSTOS_OK);
	assert_int_equal(buf_append(&d, "", 1), CUSTOS_OK);
	chat_ev(b, choice, (const char *)buf_ptr(&d), NULL);
	buf_free(&esc);
	buf_free(&d);
}

/* Runs body cut at every byte offset (one cut) and byte by byte; check(client) each time. */
static void every_cut(span b, custos_err want, void (*check)(span client))
{
	buf client;
	buf_init(&client, 1 << 20);
	size_t *cuts = calloc(b.len + 1, sizeof(size_t));
	assert_non_null(cuts);
	for (size_t i = 0; i < b.len; i++)
		cuts[i] = i + 1;
	for (size_t cut = 0; cut <= b.len + 1; cut++) {
		buf_reset(&client);
		if (cut <= b.len)
			assert_int_equal(run_stream(b, &cut, 1, &client, NULL), want);
		else
			assert_int_equal(run_stream(b, cuts, b.len - 1, &client, NULL), want);
		check(buf_span(&client));
	}
	free(cuts);
	buf_free(&client);
}

static void check_chat_parts(span c)
{
	assert_part(c, SEL_CHAT, 0, 0, "content", "zero [REDACTED:PAYMENT_CARD] end");
	assert_part(c, SEL_CHAT, 1, 0, "content", "one [REDACTED:PAYMENT_CARD] end");
	assert_part(c, SEL_CHAT, 0, 0, "reasoning_content", "think [REDACTED:PAYMENT_CARD].");
	assert_part(c, SEL_CHAT, 1, 0, "refusal", "no [REDACTED:PAYMENT_CARD]");
	assert_part(c, SEL_CHAT, 0, 0, "args", "{\"a\":\"[REDACTED:PAYMENT_CARD]\"}");
	assert_part(c, SEL_CHAT, 0, 1, "args", "{\"b\":\"[REDACTED:PAYMENT_CARD]\"}");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
	assert_null(memmem(c.ptr, c.len, "5555", 4));
}

/* Chat chunks: each choice's content, reasoning and refusal, and each tool call's arguments,
 * is a stream of its own, joined across events even when other parts' events come between
 * (two choices and two tool calls interleaved), cut at every byte offset. Negative: halves of
 * a card in two choices, or in a choice's content and its reasoning, are two texts. */
static void test_sse_chat_parts(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	chat_ev(&body, 0, "{\"role\":\"assistant\",\"reasoning_content\":\"think 4111 11\"}", NULL);
	chat_ev(&body, 1, "{\"role\":\"assistant\",\"content\":\"one 4111 11\"}", NULL);
	chat_ev(&body, 0, "{\"content\":\"zero 5555 55\"}", NULL);
	chat_ev(&body, 1, "{\"content\":\"11 1111 1111 end\"}", NULL);
	chat_ev(&body, 0, "{\"reasoning_content\":\"11 1111 1111.\"}", NULL);
	chat_ev(&body, 0, "{\"content\":\"55 5555 4444 end\"}", NULL);
	tool_ev(&body, 0, 0, "{\"a\":\"4111 1111");
	tool_ev(&body, 0, 1, "{\"b\":\"5555 5555");
	chat_ev(&body, 1, "{\"refusal\":\"no 4111 1111 \"}", NULL);
	tool_ev(&body, 0, 0, " 1111 1111\"}");
	chat_ev(&body, 1, "{\"refusal\":\"1111 1111\"}", "\"stop\"");
	tool_ev(&body, 0, 1, " 5555 4444\"}");
	chat_ev(&body, 0, "{}", "\"tool_calls\"");
	assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
	every_cut(buf_span(&body), CUSTOS_OK, check_chat_parts);
	/* halves in two choices, or in content and reasoning: not joined */
	buf_reset(&body);
	chat_ev(&body, 0, "{\"content\":\"4111 1111\"}", NULL);
	chat_ev(&body, 1, "{\"content\":\" 1111 1111\"}", NULL);
	chat_ev(&body, 0, "{\"reasoning_content\":\" 1111 1111\"}", NULL);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_part(buf_span(&client), SEL_CHAT, 0, 0, "content", "4111 1111");
	assert_part(buf_span(&client), SEL_CHAT, 1, 0, "content", " 1111 1111");
	assert_part(buf_span(&client), SEL_CHAT, 0, 0, "reasoning_content", " 1111 1111");
	/* a deny in reasoning ends the stream, nothing of the key out */
	buf_reset(&body);
	buf_reset(&client);
	chat_ev(&body, 0, "{\"reasoning\":\"fine so far, AKIAIOSF\"}", NULL);
	chat_ev(&body, 0, "{\"reasoning\":\"ODNN7EXAMPLE more\"}", NULL);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	bool err;
	buf t;
	buf_init(&t, 4096);
	part_text(buf_span(&client), SEL_CHAT, 0, 0, "reasoning", &t, &err);
	assert_true(err);
	buf_free(&t);
	buf_free(&body);
	buf_free(&client);
}

static void check_chat_more(span c)
{
	assert_part(c, SEL_CHAT, 0, 0, "content", "Card [REDACTED:PAYMENT_CARD] end");
	assert_part(c, SEL_CHAT, 1, 0, "content", "one [REDACTED:PAYMENT_CARD] two");
	assert_part(c, SEL_CHAT, 1, 0, "transcript", "say [REDACTED:PAYMENT_CARD] ok");
	assert_part(c, SEL_CHAT, 0, 0, "name", "get [REDACTED:PAYMENT_CARD]");
	assert_part(c, SEL_CHAT, 0, 1, "name", "plain_name");
	assert_part(c, SEL_CHAT, 0, 0, "args", "{}");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
	/* the audio itself is not text: passed as it is */
	assert_non_null(memmem(c.ptr, c.len, "\"data\":\"UklGRg==\"", 17));
	/* choice 0's tail goes out as a part, before its finish event */
	static const char t0[] = "[{\"type\":\"text\",\"text\":\"Card [REDACTED",
	                  s0[] = "{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}";
	const char *tail = memmem(c.ptr, c.len, t0, sizeof(t0) - 1);
	const char *stop = memmem(c.ptr, c.len, s0, sizeof(s0) - 1);
	assert_non_null(tail);
	assert_non_null(stop);
	assert_true(tail < stop);
}

/* Chat chunks with more text members: a delta.content given as an array of text parts (several
 * in one event) is the choice's content stream, joined across events and parts, its tail sent
 * as a text part; delta.audio.transcript is a part of its own per choice; a tool call's
 * function.name is inspected in each event and joined with the pieces of the same tool call's
 * name before it; cut at every byte offset. A name split over two events at every offset, not
 * joined with another tool call's name. Negative: a content array with a part that is not text
 * is inspected whole, in its event. Deny in a transcript, in a name, and in a name split over
 * two events (its first piece has gone out). */
static void test_sse_chat_more_members(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	chat_ev(&body, 0,
	        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Card "
	        "4111 \"},{\"type\":\"text\",\"text\":\"11\"}]}",
	        NULL);
	chat_ev(&body, 1,
	        "{\"audio\":{\"id\":\"au_1\",\"data\":\"UklGRg==\",\"transcript\":\"say 4111 "
	        "1111\"}}",
	        NULL);
	chat_ev(&body, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"one 4111 1111 1\"}]}", NULL);
	chat_ev(&body, 0, "{\"content\":[{\"type\":\"text\",\"text\":\"11 1111\"}]}", NULL);
	chat_ev(&body, 0,
	        "{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":"
	        "\"get 4111 1111 1111 1111\",\"arguments\":\"\"}},{\"index\":1,\"function\":{"
	        "\"name\":\"plain_name\"}}]}",
	        NULL);
	chat_ev(&body, 1, "{\"audio\":{\"transcript\":\" 1111 1111 ok\"}}", NULL);
	chat_ev(&body, 0, "{\"content\":[{\"type\":\"text\",\"text\":\" 1111 end\"}]}", NULL);
	tool_ev(&body, 0, 0, "{}");
	chat_ev(&body, 1,
	        "{\"content\":[{\"type\":\"text\",\"text\":\"111 \"},{\"type\":\"text\","
	        "\"text\":\"1111 two\"}]}",
	        "\"stop\"");
	chat_ev(&body, 0, "{}", "\"stop\"");
	assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
	every_cut(buf_span(&body), CUSTOS_OK, check_chat_more);
	/* a name split over two events at every offset, with tool 1's name between them: joined
	 * per (choice, tool); each piece goes out in its event, so a card cut inside is masked
	 * from the second piece's start (the first piece has gone out) */
	static const char name[] = "get 4111 1111 1111 1111";
	for (size_t k = 1; k < sizeof(name) - 1; k++) {
		char ev[256], want[128];
		buf_reset(&body);
		buf_reset(&client);
		snprintf(ev, sizeof(ev),
		         "{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"%.*s\"}}]}",
		         (int)k, name);
		chat_ev(&body, 0, ev, NULL);
		chat_ev(&body, 0,
		        "{\"tool_calls\":[{\"index\":1,\"function\":{\"name\":\"4111 1111\"}}]}",
		        NULL);
		snprintf(ev, sizeof(ev),
		         "{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"%s\"}}]}",
		         name + k);
		chat_ev(&body, 0, ev, "\"tool_calls\"");
		assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
		snprintf(want, sizeof(want), "%.*s[REDACTED:PAYMENT_CARD]", (int)(k < 4 ? 4 : k),
		         name);
		assert_part(buf_span(&client), SEL_CHAT, 0, 0, "name", want);
		assert_part(buf_span(&client), SEL_CHAT, 0, 1, "name", "4111 1111");
	}
	/* a content array with an image part: the event inspected whole (every string) */
	buf_reset(&body);
	buf_reset(&client);
	chat_ev(&body, 0,
	        "{\"content\":[{\"type\":\"text\",\"text\":\"a 4111 1111 1111 1111\"},{\"type\":"
	        "\"image_url\",\"image_url\":{\"url\":\"https://x.example/4111111111111111\"}}]}",
	        "\"stop\"");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_part(buf_span(&client), SEL_CHAT, 0, 0, "content", "a [REDACTED:PAYMENT_CARD]");
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
	/* deny in a transcript split over events, and in a name */
	static const char *const deny[][2] = {
		{ "{\"audio\":{\"transcript\":\"key AKIAIOSF\"}}",
		  "{\"audio\":{\"transcript\":\"ODNN7EXAMPLE more\"}}" },
		{ "{\"content\":\"fine\"}", "{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":"
		                            "\"AKIAIOSFODNN7EXAMPLE\"}}]}" },
		{ "{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"key AKIAIOSF\"}}]}",
		  "{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"ODNN7EXAMPLE\"}}]}" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(deny); i++) {
		buf_reset(&body);
		buf_reset(&client);
		chat_ev(&body, 0, deny[i][0], NULL);
		chat_ev(&body, 0, deny[i][1], NULL);
		assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL),
		                 CUSTOS_ERR_DENIED);
		/* a name's pieces are held until it is complete: nothing of it goes out */
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "ODNN", 4));
		assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "content_denied", 14));
	}
	buf_free(&body);
	buf_free(&client);
}

static void check_name_held(span c)
{
	static const char first[] = "{\"index\":0,\"id\":\"call_1\",\"type\":\"function\","
	                            "\"function\":{\"name\":\"get [REDACTED:PAYMENT_CARD]\"}}";
	assert_part(c, SEL_CHAT, 0, 0, "name", "get [REDACTED:PAYMENT_CARD]");
	assert_part(c, SEL_CHAT, 0, 0, "args", "{}");
	assert_part(c, SEL_CHAT, 0, 0, "content", "ok");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
	/* the whole name goes out in the tool call's first delta, with its id */
	assert_non_null(memmem(c.ptr, c.len, first, sizeof(first) - 1));
}

/* A name's pieces event by event: tool call 0's name split at k (two pieces), or byte by byte
 * when k is 0; `end` says what completes it: 0 its arguments in the next event, 1 arguments ""
 * in the event of its last piece, 2 the choice's finish_reason, 3 [DONE], 4 the end of the body,
 * 5 text of another part (the choice's content). */
static void name_body(buf *b, const char *name, size_t k, int end)
{
	char ev[512];
	size_t n = strlen(name);
	size_t at = 0;
	for (size_t piece = 0; at < n; piece++) {
		size_t len = k == 0 ? 1 : piece == 0 ? k : n - k;
		bool last = at + len == n;
		snprintf(ev, sizeof(ev),
		         "{%s\"tool_calls\":[{\"index\":0,%s\"function\":{\"name\":\"%.*s\"%s}}]}",
		         piece == 0 ? "\"role\":\"assistant\"," : "",
		         piece == 0 ? "\"id\":\"call_1\",\"type\":\"function\"," : "", (int)len,
		         name + at, last && end == 1 ? ",\"arguments\":\"\"" : "");
		chat_ev(b, 0, ev, NULL);
		if (piece == 0) /* a keep-alive and a delta without text wait with the name */
			assert_int_equal(buf_append_cstr(b, ": ping\n\n"), CUSTOS_OK);
		at += len;
	}
	if (end == 0 || end == 1)
		tool_ev(b, 0, 0, "{}");
	if (end == 5)
		chat_ev(b, 0, "{\"content\":\"ok\"}", NULL);
	if (end == 2)
		chat_ev(b, 0, "{}", "\"tool_calls\"");
	if (end != 4)
		assert_int_equal(buf_append_cstr(b, "data: [DONE]\n\n"), CUSTOS_OK);
}

/* A tool call's name split over events is held until it is complete (its arguments start,
 * another part shows text, the choice finishes, the stream ends) and inspected whole: a card
 * split inside it at every offset, or byte by byte, is masked whole, and the whole name goes
 * out in the tool call's first delta; the body cut at every byte offset. Negative: a name over
 * the hold bound fails closed (LIMIT), nothing of it released. */
static void test_sse_tool_name_held(void **state)
{
	(void)state;
	static const char name[] = "get 4111 1111 1111 1111";
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	for (int end = 0; end <= 5; end++)
		for (size_t k = 0; k < sizeof(name) - 1; k++) {
			buf_reset(&body);
			buf_reset(&client);
			name_body(&body, name, k, end);
			if (end == 5) { /* the content's own stream has the "ok" */
				assert_int_equal(
				        run_stream(buf_span(&body), NULL, 0, &client, NULL),
				        CUSTOS_OK);
				assert_part(buf_span(&client), SEL_CHAT, 0, 0, "name",
				            "get [REDACTED:PAYMENT_CARD]");
				assert_part(buf_span(&client), SEL_CHAT, 0, 0, "content", "ok");
				assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
				continue;
			}
			assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL),
			                 CUSTOS_OK);
			assert_part(buf_span(&client), SEL_CHAT, 0, 0, "name",
			            "get [REDACTED:PAYMENT_CARD]");
			assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
			static const char whole[] = "\"name\":\"get [REDACTED:PAYMENT_CARD]\"";
			const char *w = memmem(buf_ptr(&client), buf_used(&client), whole,
			                       sizeof(whole) - 1);
			const char *id = memmem(buf_ptr(&client), buf_used(&client), "call_1", 6);
			assert_non_null(w);
			assert_non_null(id);
			assert_true(id < w && memchr(id, '\n', (size_t)(w - id)) == NULL);
		}
	/* one body cut at every byte offset: the held bytes wait across calls */
	buf_reset(&body);
	name_body(&body, name, 9, 0);
	chat_ev(&body, 0, "{\"content\":\"ok\"}", "\"stop\"");
	every_cut(buf_span(&body), CUSTOS_OK, check_name_held);
	/* a name longer than the hold bound: fails closed */
	buf_reset(&body);
	buf_reset(&client);
	for (int i = 0; i < 12; i++)
		chat_ev(&body, 0,
		        "{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":"
		        "\"aaaaaaaaaaaaaaaaaaaa"
		        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		        "aaa"
		        "aaaaaaaaaaaaaaaaaaaaaaaa\"}}]}",
		        NULL);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_LIMIT);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "aaaa", 4));
	buf_free(&body);
	buf_free(&client);
}

static void anth_ev(buf *b, const char *type, const char *json)
{
	assert_int_equal(buf_printf(b, "event: %s\ndata: %s\n\n", type, json), CUSTOS_OK);
}

static void anth_delta(buf *b, unsigned idx, const char *dtype, const char *field, const char *text)
{
	buf esc;
	buf_init(&esc, 4096);
	assert_int_equal(json_escape(&esc, span_cstr(text)), CUSTOS_OK);
	assert_int_equal(buf_printf(b,
	                            "event: content_block_delta\ndata: {\"type\":"
	                            "\"content_block_delta\",\"index\":%u,\"delta\":{\"type\":"
	                            "\"%s\",\"%s\":\"%.*s\"}}\n\n",
	                            idx, dtype, field, (int)buf_used(&esc),
	                            (const char *)buf_ptr(&esc)),
	                 CUSTOS_OK);
	buf_free(&esc);
}

static void check_anth(span c)
{
	assert_part(c, SEL_ANTH, 0, 0, "thinking", "hm [REDACTED:PAYMENT_CARD]");
	assert_part(c, SEL_ANTH, 1, 0, "text", "Card [REDACTED:PAYMENT_CARD].");
	assert_part(c, SEL_ANTH, 2, 0, "partial_json", "{\"n\":\"[REDACTED:PAYMENT_CARD]\"}");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
	assert_null(memmem(c.ptr, c.len, "1 1", 3));
	/* a thinking block's tail comes before its signature, unchanged (block 0, the thinking,
	 * is the only part before it) */
	const char *sig = memmem(c.ptr, c.len, "\"signature\":\"EqQBCgIYAhIM\"", 26);
	assert_non_null(sig);
	assert_non_null(memmem(c.ptr, (size_t)(sig - c.ptr), "[REDACTED:PAYMENT_CARD]", 23));
	/* each block's tail comes before its content_block_stop */
	const char *stop = memmem(c.ptr, c.len, "\"content_block_stop\",\"index\":1", 30);
	const char *tail = memmem(c.ptr, c.len, "[REDACTED:PAYMENT_CARD].", 24);
	assert_non_null(stop);
	assert_non_null(tail);
	assert_true(tail < stop);
	assert_non_null(memmem(c.ptr, c.len, "event: message_stop", 19));
}

/* Anthropic-style streams: each content block (index) is a stream of its own (text,
 * thinking, input_json partial_json as JSON in pieces), joined across events, interleaved
 * blocks included; a block's tail goes out in one more delta event before its
 * content_block_stop. Negative: halves in two blocks are two texts. Deny mid-block. */
static void test_sse_anthropic(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	anth_ev(&body, "message_start",
	        "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[]}}");
	anth_ev(&body, "content_block_start",
	        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
	        "\"thinking\",\"thinking\":\"\"}}");
	anth_delta(&body, 0, "thinking_delta", "thinking", "hm 4111 1111 ");
	anth_ev(&body, "ping", "{\"type\":\"ping\"}");
	anth_delta(&body, 0, "thinking_delta", "thinking", "1111 1111");
	anth_delta(&body, 0, "signature_delta", "signature", "EqQBCgIYAhIM");
	anth_ev(&body, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
	anth_delta(&body, 1, "text_delta", "text", "Card 4");
	anth_delta(&body, 2, "input_json_delta", "partial_json", "{\"n\":41111111");
	anth_delta(&body, 1, "text_delta", "text", "111 11");
	anth_delta(&body, 2, "input_json_delta", "partial_json", "11111111}");
	anth_delta(&body, 1, "text_delta", "text", "11 111");
	anth_ev(&body, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}");
	anth_delta(&body, 1, "text_delta", "text", "1 1111.");
	anth_ev(&body, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}");
	anth_ev(&body, "message_delta",
	        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}");
	anth_ev(&body, "message_stop", "{\"type\":\"message_stop\"}");
	every_cut(buf_span(&body), CUSTOS_OK, check_anth);
	/* halves in two blocks: two texts */
	buf_reset(&body);
	anth_delta(&body, 0, "text_delta", "text", "4111 1111");
	anth_delta(&body, 1, "text_delta", "text", " 1111 1111");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_part(buf_span(&client), SEL_ANTH, 0, 0, "text", "4111 1111");
	assert_part(buf_span(&client), SEL_ANTH, 1, 0, "text", " 1111 1111");
	/* deny: an error event and [DONE], nothing of the key */
	buf_reset(&body);
	buf_reset(&client);
	anth_delta(&body, 0, "text_delta", "text", "Key AKIAIO");
	anth_delta(&body, 0, "text_delta", "text", "SFODNN7EXAMPLE and more");
	anth_ev(&body, "message_stop", "{\"type\":\"message_stop\"}");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "and more", 8));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "content_denied", 14));
	buf_free(&body);
	buf_free(&client);
}

static void check_empty_chat(span c)
{
	assert_part(c, SEL_CHAT, 0, 0, "content", "Card [REDACTED:PAYMENT_CARD].");
	assert_part(c, SEL_CHAT, 0, 0, "args", "{\"c\":\"[REDACTED:PAYMENT_CARD]\"}");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
}

static void check_empty_anth(span c)
{
	assert_part(c, SEL_ANTH, 0, 0, "text", "Card [REDACTED:PAYMENT_CARD].");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
}

/* Empty texts first, as servers send them (a role chunk with "content": "", a tool call's
 * empty name and arguments, an Anthropic block's first empty text_delta): nothing has been
 * released yet, so the released text is the span of a buffer never written, (NULL, 0). It
 * was offset (NULL + 0) and escaped from there: undefined behaviour, which clang's
 * -fsanitize=undefined stops on (found by fuzz_ingress_inspect). */
static void test_sse_empty_texts_first(void **state)
{
	(void)state;
	buf body;
	buf_init(&body, 1 << 16);
	chat_ev(&body, 0, "{\"role\":\"assistant\",\"content\":\"\"}", NULL);
	chat_ev(&body, 0,
	        "{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"\","
	        "\"arguments\":\"\"}}]}",
	        NULL);
	chat_ev(&body, 0, "{\"content\":\"Card 4111 1111 \"}", NULL);
	tool_ev(&body, 0, 0, "{\"c\":\"4111 1111 ");
	tool_ev(&body, 0, 0, "1111 1111\"}");
	chat_ev(&body, 0, "{\"content\":\"1111 1111.\"}", "\"stop\"");
	assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
	every_cut(buf_span(&body), CUSTOS_OK, check_empty_chat);
	buf_reset(&body);
	anth_delta(&body, 0, "text_delta", "text", "");
	anth_delta(&body, 0, "text_delta", "text", "Card 4111 1111 ");
	anth_delta(&body, 0, "text_delta", "text", "1111 1111.");
	anth_ev(&body, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
	every_cut(buf_span(&body), CUSTOS_OK, check_empty_anth);
	buf_free(&body);
}

/* The cited texts of block idx's citations_delta events, joined, in *out. */
static void cited_text(span sse, uint32_t idx, buf *out)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	const char *q = sse.ptr;
	size_t n = sse.len;
	while (n > 0) {
		sse_event ev;
		bool have = false;
		ssize_t k = sse_parse(&p, q, n, &ev, &have);
		assert_true(k >= 0);
		jsonr_val root, v, d, c, x;
		uint64_t i;
		if (have && ev.has_data && !ev.done) {
			assert_int_equal(jsonr_parse(ev.data, NULL, &root), CUSTOS_OK);
			if (jsonr_obj_get(root, "type", &v) &&
			    jsonr_str_eq(v.str, "content_block_delta") &&
			    jsonr_obj_get(root, "index", &x) &&
			    jsonr_u64(x, 1000, &i) == CUSTOS_OK && i == idx &&
			    jsonr_obj_get(root, "delta", &d) && jsonr_obj_get(d, "citation", &c) &&
			    jsonr_obj_get(c, "cited_text", &x))
				assert_int_equal(jsonr_unescape(x.str, out), CUSTOS_OK);
		}
		q += k;
		n -= (size_t)k;
		if (k == 0 && !have)
			break;
	}
	sse_parser_free(&p);
	assert_int_equal(buf_append(out, "", 1), CUSTOS_OK);
}

static void cite_ev(buf *b, unsigned idx, const char *text)
{
	assert_int_equal(buf_printf(b,
	                            "event: content_block_delta\ndata: {\"type\":"
	                            "\"content_block_delta\",\"index\":%u,\"delta\":{\"type\":"
	                            "\"citations_delta\",\"citation\":{\"type\":\"char_location\","
	                            "\"cited_text\":\"%s\",\"document_index\":0,"
	                            "\"document_title\":\"Doc\",\"start_char_index\":0,"
	                            "\"end_char_index\":9}}}\n\n",
	                            idx, text),
	                 CUSTOS_OK);
}

static void check_cited(span c)
{
	buf t;
	buf_init(&t, 4096);
	cited_text(c, 1, &t);
	assert_string_equal((const char *)buf_ptr(&t), "card [REDACTED:PAYMENT_CARD] ok");
	buf_reset(&t);
	cited_text(c, 2, &t);
	assert_string_equal((const char *)buf_ptr(&t), "4111 1111");
	buf_free(&t);
	assert_part(c, SEL_ANTH, 1, 0, "text", "see [REDACTED:PAYMENT_CARD]");
	assert_null(memmem(c.ptr, c.len, "1111 1111 1111", 14));
	assert_null(memmem(c.ptr, c.len, " 1111 1111 ok", 13));
}

/* Anthropic citations_delta events: the cited texts of one content block are joined like a
 * block's text (a part of their own, beside its text_delta), so a card split over two
 * citations is masked, at every cut of the body; block 2's cited text is another part. The
 * rest of the event (the document title) is inspected whole. Deny in a split citation. */
static void test_sse_anthropic_citations(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	anth_ev(&body, "content_block_start",
	        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
	        "\"text\",\"text\":\"\"}}");
	anth_delta(&body, 1, "text_delta", "text", "see 4111 1111 ");
	cite_ev(&body, 1, "card 4111 1111");
	cite_ev(&body, 2, "4111 1111");
	anth_delta(&body, 1, "text_delta", "text", "1111 1111");
	cite_ev(&body, 1, " 1111 1111 ok");
	anth_ev(&body, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}");
	anth_ev(&body, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}");
	anth_ev(&body, "message_stop", "{\"type\":\"message_stop\"}");
	every_cut(buf_span(&body), CUSTOS_OK, check_cited);
	/* deny: a key split over two citations; nothing of it out */
	buf_reset(&body);
	cite_ev(&body, 0, "Key AKIAIO");
	cite_ev(&body, 0, "SFODNN7EXAMPLE and more");
	anth_ev(&body, "message_stop", "{\"type\":\"message_stop\"}");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "content_denied", 14));
	buf_free(&body);
	buf_free(&client);
}

static void check_parts_mixed(span c)
{
	static const char img[] =
	        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.example/a.png\"}}";
	assert_part(c, SEL_CHAT, 0, 0, "content", "card [REDACTED:PAYMENT_CARD] ok");
	assert_null(memmem(c.ptr, c.len, "1111", 4));
	assert_non_null(memmem(c.ptr, c.len, img, sizeof(img) - 1)); /* passed as it came */
}

/* A delta.content array with a part that is not text beside text parts: the text parts join
 * the choice's content stream (a card split over two events, the image part between its
 * halves in the first, is masked, at every cut of the body), the image part passes as it came;
 * a part that is not text is still inspected whole, on its own (a card in an image URL, a
 * refusal part; a key in one denies). */
static void test_sse_content_parts_mixed(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	chat_ev(&body, 0,
	        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"card 4111 "
	        "1111\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.example/"
	        "a.png\"}}"
	        "]}",
	        NULL);
	chat_ev(&body, 0, "{\"content\":[{\"type\":\"text\",\"text\":\" 1111 1111 ok\"}]}",
	        "\"stop\"");
	assert_int_equal(buf_append_cstr(&body, "data: [DONE]\n\n"), CUSTOS_OK);
	every_cut(buf_span(&body), CUSTOS_OK, check_parts_mixed);
	/* the part that is not text, inspected on its own */
	buf_reset(&body);
	buf_reset(&client);
	chat_ev(&body, 0,
	        "{\"content\":[{\"type\":\"refusal\",\"refusal\":\"no 4111 1111 1111 1111\"},"
	        "{\"type\":\"text\",\"text\":\"a 4111 \"}]}",
	        NULL);
	chat_ev(&body, 0, "{\"content\":[{\"type\":\"text\",\"text\":\"1111 1111 1111\"}]}",
	        "\"stop\"");
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	assert_part(buf_span(&client), SEL_CHAT, 0, 0, "content", "a [REDACTED:PAYMENT_CARD]");
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client),
	                       "\"refusal\":\"no [REDACTED:PAYMENT_CARD]\"", 36));
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
	buf_reset(&body);
	buf_reset(&client);
	chat_ev(&body, 0,
	        "{\"content\":[{\"type\":\"text\",\"text\":\"fine\"},{\"type\":\"refusal\","
	        "\"refusal\":\"AKIAIOSFODNN7EXAMPLE\"}]}",
	        NULL);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	buf_free(&body);
	buf_free(&client);
}

/* A text-completion stream (its synthetic events use choices[].text) whose content then came
 * as a chat content array (a mixed stream): the held tail, written at the end in a synthetic
 * event, opened as "text" and closed as a parts array (invalid JSON, the text lost to the
 * client's parser) until the closing followed the opening. Found by fuzz_ingress_inspect. */
static void test_sse_text_completion_then_parts(void **state)
{
	(void)state;
	buf body, client, text;
	size_t events;
	bool done, error;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	buf_init(&text, 4096);
	assert_int_equal(buf_append_cstr(&body, "data: {\"id\":\"cmpl-1\",\"object\":"
	                                        "\"text_completion\",\"created\":1,\"model\":"
	                                        "\"m\",\"choices\":[{\"index\":0,\"text\":\"\","
	                                        "\"finish_reason\":null}]}\n\n"),
	                 CUSTOS_OK);
	chat_ev(&body, 0, "{\"content\":[{\"type\":\"text\",\"text\":\"x 4111 1111\"}]}", NULL);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	client_text(buf_span(&client), &text, &events, &done, &error); /* every event is JSON */
	assert_false(error);
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "\"text\":\"", 8));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
	buf_free(&body);
	buf_free(&client);
	buf_free(&text);
}

static void llama_ev(buf *b, const char *content, bool stop)
{
	buf esc;
	buf_init(&esc, 4096);
	assert_int_equal(json_escape(&esc, span_cstr(content)), CUSTOS_OK);
	assert_int_equal(buf_printf(b,
	                            "data: {\"index\":0,\"content\":\"%.*s\",\"tokens\":[],"
	                            "\"stop\":%s,\"id_slot\":0,\"tokens_predicted\":3%s}\n\n",
	                            (int)buf_used(&esc), (const char *)buf_ptr(&esc),
	                            stop ? "true" : "false",
	                            stop ? ",\"model\":\"m\",\"stopping_word\":\"\"" : ""),
	                 CUSTOS_OK);
	buf_free(&esc);
}

static void check_llama(span c)
{
	assert_part(c, SEL_LLAMA, 0, 0, "content", "Card [REDACTED:PAYMENT_CARD].");
	assert_null(memmem(c.ptr, c.len, "1 1", 3));
	assert_null(memmem(c.ptr, c.len, "111", 3));
}

/* llama.cpp /completion events ({"content":..,"stop":..}): joined like chunks, the tail in
 * the stop event (or one more event when the body ends without it); the rest of an event
 * inspected whole; deny. */
static void test_sse_llama_completion(void **state)
{
	(void)state;
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	llama_ev(&body, "Card 4", false);
	llama_ev(&body, "111 11", false);
	llama_ev(&body, "11 111", false);
	llama_ev(&body, "1 1111.", false);
	llama_ev(&body, "", true);
	every_cut(buf_span(&body), CUSTOS_OK, check_llama);
	/* no stop event: the tail comes at the end of the body */
	buf_reset(&body);
	llama_ev(&body, "Card 4111 1111", false);
	llama_ev(&body, " 1111 1111.", false);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	check_llama(buf_span(&client));
	/* the rest of an event (the last one repeats the prompt and settings) is inspected whole,
	 * the streamed content apart */
	buf_reset(&body);
	buf_reset(&client);
	llama_ev(&body, "Card 4111 1111", false);
	assert_int_equal(buf_append_cstr(&body, "data: {\"index\":0,\"content\":\" 1111 1111.\","
	                                        "\"stop\":true,\"prompt\":\"my card 5555 5555 "
	                                        "5555 4444\"}\n\n"),
	                 CUSTOS_OK);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	check_llama(buf_span(&client));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client),
	                       "\"prompt\":\"my card [REDACTED:PAYMENT_CARD]\"", 41));
	/* token probabilities and ids that come anyway are written [] */
	buf_reset(&body);
	buf_reset(&client);
	assert_int_equal(buf_append_cstr(&body, "data: {\"content\":\"Card 4111 1111\",\"tokens\":"
	                                        "[19,4111],\"stop\":false,"
	                                        "\"completion_probabilities\":[{\"content\":"
	                                        "\"4111\",\"probs\":[]}]}\n\n"),
	                 CUSTOS_OK);
	llama_ev(&body, " 1111 1111.", true);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_OK);
	check_llama(buf_span(&client));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client),
	                       "\"tokens\":[],\"stop\":false,\"completion_probabilities\":[]", 54));
	/* deny */
	buf_reset(&body);
	buf_reset(&client);
	llama_ev(&body, "Key AKIAIO", false);
	llama_ev(&body, "SFODNN7EXAMPLE and more", false);
	assert_int_equal(run_stream(buf_span(&body), NULL, 0, &client, NULL), CUSTOS_ERR_DENIED);
	assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "content_denied", 14));
	buf_free(&body);
	buf_free(&client);
}

static void test_response_encoded_refused(void **state)
{
	(void)state;
	ingress_insp *ip = new_insp(false);
	http1_head *h = resp_head("text/event-stream", "gzip");
	assert_true(ingress_inspect_response_begin(ip, h));
	span out;
	assert_int_equal(ingress_inspect_response_data(ip, SPAN_LIT("\x1f\x8b"), &out),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(out.len, 0);
	free(h);
	ingress_inspect_free(ip);
	/* asked at the head: refused, the reason naming the coding (lower case, an odd byte as
	 * '?', cut at 31 bytes); the outcome is a deny with that reason */
	static const char *const enc1[][2] = {
		{ "GZip", "gzip" },
		{ "identity, x\"y", "x?y" },
		{ "aaaaaaaaaabbbbbbbbbbccccccccccdddd", "aaaaaaaaaabbbbbbbbbbccccccccccd" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(enc1); i++) {
		char want[128];
		const char *why = NULL, *decision = "allow", *reason = NULL;
		ip = new_insp(false);
		h = resp_head("application/json", enc1[i][0]);
		assert_true(ingress_inspect_response_begin(ip, h));
		assert_false(ingress_inspect_response_held(ip));
		assert_true(ingress_inspect_response_refused(ip, &why));
		snprintf(want, sizeof(want),
		         "response under Content-Encoding %s not inspected: refused (fail closed)",
		         enc1[i][1]);
		assert_string_equal(why, want);
		ingress_inspect_outcome(ip, &decision, &reason);
		assert_string_equal(decision, "deny");
		assert_string_equal(reason, want);
		free(h);
		ingress_inspect_free(ip);
	}
	/* negative: a body that can be inspected is not refused */
	const char *why = NULL;
	ip = new_insp(false);
	h = resp_head("application/json", "identity");
	assert_true(ingress_inspect_response_begin(ip, h));
	assert_false(ingress_inspect_response_refused(ip, &why));
	assert_null(why);
	free(h);
	ingress_inspect_free(ip);
	/* identity first, gzip in a second field or a list: still refused */
	static const char *const enc2[][2] = { { "identity", "gzip" },
		                               { "identity, gzip", NULL },
		                               { "Identity", " br " } };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(enc2); i++) {
		ip = new_insp(false);
		h = resp_head("text/event-stream", enc2[i][0]);
		if (enc2[i][1])
			h->hdrs[h->nhdrs++] = (http1_header){ SPAN_LIT("content-encoding"),
				                              span_cstr(enc2[i][1]) };
		assert_true(ingress_inspect_encoded(h));
		assert_true(ingress_inspect_response_begin(ip, h));
		assert_int_equal(ingress_inspect_response_data(ip, SPAN_LIT("data: x\n\n"), &out),
		                 CUSTOS_ERR_DENIED);
		assert_int_equal(out.len, 0);
		free(h);
		ingress_inspect_free(ip);
	}
	/* negative: identity only (any case, listed twice) is not an encoding */
	h = resp_head("text/event-stream", "identity, IDENTITY");
	assert_false(ingress_inspect_encoded(h));
	free(h);
	/* shadow mode: responses are not rewritten */
	ip = new_insp(true);
	h = resp_head("text/event-stream", NULL);
	assert_false(ingress_inspect_response_begin(ip, h));
	assert_false(ingress_inspect_response_active(ip));
	free(h);
	ingress_inspect_free(ip);
}

static void test_json_response(void **state)
{
	(void)state;
	static const char body[] =
	        "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
	        "\"message\":{\"role\":\"assistant\",\"content\":\"pay \\u0034111 1111 1111 1111 "
	        "\\\"now\\\"\"},\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":3}}";
	ingress_insp *ip = new_insp(false);
	http1_head *h = resp_head("application/json", NULL);
	assert_true(ingress_inspect_response_begin(ip, h));
	free(h);
	buf client;
	span out;
	size_t half = sizeof(body) / 2;
	assert_int_equal(ingress_inspect_response_data(ip, span_of(body, half), &out), CUSTOS_OK);
	assert_int_equal(out.len, 0); /* held until the end */
	assert_int_equal(ingress_inspect_response_data(
	                         ip, span_of(body + half, sizeof(body) - 1 - half), &out),
	                 CUSTOS_OK);
	assert_int_equal(ingress_inspect_response_end(ip, &out), CUSTOS_OK);
	assert_true(inspect_json_valid(out));
	openai_response r;
	assert_int_equal(openai_response_parse(out, &r), CUSTOS_OK);
	buf_init(&client, 4096);
	assert_int_equal(jsonr_unescape(r.choices[0].content, &client), CUSTOS_OK);
	assert_memory_equal(buf_ptr(&client), "pay [REDACTED:PAYMENT_CARD] \"now\"",
	                    buf_used(&client));
	assert_int_equal(r.usage.total_tokens, 3);
	buf_free(&client);
	ingress_inspect_free(ip);

	/* tool-call arguments of a message are inspected too; ids are left alone */
	static const char tc[] = "{\"id\":\"4111 1111 1111 1111\",\"choices\":[{\"message\":{"
	                         "\"content\":null,\"tool_calls\":[{\"function\":{\"arguments\":"
	                         "\"{\\\"n\\\":\\\"4111 1111 1111 1111\\\"}\"}}]}}]}";
	ip = new_insp(false);
	h = resp_head("application/json", NULL);
	assert_true(ingress_inspect_response_begin(ip, h));
	free(h);
	assert_int_equal(ingress_inspect_response_data(ip, span_of(tc, sizeof(tc) - 1), &out),
	                 CUSTOS_OK);
	assert_int_equal(ingress_inspect_response_end(ip, &out), CUSTOS_OK);
	assert_true(inspect_json_valid(out));
	const char *want = "{\"id\":\"4111 1111 1111 1111\",\"choices\":[{\"message\":{"
	                   "\"content\":null,\"tool_calls\":[{\"function\":{\"arguments\":"
	                   "\"{\\\"n\\\":\\\"[REDACTED:PAYMENT_CARD]\\\"}\"}}]}}]}";
	assert_int_equal(out.len, strlen(want));
	assert_memory_equal(out.ptr, want, out.len);
	ingress_inspect_free(ip);

	/* a deny: the body becomes an error object */
	static const char bad[] =
	        "{\"choices\":[{\"message\":{\"content\":\"AKIAIOSFODNN7EXAMPLE\"}}]}";
	ip = new_insp(false);
	h = resp_head("application/json", NULL);
	assert_true(ingress_inspect_response_begin(ip, h));
	free(h);
	assert_int_equal(ingress_inspect_response_data(ip, span_of(bad, sizeof(bad) - 1), &out),
	                 CUSTOS_OK);
	assert_int_equal(ingress_inspect_response_end(ip, &out), CUSTOS_ERR_DENIED);
	assert_true(inspect_json_valid(out));
	assert_null(memmem(out.ptr, out.len, "AKIA", 4));
	ingress_inspect_free(ip);
}

/* Egress: raw mode, one byte stream whatever the content type (no JSON hold, no SSE). */
static custos_err run_typed(const char *ctype, bool egress, span body, size_t cut, buf *client)
{
	ingress_insp *ip = new_insp(false);
	if (egress)
		ingress_inspect_response_raw(ip);
	http1_head *h = resp_head(ctype, NULL);
	assert_true(ingress_inspect_response_begin(ip, h));
	free(h);
	span out;
	custos_err e = ingress_inspect_response_data(ip, span_of(body.ptr, cut), &out);
	assert_int_equal(buf_append_span(client, out), CUSTOS_OK);
	if (e == CUSTOS_OK) {
		e = ingress_inspect_response_data(ip, span_of(body.ptr + cut, body.len - cut),
		                                  &out);
		assert_int_equal(buf_append_span(client, out), CUSTOS_OK);
	}
	if (e == CUSTOS_OK) {
		e = ingress_inspect_response_end(ip, &out);
		assert_int_equal(buf_append_span(client, out), CUSTOS_OK);
	}
	ingress_inspect_free(ip);
	return e;
}

static custos_err run_raw(const char *ctype, span body, size_t cut, buf *client)
{
	return run_typed(ctype, true, body, cut, client);
}

/* Media types match in any case and with parameters (RFC 9110); a JSON body may start with
 * a BOM; under any other type the bytes still have their JSON escapes decoded. */
static void test_media_types(void **state)
{
	(void)state;
	static const char *const sse_types[] = { "Text/Event-Stream",
		                                 "TEXT/EVENT-STREAM; charset=utf-8",
		                                 " text/event-stream ;x=y" };
	buf body, client;
	buf_init(&body, 1 << 16);
	buf_init(&client, 1 << 20);
	/* \u0034 in an escaped content only a chunk parser (or an escape decoder) reads */
	assert_int_equal(buf_append_cstr(&body,
	                                 "data: {\"choices\":[{\"index\":0,\"delta\":"
	                                 "{\"content\":\"c \\u00341\"}}]}\n\n"
	                                 "data: {\"choices\":[{\"index\":0,\"delta\":"
	                                 "{\"content\":\"11 1111 1111 1111 ok\"},"
	                                 "\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"),
	                 CUSTOS_OK);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(sse_types); i++) {
		buf_reset(&client);
		assert_int_equal(run_typed(sse_types[i], false, buf_span(&body), 7, &client),
		                 CUSTOS_OK);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
		assert_non_null(memmem(buf_ptr(&client), buf_used(&client), "[REDACTED:", 10));
	}
	static const char *const json_types[] = { "Application/JSON",
		                                  "application/json;charset=UTF-8",
		                                  "application/vnd.x+json" };
	static const char *const jbodies[] = {
		"{\"choices\":[{\"message\":{\"content\":\"c \\u0034111111111111111\"}}]}",
		"\xef\xbb\xbf{\"choices\":[{\"message\":{\"content\":\"c "
		"\\u0034111111111111111\"}}]}",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(json_types); i++)
		for (size_t j = 0; j < CUSTOS_ARRAY_LEN(jbodies); j++) {
			buf_reset(&client);
			span b = span_cstr(jbodies[j]);
			assert_int_equal(run_typed(json_types[i], false, b, 5, &client), CUSTOS_OK);
			assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
			assert_true(inspect_json_valid(buf_span(&client)));
		}
	/* another type: raw bytes, JSON escapes decoded before detection */
	for (size_t j = 0; j < CUSTOS_ARRAY_LEN(jbodies); j++) {
		buf_reset(&client);
		assert_int_equal(run_typed("application/octet-stream", false, span_cstr(jbodies[j]),
		                           9, &client),
		                 CUSTOS_OK);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "1111", 4));
	}
	/* negative: egress raw mode keeps the bytes as they are (no escape decoding) */
	buf_reset(&client);
	assert_int_equal(
	        run_typed("application/octet-stream", true, SPAN_LIT("a \\u0041 b"), 3, &client),
	        CUSTOS_OK);
	assert_memory_equal(buf_ptr(&client), "a \\u0041 b", buf_used(&client));
	buf_free(&body);
	buf_free(&client);
}

static void test_egress_raw(void **state)
{
	(void)state;
	static const char body[] = "{\"id\":1,\"note\":\"card 4111 1111 1111 1111 on file\"}";
	static const char want[] = "{\"id\":1,\"note\":\"card [REDACTED:PAYMENT_CARD] on file\"}";
	buf client;
	buf_init(&client, 4096);
	for (size_t cut = 0; cut < sizeof(body); cut++) {
		buf_reset(&client);
		assert_int_equal(
		        run_raw("application/json", span_of(body, sizeof(body) - 1), cut, &client),
		        CUSTOS_OK);
		assert_int_equal(buf_used(&client), sizeof(want) - 1);
		assert_memory_equal(buf_ptr(&client), want, sizeof(want) - 1);
	}
	/* released as it goes (not held whole like an ingress JSON body) */
	ingress_insp *ip = new_insp(false);
	ingress_inspect_response_raw(ip);
	http1_head *h = resp_head("application/json", NULL);
	assert_true(ingress_inspect_response_begin(ip, h));
	free(h);
	span out;
	static const char lead[] = "a long harmless line of data, nothing sensitive in it at all\n";
	assert_int_equal(ingress_inspect_response_data(ip, span_of(lead, sizeof(lead) - 1), &out),
	                 CUSTOS_OK);
	assert_true(out.len > 0);
	ingress_inspect_free(ip);
	/* a deny: the value is never released, at any split */
	static const char bad[] = "rows: 1\nkey AKIAIOSFODNN7EXAMPLE end\n";
	for (size_t cut = 0; cut < sizeof(bad); cut++) {
		buf_reset(&client);
		assert_int_equal(run_raw("text/csv", span_of(bad, sizeof(bad) - 1), cut, &client),
		                 CUSTOS_ERR_DENIED);
		assert_null(memmem(buf_ptr(&client), buf_used(&client), "AKIA", 4));
	}
	/* content-encoded: still refused in raw mode */
	ip = new_insp(false);
	ingress_inspect_response_raw(ip);
	h = resp_head("text/plain", "br");
	assert_true(ingress_inspect_response_begin(ip, h));
	free(h);
	assert_int_equal(ingress_inspect_response_data(ip, SPAN_LIT("xx"), &out),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(out.len, 0);
	ingress_inspect_free(ip);
	buf_free(&client);
}

/* Egress bytes with a card in fullwidth digits, no-break and zero-width spaces, cut at every
 * offset (inside UTF-8 sequences too): the mask replaces exactly the original characters. */
static void test_egress_raw_unicode(void **state)
{
	(void)state;
	static const char body[] = "{\"note\":\"card \xef\xbc\x94\xef\xbc\x91\xef\xbc\x91"
	                           "\xef\xbc\x91\xc2\xa0"
	                           "1111\xe2\x80\x8b 1111\xe2\x80\xaf"
	                           "1111 on file \xe6\x9d\xb1\"}";
	static const char want[] = "{\"note\":\"card [REDACTED:PAYMENT_CARD] on file "
	                           "\xe6\x9d\xb1\"}";
	buf client;
	buf_init(&client, 4096);
	for (size_t cut = 0; cut < sizeof(body); cut++) {
		buf_reset(&client);
		assert_int_equal(
		        run_raw("application/json", span_of(body, sizeof(body) - 1), cut, &client),
		        CUSTOS_OK);
		assert_int_equal(buf_used(&client), sizeof(want) - 1);
		assert_memory_equal(buf_ptr(&client), want, sizeof(want) - 1);
	}
	buf_free(&client);
}

/* Which egress decisions ask for inspection (response, or the request body: the prompt side,
 * written request: on egress rules). */
static void test_egress_wanted(void **state)
{
	(void)state;
	policy_decision d;
	memset(&d, 0, sizeof(d));
	assert_false(egress_inspect_wanted(&d)); /* nothing asked */
	d.has_inspect = true;
	assert_false(egress_inspect_wanted(&d)); /* no detector */
	d.inspect_prompt[INSPECT_EMAIL] = POLICY_ACT_REDACT;
	assert_true(egress_inspect_wanted(&d)); /* request bodies */
	d.inspect_prompt[INSPECT_EMAIL] = 0;
	d.inspect_response[INSPECT_EMAIL] = POLICY_ACT_LOG;
	assert_true(egress_inspect_wanted(&d));
	d.shadow = true;
	assert_false(egress_inspect_wanted(&d)); /* shadow: responses are not rewritten */
}

static void test_prompt(void **state)
{
	(void)state;
	decide_out d;
	ingress_insp *ip = NULL;
	const char *why;
	buf body;
	openai_request oa = { 0 };

	make_dec(&d, false);
	/* negative: token ids cannot be inspected */
	oa.opaque_input = true;
	buf_init(&body, 1 << 20);
	assert_int_equal(buf_append_cstr(&body, "{\"prompt\":[1,2,3]}"), CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 400);
	ingress_inspect_free(ip);
	ip = NULL;
	oa.opaque_input = false;
	/* negative: logprobs would carry response text around the stream inspection */
	buf_reset(&body);
	assert_int_equal(buf_append_cstr(&body, "{\"logprobs\":true,\"messages\":[]}"), CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 400);
	assert_non_null(strstr(why, "logprobs"));
	ingress_inspect_free(ip);
	ip = NULL;
	buf_reset(&body);
	assert_int_equal(buf_append_cstr(&body, "{\"prompt\":\"x\",\"n_probs\":5}"), CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 400);
	ingress_inspect_free(ip);
	ip = NULL;
	/* llama.cpp's /completion (not an OpenAI path): n_probs, and token ids */
	static const char *const llama_asks[] = { "{\"prompt\":\"x\",\"n_probs\":3}",
		                                  "{\"prompt\":\"x\",\"return_tokens\":true}" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(llama_asks); i++) {
		buf_reset(&body);
		assert_int_equal(buf_append_cstr(&body, llama_asks[i]), CUSTOS_OK);
		assert_int_equal(ingress_inspect_request(&ip, &d, false, NULL, &body, &why), 400);
		ingress_inspect_free(ip);
		ip = NULL;
	}
	buf_reset(&body);
	assert_int_equal(buf_append_cstr(&body,
	                                 "{\"logprobs\":false,\"top_logprobs\":0,\"n_probs\":0,"
	                                 "\"return_tokens\":false}"),
	                 CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 0);
	ingress_inspect_free(ip);
	ip = NULL;
	/* negative: a deny, naming the detector and not the value */
	buf_reset(&body);
	assert_int_equal(
	        buf_append_cstr(&body, "{\"messages\":[{\"content\":\"ssn 123-45-6789\"}]}"),
	        CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 403);
	assert_non_null(strstr(why, "us_ssn"));
	assert_null(strstr(why, "6789"));
	ingress_inspect_free(ip);
	ip = NULL;
	/* shadow: the same passes unchanged, the finding is kept */
	make_dec(&d, true);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 0);
	const audit_finding *f;
	size_t n;
	const char *sum;
	uint64_t ns;
	ingress_inspect_audit(ip, &f, &n, &sum, &ns);
	assert_int_equal(n, 1);
	assert_string_equal(sum, "shadow prompt:deny response:none");
	ingress_inspect_free(ip);
	ip = NULL;
	make_dec(&d, false);
	/* redaction with an escaped @ and a log finding */
	buf_reset(&body);
	assert_int_equal(buf_append_cstr(&body,
	                                 "{\"messages\":[{\"role\":\"user\",\"content\":"
	                                 "\"to bob\\u0040example.com from 10.1.2.3\"}],\"n\":1}"),
	                 CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, true, &oa, &body, &why), 0);
	assert_true(inspect_json_valid(buf_span(&body)));
	const char *want = "{\"messages\":[{\"role\":\"user\",\"content\":"
	                   "\"to [REDACTED:EMAIL] from 10.1.2.3\"}],\"n\":1}";
	assert_int_equal(buf_used(&body), strlen(want));
	assert_memory_equal(buf_ptr(&body), want, strlen(want));
	ingress_inspect_audit(ip, &f, &n, &sum, &ns);
	assert_int_equal(n, 2);
	assert_string_equal(sum, "prompt:redact response:none");
	ingress_inspect_free(ip);
	ip = NULL;
	/* not an OpenAI path and not JSON: inspected as text */
	buf_reset(&body);
	assert_int_equal(buf_append_cstr(&body, "plain bob@example.com text"), CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, false, NULL, &body, &why), 0);
	assert_int_equal(buf_used(&body), strlen("plain [REDACTED:EMAIL] text"));
	ingress_inspect_free(ip);
	ip = NULL;
	/* not an OpenAI path, JSON after a BOM: walked as JSON (escapes decoded), BOM kept */
	static const char *const bom_bodies[] = {
		"\xef\xbb\xbf{\"q\":\"ssn 123\\u002d45-6789\"}",
		"not json: ssn 123\\u002d45-6789",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bom_bodies); i++) {
		buf_reset(&body);
		assert_int_equal(buf_append_cstr(&body, bom_bodies[i]), CUSTOS_OK);
		assert_int_equal(ingress_inspect_request(&ip, &d, false, NULL, &body, &why), 403);
		ingress_inspect_free(ip);
		ip = NULL;
	}
	buf_reset(&body);
	assert_int_equal(buf_append_cstr(&body, "\xef\xbb\xbf{\"q\":\"to bob\\u0040example.com\"}"),
	                 CUSTOS_OK);
	assert_int_equal(ingress_inspect_request(&ip, &d, false, NULL, &body, &why), 0);
	want = "\xef\xbb\xbf{\"q\":\"to [REDACTED:EMAIL]\"}";
	assert_int_equal(buf_used(&body), strlen(want));
	assert_memory_equal(buf_ptr(&body), want, strlen(want));
	ingress_inspect_free(ip);
	ip = NULL;
	/* which decisions read the prompt */
	assert_true(ingress_inspect_prompt_wanted(&d));
	memset(d.insp_prompt, 0, sizeof(d.insp_prompt));
	assert_false(ingress_inspect_prompt_wanted(&d));
	/* no inspection in the decision: nothing made */
	d.has_inspect = false;
	assert_int_equal(ingress_inspect_request(&ip, &d, false, NULL, &body, &why), 0);
	assert_null(ip);
	buf_free(&body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prompt),
		cmocka_unit_test(test_response_encoded_refused),
		cmocka_unit_test(test_sse_deny_midstream),
		cmocka_unit_test(test_sse_card_every_split),
		cmocka_unit_test(test_sse_finish_without_content),
		cmocka_unit_test(test_sse_not_a_chunk),
		cmocka_unit_test(test_sse_responses_split),
		cmocka_unit_test(test_sse_responses_parts),
		cmocka_unit_test(test_sse_responses_other_members),
		cmocka_unit_test(test_sse_logprobs_dropped),
		cmocka_unit_test(test_sse_no_done),
		cmocka_unit_test(test_sse_tool_call_args),
		cmocka_unit_test(test_sse_tool_args_escaped),
		cmocka_unit_test(test_sse_chat_parts),
		cmocka_unit_test(test_sse_chat_more_members),
		cmocka_unit_test(test_sse_tool_name_held),
		cmocka_unit_test(test_sse_anthropic),
		cmocka_unit_test(test_sse_empty_texts_first),
		cmocka_unit_test(test_sse_anthropic_citations),
		cmocka_unit_test(test_sse_content_parts_mixed),
		cmocka_unit_test(test_sse_text_completion_then_parts),
		cmocka_unit_test(test_sse_llama_completion),
		cmocka_unit_test(test_json_response),
		cmocka_unit_test(test_media_types),
		cmocka_unit_test(test_egress_raw),
		cmocka_unit_test(test_egress_raw_unicode),
		cmocka_unit_test(test_egress_wanted),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
