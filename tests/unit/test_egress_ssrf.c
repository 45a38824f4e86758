/*
 * SSRF defence tests: address classes (v4, v6 and every embedding form), host spellings that
 * are refused (non-canonical IPv4 literals), authority splitting, and resolution of names
 * that land on loopback (localhost, ip6-localhost) with and without allow_private.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "custos/config.h"
#include "proxy/ssrf.h"

static ssrf_class cls(const char *lit)
{
	uint8_t a[16];
	if (inet_pton(AF_INET, lit, a) == 1)
		return ssrf_class_v4(a);
	assert_int_equal(inet_pton(AF_INET6, lit, a), 1);
	return ssrf_class_v6(a);
}

static void test_v4_classes(void **st)
{
	(void)st;
	assert_int_equal(cls("8.8.8.8"), SSRF_PUBLIC);
	assert_int_equal(cls("1.1.1.1"), SSRF_PUBLIC);
	assert_int_equal(cls("127.0.0.1"), SSRF_LOOPBACK);
	assert_int_equal(cls("127.255.255.254"), SSRF_LOOPBACK);
	assert_int_equal(cls("0.0.0.0"), SSRF_UNSPECIFIED);
	assert_int_equal(cls("0.1.2.3"), SSRF_UNSPECIFIED);
	assert_int_equal(cls("10.1.2.3"), SSRF_PRIVATE);
	assert_int_equal(cls("172.16.0.1"), SSRF_PRIVATE);
	assert_int_equal(cls("172.31.255.255"), SSRF_PRIVATE);
	assert_int_equal(cls("172.32.0.1"), SSRF_PUBLIC);
	assert_int_equal(cls("172.15.255.255"), SSRF_PUBLIC);
	assert_int_equal(cls("192.168.1.1"), SSRF_PRIVATE);
	assert_int_equal(cls("100.64.0.1"), SSRF_SHARED);
	assert_int_equal(cls("100.127.255.255"), SSRF_SHARED);
	assert_int_equal(cls("100.128.0.1"), SSRF_PUBLIC);
	assert_int_equal(cls("169.254.169.254"), SSRF_METADATA);
	assert_int_equal(cls("169.254.1.1"), SSRF_LINK_LOCAL);
	assert_int_equal(cls("224.0.0.1"), SSRF_MULTICAST);
	assert_int_equal(cls("239.255.255.250"), SSRF_MULTICAST);
	assert_int_equal(cls("255.255.255.255"), SSRF_BROADCAST);
	assert_int_equal(cls("240.0.0.1"), SSRF_RESERVED);
	assert_int_equal(cls("192.0.2.1"), SSRF_RESERVED);
	assert_int_equal(cls("198.18.0.1"), SSRF_RESERVED);
	assert_int_equal(cls("203.0.113.9"), SSRF_RESERVED);
}

static void test_v6_classes(void **st)
{
	(void)st;
	assert_int_equal(cls("2606:4700::1111"), SSRF_PUBLIC);
	assert_int_equal(cls("::1"), SSRF_LOOPBACK);
	assert_int_equal(cls("::"), SSRF_UNSPECIFIED);
	assert_int_equal(cls("fe80::1"), SSRF_LINK_LOCAL);
	assert_int_equal(cls("fd00:ec2::254"), SSRF_METADATA);
	assert_int_equal(cls("fd00::1"), SSRF_PRIVATE);
	assert_int_equal(cls("fc00::1"), SSRF_PRIVATE);
	assert_int_equal(cls("ff02::1"), SSRF_MULTICAST);
	assert_int_equal(cls("2001:db8::1"), SSRF_RESERVED);
	assert_int_equal(cls("2001:0:4136:e378::1"), SSRF_RESERVED); /* Teredo */
	assert_int_equal(cls("100::1"), SSRF_RESERVED);
	assert_int_equal(cls("4000::1"), SSRF_RESERVED);
	/* IPv4-mapped and SIIT forms take the embedded address's class. */
	assert_int_equal(cls("::ffff:127.0.0.1"), SSRF_LOOPBACK);
	assert_int_equal(cls("::ffff:7f00:1"), SSRF_LOOPBACK);
	assert_int_equal(cls("::ffff:169.254.169.254"), SSRF_METADATA);
	assert_int_equal(cls("::ffff:10.0.0.1"), SSRF_PRIVATE);
	assert_int_equal(cls("::ffff:8.8.8.8"), SSRF_PUBLIC);
	assert_int_equal(cls("::ffff:0:127.0.0.1"), SSRF_LOOPBACK);
	/* IPv4-compatible: denied whatever it embeds. */
	assert_int_equal(cls("::127.0.0.1"), SSRF_LOOPBACK);
	assert_int_equal(cls("::8.8.8.8"), SSRF_RESERVED);
	/* NAT64 and 6to4 embedding a denied v4. */
	assert_int_equal(cls("64:ff9b::127.0.0.1"), SSRF_LOOPBACK);
	assert_int_equal(cls("64:ff9b::a9fe:a9fe"), SSRF_METADATA);
	assert_int_equal(cls("64:ff9b::8.8.8.8"), SSRF_PUBLIC);
	assert_int_equal(cls("64:ff9b:1::1"), SSRF_PRIVATE);
	assert_int_equal(cls("2002:7f00:1::1"), SSRF_LOOPBACK);
	assert_int_equal(cls("2002:a9fe:a9fe::"), SSRF_METADATA);
	assert_int_equal(cls("2002:0a00:0001::1"), SSRF_PRIVATE);
	assert_int_equal(cls("2002:0808:0808::1"), SSRF_PUBLIC);
}

