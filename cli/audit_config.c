/*
 * custos.yaml's audit: section -> audit_options: the log, its key, and every SIEM sink, so
 * that `custos up` starts the shipper the file describes. Strings are borrowed from the
 * config, which outlives audit_writer_start (the shipper is forked there and keeps a copy).
 */
#include <string.h>

#include "cli.h"
#include "custos/audit.h"
#include "custos/config.h"

static audit_format sink_format(cfg_sink_format f)
{
	switch (f) {
	case CFG_FORMAT_CEF:
		return AUDIT_FMT_CEF;
	case CFG_FORMAT_LEEF:
		return AUDIT_FMT_LEEF;
	case CFG_FORMAT_JSON:
		return AUDIT_FMT_JSON;
	case CFG_FORMAT_RFC5424:
	default:
		return AUDIT_FMT_RFC5424; /* RFC 5424 whose MSG is the JSON line */
	}
}

static custos_err map_sink(const cfg_sink *k, audit_sink_options *s)
{
	memset(s, 0, sizeof(*s));
	s->name = k->id;
	s->format = sink_format(k->format);
	s->retry_min_ns = k->retry_initial_ns;
	s->retry_max_ns = k->retry_max_ns;
	if (k->tls.enabled) {
		s->ca_file = k->tls.ca;
		s->crl_file = k->tls.crl;
		s->cert_file = k->tls.cert;
		s->key_file = k->tls.key;
		s->no_verify = !k->tls.verify;
		s->server_name = k->tls.server_name;
	}
	if (k->type == CFG_SINK_SYSLOG) {
		if (k->addr.kind == CFG_ADDR_UNIX) {
			ENSURE(!k->tls.enabled, CUSTOS_ERR_INVAL,
			       "audit sink %s: TLS needs a TCP address", k->id);
			s->kind = AUDIT_SINK_SYSLOG_TCP;
			s->unix_path = k->addr.path;
		} else {
			s->kind = k->tls.enabled ? AUDIT_SINK_SYSLOG_TLS : AUDIT_SINK_SYSLOG_TCP;
			s->host = k->addr.host;
			s->port = k->addr.port;
		}
		return CUSTOS_OK;
	}
	ENSURE(k->http.host != NULL && k->http.port != 0, CUSTOS_ERR_INVAL,
	       "audit sink %s: http.url has no host", k->id);
	ENSURE(k->http.https || !k->tls.enabled, CUSTOS_ERR_INVAL,
	       "audit sink %s: a tls: block needs an https:// url", k->id);
	s->kind = AUDIT_SINK_HEC;
	s->host = k->http.host;
	s->port = k->http.port;
	s->tls = k->http.https;
	s->hec_path = k->http.path;
	s->hec_token_file = k->http.token_file;
	s->hec_no_ack = !k->http.ack;
	return CUSTOS_OK;
}

custos_err cli_audit_options(const custos_config *cfg, bool with_sinks, cli_audit_opts *out)
{
	const cfg_audit *a = &cfg->audit;
	audit_options *o = &out->o;

	memset(out, 0, sizeof(*out));
	audit_options_default(o);
	o->dir = a->dir;
	o->durability = a->durability == CFG_DURABILITY_SYNC ? AUDIT_DURABILITY_SYNC
	                                                     : AUDIT_DURABILITY_BATCH;
	o->batch_window_ns = a->batch_window_ns; /* 0 is valid: commit without lingering */
	if (a->queue_size)
		o->queue_events = a->queue_size;
	o->on_full = a->on_full == CFG_ON_FULL_DENY ? AUDIT_ON_FULL_DENY : AUDIT_ON_FULL_BLOCK;
	o->rotate_bytes = a->rotate_size;
	o->rotate_ns = a->rotate_interval_ns;
	if (a->checkpoint_every_events)
		o->checkpoint_events = a->checkpoint_every_events;
	if (a->checkpoint_every_interval_ns)
		o->checkpoint_ns = a->checkpoint_every_interval_ns;
	o->signing_key = a->signing_key;
	o->public_key = a->public_key;
	o->query = a->query == CFG_AUDIT_QUERY_FULL   ? AUDIT_QUERY_FULL
	           : a->query == CFG_AUDIT_QUERY_NONE ? AUDIT_QUERY_NONE
	                                              : AUDIT_QUERY_NAMES;
	if (!with_sinks)
		return CUSTOS_OK;
	ENSURE(a->n_sinks <= AUDIT_MAX_SINKS, CUSTOS_ERR_LIMIT, "audit: %zu sinks, at most %d",
	       a->n_sinks, AUDIT_MAX_SINKS);
	for (size_t i = 0; i < a->n_sinks; i++)
		GUARD(map_sink(&a->sinks[i], &out->sinks[i]));
	o->sinks = out->sinks;
	o->n_sinks = a->n_sinks;
	return CUSTOS_OK;
}
