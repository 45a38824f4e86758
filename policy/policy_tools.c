/*
 * policy tools: request contexts written as YAML/JSON (for `policy test` and `policy explain`)
 * and the test runner. Test files are held to the same standard as policies: unknown keys,
 * unknown ids and bad values are errors with file:line:col, never a silent "deny".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

#define REQ_MAX_IDS 64

struct policy_request_doc {
	ydoc doc; /* when parsed from text */
	bool own_doc;
	span san_uris[REQ_MAX_IDS], san_dns[REQ_MAX_IDS], san_emails[REQ_MAX_IDS],
	        jwt_groups[REQ_MAX_IDS];
	policy_identity id;
	struct sockaddr_storage client; /* the request's `client` */
};

void policy_request_doc_free(policy_request_doc *k)
{
	if (k == NULL)
		return;
	if (k->own_doc)
		ydoc_free(&k->doc);
	OPENSSL_cleanse(&k->id, sizeof(k->id));
	free(k);
}

static bool spans_of(const ydoc *doc, ydoc_node *n, span *out, size_t *nout, diag_list *d)
{
	size_t k = n->kind == YDOC_SEQ ? n->n : 1;
	if (n->kind == YDOC_MAP || k > REQ_MAX_IDS) {
		ydoc_error(doc, n, d, NULL, "expected a string or a list of at most %d strings",
		           REQ_MAX_IDS);
		return false;
	}
	for (size_t i = 0; i < k; i++) {
		ydoc_node *it = n->kind == YDOC_SEQ ? n->items[i] : n;
		const char *s;
		if (!ydoc_str(doc, it, &s, d))
			return false;
		out[i] = span_of(s, it->len);
	}
	*nout = k;
	return true;
}

static bool parse_identity(const ydoc *doc, ydoc_node *n, policy_request_doc *k, diag_list *d)
{
	static const char *const keys[] = { "cert_san_uri",   "cert_san_dns", "cert_san_email",
		                            "cert_cn",        "cert_issuer",  "api_key",
		                            "api_key_sha256", "jwt_iss",      "jwt_sub",
		                            "jwt_groups" };
	policy_identity *id = &k->id;
	bool ok = ydoc_expect(doc, n, YDOC_MAP, "'identity'", d) &&
	          ydoc_check_keys(doc, n, keys, CUSTOS_ARRAY_LEN(keys), d);
	if (!ok)
		return false;
	ydoc_node *v;
	const char *s;
	if ((v = ydoc_map_get(n, "cert_san_uri")) &&
	    spans_of(doc, v, k->san_uris, &id->n_san_uris, d))
		id->san_uris = k->san_uris;
	if ((v = ydoc_map_get(n, "cert_san_dns")) &&
	    spans_of(doc, v, k->san_dns, &id->n_san_dns, d))
		id->san_dns = k->san_dns;
	if ((v = ydoc_map_get(n, "cert_san_email")) &&
	    spans_of(doc, v, k->san_emails, &id->n_san_emails, d))
		id->san_emails = k->san_emails;
	if ((v = ydoc_map_get(n, "jwt_groups")) &&
	    spans_of(doc, v, k->jwt_groups, &id->n_jwt_groups, d))
		id->jwt_groups = k->jwt_groups;
	if ((v = ydoc_map_get(n, "cert_cn")) && ydoc_str(doc, v, &s, d))
		id->subject_cn = span_of(s, v->len);
	if ((v = ydoc_map_get(n, "cert_issuer")) && ydoc_str(doc, v, &s, d))
		id->issuer_dn = span_of(s, v->len);
	if ((v = ydoc_map_get(n, "jwt_iss")) && ydoc_str(doc, v, &s, d))
		id->jwt_iss = span_of(s, v->len);
	if ((v = ydoc_map_get(n, "jwt_sub")) && ydoc_str(doc, v, &s, d))
		id->jwt_sub = span_of(s, v->len);
	if ((v = ydoc_map_get(n, "api_key")) && ydoc_str(doc, v, &s, d)) {
		unsigned int len = 0;
		if (EVP_Digest(s, v->len, id->api_key_sha256, &len, EVP_sha256(), NULL) == 1)
			id->has_api_key = true;
	}
	if ((v = ydoc_map_get(n, "api_key_sha256")) && ydoc_str(doc, v, &s, d)) {
		if (num_parse_hex(span_of(s, v->len), id->api_key_sha256, 32) != CUSTOS_OK)
			ydoc_error(doc, v, d, NULL, "api_key_sha256 must be 64 hex digits");
		else
			id->has_api_key = true;
	}
	/* As the proxy matches: a presented key or token must name the principal itself. */
	if (id->has_api_key)
		id->bearer = POLICY_BEARER_API_KEY;
	else if (id->jwt_iss.len || id->jwt_sub.len || id->n_jwt_groups)
		id->bearer = POLICY_BEARER_JWT;
	return true;
}

