/*
 * TLS for the admin TCP listener, with OpenSSL (libmicrohttpd's own TLS is GnuTLS, which custos
 * does not use): one thread accepts, makes each handshake non-blocking under a deadline, then
 * gives libmicrohttpd one end of a socketpair (MHD_add_connection, with the client's address)
 * and relays plaintext between it and the TLS connection. libmicrohttpd sees a connection only
 * once its handshake is done, so its slots and deadlines apply from there; the gate bounds what
 * comes before: handshakes in progress, each one's time, and connections in all.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin_tls.h"
#include "metrics.h"
#include "proxy_int.h"

#define GATE_BUF          16384 /* plaintext buffered per direction and connection */
#define GATE_POLL_MS      1000  /* longest sleep: deadlines are checked at least this often */
#define GATE_ACCEPT_BURST 16u   /* accepts per turn of the loop (accept_new) */

struct gconn {
	int fd; /* the client's TCP socket */
	int sp; /* our end of the socketpair to libmicrohttpd; -1 while the handshake runs */
	SSL *ssl;
	struct sockaddr_storage peer;
	socklen_t plen;
	uint64_t since;   /* accepted (CLOCK_MONOTONIC ns): the handshake's deadline and age */
	uint64_t last_io; /* last byte relayed */
	uint64_t out_io;  /* last byte of an answer taken: from libmicrohttpd, or by the client */
	short hs_wants;   /* POLLIN or POLLOUT: what the handshake waits for */
	short rd_wants;   /* POLLOUT when SSL_read wants the socket writable */
	short wr_wants;   /* POLLIN or POLLOUT when SSL_write could not go on */
	bool client_eof, mhd_eof;
	bool closing; /* the answer is out; the close_notify waits for the socket (POLLOUT) */
	size_t in_len, in_off;   /* decrypted, for libmicrohttpd */
	size_t out_len, out_off; /* from libmicrohttpd, for the client */
	unsigned char in[GATE_BUF], out[GATE_BUF];
};

struct admin_tls_gate {
	int lfd, efd;
	pthread_mutex_t ctx_lock; /* ctx is swapped by a reload (admin_tls_gate_set_ctx) */
	SSL_CTX *ctx;
	struct MHD_Daemon *d;
	uint64_t timeout_ns;
	unsigned max_hs, max_conns;
	admin_tls_events ev;
	struct gconn **c;
	size_t n;
	uint64_t accept_pause_until; /* after an accept error (EMFILE...): not polled till then */
	pthread_t th;
};

/* "tcp:ADDR" (as the admin API audits a TCP peer) and "ADDR:PORT" (as tls.reject does). */
static void peer_names(const struct gconn *c, char *who, size_t wsz, char *remote, size_t rsz)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (c->peer.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)&c->peer;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
	} else if (c->peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)&c->peer;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
	}
	if (who)
		snprintf(who, wsz, "tcp:%s", host);
	if (remote)
		snprintf(remote, rsz, c->peer.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
		         port);
}

static void gconn_close(struct admin_tls_gate *g, size_t i)
{
	struct gconn *c = g->c[i];

	SSL_free(c->ssl);
	close(c->fd);
	if (c->sp != -1)
		close(c->sp);
	free(c);
	g->c[i] = g->c[--g->n];
}

/* Why a handshake failed, in words for the trail. */
static void hs_reason(SSL *ssl, int err, char *why, size_t n)
{
	long vr = SSL_get_verify_result(ssl);
	unsigned long e = ERR_peek_error();

	if (vr != X509_V_OK) {
		snprintf(why, n, "client certificate: %s", X509_verify_cert_error_string(vr));
	} else if (e != 0) {
		const char *r = ERR_reason_error_string(e);
		snprintf(why, n, "%s", r ? r : "TLS error");
	} else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
		snprintf(why, n, "connection closed during the handshake");
	} else {
		snprintf(why, n, "TLS handshake failed");
	}
	ERR_clear_error();
}

