/*
 * TLS contexts with OpenSSL 3: the server context (TLS 1.2/1.3, Mozilla intermediate suites,
 * ECDSA and RSA certificates, ALPN from the listener's list, tickets with rotating keys, mTLS,
 * OCSP responses stapled from files) and the client context for TLS upstreams (verification on,
 * sessions kept per worker and resumed).
 * A session resumes on our server only on a context that decides client authentication as the
 * one that made it did (session id context, below).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy_int.h"
#include "tls.h"

/* Mozilla "intermediate" (v5.7) TLS 1.2 suites; TLS 1.3 suites are OpenSSL's defaults, which
 * match the recommendation. */
#define MOZ_INTERMEDIATE_CIPHERS                                                                   \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define MOZ_GROUPS            "X25519:prime256v1:secp384r1"
#define TICKET_KEYS           2 /* current + previous, still accepted for decryption */
#define KEY_FILE_MAX          (64u * 1024)
#define CLIENT_CA_FILE_MAX    (4u << 20) /* a client CA bundle; the system bundle is ~200 KiB */
#define CERT_FILE_MAX         (1u << 20) /* a certificate and its chain */
#define SESSION_ID_CTX_TAG    "custos-sid/1"
#define TICKET_LIFETIME_MAX_S (7u * 24 * 3600) /* RFC 8446 4.6.1: at most 7 days */

/* Session ticket keys: one ring for the process, so a reload keeps resumption working. A key
 * encrypts new tickets for one rotation period from its creation, and decrypts tickets for one
 * more period after that: a ticket lives between one and two periods, never longer (a key
 * that sat unused through an idle spell is refused on its age, not on how often it rotated). */
struct ticket_key {
	uint8_t name[16];
	uint8_t aes[32];
	uint8_t hmac[32];
	uint64_t created;
	bool set;
};
static struct ticket_key ticket_ring[TICKET_KEYS]; /* [0] is current */
static pthread_rwlock_t ticket_lock = PTHREAD_RWLOCK_INITIALIZER;
static uint64_t ticket_rotate_ns = 12ull * 3600 * 1000000000ull; /* under ticket_lock */

void tls_ticket_rotation_set(uint64_t ns)
{
	pthread_rwlock_wrlock(&ticket_lock);
	ticket_rotate_ns = ns ? ns : 12ull * 3600 * 1000000000ull;
	pthread_rwlock_unlock(&ticket_lock);
}

static bool ticket_new(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		return false;
	k->created = tm_mono_ns();
	k->set = true;
	return true;
}

/* Rotates when the current key is older than its lifetime; callers hold no lock. */
static void ticket_maybe_rotate(void)
{
	uint64_t now = tm_mono_ns();

	pthread_rwlock_rdlock(&ticket_lock);
	bool need = !ticket_ring[0].set || now - ticket_ring[0].created >= ticket_rotate_ns;
	pthread_rwlock_unlock(&ticket_lock);
	if (!need)
		return;
	pthread_rwlock_wrlock(&ticket_lock);
	if (!ticket_ring[0].set || now - ticket_ring[0].created >= ticket_rotate_ns) {
		struct ticket_key k;
		if (ticket_new(&k)) {
			OPENSSL_cleanse(&ticket_ring[TICKET_KEYS - 1], sizeof(ticket_ring[0]));
			memmove(&ticket_ring[1], &ticket_ring[0],
			        (TICKET_KEYS - 1) * sizeof(ticket_ring[0]));
			ticket_ring[0] = k;
			log_debug("tls: session ticket key rotated");
		}
		OPENSSL_cleanse(&k, sizeof(k));
	}
	pthread_rwlock_unlock(&ticket_lock);
}

static int ticket_setup(const struct ticket_key *k, EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx,
                        const unsigned char *iv, int enc)
{
	OSSL_PARAM params[2];
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
	    EVP_MAC_init(hctx, k->hmac, sizeof(k->hmac), params) != 1)
		return -1;
	if (EVP_CipherInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc) != 1)
		return -1;
	return 0;
}

static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
                     EVP_MAC_CTX *hctx, int enc)
{
	int rc = 0;

	(void)s;
	ticket_maybe_rotate();
	pthread_rwlock_rdlock(&ticket_lock);
	if (enc) {
		if (RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) != 1) {
			rc = -1;
			goto out;
		}
		memcpy(key_name, ticket_ring[0].name, 16);
		rc = ticket_setup(&ticket_ring[0], ectx, hctx, iv, 1) == 0 ? 1 : -1;
		goto out;
	}
	uint64_t now = tm_mono_ns();
	for (int i = 0; i < TICKET_KEYS; i++) {
		if (!ticket_ring[i].set || CRYPTO_memcmp(key_name, ticket_ring[i].name, 16) != 0)
			continue;
		/* Past its two periods (current, then previous): full handshake. */
		if (now - ticket_ring[i].created >= 2 * ticket_rotate_ns)
			break;
		if (ticket_setup(&ticket_ring[i], ectx, hctx, iv, 0) != 0) {
			rc = -1;
			goto out;
		}
		rc = i == 0 ? 1 : 2; /* 2: valid, but issue a fresh ticket under the new key */
		goto out;
	}
	rc = 0; /* unknown or expired key: full handshake */
out:
	pthread_rwlock_unlock(&ticket_lock);
	return rc;
}

/* Whether now lies in the certificate's validity period (false when it cannot be told). */
static bool cert_valid_now(X509 *x)
{
	return X509_cmp_current_time(X509_get0_notBefore(x)) < 0 &&
	       X509_cmp_current_time(X509_get0_notAfter(x)) > 0;
}

/* Called for every ticket a client presents, after it was decrypted. The session id context
 * (tls_server_ctx) already keeps a session on listeners that trust the CAs which verified it;
 * what changes on its own is time: a client certificate that expired (or is not valid yet)
 * since the full handshake does not resume, the client gets a full handshake instead, where
 * the certificate is verified again (and an expired one refused). */
