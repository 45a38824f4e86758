/*
 * Streaming inspection (SSE delta.content fragments, egress bodies in chunks): values split
 * over fragments are still caught, the hold-back stays bounded, a deny stops the stream, the
 * summary carries types and counts only, releases cut on UTF-8 boundaries.
 */
#include "test_inspect_util.h"

typedef struct feed_log {
	buf out;
	size_t releases[64]; /* bytes released after each feed */
	size_t n;
} feed_log;

static custos_err feed_all(inspect_stream *st, const char *const *frags, size_t n, feed_log *lg)
{
	buf_init(&lg->out, 1u << 20);
	lg->n = 0;
	for (size_t i = 0; i < n; i++) {
		size_t before = buf_used(&lg->out);
		custos_err r = inspect_stream_feed(st, S, span_cstr(frags[i]), &lg->out);
		if (r != CUSTOS_OK)
			return r;
		lg->releases[lg->n++] = buf_used(&lg->out) - before;
	}
	return inspect_stream_finish(st, S, &lg->out);
}

/* Must show: a card number split over four SSE events is redacted in what the client gets. */
static void test_card_over_four_events(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_PAYMENT_CARD, INSPECT_ACT_REDACT);
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	const char *frags[] = {
		"Sure, I looked the account up for you. The card on file is 4111 1111", " 1111",
		" 11", "11. Anything else?"
	};
	feed_log lg;
	assert_int_equal(feed_all(st, frags, 4, &lg), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&lg.out),
	                         "Sure, I looked the account up for you. The card on file is "
	                         "[REDACTED:PAYMENT_CARD]. Anything else?"));
	/* Text before the card was not all held: the first event already released some. */
	assert_true(lg.releases[0] > 0);
	const inspect_summary *sum = inspect_stream_summary(st);
	assert_int_equal(sum->count[INSPECT_PAYMENT_CARD], 1);
	assert_int_equal(sum->total, 1);
	assert_true(sum->redacted);
	assert_int_equal(sum->deny_detector, -1);
	buf_free(&lg.out);
	inspect_stream_free(st);
}

/* The issue's own example: "4111 1111" + " 1111 1111" in two deltas. */
static void test_card_two_deltas(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	size_t sizes[] = { 9, 10 };
	char *got = ti_stream(&p, "4111 1111 1111 1111", 19, sizes, 2, NULL);
	assert_string_equal(got, "[REDACTED:PAYMENT_CARD]");
	free(got);
}

/* A model-like answer with several values, split in 1..4-byte fragments with many seeds: the
 * released text equals block redaction and holds none of the values. */
static void test_sse_like_fragments(void **state)
{
	(void)state;
	const char *answer =
	        "Here is the customer record you asked for:\n"
	        "- Name: Jane Doe\n- E-mail: jane.doe@example.org\n- Phone: +1 (415) 555-2671\n"
	        "- Card: 5555 5555 5555 4444 (exp 12/29)\n- IBAN: GB82 WEST 1234 5698 7654 32\n"
	        "- SSN: 123-45-6789\n- Last login from 203.0.113.7 and 2001:db8::7\n"
	        "The deploy key was AKIAIOSFODNN7EXAMPLE with token "
	        "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A. Let me know if you need more — "
	        "même les caractères accentués 😀 passent.";
	const char *values[] = { "jane.doe@example.org",
		                 "555-2671",
		                 "5555 5555",
		                 "GB82 WEST",
		                 "123-45-6789",
		                 "203.0.113.7",
		                 "2001:db8::7",
		                 "AKIAIOSFODNN7EXAMPLE",
		                 "ghp_aB3d" };
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	size_t n = strlen(answer);
	inspect_summary bs, ss;
	char *want = ti_redact(&p, answer, n, &bs);
	for (size_t v = 0; v < CUSTOS_ARRAY_LEN(values); v++)
		assert_null(strstr(want, values[v]));
	assert_non_null(strstr(want, "😀 passent."));
	assert_int_equal(bs.total, 9);
	for (uint32_t seed = 1; seed <= 200; seed++) {
		uint32_t s = seed * 2654435761u;
		size_t sizes[97];
		for (size_t k = 0; k < CUSTOS_ARRAY_LEN(sizes); k++)
			sizes[k] = 1 + ti_rand(&s) % 4;
		char *got = ti_stream(&p, answer, n, sizes, CUSTOS_ARRAY_LEN(sizes), &ss);
		assert_string_equal(got, want);
		assert_int_equal(ss.total, bs.total);
		assert_memory_equal(ss.count, bs.count, sizeof(bs.count));
		free(got);
	}
	free(want);
}

