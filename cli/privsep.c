/*
 * The proxy's side of `custos up`'s privilege separation (the framing is cli/psx_wire.c):
 * a pool of sockets per sandboxed model that the supervisor made inside the sandbox's network
 * namespace (the proxy connect()s them itself; refilled on request, so a connect costs no
 * round trip in the common case), the state mirror the admin API reads, and the receiver
 * thread that submits the supervisor's audit events to this process' writer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "custos/admin.h"
#include "custos/config.h"
#include "custos/egress.h"
#include "custos/proxy.h"
#include "privsep.h"

/* ------------------------------------------------------------------------ the proxy's side */

_Static_assert(CFG_MAX_ID_LEN <= ADMIN_SANDBOX_NAME_MAX, "a model id fits an admin sandbox name");

struct px_model {
	char id[CFG_MAX_ID_LEN + 1];
	size_t cfg_index; /* in the starting custos.yaml (egress); SIZE_MAX: added by a reload */
	/* Its egress listener's index in the egress server (SIZE_MAX: none yet). One a reload
	 * added gets it at COMMIT, from eg_fd, the listener the supervisor made inside its
	 * sandbox meanwhile (-1: none): the listener's identity is the applied configuration's. */
	size_t eg_index;
	int eg_fd;
	bool vm;
	bool gone; /* removed by a reload and stopped */
	/* Proxy options that may connect to it (psx_proxy_hold); once an applied reload removed
	 * it (removed) and none is left, no request is in flight to it: IDLE is sent (idle_sent). */
	unsigned holds;
	bool removed, idle_sent;
	/* gone and nothing holds it: FREED was sent, the supervisor may reuse the slot (ADDED) */
	bool freed;
	uint64_t seq; /* order of arrival (start, then ADDED): the newest of an id is routed to */
	uint32_t rl_gen; /* the reload that added it (its RELOAD's gen); 0: at start */
	/* Added by a reload that was refused (or given up): never routed to, listed or counted as
	 * the newest of its id, from that reload's COMMIT until its slot is reused, although the
	 * supervisor may still be stopping it (REMOVED comes later). */
	bool refused;
	/* In the configuration applied now (the admin API lists it): false from ADDED until the
	 * reload that added it is applied, and from the applied reload that removes it. */
	bool configured;
	bool have_state;
	psx_state st;
	bool have_vm_info;
	psx_vm_info vm_info;
	int pool[PSX_POOL_MAX];
	size_t n;
	bool pending; /* a WANT is outstanding */
	int last_err; /* errno of the last empty answer */
	uint64_t answers;
	int restart_result;
	uint64_t restart_answers;
};

static struct {
	int sock;
	pthread_mutex_t mu; /* everything below */
	pthread_mutex_t send_mu;
	pthread_cond_t cv;
	struct px_model m[PSX_MAX_MODELS]; /* by slot (psx_hdr.model) */
	size_t n;
	uint64_t seq;        /* the last px_model.seq given */
	uint32_t rl_seq;     /* the last RELOAD's number (psx_hdr.gen), echoed by RELOADED */
	bool rl_open;        /* RELOAD rl_seq was sent and its COMMIT was not */
	uint64_t rl_answers; /* RELOADED messages answering rl_seq */
	uint32_t rl_result;
	char rl_msg[512];
	struct proxy_server *srv;
	struct egress_server *eg;
	audit_writer *aw;
	char *held[PSX_SETUP_EVENTS]; /* audit bodies received before the writer ran */
	size_t nheld;
	pthread_t th;
	bool th_started;
	bool bye, lost;
	bool finished; /* psx_proxy_finish ran: nothing more goes to the supervisor */
	bool stopping; /* proxy_run returned: a reload still waiting gives up */
} P = { .sock = -1,
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.send_mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER };

void psx_proxy_init(int sock, const custos_config *cfg)
{
	P.sock = sock;
	for (size_t i = 0; i < cfg->n_models && i < PSX_MAX_MODELS; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->upstream.kind != CFG_UPSTREAM_SANDBOX)
			continue;
		struct px_model *x = &P.m[P.n++];
		snprintf(x->id, sizeof(x->id), "%s", m->id);
		x->cfg_index = i;
		x->eg_index = i; /* cli_egress_options: one listener per model, in file order */
		x->eg_fd = -1;
		x->vm = m->sandbox.type == CFG_SANDBOX_VM;
		x->configured = true;
		x->seq = ++P.seq;
	}
}

static struct px_model *model_of(const psx_hdr *h)
{
	return h->model < P.n ? &P.m[h->model] : NULL;
}

static size_t slot_of(const struct px_model *x)
{
	return (size_t)(x - P.m);
}

static custos_err send_locked(unsigned type, size_t slot, uint32_t arg)
{
	psx_hdr h = { .type = (uint16_t)type, .model = (uint16_t)slot, .arg = arg };
	pthread_mutex_lock(&P.send_mu);
	custos_err e = psx_send(P.sock, &h, NULL, NULL, 0);
	pthread_mutex_unlock(&P.send_mu);
	return e;
}

custos_err psx_proxy_send_fd(unsigned type, int fd)
{
	psx_hdr h = { .type = (uint16_t)type };
	pthread_mutex_lock(&P.send_mu);
	custos_err e = psx_send(P.sock, &h, NULL, &fd, 1);
	pthread_mutex_unlock(&P.send_mu);
	return e;
}

