/*
 * The one place the proxy builds audit events: one per request and per rejection, with the
 * latency breakdown and the request id. Without an audit writer (tests only) the event goes
 * to the log as a JSON line.
 */
#include <stdlib.h>

#include "custos/audit.h"
#include "proxy_int.h"

#define EMIT_BATCH 32 /* events kept per worker before a forced flush */

struct emit_batch {
	size_t n;
	audit_event ev[EMIT_BATCH];
};

struct emit_batch *emit_batch_new(void)
{
	return xcalloc(1, sizeof(struct emit_batch));
}

void emit_batch_free(struct emit_batch *b)
{
	free(b);
}

void emit_flush(struct audit_writer *w, struct emit_batch *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->n; i++)
		if (audit_submit(w, &b->ev[i]) != CUSTOS_OK)
			log_error("audit: event not recorded: %s", err_msg());
	b->n = 0;
}

custos_err emit_event(struct audit_writer *w, struct emit_batch *b, const emit_rec *r)
{
	audit_event local;
	audit_duration d[5];
	size_t nd = 0;

	if (w == NULL)
		b = NULL;
	if (b && b->n == EMIT_BATCH)
		emit_flush(w, b);
	audit_event *ev = b ? &b->ev[b->n] : &local;

	audit_event_begin(ev, r->type);
	audit_event_cstr(ev, "request_id", r->request_id);
	audit_event_cstr(ev, "direction", "ingress");
	audit_event_cstr(ev, "principal", r->principal);
	audit_event_cstr(ev, "auth", r->auth);
	audit_event_cstr(ev, "remote", r->remote);
	audit_event_str(ev, "method", r->method);
	audit_event_str(ev, "path", r->path);
	if (r->model.len)
		audit_event_str(ev, "model", r->model);
	audit_event_u64(ev, "status", r->status);
	audit_event_cstr(ev, "decision", r->decision);
	audit_event_cstr(ev, "reason", r->reason);
	if (r->rules)
		audit_event_cstr(ev, "rules", r->rules);
	if (r->shadow)
		audit_event_bool(ev, "shadow", true);
	audit_event_cstr(ev, "upstream", r->upstream);
	audit_event_u64(ev, "bytes_in", r->bytes_in);
	audit_event_u64(ev, "bytes_out", r->bytes_out);
	if (r->prompt_tokens || r->completion_tokens) {
		audit_event_u64(ev, "prompt_tokens", r->prompt_tokens);
		audit_event_u64(ev, "completion_tokens", r->completion_tokens);
	}
	if (r->stream)
		audit_event_bool(ev, "stream", true);
	audit_event_cstr(ev, "policy_hash", r->policy_hash);
	if (r->inspect)
		audit_event_cstr(ev, "inspect", r->inspect);
	if (r->nfindings)
		audit_event_findings(ev, r->findings, r->nfindings);
	d[nd++] = (audit_duration){ "total", r->t_total };
	d[nd++] = (audit_duration){ "tls", r->t_tls };
	d[nd++] = (audit_duration){ "policy", r->t_policy };
	d[nd++] = (audit_duration){ "upstream", r->t_upstream };
	if (r->t_inspect)
		d[nd++] = (audit_duration){ "inspect", r->t_inspect };
	audit_event_durations(ev, d, nd);
	GUARD(audit_event_end(ev));
	if (w == NULL) {
		span body = audit_event_body(ev);
		log_info("audit: {%.*s}", (int)body.len, body.ptr);
		return CUSTOS_OK;
	}
	if (b) {
		b->n++;
		return CUSTOS_OK;
	}
	return audit_submit(w, ev);
}

bool emit_ready(struct audit_writer *w)
{
	audit_stats st;

	if (w == NULL)
		return true;
	audit_writer_stats(w, &st);
	return !st.writer_failing;
}
