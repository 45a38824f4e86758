/*
 * The numeric anchor, outside Hyperscan: runs of nine digits with at most two separator bytes
 * ([ .()-]) between consecutive digits, the shared anchor of cards, national and North
 * American phone numbers, spaced SSNs and IBANs. It reports exactly what the pattern
 * DET_NUMERIC_PATTERN with leftmost start would (one report per digit from the ninth on, the
 * start being the digit eight digits back), and keeps its state across fragments. Blocks of
 * 16 bytes without a digit are skipped with SSE2: they always end a run.
 */
#include "inspect_int.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline bool num_sep(uint8_t c)
{
	return c == ' ' || c == '.' || c == '(' || c == ')' || c == '-';
}

/* Bit k set when p[k] is a digit, k < n <= 16. */
static inline unsigned digit_mask(const uint8_t *p, size_t n)
{
#if defined(__SSE2__)
	if (n == 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		__m128i d = _mm_sub_epi8(v, _mm_set1_epi8('0'));
		__m128i is = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
		return (unsigned)_mm_movemask_epi8(is);
	}
#endif
	unsigned m = 0;
	for (size_t k = 0; k < n; k++)
		m |= (unsigned)((unsigned)(p[k] - '0') <= 9) << k;
	return m;
}

custos_err det_numeric_scan(det_numeric *st, const uint8_t *p, size_t n, uint64_t base,
                            custos_err (*emit)(void *ctx, uint64_t from, uint64_t to), void *ctx)
{
	/* The state lives in locals (p's bytes may alias *st for the compiler) and is written
	 * back before each report and at the end. */
	uint64_t count = st->count;
	unsigned gap = st->gap, ring = st->ring;
	size_t i = 0;
	while (i < n) {
		size_t i0 = i, end = n - i >= 16 ? i + 16 : n;
		unsigned mask = digit_mask(p + i0, end - i0);
		if (mask == 0 && end - i0 == 16) {
			count = 0; /* 16 bytes without a digit end any run */
			gap = 0;
			i = end;
			continue;
		}
		while (i < end) {
			if (count == 0) {
				/* Outside a run only a digit matters: jump to the next one. */
				unsigned rest = mask >> (i - i0);
				if (rest == 0) {
					i = end;
					break;
				}
				i += (size_t)__builtin_ctz(rest);
			}
			uint8_t c = p[i];
			if ((unsigned)(c - '0') <= 9) {
				st->pos[ring] = base + i;
				ring = ring == DET_NUMERIC_DIGITS - 1 ? 0 : ring + 1;
				count++;
				gap = 0;
				if (count >= DET_NUMERIC_DIGITS) {
					/* pos[ring] is now the oldest of the last nine digits */
					st->count = count;
					st->gap = gap;
					st->ring = ring;
					GUARD(emit(ctx, st->pos[ring], base + i + 1));
				}
			} else if (count > 0 && gap < 2 && num_sep(c)) {
				gap++;
			} else {
				count = 0;
				gap = 0;
				ring = 0;
			}
			i++;
		}
	}
	st->count = count;
	st->gap = gap;
	st->ring = ring;
	return CUSTOS_OK;
}
