/*
 * Unit tests for the ingress proxy's internals: timer heap, rate and token limits, API-key
 * identity, JWKS loading and JWT verification (Ed25519 keys made here with OpenSSL), and
 * option validation in proxy_create (negative cases first), and an upstream reached through
 * connect_fn (how `custos up` reaches a VM: a stream per connection), refused and answered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "custos/egress.h"
#include "proxy/proxy_int.h"

#define NS 1000000000ull

/* ---- timers ---- */
static int fired[8], nfired;
static void on_timer(ev_loop *l, void *obj)
{
	fired[nfired++] = (int)(intptr_t)obj;
}

static void test_timer_order(void **state)
{
	ev_loop l;
	ev_timer t[4] = { 0 };
	uint64_t now = tm_mono_ns();

	assert_int_equal(ev_loop_init(&l), CUSTOS_OK);
	for (int i = 0; i < 4; i++) {
		t[i].cb = on_timer;
		t[i].obj = (void *)(intptr_t)i;
	}
	nfired = 0;
	ev_timer_set(&l, &t[0], now - 3);
	ev_timer_set(&l, &t[1], now - 10);
	ev_timer_set(&l, &t[2], now + 3600 * NS); /* never in this test */
	ev_timer_set(&l, &t[3], now - 5);
	ev_timer_clear(&l, &t[3]);         /* cleared: must not fire */
	ev_timer_set(&l, &t[0], now - 20); /* moved earlier */
	assert_int_equal(ev_run_once(&l, 0), CUSTOS_OK);
	assert_int_equal(nfired, 2);
	assert_int_equal(fired[0], 0);
	assert_int_equal(fired[1], 1);
	assert_int_equal(t[0].at, 0);
	assert_true(t[2].at != 0);
	ev_timer_clear(&l, &t[2]);
	assert_int_equal(l.nheap, 0);
	ev_loop_free(&l);
}

/* ---- limits ---- */
enum { SEC = 0, MIN = 1, HOUR = 2, DAY = 3 };

/* One request limit (count per window rw) and one token budget (per window tw); 0 = none. */
static limit_result check1(struct limiter *l, const char *key, uint64_t rate, int rw,
                           uint64_t tokens, int tw, uint64_t now, uint64_t *retry)
{
	uint64_t r[LIMIT_WINDOWS] = { 0 }, t[LIMIT_WINDOWS] = { 0 };
	r[rw] = rate;
	t[tw] = tokens;
	return limiter_check(l, key, r, t, now, retry);
}

static void charge1(struct limiter *l, const char *key, uint64_t used, uint64_t tokens, int tw,
                    uint64_t now)
{
	uint64_t t[LIMIT_WINDOWS] = { 0 };
	t[tw] = tokens;
	limiter_charge(l, key, used, t, now);
}

static void test_rate_limit(void **state)
{
	struct limiter *l;
	uint64_t t = 1000 * NS, retry;

	assert_int_equal(limiter_new(&l), CUSTOS_OK);
	/* 2 requests per second: the third at once is refused, one more after half a second. */
	assert_int_equal(check1(l, "alice", 2, SEC, 0, 0, t, &retry), LIMIT_OK);
	assert_int_equal(retry, 0);
	assert_int_equal(check1(l, "alice", 2, SEC, 0, 0, t, &retry), LIMIT_OK);
	assert_int_equal(check1(l, "alice", 2, SEC, 0, 0, t, &retry), LIMIT_RATE);
	/* an empty bucket of 2 a second holds one request again after half a second */
	assert_true(retry > NS / 2 - 1000 && retry <= NS / 2 + 1000);
	assert_int_equal(check1(l, "bob", 2, SEC, 0, 0, t, &retry), LIMIT_OK); /* per principal */
	assert_int_equal(check1(l, "alice", 2, SEC, 0, 0, t + NS / 2, &retry), LIMIT_OK);
	assert_int_equal(check1(l, "alice", 2, SEC, 0, 0, t + NS / 2, &retry), LIMIT_RATE);
	/* 2 a minute: the wait is 30 s, not a fixed second */
	assert_int_equal(check1(l, "carol", 2, MIN, 0, 0, t, &retry), LIMIT_OK);
	assert_int_equal(check1(l, "carol", 2, MIN, 0, 0, t, &retry), LIMIT_OK);
	assert_int_equal(check1(l, "carol", 2, MIN, 0, 0, t + NS, &retry), LIMIT_RATE);
	assert_true(retry > 28 * NS && retry <= 29 * NS + 1000);
	limiter_free(l);
}