/* A failed (or timed out) handshake: counted always, as on the proxy's listeners; reported
 * unless the peer sent nothing at all. */
static void hs_failed(struct admin_tls_gate *g, struct gconn *c, const char *why)
{
	char remote[INET6_ADDRSTRLEN + 8];
	BIO *rb = SSL_get_rbio(c->ssl);

	metrics_inc(METRICS_ADMIN_TLS_FAILED);
	peer_names(c, NULL, 0, remote, sizeof(remote));
	if (rb == NULL || BIO_number_read(rb) == 0) {
		log_debug("admin: tls: %s sent nothing (%s)", remote, why);
		return;
	}
	log_info("admin: tls: handshake with %s failed: %s", remote, why);
	if (g->ev.rejected)
		g->ev.rejected(g->ev.arg, remote, why);
}

/* The handshake is done: libmicrohttpd gets the other end of a socketpair, with the client's
 * address (what its audit and peer checks see). false: the connection is to be closed. */
static bool hand_over(struct admin_tls_gate *g, struct gconn *c, uint64_t now)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1) {
		log_error("admin: tls: socketpair: %s", strerror(errno));
		return false;
	}
	/* libmicrohttpd owns sv[1] from here, and closes it when it refuses it */
	if (MHD_add_connection(g->d, sv[1], (const struct sockaddr *)&c->peer, c->plen) !=
	    MHD_YES) {
		log_warn("admin: tls: libmicrohttpd did not take a connection: %s",
		         strerror(errno));
		close(sv[0]);
		return false;
	}
	c->sp = sv[0];
	c->last_io = c->out_io = now;
	return true;
}

/* One step of a handshake: 1 done (handed over), 0 waits, -1 to be closed. */
static int hs_step(struct admin_tls_gate *g, struct gconn *c, uint64_t now)
{
	char why[256];

	ERR_clear_error();
	int r = SSL_accept(c->ssl);
	if (r == 1) {
		metrics_inc(METRICS_ADMIN_TLS_OK);
		return hand_over(g, c, now) ? 1 : -1;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->hs_wants = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		return 0;
	}
	hs_reason(c->ssl, e, why, sizeof(why));
	hs_failed(g, c, why);
	return -1;
}

