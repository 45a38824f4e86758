/*
 * The names proxy/tls.c gives a client connection to check and to send: the name taken from an
 * upstream's address (an IPv6 literal without its brackets, none for an empty or oversized
 * host), the SNI (none for an IP literal, RFC 6066 3) and the host-name flags of a client
 * context (RFC 9525 6.3: a wildcard only as a whole left-most label), checked on certificates
 * made here with OpenSSL's own X509_check_host and the flags the context hands its SSLs; the
 * model upstreams' context: peer verified, those flags, no renegotiation, no compression.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/proxy_int.h"
#include "proxy/tls.h"

static void upstream_name(void **state)
{
	char b[256], big[600];
	(void)state;

	assert_string_equal(tls_upstream_name("localhost:443", b, sizeof(b)), "localhost");
	assert_string_equal(tls_upstream_name("10.1.2.3:8443", b, sizeof(b)), "10.1.2.3");
	assert_string_equal(tls_upstream_name("[::1]:8443", b, sizeof(b)), "::1");
	assert_string_equal(tls_upstream_name("[2001:db8::5]:1", b, sizeof(b)), "2001:db8::5");
	assert_string_equal(tls_upstream_name("bare", b, sizeof(b)), "bare");
	assert_null(tls_upstream_name(":443", b, sizeof(b)));
	assert_null(tls_upstream_name("[]:443", b, sizeof(b)));
	assert_null(tls_upstream_name("", b, sizeof(b)));
	memset(big, 'a', 300);
	memcpy(big + 300, ":443", 5);
	assert_null(tls_upstream_name(big, b, sizeof(b))); /* never an empty name: no check */
}

static void sni(void **state)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	(void)state;
	assert_non_null(ctx);
	const char *names[] = { "localhost", "a.example.test", "127.0.0.1", "::1" };
	const bool sent[] = { true, true, false, false };
	for (size_t i = 0; i < 4; i++) {
		SSL *ssl = SSL_new(ctx);
		assert_non_null(ssl);
		tls_sni_set(ssl, names[i]);
		const char *got = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
		if (sent[i])
			assert_string_equal(got, names[i]);
		else
			assert_null(got);
		SSL_free(ssl);
	}
	SSL_CTX_free(ctx);
}

/* A certificate whose only SAN is DNS:dns (unsigned: X509_check_host reads names only). */
static X509 *cert_dns(const char *dns)
{
	char v[300];
	X509 *x = X509_new();
	X509V3_CTX c;
	assert_non_null(x);
	snprintf(v, sizeof(v), "DNS:%s", dns);
	X509V3_set_ctx_nodb(&c);
	X509V3_set_ctx(&c, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &c, NID_subject_alt_name, v);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
	return x;
}

static void wildcards(void **state)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	(void)state;
	assert_non_null(ctx);
	tls_client_hostflags(ctx);
	SSL *ssl = SSL_new(ctx); /* what each connection inherits */
	assert_non_null(ssl);
	unsigned int f = X509_VERIFY_PARAM_get_hostflags(SSL_get0_param(ssl));
	assert_true(f & X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	X509 *wild = cert_dns("*.example.test"), *part = cert_dns("f*.example.test");
	assert_int_equal(X509_check_host(wild, "a.example.test", 0, f, NULL), 1);
	assert_int_equal(X509_check_host(wild, "a.b.example.test", 0, f, NULL), 0);
	assert_int_equal(X509_check_host(wild, "example.test", 0, f, NULL), 0);
	assert_int_equal(X509_check_host(part, "foo.example.test", 0, f, NULL), 0);
	/* What OpenSSL does without the flag (main before this check): the partial matches. */
	assert_int_equal(X509_check_host(part, "foo.example.test", 0, 0, NULL), 1);
	X509_free(wild);
	X509_free(part);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

/* The model upstreams' context (tls_client_ctx) carries the host flags and refuses an
 * upstream's renegotiation, as the egress sources' do. */
static void upstream_ctx(void **state)
{
	proxy_upstream_opts u = { .address = (char *)"localhost:443", .tls = true };
	SSL_CTX *ctx = NULL;
	(void)state;
	assert_int_equal(tls_client_ctx(&u, 0, &ctx), CUSTOS_OK);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_COMPRESSION);
	assert_true(X509_VERIFY_PARAM_get_hostflags(SSL_CTX_get0_param(ctx)) &
	            X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
	SSL_CTX_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(upstream_name),
		cmocka_unit_test(sni),
		cmocka_unit_test(wildcards),
		cmocka_unit_test(upstream_ctx),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
