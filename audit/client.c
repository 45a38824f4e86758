/*
 * The producer side: audit_writer_start forks the writer (and, when sinks are configured, the
 * shipper's supervisor, which forks the shipper and restarts it: shipmon.c); proxy workers
 * submit into a bounded in-process queue that a sender thread ships in batches over a
 * SEQPACKET socket, and an ack thread turns the writer's durability reports into wake-ups for
 * sync-mode producers. A worker never touches disk or network.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit_int.h"
#include "custos/lazylib.h"

_Static_assert(sizeof(((audit_stats *)0)->fsync_buckets) == AUDIT_FSYNC_BUCKETS * sizeof(uint64_t),
               "audit_stats.fsync_buckets and AUDIT_FSYNC_BUCKETS disagree");

struct audit_writer {
	audit_options o;
	uint64_t fsyncs, fsync_ns, fsync_buckets[AUDIT_FSYNC_BUCKETS]; /* writer's, under mu */
	char *dir;
	char *sink_names[AUDIT_MAX_SINKS];
	/* A HEC sink's token file (NULL: none), read here again at a reload (audit_sinks_reload) */
	char *token_files[AUDIT_MAX_SINKS];
	int sock;
	pid_t pid;
	/* The shipper's supervisor (shipmon.c): its pid, the write end of its message pipe
	 * (closing it, or a drain deadline, stops the shipper) and the read end of its notices,
	 * read by the ship_watch thread. */
	pid_t shipper_pid;
	int shipper_fd, note_fd;
	pthread_t ship_watch;
	bool ship_watching;
	/* What the notices said, under mu: the running shipper's pid (0: none), restarts, ends and
	 * failed starts in a row, the last end (a wait status; -1: none) and failed start, and
	 * whether the supervisor itself is gone (lost) or was asked to stop. */
	int ship_pid, ship_last_status;
	uint64_t ship_restarts;
	uint32_t ship_failures;
	bool ship_lost, ship_stopping;
	char ship_last_error[256];
	pthread_mutex_t mu;
	pthread_cond_t cv_data, cv_room, cv_durable;
	buf pending;
	size_t pending_events;
	/* deny mode: queue slots held for events not yet submitted (audit_reserve); the queue
	 * admits new work only while pending_events + reserved stays within queue_events */
	size_t reserved;
	uint64_t cur_gen, durable_gen, durable_seq;
	bool failing, dead, stopping;
	bool in_send;        /* one thread at a time ships a group (the sender, or a sync leader) */
	bool kick;           /* audit_flush waits: ship what is queued without lingering */
	uint64_t first_ns;   /* when the queue last went from empty to one event */
	uint64_t linger_ns;  /* batch mode: how long the sender lets a group fill */
	size_t group_events; /* ... or until it holds this many events */
	buf lead;            /* the sync leader's send buffer (used under in_send) */
	/* A sync leader's group the socket had no room for: the sender thread sends the rest of
	 * w->lead from lead_at (in_send passes to it with the group). */
	bool lead_handoff;
	size_t lead_at;
	uint64_t lead_gen, lead_first_ns;
	uint64_t submitted, denied_full, failed, last_alert;
	char fail_msg[200];
	/* the writer's current failure (acker): since when, and `failed` when it began */
	uint64_t fail_since_ns, failed_at_fail;
	/* deny mode: requests refused a slot and events lost for a full queue, the counts the
	 * last trail.queue_full event reported, and when the first unreported refusal came */
	uint64_t full_requests, full_events, rep_requests, rep_events, full_since_ns;
	pthread_t sender, acker;
	bool threads;
	atomic_bool healthy; /* !(failing || dead), for audit_writer_ok without the lock */
};

/* With w->mu held, after failing or dead changed. */
static void health_update(audit_writer *w)
{
	atomic_store_explicit(&w->healthy, !(w->failing || w->dead), memory_order_relaxed);
}

void audit_options_default(audit_options *o)
{
	memset(o, 0, sizeof(*o));
	o->durability = AUDIT_DURABILITY_BATCH;
	o->batch_window_ns = 10ull * 1000 * 1000;
	o->queue_events = 65536;
	o->on_full = AUDIT_ON_FULL_BLOCK;
	o->rotate_bytes = 64ull * 1024 * 1024;
	o->rotate_ns = 24ull * 3600 * 1000000000;
	o->checkpoint_events = 10000;
	o->checkpoint_ns = 10ull * 1000000000;
}

/* Batch mode: the sender lets a group fill for half the batch window (audit_linger_ns) after
 * its first event, or until it holds COALESCE_EVENTS events or COALESCE_BYTES bytes, so under
 * load it ships a few large messages instead of one per event. Each message carries its
 * group's first_ns and the writer commits by first_ns + linger, so an event is durable within
 * half the window plus one commit, with one commit per group. Sync mode never lingers. */
#define COALESCE_EVENTS 2048
#define COALESCE_BYTES  (4 * AUDIT_MSG_MAX - 2048)

static bool group_full(const audit_writer *w)
{
	return w->pending_events >= w->group_events || buf_used(&w->pending) >= COALESCE_BYTES;
}

/* Ships one group, from byte *at of *sending, as messages cut on record boundaries, all tagged
 * gen, the last one flagged. Only the holder of w->in_send calls it, so generations never
 * interleave on the socket. Returns CUSTOS_OK once all is sent (*sending emptied);
 * CUSTOS_ERR_AGAIN only with MSG_DONTWAIT in flags, when the socket is full: *at is then where
 * the rest begins, kept in *sending; CUSTOS_ERR_IO when the writer is gone (the handle is then
 * dead). */
