/*
 * custos.yaml, the platform team's file: loaded with libyaml into the typed structs below.
 * Every problem (unknown key, wrong type, missing key, value out of range, broken reference)
 * is reported with file:line:col; a config with any error is never used. docs/CONFIG.md is the
 * reference for every key. Modules never read this struct directly: cli/ and the `up` glue map
 * it onto each module's own options struct.
 * (Part of core; kept apart from core.h because it is large and only the daemon needs it.)
 */
#ifndef CUSTOS_CONFIG_H
#define CUSTOS_CONFIG_H

#include "custos/cidr.h"
#include "custos/core.h"

/* ---------------------------------------------------------------------------------------------
 * Hard limits. The config may lower the traffic limits below, never raise them: a value above
 * the constant is an out-of-range error at its file:line:col. Where `custos up` has a bound of
 * its own (an array in proxy_options, a check in the VM or sandbox code), the constant here IS
 * that bound: proxy.h, vm.h and cli/ define theirs from it, so that `config check` refuses
 * exactly what `up` would refuse (at start or at a reload), and the runtime keeps its check as
 * the last line of defence.
 */
#define CFG_MAX_FILE_BYTES   (4u << 20) /* custos.yaml itself */
#define CFG_MAX_ID_LEN       64         /* ids: [A-Za-z0-9._-], 1..64 chars */
#define CFG_MAX_PATH_LEN     4096
#define CFG_MAX_WORKERS      256
#define CFG_MAX_LISTENERS    16  /* = PROXY_MAX_LISTENERS */
#define CFG_MAX_CERTS        2   /* pairs per listener, one ECDSA, one RSA (= PROXY_MAX_CERTS) */
#define CFG_MAX_MODELS       64  /* = PROXY_MAX_UPSTREAMS, PSX_MAX_MODELS */
#define CFG_MAX_HOST_FIELD   255 /* upstream.host: bytes of a Host field value */
#define CFG_MAX_ALIASES      16
#define CFG_MAX_ROUTES       64   /* routes[] (path routes) */
#define CFG_MAX_ROUTE_TABLE  128  /* = PROXY_MAX_ROUTES (below) */
#define CFG_MAX_ROUTE_PATH   1024 /* one route's path prefix */
#define CFG_MAX_PROFILES     64
#define CFG_MAX_DATA_SOURCES 1024
#define CFG_MAX_SINKS        16
#define CFG_MAX_API_KEYS     4096
#define CFG_MAX_LIST         64  /* alpn, devices, binds, uids, dns servers ... */
#define CFG_MAX_JWT_LIST     16  /* auth.jwt issuers, audiences (= PROXY_JWT_MAX_LIST) */
#define CFG_MAX_ARGV         256 /* sandbox command words */
#define CFG_MAX_ENV          256 /* env entries and env allow-list (= SANDBOX_MAX_ENV) */
#define CFG_EGRESS_ENV       4   /* of them, the egress proxy's (below) */
/* The proxy's route table has one route per routes[] entry, per model id, per alias, and one
 * default route when there is a model: CFG_MAX_ROUTE_TABLE for all of them together. With
 * egress on, `up` sets http_proxy, HTTP_PROXY, https_proxy and HTTPS_PROXY in a process
 * sandbox, among the CFG_MAX_ENV variables it may have. */
#define CFG_MAX_SYSCALLS 512 /* custom seccomp lists */
/* A process sandbox (sandbox/profile.c sandbox_profile_validate) refuses at start what these
 * do not bound: its paths (bind src/dst, scratch path, workdir, a device's name under /dev/)
 * are shorter than CFG_MAX_SANDBOX_PATH bytes with no ".." component, and its name (the
 * model's id) is 1..CFG_MAX_ID_LEN of [A-Za-z0-9._-]. */
#define CFG_MAX_SANDBOX_PATH    1024         /* = SANDBOX_PATH_MAX: bytes + NUL */
#define CFG_MAX_BINDS           CFG_MAX_LIST /* = SANDBOX_MAX_BINDS */
#define CFG_MAX_DEVICES         CFG_MAX_LIST /* = SANDBOX_MAX_DEVICES */
#define CFG_MAX_MAP_KEYS        64           /* keys in any fixed-schema mapping */