/* A policy principal id of POLICY_MAX_NAME bytes is the decision's principal whole: it keys
 * the rate limiter and the egress attribution, so an empty or cut name would merge buckets. */
static void test_decide_long_principal(void **state)
{
	(void)state;
	char name[POLICY_MAX_NAME + 1], text[1024], path[] = "/tmp/custos-decide-XXXXXX";
	memset(name, 'p', POLICY_MAX_NAME);
	name[POLICY_MAX_NAME] = '\0';
	snprintf(text, sizeof(text),
	         "version: 1\nprincipals:\n  %s: { match: { api_key_sha256: "
	         "\"0000000000000000000000000000000000000000000000000000000000000001\" } }\n"
	         "rules:\n  - { id: r, effect: allow }\n",
	         name);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	struct decide_policy *dp = NULL;
	custos_err e = decide_load(path, &dp);
	unlink(path);
	assert_int_equal(e, CUSTOS_OK);
	ident id = { .method = IDENT_API_KEY, .has_api_key = true, .key_principal = name };
	decide_out out;
	decide_principal(dp, &id, &out);
	assert_true(out.principal_known);
	assert_string_equal(out.principal, name);
	decide_free(dp);
}

/* Limits over different windows all hold: 2 a second and 3 a minute is no burst of 100000 a
 * day, and the day's limit still counts what the second's allowed. */
static void test_rate_limit_windows(void **state)
{
	struct limiter *l;
	uint64_t t = 1000 * NS, retry;
	uint64_t rate[LIMIT_WINDOWS] = { [SEC] = 2, [MIN] = 3, [DAY] = 100000 };
	uint64_t none[LIMIT_WINDOWS] = { 0 };

	assert_int_equal(limiter_new(&l), CUSTOS_OK);
	assert_int_equal(limiter_check(l, "a", rate, none, t, &retry), LIMIT_OK);
	assert_int_equal(limiter_check(l, "a", rate, none, t, &retry), LIMIT_OK);
	/* the second's bucket is empty */
	assert_int_equal(limiter_check(l, "a", rate, none, t, &retry), LIMIT_RATE);
	assert_true(retry <= NS / 2 + 1000);
	/* a second later the minute's bucket (3) has one left, then none */
	assert_int_equal(limiter_check(l, "a", rate, none, t + NS, &retry), LIMIT_OK);
	assert_int_equal(limiter_check(l, "a", rate, none, t + 2 * NS, &retry), LIMIT_RATE);
	assert_true(retry > 15 * NS); /* the minute's bucket needs ~18 s for one request */
	/* a refused request took nothing from the other buckets: after the minute refills, two
	 * pass again (the second's bucket is full) */
	assert_int_equal(limiter_check(l, "a", rate, none, t + 62 * NS, &retry), LIMIT_OK);
	assert_int_equal(limiter_check(l, "a", rate, none, t + 62 * NS, &retry), LIMIT_OK);
	limiter_free(l);
}

static void test_token_budget(void **state)
{
	struct limiter *l;
	uint64_t t = 1000 * NS, hour = 3600 * NS, retry;

	assert_int_equal(limiter_new(&l), CUSTOS_OK);
	assert_int_equal(check1(l, "alice", 0, 0, 20, HOUR, t, &retry), LIMIT_OK);
	charge1(l, "alice", 13, 20, HOUR, t);
	assert_int_equal(check1(l, "alice", 0, 0, 20, HOUR, t + 1, &retry), LIMIT_OK);
	charge1(l, "alice", 13, 20, HOUR, t + 1);
	assert_int_equal(check1(l, "alice", 0, 0, 20, HOUR, t + 2, &retry), LIMIT_TOKENS);
	assert_int_equal(retry, hour - 2); /* until the window that began at t ends */
	/* A new window starts afresh. */
	assert_int_equal(check1(l, "alice", 0, 0, 20, HOUR, t + hour + 2, &retry), LIMIT_OK);
	/* a day's budget beside the hour's: both count every charge */
	uint64_t rate[LIMIT_WINDOWS] = { 0 }, tok[LIMIT_WINDOWS] = { [HOUR] = 20, [DAY] = 30 };
	assert_int_equal(limiter_check(l, "bob", rate, tok, t, &retry), LIMIT_OK);
	limiter_charge(l, "bob", 19, tok, t);
	assert_int_equal(limiter_check(l, "bob", rate, tok, t + hour, &retry), LIMIT_OK);
	limiter_charge(l, "bob", 19, tok, t + hour);
	/* a fresh hour, but the day's 30 is spent: refused until the day ends */
	assert_int_equal(limiter_check(l, "bob", rate, tok, t + 2 * hour, &retry), LIMIT_TOKENS);
	assert_int_equal(retry, 24 * hour - 2 * hour);
	limiter_free(l);
}

