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

/* Single characters that read as one ASCII letter, digit or punctuation mark and are not
 * decimal digits (category No, So, Lu/Ll of other blocks): superscript and subscript digits and
 * letters, circled, parenthesised and full-stop digits and letters, mathematical alphanumeric
 * letters, letter-like symbols and Roman numerals of one letter, and look-alike punctuation.
 * Characters that stand for two or more are in multi[] below. */
static const struct lookalike {
	uint32_t from, to; /* code points from..to... */
	uint8_t first;     /* ...become first, first + 1, ... (in order), or first only */
	uint8_t same;      /* (all of them the same letter) */
} lookalike[] = {
	{ 0x00B2, 0x00B3, '2', 0 },   { 0x00B7, 0x00B7, '.', 0 },   { 0x00B9, 0x00B9, '1', 0 },
	{ 0x2024, 0x2024, '.', 0 },   { 0x2027, 0x2027, '.', 0 },   { 0x2043, 0x2043, '-', 0 },
	{ 0x2070, 0x2070, '0', 0 },   { 0x2071, 0x2071, 'i', 0 },   { 0x2074, 0x2079, '4', 0 },
	{ 0x207A, 0x207A, '+', 0 },   { 0x207B, 0x207B, '-', 0 },   { 0x207F, 0x207F, 'n', 0 },
	{ 0x2080, 0x2089, '0', 0 },   { 0x208A, 0x208A, '+', 0 },   { 0x208B, 0x208B, '-', 0 },
	{ 0x2090, 0x2090, 'a', 0 },   { 0x2091, 0x2091, 'e', 0 },   { 0x2092, 0x2092, 'o', 0 },
	{ 0x2093, 0x2093, 'x', 0 },   { 0x2095, 0x2095, 'h', 0 },   { 0x2096, 0x2099, 'k', 0 },
	{ 0x209A, 0x209A, 'p', 0 },   { 0x209B, 0x209C, 's', 0 },   { 0x2102, 0x2102, 'C', 0 },
	{ 0x210A, 0x210A, 'g', 0 },   { 0x210B, 0x210D, 'H', 1 },   { 0x210E, 0x210E, 'h', 0 },
	{ 0x2110, 0x2111, 'I', 1 },   { 0x2112, 0x2112, 'L', 0 },   { 0x2113, 0x2113, 'l', 0 },
	{ 0x2115, 0x2115, 'N', 0 },   { 0x2119, 0x2119, 'P', 0 },   { 0x211A, 0x211A, 'Q', 0 },
	{ 0x211B, 0x211D, 'R', 1 },   { 0x2124, 0x2124, 'Z', 0 },   { 0x2128, 0x2128, 'Z', 0 },
	{ 0x212A, 0x212A, 'K', 0 },   { 0x212C, 0x212C, 'B', 0 },   { 0x212D, 0x212D, 'C', 0 },
	{ 0x212F, 0x212F, 'e', 0 },   { 0x2130, 0x2130, 'E', 0 },   { 0x2131, 0x2131, 'F', 0 },
	{ 0x2133, 0x2133, 'M', 0 },   { 0x2134, 0x2134, 'o', 0 },   { 0x2139, 0x2139, 'i', 0 },
	{ 0x2145, 0x2145, 'D', 0 },   { 0x2146, 0x2146, 'd', 0 },   { 0x2147, 0x2147, 'e', 0 },
	{ 0x2148, 0x2148, 'i', 0 },   { 0x2149, 0x2149, 'j', 0 },   { 0x2160, 0x2160, 'I', 0 },
	{ 0x2164, 0x2164, 'V', 0 },   { 0x2169, 0x2169, 'X', 0 },   { 0x216C, 0x216C, 'L', 0 },
	{ 0x216D, 0x216D, 'C', 0 },   { 0x216E, 0x216E, 'D', 0 },   { 0x216F, 0x216F, 'M', 0 },
	{ 0x2170, 0x2170, 'i', 0 },   { 0x2174, 0x2174, 'v', 0 },   { 0x2179, 0x2179, 'x', 0 },
	{ 0x217C, 0x217C, 'l', 0 },   { 0x217D, 0x217D, 'c', 0 },   { 0x217E, 0x217E, 'd', 0 },
	{ 0x217F, 0x217F, 'm', 0 },   { 0x2219, 0x2219, '.', 0 },   { 0x2460, 0x2468, '1', 0 },
	{ 0x2474, 0x247C, '1', 0 },   { 0x2488, 0x2490, '1', 0 },   { 0x249C, 0x24B5, 'a', 0 },
	{ 0x24B6, 0x24CF, 'A', 0 },   { 0x24D0, 0x24E9, 'a', 0 },   { 0x24EA, 0x24EA, '0', 0 },
	{ 0x24F5, 0x24FD, '1', 0 },   { 0x24FF, 0x24FF, '0', 0 },   { 0x2776, 0x277E, '1', 0 },
	{ 0x2780, 0x2788, '1', 0 },   { 0x278A, 0x2792, '1', 0 },   { 0x30FB, 0x30FB, '.', 0 },
	{ 0xFE52, 0xFE52, '.', 0 },   { 0xFE62, 0xFE62, '+', 0 },   { 0xFE63, 0xFE63, '-', 0 },
	{ 0xFE6B, 0xFE6B, '@', 0 },   { 0xFF65, 0xFF65, '.', 0 },   { 0x1D6A4, 0x1D6A4, 'i', 0 },
	{ 0x1D6A5, 0x1D6A5, 'j', 0 }, { 0x1F100, 0x1F100, '0', 0 }, { 0x1F101, 0x1F10A, '0', 0 },
	{ 0x1F10B, 0x1F10C, '0', 1 }, { 0x1F110, 0x1F129, 'A', 0 }, { 0x1F130, 0x1F149, 'A', 0 },
	{ 0x1F150, 0x1F169, 'A', 0 }, { 0x1F170, 0x1F189, 'A', 0 },
};

