/*
 * custos admin API: a small HTTP server (libmicrohttpd) on a Unix socket (file mode plus an
 * SO_PEERCRED uid allow-list) and optionally on a TCP port (bearer token, stored as SHA-256;
 * loopback unless TLS, admin_tls.c, or forced). Health, readiness, Prometheus metrics, policy status and reload, a policy decision
 * point, sandbox status and restart, audit status. docs/ADMIN.md documents the endpoints.
 */
#ifndef CUSTOS_ADMIN_H
#define CUSTOS_ADMIN_H

#include <sys/types.h>

#include "custos/config.h"
#include "custos/core.h"

/* Named limits (STYLE.md 6). */
#define ADMIN_BODY_DEFAULT    (1u << 20)         /* request body, when max_body is 0 */
#define ADMIN_BODY_MAX        CFG_MAX_ADMIN_BODY /* largest max_body accepted */
#define ADMIN_MAX_UIDS        64                 /* allow-list entries */
#define ADMIN_MAX_SANDBOXES   64
#define ADMIN_MAX_CONNECTIONS 64     /* concurrent admin connections per listener */
#define ADMIN_CONN_MEMORY     65536u /* libmicrohttpd memory per connection (head) */
#define ADMIN_TIMEOUT_S       10     /* idle/slow connection timeout, seconds */
#define ADMIN_THREADS         2      /* polling threads per listener */
#define ADMIN_TOKEN_MAX       4096   /* bearer token bytes */
#define ADMIN_RESPONSE_MAX    (16u << 20)
#define ADMIN_AUDIT_TAIL      (1u << 20) /* bytes of the newest audit file read for status */

struct policy;
struct sandbox;
struct audit_writer;

/* A sandbox the admin API reports on and may restart (borrowed; must outlive the server). */
typedef struct admin_sandbox {
	const char *name;
	struct sandbox *sb;
	uint64_t memory_bytes, pids, nofile; /* limits as configured (0: none) */
	uint32_t cpu_millis;
} admin_sandbox;

/* A sandbox's state as a privilege-separated supervisor reported it (any kind). */
typedef struct admin_sandbox_state {
	const char *kind; /* "process", "vm" (static) */
	bool running;
	int64_t pid; /* -1: none */
	uint64_t generation, restarts;
	char profile_hash[65]; /* "" when unknown */
	char cgroup[8];        /* "" when unknown */
} admin_sandbox_state;

/* A process sandbox as the sandboxes_get hook reports it now: its limits and its state read
 * together (one snapshot per request). */
#define ADMIN_SANDBOX_NAME_MAX 80
typedef struct admin_sandbox_info {
	char name[ADMIN_SANDBOX_NAME_MAX + 1];
	uint64_t memory_bytes, pids, nofile; /* limits as configured (0: none) */
	uint32_t cpu_millis;
	admin_sandbox_state st; /* running false and pid -1 while no state was reported yet */
} admin_sandbox_info;

/* A VM sandbox (docs/VM.md) as GET /v1/sandboxes lists it: a snapshot the vms_get hook fills
 * per request. The const char * fields point at static strings. */
#define ADMIN_VM_NAME_MAX 80
typedef struct admin_vm {
	char name[ADMIN_VM_NAME_MAX + 1];   /* the model's id */
	char domain[ADMIN_VM_NAME_MAX + 1]; /* libvirt domain name */
	char uuid[37];                      /* libvirt domain UUID; "" while it has no domain */
	char profile_hash[65];              /* SHA-256 of the domain XML */
	const char *state;   /* "running", "starting", "restarting", "failed", "stopped" */
	const char *channel; /* "vsock" or "virtio-serial" */
	unsigned vsock_cid;  /* 0 for virtio-serial */
	unsigned restarts;
	uint64_t started_wall_ns; /* the current domain's start (0: none yet) */
	int64_t qemu_pid;         /* the QEMU process last checked (-1: none) */
	const char *seccomp;      /* "filter" (Seccomp: 2, routed), "refused", "pending" */
	bool routable;            /* traffic goes to it now */
	int taint; /* policy_class read through egress since it started; -1 unknown */
} admin_vm;

