/*
 * Non-blocking socket I/O, plain or TLS, for edge-triggered epoll: readiness flags set by
 * events, cleared by EAGAIN; a TLS read that needs to write (and the reverse) waits for the
 * other direction's readiness.
 */
#include <errno.h>
#include <openssl/err.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_int.h"

#define SOCK_READ_CHUNK (16u * 1024u)

void sock_event(sock *s, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->rd_ready = true;
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
		ERR_clear_error();
		int r = SSL_read_ex(s->ssl, buf_tail(b), n, &got);
		if (r == 1) {
			s->rd_blocked = 0;
			buf_commit(b, got);
			return (ssize_t)got;
		}
		return ssl_result(s, r, &s->rd_blocked);
	}
	for (;;) {
		ssize_t r = read(s->fd, buf_tail(b), n);
		if (r > 0) {
			s->rd_blocked = 0;
			buf_commit(b, (size_t)r);
			/* A short read on a stream socket drained it: the next edge says when
			 * there is more, so no read is spent on EAGAIN. */
			if ((size_t)r < n)
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
			ERR_clear_error();
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
	int r = SSL_do_handshake(s->ssl);
	if (r == 1) {
		s->rd_blocked = s->wr_blocked = 0;
		return SOCK_OK;
	}
	ssize_t e = ssl_result(s, r, &blocked);
	if (e == SOCK_AGAIN) {
		s->rd_blocked = s->wr_blocked = blocked;
		return SOCK_AGAIN;
	}
	return SOCK_ERR;
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
