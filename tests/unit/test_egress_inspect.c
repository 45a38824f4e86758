/*
 * Egress content inspection helpers (proxy/egress_inspect.c): JSON documents inspected on
 * their decoded string values with masks on the escaped bytes, keys and numbers as sent; the
 * media types that select JSON and NDJSON; the Content-Length written behind an inspected
 * request head; request paths inspected segment by segment (egress_inspect_path); the count
 * of egress.inspect.max_held (egress_held_grow). The end-to-end
 * behaviour is tests/integration/egress_inspect.sh and egress_inspect_held.sh.
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
#include "proxy/egress_int.h"

static inspect_engine *eng;
static inspect_scratch *scr;
static inspect_profile prof;

static int setup(void **state)
{
	(void)state;
	/* a custom detector whose matches cross a form separator (test_form) */
	static const char *const pats[] = { "TKT[=&][0-9]{4}" };
	static const inspect_custom_def ticket = { .name = "ticket",
		                                   .patterns = pats,
		                                   .n_patterns = 1 };
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL,
		                  .custom = &ticket,
		                  .n_custom = 1 };
	if (inspect_engine_new(&o, &eng) != CUSTOS_OK ||
	    inspect_scratch_new(eng, &scr) != CUSTOS_OK)
		return -1;
	memset(&prof, 0, sizeof(prof));
	inspect_profile_set(&prof, INSPECT_PAYMENT_CARD, INSPECT_ACT_REDACT);
	inspect_profile_set(&prof, INSPECT_EMAIL, INSPECT_ACT_REDACT);
	inspect_profile_set(&prof, INSPECT_AWS_ACCESS_KEY, INSPECT_ACT_DENY);
	inspect_profile_set(&prof, INSPECT_IPV4, INSPECT_ACT_LOG);
	inspect_profile_set(&prof, INSPECT_BUILTIN_COUNT, INSPECT_ACT_REDACT);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	inspect_scratch_free(scr);
	inspect_engine_free(eng);
	return 0;
}

/* Runs one document; *out gets the result as a C string (caller frees). */
static custos_err run(const char *doc, char **out, inspect_summary *sum)
{
	buf tmp, o;
	buf_init(&tmp, 1 << 20);
	buf_init(&o, 1 << 20);
	inspect_summary_init(sum);
	custos_err e = egress_inspect_json_doc(eng, scr, &prof, span_cstr(doc), &tmp, &o, sum);
	*out = span_dup(buf_span(&o));
	buf_free(&tmp);
	buf_free(&o);
	return e;
}

/* Values written with JSON escapes are found in their decoded form; the masks replace the
 * escaped bytes and the document stays valid. */
static void test_json_escapes(void **state)
{
	(void)state;
	static const char *const docs[] = {
		"{\"c\":\"\\u0034111111111111111\"}",
		"{\"c\":\"4111\\u00201111\\u00201111\\u00201111\"}",
		"[\"card: 4111\\u002d1111-1111\\u002D1111 ok\"]",
		"{\"u\":\"mailto:jane.doe\\u0040example\\u002ecom\"}",
		"{\"u\":\"https:\\/\\/x\\/jane.doe@example.com\\/\"}",
		"{\"a\":{\"b\":[1,2,{\"c\":\"x \\u0034\\u0031\\u0031\\u0031111111111111 y\"}]}}",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(docs); i++) {
		char *out;
		inspect_summary sum;
		assert_int_equal(run(docs[i], &out, &sum), CUSTOS_OK);
		assert_true(sum.redacted);
		assert_int_equal(sum.total, 1);
		assert_non_null(strstr(out, "[REDACTED:"));
		assert_null(strstr(out, "1111"));
		assert_null(strstr(out, "jane"));
		assert_null(strstr(out, "\\u0034"));
		assert_true(inspect_json_valid(span_cstr(out)));
		free(out);
	}
}

