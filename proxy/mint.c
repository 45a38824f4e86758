/*
 * Interception CA and leaf minting. One P-256 leaf key per process signs nothing but its own
 * TLS handshakes; each host gets its own certificate (SAN = the host) signed by the CA, valid
 * for leaf_lifetime from five minutes ago, cached until a quarter of its life remains.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "mint.h"

#ifndef NS_PER_S
#define NS_PER_S 1000000000ull
#endif

typedef struct mint_entry {
	char host[256];
	uint32_t hash;
	SSL_CTX *ctx;
	uint64_t renew_s; /* re-mint after this wall time */
	uint64_t seq;     /* insertion order, for eviction */
} mint_entry;

struct mint {
	EVP_PKEY *ca_key;
	X509 *ca_cert;
	EVP_PKEY *leaf_key;
	uint64_t lifetime_s;
	pthread_mutex_t lock;
	mint_entry *cache;
	size_t n, max;
	uint64_t seq, minted, hits;
};

static custos_err ossl_err(const char *what)
{
	unsigned long e = ERR_get_error();
	char b[256] = "";
	if (e)
		ERR_error_string_n(e, b, sizeof(b));
	ERR_clear_error();
	return err_set(CUSTOS_ERR_CRYPTO, "%s: %s", what, b[0] ? b : "OpenSSL error");
}

static custos_err path_join(char *out, size_t n, const char *dir, const char *file)
{
	int r = snprintf(out, n, "%s/%s", dir, file);
	ENSURE(r > 0 && (size_t)r < n, CUSTOS_ERR_LIMIT, "path too long: %s/%s", dir, file);
	return CUSTOS_OK;
}

static custos_err add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ex == NULL)
		return ossl_err("certificate extension");
	int ok = X509_add_ext(cert, ex, -1);
	X509_EXTENSION_free(ex);
	return ok ? CUSTOS_OK : ossl_err("certificate extension");
}

static custos_err set_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	custos_err e = CUSTOS_OK;
	if (bn == NULL || !BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		e = ossl_err("serial number");
	BN_free(bn);
	return e;
}

/* A certificate for key with subject CN=cn, valid [now - backdate, now + life]. */
static custos_err new_cert(EVP_PKEY *key, const char *cn, uint64_t backdate_s, uint64_t life_s,
                           X509 **out)
{
	X509 *x = X509_new();
	if (x == NULL)
		return ossl_err("X509_new");
	custos_err e = CUSTOS_OK;
	X509_NAME *name = X509_get_subject_name(x);
	if (!X509_set_version(x, 2) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
	                                -1, 0) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -(long)backdate_s) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)life_s) || !X509_set_pubkey(x, key))
		e = ossl_err("certificate fields");
	if (e == CUSTOS_OK)
		e = set_serial(x);
	if (e != CUSTOS_OK) {
		X509_free(x);
		return e;
	}
	*out = x;
	return CUSTOS_OK;
}

static custos_err write_new(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd;
	do
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	while (fd == -1 && errno == EINTR);
	if (fd == -1) {
		if (errno == EEXIST)
			return err_set(CUSTOS_ERR_EXISTS, "%s exists; refusing to overwrite it",
			               path);
		return err_sys("creating %s", path);
	}
	custos_err e = file_write_all(fd, p, n);
	if (e == CUSTOS_OK && fchmod(fd, mode) == -1)
		e = err_sys("chmod %s", path);
	if (e == CUSTOS_OK && fsync(fd) == -1)
		e = err_sys("fsync %s", path);
	if (close(fd) == -1 && e == CUSTOS_OK)
		e = err_sys("close %s", path);
	return e;
}

