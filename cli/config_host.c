/*
 * custos config check --host: what `custos up` would refuse on this host, found without starting
 * it and without creating or changing any file (stat, access and read-only opens only). Each file
 * is checked as the user that opens it: the invoking user for what `up` opens before the proxy
 * drops privileges, proxy.user (in a child that becomes that user) for what the proxy and its
 * children open afterwards and for what every reload reads again.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"
#include "custos/audit.h"
#include "custos/config.h"
#include "custos/crl.h"
#include "custos/policy.h"
#include "custos/proxy.h"

#define HC_REPORT_MAX (1u << 20) /* what the proxy user's pass may send back */
#define HC_PEM_MAX    (1u << 20) /* a certificate, key or CA bundle read by the TLS checks */
#define HC_CRL_MAX    CUSTOS_CRL_FILE_MAX /* a CRL file, as tls_crl_load reads it */

struct hc_ctx {
	const custos_config *cfg;
	diag_list *d;
	char who[96];  /* "" as the invoking user; " by proxy.user custos (uid 999)" */
	bool switched; /* the proxy's pass runs as another user than the invoking one */
};

static void report(struct hc_ctx *x, diag_severity sev, const char *at, const char *hint,
                   const char *fmt, ...) CUSTOS_PRINTF(5, 6);
static void report(struct hc_ctx *x, diag_severity sev, const char *at, const char *hint,
                   const char *fmt, ...)
{
	char msg[1024];
	unsigned line = 0, col = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at == NULL || !config_where(x->cfg, at, &line, &col))
		line = col = 0; /* a default: written nowhere, the message names the setting */
	diag_add(x->d, sev, x->cfg->source, line, col, hint, "%s", msg);
}

/* The egress proxy decides which data source a call is from the policy's `data:` (as policy
 * test does): a custos.yaml source whose own url the policy's entry of the same id does not
 * cover has calls the policy places nowhere (denied unless a rule allows them without data). */
static void catalogue_scope(struct hc_ctx *x, const custos_config *cfg, const policy *p)
{
	for (size_t i = 0; i < cfg->n_data_sources; i++) {
		const cfg_data_source *s = &cfg->data_sources[i];
		const policy_data_source *pd = policy_find_data_id(p, span_cstr(s->id));
		if (pd == NULL || policy_find_data_url(p, span_cstr(s->url)) == pd)
			continue;
		report(x, DIAG_WARNING, s->url, "make the two urls the same",
		       "data_sources[%zu] (%s): url %s is not within the policy's data source %s "
		       "(url %s): the egress proxy places a call by the policy's url, so calls "
		       "outside it have no data source and are denied unless a rule allows them "
		       "without `data`",
		       i, s->id, s->url, pd->id, pd->url);
	}
}

/* A finding of cli_isolation_check, at the model's id. */
static void iso_report(void *arg, bool error, const cfg_model *m, const char *msg)
{
	report(arg, error ? DIAG_ERROR : DIAG_WARNING, m->id,
	       error ? "custos up refuses to start" : NULL, "%s", msg);
}

/* A file opened for reading: it exists, is a regular file (nothing else is opened: a device
 * or FIFO could react to an open), opens read-only and, with check_mode, passes the mode rule
 * `up` applies (key files: no access by group or others). */
static bool check_read(struct hc_ctx *x, diag_severity sev, const char *setting, const char *path,
                       const char *at, file_kind kind, bool check_mode, const char *when)
{
	struct stat st;
	const char *hint = when;
	bool ok = true;

	if (path == NULL)
		return false;
	if (stat(path, &st) == -1) {
		report(x, sev, at, hint, "%s '%s': %s%s", setting, path, strerror(errno), x->who);
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		report(x, sev, at, hint, "%s '%s': not a regular file", setting, path);
		return false;
	}
	int fd;
	do
		fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	while (fd == -1 && errno == EINTR);
	if (fd == -1) {
		report(x, sev, at, hint, "%s '%s': cannot be read%s: %s", setting, path, x->who,
		       strerror(errno));
		return false;
	}
	if (check_mode && file_check_mode(fd, path, kind) != CUSTOS_OK) {
		report(x, sev, at, hint, "%s: %s", setting, err_msg());
		ok = false;
	}
	close(fd);
	return ok;
}

/* The directory holding path (path cut at its last '/'; "." for a bare name). */
static void dir_of(const char *path, char *out, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(out, size, ".");
	else if (slash == path)
		snprintf(out, size, "/");
	else
		snprintf(out, size, "%.*s", (int)(slash - path), path);
}

/* A directory something is created in (a socket, a file, a directory): it must exist and be
 * writable. Returns whether it is. */
static bool check_parent(struct hc_ctx *x, diag_severity sev, const char *setting, const char *path,
                         const char *at, const char *what, const char *hint)
{
	char dir[CFG_MAX_PATH_LEN];
	struct stat st;

	dir_of(path, dir, sizeof(dir));
	if (stat(dir, &st) == -1) {
		report(x, sev, at, hint, "%s '%s': its directory %s: %s%s", setting, path, dir,
		       strerror(errno), x->who);
		return false;
	}
	if (!S_ISDIR(st.st_mode)) {
		report(x, sev, at, hint, "%s '%s': %s is not a directory", setting, path, dir);
		return false;
	}
	if (access(dir, W_OK | X_OK) == -1) {
		report(x, sev, at, hint, "%s '%s': %s cannot be made in %s%s: %s", setting, path,
		       what, dir, x->who, strerror(errno));
		return false;
	}
	return true;
}

/* A file appended to and created when missing (log.file). */
static void check_append(struct hc_ctx *x, diag_severity sev, const char *setting, const char *path,
                         const char *at, const char *hint)
{
	struct stat st;

	if (path == NULL)
		return;
	if (stat(path, &st) == -1) {
		if (errno == ENOENT)
			check_parent(x, sev, setting, path, at, "the file", hint);
		else
			report(x, sev, at, hint, "%s '%s': %s%s", setting, path, strerror(errno),
			       x->who);
		return;
	}
	if (!S_ISREG(st.st_mode))
		report(x, sev, at, hint, "%s '%s': not a regular file", setting, path);
	else if (access(path, W_OK) == -1)
		report(x, sev, at, hint, "%s '%s': cannot be written%s: %s", setting, path, x->who,
		       strerror(errno));
}