/* What the server calls into (from its own threads). */
typedef struct admin_hooks {
	void *arg;
	/* The policy in force with one reference for the caller (NULL: none loaded). */
	struct policy *(*policy_get)(void *arg);
	/* Re-reads the configured policy (and configuration) and swaps it in; on failure the
	 * old one stays and every problem is in d (or err_msg). old_hash and new_hash get the
	 * hashes (64 hex digits, "" for none) of the policy in force before and after it, read
	 * while it holds the reload lock: another reload (SIGHUP) just before or after it never
	 * shows in its audit event. */
	custos_err (*policy_reload)(void *arg, diag_list *d, char old_hash[65], char new_hash[65]);
	/* Highest classification (policy_class) the named sandbox has read through egress since
	 * its instance started, or -1 when unknown (no egress listener). NULL: not tracked. */
	int (*taint_get)(void *arg, const char *sandbox);
	/* When set, the process sandboxes are the ones it reports on each request (a reload adds
	 * and removes them; admin_options.sandboxes is not used): it fills out[0..max) and
	 * returns how many. A restart is then a request: sandbox_restart returns 0 or an errno
	 * (ESRCH: that pid is no longer the instance; ENOENT: no such sandbox any more). */
	size_t (*sandboxes_get)(void *arg, admin_sandbox_info *out, size_t max);
	int (*sandbox_restart)(void *arg, const char *name, int64_t pid);

	/* Fills out[0..max) with the VM sandboxes and returns how many. NULL: none. */
	size_t (*vms_get)(void *arg, admin_vm *out, size_t max);
	/* True once custos stops (the proxy drains after a SIGTERM): /readyz answers 503 with
	 * "draining": true, so that a balancer sends nothing more. NULL: never. */
	bool (*stopping)(void *arg);
} admin_hooks;

typedef struct admin_options {
	const char *socket_path; /* NULL: no Unix socket */
	int socket_fd;        /* >= 1: socket_path is already bound (admin_open_unix); taken over */
	uint32_t socket_mode; /* 0: 0660; bits for others are refused */
	const uint32_t *allowed_uids; /* n == 0: custos' own effective uid and root */
	size_t n_allowed_uids;
	const char *tcp_address;  /* "127.0.0.1:9090" or "[::1]:9090"; NULL: no TCP */
	uint8_t token_sha256[32]; /* SHA-256 of the bearer token (TCP) */
	bool force;               /* allow a non-loopback TCP address without TLS */
	/* admin.tls: TLS (OpenSSL) on the TCP listener, with the proxy listeners' defaults (TLS
	 * 1.2+, Mozilla intermediate); a non-loopback address then needs no force. NULL: none.
	 * tls_client_ca: client certificates signed by it are required (admin_tls_swap: a reload). */
	const char *tls_cert, *tls_key, *tls_client_ca;
	const char *tls_client_crl; /* PEM CRLs for the client certificates; needs tls_client_ca */
	/* DER OCSP response for tls_cert, checked and stapled as a listener's; NULL: none */
	const char *tls_ocsp;
	uint64_t max_body;          /* 0: ADMIN_BODY_DEFAULT */
	unsigned timeout_s;         /* 0: ADMIN_TIMEOUT_S */
	struct audit_writer *audit; /* borrowed; NULL: admin events go to the log */
	const char *audit_dir;      /* the trail's directory, for chain head and last checkpoint */
	const admin_sandbox *sandboxes; /* borrowed; unused with hooks.sandboxes_get */
	size_t n_sandboxes;
	admin_hooks hooks;
} admin_options;

typedef struct admin_server admin_server;

