/*
 * The server: listeners (one SO_REUSEPORT socket per worker and TCP address; a shared one
 * for Unix sockets), worker threads with their event loops, the reloadable state (config,
 * certificates, policy) swapped atomically on SIGHUP, and graceful shutdown on SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bodyrec.h"
#include "custos/policy.h"
#include "metrics.h"
#include "proxy_int.h"

#define NS_PER_S        1000000000ull
#define POLICY_HASH_HEX 65 /* 64 hex digits and the NUL */
#define LISTEN_BACKLOG  4096

custos_err proxy_parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len);

/* ---------------------------------------------------------------------------------------------
 * options and state
 */
void proxy_options_free(proxy_options *o)
{
	for (size_t i = 0; i < o->nlisteners; i++) {
		proxy_tls_opts *t = &o->listeners[i].tls_opts;
		free(o->listeners[i].address);
		for (size_t j = 0; j < PROXY_MAX_CERTS; j++) {
			free(t->cert_file[j]);
			free(t->key_file[j]);
			free(t->ocsp_file[j]);
		}
		free(t->client_ca);
		free(t->ciphers);
		free(t->ciphersuites);
		free(t->client_crl);
	}
	for (size_t i = 0; i < o->nupstreams; i++) {
		if (o->upstreams[i].release_fn)
			o->upstreams[i].release_fn(o->upstreams[i].connect_arg);
		free(o->upstreams[i].name);
		free(o->upstreams[i].address);
		free(o->upstreams[i].tls_ca);
		free(o->upstreams[i].tls_name);
		free(o->upstreams[i].tls_cert);
		free(o->upstreams[i].tls_key);
		free(o->upstreams[i].tls_crl);
		free(o->upstreams[i].host);
	}
	for (size_t i = 0; i < o->nroutes; i++) {
		free(o->routes[i].model);
		free(o->routes[i].path_prefix);
		free(o->routes[i].model_id);
	}
	for (size_t i = 0; i < o->napi_keys; i++)
		free(o->api_keys[i].principal);
	if (o->api_keys)
		OPENSSL_cleanse(o->api_keys, o->napi_keys * sizeof(o->api_keys[0]));
	free(o->api_keys);
	free(o->jwt.jwks_file);
	for (size_t i = 0; i < o->jwt.n_issuers; i++)
		free(o->jwt.issuers[i]);
	for (size_t i = 0; i < o->jwt.n_audiences; i++)
		free(o->jwt.audiences[i]);
	free(o->jwt.principal_claim);
	free(o->policy_file);
	memset(o, 0, sizeof(*o));
}

proxy_state *state_ref(proxy_state *st)
{
	atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
	return st;
}

static void state_free(proxy_state *st)
{
	for (size_t i = 0; i < PROXY_MAX_LISTENERS; i++)
		SSL_CTX_free(st->srv_ctx[i]);
	for (size_t i = 0; i < PROXY_MAX_UPSTREAMS; i++)
		SSL_CTX_free(st->up_ctx[i]);
	jwks_free(st->jwks);
	decide_free(st->pol);
	proxy_options_free(&st->o);
	free(st);
}

