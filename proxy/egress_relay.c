/*
 * The egress tunnel relay: every established CONNECT tunnel (SNI checked, upstream connected,
 * decision audited) is handed to one epoll loop that moves bytes both ways through bounded
 * buffers. A full buffer stops reading from its source (backpressure both ways); an end of
 * stream is passed on as a half-close once the buffer is flushed; an idle timer and the
 * source's response cap end a tunnel; its completion event is audited when it closes.
 *
 * Sends at the end of a batch, as on the ingress workers (docs/PROXY.md "sends at the end of
 * a batch"): while the loop handles the events of one epoll_wait, a tunnel only reads (into
 * its bounded buffers, so the bound stays the backpressure point) and waits on the relay's
 * flush list; once every event of the batch is handled, each listed tunnel is pumped whole:
 * what it buffered is written, in order, and an end of stream it saw is passed on after it.
 */
#include <errno.h>
#include <fcntl.h>
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

#define ETUN_BUF 65536u /* bytes buffered per direction (the backpressure bound) */

typedef struct etun etun;

typedef struct eside {
	etun *t;
	ev_io io;
	int fd;
	bool readable, writable; /* edge-triggered readiness not yet used up */
	bool eof;                /* this side ended its stream */
	bool shut;               /* we shut down writing to this side */
} eside;

struct etun {
	eside side[2]; /* 0 client, 1 upstream */
	uint8_t *b[2]; /* b[i]: bytes read from side i, to be written to side 1-i */
	size_t off[2], len[2];
	egress_server *s;
	elistener *l;
	erec r;
	uint64_t cap; /* bytes from upstream allowed (max_response) */
	uint64_t idle_ns, last;
	ev_timer idle;
	etun *prev, *next;
	bool closed;
	/* its writes wait for the end of the loop's batch of events (relay_batch) */
	bool flush_pending;
	etun *flush_next;
};

struct erelay {
	ev_loop loop;
	pthread_t th;
	bool started;
	int efd; /* eventfd: new tunnels queued */
	ev_io eio;
	pthread_mutex_t mu; /* queue, closed */
	etun *queue;
	bool closed;   /* no more tunnels accepted */
	etun *live;    /* owned by the relay thread */
	bool batching; /* within a batch of events: tunnels read, their writes wait */
	etun *flush_head;
};

static void tun_free(void *p)
{
	etun *t = p;
	free(t->b[0]);
	free(t->b[1]);
	free(t);
}

static void tun_close(erelay *rl, etun *t, const char *why)
{
	if (t->closed)
		return;
	t->closed = true;
	if (why && !t->r.reason[0])
		snprintf(t->r.reason, sizeof(t->r.reason), "%s", why);
	ev_timer_clear(&rl->loop, &t->idle);
	for (int i = 0; i < 2; i++) {
		ev_del(&rl->loop, &t->side[i].io);
		close(t->side[i].fd);
	}
	if (t->prev)
		t->prev->next = t->next;
	else
		rl->live = t->next;
	if (t->next)
		t->next->prev = t->prev;
	egress_audit(t->s, t->l, &t->r);
	/* The last use of t->l: once the count is 0 a closed listener's slot may be taken by
	 * another model (egress_listener_add). */
	atomic_fetch_sub(&t->l->active, 1);
	t->l = NULL;
	ev_defer_free(&rl->loop, t, tun_free);
}

/* Moves what can be moved without blocking, in both directions. Within a batch of events it
 * only reads, and lists t for the end of the batch (relay_batch), which pumps it again with the
 * writes: bytes go out in the order they were read, and a half-close only once all before it
 * went. */
