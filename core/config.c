/*
 * custos.yaml schema: each section parsed into its typed struct with defaults, every problem
 * reported at file:line:col (the whole file is checked, never stopping at the first error),
 * then the cross-section checks (unique ids, references, plain HTTP and admin TCP only on
 * loopback unless forced). docs/CONFIG.md is the reference and must follow this file.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_int.h"

#define MS(x)  ((uint64_t)(x)*1000000ull)
#define SEC(x) ((uint64_t)(x)*1000000000ull)

static const char *const top_keys[] = { "version",      "log",       "workers",
	                                "limits",       "listeners", "auth",
	                                "models",       "routes",    "sandbox_profiles",
	                                "data_sources", "egress",    "audit",
	                                "admin",        "policy",    "proxy" };

/* The key tables of every mapping, one per path (a list's items "[]", a profile "<id>"):
 * the parser checks each mapping against its table, and config_keys() lists them all. */
static const char *const keys_log[] = { "level", "format", "file" };
static const char *const keys_limits[] = { "header_bytes", "header_count", "request_line",
	                                   "body_max",     "json_depth",   "max_connections",
	                                   "timeouts" };
static const char *const keys_limits_timeouts[] = { "client_header", "client_body",
	                                            "client_idle",   "upstream_connect",
	                                            "upstream_read", "upstream_idle",
	                                            "shutdown" };
static const char *const keys_listeners_tls[] = { "cert",
	                                          "key",
	                                          "certificates",
	                                          "client_ca",
	                                          "client_auth",
	                                          "min_version",
	                                          "ciphers",
	                                          "ciphersuites",
	                                          "alpn",
	                                          "session_tickets",
	                                          "ticket_key_rotation",
	                                          "client_crl",
	                                          "ocsp" };
static const char *const keys_listeners_tls_certificates[] = { "cert", "key", "ocsp" };
static const char *const keys_listeners[] = {
	"id", "address", "tls", "force_plain", "proxy_protocol", "proxy_protocol_from"
};
static const char *const keys_auth[] = { "api_keys", "api_keys_file", "jwt", "mtls" };
static const char *const keys_auth_api_keys[] = { "id", "sha256" };
static const char *const keys_auth_jwt[] = { "jwks_file",  "issuers", "audiences",
	                                     "algorithms", "leeway",  "principal_claim" };
static const char *const keys_auth_mtls[] = { "enabled", "identity" };
static const char *const keys_models_upstream[] = { "url",         "tls_verify", "ca_file",
	                                            "server_name", "pool_size",  "timeouts",
	                                            "cert",        "key",        "crl_file",
	                                            "host" };
static const char *const keys_models_upstream_timeouts[] = { "connect", "read", "idle" };
static const char *const keys_models_sandbox[] = { "type",    "profile", "command", "env",
	                                           "workdir", "port",    "health",  "restart" };
static const char *const keys_models_sandbox_health[] = { "path", "timeout", "interval",
	                                                  "start_timeout" };
static const char *const keys_models_sandbox_restart[] = { "initial", "max" };
static const char *const keys_models[] = { "id", "aliases", "upstream", "sandbox" };
static const char *const keys_routes[] = { "path", "model" };
static const char *const keys_sandbox_profiles_profile_seccomp[] = { "base", "allow", "deny" };
static const char *const keys_sandbox_profiles_profile_vm[] = {
	"vcpus",     "memory",      "hugepages", "cpu_pinning", "kernel",
	"initrd",    "disk",        "cmdline",   "hostdev",     "channel",
	"vsock_cid", "console_log", "type",      "libvirt_uri", "channel_socket"
};
static const char *const keys_sandbox_profiles_profile[] = { "namespaces", "seccomp", "gpu",
	                                                     "devices",    "binds",   "sysfs",
	                                                     "scratch",    "limits",  "landlock",
	                                                     "env_allow",  "vm" };
static const char *const keys_sandbox_profiles_profile_binds[] = { "src", "dst", "rw" };
static const char *const keys_sandbox_profiles_profile_scratch[] = { "type", "size", "path" };
static const char *const keys_sandbox_profiles_profile_limits[] = { "memory", "swap", "pids", "cpu",
	                                                            "nofile" };
static const char *const keys_data_sources[] = {
	"id",      "url",          "classification", "intercept", "allow_private_addresses",
	"ca_file", "max_response", "timeout",        "cert",      "key",
	"crl_file"
};
static const char *const keys_egress[] = { "enabled",
	                                   "port",
	                                   "ca_dir",
	                                   "leaf_lifetime",
	                                   "max_response",
	                                   "timeouts",
	                                   "max_connections_per_sandbox",
	                                   "dns",
	                                   "inspect" };
static const char *const keys_egress_timeouts[] = { "connect", "read", "idle" };
static const char *const keys_egress_inspect[] = { "max_body", "max_held" };
static const char *const keys_egress_dns[] = { "servers", "timeout" };
static const char *const keys_audit_sinks_tls[] = { "ca",  "crl",    "cert",
	                                            "key", "verify", "server_name" };
static const char *const keys_audit_sinks_http[] = { "url", "token_file", "ack" };
static const char *const keys_audit_sinks_retry[] = { "initial", "max" };
static const char *const keys_audit[] = {
	"dir",    "durability", "batch_window",   "queue_size", "on_full",
	"rotate", "checkpoint", "signing_key",    "public_key", "on_write_error",
	"sinks",  "query",      "body_record_max"
};
static const char *const keys_audit_rotate[] = { "size", "interval" };
static const char *const keys_audit_checkpoint[] = { "every_events", "every_interval" };
static const char *const keys_audit_sinks[] = { "id",  "type", "format", "address",
	                                        "tls", "http", "retry" };
static const char *const keys_proxy[] = { "user", "self_sandbox" };
static const char *const keys_admin_tls[] = { "cert", "key", "ocsp", "client_ca", "client_crl" };
static const char *const keys_admin[] = { "enabled", "socket", "socket_mode", "allowed_uids",
	                                  "tcp",     "force",  "max_body",    "tls" };
static const char *const keys_admin_tcp[] = { "address", "token_sha256" };
static const char *const keys_policy[] = { "file", "reload_on_sighup" };

static const struct cfg_key_table {
	const char *path;
	const char *const *keys;
	size_t n;
} key_tables[] = {
	{ "", top_keys, CUSTOS_ARRAY_LEN(top_keys) },
	{ "admin", keys_admin, CUSTOS_ARRAY_LEN(keys_admin) },
	{ "admin.tcp", keys_admin_tcp, CUSTOS_ARRAY_LEN(keys_admin_tcp) },
	{ "admin.tls", keys_admin_tls, CUSTOS_ARRAY_LEN(keys_admin_tls) },
	{ "audit", keys_audit, CUSTOS_ARRAY_LEN(keys_audit) },
	{ "audit.checkpoint", keys_audit_checkpoint, CUSTOS_ARRAY_LEN(keys_audit_checkpoint) },
	{ "audit.rotate", keys_audit_rotate, CUSTOS_ARRAY_LEN(keys_audit_rotate) },
	{ "audit.sinks[]", keys_audit_sinks, CUSTOS_ARRAY_LEN(keys_audit_sinks) },
	{ "audit.sinks[].http", keys_audit_sinks_http, CUSTOS_ARRAY_LEN(keys_audit_sinks_http) },
	{ "audit.sinks[].retry", keys_audit_sinks_retry, CUSTOS_ARRAY_LEN(keys_audit_sinks_retry) },
	{ "audit.sinks[].tls", keys_audit_sinks_tls, CUSTOS_ARRAY_LEN(keys_audit_sinks_tls) },
	{ "auth", keys_auth, CUSTOS_ARRAY_LEN(keys_auth) },
	{ "auth.api_keys[]", keys_auth_api_keys, CUSTOS_ARRAY_LEN(keys_auth_api_keys) },
	{ "auth.jwt", keys_auth_jwt, CUSTOS_ARRAY_LEN(keys_auth_jwt) },
	{ "auth.mtls", keys_auth_mtls, CUSTOS_ARRAY_LEN(keys_auth_mtls) },
	{ "data_sources[]", keys_data_sources, CUSTOS_ARRAY_LEN(keys_data_sources) },
	{ "egress", keys_egress, CUSTOS_ARRAY_LEN(keys_egress) },
	{ "egress.dns", keys_egress_dns, CUSTOS_ARRAY_LEN(keys_egress_dns) },
	{ "egress.inspect", keys_egress_inspect, CUSTOS_ARRAY_LEN(keys_egress_inspect) },
	{ "egress.timeouts", keys_egress_timeouts, CUSTOS_ARRAY_LEN(keys_egress_timeouts) },
	{ "limits", keys_limits, CUSTOS_ARRAY_LEN(keys_limits) },
	{ "limits.timeouts", keys_limits_timeouts, CUSTOS_ARRAY_LEN(keys_limits_timeouts) },
	{ "listeners[]", keys_listeners, CUSTOS_ARRAY_LEN(keys_listeners) },
	{ "listeners[].tls", keys_listeners_tls, CUSTOS_ARRAY_LEN(keys_listeners_tls) },
	{ "listeners[].tls.certificates[]", keys_listeners_tls_certificates,
	  CUSTOS_ARRAY_LEN(keys_listeners_tls_certificates) },
	{ "log", keys_log, CUSTOS_ARRAY_LEN(keys_log) },
	{ "models[]", keys_models, CUSTOS_ARRAY_LEN(keys_models) },
	{ "models[].sandbox", keys_models_sandbox, CUSTOS_ARRAY_LEN(keys_models_sandbox) },
	{ "models[].sandbox.health", keys_models_sandbox_health,
	  CUSTOS_ARRAY_LEN(keys_models_sandbox_health) },
	{ "models[].sandbox.restart", keys_models_sandbox_restart,
	  CUSTOS_ARRAY_LEN(keys_models_sandbox_restart) },
	{ "models[].upstream", keys_models_upstream, CUSTOS_ARRAY_LEN(keys_models_upstream) },
	{ "models[].upstream.timeouts", keys_models_upstream_timeouts,
	  CUSTOS_ARRAY_LEN(keys_models_upstream_timeouts) },
	{ "policy", keys_policy, CUSTOS_ARRAY_LEN(keys_policy) },
	{ "proxy", keys_proxy, CUSTOS_ARRAY_LEN(keys_proxy) },
	{ "routes[]", keys_routes, CUSTOS_ARRAY_LEN(keys_routes) },
	{ "sandbox_profiles.<id>", keys_sandbox_profiles_profile,
	  CUSTOS_ARRAY_LEN(keys_sandbox_profiles_profile) },
	{ "sandbox_profiles.<id>.binds[]", keys_sandbox_profiles_profile_binds,
	  CUSTOS_ARRAY_LEN(keys_sandbox_profiles_profile_binds) },
	{ "sandbox_profiles.<id>.limits", keys_sandbox_profiles_profile_limits,
	  CUSTOS_ARRAY_LEN(keys_sandbox_profiles_profile_limits) },
	{ "sandbox_profiles.<id>.scratch", keys_sandbox_profiles_profile_scratch,
	  CUSTOS_ARRAY_LEN(keys_sandbox_profiles_profile_scratch) },
	{ "sandbox_profiles.<id>.seccomp", keys_sandbox_profiles_profile_seccomp,
	  CUSTOS_ARRAY_LEN(keys_sandbox_profiles_profile_seccomp) },
	{ "sandbox_profiles.<id>.vm", keys_sandbox_profiles_profile_vm,
	  CUSTOS_ARRAY_LEN(keys_sandbox_profiles_profile_vm) },
};

/* Keys in a table only so that the parser can refuse them with a hint rather than "unknown
 * key": features that do not exist. */
static const char *const refused_keys[] = { "auth.mtls.identity", "models[].sandbox.health.timeout",
	                                    "models[].sandbox.health.interval" };

void config_keys(void (*cb)(const char *path, bool refused, void *arg), void *arg)
{
	char path[128];

	for (size_t t = 0; t < CUSTOS_ARRAY_LEN(key_tables); t++) {
		for (size_t k = 0; k < key_tables[t].n; k++) {
			bool refused = false;
			snprintf(path, sizeof(path), "%s%s%s", key_tables[t].path,
			         key_tables[t].path[0] ? "." : "", key_tables[t].keys[k]);
			for (size_t r = 0; r < CUSTOS_ARRAY_LEN(refused_keys); r++)
				refused = refused || strcmp(path, refused_keys[r]) == 0;
			cb(path, refused, arg);
		}
	}
}

/* ---------------------------------------------------------------------------------------------
 * Bounds that are `custos up`'s own (include/custos/config.h): the error names the bound and the
 * hint says whose it is, so that nobody raises the number here without the runtime. Hints
 * quote the constants (UP_N) or, for sizes, are checked against them here.
 */
#define UP_N_(x) #x
#define UP_N(x)  UP_N_(x)
_Static_assert(CFG_MAX_BODY == 64u << 20, "body_max's hint says 64MiB");
_Static_assert(CFG_MAX_VM_MEMORY == 4ull << 40, "vm.memory's hint says 4TiB");
_Static_assert(CFG_MAX_CPU_MILLI == 1024u * 1000u, "limits.cpu's hint says 1024");
#define HINT_LISTENERS                                                                             \
	"custos up serves at most " UP_N(CFG_MAX_LISTENERS) " listeners (PROXY_MAX_LISTENERS)"
#define HINT_MODELS "custos up serves at most " UP_N(CFG_MAX_MODELS) " models (PROXY_MAX_UPSTREAMS)"
#define HINT_CERTS                                                                                 \
	"a listener serves at most " UP_N(                                                         \
	        CFG_MAX_CERTS) " certificate/key pairs, one ECDSA and one RSA (PROXY_MAX_CERTS)"
#define HINT_JWT_LIST                                                                              \
	"the proxy accepts at most " UP_N(CFG_MAX_JWT_LIST) " issuers and " UP_N(                  \
	        CFG_MAX_JWT_LIST) " audiences (PROXY_JWT_MAX_LIST)"
#define HINT_BODY_MAX                                                                              \
	"the proxy reads request bodies of at most 64MiB (PROXY_BODY_MAX); policy rules may "      \
	"lower it per request"
#define HINT_ROUTE_TABLE                                                                           \
	"custos up routes by one table of at most " UP_N(                                          \
	        CFG_MAX_ROUTE_TABLE) " entries (PROXY_MAX_ROUTES): one per model id, alias and "   \
	                             "routes entry, and one default; drop aliases or routes"
#define HINT_VCPUS     "a VM custos starts has at most " UP_N(CFG_MAX_VCPUS) " vCPUs (VM_MAX_VCPUS)"
#define HINT_VM_MEMORY "a VM custos starts has at most 4TiB of memory (VM_MAX_MEM_MIB)"
#define HINT_HOSTDEVS                                                                              \
	"a VM custos starts has at most " UP_N(CFG_MAX_HOSTDEVS) " PCI devices (VM_MAX_HOSTDEVS)"
#define HINT_VM_MODEL_ID                                                                           \
	"its libvirt domain is custos-<id>, or custos-<id>-<n> beside a VM of it still running, "  \
	"in at most " UP_N(CFG_MAX_VM_NAME) " bytes (VM_NAME_MAX): shorten the id (an alias "      \
	                                    "keeps the old name for clients)"
_Static_assert(CFG_MAX_SANDBOX_PATH == 1024, "a sandbox path's hint says 1023 bytes");
#define HINT_SB_PATH "a process sandbox takes paths of at most 1023 bytes (SANDBOX_PATH_MAX)"
#define HINT_SB_DOTDOT                                                                             \
	"the sandbox refuses '..' in its paths (a bind could climb out of its new root): write "   \
	"the path without it"
#define HINT_SB_NAME                                                                               \
	"a process sandbox is named after its model (hostname, cgroup): letters, digits and . _ "  \
	"- only (SANDBOX_NAME_MAX " UP_N(CFG_MAX_ID_LEN) "); keep the id for clients as an alias"
#define HINT_VM_NAME                                                                               \
	"a VM's libvirt domain is custos-<id>, of letters, digits and . _ - only (VM_NAME_MAX): "  \
	"keep the id for clients as an alias"
#define HINT_VM_PATH                                                                               \
	"a VM replacing a running one (a reload) gets the path with -<n> (n up to " UP_N(          \
	        CFG_MAX_VM_INSTANCES) ") before its extension: 3 bytes are kept for it"
