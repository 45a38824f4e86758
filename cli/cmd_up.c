/*
 * custos up -c FILE: loads custos.yaml and runs the configured system in the foreground (logs
 * on stderr) until SIGTERM; SIGHUP re-reads the file (config, certificates, policy), SIGUSR1
 * reopens the log file.
 *
 * Privilege separation (docs/SANDBOX.md): `up` forks. The parent, the supervisor, keeps what
 * needs privilege: it starts, restarts and stops the sandboxes (process and VM), makes sockets
 * inside their network namespaces when the proxy asks, and reports their lifecycle. The
 * child, the proxy, opens its listeners, keys and policy, then gives up its user and every
 * capability and confines itself (NO_NEW_PRIVS, Landlock, seccomp) before it starts its audit
 * writer, egress proxy, admin API and workers. They talk over one socketpair (cli/privsep.h).
 * Either one ending makes the other stop (fail closed), audited.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "custos/admin.h"
#include "custos/audit.h"
#include "custos/config.h"
#include "custos/egress.h"
#include "custos/lazylib.h"
#include "custos/policy.h"
#include "custos/proxy.h"
#include "custos/sandbox.h"
#include "privsep.h"

#define NS_PER_S  1000000000ull
#define NS_PER_MS 1000000ull

/* The proxy's context (reload and admin hooks). */
struct up_ctx {
	const char *path;
	struct audit_writer *audit;
	egress_server *eg;
	bool audit_batch;
	proxy_server *srv; /* for the admin API's hooks */
	/* The configuration `up` started with (cmd_up's, outlives proxy_run): what a reload may
	 * not change (config_reload_check) and whether SIGHUP reloads at all. */
	const custos_config *start;
	/* The last applied configuration (start, or owned once a reload replaced it): what the
	 * next reload's sandboxes are compared with. next: the reload being applied. */
	custos_config *running, *next;
	bool psx_pending; /* the supervisor prepared this reload's sandboxes: COMMIT is due */
	/* One reload at a time, from reading custos.yaml to the egress proxy following: a SIGHUP
	 * reload (held from reload_cb to reloaded_cb) and the admin API's, or two of the admin
	 * API's, would otherwise interleave and leave the egress proxy on the other's policy
	 * file. The second waits (logged). */
	pthread_mutex_t reload_mu;
	/* With egress: the host listeners of the models without a sandbox (docs/EGRESS.md,
	 * "Listeners"), by model id (eg_plain: served, index in the egress server), and those the
	 * reload being applied opened for the ones it adds (eg_new: bound, served from the
	 * reload's end on, closed when it is refused). Under reload_mu once the proxy serves. */
	struct up_plain_eg {
		char *id;
		size_t index;
		int fd;
	} eg_plain[PROXY_MAX_UPSTREAMS], eg_new[PROXY_MAX_UPSTREAMS];
	size_t n_eg_plain, n_eg_new;
	/* The admin API (set under reload_mu once started), and the TLS context the reload being
	 * applied made for its admin.tls (admin_tls_reload_prepare): served when it is applied. */
	admin_server *admin;
	struct ssl_ctx_st *admin_tls_next;
	/* The egress sources' TLS contexts the reload being applied made (their CA files, CRLs
	 * and client certificates read again: egress_tls_prepare), in force when it is applied. */
	egress_tls_next *eg_tls_next;
	/* The proxy's Landlock view made at start, kept to check reloads against (view_check);
	 * NULL when the proxy is not confined by Landlock. */
	struct proxy_view *view;
};

struct proxy_view;
static custos_err view_check(const struct proxy_view *v, const custos_config *cfg,
                             const char *path);

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static char *addr_string(const cfg_addr *a)
{
	char tmp[CFG_MAX_PATH_LEN + 16];

	if (a->kind == CFG_ADDR_UNIX)
		snprintf(tmp, sizeof(tmp), "unix:%s", a->path);
	else if (strchr(a->host, ':'))
		snprintf(tmp, sizeof(tmp), "[%s]:%u", a->host, a->port);
	else
		snprintf(tmp, sizeof(tmp), "%s:%u", a->host, a->port);
	return xstrdup(tmp);
}

static custos_err map_tls(const cfg_tls_server *t, proxy_tls_opts *o)
{
	ENSURE(t->n_certs >= 1 && t->n_certs <= PROXY_MAX_CERTS, CUSTOS_ERR_INVAL,
	       "tls: 1 to %d certificate/key pairs supported", PROXY_MAX_CERTS);
	for (size_t i = 0; i < t->n_certs; i++) {
		o->cert_file[i] = xstrdup(t->certs[i].cert);
		o->key_file[i] = xstrdup(t->certs[i].key);
		o->ocsp_file[i] = dup_or_null(t->certs[i].ocsp);
	}
	o->ncerts = t->n_certs;
	o->client_ca = dup_or_null(t->client_ca);
	o->client_crl = dup_or_null(t->client_crl);
	o->client_auth = t->client_auth == CFG_CLIENT_AUTH_REQUIRED   ? PROXY_CLIENT_CERT_REQUIRED
	                 : t->client_auth == CFG_CLIENT_AUTH_OPTIONAL ? PROXY_CLIENT_CERT_OPTIONAL
	                                                              : PROXY_CLIENT_CERT_NONE;
	o->tls13_only = t->min_version == CFG_TLS_1_3;
	o->ciphers = dup_or_null(t->ciphers);
	o->ciphersuites = dup_or_null(t->ciphersuites);
	o->ticket_rotate_ns = t->ticket_rotation_ns;
	o->no_tickets = !t->session_tickets;
	/* alpn: [] turns ALPN off; config check allows http/1.1 and http/1.0 only. */
	o->no_alpn = t->n_alpn == 0;
	ENSURE(t->n_alpn <= PROXY_MAX_ALPN, CUSTOS_ERR_LIMIT, "tls: at most %d ALPN protocols",
	       PROXY_MAX_ALPN);
	for (size_t i = 0; i < t->n_alpn; i++) {
		bool h11 = strcmp(t->alpn[i], "http/1.1") == 0;
		ENSURE(h11 || strcmp(t->alpn[i], "http/1.0") == 0, CUSTOS_ERR_INVAL,
		       "tls: ALPN protocol '%s' is not one custos speaks", t->alpn[i]);
		o->alpn[o->nalpn++] = h11 ? PROXY_ALPN_HTTP11 : PROXY_ALPN_HTTP10;
	}
	return CUSTOS_OK;
}

static custos_err add_route(proxy_options *o, const char *path, const char *model,
                            const char *model_id, size_t up)
{
	ENSURE(o->nroutes < PROXY_MAX_ROUTES, CUSTOS_ERR_LIMIT, "more than %d routes",
	       PROXY_MAX_ROUTES);
	proxy_route_opts *r = &o->routes[o->nroutes++];
	r->path_prefix = dup_or_null(path);
	r->model = dup_or_null(model);
	r->model_id = dup_or_null(model_id);
	r->upstream = up;
	return CUSTOS_OK;
}

/* An id as custos.yaml's ids are (1..CFG_MAX_ID_LEN of letters, digits, . _ - / :): it names the
 * principal in the policy and the trail. */
static bool api_key_id_ok(span id)
{
	if (id.len == 0 || id.len > CFG_MAX_ID_LEN)
		return false;
	for (size_t i = 0; i < id.len; i++) {
		char c = id.ptr[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '/' || c == ':'))
			return false;
	}
	return true;
}

/* auth.api_keys_file: lines "id sha256hex"; blank lines and lines starting with # skipped.
 * The file holds digests, not keys, but is still refused when others may write it. */
custos_err cli_api_keys_load(const char *path, proxy_options *o)
{
	buf b;
	unsigned lineno = 0;
	custos_err e = CUSTOS_OK;

	buf_init(&b, 4u << 20);
	if ((e = file_load(path, FILE_CONFIG, 4u << 20, &b)) != CUSTOS_OK) {
		buf_free(&b);
		return err_wrap(e, "auth.api_keys_file");
	}
	span all = buf_span(&b);
	while (all.len > 0 && e == CUSTOS_OK) {
		const char *nl = memchr(all.ptr, '\n', all.len);
		span line = span_of(all.ptr, nl ? (size_t)(nl - all.ptr) : all.len);
		all = nl ? span_of(nl + 1, all.len - line.len - 1) : span_of(all.ptr + all.len, 0);
		lineno++;
		if (line.len > 0 && line.ptr[line.len - 1] == '\r')
			line.len--; /* CRLF line ends */
		line = span_trim(line);
		if (line.len == 0 || line.ptr[0] == '#')
			continue;
		const char *sp = memchr(line.ptr, ' ', line.len);
		if (sp == NULL) {
			e = err_set(CUSTOS_ERR_PARSE, "%s:%u: \"id sha256hex\" expected", path,
			            lineno);
			break;
		}
		span id = span_of(line.ptr, (size_t)(sp - line.ptr));
		span hex = span_trim(span_of(sp + 1, line.len - id.len - 1));
		if (o->napi_keys >= PROXY_MAX_API_KEYS) {
			e = err_set(CUSTOS_ERR_LIMIT, "%s: more than %d API keys", path,
			            PROXY_MAX_API_KEYS);
			break;
		}
		proxy_api_key *k = &o->api_keys[o->napi_keys];
		if (!api_key_id_ok(id) ||
		    num_parse_hex(hex, k->sha256, sizeof(k->sha256)) != CUSTOS_OK) {
			e = err_set(CUSTOS_ERR_PARSE, "%s:%u: bad id or SHA-256 (64 hex digits)",
			            path, lineno);
			break;
		}
		/* One key names one principal: the same digest under two ids would name
		 * whichever comes first. */
		for (size_t i = 0; i < o->napi_keys; i++) {
			if (memcmp(o->api_keys[i].sha256, k->sha256, sizeof(k->sha256)) == 0) {
				e = err_set(CUSTOS_ERR_PARSE,
				            "%s:%u: the SHA-256 of key %s again (one key, one "
				            "principal)",
				            path, lineno,
				            o->api_keys[i].principal ? o->api_keys[i].principal
				                                     : "-");
				break;
			}
		}
		if (e != CUSTOS_OK)
			break;
		k->principal = span_dup(id);
		o->napi_keys++;
	}
	buf_free(&b);
	return e;
}

/* Maps cfg onto o (o owns copies of everything; the config can be freed afterwards).
 * Sandboxed models must be known to the privsep mirror (psx_proxy_init). */
/* The policy's declared isolation against custos.yaml (cli_isolation_check): the first error
 * refuses the start or reload; a warning (a model custos does not sandbox) is logged. */
struct iso_ctx {
	char first[512];
};

static void iso_finding(void *arg, bool error, const cfg_model *m, const char *msg)
{
	struct iso_ctx *x = arg;
	(void)m;
	if (!error)
		log_warn("up: %s", msg);
	else if (x->first[0] == '\0')
		snprintf(x->first, sizeof(x->first), "%s", msg);
}

static custos_err up_policy_check(void *arg, const struct policy *p)
{
	struct iso_ctx x = { "" };
	size_t n = cli_isolation_check(arg, p, iso_finding, &x);
	if (n == 0)
		return CUSTOS_OK;
	return err_set(CUSTOS_ERR_INVAL, "%s%s", x.first,
	               n > 1 ? " (and more models: custos config check --host lists them)" : "");
}

/* The taint ingress policy sees for model: the highest its sandboxes (a reload's old one
 * that still drains beside the new one) have read through egress; -1 (public) for a model
 * custos does not sandbox or without egress. */
static int up_taint_get(void *arg, const char *model)
{
	(void)arg;
	return cli_egress_taint(model);
}

static custos_err map_config(const custos_config *cfg, proxy_options *o)
{
	memset(o, 0, sizeof(*o));
	o->policy_check = up_policy_check;
	o->policy_check_arg = (void *)cfg; /* alive while the options are built and checked */
	o->taint_get = up_taint_get;
	o->workers = (unsigned)cfg->workers;
	ENSURE(cfg->n_listeners <= PROXY_MAX_LISTENERS, CUSTOS_ERR_LIMIT, "more than %d listeners",
	       PROXY_MAX_LISTENERS);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const cfg_listener *l = &cfg->listeners[i];
		proxy_listener_opts *pl = &o->listeners[o->nlisteners++];
		pl->address = addr_string(&l->addr);
		pl->force_plain = l->force_plain;
		pl->tls = l->tls.enabled;
		pl->proxy_protocol = l->proxy_protocol;
		ENSURE(l->n_proxy_protocol_from <= PROXY_MAX_PP_FROM, CUSTOS_ERR_LIMIT,
		       "listener %s: more than %d proxy_protocol_from ranges", l->id,
		       PROXY_MAX_PP_FROM);
		if (l->n_proxy_protocol_from)
			memcpy(pl->pp_from, l->proxy_protocol_from,
			       l->n_proxy_protocol_from * sizeof(pl->pp_from[0]));
		pl->npp_from = l->n_proxy_protocol_from;
		if (pl->tls)
			GUARD(err_wrap(map_tls(&l->tls, &pl->tls_opts), "listener %s", l->id));
	}
	if (cfg->auth.n_api_keys || cfg->auth.api_keys_file) {
		ENSURE(cfg->auth.n_api_keys <= PROXY_MAX_API_KEYS, CUSTOS_ERR_LIMIT,
		       "more than %d API keys", PROXY_MAX_API_KEYS);
		o->api_keys = xcalloc(PROXY_MAX_API_KEYS, sizeof(o->api_keys[0]));
		for (size_t i = 0; i < cfg->auth.n_api_keys; i++) {
			o->api_keys[i].principal = xstrdup(cfg->auth.api_keys[i].id);
			memcpy(o->api_keys[i].sha256, cfg->auth.api_keys[i].sha256, 32);
		}
		o->napi_keys = cfg->auth.n_api_keys;
		if (cfg->auth.api_keys_file)
			GUARD(cli_api_keys_load(cfg->auth.api_keys_file, o));
	}
	if (cfg->auth.jwt.enabled) {
		o->jwt.jwks_file = xstrdup(cfg->auth.jwt.jwks_file);
		ENSURE(cfg->auth.jwt.n_issuers <= PROXY_JWT_MAX_LIST &&
		               cfg->auth.jwt.n_audiences <= PROXY_JWT_MAX_LIST,
		       CUSTOS_ERR_LIMIT, "auth.jwt: at most %d issuers and audiences",
		       PROXY_JWT_MAX_LIST);
		for (size_t i = 0; i < cfg->auth.jwt.n_issuers; i++)
			o->jwt.issuers[o->jwt.n_issuers++] = xstrdup(cfg->auth.jwt.issuers[i]);
		for (size_t i = 0; i < cfg->auth.jwt.n_audiences; i++)
			o->jwt.audiences[o->jwt.n_audiences++] =
			        xstrdup(cfg->auth.jwt.audiences[i]);
		o->jwt.leeway_s = cfg->auth.jwt.leeway_ns / NS_PER_S;
		o->jwt.algorithms =
		        ((cfg->auth.jwt.algorithms & CFG_JWT_RS256) ? PROXY_JWT_RS256 : 0) |
		        ((cfg->auth.jwt.algorithms & CFG_JWT_ES256) ? PROXY_JWT_ES256 : 0) |
		        ((cfg->auth.jwt.algorithms & CFG_JWT_EDDSA) ? PROXY_JWT_EDDSA : 0);
		o->jwt.principal_claim = dup_or_null(cfg->auth.jwt.principal_claim);
	}
	ENSURE(cfg->n_models <= PROXY_MAX_UPSTREAMS, CUSTOS_ERR_LIMIT, "more than %d models",
	       PROXY_MAX_UPSTREAMS);
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		const cfg_upstream *u = &m->upstream;
		proxy_upstream_opts *pu = &o->upstreams[o->nupstreams];
		char tmp[CFG_MAX_PATH_LEN + 16];

		switch (u->kind) {
		case CFG_UPSTREAM_HTTP:
		case CFG_UPSTREAM_HTTPS:
			snprintf(tmp, sizeof(tmp), strchr(u->host, ':') ? "[%s]:%u" : "%s:%u",
			         u->host, u->port);
			pu->tls = u->kind == CFG_UPSTREAM_HTTPS;
			pu->tls_ca = dup_or_null(u->ca_file);
			pu->tls_name = dup_or_null(u->server_name);
			pu->tls_cert = dup_or_null(u->cert);
			pu->tls_key = dup_or_null(u->key);
			pu->tls_crl = dup_or_null(u->crl_file);
			break;
		case CFG_UPSTREAM_UNIX:
			snprintf(tmp, sizeof(tmp), "unix:%s", u->path);
			break;
		case CFG_UPSTREAM_SANDBOX: {
			/* Sockets the supervisor made inside the sandbox (or streams over the
			 * VM's channel), handed over through cli/privsep.c. */
			int k = psx_proxy_find(m->id);
			ENSURE(k >= 0, CUSTOS_ERR_UNSUPPORTED,
			       "model %s: its sandbox is not running (custos.yaml changed while it "
			       "was being reloaded?)",
			       m->id);
			pu->connect_fn = psx_proxy_connect;
			pu->connect_arg = psx_proxy_hold(k);
			pu->release_fn = psx_proxy_release;
			snprintf(tmp, sizeof(tmp), "%s:%s",
			         m->sandbox.type == CFG_SANDBOX_VM ? "vm" : "sandbox", m->id);
			break;
		}
		default:
			return err_set(CUSTOS_ERR_UNSUPPORTED, "model %s: unknown upstream kind",
			               m->id);
		}
		pu->name = xstrdup(m->id);
		pu->address = xstrdup(tmp);
		config_upstream_host(m, tmp, sizeof(tmp));
		pu->host = xstrdup(tmp);
		pu->connect_timeout_ns = u->connect_timeout_ns
		                                 ? u->connect_timeout_ns
		                                 : cfg->limits.upstream_connect_timeout_ns;
		pu->read_timeout_ns = u->read_timeout_ns ? u->read_timeout_ns
		                                         : cfg->limits.upstream_read_timeout_ns;
		pu->idle_timeout_ns = u->idle_timeout_ns ? u->idle_timeout_ns
		                                         : cfg->limits.upstream_idle_timeout_ns;
		pu->pool_max = (unsigned)u->pool_size;
		pu->pool_off = u->pool_size == 0;
		o->nupstreams++;
	}
	/* The proxy takes the first route that matches: path routes (which never overlap) come
	 * first and win over the body's model; the policy sees the path route's model. */
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const cfg_route *r = &cfg->routes[i];
		GUARD(add_route(o, r->path, NULL, cfg->models[r->model_index].id, r->model_index));
	}
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		GUARD(add_route(o, NULL, m->id, m->id, i));
		for (size_t a = 0; a < m->n_aliases; a++)
			GUARD(add_route(o, NULL, m->aliases[a], m->id, i));
	}
	/* Requests without a model (GET /v1/models) go to the first model server, and the policy
	 * judges them as that model: a deny on it cannot be dodged by leaving "model" out. */
	if (o->nupstreams)
		GUARD(add_route(o, NULL, "", cfg->models[0].id, 0));
	o->max_body = cfg->limits.body_max;
	o->max_head_bytes = cfg->limits.header_bytes;
	o->max_headers = cfg->limits.header_count;
	o->max_request_line = cfg->limits.request_line;
	o->max_json_depth = (unsigned)cfg->limits.json_depth;
	o->audit_body_max = cfg->audit.body_record_max;
	o->ignore_client_certs = !cfg->auth.mtls.enabled;
	o->header_timeout_ns = cfg->limits.client_header_timeout_ns;
	o->body_timeout_ns = cfg->limits.client_body_timeout_ns;
	o->keepalive_timeout_ns = cfg->limits.client_idle_timeout_ns;
	o->shutdown_grace_ns = cfg->limits.shutdown_timeout_ns;
	o->max_connections = cfg->limits.max_connections;
	o->policy_file = dup_or_null(cfg->policy.file);
	return CUSTOS_OK;
}

/* A setting the command line overrides (--log-level, --log-format) is not custos.yaml's to
 * change: a reload whose file changes only it is no change to refuse. The command line keeps
 * winning, as at start, and the log says that the file's new value is not applied. */