void state_unref(proxy_state *st)
{
	if (st && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
		state_free(st);
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_UNIX)
		return true;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

/* Checks o and builds the state from it; takes over o's contents (zeroed on return). */
static custos_err state_build(proxy_options *o, uint64_t gen, unsigned nworkers, proxy_state **out)
{
	proxy_state *st = xcalloc(1, sizeof(*st));
	custos_err e = CUSTOS_OK;

	*out = NULL;
	st->o = *o;
	memset(o, 0, sizeof(*o));
	atomic_init(&st->refs, 1);
	st->gen = gen;
	o = &st->o;
	if (o->nlisteners == 0 || o->nlisteners > PROXY_MAX_LISTENERS) {
		e = err_set(CUSTOS_ERR_INVAL, "proxy: 1..%d listeners needed", PROXY_MAX_LISTENERS);
		goto fail;
	}
	if (o->nupstreams == 0 || o->nupstreams > PROXY_MAX_UPSTREAMS ||
	    o->nroutes > PROXY_MAX_ROUTES || o->napi_keys > PROXY_MAX_API_KEYS) {
		e = err_set(CUSTOS_ERR_INVAL, "proxy: 1..%d upstreams, at most %d routes needed",
		            PROXY_MAX_UPSTREAMS, PROXY_MAX_ROUTES);
		goto fail;
	}
	for (size_t i = 0; i < o->nroutes; i++) {
		if (o->routes[i].upstream >= o->nupstreams) {
			e = err_set(CUSTOS_ERR_INVAL, "proxy: route %zu names no upstream", i + 1);
			goto fail;
		}
	}
	if (o->max_body > PROXY_BODY_MAX) {
		e = err_set(CUSTOS_ERR_LIMIT, "proxy: max_body above %u bytes", PROXY_BODY_MAX);
		goto fail;
	}
	st->max_body = o->max_body ? o->max_body : PROXY_BODY_DEFAULT;
	if (o->max_json_depth > JSONR_MAX_DEPTH) {
		e = err_set(CUSTOS_ERR_LIMIT, "proxy: max_json_depth above %u", JSONR_MAX_DEPTH);
		goto fail;
	}
	if (o->audit_body_max > CFG_MAX_AUDIT_BODY_RECORD) {
		e = err_set(CUSTOS_ERR_LIMIT, "proxy: audit_body_max above %u bytes",
		            CFG_MAX_AUDIT_BODY_RECORD);
		goto fail;
	}
	if (o->audit_body_max == 0)
		o->audit_body_max = CFG_DEFAULT_AUDIT_BODY_RECORD;
	/* Content-Length is checked against max_body after authentication (on_head), so that
	 * the 413 names who sent it; the codec's own ceiling stays as the last bound. */
	st->hlim.max_head_bytes = (size_t)o->max_head_bytes;
	st->hlim.max_headers = (size_t)o->max_headers;
	st->hlim.max_request_line = (size_t)o->max_request_line;
	for (size_t i = 0; i < o->nlisteners; i++) {
		if (o->listeners[i].tls &&
		    (e = tls_server_ctx(o->listeners[i].address, &o->listeners[i].tls_opts,
		                        &st->srv_ctx[i])) != CUSTOS_OK) {
			e = err_wrap(e, "listener %s", o->listeners[i].address);
			goto fail;
		}
	}
	for (size_t i = 0; i < o->nupstreams; i++) {
		if (o->upstreams[i].tls &&
		    (e = tls_client_ctx(&o->upstreams[i], nworkers, &st->up_ctx[i])) != CUSTOS_OK) {
			e = err_wrap(e, "upstream %s", o->upstreams[i].name);
			goto fail;
		}
	}
	if (o->jwt.jwks_file && (e = jwks_load(o->jwt.jwks_file, &st->jwks)) != CUSTOS_OK)
		goto fail;
	if (o->policy_file) {
		if ((e = decide_load(o->policy_file, &st->pol)) != CUSTOS_OK)
			goto fail;
		if (o->policy_check != NULL) {
			struct policy *p = decide_policy_ref(st->pol);
			e = o->policy_check(o->policy_check_arg, p);
			policy_unref(p);
			if (e != CUSTOS_OK)
				goto fail;
		}
	} else {
		log_warn("proxy: no policy file: every authenticated request is allowed");
	}
	*out = st;
	return CUSTOS_OK;
fail:
	state_free(st);
	return e;
}

/* The ticket key period of the options now in force: the last TLS listener with tickets wins
 * (docs/CONFIG.md, "Session tickets"); none such leaves the ring's period be. Called once the
 * state is in force, so that a refused reload changes nothing. */
static void ticket_period_apply(const proxy_options *o)
{
	for (size_t i = o->nlisteners; i-- > 0;) {
		const proxy_listener_opts *l = &o->listeners[i];
		if (l->tls && !l->tls_opts.no_tickets) {
			tls_ticket_rotation_set(l->tls_opts.ticket_rotate_ns);
			return;
		}
	}
}

proxy_state *worker_state(worker *w)
{
	proxy_server *s = w->srv;
	uint64_t g = atomic_load_explicit(&s->gen, memory_order_acquire);

	if (g != w->st_gen) {
		pthread_mutex_lock(&s->st_lock);
		proxy_state *n = state_ref(s->st);
		w->st_gen = atomic_load(&s->gen);
		pthread_mutex_unlock(&s->st_lock);
		state_unref(w->st);
		w->st = n;
	}
	return w->st;
}

/* ---------------------------------------------------------------------------------------------
 * listeners
 */
static custos_err open_listener(lsock *ls, int *out)
{
	int fd = socket(ls->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	*out = -1;
	if (fd == -1)
		return err_sys("socket");
	if (ls->ss.ss_family != AF_UNIX) {
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) {
			close(fd);
			return err_sys("setsockopt SO_REUSEPORT");
		}
	} else {
		struct sockaddr_un *un = (struct sockaddr_un *)&ls->ss;
		struct stat sb;
		/* Only a stale socket is removed, never another kind of file. */
		if (lstat(un->sun_path, &sb) == 0 && S_ISSOCK(sb.st_mode))
			(void)unlink(un->sun_path);
	}
	if (bind(fd, (struct sockaddr *)&ls->ss, ls->sslen) == -1) {
		custos_err e = err_sys("bind");
		close(fd);
		return e;
	}
	if (listen(fd, LISTEN_BACKLOG) == -1) {
		custos_err e = err_sys("listen");
		close(fd);
		return e;
	}
	if (ls->ss.ss_family != AF_UNIX && ls->port == 0) {
		struct sockaddr_storage got;
		socklen_t gl = sizeof(got);
		if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0) {
			unsigned port = got.ss_family == AF_INET
			                        ? ntohs(((struct sockaddr_in *)&got)->sin_port)
			                        : ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
			ls->port = port;
			/* Later workers bind the same port (SO_REUSEPORT). */
			if (ls->ss.ss_family == AF_INET)
				((struct sockaddr_in *)&ls->ss)->sin_port = htons((uint16_t)port);
			else
				((struct sockaddr_in6 *)&ls->ss)->sin6_port = htons((uint16_t)port);
		}
	}
	*out = fd;
	return CUSTOS_OK;
}