#define HINT_PROFILE_NAME                                                                          \
	"`custos sandbox exec -c` names the sandbox after its profile (hostname, cgroup): "        \
	"letters, digits and . _ - only (SANDBOX_NAME_MAX " UP_N(CFG_MAX_ID_LEN) ")"
#define HINT_EGRESS_ENV                                                                            \
	"with egress on, custos up adds http_proxy, HTTP_PROXY, https_proxy and HTTPS_PROXY to "   \
	"the " UP_N(CFG_MAX_ENV) " variables a sandbox may have (SANDBOX_MAX_ENV)"

/* KEY as a number (bytes: a size such as 64MiB) of at least MIN; above MAX, the runtime's
 * bound, an error at its position with HINT naming where the bound comes from. */
static bool up_bound(cfg_ctx *c, ydoc_node *m, const char *key, bool bytes, uint64_t min,
                     uint64_t max, const char *hint, uint64_t *out)
{
	uint64_t v;
	char lo[32], hi[32];

	if (!(bytes ? cfg_size(c, m, key, 0, UINT64_MAX, &v)
	            : cfg_u64(c, m, key, 0, UINT64_MAX, &v)))
		return false;
	if (v < min && bytes) {
		num_format_size(min, lo, sizeof(lo));
		num_format_size(max, hi, sizeof(hi));
		ydoc_error(c->doc, cfg_get(m, key), c->d, NULL,
		           "'%s' must be at least %s (range %s - %s)", key, lo, lo, hi);
		return false;
	}
	if (v < min) {
		ydoc_error(c->doc, cfg_get(m, key), c->d, NULL,
		           "'%s': %llu is out of range [%llu, %llu]", key, (unsigned long long)v,
		           (unsigned long long)min, (unsigned long long)max);
		return false;
	}
	if (v > max) {
		ydoc_error(c->doc, cfg_get(m, key), c->d, hint,
		           "'%s': %llu%s is above the limit of %llu%s", key, (unsigned long long)v,
		           bytes ? " bytes" : "", (unsigned long long)max, bytes ? " bytes" : "");
		return false;
	}
	*out = v;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * log, workers, limits
 */
static void parse_log(cfg_ctx *c, ydoc_node *root, cfg_log *log)
{
	static const char *const levels[] = { "error", "warn", "info", "debug" };
	static const char *const formats[] = { "auto", "text", "json" };
	ydoc_node *m = CFG_SECTION(c, root, "log", keys_log);

	log->level = LOG_LVL_INFO;
	log->format = LOG_FMT_AUTO;
	CFG_ENUM(c, m, "level", levels, log->level);
	CFG_ENUM(c, m, "format", formats, log->format);
	cfg_path(c, m, "file", false, true, &log->file);
}

static void parse_limits(cfg_ctx *c, ydoc_node *root, cfg_limits *l)
{
	ydoc_node *m = CFG_SECTION(c, root, "limits", keys_limits);

	*l = (cfg_limits){ .header_bytes = 16u << 10,
		           .header_count = 100,
		           .request_line = 8u << 10,
		           .body_max = 10u << 20,
		           .json_depth = 64,
		           .max_connections = 10000,
		           .client_header_timeout_ns = SEC(10),
		           .client_body_timeout_ns = SEC(60),
		           .client_idle_timeout_ns = SEC(75),
		           .upstream_connect_timeout_ns = SEC(5),
		           .upstream_read_timeout_ns = SEC(300),
		           .upstream_idle_timeout_ns = SEC(60),
		           .shutdown_timeout_ns = SEC(30) };
	cfg_size(c, m, "header_bytes", 1024, CFG_MAX_HEADER_BYTES, &l->header_bytes);
	cfg_u64(c, m, "header_count", 8, CFG_MAX_HEADER_COUNT, &l->header_count);
	cfg_size(c, m, "request_line", 256, CFG_MAX_REQUEST_LINE, &l->request_line);
	/* 0 once meant the proxy's own default (1 MiB), unlike every other size here: refused, so
	 * that the number written is the number in force. */
	ydoc_node *bm = cfg_get(m, "body_max");
	uint64_t body = 0;
	if (up_bound(c, m, "body_max", true, 0, CFG_MAX_BODY, HINT_BODY_MAX, &body)) {
		if (body == 0)
			ydoc_error(c->doc, bm, c->d, "write the largest body to accept, e.g. 1MiB",
			           "'body_max' must be at least 1 byte");
		else
			l->body_max = body;
	}
	cfg_u64(c, m, "json_depth", 2, CFG_MAX_JSON_DEPTH, &l->json_depth);
	cfg_u64(c, m, "max_connections", 1, CFG_MAX_CONNECTIONS, &l->max_connections);
	ydoc_node *t = CFG_SECTION(c, m, "timeouts", keys_limits_timeouts);
	cfg_dur(c, t, "client_header", MS(1), CFG_MAX_TIMEOUT_NS, &l->client_header_timeout_ns);
	cfg_dur(c, t, "client_body", MS(1), CFG_MAX_TIMEOUT_NS, &l->client_body_timeout_ns);
	cfg_dur(c, t, "client_idle", MS(1), CFG_MAX_TIMEOUT_NS, &l->client_idle_timeout_ns);
	cfg_dur(c, t, "upstream_connect", MS(1), CFG_MAX_TIMEOUT_NS,
	        &l->upstream_connect_timeout_ns);
	cfg_dur(c, t, "upstream_read", MS(1), CFG_MAX_TIMEOUT_NS, &l->upstream_read_timeout_ns);
	cfg_dur(c, t, "upstream_idle", MS(1), CFG_MAX_TIMEOUT_NS, &l->upstream_idle_timeout_ns);
	cfg_dur(c, t, "shutdown", 0, CFG_MAX_SHUTDOWN_NS, &l->shutdown_timeout_ns);
}

/* ---------------------------------------------------------------------------------------------
 * listeners
 */
static void parse_cert_pair(cfg_ctx *c, ydoc_node *m, cfg_cert_pair *p)
{
	cfg_path(c, m, "cert", true, false, &p->cert);
	cfg_path(c, m, "key", true, false, &p->key);
}

/* Cipher strings are checked by the OpenSSL that will use them (on a scratch context, only
 * when a listener sets one), so `up` never meets one it refuses. `ciphers` (TLS 1.2) must be
 * accepted whole and each suite or alias it adds must match something on its own (OpenSSL
 * skips an unknown name beside a known one: a typo would silently drop a suite); exclusions
 * (!X, -X), reorderings (+X) and @ commands are only checked as part of the whole. Each name of
 * `ciphersuites` (TLS 1.3, a plain list) must be a suite OpenSSL knows. */
static void check_ciphers(cfg_ctx *c, ydoc_node *n, const char *list, bool tls13)
{
	static const char *const hint12 =
	        "an OpenSSL cipher list for TLS 1.2, e.g. "
	        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256; "
	        "TLS 1.3 suites go in ciphersuites";
	static const char *const hint13 = "TLS 1.3 suites, e.g. "
	                                  "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char name[256];

	if (ctx == NULL) {
		ydoc_error(c->doc, n, c->d, NULL, "cannot check the cipher list: OpenSSL failed");
		ERR_clear_error();
		return;
	}
	if (!tls13 && SSL_CTX_set_cipher_list(ctx, list) != 1) {
		ydoc_error(
		        c->doc, n, c->d, hint12,
		        "ciphers '%s' is not a cipher list OpenSSL accepts, or selects no TLS 1.2 "
		        "cipher suite",
		        list);
		goto out;
	}
	/* "@SECLEVEL=0" lets OpenSSL accept keys, groups and signatures with no security at all
	 * (MD5, 512-bit RSA, anonymous suites): never what a compliance proxy should offer. */
	if (!tls13 && SSL_CTX_get_security_level(ctx) < 1) {
		ydoc_error(
		        c->doc, n, c->d, "leave the security level at OpenSSL's default",
		        "ciphers '%s' sets @SECLEVEL=0, which accepts keys and signatures with no "
		        "security (MD5, 512-bit RSA); custos refuses it",
		        list);
		goto out;
	}
	for (const char *p = list;;) {
		size_t len = strcspn(p, tls13 ? ":" : ":, ;");
		if (tls13 || (len > 0 && strchr("!-+@", *p) == NULL)) {
			snprintf(name, sizeof(name), "%.*s", (int)len, p);
			bool known = len > 0 && len < sizeof(name) &&
			             (tls13 ? SSL_CTX_set_ciphersuites(ctx, name)
			                    : SSL_CTX_set_cipher_list(ctx, name)) == 1;
			if (!known && len == 0)
				ydoc_error(c->doc, n, c->d, hint13,
				           "ciphersuites '%s' has an empty entry", list);
			else if (!known && tls13)
				ydoc_error(c->doc, n, c->d, hint13,
				           "'%s' is not a TLS 1.3 cipher suite OpenSSL knows",
				           name);
			else if (!known)
				ydoc_error(c->doc, n, c->d, hint12,
				           "'%s' in ciphers matches no TLS 1.2 cipher suite", name);
			if (!known)
				break;
		}
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
out:
	ERR_clear_error();
	SSL_CTX_free(ctx);
}

static void parse_tls_server(cfg_ctx *c, ydoc_node *lm, cfg_tls_server *t)
{
	static const char *const auths[] = { "none", "optional", "required" };
	static const char *const versions[] = { "1.2", "1.3" };
	ydoc_node *m = CFG_SECTION(c, lm, "tls", keys_listeners_tls);

	t->min_version = CFG_TLS_1_2;
	t->session_tickets = true;
	t->ticket_rotation_ns = SEC(12 * 3600);
	t->alpn = cfg_alloc(c->a, 1, sizeof(char *));
	t->alpn[0] = cfg_strdup(c->a, "http/1.1");
	t->n_alpn = 1;
	if (m == NULL)
		return;
	t->enabled = true;
	bool single = cfg_get(m, "cert") != NULL || cfg_get(m, "key") != NULL;
	ydoc_node *list =
	        cfg_seq_hint(c, m, "certificates", single ? CFG_MAX_CERTS - 1 : CFG_MAX_CERTS,
	                     single ? HINT_CERTS ": cert/key is one of them" : HINT_CERTS);
	size_t nlist = list ? list->n : 0;
	t->certs = cfg_alloc(c->a, nlist + 1, sizeof(cfg_cert_pair));
	if (single || nlist == 0) {
		parse_cert_pair(c, m, &t->certs[t->n_certs]);
		cfg_path(c, m, "ocsp", false, false, &t->certs[t->n_certs++].ocsp);
	} else if (cfg_get(m, "ocsp") != NULL) {
		ydoc_error(c->doc, cfg_get(m, "ocsp"), c->d,
		           "give each certificates entry its own ocsp, beside its cert",
		           "ocsp here is tls.cert's OCSP response, and this listener sets no cert");
	}
	for (size_t i = 0; i < nlist; i++) {
		if (CFG_MAP(c, list->items[i], "a certificates entry",
		            keys_listeners_tls_certificates)) {
			parse_cert_pair(c, list->items[i], &t->certs[t->n_certs]);
			cfg_path(c, list->items[i], "ocsp", false, false,
			         &t->certs[t->n_certs++].ocsp);
		}
	}
	cfg_path(c, m, "client_ca", false, false, &t->client_ca);
	CFG_ENUM(c, m, "client_auth", auths, t->client_auth);
	if (t->client_auth != CFG_CLIENT_AUTH_NONE && t->client_ca == NULL)
		ydoc_error(c->doc, cfg_get(m, "client_auth"), c->d,
		           "name the CA that signs client certificates",
		           "client_auth '%s' needs client_ca", auths[t->client_auth]);
	cfg_path(c, m, "client_crl", false, false, &t->client_crl);
	if (t->client_crl && t->client_auth == CFG_CLIENT_AUTH_NONE)
		ydoc_error(
		        c->doc, cfg_get(m, "client_crl"), c->d,
		        "set client_auth (optional or required) and client_ca",
		        "client_crl applies to client certificates, which this listener does not "
		        "ask for");
	ydoc_node *v = cfg_get(m, "min_version");
	if (v && v->kind == YDOC_SCALAR && strcmp(v->str, "1.2") != 0 &&
	    strcmp(v->str, "1.3") != 0) {
		ydoc_error(c->doc, v, c->d, "write 1.2 or 1.3 (older versions are not offered)",
		           "'%s' is not a supported TLS version", v->str);
	} else {
		CFG_ENUM(c, m, "min_version", versions, t->min_version);
	}
	if (cfg_str(c, m, "ciphers", false, &t->ciphers))
		check_ciphers(c, cfg_get(m, "ciphers"), t->ciphers, false);
	if (cfg_str(c, m, "ciphersuites", false, &t->ciphersuites))
		check_ciphers(c, cfg_get(m, "ciphersuites"), t->ciphersuites, true);
	/* ALPN: the codec speaks HTTP/1.x only, so only those ids may be offered; an empty list
	 * turns ALPN off (offers are then ignored, never refused). */
	char **alpn;
	size_t nalpn;
	if (cfg_strlist(c, m, "alpn", CFG_MAX_LIST, &alpn, &nalpn)) {
		ydoc_node *an = cfg_get(m, "alpn");
		bool ok = true;
		for (size_t i = 0; i < nalpn && i < an->n; i++) {
			if (strcmp(alpn[i], "http/1.1") != 0 && strcmp(alpn[i], "http/1.0") != 0) {
				ydoc_error(c->doc, an->items[i], c->d,
				           "custos speaks HTTP/1.1 (and 1.0) only: list http/1.1",
				           "ALPN protocol '%s' is not one custos can speak",
				           alpn[i]);
				ok = false;
				continue;
			}
			for (size_t j = 0; j < i; j++) {
				if (strcmp(alpn[i], alpn[j]) == 0) {
					ydoc_error(c->doc, an->items[i], c->d, NULL,
					           "ALPN protocol '%s' is listed twice", alpn[i]);
					ok = false;
					break;
				}
			}
		}
		if (ok) {
			t->alpn = alpn;
			t->n_alpn = nalpn;
		}
	}
	cfg_bool(c, m, "session_tickets", &t->session_tickets);
	cfg_dur(c, m, "ticket_key_rotation", SEC(1), SEC(7 * 24 * 3600), &t->ticket_rotation_ns);
}

/* listeners[].proxy_protocol(_from): trusted peers only (fail closed), TCP listeners only. */
static void parse_proxy_protocol(cfg_ctx *c, ydoc_node *m, cfg_listener *l)
{
	ydoc_node *on = cfg_get(m, "proxy_protocol");
	ydoc_node *from = cfg_seq(c, m, "proxy_protocol_from", CFG_MAX_LIST);

	cfg_bool(c, m, "proxy_protocol", &l->proxy_protocol);
	if (from) {
		l->proxy_protocol_from =
		        cfg_alloc(c->a, from->n ? from->n : 1, sizeof(custos_cidr));
		for (size_t i = 0; i < from->n; i++) {
			ydoc_node *it = from->items[i];
			const char *why;
			char *v;
			if (!cfg_str_node(c, it, &v))
				continue;
			if (!cidr_parse(v, &l->proxy_protocol_from[l->n_proxy_protocol_from], &why))
				ydoc_error(c->doc, it, c->d, why, "'%s' is not an address range",
				           v);
			else
				l->n_proxy_protocol_from++;
		}
	}
	if (from && !l->proxy_protocol)
		ydoc_error(c->doc, cfg_get(m, "proxy_protocol_from"), c->d,
		           "set proxy_protocol: true, or remove proxy_protocol_from",
		           "proxy_protocol_from without proxy_protocol: true");
	if (l->proxy_protocol && (from == NULL || from->n == 0))
		ydoc_error(c->doc, from ? from : on, c->d,
		           "list the load balancers' addresses, e.g. proxy_protocol_from: "
		           "[10.0.0.0/8]",
		           "proxy_protocol needs proxy_protocol_from: only trusted peers may say "
		           "who the client is");
	if (l->proxy_protocol && l->addr.kind == CFG_ADDR_UNIX)
		ydoc_error(c->doc, on, c->d, "use a TCP listener for a load balancer",
		           "proxy_protocol on a unix socket listener: its peers have no address "
		           "that proxy_protocol_from can trust");
}

static void parse_listeners(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	ydoc_node *s = cfg_seq_hint(c, root, "listeners", CFG_MAX_LISTENERS, HINT_LISTENERS);

	if (s == NULL)
		return;
	cfg->listeners = cfg_alloc(c->a, s->n, sizeof(cfg_listener));
	for (size_t i = 0; i < s->n; i++) {
		ydoc_node *m = s->items[i];
		cfg_listener *l = &cfg->listeners[cfg->n_listeners];
		if (!CFG_MAP(c, m, "a listener", keys_listeners))
			continue;
		cfg->n_listeners++;
		cfg_id(c, m, "id", true, &l->id);
		if (cfg_str(c, m, "address", true, &l->address))
			cfg_addr_parse(c, cfg_get(m, "address"), l->address, &l->addr);
		parse_tls_server(c, m, &l->tls);
		cfg_bool(c, m, "force_plain", &l->force_plain);
		bool parsed = l->addr.host != NULL || l->addr.path != NULL;
		if (parsed && !l->tls.enabled && !l->addr.loopback && !l->force_plain)
			ydoc_error(c->doc, cfg_get(m, "address"), c->d,
			           "add a tls: block, or set force_plain: true if a TLS terminator "
			           "in front of custos really protects this address",
			           "plain HTTP listener '%s' is not on loopback or a unix socket",
			           l->id ? l->id : l->address);
		parse_proxy_protocol(c, m, l);
	}
}

/* ---------------------------------------------------------------------------------------------
 * auth
 */
static void parse_auth(cfg_ctx *c, ydoc_node *root, cfg_auth *a)
{
	static const char *const algs[] = { "RS256", "ES256", "EdDSA" };
	ydoc_node *m = CFG_SECTION(c, root, "auth", keys_auth);

	a->jwt.algorithms = CFG_JWT_RS256 | CFG_JWT_ES256 | CFG_JWT_EDDSA;
	a->jwt.leeway_ns = SEC(30);
	a->jwt.principal_claim = cfg_strdup(c->a, "sub");
	if (m == NULL)
		return;
	ydoc_node *s = cfg_seq(c, m, "api_keys", CFG_MAX_API_KEYS);
	if (s) {
		a->api_keys = cfg_alloc(c->a, s->n, sizeof(cfg_api_key));
		for (size_t i = 0; i < s->n; i++) {
			cfg_api_key *k = &a->api_keys[a->n_api_keys];
			if (!CFG_MAP(c, s->items[i], "an api_keys entry", keys_auth_api_keys))
				continue;
			a->n_api_keys++;
			cfg_id(c, s->items[i], "id", true, &k->id);
			cfg_sha256(c, s->items[i], "sha256", true, k->sha256);
		}
	}
	cfg_path(c, m, "api_keys_file", false, false, &a->api_keys_file);
	ydoc_node *j = CFG_SECTION(c, m, "jwt", keys_auth_jwt);
	if (j) {
		a->jwt.enabled = true;
		cfg_path(c, j, "jwks_file", true, false, &a->jwt.jwks_file);
		if (!cfg_strlist_hint(c, j, "issuers", CFG_MAX_JWT_LIST, HINT_JWT_LIST,
		                      &a->jwt.issuers, &a->jwt.n_issuers) &&
		    cfg_get(j, "issuers") == NULL)
			ydoc_error(c->doc, j, c->d, "tokens from any issuer would be accepted",
			           "missing required key 'issuers'");
		if (!cfg_strlist_hint(c, j, "audiences", CFG_MAX_JWT_LIST, HINT_JWT_LIST,
		                      &a->jwt.audiences, &a->jwt.n_audiences) &&
		    cfg_get(j, "audiences") == NULL)
			ydoc_error(c->doc, j, c->d, "tokens for any service would be accepted",
			           "missing required key 'audiences'");
		if (a->jwt.enabled && cfg_get(j, "issuers") && a->jwt.n_issuers == 0)
			ydoc_error(c->doc, cfg_get(j, "issuers"), c->d, NULL,
			           "'issuers' must not be empty");
		if (cfg_get(j, "audiences") && a->jwt.n_audiences == 0)
			ydoc_error(c->doc, cfg_get(j, "audiences"), c->d, NULL,
			           "'audiences' must not be empty");
		ydoc_node *al = cfg_seq(c, j, "algorithms", CFG_MAX_LIST);
		if (al) {
			a->jwt.algorithms = 0;
			for (size_t i = 0; i < al->n; i++) {
				int v;
				if (ydoc_enum(c->doc, al->items[i], algs, CUSTOS_ARRAY_LEN(algs),
				              &v, c->d))
					a->jwt.algorithms |= 1u << v;
			}
			if (al->n == 0)
				ydoc_error(c->doc, al, c->d, NULL,
				           "'algorithms' must not be empty");
		}
		cfg_dur(c, j, "leeway", 0, SEC(300), &a->jwt.leeway_ns);
		cfg_str(c, j, "principal_claim", false, &a->jwt.principal_claim);
	}
	ydoc_node *mt = CFG_SECTION(c, m, "mtls", keys_auth_mtls);
	if (mt) {
		a->mtls.enabled = true;
		cfg_bool(c, mt, "enabled", &a->mtls.enabled);
		/* Which certificate field names a caller is the policy's choice, per principal;
		 * a second, global choice here was never applied, so it is refused, not ignored. */
		ydoc_node *idn = ydoc_map_get(mt, "identity");
		if (idn)
			ydoc_error(
			        c->doc, idn, c->d,
			        "match a principal on cert_san_uri, cert_san_dns, cert_san_email, "
			        "cert_cn or cert_issuer in the policy (docs/POLICY.md, section 3)",
			        "'auth.mtls.identity' is not supported: the policy's principals "
			        "choose which certificate field names a caller");
	}
}

/* ---------------------------------------------------------------------------------------------
 * models
 */
static void parse_url_hostport(cfg_ctx *c, ydoc_node *node, const char *rest, bool https,
                               char **host, uint16_t *port, char **path)
{
	const char *slash = strchr(rest, '/');
	size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
	char *hp = cfg_alloc(c->a, hl + 8, 1);
	cfg_addr a;

	memcpy(hp, rest, hl);
	*path = cfg_strdup(c->a, slash ? slash : "/");
	if (hl == 0) {
		ydoc_error(c->doc, node, c->d, NULL, "URL has no host");
		return;
	}
	/* Default port when none is written: a bare name or a bracketed literal without ":". */
	bool has_port = hp[0] == '[' ? strstr(hp, "]:") != NULL : strchr(hp, ':') != NULL;
	if (!has_port) {
		if (hp[0] != '[' && strchr(hp, ':') != NULL) {
			ydoc_error(c->doc, node, c->d, NULL, "IPv6 hosts go in brackets");
			return;
		}
		memcpy(hp + hl, https ? ":443" : ":80", https ? 5 : 4);
	}
	if (!cfg_addr_parse(c, node, hp, &a) || a.kind != CFG_ADDR_TCP)
		return;
	for (char *p = a.host; *p; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	*host = a.host;
	*port = a.port;
}

/* cert and key given together; the node of the one given alone, NULL when both or neither
 * are: an error there. */
static ydoc_node *client_cert_lone(ydoc_node *m)
{
	ydoc_node *cn = cfg_get(m, "cert"), *kn = cfg_get(m, "key");

	return (cn == NULL) == (kn == NULL) ? NULL : cn ? cn : kn;
}

/* models[].upstream.cert/key: the client certificate custos presents to an https upstream
 * (as nginx's proxy_ssl_certificate, HAProxy's `server ... crt`). */
static void parse_upstream_client_cert(cfg_ctx *c, ydoc_node *m, cfg_model *mod)
{
	cfg_upstream *u = &mod->upstream;
	ydoc_node *lone = client_cert_lone(m);
	ydoc_node *at = cfg_get(m, "cert") ? cfg_get(m, "cert") : cfg_get(m, "key");

	cfg_path(c, m, "cert", false, false, &u->cert);
	cfg_path(c, m, "key", false, false, &u->key);
	if (lone)
		ydoc_error(c->doc, lone, c->d,
		           "give both: cert (the PEM certificate chain) and key (its private key)",
		           "model '%s': upstream.%s without upstream.%s", mod->id ? mod->id : "?",
		           cfg_get(m, "cert") ? "cert" : "key",
		           cfg_get(m, "cert") ? "key" : "cert");
	else if (at && u->kind != CFG_UPSTREAM_HTTPS)
		ydoc_error(c->doc, at, c->d,
		           "a client certificate is presented in a TLS handshake: use an https:// "
		           "upstream, or remove cert and key",
		           "model '%s': upstream.cert and upstream.key apply only to https:// "
		           "upstreams",
		           mod->id ? mod->id : "?");
}

/* upstream.host: an authority (RFC 3986 §3.2.2) as Host carries it: a host name or IPv4
 * address of letters, digits, '-', '.', '_' and '~', or a bracketed IPv6 literal, then an
 * optional ":PORT" (1-65535); at most CFG_MAX_HOST_FIELD bytes. */
static bool host_field_ok(const char *s)
{
	size_t n = strlen(s), i = 0;
	if (n == 0 || n > CFG_MAX_HOST_FIELD)
		return false;
	if (s[0] == '[') {
		const char *e = strchr(s, ']');
		if (e == NULL || e == s + 1)
			return false;
		for (const char *p = s + 1; p < e; p++)
			if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
				return false;
		i = (size_t)(e - s) + 1;
	} else {
		while (i < n && (isalnum((unsigned char)s[i]) || strchr("-._~", s[i])))
			i++;
		if (i == 0)
			return false;
	}
	if (i == n)
		return true;
	if (s[i] != ':' || i + 1 == n || n - i - 1 > 5)
		return false;
	unsigned long port = 0;
	for (size_t k = i + 1; k < n; k++) {
		if (!isdigit((unsigned char)s[k]))
			return false;
		port = port * 10 + (unsigned long)(s[k] - '0');
	}
	return port >= 1 && port <= 65535;
}

void config_upstream_host(const cfg_model *m, char *out, size_t n)
{
	const cfg_upstream *u = &m->upstream;
	if (u->host_field) {
		snprintf(out, n, "%s", u->host_field);
		return;
	}
	switch (u->kind) {
	case CFG_UPSTREAM_HTTP:
	case CFG_UPSTREAM_HTTPS: {
		const char *h = u->server_name ? u->server_name : u->host;
		bool v6 = strchr(h, ':') != NULL;
		unsigned def = u->kind == CFG_UPSTREAM_HTTPS ? 443 : 80;
		if (u->port == def)
			snprintf(out, n, v6 ? "[%s]" : "%s", h);
		else
			snprintf(out, n, v6 ? "[%s]:%u" : "%s:%u", h, (unsigned)u->port);
		return;
	}
	case CFG_UPSTREAM_SANDBOX:
		snprintf(out, n, "127.0.0.1:%u", (unsigned)m->sandbox.port);
		return;
	default:
		snprintf(out, n, "localhost");
		return;
	}
}

static void parse_upstream(cfg_ctx *c, ydoc_node *mm, cfg_model *mod, const cfg_limits *lim)
{
	ydoc_node *m = CFG_SECTION(c, mm, "upstream", keys_models_upstream);
	cfg_upstream *u = &mod->upstream;

	u->tls_verify = true;
	u->pool_size = 64;
	u->connect_timeout_ns = lim->upstream_connect_timeout_ns;
	u->read_timeout_ns = lim->upstream_read_timeout_ns;
	u->idle_timeout_ns = lim->upstream_idle_timeout_ns;
	bool sandboxed = mod->sandbox.type != CFG_SANDBOX_NONE;
	if (m == NULL) {
		if (sandboxed)
			u->kind = CFG_UPSTREAM_SANDBOX;
		else if (cfg_get(mm, "upstream") == NULL)
			ydoc_error(c->doc, mm, c->d,
			           "give upstream.url, or a sandbox: block that runs the model",
			           "model '%s' has no upstream", mod->id ? mod->id : "?");
		return;
	}
	ydoc_node *un = cfg_get(m, "url");
	if (sandboxed) {
		u->kind = CFG_UPSTREAM_SANDBOX;
		if (un)
			ydoc_error(c->doc, un, c->d,
			           "a sandboxed model is reached on its sandbox.port",
			           "upstream.url is not allowed with a sandbox");
	} else if (cfg_str(c, m, "url", true, &u->url)) {
		if (strncmp(u->url, "http://", 7) == 0) {
			u->kind = CFG_UPSTREAM_HTTP;
			parse_url_hostport(c, un, u->url + 7, false, &u->host, &u->port, &u->path);
		} else if (strncmp(u->url, "https://", 8) == 0) {
			u->kind = CFG_UPSTREAM_HTTPS;
			parse_url_hostport(c, un, u->url + 8, true, &u->host, &u->port, &u->path);
		} else if (strncmp(u->url, "unix:", 5) == 0 && u->url[5] == '/') {
			u->kind = CFG_UPSTREAM_UNIX;
			cfg_addr a;
			if (cfg_addr_parse(c, un, u->url, &a))
				u->path = a.path;
		} else {
			ydoc_error(c->doc, un, c->d,
			           "use http://host:port, https://host:port or unix:/path",
			           "unsupported upstream URL '%s'", u->url);
		}
		/* The client's path goes upstream unchanged: a base path in the URL would be
		 * dropped, so it is refused rather than ignored. */
		if ((u->kind == CFG_UPSTREAM_HTTP || u->kind == CFG_UPSTREAM_HTTPS) && u->path &&
		    strcmp(u->path, "/") != 0)
			ydoc_error(c->doc, un, c->d,
			           "custos forwards the client's path as it is (POST "
			           "/v1/chat/completions stays /v1/chat/completions); give the "
			           "upstream as scheme://host:port/",
			           "upstream URL '%s' has a path ('%s'): a base path is not "
			           "prepended to requests",
			           u->url, u->path);
	}
	cfg_bool(c, m, "tls_verify", &u->tls_verify);
	cfg_path(c, m, "ca_file", false, false, &u->ca_file);
	cfg_str(c, m, "server_name", false, &u->server_name);
	if (cfg_str(c, m, "host", false, &u->host_field) && !host_field_ok(u->host_field))
		ydoc_error(c->doc, cfg_get(m, "host"), c->d,
		           "a host name, IPv4 address or [IPv6] literal, with an optional :port, "
		           "e.g. api.example.com or 10.0.0.5:8080",
		           "upstream.host '%s' of model '%s' is not a Host field value",
		           u->host_field, mod->id ? mod->id : "?");
	if (u->kind != CFG_UPSTREAM_HTTPS && u->url &&
	    (cfg_get(m, "ca_file") || cfg_get(m, "server_name") || cfg_get(m, "tls_verify")))
		ydoc_warn(c->doc, m, c->d, NULL,
		          "tls_verify, ca_file and server_name apply only to https:// upstreams");
	cfg_path(c, m, "crl_file", false, false, &u->crl_file);
	if (u->crl_file && u->kind != CFG_UPSTREAM_HTTPS)
		ydoc_error(c->doc, cfg_get(m, "crl_file"), c->d,
		           "drop it, or reach the upstream over https://",
		           "crl_file applies only to https:// upstreams (model '%s')",
		           mod->id ? mod->id : "?");
	/* The proxy verifies every upstream certificate; a switch that claimed to turn that off
	 * would be a setting not in force, so only its one true value is accepted. */
	if (!u->tls_verify)
		ydoc_error(c->doc, cfg_get(m, "tls_verify"), c->d,
		           "give the upstream's CA in ca_file (and the name its certificate holds "
		           "in server_name)",
		           "'tls_verify: false' is not supported for model '%s': custos always "
		           "verifies upstream certificates",
		           mod->id ? mod->id : "?");
	cfg_u64(c, m, "pool_size", 0, CFG_MAX_POOL_SIZE, &u->pool_size);
	ydoc_node *t = CFG_SECTION(c, m, "timeouts", keys_models_upstream_timeouts);
	cfg_dur(c, t, "connect", MS(1), CFG_MAX_TIMEOUT_NS, &u->connect_timeout_ns);
	cfg_dur(c, t, "read", MS(1), CFG_MAX_TIMEOUT_NS, &u->read_timeout_ns);
	cfg_dur(c, t, "idle", MS(1), CFG_MAX_TIMEOUT_NS, &u->idle_timeout_ns);
	parse_upstream_client_cert(c, m, mod);
}

static void parse_env_map(cfg_ctx *c, ydoc_node *m, const char *key, cfg_kv **out, size_t *n)
{
	ydoc_node *e = cfg_get(m, key);

	if (e == NULL || !ydoc_expect(c->doc, e, YDOC_MAP, "'env'", c->d))
		return;
	if (e->n > CFG_MAX_ENV) {
		ydoc_error(c->doc, e, c->d, NULL, "more than %d environment variables",
		           CFG_MAX_ENV);
		return;
	}
	*out = cfg_alloc(c->a, e->n, sizeof(cfg_kv));
	for (size_t i = 0; i < e->n; i++) {
		ydoc_node *k = e->pairs[i].key;
		bool ok = k->len > 0 && strchr(k->str, '=') == NULL && strlen(k->str) == k->len;
		if (!ok) {
			ydoc_error(c->doc, k, c->d, NULL, "bad environment variable name '%s'",
			           k->str);
			continue;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(e->pairs[j].key->str, k->str) == 0) {
				ydoc_error(c->doc, k, c->d, NULL, "duplicate variable '%s'",
				           k->str);
				ok = false;
				break;
			}
		}
		const char *v;
		if (!ok || !ydoc_str(c->doc, e->pairs[i].value, &v, c->d))
			continue;
		(*out)[*n].key = cfg_strdup(c->a, k->str);
		(*out)[*n].value = cfg_strdup(c->a, v);
		(*n)++;
	}
}

/* What sandbox_profile_validate (sandbox/profile.c check_abs, check_rel) refuses at start in a
 * path a process sandbox takes: CFG_MAX_SANDBOX_PATH bytes or more, a ".." component. */
static bool sb_has_dotdot(const char *s)
{
	for (const char *d = s; (d = strstr(d, "..")) != NULL; d += 2)
		if ((d == s || d[-1] == '/') && (d[2] == '\0' || d[2] == '/'))
			return true;
	return false;
}

static bool sb_path_check(cfg_ctx *c, ydoc_node *n, const char *what, const char *s)
{
	size_t len = strlen(s);

	if (len >= CFG_MAX_SANDBOX_PATH) {
		ydoc_error(c->doc, n, c->d, HINT_SB_PATH, "%s is %zu bytes; the limit is %d", what,
		           len, CFG_MAX_SANDBOX_PATH - 1);
		return false;
	}
	if (sb_has_dotdot(s)) {
		ydoc_error(c->doc, n, c->d, HINT_SB_DOTDOT, "%s '%s' has a '..' component", what,
		           s);
		return false;
	}
	return true;
}

/* The sandbox's name rule (sandbox/profile.c name_ok); ids also allow '/' and ':'. */
static bool sb_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CFG_MAX_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.'))
			return false;
	}
	return true;
}

