/*
 * Egress proxy server: options, listeners and accept threads, the attribution registry of
 * in-flight ingress requests, the destination decision (data source, policy, SSRF) and the
 * audit event every egress call produces. Connection handling is in egress_conn.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "custos/audit.h"
#include "custos/policy.h"
#include "egress_int.h"
#include "tls.h"

/* ---------------------------------------------------------------------------------------------
 * Options
 */
void egress_options_init(egress_options *o, size_t nsources, size_t nlisteners)
{
	memset(o, 0, sizeof(*o));
	if (nsources)
		o->sources = xcalloc(nsources, sizeof(*o->sources));
	if (nlisteners)
		o->listeners = xcalloc(nlisteners, sizeof(*o->listeners));
	for (size_t i = 0; i < nlisteners; i++) {
		o->listeners[i].fd = -1;
		o->listeners[i].isolation = -1;
	}
}

static void source_free(egress_source *s)
{
	free(s->id);
	free(s->host);
	free(s->path_prefix);
	free(s->ca_file);
	free(s->cert_file);
	free(s->key_file);
	free(s->crl_file);
}

void egress_options_free(egress_options *o)
{
	for (size_t i = 0; i < o->nsources; i++)
		source_free(&o->sources[i]);
	free(o->sources);
	for (size_t i = 0; i < o->nlisteners; i++) {
		egress_listener_opts *l = &o->listeners[i];
		free(l->address);
		free(l->model);
		free(l->sandbox);
		if (l->fd >= 0)
			close(l->fd);
	}
	free(o->listeners);
	free(o->policy_file);
	policy_unref(o->policy);
	o->policy = NULL;
	free(o->ca_dir);
	for (size_t i = 0; i < o->n_dns_servers; i++)
		free(o->dns_servers[i]);
	free(o->dns_servers);
	memset(o, 0, sizeof(*o));
}

custos_err egress_ca_init(const char *dir)
{
	return mint_ca_init(dir);
}

/* ---------------------------------------------------------------------------------------------
 * Attribution registry (request-scoped egress)
 */
typedef struct inflight {
	uint64_t token;
	char model[EGRESS_ID_MAX];
	char request_id[EGRESS_ID_MAX];
	char principal[EGRESS_PRINCIPAL_MAX];
} inflight;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static inflight *reg;
static size_t reg_n, reg_cap;
static uint64_t reg_next = 1;

_Static_assert(EGRESS_PRINCIPAL_MAX > POLICY_MAX_NAME,
               "a policy principal id must fit an egress attribution whole");

static void copy_trunc(char *out, size_t n, const char *s)
{
	size_t l = s ? strlen(s) : 0;
	if (l >= n)
		l = n - 1;
	if (l)
		memcpy(out, s, l);
	out[l] = '\0';
}

uint64_t egress_ingress_begin(const char *model, const char *request_id, const char *principal)
{
	uint64_t tok = 0;
	if (model == NULL || request_id == NULL)
		return 0;
	pthread_mutex_lock(&reg_lock);
	if (reg_n == reg_cap && reg_cap < EGRESS_MAX_INFLIGHT) {
		size_t nc = reg_cap ? reg_cap * 2 : 64;
		if (nc > EGRESS_MAX_INFLIGHT)
			nc = EGRESS_MAX_INFLIGHT;
		inflight *nr = realloc(reg, nc * sizeof(*reg));
		if (nr) {
			reg = nr;
			reg_cap = nc;
		}
	}
	if (reg_n < reg_cap) {
		inflight *e = &reg[reg_n++];
		e->token = tok = reg_next++;
		copy_trunc(e->model, sizeof(e->model), model);
		copy_trunc(e->request_id, sizeof(e->request_id), request_id);
		copy_trunc(e->principal, sizeof(e->principal), principal);
	}
	pthread_mutex_unlock(&reg_lock);
	return tok;
}

void egress_ingress_end(uint64_t token)
{
	if (token == 0)
		return;
	pthread_mutex_lock(&reg_lock);
	for (size_t i = 0; i < reg_n; i++) {
		if (reg[i].token == token) {
			reg[i] = reg[--reg_n];
			break;
		}
	}
	if (reg_n == 0) { /* nothing in flight: give the memory back */
		free(reg);
		reg = NULL;
		reg_cap = 0;
	}
	pthread_mutex_unlock(&reg_lock);
}

egress_attr_how egress_attribute(const char *model, span header_id, char request_id[EGRESS_ID_MAX],
                                 char principal[EGRESS_PRINCIPAL_MAX])
{
	egress_attr_how how = EGRESS_ATTR_NONE;
	size_t found = 0, n = 0;

	request_id[0] = principal[0] = '\0';
	if (model == NULL)
		return how;
	pthread_mutex_lock(&reg_lock);
	for (size_t i = 0; i < reg_n; i++) {
		if (strcmp(reg[i].model, model) != 0)
			continue;
		if (header_id.len && span_eq_cstr(header_id, reg[i].request_id)) {
			found = i;
			how = EGRESS_ATTR_HEADER;
			break;
		}
		if (n++ == 0)
			found = i;
	}
	if (how == EGRESS_ATTR_NONE && n == 1)
		how = EGRESS_ATTR_SOLE;
	if (how != EGRESS_ATTR_NONE) {
		copy_trunc(request_id, EGRESS_ID_MAX, reg[found].request_id);
		copy_trunc(principal, EGRESS_PRINCIPAL_MAX, reg[found].principal);
	}
	pthread_mutex_unlock(&reg_lock);
	return how;
}

/* ---------------------------------------------------------------------------------------------
 * Audit
 */
/* Egress request ids: "eg-", a random 64-bit prefix drawn once per process and a counter:
 * unique in the process, not guessable across restarts, no RNG call per request (the RNG's
 * lock was a measurable cost on the forward path). */
static pthread_once_t id_once = PTHREAD_ONCE_INIT;
static char id_prefix[17];
static atomic_uint_fast64_t id_seq;

static void id_init(void)
{
	uint8_t rnd[8];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		abort(); /* ids must not repeat across restarts */
	num_hex(rnd, sizeof(rnd), id_prefix);
}

void erec_init(erec *r, const char *kind)
{
	static const char hexd[] = "0123456789abcdef";
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->classification = -1;
	r->t_start = tm_mono_ns();
	pthread_once(&id_once, id_init);
	uint64_t n = atomic_fetch_add(&id_seq, 1);
	memcpy(r->id, "eg-", 3);
	memcpy(r->id + 3, id_prefix, 16);
	for (int i = 15; i >= 0; i--, n >>= 4)
		r->id[19 + i] = hexd[n & 15];
	r->id[35] = '\0';
}

