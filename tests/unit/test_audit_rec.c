/* Unit tests of compact audit records (audit_rec): the writer's rendering is byte for byte the
 * audit_event builder's JSON for the same calls, the producer's size accounting is exact at the
 * AUDIT_MAX_EVENT boundary, hostile records are refused at the trust boundary, and records
 * reach a real writer (one at a time and in batches) and verify. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit/audit_int.h"
#include "custos/audit.h"

/* One scenario applied to both builders through the same calls. */
typedef struct both {
	audit_event ev;
	audit_rec rec;
} both;

static void b_begin(both *b, const char *type, uint64_t t)
{
	audit_event_begin_at(&b->ev, type, t);
	audit_rec_begin_at(&b->rec, type, t);
}
static void b_str(both *b, const char *k, span v)
{
	audit_event_str(&b->ev, k, v);
	audit_rec_str(&b->rec, k, v);
}
static void b_cstr(both *b, const char *k, const char *v)
{
	audit_event_cstr(&b->ev, k, v);
	audit_rec_cstr(&b->rec, k, v);
}
static void b_u64(both *b, const char *k, uint64_t v)
{
	audit_event_u64(&b->ev, k, v);
	audit_rec_u64(&b->rec, k, v);
}

/* Ends both, renders the record and checks it against the event body and its own size. */
static void b_check(both *b)
{
	buf out;

	assert_int_equal(audit_event_end(&b->ev), CUSTOS_OK);
	assert_int_equal(audit_rec_end(&b->rec), CUSTOS_OK);
	buf_init(&out, AUDIT_MAX_EVENT);
	assert_int_equal(audit_rec_render(audit_rec_bytes(&b->rec), &out), CUSTOS_OK);
	span want = audit_event_body(&b->ev), got = buf_span(&out);
	if (got.len != want.len || memcmp(got.ptr, want.ptr, got.len) != 0)
		fail_msg("record renders\n%.*s\nevent gives\n%.*s", (int)got.len, got.ptr,
		         (int)want.len, want.ptr);
	assert_true(b->rec.json_max >= got.len);
	assert_int_equal(audit_body_check(got, false), CUSTOS_OK);
	buf_free(&out);
}

static void test_rec_matches_event(void **state)
{
	both *b = calloc(1, sizeof(*b));
	const char *strs[] = { "a", NULL, "q\"uote", "" };
	audit_finding f[] = { { "payment_card", 2 }, { "e\tmail", 0 } };
	audit_duration d[] = { { "total", 5 }, { "tls", 0 }, { "upstream", UINT64_MAX } };
	const char *odd[] = {
		"plain",
		"new\nline\r\ttab\\back\"quote",
		"\x01\x1f\x7f ctl",
		"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",      /* valid 2, 3, 4 byte UTF-8 */
		"bad \xff \xc0\xaf \xed\xa0\x80 \xe2\x82 end",    /* invalid, overlong, surrogate */
		"\xf4\x90\x80\x80 \xe0\x80\x80 \xf0\x80\x80\x80", /* above U+10FFFF, overlongs */
		"trunc \xf0\x9f\x98",
		"",
	};

	(void)state;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(odd); i++) {
		b_begin(b, i % 2 ? "http.request" : "t\"ype\x02", 1764217483123456789ull + i);
		b_cstr(b, "request_id", "0123456789abcdef0123456789abcdef");
		b_cstr(b, "omitted", NULL);
		b_cstr(b, odd[i], odd[i]); /* the same bytes as a key */
		b_str(b, "span", span_of(odd[i], strlen(odd[i])));
		b_u64(b, "zero", 0);
		b_u64(b, "max", UINT64_MAX);
		audit_event_bool(&b->ev, "yes", true);
		audit_rec_bool(&b->rec, "yes", true);
		audit_event_bool(&b->ev, "no", false);
		audit_rec_bool(&b->rec, "no", false);
		audit_event_strs(&b->ev, "rules", strs, 4);
		audit_rec_strs(&b->rec, "rules", strs, 4);
		audit_event_strs(&b->ev, "none", strs, 0);
		audit_rec_strs(&b->rec, "none", strs, 0);
		audit_event_findings(&b->ev, f, i % 3);
		audit_rec_findings(&b->rec, f, i % 3);
		audit_event_durations(&b->ev, d, i % 4);
		audit_rec_durations(&b->rec, d, i % 4);
		b_check(b);
	}
	/* The time before 1970-01-01T00:00:10 and a round second. */
	b_begin(b, "x", 0);
	b_check(b);
	b_begin(b, "x", 9000000000ull);
	b_check(b);
	free(b);
}

