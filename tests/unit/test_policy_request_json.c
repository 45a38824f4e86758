/* Unit tests for policy_request_parse_json, the request context of POST /v1/decide: strict
 * JSON (a key of any length, nothing that is only YAML), the same request as the YAML reader
 * of `custos policy explain` makes of valid JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "custos/policy.h"

static const char policy_text[] = "version: 1\n"
                                  "principals:\n"
                                  "  alice: { match: { cert_san_uri: \"spiffe://corp/alice\" } }\n"
                                  "models:\n"
                                  "  m1: { isolation: process }\n"
                                  "rules:\n"
                                  "  - id: chat\n"
                                  "    effect: allow\n"
                                  "    when: { direction: ingress, principal: alice, model: m1 }\n";

static policy *pol;

static int setup(void **state)
{
	(void)state;
	diag_list d;
	diag_init(&d);
	if (policy_parse("mem.yaml", policy_text, sizeof(policy_text) - 1, &pol, &d) != CUSTOS_OK) {
		diag_print(&d, stderr);
		return -1;
	}
	diag_free(&d);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	policy_unref(pol);
	return 0;
}

/* Parses text as JSON; returns the error count and puts the first error in first[]. */
static size_t parse_json(const char *text, size_t len, policy_request *r, char *first, size_t n)
{
	policy_request_doc *k = NULL;
	diag_list d;
	diag_init(&d);
	custos_err e = policy_request_parse_json(pol, text, len, r, &k, &d);
	size_t errors = d.errors;
	first[0] = '\0';
	if (d.n > 0)
		snprintf(first, n, "%s:%u:%u: %s", d.items[0].file, d.items[0].line, d.items[0].col,
		         d.items[0].message);
	assert_true((e == CUSTOS_OK) == (errors == 0));
	policy_request_doc_free(k);
	diag_free(&d);
	return errors;
}

static void refused(const char *text, const char *want)
{
	policy_request r;
	char first[2048];
	assert_int_not_equal(parse_json(text, strlen(text), &r, first, sizeof(first)), 0);
	if (strstr(first, want) == NULL)
		fail_msg("for %s: got '%s', want '%s'", text, first, want);
}

static void test_request_json_ok(void **state)
{
	(void)state;
	static const char ctx[] =
	        "{\"direction\":\"ingress\",\"principal\":\"alice\",\"model\":\"m1\","
	        "\"route\":\"POST /v1/chat/completions\",\"body_size\":1024,"
	        "\"shadow\":true,\"time\":\"2026-01-01T00:00:00Z\"}";
	policy_request r;
	policy_request_doc *k = NULL;
	diag_list d;
	diag_init(&d);
	assert_int_equal(policy_request_parse_json(pol, ctx, sizeof(ctx) - 1, &r, &k, &d),
	                 CUSTOS_OK);
	assert_int_equal(r.direction, POLICY_INGRESS);
	assert_non_null(r.principal);
	assert_non_null(r.model);
	assert_int_equal(r.body_size, 1024);
	assert_true(r.force_shadow);
	assert_int_equal(r.method.len, 4);
	policy_decision dec;
	policy_evaluate(pol, &r, &dec);
	assert_int_equal(dec.verdict, POLICY_ALLOW);
	policy_request_doc_free(k); /* r's spans point into it */
	diag_free(&d);
	/* a string is not a boolean, as in YAML: "true" is refused where true is taken */
	refused("{\"direction\":\"ingress\",\"shadow\":\"true\"}",
	        "<request>:1:33: 'true' is not a boolean");
}

/* A key of 2000 characters is judged as a key: an unknown key, not a syntax error (libyaml
 * stops implicit keys at 1024 characters and called valid JSON malformed). */
static void test_request_json_long_key(void **state)
{
	(void)state;
	size_t n = 2000;
	char *t = malloc(n + 64);
	size_t off = (size_t)snprintf(t, 64, "{\"direction\":\"ingress\",\"");
	memset(t + off, 'k', n);
	memcpy(t + off + n, "\":1}", 5);
	policy_request r;
	char first[2048];
	assert_int_equal(parse_json(t, strlen(t), &r, first, sizeof(first)), 1);
	assert_non_null(strstr(first, "<request>:1:24: unknown key 'kkkk"));
	assert_null(strstr(first, "syntax"));
	free(t);
}

