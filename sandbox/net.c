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

static int send_fd(int sock, int fd, int err)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	int32_t e = err;
	struct iovec iov = { .iov_base = &e, .iov_len = sizeof(e) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(cbuf, 0, sizeof(cbuf));
	if (fd >= 0) {
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	return n == -1 ? -1 : 0;
}

/* Receives one int32 and an optional fd. Returns 0, or -1 (EOF/error). */
int sb_recv_fd(int sock, int32_t *val, int *fd);
int sb_recv_fd(int sock, int32_t *val, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = val, .iov_len = sizeof(*val) };
	struct msghdr mh = { .msg_iov = &iov,
		             .msg_iovlen = 1,
		             .msg_control = cbuf,
		             .msg_controllen = sizeof(cbuf) };
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(*val))
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return 0;
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
		int32_t req[2];
		ssize_t n = read(sock, req, sizeof(req));
		if (n == -1 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(req))
			_exit(0);
		int fd = socket(req[0], req[1] | SOCK_CLOEXEC, 0);
		if (send_fd(sock, fd, fd == -1 ? errno : 0) == -1)
			_exit(0);
		if (fd != -1)
			close(fd);
	}
}

custos_err sb_sockfactory_start(sb_sockfactory *f, pid_t sandbox_pid)
{
	char path[64];
	int sp[2], userns = -1, netns;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)sandbox_pid);
	netns = open(path, O_RDONLY | O_CLOEXEC);
	if (netns == -1)
		return err_sys("sandbox: open %s", path);
	if (geteuid() != 0) {
		snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)sandbox_pid);
		userns = open(path, O_RDONLY | O_CLOEXEC);
		if (userns == -1) {
			custos_err e = err_sys("sandbox: open %s", path);
			close(netns);
			return e;
		}
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1) {
		custos_err e = err_sys("sandbox: socketpair");
		close(netns);
		if (userns >= 0)
			close(userns);
		return e;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(sp[0]);
		factory_main(sp[1], userns, netns);
	}
	int saved = errno;
	close(sp[1]);
	close(netns);
	if (userns >= 0)
		close(userns);
	if (pid == -1) {
		close(sp[0]);
		errno = saved;
		return err_sys("sandbox: fork of the socket factory");
	}
	f->pid = pid;
	f->fd = sp[0];
	return CUSTOS_OK;
}

custos_err sb_sockfactory_socket(sb_sockfactory *f, int domain, int type, int *out)
{
	int32_t req[2] = { domain, type }, err = 0;
	int fd;

	ENSURE(f->fd >= 0, CUSTOS_ERR_AGAIN, "sandbox: no instance running");
	ssize_t n;
	do
		n = send(f->fd, req, sizeof(req), MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(req))
		return err_sys("sandbox: socket factory request");
	if (sb_recv_fd(f->fd, &err, &fd) == -1) {
		int st;
		if (f->pid > 0 && waitpid(f->pid, &st, WNOHANG) == f->pid) {
			f->pid = -1;
			return err_set(CUSTOS_ERR_SYS,
			               "sandbox: socket factory could not join the namespace (%d)",
			               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		}
		return err_set(CUSTOS_ERR_CLOSED, "sandbox: socket factory went away");
	}
	if (err != 0 || fd < 0) {
		errno = err ? err : EIO;
		return err_sys("sandbox: socket inside the sandbox");
	}
	*out = fd;
	return CUSTOS_OK;
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
