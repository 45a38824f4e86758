/*
 * Unit tests for the policy's hard edges: facts a caller does not have, path spellings, routes
 * on egress, limits over several windows, what `policy check` must refuse with a position,
 * and that `policy test` sees what the proxy sees (JWT group cap, every deciding rule).
 */
#include <limits.h>
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

#include "custos/inspect.h"
#include "custos/lazylib.h"
#include "custos/policy.h"
#include "policy/policy_int.h"

static char tmpdir[256];

static policy *parse(const char *text, diag_list *d)
{
	policy *p = NULL;
	diag_init(d);
	if (policy_parse("mem.yaml", text, strlen(text), &p, d) != CUSTOS_OK)
		return NULL;
	return p;
}

static policy *must(const char *text)
{
	diag_list d;
	policy *p = parse(text, &d);
	if (p == NULL) {
		diag_print(&d, stderr);
		fail_msg("policy did not compile");
	}
	diag_free(&d);
	return p;
}

/* The first diagnostic of severity sev containing needle, or NULL. */
static const diag_item *find_diag(const diag_list *d, diag_severity sev, const char *needle)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->items[i].severity == sev && strstr(d->items[i].message, needle))
			return &d->items[i];
	return NULL;
}

/* text must fail to compile with an error containing needle at line:col (0: any). Returns
 * the hint of that error, copied into hint (may be NULL). */
static void expect_error_at(const char *text, const char *needle, unsigned line, unsigned col,
                            char *hint, size_t hn)
{
	diag_list d;
	policy *p = parse(text, &d);
	const diag_item *it = find_diag(&d, DIAG_ERROR, needle);
	if (p != NULL || it == NULL) {
		diag_print(&d, stderr);
		policy_unref(p);
		diag_free(&d);
		fail_msg("expected an error containing '%s'", needle);
	}
	if (line) {
		assert_int_equal(it->line, line);
		assert_int_equal(it->col, col);
	}
	if (hint)
		snprintf(hint, hn, "%s", it->hint ? it->hint : "");
	diag_free(&d);
}

static policy_request request(policy_direction dir)
{
	policy_request r;
	memset(&r, 0, sizeof(r));
	r.direction = dir;
	r.isolation = -1;
	r.time_ns = 1800000000ull * 1000000000ull;
	return r;
}

/* ---- 1. a key over a fact the caller does not have is false */
static void test_missing_facts_never_match(void **state)
{
	(void)state;
	policy *p = must("version: 1\n"
	                 "principals:\n"
	                 "  jwt-any: { match: { jwt_sub: \"*\" } }\n"
	                 "  jwt-deep: { match: { jwt_sub: \"**\" } }\n"
	                 "  uri-any: { match: { cert_san_uri: \"**\" } }\n"
	                 "  dns-any: { match: { cert_san_dns: \"*\" } }\n"
	                 "  app: { match: { cert_cn: app } }\n"
	                 "rules:\n  - { id: r, effect: allow, when: { direction: ingress } }\n");
	policy_identity id;
	memset(&id, 0, sizeof(id));
	/* a random API key: no principal matches it */
	id.has_api_key = true;
	id.api_key_sha256[0] = 0x42;
	assert_null(policy_match_principal(p, &id));
	/* an mTLS client without SANs of those kinds and without a JWT */
	memset(&id, 0, sizeof(id));
	id.subject_cn = SPAN_LIT("app");
	const policy_principal *pr = policy_match_principal(p, &id);
	assert_non_null(pr);
	assert_string_equal(pr->id, "app");
	/* empty SAN entries are not facts either */
	span empty[1] = { SPAN_LIT("") };
	memset(&id, 0, sizeof(id));
	id.san_uris = empty;
	id.n_san_uris = 1;
	id.san_dns = empty;
	id.n_san_dns = 1;
	assert_null(policy_match_principal(p, &id));
	/* an empty subject is no subject */
	memset(&id, 0, sizeof(id));
	id.jwt_iss = SPAN_LIT("https://issuer");
	assert_null(policy_match_principal(p, &id));
	/* a JWT with a subject matches */
	id.jwt_sub = SPAN_LIT("u1");
	pr = policy_match_principal(p, &id);
	assert_non_null(pr);
	assert_string_equal(pr->id, "jwt-any");
	policy_unref(p);
}

/* ---- 2. path spellings */
static const char paths_policy[] =
        "version: 1\n"
        "models:\n  m: { isolation: vm }\n"
        "data:\n"
        "  hr: { url: \"https://hr.example:8443/api/\", classification: confidential }\n"
        "  hr-admin: { url: \"https://hr.example:8443/api/admin\", classification: restricted }\n"
        "  odd: { url: \"https://odd.example/d%61ta/\", classification: public }\n"
        "rules:\n"
        "  - { id: all-in, effect: allow, when: { direction: ingress } }\n"
        "  - { id: chat, effect: allow, when: { route: \"POST /v1/chat\", model: m } }\n"
        "  - { id: no-files, effect: deny, when: { direction: ingress, path: { prefix: "
        "/v1/files } } }\n"
        "  - { id: no-admin, effect: deny, when: { direction: egress, data: hr-admin } }\n"
        "  - { id: hr-read, effect: allow, when: { direction: egress, data: [hr, odd] } }\n"
        "  - { id: cafe, effect: deny, when: { direction: ingress, path: { glob: "
        "\"/caf?/*\" } } }\n";

static const char *ingress_path(const policy *p, const char *path, policy_decision *dec)
{
	policy_request r = request(POLICY_INGRESS);
	r.method = SPAN_LIT("POST");
	r.path = span_cstr(path);
	policy_evaluate(p, &r, dec);
	return dec->effect == POLICY_ALLOW ? "allow" : dec->n_rules ? dec->rules[0] : "refused";
}