static custos_err send_group(audit_writer *w, buf *sending, size_t *at, uint64_t gen,
                             uint64_t first_ns, int flags)
{
	uint8_t hdrbuf[sizeof(struct audit_msg_hdr)];
	span s = buf_span(sending);
	size_t i = *at;
	bool ok = true;
	int send_errno = 0;

	while (i < s.len && ok) {
		size_t st = i;
		uint32_t cnt = 0;
		while (i < s.len) {
			uint32_t len;
			memcpy(&len, s.ptr + i, 4);
			if (i + 4 + len - st > AUDIT_MSG_MAX - sizeof(hdrbuf))
				break;
			i += 4 + len;
			cnt++;
		}
		struct audit_msg_hdr h = { AUDIT_MSG_BATCH | (i == s.len ? AUDIT_MSG_LAST : 0), cnt,
			                   gen, first_ns };
		memcpy(hdrbuf, &h, sizeof(h));
		struct iovec iov[2] = { { hdrbuf, sizeof(hdrbuf) },
			                { (void *)(s.ptr + st), i - st } };
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
		ssize_t r;
		do
			r = sendmsg(w->sock, &mh, MSG_NOSIGNAL | flags);
		while (r == -1 && errno == EINTR);
		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    (flags & MSG_DONTWAIT)) {
			*at = st;
			return err_set(CUSTOS_ERR_AGAIN, "audit: the socket to the writer is full");
		}
		if (r == -1 && ok) {
			send_errno = errno;
			ok = false;
		}
	}
	buf_reset(sending);
	if (!ok) {
		pthread_mutex_lock(&w->mu);
		w->dead = true;
		health_update(w);
		pthread_cond_broadcast(&w->cv_durable);
		pthread_cond_broadcast(&w->cv_room);
		pthread_mutex_unlock(&w->mu);
		/* logged once the state says so: what reads the log sees requests refused */
		log_error("audit: sending to the writer: %s", strerror(send_errno));
		return err_set(CUSTOS_ERR_IO, "audit: the writer is gone");
	}
	return CUSTOS_OK;
}

/* With w->mu held and w->in_send taken: moves the queue into *sending; returns its gen and
 * sets *first_ns to when the group began (0, "commit at once", when a flush waits or in sync
 * mode). */
static uint64_t take_group(audit_writer *w, buf *sending, uint64_t *first_ns)
{
	buf tmp = w->pending;
	*first_ns = w->kick || w->linger_ns == 0 ? 0 : w->first_ns;
	w->kick = false;
	w->pending = *sending;
	*sending = tmp;
	w->pending_events = 0;
	pthread_cond_broadcast(&w->cv_room);
	return w->cur_gen++;
}

void audit_sched_batch(void)
{
	struct sched_param sp = { .sched_priority = 0 };

	if (sched_setscheduler(0, SCHED_BATCH, &sp) == -1)
		log_debug("audit: SCHED_BATCH: %s", strerror(errno));
}

/* The sender's group is out (or failed): wakes whoever waits for the socket. */
static void send_finished(struct audit_writer *w)
{
	pthread_mutex_lock(&w->mu);
	w->in_send = false;
	pthread_cond_broadcast(&w->cv_data);
	pthread_mutex_unlock(&w->mu);
}

static void *sender_main(void *arg)
{
	audit_writer *w = arg;
	buf sending;

	proc_name_self("custos-asend");
	if (w->o.durability == AUDIT_DURABILITY_BATCH)
		audit_sched_batch();
	buf_init(&sending, SIZE_MAX);
	for (;;) {
		pthread_mutex_lock(&w->mu);
		while (!w->lead_handoff && (w->pending_events == 0 || w->in_send) && !w->stopping &&
		       !w->dead)
			pthread_cond_wait(&w->cv_data, &w->mu);
		while (w->in_send && !w->lead_handoff && !w->dead)
			pthread_cond_wait(&w->cv_data, &w->mu);
		if (w->lead_handoff && !w->dead) {
			/* The rest of a sync leader's group; in_send came with it. */
			size_t at = w->lead_at;
			w->lead_handoff = false;
			pthread_mutex_unlock(&w->mu);
			custos_err se =
			        send_group(w, &w->lead, &at, w->lead_gen, w->lead_first_ns, 0);
			send_finished(w);
			if (se != CUSTOS_OK)
				break;
			continue;
		}
		if (w->dead || (w->pending_events == 0 && w->stopping)) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		if (w->pending_events == 0) {
			pthread_mutex_unlock(&w->mu);
			continue;
		}
		if (w->linger_ns > 0) {
			uint64_t due = w->first_ns + w->linger_ns;
			struct timespec ts = { (time_t)(due / 1000000000ull),
				               (long)(due % 1000000000ull) };
			while (!w->kick && !w->stopping && !w->dead && !group_full(w) &&
			       tm_mono_ns() < due)
				if (pthread_cond_timedwait(&w->cv_data, &w->mu, &ts) == ETIMEDOUT)
					break;
			if (w->dead || w->in_send || w->pending_events == 0) {
				pthread_mutex_unlock(&w->mu);
				continue;
			}
		}
		w->in_send = true;
		uint64_t first_ns;
		size_t at = 0;
		uint64_t gen = take_group(w, &sending, &first_ns);
		pthread_mutex_unlock(&w->mu);
		custos_err se = send_group(w, &sending, &at, gen, first_ns, 0);
		send_finished(w);
		if (se != CUSTOS_OK)
			break;
	}
	if (!w->dead) {
		struct audit_msg_hdr h = { AUDIT_MSG_STOP, 0, 0, 0 };
		while (send(w->sock, &h, sizeof(h), MSG_NOSIGNAL) == -1 && errno == EINTR)
			;
	}
	buf_free(&sending);
	return NULL;
}

/* With w->mu held, when the writer reports it writes again after a failure: queues one
 * trail.outage event (how long the trail could not be written, why, and how many events were
 * refused meanwhile: each request refused with 503 and each other event lost), ahead of the
 * room check (one event, never waiting: the acker must go on reading acknowledgements), so
 * that the trail itself says where it has a gap. */
static void queue_own(audit_writer *w, audit_rec *rec);