/* Each byte that needs escaping, or starts UTF-8, at every position around the writer's
 * 16-byte scan blocks and its 4- and 8-byte word checks of short strings, in keys and values
 * (both through the one-piece member path and the general one), and numbers of every digit
 * count: the rendering still equals the builder's. */
static void test_rec_escape_positions(void **state)
{
	both *b = calloc(1, sizeof(*b));
	static const char *special[] = { "\"", "\\",       "\x01", "\x1f",    "\x7f",
		                         " ",  "\xc3\xa9", "\xff", "\xe2\x82" };
	char v[64];

	(void)state;
	for (size_t k = 0; k < CUSTOS_ARRAY_LEN(special); k++) {
		for (size_t pos = 0; pos < 40; pos++) {
			size_t sl = strlen(special[k]);
			memset(v, 'a', sizeof(v));
			memcpy(v + pos, special[k], sl);
			v[pos + sl + (pos % 7)] = '\0'; /* lengths on and off the block size */
			b_begin(b, "t", 1764217483123456789ull);
			b_cstr(b, v, v);
			b_str(b, "cut", span_of(v, pos)); /* ends just before the byte */
			b_check(b);
		}
	}
	/* Numbers at every digit count, around each power of ten (two digits per division). */
	for (uint64_t t = 1; t != 0 && t <= UINT64_MAX / 10; t *= 10) {
		b_begin(b, "n", 1764217483123456789ull);
		b_u64(b, "below", t - 1);
		b_u64(b, "at", t);
		b_u64(b, "above", t + 1);
		b_u64(b, "ten_times_minus_one", t * 10 - 1);
		b_check(b);
	}
	free(b);
}

/* The producer's size check is exact: an event of exactly AUDIT_MAX_EVENT bytes passes
 * both builders, one byte more fails both, with escapes and multi-byte UTF-8 in the string. */
static void test_rec_size_boundary(void **state)
{
	both *b = calloc(1, sizeof(*b));
	char *s = malloc(AUDIT_MAX_EVENT + 1);

	(void)state;
	for (int kind = 0; kind < 3; kind++) {
		const char *unit = kind == 0 ? "a" : kind == 1 ? "\n" : "\xc3\xa9";
		size_t ul = strlen(unit), ue = kind == 0 ? 1 : 2; /* bytes in, bytes rendered */
		/* Fixed part: time, type "x", `,"s":""` */
		b_begin(b, "x", 1);
		b_str(b, "s", span_of("", 0));
		assert_int_equal(audit_event_end(&b->ev), CUSTOS_OK);
		size_t fixed = audit_event_body(&b->ev).len;
		size_t room = AUDIT_MAX_EVENT - fixed;
		for (int extra = 0; extra <= 1; extra++) {
			size_t units = room / ue, n = 0;
			for (size_t u = 0; u < units; u++, n += ul)
				memcpy(s + n, unit, ul);
			size_t pad = room - units * ue + (size_t)extra; /* fill with 'a' */
			memset(s + n, 'a', pad);
			n += pad;
			b_begin(b, "x", 1);
			b_str(b, "s", span_of(s, n));
			custos_err want = extra ? CUSTOS_ERR_LIMIT : CUSTOS_OK;
			assert_int_equal(audit_event_end(&b->ev), want);
			assert_int_equal(audit_rec_end(&b->rec), want);
			if (!extra) {
				buf out;
				buf_init(&out, AUDIT_MAX_EVENT);
				assert_int_equal(audit_rec_render(audit_rec_bytes(&b->rec), &out),
				                 CUSTOS_OK);
				assert_int_equal(buf_used(&out), AUDIT_MAX_EVENT);
				buf_free(&out);
			}
		}
	}
	/* Too many finding types, and a name past 255 bytes, are limit errors. */
	audit_finding f[AUDIT_MAX_FINDINGS + 1];
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(f); i++)
		f[i] = (audit_finding){ "x", 1 };
	audit_rec_begin(&b->rec, "x");
	audit_rec_findings(&b->rec, f, CUSTOS_ARRAY_LEN(f));
	assert_int_equal(audit_rec_end(&b->rec), CUSTOS_ERR_LIMIT);
	memset(s, 'k', 300);
	s[300] = '\0';
	audit_rec_begin(&b->rec, "x");
	audit_rec_u64(&b->rec, s, 1);
	assert_int_equal(audit_rec_end(&b->rec), CUSTOS_ERR_LIMIT);
	/* An unfinished or failed record is refused by the batch. */
	audit_batch bt;
	audit_batch_init(&bt);
	audit_rec_begin(&b->rec, "x");
	assert_int_equal(audit_batch_add(&bt, &b->rec), CUSTOS_ERR_INVAL);
	assert_int_equal(bt.n, 0);
	/* A full batch says so. */
	audit_rec_begin(&b->rec, "x");
	memset(s, 'p', 1000);
	audit_rec_str(&b->rec, "pad", span_of(s, 1000));
	assert_int_equal(audit_rec_end(&b->rec), CUSTOS_OK);
	custos_err e;
	while ((e = audit_batch_add(&bt, &b->rec)) == CUSTOS_OK)
		;
	assert_int_equal(e, CUSTOS_ERR_LIMIT);
	assert_true(bt.n > 10 && bt.n < 100);
	audit_batch_free(&bt);
	free(s);
	free(b);
}