/* A deny detector behind an escape denies; its id is reported, never the value. */
static void test_json_deny(void **state)
{
	(void)state;
	char *out;
	inspect_summary sum;
	assert_int_equal(run("{\"k\":\"AKIA\\u0049OSFODNN7EXAMPLE\"}", &out, &sum),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(sum.deny_detector, INSPECT_AWS_ACCESS_KEY);
	free(out);
	/* as a member name too (keys are inspected as sent) */
	assert_int_equal(run("{\"AKIAIOSFODNN7EXAMPLE\":true}", &out, &sum), CUSTOS_ERR_DENIED);
	free(out);
}

/* Keys and numbers, which the JSON pass leaves alone, are inspected as sent: a number becomes
 * the mask as a string, a key gets the mask inside its quotes. */
static void test_json_keys_numbers(void **state)
{
	(void)state;
	char *out;
	inspect_summary sum;
	assert_int_equal(run("{\"card\": 4111111111111111, \"n\": 7}", &out, &sum), CUSTOS_OK);
	assert_string_equal(out, "{\"card\": \"[REDACTED:PAYMENT_CARD]\", \"n\": 7}");
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
	free(out);
	assert_int_equal(run("{\"jane.doe@example.com\" : [1]}", &out, &sum), CUSTOS_OK);
	assert_string_equal(out, "{\"[REDACTED:EMAIL]\" : [1]}");
	free(out);
	/* logged, not changed; counted once although both passes see the string value */
	assert_int_equal(run("{\"ip\":\"10.1.2.3\",\"x\":\"y\"}", &out, &sum), CUSTOS_OK);
	assert_string_equal(out, "{\"ip\":\"10.1.2.3\",\"x\":\"y\"}");
	assert_int_equal(sum.count[INSPECT_IPV4], 1);
	assert_false(sum.redacted);
	free(out);
	/* a key or number under arguments or an input object (which the JSON pass inspects in a
	 * request body) is counted once too; a key of JSON inside a string is the JSON pass's */
	static const char *const once[] = { "{\"input\":{\"10.1.2.3\":1}}",
		                            "{\"arguments\":{\"a\":[{\"10.1.2.3\":true}]}}",
		                            "{\"x\":\"{\\\"10.1.2.3\\\":1}\"}" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(once); i++) {
		assert_int_equal(run(once[i], &out, &sum), CUSTOS_OK);
		assert_string_equal(out, once[i]);
		assert_int_equal(sum.count[INSPECT_IPV4], 1);
		free(out);
	}
	assert_int_equal(run("{\"arguments\":{\"n\":4111111111111111}}", &out, &sum), CUSTOS_OK);
	assert_string_equal(out, "{\"arguments\":{\"n\":\"[REDACTED:PAYMENT_CARD]\"}}");
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
	free(out);
}

/* Negative: not JSON is an error the caller fails closed on; white space alone and a BOM are
 * passed as they are. */
static void test_json_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = { "{\"a\":", "{'a':1}", "4111 1111 1111 1111",
		                           "{\"a\":1} x", "\"\\u00zz\"" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		char *out;
		inspect_summary sum;
		assert_int_equal(run(bad[i], &out, &sum), CUSTOS_ERR_PARSE);
		free(out);
	}
	char *out;
	inspect_summary sum;
	assert_int_equal(run(" \r\n", &out, &sum), CUSTOS_OK);
	assert_string_equal(out, " \r\n");
	free(out);
	assert_int_equal(run("\xef\xbb\xbf{\"c\":\"4111111111111111\"}", &out, &sum), CUSTOS_OK);
	assert_string_equal(out, "\xef\xbb\xbf{\"c\":\"[REDACTED:PAYMENT_CARD]\"}");
	free(out);
}

static http1_head *head(const char *ctype, const char *encoding)
{
	http1_head *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h->version = 11;
	h->framing = HTTP1_BODY_LENGTH;
	if (ctype)
		h->hdrs[h->nhdrs++] = (http1_header){ SPAN_LIT("Content-Type"), span_cstr(ctype) };
	if (encoding)
		h->hdrs[h->nhdrs++] =
		        (http1_header){ SPAN_LIT("Content-Encoding"), span_cstr(encoding) };
	return h;
}

static void test_body_kind(void **state)
{
	(void)state;
	static const struct {
		const char *ct, *enc;
		egress_body_kind k;
	} cases[] = {
		{ "application/json", NULL, EBODY_JSON },
		{ "Application/JSON; charset=utf-8", NULL, EBODY_JSON },
		{ "application/problem+json", NULL, EBODY_JSON },
		{ "application/x-ndjson", NULL, EBODY_NDJSON },
		{ "application/jsonl", NULL, EBODY_NDJSON },
		{ "text/plain", NULL, EBODY_RAW },
		{ "application/jsonx", NULL, EBODY_RAW },
		{ "json", NULL, EBODY_RAW },
		{ NULL, NULL, EBODY_RAW },
		{ "application/json", "gzip", EBODY_ENCODED },
		{ "application/json", "identity", EBODY_JSON },
		{ "application/x-www-form-urlencoded", NULL, EBODY_FORM },
		{ "Application/X-WWW-Form-Urlencoded; charset=UTF-8", NULL, EBODY_FORM },
		{ "multipart/form-data; boundary=x", NULL, EBODY_MULTIPART },
		{ "multipart/mixed; boundary=x", NULL, EBODY_MULTIPART },
		{ "Multipart/Related; type=\"application/json\"; boundary=x", NULL,
		  EBODY_MULTIPART },
		{ "multipart/", NULL, EBODY_RAW },
		{ "multipartx/mixed", NULL, EBODY_RAW },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		http1_head *h = head(cases[i].ct, cases[i].enc);
		assert_int_equal(egress_body_kind_of(h), cases[i].k);
		free(h);
	}
}

