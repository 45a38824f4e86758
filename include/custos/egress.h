/*
 * custos egress proxy: the model's only way to data. A forward proxy (absolute-URI HTTP and
 * CONNECT) listening inside each sandbox; every destination matched to a data source, decided
 * by policy with the model's identity and, while an ingress request is in flight, the end
 * user's; SSRF-checked and pinned; TLS verified upstream, optionally intercepted. Behaviour and
 * decisions: docs/EGRESS.md. Takes plain option structs; cli/ maps custos.yaml onto them.
 */
#ifndef CUSTOS_EGRESS_H
#define CUSTOS_EGRESS_H

#include "custos/core.h"
#include "custos/policy.h" /* POLICY_MAX_NAME */

/* Named limits (STYLE.md 6); options may lower them. */
#define EGRESS_MAX_SOURCES      4096
#define EGRESS_MAX_LISTENERS    256
#define EGRESS_MAX_CONNS        65536 /* per listener, hard ceiling */
#define EGRESS_MAX_ADDED        64    /* listeners open at once beyond egress_create's (reloads) */
#define EGRESS_MAX_REQUEST_BODY (64u << 20)    /* request body a model may send */
#define EGRESS_DEFAULT_RESPONSE (100ull << 20) /* response body cap when none is set */
/* Bytes held for content inspection: a request body the rule inspects, a JSON response body,
 * one NDJSON line. Past it: 413 (request) or 502 (response), fail closed (docs/EGRESS.md).
 * The default of egress.inspect.max_body, which may go up to the JSON walker's maximum. */
#define EGRESS_INSPECT_BODY_MAX  (8u << 20)
#define EGRESS_INSPECT_BODY_CEIL (32u << 20) /* = INSPECT_JSON_MAX_BODY */
/* Bytes held for inspection by all connections together (egress.inspect.max_held): a body
 * that would pass it is refused with 503 (fail closed) instead of growing memory. At least
 * what one body of EGRESS_INSPECT_BODY_MAX needs (13 x 8 MiB + 16393, a multipart body), with
 * room for its call's forwarded copy (docs/EGRESS.md "memory bound"). */
#define EGRESS_INSPECT_HELD_DEFAULT (128ull << 20)
#define EGRESS_MAX_INFLIGHT         65536 /* registered in-flight ingress requests */
#define EGRESS_ID_MAX               128   /* model, sandbox, request ids */
/* The ingress principal an egress call is attributed to, + NUL: a policy principal id
 * (POLICY_MAX_NAME) is kept whole, as egress rules look it up by name (an identity no
 * principal matched, "cert:<SAN URI>"..., is attributed to no principal). */
#define EGRESS_PRINCIPAL_MAX     (POLICY_MAX_NAME + 1)
#define EGRESS_MAX_FWD_LOOPS     16                    /* forward event loops, ceiling */
#define EGRESS_HELLO_MAX         (64u * 1024)          /* ClientHello bytes peeked for SNI */
#define EGRESS_MAX_DNS_SERVERS   64                    /* egress.dns.servers */
#define EGRESS_REQUEST_ID_HEADER "X-Custos-Request-Id" /* optional, forwarded by the model */
#define EGRESS_REASON_HEADER     "X-Custos-Reason"

typedef struct egress_source {
	char *id;          /* data source id (policy.yaml and custos.yaml share it) */
	bool https;        /* scheme */
	char *host;        /* as configured */
	uint16_t port;     /* exact port; 0: the scheme's default */
	char *path_prefix; /* "/" when none */
	bool intercept;    /* TLS interception (https only); needs ca_dir */
	bool allow_private;
	char *ca_file;         /* upstream CA bundle; NULL: system store */
	uint64_t max_response; /* 0: the egress default */
	uint64_t timeout_ns;   /* upstream read timeout; 0: the egress default */
	char *cert_file; /* client certificate chain (PEM) presented to the origin; intercepted
	                    sources only; NULL: none */
	char *key_file;  /* its private key (PEM, mode 0600 or stricter); set with cert_file */
	char *crl_file;  /* PEM CRLs: the origin's chain checked against them; NULL: none */
} egress_source;