/* ---- API keys ---- */
static void test_api_key(void **state)
{
	proxy_api_key keys[2] = { { .principal = "a" }, { .principal = "b" } };
	unsigned len;
	ident id = { 0 };

	assert_int_equal(EVP_Digest("key-a", 5, keys[0].sha256, &len, EVP_sha256(), NULL), 1);
	assert_int_equal(EVP_Digest("key-b", 5, keys[1].sha256, &len, EVP_sha256(), NULL), 1);
	ident_api_key(&id, SPAN_LIT("key-b"), keys, 2);
	assert_true(id.has_api_key);
	assert_string_equal(id.key_principal, "b");
	assert_string_equal(ident_label(&id), "b");
	ident_free(&id);
	ident_api_key(&id, SPAN_LIT("key-c"), keys, 2);
	assert_true(id.has_api_key);
	assert_null(id.key_principal);
	assert_string_equal(ident_label(&id), "unknown-api-key");
	ident_free(&id);
	assert_string_equal(ident_label(&id), "anonymous");
}

/* ---- JWKS and JWT (EdDSA) ---- */
static void b64url(const uint8_t *in, size_t n, buf *out)
{
	static const char tbl[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			assert_int_equal(buf_append_byte(out, (uint8_t)tbl[(acc >> bits) & 63]),
			                 CUSTOS_OK);
		}
	}
	if (bits > 0)
		assert_int_equal(buf_append_byte(out, (uint8_t)tbl[(acc << (6 - bits)) & 63]),
		                 CUSTOS_OK);
}

static char jwks_path[64];
static EVP_PKEY *ed_key;

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int jwt_setup(void **state)
{
	uint8_t pub[32];
	size_t pl = sizeof(pub);
	buf x, doc;

	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &ed_key) != 1)
		return -1;
	EVP_PKEY_CTX_free(ctx);
	if (EVP_PKEY_get_raw_public_key(ed_key, pub, &pl) != 1)
		return -1;
	buf_init(&x, 256);
	b64url(pub, pl, &x);
	buf_init(&doc, 1024);
	if (buf_printf(&doc,
	               "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k1\",\"x\":\"%.*"
	               "s\"}]}",
	               (int)buf_used(&x), (const char *)buf_ptr(&x)) != CUSTOS_OK)
		return -1;
	snprintf(jwks_path, sizeof(jwks_path), "/tmp/test_proxy_jwks_%d.json", (int)getpid());
	const char *s;
	if (buf_cstr(&doc, &s) != CUSTOS_OK)
		return -1;
	write_file(jwks_path, s);
	buf_free(&x);
	buf_free(&doc);
	return 0;
}

static int jwt_teardown(void **state)
{
	unlink(jwks_path);
	EVP_PKEY_free(ed_key);
	ed_key = NULL;
	return 0;
}

/* A token with the given claims signed by ed_key (or with a flipped signature bit). */
static void make_token(const char *claims, bool corrupt, buf *tok)
{
	const char *hdr = "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}";
	uint8_t sig[64];
	size_t sl = sizeof(sig);

	buf_init(tok, 4096);
	b64url((const uint8_t *)hdr, strlen(hdr), tok);
	assert_int_equal(buf_append_byte(tok, '.'), CUSTOS_OK);
	b64url((const uint8_t *)claims, strlen(claims), tok);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, ed_key), 1);
	assert_int_equal(EVP_DigestSign(md, sig, &sl, buf_ptr(tok), buf_used(tok)), 1);
	EVP_MD_CTX_free(md);
	if (corrupt)
		sig[10] ^= 1;
	assert_int_equal(buf_append_byte(tok, '.'), CUSTOS_OK);
	b64url(sig, sl, tok);
}

