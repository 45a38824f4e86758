/*
 * The plain forward path on event loops: absolute-URI HTTP requests from the sandbox are read,
 * decided, audited and forwarded by a few epoll loops (non-blocking client and upstream
 * sockets, edge-triggered), with keep-alive on both sides: a client connection keeps its
 * upstream connection for the next request to the same destination (as the thread path
 * does: a new client connection resolves and checks the name again). Names are resolved off
 * the loop by a small resolver thread pool. Bounded buffers with backpressure both ways: the
 * client's bytes (a request body is read only while little waits for the upstream), the
 * upstream response (read only while little waits for the client). Request bodies and
 * response inspection are done here too. Timers: client idle, upstream connect, upstream
 * read, client send.
 *
 * Sends at the end of a batch, as on the ingress workers (docs/PROXY.md "sends at the end of
 * a batch"): while a loop handles the events of one epoll_wait, a connection reads and parses
 * (into its bounded buffers: the backpressure points stay where they are) and what it has to
 * send, the request to its upstream or the answer to its client, waits: the connection is put
 * on the loop's flush list (fc_hold) and driven again once every event of the batch is
 * handled (floop_batch), with the sends. Timers and that end-of-batch pass send at once.
 *
 * A CONNECT is handed on, with the bytes read so far, to a connection thread (egress_conn.c),
 * which serves the connection from then on (tunnel to the relay loop, or interception).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "egress_int.h"
#include "loop.h"

#define FIO_CHUNK    (64u * 1024)
#define FIN_MAX      (HTTP1_MAX_HEAD_BYTES + EGRESS_HELLO_MAX)
#define FUP_CHUNK    (128u * 1024) /* upstream reads */
#define FUP_MAX      (HTTP1_MAX_HEAD_BYTES + FUP_CHUNK)
#define FOUT_HIGH    (64u * 1024) /* above this, the upstream is not read (backpressure) */
#define FOUT_MAX     (FOUT_HIGH + FUP_MAX + 2 * HTTP1_CHUNK_HDR_MAX + 64)
#define FUOUT_MAX    (HTTP1_MAX_HEAD_BYTES + FOUT_HIGH + FIN_MAX + 2 * HTTP1_CHUNK_HDR_MAX + 64)
#define FKEY_MAX     (SSRF_MAX_HOST + 48)
#define FRES_THREADS 2 /* resolver threads */

typedef struct floop floop;
typedef struct fconn fconn;

/* An upstream connection: a request's, or kept idle by its client connection. */
typedef struct fup {
	floop *lp;
	fconn *owner;
	bool idle; /* kept between requests (owner->kept) */
	int fd;
	ev_io io;
	bool rd, wr, hup;
	char key[FKEY_MAX];
	char addr[64];
} fup;

enum { FS_HEAD, FS_QBODY, FS_RESOLVE, FS_CONNECT, FS_UP, FS_DRAIN, FS_CLOSED };

struct fconn {
	floop *lp;
	egress_server *s;
	elistener *l;
	fconn *prev, *next;
	fconn *qnext; /* start queue, resolver queue, done queue */
	int fd;
	ev_io io;
	ev_timer tm;
	bool rd, wr, hup;
	int st;
	bool close_after; /* close once c->out is flushed */
	bool dead;        /* closed while its name was being resolved: freed when it comes back */
	uint64_t last;    /* last progress (timeouts) */
	uint64_t head_t0; /* FS_HEAD: when the head's first byte was there (0: none yet) */
	char remote[64];
	buf in, uout, uin, out;
	size_t uoff; /* bytes of uout sent */
	http1_parser p;
	/* the request in flight */
	bool in_req; /* r is to be audited */
	erec r;
	ssrf_host host;
	uint16_t port;
	const esource *src;
	ssrf_target tgt;
	size_t ai;
	int cerr;
	bool cli_ka, can_retry, daudit;
	http1_method meth;
	/* request body (client -> uout, re-framed) */
	bool qbody, bdone, expect;
	http1_framing qf;
	http1_body qb;
	/* FS_QBODY: a body the rule inspects, read whole first (egress_inspect_request) */
	egress_body_kind qkind;
	buf qin, qout;
	/* response inspection: head held back until the inspector releases bytes */
	bool insp, released, sent;
	uint64_t out_ct; /* c->out's capacity counted as held for inspection (out_inspected) */
	char key[FKEY_MAX];
	fup *up;   /* the request's upstream connection */
	fup *kept; /* idle upstream connection kept for the next request (key in kept->key) */
	uint64_t ugot, cap, up_tmo;
	http1_parser rp;
	bool rhead;
	http1_body rb;
	http1_framing rf, cf;
	bool up_ka;
	/* resolver job result */
	custos_err jerr;
	char jmsg[256];
	/* its sends wait for the end of the loop's batch of events (fc_hold) */
	bool flush_pending;
	fconn *flush_next;
};

struct floop {
	egress_server *s;
	ev_loop loop;
	pthread_t th;
	bool started;
	int efd;
	ev_io eio;
	pthread_mutex_t mu;
	fconn *queue; /* accepted, to be started */
	fconn *done;  /* resolved */
	bool closed;
	fconn *live;
	bool batching; /* within a batch of events: sends wait on the flush list */
	fconn *flush_head;
};

struct efwd {
	floop *loops;
	size_t n;
	atomic_size_t rr;
	pthread_t res[FRES_THREADS];
	size_t nres;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	fconn *jobs, *jtail;
	bool stop;
};

static void fc_drive(fconn *c);
static void fc_resolved(fconn *c, custos_err e, const char *msg);

static floop *loop_of(ev_loop *lp)
{
	return (floop *)(void *)((char *)lp - offsetof(floop, loop));
}

/* Whether c's send must wait for the end of the batch of events: then c is on the loop's
 * flush list, and floop_batch drives it again there. */
static bool fc_hold(fconn *c)
{
	floop *lp = c->lp;
	if (!lp->batching)
		return false;
	if (!c->flush_pending) {
		c->flush_pending = true;
		c->flush_next = lp->flush_head;
		lp->flush_head = c;
	}
	return true;
}

static void span_to(span s, char *out, size_t n)
{
	size_t l = s.len < n - 1 ? s.len : n - 1;
	if (l)
		memcpy(out, s.ptr, l);
	out[l] = '\0';
}

