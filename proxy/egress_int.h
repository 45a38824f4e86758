/*
 * Egress proxy internals shared by egress.c (server, listeners, attribution registry, policy,
 * audit) and egress_conn.c (one thread per client connection: forward, tunnel, intercept).
 */
#ifndef CUSTOS_PROXY_EGRESS_INT_H
#define CUSTOS_PROXY_EGRESS_INT_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "custos/audit.h"
#include "custos/egress.h"
#include "http1.h"
#include "mint.h"
#include "ssrf.h"

#ifndef NS_PER_S
#define NS_PER_S 1000000000ull
#endif

struct policy;
struct econn;
struct eeng;
struct ingress_insp;
struct einsp;
struct ehash;
struct policy_decision;
struct inspect_engine;
struct inspect_scratch;
struct inspect_profile;
struct inspect_summary;
typedef struct erelay erelay;
typedef struct edns edns;
typedef struct efwd efwd;

typedef struct elistener {
	struct egress_server *srv;
	size_t index;
	int fd;
	unsigned port;
	pthread_t th;
	bool started;
	atomic_uint active;  /* open connections */
	atomic_int taint;    /* policy_class read so far */
	atomic_int next_fd;  /* a replacement listener (restarted sandbox), or -1 */
	atomic_bool closing; /* its sandbox was removed: the accept thread ends */
	atomic_bool exited;  /* the accept thread has left (its socket closed): joinable */
	char *model, *sandbox;
	int isolation;
	pid_t peer_pid; /* egress_listener_opts.peer_pid */
} elistener;

/* A configured source with its host in canonical form and its upstream TLS context. */
typedef struct esource {
	egress_source o;
	ssrf_host host;
	SSL_CTX *tls; /* https sources: verification against ca_file or the system store;
	                 replaced by egress_tls_commit on every reload (read under tls_mu) */
} esource;

struct egress_server {
	egress_options o; /* sources/listeners moved out into the arrays below */
	esource *src;
	size_t nsrc;
	/* Room for o.nlisteners + EGRESS_MAX_ADDED, never moved: connections point in, and a slot
	 * whose listener was closed is taken again (egress_listener_add) only once its accept
	 * thread has left and its last connection has ended (active 0): every connection uses its
	 * listener (model, taint, audit) only before it gives its active count back. */
	elistener *ls;
	size_t nls; /* ls_mu; read unlocked with __atomic (entries below it are set up) */
	size_t ls_cap;
	pthread_mutex_t ls_mu;      /* adding, closing, starting and stopping listeners */
	bool ls_running;            /* egress_start ran and egress_stop did not (ls_mu) */
	struct policy_store *store; /* NULL: no policy file (the catalogue alone decides) */
	mint *mint;
	atomic_bool stopping;
	pthread_mutex_t lock; /* conns list and count */
	pthread_cond_t idle;
	struct econn *conns;
	size_t nconns;
	pthread_mutex_t eng_lock; /* eng_cur */
	struct eeng *eng_cur;     /* inspection engine of the policy last seen (egress_inspect.c) */
	erelay *relay;            /* the tunnel relay loop (egress_relay.c) */
	edns *dns;                /* own resolver (egress.dns.servers), or NULL: getaddrinfo */
	efwd *fwd;                /* the forward loops (egress_fwd.c), or NULL: threads only */
	/* bytes held for content inspection by every connection (egress.inspect.max_held) */
	atomic_uint_fast64_t insp_held;
	pthread_mutex_t tls_mu; /* src[].tls of the https sources */
};

/* A new SSL on src's current client context (egress_tls_commit may replace it); NULL on
 * failure. */
SSL *egress_source_ssl_new(egress_server *s, const esource *src);