static void reload_cli_overrides(const custos_config *start, custos_config *next)
{
	static const char *const lvls[] = { "error", "warn", "info", "debug" };
	static const char *const fmts[] = { "auto", "text", "json" };
	const cli_log_flags *lf = cli_log_flags_get();

	if (lf->level_set && next->log.level != start->log.level) {
		log_warn("up: reload: log.level changed in the file (%s -> %s): not applied, "
		         "--log-level %s on the command line wins",
		         lvls[start->log.level], lvls[next->log.level], lvls[lf->level]);
		next->log.level = start->log.level;
	}
	if (lf->format_set && next->log.format != start->log.format) {
		log_warn("up: reload: log.format changed in the file (%s -> %s): not applied, "
		         "--log-format %s on the command line wins",
		         fmts[start->log.format], fmts[next->log.format], fmts[lf->format]);
		next->log.format = start->log.format;
	}
}

static custos_err eg_plain_prepare(struct up_ctx *uc, const custos_config *cfg) CUSTOS_WUR;

/* admin.tls is read again by a reload, as the listeners' certificates are (the paths may
 * change, or the files be replaced in place; turning it on or off is refused by
 * config_reload_check): a new context made now, so that a file that does not load refuses the
 * reload, and served from the reload's end on (reload_settle). */
static custos_err admin_tls_reload_prepare(struct up_ctx *uc, const custos_config *cfg)
{
	const cfg_admin *a = &cfg->admin;

	admin_tls_free(uc->admin_tls_next);
	uc->admin_tls_next = NULL;
	if (uc->admin == NULL || !a->enabled || !a->tcp.enabled || !a->tls.enabled)
		return CUSTOS_OK;
	return err_wrap(admin_tls_prepare(uc->admin, a->tls.certs[0].cert, a->tls.certs[0].key,
	                                  a->tls.certs[0].ocsp, a->tls.client_ca, a->tls.client_crl,
	                                  &uc->admin_tls_next),
	                "reload");
}

/* The egress https data sources' CA files (or the system store), CRLs and client certificates
 * are read again by a reload, as the upstreams' and the listeners' are (renewed files in place:
 * the paths cannot change, as no data source can), into new contexts made now, so that a file
 * that does not load refuses the reload; in force from the reload's end on (reload_settle). */
static custos_err eg_tls_reload_prepare(struct up_ctx *uc)
{
	egress_tls_next_free(uc->eg_tls_next);
	uc->eg_tls_next = NULL;
	if (uc->eg == NULL)
		return CUSTOS_OK;
	return err_wrap(egress_tls_prepare(uc->eg, &uc->eg_tls_next), "reload");
}

static custos_err load_options(struct up_ctx *uc, proxy_options *o)
{
	const char *path = uc->path;
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	custos_err e = config_load(path, &cfg, &d);
	diag_log(&d); /* a running proxy: the log's format and file, not raw text on stderr */
	if (e != CUSTOS_OK) {
		e = diag_err(e, &d, "configuration");
		diag_free(&d);
		return e;
	}
	diag_free(&d);
	reload_cli_overrides(uc->start, cfg);
	e = config_reload_check(uc->running, cfg);
	if (e == CUSTOS_OK)
		e = view_check(uc->view, cfg, path);
	if (e == CUSTOS_OK && config_sandboxes_changed(uc->running, cfg)) {
		/* The supervisor reads custos.yaml itself and starts what it adds; the reload
		 * waits until those answer, so that it routes to nothing that is not ready. */
		uint64_t wait_ms = 30000;
		if (cfg->limits.shutdown_timeout_ns)
			wait_ms += cfg->limits.shutdown_timeout_ns / NS_PER_MS;
		else
			wait_ms += 10000;
		for (size_t i = 0; i < cfg->n_models; i++)
			if (cfg->models[i].upstream.kind == CFG_UPSTREAM_SANDBOX)
				wait_ms +=
				        cfg->models[i].sandbox.health.start_timeout_ns
				                ? cfg->models[i].sandbox.health.start_timeout_ns /
				                          NS_PER_MS
				                : 120000;
		uc->psx_pending = true;
		log_info("up: reload: custos.yaml adds, removes or changes sandboxed models: the "
		         "supervisor starts and stops them");
		e = psx_proxy_reload(wait_ms, cfg->source_sha256);
	}
	if (e == CUSTOS_OK)
		e = map_config(cfg, o);
	else
		memset(o, 0, sizeof(*o));
	if (e == CUSTOS_OK)
		e = eg_plain_prepare(uc, cfg);
	if (e == CUSTOS_OK)
		e = admin_tls_reload_prepare(uc, cfg);
	if (e == CUSTOS_OK)
		e = eg_tls_reload_prepare(uc);
	o->audit = uc->audit;
	o->audit_batch = uc->audit_batch;
	if (e == CUSTOS_OK)
		uc->next = cfg;
	else
		config_free(cfg);
	if (e != CUSTOS_OK)
		proxy_options_free(o);
	return e;
}

static bool plain_model(const cfg_model *m)
{
	return m->upstream.kind != CFG_UPSTREAM_SANDBOX;
}

static size_t eg_plain_find(const struct up_ctx *uc, const char *id)
{
	for (size_t i = 0; i < uc->n_eg_plain; i++)
		if (strcmp(uc->eg_plain[i].id, id) == 0)
			return i;
	return SIZE_MAX;
}

/* The listeners eg_plain_prepare opened for a reload that is refused (or never settled). */
static void eg_new_drop(struct up_ctx *uc)
{
	for (size_t i = 0; i < uc->n_eg_new; i++) {
		if (uc->eg_new[i].fd >= 0)
			close(uc->eg_new[i].fd);
		free(uc->eg_new[i].id);
	}
	uc->n_eg_new = 0;
}

/* With egress, a model without a sandbox that cfg (a reload's) adds gets its host listener as
 * at start (cli_egress_options): 127.0.0.1:(egress.port + its place in models). Bound now, so
 * that a port that cannot be had refuses the reload before anything is applied; served from
 * the reload's end on (eg_plain_add). */
static custos_err eg_plain_prepare(struct up_ctx *uc, const custos_config *cfg)
{
	eg_new_drop(uc);
	if (uc->eg == NULL || !cfg->egress.enabled)
		return CUSTOS_OK;
	for (size_t i = 0; i < cfg->n_models && i < PROXY_MAX_UPSTREAMS; i++) {
		const cfg_model *m = &cfg->models[i];
		if (!plain_model(m) || eg_plain_find(uc, m->id) != SIZE_MAX)
			continue;
		unsigned port = (unsigned)cfg->egress.port + (unsigned)i;
		char addr[32];
		int fd = -1;
		ENSURE(port <= 65535, CUSTOS_ERR_LIMIT,
		       "reload: egress: model %s: egress.port + %zu (its place in models) passes "
		       "65535",
		       m->id, i);
		snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
		custos_err e = egress_listen(addr, &fd);
		if (e != CUSTOS_OK)
			return err_wrap(
			        e,
			        "reload: egress: model %s added: its listener (egress.port + "
			        "%zu, its place in models) cannot be opened (another model's "
			        "listener holds that port when models moved: add models at "
			        "the end, or restart custos)",
			        m->id, i);
		uc->eg_new[uc->n_eg_new++] =
		        (struct up_plain_eg){ .id = xstrdup(m->id), .index = SIZE_MAX, .fd = fd };
		log_info("up: reload: model %s added without a sandbox: its egress listener is %s",
		         m->id, addr);
	}
	return CUSTOS_OK;
}

/* The reload next was applied: the listeners of the models without a sandbox it removed (or
 * that now have one) are closed. Called before COMMIT adds the listeners of the sandboxes it
 * added (reload_settle), so that those take the slots these leave. */
static void eg_plain_close(struct up_ctx *uc, const custos_config *next)
{
	bool closed = false;

	for (size_t i = 0; i < uc->n_eg_plain;) {
		struct up_plain_eg *p = &uc->eg_plain[i];
		bool kept = false;
		for (size_t k = 0; k < next->n_models && !kept; k++)
			kept = plain_model(&next->models[k]) &&
			       strcmp(next->models[k].id, p->id) == 0;
		if (kept) {
			i++;
			continue;
		}
		if (uc->eg && egress_listener_close(uc->eg, p->index) != CUSTOS_OK) {
			log_error("egress: model %s: listener not closed: %s", p->id, err_msg());
		} else {
			closed = true;
			log_info("up: reload: model %s removed: its egress listener is closed",
			         p->id);
		}
		free(p->id);
		*p = uc->eg_plain[--uc->n_eg_plain];
	}
	/* Their accept threads leave within their poll interval: waited for here, outside the
	 * supervisor link's lock that COMMIT holds while it adds the sandboxes' listeners. */
	if (closed && uc->eg)
		egress_listeners_reap(uc->eg);
}

/* The reload was applied: the listeners of the models without a sandbox it added are served. */
static void eg_plain_add(struct up_ctx *uc)
{
	for (size_t i = 0; i < uc->n_eg_new; i++) {
		struct up_plain_eg *n = &uc->eg_new[i];
		egress_listener_opts lo = { .fd = n->fd, .model = xstrdup(n->id), .isolation = -1 };
		size_t index = SIZE_MAX;
		n->fd = -1; /* the egress server's now, or closed by it */
		if (uc->eg == NULL || uc->n_eg_plain >= PROXY_MAX_UPSTREAMS) {
			close(lo.fd);
			free(lo.model);
			log_error("egress: model %s added without an egress listener", n->id);
			continue;
		}
		if (egress_listener_add(uc->eg, &lo, &index) != CUSTOS_OK) {
			log_error("egress: model %s added without an egress listener: %s", n->id,
			          err_msg());
			continue;
		}
		uc->eg_plain[uc->n_eg_plain++] =
		        (struct up_plain_eg){ .id = n->id, .index = index, .fd = -1 };
		n->id = NULL;
	}
	eg_new_drop(uc);
}

/* The end of a reload, applied or not: the supervisor learns which (it stops the removed
 * sandboxes, or the added ones), and the applied configuration becomes the running one. */
static void reload_settle(struct up_ctx *uc, bool applied)
{
	/* Applied is final here: every check that can refuse the reload has passed (the ingress
	 * proxy swapped, the egress policy followed). So the host listeners it removes are closed
	 * first, and the listeners of the sandboxes it adds (COMMIT) and of the models without one
	 * it adds (eg_plain_add) take their slots; a refused reload closes none of them. */
	if (applied && uc->next)
		eg_plain_close(uc, uc->next);
	if (uc->psx_pending)
		psx_proxy_commit(applied, uc->next);
	uc->psx_pending = false;
	if (applied && uc->next)
		eg_plain_add(uc);
	else
		eg_new_drop(uc);
	if (applied && uc->next)
		admin_tls_swap(uc->admin, uc->admin_tls_next);
	else
		admin_tls_free(uc->admin_tls_next);
	uc->admin_tls_next = NULL;
	if (applied && uc->next)
		egress_tls_commit(uc->eg, uc->eg_tls_next);
	else
		egress_tls_next_free(uc->eg_tls_next);
	uc->eg_tls_next = NULL;
	/* The audit shipper reads its TLS sinks' files again (the paths and the sink list are
	 * the running ones: config_reload_check refuses a reload that changes them). It logs per
	 * sink what it found and keeps a sink's context when a file does not load, rather than
	 * refusing this reload: the proxy does not read the shipper's files itself. */
	if (applied && uc->next)
		audit_sinks_reload(uc->audit);
	if (applied && uc->next) {
		if (uc->running != uc->start)
			config_free(uc->running);
		uc->running = uc->next;
	} else {
		config_free(uc->next);
	}
	uc->next = NULL;
}

/* The egress proxy's policy follows the ingress proxy's once a reload was applied there: it
 * is handed the very policy the ingress proxy compiled (reloads run one at a time under
 * reload_mu, so it is this reload's), never a second read of the file, which may have
 * changed since or fail where the first read did not. A refused reload (bad custos.yaml, bad
 * policy, bad certificate) changes neither. */
static void egress_follow(struct up_ctx *u)
{
	if (u->eg)
		egress_set_policy(u->eg, proxy_policy_ref(u->srv));
}