static void queue_outage(audit_writer *w)
{
	audit_rec rec;

	audit_rec_begin(&rec, "trail.outage");
	audit_rec_cstr(&rec, "reason", w->fail_msg);
	audit_rec_u64(&rec, "outage_ms", (tm_mono_ns() - w->fail_since_ns) / 1000000ull);
	audit_rec_u64(&rec, "events_refused", w->failed - w->failed_at_fail);
	queue_own(w, &rec);
}

/* With w->mu held, in deny mode, when the queue takes events again after refusing some: one
 * trail.queue_full event (requests refused with 503 for want of a slot, events lost, and for
 * how long), ahead of what is being queued. */
static void queue_full_report(audit_writer *w)
{
	audit_rec rec;

	audit_rec_begin(&rec, "trail.queue_full");
	audit_rec_u64(&rec, "queue_size", w->o.queue_events);
	audit_rec_u64(&rec, "requests_refused", w->full_requests - w->rep_requests);
	audit_rec_u64(&rec, "events_refused", w->full_events - w->rep_events);
	audit_rec_u64(&rec, "outage_ms", (tm_mono_ns() - w->full_since_ns) / 1000000ull);
	w->rep_requests = w->full_requests;
	w->rep_events = w->full_events;
	queue_own(w, &rec);
}

/* With w->mu held: queues one event of the client's own, whatever the room (one event; the
 * caller must not wait). */
static void queue_own(audit_writer *w, audit_rec *rec)
{
	if (audit_rec_end(rec) != CUSTOS_OK) {
		log_error("audit: the client's own event: %s", err_msg());
		return;
	}
	span b = audit_rec_bytes(rec);
	uint32_t len = (uint32_t)b.len;
	if (buf_reserve(&w->pending, 4 + b.len) != CUSTOS_OK) {
		log_error("audit: the client's own event: %s", err_msg());
		return;
	}
	memcpy(buf_tail(&w->pending), &len, 4);
	memcpy(buf_tail(&w->pending) + 4, b.ptr, b.len);
	buf_commit(&w->pending, 4 + b.len);
	if (w->pending_events++ == 0 && w->linger_ns > 0)
		w->first_ns = tm_mono_ns();
	w->submitted++;
	if (!w->in_send)
		pthread_cond_signal(&w->cv_data);
}

static void *acker_main(void *arg)
{
	audit_writer *w = arg;
	struct audit_ack a;

	proc_name_self("custos-aack");
	if (w->o.durability == AUDIT_DURABILITY_BATCH)
		audit_sched_batch();
	for (;;) {
		ssize_t r = recv(w->sock, &a, sizeof(a), 0);
		if (r == -1 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(a) || a.kind != AUDIT_MSG_ACK)
			break;
		pthread_mutex_lock(&w->mu);
		if (a.fsyncs >= w->fsyncs) { /* cumulative: the latest report wins */
			w->fsyncs = a.fsyncs;
			w->fsync_ns = a.fsync_ns;
			memcpy(w->fsync_buckets, a.fsync_buckets, sizeof(w->fsync_buckets));
		}
		if (a.status == CUSTOS_OK) {
			if (a.gen > w->durable_gen)
				w->durable_gen = a.gen;
			if (a.seq > w->durable_seq)
				w->durable_seq = a.seq;
			if (w->failing && !w->stopping)
				queue_outage(w);
			w->failing = false;
			health_update(w);
		} else {
			a.msg[sizeof(a.msg) - 1] = '\0';
			if (!w->failing) {
				log_error("audit: writer failing, denying requests: %s", a.msg);
				w->fail_since_ns = tm_mono_ns();
				w->failed_at_fail = w->failed;
			}
			snprintf(w->fail_msg, sizeof(w->fail_msg), "%s", a.msg);
			w->failing = true;
			health_update(w);
		}
		pthread_cond_broadcast(&w->cv_durable);
		pthread_mutex_unlock(&w->mu);
	}
	pthread_mutex_lock(&w->mu);
	if (!w->stopping && !w->dead)
		log_error("audit: the writer process went away; denying requests");
	w->dead = true;
	health_update(w);
	pthread_cond_broadcast(&w->cv_durable);
	pthread_cond_broadcast(&w->cv_room);
	pthread_cond_broadcast(&w->cv_data);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static custos_err copy_options(audit_writer *w, const audit_options *o)
{
	ENSURE(o->dir != NULL && o->dir[0] != '\0', CUSTOS_ERR_INVAL, "audit: no log directory");
	ENSURE(o->queue_events > 0, CUSTOS_ERR_INVAL, "audit: queue size must be positive");
	ENSURE(o->n_sinks <= AUDIT_MAX_SINKS, CUSTOS_ERR_LIMIT, "audit: more than %d sinks",
	       AUDIT_MAX_SINKS);
	w->o = *o;
	w->dir = xstrdup(o->dir);
	w->o.dir = w->dir;
	for (size_t i = 0; i < o->n_sinks; i++) {
		w->sink_names[i] = xstrdup(o->sinks[i].name ? o->sinks[i].name : "sink");
		if (o->sinks[i].kind == AUDIT_SINK_HEC && o->sinks[i].hec_token_file != NULL)
			w->token_files[i] = xstrdup(o->sinks[i].hec_token_file);
	}
	return CUSTOS_OK;
}

static void writer_free(audit_writer *w)
{
	if (w->sock >= 0)
		close(w->sock);
	if (w->shipper_fd >= 0)
		close(w->shipper_fd);
	if (w->note_fd >= 0)
		close(w->note_fd);
	buf_free(&w->pending);
	buf_free(&w->lead);
	for (size_t i = 0; i < AUDIT_MAX_SINKS; i++) {
		free(w->sink_names[i]);
		free(w->token_files[i]);
	}
	free(w->dir);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv_data);
	pthread_cond_destroy(&w->cv_room);
	pthread_cond_destroy(&w->cv_durable);
	free(w);
}

static void *ship_watch_main(void *arg);

