/*
 * The scanner: Hyperscan in streaming mode over successive fragments, validators on the
 * candidates, regions for token-like values, deterministic overlap resolution, and release of
 * text that no detector can still claim (with REDACT findings masked). Block scans, raw-text
 * redaction and the JSON pass are built on the same stream.
 *
 * Invariant: after each feed every finding that starts before the stable point S is known.
 * A candidate not yet reported ends at or after `total`, so it starts at or after
 * total - width - 1 (width: the pattern's longest match plus how far its region may start
 * before it); a region not yet closed starts where it opened; so
 * S = min(total - holdback, start of each open region), moved back to a UTF-8 boundary.
 * Anchors inside a region already seen belong to it, so the same text gives the same findings
 * however it is split.
 */
#include <stdlib.h>
#include <string.h>

#include "inspect_int.h"
#include "inspect_stream_int.h"

#define WIN_SLACK 2 /* bytes kept before the oldest possible candidate: its prev byte, and one */

static int byte_at(const inspect_stream *st, uint64_t off)
{
	if (off < st->base || off >= st->total)
		return -1;
	return st->wp[off - st->base];
}

static const uint8_t *win_at(const inspect_stream *st, uint64_t off)
{
	return st->wp + (off - st->base);
}

static custos_err pend_add(inspect_stream *st, uint64_t off, size_t len, unsigned det, uint8_t conf)
{
	ENSURE(st->n_pend < INSPECT_MAX_FINDINGS, CUSTOS_ERR_LIMIT,
	       "inspect: more than %d findings pending", INSPECT_MAX_FINDINGS);
	if (st->n_pend == st->cap_pend) {
		size_t nc = st->cap_pend ? st->cap_pend * 2 : 16;
		inspect_finding *p = realloc(st->pend, nc * sizeof(*p));
		ENSURE(p != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		st->pend = p;
		st->cap_pend = nc;
	}
	st->pend[st->n_pend++] = (inspect_finding){ .offset = off,
		                                    .length = (uint32_t)len,
		                                    .detector = (uint16_t)det,
		                                    .confidence = conf,
		                                    .action = st->prof.action[det] };
	return CUSTOS_OK;
}

/* Runs the expression's validator on [from, to) and records the findings it accepts. */
static custos_err candidate(inspect_stream *st, const inspect_expr *x, uint64_t from, uint64_t to)
{
	if (from < st->base)
		from = st->base; /* a custom pattern longer than the window: its tail */
	if (to > st->total || to <= from)
		return err_set(CUSTOS_ERR_INTERNAL, "inspect: candidate outside the window");
	det_hit hits[DET_MAX_HITS];
	int prev = from == 0 ? -1 : byte_at(st, from - 1);
	int next = byte_at(st, to);
	size_t n = x->validate(win_at(st, from), (size_t)(to - from), prev, next, hits);
	for (size_t i = 0; i < n && i < DET_MAX_HITS; i++) {
		if (hits[i].len == 0 || hits[i].off + hits[i].len > to - from)
			return err_set(CUSTOS_ERR_INTERNAL, "inspect: validator span out of range");
		GUARD(pend_add(st, from + hits[i].off, hits[i].len, x->detector, hits[i].conf));
	}
	return CUSTOS_OK;
}

static custos_err region_close(inspect_stream *st, inspect_region *r, uint64_t end)
{
	bool cont = r->cont;
	r->open = false;
	r->cont = false;
	r->end = end;
	if (end <= r->start)
		return CUSTOS_OK;
	if (cont) /* the tail of an accepted value (a JWT longer than the maximum) */
		return pend_add(st, r->start, (size_t)(end - r->start),
		                st->e->expr[r->expr].detector, r->cont_conf);
	return candidate(st, &st->e->expr[r->expr], r->start, end);
}

/* A class region at its maximum whose value goes on (the next byte is in the class): the piece
 * so far is validated (or, once accepted, masked as a continuation) and the region goes on
 * from the cut, so that a value longer than the maximum (a 30 KiB JWT) is masked whole, never
 * released in pieces. A piece the validator does not accept closes the region as before. */
static custos_err region_piece(inspect_stream *st, inspect_region *r, const inspect_expr *x)
{
	if (r->cont) {
		GUARD(pend_add(st, r->start, (size_t)(r->scan - r->start), x->detector,
		               r->cont_conf));
		r->start = r->scan;
		return CUSTOS_OK;
	}
	size_t n0 = st->n_pend;
	GUARD(candidate(st, x, r->start, r->scan));
	const inspect_finding *last = st->n_pend > n0 ? &st->pend[st->n_pend - 1] : NULL;
	if (last && last->offset + last->length == r->scan) {
		r->cont = true;
		r->cont_conf = last->confidence;
		r->start = r->scan;
		return CUSTOS_OK;
	}
	r->open = false; /* validated above: closed as region_close would */
	r->end = r->scan;
	return CUSTOS_OK;
}

/* Extends an open region over the bytes up to `upto`: it closes at the first byte outside its
 * class, or at its maximum length. A terminator-closed region (CLS_ANY) that reaches its
 * maximum is reported as a finding and goes on from there (fail closed: the rest of an
 * unterminated key block is still masked). */
static custos_err region_advance(inspect_stream *st, inspect_region *r, uint64_t upto)
{
	const inspect_expr *x = &st->e->expr[r->expr];
	if (x->cls == CLS_ANY) {
		while (r->open && upto - r->start >= x->max) {
			uint64_t cut = r->start + x->max;
			GUARD(candidate(st, x, r->start, cut));
			r->start = cut;
		}
		r->scan = upto;
		return CUSTOS_OK;
	}
	for (;;) {
		uint64_t lim = r->start + x->max;
		if (lim > upto)
			lim = upto;
		const uint8_t *p = win_at(st, r->scan);
		while (r->scan < lim) {
			if (!det_class_has(x->cls, *p))
				return region_close(st, r, r->scan);
			r->scan++;
			p++;
		}
		/* At its maximum length the region ends once the byte after it is known:
		 * validators look at it, and a block scan always has it (found by fuzz_inspect). */
		if (!(r->scan >= r->start + x->max && r->scan < st->total))
			return CUSTOS_OK;
		if (!det_class_has(x->cls, (uint8_t)byte_at(st, r->scan)))
			return region_close(st, r, r->scan);
		GUARD(region_piece(st, r, x));
		if (!r->open)
			return CUSTOS_OK;
	}
}

static custos_err ctx_add(inspect_stream *st, unsigned det, uint64_t end)
{
	ENSURE(st->n_ctx < INSPECT_MAX_FINDINGS, CUSTOS_ERR_LIMIT,
	       "inspect: more than %d context keywords pending", INSPECT_MAX_FINDINGS);
	if (st->n_ctx == st->cap_ctx) {
		size_t nc = st->cap_ctx ? st->cap_ctx * 2 : 8;
		inspect_ctx_hit *p = realloc(st->ctx, nc * sizeof(*p));
		ENSURE(p != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		st->ctx = p;
		st->cap_ctx = nc;
	}
	st->ctx[st->n_ctx++] = (inspect_ctx_hit){ .end = end, .det = det };
	return CUSTOS_OK;
}

/* Whether a context keyword of det ends within INSPECT_CONTEXT_WINDOW bytes before off. */
static bool ctx_near(const inspect_stream *st, unsigned det, uint64_t off)
{
	for (size_t i = 0; i < st->n_ctx; i++)
		if (st->ctx[i].det == det && st->ctx[i].end <= off &&
		    off - st->ctx[i].end <= INSPECT_CONTEXT_WINDOW)
			return true;
	return false;
}

static custos_err on_expr(inspect_stream *st, unsigned id, uint64_t from, uint64_t to)
{
	const inspect_expr *x = &st->e->expr[id];
	unsigned det = x->detector;
	if (st->prof.action[det] == INSPECT_ACT_NONE)
		return CUSTOS_OK;
	inspect_region *r = &st->reg[det];
	custos_err e = CUSTOS_OK;
	switch (x->kind) {
	case DET_MATCH:
		e = candidate(st, x, from, to);
		break;
	case DET_ANCHOR:
		/* Decide whether the anchor's first byte still belongs to the open region (the
		 * region may close right there): the same answer a stream that already saw the
		 * byte gives. */
		if (r->open)
			e = region_advance(st, r, from + 1);
		/* An anchor inside a region already seen belongs to it, whether that region is
		 * still open or was closed by an earlier fragment (same result at any split). */
		if (e == CUSTOS_OK && !r->open && from >= r->end) {
			/* The value may begin before the anchor ("jane" in "jane@x"). */
			uint64_t start = from, lim = from > x->back ? from - x->back : 0;
			if (lim < st->base)
				lim = st->base;
			while (start > lim &&
			       det_class_has(x->back_cls, (uint8_t)byte_at(st, start - 1)))
				start--;
			r->open = true;
			r->cont = false;
			r->expr = id;
			r->start = start;
			r->scan = to;
		}
		break;
	case DET_CONTEXT:
		e = ctx_add(st, det, to);
		break;
	case DET_TERMINATOR:
		if (r->open && st->e->expr[r->expr].cls == CLS_ANY) {
			e = region_advance(st, r, to);
			if (e == CUSTOS_OK && r->open)
				e = region_close(st, r, to);
		}
		break;
	default:
		break;
	}
	return e;
}

static custos_err on_numeric(void *ctx, unsigned anchor, uint64_t from, uint64_t to)
{
	inspect_stream *st = ctx;
	for (int32_t x = st->e->scan[anchor]; x >= 0; x = st->e->expr[x].next)
		GUARD(on_expr(st, (unsigned)x, from, to));
	return CUSTOS_OK;
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to,
                    unsigned int flags, void *ctx)
{
	(void)flags;
	inspect_stream *st = ctx;
	for (int32_t x = (int32_t)id; x >= 0; x = st->e->expr[x].next) {
		custos_err e = on_expr(st, (unsigned)x, from, to);
		if (e != CUSTOS_OK) {
			st->cb_err = e;
			return 1; /* stops the scan */
		}
	}
	return 0;
}

/* Order: start ascending, longer first, then confidence, then detector id (deterministic). */
static int finding_cmp(const void *a, const void *b)
{
	const inspect_finding *x = a, *y = b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	uint64_t xe = x->offset + x->length, ye = y->offset + y->length;
	if (xe != ye)
		return xe > ye ? -1 : 1;
	if (x->confidence != y->confidence)
		return x->confidence > y->confidence ? -1 : 1;
	return (int)x->detector - (int)y->detector;
}

static custos_err emit_range(inspect_stream *st, uint64_t from, uint64_t to)
{
	if (to <= from)
		return CUSTOS_OK;
	return buf_append(st->out, win_at(st, from), (size_t)(to - from));
}

static custos_err collect_add(inspect_findings *c, const inspect_finding *f)
{
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 16;
		ENSURE(nc <= INSPECT_MAX_FINDINGS * 4, CUSTOS_ERR_LIMIT,
		       "inspect: too many findings");
		inspect_finding *p = realloc(c->items, nc * sizeof(*p));
		ENSURE(p != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		c->items = p;
		c->cap = nc;
	}
	c->items[c->n++] = *f;
	return CUSTOS_OK;
}

static custos_err kept_add(inspect_stream *st, const inspect_finding *f)
{
	if (st->n_kept == st->cap_kept) {
		size_t nc = st->cap_kept ? st->cap_kept * 2 : 8;
		inspect_finding *p = realloc(st->kept, nc * sizeof(*p));
		ENSURE(p != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		st->kept = p;
		st->cap_kept = nc;
	}
	st->kept[st->n_kept++] = *f;
	return CUSTOS_OK;
}

/* Drops kept findings that end at or before `off`: no finding starting at or after it can lie
 * inside them. */
static void kept_prune(inspect_stream *st, uint64_t off)
{
	size_t j = 0;
	for (size_t i = 0; i < st->n_kept; i++)
		if (st->kept[i].offset + st->kept[i].length > off)
			st->kept[j++] = st->kept[i];
	st->n_kept = j;
}

/* Decides every pending finding that starts before S, then releases text up to S. */
static custos_err resolve(inspect_stream *st, uint64_t S)
{
	if (st->n_pend > 1)
		qsort(st->pend, st->n_pend, sizeof(*st->pend), finding_cmp);
	size_t i = 0;
	for (; i < st->n_pend && st->pend[i].offset < S; i++) {
		const inspect_finding *f = &st->pend[i];
		uint64_t fend = f->offset + f->length;
		kept_prune(st, f->offset);
		bool inside = false;
		for (size_t k = 0; k < st->n_kept && !inside; k++) {
			const inspect_finding *c = &st->kept[k];
			inside = c->offset <= f->offset && c->offset + c->length >= fend &&
			         c->confidence >= f->confidence;
		}
		if (inside)
			continue;
		if (st->e->needs_ctx[f->detector] && !ctx_near(st, f->detector, f->offset))
			continue; /* a custom pattern without its keyword nearby */
		GUARD(kept_add(st, f));
		st->sum.count[f->detector]++;
		st->sum.total++;
		if (f->action > st->sum.worst)
			st->sum.worst = f->action;
		if (st->collect != NULL)
			GUARD(collect_add(st->collect, f));
		if (f->action == INSPECT_ACT_DENY && st->sum.deny_detector < 0)
			st->sum.deny_detector = f->detector;
		if (st->out == NULL)
			continue;
		if (f->action == INSPECT_ACT_DENY) {
			st->denied = true;
			break;
		}
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		if (f->offset >= st->cursor || (fend > st->cursor && st->cursor != st->mask_end)) {
			/* A finding that starts in released text (only a custom pattern longer
			 * than its hold-back can) is masked from the cursor on. */
			GUARD(emit_range(st, st->cursor, f->offset));
			GUARD(buf_append(st->out, st->e->mask[f->detector],
			                 st->e->mask_len[f->detector]));
			st->cursor = fend;
			st->mask_end = fend;
			st->sum.redacted = true;
		} else if (fend > st->cursor) {
			st->cursor = fend; /* overlaps the mask just written: merged into it */
			st->mask_end = fend;
		}
	}
	if (st->denied) {
		st->n_pend = 0;
		return err_set(CUSTOS_ERR_DENIED, "inspection: %s found",
		               st->e->name[st->sum.deny_detector]);
	}
	if (i > 0) {
		memmove(st->pend, st->pend + i, (st->n_pend - i) * sizeof(*st->pend));
		st->n_pend -= i;
	}
	if (st->cursor < S) {
		if (st->out != NULL)
			GUARD(emit_range(st, st->cursor, S));
		st->cursor = S;
	}
	kept_prune(st, S);
	/* Keywords that no finding starting at or after S can still use. */
	size_t j = 0;
	for (size_t k = 0; k < st->n_ctx; k++)
		if (st->ctx[k].end + INSPECT_CONTEXT_WINDOW >= S)
			st->ctx[j++] = st->ctx[k];
	st->n_ctx = j;
	return CUSTOS_OK;
}

/* The stable point, cut back so it never splits a UTF-8 sequence. */
static uint64_t stable_point(const inspect_stream *st, bool final)
{
	uint64_t S = st->total;
	if (!final) {
		S = st->total > st->hold ? st->total - st->hold : 0;
		for (unsigned d = 0; d < INSPECT_BUILTIN_COUNT; d++)
			if (st->reg[d].open && st->reg[d].start < S)
				S = st->reg[d].start;
	}
	if (S <= st->cursor)
		return st->cursor;
	if (final)
		return S; /* the end: an unfinished sequence there is bytes like any other */
	uint64_t i = S - 1;
	while (i > st->cursor && i + 3 > S && (byte_at(st, i) & 0xC0) == 0x80)
		i--;
	int lead = byte_at(st, i);
	unsigned need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
	if (lead >= 0xC0 && lead < 0xF8 && i + need > S)
		S = i;
	return S;
}

static void win_trim(inspect_stream *st)
{
	uint64_t keep = st->cursor;
	uint64_t back = st->e->n_expr ? st->wmax + WIN_SLACK : 0;
	uint64_t lo = st->total > back ? st->total - back : 0;
	if (lo < keep)
		keep = lo;
	for (unsigned d = 0; d < INSPECT_BUILTIN_COUNT; d++)
		if (st->reg[d].open && st->reg[d].start < keep + 1)
			keep = st->reg[d].start > 0 ? st->reg[d].start - 1 : 0;
	if (keep > st->base && !st->borrowed) {
		buf_consume(&st->win, (size_t)(keep - st->base));
		st->base = keep;
		st->wp = buf_ptr(&st->win);
	}
}

custos_err inspect_stream_init(inspect_stream *st, const inspect_engine *e,
                               const inspect_profile *p)
{
	memset(st, 0, sizeof(*st));
	st->e = e;
	st->prof = *p;
	for (unsigned d = e->n_det; d < INSPECT_MAX_DETECTORS; d++)
		st->prof.action[d] = INSPECT_ACT_NONE;
	for (unsigned a = 0; a < DET_SCAN_N; a++)
		for (int32_t x = e->scan[a]; x >= 0; x = e->expr[x].next)
			if (st->prof.action[e->expr[x].detector] != INSPECT_ACT_NONE)
				st->scan_want |= 1u << a;
	st->active = inspect_profile_active(&st->prof) && (e->db != NULL || st->scan_want != 0);
	st->hold = st->active ? inspect_profile_holdback(e, &st->prof) : 0;
	for (unsigned i = 0; i < e->n_expr; i++)
		if (e->expr[i].width > st->wmax)
			st->wmax = e->expr[i].width;
	inspect_summary_init(&st->sum);
	st->mask_end = UINT64_MAX;
	buf_init(&st->win, (size_t)INSPECT_MAX_TEXT + 2 * 16384 + 4096);
	if (st->active && e->db != NULL && hs_open_stream(e->db, 0, &st->hs) != HS_SUCCESS)
		return err_set(CUSTOS_ERR_NOMEM, "inspect: cannot open a Hyperscan stream");
	return CUSTOS_OK;
}

void inspect_stream_fini(inspect_stream *st)
{
	if (st->hs != NULL)
		hs_close_stream(st->hs, NULL, NULL, NULL);
	st->hs = NULL;
	buf_free(&st->win);
	free(st->pend);
	free(st->kept);
	free(st->ctx);
	st->ctx = NULL;
	st->n_ctx = 0;
	st->pend = st->kept = NULL;
	st->n_pend = st->n_kept = 0;
}

static custos_err scan_result(inspect_stream *st, hs_error_t rc)
{
	if (rc == HS_SCAN_TERMINATED && st->cb_err != CUSTOS_OK)
		return st->cb_err;
	if (rc != HS_SUCCESS)
		return err_set(CUSTOS_ERR_INTERNAL, "inspect: Hyperscan scan failed (%d)", (int)rc);
	return CUSTOS_OK;
}

custos_err inspect_stream_feed_int(inspect_stream *st, inspect_scratch *s, span text)
{
	ENSURE(!st->denied, CUSTOS_ERR_DENIED, "inspection: stream was denied");
	ENSURE(!st->finished, CUSTOS_ERR_INVAL, "inspect: stream already finished");
	ENSURE(text.len <= INSPECT_MAX_TEXT, CUSTOS_ERR_LIMIT, "inspect: fragment over %u bytes",
	       INSPECT_MAX_TEXT);
	if (text.len == 0)
		return CUSTOS_OK;
	if (st->borrow && st->total == 0) {
		/* A block scan: the caller's text stays put for the whole call, no copy. */
		st->borrowed = true;
		st->wp = (const uint8_t *)text.ptr;
	} else {
		ENSURE(!st->borrowed, CUSTOS_ERR_INTERNAL, "inspect: second feed of a block scan");
		GUARD(buf_append(&st->win, text.ptr, text.len));
		st->wp = buf_ptr(&st->win);
	}
	st->total += text.len;
	if (st->active) {
		ENSURE(s != NULL && (st->hs == NULL || s->hs != NULL), CUSTOS_ERR_INVAL,
		       "inspect: no scratch");
		st->cb_err = CUSTOS_OK;
		if (st->hs != NULL)
			GUARD(scan_result(st, hs_scan_stream(st->hs, text.ptr, (unsigned)text.len,
			                                     0, s->hs, on_match, st)));
		if (st->scan_want != 0)
			GUARD(det_numeric_scan(&st->num, st->scan_want, (const uint8_t *)text.ptr,
			                       text.len, st->total - text.len, on_numeric, st));
		for (unsigned d = 0; d < INSPECT_BUILTIN_COUNT; d++)
			if (st->reg[d].open)
				GUARD(region_advance(st, &st->reg[d], st->total));
	}
	GUARD(resolve(st, stable_point(st, false)));
	win_trim(st);
	return CUSTOS_OK;
}

custos_err inspect_stream_finish_int(inspect_stream *st, inspect_scratch *s)
{
	ENSURE(!st->denied, CUSTOS_ERR_DENIED, "inspection: stream was denied");
	ENSURE(!st->finished, CUSTOS_ERR_INVAL, "inspect: stream already finished");
	st->finished = true;
	if (st->active) {
		ENSURE(s != NULL && (st->hs == NULL || s->hs != NULL), CUSTOS_ERR_INVAL,
		       "inspect: no scratch");
		st->cb_err = CUSTOS_OK;
		if (st->hs != NULL) {
			hs_error_t rc = hs_close_stream(st->hs, s->hs, on_match, st);
			st->hs = NULL;
			GUARD(scan_result(st, rc));
		}
		if (st->scan_want != 0)
			GUARD(det_numeric_finish(&st->num, st->scan_want, st->total, on_numeric,
			                         st));
		for (unsigned d = 0; d < INSPECT_BUILTIN_COUNT; d++) {
			inspect_region *r = &st->reg[d];
			if (r->open)
				GUARD(region_advance(st, r, st->total));
			if (r->open)
				GUARD(region_close(st, r, st->total));
		}
	}
	GUARD(resolve(st, stable_point(st, true)));
	win_trim(st);
	return CUSTOS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Public stream API.
 */
custos_err inspect_stream_new(const inspect_engine *e, const inspect_profile *p,
                              inspect_stream **out)
{
	*out = NULL;
	inspect_stream *st = malloc(sizeof(*st));
	ENSURE(st != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
	custos_err r = inspect_stream_init(st, e, p);
	if (r != CUSTOS_OK) {
		inspect_stream_fini(st);
		free(st);
		return r;
	}
	*out = st;
	return CUSTOS_OK;
}

custos_err inspect_stream_feed(inspect_stream *st, inspect_scratch *s, span text, buf *out)
{
	st->out = out;
	custos_err r = inspect_stream_feed_int(st, s, text);
	st->out = NULL;
	return r;
}

custos_err inspect_stream_finish(inspect_stream *st, inspect_scratch *s, buf *out)
{
	st->out = out;
	custos_err r = inspect_stream_finish_int(st, s);
	st->out = NULL;
	return r;
}

size_t inspect_stream_held(const inspect_stream *st)
{
	return (size_t)(st->total - st->cursor);
}

const inspect_summary *inspect_stream_summary(const inspect_stream *st)
{
	return &st->sum;
}

void inspect_stream_free(inspect_stream *st)
{
	if (st == NULL)
		return;
	inspect_stream_fini(st);
	free(st);
}

/* ---------------------------------------------------------------------------------------------
 * Block forms.
 */
custos_err inspect_scan(const inspect_engine *e, inspect_scratch *s, const inspect_profile *p,
                        span text, inspect_findings *out)
{
	ENSURE(text.len <= INSPECT_MAX_TEXT, CUSTOS_ERR_LIMIT, "inspect: text over %u bytes",
	       INSPECT_MAX_TEXT);
	inspect_stream st;
	custos_err r = inspect_stream_init(&st, e, p);
	st.collect = out;
	st.borrow = true;
	if (r == CUSTOS_OK)
		r = inspect_stream_feed_int(&st, s, text);
	if (r == CUSTOS_OK)
		r = inspect_stream_finish_int(&st, s);
	inspect_stream_fini(&st);
	return r;
}

custos_err inspect_redact_text(const inspect_engine *e, inspect_scratch *s,
                               const inspect_profile *p, span text, buf *out, inspect_summary *sum)
{
	ENSURE(text.len <= INSPECT_MAX_TEXT, CUSTOS_ERR_LIMIT, "inspect: text over %u bytes",
	       INSPECT_MAX_TEXT);
	inspect_stream st;
	custos_err r = inspect_stream_init(&st, e, p);
	st.out = out;
	st.borrow = true;
	if (r == CUSTOS_OK)
		r = inspect_stream_feed_int(&st, s, text);
	if (r == CUSTOS_OK)
		r = inspect_stream_finish_int(&st, s);
	if (sum != NULL)
		*sum = st.sum;
	inspect_stream_fini(&st);
	return r;
}