static void test_path_spellings(void **state)
{
	(void)state;
	policy *p = must(paths_policy);
	policy_decision dec;
	assert_string_equal(ingress_path(p, "/v1/files", &dec), "no-files");
	/* decoded unreserved characters, collapsed slashes: the same path */
	assert_string_equal(ingress_path(p, "/v1/%66iles", &dec), "no-files");
	assert_string_equal(ingress_path(p, "/v1/fil%65s/x", &dec), "no-files");
	assert_string_equal(ingress_path(p, "//v1/files", &dec), "no-files");
	assert_string_equal(ingress_path(p, "/v1//files/", &dec), "no-files");
	assert_string_equal(ingress_path(p, "/v1/files?x=/y", &dec), "no-files");
	/* paths stay case-sensitive, and a reserved character stays encoded */
	assert_string_equal(ingress_path(p, "/v1/FILES", &dec), "allow");
	assert_string_equal(ingress_path(p, "/v1/files%3Bx", &dec), "allow");
	/* ambiguous paths are refused (denied, no rule named) */
	const char *refused[] = { "/v1/files%2Fx",  "/v1%2ffiles",      "/v1/./files",
		                  "/v1/x/../files", "/v1/%2e%2E/files", "/v1/%2E/files",
		                  "/v1\\files",     "/v1/%00",          "/v1/%zz",
		                  "/v1/%4",         "v1/files" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(refused); i++) {
		ingress_path(p, refused[i], &dec);
		if (dec.effect != POLICY_DENY || dec.n_rules != 0 || dec.default_deny ||
		    strstr(dec.reason, "ambiguous") == NULL)
			fail_msg("path '%s' was not refused", refused[i]);
	}
	/* an over-long path is refused, not cut */
	char *lng = xcalloc(1, POLICY_MAX_PATH + 8);
	memset(lng, 'a', POLICY_MAX_PATH + 4);
	lng[0] = '/';
	ingress_path(p, lng, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	free(lng);
	/* routes are looked up with the same spelling */
	policy_request r = request(POLICY_INGRESS);
	r.model = policy_find_model(p, SPAN_LIT("m"));
	r.route = SPAN_LIT("POST /v1/%63hat");
	r.path = SPAN_LIT("/v1/%63hat");
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.n_rules_total, 2); /* all-in, chat */
	r.route = SPAN_LIT("");
	r.method = SPAN_LIT("POST");
	r.path = SPAN_LIT("/v1//chat");
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.n_rules_total, 2);
	/* '?' is one character: "é" spelled %C3%A9 is one */
	assert_string_equal(ingress_path(p, "/caf%C3%A9/menu", &dec), "cafe");
	assert_string_equal(ingress_path(p, "/caf%c3%a9/menu", &dec), "cafe");
	assert_string_equal(ingress_path(p, "/cafe/menu", &dec), "cafe");
	assert_string_equal(ingress_path(p, "/cafes/menu", &dec), "allow");
	policy_unref(p);
}

static void test_data_source_spellings(void **state)
{
	(void)state;
	policy *p = must(paths_policy);
	const policy_data_source *ds;
	ds = policy_find_data_url(p, SPAN_LIT("https://hr.example:8443/api/%61dmin/users"));
	assert_non_null(ds);
	assert_string_equal(ds->id, "hr-admin");
	ds = policy_find_data_url(p, SPAN_LIT("https://hr.example:8443/api//admin/users"));
	assert_string_equal(ds->id, "hr-admin");
	ds = policy_find_data_url(p, SPAN_LIT("https://hr.example:8443//api/admin"));
	assert_string_equal(ds->id, "hr-admin");
	ds = policy_find_data_url(p, SPAN_LIT("https://hr.example:8443/api/x"));
	assert_string_equal(ds->id, "hr");
	/* the catalogue's own URL is normalised too */
	ds = policy_find_data_url(p, SPAN_LIT("https://odd.example/data/x"));
	assert_non_null(ds);
	assert_string_equal(ds->id, "odd");
	/* ambiguous: no source */
	assert_null(policy_find_data_url(p, SPAN_LIT("https://hr.example:8443/api/x/../admin")));
	assert_null(policy_find_data_url(p, SPAN_LIT("https://hr.example:8443/api%2Fadmin")));
	/* and the egress request over that path is denied whatever the source */
	policy_request r = request(POLICY_EGRESS);
	r.method = SPAN_LIT("GET");
	r.path = SPAN_LIT("/api/%61dmin/users");
	r.data = policy_find_data_url(p, SPAN_LIT("https://hr.example:8443/api/%61dmin/users"));
	policy_decision dec;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	assert_string_equal(dec.rules[0], "no-admin");
	r.path = SPAN_LIT("/api/x%2F..%2Fadmin");
	r.data = policy_find_data_id(p, SPAN_LIT("hr"));
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	assert_non_null(strstr(dec.reason, "ambiguous"));
	/* explain says why */
	buf out;
	buf_init(&out, 1 << 20);
	assert_int_equal(policy_explain(p, &r, &out), CUSTOS_OK);
	const char *txt;
	assert_int_equal(buf_cstr(&out, &txt), CUSTOS_OK);
	assert_non_null(strstr(txt, "path refused: it has an encoded '/'"));
	assert_non_null(strstr(txt, "decision: deny"));
	buf_free(&out);
	policy_unref(p);
}

static void test_ambiguous_patterns_refused(void **state)
{
	(void)state;
	const char *head = "version: 1\nrules:\n  - id: r\n    effect: deny\n    when: ";
	char t[512];
	snprintf(t, sizeof(t), "%s{ path: { prefix: /a/../b } }\n", head);
	expect_error_at(t, "is ambiguous: it has a '.' or '..' segment", 5, 29, NULL, 0);
	snprintf(t, sizeof(t), "%s{ path: \"/a%%2Fb\" }\n", head);
	expect_error_at(t, "encoded '/'", 0, 0, NULL, 0);
	snprintf(t, sizeof(t), "%s{ path: /a?b }\n", head);
	expect_error_at(t, "no '?'", 0, 0, NULL, 0);
	snprintf(t, sizeof(t), "%s{ direction: ingress, route: \"GET /x/./y\" }\n", head);
	expect_error_at(t, "route 'GET /x/./y' is ambiguous", 0, 0, NULL, 0);
	expect_error_at("version: 1\ndata:\n  d: { url: \"https://x/a/%2e%2e/b\", classification: "
	                "public }\n",
	                "its path is ambiguous", 3, 13, NULL, 0);
	/* a pattern is stored in its normal form: "/v1/%66iles" is "/v1/files" */
	policy *p =
	        must("version: 1\nrules:\n"
	             "  - { id: r, effect: deny, when: { path: { prefix: \"/v1/%66iles\" } } }\n");
	policy_decision dec;
	assert_string_equal(ingress_path(p, "/v1/files/1", &dec), "r");
	policy_unref(p);
}

