/*
 * What a reload may not change: the settings `custos up` reads once, at start (worker threads,
 * the log, the audit writer and its sinks, the admin API, the proxy's user and confinement,
 * the egress proxy and its data sources, a running sandbox's settings). A reload that changes
 * one is refused as a whole, naming the setting, rather than half-applied with the change
 * silently dropped. Sandboxed models, process or VM, may be added, removed and changed
 * (replaced).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "config_int.h"

/* The first difference found, as "audit.sinks[0] (siem).tls.ca" and its values when short. */
struct rdiff {
	char what[256];
	bool found;
	bool vm; /* a VM's change that a reload cannot make by a replacement */
};

static void note(struct rdiff *r, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
static void note(struct rdiff *r, const char *fmt, ...)
{
	va_list ap;

	if (r->found)
		return;
	r->found = true;
	va_start(ap, fmt);
	vsnprintf(r->what, sizeof(r->what), fmt, ap);
	va_end(ap);
}

static void note_dur(struct rdiff *r, const char *p, const char *key, uint64_t a, uint64_t b)
{
	char x[32], y[32];

	num_format_duration(a, x, sizeof(x));
	num_format_duration(b, y, sizeof(y));
	note(r, "%s%s (%s -> %s)", p, key, x, y);
}

static void note_size(struct rdiff *r, const char *p, const char *key, uint64_t a, uint64_t b)
{
	char x[32], y[32];

	num_format_size(a, x, sizeof(x));
	num_format_size(b, y, sizeof(y));
	note(r, "%s%s (%s -> %s)", p, key, x, y);
}

static bool str_same(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool strs_same(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_same(a[i], b[i]))
			return false;
	return true;
}

static bool kvs_same(const cfg_kv *a, size_t na, const cfg_kv *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_same(a[i].key, b[i].key) || !str_same(a[i].value, b[i].value))
			return false;
	return true;
}

/* Comparisons under a name prefix p ("audit", "models[2] (llm).sandbox"). */
#define SAME_NUM(p, key, a, b)                                                                     \
	do {                                                                                       \
		if ((a) != (b))                                                                    \
			note(r, "%s%s (%llu -> %llu)", (p), (key), (unsigned long long)(a),        \
			     (unsigned long long)(b));                                             \
	} while (0)
#define SAME_DUR(p, key, a, b)                                                                     \
	do {                                                                                       \
		if ((a) != (b))                                                                    \
			note_dur(r, (p), (key), (a), (b));                                         \
	} while (0)
#define SAME_SIZE(p, key, a, b)                                                                    \
	do {                                                                                       \
		if ((a) != (b))                                                                    \
			note_size(r, (p), (key), (a), (b));                                        \
	} while (0)
#define SAME_STR(p, key, a, b)                                                                     \
	do {                                                                                       \
		if (!str_same((a), (b)))                                                           \
			note(r, "%s%s (%s -> %s)", (p), (key), (a) ? (a) : "unset",                \
			     (b) ? (b) : "unset");                                                 \
	} while (0)
#define SAME(p, key, cond)                                                                         \
	do {                                                                                       \
		if (!(cond))                                                                       \
			note(r, "%s%s", (p), (key));                                               \
	} while (0)

static void log_diff(struct rdiff *r, const cfg_log *a, const cfg_log *b)
{
	static const char *const fmts[] = { "auto", "text", "json" };
	static const char *const lvls[] = { "error", "warn", "info", "debug" };

	if (a->level != b->level)
		note(r, "log.level (%s -> %s)", lvls[a->level], lvls[b->level]);
	if (a->format != b->format)
		note(r, "log.format (%s -> %s)", fmts[a->format], fmts[b->format]);
	SAME_STR("log.", "file", a->file, b->file);
}

static void sink_diff(struct rdiff *r, const char *p, const cfg_sink *a, const cfg_sink *b)
{
	SAME_STR(p, "id", a->id, b->id);
	SAME(p, "type", a->type == b->type);
	SAME(p, "format", a->format == b->format);
	SAME_STR(p, "address", a->address, b->address);
	SAME(p, "tls", a->tls.enabled == b->tls.enabled);
	SAME_STR(p, "tls.ca", a->tls.ca, b->tls.ca);
	SAME_STR(p, "tls.crl", a->tls.crl, b->tls.crl);
	SAME_STR(p, "tls.cert", a->tls.cert, b->tls.cert);
	SAME_STR(p, "tls.key", a->tls.key, b->tls.key);
	SAME(p, "tls.verify", a->tls.verify == b->tls.verify);
	SAME_STR(p, "tls.server_name", a->tls.server_name, b->tls.server_name);
	SAME_STR(p, "http.url", a->http.url, b->http.url);
	SAME_STR(p, "http.token_file", a->http.token_file, b->http.token_file);
	SAME(p, "http.ack", a->http.ack == b->http.ack);
	SAME_DUR(p, "retry.initial", a->retry_initial_ns, b->retry_initial_ns);
	SAME_DUR(p, "retry.max", a->retry_max_ns, b->retry_max_ns);
}