static void parse_model_sandbox(cfg_ctx *c, ydoc_node *mm, cfg_model_sandbox *sb)
{
	static const char *const types[] = { "none", "process", "vm" };
	ydoc_node *m = CFG_SECTION(c, mm, "sandbox", keys_models_sandbox);

	sb->port = 8000;
	sb->health.start_timeout_ns = SEC(120);
	sb->restart_initial_ns = SEC(1);
	sb->restart_max_ns = SEC(60);
	if (m == NULL)
		return;
	sb->type = CFG_SANDBOX_PROCESS;
	CFG_ENUM(c, m, "type", types, sb->type);
	cfg_id(c, m, "profile", sb->type != CFG_SANDBOX_NONE, &sb->profile);
	cfg_strlist(c, m, "command", CFG_MAX_ARGV, &sb->command, &sb->n_command);
	if (sb->type == CFG_SANDBOX_PROCESS && cfg_get(m, "command") == NULL)
		ydoc_error(c->doc, m, c->d,
		           "the model server's argv, e.g. [/usr/bin/llama-server, ...]",
		           "missing required key 'command'");
	else if (sb->type == CFG_SANDBOX_PROCESS && sb->n_command > 0 && sb->command[0][0] != '/')
		ydoc_error(c->doc, cfg_get(m, "command"), c->d, "no PATH search is done",
		           "command[0] must be an absolute path");
	parse_env_map(c, m, "env", &sb->env, &sb->n_env);
	if (cfg_path(c, m, "workdir", false, true, &sb->workdir) && sb->type == CFG_SANDBOX_PROCESS)
		(void)sb_path_check(c, cfg_get(m, "workdir"), "workdir", sb->workdir);
	/* A VM's model server is started by the guest image's init: nothing would carry these
	 * into the guest (sandbox/vm_config.c refuses them too, when the VM starts). */
	static const char *const not_vm[] = { "command", "env", "workdir" };
	for (size_t i = 0; sb->type == CFG_SANDBOX_VM && i < CUSTOS_ARRAY_LEN(not_vm); i++)
		if (cfg_get(m, not_vm[i]) != NULL)
			ydoc_error(
			        c->doc, cfg_get(m, not_vm[i]), c->d,
			        "the guest image's init starts the model server; give it arguments "
			        "through the profile's vm.cmdline",
			        "sandbox.%s is not passed into a VM (sandbox.type: vm)", not_vm[i]);
	uint64_t port = sb->port;
	if (cfg_u64(c, m, "port", 1, 65535, &port))
		sb->port = (uint16_t)port;
	ydoc_node *h = CFG_SECTION(c, m, "health", keys_models_sandbox_health);
	if (cfg_str(c, h, "path", false, &sb->health.path) && sb->health.path[0] != '/')
		ydoc_error(c->doc, cfg_get(h, "path"), c->d, NULL, "health path must start with /");
	/* what the readiness probe sends (sandbox/supervise.c sandbox_wait_ready, cli/vm_up.c) */
	else if (sb->health.path && (strlen(sb->health.path) >= CFG_MAX_SANDBOX_PATH ||
	                             strpbrk(sb->health.path, "\r\n ") != NULL))
		ydoc_error(
		        c->doc, cfg_get(h, "path"), c->d,
		        "the readiness probe's request path: under 1024 bytes (SANDBOX_PATH_MAX), "
		        "no space, CR or LF (percent-encode them)",
		        "health path: bad HTTP path");
	/* Nothing applies a per-probe timeout or a probe interval (readiness is polled with
	 * built-in timings until start_timeout; a running server is not probed again): refused,
	 * so that no one relies on a liveness check that does not exist. */
	static const char *const unsupported[] = { "timeout", "interval" };
	for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		ydoc_node *un = cfg_get(h, unsupported[i]);
		if (un)
			ydoc_error(
			        c->doc, un, c->d,
			        "remove it; health.path and health.start_timeout are what is used",
			        "'health.%s' is not supported: custos polls readiness until "
			        "health.start_timeout and does not probe a running server",
			        unsupported[i]);
	}
	cfg_dur(c, h, "start_timeout", SEC(1), SEC(3600), &sb->health.start_timeout_ns);
	ydoc_node *r = CFG_SECTION(c, m, "restart", keys_models_sandbox_restart);
	cfg_dur(c, r, "initial", MS(10), SEC(3600), &sb->restart_initial_ns);
	cfg_dur(c, r, "max", MS(10), SEC(24 * 3600), &sb->restart_max_ns);
	if (sb->restart_max_ns < sb->restart_initial_ns)
		ydoc_error(c->doc, r, c->d, NULL, "restart.max is below restart.initial");
}

