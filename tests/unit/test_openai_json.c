/*
 * Bounded JSON reader tests: RFC 8259 conformance both ways, limits, duplicate keys, UTF-8
 * and escape validation, unescaping, offset mapping and the escaping rewriter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/json.h"

static custos_err parse(const char *s, jsonr_val *v)
{
	jsonr_val tmp;
	return jsonr_parse(span_of(s, strlen(s)), NULL, v ? v : &tmp);
}

static custos_err parse_n(const char *s, size_t n)
{
	jsonr_val v;
	return jsonr_parse(span_of(s, n), NULL, &v);
}

static void test_valid(void **state)
{
	(void)state;
	static const char *ok[] = {
		"{}",
		"[]",
		" \t\r\n{ } ",
		"0",
		"-0",
		"1.5e-3",
		"-12E+4",
		"\"\"",
		"true",
		"false",
		"null",
		"[1,\"a\",{\"b\":[null,true]},-3.25]",
		"{\"a\":{\"a\":1}}", /* same key at different levels is fine */
		"\"\\u00e9\\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"",
		"\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
		"{\"a\":1,\"b\":2,\"c\":3,\"A\":4}",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ok); i++) {
		custos_err e = parse(ok[i], NULL);
		if (e != CUSTOS_OK)
			fail_msg("%s: %s", ok[i], err_msg());
	}
	jsonr_val v;
	assert_int_equal(parse("  [1, 2]  ", &v), CUSTOS_OK);
	assert_int_equal(v.type, JSONR_ARRAY);
	assert_int_equal(v.raw.len, 6);
}

static void test_invalid(void **state)
{
	(void)state;
	static const char *bad[] = {
		"",
		" ",
		"{",
		"}",
		"[1,]",
		"{\"a\":1,}",
		"{,}",
		"[,1]",
		"{\"a\" 1}",
		"{\"a\":}",
		"{a:1}",
		"{'a':1}",
		"01",
		"1.",
		".5",
		"+1",
		"-",
		"1e",
		"1e+",
		"NaN",
		"Infinity",
		"-Infinity",
		"tru",
		"nul",
		"truex",
		"[1 2]",
		"{} {}",
		"{}x",
		"/* c */ {}",
		"\"abc",
		"\"a\tb\"",
		"\"a\nb\"",
		"\"\\x41\"",
		"\"\\u12\"",
		"\"\\u12G4\"",
		"\"\\ud800\"",
		"\"\\udc00\"",
		"\"\\ud800\\u0041\"",
		"\"\\ud800\\ud800\"",
		"\"\\ud800x\"",
		"\"\\'\"",
		"\"\xc0\x80\"",         /* overlong NUL */
		"\"\xe0\x80\xaf\"",     /* overlong / */
		"\"\xed\xa0\x80\"",     /* UTF-8 encoded surrogate */
		"\"\xf4\x90\x80\x80\"", /* past U+10FFFF */
		"\"\xf5\x80\x80\x80\"",
		"\"\xff\"",
		"\"\x80\"",
		"\"\xc3\"",
		"\"\xe2\x82\"",
		"\xef\xbb\xbf{}", /* BOM */
		"{\"a\":1,\"a\":2}",
		"{\"a\":1,\"\\u0061\":2}", /* duplicate after unescaping */
		"{\"x\":{\"k\":1,\"b\":2,\"k\":3}}",
		"[{\"role\":\"user\",\"content\":\"hi\",\"content\":\"secret\"}]",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		custos_err e = parse(bad[i], NULL);
		if (e == CUSTOS_OK)
			fail_msg("accepted: %s", bad[i]);
		assert_true(strlen(err_msg()) > 0);
	}
	/* NUL inside the document. */
	assert_int_equal(parse_n("\"a\0b\"", 5), CUSTOS_ERR_PARSE);
	assert_int_equal(parse_n("{}\0", 3), CUSTOS_ERR_PARSE);

	/* Duplicates allowed when asked. */
	jsonr_limits lim = { .allow_dup_keys = true };
	jsonr_val v;
	const char *d = "{\"a\":1,\"a\":2}";
	assert_int_equal(jsonr_parse(span_of(d, strlen(d)), &lim, &v), CUSTOS_OK);
}

static void test_every_prefix_rejected(void **state)
{
	(void)state;
	const char *d = "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":"
	                "\"h\\u00e9llo \\ud83d\\ude00\"}],\"stream\":true,\"n\":-1.5e3}";
	size_t n = strlen(d);
	assert_int_equal(parse_n(d, n), CUSTOS_OK);
	for (size_t k = 0; k < n; k++) {
		char *c = malloc(k ? k : 1); /* exact size: ASan sees any overread */
		assert_non_null(c);
		memcpy(c, d, k);
		assert_int_not_equal(parse_n(c, k), CUSTOS_OK);
		free(c);
	}
}

