/*
 * custos up -c FILE: loads custos.yaml, maps it onto the proxy's and the audit writer's option
 * structs, starts the audit writer, the listeners and the workers, and runs in the foreground
 * (logs on stderr) until SIGTERM. SIGHUP re-reads the file (config, certificates, policy).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "custos/audit.h"
#include "custos/config.h"
#include "custos/proxy.h"

#define NS_PER_S 1000000000ull

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
	}
	o->ncerts = t->n_certs;
	o->client_ca = dup_or_null(t->client_ca);
	o->client_auth = t->client_auth == CFG_CLIENT_AUTH_REQUIRED   ? PROXY_CLIENT_CERT_REQUIRED
	                 : t->client_auth == CFG_CLIENT_AUTH_OPTIONAL ? PROXY_CLIENT_CERT_OPTIONAL
	                                                              : PROXY_CLIENT_CERT_NONE;
	o->tls13_only = t->min_version == CFG_TLS_1_3;
	o->ciphers = dup_or_null(t->ciphers);
	o->ciphersuites = dup_or_null(t->ciphersuites);
	o->ticket_rotate_ns = t->ticket_rotation_ns;
	return CUSTOS_OK;
}

static custos_err add_route(proxy_options *o, const char *model, const char *model_id, size_t up)
{
	ENSURE(o->nroutes < PROXY_MAX_ROUTES, CUSTOS_ERR_LIMIT, "more than %d model routes",
	       PROXY_MAX_ROUTES);
	proxy_route_opts *r = &o->routes[o->nroutes++];
	r->model = dup_or_null(model);
	r->model_id = dup_or_null(model_id);
	r->upstream = up;
	return CUSTOS_OK;
}

/* Maps cfg onto o (o owns copies of everything; the config can be freed afterwards). */
static custos_err map_config(const custos_config *cfg, proxy_options *o)
{
	memset(o, 0, sizeof(*o));
	o->workers = (unsigned)cfg->workers;
	ENSURE(cfg->n_listeners <= PROXY_MAX_LISTENERS, CUSTOS_ERR_LIMIT, "more than %d listeners",
	       PROXY_MAX_LISTENERS);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const cfg_listener *l = &cfg->listeners[i];
		proxy_listener_opts *pl = &o->listeners[o->nlisteners++];
		pl->address = addr_string(&l->addr);
		pl->force_plain = l->force_plain;
		pl->tls = l->tls.enabled;
		if (pl->tls)
			GUARD(err_wrap(map_tls(&l->tls, &pl->tls_opts), "listener %s", l->id));
	}
	if (cfg->auth.n_api_keys) {
		o->api_keys = xcalloc(cfg->auth.n_api_keys, sizeof(o->api_keys[0]));
		for (size_t i = 0; i < cfg->auth.n_api_keys; i++) {
			o->api_keys[i].principal = xstrdup(cfg->auth.api_keys[i].id);
			memcpy(o->api_keys[i].sha256, cfg->auth.api_keys[i].sha256, 32);
		}
		o->napi_keys = cfg->auth.n_api_keys;
	}
	if (cfg->auth.jwt.enabled) {
		o->jwt.jwks_file = xstrdup(cfg->auth.jwt.jwks_file);
		if (cfg->auth.jwt.n_issuers)
			o->jwt.issuer = xstrdup(cfg->auth.jwt.issuers[0]);
		if (cfg->auth.jwt.n_audiences)
			o->jwt.audience = xstrdup(cfg->auth.jwt.audiences[0]);
		o->jwt.leeway_s = cfg->auth.jwt.leeway_ns / NS_PER_S;
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
			break;
		case CFG_UPSTREAM_UNIX:
			snprintf(tmp, sizeof(tmp), "unix:%s", u->path);
			break;
		default:
			return err_set(
			        CUSTOS_ERR_UNSUPPORTED,
			        "model %s: sandboxed models are not wired into `custos up` yet "
			        "(give it an upstream url)",
			        m->id);
		}
		pu->name = xstrdup(m->id);
		pu->address = xstrdup(tmp);
		pu->connect_timeout_ns = u->connect_timeout_ns
		                                 ? u->connect_timeout_ns
		                                 : cfg->limits.upstream_connect_timeout_ns;
		pu->read_timeout_ns = u->read_timeout_ns ? u->read_timeout_ns
		                                         : cfg->limits.upstream_read_timeout_ns;
		pu->idle_timeout_ns = u->idle_timeout_ns ? u->idle_timeout_ns
		                                         : cfg->limits.upstream_idle_timeout_ns;
		pu->pool_max = (unsigned)u->pool_size;
		size_t ui = o->nupstreams++;
		GUARD(add_route(o, m->id, m->id, ui));
		for (size_t a = 0; a < m->n_aliases; a++)
			GUARD(add_route(o, m->aliases[a], m->id, ui));
	}
	/* Requests without a model (GET /v1/models) go to the first model server. */
	if (o->nupstreams)
		GUARD(add_route(o, "", NULL, 0));
	o->max_body = cfg->limits.body_max;
	o->header_timeout_ns = cfg->limits.client_header_timeout_ns;
	o->keepalive_timeout_ns = cfg->limits.client_idle_timeout_ns;
	o->shutdown_grace_ns = cfg->limits.shutdown_timeout_ns;
	o->max_connections = cfg->limits.max_connections;
	o->policy_file = dup_or_null(cfg->policy.file);
	return CUSTOS_OK;
}

