/*
 * JSON-aware redaction of OpenAI request bodies: string values are inspected after
 * unescaping, the body's keys and structure never (the keys and numbers of tool-call
 * arguments and of JSON inside a string are content); masks keep the body valid JSON (checked by an
 * independent validator) and escapes outside a mask are kept byte for byte. Text values
 * (contents, parts, input..., and the string values of tool-call arguments) are also
 * inspected joined: a value split over two of them is masked piece by piece.
 */
#include "test_inspect_util.h"

static char *redact_json(const inspect_profile *p, const char *body, custos_err want,
                         inspect_summary *sum)
{
	buf out;
	buf_init(&out, 1u << 24);
	custos_err r = inspect_json_redact(E, S, p, span_cstr(body), &out, sum);
	if (r != want)
		fprintf(stderr, "json: %s\n", err_msg());
	assert_int_equal(r, want);
	char *s = ti_dup(&out);
	buf_free(&out);
	return s;
}

/* Must show: a redacted request body still parses as JSON and no longer holds the value. */
static void test_chat_request(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_EMAIL, INSPECT_ACT_REDACT);
	inspect_profile_set(&p, INSPECT_PAYMENT_CARD, INSPECT_ACT_REDACT);
	const char *body = "{\"model\":\"llama-8b\",\"stream\":true,\"messages\":["
	                   "{\"role\":\"system\",\"content\":\"You are helpful.\"},"
	                   "{\"role\":\"user\",\"content\":\"Email jane.doe@example.org my card "
	                   "4111 1111 1111 "
	                   "1111, \\\"quoted\\\"\\nthanks\"}],\"max_tokens\":64}";
	assert_true(ti_json_ok(body));
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_true(ti_json_ok(r));
	assert_true(inspect_json_valid(span_cstr(r)));
	assert_null(strstr(r, "jane.doe"));
	assert_null(strstr(r, "4111"));
	assert_string_equal(r, "{\"model\":\"llama-8b\",\"stream\":true,\"messages\":["
	                       "{\"role\":\"system\",\"content\":\"You are helpful.\"},"
	                       "{\"role\":\"user\",\"content\":\"Email [REDACTED:EMAIL] my card "
	                       "[REDACTED:PAYMENT_CARD], \\\"quoted\\\"\\nthanks\"}],"
	                       "\"max_tokens\":64}");
	assert_true(sum.redacted);
	assert_int_equal(sum.count[INSPECT_EMAIL], 1);
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
	free(r);
}

/* "\u0040" is '@': the value is found in the unescaped text and the escape is masked whole. */
static void test_escaped_value(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":"
	                   "\"mail john\\u0040example.com\\tnow\"}]}";
	char *r = redact_json(&p, body, CUSTOS_OK, NULL);
	assert_string_equal(r, "{\"messages\":[{\"role\":\"user\",\"content\":"
	                       "\"mail [REDACTED:EMAIL]\\tnow\"}]}");
	assert_true(ti_json_ok(r));
	free(r);
	/* Every character escaped: still found, and the escapes around it survive. */
	body = "[\"\\u0034\\u0031\\u0031\\u0031\\u0020\\u0031\\u0031\\u0031\\u0031 1111 1111\\/\"]";
	r = redact_json(&p, body, CUSTOS_OK, NULL);
	assert_string_equal(r, "[\"[REDACTED:PAYMENT_CARD]\\/\"]");
	free(r);
	/* Multi-byte escapes right next to a value are kept as they were. */
	body = "[\"caf\\u00e9 a@example.com\\u00e9\"]";
	r = redact_json(&p, body, CUSTOS_OK, NULL);
	assert_string_equal(r, "[\"caf\\u00e9 [REDACTED:EMAIL]\\u00e9\"]");
	free(r);
	/* Surrogate pairs and literal UTF-8 next to a value. */
	body = "{\"c\":\"\\ud83d\\ude00 ssn 123-45-6789 \xf0\x9f\x98\x80\"}";
	r = redact_json(&p, body, CUSTOS_OK, NULL);
	assert_string_equal(r, "{\"c\":\"\\ud83d\\ude00 ssn [REDACTED:US_SSN] \xf0\x9f\x98\x80\"}");
	free(r);
	/* An escaped quote right after the value stays an escaped quote. */
	body = "{\"c\":\"key \\\"AKIAIOSFODNN7EXAMPLE\\\" end\"}";
	r = redact_json(&p, body, CUSTOS_OK, NULL);
	assert_string_equal(r, "{\"c\":\"key \\\"[REDACTED:AWS_ACCESS_KEY]\\\" end\"}");
	assert_true(ti_json_ok(r));
	free(r);
}

/* Tool-call arguments are a JSON document inside a string: redacted inside, both levels
 * stay valid. */
static void test_tool_call_arguments(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	const char *body =
	        "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"call_1\","
	        "\"type\":\"function\",\"function\":{\"name\":\"charge\",\"arguments\":"
	        "\"{\\\"card\\\":\\\"4242424242424242\\\",\\\"email\\\":\\\"a@b.example.com\\\"}\"}"
	        "}]},"
	        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"charged IBAN "
	        "DE89370400440532013000\"}]}";
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_true(ti_json_ok(r));
	assert_null(strstr(r, "4242"));
	assert_null(strstr(r, "a@b"));
	assert_null(strstr(r, "DE89"));
	const char *args = strstr(r, "\"arguments\":\"");
	assert_non_null(args);
	/* unescape the arguments string by hand and check it is JSON too */
	char inner[256];
	size_t k = 0;
	for (const char *c = args + 13; *c != '"' && k + 1 < sizeof(inner); c++) {
		if (*c == '\\')
			c++;
		inner[k++] = *c;
	}
	inner[k] = '\0';
	assert_string_equal(
	        inner, "{\"card\":\"[REDACTED:PAYMENT_CARD]\",\"email\":\"[REDACTED:EMAIL]\"}");
	assert_true(ti_json_ok(inner));
	assert_int_equal(sum.total, 3);
	free(r);
}

/* Content parts, keys not inspected, numbers not inspected, nothing found = identical. */
/* JSON inside a string is walked as JSON: its escapes are decoded (a digit written \\u0034
 * inside the arguments is a digit), a number is inspected and masked as a string, and the
 * arguments stay a valid JSON document. Legacy function_call.arguments the same. */