static SSL_TICKET_RETURN ticket_decrypted_cb(SSL *s, SSL_SESSION *ss, const unsigned char *keyname,
                                             size_t keyname_len, SSL_TICKET_STATUS status,
                                             void *arg)
{
	(void)keyname, (void)keyname_len, (void)arg;
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		break;
	case SSL_TICKET_EMPTY:
	case SSL_TICKET_NO_DECRYPT:
		return SSL_TICKET_RETURN_IGNORE_RENEW; /* OpenSSL's own choice without a callback */
	default:
		return SSL_TICKET_RETURN_ABORT;
	}
	X509 *peer = ss ? SSL_SESSION_get0_peer(ss) : NULL;
	if (peer != NULL && !cert_valid_now(peer)) {
		log_debug("tls: a session ticket's client certificate is outside its validity "
		          "period: full handshake");
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	}
	/* TLS 1.3 tickets are single-use for the client (RFC 8446 C.4; OpenSSL's client resumes
	 * a session only from a ticket it has not used yet): a resumed TLS 1.3 connection gets a
	 * fresh ticket, or the client's next connection would be a full handshake. A TLS 1.2
	 * ticket may be used again, so it is renewed only when its key was rotated out. */
	if (status == SSL_TICKET_SUCCESS_RENEW || SSL_version(s) >= TLS1_3_VERSION)
		return SSL_TICKET_RETURN_USE_RENEW;
	return SSL_TICKET_RETURN_USE;
}

/* ALPN: the listener's protocols in its order of preference, in wire format (length-prefixed
 * names), owned by the SSL_CTX through ex_data. */
struct alpn_pref {
	unsigned len;
	unsigned char wire[PROXY_MAX_ALPN * 9];
};
static int alpn_idx = -1;
static pthread_once_t alpn_once = PTHREAD_ONCE_INIT;

static void alpn_pref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static void alpn_idx_init(void)
{
	alpn_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_pref_free);
}

/* Server preference (RFC 7301 3.2): the first of our protocols that the client offers. */
static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct alpn_pref *p = arg;

	(void)s;
	for (unsigned k = 0; k < p->len; k += 1u + p->wire[k]) {
		unsigned want = p->wire[k];
		for (unsigned i = 0; i < inlen;) {
			unsigned n = in[i++];
			if (n > inlen - i)
				break;
			if (n == want && memcmp(in + i, p->wire + k + 1, n) == 0) {
				*out = in + i;
				*outlen = (unsigned char)n;
				return SSL_TLSEXT_ERR_OK;
			}
			i += n;
		}
	}
	/* RFC 7301: a server that supports none of the offered protocols fails the handshake
	 * with a fatal no_application_protocol alert (OpenSSL sends it for ALERT_FATAL). */
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static custos_err alpn_setup(SSL_CTX *ctx, const proxy_tls_opts *o)
{
	static const proxy_alpn dflt[] = { PROXY_ALPN_HTTP11 };
	const proxy_alpn *list = o->nalpn ? o->alpn : dflt;
	size_t n = o->nalpn ? o->nalpn : 1;

	if (o->no_alpn)
		return CUSTOS_OK;
	ENSURE(n <= PROXY_MAX_ALPN, CUSTOS_ERR_LIMIT, "tls: at most %d ALPN protocols",
	       PROXY_MAX_ALPN);
	pthread_once(&alpn_once, alpn_idx_init);
	ENSURE(alpn_idx >= 0, CUSTOS_ERR_CRYPTO, "tls: no ex_data index for ALPN");
	struct alpn_pref *p = calloc(1, sizeof(*p));
	ENSURE(p, CUSTOS_ERR_NOMEM, "tls: ALPN list");
	for (size_t i = 0; i < n; i++) {
		const char *name = list[i] == PROXY_ALPN_HTTP11   ? "http/1.1"
		                   : list[i] == PROXY_ALPN_HTTP10 ? "http/1.0"
		                                                  : NULL;
		for (size_t j = 0; name && j < i; j++)
			if (list[j] == list[i])
				name = NULL;
		if (name == NULL) {
			free(p);
			return err_set(CUSTOS_ERR_INVAL,
			               "tls: ALPN entry %zu is not a protocol custos speaks (or a "
			               "repeat): only http/1.1 and http/1.0",
			               i + 1);
		}
		p->wire[p->len++] = 8;
		memcpy(p->wire + p->len, name, 8);
		p->len += 8;
	}
	if (SSL_CTX_set_ex_data(ctx, alpn_idx, p) != 1) {
		free(p);
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, "tls: ALPN ex_data");
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, p);
	return CUSTOS_OK;
}

static custos_err load_key(SSL_CTX *ctx, const char *path)
{
	buf b;
	custos_err e;

	buf_init(&b, KEY_FILE_MAX);
	e = file_load(path, FILE_SECRET, KEY_FILE_MAX, &b);
	if (e != CUSTOS_OK) {
		buf_free_secret(&b);
		return err_wrap(e, "private key");
	}
	BIO *bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	buf_free_secret(&b);
	if (pk == NULL)
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
	int ok = SSL_CTX_use_PrivateKey(ctx, pk);
	EVP_PKEY_free(pk);
	if (ok != 1)
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
	return CUSTOS_OK;
}

/* What SSL_CTX_use_certificate_chain_file does (the first certificate, then the chain), from
 * one file_load of the file: OpenSSL's own fopen() waits forever on a FIFO put in the file's
 * place, which would hang the reload, and with it the loop that takes SIGTERM. */
static custos_err load_cert_chain(SSL_CTX *ctx, const char *path)
{
	buf b;
	custos_err e = CUSTOS_OK;

	buf_init(&b, CERT_FILE_MAX);
	if ((e = file_load(path, FILE_ANY, CERT_FILE_MAX, &b)) != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "certificate");
	}
	BIO *bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	X509 *leaf = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	if (leaf == NULL || SSL_CTX_use_certificate(ctx, leaf) != 1 ||
	    SSL_CTX_clear_chain_certs(ctx) != 1)
		e = tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
	X509_free(leaf);
	while (e == CUSTOS_OK) {
		X509 *ca = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (ca == NULL) {
			/* The end of the file, or a block that is not a certificate. */
			unsigned long err = ERR_peek_last_error();
			if (ERR_GET_LIB(err) == ERR_LIB_PEM &&
			    ERR_GET_REASON(err) == PEM_R_NO_START_LINE)
				ERR_clear_error();
			else
				e = tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
			break;
		}
		if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
			X509_free(ca);
			e = tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
		}
	}
	BIO_free(bio);
	buf_free(&b);
	return e;
}

custos_err tls_client_cert_load(SSL_CTX *ctx, const char *cert, const char *key)
{
	custos_err e;

	if ((e = load_cert_chain(ctx, cert)) != CUSTOS_OK)
		return e;
	if ((e = load_key(ctx, key)) != CUSTOS_OK)
		return e;
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		return err_set(CUSTOS_ERR_CRYPTO, "client key %s does not match the certificate %s",
		               key, cert);
	}
	return CUSTOS_OK;
}

/* Loads the client CA bundle (certificates and CRLs, as SSL_CTX_load_verify_locations would)
 * into the context's store and its list of acceptable CA names, from one read of the file, and
 * gives the SHA-256 of the bytes loaded: the session id context names exactly what verified. */
