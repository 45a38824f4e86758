/*
 * Client connections and their upstreams: one state machine per connection (TLS handshake,
 * request head, body, policy, upstream exchange, response streaming). Requests on a
 * connection are handled one at a time, so pipelined requests are answered in order; bytes of
 * the next request wait in the input buffer. Output is bounded: upstream reads stop while the
 * client's output buffer is full (backpressure).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "custos/egress.h"
#include "custos/policy.h"
#include "custos/sandbox.h"
#include "egress_int.h"
#include "ingress_inspect.h"
#include "metrics.h"
#include "pp.h"
#include "proxy_int.h"
#include "tls.h"

#define NS_PER_S           1000000000ull
#define DEF_HEADER_TIMEOUT (10 * NS_PER_S)
#define DEF_KEEPALIVE      (60 * NS_PER_S)
#define DEF_BODY_TIMEOUT   (60 * NS_PER_S)
#define DEF_CONNECT        (5 * NS_PER_S)
#define DEF_READ           (60 * NS_PER_S)
#define DEF_UP_IDLE        (30 * NS_PER_S)
#define DEF_POOL_MAX       64u
#define OUT_HIGH           PROXY_OUTBUF_MAX
#define OUT_MAX            (PROXY_OUTBUF_MAX + PROXY_UPIN_MAX + 1024u)
#define INSP_PIECE         (16u * 1024u) /* upstream bytes inspected per step */

typedef enum cstate {
	CS_HANDSHAKE = 0,
	CS_HEAD,
	CS_BODY,
	CS_UPSTREAM, /* connecting / sending / waiting for the response head */
	CS_RESPONSE, /* streaming the response body */
	CS_CLOSING,  /* flushing the last bytes, then close */
	CS_PROXY,    /* reading the PROXY protocol header (before TLS or HTTP) */
} cstate;

typedef enum ustate { US_CONNECTING = 0, US_TLS, US_READY } ustate;

typedef struct upconn {
	worker *w;
	ev_io io;
	ev_timer timer;
	sock s;
	ustate st;
	size_t upstream;
	uint64_t gen;
	struct conn *owner;
	struct upconn *next; /* pool */
	buf in;
	bool reused;
	bool dead;
} upconn;

typedef struct req {
	char id[PROXY_REQUEST_ID_LEN + 1];
	uint64_t t_start, t_policy, t_up_start, t_up_done;
	http1_method meth;
	char method[24];
	char *path;        /* the target as received (audit) */
	char *npath;       /* its path as policy_path_normalize spells it, query dropped, when
	                that differs from path's; NULL when it does not, or when the path is
	                refused as ambiguous (the policy then denies it) */
	const char *query; /* the query in path ("?..."), or "" */
	bool client_keep_alive;
	bool client_http10;
	http1_body bdec;
	buf body;
	buf uphead;         /* upstream request head without its Host field and final CRLF */
	size_t uphead_line; /* bytes of its request line, CRLF included: Host goes after them */
	buf accept_enc;     /* the client's Accept-Encoding fields, written after the decision */
	bool encoded;       /* the request body has a Content-Encoding other than identity */
	bool multipart;     /* the request body is multipart (an OpenAI file or audio upload) */
	bool mp_ambiguous;  /* ... with another Content-Type field beside it */
	uint8_t mp_blen;    /* its boundary's length, 0: none valid */
	char mp_boundary[EGRESS_MP_BOUNDARY_MAX + 1]; /* its boundary */
	buf upout; /* bytes of the current upstream attempt still to send */
	uint64_t up_sent;
	bool has_oa;
	openai_request oa;
	decide_out dec;
	size_t upstream;
	const char *route_model; /* the route's model id (in st_ref's options), NULL: the body's */
	unsigned status;
	uint64_t bytes_in, bytes_out;
	/* response */
	http1_parser *rp; /* response head parser, allocated while a request runs (it is
	                     large; idle keep-alive connections should not carry it) */
	bool resp_head_done;
	uint64_t resp_at; /* where the response head starts in the client's output stream
	                     (conn.sent + bytes then waiting in c->out) */
	http1_body rbdec;
	bool client_chunked;
	bool up_keep_alive;
	bool is_sse;
	sse_parser sse;
	bool sse_init;
	openai_usage_scan *uscan; /* JSON response: its top-level usage, found as it streams */
	openai_usage usage;
	uint64_t resp_body;     /* response body bytes from the upstream */
	uint64_t sse_events;    /* SSE data events from the upstream */
	bool usage_injected;    /* custos added stream_options.include_usage: the usage-only chunk
	                           it brings is not forwarded (the client did not ask for it) */
	buf held;               /* forwarded events of the current piece (usage_injected) */
	bool tokens_estimated;  /* usage was estimated (no usage came back) */
	unsigned shadow_status; /* shadow mode: what enforcement would have answered, 0: passed */
	uint64_t retry_ns;      /* a 429's wait until a request would pass */
	ingress_insp *insp;     /* content inspection (ingress_inspect.c), NULL when none */
	bool head_held;         /* a JSON body held for inspection: its head waits in rhead */
	buf rhead;              /* that head, without a framing field, for the verdict */
	unsigned attempts;
	bool audited;
	bool audit_held; /* holds a queue slot for its event (audit_reserve: on_full deny) */
	bool active;
	uint64_t egress_token;  /* the model's egress calls are attributed to this request */
	struct body_hashes *bh; /* `audit: bodies_hashed`: the bodies' digests; NULL: not asked */
} req;

/* The digests an `audit: bodies_hashed` (or `bodies`) obligation puts in the request's event
 * (docs/AUDIT.md "Body hashes"): allocated only for such a request. With `audit: bodies`,
 * also the response body's first bytes (docs/POLICY.md "Bodies"). */
struct body_hashes {
	EVP_MD_CTX *resp; /* the response body as the client receives it (decoded, re-framed) */
	bool resp_done;   /* the response completed: resp_hex holds its digest */
	char req_hex[65], fwd_hex[65], resp_hex[65];
	/* `audit: bodies`: keep (NULL: not asked) holds the first keep_max bytes of that body */
	char *keep;
	size_t kept, keep_max;
	uint64_t resp_len;  /* all the bytes of that body so far */
	bool resp_whole;    /* it completed (finish_request) */
	bool req_forwarded; /* the request body went on to the model: r->body is what it got */
};

/* What a PROXY v2 header's AUTHORITY and UNIQUE_ID TLVs said, for the connection's audit
 * events: allocated only for a header that carried one (one block, the texts after it). */
typedef struct via_tlv {
	const char *authority; /* the host name the client asked the balancer for; NULL: none */
	const char *unique_id; /* the balancer's connection id, lowercase hex; NULL: none */
	char text[];
} via_tlv;

typedef struct conn {
	worker *w;
	struct conn *prev, *next;
	ev_io io;
	ev_timer timer;
	sock s;
	cstate st;
	proxy_state *st_ref; /* state of the current request */
	const lsock *ls;
	char remote[64];
	span remote_ip; /* the client's address in remote (empty: a Unix socket) */
	char via[64];   /* the socket peer, when a PROXY header named the client (else "") */
	bool pp_seen;   /* CS_PROXY: the peer sent bytes */
	bool rdhup;     /* the peer shut its side down (EPOLLRDHUP) */
	/* that PROXY header's authority and unique id; NULL when it had neither */
	via_tlv *via_tlv;
	ident id;
	/* the client address for the policy, as remote_ip (AF_UNSPEC: none, a Unix socket) */
	struct sockaddr_storage client;
	uint64_t t_accept, t_tls;
	uint64_t sent; /* bytes written to the client so far (before TLS) */
	buf in, out;
	req r;
	upconn *up;
	uint64_t anchor; /* start of the current wait: timeouts count from here, so a peer
	                    that trickles bytes cannot extend a head deadline */
	bool drain;
	bool peer_gone;
	bool freed;
	/* TLS record buffers: on the worker's quiet list since quiet_at (see quiet_add) */
	bool quiet;
	struct conn *qprev, *qnext;
	uint64_t quiet_at;
	/* writes held until the end of the worker's batch of events (flush_deferred) */
	bool flush_pending;
	struct conn *flush_next;
} conn;

static void conn_drive(conn *c);
static void conn_free(void *p);
static void resp_broken(conn *c, unsigned status, const char *why);
static void up_close(upconn *u);

/* ---------------------------------------------------------------------------------------------
 * helpers
 */
/* The reason of a request ended by the shutdown deadline (audit, 503 answer). */
#define DRAIN_CUT "shutdown deadline passed"

static uint64_t or_default(uint64_t v, uint64_t d)
{
	return v ? v : d;
}

/* While custos drains: has the client sent more on c than custos has answered, bytes already
 * here (read, in OpenSSL, or in the socket)? A request sent before the client could see the
 * connection end (pipelined behind the one in flight, or arriving as the drain began) is then
 * answered, and its connection closed after it, instead of closed unanswered (and reset by a
 * close with unread bytes, which can also cut the answer before it). */
static bool drain_more(conn *c)
{
	return buf_used(&c->in) > 0 || sock_bytes_waiting(&c->s);
}

/* ---------------------------------------------------------------------------------------------
 * TLS record buffers of quiet connections. A client TLS connection keeps OpenSSL's read and
 * write record buffers (about 17 KiB each) while it is busy: SSL_MODE_RELEASE_BUFFERS would
 * free and allocate both again for every request of a keep-alive connection, which costs the
 * worker about 1.5 us per request (docs/PERFORMANCE.md). A connection that has been idle
 * between requests for QUIET_RELEASE_NS gives them back, so an idle keep-alive connection
 * holds none (memory per idle connection). "Soon" matters: freed memory stays in the process'
 * RSS until the allocator reuses it, so a connection that went quiet must not keep its
 * buffers for seconds. The worker keeps its quiet connections in one list in the order they
 * went quiet (so the oldest is at the head) and one timer for the head: O(1) per request.
 */
#define QUIET_RELEASE_NS 5000000ull /* 5 ms */

static void quiet_unlink(conn *c)
{
	worker *w = c->w;

	if (!c->quiet)
		return;
	c->quiet = false;
	if (c->qprev)
		c->qprev->qnext = c->qnext;
	else
		w->quiet_head = c->qnext;
	if (c->qnext)
		c->qnext->qprev = c->qprev;
	else
		w->quiet_tail = c->qprev;
	c->qprev = c->qnext = NULL;
}

static void quiet_release(ev_loop *l, void *obj)
{
	worker *w = obj;
	conn *c;

	while ((c = w->quiet_head) != NULL && c->quiet_at + QUIET_RELEASE_NS <= l->now) {
		quiet_unlink(c);
		/* Refused while a record is half read or a write is pending: the connection is
		 * not idle then, and its next quiet spell tries again. */
		if (SSL_free_buffers(c->s.ssl) == 1)
			metrics_inc(METRICS_TLS_BUFFERS_RELEASED);
	}
	if (c != NULL)
		ev_timer_set(l, &w->quiet_timer, c->quiet_at + QUIET_RELEASE_NS);
}

/* c (a TLS connection, idle between requests) went quiet now: to the tail of the list. */
static void quiet_add(conn *c)
{
	worker *w = c->w;

	quiet_unlink(c);
	c->quiet = true;
	c->quiet_at = w->loop.now;
	c->qprev = w->quiet_tail;
	if (w->quiet_tail)
		w->quiet_tail->qnext = c;
	else
		w->quiet_head = c;
	w->quiet_tail = c;
	if (w->quiet_timer.at == 0) {
		w->quiet_timer.cb = quiet_release;
		w->quiet_timer.obj = w;
		ev_timer_set(&w->loop, &w->quiet_timer, c->quiet_at + QUIET_RELEASE_NS);
	}
}

/* ---------------------------------------------------------------------------------------------
 * Writes at the end of the batch. While the worker handles a batch of events, what a
 * connection has to send (the request to its upstream, the answer to its client) waits, and is
 * sent when every event of the batch has been handled: the sends of one batch go out
 * together, so a peer on the same host (the model server, a local client) is woken once for
 * several of them instead of once per request, and preempts the worker that much less often.
 * HAProxy's loop works the same way (reads of a poll round first, sends after).
 */
static bool flush_deferred(conn *c)
{
	worker *w = c->w;

	if (!w->batching)
		return false;
	if (!c->flush_pending) {
		c->flush_pending = true;
		c->flush_next = w->flush_head;
		w->flush_head = c;
	}
	return true;
}

void conn_batch(ev_loop *l, void *obj, bool begin)
{
	worker *w = obj;

	(void)l;
	if (begin) {
		w->batching = true;
		return;
	}
	w->batching = false;
	while (w->flush_head != NULL) {
		conn *c = w->flush_head;
		w->flush_head = c->flush_next;
		c->flush_next = NULL;
		c->flush_pending = false;
		if (!c->freed)
			conn_drive(c);
	}
}

static void conn_audit(conn *c, const char *type, const char *decision, const char *reason);