/* Forks the shipper's supervisor and waits until its shipper has set up every sink (or says
 * which one it could not: its CA, client key or token file); they run until the pipe closes. */
static custos_err spawn_shipper(audit_writer *w)
{
	int p[2], ready[2], note[2];

	if (pipe2(p, O_CLOEXEC) == -1)
		return err_sys("pipe2");
	if (pipe2(ready, O_CLOEXEC) == -1) {
		custos_err e = err_sys("pipe2");
		close(p[0]);
		close(p[1]);
		return e;
	}
	if (pipe2(note, O_CLOEXEC) == -1) {
		custos_err e = err_sys("pipe2");
		close(p[0]);
		close(p[1]);
		close(ready[0]);
		close(ready[1]);
		return e;
	}
	pid_t pid = fork();
	if (pid == -1) {
		custos_err e = err_sys("fork");
		close(p[0]);
		close(p[1]);
		close(ready[0]);
		close(ready[1]);
		close(note[0]);
		close(note[1]);
		return e;
	}
	if (pid == 0) {
		close(p[1]);
		close(ready[0]);
		close(note[0]);
		_exit(audit_ship_monitor_main(&w->o, p[0], ready[1], note[1]));
	}
	close(p[0]);
	close(ready[1]);
	close(note[1]);
	w->shipper_pid = pid;
	w->shipper_fd = p[1];
	w->note_fd = note[0];
	w->o.sinks = NULL; /* the caller's: only the shipper (a copy of this memory) reads them */
	struct audit_ship_ready a;
	ssize_t r;
	do
		r = read(ready[0], &a, sizeof(a));
	while (r == -1 && errno == EINTR);
	close(ready[0]);
	if (r != (ssize_t)sizeof(a) || a.status != CUSTOS_OK) {
		a.msg[sizeof(a.msg) - 1] = '\0';
		return err_set(r == (ssize_t)sizeof(a) ? (custos_err)a.status : CUSTOS_ERR_IO, "%s",
		               r == (ssize_t)sizeof(a) ? a.msg : "audit shipper: did not start");
	}
	w->ship_pid = a.pid;
	if (pthread_create(&w->ship_watch, NULL, ship_watch_main, w) != 0)
		return err_set(CUSTOS_ERR_SYS, "pthread_create");
	w->ship_watching = true;
	return CUSTOS_OK;
}

custos_err audit_writer_start(const audit_options *o, audit_writer **out)
{
	audit_writer *w = xcalloc(1, sizeof(*w));
	int sv[2], ready[2];
	custos_err e;

	/* The writer hashes every line: OpenSSL is bound before the fork (dl/openssl.c), never
	 * first inside the writer under its seccomp filter. */
	if ((e = lazylib_openssl()) != CUSTOS_OK) {
		free(w);
		return e;
	}
	w->sock = w->shipper_fd = w->note_fd = -1;
	w->ship_last_status = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the linger deadline is tm_mono_ns */
	pthread_cond_init(&w->cv_data, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&w->cv_room, NULL);
	pthread_cond_init(&w->cv_durable, NULL);
	buf_init(&w->pending, SIZE_MAX);
	buf_init(&w->lead, SIZE_MAX);
	w->cur_gen = 1;
	e = copy_options(w, o);
	if (e != CUSTOS_OK)
		goto fail;
	w->linger_ns = audit_linger_ns(&w->o);
	w->group_events =
	        w->o.queue_events / 2 < COALESCE_EVENTS ? w->o.queue_events / 2 : COALESCE_EVENTS;
	if (w->group_events == 0)
		w->group_events = 1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		e = err_sys("socketpair");
		goto fail;
	}
	if (pipe2(ready, O_CLOEXEC) == -1) {
		e = err_sys("pipe2");
		close(sv[0]);
		close(sv[1]);
		goto fail;
	}
	fflush(NULL);
	w->pid = fork();
	if (w->pid == -1) {
		e = err_sys("fork");
		close(sv[0]);
		close(sv[1]);
		close(ready[0]);
		close(ready[1]);
		goto fail;
	}
	if (w->pid == 0) {
		close(sv[0]);
		close(ready[0]);
		_exit(audit_writer_main(&w->o, sv[1], ready[1]));
	}
	close(sv[1]);
	close(ready[1]);
	w->sock = sv[0];
	struct audit_ack a;
	ssize_t r;
	do
		r = read(ready[0], &a, sizeof(a));
	while (r == -1 && errno == EINTR);
	close(ready[0]);
	if (r != (ssize_t)sizeof(a) || a.status != CUSTOS_OK) {
		a.msg[sizeof(a.msg) - 1] = '\0';
		e = err_set(r == (ssize_t)sizeof(a) ? (custos_err)a.status : CUSTOS_ERR_IO,
		            "audit writer: %s", r == (ssize_t)sizeof(a) ? a.msg : "did not start");
		while (waitpid(w->pid, NULL, 0) == -1 && errno == EINTR)
			;
		goto fail;
	}
	w->durable_seq = a.seq;
	atomic_store(&w->healthy, true);
	if (w->o.n_sinks > 0) {
		e = spawn_shipper(w);
		if (e != CUSTOS_OK)
			goto fail_kill;
	}
	if (pthread_create(&w->acker, NULL, acker_main, w) != 0) {
		e = err_set(CUSTOS_ERR_SYS, "pthread_create");
		goto fail_kill;
	}
	if (pthread_create(&w->sender, NULL, sender_main, w) != 0) {
		e = err_set(CUSTOS_ERR_SYS, "pthread_create");
		shutdown(w->sock, SHUT_RDWR);
		pthread_join(w->acker, NULL);
		goto fail_kill;
	}
	w->threads = true;
	*out = w;
	return CUSTOS_OK;