#define CFG_MAX_HEADER_BYTES    (32u << 10) /* the HTTP codec's own ceilings (proxy/http1.h) */
#define CFG_MAX_HEADER_COUNT    100
#define CFG_MAX_REQUEST_LINE    (8u << 10)
#define CFG_MAX_BODY            (64u << 20) /* limits.body_max (= PROXY_BODY_MAX) */
#define CFG_MAX_ADMIN_BODY      (64u << 20) /* admin.max_body (= ADMIN_BODY_MAX) */
#define CFG_MAX_JSON_DEPTH      64          /* the proxy's JSON reader (JSONR_MAX_DEPTH) */
#define CFG_MAX_CONNECTIONS     1000000
#define CFG_MAX_TIMEOUT_NS      (3600ull * 1000000000ull) /* any single timeout: 1 h */
#define CFG_MAX_SHUTDOWN_NS     (600ull * 1000000000ull)
#define CFG_MAX_RESPONSE        (16ull << 30) /* egress / data-source response cap */
#define CFG_MAX_AUDIT_QUEUE     (1u << 22)
#define CFG_MAX_BATCH_WINDOW_NS (1000ull * 1000000ull) /* 1 s */
#define CFG_MAX_POOL_SIZE       4096
#define CFG_MAX_VCPUS           256             /* = VM_MAX_VCPUS */
#define CFG_MAX_CPU_MILLI       (1024u * 1000u) /* limits.cpu: 1024 CPUs (sandbox profile) */
#define CFG_MAX_INSPECT_BODY    (32u << 20) /* egress.inspect.max_body (EGRESS_INSPECT_BODY_CEIL) */
#define CFG_MAX_MEMORY          (16ull << 40)
#define CFG_MAX_VM_MEMORY       (4ull << 40) /* a VM's memory (VM_MAX_MEM_MIB = this in MiB) */
#define CFG_MAX_HOSTDEVS        8            /* a VM's PCI pass-through (= VM_MAX_HOSTDEVS) */

/* audit.body_record_max: two bodies this long must fit one audit event of
 * CFG_AUDIT_RECORD_BYTES (= AUDIT_MAX_EVENT, checked in proxy/bodyrec.h) beside the event's
 * other members */
#define CFG_MAX_AUDIT_BODY_RECORD     1536u
#define CFG_DEFAULT_AUDIT_BODY_RECORD 1024u
#define CFG_AUDIT_RECORD_BYTES        8192u
/* A VM model's libvirt domain is CFG_VM_DOMAIN_PREFIX<id>, or <that>-<n> (n from 2 to
 * CFG_MAX_VM_INSTANCES) beside a VM of the model still running (a reload replacing it, or
 * adding it back while it drains), within CFG_MAX_VM_NAME (= VM_NAME_MAX) bytes: so the id of
 * a model with sandbox.type: vm has at most 64 - 7 - 3 = 54 bytes (cli/vm_up.c checks the
 * arithmetic at compile time). */
#define CFG_MAX_VM_NAME      64
#define CFG_VM_DOMAIN_PREFIX "custos-"
#define CFG_MAX_VM_INSTANCES 64 /* VMs of one model at once (PSX_MAX_MODELS slots) */
#define CFG_MAX_VM_MODEL_ID  (CFG_MAX_VM_NAME - (sizeof(CFG_VM_DOMAIN_PREFIX) - 1) - 3)
/* The same "-<n>" goes into a VM's vm.channel_socket (a unix socket: sun_path, 108 bytes with
 * its NUL) and vm.console_log (cli/vm_up.c, 4096 bytes with the NUL), so each leaves 3 bytes
 * for it (cli/vm_up.c checks the buffers at compile time). */