/* Woken at shutdown, or after a reload: an idle worker drops its reference to the replaced
 * state now, not at its next connection, so that the state ends with its last request (and
 * with it what it alone uses: a removed sandbox is stopped once nothing uses it). */
static void on_wake(ev_loop *l, void *obj, uint32_t events)
{
	worker *w = obj;
	uint64_t v;
	(void)!read(w->wake_fd, &v, sizeof(v));
	(void)worker_state(w);
}

/* Listener callback: obj is the worker; the listener index is found from the ev_io. Takes at
 * most PROXY_ACCEPT_BATCH connections; true when it took that many (more may wait). Once the
 * worker drains only its last look at the queue (drain_accept) takes any. */
static bool accept_on(worker *w, size_t li, bool drain_accept)
{
	proxy_server *s = w->srv;

	if (w->draining && !drain_accept)
		return false;
	for (int i = 0; i < PROXY_ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(w->lfd[li], (struct sockaddr *)&ss, &sl,
		                 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_warn("proxy: accept: %s", strerror(errno));
			return false;
		}
		proxy_state *st = worker_state(w);
		uint64_t maxc = st->o.max_connections;
		if (maxc && (uint64_t)w->nconns * s->nworkers >= maxc) {
			/* Over the limit: closed at once (a level-triggered listener must not be
			 * left readable, and a queued connection would only time out), and
			 * audited. */
			conn_shed(w, fd, (struct sockaddr *)&ss, maxc);
			continue;
		}
		conn_accept(w, fd, &s->ls[li], (struct sockaddr *)&ss, sl);
	}
	return true;
}

#define DEFINE_ACCEPT(n)                                                                           \
	static void on_accept_##n(ev_loop *l, void *obj, uint32_t events)                          \
	{                                                                                          \
		(void)accept_on(obj, n, false);                                                    \
	}
DEFINE_ACCEPT(0)
DEFINE_ACCEPT(1)
DEFINE_ACCEPT(2)
DEFINE_ACCEPT(3)
DEFINE_ACCEPT(4)
DEFINE_ACCEPT(5)
DEFINE_ACCEPT(6)
DEFINE_ACCEPT(7)
DEFINE_ACCEPT(8)
DEFINE_ACCEPT(9)
DEFINE_ACCEPT(10)
DEFINE_ACCEPT(11)
DEFINE_ACCEPT(12)
DEFINE_ACCEPT(13)
DEFINE_ACCEPT(14)
DEFINE_ACCEPT(15)
static const ev_io_cb accept_cbs[PROXY_MAX_LISTENERS] = {
	on_accept_0,  on_accept_1,  on_accept_2,  on_accept_3,  on_accept_4,  on_accept_5,
	on_accept_6,  on_accept_7,  on_accept_8,  on_accept_9,  on_accept_10, on_accept_11,
	on_accept_12, on_accept_13, on_accept_14, on_accept_15,
};

/* ---------------------------------------------------------------------------------------------
 * create / run / reload / free
 */
