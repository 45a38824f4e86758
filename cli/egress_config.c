/*
 * custos.yaml -> egress_options: the data-source catalogue, the egress section and one
 * listener per model. A sandboxed model's listener is made inside its sandbox's network
 * namespace at 127.0.0.1:egress.port (sandbox_listen_inside); a model running on the host
 * gets 127.0.0.1:(egress.port + model index), so each model's calls are told apart by port.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "custos/config.h"
#include "custos/egress.h"
#include "custos/policy.h"
#include "custos/sandbox.h"

/* Which models' listeners live inside a sandbox (a restarted sandbox, in a new netns, gets a
 * new one from the supervisor: cli_egress_replace; a sandbox a reload adds gets one of its own,
 * cli_egress_add, and a removed one's is closed, cli_egress_close), and the server that
 * serves them. */
struct sbx_listener {
	char *model;
	size_t index;
};
static pthread_mutex_t sbx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sbx_listener *sbx_reg;
static size_t sbx_n;
static egress_server *sbx_eg;

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static void sbx_register(const char *model, size_t index)
{
	pthread_mutex_lock(&sbx_mu);
	sbx_reg = realloc(sbx_reg, (sbx_n + 1) * sizeof(*sbx_reg));
	if (sbx_reg == NULL)
		abort();
	sbx_reg[sbx_n++] = (struct sbx_listener){ xstrdup(model), index };
	pthread_mutex_unlock(&sbx_mu);
}

custos_err cli_egress_options(const custos_config *cfg, struct audit_writer *audit, int *sbx_fds,
                              const bool *sbx_vm, egress_options *o)
{
	const cfg_egress *e = &cfg->egress;

	egress_options_init(o, cfg->n_data_sources, cfg->n_models);
	for (size_t i = 0; i < cfg->n_data_sources; i++) {
		const cfg_data_source *d = &cfg->data_sources[i];
		egress_source *s = &o->sources[o->nsources++];
		s->id = xstrdup(d->id);
		s->https = d->https;
		s->host = xstrdup(d->host);
		s->port = d->port;
		s->path_prefix = dup_or_null(d->path_prefix);
		s->intercept = d->intercept;
		s->allow_private = d->allow_private_addresses;
		s->ca_file = dup_or_null(d->ca_file);
		s->max_response = d->max_response;
		s->timeout_ns = d->timeout_ns;
		s->cert_file = dup_or_null(d->cert);
		s->key_file = dup_or_null(d->key);
		s->crl_file = dup_or_null(d->crl_file);
	}
	for (size_t i = 0; i < cfg->n_models; i++) {
		egress_listener_opts *l = &o->listeners[o->nlisteners++];
		l->model = xstrdup(cfg->models[i].id);
		l->sandbox = dup_or_null(cfg->models[i].sandbox.profile);
		if (cfg->models[i].upstream.kind == CFG_UPSTREAM_SANDBOX) {
			/* made by the supervisor inside the sandbox (or on the VM's channel) */
			ENSURE(sbx_fds && sbx_fds[i] >= 0, CUSTOS_ERR_UNSUPPORTED,
			       "model %s: no egress listener inside its sandbox", l->model);
			l->fd = sbx_fds[i];
			sbx_fds[i] = -1;
			l->isolation = sbx_vm && sbx_vm[i] ? POLICY_ISO_VM : POLICY_ISO_PROCESS;
			/* a VM's: only the supervisor's channel thread may connect */
			l->peer_pid = sbx_vm && sbx_vm[i] ? getppid() : 0;
			sbx_register(l->model, i);
			continue;
		}
		char addr[32];
		unsigned port = e->port + (unsigned)i;
		if (port > 65535)
			return err_set(CUSTOS_ERR_LIMIT, "egress.port + %zu models passes 65535",
			               i);
		snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
		l->address = xstrdup(addr);
	}
	o->policy_file = dup_or_null(cfg->policy.file);
	o->ca_dir = dup_or_null(e->ca_dir);
	if (e->n_dns_servers) {
		o->dns_servers = xcalloc(e->n_dns_servers, sizeof(*o->dns_servers));
		for (size_t i = 0; i < e->n_dns_servers; i++)
			o->dns_servers[i] = xstrdup(e->dns_servers[i]);
		o->n_dns_servers = e->n_dns_servers;
	}
	o->dns_timeout_ns = e->dns_timeout_ns;
	o->leaf_lifetime_ns = e->leaf_lifetime_ns;
	o->max_response = e->max_response;
	o->connect_timeout_ns = e->connect_timeout_ns;
	o->read_timeout_ns = e->read_timeout_ns;
	o->idle_timeout_ns = e->idle_timeout_ns;
	o->max_conns = (unsigned)e->max_connections_per_sandbox;
	o->inspect_max_body = e->inspect_max_body;
	o->inspect_max_held = e->inspect_max_held;
	/* CUSTOS_EGRESS_FORWARD=threads: the thread-per-connection forward path (comparisons and
	 * tests); =loops:N: N event loops (default one per CPU). docs/EGRESS.md "Forward proxy". */
	const char *fw = getenv("CUSTOS_EGRESS_FORWARD");
	/* audit durability sync: every decision waits for its fdatasync, which a loop would do
	 * one request at a time; threads wait side by side and share the writer's group commit */
	o->forward_threads = cfg->audit.durability == CFG_DURABILITY_SYNC;
	if (fw && strcmp(fw, "threads") == 0) {
		o->forward_threads = true;
	} else if (fw && strncmp(fw, "loops:", 6) == 0) {
		uint64_t n = 0;
		if (num_parse_u64(span_cstr(fw + 6), 1, EGRESS_MAX_FWD_LOOPS, &n) != CUSTOS_OK)
			return err_set(CUSTOS_ERR_INVAL, "CUSTOS_EGRESS_FORWARD=%s: bad value", fw);
		o->forward_loops = (unsigned)n;
		o->forward_threads = false;
	}
	o->audit = audit;
	o->audit_fail_open = cfg->audit.on_write_error == CFG_ON_WRITE_ERROR_CONTINUE;
	return CUSTOS_OK;
}