/* ---- 3. a route never holds on egress */
static void test_route_is_ingress_only(void **state)
{
	(void)state;
	diag_list d;
	policy *p = parse("version: 1\nrules:\n"
	                  "  - id: list-models\n    effect: allow\n"
	                  "    when: { route: \"GET /v1/models\" }\n",
	                  &d);
	assert_non_null(p);
	const diag_item *w = find_diag(&d, DIAG_WARNING, "has a route and no direction");
	assert_non_null(w);
	assert_int_equal(w->line, 5);
	diag_free(&d);
	policy_request r = request(POLICY_EGRESS);
	r.method = SPAN_LIT("GET");
	r.path = SPAN_LIT("/v1/models");
	policy_decision dec;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	assert_true(dec.default_deny);
	r.route = SPAN_LIT("GET /v1/models"); /* even when a tool names it */
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	r.direction = POLICY_INGRESS;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_ALLOW);
	/* the matcher itself refuses a route on egress (explain's view) */
	buf why;
	buf_init(&why, 4096);
	r.direction = POLICY_EGRESS;
	assert_false(prule_match(p, &p->rules[0], &r, 1, &why));
	const char *txt;
	assert_int_equal(buf_cstr(&why, &txt), CUSTOS_OK);
	assert_non_null(strstr(txt, "route holds on ingress only"));
	buf_free(&why);
	policy_unref(p);
	/* an explicit egress rule with a route can never match */
	p = parse("version: 1\nrules:\n  - id: e\n    effect: allow\n"
	          "    when: { direction: egress, route: \"GET /x\" }\n",
	          &d);
	assert_non_null(p);
	assert_non_null(find_diag(&d, DIAG_WARNING, "'e' can never match: routes are matched"));
	assert_null(find_diag(&d, DIAG_WARNING, "no direction"));
	diag_free(&d);
	r = request(POLICY_EGRESS);
	r.method = SPAN_LIT("GET");
	r.path = SPAN_LIT("/x");
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	policy_unref(p);
}

/* ---- 4, 17. limits */
static void test_limits(void **state)
{
	(void)state;
	expect_error_at("version: 1\nrules:\n  - id: r\n    effect: allow\n"
	                "    limits: { max_body: 0 }\n",
	                "max_body must be at least 1 byte", 5, 25, NULL, 0);
	policy *p = must("version: 1\n"
	                 "principals:\n  a: { match: { cert_cn: a } }\n"
	                 "models:\n  m1: { isolation: vm }\n"
	                 "rules:\n"
	                 "  - id: per-second\n    effect: allow\n"
	                 "    when: { direction: ingress, principal: a }\n"
	                 "    limits: { requests_per_second: 2, tokens_per_hour: 500, max_body: "
	                 "2KiB }\n"
	                 "  - id: per-day\n    effect: allow\n"
	                 "    when: { direction: ingress, model: m1 }\n"
	                 "    limits: { requests_per_day: 100000, requests_per_minute: 90,"
	                 " tokens_per_day: 1000, max_body: 1KiB }\n");
	policy_request r = request(POLICY_INGRESS);
	r.principal = policy_find_principal(p, SPAN_LIT("a"));
	r.model = policy_find_model(p, SPAN_LIT("m1"));
	policy_decision dec;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_ALLOW);
	/* every window's limit is kept, not only the lowest rate */
	assert_int_equal(dec.limits.requests_per[POLICY_WINDOW_SECOND], 2);
	assert_int_equal(dec.limits.requests_per[POLICY_WINDOW_MINUTE], 90);
	assert_int_equal(dec.limits.requests_per[POLICY_WINDOW_HOUR], 0);
	assert_int_equal(dec.limits.requests_per[POLICY_WINDOW_DAY], 100000);
	assert_int_equal(dec.limits.tokens_per[POLICY_WINDOW_HOUR], 500);
	assert_int_equal(dec.limits.tokens_per[POLICY_WINDOW_DAY], 1000);
	/* the tightest by rate, for display: 1000 a day (0.7/min) */
	assert_int_equal(dec.limits.requests, 100000);
	assert_int_equal(dec.limits.requests_window_ns, 86400000000000ull);
	assert_int_equal(dec.limits.tokens, 1000);
	assert_int_equal(dec.limits.max_body_bytes, 1024);
	buf out;
	buf_init(&out, 1 << 20);
	assert_int_equal(policy_explain(p, &r, &out), CUSTOS_OK);
	const char *txt;
	assert_int_equal(buf_cstr(&out, &txt), CUSTOS_OK);
	assert_non_null(
	        strstr(txt, "requests=2/1s,90/60s,100000/86400s tokens=500/3600s,1000/86400s"));
	buf_free(&out);
	policy_unref(p);
}

/* ---- 5. detector patterns are compiled by check */
static void test_detector_patterns_checked(void **state)
{
	(void)state;
	if (lazylib_hyperscan() != CUSTOS_OK)
		skip(); /* no libhs here: the check warns instead */
	expect_error_at("version: 1\ndetectors:\n  bad: { patterns: ['(unclosed'] }\n",
	                "detector 'bad': pattern: Missing close parenthesis", 3, 21, NULL, 0);
	/* unused detectors too: the file is wrong either way */
	expect_error_at("version: 1\ndetectors:\n  ok: { patterns: ['x[0-9]+'] }\n"
	                "  un: { patterns: ['a', '[z-a]'] }\n",
	                "detector 'un'", 4, 25, NULL, 0);
	expect_error_at("version: 1\ndetectors:\n  e: { patterns: ['a*'] }\n", "empty text", 0, 0,
	                NULL, 0);
	policy_unref(must("version: 1\ndetectors:\n  emp: { patterns: ['\\bEMP-[0-9]{6}\\b'] }\n"));
}

/* A pattern hs_expression_info passes but Hyperscan cannot compile for streaming ("Pattern is
 * too large."): check refuses it at its position, as the proxy's engine refuses it at start. */
static void test_detector_patterns_compiled_for_streaming(void **state)
{
	(void)state;
	if (lazylib_hyperscan() != CUSTOS_OK)
		skip();
	static const char big[] =
	        "version: 1\ndetectors:\n  big: { patterns: ['[a-z]{1,100}@[a-z]{1,300}'] }\n"
	        "rules:\n  - id: r\n    effect: allow\n    inspect: { prompt: { big: deny } }\n";
	expect_error_at(big, "detector 'big': pattern: Pattern is too large", 3, 21, NULL, 0);
	/* the same shape, smaller: accepted, and the engine built from it compiles */
	policy *p = must(
	        "version: 1\ndetectors:\n  big: { patterns: ['[a-z]{1,10}@[a-z]{1,30}'] }\n"
	        "rules:\n  - id: r\n    effect: allow\n    inspect: { prompt: { big: deny } }\n");
	inspect_engine *e = NULL;
	assert_int_equal(inspect_engine_from_policy(p, &e), CUSTOS_OK);
	inspect_engine_free(e);
	policy_unref(p);
	/* a keyword is checked as the literal the engine compiles */
	policy_unref(must(
	        "version: 1\ndetectors:\n  kw: { patterns: ['K[0-9]{4}'], keywords: [staff] }\n"));
	/* a match that may pass INSPECT_MAX_PATTERN_WIDTH (512) bytes: accepted with a warning
	 * at the pattern (a stream may release its first part); one of 512 at most: none */
	diag_list d;
	p = parse("version: 1\ndetectors:\n  acct: { patterns: ['ID-[0-9]{4}', 'ACCT-[0-9]+'] }\n",
	          &d);
	assert_non_null(p);
	const diag_item *w = find_diag(&d, DIAG_WARNING, "a match may be longer than 512 bytes");
	assert_non_null(w);
	assert_int_equal(w->line, 3);
	assert_int_equal(w->col, 37);
	diag_free(&d);
	policy_unref(p);
	p = parse("version: 1\ndetectors:\n  acct: { patterns: ['A[0-9]{511}', 'B[0-9]{1,64}'] }\n",
	          &d);
	assert_non_null(p);
	assert_null(find_diag(&d, DIAG_WARNING, "a match may be longer"));
	diag_free(&d);
	policy_unref(p);
	p = parse("version: 1\ndetectors:\n  acct: { patterns: ['A[0-9]{512}'] }\n", &d);
	assert_non_null(p);
	assert_non_null(find_diag(&d, DIAG_WARNING, "a match may be longer than 512 bytes"));
	diag_free(&d);
	policy_unref(p);
}