static void test_request_json_refusals(void **state)
{
	(void)state;
	refused("{direction: ingress}", "<request>:1:2: JSON: object keys must be strings");
	refused("{\"direction\": ingress}", "<request>:1:15: JSON: 'ingress' is not a JSON value");
	refused("{\"direction\": 'ingress'}", "<request>:1:15: JSON: strings are in double quotes");
	refused("{\"direction\": !!str ingress}", "<request>:1:15: JSON: unexpected character '!'");
	refused("{\"direction\": \"ingress\"} # c", "<request>:1:26: JSON: unexpected text after");
	refused("{\"direction\": \"ingress\"}\n{}", "<request>:2:1: JSON: unexpected text after");
	refused("{\"direction\": \"ingress\", \"body_size\": .inf}",
	        "<request>:1:39: JSON: '.inf'");
	refused("{\"direction\": \"ingress\", \"body_size\": +1}", "<request>:1:39: JSON: '+1'");
	refused("{\"direction\": \"ingress\", \"body_size\": 01}", "<request>:1:39: JSON: '01'");
	refused("{\"direction\" \"ingress\"}",
	        "<request>:1:14: JSON: expected ':' after object key");
	refused("{\"direction\": \"in\\gress\"}", "<request>:1:18: JSON: bad escape '\\g'");
	refused("{\"direction\": \"\\uD800\"}", "<request>:1:16: JSON: lone surrogate \\uD800");
	refused("{\"direction\": \"ingress\\u0000x\"}", "<request>:1:23: JSON: \\u0000 (NUL)");
	refused("{\"direction\": \"ingress\", \"direction\": \"egress\"}",
	        "<request>:1:26: JSON: duplicate key 'direction' (first at line 1, column 2)");
	refused("{\"direction\": \"ingress\", \"identity\": {\"jwt_sub\": \"a\", \"jwt_sub\": "
	        "\"b\"}}",
	        "<request>:1:55: JSON: duplicate key 'jwt_sub'");
	refused("\xef\xbb\xbf{\"direction\": \"ingress\"}",
	        "<request>:1:1: JSON: a byte order mark");
	refused("", "<request>:1:1: empty request");
	refused(" \r\n\t", "<request>:1:1: empty request");
	/* null is the plain word, as unquoted in YAML: no principal by that name */
	refused("{\"direction\":\"ingress\",\"principal\":null}",
	        "<request>:1:36: unknown principal 'null'");
	/* schema errors still point at the node */
	refused("{\n  \"direction\": \"sideways\"\n}",
	        "<request>:2:16: 'sideways' is not a valid value");
	refused("[1]", "<request>:1:1: a request must be a mapping");
	/* deep nesting: bounded, not a stack overflow */
	char deep[4096];
	for (size_t i = 0; i < sizeof(deep) - 1; i++)
		deep[i] = '[';
	deep[sizeof(deep) - 1] = '\0';
	refused(deep, "JSON: document nested too deeply");
	/* the 1 MiB limit holds */
	policy_request r;
	policy_request_doc *k = NULL;
	diag_list d;
	diag_init(&d);
	assert_int_equal(policy_request_parse_json(pol, deep, 1024 * 1024 + 1, &r, &k, &d),
	                 CUSTOS_ERR_LIMIT);
	assert_null(k);
	diag_free(&d);
}

/* `custos policy explain --request` and `policy test` keep YAML: flow mappings without quotes
 * are theirs. */
static void test_request_yaml_unchanged(void **state)
{
	(void)state;
	static const char y[] = "{direction: ingress, principal: alice, model: m1}";
	policy_request r;
	policy_request_doc *k = NULL;
	diag_list d;
	diag_init(&d);
	assert_int_equal(policy_request_parse(pol, y, sizeof(y) - 1, &r, &k, &d), CUSTOS_OK);
	assert_non_null(r.principal);
	policy_request_doc_free(k);
	diag_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_json_ok),
		cmocka_unit_test(test_request_json_long_key),
		cmocka_unit_test(test_request_json_refusals),
		cmocka_unit_test(test_request_yaml_unchanged),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
