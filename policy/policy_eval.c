/*
 * policy evaluator: identity -> principal, URL -> data source, and the decision for a request
 * context. Nothing here allocates; explain shares the matcher so it can never disagree with
 * the decision it explains.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

/* ---------------------------------------------------------------------------------------------
 * Globs: '*' matches any run without '/', '**' any run, '?' one character other than '/'.
 * Pattern and subject go by characters (UTF-8 sequences), simulated as an NFA over pattern
 * positions (linear in the subject, no backtracking).
 */
#define GLOB_MAX POLICY_MAX_GLOB

/* Length of a UTF-8 sequence led by b (1 for ASCII or an invalid lead). */
static size_t utf8_need(unsigned b)
{
	return b >= 0xc2 && b <= 0xdf   ? 2
	       : b >= 0xe0 && b <= 0xef ? 3
	       : b >= 0xf0 && b <= 0xf4 ? 4
	                                : 1;
}

/* The byte a "%XX" at s[i] encodes, or -1. */
static int pct_byte(const char *s, size_t n, size_t i)
{
	if (i + 2 >= n || s[i] != '%')
		return -1;
	int hi = num_hex_digit((unsigned char)s[i + 1]),
	    lo = num_hex_digit((unsigned char)s[i + 2]);
	return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Bytes of the character at s[i]: one UTF-8 sequence (one byte when invalid); in a path, a
 * run of %XX that spells one UTF-8 sequence, or one %XX. */
static size_t char_len(const char *s, size_t n, size_t i, bool path)
{
	if (path && s[i] == '%') {
		int b = pct_byte(s, n, i);
		if (b < 0)
			return 1;
		size_t need = utf8_need((unsigned)b);
		for (size_t k = 1; k < need; k++) {
			int c = pct_byte(s, n, i + 3 * k);
			if (c < 0 || (c & 0xc0) != 0x80)
				return 3;
		}
		return 3 * need;
	}
	size_t need = utf8_need((unsigned char)s[i]);
	if (i + need > n)
		return 1;
	for (size_t k = 1; k < need; k++)
		if (((unsigned char)s[i + k] & 0xc0) != 0x80)
			return 1;
	return need;
}

bool policy_glob_match_in(const char *pat, size_t plen, const char *s, size_t slen, bool path)
{
	enum { T_LIT, T_ONE, T_SEG, T_ANY };
	uint8_t kind[GLOB_MAX];
	uint16_t lo[GLOB_MAX], ll[GLOB_MAX]; /* a literal character: pat[lo..lo+ll) */
	size_t nt = 0;
	if (plen > GLOB_MAX)
		return false;
	for (size_t i = 0; i < plen;) {
		if (pat[i] == '*') {
			if (i + 1 < plen && pat[i + 1] == '*') {
				kind[nt++] = T_ANY;
				while (i < plen && pat[i] == '*')
					i++;
			} else {
				kind[nt++] = T_SEG;
				i++;
			}
		} else if (pat[i] == '?') {
			kind[nt++] = T_ONE;
			i++;
		} else {
			size_t cl = char_len(pat, plen, i, path);
			kind[nt] = T_LIT;
			lo[nt] = (uint16_t)i;
			ll[nt++] = (uint16_t)cl;
			i += cl;
		}
	}
	uint64_t cur[GLOB_MAX / 64 + 1], nxt[GLOB_MAX / 64 + 1];
	memset(cur, 0, sizeof(cur));
	cur[0] = 1;
#define BIT(a, i)  (((a)[(i) >> 6] >> ((i)&63)) & 1)
#define SETB(a, i) ((a)[(i) >> 6] |= 1ull << ((i)&63))
	/* epsilon closure: a star may match nothing */
	for (size_t i = 0; i < nt; i++)
		if (BIT(cur, i) && (kind[i] == T_SEG || kind[i] == T_ANY))
			SETB(cur, i + 1);
	for (size_t k = 0; k < slen;) {
		size_t cl = char_len(s, slen, k, path);
		bool slash = cl == 1 && s[k] == '/';
		bool any = false;
		memset(nxt, 0, sizeof(nxt));
		for (size_t i = 0; i < nt; i++) {
			if (!BIT(cur, i))
				continue;
			switch (kind[i]) {
			case T_LIT:
				if (ll[i] == cl && memcmp(pat + lo[i], s + k, cl) == 0)
					SETB(nxt, i + 1), any = true;
				break;
			case T_ONE:
				if (!slash)
					SETB(nxt, i + 1), any = true;
				break;
			case T_SEG:
				if (!slash)
					SETB(nxt, i), any = true;
				break;
			default:
				SETB(nxt, i), any = true;
				break;
			}
		}
		if (!any)
			return false;
		for (size_t i = 0; i < nt; i++)
			if (BIT(nxt, i) && (kind[i] == T_SEG || kind[i] == T_ANY))
				SETB(nxt, i + 1);
		memcpy(cur, nxt, sizeof(cur));
		k += cl;
	}
	return BIT(cur, nt);
#undef BIT
#undef SETB
}

/* ---------------------------------------------------------------------------------------------
 * Subjects
 */
/* A fact the caller does not have (an empty span) matches no key, whatever the pattern: a
 * glob such as "*" matches the empty string, and would otherwise take in every caller. */
static bool any_glob(const char *pat, const span *v, size_t n)
{
	size_t pl = strlen(pat);
	for (size_t i = 0; i < n; i++)
		if (v[i].len > 0 && policy_glob_match(pat, pl, v[i].ptr, v[i].len))
			return true;
	return false;
}

static bool any_eq(const char *want, const span *v, size_t n, bool nocase)
{
	span w = span_cstr(want);
	for (size_t i = 0; i < n; i++)
		if (v[i].len > 0 && (nocase ? span_case_eq(w, v[i]) : span_eq(w, v[i])))
			return true;
	return false;
}

static bool fact_eq(const char *want, span have)
{
	return have.len > 0 && span_eq(span_cstr(want), have);
}

/* The JWT groups the proxy keeps (policy.h: POLICY_MAX_JWT_GROUPS): the first ones of at most
 * POLICY_MAX_JWT_GROUP_BYTES, longer ones skipped. */
static bool jwt_group_held(const char *want, const policy_identity *id)
{
	span w = span_cstr(want);
	size_t kept = 0;
	for (size_t i = 0; i < id->n_jwt_groups && kept < POLICY_MAX_JWT_GROUPS; i++) {
		span g = id->jwt_groups[i];
		if (g.len > POLICY_MAX_JWT_GROUP_BYTES)
			continue;
		kept++;
		if (g.len > 0 && span_eq(w, g))
			return true;
	}
	return false;
}

static bool principal_matches(const struct pmatch *m, const policy_identity *id)
{
	if ((id->bearer & POLICY_BEARER_API_KEY) && !m->has_key)
		return false;
	if ((id->bearer & POLICY_BEARER_JWT) && !m->jwt_iss && !m->jwt_sub && !m->jwt_group)
		return false;
	/* every key present must hold; the API key is compared in constant time */
	if (m->has_key && (!id->has_api_key || CRYPTO_memcmp(m->key, id->api_key_sha256, 32) != 0))
		return false;
	if (m->san_uri && !any_glob(m->san_uri, id->san_uris, id->n_san_uris))
		return false;
	if (m->san_dns) {
		/* DNS names compare case-insensitively: the pattern was lowered when compiled,
		 * the subject is lowered into a buffer */
		bool ok = false;
		span pat = span_cstr(m->san_dns);
		for (size_t i = 0; i < id->n_san_dns && !ok; i++) {
			char low[GLOB_MAX];
			if (id->san_dns[i].len == 0 || id->san_dns[i].len > sizeof(low))
				continue;
			for (size_t k = 0; k < id->san_dns[i].len; k++) {
				char ch = id->san_dns[i].ptr[k];
				low[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
			}
			ok = policy_glob_match(pat.ptr, pat.len, low, id->san_dns[i].len);
		}
		if (!ok)
			return false;
	}
	if (m->san_email && !any_eq(m->san_email, id->san_emails, id->n_san_emails, true))
		return false;
	if (m->cn && !fact_eq(m->cn, id->subject_cn))
		return false;
	if (m->issuer && !fact_eq(m->issuer, id->issuer_dn))
		return false;
	if (m->jwt_iss && !fact_eq(m->jwt_iss, id->jwt_iss))
		return false;
	if (m->jwt_sub &&
	    (id->jwt_sub.len == 0 ||
	     !policy_glob_match(m->jwt_sub, strlen(m->jwt_sub), id->jwt_sub.ptr, id->jwt_sub.len)))
		return false;
	if (m->jwt_group && !jwt_group_held(m->jwt_group, id))
		return false;
	return true;
}

const policy_principal *policy_match_principal(const policy *p, const policy_identity *id)
{
	for (uint32_t i = 0; i < p->n_principals; i++)
		if (principal_matches(&p->principals[i].m, id))
			return &p->principals[i].pub;
	return NULL;
}

const policy_principal *policy_find_principal(const policy *p, span id)
{
	uint32_t v;
	return pmap_get(&p->principal_ids, id.ptr, id.len, &v) ? &p->principals[v].pub : NULL;
}

bool policy_principal_id_reserved(span id)
{
	/* the labels of proxy/ident.c, ident_unmatched_label */
	static const char *const kinds[] = { "cert:",    "cert-dns:", "cert-email:",
		                             "cert-cn:", "jwt:",      "key:" };
	static const char *const names[] = { "anonymous", "unknown-api-key", "unnamed-cert",
		                             "unnamed-digest-failed" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(kinds); i++)
		if (span_starts_with(id, span_cstr(kinds[i])))
			return true;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(names); i++)
		if (span_eq_cstr(id, names[i]))
			return true;
	return false;
}

const policy_model *policy_find_model(const policy *p, span id)
{
	uint32_t v;
	return pmap_get(&p->model_ids, id.ptr, id.len, &v) ? &p->models[v] : NULL;
}

const policy_data_source *policy_find_data_id(const policy *p, span id)
{
	uint32_t v;
	return pmap_get(&p->data_ids, id.ptr, id.len, &v) ? &p->data[v] : NULL;
}

/* prefix match on a segment boundary: "/api/" matches "/api/x"; "/api" matches "/api" and
 * "/api/x" but not "/apix". */
static bool path_prefix(const char *pre, size_t plen, span path)
{
	if (path.len < plen || memcmp(path.ptr, pre, plen) != 0)
		return false;
	if (plen == 0 || pre[plen - 1] == '/' || path.len == plen)
		return true;
	return path.ptr[plen] == '/';
}

const policy_data_source *policy_find_data_source(const policy *p, span scheme, span host,
                                                  uint16_t port, span path)
{
	const policy_data_source *best = NULL;
	size_t best_len = 0;
	if (port == 0)
		port = span_case_eq(scheme, SPAN_LIT("https"))  ? 443
		       : span_case_eq(scheme, SPAN_LIT("http")) ? 80
		                                                : 0;
	/* the same spelling as the prefixes, which were normalised when compiled */
	char norm[POLICY_MAX_PATH];
	size_t nl;
	const char *why;
	if (!ppath_normalize(path, false, norm, sizeof(norm), &nl, &why))
		return NULL;
	path = nl ? span_of(norm, nl) : SPAN_LIT("/");
	char v6[PHOST_V6_MAX]; /* an IPv6 literal in the one spelling the policy keeps */
	if (phost_v6_canon(host, v6))
		host = span_cstr(v6);
	else if (host.len > 1 && host.ptr[host.len - 1] == '.')
		host.len--; /* one trailing dot names the same host, as the egress proxy has it */
	for (uint32_t i = 0; i < p->n_data; i++) {
		const policy_data_source *d = &p->data[i];
		if (d->port != port || !span_case_eq(span_cstr(d->scheme), scheme) ||
		    !span_case_eq(span_cstr(d->host), host))
			continue;
		size_t pl = strlen(d->path_prefix);
		if (path_prefix(d->path_prefix, pl, path) && (best == NULL || pl > best_len)) {
			best = d;
			best_len = pl;
		}
	}
	return best;
}

const policy_data_source *policy_find_data_url(const policy *p, span url)
{
	policy_url pu;
	const char *why;
	if (!policy_url_split(url, &pu, &why))
		return NULL; /* malformed (user info included): refuse rather than guess */
	return policy_find_data_source(p, pu.scheme, pu.host, pu.port, pu.path);
}

/* ---------------------------------------------------------------------------------------------
 * Conditions
 */
static const char *const op_words[] = { "", "above ", "below ", "at least ", "at most " };
static const char *const day_names[] = { "Monday", "Tuesday",  "Wednesday", "Thursday",
	                                 "Friday", "Saturday", "Sunday" };

static bool ord_test(uint8_t op, int l, int r)
{
	switch (op) {
	case ORD_EQ:
		return l == r;
	case ORD_ABOVE:
		return l > r;
	case ORD_BELOW:
		return l < r;
	case ORD_AT_LEAST:
		return l >= r;
	default:
		return l <= r;
	}
}

static int principal_attr_level(const policy_principal *pr, const policy *p, uint32_t attr)
{
	if (pr == NULL)
		return -1;
	const pprincipal *pp = (const pprincipal *)pr;
	for (size_t i = 0; i < pr->n_attrs; i++)
		if (pp->attr_ids[i] == attr)
			return pr->attrs[i].level;
	(void)p;
	return -1;
}

/* Right side of an ordered comparison over classifications, or -1 when unknown. */
static int ord_rhs(const policy *p, const struct ord_cond *o, const policy_request *req)
{
	switch (o->rhs) {
	case RHS_LIT:
		return o->lit;
	case RHS_DATA_CLASS:
		return req->data ? (int)req->data->classification : -1;
	case RHS_TAINT:
		return (int)req->taint;
	default:
		return principal_attr_level(req->principal, p, o->attr);
	}
}

static bool u32_in(uint32_t v, const uint32_t *a, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (a[i] == v)
			return true;
	return false;
}

void preq_init(struct preq *n, const policy_request *req)
{
	const char *why = NULL;
	size_t len;
	n->r = *req;
	n->refused = NULL;
	if (ppath_normalize(req->path, false, n->path, sizeof(n->path), &len, &why))
		n->r.path = span_of(n->path, len);
	else
		n->refused = why;
	if (req->route.len == 0 || n->refused)
		return;
	/* "METHOD /path": the path part is spelled as the compiled routes are */
	const char *sp = memchr(req->route.ptr, ' ', req->route.len);
	size_t ml = sp ? (size_t)(sp - req->route.ptr) : 0;
	if (sp == NULL || ml + 1 >= sizeof(n->route) - POLICY_MAX_PATH)
		return; /* not a route: matches none */
	memcpy(n->route, req->route.ptr, ml + 1);
	span rp = span_of(sp + 1, req->route.len - ml - 1);
	if (!ppath_normalize(rp, false, n->route + ml + 1, sizeof(n->route) - ml - 1, &len, &why))
		n->refused = why;
	else
		n->r.route = span_of(n->route, ml + 1 + len);
}

uint32_t policy_route_of(const policy *p, const policy_request *req)
{
	uint32_t id;
	if (p->n_routes == 0)
		return UINT32_MAX;
	if (req->route.len) {
		if (pmap_get(&p->route_ids, req->route.ptr, req->route.len, &id))
			return id;
		return UINT32_MAX;
	}
	if (req->method.len == 0)
		return UINT32_MAX;
	/* method + " " + path, hashed in pieces: no buffer needed */
	uint64_t h = pmap_hash_more(PMAP_HASH_INIT, req->method.ptr, req->method.len);
	h = pmap_hash_more(h, " ", 1);
	h = pmap_hash_more(h, req->path.ptr, req->path.len);
	size_t len = req->method.len + 1 + req->path.len;
	const pmap *m = &p->route_ids;
	size_t j = h & (m->cap - 1);
	for (;;) {
		const pmap_ent *e = &m->ents[j];
		if (e->str == NULL)
			return UINT32_MAX;
		if (e->h == h && e->len == len &&
		    memcmp(e->str, req->method.ptr, req->method.len) == 0 &&
		    e->str[req->method.len] == ' ' &&
		    memcmp(e->str + req->method.len + 1, req->path.ptr, req->path.len) == 0)
			return e->val;
		j = (j + 1) & (m->cap - 1);
	}
}

static void why_add(buf *why, const char *fmt, ...) CUSTOS_PRINTF(2, 3);
static void why_add(buf *why, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (buf_vprintf(why, fmt, ap) != CUSTOS_OK) {
		/* explain output is best effort once its buffer is full */
	}
	va_end(ap);
}

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		if (why)                                                                           \
			why_add(why, __VA_ARGS__);                                                 \
		return false;                                                                      \
	} while (0)

