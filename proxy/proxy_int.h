/*
 * Ingress proxy internals shared by the files of proxy/: the reloadable state, workers, client and
 * upstream connections, identity, limits, and the two integration points (decide.c for
 * policy, emit.c for audit).
 */
#ifndef CUSTOS_PROXY_INT_H
#define CUSTOS_PROXY_INT_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "custos/crl.h"
#include "custos/proxy.h"
#include "http1.h"
#include "loop.h"
#include "openai.h"
#include "sse.h"

#define PROXY_INBUF_MAX (HTTP1_MAX_HEAD_BYTES + 64u * 1024u)
#define PROXY_UPIN_MAX  (64u * 1024u) /* upstream read buffer */
#define PROXY_MAX_SAN   8
/* Connections a readable listener gives in a row before the loop turns to other events (each
 * starts its TLS handshake at once): 4, as HAProxy's tune.maxaccept; 64 let a burst of
 * handshakes hold the answers of established connections (handshake p99 +50%). */
#define PROXY_ACCEPT_BATCH 4

/* For results that cannot change what happens next (truncation of a label, a best-effort
 * error body); gcc does not let a (void) cast drop warn_unused_result. */
static inline void proxy_ignore(custos_err e)
{
	(void)e;
}

/* ---- identity (ident.c, jwt.c) ---- */
typedef enum ident_method {
	IDENT_NONE = 0,
	IDENT_MTLS,
	IDENT_API_KEY,
	IDENT_JWT,
} ident_method;

typedef struct ident {
	ident_method method;
	/* mTLS facts (copied out of the peer certificate at handshake end) */
	bool has_cert;
	char *san_uri[PROXY_MAX_SAN];
	size_t n_uri;
	char *san_dns[PROXY_MAX_SAN];
	size_t n_dns;
	char *san_email[PROXY_MAX_SAN];
	size_t n_email;
	char *cn;
	char *issuer;
	/* bearer */
	bool has_api_key;
	uint8_t api_key_sha256[32];
	char *key_principal; /* from proxy api_keys, when configured and matched */
	/* JWT (verified) */
	char *jwt_iss, *jwt_sub;
	bool jwt_iss_names; /* the issuer is part of the name: not the only one accepted */
	char *jwt_groups[POLICY_MAX_JWT_GROUPS];
	size_t n_jwt_groups;
} ident;

void ident_clear_bearer(ident *id);
void ident_free(ident *id);
/* Copies the verified peer certificate's SANs, CN and issuer into id. */
void ident_from_cert(ident *id, SSL *ssl);
/* SHA-256 of the key; matches it against keys[] in constant time (every key compared). */
void ident_api_key(ident *id, span key, const proxy_api_key *keys, size_t n);
/* A short printable name for logs and audit: principal id if known, else a fact. */
const char *ident_label(const ident *id);
/* The name of an authenticated identity no policy principal matched, into out: its kind and
 * its fact ("cert:" SAN URI, "cert-dns:", "cert-email:", "cert-cn:", "jwt:" sub, or "jwt:"
 * issuer, space, sub where several issuers are accepted, "key:" key id, "unnamed-cert"). Two
 * identities never get one name: a name too long is cut and ends in '#' and the SHA-256 of the
 * whole (as does one that ends so by itself), and policy_principal_id_reserved refuses all of
 * them as principal ids (docs/POLICY.md section 3). */
void ident_unmatched_label(const ident *id, char out[PROXY_PRINCIPAL_MAX]);

struct jwks;
custos_err jwks_load(const char *path, struct jwks **out) CUSTOS_WUR;
void jwks_free(struct jwks *k);
/* Verifies token (signature against k, exp/nbf with leeway, iss, aud) and fills id's JWT
 * fields. CUSTOS_ERR_DENIED with a reason in err_msg when the token is not acceptable. */
custos_err jwt_verify(const struct jwks *k, const proxy_jwt_opts *o, span token, uint64_t now_s,
                      ident *id) CUSTOS_WUR;

/* ---- reloadable state ---- */
typedef struct proxy_state {
	atomic_uint refs;
	uint64_t gen;
	proxy_options o;
	SSL_CTX *srv_ctx[PROXY_MAX_LISTENERS]; /* per listener; NULL for plain ones */
	SSL_CTX *up_ctx[PROXY_MAX_UPSTREAMS];
	struct jwks *jwks;
	struct decide_policy *pol;
	http1_limits hlim;
	uint64_t max_body;
} proxy_state;

