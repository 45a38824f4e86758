/*
 * Metrics registry. Label values are interned into fixed tables (claimed with a compare-and-swap,
 * never freed); a request's label combination is a key into a fixed open-addressing table of
 * series. Counts live in per-thread shards of relaxed atomics and are summed when /metrics is
 * scraped, so the request path pays a few atomic adds and never takes a lock.
 */
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

#define INTERN_CAP_MAX 512 /* 2 x the largest label limit */
#define LBL_OTHER      1023u
#define SERIES_CAP     (2 * METRICS_MAX_SERIES)
#define N_BUCKETS      16
#define N_DECISIONS    4 /* allow, deny, error, other */

#define H_BUSY         1u /* slot being written */
#define H_DEAD         2u /* slot claimed past the limit: never matches */

struct intern {
	size_t limit, cap; /* cap: power of two, >= 2 * limit */
	atomic_uint used;
	atomic_uint hash[INTERN_CAP_MAX]; /* 0 empty, H_BUSY, H_DEAD, or hash | 0x80000000 */
	char val[INTERN_CAP_MAX][METRICS_LABEL_MAX];
};

enum { H_TOTAL = 0, H_POLICY, H_UPSTREAM, H__N };

struct shard {
	alignas(64) atomic_uint_fast64_t c[METRICS__COUNTERS];
	atomic_uint_fast64_t overflow[N_DECISIONS];
	atomic_uint_fast64_t hb[H__N][N_BUCKETS + 1];
	atomic_uint_fast64_t hsum_ns[H__N];
	atomic_uint_fast64_t series[SERIES_CAP];
};

static const uint64_t bucket_ns[N_BUCKETS] = {
	100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,    25000000,
	50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 10000000000, 60000000000,
};
static const char *const bucket_le[N_BUCKETS] = {
	"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
	"0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "10",   "60",
};
static const char *const decision_name[N_DECISIONS] = { "allow", "deny", "error", "other" };

static struct shard shards[METRICS_SHARDS];
static atomic_uint next_shard;
static _Thread_local int my_shard = -1;

static struct intern t_route = { .limit = METRICS_MAX_ROUTES, .cap = 2 * METRICS_MAX_ROUTES };
static struct intern t_model = { .limit = METRICS_MAX_MODELS, .cap = 2 * METRICS_MAX_MODELS };
static struct intern t_principal = { .limit = METRICS_MAX_PRINCIPALS,
	                             .cap = 2 * METRICS_MAX_PRINCIPALS };
static struct intern t_sandbox = { .limit = METRICS_MAX_SANDBOXES,
	                           .cap = 2 * METRICS_MAX_SANDBOXES };

static atomic_uint_fast64_t series_key[SERIES_CAP]; /* 0 empty, else key + 1 */
static atomic_uint series_used;
static atomic_uint_fast64_t sbx_count[INTERN_CAP_MAX][METRICS_SBX__COUNT];

_Static_assert(2 * METRICS_MAX_PRINCIPALS <= INTERN_CAP_MAX, "intern table too small");
_Static_assert(2 * METRICS_MAX_PRINCIPALS < LBL_OTHER, "label index bits");

static struct shard *shard(void)
{
	if (my_shard < 0)
		my_shard = (int)(atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) %
		                 METRICS_SHARDS);
	return &shards[my_shard];
}

static void add(atomic_uint_fast64_t *a, uint64_t v)
{
	atomic_fetch_add_explicit(a, v, memory_order_relaxed);
}

void metrics_inc(metrics_counter c)
{
	if ((unsigned)c < METRICS__COUNTERS)
		add(&shard()->c[c], 1);
}

/* Copies s as a label value: printable ASCII only (others, '"' and '\' become '_'), cut at
 * METRICS_LABEL_MAX - 1 bytes, so rendering never needs escaping. */
static void label_clean(span s, char out[METRICS_LABEL_MAX], const char *empty)
{
	size_t n = 0;

	if (s.len == 0) {
		snprintf(out, METRICS_LABEL_MAX, "%s", empty);
		return;
	}
	for (size_t i = 0; i < s.len && n < METRICS_LABEL_MAX - 1; i++) {
		uint8_t ch = (uint8_t)s.ptr[i];
		out[n++] = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '_' : (char)ch;
	}
	out[n] = '\0';
}