/* Runs one form body; *out gets the result as a C string (caller frees). */
static custos_err run_form(const char *body, char **out, inspect_summary *sum)
{
	buf dec, o;
	buf_init(&dec, 1 << 20);
	buf_init(&o, 1 << 20);
	inspect_summary_init(sum);
	custos_err e = egress_inspect_form(eng, scr, &prof, span_cstr(body), &dec, &o, sum);
	*out = span_dup(buf_span(&o));
	buf_free(&dec);
	buf_free(&o);
	return e;
}

static void test_form(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
		/* values and names percent-decoded, '+' a space; the mask percent-encoded over the
		 * encoded bytes, the other fields as sent */
		{ "to=jane.doe%40example.com&n=1", "to=%5BREDACTED%3AEMAIL%5D&n=1" },
		{ "c=%34%31%31%31+1111+1111+1111&x=%41", "c=%5BREDACTED%3APAYMENT_CARD%5D&x=%41" },
		{ "jane.doe%40example%2Ecom=x", "%5BREDACTED%3AEMAIL%5D=x" },
		{ "a=jane.doe@example.com", "a=%5BREDACTED%3AEMAIL%5D" },
		/* a finding over a literal separator: each side masked, the separator kept */
		{ "a=TKT=1234&b=2", "a=%5BREDACTED%3ATICKET%5D=%5BREDACTED%3ATICKET%5D&b=2" },
		{ "a=TK%54%261234", "a=%5BREDACTED%3ATICKET%5D" },
		/* a literal '&' or '=' ends a value: no value is read across fields */
		{ "c=4111+1111&d=1111+1111", "c=4111+1111&d=1111+1111" },
		/* hyphens written %2D: the card is one value */
		{ "c=4111%2D1111%2D1111%2D1111", "c=%5BREDACTED%3APAYMENT_CARD%5D" },
		/* clean and logged bodies unchanged, bytes as sent */
		{ "a=b&c=d%20e+f&empty=&=", "a=b&c=d%20e+f&empty=&=" },
		{ "ip=10.0.0.1", "ip=10.0.0.1" },
		{ "", "" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		char *out;
		inspect_summary sum;
		assert_int_equal(run_form(cases[i].in, &out, &sum), CUSTOS_OK);
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("form %zu: '%s' -> '%s', want '%s'", i, cases[i].in, out,
			         cases[i].want);
		free(out);
	}
	char *out;
	inspect_summary sum;
	assert_int_equal(run_form("c=%34111 1111 1111 1111&m=x%40y.example", &out, &sum),
	                 CUSTOS_OK);
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
	free(out);
	/* deny behind percent-encoding */
	assert_int_equal(run_form("k=AKIA%49OSFODNN7EXAMPLE", &out, &sum), CUSTOS_ERR_DENIED);
	assert_int_equal(sum.deny_detector, INSPECT_AWS_ACCESS_KEY);
	free(out);
	/* invalid percent-encoding: refused, never inspected as raw text */
	static const char *const bad[] = { "a=%4", "a=%zz&b=1", "a=%", "%g0=1", "a=%4%31" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		assert_int_equal(run_form(bad[i], &out, &sum), CUSTOS_ERR_PARSE);
		free(out);
	}
}

/* Runs one multipart body with boundary "XyZ"; *out as a C string (caller frees). */
/* Runs one request path (with or without a query): the status, the audited form in aud. */
static custos_err run_path(const char *path, char *aud, size_t cap, inspect_summary *sum, int *rdet)
{
	buf dec;
	buf_init(&dec, strlen(path) + 1);
	inspect_summary_init(sum);
	custos_err e =
	        egress_inspect_path(eng, scr, &prof, span_cstr(path), &dec, sum, rdet, aud, cap);
	buf_free(&dec);
	return e;
}

