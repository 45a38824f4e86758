/*
 * Request-scoped egress attribution: an egress call of model M is attributed to the ingress
 * request in flight on M when it is the only one, or to the one its X-Custos-Request-Id names;
 * never to a request of another model, never to a finished one, and to none when ambiguous.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "custos/egress.h"

static egress_attr_how attr(const char *model, const char *hdr, char *rid, char *pr)
{
	return egress_attribute(model, span_cstr(hdr), rid, pr);
}

static void test_attribution(void **st)
{
	char rid[EGRESS_ID_MAX], pr[EGRESS_PRINCIPAL_MAX];
	(void)st;
	assert_int_equal(attr("m1", "", rid, pr), EGRESS_ATTR_NONE);
	assert_string_equal(rid, "");

	uint64_t a = egress_ingress_begin("m1", "req-a", "alice");
	assert_true(a != 0);
	assert_int_equal(attr("m1", "", rid, pr), EGRESS_ATTR_SOLE);
	assert_string_equal(rid, "req-a");
	assert_string_equal(pr, "alice");
	/* another model's sandbox gets nothing from m1's request */
	assert_int_equal(attr("m2", "", rid, pr), EGRESS_ATTR_NONE);
	assert_int_equal(attr("m2", "req-a", rid, pr), EGRESS_ATTR_NONE);
	assert_string_equal(pr, "");

	uint64_t b = egress_ingress_begin("m1", "req-b", "bob");
	uint64_t c = egress_ingress_begin("m2", "req-c", "carol");
	/* two in flight on m1: ambiguous without a header */
	assert_int_equal(attr("m1", "", rid, pr), EGRESS_ATTR_NONE);
	assert_string_equal(pr, "");
	assert_int_equal(attr("m1", "req-b", rid, pr), EGRESS_ATTR_HEADER);
	assert_string_equal(pr, "bob");
	assert_int_equal(attr("m1", "req-a", rid, pr), EGRESS_ATTR_HEADER);
	assert_string_equal(pr, "alice");
	/* a header naming an unknown or foreign request falls back to the rule above */
	assert_int_equal(attr("m1", "req-c", rid, pr), EGRESS_ATTR_NONE);
	assert_int_equal(attr("m1", "req-zzz", rid, pr), EGRESS_ATTR_NONE);
	assert_int_equal(attr("m2", "", rid, pr), EGRESS_ATTR_SOLE);
	assert_string_equal(pr, "carol");

	egress_ingress_end(a);
	assert_int_equal(attr("m1", "", rid, pr), EGRESS_ATTR_SOLE);
	assert_string_equal(pr, "bob");
	assert_int_equal(attr("m1", "req-a", rid, pr), EGRESS_ATTR_SOLE); /* req-a finished */
	assert_string_equal(rid, "req-b");
	egress_ingress_end(b);
	egress_ingress_end(b); /* twice: harmless */
	egress_ingress_end(0);
	assert_int_equal(attr("m1", "", rid, pr), EGRESS_ATTR_NONE);
	egress_ingress_end(c);
	assert_int_equal(attr("m2", "", rid, pr), EGRESS_ATTR_NONE);
	/* bad arguments */
	assert_int_equal(egress_ingress_begin(NULL, "x", "y"), 0);
	assert_int_equal(attr(NULL, "", rid, pr), EGRESS_ATTR_NONE);
}

/* A policy principal id (POLICY_MAX_NAME bytes) is attributed whole: egress rules look the
 * principal up by this name. */
static void test_policy_principal_whole(void **st)
{
	char rid[EGRESS_ID_MAX], pr[EGRESS_PRINCIPAL_MAX];
	char name[POLICY_MAX_NAME + 1];
	(void)st;
	memset(name, 'q', POLICY_MAX_NAME);
	name[POLICY_MAX_NAME] = '\0';
	uint64_t t = egress_ingress_begin("m8", "r", name);
	assert_int_equal(attr("m8", "", rid, pr), EGRESS_ATTR_SOLE);
	assert_string_equal(pr, name);
	egress_ingress_end(t);
}

static void test_long_ids_truncated(void **st)
{
	char rid[EGRESS_ID_MAX], pr[EGRESS_PRINCIPAL_MAX];
	char big[1000];
	(void)st;
	memset(big, 'p', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	uint64_t t = egress_ingress_begin("m9", "r", big);
	assert_int_equal(attr("m9", "", rid, pr), EGRESS_ATTR_SOLE);
	assert_int_equal(strlen(pr), EGRESS_PRINCIPAL_MAX - 1);
	egress_ingress_end(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attribution),
		cmocka_unit_test(test_policy_principal_whole),
		cmocka_unit_test(test_long_ids_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
