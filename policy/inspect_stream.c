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
 *
 * Detectors see a normalised view of the text (inspect_norm.c): invisible characters dropped,
 * Unicode spaces, digits and fullwidth forms as ASCII. Every offset here is in the view; a list
 * of edits (one per changed character) maps them back, so released text is the original text
 * and a mask replaces the original characters of its value, whole. A fragment that is ASCII,
 * or has no character the view changes, is its own view: no copy, no edit.
 */
#include <stdlib.h>
#include <string.h>

#include "inspect_int.h"
#include "inspect_stream_int.h"

#define WIN_SLACK  2 /* bytes kept before the oldest possible candidate: its prev byte, and one */
#define NORM_SLICE (64u * 1024u) /* text normalised, scanned and released at a time */

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

/* ---------------------------------------------------------------------------------------------
 * The map from view offsets back to the original text.
 */

/* Index of the last live edit whose view offset is at or before x, or SIZE_MAX. */
static size_t ed_last(const inspect_stream *st, uint64_t x)
{
	size_t lo = st->ed_head, hi = st->n_ed;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (st->ed[mid].n_off <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > st->ed_head ? lo - 1 : SIZE_MAX;
}

/* Text offset where the character that makes view byte x starts (x == total: the end). */
static uint64_t o_start(const inspect_stream *st, uint64_t x)
{
	size_t i = st->ed_head == st->n_ed ? SIZE_MAX : ed_last(st, x);
	if (i == SIZE_MAX)
		return st->ed_ob + (x > st->ed_nb ? x - st->ed_nb : 0);
	const inspect_edit *e = &st->ed[i];
	if (x < e->n_off + e->n_len)
		return e->o_off;
	return e->o_off + inspect_edit_olen(e) + (x - e->n_off - e->n_len);
}

/* Text offset where the character that makes view byte x - 1 ends (x > 0). */
static uint64_t o_end(const inspect_stream *st, uint64_t x)
{
	size_t i = st->ed_head == st->n_ed ? SIZE_MAX : ed_last(st, x - 1);
	if (i != SIZE_MAX && x - 1 < st->ed[i].n_off + st->ed[i].n_len)
		return st->ed[i].o_off + inspect_edit_olen(&st->ed[i]);
	return o_start(st, x - 1) + 1;
}

/* Releases the original text up to text offset `to` (to out in release mode): the view's bytes
 * between edits, each edit's own bytes. `to` and the cursor are character boundaries. */
static custos_err emit_to(inspect_stream *st, uint64_t to)
{
	if (to <= st->ocursor)
		return CUSTOS_OK;
	if (st->out == NULL) {
		st->ocursor = to;
		return CUSTOS_OK;
	}
	/* first live edit at or after the cursor */
	size_t lo = st->ed_head, hi = st->n_ed;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (st->ed[mid].o_off < st->ocursor)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; st->ocursor < to;) {
		uint64_t run = i < st->n_ed && st->ed[i].o_off < to ? st->ed[i].o_off : to;
		if (run > st->ocursor) {
			/* identity: view offset = text offset shifted as after the edit before */
			uint64_t v = i > st->ed_head ? st->ed[i - 1].n_off + st->ed[i - 1].n_len +
			                                       (st->ocursor - st->ed[i - 1].o_off -
			                                        inspect_edit_olen(&st->ed[i - 1]))
			                             : st->ed_nb + (st->ocursor - st->ed_ob);
			ENSURE(v >= st->base && v + (run - st->ocursor) <= st->total,
			       CUSTOS_ERR_INTERNAL, "inspect: release outside the window");
			GUARD(buf_append(st->out, st->wp + (v - st->base),
			                 (size_t)(run - st->ocursor)));
			st->ocursor = run;
		}
		if (st->ocursor < to) {
			ENSURE(i < st->n_ed && st->ed[i].o_off == st->ocursor, CUSTOS_ERR_INTERNAL,
			       "inspect: release inside a character");
			const inspect_edit *e = &st->ed[i];
			if (e->o_len == 0) /* a sequence: its bytes in xb */
				GUARD(buf_append(st->out,
				                 buf_ptr(&st->xb) + (e->x_off - st->xb_base),
				                 e->x_len));
			for (unsigned k = 0; e->o_len != 0 && k < e->rep; k++)
				GUARD(buf_append(st->out, e->o, e->o_len));
			st->ocursor += inspect_edit_olen(&st->ed[i]);
			i++;
		}
	}
	return CUSTOS_OK;
}