static void test_limits(void **state)
{
	(void)state;
	/* Depth. */
	char deep[200];
	for (size_t i = 0; i < 65; i++)
		deep[i] = '[';
	for (size_t i = 0; i < 65; i++)
		deep[65 + i] = ']';
	jsonr_val v;
	assert_int_equal(jsonr_parse(span_of(deep, 130), NULL, &v), CUSTOS_ERR_LIMIT);
	assert_int_equal(jsonr_parse(span_of(deep + 1, 128), NULL, &v), CUSTOS_OK);
	jsonr_limits l = { .max_depth = 2 };
	assert_int_equal(jsonr_parse(SPAN_LIT("[[1]]"), &l, &v), CUSTOS_OK);
	assert_int_equal(jsonr_parse(SPAN_LIT("[[[1]]]"), &l, &v), CUSTOS_ERR_LIMIT);
	assert_int_equal(jsonr_parse(SPAN_LIT("{\"a\":{\"b\":{}}}"), &l, &v), CUSTOS_ERR_LIMIT);
	/* Size. */
	jsonr_limits s = { .max_bytes = 4 };
	assert_int_equal(jsonr_parse(SPAN_LIT("[1]"), &s, &v), CUSTOS_OK);
	assert_int_equal(jsonr_parse(SPAN_LIT("[1,2]"), &s, &v), CUSTOS_ERR_LIMIT);
	/* Members per object, and many keys (heap path of the duplicate check). */
	buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(buf_append_cstr(&b, "{"), CUSTOS_OK);
	for (unsigned i = 0; i < JSONR_MAX_KEYS; i++)
		assert_int_equal(buf_printf(&b, "%s\"k%u\":%u", i ? "," : "", i, i), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&b, "}"), CUSTOS_OK);
	assert_int_equal(jsonr_parse(buf_span(&b), NULL, &v), CUSTOS_OK);
	b.len--;
	assert_int_equal(buf_append_cstr(&b, ",\"k7\":0}"), CUSTOS_OK);
	assert_int_equal(jsonr_parse(buf_span(&b), NULL, &v), CUSTOS_ERR_LIMIT);
	buf_reset(&b);
	assert_int_equal(buf_append_cstr(&b, "{"), CUSTOS_OK);
	for (unsigned i = 0; i < 1000; i++)
		assert_int_equal(buf_printf(&b, "\"k%u\":1,", i), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&b, "\"k999\":2}"), CUSTOS_OK);
	assert_int_equal(jsonr_parse(buf_span(&b), NULL, &v), CUSTOS_ERR_PARSE);
	buf_free(&b);
}

static void test_read(void **state)
{
	(void)state;
	const char *d = "{ \"a\" : [1, \"two\", {\"x\":null}] , \"b\\n\":\"q\\\"\\\\\", \"c\":-5,"
	                "\"e\":{}, \"f\":[]}";
	jsonr_val root, v, e;
	assert_int_equal(parse(d, &root), CUSTOS_OK);
	assert_int_equal(root.type, JSONR_OBJECT);
	assert_true(jsonr_obj_get(root, "a", &v));
	assert_int_equal(v.type, JSONR_ARRAY);
	jsonr_iter it;
	jsonr_iter_init(&it, v);
	assert_true(jsonr_arr_next(&it, &e));
	assert_int_equal(e.type, JSONR_NUMBER);
	assert_true(span_eq_cstr(e.raw, "1"));
	assert_true(jsonr_arr_next(&it, &e));
	assert_int_equal(e.type, JSONR_STRING);
	assert_true(span_eq_cstr(e.str, "two"));
	assert_true(jsonr_arr_next(&it, &e));
	assert_int_equal(e.type, JSONR_OBJECT);
	assert_false(jsonr_arr_next(&it, &e));
	assert_true(jsonr_obj_get(root, "b\n", &v));
	assert_true(span_eq_cstr(v.str, "q\\\"\\\\"));
	buf out;
	buf_init(&out, 1024);
	assert_int_equal(jsonr_unescape(v.str, &out), CUSTOS_OK);
	assert_int_equal(buf_used(&out), 3);
	assert_memory_equal(buf_ptr(&out), "q\"\\", 3);
	assert_true(jsonr_obj_get(root, "c", &v));
	uint64_t n;
	assert_int_equal(jsonr_u64(v, 100, &n), CUSTOS_ERR_PARSE);
	assert_true(jsonr_obj_get(root, "e", &v));
	jsonr_iter_init(&it, v);
	span k;
	assert_false(jsonr_obj_next(&it, &k, &e));
	assert_true(jsonr_obj_get(root, "f", &v));
	jsonr_iter_init(&it, v);
	assert_false(jsonr_arr_next(&it, &e));
	assert_false(jsonr_obj_get(root, "zz", &v));
	assert_false(jsonr_obj_get(e, "a", &v)); /* not an object */
	/* A zeroed value iterates as empty. */
	jsonr_val zero = { .type = JSONR_OBJECT };
	jsonr_iter_init(&it, zero);
	assert_false(jsonr_obj_next(&it, &k, &e));
	zero.type = JSONR_ARRAY;
	jsonr_iter_init(&it, zero);
	assert_false(jsonr_arr_next(&it, &e));

	/* Numbers. */
	assert_int_equal(parse("123", &v), CUSTOS_OK);
	assert_int_equal(jsonr_u64(v, 1000, &n), CUSTOS_OK);
	assert_int_equal(n, 123);
	assert_int_equal(jsonr_u64(v, 100, &n), CUSTOS_ERR_PARSE);
	assert_int_equal(parse("1.0", &v), CUSTOS_OK);
	assert_int_equal(jsonr_u64(v, 1000, &n), CUSTOS_ERR_PARSE);
	assert_int_equal(parse("1e2", &v), CUSTOS_OK);
	assert_int_equal(jsonr_u64(v, 1000, &n), CUSTOS_ERR_PARSE);
	assert_int_equal(parse("\"1\"", &v), CUSTOS_OK);
	assert_int_equal(jsonr_u64(v, 1000, &n), CUSTOS_ERR_PARSE);
	buf_free(&out);
}