/* `client`: one address, as the proxy knows it (a socket peer or a PROXY protocol source);
 * a range is a rule's business, not a request's. */
static void parse_client(const ydoc *doc, ydoc_node *v, const char *s, policy_request *req,
                         policy_request_doc *k, diag_list *d)
{
	struct sockaddr_in *in = (struct sockaddr_in *)(void *)&k->client;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)&k->client;
	if (req->direction == POLICY_EGRESS) {
		ydoc_error(doc, v, d, "omit 'client' on egress",
		           "an egress call comes from a sandbox and has no client address");
		return;
	}
	if (strlen(s) == v->len && inet_pton(AF_INET, s, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
	} else if (strlen(s) == v->len && inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
	} else {
		ydoc_error(doc, v, d, "e.g. 10.1.2.3 or 2001:db8::7",
		           "client: '%s' is not an IPv4 or IPv6 address", s);
		return;
	}
	req->client = (const struct sockaddr *)(const void *)&k->client;
}

/* A request context the proxy could not hand the evaluator is an error, so that a case
 * never predicts a decision the proxy does not make. On ingress the proxy (proxy/decide.c)
 * has no data source and uses the model's declared isolation (taint is the model's
 * sandbox's, as on egress); its route is always its method and path. */
static void check_as_proxy(const ydoc *doc, ydoc_node *node, const policy_request *req,
                           diag_list *d)
{
	static const char *const egress_only[] = { "data", "url", "isolation" };
	ydoc_node *v;
	if (req->direction == POLICY_INGRESS)
		for (size_t i = 0; i < CUSTOS_ARRAY_LEN(egress_only); i++)
			if ((v = ydoc_map_get(node, egress_only[i])) != NULL)
				ydoc_error(doc, v, d, "omit it on ingress",
				           "'%s' is not known on ingress: the proxy decides an "
				           "ingress "
				           "request with no data source and the model's declared "
				           "isolation",
				           egress_only[i]);
	if (req->route.len == 0)
		return;
	const char *sp = memchr(req->route.ptr, ' ', req->route.len);
	span rm = sp ? span_of(req->route.ptr, (size_t)(sp - req->route.ptr)) : req->route;
	span rp = sp ? span_of(sp + 1, req->route.len - rm.len - 1) : SPAN_LIT("");
	if (!span_eq(rm, req->method) || !span_eq(rp, req->path))
		ydoc_error(doc, ydoc_map_get(node, "route"), d,
		           "give 'route' alone, or 'method' and 'path'",
		           "route '%.*s' disagrees with method '%.*s' and path '%.*s': the proxy's "
		           "route is its method and path",
		           (int)req->route.len, req->route.ptr, (int)req->method.len,
		           req->method.ptr ? req->method.ptr : "", (int)req->path.len,
		           req->path.ptr ? req->path.ptr : "");
}

