/*
 * Admin API on libmicrohttpd, in the manner of systemd-journal-remote: the first call of the
 * access handler checks the caller (SO_PEERCRED uid on the Unix socket, bearer token on TCP),
 * method, path, content type and declared length before anything is allocated; the body is
 * accumulated into a bounded buffer; the per-request state is freed in the completion callback.
 * Each listener has its own daemon with a small polling thread pool, a connection limit, a
 * per-connection memory limit and an idle timeout, so a slow client ties up nothing but its own
 * connection slot until it is timed out.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "admin_tls.h"
#include "custos/admin.h"
#include "custos/audit.h"
#include "custos/policy.h"
#include "custos/sandbox.h"
#include "metrics.h"
#include "proxy_int.h"

custos_err proxy_parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len);

enum listener_kind { L_UNIX = 0, L_TCP = 1 };

/* What of a request's method and path an admin.request event keeps: a refused caller's are
 * the client's bytes, up to the connection's memory limit, and an event past AUDIT_MAX_EVENT
 * would not be recorded at all (each byte may take 6 as JSON). */
#define ADMIN_AUDIT_METHOD_MAX 32
#define ADMIN_AUDIT_PATH_MAX   1024

/* One per open connection: the deadline for the request in progress to be read completely
 * (libmicrohttpd's own timeout only measures inactivity, which a client sending one byte at a
 * time never triggers). The watchdog shuts such a connection down; libmicrohttpd then closes
 * it. Entries are removed in the CLOSED notification, which comes before the fd is closed.
 * The list is also what connection slots are counted and shed on (shed_one). */
struct watch {
	int fd;
	struct admin_listener *l;
	_Atomic uint64_t deadline; /* CLOCK_MONOTONIC ns; 0: a response is being sent */
	_Atomic uint64_t waiting;  /* since when it waits for a request head (ns); 0: has one */
	bool closing;              /* shut down (shed, or past its deadline): not a live slot */
	bool shed;                 /* shut down by shed_one (audited there) */
	bool expired;              /* shut down by the watchdog past its deadline */
	char who[48];              /* the peer as audited: "tcp:ADDR" or "uid:N" */
	/* The request-target of the request in progress as the client sent it, query included
	 * (libmicrohttpd's URI log callback; the access handler gets the path alone): what
	 * admin.request audits, its query filtered by audit.query. Cut to ADMIN_AUDIT_PATH_MAX;
	 * uri_bytes is its length. Only the connection's own thread touches these. */
	char uri[ADMIN_AUDIT_PATH_MAX + 1];
	size_t uri_bytes;
	/* The request in progress, for the audit of what custos's access handler never sees
	 * (conn_refusal): line_seen, its request line was parsed (on_uri); answered, custos
	 * queued an answer to it; mhd_status, the status of an answer libmicrohttpd made itself
	 * (0: none); served, a request was answered on this connection before. Only the
	 * connection's own thread touches these. */
	bool line_seen, answered, served;
	unsigned mhd_status;
	struct watch *prev, *next;
};

/* Refused callers audited per listener: at most ADMIN_REFUSED_BURST events a second one by one;
 * the rest of that second summed into one event once the second is over (the watchdog, or the
 * next refusal, whichever comes first; at shutdown at the latest), so that a caller without
 * the token cannot flood the trail, and the trail still counts every refusal. The same shape
 * as the supervisor's refused calls (cli/cmd_up.c, sup_refused). */
#define ADMIN_REFUSED_BURST 20
#define NS_PER_S            1000000000ull

/* Connection slots. The bearer token is a header, so a slot is taken before the caller can be
 * told apart; a client without the token holding every slot with incomplete heads would keep
 * token holders out. Each listener therefore counts its live connections itself and, when a
 * new one would be number ADMIN_MAX_CONNECTIONS + 1, sheds the one that has waited longest for
 * its request head (HAProxy's way with idle connections at maxconn): a real client sends its
 * head as it connects and is never the oldest waiting, while a flood only sheds itself. When
 * no connection waits (all are being served) the new one is shed. libmicrohttpd's own limit
 * (split between its polling threads) is set above ours so that it never stops accepting
 * while a connection could still be shed. */
#define ADMIN_MHD_CONNECTIONS (2 * ADMIN_MAX_CONNECTIONS)

/* What the audit of refusals throttles: refused callers (401/403), shed connections, failed
 * TLS handshakes (admin.tls), requests libmicrohttpd refused itself (RK_HEAD: 431, 400, 505...)
 * and connections closed past their deadline without a complete request head. */
enum refusal_kind { RK_CALLER = 0, RK_SHED = 1, RK_TLS = 2, RK_HEAD = 3, RK_DEADLINE = 4 };
#define RK_N 5

struct refusal_rate {
	uint64_t window_ns, in_window, suppressed;
};

struct admin_listener {
	struct admin_server *srv;
	enum listener_kind kind;
	int fd;
	struct MHD_Daemon *d;
	pthread_mutex_t refused_lock;
	struct refusal_rate rate[RK_N]; /* by enum refusal_kind */
	unsigned live;                  /* connections not shut down (under watch_lock) */
	bool gated;                     /* the TLS gate's: connections are socketpairs */
	atomic_bool tcp_noise_noted;    /* on_mhd_log said once that it drops them */
};

struct admin_server {
	char *socket_path;
	uint32_t uids[ADMIN_MAX_UIDS];
	size_t nuids;
	uint8_t token_sha256[32];
	uint64_t max_body;
	unsigned timeout_s;
	struct audit_writer *audit;
	char *audit_dir;
	admin_sandbox sbx[ADMIN_MAX_SANDBOXES];
	size_t nsbx;
	admin_hooks hooks;
	pthread_mutex_t reload_lock; /* one reload at a time */
	struct admin_listener l[2];
	unsigned tcp_port;
	SSL_CTX *tls_ctx;            /* admin.tls: the TCP listener's connections go through */
	struct admin_tls_gate *gate; /* the TLS gate (admin_tls.c) before libmicrohttpd */
	pthread_mutex_t watch_lock;
	pthread_cond_t watch_cond;
	struct watch *watches;
	bool watch_stop, watch_started;
	pthread_t watch_th;
	uint64_t refused_window_len; /* NS_PER_S; test builds may stretch it */
};

/* What a request is, decided on the first call from method and path alone. */
typedef enum route_id {
	R_HEALTHZ = 0,
	R_READYZ,
	R_METRICS,
	R_POLICY_GET,
	R_POLICY_RELOAD,
	R_DECIDE,
	R_SANDBOXES,
	R_SANDBOX_RESTART,
	R_AUDIT_STATUS,
} route_id;

/* Per-request state, allocated once the request passed every check; freed in completed(). */
struct req {
	route_id route;
	buf body;
	bool too_big;
	char principal[48];                       /* "uid:1000" or the TCP peer */
	char sandbox[ADMIN_SANDBOX_NAME_MAX + 1]; /* R_SANDBOX_RESTART */
};

static struct watch *watch_of(struct MHD_Connection *c);
static admin_sandbox_info *sandboxes_snapshot(const struct admin_server *s, size_t *n);

/* ---- responses ---- */

/* allow: the Allow header of a 405 (RFC 9110 15.5.6: the path's methods), else NULL. */
static enum MHD_Result respond_allow(struct MHD_Connection *c, unsigned status, const char *ctype,
                                     span body, const char *allow)
{
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(body.len, (void *)body.ptr, MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) == MHD_NO ||
	    MHD_add_response_header(r, "Cache-Control", "no-store") == MHD_NO ||
	    (status == 401 && MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
	                                              "Bearer realm=\"custos-admin\"") == MHD_NO) ||
	    (allow != NULL && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) == MHD_NO)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	struct watch *w = watch_of(c);
	if (w) {
		atomic_store(&w->deadline, 0); /* answering: the inactivity timeout takes over */
		w->answered = true;            /* custos's answer: not libmicrohttpd's own */
	}
	return ret;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *ctype,
                               span body)
{
	return respond_allow(c, status, ctype, body, NULL);
}

static enum MHD_Result respond_buf(struct MHD_Connection *c, unsigned status, buf *b)
{
	enum MHD_Result r = respond(c, status, "application/json", buf_span(b));
	buf_free(b);
	return r;
}

/* {"error": msg}, with an Allow header when allow is not NULL */
static enum MHD_Result respond_error_allow(struct MHD_Connection *c, unsigned status,
                                           const char *msg, const char *allow)
{
	buf b;
	json_writer w;

	buf_init(&b, 8192);
	json_init(&w, &b);
	json_obj_begin(&w);
	json_kv_cstr(&w, "error", msg);
	json_obj_end(&w);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	enum MHD_Result r = respond_allow(c, status, "application/json", buf_span(&b), allow);
	buf_free(&b);
	return r;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
	return respond_error_allow(c, status, msg, NULL);
}

/* ---- audit of admin actions ---- */

/* The request's path as audited: the request-target w recorded (its query string as
 * audit.query says, docs/AUDIT.md "Query strings"), or path when there is none. */
static void admin_audit(struct admin_server *s, const struct watch *w, const char *principal,
                        const char *method, const char *path, unsigned status, const char *result)
{
	audit_event ev;
	char q[AUDIT_QUERY_ROOM(ADMIN_AUDIT_PATH_MAX)];
	span m = span_cstr(method), p = span_cstr(path);
	size_t mlen = m.len, plen = p.len;

	if (m.len > ADMIN_AUDIT_METHOD_MAX)
		m.len = ADMIN_AUDIT_METHOD_MAX;
	if (p.len > ADMIN_AUDIT_PATH_MAX)
		p.len = ADMIN_AUDIT_PATH_MAX;
	bool cut = p.len < plen;
	if (w != NULL && w->uri_bytes > 0) {
		span raw = { w->uri, strnlen(w->uri, ADMIN_AUDIT_PATH_MAX) };
		plen = w->uri_bytes;
		cut = raw.len < plen;
		p.ptr = q;
		p.len = audit_query_filter(raw, audit_writer_query(s->audit), q, sizeof(q));
	}
	audit_event_begin(&ev, "admin.request");
	audit_event_cstr(&ev, "principal", principal);
	audit_event_str(&ev, "method", m);
	if (m.len < mlen)
		audit_event_u64(&ev, "method_bytes", mlen); /* cut: how long it was */
	audit_event_str(&ev, "path", p);
	if (cut)
		audit_event_u64(&ev, "path_bytes", plen); /* the request-target as sent */
	audit_event_u64(&ev, "status", status);
	audit_event_cstr(&ev, "result", result);
	if (audit_event_end(&ev) != CUSTOS_OK) {
		log_error("admin: audit event too large for %.*s %.*s", (int)m.len, m.ptr,
		          (int)p.len, p.ptr);
		return;
	}
	if (s->audit == NULL) {
		span b = audit_event_body(&ev);
		log_info("audit: {%.*s}", (int)b.len, b.ptr);
	} else if (audit_submit(s->audit, &ev) != CUSTOS_OK) {
		log_error("admin: audit event for %.*s %.*s not recorded: %s", (int)m.len, m.ptr,
		          (int)p.len, p.ptr, err_msg());
	}
}

static const char *const listener_names[] = { "unix", "tcp" };

static void admin_audit_submit(struct admin_server *s, audit_event *ev, const char *what)
{
	if (s->audit == NULL) {
		span b = audit_event_body(ev);
		log_info("audit: {%.*s}", (int)b.len, b.ptr);
	} else if (audit_submit(s->audit, ev) != CUSTOS_OK) {
		log_error("admin: %s not recorded: %s", what, err_msg());
	}
}

#define SHED_REASON "connection slots full: closed while waiting for its request head"

/* One shed connection: it sent no complete request, so there is no method, path or status. */
static void admin_audit_shed_one(struct admin_server *s, const struct admin_listener *l,
                                 const char *who)
{
	audit_event ev;

	audit_event_begin(&ev, "admin.request");
	audit_event_cstr(&ev, "principal", who);
	audit_event_cstr(&ev, "listener", listener_names[l->kind]);
	audit_event_cstr(&ev, "result", "shed");
	audit_event_cstr(&ev, "reason", SHED_REASON);
	if (audit_event_end(&ev) != CUSTOS_OK) {
		log_error("admin: audit event too large for a shed connection");
		return;
	}
	admin_audit_submit(s, &ev, "audit event for a shed connection");
}