/* An EdDSA token with claims, verified with the algorithms accepted (0: all). */
static custos_err verify_algs(const char *claims, bool corrupt, unsigned algorithms, ident *id)
{
	struct jwks *k;
	proxy_jwt_opts o = { .issuers = { "https://other-iss", "https://iss" },
		             .n_issuers = 2,
		             .audiences = { "custos" },
		             .n_audiences = 1,
		             .leeway_s = 5,
		             .algorithms = algorithms };
	buf tok;

	assert_int_equal(jwks_load(jwks_path, &k), CUSTOS_OK);
	make_token(claims, corrupt, &tok);
	custos_err e = jwt_verify(k, &o, buf_span(&tok), 1000000, id);
	buf_free(&tok);
	jwks_free(k);
	return e;
}

static custos_err verify(const char *claims, bool corrupt, ident *id)
{
	return verify_algs(claims, corrupt, 0, id);
}

static void test_jwt(void **state)
{
	ident id = { 0 };

	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u1\",\"aud\":[\"x\",\"custos\"],"
	               "\"exp\":1000100,\"groups\":[\"g1\"]}",
	               false, &id),
	        CUSTOS_OK);
	assert_string_equal(id.jwt_sub, "u1");
	assert_int_equal(id.n_jwt_groups, 1);
	ident_free(&id);
	/* auth.jwt.algorithms: an EdDSA token only where EdDSA is listed */
	const char *ok = "{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"custos\","
	                 "\"exp\":1000100}";
	assert_int_equal(verify_algs(ok, false, PROXY_JWT_RS256 | PROXY_JWT_ES256, &id),
	                 CUSTOS_ERR_DENIED);
	assert_non_null(strstr(err_msg(), "not in auth.jwt.algorithms"));
	assert_int_equal(verify_algs(ok, false, PROXY_JWT_EDDSA, &id), CUSTOS_OK);
	ident_free(&id);
	/* leeway: expired 3 s ago is still accepted with 5 s of leeway, 10 s ago is not */
	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"custos\",\"exp\":999997}",
	               false, &id),
	        CUSTOS_OK);
	ident_free(&id);
	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"custos\",\"exp\":999990}",
	               false, &id),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"custos\",\"exp\":1000100,"
	               "\"nbf\":1000060}",
	               false, &id),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(verify("{\"iss\":\"https://"
	                        "other\",\"sub\":\"u\",\"aud\":\"custos\",\"exp\":1000100}",
	                        false, &id),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"nope\",\"exp\":1000100}",
	               false, &id),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"custos\",\"exp\":1000100}",
	               true, &id),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(
	        verify("{\"iss\":\"https://iss\",\"sub\":\"u\",\"aud\":\"custos\"}", false, &id),
	        CUSTOS_ERR_DENIED); /* exp is required */
	assert_int_equal(verify("not json", false, &id), CUSTOS_ERR_DENIED);
	ident_free(&id);
}

static void test_jwt_malformed(void **state)
{
	struct jwks *k;
	proxy_jwt_opts o = { 0 };
	ident id = { 0 };

	assert_int_equal(jwks_load(jwks_path, &k), CUSTOS_OK);
	assert_int_equal(jwt_verify(k, &o, SPAN_LIT("abc"), 0, &id), CUSTOS_ERR_DENIED);
	assert_int_equal(jwt_verify(k, &o, SPAN_LIT("a.b"), 0, &id), CUSTOS_ERR_DENIED);
	assert_int_equal(jwt_verify(k, &o, SPAN_LIT("!!.b.c"), 0, &id), CUSTOS_ERR_DENIED);
	/* {"alg":"none"} */
	assert_int_equal(jwt_verify(k, &o, SPAN_LIT("eyJhbGciOiJub25lIn0.e30."), 0, &id),
	                 CUSTOS_ERR_DENIED);
	/* {"alg":"HS256"}: symmetric algorithms are never accepted */
	assert_int_equal(jwt_verify(k, &o, SPAN_LIT("eyJhbGciOiJIUzI1NiJ9.e30.AAAA"), 0, &id),
	                 CUSTOS_ERR_DENIED);
	jwks_free(k);
}

