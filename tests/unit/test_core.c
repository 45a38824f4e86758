/* Unit tests for core: errors, buffers, views, numbers, files, JSON writer, time, YAML tree. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "custos/core.h"

static void test_err_idiom(void **state)
{
	(void)state;
	assert_int_equal(err_set(CUSTOS_ERR_LIMIT, "too big: %d", 7), CUSTOS_ERR_LIMIT);
	assert_string_equal(err_msg(), "too big: 7");
	assert_int_equal(err_wrap(CUSTOS_ERR_LIMIT, "loading %s", "x"), CUSTOS_ERR_LIMIT);
	assert_string_equal(err_msg(), "loading x: too big: 7");
	assert_string_equal(custos_strerror(CUSTOS_ERR_PARSE), "parse error");
	assert_string_equal(custos_strerror((custos_err)999), "unknown error");
	err_clear();
	assert_string_equal(err_msg(), "");
}

static void test_buf_limits(void **state)
{
	(void)state;
	buf b;
	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "0123456789", 10), CUSTOS_OK);
	assert_int_equal(buf_append(&b, "x", 1), CUSTOS_ERR_LIMIT);
	assert_int_equal(buf_used(&b), 10);
	buf_consume(&b, 4);
	assert_int_equal(buf_used(&b), 6);
	assert_memory_equal(buf_ptr(&b), "456789", 6);
	/* Consumed bytes are reusable space: the cap is on bytes held, not on bytes ever. */
	assert_int_equal(buf_append(&b, "abcd", 4), CUSTOS_OK);
	assert_memory_equal(buf_ptr(&b), "456789abcd", 10);
	const char *s = NULL;
	assert_int_equal(buf_cstr(&b, &s), CUSTOS_OK);
	assert_string_equal(s, "456789abcd");
	assert_int_equal(buf_printf(&b, "%d", 1), CUSTOS_ERR_LIMIT);
	buf_reset(&b);
	assert_int_equal(buf_printf(&b, "%s-%d", "ab", 42), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&b), "ab-42"));
	/* A huge request fails before allocating. */
	assert_int_equal(buf_reserve(&b, SIZE_MAX - 2), CUSTOS_ERR_LIMIT);
	buf_free(&b);

	buf big;
	buf_init(&big, 1 << 20);
	char line[1000];
	memset(line, 'q', sizeof(line));
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_append(&big, line, sizeof(line)), CUSTOS_OK);
	assert_int_equal(buf_used(&big), 1000000);
	static char over[100000]; /* the bytes of a refused append are never read */
	assert_int_equal(buf_append(&big, over, sizeof(over)), CUSTOS_ERR_LIMIT);
	buf_free_secret(&big);
}

static void test_span(void **state)
{
	(void)state;
	assert_true(span_case_eq(SPAN_LIT("Content-Length"), SPAN_LIT("content-length")));
	assert_false(span_case_eq(SPAN_LIT("abc"), SPAN_LIT("abd")));
	assert_true(span_starts_with(SPAN_LIT("/v1/chat"), SPAN_LIT("/v1/")));
	assert_false(span_starts_with(SPAN_LIT("/v"), SPAN_LIT("/v1/")));
	span t = span_trim(SPAN_LIT(" \t x y \t"));
	assert_true(span_eq_cstr(t, "x y"));
	char out[4];
	assert_int_equal(span_copy_cstr(SPAN_LIT("abc"), out, sizeof(out)), CUSTOS_OK);
	assert_string_equal(out, "abc");
	assert_int_equal(span_copy_cstr(SPAN_LIT("abcd"), out, sizeof(out)), CUSTOS_ERR_LIMIT);
	char *d = span_dup(SPAN_LIT("xyz"));
	assert_string_equal(d, "xyz");
	free(d);
}

