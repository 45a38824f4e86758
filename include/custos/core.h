/*
 * custos core: the one error idiom, bounded buffers and views, logging, number parsing,
 * guarded file loading, a JSON writer, time helpers and a YAML document tree with positions.
 * Every other module builds on this header; core depends on no other module.
 */
#ifndef CUSTOS_CORE_H
#define CUSTOS_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define CUSTOS_WUR          __attribute__((warn_unused_result))
#define CUSTOS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CUSTOS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------------------------------
 * Errors (STYLE.md 3). Functions that can fail return custos_err and are CUSTOS_WUR; on failure
 * they leave a message with context in a per-thread slot that err_msg() returns.
 */
typedef enum custos_err {
	CUSTOS_OK = 0,
	CUSTOS_ERR_NOMEM,       /* allocation failed */
	CUSTOS_ERR_LIMIT,       /* a named limit was exceeded */
	CUSTOS_ERR_INVAL,       /* invalid argument or value */
	CUSTOS_ERR_PARSE,       /* malformed input */
	CUSTOS_ERR_IO,          /* read/write failed */
	CUSTOS_ERR_PERM,        /* permission or file-mode check refused */
	CUSTOS_ERR_NOTFOUND,    /* no such thing */
	CUSTOS_ERR_EXISTS,      /* already exists */
	CUSTOS_ERR_CRYPTO,      /* OpenSSL failure or bad signature */
	CUSTOS_ERR_TLS,         /* TLS handshake or record failure */
	CUSTOS_ERR_AGAIN,       /* would block / try again */
	CUSTOS_ERR_TIMEOUT,     /* deadline passed */
	CUSTOS_ERR_DENIED,      /* refused by policy */
	CUSTOS_ERR_UNSUPPORTED, /* not available on this system */
	CUSTOS_ERR_SYS,         /* a system call failed (errno in the message) */
	CUSTOS_ERR_CLOSED,      /* peer closed / end of stream */
	CUSTOS_ERR_INTERNAL,    /* invariant broken: a bug */
	CUSTOS_ERR__COUNT
} custos_err;