static void header_safe(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

static void nodelay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---------------------------------------------------------------------------------------------
 * Upstream connections
 */
static void up_free(void *p)
{
	free(p);
}

static void up_drop(floop *lp, fup *u)
{
	ev_del(&lp->loop, &u->io);
	close(u->fd);
	ev_defer_free(&lp->loop, u, up_free);
}

/* Keeps u on its client connection for the next request to the same destination. */
static void up_keep(fconn *c, fup *u);
static void up_unkeep(fconn *c);

static void up_io(ev_loop *el, void *obj, uint32_t ev)
{
	fup *u = obj;
	floop *lp = loop_of(el);
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		u->rd = true;
	if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		u->wr = true;
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		u->hup = true;
	if (u->idle) {
		/* kept between requests: the source closed it (or sent bytes nobody asked for) */
		if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			up_unkeep(u->owner);
		return;
	}
	(void)lp;
	fc_drive(u->owner);
}

/* The kept connection's key: scheme, host, port and the source it was checked for. */
static void key_make(char key[FKEY_MAX], const char *name, uint16_t port, const esource *src,
                     const egress_server *s)
{
	snprintf(key, FKEY_MAX, "0|%s|%u|%zu", name, (unsigned)port, (size_t)(src - s->src));
}

/* ---------------------------------------------------------------------------------------------
 * Client connections
 */
static void fc_free(void *p)
{
	fconn *c = p;
	buf_free(&c->in);
	buf_free(&c->uout);
	buf_free(&c->qin);
	buf_free(&c->qout);
	buf_free(&c->uin);
	buf_free(&c->out);
	egress_held_give(c->s, &c->out_ct);
	free(c);
}

static void fc_unlink(floop *lp, fconn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		lp->live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void up_keep(fconn *c, fup *u)
{
	if (u->hup || atomic_load(&c->s->stopping)) {
		up_drop(c->lp, u);
		return;
	}
	u->idle = true;
	c->kept = u;
}

static void up_unkeep(fconn *c)
{
	if (c->kept) {
		up_drop(c->lp, c->kept);
		c->kept = NULL;
	}
}

/* c->uout back to its bound after a request that carried an inspected body in it. */
static void uout_shrink(fconn *c)
{
	if (c->uout.max != FUOUT_MAX) {
		buf_free(&c->uout);
		c->uout.max = FUOUT_MAX;
		c->uoff = 0;
	}
}

/* c->out back to its bound once empty after a request grew it (out_inspected): what it
 * counted as held for inspection is given back, also when it grew within its bound (a small
 * inspected body), so that nothing stays counted while the connection waits for its next
 * request. */
static void out_shrink(fconn *c)
{
	if ((c->out.max != FOUT_MAX || c->out_ct != 0) && buf_used(&c->out) == 0) {
		buf_free(&c->out);
		c->out.max = FOUT_MAX;
		egress_held_give(c->s, &c->out_ct);
	}
}

static void req_done(fconn *c)
{
	if (!c->in_req)
		return;
	c->in_req = false;
	/* Buffers counted as held for inspection go before the audit event gives the count
	 * back (egress_inspect_unhold). */
	buf_free(&c->qin);
	buf_free(&c->qout);
	uout_shrink(c);
	out_shrink(c); /* when the answer has gone out; else once it has (fc_flush) */
	egress_audit(c->s, c->l, &c->r);
	egress_inspect_release(&c->r);
}

/* A request head the client began and did not finish (c->in holds its start): refused with
 * status (408: answered; 400: cut by the client, no one to answer; 503: the proxy stops),
 * audited. */
static void fc_head_cut(fconn *c, unsigned status, const char *why)
{
	erec_init(&c->r, "http");
	c->r.status = status;
	c->r.decision = status == 503 ? "error" : "deny";
	snprintf(c->r.reason, sizeof(c->r.reason), "%s", why);
	c->in_req = true;
}

static void fc_close(fconn *c, const char *why)
{
	floop *lp = c->lp;
	if (c->st == FS_CLOSED)
		return;
	/* the client's stream ended (or failed) inside a request head: audited */
	if (c->st == FS_HEAD && !c->in_req && why && buf_used(&c->in) > 0)
		fc_head_cut(c, atomic_load(&c->s->stopping) ? 503 : 400, why);
	if (c->in_req && why && !c->r.reason[0])
		snprintf(c->r.reason, sizeof(c->r.reason), "%s", why);
	if (c->in_req && why) /* the answer did not reach the model whole */
		egress_hash_response_drop(&c->r);
	req_done(c);
	if (c->up) {
		up_drop(lp, c->up);
		c->up = NULL;
	}
	up_unkeep(c);
	ev_timer_clear(&lp->loop, &c->tm);
	ev_del(&lp->loop, &c->io);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	fc_unlink(lp, c);
	/* The last use of c->l: once the count is 0 a closed listener's slot may be taken by
	 * another model (egress_listener_add). */
	atomic_fetch_sub(&c->l->active, 1);
	c->l = NULL;
	bool resolving = c->st == FS_RESOLVE;
	c->st = FS_CLOSED;
	if (resolving)
		c->dead = true; /* the resolver still holds it */
	else
		ev_defer_free(&lp->loop, c, fc_free);
}

static uint64_t fc_timeout(const fconn *c)
{
	const egress_options *o = &c->s->o;
	switch (c->st) {
	case FS_HEAD:
		return o->idle_timeout_ns;
	case FS_CONNECT:
		return o->connect_timeout_ns;
	case FS_UP:
		return c->up_tmo;
	default:
		return o->read_timeout_ns;
	}
}

/* When the state's timer runs out: its timeout after the last progress, except that a request
 * head begun must be whole within the idle timeout of its first byte, however its bytes
 * trickle in (as ingress's client_header). */
static uint64_t fc_deadline(const fconn *c)
{
	uint64_t base = c->st == FS_HEAD && c->head_t0 ? c->head_t0 : c->last;
	return base + fc_timeout(c);
}

static void fc_arm(fconn *c)
{
	uint64_t at = fc_deadline(c);
	if (c->tm.at == 0 || at < c->tm.at)
		ev_timer_set(&c->lp->loop, &c->tm, at);
}

/* A small response from custos itself into c->out (the reason in X-Custos-Reason). */
static void fc_reply(fconn *c, unsigned status, const char *reason, bool close)
{
	char why[256];
	snprintf(why, sizeof(why), "%s",
	         reason && reason[0] ? reason : http1_status_reason(status));
	header_safe(why);
	http1_header add = { SPAN_LIT(EGRESS_REASON_HEADER), span_cstr(why) };
	char body[300];
	int n = snprintf(body, sizeof(body), "%s\n", why);
	buf_reset(&c->out);
	if (http1_write_simple_response(&c->out, status, SPAN_LIT("text/plain"),
	                                span_of(body, (size_t)n), &add, 1,
	                                close ? HTTP1_SIMPLE_CLOSE : 0) != CUSTOS_OK)
		buf_reset(&c->out);
	if (close)
		c->close_after = true;
}

/* Whether the client connection may carry another request after an answer now: not while
 * the request's body is unread. */
static bool fc_ka(const fconn *c)
{
	return c->cli_ka && (!c->qbody || c->bdone);
}

/* The request is over (answered or refused): flush, audit, then the next one or close. */
static void fc_finish(fconn *c)
{
	c->st = FS_DRAIN;
	c->last = c->lp->loop.now;
	fc_arm(c);
}

static void fc_handoff(fconn *c)
{
	floop *lp = c->lp;
	int fd = c->fd;
	up_unkeep(c);
	ev_timer_clear(&lp->loop, &c->tm);
	ev_del(&lp->loop, &c->io);
	int fl = fcntl(fd, F_GETFL);
	if (fl != -1)
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	c->fd = -1;
	fc_unlink(lp, c);
	c->st = FS_CLOSED;
	/* the connection's l->active slot goes with it */
	egress_conn_spawn(c->s, c->l, fd, c->remote, buf_ptr(&c->in), buf_used(&c->in));
	ev_defer_free(&lp->loop, c, fc_free);
}

static void fc_next_request(fconn *c)
{
	http1_limits lim = { .max_body = EGRESS_MAX_REQUEST_BODY };
	http1_parser_init_request(&c->p, &lim);
	c->st = FS_HEAD;
	c->close_after = false;
	c->last = c->lp->loop.now;
	c->head_t0 = buf_used(&c->in) ? c->last : 0; /* pipelined bytes: a head begun */
	fc_arm(c);
}

/* Refusal of the request whose head (hl bytes) is at the start of c->in. */
static void fc_reject(fconn *c, size_t hl)
{
	http1_head *h = &c->p.head;
	if (!c->r.decision)
		c->r.decision = "deny";
	bool ka = c->cli_ka && h->framing == HTTP1_BODY_NONE;
	fc_reply(c, c->r.status, c->r.reason, !ka);
	c->in_req = true;
	if (ka)
		buf_consume(&c->in, hl);
	fc_finish(c);
}

static void fc_connect_next(fconn *c);

/* The name is resolved (or was a literal): deny, fail, or connect. */
static void fc_resolved(fconn *c, custos_err e, const char *msg)
{
	if (e == CUSTOS_ERR_DENIED) {
		c->r.status = 403;
		c->r.decision = "deny";
		snprintf(c->r.reason, sizeof(c->r.reason), "SSRF: %s resolves to %s, a %s address",
		         c->host.name, c->tgt.denied_addr, ssrf_class_name(c->tgt.denied_class));
	} else if (e != CUSTOS_OK) {
		c->r.status = 502;
		c->r.decision = "error";
		snprintf(c->r.reason, sizeof(c->r.reason), "%s", msg);
	} else if (!c->daudit) {
		c->daudit = true;
		/* Fail closed: nothing goes upstream before the decision is in the audit trail. */
		if (egress_audit_decision(c->s, c->l, &c->r) != CUSTOS_OK) {
			c->r.status = 503;
			c->r.decision = "error";
			snprintf(c->r.reason, sizeof(c->r.reason), "%s", EGRESS_AUDIT_REFUSED);
		}
	}
	if (e != CUSTOS_OK || c->r.status == 503) {
		fc_reply(c, c->r.status, c->r.reason, !fc_ka(c));
		fc_finish(c);
		return;
	}
	c->ai = 0;
	c->cerr = 0;
	fc_connect_next(c);
}

static void fc_resolve(fconn *c)
{
	if (c->host.kind != SSRF_HOST_NAME) { /* a literal: checked here, no lookup */
		custos_err e =
		        egress_resolve(c->s, &c->host, c->port, c->src->o.allow_private, &c->tgt);
		fc_resolved(c, e, e == CUSTOS_OK ? "" : err_msg());
		return;
	}
	efwd *f = c->s->fwd;
	c->st = FS_RESOLVE;
	c->qnext = NULL;
	pthread_mutex_lock(&f->mu);
	if (f->jtail)
		f->jtail->qnext = c;
	else
		f->jobs = c;
	f->jtail = c;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* The upstream connection is there: the request goes out. */
static void fc_up_begin(fconn *c)
{
	c->st = FS_UP;
	c->last = c->lp->loop.now;
	fc_arm(c);
	if (c->expect) { /* answered by custos (Expect is not forwarded) */
		c->expect = false;
		if (buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25) != CUSTOS_OK)
			buf_reset(&c->out);
	}
}

static void fc_connected(fconn *c)
{
	nodelay(c->up->fd);
	fc_up_begin(c);
}

static void fc_connect_next(fconn *c)
{
	floop *lp = c->lp;
	while (c->ai < c->tgt.n) {
		size_t i = c->ai++;
		const struct sockaddr *sa = (const struct sockaddr *)&c->tgt.addrs[i];
		int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd == -1) {
			c->cerr = errno;
			continue;
		}
		int r = connect(fd, sa, c->tgt.lens[i]);
		if (r == -1 && errno != EINPROGRESS) {
			c->cerr = errno;
			close(fd);
			continue;
		}
		fup *u = xcalloc(1, sizeof(*u));
		u->lp = lp;
		u->owner = c;
		u->fd = fd;
		u->io.fd = -1;
		snprintf(u->key, sizeof(u->key), "%s", c->key);
		const void *a =
		        sa->sa_family == AF_INET
		                ? (const void *)&((const struct sockaddr_in *)(const void *)sa)
		                          ->sin_addr
		                : (const void *)&((const struct sockaddr_in6 *)(const void *)sa)
		                          ->sin6_addr;
		if (inet_ntop(sa->sa_family, a, u->addr, sizeof(u->addr)) == NULL)
			u->addr[0] = '\0';
		snprintf(c->r.addr, sizeof(c->r.addr), "%s", u->addr);
		if (ev_add(&lp->loop, &u->io, fd, up_io, u) != CUSTOS_OK) {
			c->cerr = errno;
			close(fd);
			free(u);
			continue;
		}
		c->up = u;
		c->ugot = 0;
		c->uoff = 0;
		c->st = FS_CONNECT;
		c->last = lp->loop.now;
		fc_arm(c);
		if (r == 0) {
			u->wr = true;
			fc_connected(c);
		}
		return;
	}
	snprintf(c->r.reason, sizeof(c->r.reason), "cannot connect upstream: %s",
	         strerror(c->cerr ? c->cerr : ECONNREFUSED));
	c->r.status = 502;
	c->r.decision = "error";
	fc_reply(c, 502, c->r.reason, !fc_ka(c));
	fc_finish(c);
}

/* FS_CONNECT: has the connect finished? */
static bool fc_connect_check(fconn *c)
{
	fup *u = c->up;
	if (!u->wr && !u->hup)
		return false;
	int err = 0;
	socklen_t el = sizeof(err);
	if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1)
		err = errno;
	if (err == 0 && !u->wr)
		return false;
	if (err == 0) {
		fc_connected(c);
		return true;
	}
	c->cerr = err;
	up_drop(c->lp, u);
	c->up = NULL;
	fc_connect_next(c);
	return true;
}

