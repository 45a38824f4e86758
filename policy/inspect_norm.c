/*
 * The normalised view detectors see (docs/INSPECTION.md "Unicode normalisation"): which
 * characters it drops (invisible format characters and combining marks), which become one
 * ASCII byte (Unicode spaces, a few hyphens, fullwidth ASCII forms, tag characters, decimal
 * digits of every script), and which it keeps. Per character, no state: the stream
 * (inspect_stream.c) applies it and keeps the map back to the original bytes.
 */
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "inspect_int.h"

/* The zero of every block of ten Unicode decimal digits (general category Nd, Unicode 15.1)
 * outside ASCII, sorted: a digit d of a block is zero + d. */
static const uint32_t nd_zero[] = {
	0x0660,  0x06F0,  0x07C0,  0x0966,  0x09E6,  0x0A66,  0x0AE6,  0x0B66,  0x0BE6,  0x0C66,
	0x0CE6,  0x0D66,  0x0DE6,  0x0E50,  0x0ED0,  0x0F20,  0x1040,  0x1090,  0x17E0,  0x1810,
	0x1946,  0x19D0,  0x1A80,  0x1A90,  0x1B50,  0x1BB0,  0x1C40,  0x1C50,  0xA620,  0xA8D0,
	0xA900,  0xA9D0,  0xA9F0,  0xAA50,  0xABF0,  0xFF10,  0x104A0, 0x10D30, 0x11066, 0x110F0,
	0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950,
	0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2,
	0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950, 0x1FBF0,
};
const size_t inspect_norm_n_digit_blocks = CUSTOS_ARRAY_LEN(nd_zero);

/* Lead bytes of the UTF-8 sequences inspect_norm_class can change (C2: NBSP, soft hyphen;
 * CC-CD: combining marks; D8-DF: Arabic and NKo digits; E0-E3, EA, EF: three-byte ranges
 * above; F0: supplementary digits; F3: tags and variation selectors). Every other sequence
 * is kept as it is without being decoded: Latin, Cyrillic, CJK text costs one table look-up
 * per character. */
#define L(b) [b] = 1
const uint8_t inspect_norm_lead[256] = {
	L(0xC2), L(0xCC), L(0xCD), L(0xD8), L(0xD9), L(0xDB), L(0xDF), L(0xE0),
	L(0xE1), L(0xE2), L(0xE3), L(0xEA), L(0xEF), L(0xF0), L(0xF3),
};
#undef L

static int digit_of(uint32_t cp)
{
	size_t lo = 0, hi = CUSTOS_ARRAY_LEN(nd_zero);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (nd_zero[mid] + 10 <= cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < CUSTOS_ARRAY_LEN(nd_zero) && cp >= nd_zero[lo])
		return (int)(cp - nd_zero[lo]);
	return -1;
}

int inspect_norm_class(uint32_t cp)
{
	if (cp < 0x80)
		return INSPECT_NORM_KEEP;
	/* Invisible: format characters (zero-width, bidi controls, word joiner, BOM, soft
	 * hyphen, tag controls), variation selectors, and combining marks (a combining low
	 * line or overlay can sit on every digit of a value). */
	if (cp == 0x00AD || (cp >= 0x0300 && cp <= 0x036F) || cp == 0x061C ||
	    (cp >= 0x180B && cp <= 0x180F) || (cp >= 0x1AB0 && cp <= 0x1AFF) ||
	    (cp >= 0x1DC0 && cp <= 0x1DFF) || (cp >= 0x200B && cp <= 0x200F) ||
	    (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x206F) ||
	    (cp >= 0x20D0 && cp <= 0x20FF) || (cp >= 0xFE00 && cp <= 0xFE0F) ||
	    (cp >= 0xFE20 && cp <= 0xFE2F) || cp == 0xFEFF || cp == 0xE0001 || cp == 0xE007F ||
	    (cp >= 0xE0100 && cp <= 0xE01EF))
		return INSPECT_NORM_DROP;
	/* Space separators (Zs) other than U+0020. */
	if (cp == 0x00A0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F ||
	    cp == 0x205F || cp == 0x3000)
		return ' ';
	/* Hyphen, non-breaking hyphen, figure dash, en dash, minus sign. */
	if ((cp >= 0x2010 && cp <= 0x2013) || cp == 0x2212)
		return '-';
	/* Fullwidth ASCII forms (FF10-FF19, the fullwidth digits, are also Nd). */
	if (cp >= 0xFF01 && cp <= 0xFF5E)
		return (int)(cp - 0xFEE0);
	/* Tag characters mirror ASCII and are invisible: text hidden in them is read by models. */
	if (cp >= 0xE0020 && cp <= 0xE007E)
		return (int)(cp - 0xE0000);
	int d = digit_of(cp);
	if (d >= 0)
		return '0' + d;
	return INSPECT_NORM_KEEP;
}