static void tun_pump(erelay *rl, etun *t)
{
	bool progress = true;
	bool hold = rl->batching;
	if (hold && !t->flush_pending) {
		t->flush_pending = true;
		t->flush_next = rl->flush_head;
		rl->flush_head = t;
	}
	while (progress && !t->closed) {
		progress = false;
		for (int i = 0; i < 2 && !t->closed; i++) {
			eside *from = &t->side[i], *to = &t->side[1 - i];
			/* write what is buffered (not before the end of the batch) */
			while (!hold && t->len[i] && to->writable) {
				ssize_t n = send(to->fd, t->b[i] + t->off[i], t->len[i],
				                 MSG_NOSIGNAL | MSG_DONTWAIT);
				if (n == -1 && errno == EINTR)
					continue;
				if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
					to->writable = false;
					break;
				}
				if (n <= 0) {
					tun_close(rl, t,
					          i ? "client went away" : "upstream went away");
					return;
				}
				t->off[i] += (size_t)n;
				t->len[i] -= (size_t)n;
				t->last = rl->loop.now;
				progress = true;
			}
			if (t->len[i] == 0)
				t->off[i] = 0;
			/* read more while there is room (a full buffer is the backpressure) */
			size_t room = ETUN_BUF - t->off[i] - t->len[i];
			if (room && from->readable && !from->eof) {
				ssize_t n;
				do
					n = recv(from->fd, t->b[i] + t->off[i] + t->len[i], room,
					         MSG_DONTWAIT);
				while (n == -1 && errno == EINTR);
				if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
					from->readable = false;
				} else if (n == -1) {
					tun_close(rl, t,
					          i ? "upstream connection reset"
					            : "client connection reset");
					return;
				} else if (n == 0) {
					from->eof = true;
					progress = true;
				} else {
					if (i == 1) {
						if (t->r.bytes_down + (uint64_t)n > t->cap) {
							char why[96];
							snprintf(why, sizeof(why),
							         "tunnel exceeded max_response "
							         "%llu; "
							         "cut off",
							         (unsigned long long)t->cap);
							t->r.decision = EGRESS_DECISION_CAP;
							tun_close(rl, t, why);
							return;
						}
						t->r.bytes_down += (uint64_t)n;
					} else {
						t->r.bytes_up += (uint64_t)n;
					}
					t->len[i] += (size_t)n;
					t->last = rl->loop.now;
					progress = true;
				}
			}
			/* half-close: pass an end of stream on once everything before it went */
			if (!hold && from->eof && t->len[i] == 0 && !to->shut) {
				(void)shutdown(to->fd, SHUT_WR);
				to->shut = true;
			}
		}
		if (t->side[0].eof && t->side[1].eof && t->side[0].shut && t->side[1].shut) {
			tun_close(rl, t, NULL);
			return;
		}
	}
}

/* The loop's batch hook: at the end of a batch, the listed tunnels write what they read. */
static void relay_batch(ev_loop *lp, void *obj, bool begin)
{
	erelay *rl = obj;
	(void)lp;
	rl->batching = begin;
	if (begin)
		return;
	while (rl->flush_head != NULL) {
		etun *t = rl->flush_head;
		rl->flush_head = t->flush_next;
		t->flush_next = NULL;
		t->flush_pending = false;
		if (!t->closed) /* a tunnel closed in the batch is freed only after it */
			tun_pump(rl, t);
	}
}

static void tun_io(ev_loop *lp, void *obj, uint32_t ev)
{
	eside *sd = obj;
	etun *t = sd->t;
	erelay *rl = (erelay *)((char *)lp - offsetof(erelay, loop));
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		sd->readable = true;
	if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		sd->writable = true;
	tun_pump(rl, t);
}

static void tun_idle(ev_loop *lp, void *obj)
{
	etun *t = obj;
	erelay *rl = (erelay *)((char *)lp - offsetof(erelay, loop));
	if (lp->now - t->last >= t->idle_ns) {
		tun_close(rl, t, "tunnel idle timeout");
		return;
	}
	ev_timer_set(lp, &t->idle, t->last + t->idle_ns);
}

static void tun_start(erelay *rl, etun *t)
{
	t->next = rl->live;
	if (rl->live)
		rl->live->prev = t;
	rl->live = t;
	t->last = rl->loop.now;
	t->idle = (ev_timer){ .cb = tun_idle, .obj = t };
	for (int i = 0; i < 2; i++) {
		eside *sd = &t->side[i];
		sd->readable = sd->writable = true; /* try at once; EAGAIN corrects it */
		if (ev_add(&rl->loop, &sd->io, sd->fd, tun_io, sd) != CUSTOS_OK) {
			log_error("egress relay: %s", err_msg());
			for (int k = i; k < 2; k++)
				t->side[k].io = (ev_io){ .fd = t->side[k].fd, .dead = true };
			tun_close(rl, t, "relay: cannot watch the sockets");
			return;
		}
	}
	ev_timer_set(&rl->loop, &t->idle, t->last + t->idle_ns);
	tun_pump(rl, t);
}