struct up_ctx {
	const char *path;
	struct audit_writer *audit;
};

static custos_err load_options(const char *path, struct audit_writer *audit, proxy_options *o)
{
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	custos_err e = config_load(path, &cfg, &d);
	diag_print(&d, stderr);
	diag_free(&d);
	if (e != CUSTOS_OK)
		return err_set(e, "%s: configuration has errors", path);
	e = map_config(cfg, o);
	o->audit = audit;
	config_free(cfg);
	if (e != CUSTOS_OK)
		proxy_options_free(o);
	return e;
}

static custos_err reload_cb(void *arg, proxy_options *o)
{
	struct up_ctx *u = arg;
	log_info("up: SIGHUP: reloading %s", u->path);
	return load_options(u->path, u->audit, o);
}

static custos_err audit_from_config(const custos_config *cfg, audit_writer **out)
{
	audit_options ao;

	audit_options_default(&ao);
	ao.dir = cfg->audit.dir;
	ao.durability = cfg->audit.durability == CFG_DURABILITY_SYNC ? AUDIT_DURABILITY_SYNC
	                                                             : AUDIT_DURABILITY_BATCH;
	if (cfg->audit.batch_window_ns)
		ao.batch_window_ns = cfg->audit.batch_window_ns;
	if (cfg->audit.queue_size)
		ao.queue_events = cfg->audit.queue_size;
	ao.on_full =
	        cfg->audit.on_full == CFG_ON_FULL_DENY ? AUDIT_ON_FULL_DENY : AUDIT_ON_FULL_BLOCK;
	ao.rotate_bytes = cfg->audit.rotate_size;
	ao.rotate_ns = cfg->audit.rotate_interval_ns;
	if (cfg->audit.checkpoint_every_events)
		ao.checkpoint_events = cfg->audit.checkpoint_every_events;
	if (cfg->audit.checkpoint_every_interval_ns)
		ao.checkpoint_ns = cfg->audit.checkpoint_every_interval_ns;
	ao.signing_key = cfg->audit.signing_key;
	return audit_writer_start(&ao, out);
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
	while ((ch = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
		if (ch != 'c') {
			cli_usage(NULL, "up", false);
			return CLI_USAGE;
		}
		path = optarg;
	}
	if (path == NULL || optind != argc) {
		cli_usage(NULL, "up", false);
		return CLI_USAGE;
	}

	custos_config *cfg = NULL;
	diag_list d;
	diag_init(&d);
	custos_err e = config_load(path, &cfg, &d);
	diag_print(&d, stderr);
	diag_free(&d);
	if (e != CUSTOS_OK) {
		fprintf(stderr, "custos up: %s: configuration has errors\n", path);
		return CLI_FAIL;
	}
	log_setup(cfg->log.level, cfg->log.format);

	audit_writer *aw = NULL;
	if (audit_from_config(cfg, &aw) != CUSTOS_OK) {
		log_error("up: audit writer: %s", err_msg());
		config_free(cfg);
		return CLI_FAIL;
	}
	proxy_options o;
	e = map_config(cfg, &o);
	o.audit = aw;
	config_free(cfg);
	proxy_server *srv = NULL;
	if (e == CUSTOS_OK)
		e = proxy_create(&o, &srv);
	else
		proxy_options_free(&o);
	if (e != CUSTOS_OK) {
		log_error("up: %s", err_msg());
		if (audit_writer_stop(aw, NS_PER_S) != CUSTOS_OK)
			log_error("up: audit writer stop: %s", err_msg());
		return CLI_FAIL;
	}
	for (size_t i = 0; proxy_bound_port(srv, i) || i == 0; i++) {
		if (proxy_bound_port(srv, i))
			log_info("up: listener %zu on port %u", i + 1, proxy_bound_port(srv, i));
		if (i > PROXY_MAX_LISTENERS)
			break;
	}
	struct up_ctx uc = { path, aw };
	e = proxy_run(srv, reload_cb, &uc);
	proxy_free(srv);
	custos_err ae = audit_writer_stop(aw, 5 * NS_PER_S);
	if (ae != CUSTOS_OK)
		log_error("up: audit writer stop: %s", err_msg());
	if (e != CUSTOS_OK) {
		log_error("up: %s", err_msg());
		return CLI_FAIL;
	}
	return ae == CUSTOS_OK ? CLI_OK : CLI_FAIL;
}