/* One egress decision and its audit record. */
typedef struct erec {
	char id[40];
	const char *kind; /* "http", "connect", "intercepted" */
	char method[24];
	const char *scheme;
	char host[SSRF_MAX_HOST + 3];
	uint16_t port;
	char path[512]; /* truncated for audit */
	/* r->path is what may be audited: inspected under the rule (egress_inspect_target), or
	 * judged by a policy rule that does not inspect requests. Else egress_audit masks it first
	 * (egress_inspect_audit_path). */
	bool path_final;
	const char *source;
	int classification; /* policy_class, -1 unknown */
	const char *decision;
	char reason[256];
	char rules[256];
	bool shadow;
	unsigned status;
	char addr[64];
	char sni[SSRF_MAX_HOST + 1];
	uint64_t bytes_up, bytes_down;
	egress_attr_how how;
	char ingress_id[EGRESS_ID_MAX];
	char principal[EGRESS_PRINCIPAL_MAX];
	uint64_t t_start;
	/* content inspection (egress_inspect.c): engine reference, the rule's actions, state */
	struct eeng *eng;
	uint8_t insp_response[64];
	uint8_t insp_request[64];
	struct ingress_insp *ip; /* raw response stream */
	struct einsp *ei;        /* request body, JSON responses, the audit summary */
	/* the merged `audit:` obligation of an allowing policy decision (policy_audit_level) */
	uint8_t audit;
	struct ehash *hash; /* its body hashes (egress_hash.c); NULL: not asked, or a tunnel */
} erec;

/* egress.c */
void erec_init(erec *r, const char *kind);
/* The call's completion record (egress.request): after the call, or alone for a refusal. */
void egress_audit(egress_server *s, const elistener *l, erec *r);
/* The decision record (egress.decision) of an allowed call, submitted before anything is sent
 * upstream. CUSTOS_OK once the audit client accepted it (batch: queued; sync: durable);
 * anything else means the call must be refused with 503 (fail closed, docs/EGRESS.md). */
custos_err egress_audit_decision(egress_server *s, const elistener *l, const erec *r) CUSTOS_WUR;
#define EGRESS_AUDIT_REFUSED "audit trail unavailable: request refused (fail closed)"

/* Decides a destination: source match, policy (with attribution already in r), SSRF.
 * Returns 0 (allowed; *src and tgt filled) or the status to answer (403, 502) with r->reason.
 * mode says what is known (see edecide). */
typedef enum edecide {
	EDECIDE_REQUEST = 0, /* a whole request: source by path prefix, policy on method + path */
	EDECIDE_CONNECT,     /* a tunnel decided on host:port alone: policy with method CONNECT */
	EDECIDE_INTERCEPT,   /* an intercepted tunnel: source and SSRF now, policy per request */
	EDECIDE_REUSE,       /* a request on a kept upstream connection to this very destination: as
	                  REQUEST, without resolving again (the connection's address was checked) */
} edecide;
/* Source lookup alone (first source on host:port for the scheme); NULL when none. */
const esource *egress_find_source(egress_server *s, bool https, const ssrf_host *h, uint16_t port);
unsigned egress_decide(egress_server *s, const elistener *l, erec *r, bool https,
                       const ssrf_host *h, uint16_t port, span method, span path, edecide mode,
                       const esource **src, ssrf_target *tgt);
/* The request target to forward for a request egress_decide allowed (docs/EGRESS.md "The path
 * forwarded"): sent's path as policy_path_normalize spells it, the spelling egress_decide
 * picked the source by and the policy judged ('/' for an absolute URI without a path), then
 * sent's query from its '?' unchanged. sent is the target as the model sent it (h->path), or
 * as egress_inspect_target rewrote its query (its masks are kept). out is initialised here:
 * buf_free it, whatever the result. CUSTOS_OK; CUSTOS_ERR_INTERNAL when the path cannot be
 * normalised (egress_decide refuses such a path first); _NOMEM. */
custos_err egress_forward_target(span sent, buf *out) CUSTOS_WUR;
/* Raises the listener's taint to the source's classification. */
void egress_taint_raise(elistener *l, int cls);
/* r->reason for a response head the parser refused (rp->err): a 101 is a protocol upgrade
 * custos refuses, anything else a malformed head, named with the parser's reason. */
void egress_head_refused(erec *r, const http1_parser *rp);
/* True when rh is a bodyless answer that still carries the Content-Length the source sent
 * (a HEAD response, a 304): *n is that length, to be passed on (RFC 9110 8.6). */