#define CFG_MAX_VM_SOCKET  (108 - 1 - 3)
#define CFG_MAX_VM_CONSOLE (4096 - 1 - 3)
/* egress.inspect.max_held must be at least CFG_INSPECT_HELD_FACTOR x max_body + this: what one
 * body at max_body counts at its peak, the most of any media type, a multipart one (request
 * or response; proxy/egress_inspect.c q_work and resp_arm): the body at its capacity (n + 1),
 * four working copies (masked copy, JSON/form scratch, a part decoded and masked: each
 * 2n + EGRESS_INSPECT_WORK_SLACK + 1) and the offset map (4 x (n + 1)). Checked against the
 * proxy's constants at compile time (egress_inspect.c). */
#define CFG_INSPECT_HELD_FACTOR 13u
#define CFG_INSPECT_HELD_SLACK  (1u + 4u * (4096u + 1u) + 4u)

/* ---------------------------------------------------------------------------------------------
 * Building blocks.
 */
typedef struct cfg_kv {
	char *key, *value;
} cfg_kv;

/* "host:port", "[v6]:port", "unix:/path" or "/path". */
typedef enum cfg_addr_kind { CFG_ADDR_TCP = 0, CFG_ADDR_UNIX } cfg_addr_kind;
typedef struct cfg_addr {
	cfg_addr_kind kind;
	char *host;    /* TCP: name or literal, without brackets; NULL for unix */
	uint16_t port; /* TCP */
	char *path;    /* unix: absolute socket path */
	bool loopback; /* unix, 127.0.0.0/8, ::1 or "localhost" */
} cfg_addr;

/* ---------------------------------------------------------------------------------------------
 * log:, workers:, limits:
 */
typedef struct cfg_log {
	log_level level;   /* default info */
	log_format format; /* default auto */
	char *file;        /* NULL: stderr; else appended to, reopened on SIGUSR1 */
} cfg_log;

typedef struct cfg_limits {
	uint64_t header_bytes;    /* default 16 KiB, max CFG_MAX_HEADER_BYTES */
	uint64_t header_count;    /* default 100 */
	uint64_t request_line;    /* default 8 KiB */
	uint64_t body_max;        /* default 10 MiB */
	uint64_t json_depth;      /* default 64 */
	uint64_t max_connections; /* default 10000 */
	uint64_t client_header_timeout_ns, client_body_timeout_ns, client_idle_timeout_ns;
	uint64_t upstream_connect_timeout_ns, upstream_read_timeout_ns, upstream_idle_timeout_ns;
	uint64_t shutdown_timeout_ns; /* graceful shutdown bound */
} cfg_limits;

/* ---------------------------------------------------------------------------------------------
 * listeners[]
 */
typedef enum cfg_client_auth {
	CFG_CLIENT_AUTH_NONE = 0,
	CFG_CLIENT_AUTH_OPTIONAL,
	CFG_CLIENT_AUTH_REQUIRED
} cfg_client_auth;
typedef enum cfg_tls_version { CFG_TLS_1_2 = 0, CFG_TLS_1_3 } cfg_tls_version;

typedef struct cfg_cert_pair {
	char *cert, *key;
	char *ocsp; /* listeners, admin.tls: DER OCSP response stapled for cert; NULL: none */
} cfg_cert_pair;

typedef struct cfg_tls_server {
	bool enabled;         /* a tls: block is present */
	cfg_cert_pair *certs; /* cert/key first, then certificates[] */
	size_t n_certs;       /* >= 1 when enabled */
	char *client_ca;      /* required unless client_auth is none */
	cfg_client_auth client_auth;
	cfg_tls_version min_version; /* default 1.2 */
	char *ciphers;               /* TLS 1.2 list; NULL = Mozilla intermediate */
	char *ciphersuites;          /* TLS 1.3 list; NULL = OpenSSL default */
	char **alpn;                 /* default ["http/1.1"]; only http/1.1, http/1.0; [] = off */
	size_t n_alpn;
	bool session_tickets;        /* default true */
	uint64_t ticket_rotation_ns; /* default 12 h */
	char *client_crl;            /* PEM CRLs checked for client certificates; NULL: none */
} cfg_tls_server;