/* A failed TLS handshake on the admin TCP listener (admin.tls), as the proxy's listeners audit
 * theirs (tls.reject, proxy/emit.c), with listener "admin"; remote "*" and count > 1 for the
 * sum past the burst. */
static void admin_audit_tls_reject(struct admin_server *s, const char *remote, const char *why,
                                   uint64_t count)
{
	audit_event ev;

	audit_event_begin(&ev, "tls.reject");
	audit_event_cstr(&ev, "direction", "ingress");
	audit_event_cstr(&ev, "listener", "admin");
	audit_event_cstr(&ev, "remote", remote);
	audit_event_cstr(&ev, "decision", "deny");
	audit_event_str(&ev, "reason", span_cstr(why));
	audit_event_u64(&ev, "count", count);
	if (audit_event_end(&ev) != CUSTOS_OK) {
		log_error("admin: audit event too large for a failed TLS handshake");
		return;
	}
	admin_audit_submit(s, &ev, "audit event for a failed TLS handshake");
}

/* The summary of a listener's refusals past the burst: principal "*", `count` the number. */
static void admin_audit_refused_summary(struct admin_server *s, const struct admin_listener *l,
                                        enum refusal_kind k, uint64_t count)
{
	audit_event ev;

	log_warn("admin: %llu more %s on the %s listener in one second", (unsigned long long)count,
	         k == RK_SHED       ? "shed connection(s)"
	         : k == RK_TLS      ? "failed TLS handshake(s)"
	         : k == RK_HEAD     ? "request(s) refused by libmicrohttpd"
	         : k == RK_DEADLINE ? "connection(s) closed past their deadline"
	                            : "refused caller(s)",
	         listener_names[l->kind]);
	if (k == RK_TLS) {
		admin_audit_tls_reject(s, "*", "failed TLS handshakes past the rate bound", count);
		return;
	}
	audit_event_begin(&ev, "admin.request");
	audit_event_cstr(&ev, "principal", "*");
	audit_event_cstr(&ev, "listener", listener_names[l->kind]);
	if (k == RK_SHED) {
		audit_event_cstr(&ev, "result", "shed");
		audit_event_cstr(&ev, "reason", "shed connections past the rate bound");
	} else if (k == RK_HEAD) {
		audit_event_cstr(&ev, "result", "refused");
		audit_event_cstr(&ev, "reason",
		                 "requests refused by libmicrohttpd past the rate bound");
	} else if (k == RK_DEADLINE) {
		audit_event_cstr(&ev, "result", "timeout");
		audit_event_cstr(&ev, "reason",
		                 "incomplete request heads closed past the rate bound");
	} else {
		audit_event_u64(&ev, "status", l->kind == L_UNIX ? 403 : 401);
		audit_event_cstr(&ev, "result", "unauthenticated");
		audit_event_cstr(&ev, "reason", "refused callers past the rate bound");
	}
	audit_event_u64(&ev, "count", count);
	if (audit_event_end(&ev) != CUSTOS_OK) {
		log_error("admin: summary of %llu refused caller(s) not recorded: too large",
		          (unsigned long long)count);
		return;
	}
	if (s->audit == NULL) {
		span b = audit_event_body(&ev);
		log_info("audit: {%.*s}", (int)b.len, b.ptr);
	} else if (audit_submit(s->audit, &ev) != CUSTOS_OK) {
		log_error("admin: summary of %llu refused caller(s) not recorded: %s",
		          (unsigned long long)count, err_msg());
	}
}

/* admin_audit_conn_refusal's status for a request line libmicrohttpd closed the connection on
 * without an answer (conn_refusal): not an HTTP status. */
#define ADMIN_BAD_LINE 1u

/* What libmicrohttpd's own answers mean (transmit_error_response in its connection.c). */
static const char *mhd_refusal_reason(unsigned status)
{
	switch (status) {
	case 400:
		return "libmicrohttpd: malformed request";
	case 413:
		return "libmicrohttpd: request too large";
	case 414:
		return "libmicrohttpd: request line over the connection memory";
	case 431:
		return "libmicrohttpd: request head over the connection memory";
	case 505:
		return "libmicrohttpd: HTTP version not supported";
	default:
		return "libmicrohttpd: request refused";
	}
}

/* A request custos's access handler never answered: refused by libmicrohttpd itself (status,
 * its answer's) or closed past its deadline (status 0: no answer was sent). Its path is in
 * the event when its request line was read. */
static void admin_audit_conn_refusal_one(struct admin_server *s, const struct admin_listener *l,
                                         const struct watch *w, unsigned status)
{
	audit_event ev;
	char q[AUDIT_QUERY_ROOM(ADMIN_AUDIT_PATH_MAX)];
	char reason[96];

	audit_event_begin(&ev, "admin.request");
	audit_event_cstr(&ev, "principal", w->who);
	audit_event_cstr(&ev, "listener", listener_names[l->kind]);
	if (w->line_seen) {
		span raw = { w->uri, strnlen(w->uri, ADMIN_AUDIT_PATH_MAX) };
		span p = { q, audit_query_filter(raw, audit_writer_query(s->audit), q, sizeof(q)) };
		audit_event_str(&ev, "path", p);
		if (raw.len < w->uri_bytes)
			audit_event_u64(&ev, "path_bytes", w->uri_bytes);
	}
	if (status == ADMIN_BAD_LINE) { /* no answer was sent: no status */
		audit_event_cstr(&ev, "result", "refused");
		audit_event_cstr(&ev, "reason",
		                 "libmicrohttpd: malformed request line: closed without an answer");
	} else if (status) {
		audit_event_u64(&ev, "status", status);
		audit_event_cstr(&ev, "result", "refused");
		audit_event_cstr(&ev, "reason", mhd_refusal_reason(status));
	} else {
		snprintf(reason, sizeof(reason),
		         "request head not complete within %u s: closed without an answer",
		         s->timeout_s);
		audit_event_cstr(&ev, "result", "timeout");
		audit_event_cstr(&ev, "reason", reason);
	}
	if (audit_event_end(&ev) != CUSTOS_OK) {
		log_error("admin: audit event too large for a refused request");
		return;
	}
	admin_audit_submit(s, &ev, "audit event for a refused request");
}

/* Takes the listener's summed refusals once their window is over (force: now); 0: none. */
static uint64_t refused_take(struct admin_server *s, struct admin_listener *l, enum refusal_kind k,
                             uint64_t now, bool force)
{
	struct refusal_rate *r = &l->rate[k];
	uint64_t n = 0;

	pthread_mutex_lock(&l->refused_lock);
	if (r->suppressed && (force || now - r->window_ns >= s->refused_window_len)) {
		n = r->suppressed;
		r->suppressed = 0;
	}
	pthread_mutex_unlock(&l->refused_lock);
	return n;
}

static void refused_flush(struct admin_server *s, bool force)
{
	uint64_t now = tm_mono_ns();
	for (size_t i = 0; i < 2; i++)
		for (int k = RK_CALLER; k < RK_N; k++) {
			uint64_t n = refused_take(s, &s->l[i], (enum refusal_kind)k, now, force);
			if (n)
				admin_audit_refused_summary(s, &s->l[i], (enum refusal_kind)k, n);
		}
}

/* Counts one refusal of kind k; true when the listener's burst allows an event of its own.
 * *prev: the sum of the window before, to be written ahead of it (0: none). */
static bool refused_note(struct admin_server *s, struct admin_listener *l, enum refusal_kind k,
                         uint64_t *prev)
{
	struct refusal_rate *r = &l->rate[k];
	uint64_t now = tm_mono_ns();
	bool own = false;

	*prev = 0;
	pthread_mutex_lock(&l->refused_lock);
	if (r->window_ns == 0 || now - r->window_ns >= s->refused_window_len) {
		*prev = r->suppressed;
		r->suppressed = 0;
		r->window_ns = now;
		r->in_window = 0;
	}
	if (r->in_window < ADMIN_REFUSED_BURST) {
		r->in_window++;
		own = true;
	} else {
		r->suppressed++;
	}
	pthread_mutex_unlock(&l->refused_lock);
	return own;
}

/* A refused caller: its own event while the listener's burst allows, else counted. */
static void admin_audit_refused(struct admin_server *s, struct admin_listener *l,
                                const struct watch *w, const char *who, const char *method,
                                const char *url, unsigned status)
{
	uint64_t prev;
	bool own = refused_note(s, l, RK_CALLER, &prev);

	if (prev)
		admin_audit_refused_summary(s, l, RK_CALLER, prev);
	if (own)
		admin_audit(s, w, who, method, url, status, "unauthenticated");
}

/* An authenticated caller's request refused (bad framing, unknown path, no body...): answered
 * with status and msg, and audited (admin.request, result msg): bad input always leaves a
 * trace. Not rate-bounded: only a caller with the token or an allowed uid gets here. */
static enum MHD_Result admin_refuse(struct admin_server *s, struct MHD_Connection *c,
                                    const char *who, const char *method, const char *url,
                                    unsigned status, const char *msg)
{
	admin_audit(s, watch_of(c), who, method, url, status, msg);
	return respond_error(c, status, msg);
}

/* A shed connection: counted as a refusal, audited under its own burst. */
static void admin_audit_shed(struct admin_server *s, struct admin_listener *l, const char *who)
{
	uint64_t prev;
	bool own = refused_note(s, l, RK_SHED, &prev);

	metrics_inc(METRICS_ADMIN_DENIED);
	if (prev)
		admin_audit_refused_summary(s, l, RK_SHED, prev);
	if (own)
		admin_audit_shed_one(s, l, who);
}

/* A request custos never answered, refused by libmicrohttpd (status) or closed past its
 * deadline (status 0): counted as a refusal, audited under its kind's burst. */
static void admin_audit_conn_refusal(struct admin_server *s, struct admin_listener *l,
                                     const struct watch *w, unsigned status)
{
	enum refusal_kind k = status ? RK_HEAD : RK_DEADLINE;
	uint64_t prev;
	bool own = refused_note(s, l, k, &prev);

	metrics_inc(METRICS_ADMIN_DENIED);
	if (prev)
		admin_audit_refused_summary(s, l, k, prev);
	if (own)
		admin_audit_conn_refusal_one(s, l, w, status);
}

/* The TLS gate's reports (admin_tls.c), from its thread. */
static void gate_shed(void *arg, const char *who)
{
	struct admin_server *s = arg;
	admin_audit_shed(s, &s->l[L_TCP], who);
}

static void gate_rejected(void *arg, const char *remote, const char *why)
{
	struct admin_server *s = arg;
	struct admin_listener *l = &s->l[L_TCP];
	uint64_t prev;
	bool own = refused_note(s, l, RK_TLS, &prev);

	metrics_inc(METRICS_ADMIN_DENIED);
	if (prev)
		admin_audit_refused_summary(s, l, RK_TLS, prev);
	if (own)
		admin_audit_tls_reject(s, remote, why, 1);
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=N
 * makes the admin API's "second" for refused callers last N seconds, so that a test can put a
 * burst in one window whatever the speed of the machine (tests/integration/admin_api.sh). */
static uint64_t test_hook_admin_refused_window(void)
{
	const char *v = getenv("CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S");
	uint64_t n = 0;

	if (v == NULL)
		return NS_PER_S;
	if (num_parse_u64(span_cstr(v), 1, 86400, &n) != CUSTOS_OK) {
		log_error("admin: test hook: CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=%s: %s", v,
		          err_msg());
		return NS_PER_S;
	}
	log_warn("admin: test hook: the window for refused callers lasts %llu s",
	         (unsigned long long)n);
	return n * NS_PER_S;
}

/* CUSTOS_TEST_ADMIN_TIMEOUT_S=N: a request has N seconds to be read (and a connection may be
 * idle that long) instead of ADMIN_TIMEOUT_S, so that a test's flood of incomplete requests
 * holds its connections for longer than a client's own timeout whatever the machine's speed
 * (tests/integration/admin_slots_flood.sh). */
static unsigned test_hook_admin_timeout(unsigned dflt)
{
	const char *v = getenv("CUSTOS_TEST_ADMIN_TIMEOUT_S");
	uint64_t n = 0;

	if (v == NULL)
		return dflt;
	if (num_parse_u64(span_cstr(v), 1, 3600, &n) != CUSTOS_OK) {
		log_error("admin: test hook: CUSTOS_TEST_ADMIN_TIMEOUT_S=%s: %s", v, err_msg());
		return dflt;
	}
	log_warn("admin: test hook: requests must be read within %llu s", (unsigned long long)n);
	return (unsigned)n;
}
#endif

/* ---- caller checks ---- */

/* The peer uid on the Unix socket, checked against the allow-list. */
static bool unix_peer_ok(struct admin_server *s, struct MHD_Connection *c, char *who, size_t wsz)
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct ucred cred;
	socklen_t len = sizeof(cred);

	snprintf(who, wsz, "uid:unknown");
	if (ci == NULL || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1)
		return false;
	snprintf(who, wsz, "uid:%u", (unsigned)cred.uid);
	for (size_t i = 0; i < s->nuids; i++)
		if (s->uids[i] == cred.uid)
			return true;
	return false;
}

