/*
 * Inspection engine: compiles the enabled built-in detectors and the policy's custom detectors
 * into one Hyperscan streaming database (once per policy; immutable and shared afterwards),
 * plus names, masks, per-thread scratch, profiles and summaries.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/lazylib.h"
#include "inspect_int.h"

static const char *const action_names[] = { "none", "log", "redact", "deny" };

const char *inspect_builtin_name(unsigned id)
{
	return id < INSPECT_BUILTIN_COUNT ? det_builtin_names[id] : NULL;
}

const char *const *inspect_builtin_names(size_t *n)
{
	*n = INSPECT_BUILTIN_COUNT;
	return det_builtin_names;
}

custos_err inspect_builtin_lookup(span name, unsigned *id)
{
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++) {
		if (span_eq_cstr(name, det_builtin_names[i])) {
			*id = i;
			return CUSTOS_OK;
		}
	}
	return err_set(CUSTOS_ERR_NOTFOUND, "unknown detector '%.*s'",
	               (int)(name.len > 64 ? 64 : name.len), name.ptr);
}

custos_err inspect_validator_parse(span name, inspect_validator *out)
{
	if (span_eq_cstr(name, "none"))
		*out = INSPECT_VALIDATE_NONE;
	else if (span_eq_cstr(name, "luhn"))
		*out = INSPECT_VALIDATE_LUHN;
	else if (span_eq_cstr(name, "mod97"))
		*out = INSPECT_VALIDATE_MOD97;
	else
		return err_set(CUSTOS_ERR_INVAL,
		               "unknown validator (expected luhn, mod97 or none)");
	return CUSTOS_OK;
}

custos_err inspect_action_parse(span name, inspect_action *out)
{
	for (unsigned i = INSPECT_ACT_LOG; i <= INSPECT_ACT_DENY; i++) {
		if (span_eq_cstr(name, action_names[i])) {
			*out = (inspect_action)i;
			return CUSTOS_OK;
		}
	}
	return err_set(CUSTOS_ERR_INVAL,
	               "unknown inspection action (expected deny, redact or log)");
}

const char *inspect_action_name(inspect_action a)
{
	return (unsigned)a < CUSTOS_ARRAY_LEN(action_names) ? action_names[a] : "none";
}

custos_err inspect_name_check(span name)
{
	ENSURE(name.len > 0 && name.len < INSPECT_NAME_MAX, CUSTOS_ERR_INVAL,
	       "detector name must be 1..%d bytes", INSPECT_NAME_MAX - 1);
	for (size_t i = 0; i < name.len; i++) {
		unsigned char c = (unsigned char)name.ptr[i];
		ENSURE(c > ' ' && c != 0x7f, CUSTOS_ERR_INVAL,
		       "detector name contains a space or control character");
	}
	unsigned id = 0;
	if (inspect_builtin_lookup(name, &id) == CUSTOS_OK)
		return err_set(CUSTOS_ERR_INVAL, "'%s' is a built-in detector name",
		               det_builtin_names[id]);
	err_clear();
	return CUSTOS_OK;
}

/* Width of an expression as Hyperscan will compile it; CUSTOS_ERR_INVAL with its message. */
static custos_err expr_width(const char *pattern, unsigned flags, unsigned *min_w, unsigned *max_w)
{
	hs_expr_info_t *info = NULL;
	hs_compile_error_t *cerr = NULL;
	if (hs_expression_info(pattern, flags, &info, &cerr) != HS_SUCCESS) {
		custos_err e = err_set(CUSTOS_ERR_INVAL, "pattern: %s",
		                       cerr && cerr->message ? cerr->message : "invalid");
		hs_free_compile_error(cerr);
		return e;
	}
	*min_w = info->min_width;
	*max_w = info->max_width;
	free(info);
	return CUSTOS_OK;
}

#define CUSTOM_FLAGS HS_FLAG_SOM_LEFTMOST
#define ENGINE_MODE  (HS_MODE_STREAM | HS_MODE_SOM_HORIZON_SMALL)

/* One expression compiled alone, in the engine's mode: Hyperscan refuses some expressions only
 * there ("Pattern is too large."), after hs_expression_info has passed them. */