/* ---- 6. an id listed twice counts once */
static void test_duplicate_list_items(void **state)
{
	(void)state;
	diag_list d;
	policy *p =
	        parse("version: 1\n"
	              "principals:\n  a: { match: { cert_cn: a } }\n"
	              "models:\n  m1: { isolation: vm }\n"
	              "rules:\n"
	              "  - { id: r1, effect: allow, when: { direction: ingress, principal: [a, "
	              "a], model: m1 } }\n"
	              "  - { id: r2, effect: allow, when: { direction: ingress, model: m1, "
	              "route: [\"POST /x\", \"POST //x\"] } }\n"
	              "  - { id: r3, effect: allow, when: { direction: ingress, model: [m1, m1], "
	              "principal.groups: [g, g] } }\n",
	              &d);
	assert_non_null(p);
	assert_non_null(find_diag(&d, DIAG_WARNING, "'a' listed twice"));
	assert_non_null(find_diag(&d, DIAG_WARNING, "'POST //x' listed twice"));
	assert_non_null(find_diag(&d, DIAG_WARNING, "'m1' listed twice"));
	diag_free(&d);
	policy_request r = request(POLICY_INGRESS);
	r.principal = policy_find_principal(p, SPAN_LIT("a"));
	r.model = policy_find_model(p, SPAN_LIT("m1"));
	r.route = SPAN_LIT("POST /x");
	policy_decision dec;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.n_rules_total, 2);
	assert_string_not_equal(dec.rules[0], dec.rules[1]);
	assert_int_equal(dec.n_considered, 3);
	policy_unref(p);
}

/* ---- 7, 12. duplicates: refused, and where */
static void test_duplicate_positions(void **state)
{
	(void)state;
	char hint[512];
	expect_error_at("version: 1\n"
	                "principals:\n  a: { match: { cert_cn: a }, attributes: { c: internal } }\n"
	                "rules:\n  - id: r\n    effect: deny\n"
	                "    when: { principal.attributes: { c: public, c: internal } }\n",
	                "duplicate key 'c' (first at line 7)", 7, 48, NULL, 0);
	/* duplicate ids point to both places */
	expect_error_at("version: 1\nprincipals:\n  a: { match: { cert_cn: a } }\n"
	                "  a: { match: { cert_cn: b } }\n",
	                "duplicate principal id 'a'", 4, 3, hint, sizeof(hint));
	assert_string_equal(hint, "first defined at mem.yaml:3:3");
	expect_error_at("version: 1\nmodels:\n  m: { isolation: vm }\n  m: { isolation: none }\n",
	                "duplicate model id 'm'", 4, 3, hint, sizeof(hint));
	assert_string_equal(hint, "first defined at mem.yaml:3:3");
	expect_error_at("version: 1\ndata:\n  d: { url: \"https://a/\", classification: public }\n"
	                "  d: { url: \"https://b/\", classification: public }\n",
	                "duplicate data source id 'd'", 4, 3, hint, sizeof(hint));
	assert_string_equal(hint, "first defined at mem.yaml:3:3");
	expect_error_at("version: 1\ndetectors:\n  x: { patterns: [abc] }\n"
	                "  x: { patterns: [abd] }\n",
	                "duplicate detector id 'x'", 4, 3, hint, sizeof(hint));
	assert_string_equal(hint, "first defined at mem.yaml:3:3");
}

/* ---- 8, 16. globs */
static void test_globs(void **state)
{
	(void)state;
	policy *p = must("version: 1\nprincipals:\n"
	                 "  up: { match: { cert_san_dns: \"*.SEC.corp.example\" } }\n"
	                 "  q: { match: { jwt_sub: \"user?\" } }\n");
	span dns[1] = { SPAN_LIT("a.sec.corp.example") };
	policy_identity id;
	memset(&id, 0, sizeof(id));
	id.san_dns = dns;
	id.n_san_dns = 1;
	assert_non_null(policy_match_principal(p, &id));
	dns[0] = SPAN_LIT("A.Sec.CORP.example");
	assert_non_null(policy_match_principal(p, &id));
	memset(&id, 0, sizeof(id));
	id.jwt_sub = SPAN_LIT("user\xc3\xa9"); /* "useré": '?' is one character */
	assert_non_null(policy_match_principal(p, &id));
	id.jwt_sub = SPAN_LIT("user\xe2\x82\xac"); /* "user€" */
	assert_non_null(policy_match_principal(p, &id));
	id.jwt_sub = SPAN_LIT("userab");
	assert_null(policy_match_principal(p, &id));
	policy_unref(p);
	assert_true(policy_glob_match("a?c", 3,
	                              "a\xc3\xa9"
	                              "c",
	                              4));
	assert_false(policy_glob_match("a?c", 3,
	                               "a\xc3\xa9\xc3\xa9"
	                               "c",
	                               6));
	assert_true(policy_glob_match("a??c", 4,
	                              "a\xc3\xa9\xc3\xa9"
	                              "c",
	                              6));
	assert_true(policy_glob_match("a?c", 3,
	                              "a\xffg"
	                              "c",
	                              4) == false);
	assert_true(policy_glob_match("a??c", 4,
	                              "a\xff"
	                              "gc",
	                              4)); /* an invalid byte is one */
	assert_true(policy_glob_match("\xc3\xa9*", 3, "\xc3\xa9t\xc3\xa9", 5));
}

