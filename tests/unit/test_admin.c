/*
 * Admin API and metrics registry: rendering, label cardinality limits and the "other" bucket,
 * label sanitising, exact sums across threads; admin_start's refusals; requests over a real
 * Unix socket (uid allow-list, method/path/size checks, readiness without a policy, empty bodies
 * to the decision point); the TCP listener's bearer token; how custos ctl reads an answer
 * (admin_answer: framing, a cut answer, no close_notify).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/sha.h>

#include "custos/admin.h"
#include "custos/policy.h"
#include "proxy/metrics.h"

static char *render(void)
{
	buf b;
	const char *s;

	buf_init(&b, 64u << 20);
	assert_int_equal(metrics_render(&b), CUSTOS_OK);
	assert_int_equal(buf_cstr(&b, &s), CUSTOS_OK);
	char *out = xstrdup(s);
	buf_free(&b);
	return out;
}

static size_t count_lines(const char *text, const char *needle)
{
	size_t n = 0;
	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/* Sum of the custos_requests_total samples. */
static unsigned long long requests_sum(const char *text)
{
	unsigned long long sum = 0;
	const char *p = text;
	while ((p = strstr(p, "\ncustos_requests_total{")) != NULL) {
		p++;
		const char *end = strchr(p, '\n');
		const char *sp = end;
		while (sp > p && sp[-1] != ' ')
			sp--;
		sum += strtoull(sp, NULL, 10);
		p = end;
	}
	return sum;
}

static void test_render_basic(void **state)
{
	(void)state;
	metrics_reset();
	metrics_request("allow", SPAN_LIT("/v1/chat/completions?x=1"), SPAN_LIT("m1"),
	                SPAN_LIT("alice"), 2000000, 10000, 1500000);
	metrics_request("deny", SPAN_LIT("/v1/chat/completions"), SPAN_LIT(""), SPAN_LIT(""), 1000,
	                0, 0);
	metrics_inc(METRICS_TLS_OK);
	metrics_inc(METRICS_ADMIN_TLS_FAILED);
	metrics_inc(METRICS_CONN_ACCEPTED);
	metrics_inc(METRICS_CONN_ACCEPTED);
	metrics_inc(METRICS_CONN_CLOSED);
	metrics_sandbox("llama", METRICS_SBX_RESTART);
	char *t = render();
	assert_non_null(strstr(t, "custos_requests_total{decision=\"allow\",route=\"/v1/chat/"
	                          "completions\",model=\"m1\",principal=\"alice\"} 1\n"));
	assert_non_null(strstr(t, "custos_requests_total{decision=\"deny\",route=\"/v1/chat/"
	                          "completions\",model=\"none\",principal=\"anonymous\"} 1\n"));
	assert_non_null(strstr(t, "custos_request_duration_seconds_bucket{le=\"0.0025\"} 2\n"));
	assert_non_null(strstr(t, "custos_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
	assert_non_null(strstr(t, "custos_request_duration_seconds_count 2\n"));
	assert_non_null(strstr(t, "custos_policy_evaluation_duration_seconds_count 1\n"));
	assert_non_null(strstr(t, "custos_tls_handshakes_total{result=\"ok\"} 1\n"));
	assert_non_null(strstr(t, "custos_tls_handshakes_total{result=\"failed\"} 0\n"));
	assert_non_null(strstr(t, "custos_admin_tls_handshakes_total{result=\"ok\"} 0\n"));
	assert_non_null(strstr(t, "custos_admin_tls_handshakes_total{result=\"failed\"} 1\n"));
	assert_non_null(strstr(t, "custos_open_connections 1\n"));
	assert_non_null(strstr(t, "custos_sandbox_restarts_total{sandbox=\"llama\"} 1\n"));
	assert_non_null(strstr(t, "# TYPE custos_requests_total counter\n"));
	free(t);
}

static void test_label_limits(void **state)
{
	char name[32];

	(void)state;
	metrics_reset();
	for (int i = 0; i < METRICS_MAX_PRINCIPALS + 44; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), span_cstr(name), 1, 0, 0);
	}
	/* A principal literally called "other" is the overflow bucket, not a second series. */
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), SPAN_LIT("other"), 1, 0, 0);
	char *t = render();
	assert_int_equal(count_lines(t, "\ncustos_requests_total{"), METRICS_MAX_PRINCIPALS + 1);
	assert_non_null(strstr(t, "principal=\"other\"} 45\n"));
	assert_int_equal(requests_sum(t), METRICS_MAX_PRINCIPALS + 45);
	free(t);
}