static const char *attr_name(egress_attr_how h)
{
	switch (h) {
	case EGRESS_ATTR_SOLE:
		return "sole-in-flight";
	case EGRESS_ATTR_HEADER:
		return "header";
	case EGRESS_ATTR_NONE:
		break;
	}
	return "none";
}

/* Without an audit trail (tests, `custos up` with no audit section): the event as the writer
 * would render it, to the log. */
static void log_rec(const audit_rec *ev)
{
	buf b;

	buf_init(&b, AUDIT_MAX_EVENT);
	if (audit_rec_render(audit_rec_bytes(ev), &b) == CUSTOS_OK)
		log_info("audit: {%.*s}", (int)buf_used(&b), (const char *)buf_ptr(&b));
	buf_free(&b);
}

/* The audited path as audit.query says: a query value may be a token (docs/AUDIT.md). */
static void audit_path(egress_server *s, audit_rec *ev, const char *path)
{
	char q[AUDIT_QUERY_ROOM(sizeof(((erec *)0)->path))];
	size_t n =
	        audit_query_filter(span_cstr(path), audit_writer_query(s->o.audit), q, sizeof(q));
	audit_rec_str(ev, "path", span_of(q, n));
}

custos_err egress_audit_decision(egress_server *s, const elistener *l, const erec *r)
{
	audit_rec ev;

	audit_rec_begin(&ev, "egress.decision");
	audit_rec_cstr(&ev, "request_id", r->id);
	audit_rec_cstr(&ev, "direction", "egress");
	audit_rec_cstr(&ev, "model", l->model);
	audit_rec_cstr(&ev, "sandbox", l->sandbox);
	if (r->how != EGRESS_ATTR_NONE) {
		audit_rec_cstr(&ev, "ingress_request_id", r->ingress_id);
		audit_rec_cstr(&ev, "principal", r->principal);
	}
	audit_rec_cstr(&ev, "kind", r->kind);
	audit_rec_cstr(&ev, "method", r->method);
	audit_rec_cstr(&ev, "host", r->host);
	if (r->port)
		audit_rec_u64(&ev, "port", r->port);
	if (r->path[0])
		audit_path(s, &ev, r->path);
	audit_rec_cstr(&ev, "data_source", r->source);
	audit_rec_cstr(&ev, "decision", r->decision ? r->decision : "allow");
	if (r->rules[0])
		audit_rec_cstr(&ev, "rules", r->rules);
	if (r->shadow)
		audit_rec_bool(&ev, "shadow", true);
	custos_err e = audit_rec_end(&ev);
	if (e != CUSTOS_OK) {
		log_error("egress audit: decision %s too large: %s", r->id, err_msg());
		return e;
	}
	if (s->o.audit == NULL) {
		log_rec(&ev);
		return CUSTOS_OK;
	}
	e = audit_submit_rec(s->o.audit, &ev);
	if (e == CUSTOS_ERR_IO && s->o.audit_fail_open) {
		log_warn("egress audit: decision %s not recorded, call made "
		         "(audit.on_write_error: continue): %s",
		         r->id, err_msg());
		return CUSTOS_OK;
	}
	if (e != CUSTOS_OK)
		log_error("egress audit: decision %s refused, call not made (fail closed): %s",
		          r->id, err_msg());
	return e;
}

void egress_audit(egress_server *s, const elistener *l, erec *r)
{
	audit_rec ev;
	audit_duration d[2];

	audit_rec_begin(&ev, "egress.request");
	audit_rec_cstr(&ev, "request_id", r->id);
	audit_rec_cstr(&ev, "direction", "egress");
	audit_rec_cstr(&ev, "model", l->model);
	audit_rec_cstr(&ev, "sandbox", l->sandbox);
	audit_rec_cstr(&ev, "attribution", attr_name(r->how));
	if (r->how != EGRESS_ATTR_NONE) {
		audit_rec_cstr(&ev, "ingress_request_id", r->ingress_id);
		audit_rec_cstr(&ev, "principal", r->principal);
	}
	audit_rec_cstr(&ev, "kind", r->kind);
	audit_rec_cstr(&ev, "method", r->method);
	audit_rec_cstr(&ev, "scheme", r->scheme);
	audit_rec_cstr(&ev, "host", r->host);
	if (r->port)
		audit_rec_u64(&ev, "port", r->port);
	if (r->path[0]) {
		egress_inspect_audit_path(s, r); /* a path no rule's inspection judged */
		audit_path(s, &ev, r->path);
	}
	if (r->sni[0])
		audit_rec_cstr(&ev, "sni", r->sni);
	audit_rec_cstr(&ev, "data_source", r->source);
	if (r->classification >= 0)
		audit_rec_cstr(&ev, "classification",
		               policy_class_name((policy_class)r->classification));
	const char *decision = r->decision ? r->decision : "error";
	const char *reason = r->reason[0] ? r->reason : NULL;
	const audit_finding *f = NULL;
	size_t nf = 0;
	const char *insp = NULL;
	uint64_t insp_ns = 0;
	/* content inspection: outcome, findings (types and counts only) */
	egress_inspect_audit(r, &decision, &reason, &f, &nf, &insp, &insp_ns);
	/* The call is over: what it held no longer counts against egress.inspect.max_held, so
	 * once its completion is in the trail, another body may take its place. */
	egress_inspect_unhold(r);
	audit_rec_cstr(&ev, "decision", decision);
	if (reason)
		audit_rec_cstr(&ev, "reason", reason);
	if (insp)
		audit_rec_cstr(&ev, "inspect", insp);
	if (nf)
		audit_rec_findings(&ev, f, nf);
	if (r->rules[0])
		audit_rec_cstr(&ev, "rules", r->rules);
	if (r->shadow)
		audit_rec_bool(&ev, "shadow", true);
	egress_hash_audit(r, &ev);
	egress_hash_free(r);
	audit_rec_u64(&ev, "status", r->status);
	if (r->addr[0])
		audit_rec_cstr(&ev, "address", r->addr);
	audit_rec_u64(&ev, "bytes_up", r->bytes_up);
	audit_rec_u64(&ev, "bytes_down", r->bytes_down);
	audit_rec_u64(&ev, "taint", (uint64_t)atomic_load(&l->taint));
	size_t nd = 0;
	d[nd++] = (audit_duration){ "total", tm_mono_ns() - r->t_start };
	if (insp_ns)
		d[nd++] = (audit_duration){ "inspect", insp_ns };
	audit_rec_durations(&ev, d, nd);
	if (audit_rec_end(&ev) != CUSTOS_OK) {
		log_error("egress audit: event %s too large: %s", r->id, err_msg());
		return;
	}
	if (s->o.audit == NULL) {
		log_rec(&ev);
		return;
	}
	if (audit_submit_rec(s->o.audit, &ev) != CUSTOS_OK)
		log_error("egress audit: event %s not recorded: %s", r->id, err_msg());
}