static void fc_go(fconn *c);
static void fc_qbody_done(fconn *c);

/* A new request head of hl bytes at the start of c->in. */
static void fc_request(fconn *c, size_t hl)
{
	egress_server *s = c->s;
	http1_head *h = &c->p.head;
	erec *r = &c->r;

	if (h->meth == HTTP1_M_CONNECT || h->framing == HTTP1_BODY_TUNNEL ||
	    h->framing == HTTP1_BODY_CLOSE) {
		fc_handoff(c); /* tunnels: a connection thread */
		return;
	}
	erec_init(r, "http");
	c->daudit = false;
	c->cli_ka = h->keep_alive;
	span_to(h->method, r->method, sizeof(r->method));
	if (h->form != HTTP1_TARGET_ABSOLUTE || !span_case_eq(h->scheme, SPAN_LIT("http"))) {
		span_to(h->target, r->path, sizeof(r->path));
		r->status = 400;
		r->decision = "deny";
		snprintf(r->reason, sizeof(r->reason), "%s",
		         h->form == HTTP1_TARGET_ABSOLUTE ? "https:// targets go through CONNECT"
		                                          : "a forward proxy takes absolute URIs "
		                                            "(http://host/path) or CONNECT");
		c->cli_ka = false;
		fc_reject(c, hl);
		return;
	}
	r->scheme = "http";
	span hs;
	uint16_t port = 0;
	custos_err e = ssrf_split_authority(h->authority, 80, &hs, &port);
	if (e == CUSTOS_OK)
		e = ssrf_parse_host(hs, &c->host);
	if (e != CUSTOS_OK) {
		r->status = e == CUSTOS_ERR_DENIED ? 403 : 400;
		r->decision = "deny";
		snprintf(r->reason, sizeof(r->reason), "%s", err_msg());
		span_to(h->authority, r->host, sizeof(r->host));
		fc_reject(c, hl);
		return;
	}
	c->port = port;
	snprintf(r->host, sizeof(r->host), "%s", c->host.name);
	r->port = port;
	span path = h->path;
	span_to(path, r->path, sizeof(r->path));
	span hid = { NULL, 0 };
	(void)http1_header_get(h, SPAN_LIT(EGRESS_REQUEST_ID_HEADER), &hid);
	r->how = egress_attribute(c->l->model, hid, r->ingress_id, r->principal);
	span ppath = path.len && path.ptr[0] == '/' ? path : SPAN_LIT("/");
	/* Source and policy here; the name is resolved below only when no checked connection to
	 * this destination is kept. */
	c->src = NULL;
	r->status = egress_decide(s, c->l, r, false, &c->host, port, h->method, ppath,
	                          EDECIDE_REUSE, &c->src, &c->tgt);
	if (r->status) {
		fc_reject(c, hl);
		return;
	}
	/* The path and query string the rule inspects (inspect: request:) are decided first: a
	 * value found in the path refuses the request; the target goes upstream with the query's
	 * masks. */
	span qtarget = { NULL, 0 };
	if (egress_inspect_target_wanted(r)) {
		r->status = egress_inspect_target(r, h, &qtarget);
		if (r->status) {
			fc_reject(c, hl);
			return;
		}
	}
	/* A body the rule inspects is read whole (FS_QBODY) and decided before anything goes
	 * upstream; it then goes out with its own Content-Length. */
	bool qinsp = h->framing != HTTP1_BODY_NONE && egress_inspect_request_wanted(r);
	if (qinsp) {
		r->status = egress_inspect_request_begin(r, h);
		if (r->status) {
			fc_reject(c, hl);
			return;
		}
		c->qkind = egress_body_kind_of(h);
	}
	/* The source gets the path the policy judged (normalised), the query as sent or as
	 * inspection masked it. */
	buf ftgt;
	if (egress_forward_target(qtarget.len ? qtarget : h->path, &ftgt) != CUSTOS_OK) {
		buf_free(&ftgt);
		log_error("egress: %s", err_msg());
		r->status = 500;
		r->decision = "error";
		snprintf(r->reason, sizeof(r->reason), "request target could not be written");
		fc_reject(c, hl);
		return;
	}
	static const span drop[] = { SPAN_LIT("Proxy-Authorization"),
		                     SPAN_LIT(EGRESS_REQUEST_ID_HEADER), SPAN_LIT("Expect") };
	http1_write_opts wo = {
		.framing = qinsp ? HTTP1_BODY_NONE /* length added later */
		           : h->framing == HTTP1_BODY_CHUNKED ? HTTP1_BODY_CHUNKED
		           : h->framing == HTTP1_BODY_LENGTH  ? HTTP1_BODY_LENGTH
		                                              : HTTP1_BODY_NONE,
		.target = buf_span(&ftgt),
		.content_length = h->content_length,
		.drop = drop,
		.ndrop = CUSTOS_ARRAY_LEN(drop),
	};
	uout_shrink(c);
	buf_reset(&c->uout);
	custos_err we = http1_write_request_head(&c->uout, h, &wo);
	buf_free(&ftgt);
	if (we != CUSTOS_OK) {
		r->status = 400;
		snprintf(r->reason, sizeof(r->reason), "request head too large to forward");
		fc_reject(c, hl);
		return;
	}
	c->meth = h->meth;
	c->qf = h->framing;
	c->qbody = h->framing != HTTP1_BODY_NONE;
	c->expect = h->expect_continue;
	http1_limits lim = { .max_body = EGRESS_MAX_REQUEST_BODY };
	http1_body_init(&c->qb, h, &lim);
	c->bdone = !c->qbody || http1_body_done(&c->qb);
	if (c->bdone && !qinsp)
		egress_hash_request_end(r); /* no body: the empty body's digest */
	c->insp = c->released = c->sent = false;
	c->in_req = true;
	buf_consume(&c->in, hl); /* h's spans are stale from here */
	c->cap = c->src->o.max_response ? c->src->o.max_response : s->o.max_response;
	c->up_tmo = c->src->o.timeout_ns ? c->src->o.timeout_ns : s->o.read_timeout_ns;
	c->rhead = false;
	http1_parser_init_response(&c->rp, NULL, c->meth);
	key_make(c->key, c->host.name, port, c->src, s);
	if (qinsp && c->bdone) { /* an empty body: sent with its Content-Length: 0 */
		buf_reset(&c->qin);
		fc_qbody_done(c);
		return;
	}
	if (qinsp) {
		c->st = FS_QBODY;
		buf_reset(&c->qin);
		if (c->expect) { /* answered by custos: the body is read before any upstream */
			c->expect = false;
			if (buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25) != CUSTOS_OK)
				buf_reset(&c->out);
		}
		c->last = c->lp->loop.now;
		fc_arm(c);
		return;
	}
	fc_go(c);
}

