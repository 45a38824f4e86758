/*
 * custos audit: the event model (a bounded builder the proxy fills), the durable, hash-chained
 * and signed log written by a separate writer process, offline verification and export, and
 * SIEM sinks that ship the durable log with at-least-once delivery. docs/AUDIT.md is the
 * reference for the schema and the file format.
 */
#ifndef CUSTOS_AUDIT_H
#define CUSTOS_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "custos/core.h"

#define AUDIT_SCHEMA_VERSION 1
/* Largest event body a producer may submit (bytes of JSON members); larger is CUSTOS_ERR_LIMIT. */
#define AUDIT_MAX_EVENT 8192
/* Largest line in a log file: body plus the writer's v/seq/prev/hash framing. */
#define AUDIT_MAX_LINE (AUDIT_MAX_EVENT + 512)
/* Largest log file verify/export/sinks will read in one piece is not bounded: they stream. */
#define AUDIT_MAX_SINKS    16 /* as custos.yaml's CFG_MAX_SINKS */
#define AUDIT_MAX_FINDINGS 32
#define AUDIT_HASH_HEX     64 /* SHA-256 as lowercase hex */

typedef enum audit_durability {
	AUDIT_DURABILITY_BATCH = 0, /* submit returns at once; durable within the batch window */
	AUDIT_DURABILITY_SYNC,      /* submit returns once the writer has fdatasync()ed the event */
} audit_durability;

typedef enum audit_on_full {
	AUDIT_ON_FULL_BLOCK = 0, /* submit waits for room (backpressure) */
	AUDIT_ON_FULL_DENY,      /* submit fails with CUSTOS_ERR_AGAIN (the proxy answers 503) */
} audit_on_full;

typedef enum audit_format {
	AUDIT_FMT_JSON = 0, /* the log line as it is */
	AUDIT_FMT_CEF,      /* ArcSight Common Event Format 0 */
	AUDIT_FMT_LEEF,     /* QRadar LEEF 2.0, tab-delimited */
	AUDIT_FMT_RFC5424,  /* a syslog message (RFC 5424) whose MSG is the JSON line */
} audit_format;

typedef enum audit_sink_kind {
	AUDIT_SINK_SYSLOG_TCP = 0, /* RFC 5424 over TCP, octet-counting framing (RFC 6587) */
	AUDIT_SINK_SYSLOG_TLS,     /* RFC 5424 over TLS (RFC 5425), server verified against a CA */
	AUDIT_SINK_HEC,            /* Splunk HTTP Event Collector JSON over HTTP or HTTPS */
} audit_sink_kind;

typedef struct audit_sink_options {
	const char *name; /* [A-Za-z0-9._-]+; the cursor lives in DIR/cursor.<name> */
	audit_sink_kind kind;
	audit_format format; /* syslog payload: JSON (default), CEF or LEEF inside MSG */
	const char *host;    /* address or name to connect to */
	uint16_t port;
	/* Syslog over a unix stream socket at this path instead of host:port (no TLS; the same
	 * octet-counting framing; delivered once the receiver has read the bytes). */
	const char *unix_path;
	bool tls;              /* HEC over HTTPS (syslog picks TLS by kind) */
	const char *ca_file;   /* CA bundle the server certificate must chain to; NULL: the
	                          * system trust store */
	const char *cert_file; /* client certificate chain (PEM) for mutual TLS; NULL: none */
	const char *key_file;  /* its private key (PEM, mode 0600, FILE_SECRET) */
	/* PEM CRLs (tls_crl_load, custos/crl.h) checked for every certificate of the server's
	 * chain; NULL: no revocation check. Read at start and again by audit_sinks_reload, as
	 * ca_file, cert_file and key_file are (the same paths). */
	const char *crl_file;
	bool no_verify; /* TLS without verifying the server (custos.yaml tls.verify: false) */
	const char *server_name; /* name checked in the certificate; default host */
	const char *hec_token; /* HEC: token for "Authorization: Splunk <token>"; NULL: no header */
	/* HEC: file holding the token (mode 0600), read by the shipper at start, so the token
	 * lives in no other process; takes precedence over hec_token. */
	const char *hec_token_file;
	/* HEC: path of the event endpoint (default /services/collector/event); it must contain
	 * /services/collector, and the acknowledgement endpoint is that prefix + /ack. */
	const char *hec_path;
	bool hec_no_ack;       /* HEC: a 200 is delivery, even when the answer carries an ackId */
	uint64_t retry_min_ns; /* first backoff after a failure (default 100 ms) */
	uint64_t retry_max_ns; /* backoff cap (default 5 s) */
	/* Syslog over TCP has no application acknowledgement: bytes the peer's kernel acked may
	 * still die in its receive buffer when it stops. After a reconnect a sink resends from
	 * the last event confirmed longer ago than this (default 1 s). Duplicates carry their
	 * seq, so a SIEM can drop them. */
	uint64_t replay_window_ns;
} audit_sink_options;

