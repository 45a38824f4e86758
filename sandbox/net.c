/*
 * Network: the sandbox's namespace has loopback only (brought up by the child). custos makes
 * sockets inside it through a small factory process that joined the namespace: as root it
 * enters the netns directly; unprivileged it must join the sandbox's user namespace first (the
 * kernel refuses setns into a netns owned by a namespace we hold no capability in). Sockets are
 * passed back with SCM_RIGHTS. A socket keeps the namespace it was made in, so bind, listen and
 * connect then happen in custos as usual.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sb_int.h"

int sb_net_lo_up(void)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd == -1)
		return errno;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == -1)
		err = errno;
	else {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) == -1)
			err = errno;
	}
	close(fd);
	return err;
}

/* Sends an int32 (0 or an errno) and n fds (n may be 0). */
static int send_fds(int sock, const int *fds, size_t n, int err)
{
	char cbuf[CMSG_SPACE(sizeof(int) * SB_FACTORY_BATCH)];
	int32_t e = err;
	struct iovec iov = { .iov_base = &e, .iov_len = sizeof(e) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(cbuf, 0, sizeof(cbuf));
	if (n > 0) {
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	ssize_t r;
	do
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (r == -1 && errno == EINTR);
	return r == -1 ? -1 : 0;
}

/* Receives one int32 and up to max fds; *n gets how many. Returns 0, or -1 (EOF/error). */
static int recv_fds(int sock, int32_t *val, int *fds, size_t max, size_t *n)
{
	char cbuf[CMSG_SPACE(sizeof(int) * SB_FACTORY_BATCH)];
	struct iovec iov = { .iov_base = val, .iov_len = sizeof(*val) };
	struct msghdr mh = { .msg_iov = &iov,
		             .msg_iovlen = 1,
		             .msg_control = cbuf,
		             .msg_controllen = sizeof(cbuf) };
	ssize_t r;

	*n = 0;
	do
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (r == -1 && errno == EINTR);
	if (r != (ssize_t)sizeof(*val))
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*n < max)
				fds[(*n)++] = fd;
			else
				close(fd);
		}
	}
	return 0;
}

/* Receives one int32 and an optional fd. Returns 0, or -1 (EOF/error). */
int sb_recv_fd(int sock, int32_t *val, int *fd);
int sb_recv_fd(int sock, int32_t *val, int *fd)
{
	size_t n;
	*fd = -1;
	return recv_fds(sock, val, fd, 1, &n);
}

static __attribute__((noreturn)) void factory_main(int sock, int userns, int netns)
{
	/* Hold nothing of custos but what we need: a copied client socket would keep that
	 * connection open after custos closed it. */
	int keep[3] = { sock, userns, netns };
	sb_close_fds_except(keep, 3);
	/* Single-threaded (forked): setns into a user namespace is allowed here. */
	if (userns >= 0 && setns(userns, CLONE_NEWUSER) == -1)
		_exit(2);
	if (setns(netns, CLONE_NEWNET) == -1)
		_exit(3);
	for (;;) {
		int32_t req[3]; /* domain, type, how many (1..SB_FACTORY_BATCH) */
		int fds[SB_FACTORY_BATCH];
		size_t k = 0;
		int err = 0;
		ssize_t n = read(sock, req, sizeof(req));
		if (n == -1 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(req) || req[2] < 1 || req[2] > SB_FACTORY_BATCH)
			_exit(0);
		while (k < (size_t)req[2]) {
			int fd = socket(req[0], req[1] | SOCK_CLOEXEC, 0);
			if (fd == -1) {
				err = errno;
				break;
			}
			fds[k++] = fd;
		}
		if (send_fds(sock, fds, k, k ? 0 : err) == -1)
			_exit(0);
		for (size_t i = 0; i < k; i++)
			close(fds[i]);
	}
}

custos_err sb_sockfactory_start(sb_sockfactory *f, int userns, int netns)
{
	int sp[2];

	ENSURE(netns >= 0, CUSTOS_ERR_UNSUPPORTED, "sandbox: no network namespace to join");
	if (geteuid() == 0)
		userns = -1;
	else
		ENSURE(userns >= 0, CUSTOS_ERR_INTERNAL,
		       "sandbox: the user namespace was not kept");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1)
		return err_sys("sandbox: socketpair");
	pid_t pid = fork();
	if (pid == 0) {
		close(sp[0]);
		factory_main(sp[1], userns, netns);
	}
	int saved = errno;
	close(sp[1]);
	if (pid == -1) {
		close(sp[0]);
		errno = saved;
		return err_sys("sandbox: fork of the socket factory");
	}
	f->pid = pid;
	f->fd = sp[0];
	return CUSTOS_OK;
}

custos_err sb_sockfactory_sockets(sb_sockfactory *f, int domain, int type, int *out, size_t want,
                                  size_t *got)
{
	int32_t req[3] = { domain, type, (int32_t)want }, err = 0;

	*got = 0;
	ENSURE(want >= 1 && want <= SB_FACTORY_BATCH, CUSTOS_ERR_INVAL,
	       "sandbox: 1 to %d sockets per request", SB_FACTORY_BATCH);
	ENSURE(f->fd >= 0, CUSTOS_ERR_AGAIN, "sandbox: no instance running");
	ssize_t n;
	do
		n = send(f->fd, req, sizeof(req), MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(req))
		return err_sys("sandbox: socket factory request");
	if (recv_fds(f->fd, &err, out, want, got) == -1) {
		int st;
		if (f->pid > 0 && waitpid(f->pid, &st, WNOHANG) == f->pid) {
			f->pid = -1;
			return err_set(CUSTOS_ERR_SYS,
			               "sandbox: socket factory could not join the namespace (%d)",
			               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		}
		return err_set(CUSTOS_ERR_CLOSED, "sandbox: socket factory went away");
	}
	if (*got == 0) {
		errno = err ? err : EIO;
		return err_sys("sandbox: socket inside the sandbox");
	}
	return CUSTOS_OK;
}

custos_err sb_sockfactory_socket(sb_sockfactory *f, int domain, int type, int *out)
{
	size_t got;
	return sb_sockfactory_sockets(f, domain, type, out, 1, &got);
}

void sb_sockfactory_stop(sb_sockfactory *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->pid > 0) {
		int st;
		pid_t r;
		do
			r = waitpid(f->pid, &st, 0);
		while (r == -1 && errno == EINTR);
	}
	f->pid = -1;
}