/* A TCP caller's address as text ("?" when libmicrohttpd has none). */
static void peer_host(struct MHD_Connection *c, char host[static INET6_ADDRSTRLEN])
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	host[0] = '?';
	host[1] = '\0';
	if (ci == NULL || ci->client_addr == NULL)
		return;
	const struct sockaddr *sa = ci->client_addr;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, host,
		          INET6_ADDRSTRLEN);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		          host, INET6_ADDRSTRLEN);
}

static bool tcp_token_ok(struct admin_server *s, struct MHD_Connection *c, char *who, size_t wsz)
{
	char host[INET6_ADDRSTRLEN];
	peer_host(c, host);
	snprintf(who, wsz, "tcp:%s", host);
	const char *h =
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	/* credentials = auth-scheme 1*SP token68; the scheme is case-insensitive (RFC 9110
	 * 11.1), the token is not (it is compared as a digest, in constant time). */
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	while (*h == ' ')
		h++;
	span tok = span_cstr(h);
	if (tok.len == 0 || tok.len > ADMIN_TOKEN_MAX)
		return false;
	uint8_t dig[32];
	SHA256((const unsigned char *)tok.ptr, tok.len, dig);
	bool ok = CRYPTO_memcmp(dig, s->token_sha256, 32) == 0;
	OPENSSL_cleanse(dig, sizeof(dig));
	if (ok)
		snprintf(who, wsz, "token@%s", host);
	return ok;
}

/* ---- request deadlines ---- */

static struct watch *watch_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

static void watch_set(struct admin_server *s, struct MHD_Connection *c, bool armed)
{
	struct watch *w = watch_of(c);
	if (w)
		atomic_store(&w->deadline,
		             armed ? tm_mono_ns() + (uint64_t)s->timeout_s * 1000000000ull : 0);
}

/* The peer as audited: "tcp:ADDR" on TCP, "uid:N" on the Unix socket. */
static void conn_who(const struct admin_listener *l, struct MHD_Connection *c, int fd, char *who,
                     size_t wsz)
{
	if (l->kind == L_UNIX) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1)
			snprintf(who, wsz, "uid:unknown");
		else
			snprintf(who, wsz, "uid:%u", (unsigned)cred.uid);
		return;
	}
	char host[INET6_ADDRSTRLEN];
	peer_host(c, host);
	snprintf(who, wsz, "tcp:%s", host);
}

/* Marks a connection as going away (watch_lock held): its slot is free from now on, as
 * libmicrohttpd closes it once it sees the shutdown. */
static void watch_close(struct watch *w)
{
	if (w->closing)
		return;
	w->closing = true;
	w->l->live--;
	atomic_store(&w->deadline, 0);
	shutdown(w->fd, SHUT_RDWR);
}

/* The listener has one live connection too many (watch_lock held): shuts down the one that has
 * waited longest for a request head, or, when every other one is being served, the newest
 * (the list's head, just added). Its peer goes to victim for the audit. */
static void shed_one(struct admin_listener *l, char *victim, size_t vsz)
{
	struct admin_server *s = l->srv;
	struct watch *oldest = NULL;
	uint64_t oldest_since = UINT64_MAX;

	for (struct watch *w = s->watches; w; w = w->next) {
		uint64_t since = atomic_load(&w->waiting);
		if (w->l != l || w->closing || since == 0)
			continue;
		if (since <= oldest_since) { /* <=: the list runs newest first */
			oldest = w;
			oldest_since = since;
		}
	}
	if (oldest == NULL)
		oldest = s->watches;
	snprintf(victim, vsz, "%s", oldest->who);
	oldest->shed = true;
	watch_close(oldest);
}

/* libmicrohttpd's own answers to a request it refuses before its request line is through
 * (505 for another HTTP version, 414 for a request line over the connection memory, 400 for a
 * malformed one) reach no callback that names the connection: only its log message says the
 * status ("Error processing request (HTTP response code is N ..."), from the connection's own
 * thread, which closes it after the answer and then notifies its close, from that thread too.
 * So the statuses are kept per thread in the order they are logged, and the close of a
 * connection whose request custos never saw takes the oldest of its listener's. A refusal
 * after the request line (431, 400 for a field line...) has its status in the completion
 * callback and takes its own entry out (on_completed). An entry no close took within the
 * idle timeout and a second (its connection is closed by then) is dropped, so that it cannot
 * be taken by a later connection that its client closes. */
#define MHD_REFUSED_RING ADMIN_MHD_CONNECTIONS /* a thread has no more connections */
static _Thread_local struct {
	const struct admin_listener *l;
	unsigned status;
	uint64_t at; /* CLOCK_MONOTONIC ns */
} mhd_refused[MHD_REFUSED_RING];
static _Thread_local unsigned mhd_refused_n;

static void mhd_refused_drop(unsigned i)
{
	memmove(&mhd_refused[i], &mhd_refused[i + 1],
	        (mhd_refused_n - i - 1) * sizeof(mhd_refused[0]));
	mhd_refused_n--;
}

/* Drops the entries older than their listener's idle timeout and a second. */
static void mhd_refused_expire(void)
{
	uint64_t now = tm_mono_ns();
	for (unsigned i = mhd_refused_n; i-- > 0;)
		if (now - mhd_refused[i].at >
		    ((uint64_t)mhd_refused[i].l->srv->timeout_s + 2) * NS_PER_S)
			mhd_refused_drop(i);
}

static void mhd_refused_push(const struct admin_listener *l, unsigned status)
{
	mhd_refused_expire();
	if (mhd_refused_n == MHD_REFUSED_RING) /* not reached: drop the oldest */
		mhd_refused_drop(0);
	mhd_refused[mhd_refused_n].l = l;
	mhd_refused[mhd_refused_n].status = status;
	mhd_refused[mhd_refused_n].at = tm_mono_ns();
	mhd_refused_n++;
}

/* Takes the newest entry of l with status (any status when status is 0, the oldest then);
 * returns its status, 0 when there is none. */
static unsigned mhd_refused_take(const struct admin_listener *l, unsigned status)
{
	mhd_refused_expire();
	for (unsigned k = 0; k < mhd_refused_n; k++) {
		unsigned i = status ? mhd_refused_n - 1 - k : k;
		if (mhd_refused[i].l != l || (status && mhd_refused[i].status != status))
			continue;
		unsigned st = mhd_refused[i].status;
		mhd_refused_drop(i);
		return st;
	}
	return 0;
}

/* What a TCP connection carried, from the kernel (TCP_INFO), at its close: data bytes sent
 * to the peer (libmicrohttpd's answer), data bytes received, and whether the connection was
 * closed from this side first (the peer's FIN not in yet). False for a socket without TCP (the
 * Unix listener, the TLS gate's socketpairs). */
/* tcpi_state values (the kernel's include/net/tcp_states.h; no user header has them beside
 * linux/tcp.h's struct tcp_info). */
enum {
	ST_FIN_WAIT1 = 4,
	ST_FIN_WAIT2 = 5,
	ST_TIME_WAIT = 6,
	ST_CLOSE = 7,
	ST_CLOSE_WAIT = 8,
	ST_LAST_ACK = 9,
	ST_CLOSING = 11
};
struct tcp_traffic {
	uint64_t sent, received;
	bool we_closed_first;
};
static bool tcp_traffic(int fd, struct tcp_traffic *t)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1 ||
	    len < offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof(ti.tcpi_bytes_sent))
		return false;
	/* tcpi_bytes_received counts the peer's FIN as a byte once it came in. */
	bool peer_fin = ti.tcpi_state == ST_CLOSE_WAIT || ti.tcpi_state == ST_LAST_ACK ||
	                ti.tcpi_state == ST_CLOSING || ti.tcpi_state == ST_TIME_WAIT ||
	                ti.tcpi_state == ST_CLOSE;
	t->sent = ti.tcpi_bytes_sent;
	t->received = ti.tcpi_bytes_received - (peer_fin && ti.tcpi_bytes_received > 0);
	t->we_closed_first = ti.tcpi_state == ST_FIN_WAIT1 || ti.tcpi_state == ST_FIN_WAIT2;
	return true;
}

/* A connection's close (its own thread): audits the request custos's access handler never
 * saw, if there is one: refused by libmicrohttpd (its status), or shut down by the watchdog
 * with its request head incomplete (a keep-alive connection idle since its last answer is
 * not one). A shed connection was audited when it was shed. On TCP the kernel says whether
 * libmicrohttpd answered at all: only a connection it answered takes a status logged on its
 * thread (a silent probe closing meanwhile on that thread cannot take another peer's 505),
 * and one it closed first without an answer after the client sent bytes is a request line it
 * could not parse (no space in it: libmicrohttpd logs nothing then). */
static void conn_refusal(struct admin_server *s, struct admin_listener *l, struct watch *w,
                         bool expired)
{
	unsigned status = w->mhd_status;
	struct tcp_traffic t;

	if (w->answered)
		return;
	if (status == 0 && !w->line_seen) {
		bool tcp = w->fd >= 0 && !l->gated && tcp_traffic(w->fd, &t);
		if (!tcp || t.sent > 0)
			status = mhd_refused_take(l, 0);
		else if (t.received > 0 && t.we_closed_first && !expired) {
			admin_audit_conn_refusal(s, l, w, ADMIN_BAD_LINE);
			return;
		}
	}
	if (status)
		admin_audit_conn_refusal(s, l, w, status);
	else if (expired && (!w->served || w->line_seen))
		admin_audit_conn_refusal(s, l, w, 0);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
	struct admin_listener *l = cls;
	struct admin_server *s = l->srv;
	struct watch *w = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci == NULL)
			return;
		w = xcalloc(1, sizeof(*w));
		w->fd = ci->connect_fd;
		w->l = l;
		conn_who(l, c, w->fd, w->who, sizeof(w->who));
		uint64_t now = tm_mono_ns();
		atomic_store(&w->deadline, now + (uint64_t)s->timeout_s * 1000000000ull);
		atomic_store(&w->waiting, now);
		char victim[sizeof(w->who)] = "";
		pthread_mutex_lock(&s->watch_lock);
		w->next = s->watches;
		if (s->watches)
			s->watches->prev = w;
		s->watches = w;
		l->live++;
		if (l->live > ADMIN_MAX_CONNECTIONS)
			shed_one(l, victim, sizeof(victim));
		pthread_mutex_unlock(&s->watch_lock);
		*socket_context = w;
		if (victim[0]) /* audited outside watch_lock: a submit may wait for the queue */
			admin_audit_shed(s, l, victim);
		return;
	}
	if (w == NULL)
		return;
	pthread_mutex_lock(&s->watch_lock);
	if (!w->closing)
		l->live--;
	if (w->prev)
		w->prev->next = w->next;
	else
		s->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	bool shed = w->shed, expired = w->expired;
	pthread_mutex_unlock(&s->watch_lock);
	/* Outside watch_lock: a submit may wait for the audit queue. */
	if (!shed)
		conn_refusal(s, l, w, expired);
	free(w);
	*socket_context = NULL;
}