/* ---------------------------------------------------------------------------------------------
 * Decision
 */
void egress_taint_raise(elistener *l, int cls)
{
	int cur = atomic_load(&l->taint);
	while (cls > cur && !atomic_compare_exchange_weak(&l->taint, &cur, cls))
		;
}

static bool host_eq(const ssrf_host *a, const ssrf_host *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == SSRF_HOST_NAME)
		return strcmp(a->name, b->name) == 0;
	return memcmp(a->addr, b->addr, a->kind == SSRF_HOST_V4 ? 4 : 16) == 0;
}

/* Path prefix on a segment boundary: "/api/" matches "/api/x"; "/api" matches "/api" and
 * "/api/x" but not "/apix". */
static bool prefix_ok(const char *prefix, span path)
{
	size_t n = strlen(prefix);
	if (n == 0 || (n == 1 && prefix[0] == '/'))
		return true;
	if (path.len < n || memcmp(path.ptr, prefix, n) != 0)
		return false;
	return prefix[n - 1] == '/' || path.len == n || path.ptr[n] == '/' || path.ptr[n] == '?';
}

static void set_reason(erec *r, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
static void set_reason(erec *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

void egress_upstream_cut(erec *r)
{
	if (r->decision == NULL || strcmp(r->decision, "allow") == 0)
		r->decision = "error";
}

void egress_head_refused(erec *r, const http1_parser *rp)
{
	if (rp->head.status == 101)
		set_reason(r,
		           "protocol upgrade refused: the source answered 101 Switching Protocols");
	else
		set_reason(r, "malformed response head: %s",
		           rp->err.reason ? rp->err.reason : "unparseable");
}

bool egress_bodyless_length(const http1_head *rh, uint64_t *n)
{
	span v;
	if (rh->framing != HTTP1_BODY_NONE || rh->status < 200 || rh->status == 204 ||
	    !http1_header_get(rh, SPAN_LIT("Content-Length"), &v))
		return false;
	/* the parser took it: one field, digits only */
	return num_parse_u64(v, 0, UINT64_MAX, n) == CUSTOS_OK;
}

/* A ';' (or "%3B") in the path: path parameters, which upstreams read in their own ways
 * (Tomcat and Jetty take "/api/..;/admin" as "/admin" and "/admin;x" as "/admin") after the
 * source's prefix and the policy matched the path with its ';' as data. */
static bool has_path_params(span nq)
{
	for (size_t i = 0; i < nq.len; i++)
		if (nq.ptr[i] == ';' ||
		    (nq.ptr[i] == '%' && i + 2 < nq.len && nq.ptr[i + 1] == '3' &&
		     (nq.ptr[i + 2] == 'b' || nq.ptr[i + 2] == 'B')))
			return true;
	return false;
}

const esource *egress_find_source(egress_server *s, bool https, const ssrf_host *h, uint16_t port)
{
	for (size_t i = 0; i < s->nsrc; i++)
		if (s->src[i].o.https == https && s->src[i].o.port == port &&
		    host_eq(&s->src[i].host, h))
			return &s->src[i];
	return NULL;
}

/* Evaluates the egress request against p; true when denied (reason in r). Copies what the
 * audit needs out of p, so the caller may drop its reference right after. */
static bool eval_policy(egress_server *s, policy *p, const elistener *l, erec *r, bool https,
                        const ssrf_host *h, uint16_t port, span method, span nq, bool connect_only,
                        const esource *src)
{
	if (p == NULL) {
		set_reason(r, "policy: none in force");
		return true;
	}
	policy_request req = {
		.direction = POLICY_EGRESS,
		.principal =
		        r->principal[0] ? policy_find_principal(p, span_cstr(r->principal)) : NULL,
		.model = l->model ? policy_find_model(p, span_cstr(l->model)) : NULL,
		.method = method,
		.path = nq,
		.taint = (policy_class)atomic_load(&l->taint),
		.isolation = l->isolation,
	};
	/* With a path, the policy's own catalogue decides which data source a URL is, as
	 * `custos policy test` with `url:` does: a URL custos.yaml's source covers but the
	 * policy's `data:` entry does not has no data source (default deny), never the entry
	 * of the same id. A tunnel without interception has no path: its source's id then. */
	if (!connect_only)
		req.data = policy_find_data_source(p, span_cstr(https ? "https" : "http"),
		                                   span_cstr(h->name), port, nq);
	else
		req.data = policy_find_data_id(p, span_cstr(src->o.id));
	policy_decision d;
	policy_evaluate(p, &req, &d);
	if (req.data)
		r->classification = (int)req.data->classification;
	size_t used = 0;
	for (size_t i = 0; i < d.n_rules && used < sizeof(r->rules) - 1; i++) {
		int n = snprintf(r->rules + used, sizeof(r->rules) - used, "%s%s", i ? "," : "",
		                 d.rules[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	r->shadow = d.shadow;
	if (d.effect != POLICY_ALLOW) {
		set_reason(r, "policy: %s", d.reason ? d.reason : "denied");
		return true;
	}
	r->audit = (uint8_t)d.audit; /* bodies_hashed: hashed per request, never in a tunnel */
	/* inspect: response: needs the plaintext (an intercepted tunnel or plain HTTP) */
	return egress_inspect_decide(s, p, &d, r, connect_only);
}

unsigned egress_decide(egress_server *s, const elistener *l, erec *r, bool https,
                       const ssrf_host *h, uint16_t port, span method, span path, edecide mode,
                       const esource **srcp, ssrf_target *tgt)
{
	bool connect_only = mode == EDECIDE_CONNECT || mode == EDECIDE_INTERCEPT;
	const esource *src = NULL;
	bool host_seen = false, hostport_seen = false;
	span nq = path; /* path without the query */
	const char *q = path.len ? memchr(path.ptr, '?', path.len) : NULL;
	if (q)
		nq.len = (size_t)(q - path.ptr);

	r->decision = "deny";
	/* Sources are picked on the path as the policy sees it (policy_path_normalize): a second
	 * spelling (%61dmin, //) must not pick another source's connection options (CA,
	 * interception) than the one the policy judges. */
	char normbuf[POLICY_MAX_PATH];
	if (!connect_only && nq.len) {
		size_t nl = 0;
		const char *why = NULL;
		if (!policy_path_normalize(nq, normbuf, sizeof(normbuf), &nl, &why)) {
			set_reason(r, "ambiguous request path: %s",
			           why ? why : "cannot be normalised");
			return 400;
		}
		nq = span_of(normbuf, nl);
	}
	/* The longest matching path prefix wins (as in policy_find_data_source); a tunnel
	 * without a path takes the first source on host:port. */
	size_t best = 0;
	for (size_t i = 0; i < s->nsrc && !(connect_only && src); i++) {
		const esource *e = &s->src[i];
		if (!host_eq(&e->host, h))
			continue;
		host_seen = true;
		if (e->o.https != https || e->o.port != port)
			continue;
		hostport_seen = true;
		size_t pl = strlen(e->o.path_prefix);
		if ((connect_only || prefix_ok(e->o.path_prefix, nq)) &&
		    (src == NULL || pl > best)) {
			src = e;
			best = pl;
		}
	}
	if (src == NULL) {
		if (hostport_seen)
			set_reason(r, "path outside every data source's prefix on %s:%u", h->name,
			           port);
		else if (host_seen)
			set_reason(r, "port %u (%s) is not a data source's port on %s", port,
			           https ? "https" : "http", h->name);
		else
			set_reason(r, "no data source for %s://%s:%u", https ? "https" : "http",
			           h->name, port);
		return 403;
	}
	r->source = src->o.id;
	if (!connect_only && has_path_params(nq)) {
		set_reason(r,
		           "';' in the request path: path parameters are refused (upstreams read "
		           "\"..;\" as \"..\")");
		return 400;
	}
	if (mode == EDECIDE_INTERCEPT) {
		/* policy comes per request inside the tunnel */
	} else if (s->store) {
		policy *p = policy_store_get(s->store); /* one reference for this decision */
		bool deny = eval_policy(s, p, l, r, https, h, port, method, nq, connect_only, src);
		policy_unref(p);
		if (deny)
			return 403;
	} else {
		r->classification =
		        POLICY_CLASS_RESTRICTED; /* unknown: assume the worst for taint */
	}
	/* Judged by a rule that does not inspect the path (or by no policy): audited as sent.
	 * A rule that does inspect it decides what is audited (egress_inspect_target); until
	 * then, a refusal is audited masked (egress_inspect_audit_path). */
	if (!connect_only && !egress_inspect_target_wanted(r))
		r->path_final = true;
	if (!connect_only)
		egress_hash_open(r);
	if (mode == EDECIDE_REUSE) {
		r->decision = "allow";
		*srcp = src;
		return 0;
	}
	custos_err e = egress_resolve(s, h, port, src->o.allow_private, tgt);
	if (e == CUSTOS_ERR_DENIED) {
		set_reason(r, "SSRF: %s resolves to %s, a %s address", h->name, tgt->denied_addr,
		           ssrf_class_name(tgt->denied_class));
		return 403;
	}
	if (e != CUSTOS_OK) {
		set_reason(r, "%s", err_msg());
		r->decision = "error";
		return 502;
	}
	r->decision = "allow";
	*srcp = src;
	return 0;
}

custos_err egress_forward_target(span sent, buf *out)
{
	span path = sent, query = { "", 0 };
	const char *q = sent.len ? memchr(sent.ptr, '?', sent.len) : NULL;
	if (q) {
		path.len = (size_t)(q - sent.ptr);
		query = span_of(q, sent.len - path.len);
	}
	/* egress_decide's spelling: "/" for an absolute URI without a path ("" or "?q") */
	if (path.len == 0 || path.ptr[0] != '/')
		path = SPAN_LIT("/");
	buf_init(out, POLICY_MAX_PATH + query.len);
	GUARD(buf_reserve(out, POLICY_MAX_PATH));
	size_t nl = 0;
	const char *why = NULL;
	/* egress_decide refused (400) a path the normaliser refuses: this one was judged */
	ENSURE(policy_path_normalize(path, (char *)buf_tail(out), POLICY_MAX_PATH, &nl, &why),
	       CUSTOS_ERR_INTERNAL, "judged request path not normalisable: %s", why ? why : "?");
	buf_commit(out, nl);
	return buf_append_span(out, query);
}

#ifdef CUSTOS_TEST_HOOKS
/* Test builds only (docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_EGRESS_RESOLVE_HOLD_MS=N
 * holds every egress name resolution N ms, through signals, before it starts: a resolver that
 * a shut socket does not reach (tests/integration/egress_stop_wait.sh). */
static void test_hook_resolve_hold(void)
{
	const char *v = getenv("CUSTOS_TEST_EGRESS_RESOLVE_HOLD_MS");
	if (v == NULL)
		return;
	long ms = strtol(v, NULL, 10);
	log_warn("egress: test hook: resolution held %ld ms", ms);
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000 };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
	log_warn("egress: test hook: resolution hold over");
}
#endif

custos_err egress_resolve(egress_server *s, const ssrf_host *h, uint16_t port, bool allow_private,
                          ssrf_target *tgt)
{
#ifdef CUSTOS_TEST_HOOKS
	test_hook_resolve_hold();
#endif
	return ssrf_resolve_via(h, port, allow_private, s->dns ? edns_lookup : NULL, s->dns, tgt);
}

/* ---------------------------------------------------------------------------------------------
 * Server
 */
static custos_err open_listener(const char *addr, int *fdp, unsigned *portp)
{
	span host;
	uint16_t port;
	struct sockaddr_storage ss;
	socklen_t sl;
	char h[INET6_ADDRSTRLEN + 2];

	GUARD(ssrf_split_authority(span_cstr(addr), 0, &host, &port));
	GUARD(span_copy_cstr(host, h, sizeof(h)));
	memset(&ss, 0, sizeof(ss));
	if (h[0] == '[') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		h[strlen(h) - 1] = '\0';
		ENSURE(inet_pton(AF_INET6, h + 1, &s6->sin6_addr) == 1, CUSTOS_ERR_INVAL,
		       "egress listener %s: bad address", addr);
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		ENSURE(inet_pton(AF_INET, h, &s4->sin_addr) == 1, CUSTOS_ERR_INVAL,
		       "egress listener %s: bad address", addr);
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		sl = sizeof(*s4);
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return err_sys("egress listener socket");
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 1024) == -1) {
		custos_err e = err_sys("egress listener %s", addr);
		close(fd);
		return e;
	}
	*fdp = fd;
	(void)portp;
	return CUSTOS_OK;
}

custos_err egress_listen(const char *address, int *fd)
{
	*fd = -1;
	return open_listener(address, fd, NULL);
}

static unsigned fd_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

/* The TLS client context of an https source: its CA (ca_file or the system store), its client
 * certificate when it has one, an origin session cache of its own. */
static custos_err source_tls_ctx(const esource *e, SSL_CTX **out)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	ENSURE(ctx != NULL, CUSTOS_ERR_CRYPTO, "SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	tls_client_hostflags(ctx); /* no partial wildcards (tls.h) */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	custos_err err = CUSTOS_OK;
	if (e->o.ca_file != NULL &&
	    (err = tls_ca_file_load(ctx, e->o.ca_file, "ca_file")) != CUSTOS_OK) {
		SSL_CTX_free(ctx);
		return err_wrap(err, "data source %s: cannot load CA %s", e->o.id, e->o.ca_file);
	}
	if (e->o.ca_file == NULL && SSL_CTX_set_default_verify_paths(ctx) != 1) {
		SSL_CTX_free(ctx);
		return err_set(CUSTOS_ERR_CRYPTO, "data source %s: cannot load CA (system store)",
		               e->o.id);
	}
	if (e->o.crl_file != NULL &&
	    (err = tls_crl_load(ctx, e->o.crl_file, "crl_file", NULL)) != CUSTOS_OK) {
		SSL_CTX_free(ctx);
		return err_wrap(err, "data source %s", e->o.id);
	}
	if (e->o.cert_file != NULL &&
	    (err = tls_client_cert_load(ctx, e->o.cert_file, e->o.key_file)) != CUSTOS_OK) {
		SSL_CTX_free(ctx);
		return err_wrap(err, "data source %s: client certificate", e->o.id);
	}
	/* Sessions with the source's origins are resumed (tls.c, per origin). */
	err = tls_origin_cache_attach(ctx);
	if (err != CUSTOS_OK) {
		SSL_CTX_free(ctx);
		return err;
	}
	*out = ctx;
	return CUSTOS_OK;
}

static custos_err source_tls(esource *e)
{
	return source_tls_ctx(e, &e->tls);
}

/* The contexts a reload made for the https sources (src[i] for i where ctx[i] is set). */
struct egress_tls_next {
	size_t n;
	SSL_CTX *ctx[];
};

void egress_tls_next_free(egress_tls_next *n)
{
	for (size_t i = 0; n != NULL && i < n->n; i++)
		SSL_CTX_free(n->ctx[i]);
	free(n);
}

custos_err egress_tls_prepare(egress_server *s, egress_tls_next **out)
{
	egress_tls_next *n = NULL;

	*out = NULL;
	for (size_t i = 0; i < s->nsrc; i++) {
		const esource *x = &s->src[i];
		if (!x->o.https)
			continue;
		if (n == NULL)
			n = xcalloc(1, sizeof(*n) + s->nsrc * sizeof(n->ctx[0]));
		n->n = s->nsrc;
		custos_err e = source_tls_ctx(x, &n->ctx[i]);
		if (e != CUSTOS_OK) {
			egress_tls_next_free(n);
			return e;
		}
	}
	*out = n;
	return CUSTOS_OK;
}

void egress_tls_commit(egress_server *s, egress_tls_next *n)
{
	if (n == NULL)
		return;
	for (size_t i = 0; i < n->n && i < s->nsrc; i++) {
		if (n->ctx[i] == NULL)
			continue;
		pthread_mutex_lock(&s->tls_mu);
		SSL_CTX *old = s->src[i].tls;
		s->src[i].tls = n->ctx[i];
		pthread_mutex_unlock(&s->tls_mu);
		n->ctx[i] = NULL;
		SSL_CTX_free(old); /* open connections hold references of their own */
		log_info("egress: data source %s: CA %s read again", s->src[i].o.id,
		         s->src[i].o.ca_file ? s->src[i].o.ca_file : "(system store)");
		if (s->src[i].o.cert_file)
			log_info("egress: data source %s: client certificate %s read again",
			         s->src[i].o.id, s->src[i].o.cert_file);
		if (s->src[i].o.crl_file)
			log_info("egress: data source %s: CRLs %s read again", s->src[i].o.id,
			         s->src[i].o.crl_file);
	}
	egress_tls_next_free(n);
}

SSL *egress_source_ssl_new(egress_server *s, const esource *src)
{
	pthread_mutex_lock(&s->tls_mu);
	SSL *ssl = SSL_new(src->tls);
	pthread_mutex_unlock(&s->tls_mu);
	return ssl;
}

custos_err egress_create(egress_options *o, egress_server **out)
{
	custos_err e = CUSTOS_OK;
	egress_server *s = xcalloc(1, sizeof(*s));

	*out = NULL;
	s->o = *o;
	memset(o, 0, sizeof(*o));
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->eng_lock, NULL);
	pthread_mutex_init(&s->ls_mu, NULL);
	pthread_mutex_init(&s->tls_mu, NULL);
	pthread_cond_init(&s->idle, NULL);
	if (s->o.nsources > EGRESS_MAX_SOURCES || s->o.nlisteners > EGRESS_MAX_LISTENERS) {
		e = err_set(CUSTOS_ERR_LIMIT, "egress: too many sources or listeners");
		goto fail;
	}
	if (s->o.max_conns == 0)
		s->o.max_conns = 64;
	if (s->o.max_conns > EGRESS_MAX_CONNS)
		s->o.max_conns = EGRESS_MAX_CONNS;
	if (s->o.max_response == 0)
		s->o.max_response = EGRESS_DEFAULT_RESPONSE;
	if (s->o.inspect_max_body == 0 || s->o.inspect_max_body > EGRESS_INSPECT_BODY_CEIL)
		s->o.inspect_max_body =
		        s->o.inspect_max_body ? EGRESS_INSPECT_BODY_CEIL : EGRESS_INSPECT_BODY_MAX;
	if (s->o.inspect_max_held == 0)
		s->o.inspect_max_held = EGRESS_INSPECT_HELD_DEFAULT;
	if (s->o.connect_timeout_ns == 0)
		s->o.connect_timeout_ns = 5 * NS_PER_S;
	if (s->o.read_timeout_ns == 0)
		s->o.read_timeout_ns = 60 * NS_PER_S;
	if (s->o.idle_timeout_ns == 0)
		s->o.idle_timeout_ns = 60 * NS_PER_S;
	if (s->o.leaf_lifetime_ns == 0)
		s->o.leaf_lifetime_ns = 24 * 3600 * NS_PER_S;

	s->src = xcalloc(s->o.nsources ? s->o.nsources : 1, sizeof(*s->src));
	bool need_ca = false;
	for (size_t i = 0; i < s->o.nsources; i++) {
		esource *x = &s->src[s->nsrc++];
		x->o = s->o.sources[i];
		memset(&s->o.sources[i], 0, sizeof(s->o.sources[i])); /* moved */
		if (x->o.port == 0)
			x->o.port = x->o.https ? 443 : 80;
		if (x->o.path_prefix == NULL)
			x->o.path_prefix = xstrdup("/");
		span hs = span_cstr(x->o.host);
		char br[SSRF_MAX_HOST + 3];
		/* a configured IPv6 host may come without brackets */
		if (x->o.host && strchr(x->o.host, ':') && x->o.host[0] != '[') {
			snprintf(br, sizeof(br), "[%s]", x->o.host);
			hs = span_cstr(br);
		}
		if ((e = ssrf_parse_host(hs, &x->host)) != CUSTOS_OK) {
			e = err_wrap(e, "data source %s: host", x->o.id);
			goto fail;
		}
		if (x->o.intercept && !x->o.https) {
			e = err_set(CUSTOS_ERR_INVAL, "data source %s: intercept needs https",
			            x->o.id);
			goto fail;
		}
		need_ca |= x->o.intercept;
		if (x->o.cert_file != NULL && (!x->o.intercept || x->o.key_file == NULL)) {
			e = err_set(
			        CUSTOS_ERR_INVAL,
			        "data source %s: a client certificate needs intercept and a key",
			        x->o.id);
			goto fail;
		}
		if (x->o.https && (e = source_tls(x)) != CUSTOS_OK)
			goto fail;
		if (x->o.https && !x->o.intercept && strcmp(x->o.path_prefix, "/") != 0)
			log_warn("egress: data source %s has path prefix %s but is not "
			         "intercepted: a "
			         "CONNECT tunnel cannot enforce paths (set intercept: true)",
			         x->o.id, x->o.path_prefix);
	}
	if (s->o.n_dns_servers && (e = edns_new(s->o.dns_servers, s->o.n_dns_servers,
	                                        s->o.dns_timeout_ns, &s->dns)) != CUSTOS_OK) {
		e = err_wrap(e, "egress.dns.servers");
		goto fail;
	}
	free(s->o.sources); /* strings moved into s->src */
	s->o.sources = NULL;
	s->o.nsources = 0;
	if (need_ca) {
		if (s->o.ca_dir == NULL) {
			e = err_set(CUSTOS_ERR_INVAL, "egress: interception needs ca_dir");
			goto fail;
		}
		if ((e = mint_open(s->o.ca_dir, s->o.leaf_lifetime_ns, 0, &s->mint)) != CUSTOS_OK)
			goto fail;
	}
	if (s->o.policy) {
		if ((e = policy_store_new(s->o.policy, &s->store)) != CUSTOS_OK)
			goto fail;  /* s->o.policy is still ours: freed with the options */
		s->o.policy = NULL; /* the store's */
	} else if (s->o.policy_file) {
		diag_list d;
		policy *p = NULL;
		diag_init(&d);
		e = policy_load(s->o.policy_file, &p, &d);
		if (e != CUSTOS_OK) {
			diag_log(&d);
			e = d.errors ? diag_err(e, &d, "egress policy")
			             : err_wrap(e, "egress policy %s", s->o.policy_file);
			diag_free(&d);
			goto fail;
		}
		diag_free(&d);
		if ((e = policy_store_new(p, &s->store)) != CUSTOS_OK) {
			policy_unref(p);
			goto fail;
		}
	} else {
		log_warn("egress: no policy file: the data-source catalogue alone decides");
	}
	s->ls_cap = s->o.nlisteners + EGRESS_MAX_ADDED;
	s->ls = xcalloc(s->ls_cap, sizeof(*s->ls));
	for (size_t i = 0; i < s->o.nlisteners; i++) {
		egress_listener_opts *lo = &s->o.listeners[i];
		elistener *l = &s->ls[s->nls++];
		l->srv = s;
		l->index = i;
		atomic_init(&l->next_fd, -1);
		l->fd = lo->fd;
		lo->fd = -1;
		l->model = lo->model;
		l->sandbox = lo->sandbox;
		lo->model = lo->sandbox = NULL;
		l->isolation = lo->isolation;
		l->peer_pid = lo->peer_pid;
		if (l->fd < 0 && (e = open_listener(lo->address, &l->fd, &l->port)) != CUSTOS_OK)
			goto fail;
		l->port = fd_port(l->fd);
	}
	*out = s;
	return CUSTOS_OK;
fail:
	egress_free(s);
	return e;
}

static void *accept_main(void *arg);

typedef struct cstart {
	egress_server *s;
	elistener *l;
	int fd;
	char remote[64];
	size_t npre;
	uint8_t *pre; /* bytes a forward loop read before handing the connection on */
} cstart;

/* A connection refused whole, before any request on it was read (or with the one read not yet
 * decided): answered 503 with why in X-Custos-Reason (best effort, never blocking), closed and
 * audited as kind "connection" with decision (deny: a limit; error: custos could not serve
 * it). */
static void reject_conn(egress_server *s, elistener *l, int fd, const char *decision,
                        const char *why)
{
	erec r;
	char msg[400];
	erec_init(&r, "connection");
	r.decision = decision;
	r.status = 503;
	set_reason(&r, "%s", why);
	int n = snprintf(msg, sizeof(msg),
	                 "HTTP/1.1 503 Service Unavailable\r\n" EGRESS_REASON_HEADER
	                 ": %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
	                 r.reason);
	if (n > 0 && (size_t)n < sizeof(msg)) {
		ssize_t w;
		do
			w = send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (w == -1 && errno == EINTR);
	}
	close(fd);
	egress_audit(s, l, &r);
}

static void *conn_main(void *arg)
{
	cstart *cs = arg;
	proc_name_self("custos-eg-conn");
	if (!egress_conn_serve(cs->s, cs->l, cs->fd, cs->remote, cs->pre, cs->npre))
		atomic_fetch_sub(&cs->l->active, 1);
	free(cs->pre);
	free(cs);
	return NULL;
}

void egress_conn_spawn(egress_server *s, elistener *l, int fd, const char *remote,
                       const uint8_t *pre, size_t n)
{
	cstart *cs = xcalloc(1, sizeof(*cs));
	cs->s = s;
	cs->l = l;
	cs->fd = fd;
	snprintf(cs->remote, sizeof(cs->remote), "%s", remote);
	if (n) {
		cs->pre = xcalloc(1, n);
		memcpy(cs->pre, pre, n);
		cs->npre = n;
	}
	pthread_attr_t at;
	pthread_t th;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 512 * 1024);
	int rc = pthread_create(&th, &at, conn_main, cs);
	pthread_attr_destroy(&at);
	if (rc != 0) {
		log_warn("egress: cannot start a connection thread: %s", strerror(rc));
		free(cs->pre);
		free(cs);
		char why[128];
		snprintf(why, sizeof(why), "cannot start a connection thread: %s", strerror(rc));
		reject_conn(s, l, fd, "error", why); /* uses l: before the slot is given back */
		atomic_fetch_sub(&l->active, 1);
	}
}

