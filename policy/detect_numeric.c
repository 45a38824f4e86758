/*
 * The C scanner for the anchors made of digits, separators, dots and colons (enum
 * det_scan_anchor): the nine-digit anchor shared by cards, national and North American phone
 * numbers, spaced SSNs and IBANs; the IPv4 anchor "d.d.d"; the IPv6 anchor ":hhhh:". It
 * reports exactly what Hyperscan would for their patterns (DET_*_PATTERN, leftmost start, one
 * report per end) and keeps its state across fragments. Character-class patterns like these
 * make Hyperscan step through every digit and colon of logs, tables and JSON; here they cost a
 * few mask operations per 64 bytes.
 *
 * Bit-parallel: the text is classified 64 bytes at a time (SSE2) into masks (digit D,
 * separator S, dot, colon, hex digit). Nine chained digits span at most 9 + 8 * 2 = 25 bytes
 * (the IPv4 anchor 7, the IPv6 anchor 6), so every report among up to 40 new bytes is decided
 * by a 64-bit window holding the 24 bytes before them plus the new ones. In that window a
 * digit is the k-th of a chain when the digit one, two (over one separator) or three (over
 * two) bytes before it is the (k-1)-th:
 *   C(k) = D & (C(k-1) << 1 | C(k-1) << 2 & S << 1 | C(k-1) << 3 & S << 1 & S << 2),
 * and C(9) marks the reports; most windows skip those eight steps, since a report needs nine
 * consecutive digit-or-separator bytes ending at a new digit. The IPv4 and IPv6 anchors are
 * a handful of shifts and ANDs each. The state between fragments is the masks of the last 64
 * bytes.
 */
#include <string.h>

#include "inspect_int.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LOOKBACK 24 /* bytes of a match before its last byte, at most */
#define STEP     40 /* new bytes per window: LOOKBACK + STEP == 64 */

typedef custos_err (*emit_fn)(void *ctx, unsigned anchor, uint64_t from, uint64_t to);

int det_scan_anchor_of(const char *pattern)
{
	if (strcmp(pattern, DET_NUMERIC_PATTERN) == 0)
		return DET_SCAN_NUMERIC;
	if (strcmp(pattern, DET_IPV4_PATTERN) == 0)
		return DET_SCAN_IPV4;
	if (strcmp(pattern, DET_IPV6_PATTERN) == 0)
		return DET_SCAN_IPV6;
	return -1;
}

/* Class masks of up to 64 bytes: bit k for byte k. */
typedef struct masks {
	uint64_t d, s, dot, col, hex;
} masks;

static inline bool num_sep(uint8_t c)
{
	return c == ' ' || c == '.' || c == '(' || c == ')' || c == '-';
}

static inline bool num_digit(uint8_t c)
{
	return (unsigned)(c - '0') <= 9;
}

static void classify(const uint8_t *p, size_t n, masks *m)
{
	memset(m, 0, sizeof(*m));
	for (size_t k = 0; k < n; k++) {
		uint8_t c = p[k];
		bool d = num_digit(c);
		m->d |= (uint64_t)d << k;
		m->s |= (uint64_t)num_sep(c) << k;
		m->dot |= (uint64_t)(c == '.') << k;
		m->col |= (uint64_t)(c == ':') << k;
		m->hex |= (uint64_t)(d || (unsigned)((c | 0x20) - 'a') <= 5) << k;
	}
}

#if defined(__SSE2__)
/* The same for 64 bytes, without branches. */
static inline __m128i in_range(__m128i v, char lo, char width)
{
	__m128i x = _mm_sub_epi8(v, _mm_set1_epi8(lo));
	return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(width)), x);
}

static inline uint64_t mm16(__m128i x, unsigned at)
{
	return (uint64_t)(unsigned)_mm_movemask_epi8(x) << at;
}

static inline void classify64(const uint8_t *p, masks *m)
{
	memset(m, 0, sizeof(*m));
	for (unsigned k = 0; k < 64; k += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + k));
		__m128i d = in_range(v, '0', 9), dot = _mm_cmpeq_epi8(v, _mm_set1_epi8('.'));
		/* ' ', '(' ')' (0x28..0x29), '-' '.' (0x2d..0x2e) */
		__m128i s = _mm_or_si128(
		        _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')), in_range(v, '(', 1)),
		        in_range(v, '-', 1));
		__m128i hex =
		        _mm_or_si128(d, in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 5));
		m->d |= mm16(d, k);
		m->s |= mm16(s, k);
		m->dot |= mm16(dot, k);
		m->col |= mm16(_mm_cmpeq_epi8(v, _mm_set1_epi8(':')), k);
		m->hex |= mm16(hex, k);
	}
}
#else
static inline void classify64(const uint8_t *p, masks *m)
{
	classify(p, 64, m);
}
#endif

static inline uint64_t fresh_bits(unsigned k)
{
	uint64_t hi = k >= 64 - LOOKBACK ? ~UINT64_C(0) : (UINT64_C(1) << (LOOKBACK + k)) - 1;
	return hi & ~((UINT64_C(1) << LOOKBACK) - 1);
}

static inline unsigned top_below(uint64_t x, unsigned j)
{
	x &= (UINT64_C(1) << j) - 1; /* j >= 1: a match has a byte before its last */
	return 63u - (unsigned)__builtin_clzll(x);
}

/* Reports of one window: bits [LOOKBACK, LOOKBACK + k) of w are the new bytes (mask `fresh`),
 * the ones below them the bytes before; bit LOOKBACK is at absolute offset `at`. */