/* A hook run in a forked audit process, single-threaded, once it holds everything it reads
 * only at start: the place for the sandbox module's confinement (custos up narrows each to its
 * own Landlock view). The writer runs it after it has opened its files and key and before it
 * serves events, with its descriptor of the log directory; the shipper once every sink is set
 * up (CA, client certificate and key, token file loaded) and before any sink runs, with -1.
 * An error fails audit_writer_start. */
typedef custos_err (*audit_confine_fn)(void *arg, int log_dir_fd);

/* What the audited path of a request keeps of its query string (audit.query, docs/AUDIT.md). */
typedef enum audit_query {
	AUDIT_QUERY_NAMES = 0, /* default: parameter names, each value replaced by the marker */
	AUDIT_QUERY_FULL,      /* the query string as sent */
	AUDIT_QUERY_NONE,      /* no query string (the path up to '?') */
} audit_query;
/* The marker that stands for a value (U+2026, UTF-8): a request-target is ASCII only (RFC 3986;
 * http1 refuses other bytes), so the marker is never a value that was sent. */
#define AUDIT_QUERY_MARK "\xe2\x80\xa6"
/* Room audit_query_filter needs for a path of n bytes, whatever the mode: a value becomes the
 * 3-byte marker ("a=&" -> "a=\u2026&"), a field without '=' too ("a&" -> "\u2026&"). */
#define AUDIT_QUERY_ROOM(n) (3 * (n) + 4)
/* path as q says (its query string is what follows the first '?'), written to out with a NUL:
 * at most cap - 1 bytes (cap >= 1), cut on a UTF-8 character boundary and never inside a
 * marker when it does not fit (cut: the path then ends where it was cut). Returns the length.
 * NAMES keeps each '&'-separated field's name and '=' and replaces its value, however empty,
 * by AUDIT_QUERY_MARK; a field without '=' (which may be a bare token) is replaced whole. */
size_t audit_query_filter(span path, audit_query q, char *out, size_t cap);
/* The name of q ("names", "full", "none"). */
const char *audit_query_name(audit_query q);

typedef struct audit_options {
	const char *dir; /* log directory (created 0700 if missing) */
	audit_durability durability;
	uint64_t batch_window_ns; /* batch mode: longest time an event waits to be durable */
	size_t queue_events;      /* in-process queue bound, in events */
	audit_on_full on_full;
	uint64_t rotate_bytes; /* 0: no size rotation */
	uint64_t rotate_ns;    /* 0: no time rotation */
	uint64_t checkpoint_events;
	uint64_t checkpoint_ns;
	const char
	        *signing_key; /* Ed25519 private key PEM, mode 0600; NULL: unsigned checkpoints */
	/* The public key published for verification (PEM). When set, the writer refuses to start
	 * unless it is signing_key's public half (and signing_key is set): a log that the key
	 * operators hold cannot verify is caught at start, not at the first audit. */
	const char *public_key;
	const audit_sink_options *sinks;
	size_t n_sinks;
	audit_confine_fn confine; /* in the writer; NULL: none */
	void *confine_arg;
	audit_confine_fn confine_shipper; /* in the shipper (with sinks); NULL: none */
	void *confine_shipper_arg;
	audit_query query; /* what producers keep of a request's query string (audit.query) */
} audit_options;

/* Fills o with the defaults (batch, 10 ms window, 65536 events, block, 64 MiB / 24 h rotation,
 * checkpoints every 10000 events or 10 s). */
void audit_options_default(audit_options *o);