/* The request is decided, its head (and an inspected body) in c->uout: on the kept upstream
 * connection to this destination, else resolved and connected. */
static void fc_go(fconn *c)
{
	egress_server *s = c->s;
	erec *r = &c->r;
	fup *u = c->kept && strcmp(c->kept->key, c->key) == 0 ? c->kept : NULL;
	if (u == NULL)
		up_unkeep(c); /* another destination: a new connection */
	if (u) {
		c->daudit = true;
		if (egress_audit_decision(s, c->l, r) != CUSTOS_OK) {
			r->status = 503;
			r->decision = "error";
			snprintf(r->reason, sizeof(r->reason), "%s", EGRESS_AUDIT_REFUSED);
			fc_reply(c, 503, r->reason, !fc_ka(c));
			fc_finish(c);
			return;
		}
		c->kept = NULL;
		u->idle = false;
		c->up = u;
		c->ugot = 0;
		c->uoff = 0;
		c->can_retry = !c->qbody; /* a bodyless request may go once more */
		snprintf(r->addr, sizeof(r->addr), "%s", u->addr);
		fc_up_begin(c);
		return;
	}
	c->can_retry = false;
	fc_resolve(c);
}

/* The upstream failed before its response head: retry a kept connection once, else 502. */
static void fc_up_fail(fconn *c, const char *why)
{
	floop *lp = c->lp;
	if (c->up) {
		up_drop(lp, c->up);
		c->up = NULL;
	}
	if (c->can_retry && c->ugot == 0) {
		c->can_retry = false;
		buf_reset(&c->uin);
		http1_parser_init_response(&c->rp, NULL, c->meth);
		fc_resolve(c);
		return;
	}
	if (!c->r.reason[0])
		snprintf(c->r.reason, sizeof(c->r.reason), "%s",
		         why ? why : "upstream failed: closed or timed out");
	if (c->r.status < 500 || c->r.status == 0)
		c->r.status = 502;
	if (c->r.decision && strcmp(c->r.decision, "allow") == 0)
		c->r.decision = "error";
	fc_reply(c, c->r.status, c->r.reason, true);
	fc_finish(c);
}

/* The response head in c->rp (rhl bytes of c->uin). False when the request ended here. */
static bool fc_response_head(fconn *c, size_t rhl)
{
	http1_head *rh = &c->rp.head;
	erec *r = &c->r;
	r->status = rh->status;
	if (rh->status == 101 || rh->framing == HTTP1_BODY_TUNNEL) {
		egress_head_refused(r, &c->rp);
		r->status = 502;
		c->can_retry = false;
		fc_up_fail(c, NULL);
		return false;
	}
	if (rh->framing == HTTP1_BODY_LENGTH && rh->content_length > c->cap) {
		snprintf(r->reason, sizeof(r->reason),
		         "response of %llu bytes exceeds max_response %llu",
		         (unsigned long long)rh->content_length, (unsigned long long)c->cap);
		r->status = 502;
		r->decision = EGRESS_DECISION_CAP;
		c->can_retry = false;
		fc_up_fail(c, NULL);
		return false;
	}
	if (r->classification >= 0)
		egress_taint_raise(c->l, r->classification);
	/* Response inspection (the rule's inspect: response:): the body is rewritten (masks
	 * change lengths), so it goes out chunked; the head is held back until the first
	 * inspected bytes are released, so a value found early is answered with a clean 403. */
	int iop = egress_inspect_open(r);
	if (iop < 0) {
		snprintf(r->reason, sizeof(r->reason), "content inspection unavailable");
		r->status = 502;
		c->can_retry = false;
		fc_up_fail(c, NULL);
		return false;
	}
	c->insp = iop > 0 && egress_inspect_response_begin(r, rh);
	c->rf = rh->framing;
	c->cf = c->insp || c->rf == HTTP1_BODY_CLOSE ? HTTP1_BODY_CHUNKED : c->rf;
	http1_write_opts ro = { .framing = c->cf,
		                .content_length = rh->content_length,
		                .close = !fc_ka(c) };
	if (c->cf == HTTP1_BODY_NONE && egress_bodyless_length(rh, &ro.content_length))
		ro.framing = HTTP1_BODY_LENGTH; /* HEAD, 304: the size, no body */
	c->up_ka = rh->keep_alive;
	http1_body_init(&c->rb, rh, NULL);
	if (http1_write_response_head(&c->out, rh, &ro) != CUSTOS_OK) {
		buf_reset(&c->out);
		snprintf(r->reason, sizeof(r->reason), "response head too large");
		r->status = 502;
		c->can_retry = false;
		fc_up_fail(c, NULL);
		return false;
	}
	buf_consume(&c->uin, rhl);
	c->rhead = true;
	egress_hash_response_begin(r);
	c->close_after = !fc_ka(c);
	return true;
}