static void test_arguments_inner_json(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	inspect_summary sum;
	/* \\u0034111... : a card once the inner document is unescaped */
	const char *esc = "{\"function_call\":{\"name\":\"f\",\"arguments\":"
	                  "\"{\\\"c\\\":\\\"\\\\u0034111 1111 1111 1111\\\"}\"}}";
	char *r = redact_json(&p, esc, CUSTOS_OK, &sum);
	assert_true(ti_json_ok(r));
	assert_null(strstr(r, "1111"));
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
	free(r);
	/* a card as a JSON number inside the arguments: masked as a string */
	const char *num = "{\"tool_calls\":[{\"function\":{\"arguments\":"
	                  "\"{\\\"n\\\":4111111111111111,\\\"k\\\":[1,2.5]}\"}}]}";
	r = redact_json(&p, num, CUSTOS_OK, &sum);
	assert_true(ti_json_ok(r));
	assert_string_equal(
	        r, "{\"tool_calls\":[{\"function\":{\"arguments\":"
	           "\"{\\\"n\\\":\\\"[REDACTED:PAYMENT_CARD]\\\",\\\"k\\\":[1,2.5]}\"}}]}");
	free(r);
	/* deny through the inner escape */
	inspect_profile d = ti_profile(INSPECT_ACT_DENY);
	r = redact_json(&d, esc, CUSTOS_ERR_DENIED, &sum);
	assert_int_equal(sum.deny_detector, INSPECT_PAYMENT_CARD);
	free(r);
	/* negative: a string that only looks like JSON is text; nothing found, nothing changed */
	const char *txt = "{\"a\":\"{not json 4111\",\"b\":\"[1,2]\"}";
	r = redact_json(&p, txt, CUSTOS_OK, &sum);
	assert_string_equal(r, txt);
	assert_int_equal(sum.total, 0);
	free(r);
}

/* Member names and numbers are what the model or the user wrote inside tool-call arguments
 * (a JSON text, or an object), a tool_use input object and JSON pasted into a prompt: a value
 * there is found and masked inside the name's quotes (escapes it covers replaced whole), both
 * levels stay valid JSON, a deny denies. The request body's own names stay structure (test
 * below). */
static void test_member_names(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *body, *want;
		unsigned total;
	} cases[] = {
		/* a card as a member name of the arguments (a JSON text) */
		{ "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
		  "\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
		  "\"{\\\"4111111111111111\\\":1}\"}}]}]}",
		  "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
		  "\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
		  "\"{\\\"[REDACTED:PAYMENT_CARD]\\\":1}\"}}]}]}",
		  1 },
		/* two of them in one object, one written with an escape, beside a plain name */
		{ "{\"arguments\":\"{\\\"4111\\\\u003111111111111\\\":1,\\\"city\\\":\\\"Paris\\\","
		  "\\\"5555555555554444\\\":[2]}\"}",
		  "{\"arguments\":\"{\\\"[REDACTED:PAYMENT_CARD]\\\":1,\\\"city\\\":\\\"Paris\\\","
		  "\\\"[REDACTED:PAYMENT_CARD]\\\":[2]}\"}",
		  2 },
		/* arguments sent as an object: nested names and a number */
		{ "{\"function_call\":{\"name\":\"f\",\"arguments\":{\"q\":{\"jane@example.com\":"
		  "true},\"n\":4111111111111111}}}",
		  "{\"function_call\":{\"name\":\"f\",\"arguments\":{\"q\":{\"[REDACTED:EMAIL]\":"
		  "true},\"n\":\"[REDACTED:PAYMENT_CARD]\"}}}",
		  2 },
		/* an Anthropic-style tool_use input object */
		{ "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
		  "\"id\":\"t1\",\"name\":\"f\",\"input\":{\"AKIAIOSFODNN7EXAMPLE\":\"x\","
		  "\"n\":4111111111111111}}]}]}",
		  "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
		  "\"id\":\"t1\",\"name\":\"f\",\"input\":{\"[REDACTED:AWS_ACCESS_KEY]\":\"x\","
		  "\"n\":\"[REDACTED:PAYMENT_CARD]\"}}]}]}",
		  2 },
		/* JSON pasted into a prompt: its names are text the model reads */
		{ "{\"messages\":[{\"role\":\"user\",\"content\":\"{\\\"a\\\":{\\\"ssn "
		  "123-45-6789\\\""
		  ":[1]}}\"}]}",
		  "{\"messages\":[{\"role\":\"user\",\"content\":\"{\\\"a\\\":{\\\"ssn "
		  "[REDACTED:US_SSN]\\\":[1]}}\"}]}",
		  1 },
		/* a JSON text as a member name of the arguments: walked as JSON too */
		{ "{\"arguments\":\"{\\\"{\\\\\\\"4111111111111111\\\\\\\":1}\\\":1}\"}",
		  "{\"arguments\":\"{\\\"{\\\\\\\"[REDACTED:PAYMENT_CARD]\\\\\\\":1}\\\":1}\"}",
		  1 },
		/* negative: ordinary names, numbers and values are left byte for byte */
		{ "{\"arguments\":{\"city\":\"Paris\",\"days\":3,\"when\":{\"from\":\"2024-01-15\"}"
		  "},"
		  "\"x\":\"{\\\"ids\\\":[12,34],\\\"2024-01-15\\\":0.5}\"}",
		  "{\"arguments\":{\"city\":\"Paris\",\"days\":3,\"when\":{\"from\":\"2024-01-15\"}"
		  "},"
		  "\"x\":\"{\\\"ids\\\":[12,34],\\\"2024-01-15\\\":0.5}\"}",
		  0 },
		/* a name and its value are not joined (each is inspected on its own) */
		{ "{\"arguments\":\"{\\\"4111 1111\\\":\\\"1111 1111\\\"}\"}",
		  "{\"arguments\":\"{\\\"4111 1111\\\":\\\"1111 1111\\\"}\"}", 0 },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		inspect_summary sum;
		assert_true(ti_json_ok(cases[i].body));
		char *r = redact_json(&p, cases[i].body, CUSTOS_OK, &sum);
		if (strcmp(r, cases[i].want) != 0)
			fprintf(stderr, "case %zu:\n  %s\n", i, r);
		assert_string_equal(r, cases[i].want);
		assert_int_equal(sum.total, cases[i].total);
		assert_true(ti_json_ok(r));
		assert_true(inspect_json_valid(span_cstr(r)));
		free(r);
	}
	/* deny: a key in a name of the arguments denies the request */
	inspect_profile d = ti_profile(INSPECT_ACT_REDACT);
	inspect_profile_set(&d, INSPECT_AWS_ACCESS_KEY, INSPECT_ACT_DENY);
	inspect_summary sum;
	char *r = redact_json(&d, "{\"arguments\":\"{\\\"AKIAIOSFODNN7EXAMPLE\\\":1}\"}",
	                      CUSTOS_ERR_DENIED, &sum);
	assert_int_equal(sum.deny_detector, INSPECT_AWS_ACCESS_KEY);
	free(r);
	/* log: counted, nothing changed */
	inspect_profile l = ti_profile(INSPECT_ACT_LOG);
	const char *body = "{\"arguments\":{\"jane@example.com\":1}}";
	r = redact_json(&l, body, CUSTOS_OK, &sum);
	assert_string_equal(r, body);
	assert_int_equal(sum.count[INSPECT_EMAIL], 1);
	assert_false(sum.redacted);
	free(r);
}