static void audit_diff(struct rdiff *r, const cfg_audit *a, const cfg_audit *b)
{
	const char *p = "audit.";

	SAME_STR(p, "dir", a->dir, b->dir);
	SAME(p, "durability", a->durability == b->durability);
	SAME_DUR(p, "batch_window", a->batch_window_ns, b->batch_window_ns);
	SAME_NUM(p, "queue_size", a->queue_size, b->queue_size);
	SAME(p, "on_full", a->on_full == b->on_full);
	SAME_SIZE(p, "rotate.size", a->rotate_size, b->rotate_size);
	SAME_DUR(p, "rotate.interval", a->rotate_interval_ns, b->rotate_interval_ns);
	SAME_NUM(p, "checkpoint.every_events", a->checkpoint_every_events,
	         b->checkpoint_every_events);
	SAME_DUR(p, "checkpoint.every_interval", a->checkpoint_every_interval_ns,
	         b->checkpoint_every_interval_ns);
	SAME_STR(p, "signing_key", a->signing_key, b->signing_key);
	SAME_STR(p, "public_key", a->public_key, b->public_key);
	SAME(p, "on_write_error", a->on_write_error == b->on_write_error);
	SAME(p, "query", a->query == b->query);
	SAME_SIZE(p, "body_record_max", a->body_record_max, b->body_record_max);
	if (a->n_sinks != b->n_sinks)
		note(r, "audit.sinks (%zu -> %zu sinks)", a->n_sinks, b->n_sinks);
	for (size_t i = 0; i < a->n_sinks && !r->found; i++) {
		char q[96];
		snprintf(q, sizeof(q), "audit.sinks[%zu] (%s).", i,
		         a->sinks[i].id ? a->sinks[i].id : "?");
		sink_diff(r, q, &a->sinks[i], &b->sinks[i]);
	}
}

static void admin_diff(struct rdiff *r, const cfg_admin *a, const cfg_admin *b)
{
	const char *p = "admin.";

	SAME(p, "enabled", a->enabled == b->enabled);
	SAME_STR(p, "socket", a->socket, b->socket);
	SAME(p, "socket_mode", a->socket_mode == b->socket_mode);
	SAME(p, "allowed_uids",
	     a->n_allowed_uids == b->n_allowed_uids &&
	             (a->n_allowed_uids == 0 ||
	              memcmp(a->allowed_uids, b->allowed_uids,
	                     a->n_allowed_uids * sizeof(a->allowed_uids[0])) == 0));
	SAME(p, "tcp", a->tcp.enabled == b->tcp.enabled);
	SAME_STR(p, "tcp.address", a->tcp.address, b->tcp.address);
	SAME(p, "tcp.token_sha256",
	     CRYPTO_memcmp(a->tcp.token_sha256, b->tcp.token_sha256, sizeof(a->tcp.token_sha256)) ==
	             0);
	SAME(p, "force", a->force == b->force);
	SAME_SIZE(p, "max_body", a->max_body, b->max_body);
	/* TLS on the TCP listener or not is decided at start (the listener is the TLS gate's or
	 * libmicrohttpd's); its certificate, key and client CA are read again by a reload. */
	SAME(p, "tls", a->tls.enabled == b->tls.enabled);
}

