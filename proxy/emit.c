/*
 * The one place the proxy builds audit events: one per request and per rejection, with the
 * latency breakdown and the request id. Events are compact records (audit_rec): the worker
 * copies fields and the writer process renders the JSON, off the request path. Without an
 * audit writer (tests only) the event is rendered here and goes to the log as a JSON line.
 */
#include <stdlib.h>

#include "custos/audit.h"
#include "proxy_int.h"

#define EMIT_BATCH 64 /* events kept per worker before a forced flush */

struct emit_batch {
	audit_batch b;
	audit_rec rec; /* the record being built (kept here: it is 8 KiB) */
};

struct emit_batch *emit_batch_new(void)
{
	struct emit_batch *b = xcalloc(1, sizeof(struct emit_batch));
	audit_batch_init(&b->b);
	return b;
}

void emit_batch_free(struct emit_batch *b)
{
	if (b == NULL)
		return;
	audit_batch_free(&b->b);
	free(b);
}

void emit_flush(struct audit_writer *w, struct emit_batch *b)
{
	if (b == NULL || b->b.n == 0)
		return;
	size_t n = b->b.n;
	if (audit_submit_batch(w, &b->b, NULL) != CUSTOS_OK)
		log_error("audit: %zu event(s) not recorded: %s", n, err_msg());
}

static custos_err emit_submit(struct audit_writer *w, struct emit_batch *b, audit_rec *ev);

custos_err emit_event(struct audit_writer *w, struct emit_batch *b, const emit_rec *r)
{
	audit_rec local;
	audit_duration d[5];
	size_t nd = 0;

	if (w == NULL)
		b = NULL;
	audit_rec *ev = b ? &b->rec : &local;

	audit_rec_begin(ev, r->type);
	audit_rec_cstr(ev, "request_id", r->request_id);
	audit_rec_cstr(ev, "direction", "ingress");
	audit_rec_cstr(ev, "principal", r->principal);
	audit_rec_cstr(ev, "auth", r->auth);
	audit_rec_cstr(ev, "remote", r->remote);
	audit_rec_str(ev, "method", r->method);
	audit_rec_str(ev, "path", r->path);
	if (r->model.len)
		audit_rec_str(ev, "model", r->model);
	audit_rec_u64(ev, "status", r->status);
	audit_rec_cstr(ev, "decision", r->decision);
	audit_rec_cstr(ev, "reason", r->reason);
	if (r->rules)
		audit_rec_cstr(ev, "rules", r->rules);
	if (r->shadow)
		audit_rec_bool(ev, "shadow", true);
	if (r->shadow_status)
		audit_rec_u64(ev, "shadow_status", r->shadow_status);
	audit_rec_cstr(ev, "upstream", r->upstream);
	audit_rec_u64(ev, "bytes_in", r->bytes_in);
	audit_rec_u64(ev, "bytes_out", r->bytes_out);
	if (r->prompt_tokens || r->completion_tokens) {
		audit_rec_u64(ev, "prompt_tokens", r->prompt_tokens);
		audit_rec_u64(ev, "completion_tokens", r->completion_tokens);
		if (r->tokens_estimated)
			audit_rec_bool(ev, "tokens_estimated", true);
	}
	if (r->stream)
		audit_rec_bool(ev, "stream", true);
	audit_rec_cstr(ev, "policy_hash", r->policy_hash);
	if (r->inspect)
		audit_rec_cstr(ev, "inspect", r->inspect);
	if (r->nfindings)
		audit_rec_findings(ev, r->findings, r->nfindings);
	d[nd++] = (audit_duration){ "total", r->t_total };
	d[nd++] = (audit_duration){ "tls", r->t_tls };
	d[nd++] = (audit_duration){ "policy", r->t_policy };
	d[nd++] = (audit_duration){ "upstream", r->t_upstream };
	if (r->t_inspect)
		d[nd++] = (audit_duration){ "inspect", r->t_inspect };
	audit_rec_durations(ev, d, nd);
	return emit_submit(w, b, ev);
}

custos_err emit_tls_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                           const char *reason, uint64_t count)
{
	audit_rec local;

	if (w == NULL)
		b = NULL;
	audit_rec *ev = b ? &b->rec : &local;
	audit_rec_begin(ev, "tls.reject");
	audit_rec_cstr(ev, "direction", "ingress");
	audit_rec_cstr(ev, "remote", remote);
	audit_rec_cstr(ev, "decision", "deny");
	audit_rec_cstr(ev, "reason", reason);
	audit_rec_u64(ev, "count", count);
	return emit_submit(w, b, ev);
}

/* Ends ev and submits it: kept in the batch, at once, or (no writer: tests) to the log. */
static custos_err emit_submit(struct audit_writer *w, struct emit_batch *b, audit_rec *ev)
{
	GUARD(audit_rec_end(ev));
	if (w == NULL) {
		buf body;
		buf_init(&body, AUDIT_MAX_EVENT);
		custos_err e = audit_rec_render(audit_rec_bytes(ev), &body);
		if (e == CUSTOS_OK) {
			span s = buf_span(&body);
			log_info("audit: {%.*s}", (int)s.len, s.ptr);
		}
		buf_free(&body);
		return e;
	}
	if (b == NULL)
		return audit_submit_rec(w, ev);
	if (b->b.n >= EMIT_BATCH)
		emit_flush(w, b);
	custos_err e = audit_batch_add(&b->b, ev);
	if (e == CUSTOS_ERR_LIMIT) { /* the batch's bytes are full: hand it off first */
		emit_flush(w, b);
		e = audit_batch_add(&b->b, ev);
	}
	return e;
}

bool emit_ready(struct audit_writer *w)
{
	return w == NULL || audit_writer_ok(w);
}
