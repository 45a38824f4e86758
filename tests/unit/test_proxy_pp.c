/* Unit tests for the PROXY protocol parser (proxy/pp.c): every accepted form of versions 1 and
 * 2, every refusal with its reason, every prefix of a valid header asking for more, the CRC32c
 * against the RFC 3720 vectors and the v2 CRC32C, SSL, AUTHORITY and UNIQUE_ID TLVs. */
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

	/* PROXY TCP over IPv4, with a TLV (NOOP) and an empty one (a custom type), then data
	 * after it. */
	uint8_t v4[] = { 203,  0,    113,  7,    192,  0,   2,   1,    0x10, 0x92,
		         0x00, 0x50, 0x04, 0x00, 0x02, 'a', 'b', 0xe0, 0x00, 0x00 };
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

/* RFC 3720 appendix B.4 (the CRC32c of iSCSI, the one RFC 4960 and the PROXY spec use), and the
 * customary check value of "123456789". */
static void test_crc32c(void **state)
{
	(void)state;
	uint8_t b[48];

	memset(b, 0, 32);
	assert_int_equal(pp_crc32c(0, b, 32), 0x8a9136aa);
	memset(b, 0xff, 32);
	assert_int_equal(pp_crc32c(0, b, 32), 0x62a8ab43);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)i;
	assert_int_equal(pp_crc32c(0, b, 32), 0x46dd794e);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)(31 - i);
	assert_int_equal(pp_crc32c(0, b, 32), 0x113fdb5c);
	/* An iSCSI SCSI Read (10) command PDU. */
	static const uint8_t pdu[48] = { 0x01,        0xc0,        [16] = 0x14, [22] = 0x04,
		                         [27] = 0x14, [31] = 0x18, [32] = 0x28, [40] = 0x02 };
	assert_int_equal(pp_crc32c(0, pdu, sizeof(pdu)), 0xd9963a56);
	assert_int_equal(pp_crc32c(0, (const uint8_t *)"123456789", 9), 0xe3069283);
	assert_int_equal(pp_crc32c(0, pdu, 0), 0);
	/* Continued over pieces: the same at every split. */
	for (size_t k = 0; k <= sizeof(pdu); k++)
		assert_int_equal(pp_crc32c(pp_crc32c(0, pdu, k), pdu + k, sizeof(pdu) - k),
		                 0xd9963a56);
}

/* A TCP/IPv4 header made independently of pp_crc32c (Python): 203.0.113.7:4242 ->
 * 192.0.2.1:80, then a CRC32C TLV (0x69055471), an SSL TLV (client SSL, verify 0, one
 * PP2_SUBTYPE_SSL_VERSION "TLSv1.3") and a NOOP "ab". */
static const uint8_t V2_CRC[] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
	0x2a, 0xcb, 0x00, 0x71, 0x07, 0xc0, 0x00, 0x02, 0x01, 0x10, 0x92, 0x00, 0x50, 0x03, 0x00,
	0x04, 0x69, 0x05, 0x54, 0x71, 0x20, 0x00, 0x0f, 0x01, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00,
	0x07, 0x54, 0x4c, 0x53, 0x76, 0x31, 0x2e, 0x33, 0x04, 0x00, 0x02, 0x61, 0x62,
};
#define V2_CRC_AT 31 /* where its checksum is */

/* Writes the right checksum into the 4 bytes at at of the header b[0..n). */
static void set_crc(uint8_t *b, size_t n, size_t at)
{
	memset(b + at, 0, 4);
	uint32_t c = pp_crc32c(0, b, n);
	b[at] = (uint8_t)(c >> 24);
	b[at + 1] = (uint8_t)(c >> 16);
	b[at + 2] = (uint8_t)(c >> 8);
	b[at + 3] = (uint8_t)c;
}

