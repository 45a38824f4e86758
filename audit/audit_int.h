/* Private to audit/: the JSON scanner, line framing and chain helpers, key handling and the
 * writer/client wire protocol. */
#ifndef CUSTOS_AUDIT_INT_H
#define CUSTOS_AUDIT_INT_H

#include <openssl/evp.h>

#include "custos/audit.h"

/* ---- JSON scanning (jscan.c): strict RFC 8259, depth-limited, no allocation. */
#define AJSON_MAX_DEPTH 16
/* Checks that s is exactly one JSON value (whitespace-free is not required). */
custos_err ajson_validate(span s) CUSTOS_WUR;
/* Iterates the top-level members of the object obj ("{...}"): *pos starts at 0; returns
 * CUSTOS_OK with key (raw, without quotes) and value (raw JSON), CUSTOS_ERR_NOTFOUND at the
 * end, CUSTOS_ERR_PARSE on malformed input. */
custos_err ajson_next(span obj, size_t *pos, span *key, span *val) CUSTOS_WUR;
/* Finds a top-level member by (unescaped-equal) key; CUSTOS_ERR_NOTFOUND if absent. */
custos_err ajson_get(span obj, const char *key, span *val) CUSTOS_WUR;
/* Appends the unescaped content of a raw JSON string ("...") to out. */
custos_err ajson_unescape(span str, buf *out) CUSTOS_WUR;
/* A raw number value as u64. */
custos_err ajson_u64(span v, uint64_t *out) CUSTOS_WUR;

/* ---- Lines and the chain (chain.c). A line is
 *   {"v":1,"seq":S,<body>,"prev":"<64 hex>","hash":"<64 hex>"}\n
 * canonical(line) = the bytes from '{' through the closing quote of prev's value;
 * hash = SHA-256(canonical). */
#define AUDIT_LINE_PREFIX "{\"v\":1,\"seq\":"
#define AUDIT_PREV_KEY    ",\"prev\":\""
#define AUDIT_HASH_KEY    ",\"hash\":\""
/* ",\"hash\":\"" + 64 hex + "\"}" */
#define AUDIT_HASH_SUFFIX_LEN (9 + AUDIT_HASH_HEX + 2)
#define AUDIT_PREV_SUFFIX_LEN (9 + AUDIT_HASH_HEX + 1)
#define AUDIT_GENESIS_PREV    "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_FILE_PREFIX     "audit-"
#define AUDIT_FILE_SUFFIX     ".jsonl"
#define AUDIT_CKPT_DOMAIN     "custos-audit-checkpoint/2"
#define AUDIT_CKPT_DOMAIN_V1  "custos-audit-checkpoint/1"
/* A format 2 checkpoint's body ends with this member (signed over everything before it). */
#define AUDIT_CKPT_SIG_KEY        ",\"sig\":\""
#define AUDIT_CKPT_SIG_KEY_LEN    (sizeof(AUDIT_CKPT_SIG_KEY) - 1)
#define AUDIT_CKPT_SIG_SUFFIX_LEN (AUDIT_CKPT_SIG_KEY_LEN + 128 + 1)

typedef struct audit_line {
	uint64_t seq;
	span body; /* members between the seq and prev */
	span canonical;
	char prev[AUDIT_HASH_HEX + 1];
	char hash[AUDIT_HASH_HEX + 1];
} audit_line;

/* Splits a line (without '\n') into its fixed fields; CUSTOS_ERR_PARSE saying what is wrong. */
custos_err audit_line_parse(span line, audit_line *out) CUSTOS_WUR;
/* SHA-256 of p[n] as lowercase hex into out[65]. */
custos_err audit_sha256_hex(const void *p, size_t n, char out[AUDIT_HASH_HEX + 1]) CUSTOS_WUR;
/* Appends a complete line (with '\n') for body at seq after prev; writes its hash into hash. */
custos_err audit_line_build(buf *out, uint64_t seq, span body, const char *prev,
                            char hash[AUDIT_HASH_HEX + 1]) CUSTOS_WUR;
