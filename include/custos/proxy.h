/*
 * custos ingress proxy: worker threads with epoll loops in front of model servers. TLS (OpenSSL
 * 3), identity (mTLS, API key, JWT), routing by path and model, policy and audit on every
 * request, streaming responses with backpressure. Takes plain option structs; cli/ maps
 * custos.yaml onto them.
 */
#ifndef CUSTOS_PROXY_H
#define CUSTOS_PROXY_H

#include "custos/cidr.h"
#include "custos/config.h" /* the bounds custos.yaml shares with the proxy (CFG_MAX_*) */
#include "custos/core.h"
#include "custos/policy.h" /* POLICY_MAX_NAME: a principal id fits whole */

/* Named limits (STYLE.md 6); options may lower them. Those custos.yaml can reach are defined
 * by config.h, so that config check refuses at its position what proxy_create would. */
#define PROXY_MAX_LISTENERS CFG_MAX_LISTENERS
#define PROXY_MAX_UPSTREAMS CFG_MAX_MODELS
#define PROXY_MAX_ROUTES    CFG_MAX_ROUTE_TABLE
#define PROXY_MAX_API_KEYS  4096
#define PROXY_MAX_WORKERS   256
#define PROXY_MAX_CERTS     CFG_MAX_CERTS /* one ECDSA and one RSA */
#define PROXY_HEAD_MAX      (16u * 1024)
#define PROXY_BODY_MAX      CFG_MAX_BODY /* largest max_body accepted */
#define PROXY_BODY_DEFAULT  (1u << 20)
#define PROXY_OUTBUF_MAX    (256u * 1024) /* client output buffer: backpressure point */
#define PROXY_UPHEAD_MAX    (32u * 1024)  /* upstream response head */
#define PROXY_JWKS_MAX      (256u * 1024)
#define PROXY_JWT_MAX       8192
/* The principal a decision names (a policy principal id, POLICY_MAX_NAME bytes, whole: the
 * limiter keys and egress attribution use it) + NUL. */
#define PROXY_PRINCIPAL_MAX  (POLICY_MAX_NAME + 1)
#define PROXY_REQUEST_ID_LEN 32
#define PROXY_JWT_MAX_LIST   CFG_MAX_JWT_LIST /* accepted issuers, audiences */
#define PROXY_MAX_ALPN       2            /* protocols a listener can offer: http/1.1, http/1.0 */
#define PROXY_MAX_PP_FROM    CFG_MAX_LIST /* address ranges a listener trusts for PROXY headers */

typedef enum proxy_client_auth {
	PROXY_CLIENT_CERT_NONE = 0,
	PROXY_CLIENT_CERT_OPTIONAL,
	PROXY_CLIENT_CERT_REQUIRED,
} proxy_client_auth;

/* ALPN protocol ids custos can speak (the codec is HTTP/1.x only: no h2, no h3). */
typedef enum proxy_alpn { PROXY_ALPN_HTTP11 = 1, PROXY_ALPN_HTTP10 } proxy_alpn;

typedef struct proxy_tls_opts {
	char *cert_file[PROXY_MAX_CERTS]; /* PEM chain; ECDSA and/or RSA */
	char *key_file[PROXY_MAX_CERTS];  /* PEM key, mode 0600 or stricter */
	size_t ncerts;
	char *client_ca; /* CA bundle for client certificates (mTLS) */
	proxy_client_auth client_auth;
	char *ciphers;             /* TLS 1.2 list; NULL: Mozilla intermediate */
	char *ciphersuites;        /* TLS 1.3 list; NULL: OpenSSL default */
	bool tls13_only;           /* minimum version TLS 1.3 */
	uint64_t ticket_rotate_ns; /* session ticket key lifetime (process-wide: the last listener
	                              set up with tickets wins); tickets are accepted for two
	                              lifetimes; 0: 12 h */
	bool no_tickets;           /* no session tickets (no resumption) */
	proxy_alpn alpn[PROXY_MAX_ALPN]; /* offered, in server preference order; none: http/1.1 */
	size_t nalpn;
	bool no_alpn;     /* negotiate no ALPN at all: a client's offer is ignored, never refused */
	char *client_crl; /* PEM CRLs: client certificate chains checked (needs client_auth) */
	/* DER OCSP response stapled for cert_file[i] (checked when the context is made); NULL: none */
	char *ocsp_file[PROXY_MAX_CERTS];
} proxy_tls_opts;

