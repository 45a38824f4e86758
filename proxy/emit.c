/*
 * The one place the proxy builds audit events: one per request and per rejection, with the
 * latency breakdown and the request id. Without an audit writer (tests only) the event goes
 * to the log as a JSON line.
 */
#include "custos/audit.h"
#include "proxy_int.h"

custos_err emit_event(struct audit_writer *w, const emit_rec *r)
{
	audit_event ev;
	audit_duration d[4];
	size_t nd = 0;

	audit_event_begin(&ev, r->type);
	audit_event_cstr(&ev, "request_id", r->request_id);
	audit_event_cstr(&ev, "direction", "ingress");
	audit_event_cstr(&ev, "principal", r->principal);
	audit_event_cstr(&ev, "auth", r->auth);
	audit_event_cstr(&ev, "remote", r->remote);
	audit_event_str(&ev, "method", r->method);
	audit_event_str(&ev, "path", r->path);
	if (r->model.len)
		audit_event_str(&ev, "model", r->model);
	audit_event_u64(&ev, "status", r->status);
	audit_event_cstr(&ev, "decision", r->decision);
	audit_event_cstr(&ev, "reason", r->reason);
	if (r->rules)
		audit_event_cstr(&ev, "rules", r->rules);
	if (r->shadow)
		audit_event_bool(&ev, "shadow", true);
	audit_event_cstr(&ev, "upstream", r->upstream);
	audit_event_u64(&ev, "bytes_in", r->bytes_in);
	audit_event_u64(&ev, "bytes_out", r->bytes_out);
	if (r->prompt_tokens || r->completion_tokens) {
		audit_event_u64(&ev, "prompt_tokens", r->prompt_tokens);
		audit_event_u64(&ev, "completion_tokens", r->completion_tokens);
	}
	if (r->stream)
		audit_event_bool(&ev, "stream", true);
	audit_event_cstr(&ev, "policy_hash", r->policy_hash);
	d[nd++] = (audit_duration){ "total", r->t_total };
	d[nd++] = (audit_duration){ "tls", r->t_tls };
	d[nd++] = (audit_duration){ "policy", r->t_policy };
	d[nd++] = (audit_duration){ "upstream", r->t_upstream };
	audit_event_durations(&ev, d, nd);
	GUARD(audit_event_end(&ev));
	if (w == NULL) {
		span b = audit_event_body(&ev);
		log_info("audit: {%.*s}", (int)b.len, b.ptr);
		return CUSTOS_OK;
	}
	return audit_submit(w, &ev);
}

bool emit_ready(struct audit_writer *w)
{
	audit_stats st;

	if (w == NULL)
		return true;
	audit_writer_stats(w, &st);
	return !st.writer_failing;
}