static int lookalike_of(uint32_t cp)
{
	/* Mathematical alphanumeric letters: 13 styles of A-Z a-z from U+1D400 (the holes of
	 * the block are unassigned; their letter-like symbols are in the table). */
	if (cp >= 0x1D400 && cp < 0x1D400 + 13 * 52) {
		uint32_t k = (cp - 0x1D400) % 52;
		return k < 26 ? 'A' + (int)k : 'a' + (int)(k - 26);
	}
	size_t lo = 0, hi = CUSTOS_ARRAY_LEN(lookalike);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (lookalike[mid].to < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < CUSTOS_ARRAY_LEN(lookalike) && cp >= lookalike[lo].from)
		return lookalike[lo].first +
		       (lookalike[lo].same ? 0 : (int)(cp - lookalike[lo].from));
	return INSPECT_NORM_KEEP;
}

/* Characters that stand for two to four ASCII characters, sorted: numbers 10..50 in circles,
 * parentheses, with a full stop, negative and double circled (as their digits, like the
 * one-digit forms above), vulgar fractions (with '/'), Latin ligatures and Roman numerals of
 * several letters. A view byte is then one of the bytes a character makes: a finding that
 * covers any of them covers the whole character in the text. */
static const struct multi {
	uint32_t cp;
	char s[INSPECT_NORM_MAX_EXPAND + 1];
} multi[] = {
	{ 0x00BC, "1/4" },  { 0x00BD, "1/2" },  { 0x00BE, "3/4" }, { 0x2150, "1/7" },
	{ 0x2151, "1/9" },  { 0x2152, "1/10" }, { 0x2153, "1/3" }, { 0x2154, "2/3" },
	{ 0x2155, "1/5" },  { 0x2156, "2/5" },  { 0x2157, "3/5" }, { 0x2158, "4/5" },
	{ 0x2159, "1/6" },  { 0x215A, "5/6" },  { 0x215B, "1/8" }, { 0x215C, "3/8" },
	{ 0x215D, "5/8" },  { 0x215E, "7/8" },  { 0x215F, "1/" },  { 0x2161, "II" },
	{ 0x2162, "III" },  { 0x2163, "IV" },   { 0x2165, "VI" },  { 0x2166, "VII" },
	{ 0x2167, "VIII" }, { 0x2168, "IX" },   { 0x216A, "XI" },  { 0x216B, "XII" },
	{ 0x2171, "ii" },   { 0x2172, "iii" },  { 0x2173, "iv" },  { 0x2175, "vi" },
	{ 0x2176, "vii" },  { 0x2177, "viii" }, { 0x2178, "ix" },  { 0x217A, "xi" },
	{ 0x217B, "xii" },  { 0x2189, "0/3" },  { 0x2469, "10" },  { 0x246A, "11" },
	{ 0x246B, "12" },   { 0x246C, "13" },   { 0x246D, "14" },  { 0x246E, "15" },
	{ 0x246F, "16" },   { 0x2470, "17" },   { 0x2471, "18" },  { 0x2472, "19" },
	{ 0x2473, "20" },   { 0x247D, "10" },   { 0x247E, "11" },  { 0x247F, "12" },
	{ 0x2480, "13" },   { 0x2481, "14" },   { 0x2482, "15" },  { 0x2483, "16" },
	{ 0x2484, "17" },   { 0x2485, "18" },   { 0x2486, "19" },  { 0x2487, "20" },
	{ 0x2491, "10" },   { 0x2492, "11" },   { 0x2493, "12" },  { 0x2494, "13" },
	{ 0x2495, "14" },   { 0x2496, "15" },   { 0x2497, "16" },  { 0x2498, "17" },
	{ 0x2499, "18" },   { 0x249A, "19" },   { 0x249B, "20" },  { 0x24EB, "11" },
	{ 0x24EC, "12" },   { 0x24ED, "13" },   { 0x24EE, "14" },  { 0x24EF, "15" },
	{ 0x24F0, "16" },   { 0x24F1, "17" },   { 0x24F2, "18" },  { 0x24F3, "19" },
	{ 0x24F4, "20" },   { 0x24FE, "10" },   { 0x277F, "10" },  { 0x2789, "10" },
	{ 0x2793, "10" },   { 0x3251, "21" },   { 0x3252, "22" },  { 0x3253, "23" },
	{ 0x3254, "24" },   { 0x3255, "25" },   { 0x3256, "26" },  { 0x3257, "27" },
	{ 0x3258, "28" },   { 0x3259, "29" },   { 0x325A, "30" },  { 0x325B, "31" },
	{ 0x325C, "32" },   { 0x325D, "33" },   { 0x325E, "34" },  { 0x325F, "35" },
	{ 0x32B1, "36" },   { 0x32B2, "37" },   { 0x32B3, "38" },  { 0x32B4, "39" },
	{ 0x32B5, "40" },   { 0x32B6, "41" },   { 0x32B7, "42" },  { 0x32B8, "43" },
	{ 0x32B9, "44" },   { 0x32BA, "45" },   { 0x32BB, "46" },  { 0x32BC, "47" },
	{ 0x32BD, "48" },   { 0x32BE, "49" },   { 0x32BF, "50" },  { 0xFB00, "ff" },
	{ 0xFB01, "fi" },   { 0xFB02, "fl" },   { 0xFB03, "ffi" }, { 0xFB04, "ffl" },
	{ 0xFB05, "st" },   { 0xFB06, "st" },
};