proxy_state *state_ref(proxy_state *st);
void state_unref(proxy_state *st);

/* ---- TLS (tls.c) ---- */
/* The server context of one listener; listener (its address) goes into the session id
 * context, so a session resumes only on the listener, client_auth mode and client CA bundle
 * that made it. *out is the caller's (SSL_CTX_free). */
custos_err tls_server_ctx(const char *listener, const proxy_tls_opts *o, SSL_CTX **out) CUSTOS_WUR;
/* The session ticket keys' rotation period (ns; 0: 12 h), one for the process: set from the
 * options in force (server.c: the last TLS listener with tickets), never from a context made
 * for a reload that may yet be refused. */
void tls_ticket_rotation_set(uint64_t ns);
/* The client context of one TLS upstream, with nslots session slots (one per worker; 0: no
 * resumption). *out is the caller's (SSL_CTX_free frees the slots' sessions). */
custos_err tls_client_ctx(const proxy_upstream_opts *u, unsigned nslots, SSL_CTX **out) CUSTOS_WUR;
/* Before the handshake of ssl (made on such a context): ties it to slot slot_no (the worker's
 * id) and offers the slot's session. A TLS 1.3 session leaves the slot (single use); sessions
 * the upstream gives on ssl later replace the slot's. */
void tls_client_session_offer(SSL *ssl, unsigned slot_no);
/* After a failed handshake on ssl: its slot's session is dropped (no retry of a bad one). */
void tls_client_session_failed(SSL *ssl);
/* The name an upstream's certificate is checked against when it has no tls_name: the host of
 * address ("host:port", "[v6]:port"), an IPv6 literal without its brackets, in out (n bytes);
 * NULL when there is none or it does not fit. */
const char *tls_upstream_name(const char *address, char *out, size_t n);
/* tls_openssl_err: custos/crl.h (core/crl.c). */

/* ---- sockets with optional TLS (sock.c) ---- */
enum { SOCK_OK = 0, SOCK_AGAIN = -1, SOCK_EOF = -2, SOCK_ERR = -3 };
typedef struct sock {
	int fd;
	SSL *ssl;
	bool rd_ready, wr_ready; /* epoll said so and no EAGAIN since */
	bool hup; /* the peer shut its side down (or the socket failed): a short read leaves
	           * rd_ready, as the end of the stream has no edge of its own to come */
	uint8_t rd_blocked, wr_blocked; /* 0, 'r' or 'w': what the last AGAIN waited for */
	bool closed_write;
	/* Why the TLS handshake failed (set only then): OpenSSL's error, or errno for a
	 * socket error (0 and 0: the peer closed). */
	unsigned long hs_err;
	int hs_errno;
	/* The fatal TLS alert the peer ended the connection with (1 + its code; 0: none), set
	 * by a read or write that failed on it (tls_err_peer_alert). */
	int peer_alert;
} sock;
void sock_event(sock *s, uint32_t events);
bool sock_can_read(const sock *s);
bool sock_can_write(const sock *s);
/* True when the peer's bytes wait unread: decrypted in OpenSSL, or in the socket (a peek, not
 * a read; a TLS record there counts, whatever it holds). */
bool sock_bytes_waiting(const sock *s);
/* Reads into b (at most max bytes): >0 bytes, or SOCK_AGAIN/SOCK_EOF/SOCK_ERR. */
ssize_t sock_read(sock *s, buf *b, size_t max);
/* Writes from b, consuming what was written: >=0 bytes, or SOCK_AGAIN/SOCK_ERR. */
ssize_t sock_write(sock *s, buf *b);
/* TLS handshake step: SOCK_OK done, SOCK_AGAIN, SOCK_ERR. */
int sock_handshake(sock *s);
/* After SOCK_ERR from sock_handshake: why, as text in out (the certificate verify error, or
 * OpenSSL's reason: an alert received or sent, a protocol the listener refuses...). */