static void test_v2_crc32c(void **state)
{
	(void)state;
	uint8_t b[4096], body[256];
	pp_hdr h;
	size_t n = sizeof(V2_CRC);

	memcpy(b, V2_CRC, n);
	memcpy(b + n, "GET", 3);
	assert_int_equal(pp_parse(b, n + 3, &h), (ssize_t)n);
	assert_false(h.local);
	addr_is(&h.src, "203.0.113.7", 4242);
	addr_is(&h.dst, "192.0.2.1", 80);
	prefixes_need_more(b, n);
	/* The checksum covers the whole header, its fixed 16 bytes included, with its own 4
	 * bytes zeroed: computed so here, it is the one Python wrote. */
	set_crc(b, n, V2_CRC_AT);
	assert_memory_equal(b, V2_CRC, n);

	/* A changed byte anywhere the framing does not depend on (addresses, the checksum, the
	 * TLV values before and after the checksum) is a mismatch. */
	for (size_t i = 16; i < n; i++) {
		if (i == 28 || i == 29 || i == 30 || (i >= 35 && i <= 37) || (i >= 43 && i <= 45) ||
		    (i >= 53 && i <= 55))
			continue; /* a TLV's type or length */
		memcpy(b, V2_CRC, n);
		b[i] ^= 0x01;
		expect_bad(b, n, "PROXY v2: CRC32C mismatch");
	}

	/* A CRC32C TLV alone, on IPv6, right and wrong. */
	memset(body, 0, 36);
	body[15] = 1;
	body[31] = 2;
	memcpy(body + 36, "\x03\x00\x04\x00\x00\x00\x00", 7);
	n = mk_v2(b, 0x21, 0x21, body, 43);
	set_crc(b, n, 16 + 39);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	addr_is(&h.src, "::1", 0);
	b[n - 1] ^= 0x80;
	expect_bad(b, n, "PROXY v2: CRC32C mismatch");
	memset(b + n - 4, 0, 4); /* an all-zero checksum is not "absent" */
	expect_bad(b, n, "PROXY v2: CRC32C mismatch");

	/* The wrong length: 3 and 5 bytes, even with the checksum right for them. */
	memset(body + 12, 0, 16);
	memcpy(body, V2_CRC + 16, 12);
	memcpy(body + 12, "\x03\x00\x03", 3);
	n = mk_v2(b, 0x21, 0x11, body, 18);
	expect_bad(b, n, "PROXY v2: CRC32C TLV is not 4 bytes long");
	memcpy(body + 12, "\x03\x00\x05", 3);
	n = mk_v2(b, 0x21, 0x11, body, 20);
	set_crc(b, n, 16 + 15);
	expect_bad(b, n, "PROXY v2: CRC32C TLV is not 4 bytes long");
	memcpy(body + 12, "\x03\x00\x00", 3);
	n = mk_v2(b, 0x21, 0x11, body, 15);
	expect_bad(b, n, "PROXY v2: CRC32C TLV is not 4 bytes long");

	/* Two CRC32C TLVs, apart or side by side. */
	memcpy(body + 12, "\x03\x00\x04\x00\x00\x00\x00\x04\x00\x00\x03\x00\x04\x00\x00\x00\x00",
	       17);
	n = mk_v2(b, 0x21, 0x11, body, 29);
	set_crc(b, n, 16 + 15);
	expect_bad(b, n, "PROXY v2: more than one CRC32C TLV");
	memcpy(body + 12, "\x03\x00\x04\x00\x00\x00\x00\x03\x00\x04\x00\x00\x00\x00", 14);
	n = mk_v2(b, 0x21, 0x11, body, 26);
	expect_bad(b, n, "PROXY v2: more than one CRC32C TLV");

	/* A malformed TLV after the checksum is refused for its form, not as a mismatch. */
	memcpy(body + 12, "\x03\x00\x04\x00\x00\x00\x00\x04\x00", 9);
	n = mk_v2(b, 0x21, 0x11, body, 21);
	expect_bad(b, n, "PROXY v2: truncated TLV");

	/* LOCAL and UNSPEC skip their block unread, as before: a wrong checksum there is not
	 * seen (no client address is taken from such a header). */
	n = mk_v2(b, 0x20, 0x11, V2_CRC + 16, sizeof(V2_CRC) - 16);
	b[16] ^= 0x01;
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	assert_true(h.local);
	n = mk_v2(b, 0x21, 0x00, V2_CRC + 16, sizeof(V2_CRC) - 16);
	b[16] ^= 0x01;
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	assert_true(h.local);
}