bool egress_bodyless_length(const http1_head *rh, uint64_t *n);
/* Why a response that went past max_response ends: audited with decision "error" whether the
 * Content-Length showed it up front or the body passed the cap while streamed. */
#define EGRESS_DECISION_CAP "error"
/* A response the source broke off after its head (closed mid-body, a malformed body, silent
 * past the read timeout): the completion's decision becomes error, as for the cap, never
 * allow (an allowed call whose answer reached the client cut short). */
void egress_upstream_cut(erec *r);

/* egress_hash.c: `audit: bodies_hashed` (or `bodies`), docs/EGRESS.md "Body hashes". Every
 * function does nothing for a call without r->hash. A digest step that fails leaves that
 * digest out of the event (never a wrong one). */
/* After an allowing decision of a request (not a tunnel): r->hash when r->audit asks. */
void egress_hash_open(erec *r);
/* A piece of the request body as the model sent it (decoded: no chunk framing). */
void egress_hash_request(erec *r, span d);
/* The request body was read whole, streamed (the pieces so far, none: the empty body). */
void egress_hash_request_end(erec *r);
/* The request body read whole in one buffer (held for inspection), before any rewrite. */
void egress_hash_request_whole(erec *r, span body);
/* What went upstream instead of the body egress_hash_request_whole saw: recorded when it
 * differs (inspection rewrote it). */
void egress_hash_forwarded(erec *r, span body);
/* A response head accepted: its body's digest starts (again). */
void egress_hash_response_begin(erec *r);
/* A piece of the response body as the model gets it (after inspection, without framing). */
void egress_hash_response(erec *r, span d);
/* The whole response body went to the model's connection: its digest is recorded. */
void egress_hash_response_end(erec *r);
/* The response did not reach the model whole after all: no response digest. */
void egress_hash_response_drop(erec *r);
/* Adds audit_level and the digests recorded to the egress.request event ev. */
void egress_hash_audit(erec *r, audit_rec *ev);
/* Frees r->hash (egress_audit, once the event is built). */
void egress_hash_free(erec *r);

/* egress_inspect.c */
/* What a body is to the inspector, from its head: JSON (application/json, +json), NDJSON
 * (application/x-ndjson, jsonl...), a form (application/x-www-form-urlencoded: decoded, request
 * and response bodies), multipart/form-data (request bodies: parsed, each part inspected),
 * content-encoded (cannot be inspected), or raw. */
typedef enum egress_body_kind {
	EBODY_RAW = 0,
	EBODY_JSON,
	EBODY_NDJSON,
	EBODY_ENCODED,
	EBODY_FORM,
	EBODY_MULTIPART,
} egress_body_kind;
egress_body_kind egress_body_kind_of(const http1_head *h);
/* The kind of a Content-Type value (parameters ignored; never EBODY_ENCODED). */
egress_body_kind egress_media_kind(span ctype);
/* The boundary parameter of a multipart Content-Type value (RFC 2046 5.1.1: 1 to 70 bchars,
 * not ending in a space; a token or a quoted-string without escapes; exactly once), copied to
 * out with its length: false when there is none or it is not valid. */
#define EGRESS_MP_BOUNDARY_MAX 70u
bool egress_multipart_boundary(span ctype, char out[EGRESS_MP_BOUNDARY_MAX + 1], size_t *len);
/* One multipart/form-data body with that boundary, parsed strictly (docs/EGRESS.md
 * "multipart"): each part's header block inspected as text, its content after its
 * Content-Transfer-Encoding (base64, quoted-printable) is undone by its Content-Type (JSON and
 * NDJSON on their decoded values, forms percent-decoded, anything else as text when it is
 * text); appended to out with REDACT findings masked (a redacted part encoded again as it was
 * sent; every other byte as sent). tmp, dec and msk are scratch, each needing room for
 * EGRESS_INSPECT_WORK_FACTOR x body + EGRESS_INSPECT_WORK_SLACK. CUSTOS_OK, CUSTOS_ERR_DENIED
 * (sum->deny_detector), CUSTOS_ERR_PARSE (malformed: err_msg says where), CUSTOS_ERR_LIMIT
 * (parts, header bytes, a masked copy too large), CUSTOS_ERR_UNSUPPORTED (a part that is not
 * text, or content-encoded: it cannot be inspected). */