static void pool_flush(struct px_model *x)
{
	for (size_t i = 0; i < x->n; i++)
		close(x->pool[i]);
	x->n = 0;
}

static void submit_body(span body)
{
	audit_event ev;
	if (audit_event_from_body(&ev, body) != CUSTOS_OK ||
	    (P.aw && audit_submit(P.aw, &ev) != CUSTOS_OK))
		log_error("privsep: a supervisor event was not audited: %s", err_msg());
	else if (P.aw == NULL)
		log_info("audit (no writer): {%.*s}", (int)body.len, body.ptr);
}

/* A removed sandbox's slot that nothing here refers to any more (no proxy options hold it:
 * no request can reach it): the supervisor may reuse it. Called with P.mu held. */
static void free_check(struct px_model *x)
{
	if (!x->gone || x->holds > 0 || x->freed || P.lost || P.bye || P.finished)
		return;
	x->freed = true;
	if (send_locked(PSX_FREED, slot_of(x), 0) != CUSTOS_OK)
		log_warn("privsep: model %s: the supervisor was not told that its slot is free: %s",
		         x->id, err_msg());
}

/* One message from the supervisor; egress_fds only during setup. Returns false at READY
 * (setup) or BYE. Called with P.mu held. */
static bool handle(psx_msg *m, int *egress_fds, size_t n_egress)
{
	struct px_model *x = model_of(&m->h);

	switch (m->h.type) {
	case PSX_STATE:
		if (x && m->h.len == sizeof(psx_state)) {
			psx_state st;
			memcpy(&st, m->payload, sizeof(st));
			st.kind[sizeof(st.kind) - 1] = st.profile_hash[64] =
			        st.cgroup[sizeof(st.cgroup) - 1] = '\0';
			if (!st.running || (x->have_state && st.generation != x->st.generation))
				pool_flush(x); /* a new or no netns: old sockets reach nobody */
			x->st = st;
			x->have_state = true;
			pthread_cond_broadcast(&P.cv);
		}
		break;
	case PSX_SOCKS:
		if (x == NULL)
			break;
		x->pending = false;
		x->answers++;
		x->last_err = m->nfds ? 0 : (int)m->h.arg;
		for (size_t i = 0; i < m->nfds; i++) {
			if (!x->gone && m->h.gen == x->st.generation && x->n < PSX_POOL_MAX) {
				x->pool[x->n++] = m->fds[i];
				m->fds[i] = -1;
			}
		}
		pthread_cond_broadcast(&P.cv);
		break;
	case PSX_EGRESS_FD:
		if (x == NULL || m->nfds != 1)
			break;
		if (egress_fds && x->cfg_index < n_egress) {
			if (egress_fds[x->cfg_index] >= 0)
				close(egress_fds[x->cfg_index]);
			egress_fds[x->cfg_index] = m->fds[0];
			m->fds[0] = -1;
		} else if (P.eg && x->eg_index != SIZE_MAX) {
			if (cli_egress_replace(x->eg_index, m->fds[0]) != CUSTOS_OK)
				log_error(
				        "egress: model %s restarted without an egress listener: %s",
				        x->id, err_msg());
			m->fds[0] = -1; /* the egress server's now, or closed by it */
		} else if (P.eg && x->cfg_index == SIZE_MAX && !x->gone && !x->refused) {
			/* added by a reload not applied yet: served from COMMIT on (its
			 * connections wait in the socket's backlog until then) */
			if (x->eg_fd >= 0)
				close(x->eg_fd);
			x->eg_fd = m->fds[0];
			m->fds[0] = -1;
		}
		break;
	case PSX_AUDIT: {
		span body = span_of((const char *)m->payload, m->h.len);
		if (P.aw == NULL && P.nheld < PSX_SETUP_EVENTS) {
			P.held[P.nheld] = xcalloc(1, body.len + 1);
			memcpy(P.held[P.nheld++], body.ptr, body.len);
		} else {
			submit_body(body);
		}
		break;
	}
	case PSX_EVENT:
		if (x)
			admin_sandbox_event(x->id, (int)m->h.arg, m->h.gen);
		break;
	case PSX_VM_INFO:
		if (x && x->vm && m->h.len == sizeof(psx_vm_info)) {
			memcpy(&x->vm_info, m->payload, sizeof(x->vm_info));
			psx_vm_info *v = &x->vm_info;
			v->name[sizeof(v->name) - 1] = v->domain[sizeof(v->domain) - 1] = '\0';
			v->uuid[sizeof(v->uuid) - 1] =
			        v->profile_hash[sizeof(v->profile_hash) - 1] = '\0';
			v->state[sizeof(v->state) - 1] = v->channel[sizeof(v->channel) - 1] = '\0';
			v->seccomp[sizeof(v->seccomp) - 1] = '\0';
			x->have_vm_info = true;
		}
		break;
	case PSX_RESTARTED:
		if (x) {
			x->restart_result = (int)m->h.arg;
			x->restart_answers++;
			pthread_cond_broadcast(&P.cv);
		}
		break;
	case PSX_ADDED:
		/* The next slot, or one this side freed; an id must be one custos.yaml may hold. */
		if (((m->h.model == P.n && P.n < PSX_MAX_MODELS) || (x && x->freed)) &&
		    m->h.len > 0 && m->h.len <= CFG_MAX_ID_LEN &&
		    (m->h.arg == PSX_ADDED_PROCESS || m->h.arg == PSX_ADDED_VM)) {
			if (m->h.model == P.n) { /* never used: nothing to release */
				x = &P.m[P.n++];
			} else { /* freed: emptied at REMOVED already; whatever came since goes */
				pool_flush(x);
				if (x->eg_fd >= 0)
					close(x->eg_fd);
			}
			memset(x, 0, sizeof(*x));
			x->seq = ++P.seq;
			memcpy(x->id, m->payload, m->h.len);
			x->id[m->h.len] = '\0';
			x->cfg_index = SIZE_MAX;
			x->eg_index = SIZE_MAX;
			x->eg_fd = -1;
			x->rl_gen = m->h.gen;
			x->vm = m->h.arg == PSX_ADDED_VM;
			/* for a reload whose COMMIT went already (given up, timed out): the
			 * supervisor stops it; nothing routes to it meanwhile */
			x->refused = !P.rl_open || m->h.gen != P.rl_seq;
		} else {
			log_warn("privsep: a malformed ADDED from the supervisor (slot %u)",
			         (unsigned)m->h.model);
		}
		break;
	case PSX_REMOVED:
		if (x && !x->gone) {
			x->gone = true;
			x->have_state = false;
			pool_flush(x);
			/* Its sandbox is stopped: its egress listener goes too (docs/EGRESS.md). */
			if (x->eg_fd >= 0)
				close(x->eg_fd);
			x->eg_fd = -1;
			if (P.eg && x->eg_index != SIZE_MAX &&
			    cli_egress_close(x->eg_index) != CUSTOS_OK)
				log_error("egress: model %s: listener not closed: %s", x->id,
				          err_msg());
			x->eg_index = SIZE_MAX;
			pthread_cond_broadcast(&P.cv);
			free_check(x);
		}
		break;
	case PSX_RELOADED: {
		if (m->h.gen != P.rl_seq)
			break; /* a late answer to a reload given up on (timed out) */
		size_t n = m->h.len < sizeof(P.rl_msg) ? m->h.len : sizeof(P.rl_msg) - 1;
		memcpy(P.rl_msg, m->payload, n);
		P.rl_msg[n] = '\0';
		P.rl_result = m->h.arg;
		P.rl_answers++;
		pthread_cond_broadcast(&P.cv);
		break;
	}
	case PSX_READY:
		return egress_fds == NULL;
	case PSX_BYE:
		P.bye = true;
		pthread_cond_broadcast(&P.cv);
		return false;
	default:
		log_warn("privsep: unexpected message %u from the supervisor", m->h.type);
		break;
	}
	return true;
}