/* PP2_TYPE_SSL: client and verify, then sub-TLVs that must fill it exactly; content unused. */
static void test_v2_ssl_tlv(void **state)
{
	(void)state;
	uint8_t b[4096], body[256];
	pp_hdr h;
	size_t n;

	memcpy(body, V2_CRC + 16, 12);
	/* No sub-TLV; an empty sub-TLV and an unknown one; then a NOOP TLV after it. */
	memcpy(body + 12, "\x20\x00\x05\x07\xff\xff\xff\xff", 8);
	n = mk_v2(b, 0x21, 0x11, body, 20);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	memcpy(body + 12, "\x20\x00\x0c\x01\x00\x00\x00\x00\x22\x00\x00\x99\x00\x01x\x04\x00\x00",
	       18);
	n = mk_v2(b, 0x21, 0x11, body, 30);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	prefixes_need_more(b, n);

	/* Shorter than client + verify. */
	memcpy(body + 12, "\x20\x00\x04\x01\x00\x00\x00", 7);
	n = mk_v2(b, 0x21, 0x11, body, 19);
	expect_bad(b, n, "PROXY v2: SSL TLV shorter than its client and verify fields");
	memcpy(body + 12, "\x20\x00\x00", 3);
	n = mk_v2(b, 0x21, 0x11, body, 15);
	expect_bad(b, n, "PROXY v2: SSL TLV shorter than its client and verify fields");
	/* 1 and 2 bytes after the fixed fields: not a sub-TLV head. */
	memcpy(body + 12, "\x20\x00\x06\x01\x00\x00\x00\x00\x21", 9);
	n = mk_v2(b, 0x21, 0x11, body, 21);
	expect_bad(b, n, "PROXY v2: truncated sub-TLV in the SSL TLV");
	memcpy(body + 12, "\x20\x00\x07\x01\x00\x00\x00\x00\x21\x00", 10);
	n = mk_v2(b, 0x21, 0x11, body, 22);
	expect_bad(b, n, "PROXY v2: truncated sub-TLV in the SSL TLV");
	/* A sub-TLV past its SSL TLV, even where the header still has bytes after it. */
	memcpy(body + 12, "\x20\x00\x09\x01\x00\x00\x00\x00\x21\x00\x02x\x04\x00\x01y", 16);
	n = mk_v2(b, 0x21, 0x11, body, 28);
	expect_bad(b, n, "PROXY v2: sub-TLV longer than the SSL TLV");
	/* A sub-TLV that ends before the SSL TLV's last byte leaves a truncated one. */
	memcpy(body + 12, "\x20\x00\x0a\x01\x00\x00\x00\x00\x21\x00\x01x\x00", 13);
	n = mk_v2(b, 0x21, 0x11, body, 25);
	expect_bad(b, n, "PROXY v2: truncated sub-TLV in the SSL TLV");
	/* Other types are not looked into: 0x21 at the top level is just skipped. */
	memcpy(body + 12, "\x21\x00\x02\x00\xff", 5);
	n = mk_v2(b, 0x21, 0x11, body, 17);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
}

/* A TCP/IPv4 header made independently of pp_crc32c (Python): 203.0.113.7:4242 ->
 * 192.0.2.1:80, an AUTHORITY "api.example.com", a CRC32C TLV (0xace909aa), a UNIQUE_ID of 8
 * bytes (00 01 fe ff 7f 80 41 0a) and a NOOP "ab". */
static const uint8_t V2_TLVS[] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
	0x00, 0x35, 0xcb, 0x00, 0x71, 0x07, 0xc0, 0x00, 0x02, 0x01, 0x10, 0x92, 0x00, 0x50,
	0x02, 0x00, 0x0f, 0x61, 0x70, 0x69, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
	0x2e, 0x63, 0x6f, 0x6d, 0x03, 0x00, 0x04, 0xac, 0xe9, 0x09, 0xaa, 0x05, 0x00, 0x08,
	0x00, 0x01, 0xfe, 0xff, 0x7f, 0x80, 0x41, 0x0a, 0x04, 0x00, 0x02, 0x61, 0x62,
};
#define V2_TLVS_AUTH 31 /* where the authority's 15 bytes are */
#define V2_TLVS_CRC  49 /* the checksum's 4 */
#define V2_TLVS_UID  56 /* the unique id's 8 */
static const uint8_t UID[8] = { 0x00, 0x01, 0xfe, 0xff, 0x7f, 0x80, 0x41, 0x0a };

