/*
 * Content inspection on egress: what a source returns to the sandbox (inspect: response:) and
 * what the model sends to a source in a request body (inspect: request:, the egress name of
 * prompt:), and the path and query string of a request URL. Bodies under a JSON media type
 * are inspected on their decoded string values (policy/inspect_json.c) with keys and numbers
 * as sent; NDJSON line by line; forms, query strings and path segments percent-decoded;
 * multipart request bodies part by part after their transfer encoding is undone;
 * anything else as one byte stream (ingress_inspect.c's raw mode). The engine is compiled
 * from the egress policy on first need and again after a reload brings another policy;
 * requests hold a reference to the engine they started with. docs/EGRESS.md "Content
 * inspection".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/config.h"
#include "custos/inspect.h"
#include "custos/policy.h"
#include "egress_int.h"
#include "ingress_inspect.h"

struct eeng {
	inspect_engine *eng;
	policy *p; /* the policy it was compiled from (a reference: the pointer stays unique) */
	uint64_t id;
	atomic_uint refs;
};

/* Response modes of the egress inspector itself (raw and encoded bodies go to r->ip). */
typedef enum emode {
	EM_NONE = 0,
	EM_STREAM, /* ingress_inspect.c raw mode (r->ip), content-encoded bodies refused there */
	EM_JSON,   /* held whole (at most EGRESS_INSPECT_BODY_MAX), decided at the end */
	EM_NDJSON, /* one JSON document per line, each decided when its line is complete */
	EM_FORM,   /* application/x-www-form-urlencoded: held whole, decoded, decided at the end */
	EM_MULTIPART, /* multipart (RFC 2046): held whole, parsed part by part at the end */
} emode;

/* Per-request state of what this file inspects itself (r->ei). */
struct einsp {
	inspect_profile req, resp;
	bool req_on, resp_on, req_done;
	emode mode;
	inspect_summary qsum, rsum; /* request body; JSON / NDJSON response */
	bool denied;                /* the response was denied */
	char why[192];              /* denial reason (detector names, never values) */
	char fail[192];             /* why the response could not be inspected, or "" */
	buf hold; /* EM_JSON, EM_FORM, EM_MULTIPART: the body; EM_NDJSON: the current line */
	buf out, tmp;
	buf dec, msk;                              /* multipart bodies: a part decoded, masked */
	buf target;                                /* the request target with its query masked */
	char boundary[EGRESS_MP_BOUNDARY_MAX + 1]; /* multipart request body, then response */
	size_t blen;
	char mptype[48]; /* its media type as it may be quoted ("multipart/form-data") */
	uint64_t t_ns;
	char summary[96];
	audit_finding f[INSPECT_MAX_DETECTORS];
	/* This request's share of srv->insp_held (egress.inspect.max_held): every buffer that holds
	 * an inspected body or a working copy of one counts from before it is allocated until it
	 * is freed, at its capacity (ct_*: always at least the buffer's cap), plus credit (reserved
	 * ahead for a Content-Length body and its working copies, not allocated yet). */
	egress_server *srv;
	uint64_t held;                    /* credit + every ct_* + ct_form */
	uint64_t credit;                  /* reserved, not yet taken by a buffer */
	uint64_t ct_qin, ct_qout, ct_fwd; /* the caller's request body, its masked copy, dst */
	uint64_t ct_hold, ct_out, ct_tmp; /* this file's buffers */
	uint64_t ct_form;                 /* egress_inspect_form's offset map while it exists */
	uint64_t ct_dec, ct_msk;          /* multipart: dec, msk */
	uint64_t q_lim;                   /* a request body's Content-Length, else max_body */
	bool held_refused;                /* the response could not be held (503) */
};

/* Reserves n more bytes of egress.inspect.max_held: true, or false (nothing changed) when
 * they do not fit. A compare-and-swap, never add-then-take-back: a reservation that does not
 * fit is never seen by another, so two bodies are not both refused when one of them fits. */
static bool held_reserve(egress_server *s, uint64_t n)
{
	if (s == NULL)
		return true;
	uint_fast64_t cur = atomic_load(&s->insp_held);
	do {
		if (n > s->o.inspect_max_held || cur > s->o.inspect_max_held - n)
			return false;
	} while (!atomic_compare_exchange_weak(&s->insp_held, &cur, cur + n));
	return true;
}

/* n bytes of ei's share for one buffer (*ct grows by n): taken from the credit first, the rest
 * reserved. False (nothing changed) when the rest does not fit. */
static bool held_take(struct einsp *ei, uint64_t *ct, uint64_t n)
{
	uint64_t c = n < ei->credit ? n : ei->credit;
	if (n > c && !held_reserve(ei->srv, n - c))
		return false;
	ei->credit -= c;
	ei->held += n - c;
	*ct += n;
	return true;
}

/* Gives back what one buffer counted (it was freed). */
static void held_give(struct einsp *ei, uint64_t *ct)
{
	if (ei->srv && *ct)
		atomic_fetch_sub(&ei->srv->insp_held, *ct);
	ei->held -= *ct;
	*ct = 0;
}

/* Reserves n bytes ahead (a Content-Length body and its working copies). */
static bool held_credit(struct einsp *ei, uint64_t n)
{
	if (!held_reserve(ei->srv, n))
		return false;
	ei->credit += n;
	ei->held += n;
	return true;
}

static void credit_drop(struct einsp *ei)
{
	held_give(ei, &ei->credit);
}

/* Room in b for n more bytes, at most lim used in all: its new capacity (doubling, never past
 * lim + 1) is counted in *ct before it is allocated, and buf_reserve is held to it (b->max
 * lowered for the call), so *ct stays at least b's capacity. CUSTOS_OK; CUSTOS_ERR_AGAIN
 * (*refused set) when max_held refuses it; CUSTOS_ERR_LIMIT past lim; _NOMEM. */
static custos_err grow_core(egress_server *s, struct einsp *ei, buf *b, uint64_t *ct, size_t n,
                            size_t lim, bool *refused)
{
	size_t used = buf_used(b);
	ENSURE(n <= lim && used <= lim - n, CUSTOS_ERR_LIMIT, "held body past %zu bytes", lim);
	if (b->cap - used >= n) /* room there (after compaction at most): nothing allocated */
		return buf_reserve(b, n);
	size_t want = used + n + 1; /* +1: buf_reserve keeps room for a NUL at the maximum */
	size_t ncap = b->cap ? b->cap : 4096;
	while (ncap < want && ncap <= lim)
		ncap *= 2;
	if (ncap > lim + 1)
		ncap = lim + 1;
	if (ncap < want)
		ncap = want;
	bool ok = true;
	if (ncap > *ct && ei)
		ok = held_take(ei, ct, ncap - *ct);
	else if (ncap > *ct && (ok = held_reserve(s, ncap - *ct)))
		*ct = ncap;
	if (!ok) {
		*refused = true;
		return err_set(CUSTOS_ERR_AGAIN, "egress.inspect.max_held reached");
	}
	size_t saved = b->max;
	b->max = ncap - 1;
	custos_err e = buf_reserve(b, n);
	b->max = saved;
	return e;
}

static custos_err grow_counted(struct einsp *ei, buf *b, uint64_t *ct, size_t n, size_t lim,
                               bool *refused)
{
	return grow_core(ei->srv, ei, b, ct, n, lim, refused);
}

custos_err egress_held_grow(egress_server *s, buf *b, uint64_t *ct, size_t n)
{
	bool refused = false;
	return grow_core(s, NULL, b, ct, n, b->max, &refused);
}

void egress_held_give(egress_server *s, uint64_t *ct)
{
	if (s && *ct)
		atomic_fetch_sub(&s->insp_held, *ct);
	*ct = 0;
}

/* What a working copy of an n-byte body may grow to (the body with its masks; the bytes
 * decoded from it): EGRESS_INSPECT_WORK_FACTOR n + EGRESS_INSPECT_WORK_SLACK. Past it the body
 * is refused as past an inspection limit (fail closed). */
static size_t work_max(size_t n)
{
	return EGRESS_INSPECT_WORK_FACTOR * n + EGRESS_INSPECT_WORK_SLACK;
}

/* b freed (its count given back), then set up empty with work_max(n) as its maximum, counted
 * whole (max + 1) until it is freed again: whatever is written into it never allocates more.
 * False (b freed, nothing counted) when max_held refuses it. */
static bool work_arm(struct einsp *ei, buf *b, uint64_t *ct, size_t n)
{
	buf_free(b);
	held_give(ei, ct);
	size_t m = work_max(n);
	if (!held_take(ei, ct, (uint64_t)m + 1))
		return false;
	buf_init(b, m);
	return true;
}

static void work_free(struct einsp *ei, buf *b, uint64_t *ct)
{
	buf_free(b);
	held_give(ei, ct);
}

/* Bytes counted for the working copies of an n-byte request body of kind k: the masked copy;
 * a JSON document's decoded copy, a form's decoded copy and its offset map (4 bytes a byte). */
static uint64_t q_work(egress_body_kind k, uint64_t n)
{
	uint64_t w = (uint64_t)work_max((size_t)n) + 1;
	if (k == EBODY_JSON || k == EBODY_NDJSON)
		return 2 * w;
	if (k == EBODY_FORM)
		return 2 * w + 4 * (n + 1);
	if (k == EBODY_MULTIPART) /* masked copy, JSON/form scratch, a part decoded and masked */
		return 4 * w + 4 * (n + 1);
	return w;
}

/* What config check asks of egress.inspect.max_held (core/config.c) is what q_work counts for
 * a multipart body, the most of any kind, with the body's own n + 1. */
_Static_assert(CFG_INSPECT_HELD_FACTOR == 1u + 4u * EGRESS_INSPECT_WORK_FACTOR + 4u &&
                       CFG_INSPECT_HELD_SLACK == 1u + 4u * (EGRESS_INSPECT_WORK_SLACK + 1u) + 4u,
               "egress.inspect.max_held minimum differs from q_work(EBODY_MULTIPART)");

static uint64_t max_body_of(const struct einsp *ei)
{
	return ei->srv ? ei->srv->o.inspect_max_body : EGRESS_INSPECT_BODY_MAX;
}

/* r->reason for a request body that the global bound refuses (answer 503). */
static unsigned held_refused(erec *r, struct einsp *ei, uint64_t want)
{
	uint64_t now = atomic_load(&ei->srv->insp_held);
	log_warn("egress: %s: request body of %llu bytes not held for inspection (with its "
	         "working copies): %llu bytes held, egress.inspect.max_held %llu",
	         r->id, (unsigned long long)want, (unsigned long long)now,
	         (unsigned long long)ei->srv->o.inspect_max_held);
	snprintf(r->reason, sizeof(r->reason),
	         "request body not inspected: bytes held for inspection at "
	         "egress.inspect.max_held (%llu); refused (fail closed)",
	         (unsigned long long)ei->srv->o.inspect_max_held);
	r->decision = "error";
	return 503;
}

/* Engine ids for the per-thread scratch: a space of their own (decide.c counts from 1). */
static atomic_uint_fast64_t eeng_seq;