custos_err policy_request_from_yaml(const policy *p, const ydoc *doc, ydoc_node *node,
                                    policy_request *req, policy_request_doc **keep, diag_list *d)
{
	static const char *const keys[] = { "direction", "principal", "identity", "model",
		                            "data",      "url",       "method",   "path",
		                            "route",     "body_size", "time",     "taint",
		                            "isolation", "shadow",    "client" };
	size_t e0 = d->errors;
	memset(req, 0, sizeof(*req));
	req->isolation = -1;
	*keep = NULL;
	if (!ydoc_expect(doc, node, YDOC_MAP, "a request", d))
		return CUSTOS_ERR_PARSE;
	policy_request_doc *k = calloc(1, sizeof(*k));
	ENSURE(k != NULL, CUSTOS_ERR_NOMEM, "out of memory");
	(void)ydoc_check_keys(doc, node, keys, CUSTOS_ARRAY_LEN(keys), d);
	ydoc_node *v;
	const char *s;
	int x;
	if ((v = ydoc_map_get(node, "direction")) != NULL) {
		static const char *const dn[] = { "ingress", "egress" };
		if (ydoc_enum(doc, v, dn, 2, &x, d))
			req->direction = (policy_direction)x;
	} else {
		ydoc_error(doc, node, d, NULL, "request needs 'direction' (ingress or egress)");
	}
	ydoc_node *pv = ydoc_map_get(node, "principal"), *iv = ydoc_map_get(node, "identity");
	if (pv && iv)
		ydoc_error(doc, iv, d, NULL, "give 'principal' or 'identity', not both");
	else if (pv && ydoc_str(doc, pv, &s, d)) {
		req->principal = policy_find_principal(p, span_of(s, pv->len));
		if (req->principal == NULL)
			ydoc_error(doc, pv, d, "omit 'principal' for an unauthenticated request",
			           "unknown principal '%s'", s);
	} else if (iv && parse_identity(doc, iv, k, d)) {
		req->principal = policy_match_principal(p, &k->id);
	}
	if ((v = ydoc_map_get(node, "model")) != NULL && ydoc_str(doc, v, &s, d)) {
		req->model = policy_find_model(p, span_of(s, v->len));
		if (req->model == NULL)
			ydoc_error(doc, v, d, "omit 'model' for a request to an unknown model",
			           "unknown model '%s'", s);
	}
	ydoc_node *dv = ydoc_map_get(node, "data"), *uv = ydoc_map_get(node, "url");
	bool url_path = false; /* the path is the URL's */
	if (dv && uv)
		ydoc_error(doc, uv, d, NULL, "give 'data' or 'url', not both");
	else if (dv && ydoc_str(doc, dv, &s, d)) {
		req->data = policy_find_data_id(p, span_of(s, dv->len));
		if (req->data == NULL)
			ydoc_error(doc, dv, d, NULL, "unknown data source '%s'", s);
	} else if (uv && ydoc_str(doc, uv, &s, d)) {
		policy_url u;
		const char *why = NULL;
		if (!policy_url_split(span_of(s, uv->len), &u, &why)) {
			ydoc_error(doc, uv, d, "e.g. https://hr.corp.example:8443/api/",
			           "url: bad url '%s': %s", s, why);
		} else {
			req->data = policy_find_data_url(p, span_of(s, uv->len));
			/* the URL's path (without query) is the request path */
			req->path = u.path;
			url_path = true;
		}
	}
	if ((v = ydoc_map_get(node, "method")) != NULL && ydoc_str(doc, v, &s, d))
		req->method = span_of(s, v->len);
	if ((v = ydoc_map_get(node, "path")) != NULL && ydoc_str(doc, v, &s, d)) {
		span up = req->path.len ? req->path : SPAN_LIT("/");
		req->path = span_of(s, v->len);
		/* the egress proxy's path is its URL's: another one is a call it never makes */
		if (url_path && !span_eq(req->path, up))
			ydoc_error(doc, v, d, "give 'url' alone: its path is the request's",
			           "path '%s' disagrees with the url's path '%.*s'", s, (int)up.len,
			           up.ptr);
	}
	if ((v = ydoc_map_get(node, "route")) != NULL && ydoc_str(doc, v, &s, d)) {
		const char *sp = memchr(s, ' ', v->len);
		if (sp == NULL || sp == s || sp[1] != '/') {
			/* matched against no route, it would decide as if none were given */
			ydoc_error(doc, v, d, "e.g. \"POST /v1/chat/completions\"",
			           "route '%s' is not 'METHOD /path'", s);
			sp = NULL;
		} else {
			req->route = span_of(s, v->len);
		}
		/* a route alone also fills method and path when they are not given */
		if (sp && req->method.len == 0)
			req->method = span_of(s, (size_t)(sp - s));
		if (sp && req->path.len == 0)
			req->path = span_of(sp + 1, v->len - (size_t)(sp + 1 - s));
	}
	if ((v = ydoc_map_get(node, "body_size")) != NULL)
		(void)ydoc_size(doc, v, UINT64_MAX, &req->body_size, d);
	if ((v = ydoc_map_get(node, "time")) != NULL && ydoc_str(doc, v, &s, d)) {
		if (tm_parse_rfc3339(span_of(s, v->len), &req->time_ns) != CUSTOS_OK)
			ydoc_error(doc, v, d, "e.g. 2026-11-27T09:30:00Z", "bad time '%s'", s);
		else if (req->time_ns == 0)
			/* a time of 0 is "now" to the evaluator: the case would depend on the
			 * clock of the day it runs */
			ydoc_error(doc, v, d, "give an instant after 1970-01-01T00:00:00Z",
			           "time '%s' is the epoch itself, which the evaluator reads as "
			           "'now'",
			           s);
	}
	if ((v = ydoc_map_get(node, "taint")) != NULL) {
		policy_class c;
		if (ydoc_str(doc, v, &s, d)) {
			if (policy_class_parse(span_of(s, v->len), &c))
				req->taint = c;
			else
				ydoc_error(doc, v, d,
				           "public, internal, confidential or restricted",
				           "unknown classification '%s'", s);
		}
	}
	if ((v = ydoc_map_get(node, "isolation")) != NULL) {
		policy_isolation i;
		if (ydoc_str(doc, v, &s, d)) {
			if (!policy_isolation_parse(span_of(s, v->len), &i))
				ydoc_error(doc, v, d, "process or vm", "unknown isolation '%s'", s);
			else if (i != POLICY_ISO_PROCESS && i != POLICY_ISO_VM)
				/* the egress proxy knows a running sandbox as a process or a VM
				 * (proxy/egress.c): any other level is a call it never decides */
				ydoc_error(doc, v, d,
				           "process or vm; omit it for the model's declared level",
				           "isolation '%s' is not a running sandbox's: the egress "
				           "proxy knows a sandbox as process or vm",
				           s);
			else
				req->isolation = (int)i;
		}
	}
	if ((v = ydoc_map_get(node, "shadow")) != NULL)
		(void)ydoc_bool(doc, v, &req->force_shadow, d);
	if ((v = ydoc_map_get(node, "client")) != NULL && ydoc_str(doc, v, &s, d))
		parse_client(doc, v, s, req, k, d);
	check_as_proxy(doc, node, req, d);
	*keep = k;
	if (d->errors != e0)
		return CUSTOS_ERR_PARSE;
	return CUSTOS_OK;
}