static void *accept_main(void *arg)
{
	elistener *l = arg;
	egress_server *s = l->srv;
	proc_name_self("custos-eg-acc");

	while (!atomic_load(&s->stopping) && !atomic_load(&l->closing)) {
		int nf = atomic_exchange(&l->next_fd, -1);
		if (nf >= 0) { /* the sandbox restarted in a new netns: serve it there */
			close(l->fd);
			l->fd = nf;
			l->port = fd_port(nf);
		}
		struct pollfd pf = { .fd = l->fd, .events = POLLIN };
		int pr = poll(&pf, 1, 200);
		if (pr <= 0)
			continue;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				log_warn("egress: accept: %s", strerror(errno));
			if (errno == EMFILE || errno == ENFILE)
				poll(NULL, 0, 100);
			continue;
		}
		if (l->peer_pid > 0) {
			struct ucred uc;
			socklen_t ul = sizeof(uc);
			if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == -1 ||
			    uc.pid != l->peer_pid) {
				char why[96];
				snprintf(why, sizeof(why),
				         "a process (pid %d) that is not the VM's channel",
				         ul == sizeof(uc) ? (int)uc.pid : -1);
				reject_conn(s, l, fd, "deny", why);
				continue;
			}
		}
		if (atomic_fetch_add(&l->active, 1) >= s->o.max_conns) {
			char why[96];
			snprintf(why, sizeof(why),
			         "too many connections from this sandbox (max %u)", s->o.max_conns);
			atomic_fetch_sub(&l->active, 1);
			reject_conn(s, l, fd, "deny", why);
			continue;
		}
		char a[INET6_ADDRSTRLEN] = "?";
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a, sizeof(a));
		else if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof(a));
		if (s->fwd) {
			if (!egress_fwd_add(s, l, fd, a)) { /* its loops are gone: stopping */
				reject_conn(s, l, fd, "error", "egress proxy stopping");
				atomic_fetch_sub(&l->active, 1);
			}
			continue;
		}
		egress_conn_spawn(s, l, fd, a, NULL, 0);
	}
	if (atomic_load(&l->closing)) { /* its sandbox is gone: so is the socket, now */
		close(l->fd);
		l->fd = -1;
		int nf = atomic_exchange(&l->next_fd, -1);
		if (nf >= 0)
			close(nf);
		log_info("egress: listener %zu for model %s closed (sandbox removed)", l->index,
		         l->model ? l->model : "(none)");
	}
	atomic_store(&l->exited, true);
	return NULL;
}