static void test_jwks_negative(void **state)
{
	char p[64];
	struct jwks *k = NULL;

	snprintf(p, sizeof(p), "/tmp/test_proxy_bad_%d.json", (int)getpid());
	write_file(p, "{\"keys\":[]}");
	assert_int_equal(jwks_load(p, &k), CUSTOS_ERR_INVAL);
	write_file(p, "{\"nokeys\":1}");
	assert_int_equal(jwks_load(p, &k), CUSTOS_ERR_PARSE);
	write_file(p, "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}");
	assert_int_equal(jwks_load(p, &k), CUSTOS_ERR_PARSE); /* 3 bytes is no Ed25519 key */
	write_file(p, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}");
	assert_int_equal(jwks_load(p, &k), CUSTOS_ERR_PARSE); /* RSA below 2048 bits */
	write_file(p, "{\"keys\":");
	assert_int_not_equal(jwks_load(p, &k), CUSTOS_OK);
	assert_null(k);
	unlink(p);
	assert_int_not_equal(jwks_load("/nonexistent/jwks.json", &k), CUSTOS_OK);
}

/* ---- option validation ---- */
static void base_options(proxy_options *o, const char *listen)
{
	memset(o, 0, sizeof(*o));
	o->workers = 1;
	o->listeners[0].address = xstrdup(listen);
	o->nlisteners = 1;
	o->upstreams[0].name = xstrdup("m");
	o->upstreams[0].address = xstrdup("127.0.0.1:1");
	o->nupstreams = 1;
	o->routes[0].upstream = 0;
	o->nroutes = 1;
}

static void test_create_negative(void **state)
{
	proxy_options o;
	proxy_server *s = NULL;

	/* Plain HTTP on a public address is refused unless forced. */
	base_options(&o, "0.0.0.0:0");
	assert_int_equal(proxy_create(&o, &s), CUSTOS_ERR_PERM);
	assert_null(s);
	/* A route naming no upstream. */
	base_options(&o, "127.0.0.1:0");
	o.routes[0].upstream = 3;
	assert_int_equal(proxy_create(&o, &s), CUSTOS_ERR_INVAL);
	/* No upstreams. */
	base_options(&o, "127.0.0.1:0");
	free(o.upstreams[0].name);
	free(o.upstreams[0].address);
	o.upstreams[0].name = o.upstreams[0].address = NULL;
	o.nupstreams = 0;
	assert_int_equal(proxy_create(&o, &s), CUSTOS_ERR_INVAL);
	/* TLS without a certificate. */
	base_options(&o, "127.0.0.1:0");
	o.listeners[0].tls = true;
	assert_int_not_equal(proxy_create(&o, &s), CUSTOS_OK);
	/* A bad address. */
	base_options(&o, "nonsense");
	assert_int_not_equal(proxy_create(&o, &s), CUSTOS_OK);
	/* Body limit above the named maximum. */
	base_options(&o, "127.0.0.1:0");
	o.max_body = (uint64_t)PROXY_BODY_MAX + 1;
	assert_int_equal(proxy_create(&o, &s), CUSTOS_ERR_LIMIT);
}

static void test_create_ok(void **state)
{
	proxy_options o;
	proxy_server *s = NULL;

	base_options(&o, "127.0.0.1:0");
	o.workers = 2;
	assert_int_equal(proxy_create(&o, &s), CUSTOS_OK);
	assert_true(proxy_bound_port(s, 0) > 0);
	assert_int_equal(proxy_bound_port(s, 1), 0);
	/* A reload that changes the listener count is refused and the old state stays. */
	proxy_options r;
	base_options(&r, "127.0.0.1:0");
	r.listeners[1].address = xstrdup("127.0.0.1:0");
	r.nlisteners = 2;
	assert_int_equal(proxy_reload(s, &r), CUSTOS_ERR_INVAL);
	base_options(&r, "127.0.0.1:0");
	assert_int_equal(proxy_reload(s, &r), CUSTOS_OK);
	proxy_free(s);
}

/* ---- upstream through connect_fn (a VM channel stream in `custos up`) ---- */
/* What egress attribution saw for model m while the fake model answered (the registry
 * egress_ingress_begin filled): the principal a sandboxed model's calls would be judged as. */
static char seen_principal[EGRESS_PRINCIPAL_MAX];
static egress_attr_how seen_how;