/* Returns a static name for the code ("limit exceeded"); never NULL. */
const char *custos_strerror(custos_err e);
/* Sets this thread's error message (printf-style) and returns e, for `return err_set(...)`. */
custos_err err_set(custos_err e, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
/* Like err_set, appending ": strerror(errno)" for the errno at the time of the call. */
custos_err err_sys(const char *fmt, ...) CUSTOS_PRINTF(1, 2);
/* Prefixes this thread's message with more context ("loading x: <old message>"); returns e. */
custos_err err_wrap(custos_err e, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
/* This thread's last message, or "" when none; valid until the next err_* call. */
const char *err_msg(void);
void err_clear(void);

/* Return early on failure: GUARD(buf_append(...)); */
#define GUARD(expr)                                                                                \
	do {                                                                                       \
		custos_err guard_e_ = (expr);                                                      \
		if (guard_e_ != CUSTOS_OK)                                                         \
			return guard_e_;                                                           \
	} while (0)
/* Fail with code and message unless cond holds: ENSURE(n < max, CUSTOS_ERR_LIMIT, "..."); */
#define ENSURE(cond, code, ...)                                                                    \
	do {                                                                                       \
		if (!(cond))                                                                       \
			return err_set((code), __VA_ARGS__);                                       \
	} while (0)

/* Scope cleanup (bubblewrap style): `char *p CLEANUP_FREE = NULL;` and steal_pointer(&p). */
void cleanup_freep(void *p);
#define CLEANUP_FREE __attribute__((cleanup(cleanup_freep)))
static inline void *steal_pointer(void *pp)
{
	void **p = (void **)pp;
	void *v = *p;
	*p = NULL;
	return v;
}

/* Allocation that never returns NULL: aborts the process on exhaustion (used where failure
 * cannot be reported meaningfully, e.g. startup). Prefer the checked forms on request paths. */
void *xcalloc(size_t n, size_t size);
/* realloc of p to n elements of size (an overflow of n * size is out of memory, as is NULL:
 * both end the process, as xcalloc does). */
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Views: a (pointer, length) window into bytes owned elsewhere. Never NUL-terminated.
 */
typedef struct span {
	const char *ptr;
	size_t len;
} span;

#define SPAN_LIT(s) ((span){ (s), sizeof(s) - 1 })
static inline span span_of(const char *p, size_t n)
{
	return (span){ p, n };
}
span span_cstr(const char *s);              /* a view of a C string (NULL -> empty) */
bool span_eq(span a, span b);               /* bytewise equal */
bool span_eq_cstr(span a, const char *s);   /* equal to a C string */
bool span_case_eq(span a, span b);          /* ASCII case-insensitive equal */
bool span_starts_with(span a, span prefix); /* bytewise prefix */
span span_trim(span a);                     /* without leading/trailing SP and HTAB */
/* Copies into out[outsz] with a NUL; returns CUSTOS_ERR_LIMIT when it does not fit. */
custos_err span_copy_cstr(span a, char *out, size_t outsz) CUSTOS_WUR;
char *span_dup(span a); /* malloc'd NUL-terminated copy; aborts on OOM */

/* ---------------------------------------------------------------------------------------------
 * Bounded buffer (sshbuf/s2n stuffer). Bytes live in data[off .. len); `max` is a hard cap on
 * the bytes held, checked before every allocation. Owner: the struct's holder; buf_free()
 * releases (buf_free_secret() wipes first).
 */
typedef struct buf {
	uint8_t *data;
	size_t off; /* read cursor: bytes before it are consumed */
	size_t len; /* end of written bytes */
	size_t cap; /* allocated bytes */
	size_t max; /* hard maximum for len - off */
} buf;

void buf_init(buf *b, size_t max);
void buf_free(buf *b);
void buf_free_secret(buf *b);
void buf_reset(buf *b); /* empty, keeps memory */
static inline size_t buf_used(const buf *b)
{
	return b->len - b->off;
}
static inline const uint8_t *buf_ptr(const buf *b)
{
	return b->data ? b->data + b->off : b->data; /* NULL + 0 is undefined behaviour */
}
static inline span buf_span(const buf *b)
{
	return (span){ (const char *)buf_ptr(b), b->len - b->off };
}
/* Makes room for n more bytes: CUSTOS_ERR_LIMIT past max, CUSTOS_ERR_NOMEM on allocation.
 * The common case (room already there, within max) is inline; the rest is buf_reserve_slow. */
custos_err buf_reserve_slow(buf *b, size_t n) CUSTOS_WUR;
static inline CUSTOS_WUR custos_err buf_reserve(buf *b, size_t n)
{
	if (b->cap - b->len >= n && n <= b->max && b->len - b->off <= b->max - n)
		return CUSTOS_OK;
	return buf_reserve_slow(b, n);
}
/* Writable tail of at least n bytes (after buf_reserve); commit with buf_commit. */
static inline uint8_t *buf_tail(buf *b)
{
	return b->data + b->len;
}
static inline void buf_commit(buf *b, size_t n)
{
	b->len += n;
}
static inline CUSTOS_WUR custos_err buf_append(buf *b, const void *p, size_t n)
{
	if (n == 0)
		return CUSTOS_OK;
	custos_err e = buf_reserve(b, n);
	if (e != CUSTOS_OK)
		return e;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return CUSTOS_OK;
}
custos_err buf_append_span(buf *b, span s) CUSTOS_WUR;
custos_err buf_append_cstr(buf *b, const char *s) CUSTOS_WUR;
custos_err buf_append_byte(buf *b, uint8_t c) CUSTOS_WUR;
custos_err buf_printf(buf *b, const char *fmt, ...) CUSTOS_WUR CUSTOS_PRINTF(2, 3);
custos_err buf_vprintf(buf *b, const char *fmt, va_list ap) CUSTOS_WUR CUSTOS_PRINTF(2, 0);
/* Drops n bytes from the front (n <= buf_used). Compacts lazily. */
void buf_consume(buf *b, size_t n);
/* NUL-terminates without counting the NUL (for APIs that need a C string). */
custos_err buf_cstr(buf *b, const char **out) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Logging to stderr: text with level on a terminal, JSON lines otherwise (journald-friendly).
 * Never log secrets.
 */
typedef enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG } log_level;
typedef enum log_format { LOG_FMT_AUTO = 0, LOG_FMT_TEXT, LOG_FMT_JSON } log_format;

void log_setup(log_level level, log_format format);
/* Sends log lines to path (appended, 0640, created if missing) instead of stderr; the format
 * then defaults to JSON. NULL goes back to stderr. */
custos_err log_open_file(const char *path) CUSTOS_WUR;
/* Reopens the log file (after logrotate moved it; on SIGUSR1). No-op when logging to stderr.
 * Async-signal-unsafe: call it from the event loop, not from the handler. */
custos_err log_reopen(void) CUSTOS_WUR;
log_level log_get_level(void);
/* Whether lines are written as JSON now (json, or auto on something that is not a terminal):
 * what else writes to the log's stream must then be JSON lines too. */
bool log_is_json(void);
/* Writes "out of memory" as one line in the log's format without allocating or locking (the
 * last word before abort). */
void log_out_of_memory(void);
/* Parses "error|warn|info|debug"; CUSTOS_ERR_INVAL otherwise. */
custos_err log_level_parse(span s, log_level *out) CUSTOS_WUR;
void log_msg(log_level level, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_get_level() >= LOG_LVL_DEBUG)                                              \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                       \
	} while (0)