static void *watchdog(void *arg)
{
	struct admin_server *s = arg;
	proc_name_self("custos-watchdog");

	pthread_mutex_lock(&s->watch_lock);
	while (!s->watch_stop) {
		uint64_t now = tm_mono_ns();
		for (struct watch *w = s->watches; w; w = w->next) {
			uint64_t d = atomic_load(&w->deadline);
			if (d && now > d) {
				log_info("admin: request not complete within %u s: connection "
				         "closed",
				         s->timeout_s);
				w->expired = true; /* audited when the connection is closed */
				watch_close(w);
			}
		}
		/* refused callers' sums, once their second is over (not under watch_lock: a
		 * submit may wait for the audit queue) */
		pthread_mutex_unlock(&s->watch_lock);
		refused_flush(s, false);
		pthread_mutex_lock(&s->watch_lock);
		if (s->watch_stop)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&s->watch_cond, &s->watch_lock, &ts);
	}
	pthread_mutex_unlock(&s->watch_lock);
	return NULL;
}

/* ---- routing ---- */

/* Matches method and path; returns the HTTP status to refuse with (0 when it is a route). On
 * 405, *allow is the path's methods, for the Allow header. */
static unsigned route_match(struct admin_server *s, const char *method, const char *url,
                            route_id *out, char *sbx_name, const char **allow)
{
	static const struct {
		const char *path;
		const char *method;
		route_id id;
	} fixed[] = {
		{ "/healthz", "GET", R_HEALTHZ },
		{ "/readyz", "GET", R_READYZ },
		{ "/metrics", "GET", R_METRICS },
		{ "/v1/policy", "GET", R_POLICY_GET },
		{ "/v1/policy", "POST", R_POLICY_RELOAD },
		{ "/v1/decide", "POST", R_DECIDE },
		{ "/v1/sandboxes", "GET", R_SANDBOXES },
		{ "/v1/audit/status", "GET", R_AUDIT_STATUS },
	};
	bool path_known = false;

	*allow = NULL;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(fixed); i++) {
		if (strcmp(url, fixed[i].path) != 0)
			continue;
		path_known = true;
		/* the only path with two methods */
		*allow = strcmp(url, "/v1/policy") == 0 ? "GET, POST" : fixed[i].method;
		if (strcmp(method, fixed[i].method) == 0) {
			*out = fixed[i].id;
			return 0;
		}
	}
	static const char pfx[] = "/v1/sandboxes/", sfx[] = "/restart";
	size_t ul = strlen(url);
	if (strncmp(url, pfx, sizeof(pfx) - 1) == 0 && ul > sizeof(pfx) - 1 + sizeof(sfx) - 1 &&
	    strcmp(url + ul - (sizeof(sfx) - 1), sfx) == 0) {
		span id = { url + sizeof(pfx) - 1, ul - (sizeof(pfx) - 1) - (sizeof(sfx) - 1) };
		if (strcmp(method, "POST") != 0) {
			*allow = "POST";
			return 405;
		}
		/* One of the sandboxes configured now (ep_restart looks it up again: a reload
		 * may remove it meanwhile). */
		size_t n;
		admin_sandbox_info *v = sandboxes_snapshot(s, &n);
		bool found = false;
		for (size_t i = 0; i < n && !found; i++)
			found = span_eq_cstr(id, v[i].name);
		free(v);
		if (!found)
			return 404;
		*out = R_SANDBOX_RESTART;
		/* id.len <= ADMIN_SANDBOX_NAME_MAX: it matched a name of that size at most */
		memcpy(sbx_name, id.ptr, id.len);
		sbx_name[id.len] = '\0';
		return 0;
	}
	return path_known ? 405 : 404;
}

/* How many Content-Length and Transfer-Encoding fields a request has (libmicrohttpd keeps
 * every one; its lookup gives the first). */
struct framing {
	unsigned n_cl, n_te;
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
	struct framing *f = cls;

	(void)kind;
	(void)value;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		f->n_cl++;
	else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
		f->n_te++;
	return MHD_YES;
}

/* The path as the client sent it: no route needs an escape, and libmicrohttpd's own decoding
 * would let "/v1/policy%00x" (cut at the NUL) and "/v1/%70olicy" reach a route and be
 * audited as another path. */
static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s);
}

/* Keeps the request-target as sent, query included, for the audit (struct watch). Returns
 * the request's initial context: none, as without this callback. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct watch *w = watch_of(c);

	(void)cls;
	if (w != NULL) {
		size_t n = strlen(uri);
		size_t keep = n > ADMIN_AUDIT_PATH_MAX ? ADMIN_AUDIT_PATH_MAX : n;
		memcpy(w->uri, uri, keep);
		w->uri[keep] = '\0';
		w->uri_bytes = n;
		w->line_seen = true;
	}
	return NULL;
}

static bool has_body_route(route_id r)
{
	return r == R_DECIDE;
}

/* Content type is application/json, parameters allowed. */
static bool is_json(const char *ct)
{
	static const char want[] = "application/json";
	if (ct == NULL || strncasecmp(ct, want, sizeof(want) - 1) != 0)
		return false;
	char next = ct[sizeof(want) - 1];
	return next == '\0' || next == ';' || next == ' ';
}

/* ---- endpoints ---- */

/* The state of admin_options.sandboxes[i], read from its handle in this process. */
static void sandbox_state(const struct admin_server *s, size_t i, admin_sandbox_state *st)
{
	const admin_sandbox *x = &s->sbx[i];

	memset(st, 0, sizeof(*st));
	st->kind = "process";
	st->pid = -1;
	if (x->sb == NULL)
		return;
	st->pid = sandbox_pid(x->sb);
	st->running = st->pid > 0;
	st->generation = sandbox_generation(x->sb);
	st->restarts = st->generation ? st->generation - 1 : 0;
	snprintf(st->profile_hash, sizeof(st->profile_hash), "%s", sandbox_profile_hash_of(x->sb));
	snprintf(st->cgroup, sizeof(st->cgroup), "%s", sandbox_cgroup_backend(x->sb));
}

/* The process sandboxes configured now, each with its state: from the sandboxes_get hook (a
 * reload adds and removes them; one call, so that the list and the states agree) or else
 * admin_options.sandboxes (entry i is sbx[i]). Owner: caller (free). */
static admin_sandbox_info *sandboxes_snapshot(const struct admin_server *s, size_t *n)
{
	admin_sandbox_info *v = xcalloc(ADMIN_MAX_SANDBOXES, sizeof(*v));

	if (s->hooks.sandboxes_get) {
		*n = s->hooks.sandboxes_get(s->hooks.arg, v, ADMIN_MAX_SANDBOXES);
		if (*n > ADMIN_MAX_SANDBOXES)
			*n = ADMIN_MAX_SANDBOXES;
		for (size_t i = 0; i < *n; i++) {
			v[i].name[ADMIN_SANDBOX_NAME_MAX] = '\0';
			if (v[i].st.kind == NULL)
				v[i].st.kind = "process";
		}
		return v;
	}
	for (size_t i = 0; i < s->nsbx; i++) {
		const admin_sandbox *x = &s->sbx[i];
		snprintf(v[i].name, sizeof(v[i].name), "%s", x->name);
		v[i].memory_bytes = x->memory_bytes;
		v[i].pids = x->pids;
		v[i].nofile = x->nofile;
		v[i].cpu_millis = x->cpu_millis;
		sandbox_state(s, i, &v[i].st);
	}
	*n = s->nsbx;
	return v;
}

/* The VM sandboxes from the hook (docs/VM.md); *n = 0 without one. Owner: caller (free). */
static admin_vm *vms_snapshot(struct admin_server *s, size_t *n)
{
	*n = 0;
	if (s->hooks.vms_get == NULL)
		return NULL;
	admin_vm *v = xcalloc(ADMIN_MAX_SANDBOXES, sizeof(*v));
	*n = s->hooks.vms_get(s->hooks.arg, v, ADMIN_MAX_SANDBOXES);
	if (*n > ADMIN_MAX_SANDBOXES)
		*n = ADMIN_MAX_SANDBOXES;
	return v;
}

static bool vms_routable(struct admin_server *s)
{
	size_t n;
	admin_vm *v = vms_snapshot(s, &n);
	bool ok = true;
	for (size_t i = 0; i < n; i++)
		ok = ok && v[i].routable;
	free(v);
	return ok;
}

static void json_taint(json_writer *w, int taint)
{
	json_key(w, "taint");
	if (taint >= 0)
		json_cstr(w, policy_class_name((policy_class)taint));
	else
		json_null(w); /* no egress listener for this sandbox */
}

/* One VM entry of GET /v1/sandboxes: the process entries' fields where they apply, and what
 * only a VM has under "vm". */
static void json_vm(json_writer *w, const admin_vm *x)
{
	char ts[TM_RFC3339_LEN];
	json_obj_begin(w);
	json_kv_cstr(w, "id", x->name);
	json_kv_cstr(w, "state", x->state);
	json_kv_cstr(w, "kind", "vm");
	json_kv_i64(w, "pid", x->qemu_pid);
	json_kv_u64(w, "restarts", x->restarts);
	json_kv_cstr(w, "started", x->started_wall_ns ? tm_rfc3339(x->started_wall_ns, ts) : NULL);
	json_kv_cstr(w, "profile_hash", x->profile_hash[0] ? x->profile_hash : NULL);
	json_taint(w, x->taint);
	json_key(w, "vm");
	json_obj_begin(w);
	json_kv_cstr(w, "domain", x->domain);
	json_kv_cstr(w, "uuid", x->uuid[0] ? x->uuid : NULL);
	json_kv_cstr(w, "channel", x->channel);
	json_key(w, "vsock_cid");
	if (x->vsock_cid)
		json_u64(w, x->vsock_cid);
	else
		json_null(w);
	json_kv_i64(w, "qemu_pid", x->qemu_pid);
	json_kv_cstr(w, "seccomp", x->seccomp);
	json_kv_bool(w, "routable", x->routable);
	json_obj_end(w);
	json_obj_end(w);
}

static enum MHD_Result ep_readyz(struct admin_server *s, struct MHD_Connection *c)
{
	buf b;
	json_writer w;
	policy *p = s->hooks.policy_get ? s->hooks.policy_get(s->hooks.arg) : NULL;
	bool pol = p != NULL, aud = true, sbx = true;

	policy_unref(p);
	if (s->audit) {
		audit_stats st;
		audit_writer_stats(s->audit, &st);
		aud = !st.writer_failing;
	}
	size_t n;
	admin_sandbox_info *v = sandboxes_snapshot(s, &n);
	for (size_t i = 0; i < n; i++)
		sbx = sbx && v[i].st.running;
	free(v);
	sbx = sbx && vms_routable(s);
	bool draining = s->hooks.stopping && s->hooks.stopping(s->hooks.arg);
	bool ready = pol && aud && sbx && !draining;
	buf_init(&b, 4096);
	json_init(&w, &b);
	json_obj_begin(&w);
	json_kv_bool(&w, "ready", ready);
	json_kv_bool(&w, "policy_loaded", pol);
	json_kv_bool(&w, "audit_writable", aud);
	json_kv_bool(&w, "sandboxes_ready", sbx);
	json_kv_bool(&w, "draining", draining);
	json_obj_end(&w);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	return respond_buf(c, ready ? 200 : 503, &b);
}

