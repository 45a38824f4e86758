/*
 * Ed25519 keys for signed checkpoints (OpenSSL EVP): generation, mode-checked loading,
 * signing over the chain head and verification.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "audit_int.h"

#define AUDIT_KEY_FILE_MAX 16384

custos_err audit_keygen(const char *dir)
{
	char kpath[4096], ppath[4096];
	EVP_PKEY *k = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	BIO *kb = NULL, *pb = NULL;
	custos_err e = CUSTOS_OK;
	struct stat st;

	ENSURE((size_t)snprintf(kpath, sizeof(kpath), "%s/audit.key", dir) < sizeof(kpath) &&
	               (size_t)snprintf(ppath, sizeof(ppath), "%s/audit.pub", dir) < sizeof(ppath),
	       CUSTOS_ERR_LIMIT, "path too long: %s", dir);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return err_sys("%s: mkdir", dir);
	ENSURE(stat(kpath, &st) == -1, CUSTOS_ERR_EXISTS, "%s exists; refusing to overwrite a key",
	       kpath);
	ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &k) != 1) {
		e = err_set(CUSTOS_ERR_CRYPTO, "Ed25519 key generation failed");
		goto out;
	}
	kb = BIO_new(BIO_s_mem());
	pb = BIO_new(BIO_s_mem());
	if (kb == NULL || pb == NULL ||
	    PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_PUBKEY(pb, k) != 1) {
		e = err_set(CUSTOS_ERR_CRYPTO, "PEM encoding failed");
		goto out;
	}
	char *kp, *pp;
	long kn = BIO_get_mem_data(kb, &kp), pn = BIO_get_mem_data(pb, &pp);
	e = file_write_atomic(kpath, kp, (size_t)kn, 0600);
	if (e == CUSTOS_OK)
		e = file_write_atomic(ppath, pp, (size_t)pn, 0644);
	OPENSSL_cleanse(kp, (size_t)kn);
out:
	BIO_free(kb);
	BIO_free(pb);
	EVP_PKEY_free(k);
	EVP_PKEY_CTX_free(ctx);
	return e;
}

static custos_err load_key(const char *path, bool private_key, EVP_PKEY **out)
{
	buf b;
	custos_err e;
	BIO *bio = NULL;
	EVP_PKEY *k = NULL;

	buf_init(&b, AUDIT_KEY_FILE_MAX);
	e = file_load(path, private_key ? FILE_SECRET : FILE_ANY, AUDIT_KEY_FILE_MAX, &b);
	if (e != CUSTOS_OK)
		goto out;
	bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	if (bio == NULL) {
		e = err_set(CUSTOS_ERR_NOMEM, "BIO");
		goto out;
	}
	k = private_key ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
	                : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (k == NULL) {
		e = err_set(CUSTOS_ERR_CRYPTO, "%s: not a PEM %s key", path,
		            private_key ? "private" : "public");
		goto out;
	}
	if (EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(k);
		e = err_set(CUSTOS_ERR_CRYPTO, "%s: not an Ed25519 key", path);
		goto out;
	}
	*out = k;
out:
	BIO_free(bio);
	buf_free_secret(&b);
	return e;
}

custos_err audit_key_load_private(const char *path, EVP_PKEY **out)
{
	return load_key(path, true, out);
}

custos_err audit_key_load_public(const char *path, EVP_PKEY **out)
{
	return load_key(path, false, out);
}

custos_err audit_keyring_load(const char *path, EVP_PKEY **keys, size_t max, size_t *n)
{
	buf b;
	custos_err e;
	BIO *bio = NULL;
	size_t got = 0;

	buf_init(&b, AUDIT_KEY_FILE_MAX);
	e = file_load(path, FILE_ANY, AUDIT_KEY_FILE_MAX, &b);
	if (e != CUSTOS_OK)
		goto out;
	bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	if (bio == NULL) {
		e = err_set(CUSTOS_ERR_NOMEM, "BIO");
		goto out;
	}
	for (;;) {
		EVP_PKEY *k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
		if (k == NULL)
			break; /* no further PEM block (or a bad one: checked below) */
		if (EVP_PKEY_id(k) != EVP_PKEY_ED25519 || got == max) {
			EVP_PKEY_free(k);
			e = got == max
			            ? err_set(CUSTOS_ERR_LIMIT, "%s: more than %zu keys", path, max)
			            : err_set(CUSTOS_ERR_CRYPTO, "%s: key %zu is not Ed25519", path,
			                      got + 1);
			goto out;
		}
		keys[got++] = k;
	}
	/* What stopped the loop must be the end of the file, not a damaged key: every PEM
	 * block must have become a key. */
	ERR_clear_error();
	size_t blocks = 0;
	span rest = buf_span(&b);
	for (const char *p; (p = memmem(rest.ptr, rest.len, "-----BEGIN ", 11)) != NULL;) {
		blocks++;
		rest = span_of(p + 11, rest.len - (size_t)(p + 11 - rest.ptr));
	}
	if (got == 0 || got != blocks) {
		e = err_set(CUSTOS_ERR_CRYPTO,
		            "%s: not a PEM public key (or a damaged one after %zu)", path, got);
		goto out;
	}
	*n = got;
	got = 0;
