/*
 * OpenAI awareness tests: request fields and text spans for chat, completions, embeddings and
 * responses bodies; wrong types and ambiguities rejected; include_usage rewrite; usage from
 * responses and stream chunks; a redaction round trip that keeps the body valid JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/openai.h"

static custos_err req(const char *s, openai_request *r)
{
	return openai_request_parse(span_of(s, strlen(s)), NULL, r);
}

static bool text_is(const openai_text *t, const char *want)
{
	buf b;
	buf_init(&b, 1 << 16);
	bool ok = jsonr_unescape(t->raw, &b) == CUSTOS_OK && buf_used(&b) == strlen(want) &&
	          memcmp(buf_ptr(&b), want, strlen(want)) == 0;
	buf_free(&b);
	return ok;
}

static void test_chat_request(void **state)
{
	(void)state;
	const char *body =
	        "{\"model\":\"gpt\\u002d4o\",\"stream\":true,\"max_tokens\":100,"
	        "\"stream_options\":{\"include_usage\":false},"
	        "\"messages\":["
	        "{\"role\":\"system\",\"content\":\"be brief\"},"
	        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"card 4111\\n\"},"
	        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:...\"}},"
	        "{\"type\":\"text\",\"text\":\"\\u00e9\"}]},"
	        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
	        "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"q\\\":1}"
	        "\"}}]},"
	        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"result\"}"
	        "],\"max_completion_tokens\":50,\"temperature\":0.2}";
	openai_request r;
	assert_int_equal(req(body, &r), CUSTOS_OK);
	assert_true(r.has_model);
	assert_string_equal(r.model, "gpt-4o");
	assert_true(r.stream);
	assert_true(r.has_max_tokens);
	assert_int_equal(r.max_tokens, 100); /* the larger of the two */
	assert_true(r.has_include_usage);
	assert_false(r.include_usage);
	assert_int_equal(r.nmessages, 4);
	assert_int_equal(r.ntexts, 5);
	assert_int_equal(r.texts[0].kind, OPENAI_TEXT_MESSAGE);
	assert_int_equal(r.texts[0].message, 0);
	assert_true(text_is(&r.texts[0], "be brief"));
	assert_int_equal(r.texts[1].kind, OPENAI_TEXT_PART);
	assert_int_equal(r.texts[1].message, 1);
	assert_int_equal(r.texts[1].part, 0);
	assert_true(text_is(&r.texts[1], "card 4111\n"));
	assert_int_equal(r.texts[2].part, 2);
	assert_true(text_is(&r.texts[2], "\xc3\xa9"));
	assert_int_equal(r.texts[3].kind, OPENAI_TEXT_TOOL_ARGS);
	assert_int_equal(r.texts[3].message, 2);
	assert_true(text_is(&r.texts[3], "{\"q\":1}"));
	assert_int_equal(r.texts[4].message, 3);
	/* raw spans point into the body. */
	for (size_t i = 0; i < r.ntexts; i++)
		assert_true(r.texts[i].raw.ptr > body &&
		            r.texts[i].raw.ptr + r.texts[i].raw.len < body + strlen(body));
	openai_request_free(&r);
}

static void test_other_requests(void **state)
{
	(void)state;
	openai_request r;
	assert_int_equal(req("{\"model\":\"m\",\"prompt\":[\"a\",\"b\"],\"max_tokens\":null}", &r),
	                 CUSTOS_OK);
	assert_false(r.has_max_tokens);
	assert_false(r.stream);
	assert_int_equal(r.ntexts, 2);
	assert_int_equal(r.texts[1].kind, OPENAI_TEXT_PROMPT);
	assert_int_equal(r.texts[1].part, 1);
	openai_request_free(&r);
	assert_int_equal(req("{\"model\":\"m\",\"prompt\":\"one\"}", &r), CUSTOS_OK);
	assert_int_equal(r.ntexts, 1);
	assert_false(r.opaque_input);
	openai_request_free(&r);
	assert_int_equal(req("{\"model\":\"m\",\"prompt\":[[1,2],[3]]}", &r), CUSTOS_OK);
	assert_true(r.opaque_input);
	assert_int_equal(r.ntexts, 0);
	openai_request_free(&r);
	assert_int_equal(req("{\"model\":\"e\",\"input\":[\"x\",\"y\"]}", &r), CUSTOS_OK);
	assert_int_equal(r.ntexts, 2);
	assert_int_equal(r.texts[0].kind, OPENAI_TEXT_INPUT);
	openai_request_free(&r);
	/* Responses API: instructions and input items with content parts. */
	assert_int_equal(req("{\"model\":\"m\",\"instructions\":\"sys\",\"max_output_tokens\":7,"
	                     "\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
	                     "\"text\":\"hello\"}]},{\"role\":\"user\",\"content\":\"again\"}]}",
	                     &r),
	                 CUSTOS_OK);
	assert_int_equal(r.max_tokens, 7);
	assert_int_equal(r.ntexts, 3);
	assert_int_equal(r.texts[0].kind, OPENAI_TEXT_INSTRUCTIONS);
	assert_true(text_is(&r.texts[1], "hello"));
	assert_true(text_is(&r.texts[2], "again"));
	openai_request_free(&r);
	/* No model is not an error here (routing decides). */
	assert_int_equal(req("{}", &r), CUSTOS_OK);
	assert_false(r.has_model);
	assert_string_equal(r.model, "");
	openai_request_free(&r);
}