static void test_structure_untouched(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	const char *body =
	        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
	        "\"text\":\"ping 10.0.0.1\"},{\"type\":\"image_url\",\"image_url\":"
	        "{\"url\":\"https://x.example/a.png\"}}]}],\"jane@example.com\":4111111111111111,"
	        "\"n\":-1.5e3,\"ok\":[true,false,null]}";
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_non_null(strstr(r, "\"text\":\"ping [REDACTED:IPV4]\""));
	assert_non_null(strstr(r, "\"jane@example.com\":4111111111111111"));
	assert_int_equal(sum.total, 1);
	free(r);
	/* Overlapping findings merge into one mask, as in text. */
	r = redact_json(&p, "[\"x TKT-AB\\u0045MP-123456 y\"]", CUSTOS_OK, &sum);
	assert_string_equal(r, "[\"x [REDACTED:TICKET] y\"]");
	assert_int_equal(sum.total, 2);
	free(r);
	const char *clean = " {\"model\" : \"m\", \"messages\" : [ {\"role\":\"user\",\"content\":"
	                    "\"hello \\u00e9\\n\"} ] } ";
	r = redact_json(&p, clean, CUSTOS_OK, &sum);
	assert_string_equal(r, clean);
	assert_false(sum.redacted);
	assert_int_equal(sum.total, 0);
	free(r);
}

static void test_deny(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	inspect_profile_set(&p, INSPECT_PRIVATE_KEY, INSPECT_ACT_DENY);
	const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"a@example.com\"},"
	                   "{\"role\":\"user\",\"content\":\"-----BEGIN PRIVATE KEY-----\\nMIIE\\n"
	                   "-----END PRIVATE KEY-----\"}]}";
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_ERR_DENIED, &sum);
	assert_non_null(strstr(err_msg(), "private_key"));
	assert_int_equal(sum.deny_detector, INSPECT_PRIVATE_KEY);
	assert_int_equal(sum.worst, INSPECT_ACT_DENY);
	free(r);
}

static void test_invalid_json(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	const char *bad[] = {
		"",
		"{",
		"{\"a\":1,}",
		"[1,2",
		"{\"a\" 1}",
		"{a:1}",
		"\"unterminated",
		"[\"bad escape \\x\"]",
		"[\"bad unicode \\u12G4\"]",
		"[\"ctl \x01\"]",
		"[\"bad utf8 \xc3\x28\"]",
		"[\"overlong \xc0\xaf\"]",
		"[01]",
		"[1.]",
		"[1e]",
		"[-]",
		"[tru]",
		"{} {}",
		"}",
		"[nul]",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		buf out;
		buf_init(&out, 1024);
		inspect_summary sum;
		custos_err r = inspect_json_redact(E, S, &p, span_cstr(bad[i]), &out, &sum);
		if (r != CUSTOS_ERR_PARSE)
			fprintf(stderr, "case %zu accepted: %s\n", i, bad[i]);
		assert_int_equal(r, CUSTOS_ERR_PARSE);
		assert_false(inspect_json_valid(span_cstr(bad[i])));
		buf_free(&out);
	}
	/* depth limit */
	char deep[2 * INSPECT_JSON_MAX_DEPTH + 8];
	size_t n = 0;
	for (int i = 0; i <= INSPECT_JSON_MAX_DEPTH; i++)
		deep[n++] = '[';
	for (int i = 0; i <= INSPECT_JSON_MAX_DEPTH; i++)
		deep[n++] = ']';
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(inspect_json_redact(E, S, &p, span_of(deep, n), &out, NULL),
	                 CUSTOS_ERR_LIMIT);
	assert_false(inspect_json_valid(span_of(deep, n)));
	assert_true(inspect_json_valid(span_of(deep + 1, n - 2)));
	buf_free(&out);
	const char *good[] = { "0",           "-0.5e+10",
		               "\"\"",        "[]",
		               "{}",          " [ 1 , \"a\" , {\"b\":null} ] ",
		               "\"\\ud800\"", "\"\\u00e9\\/\\b\\f\\r\"" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(good); i++)
		assert_true(inspect_json_valid(span_cstr(good[i])));
}

/* A JSON document inside a string counts its depth on from the string's: tool-call arguments
 * nested past the limit are refused (LIMIT), not inspected as plain text, where the escapes of
 * their own level ("\u0031" to the tool that parses them) would hide a value. */
static void test_embedded_depth(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	/* the arguments string is at depth 6: {messages:[{tool_calls:[{function:{arguments */
	for (int k = 50; k <= INSPECT_JSON_MAX_DEPTH + 2; k++) {
		buf b;
		buf_init(&b, 1u << 16);
		assert_int_equal(buf_append_cstr(&b, "{\"messages\":[{\"role\":\"assistant\","
		                                     "\"tool_calls\":[{\"function\":{\"name\":"
		                                     "\"f\",\"arguments\":\""),
		                 CUSTOS_OK);
		for (int i = 0; i < k; i++)
			assert_int_equal(buf_append_byte(&b, '['), CUSTOS_OK);
		assert_int_equal(buf_append_cstr(&b, "\\\"4111 1111 1111 111\\\\u0031\\\""),
		                 CUSTOS_OK);
		for (int i = 0; i < k; i++)
			assert_int_equal(buf_append_byte(&b, ']'), CUSTOS_OK);
		assert_int_equal(buf_append_cstr(&b, "\"}}]}]}"), CUSTOS_OK);
		assert_true(inspect_json_valid(buf_span(&b)));
		buf out;
		buf_init(&out, 1u << 16);
		inspect_summary sum;
		custos_err r = inspect_json_redact(E, S, &p, buf_span(&b), &out, &sum);
		if (6 + k <= INSPECT_JSON_MAX_DEPTH) {
			assert_int_equal(r, CUSTOS_OK);
			assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
			assert_null(memmem(buf_ptr(&out), buf_used(&out), "4111", 4));
		} else {
			if (r != CUSTOS_ERR_LIMIT)
				fprintf(stderr, "depth 6 + %d: %d\n", k, r);
			assert_int_equal(r, CUSTOS_ERR_LIMIT);
			assert_non_null(strstr(err_msg(), "in a string"));
		}
		buf_free(&out);
		buf_free(&b);
	}
	/* a string at the deepest level that holds a JSON document is over it too */
	char deep[4 * INSPECT_JSON_MAX_DEPTH + 64];
	size_t n = 0;
	for (int i = 0; i < INSPECT_JSON_MAX_DEPTH; i++)
		deep[n++] = '[';
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "\"[\\\"x\\\"]\"");
	for (int i = 0; i < INSPECT_JSON_MAX_DEPTH; i++)
		deep[n++] = ']';
	buf out;
	buf_init(&out, 1u << 16);
	assert_true(inspect_json_valid(span_of(deep, n)));
	assert_int_equal(inspect_json_redact(E, S, &p, span_of(deep, n), &out, NULL),
	                 CUSTOS_ERR_LIMIT);
	/* ...and one a level above it that is text, not JSON, is inspected as before */
	n = 0;
	for (int i = 0; i < INSPECT_JSON_MAX_DEPTH - 1; i++)
		deep[n++] = '[';
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "\"[x] 4111111111111111\"");
	for (int i = 0; i < INSPECT_JSON_MAX_DEPTH - 1; i++)
		deep[n++] = ']';
	buf_reset(&out);
	assert_int_equal(inspect_json_redact(E, S, &p, span_of(deep, n), &out, NULL), CUSTOS_OK);
	const char *want = "[x] [REDACTED:PAYMENT_CARD]";
	assert_non_null(memmem(buf_ptr(&out), buf_used(&out), want, strlen(want)));
	buf_free(&out);
}

