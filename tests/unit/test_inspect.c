/*
 * Detector and engine tests: every built-in and custom detector with positive and negative
 * cases (valid and invalid checksums and ranges), exact offsets, overlap resolution, custom
 * definitions refused, and each finding re-checked with the text split at every byte offset
 * and in 1..4-byte fragments.
 */
#include <limits.h>
#include <pthread.h>
#include <time.h>

#include "test_inspect_util.h"

#include "policy/inspect_int.h"

typedef struct pos_case {
	unsigned det;
	const char *text;
	const char *value; /* exactly the finding */
} pos_case;

typedef struct neg_case {
	unsigned det;
	const char *text;
} neg_case;

#define GH36 "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"

static const pos_case positives[] = {
	{ INSPECT_EMAIL, "contact john.doe@example.com today", "john.doe@example.com" },
	{ INSPECT_EMAIL, "x <a+b@mail.co.uk>.", "a+b@mail.co.uk" },
	{ INSPECT_EMAIL, "write to ops@corp-1.example.", "ops@corp-1.example" },
	{ INSPECT_EMAIL, "mailto:Jane_O%Hara@sub.domain.org,", "Jane_O%Hara@sub.domain.org" },
	/* a hyphen glued after the address is prose, not part of its TLD */
	{ INSPECT_EMAIL, "write to jane@example.com--she answers", "jane@example.com" },
	{ INSPECT_EMAIL, "ann@studio.example.co.uk-based firm", "ann@studio.example.co.uk" },
	{ INSPECT_PHONE, "call +14155552671 now", "+14155552671" },
	{ INSPECT_PHONE, "call +44 20 7946 0958 now", "+44 20 7946 0958" },
	{ INSPECT_PHONE, "office (415) 555-2671.", "(415) 555-2671" },
	{ INSPECT_PHONE, "cell 415-555-2671", "415-555-2671" },
	{ INSPECT_PHONE, "cell 1 415.555.2671", "1 415.555.2671" },
	{ INSPECT_PHONE, "London 020 7946 0958", "020 7946 0958" },
	{ INSPECT_PHONE, "Paris 06 12 34 56 78", "06 12 34 56 78" },
	{ INSPECT_PHONE, "mobile 07700 900123", "07700 900123" },
	/* international with 00 for '+' */
	{ INSPECT_PHONE, "call 0044 20 7946 0958 now", "0044 20 7946 0958" },
	{ INSPECT_PHONE, "call 00 44 20 7946 0958.", "00 44 20 7946 0958" },
	{ INSPECT_PHONE, "tel. 0033 6 12 34 56 78", "0033 6 12 34 56 78" },
	{ INSPECT_PHONE, "tel 00353-1-234-5678", "00353-1-234-5678" },
	{ INSPECT_PHONE, "us 001 415 555 2671", "001 415 555 2671" },
	/* two national numbers with only a space between: the second one too */
	{ INSPECT_PHONE, "07700 900123 07700 900456", "07700 900456" },
	{ INSPECT_PHONE, "07700 900123 07700 900456", "07700 900123" },
	{ INSPECT_PAYMENT_CARD, "card 4111111111111111.", "4111111111111111" },
	{ INSPECT_PAYMENT_CARD, "card 4111 1111 1111 1111 ok", "4111 1111 1111 1111" },
	{ INSPECT_PAYMENT_CARD, "card 4242-4242-4242-4242", "4242-4242-4242-4242" },
	{ INSPECT_PAYMENT_CARD, "mc 5555555555554444", "5555555555554444" },
	{ INSPECT_PAYMENT_CARD, "mc2 2223003122003222", "2223003122003222" },
	{ INSPECT_PAYMENT_CARD, "amex 378282246310005", "378282246310005" },
	{ INSPECT_PAYMENT_CARD, "amex 3782 822463 10005", "3782 822463 10005" },
	{ INSPECT_PAYMENT_CARD, "disc 6011111111111117", "6011111111111117" },
	{ INSPECT_PAYMENT_CARD, "jcb 3566002020360505", "3566002020360505" },
	{ INSPECT_PAYMENT_CARD, "diners 30569309025904", "30569309025904" },
	{ INSPECT_PAYMENT_CARD, "unionpay 6200000000000005", "6200000000000005" },
	{ INSPECT_PAYMENT_CARD, "visa13 4222222222222", "4222222222222" },
	{ INSPECT_PAYMENT_CARD, "ref 3 4111 1111 1111 1111", "4111 1111 1111 1111" },
	{ INSPECT_PAYMENT_CARD, "two 4111 1111 1111 1111 5555 5555 5555 4444.",
	  "5555 5555 5555 4444" },
	{ INSPECT_PAYMENT_CARD, "two 4111 1111 1111 1111 5555 5555 5555 4444.",
	  "4111 1111 1111 1111" },
	{ INSPECT_IBAN, "pay DE89 3704 0044 0532 0130 00 now", "DE89 3704 0044 0532 0130 00" },
	{ INSPECT_IBAN, "pay DE89370400440532013000.", "DE89370400440532013000" },
	{ INSPECT_IBAN, "GB82WEST12345698765432", "GB82WEST12345698765432" },
	{ INSPECT_IBAN, "fr FR1420041010050500013M02606", "FR1420041010050500013M02606" },
	{ INSPECT_IBAN, "nl NL91ABNA0417164300", "NL91ABNA0417164300" },
	/* pasted lower- or mixed-case: mod 97 reads letters without case */
	{ INSPECT_IBAN, "pay de89 3704 0044 0532 0130 00 now", "de89 3704 0044 0532 0130 00" },
	{ INSPECT_IBAN, "iban: De89370400440532013000.", "De89370400440532013000" },
	{ INSPECT_IBAN, "to gb82 west 1234 5698 7654 32", "gb82 west 1234 5698 7654 32" },
	{ INSPECT_IBAN, "nl91abna0417164300", "nl91abna0417164300" },
	{ INSPECT_IBAN, "Be71 0961 2345 6769", "Be71 0961 2345 6769" },
	{ INSPECT_US_SSN, "ssn 123-45-6789.", "123-45-6789" },
	{ INSPECT_US_SSN, "SSN: 078 05 1120", "078 05 1120" },
	{ INSPECT_IPV4, "host 10.0.0.1 up", "10.0.0.1" },
	{ INSPECT_IPV4, "gw 192.168.100.254.", "192.168.100.254" },
	{ INSPECT_IPV6, "v6 2001:db8::ff00:42:8329 up", "2001:db8::ff00:42:8329" },
	{ INSPECT_IPV6, "ll fe80::1%eth0", "fe80::1" },
	{ INSPECT_IPV6, "lo ::1 here", "::1" },
	{ INSPECT_IPV6, "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.",
	  "2001:0db8:85a3:0000:0000:8a2e:0370:7334" },
	{ INSPECT_IPV6, "mapped ::ffff:192.0.2.128 x", "::ffff:192.0.2.128" },
	{ INSPECT_AWS_ACCESS_KEY, "id AKIAIOSFODNN7EXAMPLE,", "AKIAIOSFODNN7EXAMPLE" },
	{ INSPECT_AWS_ACCESS_KEY, "tmp ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A" },
	{ INSPECT_AWS_SECRET_KEY,
	  "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	  "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" },
	{ INSPECT_AWS_SECRET_KEY,
	  "{\"SecretAccessKey\": \"je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY\"}",
	  "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY" },
	{ INSPECT_AWS_SECRET_KEY,
	  "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKE+",
	  "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKE+" },
	{ INSPECT_GITHUB_TOKEN, "token " GH36 " used", GH36 },
	{ INSPECT_GITHUB_TOKEN, "gho_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
	  "gho_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A" },
	{ INSPECT_GITHUB_TOKEN,
	  "pat "
	  "github_pat_11ABCDEFG0123456789_"
	  "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW.",
	  "github_pat_11ABCDEFG0123456789_"
	  "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW" },
	{ INSPECT_GITLAB_TOKEN, "gl glpat-xR4nD0mT0k3nV4lu3xyz.", "glpat-xR4nD0mT0k3nV4lu3xyz" },
	{ INSPECT_SLACK_TOKEN, "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx end",
	  "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx" },
	{ INSPECT_SLACK_TOKEN, "xoxp-1234-5678-abcdefgh-", "xoxp-1234-5678-abcdefgh" },
	{ INSPECT_STRIPE_KEY, "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc!",
	  "sk_live_4eC39HqLyjWDarjtT1zdp7dc" },
	{ INSPECT_STRIPE_KEY, "rk_live_51H8Xyz0123456789abcdefGH",
	  "rk_live_51H8Xyz0123456789abcdefGH" },
	{ INSPECT_STRIPE_KEY, "pk_test_TYooMQauvdEDq54NiTphI7jx",
	  "pk_test_TYooMQauvdEDq54NiTphI7jx" },
	{ INSPECT_PRIVATE_KEY,
	  "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L7VLPHCgcBIjk\n"
	  "-----END RSA PRIVATE KEY-----\nthanks",
	  "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L7VLPHCgcBIjk\n"
	  "-----END RSA PRIVATE KEY-----" },
	{ INSPECT_PRIVATE_KEY, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA" },
	{ INSPECT_JWT,
	  "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
	  "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U.",
	  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
	  "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U" },
	{ ID_EMPLOYEE, "badge EMP-004211 issued", "EMP-004211" },
	{ ID_CODENAME, "status of PROJECT falcon?", "PROJECT falcon" },
	{ ID_CODENAME, "the Bluebird plan", "Bluebird" },
	{ ID_INTERNAL_CARD, "int 9000000000000001 x", "9000000000000001" },
	{ ID_CREDITOR_REF, "ref RF18539007547034.", "RF18539007547034" },
	{ ID_STAFF, "Staff number: SID-004211 (new)", "SID-004211" },
	{ ID_STAFF, "the employee with id SID-123456", "SID-123456" },
	{ ID_TICKET, "see TKT-AB12CD34 now", "TKT-AB12CD34" },
};

static const neg_case negatives[] = {
	{ INSPECT_EMAIL, "user@localhost" },
	{ INSPECT_EMAIL, "a@b.c" },
	{ INSPECT_EMAIL, "@example.com" },
	{ INSPECT_EMAIL, "john..doe@example.com" },
	{ INSPECT_EMAIL, "x@-bad.example.com" },
	{ INSPECT_EMAIL, "x@example.c0m" },
	{ INSPECT_EMAIL, "x@my-host and x@a.b1-c or x@example.-com" },
	{ INSPECT_PHONE, "on 2024-01-15 at 10:30" },
	{ INSPECT_PHONE, "version 1.2.3 build 12345" },
	{ INSPECT_PHONE, "+1234567" },
	{ INSPECT_PHONE, "order 4155552671" },
	{ INSPECT_PHONE, "05.11.2026" },
	{ INSPECT_PHONE, "ref 0012345678 ok" },
	{ INSPECT_PHONE, "00 12 34 56 78" },
	{ INSPECT_PHONE, "0004 1234 5678" },
	{ INSPECT_PHONE, "id 0012 3456 7890 1234 5678 end" },
	{ INSPECT_PHONE, "x0044 20 7946 0958" },
	{ INSPECT_PHONE, "0044 20 7946 0958/12" },
	/* a group inside a larger number is not the start of a national one */
	{ INSPECT_PHONE, "population 8 045 311 447 people" },
	{ INSPECT_PHONE, "total 1.045.311.447,50 EUR" },
	{ INSPECT_PHONE, "order 2024 0115 1030 4411" },
	{ INSPECT_PHONE, "tracking 1Z 999 AA1 01 2345 6784" },
	{ INSPECT_PAYMENT_CARD, "card 4111111111111112" },
	{ INSPECT_PAYMENT_CARD, "card 4111 1111 1111 1112" },
	{ INSPECT_PAYMENT_CARD, "1234567812345670" },
	{ INSPECT_PAYMENT_CARD, "4111 1111-1111 1111" },
	{ INSPECT_PAYMENT_CARD, "x4111111111111111" },
	{ INSPECT_PAYMENT_CARD, "41111111111111111111" },
	{ INSPECT_PAYMENT_CARD, "5555555555554" },
	{ INSPECT_PAYMENT_CARD, "3782822463100050" },
	{ INSPECT_IBAN, "DE89 3704 0044 0532 0130 01" },
	{ INSPECT_IBAN, "DE8937040044053201300" },
	{ INSPECT_IBAN, "XX89370400440532013000" },
	{ INSPECT_IBAN, "GB82WEST1234569876543" },
	{ INSPECT_IBAN, "pay de89 3704 0044 0532 0130 01 now" },
	{ INSPECT_IBAN, "xx89370400440532013000" },
	{ INSPECT_IBAN, "xde89 3704 0044 0532 0130 00" },
	{ INSPECT_IBAN, "de89 3704 0044 0532 0130 00x" },
	{ INSPECT_IBAN, "room de12 then call 123456789 or 987654321 later" },
	{ INSPECT_IBAN, "order no 12 3456 7890 1234 5678 9012 3456 shipped" },
	{ INSPECT_US_SSN, "000-12-3456" },
	{ INSPECT_US_SSN, "666-12-3456" },
	{ INSPECT_US_SSN, "900-12-3456" },
	{ INSPECT_US_SSN, "999-12-3456" },
	{ INSPECT_US_SSN, "123-00-4567" },
	{ INSPECT_US_SSN, "123-45-0000" },
	{ INSPECT_US_SSN, "1123-45-6789" },
	{ INSPECT_US_SSN, "555-123-45-6789" },
	{ INSPECT_IPV4, "256.1.1.1" },
	{ INSPECT_IPV4, "1.2.3" },
	{ INSPECT_IPV4, "10.0.0.01" },
	{ INSPECT_IPV4, "v1.2.3.4a" },
	{ INSPECT_IPV4, "release 1.2.3.4.5 out" },
	{ INSPECT_IPV6, "std::string and Foo::Bar" },
	{ INSPECT_IPV6, "at 12:30:45" },
	{ INSPECT_IPV6, "mac 00:1a:2b:3c:4d:5e" },
	{ INSPECT_IPV6, "ratio a:b" },
	{ INSPECT_IPV6, "1:2:3:4:5:6:7:8:9" },
	{ INSPECT_AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPL" },
	{ INSPECT_AWS_ACCESS_KEY, "XKIAIOSFODNN7EXAMPLE" },
	{ INSPECT_AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPLEX" },
	{ INSPECT_AWS_SECRET_KEY, "value wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" },
	{ INSPECT_AWS_SECRET_KEY, "aws key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYX" },
	{ INSPECT_AWS_SECRET_KEY, "aws sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709" },
	{ INSPECT_GITHUB_TOKEN, "ghp_short123" },
	{ INSPECT_GITHUB_TOKEN, "xghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A" },
	{ INSPECT_GITLAB_TOKEN, "glpat-short" },
	{ INSPECT_SLACK_TOKEN, "xoxb-abcdefghijkl" },
	{ INSPECT_SLACK_TOKEN, "xoxz-123456789012" },
	{ INSPECT_STRIPE_KEY, "sk_live_short" },
	{ INSPECT_STRIPE_KEY, "sk_prod_4eC39HqLyjWDarjtT1zdp7dc" },
	{ INSPECT_PRIVATE_KEY, "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----" },
	{ INSPECT_PRIVATE_KEY, "-----BEGIN CERTIFICATE-----" },
	{ INSPECT_JWT, "eyJhbGciOiJIUzI1NiJ9" },
	{ INSPECT_JWT, "eyJhbGciOi.bar.baz" },
	{ INSPECT_JWT, "abc.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig" },
	{ ID_EMPLOYEE, "EMP-00421" },
	{ ID_CODENAME, "Project Falconry and bluebirds" },
	{ ID_INTERNAL_CARD, "9000000000000002" },
	{ ID_CREDITOR_REF, "RF19539007547034" },
	{ ID_STAFF, "badge SID-004211 issued" },
	{ ID_STAFF, "staff" },
	{ ID_STAFF, "SID-004211 staff" },
	{ ID_STAFF, "staff: then a long digression, well over sixty-four bytes, before we get to "
	            "the id SID-004211" },
	{ ID_STAFF, "staffing SID-004211" },
};

static size_t count_det(const inspect_findings *f, unsigned det)
{
	size_t c = 0;
	for (size_t i = 0; i < f->n; i++)
		c += f->items[i].detector == det;
	return c;
}

static void test_positives(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_LOG);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(positives); i++) {
		const pos_case *c = &positives[i];
		inspect_findings f = { 0 };
		assert_int_equal(inspect_scan(E, S, &p, span_cstr(c->text), &f), CUSTOS_OK);
		const char *want = strstr(c->text, c->value);
		assert_non_null(want);
		bool found = false;
		for (size_t k = 0; k < f.n; k++) {
			const inspect_finding *x = &f.items[k];
			if (x->detector == c->det && x->offset == (uint64_t)(want - c->text) &&
			    x->length == strlen(c->value)) {
				found = true;
				assert_true(x->confidence > 0 && x->confidence <= 100);
				assert_int_equal(x->action, INSPECT_ACT_LOG);
			}
		}
		if (!found) {
			fprintf(stderr, "case %zu (%s): missing in '%s'; got:\n", i,
			        inspect_engine_detector_name(E, c->det), c->text);
			for (size_t k = 0; k < f.n; k++)
				fprintf(stderr, "  %s @%llu+%u\n",
				        inspect_engine_detector_name(E, f.items[k].detector),
				        (unsigned long long)f.items[k].offset, f.items[k].length);
		}
		assert_true(found);
		inspect_findings_free(&f);
	}
}

static void test_negatives(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_LOG);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(negatives); i++) {
		const neg_case *c = &negatives[i];
		inspect_findings f = { 0 };
		assert_int_equal(inspect_scan(E, S, &p, span_cstr(c->text), &f), CUSTOS_OK);
		if (count_det(&f, c->det) != 0)
			fprintf(stderr, "negative case %zu (%s) matched: '%s'\n", i,
			        inspect_engine_detector_name(E, c->det), c->text);
		assert_int_equal(count_det(&f, c->det), 0);
		inspect_findings_free(&f);
	}
}

