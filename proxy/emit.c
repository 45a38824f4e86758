/*
 * The one place the proxy builds audit events: one per request and per rejection, with the
 * latency breakdown and the request id. Events are compact records (audit_rec): the worker
 * copies fields and the writer process renders the JSON, off the request path. Without an
 * audit writer (tests only) the event is rendered here and goes to the log as a JSON line.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bodyrec.h"
#include "custos/audit.h"
#include "proxy_int.h"

#define EMIT_BATCH       64   /* events kept per worker before a forced flush */
#define EMIT_CUT_LONG    1024 /* bytes kept of path and reason in an event that did not fit */
#define EMIT_CUT_SHORT   128  /* of principal, model and rule ids */
#define EMIT_PATH_INLINE 512  /* paths up to this long are filtered (audit.query) on the stack */

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

/* A string member cut to at most max bytes, on a UTF-8 character boundary. */
static span cut(span v, size_t max)
{
	if (v.len <= max)
		return v;
	size_t n = max;
	while (n > 0 && ((uint8_t)v.ptr[n] & 0xc0) == 0x80)
		n--;
	return span_of(v.ptr, n);
}

static void put_cut(audit_rec *ev, const char *key, const char *v, size_t max)
{
	if (v != NULL) /* absent members stay absent, as with audit_rec_cstr */
		audit_rec_str(ev, key, cut(span_cstr(v), max));
}

/* The members of one recorded body (`audit: bodies`, docs/POLICY.md "Bodies"). */
typedef struct body_keys {
	const char *data, *encoding, *length, *truncated;
} body_keys;

static void put_body(audit_rec *ev, const body_keys *k, span have, uint64_t total, size_t max)
{
	char b64[BODYREC_B64_ROOM(CFG_MAX_AUDIT_BODY_RECORD)];
	bodyrec br;

	bodyrec_make(have, total, max < CFG_MAX_AUDIT_BODY_RECORD ? max : CFG_MAX_AUDIT_BODY_RECORD,
	             b64, sizeof(b64), &br);
	audit_rec_str(ev, k->data, br.data);
	audit_rec_cstr(ev, k->encoding, br.base64 ? "base64" : "utf-8");
	audit_rec_u64(ev, k->length, br.length);
	if (br.truncated)
		audit_rec_bool(ev, k->truncated, true);
}

/* Fills ev from r. shorten: the event did not fit AUDIT_MAX_EVENT (a path near the 8 KiB
 * request-line limit, a long model name from the body...): the long members are cut and the
 * event says "truncated": an event too large is still written, never dropped. */
static custos_err build_event(audit_rec *ev, const emit_rec *r, bool shorten, size_t body_max)
{
	static const body_keys req_keys = { "request_body", "request_body_encoding",
		                            "request_body_length", "request_body_truncated" };
	static const body_keys resp_keys = { "response_body", "response_body_encoding",
		                             "response_body_length", "response_body_truncated" };
	audit_duration d[5];
	size_t nd = 0;
	const size_t long_max = shorten ? EMIT_CUT_LONG : SIZE_MAX;
	const size_t short_max = shorten ? EMIT_CUT_SHORT : SIZE_MAX;

	audit_rec_begin(ev, r->type);
	audit_rec_cstr(ev, "request_id", r->request_id);
	audit_rec_cstr(ev, "direction", "ingress");
	put_cut(ev, "principal", r->principal, short_max);
	audit_rec_cstr(ev, "auth", r->auth);
	audit_rec_cstr(ev, "remote", r->remote);
	if (r->via)
		audit_rec_cstr(ev, "via", r->via);
	if (r->via_authority)
		audit_rec_cstr(ev, "via_authority", r->via_authority);
	if (r->via_unique_id)
		audit_rec_cstr(ev, "via_unique_id", r->via_unique_id);
	audit_rec_str(ev, "method", r->method);
	audit_rec_str(ev, "path", cut(r->path, long_max));
	if (r->model.len)
		audit_rec_str(ev, "model", cut(r->model, short_max));
	if (r->model_requested.len)
		audit_rec_str(ev, "model_requested", cut(r->model_requested, short_max));
	audit_rec_u64(ev, "status", r->status);
	audit_rec_cstr(ev, "decision", r->decision);
	put_cut(ev, "reason", r->reason, long_max);
	put_cut(ev, "rules", r->rules, short_max);
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
	if (r->audit_level)
		audit_rec_cstr(ev, "audit_level", r->audit_level);
	if (r->req_body_sha256)
		audit_rec_cstr(ev, "request_body_sha256", r->req_body_sha256);
	if (r->req_body_fwd_sha256)
		audit_rec_cstr(ev, "request_body_forwarded_sha256", r->req_body_fwd_sha256);
	if (r->resp_body_sha256)
		audit_rec_cstr(ev, "response_body_sha256", r->resp_body_sha256);
	if (r->req_body_on)
		put_body(ev, &req_keys, r->req_body, r->req_body_len, body_max);
	if (r->resp_body_on)
		put_body(ev, &resp_keys, r->resp_body, r->resp_body_len, body_max);
	if (shorten)
		audit_rec_bool(ev, "truncated", true);
	d[nd++] = (audit_duration){ "total", r->t_total };
	d[nd++] = (audit_duration){ "tls", r->t_tls };
	d[nd++] = (audit_duration){ "policy", r->t_policy };
	d[nd++] = (audit_duration){ "upstream", r->t_upstream };
	if (r->t_inspect)
		d[nd++] = (audit_duration){ "inspect", r->t_inspect };
	audit_rec_durations(ev, d, nd);
	return audit_rec_end(ev);
}