static void conn_close(conn *c)
{
	worker *w = c->w;

	if (c->freed)
		return;
	/* Every path that ends a request audits it first; one that did not (the response could
	 * not be buffered for the client: no memory) still leaves its event (fail closed). */
	if (c->r.active && !c->r.audited) {
		c->r.status = c->r.status ? c->r.status : 502;
		conn_audit(c, "http.request", "error",
		           "connection closed: the response could not be written to the client");
	}
	c->freed = true;
	quiet_unlink(c);
	ev_del(&w->loop, &c->io);
	ev_timer_clear(&w->loop, &c->timer);
	if (c->up) {
		c->up->owner = NULL;
		up_close(c->up);
		c->up = NULL;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	metrics_inc(METRICS_CONN_CLOSED);
	ev_defer_free(&w->loop, c, conn_free);
}

/* ---------------------------------------------------------------------------------------------
 * I/O buffer blocks. A keep-alive connection gives its input and output buffers back while
 * idle (memory per idle connection); a per-worker cache of fixed-size blocks takes them, so a
 * busy worker does not malloc, free and fault in 16 KiB twice per request. Bounded: blocks
 * past BUF_CACHE_MAX, and buffers that grew past one block, go back to malloc. The bound
 * covers what a worker's busy connections hand back and forth (each request holds up to four
 * blocks: client in/out, upstream head and body).
 */
#define BUF_BLOCK     (16u * 1024u)
#define BUF_CACHE_MAX 128u /* 2 MiB per worker at most */

/* Gives b (empty, unallocated) a cached block when one is free. */
static void buf_take_block(worker *w, buf *b)
{
	if (b->data != NULL || w->buf_cache == NULL || b->max + 1 < BUF_BLOCK)
		return;
	void *blk = w->buf_cache;
	memcpy(&w->buf_cache, blk, sizeof(void *));
	w->buf_cached--;
	b->data = blk;
	b->cap = BUF_BLOCK;
	b->off = b->len = 0;
}

/* Releases b's memory: into the cache when it is one block and the cache has room. */
static void buf_give_block(worker *w, buf *b)
{
	if (b->data != NULL && b->cap == BUF_BLOCK && w->buf_cached < BUF_CACHE_MAX) {
		memcpy(b->data, &w->buf_cache, sizeof(void *));
		w->buf_cache = b->data;
		w->buf_cached++;
		b->data = NULL;
		b->off = b->len = b->cap = 0;
		return;
	}
	buf_free(b);
}

/* Response head parsers (3.5 KiB each) the same way: one per running request, from a
 * per-worker free list, never carried by an idle connection. */
#define RP_CACHE_MAX 64u

static http1_parser *rp_take(worker *w)
{
	if (w->rp_cache == NULL)
		return malloc(sizeof(http1_parser));
	http1_parser *p = w->rp_cache;
	memcpy(&w->rp_cache, p, sizeof(void *));
	w->rp_cached--;
	return p;
}

static void rp_give(worker *w, http1_parser *p)
{
	if (p == NULL)
		return;
	if (w->rp_cached >= RP_CACHE_MAX) {
		free(p);
		return;
	}
	memcpy(p, &w->rp_cache, sizeof(void *));
	w->rp_cache = p;
	w->rp_cached++;
}

void conn_buf_cache_free(worker *w)
{
	while (w->buf_cache != NULL) {
		void *blk = w->buf_cache;
		memcpy(&w->buf_cache, blk, sizeof(void *));
		free(blk);
	}
	w->buf_cached = 0;
	while (w->rp_cache != NULL) {
		void *p = w->rp_cache;
		memcpy(&w->rp_cache, p, sizeof(void *));
		free(p);
	}
	w->rp_cached = 0;
}

static void req_reset(worker *w, req *r)
{
	if (r->audit_held) /* ended without its event (conn_audit gives the slot to the event) */
		audit_unreserve(w->srv->audit, 1);
	egress_ingress_end(r->egress_token);
	free(r->path);
	free(r->npath);
	buf_free(&r->body);
	buf_give_block(w, &r->uphead);
	buf_give_block(w, &r->upout);
	buf_free(&r->accept_enc);
	free(r->uscan);
	buf_free(&r->held);
	if (r->has_oa)
		openai_request_free(&r->oa);
	if (r->sse_init)
		sse_parser_free(&r->sse);
	rp_give(w, r->rp);
	ingress_inspect_free(r->insp);
	buf_free(&r->rhead);
	if (r->bh) {
		EVP_MD_CTX_free(r->bh->resp);
		free(r->bh->keep);
		free(r->bh);
	}
	*r = (req){ 0 };
}

static void conn_free(void *p)
{
	conn *c = p;

	req_reset(c->w, &c->r);
	sock_close(&c->s);
	buf_give_block(c->w, &c->in);
	buf_give_block(c->w, &c->out);
	ident_free(&c->id);
	if (c->st_ref)
		state_unref(c->st_ref);
	free(c->via_tlv);
	free(c);
}

static void up_free(void *p)
{
	upconn *u = p;
	sock_close(&u->s);
	buf_free(&u->in);
	free(u);
}

static void up_close(upconn *u)
{
	if (u->dead)
		return;
	u->dead = true;
	ev_del(&u->w->loop, &u->io);
	ev_timer_clear(&u->w->loop, &u->timer);
	ev_defer_free(&u->w->loop, u, up_free);
}

static void pool_remove(worker *w, upconn *u)
{
	upool *p = &w->pools[u->upstream];
	for (upconn **pp = &p->idle; *pp; pp = &(*pp)->next) {
		if (*pp == u) {
			*pp = u->next;
			p->n--;
			return;
		}
	}
}

static void up_idle_timeout(ev_loop *l, void *obj)
{
	upconn *u = obj;
	pool_remove(u->w, u);
	up_close(u);
}

void upool_free_all(worker *w)
{
	for (size_t i = 0; i < PROXY_MAX_UPSTREAMS; i++) {
		while (w->pools[i].idle) {
			upconn *u = w->pools[i].idle;
			w->pools[i].idle = u->next;
			up_close(u);
		}
		w->pools[i].n = 0;
	}
}

/* ---------------------------------------------------------------------------------------------
 * audit and error responses
 */
static const char *auth_name(ident_method m)
{
	switch (m) {
	case IDENT_MTLS:
		return "mtls";
	case IDENT_API_KEY:
		return "api_key";
	case IDENT_JWT:
		return "jwt";
	default:
		return "none";
	}
}

/* A request under a token budget is charged once, when its event is written: whenever the
 * model server answered, also when the client went away or the response broke off. Without a
 * usage from the model server (cut before its last stream event, or none sent) the charge is
 * an estimate, recorded as such: a quarter of the request body's bytes for the prompt, and
 * the stream's data events (about one token each) or a quarter of the response body's bytes
 * for the completion. Hanging up before the usage arrives therefore costs what was used. */
static void charge_tokens(conn *c)
{
	req *r = &c->r;

	if (!r->dec.tokens || !r->dec.verdict_allow || !r->resp_head_done)
		return;
	if (!r->usage.present) {
		r->tokens_estimated = true;
		r->usage.prompt_tokens = (buf_used(&r->body) + 3) / 4;
		r->usage.completion_tokens =
		        r->is_sse || r->sse_events ? r->sse_events : (r->resp_body + 3) / 4;
		r->usage.total_tokens = r->usage.prompt_tokens + r->usage.completion_tokens;
	}
	uint64_t used = r->usage.total_tokens ? r->usage.total_tokens
	                                      : r->usage.prompt_tokens + r->usage.completion_tokens;
	limiter_charge(c->w->srv->lim, r->dec.principal, used, r->dec.tokens_per, tm_mono_ns());
}

/* A response body piece on its way to the client: into the digest when one is kept, and its
 * bytes up to the cap into the record of `audit: bodies`. */
static void resp_hash(req *r, span d)
{
	if (r->bh && r->bh->resp && d.len && EVP_DigestUpdate(r->bh->resp, d.ptr, d.len) != 1) {
		EVP_MD_CTX_free(r->bh->resp); /* no digest rather than a wrong one */
		r->bh->resp = NULL;
	}
	if (r->bh && r->bh->keep) {
		size_t n = r->bh->keep_max - r->bh->kept;
		if (n > d.len)
			n = d.len;
		if (n)
			memcpy(r->bh->keep + r->bh->kept, d.ptr, n);
		r->bh->kept += n;
		r->bh->resp_len += d.len;
	}
}

static void conn_audit(conn *c, const char *type, const char *decision, const char *reason)
{
	req *r = &c->r;
	worker *w = c->w;
	proxy_state *st = c->st_ref;

	if (r->audited)
		return;
	charge_tokens(c);
	/* Refused before the policy was asked (400, 404...): the principal still comes from the
	 * policy, so one caller has one name in every event. */
	if (!r->dec.principal[0] && c->id.method != IDENT_NONE && st)
		decide_principal(st->pol, &c->id, &r->dec);
	/* A finished exchange ends at t_up_done (read just before): no second clock read. */
	uint64_t now = r->t_up_done ? r->t_up_done : tm_mono_ns();
	r->audited = true;
	const char *upname = NULL;
	if (st && r->t_up_start && r->upstream < st->o.nupstreams)
		upname = st->o.upstreams[r->upstream].name;
	emit_rec e = {
		.type = type,
		.request_id = r->id,
		.principal = r->dec.principal[0] ? r->dec.principal : ident_label(&c->id),
		.auth = auth_name(c->id.method),
		.remote = c->remote,
		.via = c->via[0] ? c->via : NULL,
		.via_authority = c->via_tlv ? c->via_tlv->authority : NULL,
		.via_unique_id = c->via_tlv ? c->via_tlv->unique_id : NULL,
		.method = span_cstr(r->method),
		.path = span_cstr(r->path),
		/* What the policy judged: the route's model id (a path route's model, or the
		 * configured id behind an alias), else the body's. */
		.model = span_cstr(r->route_model ? r->route_model
		                   : r->has_oa    ? r->oa.model
		                                  : ""),
		/* ... and the body's, when it named another (an alias, or a model a path route
		 * overrode), so that the trail keeps what the client asked for. */
		.model_requested =
		        span_cstr(r->route_model && r->has_oa && r->oa.has_model &&
		                                  strcmp(r->route_model, r->oa.model) != 0
		                          ? r->oa.model
		                          : ""),
		.status = r->status,
		.decision = decision,
		.reason = reason,
		.rules = r->dec.rules[0] ? r->dec.rules : NULL,
		.shadow = r->dec.shadow,
		.shadow_status = r->shadow_status,
		.upstream = upname,
		.bytes_in = r->bytes_in,
		.bytes_out = r->bytes_out,
		.prompt_tokens = r->usage.prompt_tokens,
		.completion_tokens = r->usage.completion_tokens,
		.tokens_estimated = r->tokens_estimated,
		.stream = r->has_oa && r->oa.stream,
		.t_tls = c->t_tls,
		.t_policy = r->t_policy,
		.t_upstream =
		        r->t_up_start ? (r->t_up_done ? r->t_up_done : now) - r->t_up_start : 0,
		.t_total = r->t_start ? now - r->t_start : 0,
		.policy_hash = r->dec.policy_hash[0] ? r->dec.policy_hash : NULL,
		.held = r->audit_held,
	};
	if (r->bh) {
		e.audit_level = policy_audit_level_name((policy_audit_level)r->dec.audit);
		e.req_body_sha256 = r->bh->req_hex;
		e.req_body_fwd_sha256 = r->bh->fwd_hex[0] ? r->bh->fwd_hex : NULL;
		e.resp_body_sha256 = r->bh->resp_done ? r->bh->resp_hex : NULL;
		/* `audit: bodies`: the request body as forwarded (after redaction: the trail keeps
		 * nothing inspection removed), the response as received, whole or in part. */
		if (r->bh->keep) {
			e.body_max = r->bh->keep_max;
			e.req_body_on = r->bh->req_forwarded;
			e.req_body = buf_span(&r->body);
			e.req_body_len = buf_used(&r->body);
			e.resp_body_on = r->bh->resp_whole || r->bh->resp_len > 0;
			e.resp_body = span_of(r->bh->keep, r->bh->kept);
			e.resp_body_len = r->bh->resp_len;
		}
	}
	r->audit_held = false; /* emit_event gives the slot back, whatever happens to the event */
	if (r->insp)
		ingress_inspect_audit(r->insp, &e.findings, &e.nfindings, &e.inspect, &e.t_inspect);
	metrics_request(decision, e.path, e.model, span_cstr(e.principal), e.t_total, e.t_policy,
	                e.t_upstream);
	if (emit_event(w->srv->audit, w->audit_batch, &e) != CUSTOS_OK)
		log_error("audit: event for request %s not recorded: %s", r->id, err_msg());
}

/* Answers with a small JSON error and audits it as ev_type / ev_decision. close: the
 * connection ends after it. client_fault: the JSON type of a status other than 401, 403 and
 * 429 is invalid_request_error, else upstream_error (or audit_unavailable). */
static void conn_refuse_as(conn *c, unsigned status, const char *reason, bool close,
                           bool client_fault, const char *ev_type, const char *ev_decision)
{
	req *r = &c->r;
	buf body;
	json_writer jw;
	http1_header add[3];
	size_t nadd = 0;
	char retry[16];

	r->status = status;
	buf_init(&body, 4096);
	json_init(&jw, &body);
	json_obj_begin(&jw);
	json_key(&jw, "error");
	json_obj_begin(&jw);
	json_kv_cstr(&jw, "message", reason);
	json_kv_cstr(&jw, "type",
	             status == 401                    ? "authentication_error"
	             : status == 403                  ? "permission_denied"
	             : status == 429                  ? "rate_limit_exceeded"
	             : client_fault                   ? "invalid_request_error"
	             : strcmp(reason, DRAIN_CUT) == 0 ? "server_error"
	             /* custos' own refusal for its trail (unavailable, queue full) */
	             : strncmp(reason, "audit ", 6) == 0 ? "audit_unavailable"
	                                                 : "upstream_error");
	json_kv_cstr(&jw, "request_id", r->id);
	json_obj_end(&jw);
	json_obj_end(&jw);
	proxy_ignore(json_finish(&jw));
	proxy_ignore(buf_append_cstr(&body, "\n"));
	add[nadd++] = (http1_header){ SPAN_LIT("X-Request-Id"), span_cstr(r->id) };
	if (status == 401)
		add[nadd++] = (http1_header){ SPAN_LIT("WWW-Authenticate"), SPAN_LIT("Bearer") };
	if (status == 429) { /* whole seconds until a request would pass, at least 1 */
		uint64_t secs = (r->retry_ns + NS_PER_S - 1) / NS_PER_S;
		snprintf(retry, sizeof(retry), "%" PRIu64, secs ? secs : 1);
		add[nadd++] = (http1_header){ SPAN_LIT("Retry-After"), span_cstr(retry) };
	}
	if (!r->client_keep_alive || (c->drain && !drain_more(c)))
		close = true;
	/* An HTTP/1.0 connection stays open only when the answer says so (RFC 9112 §9.3); an
	 * answer to HEAD has the error's Content-Length but no content (RFC 9110 §9.3.2), or a
	 * kept connection would read the JSON as the next response. */
	unsigned flags = close              ? HTTP1_SIMPLE_CLOSE
	                 : r->client_http10 ? HTTP1_SIMPLE_KEEP_ALIVE
	                                    : 0;
	if (r->meth == HTTP1_M_HEAD)
		flags |= HTTP1_SIMPLE_HEAD;
	size_t before = buf_used(&c->out);
	if (http1_write_simple_response(&c->out, status, SPAN_LIT("application/json"),
	                                buf_span(&body), add, nadd, flags) != CUSTOS_OK)
		close = true;
	r->bytes_out += buf_used(&c->out) - before;
	buf_free(&body);
	conn_audit(c, ev_type, ev_decision, reason);
	if (c->up) {
		c->up->owner = NULL;
		up_close(c->up);
		c->up = NULL;
	}
	c->anchor = c->w->loop.now;
	if (close) {
		c->st = CS_CLOSING;
	} else {
		c->st = CS_HEAD;
		req_reset(c->w, r);
		if (c->st_ref) {
			state_unref(c->st_ref);
			c->st_ref = NULL;
		}
	}
}

/* client_fault: the client's request was refused (audited http.reject / deny, JSON type
 * invalid_request_error), also with a 5xx status the codec chose (501, 505); otherwise a 5xx
 * is custos' or the upstream's failure (http.request / error). */
static void conn_refuse(conn *c, unsigned status, const char *reason, bool close, bool client_fault)
{
	conn_refuse_as(c, status, reason, close, client_fault,
	               client_fault ? "http.reject" : "http.request",
	               client_fault ? "deny" : "error");
}

static void conn_reject(conn *c, unsigned status, const char *reason, bool close)
{
	conn_refuse(c, status, reason, close, status < 500);
}

static void new_request_id(worker *w, char out[PROXY_REQUEST_ID_LEN + 1]);

/* A request whose head was never parsed (malformed or timed out): id, time and state so that
 * its rejection is answered and audited like any other. */
/* A request the codec refused: what it read of the request line (method, target) still goes
 * to the event, so that a refusal says what was refused. */
static void req_begin_unparsed(conn *c, const http1_parser *p)
{
	req *r = &c->r;

	r->active = true;
	r->t_start = tm_mono_ns();
	/* What the client sent of the head that is refused (docs/AUDIT.md: bytes_in counts the
	 * head as framed on the connection): read before the callers drop it. */
	r->bytes_in = buf_used(&c->in);
	new_request_id(c->w, r->id);
	if (c->st_ref == NULL)
		c->st_ref = state_ref(worker_state(c->w));
	if (p && p->head.method.len && p->head.target.len) {
		r->meth = p->head.meth; /* a refused HEAD is still answered without content */
		proxy_ignore(span_copy_cstr(p->head.method, r->method, sizeof(r->method)));
		r->path = span_dup(p->head.target);
	}
}

/* ---------------------------------------------------------------------------------------------
 * failed TLS handshakes: one tls.reject event each (AUDIT.md: bad TLS is a rejection), at most
 * TLS_REJECT_BURST a second per worker; the rest of that second is counted and written as one
 * event with the sum when the second ends (tls_reject_flush, from a worker timer), so a scanner
 * cannot flood the trail and the trail still says how many there were. None of this runs on a
 * handshake that succeeds.
 */
#define TLS_REJECT_BURST 10

static void tls_reject_flush(ev_loop *l, void *obj)
{
	worker *w = obj;

	(void)l;
	if (w->tls_rej.suppressed == 0)
		return;
	log_info("tls: %" PRIu64 " more failed handshake(s) in one second (not logged one by one)",
	         w->tls_rej.suppressed);
	if (emit_tls_reject(w->srv->audit, w->audit_batch, "*", NULL, NULL, NULL,
	                    "failed TLS handshakes past the rate bound",
	                    w->tls_rej.suppressed) != CUSTOS_OK)
		log_error("audit: failed-handshake sum not recorded: %s", err_msg());
	w->tls_rej.suppressed = 0;
}

/* Whether one more refusal may be audited on its own in b's second; if not, it is counted in
 * the sum that flush writes when the second ends. */
static bool rej_admit(worker *w, struct rej_bound *b, void (*flush)(ev_loop *, void *))
{
	uint64_t now = w->loop.now;

	if (now - b->window >= NS_PER_S) {
		ev_timer_clear(&w->loop, &b->timer);
		flush(&w->loop, w); /* the last second's sum, if its timer did not run */
		b->window = now;
		b->in_window = 0;
	}
	if (b->in_window >= TLS_REJECT_BURST) {
		if (b->suppressed++ == 0) {
			b->timer.cb = flush;
			b->timer.obj = w;
			ev_timer_set(&w->loop, &b->timer, b->window + NS_PER_S);
		}
		return false;
	}
	b->in_window++;
	return true;
}

static void tls_rejected(conn *c, const char *why)
{
	worker *w = c->w;

	if (!rej_admit(w, &w->tls_rej, tls_reject_flush))
		return;
	log_info("tls: handshake with %s failed: %s", c->remote, why);
	if (emit_tls_reject(w->srv->audit, w->audit_batch, c->remote, c->via[0] ? c->via : NULL,
	                    c->via_tlv ? c->via_tlv->authority : NULL,
	                    c->via_tlv ? c->via_tlv->unique_id : NULL, why, 1) != CUSTOS_OK)
		log_error("audit: failed handshake from %s not recorded: %s", c->remote, err_msg());
}

/* The handshake failed (or timed out, why given): audited, unless the peer never sent a byte
 * (a TCP health check or port probe is not a TLS client). */
static void handshake_failed(conn *c, const char *why)
{
	char reason[256];

	metrics_inc(METRICS_TLS_FAILED);
	if (sock_bytes_read(&c->s) == 0) {
		log_debug("tls: %s %s without sending anything", c->remote,
		          why ? "timed out" : "closed");
		return;
	}
	if (why == NULL) {
		sock_handshake_reason(&c->s, reason, sizeof(reason));
		why = reason;
	}
	tls_rejected(c, why);
}

/* ---------------------------------------------------------------------------------------------
 * PROXY protocol rejections: one proxy_protocol.reject event each, under the same rate bound
 * as failed TLS handshakes (at most TLS_REJECT_BURST a second per worker, the rest summed).
 */
static void pp_reject_flush(ev_loop *l, void *obj)
{
	worker *w = obj;

	(void)l;
	if (w->pp_rej.suppressed == 0)
		return;
	log_info("proxy_protocol: %" PRIu64 " more rejected connection(s) in one second",
	         w->pp_rej.suppressed);
	if (emit_pp_reject(w->srv->audit, w->audit_batch, "*",
	                   "PROXY protocol rejections past the rate bound",
	                   w->pp_rej.suppressed) != CUSTOS_OK)
		log_error("audit: PROXY protocol rejection sum not recorded: %s", err_msg());
	w->pp_rej.suppressed = 0;
}

static void pp_rejected(conn *c, const char *why)
{
	worker *w = c->w;

	metrics_inc(METRICS_PP_REJECTED);
	if (!rej_admit(w, &w->pp_rej, pp_reject_flush))
		return;
	log_info("proxy_protocol: connection from %s closed: %s", c->remote, why);
	if (emit_pp_reject(w->srv->audit, w->audit_batch, c->remote, why, 1) != CUSTOS_OK)
		log_error("audit: PROXY protocol rejection from %s not recorded: %s", c->remote,
		          err_msg());
}

/* ---------------------------------------------------------------------------------------------
 * connections shed at accept (limits.max_connections): one connection.reject event each, under
 * the same rate bound (a flood of connections is what sheds them).
 */
static void shed_reject_flush(ev_loop *l, void *obj)
{
	worker *w = obj;

	(void)l;
	if (w->shed_rej.suppressed == 0)
		return;
	log_info("proxy: %" PRIu64 " more connection(s) shed in one second (max_connections)",
	         w->shed_rej.suppressed);
	if (emit_shed_reject(w->srv->audit, w->audit_batch, "*",
	                     "connections shed past the rate bound",
	                     w->shed_rej.suppressed) != CUSTOS_OK)
		log_error("audit: shed connection sum not recorded: %s", err_msg());
	w->shed_rej.suppressed = 0;
}

static void fmt_remote(const struct sockaddr *sa, char *out, size_t n, size_t *host_len);

void conn_shed(worker *w, int fd, const struct sockaddr *sa, uint64_t max)
{
	char remote[64], why[96];
	size_t hl;

	close(fd);
	metrics_inc(METRICS_CONN_SHED);
	if (!rej_admit(w, &w->shed_rej, shed_reject_flush))
		return;
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		fmt_remote(sa, remote, sizeof(remote), &hl);
	else
		snprintf(remote, sizeof(remote), "unix");
	snprintf(why, sizeof(why), "max_connections (%" PRIu64 ") reached: closed at accept", max);
	log_info("proxy: connection from %s shed: %s", remote, why);
	if (emit_shed_reject(w->srv->audit, w->audit_batch, remote, why, 1) != CUSTOS_OK)
		log_error("audit: shed connection from %s not recorded: %s", remote, err_msg());
}

/* ---------------------------------------------------------------------------------------------
 * timers
 */
static void conn_timeout(ev_loop *l, void *obj)
{
	conn *c = obj;

	switch (c->st) {
	case CS_UPSTREAM:
		if (!c->r.resp_head_done) {
			conn_reject(c, 504, "upstream timed out", false);
			conn_drive(c);
			return;
		}
		break;
	case CS_RESPONSE:
		resp_broken(c, 504, "upstream read timed out mid-response");
		if (!c->freed)
			conn_drive(c);
		return;
	case CS_BODY:
		conn_reject(c, 408, "request body not received in time", true);
		conn_drive(c);
		return;
	case CS_HEAD:
		if (buf_used(&c->in) > 0) {
			/* A started head that never completed (slowloris): 408, audited. */
			req_begin_unparsed(c, NULL);
			buf_reset(&c->in);
			conn_reject(c, 408, "request head not received in time", true);
			conn_drive(c);
			return;
		}
		break; /* idle keep-alive connection: closed quietly */
	case CS_HANDSHAKE:
		handshake_failed(c, "handshake not completed in time");
		break;
	case CS_PROXY:
		if (c->pp_seen)
			pp_rejected(c, "PROXY header not received in time");
		break;
	default:
		break;
	}
	conn_close(c);
}

static void conn_arm(conn *c)
{
	proxy_state *st = c->st_ref ? c->st_ref : c->w->st;
	const proxy_options *o = &st->o;
	uint64_t now = c->w->loop.now, t;

	switch (c->st) {
	case CS_HANDSHAKE:
		t = or_default(o->header_timeout_ns, DEF_HEADER_TIMEOUT);
		break;
	case CS_BODY:
		t = or_default(o->body_timeout_ns, DEF_BODY_TIMEOUT);
		break;
	case CS_HEAD:
		t = buf_used(&c->in) ? or_default(o->header_timeout_ns, DEF_HEADER_TIMEOUT)
		                     : or_default(o->keepalive_timeout_ns, DEF_KEEPALIVE);
		break;
	case CS_UPSTREAM:
	case CS_RESPONSE: {
		const proxy_upstream_opts *u = &o->upstreams[c->r.upstream];
		t = c->up && c->up->st != US_READY ? or_default(u->connect_timeout_ns, DEF_CONNECT)
		                                   : or_default(u->read_timeout_ns, DEF_READ);
		break;
	}
	default:
		t = or_default(o->header_timeout_ns, DEF_HEADER_TIMEOUT);
		break;
	}
	(void)now;
	ev_timer_set(&c->w->loop, &c->timer, c->anchor + t);
}

/* ---------------------------------------------------------------------------------------------
 * accept and handshake
 */
static void on_client_event(ev_loop *l, void *obj, uint32_t events)
{
	conn *c = obj;
	sock_event(&c->s, events);
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		c->peer_gone = (events & (EPOLLHUP | EPOLLERR)) != 0;
		c->rdhup = true;
	}
	conn_drive(c);
}

