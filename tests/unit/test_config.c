/* Unit tests for the custos.yaml loader: the example file, defaults, every kind of error with
 * its position, the cross-section checks and the file-mode refusal. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "custos/config.h"

/* Parses text, expecting success; the caller frees. */
static custos_config *parse_ok(const char *text)
{
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	custos_err e = config_parse("t.yaml", text, strlen(text), &cfg, &d);
	if (e != CUSTOS_OK || d.errors)
		diag_print(&d, stderr);
	assert_int_equal(e, CUSTOS_OK);
	assert_int_equal(d.errors, 0);
	assert_non_null(cfg);
	diag_free(&d);
	return cfg;
}

/* Parses text expecting failure; returns the diag item whose message contains needle. The
 * caller frees d. */
static const diag_item *parse_fail(const char *text, diag_list *d, const char *needle)
{
	custos_config *cfg = (custos_config *)1;

	diag_init(d);
	custos_err e = config_parse("t.yaml", text, strlen(text), &cfg, d);
	assert_int_not_equal(e, CUSTOS_OK);
	assert_null(cfg);
	assert_true(d->errors > 0);
	for (size_t i = 0; i < d->n; i++) {
		if (d->items[i].severity == DIAG_ERROR && strstr(d->items[i].message, needle))
			return &d->items[i];
	}
	diag_print(d, stderr);
	fail_msg("no error containing '%s'", needle);
	return NULL;
}

static void expect_error(const char *text, const char *needle)
{
	diag_list d;

	parse_fail(text, &d, needle);
	diag_free(&d);
}

static void test_example_file(void **state)
{
	(void)state;
	const char *src = getenv("CUSTOS_SRC");
	char path[4096];
	custos_config *cfg = NULL;
	diag_list d;

	snprintf(path, sizeof(path), "%s/conf/custos.example.yaml", src ? src : ".");
	diag_init(&d);
	custos_err e = config_load(path, &cfg, &d);
	if (e != CUSTOS_OK)
		diag_print(&d, stderr);
	assert_int_equal(e, CUSTOS_OK);
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.warnings, 0);
	assert_int_equal(cfg->version, 1);
	assert_int_equal(cfg->n_listeners, 3);
	assert_string_equal(cfg->listeners[0].id, "public-tls");
	assert_true(cfg->listeners[0].tls.enabled);
	assert_int_equal(cfg->listeners[0].tls.n_certs, 2);
	assert_int_equal(cfg->listeners[0].tls.client_auth, CFG_CLIENT_AUTH_OPTIONAL);
	assert_int_equal(cfg->listeners[0].addr.port, 8443);
	assert_false(cfg->listeners[0].addr.loopback);
	assert_true(cfg->listeners[1].addr.loopback);
	assert_int_equal(cfg->listeners[2].addr.kind, CFG_ADDR_UNIX);
	assert_int_equal(cfg->auth.n_api_keys, 1);
	assert_int_equal(cfg->auth.api_keys[0].sha256[0], 0x9f);
	assert_int_equal(cfg->auth.jwt.algorithms, CFG_JWT_RS256 | CFG_JWT_ES256 | CFG_JWT_EDDSA);
	assert_int_equal(cfg->n_models, 4);
	assert_int_equal(cfg->n_routes, 1);
	assert_string_equal(cfg->models[cfg->routes[0].model_index].id, "local-fixture");
	const cfg_model *m = config_find_model(cfg, "llama3-8b");
	assert_non_null(m);
	assert_string_equal(m->id, "llama-8b");
	assert_int_equal(m->sandbox.type, CFG_SANDBOX_PROCESS);
	assert_int_equal(m->upstream.kind, CFG_UPSTREAM_SANDBOX);
	assert_string_equal(cfg->profiles[m->sandbox.profile_index].id, "gpu-process");
	assert_int_equal(cfg->profiles[m->sandbox.profile_index].limits.cpu_milli, 8000);
	assert_int_equal(cfg->profiles[m->sandbox.profile_index].seccomp.base, CFG_SECCOMP_GPU);
	const cfg_model *g = config_find_model(cfg, "gpt-proxy");
	assert_int_equal(g->upstream.kind, CFG_UPSTREAM_HTTPS);
	assert_string_equal(g->upstream.host, "models.corp.example");
	assert_int_equal(g->upstream.port, 8443);
	const cfg_profile *vm = config_find_profile(cfg, "vm-gpu");
	assert_true(vm->vm.enabled);
	assert_int_equal(vm->vm.n_cpu_pinning, 4);
	assert_int_equal(vm->vm.channel, CFG_VM_VIRTIO_SERIAL);
	assert_int_equal(config_find_profile(cfg, "strict")->limits.cpu_milli, 500);
	const cfg_data_source *hr = config_find_data_source(cfg, "hr-api");
	assert_int_equal(hr->classification, CFG_CLASS_CONFIDENTIAL);
	assert_int_equal(hr->port, 8443);
	assert_string_equal(hr->path_prefix, "/api/");
	assert_int_equal(config_find_data_source(cfg, "wiki")->port, 443);
	assert_true(cfg->egress.enabled);
	assert_int_equal(cfg->egress.n_dns_servers, 0);
	assert_int_equal(cfg->audit.n_sinks, 2);
	assert_int_equal(cfg->audit.sinks[0].addr.port, 6514);
	assert_int_equal(cfg->audit.sinks[1].format, CFG_FORMAT_JSON);
	assert_int_equal(cfg->admin.socket_mode, 0660);
	assert_true(cfg->admin.tcp.enabled);
	assert_string_equal(config_classification_name(CFG_CLASS_RESTRICTED), "restricted");
	assert_string_equal(config_sandbox_type_name(CFG_SANDBOX_VM), "vm");
	config_free(cfg);
	diag_free(&d);
}

static void test_defaults(void **state)
{
	(void)state;
	custos_config *cfg = parse_ok("version: 1\n");
	assert_int_equal(cfg->log.level, LOG_LVL_INFO);
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->limits.header_bytes, 16 * 1024);
	assert_int_equal(cfg->limits.body_max, 10 * 1024 * 1024);
	assert_int_equal(cfg->limits.shutdown_timeout_ns, 30000000000ull);
	assert_int_equal(cfg->audit.durability, CFG_DURABILITY_BATCH);
	assert_int_equal(cfg->audit.batch_window_ns, 10000000ull);
	assert_int_equal(cfg->audit.on_full, CFG_ON_FULL_BLOCK);
	assert_int_equal(cfg->audit.on_write_error, CFG_ON_WRITE_ERROR_DENY);
	assert_int_equal(cfg->audit.query, CFG_AUDIT_QUERY_NAMES);
	assert_int_equal(cfg->audit.body_record_max, 1024);
	assert_string_equal(cfg->audit.dir, "/var/lib/custos/audit");
	assert_int_equal(cfg->egress.port, 3128);
	assert_false(cfg->egress.enabled);
	assert_string_equal(cfg->admin.socket, "/run/custos/admin.sock");
	assert_true(cfg->policy.reload_on_sighup);
	assert_int_equal(cfg->n_listeners, 0);
	config_free(cfg);

	cfg = parse_ok("version: 1\nlisteners: [{id: a, address: \"[::1]:80\"}]\n"
	               "limits: {body_max: 1MiB, timeouts: {shutdown: 0s}}\n"
	               "models: [{id: m, upstream: {url: \"http://LOCALHOST\"}}]\n"
	               "auth: {api_keys_file: /k}\n");
	assert_true(cfg->listeners[0].addr.loopback);
	assert_string_equal(cfg->listeners[0].addr.host, "::1");
	assert_int_equal(cfg->limits.body_max, 1024 * 1024);
	assert_int_equal(cfg->limits.shutdown_timeout_ns, 0);
	assert_string_equal(cfg->models[0].upstream.host, "localhost");
	assert_int_equal(cfg->models[0].upstream.port, 80);
	assert_string_equal(cfg->models[0].upstream.path, "/");
	assert_int_equal(cfg->models[0].upstream.read_timeout_ns,
	                 cfg->limits.upstream_read_timeout_ns);
	assert_int_equal(cfg->listeners[0].tls.n_alpn, 1);
	config_free(cfg);
}

static void test_unknown_key_position_and_hint(void **state)
{
	(void)state;
	diag_list d;
	const diag_item *it =
	        parse_fail("version: 1\naudit:\n  durabilty: sync\n", &d, "durabilty");
	assert_int_equal(it->line, 3);
	assert_int_equal(it->col, 3);
	assert_string_equal(it->file, "t.yaml");
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, "durability"));
	diag_free(&d);
	expect_error("version: 1\nlistners: []\n", "unknown key 'listners'");
}

static void test_required_and_types(void **state)
{
	(void)state;
	expect_error("log: {level: info}\n", "missing required key 'version'");
	expect_error("version: 2\n", "out of range");
	expect_error("version: 1\nworkers: many\n", "'workers'");
	expect_error("version: 1\nlog: {level: loud}\n", "not a valid value");
	expect_error("version: 1\nlog: [info]\n", "must be a mapping");
	expect_error("version: 1\nlisteners: {id: a}\n", "must be a list");
	expect_error("version: 1\nlisteners: [{address: \"127.0.0.1:1\"}]\n",
	             "missing required key 'id'");
	expect_error("version: 1\npolicy: {reload_on_sighup: yes}\n", "not a boolean");
	expect_error("version: 1\nlimits: {header_bytes: 1MiB}\n", "'header_bytes'");
	expect_error("version: 1\nlimits: {header_count: 100000}\n", "out of range");
	/* Upstream certificates are always verified: a switch claiming otherwise is refused. */
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"https://h/\", tls_verify: "
	             "false}}]\n",
	             "'tls_verify: false' is not supported");
	/* No per-probe timeout or probe interval exists: refused, never accepted and ignored. */
	expect_error(
	        "version: 1\nmodels: [{id: m, sandbox: {type: none, health: {interval: 5s}}}]\n",
	        "'health.interval' is not supported");
	expect_error(
	        "version: 1\nmodels: [{id: m, sandbox: {type: none, health: {timeout: 1s}}}]\n",
	        "'health.timeout' is not supported");
	/* The proxy's JSON reader nests 64 deep at most: more would be a setting not in force. */
	expect_error("version: 1\nlimits: {json_depth: 65}\n", "'json_depth': 65 is out of range");
	expect_error("version: 1\nlimits: {timeouts: {client_idle: 10 parsecs}}\n",
	             "'client_idle'");
	expect_error("version: 1\naudit: {batch_window: 5s}\n", "'batch_window'");
	expect_error("version: 1\npolicy: {file: \"\"}\n", "must not be empty");
	expect_error("version: 1\nlisteners: [{id: \"bad id!\", address: /s}]\n", "not a valid id");
	expect_error("", "empty");
	expect_error("- 1\n", "must be a mapping");
	expect_error("version: [1\n", "YAML syntax");
}

static void test_mtls(void **state)
{
	(void)state;
	diag_list d;
	custos_config *cfg =
	        parse_ok("version: 1\nauth: {api_keys_file: /k, mtls: {enabled: false}}\n");
	assert_false(cfg->auth.mtls.enabled);
	config_free(cfg);
	/* No global certificate field: the policy's matchers choose, so the key is refused with
	 * its position and the replacement, never accepted and ignored. */
	const diag_item *it = parse_fail("version: 1\nauth:\n  mtls:\n    identity: cn\n", &d,
	                                 "'auth.mtls.identity' is not supported");
	assert_int_equal(it->line, 4);
	assert_int_equal(it->col, 15);
	assert_non_null(strstr(it->hint, "cert_cn"));
	diag_free(&d);
}

static void test_all_errors_collected(void **state)
{
	(void)state;
	diag_list d;
	parse_fail("versio: 1\nlog: {level: loud, format: xml}\nworkers: -1\n"
	           "limits: {json_depth: 0}\nadmin: {socket_mode: \"0666\"}\n",
	           &d, "versio");
	assert_true(d.errors >= 6);
	diag_free(&d);
}

static void test_listener_rules(void **state)
{
	(void)state;
	diag_list d;
	const diag_item *it =
	        parse_fail("version: 1\nlisteners:\n  - id: pub\n    address: \"0.0.0.0:80\"\n", &d,
	                   "plain HTTP listener 'pub'");
	assert_int_equal(it->line, 4);
	diag_free(&d);
	custos_config *cfg = parse_ok("version: 1\nauth: {api_keys_file: /k}\nlisteners:\n"
	                              "  - {id: pub, address: \"0.0.0.0:80\", force_plain: true}\n"
	                              "  - {id: u, address: /run/c.sock}\n");
	assert_true(cfg->listeners[0].force_plain);
	config_free(cfg);
	cfg = parse_ok("version: 1\nlisteners:\n  - id: t\n    address: \"0.0.0.0:443\"\n"
	               "    tls: {cert: c, key: k, client_ca: ca, client_auth: required,"
	               " min_version: \"1.3\", alpn: [http/1.0, http/1.1]}\n");
	assert_int_equal(cfg->listeners[0].tls.min_version, CFG_TLS_1_3);
	assert_true(cfg->auth.mtls.enabled); /* client certs imply mTLS identity */
	assert_int_equal(cfg->listeners[0].tls.n_alpn, 2);
	assert_string_equal(cfg->listeners[0].tls.alpn[0], "http/1.0");
	config_free(cfg);
	cfg = parse_ok("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", "
	               "tls: {cert: c, key: k, alpn: [], ticket_key_rotation: 1s}}]\n");
	assert_int_equal(cfg->listeners[0].tls.n_alpn, 0); /* ALPN off */
	assert_int_equal(cfg->listeners[0].tls.ticket_rotation_ns, 1000000000ull);
	config_free(cfg);
	/* ALPN: only what the codec speaks, each once, at the entry's position. */
	it = parse_fail("version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n"
	                "    tls: {cert: c, key: k, alpn: [http/1.1, h2]}\n",
	                &d, "ALPN protocol 'h2' is not one custos can speak");
	assert_int_equal(it->line, 5);
	assert_int_equal(it->col, 45);
	assert_non_null(it->hint);
	diag_free(&d);
	expect_error("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", "
	             "tls: {cert: c, key: k, alpn: [h3]}}]\n",
	             "'h3' is not one custos can speak");
	expect_error("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", "
	             "tls: {cert: c, key: k, alpn: [HTTP/1.1]}}]\n",
	             "not one custos can speak"); /* ALPN ids are exact bytes */
	expect_error("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", "
	             "tls: {cert: c, key: k, alpn: [http/1.1, http/1.1]}}]\n",
	             "listed twice");
	expect_error("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", "
	             "tls: {cert: c, key: k, ticket_key_rotation: 500ms}}]\n",
	             "'ticket_key_rotation'");
	expect_error("version: 1\nlisteners: [{id: t, address: \"0.0.0.0:1\", tls: {cert: c}}]\n",
	             "missing required key 'key'");
	/* Positions: at the key that is wrong, not at its map or list item. */
	it = parse_fail("version: 1\nlisteners:\n  - id: t\n    address: \"0.0.0.0:1\"\n"
	                "    tls:\n      cert: c\n      key: k\n      client_auth: required\n",
	                &d, "client_auth 'required' needs client_ca");
	assert_int_equal(it->line, 8);
	assert_int_equal(it->col, 20);
	diag_free(&d);
	it = parse_fail("version: 1\nlisteners:\n  - id: a\n    address: /a\n"
	                "  - id: b\n    address: /a\n",
	                &d, "listener address '/a' is already used by 'a'");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 14);
	diag_free(&d);
	it = parse_fail("version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n"
	                "    tls: {cert: c, key: k, ticket_key_rotation: 8d}\n",
	                &d, "'ticket_key_rotation': '8d' is above the maximum of 7d");
	assert_int_equal(it->line, 5);
	diag_free(&d);
	expect_error("version: 1\nlisteners: [{id: t, address: \"0.0.0.0:1\", "
	             "tls: {cert: c, key: k, min_version: 1.0}}]\n",
	             "not a supported TLS version");
	expect_error("version: 1\nlisteners: [{id: a, address: \"127.0.0.1\"}]\n", "no port");
	expect_error("version: 1\nlisteners: [{id: a, address: \"127.0.0.1:0\"}]\n", "bad port");
	expect_error("version: 1\nlisteners: [{id: a, address: \"127.0.0.1:70000\"}]\n",
	             "bad port");
	expect_error("version: 1\nlisteners: [{id: a, address: \"::1:80\"}]\n", "bad address");
	expect_error("version: 1\nlisteners: [{id: a, address: \"[::1]80\"}]\n", "bad address");
	expect_error("version: 1\nlisteners: [{id: a, address: \"[nope]:80\"}]\n",
	             "not an IPv6 address");
	expect_error("version: 1\nlisteners: [{id: a, address: \":80\"}]\n", "no host");
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"http://u@h/\"}}]\n",
	             "bad character '@'");
	expect_error(
	        "version: 1\nlog: {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 0, "
	        "k: 1, l: 2, m: 3, n: 4, o: 5, p: 6, q: 7, r: 8, s: 9, t: 0, u: 1, v: 2, w: 3, "
	        "x: 4, y: 5, z: 6, aa: 1, ab: 2, ac: 3, ad: 4, ae: 5, af: 6, ag: 7, ah: 8, ai: "
	        "9, aj: 0, ak: 1, al: 2, am: 3, an: 4, ao: 5, ap: 6, aq: 7, ar: 8, as: 9, at: 0, "
	        "au: 1, av: 2, aw: 3, ax: 4, ay: 5, az: 6, ba: 1, bb: 2, bc: 3, bd: 4, be: 5, bf: "
	        "6, bg: 7, bh: 8, bi: 9, bj: 0, bk: 1, bl: 2, bm: 3}\n",
	        "the limit is 64");
	expect_error("version: 1\nlisteners: [{id: a, address: \"unix:rel\"}]\n", "absolute");
	expect_error("version: 1\nlisteners: [{id: a, address: /a}, {id: a, address: /b}]\n",
	             "duplicate listener id 'a'");
	expect_error("version: 1\nlisteners: [{id: a, address: /a}, {id: b, address: /a}]\n",
	             "already used");
}