/* A token bucket for log lines that someone else can make custos write (a guest, a model
 * server): at most `rate` lines a second with a burst of `burst`; beyond, lines are dropped and
 * counted, and the count is reported once the rate falls back under the limit, at the latest
 * every `report_ns` while it does not. Times are tm_mono_ns(); not thread-safe (the caller
 * locks). The same limits as a sandboxed model server's output (cmd_up.c: 100/s, burst 1000). */
typedef struct log_rate {
	uint32_t rate, burst;
	uint64_t report_ns;
	uint64_t tokens, t_fill, t_report;
	uint64_t dropped; /* lines dropped since the last report */
} log_rate;

void log_rate_init(log_rate *r, uint32_t rate, uint32_t burst, uint64_t report_ns, uint64_t now);
/* Whether a line may be logged now (true: a token is taken); false: dropped and counted. */
bool log_rate_take(log_rate *r, uint64_t now);
/* The number of lines dropped that is to be reported now (then 0 until more are dropped):
 * the count when the bucket has a token again or report_ns passed since the last report,
 * else 0. */
uint64_t log_rate_report(log_rate *r, uint64_t now);

/* ---------------------------------------------------------------------------------------------
 * Numbers (strtonum-style): the whole span must be a number within [min, max].
 */
custos_err num_parse_u64(span s, uint64_t min, uint64_t max, uint64_t *out) CUSTOS_WUR;
custos_err num_parse_i64(span s, int64_t min, int64_t max, int64_t *out) CUSTOS_WUR;
/* Sizes: "512", "64KiB", "10MiB", "1GiB", "1kB" (1000), "1MB"... -> bytes. */
custos_err num_parse_size(span s, uint64_t max, uint64_t *out) CUSTOS_WUR;
/* Durations: "250ms", "10s", "5m", "1h", "1d", "100us", "50ns" -> nanoseconds. */
custos_err num_parse_duration(span s, uint64_t max_ns, uint64_t *out_ns) CUSTOS_WUR;
/* Write a limit back in the units people read: the largest unit that divides it exactly
 * (604800000000000 ns -> "7d", 1073741824 -> "1GiB", 1500 ms -> "1500ms"); size >= 24. */
void num_format_duration(uint64_t ns, char *out, size_t size);
void num_format_size(uint64_t bytes, char *out, size_t size);
/* The value of one hexadecimal digit (either case), or -1. */
static inline int num_hex_digit(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
/* The value of the four hexadecimal digits at p (a JSON \\u escape's), or -1. */
static inline long num_hex4(const unsigned char *p)
{
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int x = num_hex_digit(p[i]);
		if (x < 0)
			return -1;
		v = v * 16 + x;
	}
	return v;
}
/* Parses one hexadecimal string of exactly outlen*2 digits into out. */
custos_err num_parse_hex(span s, uint8_t *out, size_t outlen) CUSTOS_WUR;
/* Writes 2*n lowercase hex digits and a NUL into out (size >= 2*n+1). */
void num_hex(const uint8_t *in, size_t n, char *out);
/* SHA-256 of d (core/digest.c), 64 lowercase hex digits and a NUL; false when OpenSSL failed. */
bool sha256_hex(span d, char out[65]);
/* Finishes the SHA-256 context m (an EVP_MD_CTX, not freed) into out; false when m is NULL or
 * OpenSSL failed. */