custos_err proxy_create(proxy_options *in, proxy_server **out)
{
	proxy_options o = *in; /* shallow: the state takes the strings over */
	proxy_server *s = xcalloc(1, sizeof(*s));
	custos_err e;

	*out = NULL;
	memset(in, 0, sizeof(*in));
	pthread_mutex_init(&s->st_lock, NULL);
	s->sig_pipe[0] = s->sig_pipe[1] = -1;
	for (size_t i = 0; i < o.nlisteners && i < PROXY_MAX_LISTENERS; i++) {
		lsock *ls = &s->ls[i];
		const proxy_listener_opts *lo = &o.listeners[i];
		if ((e = proxy_parse_address(lo->address, &ls->ss, &ls->sslen)) != CUSTOS_OK) {
			proxy_options_free(&o);
			free(s);
			return err_wrap(e, "listener %zu", i + 1);
		}
		ls->tls = lo->tls;
		ls->index = i;
		ls->is_unix = ls->ss.ss_family == AF_UNIX;
		ls->shared_fd = -1;
		if (!lo->tls && !lo->force_plain && !is_loopback(&ls->ss)) {
			proxy_options_free(&o);
			free(s);
			return err_set(CUSTOS_ERR_PERM,
			               "listener %s: plain HTTP only on loopback or Unix sockets "
			               "(set force_plain to override)",
			               lo->address);
		}
		ls->port = ls->ss.ss_family == AF_INET
		                   ? ntohs(((struct sockaddr_in *)&ls->ss)->sin_port)
		           : ls->ss.ss_family == AF_INET6
		                   ? ntohs(((struct sockaddr_in6 *)&ls->ss)->sin6_port)
		                   : 0;
		s->nls++;
	}
	s->grace_ns = o.shutdown_grace_ns ? o.shutdown_grace_ns : 10 * NS_PER_S;
	s->audit = o.audit;
	s->audit_defer = o.audit_batch;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->nworkers = o.workers ? o.workers : (ncpu > 0 ? (unsigned)ncpu : 1);
	if (s->nworkers > PROXY_MAX_WORKERS)
		s->nworkers = PROXY_MAX_WORKERS;
	if ((e = state_build(&o, 1, s->nworkers, &s->st)) != CUSTOS_OK) {
		free(s);
		return e;
	}
	atomic_init(&s->gen, 1);
	ticket_period_apply(&s->st->o);
	if ((e = limiter_new(&s->lim)) != CUSTOS_OK)
		goto fail;
	s->workers = xcalloc(s->nworkers, sizeof(worker));
	for (unsigned i = 0; i < s->nworkers; i++) {
		worker *w = &s->workers[i];
		w->srv = s;
		w->id = i;
		w->wake_fd = -1;
		w->loop.epfd = -1;
		for (size_t j = 0; j < PROXY_MAX_LISTENERS; j++)
			w->lfd[j] = -1;
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		worker *w = &s->workers[i];
		if ((e = ev_loop_init(&w->loop)) != CUSTOS_OK)
			goto fail;
		w->loop.batch_cb = conn_batch;
		w->loop.batch_obj = w;
		w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->wake_fd == -1) {
			e = err_sys("eventfd");
			goto fail;
		}
		if ((e = ev_add_lt(&w->loop, &w->wake_io, w->wake_fd, on_wake, w)) != CUSTOS_OK)
			goto fail;
		for (size_t j = 0; j < s->nls; j++) {
			lsock *ls = &s->ls[j];
			if (ls->is_unix) {
				if (ls->shared_fd == -1 &&
				    (e = open_listener(ls, &ls->shared_fd)) != CUSTOS_OK)
					goto fail_listen;
				w->lfd[j] = fcntl(ls->shared_fd, F_DUPFD_CLOEXEC, 0);
				if (w->lfd[j] == -1) {
					e = err_sys("dup");
					goto fail;
				}
			} else if ((e = open_listener(ls, &w->lfd[j])) != CUSTOS_OK) {
				goto fail_listen;
			}
			if ((e = ev_add_lt(&w->loop, &w->lio[j], w->lfd[j], accept_cbs[j], w)) !=
			    CUSTOS_OK)
				goto fail;
		}
		w->st = state_ref(s->st);
		w->st_gen = 1;
		if (s->audit && s->audit_defer)
			w->audit_batch = emit_batch_new();
	}
	*out = s;
	return CUSTOS_OK;
fail_listen:
	e = err_wrap(e, "listener");
fail:
	proxy_free(s);
	return e;
}

unsigned proxy_bound_port(const proxy_server *s, size_t i)
{
	return i < s->nls ? s->ls[i].port : 0;
}

/* The sockets, and whether each speaks TLS, are fixed at start (workers hold them): a reload
 * must name the same listeners, in the same order, at the same addresses, each still TLS or
 * still plain (and a plain one still allowed where it is). Settings inside a tls: block may
 * change. Called under no lock; reads the state in force under st_lock. */