/* A detector not in the profile finds nothing; one profile applies only its detectors. */
static void test_profile_selects(void **state)
{
	(void)state;
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_EMAIL, INSPECT_ACT_REDACT);
	inspect_summary sum;
	char *r = ti_redact(&p, "a@example.com 4111111111111111", 30, &sum);
	assert_string_equal(r, "[REDACTED:EMAIL] 4111111111111111");
	assert_int_equal(sum.count[INSPECT_EMAIL], 1);
	assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 0);
	assert_true(sum.redacted);
	free(r);
	inspect_profile none = { 0 };
	assert_false(inspect_profile_active(&none));
	assert_int_equal(inspect_profile_holdback(E, &none), 0);
	r = ti_redact(&none, "a@example.com", 13, &sum);
	assert_string_equal(r, "a@example.com");
	assert_int_equal(sum.total, 0);
	free(r);
	inspect_profile q = { 0 };
	inspect_profile_set(&q, INSPECT_EMAIL, INSPECT_ACT_LOG);
	inspect_profile_set(&q, INSPECT_US_SSN, INSPECT_ACT_DENY);
	inspect_profile_merge(&p, &q);
	assert_int_equal(p.action[INSPECT_EMAIL], INSPECT_ACT_REDACT);
	assert_int_equal(p.action[INSPECT_US_SSN], INSPECT_ACT_DENY);
	/* hold-back follows the profile: cards alone need far less than everything */
	inspect_profile card = { 0 };
	inspect_profile_set(&card, INSPECT_PAYMENT_CARD, INSPECT_ACT_REDACT);
	inspect_profile all = ti_profile(INSPECT_ACT_REDACT);
	size_t hc = inspect_profile_holdback(E, &card), ha = inspect_profile_holdback(E, &all);
	assert_true(hc >= 26 && hc < 64);
	assert_true(ha >= hc && ha <= 1024);
}

