/*
 * Body hashes on egress: under an `audit: bodies_hashed` (or `bodies`) obligation an egress
 * call's egress.request event carries the SHA-256 of the request body the model sent, of the
 * body forwarded when inspection rewrote it, and of the response body as delivered to the
 * model, with the field names ingress uses (docs/EGRESS.md "Body hashes"). Never the bodies.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "custos/core.h"
#include "custos/policy.h"
#include "egress_int.h"

struct ehash {
	EVP_MD_CTX *req;  /* the request body streamed so far; NULL before its first byte */
	EVP_MD_CTX *resp; /* the response body delivered so far; NULL: none begun, or given up */
	bool req_bad;     /* a digest step failed: no request digest rather than a wrong one */
	bool req_done, resp_done;
	char req_hex[65], fwd_hex[65], resp_hex[65];
};

static EVP_MD_CTX *md_new(void)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	if (m && EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(m);
		m = NULL;
	}
	return m;
}

/* Ends m (freed) into hex: false when a step failed. */
static bool md_end(EVP_MD_CTX *m, char hex[65])
{
	bool ok = sha256_final_hex(m, hex);
	EVP_MD_CTX_free(m);
	return ok;
}

void egress_hash_open(erec *r)
{
	if (r->hash == NULL && r->audit >= POLICY_AUDIT_BODIES_HASHED)
		r->hash = xcalloc(1, sizeof(*r->hash));
}

void egress_hash_request(erec *r, span d)
{
	struct ehash *h = r->hash;
	if (h == NULL || h->req_done || h->req_bad || d.len == 0)
		return;
	if (h->req == NULL && (h->req = md_new()) == NULL) {
		h->req_bad = true;
		return;
	}
	if (EVP_DigestUpdate(h->req, d.ptr, d.len) != 1) {
		EVP_MD_CTX_free(h->req);
		h->req = NULL;
		h->req_bad = true;
	}
}

void egress_hash_request_end(erec *r)
{
	struct ehash *h = r->hash;
	if (h == NULL || h->req_done || h->req_bad)
		return;
	EVP_MD_CTX *m = h->req ? h->req : md_new(); /* no byte: the empty body's digest */
	h->req = NULL;
	h->req_done = md_end(m, h->req_hex);
	h->req_bad = !h->req_done;
}

void egress_hash_request_whole(erec *r, span body)
{
	struct ehash *h = r->hash;
	if (h == NULL || h->req_done || h->req_bad)
		return;
	h->req_done = sha256_hex(body, h->req_hex);
	h->req_bad = !h->req_done;
}

void egress_hash_forwarded(erec *r, span body)
{
	struct ehash *h = r->hash;
	char hex[65];
	if (h == NULL || !h->req_done || !sha256_hex(body, hex))
		return;
	if (strcmp(hex, h->req_hex) != 0)
		memcpy(h->fwd_hex, hex, sizeof(hex));
}

void egress_hash_response_begin(erec *r)
{
	struct ehash *h = r->hash;
	if (h == NULL)
		return;
	EVP_MD_CTX_free(h->resp);
	h->resp = md_new();
	h->resp_done = false;
}

void egress_hash_response(erec *r, span d)
{
	struct ehash *h = r->hash;
	if (h == NULL || h->resp == NULL || h->resp_done || d.len == 0)
		return;
	if (EVP_DigestUpdate(h->resp, d.ptr, d.len) != 1) {
		EVP_MD_CTX_free(h->resp);
		h->resp = NULL;
	}
}

void egress_hash_response_end(erec *r)
{
	struct ehash *h = r->hash;
	if (h == NULL || h->resp == NULL || h->resp_done)
		return;
	EVP_MD_CTX *m = h->resp;
	h->resp = NULL;
	h->resp_done = md_end(m, h->resp_hex);
}

void egress_hash_response_drop(erec *r)
{
	struct ehash *h = r->hash;
	if (h == NULL)
		return;
	EVP_MD_CTX_free(h->resp);
	h->resp = NULL;
	h->resp_done = false;
}

void egress_hash_audit(erec *r, audit_rec *ev)
{
	struct ehash *h = r->hash;
	if (h == NULL)
		return;
	audit_rec_cstr(ev, "audit_level", policy_audit_level_name((policy_audit_level)r->audit));
	if (h->req_done)
		audit_rec_cstr(ev, "request_body_sha256", h->req_hex);
	if (h->req_done && h->fwd_hex[0])
		audit_rec_cstr(ev, "request_body_forwarded_sha256", h->fwd_hex);
	if (h->resp_done)
		audit_rec_cstr(ev, "response_body_sha256", h->resp_hex);
}

void egress_hash_free(erec *r)
{
	struct ehash *h = r->hash;
	if (h == NULL)
		return;
	EVP_MD_CTX_free(h->req);
	EVP_MD_CTX_free(h->resp);
	free(h);
	r->hash = NULL;
}
