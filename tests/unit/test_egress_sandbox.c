/*
 * The egress proxy serving a real process sandbox: the listener is created inside the
 * sandbox's network namespace (sandbox_listen_inside), curl runs inside with http_proxy set,
 * reads an allowed source through custos, is refused an unknown one (403), and cannot reach
 * the data source directly (the namespace has loopback only). Skipped where sandboxes cannot
 * be made (no user namespaces). Listeners added and closed while the server runs (the
 * sandboxes reloads add and remove) keep their own identity and taint.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "custos/egress.h"
#include "custos/sandbox.h"

static int data_fd = -1;
static atomic_bool data_stop;
static atomic_uint data_hits;

/* A tiny HTTP data source on the host's loopback. */
static void *data_main(void *arg)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n"
	                           "\r\nhello sandbox\n";
	(void)arg;
	while (!atomic_load(&data_stop)) {
		struct pollfd pf = { .fd = data_fd, .events = POLLIN };
		if (poll(&pf, 1, 100) <= 0)
			continue;
		int c = accept4(data_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c == -1)
			continue;
		char b[4096];
		size_t got = 0;
		while (got < sizeof(b)) {
			ssize_t n = recv(c, b + got, sizeof(b) - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
			if (memmem(b, got, "\r\n\r\n", 4))
				break;
		}
		if (send(c, resp, sizeof(resp) - 1, MSG_NOSIGNAL) < 0)
			(void)0;
		atomic_fetch_add(&data_hits, 1);
		close(c);
	}
	return NULL;
}

static void test_sandbox_egress(void **st)
{
	(void)st;
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	data_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(data_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(data_fd, 16), 0);
	assert_int_equal(getsockname(data_fd, (struct sockaddr *)&sa, &sl), 0);
	unsigned dport = ntohs(sa.sin_port);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, data_main, NULL), 0);

	char script[2048];
	snprintf(script, sizeof(script),
	         "code=000; for i in $(seq 1 100); do "
	         "code=$(curl -s -o /dev/null -w '%%{http_code}' http://localhost:%u/ok); rc=$?; "
	         "[ $rc -ne 7 ] && break; sleep 0.05; done; "
	         "[ \"$code\" = 200 ] || exit 10; "
	         "curl -sf http://localhost:%u/ok | grep -q 'hello sandbox' || exit 11; "
	         "[ \"$(curl -s -o /dev/null -w '%%{http_code}' http://10.1.2.3/)\" = 403 ] || "
	         "exit 12; "
	         "curl -s --noproxy '*' --max-time 2 http://127.0.0.1:%u/ok >/dev/null && exit 14; "
	         "exit 0",
	         dport, dport, dport);
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	static const char *const env[] = { "http_proxy=http://127.0.0.1:3128",
		                           "HTTPS_PROXY=http://127.0.0.1:3128" };
	sandbox_profile p;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.env_set = env;
	p.n_env_set = 2;
	static const uint16_t ports[] = { 3128 };
	p.tcp_connect = ports;
	p.n_tcp_connect = 1;
	sandbox_opts so;
	sandbox_opts_init(&so);
	sandbox *sb = NULL;
	if (sandbox_spawn(&p, argv, &so, &sb) != CUSTOS_OK) {
		fprintf(stderr, "SKIPPED: no process sandbox here: %s\n", err_msg());
		atomic_store(&data_stop, true);
		pthread_join(th, NULL);
		close(data_fd);
		skip();
	}
	int lfd = -1;
	assert_int_equal(sandbox_listen_inside(sb, 3128, 64, &lfd), CUSTOS_OK);

	egress_options o;
	egress_options_init(&o, 1, 1);
	o.sources[0].id = xstrdup("data");
	o.sources[0].host = xstrdup("localhost");
	o.sources[0].port = (uint16_t)dport;
	o.sources[0].allow_private = true;
	o.nsources = 1;
	o.listeners[0].fd = lfd;
	o.listeners[0].model = xstrdup("m-sandboxed");
	o.listeners[0].sandbox = xstrdup("default");
	o.nlisteners = 1;
	egress_server *eg = NULL;
	assert_int_equal(egress_create(&o, &eg), CUSTOS_OK);
	assert_int_equal(egress_start(eg), CUSTOS_OK);

	int ws = 0;
	assert_int_equal(sandbox_wait(sb, &ws), CUSTOS_OK);
	if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		fail_msg("sandboxed script failed: status %d (10: allowed source, 11: body, 12: "
		         "denied "
		         "source, 13: path, 14: direct connection succeeded)",
		         WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
	assert_true(atomic_load(&data_hits) >= 2); /* reached through custos only */
	/* without a policy the classification is unknown: the taint assumes the worst */
	assert_int_equal(egress_taint(eg, 0), 3);
	egress_free(eg);
	sandbox_free(sb);
	atomic_store(&data_stop, true);
	pthread_join(th, NULL);
	close(data_fd);
}

/* A listening socket on 127.0.0.1 (any port), as one made inside a sandbox would be. */
static int loopback_listener(unsigned *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* GET http://localhost:dport/ok through the egress listener on port: the status, or -1 when
 * the listener cannot be reached. */
static int proxy_get(unsigned port, unsigned dport)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons((uint16_t)port),
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	char req[256], resp[4096];
	int n = snprintf(req, sizeof(req),
	                 "GET http://localhost:%u/ok HTTP/1.1\r\nHost: localhost:%u\r\n"
	                 "Connection: close\r\n\r\n",
	                 dport, dport);
	assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
	size_t got = 0;
	ssize_t r;
	while (got < sizeof(resp) - 1 && (r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0)) > 0)
		got += (size_t)r;
	resp[got] = '\0';
	close(fd);
	int code = -1;
	if (sscanf(resp, "HTTP/1.1 %d", &code) != 1)
		code = 0;
	return code;
}

