/*
 * Unit tests of the VM channel multiplexer (sandbox/vm_mux.c) over socketpairs: header codec
 * and its rejections, many concurrent streams, a slow reader that must not stall the others,
 * abrupt close, refused services, guest-initiated (egress) streams through a listener, the
 * host-side vm_channel API, and malformed, oversized and window-overrunning peers; a hostile
 * guest against the real vm_channel over a socketpair fixture standing in for the channel:
 * egress streams past a full listener backlog, streams the guest never closes, a flood, a
 * guest that never reads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "custos/vm.h"
#include "sandbox/vm_mux.h"

#define ECHO_PORT   7
#define REFUSE_PORT 9

static void *echo_thread(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char b[8192];
	for (;;) {
		ssize_t n = read(fd, b, sizeof(b));
		if (n <= 0)
			break;
		ssize_t off = 0;
		while (off < n) {
			ssize_t w = write(fd, b + off, (size_t)(n - off));
			if (w <= 0)
				goto out;
			off += w;
		}
	}
out:
	shutdown(fd, SHUT_WR);
	close(fd);
	return NULL;
}

static void spawn_echo(int fd)
{
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, echo_thread, (void *)(intptr_t)fd), 0);
	pthread_detach(t);
}

/* The "guest" side's services: port 7 echoes, anything else is refused. */
static int guest_accept(void *arg, uint16_t port)
{
	(void)arg;
	if (port != ECHO_PORT)
		return -1;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	spawn_echo(sv[0]);
	return sv[1];
}

typedef struct pair {
	int chan[2];
	struct vm_mux *host, *guest;
	pthread_t th, tg;
	int rc_host, rc_guest;
	int listen_fd;
} pair;

static void *run_host(void *arg)
{
	pair *p = arg;
	p->rc_host = vm_mux_run(p->host);
	return NULL;
}

static void *run_guest(void *arg)
{
	pair *p = arg;
	p->rc_guest = vm_mux_run(p->guest);
	return NULL;
}

static int host_accept_echo(void *arg, uint16_t port)
{
	(void)arg;
	if (port != VM_MUX_PORT_EGRESS)
		return -1;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	spawn_echo(sv[0]);
	return sv[1];
}

static void pair_start(pair *p, uint32_t window, int listen_fd)
{
	memset(p, 0, sizeof(*p));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->chan), 0);
	struct vm_mux_opts ho = { .chan_fd = p->chan[0],
		                  .odd_ids = 1,
		                  .window = window,
		                  .accept = host_accept_echo,
		                  .listen_fd = -1 };
	struct vm_mux_opts go = { .chan_fd = p->chan[1],
		                  .odd_ids = 0,
		                  .window = window,
		                  .accept = guest_accept,
		                  .listen_fd = listen_fd,
		                  .listen_port = VM_MUX_PORT_EGRESS };
	assert_int_equal(vm_mux_new(&ho, &p->host), 0);
	assert_int_equal(vm_mux_new(&go, &p->guest), 0);
	assert_int_equal(pthread_create(&p->th, NULL, run_host, p), 0);
	assert_int_equal(pthread_create(&p->tg, NULL, run_guest, p), 0);
}

static void pair_stop(pair *p)
{
	vm_mux_stop(p->host);
	vm_mux_stop(p->guest);
	pthread_join(p->th, NULL);
	pthread_join(p->tg, NULL);
	assert_int_equal(p->rc_host, 0);
	assert_int_equal(p->rc_guest, 0);
	vm_mux_free(p->host);
	vm_mux_free(p->guest);
	close(p->chan[0]);
	close(p->chan[1]);
}

static int open_stream(pair *p, uint16_t port)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(vm_mux_open(p->host, port, sv[1]), 0);
	return sv[0];
}

static void fill_pattern(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((i * 31u + seed * 7u) ^ (i >> 9));
}

typedef struct xfer {
	int fd;
	size_t n;
	unsigned seed;
	bool ok;
} xfer;