/* Overlaps are resolved the same way every time: a finding inside a stronger one is dropped,
 * overlapping masks merge under the first one's type. */
static void test_overlap(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	inspect_summary sum;
	char *r = ti_redact(&p, "mapped ::ffff:10.0.0.1 end", 26, &sum);
	assert_string_equal(r, "mapped [REDACTED:IPV6] end");
	assert_int_equal(sum.count[INSPECT_IPV6], 1);
	assert_int_equal(sum.count[INSPECT_IPV4], 0);
	free(r);
	/* A phone number inside an e-mail address: the stronger e-mail contains it. */
	r = ti_redact(&p, "x +14155552671@example.com y", 28, &sum);
	assert_string_equal(r, "x [REDACTED:EMAIL] y");
	assert_int_equal(sum.count[INSPECT_PHONE], 0);
	assert_int_equal(sum.count[INSPECT_EMAIL], 1);
	free(r);
	/* A ticket id running into an employee id: they overlap without one containing the
	 * other, so one mask covers both, typed by the one that starts first. */
	r = ti_redact(&p, "x TKT-ABEMP-123456 y", 20, &sum);
	assert_string_equal(r, "x [REDACTED:TICKET] y");
	assert_int_equal(sum.count[ID_TICKET], 1);
	assert_int_equal(sum.count[ID_EMPLOYEE], 1);
	free(r);
	/* Same input twice: same output (deterministic). */
	const char *t = "AKIAIOSFODNN7EXAMPLE aws 4111-1111-1111-1111 +1 415 555 2671 fe80::1";
	char *a = ti_redact(&p, t, strlen(t), NULL);
	char *b = ti_redact(&p, t, strlen(t), NULL);
	assert_string_equal(a, b);
	assert_null(strstr(a, "4111"));
	free(a);
	free(b);
}