static bool time_in_window(const policy *p, const struct time_cond *t, uint64_t now_ns,
                           int *wday_out, unsigned *min_out)
{
	int64_t secs = (int64_t)(now_ns / 1000000000u);
	const ptz *z = &p->zones[t->tz];
	int64_t local = secs + ptz_offset(z, secs);
	int64_t days = local / 86400 - (local % 86400 < 0);
	unsigned minute = (unsigned)((local - days * 86400) / 60);
	int wday = (int)(((days % 7) + 7 + 3) % 7); /* 1970-01-01 was a Thursday: 0 = Monday */
	*wday_out = wday;
	*min_out = minute;
	if (t->from_min < t->to_min)
		return (t->days >> wday & 1) && minute >= t->from_min && minute < t->to_min;
	/* overnight window: the part after midnight belongs to the previous day's window */
	if (minute >= t->from_min)
		return t->days >> wday & 1;
	if (minute < t->to_min)
		return t->days >> ((wday + 6) % 7) & 1;
	return false;
}

/* The client's address as text ("(none)" when unknown), for explain. */
static const char *client_text(const struct sockaddr *sa, char *out, size_t cap)
{
	const void *a = NULL;
	if (sa && sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (sa && sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (a == NULL || inet_ntop(sa->sa_family, a, out, (socklen_t)cap) == NULL)
		return "(none)";
	return out;
}

bool prule_match(const policy *p, const prule *r, const policy_request *req, uint64_t now_ns,
                 buf *why)
{
	const struct client_range *client_hit = NULL;
	char ctext[INET6_ADDRSTRLEN];
	uint32_t pr = r->present;
	if (!(r->dirs & (1u << (req->direction & 1)))) {
		if ((pr & C_ROUTE) && req->direction == POLICY_EGRESS)
			FAIL("direction is egress, and a route holds on ingress only");
		FAIL("direction is %s, rule wants %s", req->direction ? "egress" : "ingress",
		     r->dirs == 1 ? "ingress" : "egress");
	}
	if (pr & C_PRINCIPAL) {
		if (req->principal == NULL)
			FAIL("no principal (unauthenticated), rule names principals");
		if (!u32_in(req->principal->index, r->principals, r->n_principals))
			FAIL("principal '%s' is not one of the rule's principals",
			     req->principal->id);
	}
	if (pr & C_MODEL) {
		if (req->model == NULL)
			FAIL("no known model in the request, rule names models");
		if (!u32_in(req->model->index, r->models, r->n_models))
			FAIL("model '%s' is not one of the rule's models", req->model->id);
	}
	if (pr & C_DATA) {
		if (req->data == NULL)
			FAIL("no known data source in the request, rule names data sources");
		if (!u32_in(req->data->index, r->data, r->n_data))
			FAIL("data source '%s' is not one of the rule's", req->data->id);
	}
	if (pr & C_ROUTE) {
		/* the ingress API route: an egress call has none, whatever its method and path */
		if (req->direction == POLICY_EGRESS)
			FAIL("direction is egress, and a route holds on ingress only");
		uint32_t rid = policy_route_of(p, req);
		if (rid == UINT32_MAX || !u32_in(rid, r->routes, r->n_routes))
			FAIL("route '%.*s%s%.*s' is not one of the rule's routes",
			     (int)(req->route.len ? req->route.len : req->method.len),
			     req->route.len ? req->route.ptr : req->method.ptr,
			     req->route.len ? "" : " ", (int)(req->route.len ? 0 : req->path.len),
			     req->path.ptr ? req->path.ptr : "");
	}
	if (pr & C_METHOD) {
		bool ok = false;
		for (uint32_t i = 0; i < r->n_methods && !ok; i++)
			ok = span_eq(r->methods[i], req->method);
		if (!ok)
			FAIL("method '%.*s' is not one of the rule's methods", (int)req->method.len,
			     req->method.ptr ? req->method.ptr : "");
	}
	if (pr & C_PATH) {
		bool ok = false;
		for (uint32_t i = 0; i < r->n_paths && !ok; i++) {
			const struct path_pat *pp = &r->paths[i];
			if (pp->kind == PATH_EXACT)
				ok = span_eq(span_of(pp->s, pp->len), req->path);
			else if (pp->kind == PATH_PREFIX)
				ok = path_prefix(pp->s, pp->len, req->path);
			else
				ok = policy_glob_match_in(pp->s, pp->len, req->path.ptr,
				                          req->path.len, true);
		}
		if (!ok)
			FAIL("path '%.*s' matches none of the rule's path patterns",
			     (int)req->path.len, req->path.ptr ? req->path.ptr : "");
	}
	if (pr & C_CLIENT) {
		/* unknown address (a Unix socket): no range holds, for allow and deny alike */
		if (req->client == NULL)
			FAIL("no client address (a Unix socket listener), rule names client "
			     "ranges");
		/* An IPv4-mapped client (a dual-stack listener's IPv4 caller) is that IPv4
		 * client: no IPv6 range (::/0 included) holds for it, whatever the socket. */
		const struct sockaddr *ca = req->client;
		struct sockaddr_in v4;
		if (ca->sa_family == AF_INET6) {
			static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
			const uint8_t *a =
			        ((const struct sockaddr_in6 *)(const void *)ca)->sin6_addr.s6_addr;
			if (memcmp(a, mapped, 12) == 0) {
				memset(&v4, 0, sizeof(v4));
				v4.sin_family = AF_INET;
				memcpy(&v4.sin_addr, a + 12, 4);
				ca = (const struct sockaddr *)&v4;
			}
		}
		for (uint32_t i = 0; i < r->n_clients && client_hit == NULL; i++)
			if (cidr_match(&r->clients[i].r, ca))
				client_hit = &r->clients[i];
		if (client_hit == NULL)
			FAIL("client %s is in none of the rule's client ranges",
			     client_text(req->client, ctext, sizeof(ctext)));
	}
	if (pr & C_GROUP) {
		if (req->principal == NULL)
			FAIL("no principal, rule needs a group");
		const pprincipal *pp = (const pprincipal *)req->principal;
		bool ok = false;
		for (size_t g = 0; g < pp->pub.n_groups && !ok; g++)
			ok = u32_in(pp->group_ids[g], r->groups, r->n_groups);
		if (!ok)
			FAIL("principal '%s' is in none of the rule's groups", req->principal->id);
	}
	if (pr & C_ATTR) {
		if (req->principal == NULL)
			FAIL("no principal, rule tests attributes");
		const pprincipal *pp = (const pprincipal *)req->principal;
		for (uint32_t i = 0; i < r->n_attrs; i++) {
			const struct attr_cond *a = &r->attrs[i];
			const struct policy_attr *have = NULL;
			for (size_t k = 0; k < pp->pub.n_attrs && !have; k++)
				if (pp->attr_ids[k] == a->name_id)
					have = &pp->pub.attrs[k];
			if (have == NULL)
				FAIL("principal '%s' has no attribute '%s'", pp->pub.id, a->name);
			if (a->ordered) {
				int rhs = ord_rhs(p, &a->ord, req);
				if (have->level < 0 || rhs < 0 ||
				    !ord_test(a->ord.op, have->level, rhs))
					FAIL("attribute %s=%s is not %s%s", a->name, have->value,
					     op_words[a->ord.op], a->ord.rhs_text);
			} else {
				bool ok = false;
				for (uint32_t k = 0; k < a->n_values && !ok; k++)
					ok = strcmp(a->values[k], have->value) == 0;
				if (!ok)
					FAIL("attribute %s=%s is not one of the rule's values",
					     a->name, have->value);
			}
		}
	}
	if (pr & C_ISOLATION) {
		int l = req->isolation >= 0 ? req->isolation
		        : req->model        ? (int)req->model->isolation
		                            : -1;
		if (l < 0)
			FAIL("isolation unknown (no model), rule compares it");
		if (!ord_test(r->iso.op, l, r->iso.lit))
			FAIL("isolation %s is not %s%s", policy_isolation_name((policy_isolation)l),
			     op_words[r->iso.op], r->iso.rhs_text);
	}
	if (pr & C_CLASS) {
		if (req->data == NULL)
			FAIL("no data source, rule compares its classification");
		int rhs = ord_rhs(p, &r->cls, req);
		if (rhs < 0 || !ord_test(r->cls.op, (int)req->data->classification, rhs))
			FAIL("data classification %s is not %s%s",
			     policy_class_name(req->data->classification), op_words[r->cls.op],
			     r->cls.rhs_text);
	}
	if (pr & C_TAINT) {
		int rhs = ord_rhs(p, &r->taint, req);
		if (rhs < 0 || !ord_test(r->taint.op, (int)req->taint, rhs))
			FAIL("taint %s is not %s%s", policy_class_name(req->taint),
			     op_words[r->taint.op], r->taint.rhs_text);
	}
	if (pr & C_BODY) {
		if (req->body_size < r->body_min || req->body_size > r->body_max)
			FAIL("body size %llu is outside [%llu, %llu]",
			     (unsigned long long)req->body_size, (unsigned long long)r->body_min,
			     (unsigned long long)r->body_max);
	}
	if (pr & C_TIME) {
		bool ok = false;
		int wday = 0;
		unsigned minute = 0;
		for (uint32_t i = 0; i < r->n_times && !ok; i++)
			ok = time_in_window(p, &r->times[i], now_ns, &wday, &minute);
		if (!ok)
			FAIL("local time %s %02u:%02u is outside the rule's windows (first: %s)",
			     day_names[wday], minute / 60, minute % 60, r->times[0].text);
	}
	if (why && client_hit)
		why_add(why, "all conditions hold (client %s is in %s)",
		        client_text(req->client, ctext, sizeof(ctext)), client_hit->text);
	else if (why)
		why_add(why, "all conditions hold");
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * Decision
 */
const uint64_t policy_window_ns[POLICY_WINDOWS] = { 1000000000ull, 60000000000ull, 3600000000000ull,
	                                            86400000000000ull };

static uint64_t min_limit(uint64_t a, uint64_t b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

/* The tightest of the per-window counts by rate (count per ns), for display. */
static void tightest(const uint64_t per[POLICY_WINDOWS], uint64_t *cnt, uint64_t *win)
{
	*cnt = 0;
	*win = 0;
	for (size_t w = 0; w < POLICY_WINDOWS; w++) {
		uint64_t c = per[w], ns = policy_window_ns[w];
		if (c && (*cnt == 0 || (__uint128_t)c * *win < (__uint128_t)*cnt * ns)) {
			*cnt = c;
			*win = ns;
		}
	}
}

static void merge_obligations(const prule *r, policy_decision *out)
{
	if (r->has_limits) {
		policy_limits *l = &out->limits;
		for (size_t w = 0; w < POLICY_WINDOWS; w++) {
			l->requests_per[w] =
			        min_limit(l->requests_per[w], r->limits.requests_per[w]);
			l->tokens_per[w] = min_limit(l->tokens_per[w], r->limits.tokens_per[w]);
		}
		tightest(l->requests_per, &l->requests, &l->requests_window_ns);
		tightest(l->tokens_per, &l->tokens, &l->tokens_window_ns);
		l->max_body_bytes = min_limit(l->max_body_bytes, r->limits.max_body_bytes);
		l->max_tokens = min_limit(l->max_tokens, r->limits.max_tokens);
	}
	if (r->has_audit && r->audit > out->audit)
		out->audit = (policy_audit_level)r->audit;
	for (uint32_t i = 0; i < r->n_inspect; i++) {
		const policy_inspect_item *ob = &r->inspect[i];
		uint8_t *slot = ob->response ? &out->inspect_response[ob->detector]
		                             : &out->inspect_prompt[ob->detector];
		if (ob->action > *slot)
			*slot = ob->action;
		out->has_inspect = true;
	}
}

void policy_evaluate_n(const policy *p, const struct preq *n, policy_decision *out,
                       const char **all, size_t cap)
{
	const policy_request *req = &n->r;
	memset(out, 0, sizeof(*out));
	out->shadow = p->mode == POLICY_SHADOW || req->force_shadow;
	if (n->refused) {
		/* A path only a guess could match against the rules is no one's to allow. */
		out->verdict = POLICY_DENY;
		out->reason = "the request path is refused as ambiguous (see the policy "
		              "reference: path normalisation)";
		out->effect = out->shadow ? POLICY_ALLOW : POLICY_DENY;
		return;
	}
	uint64_t now = req->time_ns ? req->time_ns : tm_wall_ns();
	const struct dir_index *x = &p->idx[req->direction & 1];
	const struct bucket *bk[6];
	size_t nb = 0;
	if (req->principal)
		bk[nb++] = &x->by_principal[req->principal->index];
	if (req->model)
		bk[nb++] = &x->by_model[req->model->index];
	if (p->n_routes && req->direction == POLICY_INGRESS) {
		uint32_t rid = policy_route_of(p, req);
		if (rid != UINT32_MAX) {
			bk[nb++] = &x->by_route[rid];
			const struct bucket *pb;
			if (req->model && (pb = pair_find(x, pair_key(req->model->index, rid))))
				bk[nb++] = pb;
		}
	}
	if (req->data)
		bk[nb++] = &x->by_data[req->data->index];
	bk[nb++] = &x->wildcard;

	/* Deny ids go to all[] when given (allow ids there are dropped once a deny matches). */
	const char *deny_local[POLICY_MAX_DECISION_RULES];
	const char **deny_ids = all ? all : deny_local;
	size_t deny_cap = all ? cap : POLICY_MAX_DECISION_RULES;
	size_t n_deny = 0, n_allow = 0;
	const prule *first_deny = NULL;
	for (size_t b = 0; b < nb; b++) {
		const struct bucket *bu = bk[b];
		for (uint32_t i = 0; i < bu->n; i++) {
			const prule *r = &p->rules[bu->rules[i]];
			out->n_considered++;
			if (r->effect == POLICY_ALLOW && n_deny > 0)
				continue; /* a deny already won: allows cannot change the outcome */
			if (!prule_match(p, r, req, now, NULL))
				continue;
			if (r->effect == POLICY_DENY) {
				if (n_deny < deny_cap)
					deny_ids[n_deny] = r->id;
				if (first_deny == NULL)
					first_deny = r;
				n_deny++;
			} else {
				if (n_allow < POLICY_MAX_DECISION_RULES)
					out->rules[n_allow] = r->id;
				if (all && n_allow < cap)
					all[n_allow] = r->id;
				n_allow++;
				merge_obligations(r, out);
			}
		}
	}
	if (n_deny > 0) {
		policy_decision keep = { 0 };
		keep.n_considered = out->n_considered;
		keep.shadow = out->shadow;
		*out = keep;
		out->verdict = POLICY_DENY;
		out->n_rules_total = n_deny;
		out->n_rules =
		        n_deny < POLICY_MAX_DECISION_RULES ? n_deny : POLICY_MAX_DECISION_RULES;
		memcpy(out->rules, deny_ids, out->n_rules * sizeof(deny_ids[0]));
		out->reason = first_deny->description ? first_deny->description
		                                      : "denied by a matching deny rule";
	} else if (n_allow > 0) {
		out->verdict = POLICY_ALLOW;
		out->n_rules_total = n_allow;
		out->n_rules =
		        n_allow < POLICY_MAX_DECISION_RULES ? n_allow : POLICY_MAX_DECISION_RULES;
		out->reason = "allowed by a matching allow rule, and no deny rule matches";
	} else {
		out->verdict = POLICY_DENY;
		out->default_deny = true;
		out->reason = "no rule allows this request (default deny)";
	}
	out->effect = out->shadow ? POLICY_ALLOW : out->verdict;
}

void policy_evaluate(const policy *p, const policy_request *req, policy_decision *out)
{
	struct preq n;
	preq_init(&n, req);
	policy_evaluate_n(p, &n, out, NULL, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Explain
 */
/* "2/1s,100000/86400s", or "0" when no window has a limit. */
static custos_err rates_text(buf *out, const uint64_t per[POLICY_WINDOWS])
{
	bool any = false;
	for (size_t w = 0; w < POLICY_WINDOWS; w++) {
		if (per[w] == 0)
			continue;
		GUARD(buf_printf(out, "%s%llu/%llus", any ? "," : "", (unsigned long long)per[w],
		                 (unsigned long long)(policy_window_ns[w] / 1000000000u)));
		any = true;
	}
	return any ? CUSTOS_OK : buf_append_cstr(out, "0");
}

static custos_err explain_n(const policy *p, const struct preq *n, buf *out)
{
	const policy_request *req = &n->r;
	policy_decision d;
	policy_evaluate_n(p, n, &d, NULL, 0);
	uint64_t now = req->time_ns ? req->time_ns : tm_wall_ns();
	char ts[TM_RFC3339_LEN], cbuf[INET6_ADDRSTRLEN];
	GUARD(buf_printf(out, "policy: %s (sha256 %s, mode %s)\n", p->name, p->hash,
	                 p->mode == POLICY_SHADOW ? "shadow" : "enforce"));
	GUARD(buf_printf(out,
	                 "request: direction=%s principal=%s model=%s data=%s method=%.*s "
	                 "path=%.*s body_size=%llu taint=%s time=%s client=%s\n",
	                 req->direction ? "egress" : "ingress",
	                 req->principal ? req->principal->id : "(none)",
	                 req->model ? req->model->id : "(none)",
	                 req->data ? req->data->id : "(none)", (int)req->method.len,
	                 req->method.ptr ? req->method.ptr : "", (int)req->path.len,
	                 req->path.ptr ? req->path.ptr : "", (unsigned long long)req->body_size,
	                 policy_class_name(req->taint), tm_rfc3339(now, ts),
	                 client_text(req->client, cbuf, sizeof(cbuf))));
	if (n->refused)
		GUARD(buf_printf(out, "path refused: %s\n", n->refused));
	GUARD(buf_printf(out, "decision: %s%s\n", d.effect == POLICY_ALLOW ? "allow" : "deny",
	                 d.shadow
	                         ? (d.verdict == POLICY_ALLOW ? " (shadow; enforcement would allow)"
	                                                      : " (shadow; enforcement would deny)")
	                         : ""));
	GUARD(buf_printf(out, "reason: %s\n", d.reason));
	GUARD(buf_append_cstr(out, "deciding rules:"));
	for (size_t i = 0; i < d.n_rules; i++)
		GUARD(buf_printf(out, " %s", d.rules[i]));
	if (d.n_rules_total > d.n_rules)
		GUARD(buf_printf(out, " (+%zu more)", d.n_rules_total - d.n_rules));
	GUARD(buf_printf(out, "%s\n", d.n_rules ? "" : " (none)"));
	if (d.verdict == POLICY_ALLOW) {
		const policy_limits *l = &d.limits;
		GUARD(buf_printf(
		        out, "obligations: audit=%s max_body=%llu max_tokens=%llu requests=",
		        policy_audit_level_name(d.audit), (unsigned long long)l->max_body_bytes,
		        (unsigned long long)l->max_tokens));
		GUARD(rates_text(out, l->requests_per));
		GUARD(buf_append_cstr(out, " tokens="));
		GUARD(rates_text(out, l->tokens_per));
		GUARD(buf_append_cstr(out, "\n"));
		/* The prompt slot is the body the model sends a data source on egress: named
		 * "request" there, as egress rules write it (inspect: request:). */
		const char *qname = req->direction ? "request" : "prompt";
		for (uint32_t i = 0; i < p->n_detectors; i++) {
			if (d.inspect_prompt[i])
				GUARD(buf_printf(
				        out, "  inspect %s %s: %s\n", qname, p->detectors[i].name,
				        policy_action_name((policy_action)d.inspect_prompt[i])));
			if (d.inspect_response[i])
				GUARD(buf_printf(
				        out, "  inspect response %s: %s\n", p->detectors[i].name,
				        policy_action_name((policy_action)d.inspect_response[i])));
		}
	}
	if (n->refused)
		return CUSTOS_OK; /* no rule was asked */
	uint32_t n_dir = 0;
	for (uint32_t i = 0; i < p->n_rules; i++)
		n_dir += (p->rules[i].dirs >> (req->direction & 1)) & 1;
	GUARD(buf_printf(out, "rules (%u for this direction; %zu considered through the index):\n",
	                 n_dir, d.n_considered));
	for (uint32_t i = 0; i < p->n_rules; i++) {
		const prule *r = &p->rules[i];
		if (!(r->dirs & (1u << (req->direction & 1))))
			continue;
		GUARD(buf_printf(out, "  %-5s %s (%s:%u): ", r->effect ? "allow" : "deny", r->id,
		                 r->file, r->line));
		bool m = prule_match(p, r, req, now, out);
		GUARD(buf_printf(out, " => %s\n", m ? "MATCH" : "no match"));
	}
	if (n_dir == 0)
		GUARD(buf_append_cstr(out, "  (no rules for this direction)\n"));
	return CUSTOS_OK;
}

custos_err policy_explain(const policy *p, const policy_request *req, buf *out)
{
	struct preq *n = xcalloc(1, sizeof(*n)); /* two paths' room: kept off the stack */
	preq_init(n, req);
	custos_err e = explain_n(p, n, out);
	free(n);
	return e;
}