static custos_err render(const void *p, size_t n)
{
	buf out;
	buf_init(&out, AUDIT_MAX_EVENT);
	custos_err e = audit_rec_render(span_of(p, n), &out);
	buf_free(&out);
	return e;
}

/* Hostile records at the writer: every truncation, unknown kinds, reserved members and types,
 * bad values; none is rendered, none reads outside the record (ASan). */
static void test_rec_hostile(void **state)
{
	audit_rec *r = calloc(1, sizeof(*r));
	audit_finding f[] = { { "card", 1 } };
	audit_duration d[] = { { "total", 5 } };
	const char *strs[] = { "a", NULL };

	(void)state;
	audit_rec_begin_at(r, "http.request", 5);
	audit_rec_cstr(r, "k", "value");
	audit_rec_u64(r, "n", 7);
	audit_rec_bool(r, "b", true);
	audit_rec_strs(r, "l", strs, 2);
	audit_rec_findings(r, f, 1);
	audit_rec_durations(r, d, 1);
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	assert_int_equal(render(r->data, r->len), CUSTOS_OK);
	/* Every prefix: a cut on a member boundary is a shorter valid record, anything else is a
	 * parse error. Each prefix is copied to its own allocation so ASan sees overreads. */
	size_t ok = 0;
	for (size_t n = 0; n < r->len; n++) {
		uint8_t *p = malloc(n ? n : 1);
		memcpy(p, r->data, n);
		custos_err e = render(p, n);
		assert_true(e == CUSTOS_OK || e == CUSTOS_ERR_PARSE);
		ok += e == CUSTOS_OK;
		free(p);
	}
	assert_int_equal(ok, 6); /* the head alone and after each of the first five members */
	/* Not a record; an unknown member kind; a bool that is not 0/1. */
	uint8_t bad[64];
	memcpy(bad, r->data, r->len < sizeof(bad) ? r->len : sizeof(bad));
	bad[0] = '{';
	assert_int_equal(render(bad, 20), CUSTOS_ERR_PARSE);
	audit_rec_begin_at(r, "x", 1);
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	memcpy(bad, r->data, r->len);
	bad[r->len] = 0x7e;
	assert_int_equal(render(bad, r->len + 1), CUSTOS_ERR_PARSE);
	audit_rec_begin_at(r, "x", 1);
	audit_rec_bool(r, "b", true);
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	r->data[r->len - 1] = 2;
	assert_int_equal(render(r->data, r->len), CUSTOS_ERR_PARSE);
	/* Reserved members and writer-only types. */
	const char *reserved[] = { "v", "seq", "prev", "hash", "time", "type" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(reserved); i++) {
		audit_rec_begin(r, "x");
		audit_rec_u64(r, reserved[i], 1);
		assert_int_equal(audit_rec_end(r), CUSTOS_OK);
		assert_int_equal(render(r->data, r->len), CUSTOS_ERR_DENIED);
	}
	const char *types[] = { "checkpoint", "recovery", "audit.start", "audit.invalid" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(types); i++) {
		audit_rec_begin(r, types[i]);
		assert_int_equal(audit_rec_end(r), CUSTOS_OK);
		assert_int_equal(render(r->data, r->len), CUSTOS_ERR_DENIED);
	}
	/* An empty type: the JSON body check refuses it too. */
	audit_rec_begin(r, "");
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	assert_int_equal(render(r->data, r->len), CUSTOS_ERR_PARSE);
	/* A findings count past the limit, forged after the builder. */
	audit_rec_begin_at(r, "x", 1);
	audit_rec_findings(r, f, 1);
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	r->data[r->len - 8 - 4 - 1 - 1] = AUDIT_MAX_FINDINGS + 1; /* the n byte */
	assert_int_equal(render(r->data, r->len), CUSTOS_ERR_PARSE);
	/* A rendering past the output's maximum is a limit error. */
	audit_rec_begin_at(r, "x", 1);
	audit_rec_cstr(r, "k", "0123456789");
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	buf small;
	buf_init(&small, 40);
	assert_int_equal(audit_rec_render(audit_rec_bytes(r), &small), CUSTOS_ERR_LIMIT);
	buf_free(&small);
	free(r);
}