/* As audit_line_build, hashing with ctx and md (the writer's, reused); NULL: one-shot. */
custos_err audit_line_build_md(buf *out, uint64_t seq, span body, const char *prev,
                               char hash[AUDIT_HASH_HEX + 1], EVP_MD_CTX *ctx,
                               const EVP_MD *md) CUSTOS_WUR;
/* Checks a producer body: valid JSON members, no raw control bytes, time and type first,
 * no reserved key (v, seq, prev, hash); writer_types allows checkpoint/recovery/audit.*. */
custos_err audit_body_check(span body, bool writer_types) CUSTOS_WUR;
/* A member name (raw, without escapes) that only the writer sets: v, seq, prev, hash, and
 * time and type again (a reader keeping the last of two equal names would see another time or
 * type than verify). */
bool audit_reserved_member(span k);
/* "audit-<20-digit seq>.jsonl" */
void audit_file_name(uint64_t first_seq, char out[64]);
bool audit_file_name_parse(const char *name, uint64_t *first_seq);

/* ---- Reading log files line by line (files.c); also tails a growing file. */
#define AUDIT_READ_CHUNK (1024 * 1024)
typedef struct audit_reader {
	int fd;
	buf b;
	uint64_t off;     /* file offset of the byte at buf_ptr(&b) */
	uint64_t line_no; /* lines returned so far */
} audit_reader;
custos_err audit_reader_open(audit_reader *r, const char *path) CUSTOS_WUR;
/* Next complete line without its '\n' (a view valid until the next call) and its offset;
 * CUSTOS_ERR_NOTFOUND at the current end of file (a partial last line stays buffered:
 * audit_reader_partial tells its size); CUSTOS_ERR_LIMIT for an overlong line. */
custos_err audit_reader_next(audit_reader *r, span *line, uint64_t *line_off) CUSTOS_WUR;
size_t audit_reader_partial(const audit_reader *r);
/* Drops the current line, however long (after CUSTOS_ERR_LIMIT): CUSTOS_OK once past its
 * '\n', CUSTOS_ERR_NOTFOUND when the file ends first. */
custos_err audit_reader_skip_line(audit_reader *r) CUSTOS_WUR;
/* Closes every descriptor from 3 up except a and b (pass -1 for none): a forked helper keeps
 * nothing of the proxy's (listeners, keys, client sockets). Both must be >= 3. */
void audit_close_fds_except(int a, int b);
/* The same for the n descriptors of keep (-1: none). */
void audit_close_fds_keep(const int *keep, size_t n);
void audit_reader_close(audit_reader *r);

/* ---- The head at start (head.c). DIR/audit.head, the anchor, holds the last checkpoint the
 * writer made durable: "custos-audit-head/1 <seq> <hash> <file> <key_id|->\n", replaced
 * atomically (write, fsync, rename, directory fsync) after each commit holding a checkpoint.
 * DIR/audit.head.accept, same line, is the operator's acceptance of a head below it
 * (custos audit accept-head), consumed by the next start. */
#define AUDIT_ANCHOR_FILE   "audit.head"
#define AUDIT_ANCHOR_MIN_NS 1000000000ull /* audit.head written at most once a second */
#define AUDIT_ACCEPT_FILE   "audit.head.accept"
#define AUDIT_ANCHOR_DOMAIN "custos-audit-head/1"
#define AUDIT_MAX_CURSORS   AUDIT_MAX_SINKS
/* The sinks' cursors live in DIR/ship/cursor.<name>: the one directory the shipper writes
 * (its Landlock view holds DIR read-only). */
#define AUDIT_SHIP_DIR "ship"

typedef struct audit_anchor {
	uint64_t seq;
	char hash[AUDIT_HASH_HEX + 1];
	char file[64];   /* the log file holding it */
	char key_id[17]; /* "" when the checkpoint is unsigned */
} audit_anchor;

/* *present false (and CUSTOS_OK) when the file does not exist. */
custos_err audit_anchor_read(int dirfd, const char *name, audit_anchor *a,
                             bool *present) CUSTOS_WUR;