static custos_err emit_submit(struct audit_writer *w, struct emit_batch *b, audit_rec *ev,
                              bool held);

custos_err emit_event(struct audit_writer *w, struct emit_batch *b, const emit_rec *in)
{
	audit_rec local;
	/* The path as audit.query says (a query value may be a token): r is in with that path. */
	char qpath[AUDIT_QUERY_ROOM(EMIT_PATH_INLINE)];
	char *qbuf = qpath;
	emit_rec rq;
	const emit_rec *r = in;
	/* Most paths have no query: they are audited as they are, without a copy. */
	if (in->path.len && memchr(in->path.ptr, '?', in->path.len) &&
	    audit_writer_query(w) != AUDIT_QUERY_FULL) {
		size_t room = AUDIT_QUERY_ROOM(in->path.len);
		if (room > sizeof(qpath))
			qbuf = xcalloc(1, room);
		rq = *in;
		rq.path = span_of(qbuf,
		                  audit_query_filter(in->path, audit_writer_query(w), qbuf, room));
		r = &rq;
	}

	if (w == NULL)
		b = NULL;
	audit_rec *ev = b ? &b->rec : &local;
	custos_err e = CUSTOS_OK;

	if (build_event(ev, r, false, r->body_max) != CUSTOS_OK) {
		log_warn("audit: event for request %s over %d bytes: written with its long members "
		         "cut (\"truncated\":true)",
		         r->request_id, AUDIT_MAX_EVENT);
		e = build_event(ev, r, true, r->body_max);
		/* Still too long with its bodies (`audit: bodies`): they are cut to nothing, the
		 * lengths and digests stay: a body never costs the event. */
		if (e != CUSTOS_OK && (r->req_body_on || r->resp_body_on))
			e = build_event(ev, r, true, 0);
		if (e != CUSTOS_OK) {
			if (w && r->held)
				audit_unreserve(w, 1);
			goto out;
		}
	}
	e = emit_submit(w, b, ev, r->held);
out:
	if (qbuf != qpath)
		free(qbuf);
	return e;
}

/* A connection refused before any request (tls.reject, proxy_protocol.reject,
 * connection.reject): one event for
 * count refusals. via: the balancer that sent a PROXY header, or NULL; via_authority and
 * via_unique_id: what that header's TLVs said, or NULL. */
static custos_err emit_conn_reject(struct audit_writer *w, struct emit_batch *b, const char *type,
                                   const char *remote, const char *via, const char *via_authority,
                                   const char *via_unique_id, const char *reason, uint64_t count)
{
	audit_rec local;

	if (w == NULL)
		b = NULL;
	audit_rec *ev = b ? &b->rec : &local;
	audit_rec_begin(ev, type);
	audit_rec_cstr(ev, "direction", "ingress");
	audit_rec_cstr(ev, "remote", remote);
	if (via)
		audit_rec_cstr(ev, "via", via);
	if (via_authority)
		audit_rec_cstr(ev, "via_authority", via_authority);
	if (via_unique_id)
		audit_rec_cstr(ev, "via_unique_id", via_unique_id);
	audit_rec_cstr(ev, "decision", "deny");
	put_cut(ev, "reason", reason, EMIT_CUT_LONG);
	audit_rec_u64(ev, "count", count);
	GUARD(audit_rec_end(ev));
	return emit_submit(w, b, ev, false);
}