static void test_series_limit(void **state)
{
	char r[32], m[32];

	(void)state;
	metrics_reset();
	unsigned long long n = 0;
	for (int i = 0; i < METRICS_MAX_ROUTES; i++)
		for (int j = 0; j < METRICS_MAX_MODELS; j++) {
			snprintf(r, sizeof(r), "/r%d", i);
			snprintf(m, sizeof(m), "m%d", j);
			metrics_request("error", span_cstr(r), span_cstr(m), SPAN_LIT("x"), 1, 0,
			                0);
			n++;
		}
	char *t = render();
	/* Never more series than the limit, plus the one overflow series; nothing lost. */
	assert_true(count_lines(t, "\ncustos_requests_total{") <= METRICS_MAX_SERIES + 1);
	assert_non_null(strstr(t, "custos_requests_total{decision=\"error\",route=\"other\","
	                          "model=\"other\",principal=\"other\"} "));
	assert_int_equal(requests_sum(t), n);
	free(t);
}

static void test_label_sanitised(void **state)
{
	(void)state;
	metrics_reset();
	metrics_request("weird", SPAN_LIT("/a\"b\\c\nd\xc3\xa9"), SPAN_LIT("m"), SPAN_LIT("q\"}x"),
	                1, 0, 0);
	char *t = render();
	assert_non_null(strstr(t, "custos_requests_total{decision=\"other\",route=\"/a_b_c_d__\","
	                          "model=\"m\",principal=\"q_}x#b15093ee2c5e799e\"} 1\n"));
	free(t);
}

/* Principals cut or cleaned alike are still two series: the label of a name it does not keep
 * whole ends in '#' and a digest of the name (as does one that ends so itself). */
static void test_label_principal_distinct(void **state)
{
	char a[100], b[100];

	(void)state;
	metrics_reset();
	memset(a, 'p', 90);
	a[90] = '\0';
	memcpy(b, a, sizeof(b));
	b[89] = 'q';
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), span_cstr(a), 1, 0, 0);
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), span_cstr(b), 1, 0, 0);
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), SPAN_LIT("a\xc3\xa9"), 1, 0, 0);
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), SPAN_LIT("a\xc3\xa8"), 1, 0, 0);
	/* "x#" and 16 hex digits: not taken for another name's digest form */
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), SPAN_LIT("x#0123456789abcdef"), 1,
	                0, 0);
	metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), SPAN_LIT("alice"), 1, 0, 0);
	char *t = render();
	assert_int_equal(count_lines(t, "\ncustos_requests_total{"), 6);
	assert_non_null(strstr(t, "principal=\"alice\"} 1\n"));
	assert_null(strstr(t, "principal=\"x#0123456789abcdef\"}"));
	free(t);
}

#define THREADS 4
#define PER     50000
static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER; i++) {
		metrics_request("allow", SPAN_LIT("/r"), SPAN_LIT("m"), SPAN_LIT("p"), 1000, 0, 0);
		metrics_inc(METRICS_POLICY_EVALS);
	}
	return NULL;
}

static void test_threads_exact(void **state)
{
	pthread_t th[THREADS];

	(void)state;
	metrics_reset();
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	char *t = render();
	char want[128];
	snprintf(want, sizeof(want), "principal=\"p\"} %d\n", THREADS * PER);
	assert_non_null(strstr(t, want));
	snprintf(want, sizeof(want), "custos_policy_evaluations_total %d\n", THREADS * PER);
	assert_non_null(strstr(t, want));
	free(t);
}

/* ---- admin server ---- */

static char dir[64];
static char sock[128];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/custos-admin-test.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/admin.sock", dir);
	return 0;
}

static int teardown_dir(void **state)
{
	(void)state;
	unlink(sock);
	rmdir(dir);
	return 0;
}

static void test_start_refusals(void **state)
{
	admin_server *a = NULL;
	admin_options o;

	(void)state;
	memset(&o, 0, sizeof(o));
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_INVAL); /* nothing to listen on */
	o.socket_path = sock;
	o.socket_mode = 0666;
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_INVAL); /* others may connect */
	o.socket_mode = 0600;
	o.max_body = ADMIN_BODY_MAX + 1;
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_LIMIT);
	o.max_body = 0;
	o.socket_path = NULL;
	o.tcp_address = "127.0.0.1:0";
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_INVAL); /* TCP without a token */
	memset(o.token_sha256, 0xab, 32);
	o.tcp_address = "10.1.2.3:9";
	assert_int_not_equal(admin_start(&o, &a), CUSTOS_OK); /* not loopback, not forced */
	assert_non_null(strstr(err_msg(), "loopback"));
	/* admin.tls: a certificate without its key, a CA without a certificate, TLS without a
	 * TCP listener, and a certificate that cannot be read (the error names admin.tls) */
	o.tcp_address = "127.0.0.1:0";
	o.tls_cert = "/nonexistent/admin.crt";
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_INVAL);
	o.tls_cert = NULL;
	o.tls_client_ca = "/nonexistent/ca.crt";
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_INVAL);
	o.tls_cert = "/nonexistent/admin.crt";
	o.tls_key = "/nonexistent/admin.key";
	o.tcp_address = NULL;
	o.socket_path = sock;
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_INVAL);
	o.socket_path = NULL;
	o.tcp_address = "127.0.0.1:0";
	assert_int_not_equal(admin_start(&o, &a), CUSTOS_OK);
	assert_non_null(strstr(err_msg(), "admin.tls"));
	o.tls_cert = o.tls_key = o.tls_client_ca = NULL;
	o.tcp_address = "unix:/tmp/x";
	assert_int_not_equal(admin_start(&o, &a), CUSTOS_OK);
	/* A regular file where the socket should be is never replaced. */
	FILE *f = fopen(sock, "w");
	assert_non_null(f);
	fclose(f);
	o.tcp_address = NULL;
	o.socket_path = sock;
	assert_int_equal(admin_start(&o, &a), CUSTOS_ERR_EXISTS);
	unlink(sock);
	assert_null(a);
}