/* Byte-at-a-time feeding: what is held never exceeds the hold-back (plus an unfinished UTF-8
 * character) while no token is open; a JWT keeps everything from its start until it ends. */
static void test_holdback_bound(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++)
		inspect_profile_set(&p, i, INSPECT_ACT_REDACT);
	size_t hold = inspect_profile_holdback(E, &p);
	assert_true(hold < 128);
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 1u << 20);
	const char *prose = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do "
	                    "eiusmod tempor incididunt ut labore et dolore magna aliqua. ";
	for (int rep = 0; rep < 4; rep++)
		for (const char *c = prose; *c; c++) {
			assert_int_equal(inspect_stream_feed(st, S, span_of(c, 1), &out),
			                 CUSTOS_OK);
			assert_true(inspect_stream_held(st) <= hold);
		}
	assert_true(buf_used(&out) >= 4 * strlen(prose) - hold);
	const char *jwt =
	        " eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6"
	        "IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"
	        "_adQssw5c";
	size_t before = buf_used(&out);
	for (const char *c = jwt; *c; c++)
		assert_int_equal(inspect_stream_feed(st, S, span_of(c, 1), &out), CUSTOS_OK);
	/* nothing of the token was released while it was open */
	assert_null(memmem(buf_ptr(&out) + before, buf_used(&out) - before, "eyJ", 3));
	assert_true(inspect_stream_held(st) >= strlen(jwt) - 1);
	assert_int_equal(inspect_stream_feed(st, S, span_cstr(" done"), &out), CUSTOS_OK);
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
	assert_int_equal(inspect_stream_held(st), 0);
	const char *tail = " [REDACTED:JWT] done";
	assert_true(buf_used(&out) > strlen(tail));
	assert_memory_equal(buf_ptr(&out) + buf_used(&out) - strlen(tail), tail, strlen(tail));
	/* finished: no more text */
	assert_int_equal(inspect_stream_feed(st, S, span_cstr("x"), &out), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_ERR_INVAL);
	buf_free(&out);
	inspect_stream_free(st);
}

/* A deny in mid-stream: the feed that completes the value reports it, nothing of it was
 * released, the stream refuses further text, and the summary names the type only. */
static void test_deny_mid_stream(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_LOG);
	inspect_profile_set(&p, INSPECT_US_SSN, INSPECT_ACT_DENY);
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 1u << 20);
	const char *frags[] = { "The employee's number is 12", "3-45-", "67", "89 as requested.",
		                "More text follows here to push the stable point along......." };
	custos_err r = CUSTOS_OK;
	size_t i = 0;
	for (; i < CUSTOS_ARRAY_LEN(frags) && r == CUSTOS_OK; i++)
		r = inspect_stream_feed(st, S, span_cstr(frags[i]), &out);
	if (r == CUSTOS_OK)
		r = inspect_stream_finish(st, S, &out);
	assert_int_equal(r, CUSTOS_ERR_DENIED);
	assert_non_null(strstr(err_msg(), "us_ssn"));
	assert_null(strstr(err_msg(), "6789"));
	assert_true(buf_used(&out) == 0 || memmem(buf_ptr(&out), buf_used(&out), "123", 3) == NULL);
	const inspect_summary *sum = inspect_stream_summary(st);
	assert_int_equal(sum->deny_detector, INSPECT_US_SSN);
	assert_int_equal(sum->worst, INSPECT_ACT_DENY);
	assert_int_equal(inspect_stream_feed(st, S, span_cstr("more"), &out), CUSTOS_ERR_DENIED);
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_ERR_DENIED);
	/* The audit gets types and counts, never values. */
	buf js;
	buf_init(&js, 4096);
	json_writer w;
	json_init(&w, &js);
	inspect_summary_json(E, sum, &w);
	assert_int_equal(json_finish(&w), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&js), "{\"us_ssn\":1}"));
	buf_free(&js);
	buf_free(&out);
	inspect_stream_free(st);
}

/* LOG counts without changing the text; counts across types. */
static void test_log_only(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_LOG);
	const char *t = "mail a@example.com and b@example.net, card 4242424242424242.";
	size_t sizes[] = { 3, 1, 4, 2 };
	inspect_summary sum;
	char *got = ti_stream(&p, t, strlen(t), sizes, 4, &sum);
	assert_string_equal(got, t);
	assert_int_equal(sum.count[INSPECT_EMAIL], 2);
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
	assert_int_equal(sum.worst, INSPECT_ACT_LOG);
	assert_false(sum.redacted);
	buf js;
	buf_init(&js, 4096);
	json_writer w;
	json_init(&w, &js);
	inspect_summary_json(E, &sum, &w);
	assert_int_equal(json_finish(&w), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&js), "{\"email\":2,\"payment_card\":1}"));
	buf_free(&js);
	free(got);
}

