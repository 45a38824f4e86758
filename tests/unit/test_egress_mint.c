/*
 * Interception CA tests: `ca init` writes a 0600 key and refuses to overwrite; a CA whose key
 * is readable by others is refused; minted leaves verify against the CA for their host only
 * (DNS and IP SANs), are cached, and the cache stays bounded; the ClientHello check a
 * connection attaches to a minted context runs during the handshake, and a refusal (or no
 * check at all) ends it with an unrecognized_name alert before the certificate is sent.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "proxy/mint.h"

static char dir[64];

static int setup(void **st)
{
	(void)st;
	snprintf(dir, sizeof(dir), "/tmp/custos-mint-XXXXXX");
	assert_non_null(mkdtemp(dir));
	char ca[128];
	snprintf(ca, sizeof(ca), "%s/ca", dir);
	assert_int_equal(mint_ca_init(ca), CUSTOS_OK);
	return 0;
}

static int teardown(void **st)
{
	char cmd[128];
	(void)st;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_init_modes(void **st)
{
	char p[160];
	struct stat s;
	(void)st;
	snprintf(p, sizeof(p), "%s/ca/ca.key", dir);
	assert_int_equal(stat(p, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0600);
	snprintf(p, sizeof(p), "%s/ca", dir);
	assert_int_equal(stat(p, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0700);
	/* a second init never overwrites */
	assert_int_equal(mint_ca_init(p), CUSTOS_ERR_EXISTS);
	/* a group-writable directory is refused */
	snprintf(p, sizeof(p), "%s/open", dir);
	assert_int_equal(mkdir(p, 0777), 0);
	assert_int_equal(chmod(p, 0777), 0);
	assert_int_equal(mint_ca_init(p), CUSTOS_ERR_PERM);
}

static void test_key_mode_refused(void **st)
{
	char p[160], q[160], cmd[400];
	mint *m = NULL;
	(void)st;
	snprintf(p, sizeof(p), "%s/ca2", dir);
	assert_int_equal(mint_ca_init(p), CUSTOS_OK);
	snprintf(q, sizeof(q), "%s/ca.key", p);
	assert_int_equal(chmod(q, 0644), 0);
	assert_int_equal(mint_open(p, 3600ull * 1000000000ull, 0, &m), CUSTOS_ERR_PERM);
	assert_null(m);
	assert_int_equal(chmod(q, 0600), 0);
	assert_int_equal(mint_open(p, 3600ull * 1000000000ull, 0, &m), CUSTOS_OK);
	mint_free(m);
	/* a key that does not belong to the certificate */
	snprintf(cmd, sizeof(cmd),
	         "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s "
	         "2>/dev/null",
	         q);
	assert_int_equal(unlink(q), 0);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(chmod(q, 0600), 0);
	assert_int_not_equal(mint_open(p, 3600ull * 1000000000ull, 0, &m), CUSTOS_OK);
	/* missing directory */
	assert_int_not_equal(mint_open("/nonexistent/ca", 3600ull * 1000000000ull, 0, &m),
	                     CUSTOS_OK);
}

static X509 *load_ca(void)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/ca/ca.crt", dir);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

/* Verifies ctx's certificate against the CA for host; returns the X509 verify result. */
static int verify_for(SSL_CTX *ctx, X509 *ca, const char *host, bool ip)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_add_cert(store, ca);
	X509_STORE_CTX *sc = X509_STORE_CTX_new();
	X509_STORE_CTX_init(sc, store, leaf, NULL);
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(sc);
	if (ip)
		X509_VERIFY_PARAM_set1_ip_asc(vp, host);
	else
		X509_VERIFY_PARAM_set1_host(vp, host, 0);
	X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER);
	int ok = X509_verify_cert(sc);
	int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(sc);
	X509_STORE_CTX_free(sc);
	X509_STORE_free(store);
	return err;
}