static custos_err load_client_ca(SSL_CTX *ctx, const char *path, uint8_t digest[32])
{
	return tls_ca_file_load_ex(ctx, path, "client_ca", CLIENT_CA_FILE_MAX, digest, true);
}

/* ---- OCSP stapling from a file (HAProxy's .ocsp files, nginx's ssl_stapling_file): custos
 * never asks a responder itself; an operator's job refreshes the file and a reload reads it. */
#define OCSP_FILE_MAX (1u << 20)  /* a response is a few KiB (more with a responder chain) */
#define OCSP_SKEW_S   300         /* thisUpdate may lie this far ahead of our clock */
#define OCSP_WARN_S   (24 * 3600) /* a response this close to its nextUpdate is warned about */

struct staple {
	X509 *leaf; /* the certificate it is for (a reference) */
	unsigned char *der;
	size_t len;
	int64_t next_update;
	atomic_bool stale_logged; /* past nextUpdate: said once per context */
	char *path;
};
struct staples {
	size_t n;
	struct staple s[PROXY_MAX_CERTS];
};
static int staples_idx = -1;
static pthread_once_t staples_once = PTHREAD_ONCE_INIT;

static void staples_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
	struct staples *st = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	for (size_t i = 0; st && i < st->n; i++) {
		X509_free(st->s[i].leaf);
		free(st->s[i].der);
		free(st->s[i].path);
	}
	free(st);
}

static void staples_idx_init(void)
{
	staples_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, staples_free);
}

/* Seconds from now to t (negative: past), added to now: t as Unix seconds. */
static bool asn1_unix(const ASN1_TIME *t, int64_t now, int64_t *out)
{
	int days = 0, secs = 0;

	if (t == NULL || ASN1_TIME_diff(&days, &secs, NULL, t) != 1)
		return false;
	*out = now + (int64_t)days * 86400 + secs;
	return true;
}

static void unix_text(int64_t t, char *out, size_t n)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(out, n, "@%lld", (long long)t);
}

/* The issuer of leaf among chain (the certificates after it in the cert file). */
static X509 *chain_issuer(X509 *leaf, STACK_OF(X509) * chain)
{
	for (int i = 0; i < sk_X509_num(chain); i++)
		if (X509_check_issued(sk_X509_value(chain, i), leaf) == X509_V_OK)
			return sk_X509_value(chain, i);
	return NULL;
}

/* der (the bytes of the file at path) checked as a staple for leaf, whose issuer must be in
 * chain: see proxy_ocsp_check. */
static custos_err ocsp_verify(const char *path, const unsigned char *der, size_t len, X509 *leaf,
                              STACK_OF(X509) * chain, proxy_ocsp_info *info)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *r = len <= OCSP_FILE_MAX ? d2i_OCSP_RESPONSE(NULL, &p, (long)len) : NULL;
	OCSP_BASICRESP *bs = NULL;
	X509_STORE *store = NULL;
	X509 *issuer = chain_issuer(leaf, chain);
	int status = -1, reason = 0;
	ASN1_GENERALIZEDTIME *rev = NULL, *thisu = NULL, *nextu = NULL;
	int64_t now = (int64_t)time(NULL);
	custos_err e = CUSTOS_OK;
	char when[48];

	memset(info, 0, sizeof(*info));
	if (r == NULL || p != der + len) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: not a DER OCSP response (openssl ocsp -respout writes one)",
		            path);
		goto out;
	}
	int rs = OCSP_response_status(r);
	if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: the responder answered '%s', not a certificate status", path,
		            OCSP_response_status_str(rs));
		goto out;
	}
	if ((bs = OCSP_response_get1_basic(r)) == NULL) {
		e = err_set(CUSTOS_ERR_INVAL, "ocsp %s: not a basic OCSP response", path);
		goto out;
	}
	if (issuer == NULL) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: the certificate's issuer is not in its cert file: put the "
		            "issuing CA's certificate after the leaf (the chain as served)",
		            path);
		goto out;
	}
	/* The responder names the certificate by hashes of the issuer's name and key: SHA-1 is
	 * what responders and `openssl ocsp` use, SHA-256 is tried too. */
	const EVP_MD *mds[2] = { EVP_sha1(), EVP_sha256() };
	bool found = false;
	for (size_t i = 0; i < 2 && !found; i++) {
		OCSP_CERTID *id = OCSP_cert_to_id(mds[i], leaf, issuer);
		found = id != NULL &&
		        OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisu, &nextu) == 1;
		OCSP_CERTID_free(id);
	}
	if (!found) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: not a response for this certificate (no status for its "
		            "serial number from its issuer): a response for another certificate",
		            path);
		goto out;
	}
	/* Trusted: the issuer from the cert file (alone: PARTIAL_CHAIN, it may be an
	 * intermediate); the signer is the issuer or a responder it certified for OCSP signing. */
	store = X509_STORE_new();
	if (store == NULL || X509_STORE_add_cert(store, issuer) != 1 ||
	    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN) != 1) {
		e = tls_openssl_err(CUSTOS_ERR_CRYPTO, "ocsp verify store");
		goto out;
	}
	if (OCSP_basic_verify(bs, chain, store, 0) != 1) {
		char what[512];
		snprintf(what, sizeof(what),
		         "ocsp %s: its signature does not verify against the certificate's issuer "
		         "(or a responder the issuer authorised)",
		         path);
		e = tls_openssl_err(CUSTOS_ERR_CRYPTO, what);
		goto out;
	}
	if (status == V_OCSP_CERTSTATUS_REVOKED) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: the CERTIFICATE IS REVOKED (reason: %s): replace the "
		            "certificate; custos does not staple a revocation of itself",
		            path, reason >= 0 ? OCSP_crl_reason_str(reason) : "none given");
		goto out;
	}
	if (status != V_OCSP_CERTSTATUS_GOOD) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: the responder does not know the certificate (status unknown)",
		            path);
		goto out;
	}
	if (!asn1_unix(thisu, now, &info->this_update) ||
	    !asn1_unix(OCSP_resp_get0_produced_at(bs), now, &info->produced_at)) {
		e = err_set(CUSTOS_ERR_INVAL, "ocsp %s: unreadable thisUpdate or producedAt", path);
		goto out;
	}
	if (info->this_update > now + OCSP_SKEW_S) {
		unix_text(info->this_update, when, sizeof(when));
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: not valid yet (thisUpdate %s): is this host's clock right?",
		            path, when);
		goto out;
	}
	/* Without nextUpdate a client cannot tell how old is too old, nor can custos. */
	if (nextu == NULL || !asn1_unix(nextu, now, &info->next_update)) {
		e = err_set(CUSTOS_ERR_INVAL,
		            "ocsp %s: no nextUpdate in the response: custos staples responses "
		            "that say when they expire (openssl ocsp -ndays or -nmin)",
		            path);
		goto out;
	}