static custos_err listeners_unchanged(proxy_server *s, const proxy_options *o)
{
	custos_err e = CUSTOS_OK;

	if (o->nlisteners != s->nls)
		return err_set(
		        CUSTOS_ERR_INVAL,
		        "reload: %zu listener(s) configured, %zu running: listeners are fixed "
		        "at start (restart custos to change them)",
		        o->nlisteners, s->nls);
	pthread_mutex_lock(&s->st_lock);
	const proxy_options *cur = &s->st->o;
	for (size_t i = 0; i < s->nls && e == CUSTOS_OK; i++) {
		const proxy_listener_opts *was = &cur->listeners[i], *now = &o->listeners[i];
		if (now->address == NULL || strcmp(was->address, now->address) != 0)
			e = err_set(
			        CUSTOS_ERR_INVAL,
			        "reload: listener %zu's address changed from %s to %s: listeners "
			        "are fixed at start (restart custos to change them)",
			        i + 1, was->address, now->address ? now->address : "(none)");
		else if (was->tls != now->tls)
			e = err_set(
			        CUSTOS_ERR_INVAL,
			        "reload: listener %s would %s: a listener's TLS mode is fixed at "
			        "start (restart custos to change it)",
			        was->address, now->tls ? "add TLS" : "drop TLS");
		else if (!now->tls && !now->force_plain && !is_loopback(&s->ls[i].ss))
			e = err_set(
			        CUSTOS_ERR_PERM,
			        "reload: listener %s: plain HTTP only on loopback or Unix sockets "
			        "(set force_plain to override)",
			        now->address);
	}
	pthread_mutex_unlock(&s->st_lock);
	return e;
}

/* The hash of st's policy (64 hex digits), "" when it has none. */
static void state_policy_hash(proxy_state *st, char out[POLICY_HASH_HEX])
{
	struct policy *p = decide_policy_ref(st->pol);

	snprintf(out, POLICY_HASH_HEX, "%s", p ? policy_hash_hex(p) : "");
	policy_unref(p);
}

/* proxy_reload; when it is applied and replaced is not NULL, the hash of the policy of the
 * state it replaced (the one in force just before, whatever reload put it there). */
static custos_err reload_swap(proxy_server *s, proxy_options *in, char replaced[POLICY_HASH_HEX])
{
	proxy_options o = *in;
	proxy_state *st;

	memset(in, 0, sizeof(*in));
	/* Listeners and workers are fixed; a changed listener list is refused, not half-applied. */
	custos_err le = listeners_unchanged(s, &o);
	if (le != CUSTOS_OK) {
		proxy_options_free(&o);
		return le;
	}
	uint64_t gen = atomic_load(&s->gen) + 1;
	GUARD(state_build(&o, gen, s->nworkers, &st));
	pthread_mutex_lock(&s->st_lock);
	/* Under the lock: two concurrent reloads (SIGHUP and the admin API) get distinct
	 * generations, so no worker keeps the first one's state believing it is current. */
	gen = atomic_load(&s->gen) + 1;
	st->gen = gen;
	proxy_state *old = s->st;
	s->st = st;
	atomic_store_explicit(&s->gen, gen, memory_order_release);
	ticket_period_apply(&st->o);
	pthread_mutex_unlock(&s->st_lock);
	if (replaced != NULL)
		state_policy_hash(old, replaced);
	state_unref(old);
	for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
		uint64_t one = 1;
		if (s->workers[i].wake_fd != -1)
			(void)!write(s->workers[i].wake_fd, &one, sizeof(one));
	}
	return CUSTOS_OK;
}

custos_err proxy_reload(proxy_server *s, proxy_options *in)
{
	return reload_swap(s, in, NULL);
}

struct policy *proxy_policy_ref(proxy_server *s)
{
	pthread_mutex_lock(&s->st_lock);
	proxy_state *st = state_ref(s->st);
	pthread_mutex_unlock(&s->st_lock);
	struct policy *p = decide_policy_ref(st->pol);
	state_unref(st);
	return p;
}

/* The hash of the policy in force (64 hex digits), "" when none is loaded. */
static void policy_hash_in_force(proxy_server *s, char out[POLICY_HASH_HEX])
{
	struct policy *p = proxy_policy_ref(s);

	snprintf(out, POLICY_HASH_HEX, "%s", p ? policy_hash_hex(p) : "");
	policy_unref(p);
}

/* Connections a worker accepts from its listeners' queues as its drain begins, at most. */
#define DRAIN_ACCEPT_MAX 1024

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_DRAIN_HOLD_MS=N holds a
 * worker N ms between seeing the SIGTERM and draining (its listeners still open, not read), so
 * that a request can reach an idle keep-alive connection, or a new connection wait in a
 * listener's queue, just as the drain begins, which real timing gives only by chance
 * (tests/integration/proxy_drain.sh). */