/* Private key blocks across many events; an unterminated block is masked to the end (fail
 * closed), and a block longer than the region limit is masked in pieces, never released. */
static void test_private_key_stream(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_PRIVATE_KEY, INSPECT_ACT_REDACT);
	const char *t = "key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5C"
	                "\n-----END EC PRIVATE KEY-----\nok";
	size_t sizes[] = { 2, 3, 1, 4 };
	char *got = ti_stream(&p, t, strlen(t), sizes, 4, NULL);
	assert_string_equal(got, "key:\n[REDACTED:PRIVATE_KEY]\nok");
	free(got);
	const char *open = "x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
	got = ti_stream(&p, open, strlen(open), sizes, 4, NULL);
	assert_string_equal(got, "x [REDACTED:PRIVATE_KEY]");
	free(got);
	/* 40 KiB of key body: more than the region limit */
	buf big;
	buf_init(&big, 1u << 20);
	assert_int_equal(buf_append_cstr(&big, "-----BEGIN RSA PRIVATE KEY-----\n"), CUSTOS_OK);
	for (int i = 0; i < 640; i++)
		assert_int_equal(
		        buf_append_cstr(
		                &big,
		                "MIIEowIBAAKCAQEAu1SU1L7VLPHCgcBIjkMIIEowIBAAKCAQEAu1SU1L7VLPHC\n"),
		        CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&big, "-----END RSA PRIVATE KEY-----\ntail"), CUSTOS_OK);
	size_t chunk[] = { 1000 };
	inspect_summary sum;
	got = ti_stream(&p, (const char *)buf_ptr(&big), buf_used(&big), chunk, 1, &sum);
	assert_null(strstr(got, "MIIE"));
	assert_non_null(strstr(got, "tail"));
	assert_true(sum.count[INSPECT_PRIVATE_KEY] >= 2);
	free(got);
	buf_free(&big);
}

/* A JWT longer than the region's maximum (30 KiB of claims) is masked whole, in any pieces:
 * nothing of its payload or signature is released. */
static void test_long_jwt_stream(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_JWT, INSPECT_ACT_REDACT);
	buf big;
	buf_init(&big, 1u << 20);
	assert_int_equal(buf_append_cstr(&big, "tok eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ"),
	                 CUSTOS_OK);
	for (int i = 0; i < 3000; i++)
		assert_int_equal(buf_append_cstr(&big, "QUFBQUFB"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&big, "In0.U0lHTkFUVVJFX1NJR05BVFVSRV9TSUdOQVRVUkU end"),
	                 CUSTOS_OK);
	static const size_t chunks[][2] = { { 1000, 1000 }, { 7, 4093 }, { 65536, 65536 } };
	for (size_t c = 0; c < 3; c++) {
		inspect_summary sum;
		char *got = ti_stream(&p, (const char *)buf_ptr(&big), buf_used(&big), chunks[c], 2,
		                      &sum);
		assert_null(strstr(got, "QUFB"));
		assert_null(strstr(got, "U0lH"));
		assert_non_null(strstr(got, "tok [REDACTED:JWT]"));
		assert_non_null(strstr(got, " end"));
		assert_true(sum.count[INSPECT_JWT] >= 2);
		free(got);
	}
	buf_free(&big);
}

/* Egress bodies are raw bytes: NULs and invalid UTF-8 pass through, values are still found. */
static void test_egress_raw(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	char body[] = "\x00\x01\xff\xfe id=AKIAIOSFODNN7EXAMPLE\x00tail\x80";
	size_t n = sizeof(body) - 1;
	size_t sizes[] = { 5, 7, 1 };
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 4096);
	for (size_t at = 0, k = 0; at < n; k++) {
		size_t len = sizes[k % 3] < n - at ? sizes[k % 3] : n - at;
		assert_int_equal(inspect_stream_feed(st, S, span_of(body + at, len), &out),
		                 CUSTOS_OK);
		at += len;
	}
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
	const char want[] = "\x00\x01\xff\xfe id=[REDACTED:AWS_ACCESS_KEY]\x00tail\x80";
	assert_int_equal(buf_used(&out), sizeof(want) - 1);
	assert_memory_equal(buf_ptr(&out), want, sizeof(want) - 1);
	buf_free(&out);
	inspect_stream_free(st);
}

/* A custom pattern without an upper bound: whole in a block; in a stream, a match longer than
 * INSPECT_MAX_PATTERN_WIDTH may have its start released, but its rest is masked. */