/* ---------------------------------------------------------------------------------------------
 * Event builder. Lives on the caller's stack; uses only its inline buffer (no allocation).
 * begin sets time (now) and type; setters append members; the first error sticks and is
 * returned by audit_event_end (CUSTOS_ERR_LIMIT when the event passes AUDIT_MAX_EVENT).
 */
typedef struct audit_event {
	buf b;
	json_writer w;
	bool ended;
	uint8_t storage[AUDIT_MAX_EVENT + 2];
} audit_event;

typedef struct audit_finding {
	const char *type; /* detector name, e.g. "payment_card"; never the matched value */
	uint64_t count;
} audit_finding;

typedef struct audit_duration {
	const char *phase; /* "total", "tls", "policy", "upstream", "inspect"... */
	uint64_t ns;
} audit_duration;

void audit_event_begin(audit_event *ev, const char *type);
/* As begin, with an explicit wall-clock time in ns since the epoch. */
void audit_event_begin_at(audit_event *ev, const char *type, uint64_t wall_ns);
void audit_event_str(audit_event *ev, const char *key, span v);
void audit_event_cstr(audit_event *ev, const char *key, const char *v); /* NULL: omitted */
void audit_event_u64(audit_event *ev, const char *key, uint64_t v);
void audit_event_bool(audit_event *ev, const char *key, bool v);
void audit_event_strs(audit_event *ev, const char *key, const char *const *v, size_t n);
void audit_event_findings(audit_event *ev, const audit_finding *f, size_t n);
void audit_event_durations(audit_event *ev, const audit_duration *d, size_t n);
/* Closes the event; CUSTOS_OK or the first error. */
custos_err audit_event_end(audit_event *ev) CUSTOS_WUR;
/* The finished body: JSON members without the outer braces (valid after end). */
span audit_event_body(const audit_event *ev);
/* A finished event whose body (as audit_event_body gave it, in another process) is copied
 * in: how a privilege-separated supervisor's events reach the proxy's writer. LIMIT when the
 * body passes AUDIT_MAX_EVENT, INVAL when it is empty. */
custos_err audit_event_from_body(audit_event *ev, span body) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Compact records: the fast producer path beside the builder above, with the same setters.
 * The producer copies fixed-width fields and raw strings (no formatting, no escaping); the
 * writer process renders the canonical JSON body, byte for byte what audit_event gives for the
 * same calls, and checks it there (the trust boundary). Lives on the caller's stack; no
 * allocation. The first error sticks and is returned by audit_rec_end (CUSTOS_ERR_LIMIT when
 * the rendered body would pass AUDIT_MAX_EVENT, as audit_event_end).
 */
#define AUDIT_REC_MAGIC 0x01 /* first byte of a record; a JSON body starts with '"' */
typedef struct audit_rec {
	size_t len;      /* bytes used in data */
	size_t json_max; /* upper bound of the rendered JSON body's size */
	custos_err err;
	bool ended;
	uint8_t data[AUDIT_MAX_EVENT];
} audit_rec;

void audit_rec_begin(audit_rec *r, const char *type);
void audit_rec_begin_at(audit_rec *r, const char *type, uint64_t wall_ns);
void audit_rec_str(audit_rec *r, const char *key, span v);
void audit_rec_cstr(audit_rec *r, const char *key, const char *v); /* NULL: omitted */
void audit_rec_u64(audit_rec *r, const char *key, uint64_t v);
void audit_rec_bool(audit_rec *r, const char *key, bool v);
void audit_rec_strs(audit_rec *r, const char *key, const char *const *v, size_t n);
void audit_rec_findings(audit_rec *r, const audit_finding *f, size_t n);
void audit_rec_durations(audit_rec *r, const audit_duration *d, size_t n);
/* Closes the record; CUSTOS_OK or the first error. */
custos_err audit_rec_end(audit_rec *r) CUSTOS_WUR;
/* The record's bytes (valid after end). */
span audit_rec_bytes(const audit_rec *r);
/* Appends the JSON body (members without the outer braces) of the record rec to out, as the
 * writer does; the record is treated as untrusted: CUSTOS_ERR_PARSE when malformed,
 * CUSTOS_ERR_DENIED for a reserved member or writer-only type, CUSTOS_ERR_LIMIT past out's
 * maximum. */