/* ---- 9. a FIFO is refused, not waited on */
static void test_fifo_include(void **state)
{
	(void)state;
	char fifo[512], top[512];
	snprintf(fifo, sizeof(fifo), "%s/fifo.yaml", tmpdir);
	snprintf(top, sizeof(top), "%s/top.yaml", tmpdir);
	assert_int_equal(mkfifo(fifo, 0644), 0);
	FILE *f = fopen(top, "w");
	assert_non_null(f);
	fputs("version: 1\ninclude: [fifo.yaml]\n", f);
	fclose(f);
	chmod(top, 0644);
	alarm(20); /* a hang fails the test instead of the suite's timeout */
	diag_list d;
	diag_init(&d);
	policy *p = NULL;
	assert_int_not_equal(policy_load(top, &p, &d), CUSTOS_OK);
	const diag_item *it = find_diag(&d, DIAG_ERROR, "not a regular file");
	assert_non_null(it);
	assert_int_equal(it->line, 2);
	diag_free(&d);
	diag_init(&d);
	assert_int_not_equal(policy_load(fifo, &p, &d), CUSTOS_OK);
	diag_free(&d);
	alarm(0);
	unlink(fifo);
	unlink(top);
}

/* ---- 10. a misspelt level in an attribute compared in order */
static void test_attribute_levels(void **state)
{
	(void)state;
	char hint[256];
	expect_error_at("version: 1\n"
	                "principals:\n"
	                "  hr: { match: { cert_cn: hr }, attributes: { clearance: confidental } }\n"
	                "  ok: { match: { cert_cn: ok }, attributes: { clearance: internal } }\n"
	                "data:\n  d: { url: \"https://d/\", classification: restricted }\n"
	                "rules:\n  - id: cover\n    effect: deny\n"
	                "    when: { data.classification: { above: principal.attributes.clearance "
	                "} }\n",
	                "attribute 'clearance' of principal 'hr' is 'confidental'", 3, 58, hint,
	                sizeof(hint));
	assert_string_equal(hint, "did you mean 'confidential'?");
	expect_error_at(
	        "version: 1\n"
	        "principals:\n"
	        "  hr: { match: { cert_cn: hr }, attributes: { clearance: secret } }\n"
	        "rules:\n  - id: r\n    effect: allow\n"
	        "    when: { principal.attributes: { clearance: { at_least: internal } } }\n",
	        "is 'secret', not a classification level, and rule 'r'", 3, 58, NULL, 0);
	/* compared by equality only: any value */
	policy_unref(must("version: 1\n"
	                  "principals:\n"
	                  "  hr: { match: { cert_cn: hr }, attributes: { team: payroll } }\n"
	                  "rules:\n  - id: r\n    effect: allow\n"
	                  "    when: { principal.attributes: { team: payroll } }\n"));
}

/* ---- 11. the proxy's JWT group cap, applied by the matcher */
static void test_jwt_group_cap(void **state)
{
	(void)state;
	char text[1024];
	char lng[POLICY_MAX_JWT_GROUP_BYTES + 2];
	memset(lng, 'L', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = '\0';
	snprintf(text, sizeof(text),
	         "version: 1\nprincipals:\n  t: { match: { jwt_group: target } }\n"
	         "  long: { match: { jwt_group: %s } }\n",
	         lng);
	diag_list d;
	policy *p = parse(text, &d);
	assert_non_null(p);
	assert_non_null(find_diag(&d, DIAG_WARNING, "'long' can never match"));
	diag_free(&d);
	span g[POLICY_MAX_JWT_GROUPS + 2];
	char names[POLICY_MAX_JWT_GROUPS + 2][8];
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(g); i++) {
		snprintf(names[i], sizeof(names[i]), "g%zu", i);
		g[i] = span_cstr(names[i]);
	}
	policy_identity id;
	memset(&id, 0, sizeof(id));
	id.jwt_sub = SPAN_LIT("u");
	id.jwt_groups = g;
	/* the 16th group counts, the 17th is beyond what the proxy keeps */
	g[POLICY_MAX_JWT_GROUPS - 1] = SPAN_LIT("target");
	id.n_jwt_groups = POLICY_MAX_JWT_GROUPS;
	assert_non_null(policy_match_principal(p, &id));
	g[POLICY_MAX_JWT_GROUPS - 1] = span_cstr(names[POLICY_MAX_JWT_GROUPS - 1]);
	g[POLICY_MAX_JWT_GROUPS] = SPAN_LIT("target");
	id.n_jwt_groups = POLICY_MAX_JWT_GROUPS + 1;
	assert_null(policy_match_principal(p, &id));
	/* a group over the byte cap is skipped (and does not count towards the 16) */
	g[0] = span_cstr(lng);
	assert_non_null(policy_match_principal(p, &id));
	id.jwt_groups = &g[0];
	id.n_jwt_groups = 1;
	assert_null(policy_match_principal(p, &id));
	policy_unref(p);
}

/* ---- 13, 18. files: the hash is the content's; the cycle names the including file */
static void write_file(const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, 0644);
}

static void load_hash(const char *path, char out[65])
{
	diag_list d;
	diag_init(&d);
	policy *p = NULL;
	if (policy_load(path, &p, &d) != CUSTOS_OK) {
		diag_print(&d, stderr);
		fail_msg("%s did not load", path);
	}
	snprintf(out, 65, "%s", policy_hash_hex(p));
	policy_unref(p);
	diag_free(&d);
}

/* An include path that does not fit PATH_MAX once joined to its directory is refused at the
 * include, never cut short: cut at PATH_MAX - 1 bytes this one would name inc.yaml. */
static void test_include_path_too_long(void **state)
{
	(void)state;
	write_file("inc.yaml", "rules:\n  - { id: r, effect: allow }\n");
	char *dir = realpath(tmpdir, NULL);
	assert_non_null(dir);
	/* dir + "/" + "./" + slashes + "inc.yaml" is PATH_MAX - 1 bytes; "ZZ" goes past */
	size_t fixed = strlen(dir) + 1 + 2 + strlen("inc.yaml");
	assert_true(fixed < PATH_MAX - 1);
	size_t m = PATH_MAX - 1 - fixed;
	size_t tl = 64 + m + 32;
	char *text = malloc(tl);
	assert_non_null(text);
	int off = snprintf(text, tl, "version: 1\ninclude:\n  - './");
	memset(text + off, '/', m);
	snprintf(text + off + m, tl - (size_t)off - m, "inc.yamlZZ'\n");
	write_file("long.yaml", text);
	free(text);
	char path[600];
	snprintf(path, sizeof(path), "%s/long.yaml", dir);
	diag_list d;
	diag_init(&d);
	policy *p = NULL;
	assert_int_not_equal(policy_load(path, &p, &d), CUSTOS_OK);
	assert_null(p);
	const diag_item *it = find_diag(&d, DIAG_ERROR, "include path too long");
	if (it == NULL)
		diag_print(&d, stderr);
	assert_non_null(it);
	assert_int_equal(it->line, 3);
	assert_int_equal(it->col, 5);
	assert_non_null(strstr(it->hint, "PATH_MAX"));
	diag_free(&d);
	/* two bytes shorter (without "ZZ"), PATH_MAX - 1 bytes in all: it fits, inc.yaml loads */
	text = malloc(tl);
	assert_non_null(text);
	off = snprintf(text, tl, "version: 1\ninclude:\n  - './");
	memset(text + off, '/', m);
	snprintf(text + off + m, tl - (size_t)off - m, "inc.yaml'\n");
	write_file("long.yaml", text);
	free(text);
	diag_init(&d);
	if (policy_load(path, &p, &d) != CUSTOS_OK)
		diag_print(&d, stderr);
	assert_non_null(p);
	assert_int_equal(policy_rule_count(p), 1);
	policy_unref(p);
	diag_free(&d);
	unlink(path); /* the group's teardown removes the (then empty) directory */
	free(dir);
}

