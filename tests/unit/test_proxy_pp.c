/* Unit tests for the PROXY protocol parser (proxy/pp.c): every accepted form of versions 1 and
 * 2, every refusal with its reason, and every prefix of a valid header asking for more. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/pp.h"

static const uint8_t SIG[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* Every proper prefix of a valid header of length n needs more (0), never an answer. */
static void prefixes_need_more(const uint8_t *p, size_t n)
{
	pp_hdr h;
	for (size_t i = 0; i < n; i++)
		assert_int_equal(pp_parse(p, i, &h), 0);
}

static ssize_t v1(const char *s, pp_hdr *h)
{
	return pp_parse((const uint8_t *)s, strlen(s), h);
}

static void expect_bad(const uint8_t *p, size_t n, const char *why)
{
	pp_hdr h;
	assert_int_equal(pp_parse(p, n, &h), -1);
	assert_non_null(h.err);
	if (strstr(h.err, why) == NULL)
		fail_msg("reason '%s', want '%s'", h.err, why);
}

static void v1_bad(const char *s, const char *why)
{
	expect_bad((const uint8_t *)s, strlen(s), why);
}

static void addr_is(const struct sockaddr_storage *ss, const char *want_ip, unsigned want_port)
{
	char ip[INET6_ADDRSTRLEN];
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		assert_int_equal(ntohs(in->sin_port), want_port);
	} else {
		assert_int_equal(ss->ss_family, AF_INET6);
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		assert_int_equal(ntohs(in6->sin6_port), want_port);
	}
	assert_string_equal(ip, want_ip);
}

static void test_v1_ok(void **state)
{
	(void)state;
	pp_hdr h;
	const char *s = "PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\nGET / HTTP/1.1\r\n";
	size_t hl = strlen("PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n");

	assert_int_equal(v1(s, &h), (ssize_t)hl); /* the request after it is not taken */
	assert_int_equal(h.version, 1);
	assert_false(h.local);
	addr_is(&h.src, "203.0.113.7", 4242);
	addr_is(&h.dst, "192.0.2.1", 80);
	prefixes_need_more((const uint8_t *)s, hl);

	assert_int_equal(v1("PROXY TCP6 2001:db8::7 ::1 0 65535\r\n", &h), 36);
	addr_is(&h.src, "2001:db8::7", 0);
	addr_is(&h.dst, "::1", 65535);
	assert_int_equal(v1("PROXY UNKNOWN\r\n", &h), 15);
	assert_true(h.local);
	assert_int_equal(v1("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", &h), 35); /* rest ignored */
	assert_true(h.local);
	/* The longest line the spec allows (107 bytes with CRLF), and a TCP6 one of 104. */
	char longest[128];
	snprintf(longest, sizeof(longest),
	         "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
	assert_int_equal(strlen(longest), PP_V1_MAX);
	assert_int_equal(v1(longest, &h), PP_V1_MAX);
	prefixes_need_more((const uint8_t *)longest, PP_V1_MAX);
	memcpy(longest, "PROXY TCP6", 10);
	memmove(longest + 10, longest + 13, strlen(longest + 13) + 1);
	assert_int_equal(v1(longest, &h), PP_V1_MAX - 3);
	addr_is(&h.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
}

static void test_v1_bad(void **state)
{
	(void)state;
	v1_bad("GET / HTTP/1.1\r\n", "no PROXY protocol header");
	v1_bad("PROXX TCP4", "no PROXY protocol header");
	v1_bad("PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "single spaces");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", "single spaces");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "single spaces");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "single spaces");
	v1_bad("PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "not TCP4, TCP6 or UNKNOWN");
	v1_bad("PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", "not TCP4, TCP6 or UNKNOWN");
	v1_bad("PROXY UNKNOWNX\r\n", "single spaces");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "leading zeros");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n", "0..65535");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 123456\r\n", "0..65535");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "0..65535");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 2a\r\n", "0..65535");
	v1_bad("PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "not an IPv4 address");
	v1_bad("PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "not an IPv4 address");
	v1_bad("PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "not an IPv4 address");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3 1 2\r\n", "not an IPv4 address");
	v1_bad("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not an IPv6 address");
	v1_bad("PROXY TCP6 ::1 ::g 1 2\r\n", "not an IPv6 address");
	v1_bad("PROXY TCP6 ::1 ::1:::::::::::::::::::::::::::::::::::::::::::::::::::::::::::: 1 "
	       "2\r\n",
	       "not an IPv6 address"); /* an address longer than any */
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", "CR not followed by LF");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "not printable");
	v1_bad("PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n", "not printable");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\x80\r\n", "not printable");
	v1_bad("PROXY \r\n", "single spaces");
	/* No CRLF within 107 bytes: refused at 106 bytes without one (the CR would be too late). */
	char line[200];
	memset(line, 'A', sizeof(line));
	memcpy(line, "PROXY ", 6);
	expect_bad((const uint8_t *)line, PP_V1_MAX - 1, "no CRLF within 107 bytes");
	pp_hdr h;
	assert_int_equal(pp_parse((const uint8_t *)line, PP_V1_MAX - 2, &h), 0);
	memcpy(line + PP_V1_MAX - 1, "\r\n", 2); /* 108 bytes with CRLF */
	expect_bad((const uint8_t *)line, PP_V1_MAX + 1, "no CRLF within 107 bytes");
	/* A CR as the last byte so far: the LF may follow. */
	assert_int_equal(v1("PROXY UNKNOWN\r", &h), 0);
}

/* A v2 header: ver_cmd, fam, then body of len bytes. Returns its length. */
static size_t mk_v2(uint8_t *out, uint8_t vc, uint8_t fam, const uint8_t *body, size_t len)
{
	memcpy(out, SIG, 12);
	out[12] = vc;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len)
		memcpy(out + 16, body, len);
	return 16 + len;
}