static void parse_models(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	ydoc_node *s = cfg_seq_hint(c, root, "models", CFG_MAX_MODELS, HINT_MODELS);

	if (s == NULL)
		return;
	cfg->models = cfg_alloc(c->a, s->n, sizeof(cfg_model));
	for (size_t i = 0; i < s->n; i++) {
		ydoc_node *m = s->items[i];
		cfg_model *mod = &cfg->models[cfg->n_models];
		if (!CFG_MAP(c, m, "a model", keys_models))
			continue;
		cfg->n_models++;
		cfg_id(c, m, "id", true, &mod->id);
		ydoc_node *al = cfg_seq(c, m, "aliases", CFG_MAX_ALIASES);
		if (al) {
			mod->aliases = cfg_alloc(c->a, al->n, sizeof(char *));
			for (size_t k = 0; k < al->n; k++) {
				if (cfg_id_node(c, al->items[k], &mod->aliases[mod->n_aliases]))
					mod->n_aliases++;
			}
		}
		parse_model_sandbox(c, m, &mod->sandbox);
		if (mod->id && mod->sandbox.type == CFG_SANDBOX_PROCESS && !sb_name_ok(mod->id))
			ydoc_error(
			        c->doc, cfg_get(m, "id"), c->d, HINT_SB_NAME,
			        "model '%s' runs in a process sandbox, which cannot be named '%s'",
			        mod->id, mod->id);
		/* sandbox/vm_xml.c name_ok on custos-<id>; the length is checked with the
		 * references below (CFG_MAX_VM_MODEL_ID). */
		else if (mod->id && mod->sandbox.type == CFG_SANDBOX_VM && !sb_name_ok(mod->id))
			ydoc_error(c->doc, cfg_get(m, "id"), c->d, HINT_VM_NAME,
			           "model '%s' runs in a VM, whose name (custos-%s) must be "
			           "characters of [A-Za-z0-9_.-]",
			           mod->id, mod->id);
		parse_upstream(c, m, mod, &cfg->limits);
	}
}

/* ---------------------------------------------------------------------------------------------
 * routes
 */
/* A route path: '/' then segments of RFC 3986 pchar without percent-encoding (a prefix is
 * compared byte for byte, so a second spelling of one path must not exist), no empty, "." or
 * ".." segment, no trailing '/'. Returns NULL when good, else what is wrong. */
static const char *route_path_problem(const char *p, const char **hint)
{
	size_t n = strlen(p);

	*hint = NULL;
	if (p[0] != '/')
		return "a route path starts with '/'";
	if (n == 1) {
		*hint = "a route for every path leaves nothing to route by model: name a prefix "
		        "such as /v1/embeddings";
		return "'/' is not a route path";
	}
	if (n > CFG_MAX_ROUTE_PATH)
		return "route path is too long";
	if (p[n - 1] == '/') {
		*hint = "prefixes match whole segments: /v1/embeddings matches /v1/embeddings/x";
		return "a route path does not end with '/'";
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '%') {
			*hint = "write the characters themselves: requests are matched with "
			        "unreserved characters decoded";
			return "percent-encoding in a route path";
		}
		if (ch == '?' || ch == '#') {
			*hint = "routes match the path only, never the query";
			return "'?' or '#' in a route path";
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || strchr("-._~!$&'()*+,;=:@/", ch)))
			return "a route path has a character that is not allowed in a URL path";
	}
	for (const char *seg = p + 1;; seg++) {
		const char *end = strchr(seg, '/');
		size_t len = end ? (size_t)(end - seg) : strlen(seg);
		if (len == 0)
			return "empty segment ('//') in a route path";
		if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
			return "'.' or '..' segment in a route path (requests with them are "
			       "refused)";
		if (end == NULL)
			break;
		seg = end;
	}
	return NULL;
}

static void parse_routes(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	ydoc_node *s = cfg_seq(c, root, "routes", CFG_MAX_ROUTES);

	if (s == NULL)
		return;
	cfg->routes = cfg_alloc(c->a, s->n, sizeof(cfg_route));
	for (size_t i = 0; i < s->n; i++) {
		ydoc_node *m = s->items[i];
		cfg_route *r = &cfg->routes[cfg->n_routes];
		if (!CFG_MAP(c, m, "a route", keys_routes))
			continue;
		cfg->n_routes++;
		if (cfg_str(c, m, "path", true, &r->path)) {
			const char *hint;
			const char *why = route_path_problem(r->path, &hint);
			if (why)
				ydoc_error(c->doc, cfg_get(m, "path"), c->d, hint, "%s: '%s'", why,
				           r->path);
		}
		cfg_str(c, m, "model", true, &r->model);
	}
}

/* ---------------------------------------------------------------------------------------------
 * sandbox_profiles
 */
/* Never allowed, whatever a profile says: the seccomp module denies them in every sandbox
 * (sandbox/seccomp.c uses this list), and `config check` refuses them in `allow`. */
static const char *const always_denied[] = { "ptrace",
	                                     "process_vm_readv",
	                                     "process_vm_writev",
	                                     "mount",
	                                     "umount",
	                                     "umount2",
	                                     "move_mount",
	                                     "open_tree",
	                                     "open_tree_attr",
	                                     "fsopen",
	                                     "fsconfig",
	                                     "fsmount",
	                                     "fspick",
	                                     "mount_setattr",
	                                     "unshare",
	                                     "setns",
	                                     "chroot",
	                                     "pivot_root",
	                                     "bpf",
	                                     "perf_event_open",
	                                     "kexec_load",
	                                     "kexec_file_load",
	                                     "init_module",
	                                     "finit_module",
	                                     "delete_module",
	                                     "keyctl",
	                                     "add_key",
	                                     "request_key",
	                                     "userfaultfd",
	                                     "io_uring_setup",
	                                     "io_uring_enter",
	                                     "io_uring_register",
	                                     "pidfd_getfd",
	                                     "process_madvise",
	                                     "kcmp",
	                                     "open_by_handle_at",
	                                     "name_to_handle_at",
	                                     "quotactl",
	                                     "quotactl_fd",
	                                     "acct",
	                                     "swapon",
	                                     "swapoff",
	                                     "reboot",
	                                     "syslog",
	                                     "iopl",
	                                     "ioperm",
	                                     "settimeofday",
	                                     "clock_settime",
	                                     "clock_adjtime",
	                                     "adjtimex",
	                                     "lookup_dcookie",
	                                     "vhangup",
	                                     "nfsservctl",
	                                     "uselib",
	                                     "fanotify_init",
	                                     "sethostname",
	                                     "setdomainname",
	                                     "mknod",
	                                     "mknodat",
	                                     NULL };

const char *const *config_always_denied_syscalls(void)
{
	return always_denied;
}

static bool (*syscall_known)(const char *name);

void config_set_syscall_check(bool (*known)(const char *name))
{
	syscall_known = known;
}

static bool syscall_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 40)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	}
	return true;
}

static void parse_seccomp(cfg_ctx *c, ydoc_node *pm, cfg_profile *p)
{
	static const char *const bases[] = { "default", "gpu" };
	ydoc_node *n = cfg_get(pm, "seccomp");

	p->seccomp.base = p->gpu != CFG_GPU_NONE ? CFG_SECCOMP_GPU : CFG_SECCOMP_DEFAULT;
	if (n == NULL)
		return;
	if (n->kind == YDOC_SCALAR) {
		int v;
		if (ydoc_enum(c->doc, n, bases, CUSTOS_ARRAY_LEN(bases), &v, c->d))
			p->seccomp.base = (cfg_seccomp_base)v;
		return;
	}
	if (!CFG_MAP(c, n, "'seccomp' (default, gpu, or {base, allow, deny})",
	             keys_sandbox_profiles_profile_seccomp))
		return;
	CFG_ENUM(c, n, "base", bases, p->seccomp.base);
	for (int pass = 0; pass < 2; pass++) {
		const char *key = pass ? "deny" : "allow";
		char ***list = pass ? &p->seccomp.deny : &p->seccomp.allow;
		size_t *cnt = pass ? &p->seccomp.n_deny : &p->seccomp.n_allow;
		if (!cfg_strlist(c, n, key, CFG_MAX_SYSCALLS, list, cnt))
			continue;
		ydoc_node *seq = cfg_get(n, key);
		for (size_t i = 0; i < *cnt; i++) {
			const char *sc = (*list)[i];
			if (!syscall_name_ok(sc)) {
				ydoc_error(c->doc, seq->items[i], c->d, NULL,
				           "'%s' is not a system call name", sc);
				continue;
			}
			bool denied = false;
			for (size_t k = 0; pass == 0 && always_denied[k] != NULL; k++) {
				if (strcmp(sc, always_denied[k]) == 0) {
					ydoc_error(c->doc, seq->items[i], c->d,
					           "custos denies it in every sandbox",
					           "system call '%s' cannot be allowed", sc);
					denied = true;
				}
			}
			if (!denied && syscall_known != NULL && !syscall_known(sc))
				ydoc_error(c->doc, seq->items[i], c->d,
				           "not in this architecture's system call table "
				           "(libseccomp): "
				           "the sandbox refuses it at start",
				           "unknown system call '%s'", sc);
		}
	}
}