static void views_are(const pp_hdr *h, const char *auth, const uint8_t *uid, size_t uid_len)
{
	if (auth == NULL) {
		assert_null(h->authority);
		assert_int_equal(h->authority_len, 0);
	} else {
		assert_non_null(h->authority);
		assert_int_equal(h->authority_len, strlen(auth));
		assert_memory_equal(h->authority, auth, strlen(auth));
	}
	if (uid == NULL) {
		assert_null(h->unique_id);
		assert_int_equal(h->unique_id_len, 0);
	} else {
		assert_non_null(h->unique_id);
		assert_int_equal(h->unique_id_len, uid_len);
		assert_memory_equal(h->unique_id, uid, uid_len);
	}
}

/* An IPv4 PROXY header with the TLVs tlv[0..tl) after the addresses of V2_TLVS; with crc_at
 * (an offset in tlv of a CRC32C TLV's value) its checksum is set. Returns its length. */
static size_t mk_tlvs(uint8_t *b, const uint8_t *tlv, size_t tl, size_t crc_at)
{
	uint8_t body[PP_V2_MAX_LEN];
	memcpy(body, V2_TLVS + 16, 12);
	memcpy(body + 12, tlv, tl);
	size_t n = mk_v2(b, 0x21, 0x11, body, 12 + tl);
	if (crc_at)
		set_crc(b, n, 28 + crc_at);
	return n;
}

/* PP2_TYPE_AUTHORITY (0x02) and PP2_TYPE_UNIQUE_ID (0x05): handed back as views into the
 * header, with and without a CRC32C TLV; every proper prefix needs more. */
static void test_v2_authority_unique_id(void **state)
{
	(void)state;
	uint8_t b[4096], tlv[1024];
	pp_hdr h;
	size_t n = sizeof(V2_TLVS);

	memcpy(b, V2_TLVS, n);
	memcpy(b + n, "GET", 3);
	assert_int_equal(pp_parse(b, n + 3, &h), (ssize_t)n);
	addr_is(&h.src, "203.0.113.7", 4242);
	views_are(&h, "api.example.com", UID, sizeof(UID));
	assert_ptr_equal(h.authority, b + V2_TLVS_AUTH);
	assert_ptr_equal(h.unique_id, b + V2_TLVS_UID);
	prefixes_need_more(b, n);
	set_crc(b, n, V2_TLVS_CRC); /* the checksum Python wrote is the one computed here */
	assert_memory_equal(b, V2_TLVS, n);
	/* Both values are under the checksum: a changed byte is a mismatch (letters change
	 * case, so the authority stays a host name), and a refused header hands back nothing. */
	for (size_t i = V2_TLVS_AUTH; i < V2_TLVS_AUTH + 15; i++) {
		memcpy(b, V2_TLVS, n);
		if (b[i] == '.')
			continue;
		b[i] ^= 0x20;
		expect_bad(b, n, "PROXY v2: CRC32C mismatch");
		assert_int_equal(pp_parse(b, n, &h), -1);
		views_are(&h, NULL, NULL, 0);
	}
	for (size_t i = V2_TLVS_UID; i < V2_TLVS_UID + sizeof(UID); i++) {
		memcpy(b, V2_TLVS, n);
		b[i] ^= 0x01;
		expect_bad(b, n, "PROXY v2: CRC32C mismatch");
	}

	/* The same TLVs without a checksum, in the other order. */
	memcpy(tlv, "\x05\x00\x08", 3);
	memcpy(tlv + 3, UID, 8);
	memcpy(tlv + 11,
	       "\x02\x00\x0f"
	       "api.example.com",
	       18);
	n = mk_tlvs(b, tlv, 29, 0);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	views_are(&h, "api.example.com", UID, sizeof(UID));
	prefixes_need_more(b, n);
	/* One without the other; an empty UNIQUE_ID is accepted and hands nothing back. */
	n = mk_tlvs(b, tlv, 11, 0);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	views_are(&h, NULL, UID, sizeof(UID));
	n = mk_tlvs(b, tlv + 11, 18, 0);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	views_are(&h, "api.example.com", NULL, 0);
	n = mk_tlvs(b, (const uint8_t *)"\x05\x00\x00", 3, 0);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	views_are(&h, NULL, NULL, 0);
	/* The largest: a 255-byte authority (labels of 63), a 128-byte id, with a checksum. */
	char name[256];
	memset(name, 'a', 255);
	name[63] = name[127] = name[191] = '.';
	name[255] = '\0';
	uint8_t id[128];
	for (size_t i = 0; i < sizeof(id); i++)
		id[i] = (uint8_t)(i * 7);
	memcpy(tlv, "\x02\x00\xff", 3);
	memcpy(tlv + 3, name, 255);
	memcpy(tlv + 258, "\x05\x00\x80", 3);
	memcpy(tlv + 261, id, 128);
	memcpy(tlv + 389, "\x03\x00\x04\x00\x00\x00\x00", 7);
	n = mk_tlvs(b, tlv, 396, 392);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	views_are(&h, name, id, sizeof(id));
	prefixes_need_more(b, n);
	/* Other host name forms: one label, digits, '-', upper case, an IPv4 literal's text. */
	static const char *const good[] = { "a", "localhost", "xn--bcher-kva.example",
		                            "API-1.Example.COM", "192.0.2.1" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t l = strlen(good[i]);
		tlv[0] = 0x02;
		tlv[1] = 0;
		tlv[2] = (uint8_t)l;
		memcpy(tlv + 3, good[i], l);
		n = mk_tlvs(b, tlv, 3 + l, 0);
		assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
		views_are(&h, good[i], NULL, 0);
	}
	/* LOCAL and UNSPEC skip their block unread: nothing handed back, whatever it holds. */
	n = mk_v2(b, 0x20, 0x11, V2_TLVS + 16, sizeof(V2_TLVS) - 16);
	b[V2_TLVS_AUTH] = '\n';
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	assert_true(h.local);
	views_are(&h, NULL, NULL, 0);
	n = mk_v2(b, 0x21, 0x00, V2_TLVS + 16, sizeof(V2_TLVS) - 16);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);
	views_are(&h, NULL, NULL, 0);
}