custos_err audit_anchor_write(int dirfd, const char *name, const audit_anchor *a) CUSTOS_WUR;
/* Run as root (custos up's supervisor continues the log once its proxy is gone), gives fd, a
 * file in the log directory dirfd, to the directory's owner: the next start as that user must
 * be able to read and append to it. A no-op for other users or a root-owned directory. */
custos_err audit_own_as_dir(int dirfd, int fd, const char *name) CUSTOS_WUR;
/* Replaces dirfd/name with p[n] durably: a temporary file, fsync, rename, directory fsync. */
custos_err audit_file_write_at(int dirfd, const char *name, const void *p, size_t n,
                               mode_t mode) CUSTOS_WUR;

/* What the log's files say at start, without changing anything. */
struct audit_log_scan {
	char **paths; /* the log files in chain order */
	size_t n;
	bool found;      /* some file holds a good record */
	size_t found_fi; /* the file holding the head */
	uint64_t seq;    /* the head: the last good record */
	char head[AUDIT_HASH_HEX + 1];
	bool clean;             /* the head is a shutdown checkpoint */
	uint64_t last_size;     /* size of paths[n - 1] */
	uint64_t last_good_end; /* end of its last good record (a torn tail follows) */
	uint64_t last_first;    /* its first seq, by name */
	uint64_t want_seq;      /* a seq whose hash to note while scanning (0: none) */
	bool want_found;
	char want_hash[AUDIT_HASH_HEX + 1];
};
/* Scans the last file (and earlier ones while files hold no good record): framing, seq, prev
 * and hash of every record. A damaged record followed by another line fails (CUSTOS_ERR_PARSE
 * naming file, line and offset): only a torn tail is left to cut. */
custos_err audit_log_scan(const char *dir, uint64_t want_seq, struct audit_log_scan *s) CUSTOS_WUR;
void audit_log_scan_free(struct audit_log_scan *s);

/* Appends "; " (unless out is empty) and the formatted text to out[outsz], cutting it short. */
CUSTOS_PRINTF(3, 4)
void audit_note_add(char *out, size_t outsz, const char *fmt, ...);

struct audit_head_check {
	char problem[1024];                   /* "" when the head is where it should be */
	char cursors[AUDIT_MAX_CURSORS][128]; /* cursor files ahead of the head */
	size_t n_cursors;
};
/* Reads DIR/audit.head: a damaged one is not an error here but described in damage (then
 * *anchored is false), for audit_head_check to report as a problem. */
custos_err audit_anchor_load(int dirfd, audit_anchor *a, bool *anchored, char *damage,
                             size_t damagesz) CUSTOS_WUR;
/* Compares the scanned head with the anchor a (when anchored) and with every cursor.* file in
 * dir/ship (c->cursors: their names there): a damaged anchor, a head below the anchor, another hash at the anchor's seq, or a
 * cursor past the head is a problem, described in c->problem. */
custos_err audit_head_check(const char *dir, const struct audit_log_scan *s, const audit_anchor *a,
                            bool anchored, const char *anchor_damage,
                            struct audit_head_check *c) CUSTOS_WUR;

/* ---- Keys (keys.c). */
custos_err audit_key_load_private(const char *path, EVP_PKEY **out) CUSTOS_WUR;
custos_err audit_key_load_public(const char *path, EVP_PKEY **out) CUSTOS_WUR;
/* First 16 hex digits of SHA-256 of the raw public key. */
custos_err audit_key_id(EVP_PKEY *k, char out[17]) CUSTOS_WUR;
/* Reads every PEM public key of path (a keyring: one or more concatenated .pub files) into
 * keys[max]; *n how many (at least one). The caller frees them. */
custos_err audit_keyring_load(const char *path, EVP_PKEY **keys, size_t max, size_t *n) CUSTOS_WUR;
/* Checkpoint signatures, format 2: Ed25519 over "custos-audit-checkpoint/2\n" followed by the
 * checkpoint record's bytes from '{' up to (not including) its final ",\"sig\":" member, so
 * seq, signed_seq, signed_hash, reason and key_id are all covered. sig as hex into out[129]. */