void sock_handshake_reason(const sock *s, char *out, size_t n);
/* Bytes the peer sent on this TLS connection so far (0: it never spoke). */
uint64_t sock_bytes_read(const sock *s);
void sock_close(sock *s);
/* Attaches fd to ssl through a BIO that uses recv/send (OpenSSL's socket BIO uses
 * read/write); the fd stays the caller's to close. Returns false when out of memory. */
bool sock_ssl_set_fd(SSL *ssl, int fd);

/* ---- limits: rate and token budgets per principal, shared by workers (limits.c) ---- */
struct limiter;
custos_err limiter_new(struct limiter **out) CUSTOS_WUR;
void limiter_free(struct limiter *l);
typedef enum limit_result { LIMIT_OK = 0, LIMIT_RATE, LIMIT_TOKENS } limit_result;
/* Windows of the limits: a second, a minute, an hour, a day (policy.h, POLICY_WINDOW_*). */
#define LIMIT_WINDOWS 4
/* Checks every limit at once: rate[w] requests (a bucket refilled over window w) and tokens[w]
 * tokens charged in the current window w, for each w whose count is not 0. Passed: one request
 * is taken from every bucket. Refused: nothing is taken, and *retry_ns is how long until a
 * request would pass (every bucket refilled to one request, every spent budget's window over). */
limit_result limiter_check(struct limiter *l, const char *key, const uint64_t rate[LIMIT_WINDOWS],
                           const uint64_t tokens[LIMIT_WINDOWS], uint64_t now_ns,
                           uint64_t *retry_ns);
/* Charges used tokens to each of the principal's budget windows that has a limit. */
void limiter_charge(struct limiter *l, const char *key, uint64_t used,
                    const uint64_t tokens[LIMIT_WINDOWS], uint64_t now_ns);

/* ---- policy (decide.c) ---- */
typedef struct decide_in {
	const ident *id;
	span method, path, model;
	uint64_t body_size;
	bool authenticated;
	const struct sockaddr *client; /* the client's address (policy `client`); NULL: unknown */
	int taint; /* the model's sandbox's taint (policy_class); below 0: public */
} decide_in;

typedef struct decide_out {
	bool allow;         /* what the proxy does */
	bool verdict_allow; /* what enforcement decided */
	bool shadow;
	bool principal_known;
	char principal[PROXY_PRINCIPAL_MAX];
	const char *reason;
	char rules[256]; /* comma-separated rule ids */
	uint64_t max_body, max_tokens;
	uint64_t rate, rate_ns, tokens, tokens_ns;                   /* the tightest, for display */
	uint64_t rate_per[LIMIT_WINDOWS], tokens_per[LIMIT_WINDOWS]; /* every one applies */
	char policy_hash[65];
	/* content inspection (ingress_inspect.c): per-detector actions, the policy's engine */
	bool has_inspect;
	uint8_t insp_prompt[64], insp_response[64];
	const struct inspect_engine *insp_engine; /* owned by the policy state */
	uint64_t insp_engine_id;                  /* unique per engine (per-thread scratch) */
	uint8_t audit; /* the merged `audit:` obligation (policy_audit_level) */
} decide_out;

struct decide_policy;
custos_err decide_load(const char *path, struct decide_policy **out) CUSTOS_WUR;
void decide_free(struct decide_policy *p);
/* The compiled policy with one more reference (policy_unref), NULL when p is NULL. */
struct policy *decide_policy_ref(struct decide_policy *p);
/* Only the principal (principal, principal_known; the rest of *out zeroed): for requests
 * refused before the policy is asked, so that their event still names who sent them. */
void decide_principal(struct decide_policy *p, const ident *id, decide_out *out);
/* The decision; principal_known says whether a principal matches (tells 401 from 403). */
void decide_eval(struct decide_policy *p, const decide_in *in, decide_out *out);
/* Whether an ingress decision can depend on the model's taint (decide_in.taint): only then
 * is it fetched (proxy_options.taint_get takes a lock shared by the workers). */
bool decide_needs_taint(const struct decide_policy *p);

