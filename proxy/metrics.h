/*
 * Metrics registry for the proxy and the admin API: counters, one request counter with bounded
 * labels (decision, route, model, principal) and latency histograms with fixed buckets. Every
 * update is one relaxed atomic add on the calling thread's own shard (no lock, no allocation);
 * /metrics sums the shards at scrape time. Process-wide: one proxy per process.
 */
#ifndef CUSTOS_PROXY_METRICS_H
#define CUSTOS_PROXY_METRICS_H

#include "custos/core.h"

/* Named limits (STYLE.md 6). Label values past a limit are counted under "other". */
#define METRICS_SHARDS         32   /* per-thread shards (threads beyond share them) */
#define METRICS_MAX_ROUTES     32   /* distinct `route` label values */
#define METRICS_MAX_MODELS     64   /* distinct `model` label values */
#define METRICS_MAX_PRINCIPALS 256  /* distinct `principal` label values */
#define METRICS_MAX_SERIES     1024 /* distinct label combinations of custos_requests_total */
#define METRICS_MAX_SANDBOXES  64   /* distinct `sandbox` label values */
#define METRICS_LABEL_MAX      64   /* bytes of a label value kept (longer: truncated) */

typedef enum metrics_counter {
	METRICS_TLS_OK = 0,
	METRICS_TLS_FAILED,
	METRICS_UPSTREAM_ERRORS,
	METRICS_POLICY_EVALS,
	METRICS_POLICY_RELOAD_OK,
	METRICS_POLICY_RELOAD_FAILED,
	METRICS_CONN_ACCEPTED,
	METRICS_CONN_CLOSED,
	METRICS_DECIDE,
	METRICS_ADMIN_REQUESTS,
	METRICS_ADMIN_DENIED,
	METRICS_TLS_BUFFERS_RELEASED,
	METRICS_ADMIN_TLS_OK,         /* the admin TLS gate's handshakes (admin_tls.c) */
	METRICS_ADMIN_TLS_FAILED,     /* failed, timed out, shed or refused before one */
	METRICS_UPSTREAM_TLS_FULL,    /* TLS handshakes with upstreams: full */
	METRICS_UPSTREAM_TLS_RESUMED, /* resumed from a session (tls.c) */
	METRICS_PP_OK,                /* PROXY protocol headers taken (conn.c) */
	METRICS_PP_REJECTED,          /* connections closed for theirs, or an untrusted peer */
	METRICS_CONN_SHED,            /* closed at accept over max_connections (conn.c) */
	METRICS__COUNTERS
} metrics_counter;

typedef enum metrics_sandbox_ev {
	METRICS_SBX_RESTART = 0,
	METRICS_SBX_VIOLATION,
	METRICS_SBX_OOM,
	METRICS_SBX_LIMIT,
	METRICS_SBX__COUNT
} metrics_sandbox_ev;

/* Adds one to counter c. */
void metrics_inc(metrics_counter c);
/* Counts one finished request (decision "allow"/"deny"/"error", anything else is "other")
 * and records its latencies (0: phase not reached, not recorded). */
void metrics_request(const char *decision, span route, span model, span principal,
                     uint64_t total_ns, uint64_t policy_ns, uint64_t upstream_ns);
/* Counts a sandbox event for the sandbox named name. */
void metrics_sandbox(const char *name, metrics_sandbox_ev ev);
/* The same, adding n. */
void metrics_sandbox_add(const char *name, metrics_sandbox_ev ev, uint64_t n);
/* Appends every metric in Prometheus text format (0.0.4) to out. */
custos_err metrics_render(buf *out) CUSTOS_WUR;
/* Appends one gauge family with a single sample (HELP and TYPE lines included). */
custos_err metrics_render_gauge(buf *out, const char *name, const char *help,
                                double value) CUSTOS_WUR;
/* Zeroes everything (tests only: not safe while other threads update). */
void metrics_reset(void);

#endif