/* Takes the reload lock, saying so when another reload holds it. */
static void reload_lock(struct up_ctx *u, const char *who)
{
	if (pthread_mutex_trylock(&u->reload_mu) == 0)
		return;
	log_info("up: %s: another reload is in progress; this one waits for it", who);
	pthread_mutex_lock(&u->reload_mu);
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_RELOAD_HOLD=FIFO holds a
 * SIGHUP reload between the ingress proxy's swap and the egress proxy following, until a line
 * is written to FIFO: another reload can then be started, or the policy file edited, in that
 * window (tests/integration/ops_reload_serial.sh, egress_follow_same.sh). */
static void test_hook_reload_hold(void)
{
	const char *fifo = getenv("CUSTOS_TEST_RELOAD_HOLD");
	char c;

	if (fifo == NULL)
		return;
	log_warn("up: test hook: SIGHUP reload applied to the ingress proxy; the egress proxy "
	         "follows once %s is written",
	         fifo);
	int fd = open(fifo, O_RDONLY | O_CLOEXEC);
	if (fd == -1) {
		log_error("up: test hook: %s: %s", fifo, strerror(errno));
		return;
	}
	while (read(fd, &c, 1) == -1 && errno == EINTR)
		;
	close(fd);
	log_warn("up: test hook: SIGHUP reload released");
}
#endif

/* The end of a SIGHUP reload (proxy_run, its thread): the egress proxy follows an applied
 * one; the reload lock taken in reload_cb is released either way. */
static void reloaded_cb(void *arg, bool applied)
{
	struct up_ctx *u = arg;
	if (applied) {
#ifdef CUSTOS_TEST_HOOKS
		test_hook_reload_hold();
#endif
		egress_follow(u);
	}
	reload_settle(u, applied);
	pthread_mutex_unlock(&u->reload_mu);
}

static custos_err reload_cb(void *arg, proxy_options *o)
{
	struct up_ctx *u = arg;
	/* Refused like any other reload, so that it is logged and audited (policy.reload). */
	if (!u->start->policy.reload_on_sighup) {
		memset(o, 0, sizeof(*o));
		return err_set(CUSTOS_ERR_DENIED,
		               "reload: SIGHUP does not reload: policy.reload_on_sighup is false "
		               "(reload through the admin API, or restart custos)");
	}
	reload_lock(u, "SIGHUP");
	log_info("up: SIGHUP: reloading %s", u->path);
	custos_err e = load_options(u, o);
	o->reloaded = reloaded_cb; /* set on failure too: it releases the lock */
	return e;
}

/* Admin API hooks (admin.h): they run on the admin server's threads. */
static struct policy *admin_policy_get(void *arg)
{
	struct up_ctx *u = arg;
	return proxy_policy_ref(u->srv);
}

/* POST /v1/policy: re-reads custos.yaml and the policy it names, as SIGHUP does; the policy is
 * compiled first on its own so that every problem is reported, not only the first. */
/* The hash of the policy in force, "" when none is loaded. */
static void policy_hash_now(struct up_ctx *u, char out[65])
{
	struct policy *p = proxy_policy_ref(u->srv);

	snprintf(out, 65, "%s", p ? policy_hash_hex(p) : "");
	policy_unref(p);
}

#define DRAIN_REFUSED                                                                              \
	"reload: custos is stopping (draining after a SIGTERM or SIGINT): no reload is applied "   \
	"during the drain"

static custos_err admin_policy_reload(void *arg, diag_list *d, char old_hash[65], char new_hash[65])
{
	struct up_ctx *u = arg;
	proxy_options o;

	reload_lock(u, "admin API");
	policy_hash_now(u, old_hash); /* under the lock: the SIGHUP reload before is done */
	if (proxy_stopping(u->srv)) {
		/* Nothing is read: a reload applied now would start sandboxes and swap the state
		 * of a proxy that is stopping, and hold its stop (the admin API answers 503). */
		snprintf(new_hash, 65, "%s", old_hash);
		pthread_mutex_unlock(&u->reload_mu);
		return err_set(CUSTOS_ERR_CLOSED, DRAIN_REFUSED);
	}
	log_info("up: admin API: reloading %s", u->path);
	custos_err e = load_options(u, &o);
	if (e == CUSTOS_OK && o.policy_file) {
		policy *p = NULL;
		e = policy_load(o.policy_file, &p, d);
		policy_unref(p);
		if (e != CUSTOS_OK) {
			e = diag_err(e, d, "policy has errors, the policy in force is unchanged");
			proxy_options_free(&o);
		}
	}
	if (e == CUSTOS_OK && proxy_stopping(u->srv)) { /* the drain began while it read */
		proxy_options_free(&o);
		e = err_set(CUSTOS_ERR_CLOSED, DRAIN_REFUSED);
	}
	if (e == CUSTOS_OK)
		e = proxy_reload(u->srv, &o);
	if (e == CUSTOS_OK) {
		egress_follow(u); /* as SIGHUP does */
		log_info("up: admin API: reloaded");
	}
	reload_settle(u, e == CUSTOS_OK);
	policy_hash_now(u, new_hash); /* before a SIGHUP reload waiting for the lock runs */
	pthread_mutex_unlock(&u->reload_mu);
	return e;
}

/* /readyz: not ready once the proxy drains. */
static bool admin_stopping(void *arg)
{
	struct up_ctx *u = arg;
	return proxy_stopping(u->srv);
}

/* Taint for GET /v1/sandboxes: what the model's sandbox has read through egress. */
static int admin_taint_get(void *arg, const char *name)
{
	(void)arg;
	return cli_egress_taint(name);
}

/* VM entries for GET /v1/sandboxes: as the supervisor last reported them (cli_vm_admin_info
 * there), with the taint the egress proxy here has seen. */
static size_t admin_vms_get(void *arg, admin_vm *out, size_t max)
{
	(void)arg;
	size_t n = psx_proxy_admin_vms(out, max);
	for (size_t i = 0; i < n; i++)
		out[i].taint = cli_egress_taint(out[i].name);
	return n;
}

/* Starts the admin API from the admin: section; NULL when disabled or it could not start
 * (logged: the proxy keeps serving without it). */

static admin_server *start_admin(const custos_config *cfg, struct up_ctx *uc, int socket_fd)
{
	const cfg_admin *ca = &cfg->admin;
	admin_options ao;
	admin_server *a = NULL;
	char *tcp = NULL;

	if (!ca->enabled || (socket_fd < 0 && !ca->tcp.enabled))
		return NULL;
	memset(&ao, 0, sizeof(ao));
	ao.socket_path = socket_fd >= 0 ? ca->socket : NULL; /* bound before confinement */
	ao.socket_fd = socket_fd;
	ao.socket_mode = ca->socket_mode;
	ao.allowed_uids = ca->allowed_uids;
	ao.n_allowed_uids = ca->n_allowed_uids;
	if (ca->tcp.enabled) {
		tcp = addr_string(&ca->tcp.addr);
		ao.tcp_address = tcp;
		memcpy(ao.token_sha256, ca->tcp.token_sha256, 32);
	}
	ao.force = ca->force;
	if (ca->tcp.enabled && ca->tls.enabled) {
		ao.tls_cert = ca->tls.certs[0].cert;
		ao.tls_key = ca->tls.certs[0].key;
		ao.tls_client_ca = ca->tls.client_ca;
		ao.tls_client_crl = ca->tls.client_crl;
		ao.tls_ocsp = ca->tls.certs[0].ocsp;
	}
	ao.max_body = ca->max_body;
	ao.audit = uc->audit;
	ao.audit_dir = cfg->audit.dir;
	/* The supervisor's process sandboxes, as mirrored here (state messages), read on each
	 * request: a reload adds and removes them. */
	ao.hooks = (admin_hooks){ .arg = uc,
		                  .policy_get = admin_policy_get,
		                  .policy_reload = admin_policy_reload,
		                  .taint_get = admin_taint_get,
		                  .sandboxes_get = psx_proxy_admin_sandboxes,
		                  .sandbox_restart = psx_proxy_admin_restart,
		                  .vms_get = admin_vms_get,
		                  .stopping = admin_stopping };
	if (admin_start(&ao, &a) != CUSTOS_OK) {
		log_error("up: admin API not started: %s", err_msg());
		a = NULL;
	} else if (admin_tcp_port(a)) {
		log_info("up: admin tcp on port %u", admin_tcp_port(a));
	}
	free(tcp);
	return a;
}

static void log_sink(const audit_sink_options *k)
{
	static const char *const fmts[] = { "json", "cef", "leef", "rfc5424" };
	const char *how = k->kind == AUDIT_SINK_HEC          ? (k->tls ? "HEC, https" : "HEC, http")
	                  : k->kind == AUDIT_SINK_SYSLOG_TLS ? "syslog, TLS"
	                                                     : "syslog";
	if (k->unix_path != NULL)
		log_info("up: audit sink %s: %s to unix:%s, format %s", k->name, how, k->unix_path,
		         fmts[k->format]);
	else
		log_info("up: audit sink %s: %s to %s:%u, format %s", k->name, how, k->host,
		         (unsigned)k->port, fmts[k->format]);
}

struct child_views;
static struct child_views *child_views_new(const custos_config *cfg, const char *cfg_path,
                                           bool with_sinks);
static custos_err confine_writer(void *arg, int log_dir_fd);
static custos_err confine_shipper(void *arg, int log_dir_fd);

/* Starts an audit writer for the audit: section; with_sinks also the shipper with every
 * configured sink (a sink that cannot be set up fails the start, naming it). narrow: each of
 * them narrows itself to its own Landlock view (child_views_new). */
static custos_err audit_from_config(const custos_config *cfg, const char *cfg_path, bool with_sinks,
                                    bool narrow, audit_writer **out)
{
	cli_audit_opts *ao = xcalloc(1, sizeof(*ao));
	custos_err e = cli_audit_options(cfg, with_sinks, ao);
	/* Read by the writer and the shipper in their copy of this memory (both are forked in
	 * audit_writer_start): freed here once they run. */
	struct child_views *views = narrow ? child_views_new(cfg, cfg_path, with_sinks) : NULL;

	if (views != NULL) {
		ao->o.confine = confine_writer;
		ao->o.confine_arg = views;
		ao->o.confine_shipper = confine_shipper;
		ao->o.confine_shipper_arg = views;
	}
	if (e == CUSTOS_OK)
		e = audit_writer_start(&ao->o, out);
	free(views);
	for (size_t i = 0; e == CUSTOS_OK && i < ao->o.n_sinks; i++)
		log_sink(&ao->sinks[i]);
	free(ao);
	return e;
}

/* Maps a model's sandbox section and its profile onto a sandbox_profile. Arrays live in *st
 * (freed by the caller after the spawn). */
struct sb_storage {
	sandbox_bind binds[SANDBOX_MAX_BINDS];
	const char *devices[SANDBOX_MAX_DEVICES]; /* names under /dev/, as the sandbox takes them */
	char *env_set[SANDBOX_MAX_ENV];
	size_t n_env_set;
	const char *argv[SANDBOX_MAX_ARGS + 1];
};

static custos_err map_sandbox(const custos_config *cfg, const cfg_model *m, sandbox_profile *p,
                              struct sb_storage *st)
{
	const cfg_model_sandbox *ms = &m->sandbox;
	const cfg_profile *pr = ms->profile ? &cfg->profiles[ms->profile_index] : NULL;

	if (pr) {
		/* The profile as `custos sandbox exec -c` maps it (one mapping: what was tried
		 * with exec runs the same here); its two arrays copied into *st. */
		GUARD(sandbox_profile_from_cfg(pr, p)); /* at most SANDBOX_MAX_BINDS, _DEVICES */
		if (p->n_binds)
			memcpy(st->binds, p->binds, p->n_binds * sizeof(*p->binds));
		if (p->n_devices)
			memcpy(st->devices, p->devices, p->n_devices * sizeof(*p->devices));
		size_t nb = p->n_binds, nd = p->n_devices;
		sandbox_profile_cfg_free(p);
		if (nb) {
			p->binds = st->binds;
			p->n_binds = nb;
		}
		if (nd) {
			p->devices = st->devices;
			p->n_devices = nd;
		}
	} else {
		GUARD(sandbox_profile_builtin("default", p));
	}
	p->name = m->id;
	if (ms->workdir)
		p->workdir = ms->workdir;
	ENSURE(ms->n_env <= SANDBOX_MAX_ENV, CUSTOS_ERR_LIMIT, "too many env entries");
	for (size_t i = 0; i < ms->n_env; i++) {
		/* NAME=value whole, however long the value (never cut short) */
		size_t kl = strlen(ms->env[i].key), vl = strlen(ms->env[i].value);
		char *kv = xcalloc(1, kl + 1 + vl + 1);
		memcpy(kv, ms->env[i].key, kl);
		kv[kl] = '=';
		memcpy(kv + kl + 1, ms->env[i].value, vl + 1);
		st->env_set[st->n_env_set++] = kv;
	}
	if (cfg->egress.enabled) { /* the egress proxy is the sandbox's only way out */
		static const char *const names[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
			                             "HTTPS_PROXY" };
		_Static_assert(CUSTOS_ARRAY_LEN(names) == CFG_EGRESS_ENV,
		               "config check counts them");
		ENSURE(st->n_env_set + CFG_EGRESS_ENV <= SANDBOX_MAX_ENV, CUSTOS_ERR_LIMIT,
		       "too many env entries");
		for (size_t i = 0; i < 4; i++) {
			char tmp[64];
			snprintf(tmp, sizeof(tmp), "%s=http://127.0.0.1:%u", names[i],
			         cfg->egress.port);
			st->env_set[st->n_env_set++] = xstrdup(tmp);
		}
	}
	if (st->n_env_set) {
		p->env_set = (const char *const *)st->env_set;
		p->n_env_set = st->n_env_set;
	}
	ENSURE(ms->n_command >= 1 && ms->n_command <= SANDBOX_MAX_ARGS, CUSTOS_ERR_INVAL,
	       "model %s: sandbox.command is required", m->id);
	for (size_t i = 0; i < ms->n_command; i++)
		st->argv[i] = ms->command[i];
	st->argv[ms->n_command] = NULL;
	return CUSTOS_OK;
}

/* =============================================================================================
 * The supervisor: the privileged half. It holds the sandboxes and answers the proxy.
 */
struct sup_model {
	char *id;
	size_t slot; /* its index in S.m, psx_hdr.model */
	bool gone;   /* removed by a reload and stopped */
	/* Removed by an applied reload (draining), or added by a refused one (being stopped): no
	 * later reload counts it as running, removes it again or replaces it (S.mu). */
	bool retired;
	bool freed; /* gone, and the proxy let go of the slot (FREED): reusable (S.mu) */
	/* gone, and sup_model_stop is over with it (S.mu): from gone to this, the stop still
	 * uses the slot (its id, its output reader), which FREED must not hand on meanwhile */
	bool stopped;
	bool idle;        /* removed: the proxy has no request in flight to it (S.rl_mu) */
	sandbox *sb;      /* process sandbox */
	struct up_vm *vm; /* VM sandbox */
	/* sup_want is opening streams to sb or vm outside S.mu: a stop waits for it (S.mu). */
	unsigned users;
	uint16_t port;
	sandbox_limits limits;
	uint16_t egress_port; /* 0: no egress proxy */
	bool vm_routable;
	uint32_t vm_generation;
	psx_vm_info vm_info; /* last sent */
	bool vm_info_sent;
	/* The process sandbox's stdout and stderr: a pipe whose lines become log lines. */
	int out_w; /* its write end, kept for restarts; -1: none */
	pthread_t out_th;
	bool out_started;
};

static struct {
	int sock;
	pid_t proxy;
	pthread_mutex_t send_mu; /* sock, proxy_gone */
	bool proxy_gone;         /* messages go nowhere; audit goes to aw */
	struct sup_model m[PSX_MAX_MODELS];
	size_t n;
	pthread_mutex_t aw_mu;
	audit_writer *aw; /* the supervisor's own writer, only once the proxy is gone */
	int notify_fd;    /* the listener of the proxy's seccomp filter (PSX_SECCOMP) */
	bool notify_got;
	sandbox_violation viol; /* the first call outside it, when viol_set */
	bool viol_set;
	/* Why the supervisor killed the proxy for what it sent or did not read ("" if not). */
	char proto_why[160];
	/* Reloads that add or remove sandboxes (PSX_RELOAD): mu guards n and a model's sb while
	 * a reload's thread adds or stops one beside the loop that serves the proxy. */
	pthread_mutex_t mu;
	pthread_cond_t users_cv;    /* a sup_model's users dropped (S.mu) */
	const char *path;           /* custos.yaml, read again by the supervisor itself */
	const custos_config *start; /* what `up` started with (cmd_up's) */
	custos_config *running;     /* the last applied: start, or owned when a reload set it */
	struct sup_reload *rl;      /* the latest reload, then the older ones not joined yet */
	uint64_t rl_started;        /* reloads given a thread (the loop's) */
	pthread_mutex_t rl_mu;      /* the reloads' commit, rl_settled and rl_abort */
	pthread_cond_t rl_cv;
	uint64_t rl_settled; /* reloads whose outcome is in S.running and the slots' flags */
	bool rl_abort;       /* custos is stopping: reloads give up, removals happen now */
} S = { .sock = -1,
	.rl_mu = PTHREAD_MUTEX_INITIALIZER,
	.rl_cv = PTHREAD_COND_INITIALIZER,
	.proxy = -1,
	.notify_fd = -1,
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.users_cv = PTHREAD_COND_INITIALIZER,
	.send_mu = PTHREAD_MUTEX_INITIALIZER,
	.aw_mu = PTHREAD_MUTEX_INITIALIZER };

static void sup_vm_info(struct sup_model *x);

/* A proxy that reads nothing for this long (its socket's buffer full) is stopped: the
 * supervisor never blocks on it for longer (SO_SNDTIMEO of S.sock). */
#define SUP_SEND_TIMEOUT_S 30
static long sup_send_timeout_s = SUP_SEND_TIMEOUT_S; /* a test build may shorten it */

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_SUP_SEND_TIMEOUT_S=N (1 to
 * 30) makes the supervisor give up on a proxy that reads nothing after N seconds instead of
 * SUP_SEND_TIMEOUT_S (tests/integration/privsep_protocol.sh). */
static void test_hook_send_timeout(void)
{
	const char *v = getenv("CUSTOS_TEST_SUP_SEND_TIMEOUT_S");
	uint64_t n = 0;

	if (v == NULL)
		return;
	if (num_parse_u64(span_cstr(v), 1, SUP_SEND_TIMEOUT_S, &n) != CUSTOS_OK) {
		log_error("up: test hook: CUSTOS_TEST_SUP_SEND_TIMEOUT_S=%s: %s", v, err_msg());
		return;
	}
	log_warn("up: test hook: a proxy that reads nothing is stopped after %llu s",
	         (unsigned long long)n);
	sup_send_timeout_s = (long)n;
}
#endif

static void sup_proto_kill(const char *fmt, ...) CUSTOS_PRINTF(1, 2);

static void sup_send(const psx_hdr *h, const void *payload, const int *fds, size_t nfds)
{
	pthread_mutex_lock(&S.send_mu);
	custos_err e = CUSTOS_OK;
	if (!S.proxy_gone && S.sock >= 0) {
		e = psx_send(S.sock, h, payload, fds, nfds);
		if (e != CUSTOS_OK)
			log_debug("privsep: to the proxy: %s", err_msg());
		if (e == CUSTOS_ERR_TIMEOUT)
			S.proxy_gone = true; /* nothing more is sent to it: it is being killed */
	}
	pthread_mutex_unlock(&S.send_mu);
	if (e == CUSTOS_ERR_TIMEOUT)
		sup_proto_kill("it read none of the supervisor's messages for %ld seconds",
		               sup_send_timeout_s);
}

/* Fails closed on a proxy that breaks the protocol (a malformed message, one out of order,
 * a full socket): a compromised or broken proxy is killed; the supervisor's loop then reaps
 * it and stops the sandboxes, and audit_proxy_exit says why. */
static void sup_proto_kill(const char *fmt, ...)
{
	char why[sizeof(S.proto_why)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_error("up: the proxy (pid %d) broke the supervisor's protocol: %s; stopping it",
	          (int)S.proxy, why);
	pthread_mutex_lock(&S.send_mu);
	if (S.proto_why[0] == '\0')
		snprintf(S.proto_why, sizeof(S.proto_why), "%s", why);
	pthread_mutex_unlock(&S.send_mu);
	kill(S.proxy, SIGKILL);
}

void cli_privsep_audit(const audit_event *ev)
{
	span body = audit_event_body(ev);

	pthread_mutex_lock(&S.send_mu);
	bool gone = S.proxy_gone || S.sock < 0;
	pthread_mutex_unlock(&S.send_mu);
	if (!gone) {
		psx_hdr h = { .type = PSX_AUDIT, .len = (uint32_t)body.len };
		sup_send(&h, body.ptr, NULL, 0);
		return;
	}
	pthread_mutex_lock(&S.aw_mu);
	if (S.aw == NULL || audit_submit(S.aw, ev) != CUSTOS_OK)
		log_error("supervisor: event not audited: {%.*s}", (int)body.len, body.ptr);
	pthread_mutex_unlock(&S.aw_mu);
}

static void sup_state(const struct sup_model *x, sandbox *sb)
{
	psx_state st;

	memset(&st, 0, sizeof(st));
	st.pid = -1;
	st.port = x->port;
	st.memory_bytes = x->limits.memory_bytes;
	st.pids = x->limits.pids;
	st.nofile = x->limits.nofile;
	st.cpu_millis = x->limits.cpu_millis;
	if (sb) {
		snprintf(st.kind, sizeof(st.kind), "process");
		st.pid = sandbox_pid(sb);
		st.running = st.pid > 0;
		st.generation = sandbox_generation(sb);
		st.restarts = st.generation ? st.generation - 1 : 0;
		snprintf(st.profile_hash, sizeof(st.profile_hash), "%s",
		         sandbox_profile_hash_of(sb));
		snprintf(st.cgroup, sizeof(st.cgroup), "%s", sandbox_cgroup_backend(sb));
	} else {
		snprintf(st.kind, sizeof(st.kind), "vm");
		st.running = x->vm_routable;
		st.generation = x->vm_generation;
		st.restarts = x->vm_generation ? x->vm_generation - 1 : 0;
	}
	psx_hdr h = { .type = PSX_STATE,
		      .model = (uint16_t)x->slot,
		      .gen = st.generation,
		      .len = sizeof(st) };
	sup_send(&h, &st, NULL, 0);
}

static void sup_egress_fd(const struct sup_model *x, unsigned gen, int fd)
{
	psx_hdr h = { .type = PSX_EGRESS_FD, .model = (uint16_t)x->slot, .gen = gen };
	sup_send(&h, NULL, &fd, 1);
	close(fd); /* the proxy has its own copy now */
}

/* Every lifecycle event: logged, audited (through the proxy's writer), counted for /metrics
 * and mirrored to the proxy; a START brings a new netns and so a new egress listener. */
static void on_sandbox_event(const sandbox_event *ev, void *arg)
{
	struct sup_model *x = arg;
	buf b;
	const char *s = "";
	audit_event ae;

	buf_init(&b, 4096);
	if (sandbox_event_json(ev, &b) == CUSTOS_OK && buf_cstr(&b, &s) == CUSTOS_OK)
		log_info("sandbox %s: %s", x->id, s);
	buf_free(&b);
	audit_event_begin_at(&ae, "sandbox.process", ev->wall_ns);
	audit_event_cstr(&ae, "model", x->id);
	audit_event_cstr(&ae, "action", sandbox_event_kind_name(ev->kind));
	audit_event_u64(&ae, "generation", ev->generation);
	if (ev->pid > 0)
		audit_event_u64(&ae, "pid", (uint64_t)ev->pid);
	audit_event_cstr(&ae, "profile_hash", ev->profile_hash);
	if (ev->kind == SANDBOX_EV_EXIT) {
		if (ev->signal)
			audit_event_u64(&ae, "signal", (uint64_t)ev->signal);
		else
			audit_event_u64(&ae, "exit_code", (uint64_t)ev->exit_code);
	}
	if (ev->syscall)
		audit_event_cstr(&ae, "syscall", ev->syscall);
	if (ev->limit)
		audit_event_cstr(&ae, "limit", ev->limit);
	if (ev->count)
		audit_event_u64(&ae, "count", ev->count);
	audit_event_cstr(&ae, "detail", ev->detail);
	if (audit_event_end(&ae) == CUSTOS_OK)
		cli_privsep_audit(&ae);
	psx_hdr h = { .type = PSX_EVENT,
		      .model = (uint16_t)x->slot,
		      .gen = (uint32_t)(ev->kind == SANDBOX_EV_VIOLATION ? ev->count : 1),
		      .arg = (uint32_t)ev->kind };
	sup_send(&h, NULL, NULL, 0);
	if (ev->kind == SANDBOX_EV_START && x->egress_port) {
		int fd = -1;
		if (sandbox_listen_inside(ev->sandbox, x->egress_port, 128, &fd) != CUSTOS_OK)
			log_error("egress: model %s started without an egress listener: %s", x->id,
			          err_msg());
		else
			sup_egress_fd(x, ev->generation, fd);
	}
	sup_state(x, ev->sandbox);
}

static void on_vm_egress(void *arg, int fd)
{
	struct sup_model *x = arg;
	sup_egress_fd(x, x->vm_generation, fd);
}

#define SUP_OUTPUT_LINE 2048 /* a longer line of a model server's output is logged in pieces */
/* A model server's output is logged at most this many lines a second, with a burst: beyond,
 * lines are read and dropped (the model never blocks on its pipe), and counted in a warning
 * when the rate falls back under the limit, at the latest every SUP_OUTPUT_REPORT_S while it
 * does not, so that a hostile or broken model cannot flood custos' log. */
#define SUP_OUTPUT_RATE     100u
#define SUP_OUTPUT_BURST    1000u
#define SUP_OUTPUT_REPORT_S 10u

struct sup_output {
	char *id;
	int fd;             /* the read end; closed by the thread */
	log_rate rl;        /* SUP_OUTPUT_RATE lines a second, burst SUP_OUTPUT_BURST */
	uint64_t dropped_b; /* bytes of the lines dropped since the last report */
};

/* Says how much was dropped since the last report, when log_rate says it is time (force: now,
 * whatever was dropped). */
static void sup_output_report(struct sup_output *o, uint64_t now, bool force)
{
	uint64_t n = force ? o->rl.dropped : log_rate_report(&o->rl, now);
	if (n == 0)
		return;
	o->rl.dropped = 0;
	log_warn("sandbox %s: %llu lines of output (%llu bytes) dropped: the model wrote more than "
	         "%u lines a second (burst %u)",
	         o->id, (unsigned long long)n, (unsigned long long)o->dropped_b, SUP_OUTPUT_RATE,
	         SUP_OUTPUT_BURST);
	o->dropped_b = 0;
}

static void sup_output_line(struct sup_output *o, const char *line, size_t n)
{
	uint64_t now = tm_mono_ns();
	/* under the limit again (or a report is due): what was dropped before this line */
	sup_output_report(o, now, false);
	if (!log_rate_take(&o->rl, now)) {
		o->dropped_b += n;
		return;
	}
	log_info("sandbox %s: output: %s", o->id, line);
}

/* A model server writes to its stdout and stderr what it likes; custos' stderr carries log
 * lines only (JSON lines for a shipper), so each of its lines becomes one log line naming the
 * model, control characters replaced (no terminal escapes reach a terminal custos logs to),
 * at most SUP_OUTPUT_RATE a second. */
static void *sup_output_main(void *arg)
{
	struct sup_output *o = arg;
	char line[SUP_OUTPUT_LINE + 1];
	size_t n = 0;

	proc_name_self("custos-sb-out");
	log_rate_init(&o->rl, SUP_OUTPUT_RATE, SUP_OUTPUT_BURST, SUP_OUTPUT_REPORT_S * NS_PER_S,
	              tm_mono_ns());
	for (;;) {
		char chunk[4096];
		/* While lines are being dropped, a quiet second reports them. */
		if (o->rl.dropped > 0) {
			struct pollfd pfd = { .fd = o->fd, .events = POLLIN };
			int pr = poll(&pfd, 1, 1000);
			if (pr == 0) {
				sup_output_report(o, tm_mono_ns(), false);
				continue;
			}
		}
		ssize_t r = read(o->fd, chunk, sizeof(chunk));
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++) {
			unsigned char c = (unsigned char)chunk[i];
			if (c != '\n') {
				line[n++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
				if (n < SUP_OUTPUT_LINE)
					continue;
			}
			line[n] = '\0';
			if (n > 0)
				sup_output_line(o, line, n);
			n = 0;
		}
	}
	if (n > 0) {
		line[n] = '\0';
		sup_output_line(o, line, n);
	}
	sup_output_report(o, tm_mono_ns(), true);
	close(o->fd);
	free(o->id);
	free(o);
	return NULL;
}

/* The pipe and thread for x's output: x->out_w is given to the sandbox as stdout and stderr. */
static custos_err sup_output_start(struct sup_model *x)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) == -1)
		return err_sys("model %s: output pipe", x->id);
	struct sup_output *o = xcalloc(1, sizeof(*o));
	o->id = xstrdup(x->id);
	o->fd = p[0];
	int r = pthread_create(&x->out_th, NULL, sup_output_main, o);
	if (r != 0) {
		close(p[0]);
		close(p[1]);
		free(o->id);
		free(o);
		errno = r;
		return err_sys("model %s: output thread", x->id);
	}
	x->out_started = true;
	x->out_w = p[1];
	return CUSTOS_OK;
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_SUP_STOP_HOLD=PATH holds
 * the stop of a sandbox a reload removes, once it is taken off its slot, until PATH exists (or
 * custos stops), so that a test can send FREED for the slot meanwhile
 * (tests/integration/privsep_hostile.sh). */
