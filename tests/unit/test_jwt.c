/*
 * Hostile tests of JWT verification and JWKS loading (proxy/jwt.c): tokens made here with
 * OpenSSL keys (Ed25519, P-256, RSA 2048) and hand-written headers and claims, the way an
 * attacker writes them: algorithm confusion, kid tricks, embedded keys, crit, base64url
 * variants, duplicate members, odd claim types, principal claims with control characters;
 * and key sets with keys custos must not use (short or degenerate RSA, other curves,
 * key_ops without verify).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "proxy/proxy_int.h"

/* OpenSSL functions custos itself never calls, so that its lazy binding (dl/openssl.c) has
 * no stub for them: taken from libcrypto with dlsym (the library custos loads). */
#include <dlfcn.h>
#define OSSL_FNS(X)                                                                                \
	X(BN_bn2bin)                                                                               \
	X(BN_bn2binpad)                                                                            \
	X(ECDSA_SIG_get0_r)                                                                        \
	X(ECDSA_SIG_get0_s)                                                                        \
	X(EVP_PKEY_get_bn_param)                                                                   \
	X(EVP_PKEY_get_octet_string_param)                                                         \
	X(EVP_PKEY_is_a)                                                                           \
	X(d2i_ECDSA_SIG)
#define DECL(f) static __typeof__(&f) p_##f;
OSSL_FNS(DECL)
#undef DECL
static int ossl_fns(void)
{
	void *h = dlopen("libcrypto.so.3", RTLD_NOW);
	if (h == NULL)
		return -1;
#define LOAD(f)                                                                                    \
	if ((p_##f = (__typeof__(p_##f))dlsym(h, #f)) == NULL)                                     \
		return -1;
	OSSL_FNS(LOAD)
#undef LOAD
	return 0;
}
#define BN_bn2bin                       p_BN_bn2bin
#define BN_bn2binpad                    p_BN_bn2binpad
#define ECDSA_SIG_get0_r                p_ECDSA_SIG_get0_r
#define ECDSA_SIG_get0_s                p_ECDSA_SIG_get0_s
#define EVP_PKEY_get_bn_param           p_EVP_PKEY_get_bn_param
#define EVP_PKEY_get_octet_string_param p_EVP_PKEY_get_octet_string_param
#define EVP_PKEY_is_a                   p_EVP_PKEY_is_a
#define d2i_ECDSA_SIG                   p_d2i_ECDSA_SIG

#define NOW                             1000000u

static EVP_PKEY *ed, *ec, *rsa, *evil;
static char jwks_path[64], bad_path[64];

static void b64url(const uint8_t *in, size_t n, buf *out)
{
	static const char tbl[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			assert_int_equal(buf_append_byte(out, (uint8_t)tbl[(acc >> bits) & 63]),
			                 CUSTOS_OK);
		}
	}
	if (bits > 0)
		assert_int_equal(buf_append_byte(out, (uint8_t)tbl[(acc << (6 - bits)) & 63]),
		                 CUSTOS_OK);
}

static void b64s(const char *s, buf *out)
{
	b64url((const uint8_t *)s, strlen(s), out);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* The JWK members of a public key: "kty":...,"crv"/"n","e"/"x","y" (no braces). */
static void jwk_members(EVP_PKEY *k, buf *out)
{
	if (EVP_PKEY_is_a(k, "ED25519")) {
		uint8_t x[32];
		size_t xl = sizeof(x);
		assert_int_equal(EVP_PKEY_get_raw_public_key(k, x, &xl), 1);
		assert_int_equal(
		        buf_append_cstr(out, "\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\""),
		        CUSTOS_OK);
		b64url(x, xl, out);
	} else if (EVP_PKEY_is_a(k, "EC")) {
		uint8_t pub[65];
		size_t pl = 0;
		assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub,
		                                                 sizeof(pub), &pl),
		                 1);
		assert_int_equal(pl, 65);
		assert_int_equal(buf_append_cstr(out, "\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\""),
		                 CUSTOS_OK);
		b64url(pub + 1, 32, out);
		assert_int_equal(buf_append_cstr(out, "\",\"y\":\""), CUSTOS_OK);
		b64url(pub + 33, 32, out);
	} else {
		BIGNUM *n = NULL, *e = NULL;
		uint8_t nb[1024], eb[8];
		assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n), 1);
		assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e), 1);
		int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
		assert_int_equal(buf_append_cstr(out, "\"kty\":\"RSA\",\"n\":\""), CUSTOS_OK);
		b64url(nb, (size_t)nl, out);
		assert_int_equal(buf_append_cstr(out, "\",\"e\":\""), CUSTOS_OK);
		b64url(eb, (size_t)el, out);
		BN_free(n);
		BN_free(e);
	}
	assert_int_equal(buf_append_cstr(out, "\""), CUSTOS_OK);
}