out:
	ERR_clear_error();
	X509_STORE_free(store);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(r);
	return e;
}

static custos_err ocsp_file_read(const char *path, buf *b)
{
	buf_init(b, OCSP_FILE_MAX);
	custos_err e = file_load(path, FILE_ANY, OCSP_FILE_MAX, b);
	if (e != CUSTOS_OK)
		buf_free(b);
	return e == CUSTOS_OK ? e : err_wrap(e, "ocsp");
}

custos_err proxy_ocsp_check(const char *cert, const char *ocsp, proxy_ocsp_info *out)
{
	buf cb, ob;
	custos_err e;

	if ((e = ocsp_file_read(ocsp, &ob)) != CUSTOS_OK)
		return e;
	buf_init(&cb, OCSP_FILE_MAX);
	if ((e = file_load(cert, FILE_ANY, OCSP_FILE_MAX, &cb)) != CUSTOS_OK) {
		buf_free(&cb);
		buf_free(&ob);
		return err_wrap(e, "cert");
	}
	BIO *bio = BIO_new_mem_buf(buf_ptr(&cb), (int)buf_used(&cb));
	X509 *leaf = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	STACK_OF(X509) *chain = sk_X509_new_null();
	X509 *x;
	while (bio && chain && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(chain, x) <= 0)
			X509_free(x);
	BIO_free(bio);
	buf_free(&cb);
	ERR_clear_error();
	if (leaf == NULL || chain == NULL)
		e = err_set(CUSTOS_ERR_INVAL, "cert %s: no PEM certificate in it", cert);
	else
		e = ocsp_verify(ocsp, buf_ptr(&ob), buf_used(&ob), leaf, chain, out);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	buf_free(&ob);
	return e;
}

/* The status callback, called only when the client asked (status_request) and once the
 * handshake's certificate is chosen: that certificate's response, while it is fresh. */
static int ocsp_status_cb(SSL *s, void *arg)
{
	struct staples *st = arg;
	X509 *x = SSL_get_certificate(s);

	for (size_t i = 0; x != NULL && i < st->n; i++) {
		struct staple *sp = &st->s[i];
		if (sp->leaf != x && X509_cmp(sp->leaf, x) != 0)
			continue;
		/* A stale staple is worse than none: a client that checks it fails the
		 * handshake, one without it may still ask or accept. */
		if ((int64_t)time(NULL) >= sp->next_update) {
			if (!atomic_exchange(&sp->stale_logged, true))
				log_warn("tls: OCSP response %s is past its nextUpdate: no longer "
				         "stapled (refresh the file and reload)",
				         sp->path);
			return SSL_TLSEXT_ERR_NOACK;
		}
		unsigned char *copy = OPENSSL_malloc(sp->len);
		if (copy == NULL)
			return SSL_TLSEXT_ERR_NOACK;
		memcpy(copy, sp->der, sp->len);
		if (SSL_set_tlsext_status_ocsp_resp(s, copy, (long)sp->len) != 1) {
			OPENSSL_free(copy);
			return SSL_TLSEXT_ERR_NOACK;
		}
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

/* The response at path for the certificate just loaded into ctx (its leaf and chain), kept in
 * the context's staples (made and set up on the first). */
static custos_err ocsp_load(SSL_CTX *ctx, const char *listener, const char *cert, const char *path)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	STACK_OF(X509) *chain = NULL;
	proxy_ocsp_info info;
	custos_err e;
	buf b;

	pthread_once(&staples_once, staples_idx_init);
	ENSURE(staples_idx >= 0, CUSTOS_ERR_CRYPTO, "tls: no ex_data index for OCSP");
	struct staples *st = SSL_CTX_get_ex_data(ctx, staples_idx);
	if (st == NULL) {
		st = calloc(1, sizeof(*st));
		ENSURE(st, CUSTOS_ERR_NOMEM, "tls: OCSP staples");
		if (SSL_CTX_set_ex_data(ctx, staples_idx, st) != 1) {
			free(st);
			return tls_openssl_err(CUSTOS_ERR_CRYPTO, "tls: OCSP ex_data");
		}
		if (SSL_CTX_set_tlsext_status_cb(ctx, ocsp_status_cb) != 1 ||
		    SSL_CTX_set_tlsext_status_arg(ctx, st) != 1)
			return tls_openssl_err(CUSTOS_ERR_CRYPTO, "tls: OCSP status callback");
	}
	ENSURE(st->n < PROXY_MAX_CERTS && leaf != NULL, CUSTOS_ERR_INVAL,
	       "tls: ocsp %s: no certificate loaded for it", path);
	if (SSL_CTX_get0_chain_certs(ctx, &chain) != 1)
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, cert);
	if ((e = ocsp_file_read(path, &b)) != CUSTOS_OK)
		return e;
	if ((e = ocsp_verify(path, buf_ptr(&b), buf_used(&b), leaf, chain, &info)) != CUSTOS_OK) {
		buf_free(&b);
		return e;
	}
	struct staple *sp = &st->s[st->n];
	sp->der = malloc(buf_used(&b));
	sp->path = strdup(path);
	if (sp->der == NULL || sp->path == NULL) {
		free(sp->der);
		free(sp->path);
		sp->der = NULL, sp->path = NULL;
		buf_free(&b);
		return err_set(CUSTOS_ERR_NOMEM, "tls: ocsp %s", path);
	}
	memcpy(sp->der, buf_ptr(&b), buf_used(&b));
	sp->len = buf_used(&b);
	buf_free(&b);
	X509_up_ref(leaf);
	sp->leaf = leaf;
	sp->next_update = info.next_update;
	atomic_init(&sp->stale_logged, false);
	st->n++;

	char produced[48], next[48];
	int64_t left = info.next_update - (int64_t)time(NULL);
	unix_text(info.produced_at, produced, sizeof(produced));
	unix_text(info.next_update, next, sizeof(next));
	if (left <= 0) {
		atomic_store(&sp->stale_logged, true);
		log_warn("tls: listener %s: OCSP response %s for %s is past its nextUpdate (%s): "
		         "loaded but NOT stapled; is the job that refreshes it running?",
		         listener, path, cert, next);
	} else if (left < OCSP_WARN_S) {
		log_warn("tls: listener %s: OCSP response %s for %s (status good, produced %s) "
		         "expires in %lld min (nextUpdate %s): refresh it and reload before then",
		         listener, path, cert, produced, (long long)(left / 60), next);
	} else {
		log_info("tls: listener %s: OCSP response %s for %s loaded (status good, produced "
		         "%s, nextUpdate %s)",
		         listener, path, cert, produced, next);
	}
	return CUSTOS_OK;
}