typedef struct egress_listener_opts {
	char *address; /* "127.0.0.1:3128", "[::1]:3128"; unused when fd >= 0 */
	int fd;        /* a listening socket made inside the sandbox's netns, or -1 (owned) */
	char *model;   /* the model whose sandbox this listener serves */
	char *sandbox; /* sandbox id for audit; may be NULL */
	int isolation; /* policy_isolation of the running sandbox; -1: the model's */
	/* > 0: only connections from this process are served (SO_PEERCRED), the others refused
	 * and audited: a VM's listener is an abstract AF_UNIX socket, which any process in
	 * custos' network namespace could reach, and only the VM channel's thread (in the
	 * supervisor) may. 0: any peer (a process sandbox's listener lives in its netns). */
	pid_t peer_pid;
} egress_listener_opts;

typedef struct egress_options {
	egress_source *sources; /* owned, malloc'd array */
	size_t nsources;
	egress_listener_opts *listeners; /* owned, malloc'd array */
	size_t nlisteners;
	char *policy_file; /* policy.yaml; NULL: the source catalogue alone decides (logged) */
	/* The compiled policy to start with (a reference, taken over), used instead of reading
	 * policy_file: custos up hands over the ingress proxy's, so that both proxies judge by
	 * one compiled policy and never by two reads of a file that may change between them. */
	struct policy *policy;
	char *ca_dir; /* interception CA (custos ca init); needed by intercepting sources */
	uint64_t leaf_lifetime_ns;   /* 0: 24 h */
	uint64_t max_response;       /* 0: EGRESS_DEFAULT_RESPONSE */
	uint64_t connect_timeout_ns; /* 0: 5 s */
	uint64_t read_timeout_ns;    /* 0: 60 s */
	uint64_t idle_timeout_ns;    /* client keep-alive and tunnel idle; 0: 60 s */
	unsigned max_conns;          /* per listener (sandbox); 0: 64 */
	uint64_t inspect_max_body;   /* one held body; 0: EGRESS_INSPECT_BODY_MAX */
	uint64_t inspect_max_held;   /* all held bodies together; 0: EGRESS_INSPECT_HELD_DEFAULT */
	/* Plain forward requests: on forward_loops event loops (0: one per CPU), or, with forward_threads,
	 * on a thread per connection as CONNECT tunnels and request bodies always are. */
	unsigned forward_loops;
	bool forward_threads;
	/* DNS servers custos queries itself ("ip", "ipv4:port", "[ipv6]:port"; owned); none: the
	 * system resolver (getaddrinfo, which also reads /etc/hosts). docs/EGRESS.md "Names". */
	char **dns_servers;
	size_t n_dns_servers;
	uint64_t dns_timeout_ns;    /* per try (each server is tried twice); 0: 2 s */
	struct audit_writer *audit; /* borrowed; NULL: events go to the log as JSON */
	/* audit.on_write_error: continue: an allowed call whose egress.decision the writer cannot
	 * write (CUSTOS_ERR_IO) is still made; otherwise it is refused (fail closed). A full
	 * queue in deny mode refuses it either way. */
	bool audit_fail_open;
} egress_options;

typedef struct egress_server egress_server;

/* Writes a new interception CA into dir (ca.key 0600, ca.crt); never overwrites. */
custos_err egress_ca_init(const char *dir) CUSTOS_WUR;

/* Zeroes o and allocates room for nsources sources and nlisteners listeners (fds -1). */
void egress_options_init(egress_options *o, size_t nsources, size_t nlisteners);
/* Frees what o owns (strings, listener fds). */
void egress_options_free(egress_options *o);

/* Validates o, loads policy and CA, builds upstream TLS contexts, opens the listeners. Takes
 * over o's contents (o is emptied, success or not). *out: caller's (egress_free). */
custos_err egress_create(egress_options *o, egress_server **out) CUSTOS_WUR;
/* Starts one accept thread per listener, the forward loops (plain requests) and the tunnel
 * relay; tunnels, request bodies and interception get a connection thread each. */
custos_err egress_start(egress_server *s) CUSTOS_WUR;
/* Stops accepting, shuts open connections down and waits for their threads. */
void egress_stop(egress_server *s);
void egress_free(egress_server *s);
/* Puts p in force (a reference, taken over; NULL: nothing changes): custos up hands over the
 * ingress proxy's policy once a reload was applied there, so both proxies run the same
 * compiled policy. Decisions in progress keep the policy they started with. Without a policy
 * at start (no policy_file) the catalogue alone keeps deciding and p is dropped (logged). */
