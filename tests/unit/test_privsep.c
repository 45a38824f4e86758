/*
 * Unit tests of the privilege separation's wire (cli/psx_wire.c) over SOCK_SEQPACKET
 * socketpairs, as a compromised proxy would write to the supervisor: empty, short, oversized
 * and lying messages, fds where none belong, too many fds, the supervisor's header checks
 * (psx_sup_check), and a send to a peer that reads nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli/privsep.h"

static void pair(int sp[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
}

/* Sends raw bytes (no psx_hdr framing) with nfds copies of fd. */
static void send_raw(int sock, const void *data, size_t len, int fd, size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 64)];
		struct cmsghdr align;
	} cb;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = len ? 1 : 0 };

	assert_true(nfds <= 64);
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
	assert_int_equal(sendmsg(sock, &mh, 0), (ssize_t)len);
}

/* A pipe whose read end is sent; the caller closes its own copy. Afterwards fd_leaked tells
 * whether an fd of this process still refers to it besides its write end (counted in the fd
 * table: a write's EPIPE would also wait for the kernel's deferred release of a file that
 * passed through a socket). */
static void tracked_pipe(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
}

static bool fd_leaked(int wr)
{
	struct stat ref, st;
	assert_int_equal(fstat(wr, &ref), 0);
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
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
	return n != 1;
}

/* An empty message reads as EOF on SOCK_SEQPACKET; the fds it carried must not stay open in
 * the receiver (they did: the fds were read only for a non-empty message). */
static void test_empty_message_fds_closed(void **state)
{
	(void)state;
	int sp[2], p[2];
	psx_msg *m = calloc(1, sizeof(*m));
	pair(sp);
	tracked_pipe(p);
	send_raw(sp[0], NULL, 0, p[0], 3);
	close(p[0]);
	assert_int_equal(psx_recv(sp[1], m), 0);
	assert_int_equal(m->nfds, 0);
	assert_false(fd_leaked(p[1]));
	close(p[1]);
	close(sp[0]);
	close(sp[1]);
	free(m);
}

/* Short header, len other than the payload, a payload over PSX_PAYLOAD_MAX: -1 EPROTO and the
 * fds that came with it closed. */
static void test_malformed_frames(void **state)
{
	(void)state;
	int sp[2], p[2];
	psx_msg *m = calloc(1, sizeof(*m));
	static uint8_t big[sizeof(psx_hdr) + PSX_PAYLOAD_MAX + 100];
	pair(sp);

	struct {
		const void *data;
		size_t len;
	} cases[4];
	psx_hdr lie = { .type = PSX_WANT, .arg = 1, .len = 10 }; /* says 10, carries 0 */
	psx_hdr over = { .type = PSX_WANT, .arg = 1, .len = PSX_PAYLOAD_MAX + 100 };
	memcpy(big, &over, sizeof(over));
	psx_hdr under = { .type = PSX_WANT, .arg = 1, .len = 0 }; /* says 0, carries 5 */
	uint8_t under_buf[sizeof(psx_hdr) + 5] = { 0 };
	memcpy(under_buf, &under, sizeof(under));
	cases[0].data = "abc";
	cases[0].len = 3;
	cases[1].data = &lie;
	cases[1].len = sizeof(lie);
	cases[2].data = big;
	cases[2].len = sizeof(big);
	cases[3].data = under_buf;
	cases[3].len = sizeof(under_buf);
	for (size_t i = 0; i < 4; i++) {
		tracked_pipe(p);
		send_raw(sp[0], cases[i].data, cases[i].len, p[0], 2);
		close(p[0]);
		errno = 0;
		assert_int_equal(psx_recv(sp[1], m), -1);
		assert_int_equal(errno, EPROTO);
		assert_int_equal(m->nfds, 0);
		assert_false(fd_leaked(p[1]));
		close(p[1]);
	}
	close(sp[0]);
	close(sp[1]);
	free(m);
}