custos_err psx_proxy_setup(int *egress_fds, size_t n)
{
	psx_msg *m = xcalloc(1, sizeof(*m));
	custos_err e = CUSTOS_OK;

	for (;;) {
		int r = psx_recv(P.sock, m);
		if (r <= 0) {
			e = err_set(CUSTOS_ERR_CLOSED, "privsep: the supervisor went away during "
			                               "startup");
			break;
		}
		if (m->h.type == PSX_FAIL) {
			m->payload[m->h.len < PSX_PAYLOAD_MAX ? m->h.len : PSX_PAYLOAD_MAX - 1] = 0;
			e = err_set(CUSTOS_ERR_CLOSED, "the supervisor failed: %s",
			            (const char *)m->payload);
			psx_msg_close(m);
			break;
		}
		pthread_mutex_lock(&P.mu);
		bool more = handle(m, egress_fds, n);
		pthread_mutex_unlock(&P.mu);
		psx_msg_close(m);
		if (!more)
			break;
	}
	free(m);
	return e;
}

int psx_proxy_find(const char *id)
{
	int k = -1;
	pthread_mutex_lock(&P.mu);
	/* The newest: a model whose sandbox a reload replaces has two slots until the old one is
	 * stopped, and the reload's configuration routes to the new one (whose slot may be a
	 * lower one, freed by an earlier removal). A refused reload's sandbox is never one: the
	 * supervisor is stopping it. */
	for (size_t i = 0; i < P.n; i++)
		if (!P.m[i].gone && !P.m[i].refused && strcmp(P.m[i].id, id) == 0 &&
		    (k < 0 || P.m[i].seq > P.m[k].seq))
			k = (int)i;
	pthread_mutex_unlock(&P.mu);
	return k;
}

void *psx_proxy_hold(int i)
{
	pthread_mutex_lock(&P.mu);
	P.m[i].holds++;
	pthread_mutex_unlock(&P.mu);
	return &P.m[i];
}

/* A removed sandbox no request can reach any more: the supervisor may stop it now rather than
 * at the end of limits.timeouts.shutdown. Called with P.mu held. */
static void idle_check(struct px_model *x)
{
	if (!x->removed || x->holds > 0 || x->idle_sent || x->gone || P.lost || P.bye || P.finished)
		return;
	x->idle_sent = true;
	if (send_locked(PSX_IDLE, slot_of(x), 0) != CUSTOS_OK)
		log_warn("privsep: model %s: the supervisor was not told that no request is in "
		         "flight: %s",
		         x->id, err_msg());
}