/* Starts l's accept thread (called with s->ls_mu held). */
static custos_err listener_start(elistener *l)
{
	int rc = pthread_create(&l->th, NULL, accept_main, l);
	if (rc != 0) {
		errno = rc;
		return err_sys("egress: accept thread");
	}
	l->started = true;
	log_info("egress: listener %zu on port %u for model %s", l->index, l->port,
	         l->model ? l->model : "(none)");
	return CUSTOS_OK;
}

custos_err egress_start(egress_server *s)
{
	GUARD(egress_relay_start(s));
	if (!s->o.forward_threads) {
		GUARD(egress_fwd_start(s, s->o.forward_loops));
		log_info("egress: plain forward requests on %zu event loop(s)",
		         egress_fwd_loops(s));
	} else {
		log_info("egress: plain forward requests on connection threads");
	}
	custos_err e = CUSTOS_OK;
	pthread_mutex_lock(&s->ls_mu);
	for (size_t i = 0; i < s->nls && e == CUSTOS_OK; i++)
		e = listener_start(&s->ls[i]);
	s->ls_running = e == CUSTOS_OK;
	pthread_mutex_unlock(&s->ls_mu);
	return e;
}

static bool all_idle(egress_server *s)
{
	for (size_t i = 0; i < s->nls; i++)
		if (atomic_load(&s->ls[i].active))
			return false;
	return true;
}