static void test_v2_ok(void **state)
{
	(void)state;
	uint8_t b[4096], body[2048];
	pp_hdr h;

	/* PROXY TCP over IPv4, with a TLV (NOOP) and an empty one, then data after it. */
	uint8_t v4[] = { 203,  0,    113,  7,    192,  0,   2,   1,    0x10, 0x92,
		         0x00, 0x50, 0x04, 0x00, 0x02, 'a', 'b', 0x02, 0x00, 0x00 };
	size_t n = mk_v2(b, 0x21, 0x11, v4, sizeof(v4));
	memcpy(b + n, "\x16\x03\x01", 3);
	assert_int_equal(pp_parse(b, n + 3, &h), (ssize_t)n);
	assert_int_equal(h.version, 2);
	assert_false(h.local);
	addr_is(&h.src, "203.0.113.7", 4242);
	addr_is(&h.dst, "192.0.2.1", 80);
	prefixes_need_more(b, n);

	/* IPv6 */
	memset(body, 0, 36);
	inet_pton(AF_INET6, "2001:db8::7", body);
	inet_pton(AF_INET6, "2001:db8::1", body + 16);
	body[32] = 0x15;
	body[33] = 0xb3;
	body[35] = 80;
	n = mk_v2(b, 0x21, 0x21, body, 36);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	addr_is(&h.src, "2001:db8::7", 5555);
	addr_is(&h.dst, "2001:db8::1", 80);

	/* LOCAL: whatever family and block, the socket address stays. */
	n = mk_v2(b, 0x20, 0x00, NULL, 0);
	assert_int_equal(pp_parse(b, n, &h), 16);
	assert_true(h.local);
	n = mk_v2(b, 0x20, 0x11, v4, sizeof(v4));
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	assert_true(h.local);
	/* PROXY with UNSPEC: keep the real endpoints, skip the block (spec 2.2). */
	n = mk_v2(b, 0x21, 0x00, v4, 5);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	assert_true(h.local);
	/* The largest block accepted. */
	memset(body, 0, sizeof(body));
	memcpy(body, v4, 12);
	body[12] = 0x04; /* one NOOP TLV filling the rest */
	body[13] = (uint8_t)((PP_V2_MAX_LEN - 15) >> 8);
	body[14] = (uint8_t)(PP_V2_MAX_LEN - 15);
	n = mk_v2(b, 0x21, 0x11, body, PP_V2_MAX_LEN);
	assert_int_equal(n, PP_MAX);
	assert_int_equal(pp_parse(b, n, &h), PP_MAX);
}

