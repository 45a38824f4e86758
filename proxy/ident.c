/*
 * Caller identity: facts from the verified client certificate (SAN URI/DNS/email, subject CN,
 * issuer) and bearer API keys (SHA-256 digest, compared in constant time).
 */
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_int.h"

static void free_list(char **v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free(v[i]);
	*n = 0;
}

void ident_clear_bearer(ident *id)
{
	free(id->key_principal);
	id->key_principal = NULL;
	OPENSSL_cleanse(id->api_key_sha256, sizeof(id->api_key_sha256));
	id->has_api_key = false;
	free(id->jwt_iss);
	free(id->jwt_sub);
	id->jwt_iss = id->jwt_sub = NULL;
	id->jwt_iss_names = false;
	free_list(id->jwt_groups, &id->n_jwt_groups);
}

void ident_free(ident *id)
{
	ident_clear_bearer(id);
	free_list(id->san_uri, &id->n_uri);
	free_list(id->san_dns, &id->n_dns);
	free_list(id->san_email, &id->n_email);
	free(id->cn);
	free(id->issuer);
	*id = (ident){ 0 };
}

/* A printable copy of an ASN.1 string; NULL when it holds a NUL or control byte (never trust
 * a certificate's bytes to be text). */
static char *asn1_text(const ASN1_STRING *s)
{
	const unsigned char *p = ASN1_STRING_get0_data(s);
	int n = ASN1_STRING_length(s);

	if (p == NULL || n <= 0 || n > PROXY_PRINCIPAL_MAX)
		return NULL;
	for (int i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return NULL;
	return xstrndup((const char *)p, (size_t)n);
}

void ident_from_cert(ident *id, SSL *ssl)
{
	X509 *x = SSL_get1_peer_certificate(ssl);

	if (x == NULL)
		return;
	if (SSL_get_verify_result(ssl) != X509_V_OK) {
		X509_free(x);
		return;
	}
	id->has_cert = true;
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char **list;
		size_t *n;
		switch (g->type) {
		case GEN_URI:
			list = id->san_uri, n = &id->n_uri;
			break;
		case GEN_DNS:
			list = id->san_dns, n = &id->n_dns;
			break;
		case GEN_EMAIL:
			list = id->san_email, n = &id->n_email;
			break;
		default:
			continue;
		}
		if (*n >= PROXY_MAX_SAN)
			continue;
		char *t = asn1_text(g->d.ia5);
		if (t)
			list[(*n)++] = t;
	}
	GENERAL_NAMES_free(gens);
	X509_NAME *subj = X509_get_subject_name(x);
	/* One CN, or none: with several, which one names the caller is a convention (the first,
	 * the last, the most specific) another system may read otherwise. */
	int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (idx >= 0 && X509_NAME_get_index_by_NID(subj, NID_commonName, idx) < 0)
		id->cn = asn1_text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)));
	BIO *b = BIO_new(BIO_s_mem());
	if (b && X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253) >= 0) {
		char *p;
		long n = BIO_get_mem_data(b, &p);
		if (n > 0 && n <= 1024)
			id->issuer = xstrndup(p, (size_t)n);
	}
	BIO_free(b);
	X509_free(x);
}

/* SHA-256 fetched once: EVP_sha256() makes OpenSSL 3 fetch the implementation on every
 * digest, a lock and a lookup per request. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void ident_api_key(ident *id, span key, const proxy_api_key *keys, size_t n)
{
	unsigned int len = 0;

	pthread_once(&sha256_once, sha256_fetch);
	if (EVP_Digest(key.ptr, key.len, id->api_key_sha256, &len,
	               sha256_md ? sha256_md : EVP_sha256(), NULL) != 1 ||
	    len != 32)
		return;
	id->has_api_key = true;
	/* Every configured key is compared, so timing does not tell which one matched. */
	const proxy_api_key *hit = NULL;
	for (size_t i = 0; i < n; i++) {
		int diff = CRYPTO_memcmp(keys[i].sha256, id->api_key_sha256, 32);
		if (diff == 0 && hit == NULL)
			hit = &keys[i];
	}
	if (hit)
		id->key_principal = xstrdup(hit->principal);
}