/* Arguments that start like a JSON document but are none to the strict walker (Python's json
 * takes NaN; a repairing parser takes a cut document) are decoded by their reader: a value
 * hidden by their own escapes is found in the text with its escapes decoded, counted once and
 * masked (escapes whole), the body still valid JSON; before, it passed. */
static void test_near_json_escapes(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *args; /* the arguments' text, as the tool reads it (before escaping) */
		const char *want; /* the redacted body's arguments member, raw */
		unsigned det;
	} cases[] = {
		{ "{\"n\": NaN, \"card\": \"4111 1111 1111 111\\u0031\"}",
		  "{\\\"n\\\": NaN, \\\"card\\\": \\\"[REDACTED:PAYMENT_CARD]\\\"}",
		  INSPECT_PAYMENT_CARD },
		{ "{\"card\": \"4111 1111 1111 111\\u0031\"",
		  "{\\\"card\\\": \\\"[REDACTED:PAYMENT_CARD]\\\"", INSPECT_PAYMENT_CARD },
		{ "[Infinity, \"mail jane\\u0040example.com ok\"]",
		  "[Infinity, \\\"mail [REDACTED:EMAIL] ok\\\"]", INSPECT_EMAIL },
		{ "[NaN, \"k \\ud835\\udfd2111 1111 1111 1111\"]",
		  "[NaN, \\\"k [REDACTED:PAYMENT_CARD]\\\"]", INSPECT_PAYMENT_CARD },
		/* seen as it is: found once, as before */
		{ "[NaN, \"4111 1111 1111 1111\", \"x\\n\"]",
		  "[NaN, \\\"[REDACTED:PAYMENT_CARD]\\\", \\\"x\\\\n\\\"]", INSPECT_PAYMENT_CARD },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		buf b, w;
		buf_init(&b, 1u << 16);
		buf_init(&w, 1u << 16);
		assert_int_equal(json_escape(&b, span_cstr(cases[i].args)), CUSTOS_OK);
		assert_int_equal(
		        buf_printf(&w,
		                   "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":"
		                   "[{\"function\":{\"name\":\"f\",\"arguments\":\"%.*s\"}}]}]}",
		                   (int)buf_used(&b), (const char *)buf_ptr(&b)),
		        CUSTOS_OK);
		assert_int_equal(buf_append_byte(&w, 0), CUSTOS_OK);
		inspect_summary sum;
		char *r = redact_json(&p, (const char *)buf_ptr(&w), CUSTOS_OK, &sum);
		if (strstr(r, cases[i].want) == NULL)
			fprintf(stderr, "case %zu: %s\n", i, r);
		assert_non_null(strstr(r, cases[i].want));
		assert_true(ti_json_ok(r));
		assert_int_equal(sum.count[cases[i].det], 1);
		assert_int_equal(sum.total, 1);
		free(r);
		inspect_profile dp = ti_profile(INSPECT_ACT_DENY);
		r = redact_json(&dp, (const char *)buf_ptr(&w), CUSTOS_ERR_DENIED, &sum);
		assert_int_equal(sum.deny_detector, (int)cases[i].det);
		free(r);
		buf_free(&w);
		buf_free(&b);
	}
	/* text that is no JSON and hides nothing is left as it was */
	const char *body = "{\"content\":\"{ not json \\\\u0041 }\"}";
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_string_equal(r, body);
	assert_int_equal(sum.total, 0);
	free(r);
}

/* A JSON text may be a string alone: arguments "\"4111 1111 1111 111\\u0031\"" are the card to
 * the tool that parses them. Such a string's own escapes are decoded like a document's; before,
 * it was inspected as text and the card passed. */
static void test_string_document(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *body, *want;
		unsigned det;
	} cases[] = {
		{ "{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":"
		  "\"\\\"4111 1111 1111 111\\\\u0031\\\"\"}}]}",
		  "{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":"
		  "\"\\\"[REDACTED:PAYMENT_CARD]\\\"\"}}]}",
		  INSPECT_PAYMENT_CARD },
		{ "{\"content\":\" \\\"mail jane\\\\u0040example.com\\\"\"}",
		  "{\"content\":\" \\\"mail [REDACTED:EMAIL]\\\"\"}", INSPECT_EMAIL },
		{ "{\"content\":\"\\\"4111 1111 1111 1111\\\"\"}",
		  "{\"content\":\"\\\"[REDACTED:PAYMENT_CARD]\\\"\"}", INSPECT_PAYMENT_CARD },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		inspect_summary sum;
		assert_true(ti_json_ok(cases[i].body));
		char *r = redact_json(&p, cases[i].body, CUSTOS_OK, &sum);
		if (strcmp(r, cases[i].want) != 0)
			fprintf(stderr, "case %zu: %s\n", i, r);
		assert_string_equal(r, cases[i].want);
		assert_int_equal(sum.count[cases[i].det], 1);
		assert_int_equal(sum.total, 1);
		free(r);
		inspect_profile dp = ti_profile(INSPECT_ACT_DENY);
		r = redact_json(&dp, cases[i].body, CUSTOS_ERR_DENIED, &sum);
		free(r);
	}
	/* a quoted word and text after it: as before */
	const char *body = "{\"content\":\"\\\"hello\\\" she said\"}";
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_string_equal(r, body);
	assert_int_equal(sum.total, 0);
	free(r);
}