static custos_err request_parse(const policy *p, const char *name, const char *text, size_t len,
                                bool json, policy_request *req, policy_request_doc **keep,
                                diag_list *d)
{
	ydoc doc;
	*keep = NULL;
	ENSURE(len <= 1024 * 1024, CUSTOS_ERR_LIMIT, "request over the limit of 1 MiB");
	size_t blanks = 0;
	while (json && blanks < len &&
	       (text[blanks] == ' ' || text[blanks] == '\t' || text[blanks] == '\r' ||
	        text[blanks] == '\n'))
		blanks++;
	if (json && blanks == len) {
		/* as YAML has it: no value at all is "empty request", not a syntax error */
		diag_add(d, DIAG_ERROR, name, 1, 1, NULL, "empty request");
		return CUSTOS_ERR_PARSE;
	}
	custos_err pe = json ? ydoc_parse_json(&doc, name, text, len, d)
	                     : ydoc_parse(&doc, name, text, len, d);
	if (pe != CUSTOS_OK) {
		ydoc_free(&doc); /* ydoc_parse leaves the name allocated on failure */
		return pe;
	}
	if (doc.root == NULL) {
		ydoc_free(&doc);
		diag_add(d, DIAG_ERROR, name, 1, 1, NULL, "empty request");
		return CUSTOS_ERR_PARSE;
	}
	policy_request_doc *k = NULL;
	custos_err e = policy_request_from_yaml(p, &doc, doc.root, req, &k, d);
	if (k == NULL) {
		ydoc_free(&doc);
		return e;
	}
	k->doc = doc; /* spans point into the nodes, which stay where they are */
	k->own_doc = true;
	*keep = k;
	return e;
}