static int setup(void **state)
{
	(void)state;
	if (ossl_fns() != 0)
		return -1;
	ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	evil = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (!ed || !evil || !ec || !rsa)
		return -1;
	buf d;
	buf_init(&d, 8192);
	assert_int_equal(buf_append_cstr(&d, "{\"keys\":[{\"kid\":\"k1\","), CUSTOS_OK);
	jwk_members(ed, &d);
	assert_int_equal(buf_append_cstr(&d, "},{\"kid\":\"e1\","), CUSTOS_OK);
	jwk_members(ec, &d);
	assert_int_equal(buf_append_cstr(&d, "},{\"kid\":\"r1\","), CUSTOS_OK);
	jwk_members(rsa, &d);
	assert_int_equal(buf_append_cstr(&d, "}]}"), CUSTOS_OK);
	const char *s;
	assert_int_equal(buf_cstr(&d, &s), CUSTOS_OK);
	snprintf(jwks_path, sizeof(jwks_path), "/tmp/test_jwt_jwks_%d.json", (int)getpid());
	snprintf(bad_path, sizeof(bad_path), "/tmp/test_jwt_bad_%d.json", (int)getpid());
	write_file(jwks_path, s);
	buf_free(&d);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(jwks_path);
	unlink(bad_path);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(evil);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
	return 0;
}

enum sigform { SIG_OK, SIG_DER, SIG_FLIP };

/* A token: base64url(hdr) "." base64url(claims) "." signature by key (raw r||s for EC,
 * unless SIG_DER). */
static void token(const char *hdr, const char *claims, EVP_PKEY *key, enum sigform f, buf *tok)
{
	uint8_t sig[1024], raw[64];
	size_t sl = sizeof(sig);

	buf_init(tok, 16384);
	b64s(hdr, tok);
	assert_int_equal(buf_append_byte(tok, '.'), CUSTOS_OK);
	b64s(claims, tok);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestSignInit(md, NULL,
	                                    EVP_PKEY_is_a(key, "ED25519") ? NULL : EVP_sha256(),
	                                    NULL, key),
	                 1);
	assert_int_equal(EVP_DigestSign(md, sig, &sl, buf_ptr(tok), buf_used(tok)), 1);
	EVP_MD_CTX_free(md);
	const uint8_t *out = sig;
	if (EVP_PKEY_is_a(key, "EC") && f != SIG_DER) {
		const uint8_t *p = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
		assert_non_null(es);
		assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
		assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
		ECDSA_SIG_free(es);
		out = raw;
		sl = 64;
	}
	if (f == SIG_FLIP)
		sig[3] ^= 1;
	assert_int_equal(buf_append_byte(tok, '.'), CUSTOS_OK);
	b64url(out, sl, tok);
}

static const proxy_jwt_opts opts = { .issuers = { "https://iss" },
	                             .n_issuers = 1,
	                             .audiences = { "custos" },
	                             .n_audiences = 1,
	                             .leeway_s = 5 };

static custos_err check_span(span t, ident *id)
{
	struct jwks *k = NULL;
	assert_int_equal(jwks_load(jwks_path, &k), CUSTOS_OK);
	custos_err e = jwt_verify(k, &opts, t, NOW, id);
	jwks_free(k);
	return e;
}