void egress_eng_unref(struct eeng *e)
{
	if (e == NULL || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	inspect_engine_free(e->eng);
	policy_unref(e->p);
	free(e);
}

/* The engine of p with one reference for the caller; NULL (err_msg set) when it cannot be
 * compiled. Compiles under the server's lock, once per policy. */
static struct eeng *eng_get(egress_server *s, policy *p)
{
	struct eeng *e = NULL;

	pthread_mutex_lock(&s->eng_lock);
	if (s->eng_cur == NULL || s->eng_cur->p != p) {
		inspect_engine *ie = NULL;
		if (inspect_engine_from_policy(p, &ie) != CUSTOS_OK) {
			pthread_mutex_unlock(&s->eng_lock);
			return NULL;
		}
		e = xcalloc(1, sizeof(*e));
		e->eng = ie;
		e->p = policy_ref(p);
		e->id = (1ull << 63) | (atomic_fetch_add(&eeng_seq, 1) + 1);
		atomic_init(&e->refs, 1); /* the server's */
		egress_eng_unref(s->eng_cur);
		s->eng_cur = e;
	}
	e = s->eng_cur;
	atomic_fetch_add(&e->refs, 1);
	pthread_mutex_unlock(&s->eng_lock);
	return e;
}

static custos_err scratch_get(const struct eeng *e, inspect_scratch **out)
{
	return inspect_thread_scratch(e->eng, e->id, out);
}

/* ---------------------------------------------------------------------------------------------
 * Media types
 */
egress_body_kind egress_media_kind(span ctype)
{
	/* The media type without parameters, in any case (RFC 9110 8.3.1). */
	const char *semi = memchr(ctype.ptr, ';', ctype.len);
	span mt = span_trim(semi ? span_of(ctype.ptr, (size_t)(semi - ctype.ptr)) : ctype);
	if (span_case_eq(mt, SPAN_LIT("application/json")) ||
	    (mt.len > 5 && span_case_eq(span_of(mt.ptr + mt.len - 5, 5), SPAN_LIT("+json"))))
		return EBODY_JSON;
	static const span nd[] = {
		SPAN_LIT("application/x-ndjson"),  SPAN_LIT("application/ndjson"),
		SPAN_LIT("application/jsonl"),     SPAN_LIT("application/x-jsonl"),
		SPAN_LIT("application/jsonlines"), SPAN_LIT("application/x-jsonlines")
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(nd); i++)
		if (span_case_eq(mt, nd[i]))
			return EBODY_NDJSON;
	if (span_case_eq(mt, SPAN_LIT("application/x-www-form-urlencoded")))
		return EBODY_FORM;
	/* every multipart type shares RFC 2046's syntax: form-data (RFC 7578), mixed, related
	 * (RFC 2387), alternative, signed (RFC 1847; a redaction breaks its signature), ...;
	 * multipart/encrypted is refused by egress_inspect_request_begin */
	if (mt.len > 10 && span_case_eq(span_of(mt.ptr, 10), SPAN_LIT("multipart/")))
		return EBODY_MULTIPART;
	return EBODY_RAW;
}

egress_body_kind egress_body_kind_of(const http1_head *h)
{
	span v;
	if (ingress_inspect_encoded(h))
		return EBODY_ENCODED;
	if (!http1_header_get(h, SPAN_LIT("Content-Type"), &v))
		return EBODY_RAW;
	return egress_media_kind(v);
}

/* ---------------------------------------------------------------------------------------------
 * JSON documents: string values decoded (inspect_json_redact_strings), then keys and numbers as sent
 * (a card number written as a JSON number, a token used as a member name), which the JSON pass
 * leaves alone. A number that must be redacted becomes the mask as a string, so the document
 * stays valid JSON.
 */
static void mask_of(const inspect_engine *e, unsigned det, char *m, size_t mn)
{
	const char *name = inspect_engine_detector_name(e, det);
	size_t n = (size_t)snprintf(m, mn, "[REDACTED:");
	for (const char *p = name ? name : "?"; *p && n + 2 < mn; p++) {
		char c = *p;
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			c = '_';
		m[n++] = c;
	}
	m[n++] = ']';
	m[n] = '\0';
}

typedef enum { JT_KEY = 1, JT_NUM } jtok_kind;

/* The next key or number token of the valid JSON text t at or after *at: 1 with [*s, *e)
 * (a key without its quotes), 0 when there is none. */
static int next_token(span t, size_t *at, size_t *s, size_t *e, jtok_kind *k)
{
	size_t i = *at;
	while (i < t.len) {
		char c = t.ptr[i];
		if (c == '"') {
			size_t j = i + 1;
			while (j < t.len && t.ptr[j] != '"')
				j += t.ptr[j] == '\\' ? 2 : 1;
			size_t q = j + 1; /* after the closing quote */
			while (q < t.len && (t.ptr[q] == ' ' || t.ptr[q] == '\t' ||
			                     t.ptr[q] == '\n' || t.ptr[q] == '\r'))
				q++;
			if (q < t.len && t.ptr[q] == ':') {
				*s = i + 1;
				*e = j;
				*k = JT_KEY;
				*at = j + 1;
				return 1;
			}
			i = j + 1;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			size_t j = i;
			while (j < t.len &&
			       (t.ptr[j] == '-' || t.ptr[j] == '+' || t.ptr[j] == '.' ||
			        t.ptr[j] == 'e' || t.ptr[j] == 'E' ||
			        (t.ptr[j] >= '0' && t.ptr[j] <= '9')))
				j++;
			*s = i;
			*e = j;
			*k = JT_NUM;
			*at = j;
			return 1;
		} else {
			i++;
		}
	}
	*at = i;
	return 0;
}

static void sum_count(inspect_summary *sum, const inspect_finding *f)
{
	if (f->detector < INSPECT_MAX_DETECTORS)
		sum->count[f->detector]++;
	sum->total++;
	if (f->action > sum->worst)
		sum->worst = f->action;
}

/* Keys and numbers of the valid JSON text t, as sent: appends t with their REDACT findings
 * masked to out. CUSTOS_ERR_DENIED (sum->deny_detector) on a DENY finding among them. */
static custos_err json_tokens(const inspect_engine *en, inspect_scratch *s,
                              const inspect_profile *p, span t, buf *out, inspect_summary *sum)
{
	inspect_findings fs = { 0 };
	custos_err e = inspect_scan(en, s, p, t, &fs);
	size_t at = 0, copied = 0, ts = 0, te = 0, done_num = SIZE_MAX;
	jtok_kind tk = JT_KEY;
	bool have = false;
	char m[INSPECT_MASK_MAX + 2];

	for (size_t i = 0; e == CUSTOS_OK && i < fs.n; i++) {
		const inspect_finding *f = &fs.items[i];
		size_t fo = (size_t)f->offset, fe = fo + f->length;
		while (!have || te <= fo) {
			if (!next_token(t, &at, &ts, &te, &tk))
				break;
			have = true;
		}
		if (!have || te <= fo || ts >= fe)
			continue; /* inside a string value (the JSON pass decided it) or structure */
		sum_count(sum, f);
		if (f->action == INSPECT_ACT_DENY) {
			sum->deny_detector = f->detector;
			e = CUSTOS_ERR_DENIED;
			break;
		}
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		mask_of(en, f->detector, m, sizeof(m) - 2);
		if (tk == JT_NUM) { /* the whole number becomes the mask, as a string */
			if (done_num == ts)
				continue;
			done_num = ts;
			e = buf_append(out, t.ptr + copied, ts - copied);
			if (e == CUSTOS_OK)
				e = buf_printf(out, "\"%s\"", m);
			copied = te;
		} else { /* inside the key's quotes: the mask is JSON-safe */
			size_t ms = fo > ts ? fo : ts, me = fe < te ? fe : te;
			if (ms < copied)
				ms = copied;
			if (me <= ms)
				continue;
			e = buf_append(out, t.ptr + copied, ms - copied);
			if (e == CUSTOS_OK)
				e = buf_append_cstr(out, m);
			copied = me;
		}
		sum->redacted = true;
	}
	if (e == CUSTOS_OK)
		e = buf_append(out, t.ptr + copied, t.len - copied);
	inspect_findings_free(&fs);
	return e;
}

static bool all_space(span t)
{
	for (size_t i = 0; i < t.len; i++)
		if (t.ptr[i] != ' ' && t.ptr[i] != '\t' && t.ptr[i] != '\n' && t.ptr[i] != '\r')
			return false;
	return true;
}

/* One JSON document: appends it, inspected, to out and adds its findings to sum. CUSTOS_OK;
 * CUSTOS_ERR_DENIED; CUSTOS_ERR_PARSE (not valid JSON) or _LIMIT (depth, findings): the
 * caller fails closed. A document of white space alone passes as it is. */
custos_err egress_inspect_json_doc(const inspect_engine *en, inspect_scratch *s,
                                   const inspect_profile *p, span doc, buf *tmp, buf *out,
                                   inspect_summary *sum)
{
	inspect_summary one;
	if (doc.len >= 3 && memcmp(doc.ptr, "\xef\xbb\xbf", 3) == 0) { /* a BOM: kept */
		GUARD(buf_append(out, doc.ptr, 3));
		doc = span_of(doc.ptr + 3, doc.len - 3);
	}
	if (all_space(doc))
		return buf_append_span(out, doc);
	buf_reset(tmp);
	custos_err e = inspect_json_redact_strings(en, s, p, doc, tmp, &one);
	if (e == CUSTOS_OK || e == CUSTOS_ERR_DENIED)
		inspect_summary_add(sum, &one);
	if (e != CUSTOS_OK)
		return e;
	inspect_summary_init(&one);
	size_t mark = buf_used(out);
	e = json_tokens(en, s, p, buf_span(tmp), out, &one);
	inspect_summary_add(sum, &one);
	if (e == CUSTOS_OK && one.redacted &&
	    !inspect_json_valid(span_of((const char *)buf_ptr(out) + mark, buf_used(out) - mark)))
		e = err_set(CUSTOS_ERR_PARSE, "a mask in a member name would break the document");
	return e;
}

/* ---------------------------------------------------------------------------------------------
 * Form bodies (application/x-www-form-urlencoded, WHATWG URL "urlencoded parser"): '+' is a
 * space, %XX a byte. Every encoded unit (one byte, or three for %XX) decodes to exactly one
 * byte, so at[i], where decoded byte i starts in the body, maps a finding back to the bytes
 * that were sent.
 */
static bool form_sep(char c)
{
	return c == '&' || c == '=';
}

/* The mask of detector det, percent-encoded: only letters, digits and '_' are left as they
 * are (the form serializer's safe set), so the receiver decodes it to the plain mask. */
static custos_err form_mask(const inspect_engine *en, unsigned det, buf *out)
{
	char m[INSPECT_MASK_MAX + 2];
	mask_of(en, det, m, sizeof(m) - 2);
	for (const char *c = m; *c; c++) {
		bool safe = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
		            (*c >= '0' && *c <= '9') || *c == '_';
		GUARD(safe ? buf_append_byte(out, *c)
		           : buf_printf(out, "%%%02X", (unsigned)(unsigned char)*c));
	}
	return CUSTOS_OK;
}

custos_err egress_inspect_form(const inspect_engine *en, inspect_scratch *s,
                               const inspect_profile *p, span body, buf *dec, buf *out,
                               inspect_summary *sum)
{
	inspect_findings fs = { 0 };
	custos_err e = CUSTOS_OK;
	uint32_t *at = NULL;

	if (body.len == 0)
		return CUSTOS_OK; /* nothing to decode (and body.ptr may be NULL) */
	ENSURE(body.len < UINT32_MAX, CUSTOS_ERR_LIMIT, "form body too large to map");
	at = xcalloc(body.len + 1, sizeof(*at));
	buf_reset(dec);
	size_t n = 0;
	for (size_t i = 0; i < body.len && e == CUSTOS_OK; n++) {
		at[n] = (uint32_t)i;
		unsigned char c = (unsigned char)body.ptr[i];
		if (c == '%') {
			int hi = i + 1 < body.len ? num_hex_digit((unsigned char)body.ptr[i + 1])
			                          : -1;
			int lo = i + 2 < body.len ? num_hex_digit((unsigned char)body.ptr[i + 2])
			                          : -1;
			if (hi < 0 || lo < 0) {
				e = err_set(CUSTOS_ERR_PARSE,
				            "'%%' at byte %zu is not followed by two hex digits",
				            i);
				break;
			}
			c = (unsigned char)(hi << 4 | lo);
			i += 3;
		} else {
			if (c == '+')
				c = ' ';
			i++;
		}
		e = buf_append_byte(dec, (char)c);
	}
	at[n] = (uint32_t)body.len;
	if (e == CUSTOS_OK)
		e = inspect_scan(en, s, p, buf_span(dec), &fs);
	size_t copied = 0;
	for (size_t k = 0; e == CUSTOS_OK && k < fs.n; k++) {
		const inspect_finding *f = &fs.items[k];
		sum_count(sum, f);
		if (f->action == INSPECT_ACT_DENY) {
			sum->deny_detector = f->detector;
			e = CUSTOS_ERR_DENIED;
			break;
		}
		if (f->action != INSPECT_ACT_REDACT || f->length == 0 || f->offset >= n)
			continue;
		size_t fe = (size_t)f->offset + f->length;
		size_t es = at[f->offset], ee = at[fe < n ? fe : n];
		if (es < copied)
			es = copied;
		/* each stretch between literal separators becomes one mask */
		for (size_t i = es; e == CUSTOS_OK && i < ee;) {
			if (form_sep(body.ptr[i])) {
				i++;
				continue;
			}
			size_t j = i;
			while (j < ee && !form_sep(body.ptr[j]))
				j++;
			e = buf_append(out, body.ptr + copied, i - copied);
			if (e == CUSTOS_OK)
				e = form_mask(en, f->detector, out);
			copied = j;
			i = j;
		}
		sum->redacted = true;
	}
	/* copied stops before a separator a finding covered: it goes out with what follows */
	if (e == CUSTOS_OK)
		e = buf_append(out, body.ptr + copied, body.len - copied);
	inspect_findings_free(&fs);
	free(at);
	return e;
}

/* ---------------------------------------------------------------------------------------------
 * Request paths (the part of a target before '?'): each segment percent-decoded (RFC 3986:
 * %XX a byte; '+' is itself) and inspected on its own. Nothing is masked in what is sent: the
 * path names the resource, and the source and the policy were decided on it (normalised: the
 * same decoded segments; egress_forward_target sends that spelling). What may be audited is
 * built beside it, each segment with a finding (log ones too) replaced by its mask.
 */

/* Appends len bytes of p to the NUL-terminated aud (*n used of cap), cut when they do not fit. */
static void aud_put(char *aud, size_t cap, size_t *n, const char *p, size_t len)
{
	if (cap == 0)
		return;
	size_t room = cap - 1 - *n;
	if (len > room)
		len = room;
	memcpy(aud + *n, p, len);
	*n += len;
	aud[*n] = '\0';
}

/* seg percent-decoded into dec (reset first). CUSTOS_ERR_PARSE names the byte (at: seg's
 * offset in the path). */
static custos_err path_decode(span seg, size_t at, buf *dec)
{
	buf_reset(dec);
	for (size_t i = 0; i < seg.len;) {
		unsigned char c = (unsigned char)seg.ptr[i];
		if (c == '%') {
			int hi =
			        i + 1 < seg.len ? num_hex_digit((unsigned char)seg.ptr[i + 1]) : -1;
			int lo =
			        i + 2 < seg.len ? num_hex_digit((unsigned char)seg.ptr[i + 2]) : -1;
			ENSURE(hi >= 0 && lo >= 0, CUSTOS_ERR_PARSE,
			       "'%%' at byte %zu of the path is not followed by two hex digits",
			       at + i);
			c = (unsigned char)(hi << 4 | lo);
			i += 3;
		} else {
			i++;
		}
		GUARD(buf_append_byte(dec, c));
	}
	return CUSTOS_OK;
}

custos_err egress_inspect_path(const inspect_engine *en, inspect_scratch *s,
                               const inspect_profile *p, span path, buf *dec, inspect_summary *sum,
                               int *redact_det, char *aud, size_t cap)
{
	custos_err e = CUSTOS_OK;
	size_t an = 0;
	int deny = -1;

	*redact_det = -1;
	if (cap)
		aud[0] = '\0';
	const char *qm = path.len ? memchr(path.ptr, '?', path.len) : NULL;
	size_t pl = qm ? (size_t)(qm - path.ptr) : path.len;
	for (size_t i = 0; i < pl && e == CUSTOS_OK;) {
		if (path.ptr[i] == '/') {
			aud_put(aud, cap, &an, "/", 1);
			i++;
			continue;
		}
		const char *sl = memchr(path.ptr + i, '/', pl - i);
		size_t j = sl ? (size_t)(sl - path.ptr) : pl;
		span seg = span_of(path.ptr + i, j - i);
		inspect_findings fs = { 0 };
		e = path_decode(seg, i, dec);
		if (e == CUSTOS_OK)
			e = inspect_scan(en, s, p, buf_span(dec), &fs);
		int hit = -1; /* the detector whose mask the audited segment gets */
		for (size_t k = 0; e == CUSTOS_OK && k < fs.n; k++) {
			const inspect_finding *f = &fs.items[k];
			sum_count(sum, f);
			if (f->action == INSPECT_ACT_DENY && deny < 0)
				deny = (int)f->detector;
			if (f->action == INSPECT_ACT_REDACT && *redact_det < 0)
				*redact_det = (int)f->detector;
			if (hit < 0) /* a log finding too: no value found goes to the trail */
				hit = (int)f->detector;
		}
		inspect_findings_free(&fs);
		if (e != CUSTOS_OK)
			break; /* the segment is not audited */
		if (hit >= 0) {
			buf m;
			buf_init(&m, 3 * (INSPECT_MASK_MAX + 2));
			if (form_mask(en, (unsigned)hit, &m) == CUSTOS_OK)
				aud_put(aud, cap, &an, (const char *)buf_ptr(&m), buf_used(&m));
			buf_free(&m);
		} else {
			aud_put(aud, cap, &an, seg.ptr, seg.len);
		}
		i = j;
	}
	if (e != CUSTOS_OK)
		return e;
	if (deny >= 0) {
		sum->deny_detector = deny;
		return CUSTOS_ERR_DENIED;
	}
	ENSURE(*redact_det < 0, CUSTOS_ERR_UNSUPPORTED,
	       "a value in the request path cannot be masked without changing the resource");
	return CUSTOS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * multipart request bodies (RFC 2046: form-data, RFC 7578; mixed; related, RFC 2387;
 * alternative; ...), parsed strictly: the boundary
 * from the Content-Type, every delimiter line at the start of the body or after CRLF and
 * followed by "--" or (white space and) CRLF, CRLF-terminated part header lines, at most
 * EGRESS_MP_MAX_PARTS parts and EGRESS_MP_MAX_HEAD header bytes a part. Anything else is
 * malformed (CUSTOS_ERR_PARSE: the caller answers 400): two parsers that disagree on where a
 * part ends are how a value is smuggled past an inspector. Each part's header block is
 * inspected as text (a file name carries data too), its content by its own Content-Type after
 * its Content-Transfer-Encoding is undone (a multipart part, at most EGRESS_MP_MAX_DEPTH
 * deep, by the same rules; multipart/encrypted is refused); the preamble and epilogue, which receivers ignore,
 * are inspected as text all the same. A part that is not redacted goes out byte for byte; a
 * redacted one is written with its masks and encoded again as it came (base64, QP).
 */
#define EGRESS_MP_MAX_PARTS   256u
#define EGRESS_MP_MAX_HEAD    8192u
#define EGRESS_MP_MAX_HEADERS 32u
#define EGRESS_MP_MAX_DEPTH   4u /* multipart bodies inside a part, the outer one counted */

static bool mp_bchar(unsigned char c)
{
	/* c != 0: strchr finds the terminating NUL too */
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != 0 && strchr("'()+_,-./:=? ", c) != NULL);
}

bool egress_multipart_boundary(span ctype, char out[EGRESS_MP_BOUNDARY_MAX + 1], size_t *len)
{
	const char *semi = memchr(ctype.ptr, ';', ctype.len);
	bool found = false;
	*len = 0;
	while (semi != NULL) {
		size_t at = (size_t)(semi - ctype.ptr) + 1;
		const char *next = NULL;
		span rest = span_of(ctype.ptr + at, ctype.len - at);
		size_t ws = 0;
		while (ws < rest.len && (rest.ptr[ws] == ' ' || rest.ptr[ws] == '\t'))
			ws++;
		if (ws == rest.len ||
		    rest.ptr[ws] == ';') { /* an empty parameter (RFC 9110 5.6.6) */
			semi = ws == rest.len ? NULL : rest.ptr + ws;
			continue;
		}
		const char *eq = memchr(rest.ptr, '=', rest.len);
		if (eq == NULL)
			return false;
		span name = span_trim(span_of(rest.ptr, (size_t)(eq - rest.ptr)));
		span v = span_of(eq + 1, rest.len - (size_t)(eq + 1 - rest.ptr));
		size_t vl = 0;
		span val;
		if (v.len > 0 && v.ptr[0] == '"') { /* quoted-string: no escapes in a boundary */
			const char *q = memchr(v.ptr + 1, '"', v.len - 1);
			if (q == NULL || memchr(v.ptr + 1, '\\', (size_t)(q - v.ptr - 1)) != NULL)
				return false;
			val = span_of(v.ptr + 1, (size_t)(q - v.ptr - 1));
			vl = (size_t)(q - v.ptr) + 1;
		} else {
			while (vl < v.len && v.ptr[vl] != ';')
				vl++;
			val = span_trim(span_of(v.ptr, vl));
		}
		span after = span_of(v.ptr + vl, v.len - vl);
		next = memchr(after.ptr, ';', after.len);
		if (span_trim(span_of(after.ptr, next ? (size_t)(next - after.ptr) : after.len))
		            .len)
			return false; /* bytes after a quoted value */
		if (span_case_eq(name, SPAN_LIT("boundary"))) {
			if (found || val.len == 0 || val.len > EGRESS_MP_BOUNDARY_MAX ||
			    val.ptr[val.len - 1] == ' ')
				return false;
			for (size_t i = 0; i < val.len; i++)
				if (!mp_bchar((unsigned char)val.ptr[i]))
					return false;
			memcpy(out, val.ptr, val.len);
			out[val.len] = '\0';
			*len = val.len;
			found = true;
		}
		semi = next;
	}
	return found;
}

/* The first "\r\n--boundary" in b at or after from: its offset, or SIZE_MAX. */
static size_t mp_find(span b, size_t from, span delim)
{
	if (b.len < delim.len + 2)
		return SIZE_MAX;
	for (size_t i = from; i + 2 + delim.len <= b.len; i++) {
		const char *cr = memchr(b.ptr + i, '\r', b.len - 2 - delim.len - i + 1);
		if (cr == NULL)
			return SIZE_MAX;
		i = (size_t)(cr - b.ptr);
		if (cr[1] == '\n' && memcmp(cr + 2, delim.ptr, delim.len) == 0)
			return i;
	}
	return SIZE_MAX;
}

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict base64 (RFC 2045 6.8): the alphabet, line breaks and white space between groups,
 * '=' padding only at the end. */
static custos_err mp_b64_decode(span in, buf *out, unsigned part)
{
	uint32_t acc = 0;
	unsigned n = 0, pad = 0;
	for (size_t i = 0; i < in.len; i++) {
		unsigned char c = (unsigned char)in.ptr[i];
		if (c == '\r' || c == '\n' || c == ' ' || c == '\t')
			continue;
		ENSURE(n < 5, CUSTOS_ERR_PARSE, "part %u: base64 after its padding", part);
		if (c == '=') {
			pad++;
			acc <<= 6;
			n++;
		} else {
			int v = b64_val(c);
			ENSURE(v >= 0 && pad == 0, CUSTOS_ERR_PARSE,
			       "part %u: invalid base64 at byte %zu of its content", part, i);
			acc = acc << 6 | (uint32_t)v;
			n++;
		}
		ENSURE(pad <= 2, CUSTOS_ERR_PARSE, "part %u: invalid base64 padding", part);
		if (n == 4) {
			uint8_t q[3] = { (uint8_t)(acc >> 16), (uint8_t)(acc >> 8), (uint8_t)acc };
			GUARD(buf_append(out, q, 3 - pad));
			if (pad)
				n = 5; /* nothing may follow the padding */
			else
				n = 0;
			acc = 0;
		}
	}
	ENSURE(n == 0 || n == 5, CUSTOS_ERR_PARSE, "part %u: base64 not a whole number of groups",
	       part);
	return CUSTOS_OK;
}

static custos_err mp_b64_encode(span in, bool wrap, buf *out)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t line = 0;
	for (size_t i = 0; i < in.len; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in.ptr[i] << 16;
		size_t k = in.len - i < 3 ? in.len - i : 3;
		if (k > 1)
			v |= (uint32_t)(unsigned char)in.ptr[i + 1] << 8;
		if (k > 2)
			v |= (unsigned char)in.ptr[i + 2];
		char q[4] = { al[v >> 18 & 63], al[v >> 12 & 63], k > 1 ? al[v >> 6 & 63] : '=',
			      k > 2 ? al[v & 63] : '=' };
		if (wrap && line == 76) {
			GUARD(buf_append(out, "\r\n", 2));
			line = 0;
		}
		GUARD(buf_append(out, q, 4));
		line += 4;
	}
	return CUSTOS_OK;
}