static void test_path(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		custos_err e;
		int det; /* the deny detector (DENIED) or redact detector (UNSUPPORTED), else -1 */
		const char *aud;
	} cases[] = {
		/* nothing found: audited as sent, the query dropped ('+' is itself in a path) */
		{ "/v1/items/abc-123/x+y%20z?to=jane.doe%40example.com", CUSTOS_OK, -1,
		  "/v1/items/abc-123/x+y%20z" },
		{ "", CUSTOS_OK, -1, "" },
		{ "//a//", CUSTOS_OK, -1, "//a//" },
		/* a segment with a finding audited as its mask; the others as sent */
		{ "/v1/users/4111111111111111/orders", CUSTOS_ERR_UNSUPPORTED, INSPECT_PAYMENT_CARD,
		  "/v1/users/%5BREDACTED%3APAYMENT_CARD%5D/orders" },
		/* percent-encoded: %41 is 'A', %34 is '4', %40 is '@' */
		{ "/lookup/%41KIAIOSFODNN7EXAMPLE", CUSTOS_ERR_DENIED, INSPECT_AWS_ACCESS_KEY,
		  "/lookup/%5BREDACTED%3AAWS_ACCESS_KEY%5D" },
		{ "/c/%34111%201111%201111%201111", CUSTOS_ERR_UNSUPPORTED, INSPECT_PAYMENT_CARD,
		  "/c/%5BREDACTED%3APAYMENT_CARD%5D" },
		{ "/m/jane.doe%40example.com", CUSTOS_ERR_UNSUPPORTED, INSPECT_EMAIL,
		  "/m/%5BREDACTED%3AEMAIL%5D" },
		/* a deny wins over a redact; every segment with a finding is masked */
		{ "/a/jane.doe@example.com/AKIAIOSFODNN7EXAMPLE/b", CUSTOS_ERR_DENIED,
		  INSPECT_AWS_ACCESS_KEY,
		  "/a/%5BREDACTED%3AEMAIL%5D/%5BREDACTED%3AAWS_ACCESS_KEY%5D/b" },
		/* a log finding passes, masked in the audited path alone */
		{ "/hosts/10.1.2.3", CUSTOS_OK, -1, "/hosts/%5BREDACTED%3AIPV4%5D" },
		/* each segment on its own: a card split by '/' is not one value */
		{ "/4111/1111/1111/1111", CUSTOS_OK, -1, "/4111/1111/1111/1111" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		char aud[512];
		inspect_summary sum;
		int rdet = -2;
		custos_err e = run_path(cases[i].in, aud, sizeof(aud), &sum, &rdet);
		if (e != cases[i].e || strcmp(aud, cases[i].aud) != 0)
			fail_msg("path %zu: '%s' -> %d '%s', want %d '%s'", i, cases[i].in, (int)e,
			         aud, (int)cases[i].e, cases[i].aud);
		if (e == CUSTOS_ERR_DENIED)
			assert_int_equal(sum.deny_detector, cases[i].det);
		else
			assert_int_equal(rdet, cases[i].det);
	}
	/* the log finding is counted */
	char aud[512];
	inspect_summary sum;
	int rdet;
	assert_int_equal(run_path("/h/10.1.2.3", aud, sizeof(aud), &sum, &rdet), CUSTOS_OK);
	assert_int_equal(sum.count[INSPECT_IPV4], 1);
	/* invalid percent-encoding: refused, never inspected as raw text; the audited path
	 * stops before the segment that could not be read */
	static const char *const bad[] = { "/a/%4", "/a/%zz/b", "/a/%", "/%g0" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		assert_int_equal(run_path(bad[i], aud, sizeof(aud), &sum, &rdet), CUSTOS_ERR_PARSE);
		assert_null(strchr(aud + 1, '%'));
	}
	/* the audited path is cut to its room, never past it */
	assert_int_equal(run_path("/v1/users/4111111111111111", aud, 12, &sum, &rdet),
	                 CUSTOS_ERR_UNSUPPORTED);
	assert_string_equal(aud, "/v1/users/%");
	assert_int_equal(run_path("/abcdef", aud, 4, &sum, &rdet), CUSTOS_OK);
	assert_string_equal(aud, "/ab");
}

static custos_err run_mp(const char *body, char **out, inspect_summary *sum)
{
	buf tmp, dec, msk, o;
	buf_init(&tmp, 1 << 20);
	buf_init(&dec, 1 << 20);
	buf_init(&msk, 1 << 20);
	buf_init(&o, 1 << 20);
	inspect_summary_init(sum);
	custos_err e = egress_inspect_multipart(eng, scr, &prof, SPAN_LIT("XyZ"), span_cstr(body),
	                                        &tmp, &dec, &msk, &o, sum);
	*out = span_dup(buf_span(&o));
	buf_free(&tmp);
	buf_free(&dec);
	buf_free(&msk);
	buf_free(&o);
	return e;
}

#define MP_F(name) "--XyZ\r\nContent-Disposition: form-data; name=\"" name "\"\r\n"