static void test_allowed(void **st)
{
	(void)st;
	assert_true(ssrf_class_allowed(SSRF_PUBLIC, false));
	assert_false(ssrf_class_allowed(SSRF_LOOPBACK, false));
	assert_true(ssrf_class_allowed(SSRF_LOOPBACK, true));
	assert_true(ssrf_class_allowed(SSRF_PRIVATE, true));
	/* never, even for a source that allows private addresses */
	assert_false(ssrf_class_allowed(SSRF_METADATA, true));
	assert_false(ssrf_class_allowed(SSRF_UNSPECIFIED, true));
	assert_false(ssrf_class_allowed(SSRF_MULTICAST, true));
	assert_false(ssrf_class_allowed(SSRF_BROADCAST, true));
}

static custos_err ph(const char *s, ssrf_host *h)
{
	return ssrf_parse_host(span_cstr(s), h);
}

static void test_hosts(void **st)
{
	ssrf_host h;
	(void)st;
	assert_int_equal(ph("Wiki.Corp.Example", &h), CUSTOS_OK);
	assert_int_equal(h.kind, SSRF_HOST_NAME);
	assert_string_equal(h.name, "wiki.corp.example");
	assert_int_equal(ph("wiki.corp.example.", &h), CUSTOS_OK);
	assert_string_equal(h.name, "wiki.corp.example");
	assert_int_equal(ph("127.0.0.1", &h), CUSTOS_OK);
	assert_int_equal(h.kind, SSRF_HOST_V4);
	assert_int_equal(ph("0.0.0.0", &h), CUSTOS_OK);
	assert_int_equal(ph("[::1]", &h), CUSTOS_OK);
	assert_int_equal(h.kind, SSRF_HOST_V6);
	assert_string_equal(h.name, "::1");
	assert_int_equal(ph("[::ffff:127.0.0.1]", &h), CUSTOS_OK);
	assert_int_equal(ph("[::FFFF:7F00:1]", &h), CUSTOS_OK); /* canonical text */
	assert_string_equal(h.name, "::ffff:127.0.0.1");
	assert_int_equal(ph("[2001:DB8:0:0:0:0:0:1]", &h), CUSTOS_OK);
	assert_string_equal(h.name, "2001:db8::1");
	assert_int_equal(ph("1password.com", &h), CUSTOS_OK);
	/* Non-canonical IPv4 spellings: refused, never reinterpreted. */
	const char *bad[] = {
		"2130706433",  "0177.0.0.1",   "0x7f.1",       "127.1",     "0x7f000001",
		"127.0.0.01",  "017700000001", "127.0.0.1.",   "1.2.3.4.5", "0x7f.0.0.1",
		"127.000.0.1", "256.1.1.1",    "example.0x10", "a.123",     "0",
		"0x"
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		custos_err e = ph(bad[i], &h);
		if (e != CUSTOS_ERR_DENIED)
			fail_msg("%s: got %d", bad[i], (int)e);
	}
	/* Malformed */
	const char *mal[] = { "",    "[::1", "[]",  "[fe80::1%eth0]", "a..b",  ".a",
		              "a b", "a/b",  "a@b", "[zz::1]",        "é.com", "." };
	for (size_t i = 0; i < sizeof(mal) / sizeof(mal[0]); i++) {
		custos_err e = ph(mal[i], &h);
		if (e == CUSTOS_OK)
			fail_msg("%s accepted", mal[i]);
	}
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_not_equal(ph(longname, &h), CUSTOS_OK);
	char label[70];
	memset(label, 'a', 64);
	memcpy(label + 64, ".com", 5);
	assert_int_equal(ph(label, &h), CUSTOS_ERR_PARSE);
}

static void test_authority(void **st)
{
	span h;
	uint16_t port;
	(void)st;
	assert_int_equal(ssrf_split_authority(SPAN_LIT("a.example:8443"), 0, &h, &port), CUSTOS_OK);
	assert_true(span_eq_cstr(h, "a.example"));
	assert_int_equal(port, 8443);
	assert_int_equal(ssrf_split_authority(SPAN_LIT("a.example"), 80, &h, &port), CUSTOS_OK);
	assert_int_equal(port, 80);
	assert_int_equal(ssrf_split_authority(SPAN_LIT("[::1]:443"), 0, &h, &port), CUSTOS_OK);
	assert_true(span_eq_cstr(h, "[::1]"));
	assert_int_equal(port, 443);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("a.example"), 0, &h, &port), CUSTOS_OK);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("a:0"), 0, &h, &port), CUSTOS_OK);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("a:65536"), 0, &h, &port), CUSTOS_OK);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("a:+80"), 0, &h, &port), CUSTOS_OK);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("a:"), 0, &h, &port), CUSTOS_OK);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("a:80:81"), 0, &h, &port), CUSTOS_OK);
	assert_int_equal(ssrf_split_authority(SPAN_LIT("u:p@a:80"), 0, &h, &port),
	                 CUSTOS_ERR_DENIED);
	assert_int_not_equal(ssrf_split_authority(SPAN_LIT("[::1]x"), 0, &h, &port), CUSTOS_OK);
}