/* Quoted-printable (RFC 2045 6.7): =XX a byte, '=' before (white space and) CRLF a soft line
 * break; any other '=' is malformed. */
static custos_err mp_qp_decode(span in, buf *out, unsigned part)
{
	for (size_t i = 0; i < in.len;) {
		unsigned char c = (unsigned char)in.ptr[i];
		if (c != '=') {
			GUARD(buf_append_byte(out, c));
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < in.len && (in.ptr[j] == ' ' || in.ptr[j] == '\t'))
			j++;
		if (j + 1 < in.len && in.ptr[j] == '\r' && in.ptr[j + 1] == '\n') {
			i = j + 2; /* soft line break */
			continue;
		}
		int hi = i + 1 < in.len ? num_hex_digit((unsigned char)in.ptr[i + 1]) : -1;
		int lo = i + 2 < in.len ? num_hex_digit((unsigned char)in.ptr[i + 2]) : -1;
		ENSURE(hi >= 0 && lo >= 0, CUSTOS_ERR_PARSE,
		       "part %u: '=' at byte %zu of its quoted-printable content is not followed "
		       "by "
		       "two hex digits or a line break",
		       part, i);
		GUARD(buf_append_byte(out, (uint8_t)(hi << 4 | lo)));
		i += 3;
	}
	return CUSTOS_OK;
}