static void *fake_model(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char rid[EGRESS_ID_MAX];
	seen_how = egress_attribute("m", SPAN_LIT(""), rid, seen_principal);
	char req[8192];
	size_t got = 0;
	while (got < sizeof(req) - 1) { /* headers, then the (small) body */
		ssize_t n = read(fd, req + got, sizeof(req) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		req[got] = '\0';
		char *end = strstr(req, "\r\n\r\n");
		if (end && strstr(req, "}"))
			break;
	}
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	                           "Content-Length: 24\r\n\r\n{\"answer\":\"from-stream\"}";
	if (write(fd, resp, sizeof(resp) - 1) < 0)
		fail_msg("write");
	close(fd);
	return NULL;
}

static int n_connects;
static custos_err stream_connect(void *arg, int *fd)
{
	int sv[2];
	pthread_t t;
	n_connects++;
	if (arg == NULL) /* the VM is not routable */
		return err_set(CUSTOS_ERR_CLOSED, "not routable");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return err_sys("socketpair");
	if (pthread_create(&t, NULL, fake_model, (void *)(intptr_t)sv[1]) != 0)
		abort();
	pthread_detach(t);
	*fd = sv[0];
	return CUSTOS_OK;
}

static void *run_proxy(void *arg)
{
	if (proxy_run(arg, NULL, NULL) != CUSTOS_OK)
		fail_msg("proxy_run: %s", err_msg());
	return NULL;
}

/* One chat completion through the listener; returns the response (caller frees). */
static char *chat_key(unsigned port, const char *key)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	static const char body[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	                           "\"content\":\"hi\"}]}";
	char req[2048];
	int n = snprintf(req, sizeof(req),
	                 "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	                 "Authorization: Bearer %s\r\n"
	                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	                 key, sizeof(body) - 1, body);
	assert_int_equal(write(fd, req, (size_t)n), n);
	char *resp = calloc(1, 8192);
	size_t got = 0;
	ssize_t r;
	/* Until the whole response is in (the proxy's lingering close waits for our FIN). */
	while (got < 8191 && (r = read(fd, resp + got, 8191 - got)) > 0) {
		got += (size_t)r;
		const char *end = strstr(resp, "\r\n\r\n"), *cl = strstr(resp, "Content-Length: ");
		if (end && cl && got >= (size_t)(end + 4 - resp) + strtoul(cl + 16, NULL, 10))
			break;
	}
	close(fd);
	return resp;
}

static char *chat_once(unsigned port)
{
	return chat_key(port, "unit-key");
}

static void test_connect_fn(void **state)
{
	static int token;
	(void)state;
	for (int routable = 0; routable < 2; routable++) {
		proxy_options o;
		proxy_server *s = NULL;
		pthread_t t;
		base_options(&o, "127.0.0.1:0");
		o.upstreams[0].connect_fn = stream_connect;
		o.upstreams[0].connect_arg = routable ? &token : NULL;
		o.shutdown_grace_ns = NS / 10;
		o.api_keys = xcalloc(PROXY_MAX_API_KEYS, sizeof(o.api_keys[0]));
		o.api_keys[0].principal = xstrdup("unit");
		unsigned dl = 32;
		assert_int_equal(
		        EVP_Digest("unit-key", 8, o.api_keys[0].sha256, &dl, EVP_sha256(), NULL),
		        1);
		o.napi_keys = 1;
		assert_int_equal(proxy_create(&o, &s), CUSTOS_OK);
		unsigned port = proxy_bound_port(s, 0);
		assert_int_equal(pthread_create(&t, NULL, run_proxy, s), 0);
		n_connects = 0;
		char *resp = chat_once(port);
		if (routable) { /* the answer came over the stream, not 127.0.0.1:1 */
			assert_non_null(strstr(resp, " 200 "));
			assert_non_null(strstr(resp, "from-stream"));
			/* no policy: every caller custos.yaml names passes, a key it does not
			 * name is no caller (401, never forwarded) */
			free(resp);
			resp = chat_key(port, "not-a-configured-key");
			assert_non_null(strstr(resp, " 401 "));
			assert_null(strstr(resp, "from-stream"));
		} else { /* refused: a gateway error, never the address */
			assert_null(strstr(resp, " 200 "));
			assert_non_null(strstr(resp, " 50"));
		}
		assert_true(n_connects >= 1);
		free(resp);
		proxy_request_stop(s);
		pthread_join(t, NULL);
		proxy_free(s);
	}
}

/* An identity no policy principal matches is named "jwt:<sub>" in the trail; that label is
 * no policy principal id (the policy refuses such ids), and a principal named as the sub is
 * not the caller: egress calls made for the request are judged with no principal. */
static void test_unmatched_not_egress_principal(void **state)
{
	static int token;
	(void)state;
	char pol[64];
	snprintf(pol, sizeof(pol), "/tmp/test_proxy_pol_%d.yaml", (int)getpid());
	write_file(pol, "version: 1\n"
	                "principals:\n"
	                "  u1: { match: { jwt_sub: someone-else } }\n"
	                "models:\n"
	                "  m: { isolation: none }\n"
	                "rules:\n"
	                "  - id: anyone\n"
	                "    effect: allow\n"
	                "    when: { direction: ingress, model: m }\n");
	proxy_options o;
	proxy_server *s = NULL;
	pthread_t t;
	base_options(&o, "127.0.0.1:0");
	o.upstreams[0].connect_fn = stream_connect;
	o.upstreams[0].connect_arg = &token;
	o.shutdown_grace_ns = NS / 10;
	o.policy_file = xstrdup(pol);
	o.jwt.jwks_file = xstrdup(jwks_path);
	o.jwt.issuers[o.jwt.n_issuers++] = xstrdup("https://iss");
	o.jwt.audiences[o.jwt.n_audiences++] = xstrdup("custos");
	assert_int_equal(proxy_create(&o, &s), CUSTOS_OK);
	unsigned port = proxy_bound_port(s, 0);
	assert_int_equal(pthread_create(&t, NULL, run_proxy, s), 0);
	char claims[256];
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"https://iss\",\"sub\":\"u1\",\"aud\":\"custos\",\"exp\":%llu}",
	         (unsigned long long)(tm_wall_ns() / NS + 600));
	buf tok;
	make_token(claims, false, &tok);
	const char *ts;
	assert_int_equal(buf_cstr(&tok, &ts), CUSTOS_OK);
	seen_how = EGRESS_ATTR_NONE;
	memset(seen_principal, 'x', sizeof(seen_principal) - 1);
	seen_principal[sizeof(seen_principal) - 1] = '\0';
	char *resp = chat_key(port, ts);
	assert_non_null(strstr(resp, " 200 "));
	assert_int_not_equal(seen_how, EGRESS_ATTR_NONE); /* the request was in flight */
	assert_string_equal(seen_principal, "");
	free(resp);
	buf_free(&tok);
	proxy_request_stop(s);
	pthread_join(t, NULL);
	proxy_free(s);
	unlink(pol);
}