/* Listeners added and closed while the server runs (sandboxes a reload adds and removes): the
 * added one serves with its own model and taint, a closed one stops accepting, the first one
 * is untouched; bad calls are refused. */
static void test_listener_add_close(void **st)
{
	(void)st;
	unsigned dport = 0, p0 = 0, p1 = 0;
	data_fd = loopback_listener(&dport);
	atomic_store(&data_stop, false);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, data_main, NULL), 0);

	egress_options o;
	egress_options_init(&o, 1, 1);
	o.sources[0].id = xstrdup("data");
	o.sources[0].host = xstrdup("localhost");
	o.sources[0].port = (uint16_t)dport;
	o.sources[0].allow_private = true;
	o.nsources = 1;
	o.listeners[0].fd = loopback_listener(&p0);
	o.listeners[0].model = xstrdup("m-first");
	o.nlisteners = 1;
	egress_server *eg = NULL;
	assert_int_equal(egress_create(&o, &eg), CUSTOS_OK);
	assert_int_equal(egress_start(eg), CUSTOS_OK);

	size_t idx = 99;
	egress_listener_opts lo = { .fd = -1, .model = xstrdup("m-added") };
	assert_int_equal(egress_listener_add(eg, &lo, &idx), CUSTOS_ERR_INVAL); /* no socket */
	assert_int_equal(idx, 99);
	lo.fd = loopback_listener(&p1);
	lo.sandbox = xstrdup("default");
	assert_int_equal(egress_listener_add(eg, &lo, &idx), CUSTOS_OK);
	assert_int_equal(idx, 1);
	assert_null(lo.model); /* taken over */
	assert_int_equal(lo.fd, -1);
	assert_int_equal(egress_bound_port(eg, 1), p1);

	assert_int_equal(proxy_get(p1, dport), 200);
	assert_int_equal(egress_taint(eg, 1), 3); /* its own taint (no policy: the worst) */
	assert_int_equal(egress_taint(eg, 0), 0); /* not the first listener's */

	assert_int_equal(egress_listener_close(eg, 7), CUSTOS_ERR_INVAL);
	assert_int_equal(egress_listener_close(eg, 1), CUSTOS_OK);
	int code = 0;
	for (int i = 0; i < 500 && code != -1; i++) { /* closed by its accept thread */
		code = proxy_get(p1, dport);
		if (code != -1)
			poll(NULL, 0, 10);
	}
	assert_int_equal(code, -1);
	assert_int_equal(proxy_get(p0, dport), 200); /* the first listener still serves */
	assert_int_equal(egress_taint(eg, 0), 3);

	/* A listener closed and one added at once (the same reload): they share the slot, the
	 * closed one's accept thread waited for (it leaves within its poll interval), so its
	 * socket is closed when the add returns. The closed one never had a connection (one the
	 * forward loop has not seen end yet would keep its slot); it takes slot 1 again, or slot
	 * 2 when a connection of the retry loop above is still open on slot 1. */
	unsigned p2 = 0, p3 = 0;
	size_t k = 99;
	egress_listener_opts l2 = { .fd = loopback_listener(&p2), .model = xstrdup("m-third") };
	assert_int_equal(egress_listener_add(eg, &l2, &k), CUSTOS_OK);
	assert_true(k == 1 || k == 2);
	assert_int_equal(egress_listener_close(eg, k), CUSTOS_OK);
	egress_listener_opts l3 = { .fd = loopback_listener(&p3), .model = xstrdup("m-fourth") };
	assert_int_equal(egress_listener_add(eg, &l3, &idx), CUSTOS_OK);
	assert_true(idx <= k);
	assert_int_equal(egress_bound_port(eg, k + 1), 0); /* no slot beyond them was taken */
	assert_int_equal(egress_bound_port(eg, idx), p3);
	if (idx == k)
		assert_int_equal(proxy_get(p2, dport),
		                 -1); /* closed by the time the add returned */
	assert_int_equal(proxy_get(p3, dport), 200);

	/* egress_listeners_reap (a reload, between its closes and the adds made under the
	 * supervisor link's lock): the accept thread of a listener just closed, with no
	 * connection, has left when it returns (its socket is closed), and the next add takes
	 * its slot or a lower free one, none beyond it. */
	unsigned p4 = 0, p5 = 0;
	size_t m = 99, n = 99;
	egress_listener_opts l4 = { .fd = loopback_listener(&p4), .model = xstrdup("m-fifth") };
	assert_int_equal(egress_listener_add(eg, &l4, &m), CUSTOS_OK);
	assert_int_equal(egress_listener_close(eg, m), CUSTOS_OK);
	egress_listeners_reap(eg);
	assert_int_equal(proxy_get(p4, dport), -1); /* closed by the time reap returned */
	egress_listener_opts l5 = { .fd = loopback_listener(&p5), .model = xstrdup("m-sixth") };
	assert_int_equal(egress_listener_add(eg, &l5, &n), CUSTOS_OK);
	assert_true(n <= m);
	assert_int_equal(egress_bound_port(eg, m + 1), 0);
	assert_int_equal(proxy_get(p5, dport), 200);

	egress_free(eg);
	atomic_store(&data_stop, true);
	pthread_join(th, NULL);
	close(data_fd);
	data_fd = -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sandbox_egress),
		cmocka_unit_test(test_listener_add_close),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
