/*
 * JWT (RFC 7519) verification against keys from a local JWKS file (RFC 7517): RS256, ES256
 * and EdDSA (Ed25519) with OpenSSL 3; exp, nbf (with leeway), iss and aud checked. The JWKS
 * and token JSON are read with the strict JSON reader; "alg" must match the key's type, so
 * "none" and algorithm confusion are refused.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>

#include "custos/policy.h"
#include "json.h"
#include "proxy_int.h"

#define JWKS_MAX_KEYS 64
#define JWT_PART_MAX  PROXY_JWT_MAX
/* the principal claim's bytes: "jwt:" and it fit the event's principal (PROXY_PRINCIPAL_MAX) */
#define JWT_PRINCIPAL_MAX (PROXY_PRINCIPAL_MAX - 1 - 4)

typedef enum jwk_alg { JWK_RS256 = 0, JWK_ES256, JWK_EDDSA } jwk_alg;

struct jwk {
	char kid[128];
	jwk_alg alg;
	EVP_PKEY *key;
};

struct jwks {
	struct jwk keys[JWKS_MAX_KEYS];
	size_t n;
};

/* base64url without padding (RFC 7515 §2) into out; false on a bad character or overflow. */
static bool b64url_decode(span in, uint8_t *out, size_t outmax, size_t *outlen)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	for (size_t i = 0; i < in.len; i++) {
		int c = (unsigned char)in.ptr[i], v;
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '-')
			v = 62;
		else if (c == '_')
			v = 63;
		else
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= outmax)
				return false;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
		return false; /* a lone sextet, or non-zero padding bits */
	*outlen = n;
	return true;
}

/* The string member key into out; false (and out empty) when it is absent, not a string,
 * longer than out or holds a NUL (jsonr_unescape_cstr leaves what it wrote before the NUL:
 * "https://iss\u0000x" must not read as "https://iss"). */
static bool jstr(jsonr_val obj, const char *key, char *out, size_t outsz)
{
	jsonr_val v;
	if (jsonr_obj_get(obj, key, &v) && v.type == JSONR_STRING &&
	    jsonr_unescape_cstr(v.str, out, outsz) == CUSTOS_OK)
		return true;
	out[0] = '\0';
	return false;
}

static bool jb64(jsonr_val obj, const char *key, uint8_t *out, size_t outmax, size_t *n)
{
	jsonr_val v;
	if (!jsonr_obj_get(obj, key, &v) || v.type != JSONR_STRING)
		return false;
	return b64url_decode(v.str, out, outmax, n);
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM *params)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pk = NULL;

	if (ctx && EVP_PKEY_fromdata_init(ctx) == 1)
		(void)EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params);
	EVP_PKEY_CTX_free(ctx);
	return pk;
}

static EVP_PKEY *jwk_rsa(jsonr_val k)
{
	uint8_t n[1024], e[16];
	size_t nl, el;
	EVP_PKEY *pk = NULL;

	if (!jb64(k, "n", n, sizeof(n), &nl) || !jb64(k, "e", e, sizeof(e), &el))
		return NULL;
	BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	/* The modulus' bits, not its encoded length, are counted (leading zero bytes would make
	 * a shorter key look like 2048 bits): RSA below 2048 bits is refused. An even modulus
	 * or exponent, or an exponent of 1 (a "signature" anyone can make), is no RSA key. */
	if (bn && be && b && BN_num_bits(bn) >= 2048 && BN_is_odd(bn) && BN_is_odd(be) &&
	    !BN_is_one(be) && OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
	    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, be) == 1 &&
	    (params = OSSL_PARAM_BLD_to_param(b)) != NULL)
		pk = pkey_fromdata("RSA", params);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	BN_free(bn);
	BN_free(be);
	return pk;
}

static EVP_PKEY *jwk_ec(jsonr_val k)
{
	char crv[16];
	uint8_t pub[65];
	size_t xl, yl;

	if (!jstr(k, "crv", crv, sizeof(crv)) || strcmp(crv, "P-256") != 0)
		return NULL;
	pub[0] = 0x04;
	if (!jb64(k, "x", pub + 1, 32, &xl) || !jb64(k, "y", pub + 33, 32, &yl) || xl != 32 ||
	    yl != 32)
		return NULL;
	OSSL_PARAM params[3] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1",
		                                 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)),
		OSSL_PARAM_construct_end(),
	};
	return pkey_fromdata("EC", params);
}