static void test_multipart(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
		/* a clean body byte for byte: preamble, padding after a delimiter, an empty part
		 * content, a part without header fields, the epilogue */
		{ "pre\r\n" MP_F("a") "\r\nhello\r\n--XyZ \t\r\n\r\nno headers\r\n" MP_F(
		          "e") "\r\n\r\n--XyZ--\r\nepilogue",
		  "pre\r\n" MP_F("a") "\r\nhello\r\n--XyZ \t\r\n\r\nno headers\r\n" MP_F(
		          "e") "\r\n\r\n--XyZ--\r\nepilogue" },
		/* a part with header fields and no content section */
		{ MP_F("h") "\r\n--XyZ--", MP_F("h") "\r\n--XyZ--" },
		{ "--XyZ\r\n\r\n--XyZ--", "--XyZ\r\n\r\n--XyZ--" },
		/* text parts masked in place, the other parts as sent */
		{ MP_F("to") "\r\nmail jane.doe@example.com now\r\n" MP_F(
		          "n") "\r\n1\r\n--XyZ--\r\n",
		  MP_F("to") "\r\nmail [REDACTED:EMAIL] now\r\n" MP_F("n") "\r\n1\r\n--XyZ--\r\n" },
		/* a value in a file name (the header block is text too) */
		{ "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; "
		  "filename=\"jane.doe@example.com.txt\"\r\n\r\nx\r\n--XyZ--",
		  "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; "
		  "filename=\"[REDACTED:EMAIL]\"\r\n\r\nx\r\n--XyZ--" },
		/* base64: decoded for inspection, encoded again after masking */
		{ MP_F("b") "Content-Transfer-Encoding: base64\r\n\r\n"
		            "bWFpbCBqYW5lLmRvZUBleGFtcGxlLmNvbQ==\r\n--XyZ--",
		  MP_F("b") "Content-Transfer-Encoding: base64\r\n\r\n"
		            "bWFpbCBbUkVEQUNURUQ6RU1BSUxd\r\n--XyZ--" },
		/* base64 with nothing found: as sent (line breaks kept) */
		{ MP_F("b") "Content-Transfer-Encoding: BASE64\r\n\r\naGVs\r\nbG8=\r\n--XyZ--",
		  MP_F("b") "Content-Transfer-Encoding: BASE64\r\n\r\naGVs\r\nbG8=\r\n--XyZ--" },
		/* quoted-printable: =40 and a soft line break decoded, encoded again */
		{ MP_F("q") "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
		            "to jane.doe=40exam=\r\nple.com =3D\r\n--XyZ--",
		  MP_F("q") "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
		            "to [REDACTED:EMAIL] =3D\r\n--XyZ--" },
		/* re-encoded, a '-' never starts a line: "--XyZ" there would end the part */
		{ MP_F("q") "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
		            "=2D-XyZ to jane.doe@example.com\r\n--XyZ--",
		  MP_F("q") "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
		            "=2D-XyZ to [REDACTED:EMAIL]\r\n--XyZ--" },
		/* a JSON part on its decoded values, a form part percent-decoded */
		{ MP_F("j") "Content-Type: application/json\r\n\r\n"
		            "{\"m\":\"jane.doe\\u0040example.com\",\"c\":4111111111111111}\r\n--"
		            "XyZ--",
		  MP_F("j") "Content-Type: application/json\r\n\r\n"
		            "{\"m\":\"[REDACTED:EMAIL]\",\"c\":\"[REDACTED:PAYMENT_CARD]\"}\r\n--"
		            "XyZ--" },
		{ MP_F("f") "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
		            "to=jane.doe%40example.com&n=1\r\n--XyZ--",
		  MP_F("f") "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
		            "to=%5BREDACTED%3AEMAIL%5D&n=1\r\n--XyZ--" },
		/* octet-stream that is UTF-8 text: inspected as text */
		{ MP_F("o") "Content-Type: application/octet-stream\r\n\r\ncard 4111 1111 1111 "
		            "1111\r\n--XyZ--",
		  MP_F("o") "Content-Type: application/octet-stream\r\n\r\ncard "
		            "[REDACTED:PAYMENT_CARD]\r\n--XyZ--" },
		/* the boundary string inside a line is content, not a delimiter */
		{ MP_F("a") "\r\nx--XyZ\r\n--XyZ--", MP_F("a") "\r\nx--XyZ\r\n--XyZ--" },
		/* a multipart part (multipart/related inside multipart/mixed, as a mail or a
		 * media upload sends it): its parts inspected by the same rules, in place */
		{ "--XyZ\r\nContent-Type: multipart/related; boundary=\"In 1\"\r\n\r\n"
		  "--In 1\r\nContent-Type: "
		  "application/json\r\n\r\n{\"to\":\"jane.doe@example.com\"}"
		  "\r\n--In 1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
		  "bWFpbCBqYW5lLmRvZUBleGFtcGxlLmNvbQ==\r\n--In 1--\r\n--XyZ--",
		  "--XyZ\r\nContent-Type: multipart/related; boundary=\"In 1\"\r\n\r\n"
		  "--In 1\r\nContent-Type: application/json\r\n\r\n{\"to\":\"[REDACTED:EMAIL]\"}"
		  "\r\n--In 1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
		  "bWFpbCBbUkVEQUNURUQ6RU1BSUxd\r\n--In 1--\r\n--XyZ--" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		char *out;
		inspect_summary sum;
		custos_err e = run_mp(cases[i].in, &out, &sum);
		if (e != CUSTOS_OK || strcmp(out, cases[i].want) != 0)
			fail_msg("multipart %zu: %s: '%s' -> '%s', want '%s'", i,
			         custos_strerror(e), cases[i].in, out, cases[i].want);
		free(out);
	}
	char *out;
	inspect_summary sum;
	/* deny in a base64 part */
	assert_int_equal(run_mp(MP_F("k") "Content-Transfer-Encoding: base64\r\n\r\n"
	                                  "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=\r\n--XyZ--",
	                        &out, &sum),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(sum.deny_detector, INSPECT_AWS_ACCESS_KEY);
	free(out);
	/* malformed: refused, never inspected as raw text */
	static const char *const bad[] = {
		"no delimiter at all",
		MP_F("h") "--XyZ--", /* the header line's CRLF is the delimiter's */
		MP_F("a") "\r\nno closing delimiter",
		MP_F("a") "\r\nx\r\n--XyZjunk\r\n\r\ny\r\n--XyZ--",           /* delimiter + junk */
		"--XyZ\r\nContent-Disposition form-data\r\n\r\nx\r\n--XyZ--", /* no colon */
		"--XyZ\r\nA: b\r\n c\r\n\r\nx\r\n--XyZ--",                    /* folded */
		"--XyZ\nA: b\n\nx\n--XyZ--",                                  /* bare LF */
		MP_F("b") "Content-Transfer-Encoding: base64\r\n\r\nab!c\r\n--XyZ--",
		MP_F("b") "Content-Transfer-Encoding: base64\r\n\r\nab=c\r\n--XyZ--",
		MP_F("b") "Content-Transfer-Encoding: base64\r\n\r\nabc\r\n--XyZ--",
		MP_F("q") "Content-Transfer-Encoding: quoted-printable\r\n\r\na=4\r\n--XyZ--",
		MP_F("x") "Content-Transfer-Encoding: x-uuencode\r\n\r\na\r\n--XyZ--",
		MP_F("x") "Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\na\r\n--XyZ--",
		MP_F("j") "Content-Type: application/json\r\n\r\n{\"a\":\r\n--XyZ--",
		MP_F("f") "Content-Type: application/x-www-form-urlencoded\r\n\r\na=%zz\r\n--XyZ--",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		custos_err e = run_mp(bad[i], &out, &sum);
		if (e != CUSTOS_ERR_PARSE)
			fail_msg("multipart bad %zu: %s, want a parse error", i,
			         custos_strerror(e));
		free(out);
	}
	/* a multipart part: a deny inside it; malformed inside it (and under a transfer
	 * encoding, RFC 2046 5.1, or without a boundary) is malformed; encrypted cannot be
	 * inspected; nesting is bounded */
#define MP_IN(ct, body) "--XyZ\r\nContent-Type: " ct "\r\n\r\n" body "\r\n--XyZ--"
	assert_int_equal(run_mp(MP_IN("multipart/mixed; boundary=b",
	                              "--b\r\n\r\nkey AKIAIOSFODNN7EXAMPLE\r\n--b--"),
	                        &out, &sum),
	                 CUSTOS_ERR_DENIED);
	free(out);
	static const char *const nbad[] = {
		MP_IN("multipart/mixed; boundary=b", "--b\r\n\r\nx\r\n--bjunk--"),
		MP_IN("multipart/mixed; boundary=b", "no delimiter"),
		MP_IN("multipart/mixed", "--b\r\n\r\nx\r\n--b--"),
		("--XyZ\r\nContent-Type: multipart/mixed; boundary=b\r\n"
		 "Content-Transfer-Encoding: base64\r\n\r\nLS1iLS0=\r\n--XyZ--"),
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(nbad); i++) {
		custos_err e = run_mp(nbad[i], &out, &sum);
		if (e != CUSTOS_ERR_PARSE)
			fail_msg("nested multipart bad %zu: %s, want a parse error", i,
			         custos_strerror(e));
		free(out);
	}
	assert_int_equal(
	        run_mp(MP_IN("multipart/encrypted; boundary=b", "--b\r\n\r\nVersion: 1\r\n--b--"),
	               &out, &sum),
	        CUSTOS_ERR_UNSUPPORTED);
	free(out);
	/* four levels (the body and three inside it) are read; a fifth is past the limit */
	const char *d4 = MP_IN("multipart/mixed; boundary=b",
	                       "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
	                       "--c\r\nContent-Type: multipart/mixed; boundary=d\r\n\r\n"
	                       "--d\r\n\r\njane.doe@example.com\r\n--d--\r\n--c--\r\n--b--");
	assert_int_equal(run_mp(d4, &out, &sum), CUSTOS_OK);
	assert_non_null(strstr(out, "\r\n[REDACTED:EMAIL]\r\n--d--"));
	free(out);
	const char *d5 = MP_IN("multipart/mixed; boundary=b",
	                       "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
	                       "--c\r\nContent-Type: multipart/mixed; boundary=d\r\n\r\n"
	                       "--d\r\nContent-Type: multipart/mixed; boundary=e\r\n\r\n"
	                       "--e\r\n\r\nx\r\n--e--\r\n--d--\r\n--c--\r\n--b--");
	assert_int_equal(run_mp(d5, &out, &sum), CUSTOS_ERR_LIMIT);
	free(out);
#undef MP_IN
	/* a part that is not text (or content-encoded) cannot be inspected */
	assert_int_equal(
	        run_mp(MP_F("p") "Content-Type: image/png\r\n\r\n\x89PNG\x01\x02\r\n--XyZ--", &out,
	               &sum),
	        CUSTOS_ERR_UNSUPPORTED);
	free(out);
	assert_int_equal(
	        run_mp(MP_F("g") "Content-Encoding: gzip\r\n\r\nabc\r\n--XyZ--", &out, &sum),
	        CUSTOS_ERR_UNSUPPORTED);
	free(out);
	/* bounded: parts, header bytes */
	buf big;
	buf_init(&big, 1 << 20);
	for (unsigned i = 0; i < 257; i++)
		assert_int_equal(buf_append_cstr(&big, "--XyZ\r\n\r\nx\r\n"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&big, "--XyZ--"), CUSTOS_OK);
	assert_int_equal(buf_append_byte(&big, 0), CUSTOS_OK);
	assert_int_equal(run_mp((const char *)buf_ptr(&big), &out, &sum), CUSTOS_ERR_LIMIT);
	free(out);
	buf_reset(&big);
	assert_int_equal(buf_append_cstr(&big, "--XyZ\r\nA: "), CUSTOS_OK);
	for (unsigned i = 0; i < 9000; i++)
		assert_int_equal(buf_append_byte(&big, 'a'), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&big, "\r\n\r\nx\r\n--XyZ--"), CUSTOS_OK);
	assert_int_equal(buf_append_byte(&big, 0), CUSTOS_OK);
	assert_int_equal(run_mp((const char *)buf_ptr(&big), &out, &sum), CUSTOS_ERR_LIMIT);
	free(out);
	buf_free(&big);
}