/* c->remote ("ip:port", "[ip6]:port"; X-Forwarded-For takes the address alone) and
 * c->remote_ip from sa (AF_INET or AF_INET6). */
static void set_remote(conn *c, const struct sockaddr *sa)
{
	size_t hl;
	bool v6 = sa->sa_family == AF_INET6;

	fmt_remote(sa, c->remote, sizeof(c->remote), &hl);
	c->remote_ip = span_of(c->remote + v6, hl);
	memcpy(&c->client, sa, v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
}

/* "ip:port" or "[ip6]:port" of sa (AF_INET or AF_INET6) in out; host_len: the address's. */
static void fmt_remote(const struct sockaddr *sa, char *out, size_t n, size_t *host_len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port;
	bool v6 = sa->sa_family == AF_INET6;

	if (!v6) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
	}
	snprintf(out, n, v6 ? "[%s]:%u" : "%s:%u", host, port);
	*host_len = strlen(host);
}

/* listeners[].proxy_protocol: whether the socket peer sa may send a PROXY header. */
static bool pp_trusted(const proxy_listener_opts *lo, const struct sockaddr *sa)
{
	for (size_t i = 0; i < lo->npp_from; i++)
		if (cidr_match(&lo->pp_from[i], sa))
			return true;
	return false;
}

/* c->via_tlv from the authority and unique id of an accepted header h (views into its bytes):
 * false when out of memory. Nothing is allocated for a header that had neither. */
static bool via_tlv_set(conn *c, const pp_hdr *h)
{
	static const char hex[] = "0123456789abcdef";

	if (h->authority_len == 0 && h->unique_id_len == 0)
		return true;
	via_tlv *t = malloc(sizeof(*t) + h->authority_len + 1 + 2 * h->unique_id_len + 1);
	if (t == NULL)
		return false;
	char *q = t->text;
	t->authority = t->unique_id = NULL;
	if (h->authority_len) {
		t->authority = q;
		memcpy(q, h->authority, h->authority_len);
		q += h->authority_len;
		*q++ = '\0';
	}
	if (h->unique_id_len) {
		t->unique_id = q;
		for (size_t i = 0; i < h->unique_id_len; i++) {
			*q++ = hex[h->unique_id[i] >> 4];
			*q++ = hex[h->unique_id[i] & 0x0f];
		}
		*q = '\0';
	}
	c->via_tlv = t;
	return true;
}

/* CS_PROXY: the header is peeked (MSG_PEEK), so that no byte after it leaves the socket
 * before TLS or HTTP reads it, and taken (recv) once complete. SOCK_OK: taken, remote is the
 * client the header names (via the socket peer); SOCK_AGAIN: wait for more; SOCK_ERR: the
 * connection is to be closed (rejections audited). */