custos_err mint_ca_init(const char *dir)
{
	char kpath[4096], cpath[4096];
	EVP_PKEY *key = NULL;
	X509 *ca = NULL;
	BIO *kb = NULL, *cb = NULL;
	custos_err e;

	GUARD(path_join(kpath, sizeof(kpath), dir, MINT_CA_KEY_FILE));
	GUARD(path_join(cpath, sizeof(cpath), dir, MINT_CA_CERT_FILE));
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return err_sys("mkdir %s", dir);
	struct stat st;
	if (stat(dir, &st) == -1)
		return err_sys("stat %s", dir);
	ENSURE(S_ISDIR(st.st_mode), CUSTOS_ERR_INVAL, "%s is not a directory", dir);
	ENSURE((st.st_mode & 022) == 0, CUSTOS_ERR_PERM,
	       "%s is writable by group or others; refusing to keep a CA key there", dir);
	ENSURE(access(kpath, F_OK) == -1 && access(cpath, F_OK) == -1, CUSTOS_ERR_EXISTS,
	       "%s already holds a CA (%s or %s); refusing to overwrite it", dir, MINT_CA_KEY_FILE,
	       MINT_CA_CERT_FILE);

	key = EVP_EC_gen("P-256");
	if (key == NULL) {
		e = ossl_err("generating the CA key");
		goto out;
	}
	e = new_cert(key, "custos egress interception CA", 0, MINT_CA_LIFETIME_S, &ca);
	if (e != CUSTOS_OK)
		goto out;
	X509_NAME *nm = X509_get_subject_name(ca);
	if (!X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8, (const unsigned char *)"custos", -1,
	                                -1, 0) ||
	    !X509_set_issuer_name(ca, nm)) {
		e = ossl_err("CA name");
		goto out;
	}
	if ((e = add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")) ||
	    (e = add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign")) ||
	    (e = add_ext(ca, ca, NID_subject_key_identifier, "hash")))
		goto out;
	if (!X509_sign(ca, key, EVP_sha256())) {
		e = ossl_err("signing the CA certificate");
		goto out;
	}
	kb = BIO_new(BIO_s_secmem());
	cb = BIO_new(BIO_s_mem());
	if (kb == NULL || cb == NULL ||
	    !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, ca)) {
		e = ossl_err("encoding the CA");
		goto out;
	}
	char *p;
	long n = BIO_get_mem_data(kb, &p);
	e = write_new(kpath, p, (size_t)n, 0600);
	if (e != CUSTOS_OK)
		goto out;
	n = BIO_get_mem_data(cb, &p);
	e = write_new(cpath, p, (size_t)n, 0644);
	if (e != CUSTOS_OK && unlink(kpath) == -1)
		log_warn("ca init: could not remove %s after a failure", kpath);
out:
	BIO_free(kb); /* secure memory: cleansed on free */
	BIO_free(cb);
	X509_free(ca);
	EVP_PKEY_free(key);
	return e;
}

custos_err mint_open(const char *dir, uint64_t leaf_lifetime_ns, size_t cache_max, mint **out)
{
	char kpath[4096], cpath[4096];
	buf kb, cbf;
	BIO *bio = NULL;
	custos_err e;

	*out = NULL;
	GUARD(path_join(kpath, sizeof(kpath), dir, MINT_CA_KEY_FILE));
	GUARD(path_join(cpath, sizeof(cpath), dir, MINT_CA_CERT_FILE));
	ENSURE(leaf_lifetime_ns >= 60 * NS_PER_S, CUSTOS_ERR_INVAL, "leaf lifetime under a minute");
	buf_init(&kb, MINT_MAX_FILE_BYTES);
	buf_init(&cbf, MINT_MAX_FILE_BYTES);
	mint *m = xcalloc(1, sizeof(*m));
	m->lifetime_s = leaf_lifetime_ns / NS_PER_S;
	m->max = cache_max ? cache_max : MINT_CACHE_MAX;
	if (m->max > MINT_CACHE_MAX)
		m->max = MINT_CACHE_MAX;
	pthread_mutex_init(&m->lock, NULL);
	if ((e = file_load(kpath, FILE_SECRET, MINT_MAX_FILE_BYTES, &kb)) != CUSTOS_OK ||
	    (e = file_load(cpath, FILE_CONFIG, MINT_MAX_FILE_BYTES, &cbf)) != CUSTOS_OK)
		goto fail;
	bio = BIO_new_mem_buf(buf_ptr(&kb), (int)buf_used(&kb));
	m->ca_key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	bio = BIO_new_mem_buf(buf_ptr(&cbf), (int)buf_used(&cbf));
	m->ca_cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (m->ca_key == NULL || m->ca_cert == NULL) {
		e = ossl_err("reading the interception CA");
		goto fail;
	}
	if (X509_check_private_key(m->ca_cert, m->ca_key) != 1) {
		e = ossl_err("CA key does not match the CA certificate");
		goto fail;
	}
	m->leaf_key = EVP_EC_gen("P-256");
	if (m->leaf_key == NULL) {
		e = ossl_err("generating the leaf key");
		goto fail;
	}
	m->cache = xcalloc(m->max, sizeof(*m->cache));
	buf_free_secret(&kb);
	buf_free(&cbf);
	*out = m;
	return CUSTOS_OK;
fail:
	buf_free_secret(&kb);
	buf_free(&cbf);
	mint_free(m);
	return err_wrap(e, "interception CA in %s", dir);
}

void mint_free(mint *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n; i++)
		SSL_CTX_free(m->cache[i].ctx);
	free(m->cache);
	EVP_PKEY_free(m->ca_key);
	EVP_PKEY_free(m->leaf_key);
	X509_free(m->ca_cert);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* The SSL ex_data slot holding a connection's mint_hello_check (one per process). */
static int hello_idx = -1;
static pthread_once_t hello_once = PTHREAD_ONCE_INIT;