static void egress_diff(struct rdiff *r, const cfg_egress *a, const cfg_egress *b)
{
	const char *p = "egress.";

	SAME(p, "enabled", a->enabled == b->enabled);
	SAME_NUM(p, "port", a->port, b->port);
	SAME_STR(p, "ca_dir", a->ca_dir, b->ca_dir);
	SAME_DUR(p, "leaf_lifetime", a->leaf_lifetime_ns, b->leaf_lifetime_ns);
	SAME_SIZE(p, "max_response", a->max_response, b->max_response);
	SAME_DUR(p, "timeouts.connect", a->connect_timeout_ns, b->connect_timeout_ns);
	SAME_DUR(p, "timeouts.read", a->read_timeout_ns, b->read_timeout_ns);
	SAME_DUR(p, "timeouts.idle", a->idle_timeout_ns, b->idle_timeout_ns);
	SAME_NUM(p, "max_connections_per_sandbox", a->max_connections_per_sandbox,
	         b->max_connections_per_sandbox);
	SAME(p, "dns",
	     strs_same(a->dns_servers, a->n_dns_servers, b->dns_servers, b->n_dns_servers));
	SAME_DUR(p, "dns.timeout", a->dns_timeout_ns, b->dns_timeout_ns);
	SAME_SIZE(p, "inspect.max_body", a->inspect_max_body, b->inspect_max_body);
	SAME_SIZE(p, "inspect.max_held", a->inspect_max_held, b->inspect_max_held);
}

static void source_diff(struct rdiff *r, const char *p, const cfg_data_source *a,
                        const cfg_data_source *b)
{
	SAME_STR(p, "id", a->id, b->id);
	SAME_STR(p, "url", a->url, b->url);
	SAME(p, "classification", a->classification == b->classification);
	SAME(p, "intercept", a->intercept == b->intercept);
	SAME(p, "allow_private_addresses",
	     a->allow_private_addresses == b->allow_private_addresses);
	SAME_STR(p, "ca_file", a->ca_file, b->ca_file);
	SAME_STR(p, "crl_file", a->crl_file, b->crl_file);
	SAME_SIZE(p, "max_response", a->max_response, b->max_response);
	SAME_DUR(p, "timeout", a->timeout_ns, b->timeout_ns);
	SAME_STR(p, "cert", a->cert, b->cert);
	SAME_STR(p, "key", a->key, b->key);
}

static void profile_diff(struct rdiff *r, const char *p, const cfg_profile *a, const cfg_profile *b)
{
	SAME(p, "namespaces", a->namespaces == b->namespaces);
	SAME(p, "seccomp",
	     a->seccomp.base == b->seccomp.base &&
	             strs_same(a->seccomp.allow, a->seccomp.n_allow, b->seccomp.allow,
	                       b->seccomp.n_allow) &&
	             strs_same(a->seccomp.deny, a->seccomp.n_deny, b->seccomp.deny,
	                       b->seccomp.n_deny));
	SAME(p, "gpu", a->gpu == b->gpu);
	SAME(p, "devices", strs_same(a->devices, a->n_devices, b->devices, b->n_devices));
	bool binds = a->n_binds == b->n_binds;
	for (size_t i = 0; binds && i < a->n_binds; i++)
		binds = str_same(a->binds[i].src, b->binds[i].src) &&
		        str_same(a->binds[i].dst, b->binds[i].dst) &&
		        a->binds[i].rw == b->binds[i].rw;
	SAME(p, "binds", binds);
	SAME(p, "sysfs", a->sysfs == b->sysfs);
	SAME(p, "scratch.type", a->scratch.type == b->scratch.type);
	SAME_SIZE(p, "scratch.size", a->scratch.size, b->scratch.size);
	SAME_STR(p, "scratch.path", a->scratch.path, b->scratch.path);
	SAME_SIZE(p, "limits.memory", a->limits.memory, b->limits.memory);
	SAME_SIZE(p, "limits.swap", a->limits.swap, b->limits.swap);
	SAME_NUM(p, "limits.pids", a->limits.pids, b->limits.pids);
	SAME_NUM(p, "limits.cpu", a->limits.cpu_milli, b->limits.cpu_milli);
	SAME_NUM(p, "limits.nofile", a->limits.nofile, b->limits.nofile);
	SAME(p, "landlock", a->landlock == b->landlock);
	SAME(p, "env_allow", strs_same(a->env_allow, a->n_env_allow, b->env_allow, b->n_env_allow));
	SAME(p, "vm", a->vm.enabled == b->vm.enabled);
	SAME_NUM(p, "vm.vcpus", a->vm.vcpus, b->vm.vcpus);
	SAME_SIZE(p, "vm.memory", a->vm.memory, b->vm.memory);
	SAME(p, "vm.hugepages", a->vm.hugepages == b->vm.hugepages);
	SAME(p, "vm.cpu_pinning",
	     a->vm.n_cpu_pinning == b->vm.n_cpu_pinning &&
	             (a->vm.n_cpu_pinning == 0 ||
	              memcmp(a->vm.cpu_pinning, b->vm.cpu_pinning,
	                     a->vm.n_cpu_pinning * sizeof(a->vm.cpu_pinning[0])) == 0));
	SAME_STR(p, "vm.kernel", a->vm.kernel, b->vm.kernel);
	SAME_STR(p, "vm.initrd", a->vm.initrd, b->vm.initrd);
	SAME_STR(p, "vm.disk", a->vm.disk, b->vm.disk);
	SAME_STR(p, "vm.cmdline", a->vm.cmdline, b->vm.cmdline);
	SAME(p, "vm.hostdev",
	     strs_same(a->vm.hostdev, a->vm.n_hostdev, b->vm.hostdev, b->vm.n_hostdev));
	SAME(p, "vm.channel", a->vm.channel == b->vm.channel);
	SAME_NUM(p, "vm.vsock_cid", a->vm.vsock_cid, b->vm.vsock_cid);
	SAME_STR(p, "vm.console_log", a->vm.console_log, b->vm.console_log);
	SAME(p, "vm.type", a->vm.domain_type == b->vm.domain_type);
	SAME_STR(p, "vm.libvirt_uri", a->vm.libvirt_uri, b->vm.libvirt_uri);
	SAME_STR(p, "vm.channel_socket", a->vm.channel_socket, b->vm.channel_socket);
}