static void test_numbers(void **state)
{
	(void)state;
	uint64_t v;
	int64_t i;
	assert_int_equal(num_parse_u64(SPAN_LIT("18446744073709551615"), 0, UINT64_MAX, &v),
	                 CUSTOS_OK);
	assert_true(v == UINT64_MAX);
	assert_int_equal(num_parse_u64(SPAN_LIT("18446744073709551616"), 0, UINT64_MAX, &v),
	                 CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_u64(SPAN_LIT(""), 0, 10, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_u64(SPAN_LIT("-1"), 0, 10, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_u64(SPAN_LIT("+1"), 0, 10, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_u64(SPAN_LIT("12x"), 0, 100, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_u64(SPAN_LIT(" 1"), 0, 100, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_u64(SPAN_LIT("11"), 0, 10, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_i64(SPAN_LIT("-9223372036854775808"), INT64_MIN, INT64_MAX, &i),
	                 CUSTOS_OK);
	assert_true(i == INT64_MIN);
	assert_int_equal(num_parse_i64(SPAN_LIT("-9223372036854775809"), INT64_MIN, INT64_MAX, &i),
	                 CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_i64(SPAN_LIT("-5"), -10, 10, &i), CUSTOS_OK);
	assert_int_equal(i, -5);

	assert_int_equal(num_parse_size(SPAN_LIT("10MiB"), UINT64_MAX, &v), CUSTOS_OK);
	assert_int_equal(v, 10 * 1024 * 1024);
	assert_int_equal(num_parse_size(SPAN_LIT("1kB"), UINT64_MAX, &v), CUSTOS_OK);
	assert_int_equal(v, 1000);
	assert_int_equal(num_parse_size(SPAN_LIT("512"), UINT64_MAX, &v), CUSTOS_OK);
	assert_int_equal(v, 512);
	assert_int_equal(num_parse_size(SPAN_LIT("1 GiB"), UINT64_MAX, &v), CUSTOS_OK);
	assert_int_equal(num_parse_size(SPAN_LIT("2XB"), UINT64_MAX, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_size(SPAN_LIT("MiB"), UINT64_MAX, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_size(SPAN_LIT("2MiB"), 1024, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_size(SPAN_LIT("99999999999999999TiB"), UINT64_MAX, &v),
	                 CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_duration(SPAN_LIT("250ms"), UINT64_MAX, &v), CUSTOS_OK);
	assert_int_equal(v, 250000000);
	assert_int_equal(num_parse_duration(SPAN_LIT("2h"), UINT64_MAX, &v), CUSTOS_OK);
	assert_true(v == 7200ull * 1000000000ull);
	assert_int_equal(num_parse_duration(SPAN_LIT("10"), UINT64_MAX, &v), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_duration(SPAN_LIT("1.5s"), UINT64_MAX, &v), CUSTOS_ERR_INVAL);
	/* A limit is written back in human units, never as raw nanoseconds or bytes. */
	assert_int_equal(num_parse_duration(SPAN_LIT("8d"), 7 * 86400ull * 1000000000ull, &v),
	                 CUSTOS_ERR_INVAL);
	assert_string_equal(err_msg(), "'8d' exceeds the maximum duration of 7d");
	assert_int_equal(num_parse_size(SPAN_LIT("2MiB"), 1024, &v), CUSTOS_ERR_INVAL);
	assert_string_equal(err_msg(), "'2MiB' exceeds the maximum size of 1KiB");
	char f[32];
	num_format_duration(1500 * 1000000ull, f, sizeof(f));
	assert_string_equal(f, "1500ms");
	num_format_duration(90 * 1000000000ull, f, sizeof(f));
	assert_string_equal(f, "90s");
	num_format_duration(3600 * 1000000000ull, f, sizeof(f));
	assert_string_equal(f, "1h");
	num_format_duration(0, f, sizeof(f));
	assert_string_equal(f, "0s");
	num_format_size(1000000, f, sizeof(f));
	assert_string_equal(f, "1MB");
	num_format_size(64ull << 20, f, sizeof(f));
	assert_string_equal(f, "64MiB");
	num_format_size(1023, f, sizeof(f));
	assert_string_equal(f, "1023B");

	uint8_t h[2];
	char hex[5];
	assert_int_equal(num_parse_hex(SPAN_LIT("aB0f"), h, 2), CUSTOS_OK);
	assert_int_equal(h[0], 0xab);
	assert_int_equal(h[1], 0x0f);
	num_hex(h, 2, hex);
	assert_string_equal(hex, "ab0f");
	assert_int_equal(num_parse_hex(SPAN_LIT("zz00"), h, 2), CUSTOS_ERR_INVAL);
	assert_int_equal(num_parse_hex(SPAN_LIT("abc"), h, 2), CUSTOS_ERR_INVAL);
}

static const char *json_of(json_writer *w, buf *b)
{
	const char *s = NULL;
	assert_int_equal(json_finish(w), CUSTOS_OK);
	assert_int_equal(buf_cstr(b, &s), CUSTOS_OK);
	return s;
}

static void test_json_writer(void **state)
{
	(void)state;
	buf b;
	json_writer w;

	buf_init(&b, 4096);
	json_init(&w, &b);
	json_obj_begin(&w);
	json_kv_cstr(&w, "a", "x\"y\\z\n\t\x01");
	json_kv_u64(&w, "n", 18446744073709551615ull);
	json_kv_i64(&w, "m", -3);
	json_key(&w, "list");
	json_arr_begin(&w);
	json_bool(&w, true);
	json_null(&w);
	json_double(&w, 0.5);
	json_double(&w, 1.0 / 0.0);
	json_arr_end(&w);
	json_kv_cstr(&w, "nil", NULL);
	json_obj_end(&w);
	assert_string_equal(json_of(&w, &b), "{\"a\":\"x\\\"y\\\\z\\n\\t\\u0001\",\"n\":"
	                                     "18446744073709551615,\"m\":-3,\"list\":[true,null,"
	                                     "0.5,null],\"nil\":null}");

	/* UTF-8: valid passes through, invalid bytes become U+FFFD. */
	buf_reset(&b);
	json_init(&w, &b);
	json_str(&w, SPAN_LIT("h\xc3\xa9 \xf0\x9f\x98\x80 \xff \xc0\xaf \xed\xa0\x80"));
	assert_string_equal(json_of(&w, &b), "\"h\xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbd "
	                                     "\xef\xbf\xbd\xef\xbf\xbd "
	                                     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");

	/* The span of a buf never written is (NULL, 0): escaped as nothing, and no NULL + 0
	 * (undefined behaviour, which clang's -fsanitize=undefined stops on). */
	buf none;
	buf_init(&none, 16);
	buf_reset(&b);
	assert_null(buf_span(&none).ptr);
	assert_int_equal(json_escape(&b, buf_span(&none)), CUSTOS_OK);
	assert_int_equal(buf_used(&b), 0);
	buf_free(&none);

	/* Unbalanced nesting is an error, not silent garbage. */
	buf_reset(&b);
	json_init(&w, &b);
	json_obj_begin(&w);
	assert_int_equal(json_finish(&w), CUSTOS_ERR_INVAL);
	buf_reset(&b);
	json_init(&w, &b);
	json_arr_end(&w);
	assert_int_equal(json_finish(&w), CUSTOS_ERR_INVAL);

	/* Depth limit. */
	buf_reset(&b);
	json_init(&w, &b);
	for (int i = 0; i < JSON_MAX_DEPTH + 1; i++)
		json_arr_begin(&w);
	assert_int_equal(json_finish(&w), CUSTOS_ERR_LIMIT);
	buf_free(&b);

	/* Output limit sticks. */
	buf_init(&b, 8);
	json_init(&w, &b);
	json_str(&w, SPAN_LIT("0123456789"));
	assert_int_equal(json_finish(&w), CUSTOS_ERR_LIMIT);
	buf_free(&b);
}

static void test_time(void **state)
{
	(void)state;
	char out[TM_RFC3339_LEN];
	uint64_t ns;

	assert_string_equal(tm_rfc3339(1795744511123456789ull, out),
	                    "2026-11-27T01:55:11.123456789Z");
	assert_int_equal(tm_parse_rfc3339(span_cstr(out), &ns), CUSTOS_OK);
	assert_true(ns == 1795744511123456789ull);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-11-27T02:55:11+01:00"), &ns), CUSTOS_OK);
	assert_true(ns == 1795744511000000000ull);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-11-27 01:55:11Z"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-13-27T01:55:11Z"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-11-27T01:55:11"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-11-27T01:55:11.Z"), &ns),
	                 CUSTOS_ERR_INVAL);
	/* a day past the month's end is refused, not carried into the next month */
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-02-29T10:00:00Z"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2026-04-31T10:00:00Z"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2100-02-29T10:00:00Z"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2028-02-29T10:00:00Z"), &ns), CUSTOS_OK);
	assert_true(ns == 1835431200000000000ull);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2000-02-29T00:00:00Z"), &ns), CUSTOS_OK);
	/* the last instant 64-bit nanoseconds hold, and none after it (no wrap to the past) */
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2554-07-21T23:34:33.709551615Z"), &ns),
	                 CUSTOS_OK);
	assert_true(ns == UINT64_MAX);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2554-07-21T23:34:33.709551616Z"), &ns),
	                 CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("2554-07-21T23:34:34Z"), &ns), CUSTOS_ERR_INVAL);
	assert_int_equal(tm_parse_rfc3339(SPAN_LIT("9999-12-31T23:59:59Z"), &ns), CUSTOS_ERR_INVAL);
	uint64_t a = tm_mono_ns(), b2 = tm_mono_ns();
	assert_true(b2 >= a);
}

static char tmpdir[64];

static int setup_tmp(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/custos-test-core-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static void test_file_load_modes(void **state)
{
	(void)state;
	char p[128];
	buf b;

	snprintf(p, sizeof(p), "%s/f.yaml", tmpdir);
	write_file(p, "hello", 0644);
	buf_init(&b, 100);
	assert_int_equal(file_load(p, FILE_CONFIG, 100, &b), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&b), "hello"));
	buf_reset(&b);
	/* Exactly at the limit is fine; one byte over is not. */
	assert_int_equal(file_load(p, FILE_CONFIG, 5, &b), CUSTOS_OK);
	buf_reset(&b);
	assert_int_equal(file_load(p, FILE_CONFIG, 4, &b), CUSTOS_ERR_LIMIT);
	buf_reset(&b);
	assert_int_equal(chmod(p, 0664), 0);
	assert_int_equal(file_load(p, FILE_CONFIG, 100, &b), CUSTOS_ERR_PERM);
	assert_non_null(strstr(err_msg(), "writable by group or others"));
	assert_int_equal(chmod(p, 0646), 0);
	assert_int_equal(file_load(p, FILE_CONFIG, 100, &b), CUSTOS_ERR_PERM);
	assert_int_equal(chmod(p, 0644), 0);
	assert_int_equal(file_load(p, FILE_SECRET, 100, &b), CUSTOS_ERR_PERM);
	assert_int_equal(chmod(p, 0600), 0);
	assert_int_equal(file_load(p, FILE_SECRET, 100, &b), CUSTOS_OK);
	buf_reset(&b);
	assert_int_equal(file_load("/nonexistent/x", FILE_ANY, 100, &b), CUSTOS_ERR_SYS);
	assert_int_equal(file_load(tmpdir, FILE_ANY, 100, &b), CUSTOS_ERR_INVAL);
	/* A FIFO is refused at once: opening it must not wait for a writer. */
	snprintf(p, sizeof(p), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(p, 0644), 0);
	alarm(20); /* a hang fails here, not at the suite's timeout */
	assert_int_equal(file_load(p, FILE_CONFIG, 100, &b), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "not a regular file"));
	alarm(0);
	unlink(p);
	buf_free(&b);

	snprintf(p, sizeof(p), "%s/atomic", tmpdir);
	assert_int_equal(file_write_atomic(p, "data", 4, 0600), CUSTOS_OK);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 4);
}