typedef struct cfg_listener {
	char *id;
	char *address; /* as written */
	cfg_addr addr;
	cfg_tls_server tls;
	bool force_plain; /* allow plain HTTP on a non-loopback address */
	/* PROXY protocol (v1/v2) before TLS or HTTP, accepted only from peers in
	 * proxy_protocol_from (required with it; TCP listeners only) */
	bool proxy_protocol;
	custos_cidr *proxy_protocol_from;
	size_t n_proxy_protocol_from;
} cfg_listener;

/* ---------------------------------------------------------------------------------------------
 * auth:
 */
typedef struct cfg_api_key {
	char *id;
	uint8_t sha256[32]; /* digest of the bearer token; compare with CRYPTO_memcmp */
} cfg_api_key;

enum { CFG_JWT_RS256 = 1u << 0, CFG_JWT_ES256 = 1u << 1, CFG_JWT_EDDSA = 1u << 2 };

typedef struct cfg_auth {
	cfg_api_key *api_keys;
	size_t n_api_keys;
	char *api_keys_file; /* lines "id sha256hex"; loaded by the proxy */
	struct {
		bool enabled; /* a jwt: block is present */
		char *jwks_file;
		char **issuers;
		size_t n_issuers;
		char **audiences;
		size_t n_audiences;
		unsigned algorithms;   /* CFG_JWT_* bits; default all three */
		uint64_t leeway_ns;    /* default 30 s */
		char *principal_claim; /* default "sub" */
	} jwt;
	struct {
		/* Whether a verified client certificate names the caller (default true when any
		 * listener requests client certificates); false: certificates only gate the
		 * handshake, callers need an API key or a JWT. */
		bool enabled;
	} mtls;
} cfg_auth;

/* ---------------------------------------------------------------------------------------------
 * models[]
 */
typedef enum cfg_upstream_kind {
	CFG_UPSTREAM_HTTP = 0,
	CFG_UPSTREAM_HTTPS,
	CFG_UPSTREAM_UNIX,
	CFG_UPSTREAM_SANDBOX /* the model's own sandbox, on sandbox.port */
} cfg_upstream_kind;

typedef struct cfg_upstream {
	cfg_upstream_kind kind;
	char *url;          /* as written; NULL for sandbox */
	char *host;         /* http/https */
	uint16_t port;      /* http/https (default 80/443) */
	char *path;         /* unix: socket path; http/https: base path ("/" default) */
	bool tls_verify;    /* always true: false is refused (upstreams are always verified) */
	char *ca_file;      /* https: NULL = system store */
	char *server_name;  /* https: SNI/verify name; default host */
	uint64_t pool_size; /* keep-alive connections kept; default 64 */
	uint64_t connect_timeout_ns, read_timeout_ns, idle_timeout_ns; /* default: limits */
	char *cert; /* https: client certificate chain (PEM) presented to the upstream; NULL: none */
	char *key;  /* https: its private key (PEM, 0600 or stricter); set with cert */
	char *crl_file; /* https: PEM CRLs checked for the upstream's chain; NULL: none */
	char *host_field; /* upstream.host: the Host sent upstream; NULL: the default (cfg_upstream_host) */
} cfg_upstream;

typedef enum cfg_sandbox_type {
	CFG_SANDBOX_NONE = 0,
	CFG_SANDBOX_PROCESS,
	CFG_SANDBOX_VM
} cfg_sandbox_type;

typedef struct cfg_model_sandbox {
	cfg_sandbox_type type; /* default none */
	char *profile;         /* key of sandbox_profiles */
	size_t profile_index;  /* resolved index into cfg->profiles */
	char **command;        /* argv; required for process */
	size_t n_command;
	cfg_kv *env;
	size_t n_env;
	char *workdir;
	uint16_t port; /* where the model server listens inside; default 8000 */
	struct {
		char *path;                /* NULL: ready on TCP connect */
		uint64_t start_timeout_ns; /* give up waiting for first readiness */
	} health;
	uint64_t restart_initial_ns, restart_max_ns; /* exponential backoff */
} cfg_model_sandbox;

typedef struct cfg_model {
	char *id;
	char **aliases;
	size_t n_aliases;
	cfg_upstream upstream;
	cfg_model_sandbox sandbox;
} cfg_model;