static void test_resolve(void **st)
{
	ssrf_host h;
	ssrf_target t;
	(void)st;
	assert_int_equal(ph("localhost", &h), CUSTOS_OK);
	assert_int_equal(ssrf_resolve(&h, 80, false, &t), CUSTOS_ERR_DENIED);
	assert_int_equal(t.denied_class, SSRF_LOOPBACK);
	assert_int_equal(t.n, 0);
	assert_int_equal(ssrf_resolve(&h, 80, true, &t), CUSTOS_OK);
	assert_true(t.n >= 1);
	assert_int_equal(ssrf_class_sa((struct sockaddr *)&t.addrs[0]), SSRF_LOOPBACK);
	/* ip6-localhost exists in Debian's /etc/hosts; skip the case where it does not. */
	if (ph("ip6-localhost", &h) == CUSTOS_OK && ssrf_resolve(&h, 80, true, &t) == CUSTOS_OK) {
		assert_int_equal(ssrf_resolve(&h, 80, false, &t), CUSTOS_ERR_DENIED);
		assert_int_equal(t.denied_class, SSRF_LOOPBACK);
	}
	assert_int_equal(ph("169.254.169.254", &h), CUSTOS_OK);
	assert_int_equal(ssrf_resolve(&h, 80, true, &t), CUSTOS_ERR_DENIED);
	assert_int_equal(t.denied_class, SSRF_METADATA);
	assert_int_equal(ph("[fd00:ec2::254]", &h), CUSTOS_OK);
	assert_int_equal(ssrf_resolve(&h, 80, true, &t), CUSTOS_ERR_DENIED);
	assert_int_equal(ph("[::ffff:169.254.169.254]", &h), CUSTOS_OK);
	assert_int_equal(ssrf_resolve(&h, 80, true, &t), CUSTOS_ERR_DENIED);
	assert_int_equal(ph("8.8.8.8", &h), CUSTOS_OK);
	assert_int_equal(ssrf_resolve(&h, 443, false, &t), CUSTOS_OK);
	assert_int_equal(t.n, 1);
	assert_int_equal(ntohs(((struct sockaddr_in *)&t.addrs[0])->sin_port), 443);
	assert_int_equal(ph("no-such-host.invalid", &h), CUSTOS_OK);
	assert_int_equal(ssrf_resolve(&h, 80, false, &t), CUSTOS_ERR_NOTFOUND);
}

/* config check applies the egress proxy's host rule to data_sources[].url (core/config.c
 * source_host_why): a source the proxy would refuse at start never passes the check, and
 * one it takes is not refused. Each host is tried both ways. */
static void test_config_agrees(void **st)
{
	(void)st;
	static char l63[80], l64[80], long_name[300];
	memset(l63, 'a', 63);
	memset(l64, 'a', 64);
	for (size_t i = 0; i < 254; i += 2) { /* 254 bytes: a.a.a... */
		long_name[i] = 'a';
		long_name[i + 1] = '.';
	}
	long_name[253] = '\0';
	const char *hosts[] = {
		"1.2.3.4",     "10.1",       "0x7f.0.0.1",      "1.2.3.04",  "host.123", "x.0x1f",
		"x.0x",        "1.2.3.4.",   "256.1.1.1",       "1.2.3.4.5", "a..b",     "a.b.",
		"a_b.example", "-a.example", "sub.example.com", "0.0.0.0",   "01.2.3.4", l63,
		l64,           long_name,    "EXAMPLE.com",     "a.b.c.d.e"
	};
	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		ssrf_host h;
		bool proxy_ok = ssrf_parse_host(span_cstr(hosts[i]), &h) == CUSTOS_OK;
		char text[512];
		snprintf(text, sizeof(text),
		         "version: 1\ndata_sources:\n  - {id: d, url: \"https://%s/\", "
		         "classification: public}\n",
		         hosts[i]);
		custos_config *cfg = NULL;
		diag_list d;
		diag_init(&d);
		bool config_ok = config_parse("t.yaml", text, strlen(text), &cfg, &d) == CUSTOS_OK;
		if (config_ok != proxy_ok) {
			diag_print(&d, stderr);
			fail_msg("host '%s': the proxy %s it, config check %s it", hosts[i],
			         proxy_ok ? "takes" : "refuses", config_ok ? "takes" : "refuses");
		}
		config_free(cfg);
		diag_free(&d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v4_classes),    cmocka_unit_test(test_v6_classes),
		cmocka_unit_test(test_allowed),       cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_authority),     cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_config_agrees),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
