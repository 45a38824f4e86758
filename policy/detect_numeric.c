/*
 * The numeric anchor, outside Hyperscan: runs of nine digits with at most two separator bytes
 * ([ .()-]) between consecutive digits, the shared anchor of cards, national and North
 * American phone numbers, spaced SSNs and IBANs. It reports exactly what the pattern
 * DET_NUMERIC_PATTERN with leftmost start would (one report per digit from the ninth on, the
 * start being the digit eight digits back), and keeps its state across fragments.
 *
 * Bit-parallel: the text is classified 64 bytes at a time (SSE2) into a digit mask D and a
 * separator mask S. Nine chained digits span at most 9 + 8 * 2 = 25 bytes, so every report in
 * a step of up to 40 new bytes is decided by a 64-bit window holding the 24 bytes before them
 * plus the new ones. In that window a digit is the k-th of a chain when the digit one, two
 * (over one separator) or three (over two) bytes before it is the (k-1)-th:
 *   C(k) = D & (C(k-1) << 1 | C(k-1) << 2 & S << 1 | C(k-1) << 3 & S << 1 & S << 2),
 * and C(9) marks the reports. Eight such steps cost a few dozen instructions, and most windows
 * skip them: a report needs a new digit and nine consecutive digit-or-separator bytes ending
 * at one. The state between fragments is the two masks of the last 64 bytes.
 */
#include "inspect_int.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LOOKBACK 24 /* bytes of a chain before its last digit, at most */
#define STEP     40 /* new bytes per window: LOOKBACK + STEP == 64 */

static inline bool num_sep(uint8_t c)
{
	return c == ' ' || c == '.' || c == '(' || c == ')' || c == '-';
}

static inline bool num_digit(uint8_t c)
{
	return (unsigned)(c - '0') <= 9;
}

/* Digit and separator masks of p[0 .. n), n <= 64: bit k for p[k]. */
static void classify(const uint8_t *p, size_t n, uint64_t *dm, uint64_t *sm)
{
	uint64_t d = 0, s = 0;
	for (size_t k = 0; k < n; k++) {
		d |= (uint64_t)num_digit(p[k]) << k;
		s |= (uint64_t)num_sep(p[k]) << k;
	}
	*dm = d;
	*sm = s;
}

#if defined(__SSE2__)
/* The same for 64 bytes, without branches. */
static inline void classify16(const uint8_t *p, unsigned *d, unsigned *s)
{
	const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
	const __m128i sp = _mm_set1_epi8(' '), par = _mm_set1_epi8('('), one = _mm_set1_epi8(1),
	              dash = _mm_set1_epi8('-');
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i dv = _mm_sub_epi8(v, zero), pv = _mm_sub_epi8(v, par), mv = _mm_sub_epi8(v, dash);
	*d = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(dv, nine), dv));
	/* ' ', '(' ')' (0x28..0x29), '-' '.' (0x2d..0x2e) */
	*s = (unsigned)_mm_movemask_epi8(_mm_or_si128(
	        _mm_cmpeq_epi8(v, sp), _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(pv, one), pv),
	                                            _mm_cmpeq_epi8(_mm_min_epu8(mv, one), mv))));
}

static inline void classify64(const uint8_t *p, uint64_t *dm, uint64_t *sm)
{
	unsigned d0, d1, d2, d3, s0, s1, s2, s3;
	classify16(p, &d0, &s0);
	classify16(p + 16, &d1, &s1);
	classify16(p + 32, &d2, &s2);
	classify16(p + 48, &d3, &s3);
	*dm = (uint64_t)d0 | (uint64_t)d1 << 16 | (uint64_t)d2 << 32 | (uint64_t)d3 << 48;
	*sm = (uint64_t)s0 | (uint64_t)s1 << 16 | (uint64_t)s2 << 32 | (uint64_t)s3 << 48;
}
#else
static inline void classify64(const uint8_t *p, uint64_t *dm, uint64_t *sm)
{
	classify(p, 64, dm, sm);
}
#endif

/* New digits of a window that may end a chain: nine consecutive digit-or-separator bytes end
 * there (a cheap necessary condition). */