static void relay_wake(ev_loop *lp, void *obj, uint32_t ev)
{
	erelay *rl = obj;
	uint64_t v;
	(void)lp;
	(void)ev;
	while (read(rl->efd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&rl->mu);
	etun *q = rl->queue;
	rl->queue = NULL;
	pthread_mutex_unlock(&rl->mu);
	while (q) {
		etun *n = q->next;
		q->next = q->prev = NULL;
		tun_start(rl, q);
		q = n;
	}
}

static void *relay_main(void *arg)
{
	egress_server *s = arg;
	erelay *rl = s->relay;
	proc_name_self("custos-eg-relay");
	while (!atomic_load(&s->stopping)) {
		if (ev_run_once(&rl->loop, 200) != CUSTOS_OK) {
			log_error("egress relay: %s", err_msg());
			break;
		}
	}
	pthread_mutex_lock(&rl->mu);
	rl->closed = true;
	etun *q = rl->queue;
	rl->queue = NULL;
	pthread_mutex_unlock(&rl->mu);
	while (q) { /* queued, never started: audited as cut off too */
		etun *n = q->next;
		q->next = q->prev = NULL;
		q->side[0].io = (ev_io){ .fd = q->side[0].fd, .dead = true };
		q->side[1].io = (ev_io){ .fd = q->side[1].fd, .dead = true };
		q->next = rl->live;
		if (rl->live)
			rl->live->prev = q;
		rl->live = q;
		q = n;
	}
	while (rl->live)
		tun_close(rl, rl->live, "egress proxy stopping");
	return NULL;
}

custos_err egress_relay_start(egress_server *s)
{
	erelay *rl = xcalloc(1, sizeof(*rl));
	rl->efd = -1;
	pthread_mutex_init(&rl->mu, NULL);
	custos_err e = ev_loop_init(&rl->loop);
	if (e != CUSTOS_OK)
		goto fail;
	rl->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (rl->efd == -1) {
		e = err_sys("egress relay: eventfd");
		goto fail;
	}
	if ((e = ev_add_lt(&rl->loop, &rl->eio, rl->efd, relay_wake, rl)) != CUSTOS_OK)
		goto fail;
	rl->loop.batch_cb = relay_batch;
	rl->loop.batch_obj = rl;
	s->relay = rl;
	int rc = pthread_create(&rl->th, NULL, relay_main, s);
	if (rc != 0) {
		s->relay = NULL;
		errno = rc;
		e = err_sys("egress relay thread");
		goto fail;
	}
	rl->started = true;
	return CUSTOS_OK;
fail:
	if (rl->efd != -1)
		close(rl->efd);
	ev_loop_free(&rl->loop);
	pthread_mutex_destroy(&rl->mu);
	free(rl);
	return e;
}

void egress_relay_stop(egress_server *s)
{
	erelay *rl = s->relay;
	if (rl == NULL)
		return;
	if (rl->started) /* the thread sees s->stopping within its poll interval */
		pthread_join(rl->th, NULL);
	rl->started = false;
}

void egress_relay_free(egress_server *s)
{
	erelay *rl = s->relay;
	if (rl == NULL)
		return;
	egress_relay_stop(s);
	ev_loop_free(&rl->loop); /* runs the deferred frees */
	close(rl->efd);
	pthread_mutex_destroy(&rl->mu);
	free(rl);
	s->relay = NULL;
}

bool egress_relay_add(egress_server *s, elistener *l, int cfd, int ufd, const erec *r, uint64_t cap)
{
	erelay *rl = s->relay;
	if (rl == NULL)
		return false;
	for (int i = 0; i < 2; i++) {
		int fd = i ? ufd : cfd;
		int fl = fcntl(fd, F_GETFL);
		if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
			return false;
	}
	etun *t = xcalloc(1, sizeof(*t));
	t->b[0] = xcalloc(1, ETUN_BUF);
	t->b[1] = xcalloc(1, ETUN_BUF);
	t->s = s;
	t->l = l;
	t->r = *r;
	t->cap = cap;
	t->idle_ns = s->o.idle_timeout_ns;
	t->side[0] = (eside){ .t = t, .fd = cfd, .io = { .fd = -1 } };
	t->side[1] = (eside){ .t = t, .fd = ufd, .io = { .fd = -1 } };
	pthread_mutex_lock(&rl->mu);
	bool ok = !rl->closed;
	if (ok) {
		t->next = rl->queue;
		rl->queue = t;
	}
	pthread_mutex_unlock(&rl->mu);
	if (!ok) {
		tun_free(t);
		return false;
	}
	uint64_t one = 1;
	while (write(rl->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
	return true;
}
