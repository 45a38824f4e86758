/*
 * custos policy benchmark: compile time and memory for a generated policy, then decisions per
 * second on one thread and per-decision latency (p50/p99, timer included) over the generated
 * request set. Prints one JSON line; bench/policy/run.sh puts it beside Cedar's.
 * usage: bench_policy DIR SECONDS EQ_N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/policy.h"

#define MAX_REQ 4096
#define MAX_LAT (1u << 21)

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: bench_policy DIR SECONDS EQ_N\n");
		return 2;
	}
	char path[4096];
	double seconds = strtod(argv[2], NULL);
	long eqn = strtol(argv[3], NULL, 10);
	snprintf(path, sizeof(path), "%s/policy.yaml", argv[1]);

	/* compile: median of several runs (file read + YAML parse + validation + index) */
	double ms[7];
	int runs = 7;
	policy *p = NULL;
	for (int i = 0; i < runs; i++) {
		diag_list d;
		diag_init(&d);
		policy *q = NULL;
		uint64_t t0 = tm_mono_ns();
		if (policy_load(path, &q, &d) != CUSTOS_OK) {
			diag_print(&d, stderr);
			return 1;
		}
		ms[i] = (double)(tm_mono_ns() - t0) / 1e6;
		diag_free(&d);
		if (p == NULL)
			p = q;
		else
			policy_unref(q);
	}
	qsort(ms, (size_t)runs, sizeof(ms[0]), cmp_double);

	/* requests */
	snprintf(path, sizeof(path), "%s/requests.jsonl", argv[1]);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		perror(path);
		return 1;
	}
	static policy_request reqs[MAX_REQ];
	static policy_request_doc *keep[MAX_REQ];
	size_t n = 0;
	char line[4096];
	while (n < MAX_REQ && fgets(line, sizeof(line), f)) {
		diag_list d;
		diag_init(&d);
		if (policy_request_parse(p, line, strlen(line), &reqs[n], &keep[n], &d) !=
		    CUSTOS_OK) {
			diag_print(&d, stderr);
			return 1;
		}
		reqs[n].time_ns = 1800000000ull * 1000000000ull;
		diag_free(&d);
		n++;
	}
	fclose(f);
	if (n == 0)
		return 1;

	/* decision vector, for the equivalence check with Cedar */
	policy_decision dec;
	unsigned allows = 0;
	uint32_t digest = 2166136261u;
	for (size_t i = 0; i < (size_t)eqn && i < n; i++) {
		policy_evaluate(p, &reqs[i], &dec);
		allows += dec.effect == POLICY_ALLOW;
		digest = (digest ^ (dec.effect == POLICY_ALLOW)) * 16777619u;
	}

	/* warm-up, then throughput on this thread */
	size_t considered = 0;
	for (size_t i = 0; i < 200000; i++) {
		policy_evaluate(p, &reqs[i % n], &dec);
		considered += dec.n_considered;
	}
	uint64_t t0 = tm_mono_ns(), end = t0 + (uint64_t)(seconds * 1e9), now;
	size_t count = 0;
	do {
		for (int k = 0; k < 1024; k++) {
			policy_evaluate(p, &reqs[count % n], &dec);
			count++;
		}
		now = tm_mono_ns();
	} while (now < end);
	double dps = (double)count / ((double)(now - t0) / 1e9);

	/* latency: each decision timed alone (the two clock reads are included) */
	uint32_t *lat = malloc(sizeof(uint32_t) * MAX_LAT);
	size_t nl = 0;
	for (; nl < MAX_LAT; nl++) {
		uint64_t a = tm_mono_ns();
		policy_evaluate(p, &reqs[nl % n], &dec);
		uint64_t b = tm_mono_ns();
		lat[nl] = (uint32_t)(b - a);
	}
	qsort(lat, nl, sizeof(uint32_t), cmp_u32);
	uint32_t timer[4096];
	for (size_t i = 0; i < 4096; i++) {
		uint64_t a = tm_mono_ns();
		uint64_t b = tm_mono_ns();
		timer[i] = (uint32_t)(b - a);
	}
	qsort(timer, 4096, sizeof(uint32_t), cmp_u32);

	printf("{\"rules\":%zu,\"compile_ms_median\":%.2f,\"compile_ms_min\":%.2f,"
	       "\"memory_bytes\":%zu,\"bytes_per_rule\":%.0f,\"decisions_per_s\":%.0f,"
	       "\"p50_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,\"timer_ns\":%u,"
	       "\"avg_considered\":%.1f,\"allows\":%u,\"digest\":%u,\"requests\":%zu}\n",
	       policy_rule_count(p), ms[runs / 2], ms[0], policy_memory_bytes(p),
	       (double)policy_memory_bytes(p) / (double)policy_rule_count(p), dps,
	       lat[nl / 2] / 1000.0, lat[nl * 99 / 100] / 1000.0, lat[nl * 999 / 1000] / 1000.0,
	       timer[2048], (double)considered / 200000.0, allows, digest, n);
	free(lat);
	for (size_t i = 0; i < n; i++)
		policy_request_doc_free(keep[i]);
	policy_unref(p);
	return 0;
}