/* TLS cipher strings are checked by OpenSSL at config check, at the value's position. */
static void test_listener_ciphers(void **state)
{
	(void)state;
	diag_list d;
	const char *head = "version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n"
	                   "    tls:\n      cert: c\n      key: k\n";
	char text[1024];

	snprintf(text, sizeof(text),
	         "%s      ciphers: \"NOPE-CIPHER\"\n      ciphersuites: TLS_BOGUS\n", head);
	const diag_item *it = parse_fail(text, &d, "ciphers 'NOPE-CIPHER' is not a cipher list");
	assert_int_equal(it->line, 8);
	assert_int_equal(it->col, 16);
	assert_non_null(it->hint);
	diag_free(&d);
	it = parse_fail(text, &d, "'TLS_BOGUS' is not a TLS 1.3 cipher suite");
	assert_int_equal(it->line, 9);
	assert_int_equal(it->col, 21);
	diag_free(&d);
	/* An unknown name beside known ones: OpenSSL would skip it silently. */
	snprintf(text, sizeof(text),
	         "%s      ciphers: \"ECDHE-RSA-AES128-GCM-SHA256:NOPE-CIPHER\"\n"
	         "      ciphersuites: \"TLS_AES_128_GCM_SHA256:TLS_BOGUS\"\n",
	         head);
	expect_error(text, "'NOPE-CIPHER' in ciphers matches no TLS 1.2 cipher suite");
	expect_error(text, "'TLS_BOGUS' is not a TLS 1.3 cipher suite");
	snprintf(text, sizeof(text), "%s      ciphers: TLS_AES_128_GCM_SHA256\n", head);
	expect_error(text, "selects no TLS 1.2 cipher suite"); /* a TLS 1.3 suite in ciphers */
	snprintf(text, sizeof(text), "%s      ciphers: \"HIGH:@SECLEVL=2\"\n", head);
	expect_error(text, "is not a cipher list OpenSSL accepts");
	snprintf(text, sizeof(text), "%s      ciphers: \"HIGH:@SECLEVEL=0\"\n", head);
	it = parse_fail(text, &d, "sets @SECLEVEL=0");
	assert_int_equal(it->line, 8);
	diag_free(&d);
	snprintf(text, sizeof(text), "%s      ciphers: \"HIGH:@SECLEVEL=1\"\n", head);
	config_free(parse_ok(text));
	snprintf(text, sizeof(text), "%s      ciphersuites: \"TLS_AES_128_GCM_SHA256::\"\n", head);
	expect_error(text, "has an empty entry");
	/* Exclusions of what this OpenSSL lacks (RC4, 3DES) and @ commands are fine. */
	snprintf(text, sizeof(text),
	         "%s      ciphers: \"HIGH:!aNULL:!MD5:!RC4:!3DES:+AES256:@STRENGTH\"\n"
	         "      ciphersuites: \"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256\"\n",
	         head);
	custos_config *cfg = parse_ok(text);
	assert_string_equal(cfg->listeners[0].tls.ciphersuites,
	                    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	config_free(cfg);
}

/* The Host sent upstream: upstream.host, else the URL's authority (server_name first), the
 * scheme's default port left out; a bad value is refused where it is. */
static void test_upstream_host(void **state)
{
	(void)state;
	custos_config *cfg = parse_ok(
	        "version: 1\nmodels:\n"
	        "  - {id: a, upstream: {url: \"http://10.0.0.5:8080/\"}}\n"
	        "  - {id: b, upstream: {url: \"https://api.example.com/\"}}\n"
	        "  - {id: c, upstream: {url: \"https://10.0.0.6:8443/\", server_name: "
	        "m.internal}}\n"
	        "  - {id: d, upstream: {url: \"http://[::1]:80/\"}}\n"
	        "  - {id: e, upstream: {url: \"unix:/run/m.sock\"}}\n"
	        "  - {id: f, upstream: {url: \"http://10.0.0.5:8080/\", host: "
	        "\"chat.example:9\"}}\n"
	        "  - {id: g, upstream: {url: \"http://10.0.0.5:80/\", host: \"[fe80::1]\"}}\n");
	static const char *const want[] = { "10.0.0.5:8080", "api.example.com", "m.internal:8443",
		                            "[::1]",         "localhost",       "chat.example:9",
		                            "[fe80::1]" };
	char h[300];
	assert_int_equal(cfg->n_models, CUSTOS_ARRAY_LEN(want));
	for (size_t i = 0; i < cfg->n_models; i++) {
		config_upstream_host(&cfg->models[i], h, sizeof(h));
		assert_string_equal(h, want[i]);
	}
	config_free(cfg);
	static const char *const bad[] = { "a b",  "x:0", "x:65536", "x:",  "x:1a",
		                           "[zz]", "a/b", "a@b",     ":80", "[]" };
	char text[512];
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		snprintf(text, sizeof(text),
		         "version: 1\nmodels:\n  - id: a\n    upstream:\n"
		         "      url: \"http://a:1/\"\n      host: \"%s\"\n",
		         bad[i]);
		diag_list d;
		const diag_item *it = parse_fail(text, &d, "is not a Host field value");
		assert_int_equal(it->line, 6);
		assert_int_equal(it->col, 13);
		diag_free(&d);
	}
}

#define ROUTE_MODELS                                                                               \
	"version: 1\nmodels:\n  - {id: chat, aliases: [gpt], upstream: {url: \"http://a:1\"}}\n"   \
	"  - {id: embed, upstream: {url: \"http://b:2\"}}\n"

static void test_routes(void **state)
{
	(void)state;
	diag_list d;
	custos_config *cfg =
	        parse_ok(ROUTE_MODELS "routes:\n"
	                              "  - {path: /v1/embeddings, model: embed}\n"
	                              "  - {path: /v1/audio, model: gpt}\n"
	                              "  - {path: \"/v2/x-y_z.~!$&'()*+,;=:@\", model: "
	                              "chat}\n");
	assert_int_equal(cfg->n_routes, 3);
	assert_string_equal(cfg->routes[0].path, "/v1/embeddings");
	assert_int_equal(cfg->routes[0].model_index, 1);
	assert_int_equal(cfg->routes[1].model_index, 0); /* by alias */
	config_free(cfg);
	/* Siblings sharing bytes but not a whole segment do not overlap. */
	cfg = parse_ok(ROUTE_MODELS "routes: [{path: /v1/embed, model: embed}, "
	                            "{path: /v1/embeddings, model: chat}]\n");
	config_free(cfg);

	/* Unknown model: at the model's position, with a suggestion. */
	const diag_item *it = parse_fail(ROUTE_MODELS "routes:\n  - path: /v1/embeddings\n"
	                                              "    model: embedd\n",
	                                 &d, "unknown model 'embedd'");
	assert_int_equal(it->line, 7);
	assert_int_equal(it->col, 12);
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, "'embed'"));
	diag_free(&d);
	/* Duplicate and overlapping prefixes: at the later entry's path, naming the first. */
	it = parse_fail(ROUTE_MODELS "routes:\n  - {path: /v1/embeddings, model: embed}\n"
	                             "  - {path: /v1/embeddings, model: chat}\n",
	                &d, "duplicate route path '/v1/embeddings': already routed (line 6)");
	assert_int_equal(it->line, 7);
	assert_int_equal(it->col, 12);
	diag_free(&d);
	it = parse_fail(ROUTE_MODELS "routes:\n  - {path: /v1/embeddings/x, model: embed}\n"
	                             "  - {path: /v1, model: chat}\n",
	                &d, "route path '/v1' overlaps '/v1/embeddings/x' (line 6)");
	assert_int_equal(it->line, 7);
	assert_non_null(it->hint);
	diag_free(&d);
	expect_error(ROUTE_MODELS "routes: [{path: /a, model: chat}, {path: /a/b, model: embed}]\n",
	             "overlaps");
	/* Bad prefixes. */
	it = parse_fail(ROUTE_MODELS "routes:\n  - {path: v1/embeddings, model: embed}\n", &d,
	                "starts with '/'");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 12);
	diag_free(&d);
	expect_error(ROUTE_MODELS "routes: [{path: /, model: chat}]\n", "'/' is not a route path");
	expect_error(ROUTE_MODELS "routes: [{path: /v1/, model: chat}]\n", "does not end with '/'");
	expect_error(ROUTE_MODELS "routes: [{path: /v1/%65mbed, model: chat}]\n",
	             "percent-encoding");
	expect_error(ROUTE_MODELS "routes: [{path: \"/v1?x=1\", model: chat}]\n", "'?' or '#'");
	expect_error(ROUTE_MODELS "routes: [{path: \"/v1/a b\", model: chat}]\n",
	             "not allowed in a URL path");
	expect_error(ROUTE_MODELS "routes: [{path: \"/v1/\\u00e9\", model: chat}]\n",
	             "not allowed in a URL path");
	expect_error(ROUTE_MODELS "routes: [{path: //v1, model: chat}]\n", "empty segment");
	expect_error(ROUTE_MODELS "routes: [{path: /v1/../admin, model: chat}]\n", "'..' segment");
	expect_error(ROUTE_MODELS "routes: [{path: /v1/./x, model: chat}]\n", "'..' segment");
	expect_error(ROUTE_MODELS "routes: [{path: \"\", model: chat}]\n", "must not be empty");
	expect_error(ROUTE_MODELS "routes: [{model: chat}]\n", "missing required key 'path'");
	expect_error(ROUTE_MODELS "routes: [{path: /v1/x}]\n", "missing required key 'model'");
	expect_error(ROUTE_MODELS "routes: [{path: /v1/x, model: chat, upstream: u}]\n",
	             "unknown key 'upstream'");
	expect_error(ROUTE_MODELS "routes: {path: /v1/x}\n", "must be a list");
	/* A model without its id (already an error) is no candidate for the hint (fuzz find). */
	expect_error("version: 1\nmodels: [{upstream: {url: \"http://a:1\"}}]\n"
	             "routes: [{path: /x, model: b}]\n",
	             "unknown model 'b'");
	char big[CFG_MAX_ROUTE_PATH + 200];
	int n = snprintf(big, sizeof(big), ROUTE_MODELS "routes: [{path: /");
	memset(big + n, 'a', CFG_MAX_ROUTE_PATH);
	snprintf(big + n + CFG_MAX_ROUTE_PATH, sizeof(big) - (size_t)n - CFG_MAX_ROUTE_PATH,
	         ", model: chat}]\n");
	expect_error(big, "too long");
}