static size_t count_in_dir(const char *dir, const char *needle)
{
	char **paths = NULL;
	size_t n = 0, hits = 0;
	assert_int_equal(audit_list_files(dir, &paths, &n), CUSTOS_OK);
	for (size_t i = 0; i < n; i++) {
		FILE *f = fopen(paths[i], "r");
		char line[AUDIT_MAX_LINE + 2];
		assert_non_null(f);
		while (fgets(line, sizeof(line), f) != NULL)
			if (strstr(line, needle) != NULL)
				hits++;
		fclose(f);
	}
	audit_paths_free(paths, n);
	return hits;
}

static void rm_rf(const char *dir)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* Records through a real writer: single and batched submits, a forged record recorded as
 * audit.invalid, the rendered line identical to the event builder's, the chain verified. */
static void test_rec_writer(void **state)
{
	char dir[] = "/tmp/test_audit_rXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_rec *r = calloc(1, sizeof(*r));
	audit_event *ev = calloc(1, sizeof(*ev));
	audit_batch bt;
	audit_verify_result vr;
	size_t acc = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_true(audit_writer_ok(w));
	audit_rec_begin_at(r, "rec.one", 1764217483000000001ull);
	audit_rec_cstr(r, "who", "single \"quoted\"");
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	assert_int_equal(audit_submit_rec(w, r), CUSTOS_OK);
	audit_batch_init(&bt);
	for (int i = 0; i < 100; i++) {
		audit_rec_begin(r, "rec.batch");
		audit_rec_u64(r, "i", (uint64_t)i);
		assert_int_equal(audit_rec_end(r), CUSTOS_OK);
		assert_int_equal(audit_batch_add(&bt, r), CUSTOS_OK);
	}
	assert_int_equal(audit_submit_batch(w, &bt, &acc), CUSTOS_OK);
	assert_int_equal(acc, 100);
	assert_int_equal(bt.n, 0);
	assert_int_equal(audit_submit_batch(w, &bt, &acc), CUSTOS_OK); /* empty: nothing */
	assert_int_equal(acc, 0);
	/* A forged record (writer-only type) and a truncated one: audit.invalid, not dropped. */
	audit_rec_begin(r, "checkpoint");
	audit_rec_cstr(r, "sig", "00");
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	assert_int_equal(audit_submit_rec(w, r), CUSTOS_OK);
	audit_rec_begin(r, "x");
	audit_rec_cstr(r, "k", "value");
	assert_int_equal(audit_rec_end(r), CUSTOS_OK);
	r->len -= 2;
	assert_int_equal(audit_submit_rec(w, r), CUSTOS_OK);
	/* The old builder still works beside it. */
	audit_event_begin(ev, "event.json");
	assert_int_equal(audit_event_end(ev), CUSTOS_OK);
	assert_int_equal(audit_submit(w, ev), CUSTOS_OK);
	audit_rec_begin(r, "x");
	assert_int_equal(audit_submit_rec(w, r), CUSTOS_ERR_INVAL); /* not ended */
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	audit_stats st;
	audit_writer_stats(w, &st);
	assert_int_equal(st.submitted, 104);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	audit_batch_free(&bt);
	assert_int_equal(count_in_dir(dir, "\"type\":\"rec.batch\""), 100);
	assert_int_equal(count_in_dir(dir, "\"type\":\"event.json\""), 1);
	assert_int_equal(count_in_dir(dir, "\"type\":\"audit.invalid\""), 2);
	assert_int_equal(count_in_dir(dir, "\"sig\":\"00\""), 0);
	assert_int_equal(count_in_dir(dir, "\"seq\":3,\"time\":\"2025-11-27T04:24:43.000000001Z\","
	                                   "\"type\":\"rec.one\",\"who\":\"single \\\"quoted\\\"\","
	                                   "\"prev\":"),
	                 1);
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &vr), CUSTOS_OK);
	assert_true(vr.ok);
	assert_int_equal(vr.events, 2 + 104 + 1);
	rm_rf(dir);
	free(r);
	free(ev);
}

/* Deny mode with the writer stopped: a batch is refused whole with CUSTOS_ERR_AGAIN once the
 * queue cannot take all of it, and everything accepted reaches the log. */
