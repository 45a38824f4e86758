/*
 * SHA-256 digests as 64 lowercase hex digits: the body hashes of ingress and egress events
 * (`audit: bodies_hashed`) share these.
 */
#include <openssl/evp.h>

#include "custos/core.h"

bool sha256_hex(span d, char out[65])
{
	uint8_t md[32];
	unsigned n = 0;
	if (EVP_Digest(d.ptr, d.len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return false;
	num_hex(md, 32, out);
	return true;
}

bool sha256_final_hex(struct evp_md_ctx_st *m, char out[65])
{
	uint8_t md[32];
	unsigned n = 0;
	if (m == NULL || EVP_DigestFinal_ex(m, md, &n) != 1 || n != 32)
		return false;
	num_hex(md, 32, out);
	return true;
}