/* ---- audit (emit.c) ---- */
typedef struct emit_rec {
	const char *type; /* "http.request" or "http.reject" */
	const char *request_id;
	const char *principal;
	const char *auth; /* method */
	const char *remote;
	const char *via; /* the load balancer's address when a PROXY header named remote */
	/* that v2 header's AUTHORITY (a checked host name) and UNIQUE_ID (hex), or NULL */
	const char *via_authority, *via_unique_id;
	span method, path, model;
	span model_requested; /* the body's `model` when it differs from model (else empty) */
	unsigned status;
	const char *decision; /* "allow", "deny", "error" */
	const char *reason;
	const char *rules;
	bool shadow;
	unsigned shadow_status; /* shadow mode: the status enforcement would have answered */
	const char *upstream;
	uint64_t bytes_in, bytes_out;
	uint64_t prompt_tokens, completion_tokens;
	bool tokens_estimated; /* no usage came back: the token counts are custos' estimate */
	bool stream;
	uint64_t t_tls, t_policy, t_upstream, t_total;
	const char *policy_hash;
	const struct audit_finding *findings; /* content inspection: types and counts */
	size_t nfindings;
	const char *inspect; /* "prompt:redact response:log", or NULL */
	uint64_t t_inspect;
	/* `audit: bodies_hashed` (or `bodies`): SHA-256 (hex) of the request body as the client
	 * sent it, of the body forwarded when inspection rewrote it, of the response body the
	 * client received (a completed response only); NULL: not recorded. audit: the level. */
	const char *audit_level;
	const char *req_body_sha256, *req_body_fwd_sha256, *resp_body_sha256;
	/* `audit: bodies`: the request body as forwarded (req_body_on: it was) and the first bytes
	 * of the response body as the client received it (resp_body_on: some, or a whole one),
	 * their whole lengths, and the bytes each may record (docs/POLICY.md "Bodies"). */
	bool req_body_on, resp_body_on;
	span req_body, resp_body;
	uint64_t req_body_len, resp_body_len;
	size_t body_max;
	bool held; /* the request holds a queue slot for this event (audit_reserve, deny mode) */
} emit_rec;

/* Submits one event; a refused submit is returned (callers fail closed with 503). */
/* Builds one event. With a batch (audit in `batch` durability), the event is kept and
 * submitted by emit_flush at the end of the worker's event batch (one queue hand-off per batch
 * instead of one sender wake-up per request); without one it is submitted at once. */
struct emit_batch;
custos_err emit_event(struct audit_writer *w, struct emit_batch *b, const emit_rec *r) CUSTOS_WUR;
/* Builds one tls.reject event: a failed TLS handshake from remote (via: the load balancer
 * whose PROXY header named remote, else NULL; via_authority, via_unique_id: that header's
 * AUTHORITY and UNIQUE_ID (hex), else NULL), why, and how many it stands for (1, or the sum
 * of a second's failures past the rate bound, remote "*"). */
custos_err emit_tls_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                           const char *via, const char *via_authority, const char *via_unique_id,
                           const char *reason, uint64_t count) CUSTOS_WUR;
/* Builds one proxy_protocol.reject event: a connection closed for its PROXY protocol header
 * (missing, malformed, timed out) or for a peer outside proxy_protocol_from, from remote (the
 * socket peer), why, and how many it stands for (as emit_tls_reject). */
custos_err emit_pp_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                          const char *reason, uint64_t count) CUSTOS_WUR;
/* Builds one connection.reject event: a connection closed at accept because the proxy was
 * at limits.max_connections, from remote (the socket peer), why, and how many it stands for
 * (as emit_tls_reject). */
custos_err emit_shed_reject(struct audit_writer *w, struct emit_batch *b, const char *remote,
                            const char *reason, uint64_t count) CUSTOS_WUR;
/* Submits the kept events (errors are logged: the requests have been answered). */
void emit_flush(struct audit_writer *w, struct emit_batch *b);
struct emit_batch *emit_batch_new(void);
void emit_batch_free(struct emit_batch *b);
/* One policy.reload event for a reload that was attempted (SIGHUP or the admin API), whatever
 * its outcome: trigger ("sighup", "admin"), who asked (NULL: not known), the reason of a
 * refusal, the hashes of the policy in force before and after the reload ("" when none is
 * loaded; new_hash is only read for a reload that was applied) and the state's generation
 * after it (0: not
 * known, omitted). Without
 * an audit writer (tests) the event goes to the log; a refused submit is logged. */
typedef struct emit_reload {
	const char *trigger;
	const char *principal;
	bool applied;
	const char *reason;
	const char *old_hash, *new_hash;
	uint64_t generation;
} emit_reload;
void emit_policy_reload(struct audit_writer *w, const emit_reload *r);