/* More fds than PSX_MAX_FDS: the control data is truncated (MSG_CTRUNC): refused, and none of
 * the fds stays open. */
static void test_too_many_fds(void **state)
{
	(void)state;
	int sp[2], p[2];
	psx_msg *m = calloc(1, sizeof(*m));
	pair(sp);
	tracked_pipe(p);
	psx_hdr h = { .type = PSX_SECCOMP };
	send_raw(sp[0], &h, sizeof(h), p[0], PSX_MAX_FDS + 5);
	close(p[0]);
	assert_int_equal(psx_recv(sp[1], m), -1);
	assert_int_equal(m->nfds, 0);
	assert_false(fd_leaked(p[1]));
	close(p[1]);
	close(sp[0]);
	close(sp[1]);
	free(m);
}

/* A well-formed message goes through with its fd; psx_msg_close lets it go. */
static void test_round_trip(void **state)
{
	(void)state;
	int sp[2], p[2];
	psx_msg *m = calloc(1, sizeof(*m));
	pair(sp);
	tracked_pipe(p);
	psx_hdr h = { .type = PSX_SECCOMP };
	assert_int_equal(psx_send(sp[0], &h, NULL, &p[0], 1), CUSTOS_OK);
	close(p[0]);
	assert_int_equal(psx_recv(sp[1], m), 1);
	assert_int_equal(m->h.type, PSX_SECCOMP);
	assert_int_equal(m->nfds, 1);
	assert_null(psx_sup_check(m, 4));
	assert_true(fd_leaked(p[1])); /* held by m */
	psx_msg_close(m);
	assert_false(fd_leaked(p[1]));
	close(p[1]);

	psx_hdr w = { .type = PSX_WANT, .model = 3, .arg = PSX_POOL_MAX };
	assert_int_equal(psx_send(sp[0], &w, NULL, NULL, 0), CUSTOS_OK);
	assert_int_equal(psx_recv(sp[1], m), 1);
	assert_null(psx_sup_check(m, 4));
	assert_non_null(psx_sup_check(m, 3)); /* slot 3 does not exist with 3 slots */
	close(sp[0]);
	assert_int_equal(psx_recv(sp[1], m), 0); /* EOF */
	close(sp[1]);
	free(m);
}

static const char *check(psx_hdr h, size_t nfds, size_t n_slots)
{
	static psx_msg m;
	memset(&m, 0, sizeof(m));
	m.h = h;
	m.nfds = nfds;
	for (size_t i = 0; i < nfds; i++)
		m.fds[i] = -1;
	return psx_sup_check(&m, n_slots);
}

/* A RELOAD with payload (its bytes, h.len of them). */
static const char *check_reload(uint32_t len, const char *payload)
{
	static psx_msg m;
	memset(&m, 0, sizeof(m));
	m.h = (psx_hdr){ .type = PSX_RELOAD, .gen = 7, .len = len };
	memcpy(m.payload, payload, strlen(payload));
	return psx_sup_check(&m, 2);
}

/* What the proxy sends passes; everything else a compromised one could put in a header is
 * refused before the supervisor acts on it. */