static void *writer_thread(void *arg)
{
	xfer *x = arg;
	uint8_t *b = malloc(x->n);
	fill_pattern(b, x->n, x->seed);
	size_t off = 0;
	while (off < x->n) {
		ssize_t w = write(x->fd, b + off, x->n - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	shutdown(x->fd, SHUT_WR);
	free(b);
	return NULL;
}

/* Sends n pattern bytes on fd (from a thread) and checks that the same bytes come back, then
 * EOF. */
static void *echo_client(void *arg)
{
	xfer *x = arg;
	pthread_t w;
	if (pthread_create(&w, NULL, writer_thread, x) != 0)
		return NULL;
	uint8_t *want = malloc(x->n);
	uint8_t *got = malloc(x->n + 1);
	fill_pattern(want, x->n, x->seed);
	size_t off = 0;
	for (;;) {
		ssize_t r = read(x->fd, got + off, x->n + 1 - off);
		if (r <= 0)
			break;
		off += (size_t)r;
		if (off > x->n)
			break;
	}
	pthread_join(w, NULL);
	x->ok = off == x->n && memcmp(want, got, x->n) == 0;
	free(want);
	free(got);
	close(x->fd);
	return NULL;
}

static bool wait_streams_zero(pair *p)
{
	for (int i = 0; i < 1000; i++) { /* a deadline for a hang, not a timing assertion */
		if (vm_mux_streams(p->host) == 0 && vm_mux_streams(p->guest) == 0)
			return true;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return false;
}

static void test_hdr_codec(void **state)
{
	(void)state;
	uint8_t b[VM_MUX_HDR_LEN];
	struct vm_mux_hdr h = { .type = VM_MUX_DATA, .stream = 0x01020304, .len = 16384 }, g;
	vm_mux_hdr_encode(&h, b);
	const char *why = NULL;
	assert_int_equal(vm_mux_hdr_decode(b, sizeof(b), &g, &why), VM_MUX_HDR_LEN);
	assert_int_equal(g.type, VM_MUX_DATA);
	assert_int_equal(g.stream, 0x01020304);
	assert_int_equal(g.len, 16384);
	assert_int_equal(vm_mux_hdr_decode(b, 11, &g, &why), 0); /* needs more */

	struct {
		uint8_t type;
		uint32_t stream, len;
		int patch; /* byte index to corrupt, -1 none */
		uint8_t val;
	} bad[] = {
		{ VM_MUX_DATA, 1, 10, 0, 2 },          /* version */
		{ VM_MUX_DATA, 1, 10, 1, 0 },          /* type 0 */
		{ VM_MUX_DATA, 1, 10, 1, 6 },          /* type 6 */
		{ VM_MUX_DATA, 1, 10, 2, 1 },          /* reserved */
		{ VM_MUX_DATA, 1, 10, 3, 0x80 },       /* reserved */
		{ VM_MUX_DATA, 0, 10, -1, 0 },         /* stream 0 */
		{ VM_MUX_DATA, 1, 16385, -1, 0 },      /* oversized */
		{ VM_MUX_DATA, 1, 0xffffffff, -1, 0 }, /* oversized */
		{ VM_MUX_DATA, 1, 0, -1, 0 },          /* empty DATA */
		{ VM_MUX_OPEN, 1, 3, -1, 0 },          { VM_MUX_CLOSE, 1, 1, -1, 0 },
		{ VM_MUX_WINDOW, 1, 8, -1, 0 },        { VM_MUX_ERROR, 1, 257, -1, 0 },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		h = (struct vm_mux_hdr){ .type = bad[i].type,
			                 .stream = bad[i].stream,
			                 .len = bad[i].len };
		vm_mux_hdr_encode(&h, b);
		if (bad[i].patch >= 0)
			b[bad[i].patch] = bad[i].val;
		why = NULL;
		if (vm_mux_hdr_decode(b, sizeof(b), &g, &why) != -1)
			fail_msg("bad header %zu accepted", i);
		assert_non_null(why);
	}
}

static void test_many_streams(void **state)
{
	(void)state;
	pair p;
	pair_start(&p, 64 * 1024, -1);
	enum { N = 48 };
	xfer x[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		x[i] = (xfer){ .fd = open_stream(&p, ECHO_PORT),
			       .n = 200000 + (size_t)i * 997,
			       .seed = (unsigned)i };
		assert_int_equal(pthread_create(&t[i], NULL, echo_client, &x[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		if (!x[i].ok)
			fail_msg("stream %d: echo mismatch", i);
	}
	assert_true(wait_streams_zero(&p));
	pair_stop(&p);
}

static void test_slow_reader(void **state)
{
	(void)state;
	pair p;
	pair_start(&p, 32 * 1024, -1);
	/* A: writes 4 MiB into the echo and never reads the answer. Without per-stream windows
	 * its echo would fill the channel and B would stall behind it. */
	int a = open_stream(&p, ECHO_PORT);
	xfer xa = { .fd = a, .n = 4u << 20, .seed = 99 };
	pthread_t wa;
	assert_int_equal(pthread_create(&wa, NULL, writer_thread, &xa), 0);
	/* B completes a full 2 MiB echo while A is stuck. */
	xfer xb = { .fd = open_stream(&p, ECHO_PORT), .n = 2u << 20, .seed = 5 };
	echo_client(&xb);
	assert_true(xb.ok);
	/* A is still stuck (its writer blocked), then it goes away abruptly. shutdown wakes the
	 * blocked writer (close from another thread would not). */
	shutdown(a, SHUT_RDWR);
	pthread_join(wa, NULL);
	close(a);
	assert_true(wait_streams_zero(&p));
	pair_stop(&p);
}

static void test_abrupt_close_and_refused(void **state)
{
	(void)state;
	pair p;
	pair_start(&p, 0, -1);
	/* Refused service: the stream's fd sees EOF (or a reset), nothing else. */
	int r = open_stream(&p, REFUSE_PORT);
	char c;
	ssize_t n = read(r, &c, 1);
	assert_true(n <= 0);
	close(r);
	/* Abrupt close with data in flight, repeatedly. */
	for (int i = 0; i < 20; i++) {
		int fd = open_stream(&p, ECHO_PORT);
		uint8_t b[30000];
		fill_pattern(b, sizeof(b), (unsigned)i);
		assert_int_equal(write(fd, b, sizeof(b)), (ssize_t)sizeof(b));
		close(fd);
	}
	assert_true(wait_streams_zero(&p));
	/* The channel still works. */
	xfer x = { .fd = open_stream(&p, ECHO_PORT), .n = 100000, .seed = 1 };
	echo_client(&x);
	assert_true(x.ok);
	pair_stop(&p);
}

static void test_guest_initiated(void **state)
{
	(void)state;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 16), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	pair p;
	pair_start(&p, 0, l);
	/* A program in the "guest" connects to the loopback proxy port; the host gets a stream
	 * for port 0 (egress) and echoes through it. */
	xfer x[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		x[i] = (xfer){ .fd = fd, .n = 300000, .seed = (unsigned)(40 + i) };
		assert_int_equal(pthread_create(&t[i], NULL, echo_client, &x[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_true(x[i].ok);
	}
	assert_true(wait_streams_zero(&p));
	pair_stop(&p);
	close(l);
}

/* ---- host API: vm_channel ----------------------------------------------------------------- */

static int egress_seen;
static void channel_accept(void *arg, uint16_t port, int fd)
{
	(void)arg;
	egress_seen++;
	if (port != VM_MUX_PORT_EGRESS) {
		close(fd);
		return;
	}
	spawn_echo(fd);
}

static void test_channel_api(void **state)
{
	(void)state;
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	struct vm_mux_opts go = { .chan_fd = chan[1], .accept = guest_accept, .listen_fd = -1 };
	pair p = { 0 };
	assert_int_equal(vm_mux_new(&go, &p.guest), 0);
	assert_int_equal(pthread_create(&p.tg, NULL, run_guest, &p), 0);

	vm_channel_opts o = { .fd = chan[0], .on_accept = channel_accept };
	vm_channel *c = NULL;
	assert_int_equal(vm_channel_open(&o, &c), CUSTOS_OK);
	assert_true(vm_channel_alive(c));
	int fd = -1;
	assert_int_equal(vm_channel_open_stream(c, ECHO_PORT, &fd), CUSTOS_OK);
	xfer x = { .fd = fd, .n = 500000, .seed = 3 };
	echo_client(&x);
	assert_true(x.ok);

	/* Guest-opened stream reaches the host's accept callback. */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(vm_mux_open(p.guest, VM_MUX_PORT_EGRESS, sv[1]), 0);
	x = (xfer){ .fd = sv[0], .n = 70000, .seed = 8 };
	echo_client(&x);
	assert_true(x.ok);
	assert_int_equal(egress_seen, 1);

	/* With an egress listener (the sandbox_listen_inside counterpart), port-0 streams are
	 * accepted from it instead of going to the callback. */
	int lfd = -1;
	assert_int_equal(vm_channel_listen_egress(c, 8, &lfd), CUSTOS_OK);
	assert_int_equal(vm_channel_listen_egress(c, 8, &lfd), CUSTOS_ERR_EXISTS);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(vm_mux_open(p.guest, VM_MUX_PORT_EGRESS, sv[1]), 0);
	int afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(afd >= 0);
	spawn_echo(afd);
	x = (xfer){ .fd = sv[0], .n = 90000, .seed = 9 };
	echo_client(&x);
	assert_true(x.ok);
	assert_int_equal(egress_seen, 1);
	close(lfd);

	/* The guest goes away: the channel reports it is down and refuses new streams. */
	vm_mux_stop(p.guest);
	pthread_join(p.tg, NULL);
	vm_mux_free(p.guest);
	close(chan[1]);
	for (int i = 0; i < 1000 && vm_channel_alive(c); i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	assert_false(vm_channel_alive(c));
	assert_int_equal(vm_channel_open_stream(c, ECHO_PORT, &fd), CUSTOS_ERR_CLOSED);
	vm_channel_close(c);

	/* Negative: no path and no fd; a path that never appears. */
	vm_channel_opts bad = { .fd = -1 };
	assert_int_equal(vm_channel_open(&bad, &c), CUSTOS_ERR_INVAL);
	bad = (vm_channel_opts){ .path = "/nonexistent/custos-vm.sock",
		                 .connect_timeout_ns = 50 * 1000 * 1000 };
	assert_int_equal(vm_channel_open(&bad, &c), CUSTOS_ERR_TIMEOUT);
	bad = (vm_channel_opts){ .fd = -1, .path = NULL, .window = VM_MUX_MAX_WINDOW + 1 };
	assert_int_not_equal(vm_channel_open(&bad, &c), CUSTOS_OK);
}

/* ---- hostile peers ------------------------------------------------------------------------ */

typedef struct raw {
	int fd;
	const uint8_t *p;
	size_t n;
} raw;

static void *raw_thread(void *arg)
{
	raw *r = arg;
	size_t off = 0;
	while (off < r->n) {
		ssize_t w = write(r->fd, r->p + off, r->n - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	shutdown(r->fd, SHUT_WR); /* then EOF: a peer that went away */
	return NULL;
}

/* Runs a mux (host role) against raw bytes from a peer; returns run's result. */
static int run_against(const uint8_t *bytes, size_t n, vm_mux_accept_fn acc, char *err,
                       size_t errsz)
{
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	struct vm_mux_opts o = { .chan_fd = chan[0],
		                 .odd_ids = 1,
		                 .accept = acc,
		                 .listen_fd = -1,
		                 .window = 32 * 1024 };
	struct vm_mux *m = NULL;
	assert_int_equal(vm_mux_new(&o, &m), 0);
	raw r = { .fd = chan[1], .p = bytes, .n = n };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, raw_thread, &r), 0);
	int rc = vm_mux_run(m);
	snprintf(err, errsz, "%s", vm_mux_error(m));
	vm_mux_free(m);
	close(chan[0]); /* unblocks the writer */
	pthread_join(t, NULL);
	close(chan[1]);
	return rc;
}

static size_t put_frame(uint8_t *out, uint8_t type, uint32_t id, const void *p, uint32_t len)
{
	struct vm_mux_hdr h = { .type = type, .stream = id, .len = len };
	vm_mux_hdr_encode(&h, out);
	if (len)
		memcpy(out + VM_MUX_HDR_LEN, p, len);
	return VM_MUX_HDR_LEN + len;
}

static int stuck_fds[64];
static size_t n_stuck;
/* A service whose reader never reads and whose socket buffer is already full. */
static int stuck_accept(void *arg, uint16_t port)
{
	(void)arg;
	(void)port;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == -1)
		return -1;
	char junk[4096] = { 0 };
	while (write(sv[1], junk, sizeof(junk)) > 0) {
	}
	stuck_fds[n_stuck++] = sv[0];
	return sv[1];
}

static void test_hostile_peer(void **state)
{
	(void)state;
	char err[200];
	uint8_t *b = calloc(1, 1 << 20);
	size_t n;

	/* Garbage: wrong version. */
	memset(b, 0x41, 64);
	assert_int_equal(run_against(b, 64, guest_accept, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "malformed"));

	/* Oversized frame announced. */
	struct vm_mux_hdr h = { .type = VM_MUX_DATA, .stream = 2, .len = VM_MUX_MAX_PAYLOAD + 1 };
	vm_mux_hdr_encode(&h, b);
	assert_int_equal(run_against(b, VM_MUX_HDR_LEN, guest_accept, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "limit"));

	/* OPEN with the wrong id parity (the host's own odd ids). */
	uint8_t port[2] = { 0, ECHO_PORT };
	n = put_frame(b, VM_MUX_OPEN, 3, port, 2);
	assert_int_equal(run_against(b, n, guest_accept, err, sizeof(err)), -EPROTO);

	/* OPEN twice on a live stream. */
	n = put_frame(b, VM_MUX_OPEN, 2, port, 2);
	n += put_frame(b + n, VM_MUX_OPEN, 2, port, 2);
	assert_int_equal(run_against(b, n, guest_accept, err, sizeof(err)), -EPROTO);

	/* WINDOW beyond the maximum. */
	n = put_frame(b, VM_MUX_OPEN, 2, port, 2);
	uint8_t w[4] = { 0x7f, 0xff, 0xff, 0xff };
	n += put_frame(b + n, VM_MUX_WINDOW, 2, w, 4);
	assert_int_equal(run_against(b, n, guest_accept, err, sizeof(err)), -EPROTO);

	/* DATA past the 32 KiB window to a stream whose reader is stuck. */
	n = put_frame(b, VM_MUX_OPEN, 2, port, 2);
	uint8_t *chunk = calloc(1, VM_MUX_MAX_PAYLOAD);
	for (int i = 0; i < 3; i++)
		n += put_frame(b + n, VM_MUX_DATA, 2, chunk, VM_MUX_MAX_PAYLOAD);
	assert_int_equal(run_against(b, n, stuck_accept, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "overran"));

	/* DATA after CLOSE. */
	n = put_frame(b, VM_MUX_OPEN, 2, port, 2);
	n += put_frame(b + n, VM_MUX_CLOSE, 2, NULL, 0);
	n += put_frame(b + n, VM_MUX_DATA, 2, chunk, 10);
	assert_int_equal(run_against(b, n, stuck_accept, err, sizeof(err)), -EPROTO);

	/* A well-formed stream then EOF: a clean end (0), not an error. */
	n = put_frame(b, VM_MUX_OPEN, 2, port, 2);
	n += put_frame(b + n, VM_MUX_DATA, 2, chunk, 100);
	assert_int_equal(run_against(b, n, guest_accept, err, sizeof(err)), 0);

	for (size_t i = 0; i < n_stuck; i++)
		close(stuck_fds[i]);
	free(chunk);
	free(b);
}

/* ---- a hostile guest against the host API (vm_channel) ------------------------------------ */

/* Fixture: a socketpair stands in for the channel (QEMU's virtio-serial socket or the vsock
 * connection); the guest end is driven by a guest-role mux (what custos-guest runs, or what a
 * compromised guest kernel can write), the host end by the real vm_channel. */
typedef struct chan_fixture {
	int chan[2];
	pair p; /* only p.guest / p.tg are used */
	vm_channel *c;
} chan_fixture;

static void chan_fixture_start(chan_fixture *f, vm_channel_accept_fn on_accept)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->chan), 0);
	struct vm_mux_opts go = { .chan_fd = f->chan[1], .accept = guest_accept, .listen_fd = -1 };
	assert_int_equal(vm_mux_new(&go, &f->p.guest), 0);
	assert_int_equal(pthread_create(&f->p.tg, NULL, run_guest, &f->p), 0);
	vm_channel_opts o = { .fd = f->chan[0], .on_accept = on_accept };
	assert_int_equal(vm_channel_open(&o, &f->c), CUSTOS_OK);
}

static void chan_fixture_stop(chan_fixture *f)
{
	vm_channel_close(f->c); /* must return: the channel thread is not stuck */
	vm_mux_stop(f->p.guest);
	pthread_join(f->p.tg, NULL);
	vm_mux_free(f->p.guest);
	close(f->chan[1]);
}

/* Waits (poll, 30 s per event as a hang guard) until `want` of fds[n] read EOF. */
static size_t wait_eofs(int *fds, size_t n, size_t want)
{
	size_t eofs = 0;
	bool *done = calloc(n, sizeof(*done));
	struct pollfd *pf = calloc(n, sizeof(*pf));
	while (eofs < want) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (!done[i])
				pf[k++] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		if (poll(pf, k, 30000) <= 0)
			break;
		for (size_t j = 0; j < k; j++) {
			if (!pf[j].revents)
				continue;
			char b[256];
			if (read(pf[j].fd, b, sizeof(b)) > 0)
				continue;
			for (size_t i = 0; i < n; i++)
				if (fds[i] == pf[j].fd)
					done[i] = true;
			eofs++;
		}
	}
	free(done);
	free(pf);
	return eofs;
}

/* The guest opens egress streams faster than custos' egress proxy accepts them (here: not at
 * all; backlog 1). Streams beyond the listener's backlog are refused at once; the channel
 * thread keeps serving ingress and vm_channel_close returns. Before the fix the channel thread
 * blocked in connect() on the full backlog: ingress hung and so did vm_channel_close. */
static void test_guest_egress_backlog_full(void **state)
{
	(void)state;
	chan_fixture f = { 0 };
	chan_fixture_start(&f, NULL);
	int lfd = -1;
	assert_int_equal(vm_channel_listen_egress(f.c, 1, &lfd), CUSTOS_OK);
	enum { N = 16 };
	int mine[N];
	for (int i = 0; i < N; i++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		assert_int_equal(vm_mux_open(f.p.guest, VM_MUX_PORT_EGRESS, sv[1]), 0);
		mine[i] = sv[0];
	}
	/* At most backlog + 1 connections wait in the listener; the rest are refused. */
	assert_true(wait_eofs(mine, N, N - 2) >= N - 2);
	int fd = -1;
	assert_int_equal(vm_channel_open_stream(f.c, ECHO_PORT, &fd), CUSTOS_OK);
	xfer x = { .fd = fd, .n = 100000, .seed = 21 };
	echo_client(&x);
	assert_true(x.ok);
	chan_fixture_stop(&f);
	for (int i = 0; i < N; i++)
		close(mine[i]);
	close(lfd);
}

/* Reads frames from a raw guest end until `want` ERROR frames arrived (poll, 30 s per read as
 * a hang guard); counts OPENs and CLOSEs on the way. Returns the ERRORs seen. */
static size_t raw_read_errors(int fd, size_t want, size_t *opens, size_t *closes)
{
	static uint8_t in[4 * (VM_MUX_HDR_LEN + VM_MUX_MAX_PAYLOAD)];
	size_t len = 0, errs = 0;
	while (errs < want) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		if (poll(&pf, 1, 30000) <= 0)
			break;
		ssize_t r = read(fd, in + len, sizeof(in) - len);
		if (r <= 0)
			break;
		len += (size_t)r;
		size_t off = 0;
		for (;;) {
			struct vm_mux_hdr h;
			const char *why = NULL;
			int d = vm_mux_hdr_decode(in + off, len - off, &h, &why);
			assert_true(d >= 0);
			if (d == 0 || len - off < VM_MUX_HDR_LEN + h.len)
				break;
			*opens += h.type == VM_MUX_OPEN;
			*closes += h.type == VM_MUX_CLOSE;
			errs += h.type == VM_MUX_ERROR;
			off += VM_MUX_HDR_LEN + h.len;
		}
		memmove(in, in + off, len - off);
		len -= off;
	}
	return errs;
}

/* A guest that never answers: it reads the host's OPENs and never sends CLOSE (nor anything
 * else). When the host side of each stream is closed for good (the proxy gave up on it), the
 * host resets the stream (ERROR) and frees it with its fd. Before the fix every such stream
 * stayed in the table until the guest closed it, which a hostile guest never does: up to the
 * stream limit (1024 fds per VM in custos' process, the default soft RLIMIT_NOFILE), then every
 * new stream to the VM failed. */
static void test_guest_never_closes(void **state)
{
	(void)state;
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	vm_channel_opts o = { .fd = chan[0] }; /* the fixture's guest end: raw bytes, chan[1] */
	vm_channel *c = NULL;
	assert_int_equal(vm_channel_open(&o, &c), CUSTOS_OK);
	enum { N = 40 };
	for (int i = 0; i < N; i++) {
		int fd = -1;
		assert_int_equal(vm_channel_open_stream(c, ECHO_PORT, &fd), CUSTOS_OK);
		assert_int_equal(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
		close(fd); /* the consumer gives up: nothing answered */
	}
	size_t opens = 0, closes = 0;
	assert_int_equal(raw_read_errors(chan[1], N, &opens, &closes), N);
	assert_int_equal(opens, N);
	/* A guest-opened (egress) stream whose host end goes away is reset the same way. */
	int lfd = -1;
	assert_int_equal(vm_channel_listen_egress(c, 8, &lfd), CUSTOS_OK);
	uint8_t b[64], port[2] = { 0, VM_MUX_PORT_EGRESS };
	size_t n = put_frame(b, VM_MUX_OPEN, 2, port, 2);
	assert_int_equal(write(chan[1], b, n), (ssize_t)n);
	int afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(afd >= 0);
	assert_int_equal(write(afd, "HTTP/1.1 403 Forbidden\r\n\r\n", 26), 26);
	close(afd);
	assert_int_equal(raw_read_errors(chan[1], 1, &opens, &closes), 1);
	assert_true(vm_channel_alive(c));
	vm_channel_close(c);
	close(lfd);
	close(chan[1]);
}

/* The peer answers a stream, closes it and frees it (its local end went away: ERROR "closed",
 * as a mux does since it no longer waits for a CLOSE that may never come), the three frames in
 * one write, so that they are handled in one read before the stream's buffer is written out.
 * The answer still reaches the local end, then EOF. Before, ERROR dropped the stream with the
 * answer unwritten: a denied egress call from the VM got no 403, only a closed connection. */
static void test_error_after_close_delivers(void **state)
{
	(void)state;
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	vm_channel_opts o = { .fd = chan[0] }; /* the fixture's guest end: raw bytes, chan[1] */
	vm_channel *c = NULL;
	assert_int_equal(vm_channel_open(&o, &c), CUSTOS_OK);
	int fd = -1;
	assert_int_equal(vm_channel_open_stream(c, ECHO_PORT, &fd), CUSTOS_OK);
	/* the host's OPEN: its stream id */
	uint8_t in[VM_MUX_HDR_LEN + VM_MUX_MAX_PAYLOAD];
	size_t len = 0;
	struct vm_mux_hdr h = { 0 };
	for (;;) {
		struct pollfd pf = { .fd = chan[1], .events = POLLIN };
		assert_true(poll(&pf, 1, 30000) == 1);
		ssize_t r = read(chan[1], in + len, sizeof(in) - len);
		assert_true(r > 0);
		len += (size_t)r;
		const char *why = NULL;
		int d = vm_mux_hdr_decode(in, len, &h, &why);
		assert_true(d >= 0);
		if (d > 0 && len >= VM_MUX_HDR_LEN + h.len)
			break;
	}
	assert_int_equal(h.type, VM_MUX_OPEN);
	static const char answer[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
	uint8_t b[256];
	size_t n = put_frame(b, VM_MUX_DATA, h.stream, answer, sizeof(answer) - 1);
	n += put_frame(b + n, VM_MUX_CLOSE, h.stream, NULL, 0);
	n += put_frame(b + n, VM_MUX_ERROR, h.stream, "closed", 6);
	assert_int_equal(write(chan[1], b, n), (ssize_t)n);
	char got[256];
	size_t gl = 0;
	for (;;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		assert_true(poll(&pf, 1, 30000) == 1);
		ssize_t r = read(fd, got + gl, sizeof(got) - gl);
		assert_true(r >= 0);
		if (r == 0)
			break;
		gl += (size_t)r;
	}
	assert_int_equal(gl, sizeof(answer) - 1);
	assert_memory_equal(got, answer, gl);
	close(fd);
	vm_channel_close(c);
	close(chan[1]);
}

static void *flood_thread(void *arg)
{
	int fd = *(int *)arg;
	/* WINDOW frames (increment 0) for a stream that is not open: valid, ignored, and the
	 * cheapest frames to write and the dearest to parse. */
	enum { F = 65536 };
	uint8_t *b = malloc((size_t)F * 16);
	uint8_t zero[4] = { 0 };
	for (size_t i = 0; i < F; i++)
		put_frame(b + i * 16, VM_MUX_WINDOW, 4, zero, 4);
	for (;;) {
		size_t off = 0;
		while (off < (size_t)F * 16) {
			ssize_t w = write(fd, b + off, (size_t)F * 16 - off);
			if (w <= 0)
				goto out;
			off += (size_t)w;
		}
	}
out:
	free(b);
	return NULL;
}

static void *close_thread(void *arg)
{
	vm_channel **c = arg;
	vm_channel_close(*c);
	*c = NULL;
	return NULL;
}

/* A guest that writes the channel without pause: vm_channel_close (the supervisor stopping or
 * replacing the VM's channel) still returns. Before the fix the channel thread stayed in its
 * read loop for as long as the guest kept the channel readable and never saw the stop. */
static void test_guest_flood_stop(void **state)
{
	(void)state;
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	int sz = 4 << 20;
	setsockopt(chan[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	vm_channel_opts o = { .fd = chan[0] }; /* fixture: chan[1] is the raw guest end */
	vm_channel *c = NULL;
	assert_int_equal(vm_channel_open(&o, &c), CUSTOS_OK);
	pthread_t ft, ct;
	assert_int_equal(pthread_create(&ft, NULL, flood_thread, &chan[1]), 0);
	struct timespec ts = { 0, 200 * 1000 * 1000 }; /* let the flood get going (not a check) */
	nanosleep(&ts, NULL);
	assert_true(vm_channel_alive(c));
	vm_channel *cc = c;
	assert_int_equal(pthread_create(&ct, NULL, close_thread, &cc), 0);
	/* Hang guard, not a timing check: the close must return at all. */
	for (int i = 0; i < 3000 && __atomic_load_n(&cc, __ATOMIC_ACQUIRE); i++) {
		struct timespec t = { 0, 10 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	assert_null(__atomic_load_n(&cc, __ATOMIC_ACQUIRE));
	pthread_join(ct, NULL);
	shutdown(chan[1], SHUT_RDWR); /* the flood ends: EPIPE */
	pthread_join(ft, NULL);
	close(chan[1]);
}

static void *open_flood_thread(void *arg)
{
	int fd = *(int *)arg;
	enum { F = 4096 };
	uint8_t *b = malloc((size_t)F * 14);
	uint8_t port[2] = { 0, 5 }; /* a service custos refuses: each OPEN queues an ERROR */
	uint32_t id = 2;
	for (;;) {
		for (size_t i = 0; i < F; i++, id += 2)
			put_frame(b + i * 14, VM_MUX_OPEN, id, port, 2);
		size_t off = 0;
		while (off < (size_t)F * 14) {
			ssize_t w = write(fd, b + off, (size_t)F * 14 - off);
			if (w <= 0)
				goto out;
			off += (size_t)w;
		}
	}
out:
	free(b);
	return NULL;
}

/* A guest that opens streams the host refuses and never reads the channel: the refusals queue
 * up to the output bound, then the channel ends (ENOBUFS) instead of growing without limit.
 * A regression test: this held before. */
static void test_guest_never_reads(void **state)
{
	(void)state;
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	vm_channel_opts o = { .fd = chan[0] }; /* fixture: chan[1] is the raw guest end */
	vm_channel *c = NULL;
	assert_int_equal(vm_channel_open(&o, &c), CUSTOS_OK);
	pthread_t ft;
	assert_int_equal(pthread_create(&ft, NULL, open_flood_thread, &chan[1]), 0);
	/* Hang guard, not a timing check. */
	for (int i = 0; i < 3000 && vm_channel_alive(c); i++) {
		struct timespec t = { 0, 10 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	assert_false(vm_channel_alive(c));
	vm_channel_close(c); /* closes chan[0]: the flood ends with EPIPE */
	pthread_join(ft, NULL);
	close(chan[1]);
}

/* ---- stream id allocation across the counter's wrap --------------------------------------- */

typedef struct muxrun {
	struct vm_mux *m;
	int rc;
} muxrun;

static void *muxrun_thread(void *arg)
{
	muxrun *r = arg;
	r->rc = vm_mux_run(r->m);
	return NULL;
}

/* Opens a stream on m (its local end stays open in *end: the stream stays live, the raw peer
 * never closes it) and returns the id of the OPEN frame the peer reads on fd. */
static uint32_t open_and_read_id(struct vm_mux *m, int fd, int *end)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	*end = sv[0];
	assert_int_equal(vm_mux_open(m, ECHO_PORT, sv[1]), 0);
	uint8_t in[VM_MUX_HDR_LEN + 2];
	size_t len = 0;
	while (len < sizeof(in)) { /* nothing but OPEN frames comes: the local ends send nothing */
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&pf, 1, 30000), 1);
		ssize_t r = read(fd, in + len, sizeof(in) - len);
		assert_true(r > 0);
		len += (size_t)r;
	}
	struct vm_mux_hdr h = { 0 };
	const char *why = NULL;
	assert_int_equal(vm_mux_hdr_decode(in, len, &h, &why), VM_MUX_HDR_LEN);
	assert_int_equal(h.type, VM_MUX_OPEN);
	return h.stream;
}

/* Two long-lived streams take the first ids; the counter is then set just below the wrap and
 * more streams are opened: the ids wrap back to the start of the range but skip the two still
 * open (and, on the guest's even side, 0, which the peer rejects as malformed). Before the fix
 * the counter wrapped to the live ids 1 and 3 (host) or to 0 (guest). */
static void id_wrap_case(int odd, uint32_t near)
{
	int chan[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan), 0);
	struct vm_mux_opts o = { .chan_fd = chan[0], .odd_ids = odd, .listen_fd = -1 };
	muxrun r = { 0 };
	assert_int_equal(vm_mux_new(&o, &r.m), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, muxrun_thread, &r), 0);
	enum { N = 6 };
	int ends[N];
	uint32_t ids[N];
	uint32_t first = odd ? 1 : 2;
	ids[0] = open_and_read_id(r.m, chan[1], &ends[0]);
	ids[1] = open_and_read_id(r.m, chan[1], &ends[1]);
	assert_int_equal(ids[0], first);
	assert_int_equal(ids[1], first + 2);
	vm_mux_set_next_id(r.m, near);
	for (int i = 2; i < N; i++)
		ids[i] = open_and_read_id(r.m, chan[1], &ends[i]);
	/* the counter did wrap: near, near + 2, then the start of the range past the live ids */
	assert_int_equal(ids[2], near);
	assert_int_equal(ids[3], near + 2);
	assert_int_equal(ids[4], first + 4);
	assert_int_equal(ids[5], first + 6);
	for (int i = 0; i < N; i++) {
		assert_int_not_equal(ids[i], 0);
		assert_int_equal(ids[i] & 1, odd ? 1u : 0u);
		for (int j = 0; j < i; j++)
			assert_int_not_equal(ids[i], ids[j]);
	}
	assert_int_equal(vm_mux_streams(r.m), N);
	vm_mux_stop(r.m);
	pthread_join(t, NULL);
	assert_int_equal(r.rc, 0);
	vm_mux_free(r.m);
	for (int i = 0; i < N; i++)
		close(ends[i]);
	close(chan[0]);
	close(chan[1]);
}

static void test_id_wrap_skips_live(void **state)
{
	(void)state;
	id_wrap_case(1, 0xFFFFFFFDu); /* host: ...FD, ...FF, wrap to 1 (live), 3 (live): 5, 7 */
	id_wrap_case(0, 0xFFFFFFFCu); /* guest: ...FC, ...FE, wrap to 0, 2, 4 (live): 6, 8 */
}

static void test_new_negative(void **state)
{
	(void)state;
	struct vm_mux *m = NULL;
	struct vm_mux_opts o = { .chan_fd = -1, .listen_fd = -1 };
	assert_int_equal(vm_mux_new(&o, &m), -EINVAL);
	o.chan_fd = 0;
	o.window = VM_MUX_MAX_WINDOW + 1;
	assert_int_equal(vm_mux_new(&o, &m), -EINVAL);
}

int main(void)
{
	log_setup(LOG_LVL_ERROR, LOG_FMT_TEXT);
	signal(SIGPIPE, SIG_IGN);
	alarm(240); /* a hang (a stream stalled behind another) fails instead of waiting */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_codec),
		cmocka_unit_test(test_many_streams),
		cmocka_unit_test(test_slow_reader),
		cmocka_unit_test(test_abrupt_close_and_refused),
		cmocka_unit_test(test_guest_initiated),
		cmocka_unit_test(test_channel_api),
		cmocka_unit_test(test_hostile_peer),
		cmocka_unit_test(test_guest_egress_backlog_full),
		cmocka_unit_test(test_guest_never_closes),
		cmocka_unit_test(test_error_after_close_delivers),
		cmocka_unit_test(test_guest_flood_stop),
		cmocka_unit_test(test_guest_never_reads),
		cmocka_unit_test(test_new_negative),
		cmocka_unit_test(test_id_wrap_skips_live),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