/* Sends req over the socket; returns the status code and copies the answer into out. */
static unsigned raw(const char *req, size_t reqlen, char *out, size_t outsz)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	memcpy(sun.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	size_t off = 0;
	while (off < reqlen) {
		ssize_t w = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
		if (w <= 0)
			break; /* the server may answer and close before reading everything */
		off += (size_t)w;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = recv(fd, out + n, outsz - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == outsz - 1)
			break;
	}
	out[n] = '\0';
	close(fd);
	unsigned st = 0;
	if (sscanf(out, "HTTP/1.%*d %u", &st) != 1)
		return 0;
	return st;
}

static unsigned get(const char *path, char *out, size_t outsz)
{
	char req[512];
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", path);
	return raw(req, (size_t)n, out, outsz);
}

static void test_server_requests(void **state)
{
	admin_server *a = NULL, *b = NULL;
	admin_options o;
	static char out[1 << 20];

	(void)state;
	memset(&o, 0, sizeof(o));
	o.socket_path = sock;
	o.max_body = 4096;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	struct stat st;
	assert_int_equal(stat(sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	/* A live socket is not taken over by a second server. */
	assert_int_equal(admin_start(&o, &b), CUSTOS_ERR_EXISTS);

	assert_int_equal(get("/healthz", out, sizeof(out)), 200);
	assert_int_equal(get("/readyz", out, sizeof(out)), 503); /* no policy hook */
	assert_non_null(strstr(out, "\"policy_loaded\":false"));
	assert_int_equal(get("/metrics", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "text/plain; version=0.0.4"));
	assert_non_null(strstr(out, "# TYPE custos_requests_total counter"));
	assert_int_equal(get("/v1/policy", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "\"loaded\":false"));
	assert_int_equal(get("/v1/audit/status", out, sizeof(out)), 200);
	/* audit off: the documented keys all the same, null (admin contract) */
	assert_non_null(strstr(
	        out, "{\"enabled\":false,\"file\":null,\"head\":null,\"last_checkpoint\":null}"));
	assert_int_equal(get("/nope", out, sizeof(out)), 404);
	assert_int_equal(get("/v1/decide", out, sizeof(out)), 405);
	/* a 405 says which methods the path takes (RFC 9110 15.5.6) */
	assert_non_null(strstr(out, "\r\nAllow: POST\r\n"));
	assert_int_equal(get("/v1/sandboxes/x/restart", out, sizeof(out)), 405);
	assert_non_null(strstr(out, "\r\nAllow: POST\r\n"));

	static const char post_big[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                               "application/json\r\nContent-Length: 5000\r\n\r\n{";
	assert_int_equal(raw(post_big, sizeof(post_big) - 1, out, sizeof(out)), 413);
	static const char post_text[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                                "text/plain\r\nContent-Length: 2\r\n\r\n{}";
	assert_int_equal(raw(post_text, sizeof(post_text) - 1, out, sizeof(out)), 415);
	static const char post_nolen[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                                 "application/json\r\nConnection: close\r\n\r\n";
	assert_int_equal(raw(post_nolen, sizeof(post_nolen) - 1, out, sizeof(out)), 411);
	static const char post_badlen[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                                  "application/json\r\nContent-Length: -1\r\n\r\n";
	unsigned s = raw(post_badlen, sizeof(post_badlen) - 1, out, sizeof(out));
	assert_true(s == 400);
	static const char decide[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                             "application/json\r\nContent-Length: 2\r\n"
	                             "Connection: close\r\n\r\n{}";
	assert_int_equal(raw(decide, sizeof(decide) - 1, out, sizeof(out)), 503); /* no policy */
	static const char reload[] = "POST /v1/policy HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
	                             "Connection: close\r\n\r\n";
	assert_int_equal(raw(reload, sizeof(reload) - 1, out, sizeof(out)), 422); /* no source */
	assert_non_null(strstr(out, "\"reloaded\":false"));
	static const char garbage[] = "\x01\x02 nonsense\r\n\r\n";
	s = raw(garbage, sizeof(garbage) - 1, out, sizeof(out));
	assert_true(s == 400 || s == 0);
	admin_stop(a);
	assert_int_equal(access(sock, F_OK), -1); /* removed */

	/* Our uid not on the allow-list: 403 for everything. */
	uint32_t other = (uint32_t)geteuid() + 12345;
	o.allowed_uids = &other;
	o.n_allowed_uids = 1;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	assert_int_equal(get("/healthz", out, sizeof(out)), 403);
	assert_int_equal(get("/metrics", out, sizeof(out)), 403);
	admin_stop(a);
}

/* ---- POST /v1/decide with a policy; the TCP listener's bearer token ---- */

static const char decide_policy[] =
        "version: 1\n"
        "principals:\n"
        "  alice: { match: { api_key_sha256: "
        "\"0000000000000000000000000000000000000000000000000000000000000001\" } }\n"
        "models:\n"
        "  m1: { isolation: process }\n"
        "rules:\n"
        "  - id: chat\n"
        "    effect: allow\n"
        "    when: { direction: ingress, principal: alice, model: m1 }\n";

static struct policy *policy_hook(void *arg)
{
	return policy_ref(arg);
}

/* An empty body (Content-Length: 0, a chunked body of only its last chunk, blanks) is a client
 * error answered 400, never handed to libyaml as a NULL string (which aborted the process). */
static void test_server_decide(void **state)
{
	admin_server *a = NULL;
	admin_options o;
	static char out[1 << 16];
	diag_list d;
	policy *p = NULL;

	(void)state;
	diag_init(&d);
	if (policy_parse("decide.yaml", decide_policy, sizeof(decide_policy) - 1, &p, &d) !=
	    CUSTOS_OK)
		diag_print(&d, stderr);
	diag_free(&d);
	assert_non_null(p);
	memset(&o, 0, sizeof(o));
	o.socket_path = sock;
	o.max_body = 4096;
	o.hooks.arg = p;
	o.hooks.policy_get = policy_hook;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);

	static const char cl0[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                          "application/json\r\nContent-Length: 0\r\n"
	                          "Connection: close\r\n\r\n";
	assert_int_equal(raw(cl0, sizeof(cl0) - 1, out, sizeof(out)), 400);
	assert_non_null(strstr(out, "empty request"));
	static const char chunk0[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                             "application/json\r\nTransfer-Encoding: chunked\r\n"
	                             "Connection: close\r\n\r\n0\r\n\r\n";
	assert_int_equal(raw(chunk0, sizeof(chunk0) - 1, out, sizeof(out)), 400);
	assert_non_null(strstr(out, "empty request"));
	static const char blank[] = "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	                            "application/json\r\nContent-Length: 3\r\n"
	                            "Connection: close\r\n\r\n \n ";
	assert_int_equal(raw(blank, sizeof(blank) - 1, out, sizeof(out)), 400);
	assert_non_null(strstr(out, "empty request"));
	static const char ok[] =
	        "POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: "
	        "application/json\r\nContent-Length: 56\r\n"
	        "Connection: close\r\n\r\n"
	        "{\"direction\":\"ingress\",\"principal\":\"alice\",\"model\":\"m1\"}";
	assert_int_equal(raw(ok, sizeof(ok) - 1, out, sizeof(out)), 200);
	assert_non_null(strstr(out, "\"allow\":true"));
	assert_int_equal(get("/healthz", out, sizeof(out)), 200);
	admin_stop(a);
	policy_unref(p);
}

static bool drain_flag;
static bool stopping_hook(void *arg)
{
	(void)arg;
	return drain_flag;
}
static int reloads_tried;
static custos_err reload_hook(void *arg, diag_list *d, char old_hash[65], char new_hash[65])
{
	(void)arg;
	(void)d;
	reloads_tried++;
	snprintf(old_hash, 65, "%s", "");
	snprintf(new_hash, 65, "%s", "");
	if (drain_flag) /* as cmd_up.c's hook refuses one during the drain */
		return err_set(CUSTOS_ERR_CLOSED, "reload: custos is stopping");
	return CUSTOS_OK;
}

/* While custos drains, /readyz says so (503, "draining": true) and a reload refused for it
 * (CUSTOS_ERR_CLOSED) is answered 503, not 422: nothing was wrong with the files. */
static void test_server_draining(void **state)
{
	admin_server *a = NULL;
	admin_options o;
	static char out[1 << 16];
	diag_list d;
	policy *p = NULL;

	(void)state;
	diag_init(&d);
	assert_int_equal(
	        policy_parse("decide.yaml", decide_policy, sizeof(decide_policy) - 1, &p, &d),
	        CUSTOS_OK);
	diag_free(&d);
	memset(&o, 0, sizeof(o));
	o.socket_path = sock;
	o.max_body = 4096;
	o.hooks.arg = p;
	o.hooks.policy_get = policy_hook;
	o.hooks.policy_reload = reload_hook;
	o.hooks.stopping = stopping_hook;
	drain_flag = false;
	reloads_tried = 0;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	static const char post[] = "POST /v1/policy HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
	                           "Connection: close\r\n\r\n";
	assert_int_equal(get("/readyz", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "\"draining\":false"));
	assert_int_equal(raw(post, sizeof(post) - 1, out, sizeof(out)), 200);
	drain_flag = true;
	assert_int_equal(get("/readyz", out, sizeof(out)), 503);
	assert_non_null(strstr(out, "\"ready\":false"));
	assert_non_null(strstr(out, "\"draining\":true"));
	assert_non_null(strstr(out, "\"policy_loaded\":true"));
	assert_int_equal(raw(post, sizeof(post) - 1, out, sizeof(out)), 503);
	assert_non_null(strstr(out, "\"reloaded\":false"));
	assert_non_null(strstr(out, "custos is stopping"));
	assert_int_equal(reloads_tried, 2);
	admin_stop(a);
	drain_flag = false;
	policy_unref(p);
}

/* Sends req to 127.0.0.1:port; returns the status code. */
static unsigned raw_tcp(unsigned port, const char *req, char *out, size_t outsz)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	size_t n = 0;
	ssize_t r;
	while (n < outsz - 1 && (r = recv(fd, out + n, outsz - 1 - n, 0)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(fd);
	unsigned st = 0;
	return sscanf(out, "HTTP/1.%*d %u", &st) == 1 ? st : 0;
}

/* The auth scheme is case-insensitive (RFC 9110 11.1); the token itself is not. */
static void test_server_bearer(void **state)
{
	admin_server *a = NULL;
	admin_options o;
	static char out[1 << 16];
	static const char token[] = "s3cret-Token";
	static const struct {
		const char *auth;
		unsigned status;
	} cases[] = {
		{ "Bearer s3cret-Token", 200 },
		{ "bearer s3cret-Token", 200 },
		{ "BEARER s3cret-Token", 200 },
		{ "bEaReR s3cret-Token", 200 },
		{ "Bearer s3cret-token", 401 },
		{ "Bearer  s3cret-Token", 200 },
		{ "Bearers3cret-Token", 401 },
		{ "Basic s3cret-Token", 401 },
		{ "Bear s3cret-Token", 401 },
		{ "Bearer ", 401 },
		{ "bearer", 401 },
		{ "s3cret-Token", 401 },
	};

	(void)state;
	memset(&o, 0, sizeof(o));
	o.tcp_address = "127.0.0.1:0";
	SHA256((const unsigned char *)token, sizeof(token) - 1, o.token_sha256);
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	unsigned port = admin_tcp_port(a);
	assert_true(port > 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char req[256];
		snprintf(req, sizeof(req),
		         "GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\n"
		         "Connection: close\r\n\r\n",
		         cases[i].auth);
		unsigned st = raw_tcp(port, req, out, sizeof(out));
		if (st != cases[i].status)
			fail_msg("Authorization: %s -> %u, want %u", cases[i].auth, st,
			         cases[i].status);
	}
	assert_int_equal(raw_tcp(port,
	                         "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	                         out, sizeof(out)),
	                 401);
	admin_stop(a);
}

/* ---- VM sandboxes in GET /v1/sandboxes (the vms_get hook; cli/vm_up.c fills it) ---- */

static size_t vm_calls;
static bool vm_b_routable;

static size_t fake_vms(void *arg, admin_vm *out, size_t max)
{
	(void)arg;
	vm_calls++;
	assert_int_equal(max, ADMIN_MAX_SANDBOXES);
	admin_vm a = { .name = "llama",
		       .domain = "custos-llama",
		       .uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f",
		       .state = "running",
		       .channel = "vsock",
		       .vsock_cid = 3,
		       .restarts = 2,
		       .started_wall_ns = 1795750511000000000ull, /* 2026-11-27T03:35:11Z */
		       .qemu_pid = 4242,
		       .seccomp = "filter",
		       .routable = true,
		       .taint = 2 };
	memset(a.profile_hash, 'a', 64);
	admin_vm b = { .name = "tcg",
		       .domain = "custos-tcg",
		       .state = "restarting",
		       .channel = "virtio-serial",
		       .qemu_pid = -1,
		       .seccomp = "pending",
		       .routable = vm_b_routable,
		       .taint = -1 };
	out[0] = a;
	out[1] = b;
	return 2;
}

/* A hook that claims more entries than it was given room for is clamped, not trusted. */
static size_t lying_vms(void *arg, admin_vm *out, size_t max)
{
	(void)arg;
	for (size_t i = 0; i < max; i++)
		out[i] = (admin_vm){ .name = "v",
			             .domain = "custos-v",
			             .state = "running",
			             .channel = "vsock",
			             .qemu_pid = -1,
			             .seccomp = "pending",
			             .routable = true,
			             .taint = -1 };
	return max + 1000;
}

static size_t count_of(const char *text, const char *needle)
{
	size_t n = 0;
	for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* admin_open_unix binds without umask(2), which is process-wide and would race other threads
 * creating files: a child runs it under a seccomp filter that kills the process on umask. The
 * socket gets the configured mode, no temporary directory is left, and a second open while
 * the first still listens is refused. */
static void test_open_unix_no_umask(void **state)
{
	(void)state;
	char tdir[] = "/tmp/custos-admin-umask-XXXXXX";
	assert_non_null(mkdtemp(tdir));
	char path[128];
	snprintf(path, sizeof(path), "%s/admin.sock", tdir);

	pid_t pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_umask, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
		    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == -1)
			_exit(3);
		int fd = -1, fd2 = -1;
		if (admin_open_unix(path, 0640, (uid_t)-1, (gid_t)-1, &fd) != CUSTOS_OK)
			_exit(4);
		if (admin_open_unix(path, 0640, (uid_t)-1, (gid_t)-1, &fd2) == CUSTOS_OK)
			_exit(5); /* a live socket is never taken over */
		close(fd);
		_exit(0);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_false(WIFSIGNALED(st)); /* SIGSYS: umask was called */
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	struct stat sb;
	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0640);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(tdir), 0); /* empty: the private bind directory is gone */
}

static void test_server_vms(void **state)
{
	admin_server *a = NULL;
	admin_options o;
	static char out[1 << 20];

	(void)state;
	memset(&o, 0, sizeof(o));
	o.socket_path = sock;
	o.hooks.vms_get = fake_vms;
	vm_b_routable = false;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	assert_int_equal(get("/v1/sandboxes", out, sizeof(out)), 200);
	assert_non_null(strstr(
	        out,
	        "{\"id\":\"llama\",\"state\":\"running\",\"kind\":\"vm\",\"pid\":4242,"
	        "\"restarts\":2,\"started\":\"2026-11-27T03:35:11.000000000Z\","
	        "\"profile_hash\":"
	        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
	        "\"taint\":\"confidential\",\"vm\":{\"domain\":\"custos-llama\","
	        "\"uuid\":\"6695eb01-f6a4-8304-79aa-97f2502e193f\",\"channel\":\"vsock\","
	        "\"vsock_cid\":3,\"qemu_pid\":4242,\"seccomp\":\"filter\",\"routable\":true}}"));
	assert_non_null(strstr(
	        out,
	        "{\"id\":\"tcg\",\"state\":\"restarting\",\"kind\":\"vm\",\"pid\":-1,"
	        "\"restarts\":0,\"started\":null,\"profile_hash\":null,\"taint\":null,"
	        "\"vm\":{\"domain\":\"custos-tcg\",\"uuid\":null,\"channel\":\"virtio-serial\","
	        "\"vsock_cid\":null,\"qemu_pid\":-1,\"seccomp\":\"pending\","
	        "\"routable\":false}}"));
	/* A VM that does not route makes the sandboxes not ready; all routing: ready. */
	get("/readyz", out, sizeof(out));
	assert_non_null(strstr(out, "\"sandboxes_ready\":false"));
	vm_b_routable = true;
	get("/readyz", out, sizeof(out));
	assert_non_null(strstr(out, "\"sandboxes_ready\":true"));
	/* The restart endpoint is for process sandboxes: a VM's name is not one of them. */
	static const char restart[] = "POST /v1/sandboxes/llama/restart HTTP/1.1\r\nHost: a\r\n"
	                              "Content-Length: 0\r\nConnection: close\r\n\r\n";
	assert_int_equal(raw(restart, sizeof(restart) - 1, out, sizeof(out)), 404);
	assert_true(vm_calls >= 3);
	admin_stop(a);

	o.hooks.vms_get = lying_vms;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	assert_int_equal(get("/v1/sandboxes", out, sizeof(out)), 200);
	assert_int_equal(count_of(out, "\"kind\":\"vm\""), ADMIN_MAX_SANDBOXES);
	admin_stop(a);

	/* No hook: no VM entries, and the array is still well-formed. */
	o.hooks.vms_get = NULL;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	assert_int_equal(get("/v1/sandboxes", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "{\"sandboxes\":[]}"));
	admin_stop(a);
}

/* ---- process sandboxes from the sandboxes_get hook (cli/privsep.c fills it): read on each
 * request, so a reload that adds or removes one shows at once ---- */

static size_t sbx_now;          /* how many of "alpha", "beta" the hook reports */
static char restarted_name[96]; /* what sandbox_restart was last asked for */
static int64_t restarted_pid;
static int restart_answer;

static size_t fake_sandboxes(void *arg, admin_sandbox_info *out, size_t max)
{
	static const char *const names[] = { "alpha", "beta" };
	(void)arg;
	assert_int_equal(max, ADMIN_MAX_SANDBOXES);
	for (size_t i = 0; i < sbx_now; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		snprintf(out[i].name, sizeof(out[i].name), "%s", names[i]);
		out[i].memory_bytes = 1024;
		out[i].st.kind = "process";
		out[i].st.running = true;
		out[i].st.pid = 100 + (int64_t)i;
		out[i].st.generation = 1;
	}
	return sbx_now;
}

static int fake_restart(void *arg, const char *name, int64_t pid)
{
	(void)arg;
	snprintf(restarted_name, sizeof(restarted_name), "%s", name);
	restarted_pid = pid;
	return restart_answer;
}

static void test_server_sandboxes_hook(void **state)
{
	admin_server *a = NULL;
	admin_options o;
	static char out[1 << 20];
	static const char restart_beta[] = "POST /v1/sandboxes/beta/restart HTTP/1.1\r\nHost: a\r\n"
	                                   "Content-Length: 0\r\nConnection: close\r\n\r\n";
	/* The static list is not used once the hook is set: "stale" never shows. */
	admin_sandbox stale = { .name = "stale" };

	(void)state;
	memset(&o, 0, sizeof(o));
	o.socket_path = sock;
	o.sandboxes = &stale;
	o.n_sandboxes = 1;
	o.hooks.sandboxes_get = fake_sandboxes;
	o.hooks.sandbox_restart = fake_restart;
	sbx_now = 1;
	restart_answer = 0;
	assert_int_equal(admin_start(&o, &a), CUSTOS_OK);
	assert_int_equal(get("/v1/sandboxes", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "{\"id\":\"alpha\",\"state\":\"running\",\"kind\":\"process\","
	                            "\"pid\":100,"));
	assert_null(strstr(out, "beta"));
	assert_null(strstr(out, "stale"));
	assert_int_equal(raw(restart_beta, sizeof(restart_beta) - 1, out, sizeof(out)), 404);

	/* Added (a reload): listed, in the metrics, restartable by name with its pid. */
	sbx_now = 2;
	assert_int_equal(get("/v1/sandboxes", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "{\"id\":\"beta\",\"state\":\"running\",\"kind\":\"process\","
	                            "\"pid\":101,"));
	assert_int_equal(get("/metrics", out, sizeof(out)), 200);
	assert_non_null(strstr(out, "custos_sandbox_up{sandbox=\"beta\"} 1\n"));
	assert_int_equal(raw(restart_beta, sizeof(restart_beta) - 1, out, sizeof(out)), 202);
	assert_string_equal(restarted_name, "beta");
	assert_int_equal(restarted_pid, 101);
	/* Removed by a reload after the request was routed: the hook says so, 404. */
	restart_answer = ENOENT;
	assert_int_equal(raw(restart_beta, sizeof(restart_beta) - 1, out, sizeof(out)), 404);
	restart_answer = 0;

	/* Removed: gone from the list and the metrics, restart 404, readiness without it. */
	sbx_now = 1;
	restarted_name[0] = '\0';
	assert_int_equal(get("/v1/sandboxes", out, sizeof(out)), 200);
	assert_null(strstr(out, "beta"));
	assert_int_equal(get("/metrics", out, sizeof(out)), 200);
	assert_null(strstr(out, "custos_sandbox_up{sandbox=\"beta\"}"));
	assert_non_null(strstr(out, "custos_sandbox_up{sandbox=\"alpha\"} 1\n"));
	assert_int_equal(raw(restart_beta, sizeof(restart_beta) - 1, out, sizeof(out)), 404);
	assert_string_equal(restarted_name, "");
	get("/readyz", out, sizeof(out));
	assert_non_null(strstr(out, "\"sandboxes_ready\":true"));
	admin_stop(a);
}

/* Feeds text to a new answer parser in pieces of step bytes (end OPEN), then once more with
 * end; returns what the last feed returned, with the status and body of a whole answer. */
static custos_err answer(const char *text, size_t step, admin_answer_end end, unsigned *status,
                         char *body, size_t cap)
{
	admin_answer *a = admin_answer_new(1024);
	size_t n = strlen(text);
	custos_err e = CUSTOS_ERR_AGAIN;

	for (size_t k = step; k < n && e == CUSTOS_ERR_AGAIN; k += step)
		e = admin_answer_feed(a, span_of(text, k), ADMIN_END_OPEN);
	if (e == CUSTOS_ERR_AGAIN)
		e = admin_answer_feed(a, span_of(text, n), end);
	*status = admin_answer_status(a);
	span b = admin_answer_body(a);
	snprintf(body, cap, "%.*s", (int)b.len, b.ptr);
	admin_answer_free(a);
	return e;
}

/* custos ctl's reading of an answer: whole by its framing whatever the end (no close_notify
 * needed), cut short before it an error whatever the end, no framing whole only at a clean end;
 * malformed heads and bodies refused. */
static void test_answer_framing(void **state)
{
	static const char cl[] = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
	static const char ch[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                         "5\r\n{\"sta\r\na;x=y\r\ntus\":\"ok\"}\r\n0\r\n\r\n";
	static const char eof[] = "HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready";
	char body[256];
	unsigned st;

	(void)state;
	for (size_t step = 1; step <= sizeof(cl); step += 7) {
		/* whole by Content-Length: OK before any end, the end not looked at */
		assert_int_equal(answer(cl, step, ADMIN_END_ABRUPT, &st, body, sizeof(body)),
		                 CUSTOS_OK);
		assert_int_equal(st, 200);
		assert_string_equal(body, "{\"status\":\"ok\"}");
		assert_int_equal(answer(ch, step, ADMIN_END_ABRUPT, &st, body, sizeof(body)),
		                 CUSTOS_OK);
		assert_string_equal(body, "{\"status\":\"ok\"}");
	}
	/* bytes past the framing's end are not the answer's */
	assert_int_equal(answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 100,
	                        ADMIN_END_CLEAN, &st, body, sizeof(body)),
	                 CUSTOS_OK);
	assert_string_equal(body, "ok");
	/* cut short: an error with or without close_notify, and no body */
	char cut[sizeof(cl)];
	snprintf(cut, sizeof(cut), "%.*s", (int)sizeof(cl) - 4, cl);
	for (int end = ADMIN_END_CLEAN; end <= ADMIN_END_ABRUPT; end++) {
		assert_int_equal(answer(cut, 5, (admin_answer_end)end, &st, body, sizeof(body)),
		                 CUSTOS_ERR_PARSE);
		assert_non_null(strstr(err_msg(), "cut short"));
		assert_int_equal(st, 0);
		assert_string_equal(body, "");
		/* a chunked body without its last chunk, and one cut inside a chunk */
		assert_int_equal(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		                        "2\r\nok\r\n",
		                        3, (admin_answer_end)end, &st, body, sizeof(body)),
		                 CUSTOS_ERR_PARSE);
		assert_int_equal(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		                        "20\r\nok",
		                        3, (admin_answer_end)end, &st, body, sizeof(body)),
		                 CUSTOS_ERR_PARSE);
		/* the head itself cut */
		assert_int_equal(answer("HTTP/1.1 200 OK\r\nContent-Len", 3, (admin_answer_end)end,
		                        &st, body, sizeof(body)),
		                 CUSTOS_ERR_PARSE);
	}
	/* no framing: whole at a clean end only */
	assert_int_equal(answer(eof, 4, ADMIN_END_CLEAN, &st, body, sizeof(body)), CUSTOS_OK);
	assert_int_equal(st, 503);
	assert_string_equal(body, "not ready");
	assert_int_equal(answer(eof, 4, ADMIN_END_ABRUPT, &st, body, sizeof(body)),
	                 CUSTOS_ERR_PARSE);
	assert_non_null(strstr(err_msg(), "close_notify"));
	/* still open and not whole: read more */
	assert_int_equal(answer(eof, 4, ADMIN_END_OPEN, &st, body, sizeof(body)), CUSTOS_ERR_AGAIN);
	/* a 204 has no body, whatever follows */
	assert_int_equal(answer("HTTP/1.1 204 No Content\r\n\r\n", 100, ADMIN_END_OPEN, &st, body,
	                        sizeof(body)),
	                 CUSTOS_OK);
	assert_int_equal(st, 204);
	/* malformed: refused as soon as seen, whatever the end */
	static const char *const bad[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
		"SSH-2.0-OpenSSH_9.2\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(answer(bad[i], 100, ADMIN_END_OPEN, &st, body, sizeof(body)),
		                 CUSTOS_ERR_PARSE);
	/* a body past the parser's bound */
	char big[1400];
	int k = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 1200\r\n\r\n");
	memset(big + k, 'x', 1200);
	big[k + 1200] = '\0';
	assert_int_equal(answer(big, 500, ADMIN_END_OPEN, &st, body, sizeof(body)),
	                 CUSTOS_ERR_LIMIT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_basic),
		cmocka_unit_test(test_answer_framing),
		cmocka_unit_test(test_label_limits),
		cmocka_unit_test(test_series_limit),
		cmocka_unit_test(test_label_sanitised),
		cmocka_unit_test(test_label_principal_distinct),
		cmocka_unit_test(test_threads_exact),
		cmocka_unit_test(test_start_refusals),
		cmocka_unit_test(test_server_requests),
		cmocka_unit_test(test_server_vms),
		cmocka_unit_test(test_server_decide),
		cmocka_unit_test(test_server_draining),
		cmocka_unit_test(test_server_bearer),
		cmocka_unit_test(test_open_unix_no_umask),
		cmocka_unit_test(test_server_sandboxes_hook),
	};
	log_setup(LOG_LVL_WARN, LOG_FMT_TEXT);
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