static custos_err render_metrics(struct admin_server *s, buf *b)
{
	GUARD(metrics_render(b));
	if (s->audit) {
		audit_stats st;
		audit_writer_stats(s->audit, &st);
		GUARD(metrics_render_gauge(b, "custos_audit_queue_depth",
		                           "Audit events waiting in the in-process queue.",
		                           (double)st.queued));
		GUARD(metrics_render_gauge(b, "custos_audit_durable_sequence",
		                           "Highest audit sequence number the writer made durable.",
		                           (double)st.durable_seq));
		GUARD(metrics_render_gauge(b, "custos_audit_writer_failing",
		                           "1 while the audit writer reports a failure.",
		                           st.writer_failing ? 1 : 0));
		GUARD(buf_printf(b,
		                 "# HELP custos_audit_events_total Audit events by outcome of the "
		                 "submit.\n# TYPE custos_audit_events_total counter\n"
		                 "custos_audit_events_total{result=\"accepted\"} %llu\n"
		                 "custos_audit_events_total{result=\"denied_full\"} %llu\n"
		                 "custos_audit_events_total{result=\"failed\"} %llu\n",
		                 (unsigned long long)st.submitted,
		                 (unsigned long long)st.denied_full,
		                 (unsigned long long)st.failed));
		GUARD(buf_append_cstr(b,
		                      "# HELP custos_audit_fsync_seconds fdatasync latency of the "
		                      "audit writer's group commits.\n# TYPE "
		                      "custos_audit_fsync_seconds histogram\n"));
		for (size_t i = 0; i < CUSTOS_ARRAY_LEN(st.fsync_buckets); i++)
			GUARD(buf_printf(b, "custos_audit_fsync_seconds_bucket{le=\"%g\"} %llu\n",
			                 (double)audit_fsync_bounds_ns[i] / 1e9,
			                 (unsigned long long)st.fsync_buckets[i]));
		GUARD(buf_printf(b,
		                 "custos_audit_fsync_seconds_bucket{le=\"+Inf\"} %llu\n"
		                 "custos_audit_fsync_seconds_sum %.9f\n"
		                 "custos_audit_fsync_seconds_count %llu\n",
		                 (unsigned long long)st.fsyncs, (double)st.fsync_ns / 1e9,
		                 (unsigned long long)st.fsyncs));
		GUARD(buf_append_cstr(b,
		                      "# HELP custos_audit_sink_lag_events Durable audit events a "
		                      "sink has not delivered yet.\n# TYPE "
		                      "custos_audit_sink_lag_events gauge\n"));
		for (size_t i = 0; audit_sink_name(s->audit, i) != NULL; i++) {
			uint64_t lag;
			if (audit_sink_lag(s->audit, i, &lag) != CUSTOS_OK)
				continue; /* an unreadable cursor: no sample rather than a wrong one */
			/* sink ids are config ids ([A-Za-z0-9._:-]): nothing to escape in a label */
			GUARD(buf_printf(b, "custos_audit_sink_lag_events{sink=\"%s\"} %llu\n",
			                 audit_sink_name(s->audit, i), (unsigned long long)lag));
		}
		/* The families are always there (as the sinks' lag), their samples with sinks. */
		audit_shipper_status ss;
		audit_shipper_status_get(s->audit, &ss);
		GUARD(buf_append_cstr(b, "# HELP custos_audit_shipper_up 1 while the SIEM shipper "
		                         "runs.\n# TYPE custos_audit_shipper_up gauge\n"));
		if (ss.configured)
			GUARD(buf_printf(b, "custos_audit_shipper_up %d\n", ss.running ? 1 : 0));
		GUARD(buf_append_cstr(b,
		                      "# HELP custos_audit_shipper_restarts_total Restarts of the "
		                      "SIEM shipper after it ended unasked.\n"
		                      "# TYPE custos_audit_shipper_restarts_total counter\n"));
		if (ss.configured)
			GUARD(buf_printf(b, "custos_audit_shipper_restarts_total %llu\n",
			                 (unsigned long long)ss.restarts));
		GUARD(buf_append_cstr(b, "# HELP custos_audit_shipper_crash_loop 1 while the SIEM "
		                         "shipper keeps ending or failing to start.\n"
		                         "# TYPE custos_audit_shipper_crash_loop gauge\n"));
		if (ss.configured)
			GUARD(buf_printf(b, "custos_audit_shipper_crash_loop %d\n",
			                 ss.crash_loop ? 1 : 0));
	}
	GUARD(buf_append_cstr(b, "# HELP custos_sandbox_up 1 while the sandbox's instance runs.\n"
	                         "# TYPE custos_sandbox_up gauge\n"));
	/* The sandboxes configured now: a removed one's series ends (no sample, as a target that
	 * is gone); names are config ids ([A-Za-z0-9._-]), nothing to escape. */
	size_t n;
	admin_sandbox_info *v = sandboxes_snapshot(s, &n);
	custos_err e = CUSTOS_OK;
	for (size_t i = 0; i < n && e == CUSTOS_OK; i++)
		e = buf_printf(b, "custos_sandbox_up{sandbox=\"%s\"} %d\n", v[i].name,
		               v[i].st.running ? 1 : 0);
	free(v);
	return e;
}

static enum MHD_Result ep_metrics(struct admin_server *s, struct MHD_Connection *c)
{
	buf b;

	buf_init(&b, ADMIN_RESPONSE_MAX);
	if (render_metrics(s, &b) != CUSTOS_OK) {
		buf_free(&b);
		return respond_error(c, 500, err_msg());
	}
	enum MHD_Result r =
	        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf_span(&b));
	buf_free(&b);
	return r;
}

static void policy_facts(json_writer *w, const policy *p)
{
	json_kv_bool(w, "loaded", p != NULL);
	if (p == NULL)
		return;
	json_kv_cstr(w, "hash", policy_hash_hex(p));
	json_kv_cstr(w, "source", policy_name(p));
	json_kv_cstr(w, "mode", policy_get_mode(p) == POLICY_SHADOW ? "shadow" : "enforce");
	json_kv_u64(w, "rules", policy_rule_count(p));
}

static void diags_json(json_writer *w, const diag_list *d)
{
	json_key(w, "errors");
	json_arr_begin(w);
	for (size_t i = 0; i < d->n; i++) {
		const diag_item *it = &d->items[i];
		json_obj_begin(w);
		json_kv_cstr(w, "severity", it->severity == DIAG_ERROR ? "error" : "warning");
		json_kv_cstr(w, "file", it->file);
		json_kv_u64(w, "line", it->line);
		json_kv_u64(w, "col", it->col);
		json_kv_cstr(w, "message", it->message);
		if (it->hint)
			json_kv_cstr(w, "hint", it->hint);
		json_obj_end(w);
	}
	json_arr_end(w);
}

static enum MHD_Result ep_policy(struct admin_server *s, struct MHD_Connection *c, struct req *rq,
                                 bool reload)
{
	buf b;
	json_writer w;
	diag_list d;
	unsigned status = 200;
	custos_err e = CUSTOS_OK;

	diag_init(&d);
	char old_hash[65] = "", new_hash[65] = "", reason[1024] = "";
	if (reload) {
		if (s->hooks.policy_reload == NULL) {
			policy *old =
			        s->hooks.policy_get ? s->hooks.policy_get(s->hooks.arg) : NULL;
			snprintf(old_hash, sizeof(old_hash), "%s", old ? policy_hash_hex(old) : "");
			snprintf(new_hash, sizeof(new_hash), "%s", old_hash);
			policy_unref(old);
			e = err_set(CUSTOS_ERR_UNSUPPORTED, "no reload source configured");
		} else {
			pthread_mutex_lock(&s->reload_lock);
			e = s->hooks.policy_reload(s->hooks.arg, &d, old_hash, new_hash);
			pthread_mutex_unlock(&s->reload_lock);
		}
		metrics_inc(e == CUSTOS_OK ? METRICS_POLICY_RELOAD_OK
		                           : METRICS_POLICY_RELOAD_FAILED);
		/* 503: custos is stopping (draining), the reload was not tried; 422: refused. */
		status = e == CUSTOS_OK ? 200 : e == CUSTOS_ERR_CLOSED ? 503 : 422;
		if (e != CUSTOS_OK)
			snprintf(reason, sizeof(reason), "%s", err_msg());
	}
	policy *p = s->hooks.policy_get ? s->hooks.policy_get(s->hooks.arg) : NULL;
	if (reload)
		emit_policy_reload(s->audit, &(emit_reload){ .trigger = "admin",
		                                             .principal = rq->principal,
		                                             .applied = e == CUSTOS_OK,
		                                             .reason = reason,
		                                             .old_hash = old_hash,
		                                             .new_hash = new_hash });
	buf_init(&b, ADMIN_RESPONSE_MAX);
	json_init(&w, &b);
	json_obj_begin(&w);
	if (reload) {
		json_kv_bool(&w, "reloaded", e == CUSTOS_OK);
		if (e != CUSTOS_OK) {
			json_kv_cstr(&w, "error", reason);
			diags_json(&w, &d);
		}
	}
	json_key(&w, "policy");
	json_obj_begin(&w);
	policy_facts(&w, p);
	json_obj_end(&w);
	json_obj_end(&w);
	policy_unref(p);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	if (reload)
		admin_audit(s, watch_of(c), rq->principal, "POST", "/v1/policy", status,
		            e == CUSTOS_OK ? "reloaded" : "refused");
	diag_free(&d);
	return respond_buf(c, status, &b);
}

static enum MHD_Result ep_decide(struct admin_server *s, struct MHD_Connection *c, struct req *rq)
{
	buf b;
	json_writer w;
	diag_list d;
	policy_request req;
	policy_request_doc *keep = NULL;
	policy_decision dec;

	metrics_inc(METRICS_DECIDE);
	if (buf_used(&rq->body) == 0) /* a chunked body of only its last chunk */
		return admin_refuse(s, c, rq->principal, "POST", "/v1/decide", 400,
		                    "empty request");
	policy *p = s->hooks.policy_get ? s->hooks.policy_get(s->hooks.arg) : NULL;
	if (p == NULL)
		return admin_refuse(s, c, rq->principal, "POST", "/v1/decide", 503,
		                    "no policy loaded");
	diag_init(&d);
	buf_init(&b, ADMIN_RESPONSE_MAX);
	json_init(&w, &b);
	json_obj_begin(&w);
	span body = buf_span(&rq->body);
	/* strict JSON, as the Content-Type says: libyaml took non-JSON and refused long keys */
	custos_err e = policy_request_parse_json(p, body.ptr, body.len, &req, &keep, &d);
	/* a malformed `url` is an error of the request parser (policy_url_split), named */
	unsigned status = 200;
	if (e != CUSTOS_OK) {
		status = 400;
		json_kv_cstr(&w, "error", "the request context has errors");
		diags_json(&w, &d);
		admin_audit(s, watch_of(c), rq->principal, "POST", "/v1/decide", status,
		            "the request context has errors");
	} else {
		policy_evaluate(p, &req, &dec);
		metrics_inc(METRICS_POLICY_EVALS);
		json_key(&w, "result");
		json_obj_begin(&w);
		json_kv_bool(&w, "allow", dec.effect == POLICY_ALLOW);
		json_kv_bool(&w, "verdict_allow", dec.verdict == POLICY_ALLOW);
		json_kv_bool(&w, "shadow", dec.shadow);
		json_kv_bool(&w, "default_deny", dec.default_deny);
		json_kv_cstr(&w, "reason", dec.reason);
		json_key(&w, "rules");
		json_arr_begin(&w);
		for (size_t i = 0; i < dec.n_rules; i++)
			json_cstr(&w, dec.rules[i]);
		json_arr_end(&w);
		json_kv_cstr(&w, "audit", policy_audit_level_name(dec.audit));
		json_key(&w, "limits");
		json_obj_begin(&w);
		json_kv_u64(&w, "requests", dec.limits.requests);
		json_kv_u64(&w, "requests_window_ns", dec.limits.requests_window_ns);
		json_kv_u64(&w, "tokens", dec.limits.tokens);
		json_kv_u64(&w, "tokens_window_ns", dec.limits.tokens_window_ns);
		json_kv_u64(&w, "max_body_bytes", dec.limits.max_body_bytes);
		json_kv_u64(&w, "max_tokens", dec.limits.max_tokens);
		json_obj_end(&w);
		json_obj_end(&w);
	}
	json_kv_cstr(&w, "policy_hash", policy_hash_hex(p));
	json_obj_end(&w);
	policy_request_doc_free(keep);
	policy_unref(p);
	diag_free(&d);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	return respond_buf(c, status, &b);
}

static enum MHD_Result ep_sandboxes(struct admin_server *s, struct MHD_Connection *c)
{
	buf b;
	json_writer w;