/* Inspected body bytes for the client, chunked. A whole JSON body (or NDJSON line) is
 * released at once, up to EGRESS_INSPECT_BODY_MAX and its masks: c->out grows to take it
 * (the upstream is not read meanwhile) and goes back to its bound after the request. */
static custos_err out_inspected(fconn *c, span o)
{
	size_t add = o.len + 2 * HTTP1_CHUNK_HDR_MAX + 64;
	if (buf_used(&c->out) + add > c->out.max)
		c->out.max = buf_used(&c->out) + add;
	/* its growth counts against egress.inspect.max_held until it is freed (out_shrink) */
	GUARD(egress_held_grow(c->s, &c->out, &c->out_ct, add));
	return http1_chunk_append(&c->out, o);
}

/* Why out_inspected failed, for fc_close. */
static const char *out_inspected_why(custos_err e)
{
	return e == CUSTOS_ERR_AGAIN ? "inspected response not forwarded: bytes held for "
	                               "inspection at egress.inspect.max_held; refused (fail "
	                               "closed)"
	                             : "response buffer";
}

/* Inspection failed (not a finding): a 502 while nothing went out, else the transfer is cut. */
static void fc_insp_failed(fconn *c)
{
	log_error("egress: response inspection: %s", err_msg());
	const char *why = egress_inspect_fail_reason(&c->r);
	snprintf(c->r.reason, sizeof(c->r.reason), "%s",
	         why ? why : "content inspection failed; response cut off");
	c->r.decision = "error";
	if (c->sent) {
		fc_close(c, NULL);
		return;
	}
	up_drop(c->lp, c->up);
	c->up = NULL;
	c->r.status = egress_inspect_fail_status(&c->r);
	fc_reply(c, c->r.status, c->r.reason, true);
	fc_finish(c);
}

/* A finding denies the response. Nothing of the value went out: before any byte reached the
 * client the answer is a 403; after, the body is cut without its last chunk, so the client
 * sees a truncated transfer, never a complete-looking one. */
static void fc_insp_denied(fconn *c)
{
	const char *dec = "deny", *why = "response denied by content inspection";
	egress_inspect_outcome(&c->r, &dec, &why);
	snprintf(c->r.reason, sizeof(c->r.reason), "%s", why);
	c->r.decision = "deny";
	up_drop(c->lp, c->up);
	c->up = NULL;
	if (!c->sent) {
		c->r.status = 403;
		fc_reply(c, 403, c->r.reason, true);
	}
	c->close_after = true;
	fc_finish(c); /* what was released goes out, then the connection closes */
}

/* The response body is complete. */
static void fc_body_done(fconn *c)
{
	if (c->insp) { /* the held-back tail */
		span o = { NULL, 0 };
		custos_err ie = egress_inspect_response_end(&c->r, &o);
		if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED) {
			fc_insp_failed(c);
			return;
		}
		egress_hash_response(&c->r, o);
		custos_err oe = o.len ? out_inspected(c, o) : CUSTOS_OK;
		if (oe != CUSTOS_OK) {
			fc_close(c, out_inspected_why(oe));
			return;
		}
		if (ie == CUSTOS_ERR_DENIED) {
			fc_insp_denied(c);
			return;
		}
	}
	if (!c->bdone) { /* answered before the whole request body: neither side can go on */
		c->up_ka = false;
		c->close_after = true;
	}
	if (c->cf == HTTP1_BODY_CHUNKED && http1_chunk_end(&c->out) != CUSTOS_OK) {
		fc_close(c, "response framing failed");
		return;
	}
	/* The whole body is in c->out or sent: recorded unless the client goes away before it
	 * has it all (fc_close). */
	egress_hash_response_end(&c->r);
	fup *u = c->up;
	c->up = NULL;
	if (c->up_ka && c->rf != HTTP1_BODY_CLOSE && buf_used(&c->uin) == 0)
		up_keep(c, u);
	else
		up_drop(c->lp, u);
	buf_reset(&c->uin);
	fc_finish(c);
}

/* Writes c->out to the client: false when the connection was closed. */
static bool fc_flush(fconn *c, bool *progress)
{
	if (buf_used(&c->out) && c->wr && fc_hold(c))
		return true; /* at the end of the batch */
	while (buf_used(&c->out) && c->wr) {
		ssize_t n = send(c->fd, buf_ptr(&c->out), buf_used(&c->out),
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->wr = false;
			break;
		}
		if (n <= 0) {
			fc_close(c, "client went away");
			return false;
		}
		buf_consume(&c->out, (size_t)n);
		c->last = c->lp->loop.now;
		c->sent = true;
		*progress = true;
	}
	if (buf_used(&c->out) == 0) {
		buf_reset(&c->out);
		if (!c->in_req) /* an inspected response sent after its call ended */
			out_shrink(c);
	}
	return true;
}

/* Reads what the client sent into c->in, at most FIO_CHUNK. 1: bytes came; 0: none now (c->rd
 * cleared); -1: the connection is closed (fc_close with full when the buffer cannot grow, with
 * gone at the end of the client's stream or an error). */
static int fc_read_in(fconn *c, const char *full, const char *gone)
{
	size_t room = c->in.max - buf_used(&c->in);
	size_t want = room < FIO_CHUNK ? room : FIO_CHUNK;
	if (want == 0 || buf_reserve(&c->in, want) != CUSTOS_OK) {
		fc_close(c, full);
		return -1;
	}
	ssize_t n;
	do
		n = recv(c->fd, buf_tail(&c->in), want, MSG_DONTWAIT);
	while (n == -1 && errno == EINTR);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->rd = false;
		return 0;
	}
	if (n <= 0) {
		fc_close(c, gone);
		return -1;
	}
	buf_commit(&c->in, (size_t)n);
	c->last = c->lp->loop.now;
	if ((size_t)n < want && !c->hup)
		c->rd = false;
	return 1;
}

/* The request body, from the client into c->uout (re-framed) while less than FOUT_HIGH waits
 * for the upstream (backpressure: the client is not read meanwhile). False when the request
 * ended here. */
static bool fc_body_pump(fconn *c, bool *progress)
{
	while (!c->bdone) {
		if (c->uoff && c->uoff == buf_used(&c->uout)) { /* all sent: room again */
			buf_reset(&c->uout);
			c->uoff = 0;
		}
		if (buf_used(&c->uout) - c->uoff >= FOUT_HIGH)
			return true;
		if (buf_used(&c->in)) {
			span d = { NULL, 0 };
			bool done = false;
			ssize_t k = http1_body_decode(&c->qb, (const char *)buf_ptr(&c->in),
			                              buf_used(&c->in), &d, &done);
			if (k < 0) {
				c->r.status = c->qb.err.status;
				snprintf(c->r.reason, sizeof(c->r.reason), "request body: %s",
				         c->qb.err.reason);
				c->r.decision = "deny";
				up_drop(c->lp, c->up);
				c->up = NULL;
				fc_reply(c, c->r.status, c->r.reason, true);
				fc_finish(c);
				return false;
			}
			custos_err e = CUSTOS_OK;
			if (d.len) {
				e = c->qf == HTTP1_BODY_CHUNKED
				            ? http1_chunk_append(&c->uout, d)
				            : buf_append(&c->uout, d.ptr, d.len);
				c->r.bytes_up += d.len;
				egress_hash_request(&c->r, d);
			}
			buf_consume(&c->in, (size_t)k);
			if (done && c->qf == HTTP1_BODY_CHUNKED && e == CUSTOS_OK)
				e = buf_append(&c->uout, "0\r\n\r\n", 5);
			if (e != CUSTOS_OK) {
				fc_close(c, "request buffer");
				return false;
			}
			if (k)
				*progress = true;
			if (done) {
				c->bdone = true;
				egress_hash_request_end(&c->r); /* read whole, handed on */
				return true;
			}
			if (k)
				continue;
		}
		if (!c->rd)
			return true;
		int r = fc_read_in(c, "request buffer", "client went away");
		if (r <= 0)
			return r == 0;
		*progress = true;
	}
	return true;
}