static bool pci_addr_ok(const char *s)
{
	/* dddd:bb:ss.f in hex */
	static const char shape[] = "xxxx:xx:xx.x";
	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i]; i++) {
		char ch = s[i];
		bool hex = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
		           (ch >= 'A' && ch <= 'F');
		if (shape[i] == 'x' ? !hex : ch != shape[i])
			return false;
	}
	/* slot 00-1f, function 0-7: what sandbox/vm_xml.c vm_pci_parse takes */
	return (s[8] == '0' || s[8] == '1') && s[11] >= '0' && s[11] <= '7';
}

static void parse_vm(cfg_ctx *c, ydoc_node *pm, cfg_profile *p)
{
	static const char *const chans[] = { "vsock", "virtio-serial", "auto" };
	static const char *const types[] = { "kvm", "qemu" };
	ydoc_node *m = CFG_SECTION(c, pm, "vm", keys_sandbox_profiles_profile_vm);

	p->vm.vcpus = 1;
	p->vm.memory = 1ull << 30;
	p->vm.channel = CFG_VM_AUTO;
	if (m == NULL)
		return;
	p->vm.enabled = true;
	up_bound(c, m, "vcpus", false, 1, CFG_MAX_VCPUS, HINT_VCPUS, &p->vm.vcpus);
	up_bound(c, m, "memory", true, 64u << 20, CFG_MAX_VM_MEMORY, HINT_VM_MEMORY, &p->vm.memory);
	cfg_bool(c, m, "hugepages", &p->vm.hugepages);
	ydoc_node *pin = cfg_seq(c, m, "cpu_pinning", CFG_MAX_VCPUS);
	if (pin) {
		p->vm.cpu_pinning = cfg_alloc(c->a, pin->n, sizeof(uint32_t));
		for (size_t i = 0; i < pin->n; i++) {
			uint64_t v;
			if (ydoc_u64(c->doc, pin->items[i], 0, 4095, &v, c->d))
				p->vm.cpu_pinning[p->vm.n_cpu_pinning++] = (uint32_t)v;
		}
		if (pin->n != 0 && pin->n != p->vm.vcpus)
			ydoc_error(c->doc, pin, c->d, "one host CPU per vCPU, in order",
			           "cpu_pinning lists %zu CPUs for %llu vCPUs", pin->n,
			           (unsigned long long)p->vm.vcpus);
	}
	/* absolute: libvirt opens them, not custos (sandbox/vm_xml.c vm_profile_check) */
	cfg_path(c, m, "kernel", false, true, &p->vm.kernel);
	cfg_path(c, m, "initrd", false, true, &p->vm.initrd);
	cfg_path(c, m, "disk", false, true, &p->vm.disk);
	cfg_str(c, m, "cmdline", false, &p->vm.cmdline);
	if (cfg_get(m, "kernel") == NULL && cfg_get(m, "disk") == NULL)
		ydoc_error(c->doc, m, c->d, "give a disk image, or kernel (and initrd)",
		           "the VM has nothing to boot");
	if ((cfg_get(m, "initrd") || cfg_get(m, "cmdline")) && cfg_get(m, "kernel") == NULL)
		ydoc_error(c->doc, m, c->d, NULL, "initrd and cmdline need kernel");
	if (cfg_strlist_hint(c, m, "hostdev", CFG_MAX_HOSTDEVS, HINT_HOSTDEVS, &p->vm.hostdev,
	                     &p->vm.n_hostdev)) {
		ydoc_node *seq = cfg_get(m, "hostdev");
		for (size_t i = 0; i < p->vm.n_hostdev; i++) {
			if (!pci_addr_ok(p->vm.hostdev[i]))
				ydoc_error(c->doc, seq->items[i], c->d,
				           "PCI addresses look like 0000:01:00.0 (lspci -D): slot "
				           "00-1f, "
				           "function 0-7",
				           "'%s' is not a PCI address", p->vm.hostdev[i]);
		}
	}
	CFG_ENUM(c, m, "channel", chans, p->vm.channel);
	uint64_t cid = 0;
	if (cfg_u64(c, m, "vsock_cid", 3, UINT32_MAX - 1, &cid))
		p->vm.vsock_cid = (uint32_t)cid;
	if (cfg_path(c, m, "console_log", false, true, &p->vm.console_log) &&
	    strlen(p->vm.console_log) > CFG_MAX_VM_CONSOLE)
		ydoc_error(c->doc, cfg_get(m, "console_log"), c->d, HINT_VM_PATH,
		           "console_log path too long: %zu bytes, the limit is %d",
		           strlen(p->vm.console_log), CFG_MAX_VM_CONSOLE);
	CFG_ENUM(c, m, "type", types, p->vm.domain_type);
	cfg_str(c, m, "libvirt_uri", false, &p->vm.libvirt_uri);
	if (cfg_path(c, m, "channel_socket", false, true, &p->vm.channel_socket) &&
	    strlen(p->vm.channel_socket) > CFG_MAX_VM_SOCKET)
		ydoc_error(c->doc, cfg_get(m, "channel_socket"), c->d, HINT_VM_PATH,
		           "channel socket path too long: %zu bytes, the limit is %d (a unix "
		           "socket's sun_path)",
		           strlen(p->vm.channel_socket), CFG_MAX_VM_SOCKET);
}

static void parse_cpu(cfg_ctx *c, ydoc_node *lm, uint64_t *milli)
{
	ydoc_node *n = cfg_get(lm, "cpu");
	uint64_t whole = 0, frac = 0;
	const char *s, *dot;

	if (n == NULL || !ydoc_str(c->doc, n, &s, c->d))
		return;
	dot = strchr(s, '.');
	size_t wl = dot ? (size_t)(dot - s) : strlen(s);
	size_t fl = dot ? strlen(dot + 1) : 0;
	bool ok = wl > 0 && num_parse_u64(span_of(s, wl), 0, 1024, &whole) == CUSTOS_OK;
	if (ok && dot) {
		ok = fl >= 1 && fl <= 3 &&
		     num_parse_u64(span_of(dot + 1, fl), 0, 999, &frac) == CUSTOS_OK;
		for (size_t i = fl; i < 3; i++)
			frac *= 10;
	}
	if (!ok || whole * 1000 + frac < 10 || whole * 1000 + frac > CFG_MAX_CPU_MILLI) {
		ydoc_error(c->doc, n, c->d,
		           "CPUs as a decimal: 0.5, 1, 2.25 (at least 0.01, at most 1024)",
		           "bad cpu limit '%s'", s);
		return;
	}
	*milli = whole * 1000 + frac;
}

static void parse_profile(cfg_ctx *c, ydoc_node *m, cfg_profile *p)
{
	static const char *const nss[] = { "user", "pid", "mount", "net", "ipc", "uts", "cgroup" };
	static const char *const gpus[] = { "none", "nvidia", "amd" };
	static const char *const stypes[] = { "tmpfs", "dir" };

	if (!CFG_MAP(c, m, "a sandbox profile", keys_sandbox_profiles_profile))
		return;
	p->namespaces = CFG_NS_ALL;
	p->landlock = true;
	p->scratch.size = 256u << 20;
	p->limits.pids = 512;
	p->limits.nofile = 4096;
	ydoc_node *ns = cfg_seq(c, m, "namespaces", CUSTOS_ARRAY_LEN(nss));
	if (ns) {
		p->namespaces = 0;
		for (size_t i = 0; i < ns->n; i++) {
			int v;
			if (ydoc_enum(c->doc, ns->items[i], nss, CUSTOS_ARRAY_LEN(nss), &v, c->d))
				p->namespaces |= 1u << v;
		}
		/* The network namespace is what makes custos the only way out. */
		if (!(p->namespaces & CFG_NS_NET))
			ydoc_error(c->doc, ns, c->d, "the sandbox would share the host network",
			           "namespaces must include net");
		/* sandbox/profile.c sandbox_profile_validate refuses the sandbox without them */
		if (!(p->namespaces & CFG_NS_USER) || !(p->namespaces & CFG_NS_MOUNT) ||
		    !(p->namespaces & CFG_NS_PID))
			ydoc_error(
			        c->doc, ns, c->d, "the sandbox refuses to start without them",
			        "namespaces must include user, pid and mount: user, pid and mount "
			        "namespaces are required");
	}
	CFG_ENUM(c, m, "gpu", gpus, p->gpu);
	parse_seccomp(c, m, p);
	if (cfg_strlist(c, m, "devices", CFG_MAX_DEVICES, &p->devices, &p->n_devices)) {
		for (size_t i = 0; i < p->n_devices; i++) {
			ydoc_node *dn = cfg_get(m, "devices")->items[i];
			if (strncmp(p->devices[i], "/dev/", 5) != 0 ||
			    strstr(p->devices[i], "..") || p->devices[i][5] == '\0' ||
			    p->devices[i][5] == '/')
				ydoc_error(c->doc, dn, c->d, NULL, "device '%s' is not under /dev/",
				           p->devices[i]);
			else
				(void)sb_path_check(c, dn, "device", p->devices[i] + 5);
		}
	}
	ydoc_node *b = cfg_seq(c, m, "binds", CFG_MAX_BINDS);
	if (b) {
		p->binds = cfg_alloc(c->a, b->n, sizeof(cfg_bind));
		for (size_t i = 0; i < b->n; i++) {
			cfg_bind *bd = &p->binds[p->n_binds];
			if (!CFG_MAP(c, b->items[i], "a binds entry",
			             keys_sandbox_profiles_profile_binds))
				continue;
			p->n_binds++;
			if (cfg_path(c, b->items[i], "src", true, true, &bd->src))
				(void)sb_path_check(c, cfg_get(b->items[i], "src"), "bind src",
				                    bd->src);
			if (cfg_path(c, b->items[i], "dst", false, true, &bd->dst) &&
			    sb_path_check(c, cfg_get(b->items[i], "dst"), "bind dst", bd->dst) &&
			    strcmp(bd->dst, "/") == 0)
				ydoc_error(c->doc, cfg_get(b->items[i], "dst"), c->d,
				           "bind below it, e.g. dst: /data",
				           "a bind cannot replace the "
				           "sandbox's root");
			if (bd->dst == NULL)
				bd->dst = bd->src;
			if (bd->dst && cfg_get(b->items[i], "dst") == NULL &&
			    strcmp(bd->dst, "/") == 0)
				ydoc_error(c->doc, cfg_get(b->items[i], "src"), c->d,
				           "give dst: the bind would land on the sandbox's root",
				           "a bind cannot replace the sandbox's root");
			cfg_bool(c, b->items[i], "rw", &bd->rw);
		}
	}
	cfg_bool(c, m, "sysfs", &p->sysfs);
	ydoc_node *sc = CFG_SECTION(c, m, "scratch", keys_sandbox_profiles_profile_scratch);
	CFG_ENUM(c, sc, "type", stypes, p->scratch.type);
	cfg_size(c, sc, "size", 1u << 20, CFG_MAX_MEMORY, &p->scratch.size);
	if (cfg_path(c, sc, "path", p->scratch.type == CFG_SCRATCH_DIR, true, &p->scratch.path))
		(void)sb_path_check(c, cfg_get(sc, "path"), "scratch path", p->scratch.path);
	if (p->scratch.type == CFG_SCRATCH_TMPFS && cfg_get(sc, "path"))
		ydoc_error(c->doc, cfg_get(sc, "path"), c->d, "path is for type: dir",
		           "a tmpfs scratch takes no path");
	ydoc_node *l = CFG_SECTION(c, m, "limits", keys_sandbox_profiles_profile_limits);
	cfg_size(c, l, "memory", 0, CFG_MAX_MEMORY, &p->limits.memory);
	/* swap alone: beside the built-in memory limit, under up and exec -c alike */
	cfg_size(c, l, "swap", 0, CFG_MAX_MEMORY, &p->limits.swap);
	cfg_u64(c, l, "pids", 1, 1u << 22, &p->limits.pids);
	parse_cpu(c, l, &p->limits.cpu_milli);
	cfg_u64(c, l, "nofile", 16, 1u << 20, &p->limits.nofile);
	cfg_bool(c, m, "landlock", &p->landlock);
	if (cfg_strlist(c, m, "env_allow", CFG_MAX_ENV, &p->env_allow, &p->n_env_allow)) {
		for (size_t i = 0; i < p->n_env_allow; i++)
			if (strchr(p->env_allow[i], '='))
				ydoc_error(
				        c->doc, cfg_get(m, "env_allow")->items[i], c->d,
				        "env_allow names variables passed through; set values in "
				        "a model's sandbox.env",
				        "'%s' is not a variable name", p->env_allow[i]);
	}
	parse_vm(c, m, p);
}

static void parse_profiles(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	ydoc_node *m = cfg_get(root, "sandbox_profiles");

	if (m == NULL || !ydoc_expect(c->doc, m, YDOC_MAP, "'sandbox_profiles'", c->d))
		return;
	if (m->n > CFG_MAX_PROFILES) {
		ydoc_error(c->doc, m, c->d, NULL, "more than %d sandbox profiles",
		           CFG_MAX_PROFILES);
		return;
	}
	/* Duplicate names are reported by ydoc_check_keys with every key allowed. */
	const char **names = cfg_alloc(c->a, m->n, sizeof(char *));
	for (size_t i = 0; i < m->n; i++)
		names[i] = m->pairs[i].key->str;
	ydoc_check_keys(c->doc, m, names, m->n, c->d);
	cfg->profiles = cfg_alloc(c->a, m->n, sizeof(cfg_profile));
	for (size_t i = 0; i < m->n; i++) {
		cfg_profile *p = &cfg->profiles[cfg->n_profiles++];
		if (!cfg_id_node(c, m->pairs[i].key, &p->id))
			p->id = cfg_strdup(c->a, "?");
		else if (!sb_name_ok(p->id)) /* sandbox/profile.c name_ok, as exec -c applies it */
			ydoc_error(c->doc, m->pairs[i].key, c->d, HINT_PROFILE_NAME,
			           "sandbox profile '%s': name must be 1-%d of [A-Za-z0-9_.-]",
			           p->id, CFG_MAX_ID_LEN);
		parse_profile(c, m->pairs[i].value, p);
	}
}

/* ---------------------------------------------------------------------------------------------
 * data_sources, egress
 */
/* data_sources[].cert/key: the client certificate custos presents to the origin. Only where
 * custos is the origin's TLS client: an intercepted https source. A CONNECT tunnel that is not
 * intercepted carries the model's own TLS, which custos cannot add a certificate to. */
static void parse_source_client_cert(cfg_ctx *c, ydoc_node *m, cfg_data_source *ds)
{
	ydoc_node *lone = client_cert_lone(m);
	ydoc_node *at = cfg_get(m, "cert") ? cfg_get(m, "cert") : cfg_get(m, "key");
	const char *id = ds->id ? ds->id : "?";

	cfg_path(c, m, "cert", false, false, &ds->cert);
	cfg_path(c, m, "key", false, false, &ds->key);
	if (lone)
		ydoc_error(c->doc, lone, c->d,
		           "give both: cert (the PEM certificate chain) and key (its private key)",
		           "data source '%s': %s without %s", id,
		           cfg_get(m, "cert") ? "cert" : "key",
		           cfg_get(m, "cert") ? "key" : "cert");
	else if (at && ds->url && !ds->https)
		ydoc_error(c->doc, at, c->d,
		           "a client certificate is presented in a TLS handshake: use an https:// "
		           "source with intercept: true, or remove cert and key",
		           "data source '%s': cert and key apply only to https:// sources", id);
	else if (at && ds->https && !ds->intercept)
		ydoc_error(
		        c->doc, at, c->d,
		        "set intercept: true (custos then makes the TLS connection to the origin "
		        "and presents this certificate), or let the model present its own",
		        "data source '%s': cert and key need intercept: true: without interception "
		        "the CONNECT tunnel carries the model's own TLS, which custos cannot add a "
		        "certificate to",
		        id);
}

/* The egress proxy's rule for a source's host name (proxy/ssrf.c ssrf_parse_host, which
 * refuses the source when egress starts; core cannot call it): NULL when h passes, else why,
 * in its words. A strict dotted quad passes; a name whose last label is a number (10.1,
 * 0x7f.1, 1.2.3.04, host.123) is a non-canonical IPv4 literal; labels are 1-63 bytes of
 * letters, digits, '-' and '_', 253 bytes in all, one trailing dot allowed.
 * tests/unit/test_egress_ssrf.c checks the two agree on a table of hosts. */