/* The session id context: SHA-256 over what decides who may connect here (the listener, the
 * client_auth mode, the client CA bundle's bytes, with client_crl's folded in: crl_bind). OpenSSL resumes a session (ticket, TLS 1.2
 * or 1.3) only on a context with the context it was made under and otherwise makes a full
 * handshake: a session made without a certificate where one was optional, or verified against
 * another CA, cannot be carried to a listener (or to a reloaded configuration) that asks for
 * more, while a reload that changes none of these keeps resumption working. */
static custos_err set_session_context(SSL_CTX *ctx, const char *listener, const proxy_tls_opts *o,
                                      const uint8_t ca_digest[32])
{
	uint8_t sid[SHA256_DIGEST_LENGTH];
	uint8_t mode = (uint8_t)o->client_auth;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	          EVP_DigestUpdate(md, SESSION_ID_CTX_TAG, sizeof(SESSION_ID_CTX_TAG)) == 1 &&
	          EVP_DigestUpdate(md, listener, strlen(listener) + 1) == 1 &&
	          EVP_DigestUpdate(md, &mode, 1) == 1 &&
	          (ca_digest == NULL || EVP_DigestUpdate(md, ca_digest, 32) == 1) &&
	          EVP_DigestFinal_ex(md, sid, NULL) == 1;
	EVP_MD_CTX_free(md);
	static_assert(sizeof(sid) <= SSL_MAX_SID_CTX_LENGTH, "session id context too long");
	if (!ok || SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid)) != 1)
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, "tls: session id context");
	return CUSTOS_OK;
}

/* OpenSSL keeps one certificate per key type and a second one silently replaces the first:
 * refuse two of one type, naming both files. types[] holds the types of files[0..i). */
static custos_err cert_type_unique(SSL_CTX *ctx, const proxy_tls_opts *o, size_t i, int *types)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	EVP_PKEY *pk = x ? X509_get0_pubkey(x) : NULL;

	if (pk == NULL)
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, o->cert_file[i]);
	int t = types[i] = EVP_PKEY_get_base_id(pk);
	for (size_t j = 0; j < i; j++)
		if (types[j] == t)
			return err_set(CUSTOS_ERR_INVAL,
			               "tls: %s and %s are both %s certificates: a listener takes "
			               "one certificate per key type (e.g. one ECDSA and one RSA)",
			               o->cert_file[j], o->cert_file[i],
			               t == EVP_PKEY_EC        ? "ECDSA"
			               : t == EVP_PKEY_RSA     ? "RSA"
			               : t == EVP_PKEY_RSA_PSS ? "RSA-PSS"
			                                       : OBJ_nid2sn(t));
	return CUSTOS_OK;
}

/* Loads client_crl and folds its digest into the client CA's: the session id context then
 * changes with the CRL's bytes, so a session made before a reload that brought a new CRL does
 * not resume after it (the client gets a full handshake, where its certificate is checked
 * against the new CRL). */
static custos_err crl_bind(SSL_CTX *ctx, const char *path, uint8_t ca_digest[32])
{
	uint8_t crl_digest[32], both[64];
	custos_err e = tls_crl_load(ctx, path, "client_crl", crl_digest);

	if (e != CUSTOS_OK)
		return e;
	memcpy(both, ca_digest, 32);
	memcpy(both + 32, crl_digest, 32);
	if (EVP_Digest(both, sizeof(both), ca_digest, NULL, EVP_sha256(), NULL) != 1)
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, "client_crl digest");
	return CUSTOS_OK;
}

custos_err tls_server_ctx(const char *listener, const proxy_tls_opts *o, SSL_CTX **out)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	custos_err e = CUSTOS_OK;

	*out = NULL;
	if (ctx == NULL)
		return tls_openssl_err(CUSTOS_ERR_NOMEM, "SSL_CTX_new");
	/* The ring's period is not set here: a context made for a reload that is then refused
	 * must change nothing in force (tls_ticket_rotation_set, once the state is). */
	uint64_t rotate_ns =
	        o->ticket_rotate_ns ? o->ticket_rotate_ns : 12ull * 3600 * 1000000000ull;
	SSL_CTX_set_min_proto_version(ctx, o->tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                              SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, o->ciphers ? o->ciphers : MOZ_INTERMEDIATE_CIPHERS) != 1) {
		e = tls_openssl_err(CUSTOS_ERR_INVAL, "tls ciphers");
		goto fail;
	}
	if (o->ciphersuites && SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1) {
		e = tls_openssl_err(CUSTOS_ERR_INVAL, "tls ciphersuites");
		goto fail;
	}
	if (SSL_CTX_set1_groups_list(ctx, MOZ_GROUPS) != 1) {
		e = tls_openssl_err(CUSTOS_ERR_INVAL, "tls groups");
		goto fail;
	}
	SSL_CTX_set_dh_auto(ctx, 1);
	if (o->ncerts == 0) {
		e = err_set(CUSTOS_ERR_INVAL, "tls: no certificate configured");
		goto fail;
	}
	int types[PROXY_MAX_CERTS];
	for (size_t i = 0; i < o->ncerts && i < PROXY_MAX_CERTS; i++) {
		if ((e = load_cert_chain(ctx, o->cert_file[i])) != CUSTOS_OK)
			goto fail;
		if ((e = cert_type_unique(ctx, o, i, types)) != CUSTOS_OK)
			goto fail;
		if ((e = load_key(ctx, o->key_file[i])) != CUSTOS_OK)
			goto fail;
		if (SSL_CTX_check_private_key(ctx) != 1) {
			e = tls_openssl_err(CUSTOS_ERR_CRYPTO, "certificate and key do not match");
			goto fail;
		}
		if (o->ocsp_file[i] != NULL &&
		    (e = ocsp_load(ctx, listener, o->cert_file[i], o->ocsp_file[i])) != CUSTOS_OK)
			goto fail;
	}
	/* One read() per batch of records instead of one for each record header and one for its
	 * body; the sockets layer checks SSL_has_pending, so buffered records are not missed
	 * under edge-triggered epoll. */
	SSL_CTX_set_read_ahead(ctx, 1);
	if ((e = alpn_setup(ctx, o)) != CUSTOS_OK)
		goto fail;
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets only: no shared cache */
	/* A session (and the ticket's lifetime hint) lasts as long as its key is accepted. */
	uint64_t life_s = 2 * (rotate_ns / 1000000000ull);
	SSL_CTX_set_timeout(ctx, (long)(life_s == 0                      ? 1
	                                : life_s > TICKET_LIFETIME_MAX_S ? TICKET_LIFETIME_MAX_S
	                                                                 : life_s));
	SSL_CTX_set_num_tickets(ctx, o->no_tickets ? 0 : 1);
	if (o->no_tickets)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	else if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1 ||
	         SSL_CTX_set_session_ticket_cb(ctx, NULL, ticket_decrypted_cb, NULL) != 1) {
		e = tls_openssl_err(CUSTOS_ERR_CRYPTO, "ticket callback");
		goto fail;
	}
	uint8_t ca_digest[32];
	bool have_ca = false;
	if (o->client_crl && o->client_auth == PROXY_CLIENT_CERT_NONE) {
		e = err_set(CUSTOS_ERR_INVAL, "tls: client_crl needs client certificates");
		goto fail;
	}
	if (o->client_auth != PROXY_CLIENT_CERT_NONE) {
		if (o->client_ca == NULL) {
			e = err_set(CUSTOS_ERR_INVAL, "tls: client certificates need client_ca");
			goto fail;
		}
		if ((e = load_client_ca(ctx, o->client_ca, ca_digest)) != CUSTOS_OK)
			goto fail;
		if (o->client_crl && (e = crl_bind(ctx, o->client_crl, ca_digest)) != CUSTOS_OK)
			goto fail;
		have_ca = true;
		SSL_CTX_set_verify(ctx,
		                   SSL_VERIFY_PEER | (o->client_auth == PROXY_CLIENT_CERT_REQUIRED
		                                              ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
		                                              : 0),
		                   NULL);
		SSL_CTX_set_verify_depth(ctx, 8);
	}
	if ((e = set_session_context(ctx, listener, o, have_ca ? ca_digest : NULL)) != CUSTOS_OK)
		goto fail;
	*out = ctx;
	return CUSTOS_OK;