/* Every positive, at every 2-way split and in 1..4-byte fragments: the stream releases exactly
 * what block redaction produces, and never the value. */
static void test_split_every_offset(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(positives); i++) {
		const char *t = positives[i].text;
		size_t n = strlen(t);
		inspect_summary bs, ss;
		char *want = ti_redact(&p, t, n, &bs);
		assert_null(strstr(want, positives[i].value));
		assert_true(bs.count[positives[i].det] >= 1);
		for (size_t k = 0; k <= n; k++) {
			size_t sizes[2] = { k, n - k + 1 };
			char *got = ti_stream(&p, t, n, k == 0 ? sizes + 1 : sizes, k == 0 ? 1 : 2,
			                      &ss);
			if (strcmp(got, want) != 0)
				fprintf(stderr, "case %zu split %zu:\n  want %s\n  got  %s\n", i, k,
				        want, got);
			assert_string_equal(got, want);
			assert_int_equal(ss.total, bs.total);
			free(got);
		}
		uint32_t seed = 0x9e3779b9u + (uint32_t)i;
		for (int run = 0; run < 8; run++) {
			size_t sizes[64];
			for (size_t k = 0; k < 64; k++)
				sizes[k] = 1 + ti_rand(&seed) % 4;
			char *got = ti_stream(&p, t, n, sizes, 64, &ss);
			assert_string_equal(got, want);
			free(got);
		}
		free(want);
	}
}

static void test_checksums(void **state)
{
	(void)state;
	/* Luhn and mod 97 through custom validators: valid and one digit off. */
	inspect_profile p = { 0 };
	inspect_profile_set(&p, ID_INTERNAL_CARD, INSPECT_ACT_LOG);
	inspect_profile_set(&p, ID_CREDITOR_REF, INSPECT_ACT_LOG);
	const char *ok[] = { "9000000000000001", "RF18539007547034" };
	const char *bad[] = { "9000000000000011", "RF18539007547035" };
	for (size_t i = 0; i < 2; i++) {
		inspect_findings f = { 0 };
		assert_int_equal(inspect_scan(E, S, &p, span_cstr(ok[i]), &f), CUSTOS_OK);
		assert_int_equal(f.n, 1);
		assert_int_equal(f.items[0].confidence, 95);
		inspect_findings_free(&f);
		assert_int_equal(inspect_scan(E, S, &p, span_cstr(bad[i]), &f), CUSTOS_OK);
		assert_int_equal(f.n, 0);
		inspect_findings_free(&f);
	}
}

static void test_names_and_parsers(void **state)
{
	(void)state;
	unsigned id;
	assert_int_equal(inspect_builtin_lookup(span_cstr("payment_card"), &id), CUSTOS_OK);
	assert_int_equal(id, INSPECT_PAYMENT_CARD);
	assert_int_equal(inspect_builtin_lookup(span_cstr("credit_card"), &id),
	                 CUSTOS_ERR_NOTFOUND);
	assert_non_null(strstr(err_msg(), "credit_card"));
	size_t n;
	const char *const *names = inspect_builtin_names(&n);
	assert_int_equal(n, INSPECT_BUILTIN_COUNT);
	assert_string_equal(names[INSPECT_JWT], "jwt");
	assert_string_equal(inspect_builtin_name(INSPECT_US_SSN), "us_ssn");
	assert_null(inspect_builtin_name(INSPECT_BUILTIN_COUNT));
	assert_int_equal(inspect_engine_detector_find(E, span_cstr("codename"), &id), CUSTOS_OK);
	assert_int_equal(id, ID_CODENAME);
	assert_int_equal(inspect_engine_detector_find(E, span_cstr("nope"), &id),
	                 CUSTOS_ERR_NOTFOUND);
	assert_int_equal(inspect_engine_detector_count(E), INSPECT_BUILTIN_COUNT + 6);
	assert_true(inspect_engine_has(E, INSPECT_JWT));
	assert_false(inspect_engine_has(E, 60));
	assert_null(inspect_engine_detector_name(E, 60));
	inspect_validator v;
	assert_int_equal(inspect_validator_parse(span_cstr("luhn"), &v), CUSTOS_OK);
	assert_int_equal(v, INSPECT_VALIDATE_LUHN);
	assert_int_equal(inspect_validator_parse(span_cstr("mod97"), &v), CUSTOS_OK);
	assert_int_equal(inspect_validator_parse(span_cstr("none"), &v), CUSTOS_OK);
	assert_int_equal(inspect_validator_parse(span_cstr("crc32"), &v), CUSTOS_ERR_INVAL);
	inspect_action a;
	assert_int_equal(inspect_action_parse(span_cstr("deny"), &a), CUSTOS_OK);
	assert_int_equal(a, INSPECT_ACT_DENY);
	assert_int_equal(inspect_action_parse(span_cstr("redact"), &a), CUSTOS_OK);
	assert_int_equal(inspect_action_parse(span_cstr("log"), &a), CUSTOS_OK);
	assert_int_equal(inspect_action_parse(span_cstr("none"), &a), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_action_parse(span_cstr("block"), &a), CUSTOS_ERR_INVAL);
	assert_string_equal(inspect_action_name(INSPECT_ACT_REDACT), "redact");
	assert_int_equal(inspect_name_check(span_cstr("employee_id")), CUSTOS_OK);
	assert_int_equal(inspect_name_check(span_cstr("Employee-ID.v2")), CUSTOS_OK);
	assert_int_equal(inspect_name_check(span_cstr("bad name")), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_name_check(span_cstr("bad\tname")), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_name_check(span_cstr("")), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_name_check(span_cstr("email")), CUSTOS_ERR_INVAL);
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(inspect_name_check(span_cstr(longname)), CUSTOS_ERR_INVAL);
}

