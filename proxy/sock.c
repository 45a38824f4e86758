/*
 * Non-blocking socket I/O, plain or TLS, for edge-triggered epoll: readiness flags set by
 * events, cleared by EAGAIN; a TLS read that needs to write (and the reverse) waits for the
 * other direction's readiness.
 */
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_int.h"
#include "tls.h"

#define SOCK_READ_CHUNK (16u * 1024u)

/* ---- a socket BIO on recv/send. OpenSSL's own calls read()/write(), which go through the
 * VFS layer (file position lock, rw_verify_area, the iterator) before reaching the socket;
 * recv/send enter the socket layer directly. Everything but read and write is OpenSSL's
 * socket BIO (fd handling, ctrl, creation). custos does not enable kernel TLS; with it, reads
 * would have to go through OpenSSL's record-aware socket read instead. */
static BIO_METHOD *sbio_meth;
static pthread_once_t sbio_once = PTHREAD_ONCE_INIT;
/* A recv in this thread's current SSL read returned less than asked: the socket was drained
 * (sock_read then clears rd_ready, as a short plain read does, so no recv is spent on
 * EAGAIN: data arriving later brings a new edge). */
static __thread bool sbio_short;

static int sbio_read(BIO *b, char *out, int outl)
{
	if (out == NULL || outl <= 0)
		return 0;
	errno = 0;
	ssize_t r;
	do
		r = recv((int)BIO_get_fd(b, NULL), out, (size_t)outl, 0);
	while (r == -1 && errno == EINTR);
	BIO_clear_retry_flags(b);
	if (r <= 0) {
		if (r == -1 && BIO_sock_should_retry(-1))
			BIO_set_retry_read(b);
		else if (r == 0)
			BIO_set_flags(b, BIO_FLAGS_IN_EOF);
		return r == 0 ? 0 : -1;
	}
	if (r < outl)
		sbio_short = true;
	return (int)r;
}

static int sbio_write(BIO *b, const char *in, int inl)
{
	if (in == NULL || inl <= 0)
		return 0;
	errno = 0;
	ssize_t r;
	do
		r = send((int)BIO_get_fd(b, NULL), in, (size_t)inl, MSG_NOSIGNAL);
	while (r == -1 && errno == EINTR);
	BIO_clear_retry_flags(b);
	if (r == -1) {
		if (BIO_sock_should_retry(-1))
			BIO_set_retry_write(b);
		return -1;
	}
	return (int)r;
}

static int sbio_puts(BIO *b, const char *str)
{
	return sbio_write(b, str, (int)strlen(str));
}

static void sbio_init(void)
{
	const BIO_METHOD *base = BIO_s_socket();
	BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "custos socket");

	if (m == NULL || BIO_meth_set_read(m, sbio_read) != 1 ||
	    BIO_meth_set_write(m, sbio_write) != 1 || BIO_meth_set_puts(m, sbio_puts) != 1 ||
	    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base)) != 1 ||
	    BIO_meth_set_create(m, BIO_meth_get_create(base)) != 1 ||
	    BIO_meth_set_destroy(m, BIO_meth_get_destroy(base)) != 1) {
		BIO_meth_free(m);
		m = NULL; /* SSL_set_fd's socket BIO instead */
	}
	sbio_meth = m;
}

bool sock_ssl_set_fd(SSL *ssl, int fd)
{
	pthread_once(&sbio_once, sbio_init);
	if (sbio_meth == NULL)
		return SSL_set_fd(ssl, fd) == 1;
	BIO *b = BIO_new(sbio_meth);
	if (b == NULL)
		return false;
	BIO_set_fd(b, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, b, b); /* ssl owns b */
	return true;
}

void sock_event(sock *s, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->rd_ready = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->hup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		s->wr_ready = true;
}

static bool ready_for(const sock *s, uint8_t blocked)
{
	switch (blocked) {
	case 'r':
		return s->rd_ready;
	case 'w':
		return s->wr_ready;
	default:
		return true;
	}
}

bool sock_can_read(const sock *s)
{
	if (s->ssl && SSL_has_pending(s->ssl) && s->rd_blocked != 'w')
		return true;
	return ready_for(s, s->rd_blocked ? s->rd_blocked : 'r');
}

bool sock_can_write(const sock *s)
{
	return ready_for(s, s->wr_blocked ? s->wr_blocked : 'w');
}

