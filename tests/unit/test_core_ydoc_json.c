/* Unit tests for ydoc_parse_json: strict RFC 8259 into the ydoc tree, positions as ydoc_parse
 * gives them, every refusal with its line:col. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "custos/core.h"

/* Parses text (len bytes); on failure checks the one error's position and that its message
 * contains want. */
static void refused_n(const char *text, size_t len, unsigned line, unsigned col, const char *want)
{
	ydoc doc;
	diag_list d;
	diag_init(&d);
	if (ydoc_parse_json(&doc, "t.json", text, len, &d) == CUSTOS_OK) {
		ydoc_free(&doc);
		fail_msg("accepted: %.*s", (int)(len > 80 ? 80 : len), text);
	}
	assert_null(doc.root);
	assert_null(doc.file);
	assert_int_equal(d.errors, 1);
	if (d.items[0].line != line || d.items[0].col != col || !strstr(d.items[0].message, want) ||
	    strncmp(d.items[0].message, "JSON: ", 6) != 0) {
		diag_print(&d, stderr);
		fail_msg("for %.*s: want %u:%u '%s'", (int)(len > 80 ? 80 : len), text, line, col,
		         want);
	}
	assert_string_equal(d.items[0].file, "t.json");
	diag_free(&d);
}

static void refused(const char *text, unsigned line, unsigned col, const char *want)
{
	refused_n(text, strlen(text), line, col, want);
}

static ydoc_node *accepted(ydoc *doc, const char *text)
{
	diag_list d;
	diag_init(&d);
	if (ydoc_parse_json(doc, "t.json", text, strlen(text), &d) != CUSTOS_OK) {
		diag_print(&d, stderr);
		fail_msg("refused: %s", text);
	}
	assert_int_equal(d.errors, 0);
	diag_free(&d);
	return doc->root;
}

/* The tree and its marks are those ydoc_parse (libyaml) gives for the same text. */
static void same_tree(const ydoc_node *a, const ydoc_node *b)
{
	assert_int_equal(a->kind, b->kind);
	assert_int_equal(a->line, b->line);
	assert_int_equal(a->col, b->col);
	assert_int_equal(a->n, b->n);
	if (a->kind == YDOC_SCALAR) {
		assert_int_equal(a->len, b->len);
		assert_memory_equal(a->str, b->str, a->len + 1);
		assert_int_equal(a->quoted, b->quoted);
	}
	for (size_t i = 0; i < a->n; i++) {
		if (a->kind == YDOC_SEQ) {
			same_tree(a->items[i], b->items[i]);
		} else if (a->kind == YDOC_MAP) {
			same_tree(a->pairs[i].key, b->pairs[i].key);
			same_tree(a->pairs[i].value, b->pairs[i].value);
		}
	}
}

static void test_json_same_as_yaml(void **state)
{
	(void)state;
	static const char *const texts[] = {
		"{\"direction\":\"ingress\",\"principal\":\"alice\"}",
		("{\n  \"a\": [1, -2.5e3, true, false, null, \"x\"],\n\t\"b\": {\"c\": {}},\r\n"
		 "  \"d\": [], \"e\": \"\\u00e9t\\u00E9 \\\"q\\\" \\\\ \\/ \\n\"\n}"),
		"{\"\xc3\xa9t\xc3\xa9\": \"\xf0\x9f\x98\x80\", \"x\": \"true\", \"y\": true}",
		"[0, 1, -0, 0.5, 1E+2, 1e-2]",
		"\"top\"",
		"  42  ",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		ydoc yj, yy;
		diag_list d;
		diag_init(&d);
		ydoc_node *rj = accepted(&yj, texts[i]);
		assert_int_equal(ydoc_parse(&yy, "t.json", texts[i], strlen(texts[i]), &d),
		                 CUSTOS_OK);
		same_tree(rj, yy.root);
		ydoc_free(&yj);
		ydoc_free(&yy);
		diag_free(&d);
	}
}

/* Literals behave as plain YAML scalars, strings as quoted ones: ydoc_bool takes true, not
 * "true"; null is the word null. */