/* ---------------------------------------------------------------------------------------------
 * routes[]: requests by path prefix to a model's upstream. A path route wins over the body's
 * `model`; prefixes match whole segments and never overlap (docs/CONFIG.md, routes).
 */
typedef struct cfg_route {
	char *path;         /* "/v1/embeddings": '/' + segments, no trailing '/', no '%', no dots */
	char *model;        /* as written: a model's id or alias */
	size_t model_index; /* resolved index into cfg->models */
} cfg_route;

/* ---------------------------------------------------------------------------------------------
 * sandbox_profiles: (a map id -> profile)
 */
enum {
	CFG_NS_USER = 1u << 0,
	CFG_NS_PID = 1u << 1,
	CFG_NS_MOUNT = 1u << 2,
	CFG_NS_NET = 1u << 3,
	CFG_NS_IPC = 1u << 4,
	CFG_NS_UTS = 1u << 5,
	CFG_NS_CGROUP = 1u << 6,
	CFG_NS_ALL = (1u << 7) - 1
};
typedef enum cfg_seccomp_base { CFG_SECCOMP_DEFAULT = 0, CFG_SECCOMP_GPU } cfg_seccomp_base;
typedef enum cfg_gpu { CFG_GPU_NONE = 0, CFG_GPU_NVIDIA, CFG_GPU_AMD } cfg_gpu;
typedef enum cfg_scratch_type { CFG_SCRATCH_TMPFS = 0, CFG_SCRATCH_DIR } cfg_scratch_type;
/* auto (the default): vsock when the host has /dev/vhost-vsock, virtio-serial otherwise. */
typedef enum cfg_vm_channel { CFG_VM_VSOCK = 0, CFG_VM_VIRTIO_SERIAL, CFG_VM_AUTO } cfg_vm_channel;
typedef enum cfg_vm_type { CFG_VM_KVM = 0, CFG_VM_QEMU } cfg_vm_type;

typedef struct cfg_bind {
	char *src, *dst; /* absolute; dst defaults to src */
	bool rw;         /* default false */
} cfg_bind;

typedef struct cfg_profile {
	char *id;
	unsigned namespaces; /* CFG_NS_* bits; default CFG_NS_ALL (net always kept) */
	struct {
		cfg_seccomp_base base; /* default, or gpu */
		char **allow;          /* extra syscalls allowed (never the always-denied ones) */
		size_t n_allow;
		char **deny; /* syscalls removed from the base list */
		size_t n_deny;
	} seccomp;
	cfg_gpu gpu;
	char **devices; /* extra device nodes, under /dev/ */
	size_t n_devices;
	cfg_bind *binds;
	size_t n_binds;
	bool sysfs; /* read-only /sys; default false (gpu profiles add what they need) */
	struct {
		cfg_scratch_type type; /* default tmpfs */
		uint64_t size;         /* tmpfs size; default 256 MiB */
		char *path;            /* dir: host directory; mount point is /scratch */
	} scratch;
	struct {
		uint64_t memory;    /* bytes; 0 = no limit */
		uint64_t swap;      /* bytes; default 0 (no swap) */
		uint64_t pids;      /* default 512 */
		uint64_t cpu_milli; /* "1.5" cpus = 1500; 0 = no limit */
		uint64_t nofile;    /* default 4096 */
	} limits;
	bool landlock; /* default true */
	char **env_allow;
	size_t n_env_allow;
	struct {
		bool enabled; /* a vm: block is present */
		uint64_t vcpus;
		uint64_t memory;
		bool hugepages;
		uint32_t *cpu_pinning; /* host CPUs, one per vCPU in order */
		size_t n_cpu_pinning;
		char *kernel, *initrd, *disk, *cmdline;
		char **hostdev; /* PCI addresses "0000:01:00.0" */
		size_t n_hostdev;
		cfg_vm_channel channel; /* default CFG_VM_AUTO */
		uint32_t vsock_cid;     /* 0 = assigned automatically */
		char *console_log;
		cfg_vm_type domain_type; /* kvm (default) or qemu (TCG, no hardware assist) */
		char *libvirt_uri;       /* NULL: qemu:///system */
		char *channel_socket;    /* virtio-serial: the unix socket QEMU binds (absolute);
		                            NULL: /run/custos/vm-<model>.sock */
	} vm;
} cfg_profile;