static void test_admin_rules(void **state)
{
	(void)state;
	const char *tok = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
	char text[512];

	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tcp: {address: \"10.0.0.1:9090\", token_sha256: %s}}\n", tok);
	expect_error(text, "not loopback");
	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {force: true, tcp: {address: \"10.0.0.1:9090\", "
	         "token_sha256: %s}}\n",
	         tok);
	custos_config *cfg = parse_ok(text);
	assert_int_equal(cfg->admin.tcp.token_sha256[0], 0x2c);
	config_free(cfg);
	expect_error("version: 1\nadmin: {tcp: {address: \"127.0.0.1:9090\"}}\n",
	             "missing required key 'token_sha256'");
	expect_error("version: 1\nadmin: {tcp: {address: \"127.0.0.1:9090\", token_sha256: abc}}\n",
	             "SHA-256");
	expect_error("version: 1\nadmin: {socket_mode: \"0666\"}\n", "accessible by others");
	expect_error("version: 1\nadmin: {socket_mode: \"0899\"}\n", "bad socket_mode");
	expect_error("version: 1\nadmin: {socket: relative.sock}\n", "absolute path");
}

/* admin.tls: a non-loopback address needs no force with it; client_ca makes client
 * certificates required; it needs admin.tcp, a cert and a key, and takes no other key; a
 * reload may change its files, not turn it on or off. */
static void test_admin_tls(void **state)
{
	(void)state;
	const char *tok = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
	char text[512], text2[512];

	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tls: {cert: /etc/a.crt, key: /etc/a.key}, tcp: {address: "
	         "\"10.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	custos_config *cfg = parse_ok(text);
	assert_true(cfg->admin.tls.enabled);
	assert_false(cfg->admin.force);
	assert_int_equal(cfg->admin.tls.n_certs, 1);
	assert_string_equal(cfg->admin.tls.certs[0].cert, "/etc/a.crt");
	assert_string_equal(cfg->admin.tls.certs[0].key, "/etc/a.key");
	assert_null(cfg->admin.tls.client_ca);
	assert_int_equal(cfg->admin.tls.client_auth, CFG_CLIENT_AUTH_NONE);
	snprintf(text2, sizeof(text2),
	         "version: 1\nadmin: {tls: {cert: /etc/b.crt, key: /etc/a.key}, tcp: {address: "
	         "\"10.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	custos_config *next = parse_ok(text2);
	assert_int_equal(config_reload_check(cfg, next), CUSTOS_OK); /* another certificate */
	config_free(next);
	config_free(cfg);

	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tls: {cert: /etc/a.crt, key: /etc/a.key, client_ca: "
	         "/etc/ca.crt}, tcp: {address: \"127.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	cfg = parse_ok(text);
	assert_string_equal(cfg->admin.tls.client_ca, "/etc/ca.crt");
	assert_int_equal(cfg->admin.tls.client_auth, CFG_CLIENT_AUTH_REQUIRED);
	snprintf(text2, sizeof(text2),
	         "version: 1\nadmin: {tcp: {address: \"127.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	next = parse_ok(text2);
	assert_int_not_equal(config_reload_check(cfg, next), CUSTOS_OK); /* TLS turned off */
	assert_non_null(strstr(err_msg(), "admin.tls"));
	config_free(next);
	config_free(cfg);

	expect_error("version: 1\nadmin: {tls: {cert: /etc/a.crt, key: /etc/a.key}}\n",
	             "admin.tls needs admin.tcp");
	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tls: {cert: /etc/a.crt}, tcp: {address: \"127.0.0.1:9090\", "
	         "token_sha256: %s}}\n",
	         tok);
	expect_error(text, "missing required key 'key'");
	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tls: {cert: /etc/a.crt, key: /etc/a.key, min_version: "
	         "\"1.3\"}, tcp: {address: \"127.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	expect_error(text, "min_version");
	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tcp: {address: \"10.0.0.1:9090\", token_sha256: %s}}\n", tok);
	diag_list d;
	const diag_item *it = parse_fail(text, &d, "is not loopback");
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, "add an admin.tls block"));
	diag_free(&d);
}

static void test_proxy_section(void **state)
{
	(void)state;
	custos_config *cfg = parse_ok("version: 1\n");
	assert_null(cfg->proxy.user);
	assert_true(cfg->proxy.self_sandbox);
	config_free(cfg);
	cfg = parse_ok("version: 1\nproxy: {user: custos-proxy, self_sandbox: false}\n");
	assert_string_equal(cfg->proxy.user, "custos-proxy");
	assert_false(cfg->proxy.self_sandbox);
	config_free(cfg);
	expect_error("version: 1\nproxy: {user: \"\"}\n", "must not be empty");
	expect_error("version: 1\nproxy: {user: \"-x\"}\n", "proxy.user");
	expect_error("version: 1\nproxy: {user: \"root;x\"}\n", "proxy.user");
	expect_error("version: 1\nproxy: {user: nobody, sandbox: true}\n", "unknown key 'sandbox'");
	expect_error("version: 1\nproxy: {self_sandbox: yes}\n", "not a boolean");
}

static void test_models_and_profiles(void **state)
{
	(void)state;
	diag_list d;
	const diag_item *it =
	        parse_fail("version: 1\nsandbox_profiles: {basic: {}}\nmodels:\n"
	                   "  - id: m\n    sandbox: {profile: basik, command: [/x]}\n",
	                   &d, "unknown sandbox profile 'basik'");
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, "basic"));
	assert_int_equal(it->line, 5);
	diag_free(&d);
	custos_config *cfg =
	        parse_ok("version: 1\nsandbox_profiles: {basic: {}}\nmodels:\n"
	                 "  - id: m\n    sandbox: {profile: basic, command: [/x, -v]}\n");
	assert_int_equal(cfg->models[0].upstream.kind, CFG_UPSTREAM_SANDBOX);
	assert_int_equal(cfg->models[0].sandbox.n_command, 2);
	assert_int_equal(cfg->profiles[0].namespaces, CFG_NS_ALL);
	assert_true(cfg->profiles[0].landlock);
	config_free(cfg);
	expect_error("version: 1\nmodels: [{id: m}]\n", "has no upstream");
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"ftp://x\"}}]\n",
	             "unsupported upstream URL");
	/* a base path would be dropped (the client's path goes upstream as it is): refused */
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"http://a:1/v1\"}}]\n",
	             "has a path ('/v1'): a base path is not prepended");
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"https://a:1/x/\"}}]\n",
	             "has a path ('/x/')");
	cfg = parse_ok("version: 1\nmodels: [{id: m, upstream: {url: \"http://a:1/\"}}, {id: n, "
	               "upstream: {url: \"https://b:2\"}}]\n");
	config_free(cfg);
	expect_error("version: 1\nsandbox_profiles: {p: {}}\nmodels: [{id: m, sandbox: {profile: "
	             "p, command: [/x]}, upstream: {url: \"http://a:1\"}}]\n",
	             "not allowed with a sandbox");
	expect_error("version: 1\nsandbox_profiles: {p: {}}\n"
	             "models: [{id: m, sandbox: {profile: p}}]\n",
	             "missing required key 'command'");
	expect_error("version: 1\nsandbox_profiles: {p: {}}\n"
	             "models: [{id: m, sandbox: {profile: p, command: [rel]}}]\n",
	             "absolute path");
	expect_error("version: 1\nsandbox_profiles: {p: {}}\n"
	             "models: [{id: m, sandbox: {type: vm, profile: p}}]\n",
	             "no vm settings");
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"http://a\"}}, "
	             "{id: n, aliases: [m], upstream: {url: \"http://a\"}}]\n",
	             "already used by model 'm'");
	expect_error("version: 1\nsandbox_profiles: {p: {seccomp: {allow: [ptrace]}}}\n",
	             "cannot be allowed");
	/* The same list the sandbox's filter denies: calls only the sandbox used to know of. */
	expect_error("version: 1\nsandbox_profiles: {p: {seccomp: {allow: [kcmp]}}}\n",
	             "cannot be allowed");
	expect_error("version: 1\nsandbox_profiles: {p: {seccomp: {allow: [open_by_handle_at]}}}\n",
	             "cannot be allowed");
	expect_error("version: 1\nsandbox_profiles: {p: {seccomp: {allow: [\"open at\"]}}}\n",
	             "not a system call name");
	expect_error("version: 1\nsandbox_profiles: {p: {namespaces: [user, pid, mount]}}\n",
	             "must include net");
	expect_error("version: 1\nsandbox_profiles: {p: {devices: [/etc/shadow]}}\n",
	             "not under /dev/");
	expect_error("version: 1\nsandbox_profiles: {p: {limits: {cpu: \"0.001\"}}}\n",
	             "bad cpu limit");
	expect_error("version: 1\nsandbox_profiles: {p: {limits: {cpu: \"1.2.3\"}}}\n",
	             "bad cpu limit");
	expect_error("version: 1\nsandbox_profiles: {p: {scratch: {type: dir}}}\n",
	             "missing required key 'path'");
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {vcpus: 2}}}\n", "nothing to boot");
	expect_error(
	        "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, hostdev: [\"01:00.0\"]}}}\n",
	        "not a PCI address");
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {disk: /d, vcpus: 2, "
	             "cpu_pinning: [1]}}}\n",
	             "cpu_pinning lists 1");
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {disk: /d, type: xen}}}\n", "xen");
	expect_error(
	        "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, channel_socket: rel.sock}}}\n",
	        "absolute");
	custos_config *vc = parse_ok(
	        "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, type: qemu, "
	        "libvirt_uri: \"qemu+unix:///system?socket=/s\", channel_socket: /c.sock}}}\n");
	assert_int_equal(vc->profiles[0].vm.domain_type, CFG_VM_QEMU);
	assert_string_equal(vc->profiles[0].vm.libvirt_uri, "qemu+unix:///system?socket=/s");
	assert_string_equal(vc->profiles[0].vm.channel_socket, "/c.sock");
	assert_int_equal(vc->profiles[0].vm.channel, CFG_VM_AUTO); /* the default */
	config_free(vc);
	vc = parse_ok("version: 1\nsandbox_profiles: {p: {vm: {disk: /d, channel: vsock, "
	              "vsock_cid: 42}}, q: {vm: {disk: /d, channel: auto}}}\n");
	assert_int_equal(vc->profiles[0].vm.channel, CFG_VM_VSOCK);
	assert_int_equal(vc->profiles[0].vm.vsock_cid, 42);
	assert_int_equal(vc->profiles[1].vm.channel, CFG_VM_AUTO);
	config_free(vc);
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {disk: /d, channel: vhost}}}\n",
	             "vhost");
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {disk: /d, vsock_cid: 2}}}\n",
	             "vsock_cid");
	expect_error("version: 1\nsandbox_profiles: {p: {}, p: {}}\n", "duplicate key 'p'");
	expect_error("version: 1\nmodels: [{id: m, sandbox: {type: process, profile: p, command: "
	             "[/x], restart: {initial: 10s, max: 1s}}}]\nsandbox_profiles: {p: {}}\n",
	             "below restart.initial");
}

static void test_data_egress_audit_auth(void **state)
{
	(void)state;
	expect_error("version: 1\ndata_sources: [{id: w, url: \"https://w/\", classification: "
	             "internal, intercept: true}]\n",
	             "egress.ca_dir is not set");
	expect_error(
	        "version: 1\negress: {ca_dir: /ca}\ndata_sources: [{id: w, url: \"http://w/\", "
	        "classification: internal, intercept: true}]\n",
	        "https:// sources only");
	expect_error("version: 1\ndata_sources: [{id: w, url: \"https://w/\"}]\n",
	             "missing required key 'classification'");
	expect_error("version: 1\ndata_sources: [{id: w, url: \"https://w/\", classification: "
	             "secret}]\n",
	             "not a valid value");
	expect_error("version: 1\ndata_sources: [{id: w, url: \"https://w/a?b\", classification: "
	             "public}, {id: w, url: \"https://v/\", classification: public}]\n",
	             "duplicate data source id 'w'");
	expect_error("version: 1\negress: {dns: {servers: [resolver.local]}}\n",
	             "not an IP address");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: http, format: cef, http: {url: "
	             "\"https://s/\"}}]}\n",
	             "http sinks send json");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: syslog}]}\n",
	             "missing required key 'address'");
	expect_error("version: 1\naudit: {sinks: [{id: s, address: \"h:1\"}]}\n",
	             "missing required key 'type'");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: http, http: {url: "
	             "\"https://s/\"}}]}\n",
	             "http.url must name the HEC endpoint");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: http, http: {url: "
	             "\"https://s/services/collector/event?x=1\"}}]}\n",
	             "without query or fragment");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: http, tls: {ca: /ca.pem}, http: "
	             "{url: \"http://s/services/collector/event\"}}]}\n",
	             "a tls: block needs an https:// http.url");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: http, http: {url: "
	             "\"https://:8088/services/collector/event\"}}]}\n",
	             "has no host");
	expect_error("version: 1\naudit: {sinks: [{id: a/b, type: syslog, address: \"h:1\"}]}\n",
	             "no '/'");
	expect_error("version: 1\naudit: {rotate: {size: 1KiB}}\n", "at least 1MiB");
	expect_error("version: 1\nauth: {jwt: {jwks_file: /j, audiences: [a]}}\n",
	             "missing required key 'issuers'");
	expect_error("version: 1\nauth: {jwt: {jwks_file: /j, issuers: [i], audiences: [a], "
	             "algorithms: [HS256]}}\n",
	             "not a valid value");
	expect_error("version: 1\nauth: {api_keys: [{id: a, sha256: \"zz\"}]}\n", "SHA-256");

	custos_config *cfg =
	        parse_ok("version: 1\negress: {ca_dir: /ca, dns: {servers: [\"::1\", "
	                 "10.0.0.53]}}\ndata_sources: [{id: w, url: \"https://W:8443\","
	                 " classification: public, intercept: true}]\n"
	                 "audit: {durability: sync, on_full: deny, sinks: [{id: s, "
	                 "type: syslog, format: leef, address: \"127.0.0.1:514\"}]}\n"
	                 "auth: {jwt: {jwks_file: /j, issuers: [i], audiences: [a], "
	                 "algorithms: [EdDSA]}}\n");
	assert_true(cfg->egress.enabled);
	assert_int_equal(cfg->egress.n_dns_servers, 2);
	assert_string_equal(cfg->data_sources[0].host, "w");
	assert_string_equal(cfg->data_sources[0].path_prefix, "/");
	assert_int_equal(cfg->audit.durability, CFG_DURABILITY_SYNC);
	assert_int_equal(cfg->audit.sinks[0].format, CFG_FORMAT_LEEF);
	assert_int_equal(cfg->auth.jwt.algorithms, CFG_JWT_EDDSA);
	config_free(cfg);

	/* The HEC URL is taken apart for the shipper: host, port (scheme default), path. */
	cfg = parse_ok("version: 1\naudit: {sinks: [{id: a, type: http, http: {url: "
	               "\"https://Splunk.Example/services/collector/event\"}}, {id: b, type: "
	               "http, http: {url: \"http://[::1]:8088/hec/services/collector\", ack: "
	               "false}}]}\n");
	assert_true(cfg->audit.sinks[0].http.https);
	assert_string_equal(cfg->audit.sinks[0].http.host, "splunk.example");
	assert_int_equal(cfg->audit.sinks[0].http.port, 443);
	assert_string_equal(cfg->audit.sinks[0].http.path, "/services/collector/event");
	assert_true(cfg->audit.sinks[0].http.ack);
	assert_false(cfg->audit.sinks[1].http.https);
	assert_string_equal(cfg->audit.sinks[1].http.host, "::1");
	assert_int_equal(cfg->audit.sinks[1].http.port, 8088);
	assert_string_equal(cfg->audit.sinks[1].http.path, "/hec/services/collector");
	assert_false(cfg->audit.sinks[1].http.ack);
	assert_int_equal(cfg->egress.dns_timeout_ns, 2000000000ull);
	config_free(cfg);

	/* DNS servers with ports, and a timeout per try */
	expect_error("version: 1\negress: {dns: {servers: [\"127.0.0.1:0\"]}}\n",
	             "not an IP address");
	expect_error("version: 1\negress: {dns: {servers: [\"127.0.0.1:65536\"]}}\n",
	             "not an IP address");
	expect_error("version: 1\negress: {dns: {servers: [\"[::1]\"]}}\n", "not an IP address");
	expect_error("version: 1\negress: {dns: {servers: [\"1.2.3.4\"], timeout: 1us}}\n",
	             "at least");
	cfg = parse_ok("version: 1\negress: {dns: {servers: [\"127.0.0.1:5353\", \"[::1]:53\", "
	               "\"2001:db8::53\"], timeout: 300ms}}\n");
	assert_int_equal(cfg->egress.n_dns_servers, 3);
	assert_int_equal(cfg->egress.dns_timeout_ns, 300000000ull);
	config_free(cfg);

	/* egress.inspect: one held body (1KiB - 32MiB, default 8MiB) and all of them together
	 * (default 128MiB, never less than what one body of max_body needs), errors at line:col */
	cfg = parse_ok("version: 1\n");
	assert_int_equal(cfg->egress.inspect_max_body, 8u << 20);
	assert_int_equal(cfg->egress.inspect_max_held, 128ull << 20);
	/* the default max_held holds one multipart body at the default max_body */
	assert_true(cfg->egress.inspect_max_held >= 13ull * cfg->egress.inspect_max_body + 16393u);
	config_free(cfg);
	/* max_held at its minimum for max_body 64KiB: 13 x 65536 + 16393 (a multipart body: the
	 * body n + 1, four working copies of 2n + 4097, the offset map 4n + 4) */
	cfg = parse_ok("version: 1\negress: {inspect: {max_body: 64KiB, max_held: 868361}}\n");
	assert_int_equal(cfg->egress.inspect_max_body, 64u << 10);
	assert_int_equal(cfg->egress.inspect_max_held, 868361u);
	config_free(cfg);
	cfg = parse_ok("version: 1\negress: {inspect: {max_body: 9MiB}}\n"); /* 128MiB fits */
	assert_int_equal(cfg->egress.inspect_max_held, 128ull << 20);
	config_free(cfg);
	expect_error("version: 1\negress: {inspect: {max_body: 33MiB}}\n", "max_body");
	expect_error("version: 1\negress: {inspect: {max_body: 100}}\n", "max_body");
	expect_error("version: 1\negress: {inspect: {max_body: lots}}\n", "max_body");
	expect_error("version: 1\negress: {inspect: {max_bdy: 1MiB}}\n", "max_bdy");
	diag_list d;
	const diag_item *it =
	        parse_fail("version: 1\negress:\n  inspect:\n    max_body: 1MiB\n"
	                   "    max_held: 512KiB\n",
	                   &d, "is less than 13 x 'egress.inspect.max_body' (1048576 bytes)");
	assert_int_equal(it->line, 5);
	assert_int_equal(it->col, 15);
	diag_free(&d);
	/* what the old check accepted (5 x max_body + 8195, one JSON body) is refused: a form or
	 * multipart body at max_body could never be inspected. At max_held, the error naming both
	 * settings, what needs it and the minimum */
	it = parse_fail("version: 1\negress:\n  inspect:\n    max_body: 64KiB\n"
	                "    max_held: 335875\n",
	                &d,
	                "less than 13 x 'egress.inspect.max_body' (65536 bytes) + 16393 bytes = "
	                "868361 bytes, what one body of max_body bytes needs while it is "
	                "inspected (a multipart one");
	assert_int_equal(it->line, 5);
	assert_int_equal(it->col, 15);
	assert_non_null(strstr(it->message, "'egress.inspect.max_held' (335875 bytes)"));
	assert_non_null(strstr(it->message, "raise max_held to at least 868361"));
	diag_free(&d);
	/* one byte short of the minimum */
	it = parse_fail("version: 1\negress:\n  inspect:\n    max_body: 64KiB\n"
	                "    max_held: 868360\n",
	                &d, "= 868361 bytes");
	assert_int_equal(it->line, 5);
	diag_free(&d);
	/* a max_body the default max_held (128MiB) cannot hold: refused at max_body */
	it = parse_fail("version: 1\negress:\n  inspect:\n    max_body: 10MiB\n", &d,
	                "'egress.inspect.max_held' (134217728 bytes) is less than 13 x");
	assert_int_equal(it->line, 4);
	assert_int_equal(it->col, 15);
	diag_free(&d);

	/* audit.query: names (default), full, none; anything else refused where it is written */
	it = parse_fail("version: 1\naudit:\n  query: values\n", &d, "not a valid value");
	assert_int_equal(it->line, 3);
	assert_int_equal(it->col, 10);
	diag_free(&d);
	static const char *const queries[] = { "names", "full", "none" };
	for (int i = 0; i < 3; i++) {
		char q[64];
		snprintf(q, sizeof(q), "version: 1\naudit: {query: %s}\n", queries[i]);
		diag_init(&d);
		assert_int_equal(config_parse("t.yaml", q, strlen(q), &cfg, &d), CUSTOS_OK);
		assert_int_equal((int)cfg->audit.query, i);
		config_free(cfg);
		diag_free(&d);
	}

	/* audit.body_record_max: 1 - 1536 bytes (two bodies and the rest of an event fit the
	 * trail's 8192-byte record); more, or 0, refused where it is written */
	it = parse_fail("version: 1\naudit:\n  body_record_max: 1537\n", &d,
	                "'body_record_max': 1537 bytes per body cannot fit an audit event (at most "
	                "1536)");
	assert_int_equal(it->line, 3);
	assert_int_equal(it->col, 20);
	diag_free(&d);
	it = parse_fail("version: 1\naudit: {body_record_max: 64KiB}\n", &d, "8192-byte record");
	assert_int_equal(it->line, 2);
	diag_free(&d);
	it = parse_fail("version: 1\naudit: {body_record_max: 0}\n", &d, "at least 1 bytes");
	diag_free(&d);
	it = parse_fail("version: 1\naudit: {body_record_max: lots}\n", &d, "body_record_max");
	diag_free(&d);
	static const char *const caps[] = { "1", "512", "1KiB", "1536" };
	static const uint64_t capv[] = { 1, 512, 1024, 1536 };
	for (int i = 0; i < 4; i++) {
		char q[64];
		snprintf(q, sizeof(q), "version: 1\naudit: {body_record_max: %s}\n", caps[i]);
		diag_init(&d);
		assert_int_equal(config_parse("t.yaml", q, strlen(q), &cfg, &d), CUSTOS_OK);
		assert_int_equal(cfg->audit.body_record_max, capv[i]);
		config_free(cfg);
		diag_free(&d);
	}

	/* A warning, not an error: continue on write errors is allowed but said out loud. */
	diag_init(&d);
	const char *t = "version: 1\naudit: {on_write_error: continue}\n";
	assert_int_equal(config_parse("t.yaml", t, strlen(t), &cfg, &d), CUSTOS_OK);
	assert_int_equal(d.warnings, 1);
	config_free(cfg);
	diag_free(&d);
	/* So are a sink that does not verify its server and a HEC token over plain http. */
	diag_init(&d);
	t = "version: 1\naudit: {sinks: [{id: s, type: syslog, address: \"h:6514\", tls: "
	    "{verify: false}}, {id: h, type: http, http: {url: "
	    "\"http://h/services/collector/event\", token_file: /t}}]}\n";
	assert_int_equal(config_parse("t.yaml", t, strlen(t), &cfg, &d), CUSTOS_OK);
	assert_int_equal(d.warnings, 2);
	config_free(cfg);
	diag_free(&d);
	/* No way to authenticate: an auth.mtls block without a listener asking for certificates
	 * authenticates nobody, and is warned about like no auth at all. */
	static const char *const no_auth[] = {
		"version: 1\nlisteners: [{id: a, address: \"127.0.0.1:1\"}]\nmodels: [{id: m, "
		"upstream: {url: \"http://127.0.0.1:2/\"}}]\n",
		"version: 1\nlisteners: [{id: a, address: \"127.0.0.1:1\"}]\nmodels: [{id: m, "
		"upstream: {url: \"http://127.0.0.1:2/\"}}]\nauth: {mtls: {enabled: true}}\n",
	};
	for (size_t i = 0; i < sizeof(no_auth) / sizeof(no_auth[0]); i++) {
		diag_init(&d);
		assert_int_equal(config_parse("t.yaml", no_auth[i], strlen(no_auth[i]), &cfg, &d),
		                 CUSTOS_OK);
		assert_int_equal(d.warnings, 1);
		assert_non_null(strstr(d.items[0].message, "no authentication method"));
		config_free(cfg);
		diag_free(&d);
	}
}