static void test_json_literals(void **state)
{
	(void)state;
	ydoc doc;
	diag_list d;
	diag_init(&d);
	ydoc_node *r = accepted(&doc, "{\"a\": true, \"b\": \"true\", \"c\": false, \"n\": null, "
	                              "\"u\": 1024, \"s\": \"64KiB\"}");
	bool b = false;
	assert_true(ydoc_bool(&doc, ydoc_map_get(r, "a"), &b, &d));
	assert_true(b);
	assert_false(ydoc_bool(&doc, ydoc_map_get(r, "b"), &b, &d));
	assert_true(ydoc_bool(&doc, ydoc_map_get(r, "c"), &b, &d));
	assert_false(b);
	ydoc_node *n = ydoc_map_get(r, "n");
	assert_false(n->quoted);
	assert_string_equal(n->str, "null");
	uint64_t v = 0;
	assert_true(ydoc_u64(&doc, ydoc_map_get(r, "u"), 0, 2048, &v, &d));
	assert_int_equal(v, 1024);
	assert_true(ydoc_size(&doc, ydoc_map_get(r, "s"), UINT64_MAX, &v, &d));
	assert_int_equal(v, 65536);
	assert_int_equal(d.errors, 1); /* "true" is a string */
	assert_int_equal(d.items[0].line, 1);
	assert_int_equal(d.items[0].col, 18);
	ydoc_free(&doc);
	diag_free(&d);
}

/* A key of 2000 characters is a key (libyaml's implicit keys stop at 1024). */
static void test_json_long_key(void **state)
{
	(void)state;
	size_t n = 2000;
	char *t = malloc(n + 16);
	t[0] = '{';
	t[1] = '"';
	memset(t + 2, 'k', n);
	memcpy(t + 2 + n, "\": 1}", 6);
	ydoc doc;
	diag_list d;
	diag_init(&d);
	assert_int_equal(ydoc_parse_json(&doc, "t.json", t, strlen(t), &d), CUSTOS_OK);
	assert_int_equal(doc.root->n, 1);
	assert_int_equal(doc.root->pairs[0].key->len, n);
	assert_int_equal(doc.root->pairs[0].value->col, n + 6);
	ydoc_free(&doc);
	diag_free(&d);
	free(t);
}

static void test_json_not_json(void **state)
{
	(void)state;
	refused("{direction: ingress}", 1, 2, "object keys must be strings in double quotes");
	refused("{\"direction\": ingress}", 1, 15, "'ingress' is not a JSON value");
	refused("{'direction': 'ingress'}", 1, 2, "object keys must be strings");
	refused("{\"a\": 'x'}", 1, 7, "double quotes, not single");
	refused("{\"a\": !!str x}", 1, 7, "unexpected character '!'");
	refused("{\"a\": &x 1}", 1, 7, "unexpected character '&'");
	refused("# c\n{}", 1, 1, "unexpected character '#'");
	refused("{} // c", 1, 4, "unexpected text after the JSON value");
	refused("{\"a\": .inf}", 1, 7, "'.inf' is not a JSON value");
	refused("{\"a\": NaN}", 1, 7, "'NaN' is not");
	refused("{\"a\": True}", 1, 7, "'True' is not");
	refused("{\"a\": nul}", 1, 7, "'nul' is not");
	refused("{\"a\": truex}", 1, 7, "'truex' is not");
	refused("direction: ingress", 1, 1, "'direction' is not");
	refused("---\n{}", 1, 1, "'---' is not");
	refused("{\"a\" 1}", 1, 6, "expected ':' after object key");
	refused("{\"a\": 1 \"b\": 2}", 1, 9, "expected ',' or '}'");
	refused("[1 2]", 1, 4, "expected ',' or ']'");
	refused("{\"a\": 1,}", 1, 9, "trailing ',' in an object");
	refused("[1,]", 1, 4, "trailing ',' in an array");
	refused("[,1]", 1, 2, "unexpected character ','");
	refused("{\"a\":1}}", 1, 8, "unexpected text after the JSON value");
	refused("{\"a\":1} {}", 1, 9, "unexpected text after");
	refused("{\"a\":1}\n\n  x", 3, 3, "unexpected text after");
	refused("{\"a\": ", 1, 7, "expected a value, found the end of the text");
	refused("{\"a\": 1", 1, 1, "unterminated object");
	refused("{\"a\"", 1, 5, "expected ':'");
	refused("[1, 2", 1, 1, "unterminated array");
	refused("{\"direction\": \"ingr", 1, 15, "unterminated string");
	refused("", 1, 1, "expected a value, found the end of the text");
	refused("  \n ", 2, 2, "expected a value");
	refused("\xef\xbb\xbf{}", 1, 1, "byte order mark");
	refused("\x0b{}", 1, 1, "unexpected byte 0x0B");
	refused("\xc3\xa9", 1, 1, "unexpected byte 0xC3");
	refused_n("{}\0", 3, 1, 3, "unexpected text after");
	refused_n("{\"a\":\"x\0\"}", 10, 1, 8, "control character U+0000");
}

