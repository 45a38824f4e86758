/*
 * The egress resolver against a scripted UDP server on loopback: answers with the wrong ID or
 * to another question are ignored (a spoofed 169.254.169.254 never counts), a well-formed
 * answer is taken, a compression loop or an answer of the wrong size is refused, a server
 * that says nothing times out, a refused one is passed over at once; server strings parsed
 * strictly.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/egress_int.h"

typedef enum script { SPOOF_THEN_GOOD, LOOP, BAD_RDLEN, SILENT } script;

typedef struct fake {
	int fd;
	script sc;
	pthread_t th;
} fake;

static size_t put_answer(uint8_t *m, const uint8_t *q, size_t ql, uint16_t id, const uint8_t *rr,
                         size_t rl, uint16_t an)
{
	memcpy(m, q, ql);
	m[0] = (uint8_t)(id >> 8);
	m[1] = (uint8_t)id;
	m[2] = 0x81; /* QR, RD */
	m[3] = 0x80; /* RA, NOERROR */
	m[6] = (uint8_t)(an >> 8);
	m[7] = (uint8_t)an;
	if (rl)
		memcpy(m + ql, rr, rl);
	return ql + rl;
}

static void *fake_main(void *arg)
{
	fake *f = arg;
	uint8_t q[512], m[1024];
	for (;;) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(f->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
		if (n <= 12)
			return NULL;
		uint16_t id = (uint16_t)(q[0] << 8 | q[1]);
		uint16_t type = (uint16_t)(q[n - 4] << 8 | q[n - 3]);
		if (f->sc == SILENT)
			continue;
		/* answer records: name = pointer to the question (offset 12) */
		static const uint8_t meta[] = { 0xc0, 12, 0, 1, 0,   1,   0,   0,
			                        0,    60, 0, 4, 169, 254, 169, 254 };
		static const uint8_t good[] = { 0xc0, 12, 0, 1, 0,   1, 0, 0,
			                        0,    60, 0, 4, 127, 0, 0, 1 };
		static const uint8_t loop[] = { 0xc0, (uint8_t)(0), 0, 1, 0, 1, 0, 0,
			                        0,    60,           0, 4, 1, 2, 3, 4 };
		static const uint8_t badlen[] = {
			0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3
		};
		size_t ml;
		if (type == 28) { /* AAAA: none */
			ml = put_answer(m, q, (size_t)n, id, NULL, 0, 0);
			(void)sendto(f->fd, m, ml, 0, (struct sockaddr *)&from, fl);
			continue;
		}
		if (f->sc == SPOOF_THEN_GOOD) {
			ml = put_answer(m, q, (size_t)n, (uint16_t)(id + 1), meta, sizeof(meta), 1);
			(void)sendto(f->fd, m, ml, 0, (struct sockaddr *)&from, fl);
			/* right ID, another question (type MX) */
			ml = put_answer(m, q, (size_t)n, id, meta, sizeof(meta), 1);
			m[n - 3] = 15;
			(void)sendto(f->fd, m, ml, 0, (struct sockaddr *)&from, fl);
			ml = put_answer(m, q, (size_t)n, id, good, sizeof(good), 1);
		} else if (f->sc == LOOP) {
			uint8_t l[sizeof(loop)];
			memcpy(l, loop, sizeof(l));
			l[1] = (uint8_t)n; /* points at itself */
			ml = put_answer(m, q, (size_t)n, id, l, sizeof(l), 1);
		} else {
			ml = put_answer(m, q, (size_t)n, id, badlen, sizeof(badlen), 1);
		}
		(void)sendto(f->fd, m, ml, 0, (struct sockaddr *)&from, fl);
	}
}

static void fake_start(fake *f, script sc, char *addr, size_t an)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	f->sc = sc;
	f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(f->fd >= 0);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(f->fd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(addr, an, "127.0.0.1:%u", ntohs(sa.sin_port));
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(fake *f)
{
	shutdown(f->fd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->fd);
}

static custos_err lookup(script sc, uint64_t try_ns, ssrf_target *t)
{
	fake f;
	char addr[64];
	char *servers[1] = { addr };
	edns *d = NULL;
	fake_start(&f, sc, addr, sizeof(addr));
	assert_int_equal(edns_new(servers, 1, try_ns, &d), CUSTOS_OK);
	ssrf_host h;
	assert_int_equal(ssrf_parse_host(span_cstr("data.custos.test"), &h), CUSTOS_OK);
	custos_err e = ssrf_resolve_via(&h, 80, true, edns_lookup, d, t);
	edns_free(d);
	fake_stop(&f);
	return e;
}

static void test_spoofed_answers_ignored(void **st)
{
	(void)st;
	ssrf_target t;
	assert_int_equal(lookup(SPOOF_THEN_GOOD, 2 * NS_PER_S, &t), CUSTOS_OK);
	assert_int_equal(t.n, 1);
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)&t.addrs[0];
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), INADDR_LOOPBACK);
	assert_int_equal(ntohs(s4->sin_port), 80);
}