static size_t parse_errors(const char *text, diag_list *d, ydoc *doc)
{
	diag_init(d);
	custos_err e = ydoc_parse(doc, "t.yaml", text, strlen(text), d);
	if (e != CUSTOS_OK)
		assert_true(d->errors > 0);
	return d->errors;
}

static void test_ydoc_tree(void **state)
{
	(void)state;
	ydoc doc;
	diag_list d;

	assert_int_equal(parse_errors("a: 1\nb:\n  - x\n  - 'y'\nc: {k: v}\n", &d, &doc), 0);
	assert_int_equal(doc.root->kind, YDOC_MAP);
	assert_int_equal(doc.root->n, 3);
	ydoc_node *b = ydoc_map_get(doc.root, "b");
	assert_non_null(b);
	assert_int_equal(b->kind, YDOC_SEQ);
	assert_int_equal(b->items[1]->line, 4);
	assert_int_equal(b->items[1]->col, 5);
	assert_true(b->items[1]->quoted);
	assert_false(b->items[0]->quoted);
	uint64_t v;
	assert_true(ydoc_u64(&doc, ydoc_map_get(doc.root, "a"), 0, 10, &v, &d));
	assert_int_equal(v, 1);
	assert_false(ydoc_u64(&doc, ydoc_map_get(doc.root, "a"), 2, 10, &v, &d));
	assert_int_equal(d.errors, 1);
	assert_int_equal(d.items[0].line, 1);
	assert_int_equal(d.items[0].col, 4);
	ydoc_free(&doc);
	diag_free(&d);
}