custos_err audit_ckpt_sign(EVP_PKEY *k, span signed_part, char out[129]) CUSTOS_WUR;
custos_err audit_ckpt_verify(EVP_PKEY *k, span signed_part, span sighex) CUSTOS_WUR;
/* Format 1 (logs written before format 2; verify only, never a seal): Ed25519 over
 * "custos-audit-checkpoint/1 <seq> <headhex>". */
custos_err audit_ckpt_sign_v1(EVP_PKEY *k, uint64_t seq, const char *head,
                              char out[129]) CUSTOS_WUR;
custos_err audit_ckpt_verify_v1(EVP_PKEY *k, uint64_t seq, const char *head,
                                span sighex) CUSTOS_WUR;

/* ---- Writer process (writer.c) and its wire protocol with the client (client.c). */
#define AUDIT_MSG_MAX       (64 * 1024) /* one SEQPACKET message (fits the default socket buffer) */
#define AUDIT_LINGER_MAX_NS (500ull * 1000 * 1000) /* batch linger cap (window/2, window <= 1 s) */
#define AUDIT_MSG_BATCH     1u
#define AUDIT_MSG_STOP      2u
#define AUDIT_MSG_ACK       3u
#define AUDIT_MSG_LAST      0x100u /* flag: last message of a generation */
/* Batch mode: how long the client lets a group fill after its first event, and the writer's
 * commit deadline counted from that same first event: half the batch window (at most
 * AUDIT_LINGER_MAX_NS). An event is durable within this plus one commit. Sync mode: 0. */
static inline uint64_t audit_linger_ns(const audit_options *o)
{
	if (o->durability != AUDIT_DURABILITY_BATCH)
		return 0;
	return o->batch_window_ns / 2 < AUDIT_LINGER_MAX_NS ? o->batch_window_ns / 2
	                                                    : AUDIT_LINGER_MAX_NS;
}
/* Batch mode: the calling thread (the writer, the sender, the ack thread) becomes SCHED_BATCH,
 * so its wake-ups (a few hundred a second) stop preempting the proxy's workers; it still gets
 * its fair share of CPU. Best effort: a refusal is logged at debug level. */
void audit_sched_batch(void);

/* Histogram bounds of fdatasync durations (ns), shared by writer, client and metrics. */
#define AUDIT_FSYNC_BUCKETS 10

struct audit_msg_hdr {
	uint32_t kind;
	uint32_t count;
	uint64_t gen;
	/* CLOCK_MONOTONIC ns at which the oldest record of the message entered the client's queue;
	 * the writer commits by first_ns + audit_linger_ns (clamped to [arrival - linger, arrival],
	 * so a wrong clock only moves this client's own commits). 0: commit at once (a flush). A
	 * message with count 0 and first_ns 0 asks for a commit of what the writer holds. */
	uint64_t first_ns;
};
struct audit_ack {
	uint32_t kind;
	int32_t status; /* custos_err */
	uint64_t gen;   /* every generation <= gen is durable (when status is OK) */
	uint64_t seq;   /* highest durable seq */
	/* Cumulative since the writer started (the client copies the latest, so an ack repeated
	 * for several messages of one commit counts nothing twice). */
	uint64_t fsyncs;                             /* fdatasync calls */
	uint64_t fsync_ns;                           /* their total duration */
	uint64_t fsync_buckets[AUDIT_FSYNC_BUCKETS]; /* how many took <= audit_fsync_bounds_ns[i] */
	char msg[512];
};

/* Runs the writer in this (forked) process until the client says stop or goes away.
 * Returns the exit status for _exit. */