static int multi_of(uint32_t cp)
{
	size_t lo = 0, hi = CUSTOS_ARRAY_LEN(multi);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (multi[mid].cp < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < CUSTOS_ARRAY_LEN(multi) && multi[lo].cp == cp)
		return INSPECT_NORM_MULTI + (int)lo;
	return INSPECT_NORM_KEEP;
}

size_t inspect_norm_multi(int cls, const uint8_t **bytes)
{
	size_t k = (size_t)(cls - INSPECT_NORM_MULTI);
	if (cls < INSPECT_NORM_MULTI || k >= CUSTOS_ARRAY_LEN(multi))
		return 0;
	*bytes = (const uint8_t *)multi[k].s;
	return strlen(multi[k].s);
}

int inspect_norm_class(uint32_t cp)
{
	if (cp < 0x80 || (cp >= 0x0370 && cp < 0x0530)) /* ASCII, Greek and Cyrillic: kept */
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
	int c = lookalike_of(cp);
	return c != INSPECT_NORM_KEEP ? c : multi_of(cp);
}

/* Cyrillic and Greek letters that look like a Latin letter (or Cyrillic Ze like 3), sorted.
 * They are mapped only inside a word that also holds a Latin letter or a digit (see
 * inspect_norm_word). */
#define C(cp, to) [(cp)-0x0370] = (to)
static const uint8_t confusable[0x0530 - 0x0370] = {
	C(0x037F, 'J'), C(0x0391, 'A'), C(0x0392, 'B'), C(0x0395, 'E'), C(0x0396, 'Z'),
	C(0x0397, 'H'), C(0x0399, 'I'), C(0x039A, 'K'), C(0x039C, 'M'), C(0x039D, 'N'),
	C(0x039F, 'O'), C(0x03A1, 'P'), C(0x03A4, 'T'), C(0x03A5, 'Y'), C(0x03A7, 'X'),
	C(0x03B1, 'a'), C(0x03B9, 'i'), C(0x03BA, 'k'), C(0x03BD, 'v'), C(0x03BF, 'o'),
	C(0x03C1, 'p'), C(0x03C5, 'u'), C(0x03D2, 'Y'), C(0x03F2, 'c'), C(0x03F3, 'j'),
	C(0x03F9, 'C'), C(0x0405, 'S'), C(0x0406, 'I'), C(0x0408, 'J'), C(0x0410, 'A'),
	C(0x0412, 'B'), C(0x0415, 'E'), C(0x0417, '3'), C(0x041A, 'K'), C(0x041C, 'M'),
	C(0x041D, 'H'), C(0x041E, 'O'), C(0x0420, 'P'), C(0x0421, 'C'), C(0x0422, 'T'),
	C(0x0423, 'Y'), C(0x0425, 'X'), C(0x0430, 'a'), C(0x0435, 'e'), C(0x043E, 'o'),
	C(0x0440, 'p'), C(0x0441, 'c'), C(0x0443, 'y'), C(0x0445, 'x'), C(0x0455, 's'),
	C(0x0456, 'i'), C(0x0458, 'j'), C(0x04AE, 'Y'), C(0x04AF, 'y'), C(0x04BB, 'h'),
	C(0x04C0, 'I'), C(0x04CF, 'l'), C(0x0501, 'd'), C(0x051A, 'Q'), C(0x051B, 'q'),
	C(0x051C, 'W'), C(0x051D, 'w')
};
#undef C
const size_t inspect_norm_n_confusables = 62;