static void test_bad_requests(void **state)
{
	(void)state;
	static const char *bad[] = {
		"[]",
		"\"x\"",
		"{\"model\":1}",
		"{\"model\":null}",
		"{\"model\":\"a\",\"model\":\"b\"}",
		"{\"model\":\"a\",\"\\u006dodel\":\"b\"}",
		"{\"model\":\"a\\u0000b\"}",
		"{\"stream\":\"true\"}",
		"{\"stream\":1}",
		"{\"max_tokens\":-1}",
		"{\"max_tokens\":1.5}",
		"{\"max_tokens\":\"10\"}",
		"{\"max_tokens\":99999999999999999999}",
		"{\"max_completion_tokens\":true}",
		"{\"stream_options\":true}",
		"{\"stream_options\":{\"include_usage\":\"yes\"}}",
		"{\"messages\":{}}",
		"{\"messages\":[\"hi\"]}",
		"{\"messages\":[{\"content\":5}]}",
		"{\"messages\":[{\"content\":[5]}]}",
		"{\"messages\":[{\"content\":[{\"type\":\"text\",\"text\":5}]}]}",
		"{\"messages\":[{\"content\":\"a\",\"content\":\"b\"}]}",
		"{\"messages\":[{\"tool_calls\":{}}]}",
		"{\"messages\":[{\"tool_calls\":[{\"function\":{\"arguments\":{}}}]}]}",
		"{\"messages\":[{\"function_call\":\"x\"}]}",
		"{\"prompt\":5}",
		"{\"input\":{}}",
		"{\"instructions\":5}",
		"{\"model\":\"m\"} trailing",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		openai_request r;
		custos_err e = req(bad[i], &r);
		if (e == CUSTOS_OK)
			fail_msg("accepted: %s", bad[i]);
		assert_null(r.texts);
	}
	/* A model name longer than the limit. */
	char big[OPENAI_MAX_MODEL + 32];
	memset(big, 'm', sizeof(big));
	memcpy(big, "{\"model\":\"", 10);
	memcpy(big + sizeof(big) - 3, "\"}", 3);
	openai_request r;
	assert_int_equal(req(big, &r), CUSTOS_ERR_LIMIT);
	/* Too many texts. */
	buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(buf_append_cstr(&b, "{\"prompt\":["), CUSTOS_OK);
	for (unsigned i = 0; i <= OPENAI_MAX_TEXTS; i++)
		assert_int_equal(buf_append_cstr(&b, i ? ",\"x\"" : "\"x\""), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&b, "]}"), CUSTOS_OK);
	assert_int_equal(openai_request_parse(buf_span(&b), NULL, &r), CUSTOS_ERR_LIMIT);
	assert_null(r.texts);
	buf_free(&b);
	/* Body limit from the caller. */
	jsonr_limits lim = { .max_bytes = 8 };
	assert_int_equal(openai_request_parse(SPAN_LIT("{\"model\":\"m\"}"), &lim, &r),
	                 CUSTOS_ERR_LIMIT);
}

static void expect_usage_rewrite(const char *in, const char *want, bool changed_want)
{
	buf out;
	bool changed;
	buf_init(&out, 1 << 16);
	assert_int_equal(openai_add_include_usage(span_of(in, strlen(in)), &out, &changed),
	                 CUSTOS_OK);
	assert_int_equal(changed, changed_want);
	if (!span_eq_cstr(buf_span(&out), want))
		fail_msg("got %.*s", (int)buf_used(&out), (const char *)buf_ptr(&out));
	openai_request r;
	assert_int_equal(openai_request_parse(buf_span(&out), NULL, &r), CUSTOS_OK);
	assert_true(r.has_include_usage && r.include_usage);
	openai_request_free(&r);
	buf_free(&out);
}