const char *ident_label(const ident *id)
{
	if (id->key_principal)
		return id->key_principal;
	if (id->jwt_sub)
		return id->jwt_sub;
	/* A key that named no one is what the caller authenticated with (and failed), even
	 * when a certificate came too: the certificate's name would mislead. */
	if (id->method == IDENT_API_KEY)
		return "unknown-api-key";
	if (id->n_uri)
		return id->san_uri[0];
	if (id->n_dns)
		return id->san_dns[0];
	if (id->n_email)
		return id->san_email[0];
	if (id->cn)
		return id->cn;
	return id->has_api_key ? "unknown-api-key" : "anonymous";
}

/* The digest form of a label: its first bytes (whole UTF-8 sequences), '#' and the 64 hex
 * digits of SHA-256 over the whole label. */
#define LABEL_DIGEST_LEN (1 + 64)

static bool ends_as_digest(const char *s, size_t n)
{
	if (n < LABEL_DIGEST_LEN || s[n - LABEL_DIGEST_LEN] != '#')
		return false;
	for (size_t i = n - 64; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Appends s at *n, spaces and '%' percent-encoded when enc (so the space after an issuer
 * ends it: one reading). Room was counted by the caller. */
static void label_put(char *out, size_t *n, const char *s, bool enc)
{
	static const char hexd[] = "0123456789ABCDEF";
	for (; *s; s++) {
		if (enc && (*s == ' ' || *s == '%')) {
			out[(*n)++] = '%';
			out[(*n)++] = hexd[(unsigned char)*s >> 4];
			out[(*n)++] = hexd[(unsigned char)*s & 15];
		} else {
			out[(*n)++] = *s;
		}
	}
	out[*n] = '\0';
}

void ident_unmatched_label(const ident *id, char out[PROXY_PRINCIPAL_MAX])
{
	const char *kind, *iss = NULL, *fact;

	if (id->key_principal) {
		kind = "key:", fact = id->key_principal;
	} else if (id->jwt_sub) {
		kind = "jwt:", fact = id->jwt_sub;
		if (id->jwt_iss_names)
			iss = id->jwt_iss ? id->jwt_iss : "";
	} else if (id->n_uri || id->n_dns || id->n_email || id->cn) {
		/* the field is in the kind: a DNS name or a CN "x" is not the SAN URI "x" */
		if (id->n_uri)
			kind = "cert:", fact = id->san_uri[0];
		else if (id->n_dns)
			kind = "cert-dns:", fact = id->san_dns[0];
		else if (id->n_email)
			kind = "cert-email:", fact = id->san_email[0];
		else
			kind = "cert-cn:", fact = id->cn;
	} else {
		/* a certificate with no name that is text: such callers cannot be told apart */
		kind = "", fact = "unnamed-cert";
	}
	size_t cap = strlen(kind) + (iss ? 3 * strlen(iss) + 1 : 0) + strlen(fact) + 1, n = 0;
	char *full = xcalloc(1, cap);
	label_put(full, &n, kind, false);
	if (iss) {
		label_put(full, &n, iss, true);
		label_put(full, &n, " ", false);
	}
	label_put(full, &n, fact, false);
	char hex[65];
	if (n < PROXY_PRINCIPAL_MAX && !ends_as_digest(full, n)) {
		memcpy(out, full, n + 1);
	} else if (sha256_hex(span_of(full, n), hex)) {
		size_t cut = PROXY_PRINCIPAL_MAX - 1 - LABEL_DIGEST_LEN;
		while (cut > 0 && ((unsigned char)full[cut] & 0xc0) == 0x80)
			cut--;
		memcpy(out, full, cut);
		out[cut] = '#';
		memcpy(out + cut + 1, hex, sizeof(hex));
	} else {
		/* no digest (OpenSSL failed): one name for all such callers, none of theirs */
		memcpy(out, "unnamed-digest-failed", sizeof("unnamed-digest-failed"));
	}
	free(full);
}