fail:
	SSL_CTX_free(ctx);
	return e;
}

/* Client sessions (upstream TLS resumption), kept as HAProxy keeps them: per worker thread, for
 * each upstream's context, a slot holding the newest sessions that upstream gave us. A slot is
 * only ever touched by its worker (the SSL_new, the new-session callback, the handshake's end
 * all run on the worker that owns the connection), so no lock is taken; one slot shared by
 * the workers would need one on every connect and every ticket. The slots live in the
 * context's ex_data: a context is one upstream of one configuration generation (a reload
 * starts with empty slots, as the CA or the name may have changed), and every SSL holds a
 * reference to its context, so a ticket that arrives on a connection outliving its generation
 * still finds its slot. The slot's name is fixed (the upstream's tls_name or host), so a
 * session is only offered to the upstream that verified it.
 *
 * A slot holds up to CLIENT_SESSIONS sessions, newest on top, and not just one: a TLS 1.3
 * ticket is used once (RFC 8446 C.4), so a worker that opens several connections to one
 * upstream at a time needs a ticket for each. Each resumed connection brings the next ticket
 * and a full handshake usually brings one or two (OpenSSL servers send two), so the stack
 * fills up to the worker's concurrency to that upstream, within the bound (with 8, a worker
 * serving 50 clients through an upstream that closes after each response resumed about a third
 * of its handshakes; with 64, all but a few). A slot is 64 pointers; the sessions in it are
 * only as many as that concurrency made. */
#define CLIENT_SESSIONS 64

struct sess_slot {
	unsigned n;
	SSL_SESSION *s[CLIENT_SESSIONS]; /* [0, n): oldest to newest */
};
struct client_sessions {
	unsigned n;
	struct sess_slot slot[]; /* [n], one per worker */
};
static int csess_ctx_idx = -1, csess_ssl_idx = -1;
static pthread_once_t csess_once = PTHREAD_ONCE_INIT;

static void slot_clear(struct sess_slot *sl)
{
	while (sl->n > 0)
		SSL_SESSION_free(sl->s[--sl->n]);
}

static void csess_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct client_sessions *cs = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	for (unsigned i = 0; cs && i < cs->n; i++)
		slot_clear(&cs->slot[i]);
	free(cs);
}

static void csess_idx_init(void)
{
	csess_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, csess_free);
	csess_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* The slot of the worker driving ssl (NULL: the connection takes no part in resumption). */
static struct sess_slot *csess_slot(SSL *ssl)
{
	return csess_ssl_idx < 0 ? NULL : SSL_get_ex_data(ssl, csess_ssl_idx);
}

/* OpenSSL's new-session callback: a TLS 1.2 session at the handshake's end, or each TLS 1.3
 * ticket (NewSessionTicket, after the handshake; a server may send several). It goes on top of
 * the slot (the oldest one leaves a full slot); returning 1 keeps the reference OpenSSL gives
 * us. */
static int csess_new_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct sess_slot *sl = csess_slot(ssl);

	/* The handshake failed verification (VERIFY_PEER aborts it, this is a second lock) or
	 * the session cannot resume (no ticket, no id): nothing to keep. */
	if (sl == NULL || SSL_get_verify_result(ssl) != X509_V_OK ||
	    !SSL_SESSION_is_resumable(sess))
		return 0;
	/* A TLS 1.2 session resumes again and again: the newest one is all a slot needs. */
	if (SSL_SESSION_get_protocol_version(sess) < TLS1_3_VERSION)
		slot_clear(sl);
	if (sl->n == CLIENT_SESSIONS) {
		SSL_SESSION_free(sl->s[0]);
		memmove(&sl->s[0], &sl->s[1], (CLIENT_SESSIONS - 1) * sizeof(sl->s[0]));
		sl->n--;
	}
	sl->s[sl->n++] = sess;
	return 1;
}

void tls_client_hostflags(SSL_CTX *ctx)
{
	X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx),
	                                X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
}

void tls_sni_set(SSL *ssl, const char *name)
{
	unsigned char a[16];

	if (inet_pton(AF_INET, name, a) != 1 && inet_pton(AF_INET6, name, a) != 1)
		SSL_set_tlsext_host_name(ssl, name);
}

const char *tls_upstream_name(const char *address, char *out, size_t n)
{
	const char *start = address, *end;

	if (address[0] == '[') {
		start = address + 1;
		end = strchr(start, ']');
	} else {
		end = strrchr(address, ':');
	}
	if (end == NULL)
		end = address + strlen(address);
	if (end <= start ||
	    span_copy_cstr(span_of(start, (size_t)(end - start)), out, n) != CUSTOS_OK) {
		err_clear();
		return NULL;
	}
	return out;
}