/* An empty text (NULL, 0: what an empty buf gives) parses to no root; libyaml asserts on a NULL
 * input pointer, so ydoc_parse must never hand it one. */
static void test_ydoc_empty(void **state)
{
	(void)state;
	ydoc doc;
	diag_list d;

	diag_init(&d);
	assert_int_equal(ydoc_parse(&doc, "e.yaml", NULL, 0, &d), CUSTOS_OK);
	assert_null(doc.root);
	assert_int_equal(d.errors, 0);
	ydoc_free(&doc);
	assert_int_equal(ydoc_parse(&doc, "e.yaml", "", 0, &d), CUSTOS_OK);
	assert_null(doc.root);
	ydoc_free(&doc);
	diag_free(&d);
}

/* JSON's surrogate pair escapes in double-quoted scalars (libyaml refuses each half): the
 * character they stand for, positions after them as in the file; elsewhere (single-quoted, plain)
 * the text as written; a lone half, or a pair split by other text, still refused. */
static void test_ydoc_surrogate_pairs(void **state)
{
	(void)state;
	ydoc doc;
	diag_list d;

	assert_int_equal(
	        parse_errors("a: {x: \"x\\uD83D\\uDE00y\\ud83d\\ude01\", b: 'q\\uD83D\\uDE00', "
	                     "z: 1}\nc: \"\\\\uD83D\\\\ \\uD800\\uDC00 \\\"\\uDBFF\\uDFFF\"\n"
	                     "g: plain\\uD83D\\uDE00\n",
	                     &d, &doc),
	        0);
	ydoc_node *a = ydoc_map_get(doc.root, "a");
	assert_string_equal(ydoc_map_get(a, "x")->str, "x\xf0\x9f\x98\x80y\xf0\x9f\x98\x81");
	ydoc_node *b = ydoc_map_get(a, "b");
	assert_string_equal(b->str, "q\\uD83D\\uDE00");
	assert_int_equal(b->col, 41); /* the key b at column 38, as in the file */
	assert_int_equal(a->pairs[1].key->col, 38);
	assert_int_equal(a->pairs[2].key->col, 58);
	assert_string_equal(ydoc_map_get(doc.root, "c")->str,
	                    "\\uD83D\\ \xf0\x90\x80\x80 \"\xf4\x8f\xbf\xbf");
	assert_string_equal(ydoc_map_get(doc.root, "g")->str, "plain\\uD83D\\uDE00");
	ydoc_free(&doc);
	diag_free(&d);
	/* An error after a rewritten pair points where the file has it. */
	assert_true(parse_errors("a: \"\\uD83D\\uDE00\\uD83D\\uDE00\" x\n", &d, &doc) > 0);
	assert_int_equal(d.items[0].line, 1);
	assert_int_equal(d.items[0].col, 31);
	ydoc_free(&doc);
	diag_free(&d);
	static const char *const bad[] = { "a: \"\\uDE00\"\n", "a: \"\\uD83D\"\n",
		                           "a: \"\\uD83D x\\uDE00\"\n", "a: \"\\uD83D\\u0041\"\n" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		assert_true(parse_errors(bad[i], &d, &doc) > 0);
		assert_non_null(strstr(d.items[0].message, "invalid Unicode character escape"));
		assert_int_equal(d.items[0].line, 1);
		ydoc_free(&doc);
		diag_free(&d);
	}
	/* More quoted scalars with pairs than the bound: refused, saying why. */
	char many[(YDOC_MAX_PAIR_SCALARS + 2) * 24];
	size_t n = 0;
	for (int i = 0; i < YDOC_MAX_PAIR_SCALARS + 2; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "k%d: \"\\uD83D\\uDE00\"\n", i);
	assert_true(parse_errors(many, &d, &doc) > 0);
	assert_non_null(strstr(d.items[0].message, "surrogate pairs to rewrite"));
	ydoc_free(&doc);
	diag_free(&d);
	/* Up to the bound they parse. */
	n = 0;
	for (int i = 0; i < YDOC_MAX_PAIR_SCALARS; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "k%d: \"\\uD83D\\uDE00\"\n", i);
	assert_int_equal(parse_errors(many, &d, &doc), 0);
	assert_int_equal(doc.root->n, YDOC_MAX_PAIR_SCALARS);
	ydoc_free(&doc);
	diag_free(&d);
}