custos_err egress_inspect_multipart(const struct inspect_engine *e, struct inspect_scratch *s,
                                    const struct inspect_profile *p, span boundary, span body,
                                    buf *tmp, buf *dec, buf *msk, buf *out,
                                    struct inspect_summary *sum) CUSTOS_WUR;
/* The content of the form-data part named name in a multipart body, the body's framing checked
 * by the same strict rules (not inspected): *count parts have that name, *value the first
 * one's content (empty: none). CUSTOS_ERR_PARSE for a malformed body, a Content-Disposition
 * that is not form-data with one name, or the named part under a transfer or content
 * encoding; CUSTOS_ERR_LIMIT past the parts and header bounds. */
custos_err egress_multipart_field(span boundary, span body, const char *name, span *value,
                                  unsigned *count) CUSTOS_WUR;
/* The path and query string of h's target, when the rule inspects requests (inspect:
 * request:): the path segment by segment (egress_inspect_path), then the query
 * percent-decoded like a form. 0 with *target the target with the query's masks ('/' first,
 * the path as sent; owned by r) when a query value was redacted (empty when the query goes as
 * sent; either way egress_forward_target makes the target to send), r->path audited with the
 * masks; or the status to answer with r->reason set: 403 denied, or a redact finding in the
 * path (r->path audited without the query, a path finding's segment masked), 400 not valid
 * percent-encoding or past an inspection limit, 500. In shadow mode (r->shadow) the path
 * alone, always 0: r->path audited masked, nothing refused or rewritten. */
unsigned egress_inspect_target(erec *r, const http1_head *h, span *target);
/* Whether a decision asks for response or request-body inspection (never in shadow mode:
 * there, egress_inspect_decide takes the engine for the request path alone). */
bool egress_inspect_wanted(const struct policy_decision *d);
/* After an allowing decision of p: takes the engine and the rule's response and request
 * actions into r when the rule asks for inspection. Returns true when the request must be
 * refused instead (r->reason set): a tunnel that is not intercepted cannot be inspected, or
 * the engine cannot be compiled (fail closed). */
bool egress_inspect_decide(egress_server *s, struct policy *p, const struct policy_decision *d,
                           erec *r, bool tunnel);
/* Opens the response inspection state of r: 0 none asked, 1 open, -1 failed. */
int egress_inspect_open(erec *r);
/* Response head: true when the body is inspected (and so rewritten: re-frame it chunked). */
bool egress_inspect_response_begin(erec *r, const http1_head *h);
/* A piece of decoded response body: *out (owned by r, valid until the next call) is what the
 * client gets instead. CUSTOS_OK; CUSTOS_ERR_DENIED (a deny detector fired: end the
 * response, egress_inspect_outcome names it); another error: inspection failed (the reason
 * from egress_inspect_fail_reason when there is one): fail closed. */
custos_err egress_inspect_response_data(erec *r, span in, span *out) CUSTOS_WUR;
/* End of the response body: what was held back (a whole JSON body). Same returns. */
custos_err egress_inspect_response_end(erec *r, span *out) CUSTOS_WUR;
/* Why the response could not be inspected (invalid JSON under a JSON media type, a body past
 * egress.inspect.max_body or egress.inspect.max_held), or NULL. */
const char *egress_inspect_fail_reason(const erec *r);
/* The status for a response that could not be inspected while nothing was sent: 503 when
 * holding it would pass egress.inspect.max_held, else 502. */
unsigned egress_inspect_fail_status(const erec *r);
/* When the response was denied: overrides decision and reason. */
void egress_inspect_outcome(erec *r, const char **decision, const char **reason);
/* Whether the rule inspects the request body (the body is then read whole first); never in
 * shadow mode. */
bool egress_inspect_request_wanted(const erec *r);
/* Whether the rule inspects the request target (egress_inspect_target): its path and query,
 * or in shadow mode its path alone, reported and never enforced. */
