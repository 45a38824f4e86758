/*
 * The egress interception CA (proxy-internal): custos' own CA created by `custos ca init`, and
 * short-lived leaf certificates minted per host on first use, kept in a bounded cache.
 */
#ifndef CUSTOS_PROXY_MINT_H
#define CUSTOS_PROXY_MINT_H

#include <openssl/ssl.h>

#include "custos/core.h"

#define MINT_CACHE_MAX      1024 /* hosts with a live leaf certificate */
#define MINT_CA_LIFETIME_S  (10ull * 365 * 24 * 3600)
#define MINT_BACKDATE_S     300 /* leaves start 5 minutes early (clock skew in the sandbox) */
#define MINT_CA_KEY_FILE    "ca.key"
#define MINT_CA_CERT_FILE   "ca.crt"
#define MINT_MAX_FILE_BYTES (64u * 1024)

/* Creates dir (0700) if missing and writes a new CA into it: ca.key (P-256, mode 0600) and
 * ca.crt (0644). CUSTOS_ERR_EXISTS when either file is already there (never overwritten). */
custos_err mint_ca_init(const char *dir) CUSTOS_WUR;

typedef struct mint mint;
/* Loads the CA from dir (ca.key refused unless 0600 or stricter) and makes the leaf key.
 * leaf_lifetime_ns: validity of minted leaves; cache_max: 0 = MINT_CACHE_MAX. *out is owned
 * by the caller (mint_free). */
custos_err mint_open(const char *dir, uint64_t leaf_lifetime_ns, size_t cache_max,
                     mint **out) CUSTOS_WUR;
void mint_free(mint *m);
/* A server SSL_CTX presenting a leaf for host (a DNS name, or an IPv4/IPv6 literal without
 * brackets) signed by the CA, from the cache or minted now. The caller owns one reference
 * (SSL_CTX_free). Thread-safe. */
custos_err mint_ctx_for(mint *m, const char *host, SSL_CTX **out) CUSTOS_WUR;
/* The ClientHello check of one connection on a minted context: check(arg, sni) runs while
 * OpenSSL reads the client's ClientHello (before any certificate is sent), sni being the
 * server name the client sent, NULL when it sent none. false fails the handshake with a fatal
 * unrecognized_name alert, as a plain tunnel does. */
typedef struct mint_hello_check {
	bool (*check)(void *arg, const char *sni);
	void *arg;
} mint_hello_check;
/* Attaches hc (the caller's, alive until the handshake is over) to ssl, made from a
 * mint_ctx_for context. A handshake on a minted context without one fails (fail closed).
 * CUSTOS_ERR_CRYPTO when OpenSSL refuses. */
custos_err mint_ssl_set_hello_check(SSL *ssl, const mint_hello_check *hc) CUSTOS_WUR;
/* Counters for tests and the admin API. */
void mint_stats(mint *m, uint64_t *minted, uint64_t *hits, size_t *cached);

#endif