fail_kill:
	pthread_mutex_lock(&w->mu);
	w->ship_stopping = true; /* its supervisor's end is asked for */
	pthread_mutex_unlock(&w->mu);
	close(w->sock);
	w->sock = -1;
	while (waitpid(w->pid, NULL, 0) == -1 && errno == EINTR)
		;
	if (w->shipper_pid > 0) {
		/* EOF on its pipe stops it at once (it ignores SIGTERM, and the proxy's filter
		 * allows no signal to another process). */
		close(w->shipper_fd);
		w->shipper_fd = -1;
		while (waitpid(w->shipper_pid, NULL, 0) == -1 && errno == EINTR)
			;
		if (w->ship_watching) /* EOF on the notices once the supervisor has ended */
			pthread_join(w->ship_watch, NULL);
	}
fail:
	writer_free(w);
	return e;
}

int audit_writer_pid(const audit_writer *w)
{
	return (int)w->pid;
}

/* With w->mu held: counts n events refused for a full queue (deny mode), alerts at most once
 * a second, and sets the error. */
static custos_err deny_full(audit_writer *w, size_t n, bool requests)
{
	if (w->full_requests == w->rep_requests && w->full_events == w->rep_events)
		w->full_since_ns = tm_mono_ns();
	if (requests)
		w->full_requests += n;
	else
		w->full_events += n;
	w->denied_full += n;
	uint64_t now = tm_mono_ns();
	if (now - w->last_alert > 1000000000ull) {
		w->last_alert = now;
		log_error("audit: queue full (%zu events): denying requests (%llu so far)",
		          w->o.queue_events, (unsigned long long)w->denied_full);
	}
	return err_set(CUSTOS_ERR_AGAIN, "audit: queue full");
}

static custos_err reserve(audit_writer *w, bool *held, bool request)
{
	custos_err e = CUSTOS_OK;

	*held = false;
	if (w->o.on_full != AUDIT_ON_FULL_DENY)
		return CUSTOS_OK; /* block mode: a submit waits for room instead */
	pthread_mutex_lock(&w->mu);
	if (w->pending_events + w->reserved < w->o.queue_events) {
		w->reserved++;
		*held = true;
	} else {
		e = deny_full(w, 1, request);
	}
	pthread_mutex_unlock(&w->mu);
	return e;
}

custos_err audit_reserve(audit_writer *w, bool *held)
{
	return reserve(w, held, true);
}

custos_err audit_reserve_event(audit_writer *w, bool *held)
{
	return reserve(w, held, false);
}

void audit_unreserve(audit_writer *w, size_t n)
{
	if (n == 0)
		return;
	pthread_mutex_lock(&w->mu);
	w->reserved -= n <= w->reserved ? n : w->reserved;
	pthread_mutex_unlock(&w->mu);
}

/* Queues n records (framed: u32 length + bytes each) in one hand-off. The bytes are either
 * `framed` as they are, or one record `one` that this function frames. `held` of the n hold a
 * slot taken by audit_reserve: their room is already counted, and the slots are given back
 * whether the records are queued or refused. */
static custos_err submit_records(audit_writer *w, span framed, span one, size_t n, size_t held)
{
	custos_err e = CUSTOS_OK;

	pthread_mutex_lock(&w->mu);
	w->reserved -= held <= w->reserved ? held : w->reserved;
	for (;;) {
		if (w->dead || w->failing || w->stopping) {
			w->failed += n;
			e = err_set(CUSTOS_ERR_IO, "audit: the log cannot be written: %s",
			            w->dead ? "writer gone" : w->fail_msg);
			goto out;
		}
		/* Room for all n beside the slots others hold, or an empty queue (no slot held)
		 * for a batch larger than the queue; records that held a slot have their room. */
		if (w->pending_events + w->reserved + (n - held) <= w->o.queue_events ||
		    (w->pending_events == 0 && w->reserved == 0) || held == n)
			break;
		if (w->o.on_full == AUDIT_ON_FULL_DENY) {
			e = deny_full(w, n, false);
			goto out;
		}
		pthread_cond_wait(&w->cv_room, &w->mu);
	}
	if (w->full_requests != w->rep_requests || w->full_events != w->rep_events)
		queue_full_report(w);
	if (one.len > 0) {
		uint32_t len = (uint32_t)one.len;
		e = buf_reserve(&w->pending, 4 + one.len);
		if (e != CUSTOS_OK)
			goto out;
		memcpy(buf_tail(&w->pending), &len, 4);
		memcpy(buf_tail(&w->pending) + 4, one.ptr, one.len);
		buf_commit(&w->pending, 4 + one.len);
	} else if ((e = buf_append_span(&w->pending, framed)) != CUSTOS_OK) {
		goto out;
	}
	bool was_empty = w->pending_events == 0;
	w->pending_events += n;
	w->submitted += n;
	if (was_empty && w->linger_ns > 0)
		w->first_ns = tm_mono_ns();
	uint64_t gen = w->cur_gen;
	if (w->o.durability == AUDIT_DURABILITY_SYNC && !w->in_send) {
		/* Group commit without a thread hop: the first producer to find nobody sending
		 * ships the group itself (it waits for durability anyway); a few rounds at most,
		 * then the sender thread takes over. The leader never waits for room in the
		 * socket: a writer failing with a full backlog reads nothing until the disk
		 * recovers, and the producer must hear the failure instead. What does not fit goes
		 * to the sender thread (audit_writer_stop can cut its wait). */
		for (int round = 0; round < 4 && w->pending_events > 0 && !w->dead; round++) {
			w->in_send = true;
			uint64_t first_ns;
			size_t at = 0;
			uint64_t g = take_group(w, &w->lead, &first_ns);
			pthread_mutex_unlock(&w->mu);
			custos_err se = send_group(w, &w->lead, &at, g, first_ns, MSG_DONTWAIT);
			pthread_mutex_lock(&w->mu);
			if (se == CUSTOS_ERR_AGAIN) {
				w->lead_at = at;
				w->lead_gen = g;
				w->lead_first_ns = first_ns;
				w->lead_handoff = true; /* in_send stays set: the sender's now */
				break;
			}
			w->in_send = false;
			if (se != CUSTOS_OK)
				break;
		}
		pthread_cond_broadcast(&w->cv_data);
	} else if (!w->in_send && (was_empty || (w->linger_ns > 0 && group_full(w)))) {
		pthread_cond_signal(&w->cv_data); /* a new group, or a lingering one is full */
	}
	if (w->o.durability == AUDIT_DURABILITY_SYNC) {
		while (w->durable_gen < gen && !w->failing && !w->dead)
			pthread_cond_wait(&w->cv_durable, &w->mu);
		if (w->durable_gen < gen)
			e = err_set(CUSTOS_ERR_IO, "audit: not durable: %s",
			            w->dead ? "writer gone" : w->fail_msg);
	}
out:
	pthread_mutex_unlock(&w->mu);
	return e;
}

