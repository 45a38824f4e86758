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
#include "custos/admin.h"
#include "custos/audit.h"
#include "custos/config.h"
#include "custos/egress.h"
#include "custos/policy.h"
#include "custos/proxy.h"
#include "custos/sandbox.h"

#define NS_PER_S  1000000000ull
#define NS_PER_MS 1000000ull

/* Sandboxed model servers started by `up`: they outlive reloads (a reload maps the new config
 * onto the running sandboxes; adding one needs a restart). */
struct up_sandbox {
	char *model;
	sandbox *sb;
	uint16_t port;
	sandbox_limits limits;
};
struct up_ctx {
	const char *path;
	struct audit_writer *audit;
	struct up_sandbox sbx[PROXY_MAX_UPSTREAMS];
	size_t nsbx;
	struct up_vm *vms[PROXY_MAX_UPSTREAMS]; /* sandbox.type: vm (cli/vm_up.c) */
	size_t nvms;
	egress_server *eg;
	bool audit_batch;
	proxy_server *srv; /* for the admin API's hooks */
};

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

static struct up_sandbox *find_sandbox(struct up_ctx *u, const char *model)
{
	for (size_t i = 0; i < u->nsbx; i++)
		if (strcmp(u->sbx[i].model, model) == 0)
			return &u->sbx[i];
	return NULL;
}

static struct up_vm *find_vm(struct up_ctx *u, const char *model)
{
	for (size_t i = 0; i < u->nvms; i++)
		if (strcmp(cli_vm_model(u->vms[i]), model) == 0)
			return u->vms[i];
	return NULL;
}

/* auth.api_keys_file: lines "id sha256hex"; blank lines and lines starting with # skipped.
 * The file holds digests, not keys, but is still refused when others may write it. */
static custos_err load_api_keys_file(const char *path, proxy_options *o)
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
		if (id.len == 0 || id.len > CFG_MAX_ID_LEN ||
		    num_parse_hex(hex, k->sha256, sizeof(k->sha256)) != CUSTOS_OK) {
			e = err_set(CUSTOS_ERR_PARSE, "%s:%u: bad id or SHA-256 (64 hex digits)",
			            path, lineno);
			break;
		}
		k->principal = span_dup(id);
		o->napi_keys++;
	}
	buf_free(&b);
	return e;
}

/* Maps cfg onto o (o owns copies of everything; the config can be freed afterwards).
 * Sandboxed models must already run (start_sandboxes). */
static custos_err map_config(const custos_config *cfg, struct up_ctx *uc, proxy_options *o)
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
			GUARD(load_api_keys_file(cfg->auth.api_keys_file, o));
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
		case CFG_UPSTREAM_SANDBOX: {
			struct up_vm *vmu = find_vm(uc, m->id);
			if (vmu) { /* streams over the VM's channel */
				pu->connect_fn = cli_vm_connect;
				pu->connect_arg = vmu;
				snprintf(tmp, sizeof(tmp), "vm:%s", m->id);
				break;
			}
			struct up_sandbox *sb = find_sandbox(uc, m->id);
			ENSURE(sb, CUSTOS_ERR_UNSUPPORTED,
			       "model %s: its sandbox is not running (a sandboxed model added by a "
			       "reload needs a restart)",
			       m->id);
			pu->sandbox = sb->sb;
			pu->sandbox_port = sb->port;
			snprintf(tmp, sizeof(tmp), "sandbox:%s:%u", m->id, sb->port);
			break;
		}
		default:
			return err_set(CUSTOS_ERR_UNSUPPORTED, "model %s: unknown upstream kind",
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
	/* Requests without a model (GET /v1/models) go to the first model server. */
	if (o->nupstreams)
		GUARD(add_route(o, NULL, "", NULL, 0));
	o->max_body = cfg->limits.body_max;
	o->header_timeout_ns = cfg->limits.client_header_timeout_ns;
	o->body_timeout_ns = cfg->limits.client_body_timeout_ns;
	o->keepalive_timeout_ns = cfg->limits.client_idle_timeout_ns;
	o->shutdown_grace_ns = cfg->limits.shutdown_timeout_ns;
	o->max_connections = cfg->limits.max_connections;
	o->policy_file = dup_or_null(cfg->policy.file);
	return CUSTOS_OK;
}

