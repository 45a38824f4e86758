/* Unit tests for `audit: bodies`' record of a body (proxy/bodyrec.c): text kept verbatim
 * (quotes, TAB, LF, CR, multi-byte characters), everything else base64 (control characters,
 * invalid UTF-8, surrogates, overlong forms), cuts at the cap with the flag and the whole
 * length, a cut that splits a character, a capture shorter than the body, base64 padding
 * (RFC 4648 section 10 shapes), and a base64 buffer too small for the cap. And the event
 * (proxy/emit.c): bodies at the largest cap beside the longest members an event can have
 * are never its refusal: the long members are cut first, then the bodies, never the event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/bodyrec.h"
#include "proxy/proxy_int.h"

static char b64[BODYREC_B64_ROOM(CFG_MAX_AUDIT_BODY_RECORD)];

/* The record of the whole body s (n bytes) at cap max. */
static bodyrec rec(const char *s, size_t n, size_t max)
{
	bodyrec br;
	bodyrec_make(span_of(s, n), n, max, b64, sizeof(b64), &br);
	return br;
}

static void expect(bodyrec br, const char *data, bool base64, bool truncated, uint64_t length)
{
	assert_int_equal(br.data.len, strlen(data));
	assert_memory_equal(br.data.ptr, data, br.data.len);
	assert_int_equal(br.base64, base64);
	assert_int_equal(br.truncated, truncated);
	assert_int_equal(br.length, length);
}

static void test_text_verbatim(void **state)
{
	(void)state;
	const char *j =
	        "{\"model\":\"m\",\"content\":\"a \\\"q\\\"\tb\r\nc caf\xc3\xa9 \xe2\x82\xac "
	        "\xf0\x9f\x98\x80 \x7f\"}";
	expect(rec(j, strlen(j), 1024), j, false, false, strlen(j));
	expect(rec("", 0, 1024), "", false, false, 0);
	expect(rec(NULL, 0, 1024), "", false, false, 0);
}

static void test_binary_is_base64(void **state)
{
	(void)state;
	expect(rec("a\x01", 2, 64), "YQE=", true, false, 2);        /* a control character */
	expect(rec("a\0b", 3, 64), "YQBi", true, false, 3);         /* NUL */
	expect(rec("\xff", 1, 64), "/w==", true, false, 1);         /* not UTF-8 */
	expect(rec("\xc0\xaf", 2, 64), "wK8=", true, false, 2);     /* overlong '/' */
	expect(rec("\xed\xa0\x80", 3, 64), "7aCA", true, false, 3); /* a surrogate */
	expect(rec("\xf4\x90\x80\x80", 4, 64), "9JCAgA==", true, false, 4); /* > U+10FFFF */
	expect(rec("ab\xc3", 3, 64), "YWLD", true, false, 3); /* a whole body ends mid-character */
	expect(rec("\x1b[0m", 4, 64), "G1swbQ==", true, false, 4); /* ESC */
	/* RFC 4648 padding: one, two, three bytes */
	expect(rec("\x01", 1, 64), "AQ==", true, false, 1);
	expect(rec("\x01\x02", 2, 64), "AQI=", true, false, 2);
	expect(rec("\x01\x02\x03", 3, 64), "AQID", true, false, 3);
	expect(rec("\x01\x02\x03\xfb\xff", 5, 64), "AQID+/8=", true, false, 5);
}

static void test_cut(void **state)
{
	(void)state;
	expect(rec("abcdef", 6, 4), "abcd", false, true, 6);
	expect(rec("abcdef", 6, 6), "abcdef", false, false, 6);
	expect(rec("abcdef", 6, 0), "", false, true, 6);
	/* the cut splits a character: the text ends before it */
	expect(rec("ab\xc3\xa9z", 5, 3), "ab", false, true, 5);
	expect(rec("a\xe2\x82\xac", 4, 3), "a", false, true, 4);
	expect(rec("a\xf0\x9f\x98\x80", 5, 4), "a", false, true, 5);
	/* ... but a stray continuation byte or a bad lead at the cut is not text */
	expect(rec("a\x82\x82\xac", 4, 2), "YYI=", true, true, 4);
	expect(rec("a\xf8\x82\xac", 4, 2), "Yfg=", true, true, 4);
	/* binary cut at the cap: base64 of the first bytes */
	expect(rec("\x01\x02\x03\x04\x05", 5, 3), "AQID", true, true, 5);
}

static void test_capture_shorter_than_body(void **state)
{
	(void)state;
	bodyrec br;
	/* a response of 1000 bytes of which the first 4 were kept */
	bodyrec_make(SPAN_LIT("data"), 1000, 4, b64, sizeof(b64), &br);
	expect(br, "data", false, true, 1000);
	/* kept bytes end mid-character, the body goes on */
	bodyrec_make(span_of("d\xc3", 2), 1000, 2, b64, sizeof(b64), &br);
	expect(br, "d", false, true, 1000);
}