/* A file of the audit directory the proxy's writer or shipper opens, when it is there. */
static void check_in_dir(struct hc_ctx *x, const char *dir, const char *name, int mode,
                         const char *at)
{
	char path[CFG_MAX_PATH_LEN + 64];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (lstat(path, &st) == -1 && errno == ENOENT)
		return;
	if (access(path, mode) == -1)
		report(x, DIAG_ERROR, at, "the audit writer and the SIEM shipper run as proxy.user",
		       "audit.dir: %s cannot be %s%s: %s", path,
		       mode & W_OK ? "read and written" : "read", x->who, strerror(errno));
}

/* audit.dir as the proxy's writer and shipper use it: a directory the writer writes, with the
 * lock, the head and the log files in it (the newest one appended to), and ship/ with the
 * sinks' cursors, which the shipper writes. */
static void check_audit_dir(struct hc_ctx *x)
{
	const cfg_audit *a = &x->cfg->audit;
	struct stat st;
	const char *hint = "the audit writer (the proxy's child) writes it as proxy.user";

	if (stat(a->dir, &st) == -1) {
		if (errno != ENOENT)
			report(x, DIAG_ERROR, a->dir, hint, "audit.dir '%s': %s%s", a->dir,
			       strerror(errno), x->who);
		return; /* missing: `up` makes it (the invoking user's pass checked where) */
	}
	if (!S_ISDIR(st.st_mode)) {
		report(x, DIAG_ERROR, a->dir, NULL, "audit.dir '%s': not a directory", a->dir);
		return;
	}
	if (access(a->dir, R_OK | W_OK | X_OK) == -1) {
		report(x, DIAG_ERROR, a->dir, hint, "audit.dir '%s': cannot be written%s: %s",
		       a->dir, x->who, strerror(errno));
		return;
	}
	check_in_dir(x, a->dir, "audit.lock", R_OK | W_OK, a->dir);
	check_in_dir(x, a->dir, "audit.head", R_OK | W_OK, a->dir);
	/* The sinks' cursors: in ship/ (an older custos' cursor.<id> in the directory itself is
	 * moved there by the writer at start, so it is checked too). */
	check_in_dir(x, a->dir, "ship", R_OK | W_OK | X_OK, a->dir);
	for (size_t i = 0; i < a->n_sinks; i++) {
		char name[CFG_MAX_ID_LEN + 16];
		snprintf(name, sizeof(name), "ship/cursor.%s", a->sinks[i].id);
		check_in_dir(x, a->dir, name, R_OK | W_OK, a->sinks[i].id);
		check_in_dir(x, a->dir, name + 5, R_OK | W_OK, a->sinks[i].id);
	}
	char **files = NULL;
	size_t n = 0;
	if (audit_list_files(a->dir, &files, &n) != CUSTOS_OK) {
		report(x, DIAG_ERROR, a->dir, hint, "audit.dir: %s", err_msg());
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *slash = strrchr(files[i], '/');
		check_in_dir(x, a->dir, slash ? slash + 1 : files[i],
		             i + 1 == n ? R_OK | W_OK : R_OK, a->dir);
	}
	audit_paths_free(files, n);
}

/* ---- what the files hold: parsed with OpenSSL, read-only, nothing else opened */

/* The reason OpenSSL gave last (its queue cleared), or what when it gave none. */
static const char *ossl_why(char *out, size_t n, const char *what)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(out, n, "%s", what);
	else
		ERR_error_string_n(e, out, n);
	ERR_clear_error();
	return out;
}

