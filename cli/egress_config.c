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

#include "cli.h"
#include "custos/config.h"
#include "custos/egress.h"
#include "custos/policy.h"
#include "custos/sandbox.h"

/* Sandboxed models' listeners, so that a restarted sandbox (new netns) gets a new one. */
struct sbx_listener {
	char *model;
	sandbox *sb;
	size_t index;
};
static pthread_mutex_t sbx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sbx_listener *sbx_reg;
static size_t sbx_n;
static egress_server *sbx_eg;
static uint16_t sbx_port;

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

custos_err cli_egress_options(const custos_config *cfg, struct audit_writer *audit,
                              struct sandbox *const *sbx, egress_options *o)
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
	}
	for (size_t i = 0; i < cfg->n_models; i++) {
		egress_listener_opts *l = &o->listeners[o->nlisteners++];
		l->model = xstrdup(cfg->models[i].id);
		l->sandbox = dup_or_null(cfg->models[i].sandbox.profile);
		if (sbx && sbx[i]) {
			GUARD(err_wrap(sandbox_listen_inside(sbx[i], e->port, 128, &l->fd),
			               "model %s: egress listener inside its sandbox", l->model));
			l->isolation = POLICY_ISO_PROCESS;
			pthread_mutex_lock(&sbx_mu);
			sbx_reg = realloc(sbx_reg, (sbx_n + 1) * sizeof(*sbx_reg));
			if (sbx_reg == NULL)
				abort();
			sbx_reg[sbx_n++] = (struct sbx_listener){ xstrdup(l->model), sbx[i], i };
			sbx_port = e->port;
			pthread_mutex_unlock(&sbx_mu);
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
	o->audit = audit;
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
		if (strcmp(sbx_reg[i].model, model) == 0)
			t = egress_taint(sbx_eg, sbx_reg[i].index);
	pthread_mutex_unlock(&sbx_mu);
	return t;
}

void cli_egress_sandbox_started(const char *model, unsigned generation)
{
	if (generation < 2) /* the first instance's listener is made by cli_egress_options */
		return;
	pthread_mutex_lock(&sbx_mu);
	for (size_t i = 0; sbx_eg && i < sbx_n; i++) {
		if (strcmp(sbx_reg[i].model, model) != 0)
			continue;
		int fd = -1;
		if (sandbox_listen_inside(sbx_reg[i].sb, sbx_port, 128, &fd) != CUSTOS_OK ||
		    egress_listener_replace(sbx_eg, sbx_reg[i].index, fd) != CUSTOS_OK)
			log_error("egress: model %s restarted without an egress listener: %s",
			          model, err_msg());
	}
	pthread_mutex_unlock(&sbx_mu);
}