static void test_hook_stop_hold(const struct sup_model *x)
{
	const char *path = getenv("CUSTOS_TEST_SUP_STOP_HOLD");

	if (path == NULL || !x->gone || access(path, F_OK) == 0)
		return;
	log_warn("up: test hook: model %s: its stop holds until %s exists", x->id, path);
	while (!__atomic_load_n(&S.rl_abort, __ATOMIC_ACQUIRE) && access(path, F_OK) == -1)
		usleep(50000);
	log_warn("up: test hook: model %s: its stop goes on", x->id);
}
#endif

/* Stops x's sandbox (its STOP event is audited), removes its cgroup and ends its output
 * reader. The loop serving the proxy never sees a sandbox being stopped: it is taken off x
 * first, under S.mu, and stopped once the loop's sup_want no longer uses it. */
static void sup_model_stop(struct sup_model *x, bool gone)
{
	pthread_mutex_lock(&S.mu);
	sandbox *sb = x->sb;
	struct up_vm *vm = x->vm;
	x->sb = NULL;
	x->vm = NULL;
	x->gone = x->gone || gone;
	while (x->users > 0)
		pthread_cond_wait(&S.users_cv, &S.mu);
	pthread_mutex_unlock(&S.mu);
#ifdef CUSTOS_TEST_HOOKS
	test_hook_stop_hold(x);
#endif
	if (sb && sandbox_stop(sb) != CUSTOS_OK)
		log_warn("up: stopping sandbox %s: %s", x->id, err_msg());
	sandbox_free(sb);
	cli_vm_stop(vm);
	/* Its processes are gone: the reader sees the end once this copy is closed. */
	if (x->out_w >= 0)
		close(x->out_w);
	x->out_w = -1;
	if (x->out_started)
		pthread_join(x->out_th, NULL);
	x->out_started = false;
	pthread_mutex_lock(&S.mu);
	x->stopped = x->gone;
	pthread_mutex_unlock(&S.mu);
}

static void stop_sandboxes(void)
{
	for (size_t i = 0; i < S.n; i++)
		sup_model_stop(&S.m[i], false);
}

static void free_models(void)
{
	stop_sandboxes();
	for (size_t i = 0; i < S.n; i++)
		free(S.m[i].id);
	S.n = 0;
}

/* Model servers run unattended: their stdin is /dev/null, never the terminal custos may have
 * been started from (which they could read). Opened once, kept for restarts. */
static int sup_devnull(void)
{
	static int devnull = -1;
	if (devnull < 0)
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return devnull;
}

struct sup_reload;
static bool sup_reload_given_up(const struct sup_reload *rl);

/* A SIGTERM or SIGINT waits, unread, on the supervisor's signalfd. At start the supervisor
 * reads no signal until the sandboxes are up: it looks with this instead, so that a stop
 * asked for meanwhile is not held for a sandbox's whole health.start_timeout (120 s by
 * default, longer than systemd's TimeoutStopSec, which then kills everything). */
static bool sup_stop_pending(void)
{
	sigset_t pend;

	return sigpending(&pend) == 0 &&
	       (sigismember(&pend, SIGTERM) == 1 || sigismember(&pend, SIGINT) == 1);
}

/* Starts m's process sandbox as x and waits until it answers (or, for reload rl, until that
 * reload is given up; at start, until a SIGTERM); its first egress listener and state reach
 * the proxy on the way. At start (rl NULL) and for a reload alike. */
static custos_err start_process(const custos_config *cfg, const cfg_model *m, struct sup_model *x,
                                const struct sup_reload *rl)
{
	ENSURE(m->sandbox.type == CFG_SANDBOX_PROCESS, CUSTOS_ERR_UNSUPPORTED,
	       "model %s: unknown sandbox type", m->id);
	int devnull = sup_devnull();
	ENSURE(devnull >= 0, CUSTOS_ERR_IO, "model %s: /dev/null: %s", m->id, strerror(errno));
	sandbox_profile p;
	struct sb_storage *st = xcalloc(1, sizeof(*st));
	custos_err e = map_sandbox(cfg, m, &p, st);
	sandbox_opts so;
	sandbox_opts_init(&so);
	so.on_event = on_sandbox_event;
	so.arg = x;
	so.restart.max_restarts = UINT32_MAX;
	so.stdin_fd = devnull;
	if (e == CUSTOS_OK)
		e = sup_output_start(x);
	so.stdout_fd = so.stderr_fd = x->out_w;
	if (m->sandbox.restart_initial_ns)
		so.restart.backoff_initial_ms = m->sandbox.restart_initial_ns / NS_PER_MS;
	if (m->sandbox.restart_max_ns)
		so.restart.backoff_max_ms = m->sandbox.restart_max_ns / NS_PER_MS;
	x->limits = p.limits;
	sandbox *sb = NULL;
	if (e == CUSTOS_OK)
		e = sandbox_spawn(&p, st->argv, &so, &sb);
	for (size_t k = 0; k < st->n_env_set; k++)
		free(st->env_set[k]);
	free(st);
	if (e != CUSTOS_OK)
		return err_wrap(e, "model %s: sandbox", m->id);
	pthread_mutex_lock(&S.mu);
	x->sb = sb;
	pthread_mutex_unlock(&S.mu);
	uint64_t wait_ms = m->sandbox.health.start_timeout_ns
	                           ? m->sandbox.health.start_timeout_ns / NS_PER_MS
	                           : 120000;
	log_info("up: model %s: sandbox started (pid %d), waiting for port %u", m->id,
	         (int)sandbox_pid(sb), x->port);
	/* In steps, so that a shutdown during the start or a reload's is not held for the whole
	 * wait. */
	uint64_t end = tm_mono_ns() + wait_ms * NS_PER_MS;
	for (;;) {
		uint64_t now = tm_mono_ns();
		uint64_t step = now >= end ? 1 : (end - now) / NS_PER_MS + 1;
		e = sandbox_wait_ready(sb, x->port, m->sandbox.health.path,
		                       step < 1000 ? step : 1000);
		if (e != CUSTOS_ERR_TIMEOUT || tm_mono_ns() >= end)
			break;
		if (rl && sup_reload_given_up(rl)) {
			e = err_set(CUSTOS_ERR_CLOSED, "%s",
			            __atomic_load_n(&S.rl_abort, __ATOMIC_ACQUIRE)
			                    ? "custos is stopping"
			                    : "the proxy gave the reload up");
			break;
		}
		if (rl == NULL && sup_stop_pending()) {
			e = err_set(CUSTOS_ERR_CLOSED, "custos is stopping (a SIGTERM or SIGINT "
			                               "came during the start)");
			break;
		}
	}
	if (e == CUSTOS_ERR_TIMEOUT)
		e = err_set(e, "sandbox %s: not ready on port %u after %llu ms", m->id,
		            (unsigned)x->port, (unsigned long long)wait_ms);
	GUARD(err_wrap(e, "model %s: not ready", m->id));
	sup_state(x, sb);
	return CUSTOS_OK;
}

/* A new entry for sandboxed model m of cfg at the end of S.m (published to the loop). */
#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_SANDBOX_SLOTS=N (1 to
 * PSX_MAX_MODELS) makes the supervisor give reloads at most N slots, so that a test reaches
 * the slot limit, and shows slots reused, in a few reloads (tests/integration/
 * sandbox_reload_slots.sh). */
static size_t test_hook_slots(void)
{
	const char *v = getenv("CUSTOS_TEST_SANDBOX_SLOTS");
	uint64_t n = 0;

	if (v == NULL)
		return PSX_MAX_MODELS;
	if (num_parse_u64(span_cstr(v), 1, PSX_MAX_MODELS, &n) != CUSTOS_OK) {
		log_error("up: test hook: CUSTOS_TEST_SANDBOX_SLOTS=%s: %s", v, err_msg());
		return PSX_MAX_MODELS;
	}
	log_warn("up: test hook: reloads have at most %llu sandbox slots", (unsigned long long)n);
	return (size_t)n;
}
#endif

/* How many slots a reload may use (PSX_MAX_MODELS; fewer in a test). */
static size_t sup_slots(void)
{
	static size_t n;
	if (n == 0) {
		n = PSX_MAX_MODELS;
#ifdef CUSTOS_TEST_HOOKS
		n = test_hook_slots();
#endif
	}
	return n;
}

/* Slots a reload may take now: free ones (a removed sandbox's, FREED by the proxy) and those
 * never used yet. waiting: removed sandboxes stopped whose slot the proxy has not freed yet. */
static size_t sup_slots_available(size_t *waiting)
{
	size_t n = S.n < sup_slots() ? sup_slots() - S.n : 0;
	*waiting = 0;
	pthread_mutex_lock(&S.mu);
	for (size_t i = 0; i < S.n; i++) {
		if (S.m[i].gone && S.m[i].freed)
			n++;
		else if (S.m[i].gone)
			(*waiting)++;
	}
	pthread_mutex_unlock(&S.mu);
	return n;
}

/* A new entry for sandboxed model m of cfg (published to the loop): a free slot (a removed
 * sandbox's that the proxy freed), else one at the end of S.m. The caller checked that one is
 * available (sup_slots_available) or is starting custos. */
static struct sup_model *sup_model_new(const custos_config *cfg, const cfg_model *m)
{
	pthread_mutex_lock(&S.mu);
	size_t slot = S.n;
	for (size_t i = 0; i < S.n && slot == S.n; i++)
		if (S.m[i].gone && S.m[i].freed)
			slot = i;
	struct sup_model *x = &S.m[slot];
	free(x->id);
	memset(x, 0, sizeof(*x));
	x->id = xstrdup(m->id);
	x->slot = slot;
	x->out_w = -1;
	x->port = m->sandbox.port ? m->sandbox.port : 8000;
	x->egress_port = cfg->egress.enabled ? (uint16_t)cfg->egress.port : 0;
	if (slot == S.n)
		S.n++;
	pthread_mutex_unlock(&S.mu);
	return x;
}

/* A reload's start gives up (sup_reload_given_up) for cli_vm_start. */
static bool sup_vm_give_up(const void *rl)
{
	return rl && sup_reload_given_up(rl);
}

/* Starts m's VM as x and waits until its model server answers (or, for reload rl, until that
 * reload is given up); routable from then on at generation 1, its first egress listener, its
 * state and VM entry reach the proxy. At start (rl NULL) and for a reload alike: x->vm is set
 * under S.mu, where the loop (sup_vm_poll) reads it. */
static custos_err start_vm(const custos_config *cfg, const cfg_model *m, struct sup_model *x,
                           const struct sup_reload *rl)
{
	struct up_vm *vm = NULL;
	int fd = -1;

	GUARD(cli_vm_start(cfg, m, NULL, sup_vm_give_up, rl, &vm));
	if (x->egress_port) {
		custos_err e = cli_vm_egress_fd(vm, &fd);
		if (e != CUSTOS_OK) {
			cli_vm_stop(vm);
			return err_wrap(e, "model %s: egress listener", m->id);
		}
	}
	pthread_mutex_lock(&S.mu);
	x->vm = vm;
	x->vm_routable = true;
	x->vm_generation = 1;
	if (fd >= 0) {
		sup_egress_fd(x, 1, fd);
		cli_vm_egress_hook(vm, on_vm_egress, x);
	}
	sup_state(x, NULL);
	sup_vm_info(x);
	pthread_mutex_unlock(&S.mu);
	return CUSTOS_OK;
}

/* Starts every sandboxed model and waits until it answers; their first egress listeners and
 * states reach the proxy on the way. */
static custos_err start_sandboxes(const custos_config *cfg)
{
	ENSURE(cfg->n_models <= PSX_MAX_MODELS, CUSTOS_ERR_LIMIT, "more than %d models",
	       PSX_MAX_MODELS);
	for (size_t i = 0; i < cfg->n_models && S.n < PSX_MAX_MODELS; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->upstream.kind != CFG_UPSTREAM_SANDBOX)
			continue;
		struct sup_model *x = sup_model_new(cfg, m);
		if (m->sandbox.type == CFG_SANDBOX_VM) /* docs/VM.md */
			GUARD(start_vm(cfg, m, x, NULL));
		else
			GUARD(start_process(cfg, m, x, NULL));
	}
	return CUSTOS_OK;
}

/* =============================================================================================
 * A reload that adds, removes or replaces sandboxed models (docs/SANDBOX.md, "Reload"). The
 * proxy only says that custos.yaml changed (RELOAD): the supervisor reads the file itself,
 * checks it against what it runs as the proxy did (config_reload_check), and starts what the
 * file says, nothing the proxy names. Its thread starts the new sandboxes and waits until they
 * answer while the loop keeps serving the proxy (the other models' sockets), answers RELOADED, then
 * waits for the proxy's COMMIT: applied, the removed sandboxes are stopped once the proxy has
 * no request in flight to them (IDLE), at the latest after limits.timeouts.shutdown; refused,
 * the added ones are stopped at once and the previous configuration stays. A reload settles
 * (its outcome is in S.running and in the slots' flags) before it stops anything; the next
 * one waits only for that, not for the sandboxes an earlier one still drains or stops.
 */
struct sup_reload {
	pthread_t th;
	struct sup_reload *older; /* the reloads begun before, not joined yet (the loop's) */
	uint64_t order;           /* this reload's place among those given a thread, from 1 */
	uint32_t seq;             /* RELOAD's gen, echoed in RELOADED */
	char proxy_sha256[65];    /* RELOAD's payload: the custos.yaml the proxy read */
	int commit;               /* -1 until COMMIT, then 0 or 1 (S.rl_mu) */
	bool answered;            /* RELOADED said it is prepared: COMMIT may apply it (S.rl_mu) */
	bool done;                /* its thread returned: joined at the next RELOAD (S.rl_mu) */
	custos_config *next;
	size_t added[PSX_MAX_MODELS], n_added;
	size_t removed[PSX_MAX_MODELS], n_removed;
	/* removed[i]'s sandbox was taken for stopping: its slot may be another's from then on,
	 * so an IDLE for that slot is no longer this reload's (S.rl_mu). */
	bool stopping[PSX_MAX_MODELS];
};

/* custos is stopping (rl_abort), or the proxy gave this reload up before its answer (a
 * SIGTERM during it: COMMIT refused). */
static bool sup_reload_given_up(const struct sup_reload *rl)
{
	return __atomic_load_n(&S.rl_abort, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&rl->commit, __ATOMIC_ACQUIRE) == 0;
}

static void sup_removed(struct sup_model *x)
{
	sup_model_stop(x, true);
	log_info("up: model %s: sandbox stopped and removed", x->id);
	psx_hdr h = { .type = PSX_REMOVED, .model = (uint16_t)x->slot };
	sup_send(&h, NULL, NULL, 0);
}

static bool sup_sandboxed(const cfg_model *m)
{
	return m->upstream.kind == CFG_UPSTREAM_SANDBOX;
}

/* Neither stopped nor on its way out: what a reload compares custos.yaml with. Under S.mu:
 * an earlier reload's thread may be stopping another slot meanwhile. */
static bool sup_running(struct sup_model *x)
{
	pthread_mutex_lock(&S.mu);
	bool r = !x->gone && !x->retired;
	pthread_mutex_unlock(&S.mu);
	return r;
}

static struct sup_model *sup_live(const char *id)
{
	for (size_t i = 0; i < S.n; i++)
		if (sup_running(&S.m[i]) && strcmp(S.m[i].id, id) == 0)
			return &S.m[i];
	return NULL;
}

/* The slots of a reload's outcome that no later reload may count as running any more. */
static void sup_retire(const size_t *slots, size_t n)
{
	pthread_mutex_lock(&S.mu);
	for (size_t i = 0; i < n; i++)
		S.m[slots[i]].retired = true;
	pthread_mutex_unlock(&S.mu);
}