/* A body of many messages with values at many positions: valid and value-free afterwards. */
static void test_many_values(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	buf b;
	buf_init(&b, 1u << 20);
	assert_int_equal(buf_append_cstr(&b, "{\"messages\":["), CUSTOS_OK);
	for (int i = 0; i < 200; i++)
		assert_int_equal(buf_printf(&b,
		                            "%s{\"role\":\"user\",\"content\":\"m%d \\\"x\\\" "
		                            "user%d@example.com \\u0031\\u0032\\u0033-45-6789\"}",
		                            i ? "," : "", i, i),
		                 CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&b, "]}"), CUSTOS_OK);
	const char *body;
	assert_int_equal(buf_cstr(&b, &body), CUSTOS_OK);
	assert_true(ti_json_ok(body));
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_true(ti_json_ok(r));
	assert_null(strstr(r, "@example.com"));
	assert_null(strstr(r, "-45-6789"));
	assert_int_equal(sum.count[INSPECT_EMAIL], 200);
	assert_int_equal(sum.count[INSPECT_US_SSN], 200);
	free(r);
	buf_free(&b);
}

/* The body of a chat request whose user message has the text parts a and b, or (as_messages)
 * two user messages a and b; malloc'd. */
static char *two_parts(const char *a, const char *b, bool as_messages)
{
	buf x;
	buf_init(&x, 1u << 16);
	if (as_messages)
		assert_int_equal(
		        buf_printf(&x,
		                   "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
		                   "\"content\":\"%s\"},{\"role\":\"user\",\"content\":\"%s\"}]}",
		                   a, b),
		        CUSTOS_OK);
	else
		assert_int_equal(
		        buf_printf(&x,
		                   "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
		                   "[{\"type\":\"text\",\"text\":\"%s\"},{\"type\":\"image_url\","
		                   "\"image_url\":{\"url\":\"https://x.example/4111.png\"}},"
		                   "{\"type\":\"text\",\"text\":\"%s\"}]}]}",
		                   a, b),
		        CUSTOS_OK);
	char *r = ti_dup(&x);
	buf_free(&x);
	return r;
}

/* A value split over two text parts of one message, or over two messages, at every offset: the
 * joined text finds it, each piece is masked in its own string (nothing of it is left), it is
 * counted once, and the body stays valid JSON. */
static void test_split_over_parts(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		unsigned det;
		const char *value;
	} vals[] = {
		{ INSPECT_PAYMENT_CARD, "4111 1111 1111 1111" },
		{ INSPECT_PAYMENT_CARD, "4111-1111-1111-1111" },
		{ INSPECT_US_SSN, "123-45-6789" },
		{ INSPECT_EMAIL, "jane.doe@example.com" },
		{ INSPECT_AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPLE" },
		{ INSPECT_PHONE, "+1 415 555 2671" },
		{ INSPECT_IBAN, "DE89 3704 0044 0532 0130 00" },
		{ INSPECT_GITHUB_TOKEN, "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A" },
	};
	char mask[64];
	for (size_t v = 0; v < CUSTOS_ARRAY_LEN(vals); v++) {
		const char *val = vals[v].value;
		size_t n = strlen(val);
		size_t m = (size_t)snprintf(mask, sizeof(mask), "[REDACTED:");
		for (const char *c = inspect_engine_detector_name(E, vals[v].det); *c; c++)
			mask[m++] = *c >= 'a' && *c <= 'z' ? (char)(*c - 32) : *c;
		snprintf(mask + m, sizeof(mask) - m, "]");
		for (int msgs = 0; msgs <= 1; msgs++) {
			for (size_t k = 1; k < n; k++) {
				char a[128], b[128];
				snprintf(a, sizeof(a), "pay %.*s", (int)k, val);
				snprintf(b, sizeof(b), "%s today.", val + k);
				char *body = two_parts(a, b, msgs);
				inspect_summary sum;
				char *r = redact_json(&p, body, CUSTOS_OK, &sum);
				char wa[128], wb[128];
				snprintf(wa, sizeof(wa), "\"pay %s\"", mask);
				snprintf(wb, sizeof(wb), "\"%s today.\"", mask);
				bool ok = strstr(r, wa) != NULL && strstr(r, wb) != NULL &&
				          sum.count[vals[v].det] == 1;
				if (!ok)
					fprintf(stderr, "%s split %zu (%s):\n  %s\n", val, k,
					        msgs ? "messages" : "parts", r);
				assert_true(ok);
				assert_true(ti_json_ok(r));
				if (!msgs) /* a URL is not text: not joined, not masked */
					assert_non_null(strstr(r, "4111.png"));
				free(r);
				free(body);
			}
		}
	}
}

/* An e-mail address cut inside its top-level domain ("jane@example.co" + "m"): the first piece
 * is an address by itself, yet the joined one is kept and the letters in the next text are
 * masked too, at every split inside the TLD, for country codes and common generic TLDs, the
 * cut label followed by more (".co" + "m.uk"), in parts and in messages. An address whole in
 * its text and run on into a word ("Thanks", or letters that make no plausible TLD) is still
 * found without the word. */
static void test_join_tld_cut(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *addr, *from; /* splits from the label after `from` on */
	} addrs[] = {
		{ "jane.doe@example.com", ".com" }, { "ops@mail.example.info", ".info" },
		{ "a@b.example.io", ".io" },        { "Bob@Example.ORG", ".ORG" },
		{ "x@example.de", ".de" },          { "bob@example.com.uk", ".com.uk" },
		{ "t@example.biz", ".biz" },        { "dev@corp.example.dev", ".dev" },
	};
	for (size_t v = 0; v < CUSTOS_ARRAY_LEN(addrs); v++) {
		const char *val = addrs[v].addr;
		size_t n = strlen(val), dot = (size_t)(strstr(val, addrs[v].from) - val);
		for (int msgs = 0; msgs <= 1; msgs++)
			for (size_t k = dot + 2; k < n; k++) {
				if (val[k - 1] == '.' || val[k] == '.')
					continue; /* a cut at a dot: not inside a label */
				char a[128], b[128];
				snprintf(a, sizeof(a), "mail %.*s", (int)k, val);
				snprintf(b, sizeof(b), "%s now", val + k);
				char *body = two_parts(a, b, msgs);
				inspect_summary sum;
				char *r = redact_json(&p, body, CUSTOS_OK, &sum);
				bool ok = strstr(r, "\"mail [REDACTED:EMAIL]\"") != NULL &&
				          strstr(r, "\"[REDACTED:EMAIL] now\"") != NULL &&
				          sum.count[INSPECT_EMAIL] == 1 && sum.total == 1;
				if (!ok)
					fprintf(stderr, "%s split %zu (%s):\n  %s\n", val, k,
					        msgs ? "messages" : "parts", r);
				assert_true(ok);
				assert_true(ti_json_ok(r));
				free(r);
				free(body);
			}
	}
	static const struct {
		const char *a, *b, *want_b;
	} runon[] = {
		{ "mail bob@example.com", "Thanks, Bob", "Thanks, Bob" },
		{ "mail bob@example.io", "Ok", "Ok" },
		{ "mail bob@example.co", "deReview", "deReview" },
		{ "mail bob@example.com", "Thanks.Bye", "Thanks.Bye" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(runon); i++) {
		char *body = two_parts(runon[i].a, runon[i].b, true);
		inspect_summary sum;
		char *r = redact_json(&p, body, CUSTOS_OK, &sum);
		char wb[128];
		snprintf(wb, sizeof(wb), "\"content\":\"%s\"", runon[i].want_b);
		bool ok = strstr(r, "\"mail [REDACTED:EMAIL]\"") != NULL && strstr(r, wb) != NULL &&
		          sum.total == 1;
		if (!ok)
			fprintf(stderr, "run-on %zu:\n  %s\n", i, r);
		assert_true(ok);
		free(r);
		free(body);
	}
}