	buf_init(&b, ADMIN_RESPONSE_MAX);
	json_init(&w, &b);
	json_obj_begin(&w);
	json_key(&w, "sandboxes");
	json_arr_begin(&w);
	size_t n;
	admin_sandbox_info *v = sandboxes_snapshot(s, &n);
	for (size_t i = 0; i < n; i++) {
		const admin_sandbox_info *x = &v[i];
		const admin_sandbox_state st = x->st;
		json_obj_begin(&w);
		json_kv_cstr(&w, "id", x->name);
		json_kv_cstr(&w, "state", st.running ? "running" : "restarting");
		json_kv_cstr(&w, "kind", st.kind);
		json_kv_i64(&w, "pid", st.pid);
		json_kv_u64(&w, "generation", st.generation);
		json_kv_u64(&w, "restarts", st.restarts);
		json_kv_cstr(&w, "profile_hash", st.profile_hash[0] ? st.profile_hash : NULL);
		json_kv_cstr(&w, "cgroup", st.cgroup[0] ? st.cgroup : NULL);
		json_key(&w, "limits");
		json_obj_begin(&w);
		json_kv_u64(&w, "memory_bytes", x->memory_bytes);
		json_kv_u64(&w, "pids", x->pids);
		json_kv_u64(&w, "cpu_millis", x->cpu_millis);
		json_kv_u64(&w, "nofile", x->nofile);
		json_obj_end(&w);
		json_taint(&w, s->hooks.taint_get ? s->hooks.taint_get(s->hooks.arg, x->name) : -1);
		json_obj_end(&w);
	}
	free(v);
	size_t nvm;
	admin_vm *vms = vms_snapshot(s, &nvm);
	for (size_t i = 0; i < nvm; i++)
		json_vm(&w, &vms[i]);
	free(vms);
	json_arr_end(&w);
	json_obj_end(&w);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	return respond_buf(c, 200, &b);
}

/* SIGKILL to the instance's init through a pidfd, checked to still be the sandbox's current
 * instance after it was opened (a recycled pid is never signalled). -1 with errno. */
static int kill_instance(sandbox *sb, pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd == -1 && errno != ENOSYS)
		return -1;
	if (fd == -1)
		return kill(pid, SIGKILL); /* kernel before 5.3 */
	int r = 0;
	if (sandbox_pid(sb) != pid) {
		errno = ESRCH;
		r = -1;
	} else {
		r = (int)syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
	}
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

/* Restart = end the current instance; the supervisor starts the next one (its restart policy
 * in `custos up` is "always"). */
static enum MHD_Result ep_restart(struct admin_server *s, struct MHD_Connection *c, struct req *rq)
{
	char path[128];
	unsigned status = 202;
	const char *result = "restarting";
	pid_t pid = -1;
	size_t n, k;

	/* Looked up again: a reload may have removed it since the request was routed. */
	admin_sandbox_info *v = sandboxes_snapshot(s, &n);
	for (k = 0; k < n && strcmp(v[k].name, rq->sandbox) != 0; k++)
		;
	if (k < n && v[k].st.running)
		pid = (pid_t)v[k].st.pid;
	free(v);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/restart", rq->sandbox);
	if (k == n) {
		status = 404;
		result = "no such sandbox (removed by a reload)";
	} else if (pid <= 0) {
		status = 409;
		result = "no running instance";
	} else if (s->hooks.sandboxes_get) { /* the supervisor ends it */
		int r = s->hooks.sandbox_restart
		                ? s->hooks.sandbox_restart(s->hooks.arg, rq->sandbox, pid)
		                : ENOTSUP;
		if (r != 0) {
			status = r == ESRCH ? 409 : r == ENOENT ? 404 : 500;
			result = r == ESRCH    ? "the instance ended meanwhile"
			         : r == ENOENT ? "no such sandbox (removed by a reload)"
			                       : strerror(r);
		}
	} else if (kill_instance(s->sbx[k].sb, pid) == -1) {
		status = errno == ESRCH ? 409 : 500;
		result = errno == ESRCH ? "the instance ended meanwhile" : strerror(errno);
	}
	admin_audit(s, watch_of(c), rq->principal, "POST", path, status, result);
	if (status != 202)
		return respond_error(c, status, result);
	buf b;
	json_writer w;
	buf_init(&b, 4096);
	json_init(&w, &b);
	json_obj_begin(&w);
	json_kv_cstr(&w, "id", rq->sandbox);
	json_kv_cstr(&w, "result", result);
	json_kv_i64(&w, "killed_pid", pid);
	json_obj_end(&w);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	return respond_buf(c, 202, &b);
}

/* The string value of "key":"..." in line (no escapes expected: hex, ids), or empty. */
static span json_field(span line, const char *key)
{
	char pat[64];
	int n = snprintf(pat, sizeof(pat), "\"%s\":", key);
	for (size_t i = 0; n > 0 && i + (size_t)n < line.len; i++) {
		if (memcmp(line.ptr + i, pat, (size_t)n) != 0)
			continue;
		size_t b = i + (size_t)n, e;
		if (line.ptr[b] == '"') {
			b++;
			for (e = b; e < line.len && line.ptr[e] != '"'; e++)
				;
		} else {
			for (e = b; e < line.len && line.ptr[e] >= '0' && line.ptr[e] <= '9'; e++)
				;
		}
		return (span){ line.ptr + b, e - b };
	}
	return (span){ NULL, 0 };
}

/* Chain head (last complete record) and the last checkpoint, read from the tail of the newest
 * log file (at most ADMIN_AUDIT_TAIL bytes; read-only, the writer process owns the files). */
static void audit_tail(struct admin_server *s, json_writer *w)
{
	char **files = NULL;
	size_t nfiles = 0;
	buf b;

	if (s->audit_dir == NULL || audit_list_files(s->audit_dir, &files, &nfiles) != CUSTOS_OK ||
	    nfiles == 0) {
		audit_paths_free(files, nfiles);
		/* no trail (audit off, or nothing written yet): the keys are there all the same */
		json_key(w, "file");
		json_null(w);
		json_key(w, "head");
		json_null(w);
		json_key(w, "last_checkpoint");
		json_null(w);
		return;
	}
	const char *path = files[nfiles - 1];
	buf_init(&b, ADMIN_AUDIT_TAIL);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd != -1 && fstat(fd, &st) == 0 && buf_reserve(&b, ADMIN_AUDIT_TAIL) == CUSTOS_OK) {
		off_t from =
		        st.st_size > (off_t)ADMIN_AUDIT_TAIL ? st.st_size - ADMIN_AUDIT_TAIL : 0;
		ssize_t r;
		do
			r = pread(fd, buf_tail(&b), (size_t)(st.st_size - from), from);
		while (r == -1 && errno == EINTR);
		if (r > 0)
			buf_commit(&b, (size_t)r);
	}
	if (fd != -1)
		close(fd);
	json_kv_cstr(w, "file", path);
	span all = buf_span(&b);
	size_t end = all.len;
	while (end > 0 && all.ptr[end - 1] != '\n') /* a torn last record is not the head */
		end--;
	bool head_done = false, ckpt_done = false;
	while (end > 0 && !(head_done && ckpt_done)) {
		size_t start = end - 1;
		while (start > 0 && all.ptr[start - 1] != '\n')
			start--;
		span line = { all.ptr + start, end - 1 - start };
		if (start == 0 && all.len == ADMIN_AUDIT_TAIL)
			break; /* may be cut at the front */
		if (!head_done) {
			json_key(w, "head");
			json_obj_begin(w);
			json_kv_str(w, "seq", json_field(line, "seq"));
			/* the record's own hash closes the line: ..."hash":"<64 hex>"} */
			span h = { NULL, 0 };
			if (line.len > AUDIT_HASH_HEX + 2)
				h = (span){ line.ptr + line.len - AUDIT_HASH_HEX - 2,
					    AUDIT_HASH_HEX };
			json_kv_str(w, "hash", h);
			json_obj_end(w);
			head_done = true;
		}
		if (!ckpt_done && span_eq_cstr(json_field(line, "type"), "checkpoint")) {
			json_key(w, "last_checkpoint");
			json_obj_begin(w);
			json_kv_str(w, "seq", json_field(line, "seq"));
			json_kv_str(w, "reason", json_field(line, "reason"));
			json_kv_str(w, "signed_seq", json_field(line, "signed_seq"));
			json_kv_str(w, "signed_hash", json_field(line, "signed_hash"));
			json_kv_bool(w, "signed", json_field(line, "sig").len > 0);
			json_obj_end(w);
			ckpt_done = true;
		}
		end = start;
	}
	if (!head_done) { /* no complete record in the newest file yet */
		json_key(w, "head");
		json_null(w);
	}
	if (!ckpt_done) {
		json_key(w, "last_checkpoint");
		json_null(w); /* none in the newest file's tail */
	}
	buf_free(&b);
	audit_paths_free(files, nfiles);
}

static enum MHD_Result ep_audit_status(struct admin_server *s, struct MHD_Connection *c)
{
	buf b;
	json_writer w;

	buf_init(&b, 65536);
	json_init(&w, &b);
	json_obj_begin(&w);
	json_kv_bool(&w, "enabled", s->audit != NULL);
	if (s->audit) {
		audit_stats st;
		audit_writer_stats(s->audit, &st);
		json_kv_u64(&w, "durable_seq", st.durable_seq);
		json_kv_u64(&w, "submitted", st.submitted);
		json_kv_u64(&w, "denied_full", st.denied_full);
		json_kv_u64(&w, "failed", st.failed);
		json_kv_u64(&w, "queued", st.queued);
		json_kv_bool(&w, "writer_failing", st.writer_failing);
		json_kv_bool(&w, "shipper_running", audit_shipper_running(s->audit));
		audit_shipper_status ss;
		audit_shipper_status_get(s->audit, &ss);
		json_key(&w, "shipper");
		if (!ss.configured) {
			json_null(&w);
		} else {
			json_obj_begin(&w);
			json_kv_cstr(&w, "state",
			             ss.running      ? "running"
			             : ss.supervised ? "restarting"
			                             : "stopped");
			json_key(&w, "pid");
			if (ss.running)
				json_u64(&w, (uint64_t)ss.pid);
			else
				json_null(&w);
			json_kv_u64(&w, "restarts", ss.restarts);
			json_kv_u64(&w, "failures_in_a_row", ss.failures);
			json_kv_bool(&w, "crash_loop", ss.crash_loop);
			json_key(&w, "last_exit");
			if (ss.last_exit[0] != '\0')
				json_cstr(&w, ss.last_exit);
			else
				json_null(&w);
			json_key(&w, "last_error");
			if (ss.last_error[0] != '\0')
				json_cstr(&w, ss.last_error);
			else
				json_null(&w);
			json_obj_end(&w);
		}
		json_key(&w, "sinks");
		json_arr_begin(&w);
		for (size_t i = 0; audit_sink_name(s->audit, i) != NULL; i++) {
			uint64_t cur = 0, head = 0;
			custos_err pe = audit_sink_position(s->audit, i, &cur, &head);
			json_obj_begin(&w);
			json_kv_u64(&w, "index", i);
			json_kv_cstr(&w, "id", audit_sink_name(s->audit, i));
			if (pe == CUSTOS_OK) {
				json_kv_u64(&w, "cursor", cur);
				json_kv_u64(&w, "lag_events", head > cur ? head - cur : 0);
			} else {
				json_kv_cstr(&w, "error", err_msg());
			}
			json_obj_end(&w);
		}
		json_arr_end(&w);
	}
	audit_tail(s, &w);
	json_obj_end(&w);
	if (json_finish(&w) != CUSTOS_OK || buf_append_cstr(&b, "\n") != CUSTOS_OK)
		buf_reset(&b);
	return respond_buf(c, 200, &b);
}

static enum MHD_Result dispatch(struct admin_server *s, struct MHD_Connection *c, struct req *rq)
{
	switch (rq->route) {
	case R_HEALTHZ:
		return respond(c, 200, "application/json", SPAN_LIT("{\"status\":\"ok\"}\n"));
	case R_READYZ:
		return ep_readyz(s, c);
	case R_METRICS:
		return ep_metrics(s, c);
	case R_POLICY_GET:
		return ep_policy(s, c, rq, false);
	case R_POLICY_RELOAD:
		return ep_policy(s, c, rq, true);
	case R_DECIDE:
		return ep_decide(s, c, rq);
	case R_SANDBOXES:
		return ep_sandboxes(s, c);
	case R_SANDBOX_RESTART:
		return ep_restart(s, c, rq);
	case R_AUDIT_STATUS:
		return ep_audit_status(s, c);
	}
	return respond_error(c, 500, "unknown route");
}