custos_err policy_request_parse(const policy *p, const char *text, size_t len, policy_request *req,
                                policy_request_doc **keep, diag_list *d)
{
	return request_parse(p, "<request>", text, len, false, req, keep, d);
}

custos_err policy_request_parse_named(const policy *p, const char *name, const char *text,
                                      size_t len, policy_request *req, policy_request_doc **keep,
                                      diag_list *d)
{
	return request_parse(p, name, text, len, false, req, keep, d);
}

custos_err policy_request_parse_json(const policy *p, const char *text, size_t len,
                                     policy_request *req, policy_request_doc **keep, diag_list *d)
{
	return request_parse(p, "<request>", text, len, true, req, keep, d);
}

/* ---------------------------------------------------------------------------------------------
 * Test runner
 */
static const char *effect_word(policy_effect e)
{
	return e == POLICY_ALLOW ? "allow" : "deny";
}

/* Every deciding rule's id, comma-separated ("none" when none); cut short with "..." when
 * out is full. */
static void rules_text(const char *const *ids, size_t n_ids, char *out, size_t n)
{
	size_t off = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n_ids && off < n; i++)
		off += (size_t)snprintf(out + off, n - off, "%s%s", i ? "," : "", ids[i]);
	if (off >= n && n > 4)
		memcpy(out + n - 4, "...", 4);
	if (n_ids == 0)
		snprintf(out, n, "none");
}

static bool id_in(const char *id, const char *const *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ids[i], id) == 0)
			return true;
	return false;
}