/* The name decide gives an identity no principal matches (and checks that the policy would
 * refuse it as a principal id). */
static void unmatched(struct decide_policy *dp, const ident *id, char out[PROXY_PRINCIPAL_MAX])
{
	decide_out d;
	decide_principal(dp, id, &d);
	assert_false(d.principal_known);
	assert_true(strlen(d.principal) < PROXY_PRINCIPAL_MAX);
	assert_true(policy_principal_id_reserved(span_cstr(d.principal)));
	memcpy(out, d.principal, PROXY_PRINCIPAL_MAX);
}

/* A verified JWT's identity, the verifier accepting the issuers iss[0..n). */
static void jwt_ident(const char *const *iss, size_t n, const char *tok_iss, const char *sub,
                      ident *id)
{
	struct jwks *k;
	proxy_jwt_opts o = { .audiences = { "custos" }, .n_audiences = 1, .leeway_s = 5 };
	char claims[512];
	buf tok;

	for (size_t i = 0; i < n; i++)
		o.issuers[o.n_issuers++] = (char *)iss[i];
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":\"custos\",\"exp\":1000100}", tok_iss,
	         sub);
	assert_int_equal(jwks_load(jwks_path, &k), CUSTOS_OK);
	make_token(claims, false, &tok);
	*id = (ident){ .method = IDENT_JWT };
	assert_int_equal(jwt_verify(k, &o, buf_span(&tok), 1000000, id), CUSTOS_OK);
	buf_free(&tok);
	jwks_free(k);
}

/* Two identities no principal matches never share a name, which keys their rate limits and
 * token budgets and names them in the trail: not two certificates whose long SAN URIs differ
 * past the cut (nor one whose SAN is the other's cut name), not a SAN URI, a DNS name and a CN
 * of the same text, not one `sub` from two of the issuers accepted. */