void egress_stop(egress_server *s)
{
	if (s == NULL)
		return;
	atomic_store(&s->stopping, true);
	pthread_mutex_lock(&s->ls_mu);
	s->ls_running = false; /* no listener added from here */
	for (size_t i = 0; i < s->nls; i++) {
		if (s->ls[i].started) {
			pthread_join(s->ls[i].th, NULL);
			s->ls[i].started = false;
		}
	}
	pthread_mutex_unlock(&s->ls_mu);
	egress_relay_stop(s); /* tunnels cut off and audited; no more handed over */
	egress_fwd_stop(s);   /* forward loops: open requests cut off and audited */
	/* Connection threads are detached: shut their sockets and wait for them to leave. The wait
	 * has no bound, as the joins of the resolver threads above have none: a thread blocked
	 * where a shut socket does not reach it (the system resolver, whose own timeouts end it)
	 * still uses s and the audit writer, which egress_free and custos up free next. custos
	 * up's supervisor bounds the whole stop (SIGKILL when the proxy does not stop in time). */
	for (unsigned tries = 0; !all_idle(s); tries++) {
		egress_conn_shutdown_all(s);
		if (tries == 500) { /* 5 s */
			unsigned n = 0;
			for (size_t i = 0; i < s->nls; i++)
				n += atomic_load(&s->ls[i].active);
			log_warn("egress: %u connection(s) still open 5 s after the stop began; "
			         "waiting for their threads",
			         n);
		}
		poll(NULL, 0, 10);
	}
}