static void test_json_numbers(void **state)
{
	(void)state;
	static const char *const good[] = { "0",
		                            "-0",
		                            "1",
		                            "-1",
		                            "10",
		                            "0.5",
		                            "1.0",
		                            "1e3",
		                            "1E3",
		                            "1e+3",
		                            "1e-3",
		                            "-0.0e0",
		                            "123456789012345678901234567890" };
	static const char *const bad[] = { "01",       "-01",  "+1",    ".5",  "5.",  "1.e3",
		                           "1e",       "1e+",  "-",     "--1", "0x1", "1_000",
		                           "Infinity", "-inf", "1.5.3", "00" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ydoc doc;
		ydoc_node *r = accepted(&doc, good[i]);
		assert_string_equal(r->str, good[i]);
		assert_false(r->quoted);
		ydoc_free(&doc);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char t[64];
		snprintf(t, sizeof(t), "[%s]", bad[i]);
		refused(t, 1, 2, "is not a JSON value");
	}
}

static void test_json_strings(void **state)
{
	(void)state;
	ydoc doc;
	ydoc_node *r =
	        accepted(&doc, "\"a\\u0041\\u00e9\\u20ac\\uD83D\\uDE00\\b\\f\\r\\t\\u001f\"");
	assert_string_equal(r->str, "aA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\b\f\r\t\x1f");
	assert_true(r->quoted);
	ydoc_free(&doc);
	refused("[\"a\\x41\"]", 1, 4, "bad escape '\\x'");
	refused("[\"a\\'\"]", 1, 4, "bad escape '\\''");
	refused("[\"\\u12\"]", 1, 3, "bad \\u escape");
	refused("[\"\\u12g4\"]", 1, 3, "bad \\u escape");
	refused("[\"\\", 1, 2, "unterminated string");
	refused("[\"x\\uD800\"]", 1, 4, "lone surrogate \\uD800");
	refused("[\"x\\uDBFF\\u0041\"]", 1, 4, "lone surrogate \\uDBFF");
	refused("[\"x\\uDC00\"]", 1, 4, "lone surrogate \\uDC00");
	refused("[\"\\uD800\\uD800\"]", 1, 3, "lone surrogate");
	refused("[\"ab\\u0000c\"]", 1, 5, "\\u0000 (NUL) is not allowed");
	refused("[\"a\tb\"]", 1, 4, "control character U+0009");
	refused("[\"a\nb\"]", 1, 4, "control character U+000A");
	refused("{\"a\x1f\": 1}", 1, 4, "control character U+001F");
	/* UTF-8: overlongs, surrogates, beyond U+10FFFF, cut sequences, stray continuations */
	refused("[\"\xc0\xaf\"]", 1, 3, "invalid UTF-8 in a string (byte 0xC0)");
	refused("[\"\xc1\xbf\"]", 1, 3, "byte 0xC1");
	refused("[\"\xe0\x80\xaf\"]", 1, 3, "byte 0xE0");
	refused("[\"\xf0\x80\x80\xaf\"]", 1, 3, "byte 0xF0");
	refused("[\"\xed\xa0\x80\"]", 1, 3, "byte 0xED");
	refused("[\"\xf4\x90\x80\x80\"]", 1, 3, "byte 0xF4");
	refused("[\"\xf5\x80\x80\x80\"]", 1, 3, "byte 0xF5");
	refused("[\"\x80\"]", 1, 3, "byte 0x80");
	refused("[\"\xc3\"]", 1, 3, "byte 0xC3");
	refused("[\"\xe2\x82\"]", 1, 3, "byte 0xE2");
	refused("[\"\xc3\xa9\xff\"]", 1, 4, "byte 0xFF");
	/* columns count characters, as libyaml does */
	refused("{\"\xc3\xa9\xe2\x82\xac\": x}", 1, 8, "'x' is not");
	refused("{\"a\":\r\n\t1,\r\"b\" 2}", 3, 5, "expected ':'");
}