bool egress_inspect_target_wanted(const erec *r);
/* Request head, before its body is read: 0, or the status to answer with r->reason (415 for
 * a content-encoded body, 413 for a Content-Length past egress.inspect.max_body, 503 when
 * holding that length would pass egress.inspect.max_held). A Content-Length is counted as
 * held from here on; a chunked body as it arrives (egress_inspect_request_append). */
unsigned egress_inspect_request_begin(erec *r, const http1_head *h);
/* Appends d, decoded request body bytes, to hold (the body read whole): 0, or the status to
 * answer with r->reason set: 413 past egress.inspect.max_body, 503 when the bytes held for
 * inspection by all connections would pass egress.inspect.max_held (nothing appended). */
unsigned egress_inspect_request_append(erec *r, buf *hold, span d);
/* r->reason and decision for a body that grew past egress.inspect.max_body (answer 413). */
void egress_inspect_request_too_large(erec *r);
/* The whole decoded request body of kind k, in (appended by egress_inspect_request_append;
 * freed here): 0 with what goes upstream in out (masks in place, counted as held until
 * egress_inspect_request_move or the end of the call; the caller writes its Content-Length),
 * or the status to answer with r->reason set: 403 denied (the reason names the detector,
 * never the value), 400 invalid JSON under a JSON media type or a masked copy past
 * EGRESS_INSPECT_WORK_FACTOR times the body plus EGRESS_INSPECT_WORK_SLACK, 503 when its
 * working copies would pass egress.inspect.max_held, 500 internal. */
unsigned egress_inspect_request(erec *r, egress_body_kind k, buf *in, buf *out);
/* Appends out (egress_inspect_request's) to dst and frees out: dst's growth counts as held
 * until the call ends (the caller frees dst before its audit event, egress_audit). CUSTOS_OK,
 * CUSTOS_ERR_AGAIN when egress.inspect.max_held refuses it, CUSTOS_ERR_LIMIT, _NOMEM. */
custos_err egress_inspect_request_move(erec *r, buf *out, buf *dst) CUSTOS_WUR;
/* Room in b for n more bytes (at most b->max used in all), its new capacity counted first in
 * *ct as held for inspection by s (egress.inspect.max_held), for a buffer that outlives the
 * call (the forward loop's copy of an inspected response). CUSTOS_OK; CUSTOS_ERR_AGAIN when
 * it would pass the bound (nothing allocated); _LIMIT; _NOMEM. */
custos_err egress_held_grow(egress_server *s, buf *b, uint64_t *ct, size_t n) CUSTOS_WUR;
/* Gives back what *ct counted (its buffer was freed). */
void egress_held_give(egress_server *s, uint64_t *ct);
/* A working copy of an inspected body (the body with its masks, the bytes decoded from it) may
 * be at most FACTOR times the body plus SLACK bytes; it is counted at that size while it
 * exists (docs/EGRESS.md "Content inspection"). */
#define EGRESS_INSPECT_WORK_FACTOR 2u
#define EGRESS_INSPECT_WORK_SLACK  4096u
/* What an inspected request body may grow to with its masks (EGRESS_INSPECT_BODY_CEIL in). */
#define EGRESS_INSPECT_QOUT_MAX                                                                    \
	(EGRESS_INSPECT_WORK_FACTOR * EGRESS_INSPECT_BODY_CEIL + EGRESS_INSPECT_WORK_SLACK)
/* A request head written without framing fields (it ends in an empty line): the empty line
 * replaced by "Content-Length: n" and the empty line. CUSTOS_ERR_INVAL when head does not end
 * so, CUSTOS_ERR_LIMIT past its buffer's maximum. */
custos_err egress_head_set_length(buf *head, uint64_t n) CUSTOS_WUR;
/* For the completion event: decision and reason overridden when denied, findings (types and
 * counts), the summary ("request:redact response:log") and inspection time. Owned by r. */
void egress_inspect_audit(erec *r, const char **decision, const char **reason,
                          const audit_finding **f, size_t *nf, const char **summary, uint64_t *ns);