static void test_limits_and_file_mode(void **state)
{
	(void)state;
	custos_config *cfg = NULL;
	diag_list d;
	char path[] = "/tmp/custos-test-config-XXXXXX";

	diag_init(&d);
	assert_int_equal(
	        config_parse("big", "version: 1\n", (size_t)CFG_MAX_FILE_BYTES + 1, &cfg, &d),
	        CUSTOS_ERR_LIMIT);
	assert_null(cfg);
	diag_free(&d);

	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "version: 1\n", 11), 11);
	close(fd);
	assert_int_equal(chmod(path, 0664), 0);
	diag_init(&d);
	assert_int_equal(config_load(path, &cfg, &d), CUSTOS_ERR_PERM);
	assert_null(cfg);
	assert_non_null(strstr(d.items[0].message, "writable by group or others"));
	diag_free(&d);
	assert_int_equal(chmod(path, 0644), 0);
	diag_init(&d);
	assert_int_equal(config_load(path, &cfg, &d), CUSTOS_OK);
	/* The digest of the bytes read (a reload's proxy and supervisor compare it):
	 * printf 'version: 1\n' | sha256sum */
	assert_string_equal(cfg->source_sha256,
	                    "09bfcc6a14b83e2192b8673677725c84883ee9cd0c70e45c9ec09daa8f2b2847");
	config_free(cfg);
	diag_free(&d);
	unlink(path);
	diag_init(&d);
	assert_int_not_equal(config_load("/nonexistent/custos.yaml", &cfg, &d), CUSTOS_OK);
	assert_true(d.errors > 0);
	diag_free(&d);
	config_free(NULL);
}

/* A reload's config against the running one: what `up` reads at start only is refused, naming
 * the setting; what a reload applies passes. Each case edits one thing of a full config. */
static const char reload_base[] =
        "version: 1\n"
        "log: {level: info, format: json}\n"
        "workers: 2\n"
        "limits: {body_max: 1MiB, timeouts: {shutdown: 5s, upstream_read: 10s}}\n"
        "listeners: [{id: l, address: \"127.0.0.1:8080\"}]\n"
        "auth: {api_keys: [{id: a, sha256: "
        "\"0000000000000000000000000000000000000000000000000000000000000000\"}]}\n"
        "sandbox_profiles: {p: {limits: {memory: 1GiB}, binds: [{src: /data}]}, q: {}}\n"
        "models:\n"
        "  - {id: plain, upstream: {url: \"http://127.0.0.1:9000\"}}\n"
        "  - {id: boxed, sandbox: {profile: p, command: [/srv/model, --port, \"8000\"]}}\n"
        "routes: [{path: /v1/embeddings, model: plain}]\n"
        "data_sources: [{id: hr, url: \"https://hr.example/api\", classification: "
        "confidential}]\n"
        "egress: {port: 3128}\n"
        "audit: {dir: /var/lib/custos/audit, durability: batch, sinks: [{id: siem, type: "
        "syslog, address: \"127.0.0.1:6514\"}]}\n"
        "admin: {socket: /run/custos/admin.sock, max_body: 1MiB}\n"
        "policy: {file: /etc/custos/policy.yaml}\n"
        "proxy: {user: custos}\n";

/* reload_base with its first `from` replaced by `to` (the caller frees). */
static char *reload_edit(const char *from, const char *to)
{
	const char *at = strstr(reload_base, from);
	if (at == NULL)
		fail_msg("'%s' is not in the base config", from);
	size_t pre = (size_t)(at - reload_base), n = strlen(reload_base) + strlen(to) + 1;
	char *out = malloc(n);
	assert_non_null(out);
	snprintf(out, n, "%.*s%s%s", (int)pre, reload_base, to, at + strlen(from));
	return out;
}

static void test_reload_check(void **state)
{
	(void)state;
	static const struct {
		const char *from, *to, *named; /* named NULL: the reload applies it */
	} cases[] = {
		{ "workers: 2", "workers: 4", "workers (2 -> 4)" },
		{ "workers: 2", "workers: 0", "workers (2 -> 0)" },
		{ "level: info", "level: debug", "log.level (info -> debug)" },
		{ "format: json}", "format: text}", "log.format (json -> text)" },
		{ "format: json}", "format: json, file: /var/log/custos/custos.log}", "log.file" },
		{ "shutdown: 5s", "shutdown: 60s", "limits.timeouts.shutdown (5s -> 1m)" },
		/* A process-sandboxed model that stays with other settings is replaced (its new
		 * sandbox started beside the old one: docs/SANDBOX.md, "Reload"). */
		{ "memory: 1GiB", "memory: 2GiB", NULL },
		{ "src: /data}", "src: /data, rw: true}", NULL },
		{ "profile: p,", "profile: q,", NULL },
		{ "--port, \"8000\"", "--port, \"8001\"", NULL },
		/* Egress is enabled in the base: a process-sandboxed model still comes and goes (the
		 * supervisor makes its egress listener, as at start). */
		{ "  - {id: boxed", "  - {id: boxed2", NULL },
		{ "\"https://hr.example/api\"", "\"https://hr.example/v2\"",
		  "data_sources[0] (hr).url" },
		{ "classification: confidential}]",
		  "classification: internal}, {id: w, url: "
		  "\"https://w.example/\", classification: public}]",
		  "data_sources (1 -> 2" },
		{ "port: 3128", "port: 3129", "egress.port (3128 -> 3129)" },
		{ "dir: /var/lib/custos/audit", "dir: /srv/audit", "audit.dir" },
		{ "durability: batch", "durability: sync", "audit.durability" },
		{ "durability: batch", "durability: batch, query: full", "audit.query" },
		{ "durability: batch", "durability: batch, body_record_max: 512",
		  "audit.body_record_max" },
		{ "address: \"127.0.0.1:6514\"", "address: \"127.0.0.1:6515\"",
		  "audit.sinks[0] (siem).address" },
		{ "sinks: [{id: siem, type: syslog, address: \"127.0.0.1:6514\"}]", "sinks: []",
		  "audit.sinks (1 -> 0 sinks)" },
		{ "socket: /run/custos/admin.sock", "socket: /run/custos/a.sock", "admin.socket" },
		{ "max_body: 1MiB}\npolicy", "max_body: 2MiB}\npolicy", "admin.max_body" },
		{ "file: /etc/custos/policy.yaml}",
		  "file: /etc/custos/policy.yaml, "
		  "reload_on_sighup: false}",
		  "policy.reload_on_sighup" },
		{ "user: custos", "user: nobody", "proxy.user (custos -> nobody)" },
		{ "user: custos", "user: custos, self_sandbox: false", "proxy.self_sandbox" },
		/* Applied by a reload: limits, auth, plain models, routes, the policy file. */
		{ "body_max: 1MiB", "body_max: 2MiB", NULL },
		{ "upstream_read: 10s", "upstream_read: 20s", NULL },
		{ "\"0000000000000000000000000000000000000000000000000000000000000000\"",
		  "\"1111111111111111111111111111111111111111111111111111111111111111\"", NULL },
		{ "http://127.0.0.1:9000", "http://127.0.0.1:9001", NULL },
		{ "path: /v1/embeddings", "path: /v1/audio", NULL },
		{ "file: /etc/custos/policy.yaml", "file: /etc/custos/policy2.yaml", NULL },
		{ "q: {}", "q: {limits: {pids: 7}}", NULL }, /* a profile no model uses */
	};
	custos_config *running = parse_ok(reload_base);
	custos_config *same = parse_ok(reload_base);
	assert_int_equal(config_reload_check(running, same), CUSTOS_OK);
	config_free(same);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = reload_edit(cases[i].from, cases[i].to);
		custos_config *next = parse_ok(text);
		custos_err e = config_reload_check(running, next);
		if (cases[i].named == NULL) {
			if (e != CUSTOS_OK)
				fail_msg("case %zu refused: %s", i, err_msg());
		} else {
			if (e == CUSTOS_OK)
				fail_msg("case %zu (%s) not refused", i, cases[i].named);
			if (strstr(err_msg(), cases[i].named) == NULL ||
			    strstr(err_msg(), "restart custos") == NULL)
				fail_msg("case %zu: '%s' does not name %s", i, err_msg(),
				         cases[i].named);
		}
		config_free(next);
		free(text);
	}
	config_free(running);
}

/* text with its first `from` replaced by `to` (the caller frees). */
static char *text_edit(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	if (at == NULL)
		fail_msg("'%s' is not in the config", from);
	size_t pre = (size_t)(at - text), n = strlen(text) + strlen(to) + 1;
	char *out = malloc(n);
	assert_non_null(out);
	snprintf(out, n, "%.*s%s%s", (int)pre, text, to, at + strlen(from));
	return out;
}

/* Every key of the sections docs/CONFIG.md "What a reload changes" lists as read at start only
 * (workers, log, limits.timeouts.shutdown, data_sources, egress, audit, admin,
 * policy.reload_on_sighup, proxy): a change of it refuses the reload, naming it; admin.tls's
 * files and policy.file are applied. The table must cover every key config_keys lists under
 * those sections, so a key added there without its comparison in core/config_reload.c (a
 * change a reload would silently drop) fails here. */
static const char start_only_base[] =
        "version: 1\n"
        "workers: 2\n"
        "log: {level: info, format: json}\n"
        "limits: {timeouts: {shutdown: 5s}}\n"
        "data_sources:\n"
        "  - {id: s, url: \"https://s.example/\", classification: internal, intercept: true, "
        "ca_file: /c/ca, crl_file: /c/crl, cert: /c/crt, key: /c/key, max_response: 1MiB, "
        "timeout: 7s}\n"
        "  - {id: u, url: \"https://u.example/\", classification: public}\n"
        "egress: {port: 3128, ca_dir: /c/egress, leaf_lifetime: 24h, max_response: 100MiB, "
        "timeouts: {connect: 5s, read: 60s, idle: 60s}, max_connections_per_sandbox: 64, "
        "dns: {servers: [10.0.0.53], timeout: 2s}, inspect: {max_body: 8MiB, max_held: 128MiB}}\n"
        "audit: {dir: /a, durability: batch, batch_window: 10ms, queue_size: 65536, "
        "on_full: block, rotate: {size: 256MiB, interval: 24h}, "
        "checkpoint: {every_events: 1000, every_interval: 60s}, signing_key: /k/a.key, "
        "public_key: /k/a.pub, on_write_error: deny, query: names, body_record_max: 1KiB,\n"
        "  sinks: [{id: t, type: syslog, format: rfc5424, address: \"127.0.0.1:6514\", "
        "tls: {ca: /t/ca, crl: /t/crl, cert: /t/c, key: /t/k, verify: true, server_name: siem}, "
        "retry: {initial: 500ms, max: 60s}},\n"
        "    {id: h, type: http, tls: {verify: true}, http: {url: "
        "\"https://h.example/services/collector/event\", token_file: /t/tok, ack: true}}]}\n"
        "admin: {enabled: true, socket: /run/custos/admin.sock, socket_mode: \"0660\", "
        "allowed_uids: [0], max_body: 1MiB, force: false,\n"
        "  tcp: {address: \"127.0.0.1:9090\", token_sha256: "
        "\"0000000000000000000000000000000000000000000000000000000000000000\"},\n"
        "  tls: {cert: /a/c, key: /a/k, ocsp: /a/o, client_ca: /a/ca, client_crl: /a/crl}}\n"
        "policy: {file: /etc/custos/policy.yaml, reload_on_sighup: true}\n"
        "proxy: {user: custos, self_sandbox: true}\n";