static void test_json_duplicates(void **state)
{
	(void)state;
	refused("{\"a\": 1, \"b\": 2, \"a\": 3}", 1, 18,
	        "duplicate key 'a' (first at line 1, column 2)");
	/* escapes are decoded before comparing */
	refused("{\"a\": 1,\n \"\\u0061\": 2}", 2, 2, "duplicate key 'a' (first at line 1");
	refused("{\"x\": {\"k\": 1, \"k\": 1}}", 1, 16, "duplicate key 'k'");
	/* many keys: the repeat earliest in the text is named */
	size_t n = 3000;
	char *t = malloc(n * 16 + 64);
	size_t off = 0;
	t[off++] = '{';
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(t + off, 32, "%s\"k%zu\":0", i ? "," : "", i % 2000);
	t[off++] = '}';
	t[off] = '\0';
	ydoc doc;
	diag_list d;
	diag_init(&d);
	assert_int_equal(ydoc_parse_json(&doc, "t.json", t, off, &d), CUSTOS_ERR_PARSE);
	assert_int_equal(d.errors, 1);
	assert_non_null(
	        strstr(d.items[0].message, "duplicate key 'k0' (first at line 1, column 2)"));
	diag_free(&d);
	free(t);
	/* distinct keys sharing a prefix, or differing in length only, are fine */
	ydoc_node *r = accepted(&doc, "{\"a\": 1, \"ab\": 2, \"b\": 3, \"\": 4, \"a \": 5}");
	assert_int_equal(r->n, 5);
	ydoc_free(&doc);
}

/* Nesting: YDOC_MAX_DEPTH levels below the root, as ydoc_parse allows; one more refused. */
static void test_json_depth(void **state)
{
	(void)state;
	char t[512];
	int ok = YDOC_MAX_DEPTH; /* arrays at depth 0..ok-1, the scalar at depth ok */
	memset(t, '[', (size_t)ok);
	t[ok] = '1';
	memset(t + ok + 1, ']', (size_t)ok);
	t[2 * ok + 1] = '\0';
	ydoc doc;
	(void)accepted(&doc, t);
	ydoc_free(&doc);
	diag_list d;
	diag_init(&d);
	assert_int_equal(ydoc_parse(&doc, "t.json", t, strlen(t), &d), CUSTOS_OK);
	ydoc_free(&doc);
	memset(t, '[', (size_t)ok + 1);
	t[ok + 1] = '1';
	memset(t + ok + 2, ']', (size_t)ok + 1);
	t[2 * ok + 3] = '\0';
	assert_int_not_equal(ydoc_parse(&doc, "t.json", t, strlen(t), &d), CUSTOS_OK);
	diag_free(&d);
	refused(t, 1, (unsigned)ok + 2, "nested too deeply");
	/* deep enough to hurt a recursive parser without a bound: refused at the bound */
	size_t big = 100000;
	char *b = malloc(big);
	memset(b, '[', big);
	refused_n(b, big, 1, YDOC_MAX_DEPTH + 2, "nested too deeply");
	memset(b, '{', big);
	refused_n(b, big, 1, 2, "object keys must be strings");
	for (size_t i = 0; i < big / 5; i++)
		memcpy(b + 5 * i, "{\"a\":", 5);
	refused_n(b, big / 5 * 5, 1, 5 * (YDOC_MAX_DEPTH + 1) + 1, "nested too deeply");
	free(b);
}

/* ydoc_parse (YAML) refuses a key with a NUL ("\0" in double quotes) as ydoc_parse_json refuses
 * "\u0000": keys are compared as C strings, so "direction\0x" read as direction. */
static void test_yaml_nul_key(void **state)
{
	(void)state;
	static const char t[] = "{\"a\": 1, \"direction\\0x\": ingress}";
	ydoc doc;
	diag_list d;
	diag_init(&d);
	assert_int_equal(ydoc_parse(&doc, "t.yaml", t, sizeof(t) - 1, &d), CUSTOS_ERR_PARSE);
	assert_null(doc.root);
	assert_int_equal(d.errors, 1);
	assert_int_equal(d.items[0].line, 1);
	assert_int_equal(d.items[0].col, 10);
	assert_string_equal(d.items[0].message, "mapping key contains a NUL byte");
	diag_free(&d);
	/* a NUL in a value stays what ydoc_str refuses where a string is read */
	static const char v[] = "{\"a\": \"x\\0y\"}";
	diag_init(&d);
	assert_int_equal(ydoc_parse(&doc, "t.yaml", v, sizeof(v) - 1, &d), CUSTOS_OK);
	const char *s;
	assert_false(ydoc_str(&doc, ydoc_map_get(doc.root, "a"), &s, &d));
	assert_int_equal(d.errors, 1);
	ydoc_free(&doc);
	diag_free(&d);
	refused("{\"direction\\u0000x\": \"ingress\"}", 1, 12, "\\u0000 (NUL) is not allowed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_same_as_yaml), cmocka_unit_test(test_json_literals),
		cmocka_unit_test(test_json_long_key),     cmocka_unit_test(test_json_not_json),
		cmocka_unit_test(test_json_numbers),      cmocka_unit_test(test_json_strings),
		cmocka_unit_test(test_json_duplicates),   cmocka_unit_test(test_json_depth),
		cmocka_unit_test(test_yaml_nul_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