custos_err audit_rec_render(span rec, buf *out) CUSTOS_WUR;

/* A producer's batch of finished records, handed to the queue in one piece (one lock, one
 * copy) by audit_submit_batch. Owned by the caller; audit_batch_free releases it. */
typedef struct audit_batch {
	buf b;       /* u32 length + record, per record: the queue's framing */
	size_t n;    /* records held */
	size_t held; /* of them, records whose queue slot audit_reserve took (the caller counts) */
} audit_batch;
void audit_batch_init(audit_batch *b);
void audit_batch_free(audit_batch *b);
/* Copies a finished record into b; CUSTOS_ERR_LIMIT when b is full (submit it first). */
custos_err audit_batch_add(audit_batch *b, const audit_rec *r) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * The writer: a forked process that owns the log files and the signing key, fed by a client
 * handle in this process (bounded queue + sender thread). One handle per custos process.
 */
typedef struct audit_writer audit_writer;

typedef struct audit_stats {
	uint64_t submitted;   /* events accepted by audit_submit */
	uint64_t denied_full; /* submits refused because the queue was full (deny mode) */
	uint64_t failed;      /* submits refused because the writer reported a failure */
	uint64_t durable_seq; /* highest seq the writer reported durable */
	size_t queued;        /* events waiting in the in-process queue now */
	bool writer_failing;  /* the writer's last report was an error (disk full...) */
	/* fdatasync latency in the writer (group commits), cumulative: a Prometheus histogram. */
	uint64_t fsyncs;
	uint64_t fsync_ns;
	uint64_t fsync_buckets[10]; /* count of commits <= audit_fsync_bounds_ns[i] */
} audit_stats;
/* Upper bounds (ns) of audit_stats.fsync_buckets: 100us, 250us, 500us, 1ms, 2.5ms, 5ms, 10ms,
 * 25ms, 100ms, 1s. */
extern const uint64_t audit_fsync_bounds_ns[10];

/* Forks the writer (and, with sinks, the shipper) and starts the sender thread. *out is owned
 * by the caller and released by audit_writer_stop. Fails if the log cannot be opened or
 * recovered, the key is unreadable or too open, public_key does not match it, or a sink
 * cannot be set up (its CA, client certificate or key, or token file; the message names the
 * sink). A receiver that cannot be reached is no error: the sink retries. */
custos_err audit_writer_start(const audit_options *o, audit_writer **out) CUSTOS_WUR;
/* Queues one finished event. Batch: returns at once. Sync: returns once durable.
 * CUSTOS_ERR_AGAIN: queue full in deny mode; CUSTOS_ERR_IO: the writer cannot write (the
 * proxy fails closed); CUSTOS_ERR_LIMIT/INVAL: a bad event. Never drops an accepted event. */
custos_err audit_submit(audit_writer *w, const audit_event *ev) CUSTOS_WUR;
/* As audit_submit, for a finished compact record (same durability, queue and errors). */
custos_err audit_submit_rec(audit_writer *w, const audit_rec *r) CUSTOS_WUR;
/* Queues every record of b in one hand-off and empties b (also on error). The records are
 * accepted or refused together: CUSTOS_ERR_AGAIN (queue full, deny mode) or CUSTOS_ERR_IO
 * (writer failing) refuse them all; block mode waits until the queue has room for all of
 * them (a batch larger than the queue waits for an empty queue). Sync mode returns once
 * all are durable. *accepted (may be NULL) receives how many were queued. */
custos_err audit_submit_batch(audit_writer *w, audit_batch *b, size_t *accepted) CUSTOS_WUR;
/* Deny mode (on_full: deny) only: takes one queue slot for an event to be submitted later (a
 * request admitted now whose event is written when it ends), so that an admitted request's
 * event is never refused for a full queue. CUSTOS_ERR_AGAIN when the queue and the slots held
 * fill it (the caller refuses the request: 503); *held tells whether a slot was taken (never
 * in block mode, where a submit waits for room instead). A taken slot is given back by the
 * submit that carries the event (audit_batch.held) or by audit_unreserve. */
custos_err audit_reserve(audit_writer *w, bool *held) CUSTOS_WUR;
/* As audit_reserve, for an event that has no slot yet (a refusal's): a refusal counts as an
 * event lost rather than a request refused in the trail.queue_full event that reports them
 * once the queue takes events again. */