static EVP_PKEY *jwk_okp(jsonr_val k)
{
	char crv[16];
	uint8_t x[32];
	size_t xl;

	if (!jstr(k, "crv", crv, sizeof(crv)) || strcmp(crv, "Ed25519") != 0)
		return NULL;
	if (!jb64(k, "x", x, sizeof(x), &xl) || xl != 32)
		return NULL;
	return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl);
}

/* "key_ops" (an array of strings) lists "verify". */
static bool key_ops_verify(jsonr_val ops)
{
	jsonr_iter it;
	jsonr_val op;

	if (ops.type != JSONR_ARRAY)
		return false;
	jsonr_iter_init(&it, ops);
	while (jsonr_arr_next(&it, &op))
		if (op.type == JSONR_STRING && jsonr_str_eq(op.str, "verify"))
			return true;
	return false;
}

/* An EC or OKP key on a curve custos verifies with (P-256, Ed25519); other kty have no crv to
 * check. A key on another curve (P-384, Ed448, secp256k1) is skipped, not an error: a JWKS
 * may hold keys for other verifiers. */
static bool crv_supported(jsonr_val k, const char *kty)
{
	char crv[16];

	if (strcmp(kty, "EC") == 0)
		return jstr(k, "crv", crv, sizeof(crv)) && strcmp(crv, "P-256") == 0;
	if (strcmp(kty, "OKP") == 0)
		return jstr(k, "crv", crv, sizeof(crv)) && strcmp(crv, "Ed25519") == 0;
	return true;
}

void jwks_free(struct jwks *k)
{
	if (k == NULL)
		return;
	for (size_t i = 0; i < k->n; i++)
		EVP_PKEY_free(k->keys[i].key);
	free(k);
}

custos_err jwks_load(const char *path, struct jwks **out)
{
	buf b;
	jsonr_val root, keys, k, v;
	jsonr_iter it;
	custos_err e;

	*out = NULL;
	buf_init(&b, PROXY_JWKS_MAX);
	if ((e = file_load(path, FILE_CONFIG, PROXY_JWKS_MAX, &b)) != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "jwks");
	}
	if ((e = jsonr_parse(buf_span(&b), NULL, &root)) != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "jwks %s", path);
	}
	if (root.type != JSONR_OBJECT || !jsonr_obj_get(root, "keys", &keys) ||
	    keys.type != JSONR_ARRAY) {
		buf_free(&b);
		return err_set(CUSTOS_ERR_PARSE,
		               "jwks %s: an object with a \"keys\" array expected", path);
	}
	struct jwks *ks = xcalloc(1, sizeof(*ks));
	size_t idx = 0;
	jsonr_iter_init(&it, keys);
	while (jsonr_arr_next(&it, &k)) {
		char kty[16] = "", alg[16] = "", use[16] = "";
		idx++;
		if (ks->n >= JWKS_MAX_KEYS) {
			e = err_set(CUSTOS_ERR_LIMIT, "jwks %s: more than %d keys", path,
			            JWKS_MAX_KEYS);
			goto fail;
		}
		if (k.type != JSONR_OBJECT || !jstr(k, "kty", kty, sizeof(kty))) {
			e = err_set(CUSTOS_ERR_PARSE, "jwks %s: key %zu has no kty", path, idx);
			goto fail;
		}
		/* A key for something else than verifying signatures is not for us: "use" other
		 * than "sig" (RFC 7517 4.2), "key_ops" without "verify" (4.3). */
		if (jsonr_obj_get(k, "use", &v) &&
		    (!jstr(k, "use", use, sizeof(use)) || strcmp(use, "sig") != 0))
			continue;
		if (jsonr_obj_get(k, "key_ops", &v) && !key_ops_verify(v))
			continue;
		(void)jstr(k, "alg", alg, sizeof(alg));
		struct jwk *j = &ks->keys[ks->n];
		if (jsonr_obj_get(k, "kid", &v) && !jstr(k, "kid", j->kid, sizeof(j->kid))) {
			e = err_set(CUSTOS_ERR_PARSE,
			            "jwks %s: key %zu: kid is not a string of at most %zu bytes",
			            path, idx, sizeof(j->kid) - 1);
			goto fail;
		}
		if (!crv_supported(k, kty)) {
			log_warn("jwks %s: key %zu (kty %s, crv not P-256 nor Ed25519) not "
			         "supported; skipped",
			         path, idx, kty);
			continue;
		}
		if (strcmp(kty, "RSA") == 0 && (!alg[0] || strcmp(alg, "RS256") == 0)) {
			j->alg = JWK_RS256;
			j->key = jwk_rsa(k);
		} else if (strcmp(kty, "EC") == 0 && (!alg[0] || strcmp(alg, "ES256") == 0)) {
			j->alg = JWK_ES256;
			j->key = jwk_ec(k);
		} else if (strcmp(kty, "OKP") == 0 && (!alg[0] || strcmp(alg, "EdDSA") == 0)) {
			j->alg = JWK_EDDSA;
			j->key = jwk_okp(k);
		} else {
			log_warn("jwks %s: key %zu (kty %s, alg %s) not supported; skipped", path,
			         idx, kty, alg[0] ? alg : "-");
			continue;
		}
		if (j->key == NULL) {
			e = err_set(CUSTOS_ERR_PARSE, "jwks %s: key %zu (kid %s) is malformed",
			            path, idx, j->kid[0] ? j->kid : "-");
			goto fail;
		}
		ks->n++;
	}
	buf_free(&b);
	if (ks->n == 0) {
		jwks_free(ks);
		return err_set(CUSTOS_ERR_INVAL, "jwks %s: no usable signing key", path);
	}
	*out = ks;
	return CUSTOS_OK;