/* Validates o, creates the listening sockets (Unix socket with mode socket_mode; a stale
 * socket at the path is replaced) and starts the server threads. *out is the caller's
 * (admin_stop). The strings and arrays of o are copied. */
custos_err admin_start(const admin_options *o, admin_server **out) CUSTOS_WUR;
/* Binds the Unix socket at path as admin_start would (stale-socket check, mode; 0: 0660) and
 * gives it to uid:gid (unless uid is -1): for a process that binds it before it gives up its
 * privileges, then passes *fd as admin_options.socket_fd. *fd is the caller's. */
custos_err admin_open_unix(const char *path, uint32_t mode, uid_t uid, gid_t gid,
                           int *fd) CUSTOS_WUR;
/* admin.tls on a reload (files replaced in place, or other paths): a new TLS context for the
 * TCP listener from these files (ocsp, client_ca, client_crl: NULL for none), made and checked
 * as at start; *out is the caller's until it gives it to admin_tls_swap (the reload applied) or
 * admin_tls_free (refused). CUSTOS_ERR_INVAL when a serves no TLS. */
struct ssl_ctx_st;
custos_err admin_tls_prepare(const admin_server *a, const char *cert, const char *key,
                             const char *ocsp, const char *client_ca, const char *client_crl,
                             struct ssl_ctx_st **out) CUSTOS_WUR;
/* New connections handshake with ctx from now on (taken); those in progress keep theirs. */
void admin_tls_swap(admin_server *a, struct ssl_ctx_st *ctx);
/* Frees a context admin_tls_prepare made; NULL is fine. */
void admin_tls_free(struct ssl_ctx_st *ctx);
/* Port the TCP listener got (tests bind port 0); 0 without TCP. */
unsigned admin_tcp_port(const admin_server *a);
/* Stops the threads, closes and unlinks the socket, frees a. NULL is fine. */
void admin_stop(admin_server *a);

/* Hook for the sandbox supervisor's events (restart, violation, OOM...): counts them for
 * /metrics under the sandbox's name. kind is a sandbox_event_kind; count is the number of
 * calls a VIOLATION event stands for (summed beyond the burst; 0 counts as 1). */
void admin_sandbox_event(const char *name, int kind, uint64_t count);

/* An answer of the admin API as a client reads it (custos ctl: one request, Connection: close),
 * proxy/admin_answer.c. How its connection stands when it is fed: */
typedef enum admin_answer_end {
	ADMIN_END_OPEN = 0, /* still open: more may come */
	ADMIN_END_CLEAN,    /* ended cleanly: a TLS close_notify, or EOF on a plain connection */
	ADMIN_END_ABRUPT, /* ended without a TLS close_notify (a cut anyone on the path can make) */
} admin_answer_end;
typedef struct admin_answer admin_answer;
/* A parser for one answer whose body may have max_body bytes; aborts on OOM. */
admin_answer *admin_answer_new(size_t max_body);
/* Frees a; NULL is fine. */
void admin_answer_free(admin_answer *a);
/* Feeds in, the answer's bytes read so far from its first (each call the same bytes and maybe
 * more; they may move). CUSTOS_OK: the answer is whole, by its framing (Content-Length reached,
 * the last chunk), or, with neither, by a CLEAN end; bytes after its end are not looked at.
 * CUSTOS_ERR_AGAIN: not whole yet and end is OPEN (read more). CUSTOS_ERR_PARSE: malformed, or
 * cut short (the connection ended before the framing's end, or ABRUPTly with no framing);
 * CUSTOS_ERR_LIMIT: a body past max_body. Not to be fed once whole. */
custos_err admin_answer_feed(admin_answer *a, span in, admin_answer_end end) CUSTOS_WUR;
/* The whole answer's status (100..599; 0 while not whole). */
unsigned admin_answer_status(const admin_answer *a);
/* The whole answer's body, without chunked framing (a view into a; empty while not whole). */
span admin_answer_body(const admin_answer *a);

#endif /* CUSTOS_ADMIN_H */