void egress_set_policy(egress_server *s, struct policy *p);
/* The TLS client context of every https source made again, its files read again (ca_file or
 * the system store, crl_file, cert_file/key_file: renewed ones), for egress_tls_commit: a file
 * that does not load fails here (message in err_msg, naming the source) and the contexts in
 * force stay. *out: NULL when no source is https; else the caller's (egress_tls_commit or
 * egress_tls_next_free). */
typedef struct egress_tls_next egress_tls_next;
custos_err egress_tls_prepare(egress_server *s, egress_tls_next **out) CUSTOS_WUR;
/* Puts n's contexts in force (n is taken over; NULL: nothing): connections from now on use
 * them, with an empty origin session cache (a session made under the previous CA, CRLs or
 * certificate is never offered again); connections already open keep theirs. */
void egress_tls_commit(egress_server *s, egress_tls_next *n);
void egress_tls_next_free(egress_tls_next *n);
/* Hands listener i a new listening fd (taking it over), e.g. made inside a restarted
 * sandbox's new netns; the accept thread switches within its poll interval and closes the old
 * one. The listener's taint starts over (the new instance has read nothing). */
custos_err egress_listener_replace(egress_server *s, size_t i, int fd) CUSTOS_WUR;
/* Adds a listener on lo->fd (taken over, as are lo's strings; lo is zeroed) for a sandbox or
 * a model without one that a reload added, with its accept thread when the server runs; *index is its number for the
 * calls here. At most EGRESS_MAX_ADDED beyond the listeners egress_create opened are open at
 * once: a closed listener's index is taken again once its accept thread has left and the last
 * connection it accepted has ended (CUSTOS_ERR_LIMIT when no slot is free). */
custos_err egress_listener_add(egress_server *s, egress_listener_opts *lo,
                               size_t *index) CUSTOS_WUR;
/* A host listener on address ("127.0.0.1:3128"), bound and listening as egress_create opens
 * one (SO_REUSEADDR, no accept yet): for egress_listener_add's lo->fd. *fd is the caller's. */
custos_err egress_listen(const char *address, int *fd) CUSTOS_WUR;
/* Closes listener i (its sandbox was removed): its accept thread ends and closes its socket
 * within its poll interval (egress_stop joins it); connections it accepted finish on their
 * own. Its index may be handed out again by egress_listener_add once they have: the caller
 * forgets it now. */
custos_err egress_listener_close(egress_server *s, size_t i) CUSTOS_WUR;
/* Waits for the accept threads of closed listeners that have no connection open to leave (at
 * most their poll interval), so that egress_listener_add then takes their slots without
 * waiting: a reload calls it between closing listeners and adding others under its locks. */
void egress_listeners_reap(egress_server *s);
/* The port listener i is bound to (0 when none). */
unsigned egress_bound_port(const egress_server *s, size_t i);
/* Highest classification (policy_class) the sandbox behind listener i has read. */
int egress_taint(const egress_server *s, size_t i);

/* ---------------------------------------------------------------------------------------------
 * Request-scoped egress. The ingress proxy registers each request it forwards to a model and
 * ends it when the response is done; egress calls from that model's sandbox are attributed to
 * it (docs/EGRESS.md "Attribution"). Process-wide, thread-safe, never blocks on I/O.
 */
/* Registers an in-flight ingress request; returns a token for egress_ingress_end (0 when the
 * registry is full: the request is then simply not attributable). */
uint64_t egress_ingress_begin(const char *model, const char *request_id, const char *principal);
void egress_ingress_end(uint64_t token);

typedef enum egress_attr_how {
	EGRESS_ATTR_NONE = 0, /* no request in flight, or several and no valid header */
	EGRESS_ATTR_SOLE,     /* exactly one request in flight on the model */
	EGRESS_ATTR_HEADER,   /* X-Custos-Request-Id named one of the model's requests */
} egress_attr_how;
/* Finds the ingress request an egress call of model belongs to: the one named by header_id
 * (when not empty and in flight on that model), else the only one in flight. Copies its ids
 * out; returns how it was found. */
egress_attr_how egress_attribute(const char *model, span header_id, char request_id[EGRESS_ID_MAX],
                                 char principal[EGRESS_PRINCIPAL_MAX]);

#endif /* CUSTOS_EGRESS_H */