fail:
	buf_free(&b);
	jwks_free(ks);
	return e;
}

custos_err proxy_jwks_check(const char *path)
{
	struct jwks *ks = NULL;
	custos_err e = jwks_load(path, &ks);
	jwks_free(ks);
	return e;
}

static bool verify_sig(const struct jwk *k, span signing_input, const uint8_t *sig, size_t siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = false;
	uint8_t der[80];
	const uint8_t *s = sig;
	size_t sl = siglen;

	if (md == NULL)
		return false;
	if (k->alg == JWK_ES256) {
		/* JWS carries r||s; OpenSSL wants DER. */
		if (siglen != 64)
			goto out;
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
		if (es == NULL || r == NULL || ss == NULL || ECDSA_SIG_set0(es, r, ss) != 1) {
			BN_free(r);
			BN_free(ss);
			ECDSA_SIG_free(es);
			goto out;
		}
		unsigned char *p = der;
		int n = i2d_ECDSA_SIG(es, NULL);
		if (n <= 0 || (size_t)n > sizeof(der)) {
			ECDSA_SIG_free(es);
			goto out;
		}
		n = i2d_ECDSA_SIG(es, &p);
		ECDSA_SIG_free(es);
		s = der;
		sl = (size_t)n;
	}
	const EVP_MD *dg = k->alg == JWK_EDDSA ? NULL : EVP_sha256();
	if (EVP_DigestVerifyInit(md, NULL, dg, NULL, k->key) != 1)
		goto out;
	ok = EVP_DigestVerify(md, s, sl, (const unsigned char *)signing_input.ptr,
	                      signing_input.len) == 1;
out:
	EVP_MD_CTX_free(md);
	return ok;
}

/* s for an error message: bytes outside printable ASCII as '?' (a token's header is read
 * before anything in it is trusted, and the message goes to the log). */
static const char *printable(const char *s, char *out, size_t outsz)
{
	size_t i = 0;

	for (; s[i] && i + 1 < outsz; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
	return out;
}

/* The principal claim names the caller in the policy, the trail and the rate limits: not
 * empty, no C0 or C1 control character nor DEL (a certificate's strings with them are
 * dropped too), and short enough that the event's "jwt:<claim>" (decide.c) is not cut. */
static bool principal_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > JWT_PRINCIPAL_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f ||
		    (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
		     (unsigned char)s[i + 1] <= 0x9f))
			return false;
	}
	return true;
}

static bool aud_accepted(const proxy_jwt_opts *o, span aud)
{
	for (size_t i = 0; i < o->n_audiences; i++)
		if (jsonr_str_eq(aud, o->audiences[i]))
			return true;
	return false;
}