static custos_err check(const char *hdr, const char *claims, EVP_PKEY *key, enum sigform f)
{
	buf t;
	ident id = { 0 };
	token(hdr, claims, key, f, &t);
	custos_err e = check_span(buf_span(&t), &id);
	ident_free(&id);
	buf_free(&t);
	return e;
}

#define GOOD "{\"iss\":\"https://iss\",\"aud\":\"custos\",\"sub\":\"alice\",\"exp\":1000100}"
#define ED   "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}"

static void test_baseline(void **state)
{
	(void)state;
	assert_int_equal(check(ED, GOOD, ed, SIG_OK), CUSTOS_OK);
	assert_int_equal(check("{\"alg\":\"ES256\",\"kid\":\"e1\"}", GOOD, ec, SIG_OK), CUSTOS_OK);
	assert_int_equal(check("{\"alg\":\"RS256\",\"kid\":\"r1\"}", GOOD, rsa, SIG_OK), CUSTOS_OK);
	/* no kid: every key of the algorithm is tried */
	assert_int_equal(check("{\"alg\":\"ES256\"}", GOOD, ec, SIG_OK), CUSTOS_OK);
	assert_int_equal(check(ED, GOOD, ed, SIG_FLIP), CUSTOS_ERR_DENIED);
}

static void test_alg_confusion(void **state)
{
	(void)state;
	buf t;
	ident id = { 0 };

	/* alg none, with and without a signature */
	buf_init(&t, 1024);
	b64s("{\"alg\":\"none\"}", &t);
	assert_int_equal(buf_append_byte(&t, '.'), CUSTOS_OK);
	b64s(GOOD, &t);
	assert_int_equal(buf_append_byte(&t, '.'), CUSTOS_OK);
	assert_int_equal(check_span(buf_span(&t), &id), CUSTOS_ERR_DENIED);
	buf_free(&t);
	assert_int_equal(check("{\"alg\":\"none\"}", GOOD, ed, SIG_OK), CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"None\"}", GOOD, ed, SIG_OK), CUSTOS_ERR_DENIED);
	/* HS256 (whatever the secret: the public key's JWK, its PEM) is never accepted */
	assert_int_equal(check("{\"alg\":\"HS256\",\"kid\":\"r1\"}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	/* a duplicate alg: the strict reader refuses the header */
	assert_int_equal(
	        check("{\"alg\":\"none\",\"alg\":\"EdDSA\",\"kid\":\"k1\"}", GOOD, ed, SIG_OK),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(
	        check("{\"alg\":\"EdDSA\",\"alg\":\"EdDSA\",\"kid\":\"k1\"}", GOOD, ed, SIG_OK),
	        CUSTOS_ERR_DENIED);
	/* an RSA signature under ES256 or EdDSA, an EC one under RS256 */
	assert_int_equal(check("{\"alg\":\"ES256\",\"kid\":\"r1\"}", GOOD, rsa, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"r1\"}", GOOD, rsa, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"RS256\",\"kid\":\"e1\"}", GOOD, ec, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"RS256\"}", GOOD, ec, SIG_OK), CUSTOS_ERR_DENIED);
	/* ES256 in DER rather than r||s */
	assert_int_equal(check("{\"alg\":\"ES256\",\"kid\":\"e1\"}", GOOD, ec, SIG_DER),
	                 CUSTOS_ERR_DENIED);
	/* crit is refused, even empty */
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"crit\":[]}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"crit\":[\"exp\"],\"exp\":1}",
	                       GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
}

static void test_embedded_keys(void **state)
{
	(void)state;
	/* A key the token brings (jwk, jku, x5u, x5c) is never used: signed by the attacker's
	 * key that it embeds, the token does not verify. */
	buf h;
	buf_init(&h, 1024);
	assert_int_equal(buf_append_cstr(&h, "{\"alg\":\"EdDSA\",\"jwk\":{"), CUSTOS_OK);
	jwk_members(evil, &h);
	assert_int_equal(buf_append_cstr(&h, "}}"), CUSTOS_OK);
	const char *hs;
	assert_int_equal(buf_cstr(&h, &hs), CUSTOS_OK);
	assert_int_equal(check(hs, GOOD, evil, SIG_OK), CUSTOS_ERR_DENIED);
	buf_free(&h);
	assert_int_equal(
	        check("{\"alg\":\"EdDSA\",\"jku\":\"https://evil/jwks\"}", GOOD, evil, SIG_OK),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(
	        check("{\"alg\":\"EdDSA\",\"x5u\":\"https://evil/c.pem\"}", GOOD, evil, SIG_OK),
	        CUSTOS_ERR_DENIED);
}

static void test_kid(void **state)
{
	(void)state;
	/* a kid that names no key of the algorithm */
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"e1\"}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"nope\"}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"\"}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	/* a kid that is not a string, or longer than any key's, is not "no kid" */
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":1}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":null}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	char hdr[512];
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"EdDSA\",\"kid\":\"%0200d\"}", 0);
	assert_int_equal(check(hdr, GOOD, ed, SIG_OK), CUSTOS_ERR_DENIED);
	assert_non_null(strstr(err_msg(), "kid is not a string"));
	/* a kid with a NUL does not stop at it */
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"k1\\u0000x\"}", GOOD, ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	/* the kid (unauthenticated) in the refusal, which is logged: no control character */
	assert_int_equal(check("{\"alg\":\"EdDSA\",\"kid\":\"k1\\nFAKE log line\\u001b[2J\"}", GOOD,
	                       ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_null(strchr(err_msg(), '\n'));
	assert_null(strchr(err_msg(), 0x1b));
	assert_int_equal(check("{\"alg\":\"Ed\\nDSA\"}", GOOD, ed, SIG_OK), CUSTOS_ERR_DENIED);
	assert_null(strchr(err_msg(), '\n'));
}

static void test_encoding(void **state)
{
	(void)state;
	buf t;
	ident id = { 0 };

	token(ED, GOOD, ed, SIG_OK, &t);
	const char *s;
	assert_int_equal(buf_cstr(&t, &s), CUSTOS_OK);
	assert_int_equal(check_span(span_cstr(s), &id), CUSTOS_OK);
	ident_free(&id);
	char v[16384];
	size_t n = strlen(s);
	const char *d1 = strchr(s, '.');
	/* padding on the signature (64 bytes: 86 characters, "==" in standard base64) */
	snprintf(v, sizeof(v), "%s==", s);
	assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	/* a fourth part, an empty one, a space, a newline */
	snprintf(v, sizeof(v), "%s.", s);
	assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	snprintf(v, sizeof(v), "%s.%s", s, d1 + 1);
	assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	snprintf(v, sizeof(v), "%.*s %s", (int)(d1 - s), s, d1);
	assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	snprintf(v, sizeof(v), "%.*s\n%s", (int)(n - 10), s, s + n - 10);
	assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	/* the standard alphabet in place of base64url */
	memcpy(v, s, n + 1);
	bool changed = false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '-' || v[i] == '_') {
			v[i] = v[i] == '-' ? '+' : '/';
			changed = true;
		}
	}
	if (changed)
		assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	/* non-zero padding bits in the last character of the signature (86 characters for 64
	 * bytes: the last one's low 4 bits are padding), the data bits kept */
	static const char tbl[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	memcpy(v, s, n + 1);
	size_t last = (size_t)(strchr(tbl, v[n - 1]) - tbl);
	assert_int_equal(last % 16, 0);
	v[n - 1] = tbl[last + 1];
	assert_int_equal(check_span(span_cstr(v), &id), CUSTOS_ERR_DENIED);
	buf_free(&t);
}

#define C(x) "{\"iss\":\"https://iss\",\"aud\":\"custos\"," x "}"

static void test_claims(void **state)
{
	(void)state;
	/* duplicate members */
	assert_int_equal(check(ED, C("\"sub\":\"a\",\"exp\":1,\"exp\":1000100"), ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check(ED, C("\"sub\":\"a\",\"sub\":\"b\",\"exp\":1000100"), ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	/* exp, nbf: whole numbers of seconds only */
	static const char *const bad_exp[] = {
		"\"1000100\"", "1000100.5", "1e7",      "-1", "99999999999999999999999",
		"null",        "true",      "[1000100]"
	};
	for (size_t i = 0; i < sizeof(bad_exp) / sizeof(bad_exp[0]); i++) {
		char c[256];
		snprintf(c, sizeof(c), C("\"sub\":\"a\",\"exp\":%s"), bad_exp[i]);
		assert_int_equal(check(ED, c, ed, SIG_OK), CUSTOS_ERR_DENIED);
		snprintf(c, sizeof(c), C("\"sub\":\"a\",\"exp\":1000100,\"nbf\":%s"), bad_exp[i]);
		assert_int_equal(check(ED, c, ed, SIG_OK), CUSTOS_ERR_DENIED);
	}
	assert_int_equal(check(ED, C("\"sub\":\"a\",\"exp\":4611686018427387903"), ed, SIG_OK),
	                 CUSTOS_OK);
	assert_int_equal(check(ED, C("\"sub\":\"a\",\"exp\":1000100,\"nbf\":4611686018427387903"),
	                       ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	/* aud: string or array; an empty array or other types hold none */
	static const char *const auds[][2] = {
		{ "[]", "n" },
		{ "[\"custos\"]", "y" },
		{ "[1,\"custos\"]", "y" },
		{ "\"custos \"", "n" },
		{ "\"Custos\"", "n" },
		{ "null", "n" },
		{ "[[\"custos\"]]", "n" },
		{ "{\"custos\":1}", "n" },
	};
	for (size_t i = 0; i < sizeof(auds) / sizeof(auds[0]); i++) {
		char c[256];
		snprintf(c, sizeof(c),
		         "{\"iss\":\"https://iss\",\"sub\":\"a\",\"exp\":1000100,\"aud\":%s}",
		         auds[i][0]);
		assert_int_equal(check(ED, c, ed, SIG_OK),
		                 auds[i][1][0] == 'y' ? CUSTOS_OK : CUSTOS_ERR_DENIED);
	}
	/* iss compares exactly */
	assert_int_equal(check(ED,
	                       "{\"iss\":\"https://iss/\",\"aud\":\"custos\",\"sub\":\"a\","
	                       "\"exp\":1000100}",
	                       ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(check(ED,
	                       "{\"iss\":\"https://iss\\u0000\",\"aud\":\"custos\",\"sub\":\"a\","
	                       "\"exp\":1000100}",
	                       ed, SIG_OK),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(
	        check(ED, "{\"aud\":\"custos\",\"sub\":\"a\",\"exp\":1000100}", ed, SIG_OK),
	        CUSTOS_ERR_DENIED);
}

static void test_principal_claim(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"\"\"",          "1",
		"null",          "[\"a\"]",
		"\"a\\nb\"",     "\"a\\rb\"",
		"\"a\\u0000b\"", "\"\\u001b[31m\"",
		"\"a\\u007fb\"", "\"a\\u009bb\"",
		"\"a\\tb\"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char c[256];
		snprintf(c, sizeof(c), C("\"exp\":1000100,\"sub\":%s"), bad[i]);
		assert_int_equal(check(ED, c, ed, SIG_OK), CUSTOS_ERR_DENIED);
	}
	/* non-ASCII text is a name like another */
	assert_int_equal(check(ED, C("\"exp\":1000100,\"sub\":\"\\u00e9l\\u00e8ve\""), ed, SIG_OK),
	                 CUSTOS_OK);
	/* long: "jwt:" and the claim must fit the event's principal (PROXY_PRINCIPAL_MAX) */
	size_t max = PROXY_PRINCIPAL_MAX - 1 - 4;
	char sub[PROXY_PRINCIPAL_MAX + 8], c[1024];
	memset(sub, 'a', max);
	sub[max] = '\0';
	snprintf(c, sizeof(c), C("\"exp\":1000100,\"sub\":\"%s\""), sub);
	ident id = { 0 };
	buf t;
	token(ED, c, ed, SIG_OK, &t);
	assert_int_equal(check_span(buf_span(&t), &id), CUSTOS_OK);
	assert_int_equal(strlen(id.jwt_sub), max);
	ident_free(&id);
	buf_free(&t);
	memset(sub, 'a', max + 1);
	sub[max + 1] = '\0';
	snprintf(c, sizeof(c), C("\"exp\":1000100,\"sub\":\"%s\""), sub);
	assert_int_equal(check(ED, c, ed, SIG_OK), CUSTOS_ERR_DENIED);
	memset(sub, 'a', 10000 < sizeof(sub) ? 10000 : sizeof(sub) - 1);
	sub[sizeof(sub) - 1] = '\0';
	snprintf(c, sizeof(c), C("\"exp\":1000100,\"sub\":\"%s\""), sub);
	assert_int_equal(check(ED, c, ed, SIG_OK), CUSTOS_ERR_DENIED);
}

/* ---- key sets ---- */
static custos_err load_text(const char *text)
{
	struct jwks *k = NULL;
	write_file(bad_path, text);
	custos_err e = jwks_load(bad_path, &k);
	if (e != CUSTOS_OK)
		assert_null(k);
	jwks_free(k);
	return e;
}

static custos_err load_key(const char *extra, EVP_PKEY *key)
{
	buf d;
	const char *s;
	buf_init(&d, 8192);
	assert_int_equal(buf_append_cstr(&d, "{\"keys\":[{"), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&d, extra), CUSTOS_OK);
	jwk_members(key, &d);
	assert_int_equal(buf_append_cstr(&d, "}]}"), CUSTOS_OK);
	assert_int_equal(buf_cstr(&d, &s), CUSTOS_OK);
	custos_err e = load_text(s);
	buf_free(&d);
	return e;
}

static void test_jwks_use_key_ops(void **state)
{
	(void)state;
	assert_int_equal(load_key("", ed), CUSTOS_OK);
	assert_int_equal(load_key("\"use\":\"sig\",", ed), CUSTOS_OK);
	assert_int_equal(load_key("\"use\":\"enc\",", ed), CUSTOS_ERR_INVAL); /* none usable */
	assert_int_equal(load_key("\"use\":1,", ed), CUSTOS_ERR_INVAL);
	assert_int_equal(load_key("\"key_ops\":[\"verify\"],", ed), CUSTOS_OK);
	assert_int_equal(load_key("\"key_ops\":[\"sign\",\"verify\"],", ed), CUSTOS_OK);
	assert_int_equal(load_key("\"key_ops\":[\"encrypt\"],", ed), CUSTOS_ERR_INVAL);
	assert_int_equal(load_key("\"key_ops\":[],", ed), CUSTOS_ERR_INVAL);
	assert_int_equal(load_key("\"key_ops\":\"verify\",", ed), CUSTOS_ERR_INVAL);
	/* a kid that is not a string is a malformed key, not a key without kid */
	assert_int_equal(load_key("\"kid\":7,", ed), CUSTOS_ERR_PARSE);
	/* duplicate members in a key */
	assert_int_not_equal(load_key("\"kty\":\"RSA\",", ed), CUSTOS_OK);
	/* an alg for another key type: skipped */
	assert_int_equal(load_key("\"alg\":\"RS256\",", ed), CUSTOS_ERR_INVAL);
}

static void test_jwks_other_curves(void **state)
{
	(void)state;
	buf d;
	const char *s;

	/* a P-384 or Ed448 key (no alg) beside a usable one: skipped, the set loads */
	buf_init(&d, 8192);
	assert_int_equal(
	        buf_append_cstr(
	                &d,
	                "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":"
	                "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
	                "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	                "\"},{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"AAAA\"},{"),
	        CUSTOS_OK);
	jwk_members(ed, &d);
	assert_int_equal(buf_append_cstr(&d, "}]}"), CUSTOS_OK);
	assert_int_equal(buf_cstr(&d, &s), CUSTOS_OK);
	assert_int_equal(load_text(s), CUSTOS_OK);
	buf_free(&d);
	/* alone, they leave no usable key */
	assert_int_equal(
	        load_text("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"AAAA\"}]}"),
	        CUSTOS_ERR_INVAL);
	/* a P-256 point that is not on the curve */
	assert_int_equal(load_text("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":"
	                           "\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":"
	                           "\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}"),
	                 CUSTOS_ERR_PARSE);
}

/* An RSA JWK from n (nl bytes) and e (el bytes). */
static custos_err load_rsa(const uint8_t *n, size_t nl, const uint8_t *e, size_t el)
{
	buf d;
	const char *s;
	buf_init(&d, 8192);
	assert_int_equal(buf_append_cstr(&d, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\""), CUSTOS_OK);
	b64url(n, nl, &d);
	assert_int_equal(buf_append_cstr(&d, "\",\"e\":\""), CUSTOS_OK);
	b64url(e, el, &d);
	assert_int_equal(buf_append_cstr(&d, "\"}]}"), CUSTOS_OK);
	assert_int_equal(buf_cstr(&d, &s), CUSTOS_OK);
	custos_err r = load_text(s);
	buf_free(&d);
	return r;
}

static void test_jwks_rsa(void **state)
{
	(void)state;
	uint8_t nb[512];
	static const uint8_t e65537[] = { 1, 0, 1 }, e1[] = { 1 }, e2[] = { 0, 2 },
	                     e1z[] = { 0, 0, 1 };
	BIGNUM *n = NULL;

	assert_int_equal(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	assert_int_equal(BN_bn2binpad(n, nb, 256), 256);
	assert_int_equal(load_rsa(nb, 256, e65537, sizeof(e65537)), CUSTOS_OK);
	/* e = 1: s^e mod n = s, a signature anyone makes; an even e */
	assert_int_equal(load_rsa(nb, 256, e1, sizeof(e1)), CUSTOS_ERR_PARSE);
	assert_int_equal(load_rsa(nb, 256, e1z, sizeof(e1z)), CUSTOS_ERR_PARSE);
	assert_int_equal(load_rsa(nb, 256, e2, sizeof(e2)), CUSTOS_ERR_PARSE);
	BN_free(n);
	/* a 2040-bit key padded with a leading zero byte to 256 bytes: still under 2048 bits */
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2040);
	assert_non_null(small);
	n = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(small, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	assert_int_equal(BN_num_bits(n), 2040);
	assert_int_equal(BN_bn2binpad(n, nb, 256), 256);
	assert_int_equal(nb[0], 0);
	assert_int_equal(load_rsa(nb, 256, e65537, sizeof(e65537)), CUSTOS_ERR_PARSE);
	/* an even modulus of 2048 bits */
	memset(nb, 0xff, 256);
	nb[255] = 0xfe;
	assert_int_equal(load_rsa(nb, 256, e65537, sizeof(e65537)), CUSTOS_ERR_PARSE);
	BN_free(n);
	EVP_PKEY_free(small);
}

/* An RSA key above 4800 bits verifies (its signature, 608 bytes here, once overflowed a
 * 600-byte buffer: keys up to jwk_rsa's 8192 bits are accepted). */
static void test_rsa_big(void **state)
{
	(void)state;
	EVP_PKEY *big = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4864);
	assert_non_null(big);
	assert_int_equal(load_key("\"kid\":\"big\",", big), CUSTOS_OK);
	struct jwks *k = NULL;
	assert_int_equal(jwks_load(bad_path, &k), CUSTOS_OK);
	buf t;
	ident id = { 0 };
	token("{\"alg\":\"RS256\",\"kid\":\"big\"}", GOOD, big, SIG_OK, &t);
	assert_int_equal(jwt_verify(k, &opts, buf_span(&t), NOW, &id), CUSTOS_OK);
	ident_free(&id);
	buf_free(&t);
	jwks_free(k);
	EVP_PKEY_free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_baseline),          cmocka_unit_test(test_alg_confusion),
		cmocka_unit_test(test_embedded_keys),     cmocka_unit_test(test_kid),
		cmocka_unit_test(test_encoding),          cmocka_unit_test(test_claims),
		cmocka_unit_test(test_principal_claim),   cmocka_unit_test(test_jwks_use_key_ops),
		cmocka_unit_test(test_jwks_other_curves), cmocka_unit_test(test_jwks_rsa),
		cmocka_unit_test(test_rsa_big),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