static int pp_step(conn *c)
{
	uint8_t b[PP_MAX];
	pp_hdr h;
	ssize_t n;

	if (!c->s.rd_ready)
		return SOCK_AGAIN;
	do
		n = recv(c->s.fd, b, sizeof(b), MSG_PEEK);
	while (n == -1 && errno == EINTR);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->s.rd_ready = false;
		return SOCK_AGAIN;
	}
	if (n <= 0) {
		/* Closed or reset before a byte: a TCP health check or probe, not audited. */
		log_debug("proxy_protocol: %s closed without sending a header", c->remote);
		return SOCK_ERR;
	}
	c->pp_seen = true;
	ssize_t k = pp_parse(b, (size_t)n, &h);
	if (k == 0 && !c->rdhup) {
		c->s.rd_ready = false; /* a new edge comes with the rest */
		return SOCK_AGAIN;
	}
	if (k <= 0) {
		pp_rejected(c, k == 0 ? "connection closed inside the PROXY header" : h.err);
		return SOCK_ERR;
	}
	/* Copied before the header leaves the socket: h's views are into b. */
	if (!via_tlv_set(c, &h)) {
		pp_rejected(c, "out of memory for the PROXY header's TLVs");
		return SOCK_ERR;
	}
	ssize_t r;
	do
		r = recv(c->s.fd, b, (size_t)k, 0);
	while (r == -1 && errno == EINTR);
	if (r != k) {
		log_debug("proxy_protocol: %s: reading the header failed", c->remote);
		return SOCK_ERR;
	}
	metrics_inc(METRICS_PP_OK);
	if (!h.local) {
		snprintf(c->via, sizeof(c->via), "%s", c->remote);
		set_remote(c, (const struct sockaddr *)&h.src);
		log_debug("proxy_protocol: %s via %s", c->remote, c->via);
	}
	return SOCK_OK;
}

void conn_accept(worker *w, int fd, const lsock *ls, const struct sockaddr *sa, socklen_t salen)
{
	conn *c = calloc(1, sizeof(*c));
	proxy_state *st = w->st;

	if (c == NULL) {
		close(fd);
		return;
	}
	c->w = w;
	c->s.fd = fd;
	c->ls = ls;
	c->t_accept = tm_mono_ns();
	c->anchor = c->t_accept;
	buf_init(&c->in, PROXY_INBUF_MAX);
	buf_init(&c->out, OUT_MAX);
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		set_remote(c, sa);
	} else {
		snprintf(c->remote, sizeof(c->remote), "unix");
	}
	(void)salen;
	const proxy_listener_opts *lo = &st->o.listeners[ls->index];
	if (lo->proxy_protocol && !pp_trusted(lo, sa)) {
		/* Fail closed: only the configured balancers may say who the client is. */
		pp_rejected(c, "peer not in proxy_protocol_from");
		sock_close(&c->s);
		free(c);
		return;
	}
	if (ls->tls) {
		c->s.ssl = SSL_new(st->srv_ctx[ls->index]);
		if (c->s.ssl == NULL || !sock_ssl_set_fd(c->s.ssl, fd)) {
			sock_close(&c->s);
			free(c);
			return;
		}
		SSL_set_accept_state(c->s.ssl);
		/* The context releases record buffers whenever they are empty (other users of it
		 * want that); a client connection gives them back when it goes quiet instead. */
		SSL_clear_mode(c->s.ssl, SSL_MODE_RELEASE_BUFFERS);
		c->st = CS_HANDSHAKE;
	} else {
		c->st = CS_HEAD;
	}
	if (lo->proxy_protocol)
		c->st = CS_PROXY; /* the header first; then the state set above */
	c->timer.cb = conn_timeout;
	c->timer.obj = c;
	if (ev_add(&w->loop, &c->io, fd, on_client_event, c) != CUSTOS_OK) {
		log_warn("proxy: %s", err_msg());
		sock_close(&c->s);
		free(c);
		return;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	metrics_inc(METRICS_CONN_ACCEPTED);
	c->s.rd_ready = c->s.wr_ready = true;
	c->drain = w->draining; /* taken from a listener's queue as the drain began */
	conn_arm(c);
	conn_drive(c);
}

/* ---------------------------------------------------------------------------------------------
 * request head
 */
/* Request ids: a random 64-bit prefix per worker (drawn once, and again every 2^32
 * requests), the worker number and a counter: unique in the process, not guessable across
 * restarts, and no RNG call per request. */
static void new_request_id(worker *w, char out[PROXY_REQUEST_ID_LEN + 1])
{
	static const char hexd[] = "0123456789abcdef";

	if ((w->reqseq & 0xffffffffu) == 0) {
		uint8_t rnd[8];
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			memset(rnd, 0, sizeof(rnd));
		num_hex(rnd, sizeof(rnd), w->id_prefix);
	}
	w->reqseq++;
	memcpy(out, w->id_prefix, 16);
	uint64_t tail = ((uint64_t)(w->id & 0xffffffffu) << 32) | (w->reqseq & 0xffffffffu);
	for (int i = 15; i >= 0; i--, tail >>= 4)
		out[16 + i] = hexd[tail & 15];
	out[32] = '\0';
}

/* Authenticates from the Authorization field (bearer API key or JWT) and the certificate.
 * Returns NULL when authenticated, else the reason for a 401. */
static const char *authenticate(conn *c, const http1_head *h)
{
	proxy_state *st = c->st_ref;
	span auth;

	ident_clear_bearer(&c->id);
	c->id.method = c->id.has_cert ? IDENT_MTLS : IDENT_NONE;
	if (http1_header_count(h, SPAN_LIT("Authorization")) > 1)
		return "more than one Authorization field";
	if (!http1_header_get(h, SPAN_LIT("Authorization"), &auth))
		return c->id.has_cert || st->o.allow_anonymous ? NULL : "credentials required";
	span scheme = SPAN_LIT("Bearer ");
	if (auth.len <= scheme.len || !span_case_eq(span_of(auth.ptr, scheme.len), scheme))
		return "unsupported Authorization scheme (Bearer expected)";
	span tok = span_trim(span_of(auth.ptr + scheme.len, auth.len - scheme.len));
	if (tok.len == 0 || tok.len > PROXY_JWT_MAX)
		return "bearer token empty or too long";
	size_t dots = 0;
	for (size_t i = 0; i < tok.len; i++)
		dots += tok.ptr[i] == '.';
	if (dots == 2 && st->jwks) {
		if (jwt_verify(st->jwks, &st->o.jwt, tok, tm_wall_ns() / NS_PER_S, &c->id) !=
		    CUSTOS_OK) {
			log_info("auth: JWT refused: %s", err_msg());
			return "invalid token";
		}
		c->id.method = IDENT_JWT;
		return NULL;
	}
	ident_api_key(&c->id, tok, st->o.api_keys, st->o.napi_keys);
	c->id.method = IDENT_API_KEY;
	return NULL;
}

static custos_err build_uphead(conn *c, const http1_head *h)
{
	req *r = &c->r;
	/* The forwarding fields a client could forge are dropped: the model server gets only
	 * custos' own (X-Forwarded-Proto as the client connection is, X-Forwarded-For). So is
	 * Host: the upstream gets its own name once the route is known (req_host_upstream). */
	static const span drop[] = { SPAN_LIT("Host"),
		                     SPAN_LIT("Authorization"),
		                     SPAN_LIT("Expect"),
		                     SPAN_LIT("X-Request-Id"),
		                     SPAN_LIT("Content-Length"),
		                     SPAN_LIT("X-Forwarded-For"),
		                     SPAN_LIT("Accept-Encoding"),
		                     SPAN_LIT("Forwarded"),
		                     SPAN_LIT("X-Real-IP"),
		                     SPAN_LIT("X-Forwarded-Proto"),
		                     SPAN_LIT("X-Forwarded-Host"),
		                     SPAN_LIT("X-Forwarded-Port") };
	http1_header add[3] = {
		{ SPAN_LIT("X-Request-Id"), span_cstr(r->id) },
		{ SPAN_LIT("X-Forwarded-Proto"), c->s.ssl ? SPAN_LIT("https") : SPAN_LIT("http") },
		{ SPAN_LIT("X-Forwarded-For"), c->remote_ip },
	};
	http1_write_opts wo = {
		.framing = HTTP1_BODY_NONE,
		.drop = drop,
		.ndrop = CUSTOS_ARRAY_LEN(drop),
		.add = add,
		.nadd = c->remote_ip.len ? 3 : 2, /* no address to forward from a Unix socket */
	};
	/* Accept-Encoding waits for the decision: with responses inspected the upstream is
	 * asked for identity (a compressed answer could not be inspected). */
	r->encoded = ingress_inspect_encoded(h);
	buf_init(&r->accept_enc, HTTP1_MAX_HEAD_BYTES);
	unsigned ctypes = 0;
	for (size_t i = 0; i < h->nhdrs; i++) {
		span v = h->hdrs[i].value;
		if (span_case_eq(h->hdrs[i].name, SPAN_LIT("Accept-Encoding"))) {
			GUARD(buf_printf(&r->accept_enc, "Accept-Encoding: %.*s\r\n", (int)v.len,
			                 v.ptr));
		} else if (span_case_eq(h->hdrs[i].name, SPAN_LIT("Content-Type"))) {
			ctypes++;
			size_t bl = 0;
			if (v.len > 10 &&
			    span_case_eq(span_of(v.ptr, 10), SPAN_LIT("multipart/"))) {
				r->multipart = true;
				if (egress_multipart_boundary(v, r->mp_boundary, &bl))
					r->mp_blen = (uint8_t)bl;
			}
		}
	}
	/* Two Content-Type fields, one of them multipart: which one the model server reads is
	 * its parser's choice, so custos could read the body (and its model) one way and the
	 * server another; such a request is refused (multipart_model, inspection). */
	r->mp_ambiguous = r->multipart && ctypes > 1;
	buf_init(&r->uphead, HTTP1_MAX_HEAD_BYTES + 1024);
	buf_take_block(c->w, &r->uphead);
	/* The upstream gets the path as the policy judged it, the query as received. */
	char *target = NULL;
	if (r->npath) {
		size_t pl = strlen(r->npath), ql = strlen(r->query);
		target = malloc(pl + ql + 1);
		ENSURE(target != NULL, CUSTOS_ERR_NOMEM, "out of memory");
		memcpy(target, r->npath, pl);
		memcpy(target + pl, r->query, ql + 1);
		wo.target = span_of(target, pl + ql);
	}
	custos_err we = http1_write_request_head(&r->uphead, h, &wo);
	free(target);
	GUARD(we);
	/* The final CRLF comes after Content-Length, known once the body is final. */
	ENSURE(buf_used(&r->uphead) >= 2, CUSTOS_ERR_INTERNAL, "short head");
	const uint8_t *p = buf_ptr(&r->uphead);
	const uint8_t *lf = memchr(p, '\n', buf_used(&r->uphead));
	ENSURE(lf != NULL, CUSTOS_ERR_INTERNAL, "no request line");
	r->uphead_line = (size_t)(lf - p) + 1;
	r->uphead.len -= 2;
	return CUSTOS_OK;
}

/* The upstream's Host field, first after the request line (RFC 9110 §7.2), now that the
 * route names the upstream. The client's Host never goes upstream: a model server behind a
 * name-based virtual host (a gateway fronting several applications) would otherwise answer
 * as whichever one the client named, not the model the policy judged. */
static custos_err req_host_upstream(conn *c)
{
	req *r = &c->r;
	const char *h = c->st_ref->o.upstreams[r->upstream].host;
	if (h == NULL)
		h = "localhost";
	size_t hl = strlen(h), add = hl + 8; /* "Host: " h "\r\n" */
	size_t used = buf_used(&r->uphead);
	ENSURE(r->uphead_line > 0 && r->uphead_line <= used, CUSTOS_ERR_INTERNAL,
	       "no request line");
	GUARD(buf_reserve(&r->uphead, add));
	buf_commit(&r->uphead, add); /* written below */
	uint8_t *p = r->uphead.data + r->uphead.off;
	memmove(p + r->uphead_line + add, p + r->uphead_line, used - r->uphead_line);
	memcpy(p + r->uphead_line, "Host: ", 6);
	memcpy(p + r->uphead_line + 6, h, hl);
	memcpy(p + r->uphead_line + 6 + hl, "\r\n", 2);
	return CUSTOS_OK;
}

static void on_request_body_done(conn *c);

/* The path every decision here takes (the OpenAI body check, path routes) is the one the
 * policy judges: policy_path_normalize's spelling. Taken raw, "//v1/chat/completions" or
 * "/%761/chat/completions" skipped the body's model and max_tokens checks while a model
 * server that decodes or collapses (uvicorn, cpp-httplib, nginx) answered it as the chat
 * route; the upstream is sent this spelling too (build_uphead), so what it resolves is what
 * was judged. A path the normaliser refuses keeps npath NULL: the policy denies it. */
static void req_normalize_path(req *r)
{
	char nb[POLICY_MAX_PATH];
	size_t nl = 0;
	const char *why = NULL;

	r->query = "";
	if (r->path == NULL)
		return;
	const char *qm = strchr(r->path, '?');
	if (qm)
		r->query = qm;
	size_t rl = qm ? (size_t)(qm - r->path) : strlen(r->path);
	if (r->path[0] != '/' ||
	    !policy_path_normalize(span_cstr(r->path), nb, sizeof(nb), &nl, &why))
		return;
	/* Already in the one spelling (nearly every request): the path as received serves. */
	if (nl == rl && memcmp(nb, r->path, rl) == 0)
		return;
	r->npath = span_dup(span_of(nb, nl));
}

/* The path to decide on: normalised, or as received when the normaliser refused it. */
static const char *req_api_path(const req *r)
{
	return r->npath ? r->npath : r->path;
}

static void on_head(conn *c, http1_parser *p, size_t head_len)
{
	req *r = &c->r;
	const http1_head *h = &p->head;
	worker *w = c->w;

	r->active = true;
	r->t_start = tm_mono_ns();
	if (c->st_ref == NULL)
		c->st_ref = state_ref(worker_state(w));
	new_request_id(w, r->id);
	r->meth = h->meth;
	proxy_ignore(span_copy_cstr(h->method, r->method, sizeof(r->method)));
	r->path = span_dup(h->path.len ? h->path : h->target);
	req_normalize_path(r);
	r->client_keep_alive = h->keep_alive; /* while draining: decided at the answer */
	r->client_http10 = h->version == 10;
	r->bytes_in = head_len;

	if (h->form != HTTP1_TARGET_ORIGIN) {
		buf_consume(&c->in, head_len);
		conn_reject(c, 400, "only origin-form request targets are accepted", true);
		return;
	}
	const char *why = authenticate(c, h);
	if (why) {
		buf_consume(&c->in, head_len);
		conn_reject(c, 401, why, true);
		return;
	}
	uint64_t max_body = c->st_ref->max_body;
	if (h->framing == HTTP1_BODY_LENGTH && h->content_length > max_body) {
		buf_consume(&c->in, head_len);
		/* Refused before the policy is asked; the event still names the principal. */
		decide_principal(c->st_ref->pol, &c->id, &r->dec);
		if (c->id.method == IDENT_API_KEY && !r->dec.principal_known)
			conn_reject(c, 401, "unknown API key", true);
		else
			conn_reject(c, 413, "request body larger than max_body", true);
		return;
	}
	if (build_uphead(c, h) != CUSTOS_OK) {
		buf_consume(&c->in, head_len);
		conn_reject(c, 400, "request head cannot be forwarded", true);
		return;
	}
	buf_init(&r->body, max_body);
	http1_limits bl = c->st_ref->hlim;
	bl.max_body = max_body;
	http1_body_init(&r->bdec, h, &bl);
	/* "Content-Length: 0" is a complete, empty body: nothing to wait for. */
	bool has_body = (h->framing == HTTP1_BODY_LENGTH && h->content_length > 0) ||
	                h->framing == HTTP1_BODY_CHUNKED;
	if (has_body && h->expect_continue && buf_used(&c->in) == head_len)
		proxy_ignore(buf_append_cstr(&c->out, "HTTP/1.1 100 Continue\r\n\r\n"));
	buf_consume(&c->in, head_len);
	if (has_body) {
		c->st = CS_BODY;
		return;
	}
	on_request_body_done(c);
}

