/*
 * TLS helpers shared beyond the ingress proxy (tls.c): the egress proxy's session cache for
 * its connections to origins.
 */
#ifndef CUSTOS_PROXY_TLS_H
#define CUSTOS_PROXY_TLS_H

#include <openssl/ssl.h>

#include "custos/core.h"
#include "custos/crl.h"

/* tls_crl_load: custos/crl.h (core/crl.c), shared with the audit shipper. */

/* A session cache for a client context used by many threads (a lock), keyed by origin: up to
 * 32 origins, a stack of up to 16 sessions each (newest on top), the origin least recently
 * stored to evicted. The sessions are freed with the context. */
custos_err tls_origin_cache_attach(SSL_CTX *ctx) CUSTOS_WUR;
/* Before the handshake of ssl (on such a context): offers key's newest usable session (a TLS
 * 1.3 one leaves the cache: single use; expired ones are dropped) and has the sessions ssl
 * receives stored under key. */
void tls_origin_session_offer(SSL *ssl, const char *key);
/* After a failed handshake on ssl: key's sessions are dropped. */
void tls_origin_session_failed(SSL *ssl);

/* The host name checks of a client context (upstreams, origins): a wildcard only as a whole
 * left-most label (RFC 9525 6.3: "f*.example.com" matches nothing; OpenSSL's default allows it). */
void tls_client_hostflags(SSL_CTX *ctx);
/* The SNI for a connection to name: sent for a DNS name, never for an IP literal (RFC 6066 3). */
void tls_sni_set(SSL *ssl, const char *name);

/* A client context's own certificate (mTLS to an upstream or an origin): the PEM chain in
 * cert, leaf first, and its unencrypted PEM private key in key (FILE_SECRET: no access by
 * group or others), which must match. The key bytes are wiped once loaded. Errors name the
 * file. */
custos_err tls_client_cert_load(SSL_CTX *ctx, const char *cert, const char *key) CUSTOS_WUR;

/* The fatal TLS alert the peer ended a connection with (a read that failed with SSL_ERROR_SSL),
 * from OpenSSL's error queue, which is left as it is: its code (0-255), or -1 when the queue
 * holds no received alert (tls_alert.c). */
int tls_err_peer_alert(void);
/* The reason for an upstream connection that alert (tls_err_peer_alert) ended, in out: for an
 * alert about the client certificate (certificate_required, bad_certificate, unknown_ca,
 * certificate_revoked, certificate_expired, access_denied, ...) "upstream refused the client
 * certificate (TLS alert unknown_ca)", or "upstream requires a client certificate, none is
 * configured (...)" when ssl presents none; else "upstream ended the connection with TLS alert
 * ...". */
void tls_peer_alert_reason(const SSL *ssl, int alert, char *out, size_t n);

#endif