void cli_egress_attach(egress_server *eg)
{
	pthread_mutex_lock(&sbx_mu);
	sbx_eg = eg;
	if (eg == NULL) {
		for (size_t i = 0; i < sbx_n; i++)
			free(sbx_reg[i].model);
		free(sbx_reg);
		sbx_reg = NULL;
		sbx_n = 0;
	}
	pthread_mutex_unlock(&sbx_mu);
}

int cli_egress_taint(const char *model)
{
	int t = -1;

	pthread_mutex_lock(&sbx_mu);
	for (size_t i = 0; sbx_eg && i < sbx_n; i++)
		if (strcmp(sbx_reg[i].model, model) == 0) {
			int v = egress_taint(sbx_eg, sbx_reg[i].index);
			if (v > t)
				t = v;
		}
	pthread_mutex_unlock(&sbx_mu);
	return t;
}

custos_err cli_egress_add(const cfg_model *m, int fd, size_t *index)
{
	custos_err e;

	/* What cli_egress_options gives a sandboxed model at start. */
	egress_listener_opts lo = { .fd = fd,
		                    .model = xstrdup(m->id),
		                    .sandbox = dup_or_null(m->sandbox.profile),
		                    .isolation = m->sandbox.type == CFG_SANDBOX_VM
		                                         ? POLICY_ISO_VM
		                                         : POLICY_ISO_PROCESS,
		                    .peer_pid = m->sandbox.type == CFG_SANDBOX_VM ? getppid() : 0 };
	if (m->upstream.kind != CFG_UPSTREAM_SANDBOX ||
	    (m->sandbox.type != CFG_SANDBOX_PROCESS && m->sandbox.type != CFG_SANDBOX_VM)) {
		e = err_set(CUSTOS_ERR_UNSUPPORTED, "model %s: not sandboxed", m->id);
	} else {
		pthread_mutex_lock(&sbx_mu);
		e = sbx_eg ? egress_listener_add(sbx_eg, &lo, index)
		           : err_set(CUSTOS_ERR_CLOSED, "egress: no egress proxy");
		pthread_mutex_unlock(&sbx_mu);
	}
	if (lo.fd >= 0) /* not taken */
		close(lo.fd);
	free(lo.model);
	free(lo.sandbox);
	if (e == CUSTOS_OK)
		sbx_register(m->id, *index);
	return e;
}

custos_err cli_egress_close(size_t index)
{
	custos_err e = CUSTOS_OK;

	pthread_mutex_lock(&sbx_mu);
	for (size_t i = 0; i < sbx_n; i++) {
		if (sbx_reg[i].index != index)
			continue;
		if (sbx_eg)
			e = egress_listener_close(sbx_eg, index);
		free(sbx_reg[i].model);
		sbx_reg[i] = sbx_reg[--sbx_n];
		break;
	}
	pthread_mutex_unlock(&sbx_mu);
	return e;
}

custos_err cli_egress_replace(size_t model_index, int fd)
{
	custos_err e = CUSTOS_OK;
	bool found = false;

	pthread_mutex_lock(&sbx_mu);
	for (size_t i = 0; sbx_eg && i < sbx_n; i++) {
		if (sbx_reg[i].index != model_index)
			continue;
		found = true;
		e = egress_listener_replace(sbx_eg, sbx_reg[i].index, fd);
		fd = -1;
	}
	pthread_mutex_unlock(&sbx_mu);
	if (fd >= 0)
		close(fd);
	if (!found && e == CUSTOS_OK)
		e = err_set(CUSTOS_ERR_NOTFOUND, "egress: no listener for model %zu", model_index);
	return e;
}
