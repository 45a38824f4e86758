/*
 * proxy/tls_alert.c: a fatal alert the peer sent, found in OpenSSL's error queue as OpenSSL
 * puts it there (an SSL error whose reason is SSL_AD_REASON_OFFSET + the alert), and the
 * reason custos gives for it. The handshakes themselves are in
 * tests/integration/proxy_upstream_mtls.sh and egress_client_cert.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy/tls.h"

static void test_queue(void **state)
{
	(void)state;
	ERR_clear_error();
	assert_int_equal(tls_err_peer_alert(), -1); /* empty */
	ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
	assert_int_equal(tls_err_peer_alert(), -1); /* an SSL error, not an alert */
	ERR_clear_error();
	ERR_raise(ERR_LIB_X509, SSL_AD_REASON_OFFSET + 48);
	assert_int_equal(tls_err_peer_alert(), -1); /* another library's reason */
	ERR_clear_error();
	ERR_raise(ERR_LIB_SSL, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);
	assert_int_equal(tls_err_peer_alert(), 116);
	assert_int_not_equal(ERR_peek_error(), 0); /* left in the queue */
	ERR_clear_error();
	ERR_raise(ERR_LIB_SSL, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
	assert_int_equal(tls_err_peer_alert(), 48);
	ERR_clear_error();
	ERR_raise(ERR_LIB_SSL, SSL_R_SSLV3_ALERT_BAD_CERTIFICATE);
	assert_int_equal(tls_err_peer_alert(), 42);
	ERR_clear_error();
	/* Behind another error: the last one is looked at too. */
	ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
	ERR_raise(ERR_LIB_SSL, SSL_R_TLSV1_ALERT_ACCESS_DENIED);
	assert_int_equal(tls_err_peer_alert(), 49);
	ERR_clear_error();
}

static void test_reason(void **state)
{
	char why[160];
	(void)state;

	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	SSL *ssl = SSL_new(ctx);
	assert_non_null(ssl);
	/* No client certificate: the upstream requires one. */
	tls_peer_alert_reason(ssl, 116, why, sizeof(why));
	assert_string_equal(why, "upstream requires a client certificate, none is configured (TLS "
	                         "alert certificate_required)");
	tls_peer_alert_reason(NULL, 42, why, sizeof(why));
	assert_string_equal(why, "upstream requires a client certificate, none is configured (TLS "
	                         "alert bad_certificate)");
	/* Not about the certificate: named as it is. */
	tls_peer_alert_reason(ssl, 40, why, sizeof(why));
	assert_string_equal(why, "upstream ended the connection with TLS alert handshake_failure");
	tls_peer_alert_reason(ssl, 200, why, sizeof(why));
	assert_string_equal(why, "upstream ended the connection with TLS alert 200");
	/* Bounded by out's size. */
	char small[9];
	tls_peer_alert_reason(ssl, 48, small, sizeof(small));
	assert_string_equal(small, "upstream");
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