typedef struct proxy_listener_opts {
	char *address;           /* "127.0.0.1:8443", "[::1]:8443", "0.0.0.0:443", "unix:/path" */
	bool tls;                /* false: plain HTTP, only on loopback/Unix unless force_plain */
	proxy_tls_opts tls_opts; /* when tls */
	bool force_plain;        /* allow plain HTTP on a non-loopback address */
	/* A PROXY protocol header (v1 or v2) comes first, from a peer in pp_from only */
	bool proxy_protocol;
	custos_cidr pp_from[PROXY_MAX_PP_FROM];
	size_t npp_from;
} proxy_listener_opts;

typedef struct proxy_upstream_opts {
	char *name;
	char *address;               /* "host:port" or "unix:/path" */
	bool tls;                    /* TLS to the upstream, certificate verified */
	char *tls_ca;                /* CA bundle for the upstream; NULL: system store */
	char *tls_name;              /* SNI and verified name; NULL: host of address */
	uint64_t connect_timeout_ns; /* 0: 5 s */
	uint64_t read_timeout_ns;    /* between bytes of a response; 0: 60 s */
	uint64_t idle_timeout_ns;    /* pooled keep-alive connection; 0: 30 s */
	unsigned pool_max;           /* idle connections kept per worker; 0: 64 */
	bool pool_off;               /* keep none (custos.yaml pool_size: 0) */
	struct sandbox *sandbox;     /* borrowed: connect inside this sandbox's network namespace
	                                (sandbox.h) to 127.0.0.1:sandbox_port; address unused */
	uint16_t sandbox_port;
	/* borrowed, when set (and sandbox is NULL): opens a connected stream to the model server
	 * (e.g. over a VM's channel, vm_channel_open_stream); returns CUSTOS_OK with *fd owned by
	 * the caller. Called on a worker thread: must not block for long. address unused */
	custos_err (*connect_fn)(void *arg, int *fd);
	void *connect_arg;
	/* borrowed, when set: called once with connect_arg when these options are freed
	 * (proxy_options_free), i.e. once no request can use them any more: the state holding
	 * them was replaced by a reload and the last request that started with it ended, or the
	 * options were never applied. Called on any thread; must not call into the proxy. */
	void (*release_fn)(void *arg);
	char *tls_cert; /* client certificate chain (PEM) presented to the upstream; NULL: none */
	char *tls_key;  /* its private key (PEM, mode 0600 or stricter); set with tls_cert */
	char *tls_crl;  /* PEM CRLs: the upstream's chain checked against them; NULL: none */
	/* The Host field sent upstream in place of the client's (custos.yaml: upstream.host or
	 * config_upstream_host's default; a valid authority); NULL: "localhost" */
	char *host;
} proxy_upstream_opts;

typedef struct proxy_route_opts {
	char *model;       /* body `model` to match; NULL matches any */
	char *path_prefix; /* request path prefix on whole segments ("/v1/embeddings" matches
	                      "/v1/embeddings/x", not "/v1/embeddingsx"); NULL matches any */
	size_t upstream;   /* index into upstreams[] */
	char *model_id;    /* model id given to policy and audit; NULL: the body's model */
} proxy_route_opts;

typedef struct proxy_api_key {
	char *principal;    /* principal id */
	uint8_t sha256[32]; /* SHA-256 of the key; the key itself is never held */
} proxy_api_key;

/* proxy_jwt_opts.algorithms bits. */
enum { PROXY_JWT_RS256 = 1u << 0, PROXY_JWT_ES256 = 1u << 1, PROXY_JWT_EDDSA = 1u << 2 };

