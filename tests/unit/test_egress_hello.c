/*
 * ClientHello SNI extraction (the check that a non-intercepted CONNECT tunnel really goes to
 * the host it named): real ClientHellos from openssl s_client (tests/fuzz/corpus/egress), the
 * same split over two TLS records, every truncation (need more), and malformed inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/egress_int.h"

static size_t load(const char *name, uint8_t *out, size_t max)
{
	char p[4096];
	const char *src = getenv("CUSTOS_SRC");
	snprintf(p, sizeof(p), "%s/tests/fuzz/corpus/egress/%s", src ? src : ".", name);
	FILE *f = fopen(p, "rb");
	assert_non_null(f);
	size_t n = fread(out, 1, max, f);
	fclose(f);
	assert_true(n > 6);
	memmove(out, out + 1, n - 1); /* the first byte is the fuzz target's selector */
	return n - 1;
}

static int sni_of(const uint8_t *b, size_t n, char *sni, bool *has)
{
	return egress_hello_sni(b, n, sni, SSRF_MAX_HOST + 1, has);
}

static void test_real_hellos(void **st)
{
	uint8_t b[8192];
	char sni[SSRF_MAX_HOST + 1];
	bool has;
	(void)st;
	size_t n = load("hello-sni", b, sizeof(b));
	assert_int_equal(sni_of(b, n, sni, &has), 1);
	assert_true(has);
	assert_string_equal(sni, "wiki.corp.example");
	/* every truncation asks for more, never answers */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(sni_of(b, k, sni, &has), 0);
	n = load("hello-nosni", b, sizeof(b));
	assert_int_equal(sni_of(b, n, sni, &has), 1);
	assert_false(has);
	n = load("hello-tls12", b, sizeof(b));
	assert_int_equal(sni_of(b, n, sni, &has), 1);
	assert_string_equal(sni, "a.example");
}

static void test_split_records(void **st)
{
	uint8_t b[8192], two[8200];
	char sni[SSRF_MAX_HOST + 1];
	bool has;
	(void)st;
	size_t n = load("hello-sni", b, sizeof(b));
	size_t body = n - 5, first = body / 3;
	/* record 1: first bytes of the handshake; record 2: the rest */
	memcpy(two, b, 3);
	two[3] = (uint8_t)(first >> 8);
	two[4] = (uint8_t)first;
	memcpy(two + 5, b + 5, first);
	memcpy(two + 5 + first, b, 3);
	two[5 + first + 3] = (uint8_t)((body - first) >> 8);
	two[5 + first + 4] = (uint8_t)(body - first);
	memcpy(two + 10 + first, b + 5 + first, body - first);
	assert_int_equal(sni_of(two, n + 5, sni, &has), 1);
	assert_string_equal(sni, "wiki.corp.example");
	assert_int_equal(sni_of(two, n + 4, sni, &has), 0);
}

static void test_malformed(void **st)
{
	uint8_t b[8192];
	char sni[SSRF_MAX_HOST + 1];
	bool has;
	(void)st;
	size_t n = load("hello-sni", b, sizeof(b));
	uint8_t c[8192];
	memcpy(c, b, n);
	c[0] = 23; /* application data, not handshake */
	assert_int_equal(sni_of(c, n, sni, &has), -1);
	memcpy(c, b, n);
	c[5] = 2; /* ServerHello, not ClientHello */
	assert_int_equal(sni_of(c, n, sni, &has), -1);
	memcpy(c, b, n);
	c[1] = 2; /* not TLS */
	assert_int_equal(sni_of(c, n, sni, &has), -1);
	static const uint8_t http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(sni_of(http, sizeof(http) - 1, sni, &has), -1);
	static const uint8_t empty_rec[] = { 22, 3, 1, 0, 0 };
	assert_int_equal(sni_of(empty_rec, sizeof(empty_rec), sni, &has), -1);
	static const uint8_t huge_rec[] = { 22, 3, 1, 0xff, 0xff };
	assert_int_equal(sni_of(huge_rec, sizeof(huge_rec), sni, &has), -1);
	/* a handshake length that claims more than the parser accepts */
	static const uint8_t huge_hs[] = { 22, 3, 1, 0, 4, 1, 0x7f, 0xff, 0xff };
	assert_int_equal(sni_of(huge_hs, sizeof(huge_hs), sni, &has), -1);
	/* an SNI with an embedded NUL is refused */
	memcpy(c, b, n);
	uint8_t *p = memmem(c, n, "wiki.corp.example", 17);
	assert_non_null(p);
	p[4] = 0;
	assert_int_equal(sni_of(c, n, sni, &has), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_hellos),
		cmocka_unit_test(test_split_records),
		cmocka_unit_test(test_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
