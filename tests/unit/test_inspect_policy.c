/*
 * The policy-to-engine bridge: a compiled policy.yaml with custom detectors and inspect:
 * obligations gives an engine with the same numbering, and a decision's actions give the
 * profile that denies, redacts and logs what the rules say.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <custos/inspect.h>
#include <custos/policy.h>

static const char policy_text[] =
        "version: 1\n"
        "detectors:\n"
        "  employee-id:\n"
        "    patterns: ['\\bEMP-[0-9]{6}\\b']\n"
        "    keywords: [employee, staff]\n"
        "  spare:\n"
        "    patterns: ['SPARE-[0-9]{4}']\n"
        "principals:\n"
        "  alice: { match: { api_key_sha256: "
        "\"2acb0181f68d7686a38615acdc1d15da15fbc4f7d06c6149183bb5788a59e32b\" } }\n"
        "models:\n"
        "  m1: { isolation: process }\n"
        "rules:\n"
        "  - id: chat\n"
        "    effect: allow\n"
        "    when: { direction: ingress, principal: alice, model: m1 }\n"
        "    inspect:\n"
        "      prompt: { payment_card: redact, employee-id: redact, email: log }\n"
        "      response: { us_ssn: deny }\n";

static policy *load(void)
{
	diag_list d;
	diag_init(&d);
	policy *p = NULL;
	if (policy_parse("test.yaml", policy_text, sizeof(policy_text) - 1, &p, &d) != CUSTOS_OK)
		diag_print(&d, stderr);
	diag_free(&d);
	assert_non_null(p);
	return p;
}

static void test_engine_from_policy(void **state)
{
	(void)state;
	policy *p = load();
	inspect_engine *e;
	assert_int_equal(inspect_engine_from_policy(p, &e), CUSTOS_OK);
	inspect_scratch *s;
	assert_int_equal(inspect_scratch_new(e, &s), CUSTOS_OK);
	/* same numbering: custom detectors after the built-ins, in definition order */
	assert_int_equal(inspect_engine_detector_count(e), policy_detector_count(p));
	for (unsigned i = 0; i < inspect_engine_detector_count(e); i++)
		assert_string_equal(inspect_engine_detector_name(e, i),
		                    policy_detector_at(p, i)->name);
	/* only what some rule names is compiled */
	assert_true(inspect_engine_has(e, INSPECT_PAYMENT_CARD));
	assert_true(inspect_engine_has(e, INSPECT_US_SSN));
	assert_false(inspect_engine_has(e, INSPECT_JWT));
	assert_true(inspect_engine_has(e, INSPECT_BUILTIN_COUNT));      /* employee-id */
	assert_false(inspect_engine_has(e, INSPECT_BUILTIN_COUNT + 1)); /* spare: unused */

	policy_request r;
	memset(&r, 0, sizeof(r));
	r.direction = POLICY_INGRESS;
	r.isolation = -1;
	r.principal = policy_find_principal(p, span_cstr("alice"));
	r.model = policy_find_model(p, span_cstr("m1"));
	r.route = span_cstr("POST /v1/chat/completions");
	policy_decision dec;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_ALLOW);
	assert_true(dec.has_inspect);
	inspect_profile prompt, response;
	inspect_profile_from_actions(&prompt, dec.inspect_prompt);
	inspect_profile_from_actions(&response, dec.inspect_response);

	const char *body = "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":"
	                   "\"staff id EMP-004211, card 4111 1111 1111 1111, mail a@example.com, "
	                   "badge EMP-999999 alone\"}]}";
	buf out;
	buf_init(&out, 4096);
	inspect_summary sum;
	assert_int_equal(inspect_json_redact(e, s, &prompt, span_cstr(body), &out, &sum),
	                 CUSTOS_OK);
	const char *got;
	assert_int_equal(buf_cstr(&out, &got), CUSTOS_OK);
	assert_non_null(strstr(got,
	                       "staff id [REDACTED:EMPLOYEE_ID], card [REDACTED:PAYMENT_CARD], "
	                       "mail a@example.com, badge EMP-999999 alone"));
	assert_int_equal(sum.count[INSPECT_EMAIL], 1); /* logged, not masked */
	assert_true(inspect_json_valid(span_cstr(got)));
	buf_free(&out);

	/* the response side denies an SSN in a stream */
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(e, &response, &st), CUSTOS_OK);
	buf rel;
	buf_init(&rel, 4096);
	custos_err rc = inspect_stream_feed(st, s, span_cstr("Your SSN is 123-45-"), &rel);
	if (rc == CUSTOS_OK)
		rc = inspect_stream_feed(st, s, span_cstr("6789."), &rel);
	if (rc == CUSTOS_OK)
		rc = inspect_stream_finish(st, s, &rel);
	assert_int_equal(rc, CUSTOS_ERR_DENIED);
	assert_int_equal(inspect_stream_summary(st)->deny_detector, INSPECT_US_SSN);
	buf_free(&rel);
	inspect_stream_free(st);

	inspect_scratch_free(s);
	inspect_engine_free(e);
	policy_unref(p);
}

/* Out-of-range action bytes never weaken a profile below deny. */
static void test_profile_from_actions(void **state)
{
	(void)state;
	uint8_t a[INSPECT_MAX_DETECTORS] = { 0 };
	a[0] = INSPECT_ACT_REDACT;
	a[1] = 200;
	inspect_profile p;
	inspect_profile_from_actions(&p, a);
	assert_int_equal(p.action[0], INSPECT_ACT_REDACT);
	assert_int_equal(p.action[1], INSPECT_ACT_DENY);
	assert_int_equal(p.action[2], INSPECT_ACT_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_engine_from_policy),
		cmocka_unit_test(test_profile_from_actions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