static const struct {
	const char *key, *from, *to, *named; /* named NULL: the reload applies it */
} start_only[] = {
	{ "workers", "workers: 2", "workers: 3", "workers (2 -> 3)" },
	{ "log.level", "level: info", "level: warn", "log.level" },
	{ "log.format", "format: json}", "format: text}", "log.format" },
	{ "log.file", "format: json}", "format: json, file: /var/log/c.log}", "log.file" },
	{ "limits.timeouts.shutdown", "shutdown: 5s", "shutdown: 6s", "limits.timeouts.shutdown" },
	{ "data_sources[].id", "{id: s,", "{id: s2,", "(s).id" },
	{ "data_sources[].url", "https://s.example/", "https://s.example/v2/", "(s).url" },
	{ "data_sources[].classification", "classification: internal", "classification: restricted",
	  "(s).classification" },
	{ "data_sources[].intercept", "classification: public}",
	  "classification: public, intercept: true}", "(u).intercept" },
	{ "data_sources[].allow_private_addresses", "classification: public}",
	  "classification: public, allow_private_addresses: true}", "(u).allow_private_addresses" },
	{ "data_sources[].ca_file", "/c/ca", "/c/ca2", "(s).ca_file" },
	{ "data_sources[].crl_file", "/c/crl", "/c/crl2", "(s).crl_file" },
	{ "data_sources[].cert", "/c/crt", "/c/crt2", "(s).cert" },
	{ "data_sources[].key", "/c/key", "/c/key2", "(s).key" },
	{ "data_sources[].max_response", "max_response: 1MiB", "max_response: 2MiB",
	  "(s).max_response" },
	{ "data_sources[].timeout", "timeout: 7s", "timeout: 8s", "(s).timeout" },
	{ "egress.enabled", "egress: {port", "egress: {enabled: false, port", "egress.enabled" },
	{ "egress.port", "port: 3128", "port: 3129", "egress.port" },
	{ "egress.ca_dir", "/c/egress", "/c/egress2", "egress.ca_dir" },
	{ "egress.leaf_lifetime", "leaf_lifetime: 24h", "leaf_lifetime: 12h",
	  "egress.leaf_lifetime" },
	{ "egress.max_response", "max_response: 100MiB", "max_response: 99MiB",
	  "egress.max_response" },
	{ "egress.timeouts.connect", "connect: 5s", "connect: 4s", "egress.timeouts.connect" },
	{ "egress.timeouts.read", "read: 60s", "read: 61s", "egress.timeouts.read" },
	{ "egress.timeouts.idle", "idle: 60s", "idle: 59s", "egress.timeouts.idle" },
	{ "egress.max_connections_per_sandbox", "sandbox: 64", "sandbox: 65",
	  "egress.max_connections_per_sandbox" },
	{ "egress.dns.servers", "10.0.0.53", "10.0.0.54", "egress.dns" },
	{ "egress.dns.timeout", "timeout: 2s", "timeout: 3s", "egress.dns.timeout" },
	{ "egress.inspect.max_body", "max_body: 8MiB", "max_body: 4MiB",
	  "egress.inspect.max_body" },
	{ "egress.inspect.max_held", "max_held: 128MiB", "max_held: 256MiB",
	  "egress.inspect.max_held" },
	{ "audit.dir", "dir: /a,", "dir: /b,", "audit.dir" },
	{ "audit.durability", "durability: batch", "durability: sync", "audit.durability" },
	{ "audit.batch_window", "batch_window: 10ms", "batch_window: 20ms", "audit.batch_window" },
	{ "audit.queue_size", "queue_size: 65536", "queue_size: 1024", "audit.queue_size" },
	{ "audit.on_full", "on_full: block", "on_full: deny", "audit.on_full" },
	{ "audit.rotate.size", "size: 256MiB", "size: 128MiB", "audit.rotate.size" },
	{ "audit.rotate.interval", "interval: 24h", "interval: 12h", "audit.rotate.interval" },
	{ "audit.checkpoint.every_events", "every_events: 1000", "every_events: 2000",
	  "audit.checkpoint.every_events" },
	{ "audit.checkpoint.every_interval", "every_interval: 60s", "every_interval: 30s",
	  "audit.checkpoint.every_interval" },
	{ "audit.signing_key", "/k/a.key", "/k/b.key", "audit.signing_key" },
	{ "audit.public_key", "/k/a.pub", "/k/b.pub", "audit.public_key" },
	{ "audit.on_write_error", "on_write_error: deny", "on_write_error: continue",
	  "audit.on_write_error" },
	{ "audit.query", "query: names", "query: full", "audit.query" },
	{ "audit.body_record_max", "body_record_max: 1KiB", "body_record_max: 512",
	  "audit.body_record_max" },
	{ "audit.sinks[].id", "{id: t,", "{id: t2,", "(t).id" },
	{ "audit.sinks[].type",
	  "{id: h, type: http, tls: {verify: true}, http: {url: "
	  "\"https://h.example/services/collector/event\", token_file: /t/tok, ack: true}}",
	  "{id: h, type: syslog, address: \"127.0.0.1:6600\"}", "(h).type" },
	{ "audit.sinks[].format", "format: rfc5424", "format: cef", "(t).format" },
	{ "audit.sinks[].address", "127.0.0.1:6514", "127.0.0.1:6515", "(t).address" },
	{ "audit.sinks[].tls.ca", "/t/ca", "/t/ca2", "(t).tls.ca" },
	{ "audit.sinks[].tls.crl", "/t/crl", "/t/crl2", "(t).tls.crl" },
	{ "audit.sinks[].tls.cert", "/t/c,", "/t/c2,", "(t).tls.cert" },
	{ "audit.sinks[].tls.key", "/t/k,", "/t/k2,", "(t).tls.key" },
	{ "audit.sinks[].tls.verify", "tls: {verify: true}", "tls: {verify: false}",
	  "(h).tls.verify" },
	{ "audit.sinks[].tls.server_name", "server_name: siem", "server_name: siem2",
	  "(t).tls.server_name" },
	{ "audit.sinks[].http.url", "https://h.example/", "https://h2.example/", "(h).http.url" },
	{ "audit.sinks[].http.token_file", "/t/tok", "/t/tok2", "(h).http.token_file" },
	{ "audit.sinks[].http.ack", "ack: true", "ack: false", "(h).http.ack" },
	{ "audit.sinks[].retry.initial", "initial: 500ms", "initial: 400ms", "(t).retry.initial" },
	{ "audit.sinks[].retry.max", "max: 60s}", "max: 61s}", "(t).retry.max" },
	{ "admin.enabled", "enabled: true, socket", "enabled: false, socket", "admin.enabled" },
	{ "admin.socket", "/run/custos/admin.sock", "/run/custos/b.sock", "admin.socket" },
	{ "admin.socket_mode", "\"0660\"", "\"0600\"", "admin.socket_mode" },
	{ "admin.allowed_uids", "allowed_uids: [0]", "allowed_uids: [0, 1]", "admin.allowed_uids" },
	{ "admin.max_body", "max_body: 1MiB", "max_body: 2MiB", "admin.max_body" },
	{ "admin.force", "force: false", "force: true", "admin.force" },
	{ "admin.tcp.address", "127.0.0.1:9090", "127.0.0.1:9091", "admin.tcp.address" },
	{ "admin.tcp.token_sha256",
	  "0000000000000000000000000000000000000000000000000000000000000000",
	  "1111111111111111111111111111111111111111111111111111111111111111",
	  "admin.tcp.token_sha256" },
	{ "admin.tls",
	  ",\n  tls: {cert: /a/c, key: /a/k, ocsp: /a/o, client_ca: /a/ca, client_crl: /a/crl}", "",
	  "admin.tls" },
	{ "admin.tls.cert", "/a/c,", "/a/c2,", NULL },
	{ "admin.tls.key", "/a/k", "/a/k2", NULL },
	{ "admin.tls.ocsp", "/a/o", "/a/o2", NULL },
	{ "admin.tls.client_ca", "/a/ca", "/a/ca2", NULL },
	{ "admin.tls.client_crl", "/a/crl", "/a/crl2", NULL },
	{ "policy.file", "/etc/custos/policy.yaml", "/etc/custos/p2.yaml", NULL },
	{ "policy.reload_on_sighup", "reload_on_sighup: true", "reload_on_sighup: false",
	  "policy.reload_on_sighup" },
	{ "proxy.user", "user: custos", "user: nobody", "proxy.user" },
	{ "proxy.self_sandbox", "self_sandbox: true", "self_sandbox: false", "proxy.self_sandbox" },
};

struct start_only_keys {
	char keys[512][128];
	size_t n;
};

static void collect_key(const char *path, bool refused, void *arg)
{
	struct start_only_keys *k = arg;

	if (!refused && k->n < 512)
		snprintf(k->keys[k->n++], sizeof(k->keys[0]), "%s", path);
}

static void test_reload_start_only(void **state)
{
	(void)state;
	static const char *const sections[] = {
		"workers",         "log.",    "limits.timeouts.shutdown",
		"data_sources[].", "egress.", "audit.",
		"admin.",          "policy.", "proxy."
	};
	static struct start_only_keys k;

	k.n = 0;
	config_keys(collect_key, &k);
	for (size_t i = 0; i < k.n; i++) {
		const char *key = k.keys[i];
		bool in = false, section = false, row = false;
		for (size_t s = 0; s < CUSTOS_ARRAY_LEN(sections); s++)
			in |= strncmp(key, sections[s], strlen(sections[s])) == 0;
		for (size_t j = 0; j < k.n; j++) {
			size_t n = strlen(key);
			section |= strncmp(k.keys[j], key, n) == 0 &&
			           (k.keys[j][n] == '.' || k.keys[j][n] == '[');
		}
		for (size_t r = 0; r < CUSTOS_ARRAY_LEN(start_only); r++)
			row |= strcmp(start_only[r].key, key) == 0;
		if (in && !section && !row)
			fail_msg("%s: no row in start_only (does a reload refuse a change of it?)",
			         key);
	}
	custos_config *running = parse_ok(start_only_base);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(start_only); i++) {
		char *text = text_edit(start_only_base, start_only[i].from, start_only[i].to);
		custos_config *next = parse_ok(text);
		custos_err e = config_reload_check(running, next);
		if (start_only[i].named == NULL && e != CUSTOS_OK)
			fail_msg("%s: refused: %s", start_only[i].key, err_msg());
		if (start_only[i].named &&
		    (e == CUSTOS_OK || strstr(err_msg(), start_only[i].named) == NULL ||
		     strstr(err_msg(), "restart custos") == NULL))
			fail_msg("%s: %s, not refused naming '%s'", start_only[i].key,
			         e == CUSTOS_OK ? "applied" : err_msg(), start_only[i].named);
		config_free(next);
		free(text);
	}
	config_free(running);
}

/* Without egress, a sandboxed model, process or VM, may be added, removed or changed by a
 * reload (the supervisor starts or stops it, or replaces its sandbox); refused: a model moving
 * between a VM and a process sandbox, a VM changed that keeps a PCI device of the old one. */
static void test_reload_sandbox_set(void **state)
{
	(void)state;
	static const char vm_model[] =
	        "  - {id: vm1, sandbox: {type: vm, profile: v, port: 8000}}\nroutes:";
	char *a = text_edit(reload_base,
	                    "data_sources: [{id: hr, url: \"https://hr.example/api\", "
	                    "classification: confidential}]\negress: {port: 3128}\n",
	                    "");
	custos_config *running = parse_ok(a);
	static const struct {
		const char *from, *to, *named; /* named NULL: applied */
		bool changed;                  /* config_sandboxes_changed */
	} cases[] = {
		{ "routes:", "  - {id: boxed2, sandbox: {profile: q, command: [/srv/m2]}}\nroutes:",
		  NULL, true },
		{ "  - {id: boxed, sandbox: {profile: p, command: [/srv/model, --port, "
		  "\"8000\"]}}\n",
		  "", NULL, true },
		{ "  - {id: boxed, sandbox: {profile: p, command: [/srv/model, --port, \"8000\"]}}",
		  "  - {id: boxed, upstream: {url: \"http://127.0.0.1:9002\"}}", NULL, true },
		{ "  - {id: plain, upstream: {url: \"http://127.0.0.1:9000\"}}",
		  "  - {id: plain, sandbox: {profile: q, command: [/srv/m3]}}", NULL, true },
		{ "--port, \"8000\"", "--port, \"8001\"", NULL, true },
		{ "memory: 1GiB", "memory: 2GiB", NULL, true },
		{ "http://127.0.0.1:9000", "http://127.0.0.1:9001", NULL, false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = text_edit(a, cases[i].from, cases[i].to);
		custos_config *next = parse_ok(text);
		custos_err e = config_reload_check(running, next);
		if (cases[i].named == NULL && e != CUSTOS_OK)
			fail_msg("case %zu refused: %s", i, err_msg());
		if (cases[i].named && (e == CUSTOS_OK || !strstr(err_msg(), cases[i].named)))
			fail_msg("case %zu: '%s' does not name %s", i,
			         e == CUSTOS_OK ? "(applied)" : err_msg(), cases[i].named);
		assert_int_equal(config_sandboxes_changed(running, next), cases[i].changed);
		/* The first two edits replace boxed's sandbox; none replaces plain's. */
		assert_int_equal(config_sandbox_replaced(running, next, "boxed"), i == 4 || i == 5);
		assert_false(config_sandbox_replaced(running, next, "plain"));
		config_free(next);
		free(text);
	}
	/* A VM added, then removed: applied both ways (the supervisor starts or stops it). */
	char *bb = text_edit(a, "routes:", vm_model);
	char *b = text_edit(bb, "q: {}", "q: {}, v: {vm: {kernel: /k, disk: /d}}");
	free(bb);
	custos_config *with_vm = parse_ok(b);
	{
		if (config_reload_check(running, with_vm) != CUSTOS_OK)
			fail_msg("a VM added refused: %s", err_msg());
		assert_true(config_sandboxes_changed(running, with_vm));
		if (config_reload_check(with_vm, running) != CUSTOS_OK)
			fail_msg("a VM removed refused: %s", err_msg());
		assert_true(config_sandboxes_changed(with_vm, running));
		assert_false(config_sandbox_replaced(running, with_vm, "vm1"));
		/* A VM that stays with another sandbox block or profile is replaced (its new
		 * domain started beside the old one by the supervisor). */
		char *c = text_edit(b, "profile: v, port: 8000", "profile: v, port: 8001");
		custos_config *vm_moved = parse_ok(c);
		if (config_reload_check(with_vm, vm_moved) != CUSTOS_OK)
			fail_msg("a VM changed refused: %s", err_msg());
		assert_true(config_sandbox_replaced(with_vm, vm_moved, "vm1"));
		assert_true(config_sandboxes_changed(with_vm, vm_moved));
		char *cm =
		        text_edit(b, "kernel: /k, disk: /d", "kernel: /k, disk: /d, memory: 2GiB");
		custos_config *vm_mem = parse_ok(cm);
		if (config_reload_check(with_vm, vm_mem) != CUSTOS_OK)
			fail_msg("a VM's profile changed refused: %s", err_msg());
		assert_true(config_sandbox_replaced(with_vm, vm_mem, "vm1"));
		config_free(vm_mem);
		free(cm);
		/* Unless its replacement would need a PCI device the running VM holds. */
		char *h1 = text_edit(b, "kernel: /k, disk: /d",
		                     "kernel: /k, disk: /d, hostdev: [\"0000:01:00.0\"]");
		char *h2 = text_edit(h1, "profile: v, port: 8000", "profile: v, port: 8001");
		custos_config *vm_pci = parse_ok(h1), *vm_pci_moved = parse_ok(h2);
		assert_int_not_equal(config_reload_check(vm_pci, vm_pci_moved), CUSTOS_OK);
		assert_non_null(strstr(err_msg(), "(vm1).sandbox.port (8000 -> 8001)"));
		assert_non_null(strstr(err_msg(), "PCI devices the running VM holds"));
		/* ... but may be added or removed. */
		if (config_reload_check(running, vm_pci) != CUSTOS_OK)
			fail_msg("a VM with a hostdev added refused: %s", err_msg());
		config_free(vm_pci);
		config_free(vm_pci_moved);
		free(h1);
		free(h2);
		/* Nor may a model move between a VM and a process sandbox. */
		char *d = text_edit(b, "{id: vm1, sandbox: {type: vm, profile: v, port: 8000}}",
		                    "{id: vm1, sandbox: {profile: q, command: [/srv/m4]}}");
		custos_config *vm_proc = parse_ok(d);
		assert_int_not_equal(config_reload_check(with_vm, vm_proc), CUSTOS_OK);
		assert_non_null(strstr(err_msg(), "(vm1).sandbox.type (vm -> process)"));
		assert_non_null(strstr(err_msg(), "this VM is not replaced by a reload"));
		assert_int_not_equal(config_reload_check(vm_proc, with_vm), CUSTOS_OK);
		assert_non_null(strstr(err_msg(), "(vm1).sandbox.type (process -> vm)"));
		config_free(vm_proc);
		free(d);
		config_free(vm_moved);
		free(c);
		config_free(with_vm);
	}
	free(b);
	config_free(running);
	free(a);
}

/* The log: section alone, from a file whose other sections have errors: what `up` reports those
 * errors in. A bad log: section or a file that is not YAML gives nothing. */
static void test_load_log_section(void **state)
{
	(void)state;
	char path[] = "/tmp/custos-test-config-log-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	struct {
		const char *text;
		bool ok;
		log_format format;
		log_level level;
	} cases[] = {
		{ "version: 1\nlog: {format: json, level: warn, file: /x.log}\nlisteners: 3\n",
		  true, LOG_FMT_JSON, LOG_LVL_WARN },
		{ "version: 7\nbogus: 1\nlog: {format: text}\n", true, LOG_FMT_TEXT, LOG_LVL_INFO },
		{ "version: 1\n", true, LOG_FMT_AUTO, LOG_LVL_INFO },
		{ "version: 1\nlog: {format: xml}\n", false, 0, 0 },
		{ "version: 1\nlog: {format: json, colour: true}\n", false, 0, 0 },
		{ "version: 1\nlog: {format: json\n", false, 0, 0 },
		{ "- a list\n", false, 0, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fputs(cases[i].text, f);
		fclose(f);
		assert_int_equal(chmod(path, 0600), 0);
		cfg_log log = { .level = LOG_LVL_DEBUG, .format = LOG_FMT_TEXT, .file = NULL };
		custos_err e = config_load_log(path, &log);
		if (!cases[i].ok) {
			assert_int_not_equal(e, CUSTOS_OK);
			assert_int_equal(log.format, LOG_FMT_TEXT); /* unchanged */
			continue;
		}
		assert_int_equal(e, CUSTOS_OK);
		assert_int_equal(log.format, cases[i].format);
		assert_int_equal(log.level, cases[i].level);
		assert_null(log.file);
	}
	unlink(path);
}

/* config_where: the position a string setting was written at, by the pointer the config holds;
 * nothing for a default or an equal string held elsewhere. */
static void test_where(void **state)
{
	(void)state;
	custos_config *cfg = parse_ok("version: 1\naudit:\n  signing_key: /k/audit.key\n"
	                              "  sinks: [{id: s, type: syslog, address: \"h:1\", "
	                              "tls: {ca: /ca.crt}}]\n");
	unsigned line = 0, col = 0;
	assert_true(config_where(cfg, cfg->audit.signing_key, &line, &col));
	assert_int_equal(line, 3);
	assert_int_equal(col, 16);
	assert_true(config_where(cfg, cfg->audit.sinks[0].tls.ca, &line, &col));
	assert_int_equal(line, 4);
	assert_false(config_where(cfg, cfg->audit.dir, &line, &col)); /* the default */
	assert_false(config_where(cfg, "/k/audit.key", &line, &col)); /* not the config's */
	assert_false(config_where(cfg, NULL, &line, &col));
	config_free(cfg);
}

/* models[].upstream.cert/key and data_sources[].cert/key: both or neither, https only, and for
 * a data source only with interception; errors at the key's line:col. */
static void test_client_certs(void **state)
{
	(void)state;
	diag_list d;
	const diag_item *it;

	custos_config *cfg = parse_ok(
	        "version: 1\negress: {ca_dir: /ca}\n"
	        "models:\n  - id: m\n    upstream:\n      url: \"https://m:8443/\"\n"
	        "      cert: /etc/custos/up.crt\n      key: /etc/custos/up.key\n"
	        "data_sources:\n  - {id: w, url: \"https://w/\", classification: internal, "
	        "intercept: true, cert: /c/w.crt, key: /c/w.key}\n");
	assert_string_equal(cfg->models[0].upstream.cert, "/etc/custos/up.crt");
	assert_string_equal(cfg->models[0].upstream.key, "/etc/custos/up.key");
	assert_string_equal(cfg->data_sources[0].cert, "/c/w.crt");
	assert_string_equal(cfg->data_sources[0].key, "/c/w.key");
	config_free(cfg);

	it = parse_fail("version: 1\nmodels:\n  - id: m\n    upstream:\n"
	                "      url: \"https://m/\"\n      cert: /c/up.crt\n",
	                &d, "upstream.cert without upstream.key");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 13);
	assert_string_equal(it->file, "t.yaml");
	diag_free(&d);
	it = parse_fail("version: 1\nmodels:\n  - id: m\n    upstream:\n"
	                "      url: \"https://m/\"\n      key: /c/up.key\n",
	                &d, "upstream.key without upstream.cert");
	assert_int_equal(it->line, 6);
	diag_free(&d);
	it = parse_fail("version: 1\nmodels:\n  - id: m\n    upstream:\n"
	                "      url: \"http://m/\"\n      cert: /c/up.crt\n      key: /c/up.key\n",
	                &d, "apply only to https:// upstreams");
	assert_int_equal(it->line, 6);
	assert_non_null(strstr(it->message, "model 'm'"));
	diag_free(&d);
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"unix:/s\", cert: /c, key: "
	             "/k}}]\n",
	             "apply only to https:// upstreams");
	expect_error("version: 1\nmodels: [{id: m, upstream: {url: \"https://m/\", cert: [a], key: "
	             "/k}}]\n",
	             "expected a string");

	it = parse_fail("version: 1\negress: {ca_dir: /ca}\ndata_sources:\n"
	                "  - id: w\n    url: \"https://w/\"\n    classification: internal\n"
	                "    intercept: true\n    key: /c/w.key\n",
	                &d, "data source 'w': key without cert");
	assert_int_equal(it->line, 8);
	assert_int_equal(it->col, 10);
	diag_free(&d);
	it = parse_fail("version: 1\ndata_sources:\n"
	                "  - id: w\n    url: \"http://w/\"\n    classification: internal\n"
	                "    cert: /c/w.crt\n    key: /c/w.key\n",
	                &d, "apply only to https:// sources");
	assert_int_equal(it->line, 6);
	diag_free(&d);
	it = parse_fail("version: 1\ndata_sources:\n"
	                "  - id: w\n    url: \"https://w/\"\n    classification: internal\n"
	                "    cert: /c/w.crt\n    key: /c/w.key\n",
	                &d, "need intercept: true");
	assert_int_equal(it->line, 6);
	assert_non_null(strstr(it->message, "CONNECT tunnel"));
	diag_free(&d);

	/* Data sources are fixed at start: their client certificate's paths too (the files are
	 * read again by a reload). */
	const char *base = "version: 1\negress: {ca_dir: /ca}\ndata_sources:\n  - {id: w, url: "
	                   "\"https://w/\", classification: internal, intercept: true, cert: "
	                   "/c/w.crt, key: /c/w.key}\n";
	custos_config *a = parse_ok(base), *b = parse_ok(base);
	assert_int_equal(config_reload_check(a, b), CUSTOS_OK);
	config_free(b);
	b = parse_ok("version: 1\negress: {ca_dir: /ca}\ndata_sources:\n  - {id: w, url: "
	             "\"https://w/\", classification: internal, intercept: true, cert: "
	             "/c/w2.crt, key: /c/w.key}\n");
	assert_int_not_equal(config_reload_check(a, b), CUSTOS_OK);
	assert_non_null(strstr(err_msg(), "cert"));
	config_free(b);
	config_free(a);
}