/* ---------------------------------------------------------------------------------------------
 * body, policy, route
 */
/* Path prefix match on whole segments: "/v1/embeddings" matches "/v1/embeddings",
 * "/v1/embeddings/x" and "/v1/embeddings?q", not "/v1/embeddingsx". A percent-encoded
 * unreserved character in the request ("%65") counts as the character (RFC 3986 6.2.2.2), so a
 * second spelling cannot dodge a path route; encoded reserved ones ("%2F") never match. */
static bool path_prefix_match(const char *path, const char *prefix)
{
	const char *p = path;

	for (const char *q = prefix; *q; q++) {
		char ch = *p;
		int hi = ch == '%' ? num_hex_digit((unsigned char)p[1]) : -1;
		int lo = hi >= 0 ? num_hex_digit((unsigned char)p[2]) : -1;
		if (lo >= 0) {
			int v = hi * 16 + lo;
			bool unreserved = (v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') ||
			                  (v >= '0' && v <= '9') || v == '-' || v == '.' ||
			                  v == '_' || v == '~';
			if (!unreserved || v != *q)
				return false;
			p += 3;
			continue;
		}
		if (ch != *q)
			return false;
		p++;
	}
	return *p == '\0' || *p == '/' || *p == '?';
}

static bool route_match(const proxy_route_opts *ro, const req *r)
{
	if (ro->path_prefix && !path_prefix_match(req_api_path(r), ro->path_prefix))
		return false;
	if (ro->model && ro->model[0] == '\0') /* "": requests that name no model */
		return !(r->has_oa && r->oa.has_model);
	if (ro->model && !(r->has_oa && strcmp(ro->model, r->oa.model) == 0))
		return false;
	return true;
}

static void up_start(conn *c);

/* r->oa from a multipart body on an OpenAI path: its form-data fields "model" (at most one,
 * not encoded, printable) and "stream" (at most one, not encoded, "true" or "false"), nothing
 * else; false when the request was refused (400). */
static bool multipart_model(conn *c, span body)
{
	req *r = &c->r;
	char why[200];
	span v;
	unsigned n = 0;
	if (r->mp_ambiguous) {
		conn_reject(c, 400, "multipart request with more than one Content-Type field",
		            false);
		return false;
	}
	if (r->mp_blen == 0) {
		conn_reject(c, 400, "multipart request body without one valid boundary parameter",
		            false);
		return false;
	}
	if (egress_multipart_field(span_of(r->mp_boundary, r->mp_blen), body, "model", &v, &n) !=
	    CUSTOS_OK) {
		snprintf(why, sizeof(why), "multipart request body is malformed: %s", err_msg());
		conn_reject(c, 400, why, false);
		return false;
	}
	if (n > 1) {
		conn_reject(c, 400, "multipart request body has more than one 'model' field",
		            false);
		return false;
	}
	r->oa = (openai_request){ 0 };
	if (n == 1) {
		bool ok = v.len <= OPENAI_MAX_MODEL;
		for (size_t i = 0; ok && i < v.len; i++)
			ok = (unsigned char)v.ptr[i] >= 0x20 && v.ptr[i] != 0x7f;
		if (!ok) {
			conn_reject(c, 400,
			            "multipart request body: the 'model' field is not a model name "
			            "(control characters, or over 256 bytes)",
			            false);
			return false;
		}
		memcpy(r->oa.model, v.ptr, v.len);
		r->oa.model[v.len] = '\0';
		r->oa.has_model = true;
	}
	/* "stream" (OpenAI's transcriptions: the answer as SSE), read as strictly as "model":
	 * where a JSON body's stream goes, so the event and the SSE handling see it. */
	if (egress_multipart_field(span_of(r->mp_boundary, r->mp_blen), body, "stream", &v, &n) !=
	    CUSTOS_OK) {
		snprintf(why, sizeof(why), "multipart request body is malformed: %s", err_msg());
		conn_reject(c, 400, why, false);
		return false;
	}
	if (n > 1) {
		conn_reject(c, 400, "multipart request body has more than one 'stream' field",
		            false);
		return false;
	}
	if (n == 1) {
		if (span_eq(v, SPAN_LIT("true"))) {
			r->oa.stream = true;
		} else if (!span_eq(v, SPAN_LIT("false"))) {
			conn_reject(
			        c, 400,
			        "multipart request body: the 'stream' field is neither 'true' nor "
			        "'false'",
			        false);
			return false;
		}
	}
	r->has_oa = true;
	return true;
}

static void on_request_body_done(conn *c)
{
	req *r = &c->r;
	proxy_state *st = c->st_ref;
	const proxy_options *o = &st->o;
	span body = buf_span(&r->body);

	/* A multipart body (an OpenAI file or audio upload) names its model in a form field: read
	 * by the same strict rules its parts are inspected by, so custos and the model server
	 * cannot route on two different names. */
	const char *apath = req_api_path(r);
	if (body.len > 0 && r->multipart && strncmp(apath, "/v1/", 4) == 0) {
		if (!multipart_model(c, body))
			return;
	} else if (body.len > 0 && strncmp(apath, "/v1/", 4) == 0) {
		/* OpenAI fields from JSON bodies (bounded size and depth). */
		jsonr_limits jl = { .max_depth = o->max_json_depth };
		if (openai_request_parse(body, &jl, &r->oa) != CUSTOS_OK) {
			char why[160];
			snprintf(why, sizeof(why), "request body is not valid JSON: %s", err_msg());
			conn_reject(c, 400, why, false);
			return;
		}
		r->has_oa = true;
	}
	/* Route. */
	size_t ri;
	for (ri = 0; ri < o->nroutes; ri++)
		if (route_match(&o->routes[ri], r))
			break;
	if (ri == o->nroutes) {
		conn_reject(c, 404, "no route for this path and model", false);
		return;
	}
	r->upstream = o->routes[ri].upstream;
	r->route_model = o->routes[ri].model_id;

	/* Policy. */
	uint64_t t0 = tm_mono_ns();
	const char *qm = strchr(r->path, '?');
	const char *model = o->routes[ri].model_id ? o->routes[ri].model_id
	                    : r->has_oa            ? r->oa.model
	                                           : "";
	decide_in in = {
		.id = &c->id,
		.method = span_cstr(r->method),
		.path = span_of(r->path, qm ? (size_t)(qm - r->path) : strlen(r->path)),
		.model = span_cstr(model),
		.taint = o->taint_get && *model && decide_needs_taint(st->pol)
		                 ? o->taint_get(o->taint_get_arg, model)
		                 : -1,
		.body_size = body.len,
		.authenticated = c->id.method != IDENT_NONE,
		.client = c->client.ss_family != AF_UNSPEC ? (const struct sockaddr *)&c->client
		                                           : NULL,
	};
	decide_eval(st->pol, &in, &r->dec);
	uint64_t t1 = tm_mono_ns(); /* also the time of the rate check and the upstream start */
	r->t_policy = t1 - t0;
	if (c->id.method == IDENT_API_KEY && !r->dec.principal_known) {
		conn_reject(c, 401, "unknown API key", false);
		return;
	}
	if (c->id.method == IDENT_NONE && !o->allow_anonymous) {
		conn_reject(c, 401, "credentials required", false);
		return;
	}
	if (!r->dec.allow) {
		conn_reject(c, 403, r->dec.reason ? r->dec.reason : "denied by policy", false);
		return;
	}
	if (in.model.len) { /* request-scoped egress (docs/EGRESS.md "Attribution") */
		char mid[EGRESS_ID_MAX];
		/* The registry holds a policy principal id (docs/EGRESS.md "Attribution"): an
		 * identity no principal matched is named "jwt:<sub>", "cert:<name>" or
		 * "anonymous" in the trail, names no principal may have; its egress calls are
		 * judged with no principal. */
		if (span_copy_cstr(in.model, mid, sizeof(mid)) == CUSTOS_OK)
			r->egress_token = egress_ingress_begin(
			        mid, r->id, r->dec.principal_known ? r->dec.principal : "");
	}
	/* Obligations. In shadow mode they are checked but not enforced: the request goes on,
	 * and its event records what enforcement would have answered (decision shadow_deny,
	 * shadow_status). A request that a rule or an obligation would have refused is not
	 * counted against the rate or charged to the budget, as under enforcement. */
	unsigned ost = 0;
	const char *owhy = NULL;
	uint64_t retry_ns = 0;
	if (!r->dec.verdict_allow) {
		r->shadow_status = 403; /* shadow mode: a deny rule matched */
	} else if (r->dec.max_body && body.len > r->dec.max_body) {
		ost = 413;
		owhy = "request body larger than the policy's max_body";
	} else if (r->dec.max_tokens && r->has_oa && r->oa.has_max_tokens &&
	           r->oa.max_tokens > r->dec.max_tokens) {
		ost = 403;
		owhy = "max_tokens above the policy's limit";
	} else if (r->dec.rate || r->dec.tokens) {
		limit_result lr = limiter_check(c->w->srv->lim, r->dec.principal, r->dec.rate_per,
		                                r->dec.tokens_per, t1, &retry_ns);
		if (lr != LIMIT_OK) {
			ost = 429;
			owhy = lr == LIMIT_RATE ? "request rate limit exceeded"
			                        : "token budget exhausted";
		}
	}
	if (ost && !r->dec.shadow) {
		r->retry_ns = retry_ns;
		conn_reject(c, ost, owhy, false);
		return;
	}
	if (ost) {
		r->dec.verdict_allow = false;
		r->dec.reason = owhy;
		r->shadow_status = ost;
	}
	if (!emit_ready(c->w->srv->audit, c->w->srv->audit_fail_open)) {
		conn_reject(c, 503, "audit trail unavailable: request refused (fail closed)",
		            false);
		return;
	}
	/* on_full: deny: the request's event gets its queue slot now, or the request is refused
	 * (its event is written when it ends, and must not be the one a full queue refuses). */
	if (c->w->srv->audit && audit_reserve(c->w->srv->audit, &r->audit_held) != CUSTOS_OK) {
		conn_reject(c, 503, "audit queue full: request refused (audit.on_full: deny)",
		            false);
		return;
	}
	/* `audit: bodies_hashed`: the request body as the client sent it (before any rewrite). */
	if (r->dec.audit >= POLICY_AUDIT_BODIES_HASHED) {
		r->bh = xcalloc(1, sizeof(*r->bh));
		if (!sha256_hex(body, r->bh->req_hex))
			snprintf(r->bh->req_hex, sizeof(r->bh->req_hex), "unavailable");
		if (r->dec.audit >= POLICY_AUDIT_BODIES) {
			r->bh->keep_max = (size_t)c->st_ref->o.audit_body_max;
			r->bh->keep = xcalloc(1, r->bh->keep_max);
		}
	}
	/* Content inspection of the prompt (redaction rewrites r->body). */
	if (r->dec.has_inspect) {
		const char *iwhy = NULL;
		if (r->encoded && !r->dec.shadow && ingress_inspect_prompt_wanted(&r->dec)) {
			conn_reject(c, 415,
			            "request body with a Content-Encoding cannot be inspected",
			            false);
			return;
		}
		if (r->mp_ambiguous && ingress_inspect_prompt_wanted(&r->dec) && !r->dec.shadow) {
			conn_reject(
			        c, 400,
			        "multipart request with more than one Content-Type field cannot "
			        "be inspected",
			        false);
			return;
		}
		unsigned ist =
		        r->multipart ? ingress_inspect_request_multipart(
		                               &r->insp, &r->dec,
		                               span_of(r->mp_boundary, r->mp_blen), &r->body, &iwhy)
		                     : ingress_inspect_request(&r->insp, &r->dec, r->has_oa, &r->oa,
		                                               &r->body, &iwhy);
		if (ist != 0) {
			conn_reject(c, ist, iwhy, false);
			return;
		}
		body = buf_span(&r->body);
	}
	/* Token accounting on a stream needs the final usage event. A multipart body is not
	 * rewritten: its stream is charged on the usage the server sends, or an estimate. */
	if (r->dec.tokens && r->has_oa && r->oa.stream && !(r->oa.include_usage) && !r->multipart) {
		buf nb;
		bool changed = false;
		buf_init(&nb, r->body.max + 64);
		if (openai_add_include_usage(body, &nb, &changed) == CUSTOS_OK && changed) {
			buf_free(&r->body);
			r->body = nb;
			r->usage_injected = true;
			buf_init(&r->held, 2 * SSE_MAX_EVENT_BYTES);
		} else {
			buf_free(&nb);
		}
	}
	if (r->bh) { /* ... and as forwarded, when redaction or include_usage rewrote it */
		char h[65];
		if (!sha256_hex(buf_span(&r->body), h))
			snprintf(h, sizeof(h), "unavailable");
		if (strcmp(h, r->bh->req_hex) != 0)
			memcpy(r->bh->fwd_hex, h, sizeof(h));
	}
	if (req_host_upstream(c) != CUSTOS_OK) {
		conn_reject(c, 431, "request head too large to forward", false);
		return;
	}
	if (r->meth == HTTP1_M_POST || r->meth == HTTP1_M_PUT || r->meth == HTTP1_M_PATCH ||
	    buf_used(&r->body)) {
		if (buf_printf(&r->uphead, "Content-Length: %zu\r\n", buf_used(&r->body)) !=
		    CUSTOS_OK) {
			conn_reject(c, 431, "request head too large to forward", false);
			return;
		}
	}
	if (buf_append_span(&r->uphead, ingress_inspect_response_on(r->insp)
	                                        ? SPAN_LIT("Accept-Encoding: identity\r\n")
	                                        : buf_span(&r->accept_enc)) != CUSTOS_OK ||
	    buf_append_cstr(&r->uphead, "\r\n") != CUSTOS_OK) {
		conn_reject(c, 431, "request head too large to forward", false);
		return;
	}
	if (r->bh)
		r->bh->req_forwarded = true;
	up_start(c);
}

/* ---------------------------------------------------------------------------------------------
 * upstream
 */
static void on_up_event(ev_loop *l, void *obj, uint32_t events)
{
	upconn *u = obj;

	sock_event(&u->s, events);
	if (u->owner) {
		conn_drive(u->owner);
		return;
	}
	/* Idle in the pool: input, hang-up or error means the peer closed or misbehaved (a
	 * write-space edge alone is harmless). */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		pool_remove(u->w, u);
		up_close(u);
	}
}