/* rl's outcome is in S.running and the slots' flags: the next reload may read them. */
static void sup_reload_settle(void)
{
	pthread_mutex_lock(&S.rl_mu);
	S.rl_settled++;
	pthread_cond_broadcast(&S.rl_cv);
	pthread_mutex_unlock(&S.rl_mu);
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_SUP_READ_HOLD=PATH holds
 * the supervisor's reading of custos.yaml for a reload (after the proxy read it) until PATH
 * exists (or custos stops): a test can replace the file in between
 * (tests/integration/sandbox_reload_replaced.sh). */
static void test_hook_sup_read_hold(const struct sup_reload *rl)
{
	const char *path = getenv("CUSTOS_TEST_SUP_READ_HOLD");

	if (path == NULL)
		return;
	log_warn("up: test hook: reload %u: the supervisor reads %s once %s exists",
	         (unsigned)rl->seq, S.path, path);
	while (!__atomic_load_n(&S.rl_abort, __ATOMIC_ACQUIRE) && access(path, F_OK) == -1)
		usleep(50000);
	log_warn("up: test hook: reload %u: the supervisor reads %s now", (unsigned)rl->seq,
	         S.path);
}
#endif

/* Reads custos.yaml, checks it, starts the sandboxes it adds (and notes the ones it removes). */
static custos_err sup_reload_prepare(struct sup_reload *rl)
{
	diag_list d;
#ifdef CUSTOS_TEST_HOOKS
	test_hook_sup_read_hold(rl);
#endif
	diag_init(&d);
	custos_err e = config_load(S.path, &rl->next, &d);
	if (e != CUSTOS_OK) {
		e = diag_err(e, &d, "configuration");
		diag_free(&d);
		return e;
	}
	diag_free(&d);
	custos_config *next = rl->next;
	/* The proxy read the file before it asked: had it been replaced since, the proxy would
	 * apply one version and the supervisor start the sandboxes of another. */
	ENSURE(strcmp(next->source_sha256, rl->proxy_sha256) == 0, CUSTOS_ERR_AGAIN,
	       "%s changed between the proxy's reading and the supervisor's (SHA-256 %.12s... "
	       "then %.12s...): nothing of it applied; reload again",
	       S.path, rl->proxy_sha256, next->source_sha256);
	reload_cli_overrides(S.start, next);
	GUARD(config_reload_check(S.running, next));
	/* A VM added while an earlier reload's VM of that id still stops (draining, or its
	 * reload refused) starts beside it under another domain name and channel socket
	 * (cli/vm_up.c), as a replacement does; only PCI devices cannot be shared: a VM with
	 * hostdevs waits for none, it is refused while another VM of that id runs. */
	for (size_t i = 0; i < next->n_models; i++) {
		const cfg_model *m = &next->models[i];
		if (!sup_sandboxed(m) || m->sandbox.type != CFG_SANDBOX_VM || sup_live(m->id) ||
		    m->sandbox.profile == NULL ||
		    next->profiles[m->sandbox.profile_index].vm.n_hostdev == 0)
			continue;
		bool stopping = false;
		pthread_mutex_lock(&S.mu);
		for (size_t k = 0; k < S.n && !stopping; k++)
			stopping = !S.m[k].gone && strcmp(S.m[k].id, m->id) == 0;
		pthread_mutex_unlock(&S.mu);
		ENSURE(!stopping, CUSTOS_ERR_AGAIN,
		       "model %s: the VM an earlier reload removed is still stopping and may hold "
		       "the PCI devices (hostdev) this one needs: reload again once it is gone",
		       m->id);
	}
	/* A model that stays with other sandbox settings is replaced: removed (stopped once the
	 * reload is applied and its requests finished) and added (started now, beside the old
	 * sandbox, which keeps serving until then). */
	bool replace[PSX_MAX_MODELS] = { false };
	size_t n_add = 0;
	for (size_t i = 0; i < S.n; i++)
		if (sup_running(&S.m[i]) && config_sandbox_replaced(S.running, next, S.m[i].id))
			replace[i] = true;
	for (size_t i = 0; i < next->n_models; i++) {
		const struct sup_model *o = sup_live(next->models[i].id);
		if (sup_sandboxed(&next->models[i]) && (o == NULL || replace[o->slot]))
			n_add++;
	}
	/* A slot is reused once its sandbox is stopped and the proxy let go of it (FREED, which
	 * may still be on its way after REMOVED: waited for, briefly). */
	size_t waiting = 0, avail = sup_slots_available(&waiting);
	for (int tries = 0; avail < n_add && waiting > 0 && tries < 50; tries++) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += 100 * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&S.rl_mu);
		if (!S.rl_abort)
			(void)pthread_cond_timedwait(&S.rl_cv, &S.rl_mu, &dl);
		pthread_mutex_unlock(&S.rl_mu);
		avail = sup_slots_available(&waiting);
	}
	ENSURE(n_add <= avail, CUSTOS_ERR_LIMIT,
	       "%zu sandboxes to start, %zu sandbox slots free of %zu (each running or "
	       "draining sandbox holds one; restart custos)",
	       n_add, avail, sup_slots());
	for (size_t i = 0; i < S.n; i++) {
		struct sup_model *x = &S.m[i];
		if (!sup_running(x))
			continue; /* stopped, or an earlier reload stops it */
		bool kept = false;
		for (size_t k = 0; k < next->n_models && !kept; k++)
			kept = sup_sandboxed(&next->models[k]) &&
			       strcmp(next->models[k].id, x->id) == 0;
		if (!kept || replace[i])
			rl->removed[rl->n_removed++] = i;
	}
	for (size_t i = 0; i < next->n_models; i++) {
		const cfg_model *m = &next->models[i];
		const struct sup_model *o = sup_sandboxed(m) ? sup_live(m->id) : NULL;
		if (!sup_sandboxed(m) || (o && !replace[o->slot]))
			continue;
		struct sup_model *x = sup_model_new(next, m);
		rl->added[rl->n_added++] = x->slot;
		/* gen: the reload that adds it, so that the proxy knows it unroutable when that
		 * reload was given up already */
		bool is_vm = m->sandbox.type == CFG_SANDBOX_VM;
		psx_hdr h = { .type = PSX_ADDED,
			      .model = (uint16_t)x->slot,
			      .gen = rl->seq,
			      .arg = is_vm ? PSX_ADDED_VM : PSX_ADDED_PROCESS,
			      .len = (uint32_t)strlen(x->id) };
		sup_send(&h, x->id, NULL, 0);
		if (o)
			log_info("up: reload: model %s changed: starting its new %s beside the "
			         "old one",
			         m->id, is_vm ? "VM" : "sandbox");
		else
			log_info("up: reload: model %s added: starting its %s", m->id,
			         is_vm ? "VM" : "sandbox");
		GUARD(is_vm ? start_vm(next, m, x, rl) : start_process(next, m, x, rl));
	}
	return CUSTOS_OK;
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_REFUSED_STOP_HOLD=PATH
 * holds the stop of the sandboxes that a reload refused at COMMIT had started, until PATH
 * exists (or custos stops): a test can then reload again while they still run
 * (tests/integration/sandbox_reload_refused.sh). */
static void test_hook_refused_stop_hold(const struct sup_reload *rl)
{
	const char *path = getenv("CUSTOS_TEST_REFUSED_STOP_HOLD");

	if (path == NULL || rl->n_added == 0)
		return;
	log_warn("up: test hook: reload %u refused: its %zu sandboxes are stopped once %s exists",
	         (unsigned)rl->seq, rl->n_added, path);
	pthread_mutex_lock(&S.rl_mu);
	while (!S.rl_abort && access(path, F_OK) == -1) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += 50 * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&S.rl_cv, &S.rl_mu, &dl);
	}
	pthread_mutex_unlock(&S.rl_mu);
	log_warn("up: test hook: the refused reload's sandboxes are stopped now");
}
#endif

/* An applied reload's removed sandboxes: each is stopped as soon as the proxy says that no
 * request is in flight to it any more (IDLE), the others when limits.timeouts.shutdown is
 * over (or custos stops). */
static void sup_reload_drain(struct sup_reload *rl)
{
	/* New requests to a removed model are refused already (unknown model); the ones in
	 * flight have until the shutdown timeout, as at shutdown (a reload cannot change it). */
	uint64_t grace = S.start->limits.shutdown_timeout_ns ? S.start->limits.shutdown_timeout_ns
	                                                     : 10 * NS_PER_S;
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += (time_t)(grace / NS_PER_S);
	dl.tv_nsec += (long)(grace % NS_PER_S);
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	size_t left = rl->n_removed;
	int r = 0;
	while (left > 0) {
		size_t now[PSX_MAX_MODELS], n_now = 0;
		bool idle[PSX_MAX_MODELS];
		pthread_mutex_lock(&S.rl_mu);
		for (;;) {
			bool all = S.rl_abort || r == ETIMEDOUT;
			/* Only the ones not taken yet: a stopped one's slot may be another
			 * reload's by now. Taken under S.rl_mu, before REMOVED can free the slot,
			 * so that an IDLE for it from then on is not acted on (sup_idle). */
			for (size_t i = 0; i < rl->n_removed; i++) {
				if (rl->stopping[i])
					continue;
				bool id = S.m[rl->removed[i]].idle;
				if (all || id) {
					idle[n_now] = id;
					now[n_now++] = i;
					rl->stopping[i] = true;
				}
			}
			if (n_now > 0)
				break;
			r = pthread_cond_timedwait(&S.rl_cv, &S.rl_mu, &dl);
		}
		bool timed_out = r == ETIMEDOUT && !S.rl_abort;
		pthread_mutex_unlock(&S.rl_mu);
		for (size_t k = 0; k < n_now; k++) {
			struct sup_model *x = &S.m[rl->removed[now[k]]];
			if (idle[k])
				log_info(
				        "up: model %s: no request in flight to its removed sandbox",
				        x->id);
			else if (timed_out)
				log_info("up: model %s: limits.timeouts.shutdown is over: its "
				         "removed "
				         "sandbox is stopped with requests still in flight",
				         x->id);
			sup_removed(x);
			left--;
		}
	}
}

static void *sup_reload_main(void *arg)
{
	struct sup_reload *rl = arg;

	proc_name_self("custos-reload");
	/* The reload before this one settled: S.running is what it left, and the sandboxes it
	 * stops are retired. Those may still be draining or stopping: not waited for. */
	pthread_mutex_lock(&S.rl_mu);
	while (S.rl_settled + 1 < rl->order && !S.rl_abort)
		pthread_cond_wait(&S.rl_cv, &S.rl_mu);
	bool abort = S.rl_abort;
	pthread_mutex_unlock(&S.rl_mu);
	custos_err e =
	        abort ? err_set(CUSTOS_ERR_CLOSED, "custos is stopping") : sup_reload_prepare(rl);
	char msg[512] = "";
	if (e != CUSTOS_OK) {
		/* Refused: what it started is stopped before the answer, so that the refusal finds
		 * the previous state back. */
		snprintf(msg, sizeof(msg), "%s", err_msg());
		log_error("up: reload: %s", msg);
		for (size_t i = 0; i < rl->n_added; i++)
			sup_removed(&S.m[rl->added[i]]);
		rl->n_added = 0;
	}
	psx_hdr h = { .type = PSX_RELOADED,
		      .gen = rl->seq,
		      .arg = e == CUSTOS_OK ? 0 : 1,
		      .len = (uint32_t)strlen(msg) };
	if (e == CUSTOS_OK) { /* before the answer: the COMMIT that follows it finds it */
		pthread_mutex_lock(&S.rl_mu);
		rl->answered = true;
		pthread_mutex_unlock(&S.rl_mu);
	}
	sup_send(&h, msg, NULL, 0);
	int commit = 0;
	if (e == CUSTOS_OK) {
		pthread_mutex_lock(&S.rl_mu);
		while (rl->commit < 0 && !S.rl_abort)
			pthread_cond_wait(&S.rl_cv, &S.rl_mu);
		commit = rl->commit == 1 && !S.rl_abort;
		pthread_mutex_unlock(&S.rl_mu);
	}
	if (!commit) {
		/* What it started is retired first (the next reload neither keeps nor replaces
		 * it), then stopped. */
		sup_retire(rl->added, rl->n_added);
		sup_reload_settle();
#ifdef CUSTOS_TEST_HOOKS
		test_hook_refused_stop_hold(rl);
#endif
		for (size_t i = 0; i < rl->n_added; i++)
			sup_removed(&S.m[rl->added[i]]);
		config_free(rl->next);
		rl->next = NULL;
	} else {
		log_info("up: reload applied: %zu sandboxes added, %zu to stop", rl->n_added,
		         rl->n_removed);
		if (S.running != S.start)
			config_free(S.running);
		S.running = rl->next;
		rl->next = NULL;
		sup_retire(rl->removed, rl->n_removed);
		sup_reload_settle();
		sup_reload_drain(rl);
	}
	pthread_mutex_lock(&S.rl_mu);
	rl->done = true;
	pthread_mutex_unlock(&S.rl_mu);
	return NULL;
}

/* FREED: the proxy let go of the slot of a sandbox that was removed and stopped: a later
 * reload may give it to a new sandbox. Refused for a slot whose sandbox is not stopped, or
 * is being stopped (the proxy is told REMOVED once that is over). */
static void sup_freed(size_t slot)
{
	pthread_mutex_lock(&S.mu);
	struct sup_model *x = slot < S.n ? &S.m[slot] : NULL;
	bool ok = x && x->stopped && x->sb == NULL && x->vm == NULL;
	if (ok)
		x->freed = true;
	pthread_mutex_unlock(&S.mu);
	if (ok)
		log_debug("up: the proxy freed slot %zu: a reload may reuse it", slot);
	if (!ok) {
		log_warn("up: the proxy freed slot %zu, which holds no stopped sandbox: ignored",
		         slot);
		return;
	}
	pthread_mutex_lock(&S.rl_mu);
	pthread_cond_broadcast(&S.rl_cv); /* a reload may be waiting for a slot */
	pthread_mutex_unlock(&S.rl_mu);
}

/* IDLE: the proxy has no request in flight to a sandbox that an applied reload removed. Only
 * hastens a stop that limits.timeouts.shutdown would bring anyway: a confused proxy can stop
 * nothing that it still routes to (it no longer routes to a removed sandbox). */
static void sup_idle(size_t slot)
{
	pthread_mutex_lock(&S.mu);
	struct sup_model *x = slot < S.n ? &S.m[slot] : NULL;
	pthread_mutex_unlock(&S.mu);
	if (x == NULL)
		return;
	/* Only for a slot that an applied reload still drains: a flag set on any other would
	 * make a later removal stop it at once, requests in flight or not. That includes a slot
	 * the reload has taken for stopping: freed and reused by a later reload, it holds
	 * another sandbox, which a forged IDLE must not pre-mark. One that comes after the stop
	 * (it crossed REMOVED) is late, not wrong: ignored. */
	bool draining = false;
	pthread_mutex_lock(&S.rl_mu);
	for (const struct sup_reload *rl = S.rl; rl && !draining; rl = rl->older)
		if (rl->commit == 1 && !rl->done)
			for (size_t i = 0; i < rl->n_removed && !draining; i++)
				draining = rl->removed[i] == slot && !rl->stopping[i];
	if (draining) {
		x->idle = true;
		pthread_cond_broadcast(&S.rl_cv);
	}
	pthread_mutex_unlock(&S.rl_mu);
	if (!draining)
		log_debug("up: the proxy said slot %zu is idle, which no reload drains: ignored",
		          slot);
}

/* Joins and frees the reloads whose thread returned (all of them when all). */
static void sup_reload_reap(bool all)
{
	struct sup_reload **pp = &S.rl;
	while (*pp) {
		struct sup_reload *rl = *pp;
		pthread_mutex_lock(&S.rl_mu);
		bool done = rl->done;
		pthread_mutex_unlock(&S.rl_mu);
		if (!done && !all) {
			pp = &rl->older;
			continue;
		}
		pthread_join(rl->th, NULL);
		*pp = rl->older;
		config_free(rl->next);
		free(rl);
	}
}

/* Reloads whose thread has not ended (preparing, draining what they removed, or stopping what
 * a refusal left): a RELOAD beyond is refused. */
#define SUP_RELOADS_MAX 16

/* RELOAD: one at a time; a second one before the first's COMMIT is refused (the proxy
 * serialises its reloads, so only a confused proxy sends it). One after COMMIT does not wait
 * for the sandboxes earlier reloads still drain or stop. */
static void sup_reload_begin(uint32_t seq, const psx_msg *m)
{
	struct sup_reload *prev = S.rl;
	if (prev) {
		pthread_mutex_lock(&S.rl_mu);
		bool pending = prev->commit < 0;
		pthread_mutex_unlock(&S.rl_mu);
		if (pending) {
			static const char why[] = "another reload is being prepared";
			log_warn("up: reload %u asked by the proxy: refused, %s", (unsigned)seq,
			         why);
			psx_hdr h = {
				.type = PSX_RELOADED, .gen = seq, .arg = 1, .len = sizeof(why) - 1
			};
			sup_send(&h, why, NULL, 0);
			return;
		}
	}
	sup_reload_reap(false);
	/* Each reload holds a thread until what it removed is stopped: a proxy that asks for
	 * reloads faster than they end (one that reads none of the answers, say) must not make
	 * the supervisor start threads without bound. */
	size_t n_live = 0;
	for (const struct sup_reload *o = S.rl; o; o = o->older)
		n_live++;
	if (n_live >= SUP_RELOADS_MAX) {
		char why[128];
		int k = snprintf(why, sizeof(why),
		                 "%zu reloads still draining or stopping sandboxes, the most at "
		                 "once: reload again later",
		                 n_live);
		log_warn("up: reload %u asked by the proxy: refused, %s", (unsigned)seq, why);
		psx_hdr h = { .type = PSX_RELOADED, .gen = seq, .arg = 1, .len = (uint32_t)k };
		sup_send(&h, why, NULL, 0);
		return;
	}
	struct sup_reload *rl = xcalloc(1, sizeof(*rl));
	rl->commit = -1;
	rl->seq = seq;
	memcpy(rl->proxy_sha256, m->payload, PSX_RELOAD_SHA256_LEN); /* checked: psx_sup_check */
	rl->order = ++S.rl_started;
	int r = pthread_create(&rl->th, NULL, sup_reload_main, rl);
	if (r != 0) {
		static const char why[] = "the supervisor could not start the reload's thread";
		psx_hdr h = { .type = PSX_RELOADED, .gen = seq, .arg = 1, .len = sizeof(why) - 1 };
		sup_send(&h, why, NULL, 0);
		S.rl_started--; /* never settles: the next one must not wait for it */
		free(rl);
		return;
	}
	rl->older = S.rl;
	S.rl = rl;
}

/* COMMIT: a refusal may come at any time (the proxy gave the reload up); applied only after
 * RELOADED said the reload is prepared, once: false for a proxy that breaks that order. */
static bool sup_reload_commit(uint32_t seq, bool applied)
{
	struct sup_reload *rl = S.rl;
	if (rl == NULL || rl->seq != seq)
		return !applied; /* a refusal of a reload refused at once, or a proxy confused */
	bool ok = true;
	pthread_mutex_lock(&S.rl_mu);
	if (rl->commit >= 0 || (applied && !rl->answered))
		ok = !applied; /* a late refusal is harmless; a second or early "applied" is not */
	else                   /* start_process reads it unlocked */
		__atomic_store_n(&rl->commit, applied ? 1 : 0, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&S.rl_cv);
	pthread_mutex_unlock(&S.rl_mu);
	return ok;
}

/* At the end: a reload still starting gives up, those waiting to stop what they removed stop
 * it now; all are joined before the sandboxes are stopped. */
static void sup_reload_end(void)
{
	pthread_mutex_lock(&S.rl_mu);
	__atomic_store_n(&S.rl_abort, true, __ATOMIC_RELEASE); /* start_process reads it unlocked */
	pthread_cond_broadcast(&S.rl_cv);
	pthread_mutex_unlock(&S.rl_mu);
	sup_reload_reap(true);
}

/* The model a message from the proxy names (called with S.mu held). */
static struct sup_model *sup_model_of(const psx_hdr *h)
{
	return h->model < S.n ? &S.m[h->model] : NULL;
}

/* WANT: sockets inside the sandbox's netns (unconnected; a batch per round trip to its
 * socket factory, one message per batch), or streams over the VM's channel. Runs without
 * S.mu (a VM channel's stream may take the guest's time to open, and a reload's thread must
 * not wait for it): x is in use (users), so a stop meanwhile waits before freeing sb or vm. */
static void sup_want(struct sup_model *x, uint32_t want)
{
	int fds[PSX_MAX_FDS];
	int err = 0;
	unsigned gen = 0;

	pthread_mutex_lock(&S.mu);
	sandbox *sb = x->sb;
	struct up_vm *vm = x->vm;
	unsigned vm_gen = x->vm_generation;
	/* A slot without a sandbox (removed, or not started yet) is not used: a reload may give
	 * it to another sandbox meanwhile (sup_model_new clears it, and its users with it), so
	 * neither its users nor its id are touched once S.mu is let go. */
	if (sb == NULL && vm == NULL) {
		size_t slot = x->slot;
		pthread_mutex_unlock(&S.mu);
		log_debug("privsep: WANT for slot %zu, which runs no sandbox: refused", slot);
		psx_hdr h = { .type = PSX_SOCKS,
			      .model = (uint16_t)slot,
			      .arg = (uint32_t)ECONNREFUSED };
		sup_send(&h, NULL, NULL, 0);
		return;
	}
	x->users++;
	pthread_mutex_unlock(&S.mu);
	if (want > PSX_POOL_MAX)
		want = PSX_POOL_MAX;
	while (want > 0 && err == 0) {
		size_t n = 0;
		custos_err e;
		if (sb) {
			size_t batch = want < PSX_MAX_FDS ? want : PSX_MAX_FDS;
			if (batch > SANDBOX_SOCKETS_BATCH)
				batch = SANDBOX_SOCKETS_BATCH;
			e = sandbox_sockets_inside(sb, fds, batch, &n, &gen);
		} else {
			e = cli_vm_connect(vm, &fds[0]);
			n = e == CUSTOS_OK ? 1 : 0;
			gen = vm_gen;
		}
		if (e != CUSTOS_OK) {
			log_debug("privsep: model %s: %s", x->id, err_msg());
			err = e == CUSTOS_ERR_AGAIN ? EAGAIN : ECONNREFUSED;
			break;
		}
		psx_hdr h = { .type = PSX_SOCKS, .model = (uint16_t)x->slot, .gen = gen };
		sup_send(&h, NULL, fds, n);
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
		want -= (uint32_t)n;
	}
	if (err) {
		psx_hdr h = { .type = PSX_SOCKS,
			      .model = (uint16_t)x->slot,
			      .gen = gen,
			      .arg = (uint32_t)err };
		sup_send(&h, NULL, NULL, 0);
	}
	pthread_mutex_lock(&S.mu);
	x->users--;
	pthread_cond_broadcast(&S.users_cv);
	pthread_mutex_unlock(&S.mu);
}