static const cfg_model *model_by_id(const custos_config *cfg, const char *id, size_t *index)
{
	for (size_t i = 0; i < cfg->n_models; i++) {
		if (str_same(cfg->models[i].id, id)) {
			*index = i;
			return &cfg->models[i];
		}
	}
	return NULL;
}

static bool sandboxed(const cfg_model *m)
{
	return m && m->sandbox.type != CFG_SANDBOX_NONE;
}

/* The first difference between two sandbox blocks of one model (and the profiles they name),
 * under the prefix "models[k] (id).sandbox.". */
static void sandbox_block_diff(struct rdiff *r, const custos_config *a, const cfg_model *o,
                               const custos_config *b, const cfg_model *n, size_t k)
{
	const cfg_model_sandbox *x = &o->sandbox, *y = &n->sandbox;
	char p[128];

	snprintf(p, sizeof(p), "models[%zu] (%s).sandbox.", k, o->id);
	SAME(p, "type", x->type == y->type);
	SAME_STR(p, "profile", x->profile, y->profile);
	SAME(p, "command", strs_same(x->command, x->n_command, y->command, y->n_command));
	SAME(p, "env", kvs_same(x->env, x->n_env, y->env, y->n_env));
	SAME_STR(p, "workdir", x->workdir, y->workdir);
	SAME_NUM(p, "port", x->port, y->port);
	SAME_STR(p, "health.path", x->health.path, y->health.path);
	SAME_DUR(p, "health.start_timeout", x->health.start_timeout_ns, y->health.start_timeout_ns);
	SAME_DUR(p, "restart.initial", x->restart_initial_ns, y->restart_initial_ns);
	SAME_DUR(p, "restart.max", x->restart_max_ns, y->restart_max_ns);
	if (r->found || x->profile == NULL || y->profile == NULL)
		return;
	snprintf(p, sizeof(p), "sandbox_profiles.%s.", x->profile);
	profile_diff(r, p, &a->profiles[x->profile_index], &b->profiles[y->profile_index]);
}

/* True when the profiles name a PCI device in common: the device a replacement would need is
 * held by the VM it replaces. */
static bool hostdev_shared(const cfg_profile *a, const cfg_profile *b)
{
	for (size_t i = 0; i < a->vm.n_hostdev; i++)
		for (size_t k = 0; k < b->vm.n_hostdev; k++)
			if (str_same(a->vm.hostdev[i], b->vm.hostdev[k]))
				return true;
	return false;
}

/* A sandboxed model that stays with other sandbox settings, process or VM, is replaced by the
 * reload (its new sandbox started beside the old one, traffic moved once it is ready, the old
 * one stopped once idle: docs/SANDBOX.md and docs/VM.md, "Reload"); the supervisor gives a
 * VM's replacement its own domain name and channel socket. Refused, as a whole: a model moving
 * between a VM and a process sandbox, and a VM whose replacement would need a PCI device the
 * old VM holds. Any sandboxed model may be added or removed (the supervisor starts or stops
 * it); a model that is not sandboxed may come, go or change freely (its upstream is
 * reloaded). */