/* A key protected by a passphrase is not asked for one (custos reads unencrypted keys). */
static int no_passphrase(char *b, int size, int rwflag, void *u)
{
	(void)b;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* path's bytes in b, or false when it cannot be read (check_read reported why). */
static bool pem_read(const char *path, buf *b)
{
	buf_init(b, HC_PEM_MAX);
	if (path != NULL && file_load(path, FILE_ANY, HC_PEM_MAX, b) == CUSTOS_OK)
		return true;
	buf_free_secret(b);
	return false;
}

/* An ASN1 time as "2026-11-27 20:30:00 UTC" (UTCTime or GeneralizedTime, as certificates
 * write them), else its raw text. */
static void asn1_time_text(const ASN1_TIME *t, char *out, size_t n)
{
	const char *s = (const char *)ASN1_STRING_get0_data(t);
	int len = ASN1_STRING_length(t);
	int y = len == 13 ? 2 : 4; /* YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ */

	if (s == NULL || (len != 13 && len != 15) || s[len - 1] != 'Z') {
		snprintf(out, n, "%.*s", s ? (len > 32 ? 32 : len) : 0, s ? s : "");
		return;
	}
	snprintf(out, n, "%s%.*s-%.2s-%.2s %.2s:%.2s:%.2s UTC",
	         len == 13 ? (s[0] >= '5' ? "19" : "20") : "", y, s, s + y, s + y + 2, s + y + 4,
	         s + y + 6, s + y + 8);
}

/* A certificate's validity now: not yet valid or expired is reported. */
static void check_validity(struct hc_ctx *x, diag_severity sev, const char *setting,
                           const char *path, X509 *c, const char *hint)
{
	char when[48];

	if (X509_cmp_current_time(X509_get0_notBefore(c)) >= 0) {
		asn1_time_text(X509_get0_notBefore(c), when, sizeof(when));
		report(x, sev, path, hint, "%s '%s': not valid yet (not before %s)", setting, path,
		       when);
	}
	if (X509_cmp_current_time(X509_get0_notAfter(c)) <= 0) {
		asn1_time_text(X509_get0_notAfter(c), when, sizeof(when));
		report(x, sev, path, hint, "%s '%s': expired (not after %s)", setting, path, when);
	}
}

/* A listener's certificate (PEM, the leaf first, its validity) and key (PEM, unencrypted,
 * the certificate's): what the proxy's TLS setup would refuse at start, or serve expired. */
/* Returns the certificate's key type (EVP_PKEY_get_base_id), 0 when it has none. */
static int check_cert_key(struct hc_ctx *x, diag_severity sev, const char *csetting,
                          const char *cert, const char *ksetting, const char *key, const char *hint)
{
	int type = 0;
	char why[256];
	buf cb, kb;
	X509 *leaf = NULL;
	EVP_PKEY *pk = NULL;

	if (pem_read(cert, &cb)) {
		BIO *bio = BIO_new_mem_buf(buf_ptr(&cb), (int)buf_used(&cb));
		leaf = bio ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL) : NULL;
		BIO_free(bio);
		buf_free(&cb);
		if (leaf == NULL)
			report(x, sev, cert, hint, "%s '%s': no PEM certificate in it: %s",
			       csetting, cert,
			       ossl_why(why, sizeof(why), "no BEGIN CERTIFICATE block"));
		else
			check_validity(x, sev, csetting, cert, leaf, hint);
	}
	if (pem_read(key, &kb)) {
		BIO *bio = BIO_new_mem_buf(buf_ptr(&kb), (int)buf_used(&kb));
		pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
		BIO_free(bio);
		buf_free_secret(&kb);
		if (pk == NULL)
			report(x, sev, key, hint,
			       "%s '%s': no usable PEM private key in it (custos reads unencrypted "
			       "keys): %s",
			       ksetting, key,
			       ossl_why(why, sizeof(why), "no BEGIN PRIVATE KEY block"));
	}
	if (leaf != NULL && pk != NULL && X509_check_private_key(leaf, pk) != 1) {
		ERR_clear_error();
		report(x, sev, key, hint, "%s '%s': does not match the certificate %s", ksetting,
		       key, cert);
	}
	if (leaf != NULL && X509_get0_pubkey(leaf) != NULL)
		type = EVP_PKEY_get_base_id(X509_get0_pubkey(leaf));
	X509_free(leaf);
	EVP_PKEY_free(pk);
	return type;
}

/* A CA bundle: PEM that holds at least one certificate (a file of keys or of nothing verifies
 * no peer). */
static void check_ca_bundle(struct hc_ctx *x, diag_severity sev, const char *setting,
                            const char *path, const char *hint)
{
	char why[256];
	buf b;

	if (!pem_read(path, &b))
		return;
	BIO *bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	STACK_OF(X509_INFO) *infos =
	        bio ? PEM_X509_INFO_read_bio(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	buf_free(&b);
	int certs = 0;
	for (int i = 0; infos != NULL && i < sk_X509_INFO_num(infos); i++)
		if (sk_X509_INFO_value(infos, i)->x509 != NULL)
			certs++;
	if (infos == NULL)
		report(x, sev, path, hint, "%s '%s': not a PEM CA bundle: %s", setting, path,
		       ossl_why(why, sizeof(why), "unreadable PEM"));
	else if (certs == 0)
		report(x, sev, path, hint,
		       "%s '%s': no certificate in it (a CA bundle holds PEM "
		       "BEGIN CERTIFICATE blocks)",
		       setting, path);
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	ERR_clear_error();
}

/* A client certificate and its key (models[].upstream.cert/key, data_sources[].cert/key):
 * readable, the key a secret (check_mode: its mode), and with check_mode what they hold: a
 * certificate, a key, and that they match. prefix names the setting ("models[0] (m).upstream"). */
static void check_client_cert(struct hc_ctx *x, diag_severity sev, const char *prefix,
                              const char *cert, const char *key, file_kind secret_kind,
                              bool check_mode, const char *when)
{
	char cname[192], kname[192];

	if (cert == NULL || key == NULL)
		return;
	snprintf(cname, sizeof(cname), "%s.cert", prefix);
	snprintf(kname, sizeof(kname), "%s.key", prefix);
	bool ok = check_read(x, sev, cname, cert, cert, FILE_ANY, check_mode, when);
	ok = check_read(x, sev, kname, key, key, secret_kind, check_mode, when) && ok;
	if (ok && check_mode)
		check_cert_key(x, sev, cname, cert, kname, key, when);
}

/* PEM blocks of path (up to max bytes) as X509_INFOs; NULL when unreadable or not PEM. */
static STACK_OF(X509_INFO) * pem_infos(const char *path, size_t max)
{
	buf b;

	buf_init(&b, max);
	if (path == NULL || file_load(path, FILE_ANY, max, &b) != CUSTOS_OK) {
		buf_free(&b);
		return NULL;
	}
	BIO *bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	STACK_OF(X509_INFO) *infos =
	        bio ? PEM_X509_INFO_read_bio(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	buf_free(&b);
	return infos;
}

/* A CRL file (client_crl, crl_file) as the proxy loads it: PEM CRLs only, at least one. With
 * the CA bundle beside it (ca, NULL for the system store): every CA there without a CRL in the
 * file is named, since chains through it then fail (every certificate of a chain is checked);
 * a CRL past its nextUpdate is named too (the certificates it covers are refused). */
static void check_crl_file(struct hc_ctx *x, diag_severity sev, const char *setting,
                           const char *path, const char *ca, const char *hint)
{
	char why[256], when[64];

	if (path == NULL)
		return;
	STACK_OF(X509_INFO) *infos = pem_infos(path, HC_CRL_MAX);
	if (infos == NULL) {
		report(x, sev, path, hint, "%s '%s': not a PEM CRL file: %s", setting, path,
		       ossl_why(why, sizeof(why), "unreadable PEM"));
		ERR_clear_error();
		return;
	}
	int crls = 0, certs = 0;
	for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);
		certs += xi->x509 != NULL;
		if (xi->crl == NULL)
			continue;
		crls++;
		const ASN1_TIME *next = X509_CRL_get0_nextUpdate(xi->crl);
		if (next != NULL && X509_cmp_current_time(next) <= 0) {
			asn1_time_text(next, when, sizeof(when));
			report(x, DIAG_WARNING, path, "install a newer CRL from the CA",
			       "%s '%s': a CRL past its nextUpdate (%s): the certificates "
			       "it covers are refused (CRL has expired)",
			       setting, path, when);
		}
	}
	if (certs > 0)
		report(x, sev, path, "put the CAs in the CA setting, the CRLs alone here",
		       "%s '%s': holds a certificate; the file takes CRLs only", setting, path);
	else if (crls == 0)
		report(x, sev, path, hint, "%s '%s': no CRL in it (X509 CRL blocks)", setting,
		       path);
	STACK_OF(X509_INFO) *cas = crls > 0 && certs == 0 ? pem_infos(ca, HC_PEM_MAX) : NULL;
	for (int i = 0; cas != NULL && i < sk_X509_INFO_num(cas); i++) {
		X509 *c = sk_X509_INFO_value(cas, i)->x509;
		bool found = false;
		/* The proxy also takes CRLs that the CA bundle itself holds. */
		for (int j = 0; c != NULL && !found && j < sk_X509_INFO_num(infos); j++) {
			X509_CRL *crl = sk_X509_INFO_value(infos, j)->crl;
			found = crl != NULL && X509_NAME_cmp(X509_CRL_get_issuer(crl),
			                                     X509_get_subject_name(c)) == 0;
		}
		for (int j = 0; c != NULL && !found && j < sk_X509_INFO_num(cas); j++) {
			X509_CRL *crl = sk_X509_INFO_value(cas, j)->crl;
			found = crl != NULL && X509_NAME_cmp(X509_CRL_get_issuer(crl),
			                                     X509_get_subject_name(c)) == 0;
		}
		if (c != NULL && !found) {
			char cn[256];
			X509_NAME_oneline(X509_get_subject_name(c), cn, sizeof(cn));
			report(x, DIAG_WARNING, path, "add that CA's CRL to the file",
			       "%s '%s': no CRL from the CA %s (in %s): every certificate "
			       "it issued is refused (unable to get certificate CRL)",
			       setting, path, cn, ca);
		}
	}
	sk_X509_INFO_pop_free(cas, X509_INFO_free);
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	ERR_clear_error();
}