/* An e-mail address cut inside a label of its domain that is not a plausible top-level domain
 * ("ops@mail.ex" + "ample.info", "x@example.mus" + "eum"): the first piece is an address by
 * itself, yet the joined one is kept when the address goes on with a further label in the next
 * text, or ends that text but for punctuation and the first piece does not end in a plausible
 * top-level domain; at every split inside a label after the domain's first dot, in parts and in
 * messages. An address whole in its text and run on into a word that
 * is capitalised, or after which the text goes on with more words, is still found without the
 * word. */
static void test_join_label_cut(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const addrs[] = {
		"ops@mail.example.info", "x@example.museum",     "a@b.example.travel",
		"BOB@MAIL.EXAMPLE.ORG",  "it@corp-1.example.de", "q@sub.example.photography",
	};
	static const char *const tails[] = { "", ".", ")", " now" };
	for (size_t v = 0; v < CUSTOS_ARRAY_LEN(addrs); v++) {
		const char *val = addrs[v];
		size_t n = strlen(val), dot = (size_t)(strchr(strchr(val, '@'), '.') - val);
		for (int msgs = 0; msgs <= 1; msgs++)
			for (size_t k = dot + 2; k < n; k++)
				for (size_t t = 0; t < CUSTOS_ARRAY_LEN(tails); t++) {
					if (val[k - 1] == '.' || val[k] == '.')
						continue; /* a cut at a dot: not inside a label */
					/* words after the address: only a further label tells */
					if (t == 3 && strchr(val + k, '.') == NULL)
						continue;
					/* cut in its last label after two letters ("example.mu" +
					 * "seum"): an address complete by itself */
					if (strchr(val + k, '.') == NULL && val[k - 3] == '.')
						continue;
					char a[128], b[128], wb[128];
					snprintf(a, sizeof(a), "mail %.*s", (int)k, val);
					snprintf(b, sizeof(b), "%s%s", val + k, tails[t]);
					snprintf(wb, sizeof(wb), "\"[REDACTED:EMAIL]%s\"",
					         tails[t]);
					char *body = two_parts(a, b, msgs);
					inspect_summary sum;
					char *r = redact_json(&p, body, CUSTOS_OK, &sum);
					bool ok = strstr(r, "\"mail [REDACTED:EMAIL]\"") != NULL &&
					          strstr(r, wb) != NULL &&
					          sum.count[INSPECT_EMAIL] == 1 && sum.total == 1;
					if (!ok)
						fprintf(stderr, "%s split %zu + '%s' (%s):\n  %s\n",
						        val, k, tails[t],
						        msgs ? "messages" : "parts", r);
					assert_true(ok);
					assert_true(ti_json_ok(r));
					free(r);
					free(body);
				}
	}
	static const struct {
		const char *a, *b;
	} runon[] = {
		{ "mail bob@example.com", "Thanks" },
		{ "mail bob@example.com", "thanks for that" },
		{ "mail bob@example.com", "thanks, Bob" },
		{ "mail bob@example.com", "See you.Bye" },
		{ "mail bob@example.com", "and more" },
		{ "mail bob@example.museum", "Regards" },
		{ "mail BOB@EXAMPLE.COM", "thanks" },
		{ "mail bob@example.com", "thanks" },
		{ "mail bob@example.de", "ok!" },
		{ "mail bob@example.org", "yes." },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(runon); i++) {
		for (int msgs = 0; msgs <= 1; msgs++) {
			char *body = two_parts(runon[i].a, runon[i].b, msgs);
			inspect_summary sum;
			char *r = redact_json(&p, body, CUSTOS_OK, &sum);
			char wb[128];
			snprintf(wb, sizeof(wb), "\"%s\"", runon[i].b);
			bool ok = strstr(r, "\"mail [REDACTED:EMAIL]\"") != NULL &&
			          strstr(r, wb) != NULL && sum.total == 1;
			if (!ok)
				fprintf(stderr, "run-on %zu:\n  %s\n", i, r);
			assert_true(ok);
			free(r);
			free(body);
		}
	}
}

/* Anthropic-style tool_use blocks carry their input as an object under "input": its string
 * values, at any depth, join the text values like tool-call arguments (a card split between a
 * message and the input, or between two values of the input); its member names do not (they
 * are inspected alone: test_member_names). An
 * "input" that is a string or an array joins as before. */
static void test_join_tool_use_input(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *body, *want;
	} cases[] = {
		{ "{\"messages\":[{\"role\":\"user\",\"content\":\"pay 4111 1111\"},{\"role\":"
		  "\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":"
		  "\"pay\",\"input\":{\"card\":\" 1111 1111\",\"n\":2}}]}]}",
		  "{\"messages\":[{\"role\":\"user\",\"content\":\"pay [REDACTED:PAYMENT_CARD]\"},"
		  "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\","
		  "\"name\":\"pay\",\"input\":{\"card\":\"[REDACTED:PAYMENT_CARD]\",\"n\":2}}]}]"
		  "}" },
		{ "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
		  "\"id\":\"t1\",\"name\":\"f\",\"input\":{\"q\":{\"a\":\"ssn 123-45\"},"
		  "\"b\":[\"-6789 ok\"]}}]}]}",
		  "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
		  "\"id\":\"t1\",\"name\":\"f\",\"input\":{\"q\":{\"a\":\"ssn "
		  "[REDACTED:US_SSN]\"},\"b\":[\"[REDACTED:US_SSN] ok\"]}}]}]}" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		inspect_summary sum;
		char *r = redact_json(&p, cases[i].body, CUSTOS_OK, &sum);
		if (strcmp(r, cases[i].want) != 0)
			fprintf(stderr, "case %zu:\n  %s\n", i, r);
		assert_string_equal(r, cases[i].want);
		assert_int_equal(sum.total, 1);
		assert_true(ti_json_ok(r));
		free(r);
	}
	/* the member names of the input are inspected on their own, not joined with the text */
	const char *body = "[{\"content\":\"4111 1111\"},{\"input\":{\"1111 1111\":1}}]";
	inspect_summary sum;
	char *r = redact_json(&p, body, CUSTOS_OK, &sum);
	assert_string_equal(r, body);
	assert_int_equal(sum.total, 0);
	free(r);
}