static custos_err load_options(struct up_ctx *uc, proxy_options *o)
{
	const char *path = uc->path;
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	custos_err e = config_load(path, &cfg, &d);
	diag_print(&d, stderr);
	diag_free(&d);
	if (e != CUSTOS_OK)
		return err_set(e, "%s: configuration has errors", path);
	e = map_config(cfg, uc, o);
	o->audit = uc->audit;
	o->audit_batch = uc->audit_batch;
	config_free(cfg);
	if (e != CUSTOS_OK)
		proxy_options_free(o);
	return e;
}

static custos_err reload_cb(void *arg, proxy_options *o)
{
	struct up_ctx *u = arg;
	log_info("up: SIGHUP: reloading %s", u->path);
	if (u->eg && egress_reload_policy(u->eg) != CUSTOS_OK)
		log_error("up: egress: %s", err_msg());
	return load_options(u, o);
}

/* Admin API hooks (admin.h): they run on the admin server's threads. */
static struct policy *admin_policy_get(void *arg)
{
	struct up_ctx *u = arg;
	return proxy_policy_ref(u->srv);
}

/* POST /v1/policy: re-reads custos.yaml and the policy it names, as SIGHUP does; the policy is
 * compiled first on its own so that every problem is reported, not only the first. */
static custos_err admin_policy_reload(void *arg, diag_list *d)
{
	struct up_ctx *u = arg;
	proxy_options o;

	log_info("up: admin API: reloading %s", u->path);
	GUARD(load_options(u, &o));
	if (o.policy_file) {
		policy *p = NULL;
		custos_err e = policy_load(o.policy_file, &p, d);
		policy_unref(p);
		if (e != CUSTOS_OK) {
			e = err_set(e, "policy %s has errors; the policy in force is unchanged",
			            o.policy_file);
			proxy_options_free(&o);
			return e;
		}
	}
	GUARD(proxy_reload(u->srv, &o));
	log_info("up: admin API: reloaded");
	return CUSTOS_OK;
}

/* Taint for GET /v1/sandboxes: what the model's sandbox has read through egress. */
static int admin_taint_get(void *arg, const char *name)
{
	(void)arg;
	return cli_egress_taint(name);
}

/* Starts the admin API from the admin: section; NULL when disabled or it could not start
 * (logged: the proxy keeps serving without it). */