static custos_err parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (strncmp(a, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		un->sun_family = AF_UNIX;
		GUARD(span_copy_cstr(span_cstr(a + 5), un->sun_path, sizeof(un->sun_path)));
		*len = sizeof(*un);
		return CUSTOS_OK;
	}
	const char *colon = strrchr(a, ':');
	ENSURE(colon, CUSTOS_ERR_INVAL, "address %s: host:port expected", a);
	uint64_t port;
	GUARD(num_parse_u64(span_cstr(colon + 1), 0, 65535, &port));
	char host[256];
	span hs = span_of(a, (size_t)(colon - a));
	if (hs.len >= 2 && hs.ptr[0] == '[' && hs.ptr[hs.len - 1] == ']')
		hs = span_of(hs.ptr + 1, hs.len - 2);
	GUARD(span_copy_cstr(hs, host, sizeof(host)));
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "localhost") == 0 || host[0] == '\0')
		memcpy(host, "127.0.0.1", 10);
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*len = sizeof(*in);
		return CUSTOS_OK;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
		return CUSTOS_OK;
	}
	return err_set(CUSTOS_ERR_INVAL, "address %s: a numeric IP address is required", a);
}

custos_err proxy_parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len);
custos_err proxy_parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len)
{
	return parse_address(a, ss, len);
}

static upconn *up_connect(conn *c, size_t ui, bool *failed_now)
{
	proxy_state *st = c->st_ref;
	const proxy_upstream_opts *uo = &st->o.upstreams[ui];
	struct sockaddr_storage ss;
	socklen_t len;

	int fd = -1;
	*failed_now = false;
	if (uo->sandbox) {
		/* A socket made inside the sandbox's network namespace (loopback only there),
		 * connecting to the model server's port; the connect may be in progress. */
		if (sandbox_connect_inside(uo->sandbox, uo->sandbox_port, &fd) != CUSTOS_OK) {
			log_debug("upstream %s: sandbox connect: %s", uo->name, err_msg());
			*failed_now = true;
			return NULL;
		}
	} else if (uo->connect_fn) {
		/* A stream over a VM's channel (custos/vm.h): one end of a socketpair. */
		if (uo->connect_fn(uo->connect_arg, &fd) != CUSTOS_OK) {
			log_debug("upstream %s: connect: %s", uo->name, err_msg());
			*failed_now = true;
			return NULL;
		}
		int fl = fcntl(fd, F_GETFL);
		if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
			close(fd);
			*failed_now = true;
			return NULL;
		}
	} else {
		if (parse_address(uo->address, &ss, &len) != CUSTOS_OK) {
			*failed_now = true;
			return NULL;
		}
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			*failed_now = true;
			return NULL;
		}
		if (ss.ss_family != AF_UNIX) {
			int one = 1;
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		int r;
		do
			r = connect(fd, (struct sockaddr *)&ss, len);
		while (r == -1 && errno == EINTR);
		if (r == -1 && errno != EINPROGRESS) {
			log_debug("upstream %s: connect: %s", uo->name, strerror(errno));
			close(fd);
			*failed_now = true;
			return NULL;
		}
	}
	upconn *u = calloc(1, sizeof(*u));
	if (u == NULL) {
		close(fd);
		*failed_now = true;
		return NULL;
	}
	u->w = c->w;
	u->s.fd = fd;
	u->upstream = ui;
	u->gen = st->gen;
	u->st = US_CONNECTING;
	u->timer.cb = up_idle_timeout;
	u->timer.obj = u;
	buf_init(&u->in, PROXY_UPIN_MAX);
	if (uo->tls) {
		u->s.ssl = SSL_new(st->up_ctx[ui]);
		if (u->s.ssl == NULL || !sock_ssl_set_fd(u->s.ssl, fd)) {
			up_free(u);
			*failed_now = true;
			return NULL;
		}
		char host[256];
		const char *name = uo->tls_name
		                           ? uo->tls_name
		                           : tls_upstream_name(uo->address, host, sizeof(host));
		/* No name to check (or none set) would verify the chain alone: any certificate
		 * the CA issued. Fail closed. */
		if (name == NULL || SSL_set1_host(u->s.ssl, name) != 1) {
			log_warn("upstream %s: no name to verify its certificate against",
			         uo->address);
			up_free(u);
			*failed_now = true;
			return NULL;
		}
		tls_sni_set(u->s.ssl, name);
		/* This worker's newest session with this upstream, if any (tls.c). */
		tls_client_session_offer(u->s.ssl, c->w->id);
		SSL_set_connect_state(u->s.ssl);
	}
	if (ev_add(&c->w->loop, &u->io, fd, on_up_event, u) != CUSTOS_OK) {
		up_free(u);
		*failed_now = true;
		return NULL;
	}
	return u;
}

static upconn *pool_take(worker *w, size_t ui, uint64_t gen)
{
	upool *p = &w->pools[ui];

	while (p->idle) {
		upconn *u = p->idle;
		p->idle = u->next;
		p->n--;
		u->next = NULL;
		ev_timer_clear(&w->loop, &u->timer);
		/* A peer that closed or sent anything while idle was dropped by its event
		 * (on_up_event); no peek per request. */
		if (u->gen != gen || (u->s.ssl && SSL_has_pending(u->s.ssl))) {
			up_close(u);
			continue;
		}
		u->reused = true;
		return u;
	}
	return NULL;
}

static void pool_put(worker *w, upconn *u, const proxy_state *st)
{
	const proxy_upstream_opts *uo = &st->o.upstreams[u->upstream];
	upool *p = &w->pools[u->upstream];

	u->owner = NULL;
	if (w->draining || u->gen != st->gen || uo->pool_off ||
	    p->n >= or_default(uo->pool_max, DEF_POOL_MAX) || buf_used(&u->in) > 0) {
		up_close(u);
		return;
	}
	u->next = p->idle;
	p->idle = u;
	p->n++;
	ev_timer_set(&w->loop, &u->timer,
	             w->loop.now + or_default(uo->idle_timeout_ns, DEF_UP_IDLE));
}

static void up_failed(conn *c, const char *why);
static void up_refused_alert(conn *c);

static void up_attempt(conn *c)
{
	req *r = &c->r;
	bool failed_now;

	r->attempts++;
	r->up_sent = 0;
	c->anchor = c->w->loop.now;
	upconn *u = pool_take(c->w, r->upstream, c->st_ref->gen);
	if (u == NULL)
		u = up_connect(c, r->upstream, &failed_now);
	if (u == NULL) { /* nothing sent: up_failed retries once */
		up_failed(c, "upstream connection failed");
		return;
	}
	u->owner = c;
	c->up = u;
	buf_reset(&u->in);
	buf_give_block(c->w, &r->upout);
	/* Room for exactly this request; a small one gets a cached block (its limit is then
	 * the block, which it never reaches). */
	size_t need = buf_used(&r->uphead) + buf_used(&r->body) + 1;
	buf_init(&r->upout, need < BUF_BLOCK ? BUF_BLOCK - 1 : need);
	buf_take_block(c->w, &r->upout);
	if (buf_append_span(&r->upout, buf_span(&r->uphead)) != CUSTOS_OK ||
	    buf_append_span(&r->upout, buf_span(&r->body)) != CUSTOS_OK) {
		conn_reject(c, 500, "out of memory", true);
		return;
	}
	if (r->rp == NULL && (r->rp = rp_take(c->w)) == NULL) {
		conn_reject(c, 503, "out of memory", true);
		return;
	}
	http1_parser_init_response(r->rp, NULL, r->meth);
	r->resp_head_done = false;
	c->st = CS_UPSTREAM;
	if (u->reused) {
		u->st = US_READY;
		u->s.wr_ready = true; /* idle: its send buffer is empty */
	}
}

static void up_start(conn *c)
{
	c->r.t_up_start = tm_mono_ns();
	up_attempt(c);
}

static bool idempotent(http1_method m)
{
	return m == HTTP1_M_GET || m == HTTP1_M_HEAD || m == HTTP1_M_PUT || m == HTTP1_M_DELETE ||
	       m == HTTP1_M_OPTIONS;
}

/* The upstream failed before a response byte: retry once where allowed, else 502. */
static void up_failed(conn *c, const char *why)
{
	req *r = &c->r;

	metrics_inc(METRICS_UPSTREAM_ERRORS);
	bool nothing_sent = r->up_sent == 0;
	bool reused = c->up && c->up->reused;

	if (c->up) {
		c->up->owner = NULL;
		up_close(c->up);
		c->up = NULL;
	}
	log_debug("upstream %s: %s (attempt %u)", c->st_ref->o.upstreams[r->upstream].name, why,
	          r->attempts);
	if (r->attempts < 2 && (nothing_sent || (reused && idempotent(r->meth)))) {
		up_attempt(c);
		return;
	}
	conn_reject(c, 502, why, false);
}

/* The upstream ended the connection with a TLS alert before a response byte: with TLS 1.3 its
 * refusal of custos' client certificate (or of its lack of one) comes so, on the first read
 * after the handshake. That is the upstream's answer, not a lost connection: a 502 that says
 * so, never retried (the next attempt would present the same certificate). */
static void up_refused_alert(conn *c)
{
	char why[160];
	upconn *u = c->up;

	metrics_inc(METRICS_UPSTREAM_ERRORS);
	tls_peer_alert_reason(u->s.ssl, u->s.peer_alert - 1, why, sizeof(why));
	log_info("upstream %s: %s", c->st_ref->o.upstreams[c->r.upstream].name, why);
	u->owner = NULL;
	up_close(u);
	c->up = NULL;
	conn_reject(c, 502, why, false);
}

/* The usage-only chunk of a stream: {"choices":[], ..., "usage":{...}}. */
static bool usage_only_chunk(span data)
{
	openai_chunk ck;
	return openai_chunk_parse(data, &ck) == CUSTOS_OK && ck.ndeltas == 0 && ck.usage.present;
}

/* Reads usage from a piece of the response body. With out (a stream custos asked for usage
 * on the client's behalf): the piece's complete events are appended to out whole, except the
 * usage-only chunk, which a client that did not ask for it may not expect (a loop reading
 * choices[0] of every chunk). An event still incomplete waits in the parser for its end.
 * Returns false when the stream cannot be followed (an event over the SSE limit). */
static bool resp_feed_usage(conn *c, span data, buf *out)
{
	req *r = &c->r;

	if (r->is_sse) {
		const char *p = data.ptr;
		size_t n = data.len;
		while (n > 0) {
			sse_event ev;
			bool have = false;
			ssize_t k = sse_parse(&r->sse, p, n, &ev, &have);
			if (k < 0) {
				r->is_sse = false; /* stop looking; forwarding goes on */
				return out == NULL;
			}
			bool usage = have && ev.has_data && !ev.done &&
			             memmem(ev.data.ptr, ev.data.len, "\"usage\"", 7);
			if (usage) {
				openai_usage us;
				if (openai_usage_parse(ev.data, &us) == CUSTOS_OK && us.present)
					r->usage = us;
			}
			if (have && ev.has_data && !ev.done &&
			    !(usage && usage_only_chunk(ev.data)))
				r->sse_events++;
			else if (have && out && usage && usage_only_chunk(ev.data))
				have = false; /* not forwarded */
			if (have && out && buf_append_span(out, ev.raw) != CUSTOS_OK)
				return false;
			p += k;
			n -= (size_t)k;
			if (k == 0 && !have)
				break;
		}
	} else if (r->uscan) {
		openai_usage_scan_feed(r->uscan, data);
	}
	return true;
}

static void finish_request(conn *c)
{
	req *r = &c->r;
	proxy_state *st = c->st_ref;
	upconn *u = c->up;

	r->t_up_done = tm_mono_ns();
	if (r->uscan) {
		openai_usage us;
		openai_usage_scan_end(r->uscan, &us);
		if (us.present)
			r->usage = us;
	}
	const char *decision = r->dec.verdict_allow ? "allow" : "shadow_deny";
	const char *reason = r->dec.reason;
	if (r->insp)
		ingress_inspect_outcome(r->insp, &decision, &reason);
	if (r->bh)
		r->bh->resp_whole = true;
	if (r->bh && r->bh->resp) /* the whole response went to the client */
		r->bh->resp_done = sha256_final_hex(r->bh->resp, r->bh->resp_hex);
	conn_audit(c, "http.request", decision, reason);
	c->up = NULL;
	if (u) {
		/* An answer that came before the whole request was written (an early 413...)
		 * leaves a half-sent request on the connection: reusing it would desynchronise
		 * the next request. */
		if (r->up_keep_alive && buf_used(&r->upout) == 0)
			pool_put(c->w, u, st);
		else
			up_close(u);
	}
	/* Draining, the answer said close unless more was waiting (client_head); one that went
	 * out before the drain began keeps the connection until conn_drive sees it idle. */
	bool keep = r->client_keep_alive;
	c->anchor = c->w->loop.now;
	req_reset(c->w, r);
	state_unref(c->st_ref);
	c->st_ref = NULL;
	c->st = keep ? CS_HEAD : CS_CLOSING;
}

/* The response head goes to the client (or waits in r->rhead, a held JSON body's).
 * CUSTOS_OK; CUSTOS_ERR_DENIED when the response was refused instead (content-encoded under
 * inspection: answered 502, the request is over, c->up gone); another error: close c. */