static bool claim_time(jsonr_val claims, const char *key, bool required, uint64_t *out)
{
	jsonr_val v;
	if (!jsonr_obj_get(claims, key, &v))
		return !required;
	return v.type == JSONR_NUMBER && jsonr_u64(v, UINT64_MAX / 2, out) == CUSTOS_OK;
}

custos_err jwt_verify(const struct jwks *k, const proxy_jwt_opts *o, span token, uint64_t now_s,
                      ident *id)
{
	const char *d1 = memchr(token.ptr, '.', token.len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', token.len - (size_t)(d1 + 1 - token.ptr)) : NULL;
	uint8_t hdr[2048], sig[1024]; /* sig: RSA up to the 8192 bits of jwk_rsa's n */
	uint8_t *claims_raw = NULL;
	size_t hl, cl, sl;
	jsonr_val hv, cv, v;
	char alg[16], kid[128] = "", shown[128];
	custos_err e = CUSTOS_ERR_DENIED;

	ENSURE(d1 && d2, CUSTOS_ERR_DENIED, "jwt: three dot-separated parts expected");
	span ph = span_of(token.ptr, (size_t)(d1 - token.ptr));
	span pc = span_of(d1 + 1, (size_t)(d2 - d1 - 1));
	span ps = span_of(d2 + 1, token.len - (size_t)(d2 + 1 - token.ptr));
	ENSURE(b64url_decode(ph, hdr, sizeof(hdr), &hl), CUSTOS_ERR_DENIED, "jwt: bad header");
	ENSURE(b64url_decode(ps, sig, sizeof(sig), &sl), CUSTOS_ERR_DENIED, "jwt: bad signature");
	ENSURE(jsonr_parse(span_of((const char *)hdr, hl), NULL, &hv) == CUSTOS_OK &&
	               hv.type == JSONR_OBJECT,
	       CUSTOS_ERR_DENIED, "jwt: header is not a JSON object");
	ENSURE(jstr(hv, "alg", alg, sizeof(alg)), CUSTOS_ERR_DENIED, "jwt: no alg");
	/* A kid that is there names one key: one that is not a string, or too long to name any
	 * key of the set, is not taken for "no kid" (which tries every key). */
	bool has_kid = jsonr_obj_get(hv, "kid", &v);
	ENSURE(!has_kid || jstr(hv, "kid", kid, sizeof(kid)), CUSTOS_ERR_DENIED,
	       "jwt: kid is not a string of at most %zu bytes", sizeof(kid) - 1);
	ENSURE(!jsonr_obj_get(hv, "crit", &v), CUSTOS_ERR_DENIED, "jwt: crit not supported");
	jwk_alg want;
	if (strcmp(alg, "RS256") == 0)
		want = JWK_RS256;
	else if (strcmp(alg, "ES256") == 0)
		want = JWK_ES256;
	else if (strcmp(alg, "EdDSA") == 0)
		want = JWK_EDDSA;
	else
		return err_set(CUSTOS_ERR_DENIED, "jwt: alg %s not accepted",
		               printable(alg, shown, sizeof(shown)));
	static const unsigned bit[] = { [JWK_RS256] = PROXY_JWT_RS256,
		                        [JWK_ES256] = PROXY_JWT_ES256,
		                        [JWK_EDDSA] = PROXY_JWT_EDDSA };
	if (o->algorithms && !(o->algorithms & bit[want]))
		return err_set(CUSTOS_ERR_DENIED, "jwt: alg %s is not in auth.jwt.algorithms", alg);

	/* Signature first: nothing in the claims is read before it verifies. */
	span signing_input = span_of(token.ptr, (size_t)(d2 - token.ptr));
	bool verified = false;
	for (size_t i = 0; i < k->n && !verified; i++) {
		const struct jwk *j = &k->keys[i];
		if (j->alg != want || (has_kid && (!j->kid[0] || strcmp(kid, j->kid) != 0)))
			continue;
		verified = verify_sig(j, signing_input, sig, sl);
	}
	ENSURE(verified, CUSTOS_ERR_DENIED, "jwt: signature does not verify (kid %s)",
	       has_kid ? printable(kid, shown, sizeof(shown)) : "-");

	claims_raw = malloc(pc.len);
	ENSURE(claims_raw, CUSTOS_ERR_NOMEM, "jwt: out of memory");
	if (!b64url_decode(pc, claims_raw, pc.len, &cl) ||
	    jsonr_parse(span_of((const char *)claims_raw, cl), NULL, &cv) != CUSTOS_OK ||
	    cv.type != JSONR_OBJECT) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: claims are not a JSON object");
		goto out;
	}
	uint64_t exp = 0, nbf = 0, leeway = o->leeway_s;
	if (!claim_time(cv, "exp", true, &exp)) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: exp missing or not a whole number of seconds");
		goto out;
	}
	if (!claim_time(cv, "nbf", false, &nbf)) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: nbf not a whole number of seconds");
		goto out;
	}
	if (now_s > exp + leeway) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: expired");
		goto out;
	}
	if (nbf && now_s + leeway < nbf) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: not yet valid (nbf)");
		goto out;
	}
	char iss[256] = "", sub[PROXY_PRINCIPAL_MAX] = "";
	if (jsonr_obj_get(cv, "iss", &v) && !jstr(cv, "iss", iss, sizeof(iss))) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: iss is not a string of at most %zu bytes",
		            sizeof(iss) - 1);
		goto out;
	}
	if (o->n_issuers) {
		bool iss_ok = false;
		for (size_t i = 0; i < o->n_issuers; i++)
			iss_ok = iss_ok || strcmp(iss, o->issuers[i]) == 0;
		if (!iss_ok) {
			e = err_set(CUSTOS_ERR_DENIED, "jwt: issuer not accepted");
			goto out;
		}
	}
	if (o->n_audiences) {
		bool aud_ok = false;
		if (jsonr_obj_get(cv, "aud", &v)) {
			if (v.type == JSONR_STRING) {
				aud_ok = aud_accepted(o, v.str);
			} else if (v.type == JSONR_ARRAY) {
				jsonr_iter it;
				jsonr_val a;
				jsonr_iter_init(&it, v);
				while (jsonr_arr_next(&it, &a))
					if (a.type == JSONR_STRING && aud_accepted(o, a.str))
						aud_ok = true;
			}
		}
		if (!aud_ok) {
			e = err_set(CUSTOS_ERR_DENIED, "jwt: audience not accepted");
			goto out;
		}
	}
	const char *pclaim = o->principal_claim ? o->principal_claim : "sub";
	if (!jsonr_obj_get(cv, pclaim, &v)) {
		e = err_set(CUSTOS_ERR_DENIED, "jwt: claim %s missing", pclaim);
		goto out;
	}
	if (!jstr(cv, pclaim, sub, sizeof(sub)) || !principal_ok(sub)) {
		e = err_set(CUSTOS_ERR_DENIED,
		            "jwt: claim %s is not a string of 1 to %d bytes without control "
		            "characters",
		            pclaim, JWT_PRINCIPAL_MAX);
		goto out;
	}
	id->jwt_iss = xstrdup(iss);
	id->jwt_sub = xstrdup(sub);
	/* A `sub` is unique within its issuer (RFC 7519 4.1.2, OIDC Core 2): where more than one
	 * issuer is accepted, two issuers' "u1" are two callers. */
	id->jwt_iss_names = o->n_issuers != 1;
	if (jsonr_obj_get(cv, "groups", &v) && v.type == JSONR_ARRAY) {
		jsonr_iter it;
		jsonr_val g;
		jsonr_iter_init(&it, v);
		/* the cut the policy applies too (policy.h, POLICY_MAX_JWT_GROUPS), so that
		 * `policy test` predicts which groups a caller has */
		_Static_assert(CUSTOS_ARRAY_LEN(id->jwt_groups) == POLICY_MAX_JWT_GROUPS,
		               "JWT group caps differ");
		while (jsonr_arr_next(&it, &g) &&
		       id->n_jwt_groups < CUSTOS_ARRAY_LEN(id->jwt_groups)) {
			char gs[POLICY_MAX_JWT_GROUP_BYTES + 1];
			if (g.type == JSONR_STRING &&
			    jsonr_unescape_cstr(g.str, gs, sizeof(gs)) == CUSTOS_OK)
				id->jwt_groups[id->n_jwt_groups++] = xstrdup(gs);
		}
	}
	e = CUSTOS_OK;
out:
	free(claims_raw);
	return e;
}