/* An AUTHORITY that is no host name, a UNIQUE_ID over 128 bytes and either of them twice are
 * refused, with a right checksum too. */
static void test_v2_authority_unique_id_bad(void **state)
{
	(void)state;
	uint8_t b[4096], tlv[1024];
	size_t n;
	static const struct {
		const char *v;
		size_t len;
	} bad[] = {
		{ "", 0 },
		{ "api.example.com:443", 19 },
		{ "api example.com", 15 },
		{ "api\texample.com", 15 },
		{ "api.example.com\r\n", 17 },
		{ "api\0example.com", 15 },
		{ "under_score.example", 19 },
		{ "b\xc3\xbc"
		  "cher.example",
		  15 },
		{ "api.example.com\x7f", 16 },
		{ ".example.com", 12 },
		{ "example.com.", 12 },
		{ "api..example.com", 16 },
		{ ".", 1 },
		{ "[2001:db8::1]", 13 },
		{ "a\"b", 3 },
		{ "a\\b", 3 },
	};
	const char *why = "PROXY v2: AUTHORITY TLV is not a host name of 1 to 255 bytes";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tlv[0] = 0x02;
		tlv[1] = 0;
		tlv[2] = (uint8_t)bad[i].len;
		memcpy(tlv + 3, bad[i].v, bad[i].len);
		n = mk_tlvs(b, tlv, 3 + bad[i].len, 0);
		expect_bad(b, n, why);
		/* With a right checksum after it too. */
		memcpy(tlv + 3 + bad[i].len, "\x03\x00\x04\x00\x00\x00\x00", 7);
		n = mk_tlvs(b, tlv, 10 + bad[i].len, 6 + bad[i].len);
		expect_bad(b, n, why);
	}
	/* 256 bytes (labels of 63), and a label of 64. */
	memcpy(tlv, "\x02\x01\x00", 3);
	memset(tlv + 3, 'a', 256);
	tlv[3 + 63] = tlv[3 + 127] = tlv[3 + 191] = '.';
	n = mk_tlvs(b, tlv, 259, 0);
	expect_bad(b, n, why);
	memcpy(tlv, "\x02\x00\x44", 3); /* 68: "a.", 64 letters, ".b" */
	memset(tlv + 3, 'a', 68);
	tlv[4] = tlv[69] = '.';
	n = mk_tlvs(b, tlv, 71, 0);
	expect_bad(b, n, why);
	tlv[5] = '.'; /* "a..": an empty label */
	expect_bad(b, mk_tlvs(b, tlv, 71, 0), why);
	memcpy(tlv, "\x02\x00\x43", 3); /* 67: "a.", 63 letters, ".b": accepted */
	memset(tlv + 3, 'a', 67);
	tlv[4] = tlv[68] = '.';
	pp_hdr h;
	n = mk_tlvs(b, tlv, 70, 0);
	assert_int_equal(pp_parse(b, n, &h), (ssize_t)n);

	/* UNIQUE_ID: 129 bytes, and the spec's 65535 (cut by custos' 2048-byte bound: a TLV
	 * longer than the header). */
	memcpy(tlv, "\x05\x00\x81", 3);
	memset(tlv + 3, 0xab, 129);
	n = mk_tlvs(b, tlv, 132, 0);
	expect_bad(b, n, "PROXY v2: UNIQUE_ID TLV longer than 128 bytes");
	memcpy(tlv + 132, "\x03\x00\x04\x00\x00\x00\x00", 7);
	n = mk_tlvs(b, tlv, 139, 135);
	expect_bad(b, n, "PROXY v2: UNIQUE_ID TLV longer than 128 bytes");
	memcpy(tlv, "\x05\x03\x00", 3);
	memset(tlv + 3, 0, 768);
	n = mk_tlvs(b, tlv, 771, 0);
	expect_bad(b, n, "PROXY v2: UNIQUE_ID TLV longer than 128 bytes");

	/* Twice: side by side, apart, the same value or not, empty ids too; the second is
	 * refused even where it is well-formed and the checksum is right. */
	memcpy(tlv,
	       "\x02\x00\x01"
	       "a\x02\x00\x01"
	       "a",
	       8);
	expect_bad(b, mk_tlvs(b, tlv, 8, 0), "PROXY v2: more than one AUTHORITY TLV");
	memcpy(tlv,
	       "\x02\x00\x01"
	       "a\x04\x00\x00\x03\x00\x04\x00\x00\x00\x00\x02\x00\x01"
	       "b",
	       18);
	expect_bad(b, mk_tlvs(b, tlv, 18, 10), "PROXY v2: more than one AUTHORITY TLV");
	memcpy(tlv,
	       "\x02\x00\x01"
	       "a\x02\x00\x00",
	       7); /* a bad second one: refused as doubled */
	expect_bad(b, mk_tlvs(b, tlv, 7, 0), "PROXY v2: more than one AUTHORITY TLV");
	memcpy(tlv,
	       "\x05\x00\x01"
	       "x\x05\x00\x01"
	       "y",
	       8);
	expect_bad(b, mk_tlvs(b, tlv, 8, 0), "PROXY v2: more than one UNIQUE_ID TLV");
	memcpy(tlv, "\x05\x00\x00\x05\x00\x00", 6);
	expect_bad(b, mk_tlvs(b, tlv, 6, 0), "PROXY v2: more than one UNIQUE_ID TLV");
	memcpy(tlv,
	       "\x05\x00\x01"
	       "x\x03\x00\x04\x00\x00\x00\x00\x02\x00\x01"
	       "a\x05\x00\x01"
	       "x",
	       19);
	expect_bad(b, mk_tlvs(b, tlv, 19, 7), "PROXY v2: more than one UNIQUE_ID TLV");
	/* A malformed TLV after good ones: refused, nothing handed back. */
	memcpy(tlv,
	       "\x02\x00\x01"
	       "a\x05\x00\x01"
	       "x\x04\x00",
	       10);
	n = mk_tlvs(b, tlv, 10, 0);
	expect_bad(b, n, "PROXY v2: truncated TLV");
	assert_int_equal(pp_parse(b, n, &h), -1);
	views_are(&h, NULL, NULL, 0);
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
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_v2_crc32c),
		cmocka_unit_test(test_v2_ssl_tlv),
		cmocka_unit_test(test_v2_authority_unique_id),
		cmocka_unit_test(test_v2_authority_unique_id_bad),
		cmocka_unit_test(test_empty_and_first_byte),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