/* RESTART from the admin API: SIGKILL to the instance's init through a pidfd, checked to
 * still be the current instance (a recycled pid is never signalled). */
static void sup_restart(struct sup_model *x, pid_t pid)
{
	int r = 0;

	if (x->sb == NULL) {
		r = ENOTSUP;
	} else {
		int fd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (fd == -1)
			r = errno;
		else if (sandbox_pid(x->sb) != pid)
			r = ESRCH;
		else if (syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == -1)
			r = errno;
		if (fd >= 0)
			close(fd);
	}
	log_info("up: model %s: restart of pid %d asked by the proxy: %s", x->id, (int)pid,
	         r ? strerror(r) : "killed");
	psx_hdr h = { .type = PSX_RESTARTED,
		      .model = (uint16_t)x->slot,
		      .gen = (uint32_t)pid,
		      .arg = (uint32_t)r };
	sup_send(&h, NULL, NULL, 0);
}

/* PSX_SECCOMP: the proxy's listener, accepted once and only if it is one. */
static void sup_take_listener(psx_msg *m)
{
	char link[64], target[64];

	if (S.notify_got || m->nfds != 1) {
		log_warn("up: unexpected seccomp listener message from the proxy: ignored");
		return;
	}
	S.notify_got = true;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", m->fds[0]);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = '\0';
	if (strcmp(target, "anon_inode:seccomp notify") != 0) {
		/* Without its listener the proxy's held calls would fail (ENOSYS) instead of
		 * ending it: fail closed. */
		log_error("up: the proxy sent %s, not its seccomp listener: stopping it", target);
		kill(S.proxy, SIGKILL);
		return;
	}
	S.notify_fd = m->fds[0];
	m->fds[0] = -1;
}

/* An always-denied call by the proxy or a child of it (ptrace, unshare, bpf, mount...): it
 * failed with EPERM and the caller runs on, as a library probing one must be able to. Each is
 * logged and audited (privsep / proxy_call_refused), at most SUP_REFUSED_BURST a second; the
 * rest of that second is summed into one event (syscall "*", `count`) once the second is over
 * (sup_refused_flush, from the supervisor's loop) or the proxy ends, whichever comes first, so
 * the trail stays complete in number. */
#define SUP_REFUSED_BURST 20
/* More refused calls than this in one second is no library probing a feature: the proxy is
 * looping on calls it can never make (and making the supervisor answer each). It is stopped
 * as for a call outside its filter (fail closed). */
#define SUP_REFUSED_FLOOD 1000
static struct {
	uint64_t window_ns, in_window, suppressed, all_in_window;
	uint64_t window_len; /* NS_PER_S (0 until the first call); test builds may stretch it */
} R;

static void refused_event(const sandbox_violation *v, uint64_t count)
{
	audit_event ev;
	audit_event_begin(&ev, "privsep");
	audit_event_cstr(&ev, "process", "supervisor");
	audit_event_cstr(&ev, "action", "proxy_call_refused");
	audit_event_u64(&ev, "proxy_pid", (uint64_t)S.proxy);
	audit_event_cstr(&ev, "syscall", v ? v->syscall : "*");
	if (v) {
		audit_event_u64(&ev, "syscall_nr", (uint64_t)v->nr);
		audit_event_u64(&ev, "caller_pid", (uint64_t)v->pid);
		audit_event_cstr(&ev, "caller_thread", v->thread);
	}
	audit_event_u64(&ev, "count", count);
	if (audit_event_end(&ev) == CUSTOS_OK)
		cli_privsep_audit(&ev);
}

/* force: now, even before the window is over (the proxy drained: its writer ends soon). */
static void sup_refused_flush(bool force)
{
	if (R.suppressed && (force || tm_mono_ns() - R.window_ns >= R.window_len)) {
		log_warn("up: %llu more call(s) custos never allows refused in one second",
		         (unsigned long long)R.suppressed);
		refused_event(NULL, R.suppressed);
		R.suppressed = 0;
	}
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_REFUSED_WINDOW_S=N makes
 * the supervisor's "second" for refused calls last N seconds, so that a test can put 1000 or
 * 1001 calls in one window whatever the speed of the machine (tests/integration/
 * privsep_flood.sh). */
static uint64_t test_hook_refused_window(void)
{
	const char *v = getenv("CUSTOS_TEST_REFUSED_WINDOW_S");
	uint64_t n = 0;

	if (v == NULL)
		return NS_PER_S;
	if (num_parse_u64(span_cstr(v), 1, 86400, &n) != CUSTOS_OK) {
		log_error("up: test hook: CUSTOS_TEST_REFUSED_WINDOW_S=%s: %s", v, err_msg());
		return NS_PER_S;
	}
	log_warn("up: test hook: the window for refused calls lasts %llu s", (unsigned long long)n);
	return n * NS_PER_S;
}
#endif

static void sup_refused(const sandbox_violation *v, bool proxy)
{
	if (R.window_len == 0) {
		R.window_len = NS_PER_S;
#ifdef CUSTOS_TEST_HOOKS
		R.window_len = test_hook_refused_window();
#endif
	}
	sup_refused_flush(false);
	uint64_t now = tm_mono_ns();
	if (now - R.window_ns >= R.window_len) {
		R.window_ns = now;
		R.in_window = 0;
		R.all_in_window = 0;
	}
	if (++R.all_in_window > SUP_REFUSED_FLOOD) {
		if (R.all_in_window == SUP_REFUSED_FLOOD + 1) {
			log_error(
			        "up: the proxy made more than %d calls custos never allows in one "
			        "second (last: %s by pid %d): stopping it",
			        SUP_REFUSED_FLOOD, v->syscall, (int)v->pid);
			if (!S.viol_set) {
				S.viol = *v;
				S.viol_set = true;
			}
			kill(S.proxy, SIGKILL);
		}
		R.suppressed++;
		return;
	}
	if (R.in_window >= SUP_REFUSED_BURST) {
		R.suppressed++;
		return;
	}
	R.in_window++;
	log_warn("up: %s (pid %d, thread %s) called %s (%d), which custos never allows: refused "
	         "(EPERM)",
	         proxy ? "the proxy" : "a process of the proxy", (int)v->pid,
	         v->thread[0] ? v->thread : "?", v->syscall, v->nr);
	refused_event(v, 1);
}

/* A call outside the proxy's filter, held by the kernel: named, its process killed (and the
 * proxy with it when it was one of the proxy's children: fail closed); the proxy's end is
 * audited with it (audit_proxy_exit). */
static void sup_violation(void)
{
	static unsigned gone_in_a_row;
	sandbox_violation v;
	custos_err e = sandbox_self_violation(S.notify_fd, &v);

	/* A caller gone before it was read is normal once; a listener that keeps saying so while
	 * poll keeps waking us is broken. */
	if (e == CUSTOS_ERR_NOTFOUND && ++gone_in_a_row < 1000)
		return;
	gone_in_a_row = 0;
	if (e != CUSTOS_OK) { /* fail closed: nothing would end the proxy on a violation */
		log_error("up: the proxy's seccomp listener: %s; stopping the proxy", err_msg());
		close(S.notify_fd);
		S.notify_fd = -1;
		kill(S.proxy, SIGKILL);
		return;
	}
	bool proxy = v.pid == S.proxy;
	if (v.denied) {
		sup_refused(&v, proxy);
		return;
	}
	log_error("up: %s (pid %d, thread %s) called %s (%d) outside its seccomp filter: %s",
	          proxy ? "the proxy" : "a process of the proxy", (int)v.pid,
	          v.thread[0] ? v.thread : "?", v.syscall, v.nr,
	          v.killed ? "killed" : "refused (the kill failed)");
	if (!S.viol_set) {
		S.viol = v;
		S.viol_set = true;
	}
	if (!proxy)
		kill(S.proxy, SIGKILL);
}

static void audit_proxy_exit(int status, const char *why)
{
	audit_event ev;
	char detail[320];

	pthread_mutex_lock(&S.send_mu);
	char proto_why[sizeof(S.proto_why)];
	memcpy(proto_why, S.proto_why, sizeof(proto_why));
	pthread_mutex_unlock(&S.send_mu);
	if (proto_why[0])
		snprintf(detail, sizeof(detail), "%s: killed by the supervisor: %s", why,
		         proto_why);
	else if (S.viol_set && S.viol.denied)
		snprintf(detail, sizeof(detail),
		         "%s: killed by the supervisor: more than %d calls custos never allows in "
		         "one "
		         "second (last: %s by pid %d, thread %s)",
		         why, SUP_REFUSED_FLOOD, S.viol.syscall, (int)S.viol.pid,
		         S.viol.thread[0] ? S.viol.thread : "?");
	else if (S.viol_set)
		snprintf(detail, sizeof(detail),
		         "%s: killed by the supervisor: %s (pid %d, thread %s) "
		         "called %s outside its seccomp filter",
		         why, S.viol.pid == S.proxy ? "the proxy" : "a process of the proxy",
		         (int)S.viol.pid, S.viol.thread[0] ? S.viol.thread : "?", S.viol.syscall);
	else if (WIFSIGNALED(status))
		/* The filter's listener takes every native call outside it; the kernel itself
		 * kills only for a call of another ABI (ia32 through int 0x80, x32). */
		snprintf(detail, sizeof(detail), "%s: killed by signal %d%s", why, WTERMSIG(status),
		         WTERMSIG(status) == SIGSYS
		                 ? " (a system call of another ABI, which its seccomp filter kills)"
		                 : "");
	else
		snprintf(detail, sizeof(detail), "%s: exit status %d", why, WEXITSTATUS(status));
	log_error("up: the proxy (pid %d) ended: %s; stopping the sandboxes", (int)S.proxy, detail);
	audit_event_begin(&ev, "privsep");
	audit_event_cstr(&ev, "process", "supervisor");
	audit_event_cstr(&ev, "action", "proxy_lost");
	audit_event_u64(&ev, "proxy_pid", (uint64_t)S.proxy);
	audit_event_cstr(&ev, "detail", detail);
	if (S.viol_set) {
		audit_event_cstr(&ev, "syscall", S.viol.syscall);
		audit_event_u64(&ev, "syscall_nr", (uint64_t)S.viol.nr);
		audit_event_u64(&ev, "caller_pid", (uint64_t)S.viol.pid);
		audit_event_cstr(&ev, "caller_thread", S.viol.thread);
	}
	if (audit_event_end(&ev) == CUSTOS_OK)
		cli_privsep_audit(&ev);
}

/* The admin API's VM entry (cli_vm_admin_info), sent when it changed. */
static void sup_vm_info(struct sup_model *x)
{
	admin_vm v;
	psx_vm_info pi;

	cli_vm_admin_info(x->vm, &v);
	psx_vm_info_from(&v, &pi);
	if (x->vm_info_sent && memcmp(&pi, &x->vm_info, sizeof(pi)) == 0)
		return;
	x->vm_info = pi;
	x->vm_info_sent = true;
	psx_hdr h = { .type = PSX_VM_INFO, .model = (uint16_t)x->slot, .len = sizeof(pi) };
	sup_send(&h, &pi, NULL, 0);
}

static void sup_vm_poll(void)
{
	pthread_mutex_lock(&S.mu);
	for (size_t i = 0; i < S.n; i++) {
		struct sup_model *x = &S.m[i];
		if (x->vm == NULL)
			continue;
		sup_vm_info(x);
		bool r = cli_vm_routable(x->vm);
		if (r == x->vm_routable)
			continue;
		x->vm_routable = r;
		if (r)
			x->vm_generation++;
		sup_state(x, NULL);
	}
	pthread_mutex_unlock(&S.mu);
}

/* Runs until the proxy has ended; returns the exit code of `custos up`. */
static int supervisor_main(custos_config *cfg, const char *path, int sfd)
{
	bool drained = false, term = false, sock_open = true;
	uint64_t kill_at = 0;
	int status = 0;

	S.path = path;
	S.start = cfg;
	S.running = cfg;
	(void)sup_slots(); /* a test hook says so at start */
	custos_err e = start_sandboxes(cfg);
	if (e != CUSTOS_OK) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", err_msg());
		log_error("up: %s", msg);
		psx_hdr h = { .type = PSX_FAIL, .len = (uint32_t)strlen(msg) };
		sup_send(&h, msg, NULL, 0);
		stop_sandboxes();
	} else {
		psx_hdr h = { .type = PSX_READY };
		sup_send(&h, NULL, NULL, 0);
	}
	uint64_t grace =
	        cfg->limits.shutdown_timeout_ns ? cfg->limits.shutdown_timeout_ns : 10 * NS_PER_S;
	psx_msg *m = xcalloc(1, sizeof(*m));
	for (;;) {
		struct pollfd pf[3] = { { .fd = sfd, .events = POLLIN },
			                { .fd = sock_open ? S.sock : -1, .events = POLLIN },
			                { .fd = S.notify_fd, .events = POLLIN } };
		int r = poll(pf, 3, 500);
		if (r == -1 && errno != EINTR) {
			log_error("up: supervisor: poll: %s", strerror(errno));
			break;
		}
		sup_vm_poll();
		sup_refused_flush(false);
		if (r > 0 && S.notify_fd >= 0 && pf[2].revents) {
			if (pf[2].revents & POLLIN) {
				sup_violation();
			} else { /* POLLHUP: the proxy and its children are gone */
				close(S.notify_fd);
				S.notify_fd = -1;
			}
		}
		if (waitpid(S.proxy, &status, WNOHANG) == S.proxy)
			break; /* also when its SIGCHLD merged with another child's */
		if (kill_at && tm_mono_ns() >= kill_at) {
			log_error("up: the proxy did not stop in time: SIGKILL");
			kill(S.proxy, SIGKILL);
			kill_at = 0;
		}
		if (r > 0 && (pf[0].revents & POLLIN)) {
			struct signalfd_siginfo si;
			ssize_t n = read(sfd, &si, sizeof(si));
			if (n == (ssize_t)sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (sig == SIGTERM || sig == SIGINT) {
					if (!term)
						log_info("up: %s: stopping the proxy, then the "
						         "sandboxes",
						         sig == SIGTERM ? "SIGTERM" : "SIGINT");
					term = true;
					kill(S.proxy, SIGTERM);
					if (!kill_at)
						kill_at = tm_mono_ns() + grace + 20 * NS_PER_S;
				} else if (sig == SIGHUP) {
					kill(S.proxy, SIGHUP);
				} else if (sig == SIGUSR1) {
					if (log_reopen() != CUSTOS_OK)
						log_error("up: SIGUSR1: %s", err_msg());
					kill(S.proxy, SIGUSR1);
				} else if (sig == SIGCHLD) {
					pid_t w = waitpid(S.proxy, &status, WNOHANG);
					if (w == S.proxy)
						break;
				}
			}
		}
		if (r > 0 && sock_open && pf[1].revents) {
			int rr = psx_recv(S.sock, m);
			if (rr <= 0) {
				/* Every message is checked before anything is done for it: a bad
				 * one (or a failed read) ends the proxy, and with it the sandboxes
				 * (fail closed). EOF: the proxy is ending, SIGCHLD follows; one
				 * that shut its end and lives on is killed in a while. */
				sock_open = false;
				if (rr == -1)
					sup_proto_kill("a malformed message (%s)", strerror(errno));
				else if (!kill_at)
					kill_at = tm_mono_ns() + 10 * NS_PER_S;
				continue;
			}
			pthread_mutex_lock(&S.mu);
			const char *bad = psx_sup_check(m, S.n);
			pthread_mutex_unlock(&S.mu);
			if (bad == NULL && drained && m->h.type == PSX_DRAINED)
				bad = "DRAINED twice";
			if (bad) {
				sup_proto_kill("message type %u, slot %u: %s", m->h.type,
				               m->h.model, bad);
				psx_msg_close(m);
				sock_open = false;
				continue;
			}
			pthread_mutex_lock(&S.mu);
			struct sup_model *x = sup_model_of(&m->h);
			if (x && m->h.type == PSX_RESTART)
				sup_restart(x, (pid_t)m->h.arg);
			pthread_mutex_unlock(&S.mu);
			/* A slot below S.n stays: S.n only grows, and only this loop frees slots. */
			if (x && m->h.type == PSX_WANT)
				sup_want(x, m->h.arg);
			switch (m->h.type) {
			case PSX_WANT:
			case PSX_RESTART:
				break;
			case PSX_RELOAD:
				sup_reload_begin(m->h.gen, m);
				break;
			case PSX_COMMIT:
				if (!sup_reload_commit(m->h.gen, m->h.arg == 1)) {
					sup_proto_kill("COMMIT of reload %u without its RELOADED "
					               "answer",
					               m->h.gen);
					sock_open = false;
				}
				break;
			case PSX_IDLE:
				sup_idle(m->h.model);
				break;
			case PSX_FREED:
				sup_freed(m->h.model);
				break;
			case PSX_SECCOMP:
				sup_take_listener(m);
				break;
			case PSX_PROXY_UP:
				log_info("up: the proxy (pid %d) is confined and serving",
				         (int)S.proxy);
				break;
			case PSX_DRAINED: {
				/* Its requests are done: the sandboxes' stop events still reach
				 * its audit writer, then it may go. */
				log_info("up: the proxy drained; stopping the sandboxes");
				sup_refused_flush(true); /* its writer ends with it */
				sup_reload_end();
				stop_sandboxes();
				drained = true;
				psx_hdr h = { .type = PSX_BYE };
				sup_send(&h, NULL, NULL, 0);
				if (!kill_at)
					kill_at = tm_mono_ns() + 30 * NS_PER_S;
				break;
			}
			default: /* psx_sup_check let no other type through */
				break;
			}
			psx_msg_close(m);
		}
	}
	free(m);
	if (S.notify_fd >= 0) {
		close(S.notify_fd);
		S.notify_fd = -1;
	}
	sup_reload_end();
	pthread_mutex_lock(&S.send_mu);
	S.proxy_gone = true;
	pthread_mutex_unlock(&S.send_mu);
	bool clean = e == CUSTOS_OK && drained && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (e == CUSTOS_OK && !clean) {
		/* Fail closed: nothing may run without its proxy. The proxy's writer has ended
		 * with it; this one continues the chain. It ships nothing: a shipper here would
		 * be an unconfined root process talking to the network, which privilege
		 * separation keeps out of the supervisor. The events are durable, and the next
		 * `custos up` (systemd restarts it) delivers them from each sink's cursor. */
		audit_writer *aw = NULL;
		if (audit_from_config(cfg, NULL, false, cfg->proxy.self_sandbox, &aw) != CUSTOS_OK)
			log_error("up: supervisor audit writer: %s", err_msg());
		pthread_mutex_lock(&S.aw_mu);
		S.aw = aw;
		pthread_mutex_unlock(&S.aw_mu);
		sup_refused_flush(true);
		audit_proxy_exit(status, drained ? "after draining" : "unexpectedly");
		stop_sandboxes();
		pthread_mutex_lock(&S.aw_mu);
		S.aw = NULL;
		pthread_mutex_unlock(&S.aw_mu);
		if (aw && audit_writer_stop(aw, 5 * NS_PER_S) != CUSTOS_OK)
			log_error("up: supervisor audit writer stop: %s", err_msg());
	}
	free_models();
	if (S.running != S.start)
		config_free(S.running);
	S.running = NULL;
	return clean ? CLI_OK : CLI_FAIL;
}

/* =============================================================================================
 * The proxy: the internet-facing half.
 */

/* Adds the directory holding path (or path itself when it is a directory) to a list. Files
 * are allowed through their directory: a certificate or policy replaced by rename (as editors
 * and configuration management do) is a new inode that a rule on the old file would miss. */
static void view_add_one(const char **list, size_t *n, size_t max, char (*store)[CFG_MAX_PATH_LEN],
                         const char *path, bool is_dir);