static void test_files(void **state)
{
	(void)state;
	write_file("main.yaml", "version: 1\ninclude: [inc.yaml]\n");
	write_file("inc.yaml", "rules:\n  - { id: r, effect: allow }\n");
	char a[600], b[600], h1[65], h2[65], h3[65];
	snprintf(a, sizeof(a), "%s/main.yaml", tmpdir);
	snprintf(b, sizeof(b), "%s/./main.yaml", tmpdir);
	load_hash(a, h1);
	load_hash(b, h2);
	assert_string_equal(h1, h2);
	char cwd[512];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmpdir), 0);
	load_hash("main.yaml", h3);
	assert_string_equal(h1, h3);
	load_hash("./main.yaml", h3);
	assert_string_equal(h1, h3);
	assert_int_equal(chdir(cwd), 0);
	/* text compiled under another name: the same hash */
	const char *t = "version: 1\nrules: []\n";
	diag_list d;
	diag_init(&d);
	policy *p1 = NULL, *p2 = NULL;
	assert_int_equal(policy_parse("x.yaml", t, strlen(t), &p1, &d), CUSTOS_OK);
	assert_int_equal(policy_parse("/etc/y.yaml", t, strlen(t), &p2, &d), CUSTOS_OK);
	assert_string_equal(policy_hash_hex(p1), policy_hash_hex(p2));
	policy_unref(p1);
	policy_unref(p2);
	diag_free(&d);
	/* an included file's content is in it */
	write_file("inc.yaml", "rules:\n  - { id: r2, effect: allow }\n");
	load_hash(a, h2);
	assert_string_not_equal(h1, h2);

	/* cycle: the error is at b's include of a, and names b as the includer */
	write_file("a.yaml", "version: 1\ninclude: [b.yaml]\n");
	write_file("b.yaml", "rules: []\ninclude: [a.yaml]\n");
	snprintf(a, sizeof(a), "%s/a.yaml", tmpdir);
	diag_init(&d);
	assert_int_not_equal(policy_load(a, &p1, &d), CUSTOS_OK);
	const diag_item *it = find_diag(&d, DIAG_ERROR, "include cycle");
	assert_non_null(it);
	assert_non_null(strstr(it->file, "b.yaml"));
	assert_int_equal(it->line, 2);
	char want[1024];
	snprintf(want, sizeof(want), "'%s/b.yaml' includes '%s/a.yaml'", tmpdir, tmpdir);
	if (strstr(it->message, want) == NULL)
		fail_msg("cycle message: %s", it->message);
	diag_free(&d);
	const char *names[] = { "main.yaml", "inc.yaml", "a.yaml", "b.yaml", "tests.yaml" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(names); i++) {
		snprintf(a, sizeof(a), "%s/%s", tmpdir, names[i]);
		unlink(a);
	}
}

/* ---- 15. `policy test` compares the full set of deciding rules */
static void test_runner_full_rule_set(void **state)
{
	(void)state;
	char text[2048] = "version: 1\nrules:\n";
	size_t off = strlen(text);
	for (int i = 1; i <= 10; i++)
		off += (size_t)snprintf(
		        text + off, sizeof(text) - off,
		        "  - { id: d%d, effect: deny, when: { direction: ingress } }\n", i);
	policy *p = must(text);
	write_file("tests.yaml",
	           "cases:\n"
	           "  - name: all ten\n    request: { direction: ingress }\n    expect: deny\n"
	           "    rules: [d10, d9, d8, d7, d6, d5, d4, d3, d2, d1]\n"
	           "  - name: eight of ten\n    request: { direction: ingress }\n"
	           "    expect: deny\n    rules: [d1, d2, d3, d4, d5, d6, d7, d8]\n"
	           "  - name: eleven\n    request: { direction: ingress }\n    expect: deny\n"
	           "    rules: [d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d1]\n");
	char path[512];
	snprintf(path, sizeof(path), "%s/tests.yaml", tmpdir);
	diag_list d;
	diag_init(&d);
	policy_test_result res;
	char *report = NULL;
	size_t rlen = 0;
	FILE *f = open_memstream(&report, &rlen);
	assert_non_null(f);
	assert_int_equal(policy_run_tests(p, path, f, &res, &d), CUSTOS_OK);
	fclose(f);
	assert_int_equal(res.passed, 2);
	assert_int_equal(res.failed, 1);
	assert_non_null(strstr(report, "FAIL 'eight of ten'"));
	assert_non_null(strstr(report, "deciding rules [d1,d2,d3,d4,d5,d6,d7,d8,d9,d10]"));
	assert_non_null(find_diag(&d, DIAG_WARNING, "'d1' listed twice"));
	free(report);
	diag_free(&d);
	/* an unknown rule id in a test is an error */
	write_file("tests.yaml", "cases:\n  - name: typo\n    request: { direction: ingress }\n"
	                         "    expect: deny\n    rules: [d11]\n");
	diag_init(&d);
	f = fopen("/dev/null", "w");
	assert_int_not_equal(policy_run_tests(p, path, f, &res, &d), CUSTOS_OK);
	fclose(f);
	assert_non_null(find_diag(&d, DIAG_ERROR, "unknown rule 'd11'"));
	diag_free(&d);
	snprintf(path, sizeof(path), "%s/tests.yaml", tmpdir);
	unlink(path);
	policy_unref(p);
}

/* An absolute host name (one trailing dot) is the same host: the egress proxy drops the dot
 * before it looks the source up, so the policy's catalogue must too, on both sides. */