static custos_err mp_qp_encode(span in, buf *out)
{
	size_t line = 0;
	for (size_t i = 0; i < in.len; i++) {
		unsigned char c = (unsigned char)in.ptr[i];
		if (c == '\r' && i + 1 < in.len && in.ptr[i + 1] == '\n') {
			GUARD(buf_append(out, "\r\n", 2));
			line = 0;
			i++;
			continue;
		}
		bool end = i + 1 == in.len ||
		           (in.ptr[i + 1] == '\r' && i + 2 < in.len && in.ptr[i + 2] == '\n');
		bool lit = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !end);
		size_t w = lit ? 1 : 3;
		if (line + w > 75) {
			GUARD(buf_append(out, "=\r\n", 3));
			line = 0;
		}
		/* A '-' never starts a line: "--boundary" after a line break (a soft one this
		 * encoder inserts, or a hard one that was there) would end the part there. */
		if (c == '-' && line == 0) {
			lit = false;
			w = 3;
		}
		GUARD(lit ? buf_append_byte(out, c) : buf_printf(out, "=%02X", (unsigned)c));
		line += w;
	}
	return CUSTOS_OK;
}

/* Valid UTF-8 without NUL or C0 controls other than tab, CR, LF and form feed: text, whatever
 * its label says (an upload labelled application/octet-stream is often a text file). */