/* FS_QBODY done: the whole body in c->qin is inspected; it goes out behind the head, or the
 * request is answered here (nothing went upstream). */
static void fc_qbody_done(fconn *c)
{
	erec *r = &c->r;
	egress_hash_request_whole(r, buf_span(&c->qin)); /* as the model sent it */
	unsigned st = egress_inspect_request(r, c->qkind, &c->qin, &c->qout);
	buf_free(&c->qin);
	size_t n = buf_used(&c->qout);
	if (st == 0) {
		egress_hash_forwarded(r, buf_span(&c->qout));      /* when inspection rewrote it */
		c->uout.max = FUOUT_MAX + EGRESS_INSPECT_QOUT_MAX; /* until req_done */
		custos_err e = egress_head_set_length(&c->uout, n);
		if (e == CUSTOS_OK) /* the copy in uout counts as held until req_done */
			e = egress_inspect_request_move(r, &c->qout, &c->uout);
		if (e == CUSTOS_ERR_AGAIN) {
			snprintf(r->reason, sizeof(r->reason),
			         "request body not forwarded: bytes held for inspection at "
			         "egress.inspect.max_held; refused (fail closed)");
			r->decision = "error";
			st = 503;
		} else if (e != CUSTOS_OK) {
			snprintf(r->reason, sizeof(r->reason), "request too large to forward");
			r->decision = "error";
			st = 500;
		}
	}
	buf_free(&c->qout);
	if (st) {
		r->status = st;
		fc_reply(c, st, r->reason, true);
		fc_finish(c);
		return;
	}
	r->bytes_up = n;
	c->bdone = true;
	fc_go(c);
}

/* FS_QBODY: the request body read whole into c->qin (at most egress.inspect.max_body) before
 * anything goes upstream; a 100 Continue goes out first. */
static bool fc_qbody(fconn *c)
{
	bool progress = false;
	if (!fc_flush(c, &progress))
		return true;
	for (;;) {
		if (buf_used(&c->in)) {
			span d = { NULL, 0 };
			bool done = false;
			ssize_t k = http1_body_decode(&c->qb, (const char *)buf_ptr(&c->in),
			                              buf_used(&c->in), &d, &done);
			if (k < 0) {
				c->r.status = c->qb.err.status;
				snprintf(c->r.reason, sizeof(c->r.reason), "request body: %s",
				         c->qb.err.reason);
				c->r.decision = "deny";
				fc_reply(c, c->r.status, c->r.reason, true);
				fc_finish(c);
				return true;
			}
			unsigned st = d.len ? egress_inspect_request_append(&c->r, &c->qin, d) : 0;
			if (st) {
				c->r.status = st;
				fc_reply(c, st, c->r.reason, true);
				fc_finish(c);
				return true;
			}
			buf_consume(&c->in, (size_t)k);
			if (done) {
				fc_qbody_done(c);
				return true;
			}
			if (k) {
				progress = true;
				continue;
			}
		}
		if (!c->rd)
			return progress;
		int r = fc_read_in(c, "request buffer", "client went away");
		if (r <= 0)
			return r < 0 || progress;
		progress = true;
	}
}

/* FS_UP: request head out, response in, body through. */
static bool fc_up(fconn *c)
{
	fup *u = c->up;
	bool progress = false;
	bool hold = c->uoff < buf_used(&c->uout) && u->wr && fc_hold(c);

	while (!hold && c->uoff < buf_used(&c->uout) && u->wr) {
		ssize_t n = send(u->fd, buf_ptr(&c->uout) + c->uoff, buf_used(&c->uout) - c->uoff,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			u->wr = false;
			break;
		}
		if (n <= 0) {
			fc_up_fail(c, "upstream connection failed while the request was sent");
			return true;
		}
		c->uoff += (size_t)n;
		c->last = c->lp->loop.now;
		progress = true;
	}
	if (!c->bdone) {
		if (!fc_body_pump(c, &progress))
			return true;
		if (c->uoff < buf_used(&c->uout) && u->wr && !fc_hold(c))
			return true; /* more to send: round again */
	}
	bool eof = false;
	if (u->rd && buf_used(&c->out) < FOUT_HIGH) {
		size_t room = c->uin.max - buf_used(&c->uin);
		size_t want = room < FUP_CHUNK ? room : FUP_CHUNK;
		if (want == 0) {
			if (!c->rhead) {
				snprintf(c->r.reason, sizeof(c->r.reason),
				         "response head too large");
				c->can_retry = false;
				fc_up_fail(c, NULL);
				return true;
			}
		} else if (buf_reserve(&c->uin, want) == CUSTOS_OK) {
			ssize_t n;
			do
				n = recv(u->fd, buf_tail(&c->uin), want, MSG_DONTWAIT);
			while (n == -1 && errno == EINTR);
			if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				u->rd = false;
			} else if (n <= 0) {
				eof = true;
				u->hup = true;
			} else {
				buf_commit(&c->uin, (size_t)n);
				c->ugot += (uint64_t)n;
				c->last = c->lp->loop.now;
				progress = true;
				if ((size_t)n < want && !u->hup)
					u->rd = false;
			}
		}
	}
	if (!c->rhead) {
		for (;;) {
			if (buf_used(&c->uin) == 0)
				break;
			ssize_t rhl = http1_parse_head(&c->rp, (const char *)buf_ptr(&c->uin),
			                               buf_used(&c->uin));
			if (rhl == 0)
				break;
			if (rhl < 0) {
				egress_head_refused(&c->r, &c->rp);
				c->can_retry = false;
				fc_up_fail(c, NULL);
				return true;
			}
			if (c->rp.head.status >= 200 || c->rp.head.status == 101) {
				if (!fc_response_head(c, (size_t)rhl))
					return true;
				progress = true;
				break;
			}
			buf_consume(&c->uin, (size_t)rhl); /* 1xx interim: skipped */
			http1_parser_init_response(&c->rp, NULL, c->meth);
		}
		if (!c->rhead && eof) {
			fc_up_fail(c, buf_used(&c->uin) ? "upstream closed the connection mid-head"
			                                : "upstream closed the connection before a "
			                                  "response");
			return true;
		}
	}
	if (c->rhead) {
		bool done = c->rf == HTTP1_BODY_NONE;
		while (!done && buf_used(&c->uin) && buf_used(&c->out) < FOUT_HIGH) {
			/* Body bytes that would go straight to the client wait in c->uin (bounded:
			 * the upstream is read only while it has room) for the end of the batch,
			 * rather than be copied into c->out. */
			if (!c->insp && c->cf != HTTP1_BODY_CHUNKED && buf_used(&c->out) == 0 &&
			    c->wr && fc_hold(c))
				break;
			span d = { NULL, 0 };
			ssize_t k = http1_body_decode(&c->rb, (const char *)buf_ptr(&c->uin),
			                              buf_used(&c->uin), &d, &done);
			if (k < 0) {
				snprintf(c->r.reason, sizeof(c->r.reason), "upstream body: %s",
				         c->rb.err.reason);
				egress_upstream_cut(&c->r);
				fc_close(c, NULL);
				return true;
			}
			if (d.len) {
				if (c->r.bytes_down + d.len > c->cap) {
					snprintf(c->r.reason, sizeof(c->r.reason),
					         "response exceeded max_response %llu; cut off",
					         (unsigned long long)c->cap);
					c->r.decision = EGRESS_DECISION_CAP;
					fc_close(c, NULL);
					return true;
				}
				c->r.bytes_down += d.len;
				if (c->insp) {
					span o = { NULL, 0 };
					custos_err ie = egress_inspect_response_data(&c->r, d, &o);
					if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED) {
						fc_insp_failed(c);
						return true;
					}
					if (o.len) {
						c->released = true;
						egress_hash_response(&c->r, o);
						custos_err oe = out_inspected(c, o);
						if (oe != CUSTOS_OK) {
							fc_close(c, out_inspected_why(oe));
							return true;
						}
					}
					if (ie == CUSTOS_ERR_DENIED) {
						fc_insp_denied(c);
						return true;
					}
					d.len = 0;
				} else {
					egress_hash_response(&c->r, d);
				}
				if (d.len && c->cf != HTTP1_BODY_CHUNKED &&
				    buf_used(&c->out) == 0 && c->wr) {
					/* nothing queued: straight from the upstream bytes, no copy */
					ssize_t n;
					do
						n = send(c->fd, d.ptr, d.len,
						         MSG_NOSIGNAL | MSG_DONTWAIT);
					while (n == -1 && errno == EINTR);
					if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
						c->wr = false;
						n = 0;
					} else if (n <= 0) {
						fc_close(c, "client went away");
						return true;
					}
					c->last = c->lp->loop.now;
					c->sent = true;
					d.ptr += n;
					d.len -= (size_t)n;
				}
				custos_err e = d.len == 0 ? CUSTOS_OK
				               : c->cf == HTTP1_BODY_CHUNKED
				                       ? http1_chunk_append(&c->out, d)
				                       : buf_append(&c->out, d.ptr, d.len);
				if (e != CUSTOS_OK) {
					fc_close(c, "response buffer");
					return true;
				}
			}
			buf_consume(&c->uin, (size_t)k);
			progress = true;
			if (k == 0 && !done)
				break;
		}
		if (!done && eof && buf_used(&c->uin) == 0) {
			if (http1_body_eof(&c->rb) == CUSTOS_OK) {
				c->up_ka = false;
				done = true;
			} else {
				snprintf(c->r.reason, sizeof(c->r.reason),
				         "upstream closed mid-body");
				egress_upstream_cut(&c->r);
				fc_close(c, NULL);
				return true;
			}
		}
		if (done) {
			fc_body_done(c);
			return true;
		}
	}
	if (c->insp && !c->released)
		return progress; /* the head is held until the inspector releases bytes */
	if (!fc_flush(c, &progress))
		return true;
	return progress;
}