static void test_data_source_trailing_dot(void **state)
{
	(void)state;
	policy *p = must("version: 1\n"
	                 "data:\n"
	                 "  hr: { url: \"https://HR.corp.example.:8443/api/\", classification: "
	                 "confidential }\n"
	                 "  wiki: { url: \"https://wiki.corp.example/\", classification: public }\n"
	                 "rules:\n"
	                 "  - { id: no-hr, effect: deny, when: { direction: egress, data: hr } }\n"
	                 "  - { id: out, effect: allow, when: { direction: egress } }\n");
	/* as the egress proxy hands it over: lower case, no trailing dot */
	const policy_data_source *ds = policy_find_data_source(
	        p, SPAN_LIT("https"), SPAN_LIT("hr.corp.example"), 8443, SPAN_LIT("/api/x"));
	assert_non_null(ds);
	assert_string_equal(ds->id, "hr");
	/* as a test case or the decision point writes it, with the dot */
	ds = policy_find_data_url(p, SPAN_LIT("https://wiki.corp.example./x"));
	assert_non_null(ds);
	assert_string_equal(ds->id, "wiki");
	ds = policy_find_data_url(p, SPAN_LIT("https://hr.corp.example.:8443/api/x"));
	assert_non_null(ds);
	assert_string_equal(ds->id, "hr");
	/* so the deny over the source fires for the call the proxy sees */
	policy_request r = request(POLICY_EGRESS);
	r.method = SPAN_LIT("GET");
	r.path = SPAN_LIT("/api/x");
	r.data = policy_find_data_source(p, SPAN_LIT("https"), SPAN_LIT("hr.corp.example"), 8443,
	                                 r.path);
	policy_decision dec;
	policy_evaluate(p, &r, &dec);
	assert_int_equal(dec.effect, POLICY_DENY);
	assert_string_equal(dec.rules[0], "no-hr");
	/* a host the egress proxy refuses would name a source no call maps to: an error */
	expect_error_at("version: 1\ndata:\n  d: { url: \"https://h%41.example/\", classification: "
	                "public }\n",
	                "the egress proxy refuses '%' in a host", 3, 13, NULL, 0);
	expect_error_at("version: 1\ndata:\n  d: { url: \"https://w\xc3\xafki.example/\", "
	                "classification: public }\n",
	                "refuses byte 0xC3 in a host", 3, 13, NULL, 0);
	policy_unref(
	        must("version: 1\ndata:\n"
	             "  a: { url: \"https://wiki_x-1.corp.example/\", classification: public }\n"
	             "  b: { url: \"https://10.0.0.1/\", classification: public }\n"
	             "  c: { url: \"https://[2001:db8::1]:8443/\", classification: public }\n"));
	/* only one dot: "a.." is not "a" */
	assert_null(policy_find_data_url(p, SPAN_LIT("https://wiki.corp.example../x")));
	policy_unref(p);
}

/* A file that is no policy, and a version that does not exist, are said in plain words. */
static void test_top_level_messages(void **state)
{
	(void)state;
	expect_error_at("[1, 2]\n", "a policy file must be a mapping, not a list", 1, 1, NULL, 0);
	expect_error_at("just text\n", "a policy file must be a mapping, not a scalar", 1, 1, NULL,
	                0);
	char hint[128];
	expect_error_at("version: 2\nrules: []\n", "unknown policy version 2", 1, 10, hint,
	                sizeof(hint));
	assert_string_equal(hint, "write version: 1");
	expect_error_at("version: 0\nrules: []\n", "unknown policy version 0", 1, 10, NULL, 0);
	/* a value of the wrong kind is named for what it is */
	expect_error_at("version: 1\nprincipals:\n  a: 1\n",
	                "a principal must be a mapping, not a scalar", 3, 6, NULL, 0);
	expect_error_at("version: 1\nmodels: [m]\n",
	                "'models' (id: {...}) must be a mapping, not a list", 2, 9, NULL, 0);
	expect_error_at("version: 1\nrules:\n  - { id: r, effect: allow, when: [x] }\n",
	                "'when' must be a mapping, not a list", 3, 35, NULL, 0);
	/* an empty list outside a rule is no condition */
	char eh[128];
	expect_error_at("version: 1\ndetectors:\n  emp: { patterns: [] }\n", "empty list", 3, 20,
	                eh, sizeof(eh));
	assert_string_equal(eh, "give at least one item, or omit the key");
	diag_list ed;
	assert_null(parse("version: 1\ndetectors:\n  emp: { patterns: [] }\n", &ed));
	assert_null(find_diag(&ed, DIAG_ERROR, "condition"));
	diag_free(&ed);
	expect_error_at("version: 1\nrules:\n  - { id: r, effect: allow, when: { method: [] } }\n",
	                "empty list: the condition could never hold", 3, 45, NULL, 0);
	expect_error_at("version: 1\nrules:\n  - { id: r, effect: allow, limits: 5 }\n",
	                "'limits' must be a mapping, not a scalar", 3, 37, NULL, 0);
}

/* from: 24:00 would open the window on the day after the one `days` names: refused, as the
 * reference allows 24:00 for `to` only. */
static void test_time_window_from_2400(void **state)
{
	(void)state;
	expect_error_at("version: 1\nrules:\n  - id: r\n    effect: allow\n"
	                "    when: { time: { days: [fri], from: \"24:00\", to: \"06:00\" } }\n",
	                "'from' must be 00:00..23:59", 5, 40, NULL, 0);
	policy_unref(must("version: 1\nrules:\n  - id: r\n    effect: allow\n"
	                  "    when: { time: { days: [fri], from: \"22:00\", to: \"24:00\" } }\n"));
}

/* A request context (policy test, explain, POST /v1/decide) must be one the proxy could
 * decide, at an instant that does not depend on the day the case runs. */