static void test_multipart_boundary(void **state)
{
	(void)state;
	char b[EGRESS_MP_BOUNDARY_MAX + 1];
	size_t n;
	assert_true(
	        egress_multipart_boundary(SPAN_LIT("multipart/form-data; boundary=abc"), b, &n));
	assert_string_equal(b, "abc");
	assert_true(egress_multipart_boundary(
	        SPAN_LIT("multipart/form-data; charset=utf-8; BOUNDARY=\"a b:c\""), b, &n));
	assert_string_equal(b, "a b:c");
	assert_int_equal(n, 5);
	assert_true(
	        egress_multipart_boundary(SPAN_LIT("multipart/form-data;; boundary=q ; "), b, &n));
	assert_string_equal(b, "q");
	static const char *const bad[] = {
		"multipart/form-data",
		"multipart/form-data; boundary=",
		"multipart/form-data; boundary=\"\"",
		"multipart/form-data; boundary=a; boundary=b",
		"multipart/form-data; boundary=\"a\\\"b\"",
		"multipart/form-data; boundary=\"ab \"",
		"multipart/form-data; boundary=a{b",
		"multipart/form-data; boundary=\"ab\"x",
		/* 71 characters, one over RFC 2046's limit (parenthesised: one element, for clang) */
		("multipart/form-data; boundary=12345678901234567890123456789012345678901234567890"
		 "123456789012345678901"),
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++)
		if (egress_multipart_boundary(span_cstr(bad[i]), b, &n))
			fail_msg("boundary accepted: %s", bad[i]);
	/* a NUL inside (found by fuzz_egress: strchr matched the terminator) */
	static const char nul[] = "multipart/form-data; boundary=\"a\0b\"";
	assert_false(egress_multipart_boundary(span_of(nul, sizeof(nul) - 1), b, &n));
}