int inspect_norm_confusable(uint32_t cp)
{
	return cp >= 0x0370 && cp < 0x0530 ? confusable[cp - 0x0370] : 0;
}

/* ASCII bytes that belong to a word for the look-alike rule: letters, digits, and the
 * punctuation inside addresses, tokens and base64 (._-@+/=%). */
static const uint8_t word_tab[256] = {
	['%'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['/'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1,
	['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['='] = 1,
	['@'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
	['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1,
	['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,
	['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['_'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,
	['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
	['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1
};

static inline bool word_ascii(uint8_t b)
{
	return word_tab[b] & 1u;
}

int inspect_norm_word(uint32_t cp)
{
	if (cp >= 0x0370 && cp < 0x0530) /* Greek and Cyrillic: the view keeps them all */
		return confusable[cp - 0x0370] ? INSPECT_WORD_LOOKALIKE : INSPECT_WORD_SCRIPT;
	int c = cp < 0x80 ? (int)cp : inspect_norm_class(cp);
	if (c == INSPECT_NORM_DROP)
		return INSPECT_WORD_JOIN;
	if (c >= INSPECT_NORM_MULTI) /* every one holds a digit or a letter */
		return INSPECT_WORD_LATIN;
	if (c > 0)
		return (uint8_t)((c | 0x20) - 'a') < 26 || (uint8_t)(c - '0') < 10
		               ? INSPECT_WORD_LATIN
		       : word_ascii((uint8_t)c) ? INSPECT_WORD_JOIN
		                                : INSPECT_WORD_BREAK;
	return INSPECT_WORD_BREAK;
}

/* Accumulates one character's word class; false when it breaks the word. */
static bool word_add(inspect_norm_wordinfo *w, int k)
{
	if (k == INSPECT_WORD_BREAK)
		return false;
	w->latin = w->latin || k == INSPECT_WORD_LATIN;
	w->lookalike = w->lookalike || k == INSPECT_WORD_LOOKALIKE;
	return true;
}

static inline int word_ascii_class(uint8_t b)
{
	if ((uint8_t)((b | 0x20) - 'a') < 26 || (uint8_t)(b - '0') < 10)
		return INSPECT_WORD_LATIN;
	return word_ascii(b) ? INSPECT_WORD_JOIN : INSPECT_WORD_BREAK;
}

static inline bool cg_lead(uint8_t b)
{
	return (uint8_t)(b - 0xCE) <= 6;
}

/* The word class of the character at p[j] (ASCII and two-byte Greek and Cyrillic without a
 * call), its length in *len (INSPECT_NORM_SHORT: cut by the end), or -1: not UTF-8. */
static inline int word_class_at(const uint8_t *p, size_t n, size_t j, size_t *len)
{
	uint8_t b = p[j];
	if (b < 0x80) {
		*len = 1;
		return word_ascii_class(b);
	}
	uint32_t cp = (uint32_t)(b & 0x1F) << 6 | (j + 1 < n ? p[j + 1] & 0x3Fu : 0);
	/* D4 leads the end of Cyrillic and the start of Armenian (from U+0530): not in the table */
	if (cg_lead(b) && j + 1 < n && (p[j + 1] & 0xC0) == 0x80 && cp < 0x0530) {
		*len = 2;
		return confusable[cp - 0x0370] ? INSPECT_WORD_LOOKALIKE : INSPECT_WORD_SCRIPT;
	}
	*len = inspect_norm_decode(p + j, n - j, &cp);
	if (*len == INSPECT_NORM_SHORT)
		return INSPECT_WORD_BREAK;
	return *len == 0 ? -1 : inspect_norm_word(cp);
}

void inspect_norm_word_at(const uint8_t *p, size_t n, size_t lo, size_t i, inspect_norm_wordinfo *w)
{
	memset(w, 0, sizeof(*w));
	w->start = w->end = i;
	/* forward from i */
	size_t j = i, l;
	while (j < n) {
		int k = word_class_at(p, n, j, &l);
		if (l == INSPECT_NORM_SHORT) {
			w->cut = true; /* a character the end cuts: the word may go on */
			j = n;
			break;
		}
		if (k < 0 || !word_add(w, k))
			break;
		j += l;
	}
	w->end = j;
	w->open_end = j == n;
	if (j == i)
		return; /* i is not in a word */
	/* back from i, to lo at most */
	size_t k = i;
	while (k > lo) {
		size_t b = k - 1;
		while (b > lo && k - b < 4 && (p[b] & 0xC0) == 0x80)
			b--;
		int c = word_class_at(p, k, b, &l);
		if (c < 0 || l != k - b || !word_add(w, c))
			break;
		k = b;
	}
	w->start = k;
	w->open_start = k == lo;
}

/* Whether p[i] may start a look-alike that needs a look at its word: a Greek or Cyrillic lead
 * byte (CE..D4; CD is a lead already) with an ASCII byte of a word right before it or right
 * after its character, but for a '.' or '-' with no ASCII byte of a word beyond it (a full stop
 * or a hyphen between Cyrillic words). A word that mixes scripts has such a pair or a lead byte
 * (a character the view changes) where its Greek or Cyrillic part meets the rest: the run of
 * ASCII next to it is one Latin letter or digit, or has a second ASCII byte of a word beyond
 * its '.' or '-'. So every such word is looked at, in a block or in a fragment that holds both
 * parts (a fragment that holds one is decided by the word state). */
static inline bool joiner_ok(const uint8_t *p, size_t n, size_t x, size_t y)
{
	return word_ascii(p[x]) && ((p[x] != '.' && p[x] != '-') || (y < n && word_ascii(p[y])));
}

bool inspect_norm_stop(const uint8_t *p, size_t n, size_t i)
{
	return inspect_norm_lead[p[i]] ||
	       (cg_lead(p[i]) && ((i >= 1 && joiner_ok(p, n, i - 1, i >= 2 ? i - 2 : n)) ||
	                          (i + 2 < n && joiner_ok(p, n, i + 2, i + 3))));
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
 * E0-E3 EA EF, F0 F3); and two more bits for the Greek and Cyrillic leads of rows C and D (CE
 * CF, D0-D4). SSSE3 is what Hyperscan needs too. Bit k of *lead, *cg: byte k is one. */
__attribute__((target("ssse3"))) static inline void leads16(__m128i v, unsigned *lead, unsigned *cg)
{
	const __m128i hi = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 34, 4, 8);
	const __m128i lo = _mm_setr_epi8(44, 36, 37, 44, 32, 0, 0, 0, 2, 2, 4, 2, 1, 1, 16, 22);
	const __m128i nib = _mm_set1_epi8(0x0F);
	__m128i h = _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
	__m128i t = _mm_and_si128(h, _mm_shuffle_epi8(lo, _mm_and_si128(v, nib)));
	*lead = ~(unsigned)_mm_movemask_epi8(
	                _mm_cmpeq_epi8(_mm_and_si128(t, nib), _mm_setzero_si128())) &
	        0xFFFFu;
	*cg = ~(unsigned)_mm_movemask_epi8(
	              _mm_cmpeq_epi8(_mm_and_si128(t, _mm_set1_epi8(0x30)), _mm_setzero_si128())) &
	      0xFFFFu;
}

/* ASCII bytes of a word (word_ascii) as two nibble tables: a bit per high nibble 2..7, set in
 * the low-nibble table where that row holds one. */
__attribute__((target("ssse3"))) static inline unsigned word16(__m128i v)
{
	const __m128i hi = _mm_setr_epi8(0, 0, 1, 2, 4, 8, 16, 32, 0, 0, 0, 0, 0, 0, 0, 0);
	const __m128i lo =
	        _mm_setr_epi8(46, 62, 62, 62, 62, 63, 62, 62, 62, 62, 60, 21, 20, 23, 21, 29);
	const __m128i nib = _mm_set1_epi8(0x0F);
	__m128i h = _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
	__m128i l = _mm_shuffle_epi8(lo, _mm_and_si128(v, nib));
	return ~(unsigned)_mm_movemask_epi8(
	               _mm_cmpeq_epi8(_mm_and_si128(h, l), _mm_setzero_si128())) &
	       0xFFFFu;
}

/* inspect_norm_stop for the 16 bytes v = p[j..j+16): lead bytes, and Greek or Cyrillic leads
 * next to an ASCII byte of a word (bytes j-1 and j+17 read when they exist). */
__attribute__((target("ssse3"))) static inline unsigned stop16(const uint8_t *p, size_t n, size_t j,
                                                               __m128i v)
{
	unsigned m, cg;
	leads16(v, &m, &cg);
	if (cg == 0)
		return m;
	if (j >= 2 && j + 19 <= n) {
#define LDJ(k) _mm_loadu_si128((const __m128i *)(const void *)(p + j + (k)))
		__m128i b1 = LDJ(-1), a2 = LDJ(2);
		unsigned dd1 = (unsigned)_mm_movemask_epi8(
		        _mm_or_si128(_mm_cmpeq_epi8(b1, _mm_set1_epi8('.')),
		                     _mm_cmpeq_epi8(b1, _mm_set1_epi8('-'))));
		unsigned dd2 = (unsigned)_mm_movemask_epi8(
		        _mm_or_si128(_mm_cmpeq_epi8(a2, _mm_set1_epi8('.')),
		                     _mm_cmpeq_epi8(a2, _mm_set1_epi8('-'))));
		unsigned before = word16(b1) & (~dd1 | word16(LDJ(-2)));
		unsigned after = word16(a2) & (~dd2 | word16(LDJ(3)));
#undef LDJ
		return m | (cg & (before | after));
	}
	for (unsigned k = 0; k < 16; k++)
		if ((cg >> k & 1u) && inspect_norm_stop(p, n, j + k))
			m |= 1u << k;
	return m;
}

__attribute__((target("ssse3"))) static inline unsigned dd16(__m128i v)
{
	return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('.')),
	                                                _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))));
}

/* The 64-byte steps of the search look at a window of 64 bytes, p[b..b+64), as bit masks (bit k:
 * byte b+k): lead bytes m, Greek and Cyrillic leads cg, ASCII bytes of a word w, and '.' and '-'
 * dd. inspect_norm_stop at b+k reads bytes b+k-2..b+k+3, so the window decides positions 2..60
 * (WIN_DECIDED) from its own bytes: no byte around it is read one by one, and a window moves
 * on by 59 (by 62 over ASCII, which holds no stop). */
#define WIN_DECIDED (((UINT64_C(1) << 61) - 1) & ~UINT64_C(3))
#define WIN_STEP    59

/* Whether a Greek or Cyrillic lead at a decided position has an ASCII word byte right before it
 * or right after its pair: then win_stops has to look at the '.' and '-' among them. */
static inline bool win_near(uint64_t cg, uint64_t w)
{
	return (cg & (w << 1 | w >> 2) & WIN_DECIDED) != 0;
}

/* The Greek and Cyrillic leads that stop the search: an ASCII word byte right before (a '.' or
 * '-' only with another word byte before it) or right after the pair (a '.' or '-' only with
 * another word byte after it). */
static inline uint64_t win_stops(uint64_t cg, uint64_t w, uint64_t dd)
{
	uint64_t before = w << 1 & ~(dd << 1 & ~(w << 2));
	uint64_t after = w >> 2 & ~(dd >> 2 & ~(w >> 3));
	return cg & (before | after) & WIN_DECIDED;
}

/* Positions i..1 (before the first window), one by one. */
static inline bool head_stop(const uint8_t *p, size_t n, size_t *i)
{
	for (; *i < 2 && *i < n; (*i)++)
		if (inspect_norm_stop(p, n, *i))
			return true;
	return false;
}

/* The 64-byte windows with SSSE3 (four vectors, two nibble look-ups each for the leads and the
 * word bytes), while a whole window is left; *found: i is a stop. */
__attribute__((target("ssse3"))) static size_t win_ssse3(const uint8_t *p, size_t n, size_t i,
                                                         bool *found)
{
	*found = head_stop(p, n, &i);
	if (*found)
		return i;
	while (i + 62 <= n) {
		const uint8_t *q = p + i - 2;
#define LD(k) _mm_loadu_si128((const __m128i *)(const void *)(q + (k)))
#define M4(f) ((uint64_t)f(a) | (uint64_t)f(b) << 16 | (uint64_t)f(c) << 32 | (uint64_t)f(d) << 48)
		__m128i a = LD(0), b = LD(16), c = LD(32), d = LD(48);
		if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) == 0) {
			i += 62;
			continue;
		}
		unsigned l[4], g[4];
		leads16(a, &l[0], &g[0]);
		leads16(b, &l[1], &g[1]);
		leads16(c, &l[2], &g[2]);
		leads16(d, &l[3], &g[3]);
		uint64_t m = ((uint64_t)l[0] | (uint64_t)l[1] << 16 | (uint64_t)l[2] << 32 |
		              (uint64_t)l[3] << 48) &
		             WIN_DECIDED;
		uint64_t cg = (uint64_t)g[0] | (uint64_t)g[1] << 16 | (uint64_t)g[2] << 32 |
		              (uint64_t)g[3] << 48;
		if (cg != 0) {
			uint64_t w = M4(word16);
			if (win_near(cg, w))
				m |= win_stops(cg, w, M4(dd16));
		}
#undef M4
#undef LD
		if (m != 0) {
			*found = true;
			return i - 2 + (size_t)__builtin_ctzll(m);
		}
		i += WIN_STEP;
	}
	return i;
}

/* The last bytes, 16 a step (stop16 reads the bytes around them); *found: i is a stop. */
__attribute__((target("ssse3"))) static size_t tail_ssse3(const uint8_t *p, size_t n, size_t i,
                                                          bool *found)
{
	while (i + 16 <= n) {
		unsigned m =
		        stop16(p, n, i, _mm_loadu_si128((const __m128i *)(const void *)(p + i)));
		if (m != 0) {
			*found = true;
			return i + (size_t)__builtin_ctz(m);
		}
		i += 16;
	}
	return i;
}

/* The masks of 32 bytes (bit k: byte k) from one pair of nibble indices: lead bytes and Greek and
 * Cyrillic leads (the tables of leads16), ASCII bytes of a word (those of word16). */
__attribute__((target("avx2"))) static inline void class32(__m256i v, uint32_t *lead, uint32_t *cg,
                                                           uint32_t *word)
{
	const __m256i lhi = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 34, 4, 8, 0, 0,
	                                     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 34, 4, 8);
	const __m256i llo = _mm256_setr_epi8(44, 36, 37, 44, 32, 0, 0, 0, 2, 2, 4, 2, 1, 1, 16, 22,
	                                     44, 36, 37, 44, 32, 0, 0, 0, 2, 2, 4, 2, 1, 1, 16, 22);
	const __m256i whi = _mm256_setr_epi8(0, 0, 1, 2, 4, 8, 16, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	                                     1, 2, 4, 8, 16, 32, 0, 0, 0, 0, 0, 0, 0, 0);
	const __m256i wlo =
	        _mm256_setr_epi8(46, 62, 62, 62, 62, 63, 62, 62, 62, 62, 60, 21, 20, 23, 21, 29, 46,
	                         62, 62, 62, 62, 63, 62, 62, 62, 62, 60, 21, 20, 23, 21, 29);
	const __m256i nib = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
	__m256i h = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib), l = _mm256_and_si256(v, nib);
	__m256i t = _mm256_and_si256(_mm256_shuffle_epi8(lhi, h), _mm256_shuffle_epi8(llo, l));
	__m256i u = _mm256_and_si256(_mm256_shuffle_epi8(whi, h), _mm256_shuffle_epi8(wlo, l));
	*lead = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_and_si256(t, nib), zero));
	*cg = ~(uint32_t)_mm256_movemask_epi8(
	        _mm256_cmpeq_epi8(_mm256_and_si256(t, _mm256_set1_epi8(0x30)), zero));
	*word = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(u, zero));
}