/* A listener's or admin.tls's certificate's OCSP response (ocsp), checked as the proxy loads
 * it: refused when it is not a good, verifiable response for the certificate; past its
 * nextUpdate it is loaded but not stapled (an error at start, as it is surely not what was
 * meant), and a warning when nextUpdate is less than a day away. */
static void check_ocsp(struct hc_ctx *x, diag_severity sev, const char *setting, const char *cert,
                       const char *ocsp, const char *hint)
{
	proxy_ocsp_info info;
	int64_t now = (int64_t)time(NULL);

	if (proxy_ocsp_check(cert, ocsp, &info) != CUSTOS_OK) {
		report(x, sev, ocsp, hint, "%s: %s", setting, err_msg());
		return;
	}
	if (info.next_update <= now)
		report(x, sev, ocsp,
		       "refresh it (openssl ocsp ... -respout, see docs/OPERATIONS.md) and reload",
		       "%s '%s': past its nextUpdate (%lld s ago): custos would load it but not "
		       "staple it",
		       setting, ocsp, (long long)(now - info.next_update));
	else if (info.next_update - now < 24 * 3600)
		report(x, DIAG_WARNING, ocsp, "is the job that refreshes it running?",
		       "%s '%s': its nextUpdate is %lld min away", setting, ocsp,
		       (long long)((info.next_update - now) / 60));
}

/* The listeners' certificates, keys and client CAs, the API-key file, the JWKS and the
 * upstreams' CA files and client certificates: read at start (sev DIAG_ERROR, the modes
 * checked: configuration files as such, TLS keys as secrets) and again by a reload
 * (DIAG_WARNING). */