/* ---------------------------------------------------------------------------------------------
 * data_sources[], egress:
 */
typedef enum cfg_classification {
	CFG_CLASS_PUBLIC = 0,
	CFG_CLASS_INTERNAL,
	CFG_CLASS_CONFIDENTIAL,
	CFG_CLASS_RESTRICTED
} cfg_classification;

typedef struct cfg_data_source {
	char *id;
	char *url;  /* as written */
	bool https; /* scheme */
	char *host; /* lower-case */
	uint16_t port;
	char *path_prefix; /* "/" default */
	cfg_classification classification;
	bool intercept;               /* TLS interception (https only) */
	bool allow_private_addresses; /* lift the SSRF deny classes for this source */
	char *ca_file;                /* NULL = system store */
	uint64_t max_response;        /* 0 = egress default */
	uint64_t timeout_ns;          /* 0 = egress default */
	char *cert;     /* client certificate chain (PEM) presented to the origin; intercepted https
	               sources only (a tunnel's TLS is the model's own); NULL: none */
	char *key;      /* its private key (PEM, 0600 or stricter); set with cert */
	char *crl_file; /* https: PEM CRLs checked for the origin's chain */
} cfg_data_source;

typedef struct cfg_egress {
	bool enabled;              /* default true when data_sources is non-empty */
	uint16_t port;             /* listener port inside each sandbox; default 3128 */
	char *ca_dir;              /* interception CA (custos ca init); needed to intercept */
	uint64_t leaf_lifetime_ns; /* minted leaf certificates; default 24 h */
	uint64_t max_response;     /* default 100 MiB */
	uint64_t connect_timeout_ns, read_timeout_ns, idle_timeout_ns;
	uint64_t max_connections_per_sandbox; /* default 64 */
	char **dns_servers;                   /* empty = the system resolver; "ip[:port]" */
	size_t n_dns_servers;
	uint64_t dns_timeout_ns;   /* per try; default 2 s */
	uint64_t inspect_max_body; /* egress.inspect.max_body; default 8 MiB */
	uint64_t inspect_max_held; /* egress.inspect.max_held; default 80 MiB */
} cfg_egress;

/* ---------------------------------------------------------------------------------------------
 * audit:
 */
typedef enum cfg_durability { CFG_DURABILITY_SYNC = 0, CFG_DURABILITY_BATCH } cfg_durability;
typedef enum cfg_on_full { CFG_ON_FULL_BLOCK = 0, CFG_ON_FULL_DENY } cfg_on_full;
typedef enum cfg_on_write_error {
	CFG_ON_WRITE_ERROR_DENY = 0,
	CFG_ON_WRITE_ERROR_CONTINUE
} cfg_on_write_error;
/* audit.query: what an audited request path keeps of its query string (audit_query's order) */
typedef enum cfg_audit_query {
	CFG_AUDIT_QUERY_NAMES = 0,
	CFG_AUDIT_QUERY_FULL,
	CFG_AUDIT_QUERY_NONE
} cfg_audit_query;
typedef enum cfg_sink_type { CFG_SINK_SYSLOG = 0, CFG_SINK_HTTP } cfg_sink_type;
typedef enum cfg_sink_format {
	CFG_FORMAT_RFC5424 = 0,
	CFG_FORMAT_CEF,
	CFG_FORMAT_LEEF,
	CFG_FORMAT_JSON
} cfg_sink_format;

typedef struct cfg_sink {
	char *id;
	cfg_sink_type type;
	cfg_sink_format format; /* syslog default rfc5424; http: json only */
	char *address;          /* syslog: host:port */
	cfg_addr addr;
	struct {
		bool enabled; /* a tls: block is present */
		char *ca, *cert, *key;
		char *crl;   /* PEM CRLs checked for the server's chain; NULL: none */
		bool verify; /* default true */
		char *server_name;
	} tls;
	struct {
		char *url; /* http(s)://.../services/collector/event */
		bool https;
		char *host;    /* from url, lowercased, without brackets */
		uint16_t port; /* from url; 80/443 when not written */
		char *path;    /* from url: the event endpoint (contains /services/collector) */
		char *token_file;
		bool ack; /* use HEC indexer acknowledgement when offered; default true */
	} http;
	uint64_t retry_initial_ns, retry_max_ns;
} cfg_sink;