static void sandbox_diff(struct rdiff *r, const custos_config *a, const custos_config *b)
{
	for (size_t i = 0; i < a->n_models && !r->found; i++) {
		const cfg_model *o = &a->models[i];
		size_t k;
		const cfg_model *n = model_by_id(b, o->id, &k);
		if (!sandboxed(o) || !sandboxed(n))
			continue;
		if ((o->sandbox.type == CFG_SANDBOX_VM) != (n->sandbox.type == CFG_SANDBOX_VM)) {
			note(r, "models[%zu] (%s).sandbox.type (%s -> %s)", k, o->id,
			     o->sandbox.type == CFG_SANDBOX_VM ? "vm" : "process",
			     n->sandbox.type == CFG_SANDBOX_VM ? "vm" : "process");
			r->vm = true;
			continue;
		}
		if (o->sandbox.type != CFG_SANDBOX_VM || o->sandbox.profile == NULL ||
		    n->sandbox.profile == NULL)
			continue;
		const cfg_profile *po = &a->profiles[o->sandbox.profile_index];
		const cfg_profile *pn = &b->profiles[n->sandbox.profile_index];
		if (!hostdev_shared(po, pn))
			continue;
		struct rdiff d = { .found = false };
		sandbox_block_diff(&d, a, o, b, n, k);
		if (d.found) {
			note(r, "%s", d.what);
			r->vm = true;
		}
	}
}

bool config_sandbox_replaced(const custos_config *running, const custos_config *next,
                             const char *id)
{
	size_t i, k;
	const cfg_model *o = model_by_id(running, id, &i);
	const cfg_model *n = model_by_id(next, id, &k);

	if (!sandboxed(o) || !sandboxed(n))
		return false;
	struct rdiff rd = { .found = false };
	sandbox_block_diff(&rd, running, o, next, n, k);
	return rd.found;
}

bool config_sandboxes_changed(const custos_config *running, const custos_config *next)
{
	size_t k;

	for (size_t i = 0; i < next->n_models; i++)
		if (sandboxed(&next->models[i]) !=
		    sandboxed(model_by_id(running, next->models[i].id, &k)))
			return true;
	for (size_t i = 0; i < running->n_models; i++)
		if (sandboxed(&running->models[i]) &&
		    (!sandboxed(model_by_id(next, running->models[i].id, &k)) ||
		     config_sandbox_replaced(running, next, running->models[i].id)))
			return true;
	return false;
}

custos_err config_reload_check(const custos_config *running, const custos_config *next)
{
	struct rdiff rd = { .found = false };
	struct rdiff *r = &rd;
	const custos_config *a = running, *b = next;

	log_diff(r, &a->log, &b->log);
	SAME_NUM("", "workers", a->workers, b->workers);
	/* The supervisor's deadline for the proxy's drain is set from it at start. */
	SAME_DUR("limits.", "timeouts.shutdown", a->limits.shutdown_timeout_ns,
	         b->limits.shutdown_timeout_ns);
	sandbox_diff(r, a, b);
	if (a->n_data_sources != b->n_data_sources)
		note(r, "data_sources (%zu -> %zu sources)", a->n_data_sources, b->n_data_sources);
	for (size_t i = 0; i < a->n_data_sources && !r->found; i++) {
		char p[128];
		snprintf(p, sizeof(p), "data_sources[%zu] (%s).", i,
		         a->data_sources[i].id ? a->data_sources[i].id : "?");
		source_diff(r, p, &a->data_sources[i], &b->data_sources[i]);
	}
	egress_diff(r, &a->egress, &b->egress);
	audit_diff(r, &a->audit, &b->audit);
	admin_diff(r, &a->admin, &b->admin);
	SAME("policy.", "reload_on_sighup",
	     a->policy.reload_on_sighup == b->policy.reload_on_sighup);
	SAME_STR("proxy.", "user", a->proxy.user, b->proxy.user);
	SAME("proxy.", "self_sandbox", a->proxy.self_sandbox == b->proxy.self_sandbox);
	if (!rd.found)
		return CUSTOS_OK;
	if (rd.vm)
		return err_set(CUSTOS_ERR_INVAL,
		               "reload: %s changed: this VM is not replaced by a reload (a model "
		               "does not move between a VM and a process sandbox, and a VM's "
		               "replacement cannot have the PCI devices the running VM holds): "
		               "remove the model in one reload and add it back in the next, or "
		               "restart custos",
		               rd.what);
	return err_set(CUSTOS_ERR_INVAL,
	               "reload: %s changed: custos reads it at start only (restart custos to "
	               "change it)",
	               rd.what);
}
