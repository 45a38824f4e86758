/*
 * Certificate revocation lists for any OpenSSL context custos verifies a peer with: the
 * listeners' and the admin API's client certificates, TLS upstreams and origins (proxy/), and
 * the audit shipper's SIEM servers (audit/), which cannot reach proxy/ (STYLE.md 13).
 */
#ifndef CUSTOS_CRL_H
#define CUSTOS_CRL_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "custos/core.h"

/* err_set(code, "what: <OpenSSL's first queued error>") (just what when the queue is empty),
 * the queue cleared: OpenSSL failures in the proxy's TLS code and in the CRL loader. */
custos_err tls_openssl_err(custos_err code, const char *what);

/* The largest CRL file read: a large public CA's CRL is a few MiB. */
#define CUSTOS_CRL_FILE_MAX (1u << 25)

/* Loads the CRLs of the PEM file at path (X509 CRL blocks, one or more; a certificate in it is
 * refused) into ctx's verify store and turns on CRL checks for every certificate of a chain
 * (X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL): each issuing CA of a verified chain then
 * needs a CRL, a revoked certificate fails verification (certificate revoked), a CRL past its
 * nextUpdate too (CRL has expired; warned here). setting names the configuration key in
 * errors. digest, when not NULL, gets the SHA-256 of the file's bytes. */
custos_err tls_crl_load(SSL_CTX *ctx, const char *path, const char *setting,
                        uint8_t digest[32]) CUSTOS_WUR;
/* The same; with expired not NULL, the number of CRLs past their nextUpdate goes there instead
 * of the warning (a caller that refuses such a file says so itself). */
custos_err tls_crl_load_ex(SSL_CTX *ctx, const char *path, const char *setting, uint8_t digest[32],
                           size_t *expired) CUSTOS_WUR;

/* The largest CA bundle read (a system bundle is a few hundred KiB). */
#define CUSTOS_CA_FILE_MAX (1u << 25)

/* What SSL_CTX_load_verify_locations(ctx, path, NULL) does (the PEM certificates of path, and
 * any CRLs beside them, into ctx's verify store), from one file_load of the file: OpenSSL's
 * own fopen() waits forever on a FIFO put in the file's place, so a reload would hang. At
 * least one certificate is required. setting names the configuration key in errors. */
custos_err tls_ca_file_load(SSL_CTX *ctx, const char *path, const char *setting) CUSTOS_WUR;
/* The same, read up to max bytes; digest, when not NULL, gets the SHA-256 of the bytes read;
 * client_ca_names: each certificate also goes to the list of acceptable CA names a server
 * sends in its CertificateRequest (SSL_CTX_add_client_CA). */
custos_err tls_ca_file_load_ex(SSL_CTX *ctx, const char *path, const char *setting, size_t max,
                               uint8_t digest[32], bool client_ca_names) CUSTOS_WUR;
/* The PEM blocks (certificates, CRLs) of the file at path, read with file_load (a regular
 * file, at most max bytes) and parsed from memory: *out is the caller's (sk_X509_INFO_pop_free).
 * setting names the configuration key and kind the file ("PEM CRL file") in errors; digest,
 * when not NULL, gets the SHA-256 of the bytes read. */
custos_err tls_pem_infos_load(const char *path, size_t max, const char *setting, const char *kind,
                              uint8_t digest[32], STACK_OF(X509_INFO) * *out) CUSTOS_WUR;

#endif