custos_err audit_reserve_event(audit_writer *w, bool *held) CUSTOS_WUR;
void audit_unreserve(audit_writer *w, size_t n);
/* audit_submit_rec for a record that holds a slot (gives it back, queued or refused). */
custos_err audit_submit_rec_held(audit_writer *w, const audit_rec *r) CUSTOS_WUR;
/* False once the writer reported a failure or went away (a lock-free read for the request
 * path; audit_writer_stats has the details). */
bool audit_writer_ok(audit_writer *w);
/* The writer's audit.query, for the producers that build events (AUDIT_QUERY_NAMES when w is
 * NULL: events logged without a writer, tests). */
audit_query audit_writer_query(const audit_writer *w);
/* Waits until every event accepted so far is durable; CUSTOS_ERR_IO as soon as the writer
 * reports a failure (also one that reads nothing more: its backlog full on a refusing disk). */
custos_err audit_flush(audit_writer *w) CUSTOS_WUR;
void audit_writer_stats(audit_writer *w, audit_stats *s);
/* Events the sink at index i has not yet delivered (durable head minus its cursor). */
custos_err audit_sink_lag(audit_writer *w, size_t i, uint64_t *lag) CUSTOS_WUR;
/* Sink i's delivery cursor (every seq <= *cursor was delivered, read from its cursor file) and
 * the durable head it is measured against (lag = head - cursor, 0 when ahead). */
custos_err audit_sink_position(audit_writer *w, size_t i, uint64_t *cursor,
                               uint64_t *head) CUSTOS_WUR;
/* The name of sink i (owned by w), NULL when there is no sink i. */
const char *audit_sink_name(const audit_writer *w, size_t i);
/* Whether a shipper process is running: false without sinks, and while its supervisor waits
 * to start it again after it ended (or once the supervisor itself has ended). */
bool audit_shipper_running(audit_writer *w);
/* The shipper as its supervisor last reported it (docs/AUDIT.md section 6, "Supervision"). */
typedef struct audit_shipper_status {
	bool configured;      /* sinks are configured: a shipper is supervised */
	bool supervised;      /* its supervisor runs (false once it ended: no more restarts) */
	bool running;         /* a shipper runs now */
	int pid;              /* the running shipper's; 0 when none runs */
	uint64_t restarts;    /* restarts since custos started */
	uint32_t failures;    /* ends and failed starts in a row (a run of 60 s resets it) */
	bool crash_loop;      /* failures reached AUDIT_SHIP_CRASH_LOOP (3) */
	char last_exit[64];   /* how the last one ended ("killed by signal 9"); "" for none */
	char last_error[256]; /* why the last restart failed, until one succeeds; "" for none */
} audit_shipper_status;
void audit_shipper_status_get(audit_writer *w, audit_shipper_status *st);
/* A reload: the shipper reads each TLS sink's CA file, client certificate and key, and CRL
 * again, from the paths it started with (in the background: what it found is logged per sink;
 * a file that does not load keeps that sink's context). No-op without a running shipper. */
void audit_sinks_reload(audit_writer *w);
/* Flushes, seals the log with a shutdown checkpoint, stops sinks once they caught up or after
 * drain_ns, reaps the processes and frees w (NULL is a no-op). */
custos_err audit_writer_stop(audit_writer *w, uint64_t drain_ns) CUSTOS_WUR;
/* PID of the writer process (for tests that kill it). */
int audit_writer_pid(const audit_writer *w);

/* ---------------------------------------------------------------------------------------------
 * Keys, verification, rendering.
 */
/* Writes DIR/audit.key (Ed25519 PKCS#8 PEM, 0600) and DIR/audit.pub (SPKI PEM, 0644); refuses
 * to overwrite an existing key. */
custos_err audit_keygen(const char *dir) CUSTOS_WUR;

/* For a log its writer refuses to continue because its head is below what the log once
 * reached (DIR/audit.head, the last durable checkpoint, or a sink's cursor): records that the
 * operator accepts the current head. The next writer start continues there, says so in its
 * recovery event and moves cursors past the head back to it. Refuses while a writer holds
 * the log. report gets what was found and accepted (or that nothing needed accepting). */