static bool would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* libmicrohttpd is done and its answer is out: sends the close_notify, which tells the
 * client the answer ends here (and was not cut). true while it waits for room in the socket
 * (c->closing: polled for POLLOUT under the answer's deadline), false once sent or failed. */
static bool close_notify_waits(struct gconn *c)
{
	ERR_clear_error();
	int r = SSL_shutdown(c->ssl); /* 0: sent (the client's is not waited for), 1: both */
	c->closing = r < 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE;
	ERR_clear_error();
	return c->closing;
}

/* Moves what it can both ways without blocking; false: the connection is over. */
static bool relay(struct gconn *c, uint64_t now)
{
	bool progress;

	if (c->closing)
		return close_notify_waits(c);
	do {
		progress = false;
		/* client -> libmicrohttpd */
		if (!c->client_eof && c->in_off == c->in_len) {
			c->in_off = c->in_len = 0;
			ERR_clear_error();
			int n = SSL_read(c->ssl, c->in, sizeof(c->in));
			c->rd_wants = 0;
			if (n > 0) {
				c->in_len = (size_t)n;
				progress = true;
			} else {
				int e = SSL_get_error(c->ssl, n);
				if (e == SSL_ERROR_WANT_WRITE) {
					c->rd_wants = POLLOUT;
				} else if (e != SSL_ERROR_WANT_READ) {
					/* close_notify, EOF or an error: no more requests; the
					 * answer in progress may still go out */
					ERR_clear_error();
					c->client_eof = true;
					if (shutdown(c->sp, SHUT_WR) == -1)
						return false;
					progress = true;
				}
			}
		}
		if (c->in_off < c->in_len) {
			ssize_t w =
			        send(c->sp, c->in + c->in_off, c->in_len - c->in_off, MSG_NOSIGNAL);
			if (w > 0) {
				c->in_off += (size_t)w;
				progress = true;
			} else if (w == -1 && !would_block()) {
				return false;
			}
		}
		/* libmicrohttpd -> client */
		if (!c->mhd_eof && c->out_off == c->out_len) {
			c->out_off = c->out_len = 0;
			ssize_t r = recv(c->sp, c->out, sizeof(c->out), 0);
			if (r > 0) {
				c->out_len = (size_t)r;
				c->out_io = now;
				progress = true;
			} else if (r == 0) {
				c->mhd_eof = true;
				progress = true;
			} else if (!would_block()) {
				return false;
			}
		}
		if (c->out_off < c->out_len) {
			ERR_clear_error();
			int n = SSL_write(c->ssl, c->out + c->out_off,
			                  (int)(c->out_len - c->out_off));
			c->wr_wants = 0;
			if (n > 0) {
				c->out_off += (size_t)n;
				c->out_io = now;
				progress = true;
			} else {
				int e = SSL_get_error(c->ssl, n);
				if (e == SSL_ERROR_WANT_WRITE)
					c->wr_wants = POLLOUT;
				else if (e == SSL_ERROR_WANT_READ)
					c->wr_wants = POLLIN;
				else
					return false;
			}
		}
		if (progress)
			c->last_io = now;
	} while (progress);
	if (c->mhd_eof && c->out_off == c->out_len)
		return close_notify_waits(c);
	return true;
}

/* Whether the server has answered c's ClientHello: a whole one came in. */
static bool hello_answered(const struct gconn *c)
{
	BIO *wb = SSL_get_wbio(c->ssl);
	return wb != NULL && BIO_number_written(wb) > 0;
}

/* The connection to shed among those still in their handshake; SIZE_MAX: none. The oldest of
 * those that have not sent a whole ClientHello yet, else the oldest of the rest: a real client
 * sends its hello as it connects and needs a round trip or two more, while a flood that holds
 * connections with partial hellos sheds only itself, whatever its rate of reconnecting. */
static size_t oldest_handshake(const struct admin_tls_gate *g)
{
	size_t at = SIZE_MAX;
	bool at_answered = true;

	for (size_t i = 0; i < g->n; i++) {
		const struct gconn *c = g->c[i];
		if (c->sp != -1)
			continue;
		bool answered = hello_answered(c);
		if (at == SIZE_MAX || (!answered && at_answered) ||
		    (answered == at_answered && c->since < g->c[at]->since)) {
			at = i;
			at_answered = answered;
		}
	}
	return at;
}

static void shed(struct admin_tls_gate *g, size_t i)
{
	char who[48];

	metrics_inc(METRICS_ADMIN_TLS_FAILED); /* its handshake will not complete */
	peer_names(g->c[i], who, sizeof(who), NULL, 0);
	log_info("admin: tls: slots full: %s closed during its handshake", who);
	if (g->ev.shed)
		g->ev.shed(g->ev.arg, who);
	gconn_close(g, i);
}

static void accept_new(struct admin_tls_gate *g, uint64_t now)
{
	/* At most GATE_ACCEPT_BURST accepts a turn: between bursts every handshake is stepped,
	 * so a client whose ClientHello arrived is answered (and ranks after the flood for
	 * shedding) before a flood reconnecting as fast as it is cut can age it to the front. */
	for (unsigned burst = 0; burst < GATE_ACCEPT_BURST; burst++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd =
		        accept4(g->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) {
				log_warn("admin: tls: accept: %s", strerror(errno));
				g->accept_pause_until = now + 100 * 1000000ull;
			}
			return;
		}
		/* Slots: a new connection sheds the one that has waited longest in its
		 * handshake (a real client finishes its own at once, a flood only sheds itself),
		 * and is refused only when every connection is past its handshake. */
		size_t nhs = 0;
		for (size_t i = 0; i < g->n; i++)
			nhs += g->c[i]->sp == -1;
		if (nhs >= g->max_hs || g->n >= g->max_conns) {
			size_t old = oldest_handshake(g);
			if (old != SIZE_MAX) {
				shed(g, old);
			} else {
				struct gconn tmp = { .peer = ss, .plen = len };
				char who[48];
				peer_names(&tmp, who, sizeof(who), NULL, 0);
				log_info("admin: tls: connections full: %s refused", who);
				metrics_inc(METRICS_ADMIN_TLS_FAILED);
				if (g->ev.shed)
					g->ev.shed(g->ev.arg, who);
				close(fd);
				continue;
			}
		}
		struct gconn *c = xcalloc(1, sizeof(*c));
		c->fd = fd;
		c->sp = -1;
		c->peer = ss;
		c->plen = len;
		c->since = c->last_io = now;
		c->hs_wants = POLLIN;
		pthread_mutex_lock(&g->ctx_lock);
		c->ssl = SSL_new(g->ctx); /* holds its own reference to the context */
		pthread_mutex_unlock(&g->ctx_lock);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
			log_error("admin: tls: cannot set up a TLS connection");
			metrics_inc(METRICS_ADMIN_TLS_FAILED);
			ERR_clear_error();
			SSL_free(c->ssl);
			close(fd);
			free(c);
			continue;
		}
		SSL_set_accept_state(c->ssl);
		g->c[g->n++] = c;
		/* A client sends its hello as it connects: answer it now if it is there. */
		if (hs_step(g, c, now) < 0)
			gconn_close(g, g->n - 1);
	}
}