struct evp_md_ctx_st;
bool sha256_final_hex(struct evp_md_ctx_st *m, char out[65]);

/* ---------------------------------------------------------------------------------------------
 * Files. file_load reads a whole regular file (at most max bytes) into out, checking its mode:
 * FILE_CONFIG refuses files writable by group or others; FILE_SECRET refuses any access by
 * group or others. FILE_ANY checks nothing (data files).
 */
typedef enum file_kind { FILE_ANY = 0, FILE_CONFIG, FILE_SECRET } file_kind;
custos_err file_load(const char *path, file_kind kind, size_t max, buf *out) CUSTOS_WUR;
/* The mode check alone, on an open fd (path only for the message). */
custos_err file_check_mode(int fd, const char *path, file_kind kind) CUSTOS_WUR;
/* Writes all of p[n] to fd, retrying EINTR and short writes. */
custos_err file_write_all(int fd, const void *p, size_t n) CUSTOS_WUR;
/* A thread body (pthread_create) copying bytes both ways between two connected sockets
 * (blocking, 64 KiB at a time) until both directions ended: an orderly end of one is passed on
 * with shutdown(SHUT_WR), an error stops both. fds: a malloc'd int[2], freed here; both are
 * closed at the end. custos vm run's forwarding and bench/vm use it. Returns NULL. */
void *file_bridge_thread(void *fds);
/* Connects the stream socket fd to sa[len] (a struct sockaddr) within timeout_ns: a
 * non-blocking connect, then a wait for it, so that an address that drops the SYN (or a full
 * listen backlog) costs at most the timeout, not the kernel's minutes of retries. fd's blocking
 * mode is kept. CUSTOS_ERR_TIMEOUT when it did not connect in time; fd is then unusable. */
custos_err file_connect_timeout(int fd, const void *sa, size_t len, uint64_t timeout_ns) CUSTOS_WUR;
/* Names the calling thread (from a process's first thread: the process) as ps, top -H and
 * /proc show it; at most 15 bytes, longer names are cut. Best effort (core/proc.c). */
void proc_name_self(const char *name);
/* Writes a file atomically (temp + fsync + rename) with the given mode. */
custos_err file_write_atomic(const char *path, const void *p, size_t n, mode_t mode) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * JSON writer into a buf. Strings are escaped per RFC 8259; control characters become \u00XX;
 * invalid UTF-8 bytes become U+FFFD, so the output is always valid JSON and valid UTF-8.
 * Commas are placed automatically. The first error sticks and is returned by json_finish.
 */
#define JSON_MAX_DEPTH 32
typedef struct json_writer {
	buf *out;
	custos_err err;
	int depth;
	bool need_comma[JSON_MAX_DEPTH + 1];
	bool after_key;
} json_writer;

void json_init(json_writer *w, buf *out);
void json_obj_begin(json_writer *w);
void json_obj_end(json_writer *w);
void json_arr_begin(json_writer *w);
void json_arr_end(json_writer *w);
void json_key(json_writer *w, const char *key);
void json_str(json_writer *w, span s);
void json_cstr(json_writer *w, const char *s); /* NULL writes null */
void json_u64(json_writer *w, uint64_t v);
void json_i64(json_writer *w, int64_t v);
void json_double(json_writer *w, double v); /* non-finite values write null */
void json_bool(json_writer *w, bool v);
void json_null(json_writer *w);
void json_raw(json_writer *w, span s); /* caller guarantees s is valid JSON */
/* Shorthands for "key": value. */
void json_kv_str(json_writer *w, const char *key, span v);
void json_kv_cstr(json_writer *w, const char *key, const char *v);
void json_kv_u64(json_writer *w, const char *key, uint64_t v);
void json_kv_i64(json_writer *w, const char *key, int64_t v);
void json_kv_bool(json_writer *w, const char *key, bool v);
/* CUSTOS_OK, or the first error (LIMIT from the buffer, INVAL for unbalanced nesting). */
custos_err json_finish(json_writer *w) CUSTOS_WUR;
/* Appends s escaped (without quotes) to b: the escaping json_str uses. */
/* Length (1..4) of the valid UTF-8 sequence at p[n] (no overlong form, surrogate or code
 * point above U+10FFFF), or 0 when it is not valid: what json_escape keeps as it is. */