custos_err audit_submit(audit_writer *w, const audit_event *ev)
{
	span body = audit_event_body(ev);

	ENSURE(ev->ended && ev->w.err == CUSTOS_OK, CUSTOS_ERR_INVAL,
	       "audit: event not finished with audit_event_end");
	ENSURE(body.len > 0 && body.len <= AUDIT_MAX_EVENT, CUSTOS_ERR_LIMIT,
	       "audit: event over %d bytes", AUDIT_MAX_EVENT);
	return submit_records(w, span_of("", 0), body, 1, 0);
}

custos_err audit_submit_rec(audit_writer *w, const audit_rec *r)
{
	ENSURE(r->ended && r->err == CUSTOS_OK && r->len > 0, CUSTOS_ERR_INVAL,
	       "audit: record not finished with audit_rec_end");
	return submit_records(w, span_of("", 0), audit_rec_bytes(r), 1, 0);
}

custos_err audit_submit_rec_held(audit_writer *w, const audit_rec *r)
{
	if (!(r->ended && r->err == CUSTOS_OK && r->len > 0)) {
		audit_unreserve(w, 1);
		return err_set(CUSTOS_ERR_INVAL, "audit: record not finished with audit_rec_end");
	}
	return submit_records(w, span_of("", 0), audit_rec_bytes(r), 1, 1);
}

custos_err audit_submit_batch(audit_writer *w, audit_batch *b, size_t *accepted)
{
	size_t n = b->n, held = b->held <= b->n ? b->held : b->n;
	custos_err e = CUSTOS_OK;

	if (accepted)
		*accepted = 0;
	if (n > 0)
		e = submit_records(w, buf_span(&b->b), span_of("", 0), n, held);
	if (e == CUSTOS_OK && accepted)
		*accepted = n;
	buf_reset(&b->b);
	b->n = 0;
	b->held = 0;
	return e;
}

audit_query audit_writer_query(const audit_writer *w)
{
	return w ? w->o.query : AUDIT_QUERY_NAMES;
}

bool audit_writer_ok(audit_writer *w)
{
	return atomic_load_explicit(&w->healthy, memory_order_relaxed);
}

custos_err audit_flush(audit_writer *w)
{
	custos_err e = CUSTOS_OK;

	pthread_mutex_lock(&w->mu);
	uint64_t target = w->pending_events > 0 ? w->cur_gen : w->cur_gen - 1;
	if (w->pending_events > 0) {
		w->kick = true; /* the caller waits: no lingering */
		pthread_cond_signal(&w->cv_data);
	} else if (w->durable_gen < target && w->linger_ns > 0 && !w->dead) {
		/* Shipped, but the writer may hold it until its deadline: ask for the commit now
		 * (a message with no records; whole messages never interleave on the socket).
		 * Never blocking: a full socket means either a writer that reads on and commits
		 * by its deadline anyway, or one failing with a full backlog that reads nothing
		 * until the disk recovers; then only its error report, below, ends the wait. */
		struct audit_msg_hdr h = { AUDIT_MSG_BATCH, 0, 0, 0 };
		pthread_mutex_unlock(&w->mu);
		while (send(w->sock, &h, sizeof(h), MSG_NOSIGNAL | MSG_DONTWAIT) == -1 &&
		       errno == EINTR)
			;
		pthread_mutex_lock(&w->mu);
	}
	while (w->durable_gen < target && !w->failing && !w->dead)
		pthread_cond_wait(&w->cv_durable, &w->mu);
	if (w->durable_gen < target)
		e = err_set(CUSTOS_ERR_IO, "audit: flush: %s",
		            w->dead ? "writer gone" : w->fail_msg);
	pthread_mutex_unlock(&w->mu);
	return e;
}

void audit_writer_stats(audit_writer *w, audit_stats *s)
{
	pthread_mutex_lock(&w->mu);
	s->submitted = w->submitted;
	s->denied_full = w->denied_full;
	s->failed = w->failed;
	s->durable_seq = w->durable_seq;
	s->queued = w->pending_events;
	s->writer_failing = w->failing || w->dead;
	s->fsyncs = w->fsyncs;
	s->fsync_ns = w->fsync_ns;
	memcpy(s->fsync_buckets, w->fsync_buckets, sizeof(s->fsync_buckets));
	pthread_mutex_unlock(&w->mu);
}

custos_err audit_sink_position(audit_writer *w, size_t i, uint64_t *cursor, uint64_t *head)
{
	ENSURE(i < w->o.n_sinks, CUSTOS_ERR_INVAL, "no sink %zu", i);
	GUARD(audit_cursor_read(w->dir, w->sink_names[i], cursor));
	pthread_mutex_lock(&w->mu);
	*head = w->durable_seq;
	pthread_mutex_unlock(&w->mu);
	return CUSTOS_OK;
}

custos_err audit_sink_lag(audit_writer *w, size_t i, uint64_t *lag)
{
	uint64_t cur = 0, head = 0;

	GUARD(audit_sink_position(w, i, &cur, &head));
	*lag = head > cur ? head - cur : 0;
	return CUSTOS_OK;
}