/* When c is to be closed for want of progress: a handshake from its start; an answer that
 * waits for the client (bytes of it in our buffer, or libmicrohttpd done and the rest or the
 * close_notify still to go) from the last byte of it the client took. A client that stops
 * reading holds our buffer, and the socketpair behind it is then not read: libmicrohttpd's
 * closing its end would not be seen, so the wait is bounded here. Otherwise libmicrohttpd's
 * own deadlines apply (a request being read, an idle connection; an answer being made, a
 * reload say, has none), and its closing the socketpair ends the relay. */
static uint64_t deadline(const struct admin_tls_gate *g, const struct gconn *c)
{
	if (c->sp == -1)
		return c->since + g->timeout_ns;
	if (c->mhd_eof || c->out_off < c->out_len)
		return c->out_io + g->timeout_ns;
	return UINT64_MAX;
}

static void *gate_main(void *arg)
{
	struct admin_tls_gate *g = arg;
	struct pollfd *pfd = xcalloc(2 + 2 * (size_t)g->max_conns, sizeof(*pfd));

	proc_name_self("custos-admintls");
	for (;;) {
		uint64_t now = tm_mono_ns();
		uint64_t wake = now + GATE_POLL_MS * 1000000ull;
		size_t k = 0;

		pfd[k++] = (struct pollfd){ .fd = g->efd, .events = POLLIN };
		bool listening = now >= g->accept_pause_until;
		pfd[k++] = (struct pollfd){ .fd = listening ? g->lfd : -1, .events = POLLIN };
		if (!listening && g->accept_pause_until < wake)
			wake = g->accept_pause_until;
		for (size_t i = 0; i < g->n; i++) {
			struct gconn *c = g->c[i];
			short ce = 0, se = 0;
			if (c->sp == -1) {
				ce = c->hs_wants;
			} else if (c->closing) {
				ce = POLLOUT;
			} else {
				if (!c->client_eof && c->in_off == c->in_len)
					ce |= POLLIN;
				ce |= c->rd_wants;
				if (c->out_off < c->out_len)
					ce |= c->wr_wants;
				if (c->in_off < c->in_len)
					se |= POLLOUT;
				if (!c->mhd_eof && c->out_off == c->out_len)
					se |= POLLIN;
			}
			pfd[k++] = (struct pollfd){ .fd = ce ? c->fd : -1, .events = ce };
			pfd[k++] = (struct pollfd){ .fd = se ? c->sp : -1, .events = se };
			if (deadline(g, c) < wake)
				wake = deadline(g, c);
		}
		int ms = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
		if (poll(pfd, k, ms) == -1 && errno != EINTR) {
			log_error("admin: tls: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break; /* admin_tls_gate_stop */
		now = tm_mono_ns();
		/* the connections polled above are g->c[0..npolled) in pfd[2..]; one closed
		 * moves the last into its place, which is then stepped without its revents */
		size_t npolled = g->n;
		for (size_t i = 0; i < g->n;) {
			struct gconn *c = g->c[i];
			bool gone = false;
			if (i < npolled && c->sp != -1 &&
			    (pfd[2 + 2 * i].revents & (POLLERR | POLLHUP)))
				gone = true; /* the client reset the connection */
			else if (c->sp == -1)
				gone = hs_step(g, c, now) < 0;
			if (!gone && c->sp != -1)
				gone = !relay(c, now);
			if (!gone && now >= deadline(g, c)) {
				if (c->sp == -1)
					hs_failed(g, c, "handshake not completed in time");
				else
					log_info("admin: tls: answer not taken within %llu s: "
					         "closed",
					         (unsigned long long)(g->timeout_ns /
					                              1000000000ull));
				gone = true;
			}
			if (gone) {
				gconn_close(g, i);
				if (npolled > g->n)
					npolled = g->n; /* the moved one's revents are stale */
				continue;
			}
			i++;
		}
		if (pfd[1].revents & POLLIN)
			accept_new(g, now);
	}
	while (g->n)
		gconn_close(g, g->n - 1);
	free(pfd);
	return NULL;
}

custos_err admin_tls_gate_start(int listen_fd, SSL_CTX *ctx, struct MHD_Daemon *d,
                                unsigned timeout_s, unsigned max_handshakes, unsigned max_conns,
                                const admin_tls_events *ev, struct admin_tls_gate **out)
{
	*out = NULL;
	ENSURE(max_handshakes >= 1 && max_conns >= max_handshakes, CUSTOS_ERR_INVAL,
	       "admin: tls: bad connection limits");
	struct admin_tls_gate *g = xcalloc(1, sizeof(*g));
	g->lfd = listen_fd;
	g->d = d;
	g->timeout_ns = (uint64_t)timeout_s * 1000000000ull;
	g->max_hs = max_handshakes;
	g->max_conns = max_conns;
	g->ev = *ev;
	g->c = xcalloc(max_conns, sizeof(*g->c));
	g->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->efd == -1) {
		custos_err e = err_sys("admin: tls: eventfd");
		free(g->c);
		free(g);
		return e;
	}
	SSL_CTX_up_ref(ctx);
	g->ctx = ctx;
	pthread_mutex_init(&g->ctx_lock, NULL);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&g->th, NULL, gate_main, g);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		errno = r;
		custos_err e = err_sys("admin: tls: thread");
		close(g->efd);
		SSL_CTX_free(g->ctx);
		pthread_mutex_destroy(&g->ctx_lock);
		free(g->c);
		free(g);
		return e;
	}
	*out = g;
	return CUSTOS_OK;
}

void admin_tls_gate_set_ctx(struct admin_tls_gate *g, SSL_CTX *ctx)
{
	SSL_CTX_up_ref(ctx);
	pthread_mutex_lock(&g->ctx_lock);
	SSL_CTX *old = g->ctx;
	g->ctx = ctx;
	pthread_mutex_unlock(&g->ctx_lock);
	SSL_CTX_free(old);
}

void admin_tls_gate_stop(struct admin_tls_gate *g)
{
	uint64_t one = 1;

	if (g == NULL)
		return;
	while (write(g->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
	pthread_join(g->th, NULL);
	close(g->efd);
	SSL_CTX_free(g->ctx);
	pthread_mutex_destroy(&g->ctx_lock);
	free(g->c);
	free(g);
}