static void test_hook_drain_hold(const worker *w)
{
	const char *v = getenv("CUSTOS_TEST_DRAIN_HOLD_MS");
	if (v == NULL)
		return;
	long ms = strtol(v, NULL, 10);
	log_warn("worker %u: test hook: drain held %ld ms", w->id, ms);
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000 };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
	log_warn("worker %u: test hook: drain hold over", w->id);
}
#endif

static void *worker_main(void *arg)
{
	worker *w = arg;
	proxy_server *s = w->srv;
	char name[16];

	snprintf(name, sizeof(name), "custos-w%u", w->id);
	proc_name_self(name);
	log_debug("worker %u: event loop running (thread %s)", w->id, name);
	for (;;) {
		int wait_ms = 500;
		if (w->draining) { /* the deadline is kept to the millisecond, not the 500 */
			uint64_t now = tm_mono_ns();
			uint64_t left = w->drain_deadline > now ? w->drain_deadline - now : 0;
			if (left / 1000000 + 1 < (uint64_t)wait_ms)
				wait_ms = (int)(left / 1000000) + 1;
		}
		if (ev_run_once(&w->loop, wait_ms) != CUSTOS_OK) {
			log_error("worker %u: %s", w->id, err_msg());
			break;
		}
		emit_flush(s->audit, w->audit_batch);
		if (atomic_load(&s->stopping) && !w->draining) {
			w->drain_deadline = tm_mono_ns() + s->grace_ns;
#ifdef CUSTOS_TEST_HOOKS
			test_hook_drain_hold(w);
#endif
			w->draining = true; /* what is accepted now drains at once (conn_accept) */
			for (size_t j = 0; j < s->nls; j++) {
				if (w->lfd[j] == -1)
					continue;
				/* Connections the kernel completed that no one accepted yet would be
				 * reset by the close, with a request they may have sent already:
				 * taken now and drained with the others (bounded). */
				for (int n = 0; n < DRAIN_ACCEPT_MAX / PROXY_ACCEPT_BATCH &&
				                accept_on(w, j, true);
				     n++)
					;
				ev_del(&w->loop, &w->lio[j]);
				close(w->lfd[j]);
				w->lfd[j] = -1;
			}
			atomic_fetch_add(&s->workers_draining, 1);
			upool_free_all(w);
			conn_drain_all(w);
		}
		if (w->draining && (w->nconns == 0 || tm_mono_ns() >= w->drain_deadline))
			break;
	}
	if (w->nconns)
		log_warn("worker %u: %zu connection(s) still busy at the shutdown deadline", w->id,
		         w->nconns);
	conn_close_all(w);
	upool_free_all(w);
	proxy_ignore(ev_run_once(&w->loop, 0)); /* frees what was deferred */
	emit_flush(s->audit, w->audit_batch);
	atomic_fetch_add(&s->workers_done, 1);
	return NULL;
}

static volatile sig_atomic_t stop_flag;

/* SIGTERM or SIGINT when one is pending (taken off), else 0. sigtimedwait hands pending
 * signals out lowest number first, so SIGHUP (1) and SIGUSR1 (10) always come before SIGTERM
 * (15): without this look, SIGHUPs sent faster than a reload takes would hold the shutdown
 * off for as long as they come. */
static int stop_signal_take(void)
{
	static const int stops[] = { SIGTERM, SIGINT };
	const struct timespec now = { 0, 0 };
	sigset_t pend;

	if (sigpending(&pend) == -1)
		return 0;
	for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
		if (sigismember(&pend, stops[i]) == 1) {
			sigset_t one;
			sigemptyset(&one);
			sigaddset(&one, stops[i]);
			(void)sigtimedwait(&one, NULL, &now);
			return stops[i];
		}
	}
	return 0;
}

void proxy_request_stop(proxy_server *s)
{
	(void)s;
	stop_flag = 1;
}

bool proxy_stopping(proxy_server *s)
{
	return atomic_load(&s->stopping);
}

/* sd_notify with a STATUS= line describing what is served (no-op without systemd). */
static void notify_status(const proxy_server *s, const char *state)
{
	char msg[256];

	if (strchr(state, '\n') != NULL) /* caller wrote its own STATUS */
		snprintf(msg, sizeof(msg), "%s", state);
	else
		snprintf(msg, sizeof(msg),
		         "%s\nSTATUS=serving %zu listener(s) with %u worker(s), "
		         "generation %llu",
		         state, s->nls, s->nworkers, (unsigned long long)atomic_load(&s->gen));
	if (notify_send(msg) != CUSTOS_OK)
		log_warn("proxy: notify: %s", err_msg());
}

