/*
 * Unit tests for the policy's hard edges: facts a caller does not have, path spellings, routes
 * on egress, limits over several windows, what `policy check` must refuse with a position,
 * and that `policy test` sees what the proxy sees (JWT group cap, every deciding rule).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "custos/lazylib.h"
#include "custos/policy.h"
#include "policy/policy_int.h"

static char tmpdir[256];

static policy *parse(const char *text, diag_list *d)
{
	policy *p = NULL;
	diag_init(d);
	if (policy_parse("mem.yaml", text, strlen(text), &p, d) != CUSTOS_OK)
		return NULL;
	return p;
}

static policy *must(const char *text)
{
	diag_list d;
	policy *p = parse(text, &d);
	if (p == NULL) {
		diag_print(&d, stderr);
		fail_msg("policy did not compile");
	}
	diag_free(&d);
	return p;
}

/* The first diagnostic of severity sev containing needle, or NULL. */
static const diag_item *find_diag(const diag_list *d, diag_severity sev, const char *needle)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->items[i].severity == sev && strstr(d->items[i].message, needle))
			return &d->items[i];
	return NULL;
}

/* ---- 1. a key over a fact the caller does not have is false */
static void test_missing_facts_never_match(void **state)
{
	(void)state;
	policy *p = must("version: 1\n"
	                 "principals:\n"
	                 "  jwt-any: { match: { jwt_sub: \"*\" } }\n"
	                 "  jwt-deep: { match: { jwt_sub: \"**\" } }\n"
	                 "  uri-any: { match: { cert_san_uri: \"**\" } }\n"
	                 "  dns-any: { match: { cert_san_dns: \"*\" } }\n"
	                 "  app: { match: { cert_cn: app } }\n"
	                 "rules:\n  - { id: r, effect: allow, when: { direction: ingress } }\n");
	policy_identity id;
	memset(&id, 0, sizeof(id));
	/* a random API key: no principal matches it */
	id.has_api_key = true;
	id.api_key_sha256[0] = 0x42;
	assert_null(policy_match_principal(p, &id));
	/* an mTLS client without SANs of those kinds and without a JWT */
	memset(&id, 0, sizeof(id));
	id.subject_cn = SPAN_LIT("app");
	const policy_principal *pr = policy_match_principal(p, &id);
	assert_non_null(pr);
	assert_string_equal(pr->id, "app");
	/* empty SAN entries are not facts either */
	span empty[1] = { SPAN_LIT("") };
	memset(&id, 0, sizeof(id));
	id.san_uris = empty;
	id.n_san_uris = 1;
	id.san_dns = empty;
	id.n_san_dns = 1;
	assert_null(policy_match_principal(p, &id));
	/* an empty subject is no subject */
	memset(&id, 0, sizeof(id));
	id.jwt_iss = SPAN_LIT("https://issuer");
	assert_null(policy_match_principal(p, &id));
	/* a JWT with a subject matches */
	id.jwt_sub = SPAN_LIT("u1");
	pr = policy_match_principal(p, &id);
	assert_non_null(pr);
	assert_string_equal(pr->id, "jwt-any");
	policy_unref(p);
}

/* ---- 8, 16. globs */
static void test_globs(void **state)
{
	(void)state;
	policy *p = must("version: 1\nprincipals:\n"
	                 "  up: { match: { cert_san_dns: \"*.SEC.corp.example\" } }\n"
	                 "  q: { match: { jwt_sub: \"user?\" } }\n");
	span dns[1] = { SPAN_LIT("a.sec.corp.example") };
	policy_identity id;
	memset(&id, 0, sizeof(id));
	id.san_dns = dns;
	id.n_san_dns = 1;
	assert_non_null(policy_match_principal(p, &id));
	dns[0] = SPAN_LIT("A.Sec.CORP.example");
	assert_non_null(policy_match_principal(p, &id));
	memset(&id, 0, sizeof(id));
	id.jwt_sub = SPAN_LIT("user\xc3\xa9"); /* "useré": '?' is one character */
	assert_non_null(policy_match_principal(p, &id));
	id.jwt_sub = SPAN_LIT("user\xe2\x82\xac"); /* "user€" */
	assert_non_null(policy_match_principal(p, &id));
	id.jwt_sub = SPAN_LIT("userab");
	assert_null(policy_match_principal(p, &id));
	policy_unref(p);
	assert_true(policy_glob_match("a?c", 3,
	                              "a\xc3\xa9"
	                              "c",
	                              4));
	assert_false(policy_glob_match("a?c", 3,
	                               "a\xc3\xa9\xc3\xa9"
	                               "c",
	                               6));
	assert_true(policy_glob_match("a??c", 4,
	                              "a\xc3\xa9\xc3\xa9"
	                              "c",
	                              6));
	assert_true(policy_glob_match("a?c", 3,
	                              "a\xffg"
	                              "c",
	                              4) == false);
	assert_true(policy_glob_match("a??c", 4,
	                              "a\xff"
	                              "gc",
	                              4)); /* an invalid byte is one */
	assert_true(policy_glob_match("\xc3\xa9*", 3, "\xc3\xa9t\xc3\xa9", 5));
}

/* ---- 11. the proxy's JWT group cap, applied by the matcher */
static void test_jwt_group_cap(void **state)
{
	(void)state;
	char text[1024];
	char lng[POLICY_MAX_JWT_GROUP_BYTES + 2];
	memset(lng, 'L', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = '\0';
	snprintf(text, sizeof(text),
	         "version: 1\nprincipals:\n  t: { match: { jwt_group: target } }\n"
	         "  long: { match: { jwt_group: %s } }\n",
	         lng);
	diag_list d;
	policy *p = parse(text, &d);
	assert_non_null(p);
	assert_non_null(find_diag(&d, DIAG_WARNING, "'long' can never match"));
	diag_free(&d);
	span g[POLICY_MAX_JWT_GROUPS + 2];
	char names[POLICY_MAX_JWT_GROUPS + 2][8];
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(g); i++) {
		snprintf(names[i], sizeof(names[i]), "g%zu", i);
		g[i] = span_cstr(names[i]);
	}
	policy_identity id;
	memset(&id, 0, sizeof(id));
	id.jwt_sub = SPAN_LIT("u");
	id.jwt_groups = g;
	/* the 16th group counts, the 17th is beyond what the proxy keeps */
	g[POLICY_MAX_JWT_GROUPS - 1] = SPAN_LIT("target");
	id.n_jwt_groups = POLICY_MAX_JWT_GROUPS;
	assert_non_null(policy_match_principal(p, &id));
	g[POLICY_MAX_JWT_GROUPS - 1] = span_cstr(names[POLICY_MAX_JWT_GROUPS - 1]);
	g[POLICY_MAX_JWT_GROUPS] = SPAN_LIT("target");
	id.n_jwt_groups = POLICY_MAX_JWT_GROUPS + 1;
	assert_null(policy_match_principal(p, &id));
	/* a group over the byte cap is skipped (and does not count towards the 16) */
	g[0] = span_cstr(lng);
	assert_non_null(policy_match_principal(p, &id));
	id.jwt_groups = &g[0];
	id.n_jwt_groups = 1;
	assert_null(policy_match_principal(p, &id));
	policy_unref(p);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/custos-policy-hard-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_facts_never_match),
		cmocka_unit_test(test_globs),
		cmocka_unit_test(test_jwt_group_cap),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