/* ---- libmicrohttpd callbacks ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct admin_listener *l = cls;
	struct admin_server *s = l->srv;
	struct req *rq = *con_cls;

	(void)version;
	if (rq == NULL) {
		/* First call: only headers are known. Refuse without allocating. */
		char who[48];
		struct watch *w = watch_of(c);
		if (w)
			atomic_store(&w->waiting, 0); /* a head is in: not one to shed */
		route_id route = R_HEALTHZ;
		char sbx_name[ADMIN_SANDBOX_NAME_MAX + 1] = "";
		metrics_inc(METRICS_ADMIN_REQUESTS);
		bool ok = l->kind == L_UNIX ? unix_peer_ok(s, c, who, sizeof(who))
		                            : tcp_token_ok(s, c, who, sizeof(who));
		if (!ok) {
			unsigned st = l->kind == L_UNIX ? 403 : 401;
			metrics_inc(METRICS_ADMIN_DENIED);
			admin_audit_refused(s, l, w, who, method, url, st);
			return respond_error(c, st,
			                     st == 403 ? "caller uid not allowed"
			                               : "a valid bearer token is required");
		}
		const char *allow;
		unsigned st = route_match(s, method, url, &route, sbx_name, &allow);
		if (st == 405) {
			admin_audit(s, w, who, method, url, st, "method not allowed");
			return respond_error_allow(c, st, "method not allowed", allow);
		}
		if (st)
			return admin_refuse(s, c, who, method, url, st, "not found");
		/* One framing or none (RFC 9112 6.3): libmicrohttpd would take the first of two
		 * Content-Lengths, or chunked over a Content-Length, and keep the connection. */
		struct framing fr = { 0, 0 };
		MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &fr);
		if (fr.n_cl > 1 || fr.n_te > 1 || (fr.n_cl && fr.n_te))
			return admin_refuse(s, c, who, method, url, 400,
			                    "one Content-Length or one Transfer-Encoding, not both "
			                    "or several");
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
		                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
		const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
		                                             MHD_HTTP_HEADER_TRANSFER_ENCODING);
		uint64_t len = 0;
		if (cl && num_parse_u64(span_cstr(cl), 0, UINT64_MAX, &len) != CUSTOS_OK)
			return admin_refuse(s, c, who, method, url, 400, "bad Content-Length");
		if (has_body_route(route)) {
			if (!is_json(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
			                                         MHD_HTTP_HEADER_CONTENT_TYPE)))
				return admin_refuse(s, c, who, method, url, 415,
				                    "Content-Type must be application/json");
			if (te != NULL && strcasecmp(te, "chunked") != 0)
				return admin_refuse(s, c, who, method, url, 501,
				                    "Transfer-Encoding other than chunked");
			if (len > s->max_body)
				return admin_refuse(s, c, who, method, url, 413,
				                    "request body too large");
			if (cl == NULL && te == NULL)
				return admin_refuse(s, c, who, method, url, 411,
				                    "a request body is required");
			if (cl != NULL && te == NULL && len == 0)
				return admin_refuse(s, c, who, method, url, 400, "empty request");
		} else if (len > 0 || te != NULL) {
			return admin_refuse(s, c, who, method, url, 413,
			                    "this endpoint takes no request body");
		}
		rq = xcalloc(1, sizeof(*rq));
		rq->route = route;
		memcpy(rq->sandbox, sbx_name, sizeof(rq->sandbox));
		snprintf(rq->principal, sizeof(rq->principal), "%s", who);
		buf_init(&rq->body, s->max_body);
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!rq->too_big &&
		    buf_append(&rq->body, upload_data, *upload_data_size) != CUSTOS_OK) {
			rq->too_big = true; /* keep reading (and dropping) to answer cleanly */
			buf_free(&rq->body);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	/* Read completely: the deadline is for reading, not for the answer (a reload may wait
	 * for another one); a dead client's write fails, and the inactivity timeout goes on. */
	watch_set(s, c, false);
	if (rq->too_big)
		return admin_refuse(s, c, rq->principal, method, url, 413,
		                    "request body too large");
	return dispatch(s, c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct admin_listener *l = cls;
	struct req *rq = *con_cls;

	(void)toe;
	watch_set(l->srv, c, true); /* next request on keep-alive */
	struct watch *w = watch_of(c);
	if (w) {
		atomic_store(&w->waiting, tm_mono_ns()); /* waits for its next head */
		if (w->answered) { /* custos answered it: the next request starts afresh */
			w->served = true;
			w->answered = false;
			w->line_seen = false;
		} else if (w->mhd_status == 0) {
			/* Not answered by custos: libmicrohttpd's own answer (it closes the
			 * connection after it), or none (the connection is going). Audited at
			 * its close (conn_refusal). */
			const union MHD_ConnectionInfo *ci =
			        MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
			if (ci != NULL && ci->http_status != 0) {
				w->mhd_status = ci->http_status;
				(void)mhd_refused_take(l, w->mhd_status); /* its log's entry */
			}
		}
	}
	if (rq == NULL)
		return;
	buf_free(&rq->body);
	free(rq);
	*con_cls = NULL;
}

/* What libmicrohttpd says about TCP socket options it tries on each answer: on the TLS gate's
 * connections (AF_UNIX socketpairs, handed over with the client's TCP address) there is no TCP,
 * setsockopt fails with EOPNOTSUPP and the answer is in the pair at once, so these three lines
 * per answer say nothing. Matched on the whole message's start, nothing else. */
static bool mhd_tcp_noise(const char *msg)
{
	static const char *const noise[] = {
		"Setting TCP_NODELAY option to ",
		"Setting TCP_CORK option to ",
		"Failed to push the data from buffers to the network.",
	};
	for (size_t i = 0; i < sizeof(noise) / sizeof(noise[0]); i++)
		if (strncmp(msg, noise[i], strlen(noise[i])) == 0)
			return true;
	return false;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) CUSTOS_PRINTF(2, 0);
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct admin_listener *l = cls;
	char tmp[512];

	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	size_t n = strlen(tmp);
	while (n && tmp[n - 1] == '\n')
		tmp[--n] = '\0';
	if (l && l->gated && mhd_tcp_noise(tmp)) {
		if (!atomic_exchange(&l->tcp_noise_noted, true))
			log_debug("admin: libmicrohttpd: its TCP socket-option messages on the TLS "
			          "gate's socketpairs are not logged (no TCP there), first: %s",
			          tmp);
		return;
	}
	/* transmit_error_response's message, on the refused connection's thread */
	static const char refused[] = "Error processing request (HTTP response code is ";
	uint64_t st = 0;
	if (l && strncmp(tmp, refused, sizeof(refused) - 1) == 0) {
		const char *p = tmp + sizeof(refused) - 1;
		span digits = { p, strspn(p, "0123456789") };
		if (num_parse_u64(digits, 100, 599, &st) == CUSTOS_OK)
			mhd_refused_push(l, (unsigned)st);
	}
	log_debug("admin: libmicrohttpd: %s", tmp);
}

/* ---- listeners ---- */

static custos_err open_unix(const char *path, uint32_t mode, int *out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat stt;

	ENSURE(strlen(path) < sizeof(sun.sun_path), CUSTOS_ERR_LIMIT,
	       "admin socket %s: path too long", path);
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &stt) == 0) {
		ENSURE(S_ISSOCK(stt.st_mode), CUSTOS_ERR_EXISTS,
		       "admin socket %s: exists and is not a socket", path);
		/* Stale only when nobody answers: never take over a running instance's socket. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		bool live =
		        probe != -1 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0;
		if (probe != -1)
			close(probe);
		ENSURE(!live, CUSTOS_ERR_EXISTS, "admin socket %s: another process serves it",
		       path);
		if (unlink(path) == -1)
			return err_sys("admin socket %s: unlink stale socket", path);
	}
	/* Never wider than the configured mode, and without touching the process-wide umask (other
	 * threads create files meanwhile): the socket is bound in a fresh 0700 directory beside
	 * the target, which nobody else can enter, given its mode there, then renamed onto the
	 * final path (the same filesystem, so atomically; never over a file that appeared since). */
	char tmpdir[sizeof(sun.sun_path)], tmpsock[sizeof(sun.sun_path)];
	const char *slash = strrchr(path, '/');
	int dl = slash ? (int)(slash - path) : 1;
	const char *dir = slash ? path : ".";
	if (slash == path)
		dl = 0;
	int n1 = snprintf(tmpdir, sizeof(tmpdir), "%.*s/.admin.XXXXXX", dl, dir);
	ENSURE(n1 > 0 && (size_t)n1 + 2 < sizeof(tmpdir), CUSTOS_ERR_LIMIT,
	       "admin socket %s: its directory's path is too long to bind a socket in it", path);
	if (mkdtemp(tmpdir) == NULL)
		return err_sys("admin socket %s: mkdtemp %s", path, tmpdir);
	snprintf(tmpsock, sizeof(tmpsock), "%s/s", tmpdir);
	struct sockaddr_un tmp_sun = { .sun_family = AF_UNIX };
	memcpy(tmp_sun.sun_path, tmpsock, strlen(tmpsock) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	custos_err e = CUSTOS_OK;
	if (fd == -1)
		e = err_sys("admin socket: socket");
	else if (bind(fd, (struct sockaddr *)&tmp_sun, sizeof(tmp_sun)) == -1)
		e = err_sys("admin socket %s: bind", tmpsock);
	else if (chmod(tmpsock, mode) == -1)
		e = err_sys("admin socket %s: chmod", tmpsock);
	else if (listen(fd, 64) == -1) /* before the rename: a failure leaves the path alone */
		e = err_sys("admin socket %s: listen", tmpsock);
	else if (renameat2(AT_FDCWD, tmpsock, AT_FDCWD, path, RENAME_NOREPLACE) == -1)
		e = err_sys("admin socket %s: rename from %s", path, tmpsock);
	if (e != CUSTOS_OK) {
		(void)unlink(tmpsock);
		if (fd != -1)
			close(fd);
	}
	if (rmdir(tmpdir) == -1 && e == CUSTOS_OK) {
		e = err_sys("admin socket %s: rmdir %s", path, tmpdir);
		(void)unlink(path);
		close(fd);
	}
	if (e != CUSTOS_OK)
		return e;
	*out = fd;
	return CUSTOS_OK;
}

static bool addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr) >>
		        24) == 127;
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(
		        &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr);
	return false;
}

custos_err admin_open_unix(const char *path, uint32_t mode, uid_t uid, gid_t gid, int *fd)
{
	ENSURE(path && (mode & 0007) == 0, CUSTOS_ERR_INVAL, "admin socket: bad path or mode");
	GUARD(open_unix(path, mode ? mode : 0660, fd));
	if (uid != (uid_t)-1 && lchown(path, uid, gid) == -1) {
		custos_err e = err_sys("admin socket %s: chown", path);
		close(*fd);
		*fd = -1;
		return e;
	}
	return CUSTOS_OK;
}