static void check_auth_files(struct hc_ctx *x, const custos_config *cfg, diag_severity sev,
                             file_kind key_kind, file_kind secret_kind, bool check_mode,
                             const char *when)
{
	char name[160];

	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const cfg_listener *l = &cfg->listeners[i];
		int types[CFG_MAX_CERTS] = { 0 };
		for (size_t k = 0; l->tls.enabled && k < l->tls.n_certs && k < CFG_MAX_CERTS; k++) {
			snprintf(name, sizeof(name), "listeners[%zu] (%s).tls certificate", i,
			         l->id);
			check_read(x, sev, name, l->tls.certs[k].cert, l->tls.certs[k].cert,
			           FILE_ANY, check_mode, when);
			snprintf(name, sizeof(name), "listeners[%zu] (%s).tls key", i, l->id);
			check_read(x, sev, name, l->tls.certs[k].key, l->tls.certs[k].key,
			           secret_kind, check_mode, when);
			if (check_mode) { /* the start's pass: what the files hold, once */
				char cname[160];
				snprintf(cname, sizeof(cname),
				         "listeners[%zu] (%s).tls certificate", i, l->id);
				types[k] = check_cert_key(x, sev, cname, l->tls.certs[k].cert, name,
				                          l->tls.certs[k].key, when);
				/* OpenSSL keeps one certificate per key type (proxy/tls.c
				 * cert_type_unique refuses a second at start) */
				for (size_t j = 0; types[k] != 0 && j < k; j++)
					if (types[j] == types[k])
						report(x, sev, l->tls.certs[k].cert, when,
						       "tls: %s and %s are both %s certificates: a "
						       "listener takes one certificate per key "
						       "type "
						       "(e.g. one ECDSA and one RSA)",
						       l->tls.certs[j].cert, l->tls.certs[k].cert,
						       types[k] == EVP_PKEY_EC    ? "ECDSA"
						       : types[k] == EVP_PKEY_RSA ? "RSA"
						       : types[k] == EVP_PKEY_RSA_PSS
						               ? "RSA-PSS"
						               : OBJ_nid2sn(types[k]));
			}
			if (l->tls.certs[k].ocsp == NULL)
				continue;
			snprintf(name, sizeof(name), "listeners[%zu] (%s).tls ocsp", i, l->id);
			if (check_read(x, sev, name, l->tls.certs[k].ocsp, l->tls.certs[k].ocsp,
			               FILE_ANY, check_mode, when) &&
			    check_mode)
				check_ocsp(x, sev, name, l->tls.certs[k].cert, l->tls.certs[k].ocsp,
				           when);
		}
		snprintf(name, sizeof(name), "listeners[%zu] (%s).tls.client_ca", i, l->id);
		if (l->tls.enabled) {
			check_read(x, sev, name, l->tls.client_ca, l->tls.client_ca, FILE_ANY,
			           check_mode, when);
			if (check_mode)
				check_ca_bundle(x, sev, name, l->tls.client_ca, when);
		}
		snprintf(name, sizeof(name), "listeners[%zu] (%s).tls.client_crl", i, l->id);
		if (l->tls.enabled && l->tls.client_crl) {
			if (check_read(x, sev, name, l->tls.client_crl, l->tls.client_crl, FILE_ANY,
			               check_mode, when) &&
			    check_mode)
				check_crl_file(x, sev, name, l->tls.client_crl, l->tls.client_ca,
				               when);
		}
	}

	/* admin.tls: read at start and again by a reload, as the listeners' */
	const cfg_tls_server *at = &cfg->admin.tls;
	if (cfg->admin.enabled && at->enabled && at->n_certs == 1) {
		check_read(x, sev, "admin.tls.cert", at->certs[0].cert, at->certs[0].cert, FILE_ANY,
		           check_mode, when);
		check_read(x, sev, "admin.tls.key", at->certs[0].key, at->certs[0].key, secret_kind,
		           check_mode, when);
		if (check_mode)
			check_cert_key(x, sev, "admin.tls.cert", at->certs[0].cert, "admin.tls.key",
			               at->certs[0].key, when);
		if (at->certs[0].ocsp &&
		    check_read(x, sev, "admin.tls.ocsp", at->certs[0].ocsp, at->certs[0].ocsp,
		               FILE_ANY, check_mode, when) &&
		    check_mode)
			check_ocsp(x, sev, "admin.tls.ocsp", at->certs[0].cert, at->certs[0].ocsp,
			           when);
		if (at->client_ca) {
			check_read(x, sev, "admin.tls.client_ca", at->client_ca, at->client_ca,
			           FILE_ANY, check_mode, when);
			if (check_mode)
				check_ca_bundle(x, sev, "admin.tls.client_ca", at->client_ca, when);
		}
		if (at->client_crl) {
			if (check_read(x, sev, "admin.tls.client_crl", at->client_crl,
			               at->client_crl, FILE_ANY, check_mode, when) &&
			    check_mode)
				check_crl_file(x, sev, "admin.tls.client_crl", at->client_crl,
				               at->client_ca, when);
		}
	}

	if (check_read(x, sev, "auth.api_keys_file", cfg->auth.api_keys_file,
	               cfg->auth.api_keys_file, key_kind, check_mode, when) &&
	    check_mode) {
		/* its lines parsed as `up` parses them, after the inline keys */
		proxy_options o;
		memset(&o, 0, sizeof(o));
		o.api_keys = xcalloc(PROXY_MAX_API_KEYS, sizeof(o.api_keys[0]));
		for (size_t i = 0; i < cfg->auth.n_api_keys && i < PROXY_MAX_API_KEYS; i++) {
			o.api_keys[i].principal = xstrdup(cfg->auth.api_keys[i].id);
			memcpy(o.api_keys[i].sha256, cfg->auth.api_keys[i].sha256, 32);
		}
		o.napi_keys = cfg->auth.n_api_keys;
		if (cli_api_keys_load(cfg->auth.api_keys_file, &o) != CUSTOS_OK)
			report(x, sev, cfg->auth.api_keys_file, when, "auth.api_keys_file: %s",
			       err_msg());
		proxy_options_free(&o);
	}
	if (cfg->auth.jwt.enabled &&
	    check_read(x, sev, "auth.jwt.jwks_file", cfg->auth.jwt.jwks_file,
	               cfg->auth.jwt.jwks_file, key_kind, check_mode, when) &&
	    check_mode && proxy_jwks_check(cfg->auth.jwt.jwks_file) != CUSTOS_OK)
		report(x, sev, cfg->auth.jwt.jwks_file, when, "auth.jwt.jwks_file: %s", err_msg());
	for (size_t i = 0; i < cfg->n_models; i++) {
		snprintf(name, sizeof(name), "models[%zu] (%s).upstream.ca_file", i,
		         cfg->models[i].id);
		check_read(x, sev, name, cfg->models[i].upstream.ca_file,
		           cfg->models[i].upstream.ca_file, FILE_ANY, check_mode, when);
		if (check_mode)
			check_ca_bundle(x, sev, name, cfg->models[i].upstream.ca_file, when);
		snprintf(name, sizeof(name), "models[%zu] (%s).upstream", i, cfg->models[i].id);
		check_client_cert(x, sev, name, cfg->models[i].upstream.cert,
		                  cfg->models[i].upstream.key, secret_kind, check_mode, when);
	}
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_upstream *u = &cfg->models[i].upstream;
		snprintf(name, sizeof(name), "models[%zu] (%s).upstream.crl_file", i,
		         cfg->models[i].id);
		if (check_read(x, sev, name, u->crl_file, u->crl_file, FILE_ANY, check_mode,
		               when) &&
		    check_mode)
			check_crl_file(x, sev, name, u->crl_file, u->ca_file, when);
	}
}

