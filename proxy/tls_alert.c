/*
 * What a TLS peer's fatal alert says, for the reasons custos gives when an upstream or an origin
 * ends a connection with one. With TLS 1.3 a server's refusal of the client's certificate
 * (RFC 8446 4.4.2.4) comes after the client's side of the handshake is done, so the client
 * learns it on its first read, as an alert in OpenSSL's error queue.
 */
#include <stdint.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

/* RFC 8446 6 and RFC 5246 7.2 names, by code. */
static const struct {
	uint8_t code;
	const char *name;
} alert_names[] = {
	{ 0, "close_notify" },
	{ 10, "unexpected_message" },
	{ 20, "bad_record_mac" },
	{ 22, "record_overflow" },
	{ 40, "handshake_failure" },
	{ 42, "bad_certificate" },
	{ 43, "unsupported_certificate" },
	{ 44, "certificate_revoked" },
	{ 45, "certificate_expired" },
	{ 46, "certificate_unknown" },
	{ 47, "illegal_parameter" },
	{ 48, "unknown_ca" },
	{ 49, "access_denied" },
	{ 50, "decode_error" },
	{ 51, "decrypt_error" },
	{ 70, "protocol_version" },
	{ 71, "insufficient_security" },
	{ 80, "internal_error" },
	{ 86, "inappropriate_fallback" },
	{ 90, "user_canceled" },
	{ 109, "missing_extension" },
	{ 110, "unsupported_extension" },
	{ 112, "unrecognized_name" },
	{ 113, "bad_certificate_status_response" },
	{ 115, "unknown_psk_identity" },
	{ 116, "certificate_required" },
	{ 120, "no_application_protocol" },
};

static const char *alert_name(unsigned a)
{
	for (size_t i = 0; i < sizeof(alert_names) / sizeof(alert_names[0]); i++)
		if (alert_names[i].code == a)
			return alert_names[i].name;
	return NULL;
}

/* An alert a server sends about the client's certificate (or its lack of one). */
static bool alert_is_client_cert(unsigned a)
{
	return a == 42 || a == 43 || a == 44 || a == 45 || a == 46 || a == 48 || a == 49 ||
	       a == 116;
}

/* OpenSSL reports a received alert as an SSL library error whose reason is
 * SSL_AD_REASON_OFFSET plus the alert's code. */
static int err_alert(unsigned long e)
{
	if (e == 0 || ERR_GET_LIB(e) != ERR_LIB_SSL)
		return -1;
	int r = ERR_GET_REASON(e);
	if (r < SSL_AD_REASON_OFFSET || r > SSL_AD_REASON_OFFSET + 255)
		return -1;
	return r - SSL_AD_REASON_OFFSET;
}

int tls_err_peer_alert(void)
{
	int a = err_alert(ERR_peek_error());
	return a >= 0 ? a : err_alert(ERR_peek_last_error());
}

void tls_peer_alert_reason(const SSL *ssl, int alert, char *out, size_t n)
{
	unsigned a = (unsigned)alert & 0xff;
	const char *name = alert_name(a);
	char num[16];

	if (name == NULL) {
		snprintf(num, sizeof(num), "%u", a);
		name = num;
	}
	if (!alert_is_client_cert(a))
		snprintf(out, n, "upstream ended the connection with TLS alert %s", name);
	else if (ssl != NULL && SSL_get_certificate(ssl) != NULL)
		snprintf(out, n, "upstream refused the client certificate (TLS alert %s)", name);
	else
		snprintf(out, n,
		         "upstream requires a client certificate, none is configured (TLS "
		         "alert %s)",
		         name);
}