void egress_free(egress_server *s)
{
	if (s == NULL)
		return;
	egress_stop(s);
	for (size_t i = 0; i < s->nsrc; i++) {
		source_free(&s->src[i].o);
		SSL_CTX_free(s->src[i].tls);
	}
	free(s->src);
	for (size_t i = 0; i < s->nls; i++) {
		if (s->ls[i].fd >= 0)
			close(s->ls[i].fd);
		int nf = atomic_load(&s->ls[i].next_fd);
		if (nf >= 0)
			close(nf);
		free(s->ls[i].model);
		free(s->ls[i].sandbox);
	}
	free(s->ls);
	egress_relay_free(s);
	egress_fwd_free(s);
	edns_free(s->dns);
	mint_free(s->mint);
	egress_eng_drop(s);
	policy_store_free(s->store);
	egress_options_free(&s->o);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->eng_lock);
	pthread_mutex_destroy(&s->ls_mu);
	pthread_mutex_destroy(&s->tls_mu);
	pthread_cond_destroy(&s->idle);
	free(s);
}

void egress_set_policy(egress_server *s, struct policy *p)
{
	if (p == NULL)
		return;
	if (s->store == NULL) {
		log_warn("egress: started without a policy: the data-source catalogue alone keeps "
		         "deciding (restart custos to judge egress by the policy)");
		policy_unref(p);
		return;
	}
	policy_store_swap(s->store, p);
}