static custos_err expr_compile(const char *pattern, unsigned flags)
{
	hs_database_t *db = NULL;
	hs_compile_error_t *cerr = NULL;
	unsigned id = 0;
	if (hs_compile_multi(&pattern, &flags, &id, 1, ENGINE_MODE, NULL, &db, &cerr) !=
	    HS_SUCCESS) {
		custos_err e = err_set(CUSTOS_ERR_INVAL, "%s",
		                       cerr && cerr->message ? cerr->message : "does not compile");
		hs_free_compile_error(cerr);
		return e;
	}
	hs_free_database(db);
	return CUSTOS_OK;
}

/* A pattern is matched against the normalised view, which never holds a character the view
 * drops or rewrites (a no-break space is ' ' there, a fullwidth `Ｆ` is `F`): a pattern that
 * spells one out could never match it, so it is refused, naming what the view writes. */
static custos_err pattern_chars_ok(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = p[i] < 0x80 ? 1 : inspect_norm_decode(p + i, n - i, &cp);
		if (p[i] < 0x80 || l == 0 || l == INSPECT_NORM_SHORT) {
			i++;
			continue;
		}
		int c = inspect_norm_class(cp);
		const uint8_t *mb = NULL;
		size_t mn = inspect_norm_multi(c, &mb);
		if (c == INSPECT_NORM_DROP)
			return err_set(CUSTOS_ERR_INVAL,
			               "pattern: U+%04X is never in the text detectors see (the "
			               "normalised view drops it); leave it out",
			               (unsigned)cp);
		if (c != INSPECT_NORM_KEEP)
			return err_set(CUSTOS_ERR_INVAL,
			               "pattern: U+%04X is never in the text detectors see (the "
			               "normalised view writes it '%.*s'); write that instead",
			               (unsigned)cp, mn > 0 ? (int)mn : 1,
			               mn > 0 ? (const char *)mb
			                      : (const char *)&(char){ (char)c });
		i += l;
	}
	return CUSTOS_OK;
}

custos_err inspect_pattern_check(const char *pattern, unsigned *max_width)
{
	ENSURE(pattern != NULL, CUSTOS_ERR_INVAL, "pattern: missing");
	size_t len = strnlen(pattern, INSPECT_MAX_PATTERN_LEN + 1);
	ENSURE(len > 0 && len <= INSPECT_MAX_PATTERN_LEN, CUSTOS_ERR_INVAL,
	       "pattern: must be 1..%d bytes", INSPECT_MAX_PATTERN_LEN);
	GUARD(pattern_chars_ok((const uint8_t *)pattern, len));
	unsigned mn = 0, mx = 0;
	GUARD(expr_width(pattern, CUSTOM_FLAGS, &mn, &mx));
	ENSURE(mn > 0, CUSTOS_ERR_INVAL, "pattern: can match empty text");
	if (max_width != NULL)
		*max_width = mx;
	return CUSTOS_OK;
}

/* The keyword as detectors see text: through the normalised view of a block (inspect_norm.c),
 * so that one written with a no-break space, a fullwidth letter, an invisible character or a
 * look-alike letter in a word that mixes scripts matches the text it stands for (the view
 * never holds those characters: a keyword that kept them could never match). */
static custos_err keyword_view(const uint8_t *p, size_t n, buf *v)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = p[i] < 0x80 ? 1 : inspect_norm_decode(p + i, n - i, &cp);
		if (p[i] < 0x80 || l == 0 || l == INSPECT_NORM_SHORT) {
			GUARD(buf_append_byte(v, p[i]));
			i++;
			continue;
		}
		int c = inspect_norm_class(cp);
		if (c == INSPECT_NORM_KEEP && inspect_norm_word(cp) == INSPECT_WORD_LOOKALIKE) {
			inspect_norm_wordinfo w;
			inspect_norm_word_at(p, n, 0, i, &w);
			int m = w.latin ? inspect_norm_confusable(cp) : 0;
			if (m != 0)
				c = m;
		}
		const uint8_t *mb = NULL;
		size_t mn = inspect_norm_multi(c, &mb);
		if (c == INSPECT_NORM_KEEP)
			GUARD(buf_append(v, p + i, l));
		else if (mn > 0)
			GUARD(buf_append(v, mb, mn));
		else if (c != INSPECT_NORM_DROP)
			GUARD(buf_append_byte(v, (uint8_t)c));
		i += l;
	}
	return CUSTOS_OK;
}

/* A keyword as a case-insensitive literal expression of its normalised view, on word
 * boundaries where it starts or ends with a word character. Returns a malloc'd pattern. */