static void test_malformed_refused(void **st)
{
	(void)st;
	ssrf_target t;
	assert_int_equal(lookup(LOOP, 200 * 1000000ull, &t), CUSTOS_ERR_IO);
	assert_non_null(strstr(err_msg(), "malformed answer"));
	assert_int_equal(lookup(BAD_RDLEN, 200 * 1000000ull, &t), CUSTOS_ERR_IO);
	assert_int_equal(t.n, 0);
}

static void test_silent_server_times_out(void **st)
{
	(void)st;
	ssrf_target t;
	assert_int_equal(lookup(SILENT, 100 * 1000000ull, &t), CUSTOS_ERR_IO);
	assert_non_null(strstr(err_msg(), "timed out"));
}

/* A UDP port nobody listens on (bound for a moment to get it, then closed). */
static void dead_server(char *addr, size_t an)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	snprintf(addr, an, "127.0.0.1:%u", ntohs(sa.sin_port));
}

/* A server that refuses (ICMP port unreachable) is passed over without waiting for the try's
 * timeout: its refusal of the first question shows up as the error of the second question's
 * send, and the first question must not then wait for an answer that cannot come. With a try
 * timeout of an hour, waiting is a hang; the alarm is only a watchdog for that. */
static void test_refused_server_passed_over_at_once(void **st)
{
	(void)st;
	fake f;
	char dead[64], live[64];
	char *servers[2] = { dead, live };
	edns *d = NULL;
	ssrf_host h;
	ssrf_target t;
	alarm(120);
	dead_server(dead, sizeof(dead));
	fake_start(&f, SPOOF_THEN_GOOD, live, sizeof(live));
	assert_int_equal(ssrf_parse_host(span_cstr("data.custos.test"), &h), CUSTOS_OK);
	assert_int_equal(edns_new(servers, 2, 3600 * NS_PER_S, &d), CUSTOS_OK);
	for (int i = 0; i < 20; i++) { /* every lookup asks the dead server first */
		assert_int_equal(ssrf_resolve_via(&h, 80, true, edns_lookup, d, &t), CUSTOS_OK);
		assert_int_equal(t.n, 1);
	}
	edns_free(d);
	/* Only the dead server: "no DNS server answered", refused, not timed out. */
	assert_int_equal(edns_new(servers, 1, 3600 * NS_PER_S, &d), CUSTOS_OK);
	assert_int_equal(ssrf_resolve_via(&h, 80, true, edns_lookup, d, &t), CUSTOS_ERR_IO);
	assert_non_null(strstr(err_msg(), "no DNS server answered"));
	assert_non_null(strstr(err_msg(), "refused"));
	edns_free(d);
	fake_stop(&f);
	alarm(0);
}

static void test_server_strings(void **st)
{
	(void)st;
	struct sockaddr_storage ss;
	socklen_t sl;
	assert_int_equal(edns_parse_server("10.0.0.53", &ss, &sl), CUSTOS_OK);
	assert_int_equal(ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port), 53);
	assert_int_equal(edns_parse_server("127.0.0.1:5353", &ss, &sl), CUSTOS_OK);
	assert_int_equal(ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port), 5353);
	assert_int_equal(edns_parse_server("2001:db8::53", &ss, &sl), CUSTOS_OK);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(edns_parse_server("[::1]:5300", &ss, &sl), CUSTOS_OK);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port), 5300);
	assert_int_not_equal(edns_parse_server("resolver.local", &ss, &sl), CUSTOS_OK);
	assert_int_not_equal(edns_parse_server("127.0.0.1:0", &ss, &sl), CUSTOS_OK);
	assert_int_not_equal(edns_parse_server("127.0.0.1:70000", &ss, &sl), CUSTOS_OK);
	edns *d = NULL;
	assert_int_not_equal(edns_new(NULL, 0, 0, &d), CUSTOS_OK);
	assert_null(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spoofed_answers_ignored),
		cmocka_unit_test(test_malformed_refused),
		cmocka_unit_test(test_silent_server_times_out),
		cmocka_unit_test(test_refused_server_passed_over_at_once),
		cmocka_unit_test(test_server_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