static custos_err window(const masks *w, uint64_t fresh, uint64_t at, unsigned want, emit_fn emit,
                         void *ctx)
{
	const uint64_t d = w->d;
	uint64_t num = 0, v4 = 0, v6 = 0;
	if (want & (1u << DET_SCAN_NUMERIC)) {
		/* Nine consecutive digit-or-separator bytes ending at a new digit. */
		uint64_t t = d | w->s, r2 = t & (t << 1), r4 = r2 & (r2 << 2), r8 = r4 & (r4 << 4);
		num = r8 & (t << 8) & d & fresh;
	}
	if (want & (1u << DET_SCAN_IPV4)) {
		/* m1: a first middle digit (after "d."); m: the last one, 1..3 digits on. */
		uint64_t m1 = d & (w->dot << 1) & (d << 2), m2 = (m1 << 1) & d, m3 = (m2 << 1) & d;
		v4 = d & (w->dot << 1) & ((m1 | m2 | m3) << 2) & fresh;
	}
	if (want & (1u << DET_SCAN_IPV6)) {
		/* p: positions 0..4 hex digits after a colon. */
		uint64_t p = w->col << 1, acc = p;
		for (unsigned i = 0; i < 4; i++) {
			p = (p & w->hex) << 1;
			acc |= p;
		}
		v6 = w->col & acc & fresh;
	}
	if ((num | v4 | v6) == 0)
		return CUSTOS_OK;
	if (num != 0) {
		uint64_t s1 = w->s << 1, s12 = s1 & (w->s << 2), c = d;
		for (unsigned i = 1; i < DET_NUMERIC_DIGITS; i++)
			c = d & ((c << 1) | ((c << 2) & s1) | ((c << 3) & s12));
		for (c &= fresh; c != 0; c &= c - 1) {
			unsigned j = (unsigned)__builtin_ctzll(c);
			/* The first of the nine: the ninth digit counting back from j. */
			uint64_t x = d & (~UINT64_C(0) >> (63 - j));
			for (unsigned i = 1; i < DET_NUMERIC_DIGITS; i++)
				x &= ~(UINT64_C(1) << (63 - __builtin_clzll(x)));
			unsigned f = 63u - (unsigned)__builtin_clzll(x);
			GUARD(emit(ctx, DET_SCAN_NUMERIC, at + f - LOOKBACK,
			           at + j - LOOKBACK + 1));
		}
	}
	for (; v4 != 0; v4 &= v4 - 1) {
		unsigned j = (unsigned)__builtin_ctzll(v4);
		/* The dot before the middle digits, and the digit before it. */
		unsigned f = top_below(w->dot, j - 1) - 1;
		GUARD(emit(ctx, DET_SCAN_IPV4, at + f - LOOKBACK, at + j - LOOKBACK + 1));
	}
	for (; v6 != 0; v6 &= v6 - 1) {
		unsigned j = (unsigned)__builtin_ctzll(v6);
		unsigned f = top_below(w->col, j);
		GUARD(emit(ctx, DET_SCAN_IPV6, at + f - LOOKBACK, at + j - LOOKBACK + 1));
	}
	return CUSTOS_OK;
}

/* The window of the last LOOKBACK bytes of the state plus k <= STEP new bytes' masks. */
#define WIN(field) ((st->field >> (64 - LOOKBACK)) | (m->field << LOOKBACK))
#define PUSH(field, k)                                                                             \
	(st->field = (k) == 64 ? m->field : (st->field >> (k)) | (m->field << (64 - (k))))

static inline void window_of(const det_numeric *st, const masks *m, masks *w)
{
	w->d = WIN(d);
	w->s = WIN(s);
	w->dot = WIN(dot);
	w->col = WIN(col);
	w->hex = WIN(hex);
}

static inline void push(det_numeric *st, const masks *m, unsigned k)
{
	PUSH(d, k);
	PUSH(s, k);
	PUSH(dot, k);
	PUSH(col, k);
	PUSH(hex, k);
}

custos_err det_numeric_scan(det_numeric *st, unsigned want, const uint8_t *p, size_t n,
                            uint64_t base, emit_fn emit, void *ctx)
{
	size_t i = 0;
	/* Whole 64-byte blocks: two windows, new bytes 0..39 and 40..63. */
	const uint64_t fresh1 = fresh_bits(STEP), fresh2 = fresh_bits(64 - STEP);
	for (; n - i >= 64; i += 64) {
		masks m, w1, w2;
		classify64(p + i, &m);
		window_of(st, &m, &w1);
		w2 = (masks){ .d = m.d >> (STEP - LOOKBACK),
			      .s = m.s >> (STEP - LOOKBACK),
			      .dot = m.dot >> (STEP - LOOKBACK),
			      .col = m.col >> (STEP - LOOKBACK),
			      .hex = m.hex >> (STEP - LOOKBACK) };
		push(st, &m, 64);
		GUARD(window(&w1, fresh1, base + i, want, emit, ctx));
		GUARD(window(&w2, fresh2, base + i + STEP, want, emit, ctx));
	}
	/* The tail, and the small fragments of a stream. */
	while (i < n) {
		unsigned k = n - i < STEP ? (unsigned)(n - i) : STEP;
		masks m, w;
		classify(p + i, k, &m);
		window_of(st, &m, &w);
		push(st, &m, k);
		GUARD(window(&w, fresh_bits(k), base + i, want, emit, ctx));
		i += k;
	}
	return CUSTOS_OK;
}