const char *audit_sink_name(const audit_writer *w, size_t i)
{
	return i < w->o.n_sinks ? w->sink_names[i] : NULL;
}

/* A wait status in words ("" for -1: none). */
static void wait_status_str(int st, char *out, size_t n)
{
	if (st == -1)
		snprintf(out, n, "%s", "");
	else if (WIFSIGNALED(st))
		snprintf(out, n, "killed by signal %d", WTERMSIG(st));
	else
		snprintf(out, n, "exited with status %d", WEXITSTATUS(st));
}

/* With w->mu held: the supervisor runs (its notices have not ended). */
static bool ship_supervised(const audit_writer *w)
{
	return w->shipper_pid > 0 && w->shipper_fd >= 0 && !w->ship_lost;
}

bool audit_shipper_running(audit_writer *w)
{
	pthread_mutex_lock(&w->mu);
	bool r = ship_supervised(w) && w->ship_pid > 0;
	pthread_mutex_unlock(&w->mu);
	return r;
}

void audit_shipper_status_get(audit_writer *w, audit_shipper_status *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&w->mu);
	st->configured = w->o.n_sinks > 0;
	st->running = ship_supervised(w) && w->ship_pid > 0;
	st->supervised = ship_supervised(w);
	st->pid = st->running ? w->ship_pid : 0;
	st->restarts = w->ship_restarts;
	st->failures = w->ship_failures;
	st->crash_loop = w->ship_failures >= AUDIT_SHIP_CRASH_LOOP;
	wait_status_str(w->ship_last_status, st->last_exit, sizeof(st->last_exit));
	snprintf(st->last_error, sizeof(st->last_error), "%s", w->ship_last_error);
	pthread_mutex_unlock(&w->mu);
}

/* With w->mu held: one trail.shipper event of the client's own, its common members filled. */
static void ship_event(audit_writer *w, audit_rec *rec, const char *action)
{
	audit_rec_begin(rec, "trail.shipper");
	audit_rec_cstr(rec, "action", action);
	audit_rec_u64(rec, "failures", w->ship_failures);
	audit_rec_bool(rec, "crash_loop", w->ship_failures >= AUDIT_SHIP_CRASH_LOOP);
}

/* With w->mu held: the crash loop named in the log, once for each failure past the bound. */
static void ship_loop_log(const audit_writer *w, uint64_t backoff_ns)
{
	if (w->ship_failures < AUDIT_SHIP_CRASH_LOOP)
		return;
	log_error("audit shipper: crash loop: %u ends in a row, each within %llu s of its start; "
	          "still restarted, at most %llu s apart, but nothing reaches the sinks while it "
	          "fails (custos ctl audit-status: shipper; the log above says why); next try in "
	          "%llu ms",
	          w->ship_failures, AUDIT_SHIP_STABLE_NS / 1000000000ull,
	          AUDIT_SHIP_BACKOFF_MAX_NS / 1000000000ull,
	          (unsigned long long)(backoff_ns / 1000000));
}

/* With w->mu held: what the supervisor said, logged and audited. */
static void ship_notice(audit_writer *w, const struct audit_ship_notice *n)
{
	audit_rec rec;
	char how[64];

	w->ship_failures = n->failures;
	w->ship_restarts = n->restarts;
	switch (n->kind) {
	case AUDIT_SHIP_EXITED:
		w->ship_pid = 0;
		w->ship_last_status = n->status;
		wait_status_str(n->status, how, sizeof(how));
		log_error("audit shipper (pid %d) ended: %s after %llu ms (%u end(s) in a row); "
		          "restarting it in %llu ms: delivery to the sinks resumes from their "
		          "cursors",
		          (int)n->pid, how, (unsigned long long)(n->uptime_ns / 1000000),
		          n->failures, (unsigned long long)(n->backoff_ns / 1000000));
		ship_loop_log(w, n->backoff_ns);
		ship_event(w, &rec, "exit");
		audit_rec_u64(&rec, "pid", (uint64_t)n->pid);
		if (WIFSIGNALED(n->status))
			audit_rec_u64(&rec, "signal", (uint64_t)WTERMSIG(n->status));
		else
			audit_rec_u64(&rec, "exit_code", (uint64_t)WEXITSTATUS(n->status));
		audit_rec_u64(&rec, "uptime_ms", n->uptime_ns / 1000000);
		audit_rec_u64(&rec, "restart_in_ms", n->backoff_ns / 1000000);
		queue_own(w, &rec);
		return;
	case AUDIT_SHIP_START_FAILED: {
		char msg[sizeof(n->msg)];
		memcpy(msg, n->msg, sizeof(msg));
		msg[sizeof(msg) - 1] = '\0';
		snprintf(w->ship_last_error, sizeof(w->ship_last_error), "%s", msg);
		log_error("audit shipper: restart failed: %s (%u failure(s) in a row); next try in "
		          "%llu ms",
		          msg, n->failures, (unsigned long long)(n->backoff_ns / 1000000));
		ship_loop_log(w, n->backoff_ns);
		ship_event(w, &rec, "start_failed");
		audit_rec_cstr(&rec, "detail", msg);
		audit_rec_u64(&rec, "restart_in_ms", n->backoff_ns / 1000000);
		queue_own(w, &rec);
		return;
	}
	case AUDIT_SHIP_RESTARTED:
		w->ship_pid = n->pid;
		w->ship_last_error[0] = '\0';
		log_warn("audit shipper restarted (pid %d, restart %llu): the sinks resume from "
		         "their cursors",
		         (int)n->pid, (unsigned long long)n->restarts);
		ship_event(w, &rec, "restart");
		audit_rec_u64(&rec, "pid", (uint64_t)n->pid);
		audit_rec_u64(&rec, "restarts", n->restarts);
		queue_own(w, &rec);
		return;
	default:
		log_error("audit shipper supervisor: unknown notice %u", n->kind);
	}
}

