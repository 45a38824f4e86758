/*
 * cert_san_uri patterns against hostile SAN URIs (policy_glob_match, as principal matching
 * calls it): a "*" stops at "/", so the pattern spiffe://corp/team/ then "*" takes neither a
 * dot-segment escape (.../team/../admin) nor a sibling (teamX) nor a deeper name; matching is
 * case-sensitive and on the whole string (an embedded NUL is a byte like another, never an
 * end); "**" takes the names under its prefix literally, dot segments included (docs/PROXY.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/policy_int.h"

static bool m(const char *pat, const char *s, size_t n)
{
	return policy_glob_match(pat, strlen(pat), s, n);
}
#define M(pat, s) m(pat, s, strlen(s))

static void one_segment(void **state)
{
	(void)state;
	const char *p = "spiffe://corp/team/*";
	assert_true(M(p, "spiffe://corp/team/job1"));
	assert_false(M(p, "spiffe://corp/team/../admin"));
	assert_false(M(p, "spiffe://corp/teamX/job1"));
	assert_false(M(p, "spiffe://corp/team/a/b"));
	assert_false(M(p, "spiffe://corp/team"));
	assert_false(M(p, "SPIFFE://corp/team/job1"));
	assert_false(M(p, "spiffe://CORP/team/job1"));
	assert_false(M(p, "spiffe://corp/team%2f..%2fadmin/x"));
	assert_false(M(p, "xspiffe://corp/team/job1"));
	/* "job1\0/../../admin": the NUL does not end the name, the "/" after it still counts. */
	static const char nul[] = "spiffe://corp/team/job1\0/../admin";
	assert_false(m(p, nul, sizeof(nul) - 1));
	/* "job1\0x" is one segment: matched as bytes, so ident.c drops such names before. */
	static const char nul2[] = "spiffe://corp/team/job1\0x";
	assert_false(m("spiffe://corp/team/job1", nul2, sizeof(nul2) - 1));
}

static void any_depth(void **state)
{
	(void)state;
	const char *p = "spiffe://corp/team/**";
	assert_true(M(p, "spiffe://corp/team/a/b"));
	assert_true(M(p, "spiffe://corp/team/../admin")); /* literal: under team's prefix */
	assert_false(M(p, "spiffe://corp/teamX/a"));
	assert_false(M(p, "spiffe://corp/admin"));
	assert_false(M("spiffe://corp/admin", "spiffe://corp/team/../admin"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_segment),
		cmocka_unit_test(any_depth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