/* The CRL keys: each beside the CA setting it completes, refused without it (at the key). */
static void test_crl_keys(void **state)
{
	(void)state;
	const char *tok = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
	char text[1024];
	diag_list d;

	snprintf(
	        text, sizeof(text),
	        "version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", tls: {cert: c, key: k, "
	        "client_ca: /ca.crt, client_auth: optional, client_crl: /l.crl}}]\n"
	        "models: [{id: m, upstream: {url: \"https://h/\", crl_file: /u.crl}}]\n"
	        "data_sources: [{id: w, url: \"https://w/\", classification: public, intercept: "
	        "true, crl_file: /w.crl}]\negress: {ca_dir: /ca}\n"
	        "admin: {tls: {cert: /a.crt, key: /a.key, client_ca: /ca.crt, client_crl: /a.crl}, "
	        "tcp: {address: \"127.0.0.1:9090\", token_sha256: %s}}\n",
	        tok);
	custos_config *cfg = parse_ok(text);
	assert_string_equal(cfg->listeners[0].tls.client_crl, "/l.crl");
	assert_string_equal(cfg->models[0].upstream.crl_file, "/u.crl");
	assert_string_equal(cfg->data_sources[0].crl_file, "/w.crl");
	assert_string_equal(cfg->admin.tls.client_crl, "/a.crl");
	config_free(cfg);
	cfg = parse_ok("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", "
	               "tls: {cert: c, key: k}}]\n");
	assert_null(cfg->listeners[0].tls.client_crl); /* no default */
	config_free(cfg);

	const diag_item *it =
	        parse_fail("version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n"
	                   "    tls:\n      cert: c\n      key: k\n      client_ca: /ca.crt\n"
	                   "      client_crl: /l.crl\n",
	                   &d, "client_crl applies to client certificates");
	assert_int_equal(it->line, 9);
	assert_int_equal(it->col, 19);
	assert_non_null(it->hint);
	diag_free(&d);
	it = parse_fail(
	        "version: 1\nmodels:\n  - id: m\n    upstream:\n      url: \"http://h:1/\"\n"
	        "      crl_file: /u.crl\n",
	        &d, "crl_file applies only to https:// upstreams (model 'm')");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 17);
	diag_free(&d);
	expect_error(
	        "version: 1\nmodels: [{id: m, upstream: {url: \"unix:/s\", crl_file: /u.crl}}]\n",
	        "crl_file applies only to https:// upstreams");
	it = parse_fail("version: 1\ndata_sources:\n  - id: w\n    url: \"http://w/\"\n"
	                "    classification: public\n    crl_file: /w.crl\n",
	                &d, "crl_file applies to https:// sources only");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 15);
	diag_free(&d);
	expect_error("version: 1\ndata_sources: [{id: w, url: \"https://w/\", classification: "
	             "public, crl_file: /w.crl}]\n",
	             "crl_file needs intercept: true");
	snprintf(text, sizeof(text),
	         "version: 1\nadmin:\n  tls:\n    cert: /a.crt\n    key: /a.key\n"
	         "    client_crl: /a.crl\n  tcp: {address: \"127.0.0.1:9090\", token_sha256: %s}\n",
	         tok);
	it = parse_fail(text, &d, "client_crl needs client_ca");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 17);
	diag_free(&d);
}

/* audit.sinks[].tls.crl: beside tls.ca, for syslog/TLS and HEC over https; refused (at the
 * key, with a hint) where the server is not verified; an unknown spelling (crl_file) is
 * refused as any unknown key. */
static void test_sink_crl_key(void **state)
{
	(void)state;
	diag_list d;

	custos_config *cfg =
	        parse_ok("version: 1\naudit: {sinks: [{id: s, type: syslog, address: "
	                 "\"127.0.0.1:6514\", tls: {ca: /ca.pem, crl: /siem.crl}}, {id: h, type: "
	                 "http, tls: {crl: /hec.crl}, http: {url: "
	                 "\"https://s/services/collector/event\"}}, {id: p, type: syslog, "
	                 "address: \"127.0.0.1:6514\", tls: {ca: /ca.pem}}]}\n");
	assert_string_equal(cfg->audit.sinks[0].tls.crl, "/siem.crl");
	assert_string_equal(cfg->audit.sinks[0].tls.ca, "/ca.pem");
	assert_string_equal(cfg->audit.sinks[1].tls.crl, "/hec.crl");
	assert_null(cfg->audit.sinks[2].tls.crl); /* no default */
	config_free(cfg);

	const diag_item *it =
	        parse_fail("version: 1\naudit:\n  sinks:\n    - id: s\n      type: syslog\n"
	                   "      address: \"127.0.0.1:6514\"\n      tls:\n        verify: false\n"
	                   "        crl: /siem.crl\n",
	                   &d, "verify: false does not verify");
	assert_int_equal(it->line, 9);
	assert_int_equal(it->col, 14);
	assert_non_null(it->hint);
	diag_free(&d);
	expect_error("version: 1\naudit: {sinks: [{id: s, type: syslog, address: \"h:1\", tls: "
	             "{crl: [/a.crl]}}]}\n",
	             "expected a string");
	expect_error("version: 1\naudit: {sinks: [{id: s, type: syslog, address: \"h:1\", tls: "
	             "{crl_file: /siem.crl}}]}\n",
	             "crl_file");
}

/* listeners[].tls ocsp: beside tls.cert and in each certificates entry; refused where no cert
 * goes with it (at the key) and when not a string. admin.tls ocsp: beside its cert. */
static void test_ocsp_keys(void **state)
{
	(void)state;
	diag_list d;

	custos_config *cfg = parse_ok(
	        "version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", tls: {cert: /c, key: "
	        "/k, ocsp: /c.ocsp, certificates: [{cert: /e, key: /ek, ocsp: /e.ocsp}]}}]\n");
	assert_int_equal(cfg->listeners[0].tls.n_certs, 2);
	assert_string_equal(cfg->listeners[0].tls.certs[0].ocsp, "/c.ocsp");
	assert_string_equal(cfg->listeners[0].tls.certs[1].ocsp, "/e.ocsp");
	config_free(cfg);
	cfg = parse_ok("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", tls: "
	               "{certificates: [{cert: /e, key: /ek, ocsp: /e.ocsp}, {cert: /r, key: "
	               "/rk}]}}]\n");
	assert_int_equal(cfg->listeners[0].tls.n_certs, 2);
	assert_string_equal(cfg->listeners[0].tls.certs[0].ocsp, "/e.ocsp");
	assert_null(cfg->listeners[0].tls.certs[1].ocsp); /* no default */
	config_free(cfg);

	/* ocsp at the tls level with only certificates[]: no cert for it to go with */
	const diag_item *it = parse_fail(
	        "version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n"
	        "    tls:\n      ocsp: /c.ocsp\n      certificates:\n        - {cert: /e, key: "
	        "/ek}\n",
	        &d, "ocsp here is tls.cert's OCSP response, and this listener sets no cert");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 13);
	assert_non_null(it->hint);
	diag_free(&d);
	/* ocsp without a cert in a certificates entry, or alone at the tls level */
	it = parse_fail("version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n"
	                "    tls:\n      certificates:\n        - ocsp: /e.ocsp\n          key: "
	                "/ek\n",
	                &d, "missing required key 'cert'");
	assert_int_equal(it->line, 7);
	diag_free(&d);
	expect_error("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", tls: {ocsp: "
	             "/c.ocsp}}]\n",
	             "missing required key 'cert'");
	expect_error("version: 1\nlisteners: [{id: t, address: \"127.0.0.1:1\", tls: {cert: /c, "
	             "key: /k, ocsp: [/a]}}]\n",
	             "expected a string, found a list");

	/* admin.tls ocsp: beside its cert, as a listener's; another path is for a reload to read */
	const char *tok = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
	char text[512], text2[512];
	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tls: {cert: /a.crt, key: /a.key, ocsp: /a.ocsp}, tcp: "
	         "{address: \"127.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	cfg = parse_ok(text);
	assert_int_equal(cfg->admin.tls.n_certs, 1);
	assert_string_equal(cfg->admin.tls.certs[0].ocsp, "/a.ocsp");
	snprintf(text2, sizeof(text2),
	         "version: 1\nadmin: {tls: {cert: /a.crt, key: /a.key, ocsp: /b.ocsp}, tcp: "
	         "{address: \"127.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	custos_config *next = parse_ok(text2);
	assert_int_equal(config_reload_check(cfg, next), CUSTOS_OK);
	config_free(next);
	config_free(cfg);
	snprintf(text, sizeof(text),
	         "version: 1\nadmin: {tls: {cert: /a.crt, key: /a.key}, tcp: {address: "
	         "\"127.0.0.1:9090\", token_sha256: %s}}\n",
	         tok);
	cfg = parse_ok(text);
	assert_null(cfg->admin.tls.certs[0].ocsp); /* no default */
	config_free(cfg);
	/* admin.tls ocsp that is not a path, or without the cert it goes with: at the key */
	it = parse_fail("version: 1\nadmin:\n  tls:\n    cert: /a.crt\n    key: /a.key\n"
	                "    ocsp: [/a.ocsp]\n  socket: /run/a.sock\n",
	                &d, "expected a string, found a list");
	assert_int_equal(it->line, 6);
	assert_int_equal(it->col, 11);
	diag_free(&d);
	it = parse_fail("version: 1\nadmin:\n  tls:\n    key: /a.key\n    ocsp: /a.ocsp\n", &d,
	                "missing required key 'cert'");
	assert_int_equal(it->line, 4);
	diag_free(&d);
}

/* listeners[].proxy_protocol and proxy_protocol_from: the ranges parsed, and each refusal at
 * its position (a bad range, from without proxy_protocol, proxy_protocol without from, a Unix
 * socket listener); and the address range parser and matcher (core/cidr.c). */
static void expect_at(const char *text, const char *needle, unsigned line, unsigned col)
{
	diag_list d;
	const diag_item *it = parse_fail(text, &d, needle);

	assert_int_equal(it->line, line);
	assert_int_equal(it->col, col);
	assert_non_null(it->hint);
	diag_free(&d);
}

static void test_pp_keys(void **state)
{
	(void)state;
	const char *text = "version: 1\nlisteners:\n  - id: lb\n    address: \"0.0.0.0:443\"\n"
	                   "    tls: {cert: c, key: k}\n    proxy_protocol: true\n"
	                   "    proxy_protocol_from: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]\n"
	                   "  - {id: p, address: \"127.0.0.1:1\"}\n";
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	assert_int_equal(config_parse("t.yaml", text, strlen(text), &cfg, &d), CUSTOS_OK);
	diag_free(&d);
	const cfg_listener *l = &cfg->listeners[0];
	assert_true(l->proxy_protocol);
	assert_int_equal(l->n_proxy_protocol_from, 3);
	assert_int_equal(l->proxy_protocol_from[0].family, 4);
	assert_int_equal(l->proxy_protocol_from[0].bits, 8);
	assert_int_equal(l->proxy_protocol_from[1].family, 6);
	assert_int_equal(l->proxy_protocol_from[1].bits, 32);
	assert_int_equal(l->proxy_protocol_from[2].bits, 32);
	assert_false(cfg->listeners[1].proxy_protocol); /* off by default */
	assert_int_equal(cfg->listeners[1].n_proxy_protocol_from, 0);
	config_free(cfg);
}

static void test_pp_errors(void **state)
{
	(void)state;
	const char *head = "version: 1\nlisteners:\n  - id: p\n    address: \"127.0.0.1:1\"\n";
	char text[512];

	snprintf(text, sizeof(text),
	         "%s    proxy_protocol: true\n    proxy_protocol_from: [10.0.0.1/8]\n", head);
	expect_at(text, "'10.0.0.1/8' is not an address range", 6, 27);
	snprintf(text, sizeof(text),
	         "%s    proxy_protocol: true\n    proxy_protocol_from: [a, 10.0.0.0/33]\n", head);
	expect_at(text, "'a' is not an address range", 6, 27);
	expect_at(text, "'10.0.0.0/33' is not an address range", 6, 30);
	snprintf(text, sizeof(text), "%s    proxy_protocol_from: [10.0.0.0/8]\n", head);
	expect_at(text, "proxy_protocol_from without proxy_protocol", 5, 26);
	snprintf(text, sizeof(text),
	         "%s    proxy_protocol: false\n    proxy_protocol_from: [10.0.0.0/8]\n", head);
	expect_at(text, "proxy_protocol_from without proxy_protocol", 6, 26);
	snprintf(text, sizeof(text), "%s    proxy_protocol: true\n", head);
	expect_at(text, "proxy_protocol needs proxy_protocol_from", 5, 21);
	snprintf(text, sizeof(text), "%s    proxy_protocol: true\n    proxy_protocol_from: []\n",
	         head);
	expect_at(text, "proxy_protocol needs proxy_protocol_from", 6, 26);
	snprintf(text, sizeof(text), "%s    proxy_protocol: yes please\n", head);
	diag_list d;
	parse_fail(text, &d, "is not a boolean");
	diag_free(&d);
	expect_at("version: 1\nlisteners:\n  - id: u\n    address: /run/c.sock\n"
	          "    proxy_protocol: true\n    proxy_protocol_from: [10.0.0.0/8]\n",
	          "proxy_protocol on a unix socket listener", 5, 21);
}

static void test_cidr(void **state)
{
	(void)state;
	custos_cidr r;
	const char *why;
	struct sockaddr_in in = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	struct sockaddr un = { .sa_family = AF_UNIX };

	static const char *const bad[] = {
		"",
		"/8",
		"10.0.0.0/",
		"10.0.0.0/08",
		"10.0.0.0/x",
		"10.0.0.0/33",
		"::/129",
		"10.0.0.0/8/",
		"10.0.0.1/8",
		"010.0.0.0/8",
		"host/8",
		"::1/1280",
		"10.0.0.0 /8",
		"1111111111111111111111111111111111111111111111111111111111111111/1"
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(cidr_parse(bad[i], &r, &why));
		assert_non_null(why);
	}
	assert_true(cidr_parse("10.1.0.0/16", &r, &why));
	assert_null(why);
	inet_pton(AF_INET, "10.1.200.3", &in.sin_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in));
	inet_pton(AF_INET, "10.2.0.1", &in.sin_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in));
	inet_pton(AF_INET6, "::ffff:10.1.0.9", &in6.sin6_addr); /* IPv4-mapped: counts as IPv4 */
	assert_true(cidr_match(&r, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "::10.1.0.9", &in6.sin6_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in6));
	assert_false(cidr_match(&r, &un));
	assert_true(cidr_parse("10.1.128.0/17", &r, &why)); /* a prefix inside a byte */
	inet_pton(AF_INET, "10.1.200.3", &in.sin_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in));
	inet_pton(AF_INET, "10.1.127.3", &in.sin_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in));
	assert_true(cidr_parse("0.0.0.0/0", &r, &why));
	assert_true(cidr_match(&r, (struct sockaddr *)&in));
	assert_true(cidr_parse("2001:db8::/32", &r, &why));
	inet_pton(AF_INET6, "2001:db8:ffff::1", &in6.sin6_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "2001:db9::1", &in6.sin6_addr);
	assert_false(cidr_match(&r, (struct sockaddr *)&in6));
	assert_false(cidr_match(&r, (struct sockaddr *)&in)); /* family differs */
	assert_true(cidr_parse("::1", &r, &why));
	assert_int_equal(r.bits, 128);
	inet_pton(AF_INET6, "::1", &in6.sin6_addr);
	assert_true(cidr_match(&r, (struct sockaddr *)&in6));
}