custos_err tls_client_ctx(const proxy_upstream_opts *u, unsigned nslots, SSL_CTX **out)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	*out = NULL;
	if (ctx == NULL)
		return tls_openssl_err(CUSTOS_ERR_NOMEM, "SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	tls_client_hostflags(ctx);
	/* As the egress sources' contexts: an upstream that asks to renegotiate (TLS 1.2
	 * HelloRequest) is refused rather than followed into a second handshake. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	if (u->tls_ca) {
		custos_err ca_e = tls_ca_file_load(ctx, u->tls_ca, "ca_file");
		if (ca_e != CUSTOS_OK) {
			SSL_CTX_free(ctx);
			return ca_e;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		SSL_CTX_free(ctx);
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, "default CA store");
	}
	custos_err crl_e = u->tls_crl ? tls_crl_load(ctx, u->tls_crl, "crl_file", NULL) : CUSTOS_OK;
	if (crl_e != CUSTOS_OK) {
		SSL_CTX_free(ctx);
		return crl_e;
	}
	if (u->tls_cert != NULL) {
		custos_err ce = tls_client_cert_load(ctx, u->tls_cert, u->tls_key);
		if (ce != CUSTOS_OK) {
			SSL_CTX_free(ctx);
			return ce;
		}
	}
	static const unsigned char alpn[] = "\x08http/1.1";
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	if (nslots > 0) {
		pthread_once(&csess_once, csess_idx_init);
		struct client_sessions *cs =
		        csess_ctx_idx >= 0 && csess_ssl_idx >= 0
		                ? calloc(1, sizeof(*cs) + (size_t)nslots * sizeof(cs->slot[0]))
		                : NULL;
		if (cs == NULL) {
			SSL_CTX_free(ctx);
			return err_set(CUSTOS_ERR_NOMEM, "tls: client session slots");
		}
		cs->n = nslots;
		if (SSL_CTX_set_ex_data(ctx, csess_ctx_idx, cs) != 1) {
			free(cs);
			SSL_CTX_free(ctx);
			return tls_openssl_err(CUSTOS_ERR_CRYPTO, "tls: client session ex_data");
		}
		/* Our slots, not OpenSSL's internal cache (a locked hash no one would look in). */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, csess_new_cb);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	*out = ctx;
	return CUSTOS_OK;
}

/* Whether sess may be offered at now: resumable (OpenSSL marks a session not so after a fatal
 * alert on it), within its lifetime (for TLS 1.3, the ticket's), and its peer's certificate,
 * verified at the full handshake the chain of resumptions started from, not expired since: a
 * resumed handshake verifies no certificate, so this is what bounds a chain of tickets that an
 * upstream keeps renewing (HAProxy and nginx do not bound it). */
static bool sess_usable(SSL_SESSION *sess, time_t now)
{
	if (!SSL_SESSION_is_resumable(sess) ||
	    (uint64_t)SSL_SESSION_get_time(sess) + (uint64_t)SSL_SESSION_get_timeout(sess) <=
	            (uint64_t)now)
		return false;
	X509 *peer = SSL_SESSION_get0_peer(sess);
	return peer == NULL || X509_cmp_current_time(X509_get0_notAfter(peer)) > 0;
}

void tls_client_session_offer(SSL *ssl, unsigned slot_no)
{
	struct client_sessions *cs =
	        csess_ctx_idx < 0 ? NULL : SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), csess_ctx_idx);

	if (cs == NULL || slot_no >= cs->n ||
	    SSL_set_ex_data(ssl, csess_ssl_idx, &cs->slot[slot_no]) != 1)
		return;
	struct sess_slot *sl = &cs->slot[slot_no];
	time_t now = time(NULL);
	while (sl->n > 0) {
		SSL_SESSION *sess = sl->s[sl->n - 1];
		if (!sess_usable(sess, now)) { /* dropped, the next one tried */
			SSL_SESSION_free(sess);
			sl->n--;
			continue;
		}
		if (SSL_set_session(ssl, sess) != 1) { /* takes its own reference */
			ERR_clear_error();
			return;
		}
		/* A TLS 1.3 ticket is used once (RFC 8446 C.4: reuse lets an observer link the
		 * connections); the resumed connection brings a fresh one. A TLS 1.2 session (id
		 * or ticket) may resume again and stays until a newer one replaces it. */
		if (SSL_SESSION_get_protocol_version(sess) >= TLS1_3_VERSION) {
			SSL_SESSION_free(sess);
			sl->n--;
		}
		return;
	}
}

void tls_client_session_failed(SSL *ssl)
{
	struct sess_slot *sl = csess_slot(ssl);

	if (sl == NULL)
		return;
	slot_clear(sl); /* the upstream may have changed (keys, certificate): start afresh */
	SSL_set_ex_data(ssl, csess_ssl_idx, NULL); /* a late ticket on it is not kept */
}

/* Egress (egress_conn.c): a source's client context is used by every connection thread, and
 * the origins behind one source differ by host and port, so its sessions go into one cache
 * per context under a lock (taken once per new origin connection, once per session received
 * and once per failed handshake, never across I/O; sessions are freed after it is released),
 * keyed by the origin; a full cache gives up its least recently stored origin.
 *
 * Each origin holds a stack of up to ORIGIN_STACK sessions, newest on top, with the ingress
 * slots' rules (CLIENT_SESSIONS above): a TLS 1.3 ticket is used once, so of several new
 * connections at once to one origin each needs its own; a full handshake usually brings two
 * (OpenSSL servers send two) and a resumed one the next, so the stack fills up to the
 * concurrency towards that origin. 16 and not the ingress' 64: the egress stacks are shared
 * by all connection threads of a source rather than one per worker, the parallel calls of a
 * sandbox to one data source are a handful (max_connections_per_sandbox, 64 by default, caps
 * them for all origins together), and a source holds up to ORIGIN_SESSIONS origins: at most
 * 32 x 16 = 512 sessions per source (each a ticket and a reference to its peer's chain).
 * Connections beyond 16 at once to one origin do full handshakes. */
#define ORIGIN_SESSIONS 32
#define ORIGIN_STACK    16
#define ORIGIN_KEY_MAX  280

struct origin_entry {
	char key[ORIGIN_KEY_MAX];
	unsigned n;                   /* 0: the entry is free */
	SSL_SESSION *s[ORIGIN_STACK]; /* [0, n): oldest to newest */
	uint64_t stamp; /* when last stored (a counter): the smallest is evicted first */
};
struct origin_cache {
	pthread_mutex_t mu;
	uint64_t clock;
	struct origin_entry e[ORIGIN_SESSIONS];
};
/* What a connection's SSL remembers: its cache and its origin's key. */
struct origin_ref {
	struct origin_cache *c;
	char key[ORIGIN_KEY_MAX];
};
static int ocache_ctx_idx = -1, oref_ssl_idx = -1;
static pthread_once_t ocache_once = PTHREAD_ONCE_INIT;