typedef struct cfg_audit {
	char *dir;                             /* default /var/lib/custos/audit */
	cfg_durability durability;             /* default batch */
	uint64_t batch_window_ns;              /* default 10 ms */
	uint64_t queue_size;                   /* events; default 65536 */
	cfg_on_full on_full;                   /* default block */
	uint64_t rotate_size;                  /* default 256 MiB; 0 = never */
	uint64_t rotate_interval_ns;           /* default 24 h; 0 = never */
	uint64_t checkpoint_every_events;      /* default 1000 */
	uint64_t checkpoint_every_interval_ns; /* default 60 s */
	char *signing_key;                     /* Ed25519 private key (0600) */
	char *public_key;
	cfg_on_write_error on_write_error; /* default deny */
	cfg_audit_query query;             /* default names */
	/* bytes of each body `audit: bodies` records; default 1 KiB */
	uint64_t body_record_max;
	cfg_sink *sinks;
	size_t n_sinks;
} cfg_audit;

/* ---------------------------------------------------------------------------------------------
 * admin:, policy:
 */
typedef struct cfg_admin {
	bool enabled;           /* default true */
	char *socket;           /* default /run/custos/admin.sock */
	uint32_t socket_mode;   /* default 0660 */
	uint32_t *allowed_uids; /* empty = the uid custos runs as (and root) */
	size_t n_allowed_uids;
	struct {
		bool enabled; /* a tcp: block is present */
		char *address;
		cfg_addr addr;
		uint8_t token_sha256[32];
	} tcp;
	bool force;        /* allow the TCP port on a non-loopback address without tls */
	uint64_t max_body; /* default 1 MiB */
	/* admin.tls: TLS on the TCP port (enabled, one cert/key pair, client_ca: client
	 * certificates required; client_auth, min_version and tickets set to match) */
	cfg_tls_server tls;
} cfg_admin;

/* proxy: the internet-facing process of `custos up` (privilege separation, docs/SANDBOX.md). */
typedef struct cfg_proxy {
	char *user;        /* run as this user; NULL: unchanged (uid 0 keeps no capability) */
	bool self_sandbox; /* default true: no capabilities, NO_NEW_PRIVS, Landlock, seccomp */
} cfg_proxy;

typedef struct cfg_policy {
	char *file;            /* default /etc/custos/policy.yaml */
	bool reload_on_sighup; /* default true */
} cfg_policy;

/* ---------------------------------------------------------------------------------------------
 * The whole file. Strings and arrays are owned by the config (one arena), released by
 * config_free; never free a field yourself.
 */
typedef struct cfg_arena cfg_arena;
typedef struct custos_config {
	char *source; /* file name it came from */
	/* SHA-256 (hex) of the bytes config_load parsed, "" from config_parse: a reload's proxy
	 * and supervisor check that they read the same custos.yaml (PSX_RELOAD) */
	char source_sha256[65];
	uint64_t version; /* 1 */
	cfg_log log;
	uint64_t workers; /* 0 = number of cores */
	cfg_limits limits;
	cfg_listener *listeners;
	size_t n_listeners;
	cfg_auth auth;
	cfg_model *models;
	size_t n_models;
	cfg_route *routes;
	size_t n_routes;
	cfg_profile *profiles;
	size_t n_profiles;
	cfg_data_source *data_sources;
	size_t n_data_sources;
	cfg_egress egress;
	cfg_audit audit;
	cfg_admin admin;
	cfg_policy policy;
	cfg_proxy proxy;
	cfg_arena *arena_; /* private */
} custos_config;

/* Loads and validates path (refused when writable by group or others). On success *out is
 * owned by the caller (config_free) and d may hold warnings. On failure *out is NULL, every
 * problem is in d and CUSTOS_ERR_PARSE, CUSTOS_ERR_INVAL or the file error is returned. */