custos_err audit_accept_head(const char *dir, char *report, size_t reportsz) CUSTOS_WUR;

#define AUDIT_VERIFY_MAX_KEYS 16 /* public keys one verify takes (all files together) */
typedef struct audit_verify_key {
	const char *file;             /* the file it came from (the caller's string) */
	char key_id[17];              /* first 16 hex digits of SHA-256 of the raw key */
	uint64_t checkpoints;         /* checkpoints it signed that verified */
	uint64_t first_seq, last_seq; /* the heads the first and the last of them signed */
} audit_verify_key;

typedef struct audit_verify_result {
	bool ok;
	uint64_t events;      /* records verified */
	uint64_t files;       /* files read */
	uint64_t checkpoints; /* checkpoints whose signature verified (or seen, without a key) */
	uint64_t first_seq, last_seq;
	uint64_t signed_seq;     /* highest seq covered by a verified signature */
	bool sealed;             /* the log ends with a shutdown checkpoint */
	bool torn_tail;          /* (live) the last file ends inside a record */
	uint64_t v1_checkpoints; /* with a format 1 signature (head only; never a seal) */
	size_t heads;            /* anchors checked (audit.head of each directory, --head) */
	uint64_t head_seq;       /* the highest seq among them (the trail reaches it) */
	audit_verify_key keys[AUDIT_VERIFY_MAX_KEYS]; /* the keys given, in order */
	size_t n_keys;
	/* First problem: where and what (bad_line 0: not at a record, e.g. a damaged anchor:
	 * bad_file names the file). */
	char bad_file[512];
	uint64_t bad_line, bad_seq;
	char what[512];
} audit_verify_result;

typedef struct audit_verify_options {
	/* PEM files of public keys, each holding one key or several (a keyring); each checkpoint
	 * is verified with the key its key_id names (after a key rotation the log holds both).
	 * npub 0: check the chain only. */
	const char *const *pubkeys;
	size_t npub;
	/* Accept a log whose writer is still running or crashed (unsealed end, incomplete last
	 * record). */
	bool live;
	/* The anchors the trail must reach (docs/AUDIT.md, section 5): by default DIR/audit.head
	 * of each directory given, read before its files; no_head skips them (a copy whose
	 * audit.head was taken at another time). head: one more anchor file, a copy of an
	 * audit.head (also for files given one by one); NULL: none. */
	bool no_head;
	const char *head;
} audit_verify_options;

/* Verifies files or directories (a directory means its audit-*.jsonl files in order) with the
 * options o (NULL: defaults). Each anchor checked must be reached: the record at its seq,
 * with its hash, in the file it names; a damaged anchor fails verification. CUSTOS_OK with
 * r->ok set or cleared; an error only when the arguments are unusable (an unreadable key,
 * path or anchor, a --head file that does not exist). */
custos_err audit_verify(const char *const *paths, size_t n, const audit_verify_options *o,
                        audit_verify_result *r) CUSTOS_WUR;

typedef struct audit_render_ctx {
	const char *hostname; /* RFC 5424 HOSTNAME; NULL: "-" */
	const char *app_name; /* default "custos" */
	int facility;         /* syslog facility (default 13, log audit) */
	audit_format inner;   /* RFC 5424 MSG payload: JSON, CEF or LEEF */
} audit_render_ctx;

/* Appends one log line (without its newline) rendered in format f to out. */
custos_err audit_render(audit_format f, span line, const audit_render_ctx *ctx,
                        buf *out) CUSTOS_WUR;
/* Renders every complete line of the log file path to f (a FILE *), one per line; stops at
 * the first unreadable record with its file:line in the message. */
custos_err audit_export_file(const char *path, audit_format fmt, const audit_render_ctx *ctx,
                             void *f) CUSTOS_WUR;
/* Parses "json|cef|leef|rfc5424". */
custos_err audit_format_parse(const char *s, audit_format *out) CUSTOS_WUR;
/* Lists the log files of dir in chain order into *paths (malloc'd array of malloc'd strings,
 * freed with audit_paths_free). */
custos_err audit_list_files(const char *dir, char ***paths, size_t *n) CUSTOS_WUR;
void audit_paths_free(char **paths, size_t n);

#endif /* CUSTOS_AUDIT_H */