static void test_ydoc_refusals(void **state)
{
	(void)state;
	ydoc doc;
	diag_list d;

	/* Aliases (billion laughs), anchors, merge keys, tags and multiple documents. */
	assert_true(parse_errors("a: &x 1\nb: *x\n", &d, &doc) > 0);
	assert_non_null(strstr(d.items[0].message, "anchors"));
	ydoc_free(&doc);
	diag_free(&d);
	assert_true(parse_errors("a: {<<: {b: 1}}\n", &d, &doc) > 0);
	ydoc_free(&doc);
	diag_free(&d);
	assert_true(parse_errors("a: !!binary aGk=\n", &d, &doc) > 0);
	ydoc_free(&doc);
	diag_free(&d);
	assert_true(parse_errors("a: 1\n---\nb: 2\n", &d, &doc) > 0);
	ydoc_free(&doc);
	diag_free(&d);
	/* Syntax error carries a position. */
	assert_true(parse_errors("a: [1, 2\nb: 3\n", &d, &doc) > 0);
	assert_true(d.items[0].line > 0);
	ydoc_free(&doc);
	diag_free(&d);
	/* Bytes the reader refuses (NUL, control, invalid UTF-8) at their own line:col. */
	static const char nul[] = "a: 1\nb: \"x\0y\"\n";
	diag_init(&d);
	assert_int_not_equal(ydoc_parse(&doc, "t.yaml", nul, sizeof(nul) - 1, &d), CUSTOS_OK);
	assert_int_equal(d.items[0].line, 2);
	assert_int_equal(d.items[0].col, 6);
	assert_non_null(strstr(d.items[0].message, "(byte 0x00)"));
	ydoc_free(&doc);
	diag_free(&d);
	/* UTF-16 (a byte order mark libyaml would follow) is refused at 1:1; a UTF-8 BOM is
	 * skipped as before */
	static const char u16le[] = "\xff\xfe"
	                            "a\0:\0 \0001\0\n\0";
	static const char u16be[] = "\xfe\xff\0a\0:\0 \0001\0\n";
	const char *const u16[] = { u16le, u16be };
	const size_t u16n[] = { sizeof(u16le) - 1, sizeof(u16be) - 1 };
	for (int i = 0; i < 2; i++) {
		diag_init(&d);
		assert_int_not_equal(ydoc_parse(&doc, "t.yaml", u16[i], u16n[i], &d), CUSTOS_OK);
		assert_int_equal(d.items[0].line, 1);
		assert_int_equal(d.items[0].col, 1);
		assert_non_null(strstr(d.items[0].message, "UTF-16"));
		ydoc_free(&doc);
		diag_free(&d);
	}
	static const char bom8[] = "\xef\xbb\xbf"
	                           "a: 1\n";
	diag_init(&d);
	assert_int_equal(ydoc_parse(&doc, "t.yaml", bom8, sizeof(bom8) - 1, &d), CUSTOS_OK);
	assert_non_null(ydoc_map_get(doc.root, "a"));
	ydoc_free(&doc);
	diag_free(&d);
	static const char bad8[] = "a: 1\nb: \"\xc3\xa9\xe9x\"\n";
	diag_init(&d);
	assert_int_not_equal(ydoc_parse(&doc, "t.yaml", bad8, sizeof(bad8) - 1, &d), CUSTOS_OK);
	assert_int_equal(d.items[0].line, 2);
	assert_int_equal(d.items[0].col, 6); /* "é" is one column, the bad 0xE9 the next */
	assert_non_null(strstr(d.items[0].message, "(byte 0xE9)"));
	ydoc_free(&doc);
	diag_free(&d);
	/* Depth bound. */
	char deep[YDOC_MAX_DEPTH * 2 + 8];
	size_t n = 0;
	for (int i = 0; i < YDOC_MAX_DEPTH + 2; i++)
		deep[n++] = '[';
	deep[n] = '\0';
	assert_true(parse_errors(deep, &d, &doc) > 0);
	ydoc_free(&doc);
	diag_free(&d);
}