static const char *source_host_why(const char *h, char *why, size_t size)
{
	size_t n = strlen(h);
	if (n > 253)
		return "host longer than 253 bytes";
	unsigned parts = 0, v = 0, digits = 0;
	bool strict = true;
	for (size_t i = 0; i <= n && strict; i++) {
		if (i == n || h[i] == '.') {
			strict = digits > 0 && v <= 255 && ++parts <= 4;
			v = digits = 0;
		} else if (h[i] >= '0' && h[i] <= '9' && digits < 3 && !(digits == 1 && v == 0)) {
			v = v * 10 + (unsigned)(h[i] - '0');
			digits++;
		} else {
			strict = false;
		}
	}
	if (strict && parts == 4)
		return NULL;
	size_t end = n > 0 && h[n - 1] == '.' ? n - 1 : n, start = end;
	while (start > 0 && h[start - 1] != '.')
		start--;
	bool hex =
	        end - start >= 2 && h[start] == '0' && (h[start + 1] == 'x' || h[start + 1] == 'X');
	bool numeric = end > start;
	for (size_t i = start + (hex ? 2 : 0); i < end && numeric; i++)
		numeric = (h[i] >= '0' && h[i] <= '9') ||
		          (hex && ((h[i] >= 'a' && h[i] <= 'f') || (h[i] >= 'A' && h[i] <= 'F')));
	if (numeric) {
		snprintf(why, size,
		         "non-canonical IPv4 literal '%s' (only a.b.c.d in decimal is accepted)",
		         h);
		return why;
	}
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = h[i];
		if (ch == '.') {
			if (label == 0)
				return "empty label in host";
			label = 0;
			continue;
		}
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_'))
			return "invalid character in host";
		if (++label > 63)
			return "host label longer than 63 bytes";
	}
	return n == 0 || (n == 1 && h[0] == '.') ? "empty host" : NULL;
}

static void parse_data_sources(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	static const char *const classes[] = { "public", "internal", "confidential", "restricted" };
	ydoc_node *s = cfg_seq(c, root, "data_sources", CFG_MAX_DATA_SOURCES);

	if (s == NULL)
		return;
	cfg->data_sources = cfg_alloc(c->a, s->n, sizeof(cfg_data_source));
	for (size_t i = 0; i < s->n; i++) {
		ydoc_node *m = s->items[i];
		cfg_data_source *ds = &cfg->data_sources[cfg->n_data_sources];
		if (!CFG_MAP(c, m, "a data source", keys_data_sources))
			continue;
		cfg->n_data_sources++;
		ds->classification = CFG_CLASS_RESTRICTED;
		cfg_id(c, m, "id", true, &ds->id);
		if (cfg_str(c, m, "url", true, &ds->url)) {
			ydoc_node *un = cfg_get(m, "url");
			if (strncmp(ds->url, "https://", 8) == 0) {
				ds->https = true;
				parse_url_hostport(c, un, ds->url + 8, true, &ds->host, &ds->port,
				                   &ds->path_prefix);
			} else if (strncmp(ds->url, "http://", 7) == 0) {
				parse_url_hostport(c, un, ds->url + 7, false, &ds->host, &ds->port,
				                   &ds->path_prefix);
			} else {
				ydoc_error(c->doc, un, c->d,
				           "http://host[:port]/prefix or https://...",
				           "data source URL must be http:// or https://");
			}
			char why[320];
			const char *bad = ds->host && !strchr(ds->host, ':')
			                          ? source_host_why(ds->host, why, sizeof(why))
			                          : NULL;
			if (bad)
				ydoc_error(
				        c->doc, un, c->d,
				        "the egress proxy refuses the source when it starts: write "
				        "an IPv4 address as a.b.c.d, or a DNS name",
				        "data source %s: host: %s", ds->id ? ds->id : "?", bad);
			if (ds->path_prefix &&
			    (strchr(ds->path_prefix, '?') || strchr(ds->path_prefix, '#') ||
			     strstr(ds->path_prefix, "..")))
				ydoc_error(c->doc, un, c->d, NULL,
				           "a URL prefix has no query, fragment or '..'");
		}
		if (cfg_get(m, "classification") == NULL)
			ydoc_error(c->doc, m, c->d, "public, internal, confidential or restricted",
			           "missing required key 'classification'");
		CFG_ENUM(c, m, "classification", classes, ds->classification);
		cfg_bool(c, m, "intercept", &ds->intercept);
		if (ds->intercept && ds->url && !ds->https)
			ydoc_error(c->doc, cfg_get(m, "intercept"), c->d,
			           "plain http:// is inspected without interception",
			           "intercept applies to https:// sources only");
		cfg_bool(c, m, "allow_private_addresses", &ds->allow_private_addresses);
		cfg_path(c, m, "ca_file", false, false, &ds->ca_file);
		cfg_path(c, m, "crl_file", false, false, &ds->crl_file);
		if (ds->crl_file && ds->url && !ds->https)
			ydoc_error(c->doc, cfg_get(m, "crl_file"), c->d,
			           "drop it, or reach the source over https://",
			           "crl_file applies to https:// sources only");
		else if (ds->crl_file && ds->https && !ds->intercept)
			ydoc_error(
			        c->doc, cfg_get(m, "crl_file"), c->d,
			        "set intercept: true, or drop crl_file (the model's client then "
			        "verifies the origin itself)",
			        "crl_file needs intercept: true: without interception custos never "
			        "sees the origin's certificate");
		/* 1KiB as egress.max_response: 0 once meant egress.max_response, so the number
		 * written was not the one in force */
		cfg_size(c, m, "max_response", 1024, CFG_MAX_RESPONSE, &ds->max_response);
		cfg_dur(c, m, "timeout", MS(1), CFG_MAX_TIMEOUT_NS, &ds->timeout_ns);
		parse_source_client_cert(c, m, ds);
	}
}

/* "ip", "ipv4:port" or "[ipv6]:port" (port 1..65535, plain decimal). */
static bool dns_server_ok(const char *s)
{
	unsigned char tmp[16];
	char h[INET6_ADDRSTRLEN + 1];
	const char *port = NULL;
	if (inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1)
		return true;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(h))
			return false;
		memcpy(h, s + 1, (size_t)(rb - s - 1));
		h[rb - s - 1] = '\0';
		if (inet_pton(AF_INET6, h, tmp) != 1)
			return false;
		port = rb + 2;
	} else {
		const char *col = strchr(s, ':');
		if (col == NULL || (size_t)(col - s) >= sizeof(h))
			return false;
		memcpy(h, s, (size_t)(col - s));
		h[col - s] = '\0';
		if (inet_pton(AF_INET, h, tmp) != 1)
			return false;
		port = col + 1;
	}
	uint64_t p;
	return port[0] != '0' && num_parse_u64(span_cstr(port), 1, 65535, &p) == CUSTOS_OK;
}

static void parse_egress(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	cfg_egress *e = &cfg->egress;
	ydoc_node *m = CFG_SECTION(c, root, "egress", keys_egress);

	e->enabled = cfg->n_data_sources > 0;
	e->port = 3128;
	e->leaf_lifetime_ns = SEC(24 * 3600);
	e->max_response = 100u << 20;
	e->connect_timeout_ns = SEC(5);
	e->read_timeout_ns = SEC(60);
	e->idle_timeout_ns = SEC(60);
	e->max_connections_per_sandbox = 64;
	e->dns_timeout_ns = SEC(2);
	e->inspect_max_body = 8u << 20; /* EGRESS_INSPECT_BODY_MAX */
	e->inspect_max_held = 128ull
	                      << 20; /* EGRESS_INSPECT_HELD_DEFAULT: 13 x 8 MiB + 16 KiB fits */
	cfg_bool(c, m, "enabled", &e->enabled);
	uint64_t port = e->port;
	if (cfg_u64(c, m, "port", 1, 65535, &port))
		e->port = (uint16_t)port;
	cfg_path(c, m, "ca_dir", false, false, &e->ca_dir);
	cfg_dur(c, m, "leaf_lifetime", SEC(60), SEC(90 * 24 * 3600), &e->leaf_lifetime_ns);
	cfg_size(c, m, "max_response", 1024, CFG_MAX_RESPONSE, &e->max_response);
	ydoc_node *t = CFG_SECTION(c, m, "timeouts", keys_egress_timeouts);
	cfg_dur(c, t, "connect", MS(1), CFG_MAX_TIMEOUT_NS, &e->connect_timeout_ns);
	cfg_dur(c, t, "read", MS(1), CFG_MAX_TIMEOUT_NS, &e->read_timeout_ns);
	cfg_dur(c, t, "idle", MS(1), CFG_MAX_TIMEOUT_NS, &e->idle_timeout_ns);
	cfg_u64(c, m, "max_connections_per_sandbox", 1, 65536, &e->max_connections_per_sandbox);
	/* Content inspection holds bodies whole: one at most max_body, all together max_held. */
	ydoc_node *in = CFG_SECTION(c, m, "inspect", keys_egress_inspect);
	cfg_size(c, in, "max_body", 1024, CFG_MAX_INSPECT_BODY, &e->inspect_max_body);
	/* One multipart body of max_body bytes, the most any media type holds, peaks at the body
	 * (n + 1), four working copies (4 x (2n + 4 KiB + 1)) and its offset map (4 x (n + 1)):
	 * 13n + 16393 (CFG_INSPECT_HELD_FACTOR, _SLACK; docs/EGRESS.md "memory bound"). A smaller
	 * max_held would refuse the largest bodies at run time (503) while the config says they
	 * may be inspected, so it is refused here. Checked on the defaults too (an explicit
	 * max_body with the default max_held). */
	bool held_set = cfg_size(c, in, "max_held", 1024, CFG_MAX_MEMORY, &e->inspect_max_held);
	uint64_t held_min = CFG_INSPECT_HELD_FACTOR * e->inspect_max_body + CFG_INSPECT_HELD_SLACK;
	if (e->inspect_max_held < held_min) {
		ydoc_node *at = held_set ? cfg_get(in, "max_held") : cfg_get(in, "max_body");
		ydoc_error(
		        c->doc, at ? at : in, c->d, NULL,
		        "'egress.inspect.max_held' (%llu bytes) is less than %u x "
		        "'egress.inspect.max_body' (%llu bytes) + %u bytes = %llu bytes, what "
		        "one body of max_body bytes needs while it is inspected (a multipart "
		        "one, with its working copies): raise max_held to at least %llu or lower "
		        "max_body",
		        (unsigned long long)e->inspect_max_held, CFG_INSPECT_HELD_FACTOR,
		        (unsigned long long)e->inspect_max_body, CFG_INSPECT_HELD_SLACK,
		        (unsigned long long)held_min, (unsigned long long)held_min);
	}
	ydoc_node *dn = cfg_get(m, "dns");
	if (dn && dn->kind == YDOC_SCALAR && !dn->quoted && strcmp(dn->str, "system") == 0) {
		/* the system resolver: the default */
	} else if (dn && cfg_map(c, dn, "'dns' (system or {servers: [...]})", keys_egress_dns,
	                         CUSTOS_ARRAY_LEN(keys_egress_dns))) {
		/* The map form names the resolvers: without them the timeout would be read for
		 * nothing and the system resolver used, which the file does not say. */
		if (cfg_get(dn, "servers") == NULL)
			ydoc_error(c->doc, dn, c->d, "or write dns: system for getaddrinfo",
			           "missing required key 'servers'");
		else if (cfg_strlist(c, dn, "servers", CFG_MAX_LIST, &e->dns_servers,
		                     &e->n_dns_servers)) {
			ydoc_node *seq = cfg_get(dn, "servers");
			if (e->n_dns_servers == 0)
				ydoc_error(c->doc, seq, c->d,
				           "or write dns: system for getaddrinfo",
				           "'servers' must not be empty");
			for (size_t i = 0; i < e->n_dns_servers; i++)
				if (!dns_server_ok(e->dns_servers[i]))
					ydoc_error(c->doc, seq->items[i], c->d, NULL,
					           "'%s' is not an IP address (ip, ipv4:port or "
					           "[ipv6]:port)",
					           e->dns_servers[i]);
		}
		cfg_dur(c, dn, "timeout", MS(10), SEC(60), &e->dns_timeout_ns);
	}
}

/* ---------------------------------------------------------------------------------------------
 * audit
 */
static void parse_sink(cfg_ctx *c, ydoc_node *m, cfg_sink *k)
{
	static const char *const types[] = { "syslog", "http" };
	static const char *const formats[] = { "rfc5424", "cef", "leef", "json" };

	k->tls.verify = true;
	k->http.ack = true;
	k->retry_initial_ns = MS(500);
	k->retry_max_ns = SEC(60);
	/* The head check and the start skip every cursor.*.tmp* name (a replacement being
	 * written): an id holding ".tmp" would name a cursor never checked. */
	if (cfg_id(c, m, "id", true, &k->id) && strchr(k->id, '/') != NULL)
		ydoc_error(c->doc, cfg_get(m, "id"), c->d, NULL,
		           "a sink id names its cursor file (cursor.<id>): no '/'");
	else if (k->id != NULL && strstr(k->id, ".tmp") != NULL)
		ydoc_error(c->doc, cfg_get(m, "id"), c->d, NULL,
		           "a sink id names its cursor file (cursor.<id>): no '.tmp' in it (the "
		           "name of a cursor being replaced)");
	if (cfg_get(m, "type") == NULL)
		ydoc_error(c->doc, m, c->d, "syslog or http", "missing required key 'type'");
	CFG_ENUM(c, m, "type", types, k->type);
	k->format = k->type == CFG_SINK_HTTP ? CFG_FORMAT_JSON : CFG_FORMAT_RFC5424;
	CFG_ENUM(c, m, "format", formats, k->format);
	ydoc_node *t = CFG_SECTION(c, m, "tls", keys_audit_sinks_tls);
	if (t) {
		k->tls.enabled = true;
		cfg_path(c, t, "ca", false, false, &k->tls.ca);
		cfg_path(c, t, "cert", false, false, &k->tls.cert);
		cfg_path(c, t, "key", false, false, &k->tls.key);
		if ((k->tls.cert == NULL) != (k->tls.key == NULL))
			ydoc_error(c->doc, t, c->d, NULL, "cert and key go together");
		cfg_bool(c, t, "verify", &k->tls.verify);
		cfg_str(c, t, "server_name", false, &k->tls.server_name);
		cfg_path(c, t, "crl", false, false, &k->tls.crl);
		if (k->tls.crl && !k->tls.verify)
			ydoc_error(c->doc, cfg_get(t, "crl"), c->d, "drop crl, or verify: true",
			           "crl checks the server's certificate, which verify: false does "
			           "not verify");
	}
	ydoc_node *h = CFG_SECTION(c, m, "http", keys_audit_sinks_http);
	if (k->type == CFG_SINK_SYSLOG) {
		if (cfg_str(c, m, "address", true, &k->address) &&
		    cfg_addr_parse(c, cfg_get(m, "address"), k->address, &k->addr) &&
		    k->addr.kind == CFG_ADDR_UNIX && k->tls.enabled)
			ydoc_error(c->doc, cfg_get(m, "address"), c->d, NULL,
			           "TLS needs a TCP address");
		if (h)
			ydoc_error(c->doc, cfg_get(m, "http"), c->d, NULL,
			           "an http: block belongs to type: http sinks");
	} else {
		if (cfg_get(m, "address"))
			ydoc_error(c->doc, cfg_get(m, "address"), c->d, "use http.url",
			           "http sinks take no address");
		if (k->format != CFG_FORMAT_JSON)
			ydoc_error(c->doc, cfg_get(m, "format"), c->d, NULL,
			           "http sinks send json (Splunk HEC shape)");
		if (h == NULL && cfg_get(m, "http") == NULL)
			ydoc_error(c->doc, m, c->d, NULL, "missing required key 'http'");
		ydoc_node *un = cfg_get(h, "url");
		if (cfg_str(c, h, "url", h != NULL, &k->http.url)) {
			k->http.https = strncmp(k->http.url, "https://", 8) == 0;
			if (!k->http.https && strncmp(k->http.url, "http://", 7) != 0)
				ydoc_error(c->doc, un, c->d, NULL,
				           "http.url must be http:// or https://");
			else
				parse_url_hostport(c, un, k->http.url + (k->http.https ? 8 : 7),
				                   k->http.https, &k->http.host, &k->http.port,
				                   &k->http.path);
			/* The shipper posts to this path and asks .../services/collector/ack for
			 * indexer acknowledgements (audit/sink.c). */
			if (k->http.path && (strstr(k->http.path, "/services/collector") == NULL ||
			                     strpbrk(k->http.path, "?#") != NULL))
				ydoc_error(
				        c->doc, un, c->d,
				        "e.g. https://splunk.example:8088/services/collector/event",
				        "http.url must name the HEC endpoint "
				        "(.../services/collector/event), without query or "
				        "fragment");
			if (k->tls.enabled && !k->http.https)
				ydoc_error(c->doc, t, c->d, "use an https:// url",
				           "a tls: block needs an https:// http.url");
		}
		cfg_path(c, h, "token_file", false, false, &k->http.token_file);
		cfg_bool(c, h, "ack", &k->http.ack);
		if (k->http.token_file && k->http.url && !k->http.https)
			ydoc_warn(c->doc, cfg_get(h, "token_file"), c->d, NULL,
			          "sink '%s': the HEC token goes over plain http",
			          k->id ? k->id : "?");
	}
	if (k->tls.enabled && !k->tls.verify)
		ydoc_warn(c->doc, cfg_get(t, "verify"), c->d, NULL,
		          "sink '%s': TLS without verifying the server", k->id ? k->id : "?");
	ydoc_node *r = CFG_SECTION(c, m, "retry", keys_audit_sinks_retry);
	cfg_dur(c, r, "initial", MS(10), SEC(3600), &k->retry_initial_ns);
	cfg_dur(c, r, "max", MS(10), SEC(24 * 3600), &k->retry_max_ns);
	if (k->retry_max_ns < k->retry_initial_ns)
		ydoc_error(c->doc, r, c->d, NULL, "retry.max is below retry.initial");
}