size_t json_utf8_seq_len(const unsigned char *p, size_t n);
custos_err json_escape(buf *b, span s) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Time.
 */
uint64_t tm_mono_ns(void); /* CLOCK_MONOTONIC in ns */
uint64_t tm_wall_ns(void); /* CLOCK_REALTIME in ns since the epoch */
#define TM_RFC3339_LEN 36
/* "2026-11-27T01:55:11.123456789Z" into out[TM_RFC3339_LEN]; returns out. */
char *tm_rfc3339(uint64_t wall_ns, char out[TM_RFC3339_LEN]);
/* Parses RFC 3339 (with Z or ±hh:mm offset, optional fraction) into ns since the epoch. */
custos_err tm_parse_rfc3339(span s, uint64_t *out_ns) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Diagnostics: errors and warnings with file:line:col, collected so a check reports them all.
 */
typedef enum diag_severity { DIAG_ERROR = 0, DIAG_WARNING } diag_severity;
typedef struct diag_item {
	diag_severity severity;
	char *file;
	unsigned line, col; /* 1-based; 0 when unknown */
	char *message;
	char *hint; /* may be NULL */
} diag_item;
typedef struct diag_list {
	diag_item *items;
	size_t n, cap;
	size_t errors, warnings;
} diag_list;

void diag_init(diag_list *d);
void diag_free(diag_list *d);
void diag_add(diag_list *d, diag_severity sev, const char *file, unsigned line, unsigned col,
              const char *hint, const char *fmt, ...) CUSTOS_PRINTF(7, 8);
/* Writes "file:line:col: error: message (hint: ...)" lines, one per item, to f. */
void diag_print(const diag_list *d, void *file /* FILE* */);
/* The same lines through log_msg (errors at error, warnings at warn level), so they follow the
 * log's format (text or JSON lines) and destination: for a running daemon, where stderr may be
 * a JSON log stream or nobody's. */
void diag_log(const diag_list *d);
/* Sets this thread's error to "what: file:line:col: message" for the first error of d (with a
 * count of the others), or "what has errors" when it holds none, and returns e. */
custos_err diag_err(custos_err e, const diag_list *d, const char *what);
/* Smallest edit distance candidate within 2 edits, or NULL (for "did you mean" hints). */
const char *diag_suggest(span word, const char *const *candidates, size_t n);

/* ---------------------------------------------------------------------------------------------
 * YAML document tree (libyaml underneath) with 1-based line/col on every node, bounded in
 * size and depth; aliases, anchors, merge keys and multiple documents are refused (a
 * security config must mean exactly what it says).
 */
typedef enum ydoc_kind { YDOC_SCALAR, YDOC_SEQ, YDOC_MAP } ydoc_kind;
typedef struct ydoc_node ydoc_node;
typedef struct ydoc_pair {
	ydoc_node *key; /* always a scalar */
	ydoc_node *value;
} ydoc_pair;
struct ydoc_node {
	ydoc_kind kind;
	unsigned line, col;
	bool quoted;       /* scalar was single- or double-quoted */
	bool used;         /* set by ydoc_map_get: lets schemas find unknown keys */
	char *str;         /* scalar: NUL-terminated value */
	size_t len;        /* scalar length (may contain NUL bytes only if quoted with \0) */
	ydoc_node **items; /* sequence */
	ydoc_pair *pairs;  /* mapping, in file order */
	size_t n;
};
typedef struct ydoc {
	char *file;      /* name for messages */
	ydoc_node *root; /* NULL for an empty document */
	size_t nodes;
	char sha256[65]; /* SHA-256 of the bytes parsed (ydoc_load); "" when not taken */
} ydoc;

#define YDOC_MAX_NODES 1000000
#define YDOC_MAX_DEPTH 64
/* Double-quoted scalars with JSON surrogate pair escapes (\uD83D\uDE00) that ydoc_parse
 * rewrites for libyaml, which refuses them; more are an error (core/ydoc.c). */