/* SSL_CERT_FILE and SSL_CERT_DIR, when set, must name what OpenSSL will read there (a
 * regular file; directories), absolute: the confined processes can read nothing else, so a
 * missing one is refused at start rather than a peer failing verification later. `custos up`
 * and `config check --host` both run this, so both say the same. */
custos_err cli_trust_env_check(void)
{
	const char *f = getenv("SSL_CERT_FILE"), *d = getenv("SSL_CERT_DIR");
	struct stat st;

	if (f != NULL) {
		ENSURE(f[0] == '/', CUSTOS_ERR_INVAL,
		       "SSL_CERT_FILE='%s': not an absolute path (the trust store OpenSSL reads "
		       "from custos' environment)",
		       f);
		if (stat(f, &st) == -1)
			return err_sys(
			        "SSL_CERT_FILE=%s (the trust store OpenSSL reads from custos' "
			        "environment)",
			        f);
		ENSURE(S_ISREG(st.st_mode), CUSTOS_ERR_INVAL,
		       "SSL_CERT_FILE=%s: not a regular file (a PEM bundle of CA certificates)", f);
		if (access(f, R_OK) == -1)
			return err_sys("SSL_CERT_FILE=%s", f);
	}
	for (const char *p = d; p != NULL && *p != '\0';) {
		const char *c = strchr(p, ':');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		char one[CFG_MAX_PATH_LEN];
		ENSURE(l < sizeof(one), CUSTOS_ERR_LIMIT, "SSL_CERT_DIR: a path is too long");
		memcpy(one, p, l);
		one[l] = '\0';
		p = c ? c + 1 : NULL;
		if (l == 0)
			continue; /* OpenSSL skips an empty entry too */
		ENSURE(one[0] == '/', CUSTOS_ERR_INVAL,
		       "SSL_CERT_DIR entry '%s': not an absolute path (the trust store OpenSSL "
		       "reads from custos' environment)",
		       one);
		if (stat(one, &st) == -1)
			return err_sys("SSL_CERT_DIR entry %s (the trust store OpenSSL reads from "
			               "custos' environment)",
			               one);
		ENSURE(S_ISDIR(st.st_mode), CUSTOS_ERR_INVAL,
		       "SSL_CERT_DIR entry %s: not a directory (hashed CA certificates)", one);
		if (access(one, R_OK | X_OK) == -1)
			return err_sys("SSL_CERT_DIR entry %s", one);
	}
	return CUSTOS_OK;
}

/* What `up` opens before the proxy changes user: as the invoking user (root under systemd). */
static void pass_invoker(struct hc_ctx *x)
{
	const custos_config *cfg = x->cfg;
	const char *start = "custos up opens it at start";
	char name[160];

	if (cli_trust_env_check() != CUSTOS_OK)
		report(x, DIAG_ERROR, NULL, "custos up refuses to start", "%s", err_msg());
	if (check_read(x, DIAG_ERROR, "policy.file", cfg->policy.file, cfg->policy.file,
	               FILE_CONFIG, true, start)) {
		/* compiled as the proxy compiles it at start (detectors included): its own
		 * diagnostics at the policy's file:line:col, then the setting that names it */
		policy *p = NULL;
		if (policy_load_check(cfg->policy.file, &p, x->d) != CUSTOS_OK)
			report(x, DIAG_ERROR, cfg->policy.file, "custos up refuses to start",
			       "policy.file: %s", err_msg());
		else {
			cli_isolation_check(cfg, p, iso_report, x); /* at each model's id */
			catalogue_scope(x, cfg, p);
		}
		policy_unref(p);
	}
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const cfg_listener *l = &cfg->listeners[i];
		snprintf(name, sizeof(name), "listeners[%zu] (%s).address", i, l->id);
		if (l->addr.kind == CFG_ADDR_UNIX)
			check_parent(x, DIAG_ERROR, name, l->addr.path, l->address, "the socket",
			             "custos up binds it at start");
	}
	check_auth_files(x, cfg, DIAG_ERROR, FILE_CONFIG, FILE_SECRET, true, start);
	check_append(x, DIAG_ERROR, "log.file", cfg->log.file, cfg->log.file,
	             "custos up opens it (appending) at start");
	if (cfg->admin.enabled)
		check_parent(x, DIAG_WARNING, "admin.socket", cfg->admin.socket, cfg->admin.socket,
		             "the socket", "custos up would run without its admin API");
	/* The audit directory is made at start when missing (then given to proxy.user). */
	struct stat st;
	if (stat(cfg->audit.dir, &st) == -1 && errno == ENOENT)
		check_parent(x, DIAG_ERROR, "audit.dir", cfg->audit.dir, cfg->audit.dir,
		             "the directory", "custos up makes it at start");
	/* What the supervisor mounts into a sandbox must be there. */
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->sandbox.type == CFG_SANDBOX_NONE || m->sandbox.profile == NULL)
			continue;
		const cfg_profile *p = &cfg->profiles[m->sandbox.profile_index];
		for (size_t k = 0; k < p->n_binds; k++)
			if (stat(p->binds[k].src, &st) == -1)
				report(x, DIAG_ERROR, p->binds[k].src,
				       "the sandbox binds it at start",
				       "sandbox_profiles.%s.binds[%zu].src '%s': %s", p->id, k,
				       p->binds[k].src, strerror(errno));
		if (p->scratch.type == CFG_SCRATCH_DIR && p->scratch.path &&
		    (stat(p->scratch.path, &st) == -1 || !S_ISDIR(st.st_mode)))
			report(x, DIAG_ERROR, p->scratch.path, NULL,
			       "sandbox_profiles.%s.scratch.path '%s': not a directory", p->id,
			       p->scratch.path);
		const char *images[] = { p->vm.kernel, p->vm.initrd, p->vm.disk };
		const char *keys[] = { "kernel", "initrd", "disk" };
		for (size_t k = 0; p->vm.enabled && k < 3; k++)
			if (images[k] && stat(images[k], &st) == -1)
				report(x, DIAG_ERROR, images[k], "the VM boots from it",
				       "sandbox_profiles.%s.vm.%s '%s': %s", p->id, keys[k],
				       images[k], strerror(errno));
	}
}