void proxy_set_audit(proxy_server *s, struct audit_writer *audit, bool batch, bool fail_open)
{
	s->audit = audit;
	s->audit_defer = batch;
	s->audit_fail_open = fail_open;
	for (unsigned i = 0; i < s->nworkers; i++)
		if (s->audit && s->audit_defer && s->workers[i].audit_batch == NULL)
			s->workers[i].audit_batch = emit_batch_new();
}

/* While the workers drain, the signals are still taken, not left pending: SIGUSR1 reopens the
 * log (a long drain may meet a rotation), a SIGHUP is refused, logged and audited as a
 * refused reload (the first one: a burst of them writes one event and a count), a second
 * SIGTERM or SIGINT is logged and changes nothing (the drain keeps its deadline). */
static void drain_wait(proxy_server *s, const sigset_t *set, unsigned started)
{
	static const char why[] =
	        "reload: custos is stopping (draining after a SIGTERM or SIGINT): "
	        "no reload is applied during the drain";
	unsigned hups = 0, stops = 0;
	bool unix_closed = false;

	while (atomic_load(&s->workers_done) < started) {
		if (!unix_closed && atomic_load(&s->workers_draining) >= started) {
			/* A Unix-socket listener is one socket that each worker holds a duplicate
			 * of: closing those left it listening, so that a client connecting during
			 * the drain was queued, never answered, and reset at the exit. Once every
			 * worker has taken its last connections from it, it is closed here (a
			 * connect is then refused) and its path removed. */
			unix_closed = true;
			for (size_t j = 0; j < s->nls; j++) {
				if (s->ls[j].shared_fd == -1)
					continue;
				close(s->ls[j].shared_fd);
				s->ls[j].shared_fd = -1;
				(void)unlink(((struct sockaddr_un *)&s->ls[j].ss)->sun_path);
			}
		}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGUSR1) {
			if (log_reopen() != CUSTOS_OK)
				log_error("proxy: SIGUSR1: %s", err_msg());
			else
				log_info("proxy: SIGUSR1: log file reopened");
		} else if (sig == SIGHUP && hups++ == 0) {
			char hash[POLICY_HASH_HEX];
			policy_hash_in_force(s, hash);
			metrics_inc(METRICS_POLICY_RELOAD_FAILED);
			log_error("proxy: reload failed, the previous configuration stays in "
			          "force: %s",
			          why);
			emit_policy_reload(s->audit,
			                   &(emit_reload){ .trigger = "sighup",
			                                   .applied = false,
			                                   .reason = why,
			                                   .old_hash = hash,
			                                   .new_hash = hash,
			                                   .generation = atomic_load(&s->gen) });
		} else if ((sig == SIGTERM || sig == SIGINT) && stops++ == 0) {
			log_info(
			        "proxy: %s again while draining: the drain goes on to its deadline",
			        sig == SIGINT ? "SIGINT" : "SIGTERM");
		}
	}
	if (hups > 1)
		log_info("proxy: %u more SIGHUP(s) during the drain not acted on", hups - 1);
}