/* Appends to a failure note; a full note is cut short, which is harmless. */
static void note(buf *b, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
static void note(buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (buf_vprintf(b, fmt, ap) != CUSTOS_OK) {
		/* truncated */
	}
	va_end(ap);
}

/* Compares the expected obligations; appends mismatches to why. Returns true when all hold. */
static bool check_obligations(const policy *p, const ydoc *doc, ydoc_node *ob,
                              const policy_decision *dec, bool egress, buf *why, diag_list *d)
{
	static const char *const keys[] = { "audit",  "max_body", "max_tokens",
		                            "prompt", "response", "request" };
	if (!ydoc_expect(doc, ob, YDOC_MAP, "'obligations'", d) ||
	    !ydoc_check_keys(doc, ob, keys, CUSTOS_ARRAY_LEN(keys), d))
		return false;
	bool ok = true;
	ydoc_node *v;
	static const char *const audits[] = { "metadata", "bodies_hashed", "bodies" };
	int x;
	uint64_t n;
	if ((v = ydoc_map_get(ob, "audit")) && ydoc_enum(doc, v, audits, 3, &x, d) &&
	    (int)dec->audit != x) {
		note(why, " audit %s (want %s);", policy_audit_level_name(dec->audit), audits[x]);
		ok = false;
	}
	if ((v = ydoc_map_get(ob, "max_body")) && ydoc_size(doc, v, UINT64_MAX, &n, d) &&
	    dec->limits.max_body_bytes != n) {
		note(why, " max_body %llu (want %llu);",
		     (unsigned long long)dec->limits.max_body_bytes, (unsigned long long)n);
		ok = false;
	}
	if ((v = ydoc_map_get(ob, "max_tokens")) && ydoc_u64(doc, v, 0, UINT64_MAX, &n, d) &&
	    dec->limits.max_tokens != n) {
		note(why, " max_tokens %llu (want %llu);",
		     (unsigned long long)dec->limits.max_tokens, (unsigned long long)n);
		ok = false;
	}
	static const char *const acts[] = { "none", "log", "redact", "deny" };
	/* "request" is the egress name of the prompt slot (policy_compile.c parse_inspect). */
	static const char *const dirs[] = { "prompt", "response", "request" };
	for (int k3 = 0; k3 < 3; k3++) {
		int w = k3 == 1;
		ydoc_node *m = ydoc_map_get(ob, dirs[k3]);
		if (m == NULL || !ydoc_expect(doc, m, YDOC_MAP,
		                              "an obligation's detectors (detector: action)", d))
			continue;
		for (size_t i = 0; i < m->n; i++) {
			ydoc_node *k = m->pairs[i].key;
			uint32_t det;
			if (!pmap_get(&p->detector_ids, k->str, k->len, &det)) {
				ydoc_error(doc, k, d, NULL, "unknown detector '%s'", k->str);
				continue;
			}
			if (!ydoc_enum(doc, m->pairs[i].value, acts, 4, &x, d))
				continue;
			uint8_t got = w ? dec->inspect_response[det] : dec->inspect_prompt[det];
			if (got != x) {
				/* the slot by its name in the case's direction, whichever key
				 * the case used for it */
				const char *dn = w ? "response" : egress ? "request" : "prompt";
				note(why, " %s %s: %s (want %s);", dn, k->str, acts[got], acts[x]);
				ok = false;
			}
		}
	}
	return ok;
}

custos_err policy_run_tests(const policy *p, const char *tests_path, void *report,
                            policy_test_result *res, diag_list *d)
{
	static const char *const top[] = { "cases" };
	static const char *const ckeys[] = { "name",  "request", "expect",
		                             "would", "rules",   "obligations" };
	static const char *const effects[] = { "deny", "allow" };
	FILE *f = report;
	ydoc doc;
	memset(res, 0, sizeof(*res));
	size_t e0 = d->errors;
	custos_err le = ydoc_load(&doc, tests_path, POLICY_MAX_FILE_BYTES, d);
	if (le != CUSTOS_OK) {
		ydoc_free(&doc);
		return le;
	}
	ydoc_node *root = doc.root;
	if (root == NULL || !ydoc_expect(&doc, root, YDOC_MAP, "a test file", d) ||
	    !ydoc_check_keys(&doc, root, top, 1, d)) {
		if (root == NULL)
			diag_add(d, DIAG_ERROR, tests_path, 1, 1, NULL, "empty test file");
		ydoc_free(&doc);
		return CUSTOS_ERR_PARSE;
	}
	ydoc_node *cases = ydoc_map_get(root, "cases");
	if (cases == NULL || !ydoc_expect(&doc, cases, YDOC_SEQ, "a list of cases", d) ||
	    cases->n > POLICY_MAX_TEST_CASES) {
		if (cases == NULL)
			ydoc_error(&doc, root, d, NULL, "missing 'cases'");
		else if (cases->n > POLICY_MAX_TEST_CASES)
			ydoc_error(&doc, cases, d, NULL, "more than %d cases",
			           POLICY_MAX_TEST_CASES);
		ydoc_free(&doc);
		return CUSTOS_ERR_PARSE;
	}
	buf why;
	buf_init(&why, 64 * 1024);
	/* the full set of deciding rules, not only the first POLICY_MAX_DECISION_RULES */
	size_t cap = p->n_rules ? p->n_rules : 1;
	const char **all = xcalloc(cap, sizeof(*all));
	struct preq *nreq = xcalloc(1, sizeof(*nreq));
	for (size_t i = 0; i < cases->n; i++) {
		ydoc_node *c = cases->items[i];
		size_t ce = d->errors;
		if (!ydoc_expect(&doc, c, YDOC_MAP, "a case", d))
			continue;
		(void)ydoc_check_keys(&doc, c, ckeys, CUSTOS_ARRAY_LEN(ckeys), d);
		ydoc_node *nm = ydoc_map_get(c, "name"), *rq = ydoc_map_get(c, "request"),
		          *ex = ydoc_map_get(c, "expect"), *wo = ydoc_map_get(c, "would"),
		          *rl = ydoc_map_get(c, "rules"), *ob = ydoc_map_get(c, "obligations");
		const char *name = "(unnamed)";
		if (nm)
			(void)ydoc_str(&doc, nm, &name, d);
		if (rq == NULL || ex == NULL) {
			ydoc_error(&doc, c, d, NULL, "case '%s' needs 'request' and 'expect'",
			           name);
			continue;
		}
		int want, want_would = -1;
		if (!ydoc_enum(&doc, ex, effects, 2, &want, d))
			continue;
		if (wo && !ydoc_enum(&doc, wo, effects, 2, &want_would, d))
			continue;
		policy_request req;
		policy_request_doc *keep = NULL;
		custos_err e = policy_request_from_yaml(p, &doc, rq, &req, &keep, d);
		if (e != CUSTOS_OK || d->errors != ce) {
			policy_request_doc_free(keep);
			continue;
		}
		policy_decision dec;
		preq_init(nreq, &req);
		policy_evaluate_n(p, nreq, &dec, all, cap);
		size_t n_all = dec.n_rules_total < cap ? dec.n_rules_total : cap;
		buf_reset(&why);
		bool pass = (int)dec.effect == want;
		if (!pass)
			note(&why, " expected %s, got %s;", effects[want], effect_word(dec.effect));
		if (want_would >= 0 && (int)dec.verdict != want_would) {
			note(&why, " enforcement would %s, expected %s;", effect_word(dec.verdict),
			     effects[want_would]);
			pass = false;
		}
		if (rl) {
			/* exactly these deciding rules: the same set as the full one */
			ydoc_node *one[1] = { rl };
			ydoc_node **items = NULL;
			size_t n = 0;
			if (rl->kind == YDOC_SCALAR) {
				items = one;
				n = 1;
			} else if (rl->kind == YDOC_SEQ && rl->n <= POLICY_MAX_LIST) {
				items = rl->items;
				n = rl->n;
			} else {
				ydoc_error(&doc, rl, d, NULL, "rules: a list of at most %d ids",
				           POLICY_MAX_LIST);
			}
			bool same = true;
			size_t distinct = 0;
			for (size_t j = 0; j < n; j++) {
				const char *id;
				if (!ydoc_str(&doc, items[j], &id, d)) {
					same = false;
					continue;
				}
				bool again = false;
				for (size_t q = 0; q < j && !again; q++)
					again = items[q]->kind == YDOC_SCALAR &&
					        strcmp(items[q]->str, id) == 0;
				if (again) {
					ydoc_warn(&doc, items[j], d, NULL, "'%s' listed twice", id);
					continue;
				}
				bool known = false;
				for (uint32_t q = 0; q < p->n_rules && !known; q++)
					known = strcmp(p->rules[q].id, id) == 0;
				if (!known)
					ydoc_error(&doc, items[j], d, NULL, "unknown rule '%s'",
					           id);
				distinct++;
				same &= id_in(id, all, n_all);
			}
			same &= distinct == n_all;
			if (!same) {
				char got[1024];
				rules_text(all, n_all, got, sizeof(got));
				note(&why, " deciding rules [%s], expected [", got);
				for (size_t j = 0; j < n; j++)
					note(&why, "%s%s", j ? "," : "",
					     items[j]->kind == YDOC_SCALAR ? items[j]->str : "?");
				note(&why, "];");
				pass = false;
			}
		}
		if (ob &&
		    !check_obligations(p, &doc, ob, &dec, req.direction == POLICY_EGRESS, &why, d))
			pass = false;
		policy_request_doc_free(keep);
		if (d->errors != ce)
			continue;
		if (pass) {
			res->passed++;
		} else {
			res->failed++;
			char got[1024];
			rules_text(all, n_all, got, sizeof(got));
			span w = buf_span(&why);
			fprintf(f, "%s:%u:%u: FAIL '%s':%.*s decision %s by [%s]: %s\n", doc.file,
			        c->line, c->col, name, (int)w.len, w.ptr, effect_word(dec.effect),
			        got, dec.reason);
		}
	}
	free(nreq);
	free(all);
	buf_free(&why);
	ydoc_free(&doc);
	if (d->errors != e0)
		return err_set(CUSTOS_ERR_PARSE, "%s: errors in the test file", tests_path);
	return CUSTOS_OK;
}