static void test_pattern_check(void **state)
{
	(void)state;
	unsigned w = 0;
	assert_int_equal(inspect_pattern_check("EMP-[0-9]{6}", &w), CUSTOS_OK);
	assert_int_equal(w, 10);
	assert_int_equal(inspect_pattern_check("(?i)secret[0-9]{2,8}", NULL), CUSTOS_OK);
	/* unbounded: accepted, reported so a checker can warn */
	assert_int_equal(inspect_pattern_check("a+", &w), CUSTOS_OK);
	assert_int_equal(w, UINT_MAX);
	assert_int_equal(inspect_pattern_check("x{600}", &w), CUSTOS_OK);
	assert_int_equal(w, 600);
	assert_int_equal(inspect_pattern_check("a?", NULL), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "empty"));
	assert_int_equal(inspect_pattern_check("(abc", NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_pattern_check("(a)\\1", NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_pattern_check("(?<=a)b", NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_pattern_check("", NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_pattern_check(NULL, NULL), CUSTOS_ERR_INVAL);
}

static void test_custom_refused(void **state)
{
	(void)state;
	static const char *const backref[] = { "(x)[0-9]\\1" };
	static const char *const good[] = { "x[0-9]{4}" };
	static const char *const empty_kw[] = { "" };
	struct {
		inspect_custom_def d[2];
		size_t n;
		custos_err want;
		const char *msg;
	} cases[] = {
		{ { { .name = "ok", .patterns = backref, .n_patterns = 1 } },
		  1,
		  CUSTOS_ERR_INVAL,
		  "pattern 1" },
		{ { { .name = "Bad name", .patterns = good, .n_patterns = 1 } },
		  1,
		  CUSTOS_ERR_INVAL,
		  "Bad name" },
		{ { { .name = "email", .patterns = good, .n_patterns = 1 } },
		  1,
		  CUSTOS_ERR_INVAL,
		  "built-in" },
		{ { { .name = "empty" } }, 1, CUSTOS_ERR_INVAL, "neither" },
		{ { { .name = "kw", .keywords = empty_kw, .n_keywords = 1 } },
		  1,
		  CUSTOS_ERR_INVAL,
		  "keyword" },
		{ { { .name = "twice", .patterns = good, .n_patterns = 1 },
		    { .name = "twice", .patterns = good, .n_patterns = 1 } },
		  2,
		  CUSTOS_ERR_INVAL,
		  "twice" },
		{ { { .name = NULL, .patterns = good, .n_patterns = 1 } },
		  1,
		  CUSTOS_ERR_INVAL,
		  "no name" },
		{ { { .name = "many",
		      .patterns = good,
		      .n_patterns = INSPECT_MAX_CUSTOM_EXPRS + 1 } },
		  1,
		  CUSTOS_ERR_LIMIT,
		  "more than" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		inspect_engine_opts o = { .builtins = 0,
			                  .custom = cases[i].d,
			                  .n_custom = cases[i].n };
		inspect_engine *e = NULL;
		assert_int_equal(inspect_engine_new(&o, &e), cases[i].want);
		assert_null(e);
		if (strstr(err_msg(), cases[i].msg) == NULL)
			fprintf(stderr, "case %zu: message '%s'\n", i, err_msg());
		assert_non_null(strstr(err_msg(), cases[i].msg));
	}
	inspect_engine_opts too_many = { .custom = cases[0].d, .n_custom = INSPECT_MAX_CUSTOM + 1 };
	inspect_engine *e = NULL;
	assert_int_equal(inspect_engine_new(&too_many, &e), CUSTOS_ERR_LIMIT);
	int at = 0;
	assert_int_equal(inspect_engine_new_at(&too_many, &e, &at), CUSTOS_ERR_LIMIT);
	assert_int_equal(at, -1); /* no one detector */

	/* inspect_engine_new_at names the detector a failure is placed at (policy check): the one
	 * refused, or the one whose expression Hyperscan's compile of the whole set names; -1 on
	 * success. Hyperscan refuses this pattern only when compiling it ("Pattern is too
	 * large."), after hs_expression_info has passed it. */
	static const char *const big[] = { "(k10|m)[^q]{2,123}y" };
	inspect_custom_def two[2] = { { .name = "fine", .patterns = good, .n_patterns = 1 },
		                      { .name = "big", .patterns = big, .n_patterns = 1 } };
	inspect_engine_opts o = { .builtins = 1, .custom = two, .n_custom = 2 };
	assert_int_equal(inspect_pattern_check(big[0], NULL), CUSTOS_OK);
	assert_int_equal(inspect_engine_new_at(&o, &e, &at), CUSTOS_ERR_INVAL);
	assert_null(e);
	assert_int_equal(at, INSPECT_BUILTIN_COUNT + 1);
	assert_non_null(strstr(err_msg(), "compiling detector 'big'"));
	two[1] = (inspect_custom_def){ .name = "empty" };
	assert_int_equal(inspect_engine_new_at(&o, &e, &at), CUSTOS_ERR_INVAL);
	assert_int_equal(at, INSPECT_BUILTIN_COUNT + 1);
	two[1] = (inspect_custom_def){ .name = "fine", .patterns = good, .n_patterns = 1 };
	two[0] = (inspect_custom_def){ .name = "kw", .keywords = empty_kw, .n_keywords = 1 };
	assert_int_equal(inspect_engine_new_at(&o, &e, &at), CUSTOS_ERR_INVAL);
	assert_int_equal(at, INSPECT_BUILTIN_COUNT);
	two[0] = (inspect_custom_def){ .name = "also", .patterns = good, .n_patterns = 1 };
	two[1] = (inspect_custom_def){
		.name = "big", .patterns = big, .n_patterns = 1, .unused = true
	};
	assert_int_equal(inspect_engine_new_at(&o, &e, &at), CUSTOS_OK);
	assert_int_equal(at, -1);
	inspect_engine_free(e);
}

/* Keywords see what detectors see: one written with characters the normalised view changes (a
 * no-break space, a fullwidth letter, a zero-width space, a Cyrillic look-alike in a Latin
 * word) matches the text in either form; before, it never matched at all. A pattern that spells
 * out such a character could never match, and is refused; a keyword of invisible characters
 * alone too. */
static void test_custom_view_chars(void **state)
{
	(void)state;
	static const char *const kws[] = {
		("Project\xc2\xa0"
		 "Falcon"),            /* NBSP (the split ends the hex escape before F) */
		"\xef\xbc\xa2luebird", /* fullwidth B */
		"red\xe2\x80\x8bwing", /* ZWSP inside */
		"Nightj\xd0\xb0r",     /* Cyrillic a in a Latin word */
		"\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0", /* Cyrillic alone: kept */
	};
	inspect_custom_def d = { .name = "codes", .keywords = kws, .n_keywords = 5 };
	inspect_engine_opts o = { .custom = &d, .n_custom = 1 };
	inspect_engine *e;
	inspect_scratch *s;
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_OK);
	assert_int_equal(inspect_scratch_new(e, &s), CUSTOS_OK);
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_BUILTIN_COUNT, INSPECT_ACT_REDACT);
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "on Project Falcon now", "on [REDACTED:CODES] now" },
		{ "on Project\xc2\xa0"
		  "Falcon now",
		  "on [REDACTED:CODES] now" },
		{ "on project falcon now", "on [REDACTED:CODES] now" },
		{ "a Bluebird b", "a [REDACTED:CODES] b" },
		{ "a \xef\xbc\xa2luebird b", "a [REDACTED:CODES] b" },
		{ "a redwing b", "a [REDACTED:CODES] b" },
		{ "a red\xe2\x80\x8bwing b", "a [REDACTED:CODES] b" },
		{ "a Nightjar b", "a [REDACTED:CODES] b" },
		{ "a Nightj\xd0\xb0r b", "a [REDACTED:CODES] b" },
		{ "\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0 x", "[REDACTED:CODES] x" },
		{ "a Falcon b", "a Falcon b" },
	};
	buf out;
	buf_init(&out, 4096);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		buf_reset(&out);
		assert_int_equal(inspect_redact_text(e, s, &p, span_cstr(cases[i].in), &out, NULL),
		                 CUSTOS_OK);
		if (!span_eq_cstr(buf_span(&out), cases[i].out))
			fprintf(stderr, "case %zu: '%s' gave '%.*s'\n", i, cases[i].in,
			        (int)buf_used(&out), (const char *)buf_ptr(&out));
		assert_true(span_eq_cstr(buf_span(&out), cases[i].out));
	}
	buf_free(&out);
	inspect_scratch_free(s);
	inspect_engine_free(e);

	static const char *const invisible[] = { "\xe2\x80\x8b\xc2\xad" };
	d = (inspect_custom_def){ .name = "codes", .keywords = invisible, .n_keywords = 1 };
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_ERR_INVAL);
	assert_null(e);
	assert_int_equal(inspect_keyword_compile(invisible[0], NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_keyword_compile(kws[0], NULL), CUSTOS_OK);

	assert_int_equal(inspect_pattern_check("SID\xc2\xa0[0-9]{6}", NULL), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "U+00A0"));
	assert_int_equal(inspect_pattern_check("\xef\xbc\xa5MP-[0-9]{6}", NULL), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "'E'"));
	assert_int_equal(inspect_pattern_check("x\xe2\x80\x8by", NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(inspect_pattern_check("caf\xc3\xa9-[0-9]{3}", NULL), CUSTOS_OK);
	assert_int_equal(inspect_pattern_check("\\xa0[0-9]{3}", NULL), CUSTOS_OK);
	static const char *const pats[] = { "SID\xc2\xa0[0-9]{6}" };
	d = (inspect_custom_def){ .name = "codes", .patterns = pats, .n_patterns = 1 };
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "codes"));
}