static void test_ydoc_schema(void **state)
{
	(void)state;
	static const char *const keys[] = { "listeners", "models", "audit" };
	static const char *const modes[] = { "sync", "batch" };
	ydoc doc;
	diag_list d;

	assert_int_equal(parse_errors("listners: []\nmodels: []\nmodels: []\n", &d, &doc), 0);
	assert_false(ydoc_check_keys(&doc, doc.root, keys, 3, &d));
	assert_int_equal(d.errors, 2);
	assert_non_null(strstr(d.items[0].message, "unknown key 'listners'"));
	assert_string_equal(d.items[0].hint, "did you mean 'listeners'?");
	assert_int_equal(d.items[0].line, 1);
	assert_int_equal(d.items[0].col, 1);
	assert_non_null(strstr(d.items[1].message, "duplicate key 'models'"));
	assert_int_equal(d.items[1].line, 3);
	ydoc_free(&doc);
	diag_free(&d);

	assert_int_equal(parse_errors("mode: bach\non: yes\nsz: 10XB\nt: 5\ns: [1]\n", &d, &doc),
	                 0);
	int mode = -1;
	bool flag;
	uint64_t v;
	const char *s;
	assert_false(ydoc_enum(&doc, ydoc_map_get(doc.root, "mode"), modes, 2, &mode, &d));
	assert_string_equal(d.items[0].hint, "did you mean 'batch'?");
	assert_false(ydoc_bool(&doc, ydoc_map_get(doc.root, "on"), &flag, &d));
	assert_false(ydoc_size(&doc, ydoc_map_get(doc.root, "sz"), UINT64_MAX, &v, &d));
	assert_false(ydoc_duration(&doc, ydoc_map_get(doc.root, "t"), UINT64_MAX, &v, &d));
	assert_false(ydoc_str(&doc, ydoc_map_get(doc.root, "s"), &s, &d));
	assert_false(ydoc_require(&doc, doc.root, "missing", &d));
	assert_int_equal(d.errors, 6);
	FILE *devnull = fopen("/dev/null", "w");
	diag_print(&d, devnull);
	fclose(devnull);
	ydoc_free(&doc);
	diag_free(&d);
}

static void test_diag_suggest(void **state)
{
	(void)state;
	static const char *const words[] = { "payment_card", "email", "phone" };
	assert_string_equal(diag_suggest(SPAN_LIT("emial"), words, 3), "email");
	assert_null(diag_suggest(SPAN_LIT("zzzzzz"), words, 3));
}