static bool mp_is_text(span t)
{
	for (size_t i = 0; i < t.len;) {
		unsigned char c = (unsigned char)t.ptr[i];
		if (c < 0x80) {
			if (c < 0x20 && c != '\t' && c != '\r' && c != '\n' && c != '\f')
				return false;
			if (c == 0x7f)
				return false;
			i++;
			continue;
		}
		size_t n = c >= 0xf0 && c <= 0xf4  ? 4
		           : c >= 0xe0             ? 3
		           : c >= 0xc2 && c < 0xe0 ? 2
		                                   : 0;
		if (n == 0 || c > 0xf4 || i + n > t.len)
			return false;
		uint32_t cp = c & (0xffu >> (n + 1));
		for (size_t k = 1; k < n; k++) {
			unsigned char d = (unsigned char)t.ptr[i + k];
			if ((d & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (d & 0x3fu);
		}
		if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		i += n;
	}
	return true;
}

typedef enum { MP_ID = 0, MP_B64, MP_QP } mp_cte;

typedef struct mp_ctx {
	const inspect_engine *e;
	inspect_scratch *s;
	const inspect_profile *p;
	buf *tmp, *dec, *msk, *out;
	inspect_summary *sum;
	unsigned depth; /* 1: the body */
	/* egress_multipart_field: the parts' framing checked, nothing inspected or written;
	 * the content of each part whose form-data name is field counted in nfield, the first
	 * one in *fval */
	const char *field;
	span *fval;
	unsigned nfield;
} mp_ctx;

static custos_err mp_body(mp_ctx *m, span boundary, span body);

/* Appends to the output (nothing in egress_multipart_field's scan). */
static custos_err mp_put(mp_ctx *m, const void *p, size_t n)
{
	return m->field ? CUSTOS_OK : buf_append(m->out, p, n);
}

/* raw inspected as text: appended to out as it is, or with its masks. */
static custos_err mp_text(mp_ctx *m, span raw)
{
	inspect_summary one;
	inspect_summary_init(&one);
	if (raw.len == 0 || m->field)
		return CUSTOS_OK;
	buf_reset(m->msk);
	custos_err e = inspect_redact_text(m->e, m->s, m->p, raw, m->msk, &one);
	inspect_summary_add(m->sum, &one);
	if (e != CUSTOS_OK)
		return e;
	return buf_append_span(m->out, one.redacted ? buf_span(m->msk) : raw);
}

/* The value of a part header field (after the name and ':'), trimmed. */
static bool mp_field(span line, span name, span *v)
{
	if (line.len <= name.len || line.ptr[name.len] != ':' ||
	    !span_case_eq(span_of(line.ptr, name.len), name))
		return false;
	*v = span_trim(span_of(line.ptr + name.len + 1, line.len - name.len - 1));
	return true;
}

/* One part's header block hdr (CRLF-terminated lines, maybe none): its Content-Type (empty:
 * none), transfer encoding and whether it has a content coding. */
static custos_err mp_headers(span hdr, unsigned part, span *ctype, mp_cte *cte, bool *coded,
                             span *disp)
{
	unsigned n = 0;
	bool has_ct = false, has_cte = false, has_disp = false;
	*ctype = span_of("", 0);
	*disp = span_of("", 0);
	*cte = MP_ID;
	*coded = false;
	for (size_t i = 0; i < hdr.len;) {
		const char *lf = memchr(hdr.ptr + i, '\n', hdr.len - i);
		ENSURE(lf != NULL && lf > hdr.ptr + i && lf[-1] == '\r', CUSTOS_ERR_PARSE,
		       "part %u: header line not ended by CRLF", part);
		span line = span_of(hdr.ptr + i, (size_t)(lf - 1 - (hdr.ptr + i)));
		i = (size_t)(lf - hdr.ptr) + 1;
		ENSURE(++n <= EGRESS_MP_MAX_HEADERS, CUSTOS_ERR_LIMIT,
		       "part %u: more than %u header fields", part, EGRESS_MP_MAX_HEADERS);
		ENSURE(memchr(line.ptr, '\r', line.len) == NULL, CUSTOS_ERR_PARSE,
		       "part %u: bare CR in a header line", part);
		size_t k = 0;
		while (k < line.len && line.ptr[k] != ':' && line.ptr[k] != ' ' &&
		       line.ptr[k] != '\t' && (unsigned char)line.ptr[k] > 32 &&
		       (unsigned char)line.ptr[k] < 127)
			k++;
		ENSURE(k > 0 && k < line.len && line.ptr[k] == ':', CUSTOS_ERR_PARSE,
		       "part %u: header line %u is not 'name: value' (folded lines are refused)",
		       part, n);
		span v;
		if (mp_field(line, SPAN_LIT("Content-Type"), &v)) {
			ENSURE(!has_ct, CUSTOS_ERR_PARSE, "part %u: two Content-Type fields", part);
			has_ct = true;
			*ctype = v;
		} else if (mp_field(line, SPAN_LIT("Content-Transfer-Encoding"), &v)) {
			ENSURE(!has_cte, CUSTOS_ERR_PARSE,
			       "part %u: two Content-Transfer-Encoding fields", part);
			has_cte = true;
			if (span_case_eq(v, SPAN_LIT("base64")))
				*cte = MP_B64;
			else if (span_case_eq(v, SPAN_LIT("quoted-printable")))
				*cte = MP_QP;
			else
				ENSURE(span_case_eq(v, SPAN_LIT("7bit")) ||
				               span_case_eq(v, SPAN_LIT("8bit")) ||
				               span_case_eq(v, SPAN_LIT("binary")),
				       CUSTOS_ERR_PARSE,
				       "part %u: unknown Content-Transfer-Encoding", part);
		} else if (mp_field(line, SPAN_LIT("Content-Encoding"), &v)) {
			if (!span_case_eq(v, SPAN_LIT("identity")))
				*coded = true;
		} else if (mp_field(line, SPAN_LIT("Content-Disposition"), &v)) {
			ENSURE(!has_disp, CUSTOS_ERR_PARSE,
			       "part %u: two Content-Disposition fields", part);
			has_disp = true;
			*disp = v;
		}
	}
	return CUSTOS_OK;
}

/* A part that is itself a multipart body (RFC 2046 5.1: no transfer encoding but 7bit, 8bit or
 * binary), inspected part by part by the same rules, appended to out as sent or with its
 * parts' masks. */
static custos_err mp_nested(mp_ctx *m, span raw, span ctype, span mt, mp_cte cte, unsigned part)
{
	char b[EGRESS_MP_BOUNDARY_MAX + 1];
	size_t bl;
	ENSURE(cte == MP_ID, CUSTOS_ERR_PARSE,
	       "part %u is multipart under a transfer encoding other than 7bit, 8bit or binary",
	       part);
	ENSURE(!span_case_eq(mt, SPAN_LIT("multipart/encrypted")), CUSTOS_ERR_UNSUPPORTED,
	       "part %u (multipart/encrypted) is encrypted and cannot be inspected", part);
	ENSURE(m->depth < EGRESS_MP_MAX_DEPTH, CUSTOS_ERR_LIMIT,
	       "part %u: multipart nested more than %u deep", part, EGRESS_MP_MAX_DEPTH);
	ENSURE(egress_multipart_boundary(ctype, b, &bl), CUSTOS_ERR_PARSE,
	       "part %u is multipart without one valid boundary parameter", part);
	mp_ctx in = *m;
	in.depth = m->depth + 1;
	custos_err e = mp_body(&in, span_of(b, bl), raw);
	if (e == CUSTOS_OK || e == CUSTOS_ERR_DENIED || e == CUSTOS_ERR_NOMEM)
		return e;
	char why[160];
	snprintf(why, sizeof(why), "%s", err_msg());
	return err_set(e, "part %u (multipart): %s", part, why);
}

/* One part's content, raw (as sent), appended to out inspected. */
static custos_err mp_content(mp_ctx *m, span raw, span ctype, mp_cte cte, bool coded, unsigned part)
{
	inspect_summary one;
	custos_err e = CUSTOS_OK;
	span d = raw;

	ENSURE(!coded, CUSTOS_ERR_UNSUPPORTED,
	       "part %u has a Content-Encoding: its content cannot be inspected", part);
	buf_reset(m->dec);
	if (cte == MP_B64)
		e = mp_b64_decode(raw, m->dec, part);
	else if (cte == MP_QP)
		e = mp_qp_decode(raw, m->dec, part);
	if (e != CUSTOS_OK)
		return e;
	if (cte != MP_ID)
		d = buf_span(m->dec);
	/* the part's media type (RFC 7578 4.4: text/plain when it has none) */
	const char *semi = memchr(ctype.ptr, ';', ctype.len);
	span mt = span_trim(semi ? span_of(ctype.ptr, (size_t)(semi - ctype.ptr)) : ctype);
	egress_body_kind k = mt.len ? egress_media_kind(mt) : EBODY_RAW;
	if (k == EBODY_ENCODED)
		k = EBODY_RAW;
	if (k == EBODY_MULTIPART)
		return mp_nested(m, raw, ctype, mt, cte, part);
	bool textual =
	        mt.len == 0 || (mt.len >= 5 && span_case_eq(span_of(mt.ptr, 5), SPAN_LIT("text/")));
	if (k == EBODY_RAW && !textual && !mp_is_text(d)) {
		/* the type as sent goes into a response header and the audit: printable only */
		char t[64];
		size_t tn = mt.len < sizeof(t) - 1 ? mt.len : sizeof(t) - 1;
		for (size_t i = 0; i < tn; i++)
			t[i] = mt.ptr[i] > ' ' && mt.ptr[i] < 127 && mt.ptr[i] != '"' &&
			                       mt.ptr[i] != '\\'
			               ? mt.ptr[i]
			               : '?';
		t[tn] = '\0';
		return err_set(CUSTOS_ERR_UNSUPPORTED,
		               "part %u (%s) is not text and cannot be inspected", part, t);
	}
	inspect_summary_init(&one);
	buf_reset(m->msk);
	char why[160];
	if (k == EBODY_JSON || k == EBODY_NDJSON) {
		size_t at = 0;
		do {
			const char *nl =
			        k == EBODY_NDJSON ? memchr(d.ptr + at, '\n', d.len - at) : NULL;
			size_t end = nl ? (size_t)(nl - d.ptr) : d.len;
			e = egress_inspect_json_doc(m->e, m->s, m->p, span_of(d.ptr + at, end - at),
			                            m->tmp, m->msk, &one);
			if (e == CUSTOS_OK && nl)
				e = buf_append_byte(m->msk, '\n');
			at = nl ? end + 1 : end;
		} while (e == CUSTOS_OK && at < d.len);
		if (e == CUSTOS_ERR_PARSE) {
			snprintf(why, sizeof(why), "%s", err_msg());
			e = err_set(CUSTOS_ERR_PARSE,
			            "part %u under a JSON media type is not "
			            "valid JSON: %s",
			            part, why);
		}
	} else if (k == EBODY_FORM) {
		e = egress_inspect_form(m->e, m->s, m->p, d, m->tmp, m->msk, &one);
		if (e == CUSTOS_ERR_PARSE) {
			snprintf(why, sizeof(why), "%s", err_msg());
			e = err_set(CUSTOS_ERR_PARSE,
			            "part %u under application/x-www-form-urlencoded:"
			            " %s",
			            part, why);
		}
	} else if (d.len) {
		e = inspect_redact_text(m->e, m->s, m->p, d, m->msk, &one);
	}
	inspect_summary_add(m->sum, &one);
	if (e != CUSTOS_OK)
		return e;
	if (!one.redacted)
		return buf_append_span(m->out, raw);
	if (cte == MP_B64)
		return mp_b64_encode(buf_span(m->msk), memchr(raw.ptr, '\n', raw.len) != NULL,
		                     m->out);
	if (cte == MP_QP)
		return mp_qp_encode(buf_span(m->msk), m->out);
	return buf_append_span(m->out, buf_span(m->msk));
}

/* The name parameter of a form-data Content-Disposition value (RFC 7578 4.2): a token or a
 * quoted string without escapes, the parameter name in any case; false when there is none,
 * or the value is not "form-data" with at most one name (malformed: two readers could take
 * different names from it). */
static bool mp_disp_name(span disp, span *name, bool *bad)
{
	*bad = false;
	const char *semi = memchr(disp.ptr, ';', disp.len);
	span type = span_trim(span_of(disp.ptr, semi ? (size_t)(semi - disp.ptr) : disp.len));
	if (!span_case_eq(type, SPAN_LIT("form-data")))
		return false;
	bool found = false;
	while (semi != NULL) {
		size_t at = (size_t)(semi - disp.ptr) + 1;
		span rest = span_of(disp.ptr + at, disp.len - at);
		const char *eq = memchr(rest.ptr, '=', rest.len);
		if (eq == NULL) {
			*bad = span_trim(rest).len > 0;
			return false;
		}
		span pn = span_trim(span_of(rest.ptr, (size_t)(eq - rest.ptr)));
		span v = span_of(eq + 1, rest.len - (size_t)(eq + 1 - rest.ptr));
		size_t k = 0;
		while (k < v.len && (v.ptr[k] == ' ' || v.ptr[k] == '\t'))
			k++;
		span val;
		size_t used;
		if (k < v.len && v.ptr[k] == '"') {
			const char *q = memchr(v.ptr + k + 1, '"', v.len - k - 1);
			if (q == NULL || memchr(v.ptr + k + 1, '\\', (size_t)(q - v.ptr - k - 1))) {
				*bad = true;
				return false;
			}
			val = span_of(v.ptr + k + 1, (size_t)(q - v.ptr - k - 1));
			used = (size_t)(q - v.ptr) + 1;
		} else {
			size_t e = k;
			while (e < v.len && v.ptr[e] != ';')
				e++;
			val = span_trim(span_of(v.ptr + k, e - k));
			used = e;
		}
		span after = span_of(v.ptr + used, v.len - used);
		semi = memchr(after.ptr, ';', after.len);
		if (span_trim(span_of(after.ptr, semi ? (size_t)(semi - after.ptr) : after.len))
		            .len) {
			*bad = true;
			return false;
		}
		if (span_case_eq(pn, SPAN_LIT("name"))) {
			if (found) {
				*bad = true;
				return false;
			}
			found = true;
			*name = val;
		}
	}
	return found;
}

/* egress_multipart_field's scan: one part's headers. */
static custos_err mp_field_part(mp_ctx *m, span disp, span raw, mp_cte cte, bool coded,
                                unsigned part)
{
	span name;
	bool bad;
	bool named = mp_disp_name(disp, &name, &bad);
	ENSURE(!bad, CUSTOS_ERR_PARSE,
	       "part %u: Content-Disposition is not form-data with one name parameter", part);
	if (!named || !span_eq(name, span_cstr(m->field)))
		return CUSTOS_OK;
	ENSURE(cte == MP_ID && !coded, CUSTOS_ERR_PARSE,
	       "part %u: the '%s' field has a transfer or content encoding", part, m->field);
	if (m->nfield++ == 0)
		*m->fval = raw;
	return CUSTOS_OK;
}

custos_err egress_multipart_field(span boundary, span body, const char *name, span *value,
                                  unsigned *count)
{
	mp_ctx m = { 0 };
	m.depth = 1;
	m.field = name;
	m.fval = value;
	*value = span_of("", 0);
	custos_err e = mp_body(&m, boundary, body);
	*count = m.nfield;
	return e;
}

custos_err egress_inspect_multipart(const inspect_engine *en, inspect_scratch *s,
                                    const inspect_profile *p, span boundary, span body, buf *tmp,
                                    buf *dec, buf *msk, buf *out, inspect_summary *sum)
{
	mp_ctx m = { en, s, p, tmp, dec, msk, out, sum, 1, NULL, NULL, 0 };
	return mp_body(&m, boundary, body);
}

static custos_err mp_body(mp_ctx *m, span boundary, span body)
{
	char dl[EGRESS_MP_BOUNDARY_MAX + 3];
	ENSURE(boundary.len > 0 && boundary.len <= EGRESS_MP_BOUNDARY_MAX, CUSTOS_ERR_PARSE,
	       "no valid boundary");
	dl[0] = dl[1] = '-';
	memcpy(dl + 2, boundary.ptr, boundary.len);
	span delim = span_of(dl, boundary.len + 2);

	/* the first delimiter: at the start, or after the preamble and its CRLF */
	size_t at;
	if (body.len >= delim.len && memcmp(body.ptr, delim.ptr, delim.len) == 0) {
		at = 0;
	} else {
		size_t f = mp_find(body, 0, delim);
		ENSURE(f != SIZE_MAX, CUSTOS_ERR_PARSE, "no delimiter line with the boundary");
		GUARD(mp_text(m, span_of(body.ptr, f))); /* the preamble */
		GUARD(mp_put(m, "\r\n", 2));
		at = f + 2;
	}
	GUARD(mp_put(m, delim.ptr, delim.len));
	size_t i = at + delim.len;
	for (unsigned part = 1;; part++) {
		if (body.len - i >= 2 && body.ptr[i] == '-' && body.ptr[i + 1] == '-') {
			GUARD(mp_put(m, "--", 2));
			return mp_text(m,
			               span_of(body.ptr + i + 2, body.len - i - 2)); /* epilogue */
		}
		size_t j = i;
		while (j < body.len && (body.ptr[j] == ' ' || body.ptr[j] == '\t'))
			j++;
		ENSURE(body.len - j >= 2 && body.ptr[j] == '\r' && body.ptr[j + 1] == '\n',
		       CUSTOS_ERR_PARSE,
		       "the delimiter line ending at byte %zu is not followed by CRLF or \"--\"",
		       i);
		ENSURE(part <= EGRESS_MP_MAX_PARTS, CUSTOS_ERR_LIMIT, "more than %u parts",
		       EGRESS_MP_MAX_PARTS);
		GUARD(mp_put(m, body.ptr + i, j + 2 - i));
		i = j + 2;
		/* the part: up to the next delimiter line; its header block (CRLF-terminated
		 * lines, maybe none), then, after an empty line, its content (maybe none) */
		size_t end = mp_find(body, i, delim);
		ENSURE(end != SIZE_MAX, CUSTOS_ERR_PARSE, "part %u has no delimiter line after it",
		       part);
		span pt = span_of(body.ptr + i, end - i), hdr = pt, raw = { NULL, 0 };
		bool has_content = false;
		if (pt.len >= 2 && pt.ptr[0] == '\r' && pt.ptr[1] == '\n') {
			hdr = span_of(pt.ptr, 0);
			raw = span_of(pt.ptr + 2, pt.len - 2);
			has_content = true;
		} else if (pt.len > 0) {
			size_t lim = pt.len < EGRESS_MP_MAX_HEAD ? pt.len : EGRESS_MP_MAX_HEAD;
			size_t k = SIZE_MAX;
			for (size_t x = 0; x + 4 <= lim; x++)
				if (memcmp(pt.ptr + x, "\r\n\r\n", 4) == 0) {
					k = x;
					break;
				}
			if (k != SIZE_MAX) {
				hdr = span_of(pt.ptr, k + 2);
				raw = span_of(pt.ptr + k + 4, pt.len - k - 4);
				has_content = true;
			}
			ENSURE(hdr.len <= EGRESS_MP_MAX_HEAD, CUSTOS_ERR_LIMIT,
			       "part %u: header block over %u bytes", part, EGRESS_MP_MAX_HEAD);
		}
		span ctype, disp;
		mp_cte cte;
		bool coded;
		GUARD(mp_headers(hdr, part, &ctype, &cte, &coded, &disp));
		if (m->field) {
			GUARD(mp_field_part(m, disp, raw, cte, coded, part));
		} else {
			GUARD(mp_text(m, hdr));
			if (has_content) {
				GUARD(mp_put(m, "\r\n", 2));
				GUARD(mp_content(m, raw, ctype, cte, coded, part));
			}
		}
		GUARD(mp_put(m, "\r\n", 2));
		GUARD(mp_put(m, delim.ptr, delim.len));
		i = end + 2 + delim.len;
	}
}

/* ---------------------------------------------------------------------------------------------
 * Decision and state
 */
static bool any_action(const uint8_t a[POLICY_MAX_DETECTORS])
{
	for (size_t i = 0; i < POLICY_MAX_DETECTORS; i++)
		if (a[i])
			return true;
	return false;
}

static struct einsp *ei_get(erec *r);

bool egress_inspect_wanted(const policy_decision *d)
{
	if (d->shadow || !d->has_inspect)
		return false;
	return any_action(d->inspect_response) || any_action(d->inspect_prompt);
}

bool egress_inspect_decide(egress_server *s, policy *p, const policy_decision *d, erec *r,
                           bool tunnel)
{
	/* Shadow mode enforces nothing; the path alone is inspected, so that a value in it is
	 * audited as a finding and masked in the audited path (docs/EGRESS.md). */
	bool shadow_path = d->shadow && d->has_inspect && any_action(d->inspect_prompt) && !tunnel;
	if (!egress_inspect_wanted(d) && !shadow_path)
		return false;
	if (tunnel) {
		snprintf(r->reason, sizeof(r->reason),
		         "policy: the rule asks for %s inspection, which needs TLS "
		         "interception (intercept: true on data source %s)",
		         any_action(d->inspect_response) ? "response" : "request body",
		         r->source ? r->source : "?");
		return true;
	}
	struct eeng *e = eng_get(s, p);
	if (e == NULL) {
		log_error("egress: inspection engine: %s", err_msg());
		snprintf(r->reason, sizeof(r->reason), "content inspection unavailable");
		r->decision = "error";
		return true;
	}
	egress_eng_unref(r->eng); /* a second decision on the same request (not expected) */
	r->eng = e;
	if (!d->shadow)
		memcpy(r->insp_response, d->inspect_response, sizeof(r->insp_response));
	memcpy(r->insp_request, d->inspect_prompt, sizeof(r->insp_request));
	ei_get(r)->srv = s;
	return false;
}

static struct einsp *ei_get(erec *r)
{
	if (r->ei == NULL) {
		struct einsp *ei = xcalloc(1, sizeof(*ei));
		inspect_profile_from_actions(&ei->req, r->insp_request);
		inspect_profile_from_actions(&ei->resp, r->insp_response);
		ei->req_on = inspect_profile_active(&ei->req);
		ei->resp_on = inspect_profile_active(&ei->resp);
		inspect_summary_init(&ei->qsum);
		inspect_summary_init(&ei->rsum);
		buf_init(&ei->hold, EGRESS_INSPECT_BODY_CEIL); /* max_body checks first */
		buf_init(&ei->out, 0);                         /* working copies: work_arm */
		buf_init(&ei->tmp, 0);
		buf_init(&ei->dec, 0);
		buf_init(&ei->msk, 0);
		buf_init(&ei->target, 0);
		ei->q_lim = UINT64_MAX;
		r->ei = ei;
	}
	return r->ei;
}

int egress_inspect_open(erec *r)
{
	if (r->eng == NULL || !any_action(r->insp_response))
		return 0;
	(void)ei_get(r);
	if (r->ip == NULL) {
		decide_out dec;
		const char *why = NULL;
		buf none;
		memset(&dec, 0, sizeof(dec));
		dec.has_inspect = true;
		memcpy(dec.insp_response, r->insp_response, sizeof(dec.insp_response));
		dec.insp_engine = r->eng->eng;
		dec.insp_engine_id = r->eng->id;
		buf_init(&none, 1);
		/* The request body is inspected here (egress_inspect_request): an empty body opens
		 * the raw response stream only. */
		unsigned st = ingress_inspect_request(&r->ip, &dec, false, NULL, &none, &why);
		buf_free(&none);
		if (st != 0 || r->ip == NULL)
			return -1;
		ingress_inspect_response_raw(r->ip);
	}
	return 1;
}

/* ei->mptype (the media type of ct, lower case and printable, for reasons and the audit) and
 * ei->boundary; false when ct has no valid boundary (ei->blen 0). */
static bool mp_take_type(struct einsp *ei, span ct)
{
	size_t n = 0;
	for (; n < ct.len && n < sizeof(ei->mptype) - 1 && ct.ptr[n] != ';' && ct.ptr[n] != ' ' &&
	       ct.ptr[n] != '\t';
	     n++) {
		char c = ct.ptr[n];
		ei->mptype[n] = c >= 'A' && c <= 'Z'                          ? (char)(c + 32)
		                : c > ' ' && c < 127 && c != '"' && c != '\\' ? c
		                                                              : '?';
	}
	ei->mptype[n] = '\0';
	if (egress_multipart_boundary(ct, ei->boundary, &ei->blen))
		return true;
	ei->blen = 0;
	return false;
}

static bool mp_encrypted(const struct einsp *ei)
{
	return strcmp(ei->mptype, "multipart/encrypted") == 0;
}

bool egress_inspect_response_begin(erec *r, const http1_head *h)
{
	struct einsp *ei = r->ei;
	if (ei == NULL || r->ip == NULL || !ei->resp_on)
		return false;
	ei->mode = EM_NONE;
	if (h->framing == HTTP1_BODY_NONE || h->framing == HTTP1_BODY_TUNNEL)
		return false;
	egress_body_kind k = egress_body_kind_of(h);
	if (k == EBODY_JSON || k == EBODY_NDJSON || k == EBODY_FORM) {
		ei->mode = k == EBODY_JSON ? EM_JSON : k == EBODY_FORM ? EM_FORM : EM_NDJSON;
		buf_reset(&ei->hold);
		return true;
	}
	span ct;
	if (k == EBODY_MULTIPART && http1_header_get(h, SPAN_LIT("Content-Type"), &ct)) {
		/* a missing boundary or multipart/encrypted is refused at the end, held first
		 * like any other body that fails */
		(void)mp_take_type(ei, ct);
		ei->mode = EM_MULTIPART;
		buf_reset(&ei->hold);
		return true;
	}
	if (!ingress_inspect_response_begin(r->ip, h))
		return false;
	ei->mode = EM_STREAM;
	return true;
}

static custos_err resp_denied(struct einsp *ei, const struct eeng *en)
{
	const char *n = inspect_engine_detector_name(en->eng, (unsigned)ei->rsum.deny_detector);
	ei->denied = true;
	snprintf(ei->why, sizeof(ei->why), "response denied by content inspection: %s detected",
	         n ? n : "?");
	return CUSTOS_ERR_DENIED;
}

/* A JSON document (or a form) of the response failed to inspect: the reason for the 502. */
static custos_err resp_failed(struct einsp *ei, custos_err e, const char *what)
{
	if (ei->mode == EM_MULTIPART && e == CUSTOS_ERR_UNSUPPORTED) {
		snprintf(ei->fail, sizeof(ei->fail),
		         "response under %s not inspected: %s; refused (fail closed)", ei->mptype,
		         err_msg());
		return e;
	}
	snprintf(ei->fail, sizeof(ei->fail),
	         "%s response %s: %s; refused, it cannot be inspected (fail closed)", what,
	         e != CUSTOS_ERR_PARSE      ? "is past an inspection limit"
	         : ei->mode == EM_FORM      ? "is not valid percent-encoding"
	         : ei->mode == EM_MULTIPART ? "is malformed"
	                                    : "is not valid JSON",
	         err_msg());
	return e;
}

/* What the held response is, for the reasons. */
static const char *resp_kind(const struct einsp *ei)
{
	return ei->mode == EM_FORM ? "form" : ei->mode == EM_MULTIPART ? ei->mptype : "JSON";
}

/* EM_NDJSON: every complete line in ei->hold (the rest stays for the next piece, or all of
 * it at the end) inspected into ei->out. */
static custos_err ndjson_lines(erec *r, struct einsp *ei, inspect_scratch *s, bool fin)
{
	span h = buf_span(&ei->hold);
	size_t at = 0;
	custos_err e = CUSTOS_OK;
	while (at < h.len) {
		const char *nl = memchr(h.ptr + at, '\n', h.len - at);
		if (nl == NULL && !fin)
			break;
		size_t end = nl ? (size_t)(nl - h.ptr) : h.len;
		e = egress_inspect_json_doc(r->eng->eng, s, &ei->resp,
		                            span_of(h.ptr + at, end - at), &ei->tmp, &ei->out,
		                            &ei->rsum);
		if (e == CUSTOS_OK && nl)
			e = buf_append_byte(&ei->out, '\n');
		if (e != CUSTOS_OK)
			break;
		at = nl ? end + 1 : end;
	}
	buf_consume(&ei->hold, at);
	return e;
}

/* The response could not be held within egress.inspect.max_held: the reason for the 503. */
static custos_err resp_not_held(struct einsp *ei)
{
	ei->held_refused = true;
	snprintf(ei->fail, sizeof(ei->fail),
	         "%s response not inspected: bytes held for inspection at "
	         "egress.inspect.max_held (%llu); refused (fail closed)",
	         resp_kind(ei), (unsigned long long)ei->srv->o.inspect_max_held);
	return err_set(CUSTOS_ERR_AGAIN, "egress.inspect.max_held reached");
}

/* The working copies for what ei->hold holds now (out, what the client gets; tmp, a
 * document's decoded copy; a form's offset map): false when max_held refuses them. */
static bool resp_arm(struct einsp *ei)
{
	size_t n = buf_used(&ei->hold);
	bool mp = ei->mode == EM_MULTIPART;
	return work_arm(ei, &ei->out, &ei->ct_out, n) && work_arm(ei, &ei->tmp, &ei->ct_tmp, n) &&
	       (!mp || (work_arm(ei, &ei->dec, &ei->ct_dec, n) &&
	                work_arm(ei, &ei->msk, &ei->ct_msk, n))) &&
	       ((ei->mode != EM_FORM && !mp) || ei->ct_form ||
	        held_take(ei, &ei->ct_form, 4 * ((uint64_t)n + 1)));
}

custos_err egress_inspect_response_data(erec *r, span in, span *out)
{
	struct einsp *ei = r->ei;
	inspect_scratch *s;
	custos_err e;

	*out = span_of("", 0);
	if (ei->mode == EM_STREAM)
		return ingress_inspect_response_data(r->ip, in, out);
	if (ei->denied)
		return CUSTOS_ERR_DENIED;
	uint64_t want = (uint64_t)buf_used(&ei->hold) + in.len;
	if (want > max_body_of(ei)) {
		snprintf(ei->fail, sizeof(ei->fail),
		         "%s response %s over %llu bytes: refused, it cannot be inspected whole "
		         "(fail closed)",
		         resp_kind(ei), ei->mode == EM_NDJSON ? "line" : "body",
		         (unsigned long long)max_body_of(ei));
		return err_set(CUSTOS_ERR_LIMIT, "JSON response past egress.inspect.max_body");
	}
	e = grow_counted(ei, &ei->hold, &ei->ct_hold, in.len, (size_t)max_body_of(ei),
	                 &ei->held_refused);
	if (e == CUSTOS_OK)
		e = buf_append_span(&ei->hold, in);
	if (e != CUSTOS_OK || ei->mode != EM_NDJSON) /* held until the end */
		return ei->held_refused ? resp_not_held(ei) : e;
	if (!resp_arm(ei))
		return resp_not_held(ei);
	GUARD(scratch_get(r->eng, &s));
	uint64_t t0 = tm_mono_ns();
	e = ndjson_lines(r, ei, s, false);
	ei->t_ns += tm_mono_ns() - t0;
	work_free(ei, &ei->tmp, &ei->ct_tmp); /* the rest of a line stays in hold */
	if (e == CUSTOS_ERR_DENIED)
		return resp_denied(ei, r->eng);
	if (e != CUSTOS_OK)
		return resp_failed(ei, e, "NDJSON line of the");
	*out = buf_span(&ei->out);
	return CUSTOS_OK;
}

custos_err egress_inspect_response_end(erec *r, span *out)
{
	struct einsp *ei = r->ei;
	inspect_scratch *s;
	custos_err e;

	*out = span_of("", 0);
	if (ei->mode == EM_STREAM)
		return ingress_inspect_response_end(r->ip, out);
	if (ei->denied)
		return CUSTOS_ERR_DENIED;
	if (!resp_arm(ei))
		return resp_not_held(ei);
	GUARD(scratch_get(r->eng, &s));
	uint64_t t0 = tm_mono_ns();
	if (ei->mode == EM_JSON)
		e = egress_inspect_json_doc(r->eng->eng, s, &ei->resp, buf_span(&ei->hold),
		                            &ei->tmp, &ei->out, &ei->rsum);
	else if (ei->mode == EM_FORM)
		e = egress_inspect_form(r->eng->eng, s, &ei->resp, buf_span(&ei->hold), &ei->tmp,
		                        &ei->out, &ei->rsum);
	else if (ei->mode == EM_MULTIPART && mp_encrypted(ei))
		e = err_set(CUSTOS_ERR_UNSUPPORTED, "it is encrypted");
	else if (ei->mode == EM_MULTIPART && ei->blen == 0)
		e = err_set(CUSTOS_ERR_PARSE, "no valid boundary parameter");
	else if (ei->mode == EM_MULTIPART)
		e = egress_inspect_multipart(r->eng->eng, s, &ei->resp,
		                             span_of(ei->boundary, ei->blen), buf_span(&ei->hold),
		                             &ei->tmp, &ei->dec, &ei->msk, &ei->out, &ei->rsum);
	else
		e = ndjson_lines(r, ei, s, true);
	ei->t_ns += tm_mono_ns() - t0;
	work_free(ei, &ei->hold, &ei->ct_hold); /* all of it inspected: out stays until release */
	work_free(ei, &ei->tmp, &ei->ct_tmp);
	work_free(ei, &ei->dec, &ei->ct_dec);
	work_free(ei, &ei->msk, &ei->ct_msk);
	held_give(ei, &ei->ct_form);
	if (e == CUSTOS_ERR_DENIED)
		return resp_denied(ei, r->eng);
	if (e != CUSTOS_OK)
		return resp_failed(ei, e,
		                   ei->mode == EM_NDJSON ? "NDJSON line of the" : resp_kind(ei));
	*out = buf_span(&ei->out);
	return CUSTOS_OK;
}

const char *egress_inspect_fail_reason(const erec *r)
{
	return r->ei && r->ei->fail[0] ? r->ei->fail : NULL;
}

unsigned egress_inspect_fail_status(const erec *r)
{
	return r->ei && r->ei->held_refused ? 503 : 502;
}

/* ---------------------------------------------------------------------------------------------
 * Request bodies
 */
bool egress_inspect_request_wanted(const erec *r)
{
	return r->eng != NULL && !r->shadow && any_action(r->insp_request);
}

bool egress_inspect_target_wanted(const erec *r)
{
	return r->eng != NULL && any_action(r->insp_request);
}

unsigned egress_inspect_request_begin(erec *r, const http1_head *h)
{
	if (egress_body_kind_of(h) == EBODY_ENCODED) {
		snprintf(r->reason, sizeof(r->reason),
		         "request body with a content-encoding cannot be inspected (fail closed)");
		r->decision = "deny";
		return 415;
	}
	struct einsp *ei = ei_get(r);
	span ct;
	if (egress_body_kind_of(h) == EBODY_MULTIPART &&
	    http1_header_get(h, SPAN_LIT("Content-Type"), &ct)) {
		bool ok = mp_take_type(ei, ct);
		if (mp_encrypted(ei)) {
			snprintf(r->reason, sizeof(r->reason),
			         "request body under multipart/encrypted cannot be inspected "
			         "(fail closed)");
			r->decision = "deny";
			return 415;
		}
		if (!ok) {
			snprintf(r->reason, sizeof(r->reason),
			         "request body under %s without one valid boundary "
			         "parameter; refused, it cannot be inspected (fail closed)",
			         ei->mptype);
			r->decision = "deny";
			return 400;
		}
	}
	if (h->framing == HTTP1_BODY_LENGTH && h->content_length > max_body_of(ei)) {
		egress_inspect_request_too_large(r);
		return 413;
	}
	/* A length known up front is counted whole now, with its working copies: refused before
	 * any of it is read. */
	if (h->framing == HTTP1_BODY_LENGTH) {
		uint64_t n = h->content_length;
		ei->q_lim = n;
		if (!held_credit(ei, n + 1 + q_work(egress_body_kind_of(h), n)))
			return held_refused(r, ei, n);
	}
	return 0;
}

/* r->path (audited) set to path, truncated to fit. */
static void audit_path(erec *r, span path)
{
	size_t n = path.len < sizeof(r->path) - 1 ? path.len : sizeof(r->path) - 1;
	memcpy(r->path, path.ptr, n);
	r->path[n] = '\0';
}

/* r->path (audited): base (the path as it may be audited), then rest (the query from its
 * '?', or nothing), cut to fit. */
static void audit_path_with(erec *r, const char *base, span rest)
{
	snprintf(r->path, sizeof(r->path), "%s%.*s", base, (int)rest.len, rest.len ? rest.ptr : "");
}

/* The path (without its query) of a request the rule inspects, aud (sizeof(r->path)) the
 * path as it may be audited and *found whether anything was found in it: 0, or the status to
 * answer with r->reason set and r->path = aud (the query dropped). In shadow mode always 0. */
static unsigned path_check(erec *r, struct einsp *ei, span path, char *aud, bool *found)
{
	inspect_scratch *s;
	inspect_summary one;
	buf dec;
	int rdet = -1;

	ei->req_done = true;
	aud[0] = '\0';
	inspect_summary_init(&one);
	buf_init(&dec, path.len + 1); /* a segment decodes to at most its own length */
	custos_err e = scratch_get(r->eng, &s);
	uint64_t t0 = tm_mono_ns();
	if (e == CUSTOS_OK)
		e = egress_inspect_path(r->eng->eng, s, &ei->req, path, &dec, &one, &rdet, aud,
		                        sizeof(r->path));
	ei->t_ns += tm_mono_ns() - t0;
	inspect_summary_add(&ei->qsum, &one);
	buf_free(&dec);
	*found = one.total > 0 || e != CUSTOS_OK;
	if (e == CUSTOS_OK || r->shadow)
		return 0; /* shadow mode: passed as sent, the findings audited */
	/* Never the path as sent: it holds what was found, or what could not be read. */
	memcpy(r->path, aud, sizeof(r->path));
	r->decision = "deny";
	if (e == CUSTOS_ERR_DENIED || e == CUSTOS_ERR_UNSUPPORTED) {
		int d = e == CUSTOS_ERR_DENIED ? one.deny_detector : rdet;
		const char *n = inspect_engine_detector_name(r->eng->eng, (unsigned)d);
		if (e == CUSTOS_ERR_DENIED)
			snprintf(r->reason, sizeof(r->reason),
			         "request path denied by content inspection: %s detected",
			         n ? n : "?");
		else
			snprintf(r->reason, sizeof(r->reason),
			         "request path: %s detected under a redact rule; a value in the "
			         "request path cannot be masked without changing the resource: "
			         "refused",
			         n ? n : "?");
		return 403;
	}
	if (e == CUSTOS_ERR_PARSE || e == CUSTOS_ERR_LIMIT) {
		snprintf(r->reason, sizeof(r->reason),
		         "request path %s: %s; refused, it cannot be inspected (fail closed)",
		         e == CUSTOS_ERR_PARSE ? "is not valid percent-encoding"
		                               : "is past an inspection limit",
		         err_msg());
		return 400;
	}
	log_error("egress: path inspection: %s", err_msg());
	snprintf(r->reason, sizeof(r->reason), "content inspection failed");
	r->decision = "error";
	return 500;
}

unsigned egress_inspect_target(erec *r, const http1_head *h, span *target)
{
	struct einsp *ei = ei_get(r);
	inspect_scratch *s;
	inspect_summary one;
	buf dec;
	custos_err e;
	unsigned st = 0;

	*target = span_of("", 0);
	r->path_final = true; /* inspected under the rule from here, whatever comes */
	span path = h->path;
	const char *qm = path.len ? memchr(path.ptr, '?', path.len) : NULL;
	size_t pl = qm ? (size_t)(qm - path.ptr) : path.len;
	/* What may be audited of the path: as sent unless something was found in it. */
	char aud[sizeof(r->path)];
	bool pfound = false;
	if (pl) {
		st = path_check(r, ei, span_of(path.ptr, pl), aud, &pfound);
		if (st)
			return st;
	}
	span qsent = span_of(qm, qm ? path.len - pl : 0); /* the query from its '?' */
	if (pfound)
		audit_path_with(r, aud, qsent);
	if (r->shadow)
		return 0; /* shadow mode: the path alone (egress_inspect_decide) */
	if (qm == NULL || qm + 1 == path.ptr + path.len)
		return 0; /* no query */
	span q = span_of(qm + 1, path.len - pl - 1);
	ei->req_done = true;
	/* At most HTTP1_MAX_REQUEST_LINE bytes: not counted in egress.inspect.max_held, like
	 * the request head itself. */
	buf_init(&dec, work_max(q.len));
	buf_free(&ei->target);
	buf_init(&ei->target, work_max(path.len) + 1);
	e = scratch_get(r->eng, &s);
	inspect_summary_init(&one);
	uint64_t t0 = tm_mono_ns();
	if (e == CUSTOS_OK) {
		if (path.len == 0 || path.ptr[0] != '/')
			e = buf_append_byte(&ei->target, '/');
		if (e == CUSTOS_OK)
			e = buf_append(&ei->target, path.ptr, pl + 1);
		if (e == CUSTOS_OK)
			e = egress_inspect_form(r->eng->eng, s, &ei->req, q, &dec, &ei->target,
			                        &one);
	}
	ei->t_ns += tm_mono_ns() - t0;
	inspect_summary_add(&ei->qsum, &one);
	buf_free(&dec);
	if (e == CUSTOS_OK) {
		if (one.redacted) {
			*target = buf_span(&ei->target);
			const char *tq = memchr(target->ptr, '?', target->len);
			if (pfound && tq != NULL) { /* (it has one: its query was redacted) */
				size_t at = (size_t)(tq - target->ptr);
				audit_path_with(r, aud, span_of(tq, target->len - at));
			} else if (pfound) {
				audit_path_with(r, aud, span_of("", 0));
			} else {
				audit_path(r, *target);
			}
		}
		return 0;
	}
	/* The query is not audited (it holds what was found, or could not be read). */
	if (pfound)
		audit_path_with(r, aud, span_of("", 0));
	else
		audit_path(r, span_of(path.ptr, pl));
	if (e == CUSTOS_ERR_DENIED) {
		const char *n =
		        inspect_engine_detector_name(r->eng->eng, (unsigned)one.deny_detector);
		snprintf(r->reason, sizeof(r->reason),
		         "request query string denied by content inspection: %s detected",
		         n ? n : "?");
		r->decision = "deny";
		st = 403;
	} else if (e == CUSTOS_ERR_PARSE || e == CUSTOS_ERR_LIMIT) {
		snprintf(r->reason, sizeof(r->reason),
		         "request query string %s: %s; refused, it cannot be inspected (fail "
		         "closed)",
		         e == CUSTOS_ERR_PARSE ? "is not valid percent-encoding"
		                               : "is past an inspection limit",
		         err_msg());
		r->decision = "deny";
		st = 400;
	} else {
		log_error("egress: query inspection: %s", err_msg());
		snprintf(r->reason, sizeof(r->reason), "content inspection failed");
		r->decision = "error";
		st = 500;
	}
	buf_free(&ei->target);
	return st;
}

unsigned egress_inspect_request_append(erec *r, buf *hold, span d)
{
	struct einsp *ei = ei_get(r);
	uint64_t want = (uint64_t)buf_used(hold) + d.len;
	if (want > max_body_of(ei)) {
		egress_inspect_request_too_large(r);
		return 413;
	}
	uint64_t lim = ei->q_lim < max_body_of(ei) ? ei->q_lim : max_body_of(ei);
	bool refused = false;
	custos_err e = grow_counted(ei, hold, &ei->ct_qin, d.len, (size_t)lim, &refused);
	if (refused)
		return held_refused(r, ei, want);
	if (e != CUSTOS_OK || buf_append_span(hold, d) != CUSTOS_OK) {
		egress_inspect_request_too_large(r);
		return 413;
	}
	return 0;
}

custos_err egress_head_set_length(buf *head, uint64_t n)
{
	size_t u = buf_used(head);
	ENSURE(u >= 4 && memcmp(buf_ptr(head) + u - 4, "\r\n\r\n", 4) == 0, CUSTOS_ERR_INVAL,
	       "request head without its empty line");
	head->len -= 2; /* the empty line, written again after the field */
	custos_err e = buf_printf(head, "Content-Length: %llu\r\n\r\n", (unsigned long long)n);
	if (e != CUSTOS_OK)
		GUARD(buf_append(head, "\r\n", 2)); /* the head as it was */
	return e;
}

void egress_inspect_request_too_large(erec *r)
{
	snprintf(r->reason, sizeof(r->reason),
	         "request body over %llu bytes cannot be inspected (fail closed)",
	         (unsigned long long)max_body_of(ei_get(r)));
	r->decision = "deny";
}

/* The working copies of a request body other than its masked copy, and the credit. */
static void req_scratch_free(struct einsp *ei)
{
	work_free(ei, &ei->tmp, &ei->ct_tmp);
	work_free(ei, &ei->dec, &ei->ct_dec);
	work_free(ei, &ei->msk, &ei->ct_msk);
	held_give(ei, &ei->ct_form);
	credit_drop(ei);
}

unsigned egress_inspect_request(erec *r, egress_body_kind k, buf *in, buf *out)
{
	struct einsp *ei = ei_get(r);
	inspect_scratch *s;
	custos_err e;
	span body = buf_span(in);

	ei->req_done = true;
	/* The working copies (counted whole: a Content-Length's credit holds them already) */
	bool mp = k == EBODY_MULTIPART;
	bool two = k == EBODY_JSON || k == EBODY_NDJSON || k == EBODY_FORM || mp;
	bool map = k == EBODY_FORM || mp;
	if (!work_arm(ei, out, &ei->ct_qout, body.len) ||
	    (two && !work_arm(ei, &ei->tmp, &ei->ct_tmp, body.len)) ||
	    (mp && !work_arm(ei, &ei->dec, &ei->ct_dec, body.len)) ||
	    (mp && !work_arm(ei, &ei->msk, &ei->ct_msk, body.len)) ||
	    (map && !held_take(ei, &ei->ct_form, 4 * ((uint64_t)body.len + 1)))) {
		unsigned st = held_refused(r, ei, body.len);
		work_free(ei, in, &ei->ct_qin);
		work_free(ei, out, &ei->ct_qout);
		req_scratch_free(ei);
		return st;
	}
	e = scratch_get(r->eng, &s);
	if (e != CUSTOS_OK) {
		work_free(ei, in, &ei->ct_qin);
		req_scratch_free(ei);
		goto fail;
	}
	uint64_t t0 = tm_mono_ns();
	if (k == EBODY_JSON) {
		e = egress_inspect_json_doc(r->eng->eng, s, &ei->req, body, &ei->tmp, out,
		                            &ei->qsum);
	} else if (k == EBODY_NDJSON) {
		size_t at = 0;
		while (e == CUSTOS_OK && at < body.len) {
			const char *nl = memchr(body.ptr + at, '\n', body.len - at);
			size_t end = nl ? (size_t)(nl - body.ptr) : body.len;
			e = egress_inspect_json_doc(r->eng->eng, s, &ei->req,
			                            span_of(body.ptr + at, end - at), &ei->tmp, out,
			                            &ei->qsum);
			if (e == CUSTOS_OK && nl)
				e = buf_append_byte(out, '\n');
			at = nl ? end + 1 : end;
		}
	} else if (k == EBODY_FORM) {
		e = egress_inspect_form(r->eng->eng, s, &ei->req, body, &ei->tmp, out, &ei->qsum);
	} else if (mp) {
		e = egress_inspect_multipart(r->eng->eng, s, &ei->req,
		                             span_of(ei->boundary, ei->blen), body, &ei->tmp,
		                             &ei->dec, &ei->msk, out, &ei->qsum);
	} else {
		inspect_summary one;
		e = inspect_redact_text(r->eng->eng, s, &ei->req, body, out, &one);
		inspect_summary_add(&ei->qsum, &one);
	}
	ei->t_ns += tm_mono_ns() - t0;
	work_free(ei, in, &ei->ct_qin); /* out stays counted until it is freed (release) */
	req_scratch_free(ei);
	if (e == CUSTOS_OK)
		return 0;
	if (e == CUSTOS_ERR_DENIED) {
		const char *n =
		        inspect_engine_detector_name(r->eng->eng, (unsigned)ei->qsum.deny_detector);
		snprintf(r->reason, sizeof(r->reason),
		         "request body denied by content inspection: %s detected", n ? n : "?");
		r->decision = "deny";
		return 403;
	}
	if (mp && e == CUSTOS_ERR_UNSUPPORTED) {
		snprintf(r->reason, sizeof(r->reason),
		         "request body under %s not inspected: %s; refused (fail closed)",
		         ei->mptype, err_msg());
		r->decision = "deny";
		return 415;
	}
	if (mp && (e == CUSTOS_ERR_PARSE || e == CUSTOS_ERR_LIMIT)) {
		snprintf(r->reason, sizeof(r->reason),
		         "request body under %s %s: %s; refused, it cannot be inspected (fail "
		         "closed)",
		         ei->mptype,
		         e == CUSTOS_ERR_PARSE ? "is malformed" : "is past an inspection limit",
		         err_msg());
		r->decision = "deny";
		return 400;
	}
	if (k == EBODY_FORM && e == CUSTOS_ERR_PARSE) {
		snprintf(r->reason, sizeof(r->reason),
		         "request body under application/x-www-form-urlencoded is not valid "
		         "percent-encoding: %s; refused, it cannot be inspected (fail closed)",
		         err_msg());
		r->decision = "deny";
		return 400;
	}
	if (k != EBODY_RAW && k != EBODY_FORM && (e == CUSTOS_ERR_PARSE || e == CUSTOS_ERR_LIMIT)) {
		snprintf(r->reason, sizeof(r->reason),
		         "request body under a JSON media type %s: %s; refused, it cannot be "
		         "inspected (fail closed)",
		         e == CUSTOS_ERR_PARSE ? "is not valid JSON"
		                               : "is past an inspection limit",
		         err_msg());
		r->decision = "deny";
		return 400;
	}
fail:
	log_error("egress: request inspection: %s", err_msg());
	snprintf(r->reason, sizeof(r->reason), "content inspection failed");
	r->decision = "error";
	return 500;
}

/* ---------------------------------------------------------------------------------------------
 * Audit
 */
void egress_inspect_audit(erec *r, const char **decision, const char **reason,
                          const audit_finding **f, size_t *nf, const char **summary, uint64_t *ns)
{
	struct einsp *ei = r->ei;
	const audit_finding *rf = NULL;
	size_t nrf = 0;
	const char *rs = NULL;
	uint64_t rns = 0;

	*f = NULL;
	*nf = 0;
	*summary = NULL;
	*ns = 0;
	if (ei == NULL && r->ip == NULL)
		return;
	bool stream = r->ip && (ei == NULL || ei->mode == EM_STREAM);
	if (r->ip) {
		ingress_inspect_outcome(r->ip, decision, reason);
		ingress_inspect_audit(r->ip, &rf, &nrf, &rs, &rns);
	}
	if (ei == NULL) { /* not expected: the raw stream alone */
		if (rs && strncmp(rs, "prompt:off ", 11) == 0)
			rs += 11;
		*f = rf;
		*nf = nrf;
		*summary = rs;
		*ns = rns;
		return;
	}
	if (ei->denied) {
		*decision = "deny";
		*reason = ei->why;
	}
	/* Findings: the raw stream's (by name) and this file's (request, JSON response). */
	size_t k = 0;
	for (size_t i = 0; stream && i < nrf && k < INSPECT_MAX_DETECTORS; i++)
		ei->f[k++] = rf[i];
	unsigned nd = inspect_engine_detector_count(r->eng->eng);
	for (unsigned d = 0; d < nd && d < INSPECT_MAX_DETECTORS; d++) {
		uint64_t c = (uint64_t)ei->qsum.count[d] + ei->rsum.count[d];
		if (c == 0)
			continue;
		const char *name = inspect_engine_detector_name(r->eng->eng, d);
		size_t j = 0;
		while (j < k && strcmp(ei->f[j].type, name) != 0)
			j++;
		if (j < k) {
			ei->f[j].count += c;
		} else if (k < INSPECT_MAX_DETECTORS) {
			ei->f[k].type = name;
			ei->f[k].count = c;
			k++;
		}
	}
	*f = ei->f;
	*nf = k;
	*ns = ei->t_ns + (stream ? rns : 0);
	/* "request:ACTION response:ACTION", each "off" when the rule does not inspect it. */
	const char *resp = "off";
	if (ei->resp_on) {
		if (stream && rs && strstr(rs, "response:"))
			resp = strstr(rs, "response:") + 9;
		else
			resp = ei->denied ? "deny"
			                  : inspect_action_name((inspect_action)ei->rsum.worst);
	}
	const char *req = "off";
	if (ei->req_on)
		req = ei->req_done ? inspect_action_name((inspect_action)ei->qsum.worst) : "none";
	if (ei->req_on)
		snprintf(ei->summary, sizeof(ei->summary), "request:%s response:%s", req, resp);
	else
		snprintf(ei->summary, sizeof(ei->summary), "response:%s", resp);
	*summary = ei->summary;
}

void egress_inspect_outcome(erec *r, const char **decision, const char **reason)
{
	if (r->ei && r->ei->denied) {
		*decision = "deny";
		*reason = r->ei->why;
		return;
	}
	if (r->ip)
		ingress_inspect_outcome(r->ip, decision, reason);
}

custos_err egress_inspect_request_move(erec *r, buf *out, buf *dst)
{
	struct einsp *ei = ei_get(r);
	bool refused = false;
	size_t n = buf_used(out);
	ENSURE(buf_used(dst) <= SIZE_MAX - n, CUSTOS_ERR_LIMIT, "request too large");
	custos_err e = grow_counted(ei, dst, &ei->ct_fwd, n, buf_used(dst) + n, &refused);
	if (e == CUSTOS_OK)
		e = buf_append_span(dst, buf_span(out));
	work_free(ei, out, &ei->ct_qout);
	return e;
}

void egress_inspect_unhold(erec *r)
{
	struct einsp *ei = r->ei;
	if (ei == NULL)
		return;
	/* Its own buffers are freed with their counts; what the caller's buffers counted (a
	 * request body, its masked copy, dst) is given back: the caller frees them before. */
	work_free(ei, &ei->hold, &ei->ct_hold);
	work_free(ei, &ei->out, &ei->ct_out);
	work_free(ei, &ei->tmp, &ei->ct_tmp);
	work_free(ei, &ei->dec, &ei->ct_dec);
	work_free(ei, &ei->msk, &ei->ct_msk);
	held_give(ei, &ei->ct_qin);
	held_give(ei, &ei->ct_qout);
	held_give(ei, &ei->ct_fwd);
	held_give(ei, &ei->ct_form);
	credit_drop(ei);
#ifdef CUSTOS_TEST_HOOKS
	/* Test builds only (docs/CONTRIBUTING.md "Test hooks"). */
	if (ei->srv && getenv("CUSTOS_TEST_EGRESS_HELD_LOG"))
		log_info("egress: test hook: %s ended: %llu bytes held for inspection", r->id,
		         (unsigned long long)atomic_load(&ei->srv->insp_held));
#endif
}

/* The mask of a segment or value masked whole: "[REDACTED]", percent-encoded. */
#define AUD_MASK_WHOLE "%5BREDACTED%5D"

/* out = path (no query) with every segment masked whole. */
static custos_err aud_mask_whole(span path, buf *out)
{
	buf_reset(out);
	for (size_t i = 0; i < path.len;) {
		if (path.ptr[i] == '/') {
			GUARD(buf_append_byte(out, '/'));
			i++;
			continue;
		}
		while (i < path.len && path.ptr[i] != '/')
			i++;
		GUARD(buf_append(out, AUD_MASK_WHOLE, sizeof(AUD_MASK_WHOLE) - 1));
	}
	return CUSTOS_OK;
}

/* out = path (no query) with each segment in which a detector of the profile finds something
 * masked; false when it cannot be read (out then undefined). */
static bool aud_mask_path(const struct eeng *e, inspect_scratch *sc, const inspect_profile *pf,
                          span path, buf *out)
{
	inspect_summary sum;
	buf dec;
	int rdet = -1;
	char aud[sizeof(((erec *)0)->path)];

	inspect_summary_init(&sum);
	buf_init(&dec, path.len + 1);
	custos_err err =
	        egress_inspect_path(e->eng, sc, pf, path, &dec, &sum, &rdet, aud, sizeof(aud));
	buf_free(&dec);
	if (err != CUSTOS_OK) {
		err_clear();
		return false;
	}
	buf_reset(out);
	return buf_append(out, aud, strlen(aud)) == CUSTOS_OK;
}

void egress_inspect_audit_path(egress_server *s, erec *r)
{
	if (r->path_final || r->path[0] == '\0')
		return;
	r->path_final = true;
	struct eeng *e = NULL;
	if (r->eng != NULL) { /* the policy allowed it, then something else refused it */
		e = r->eng;
		atomic_fetch_add(&e->refs, 1);
	} else if (s->store != NULL) {
		policy *p = policy_store_get(s->store);
		if (p == NULL)
			return;
		e = eng_get(s, p);
		policy_unref(p);
		if (e == NULL)
			log_error("egress: inspection engine for an audited path: %s", err_msg());
	} else {
		return; /* no policy: no detector says what a value is (docs/EGRESS.md) */
	}
	/* Every detector of the policy: the path's findings mask their segment (log: the path
	 * itself is never rewritten), the query's are masked in place (redact). */
	inspect_profile pl, pq;
	memset(&pl, 0, sizeof(pl));
	memset(&pq, 0, sizeof(pq));
	unsigned nd = e ? inspect_engine_detector_count(e->eng) : 0;
	for (unsigned i = 0; i < nd && i < INSPECT_MAX_DETECTORS; i++)
		if (inspect_engine_has(e->eng, i)) {
			inspect_profile_set(&pl, i, INSPECT_ACT_LOG);
			inspect_profile_set(&pq, i, INSPECT_ACT_REDACT);
		}
	if (e != NULL && !inspect_profile_active(&pl)) {
		egress_eng_unref(e);
		return; /* no detector in the policy: nothing it calls a value */
	}
	size_t len = strlen(r->path);
	/* Cut to fit r->path: the last segment or parameter may be a value cut short, which a
	 * detector may no longer recognise. */
	bool cut = len == sizeof(r->path) - 1;
	const char *qm = memchr(r->path, '?', len);
	span path = span_of(r->path, qm ? (size_t)(qm - r->path) : len);
	span q = qm ? span_of(qm + 1, len - path.len - 1) : span_of("", 0);
	if (cut && qm != NULL) {
		const char *amp = q.len ? memrchr(q.ptr, '&', q.len) : NULL;
		q.len = amp ? (size_t)(amp - q.ptr) : 0;
	}
	bool whole_last = cut && qm == NULL;
	if (whole_last) {
		/* cut on a '/' that leaves room for the mask: what follows it is masked whole */
		size_t room = sizeof(r->path) - sizeof(AUD_MASK_WHOLE);
		const char *sl = memrchr(path.ptr, '/', path.len < room ? path.len : room);
		path.len = sl ? (size_t)(sl - path.ptr) + 1 : 0;
	}
	buf out, dec;
	buf_init(&out, 16 * sizeof(r->path)); /* a segment masked whole: 14 bytes a byte at most */
	buf_init(&dec, work_max(sizeof(r->path)));
	inspect_scratch *sc = NULL;
	bool ok = e != NULL && scratch_get(e, &sc) == CUSTOS_OK;
	if (!ok)
		err_clear();
	if (ok)
		ok = aud_mask_path(e, sc, &pl, path, &out);
	if (ok && whole_last)
		ok = buf_append(&out, AUD_MASK_WHOLE, sizeof(AUD_MASK_WHOLE) - 1) == CUSTOS_OK;
	if (ok && q.len) {
		inspect_summary sum;
		inspect_summary_init(&sum);
		size_t at = buf_used(&out);
		if (buf_append_byte(&out, '?') != CUSTOS_OK ||
		    egress_inspect_form(e->eng, sc, &pq, q, &dec, &out, &sum) != CUSTOS_OK) {
			err_clear();
			out.len = out.off + at; /* the query unread: not audited */
		}
	}
	/* Nothing tells a value from the rest: every segment masked, no query (out has room for
	 * the mask of every byte of r->path). */
	if (!ok && aud_mask_whole(span_of(r->path, qm ? (size_t)(qm - r->path) : len), &out) !=
	                   CUSTOS_OK) {
		err_clear();
		out.len = out.off; /* cannot happen; audited without a path rather than as sent */
	}
	size_t n = buf_used(&out) < sizeof(r->path) - 1 ? buf_used(&out) : sizeof(r->path) - 1;
	memcpy(r->path, buf_ptr(&out), n);
	r->path[n] = '\0';
	buf_free(&out);
	buf_free(&dec);
	egress_eng_unref(e);
}

void egress_inspect_release(erec *r)
{
	ingress_inspect_free(r->ip);
	r->ip = NULL;
	egress_inspect_unhold(r);
	if (r->ei) {
		buf_free(&r->ei->hold);
		buf_free(&r->ei->out);
		buf_free(&r->ei->tmp);
		buf_free(&r->ei->dec);
		buf_free(&r->ei->msk);
		buf_free(&r->ei->target);
		free(r->ei);
		r->ei = NULL;
	}
	egress_eng_unref(r->eng);
	r->eng = NULL;
}

void egress_eng_drop(egress_server *s)
{
	egress_eng_unref(s->eng_cur);
	s->eng_cur = NULL;
}