typedef struct proxy_jwt_opts {
	char *jwks_file;                   /* NULL: JWT off */
	unsigned algorithms;               /* PROXY_JWT_* accepted in a token's alg; 0: all three */
	char *issuers[PROXY_JWT_MAX_LIST]; /* `iss` must be one of them; none: not checked */
	size_t n_issuers;
	char *audiences[PROXY_JWT_MAX_LIST]; /* `aud` must hold one of them; none: not checked */
	size_t n_audiences;
	uint64_t leeway_s;     /* clock skew allowed for exp/nbf */
	char *principal_claim; /* claim naming the principal; NULL: "sub" */
} proxy_jwt_opts;

/* Audit writer handed to the proxy (audit.h's writer, opaque here). */
struct audit_writer;
/* Compiled policy handle (policy.h), opaque here. */
struct proxy_policy;

typedef struct proxy_options {
	unsigned workers; /* 0: number of online CPUs */
	proxy_listener_opts listeners[PROXY_MAX_LISTENERS];
	size_t nlisteners;
	proxy_upstream_opts upstreams[PROXY_MAX_UPSTREAMS];
	size_t nupstreams;
	proxy_route_opts routes[PROXY_MAX_ROUTES]; /* tried in order: the first match wins */
	size_t nroutes;
	proxy_api_key *api_keys; /* owned */
	size_t napi_keys;
	proxy_jwt_opts jwt;
	bool allow_anonymous;     /* requests without credentials reach policy as "anonymous" */
	bool ignore_client_certs; /* auth.mtls.enabled false: a verified client certificate
	                             (still checked in the handshake) names no caller */
	char *policy_file;        /* policy.yaml; NULL: allow all (tests only, logged loudly) */
	/* Called with the policy just compiled from policy_file, before it is put in force (at
	 * create and at each reload): an error refuses the start or the reload. May be NULL. */
	custos_err (*policy_check)(void *arg, const struct policy *p);
	void *policy_check_arg;
	/* The taint an ingress request to model sees (policy `taint`): the highest
	 * classification (policy_class) the model's sandbox has read through custos's egress
	 * proxy; -1 when none is known (no sandbox, no egress): public. Called on the request
	 * path of every worker when the policy's ingress rules compare taint
	 * (policy_needs_taint), so it must be quick and thread-safe. May be NULL: public. */
	int (*taint_get)(void *arg, const char *model);
	void *taint_get_arg;
	uint64_t max_body; /* 0: PROXY_BODY_DEFAULT */
	/* Called (with proxy_run's arg) once a SIGHUP reload whose callback set it has ended,
	 * whatever its outcome (applied: the options were swapped in), for state kept outside
	 * the proxy that must change with it (the egress policy) and for the caller to end what
	 * it began in the callback (custos up serialises reloads). */
	void (*reloaded)(void *arg, bool applied);
	uint64_t max_head_bytes;       /* request line + header fields; 0: the codec's 32 KiB */
	uint64_t max_headers;          /* header fields per request; 0: the codec's 100 */
	uint64_t max_request_line;     /* request line; 0: the codec's 8 KiB */
	unsigned max_json_depth;       /* nesting of /v1/ JSON request bodies; 0: the reader's 64 */
	uint64_t header_timeout_ns;    /* request head must arrive within; 0: 10 s */
	uint64_t body_timeout_ns;      /* between request body bytes; 0: 60 s */
	uint64_t keepalive_timeout_ns; /* idle client keep-alive; 0: 60 s */
	uint64_t shutdown_grace_ns;    /* in-flight requests get this long on SIGTERM; 0: 10 s */
	uint64_t max_connections;      /* client connections, all workers; 0: no limit */
	struct audit_writer *audit;    /* borrowed; NULL: audit events go to the log (tests) */
	bool audit_batch; /* the writer is in batch durability: events of one event-loop batch
	                     are handed over together at its end */
	/* bytes of each body an `audit: bodies` event records (audit.body_record_max); 0: the
	 * default, 1 KiB; above CFG_MAX_AUDIT_BODY_RECORD refused */
	uint64_t audit_body_max;
} proxy_options;