static void test_rec_batch_deny(void **state)
{
	char dir[] = "/tmp/test_audit_dXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_rec *r = calloc(1, sizeof(*r));
	audit_batch bt;
	uint64_t ok = 0, again = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.queue_events = 8;
	o.on_full = AUDIT_ON_FULL_DENY;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(kill(audit_writer_pid(w), SIGSTOP), 0);
	audit_batch_init(&bt);
	for (int i = 0; i < 2000; i++) {
		for (int j = 0; j < 3; j++) {
			audit_rec_begin(r, "request");
			audit_rec_cstr(r, "reason", "padding padding padding padding padding");
			assert_int_equal(audit_rec_end(r), CUSTOS_OK);
			assert_int_equal(audit_batch_add(&bt, r), CUSTOS_OK);
		}
		size_t acc = 99;
		custos_err e = audit_submit_batch(w, &bt, &acc);
		assert_true(e == CUSTOS_OK || e == CUSTOS_ERR_AGAIN);
		assert_int_equal(acc, e == CUSTOS_OK ? 3 : 0);
		assert_int_equal(bt.n, 0);
		if (e == CUSTOS_OK)
			ok += 3;
		else
			again += 3;
	}
	assert_true(again > 0);
	audit_stats st;
	audit_writer_stats(w, &st);
	assert_int_equal(st.denied_full, again);
	assert_true(st.queued <= 8);
	assert_int_equal(kill(audit_writer_pid(w), SIGCONT), 0);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	audit_batch_free(&bt);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), ok);
	rm_rf(dir);
	free(r);
}

/* audit.query: what the audited path keeps of its query string. */
static void test_query_filter(void **state)
{
	(void)state;
	char out[AUDIT_QUERY_ROOM(64)];
	const struct {
		const char *in;
		audit_query q;
		const char *want;
	} c[] = {
		{ "/p?q=secret&page=2", AUDIT_QUERY_NAMES, "/p?q=\u2026&page=\u2026" },
		{ "/p?q=secret&page=2", AUDIT_QUERY_FULL, "/p?q=secret&page=2" },
		{ "/p?q=secret&page=2", AUDIT_QUERY_NONE, "/p" },
		{ "/p", AUDIT_QUERY_NAMES, "/p" },
		{ "/p?", AUDIT_QUERY_NAMES, "/p?" },
		/* a bare field may be a token: replaced whole; empty fields and values kept as such */
		{ "/p?sk-abc123&&a=&b==c", AUDIT_QUERY_NAMES, "/p?\u2026&&a=\u2026&b=\u2026" },
		/* only the first '?' starts the query */
		{ "/p?a=x?y=z", AUDIT_QUERY_NAMES, "/p?a=\u2026" },
		{ "http://h:1/p?api_key=K&x=1", AUDIT_QUERY_NAMES,
		  "http://h:1/p?api_key=\u2026&x=\u2026" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		size_t n = audit_query_filter(span_cstr(c[i].in), c[i].q, out, sizeof(out));
		assert_string_equal(out, c[i].want);
		assert_int_equal(n, strlen(c[i].want));
	}
	/* the worst growth fits AUDIT_QUERY_ROOM */
	const char *w = "?=&=&=&=&a&b";
	char big[AUDIT_QUERY_ROOM(12)];
	size_t n = audit_query_filter(span_cstr(w), AUDIT_QUERY_NAMES, big, sizeof(big));
	assert_string_equal(big, "?=\u2026&=\u2026&=\u2026&=\u2026&\u2026&\u2026");
	assert_true(n < sizeof(big));
	/* cut: never inside a marker, never a value */
	char small[7];
	n = audit_query_filter(span_cstr("/p?a=secret"), AUDIT_QUERY_NAMES, small, sizeof(small));
	assert_string_equal(small, "/p?a=");
	assert_int_equal(n, 5);
	char tiny[1];
	assert_int_equal(audit_query_filter(span_cstr("/p?a=b"), AUDIT_QUERY_NAMES, tiny, 1), 0);
	assert_string_equal(tiny, "");
	assert_int_equal(audit_writer_query(NULL), AUDIT_QUERY_NAMES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_filter),
		cmocka_unit_test(test_rec_matches_event),
		cmocka_unit_test(test_rec_escape_positions),
		cmocka_unit_test(test_rec_size_boundary),
		cmocka_unit_test(test_rec_hostile),
		cmocka_unit_test(test_rec_writer),
		cmocka_unit_test(test_rec_batch_deny),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