#define YDOC_MAX_PAIR_SCALARS 64
/* Parses text[len] named `file`. On a syntax error adds it to d (file:line:col) and returns
 * CUSTOS_ERR_PARSE with doc released and zeroed (ydoc_free on it is then a harmless no-op).
 * On success the tree is owned by doc; ydoc_free releases it. */
custos_err ydoc_parse(ydoc *doc, const char *file, const char *text, size_t len,
                      diag_list *d) CUSTOS_WUR;
/* The same for strict JSON (RFC 8259), with the same contract and the same tree: nodes at their
 * first character, literals (true, false, null) and numbers as plain scalars, strings as quoted
 * ones. Refused with "JSON: ..." at file:line:col: anything not JSON (unquoted or single-quoted
 * strings, comments, trailing commas, '+1', '.5', '01', NaN), text after the value, a leading
 * byte order mark, invalid UTF-8 (overlongs, surrogates), raw control characters in strings,
 * lone surrogate escapes, "\u0000" (the tree holds C strings), a repeated key in an object,
 * nesting deeper than YDOC_MAX_DEPTH. Keys are as long as the text allows. */
custos_err ydoc_parse_json(ydoc *doc, const char *file, const char *text, size_t len,
                           diag_list *d) CUSTOS_WUR;
/* Loads and parses a config-kind file (mode checked, at most max bytes). */
custos_err ydoc_load(ydoc *doc, const char *path, size_t max, diag_list *d) CUSTOS_WUR;
void ydoc_free(ydoc *doc);

/* Schema helpers: each reports problems into d at the node's position and returns false. */
ydoc_node *ydoc_map_get(ydoc_node *map, const char *key); /* NULL if absent; marks it used */
/* Reports every key of map not in allowed[] (with a "did you mean" hint); also duplicates. */
bool ydoc_check_keys(const ydoc *doc, ydoc_node *map, const char *const *allowed, size_t n,
                     diag_list *d);
bool ydoc_expect(const ydoc *doc, ydoc_node *node, ydoc_kind kind, const char *what, diag_list *d);
bool ydoc_require(const ydoc *doc, ydoc_node *map, const char *key, diag_list *d);
bool ydoc_str(const ydoc *doc, ydoc_node *node, const char **out, diag_list *d);
bool ydoc_bool(const ydoc *doc, ydoc_node *node, bool *out, diag_list *d);
bool ydoc_u64(const ydoc *doc, ydoc_node *node, uint64_t min, uint64_t max, uint64_t *out,
              diag_list *d);
bool ydoc_size(const ydoc *doc, ydoc_node *node, uint64_t max, uint64_t *out, diag_list *d);
bool ydoc_duration(const ydoc *doc, ydoc_node *node, uint64_t max_ns, uint64_t *out_ns,
                   diag_list *d);
/* Index of the scalar in choices[], with a hint listing them when it is none of them. */
bool ydoc_enum(const ydoc *doc, ydoc_node *node, const char *const *choices, size_t n, int *out,
               diag_list *d);
/* Adds an error at node's position (printf-style). */
void ydoc_error(const ydoc *doc, const ydoc_node *node, diag_list *d, const char *hint,
                const char *fmt, ...) CUSTOS_PRINTF(5, 6);
void ydoc_warn(const ydoc *doc, const ydoc_node *node, diag_list *d, const char *hint,
               const char *fmt, ...) CUSTOS_PRINTF(5, 6);

/* ---------------------------------------------------------------------------------------------
 * Service manager notification (the sd_notify protocol, spoken directly so that no libsystemd
 * is needed): a datagram to $NOTIFY_SOCKET. Without NOTIFY_SOCKET it does nothing and returns
 * CUSTOS_OK, so callers need not know whether systemd runs them.
 */
/* Sends state ("READY=1", "STATUS=...", "RELOADING=1", "STOPPING=1", "WATCHDOG=1"). */
custos_err notify_send(const char *state) CUSTOS_WUR;
/* The watchdog interval systemd asked for (WATCHDOG_USEC, when WATCHDOG_PID is unset, this pid
 * or its parent: the supervisor systemd started, whose child the proxy is), or 0 when none. */
uint64_t notify_watchdog_usec(void);

#endif /* CUSTOS_CORE_H */