static void test_unmatched_names_distinct(void **state)
{
	(void)state;
	char pol[64], a[PROXY_PRINCIPAL_MAX], b[PROXY_PRINCIPAL_MAX], san[300];
	snprintf(pol, sizeof(pol), "/tmp/test_proxy_names_%d.yaml", (int)getpid());
	write_file(pol, "version: 1\n"
	                "principals:\n"
	                "  p: { match: { cert_san_uri: \"spiffe://nobody\" } }\n"
	                "rules:\n"
	                "  - { id: r, effect: allow }\n");
	struct decide_policy *dp = NULL;
	assert_int_equal(decide_load(pol, &dp), CUSTOS_OK);
	unlink(pol);

	/* SAN URIs of 255 bytes, the same but for the last */
	memcpy(san, "spiffe://corp/", 14);
	memset(san + 14, 'a', 240);
	memcpy(san + 254, "1", 2);
	ident id = { .method = IDENT_MTLS, .has_cert = true, .n_uri = 1, .san_uri = { san } };
	unmatched(dp, &id, a);
	san[254] = '2';
	unmatched(dp, &id, b);
	assert_string_not_equal(a, b);
	assert_memory_equal(a, "cert:spiffe://corp/aaaa", 23);
	/* a SAN that is the first one's cut name is another caller still */
	snprintf(san, sizeof(san), "%s", a + 5);
	unmatched(dp, &id, b);
	assert_string_not_equal(a, b);
	/* a short one is itself */
	id.san_uri[0] = "spiffe://corp/x";
	unmatched(dp, &id, a);
	assert_string_equal(a, "cert:spiffe://corp/x");

	/* one text as a SAN URI, a DNS name, an email, a CN */
	char names[4][PROXY_PRINCIPAL_MAX];
	ident u = {
		.method = IDENT_MTLS, .has_cert = true, .n_uri = 1, .san_uri = { "analytics" }
	};
	ident d = {
		.method = IDENT_MTLS, .has_cert = true, .n_dns = 1, .san_dns = { "analytics" }
	};
	ident e = {
		.method = IDENT_MTLS, .has_cert = true, .n_email = 1, .san_email = { "analytics" }
	};
	ident c = { .method = IDENT_MTLS, .has_cert = true, .cn = "analytics" };
	unmatched(dp, &u, names[0]);
	unmatched(dp, &d, names[1]);
	unmatched(dp, &e, names[2]);
	unmatched(dp, &c, names[3]);
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			assert_string_not_equal(names[i], names[j]);

	/* JWT: with one issuer, the sub names the caller; with several, the issuer too */
	static const char *const one[] = { "https://iss" };
	static const char *const two[] = { "https://iss", "https://other-iss" };
	static const char *const spaced[] = { "https://a", "https://a b" };
	ident j1, j2;
	jwt_ident(one, 1, "https://iss", "u1", &j1);
	unmatched(dp, &j1, a);
	assert_string_equal(a, "jwt:u1");
	ident_free(&j1);
	jwt_ident(two, 2, "https://iss", "u1", &j1);
	jwt_ident(two, 2, "https://other-iss", "u1", &j2);
	unmatched(dp, &j1, a);
	unmatched(dp, &j2, b);
	assert_string_not_equal(a, b);
	assert_string_equal(a, "jwt:https://iss u1");
	ident_free(&j1);
	ident_free(&j2);
	/* the space that ends the issuer is the first one */
	jwt_ident(spaced, 2, "https://a", "b u1", &j1);
	jwt_ident(spaced, 2, "https://a b", "u1", &j2);
	unmatched(dp, &j1, a);
	unmatched(dp, &j2, b);
	assert_string_not_equal(a, b);
	ident_free(&j1);
	ident_free(&j2);
	decide_free(dp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timer_order),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_rate_limit_windows),
		cmocka_unit_test(test_decide_long_principal),
		cmocka_unit_test(test_token_budget),
		cmocka_unit_test(test_api_key),
		cmocka_unit_test_setup_teardown(test_jwt, jwt_setup, jwt_teardown),
		cmocka_unit_test_setup_teardown(test_jwt_malformed, jwt_setup, jwt_teardown),
		cmocka_unit_test(test_jwks_negative),
		cmocka_unit_test_setup_teardown(test_unmatched_not_egress_principal, jwt_setup,
		                                jwt_teardown),
		cmocka_unit_test_setup_teardown(test_unmatched_names_distinct, jwt_setup,
		                                jwt_teardown),
		cmocka_unit_test(test_create_negative),
		cmocka_unit_test(test_create_ok),
		cmocka_unit_test(test_connect_fn),
	};
	log_setup(LOG_LVL_ERROR, LOG_FMT_TEXT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