typedef struct proxy_server proxy_server;

/* Frees everything an options struct owns (strings, api_keys) and zeroes it. */
void proxy_options_free(proxy_options *o);

/* Validates o, builds TLS contexts, loads policy and keys, opens one SO_REUSEPORT listener
 * per worker and address. Takes over o's contents (o is zeroed, success or not). *out is
 * owned by the caller (proxy_free). Nothing runs yet. */
custos_err proxy_create(proxy_options *o, proxy_server **out) CUSTOS_WUR;

/* Reload callback: fills *o from the configuration source (custos.yaml); the proxy owns *o
 * afterwards. A failure keeps the state in force. */
typedef custos_err (*proxy_reload_fn)(void *arg, proxy_options *o);

/* Starts the workers and blocks until SIGTERM/SIGINT, then drains (stop accepting, finish
 * in-flight requests within shutdown_grace_ns) and returns. SIGHUP calls reload (when not
 * NULL) and swaps the new config, certificates and policy atomically; a failed reload keeps
 * the old state and logs why. Returns CUSTOS_OK after a clean shutdown. */
custos_err proxy_run(proxy_server *s, proxy_reload_fn reload, void *arg) CUSTOS_WUR;

/* Builds a new state from o (taking over its contents) and swaps it in; on failure the old
 * state stays (message in err_msg). Listeners and worker count are fixed at create time. */
custos_err proxy_reload(proxy_server *s, proxy_options *o) CUSTOS_WUR;

/* Loads the JWKS file at path as the proxy does (auth.jwt.jwks_file) and drops it: CUSTOS_OK
 * when it holds at least one usable signing key, else why not in err_msg (config check). */
custos_err proxy_jwks_check(const char *path) CUSTOS_WUR;

/* An OCSP response file (listeners[].tls ocsp, admin.tls.ocsp) checked as the proxy loads it,
 * against the PEM chain in cert (the leaf first, its issuer after it): a successful basic
 * response for the leaf, signed by the issuer or a responder it authorised, status good,
 * thisUpdate not ahead of now. CUSTOS_OK with its times (Unix seconds) in out, also when it is
 * past its nextUpdate (the proxy loads it then but does not staple it); else why not in
 * err_msg, naming the file. */
typedef struct proxy_ocsp_info {
	int64_t produced_at, this_update, next_update;
} proxy_ocsp_info;
custos_err proxy_ocsp_check(const char *cert, const char *ocsp, proxy_ocsp_info *out) CUSTOS_WUR;

/* The port the first TCP listener got (for address ":0" in tests); 0 when none. */
unsigned proxy_bound_port(const proxy_server *s, size_t listener);

/* The policy in force with one reference for the caller (policy_unref; policy.h), NULL when
 * the proxy runs without a policy. Safe from any thread (the admin API's). */
struct policy *proxy_policy_ref(proxy_server *s);
/* The reason phrase of an HTTP status custos answers or knows ("Forbidden"), NULL for any
 * other: the proxy's own table, for clients of the admin API (custos ctl). */
const char *proxy_status_reason(unsigned status);

/* Sets the audit writer after proxy_create (a privilege-separated proxy starts its writer only
 * once it is confined); only before proxy_run. batch as proxy_options.audit_batch. fail_open
 * (custos.yaml audit.on_write_error: continue): while the writer cannot write, requests are
 * still served (their events are lost, logged at most every 10 s) instead of refused (503). */
void proxy_set_audit(proxy_server *s, struct audit_writer *audit, bool batch, bool fail_open);

/* Asks a running proxy_run to shut down (as SIGTERM would); async-signal-safe. */
void proxy_request_stop(proxy_server *s);

/* True once proxy_run drains (SIGTERM, SIGINT or proxy_request_stop taken): a reload is then
 * refused, not applied (docs/PROXY.md "Reload and shutdown"). Safe from any thread. */
bool proxy_stopping(proxy_server *s);

void proxy_free(proxy_server *s);

#endif /* CUSTOS_PROXY_H */