static inline uint64_t window_maybe(uint64_t wd, uint64_t ws, uint64_t fresh)
{
	uint64_t t = wd | ws, r2 = t & (t << 1), r4 = r2 & (r2 << 2), r8 = r4 & (r4 << 4);
	return r8 & (t << 8) & wd & fresh;
}

static inline uint64_t fresh_bits(unsigned k)
{
	uint64_t hi = k >= 64 - LOOKBACK ? ~UINT64_C(0) : (UINT64_C(1) << (LOOKBACK + k)) - 1;
	return hi & ~((UINT64_C(1) << LOOKBACK) - 1);
}

/* Reports of one window: bits [LOOKBACK, LOOKBACK + k) of wd/ws are the new bytes, the ones
 * below them the bytes before (zero before the start of the text); bit LOOKBACK is at absolute
 * offset `at`. */
static custos_err window(uint64_t wd, uint64_t ws, unsigned k, uint64_t at,
                         custos_err (*emit)(void *ctx, uint64_t from, uint64_t to), void *ctx)
{
	uint64_t fresh = fresh_bits(k);
	if (!window_maybe(wd, ws, fresh))
		return CUSTOS_OK;
	uint64_t s1 = ws << 1, s12 = s1 & (ws << 2), c = wd;
	for (unsigned i = 1; i < DET_NUMERIC_DIGITS; i++)
		c = wd & ((c << 1) | ((c << 2) & s1) | ((c << 3) & s12));
	c &= fresh;
	while (c != 0) {
		unsigned j = (unsigned)__builtin_ctzll(c);
		c &= c - 1;
		/* The first of the nine: the ninth digit counting back from j. */
		uint64_t x = wd & (~UINT64_C(0) >> (63 - j));
		for (unsigned i = 1; i < DET_NUMERIC_DIGITS; i++)
			x &= ~(UINT64_C(1) << (63 - __builtin_clzll(x)));
		unsigned f = 63u - (unsigned)__builtin_clzll(x);
		GUARD(emit(ctx, at + f - LOOKBACK, at + j - LOOKBACK + 1));
	}
	return CUSTOS_OK;
}

/* Feeds k <= STEP bytes' masks at absolute offset `at`. */
static custos_err step(det_numeric *st, uint64_t d, uint64_t s, unsigned k, uint64_t at,
                       custos_err (*emit)(void *ctx, uint64_t from, uint64_t to), void *ctx)
{
	uint64_t wd = (st->d >> (64 - LOOKBACK)) | (d << LOOKBACK);
	uint64_t ws = (st->s >> (64 - LOOKBACK)) | (s << LOOKBACK);
	st->d = (st->d >> k) | (d << (64 - k));
	st->s = (st->s >> k) | (s << (64 - k));
	return window(wd, ws, k, at, emit, ctx);
}

custos_err det_numeric_scan(det_numeric *st, const uint8_t *p, size_t n, uint64_t base,
                            custos_err (*emit)(void *ctx, uint64_t from, uint64_t to), void *ctx)
{
	size_t i = 0;
	/* Whole 64-byte blocks: the two windows (new bytes 0..39 and 40..63) checked at once. */
	const uint64_t fresh1 = fresh_bits(STEP), fresh2 = fresh_bits(64 - STEP);
	for (; n - i >= 64; i += 64) {
		uint64_t d, s;
		classify64(p + i, &d, &s);
		uint64_t wd1 = (st->d >> (64 - LOOKBACK)) | (d << LOOKBACK);
		uint64_t ws1 = (st->s >> (64 - LOOKBACK)) | (s << LOOKBACK);
		uint64_t wd2 = d >> (STEP - LOOKBACK), ws2 = s >> (STEP - LOOKBACK);
		st->d = d;
		st->s = s;
		if (!(window_maybe(wd1, ws1, fresh1) | window_maybe(wd2, ws2, fresh2)))
			continue;
		GUARD(window(wd1, ws1, STEP, base + i, emit, ctx));
		GUARD(window(wd2, ws2, 64 - STEP, base + i + STEP, emit, ctx));
	}
	/* The tail (and the small fragments of a stream). */
	while (i < n) {
		unsigned k = n - i < STEP ? (unsigned)(n - i) : STEP;
		uint64_t d, s;
		classify(p + i, k, &d, &s);
		GUARD(step(st, d, s, k, base + i, emit, ctx));
		i += k;
	}
	return CUSTOS_OK;
}
