/*
 * libFuzzer target for what the supervisor of `custos up` receives from the proxy
 * (cli/psx_wire.c): the input is the datagrams a compromised proxy writes down the privsep
 * socket, each with some fds, as records [nfds:1][len:2 little-endian][len bytes]. Each goes
 * through psx_recv and, when it frames, psx_sup_check; every fd must be closed unless held by
 * a received message (a leak aborts).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/privsep.h"

#define MAX_SEND_FDS 24 /* past PSX_MAX_FDS: truncated control data too */

static int sp[2] = { -1, -1 };
static psx_msg *m;

static void setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1)
		abort();
	int big = 1 << 20;
	(void)setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		abort();
}

/* Sends data with nfds copies of fd; false when the kernel refused it (too large). */
static bool send_one(const uint8_t *data, size_t len, int fd, size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_SEND_FDS)];
		struct cmsghdr align;
	} cb;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = len ? 1 : 0 };

	if (nfds) {
		memset(&cb, 0, sizeof(cb));
		mh.msg_control = cb.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		for (size_t i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
	}
	return sendmsg(sp[0], &mh, MSG_DONTWAIT) == (ssize_t)len;
}

/* How many fds of this process refer to the pipe that fd is an end of. */
static size_t pipe_fds(int fd)
{
	struct stat ref, st;
	if (fstat(fd, &ref) == -1)
		abort();
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		abort();
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		char *end;
		long k = strtol(e->d_name, &end, 10);
		if (e->d_name[0] == '.' || *end != '\0' || k == dirfd(d))
			continue;
		if (fstat((int)k, &st) == 0 && st.st_dev == ref.st_dev && st.st_ino == ref.st_ino)
			n++;
	}
	closedir(d);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (m == NULL)
		setup();
	size_t off = 0;
	for (int msgs = 0; msgs < 64 && off + 3 <= size; msgs++) {
		size_t nfds = data[off] % (MAX_SEND_FDS + 1);
		size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
		off += 3;
		if (len > size - off)
			len = size - off;
		int p[2];
		if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1)
			abort();
		bool sent = send_one(data + off, len, p[0], nfds);
		int r = -2;
		off += len;
		close(p[0]);
		if (sent) {
			r = psx_recv(sp[1], m);
			if (r == 1) {
				if (m->nfds > PSX_MAX_FDS || m->nfds != nfds ||
				    m->h.len > PSX_PAYLOAD_MAX || len != sizeof(psx_hdr) + m->h.len)
					abort();
				const char *why = psx_sup_check(m, data[0] % (PSX_MAX_MODELS + 1));
				if (why == NULL && (m->h.len != 0 || m->nfds > 1))
					abort();
				psx_msg_close(m);
			} else if (m->nfds != 0) {
				abort(); /* a refused message holds no fd */
			}
		}
		/* No fd of this process refers to the pipe but its write end. (Counted in the fd
		 * table: a write's EPIPE would also wait for the kernel's deferred release of a
		 * file that passed through the socket, and fail now and then for that.) */
		size_t open_fds = pipe_fds(p[1]);
		if (open_fds != 1) {
			fprintf(stderr,
			        "fuzz_psx: fd left open: message %d, %zu fds, %zu bytes, sent %d, "
			        "recv %d: %zu fds on the pipe\n",
			        msgs, nfds, len, sent, r, open_fds);
			abort();
		}
		close(p[1]);
	}
	return 0;
}