custos_err config_load(const char *path, custos_config **out, diag_list *d) CUSTOS_WUR;
/* Same from memory: text[len] named `name` in messages (fuzzing, tests, reload over a socket). */
custos_err config_parse(const char *name, const char *text, size_t len, custos_config **out,
                        diag_list *d) CUSTOS_WUR;
/* Where a string setting of cfg was written: value is the pointer taken from cfg (not an equal
 * string); false for a default value, which was written nowhere. */
bool config_where(const custos_config *cfg, const char *value, unsigned *line, unsigned *col);
/* The log: section of path alone (level and format; file left NULL), read even when the rest
 * of the file has errors, so that `up` can report them in the format the file asks for.
 * CUSTOS_OK when path is YAML whose log: section is valid; *out is unchanged otherwise. */
custos_err config_load_log(const char *path, cfg_log *out) CUSTOS_WUR;
/* Whether next may replace running on a reload (SIGHUP or the admin API): CUSTOS_OK, or
 * CUSTOS_ERR_INVAL when next changes a setting `custos up` reads at start only (log, workers,
 * limits.timeouts.shutdown, a kept model moved between a VM and a process sandbox, a kept VM
 * changed while its profile keeps a PCI device of the old one, data_sources, egress, audit,
 * admin, policy.reload_on_sighup, proxy); err_msg then names the first such setting.
 * Listeners are checked by proxy_reload (proxy.h). Neither config is changed. */
custos_err config_reload_check(const custos_config *running, const custos_config *next) CUSTOS_WUR;
/* True when next adds, removes or replaces (config_sandbox_replaced) a sandboxed model (by id)
 * against running: the supervisor then starts or stops sandboxes for the reload. */
bool config_sandboxes_changed(const custos_config *running, const custos_config *next);
/* True when the model id is sandboxed in both configs with a different sandbox block or
 * profile: the reload replaces its sandbox (stops the old one, starts a new one). */
bool config_sandbox_replaced(const custos_config *running, const custos_config *next,
                             const char *id);
/* The Host field custos sends to model m's upstream (never the client's): upstream.host when
 * set; else, for http/https, the URL's host (server_name when set) with its port unless it is
 * the scheme's default, for a Unix socket "localhost", for a sandbox "127.0.0.1:PORT". */
void config_upstream_host(const cfg_model *m, char *out, size_t n);
/* Releases everything the config owns (secrets wiped); NULL is fine. */
void config_free(custos_config *cfg);
/* Every key the parser knows, as a path: a list's items are "[]", a profile is "<id>"
 * ("listeners[].tls.client_ca", "sandbox_profiles.<id>.vm.vcpus"), each section's keys in
 * their table's order. refused: a key known only to be refused with a hint (a feature that
 * does not exist, such as auth.mtls.identity). `custos config keys` prints them. */
void config_keys(void (*cb)(const char *path, bool refused, void *arg), void *arg);
/* The system calls no sandbox profile may allow (NULL-terminated, static): the sandbox's seccomp
 * filter denies them always, and config check refuses them in a profile's allow list. */
const char *const *config_always_denied_syscalls(void);
/* How config check knows a system call name: core has no table of them, the sandbox has
 * (sandbox_syscall_known, libseccomp's for this architecture). The custos binary installs it
 * once at start, before any config is read; then a name in a profile's seccomp.allow or deny
 * that the sandbox would refuse at start is refused at its file:line:col. Without it (NULL:
 * tests of core alone, fuzzing) only the spelling is checked. */
void config_set_syscall_check(bool (*known)(const char *name));

/* Lookups: the entry with that id (models also by alias), or NULL. */
const cfg_model *config_find_model(const custos_config *cfg, const char *id);
const cfg_profile *config_find_profile(const custos_config *cfg, const char *id);
const cfg_data_source *config_find_data_source(const custos_config *cfg, const char *id);
/* Static names of enum values as written in the file ("process", "batch", ...). */
const char *config_classification_name(cfg_classification c);
const char *config_sandbox_type_name(cfg_sandbox_type t);

#endif