/* FS_HEAD: read and parse a request head. */
static bool fc_head(fconn *c)
{
	for (;;) {
		if (buf_used(&c->in)) {
			ssize_t r = http1_parse_head(&c->p, (const char *)buf_ptr(&c->in),
			                             buf_used(&c->in));
			if (r > 0) {
				fc_request(c, (size_t)r);
				return true;
			}
			if (r < 0) {
				erec_init(&c->r, "http");
				c->r.status = c->p.err.status;
				c->r.decision = "deny";
				snprintf(c->r.reason, sizeof(c->r.reason), "malformed request: %s",
				         c->p.err.reason);
				fc_reply(c, c->r.status, c->r.reason, true);
				c->in_req = true;
				fc_finish(c);
				return true;
			}
		}
		if (!c->rd)
			return false;
		size_t room = c->in.max - buf_used(&c->in);
		if (room == 0) {
			erec_init(&c->r, "http");
			c->r.status = 431;
			c->r.decision = "deny";
			snprintf(c->r.reason, sizeof(c->r.reason), "malformed request: %s",
			         "request head too large");
			fc_reply(c, 431, c->r.reason, true);
			c->in_req = true;
			fc_finish(c);
			return true;
		}
		/* the end of the client's stream, or an error: closed, audited when it cut a head */
		int r = fc_read_in(c, NULL, "client closed inside the request head");
		if (r <= 0)
			return r < 0;
		if (c->head_t0 == 0)
			c->head_t0 = c->last;
	}
}

/* FS_DRAIN: the answer goes out; then the next request, or close. */
static bool fc_drain(fconn *c)
{
	bool progress = false;
	if (!fc_flush(c, &progress))
		return true;
	if (buf_used(&c->out))
		return progress;
	req_done(c);
	if (c->close_after || atomic_load(&c->s->stopping)) {
		fc_close(c, NULL);
		return true;
	}
	fc_next_request(c);
	return true;
}

static void fc_drive(fconn *c)
{
	for (;;) { /* until nothing moves: edge-triggered readiness must be used up */
		int st = c->st;
		bool progress;
		switch (st) {
		case FS_HEAD:
			progress = fc_head(c);
			break;
		case FS_QBODY:
			progress = fc_qbody(c);
			break;
		case FS_CONNECT:
			progress = fc_connect_check(c);
			break;
		case FS_UP:
			progress = fc_up(c);
			break;
		case FS_DRAIN:
			progress = fc_drain(c);
			break;
		default:
			return;
		}
		if (!progress && c->st == st)
			return;
	}
}

static void fc_io(ev_loop *el, void *obj, uint32_t ev)
{
	fconn *c = obj;
	(void)el;
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->rd = true;
	if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->wr = true;
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->hup = true;
	fc_drive(c);
}

static void fc_timer(ev_loop *el, void *obj)
{
	fconn *c = obj;
	if (c->st == FS_RESOLVE || c->st == FS_CLOSED)
		return; /* the resolver answers within its own timeout */
	uint64_t at = fc_deadline(c);
	if (el->now < at) {
		ev_timer_set(el, &c->tm, at);
		return;
	}
	switch (c->st) {
	case FS_CONNECT:
		c->cerr = ETIMEDOUT;
		up_drop(c->lp, c->up);
		c->up = NULL;
		fc_connect_next(c);
		fc_drive(c);
		return;
	case FS_UP:
		if (!c->rhead) {
			c->can_retry = false;
			fc_up_fail(c, "upstream read timed out before the response head");
			fc_drive(c);
			return;
		}
		egress_upstream_cut(&c->r);
		fc_close(c, "upstream read timed out mid-body");
		return;
	case FS_DRAIN:
		fc_close(c, "client send timed out");
		return;
	case FS_QBODY:
		fc_close(c, "client read timed out in the request body");
		return;
	case FS_HEAD:
		if (buf_used(&c->in) == 0) { /* idle between requests: not a refusal */
			fc_close(c, NULL);
			return;
		}
		fc_head_cut(c, 408, "request head not received in time");
		fc_reply(c, 408, c->r.reason, true);
		fc_finish(c);
		fc_drive(c);
		return;
	default:
		fc_close(c, NULL);
		return;
	}
}

static void fc_start(floop *lp, fconn *c)
{
	c->next = lp->live;
	if (lp->live)
		lp->live->prev = c;
	lp->live = c;
	c->tm = (ev_timer){ .cb = fc_timer, .obj = c };
	c->rd = c->wr = true;
	int fl = fcntl(c->fd, F_GETFL);
	if (fl == -1 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) == -1 ||
	    ev_add(&lp->loop, &c->io, c->fd, fc_io, c) != CUSTOS_OK) {
		log_error("egress: cannot watch a client connection: %s", strerror(errno));
		c->io.dead = true;
		erec_init(&c->r, "connection"); /* closed unanswered, but audited */
		c->r.status = 503;
		c->r.decision = "error";
		snprintf(c->r.reason, sizeof(c->r.reason), "cannot watch the client connection: %s",
		         strerror(errno));
		c->in_req = true;
		fc_close(c, NULL);
		return;
	}
	nodelay(c->fd);
	fc_next_request(c);
	fc_drive(c);
}

/* ---------------------------------------------------------------------------------------------
 * Loops and the resolver pool
 */
