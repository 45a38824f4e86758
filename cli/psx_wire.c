/*
 * The wire of `custos up`'s privilege separation (cli/privsep.h): one psx_hdr, its payload and
 * at most PSX_MAX_FDS fds per SOCK_SEQPACKET message, and the checks the supervisor makes on
 * every message of the proxy before acting on it (docs/SANDBOX.md, "Privilege separation").
 * Apart from the rest of the proxy's side so that unit tests and fuzz_psx link it alone.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "privsep.h"

/* A control buffer aligned for struct cmsghdr (a plain char array need not be). */
typedef union {
	char buf[CMSG_SPACE(sizeof(int) * PSX_MAX_FDS)];
	struct cmsghdr align;
} psx_cbuf;

custos_err psx_send(int sock, const psx_hdr *h, const void *payload, const int *fds, size_t nfds)
{
	psx_cbuf cbuf;
	struct iovec iov[2] = { { .iov_base = (void *)h, .iov_len = sizeof(*h) },
		                { .iov_base = (void *)payload, .iov_len = h->len } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = h->len ? 2 : 1 };

	ENSURE(h->len <= PSX_PAYLOAD_MAX && nfds <= PSX_MAX_FDS, CUSTOS_ERR_LIMIT,
	       "privsep: message too large");
	if (nfds) {
		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t n;
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) /* SO_SNDTIMEO passed */
			return err_set(CUSTOS_ERR_TIMEOUT,
			               "privsep: sendmsg: the peer has read nothing for too long");
		return err_sys("privsep: sendmsg");
	}
	return CUSTOS_OK;
}

void psx_msg_close(psx_msg *m)
{
	for (size_t i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nfds = 0;
}

int psx_recv(int sock, psx_msg *m)
{
	psx_cbuf cbuf;
	struct iovec iov[2] = { { .iov_base = &m->h, .iov_len = sizeof(m->h) },
		                { .iov_base = m->payload, .iov_len = sizeof(m->payload) } };
	struct msghdr mh = { .msg_iov = iov,
		             .msg_iovlen = 2,
		             .msg_control = cbuf.buf,
		             .msg_controllen = sizeof(cbuf.buf) };
	ssize_t n;
	bool odd_cmsg = false;

	m->nfds = 0;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	/* The fds first, whatever the rest: an empty message (which SOCK_SEQPACKET returns as 0,
	 * like EOF) or a malformed one may carry some too, and every one must be closed. */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0)) {
			odd_cmsg = true;
			continue;
		}
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (m->nfds < PSX_MAX_FDS)
				m->fds[m->nfds++] = fd;
			else
				close(fd);
		}
	}
	if (n == 0) {
		psx_msg_close(m);
		return 0;
	}
	if ((size_t)n < sizeof(m->h) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || odd_cmsg ||
	    m->h.len != (size_t)n - sizeof(m->h)) {
		psx_msg_close(m);
		errno = EPROTO;
		return -1;
	}
	return 1;
}

const char *psx_sup_check(const psx_msg *m, size_t n_slots)
{
	const psx_hdr *h = &m->h;
	bool slot = false;

	switch (h->type) {
	case PSX_WANT:
		if (h->arg == 0 || h->arg > PSX_POOL_MAX)
			return "WANT: arg is not a count of 1 to PSX_POOL_MAX sockets";
		slot = true;
		break;
	case PSX_RESTART:
		if (h->arg == 0 || h->arg > INT32_MAX)
			return "RESTART: arg is not a pid";
		slot = true;
		break;
	case PSX_IDLE:
	case PSX_FREED:
		if (h->arg != 0)
			return "IDLE/FREED: arg is not 0";
		slot = true;
		break;
	case PSX_COMMIT:
		if (h->arg > 1)
			return "COMMIT: arg is neither 0 nor 1";
		break;
	case PSX_RELOAD:
		if (h->arg != 0)
			return "arg is not 0";
		if (h->len != PSX_RELOAD_SHA256_LEN)
			return "RELOAD: the payload is not a SHA-256 in hex";
		for (size_t i = 0; i < PSX_RELOAD_SHA256_LEN; i++) {
			uint8_t c = m->payload[i];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
				return "RELOAD: the payload is not a SHA-256 in hex";
		}
		break;
	case PSX_DRAINED:
	case PSX_PROXY_UP:
	case PSX_SECCOMP:
		if (h->arg != 0)
			return "arg is not 0";
		break;
	default:
		return "unknown type";
	}
	if (slot && (h->model >= n_slots || h->model >= PSX_MAX_MODELS))
		return "no such sandbox slot";
	if (!slot && h->model != 0)
		return "model is not 0";
	if (h->gen != 0 && h->type != PSX_RELOAD && h->type != PSX_COMMIT)
		return "gen is not 0";
	if (h->len != 0 && h->type != PSX_RELOAD)
		return "a payload where none is allowed";
	if (m->nfds != (h->type == PSX_SECCOMP ? 1u : 0u))
		return h->type == PSX_SECCOMP ? "SECCOMP: not exactly one fd" : "an unexpected fd";
	return NULL;
}