static void test_unescape(void **state)
{
	(void)state;
	buf out;
	buf_init(&out, 1024);
	span s = SPAN_LIT("a\\u00e9\\ud83d\\ude00\\n\\u20ac\xe2\x82\xac");
	assert_int_equal(jsonr_unescape(s, &out), CUSTOS_OK);
	const char *want = "a\xc3\xa9\xf0\x9f\x98\x80\n\xe2\x82\xac\xe2\x82\xac";
	assert_int_equal(buf_used(&out), strlen(want));
	assert_memory_equal(buf_ptr(&out), want, strlen(want));
	char c[8];
	assert_int_equal(jsonr_unescape_cstr(SPAN_LIT("gpt\\u002d4"), c, sizeof(c)), CUSTOS_OK);
	assert_string_equal(c, "gpt-4");
	assert_int_equal(jsonr_unescape_cstr(SPAN_LIT("12345678"), c, sizeof(c)), CUSTOS_ERR_LIMIT);
	assert_int_equal(jsonr_unescape_cstr(SPAN_LIT("1234567"), c, sizeof(c)), CUSTOS_OK);
	assert_int_equal(jsonr_unescape_cstr(SPAN_LIT("a\\u0000b"), c, sizeof(c)),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(jsonr_unescape_cstr(SPAN_LIT("\\ud800"), c, sizeof(c)), CUSTOS_ERR_PARSE);
	assert_int_equal(jsonr_unescape_cstr(SPAN_LIT(""), c, 0), CUSTOS_ERR_LIMIT);
	assert_true(jsonr_str_eq(SPAN_LIT("gpt\\u002d4"), "gpt-4"));
	assert_true(jsonr_str_eq(SPAN_LIT("gpt-4"), "gpt-4"));
	assert_false(jsonr_str_eq(SPAN_LIT("gpt-4"), "gpt-40"));
	assert_false(jsonr_str_eq(SPAN_LIT("gpt\\u002d40"), "gpt-4"));
	assert_true(jsonr_str_eq(SPAN_LIT("\\u00e9"), "\xc3\xa9"));
	assert_true(jsonr_str_eq(SPAN_LIT(""), ""));
	buf_free(&out);
}

static void test_unescaped_to_raw(void **state)
{
	(void)state;
	/* unescaped: "a" "é"(2) "😀"(4) "\n" "bc" -> offsets a=0 é=1..2 😀=3..6 \n=7 b=8 c=9 */
	span s = SPAN_LIT("a\\u00e9\\ud83d\\ude00\\nbc");
	span r;
	assert_int_equal(jsonr_unescaped_to_raw(s, 0, 1, &r), CUSTOS_OK);
	assert_true(span_eq_cstr(r, "a"));
	assert_int_equal(jsonr_unescaped_to_raw(s, 1, 2, &r), CUSTOS_OK);
	assert_true(span_eq_cstr(r, "\\u00e9"));
	/* Half of a character widens to the whole escape. */
	assert_int_equal(jsonr_unescaped_to_raw(s, 2, 1, &r), CUSTOS_OK);
	assert_true(span_eq_cstr(r, "\\u00e9"));
	assert_int_equal(jsonr_unescaped_to_raw(s, 4, 2, &r), CUSTOS_OK);
	assert_true(span_eq_cstr(r, "\\ud83d\\ude00"));
	assert_int_equal(jsonr_unescaped_to_raw(s, 7, 3, &r), CUSTOS_OK);
	assert_true(span_eq_cstr(r, "\\nbc"));
	assert_int_equal(jsonr_unescaped_to_raw(s, 0, 10, &r), CUSTOS_OK);
	assert_int_equal(r.len, s.len);
	assert_int_equal(jsonr_unescaped_to_raw(s, 9, 2, &r), CUSTOS_ERR_INVAL);
	assert_int_equal(jsonr_unescaped_to_raw(s, 10, 0, &r), CUSTOS_OK);
	assert_ptr_equal(r.ptr, s.ptr + s.len);
	assert_int_equal(jsonr_unescaped_to_raw(s, 11, 0, &r), CUSTOS_ERR_INVAL);
	assert_int_equal(jsonr_unescaped_to_raw(s, SIZE_MAX, 2, &r), CUSTOS_ERR_INVAL);
}

static void test_rewrite(void **state)
{
	(void)state;
	const char *d = "{\"content\":\"my card is 4111 1111 1111 1111, mail a@b.c\",\"k\":\"x\"}";
	jsonr_val root, v;
	assert_int_equal(parse(d, &root), CUSTOS_OK);
	assert_true(jsonr_obj_get(root, "content", &v));
	const char *card = strstr(v.str.ptr, "4111");
	const char *mail = strstr(v.str.ptr, "a@b.c");
	jsonr_edit ed[] = {
		{ span_of(card, 19), SPAN_LIT("[REDACTED:CARD]") },
		{ span_of(mail, 5), SPAN_LIT("\"quoted\"\\ \n\x01 \xff") },
	};
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(jsonr_rewrite(span_of(d, strlen(d)), ed, 2, &out), CUSTOS_OK);
	/* Still valid JSON and the new text reads back exactly (invalid UTF-8 -> U+FFFD). */
	jsonr_val r2, c2;
	assert_int_equal(jsonr_parse(buf_span(&out), NULL, &r2), CUSTOS_OK);
	assert_true(jsonr_obj_get(r2, "content", &c2));
	buf un;
	buf_init(&un, 4096);
	assert_int_equal(jsonr_unescape(c2.str, &un), CUSTOS_OK);
	const char *want = "my card is [REDACTED:CARD], mail \"quoted\"\\ \n\x01 \xef\xbf\xbd";
	assert_int_equal(buf_used(&un), strlen(want));
	assert_memory_equal(buf_ptr(&un), want, strlen(want));

	/* Invalid edits. */
	buf_reset(&out);
	jsonr_edit cross[] = { { span_of(mail, 8), SPAN_LIT("x") } }; /* over the closing quote */
	assert_int_equal(jsonr_rewrite(span_of(d, strlen(d)), cross, 1, &out), CUSTOS_ERR_INVAL);
	jsonr_edit outside[] = { { span_of(d, 1), SPAN_LIT("x") } }; /* the '{' */
	assert_int_equal(jsonr_rewrite(span_of(d, strlen(d)), outside, 1, &out), CUSTOS_ERR_INVAL);
	jsonr_edit unsorted[] = { ed[1], ed[0] };
	assert_int_equal(jsonr_rewrite(span_of(d, strlen(d)), unsorted, 2, &out), CUSTOS_ERR_INVAL);
	jsonr_edit foreign[] = { { SPAN_LIT("abc"), SPAN_LIT("x") } };
	assert_int_equal(jsonr_rewrite(span_of(d, strlen(d)), foreign, 1, &out), CUSTOS_ERR_INVAL);
	const char *esc = "[\"a\\u00e9b\"]";
	jsonr_edit mid[] = { { span_of(esc + 4, 3), SPAN_LIT("x") } }; /* inside \u00e9 */
	assert_int_equal(jsonr_rewrite(span_of(esc, strlen(esc)), mid, 1, &out), CUSTOS_ERR_INVAL);
	jsonr_edit whole[] = { { span_of(esc + 3, 6), SPAN_LIT("E") } };
	buf_reset(&out);
	assert_int_equal(jsonr_rewrite(span_of(esc, strlen(esc)), whole, 1, &out), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "[\"aEb\"]"));
	/* An empty string can take an insertion; no edits copies the document. */
	const char *empty = "[\"\"]";
	jsonr_edit ins[] = { { span_of(empty + 2, 0), SPAN_LIT("new") } };
	buf_reset(&out);
	assert_int_equal(jsonr_rewrite(span_of(empty, 4), ins, 1, &out), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "[\"new\"]"));
	buf_reset(&out);
	assert_int_equal(jsonr_rewrite(span_of(empty, 4), NULL, 0, &out), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "[\"\"]"));
	buf_free(&un);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_every_prefix_rejected),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_read),
		cmocka_unit_test(test_unescape),
		cmocka_unit_test(test_unescaped_to_raw),
		cmocka_unit_test(test_rewrite),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