void psx_proxy_release(void *arg)
{
	struct px_model *x = arg;
	pthread_mutex_lock(&P.mu);
	if (x->holds > 0)
		x->holds--;
	idle_check(x);
	free_check(x);
	pthread_mutex_unlock(&P.mu);
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_REALTIME, ts); /* the condition variable's clock */
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Takes a socket from x's pool, asking for more when it runs low; waits (bounded) when it is
 * empty. A VM's streams are connected already and never pooled (an idle stream would hold a
 * connection to the model server open inside the guest). */
static custos_err take(struct px_model *x, int *fd)
{
	struct timespec dl;
	bool asked = false;

	deadline_in(&dl, PSX_WAIT_MS);
	pthread_mutex_lock(&P.mu);
	for (;;) {
		if (P.lost) {
			pthread_mutex_unlock(&P.mu);
			return err_set(CUSTOS_ERR_CLOSED, "privsep: no supervisor");
		}
		if (x->gone) {
			pthread_mutex_unlock(&P.mu);
			return err_set(CUSTOS_ERR_CLOSED,
			               "model %s: its sandbox was removed by a reload", x->id);
		}
		if (x->refused) {
			pthread_mutex_unlock(&P.mu);
			return err_set(CUSTOS_ERR_CLOSED,
			               "model %s: the reload that started this sandbox was refused",
			               x->id);
		}
		size_t low = x->vm ? 1 : PSX_POOL_LOW;
		if (!x->pending && x->n < low && (x->n > 0 || !asked || x->vm)) {
			uint32_t want = x->vm ? 1 : (uint32_t)(PSX_POOL_MAX - x->n);
			if (send_locked(PSX_WANT, slot_of(x), want) == CUSTOS_OK)
				x->pending = true;
			asked = true;
		}
		if (x->n > 0) {
			*fd = x->pool[--x->n];
			pthread_mutex_unlock(&P.mu);
			return CUSTOS_OK;
		}
		uint64_t answers = x->answers;
		int r = 0;
		while (x->answers == answers && !P.lost && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&P.cv, &P.mu, &dl);
		if (r == ETIMEDOUT) {
			pthread_mutex_unlock(&P.mu);
			return err_set(CUSTOS_ERR_TIMEOUT,
			               "model %s: no socket from the supervisor", x->id);
		}
		if (x->n == 0 && !x->last_err)
			asked = false; /* answered for an instance gone meanwhile: ask again */
		if (x->n == 0 && x->last_err) {
			int le = x->last_err;
			pthread_mutex_unlock(&P.mu);
			errno = le;
			return err_sys("model %s: no socket inside its sandbox", x->id);
		}
	}
}