static const char *abs_path(const char *path, char *abs, size_t size);

/* The path as written (a relative one against the working directory, as custos opens it)
 * and, when a symlink leads elsewhere (/etc/resolv.conf into /run/systemd/resolve, a
 * certificate linked from a secrets mount), where it leads: Landlock checks the file that is
 * finally opened. */
static void view_add(const char **list, size_t *n, size_t max, char (*store)[CFG_MAX_PATH_LEN],
                     const char *path, bool is_dir)
{
	char real[PATH_MAX], abs[CFG_MAX_PATH_LEN];

	if (path != NULL)
		path = abs_path(path, abs, sizeof(abs));
	view_add_one(list, n, max, store, path, is_dir);
	if (path != NULL && realpath(path, real) != NULL && strcmp(real, path) != 0 &&
	    strlen(real) < CFG_MAX_PATH_LEN)
		view_add_one(list, n, max, store, real, is_dir);
}

static void view_add_one(const char **list, size_t *n, size_t max, char (*store)[CFG_MAX_PATH_LEN],
                         const char *path, bool is_dir)
{
	if (path == NULL || path[0] != '/')
		return;
	if (*n >= max) {
		log_warn("up: the proxy's view is full: %s is left out (a reload cannot read it)",
		         path);
		return;
	}
	char *d = store[*n];
	snprintf(d, CFG_MAX_PATH_LEN, "%s", path);
	if (!is_dir) {
		char *slash = strrchr(d, '/');
		if (slash == d)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
	}
	for (size_t i = 0; i < *n; i++)
		if (strcmp(list[i], d) == 0)
			return;
	list[(*n)++] = d;
}

/* The trust store OpenSSL is pointed to through custos' environment (SSL_CERT_FILE, a file;
 * SSL_CERT_DIR, directories separated by ':'), as OpenSSL reads it: checked once at start
 * (cli_trust_env_check) and then added as it is (a file as a file, a directory as a directory,
 * with where a link leads) to the views that verify peers: the proxy's (upstreams, egress
 * sources, a reload's new contexts; a hashed directory is read at each handshake) and the
 * shipper's (its TLS sinks). */
static void view_add_trust_env(const char **list, size_t *n, size_t max,
                               char (*store)[CFG_MAX_PATH_LEN])
{
	const char *f = getenv("SSL_CERT_FILE"), *d = getenv("SSL_CERT_DIR");
	char one[CFG_MAX_PATH_LEN];

	if (f != NULL && f[0] != '\0') {
		view_add_one(list, n, max, store, f, true); /* true: the path as it is */
		if (realpath(f, one) != NULL && strcmp(one, f) != 0)
			view_add_one(list, n, max, store, one, true);
	}
	for (const char *p = d; p != NULL && *p != '\0';) {
		const char *c = strchr(p, ':');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l > 0 && l < sizeof(one)) {
			memcpy(one, p, l);
			one[l] = '\0';
			view_add(list, n, max, store, one, true);
		}
		p = c ? c + 1 : NULL;
	}
}

#define VIEW_MAX 64 /* SANDBOX_MAX_BINDS */
struct proxy_view {
	const char *ro[VIEW_MAX], *rw[VIEW_MAX];
	size_t nro, nrw;
	char ro_store[VIEW_MAX][CFG_MAX_PATH_LEN];
	char rw_store[VIEW_MAX][CFG_MAX_PATH_LEN];
};

/* System paths a TLS client and a resolver read: the trust store, the resolver's files and
 * the libraries glibc may load for a lookup (NSS modules). */
static const char *const view_sys_ro[] = { "/usr",          "/etc/ssl",          "/etc/resolv.conf",
	                                   "/etc/hosts",    "/etc/gai.conf",     "/etc/host.conf",
	                                   "/etc/services", "/etc/nsswitch.conf" };

/* Each file or directory the configuration names that the proxy opens once confined (rw:
 * writes it), with the setting that names it: what its Landlock view is made of at start, and
 * what a reload's configuration is checked against (view_check). */
typedef void (*cfg_file_fn)(void *arg, const char *setting, const char *path, bool is_dir, bool rw);

static void config_files(const custos_config *cfg, const char *path, cfg_file_fn fn, void *arg)
{
	char s[CFG_MAX_PATH_LEN];
#define F(p, d, w, ...)                                                                            \
	do {                                                                                       \
		if ((p) != NULL) {                                                                 \
			snprintf(s, sizeof(s), __VA_ARGS__);                                       \
			fn(arg, s, (p), (d), (w));                                                 \
		}                                                                                  \
	} while (0)
	F(path, false, false, "the configuration file");
	F(cfg->policy.file, false, false, "policy.file");
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const cfg_listener *l = &cfg->listeners[i];
		for (size_t k = 0; l->tls.enabled && k < l->tls.n_certs; k++) {
			const cfg_cert_pair *c = &l->tls.certs[k];
			char n[24] = ""; /* which certificate of several */
			if (l->tls.n_certs > 1)
				snprintf(n, sizeof(n), " (certificate %zu)", k + 1);
			F(c->cert, false, false, "listeners[%zu] (%s).tls cert%s", i, l->id, n);
			F(c->key, false, false, "listeners[%zu] (%s).tls key%s", i, l->id, n);
			F(c->ocsp, false, false, "listeners[%zu] (%s).tls ocsp%s", i, l->id, n);
		}
		if (l->tls.enabled) {
			F(l->tls.client_ca, false, false, "listeners[%zu] (%s).tls.client_ca", i,
			  l->id);
			F(l->tls.client_crl, false, false, "listeners[%zu] (%s).tls.client_crl", i,
			  l->id);
		}
		if (l->addr.kind == CFG_ADDR_UNIX)
			F(l->addr.path, false, true, "listeners[%zu] (%s).address", i, l->id);
	}
	if (cfg->admin.enabled && cfg->admin.tls.enabled) { /* read once the proxy is confined */
		const cfg_cert_pair *c = &cfg->admin.tls.certs[0];
		F(c->cert, false, false, "admin.tls.cert");
		F(c->key, false, false, "admin.tls.key");
		F(c->ocsp, false, false, "admin.tls.ocsp");
		F(cfg->admin.tls.client_ca, false, false, "admin.tls.client_ca");
		F(cfg->admin.tls.client_crl, false, false, "admin.tls.client_crl");
	}
	F(cfg->auth.api_keys_file, false, false, "auth.api_keys_file");
	if (cfg->auth.jwt.enabled)
		F(cfg->auth.jwt.jwks_file, false, false, "auth.jwt.jwks_file");
	for (size_t i = 0; i < cfg->n_models; i++) { /* CA, CRL, client certificate: reloads */
		const cfg_model *m = &cfg->models[i];
		F(m->upstream.ca_file, false, false, "models[%zu] (%s).upstream.ca_file", i, m->id);
		F(m->upstream.crl_file, false, false, "models[%zu] (%s).upstream.crl_file", i,
		  m->id);
		F(m->upstream.cert, false, false, "models[%zu] (%s).upstream.cert", i, m->id);
		F(m->upstream.key, false, false, "models[%zu] (%s).upstream.key", i, m->id);
	}
	for (size_t i = 0; i < cfg->n_data_sources; i++) {
		const cfg_data_source *d = &cfg->data_sources[i];
		F(d->ca_file, false, false, "data_sources[%zu] (%s).ca_file", i, d->id);
		F(d->cert, false, false, "data_sources[%zu] (%s).cert", i, d->id);
		F(d->key, false, false, "data_sources[%zu] (%s).key", i, d->id);
		F(d->crl_file, false, false, "data_sources[%zu] (%s).crl_file", i, d->id);
	}
	if (cfg->egress.enabled)
		F(cfg->egress.ca_dir, true, false, "egress.ca_dir");
	F(cfg->audit.signing_key, false, false, "audit.signing_key");
	F(cfg->audit.public_key, false, false, "audit.public_key");
	for (size_t i = 0; i < cfg->audit.n_sinks; i++) { /* the shipper is the proxy's child */
		const cfg_sink *k = &cfg->audit.sinks[i];
		F(k->tls.ca, false, false, "audit.sinks[%zu] (%s).tls.ca", i, k->id);
		F(k->tls.crl, false, false, "audit.sinks[%zu] (%s).tls.crl", i, k->id);
		F(k->tls.cert, false, false, "audit.sinks[%zu] (%s).tls.cert", i, k->id);
		F(k->tls.key, false, false, "audit.sinks[%zu] (%s).tls.key", i, k->id);
		F(k->http.token_file, false, false, "audit.sinks[%zu] (%s).http.token_file", i,
		  k->id);
	}
	F(cfg->audit.dir, true, true, "audit.dir");
	F(cfg->log.file, false, true, "log.file");
	if (cfg->admin.enabled)
		F(cfg->admin.socket, false, true, "admin.socket");
#undef F
}

static void view_file(void *arg, const char *setting, const char *path, bool is_dir, bool rw)
{
	struct proxy_view *v = arg;
	(void)setting;
	if (rw)
		view_add(v->rw, &v->nrw, VIEW_MAX, v->rw_store, path, is_dir);
	else
		view_add(v->ro, &v->nro, VIEW_MAX, v->ro_store, path, is_dir);
}

/* PATH made absolute against the working directory, in ABS when it was relative. */
static const char *abs_path(const char *path, char *abs, size_t size)
{
	if (path[0] != '/' && strlen(path) + 2 < size &&
	    getcwd(abs, size - 1 - strlen(path)) != NULL) {
		size_t l = strlen(abs);
		snprintf(abs + l, size - l, "/%s", path);
		return abs;
	}
	return path;
}

/* What the confined proxy may still open: read what a reload reads (custos.yaml, the policy
 * and its directory, certificates, keys, CA bundles, JWKS, API key file, the system trust
 * store and resolver files); write its audit directory, log file and sockets' directories. */
static void proxy_view(const custos_config *cfg, const char *path, struct proxy_view *v)
{
	char abs[CFG_MAX_PATH_LEN];

	memset(v, 0, sizeof(*v));
	path = abs_path(path, abs, sizeof(abs));
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(view_sys_ro); i++)
		if (access(view_sys_ro[i], F_OK) == 0)
			view_add(v->ro, &v->nro, VIEW_MAX, v->ro_store, view_sys_ro[i], true);
	view_add_trust_env(v->ro, &v->nro, VIEW_MAX, v->ro_store);
	if (access("/sys/devices/system/cpu", F_OK) == 0)
		view_add(v->ro, &v->nro, VIEW_MAX, v->ro_store, "/sys/devices/system/cpu", true);
	config_files(cfg, path, view_file, v);
}

/* Whether Landlock lets the proxy open PATH (no symlink resolved): a rule on a directory
 * covers everything beneath it; a rule on a file (the trust store named by SSL_CERT_FILE,
 * added as it is) only that file. */
static bool view_covers(const struct proxy_view *v, const char *path)
{
	const char *const *lists[2] = { v->ro, v->rw };
	size_t ns[2] = { v->nro, v->nrw };
	for (size_t k = 0; k < 2; k++)
		for (size_t i = 0; i < ns[k]; i++) {
			const char *d = lists[k][i];
			size_t l = strlen(d);
			if (strncmp(path, d, l) == 0 &&
			    (path[l] == '\0' || path[l] == '/' || (l > 0 && d[l - 1] == '/')))
				return true;
		}
	return false;
}

struct view_check_ctx {
	const struct proxy_view *v;
	custos_err e;
};

static void view_check_file(void *arg, const char *setting, const char *path, bool is_dir, bool rw)
{
	struct view_check_ctx *x = arg;
	char real[PATH_MAX], abs[CFG_MAX_PATH_LEN];
	(void)is_dir;
	if (x->e != CUSTOS_OK || rw)
		return; /* what the proxy writes cannot change by reload (config_reload_check) */
	path = abs_path(path, abs, sizeof(abs)); /* relative: as the proxy opens it */
	if (!view_covers(x->v, path))
		x->e = err_set(
		        CUSTOS_ERR_DENIED,
		        "%s: %s is outside the proxy's Landlock view, which is fixed at start "
		        "(the directories of the files custos started with): put the file in "
		        "one of those directories, or restart custos",
		        setting, path);
	else if (realpath(path, real) != NULL && !view_covers(x->v, real))
		x->e = err_set(
		        CUSTOS_ERR_DENIED,
		        "%s: %s leads to %s, outside the proxy's Landlock view, which is fixed "
		        "at start (the directories of the files custos started with): restart "
		        "custos to read it",
		        setting, path, real);
}

/* A reload's configuration may name a file the confined proxy cannot open: Landlock only ever
 * narrows, so the view made at start stays. Such a reload is refused here, naming the setting
 * and the path, rather than with the bare EACCES of the first open that fails. */
static custos_err view_check(const struct proxy_view *v, const custos_config *cfg, const char *path)
{
	if (v == NULL)
		return CUSTOS_OK; /* not confined, or no Landlock: nothing to check against */
#ifdef CUSTOS_TEST_HOOKS
	/* Test builds only: CUSTOS_TEST_NO_VIEW_CHECK=1 lets such a reload reach the open, which
	 * Landlock refuses (tests/integration/privsep_up.sh shows the kernel enforces the view). */
	const char *t = getenv("CUSTOS_TEST_NO_VIEW_CHECK");
	if (t != NULL && strcmp(t, "1") == 0) {
		log_info("up: test hook: reload not checked against the Landlock view");
		return CUSTOS_OK;
	}
#endif
	struct view_check_ctx x = { v, CUSTOS_OK };
	char abs[CFG_MAX_PATH_LEN];
	config_files(cfg, abs_path(path, abs, sizeof(abs)), view_check_file, &x);
	return x.e;
}

/* The narrower views of the audit processes (docs/SANDBOX.md, "Privilege separation"). The
 * writer touches only its log directory once it serves. The shipper reads the log and writes
 * only its cursor files, in DIR/ship (which the writer made before the shipper started: a
 * shipper cannot create, rename, remove or truncate a file of the trail), and reads what a
 * TLS connection and a name lookup may still read
 * after its start (the system trust store, the resolver's files, libraries under /usr), and
 * the directories of its TLS sinks' CA, CRL, client certificate and key files, which a reload
 * reads again (directories, as in the proxy's view: a file replaced by a rename is a new inode
 * that a rule on the old one would not cover); its token was loaded before it narrows. Neither
 * reads custos.yaml or the policy; what else sits beside the sinks' TLS files is readable by
 * the shipper (docs/AUDIT.md: keep them in a directory of their own). */
struct child_views {
	struct proxy_view writer, shipper;
};

/* The files custos.yaml names that the shipper has no business reading: the configuration,
 * the policy, every private key but its sinks' own, the API key file, the egress CA. */
static bool shipper_secret(const char *setting)
{
	static const char *const whole[] = { "the configuration file", "policy.file",
		                             "auth.api_keys_file",     "egress.ca_dir",
		                             "audit.signing_key",      "admin.tls.key" };
	size_t n = strlen(setting);
	if (strncmp(setting, "audit.sinks", 11) == 0)
		return false; /* its own */
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(whole); i++)
		if (strcmp(setting, whole[i]) == 0)
			return true;
	/* listeners[0] (tls).tls key [(certificate 2)], models[0] (m).upstream.key,
	 * data_sources[0] (d).key */
	return strstr(setting, ".tls key") != NULL ||
	       (n >= 4 && strcmp(setting + n - 4, ".key") == 0);
}

/* Warns about each such file the shipper's view holds (a directory of its sinks' TLS files,
 * or one it reads for the system trust store): Landlock would let it read the file. */
static void shipper_view_warn(void *arg, const char *setting, const char *path, bool is_dir,
                              bool rw)
{
	const struct proxy_view *h = arg;
	char abs[CFG_MAX_PATH_LEN], real[PATH_MAX];

	if (rw || !shipper_secret(setting))
		return;
	path = abs_path(path, abs, sizeof(abs));
	bool held = view_covers(h, path) || (realpath(path, real) != NULL && view_covers(h, real));
	if (held)
		log_warn(
		        "up: the audit shipper can read %s %s%s: its Landlock view holds that "
		        "directory for an audit sink's TLS files (read again on reload) or for the "
		        "system trust store; give the sinks' TLS files a directory of their own",
		        setting, path, is_dir ? " (a directory)" : "");
}

static struct child_views *child_views_new(const custos_config *cfg, const char *cfg_path,
                                           bool with_sinks)
{
	struct child_views *c = xcalloc(1, sizeof(*c));
	struct proxy_view *w = &c->writer, *h = &c->shipper;

	view_add(w->rw, &w->nrw, VIEW_MAX, w->rw_store, cfg->audit.dir, true);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(view_sys_ro); i++)
		if (access(view_sys_ro[i], F_OK) == 0)
			view_add(h->ro, &h->nro, VIEW_MAX, h->ro_store, view_sys_ro[i], true);
	view_add_trust_env(h->ro, &h->nro, VIEW_MAX, h->ro_store);
	view_add(h->ro, &h->nro, VIEW_MAX, h->ro_store, cfg->audit.dir, true);
	for (size_t i = 0; with_sinks && i < cfg->audit.n_sinks; i++) { /* read again on reload */
		const cfg_sink *k = &cfg->audit.sinks[i];
		view_add(h->ro, &h->nro, VIEW_MAX, h->ro_store, k->tls.ca, false);
		view_add(h->ro, &h->nro, VIEW_MAX, h->ro_store, k->tls.crl, false);
		view_add(h->ro, &h->nro, VIEW_MAX, h->ro_store, k->tls.cert, false);
		view_add(h->ro, &h->nro, VIEW_MAX, h->ro_store, k->tls.key, false);
	}
	if (with_sinks)
		config_files(cfg, cfg_path, shipper_view_warn, h);
	char ship[CFG_MAX_PATH_LEN];
	if ((size_t)snprintf(ship, sizeof(ship), "%s/ship", cfg->audit.dir) < sizeof(ship))
		view_add(h->rw, &h->nrw, VIEW_MAX, h->rw_store, ship, true);
	return c;
}

static custos_err confine_view(const struct proxy_view *v, const char *who)
{
	custos_err e = sandbox_landlock_narrow(v->ro, v->nro, v->rw, v->nrw, false);
	return e == CUSTOS_OK ? CUSTOS_OK : err_wrap(e, "%s", who);
}

