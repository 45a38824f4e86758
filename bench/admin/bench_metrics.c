/* Cost of the metrics registry on the request path (ns per metrics_request, 1 and N threads)
 * and of a scrape (metrics_render with every request series in use). bench/admin/run.sh. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/metrics.h"

static long iters = 5000000;
static int rotate;

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Each thread reports its own CPU time (the machine is shared: wall time is not ours). */
static void *run(void *arg)
{
	char names[200][16];
	uint64_t *cpu = arg;
	uint64_t t0 = cpu_ns();
	for (int i = 0; i < 200; i++)
		snprintf(names[i], sizeof(names[i]), "principal-%d", i);
	for (long i = 0; i < iters; i++)
		metrics_request("allow", SPAN_LIT("/v1/chat/completions"), SPAN_LIT("llama-8b"),
		                span_cstr(rotate ? names[i % 200] : names[0]), 1234567, 20000,
		                1000000);
	*cpu = cpu_ns() - t0;
	return NULL;
}

static double measure(int threads)
{
	pthread_t th[64];
	uint64_t cpu[64] = { 0 }, sum = 0;
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, run, &cpu[i]);
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		sum += cpu[i];
	}
	return (double)sum / threads / (double)iters; /* CPU ns per update, per thread */
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2;
	if (threads < 1 || threads > 64)
		threads = 2;
	for (rotate = 0; rotate <= 1; rotate++) {
		metrics_reset();
		double one = measure(1);
		metrics_reset();
		double many = measure(threads);
		printf("{\"labels\":\"%s\",\"ns_per_request_1_thread\":%.1f,"
		       "\"ns_per_request_%d_threads\":%.1f}\n",
		       rotate ? "200 principals" : "one series", one, threads, many);
	}
	metrics_reset();
	char r[32], m[32];
	for (int i = 0; i < METRICS_MAX_ROUTES; i++)
		for (int j = 0; j < METRICS_MAX_MODELS; j++) {
			snprintf(r, sizeof(r), "/r%d", i);
			snprintf(m, sizeof(m), "m%d", j);
			metrics_request("allow", span_cstr(r), span_cstr(m), SPAN_LIT("p"), 1, 0,
			                0);
		}
	buf b;
	buf_init(&b, 64u << 20);
	uint64_t t0 = cpu_ns();
	int n = 100;
	for (int i = 0; i < n; i++) {
		buf_reset(&b);
		if (metrics_render(&b) != CUSTOS_OK)
			return 1;
	}
	printf("{\"scrape_us_full_series\":%.1f,\"scrape_bytes\":%zu}\n",
	       (double)(cpu_ns() - t0) / n / 1000.0, buf_used(&b));
	buf_free(&b);
	return 0;
}