static custos_err pend_add(inspect_stream *st, uint64_t off, size_t len, unsigned det, uint8_t conf)
{
	ENSURE(st->n_pend < INSPECT_MAX_FINDINGS, CUSTOS_ERR_LIMIT,
	       "inspect: more than %d findings pending", INSPECT_MAX_FINDINGS);
	/* Whole characters: a custom pattern may match part of a UTF-8 sequence (the view holds
	 * only whole ones: an unfinished sequence waits for its next fragment). */
	uint64_t end = off + len;
	for (int k = 0; k < 3 && off > st->base && (byte_at(st, off) & 0xC0) == 0x80 &&
	                byte_at(st, off - 1) >= 0x80;
	     k++)
		off--;
	for (int k = 0; k < 3 && end < st->total && byte_at(st, end - 1) >= 0x80 &&
	                (byte_at(st, end) & 0xC0) == 0x80;
	     k++)
		end++;
	ENSURE(end - off <= UINT32_MAX, CUSTOS_ERR_LIMIT, "inspect: finding too long");
	len = (size_t)(end - off);
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
	if (st->n_ctx > 0 && end < st->ctx[st->n_ctx - 1].end)
		st->ctx_unsorted = true;
	st->ctx[st->n_ctx++] = (inspect_ctx_hit){ .end = end, .det = det };
	return CUSTOS_OK;
}

static int ctx_cmp(const void *a, const void *b)
{
	const inspect_ctx_hit *x = a, *y = b;
	return x->end < y->end ? -1 : x->end > y->end;
}

/* Whether a context keyword of det ends within INSPECT_CONTEXT_WINDOW bytes before off (the
 * keywords sorted by end): a binary search to the window, then the few keywords in it, so a
 * text of many keywords and many matches costs no product of the two. */