/* A finding inside one of higher confidence but a weaker action stays: a value a rule denies
 * (or redacts) is not let through inside one the rule only logs (or redacts). Before, the
 * inner finding was dropped, so an AWS key in a logged key block passed in clear, and a denied
 * phone number as the local part of a logged address too; in blocks, streams and JSON bodies. */
static void test_overlap_stronger_action(void **state)
{
	(void)state;
	const char *pem =
	        "-----BEGIN PRIVATE KEY-----\nAKIAIOSFODNN7EXAMPLE\n-----END PRIVATE KEY-----";
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_PRIVATE_KEY, INSPECT_ACT_LOG);
	inspect_profile_set(&p, INSPECT_AWS_ACCESS_KEY, INSPECT_ACT_DENY);
	inspect_profile_set(&p, INSPECT_EMAIL, INSPECT_ACT_LOG);
	inspect_profile_set(&p, INSPECT_PHONE, INSPECT_ACT_DENY);
	buf out;
	buf_init(&out, 1u << 16);
	inspect_summary sum;
	const char *texts[] = { pem, "reach +14155552671@example.com" };
	const unsigned det[] = { INSPECT_AWS_ACCESS_KEY, INSPECT_PHONE };
	for (size_t i = 0; i < 2; i++) {
		buf_reset(&out);
		assert_int_equal(inspect_redact_text(E, S, &p, span_cstr(texts[i]), &out, &sum),
		                 CUSTOS_ERR_DENIED);
		assert_int_equal(sum.deny_detector, (int)det[i]);
		/* streamed byte by byte: denied, nothing of the value out */
		inspect_stream *st;
		assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
		buf_reset(&out);
		custos_err r = CUSTOS_OK;
		for (size_t k = 0; texts[i][k] != '\0' && r == CUSTOS_OK; k++)
			r = inspect_stream_feed(st, S, span_of(texts[i] + k, 1), &out);
		if (r == CUSTOS_OK)
			r = inspect_stream_finish(st, S, &out);
		assert_int_equal(r, CUSTOS_ERR_DENIED);
		assert_null(memmem(buf_ptr(&out), buf_used(&out), "AKIA", 4));
		assert_null(memmem(buf_ptr(&out), buf_used(&out), "4155", 4));
		inspect_stream_free(st);
	}
	/* the same in a JSON body whose text values are also joined */
	buf body;
	buf_init(&body, 1u << 16);
	assert_int_equal(buf_append_cstr(&body,
	                                 "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
	                                 "{\"role\":\"user\",\"content\":\""),
	                 CUSTOS_OK);
	assert_int_equal(json_escape(&body, span_cstr(pem)), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&body, "\"}]}"), CUSTOS_OK);
	buf_reset(&out);
	assert_int_equal(inspect_json_redact(E, S, &p, buf_span(&body), &out, &sum),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(sum.deny_detector, INSPECT_AWS_ACCESS_KEY);
	/* a redacted key inside a logged block is masked; the block stays */
	inspect_profile_set(&p, INSPECT_AWS_ACCESS_KEY, INSPECT_ACT_REDACT);
	buf_reset(&out);
	assert_int_equal(inspect_redact_text(E, S, &p, span_cstr(pem), &out, &sum), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "-----BEGIN PRIVATE KEY-----\n"
	                                         "[REDACTED:AWS_ACCESS_KEY]\n"
	                                         "-----END PRIVATE KEY-----"));
	assert_int_equal(sum.count[INSPECT_PRIVATE_KEY], 1);
	assert_int_equal(sum.count[INSPECT_AWS_ACCESS_KEY], 1);
	buf_reset(&out);
	assert_int_equal(inspect_json_redact(E, S, &p, buf_span(&body), &out, &sum), CUSTOS_OK);
	assert_non_null(memmem(buf_ptr(&out), buf_used(&out), "[REDACTED:AWS_ACCESS_KEY]", 25));
	assert_null(memmem(buf_ptr(&out), buf_used(&out), "AKIA", 4));
	/* under one action the stronger container still holds it (counted once) */
	inspect_profile_set(&p, INSPECT_PRIVATE_KEY, INSPECT_ACT_REDACT);
	buf_reset(&out);
	assert_int_equal(inspect_redact_text(E, S, &p, span_cstr(pem), &out, &sum), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "[REDACTED:PRIVATE_KEY]"));
	assert_int_equal(sum.count[INSPECT_AWS_ACCESS_KEY], 0);
	buf_free(&body);
	buf_free(&out);
}

/* Many context keywords and many matches: each match looks up the keywords near it, not all of
 * them. Before, resolution compared every match with every keyword: 50,000 of each (850 KB of
 * "staff SID-123456 ") took some 14 s of CPU under the sanitizers, 0.1 s now; the bound
 * leaves room for a loaded machine. CPU time, not wall time. */