static void hello_idx_init(void)
{
	hello_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

custos_err mint_ssl_set_hello_check(SSL *ssl, const mint_hello_check *hc)
{
	pthread_once(&hello_once, hello_idx_init);
	if (hello_idx < 0 || SSL_set_ex_data(ssl, hello_idx, (void *)hc) != 1)
		return ossl_err("attaching the ClientHello check");
	return CUSTOS_OK;
}

/* OpenSSL (3.0 and later) calls the servername callback for every ClientHello, with or without
 * a server_name extension. The context is shared by every connection to its host; what a
 * connection expects comes from its own ex_data. */
static int hello_servername(SSL *ssl, int *al, void *arg)
{
	(void)arg;
	pthread_once(&hello_once, hello_idx_init);
	const mint_hello_check *hc = hello_idx >= 0 ? SSL_get_ex_data(ssl, hello_idx) : NULL;
	if (hc == NULL || !hc->check(hc->arg, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name))) {
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

static uint32_t host_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static custos_err mint_leaf(mint *m, const char *host, SSL_CTX **out)
{
	X509 *x = NULL;
	SSL_CTX *ctx = NULL;
	char san[300];
	unsigned char tmp[16];
	bool ip = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
	int r = snprintf(san, sizeof(san), "%s:%s", ip ? "IP" : "DNS", host);
	ENSURE(r > 0 && (size_t)r < sizeof(san), CUSTOS_ERR_LIMIT, "host too long");

	custos_err e = new_cert(m->leaf_key, host, MINT_BACKDATE_S, m->lifetime_s, &x);
	if (e != CUSTOS_OK)
		return e;
	if (!X509_set_issuer_name(x, X509_get_subject_name(m->ca_cert))) {
		e = ossl_err("leaf issuer");
		goto out;
	}
	if ((e = add_ext(x, m->ca_cert, NID_basic_constraints, "critical,CA:FALSE")) ||
	    (e = add_ext(x, m->ca_cert, NID_key_usage, "critical,digitalSignature")) ||
	    (e = add_ext(x, m->ca_cert, NID_ext_key_usage, "serverAuth")) ||
	    (e = add_ext(x, m->ca_cert, NID_authority_key_identifier, "keyid")) ||
	    (e = add_ext(x, m->ca_cert, NID_subject_alt_name, san)))
		goto out;
	if (!X509_sign(x, m->ca_key, EVP_sha256())) {
		e = ossl_err("signing a leaf");
		goto out;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, m->leaf_key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		e = ossl_err("leaf TLS context");
		SSL_CTX_free(ctx);
		goto out;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_tlsext_servername_callback(ctx, hello_servername);
	*out = ctx;
out:
	X509_free(x);
	return e;
}

custos_err mint_ctx_for(mint *m, const char *host, SSL_CTX **out)
{
	uint32_t h = host_hash(host);
	uint64_t now = tm_wall_ns() / NS_PER_S;
	ENSURE(strlen(host) < sizeof(m->cache[0].host), CUSTOS_ERR_LIMIT, "host too long");

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++) {
		mint_entry *en = &m->cache[i];
		if (en->hash == h && strcmp(en->host, host) == 0 && now < en->renew_s) {
			SSL_CTX_up_ref(en->ctx);
			*out = en->ctx;
			m->hits++;
			pthread_mutex_unlock(&m->lock);
			return CUSTOS_OK;
		}
	}
	pthread_mutex_unlock(&m->lock);

	/* Minting (an ECDSA signature) happens outside the lock. */
	SSL_CTX *ctx = NULL;
	GUARD(mint_leaf(m, host, &ctx));

	pthread_mutex_lock(&m->lock);
	m->minted++;
	size_t slot = m->n;
	for (size_t i = 0; i < m->n; i++) /* a stale or concurrent entry for the same host */
		if (m->cache[i].hash == h && strcmp(m->cache[i].host, host) == 0)
			slot = i;
	if (slot == m->n && m->n == m->max) { /* full: evict the oldest */
		slot = 0;
		for (size_t i = 1; i < m->n; i++)
			if (m->cache[i].seq < m->cache[slot].seq)
				slot = i;
	}
	mint_entry *en = &m->cache[slot];
	if (slot == m->n)
		m->n++;
	else
		SSL_CTX_free(en->ctx);
	memcpy(en->host, host, strlen(host) + 1);
	en->hash = h;
	en->ctx = ctx;
	en->renew_s = now + m->lifetime_s * 3 / 4;
	en->seq = ++m->seq;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&m->lock);
	*out = ctx;
	return CUSTOS_OK;
}

void mint_stats(mint *m, uint64_t *minted, uint64_t *hits, size_t *cached)
{
	pthread_mutex_lock(&m->lock);
	*minted = m->minted;
	*hits = m->hits;
	*cached = m->n;
	pthread_mutex_unlock(&m->lock);
}