/* A principal's label value: label_clean's when that is the principal's name unchanged, else
 * the cleaned start, '#' and 16 hex digits of SHA-256 over the name (also when the name ends
 * so itself), so two principals cut or cleaned alike still count apart. */
#define PRINCIPAL_DIGEST_HEX 16
static void label_principal(span s, char out[METRICS_LABEL_MAX])
{
	const size_t tail = 1 + PRINCIPAL_DIGEST_HEX;
	char hex[65];

	label_clean(s, out, "anonymous");
	size_t n = strlen(out);
	bool as_digest = n >= tail && out[n - tail] == '#';
	for (size_t i = n - tail + 1; as_digest && i < n; i++)
		as_digest = (out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f');
	if (s.len == 0 || (!as_digest && n == s.len && memcmp(out, s.ptr, n) == 0))
		return;
	if (!sha256_hex(s, hex))
		memset(hex, 'x', PRINCIPAL_DIGEST_HEX); /* OpenSSL failed: still not the name */
	size_t keep = n < METRICS_LABEL_MAX - 1 - tail ? n : METRICS_LABEL_MAX - 1 - tail;
	out[keep] = '#';
	memcpy(out + keep + 1, hex, PRINCIPAL_DIGEST_HEX);
	out[keep + tail] = '\0';
}

static uint32_t fnv1a(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h | 0x80000000u;
}

/* Index of v in t (claimed on first sight), or LBL_OTHER past the limit. */
static unsigned intern(struct intern *t, const char *v)
{
	if (strcmp(v, "other") == 0)
		return LBL_OTHER;
	uint32_t h = fnv1a(v);
	size_t mask = t->cap - 1;
	size_t k = h & mask;
	for (size_t i = 0; i < t->cap; i++, k = (k + 1) & mask) {
		unsigned cur = atomic_load_explicit(&t->hash[k], memory_order_acquire);
		if (cur == 0) {
			if (atomic_load_explicit(&t->used, memory_order_relaxed) >= t->limit)
				return LBL_OTHER;
			unsigned exp = 0;
			if (!atomic_compare_exchange_strong(&t->hash[k], &exp, H_BUSY)) {
				cur = exp;
			} else {
				if (atomic_fetch_add(&t->used, 1) >= t->limit) {
					atomic_store_explicit(&t->hash[k], H_DEAD,
					                      memory_order_release);
					return LBL_OTHER;
				}
				snprintf(t->val[k], METRICS_LABEL_MAX, "%s", v);
				atomic_store_explicit(&t->hash[k], h, memory_order_release);
				return (unsigned)k;
			}
		}
		for (int spin = 0; cur == H_BUSY && spin < 1000; spin++)
			cur = atomic_load_explicit(&t->hash[k], memory_order_acquire);
		if (cur == H_BUSY)
			return LBL_OTHER; /* being written for too long: count this one as other */
		if (cur == h && strcmp(t->val[k], v) == 0)
			return (unsigned)k;
	}
	return LBL_OTHER;
}

static const char *intern_name(const struct intern *t, unsigned i)
{
	return i == LBL_OTHER ? "other" : t->val[i];
}

/* Slot of key in the series table, or -1 past METRICS_MAX_SERIES. */
static long series_slot(uint64_t key)
{
	key += 1;
	size_t k = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & (SERIES_CAP - 1);
	for (size_t i = 0; i < SERIES_CAP; i++, k = (k + 1) & (SERIES_CAP - 1)) {
		uint64_t cur = atomic_load_explicit(&series_key[k], memory_order_acquire);
		if (cur == key)
			return (long)k;
		if (cur != 0)
			continue;
		if (atomic_fetch_add(&series_used, 1) >= METRICS_MAX_SERIES) {
			atomic_fetch_sub(&series_used, 1);
			return -1;
		}
		uint_fast64_t exp = 0;
		if (atomic_compare_exchange_strong(&series_key[k], &exp, key))
			return (long)k;
		atomic_fetch_sub(&series_used, 1);
		if (exp == key)
			return (long)k;
	}
	return -1;
}

static void observe(struct shard *sh, int h, uint64_t ns)
{
	size_t b = 0;
	while (b < N_BUCKETS && ns > bucket_ns[b])
		b++;
	add(&sh->hb[h][b], 1);
	add(&sh->hsum_ns[h], ns);
}

void metrics_request(const char *decision, span route, span model, span principal,
                     uint64_t total_ns, uint64_t policy_ns, uint64_t upstream_ns)
{
	char tmp[METRICS_LABEL_MAX];
	unsigned d = N_DECISIONS - 1;

	for (unsigned i = 0; i < N_DECISIONS - 1; i++)
		if (decision && strcmp(decision, decision_name[i]) == 0)
			d = i;
	for (size_t i = 0; i < route.len; i++)
		if (route.ptr[i] == '?') /* the query never names a route */
			route.len = i;
	label_clean(route, tmp, "none");
	unsigned ri = intern(&t_route, tmp);
	label_clean(model, tmp, "none");
	unsigned mi = intern(&t_model, tmp);
	label_principal(principal, tmp);
	unsigned pi = intern(&t_principal, tmp);
	uint64_t key = (uint64_t)d << 30 | (uint64_t)ri << 20 | (uint64_t)mi << 10 | pi;
	struct shard *sh = shard();
	long slot = series_slot(key);
	if (slot >= 0)
		add(&sh->series[slot], 1);
	else
		add(&sh->overflow[d], 1);
	observe(sh, H_TOTAL, total_ns);
	if (policy_ns)
		observe(sh, H_POLICY, policy_ns);
	if (upstream_ns)
		observe(sh, H_UPSTREAM, upstream_ns);
}

void metrics_sandbox(const char *name, metrics_sandbox_ev ev)
{
	metrics_sandbox_add(name, ev, 1);
}

void metrics_sandbox_add(const char *name, metrics_sandbox_ev ev, uint64_t n)
{
	char tmp[METRICS_LABEL_MAX];

	if ((unsigned)ev >= METRICS_SBX__COUNT)
		return;
	label_clean(span_cstr(name), tmp, "none");
	unsigned i = intern(&t_sandbox, tmp);
	if (i == LBL_OTHER)
		i = INTERN_CAP_MAX - 1; /* beyond every sandbox slot (cap <= 128) */
	add(&sbx_count[i][ev], n);
}

static uint64_t sum_counter(metrics_counter c)
{
	uint64_t v = 0;
	for (size_t i = 0; i < METRICS_SHARDS; i++)
		v += atomic_load_explicit(&shards[i].c[c], memory_order_relaxed);
	return v;
}

static custos_err family(buf *out, const char *name, const char *type, const char *help)
{
	return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static custos_err simple(buf *out, const char *name, const char *type, const char *help, uint64_t v)
{
	GUARD(family(out, name, type, help));
	return buf_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

/* A counter family with two values of one label (result="ok"/"failed", session=...). */
static custos_err counter2(buf *out, const char *name, const char *help, const char *label,
                           const char *a, uint64_t va, const char *b, uint64_t vb)
{
	GUARD(family(out, name, "counter", help));
	GUARD(buf_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, a, (unsigned long long)va));
	return buf_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, b, (unsigned long long)vb);
}

custos_err metrics_render_gauge(buf *out, const char *name, const char *help, double value)
{
	GUARD(family(out, name, "gauge", help));
	return buf_printf(out, "%s %.9g\n", name, value);
}

static custos_err histogram(buf *out, const char *name, const char *help, int h)
{
	uint64_t cum = 0, sum_ns = 0;

	GUARD(family(out, name, "histogram", help));
	for (size_t b = 0; b <= N_BUCKETS; b++) {
		uint64_t v = 0;
		for (size_t i = 0; i < METRICS_SHARDS; i++)
			v += atomic_load_explicit(&shards[i].hb[h][b], memory_order_relaxed);
		cum += v;
		GUARD(buf_printf(out, "%s_bucket{le=\"%s\"} %llu\n", name,
		                 b < N_BUCKETS ? bucket_le[b] : "+Inf", (unsigned long long)cum));
	}
	for (size_t i = 0; i < METRICS_SHARDS; i++)
		sum_ns += atomic_load_explicit(&shards[i].hsum_ns[h], memory_order_relaxed);
	GUARD(buf_printf(out, "%s_sum %.9f\n", name, (double)sum_ns / 1e9));
	return buf_printf(out, "%s_count %llu\n", name, (unsigned long long)cum);
}

static custos_err requests(buf *out)
{
	uint64_t ovf[N_DECISIONS] = { 0 };
	bool ovf_merged[N_DECISIONS] = { false };

	GUARD(family(out, "custos_requests_total", "counter",
	             "Ingress requests by decision, route, model and principal (label values past "
	             "their limit are counted as \"other\")."));
	for (size_t d = 0; d < N_DECISIONS; d++)
		for (size_t i = 0; i < METRICS_SHARDS; i++)
			ovf[d] +=
			        atomic_load_explicit(&shards[i].overflow[d], memory_order_relaxed);
	for (size_t k = 0; k < SERIES_CAP; k++) {
		uint64_t key = atomic_load_explicit(&series_key[k], memory_order_acquire);
		if (key == 0)
			continue;
		key -= 1;
		unsigned d = (unsigned)(key >> 30) & 3, ri = (unsigned)(key >> 20) & 1023,
		         mi = (unsigned)(key >> 10) & 1023, pi = (unsigned)key & 1023;
		uint64_t v = 0;
		for (size_t i = 0; i < METRICS_SHARDS; i++)
			v += atomic_load_explicit(&shards[i].series[k], memory_order_relaxed);
		if (ri == LBL_OTHER && mi == LBL_OTHER && pi == LBL_OTHER) {
			v += ovf[d]; /* the overflow series has exactly these labels */
			ovf_merged[d] = true;
		}
		GUARD(buf_printf(out,
		                 "custos_requests_total{decision=\"%s\",route=\"%s\",model=\"%s\","
		                 "principal=\"%s\"} %llu\n",
		                 decision_name[d], intern_name(&t_route, ri),
		                 intern_name(&t_model, mi), intern_name(&t_principal, pi),
		                 (unsigned long long)v));
	}
	for (size_t d = 0; d < N_DECISIONS; d++)
		if (ovf[d] && !ovf_merged[d])
			GUARD(buf_printf(out,
			                 "custos_requests_total{decision=\"%s\",route=\"other\","
			                 "model=\"other\",principal=\"other\"} %llu\n",
			                 decision_name[d], (unsigned long long)ovf[d]));
	return CUSTOS_OK;
}

static custos_err sandboxes(buf *out)
{
	static const struct {
		const char *name, *help;
	} fam[METRICS_SBX__COUNT] = {
		{ "custos_sandbox_restarts_total", "Sandbox instance restarts." },
		{ "custos_sandbox_violations_total", "Denied system calls in sandboxes." },
		{ "custos_sandbox_oom_kills_total",
		  "Sandbox instances killed at their memory limit." },
		{ "custos_sandbox_limit_hits_total", "Sandbox pids/memory/cpu limit hits." },
	};
	for (size_t f = 0; f < METRICS_SBX__COUNT; f++) {
		GUARD(family(out, fam[f].name, "counter", fam[f].help));
		for (size_t k = 0; k < INTERN_CAP_MAX; k++) {
			unsigned h = k < t_sandbox.cap ? atomic_load_explicit(&t_sandbox.hash[k],
			                                                      memory_order_acquire)
			                               : 0;
			bool other = k == INTERN_CAP_MAX - 1;
			if (!other && h < 0x80000000u)
				continue;
			uint64_t v = atomic_load_explicit(&sbx_count[k][f], memory_order_relaxed);
			if (other && v == 0)
				continue;
			GUARD(buf_printf(out, "%s{sandbox=\"%s\"} %llu\n", fam[f].name,
			                 other ? "other" : t_sandbox.val[k],
			                 (unsigned long long)v));
		}
	}
	return CUSTOS_OK;
}

custos_err metrics_render(buf *out)
{
	uint64_t acc = sum_counter(METRICS_CONN_ACCEPTED), clo = sum_counter(METRICS_CONN_CLOSED);

	GUARD(requests(out));
	GUARD(histogram(out, "custos_request_duration_seconds",
	                "Ingress request latency, accept of the request head to the last byte.",
	                H_TOTAL));
	GUARD(histogram(out, "custos_policy_evaluation_duration_seconds",
	                "Time spent in policy evaluation per request.", H_POLICY));
	GUARD(histogram(out, "custos_upstream_duration_seconds",
	                "Time from upstream connect to the end of its response.", H_UPSTREAM));
	GUARD(counter2(out, "custos_tls_handshakes_total",
	               "TLS handshakes on the proxy's listeners (the admin listener's: "
	               "custos_admin_tls_handshakes_total).",
	               "result", "ok", sum_counter(METRICS_TLS_OK), "failed",
	               sum_counter(METRICS_TLS_FAILED)));
	GUARD(simple(out, "custos_tls_buffer_releases_total", "counter",
	             "Idle client TLS connections that gave their record buffers back.",
	             sum_counter(METRICS_TLS_BUFFERS_RELEASED)));
	GUARD(counter2(out, "custos_upstream_tls_handshakes_total",
	               "TLS handshakes custos made with upstreams, full or resumed from a session.",
	               "session", "full", sum_counter(METRICS_UPSTREAM_TLS_FULL), "resumed",
	               sum_counter(METRICS_UPSTREAM_TLS_RESUMED)));
	GUARD(simple(out, "custos_upstream_errors_total", "counter",
	             "Upstream connect, TLS and protocol failures.",
	             sum_counter(METRICS_UPSTREAM_ERRORS)));
	GUARD(simple(out, "custos_policy_evaluations_total", "counter",
	             "Policy evaluations (proxy and decision endpoint).",
	             sum_counter(METRICS_POLICY_EVALS)));
	GUARD(counter2(out, "custos_policy_reloads_total",
	               "Policy/configuration reloads (SIGHUP and admin API).", "result", "ok",
	               sum_counter(METRICS_POLICY_RELOAD_OK), "failed",
	               sum_counter(METRICS_POLICY_RELOAD_FAILED)));
	GUARD(simple(out, "custos_connections_accepted_total", "counter",
	             "Client connections accepted.", acc));
	GUARD(simple(out, "custos_connections_shed_total", "counter",
	             "Client connections closed at accept: limits.max_connections reached.",
	             sum_counter(METRICS_CONN_SHED)));
	GUARD(simple(out, "custos_open_connections", "gauge", "Client connections open now.",
	             acc >= clo ? acc - clo : 0));
	GUARD(simple(out, "custos_decide_requests_total", "counter",
	             "Decisions answered by POST /v1/decide.", sum_counter(METRICS_DECIDE)));
	GUARD(simple(out, "custos_admin_requests_total", "counter", "Admin API requests.",
	             sum_counter(METRICS_ADMIN_REQUESTS)));
	GUARD(simple(out, "custos_admin_denied_total", "counter",
	             "Admin API callers refused (401/403), requests libmicrohttpd refused itself, "
	             "connections closed with an incomplete request head past their deadline or "
	             "shed for a slot, and failed handshakes on the admin TLS listener.",
	             sum_counter(METRICS_ADMIN_DENIED)));
	GUARD(counter2(out, "custos_admin_tls_handshakes_total",
	               "TLS handshakes on the admin TCP listener (admin.tls); failed: every "
	               "accepted connection whose handshake did not complete.",
	               "result", "ok", sum_counter(METRICS_ADMIN_TLS_OK), "failed",
	               sum_counter(METRICS_ADMIN_TLS_FAILED)));
	GUARD(counter2(
	        out, "custos_proxy_protocol_total",
	        "Connections on proxy_protocol listeners: PROXY header taken (ok), or closed "
	        "for a missing, malformed or late header or a peer outside "
	        "proxy_protocol_from (rejected).",
	        "result", "ok", sum_counter(METRICS_PP_OK), "rejected",
	        sum_counter(METRICS_PP_REJECTED)));
	return sandboxes(out);
}

void metrics_reset(void)
{
	memset(shards, 0, sizeof(shards));
	memset(series_key, 0, sizeof(series_key));
	memset(sbx_count, 0, sizeof(sbx_count));
	atomic_store(&series_used, 0);
	struct intern *ts[] = { &t_route, &t_model, &t_principal, &t_sandbox };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ts); i++) {
		memset(ts[i]->hash, 0, sizeof(ts[i]->hash));
		atomic_store(&ts[i]->used, 0);
	}
}