static custos_err confine_writer(void *arg, int log_dir_fd)
{
	(void)log_dir_fd;
	return confine_view(&((const struct child_views *)arg)->writer, "audit writer");
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_SHIPPER_PROBE=DIR makes
 * the confined shipper try what it must not do to the trail in DIR (create probe.created,
 * truncate probe.victim, rename it) and what it must (replace DIR/ship/probe by
 * rename), logging each outcome (tests/integration/audit_ship_confine.sh). */
static void test_hook_shipper_probe(void)
{
	const char *dir = getenv("CUSTOS_TEST_SHIPPER_PROBE");
	char a[CFG_MAX_PATH_LEN], b[CFG_MAX_PATH_LEN];
	int fd;

	if (dir == NULL || strlen(dir) > CFG_MAX_PATH_LEN - 32)
		return;
	snprintf(a, sizeof(a), "%s/probe.created", dir);
	fd = open(a, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	log_warn("audit shipper: test hook: create %s: %s", a, fd == -1 ? strerror(errno) : "done");
	if (fd != -1)
		close(fd);
	snprintf(a, sizeof(a), "%s/probe.victim", dir);
	snprintf(b, sizeof(b), "%s/probe.renamed", dir);
	fd = open(a, O_WRONLY | O_TRUNC | O_CLOEXEC);
	log_warn("audit shipper: test hook: truncate %s: %s", a,
	         fd == -1 ? strerror(errno) : "done");
	if (fd != -1)
		close(fd);
	log_warn("audit shipper: test hook: rename %s: %s", a,
	         rename(a, b) == -1 ? strerror(errno) : "done");
	snprintf(a, sizeof(a), "%s/ship/probe.tmp", dir);
	snprintf(b, sizeof(b), "%s/ship/probe", dir);
	fd = open(a, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd != -1)
		close(fd);
	log_warn("audit shipper: test hook: replace %s: %s", b,
	         fd == -1 || rename(a, b) == -1 ? strerror(errno) : "done");
}
#endif

static custos_err confine_shipper(void *arg, int log_dir_fd)
{
	(void)log_dir_fd;
	custos_err e = confine_view(&((const struct child_views *)arg)->shipper, "audit shipper");
#ifdef CUSTOS_TEST_HOOKS
	if (e == CUSTOS_OK)
		test_hook_shipper_probe();
#endif
	return e;
}

/* The user the proxy runs as: proxy.user (the packaged custos.yaml says `custos`), else
 * unchanged: uid 0 without any capability when custos runs as root (docs/SANDBOX.md). Not
 * "custos when it exists": what the proxy may read would then depend on whether a package
 * happens to be installed on the host. */
static custos_err proxy_identity(const custos_config *cfg, bool *set, uid_t *uid, gid_t *gid)
{
	*set = false;
	if (cfg->proxy.user == NULL) {
		if (geteuid() == 0)
			log_warn("up: proxy.user is not set: the proxy keeps uid 0 (without any "
			         "capability); set proxy.user: custos");
		return CUSTOS_OK;
	}
	errno = 0;
	struct passwd *pw = getpwnam(cfg->proxy.user);
	ENSURE(pw != NULL, CUSTOS_ERR_NOTFOUND, "proxy.user: no user named %s", cfg->proxy.user);
	if (geteuid() != 0) {
		ENSURE(pw->pw_uid == geteuid(), CUSTOS_ERR_DENIED,
		       "proxy.user %s: custos does not run as root and cannot change user",
		       cfg->proxy.user);
		return CUSTOS_OK;
	}
	*set = true;
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return CUSTOS_OK;
}

/* LeakSanitizer stops the world with ptrace, which the proxy's filter refuses: in sanitizer
 * builds the leak check runs once, here, before the filter (docs/SANDBOX.md). */
extern void __lsan_do_leak_check(void) __attribute__((weak));

static custos_err proxy_confine(const custos_config *cfg, const char *path, bool set_ids, uid_t uid,
                                gid_t gid, struct proxy_view **keep)
{
	if (!cfg->proxy.self_sandbox) {
		log_warn("up: proxy.self_sandbox is false: the proxy keeps custos' privileges "
		         "(debugging only)");
		return CUSTOS_OK;
	}
	/* Libraries bound on first use (dl/) are bound now, while Landlock still lets the loader
	 * read them: the admin API starts after confinement, and a reload may be the first policy
	 * with content detectors. */
	GUARD(lazylib_openssl()); /* bound long before on every real path: TLS, audit hashing */
	if (cfg->admin.enabled)
		GUARD(lazylib_microhttpd());
	GUARD(lazylib_hyperscan());
	struct proxy_view *v = xcalloc(1, sizeof(*v));
	sandbox_self_opts so;
	memset(&so, 0, sizeof(so));
	proxy_view(cfg, path, v);
	so.read_paths = v->ro;
	so.n_read_paths = v->nro;
	so.write_paths = v->rw;
	so.n_write_paths = v->nrw;
	so.set_ids = set_ids;
	so.uid = uid;
	so.gid = gid;
	/* A call outside the filter is held and reported to the supervisor, which names it in
	 * the trail and kills the proxy: the listener goes there, and no copy stays here (a
	 * proxy holding its own listener could answer its own calls). */
	int nfd = -1;
	so.notify_fd = &nfd;
	int abi = sandbox_landlock_abi(); /* asked now: the filter refuses it afterwards */
	if (__lsan_do_leak_check)
		__lsan_do_leak_check();
	custos_err e = sandbox_self_restrict(&so);
	if (e == CUSTOS_OK && abi > 0) /* the view is in force: reloads are checked against it */
		*keep = v;
	else
		free(v);
	if (e == CUSTOS_OK && nfd >= 0)
		e = psx_proxy_send_fd(PSX_SECCOMP, nfd);
	if (nfd >= 0)
		close(nfd);
	GUARD(e);
	log_info("up: proxy confined: uid %u, no capabilities, NO_NEW_PRIVS, landlock abi %d, "
	         "seccomp allow-list (calls outside it reported to the supervisor)",
	         (unsigned)getuid(), abi);
	return CUSTOS_OK;
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (CMake CUSTOS_TEST_HOOKS: Debug builds; a release build has none of this,
 * docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_PROXY_REFUSED_CALLS=N makes the confined
 * proxy call ptrace (always denied) N times in a row before it serves, each one held by its
 * filter and refused by the supervisor, so that tests can drive the supervisor's refusal
 * budget and flood limit (tests/integration/privsep_flood.sh). */
static void test_hook_refused_calls(void)
{
	const char *v = getenv("CUSTOS_TEST_PROXY_REFUSED_CALLS");
	uint64_t n = 0, refused = 0;

	if (v == NULL)
		return;
	if (num_parse_u64(span_cstr(v), 1, 10000000, &n) != CUSTOS_OK) {
		log_error("up: test hook: CUSTOS_TEST_PROXY_REFUSED_CALLS=%s: %s", v, err_msg());
		return;
	}
	log_warn("up: test hook: the proxy calls ptrace %llu time(s)", (unsigned long long)n);
	for (uint64_t i = 0; i < n; i++) /* pid 0: nothing to read, were it ever run */
		if (syscall(SYS_ptrace, PTRACE_PEEKDATA, 0, NULL, NULL) == -1 && errno == EPERM)
			refused++;
	log_warn("up: test hook: %llu of %llu ptrace call(s) failed with EPERM",
	         (unsigned long long)refused, (unsigned long long)n);
}

/* CUSTOS_TEST_PROXY_EXECVE=proxy|child: the confined proxy's main thread (proxy), or a child
 * it forks under the same filter (child, named custos-test), calls execve before the proxy
 * serves: a call outside the filter, as a compromised proxy spawning a shell makes, which the
 * supervisor names and answers by killing the proxy (tests/integration/privsep_up.sh). */
static void test_hook_execve(void)
{
	const char *v = getenv("CUSTOS_TEST_PROXY_EXECVE");
	char *const argv[] = { (char *)"/bin/true", NULL };

	if (v == NULL)
		return;
	if (strcmp(v, "proxy") == 0) {
		log_warn("up: test hook: the proxy calls execve");
		execve(argv[0], argv, environ);
		log_error("up: test hook: execve returned: %s", strerror(errno));
	} else if (strcmp(v, "child") == 0) {
		log_warn("up: test hook: a child of the proxy calls execve");
		pid_t pid = fork();
		if (pid == 0) {
			proc_name_self("custos-test");
			execve(argv[0], argv, environ);
			_exit(127);
		}
		if (pid == -1)
			log_error("up: test hook: fork: %s", strerror(errno));
	} else {
		log_error("up: test hook: CUSTOS_TEST_PROXY_EXECVE=%s: want proxy or child", v);
	}
}
#endif

static int proxy_main(custos_config *cfg, const char *path, pid_t parent)
{
	int efds[PSX_MAX_MODELS];
	bool evm[PSX_MAX_MODELS];
	egress_server *eg = NULL;
	proxy_server *srv = NULL;
	admin_server *admin = NULL;
	audit_writer *aw = NULL;
	proxy_options o;
	custos_err e;

	/* The supervisor ending ends the proxy (set again after a uid change clears it). */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) == -1 || getppid() != parent) {
		log_error("up: proxy: the supervisor is gone");
		return CLI_FAIL;
	}
	for (size_t i = 0; i < PSX_MAX_MODELS; i++) {
		efds[i] = -1;
		evm[i] = i < cfg->n_models && cfg->models[i].sandbox.type == CFG_SANDBOX_VM;
	}
	struct up_ctx *uc = xcalloc(1, sizeof(*uc));
	pthread_mutex_init(&uc->reload_mu, NULL);
	uc->path = path;
	uc->start = cfg;
	uc->running = cfg;
	uc->audit_batch = cfg->audit.durability == CFG_DURABILITY_BATCH;
	memset(&o, 0, sizeof(o));
	psx_proxy_init(S.sock, cfg);
	e = psx_proxy_setup(efds, PSX_MAX_MODELS);
	if (e == CUSTOS_OK)
		e = map_config(cfg, &o);
	o.audit = NULL; /* set once the writer runs (after confinement) */
	o.audit_batch = uc->audit_batch;
	if (e == CUSTOS_OK)
		e = proxy_create(&o, &srv); /* listeners (maybe privileged ports), keys, policy */
	else
		proxy_options_free(&o);
	/* Binds that need privilege or a directory the proxy's user may not write happen
	 * before confinement: the admin socket, given to that user. */
	bool set_ids = false;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	int admin_fd = -1;
	if (e == CUSTOS_OK && cfg->proxy.self_sandbox)
		e = proxy_identity(cfg, &set_ids, &uid, &gid);
	if (e == CUSTOS_OK && cfg->admin.enabled && cfg->admin.socket &&
	    admin_open_unix(cfg->admin.socket, cfg->admin.socket_mode, set_ids ? uid : (uid_t)-1,
	                    gid, &admin_fd) != CUSTOS_OK)
		log_error("up: admin API socket: %s", err_msg());
	/* The audit directory must exist to be part of the proxy's view (its writer would
	 * create it, as the proxy's user, once confined). */
	if (e == CUSTOS_OK && cfg->audit.dir && mkdir(cfg->audit.dir, 0700) == 0 && set_ids &&
	    chown(cfg->audit.dir, uid, gid) == -1)
		e = err_sys("audit dir %s: chown", cfg->audit.dir);
	if (e == CUSTOS_OK)
		e = proxy_confine(cfg, path, set_ids, uid, gid, &uc->view);
	if (e == CUSTOS_OK &&
	    (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) == -1 || getppid() != parent))
		e = err_set(CUSTOS_ERR_CLOSED, "the supervisor is gone");
	if (e == CUSTOS_OK)
		e = audit_from_config(cfg, path, true, cfg->proxy.self_sandbox, &aw);
	if (e == CUSTOS_OK) {
		uc->audit = aw;
		proxy_set_audit(srv, aw, uc->audit_batch,
		                cfg->audit.on_write_error == CFG_ON_WRITE_ERROR_CONTINUE);
	}
	if (e == CUSTOS_OK && cfg->egress.enabled) {
		egress_options eo;
		e = cli_egress_options(cfg, aw, efds, evm, &eo);
		/* The ingress proxy's compiled policy, not a second read of policy.file. */
		eo.policy = proxy_policy_ref(srv);
		if (e == CUSTOS_OK)
			e = egress_create(&eo, &eg);
		else
			egress_options_free(&eo);
		if (e == CUSTOS_OK)
			e = egress_start(eg);
		if (e == CUSTOS_OK)
			cli_egress_attach(eg);
		/* cli_egress_options: listener i for model i; those without a sandbox are the
		 * proxy's to close when a reload removes the model. */
		for (size_t i = 0; e == CUSTOS_OK && i < cfg->n_models && i < PROXY_MAX_UPSTREAMS;
		     i++)
			if (plain_model(&cfg->models[i]))
				uc->eg_plain[uc->n_eg_plain++] = (struct up_plain_eg){
					.id = xstrdup(cfg->models[i].id), .index = i, .fd = -1
				};
	}
	for (size_t i = 0; i < PSX_MAX_MODELS; i++)
		if (efds[i] >= 0)
			close(efds[i]);
	if (e == CUSTOS_OK) {
		psx_proxy_attach(srv, eg, aw);
		uc->srv = srv;
		uc->eg = eg;
		admin = start_admin(cfg, uc, admin_fd);
		admin_fd = -1;                      /* the admin server's now */
		pthread_mutex_lock(&uc->reload_mu); /* its own reload may have begun already */
		uc->admin = admin;
		pthread_mutex_unlock(&uc->reload_mu);
		e = psx_proxy_start();
	}
	if (e == CUSTOS_OK) {
		for (size_t i = 0; i < PROXY_MAX_LISTENERS && proxy_bound_port(srv, i); i++)
			log_info("up: listener %zu on port %u", i + 1, proxy_bound_port(srv, i));
#ifdef CUSTOS_TEST_HOOKS
		test_hook_refused_calls();
		test_hook_execve();
#endif
		e = proxy_run(srv, reload_cb, uc);
	} else {
		log_error("up: proxy: %s", err_msg());
	}
	if (admin_fd >= 0)
		close(admin_fd);
	psx_proxy_stopping(); /* an admin API reload waiting for a sandbox gives up */
	admin_stop(admin);    /* its hooks use srv */
	uc->admin = NULL;     /* no reload runs any more */
	cli_egress_attach(NULL);
	egress_free(eg);    /* before the sandboxes its listeners live in */
	psx_proxy_finish(); /* the supervisor stops the sandboxes; their events come here */
	bool lost = psx_proxy_supervisor_lost();
	proxy_free(srv);
	if (uc->running != uc->start)
		config_free(uc->running);
	config_free(uc->next);
	eg_new_drop(uc);
	for (size_t i = 0; i < uc->n_eg_plain; i++)
		free(uc->eg_plain[i].id);
	pthread_mutex_destroy(&uc->reload_mu);
	free(uc->view);
	free(uc);
	custos_err ae = aw ? audit_writer_stop(aw, 5 * NS_PER_S) : CUSTOS_OK;
	if (ae != CUSTOS_OK)
		log_error("up: audit writer stop: %s", err_msg());
	if (e != CUSTOS_OK && e != CUSTOS_ERR_CLOSED)
		log_error("up: %s", err_msg());
	return e == CUSTOS_OK && ae == CUSTOS_OK && !lost ? CLI_OK : CLI_FAIL;
}

/* A usage error of `up`: a log line when the log is JSON (a daemon's stderr goes to a shipper). */
/* A usage error: what is wrong, then the usage line, as log lines when the log is JSON (the
 * default off a terminal: under systemd), where `up` writes everything else too. */
static int up_usage(const char *why)
{
	if (!log_is_json())
		return cli_usage_error(NULL, "up", "%s", why);
	log_error("up: %s", why);
	log_error("usage: custos up -c FILE");
	return CLI_USAGE;
}

/* Reads custos.yaml and sets the log up: the command line's level and format, else the file's
 * (its log: section alone when the rest has errors, so that those are reported in the format
 * it asks for), else the defaults; then every diagnostic is a log line. *cfg is NULL when the
 * file has errors (reported). */
static custos_err up_load(const char *path, custos_config **cfg)
{
	const cli_log_flags *lf = cli_log_flags_get();
	cfg_log fl = { .level = LOG_LVL_INFO, .format = LOG_FMT_AUTO };
	diag_list d;

	diag_init(&d);
	custos_err e = config_load(path, cfg, &d);
	if (*cfg != NULL)
		fl = (*cfg)->log;
	else if (config_load_log(path, &fl) != CUSTOS_OK)
		fl = (cfg_log){ .level = LOG_LVL_INFO, .format = LOG_FMT_AUTO };
	/* The command line wins over the file, as with every daemon: `custos --log-level debug
	 * up` debugs whatever log.level says. */
	log_setup(lf->level_set ? lf->level : fl.level, lf->format_set ? lf->format : fl.format);
	custos_err le = fl.file ? log_open_file(fl.file) : CUSTOS_OK;
	char why[512] = "";
	if (le != CUSTOS_OK)
		snprintf(why, sizeof(why), "%s", err_msg());
	diag_log(&d); /* in the log file when there is one: the lines after these go there too */
	diag_free(&d);
	if (e != CUSTOS_OK) {
		log_error("up: %s: configuration has errors", path);
		return e;
	}
	if (le != CUSTOS_OK) {
		log_error("up: %s", why);
		config_free(*cfg);
		*cfg = NULL;
		return le;
	}
	return CUSTOS_OK;
}

/* systemd names the process it expects WATCHDOG=1 from in WATCHDOG_PID: the main pid, the
 * supervisor. The proxy's loop is the one that pings (proxy_run; NotifyAccess=all lets a child
 * send), so the proxy takes the watchdog over. Without this, the proxy reads WATCHDOG_PID as
 * another process's (notify_watchdog_usec() is 0), nothing pings, and WatchdogSec= kills custos
 * once it has passed. Called in the proxy right after the fork (one thread). */
static void watchdog_hand_over(pid_t supervisor)
{
	const char *wp = getenv("WATCHDOG_PID");
	uint64_t p;
	char mine[24];

	if (wp == NULL || num_parse_u64(span_cstr(wp), 1, UINT64_MAX, &p) != CUSTOS_OK ||
	    p != (uint64_t)supervisor)
		return;
	snprintf(mine, sizeof(mine), "%ld", (long)getpid());
	if (setenv("WATCHDOG_PID", mine, 1) == -1)
		log_warn("up: WATCHDOG_PID: %s: the service manager's watchdog is not pinged",
		         strerror(errno));
}

int cmd_up(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, ":c:", opts, NULL)) != -1) {
		char why[256];
		if (ch != 'c') {
			cli_getopt_problem(ch, argv, why, sizeof(why));
			return up_usage(why);
		}
		if (path != NULL) /* two files: which one was meant is not for us to guess */
			return up_usage("-c given twice");
		path = optarg;
	}
	if (path == NULL)
		return up_usage("missing -c FILE");
	if (optind != argc) {
		char why[256];
		snprintf(why, sizeof(why), "unexpected argument '%s'", argv[optind]);
		return up_usage(why);
	}

	custos_config *cfg = NULL;
	if (up_load(path, &cfg) != CUSTOS_OK)
		return CLI_FAIL;
	if (cli_trust_env_check() != CUSTOS_OK) {
		log_error("up: %s", err_msg());
		config_free(cfg);
		return CLI_FAIL;
	}
	{
		const char *f = getenv("SSL_CERT_FILE"), *d = getenv("SSL_CERT_DIR");
		if (f != NULL || d != NULL)
			log_info("up: trust store from the environment (%s%s%s%s%s): read-only in "
			         "the proxy's and the audit shipper's Landlock views",
			         f ? "SSL_CERT_FILE=" : "", f ? f : "", f && d ? ", " : "",
			         d ? "SSL_CERT_DIR=" : "", d ? d : "");
	}

	/* Signals are read from a signalfd by the supervisor; blocked before any thread or
	 * child exists so that every one inherits the mask (the proxy's proxy_run waits for
	 * its own with sigtimedwait). */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1) {
		log_error("up: socketpair: %s", strerror(errno));
		config_free(cfg);
		return CLI_FAIL;
	}
	fflush(NULL);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == -1) {
		log_error("up: fork: %s", strerror(errno));
		close(sp[0]);
		close(sp[1]);
		config_free(cfg);
		return CLI_FAIL;
	}
	if (pid == 0) {
		close(sp[0]);
		S.sock = sp[1];
		sigset_t child = set;
		sigdelset(&child, SIGCHLD); /* its audit writer's end is reaped, not signalled */
		sigprocmask(SIG_SETMASK, &child, NULL);
		proc_name_self("custos-proxy");
		watchdog_hand_over(parent);
		int rc = proxy_main(cfg, path, parent);
		config_free(cfg);
		close(sp[1]);
		return rc;
	}
	close(sp[1]);
	S.sock = sp[0];
	S.proxy = pid;
#ifdef CUSTOS_TEST_HOOKS
	test_hook_send_timeout();
#endif
	struct timeval stv = { .tv_sec = sup_send_timeout_s };
	if (setsockopt(S.sock, SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof(stv)) == -1)
		log_warn("up: SO_SNDTIMEO: %s: a proxy that reads nothing blocks the supervisor",
		         strerror(errno));
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	int rc = CLI_FAIL;
	if (sfd == -1) {
		log_error("up: signalfd: %s", strerror(errno));
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
			;
	} else {
		log_info("up: supervisor pid %d, proxy pid %d", (int)parent, (int)pid);
		rc = supervisor_main(cfg, path, sfd);
		close(sfd);
	}
	close(sp[0]);
	S.sock = -1;
	config_free(cfg);
	/* The signals stay blocked: `up` is over and the process exits with rc. Unblocked, a
	 * SIGHUP or SIGUSR1 that came during the shutdown (pending: the supervisor's loop has
	 * ended) would kill it now with that signal, after a clean stop, instead of exit 0. */
	return rc;
}