/* ---------------------------------------------------------------------------------------------
 * Bounds `custos up` has (include/custos/config.h, shared with proxy.h and vm.h): config check
 * takes each at its limit and refuses one past it at the entry's file:line:col, naming the
 * limit, so that `up` never refuses at start or at a reload what config check passed.
 */
typedef struct tbuf {
	char s[64 * 1024];
	size_t n;
} tbuf;

static void tb(tbuf *b, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
static void tb(tbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int r = vsnprintf(b->s + b->n, sizeof(b->s) - b->n, fmt, ap);
	va_end(ap);
	assert_true(r >= 0 && (size_t)r < sizeof(b->s) - b->n);
	b->n += (size_t)r;
}

/* Parses b expecting an error containing needle at line:col whose hint contains hint. */
static void expect_error_at(const tbuf *b, const char *needle, unsigned line, unsigned col,
                            const char *hint)
{
	diag_list d;
	const diag_item *it = parse_fail(b->s, &d, needle);

	if (it->line != line || it->col != col)
		diag_print(&d, stderr);
	assert_int_equal(it->line, line);
	assert_int_equal(it->col, col);
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, hint));
	diag_free(&d);
}

static void listeners_text(tbuf *b, size_t n)
{
	b->n = 0;
	tb(b, "version: 1\nlisteners:\n");
	for (size_t i = 0; i < n; i++)
		tb(b, "  - {id: l%zu, address: /run/l%zu.sock}\n", i, i);
}

/* What a process sandbox refuses at start (sandbox_profile_validate) is refused by config check
 * at the node: paths of SANDBOX_PATH_MAX bytes or more, '..' components, a bind onto the root,
 * "/dev/" with no device, an env_allow entry with '=', and a model id the sandbox cannot be
 * named after. */
static void expect_pos(const char *text, const char *needle, unsigned line, unsigned col,
                       const char *hint)
{
	diag_list d;
	const diag_item *it = parse_fail(text, &d, needle);

	if (it->line != line || it->col != col)
		diag_print(&d, stderr);
	assert_int_equal(it->line, line);
	assert_int_equal(it->col, col);
	if (hint) {
		assert_non_null(it->hint);
		assert_non_null(strstr(it->hint, hint));
	}
	diag_free(&d);
}

static void profile_text(tbuf *b, const char *body)
{
	b->n = 0;
	tb(b, "version: 1\nsandbox_profiles:\n  p:\n%s", body);
}

static void test_up_bound_sandbox_paths(void **state)
{
	(void)state;
	static tbuf b, line;
	char path[CFG_MAX_SANDBOX_PATH + 2];

	/* 1023 bytes: taken; 1024: refused at the value, 5:15 */
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[CFG_MAX_SANDBOX_PATH - 1] = '\0';
	line.n = 0;
	tb(&line, "    binds:\n      - {src: %s, dst: /x}\n", path);
	profile_text(&b, line.s);
	config_free(parse_ok(b.s));
	path[CFG_MAX_SANDBOX_PATH - 1] = 'a';
	path[CFG_MAX_SANDBOX_PATH] = '\0';
	line.n = 0;
	tb(&line, "    binds:\n      - {src: %s, dst: /x}\n", path);
	profile_text(&b, line.s);
	expect_pos(b.s, "bind src is 1024 bytes; the limit is 1023", 5, 15, "SANDBOX_PATH_MAX");
	/* '..' components and the root */
	profile_text(&b, "    binds:\n      - {src: /s, dst: /data/../etc}\n");
	expect_pos(b.s, "bind dst '/data/../etc' has a '..' component", 5, 24, "'..'");
	profile_text(&b, "    binds:\n      - {src: /s/.., dst: /x}\n");
	expect_pos(b.s, "bind src '/s/..' has a '..' component", 5, 15, "'..'");
	profile_text(&b, "    binds:\n      - {src: /s..t, dst: /x..}\n"); /* not components */
	config_free(parse_ok(b.s));
	profile_text(&b, "    binds:\n      - {src: /s, dst: /}\n");
	expect_pos(b.s, "cannot replace the sandbox's root", 5, 24, "dst: /data");
	profile_text(&b, "    binds:\n      - {src: /}\n");
	expect_pos(b.s, "cannot replace the sandbox's root", 5, 15, "give dst");
	profile_text(&b, "    scratch: {type: dir, path: /var/../x}\n");
	expect_pos(b.s, "scratch path '/var/../x' has a '..' component", 4, 32, "'..'");
	/* devices: a name under /dev/ */
	profile_text(&b, "    devices: [/dev/]\n");
	expect_pos(b.s, "device '/dev/' is not under /dev/", 4, 15, NULL);
	profile_text(&b, "    devices: [/dev/nvidia0, /dev/dri/card0]\n");
	config_free(parse_ok(b.s));
	/* env_allow: names */
	profile_text(&b, "    env_allow: [LANG, A=B]\n");
	expect_pos(b.s, "'A=B' is not a variable name", 4, 23, "sandbox.env");
}

static void test_up_bound_sandbox_name(void **state)
{
	(void)state;
	static const char head[] = "version: 1\nsandbox_profiles: {p: {}}\nmodels:\n";
	static tbuf b;

	b.n = 0;
	tb(&b, "%s  - id: org/m\n    sandbox: {type: process, profile: p, command: [/bin/true]}\n",
	   head);
	expect_pos(b.s, "model 'org/m' runs in a process sandbox", 4, 9, "SANDBOX_NAME_MAX");
	b.n = 0;
	tb(&b,
	   "%s  - id: org.m\n    aliases: [org/m]\n"
	   "    sandbox: {type: process, profile: p, command: [/bin/true]}\n",
	   head);
	config_free(parse_ok(b.s));
	/* an upstream model's id is not a sandbox's name */
	b.n = 0;
	tb(&b, "%s  - id: org/m\n    upstream: {url: \"http://127.0.0.1:1/\"}\n", head);
	config_free(parse_ok(b.s));
}

/* What the sandbox, VM, egress and admin code would refuse (or fail on) at start
 * (sandbox/profile.c, sandbox/vm_xml.c, cli/vm_up.c, cli/egress_config.c, proxy/admin.c),
 * refused (or warned) at its position by config check. */
static void test_up_bound_start_parity(void **state)
{
	(void)state;
	static tbuf b;

	/* a profile id: `custos sandbox exec -c` names the sandbox after it */
	expect_pos("version: 1\nsandbox_profiles:\n  org/p: {}\n",
	           "sandbox profile 'org/p': name must be 1-64 of [A-Za-z0-9_.-]", 3, 3,
	           "sandbox exec -c");
	expect_pos("version: 1\nsandbox_profiles:\n  ok: {}\n  gpu:a100: {}\n",
	           "sandbox profile 'gpu:a100': name must be", 4, 3, "SANDBOX_NAME_MAX");
	config_free(parse_ok("version: 1\nsandbox_profiles: {a.b_c-1: {}}\n"));
	/* a VM model's id: its domain is custos-<id> */
	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles: {v: {vm: {disk: /d}}}\nmodels:\n"
	       "  - id: org/m\n    sandbox: {type: vm, profile: v}\n");
	expect_pos(b.s, "model 'org/m' runs in a VM, whose name (custos-org/m)", 4, 9,
	           "libvirt domain");
	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles: {v: {vm: {disk: /d}}}\nmodels:\n"
	       "  - id: org.m\n    aliases: [\"org/m:q4\"]\n    sandbox: {type: vm, profile: v}\n");
	config_free(parse_ok(b.s));
	/* VM images: libvirt opens them, by absolute path */
	expect_pos("version: 1\nsandbox_profiles: {p: {vm: {kernel: vmlinuz}}}\n",
	           "'kernel' must be an absolute path", 2, 37, NULL);
	expect_pos("version: 1\nsandbox_profiles: {p: {vm: {disk: img/d.qcow2}}}\n",
	           "'disk' must be an absolute path", 2, 35, NULL);
	expect_pos("version: 1\nsandbox_profiles: {p: {vm: {kernel: /k, initrd: i}}}\n",
	           "'initrd' must be an absolute path", 2, 49, NULL);
	/* a PCI slot is 00-1f */
	expect_pos("version: 1\nsandbox_profiles: {p: {vm: {disk: /d, hostdev: [0000:00:20.0]}}}\n",
	           "'0000:00:20.0' is not a PCI address", 2, 49, "slot 00-1f");
	config_free(parse_ok(
	        "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, hostdev: [0000:00:1f.7]}}}\n"));
	/* namespaces: the sandbox needs user, pid and mount (sandbox_profile_validate) */
	expect_pos("version: 1\nsandbox_profiles: {p: {namespaces: [pid, mount, net]}}\n",
	           "user, pid and mount namespaces are required", 2, 36, "refuses to start");
	/* limits.swap alone: valid, beside the built-in memory limit (up and exec -c alike) */
	diag_list d;
	custos_config *cfg = NULL;
	const char *t = "version: 1\nsandbox_profiles: {p: {limits: {swap: 1GiB}}}\n";
	diag_init(&d);
	assert_int_equal(config_parse("t.yaml", t, strlen(t), &cfg, &d), CUSTOS_OK);
	assert_int_equal(d.warnings, 0);
	config_free(cfg);
	diag_free(&d);
	/* health.path: what the readiness probe can send */
#define HP                                                                                         \
	"version: 1\nsandbox_profiles: {p: {}}\nmodels:\n  - id: m\n"                              \
	"    sandbox: {profile: p, command: [/bin/true], health: {path: %s}}\n"
	b.n = 0;
	tb(&b, HP, "\"/ready now\"");
	expect_pos(b.s, "health path: bad HTTP path", 5, 64, "no space, CR or LF");
	b.n = 0;
	tb(&b, HP, "\"/ready\\r\\nX: y\"");
	expect_pos(b.s, "health path: bad HTTP path", 5, 64, NULL);
	char longp[CFG_MAX_SANDBOX_PATH + 1];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[CFG_MAX_SANDBOX_PATH] = '\0'; /* 1024 bytes */
	b.n = 0;
	tb(&b, HP, longp);
	expect_pos(b.s, "health path: bad HTTP path", 5, 64, "1024");
	longp[CFG_MAX_SANDBOX_PATH - 1] = '\0'; /* 1023 */
	b.n = 0;
	tb(&b, HP, longp);
	config_free(parse_ok(b.s));
	/* a VM's channel socket and console log, with room for -<n> */
	char sock[CFG_MAX_VM_SOCKET + 2];
	memset(sock, 's', sizeof(sock));
	sock[0] = '/';
	sock[CFG_MAX_VM_SOCKET + 1] = '\0'; /* 105 bytes */
	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, channel_socket: %s}}}\n", sock);
	expect_pos(b.s, "channel socket path too long: 105 bytes, the limit is 104", 2, 55, "-<n>");
	sock[CFG_MAX_VM_SOCKET] = '\0';
	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, channel_socket: %s}}}\n", sock);
	config_free(parse_ok(b.s));
	static char con[CFG_MAX_VM_CONSOLE + 2];
	memset(con, 'c', sizeof(con));
	con[0] = '/';
	con[CFG_MAX_VM_CONSOLE + 1] = '\0';
	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles: {p: {vm: {disk: /d, console_log: %s}}}\n", con);
	expect_pos(b.s, "console_log path too long: 4093 bytes, the limit is 4092", 2, 52, "-<n>");
#undef HP
	/* egress: a model without a sandbox listens on egress.port + its place in models */
	static const char eg[] = "version: 1\negress: {enabled: true, port: 65535}\nmodels:\n"
	                         "  - {id: a, upstream: {url: \"http://127.0.0.1:1/\"}}\n"
	                         "  - {id: b, upstream: {url: \"http://127.0.0.1:1/\"}}\n";
	expect_pos(eg, "model 'b': egress.port + 1 (its place in models) passes 65535", 5, 10,
	           "lower egress.port");
	config_free(parse_ok("version: 1\negress: {enabled: true, port: 65534}\nmodels:\n"
	                     "  - {id: a, upstream: {url: \"http://127.0.0.1:1/\"}}\n"
	                     "  - {id: b, upstream: {url: \"http://127.0.0.1:1/\"}}\n"));
	/* egress.port is taken inside each process sandbox */
	expect_pos("version: 1\negress: {enabled: true}\nsandbox_profiles: {p: {}}\nmodels:\n"
	           "  - id: m\n    sandbox: {profile: p, command: [/bin/true], port: 3128}\n",
	           "model 'm': sandbox.port 3128 is egress.port", 6, 55, "another sandbox.port");
	expect_pos("version: 1\negress: {enabled: true, port: 8000}\nsandbox_profiles: {p: {}}\n"
	           "models:\n  - id: m\n    sandbox: {profile: p, command: [/bin/true]}\n",
	           "model 'm': sandbox.port 8000 is egress.port", 2, 31, NULL);
	config_free(parse_ok("version: 1\negress: {enabled: false, port: 8000}\n"
	                     "sandbox_profiles: {p: {}}\nmodels:\n  - id: m\n"
	                     "    sandbox: {profile: p, command: [/bin/true]}\n"));
	/* admin.socket too long to bind: up runs without its admin API (a warning) */
	char dir[93];
	memset(dir, 'd', sizeof(dir));
	dir[0] = '/';
	dir[92] = '\0'; /* a 92-byte directory: <dir>/.admin.XXXXXX/s does not fit; 91 does */
	for (int k = 0; k < 2; k++) {
		b.n = 0;
		tb(&b, "version: 1\nadmin: {socket: %s%s/a.sock}\n", k ? "/" : "",
		   k ? dir + 2 : dir);
		diag_list dd;
		custos_config *cc = NULL;
		diag_init(&dd);
		assert_int_equal(config_parse("t.yaml", b.s, strlen(b.s), &cc, &dd), CUSTOS_OK);
		assert_int_equal(dd.warnings, k ? 0u : 1u);
		if (!k) {
			assert_int_equal(dd.items[0].line, 2);
			assert_int_equal(dd.items[0].col, 17);
			assert_non_null(strstr(dd.items[0].message,
			                       "path too long: custos up would "
			                       "run without its admin API"));
		}
		config_free(cc);
		diag_free(&dd);
	}
}

static void test_up_bound_listeners(void **state)
{
	(void)state;
	static tbuf b;

	listeners_text(&b, 16);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->n_listeners, 16);
	config_free(cfg);
	listeners_text(&b, 17);
	expect_error_at(&b, "'listeners' has 17 entries; the limit is 16", 3, 3,
	                "PROXY_MAX_LISTENERS");
}

