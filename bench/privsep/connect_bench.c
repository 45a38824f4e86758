/*
 * connect_bench: what one new upstream connection to a sandboxed model costs, the way
 * `custos up` made it before privilege separation and the way it makes it now, side by side
 * in one run against the same sandbox. The listener inside the sandbox's netns is the
 * bench's own (sandbox_listen_inside, accepted and closed by a thread), so no model server's
 * scheduling is measured.
 *   inline: sandbox_connect_inside per connection (a round trip to the sandbox's socket
 *           factory, then connect), as the single-process `up` did;
 *   pooled: unconnected sockets from sandbox_sockets_inside (16 per round trip to the
 *           factory), sent in batches of up to 16 over a
 *           SOCK_SEQPACKET socketpair with SCM_RIGHTS by a "supervisor" thread whenever the
 *           "proxy" side's pool falls below 8 (refill to 32), then connect: cli/privsep.c's
 *           scheme, with threads instead of processes (the same system calls).
 * Each connection is complete (POLLOUT, SO_ERROR 0) and closed. Prints per-connection
 * microseconds for each round. usage: connect_bench [CONNS] [ROUNDS]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "custos/sandbox.h"

#define PORT     18777
#define POOL_MAX 32
#define POOL_LOW 8
#define MSG_FDS  16

static sandbox *sb;
static int chan[2];

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void finish(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t l = sizeof(err);
	if (poll(&p, 1, 5000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == -1 ||
	    err != 0) {
		fprintf(stderr, "connect failed: %s\n", strerror(err ? err : errno));
		exit(1);
	}
	close(fd);
}

static void *supervisor(void *arg)
{
	(void)arg;
	for (;;) {
		uint32_t want;
		if (recv(chan[1], &want, sizeof(want), 0) != (ssize_t)sizeof(want))
			return NULL;
		while (want > 0) {
			int fds[MSG_FDS];
			size_t n = 0;
			unsigned g;
			if (sandbox_sockets_inside(sb, fds, want < MSG_FDS ? want : MSG_FDS, &n,
			                           &g) != CUSTOS_OK) {
				fprintf(stderr, "sockets_inside: %s\n", err_msg());
				exit(1);
			}
			want -= (uint32_t)n;
			char cbuf[CMSG_SPACE(sizeof(int) * MSG_FDS)];
			uint32_t hdr = (uint32_t)n;
			struct iovec iov = { &hdr, sizeof(hdr) };
			struct msghdr mh = { .msg_iov = &iov,
				             .msg_iovlen = 1,
				             .msg_control = cbuf,
				             .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
			memset(cbuf, 0, sizeof(cbuf));
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * n);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
			if (sendmsg(chan[1], &mh, 0) == -1)
				return NULL;
			for (size_t i = 0; i < n; i++)
				close(fds[i]);
		}
	}
}

static int pool[POOL_MAX];
static size_t npool;
static uint32_t pending;

static void receive(void)
{
	char cbuf[CMSG_SPACE(sizeof(int) * MSG_FDS)];
	uint32_t hdr;
	struct iovec iov = { &hdr, sizeof(hdr) };
	struct msghdr mh = { .msg_iov = &iov,
		             .msg_iovlen = 1,
		             .msg_control = cbuf,
		             .msg_controllen = sizeof(cbuf) };
	if (recvmsg(chan[0], &mh, MSG_CMSG_CLOEXEC) <= 0)
		exit(1);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	memcpy(pool + npool, CMSG_DATA(c), sizeof(int) * n);
	npool += n;
	pending -= (uint32_t)n;
}

static int take(void)
{
	if (npool < POOL_LOW && pending == 0) {
		uint32_t want = POOL_MAX - (uint32_t)npool;
		if (send(chan[0], &want, sizeof(want), 0) != (ssize_t)sizeof(want))
			exit(1);
		pending = want;
	}
	/* Take what arrived meanwhile without waiting; wait only on an empty pool. */
	while (pending > 0) {
		struct pollfd p = { .fd = chan[0], .events = POLLIN };
		if (poll(&p, 1, npool ? 0 : 5000) != 1)
			break;
		receive();
	}
	if (npool == 0) {
		fprintf(stderr, "empty pool\n");
		exit(1);
	}
	return pool[--npool];
}