custos_err proxy_run(proxy_server *s, proxy_reload_fn reload, void *arg)
{
	sigset_t set, old;
	custos_err e = CUSTOS_OK;
	unsigned started = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, &old); /* workers inherit the mask */
	stop_flag = 0;
	for (unsigned i = 0; i < s->nworkers; i++) {
		int r = pthread_create(&s->workers[i].th, NULL, worker_main, &s->workers[i]);
		if (r != 0) {
			errno = r;
			e = err_sys("pthread_create");
			atomic_store(&s->stopping, true);
			break;
		}
		started++;
	}
	/* Under systemd (Type=notify): ready once the workers run; `custos up` has started the
	 * audit writer, loaded the policy and started the sandboxes before calling us. */
	uint64_t wd_ns = notify_watchdog_usec() * 1000 / 2, wd_last = tm_mono_ns();
	if (e == CUSTOS_OK) {
		log_info("proxy: %u worker(s) serving %zu listener(s)", s->nworkers, s->nls);
		notify_status(s, "READY=1");
	}
	while (e == CUSTOS_OK && !stop_flag) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		int sig = sigtimedwait(&set, NULL, &ts);
		if (wd_ns > 0 && tm_mono_ns() - wd_last >= wd_ns) {
			/* The watchdog proves this loop turns; a wedged loop gets restarted. */
			if (notify_send("WATCHDOG=1") != CUSTOS_OK)
				log_warn("proxy: watchdog: %s", err_msg());
			wd_last = tm_mono_ns();
		}
		if (sig == -1)
			continue; /* timeout or EINTR: look at stop_flag */
		if (sig != SIGTERM && sig != SIGINT) {
			int stop = stop_signal_take();
			if (stop != 0) {
				/* The shutdown goes first: a reload now would only delay it. */
				log_info("proxy: %s not acted on: %s is pending, custos stops",
				         sig == SIGHUP ? "SIGHUP" : "SIGUSR1",
				         stop == SIGINT ? "SIGINT" : "SIGTERM");
				sig = stop;
			}
		}
		if (sig == SIGUSR1) {
			if (log_reopen() != CUSTOS_OK)
				log_error("proxy: SIGUSR1: %s", err_msg());
			else
				log_info("proxy: SIGUSR1: log file reopened");
			continue;
		}
		if (sig == SIGHUP) {
			proxy_options o = { 0 };
			char old_hash[POLICY_HASH_HEX], new_hash[POLICY_HASH_HEX];
			if (reload == NULL) {
				log_warn("proxy: SIGHUP ignored: no reload source");
				continue;
			}
			notify_status(s, "RELOADING=1");
			custos_err re = reload(arg, &o);
			void (*after)(void *, bool) = o.reloaded;
			if (re == CUSTOS_OK)
				re = reload_swap(s, &o, old_hash);
			else
				proxy_options_free(&o);
			/* Both hashes are this reload's: read while it still holds the reload lock
			 * (reload to after), so that another reload (the admin API's) that ran
			 * before it or runs right after it does not show in its event. */
			policy_hash_in_force(s, new_hash);
			uint64_t generation = atomic_load(&s->gen);
			if (re != CUSTOS_OK)
				snprintf(old_hash, sizeof(old_hash), "%s", new_hash);
			/* The reason before after(), whose work may set another error message. */
			char reason[1024];
			snprintf(reason, sizeof(reason), "%s", re == CUSTOS_OK ? "" : err_msg());
			if (after)
				after(arg, re == CUSTOS_OK);
			metrics_inc(re == CUSTOS_OK ? METRICS_POLICY_RELOAD_OK
			                            : METRICS_POLICY_RELOAD_FAILED);
			if (re == CUSTOS_OK)
				log_info("proxy: reloaded (generation %llu)",
				         (unsigned long long)generation);
			else
				log_error("proxy: reload failed, the previous configuration stays "
				          "in force: %s",
				          reason);
			emit_policy_reload(s->audit, &(emit_reload){ .trigger = "sighup",
			                                             .applied = re == CUSTOS_OK,
			                                             .reason = reason,
			                                             .old_hash = old_hash,
			                                             .new_hash = new_hash,
			                                             .generation = generation });
			notify_status(s, re == CUSTOS_OK ? "READY=1"
			                                 : "READY=1\nSTATUS=reload failed");
			continue;
		}
		log_info("proxy: %s: draining (up to %llu ms)",
		         sig == SIGINT ? "SIGINT" : "SIGTERM",
		         (unsigned long long)(s->grace_ns / 1000000));
		break;
	}
	if (notify_send("STOPPING=1\nSTATUS=draining") != CUSTOS_OK)
		log_warn("proxy: notify: %s", err_msg());
	atomic_store(&s->stopping, true);
	for (unsigned i = 0; i < started; i++) {
		uint64_t one = 1;
		(void)!write(s->workers[i].wake_fd, &one, sizeof(one));
	}
	drain_wait(s, &set, started);
	for (unsigned i = 0; i < started; i++)
		pthread_join(s->workers[i].th, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	log_info("proxy: stopped");
	return e;
}

void proxy_free(proxy_server *s)
{
	if (s == NULL)
		return;
	for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
		worker *w = &s->workers[i];
		for (size_t j = 0; j < PROXY_MAX_LISTENERS; j++)
			if (w->lfd[j] != -1)
				close(w->lfd[j]);
		if (w->wake_fd != -1)
			close(w->wake_fd);
		if (w->loop.epfd != -1)
			ev_loop_free(&w->loop);
		state_unref(w->st);
		emit_batch_free(w->audit_batch);
		conn_buf_cache_free(w);
	}
	for (size_t j = 0; j < s->nls; j++) {
		if (s->ls[j].shared_fd != -1) {
			close(s->ls[j].shared_fd);
			(void)unlink(((struct sockaddr_un *)&s->ls[j].ss)->sun_path);
		}
	}
	free(s->workers);
	state_unref(s->st);
	limiter_free(s->lim);
	pthread_mutex_destroy(&s->st_lock);
	free(s);
}