/* Moves e's sessions to out (ORIGIN_STACK of room) and empties e: freed by the caller after
 * the lock. Returns how many. */
static unsigned oentry_take_all(struct origin_entry *e, SSL_SESSION **out)
{
	unsigned n = e->n;
	memcpy(out, e->s, n * sizeof(e->s[0]));
	e->n = 0;
	return n;
}

static void sessions_free(SSL_SESSION **s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		SSL_SESSION_free(s[i]);
}

static void ocache_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct origin_cache *c = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (c == NULL)
		return;
	for (unsigned i = 0; i < ORIGIN_SESSIONS; i++)
		sessions_free(c->e[i].s, c->e[i].n);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static void oref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static void ocache_idx_init(void)
{
	ocache_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ocache_free);
	oref_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, oref_free);
}

/* The entry for key (c->mu held); NULL when there is none. */
static struct origin_entry *ocache_find(struct origin_cache *c, const char *key)
{
	for (unsigned i = 0; i < ORIGIN_SESSIONS; i++)
		if (c->e[i].n > 0 && strcmp(c->e[i].key, key) == 0)
			return &c->e[i];
	return NULL;
}

/* OpenSSL's new-session callback on an origin connection: the session goes on top of its
 * origin's stack (a TLS 1.2 one replaces the stack: it resumes again and again, the newest is
 * all it needs; a full stack gives up its oldest). Returning 1 keeps OpenSSL's reference. */
static int ocache_new_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct origin_ref *r = oref_ssl_idx < 0 ? NULL : SSL_get_ex_data(ssl, oref_ssl_idx);
	SSL_SESSION *drop[ORIGIN_STACK];
	unsigned ndrop = 0;

	if (r == NULL || SSL_get_verify_result(ssl) != X509_V_OK || !SSL_SESSION_is_resumable(sess))
		return 0;
	struct origin_cache *c = r->c;
	pthread_mutex_lock(&c->mu);
	struct origin_entry *e = ocache_find(c, r->key);
	if (e == NULL) {
		e = &c->e[0];
		for (unsigned i = 1; i < ORIGIN_SESSIONS && e->n > 0; i++)
			if (c->e[i].n == 0 || c->e[i].stamp < e->stamp)
				e = &c->e[i];
		ndrop = oentry_take_all(e, drop); /* the evicted origin's */
		snprintf(e->key, sizeof(e->key), "%s", r->key);
	} else if (SSL_SESSION_get_protocol_version(sess) < TLS1_3_VERSION) {
		ndrop = oentry_take_all(e, drop);
	} else if (e->n == ORIGIN_STACK) {
		drop[ndrop++] = e->s[0];
		memmove(&e->s[0], &e->s[1], (ORIGIN_STACK - 1) * sizeof(e->s[0]));
		e->n--;
	}
	e->s[e->n++] = sess;
	e->stamp = ++c->clock;
	pthread_mutex_unlock(&c->mu);
	sessions_free(drop, ndrop);
	return 1;
}

custos_err tls_origin_cache_attach(SSL_CTX *ctx)
{
	pthread_once(&ocache_once, ocache_idx_init);
	ENSURE(ocache_ctx_idx >= 0 && oref_ssl_idx >= 0, CUSTOS_ERR_CRYPTO,
	       "tls: no ex_data index for the origin session cache");
	struct origin_cache *c = calloc(1, sizeof(*c));
	ENSURE(c, CUSTOS_ERR_NOMEM, "tls: origin session cache");
	pthread_mutex_init(&c->mu, NULL);
	if (SSL_CTX_set_ex_data(ctx, ocache_ctx_idx, c) != 1) {
		pthread_mutex_destroy(&c->mu);
		free(c);
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, "tls: origin session cache ex_data");
	}
	SSL_CTX_set_session_cache_mode(ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, ocache_new_cb);
	return CUSTOS_OK;
}

void tls_origin_session_offer(SSL *ssl, const char *key)
{
	struct origin_cache *c =
	        ocache_ctx_idx < 0 ? NULL
	                           : SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ocache_ctx_idx);

	if (c == NULL || strlen(key) >= ORIGIN_KEY_MAX)
		return;
	struct origin_ref *r = malloc(sizeof(*r));
	if (r == NULL)
		return;
	r->c = c;
	snprintf(r->key, sizeof(r->key), "%s", key);
	if (SSL_set_ex_data(ssl, oref_ssl_idx, r) != 1) {
		free(r);
		return;
	}
	/* The newest usable session: those on top that expired or cannot resume are dropped on
	 * the way (sess_usable: lifetime, and the peer's certificate still valid). */
	SSL_SESSION *take = NULL, *drop[ORIGIN_STACK];
	unsigned ndrop = 0;
	time_t now = time(NULL);
	pthread_mutex_lock(&c->mu);
	struct origin_entry *e = ocache_find(c, key);
	while (e != NULL && e->n > 0 && take == NULL) {
		SSL_SESSION *s = e->s[e->n - 1];
		if (!sess_usable(s, now)) {
			drop[ndrop++] = s;
			e->n--;
		} else if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
			take = s; /* used once: it leaves the stack with our reference */
			e->n--;
		} else {
			take = s; /* a TLS 1.2 session stays */
			SSL_SESSION_up_ref(s);
		}
	}
	pthread_mutex_unlock(&c->mu);
	sessions_free(drop, ndrop);
	if (take != NULL) {
		if (SSL_set_session(ssl, take) != 1)
			ERR_clear_error();
		SSL_SESSION_free(take);
	}
}

void tls_origin_session_failed(SSL *ssl)
{
	struct origin_ref *r = oref_ssl_idx < 0 ? NULL : SSL_get_ex_data(ssl, oref_ssl_idx);

	if (r == NULL)
		return;
	/* As on the ingress side: the origin may have changed (keys, certificate), so its whole
	 * stack goes, the session this handshake offered with it. */
	SSL_SESSION *drop[ORIGIN_STACK];
	unsigned ndrop = 0;
	pthread_mutex_lock(&r->c->mu);
	struct origin_entry *e = ocache_find(r->c, r->key);
	if (e != NULL)
		ndrop = oentry_take_all(e, drop);
	pthread_mutex_unlock(&r->c->mu);
	sessions_free(drop, ndrop);
	SSL_set_ex_data(ssl, oref_ssl_idx, NULL); /* a late session on it is not kept */
	free(r);
}