static double round_inline(int conns)
{
	double t0 = now_us();
	for (int i = 0; i < conns; i++) {
		int fd;
		if (sandbox_connect_inside(sb, PORT, &fd) != CUSTOS_OK) {
			fprintf(stderr, "connect_inside: %s\n", err_msg());
			exit(1);
		}
		finish(fd);
	}
	return (now_us() - t0) / conns;
}

/* The socket alone, no connection: the part the pool takes off the connection's path. */
static double round_acquire(int conns, bool pooled)
{
	double t0 = now_us();
	for (int i = 0; i < conns; i++) {
		int fd;
		size_t n;
		unsigned g;
		if (pooled) {
			fd = take();
		} else if (sandbox_sockets_inside(sb, &fd, 1, &n, &g) != CUSTOS_OK) {
			fprintf(stderr, "socket_inside: %s\n", err_msg());
			exit(1);
		}
		close(fd);
	}
	return (now_us() - t0) / conns;
}

static double round_pooled(int conns)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(PORT);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	double t0 = now_us();
	for (int i = 0; i < conns; i++) {
		int fd = take();
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1 && errno != EINPROGRESS) {
			perror("connect");
			exit(1);
		}
		finish(fd);
	}
	return (now_us() - t0) / conns;
}

static int cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

static void *acceptor(void *arg)
{
	int lfd = *(int *)arg;
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (poll(&p, 1, -1) != 1)
			continue;
		int c;
		while ((c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
			close(c);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int conns = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2000;
	int rounds = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 5;
	if (conns < 1 || rounds < 1 || rounds > 64) {
		fprintf(stderr, "usage: connect_bench [CONNS] [ROUNDS<=64]\n");
		return 2;
	}
	sandbox_profile p;
	if (sandbox_profile_builtin("default", &p) != CUSTOS_OK)
		return 1;
	p.name = "bench";
	const char *cmd[] = { "/usr/bin/sleep", "3600", NULL };
	sandbox_opts so;
	sandbox_opts_init(&so);
	int lfd = -1;
	if (sandbox_spawn(&p, cmd, &so, &sb) != CUSTOS_OK ||
	    sandbox_listen_inside(sb, PORT, 4096, &lfd) != CUSTOS_OK) {
		fprintf(stderr, "sandbox: %s\n", err_msg());
		return 1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) == -1)
		return 1;
	pthread_t th, ta;
	pthread_create(&th, NULL, supervisor, NULL);
	pthread_create(&ta, NULL, acceptor, &lfd);
	double in[64], po[64], ai[64], ap[64];
	round_inline(200); /* warm-up: the factory process */
	round_pooled(200);
	for (int r = 0; r < rounds; r++) {
		in[r] = round_inline(conns);
		po[r] = round_pooled(conns);
		ai[r] = round_acquire(conns, false);
		ap[r] = round_acquire(conns, true);
		printf("round %d: connection inline %.1f us, pooled %.1f us; socket alone inline "
		       "%.2f us, pooled %.2f us\n",
		       r + 1, in[r], po[r], ai[r], ap[r]);
	}
	qsort(ai, (size_t)rounds, sizeof(double), cmp);
	qsort(ap, (size_t)rounds, sizeof(double), cmp);
	printf("median, socket alone: inline %.2f us, pooled %.2f us, ratio %.2f\n", ai[rounds / 2],
	       ap[rounds / 2], ai[rounds / 2] / ap[rounds / 2]);
	qsort(in, (size_t)rounds, sizeof(double), cmp);
	qsort(po, (size_t)rounds, sizeof(double), cmp);
	printf("median of %d rounds x %d connections, connection: inline %.1f us, pooled %.1f us, "
	       "ratio %.2f\n",
	       rounds, conns, in[rounds / 2], po[rounds / 2], in[rounds / 2] / po[rounds / 2]);
	if (sandbox_stop(sb) != CUSTOS_OK)
		err_clear();
	sandbox_free(sb);
	return 0;
}
