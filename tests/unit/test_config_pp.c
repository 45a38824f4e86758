/* Unit tests for listeners[].proxy_protocol and proxy_protocol_from: the ranges parsed, and each
 * refusal at its position (a bad range, from without proxy_protocol, proxy_protocol without
 * from, a Unix socket listener); and the address range parser and matcher (core/cidr.c). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "custos/config.h"

static const diag_item *parse_fail(const char *text, diag_list *d, const char *needle)
{
	custos_config *cfg = (custos_config *)1;

	diag_init(d);
	custos_err e = config_parse("t.yaml", text, strlen(text), &cfg, d);
	assert_int_not_equal(e, CUSTOS_OK);
	assert_null(cfg);
	for (size_t i = 0; i < d->n; i++) {
		if (d->items[i].severity == DIAG_ERROR && strstr(d->items[i].message, needle))
			return &d->items[i];
	}
	diag_print(d, stderr);
	fail_msg("no error containing '%s'", needle);
	return NULL;
}

static void expect_at(const char *text, const char *needle, unsigned line, unsigned col)
{
	diag_list d;
	const diag_item *it = parse_fail(text, &d, needle);

	assert_int_equal(it->line, line);
	assert_int_equal(it->col, col);
	assert_non_null(it->hint);
	diag_free(&d);
}

static void test_keys(void **state)
{
	(void)state;
	const char *text = "version: 1\nlisteners:\n  - id: lb\n    address: \"0.0.0.0:443\"\n"
	                   "    tls: {cert: c, key: k}\n    proxy_protocol: true\n"
	                   "    proxy_protocol_from: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]\n"
	                   "  - {id: p, address: \"127.0.0.1:1\"}\n";
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	assert_int_equal(config_parse("t.yaml", text, strlen(text), &cfg, &d), CUSTOS_OK);
	diag_free(&d);
	const cfg_listener *l = &cfg->listeners[0];
	assert_true(l->proxy_protocol);
	assert_int_equal(l->n_proxy_protocol_from, 3);
	assert_int_equal(l->proxy_protocol_from[0].family, 4);
	assert_int_equal(l->proxy_protocol_from[0].bits, 8);
	assert_int_equal(l->proxy_protocol_from[1].family, 6);
	assert_int_equal(l->proxy_protocol_from[1].bits, 32);
	assert_int_equal(l->proxy_protocol_from[2].bits, 32);
	assert_false(cfg->listeners[1].proxy_protocol); /* off by default */
	assert_int_equal(cfg->listeners[1].n_proxy_protocol_from, 0);
	config_free(cfg);
}

static void test_errors(void **state)
{
	(void)state;
	const char *head = "version: 1\nlisteners:\n  - id: p\n    address: \"127.0.0.1:1\"\n";
	char text[512];

	snprintf(text, sizeof(text),
	         "%s    proxy_protocol: true\n    proxy_protocol_from: [10.0.0.1/8]\n", head);
	expect_at(text, "'10.0.0.1/8' is not an address range", 6, 27);
	snprintf(text, sizeof(text),
	         "%s    proxy_protocol: true\n    proxy_protocol_from: [a, 10.0.0.0/33]\n", head);
	expect_at(text, "'a' is not an address range", 6, 27);
	expect_at(text, "'10.0.0.0/33' is not an address range", 6, 30);
	snprintf(text, sizeof(text), "%s    proxy_protocol_from: [10.0.0.0/8]\n", head);
	expect_at(text, "proxy_protocol_from without proxy_protocol", 5, 26);
	snprintf(text, sizeof(text),
	         "%s    proxy_protocol: false\n    proxy_protocol_from: [10.0.0.0/8]\n", head);
	expect_at(text, "proxy_protocol_from without proxy_protocol", 6, 26);
	snprintf(text, sizeof(text), "%s    proxy_protocol: true\n", head);
	expect_at(text, "proxy_protocol needs proxy_protocol_from", 5, 21);
	snprintf(text, sizeof(text), "%s    proxy_protocol: true\n    proxy_protocol_from: []\n",
	         head);
	expect_at(text, "proxy_protocol needs proxy_protocol_from", 6, 26);
	snprintf(text, sizeof(text), "%s    proxy_protocol: yes please\n", head);
	diag_list d;
	parse_fail(text, &d, "is not a boolean");
	diag_free(&d);
	expect_at("version: 1\nlisteners:\n  - id: u\n    address: /run/c.sock\n"
	          "    proxy_protocol: true\n    proxy_protocol_from: [10.0.0.0/8]\n",
	          "proxy_protocol on a unix socket listener", 5, 21);
}

static void test_cidr(void **state)
{
	(void)state;
	custos_cidr r;
	const char *why;
	struct sockaddr_in in = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	struct sockaddr un = { .sa_family = AF_UNIX };

	static const char *const bad[] = {
		"",
		"/8",
		"10.0.0.0/",
		"10.0.0.0/08",
		"10.0.0.0/x",
		"10.0.0.0/33",
		"::/129",
		"10.0.0.0/8/",
		"10.0.0.1/8",
		"010.0.0.0/8",
		"host/8",
		"::1/1280",
		"10.0.0.0 /8",
		"1111111111111111111111111111111111111111111111111111111111111111/1"
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(cidr_parse(bad[i], &r, &why));
		assert_non_null(why);
	}
	assert_true(cidr_parse("10.1.0.0/16", &r, &why));
	assert_null(why);
	inet_pton(AF_INET, "10.1.200.3", &in.sin_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in));
	inet_pton(AF_INET, "10.2.0.1", &in.sin_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in));
	inet_pton(AF_INET6, "::ffff:10.1.0.9", &in6.sin6_addr); /* IPv4-mapped: counts as IPv4 */
	assert_true(cidr_match(&r, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "::10.1.0.9", &in6.sin6_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in6));
	assert_false(cidr_match(&r, &un));
	assert_true(cidr_parse("10.1.128.0/17", &r, &why)); /* a prefix inside a byte */
	inet_pton(AF_INET, "10.1.200.3", &in.sin_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in));
	inet_pton(AF_INET, "10.1.127.3", &in.sin_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in));
	assert_true(cidr_parse("0.0.0.0/0", &r, &why));
	assert_true(cidr_match(&r, (struct sockaddr *)&in));
	assert_true(cidr_parse("2001:db8::/32", &r, &why));
	inet_pton(AF_INET6, "2001:db8:ffff::1", &in6.sin6_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "2001:db9::1", &in6.sin6_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in6));
	assert_false(cidr_match(&r, (struct sockaddr *)&in)); /* family differs */
	assert_true(cidr_parse("::1", &r, &why));
	assert_int_equal(r.bits, 128);
	inet_pton(AF_INET6, "::1", &in6.sin6_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in6));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_cidr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