static void parse_audit(cfg_ctx *c, ydoc_node *root, cfg_audit *a)
{
	static const char *const durs[] = { "sync", "batch" };
	static const char *const fulls[] = { "block", "deny" };
	static const char *const werrs[] = { "deny", "continue" };
	static const char *const queries[] = { "names", "full", "none" };
	ydoc_node *m = CFG_SECTION(c, root, "audit", keys_audit);

	a->dir = cfg_strdup(c->a, "/var/lib/custos/audit");
	a->durability = CFG_DURABILITY_BATCH;
	a->batch_window_ns = MS(10);
	a->queue_size = 65536;
	a->rotate_size = 256u << 20;
	a->rotate_interval_ns = SEC(24 * 3600);
	a->checkpoint_every_events = 1000;
	a->checkpoint_every_interval_ns = SEC(60);
	cfg_path(c, m, "dir", false, false, &a->dir);
	CFG_ENUM(c, m, "durability", durs, a->durability);
	cfg_dur(c, m, "batch_window", 0, CFG_MAX_BATCH_WINDOW_NS, &a->batch_window_ns);
	cfg_u64(c, m, "queue_size", 16, CFG_MAX_AUDIT_QUEUE, &a->queue_size);
	CFG_ENUM(c, m, "on_full", fulls, a->on_full);
	ydoc_node *r = CFG_SECTION(c, m, "rotate", keys_audit_rotate);
	cfg_size(c, r, "size", 0, 1ull << 40, &a->rotate_size);
	if (a->rotate_size != 0 && a->rotate_size < (1u << 20))
		ydoc_error(c->doc, cfg_get(r, "size"), c->d, "0 turns size rotation off",
		           "rotate.size must be at least 1MiB");
	cfg_dur(c, r, "interval", 0, SEC(31 * 24 * 3600), &a->rotate_interval_ns);
	if (a->rotate_interval_ns != 0 && a->rotate_interval_ns < SEC(60))
		ydoc_error(c->doc, cfg_get(r, "interval"), c->d, "0 turns time rotation off",
		           "rotate.interval must be at least 1m");
	ydoc_node *ck = CFG_SECTION(c, m, "checkpoint", keys_audit_checkpoint);
	cfg_u64(c, ck, "every_events", 1, 1u << 24, &a->checkpoint_every_events);
	cfg_dur(c, ck, "every_interval", MS(100), SEC(24 * 3600), &a->checkpoint_every_interval_ns);
	cfg_path(c, m, "signing_key", false, false, &a->signing_key);
	cfg_path(c, m, "public_key", false, false, &a->public_key);
	CFG_ENUM(c, m, "on_write_error", werrs, a->on_write_error);
	CFG_ENUM(c, m, "query", queries, a->query);
	a->body_record_max = CFG_DEFAULT_AUDIT_BODY_RECORD;
	uint64_t brm;
	if (cfg_size(c, m, "body_record_max", 1, UINT64_MAX, &brm)) {
		if (brm > CFG_MAX_AUDIT_BODY_RECORD)
			ydoc_error(
			        c->doc, cfg_get(m, "body_record_max"), c->d,
			        "a longer body is recorded cut, flagged, with its whole length",
			        "'body_record_max': %llu bytes per body cannot fit an audit event "
			        "(at most %u): the request and the response body and the event's "
			        "other members must fit the trail's %u-byte record",
			        (unsigned long long)brm, CFG_MAX_AUDIT_BODY_RECORD,
			        CFG_AUDIT_RECORD_BYTES);
		else
			a->body_record_max = brm;
	}
	if (a->on_write_error == CFG_ON_WRITE_ERROR_CONTINUE)
		ydoc_warn(c->doc, cfg_get(m, "on_write_error"), c->d, NULL,
		          "requests will be served while the audit trail cannot be written");
	ydoc_node *s = cfg_seq(c, m, "sinks", CFG_MAX_SINKS);
	if (s) {
		a->sinks = cfg_alloc(c->a, s->n, sizeof(cfg_sink));
		for (size_t i = 0; i < s->n; i++) {
			if (CFG_MAP(c, s->items[i], "a sink", keys_audit_sinks))
				parse_sink(c, s->items[i], &a->sinks[a->n_sinks++]);
		}
	}
}

/* ---------------------------------------------------------------------------------------------
 * admin, policy
 */
static void parse_proxy(cfg_ctx *c, ydoc_node *root, cfg_proxy *p)
{
	ydoc_node *m = CFG_SECTION(c, root, "proxy", keys_proxy);

	p->self_sandbox = true;
	if (cfg_str(c, m, "user", false, &p->user) && p->user) {
		/* A system user name: what useradd accepts, so that no lookup is ambiguous. */
		size_t n = strlen(p->user);
		bool ok = n >= 1 && n <= 32 && strchr("abcdefghijklmnopqrstuvwxyz_", p->user[0]);
		for (size_t i = 1; ok && i < n; i++)
			ok = strchr("abcdefghijklmnopqrstuvwxyz0123456789_-", p->user[i]) != NULL;
		if (!ok)
			ydoc_error(c->doc, cfg_get(m, "user"), c->d, "e.g. custos",
			           "proxy.user: a user name of 1 to 32 of [a-z0-9_-], not starting "
			           "with a digit or '-'");
	}
	cfg_bool(c, m, "self_sandbox", &p->self_sandbox);
}

/* admin.tls: a certificate and its key (with its OCSP response to staple, as a listener's), and
 * optionally the CA whose client certificates are then required; the listeners' defaults for
 * everything else (TLS 1.2+, Mozilla intermediate suites), no session tickets. */
static void parse_admin_tls(cfg_ctx *c, ydoc_node *am, cfg_tls_server *t)
{
	ydoc_node *m = CFG_SECTION(c, am, "tls", keys_admin_tls);

	t->min_version = CFG_TLS_1_2;
	if (m == NULL)
		return;
	t->enabled = true;
	t->certs = cfg_alloc(c->a, 1, sizeof(cfg_cert_pair));
	t->n_certs = 1;
	parse_cert_pair(c, m, &t->certs[0]);
	cfg_path(c, m, "ocsp", false, false, &t->certs[0].ocsp);
	cfg_path(c, m, "client_ca", false, false, &t->client_ca);
	t->client_auth = t->client_ca ? CFG_CLIENT_AUTH_REQUIRED : CFG_CLIENT_AUTH_NONE;
	cfg_path(c, m, "client_crl", false, false, &t->client_crl);
	if (t->client_crl && t->client_ca == NULL)
		ydoc_error(c->doc, cfg_get(m, "client_crl"), c->d,
		           "name the CA that signs client certificates in client_ca",
		           "client_crl needs client_ca");
	t->session_tickets = false;
	t->ticket_rotation_ns = SEC(12 * 3600);
}

static void parse_admin(cfg_ctx *c, ydoc_node *root, cfg_admin *a)
{
	ydoc_node *m = CFG_SECTION(c, root, "admin", keys_admin);

	a->enabled = true;
	a->socket = cfg_strdup(c->a, "/run/custos/admin.sock");
	a->socket_mode = 0660;
	a->max_body = 1u << 20;
	cfg_bool(c, m, "enabled", &a->enabled);
	/* proxy/admin.c open_unix binds it through <dir>/.admin.XXXXXX/s, in a sun_path of 108
	 * bytes; past that up logs the error and runs without its admin API */
	if (cfg_path(c, m, "socket", false, true, &a->socket) && a->enabled) {
		const char *slash = strrchr(a->socket, '/');
		size_t dl = slash ? (size_t)(slash - a->socket) : 0;
		if (strlen(a->socket) >= 108 || dl + sizeof("/.admin.XXXXXX/s") > 108)
			ydoc_warn(c->doc, cfg_get(m, "socket"), c->d,
			          "a unix socket path (sun_path, 108 bytes); its directory at most "
			          "91 "
			          "bytes",
			          "admin socket %s: path too long: custos up would run without its "
			          "admin API",
			          a->socket);
	}
	ydoc_node *mode = cfg_get(m, "socket_mode");
	if (mode) {
		const char *s;
		uint64_t v = 0;
		bool ok = ydoc_str(c->doc, mode, &s, c->d) && s[0] != '\0' && strlen(s) <= 4;
		for (size_t i = 0; ok && s[i]; i++) {
			ok = s[i] >= '0' && s[i] <= '7';
			v = v * 8 + (uint64_t)(s[i] - '0');
		}
		if (!ok || v > 0777)
			ydoc_error(c->doc, mode, c->d, "an octal mode such as \"0660\"",
			           "bad socket_mode");
		else if (v & 0007)
			ydoc_error(c->doc, mode, c->d, "use 0600 or 0660",
			           "the admin socket must not be accessible by others");
		else
			a->socket_mode = (uint32_t)v;
	}
	ydoc_node *u = cfg_seq(c, m, "allowed_uids", CFG_MAX_LIST);
	if (u) {
		a->allowed_uids = cfg_alloc(c->a, u->n, sizeof(uint32_t));
		for (size_t i = 0; i < u->n; i++) {
			uint64_t v;
			if (ydoc_u64(c->doc, u->items[i], 0, UINT32_MAX - 1, &v, c->d))
				a->allowed_uids[a->n_allowed_uids++] = (uint32_t)v;
		}
	}
	cfg_bool(c, m, "force", &a->force);
	cfg_size(c, m, "max_body", 1024, CFG_MAX_ADMIN_BODY, &a->max_body);
	parse_admin_tls(c, m, &a->tls);
	ydoc_node *t = CFG_SECTION(c, m, "tcp", keys_admin_tcp);
	if (a->tls.enabled && t == NULL)
		ydoc_error(c->doc, cfg_get(m, "tls"), c->d,
		           "add an admin.tcp block (address, token_sha256): the Unix socket "
		           "takes no TLS",
		           "admin.tls needs admin.tcp");
	if (t) {
		a->tcp.enabled = true;
		if (cfg_str(c, t, "address", true, &a->tcp.address) &&
		    cfg_addr_parse(c, cfg_get(t, "address"), a->tcp.address, &a->tcp.addr)) {
			if (a->tcp.addr.kind != CFG_ADDR_TCP)
				ydoc_error(c->doc, cfg_get(t, "address"), c->d, "use admin.socket",
				           "admin.tcp.address must be host:port");
			else if (!a->tcp.addr.loopback && !a->force && !a->tls.enabled)
				ydoc_error(c->doc, cfg_get(t, "address"), c->d,
				           "add an admin.tls block (or set admin.force: true to "
				           "expose the admin API and its token in clear)",
				           "admin TCP address '%s' is not loopback",
				           a->tcp.address);
		}
		cfg_sha256(c, t, "token_sha256", true, a->tcp.token_sha256);
	}
}

static void parse_policy(cfg_ctx *c, ydoc_node *root, cfg_policy *p)
{
	ydoc_node *m = CFG_SECTION(c, root, "policy", keys_policy);

	p->file = cfg_strdup(c->a, "/etc/custos/policy.yaml");
	p->reload_on_sighup = true;
	cfg_path(c, m, "file", false, false, &p->file);
	cfg_bool(c, m, "reload_on_sighup", &p->reload_on_sighup);
}

/* ---------------------------------------------------------------------------------------------
 * Cross-section checks.
 */
static ydoc_node *seq_item(ydoc_node *root, const char *key, size_t i)
{
	ydoc_node *s = ydoc_map_get(root, key);
	/* Entries that were not mappings are skipped when parsing: find the i-th mapping. */
	for (size_t k = 0; s && s->kind == YDOC_SEQ && k < s->n; k++) {
		if (s->items[k]->kind == YDOC_MAP && i-- == 0)
			return s->items[k];
	}
	return root;
}

static void dup_check(cfg_ctx *c, ydoc_node *root, const char *section, const char *what,
                      char *const *ids, size_t stride, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *a = *(char *const *)((const char *)ids + i * stride);
		for (size_t j = 0; a && j < i; j++) {
			const char *b = *(char *const *)((const char *)ids + j * stride);
			if (b && strcmp(a, b) == 0) {
				ydoc_error(c->doc, seq_item(root, section, i), c->d, NULL,
				           "duplicate %s id '%s'", what, a);
				break;
			}
		}
	}
}

