/*
 * JSON-aware redaction of OpenAI request bodies: string values are inspected after
 * unescaping, keys and structure never; masks keep the body valid JSON (checked by an
 * independent validator) and escapes outside a mask are kept byte for byte.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chat_request),
		cmocka_unit_test(test_escaped_value),
		cmocka_unit_test(test_tool_call_arguments),
		cmocka_unit_test(test_arguments_inner_json),
		cmocka_unit_test(test_structure_untouched),
		cmocka_unit_test(test_deny),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_many_values),
	};
	return cmocka_run_group_tests(tests, ti_setup, ti_teardown);
}