static void test_sup_check(void **state)
{
	(void)state;
	const size_t n = 2;
	/* As cli/privsep.c sends them. */
	assert_null(check((psx_hdr){ .type = PSX_WANT, .model = 1, .arg = 1 }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_WANT, .model = 0, .arg = PSX_POOL_MAX }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_RESTART, .model = 1, .arg = 4242 }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_IDLE, .model = 1 }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_FREED, .model = 0 }, 0, n));
	static const char hex[] =
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	assert_null(check_reload(PSX_RELOAD_SHA256_LEN, hex));
	assert_null(check((psx_hdr){ .type = PSX_COMMIT, .gen = 7, .arg = 1 }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_COMMIT, .gen = 7, .arg = 0 }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_DRAINED }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_PROXY_UP }, 0, n));
	assert_null(check((psx_hdr){ .type = PSX_SECCOMP }, 1, n));

	/* Types: the supervisor's own, unknown ones. */
	assert_non_null(check((psx_hdr){ .type = PSX_STATE }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_RELOADED }, 0, n));
	assert_non_null(check((psx_hdr){ .type = 0 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_FREED + 1 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = 0xffff }, 0, n));
	/* Slots: past the live ones, past PSX_MAX_MODELS, on a type without one. */
	assert_non_null(check((psx_hdr){ .type = PSX_WANT, .model = 2, .arg = 1 }, 0, n));
	assert_non_null(
	        check((psx_hdr){ .type = PSX_RESTART, .model = 0xffff, .arg = 1 }, 0, 0xffff + 1));
	assert_non_null(check((psx_hdr){ .type = PSX_IDLE, .model = 5 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_FREED, .model = 2 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_IDLE }, 0, 0));
	assert_non_null(check((psx_hdr){ .type = PSX_DRAINED, .model = 1 }, 0, n));
	/* args. */
	assert_non_null(check((psx_hdr){ .type = PSX_WANT, .arg = 0 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_WANT, .arg = PSX_POOL_MAX + 1 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_WANT, .arg = UINT32_MAX }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_RESTART, .arg = 0 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_RESTART, .arg = 0x80000000u }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_RESTART, .arg = UINT32_MAX }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_COMMIT, .gen = 1, .arg = 2 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_IDLE, .arg = 1 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_RELOAD, .arg = 1 }, 0, n));
	/* gen where none is used. */
	assert_non_null(check((psx_hdr){ .type = PSX_WANT, .gen = 1, .arg = 1 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_DRAINED, .gen = 1 }, 0, n));
	/* Payloads and fds. */
	assert_non_null(check((psx_hdr){ .type = PSX_DRAINED, .len = 1 }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_RELOAD, .len = 16 }, 0, n));
	/* RELOAD's digest: missing, short, long, not lowercase hex. */
	assert_non_null(check((psx_hdr){ .type = PSX_RELOAD, .gen = 7 }, 0, n));
	assert_non_null(check_reload(PSX_RELOAD_SHA256_LEN - 1, hex));
	assert_non_null(check_reload(PSX_RELOAD_SHA256_LEN + 1, hex));
	assert_non_null(
	        check_reload(PSX_RELOAD_SHA256_LEN,
	                     "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_non_null(
	        check_reload(PSX_RELOAD_SHA256_LEN,
	                     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde "));
	assert_non_null(check_reload(PSX_RELOAD_SHA256_LEN, "")); /* 64 NUL bytes */
	assert_non_null(check((psx_hdr){ .type = PSX_WANT, .arg = 1 }, 1, n));
	assert_non_null(check((psx_hdr){ .type = PSX_COMMIT, .arg = 1 }, 2, n));
	assert_non_null(check((psx_hdr){ .type = PSX_SECCOMP }, 0, n));
	assert_non_null(check((psx_hdr){ .type = PSX_SECCOMP }, 2, n));
}

/* A peer that reads nothing: with SO_SNDTIMEO the send ends, and says so (the supervisor
 * then kills the proxy instead of blocking behind it). */
static void test_send_timeout(void **state)
{
	(void)state;
	int sp[2];
	pair(sp);
	struct timeval tv = { .tv_usec = 20000 };
	assert_int_equal(setsockopt(sp[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
	static uint8_t body[PSX_PAYLOAD_MAX];
	psx_hdr h = { .type = PSX_AUDIT, .len = sizeof(body) };
	custos_err e = CUSTOS_OK;
	for (int i = 0; i < 100000 && e == CUSTOS_OK; i++)
		e = psx_send(sp[0], &h, body, NULL, 0);
	assert_int_equal(e, CUSTOS_ERR_TIMEOUT);
	close(sp[0]);
	close(sp[1]);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	alarm(120);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_message_fds_closed),
		cmocka_unit_test(test_malformed_frames),
		cmocka_unit_test(test_too_many_fds),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_sup_check),
		cmocka_unit_test(test_send_timeout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