static void cross_checks(cfg_ctx *c, ydoc_node *root, custos_config *cfg)
{
	if (cfg->n_listeners)
		dup_check(c, root, "listeners", "listener", &cfg->listeners->id,
		          sizeof(cfg_listener), cfg->n_listeners);
	if (cfg->n_data_sources)
		dup_check(c, root, "data_sources", "data source", &cfg->data_sources->id,
		          sizeof(cfg_data_source), cfg->n_data_sources);
	if (cfg->auth.n_api_keys)
		dup_check(c, ydoc_map_get(root, "auth"), "api_keys", "api key",
		          &cfg->auth.api_keys->id, sizeof(cfg_api_key), cfg->auth.n_api_keys);
	if (cfg->audit.n_sinks)
		dup_check(c, ydoc_map_get(root, "audit"), "sinks", "sink", &cfg->audit.sinks->id,
		          sizeof(cfg_sink), cfg->audit.n_sinks);

	/* Listener addresses: two listeners on one TCP port or socket path. */
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const cfg_addr *a = &cfg->listeners[i].addr;
		for (size_t j = 0; j < i && (a->host || a->path); j++) {
			const cfg_addr *b = &cfg->listeners[j].addr;
			bool same =
			        a->kind == b->kind &&
			        (a->kind == CFG_ADDR_UNIX ? b->path && strcmp(a->path, b->path) == 0
			                                  : b->host && a->port == b->port &&
			                                            strcmp(a->host, b->host) == 0);
			if (same) {
				ydoc_node *item = seq_item(root, "listeners", i);
				ydoc_node *an = item ? cfg_get(item, "address") : NULL;
				ydoc_error(c->doc, an ? an : item, c->d, NULL,
				           "listener address '%s' is already used by '%s'",
				           cfg->listeners[i].address,
				           cfg->listeners[j].id ? cfg->listeners[j].id : "?");
				break;
			}
		}
	}

	/* With egress, a model without a sandbox gets a host listener on 127.0.0.1:(egress.port +
	 * its place in models) (cli/egress_config.c, and a reload adding one): past 65535, up
	 * refuses to start. */
	for (size_t i = 0; cfg->egress.enabled && i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->sandbox.type != CFG_SANDBOX_NONE || (unsigned)cfg->egress.port + i <= 65535)
			continue;
		ydoc_node *item = seq_item(root, "models", i);
		ydoc_node *in = item ? ydoc_map_get(item, "id") : NULL;
		ydoc_error(c->doc, in ? in : item, c->d,
		           "a model without a sandbox gets a host egress listener on "
		           "127.0.0.1:(egress.port + its place in models): lower egress.port",
		           "model '%s': egress.port + %zu (its place in models) passes 65535",
		           m->id ? m->id : "?", i);
		break;
	}

	/* Inside a process sandbox custos listens on 127.0.0.1:egress.port (the HTTP_PROXY the
	 * model is given) beside the model server's sandbox.port: one of them could not listen,
	 * or the readiness probe and the requests would reach the egress proxy. */
	for (size_t i = 0; cfg->egress.enabled && i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->sandbox.type != CFG_SANDBOX_PROCESS || m->sandbox.port != cfg->egress.port)
			continue;
		ydoc_node *pn =
		        ydoc_map_get(ydoc_map_get(seq_item(root, "models", i), "sandbox"), "port");
		ydoc_node *en = ydoc_map_get(ydoc_map_get(root, "egress"), "port");
		ydoc_error(c->doc,
		           pn   ? pn
		           : en ? en
		                : seq_item(root, "models", i),
		           c->d,
		           "custos listens on egress.port inside each process sandbox (the "
		           "model's HTTP_PROXY): give the model server another sandbox.port",
		           "model '%s': sandbox.port %u is egress.port", m->id ? m->id : "?",
		           (unsigned)m->sandbox.port);
	}

	/* Model ids and aliases share one name space (the `model` field of a request). */
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		ydoc_node *node = seq_item(root, "models", i);
		for (size_t a = 0; a <= m->n_aliases; a++) {
			const char *name = a == 0 ? m->id : m->aliases[a - 1];
			if (name == NULL)
				continue;
			for (size_t j = 0; j <= i; j++) {
				const cfg_model *o = &cfg->models[j];
				size_t lim = j == i ? a : o->n_aliases + 1;
				for (size_t b = 0; b < lim; b++) {
					const char *on = b == 0 ? o->id : o->aliases[b - 1];
					if (on && strcmp(on, name) == 0) {
						ydoc_error(
						        c->doc, node, c->d, NULL,
						        "model name '%s' is already used by model "
						        "'%s'",
						        name, o->id ? o->id : "?");
						goto next_name;
					}
				}
			}
		next_name:;
		}
		/* The sandbox profile reference. */
		const cfg_model_sandbox *sb = &m->sandbox;
		if (sb->type == CFG_SANDBOX_VM && m->id && strlen(m->id) > CFG_MAX_VM_MODEL_ID) {
			ydoc_node *in = ydoc_map_get(node, "id");
			ydoc_error(c->doc, in ? in : node, c->d, HINT_VM_MODEL_ID,
			           "model id '%s' has %zu bytes; a model with sandbox.type: vm may "
			           "have at most %zu",
			           m->id, strlen(m->id), (size_t)CFG_MAX_VM_MODEL_ID);
		}
		if (sb->type == CFG_SANDBOX_PROCESS && cfg->egress.enabled &&
		    sb->n_env > CFG_MAX_ENV - CFG_EGRESS_ENV) {
			ydoc_node *en = ydoc_map_get(ydoc_map_get(node, "sandbox"), "env");
			ydoc_error(
			        c->doc, en ? en : node, c->d, HINT_EGRESS_ENV,
			        "model '%s' sets %zu environment variables; the limit with egress "
			        "is %d",
			        m->id ? m->id : "?", sb->n_env, CFG_MAX_ENV - CFG_EGRESS_ENV);
		}
		if (sb->type == CFG_SANDBOX_NONE || sb->profile == NULL)
			continue;
		ydoc_node *pn = ydoc_map_get(ydoc_map_get(node, "sandbox"), "profile");
		const cfg_profile *p = config_find_profile(cfg, sb->profile);
		if (p == NULL) {
			const char **names = cfg_alloc(c->a, cfg->n_profiles, sizeof(char *));
			for (size_t k = 0; k < cfg->n_profiles; k++)
				names[k] = cfg->profiles[k].id;
			const char *g =
			        diag_suggest(span_cstr(sb->profile), names, cfg->n_profiles);
			char hint[128];
			snprintf(hint, sizeof(hint), "did you mean '%s'?", g ? g : "");
			ydoc_error(c->doc, pn ? pn : node, c->d,
			           g ? hint : "define it under sandbox_profiles",
			           "unknown sandbox profile '%s'", sb->profile);
			continue;
		}
		cfg->models[i].sandbox.profile_index = (size_t)(p - cfg->profiles);
		if (sb->type == CFG_SANDBOX_VM && !p->vm.enabled)
			ydoc_error(c->doc, pn ? pn : node, c->d, "add a vm: block to the profile",
			           "model '%s' runs as a VM but profile '%s' has no vm settings",
			           m->id ? m->id : "?", p->id);
	}

	/* Routes: a known model each, and no two prefixes that one request path could match
	 * (equal, or one a whole-segment prefix of the other), so no order decides anything. */
	for (size_t i = 0; i < cfg->n_routes; i++) {
		cfg_route *r = &cfg->routes[i];
		ydoc_node *node = seq_item(root, "routes", i);
		const cfg_model *m = r->model ? config_find_model(cfg, r->model) : NULL;
		if (r->model && m == NULL) {
			const char **names = cfg_alloc(c->a, cfg->n_models + 1, sizeof(char *));
			size_t nn = 0;
			for (size_t k = 0; k < cfg->n_models; k++) /* an id may be missing */
				if (cfg->models[k].id)
					names[nn++] = cfg->models[k].id;
			const char *g = diag_suggest(span_cstr(r->model), names, nn);
			char hint[128];
			snprintf(hint, sizeof(hint), "did you mean '%s'?", g ? g : "");
			ydoc_node *mn = ydoc_map_get(node, "model");
			ydoc_error(c->doc, mn ? mn : node, c->d,
			           g ? hint : "a route names a model (id or alias) under models",
			           "unknown model '%s': no upstream for route '%s'", r->model,
			           r->path ? r->path : "?");
		} else if (m) {
			r->model_index = (size_t)(m - cfg->models);
		}
		for (size_t j = 0; r->path && j < i; j++) {
			const char *a = cfg->routes[j].path, *b = r->path;
			if (a == NULL)
				continue;
			size_t la = strlen(a), lb = strlen(b);
			const char *shortp = la <= lb ? a : b, *longp = la <= lb ? b : a;
			size_t ls = la <= lb ? la : lb;
			bool dup = la == lb && strcmp(a, b) == 0;
			bool over = !dup && strncmp(shortp, longp, ls) == 0 && longp[ls] == '/';
			if (!dup && !over)
				continue;
			ydoc_node *pn = ydoc_map_get(node, "path");
			ydoc_node *other = ydoc_map_get(seq_item(root, "routes", j), "path");
			char where[96] = "";
			if (other)
				snprintf(where, sizeof(where), " (line %u)", other->line);
			if (dup)
				ydoc_error(c->doc, pn ? pn : node, c->d, NULL,
				           "duplicate route path '%s': already routed%s", b, where);
			else
				ydoc_error(c->doc, pn ? pn : node, c->d,
				           "route prefixes must not nest: route the narrower paths "
				           "each, or by model",
				           "route path '%s' overlaps '%s'%s: a request under '%s' "
				           "would match both",
				           b, a, where, longp);
			break;
		}
	}

	/* The proxy's route table (cli/cmd_up.c map_config): an entry for each model id and
	 * alias and each path route, and a default route to the first model. The first name the
	 * table has no room for is refused, counted in file order (models, then routes). */
	size_t entries = cfg->n_models ? 1 : 0;
	ydoc_node *full = NULL;
	for (size_t i = 0; i < cfg->n_models && full == NULL; i++) {
		ydoc_node *node = seq_item(root, "models", i);
		ydoc_node *al = ydoc_map_get(node, "aliases");
		for (size_t a = 0; a <= cfg->models[i].n_aliases && full == NULL; a++) {
			if (++entries <= CFG_MAX_ROUTE_TABLE)
				continue;
			full = a == 0 ? ydoc_map_get(node, "id") : NULL;
			if (a > 0 && al && al->kind == YDOC_SEQ && a - 1 < al->n)
				full = al->items[a - 1];
			if (full == NULL)
				full = node;
		}
	}
	for (size_t i = 0; i < cfg->n_routes && full == NULL; i++)
		if (++entries > CFG_MAX_ROUTE_TABLE)
			full = seq_item(root, "routes", i);
	if (full)
		ydoc_error(c->doc, full, c->d, HINT_ROUTE_TABLE,
		           "more than %d model ids, aliases and routes in all (with the default "
		           "route)",
		           CFG_MAX_ROUTE_TABLE);

	/* Interception needs the CA, and data sources need the egress proxy. */
	for (size_t i = 0; i < cfg->n_data_sources; i++) {
		if (cfg->data_sources[i].intercept && cfg->egress.ca_dir == NULL) {
			ydoc_error(c->doc, seq_item(root, "data_sources", i), c->d,
			           "create one with `custos ca init DIR` and set egress.ca_dir",
			           "data source '%s' is intercepted but egress.ca_dir is not set",
			           cfg->data_sources[i].id ? cfg->data_sources[i].id : "?");
		}
	}
	if (cfg->n_data_sources && !cfg->egress.enabled)
		ydoc_warn(c->doc, ydoc_map_get(root, "egress"), c->d, NULL,
		          "egress is disabled: no sandbox can reach any data source");

	/* Client certificates need somewhere to take the identity from, and the reverse. */
	bool any_mtls = false;
	for (size_t i = 0; i < cfg->n_listeners; i++)
		any_mtls |= cfg->listeners[i].tls.client_auth != CFG_CLIENT_AUTH_NONE;
	ydoc_node *auth = ydoc_map_get(root, "auth");
	if (any_mtls && ydoc_map_get(auth, "mtls") == NULL)
		cfg->auth.mtls.enabled = true;
	/* Certificates identify nobody unless a listener asks for them: an auth.mtls block
	 * alone authenticates nothing. */
	if (cfg->n_listeners && cfg->n_models && cfg->auth.n_api_keys == 0 &&
	    cfg->auth.api_keys_file == NULL && !cfg->auth.jwt.enabled &&
	    !(cfg->auth.mtls.enabled && any_mtls))
		ydoc_warn(c->doc, auth ? auth : root, c->d,
		          "add auth.api_keys, auth.jwt, or client certificates on a listener",
		          "no authentication method is configured: every request will be 401");
	if (cfg->n_listeners == 0 && cfg->n_models > 0)
		ydoc_warn(c->doc, root, c->d, NULL, "models are configured but no listener");
}

/* ---------------------------------------------------------------------------------------------
 * Entry points.
 */
static custos_config *build(const ydoc *doc, diag_list *d)
{
	custos_config *cfg = xcalloc(1, sizeof(*cfg));
	cfg_ctx c = { .doc = doc, .d = d, .a = cfg_arena_new() };
	ydoc_node *root = doc->root;

	cfg->arena_ = c.a;
	cfg->source = cfg_strdup(c.a, doc->file);
	if (root == NULL) {
		diag_add(d, DIAG_ERROR, doc->file, 1, 1, "start with: version: 1",
		         "the file is empty");
		return cfg;
	}
	if (!cfg_map(&c, root, "the file", top_keys, CUSTOS_ARRAY_LEN(top_keys)))
		return cfg;
	ydoc_node *v = cfg_get(root, "version");
	if (v == NULL)
		ydoc_error(doc, root, d, "add version: 1 at the top",
		           "missing required key 'version'");
	else
		ydoc_u64(doc, v, 1, 1, &cfg->version, d);
	parse_log(&c, root, &cfg->log);
	cfg_u64(&c, root, "workers", 0, CFG_MAX_WORKERS, &cfg->workers);
	parse_limits(&c, root, &cfg->limits);
	parse_listeners(&c, root, cfg);
	parse_auth(&c, root, &cfg->auth);
	parse_profiles(&c, root, cfg);
	parse_models(&c, root, cfg);
	parse_routes(&c, root, cfg);
	parse_data_sources(&c, root, cfg);
	parse_egress(&c, root, cfg);
	parse_audit(&c, root, &cfg->audit);
	parse_admin(&c, root, &cfg->admin);
	parse_policy(&c, root, &cfg->policy);
	parse_proxy(&c, root, &cfg->proxy);
	cross_checks(&c, root, cfg);
	return cfg;
}

static custos_err finish(ydoc *doc, custos_config **out, diag_list *d)
{
	custos_config *cfg = build(doc, d);

	if (cfg)
		memcpy(cfg->source_sha256, doc->sha256, sizeof(cfg->source_sha256));
	ydoc_free(doc);
	if (d->errors) {
		config_free(cfg);
		return err_set(CUSTOS_ERR_INVAL, "configuration has %zu error(s)", d->errors);
	}
	*out = cfg;
	return CUSTOS_OK;
}

custos_err config_parse(const char *name, const char *text, size_t len, custos_config **out,
                        diag_list *d)
{
	ydoc doc;

	*out = NULL;
	if (len > CFG_MAX_FILE_BYTES) {
		diag_add(d, DIAG_ERROR, name, 0, 0, NULL, "larger than %u bytes",
		         CFG_MAX_FILE_BYTES);
		return err_set(CUSTOS_ERR_LIMIT, "%s: too large", name);
	}
	if (ydoc_parse(&doc, name, text, len, d) != CUSTOS_OK) {
		ydoc_free(&doc);
		return CUSTOS_ERR_PARSE;
	}
	return finish(&doc, out, d);
}

custos_err config_load(const char *path, custos_config **out, diag_list *d)
{
	ydoc doc;
	custos_err e;

	*out = NULL;
	e = ydoc_load(&doc, path, CFG_MAX_FILE_BYTES, d);
	if (e != CUSTOS_OK) {
		ydoc_free(&doc);
		return e;
	}
	return finish(&doc, out, d);
}

bool config_where(const custos_config *cfg, const char *value, unsigned *line, unsigned *col)
{
	return cfg_arena_where(cfg->arena_, value, line, col);
}

custos_err config_load_log(const char *path, cfg_log *out)
{
	ydoc doc;
	diag_list d;

	diag_init(&d);
	custos_err e = ydoc_load(&doc, path, CFG_MAX_FILE_BYTES, &d);
	if (e == CUSTOS_OK && (doc.root == NULL || doc.root->kind != YDOC_MAP))
		e = err_set(CUSTOS_ERR_PARSE, "%s: not a mapping", path);
	if (e == CUSTOS_OK) {
		cfg_ctx c = { .doc = &doc, .d = &d, .a = cfg_arena_new() };
		cfg_log log;
		parse_log(&c, doc.root, &log);
		if (d.errors == 0)
			*out = (cfg_log){ .level = log.level, .format = log.format, .file = NULL };
		else
			e = err_set(CUSTOS_ERR_PARSE, "%s: the log section has errors", path);
		cfg_arena_free(c.a);
	}
	ydoc_free(&doc);
	diag_free(&d);
	return e;
}

void config_free(custos_config *cfg)
{
	if (cfg == NULL)
		return;
	cfg_arena_free(cfg->arena_);
	free(cfg);
}

const cfg_model *config_find_model(const custos_config *cfg, const char *id)
{
	for (size_t i = 0; i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		if (m->id && strcmp(m->id, id) == 0)
			return m;
		for (size_t a = 0; a < m->n_aliases; a++) {
			if (strcmp(m->aliases[a], id) == 0)
				return m;
		}
	}
	return NULL;
}

const cfg_profile *config_find_profile(const custos_config *cfg, const char *id)
{
	for (size_t i = 0; i < cfg->n_profiles; i++) {
		if (strcmp(cfg->profiles[i].id, id) == 0)
			return &cfg->profiles[i];
	}
	return NULL;
}

const cfg_data_source *config_find_data_source(const custos_config *cfg, const char *id)
{
	for (size_t i = 0; i < cfg->n_data_sources; i++) {
		if (cfg->data_sources[i].id && strcmp(cfg->data_sources[i].id, id) == 0)
			return &cfg->data_sources[i];
	}
	return NULL;
}

const char *config_classification_name(cfg_classification c)
{
	static const char *const n[] = { "public", "internal", "confidential", "restricted" };
	return (unsigned)c < CUSTOS_ARRAY_LEN(n) ? n[c] : "?";
}

const char *config_sandbox_type_name(cfg_sandbox_type t)
{
	static const char *const n[] = { "none", "process", "vm" };
	return (unsigned)t < CUSTOS_ARRAY_LEN(n) ? n[t] : "?";
}