/* One JSON document: string values decoded and inspected, keys and numbers as sent; appended
 * to out with REDACT findings masked (a number becomes the mask as a string), findings added
 * to sum. tmp is scratch. CUSTOS_OK, CUSTOS_ERR_DENIED, CUSTOS_ERR_PARSE (not valid JSON),
 * CUSTOS_ERR_LIMIT. White space alone passes unchanged; a leading BOM is kept. */
custos_err egress_inspect_json_doc(const struct inspect_engine *e, struct inspect_scratch *s,
                                   const struct inspect_profile *p, span doc, buf *tmp, buf *out,
                                   struct inspect_summary *sum) CUSTOS_WUR;
/* Takes r out of the bytes held for inspection (egress.inspect.max_held): its own buffers are
 * freed; the caller frees the request body buffers it passed (in, out, dst) before. */
void egress_inspect_unhold(erec *r);
/* One application/x-www-form-urlencoded body: names and values percent-decoded ('+' a space)
 * and inspected as one text (a value written %40 or %34%31 is found); appended to out as
 * sent, each REDACT finding's encoded bytes replaced by its mask, percent-encoded
 * (%5BREDACTED%3AEMAIL%5D: the receiver decodes it to [REDACTED:EMAIL]); a finding over a
 * literal '&' or '=' masks each side, so the form keeps its fields. dec is scratch.
 * CUSTOS_OK, CUSTOS_ERR_DENIED (sum->deny_detector), CUSTOS_ERR_PARSE (a '%' not followed by
 * two hex digits: err_msg names the byte), CUSTOS_ERR_LIMIT. */
custos_err egress_inspect_form(const struct inspect_engine *e, struct inspect_scratch *s,
                               const struct inspect_profile *p, span body, buf *dec, buf *out,
                               struct inspect_summary *sum) CUSTOS_WUR;
/* The path of a request target (before '?'), segment by segment ('/' separates; %2F is data):
 * each percent-decoded (%XX a byte, '+' itself) and inspected on its own; nothing of it is
 * rewritten. aud gets the path as it may be audited, NUL-terminated and cut to cap - 1 bytes:
 * each segment with a finding (of any action, log too) replaced by the first one's mask,
 * percent-encoded, the rest as sent (on an error, the segments before the failing one).
 * dec is scratch (room for the longest segment). CUSTOS_OK (log findings alone, counted in
 * sum), CUSTOS_ERR_DENIED (sum->deny_detector), CUSTOS_ERR_UNSUPPORTED (a redact finding and no
 * deny: *redact_det names its detector; a value in the path cannot be masked without
 * changing the resource), CUSTOS_ERR_PARSE (a '%' not followed by two hex digits: err_msg
 * names the byte), CUSTOS_ERR_LIMIT, CUSTOS_ERR_NOMEM. */
custos_err egress_inspect_path(const struct inspect_engine *e, struct inspect_scratch *s,
                               const struct inspect_profile *p, span path, buf *dec,
                               struct inspect_summary *sum, int *redact_det, char *aud,
                               size_t cap) CUSTOS_WUR;
/* The audited path of a call whose path no rule's inspection judged (r->path_final unset: a
 * call refused before egress_inspect_target, by policy, for a path or host outside every data
 * source, a ';' or an ambiguous spelling, by SSRF, ...), made safe to audit in r->path: each
 * segment in which a detector of the policy in force finds something (every detector some rule
 * of the policy uses, whatever the rule the call would have met, in any direction) replaced by
 * its mask as egress_inspect_path does, each finding in the query masked as
 * egress_inspect_form does; a path cut by r->path's size masked whole from a '/' on, its last query parameter
 * (cut) dropped. Without
 * an engine (it cannot be compiled, no scratch), or when the path cannot be read (a '%' not
 * followed by two hex digits, a limit): every segment masked whole, the query dropped. With no
 * policy (no policy file) or one without any detector, left as it is. Sets r->path_final. */