/* What joins: text parts as they are, with nothing between (the model reads them so): the
 * group separator may end the first part, start the second, or be missing; three parts; the
 * responses API's input items; escapes inside the pieces, replaced whole. */
static void test_join_shapes(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *body, *want;
	} cases[] = {
		{ "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
		  "\"4111 "
		  "1111 \"},{\"type\":\"text\",\"text\":\"1111 1111\"}]}]}",
		  "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\""
		  "[REDACTED:PAYMENT_CARD]\"},{\"type\":\"text\",\"text\":\"[REDACTED:PAYMENT_CARD]"
		  "\"}"
		  "]}]}" },
		{ "[{\"content\":\"card 4111 1111\"},{\"content\":\"11111111 ok\"}]",
		  "[{\"content\":\"card "
		  "[REDACTED:PAYMENT_CARD]\"},{\"content\":\"[REDACTED:PAYMENT_"
		  "CARD] ok\"}]" },
		{ "{\"messages\":[{\"role\":\"system\",\"content\":\"call 020 "
		  "\"},{\"role\":\"user\","
		  "\"content\":\"7946 \"},{\"role\":\"assistant\",\"content\":\"0958 now\"}]}",
		  "{\"messages\":[{\"role\":\"system\",\"content\":\"call [REDACTED:PHONE]\"},"
		  "{\"role\":\"user\",\"content\":\"[REDACTED:PHONE]\"},{\"role\":\"assistant\","
		  "\"content\":\"[REDACTED:PHONE] now\"}]}" },
		{ "{\"model\":\"m\",\"instructions\":\"id AKIAIOSF\",\"input\":[{\"role\":\"user\","
		  "\"content\":[{\"type\":\"input_text\",\"text\":\"ODNN7EXAMPLE is mine\"}]}]}",
		  "{\"model\":\"m\",\"instructions\":\"id [REDACTED:AWS_ACCESS_KEY]\",\"input\":[{"
		  "\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"[REDACTED:"
		  "AWS_"
		  "ACCESS_KEY] is mine\"}]}]}" },
		{ "{\"prompt\":[\"mail jane\\u002edoe\",\"\\u0040example.com\"]}",
		  "{\"prompt\":[\"mail [REDACTED:EMAIL]\",\"[REDACTED:EMAIL]\"]}" },
		/* a key block split with its END in the second message */
		{ "[{\"content\":\"-----BEGIN PRIVATE KEY-----\\nMIIE\"},{\"content\":\"vQIBADAN\\n"
		  "-----END PRIVATE KEY-----\\nthanks\"}]",
		  "[{\"content\":\"[REDACTED:PRIVATE_KEY]\"},{\"content\":\"[REDACTED:PRIVATE_KEY]"
		  "\\n"
		  "thanks\"}]" },
		/* a JWT cut inside its signature */
		{ "[{\"text\":\"tok "
		  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
		  "dozjgNryP4J3\"},{\"text\":\"jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end\"}]",
		  "[{\"text\":\"tok [REDACTED:JWT]\"},{\"text\":\"[REDACTED:JWT] end\"}]" },
		/* a word glued before a value is masked with it (the model reads "Hibob@...") */
		{ "[{\"content\":\"Hi\"},{\"content\":\"bob@example.com wrote\"}]",
		  "[{\"content\":\"[REDACTED:EMAIL]\"},{\"content\":\"[REDACTED:EMAIL] wrote\"}]" },
		/* a member name written with an escape is still the member a server reads */
		{ "[{\"t\\u0065xt\":\"123-45\"},{\"text\":\"-6789 ok\"}]",
		  "[{\"t\\u0065xt\":\"[REDACTED:US_SSN]\"},{\"text\":\"[REDACTED:US_SSN] ok\"}]" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		inspect_summary sum;
		char *r = redact_json(&p, cases[i].body, CUSTOS_OK, &sum);
		if (strcmp(r, cases[i].want) != 0)
			fprintf(stderr, "case %zu:\n  %s\n", i, r);
		assert_string_equal(r, cases[i].want);
		assert_int_equal(sum.total, 1);
		assert_true(ti_json_ok(r));
		free(r);
	}
	/* a deny split over two messages is a deny */
	inspect_profile d = ti_profile(INSPECT_ACT_REDACT);
	inspect_profile_set(&d, INSPECT_US_SSN, INSPECT_ACT_DENY);
	inspect_summary sum;
	char *r = redact_json(&d, "[{\"content\":\"ssn 123-4\"},{\"content\":\"5-6789\"}]",
	                      CUSTOS_ERR_DENIED, &sum);
	assert_int_equal(sum.deny_detector, INSPECT_US_SSN);
	free(r);
}

/* Negative cases: values that are whole in their own text are found there and the next text
 * is left alone (an SSN before a word, an e-mail address run on into the next message's first
 * word, an unterminated key block before a normal message); members that are not text (ids,
 * names, URLs, tool-call arguments) are not joined with the text; nothing found, nothing
 * changed. */
static void test_join_negatives(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *body, *want;
		unsigned total;
	} cases[] = {
		{ "[{\"content\":\"ssn 123-45-6789\"},{\"content\":\"Thanks\"}]",
		  "[{\"content\":\"ssn [REDACTED:US_SSN]\"},{\"content\":\"Thanks\"}]", 1 },
		{ "[{\"content\":\"mail bob@example.com\"},{\"content\":\"Thanks, Bob\"}]",
		  "[{\"content\":\"mail [REDACTED:EMAIL]\"},{\"content\":\"Thanks, Bob\"}]", 1 },
		{ "[{\"content\":\"4111 1111 1111 1111\"},{\"content\":\" 2 more\"}]",
		  "[{\"content\":\"[REDACTED:PAYMENT_CARD]\"},{\"content\":\" 2 more\"}]", 1 },
		{ "[{\"content\":\"-----BEGIN PRIVATE KEY-----\\nMIIE\"},{\"content\":\"what is "
		  "this?\"}]",
		  "[{\"content\":\"[REDACTED:PRIVATE_KEY]\"},{\"content\":\"what is this?\"}]", 1 },
		/* halves in members that are not text: not joined, not found */
		{ "[{\"content\":\"4111 1111\"},{\"name\":\"1111 1111\"}]",
		  "[{\"content\":\"4111 1111\"},{\"name\":\"1111 1111\"}]", 0 },
		{ "[{\"content\":\"4111 1111\"},{\"tool_calls\":[{\"id\":\"1111 1111\"}]}]",
		  "[{\"content\":\"4111 1111\"},{\"tool_calls\":[{\"id\":\"1111 1111\"}]}]", 0 },
		/* the member names of tool-call arguments are inspected alone, not joined */
		{ "[{\"content\":\"4111 1111\"},{\"arguments\":\"{\\\"1111 1111\\\":1}\"}]",
		  "[{\"content\":\"4111 1111\"},{\"arguments\":\"{\\\"1111 1111\\\":1}\"}]", 0 },
		/* two halves that make no valid value */
		{ "[{\"content\":\"4111 1111\"},{\"content\":\"1111 1112\"}]",
		  "[{\"content\":\"4111 1111\"},{\"content\":\"1111 1112\"}]", 0 },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		inspect_summary sum;
		char *r = redact_json(&p, cases[i].body, CUSTOS_OK, &sum);
		if (strcmp(r, cases[i].want) != 0)
			fprintf(stderr, "case %zu:\n  %s\n", i, r);
		assert_string_equal(r, cases[i].want);
		assert_int_equal(sum.total, cases[i].total);
		assert_true(ti_json_ok(r));
		free(r);
	}
}