static void test_include_usage(void **state)
{
	(void)state;
	expect_usage_rewrite("{}", "{\"stream_options\":{\"include_usage\":true}}", true);
	expect_usage_rewrite(" { } ", " {\"stream_options\":{\"include_usage\":true} } ", true);
	expect_usage_rewrite("{\"model\":\"m\",\"stream\":true}",
	                     "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\","
	                     "\"stream\":true}",
	                     true);
	expect_usage_rewrite("{\"stream_options\":null}",
	                     "{\"stream_options\":{\"include_usage\":true}}", true);
	expect_usage_rewrite("{\"stream_options\":{}}",
	                     "{\"stream_options\":{\"include_usage\":true}}", true);
	expect_usage_rewrite("{\"stream_options\":{\"x\":1}}",
	                     "{\"stream_options\":{\"include_usage\":true,\"x\":1}}", true);
	expect_usage_rewrite("{\"stream_options\":{\"include_usage\":false}}",
	                     "{\"stream_options\":{\"include_usage\":true}}", true);
	expect_usage_rewrite("{\"stream_options\":{\"include_usage\":null}}",
	                     "{\"stream_options\":{\"include_usage\":true}}", true);
	expect_usage_rewrite("{\"stream_options\":{\"include_usage\":true}}",
	                     "{\"stream_options\":{\"include_usage\":true}}", false);
	buf out;
	bool changed;
	buf_init(&out, 1 << 16);
	assert_int_equal(openai_add_include_usage(SPAN_LIT("[]"), &out, &changed),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(
	        openai_add_include_usage(SPAN_LIT("{\"stream_options\":1}"), &out, &changed),
	        CUSTOS_ERR_PARSE);
	assert_int_equal(openai_add_include_usage(SPAN_LIT("{\"stream_options\":{\"include_usage\":"
	                                                   "1}}"),
	                                          &out, &changed),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(openai_add_include_usage(SPAN_LIT("{"), &out, &changed), CUSTOS_ERR_PARSE);
	buf_free(&out);
}

/* Scans doc in pieces of `step` bytes (0: whole) and returns the usage found. */
static openai_usage scan_usage(const char *doc, size_t len, size_t step)
{
	openai_usage_scan *s = malloc(sizeof(*s));
	openai_usage u;
	assert_non_null(s);
	openai_usage_scan_init(s);
	if (step == 0)
		step = len ? len : 1;
	for (size_t at = 0; at < len; at += step)
		openai_usage_scan_feed(s, span_of(doc + at, len - at < step ? len - at : step));
	openai_usage_scan_end(s, &u);
	free(s);
	return u;
}

static void test_usage_scan(void **state)
{
	(void)state;
	/* A large response: usage after 1 MiB of content, in every piece size. */
	buf b;
	buf_init(&b, 4u << 20);
	assert_int_equal(
	        buf_append_cstr(&b, "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\""),
	        CUSTOS_OK);
	for (int i = 0; i < 1 << 16; i++) /* content with "usage": inside a string, escaped */
		assert_int_equal(buf_append_cstr(&b, "\\\"usage\\\":{9} \\\\"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&b,
	                                 "\",\"usage\":{\"x\":1}}}],"
	                                 "\"usage\" : {\"prompt_tokens\":7,"
	                                 "\"completion_tokens\":150000,\"total_tokens\":150007}}"),
	                 CUSTOS_OK);
	span all = buf_span(&b);
	static const size_t steps[] = { 0, 1, 7, 4096 };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(steps); i++) {
		openai_usage u = scan_usage(all.ptr, all.len, steps[i]);
		assert_true(u.present);
		assert_int_equal(u.prompt_tokens, 7);
		assert_int_equal(u.completion_tokens, 150000);
		assert_int_equal(u.total_tokens, 150007);
	}
	buf_free(&b);

	/* Only the top level counts; usage first, then more members. */
	const char *d1 =
	        "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},\"model\":\"m\"}";
	openai_usage u = scan_usage(d1, strlen(d1), 1);
	assert_true(u.present);
	assert_int_equal(u.total_tokens, 3);
	const char *d2 = "{\"a\":{\"usage\":{\"prompt_tokens\":5}},\"b\":[\"usage\"]}";
	assert_false(scan_usage(d2, strlen(d2), 0).present);
	/* An escaped member name is not taken for usage; neither is a longer one. */
	const char *d3 = "{\"us\\u0061ge\":{\"prompt_tokens\":5},\"usages\":{\"prompt_tokens\":6}}";
	assert_false(scan_usage(d3, strlen(d3), 0).present);
	/* Two usage members: neither is trusted. */
	const char *d4 = "{\"usage\":{\"prompt_tokens\":5},\"usage\":{\"prompt_tokens\":1}}";
	assert_false(scan_usage(d4, strlen(d4), 0).present);
	/* null, not an object, over the kept size, not JSON, cut off. */
	const char *d5 = "{\"usage\":null}";
	assert_false(scan_usage(d5, strlen(d5), 0).present);
	const char *d6 = "{\"usage\":\"lots\"}";
	assert_false(scan_usage(d6, strlen(d6), 0).present);
	char big[OPENAI_USAGE_SCAN_MAX + 64];
	int n = snprintf(big, sizeof(big), "{\"usage\":{\"prompt_tokens\":1,\"pad\":\"%0*d\"}}",
	                 OPENAI_USAGE_SCAN_MAX, 0);
	assert_false(scan_usage(big, (size_t)n, 0).present);
	const char *d7 = "[{\"usage\":{\"prompt_tokens\":5}}]";
	assert_false(scan_usage(d7, strlen(d7), 0).present);
	const char *d8 = "{\"usage\":{\"prompt_tokens\":5";
	assert_false(scan_usage(d8, strlen(d8), 0).present);
	assert_false(scan_usage("", 0, 0).present);
}

static void test_usage_and_chunks(void **state)
{
	(void)state;
	openai_usage u;
	assert_int_equal(
	        openai_usage_parse(SPAN_LIT("{\"id\":\"x\",\"usage\":{\"prompt_tokens\":12,"
	                                    "\"completion_tokens\":30,\"total_tokens\":42}}"),
	                           &u),
	        CUSTOS_OK);
	assert_true(u.present);
	assert_int_equal(u.prompt_tokens, 12);
	assert_int_equal(u.completion_tokens, 30);
	assert_int_equal(u.total_tokens, 42);
	assert_int_equal(openai_usage_parse(SPAN_LIT("{\"usage\":{\"input_tokens\":3,"
	                                             "\"output_tokens\":4}}"),
	                                    &u),
	                 CUSTOS_OK);
	assert_int_equal(u.total_tokens, 7);
	assert_int_equal(openai_usage_parse(SPAN_LIT("{\"usage\":null}"), &u), CUSTOS_OK);
	assert_false(u.present);
	assert_int_equal(openai_usage_parse(SPAN_LIT("{}"), &u), CUSTOS_OK);
	assert_false(u.present);
	assert_int_equal(openai_usage_parse(SPAN_LIT("{\"usage\":{\"prompt_tokens\":-1}}"), &u),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(openai_usage_parse(SPAN_LIT("{\"usage\":[]}"), &u), CUSTOS_ERR_PARSE);
	assert_int_equal(openai_usage_parse(SPAN_LIT("[1]"), &u), CUSTOS_ERR_PARSE);

	openai_chunk c;
	const char *ck =
	        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
	        "\"delta\":{\"role\":\"assistant\",\"content\":\"4111 \\\"1111\"},"
	        "\"finish_reason\":null},{\"index\":1,\"delta\":{}}],\"usage\":null}";
	assert_int_equal(openai_chunk_parse(span_of(ck, strlen(ck)), &c), CUSTOS_OK);
	assert_int_equal(c.ndeltas, 2);
	assert_true(c.deltas[0].has_content);
	assert_true(span_eq_cstr(c.deltas[0].content, "4111 \\\"1111"));
	assert_int_equal(c.deltas[0].finish_reason.len, 0);
	assert_false(c.deltas[1].has_content);
	assert_int_equal(c.deltas[1].choice, 1);
	assert_false(c.usage.present);
	const char *last = "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,"
	                   "\"total_tokens\":11}}";
	assert_int_equal(openai_chunk_parse(span_of(last, strlen(last)), &c), CUSTOS_OK);
	assert_int_equal(c.ndeltas, 0);
	assert_true(c.has_choices);
	assert_true(c.usage.present);
	assert_int_equal(c.usage.total_tokens, 11);
	/* no choices: not a chunk the proxy can take apart (inspected whole) */
	assert_int_equal(openai_chunk_parse(SPAN_LIT("{\"type\":\"x\",\"delta\":\"t\"}"), &c),
	                 CUSTOS_OK);
	assert_false(c.has_choices);
	const char *fin = "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}";
	assert_int_equal(openai_chunk_parse(span_of(fin, strlen(fin)), &c), CUSTOS_OK);
	assert_true(span_eq_cstr(c.deltas[0].finish_reason, "stop"));
	const char *compl = "{\"choices\":[{\"text\":\"abc\",\"index\":0}]}";
	assert_int_equal(openai_chunk_parse(span_of(compl, strlen(compl )), &c), CUSTOS_OK);
	assert_true(span_eq_cstr(c.deltas[0].content, "abc"));
	/* content as an array of parts: its raw JSON, no string content */
	const char *parts = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":"
	                    "\"text\",\"text\":\"a\"}]}}]}";
	assert_int_equal(openai_chunk_parse(span_of(parts, strlen(parts)), &c), CUSTOS_OK);
	assert_false(c.deltas[0].has_content);
	assert_true(c.deltas[0].has_parts);
	assert_true(span_eq_cstr(c.deltas[0].parts, "[{\"type\":\"text\",\"text\":\"a\"}]"));
	assert_int_equal(openai_chunk_parse(SPAN_LIT("{\"choices\":{}}"), &c), CUSTOS_ERR_PARSE);
	assert_int_equal(
	        openai_chunk_parse(SPAN_LIT("{\"choices\":[{\"delta\":{\"content\":1}}]}"), &c),
	        CUSTOS_ERR_PARSE);
	assert_int_equal(openai_chunk_parse(SPAN_LIT("{\"choices\":[{\"index\":-1}]}"), &c),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(openai_chunk_parse(SPAN_LIT("[DONE]"), &c), CUSTOS_ERR_PARSE);
	/* Too many choices. */
	buf b;
	buf_init(&b, 1 << 16);
	assert_int_equal(buf_append_cstr(&b, "{\"choices\":["), CUSTOS_OK);
	for (unsigned i = 0; i <= OPENAI_MAX_CHOICES; i++)
		assert_int_equal(buf_append_cstr(&b, i ? ",{}" : "{}"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&b, "]}"), CUSTOS_OK);
	assert_int_equal(openai_chunk_parse(buf_span(&b), &c), CUSTOS_ERR_LIMIT);
	buf_free(&b);

	openai_response r;
	const char *resp = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
	                   "\"content\":\"hi there\"},\"finish_reason\":\"stop\"}],"
	                   "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
	                   "\"total_tokens\":3}}";
	assert_int_equal(openai_response_parse(span_of(resp, strlen(resp)), &r), CUSTOS_OK);
	assert_int_equal(r.nchoices, 1);
	assert_true(span_eq_cstr(r.choices[0].content, "hi there"));
	assert_int_equal(r.usage.total_tokens, 3);
}

/* The inspection flow: unescape a text, find a value, map it back, rewrite, re-parse. */
static void test_redaction_round_trip(void **state)
{
	(void)state;
	const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	                   "\"pay with 4111\\u00201111 1111 1111 \\ud83d\\ude00 \\\"now\\\"\"}]}";
	openai_request r;
	assert_int_equal(req(body, &r), CUSTOS_OK);
	assert_int_equal(r.ntexts, 1);
	buf text;
	buf_init(&text, 4096);
	assert_int_equal(jsonr_unescape(r.texts[0].raw, &text), CUSTOS_OK);
	const char *t = (const char *)buf_ptr(&text);
	const char *hit = memmem(t, buf_used(&text), "4111 1111 1111 1111", 19);
	assert_non_null(hit);
	span raw;
	assert_int_equal(jsonr_unescaped_to_raw(r.texts[0].raw, (size_t)(hit - t), 19, &raw),
	                 CUSTOS_OK);
	assert_true(span_eq_cstr(raw, "4111\\u00201111 1111 1111"));
	jsonr_edit ed = { raw, SPAN_LIT("[REDACTED:CARD]") };
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(jsonr_rewrite(span_of(body, strlen(body)), &ed, 1, &out), CUSTOS_OK);
	openai_request r2;
	assert_int_equal(openai_request_parse(buf_span(&out), NULL, &r2), CUSTOS_OK);
	buf t2;
	buf_init(&t2, 4096);
	assert_int_equal(jsonr_unescape(r2.texts[0].raw, &t2), CUSTOS_OK);
	const char *want = "pay with [REDACTED:CARD] \xf0\x9f\x98\x80 \"now\"";
	assert_int_equal(buf_used(&t2), strlen(want));
	assert_memory_equal(buf_ptr(&t2), want, strlen(want));
	assert_null(memmem(buf_ptr(&out), buf_used(&out), "1111", 4));
	openai_request_free(&r);
	openai_request_free(&r2);
	buf_free(&text);
	buf_free(&t2);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chat_request),         cmocka_unit_test(test_other_requests),
		cmocka_unit_test(test_bad_requests),         cmocka_unit_test(test_include_usage),
		cmocka_unit_test(test_usage_and_chunks),     cmocka_unit_test(test_usage_scan),
		cmocka_unit_test(test_redaction_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