static void loop_wake(ev_loop *el, void *obj, uint32_t ev)
{
	floop *lp = obj;
	uint64_t v;
	(void)el;
	(void)ev;
	while (read(lp->efd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&lp->mu);
	fconn *q = lp->queue, *d = lp->done;
	lp->queue = lp->done = NULL;
	pthread_mutex_unlock(&lp->mu);
	while (d) {
		fconn *n = d->qnext;
		d->qnext = NULL;
		if (d->dead) {
			ev_defer_free(&lp->loop, d, fc_free);
		} else {
			d->st = FS_CONNECT; /* leaves FS_RESOLVE; fc_resolved sets what follows */
			fc_resolved(d, d->jerr, d->jmsg);
			fc_drive(d);
		}
		d = n;
	}
	while (q) {
		fconn *n = q->qnext;
		q->qnext = NULL;
		fc_start(lp, q);
		q = n;
	}
}

/* The loop's batch hook: at the end of a batch, the listed connections send. */
static void floop_batch(ev_loop *el, void *obj, bool begin)
{
	floop *lp = obj;
	(void)el;
	lp->batching = begin;
	if (begin)
		return;
	while (lp->flush_head != NULL) {
		fconn *c = lp->flush_head;
		lp->flush_head = c->flush_next;
		c->flush_next = NULL;
		c->flush_pending = false;
		/* closed or handed off in the batch: freed only after it (or by the resolver) */
		if (c->st != FS_CLOSED)
			fc_drive(c);
	}
}

static void *loop_main(void *arg)
{
	floop *lp = arg;
	proc_name_self("custos-eg-loop");
	while (!atomic_load(&lp->s->stopping)) {
		if (ev_run_once(&lp->loop, 200) != CUSTOS_OK) {
			log_error("egress forward loop: %s", err_msg());
			break;
		}
	}
	return NULL;
}

static void *res_main(void *arg)
{
	egress_server *s = arg;
	efwd *f = s->fwd;
	proc_name_self("custos-eg-dns");
	for (;;) {
		pthread_mutex_lock(&f->mu);
		while (f->jobs == NULL && !f->stop)
			pthread_cond_wait(&f->cv, &f->mu);
		if (f->stop) {
			pthread_mutex_unlock(&f->mu);
			return NULL;
		}
		fconn *c = f->jobs;
		f->jobs = c->qnext;
		if (f->jobs == NULL)
			f->jtail = NULL;
		c->qnext = NULL;
		pthread_mutex_unlock(&f->mu);

		c->jerr = egress_resolve(s, &c->host, c->port, c->src->o.allow_private, &c->tgt);
		if (c->jerr != CUSTOS_OK)
			snprintf(c->jmsg, sizeof(c->jmsg), "%s", err_msg());
		floop *lp = c->lp;
		pthread_mutex_lock(&lp->mu);
		c->qnext = lp->done;
		lp->done = c;
		pthread_mutex_unlock(&lp->mu);
		uint64_t one = 1;
		while (write(lp->efd, &one, sizeof(one)) == -1 && errno == EINTR)
			;
	}
}

custos_err egress_fwd_start(egress_server *s, unsigned nloops)
{
	efwd *f = xcalloc(1, sizeof(*f));
	custos_err e = CUSTOS_OK;
	if (nloops == 0) { /* one per CPU */
		long nc = sysconf(_SC_NPROCESSORS_ONLN);
		nloops = nc > 0 ? (unsigned)nc : 1;
	}
	if (nloops > EGRESS_MAX_FWD_LOOPS)
		nloops = EGRESS_MAX_FWD_LOOPS;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->loops = xcalloc(nloops, sizeof(*f->loops));
	s->fwd = f;
	for (size_t i = 0; i < nloops; i++) {
		floop *lp = &f->loops[i];
		lp->s = s;
		lp->efd = -1;
		pthread_mutex_init(&lp->mu, NULL);
		f->n++;
		if ((e = ev_loop_init(&lp->loop)) != CUSTOS_OK)
			return e;
		lp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (lp->efd == -1)
			return err_sys("egress forward loop: eventfd");
		if ((e = ev_add_lt(&lp->loop, &lp->eio, lp->efd, loop_wake, lp)) != CUSTOS_OK)
			return e;
		lp->loop.batch_cb = floop_batch;
		lp->loop.batch_obj = lp;
		int rc = pthread_create(&lp->th, NULL, loop_main, lp);
		if (rc != 0) {
			errno = rc;
			return err_sys("egress forward loop thread");
		}
		lp->started = true;
	}
	for (size_t i = 0; i < FRES_THREADS; i++) {
		int rc = pthread_create(&f->res[i], NULL, res_main, s);
		if (rc != 0) {
			errno = rc;
			return err_sys("egress resolver thread");
		}
		f->nres++;
	}
	return CUSTOS_OK;
}

void egress_fwd_stop(egress_server *s)
{
	efwd *f = s->fwd;
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->mu);
	f->stop = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	for (size_t i = 0; i < f->nres; i++)
		pthread_join(f->res[i], NULL);
	f->nres = 0;
	for (size_t i = 0; i < f->n; i++) {
		floop *lp = &f->loops[i];
		if (lp->started)
			pthread_join(lp->th, NULL);
		lp->started = false;
		/* the loop thread has left: its connections are closed here */
		pthread_mutex_lock(&lp->mu);
		lp->closed = true;
		fconn *q = lp->queue, *d = lp->done;
		lp->queue = lp->done = NULL;
		pthread_mutex_unlock(&lp->mu);
		while (q) { /* accepted, never started */
			fconn *n = q->qnext;
			close(q->fd);
			atomic_fetch_sub(&q->l->active, 1);
			fc_free(q);
			q = n;
		}
		while (d) { /* resolved, not yet taken up: still on the live list */
			fconn *n = d->qnext;
			d->qnext = NULL;
			if (d->dead)
				ev_defer_free(&lp->loop, d, fc_free);
			else
				d->st = FS_CONNECT;
			d = n;
		}
		for (fconn *c = f->jobs; c; c = c->qnext) /* never resolved */
			if (c->lp == lp && c->st == FS_RESOLVE)
				c->st = FS_CONNECT;
		while (lp->live) {
			fconn *c = lp->live;
			if (c->st == FS_RESOLVE || c->st == FS_CLOSED)
				c->st = FS_CONNECT;
			fc_close(c, "egress proxy stopping");
		}
		/* dead connections still queued for the resolver */
		for (fconn *c = f->jobs, *n; c; c = n) {
			n = c->qnext;
			if (c->lp == lp && c->dead)
				ev_defer_free(&lp->loop, c, fc_free);
		}
	}
	f->jobs = f->jtail = NULL;
}

void egress_fwd_free(egress_server *s)
{
	efwd *f = s->fwd;
	if (f == NULL)
		return;
	egress_fwd_stop(s);
	for (size_t i = 0; i < f->n; i++) {
		floop *lp = &f->loops[i];
		ev_loop_free(&lp->loop); /* runs the deferred frees */
		if (lp->efd != -1)
			close(lp->efd);
		pthread_mutex_destroy(&lp->mu);
	}
	free(f->loops);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	free(f);
	s->fwd = NULL;
}

bool egress_fwd_add(egress_server *s, elistener *l, int fd, const char *remote)
{
	efwd *f = s->fwd;
	if (f == NULL || f->n == 0)
		return false;
	floop *lp = &f->loops[atomic_fetch_add(&f->rr, 1) % f->n];
	fconn *c = xcalloc(1, sizeof(*c));
	c->lp = lp;
	c->s = s;
	c->l = l;
	c->fd = fd;
	c->io.fd = -1;
	snprintf(c->remote, sizeof(c->remote), "%s", remote);
	buf_init(&c->in, FIN_MAX);
	buf_init(&c->uout, FUOUT_MAX);
	buf_init(&c->uin, FUP_MAX);
	buf_init(&c->out, FOUT_MAX);
	buf_init(&c->qin, EGRESS_INSPECT_BODY_CEIL); /* egress.inspect.max_body checks first */
	buf_init(&c->qout, EGRESS_INSPECT_QOUT_MAX);
	pthread_mutex_lock(&lp->mu);
	bool ok = !lp->closed;
	if (ok) {
		c->qnext = lp->queue;
		lp->queue = c;
	}
	pthread_mutex_unlock(&lp->mu);
	if (!ok) {
		fc_free(c);
		return false;
	}
	uint64_t one = 1;
	while (write(lp->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
	return true;
}

size_t egress_fwd_loops(const egress_server *s)
{
	return s->fwd ? s->fwd->n : 0;
}