static void test_v2_bad(void **state)
{
	(void)state;
	uint8_t b[4096], body[64] = { 0 };
	size_t n;

	memcpy(b, SIG, 12);
	b[5] = 0x0E;
	expect_bad(b, 6, "no PROXY protocol header");
	expect_bad((const uint8_t *)"\r\n\r\n\r", 5, "no PROXY protocol header");
	n = mk_v2(b, 0x11, 0x11, body, 12);
	expect_bad(b, n, "version is not 2");
	n = mk_v2(b, 0x31, 0x11, body, 12);
	expect_bad(b, 16, "version is not 2"); /* known from the fixed part */
	n = mk_v2(b, 0x22, 0x11, body, 12);
	expect_bad(b, n, "neither LOCAL nor PROXY");
	n = mk_v2(b, 0x2F, 0x11, body, 12);
	expect_bad(b, n, "neither LOCAL nor PROXY");
	b[14] = (uint8_t)((PP_V2_MAX_LEN + 1) >> 8);
	b[15] = (uint8_t)(PP_V2_MAX_LEN + 1);
	b[12] = 0x21;
	expect_bad(b, 16, "longer than custos accepts");
	n = mk_v2(b, 0x21, 0x12, body, 12);
	expect_bad(b, n, "not STREAM");
	n = mk_v2(b, 0x21, 0x10, body, 12);
	expect_bad(b, n, "not STREAM");
	n = mk_v2(b, 0x21, 0x31, body, 64);
	expect_bad(b, n, "not IPv4 or IPv6"); /* AF_UNIX */
	n = mk_v2(b, 0x21, 0x41, body, 12);
	expect_bad(b, n, "not IPv4 or IPv6");
	n = mk_v2(b, 0x21, 0x01, body, 12);
	expect_bad(b, n, "not IPv4 or IPv6");
	n = mk_v2(b, 0x21, 0x11, body, 11);
	expect_bad(b, n, "too short for IPv4");
	n = mk_v2(b, 0x21, 0x21, body, 35);
	expect_bad(b, n, "too short for IPv6");
	n = mk_v2(b, 0x21, 0x11, body, 14); /* 2 bytes left: not a TLV */
	expect_bad(b, n, "truncated TLV");
	body[12] = 0x04;
	body[13] = 0x00;
	body[14] = 0x02; /* says 2, 1 follows */
	n = mk_v2(b, 0x21, 0x11, body, 16);
	expect_bad(b, n, "TLV longer than the header");
	body[14] = 0xff;
	n = mk_v2(b, 0x21, 0x11, body, 16);
	expect_bad(b, n, "TLV longer than the header");
}

static void test_empty_and_first_byte(void **state)
{
	(void)state;
	pp_hdr h;
	assert_int_equal(pp_parse((const uint8_t *)"", 0, &h), 0);
	assert_int_equal(pp_parse((const uint8_t *)"P", 1, &h), 0);
	assert_int_equal(pp_parse((const uint8_t *)"\r", 1, &h), 0);
	expect_bad((const uint8_t *)"\x16", 1, "no PROXY protocol header"); /* a TLS record */
	expect_bad((const uint8_t *)"G", 1, "no PROXY protocol header");
	expect_bad((const uint8_t *)"\0", 1, "no PROXY protocol header");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_ok),
		cmocka_unit_test(test_v1_bad),
		cmocka_unit_test(test_v2_ok),
		cmocka_unit_test(test_v2_bad),
		cmocka_unit_test(test_empty_and_first_byte),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