__attribute__((target("avx2"))) static inline uint32_t dd32(__m256i v)
{
	return (uint32_t)_mm256_movemask_epi8(
	        _mm256_or_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('.')),
	                        _mm256_cmpeq_epi8(v, _mm256_set1_epi8('-'))));
}

/* win_ssse3 with AVX2: two 32-byte vectors, the lead and word masks from one pair of nibble
 * indices each. */
__attribute__((target("avx2"))) static size_t win_avx2(const uint8_t *p, size_t n, size_t i,
                                                       bool *found)
{
	*found = head_stop(p, n, &i);
	if (*found)
		return i;
	while (i + 62 <= n) {
		const uint8_t *q = p + i - 2;
		__m256i a = _mm256_loadu_si256((const __m256i *)(const void *)q),
		        b = _mm256_loadu_si256((const __m256i *)(const void *)(q + 32));
		if (_mm256_movemask_epi8(_mm256_or_si256(a, b)) == 0) {
			i += 62;
			continue;
		}
		uint32_t la, lb, ga, gb, wa, wb;
		class32(a, &la, &ga, &wa);
		class32(b, &lb, &gb, &wb);
		uint64_t m = ((uint64_t)la | (uint64_t)lb << 32) & WIN_DECIDED;
		uint64_t cg = (uint64_t)ga | (uint64_t)gb << 32;
		uint64_t w = (uint64_t)wa | (uint64_t)wb << 32;
		if (cg != 0 && win_near(cg, w))
			m |= win_stops(cg, w, (uint64_t)dd32(a) | (uint64_t)dd32(b) << 32);
		if (m != 0) {
			*found = true;
			return i - 2 + (size_t)__builtin_ctzll(m);
		}
		i += WIN_STEP;
	}
	return i;
}
#endif

unsigned inspect_norm_isa;

size_t inspect_norm_skip(const uint8_t *p, size_t n, size_t i)
{
#if defined(__x86_64__)
	unsigned isa = inspect_norm_isa;
	if ((isa == 0 || isa >= 2) && __builtin_cpu_supports("ssse3")) {
		bool found;
		if ((isa == 0 || isa >= 3) && __builtin_cpu_supports("avx2"))
			i = win_avx2(p, n, i, &found);
		else
			i = win_ssse3(p, n, i, &found);
		if (!found)
			i = tail_ssse3(p, n, i, &found);
		if (found || i == n)
			return i;
	}
#endif
	while (i + 8 <= n) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w & UINT64_C(0x8080808080808080)) {
			for (size_t e = i + 8; i < e; i++)
				if (inspect_norm_stop(p, n, i))
					return i;
		} else {
			i += 8;
		}
	}
	while (i < n && !inspect_norm_stop(p, n, i))
		i++;
	return i;
}