static void test_context_many(void **state)
{
	(void)state;
	const char *unit = "staff SID-123456 ";
	size_t ul = strlen(unit), n = 50000;
	char *t = malloc(n * ul + 64);
	assert_non_null(t);
	for (size_t i = 0; i < n; i++)
		memcpy(t + i * ul, unit, ul);
	inspect_profile p = { 0 };
	inspect_profile_set(&p, ID_STAFF, INSPECT_ACT_REDACT);
	buf out;
	buf_init(&out, 1u << 26);
	inspect_summary sum;
	clock_t c0 = clock();
	assert_int_equal(inspect_redact_text(E, S, &p, span_of(t, n * ul), &out, &sum), CUSTOS_OK);
	double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
	fprintf(stderr, "context keywords x matches: %.2f s CPU\n", secs);
	assert_true(secs < 2.0);
	assert_int_equal(sum.count[ID_STAFF], n);
	/* the window is kept: a match 65 bytes after its keyword is no finding */
	memcpy(t, "staff", 5);
	memset(t + 5, ' ', 65);
	memcpy(t + 70, "SID-123456 x", 13);
	buf_reset(&out);
	assert_int_equal(inspect_redact_text(E, S, &p, span_of(t, 82), &out, &sum), CUSTOS_OK);
	assert_int_equal(sum.total, 0);
	memmove(t + 69, t + 70, 13);
	buf_reset(&out);
	assert_int_equal(inspect_redact_text(E, S, &p, span_of(t, 81), &out, &sum), CUSTOS_OK);
	assert_int_equal(sum.count[ID_STAFF], 1);
	buf_free(&out);
	free(t);
}

/* An engine with nothing compiled passes text through; one built-in alone finds only it. */
static void test_small_engines(void **state)
{
	(void)state;
	inspect_engine_opts o = { 0 };
	inspect_engine *e;
	inspect_scratch *s;
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_OK);
	assert_int_equal(inspect_scratch_new(e, &s), CUSTOS_OK);
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	buf out;
	buf_init(&out, 1024);
	assert_int_equal(inspect_redact_text(e, s, &p, span_cstr("a@example.com"), &out, NULL),
	                 CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "a@example.com"));
	inspect_scratch_free(s);
	inspect_engine_free(e);

	o.builtins = UINT64_C(1) << INSPECT_US_SSN;
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_OK);
	assert_int_equal(inspect_scratch_new(e, &s), CUSTOS_OK);
	assert_false(inspect_engine_has(e, INSPECT_EMAIL));
	buf_reset(&out);
	assert_int_equal(
	        inspect_redact_text(e, s, &p, span_cstr("a@example.com 123-45-6789"), &out, NULL),
	        CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "a@example.com [REDACTED:US_SSN]"));
	inspect_scratch_free(s);
	inspect_engine_free(e);

	/* Cards alone: no Hyperscan database at all, only the numeric scanner. */
	o.builtins = UINT64_C(1) << INSPECT_PAYMENT_CARD;
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_OK);
	assert_int_equal(inspect_scratch_new(e, &s), CUSTOS_OK);
	assert_true(inspect_engine_has(e, INSPECT_PAYMENT_CARD));
	assert_true(inspect_profile_holdback(e, &p) > 25);
	buf_reset(&out);
	assert_int_equal(
	        inspect_redact_text(e, s, &p, span_cstr("pay 4111-1111-1111-1111 now"), &out, NULL),
	        CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "pay [REDACTED:PAYMENT_CARD] now"));
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(e, &p, &st), CUSTOS_OK);
	buf_reset(&out);
	const char *t = "pay 4111-1111-1111-1111 now";
	for (size_t i = 0; t[i]; i++)
		assert_int_equal(inspect_stream_feed(st, s, span_of(t + i, 1), &out), CUSTOS_OK);
	assert_int_equal(inspect_stream_finish(st, s, &out), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), "pay [REDACTED:PAYMENT_CARD] now"));
	inspect_stream_free(st);
	buf_free(&out);
	inspect_scratch_free(s);
	inspect_engine_free(e);
}

/* Text without any candidate, and binary bytes, pass unchanged. */
static void test_clean_and_binary(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	const char clean[] = "The quick brown fox jumps over the lazy dog, 42 times in 2026.";
	char *r = ti_redact(&p, clean, sizeof(clean) - 1, NULL);
	assert_string_equal(r, clean);
	free(r);
	char bin[300];
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (char)(i * 7 + 3);
	buf out;
	buf_init(&out, 4096);
	inspect_summary sum;
	assert_int_equal(inspect_redact_text(E, S, &p, span_of(bin, sizeof(bin)), &out, &sum),
	                 CUSTOS_OK);
	assert_int_equal(buf_used(&out), sizeof(bin));
	assert_memory_equal(buf_ptr(&out), bin, sizeof(bin));
	buf_free(&out);
}

/* The C scanner against Hyperscan running the patterns it stands for: random strings of
 * digits, separators, dots, colons, hex and other letters, fed in random fragments, must give
 * the same (from, to) list per anchor. */
typedef struct num_list {
	uint64_t from[4096], to[4096];
	size_t n;
} num_list;

static custos_err num_emit(void *ctx, unsigned anchor, uint64_t from, uint64_t to)
{
	num_list *l = (num_list *)ctx + anchor;
	if (l->n < 4096) {
		l->from[l->n] = from;
		l->to[l->n++] = to;
	}
	return CUSTOS_OK;
}

static int num_hs(unsigned id, unsigned long long from, unsigned long long to, unsigned flags,
                  void *ctx)
{
	(void)flags;
	(void)num_emit(ctx, id, from, to);
	return 0;
}