custos_err psx_proxy_connect(void *arg, int *fd)
{
	struct px_model *x = arg;
	int s = -1;

	GUARD(take(x, &s));
	if (x->vm) {
		*fd = s;
		return CUSTOS_OK;
	}
	/* Unconnected, made in the sandbox's netns: its loopback is the model's. */
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(x->st.port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int r;
	do
		r = connect(s, (struct sockaddr *)&a, sizeof(a));
	while (r == -1 && errno == EINTR);
	if (r == -1 && errno != EINPROGRESS) {
		custos_err e = err_sys("model %s: connect inside its sandbox", x->id);
		close(s);
		return e;
	}
	*fd = s;
	return CUSTOS_OK;
}

custos_err psx_proxy_reload(uint64_t wait_ms, const char *sha256)
{
	struct timespec dl;
	int r = 0;

	deadline_in(&dl, wait_ms > UINT32_MAX ? UINT32_MAX : (unsigned)wait_ms);
	pthread_mutex_lock(&P.mu);
	uint64_t answers = P.rl_answers;
	psx_hdr h = { .type = PSX_RELOAD, .gen = ++P.rl_seq, .len = PSX_RELOAD_SHA256_LEN };
	P.rl_open = true; /* until its COMMIT (psx_proxy_commit follows whatever the result) */
	pthread_mutex_lock(&P.send_mu);
	custos_err se = P.lost || strlen(sha256) != PSX_RELOAD_SHA256_LEN
	                        ? CUSTOS_ERR_CLOSED
	                        : psx_send(P.sock, &h, sha256, NULL, 0);
	pthread_mutex_unlock(&P.send_mu);
	if (se != CUSTOS_OK) {
		pthread_mutex_unlock(&P.mu);
		return err_set(CUSTOS_ERR_CLOSED, "reload: the supervisor cannot be asked to start "
		                                  "the sandboxes");
	}
	/* In steps: a SIGTERM (SIGINT) sent meanwhile is left pending for proxy_run, which stops
	 * custos once this reload is given up (the supervisor stops what it was starting at the
	 * refused COMMIT); a sandbox's start timeout does not hold the shutdown. */
	bool stopping = false;
	/* The wait holds the loop that pings the service manager's watchdog (proxy_run, or its
	 * SIGHUP reload waiting for this one's lock) for up to minutes: pinged from here instead,
	 * the wait being bounded by wait_ms, so that WatchdogSec= does not kill custos while a
	 * sandbox starts. */
	uint64_t wd_ns = notify_watchdog_usec() * 1000 / 2, wd_last = 0;
	while (P.rl_answers == answers && !P.lost && r != ETIMEDOUT && !stopping) {
		if (wd_ns > 0 && tm_mono_ns() - wd_last >= wd_ns) {
			if (notify_send("WATCHDOG=1") != CUSTOS_OK)
				log_warn("privsep: reload: watchdog: %s", err_msg());
			wd_last = tm_mono_ns();
		}
		struct timespec step;
		deadline_in(&step, 200);
		bool last = step.tv_sec > dl.tv_sec ||
		            (step.tv_sec == dl.tv_sec && step.tv_nsec >= dl.tv_nsec);
		r = pthread_cond_timedwait(&P.cv, &P.mu, last ? &dl : &step);
		if (r == ETIMEDOUT && !last)
			r = 0;
		sigset_t pend;
		stopping = P.stopping ||
		           (sigpending(&pend) == 0 &&
		            (sigismember(&pend, SIGTERM) == 1 || sigismember(&pend, SIGINT) == 1));
	}
	custos_err e = CUSTOS_OK;
	if (P.rl_answers == answers && stopping)
		e = err_set(CUSTOS_ERR_CLOSED, "reload: given up, custos is stopping (the "
		                               "sandboxes it was starting are stopped)");
	else if (P.rl_answers == answers)
		e = err_set(CUSTOS_ERR_TIMEOUT,
		            "reload: the supervisor did not start the sandboxes in %llu ms",
		            (unsigned long long)wait_ms);
	else if (P.rl_result != 0)
		e = err_set(CUSTOS_ERR_INVAL, "reload: sandboxes: %s", P.rl_msg);
	pthread_mutex_unlock(&P.mu);
	return e;
}

void psx_proxy_stopping(void)
{
	pthread_mutex_lock(&P.mu);
	P.stopping = true;
	pthread_cond_broadcast(&P.cv);
	pthread_mutex_unlock(&P.mu);
}

void psx_proxy_commit(bool applied, const custos_config *next)
{
	pthread_mutex_lock(&P.mu);
	psx_hdr h = { .type = PSX_COMMIT, .gen = P.rl_seq, .arg = applied ? 1 : 0 };
	P.rl_open = false;
	/* Refused: what it added is unroutable from now on, before the supervisor stops it
	 * (REMOVED comes later): a next reload, reading custos.yaml meanwhile, routes to the
	 * sandbox it keeps or to the one it starts, never to one being stopped. */
	for (size_t i = 0; !applied && i < P.n; i++)
		if (P.m[i].rl_gen == P.rl_seq && P.rl_seq != 0 && !P.m[i].gone)
			P.m[i].refused = true;
	/* The admin API lists what is configured now: the added sandboxes from here, the removed
	 * ones no more (the supervisor stops them later, after their requests finished). */
	for (size_t i = 0; i < P.n; i++) {
		struct px_model *x = &P.m[i];
		const cfg_model *kept = NULL;
		for (size_t k = 0; applied && next && k < next->n_models && !kept; k++)
			if (next->models[k].upstream.kind == CFG_UPSTREAM_SANDBOX &&
			    strcmp(next->models[k].id, x->id) == 0)
				kept = &next->models[k];
		/* A replaced sandbox (a newer slot with its id) is no longer the configured one. */
		bool newest = true;
		for (size_t j = 0; j < P.n && newest; j++)
			newest = P.m[j].gone || P.m[j].refused || P.m[j].seq <= x->seq ||
			         strcmp(P.m[j].id, x->id) != 0;
		if (applied && next) {
			bool now = kept && !x->gone && !x->refused && newest;
			/* Configured until now (not one this reload added): removed, stopped
			 * once no request is in flight to it. */
			if (x->configured && !now && !x->gone)
				x->removed = true;
			x->configured = now;
		}
		if (x->eg_fd < 0)
			continue;
		/* An added sandbox's egress listener, made inside it while the reload was
		 * prepared: served from now on, as the applied configuration names it; refused,
		 * the sandbox is stopped and the listener with it. */
		int fd = x->eg_fd;
		x->eg_fd = -1;
		if (kept && !x->gone && !x->refused && newest && P.eg) {
			if (cli_egress_add(kept, fd, &x->eg_index) != CUSTOS_OK)
				log_error("egress: model %s added without an egress listener: %s",
				          x->id, err_msg());
		} else {
			close(fd);
		}
	}
	pthread_mutex_unlock(&P.mu);
	pthread_mutex_lock(&P.send_mu);
	custos_err e = psx_send(P.sock, &h, NULL, NULL, 0);
	pthread_mutex_unlock(&P.send_mu);
	if (e != CUSTOS_OK)
		log_error("privsep: reload: the supervisor was not told the outcome: %s",
		          err_msg());
	/* A removed sandbox whose last request ended before COMMIT (or that had none). */
	pthread_mutex_lock(&P.mu);
	for (size_t i = 0; applied && i < P.n; i++)
		idle_check(&P.m[i]);
	pthread_mutex_unlock(&P.mu);
}

void psx_proxy_attach(struct proxy_server *srv, struct egress_server *eg, audit_writer *aw)
{
	pthread_mutex_lock(&P.mu);
	P.srv = srv;
	P.eg = eg;
	P.aw = aw;
	for (size_t i = 0; i < P.nheld; i++) {
		submit_body(span_cstr(P.held[i]));
		free(P.held[i]);
	}
	P.nheld = 0;
	pthread_mutex_unlock(&P.mu);
}

static void audit_lost(void)
{
	audit_event ev;
	audit_event_begin(&ev, "privsep");
	audit_event_cstr(&ev, "process", "proxy");
	audit_event_cstr(&ev, "action", "supervisor_lost");
	audit_event_cstr(&ev, "detail", "the supervisor went away: the proxy stops (fail closed)");
	audit_event_u64(&ev, "pid", (uint64_t)getpid());
	if (audit_event_end(&ev) == CUSTOS_OK)
		submit_body(audit_event_body(&ev));
}

#ifdef CUSTOS_TEST_HOOKS
/* The receiver reads nothing until then (CLOCK_MONOTONIC ns; test hook "stall:MS"). */
static uint64_t test_stall_until;
#endif

static void *receiver(void *arg)
{
	psx_msg *m = xcalloc(1, sizeof(*m));
	proc_name_self("custos-privsep");
	(void)arg;
	for (;;) {
#ifdef CUSTOS_TEST_HOOKS
		while (tm_mono_ns() < __atomic_load_n(&test_stall_until, __ATOMIC_ACQUIRE))
			usleep(10000);
#endif
		int r = psx_recv(P.sock, m);
		if (r <= 0) {
			pthread_mutex_lock(&P.mu);
			bool expected = P.bye;
			P.lost = !expected;
			pthread_cond_broadcast(&P.cv);
			if (!expected) {
				log_error("privsep: the supervisor went away; stopping");
				audit_lost();
			}
			pthread_mutex_unlock(&P.mu);
			if (!expected && P.srv)
				proxy_request_stop(P.srv);
			break;
		}
		pthread_mutex_lock(&P.mu);
		bool more = handle(m, NULL, 0);
		pthread_mutex_unlock(&P.mu);
		psx_msg_close(m);
		if (!more)
			break;
	}
	free(m);
	return NULL;
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): the proxy sends the supervisor what a
 * compromised proxy could, so that a test sees the supervisor's answer
 * (tests/integration/privsep_protocol.sh, privsep_hostile.sh). CUSTOS_TEST_PSX_SEND=SPEC: one
 * message once serving; CUSTOS_TEST_PSX_FILE=PATH: each line appended to PATH (read every
 * 20 ms) from then on. A SPEC is "short" (4 bytes, no header), "empty_fd" (an empty message
 * with an fd, which reads as EOF), "stall:MS" (the receiver thread reads none of the
 * supervisor's messages for MS ms), "SPEC;SPEC" (one, then the other), "N*SPEC" (SPEC N times
 * in a row) or
 * "type,model,gen,arg,len,nfds[:text]" (a header saying len, len bytes of payload: text, then
 * zeros; nfds copies of the proxy's socket; len and nfds may exceed what psx_send allows). */
#define TEST_PSX_FDS_MAX 64

static custos_err test_hook_send_one(const char *v)
{
	static uint8_t payload[2 * PSX_PAYLOAD_MAX];
	unsigned t, model, gen, arg, len, nfds;
	int off = 0;
	union {
		char buf[CMSG_SPACE(sizeof(int) * TEST_PSX_FDS_MAX)];
		struct cmsghdr align;
	} cb;
	uint8_t *head = payload; /* header, then payload, in one buffer */
	struct iovec iov = { .iov_base = head };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t want;

	if (sscanf(v, "stall:%u%n", &arg, &off) == 1 && v[off] == '\0') {
		__atomic_store_n(&test_stall_until, tm_mono_ns() + (uint64_t)arg * 1000000u,
		                 __ATOMIC_RELEASE);
		return CUSTOS_OK;
	}
	memset(payload, 0, sizeof(payload));
	memset(&cb, 0, sizeof(cb));
	if (strcmp(v, "short") == 0) {
		iov.iov_len = 4;
		nfds = 0;
	} else if (strcmp(v, "empty_fd") == 0) {
		mh.msg_iovlen = 0;
		nfds = 1;
	} else if (sscanf(v, "%u,%u,%u,%u,%u,%u%n", &t, &model, &gen, &arg, &len, &nfds, &off) ==
	                   6 &&
	           len <= sizeof(payload) - sizeof(psx_hdr) && nfds <= TEST_PSX_FDS_MAX) {
		psx_hdr h = { .type = (uint16_t)t,
			      .model = (uint16_t)model,
			      .gen = gen,
			      .arg = arg,
			      .len = len };
		memcpy(head, &h, sizeof(h));
		if (v[off] == ':') {
			size_t n = strlen(v + off + 1);
			memcpy(head + sizeof(h), v + off + 1, n < len ? n : len);
		}
		iov.iov_len = sizeof(h) + len;
	} else {
		return err_set(CUSTOS_ERR_INVAL, "no such psx spec: %s", v);
	}
	if (nfds) {
		mh.msg_control = cb.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		for (size_t i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(c) + i * sizeof(int), &P.sock, sizeof(int));
	}
	want = mh.msg_iovlen ? (ssize_t)iov.iov_len : 0;
	pthread_mutex_lock(&P.send_mu);
	ssize_t n;
	do
		n = sendmsg(P.sock, &mh, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	pthread_mutex_unlock(&P.send_mu);
	return n == want ? CUSTOS_OK : err_sys("sendmsg");
}

static void test_hook_send(const char *v)
{
	unsigned long times = 1;
	char *end, part[1024];

	if (v[0] >= '0' && v[0] <= '9' && (times = strtoul(v, &end, 10), *end == '*'))
		v = end + 1;
	else
		times = 1;
	custos_err e = CUSTOS_OK;
	for (unsigned long i = 0; i < times && e == CUSTOS_OK; i++) {
		for (const char *p = v; e == CUSTOS_OK;) { /* SPEC;SPEC;... */
			size_t n = strcspn(p, ";");
			if (n >= sizeof(part)) {
				e = err_set(CUSTOS_ERR_LIMIT, "psx spec too long");
				break;
			}
			memcpy(part, p, n);
			part[n] = '\0';
			e = test_hook_send_one(part);
			if (p[n] == '\0')
				break;
			p += n + 1;
		}
	}
	if (e != CUSTOS_OK)
		log_error("up: test hook: %s", err_msg());
	else
		log_warn("up: test hook: the proxy sent the supervisor %s", v);
}

/* CUSTOS_TEST_PSX_FILE's reader: every line not sent yet, until the proxy finishes. */
static void *test_hook_file_main(void *arg)
{
	const char *path = arg;
	size_t done = 0; /* bytes of whole lines sent */
	static char text[65536];

	proc_name_self("custos-psxhook");
	for (;;) {
		pthread_mutex_lock(&P.mu);
		bool finished = P.finished;
		pthread_mutex_unlock(&P.mu);
		if (finished)
			break;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd == -1 ? -1 : read(fd, text, sizeof(text) - 1);
		if (fd != -1)
			close(fd);
		for (size_t i = done; n > 0 && i < (size_t)n; i++) {
			if (text[i] != '\n')
				continue;
			text[i] = '\0';
			test_hook_send(text + done);
			done = i + 1;
		}
		usleep(20000);
	}
	return NULL;
}

static void test_hook_start(void)
{
	const char *v = getenv("CUSTOS_TEST_PSX_SEND");
	const char *path = getenv("CUSTOS_TEST_PSX_FILE");
	pthread_t th;

	if (v) {
		log_warn("up: test hook: the proxy sends the supervisor %s", v);
		test_hook_send(v);
	}
	if (path == NULL)
		return;
	log_warn("up: test hook: the proxy sends the supervisor the lines of %s", path);
	if (pthread_create(&th, NULL, test_hook_file_main, (void *)path) != 0)
		log_error("up: test hook: no thread for %s", path);
	else
		pthread_detach(th);
}
#endif

custos_err psx_proxy_start(void)
{
	if (pthread_create(&P.th, NULL, receiver, NULL) != 0)
		return err_set(CUSTOS_ERR_SYS, "privsep: receiver thread");
	P.th_started = true;
	custos_err e = send_locked(PSX_PROXY_UP, 0, 0);
#ifdef CUSTOS_TEST_HOOKS
	if (e == CUSTOS_OK)
		test_hook_start();
#endif
	return e;
}

void psx_proxy_finish(void)
{
	struct timespec dl;

	/* Setup may have failed before the receiver ran: BYE still has to be read. */
	if (!P.th_started && pthread_create(&P.th, NULL, receiver, NULL) == 0)
		P.th_started = true;
	pthread_mutex_lock(&P.mu);
	bool lost = P.lost;
	pthread_mutex_unlock(&P.mu);
	if (!lost && P.th_started && send_locked(PSX_DRAINED, 0, 0) == CUSTOS_OK) {
		/* The supervisor stops the sandboxes (their events come here) and says BYE. */
		deadline_in(&dl, 60000);
		pthread_mutex_lock(&P.mu);
		int r = 0;
		while (!P.bye && !P.lost && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&P.cv, &P.mu, &dl);
		pthread_mutex_unlock(&P.mu);
	}
	if (P.th_started) {
		shutdown(P.sock, SHUT_RDWR); /* ends the receiver if it still waits */
		pthread_join(P.th, NULL);
		P.th_started = false;
	}
	pthread_mutex_lock(&P.mu);
	for (size_t i = 0; i < P.n; i++) {
		pool_flush(&P.m[i]);
		if (P.m[i].eg_fd >= 0)
			close(P.m[i].eg_fd);
		P.m[i].eg_fd = -1;
	}
	for (size_t i = 0; i < P.nheld; i++)
		free(P.held[i]);
	P.nheld = 0;
	P.aw = NULL;
	P.eg = NULL;
	P.srv = NULL;
	P.finished = true; /* proxy_free still releases the configurations' holds */
	pthread_mutex_unlock(&P.mu);
}

bool psx_proxy_supervisor_lost(void)
{
	pthread_mutex_lock(&P.mu);
	bool l = P.lost;
	pthread_mutex_unlock(&P.mu);
	return l;
}

void psx_vm_info_from(const admin_vm *v, psx_vm_info *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", v->name);
	snprintf(out->domain, sizeof(out->domain), "%s", v->domain);
	snprintf(out->uuid, sizeof(out->uuid), "%s", v->uuid);
	snprintf(out->profile_hash, sizeof(out->profile_hash), "%s", v->profile_hash);
	snprintf(out->state, sizeof(out->state), "%s", v->state ? v->state : "");
	snprintf(out->channel, sizeof(out->channel), "%s", v->channel ? v->channel : "");
	snprintf(out->seccomp, sizeof(out->seccomp), "%s", v->seccomp ? v->seccomp : "");
	out->vsock_cid = v->vsock_cid;
	out->restarts = v->restarts;
	out->started_wall_ns = v->started_wall_ns;
	out->qemu_pid = v->qemu_pid;
	out->routable = v->routable;
}

/* admin_vm's string fields are static: map what came over the socket back onto the values
 * cli/vm_up.c uses ("unknown" for anything else). */
static const char *static_of(const char *s, const char *const *known)
{
	for (size_t i = 0; known[i]; i++)
		if (strcmp(s, known[i]) == 0)
			return known[i];
	return "unknown";
}

size_t psx_proxy_admin_vms(admin_vm *out, size_t max)
{
	static const char *const states[] = { "running", "starting", "restarting",
		                              "failed",  "stopped",  NULL };
	static const char *const channels[] = { "vsock", "virtio-serial", NULL };
	static const char *const seccomps[] = { "filter", "refused", "pending", NULL };
	size_t k = 0;

	pthread_mutex_lock(&P.mu);
	for (size_t i = 0; i < P.n && k < max; i++) {
		const struct px_model *x = &P.m[i];
		/* What is configured now: not a VM removed (stopping or gone), nor one a reload
		 * not applied (yet, or ever) added. */
		if (!x->vm || !x->have_vm_info || x->gone || !x->configured || x->refused)
			continue;
		const psx_vm_info *v = &x->vm_info;
		admin_vm *o = &out[k++];
		memset(o, 0, sizeof(*o));
		snprintf(o->name, sizeof(o->name), "%s", v->name);
		snprintf(o->domain, sizeof(o->domain), "%s", v->domain);
		snprintf(o->uuid, sizeof(o->uuid), "%s", v->uuid);
		snprintf(o->profile_hash, sizeof(o->profile_hash), "%s", v->profile_hash);
		o->state = P.lost ? "failed" : static_of(v->state, states);
		o->channel = static_of(v->channel, channels);
		o->seccomp = static_of(v->seccomp, seccomps);
		o->vsock_cid = v->vsock_cid;
		o->restarts = v->restarts;
		o->started_wall_ns = v->started_wall_ns;
		o->qemu_pid = v->qemu_pid;
		o->routable = v->routable && !P.lost;
		o->taint = -1;
	}
	pthread_mutex_unlock(&P.mu);
	return k;
}

size_t psx_proxy_admin_sandboxes(void *arg, admin_sandbox_info *out, size_t max)
{
	size_t k = 0;

	(void)arg;
	pthread_mutex_lock(&P.mu);
	for (size_t i = 0; i < P.n && k < max; i++) {
		const struct px_model *x = &P.m[i];
		if (x->vm || x->gone || !x->configured) /* VMs: listed through vms_get */
			continue;
		const psx_state *s = &x->st;
		admin_sandbox_info *o = &out[k++];
		memset(o, 0, sizeof(*o));
		snprintf(o->name, sizeof(o->name), "%s", x->id);
		o->memory_bytes = s->memory_bytes;
		o->pids = s->pids;
		o->nofile = s->nofile;
		o->cpu_millis = s->cpu_millis;
		o->st.kind = "process";
		o->st.pid = -1;
		if (!x->have_state)
			continue; /* not reported yet: not running */
		o->st.running = s->running && !P.lost;
		o->st.pid = s->pid;
		o->st.generation = s->generation;
		o->st.restarts = s->restarts;
		snprintf(o->st.profile_hash, sizeof(o->st.profile_hash), "%s", s->profile_hash);
		snprintf(o->st.cgroup, sizeof(o->st.cgroup), "%s", s->cgroup);
	}
	pthread_mutex_unlock(&P.mu);
	return k;
}

int psx_proxy_admin_restart(void *arg, const char *name, int64_t pid)
{
	struct timespec dl;
	struct px_model *x = NULL;

	(void)arg;
	if (pid <= 0 || pid > INT32_MAX)
		return EINVAL;
	pthread_mutex_lock(&P.mu);
	for (size_t i = 0; i < P.n && x == NULL; i++)
		if (!P.m[i].vm && !P.m[i].gone && P.m[i].configured && strcmp(P.m[i].id, name) == 0)
			x = &P.m[i];
	if (x == NULL) {
		pthread_mutex_unlock(&P.mu);
		return ENOENT; /* removed by a reload meanwhile */
	}
	uint64_t answers = x->restart_answers;
	int r = 0;
	if (send_locked(PSX_RESTART, slot_of(x), (uint32_t)pid) != CUSTOS_OK) {
		pthread_mutex_unlock(&P.mu);
		return EPIPE;
	}
	deadline_in(&dl, PSX_WAIT_MS);
	while (x->restart_answers == answers && !P.lost && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&P.cv, &P.mu, &dl);
	int res = x->restart_answers != answers ? x->restart_result : ETIMEDOUT;
	pthread_mutex_unlock(&P.mu);
	return res;
}