static void test_mint_and_cache(void **st)
{
	char p[160];
	mint *m = NULL;
	SSL_CTX *a = NULL, *b = NULL, *c = NULL, *d = NULL;
	uint64_t minted, hits;
	size_t cached;
	(void)st;
	snprintf(p, sizeof(p), "%s/ca", dir);
	assert_int_equal(mint_open(p, 3600ull * 1000000000ull, 2, &m), CUSTOS_OK);
	X509 *ca = load_ca();
	assert_int_equal(mint_ctx_for(m, "wiki.example", &a), CUSTOS_OK);
	assert_int_equal(verify_for(a, ca, "wiki.example", false), X509_V_OK);
	assert_int_equal(verify_for(a, ca, "evil.example", false), X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(mint_ctx_for(m, "wiki.example", &b), CUSTOS_OK);
	assert_ptr_equal(a, b); /* cached */
	assert_int_equal(mint_ctx_for(m, "127.0.0.1", &c), CUSTOS_OK);
	assert_int_equal(verify_for(c, ca, "127.0.0.1", true), X509_V_OK);
	assert_int_equal(mint_ctx_for(m, "::1", &d), CUSTOS_OK);
	assert_int_equal(verify_for(d, ca, "::1", true), X509_V_OK);
	mint_stats(m, &minted, &hits, &cached);
	assert_int_equal(minted, 3);
	assert_int_equal(hits, 1);
	assert_int_equal(cached, 2); /* bounded: wiki.example was evicted */
	/* the evicted context stays valid for its holders */
	assert_int_equal(verify_for(a, ca, "wiki.example", false), X509_V_OK);
	SSL_CTX_free(a);
	SSL_CTX_free(b);
	SSL_CTX_free(c);
	SSL_CTX_free(d);
	X509_free(ca);
	mint_free(m);
}

typedef struct hello_rec {
	const char *want;
	int calls;
	bool had;
} hello_rec;

static bool expect_name(void *arg, const char *sni)
{
	hello_rec *h = arg;
	h->calls++;
	h->had = sni != NULL;
	return sni != NULL && strcmp(sni, h->want) == 0;
}

/* A handshake over a non-blocking socketpair between a client that sends sni (NULL: none) and a
 * server on ctx with hc attached (NULL: none). Returns true when both ends finished; otherwise
 * *reason is the client's OpenSSL error reason. *cert: the client saw a server certificate. */
static bool handshake(SSL_CTX *ctx, const mint_hello_check *hc, const char *sni, int *reason,
                      bool *cert)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cctx);
	SSL *c = SSL_new(cctx), *s = SSL_new(ctx);
	assert_non_null(c);
	assert_non_null(s);
	assert_int_equal(SSL_set_fd(c, sv[0]), 1);
	assert_int_equal(SSL_set_fd(s, sv[1]), 1);
	if (sni)
		assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
	if (hc)
		assert_int_equal(mint_ssl_set_hello_check(s, hc), CUSTOS_OK);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	int rc = 0, rs = 0;
	*reason = 0;
	for (int i = 0; i < 100 && (rc != 1 || rs != 1); i++) {
		if (rc != 1) {
			rc = SSL_do_handshake(c);
			if (rc != 1 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) {
				*reason = ERR_GET_REASON(ERR_peek_last_error());
				break;
			}
		}
		if (rs != 1) {
			rs = SSL_do_handshake(s);
			if (rs != 1 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)
				rs = -2; /* the server failed: the client reads its alert next */
		}
		ERR_clear_error();
	}
	X509 *peer = SSL_get1_peer_certificate(c);
	*cert = peer != NULL;
	X509_free(peer);
	ERR_clear_error();
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);
	close(sv[0]);
	close(sv[1]);
	return rc == 1 && rs == 1;
}

static void test_hello_check(void **st)
{
	char p[160];
	mint *m = NULL;
	SSL_CTX *ctx = NULL;
	int reason;
	bool cert;
	(void)st;
	snprintf(p, sizeof(p), "%s/ca", dir);
	assert_int_equal(mint_open(p, 3600ull * 1000000000ull, 0, &m), CUSTOS_OK);
	assert_int_equal(mint_ctx_for(m, "wiki.example", &ctx), CUSTOS_OK);
	hello_rec h = { .want = "wiki.example" };
	const mint_hello_check hc = { expect_name, &h };

	assert_true(handshake(ctx, &hc, "wiki.example", &reason, &cert));
	assert_true(cert);
	assert_int_equal(h.calls, 1);
	assert_true(h.had);

	h.calls = 0;
	assert_false(handshake(ctx, &hc, "evil.example", &reason, &cert));
	assert_int_equal(reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	assert_false(cert); /* refused before the certificate went out */
	assert_int_equal(h.calls, 1);

	h.calls = 0; /* no SNI: the check still runs, with NULL */
	assert_false(handshake(ctx, &hc, NULL, &reason, &cert));
	assert_int_equal(reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	assert_int_equal(h.calls, 1);
	assert_false(h.had);

	/* a connection without a check on a minted context: refused (fail closed) */
	assert_false(handshake(ctx, NULL, "wiki.example", &reason, &cert));
	assert_int_equal(reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	assert_false(cert);

	SSL_CTX_free(ctx);
	mint_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_modes),
		cmocka_unit_test(test_key_mode_refused),
		cmocka_unit_test(test_mint_and_cache),
		cmocka_unit_test(test_hello_check),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