/* Reads the supervisor's notices until it ends: asked (audit_writer_stop), or not, when
 * nothing restarts the shipper any more until custos restarts: said loudly. */
static void *ship_watch_main(void *arg)
{
	audit_writer *w = arg;
	struct audit_ship_notice n;
	ssize_t r;

	proc_name_self("custos-ashipw");
	for (;;) {
		do
			r = read(w->note_fd, &n, sizeof(n));
		while (r == -1 && errno == EINTR);
		if (r != (ssize_t)sizeof(n))
			break;
		pthread_mutex_lock(&w->mu);
		ship_notice(w, &n);
		pthread_mutex_unlock(&w->mu);
	}
	pthread_mutex_lock(&w->mu);
	w->ship_pid = 0;
	if (!w->ship_stopping) {
		audit_rec rec;
		w->ship_lost = true;
		snprintf(w->ship_last_error, sizeof(w->ship_last_error),
		         "the shipper's supervisor (pid %d) ended: nothing is shipped until custos "
		         "restarts",
		         (int)w->shipper_pid);
		log_error("audit: %s", w->ship_last_error);
		ship_event(w, &rec, "lost");
		audit_rec_cstr(&rec, "detail", w->ship_last_error);
		queue_own(w, &rec);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Writes all of p to the shipper's pipe (called with w->mu held). */
static bool ship_write(audit_writer *w, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t r = write(w->shipper_fd, b, n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		b += r;
		n -= (size_t)r;
	}
	return true;
}

void audit_sinks_reload(audit_writer *w)
{
	struct audit_ship_msg m = { .kind = AUDIT_SHIP_RELOAD };

	if (w == NULL)
		return;
	/* Under mu: audit_writer_stop closes the pipe under it. The shipper reads it at once (a
	 * reload's work is a few file loads), so the write does not wait long; a shipper that
	 * has exited gives EPIPE (SIGPIPE is ignored), logged. */
	pthread_mutex_lock(&w->mu);
	if (!ship_supervised(w)) { /* with no shipper running, the next one reads them at start */
		pthread_mutex_unlock(&w->mu);
		return;
	}
	/* HEC token files: read here, in the proxy, whose view holds them (the shipper's need
	 * not); the shipper checks the token and takes it. One that does not load keeps the
	 * token in use. */
	for (size_t i = 0; i < w->o.n_sinks; i++) {
		if (w->token_files[i] == NULL)
			continue;
		buf t;
		buf_init(&t, AUDIT_SHIP_TOKEN_MAX);
		if (file_load(w->token_files[i], FILE_SECRET, AUDIT_SHIP_TOKEN_MAX, &t) !=
		    CUSTOS_OK) {
			log_warn(
			        "audit sink %s: reload: http.token_file: %s; the token read before "
			        "stays in use",
			        w->sink_names[i], err_msg());
		} else {
			struct audit_ship_msg tm = { .kind = AUDIT_SHIP_TOKEN,
				                     .sink = (uint32_t)i,
				                     .len = buf_used(&t) };
			if (!ship_write(w, &tm, sizeof(tm)) ||
			    !ship_write(w, buf_ptr(&t), buf_used(&t)))
				log_error("audit sink %s: the shipper was not given the token read "
				          "again: %s",
				          w->sink_names[i], strerror(errno));
		}
		buf_free_secret(&t);
	}
	if (!ship_write(w, &m, sizeof(m)))
		log_error("audit: the shipper was not told to read its TLS files again: %s",
		          strerror(errno));
	pthread_mutex_unlock(&w->mu);
}

custos_err audit_writer_stop(audit_writer *w, uint64_t drain_ns)
{
	custos_err e = CUSTOS_OK;
	int st = 0;

	if (w == NULL)
		return CUSTOS_OK;
	if (w->threads) {
		pthread_mutex_lock(&w->mu);
		w->stopping = true;
		pthread_cond_broadcast(&w->cv_data);
		pthread_cond_broadcast(&w->cv_room);
		pthread_mutex_unlock(&w->mu);
		/* The sender may sit in sendmsg while a failing writer reads nothing: then
		 * nothing more can become durable, so cut the socket (stop reports it). */
		for (;;) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			if (pthread_timedjoin_np(w->sender, NULL, &ts) == 0)
				break;
			pthread_mutex_lock(&w->mu);
			bool cut = w->failing || w->dead;
			pthread_mutex_unlock(&w->mu);
			if (cut)
				shutdown(w->sock, SHUT_RDWR);
		}
		if (w->dead || w->failing)
			shutdown(w->sock, SHUT_RDWR); /* the writer and the ack thread see EOF */
		pthread_join(w->acker, NULL);
	}
	while (waitpid(w->pid, &st, 0) == -1 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		e = err_set(CUSTOS_ERR_IO, "audit writer exited with status %d", st);
	if (w->shipper_pid > 0) {
		/* The shipper delivers up to the sealed end, or stops at the deadline. */
		struct audit_ship_msg m = { .kind = AUDIT_SHIP_STOP, .drain_ns = drain_ns };
		pthread_mutex_lock(&w->mu);
		w->ship_stopping = true;
		if (!w->ship_lost) /* its supervisor is gone: no reader (SIGPIPE where not ignored) */
			(void)!write(w->shipper_fd, &m, sizeof(m));
		close(w->shipper_fd);
		w->shipper_fd = -1;
		pthread_mutex_unlock(&w->mu);
		while (waitpid(w->shipper_pid, &st, 0) == -1 && errno == EINTR)
			;
		if (w->ship_watching)
			pthread_join(w->ship_watch, NULL);
	}
	if (w->failing && e == CUSTOS_OK)
		e = err_set(CUSTOS_ERR_IO,
		            "audit: stopped while failing: events accepted after seq %llu may not "
		            "have been written: %s",
		            (unsigned long long)w->durable_seq, w->fail_msg);
	writer_free(w);
	return e;
}