static admin_server *start_admin(const custos_config *cfg, struct up_ctx *uc)
{
	const cfg_admin *ca = &cfg->admin;
	admin_sandbox sbx[ADMIN_MAX_SANDBOXES];
	admin_options ao;
	admin_server *a = NULL;
	char *tcp = NULL;

	if (!ca->enabled)
		return NULL;
	memset(&ao, 0, sizeof(ao));
	ao.socket_path = ca->socket;
	ao.socket_mode = ca->socket_mode;
	ao.allowed_uids = ca->allowed_uids;
	ao.n_allowed_uids = ca->n_allowed_uids;
	if (ca->tcp.enabled) {
		tcp = addr_string(&ca->tcp.addr);
		ao.tcp_address = tcp;
		memcpy(ao.token_sha256, ca->tcp.token_sha256, 32);
	}
	ao.force = ca->force;
	ao.max_body = ca->max_body;
	ao.audit = uc->audit;
	ao.audit_dir = cfg->audit.dir;
	for (size_t i = 0; i < uc->nsbx && i < ADMIN_MAX_SANDBOXES; i++) {
		const struct up_sandbox *x = &uc->sbx[i];
		sbx[i] = (admin_sandbox){ .name = x->model,
			                  .sb = x->sb,
			                  .memory_bytes = x->limits.memory_bytes,
			                  .pids = x->limits.pids,
			                  .nofile = x->limits.nofile,
			                  .cpu_millis = x->limits.cpu_millis };
		ao.n_sandboxes++;
	}
	ao.sandboxes = sbx;
	ao.hooks = (admin_hooks){ uc, admin_policy_get, admin_policy_reload, admin_taint_get };
	if (admin_start(&ao, &a) != CUSTOS_OK) {
		log_error("up: admin API not started: %s", err_msg());
		a = NULL;
	} else if (admin_tcp_port(a)) {
		log_info("up: admin tcp on port %u", admin_tcp_port(a));
	}
	free(tcp);
	return a;
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

/* Maps a model's sandbox section and its profile onto a sandbox_profile. Arrays live in *st
 * (freed by the caller after the spawn). */
struct sb_storage {
	sandbox_bind binds[SANDBOX_MAX_BINDS];
	char *env_set[SANDBOX_MAX_ENV];
	size_t n_env_set;
	const char *argv[SANDBOX_MAX_ARGS + 1];
};

static custos_err map_sandbox(const custos_config *cfg, const cfg_model *m, sandbox_profile *p,
                              struct sb_storage *st)
{
	const cfg_model_sandbox *ms = &m->sandbox;
	const cfg_profile *pr = ms->profile ? &cfg->profiles[ms->profile_index] : NULL;
	const char *base = "default";

	if (pr && pr->gpu == CFG_GPU_NVIDIA)
		base = "gpu-nvidia";
	else if (pr && pr->gpu == CFG_GPU_AMD)
		base = "gpu-amd";
	GUARD(sandbox_profile_builtin(base, p));
	p->name = m->id;
	if (ms->workdir)
		p->workdir = ms->workdir;
	if (pr) {
		/* The config's namespace bits are the sandbox module's, in the same order. */
		if (pr->namespaces)
			p->namespaces = pr->namespaces;
		if (pr->seccomp.base == CFG_SECCOMP_GPU)
			p->seccomp = SANDBOX_SECCOMP_GPU;
		if (pr->seccomp.n_allow) {
			p->seccomp = SANDBOX_SECCOMP_CUSTOM;
			p->syscalls = (const char *const *)pr->seccomp.allow;
			p->n_syscalls = pr->seccomp.n_allow;
		}
		ENSURE(pr->n_binds <= SANDBOX_MAX_BINDS, CUSTOS_ERR_LIMIT, "too many binds");
		for (size_t i = 0; i < pr->n_binds; i++)
			st->binds[i] = (sandbox_bind){ pr->binds[i].src, pr->binds[i].dst,
				                       pr->binds[i].rw, false };
		p->binds = st->binds;
		p->n_binds = pr->n_binds;
		if (pr->n_devices) {
			p->devices = (const char *const *)pr->devices;
			p->n_devices = pr->n_devices;
		}
		p->sys_ro = p->sys_ro || pr->sysfs;
		if (pr->scratch.type == CFG_SCRATCH_DIR)
			p->scratch_dir = pr->scratch.path;
		if (pr->scratch.size)
			p->limits.scratch_bytes = pr->scratch.size;
		if (pr->limits.memory)
			p->limits.memory_bytes = pr->limits.memory;
		p->limits.swap_bytes = pr->limits.swap;
		if (pr->limits.pids)
			p->limits.pids = pr->limits.pids;
		if (pr->limits.cpu_milli)
			p->limits.cpu_millis = (uint32_t)pr->limits.cpu_milli;
		if (pr->limits.nofile)
			p->limits.nofile = pr->limits.nofile;
		p->landlock = pr->landlock;
		if (pr->n_env_allow) {
			p->env_allow = (const char *const *)pr->env_allow;
			p->n_env_allow = pr->n_env_allow;
		}
	}
	ENSURE(ms->n_env <= SANDBOX_MAX_ENV, CUSTOS_ERR_LIMIT, "too many env entries");
	for (size_t i = 0; i < ms->n_env; i++) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s=%s", ms->env[i].key, ms->env[i].value);
		st->env_set[st->n_env_set++] = xstrdup(tmp);
	}
	if (cfg->egress.enabled) { /* the egress proxy is the sandbox's only way out */
		static const char *const names[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
			                             "HTTPS_PROXY" };
		ENSURE(st->n_env_set + 4 <= SANDBOX_MAX_ENV, CUSTOS_ERR_LIMIT,
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

static void on_sandbox_event(const sandbox_event *ev, void *arg)
{
	buf b;
	const char *s = "";

	buf_init(&b, 4096);
	if (sandbox_event_json(ev, &b) == CUSTOS_OK && buf_cstr(&b, &s) == CUSTOS_OK)
		log_info("sandbox %s: %s", (const char *)arg, s);
	buf_free(&b);
	if (ev->kind == SANDBOX_EV_START) /* a new netns: the egress listener follows it */
		cli_egress_sandbox_started((const char *)arg, ev->generation);
	admin_sandbox_event((const char *)arg, (int)ev->kind,
	                    ev->kind == SANDBOX_EV_VIOLATION ? ev->count : 1);
}

static void stop_sandboxes(struct up_ctx *uc)
{
	for (size_t i = 0; i < uc->nsbx; i++) {
		if (sandbox_stop(uc->sbx[i].sb) != CUSTOS_OK)
			log_warn("up: stopping sandbox %s: %s", uc->sbx[i].model, err_msg());
		sandbox_free(uc->sbx[i].sb);
		free(uc->sbx[i].model);
	}
	uc->nsbx = 0;
	for (size_t i = 0; i < uc->nvms; i++)
		cli_vm_stop(uc->vms[i]);
	uc->nvms = 0;
}

/* Starts every model whose upstream is its own process sandbox and waits until it answers. */
static custos_err start_sandboxes(const custos_config *cfg, struct up_ctx *uc)
{
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->upstream.kind != CFG_UPSTREAM_SANDBOX)
			continue;
		if (m->sandbox.type == CFG_SANDBOX_VM) { /* docs/VM.md */
			GUARD(cli_vm_start(cfg, m, uc->audit, &uc->vms[uc->nvms]));
			uc->nvms++;
			continue;
		}
		ENSURE(m->sandbox.type == CFG_SANDBOX_PROCESS, CUSTOS_ERR_UNSUPPORTED,
		       "model %s: unknown sandbox type", m->id);
		sandbox_profile p;
		struct sb_storage *st = xcalloc(1, sizeof(*st));
		custos_err e = map_sandbox(cfg, m, &p, st);
		struct up_sandbox *us = &uc->sbx[uc->nsbx];
		us->model = xstrdup(m->id);
		sandbox_opts so;
		sandbox_opts_init(&so);
		so.on_event = on_sandbox_event;
		so.arg = us->model;
		so.restart.max_restarts = UINT32_MAX;
		if (m->sandbox.restart_initial_ns)
			so.restart.backoff_initial_ms = m->sandbox.restart_initial_ns / NS_PER_MS;
		if (m->sandbox.restart_max_ns)
			so.restart.backoff_max_ms = m->sandbox.restart_max_ns / NS_PER_MS;
		sandbox *sb = NULL;
		if (e == CUSTOS_OK)
			e = sandbox_spawn(&p, st->argv, &so, &sb);
		for (size_t k = 0; k < st->n_env_set; k++)
			free(st->env_set[k]);
		free(st);
		if (e != CUSTOS_OK) {
			free(us->model);
			return err_wrap(e, "model %s: sandbox", m->id);
		}
		us->sb = sb;
		us->limits = p.limits;
		us->port = m->sandbox.port ? m->sandbox.port : 8000;
		uc->nsbx++;
		uint64_t wait_ms = m->sandbox.health.start_timeout_ns
		                           ? m->sandbox.health.start_timeout_ns / NS_PER_MS
		                           : 120000;
		log_info("up: model %s: sandbox started (pid %d), waiting for port %u", m->id,
		         (int)sandbox_pid(sb), us->port);
		GUARD(err_wrap(sandbox_wait_ready(sb, us->port, m->sandbox.health.path, wait_ms),
		               "model %s: not ready", m->id));
	}
	return CUSTOS_OK;
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
	/* The command line wins over the file, as with every daemon: `custos --log-level debug
	 * up` debugs whatever log.level says. */
	const cli_log_flags *lf = cli_log_flags_get();
	log_setup(lf->level_set ? lf->level : cfg->log.level,
	          lf->format_set ? lf->format : cfg->log.format);
	if (cfg->log.file != NULL && log_open_file(cfg->log.file) != CUSTOS_OK) {
		fprintf(stderr, "custos up: %s\n", err_msg());
		config_free(cfg);
		return CLI_FAIL;
	}

	audit_writer *aw = NULL;
	if (audit_from_config(cfg, &aw) != CUSTOS_OK) {
		log_error("up: audit writer: %s", err_msg());
		config_free(cfg);
		return CLI_FAIL;
	}
	struct up_ctx *uc = xcalloc(1, sizeof(*uc));
	uc->path = path;
	uc->audit = aw;
	uc->audit_batch = cfg->audit.durability == CFG_DURABILITY_BATCH;
	proxy_options o;
	memset(&o, 0, sizeof(o));
	e = start_sandboxes(cfg, uc);
	if (e == CUSTOS_OK)
		e = map_config(cfg, uc, &o);
	o.audit = aw;
	egress_server *eg = NULL; /* egress proxy (docs/EGRESS.md): one listener per model */
	if (e == CUSTOS_OK && cfg->egress.enabled) {
		egress_options eo;
		sandbox **sbm = xcalloc(cfg->n_models ? cfg->n_models : 1, sizeof(*sbm));
		for (size_t i = 0; i < cfg->n_models; i++)
			for (size_t j = 0; j < uc->nsbx; j++)
				if (strcmp(uc->sbx[j].model, cfg->models[i].id) == 0)
					sbm[i] = uc->sbx[j].sb;
		e = cli_egress_options(cfg, aw, sbm, &eo);
		free(sbm);
		/* A VM's listener: the guest's proxy streams, accepted from its channel. */
		for (size_t i = 0; e == CUSTOS_OK && i < cfg->n_models; i++) {
			struct up_vm *vmu = find_vm(uc, cfg->models[i].id);
			if (vmu == NULL)
				continue;
			egress_listener_opts *l = &eo.listeners[i];
			e = cli_vm_egress_fd(vmu, &l->fd);
			free(l->address);
			l->address = NULL;
			l->isolation = POLICY_ISO_VM;
		}
		if (e == CUSTOS_OK)
			e = egress_create(&eo, &eg);
		else
			egress_options_free(&eo);
		if (e == CUSTOS_OK)
			e = egress_start(eg);
		if (e == CUSTOS_OK)
			cli_egress_attach(eg);
		for (size_t i = 0; e == CUSTOS_OK && i < cfg->n_models; i++) {
			struct up_vm *vmu = find_vm(uc, cfg->models[i].id);
			if (vmu)
				cli_vm_egress_attach(vmu, eg, i);
		}
	}
	o.audit_batch = uc->audit_batch;
	proxy_server *srv = NULL;
	if (e == CUSTOS_OK)
		e = proxy_create(&o, &srv);
	else
		proxy_options_free(&o);
	admin_server *admin = NULL;
	if (e == CUSTOS_OK) {
		uc->srv = srv;
		admin = start_admin(cfg, uc);
	}
	config_free(cfg);
	if (e != CUSTOS_OK) {
		log_error("up: %s", err_msg());
		cli_egress_attach(NULL);
		for (size_t i = 0; i < uc->nvms; i++)
			cli_vm_egress_attach(uc->vms[i], NULL, 0);
		egress_free(eg);
		stop_sandboxes(uc);
		free(uc);
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
	uc->eg = eg;
	e = proxy_run(srv, reload_cb, uc);
	admin_stop(admin); /* its hooks use srv */
	cli_egress_attach(NULL);
	for (size_t i = 0; i < uc->nvms; i++)
		cli_vm_egress_attach(uc->vms[i], NULL, 0);
	egress_free(eg); /* before the sandboxes its listeners live in */
	proxy_free(srv);
	stop_sandboxes(uc); /* after the workers: no request is using them any more */
	free(uc);
	custos_err ae = audit_writer_stop(aw, 5 * NS_PER_S);
	if (ae != CUSTOS_OK)
		log_error("up: audit writer stop: %s", err_msg());
	if (e != CUSTOS_OK) {
		log_error("up: %s", err_msg());
		return CLI_FAIL;
	}
	return ae == CUSTOS_OK ? CLI_OK : CLI_FAIL;
}
