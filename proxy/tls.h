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

/* A client context's own certificate (mTLS to an upstream or an origin): the PEM chain in
 * cert, leaf first, and its unencrypted PEM private key in key (FILE_SECRET: no access by
 * group or others), which must match. The key bytes are wiped once loaded. Errors name the
 * file. */
custos_err tls_client_cert_load(SSL_CTX *ctx, const char *cert, const char *key) CUSTOS_WUR;

#endif