static void test_notify(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/notify.sock", tmpdir);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd != -1);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_send("READY=1"), CUSTOS_OK); /* no systemd: nothing to do */
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(notify_send("READY=1\nSTATUS=serving"), CUSTOS_OK);
	char got[64] = { 0 };
	assert_int_equal(recv(fd, got, sizeof(got) - 1, 0), 22);
	assert_string_equal(got, "READY=1\nSTATUS=serving");
	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(notify_send("READY=1"), CUSTOS_ERR_INVAL);
	unsetenv("NOTIFY_SOCKET");
	close(fd);

	setenv("WATCHDOG_USEC", "5000000", 1);
	unsetenv("WATCHDOG_PID");
	assert_true(notify_watchdog_usec() == 5000000);
	char pid[32];
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_true(notify_watchdog_usec() == 5000000);
	/* Another process's (the parent's): the supervisor hands the watchdog over to the proxy
	 * by setting WATCHDOG_PID to the proxy's pid (cli/cmd_up.c), never by sharing it. */
	snprintf(pid, sizeof(pid), "%ld", (long)getppid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_true(notify_watchdog_usec() == 0);
	if (getppid() != 1) {
		setenv("WATCHDOG_PID", "1", 1); /* another process's watchdog */
		assert_true(notify_watchdog_usec() == 0);
	}
	setenv("WATCHDOG_PID", "0", 1);
	assert_true(notify_watchdog_usec() == 0);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

static void test_log_file_reopen(void **state)
{
	(void)state;
	char p1[128], p2[128];
	buf b;
	snprintf(p1, sizeof(p1), "%s/custos.log", tmpdir);
	snprintf(p2, sizeof(p2), "%s/custos.log.1", tmpdir);

	log_setup(LOG_LVL_INFO, LOG_FMT_AUTO);
	assert_int_equal(log_open_file(p1), CUSTOS_OK);
	log_info("first %d", 1);
	log_debug("not shown at info");
	assert_int_equal(rename(p1, p2), 0); /* what logrotate does */
	log_info("second");                  /* still goes to the moved file */
	assert_int_equal(log_reopen(), CUSTOS_OK);
	log_warn("third \"quoted\"");
	assert_int_equal(log_open_file(NULL), CUSTOS_OK);
	assert_int_equal(log_reopen(), CUSTOS_OK); /* stderr: nothing to reopen */

	buf_init(&b, 4096);
	assert_int_equal(file_load(p2, FILE_ANY, 4096, &b), CUSTOS_OK);
	span old = buf_span(&b);
	assert_non_null(
	        memmem(old.ptr, old.len, "\"msg\":\"first 1\"", strlen("\"msg\":\"first 1\"")));
	assert_non_null(
	        memmem(old.ptr, old.len, "\"msg\":\"second\"", strlen("\"msg\":\"second\"")));
	assert_null(memmem(old.ptr, old.len, "not shown", strlen("not shown")));
	buf_reset(&b);
	assert_int_equal(file_load(p1, FILE_ANY, 4096, &b), CUSTOS_OK);
	span cur = buf_span(&b);
	assert_non_null(
	        memmem(cur.ptr, cur.len, "\"level\":\"warn\"", strlen("\"level\":\"warn\"")));
	assert_non_null(
	        memmem(cur.ptr, cur.len, "third \\\"quoted\\\"", strlen("third \\\"quoted\\\"")));
	assert_null(memmem(cur.ptr, cur.len, "second", strlen("second")));
	buf_free(&b);
	assert_int_equal(log_open_file("/nonexistent/dir/x.log"), CUSTOS_ERR_SYS);
}

/* file_bridge_thread: bytes both ways, a half-close passed on, the thread ends once both
 * directions ended (and closes its ends). */
/* A thread's name as /proc shows it (what ps -L, top -H and perf print). */
static void *name_thread(void *arg)
{
	char path[64], got[32] = "";
	proc_name_self((const char *)arg);
	snprintf(path, sizeof(path), "/proc/self/task/%ld/comm", (long)gettid());
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		if (fgets(got, sizeof(got), f) == NULL)
			got[0] = '\0';
		fclose(f);
	}
	got[strcspn(got, "\n")] = '\0';
	return strdup(got);
}

static void test_proc_name(void **state)
{
	static const struct {
		const char *set, *want;
	} cases[] = {
		{ "custos-w0", "custos-w0" },
		{ "custos-exactly15", "custos-exactly1" }, /* 16 bytes: cut to the kernel's 15 */
		{ "custos-a-much-longer-name", "custos-a-much-l" },
	};
	(void)state;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		pthread_t t;
		void *got = NULL;
		assert_int_equal(pthread_create(&t, NULL, name_thread, (void *)cases[i].set), 0);
		assert_int_equal(pthread_join(t, &got), 0);
		assert_string_equal(got, cases[i].want);
		free(got);
	}
}

static void test_file_bridge(void **state)
{
	int x[2], y[2];
	char got[64];
	pthread_t t;
	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, y), 0);
	int *fds = malloc(2 * sizeof(int));
	assert_non_null(fds);
	fds[0] = x[1];
	fds[1] = y[1];
	assert_int_equal(pthread_create(&t, NULL, file_bridge_thread, fds), 0);
	assert_int_equal(write(x[0], "ping", 4), 4);
	assert_int_equal(read(y[0], got, sizeof(got)), 4);
	assert_memory_equal(got, "ping", 4);
	assert_int_equal(write(y[0], "pong!", 5), 5);
	assert_int_equal(read(x[0], got, sizeof(got)), 5);
	assert_memory_equal(got, "pong!", 5);
	/* x's side ends: y sees EOF, and can still answer. */
	assert_int_equal(shutdown(x[0], SHUT_WR), 0);
	assert_int_equal(read(y[0], got, sizeof(got)), 0);
	assert_int_equal(write(y[0], "late", 4), 4);
	assert_int_equal(read(x[0], got, sizeof(got)), 4);
	assert_memory_equal(got, "late", 4);
	assert_int_equal(shutdown(y[0], SHUT_WR), 0);
	assert_int_equal(read(x[0], got, sizeof(got)), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	close(x[0]);
	close(y[0]);
}

/* diag_err: the first *error* (not a warning) with its position, a count of the others. */
static void test_diag_err(void **state)
{
	diag_list d;

	(void)state;
	diag_init(&d);
	assert_int_equal(diag_err(CUSTOS_ERR_PARSE, &d, "configuration"), CUSTOS_ERR_PARSE);
	assert_string_equal(err_msg(), "configuration has errors");
	diag_add(&d, DIAG_WARNING, "c.yaml", 1, 2, NULL, "only a warning");
	assert_int_equal(diag_err(CUSTOS_ERR_PARSE, &d, "configuration"), CUSTOS_ERR_PARSE);
	assert_string_equal(err_msg(), "configuration has errors");
	diag_add(&d, DIAG_ERROR, "c.yaml", 3, 7, "a hint", "'x' is wrong");
	assert_int_equal(diag_err(CUSTOS_ERR_PARSE, &d, "configuration"), CUSTOS_ERR_PARSE);
	assert_string_equal(err_msg(), "configuration: c.yaml:3:7: 'x' is wrong");
	diag_add(&d, DIAG_ERROR, "c.yaml", 9, 1, NULL, "second");
	assert_int_equal(diag_err(CUSTOS_ERR_PARSE, &d, "configuration"), CUSTOS_ERR_PARSE);
	assert_string_equal(err_msg(),
	                    "configuration: c.yaml:3:7: 'x' is wrong (and 1 more error(s))");
	diag_free(&d);
	diag_init(&d);
	diag_add(&d, DIAG_ERROR, "c.yaml", 0, 0, NULL, "group-writable");
	assert_int_equal(diag_err(CUSTOS_ERR_PERM, &d, "configuration"), CUSTOS_ERR_PERM);
	assert_string_equal(err_msg(), "configuration: c.yaml: group-writable");
	diag_log(&d); /* through log_msg: must not crash, whatever the format */
	diag_free(&d);
}