/* False while the audit writer reports a failure (disk full...): requests are then refused
 * with 503 before they reach the model (fail closed), and the refusal is still submitted.
 * fail_open (audit.on_write_error: continue): true all the same, with a warning logged at
 * most every 10 s while the trail cannot be written. */
bool emit_ready(struct audit_writer *w, bool fail_open);

/* ---- server, workers, connections ---- */
typedef struct lsock {
	struct sockaddr_storage ss;
	socklen_t sslen;
	bool tls;
	bool is_unix;
	size_t index;  /* position in the listener list */
	int shared_fd; /* Unix listeners: one fd for all workers */
	unsigned port;
} lsock;

struct upconn;
struct conn;

typedef struct upool {
	struct upconn *idle; /* singly linked */
	unsigned n;
} upool;

/* Refusals audited in the current second (at most a burst), those past it counted, and the
 * timer that writes their sum when the second ends (conn.c, rej_admit). */
struct rej_bound {
	uint64_t window;
	unsigned in_window;
	uint64_t suppressed;
	ev_timer timer;
};
typedef struct worker {
	struct proxy_server *srv;
	unsigned id;
	pthread_t th;
	ev_loop loop;
	int lfd[PROXY_MAX_LISTENERS];
	ev_io lio[PROXY_MAX_LISTENERS];
	int wake_fd;
	ev_io wake_io;
	proxy_state *st;
	uint64_t st_gen;
	struct conn *conns; /* doubly linked: every open client connection */
	size_t nconns;
	upool pools[PROXY_MAX_UPSTREAMS];
	bool draining;
	uint64_t drain_deadline;
	uint64_t reqseq;
	char id_prefix[17];
	struct emit_batch *audit_batch; /* NULL: submit each event at once */
	void *buf_cache;                /* conn.c: free I/O buffer blocks (singly linked) */
	unsigned buf_cached;
	void *rp_cache; /* conn.c: free response head parsers (singly linked) */
	unsigned rp_cached;
	/* conn.c: the rate bounds of failed TLS handshakes, of PROXY protocol rejections and of
	 * connections shed at accept */
	struct rej_bound tls_rej, pp_rej, shed_rej;
	/* conn.c: TLS connections idle between requests, oldest first, whose record buffers
	 * are given back when the timer finds them quiet long enough */
	struct conn *quiet_head, *quiet_tail;
	ev_timer quiet_timer;
	/* conn.c: while batching, connections' sends wait on the flush list until the end of
	 * the batch of events (conn_batch) */
	bool batching;
	struct conn *flush_head;
} worker;

struct proxy_server {
	unsigned nworkers;
	worker *workers;
	lsock ls[PROXY_MAX_LISTENERS];
	size_t nls;
	pthread_mutex_t st_lock;
	proxy_state *st;
	atomic_uint_fast64_t gen;
	atomic_bool stopping;
	atomic_uint workers_done;     /* worker threads that have ended (proxy_run waits on it) */
	atomic_uint workers_draining; /* ... that have closed their listeners */
	uint64_t grace_ns;
	struct limiter *lim;
	struct audit_writer *audit;
	bool audit_defer;
	bool audit_fail_open; /* audit.on_write_error: continue */
	int sig_pipe[2];
};

/* Current state with a reference (worker caches it; refreshed when the generation moves). */
proxy_state *worker_state(worker *w);

/* conn.c */
void conn_accept(worker *w, int fd, const lsock *ls, const struct sockaddr *sa, socklen_t salen);
/* Closes fd, accepted over limits.max_connections (max), and audits it (connection.reject,
 * rate-bounded as tls.reject). */
void conn_shed(worker *w, int fd, const struct sockaddr *sa, uint64_t max);
/* Drain: idle connections closed now, busy ones after their response. */
/* The worker loop's batch hook (ev_loop.batch_cb): sends wait for the end of a batch. */
void conn_batch(ev_loop *l, void *obj, bool begin);
void conn_drain_all(worker *w);
void conn_close_all(worker *w);
void upool_free_all(worker *w);
/* Frees the worker's cache of I/O buffer blocks (after its loop and connections are gone). */
void conn_buf_cache_free(worker *w);

#endif