static custos_err client_head(conn *c, const http1_head *h)
{
	req *r = &c->r;
	http1_header add[1] = { { SPAN_LIT("X-Request-Id"), span_cstr(r->id) } };
	static const span drop[] = { SPAN_LIT("X-Request-Id"), SPAN_LIT("Content-Length") };
	http1_write_opts wo = { .drop = drop, .ndrop = 2, .add = add, .nadd = 1 };
	http1_framing fr = h->framing;
	bool held = false;

	if (r->bh) { /* `audit: bodies_hashed`: the body this head starts */
		r->bh->kept = 0;
		r->bh->resp_len = 0;
		EVP_MD_CTX_free(r->bh->resp);
		r->bh->resp = EVP_MD_CTX_new();
		if (r->bh->resp && EVP_DigestInit_ex(r->bh->resp, EVP_sha256(), NULL) != 1) {
			EVP_MD_CTX_free(r->bh->resp);
			r->bh->resp = NULL;
		}
	}
	/* A body inspection rewrites loses its length: re-framed below, or, for a body held whole
	 * (JSON), its head is held too and gets the length with the verdict (resp_held_end). */
	if (r->insp && ingress_inspect_response_begin(r->insp, h)) {
		const char *why;
		if (ingress_inspect_response_refused(r->insp, &why)) {
			/* Content-encoded: it cannot be inspected (fail closed). Nothing of it has
			 * gone out: a 502 instead, audited as a deny; the client connection is kept,
			 * the upstream one (its body unread) closed. The request is over. */
			r->t_up_done = tm_mono_ns();
			conn_refuse_as(c, 502, why, false, false, "http.request", "deny");
			return CUSTOS_ERR_DENIED;
		}
		held = ingress_inspect_response_held(r->insp);
		if (held)
			fr = HTTP1_BODY_LENGTH; /* the length is known at the end */
		else if (fr == HTTP1_BODY_LENGTH)
			fr = HTTP1_BODY_CHUNKED;
	}
	switch (fr) {
	case HTTP1_BODY_LENGTH:
		wo.framing = HTTP1_BODY_LENGTH;
		wo.content_length = h->content_length;
		break;
	case HTTP1_BODY_CHUNKED:
	case HTTP1_BODY_CLOSE:
		if (r->client_http10) {
			wo.framing = HTTP1_BODY_CLOSE;
			r->client_keep_alive = false;
		} else {
			wo.framing = HTTP1_BODY_CHUNKED;
			r->client_chunked = true;
		}
		break;
	default:
		wo.framing = HTTP1_BODY_NONE;
		if (r->meth == HTTP1_M_HEAD) {
			/* The upstream's Content-Length on a HEAD answer is the length a GET would
			 * get (RFC 9110 §9.3.2, §8.6): kept. The codec checked its digits. */
			span v;
			uint64_t n;
			if (http1_header_get(h, SPAN_LIT("Content-Length"), &v) &&
			    num_parse_u64(v, 0, UINT64_MAX, &n) == CUSTOS_OK) {
				wo.framing = HTTP1_BODY_LENGTH;
				wo.content_length = n;
			}
		} else if (h->status != 204 && h->status != 304) {
			wo.framing = HTTP1_BODY_LENGTH;
			wo.content_length = 0;
		}
		break;
	}
	wo.close = !r->client_keep_alive || (c->drain && !drain_more(c));
	if (wo.close)
		r->client_keep_alive = false;
	wo.keep_alive = r->client_http10; /* announced, or the 1.0 client would not reuse it */
	size_t before = buf_used(&c->out);
	r->resp_at = c->sent + before;
	if (held) {
		/* Without a framing field: resp_held_end adds the body's Content-Length. Nothing
		 * reaches c->out before the verdict, so resp_broken can still answer 502/504. */
		wo.framing = HTTP1_BODY_NONE;
		buf_init(&r->rhead, HTTP1_MAX_HEAD_BYTES + 1024);
		r->head_held = true;
		GUARD(http1_write_response_head(&r->rhead, h, &wo));
	} else {
		GUARD(http1_write_response_head(&c->out, h, &wo));
		r->bytes_out += buf_used(&c->out) - before;
	}
	r->status = h->status;
	span ct;
	if (http1_header_get(h, SPAN_LIT("Content-Type"), &ct)) {
		if (span_starts_with(ct, SPAN_LIT("text/event-stream"))) {
			r->is_sse = true;
			sse_parser_init(&r->sse, 0);
			r->sse_init = true;
		} else if (span_starts_with(ct, SPAN_LIT("application/json"))) {
			r->uscan = xcalloc(1, sizeof(*r->uscan));
			openai_usage_scan_init(r->uscan);
		}
	}
	return CUSTOS_OK;
}

/* The verdict on a body held with its head (client_head, `held`): allowed or redacted, the
 * head goes out with the body's Content-Length, then the body (CUSTOS_OK); denied, the client
 * gets 403 with the reason instead, audited as a deny with the response's findings; an
 * inspection failure is a 502. After those the request is over (answered and reset, or c
 * closed): CUSTOS_ERR_DENIED is not returned, another error is. */
static custos_err resp_held_end(conn *c, custos_err ie, span body)
{
	req *r = &c->r;

	if (ie == CUSTOS_ERR_DENIED) {
		const char *decision = "deny", *why = "response denied by content inspection";
		ingress_inspect_outcome(r->insp, &decision, &why);
		if (r->uscan) { /* the model did the work: charged on its usage */
			openai_usage us;
			openai_usage_scan_end(r->uscan, &us);
			if (us.present)
				r->usage = us;
		}
		r->t_up_done = tm_mono_ns();
		conn_refuse_as(c, 403, why, false, true, "http.request", decision);
		return CUSTOS_ERR_PERM;
	}
	if (ie != CUSTOS_OK) {
		resp_broken(c, 502, "response inspection failed");
		return ie;
	}
	char cl[48];
	int n = snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n\r\n", body.len);
	span hd = buf_span(&r->rhead); /* ends with the blank line: the field goes before it */
	size_t before = buf_used(&c->out);
	size_t need = before + hd.len + (size_t)n + body.len + 64; /* bounded: head + 4 MiB */
	if (need > c->out.max)
		c->out.max = need;
	resp_hash(r, body);
	if (n < 0 || hd.len < 2 || buf_append(&c->out, hd.ptr, hd.len - 2) != CUSTOS_OK ||
	    buf_append(&c->out, cl, (size_t)n) != CUSTOS_OK ||
	    buf_append_span(&c->out, body) != CUSTOS_OK) {
		conn_close(c);
		return CUSTOS_ERR_LIMIT;
	}
	r->bytes_out += buf_used(&c->out) - before;
	r->head_held = false;
	buf_free(&r->rhead);
	return CUSTOS_OK;
}

/* End of an inspected response body: the held-back rest goes to the client. CUSTOS_OK,
 * CUSTOS_ERR_DENIED (the response ends here), or an error after which the request is over
 * (c closed, or answered and reset: a held head's 403 or 502). */
static custos_err resp_inspect_end(conn *c)
{
	req *r = &c->r;
	span fwd = { 0 };

	if (r->insp == NULL || !ingress_inspect_response_active(r->insp))
		return CUSTOS_OK;
	custos_err ie = ingress_inspect_response_end(r->insp, &fwd);
	if (r->head_held)
		return resp_held_end(c, ie, fwd);
	if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED) {
		conn_audit(c, "http.request", "error", "response inspection failed");
		conn_close(c);
		return ie;
	}
	size_t before = buf_used(&c->out);
	if (before + fwd.len + 64 > c->out.max) /* one whole inspected body (bounded) */
		c->out.max = before + fwd.len + 64;
	resp_hash(r, fwd);
	if (fwd.len && (r->client_chunked ? http1_chunk_append(&c->out, fwd)
	                                  : buf_append_span(&c->out, fwd)) != CUSTOS_OK) {
		conn_close(c);
		return CUSTOS_ERR_LIMIT;
	}
	r->bytes_out += buf_used(&c->out) - before;
	return ie;
}

/* The upstream's response body is malformed, cut short or stalled. When no byte of the
 * answer has reached the client yet (its head, maybe body bytes, still wait in c->out), they
 * are taken back and the client gets `status` (502, 504) with its X-Request-Id, audited as
 * such. Otherwise the connection ends without the rest: the client sees a truncated message,
 * never a silently short one, and the event has the status that was sent. */
static void resp_broken(conn *c, unsigned status, const char *why)
{
	req *r = &c->r;

	if (c->sent <= r->resp_at) {
		size_t keep = (size_t)(r->resp_at - c->sent);
		size_t drop = buf_used(&c->out) - keep;
		c->out.len -= drop;
		r->bytes_out -= drop;
		/* Nothing answered: nothing to charge, unless the upstream's head came and was
		 * held (a JSON body under inspection): the model did the work. */
		if (!r->head_held)
			r->resp_head_done = false;
		r->client_chunked = false;
		conn_reject(c, status, why, false);
		return;
	}
	if (r->status == 0)
		r->status = status;
	conn_audit(c, "http.request", "error", why);
	conn_close(c);
}

/* Moves response body bytes from the upstream buffer to the client buffer. Returns true on
 * progress. */
static bool pump_body(conn *c)
{
	req *r = &c->r;
	upconn *u = c->up;
	bool progress = false;

	while (buf_used(&u->in) > 0 && buf_used(&c->out) < OUT_HIGH) {
		span data = { 0 };
		bool done = false;
		size_t avail = buf_used(&u->in);
		if (r->insp && ingress_inspect_response_active(r->insp) && avail > INSP_PIECE)
			avail = INSP_PIECE; /* what inspection writes for it stays within OUT_MAX */
		ssize_t k = http1_body_decode(&r->rbdec, (const char *)buf_ptr(&u->in), avail,
		                              &data, &done);
		if (k < 0) {
			resp_broken(c, 502, "malformed upstream response body");
			return false;
		}
		custos_err ie = CUSTOS_OK;
		bool filter = r->usage_injected && r->is_sse &&
		              !(r->insp && ingress_inspect_response_active(r->insp));
		if (data.len) {
			span fwd = data;
			if (r->insp && ingress_inspect_response_active(r->insp))
				ie = ingress_inspect_response_data(r->insp, data, &fwd);
			if (filter) {
				buf_reset(&r->held);
				if (!resp_feed_usage(c, data, &r->held)) {
					resp_broken(c, 502,
					            "upstream stream event too large to follow");
					return false;
				}
				fwd = buf_span(&r->held);
			}
			if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED && r->head_held) {
				/* nothing sent yet: an answer, not a cut */
				resp_broken(c, 502,
				            ie == CUSTOS_ERR_LIMIT
				                    ? "upstream response body over the 4 MiB held "
				                      "for inspection"
				                    : "response inspection failed");
				return false;
			}
			if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED) {
				conn_audit(c, "http.request", "error",
				           "response inspection failed");
				conn_close(c);
				return false;
			}
			size_t before = buf_used(&c->out);
			custos_err e = CUSTOS_OK;
			resp_hash(r, fwd);
			if (fwd.len)
				e = r->client_chunked ? http1_chunk_append(&c->out, fwd)
				                      : buf_append_span(&c->out, fwd);
			if (e != CUSTOS_OK) {
				conn_close(c);
				return false;
			}
			r->bytes_out += buf_used(&c->out) - before;
			r->resp_body += data.len;
			if (!filter)
				proxy_ignore(resp_feed_usage(c, data, NULL));
		}
		if (filter && done && sse_parser_pending(&r->sse)) {
			/* the stream ended inside an event: its bytes go on as they came */
			span rest = sse_parser_pending_raw(&r->sse);
			size_t before = buf_used(&c->out);
			resp_hash(r, rest);
			if ((r->client_chunked ? http1_chunk_append(&c->out, rest)
			                       : buf_append_span(&c->out, rest)) != CUSTOS_OK) {
				conn_close(c);
				return false;
			}
			r->bytes_out += buf_used(&c->out) - before;
		}
		buf_consume(&u->in, (size_t)k);
		progress = progress || k > 0;
		if (done && ie == CUSTOS_OK && (ie = resp_inspect_end(c)) != CUSTOS_OK &&
		    ie != CUSTOS_ERR_DENIED)
			return false;
		if (ie == CUSTOS_ERR_DENIED) { /* denied by inspection: the response ends here */
			r->up_keep_alive = false;
			r->client_keep_alive = false;
			done = true;
		}
		if (done) {
			if (r->client_chunked && http1_chunk_end(&c->out) == CUSTOS_OK)
				r->bytes_out += 5;
			finish_request(c);
			return true;
		}
		if (k == 0)
			break;
	}
	return progress;
}