bool sock_bytes_waiting(const sock *s)
{
	char b;
	ssize_t r;

	if (s->ssl && SSL_has_pending(s->ssl))
		return true;
	do
		r = recv(s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	while (r == -1 && errno == EINTR);
	return r > 0;
}

/* SSL_get_error needs an empty error queue before each call. Clearing it walks all of its
 * slots; it is almost always empty already (ssl_result clears after errors), so look first. */
static void err_queue_clear(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* Maps an SSL error to AGAIN (recording what it waits for) or ERR/EOF. */
static ssize_t ssl_result(sock *s, int ret, uint8_t *blocked)
{
	int e = SSL_get_error(s->ssl, ret);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		*blocked = 'r';
		s->rd_ready = false;
		return SOCK_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		*blocked = 'w';
		s->wr_ready = false;
		return SOCK_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return SOCK_EOF;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (errno == EAGAIN) {
			*blocked = 'r';
			s->rd_ready = false;
			return SOCK_AGAIN;
		}
		return errno == 0 ? SOCK_EOF : SOCK_ERR; /* errno 0: unexpected EOF */
	default:
		if (e == SSL_ERROR_SSL) {
			int a = tls_err_peer_alert();
			if (a >= 0)
				s->peer_alert = a + 1;
		}
		ERR_clear_error();
		return SOCK_ERR;
	}
}

ssize_t sock_read(sock *s, buf *b, size_t max)
{
	size_t room = b->max - buf_used(b);
	size_t n = max < room ? max : room;

	if (n == 0)
		return SOCK_AGAIN; /* caller's buffer is full: backpressure */
	if (n > SOCK_READ_CHUNK)
		n = SOCK_READ_CHUNK;
	if (buf_reserve(b, n) != CUSTOS_OK)
		return SOCK_ERR;
	if (s->ssl) {
		size_t got = 0;
		err_queue_clear();
		sbio_short = false;
		int r = SSL_read_ex(s->ssl, buf_tail(b), n, &got);
		if (r == 1) {
			s->rd_blocked = 0;
			buf_commit(b, got);
			/* Drained by a short recv and nothing buffered in OpenSSL: the next edge
			 * says when there is more (only with our BIO, which reports it). */
			if (sbio_short && !SSL_has_pending(s->ssl) && !s->hup)
				s->rd_ready = false;
			return (ssize_t)got;
		}
		return ssl_result(s, r, &s->rd_blocked);
	}
	for (;;) {
		ssize_t r = recv(s->fd, buf_tail(b), n, 0);
		if (r > 0) {
			s->rd_blocked = 0;
			buf_commit(b, (size_t)r);
			/* A short read on a stream socket drained it: the next edge says when
			 * there is more, so no read is spent on EAGAIN. Not after the peer's
			 * FIN: its edge came with these bytes, and only a read finds the end
			 * (a head cut by the client would wait for its timeout). */
			if ((size_t)r < n && !s->hup)
				s->rd_ready = false;
			return r;
		}
		if (r == 0)
			return SOCK_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			s->rd_ready = false;
			s->rd_blocked = 'r';
			return SOCK_AGAIN;
		}
		return SOCK_ERR;
	}
}

ssize_t sock_write(sock *s, buf *b)
{
	size_t total = 0;

	while (buf_used(b) > 0) {
		if (s->ssl) {
			size_t put = 0;
			err_queue_clear();
			int r = SSL_write_ex(s->ssl, buf_ptr(b), buf_used(b), &put);
			if (r == 1) {
				s->wr_blocked = 0;
				buf_consume(b, put);
				total += put;
				continue;
			}
			ssize_t e = ssl_result(s, r, &s->wr_blocked);
			if (e == SOCK_AGAIN)
				return total ? (ssize_t)total : SOCK_AGAIN;
			return SOCK_ERR;
		}
		ssize_t r = send(s->fd, buf_ptr(b), buf_used(b), MSG_NOSIGNAL);
		if (r >= 0) {
			s->wr_blocked = 0;
			buf_consume(b, (size_t)r);
			total += (size_t)r;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			s->wr_ready = false;
			s->wr_blocked = 'w';
			return total ? (ssize_t)total : SOCK_AGAIN;
		}
		return SOCK_ERR;
	}
	return (ssize_t)total;
}

int sock_handshake(sock *s)
{
	uint8_t blocked = 0;

	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(s->ssl);
	if (r == 1) {
		s->rd_blocked = s->wr_blocked = 0;
		return SOCK_OK;
	}
	int saved_errno = errno;
	int se = SSL_get_error(s->ssl, r);
	if (se != SSL_ERROR_WANT_READ && se != SSL_ERROR_WANT_WRITE) {
		/* Kept before ssl_result clears the queue; only a failure pays for it. */
		s->hs_err = ERR_peek_last_error();
		s->hs_errno = se == SSL_ERROR_SYSCALL ? saved_errno : 0;
	}
	errno = saved_errno;
	ssize_t e = ssl_result(s, r, &blocked);
	if (e == SOCK_AGAIN) {
		s->hs_err = 0;
		s->hs_errno = 0;
		s->rd_blocked = s->wr_blocked = blocked;
		return SOCK_AGAIN;
	}
	return SOCK_ERR;
}

void sock_handshake_reason(const sock *s, char *out, size_t n)
{
	long v = s->ssl ? SSL_get_verify_result(s->ssl) : X509_V_OK;

	if (v != X509_V_OK) {
		snprintf(out, n, "client certificate: %s", X509_verify_cert_error_string(v));
	} else if (s->hs_err != 0) {
		const char *why = ERR_reason_error_string(s->hs_err);
		if (why != NULL)
			snprintf(out, n, "%s", why);
		else
			ERR_error_string_n(s->hs_err, out, n);
	} else if (s->hs_errno != 0) {
		snprintf(out, n, "%s", strerror(s->hs_errno));
	} else {
		snprintf(out, n, "the peer closed the connection during the handshake");
	}
}

uint64_t sock_bytes_read(const sock *s)
{
	BIO *b = s->ssl ? SSL_get_rbio(s->ssl) : NULL;
	return b ? BIO_number_read(b) : 0;
}

void sock_close(sock *s)
{
	if (s->ssl) {
		if (!s->closed_write)
			(void)SSL_shutdown(s->ssl); /* best effort close_notify */
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	if (s->fd != -1)
		close(s->fd);
	s->fd = -1;
}