static custos_err keyword_pattern(const char *keyword, char **out)
{
	size_t kn = strnlen(keyword, INSPECT_MAX_PATTERN_LEN + 1);
	ENSURE(kn > 0 && kn <= INSPECT_MAX_PATTERN_LEN, CUSTOS_ERR_INVAL,
	       "keyword: must be 1..%d bytes", INSPECT_MAX_PATTERN_LEN);
	buf kv;
	buf_init(&kv, 4 * kn + 16);
	custos_err ve = keyword_view((const uint8_t *)keyword, kn, &kv);
	if (ve == CUSTOS_OK && buf_used(&kv) == 0)
		ve = err_set(CUSTOS_ERR_INVAL,
		             "keyword: only characters the normalised view drops (invisible)");
	if (ve != CUSTOS_OK) {
		buf_free(&kv);
		return ve;
	}
	const uint8_t *kw = buf_ptr(&kv);
	size_t n = buf_used(&kv);
	buf b;
	buf_init(&b, 4 * n + 16);
	custos_err e = CUSTOS_OK;
#define WORD(c)                                                                                    \
	(((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9') || \
	 (c) == '_')
	if (WORD(kw[0]))
		e = buf_append_cstr(&b, "\\b");
	for (size_t i = 0; e == CUSTOS_OK && i < n; i++) {
		uint8_t c = (uint8_t)kw[i];
		if (WORD(c))
			e = buf_append_byte(&b, c);
		else
			e = buf_printf(&b, "\\x%02x", c);
	}
	if (e == CUSTOS_OK && WORD(kw[n - 1]))
		e = buf_append_cstr(&b, "\\b");
#undef WORD
	const char *s;
	if (e == CUSTOS_OK)
		e = buf_cstr(&b, &s);
	buf_free(&kv);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return e;
	}
	*out = (char *)b.data; /* buf_init left off == 0: data is the string */
	return CUSTOS_OK;
}

custos_err inspect_pattern_compile(const char *pattern, unsigned *max_width)
{
	GUARD(inspect_pattern_check(pattern, max_width));
	custos_err e = expr_compile(pattern, CUSTOM_FLAGS);
	return e == CUSTOS_OK ? e : err_wrap(e, "pattern");
}

custos_err inspect_keyword_compile(const char *keyword, unsigned *max_width)
{
	ENSURE(keyword != NULL, CUSTOS_ERR_INVAL, "keyword: missing");
	char *kp = NULL;
	GUARD(keyword_pattern(keyword, &kp));
	unsigned mn = 0, mx = 0;
	custos_err e = expr_width(kp, CUSTOM_FLAGS | HS_FLAG_CASELESS, &mn, &mx);
	if (e == CUSTOS_OK)
		e = expr_compile(kp, CUSTOM_FLAGS | HS_FLAG_CASELESS);
	free(kp);
	if (e != CUSTOS_OK)
		return err_wrap(e, "keyword");
	if (max_width != NULL)
		*max_width = mx;
	return CUSTOS_OK;
}

typedef struct build {
	const char **pat;
	unsigned *flags, *ids;
	char **owned; /* generated keyword patterns */
	size_t n, n_owned, cap;
	int at; /* the detector being built, or that the set's failure names; -1 for none */
} build;

static void build_free(build *b)
{
	for (size_t i = 0; i < b->n_owned; i++)
		free(b->owned[i]);
	free(b->owned);
	free(b->pat);
	free(b->flags);
	free(b->ids);
}

static custos_err add_expr(inspect_engine *e, build *b, const char *pattern, unsigned flags,
                           const inspect_expr *x, bool custom)
{
	ENSURE(e->n_expr < b->cap, CUSTOS_ERR_INTERNAL, "inspect: expression table overflow");
	unsigned mn = 0, mx = 0;
	if (x->kind != DET_TERMINATOR) {
		GUARD(expr_width(pattern, flags, &mn, &mx));
		/* Built-ins are bounded by construction; a custom pattern is held back for at
		 * most INSPECT_MAX_PATTERN_WIDTH (inspect.h). */
		if (!custom && (mx == UINT_MAX || mx > 4096))
			return err_set(CUSTOS_ERR_INTERNAL, "built-in detector '%s' is unbounded",
			               e->name[x->detector]);
		if (mx > INSPECT_MAX_PATTERN_WIDTH)
			mx = INSPECT_MAX_PATTERN_WIDTH;
	}
	if (x->kind != DET_TERMINATOR)
		mx += x->back; /* the region may start this far before the anchor */
	unsigned idx = e->n_expr++;
	inspect_expr *slot = &e->expr[idx];
	*slot = *x;
	slot->width = mx;
	slot->next = -1;
	if (x->kind != DET_TERMINATOR && mx > e->width[x->detector])
		e->width[x->detector] = mx;
	e->compiled |= UINT64_C(1) << x->detector;
	if (x->kind == DET_ANCHOR)
		e->has_region[x->detector] = true;
	if (x->kind == DET_CONTEXT)
		e->needs_ctx[x->detector] = true;
	int a = det_scan_anchor_of(pattern, flags);
	if (a >= 0) {
		/* Matched by detect_numeric.c, not compiled: chained per anchor for the
		 * fan-out. */
		if (e->scan[a] < 0) {
			e->scan[a] = (int32_t)idx;
		} else {
			unsigned last = (unsigned)e->scan[a];
			while (e->expr[last].next >= 0)
				last = (unsigned)e->expr[last].next;
			e->expr[last].next = (int32_t)idx;
		}
		return CUSTOS_OK;
	}
	/* The same pattern for several detectors (the numeric anchor) is compiled once; its
	 * match is fanned out along the chain. */
	for (size_t k = 0; k < b->n; k++) {
		if (b->flags[k] == flags && strcmp(b->pat[k], pattern) == 0) {
			unsigned last = b->ids[k];
			while (e->expr[last].next >= 0)
				last = (unsigned)e->expr[last].next;
			e->expr[last].next = (int32_t)idx;
			return CUSTOS_OK;
		}
	}
	b->pat[b->n] = pattern;
	b->flags[b->n] = flags;
	b->ids[b->n] = idx;
	b->n++;
	return CUSTOS_OK;
}

static void set_name(inspect_engine *e, unsigned id, span name)
{
	memcpy(e->name[id], name.ptr, name.len);
	e->name[id][name.len] = '\0';
	int n = snprintf(e->mask[id], sizeof(e->mask[id]), "[REDACTED:");
	for (size_t i = 0; i < name.len; i++) {
		char c = name.ptr[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			c = '_'; /* JSON- and SSE-safe: no quote, backslash or non-ASCII in a mask */
		e->mask[id][n++] = c;
	}
	e->mask[id][n++] = ']';
	e->mask[id][n] = '\0';
	e->mask_len[id] = (size_t)n;
}

static custos_err engine_build(inspect_engine *e, const inspect_engine_opts *o, build *b)
{
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++)
		set_name(e, i, span_cstr(det_builtin_names[i]));
	size_t cap = det_builtin_n_specs;
	for (size_t c = 0; c < o->n_custom; c++) {
		const inspect_custom_def *d = &o->custom[c];
		unsigned id = INSPECT_BUILTIN_COUNT + (unsigned)c;
		b->at = (int)id;
		ENSURE(d->name != NULL, CUSTOS_ERR_INVAL, "custom detector %zu has no name", c);
		span nm = span_cstr(d->name);
		custos_err r = inspect_name_check(nm);
		if (r != CUSTOS_OK)
			return err_wrap(r, "custom detector '%.*s'",
			                (int)(nm.len > 64 ? 64 : nm.len), nm.ptr);
		for (unsigned k = INSPECT_BUILTIN_COUNT; k < id; k++)
			ENSURE(!span_eq_cstr(nm, e->name[k]), CUSTOS_ERR_INVAL,
			       "custom detector '%s' defined twice", d->name);
		set_name(e, id, nm);
		if (d->unused)
			continue;
		ENSURE(d->n_patterns + d->n_keywords > 0, CUSTOS_ERR_INVAL,
		       "custom detector '%s' has neither patterns nor keywords", d->name);
		ENSURE(d->n_patterns + d->n_keywords <= INSPECT_MAX_CUSTOM_EXPRS, CUSTOS_ERR_LIMIT,
		       "custom detector '%s' has more than %d patterns and keywords", d->name,
		       INSPECT_MAX_CUSTOM_EXPRS);
		cap += d->n_patterns + d->n_keywords;
	}
	b->at = -1;
	b->cap = cap;
	b->pat = calloc(cap, sizeof(*b->pat));
	b->flags = calloc(cap, sizeof(*b->flags));
	b->ids = calloc(cap, sizeof(*b->ids));
	b->owned = calloc(cap, sizeof(*b->owned));
	e->expr = calloc(cap, sizeof(*e->expr));
	ENSURE(b->pat && b->flags && b->ids && b->owned && e->expr, CUSTOS_ERR_NOMEM,
	       "inspect: out of memory");

	for (size_t i = 0; i < det_builtin_n_specs; i++) {
		const det_spec *s = &det_builtin_specs[i];
		if (!(o->builtins & (UINT64_C(1) << s->detector)))
			continue;
		b->at = (int)s->detector;
		inspect_expr x = { .detector = s->detector,
			           .kind = s->kind,
			           .cls = s->cls,
			           .max = s->max,
			           .back_cls = s->back_cls,
			           .back = s->back,
			           .validate = s->validate };
		GUARD(add_expr(e, b, s->pattern, HS_FLAG_SOM_LEFTMOST, &x, false));
	}
	for (size_t c = 0; c < o->n_custom; c++) {
		const inspect_custom_def *d = &o->custom[c];
		if (d->unused)
			continue;
		b->at = (int)(INSPECT_BUILTIN_COUNT + c);
		inspect_expr x = { .detector = (uint16_t)(INSPECT_BUILTIN_COUNT + c),
			           .kind = DET_MATCH };
		switch (d->validator) {
		case INSPECT_VALIDATE_LUHN:
			x.validate = det_validate_custom_luhn;
			break;
		case INSPECT_VALIDATE_MOD97:
			x.validate = det_validate_custom_mod97;
			break;
		default:
			x.validate = det_validate_custom_none;
			break;
		}
		for (size_t k = 0; k < d->n_patterns; k++) {
			custos_err r = inspect_pattern_check(d->patterns[k], NULL);
			if (r != CUSTOS_OK)
				return err_wrap(r, "custom detector '%s' pattern %zu", d->name,
				                k + 1);
			GUARD(add_expr(e, b, d->patterns[k], CUSTOM_FLAGS, &x, true));
		}
		/* Keywords: context for the patterns, or the matches themselves. */
		x.validate = det_validate_custom_keyword;
		if (d->n_patterns > 0)
			x.kind = DET_CONTEXT;
		for (size_t k = 0; k < d->n_keywords; k++) {
			char *kp = NULL;
			custos_err r = keyword_pattern(d->keywords[k], &kp);
			if (r != CUSTOS_OK)
				return err_wrap(r, "custom detector '%s' keyword %zu", d->name,
				                k + 1);
			b->owned[b->n_owned++] = kp;
			GUARD(add_expr(e, b, kp, CUSTOM_FLAGS | HS_FLAG_CASELESS, &x, true));
		}
	}
	b->at = -1;
	if (b->n == 0)
		return CUSTOS_OK;
	hs_compile_error_t *cerr = NULL;
	if (hs_compile_multi(b->pat, b->flags, b->ids, (unsigned)b->n, ENGINE_MODE, NULL, &e->db,
	                     &cerr) != HS_SUCCESS) {
		int at = cerr ? cerr->expression : -1;
		if (at >= 0 && (size_t)at < b->n)
			b->at = (int)e->expr[b->ids[at]].detector;
		custos_err r = err_set(
		        CUSTOS_ERR_INVAL, "compiling detector '%s': %s",
		        at >= 0 && (size_t)at < b->n ? e->name[e->expr[b->ids[at]].detector] : "?",
		        cerr && cerr->message ? cerr->message : "failed");
		hs_free_compile_error(cerr);
		return r;
	}
	return CUSTOS_OK;
}

static custos_err engine_new(const inspect_engine_opts *o, inspect_engine **out, int *failed)
{
	*out = NULL;
	*failed = -1;
	ENSURE(o != NULL, CUSTOS_ERR_INVAL, "inspect: no options");
	ENSURE(o->n_custom <= INSPECT_MAX_CUSTOM, CUSTOS_ERR_LIMIT,
	       "inspect: more than %d custom detectors", INSPECT_MAX_CUSTOM);
	ENSURE(o->n_custom == 0 || o->custom != NULL, CUSTOS_ERR_INVAL, "inspect: custom missing");
	GUARD(lazylib_hyperscan()); /* libhs.so.5 is loaded now, or the error names it */
	if (hs_valid_platform() != HS_SUCCESS)
		return err_set(CUSTOS_ERR_UNSUPPORTED, "inspect: this CPU lacks SSSE3 (Hyperscan)");
	inspect_engine *e = calloc(1, sizeof(*e));
	ENSURE(e != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
	e->n_det = INSPECT_BUILTIN_COUNT + (unsigned)o->n_custom;
	for (unsigned a = 0; a < DET_SCAN_N; a++)
		e->scan[a] = -1;
	build b = { .at = -1 };
	custos_err r = engine_build(e, o, &b);
	build_free(&b);
	if (r != CUSTOS_OK) {
		*failed = b.at;
		inspect_engine_free(e);
		return r;
	}
	*out = e;
	return CUSTOS_OK;
}

custos_err inspect_engine_new(const inspect_engine_opts *o, inspect_engine **out)
{
	int failed;
	return engine_new(o, out, &failed);
}

custos_err inspect_engine_new_at(const inspect_engine_opts *o, inspect_engine **out, int *failed)
{
	return engine_new(o, out, failed);
}

void inspect_engine_free(inspect_engine *e)
{
	if (e == NULL)
		return;
	hs_free_database(e->db);
	free(e->expr);
	free(e);
}

unsigned inspect_engine_detector_count(const inspect_engine *e)
{
	return e->n_det;
}

const char *inspect_engine_detector_name(const inspect_engine *e, unsigned id)
{
	return id < e->n_det ? e->name[id] : NULL;
}

span inspect_engine_detector_mask(const inspect_engine *e, unsigned id)
{
	return id < e->n_det ? span_of(e->mask[id], e->mask_len[id]) : span_of("", 0);
}

bool inspect_engine_has(const inspect_engine *e, unsigned id)
{
	return id < e->n_det && (e->compiled & (UINT64_C(1) << id));
}

custos_err inspect_engine_detector_find(const inspect_engine *e, span name, unsigned *id)
{
	for (unsigned i = 0; i < e->n_det; i++) {
		if (span_eq_cstr(name, e->name[i])) {
			*id = i;
			return CUSTOS_OK;
		}
	}
	return err_set(CUSTOS_ERR_NOTFOUND, "unknown detector '%.*s'",
	               (int)(name.len > 64 ? 64 : name.len), name.ptr);
}

custos_err inspect_scratch_new(const inspect_engine *e, inspect_scratch **out)
{
	*out = NULL;
	inspect_scratch *s = calloc(1, sizeof(*s));
	ENSURE(s != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
	if (e->db != NULL && hs_alloc_scratch(e->db, &s->hs) != HS_SUCCESS) {
		free(s);
		return err_set(CUSTOS_ERR_NOMEM, "inspect: cannot allocate Hyperscan scratch");
	}
	*out = s;
	return CUSTOS_OK;
}

void inspect_scratch_free(inspect_scratch *s)
{
	if (s == NULL)
		return;
	hs_free_scratch(s->hs);
	free(s);
}

void inspect_profile_merge(inspect_profile *into, const inspect_profile *other)
{
	for (size_t i = 0; i < INSPECT_MAX_DETECTORS; i++)
		if (other->action[i] > into->action[i])
			into->action[i] = other->action[i];
}

bool inspect_profile_active(const inspect_profile *p)
{
	for (size_t i = 0; i < INSPECT_MAX_DETECTORS; i++)
		if (p->action[i] != INSPECT_ACT_NONE)
			return true;
	return false;
}

size_t inspect_profile_holdback(const inspect_engine *e, const inspect_profile *p)
{
	size_t w = 0;
	for (unsigned i = 0; i < e->n_det; i++)
		if (p->action[i] != INSPECT_ACT_NONE && inspect_engine_has(e, i) && e->width[i] > w)
			w = e->width[i];
	return w == 0 ? 0 : w + 1; /* +1: a trailing \b is decided by the next byte */
}

void inspect_summary_init(inspect_summary *s)
{
	memset(s, 0, sizeof(*s));
	s->deny_detector = -1;
}

void inspect_summary_add(inspect_summary *into, const inspect_summary *s)
{
	for (size_t i = 0; i < INSPECT_MAX_DETECTORS; i++)
		into->count[i] += s->count[i];
	into->total += s->total;
	if (s->worst > into->worst)
		into->worst = s->worst;
	if (into->deny_detector < 0)
		into->deny_detector = s->deny_detector;
	into->redacted = into->redacted || s->redacted;
}

void inspect_summary_json(const inspect_engine *e, const inspect_summary *s, json_writer *w)
{
	json_obj_begin(w);
	for (unsigned i = 0; i < e->n_det; i++)
		if (s->count[i] > 0)
			json_kv_u64(w, e->name[i], s->count[i]);
	json_obj_end(w);
}

void inspect_findings_free(inspect_findings *f)
{
	free(f->items);
	f->items = NULL;
	f->n = f->cap = 0;
}