out:
	while (got > 0)
		EVP_PKEY_free(keys[--got]);
	BIO_free(bio);
	buf_free(&b);
	return e;
}

custos_err audit_key_id(EVP_PKEY *k, char out[17])
{
	uint8_t raw[32];
	size_t n = sizeof(raw);
	char hex[AUDIT_HASH_HEX + 1];

	if (EVP_PKEY_get_raw_public_key(k, raw, &n) != 1)
		return err_set(CUSTOS_ERR_CRYPTO, "cannot read the public key");
	GUARD(audit_sha256_hex(raw, n, hex));
	memcpy(out, hex, 16);
	out[16] = '\0';
	return CUSTOS_OK;
}

/* Signature format 1 (old logs, verify only): the chain head alone. */
static int ckpt_message_v1(uint64_t seq, const char *head, char *m, size_t mn)
{
	return snprintf(m, mn, AUDIT_CKPT_DOMAIN_V1 " %llu %.64s", (unsigned long long)seq, head);
}

static custos_err ed25519_sign(EVP_PKEY *k, const void *m, size_t mn, char out[129])
{
	uint8_t sig[64];
	size_t sn = sizeof(sig);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	custos_err e = CUSTOS_OK;

	if (c == NULL || EVP_DigestSignInit(c, NULL, NULL, NULL, k) != 1 ||
	    EVP_DigestSign(c, sig, &sn, m, mn) != 1 || sn != 64)
		e = err_set(CUSTOS_ERR_CRYPTO, "Ed25519 signing failed");
	else
		num_hex(sig, 64, out);
	EVP_MD_CTX_free(c);
	return e;
}

static custos_err ed25519_verify(EVP_PKEY *k, const void *m, size_t mn, span sighex)
{
	uint8_t sig[64];
	EVP_MD_CTX *c;
	custos_err e = CUSTOS_OK;

	ENSURE(sighex.len == 128 && num_parse_hex(sighex, sig, 64) == CUSTOS_OK, CUSTOS_ERR_PARSE,
	       "malformed signature");
	c = EVP_MD_CTX_new();
	if (c == NULL || EVP_DigestVerifyInit(c, NULL, NULL, NULL, k) != 1 ||
	    EVP_DigestVerify(c, sig, 64, m, mn) != 1)
		e = err_set(CUSTOS_ERR_CRYPTO, "signature does not verify");
	EVP_MD_CTX_free(c);
	return e;
}

custos_err audit_ckpt_sign_v1(EVP_PKEY *k, uint64_t seq, const char *head, char out[129])
{
	char m[160];
	int mn = ckpt_message_v1(seq, head, m, sizeof(m));
	return ed25519_sign(k, m, (size_t)mn, out);
}

custos_err audit_ckpt_verify_v1(EVP_PKEY *k, uint64_t seq, const char *head, span sighex)
{
	char m[160];
	int mn = ckpt_message_v1(seq, head, m, sizeof(m));
	return ed25519_verify(k, m, (size_t)mn, sighex);
}

/* Format 2: the domain, a newline, then the record's own bytes up to its sig member. The
 * domain differs from format 1's, so neither message can pass for the other. */
static custos_err ckpt_message(span signed_part, buf *m)
{
	GUARD(buf_append_cstr(m, AUDIT_CKPT_DOMAIN "\n"));
	return buf_append_span(m, signed_part);
}

custos_err audit_ckpt_sign(EVP_PKEY *k, span signed_part, char out[129])
{
	buf m;
	custos_err e;

	buf_init(&m, AUDIT_MAX_LINE + 64);
	e = ckpt_message(signed_part, &m);
	if (e == CUSTOS_OK)
		e = ed25519_sign(k, buf_ptr(&m), buf_used(&m), out);
	buf_free(&m);
	return e;
}

custos_err audit_ckpt_verify(EVP_PKEY *k, span signed_part, span sighex)
{
	buf m;
	custos_err e;

	buf_init(&m, AUDIT_MAX_LINE + 64);
	e = ckpt_message(signed_part, &m);
	if (e == CUSTOS_OK)
		e = ed25519_verify(k, buf_ptr(&m), buf_used(&m), sighex);
	buf_free(&m);
	return e;
}