static void test_long_custom_match(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_profile_set(&p, ID_TICKET, INSPECT_ACT_REDACT);
	char text[800];
	size_t n = 0;
	memcpy(text, "ref TKT-", 8);
	n = 8;
	for (int i = 0; i < 700; i++)
		text[n++] = (char)('A' + i % 26);
	memcpy(text + n, " end", 5);
	n += 4;
	char *got = ti_redact(&p, text, n, NULL);
	assert_string_equal(got, "ref [REDACTED:TICKET] end");
	free(got);
	size_t sizes[] = { 50 };
	got = ti_stream(&p, text, n, sizes, 1, NULL);
	assert_non_null(strstr(got, "[REDACTED:TICKET] end"));
	char tail[201];
	memcpy(tail, text + n - 204, 200);
	tail[200] = '\0';
	assert_null(strstr(got, tail));
	free(got);
}

/* Found by fuzz_inspect: a region closed by an earlier fragment, or not yet, must give the
 * same findings (a digit run broken by '-'; an anchor on the byte that ends a region). */
/* Stream `t` with a first fragment of `split` bytes and then `frag`-byte ones. */
static char *stream_split(const inspect_profile *p, const char *t, size_t n, size_t split,
                          size_t frag)
{
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 4096);
	for (size_t at = 0, k = 0; at < n; k++) {
		size_t len = k == 0 ? split : frag;
		if (len > n - at)
			len = n - at;
		assert_int_equal(inspect_stream_feed(st, S, span_of(t + at, len), &out), CUSTOS_OK);
		at += len;
	}
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
	char *got = ti_dup(&out);
	buf_free(&out);
	inspect_stream_free(st);
	return got;
}

static void test_region_split_regression(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const texts[] = {
		"Sure: +44 20 7946 123-45 0958, 1 and 44 20 7946 123-45 0958 or 123-45 0958",
		/* an anchor starting on the byte that ends the previous region */
		"ttttttttttttt@1.-00.0.%@0.tt\" end",
		/* a region cut at its maximum length right where a fragment ends */
		"88, 10.0.0.1 7946704 0044 05304 0044 0532 0130 0000-67",
	};
	for (size_t ti = 0; ti < CUSTOS_ARRAY_LEN(texts); ti++) {
		size_t n = strlen(texts[ti]);
		char *want = ti_redact(&p, texts[ti], n, NULL);
		for (size_t split = 1; split < n; split++) {
			for (size_t frag = 1; frag <= 8; frag++) {
				char *got = stream_split(&p, texts[ti], n, split, frag);
				assert_string_equal(got, want);
				free(got);
			}
		}
		free(want);
	}
}

/* A text that ends inside a UTF-8 sequence (a truncated egress body) loses no byte: the end
 * releases the unfinished sequence as it is, in a block and in a stream cut anywhere. */
static void test_unfinished_sequence_at_end(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const texts[] = { "mail a@example.com \xef\xbc", "x \xe6\x9d",
		                             "\xf0\x9f\x98", "card 4111 1111 1111 1111\xc3" };
	static const char *const want[] = { "mail [REDACTED:EMAIL] \xef\xbc", "x \xe6\x9d",
		                            "\xf0\x9f\x98", "card [REDACTED:PAYMENT_CARD]\xc3" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(texts); i++) {
		size_t n = strlen(texts[i]);
		char *r = ti_redact(&p, texts[i], n, NULL);
		assert_string_equal(r, want[i]);
		free(r);
		for (size_t k = 1; k <= n; k++) {
			size_t sizes[] = { k };
			r = ti_stream(&p, texts[i], n, sizes, 1, NULL);
			assert_string_equal(r, want[i]);
			free(r);
		}
	}
}

/* A profile with nothing applied releases everything at once. */
static void test_inactive_passthrough(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(inspect_stream_feed(st, S, span_cstr("4111 1111 1111 1111"), &out),
	                 CUSTOS_OK);
	assert_int_equal(buf_used(&out), 19);
	assert_int_equal(inspect_stream_held(st), 0);
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
	buf_free(&out);
	inspect_stream_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_card_over_four_events),
		cmocka_unit_test(test_card_two_deltas),
		cmocka_unit_test(test_sse_like_fragments),
		cmocka_unit_test(test_holdback_bound),
		cmocka_unit_test(test_deny_mid_stream),
		cmocka_unit_test(test_log_only),
		cmocka_unit_test(test_private_key_stream),
		cmocka_unit_test(test_long_jwt_stream),
		cmocka_unit_test(test_egress_raw),
		cmocka_unit_test(test_long_custom_match),
		cmocka_unit_test(test_region_split_regression),
		cmocka_unit_test(test_inactive_passthrough),
		cmocka_unit_test(test_unfinished_sequence_at_end),
	};
	return cmocka_run_group_tests(tests, ti_setup, ti_teardown);
}