static void test_request_context_refusals(void **state)
{
	(void)state;
	policy *p = must("version: 1\n"
	                 "data:\n"
	                 "  hr: { url: \"https://hr.example/api/\", classification: internal }\n"
	                 "rules:\n"
	                 "  - { id: out, effect: allow, when: { direction: egress } }\n");
	static const struct {
		const char *req, *err; /* err: NULL when accepted */
	} cases[] = {
		/* the epoch is "now" to the evaluator */
		{ "{direction: ingress, time: \"1970-01-01T00:00:00Z\"}", "is the epoch itself" },
		{ "{direction: ingress, time: \"1970-01-01T01:00:00+01:00\"}",
		  "is the epoch itself" },
		{ "{direction: ingress, time: \"1970-01-01T00:00:00.000000001Z\"}", NULL },
		/* a day that does not exist, an instant past 64-bit nanoseconds */
		{ "{direction: ingress, time: \"2026-02-29T10:00:00Z\"}", "bad time" },
		{ "{direction: ingress, time: \"9999-12-31T23:59:59Z\"}", "bad time" },
		/* the egress proxy's path is its URL's */
		{ "{direction: egress, url: \"https://hr.example/api/x\", path: /admin}",
		  "path '/admin' disagrees with the url's path '/api/x'" },
		{ "{direction: egress, url: \"https://hr.example\", path: /x}",
		  "disagrees with the url's path '/'" },
		{ "{direction: egress, url: \"https://hr.example/api/x?q=1\", path: /api/x}",
		  NULL },
		{ "{direction: egress, data: hr, path: /admin}", NULL },
		/* the egress proxy knows a running sandbox as a process or a VM, nothing else */
		{ "{direction: egress, isolation: vm-dedicated-gpu}",
		  "is not a running sandbox's" },
		{ "{direction: egress, isolation: none}", "is not a running sandbox's" },
		{ "{direction: egress, isolation: vm}", NULL },
		{ "{direction: egress, isolation: process}", NULL },
		/* a route that is no route */
		{ "{direction: ingress, route: POST}", "route 'POST' is not 'METHOD /path'" },
		{ "{direction: ingress, route: \" /v1/x\"}", "is not 'METHOD /path'" },
		{ "{direction: ingress, route: \"POST v1/x\"}", "is not 'METHOD /path'" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		policy_request r;
		policy_request_doc *k = NULL;
		diag_list d;
		diag_init(&d);
		custos_err e =
		        policy_request_parse(p, cases[i].req, strlen(cases[i].req), &r, &k, &d);
		const diag_item *it = cases[i].err ? find_diag(&d, DIAG_ERROR, cases[i].err) : NULL;
		if (cases[i].err ? (e == CUSTOS_OK || it == NULL) : (e != CUSTOS_OK)) {
			diag_print(&d, stderr);
			fail_msg("%s: %s", cases[i].req, e == CUSTOS_OK ? "accepted" : "refused");
		}
		if (it)
			assert_int_equal(it->line, 1);
		policy_request_doc_free(k);
		diag_free(&d);
	}
	policy_unref(p);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/custos-policy-hard-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	return rmdir(tmpdir);
}

/* policy_url_split: the one URL parser of policy `url` values, policy_find_data_url and
 * POST /v1/decide's `url`. Malformed authorities are refused with a reason. */
static void test_url_split(void **state)
{
	(void)state;
	static const struct {
		const char *url, *why; /* why: NULL when it is accepted */
	} cases[] = {
		{ "http://[::1", "unterminated IPv6 literal" },
		{ "http://[::1/x", "unterminated IPv6 literal" },
		{ "http://[::1]x/", "junk after IPv6 literal" },
		{ "http://[::1]:/", "port not a number" },
		{ "http://[]/", "bad IPv6 literal" },
		{ "http://[zz::1]/", "bad IPv6 literal" },
		{ "http://[fe80::1%25eth0]/",
		  "bad IPv6 literal" }, /* a zone id names no data source */
		{ "http:///x", "empty host" },
		{ "http://:80/x", "empty host" },
		{ "http://h:0/", "port not a number" },
		{ "http://h:65536/", "port not a number" },
		{ "http://h:8a/", "port not a number" },
		{ "http://h:/", "port not a number" },
		{ "http://h%zz.example/", "bad percent-encoding in host" },
		{ "http://h%4/", "bad percent-encoding in host" },
		{ "http://u@h/", "no user info" },
		{ "://h/", "missing scheme" },
		{ "h/x", "missing '://'" },
		{ "http://[::1]:8443/a?q#f", NULL },
		{ "http://[::ffff:10.0.0.1]/", NULL },
		{ "https://h%41.example:65535", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		policy_url pu;
		const char *why = NULL;
		bool ok = policy_url_split(span_cstr(cases[i].url), &pu, &why);
		if (ok != (cases[i].why == NULL) || (!ok && strstr(why, cases[i].why) == NULL))
			fail_msg("%s: %s (%s)", cases[i].url, ok ? "accepted" : "refused",
			         ok ? "" : why);
	}
	policy_url pu;
	const char *why;
	assert_true(policy_url_split(span_cstr("http://[::1]:8443/a/b?q#f"), &pu, &why));
	assert_true(span_eq_cstr(pu.scheme, "http"));
	assert_true(span_eq_cstr(pu.host, "[::1]"));
	assert_int_equal(pu.port, 8443);
	assert_true(span_eq_cstr(pu.path, "/a/b"));
	assert_true(span_eq_cstr(pu.rest, "/a/b?q#f"));
	/* policy `url` values go through it: an unterminated literal and a bad escape in the host */
	expect_error_at(
	        "version: 1\ndata:\n  d: { url: \"http://[::1\", classification: public }\n",
	        "unterminated IPv6 literal", 3, 13, NULL, 0);
	expect_error_at(
	        "version: 1\ndata:\n  d: { url: \"http://a%zz/\", classification: public }\n",
	        "bad percent-encoding in host", 3, 13, NULL, 0);
	/* and policy_find_data_url: a malformed URL names no data source */
	diag_list d;
	policy *p = parse("version: 1\ndata:\n  d: { url: \"http://[::1]/\", classification: "
	                  "public }\n",
	                  &d);
	assert_non_null(p);
	assert_non_null(policy_find_data_url(p, span_cstr("http://[::1]/x")));
	assert_null(policy_find_data_url(p, span_cstr("http://[::1")));
	assert_null(policy_find_data_url(p, span_cstr("http://[::1]junk/x")));
	policy_unref(p);
	diag_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_split),
		cmocka_unit_test(test_missing_facts_never_match),
		cmocka_unit_test(test_path_spellings),
		cmocka_unit_test(test_data_source_spellings),
		cmocka_unit_test(test_ambiguous_patterns_refused),
		cmocka_unit_test(test_route_is_ingress_only),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_detector_patterns_checked),
		cmocka_unit_test(test_detector_patterns_compiled_for_streaming),
		cmocka_unit_test(test_include_path_too_long),
		cmocka_unit_test(test_duplicate_list_items),
		cmocka_unit_test(test_duplicate_positions),
		cmocka_unit_test(test_globs),
		cmocka_unit_test(test_fifo_include),
		cmocka_unit_test(test_attribute_levels),
		cmocka_unit_test(test_jwt_group_cap),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_runner_full_rule_set),
		cmocka_unit_test(test_data_source_trailing_dot),
		cmocka_unit_test(test_time_window_from_2400),
		cmocka_unit_test(test_top_level_messages),
		cmocka_unit_test(test_request_context_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
