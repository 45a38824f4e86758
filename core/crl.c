/*
 * Certificate revocation lists from a PEM file into an OpenSSL verify store: one loader for the
 * proxy's contexts and the audit shipper's, so that every setting that takes a CRL file reads
 * it, refuses it and fails closed the same way.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>

#include "custos/crl.h"

custos_err tls_openssl_err(custos_err code, const char *what)
{
	char msg[256] = "";
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, msg, sizeof(msg));
	ERR_clear_error();
	return err_set(code, "%s%s%s", what, e ? ": " : "", msg);
}

custos_err tls_pem_infos_load(const char *path, size_t max, const char *setting, const char *kind,
                              uint8_t digest[32], STACK_OF(X509_INFO) * *out)
{
	buf b;
	custos_err e;

	*out = NULL;
	buf_init(&b, max);
	if ((e = file_load(path, FILE_ANY, max, &b)) != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "%s", setting);
	}
	if (digest != NULL &&
	    EVP_Digest(buf_ptr(&b), buf_used(&b), digest, NULL, EVP_sha256(), NULL) != 1) {
		buf_free(&b);
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, "digest");
	}
	BIO *bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	*out = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	buf_free(&b);
	if (*out == NULL) {
		char what[512];
		snprintf(what, sizeof(what), "%s %s: not a %s", setting, path, kind);
		return tls_openssl_err(CUSTOS_ERR_CRYPTO, what);
	}
	return CUSTOS_OK;
}

custos_err tls_crl_load(SSL_CTX *ctx, const char *path, const char *setting, uint8_t digest[32])
{
	return tls_crl_load_ex(ctx, path, setting, digest, NULL);
}

custos_err tls_crl_load_ex(SSL_CTX *ctx, const char *path, const char *setting, uint8_t digest[32],
                           size_t *expired)
{
	custos_err e = CUSTOS_OK;
	size_t ncrls = 0, nexpired = 0;
	STACK_OF(X509_INFO) * infos;

	GUARD(tls_pem_infos_load(path, CUSTOS_CRL_FILE_MAX, setting, "PEM CRL file", digest,
	                         &infos));
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	for (int i = 0; i < sk_X509_INFO_num(infos) && e == CUSTOS_OK; i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);
		/* A certificate here would become a trust anchor no CA setting names. */
		if (xi->x509 != NULL)
			e = err_set(
			        CUSTOS_ERR_INVAL,
			        "%s %s: holds a certificate; the file takes CRLs only (X509 CRL "
			        "blocks), the CAs go in the CA setting",
			        setting, path);
		else if (xi->crl != NULL && X509_STORE_add_crl(store, xi->crl) != 1)
			e = tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
		else if (xi->crl != NULL) {
			const ASN1_TIME *next = X509_CRL_get0_nextUpdate(xi->crl);
			ncrls++;
			if (next != NULL && X509_cmp_current_time(next) <= 0)
				nexpired++;
		}
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	if (e != CUSTOS_OK)
		return e;
	ERR_clear_error(); /* PEM's end of input */
	if (ncrls == 0)
		return err_set(CUSTOS_ERR_INVAL, "%s %s: no PEM CRL in it (X509 CRL blocks)",
		               setting, path);
	if (expired != NULL)
		*expired = nexpired; /* the caller decides */
	else if (nexpired > 0)
		log_warn("tls: %s %s: %zu of its %zu CRL(s) past their nextUpdate: every "
		         "certificate they cover is refused (CRL has expired) until a newer CRL is "
		         "loaded",
		         setting, path, nexpired, ncrls);
	X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	return CUSTOS_OK;
}

custos_err tls_ca_file_load(SSL_CTX *ctx, const char *path, const char *setting)
{
	return tls_ca_file_load_ex(ctx, path, setting, CUSTOS_CA_FILE_MAX, NULL, false);
}

custos_err tls_ca_file_load_ex(SSL_CTX *ctx, const char *path, const char *setting, size_t max,
                               uint8_t digest[32], bool client_ca_names)
{
	custos_err e = CUSTOS_OK;
	size_t ncerts = 0;
	STACK_OF(X509_INFO) * infos;

	GUARD(tls_pem_infos_load(path, max, setting, "PEM certificate file", digest, &infos));
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	for (int i = 0; i < sk_X509_INFO_num(infos) && e == CUSTOS_OK; i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);
		if (xi->x509 != NULL) {
			if (X509_STORE_add_cert(store, xi->x509) != 1 ||
			    (client_ca_names && SSL_CTX_add_client_CA(ctx, xi->x509) != 1))
				e = tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
			ncerts++;
		}
		if (e == CUSTOS_OK && xi->crl != NULL && X509_STORE_add_crl(store, xi->crl) != 1)
			e = tls_openssl_err(CUSTOS_ERR_CRYPTO, path);
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	if (e == CUSTOS_OK && ncerts == 0)
		e = err_set(CUSTOS_ERR_INVAL, "%s %s: no PEM certificate in it", setting, path);
	return e;
}