/* log_rate: the burst, then `rate` a second; what is dropped is counted and reported once a
 * token is back, or after report_ns while the flood goes on; never more lines than the bucket
 * allows over any stretch. */
static void test_log_rate(void **state)
{
	(void)state;
	const uint64_t S = 1000000000ull;
	log_rate r;
	uint64_t t = 5 * S;
	log_rate_init(&r, 100, 1000, 10 * S, t);
	unsigned logged = 0;
	for (int i = 0; i < 20000; i++) /* a flood within one instant: the burst only */
		logged += log_rate_take(&r, t);
	assert_int_equal(logged, 1000);
	assert_int_equal(r.dropped, 19000);
	assert_int_equal(log_rate_report(&r, t), 0); /* still over, and not 10 s yet */
	/* 20000 more lines over 9 s: 900 tokens come back, the rest is dropped */
	logged = 0;
	for (int i = 0; i < 20000; i++)
		logged += log_rate_take(&r, t + (uint64_t)i * (9 * S / 20000));
	assert_true(logged >= 899 && logged <= 900); /* 9 s at 100 a second */
	assert_int_equal(log_rate_report(&r, t + 9 * S - 1), 0);
	/* 10 s after the start of the flood: reported though the flood goes on */
	uint64_t d = log_rate_report(&r, t + 10 * S);
	assert_int_equal(d + 1000 + logged, 40000);           /* every line logged or counted */
	assert_int_equal(log_rate_report(&r, t + 10 * S), 0); /* reported once */
	/* once quiet, one more drop is reported as soon as a token is back */
	while (log_rate_take(&r, t + 10 * S)) {
	}
	assert_int_equal(log_rate_report(&r, t + 10 * S), 0); /* no token, reported just now */
	assert_int_equal(log_rate_report(&r, t + 10 * S + S / 50), 1);
	/* the bucket never holds more than the burst */
	assert_true(log_rate_take(&r, t + 1000 * S));
	assert_int_equal(r.tokens, 999);
}

/* file_connect_timeout: connects, keeps the blocking mode, reports a refusal at once, and gives
 * up after its timeout on a listener whose backlog is full (the SYN is dropped and a blocking
 * connect() would wait for the kernel's retries, minutes: custos vm run's --egress-to). */
static void test_connect_timeout(void **state)
{
	(void)state;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	assert_int_equal(listen(l, 0), 0);
	int fds[32];
	size_t n = 0;
	bool timed_out = false;
	while (n < 32 && !timed_out) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		fds[n++] = fd;
		uint64_t t0 = tm_mono_ns();
		custos_err e = file_connect_timeout(fd, &sa, sizeof(sa), 300 * 1000000ull);
		uint64_t took = tm_mono_ns() - t0;
		if (e == CUSTOS_OK) {
			assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* still blocking */
			continue;
		}
		assert_int_equal(e, CUSTOS_ERR_TIMEOUT);
		assert_true(took < 5000 * 1000000ull); /* a hang guard, not a timing check */
		timed_out = true;
	}
	assert_true(timed_out);
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	close(l); /* now nothing listens there: refused at once */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(file_connect_timeout(fd, &sa, sizeof(sa), 5000 * 1000000ull),
	                 CUSTOS_ERR_SYS);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_err_idiom),
		cmocka_unit_test(test_diag_err),
		cmocka_unit_test(test_buf_limits),
		cmocka_unit_test(test_span),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_json_writer),
		cmocka_unit_test(test_time),
		cmocka_unit_test_setup_teardown(test_file_load_modes, setup_tmp, teardown_tmp),
		cmocka_unit_test(test_ydoc_tree),
		cmocka_unit_test(test_ydoc_empty),
		cmocka_unit_test(test_ydoc_surrogate_pairs),
		cmocka_unit_test(test_ydoc_refusals),
		cmocka_unit_test(test_ydoc_schema),
		cmocka_unit_test(test_diag_suggest),
		cmocka_unit_test_setup_teardown(test_notify, setup_tmp, teardown_tmp),
		cmocka_unit_test_setup_teardown(test_log_file_reopen, setup_tmp, teardown_tmp),
		cmocka_unit_test(test_file_bridge),
		cmocka_unit_test(test_log_rate),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_proc_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