/* What the proxy and its children (audit writer, SIEM shipper, egress proxy) open once it has
 * changed user, and, as warnings, what every reload reads again as that user. */
static void pass_proxy(struct hc_ctx *x)
{
	const custos_config *cfg = x->cfg;
	const cfg_audit *a = &cfg->audit;
	const char *start = "the proxy (or its child) opens it at start as proxy.user";
	char name[160];

	check_audit_dir(x);
	check_read(x, DIAG_ERROR, "audit.signing_key", a->signing_key, a->signing_key, FILE_SECRET,
	           true, start);
	check_read(x, DIAG_ERROR, "audit.public_key", a->public_key, a->public_key, FILE_ANY, true,
	           start);
	for (size_t i = 0; i < a->n_sinks; i++) {
		const cfg_sink *k = &a->sinks[i];
		const char *hint = "the SIEM shipper reads it at start as proxy.user";
		snprintf(name, sizeof(name), "audit.sinks[%zu] (%s).tls.ca", i, k->id);
		check_read(x, DIAG_ERROR, name, k->tls.ca, k->tls.ca, FILE_ANY, true, hint);
		check_ca_bundle(x, DIAG_ERROR, name, k->tls.ca, hint);
		snprintf(name, sizeof(name), "audit.sinks[%zu] (%s).tls.crl", i, k->id);
		if (k->tls.crl != NULL &&
		    check_read(x, DIAG_ERROR, name, k->tls.crl, k->tls.crl, FILE_ANY, true, hint))
			check_crl_file(x, DIAG_ERROR, name, k->tls.crl, k->tls.ca, hint);
		snprintf(name, sizeof(name), "audit.sinks[%zu] (%s).tls.cert", i, k->id);
		check_read(x, DIAG_ERROR, name, k->tls.cert, k->tls.cert, FILE_ANY, true, hint);
		snprintf(name, sizeof(name), "audit.sinks[%zu] (%s).tls.key", i, k->id);
		check_read(x, DIAG_ERROR, name, k->tls.key, k->tls.key, FILE_SECRET, true, hint);
		if (k->tls.cert != NULL && k->tls.key != NULL) {
			char cname[160];
			snprintf(cname, sizeof(cname), "audit.sinks[%zu] (%s).tls.cert", i, k->id);
			check_cert_key(x, DIAG_ERROR, cname, k->tls.cert, name, k->tls.key, hint);
		}
		snprintf(name, sizeof(name), "audit.sinks[%zu] (%s).http.token_file", i, k->id);
		check_read(x, DIAG_ERROR, name, k->http.token_file, k->http.token_file, FILE_SECRET,
		           true, hint);
	}
	if (cfg->egress.enabled) {
		bool intercept = false;
		for (size_t i = 0; i < cfg->n_data_sources; i++) {
			const cfg_data_source *s = &cfg->data_sources[i];
			intercept = intercept || s->intercept;
			snprintf(name, sizeof(name), "data_sources[%zu] (%s).ca_file", i, s->id);
			check_read(x, DIAG_ERROR, name, s->ca_file, s->ca_file, FILE_ANY, true,
			           start);
			check_ca_bundle(x, DIAG_ERROR, name, s->ca_file, start);
			snprintf(name, sizeof(name), "data_sources[%zu] (%s)", i, s->id);
			check_client_cert(x, DIAG_ERROR, name, s->cert, s->key, FILE_SECRET, true,
			                  start);
			snprintf(name, sizeof(name), "data_sources[%zu] (%s).crl_file", i, s->id);
			if (check_read(x, DIAG_ERROR, name, s->crl_file, s->crl_file, FILE_ANY,
			               true, start))
				check_crl_file(x, DIAG_ERROR, name, s->crl_file, s->ca_file, start);
		}
		if (intercept && cfg->egress.ca_dir) {
			char p[CFG_MAX_PATH_LEN + 16];
			snprintf(p, sizeof(p), "%s/ca.key", cfg->egress.ca_dir);
			check_read(x, DIAG_ERROR, "egress.ca_dir", p, cfg->egress.ca_dir,
			           FILE_SECRET, true, start);
			snprintf(p, sizeof(p), "%s/ca.crt", cfg->egress.ca_dir);
			check_read(x, DIAG_ERROR, "egress.ca_dir", p, cfg->egress.ca_dir,
			           FILE_CONFIG, true, start);
		}
	}
	if (!x->switched)
		return; /* the files below were checked by the invoking user's pass */
	const char *reload = "a reload reads it again as proxy.user and would fail";
	check_read(x, DIAG_WARNING, "the configuration file", cfg->source, NULL, FILE_ANY, false,
	           reload);
	check_read(x, DIAG_WARNING, "policy.file", cfg->policy.file, cfg->policy.file, FILE_ANY,
	           false, reload);
	check_auth_files(x, cfg, DIAG_WARNING, FILE_ANY, FILE_ANY, false, reload);
	struct stat st;
	if (cfg->log.file && stat(cfg->log.file, &st) == 0 && access(cfg->log.file, W_OK) == -1)
		report(x, DIAG_WARNING, cfg->log.file, "SIGUSR1 makes the proxy reopen it",
		       "log.file '%s': cannot be written%s: %s", cfg->log.file, x->who,
		       strerror(errno));
}

/* Copies s into out with the record separators (0x1e, 0x1f) replaced: a path may hold any byte. */
static void clean(const char *s, char *out, size_t size)
{
	size_t n = 0;

	for (; s && *s && n + 1 < size; s++)
		out[n++] = *s == '\x1e' || *s == '\x1f' ? '?' : *s;
	out[n] = '\0';
}

/* Writes d's items to fd as records: severity, line, col, message and hint separated by 0x1f,
 * each record ended by 0x1e. */