static bool ctx_near(const inspect_stream *st, unsigned det, uint64_t off)
{
	uint64_t lo_end = off > INSPECT_CONTEXT_WINDOW ? off - INSPECT_CONTEXT_WINDOW : 0;
	size_t lo = 0, hi = st->n_ctx;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (st->ctx[mid].end < lo_end)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < st->n_ctx && st->ctx[i].end <= off; i++)
		if (st->ctx[i].det == det)
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
int inspect_finding_cmp(const void *a, const void *b)
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
		qsort(st->pend, st->n_pend, sizeof(*st->pend), inspect_finding_cmp);
	if (st->ctx_unsorted) {
		qsort(st->ctx, st->n_ctx, sizeof(*st->ctx), ctx_cmp);
		st->ctx_unsorted = false;
	}
	size_t i = 0;
	for (; i < st->n_pend && st->pend[i].offset < S; i++) {
		const inspect_finding *f = &st->pend[i];
		uint64_t fend = f->offset + f->length;
		kept_prune(st, f->offset);
		bool inside = false;
		for (size_t k = 0; k < st->n_kept && !inside; k++) {
			const inspect_finding *c = &st->kept[k];
			inside = c->offset <= f->offset && c->offset + c->length >= fend &&
			         c->confidence >= f->confidence && c->action >= f->action;
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
		if (st->collect != NULL) {
			/* the caller gets the original text's offsets */
			inspect_finding o = *f;
			o.offset = o_start(st, f->offset);
			uint64_t oe = o_end(st, fend);
			ENSURE(oe > o.offset && oe - o.offset <= UINT32_MAX, CUSTOS_ERR_INTERNAL,
			       "inspect: finding maps outside the text");
			o.length = (uint32_t)(oe - o.offset);
			GUARD(collect_add(st->collect, &o));
		}
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
			if (f->offset >= st->cursor)
				GUARD(emit_to(st, o_start(st, f->offset)));
			GUARD(buf_append(st->out, st->e->mask[f->detector],
			                 st->e->mask_len[f->detector]));
			st->cursor = fend;
			st->ocursor = o_end(st, fend);
			st->mask_end = fend;
			st->sum.redacted = true;
		} else if (fend > st->cursor) {
			st->cursor = fend; /* overlaps the mask just written: merged into it */
			st->ocursor = o_end(st, fend);
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
		GUARD(emit_to(st, o_start(st, S)));
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
	/* Edits no offset still to be mapped or released can reach: before the window and
	 * before the released text. */
	while (st->ed_head < st->n_ed) {
		const inspect_edit *e = &st->ed[st->ed_head];
		if (e->n_off + e->n_len > st->base || e->o_off + inspect_edit_olen(e) > st->ocursor)
			break;
		st->ed_nb = e->n_off + e->n_len;
		st->ed_ob = e->o_off + inspect_edit_olen(e);
		st->ed_head++;
	}
	/* The bytes of sequences no live edit holds. */
	if (buf_used(&st->xb) > 0) {
		uint64_t xk = st->xb_base + buf_used(&st->xb);
		for (size_t k = st->ed_head; k < st->n_ed; k++)
			if (st->ed[k].n_len == 0 && st->ed[k].o_len == 0) {
				xk = st->ed[k].x_off;
				break;
			}
		buf_consume(&st->xb, (size_t)(xk - st->xb_base));
		st->xb_base = xk;
	}
	if (st->ed_head == st->n_ed) {
		st->ed_head = st->n_ed = 0;
	} else if (st->ed_head >= 1024 && st->ed_head * 2 >= st->n_ed) {
		memmove(st->ed, st->ed + st->ed_head, (st->n_ed - st->ed_head) * sizeof(*st->ed));
		st->n_ed -= st->ed_head;
		st->ed_head = 0;
	}
}

/* ---------------------------------------------------------------------------------------------
 * The normalised view.
 */

/* Offset of the first character at or after `at` that the view changes (dropped, or made
 * ASCII: *len and *cls say how long it is and what it becomes), or of a UTF-8 sequence that
 * the end of p cuts (*len is INSPECT_NORM_SHORT); n when there is none. */
static size_t norm_plain(inspect_stream *st, const uint8_t *p, size_t n, size_t at, size_t *len,
                         int *cls)
{
	size_t i = at;
	uint32_t cp;
	*len = INSPECT_NORM_SHORT;
	bool look = at == st->w_lo && st->w_open && st->w_latin && at >= st->w_end;
	for (;;) {
		if (!look && !(st->w_map && i < st->w_end))
			i = inspect_norm_skip(p, n, i);
		size_t l = 0;
		int c = 0;
		bool kept = false; /* l and c hold the character at i, one the view keeps */
		if (i < n && (look || i >= st->w_end)) {
			/* a stop, or the start of a fragment that goes on with a mixed word: the
			 * look-alikes of the word around it are mapped when it holds a Latin letter or
			 * digit (here or, when it goes on from the last fragment, there). A character
			 * the view keeps that is not ASCII, Greek or Cyrillic is in no word (the most
			 * common stop in prose: a quote mark or a dash): no look. */
			look = false;
			if (p[i] >= 0x80) {
				l = inspect_norm_decode(p + i, n - i, &cp);
				if (l != 0 && l != INSPECT_NORM_SHORT &&
				    (cp < 0x0370 || cp >= 0x0530)) {
					c = inspect_norm_class(cp);
					kept = c == INSPECT_NORM_KEEP;
				}
			}
			inspect_norm_wordinfo w = { .end = i };
			if (!kept)
				inspect_norm_word_at(p, n, st->w_lo, i, &w);
			if (w.end > i) {
				st->w_end = w.end;
				st->w_map = w.latin || (w.open_start && st->w_open && st->w_latin);
				if (st->w_map && w.lookalike && w.start < i) {
					i = w.start > at ? w.start
					                 : at; /* walk it from its start */
					continue;
				}
			}
		}
		if (i >= n) {
			/* a sequence cut by the end waits for the next fragment, whatever it is */
			for (size_t k = 1; k <= 3 && k <= n - at; k++) {
				uint8_t b = p[n - k];
				if ((b & 0xC0) == 0x80)
					continue;
				if (b >= 0xC2 &&
				    inspect_norm_decode(p + n - k, k, &cp) == INSPECT_NORM_SHORT)
					return n - k;
				break;
			}
			return n;
		}
		if (!kept) {
			l = inspect_norm_decode(p + i, n - i, &cp);
			if (l == INSPECT_NORM_SHORT)
				return i;
			if (l == 0) { /* not UTF-8: a byte like any other */
				i++;
				continue;
			}
			c = inspect_norm_class(cp);
		}
		if (c == INSPECT_NORM_KEEP && st->w_map && i < st->w_end) {
			int m = inspect_norm_confusable(cp);
			if (m != 0)
				c = m;
		}
		if (c == INSPECT_NORM_KEEP) {
			i += l;
			continue;
		}
		*len = l;
		*cls = c;
		return i;
	}
}

/* Room for n more edits. */
static custos_err ed_room(inspect_stream *st, size_t n)
{
	if (st->cap_ed - st->n_ed >= n)
		return CUSTOS_OK;
	size_t nc = st->cap_ed ? st->cap_ed : 64;
	while (nc - st->n_ed < n)
		nc *= 2;
	inspect_edit *q = realloc(st->ed, nc * sizeof(*q));
	ENSURE(q != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
	st->ed = q;
	st->cap_ed = nc;
	return CUSTOS_OK;
}

/* Appends view bytes to a window tail reserved by norm_append. */
typedef struct vw {
	inspect_stream *st;
	uint8_t *w;
	size_t n;
} vw;

/* Text bytes that are their own view. */
static void vw_put(vw *v, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(v->w + v->n, p, n);
	v->n += n;
	v->st->ototal += n;
	v->st->inv_held = 0;
}

/* Bytes of a run of one invisible character under which its edit becomes a sequence when
 * another invisible character follows (a longer run stays one edit with a count, and the next
 * character starts an edit of its own). */
#define SEQ_MERGE 64u

/* A character p[0..l) the view changes: c is INSPECT_NORM_DROP, the ASCII byte it becomes, or
 * a class from INSPECT_NORM_MULTI on; or a character kept (c is INSPECT_NORM_KEEP). Invisible
 * characters in a row (none of them released yet) add to one edit: a run of one character
 * repeated is one edit with a count (up to UINT16_MAX), characters of different kinds one
 * sequence whose bytes go to xb. So there is no limit on how many, or how mixed, are dropped:
 * their edits cost at most their own bytes (INSPECT_MAX_INVISIBLE_HELD in a row, then LIMIT). */
static custos_err vw_char(vw *v, const uint8_t *p, size_t l, int c)
{
	inspect_stream *st = v->st;
	if (c == INSPECT_NORM_KEEP) {
		vw_put(v, p, l);
		return CUSTOS_OK;
	}
	if (c == INSPECT_NORM_DROP) {
		ENSURE(st->inv_held + l <= INSPECT_MAX_INVISIBLE_HELD, CUSTOS_ERR_LIMIT,
		       "inspect: more than %u bytes of invisible characters in a row",
		       INSPECT_MAX_INVISIBLE_HELD);
		st->inv_held += l;
		inspect_edit *t = st->n_ed > st->ed_head ? &st->ed[st->n_ed - 1] : NULL;
		if (t != NULL && t->n_len == 0 && t->n_off == st->total + v->n &&
		    t->o_off >= st->ocursor && t->o_off + inspect_edit_olen(t) == st->ototal) {
			if (t->o_len == l && t->rep < UINT16_MAX && memcmp(t->o, p, l) == 0) {
				t->rep++;
				st->ototal += l;
				return CUSTOS_OK;
			}
			if (t->o_len == 0 || inspect_edit_olen(t) <= SEQ_MERGE) {
				if (t->o_len != 0) { /* the run becomes a sequence */
					uint8_t o[4];
					uint16_t n = t->rep;
					uint8_t ol = t->o_len;
					memcpy(o, t->o, sizeof(o));
					t->x_off = st->xb_base + buf_used(&st->xb);
					for (uint16_t k = 0; k < n; k++)
						GUARD(buf_append(&st->xb, o, ol));
					t->o_len = 0;
					t->rep = 1;
					t->x_len = (uint32_t)(n * ol);
				}
				GUARD(buf_append(&st->xb, p, l));
				t->x_len += (uint32_t)l;
				st->ototal += l;
				return CUSTOS_OK;
			}
		}
	}
	inspect_edit *e = &st->ed[st->n_ed++]; /* room made by norm_append */
	const uint8_t *mb = NULL;
	size_t mn = inspect_norm_multi(c, &mb);
	e->n_off = st->total + v->n;
	e->o_off = st->ototal;
	e->n_len = c == INSPECT_NORM_DROP ? 0 : mn > 0 ? (uint8_t)mn : 1;
	e->o_len = (uint8_t)l;
	e->rep = 1;
	e->x_off = 0;
	memcpy(e->o, p, l);
	st->ototal += l;
	if (c == INSPECT_NORM_DROP)
		return CUSTOS_OK;
	st->inv_held = 0;
	if (mn > 0) { /* a character that stands for several */
		memcpy(v->w + v->n, mb, mn);
		v->n += mn;
		return CUSTOS_OK;
	}
	v->w[v->n++] = (uint8_t)c;
	return CUSTOS_OK;
}

/* The start of the character before offset u of p[lo..u), or u when there is none or it is not
 * UTF-8 (with its code point in *cp). */
static size_t char_before(const uint8_t *p, size_t lo, size_t u, uint32_t *cp)
{
	if (u == lo)
		return u;
	size_t b = u - 1;
	while (b > lo && u - b < 4 && (p[b] & 0xC0) == 0x80)
		b--;
	return inspect_norm_decode(p + b, u - b, cp) == u - b ? b : u;
}

/* Where the end of p[lo..n) that must wait for the next fragment starts (n: none): the rest of
 * a word that goes on to the end, holds a look-alike (or ends in a cut Greek or Cyrillic
 * character) and no Latin letter or digit yet, from its first look-alike. */
static size_t word_hold_at(const inspect_stream *st, const uint8_t *p, size_t n, size_t lo)
{
	size_t u = n;
	bool cut_cg = false;
	uint32_t cp;
	for (size_t k = 1; k <= 3 && k <= n - lo; k++) {
		uint8_t b = p[n - k];
		if ((b & 0xC0) == 0x80)
			continue;
		if (b >= 0xC2 && inspect_norm_decode(p + n - k, k, &cp) == INSPECT_NORM_SHORT) {
			u = n - k;
			cut_cg = b >= 0xCD && b <= 0xD4;
		}
		break;
	}
	size_t b = char_before(p, lo, u, &cp);
	inspect_norm_wordinfo w = { .start = u, .end = u, .open_start = u == lo };
	if (b < u && inspect_norm_word(cp) != INSPECT_WORD_BREAK)
		inspect_norm_word_at(p, u, lo, b, &w);
	else if (u > lo)
		w.open_start = false; /* the cut character starts a word */
	if (w.latin || (w.open_start && st->w_open && st->w_latin) || (!w.lookalike && !cut_cg))
		return n;
	size_t h = u;
	for (size_t i = w.start; i < u;) {
		size_t l = inspect_norm_decode(p + i, u - i, &cp);
		if (inspect_norm_word(cp) == INSPECT_WORD_LOOKALIKE) {
			h = i;
			break;
		}
		i += l;
	}
	return n - h <= INSPECT_WORD_HOLD ? h : n;
}

/* The word state after p[lo..u) was taken into the view. */
static void word_carry(inspect_stream *st, const uint8_t *p, size_t lo, size_t u)
{
	uint32_t cp;
	if (u == lo)
		return;
	size_t b = char_before(p, lo, u, &cp);
	if (b == u || inspect_norm_word(cp) == INSPECT_WORD_BREAK) {
		st->w_open = st->w_latin = false;
		return;
	}
	inspect_norm_wordinfo w;
	inspect_norm_word_at(p, u, lo, b, &w);
	st->w_latin = w.latin || (w.open_start && st->w_open && st->w_latin);
	st->w_open = true;
}

/* Appends the view of p[0..n) to the window, recording the edits. A sequence cut by the end of
 * p waits for the next fragment, unless `final` (then it is bytes like any other); so does the
 * end of a word whose look-alikes are not decided yet (word_hold_at). */
static custos_err norm_append(inspect_stream *st, const uint8_t *p, size_t n, bool final)
{
	if (st->n_wpend > 0) {
		/* the word the last fragment ended in goes first */
		size_t k = st->n_wpend;
		uint8_t *q = malloc(k + n);
		ENSURE(q != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		memcpy(q, st->wpend, k);
		if (n > 0)
			memcpy(q + k, p, n);
		st->n_wpend = 0;
		custos_err r = norm_append(st, q, k + n, final);
		free(q);
		return r;
	}
	/* the view is at most half as long again as the text (`½`, two bytes, is "1/2"), plus a
	 * sequence held from the last fragment; every edit takes at least two bytes of text */
	GUARD(buf_reserve(&st->win, n + n / 2 + 2 * INSPECT_NORM_MAX_EXPAND));
	GUARD(ed_room(st, n / 2 + 2));
	vw v = { .st = st, .w = buf_tail(&st->win) };
	size_t i = 0;
	uint32_t cp;
	if (st->n_upend > 0) {
		/* the sequence the last fragment ended in, with the bytes that finish it */
		uint8_t seq[8];
		size_t k = st->n_upend, take = n < 4 ? n : 4;
		memcpy(seq, st->upend, k);
		if (take > 0)
			memcpy(seq + k, p, take);
		size_t l = inspect_norm_decode(seq, k + take, &cp);
		if (l == INSPECT_NORM_SHORT && !final) {
			if (n > 0)
				memcpy(st->upend + k, p, n); /* still cut: n < 4 - k */
			st->n_upend = (uint8_t)(k + n);
			return CUSTOS_OK;
		}
		st->n_upend = 0;
		if (l == 0 || l == INSPECT_NORM_SHORT) {
			/* not UTF-8 after all: bytes like any other (its continuation bytes are not
			 * leads) */
			vw_put(&v, seq, k);
			st->w_open = st->w_latin = false;
		} else {
			int c = inspect_norm_class(cp), wc = inspect_norm_word(cp);
			/* a look-alike here ends a word that held a Latin letter (else it waited
			 * in wpend, not here) */
			if (wc == INSPECT_WORD_LOOKALIKE && st->w_open && st->w_latin)
				c = inspect_norm_confusable(cp);
			custos_err r = vw_char(&v, seq, l, c);
			if (r != CUSTOS_OK) {
				buf_commit(&st->win, v.n);
				st->total += v.n;
				return r;
			}
			i = l - k;
			st->w_latin = wc != INSPECT_WORD_BREAK &&
			              ((st->w_open && st->w_latin) || wc == INSPECT_WORD_LATIN);
			st->w_open = wc != INSPECT_WORD_BREAK;
		}
	}
	size_t lo = i, cut = final ? n : word_hold_at(st, p, n, lo);
	st->w_lo = lo;
	st->w_end = lo;
	st->w_map = false;
	size_t done = cut;
	while (i < cut) {
		size_t l;
		int c = INSPECT_NORM_KEEP;
		size_t j = norm_plain(st, p, cut, i, &l, &c);
		vw_put(&v, p + i, j - i);
		i = j;
		if (i >= cut)
			break;
		if (l == INSPECT_NORM_SHORT) {
			if (final) {
				vw_put(&v, p + i, cut - i);
			} else {
				memcpy(st->upend, p + i, cut - i);
				st->n_upend = (uint8_t)(cut - i);
				done = i;
			}
			break;
		}
		custos_err r = vw_char(&v, p + i, l, c);
		if (r != CUSTOS_OK) {
			buf_commit(&st->win, v.n);
			st->total += v.n;
			return r;
		}
		i += l;
	}
	word_carry(st, p, lo, done);
	if (cut < n) {
		memcpy(st->wpend, p + cut, n - cut);
		st->n_wpend = (uint8_t)(n - cut);
	}
	buf_commit(&st->win, v.n);
	st->total += v.n;
	return CUSTOS_OK;
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
	buf_init(&st->win, (size_t)INSPECT_MAX_TEXT + 2 * 16384 + 4096 + 8);
	buf_init(&st->xb, (size_t)INSPECT_MAX_INVISIBLE_HELD);
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
	buf_free(&st->xb);
	free(st->pend);
	free(st->kept);
	free(st->ctx);
	st->ctx = NULL;
	st->n_ctx = 0;
	free(st->ed);
	st->ed = NULL;
	st->n_ed = st->ed_head = st->cap_ed = 0;
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

/* Runs the detectors over the view bytes [from, total) just added, then releases what no
 * detector can still claim. */
static custos_err view_scan(inspect_stream *st, inspect_scratch *s, uint64_t from)
{
	if (!st->borrowed)
		st->wp = buf_ptr(&st->win);
	if (st->active && st->total > from) {
		ENSURE(s != NULL && (st->hs == NULL || s->hs != NULL), CUSTOS_ERR_INVAL,
		       "inspect: no scratch");
		const uint8_t *p = win_at(st, from);
		size_t n = (size_t)(st->total - from);
		st->cb_err = CUSTOS_OK;
		if (st->hs != NULL)
			GUARD(scan_result(st, hs_scan_stream(st->hs, (const char *)p, (unsigned)n,
			                                     0, s->hs, on_match, st)));
		if (st->scan_want != 0)
			GUARD(det_numeric_scan(&st->num, st->scan_want, p, n, from, on_numeric,
			                       st));
		for (unsigned d = 0; d < INSPECT_BUILTIN_COUNT; d++)
			if (st->reg[d].open)
				GUARD(region_advance(st, &st->reg[d], st->total));
	}
	GUARD(resolve(st, stable_point(st, false)));
	win_trim(st);
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
	ENSURE(!st->borrowed, CUSTOS_ERR_INTERNAL, "inspect: second feed of a block scan");
	const uint8_t *p = (const uint8_t *)text.ptr;
	uint64_t from = st->total;
	size_t l;
	int c;
	st->w_lo = st->w_end = 0;
	st->w_map = false;
	if (st->n_upend == 0 && st->n_wpend == 0 &&
	    (st->borrow || word_hold_at(st, p, text.len, 0) == text.len) &&
	    norm_plain(st, p, text.len, 0, &l, &c) == text.len) {
		word_carry(st, p, 0, text.len);
		/* The text is its own view (ASCII, or nothing the view changes). */
		if (st->borrow && st->total == 0) {
			/* A block scan: the caller's text stays put for the whole call, no copy. */
			st->borrowed = true;
			st->wp = p;
		} else {
			GUARD(buf_append(&st->win, p, text.len));
		}
		st->total += text.len;
		st->ototal += text.len;
		st->inv_held = 0;
		return view_scan(st, s, from);
	}
	/* In slices, so that the edits and the window stay bounded for a large block. */
	for (size_t at = 0; at < text.len;) {
		size_t n = text.len - at < NORM_SLICE ? text.len - at : NORM_SLICE;
		from = st->total;
		GUARD(norm_append(st, p + at, n, st->borrow && at + n == text.len));
		GUARD(view_scan(st, s, from));
		at += n;
	}
	return CUSTOS_OK;
}

custos_err inspect_stream_finish_int(inspect_stream *st, inspect_scratch *s)
{
	ENSURE(!st->denied, CUSTOS_ERR_DENIED, "inspection: stream was denied");
	ENSURE(!st->finished, CUSTOS_ERR_INVAL, "inspect: stream already finished");
	if (st->n_upend > 0 || st->n_wpend > 0) {
		/* a sequence or a word the text ended in: decided now */
		uint64_t from = st->total;
		GUARD(norm_append(st, NULL, 0, true));
		GUARD(view_scan(st, s, from));
	}
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
			if (r->open && st->drop_open_any && st->e->expr[r->expr].cls == CLS_ANY)
				r->open = false; /* unterminated: left to the texts scanned alone */
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
	return (size_t)(st->ototal + st->n_upend + st->n_wpend - st->ocursor);
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