static void test_small_b64_buffer(void **state)
{
	(void)state;
	char small[9]; /* two quanta and the NUL: 6 bytes */
	bodyrec br;
	bodyrec_make(span_of("\x01\x02\x03\x04\x05\x06\x07\x08", 8), 8, 8, small, sizeof(small),
	             &br);
	expect(br, "AQIDBAUG", true, true, 8);
	assert_int_equal(BODYREC_B64_ROOM(3), 5);
	assert_int_equal(BODYREC_B64_ROOM(4), 9);
}

static void test_is_text(void **state)
{
	(void)state;
	size_t n = 99;
	assert_true(bodyrec_is_text((const uint8_t *)"x\xc3", 2, true, &n));
	assert_int_equal(n, 1);
	assert_false(bodyrec_is_text((const uint8_t *)"x\xc3", 2, false, &n));
	/* a lead byte with as many continuation bytes as it wants but invalid: not a cut */
	assert_false(bodyrec_is_text((const uint8_t *)"x\xe0\x80\x80", 4, true, &n));
	assert_true(bodyrec_is_text((const uint8_t *)"\t\r\n", 3, false, &n));
	assert_int_equal(n, 3);
	assert_false(bodyrec_is_text((const uint8_t *)"\v", 1, false, &n));
}

/* The event emit_event writes for e, as the audit writer (a real one, sync) put it in the
 * trail: the line's text. */
static char *emitted(const emit_rec *e)
{
	char dir[] = "/tmp/test_bodyrecXXXXXX", cmd[128];
	audit_options o;
	audit_writer *w = NULL;
	static char text[64 << 10];

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.durability = AUDIT_DURABILITY_SYNC;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(emit_event(w, NULL, e), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	snprintf(cmd, sizeof(cmd), "cat %s/audit-*.jsonl", dir);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	assert_int_equal(pclose(f), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	char *ev = strstr(text, "\"type\":\"http.request\"");
	assert_non_null(ev);
	return ev;
}

static void test_event_never_refused(void **state)
{
	(void)state;
	static char path[4001], reason[2001], quotes[CFG_MAX_AUDIT_BODY_RECORD];
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	memset(reason, 'r', sizeof(reason) - 1);
	memset(quotes, '"', sizeof(quotes)); /* text that escapes to twice its bytes */
	emit_rec e = {
		.type = "http.request",
		.request_id = "req-1",
		.principal = "alice",
		.auth = "api_key",
		.remote = "127.0.0.1:1",
		.method = SPAN_LIT("POST"),
		.path = span_of(path, strlen(path)),
		.status = 200,
		.decision = "allow",
		.reason = "ok",
		.audit_level = "bodies",
		.req_body_sha256 = "00",
		.resp_body_sha256 = "11",
		.req_body_on = true,
		.resp_body_on = true,
		.req_body = span_of(quotes, sizeof(quotes)),
		.req_body_len = 5000,
		.resp_body = span_of(quotes, sizeof(quotes)),
		.resp_body_len = sizeof(quotes),
		.body_max = CFG_MAX_AUDIT_BODY_RECORD,
	};
	/* a path of 4000 bytes and two bodies at the largest cap: the path is cut, the bodies
	 * stay whole (up to the cap) */
	char *ev = emitted(&e);
	assert_non_null(strstr(ev, "\"truncated\":true"));
	assert_non_null(strstr(ev, "\"request_body_length\":5000,\"request_body_truncated\":true"));
	assert_non_null(
	        strstr(ev, "\"response_body_encoding\":\"utf-8\",\"response_body_length\":1536,"));
	assert_null(strstr(ev, "\"response_body_truncated\""));
	char want[2 * CFG_MAX_AUDIT_BODY_RECORD + 32];
	int k = snprintf(want, sizeof(want), "\"response_body\":\"");
	for (size_t i = 0; i < CFG_MAX_AUDIT_BODY_RECORD; i++)
		k += snprintf(want + k, sizeof(want) - (size_t)k, "\\\"");
	snprintf(want + k, sizeof(want) - (size_t)k, "\",");
	assert_non_null(strstr(ev, want));

	/* path and reason that fill a cut event: the bodies are cut to nothing, their lengths
	 * and the digests stay, the event is written */
	memset(path + 1, 0xff, sizeof(path) - 2); /* each byte is U+FFFD: three in the JSON */
	e.reason = reason;
	ev = emitted(&e);
	assert_non_null(strstr(ev, "\"request_body_sha256\":\"00\""));
	assert_non_null(strstr(ev, "\"request_body\":\"\",\"request_body_encoding\":\"utf-8\","
	                           "\"request_body_length\":5000,\"request_body_truncated\":true"));
	assert_non_null(strstr(ev,
	                       "\"response_body\":\"\",\"response_body_encoding\":\"utf-8\","
	                       "\"response_body_length\":1536,\"response_body_truncated\":true"));
	assert_non_null(strstr(ev, "\"truncated\":true"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_verbatim),
		cmocka_unit_test(test_binary_is_base64),
		cmocka_unit_test(test_cut),
		cmocka_unit_test(test_capture_shorter_than_body),
		cmocka_unit_test(test_small_b64_buffer),
		cmocka_unit_test(test_is_text),
		cmocka_unit_test(test_event_never_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