static void send_items(int fd, const diag_list *d)
{
	for (size_t i = 0; i < d->n; i++) {
		const diag_item *it = &d->items[i];
		char msg[1100], hint[400], rec[1600];
		clean(it->message, msg, sizeof(msg));
		clean(it->hint, hint, sizeof(hint));
		int n = snprintf(rec, sizeof(rec), "%c%u\x1f%u\x1f%s\x1f%s\x1e",
		                 it->severity == DIAG_ERROR ? 'E' : 'W', it->line, it->col, msg,
		                 hint);
		if (n > 0 && (size_t)n < sizeof(rec) &&
		    file_write_all(fd, rec, (size_t)n) != CUSTOS_OK)
			return;
	}
}

/* Adds the records of send_items in b[0..len) to d. */
static void take_items(struct hc_ctx *x, char *b, size_t len)
{
	char *p = b, *end = b + len;

	while (p < end) {
		char *rs = memchr(p, '\x1e', (size_t)(end - p));
		if (rs == NULL)
			break;
		*rs = '\0';
		char *f[4] = { p, NULL, NULL, NULL }; /* severity and line, col, message, hint */
		for (int k = 1; k < 4 && f[k - 1]; k++) {
			char *us = strchr(f[k - 1], '\x1f');
			if (us) {
				*us = '\0';
				f[k] = us + 1;
			}
		}
		if (f[3] && (f[0][0] == 'E' || f[0][0] == 'W')) {
			uint64_t line = 0, col = 0;
			if (num_parse_u64(span_cstr(f[0] + 1), 0, UINT32_MAX, &line) != CUSTOS_OK ||
			    num_parse_u64(span_cstr(f[1]), 0, UINT32_MAX, &col) != CUSTOS_OK)
				line = col = 0;
			diag_add(x->d, f[0][0] == 'E' ? DIAG_ERROR : DIAG_WARNING, x->cfg->source,
			         (unsigned)line, (unsigned)col, f[3][0] ? f[3] : NULL, "%s", f[2]);
		}
		p = rs + 1;
	}
}

/* Runs pass_proxy in a child that has become uid/gid (its primary group, no supplementary
 * groups: as `up` makes the proxy), its findings sent back over a pipe. */
static void pass_proxy_as(struct hc_ctx *x, uid_t uid, gid_t gid)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) == -1) {
		report(x, DIAG_ERROR, x->cfg->proxy.user, NULL,
		       "cannot check the files as proxy.user: pipe: %s", strerror(errno));
		return;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		if (setgroups(0, NULL) == -1 || setgid(gid) == -1 || setuid(uid) == -1 ||
		    getuid() != uid || geteuid() != uid || getegid() != gid)
			_exit(1);
		diag_list d;
		diag_init(&d);
		struct hc_ctx cx = *x;
		cx.d = &d;
		pass_proxy(&cx);
		send_items(p[1], &d);
		_exit(0); /* nothing of the parent's (buffers, sanitizers' exit checks) runs */
	}
	close(p[1]);
	if (pid == -1) {
		close(p[0]);
		report(x, DIAG_ERROR, x->cfg->proxy.user, NULL,
		       "cannot check the files as proxy.user: fork: %s", strerror(errno));
		return;
	}
	buf b;
	buf_init(&b, HC_REPORT_MAX);
	custos_err e = CUSTOS_OK;
	for (;;) {
		if ((e = buf_reserve(&b, 4096)) != CUSTOS_OK)
			break;
		ssize_t r = read(p[0], buf_tail(&b), 4096);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		buf_commit(&b, (size_t)r);
	}
	close(p[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || e != CUSTOS_OK)
		report(x, DIAG_ERROR, x->cfg->proxy.user, NULL,
		       "cannot check the files as proxy.user %s: the check could not become "
		       "that user",
		       x->cfg->proxy.user);
	else
		take_items(x, (char *)buf_ptr(&b), buf_used(&b));
	buf_free(&b);
}

void cli_config_host_check(const custos_config *cfg, diag_list *d)
{
	struct hc_ctx x = { .cfg = cfg, .d = d };
	struct passwd *pw = NULL;

	/* proxy/server.c refuses these at start; a file only `custos sandbox exec -c` reads
	 * may lack them, so the check without --host does not. */
	if (cfg->n_listeners == 0)
		report(&x, DIAG_ERROR, NULL, "custos up refuses to start; add a listeners entry",
		       "proxy: 1..%d listeners needed: the file has none", PROXY_MAX_LISTENERS);
	if (cfg->n_models == 0)
		report(&x, DIAG_ERROR, NULL, "custos up refuses to start; add a models entry",
		       "proxy: 1..%d upstreams needed: the file has no models",
		       PROXY_MAX_UPSTREAMS);
	if (cfg->proxy.user && cfg->proxy.self_sandbox) {
		errno = 0;
		pw = getpwnam(cfg->proxy.user);
		if (pw == NULL) {
			report(&x, DIAG_ERROR, cfg->proxy.user, "custos up refuses to start",
			       "proxy.user: no user named %s on this host", cfg->proxy.user);
		} else if (geteuid() != 0 && pw->pw_uid != geteuid()) {
			report(&x, DIAG_WARNING, cfg->proxy.user,
			       "run the check as root to check them as that user",
			       "proxy.user %s: this check runs as uid %u, not as root, and checks "
			       "the "
			       "files as itself; custos up started like this could not change user "
			       "and refuses to start",
			       cfg->proxy.user, (unsigned)geteuid());
			pw = NULL;
		} else if (pw->pw_uid == geteuid()) {
			pw = NULL; /* the proxy keeps the invoking user */
		}
	}
	pass_invoker(&x);
	if (pw == NULL) {
		pass_proxy(&x);
		return;
	}
	x.switched = true;
	snprintf(x.who, sizeof(x.who), " by proxy.user %s (uid %u)", cfg->proxy.user,
	         (unsigned)pw->pw_uid);
	pass_proxy_as(&x, pw->pw_uid, pw->pw_gid);
}