static void test_numeric_scanner(void **state)
{
	(void)state;
	hs_database_t *db;
	hs_compile_error_t *ce;
	const char *pats[DET_SCAN_N] = { DET_NUMERIC_PATTERN, DET_IPV4_PATTERN, DET_IPV6_PATTERN,
		                         DET_SSN_PATTERN, DET_E164_PATTERN };
	unsigned flags[DET_SCAN_N], ids[DET_SCAN_N];
	for (unsigned a = 0; a < DET_SCAN_N; a++) {
		flags[a] = HS_FLAG_SOM_LEFTMOST;
		ids[a] = a;
		assert_int_equal(det_scan_anchor_of(pats[a], HS_FLAG_SOM_LEFTMOST), (int)a);
	}
	assert_int_equal(det_scan_anchor_of("[0-9]{9}", HS_FLAG_SOM_LEFTMOST), -1);
	assert_int_equal(det_scan_anchor_of(DET_SSN_PATTERN, HS_FLAG_CASELESS), -1);
	assert_int_equal(
	        hs_compile_multi(pats, flags, ids, DET_SCAN_N, HS_MODE_BLOCK, NULL, &db, &ce),
	        HS_SUCCESS);
	hs_scratch_t *sc = NULL;
	assert_int_equal(hs_alloc_scratch(db, &sc), HS_SUCCESS);
	/* Digit-dense, address-like, and mostly letters (long stretches without matches). */
	static const char *const alphabets[] = {
		"0123456789012345678901234567890123456789 .()-x,",
		"0123456789abcdefABCDEF::::....0123456789 -g",
		"0123456789.0123456789...:x",
		("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
		 "abcdefghijklmnopqrstuvwxyz0123456789 -.:+"),
	};
	/* Pieces that make SSNs and E.164 numbers (and near misses) around each other. */
	static const char *const pieces[] = {
		"123-45-6789",
		"123-45-67890",
		"12-34-5678",
		"+1 415 555 2671",
		"+44 20 7946 0958",
		"+0123456789",
		"+1234567890123456789",
		"+33 (0)1 2345 6789",
		"+",
		"0",
		"7",
		"-",
		" ",
		"  ",
		".",
		"(",
		")",
		"_",
		"a",
		"\n",
	};
	static num_list want[DET_SCAN_N], got[DET_SCAN_N];
	uint32_t seed = 12345;
	char text[2000];
	size_t total[DET_SCAN_N] = { 0 };
	for (int run = 0; run < 1200; run++) {
		det_numeric_isa = (unsigned)(run / 7) % 4; /* best, SSE2, AVX2, AVX-512 */
		/* Short texts in small fragments, long ones in pieces of up to 300 bytes (the
		 * scanner's 64-byte blocks and their 24-byte look-back across feeds). */
		size_t n = 1 + ti_rand(&seed) % (run % 2 ? 600 : sizeof(text));
		size_t frag = run % 3 == 0 ? 300 : 40;
		if (run % 5 == 4) {
			for (size_t i = 0; i < n;) {
				const char *pc = pieces[ti_rand(&seed) % CUSTOS_ARRAY_LEN(pieces)];
				for (size_t k = 0; pc[k] != '\0' && i < n; k++)
					text[i++] = pc[k];
			}
		} else {
			const char *alpha = alphabets[run % 4];
			size_t an = strlen(alpha);
			for (size_t i = 0; i < n; i++)
				text[i] = alpha[ti_rand(&seed) % an];
		}
		memset(want, 0, sizeof(want));
		memset(got, 0, sizeof(got));
		assert_int_equal(hs_scan(db, text, (unsigned)n, 0, sc, num_hs, want), HS_SUCCESS);
		det_numeric st = { 0 };
		for (size_t at = 0; at < n;) {
			size_t len = 1 + ti_rand(&seed) % frag;
			if (len > n - at)
				len = n - at;
			assert_int_equal(det_numeric_scan(&st, (1u << DET_SCAN_N) - 1,
			                                  (const uint8_t *)text + at, len, at,
			                                  num_emit, got),
			                 CUSTOS_OK);
			at += len;
		}
		assert_int_equal(det_numeric_finish(&st, (1u << DET_SCAN_N) - 1, n, num_emit, got),
		                 CUSTOS_OK);
		for (unsigned a = 0; a < DET_SCAN_N; a++) {
			assert_int_equal(got[a].n, want[a].n);
			total[a] += want[a].n;
			for (size_t k = 0; k < want[a].n; k++) {
				assert_int_equal(got[a].from[k], want[a].from[k]);
				assert_int_equal(got[a].to[k], want[a].to[k]);
			}
		}
	}
	det_numeric_isa = 0;
	for (unsigned a = 0; a < DET_SCAN_N; a++)
		assert_true(total[a] > 100); /* each anchor was really exercised */
	/* An SSN that ends a 64-byte block, before a block without digits: 53 + 11 + 64. */
	memset(text, 'x', 128);
	memcpy(text + 53, "123-45-6789", 11);
	memset(got, 0, sizeof(got));
	det_numeric st = { 0 };
	assert_int_equal(det_numeric_scan(&st, 1u << DET_SCAN_SSN, (const uint8_t *)text, 128, 0,
	                                  num_emit, got),
	                 CUSTOS_OK);
	assert_int_equal(got[DET_SCAN_SSN].n, 0); /* "x123-45-6789x": no word boundaries */
	text[52] = ' ';
	text[64] = ' ';
	assert_int_equal(det_numeric_scan(&st, 1u << DET_SCAN_SSN, (const uint8_t *)text, 128, 128,
	                                  num_emit, got),
	                 CUSTOS_OK);
	assert_int_equal(got[DET_SCAN_SSN].n, 1);
	assert_int_equal(got[DET_SCAN_SSN].from[0], 128 + 53);
	assert_int_equal(got[DET_SCAN_SSN].to[0], 128 + 64);
	hs_free_scratch(sc);
	hs_free_database(db);
}

/* The per-thread scratch cache: one scratch per engine id and thread, two engines kept, a
 * third takes the least recently used slot; another thread gets its own. */
static void *other_thread_scratch(void *arg)
{
	inspect_scratch *s = NULL;
	if (inspect_thread_scratch(arg, 1, &s) != CUSTOS_OK)
		return NULL;
	return s;
}

static void test_thread_scratch(void **state)
{
	(void)state;
	inspect_engine_opts o = { .builtins = UINT64_C(1) << INSPECT_US_SSN };
	inspect_engine *e1, *e2, *e3;
	assert_int_equal(inspect_engine_new(&o, &e1), CUSTOS_OK);
	assert_int_equal(inspect_engine_new(&o, &e2), CUSTOS_OK);
	assert_int_equal(inspect_engine_new(&o, &e3), CUSTOS_OK);
	inspect_scratch *a, *b, *c, *x;
	assert_int_equal(inspect_thread_scratch(e1, 1, &a), CUSTOS_OK);
	assert_int_equal(inspect_thread_scratch(e1, 1, &x), CUSTOS_OK);
	assert_ptr_equal(a, x);
	assert_int_equal(inspect_thread_scratch(e2, 2, &b), CUSTOS_OK);
	assert_ptr_not_equal(a, b);
	assert_int_equal(inspect_thread_scratch(e1, 1, &x), CUSTOS_OK);
	assert_ptr_equal(a, x); /* both kept */
	/* A third id: engine 2 was used least recently, engine 1's scratch stays. */
	assert_int_equal(inspect_thread_scratch(e3, 3, &c), CUSTOS_OK);
	assert_int_equal(inspect_thread_scratch(e1, 1, &x), CUSTOS_OK);
	assert_ptr_equal(a, x);
	assert_int_equal(inspect_thread_scratch(e3, 3, &x), CUSTOS_OK);
	assert_ptr_equal(c, x);
	/* The scratch scans with its engine. */
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	buf out;
	buf_init(&out, 1024);
	assert_int_equal(inspect_redact_text(e3, c, &p, span_cstr("ssn 123-45-6789"), &out, NULL),
	                 CUSTOS_OK);
	assert_false(span_eq_cstr(buf_span(&out), "ssn 123-45-6789"));
	buf_free(&out);
	/* Another thread: its own scratch, freed when it ends (LeakSanitizer checks). */
	pthread_t t;
	void *theirs = NULL;
	assert_int_equal(pthread_create(&t, NULL, other_thread_scratch, e1), 0);
	assert_int_equal(pthread_join(t, &theirs), 0);
	assert_non_null(theirs);
	assert_ptr_not_equal(theirs, a);
	inspect_engine_free(e1);
	inspect_engine_free(e2);
	inspect_engine_free(e3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_positives),
		cmocka_unit_test(test_negatives),
		cmocka_unit_test(test_profile_selects),
		cmocka_unit_test(test_overlap),
		cmocka_unit_test(test_split_every_offset),
		cmocka_unit_test(test_checksums),
		cmocka_unit_test(test_names_and_parsers),
		cmocka_unit_test(test_pattern_check),
		cmocka_unit_test(test_custom_refused),
		cmocka_unit_test(test_small_engines),
		cmocka_unit_test(test_clean_and_binary),
		cmocka_unit_test(test_numeric_scanner),
		cmocka_unit_test(test_thread_scratch),
		cmocka_unit_test(test_custom_view_chars),
		cmocka_unit_test(test_overlap_stronger_action),
		cmocka_unit_test(test_context_many),
	};
	return cmocka_run_group_tests(tests, ti_setup, ti_teardown);
}