static void test_up_bound_body_max(void **state)
{
	(void)state;
	static tbuf b;

	b.n = 0;
	tb(&b, "version: 1\nlimits:\n  body_max: 64MiB\n");
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->limits.body_max, 64u << 20);
	config_free(cfg);
	b.n = 0;
	tb(&b, "version: 1\nlimits:\n  body_max: 67108865\n");
	expect_error_at(&b, "'body_max': 67108865 bytes is above the limit of 67108864 bytes", 3,
	                13, "PROXY_BODY_MAX");
	b.n = 0;
	tb(&b, "version: 1\nlimits:\n  body_max: 100MiB\n");
	expect_error_at(&b, "above the limit of 67108864 bytes", 3, 13, "64MiB");
	/* 0 no longer means the proxy's own 1 MiB: the number written is the one in force */
	b.n = 0;
	tb(&b, "version: 1\nlimits:\n  body_max: 0\n");
	expect_error_at(&b, "'body_max' must be at least 1 byte", 3, 13, "1MiB");
	b.n = 0;
	tb(&b, "version: 1\nlimits:\n  body_max: 1\n");
	cfg = parse_ok(b.s);
	assert_int_equal(cfg->limits.body_max, 1);
	config_free(cfg);
}

static void certs_text(tbuf *b, bool single, size_t n)
{
	b->n = 0;
	tb(b, "version: 1\nlisteners:\n  - id: t\n    address: \"127.0.0.1:1\"\n    tls:\n");
	if (single)
		tb(b, "      cert: /c\n      key: /k\n");
	tb(b, "      certificates:\n");
	for (size_t i = 0; i < n; i++)
		tb(b, "        - {cert: /c%zu, key: /k%zu}\n", i, i);
}

static void test_up_bound_certs(void **state)
{
	(void)state;
	static tbuf b;
	unsigned line = 9; /* the first certificates entry */

	certs_text(&b, true, 1);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->listeners[0].tls.n_certs, 2);
	config_free(cfg);
	certs_text(&b, true, 2);
	expect_error_at(&b, "'certificates' has 2 entries; the limit is 1", line, 9,
	                "PROXY_MAX_CERTS");
	certs_text(&b, false, 2);
	cfg = parse_ok(b.s);
	assert_int_equal(cfg->listeners[0].tls.n_certs, 2);
	config_free(cfg);
	certs_text(&b, false, 3);
	expect_error_at(&b, "'certificates' has 3 entries; the limit is 2", line - 2, 9,
	                "PROXY_MAX_CERTS");
}

static void models_text(tbuf *b, size_t n)
{
	b->n = 0;
	tb(b, "version: 1\nmodels:\n");
	for (size_t i = 0; i < n; i++)
		tb(b, "  - {id: m%zu, upstream: {url: \"http://127.0.0.1:%zu/\"}}\n", i, 1000 + i);
}

static void test_up_bound_models(void **state)
{
	(void)state;
	static tbuf b;

	models_text(&b, 64);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->n_models, 64);
	config_free(cfg);
	models_text(&b, 65);
	expect_error_at(&b, "'models' has 65 entries; the limit is 64", 3, 3,
	                "PROXY_MAX_UPSTREAMS");
}

static void jwt_text(tbuf *b, size_t n_iss, size_t n_aud)
{
	b->n = 0;
	tb(b, "version: 1\nauth:\n  jwt:\n    jwks_file: /j\n    issuers:\n");
	for (size_t i = 0; i < n_iss; i++)
		tb(b, "      - https://i%zu\n", i);
	tb(b, "    audiences:\n");
	for (size_t i = 0; i < n_aud; i++)
		tb(b, "      - a%zu\n", i);
}

static void test_up_bound_jwt(void **state)
{
	(void)state;
	static tbuf b;

	jwt_text(&b, 16, 16);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->auth.jwt.n_issuers, 16);
	assert_int_equal(cfg->auth.jwt.n_audiences, 16);
	config_free(cfg);
	jwt_text(&b, 17, 1);
	expect_error_at(&b, "'issuers' has 17 entries; the limit is 16", 6, 7,
	                "PROXY_JWT_MAX_LIST");
	jwt_text(&b, 1, 17);
	expect_error_at(&b, "'audiences' has 17 entries; the limit is 16", 8, 7,
	                "PROXY_JWT_MAX_LIST");
}

/* n_models models of 1 + n_aliases names each, then n_routes path routes. */
static void names_text(tbuf *b, size_t n_models, size_t n_aliases, size_t n_routes)
{
	b->n = 0;
	tb(b, "version: 1\nmodels:\n");
	for (size_t i = 0; i < n_models; i++) {
		tb(b, "  - id: m%zu\n    upstream: {url: \"http://127.0.0.1:1/\"}\n    aliases:\n",
		   i);
		for (size_t a = 0; a < n_aliases; a++)
			tb(b, "      - m%zu-a%zu\n", i, a);
	}
	if (n_routes)
		tb(b, "routes:\n");
	for (size_t i = 0; i < n_routes; i++)
		tb(b, "  - {path: /r%zu, model: m0}\n", i);
}

static void test_up_bound_route_table(void **state)
{
	(void)state;
	static tbuf b;
	unsigned model_lines = 3 + 15; /* a model of 15 aliases takes 18 lines */

	/* 7 x (id + 15 aliases) + 15 routes + the default route = 128 */
	names_text(&b, 7, 15, 15);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->n_routes, 15);
	config_free(cfg);
	/* a 16th route: refused at it (line: 2 + the models, "routes:", 15 routes before it) */
	names_text(&b, 7, 15, 16);
	expect_error_at(&b, "more than 128 model ids, aliases and routes in all",
	                2 + 7 * model_lines + 1 + 15 + 1, 5, "PROXY_MAX_ROUTES");
	/* 8 x (id + 15 aliases) + the default route = 129: refused at the last alias */
	names_text(&b, 8, 15, 0);
	expect_error_at(&b, "more than 128 model ids, aliases and routes in all",
	                2 + 8 * model_lines, 9, "PROXY_MAX_ROUTES");
}

static void vm_text(tbuf *b, const char *key_value, size_t n_hostdev)
{
	b->n = 0;
	tb(b, "version: 1\nsandbox_profiles:\n  v:\n    vm:\n      disk: /d.img\n");
	if (key_value)
		tb(b, "      %s\n", key_value);
	if (n_hostdev)
		tb(b, "      hostdev:\n");
	for (size_t i = 0; i < n_hostdev; i++)
		tb(b, "        - \"0000:%02zx:00.0\"\n", i + 1);
}

static void test_up_bound_vm(void **state)
{
	(void)state;
	static tbuf b;

	vm_text(&b, "vcpus: 256", 0);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->profiles[0].vm.vcpus, 256);
	config_free(cfg);
	vm_text(&b, "vcpus: 257", 0);
	expect_error_at(&b, "'vcpus': 257 is above the limit of 256", 6, 14, "VM_MAX_VCPUS");
	vm_text(&b, "memory: 4TiB", 0);
	cfg = parse_ok(b.s);
	assert_int_equal(cfg->profiles[0].vm.memory, 4ull << 40);
	config_free(cfg);
	vm_text(&b, "memory: 4194305MiB", 0);
	expect_error_at(&b, "'memory': 4398047559680 bytes is above the limit of 4398046511104", 6,
	                15, "VM_MAX_MEM_MIB");
	vm_text(&b, NULL, 8);
	cfg = parse_ok(b.s);
	assert_int_equal(cfg->profiles[0].vm.n_hostdev, 8);
	config_free(cfg);
	vm_text(&b, NULL, 9);
	expect_error_at(&b, "'hostdev' has 9 entries; the limit is 8", 7, 9, "VM_MAX_HOSTDEVS");
}

static void vm_model_text(tbuf *b, size_t id_len, const char *type)
{
	char id[CFG_MAX_ID_LEN + 1];

	memset(id, 'v', id_len);
	id[id_len] = '\0';
	b->n = 0;
	tb(b,
	   "version: 1\nsandbox_profiles:\n  v: {vm: {disk: /d.img}}\n  p: {}\nmodels:\n"
	   "  - id: %s\n    sandbox: {type: %s, profile: %s%s}\n",
	   id, type, type[0] == 'v' ? "v" : "p", type[0] == 'v' ? "" : ", command: [/m]");
}

static void test_up_bound_vm_model_id(void **state)
{
	(void)state;
	static tbuf b;

	vm_model_text(&b, 54, "vm");
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(strlen(cfg->models[0].id), 54);
	config_free(cfg);
	vm_model_text(&b, 55, "vm");
	expect_error_at(&b, "has 55 bytes; a model with sandbox.type: vm may have at most 54", 6, 9,
	                "VM_NAME_MAX");
	vm_model_text(&b, 64, "process"); /* only a VM's domain name is bounded */
	cfg = parse_ok(b.s);
	config_free(cfg);
}

static void env_text(tbuf *b, size_t n_env, bool egress)
{
	b->n = 0;
	tb(b,
	   "version: 1\nsandbox_profiles:\n  p: {}\n%smodels:\n  - id: m\n    sandbox:\n"
	   "      type: process\n      profile: p\n      command: [/m]\n      env:\n",
	   egress ? "egress: {enabled: true}\n" : "");
	for (size_t i = 0; i < n_env; i++)
		tb(b, "        V%zu: x\n", i);
}

/* With egress on, a process sandbox gets 4 proxy variables beside its own env. */
static void test_up_bound_env(void **state)
{
	(void)state;
	static tbuf b;

	env_text(&b, 252, true);
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->models[0].sandbox.n_env, 252);
	config_free(cfg);
	env_text(&b, 253, true);
	expect_error_at(&b,
	                "model 'm' sets 253 environment variables; the limit with egress is 252",
	                12, 9, "SANDBOX_MAX_ENV");
	env_text(&b, 256, false);
	cfg = parse_ok(b.s);
	config_free(cfg);
}

/* limits.cpu: the sandbox takes 1024 CPUs at most (sandbox_profile_validate). */
static void test_up_bound_cpu(void **state)
{
	(void)state;
	static tbuf b;

	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles:\n  p:\n    limits:\n      cpu: \"1024\"\n");
	custos_config *cfg = parse_ok(b.s);
	assert_int_equal(cfg->profiles[0].limits.cpu_milli, 1024000);
	config_free(cfg);
	b.n = 0;
	tb(&b, "version: 1\nsandbox_profiles:\n  p:\n    limits:\n      cpu: \"1024.001\"\n");
	expect_error_at(&b, "bad cpu limit '1024.001'", 5, 12, "at most 1024");
}

/* docs/CONFIG.md against the parser (tests/integration/config_docs.sh compares the key tables):
 * what a review found. Out-of-range sizes and durations name the range; a data source's
 * max_response of 0 (which silently meant egress.max_response) is refused as egress's is; the
 * map form of egress.dns needs its servers (without them its timeout was never read, not even
 * checked, and the system resolver used). */
static void test_doc_review(void **state)
{
	(void)state;
	static const char ds[] = "version: 1\ndata_sources: [{id: w, url: \"https://w.example/\", "
	                         "classification: public, max_response: %s}]\n";
	char text[512];

	expect_error("version: 1\nlimits: {header_bytes: 64KiB}\n",
	             "'header_bytes': '64KiB' is above the maximum of 32KiB (range 1KiB - 32KiB)");
	expect_error("version: 1\nlimits: {header_bytes: 512}\n",
	             "'header_bytes' must be at least 1KiB (range 1KiB - 32KiB)");
	expect_error("version: 1\nlimits: {timeouts: {shutdown: 11m}}\n",
	             "'shutdown': '11m' is above the maximum of 10m (range 0s - 10m)");
	expect_error("version: 1\nlimits: {timeouts: {client_idle: 100us}}\n",
	             "'client_idle' must be at least 1ms (range 1ms - 1h)");
	expect_error("version: 1\nlimits: {json_depth: 1}\n", "1 is out of range [2, 64]");
	/* a bound of custos up's own (up_bound) names its range too */
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {vcpus: 0, disk: /x}}}\n",
	             "'vcpus': 0 is out of range [1, 256]");
	expect_error("version: 1\nsandbox_profiles: {p: {vm: {memory: 1MiB, disk: /x}}}\n",
	             "'memory' must be at least 64MiB (range 64MiB - 4TiB)");
	snprintf(text, sizeof(text), ds, "0");
	expect_error(text, "'max_response' must be at least 1KiB (range 1KiB - 16GiB)");
	snprintf(text, sizeof(text), ds, "1KiB");
	custos_config *cfg = parse_ok(text);
	assert_int_equal(cfg->data_sources[0].max_response, 1024);
	config_free(cfg);
	expect_error("version: 1\negress: {dns: {timeout: 5s}}\n",
	             "missing required key 'servers'");
	expect_error("version: 1\negress: {dns: {servers: []}}\n", "'servers' must not be empty");
	expect_error("version: 1\negress: {dns: {servers: [10.0.0.53], timeout: 5ms}}\n",
	             "'timeout' must be at least 10ms (range 10ms - 1m)");
	/* a quoted "true" is a string: the hint says why it is refused */
	diag_list d;
	const diag_item *it =
	        parse_fail("version: 1\nadmin: {force: \"true\"}\n", &d, "'true' is not a boolean");
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, "without quotes"));
	diag_free(&d);
	cfg = parse_ok("version: 1\negress: {dns: {servers: [10.0.0.53], timeout: 5s}}\n");
	assert_int_equal(cfg->egress.n_dns_servers, 1);
	assert_true(cfg->egress.dns_timeout_ns == 5000000000ull);
	config_free(cfg);
}

struct key_seen {
	size_t n, refused;
	bool tls_ca, vcpus, identity;
};

static void note_key(const char *path, bool refused, void *arg)
{
	struct key_seen *k = arg;

	k->n++;
	k->refused += refused;
	k->tls_ca |= strcmp(path, "listeners[].tls.client_ca") == 0 && !refused;
	k->vcpus |= strcmp(path, "sandbox_profiles.<id>.vm.vcpus") == 0 && !refused;
	k->identity |= strcmp(path, "auth.mtls.identity") == 0 && refused;
}

/* config_keys lists the tables the parser checks mappings against: a key it lists is taken,
 * a key it flags refused is refused with a hint, not as unknown. */
static void test_config_keys(void **state)
{
	(void)state;
	struct key_seen k = { 0 };

	config_keys(note_key, &k);
	assert_true(k.n > 200);
	assert_int_equal(k.refused, 3);
	assert_true(k.tls_ca && k.vcpus && k.identity);
	expect_error("version: 1\nauth: {mtls: {identity: cn}}\n",
	             "'auth.mtls.identity' is not supported");
	diag_list d;
	const diag_item *it = parse_fail("version: 1\nlimits: {timeouts: {client_headr: 1s}}\n", &d,
	                                 "unknown key 'client_headr'");
	assert_int_equal(it->line, 2);
	assert_int_equal(it->col, 21);
	assert_non_null(it->hint);
	assert_non_null(strstr(it->hint, "did you mean 'client_header'"));
	diag_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_unknown_key_position_and_hint),
		cmocka_unit_test(test_required_and_types),
		cmocka_unit_test(test_all_errors_collected),
		cmocka_unit_test(test_mtls),
		cmocka_unit_test(test_listener_rules),
		cmocka_unit_test(test_listener_ciphers),
		cmocka_unit_test(test_upstream_host),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_admin_rules),
		cmocka_unit_test(test_admin_tls),
		cmocka_unit_test(test_proxy_section),
		cmocka_unit_test(test_models_and_profiles),
		cmocka_unit_test(test_data_egress_audit_auth),
		cmocka_unit_test(test_limits_and_file_mode),
		cmocka_unit_test(test_reload_check),
		cmocka_unit_test(test_reload_start_only),
		cmocka_unit_test(test_doc_review),
		cmocka_unit_test(test_config_keys),
		cmocka_unit_test(test_reload_sandbox_set),
		cmocka_unit_test(test_load_log_section),
		cmocka_unit_test(test_where),
		cmocka_unit_test(test_client_certs),
		cmocka_unit_test(test_crl_keys),
		cmocka_unit_test(test_sink_crl_key),
		cmocka_unit_test(test_ocsp_keys),
		cmocka_unit_test(test_pp_keys),
		cmocka_unit_test(test_pp_errors),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_up_bound_listeners),
		cmocka_unit_test(test_up_bound_body_max),
		cmocka_unit_test(test_up_bound_certs),
		cmocka_unit_test(test_up_bound_models),
		cmocka_unit_test(test_up_bound_jwt),
		cmocka_unit_test(test_up_bound_route_table),
		cmocka_unit_test(test_up_bound_vm),
		cmocka_unit_test(test_up_bound_vm_model_id),
		cmocka_unit_test(test_up_bound_env),
		cmocka_unit_test(test_up_bound_cpu),
		cmocka_unit_test(test_up_bound_sandbox_paths),
		cmocka_unit_test(test_up_bound_sandbox_name),
		cmocka_unit_test(test_up_bound_start_parity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