custos_err emit_tls_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                           const char *via, const char *via_authority, const char *via_unique_id,
                           const char *reason, uint64_t count)
{
	return emit_conn_reject(w, b, "tls.reject", remote, via, via_authority, via_unique_id,
	                        reason, count);
}

custos_err emit_pp_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                          const char *reason, uint64_t count)
{
	return emit_conn_reject(w, b, "proxy_protocol.reject", remote, NULL, NULL, NULL, reason,
	                        count);
}

custos_err emit_shed_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                            const char *reason, uint64_t count)
{
	return emit_conn_reject(w, b, "connection.reject", remote, NULL, NULL, NULL, reason, count);
}

/* Submits an ended ev: kept in the batch, at once, or (no writer: tests) to the log. held: ev
 * already holds a queue slot (audit_reserve, an admitted request's event). In deny mode every
 * event kept in a batch holds one, taken here when it has none, so that a full queue refuses
 * only events that never held a slot and a batch is never refused for the events in it that
 * had one. */
static custos_err emit_submit(struct audit_writer *w, struct emit_batch *b, audit_rec *ev,
                              bool held)
{
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
	if (b == NULL) {
		if (held)
			return audit_submit_rec_held(w, ev);
		return audit_submit_rec(w, ev);
	}
	if (!held)
		GUARD(audit_reserve_event(w, &held));
	if (b->b.n >= EMIT_BATCH)
		emit_flush(w, b);
	custos_err e = audit_batch_add(&b->b, ev);
	if (e == CUSTOS_ERR_LIMIT) { /* the batch's bytes are full: hand it off first */
		emit_flush(w, b);
		e = audit_batch_add(&b->b, ev);
	}
	if (e == CUSTOS_OK && held)
		b->b.held++;
	else if (held)
		audit_unreserve(w, 1);
	return e;
}

void emit_policy_reload(struct audit_writer *w, const emit_reload *r)
{
	audit_event ev;

	audit_event_begin(&ev, "policy.reload");
	audit_event_cstr(&ev, "action", "reload");
	audit_event_cstr(&ev, "trigger", r->trigger);
	audit_event_cstr(&ev, "principal", r->principal);
	audit_event_cstr(&ev, "outcome", r->applied ? "reloaded" : "refused");
	if (!r->applied)
		audit_event_cstr(&ev, "reason", r->reason ? r->reason : "unknown");
	if (r->old_hash && r->old_hash[0])
		audit_event_cstr(&ev, "old_policy_hash", r->old_hash);
	/* The policy in force after the reload, as policy_hash means in every event. */
	const char *after = r->applied ? r->new_hash : r->old_hash;
	if (after && after[0])
		audit_event_cstr(&ev, "policy_hash", after);
	if (r->generation)
		audit_event_u64(&ev, "generation", r->generation);
	if (audit_event_end(&ev) != CUSTOS_OK) {
		log_error("audit: policy.reload event too large: %s", err_msg());
		return;
	}
	if (w == NULL) {
		span b = audit_event_body(&ev);
		log_info("audit: {%.*s}", (int)b.len, b.ptr);
	} else if (audit_submit(w, &ev) != CUSTOS_OK) {
		log_error("audit: policy.reload event not recorded: %s", err_msg());
	}
}

bool emit_ready(struct audit_writer *w, bool fail_open)
{
	static _Atomic uint64_t warned_ns;

	if (w == NULL || audit_writer_ok(w))
		return true;
	if (!fail_open)
		return false;
	uint64_t now = tm_mono_ns(), last = atomic_load(&warned_ns);
	if ((last == 0 || now - last >= 10ull * 1000000000) &&
	    atomic_compare_exchange_strong(&warned_ns, &last, now))
		log_warn("audit: the trail cannot be written; serving requests without it "
		         "(audit.on_write_error: continue)");
	return true;
}