/* Drives the upstream side. Returns true on progress. */
static bool up_drive(conn *c)
{
	req *r = &c->r;
	upconn *u = c->up;
	bool progress = false;

	if (u == NULL)
		return false;
	if (u->st == US_CONNECTING) {
		if (!u->s.wr_ready && !u->s.rd_ready)
			return false;
		int err = 0;
		socklen_t el = sizeof(err);
		if (getsockopt(u->s.fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1 || err != 0) {
			if (err == EINPROGRESS || err == EALREADY)
				return false;
			up_failed(c, "upstream connection refused");
			return true;
		}
		u->st = u->s.ssl ? US_TLS : US_READY;
		u->s.rd_blocked = u->s.wr_blocked = 0;
		progress = true;
	}
	if (u->st == US_TLS) {
		int h = sock_handshake(&u->s);
		if (h == SOCK_AGAIN)
			return progress;
		if (h != SOCK_OK) {
			/* The audit keeps the generic reason (it is the client's answer too); the
			 * log says which verification failed (a revoked certificate, an expired CRL). */
			long vr = SSL_get_verify_result(u->s.ssl);
			if (vr != X509_V_OK)
				log_info("upstream %s: certificate verification failed: %s",
				         c->st_ref->o.upstreams[c->r.upstream].name,
				         X509_verify_cert_error_string(vr));
			tls_client_session_failed(u->s.ssl);
			up_failed(c, "upstream TLS handshake failed");
			return true;
		}
		metrics_inc(SSL_session_reused(u->s.ssl) ? METRICS_UPSTREAM_TLS_RESUMED
		                                         : METRICS_UPSTREAM_TLS_FULL);
		u->st = US_READY;
		progress = true;
	}
	/* Send the request. */
	if (buf_used(&r->upout) > 0 && sock_can_write(&u->s) && !flush_deferred(c)) {
		size_t before = buf_used(&r->upout);
		ssize_t n = sock_write(&u->s, &r->upout);
		/* Count what left the buffer, also when the call then failed: bytes written before
		 * an error must never look like "nothing sent" (that would allow a retry). */
		r->up_sent += before - buf_used(&r->upout);
		if (n == SOCK_ERR && r->resp_head_done) {
			/* The upstream answered early and stopped reading the request: forward its
			 * answer, send no more, and never pool the connection. */
			buf_reset(&r->upout);
			r->up_keep_alive = false;
		} else if (n == SOCK_ERR) {
			up_failed(c, "upstream write failed");
			return true;
		}
		if (n > 0) {
			progress = true;
			c->anchor = c->w->loop.now;
		}
	}
	/* Read the response (not while the client's buffer is full). */
	for (;;) {
		if (c->freed || c->up != u)
			return true;
		if (c->st == CS_RESPONSE && buf_used(&u->in) > 0) {
			bool p = pump_body(c);
			progress = progress || p;
			if (c->freed || c->up != u || c->st != CS_RESPONSE)
				return true;
			if (buf_used(&c->out) >= OUT_HIGH)
				return progress;
		}
		if (c->st == CS_UPSTREAM && buf_used(&u->in) > 0) {
			ssize_t k = http1_parse_head(r->rp, (const char *)buf_ptr(&u->in),
			                             buf_used(&u->in));
			if (k < 0) {
				/* The parser's reason goes to the trail: which rule the model
				 * server broke (both framings, a 101 never asked for...). */
				char why[160];
				snprintf(why, sizeof(why), "malformed upstream response: %s",
				         r->rp->err.reason);
				conn_reject(c, 502, why, false);
				return true;
			}
			if (k > 0) {
				const http1_head *h = &r->rp->head;
				if (h->status >= 100 && h->status < 200) {
					buf_consume(&u->in, (size_t)k);
					http1_parser_reset(r->rp);
					progress = true;
					continue;
				}
				r->resp_head_done = true;
				r->up_keep_alive = h->keep_alive && h->framing != HTTP1_BODY_CLOSE;
				custos_err he = client_head(c, h);
				if (he == CUSTOS_ERR_DENIED) /* refused at the head: answered */
					return true;
				if (he != CUSTOS_OK) {
					conn_close(c);
					return true;
				}
				http1_body_init(&r->rbdec, h, NULL);
				bool nobody = h->framing == HTTP1_BODY_NONE;
				buf_consume(&u->in, (size_t)k);
				c->st = CS_RESPONSE;
				progress = true;
				if (nobody) {
					finish_request(c);
					return true;
				}
				if (h->framing == HTTP1_BODY_LENGTH && h->content_length == 0) {
					/* Nothing follows: end it now, not when the upstream next
					 * sends a byte or hangs up (an early 413 would wait for the
					 * upstream to close, and the request body would go on). */
					custos_err ie = resp_inspect_end(c);
					if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED)
						return true;
					if (r->client_chunked &&
					    http1_chunk_end(&c->out) == CUSTOS_OK)
						r->bytes_out += 5;
					finish_request(c);
					return true;
				}
				continue;
			}
		}
		if (!sock_can_read(&u->s) || buf_used(&c->out) >= OUT_HIGH)
			return progress;
		ssize_t n = sock_read(&u->s, &u->in, PROXY_UPIN_MAX);
		if (n > 0) {
			progress = true;
			c->anchor = c->w->loop.now;
			continue;
		}
		if (n == SOCK_AGAIN)
			return progress;
		/* EOF or error. */
		if (c->st == CS_UPSTREAM) {
			if (r->rp->pos == 0 && buf_used(&u->in) == 0 && u->s.peer_alert)
				up_refused_alert(c);
			else if (r->rp->pos == 0 && buf_used(&u->in) == 0)
				up_failed(c, n == SOCK_EOF ? "upstream closed the connection"
				                           : "upstream connection reset");
			else
				conn_reject(c, 502, "truncated upstream response head", false);
			return true;
		}
		r->up_keep_alive = false;
		if (n == SOCK_EOF && http1_body_eof(&r->rbdec) == CUSTOS_OK) {
			custos_err ie = resp_inspect_end(c);
			if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED)
				return true;
			if (r->client_chunked && http1_chunk_end(&c->out) == CUSTOS_OK)
				r->bytes_out += 5;
			finish_request(c);
			return true;
		}
		resp_broken(c, 502, "upstream response truncated");
		return true;
	}
}

/* ---------------------------------------------------------------------------------------------
 * the connection pump
 */
static bool read_client(conn *c)
{
	if (!sock_can_read(&c->s))
		return false;
	bool was_empty = buf_used(&c->in) == 0;
	buf_take_block(c->w, &c->in);
	buf_take_block(c->w, &c->out);
	ssize_t n = sock_read(&c->s, &c->in, PROXY_INBUF_MAX);
	if (n > 0) {
		if (c->st == CS_BODY || was_empty) /* a head's deadline starts at its first byte */
			c->anchor = c->w->loop.now;
		return true;
	}
	if (n == SOCK_AGAIN)
		return false;
	/* EOF or error from the client. */
	if (c->st == CS_BODY) {
		c->r.status = 400;
		conn_audit(c, "http.reject", "deny", "client closed during the request body");
	} else if (c->st == CS_HEAD && buf_used(&c->in) > 0) {
		/* A started head the client gave up on: audited as one that timed out is. */
		req_begin_unparsed(c, NULL);
		c->r.status = 400;
		conn_audit(c, "http.reject", "deny", "client closed inside the request head");
	}
	conn_close(c);
	return false;
}

static void conn_drive(conn *c)
{
	cstate entry = c->st;

	for (int guard = 0; guard < 10000 && !c->freed; guard++) {
		bool progress = false;

		if (buf_used(&c->out) > 0 && sock_can_write(&c->s) && !flush_deferred(c)) {
			size_t before = buf_used(&c->out);
			ssize_t n = sock_write(&c->s, &c->out);
			c->sent += before - buf_used(&c->out);
			if (n == SOCK_ERR) {
				if (c->r.active && !c->r.audited) {
					c->r.status = c->r.status ? c->r.status : 499;
					conn_audit(c, "http.request", "error", "client went away");
				}
				conn_close(c);
				return;
			}
			if (n > 0) {
				progress = true;
				/* Under backpressure the wait is on the client: its progress counts. */
				if (c->st == CS_RESPONSE)
					c->anchor = c->w->loop.now;
			}
		}
		if (c->st == CS_CLOSING) {
			if (buf_used(&c->out) == 0) {
				conn_close(c);
				return;
			}
			break;
		}
		switch (c->st) {
		case CS_PROXY: {
			int h = pp_step(c);
			if (h == SOCK_AGAIN)
				break;
			if (h != SOCK_OK) {
				conn_close(c);
				return;
			}
			c->st = c->s.ssl ? CS_HANDSHAKE : CS_HEAD;
			progress = true;
			break;
		}
		case CS_HANDSHAKE: {
			int h = sock_handshake(&c->s);
			if (h == SOCK_AGAIN)
				break;
			if (h != SOCK_OK) {
				handshake_failed(c, NULL);
				conn_close(c);
				return;
			}
			c->t_tls = tm_mono_ns() - c->t_accept;
			metrics_inc(METRICS_TLS_OK);
			/* The handshake verified the certificate either way (client_auth); whether
			 * it names the caller is the state's in force now (auth.mtls.enabled). */
			if (!worker_state(c->w)->o.ignore_client_certs)
				ident_from_cert(&c->id, c->s.ssl);
			c->st = CS_HEAD;
			progress = true;
			break;
		}
		case CS_HEAD: {
			if (buf_used(&c->in) > 0) {
				http1_parser p;
				proxy_state *st = c->st_ref ? c->st_ref : worker_state(c->w);
				http1_parser_init_request(&p, &st->hlim);
				ssize_t k = http1_parse_head(&p, (const char *)buf_ptr(&c->in),
				                             buf_used(&c->in));
				if (k < 0) {
					req_begin_unparsed(c, &p);
					buf_reset(&c->in);
					/* The codec's refusal (400...505): the client's fault. */
					conn_refuse(c, p.err.status ? p.err.status : 400,
					            p.err.reason ? p.err.reason
					                         : "malformed request",
					            true, true);
					progress = true;
					break;
				}
				if (k > 0) {
					on_head(c, &p, (size_t)k);
					progress = true;
					break;
				}
			}
			if (read_client(c))
				progress = true;
			break;
		}
		case CS_BODY: {
			req *r = &c->r;
			while (buf_used(&c->in) > 0) {
				span data;
				bool done = false;
				ssize_t k =
				        http1_body_decode(&r->bdec, (const char *)buf_ptr(&c->in),
				                          buf_used(&c->in), &data, &done);
				if (k < 0) {
					conn_refuse(c,
					            r->bdec.err.status ? r->bdec.err.status : 400,
					            r->bdec.err.reason ? r->bdec.err.reason
					                               : "malformed body",
					            true, true);
					break;
				}
				if (data.len && buf_append_span(&r->body, data) != CUSTOS_OK) {
					conn_reject(c, 413, "request body larger than max_body",
					            true);
					break;
				}
				buf_consume(&c->in, (size_t)k);
				r->bytes_in += (uint64_t)k;
				if (done) {
					on_request_body_done(c);
					break;
				}
				if (k == 0)
					break;
			}
			progress = true;
			if (c->st == CS_BODY && !read_client(c))
				progress = false;
			break;
		}
		case CS_UPSTREAM:
		case CS_RESPONSE:
			if (up_drive(c))
				progress = true;
			break;
		default:
			break;
		}
		if (!progress)
			break;
	}
	if (c->freed)
		return;
	if (c->st != entry)
		c->anchor = c->w->loop.now; /* a new wait begins */
	if (c->st == CS_HEAD && buf_used(&c->in) == 0 && buf_used(&c->out) == 0) {
		/* Idle keep-alive: give the buffers back (memory per idle connection); OpenSSL's
		 * record buffers go a little later, unless a request comes first. */
		buf_give_block(c->w, &c->in);
		buf_give_block(c->w, &c->out);
		if (c->drain && !drain_more(c)) {
			conn_close(c);
			return;
		}
		if (c->s.ssl)
			quiet_add(c);
	} else {
		quiet_unlink(c);
	}
	conn_arm(c);
}

/* ---------------------------------------------------------------------------------------------
 * drain and teardown
 */
void conn_drain_all(worker *w)
{
	for (conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		c->drain = true;
		if (c->st == CS_HANDSHAKE || c->st == CS_PROXY) {
			conn_close(c);
		} else if (c->st == CS_HEAD && buf_used(&c->in) == 0 && buf_used(&c->out) == 0) {
			/* Idle, unless a request came in since the worker last looked (its edge is
			 * still queued): that one is read now and answered with Connection: close. */
			if (!drain_more(c)) {
				conn_close(c);
				continue;
			}
			c->s.rd_ready = true;
			conn_drive(c);
		}
	}
}

/* The end of a stream cut at the shutdown deadline, as a denied one ends (ingress_inspect.c):
 * an error event, [DONE] and the last chunk, so that an SSE client reads why its stream ended
 * instead of a broken connection. Not inside an event whose start went out (a client drops an
 * event the stream ends in; with usage_injected only whole events went out) and not under
 * inspection, which writes the events. */
static void drain_cut_stream(conn *c)
{
	req *r = &c->r;
	buf ev, j;
	json_writer jw;

	if (!r->client_chunked || !r->is_sse || r->insp ||
	    (sse_parser_pending(&r->sse) && !r->usage_injected))
		return;
	buf_init(&j, 512);
	buf_init(&ev, 1024);
	json_init(&jw, &j);
	json_obj_begin(&jw);
	json_key(&jw, "error");
	json_obj_begin(&jw);
	json_kv_cstr(&jw, "message",
	             "custos is stopping: the stream was cut at the shutdown deadline");
	json_kv_cstr(&jw, "type", "server_error");
	json_kv_cstr(&jw, "code", "shutdown");
	json_kv_cstr(&jw, "request_id", r->id);
	json_obj_end(&jw);
	json_obj_end(&jw);
	size_t before = buf_used(&c->out);
	if (json_finish(&jw) == CUSTOS_OK &&
	    sse_write_event(&ev, span_of("", 0), buf_span(&j)) == CUSTOS_OK &&
	    sse_write_event(&ev, span_of("", 0), SPAN_LIT("[DONE]")) == CUSTOS_OK &&
	    http1_chunk_append(&c->out, buf_span(&ev)) == CUSTOS_OK &&
	    http1_chunk_end(&c->out) == CUSTOS_OK)
		r->bytes_out += buf_used(&c->out) - before;
	else
		c->out.len = before; /* all or nothing: never half an event */
	buf_free(&ev);
	buf_free(&j);
}

/* A request still running at the shutdown deadline: one with no answer begun gets 503 (with
 * Connection: close, as every answer while draining that nothing follows); a stream is ended
 * (drain_cut_stream); what is in c->out then gets one write, not a wait. Audited by the
 * caller when not here. */
static void drain_cut(conn *c)
{
	req *r = &c->r;

	r->client_keep_alive = false; /* the last answer here, whatever waits behind it */
	if (c->st == CS_BODY || ((c->st == CS_UPSTREAM || c->st == CS_RESPONSE) &&
	                         (!r->resp_head_done || (r->head_held && c->sent <= r->resp_at)))) {
		if (r->resp_head_done)
			resp_broken(c, 503, DRAIN_CUT); /* a held head: nothing of it went out */
		else
			conn_reject(c, 503, DRAIN_CUT, true);
	} else if (c->st == CS_RESPONSE) {
		drain_cut_stream(c);
	}
	if (!c->freed && buf_used(&c->out) > 0)
		(void)sock_write(&c->s, &c->out); /* one try: the deadline has passed */
}

void conn_close_all(worker *w)
{
	ev_timer_clear(&w->loop, &w->tls_rej.timer);
	ev_timer_clear(&w->loop, &w->pp_rej.timer);
	ev_timer_clear(&w->loop, &w->shed_rej.timer);
	ev_timer_clear(&w->loop, &w->quiet_timer);
	tls_reject_flush(&w->loop, w); /* a pending sum is written before the worker ends */
	pp_reject_flush(&w->loop, w);
	shed_reject_flush(&w->loop, w);
	for (conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		if (c->r.active && !c->r.audited && w->draining)
			drain_cut(c);
		if (c->r.active && !c->r.audited) {
			c->r.status = c->r.status ? c->r.status : 503;
			conn_audit(c, "http.request", "error", DRAIN_CUT);
		}
		conn_close(c);
	}
}