void egress_inspect_audit_path(egress_server *s, erec *r);
/* Frees r's inspection state and drops its engine reference (end of every request). */
void egress_inspect_release(erec *r);
void egress_eng_unref(struct eeng *e);
/* Drops the server's engine (egress_free). */
void egress_eng_drop(egress_server *s);

/* Resolves h and checks every address (ssrf_resolve_via) with the server's resolver. */
custos_err egress_resolve(egress_server *s, const ssrf_host *h, uint16_t port, bool allow_private,
                          ssrf_target *tgt) CUSTOS_WUR;

/* egress_dns.c */
/* Parses "ip", "ipv4:port" or "[ipv6]:port" (port 53 when none). */
custos_err edns_parse_server(const char *s, struct sockaddr_storage *ss, socklen_t *len) CUSTOS_WUR;
/* A resolver for the n servers (1..EGRESS_MAX_DNS_SERVERS); try_ns per try, 0: 2 s. */
custos_err edns_new(char *const *servers, size_t n, uint64_t try_ns, edns **out) CUSTOS_WUR;
void edns_free(edns *d);
/* An ssrf_lookup_fn (ctx: the edns): A and AAAA of name from the first server that answers
 * both; each address handed to each. NOTFOUND for NXDOMAIN or no address, IO when no server
 * answered. Thread-safe (no shared state). */
custos_err edns_lookup(void *ctx, const char *name, ssrf_each_fn each, void *arg) CUSTOS_WUR;

/* egress_relay.c */
/* Starts the relay loop thread (egress_start). */
custos_err egress_relay_start(egress_server *s) CUSTOS_WUR;
/* Joins the relay thread once s->stopping is set; open tunnels are cut off and audited. */
void egress_relay_stop(egress_server *s);
/* Frees the relay (egress_free, after every connection thread has left). */
void egress_relay_free(egress_server *s);
/* Hands an established tunnel to the relay loop, which from then on owns cfd and ufd, audits
 * r (copied) when the tunnel ends, and releases l->active. false (nothing taken) when the
 * relay no longer accepts tunnels. cap: bytes from upstream allowed. */
bool egress_relay_add(egress_server *s, elistener *l, int cfd, int ufd, const erec *r,
                      uint64_t cap);

/* egress_fwd.c */
/* Starts nloops forward loops (1..EGRESS_MAX_FWD_LOOPS) and the resolver threads. */
custos_err egress_fwd_start(egress_server *s, unsigned nloops) CUSTOS_WUR;
/* Once s->stopping is set: joins the threads, closes (and audits) what is open. */
void egress_fwd_stop(egress_server *s);
void egress_fwd_free(egress_server *s);
/* How many forward loops run (0: none). */
size_t egress_fwd_loops(const egress_server *s);
/* Hands an accepted client connection (and its l->active slot) to a forward loop; false
 * (nothing taken) when the loops no longer accept connections. */
bool egress_fwd_add(egress_server *s, elistener *l, int fd, const char *remote);

/* egress.c */
/* Serves fd on a connection thread from now on (the l->active slot goes with it), the n bytes
 * at pre already read from it (copied). On failure fd is closed and the slot released. */
void egress_conn_spawn(egress_server *s, elistener *l, int fd, const char *remote,
                       const uint8_t *pre, size_t n);

/* egress_conn.c */
/* Serves one accepted client connection (runs on its own thread), the n bytes at pre already
 * read from it. Returns true when the connection went on to the relay loop as a tunnel (fd
 * and the l->active slot are the relay's), false when it ended here (fd closed). */
bool egress_conn_serve(egress_server *s, elistener *l, int fd, const char *remote,
                       const uint8_t *pre, size_t n);
/* Parses the TLS ClientHello at the start of b[n] (possibly over several records, at most
 * EGRESS_HELLO_MAX bytes of handshake): 1 with the SNI host name in sni[sn] and *has set (or
 * *has false when there is none), 0 need more bytes, -1 not a well-formed ClientHello. */
int egress_hello_sni(const uint8_t *b, size_t n, char *sni, size_t sn, bool *has);
/* Shuts every open connection's sockets down (egress_stop). */
void egress_conn_shutdown_all(egress_server *s);

#endif
