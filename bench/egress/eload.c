/*
 * eload: a small closed-loop load generator for forward proxies (wrk cannot speak CONNECT).
 * Each of C threads keeps one connection to the proxy and sends requests back to back:
 *   plain:   GET http://host:port/path (absolute URI, keep-alive)
 *   connect: CONNECT host:port, TLS inside the tunnel (verified against --cacert), then GETs
 * Prints requests/s and MB/s of response bodies. Reconnects when a connection closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *proxy_host = "127.0.0.1", *target, *path = "/", *cacert;
static unsigned proxy_port, conns = 50, seconds = 10;
static bool connect_mode;
static SSL_CTX *ctx;
static atomic_bool stop;
static atomic_ulong total_req, total_bytes, total_err, total_dials;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct io {
	int fd;
	SSL *ssl;
	char buf[65536];
	size_t have;
} io;

static ssize_t io_read(io *c, char *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_read(c->ssl, p, (int)n);
		return r > 0 ? r : -1;
	}
	ssize_t r = recv(c->fd, p, n, 0);
	return r > 0 ? r : -1;
}

static int io_write(io *c, const char *p, size_t n)
{
	if (c->ssl)
		return SSL_write(c->ssl, p, (int)n) == (int)n ? 0 : -1;
	while (n) {
		ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Reads one response (Content-Length bodies); returns body bytes or -1. */
static long read_response(io *c, bool *close_after)
{
	char *end;
	for (;;) {
		end = memmem(c->buf, c->have, "\r\n\r\n", 4);
		if (end)
			break;
		if (c->have == sizeof(c->buf))
			return -1;
		ssize_t r = io_read(c, c->buf + c->have, sizeof(c->buf) - c->have);
		if (r <= 0)
			return c->have == 0 ? -2 : -1; /* -2: closed between responses */
		c->have += (size_t)r;
	}
	size_t hl = (size_t)(end - c->buf) + 4;
	unsigned long cl = 0;
	*close_after = false;
	for (char *l = c->buf; l < end; l = strstr(l, "\r\n") + 2) {
		if (strncasecmp(l, "content-length:", 15) == 0)
			cl = strtoul(l + 15, NULL, 10);
		if (strncasecmp(l, "connection: close", 17) == 0)
			*close_after = true;
	}
	if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0 && strncmp(c->buf, "HTTP/1.0 200", 12) != 0)
		return -1;
	size_t in = c->have - hl;
	if (in >= cl) {
		memmove(c->buf, c->buf + hl + cl, in - cl);
		c->have = in - cl;
		return (long)cl;
	}
	unsigned long left = cl - in;
	c->have = 0;
	while (left) {
		ssize_t r = io_read(c, c->buf, left < sizeof(c->buf) ? left : sizeof(c->buf));
		if (r <= 0)
			return -1;
		left -= (unsigned long)r;
	}
	return (long)cl;
}

static int dial(io *c)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)proxy_port) };
	inet_pton(AF_INET, proxy_host, &sa.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	c->ssl = NULL;
	c->have = 0;
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		return -1;
	if (!connect_mode)
		return 0;
	char req[512];
	int n = snprintf(req, sizeof(req), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target,
	                 target);
	if (io_write(c, req, (size_t)n) != 0)
		return -1;
	size_t got = 0;
	while (!memmem(c->buf, got, "\r\n\r\n", 4)) {
		ssize_t r = recv(c->fd, c->buf + got, sizeof(c->buf) - got, 0);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	if (strncmp(c->buf + 9, "200", 3) != 0)
		return -1;
	char host[256];
	snprintf(host, sizeof(host), "%s", target);
	char *colon = strrchr(host, ':');
	if (colon)
		*colon = '\0';
	c->ssl = SSL_new(ctx);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, host);
	SSL_set1_host(c->ssl, host);
	if (SSL_connect(c->ssl) != 1) {
		ERR_print_errors_fp(stderr);
		return -1;
	}
	return 0;
}

static void hang_up(io *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
}

static void *worker(void *arg)
{
	io *c = calloc(1, sizeof(*c));
	char req[1024];
	int n = connect_mode
	                ? snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path,
	                           target)
	                : snprintf(req, sizeof(req), "GET http://%s%s HTTP/1.1\r\nHost: %s\r\n\r\n",
	                           target, path, target);
	(void)arg;
	while (!atomic_load(&stop)) {
		atomic_fetch_add(&total_dials, 1);
		if (dial(c) != 0) {
			atomic_fetch_add(&total_err, 1);
			hang_up(c);
			usleep(10000);
			continue;
		}
		while (!atomic_load(&stop)) {
			bool close_after;
			if (io_write(c, req, (size_t)n) != 0)
				break;
			long b = read_response(c, &close_after);
			if (b < 0) {
				if (b == -1)
					atomic_fetch_add(&total_err, 1);
				break;
			}
			atomic_fetch_add(&total_req, 1);
			atomic_fetch_add(&total_bytes, (unsigned long)b);
			if (close_after)
				break;
		}
		hang_up(c);
	}
	free(c);
	return NULL;
}

int main(int argc, char **argv)
{
	int ch;
	while ((ch = getopt(argc, argv, "x:t:P:c:d:Ck:")) != -1) {
		switch (ch) {
		case 'x':
			proxy_port = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 't':
			target = optarg;
			break;
		case 'P':
			path = optarg;
			break;
		case 'c':
			conns = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'd':
			seconds = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'C':
			connect_mode = true;
			break;
		case 'k':
			cacert = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (!proxy_port || !target || !conns)
		goto usage;
	ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (cacert) {
		SSL_CTX_load_verify_locations(ctx, cacert, NULL);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	pthread_t *th = calloc(conns, sizeof(*th));
	double t0 = now();
	for (unsigned i = 0; i < conns; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	sleep(seconds);
	atomic_store(&stop, true);
	double t1 = now();
	unsigned long r = atomic_load(&total_req), b = atomic_load(&total_bytes);
	for (unsigned i = 0; i < conns; i++)
		pthread_cancel(th[i]);
	printf("requests %lu errors %lu connects %lu seconds %.2f req/s %.0f MB/s %.1f\n", r,
	       atomic_load(&total_err), atomic_load(&total_dials), t1 - t0, (double)r / (t1 - t0),
	       (double)b / (t1 - t0) / 1e6);
	fflush(stdout);
	_exit(0);
usage:
	fprintf(stderr, "usage: eload -x PROXYPORT -t HOST:PORT [-P /path] [-c CONNS] [-d SECONDS] "
	                "[-C (CONNECT+TLS)] [-k CACERT]\n");
	return 2;
}