static void test_head_set_length(void **state)
{
	(void)state;
	buf b;
	buf_init(&b, 64);
	assert_int_equal(buf_append_cstr(&b, "POST /x HTTP/1.1\r\nHost: a\r\n\r\n"), CUSTOS_OK);
	assert_int_equal(egress_head_set_length(&b, 12345), CUSTOS_OK);
	assert_memory_equal(buf_ptr(&b),
	                    "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12345\r\n\r\n",
	                    buf_used(&b));
	/* negative: no empty line at the end; no room (the head is left as it was) */
	buf_reset(&b);
	assert_int_equal(buf_append_cstr(&b, "POST /x HTTP/1.1\r\nHost: a\r\n"), CUSTOS_OK);
	assert_int_equal(egress_head_set_length(&b, 1), CUSTOS_ERR_INVAL);
	buf_reset(&b);
	assert_int_equal(
	        buf_append_cstr(&b, "POST /xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx HTTP/1.1\r\n\r\n"),
	        CUSTOS_OK);
	size_t n = buf_used(&b);
	assert_int_not_equal(egress_head_set_length(&b, 1), CUSTOS_OK);
	assert_int_equal(buf_used(&b), n);
	assert_memory_equal(buf_ptr(&b) + n - 4, "\r\n\r\n", 4);
	buf_free(&b);
}