size_t inspect_norm_decode(const uint8_t *p, size_t n, uint32_t *cp)
{
	uint8_t b = p[0];
	size_t len;
	uint32_t min, v;
	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b >= 0xC2 && b <= 0xDF) {
		len = 2, min = 0x80, v = b & 0x1Fu;
	} else if (b >= 0xE0 && b <= 0xEF) {
		len = 3, min = 0x800, v = b & 0x0Fu;
	} else if (b >= 0xF0 && b <= 0xF4) {
		len = 4, min = 0x10000, v = b & 0x07u;
	} else {
		return 0;
	}
	for (size_t k = 1; k < len; k++) {
		if (k >= n)
			return INSPECT_NORM_SHORT; /* valid so far, cut by the end of the text */
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		v = v << 6 | (p[k] & 0x3Fu);
		/* Refused as soon as the second byte shows an overlong form, a surrogate or a
		 * value over U+10FFFF, so a cut sequence is never held back for nothing. */
		if (k == 1 && ((len == 3 && v < 0x20) || (len == 3 && v >= 0x360 && v <= 0x37F) ||
		               (len == 4 && (v < 0x10 || v > 0x10F))))
			return 0;
	}
	if (v < min)
		return 0;
	*cp = v;
	return len;
}

#if defined(__x86_64__)
/* The lead bytes of inspect_norm_lead as two nibble tables (pshufb): a bit per high nibble
 * C, D, E, F, set in the low-nibble table for the leads of that row (C2 CC CD, D8 D9 DB DF,
 * E0-E3 EA EF, F0 F3). SSSE3 is what Hyperscan needs too. Bit k of the result: byte k is one. */
__attribute__((target("ssse3"))) static inline unsigned leads16(__m128i v)
{
	const __m128i hi = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8);
	const __m128i lo = _mm_setr_epi8(12, 4, 5, 12, 0, 0, 0, 0, 2, 2, 4, 2, 1, 1, 0, 6);
	const __m128i nib = _mm_set1_epi8(0x0F);
	__m128i h = _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
	__m128i l = _mm_shuffle_epi8(lo, _mm_and_si128(v, nib));
	return ~(unsigned)_mm_movemask_epi8(
	               _mm_cmpeq_epi8(_mm_and_si128(h, l), _mm_setzero_si128())) &
	       0xFFFFu;
}

/* ASCII 64 bytes a step (one OR and a sign test), other text 16 bytes a step. */
__attribute__((target("ssse3"))) static size_t skip_ssse3(const uint8_t *p, size_t n, size_t i)
{
#define LD(k) _mm_loadu_si128((const __m128i *)(const void *)(p + i + (k)))
	while (i + 64 <= n) {
		__m128i a = LD(0), b = LD(16), c = LD(32), d = LD(48);
		if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) != 0) {
			unsigned m;
			if ((m = leads16(a)) != 0)
				return i + (size_t)__builtin_ctz(m);
			if ((m = leads16(b)) != 0)
				return i + 16 + (size_t)__builtin_ctz(m);
			if ((m = leads16(c)) != 0)
				return i + 32 + (size_t)__builtin_ctz(m);
			if ((m = leads16(d)) != 0)
				return i + 48 + (size_t)__builtin_ctz(m);
		}
		i += 64;
	}
	while (i + 16 <= n) {
		unsigned m = leads16(LD(0));
		if (m != 0)
			return i + (size_t)__builtin_ctz(m);
		i += 16;
	}
#undef LD
	return i;
}
#endif

size_t inspect_norm_skip(const uint8_t *p, size_t n, size_t i)
{
#if defined(__x86_64__)
	if (__builtin_cpu_supports("ssse3")) {
		i = skip_ssse3(p, n, i);
		if (i + 16 <= n)
			return i;
	}
#endif
	while (i + 8 <= n) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w & UINT64_C(0x8080808080808080)) {
			for (size_t e = i + 8; i < e; i++)
				if (inspect_norm_lead[p[i]])
					return i;
		} else {
			i += 8;
		}
	}
	while (i < n && !inspect_norm_lead[p[i]])
		i++;
	return i;
}