/* Tool-call arguments join the text values: a value with one piece in a message's text and
 * the other in a string of the arguments (JSON inside a string, escapes of both levels
 * decoded; a plain string; an object, as some APIs send it), or in two values of one
 * arguments document, is found and each piece masked in its own string, both levels staying
 * valid JSON and every other byte unchanged; a masked number and a joined mask in the same
 * arguments; a deny. The arguments of test_join_negatives are the ones that do not join. */
static void test_join_arguments(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const pre = "{\"messages\":[{\"role\":\"user\",\"content\":\"pay 4111 "
	                               "1111\"},{\"role\":\"assistant\",\"tool_calls\":[{"
	                               "\"function\":{\"name\":\"f\",\"arguments\":";
	static const struct {
		const char *args, *want, *post;
	} cases[] = {
		{ "\"{\\\"x\\\":\\\" 1111 1111\\\"}\"",
		  "\"{\\\"x\\\":\\\"[REDACTED:PAYMENT_CARD]\\\"}\"", "" },
		/* a digit written \\u0031 in the arguments, \u0020 in the body */
		{ "\"{\\\"x\\\":\\\"\\\\u0020\\\\u0031111\\u00201111\\\", "
		  "\\\"y\\\":\\\"\\\\n\\\"}\"",
		  "\"{\\\"x\\\":\\\"[REDACTED:PAYMENT_CARD]\\\", \\\"y\\\":\\\"\\\\n\\\"}\"", "" },
		{ "\" 1111 1111\"", "\"[REDACTED:PAYMENT_CARD]\"", "" },
		{ "{\"x\":[\" 1111 1111\"]}", "{\"x\":[\"[REDACTED:PAYMENT_CARD]\"]}", "" },
		/* two values of the arguments, and the text after them */
		{ "\"{\\\"a\\\":\\\" 1111\\\",\\\"b\\\":\\\" 1111\\\"}\"",
		  "\"{\\\"a\\\":\\\"[REDACTED:PAYMENT_CARD]\\\",\\\"b\\\":\\\"[REDACTED:PAYMENT_"
		  "CARD]\\\"}\"",
		  "" },
		{ "\"{\\\"a\\\":\\\" 1111\\\",\\\"n\\\":5555555555554444}\"",
		  "\"{\\\"a\\\":\\\"[REDACTED:PAYMENT_CARD]\\\",\\\"n\\\":\\\"[REDACTED:PAYMENT_"
		  "CARD]\\\"}\"",
		  " 1111" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		char body[1024], want[1024];
		const char *post = cases[i].post;
		snprintf(body, sizeof(body),
		         "%s%s}}]},{\"role\":\"tool\",\"content\":\"%s done\"}]}", pre,
		         cases[i].args, post);
		snprintf(want, sizeof(want),
		         "{\"messages\":[{\"role\":\"user\",\"content\":\"pay "
		         "[REDACTED:PAYMENT_CARD]\"},{\"role\":\"assistant\",\"tool_calls\":[{"
		         "\"function\":{\"name\":\"f\",\"arguments\":%s}}]},{\"role\":\"tool\","
		         "\"content\":\"%s done\"}]}",
		         cases[i].want, *post ? "[REDACTED:PAYMENT_CARD]" : "");
		inspect_summary sum;
		char *r = redact_json(&p, body, CUSTOS_OK, &sum);
		if (strcmp(r, want) != 0)
			fprintf(stderr, "case %zu:\n  %s\n", i, r);
		assert_string_equal(r, want);
		assert_true(ti_json_ok(r));
		assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], i == 5 ? 2 : 1);
		free(r);
	}
	/* an SSN split between a message and the arguments: denied */
	inspect_profile d = ti_profile(INSPECT_ACT_DENY);
	inspect_summary sum;
	char *r = redact_json(&d,
	                      "[{\"content\":\"ssn 123-45\"},{\"tool_calls\":[{\"function\":{"
	                      "\"arguments\":\"{\\\"s\\\":\\\"-6789\\\"}\"}}]}]",
	                      CUSTOS_ERR_DENIED, &sum);
	assert_int_equal(sum.deny_detector, INSPECT_US_SSN);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chat_request),
		cmocka_unit_test(test_escaped_value),
		cmocka_unit_test(test_tool_call_arguments),
		cmocka_unit_test(test_arguments_inner_json),
		cmocka_unit_test(test_join_arguments),
		cmocka_unit_test(test_member_names),
		cmocka_unit_test(test_structure_untouched),
		cmocka_unit_test(test_deny),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_embedded_depth),
		cmocka_unit_test(test_near_json_escapes),
		cmocka_unit_test(test_string_document),
		cmocka_unit_test(test_many_values),
		cmocka_unit_test(test_split_over_parts),
		cmocka_unit_test(test_join_shapes),
		cmocka_unit_test(test_join_tld_cut),
		cmocka_unit_test(test_join_label_cut),
		cmocka_unit_test(test_join_tool_use_input),
		cmocka_unit_test(test_join_negatives),
	};
	return cmocka_run_group_tests(tests, ti_setup, ti_teardown);
}