/* egress_forward_target: the path in policy_path_normalize's spelling (the one egress_decide
 * judged), the query from its '?' byte for byte, masks included; "/" for an absolute URI
 * without a path; a path the normaliser refuses is an error, never forwarded as sent. */
static void test_forward_target(void **state)
{
	(void)state;
	static const struct {
		const char *sent, *want;
	} ok[] = {
		{ "//api//x", "/api/x" },
		{ "/api/%78", "/api/x" },
		{ "/%61pi/x?q=%2F//", "/api/x?q=%2F//" },
		{ "/api//y%7e%3a/", "/api/y~%3A/" },
		{ "///a?", "/a?" },
		{ "/a?to=%5BREDACTED%3AEMAIL%5D&n=1", "/a?to=%5BREDACTED%3AEMAIL%5D&n=1" },
		{ "/v1/items/x+y%20z/~n?q=a%20b", "/v1/items/x+y%20z/~n?q=a%20b" },
		{ "", "/" },
		{ "?q=1", "/?q=1" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ok); i++) {
		buf b;
		assert_int_equal(egress_forward_target(span_cstr(ok[i].sent), &b), CUSTOS_OK);
		span t = buf_span(&b);
		if (!span_eq(t, span_cstr(ok[i].want)))
			fail_msg("%s: got %.*s, want %s", ok[i].sent, (int)t.len, t.ptr,
			         ok[i].want);
		buf_free(&b);
	}
	/* negative: spellings egress_decide refuses with 400 are not forwarded either */
	static const char *const bad[] = { "/a/%2Fb", "/a/%5c", "/a/%00", "/a/../b", "/a/%2e/b" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		buf b;
		assert_int_equal(egress_forward_target(span_cstr(bad[i]), &b), CUSTOS_ERR_INTERNAL);
		buf_free(&b);
	}
}

/* egress_held_grow: a buffer's capacity is counted against egress.inspect.max_held before
 * it is allocated (the count never below it), a growth that would pass the bound is refused
 * with nothing allocated or counted, the bound itself can be reached exactly, and giving
 * back returns the count to 0. */
static void test_held_grow(void **state)
{
	(void)state;
	egress_server *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	s->o.inspect_max_held = 100000;
	atomic_init(&s->insp_held, 0);
	char piece[1000];
	memset(piece, 'a', sizeof(piece));

	buf a;
	uint64_t ca = 0;
	buf_init(&a, 60000);
	for (int i = 0; i < 60; i++) {
		assert_int_equal(egress_held_grow(s, &a, &ca, sizeof(piece)), CUSTOS_OK);
		assert_int_equal(buf_append(&a, piece, sizeof(piece)), CUSTOS_OK);
		assert_true(ca >= a.cap);
		assert_int_equal(atomic_load(&s->insp_held), ca);
	}
	assert_true(ca <= 60001); /* never past the buffer's maximum + 1 */
	/* past its own maximum: refused as a limit */
	assert_int_equal(egress_held_grow(s, &a, &ca, 1), CUSTOS_ERR_LIMIT);

	buf b;
	uint64_t cb = 0;
	buf_init(&b, 60000);
	assert_int_equal(egress_held_grow(s, &b, &cb, 50000), CUSTOS_ERR_AGAIN);
	assert_int_equal(cb, 0);
	assert_int_equal(b.cap, 0);
	assert_int_equal(atomic_load(&s->insp_held), ca);
	/* what is left, to the byte (its capacity is the data and buf_reserve's one spare) */
	size_t left = (size_t)(100000 - ca) - 1;
	b.max = left;
	assert_int_equal(egress_held_grow(s, &b, &cb, left), CUSTOS_OK);
	assert_true(cb >= b.cap);
	assert_int_equal(atomic_load(&s->insp_held), 100000);
	buf c;
	uint64_t cc = 0;
	buf_init(&c, 10);
	assert_int_equal(egress_held_grow(s, &c, &cc, 1), CUSTOS_ERR_AGAIN);

	buf_free(&a);
	egress_held_give(s, &ca);
	buf_free(&b);
	egress_held_give(s, &cb);
	assert_int_equal(ca + cb, 0);
	assert_int_equal(atomic_load(&s->insp_held), 0);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_escapes),
		cmocka_unit_test(test_json_deny),
		cmocka_unit_test(test_json_keys_numbers),
		cmocka_unit_test(test_json_invalid),
		cmocka_unit_test(test_body_kind),
		cmocka_unit_test(test_head_set_length),
		cmocka_unit_test(test_forward_target),
		cmocka_unit_test(test_form),
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_multipart_boundary),
		cmocka_unit_test(test_held_grow),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