/* A slot whose listener was closed and that nothing uses any more (called with s->ls_mu
 * held): its accept thread has left (joined here) and no connection it accepted is open. An
 * accept thread still in its loop (the listener was closed by the same reload, moments ago)
 * while no connection is open is waited for: it sees `closing` within its poll interval (200
 * ms) and takes no lock on its way out, so a listener closed and one added in the same reload
 * share the slot instead of the added one taking another. */
static bool slot_free(elistener *l)
{
	if (!atomic_load(&l->closing))
		return false;
	if (atomic_load(&l->active) != 0)
		return false; /* a connection it accepted is open: the slot is taken later */
	if (l->started) {
		pthread_join(l->th, NULL);
		l->started = false;
	}
	/* No accept thread runs, so nothing raises active any more: 0 stays 0 (it may have
	 * accepted one more before it left). */
	return atomic_load(&l->active) == 0;
}

void egress_listeners_reap(egress_server *s)
{
	pthread_mutex_lock(&s->ls_mu);
	for (size_t k = 0; k < s->nls; k++)
		(void)slot_free(&s->ls[k]);
	pthread_mutex_unlock(&s->ls_mu);
}

custos_err egress_listener_add(egress_server *s, egress_listener_opts *lo, size_t *index)
{
	custos_err e = CUSTOS_OK;
	size_t i = SIZE_MAX;

	pthread_mutex_lock(&s->ls_mu);
	if (lo->fd < 0) {
		e = err_set(CUSTOS_ERR_INVAL, "egress: model %s: no listening socket",
		            lo->model ? lo->model : "(none)");
	} else if (atomic_load(&s->stopping)) {
		e = err_set(CUSTOS_ERR_CLOSED, "egress: the proxy is stopping");
	} else {
		for (size_t k = 0; k < s->nls && i == SIZE_MAX; k++)
			if (slot_free(&s->ls[k]))
				i = k;
		if (i == SIZE_MAX && s->nls < s->ls_cap)
			i = s->nls;
		if (i == SIZE_MAX)
			e = err_set(CUSTOS_ERR_LIMIT,
			            "egress: %zu listeners are open or still have connections open "
			            "(%d beyond those custos started with)",
			            s->ls_cap, EGRESS_MAX_ADDED);
	}
	if (e != CUSTOS_OK) {
		pthread_mutex_unlock(&s->ls_mu);
		return e;
	}
	bool reused = i < s->nls;
	elistener *l = &s->ls[i];
	if (reused) { /* what the closed listener left: its socket is closed already */
		int nf = atomic_exchange(&l->next_fd, -1);
		if (nf >= 0)
			close(nf);
		if (l->fd >= 0)
			close(l->fd);
		free(l->model);
		free(l->sandbox);
		l->model = l->sandbox = NULL;
		atomic_store(&l->taint, 0);
		atomic_store(&l->exited, false);
		atomic_store(&l->closing, false);
	} else {
		memset(l, 0, sizeof(*l));
		atomic_init(&l->next_fd, -1);
	}
	l->srv = s;
	l->index = i;
	l->fd = lo->fd;
	l->port = fd_port(l->fd);
	l->model = lo->model;
	l->sandbox = lo->sandbox;
	l->isolation = lo->isolation;
	l->peer_pid = lo->peer_pid;
	free(lo->address);
	memset(lo, 0, sizeof(*lo));
	lo->fd = -1;
	if (s->ls_running)
		e = listener_start(l);
	if (e != CUSTOS_OK) { /* not published (a reused slot stays a closed one) */
		close(l->fd);
		l->fd = -1;
		free(l->model);
		free(l->sandbox);
		l->model = l->sandbox = NULL;
		if (reused)
			atomic_store(&l->closing, true);
		else
			memset(l, 0, sizeof(*l));
	} else {
		if (!reused)
			__atomic_store_n(&s->nls, i + 1, __ATOMIC_RELEASE);
		if (reused)
			log_info("egress: listener %zu taken again (its last connection had ended)",
			         i);
		*index = i;
	}
	pthread_mutex_unlock(&s->ls_mu);
	return e;
}

custos_err egress_listener_close(egress_server *s, size_t i)
{
	pthread_mutex_lock(&s->ls_mu);
	if (i >= s->nls) {
		pthread_mutex_unlock(&s->ls_mu);
		return err_set(CUSTOS_ERR_INVAL, "egress: no listener %zu", i);
	}
	elistener *l = &s->ls[i];
	atomic_store(&l->closing, true);
	/* A running accept thread closes the socket on its way out, within its poll interval
	 * (egress_stop joins it): the caller may hold locks the forward path needs. */
	if (!l->started && l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	pthread_mutex_unlock(&s->ls_mu);
	return CUSTOS_OK;
}

custos_err egress_listener_replace(egress_server *s, size_t i, int fd)
{
	if (i >= __atomic_load_n(&s->nls, __ATOMIC_ACQUIRE)) {
		close(fd);
		return err_set(CUSTOS_ERR_INVAL, "egress: no listener %zu", i);
	}
	elistener *l = &s->ls[i];
	atomic_store(&l->taint, 0); /* a new instance has read nothing yet */
	int old = atomic_exchange(&l->next_fd, fd);
	if (old >= 0)
		close(old);
	log_info("egress: listener %zu for model %s replaced (sandbox restarted)", i,
	         l->model ? l->model : "(none)");
	return CUSTOS_OK;
}

unsigned egress_bound_port(const egress_server *s, size_t i)
{
	return i < __atomic_load_n(&s->nls, __ATOMIC_ACQUIRE) ? s->ls[i].port : 0;
}

int egress_taint(const egress_server *s, size_t i)
{
	return i < __atomic_load_n(&s->nls, __ATOMIC_ACQUIRE) ? atomic_load(&s->ls[i].taint) : 0;
}