int audit_writer_main(const audit_options *o, int sock, int ready_fd);
/* Opens/recovers the log without serving (tests): returns via err. */
/* What the shipper reports on its ready pipe once every sink is set up (or one failed). */
struct audit_ship_ready {
	int32_t status; /* custos_err */
	int32_t pid;    /* the shipper's (filled in by its supervisor, which relays this) */
	char msg[1024]; /* the message when status is not CUSTOS_OK: names the sink */
};
/* What the parent writes on the shipper's stop pipe (one writer: the parent, under its
 * writer's mu). STOP: deliver up to the sealed end or for drain_ns, then exit (EOF on the pipe:
 * stop now). RELOAD: read each TLS sink's CA, client certificate, key and CRL again
 * (audit_sinks_reload). TOKEN: a HEC sink's token file as the parent read it at a reload, for
 * sink number `sink`: `len` bytes follow the message (at most AUDIT_SHIP_TOKEN_MAX). The parent
 * reads it, not the shipper, whose Landlock view then need not hold the token's directory
 * (often custos.yaml's). */
enum { AUDIT_SHIP_STOP = 1, AUDIT_SHIP_RELOAD = 2, AUDIT_SHIP_TOKEN = 3 };
#define AUDIT_SHIP_TOKEN_MAX 4098 /* a token of SINK_TOKEN_MAX and its line break */
struct audit_ship_msg {
	uint32_t kind;
	uint32_t sink;     /* TOKEN: the sink's index in audit_options.sinks */
	uint64_t drain_ns; /* STOP */
	uint64_t len;      /* TOKEN: the bytes that follow */
};
/* Runs the shipper (all sinks) in this forked process until stop_fd says stop (or closes). Once
 * every sink is set up (or one failed) it writes a struct audit_ship_ready to ready_fd and
 * closes it. Returns the exit status for _exit. */
int audit_shipper_main(const audit_options *o, int stop_fd, int ready_fd);
/* The shipper's supervisor (shipmon.c): forked by the audit client in place of the shipper,
 * single-threaded, it forks the shipper (audit_shipper_main), relays the client's messages
 * (struct audit_ship_msg, read from ctl_fd) to it, relays the first shipper's ready report to
 * ready_fd (with its pid), and starts the shipper again with bounded exponential backoff when
 * it ends unasked, telling the client on note_fd (one struct audit_ship_notice per write, less
 * than PIPE_BUF). A STOP, or EOF on ctl_fd, is passed on and ends both. Returns the exit
 * status for _exit. */
int audit_ship_monitor_main(const audit_options *o, int ctl_fd, int ready_fd, int note_fd);
enum { AUDIT_SHIP_EXITED = 1, AUDIT_SHIP_RESTARTED = 2, AUDIT_SHIP_START_FAILED = 3 };
struct audit_ship_notice {
	uint32_t kind;
	int32_t pid;         /* EXITED: the shipper that ended; RESTARTED: the new one */
	int32_t status;      /* EXITED: its wait status */
	uint32_t failures;   /* ends and failed starts in a row (AUDIT_SHIP_STABLE_NS resets it) */
	uint64_t restarts;   /* restarts so far */
	uint64_t uptime_ns;  /* EXITED: how long it ran */
	uint64_t backoff_ns; /* EXITED, START_FAILED: the next start is due in this */
	char msg[512];       /* START_FAILED: why (names the sink) */
};
#define AUDIT_SHIP_BACKOFF_MIN_NS (250ull * 1000 * 1000)
#define AUDIT_SHIP_BACKOFF_MAX_NS (30ull * 1000000000)
/* A shipper that ran this long before it ended starts the count of failures in a row anew. */
#define AUDIT_SHIP_STABLE_NS (60ull * 1000000000)
/* This many failures in a row is a crash loop: logged and reported as one. */
#define AUDIT_SHIP_CRASH_LOOP 3

/* Makes DIR/ship (0700, given to DIR's owner when run as root) and moves every cursor.<name>
 * an older custos left in DIR itself there (when ship/ has none of that name; else the old
 * one is removed), so that the shipper resumes from it. Run by the writer under its lock,
 * before the head check and before the shipper starts. */
custos_err audit_ship_prepare(int dirfd, const char *dir) CUSTOS_WUR;
/* Reads the cursor of sink name in dir (DIR/ship/cursor.<name>; 0 when none). */
custos_err audit_cursor_read(const char *dir, const char *name, uint64_t *seq) CUSTOS_WUR;

#endif