static custos_err open_tcp(const char *addr, bool force, bool tls, int *out, unsigned *port)
{
	struct sockaddr_storage ss;
	socklen_t len;

	GUARD(err_wrap(proxy_parse_address(addr, &ss, &len), "admin tcp"));
	ENSURE(ss.ss_family != AF_UNIX, CUSTOS_ERR_INVAL, "admin tcp: %s is not a TCP address",
	       addr);
	ENSURE(force || tls || addr_is_loopback(&ss), CUSTOS_ERR_DENIED,
	       "admin tcp: %s is not a loopback address (configure admin.tls, or set admin.force "
	       "to allow it in clear)",
	       addr);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return err_sys("admin tcp: socket");
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, (struct sockaddr *)&ss, len) == -1 || listen(fd, 64) == -1) {
		custos_err e = err_sys("admin tcp %s", addr);
		close(fd);
		return e;
	}
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		*port = ntohs(ss.ss_family == AF_INET
		                      ? ((struct sockaddr_in *)(void *)&ss)->sin_port
		                      : ((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
	*out = fd;
	return CUSTOS_OK;
}

static custos_err start_daemon(struct admin_listener *l)
{
	struct admin_server *s = l->srv;
	sigset_t all, old;

	/* With admin.tls the TCP listener is the TLS gate's (admin_tls.c): libmicrohttpd listens
	 * on nothing and gets each connection once its handshake is done (MHD_add_connection;
	 * the inter-thread channel wakes its threads for it). */
	bool gated = l->kind == L_TCP && s->tls_ctx != NULL;
	l->gated = gated;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	if (gated)
		flags |= MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
	struct MHD_OptionItem listen_opt[] = {
		{ gated ? MHD_OPTION_END : MHD_OPTION_LISTEN_SOCKET, l->fd, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};
	/* libmicrohttpd's inactivity timeout a second past the watchdog's deadline: a request not
	 * read by then is the watchdog's to close, and to audit (conn_refusal); libmicrohttpd's
	 * closes a connection that stops taking its answer. */
	unsigned mhd_timeout = s->timeout_s + 1;
	/* The daemon's threads must not take the process signals proxy_run waits for. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	l->d = MHD_start_daemon(
	        flags, 0, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, l,
	        MHD_OPTION_ARRAY, listen_opt, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)ADMIN_THREADS,
	        MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_MHD_CONNECTIONS,
	        MHD_OPTION_CONNECTION_TIMEOUT, mhd_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	        (size_t)ADMIN_CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
	        MHD_OPTION_NOTIFY_CONNECTION, on_connection, l, MHD_OPTION_UNESCAPE_CALLBACK,
	        unescape_none, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL, MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ENSURE(l->d, CUSTOS_ERR_IO, "admin: libmicrohttpd did not start on the %s listener",
	       l->kind == L_UNIX ? "Unix" : "TCP");
	return CUSTOS_OK;
}

/* admin.tls's context: the proxy listeners' defaults (Mozilla intermediate, TLS 1.2+) and
 * their code (tls_server_ctx: ocsp is checked and stapled as a listener's), no tickets (an
 * admin client makes few connections, and the process-wide ticket key rotation stays the
 * listeners'); with client_ca, client certificates it signed are required, checked against
 * client_crl's CRLs when it is set. */
static custos_err tls_ctx_new(const char *cert, const char *key, const char *ocsp,
                              const char *client_ca, const char *client_crl, SSL_CTX **out)
{
	proxy_tls_opts to = { .ncerts = 1,
		              .no_tickets = true,
		              .client_ca = (char *)client_ca,
		              .client_crl = (char *)client_crl,
		              .client_auth = client_ca ? PROXY_CLIENT_CERT_REQUIRED
		                                       : PROXY_CLIENT_CERT_NONE };
	to.cert_file[0] = (char *)cert;
	to.key_file[0] = (char *)key;
	to.ocsp_file[0] = (char *)ocsp;
	return err_wrap(tls_server_ctx("admin", &to, out), "admin.tls");
}

custos_err admin_tls_prepare(const admin_server *a, const char *cert, const char *key,
                             const char *ocsp, const char *client_ca, const char *client_crl,
                             struct ssl_ctx_st **out)
{
	*out = NULL;
	ENSURE(a != NULL && a->gate != NULL, CUSTOS_ERR_INVAL,
	       "admin.tls: the admin API serves no TLS listener");
	ENSURE(cert != NULL && key != NULL, CUSTOS_ERR_INVAL,
	       "admin.tls: a certificate and its key are required");
	return tls_ctx_new(cert, key, ocsp, client_ca, client_crl, out);
}

void admin_tls_swap(admin_server *a, struct ssl_ctx_st *ctx)
{
	if (ctx == NULL)
		return;
	if (a == NULL || a->gate == NULL) {
		SSL_CTX_free(ctx);
		return;
	}
	admin_tls_gate_set_ctx(a->gate, ctx);
	SSL_CTX_free(a->tls_ctx); /* the gate holds its own reference to each */
	a->tls_ctx = ctx;
	log_info("admin: tls: the certificate of the reload is served from now on");
}

void admin_tls_free(struct ssl_ctx_st *ctx)
{
	SSL_CTX_free(ctx);
}

custos_err admin_start(const admin_options *o, admin_server **out)
{
	*out = NULL;
	ENSURE(o->socket_path || o->tcp_address, CUSTOS_ERR_INVAL,
	       "admin: neither a socket nor a TCP address");
	ENSURE(o->n_allowed_uids <= ADMIN_MAX_UIDS, CUSTOS_ERR_LIMIT, "admin: more than %d uids",
	       ADMIN_MAX_UIDS);
	ENSURE(o->n_sandboxes <= ADMIN_MAX_SANDBOXES, CUSTOS_ERR_LIMIT,
	       "admin: more than %d sandboxes", ADMIN_MAX_SANDBOXES);
	for (size_t i = 0; i < o->n_sandboxes && o->hooks.sandboxes_get == NULL; i++)
		ENSURE(o->sandboxes[i].name &&
		               strlen(o->sandboxes[i].name) <= ADMIN_SANDBOX_NAME_MAX,
		       CUSTOS_ERR_LIMIT, "admin: a sandbox name longer than %d bytes",
		       ADMIN_SANDBOX_NAME_MAX);
	ENSURE(o->max_body <= ADMIN_BODY_MAX, CUSTOS_ERR_LIMIT, "admin: max_body above %u",
	       ADMIN_BODY_MAX);
	uint32_t mode = o->socket_mode ? o->socket_mode : 0660;
	ENSURE((mode & ~0770u) == 0, CUSTOS_ERR_INVAL,
	       "admin: socket mode %04o gives access to others", (unsigned)mode);
	static const uint8_t zero[32];
	ENSURE(o->tcp_address == NULL || CRYPTO_memcmp(o->token_sha256, zero, 32) != 0,
	       CUSTOS_ERR_INVAL, "admin: a TCP listener needs a token");
	ENSURE((o->tls_cert == NULL) == (o->tls_key == NULL) &&
	               (o->tls_client_ca == NULL || o->tls_cert != NULL) &&
	               (o->tls_client_crl == NULL || o->tls_client_ca != NULL) &&
	               (o->tls_ocsp == NULL || o->tls_cert != NULL) &&
	               (o->tls_cert == NULL || o->tcp_address != NULL),
	       CUSTOS_ERR_INVAL, "admin: tls needs a certificate, its key and a TCP listener");

	struct admin_server *s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->reload_lock, NULL);
	pthread_mutex_init(&s->watch_lock, NULL);
	pthread_cond_init(&s->watch_cond, NULL);
	s->l[0] = (struct admin_listener){ .srv = s, .kind = L_UNIX, .fd = -1 };
	s->l[1] = (struct admin_listener){ .srv = s, .kind = L_TCP, .fd = -1 };
	pthread_mutex_init(&s->l[0].refused_lock, NULL);
	pthread_mutex_init(&s->l[1].refused_lock, NULL);
	s->refused_window_len = NS_PER_S;
#ifdef CUSTOS_TEST_HOOKS
	s->refused_window_len = test_hook_admin_refused_window();
#endif
	if (o->n_allowed_uids) {
		memcpy(s->uids, o->allowed_uids, o->n_allowed_uids * sizeof(uint32_t));
		s->nuids = o->n_allowed_uids;
	} else {
		s->uids[s->nuids++] = (uint32_t)geteuid();
		if (geteuid() != 0)
			s->uids[s->nuids++] = 0;
	}
	memcpy(s->token_sha256, o->token_sha256, 32);
	s->max_body = o->max_body ? o->max_body : ADMIN_BODY_DEFAULT;
	s->timeout_s = o->timeout_s ? o->timeout_s : ADMIN_TIMEOUT_S;
#ifdef CUSTOS_TEST_HOOKS
	if (o->timeout_s == 0)
		s->timeout_s = test_hook_admin_timeout(s->timeout_s);
#endif
	s->audit = o->audit;
	s->audit_dir = o->audit_dir ? xstrdup(o->audit_dir) : NULL;
	s->hooks = o->hooks;
	for (size_t i = 0; i < o->n_sandboxes && o->hooks.sandboxes_get == NULL; i++) {
		s->sbx[i] = o->sandboxes[i];
		s->sbx[i].name = xstrdup(o->sandboxes[i].name);
	}
	s->nsbx = o->hooks.sandboxes_get ? 0 : o->n_sandboxes;
	custos_err e = CUSTOS_OK;
	if (o->socket_path) {
		if (o->socket_fd > 0) { /* bound by the caller (admin_open_unix) */
			s->l[0].fd = o->socket_fd;
			e = CUSTOS_OK;
		} else {
			e = open_unix(o->socket_path, mode, &s->l[0].fd);
		}
		if (e == CUSTOS_OK) {
			s->socket_path = xstrdup(o->socket_path); /* ours now: unlinked at stop */
			e = start_daemon(&s->l[0]);
		}
	}
	if (e == CUSTOS_OK && o->tcp_address && o->tls_cert)
		e = tls_ctx_new(o->tls_cert, o->tls_key, o->tls_ocsp, o->tls_client_ca,
		                o->tls_client_crl, &s->tls_ctx);
	if (e == CUSTOS_OK && o->tcp_address) {
		e = open_tcp(o->tcp_address, o->force, s->tls_ctx != NULL, &s->l[1].fd,
		             &s->tcp_port);
		if (e == CUSTOS_OK)
			e = start_daemon(&s->l[1]);
		if (e == CUSTOS_OK && s->tls_ctx) {
			admin_tls_events ev = { .arg = s,
				                .shed = gate_shed,
				                .rejected = gate_rejected };
			e = admin_tls_gate_start(s->l[1].fd, s->tls_ctx, s->l[1].d, s->timeout_s,
			                         ADMIN_MAX_CONNECTIONS, ADMIN_MHD_CONNECTIONS, &ev,
			                         &s->gate);
		}
	}
	if (e == CUSTOS_OK) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		int r = pthread_create(&s->watch_th, NULL, watchdog, s);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r != 0) {
			errno = r;
			e = err_sys("admin: watchdog thread");
		} else {
			s->watch_started = true;
		}
	}
	if (e != CUSTOS_OK) {
		admin_stop(s);
		return e;
	}
	log_info("admin: listening%s%s%s%s%s", s->socket_path ? " on unix:" : "",
	         s->socket_path ? s->socket_path : "",
	         o->tcp_address ? (s->tls_ctx ? " and tcp+tls:" : " and tcp:") : "",
	         o->tcp_address ? o->tcp_address : "",
	         s->tls_ctx && o->tls_client_ca ? " (client certificates required)" : "");
	*out = s;
	return CUSTOS_OK;
}

unsigned admin_tcp_port(const admin_server *a)
{
	return a ? a->tcp_port : 0;
}

void admin_stop(admin_server *s)
{
	if (s == NULL)
		return;
	if (s->watch_started) {
		pthread_mutex_lock(&s->watch_lock);
		s->watch_stop = true;
		pthread_cond_signal(&s->watch_cond);
		pthread_mutex_unlock(&s->watch_lock);
		pthread_join(s->watch_th, NULL);
	}
	admin_tls_gate_stop(s->gate); /* before its daemon: it hands connections to it */
	for (size_t i = 0; i < 2; i++) {
		if (s->l[i].d)
			MHD_stop_daemon(s->l[i].d);
		if (s->l[i].fd != -1)
			close(s->l[i].fd);
	}
	refused_flush(s, true); /* no caller left: the last window's sum, now */
	pthread_mutex_destroy(&s->l[0].refused_lock);
	pthread_mutex_destroy(&s->l[1].refused_lock);
	if (s->socket_path) {
		if (unlink(s->socket_path) == -1 && errno != ENOENT)
			log_warn("admin: unlink %s: %s", s->socket_path, strerror(errno));
		free(s->socket_path);
	}
	for (size_t i = 0; i < s->nsbx; i++)
		free((char *)s->sbx[i].name);
	free(s->audit_dir);
	pthread_mutex_destroy(&s->reload_lock);
	pthread_mutex_destroy(&s->watch_lock);
	pthread_cond_destroy(&s->watch_cond);
	OPENSSL_cleanse(s->token_sha256, sizeof(s->token_sha256));
	SSL_CTX_free(s->tls_ctx);
	free(s);
}

void admin_sandbox_event(const char *name, int kind, uint64_t count)
{
	switch (kind) {
	case SANDBOX_EV_RESTART:
		metrics_sandbox(name, METRICS_SBX_RESTART);
		break;
	case SANDBOX_EV_VIOLATION:
		metrics_sandbox_add(name, METRICS_SBX_VIOLATION, count ? count : 1);
		break;
	case SANDBOX_EV_OOM:
		metrics_sandbox(name, METRICS_SBX_OOM);
		break;
	case SANDBOX_EV_LIMIT:
		metrics_sandbox(name, METRICS_SBX_LIMIT);
		break;
	default:
		break;
	}
}
