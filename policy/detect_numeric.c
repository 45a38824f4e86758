/*
 * The C scanner for the anchors made of digits, separators, dots, colons and dashes (enum
 * det_scan_anchor): the nine-digit anchor shared by cards, national and North American phone
 * numbers, spaced SSNs and IBANs; the IPv4 anchor "d.d.d"; the IPv6 anchor ":hhhh:"; the
 * dashed SSN; the E.164 phone number. It reports exactly what Hyperscan would for their
 * patterns (DET_*_PATTERN, leftmost start, one report per end) and keeps its state across
 * fragments. Character-class patterns like these make Hyperscan step through every digit,
 * dash and colon of logs, tables and JSON; here they cost a few mask operations per 64 bytes.
 *
 * Bit-parallel: the text is classified 64 bytes at a time (SSE2, or AVX2 / AVX-512BW where
 * the CPU has them, chosen per call) into masks (digit D, separator S, dot, colon, hex digit,
 * dash, plus). Nine chained digits span at most 9 + 8 * 2 = 25
 * bytes (a dashed SSN with the bytes around it 13, the IPv4 anchor 7, the IPv6 anchor 6), so
 * every report among up to 40 new bytes is decided by a 64-bit window holding the 24 bytes
 * before them plus the new ones. In that window a digit is the k-th of a chain when the digit
 * one, two (over one separator) or three (over two) bytes before it is the (k-1)-th:
 *   C(k) = D & (C(k-1) << 1 | C(k-1) << 2 & S << 1 | C(k-1) << 3 & S << 1 & S << 2),
 * and C(9) marks the reports; most windows skip those eight steps, since a report needs nine
 * consecutive digit-or-separator bytes ending at a new digit. The IPv4, IPv6 and SSN shapes
 * are a handful of shifts and ANDs each; an SSN's word boundaries are checked on the bytes
 * (the one after it is the first byte of the next window, or the end of the text). E.164
 * numbers are up to 50 bytes long and start with a '+', which is rare: a small state machine
 * runs from each '+' until its candidate ends. The state between fragments is the masks of
 * the last 64 bytes, the last 16 bytes and the E.164 machine.
 */
#include <string.h>

#include "inspect_int.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#define LOOKBACK 24 /* bytes of a match before its last byte, at most */
#define STEP     40 /* new bytes per window: LOOKBACK + STEP == 64 */

unsigned det_numeric_isa;

typedef custos_err (*emit_fn)(void *ctx, unsigned anchor, uint64_t from, uint64_t to);

int det_scan_anchor_of(const char *pattern, unsigned flags)
{
	static const char *const pats[DET_SCAN_N] = {
		[DET_SCAN_NUMERIC] = DET_NUMERIC_PATTERN, [DET_SCAN_IPV4] = DET_IPV4_PATTERN,
		[DET_SCAN_IPV6] = DET_IPV6_PATTERN,       [DET_SCAN_SSN] = DET_SSN_PATTERN,
		[DET_SCAN_E164] = DET_E164_PATTERN,
	};
	if (flags != HS_FLAG_SOM_LEFTMOST)
		return -1;
	for (int a = 0; a < DET_SCAN_N; a++)
		if (strcmp(pattern, pats[a]) == 0)
			return a;
	return -1;
}

/* Class masks of up to 64 bytes: bit k for byte k. */
typedef struct masks {
	uint64_t d, s, dot, col, hex, dash, plus;
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
		m->dash |= (uint64_t)(c == '-') << k;
		m->plus |= (uint64_t)(c == '+') << k;
	}
}

/* The same for 64 bytes, without branches: SSE2 everywhere (x86-64), AVX2 and AVX-512BW
 * where the CPU has them (chosen per call; the masks are the same). */
#if defined(__x86_64__)
#define HAVE_X86 1
static inline __m128i in_range(__m128i v, char lo, char width)
{
	__m128i x = _mm_sub_epi8(v, _mm_set1_epi8(lo));
	return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(width)), x);
}

#define MM16(x) ((uint64_t)(unsigned)_mm_movemask_epi8(x))

static inline void classify16(const uint8_t *p, unsigned at, masks *m)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i d = in_range(v, '0', 9);
	/* ' ', '(' ')' (0x28..0x29), '-' '.' (0x2d..0x2e) */
	__m128i s = _mm_or_si128(
	        _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')), in_range(v, '(', 1)),
	        in_range(v, '-', 1));
	__m128i hex = _mm_or_si128(d, in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 5));
	m->d |= MM16(d) << at;
	m->s |= MM16(s) << at;
	m->dot |= MM16(_mm_cmpeq_epi8(v, _mm_set1_epi8('.'))) << at;
	m->col |= MM16(_mm_cmpeq_epi8(v, _mm_set1_epi8(':'))) << at;
	m->hex |= MM16(hex) << at;
	m->dash |= MM16(_mm_cmpeq_epi8(v, _mm_set1_epi8('-'))) << at;
	m->plus |= MM16(_mm_cmpeq_epi8(v, _mm_set1_epi8('+'))) << at;
}

static inline void classify64_sse2(const uint8_t *p, masks *m)
{
	*m = (masks){ 0 };
	classify16(p, 0, m);
	classify16(p + 16, 16, m);
	classify16(p + 32, 32, m);
	classify16(p + 48, 48, m);
}

__attribute__((target("avx2"))) static inline __m256i in_range32(__m256i v, char lo, char width)
{
	__m256i x = _mm256_sub_epi8(v, _mm256_set1_epi8(lo));
	return _mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(width)), x);
}

#define MM32(x) ((uint64_t)(uint32_t)_mm256_movemask_epi8(x))

__attribute__((target("avx2"))) static inline void classify32(const uint8_t *p, unsigned at,
                                                              masks *m)
{
	__m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
	__m256i d = in_range32(v, '0', 9);
	__m256i s = _mm256_or_si256(
	        _mm256_or_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(' ')), in_range32(v, '(', 1)),
	        in_range32(v, '-', 1));
	__m256i hex =
	        _mm256_or_si256(d, in_range32(_mm256_or_si256(v, _mm256_set1_epi8(0x20)), 'a', 5));
	m->d |= MM32(d) << at;
	m->s |= MM32(s) << at;
	m->dot |= MM32(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('.'))) << at;
	m->col |= MM32(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(':'))) << at;
	m->hex |= MM32(hex) << at;
	m->dash |= MM32(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('-'))) << at;
	m->plus |= MM32(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('+'))) << at;
}

__attribute__((target("avx2"))) static inline void classify64_avx2(const uint8_t *p, masks *m)
{
	*m = (masks){ 0 };
	classify32(p, 0, m);
	classify32(p + 32, 32, m);
}

__attribute__((target("avx512bw"))) static inline uint64_t below512(__m512i v, char lo, char count)
{
	return _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(lo)),
	                              _mm512_set1_epi8(count));
}

__attribute__((target("avx512bw"))) static inline void classify64_avx512(const uint8_t *p, masks *m)
{
	__m512i v = _mm512_loadu_si512((const void *)p);
	m->d = below512(v, '0', 10);
	m->s = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(' ')) | below512(v, '(', 2) |
	       below512(v, '-', 2);
	m->dot = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('.'));
	m->col = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(':'));
	m->hex = m->d | below512(_mm512_or_si512(v, _mm512_set1_epi8(0x20)), 'a', 6);
	m->dash = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('-'));
	m->plus = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('+'));
}
#else
static inline void classify64_scalar(const uint8_t *p, masks *m)
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

static inline bool is_word(int c)
{
	return (unsigned)(c - '0') <= 9 || (unsigned)((c | 0x20) - 'a') <= 25 || c == '_';
}

/* The text being scanned: the fragment p[n] at absolute offset base, the state's last 16
 * bytes before it. */
typedef struct text {
	const uint8_t *p;
	size_t n;
	uint64_t base;
	const uint8_t *tail; /* tail[16] ends at base */
} text;

/* The byte at absolute offset `off` (base - 16 <= off), -1 past the end of the text. */
static inline int byte_of(const text *t, uint64_t off)
{
	if (off >= t->base)
		return off - t->base < t->n ? t->p[off - t->base] : -1;
	return t->tail[16 - (t->base - off)];
}

/* Reports of one window: bits [LOOKBACK, LOOKBACK + k) of w are the new bytes (mask `fresh`),
 * the ones below them the bytes before; bit LOOKBACK is at absolute offset `at`. */
typedef struct hits {
	uint64_t num, v4, v6, ssn; /* candidate ends (numeric: before the exact chain) */
} hits;

static inline __attribute__((always_inline)) uint64_t window_bits(const masks *w, uint64_t fresh,
                                                                  unsigned want, hits *out)
{
	const uint64_t d = w->d;
	uint64_t num = 0, v4 = 0, v6 = 0, ssn = 0;
	if (want & (1u << DET_SCAN_NUMERIC)) {
		/* Nine consecutive digit-or-separator bytes ending at a new digit. */
		uint64_t t = d | w->s, r2 = t & (t << 1), r4 = r2 & (r2 << 2), r8 = r4 & (r4 << 4);
		num = r8 & (t << 8) & d & fresh;
	}
	/* Each shape needs two of its rare byte in the window: most windows skip it. */
	if ((want & (1u << DET_SCAN_IPV4)) && (w->dot & (w->dot - 1)) != 0) {
		/* m1: a first middle digit (after "d."); m: the last one, 1..3 digits on. */
		uint64_t m1 = d & (w->dot << 1) & (d << 2), m2 = (m1 << 1) & d, m3 = (m2 << 1) & d;
		v4 = d & (w->dot << 1) & ((m1 | m2 | m3) << 2) & fresh;
	}
	if ((want & (1u << DET_SCAN_IPV6)) && (w->col & (w->col - 1)) != 0) {
		/* p<i>: positions i hex digits after a colon. */
		uint64_t h = w->hex, p0 = w->col << 1, p1 = (p0 & h) << 1, p2 = (p1 & h) << 1,
		         p3 = (p2 & h) << 1, p4 = (p3 & h) << 1;
		v6 = w->col & (p0 | p1 | p2 | p3 | p4) & fresh;
	}
	if ((want & (1u << DET_SCAN_SSN)) && (w->dash & (w->dash - 1)) != 0) {
		/* ddd-dd-dddd ending at a byte before a new one (its \b is the new byte). */
		uint64_t d2 = d & (d << 1), d4 = d2 & (d2 << 2);
		ssn = d4 & (w->dash << 4) & (d2 << 5) & (w->dash << 7) & (d2 << 8) & (d << 10) &
		      (fresh >> 1);
	}
	*out = (hits){ .num = num, .v4 = v4, .v6 = v6, .ssn = ssn };
	return num | v4 | v6 | ssn;
}

static custos_err window_emit(const masks *w, const hits *h, uint64_t fresh, uint64_t at,
                              const text *tx, emit_fn emit, void *ctx)
{
	const uint64_t d = w->d;
	uint64_t v4 = h->v4, v6 = h->v6, ssn = h->ssn;
	if (h->num != 0) {
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
	for (; ssn != 0; ssn &= ssn - 1) {
		unsigned j = (unsigned)__builtin_ctzll(ssn);
		uint64_t end = at + j - LOOKBACK + 1, from = end - 11;
		int after = byte_of(tx, end);
		if ((from > 0 && is_word(byte_of(tx, from - 1))) || (after >= 0 && is_word(after)))
			continue;
		GUARD(emit(ctx, DET_SCAN_SSN, from, end));
	}
	return CUSTOS_OK;
}

static custos_err window(const masks *w, uint64_t fresh, uint64_t at, unsigned want, const text *tx,
                         emit_fn emit, void *ctx)
{
	hits h;
	if (window_bits(w, fresh, want, &h) == 0)
		return CUSTOS_OK;
	return window_emit(w, &h, fresh, at, tx, emit, ctx);
}

/* E.164 over p[from .. to) of the text: from each '+' (bits of `plus`, relative to p) while
 * no candidate is open, byte by byte while one is. */
static custos_err e164(det_numeric *st, const text *tx, size_t from, size_t to, uint64_t plus,
                       emit_fn emit, void *ctx)
{
	for (size_t i = from; i < to; i++) {
		if (st->e_state == 0 && !st->e_pend) {
			uint64_t rest = (i - from < 64) ? plus >> (i - from) : 0;
			if (rest == 0)
				return CUSTOS_OK;
			i += (size_t)__builtin_ctzll(rest);
		}
		uint8_t c = tx->p[i];
		uint64_t off = tx->base + i;
		if (st->e_pend) {
			st->e_pend = false;
			if (!is_word(c))
				GUARD(emit(ctx, DET_SCAN_E164, st->e_start, off));
		}
		if (st->e_state == 1) {
			st->e_state = (unsigned)(c - '1') <= 8 ? 2 : 0;
			st->e_digits = 1;
			st->e_gap = 0;
		} else if (st->e_state == 2) {
			if (num_digit(c)) {
				/* After the 17th digit no match can end (nor at the 18th). */
				if (st->e_digits == 17) {
					st->e_state = 0;
				} else {
					st->e_digits++;
					st->e_gap = 0;
					st->e_pend = st->e_digits >= 7;
				}
			} else if (st->e_gap < 2 && num_sep(c)) {
				st->e_gap++;
			} else {
				st->e_state = 0;
			}
		}
		if (st->e_state == 0 && c == '+') {
			st->e_state = 1;
			st->e_start = off;
		}
	}
	return CUSTOS_OK;
}

/* The window of the last LOOKBACK bytes of the state plus k <= STEP new bytes' masks. */
#define WIN(field) ((st->field >> (64 - LOOKBACK)) | (m->field << LOOKBACK))
#define PUSH(field, k)                                                                             \
	(st->field = (k) == 64 ? m->field : (st->field >> (k)) | (m->field << (64 - (k))))
#define EACH(X) X(d) X(s) X(dot) X(col) X(hex) X(dash)

static inline void window_of(const det_numeric *st, const masks *m, masks *w)
{
#define X(f) w->f = WIN(f);
	EACH(X)
#undef X
	w->plus = 0;
}

static inline void push(det_numeric *st, const masks *m, unsigned k)
{
#define X(f) PUSH(f, k);
	EACH(X)
#undef X
}

static void tail_push(det_numeric *st, const uint8_t *p, size_t n)
{
	if (n >= sizeof(st->tail)) {
		memcpy(st->tail, p + n - sizeof(st->tail), sizeof(st->tail));
	} else {
		memmove(st->tail, st->tail + n, sizeof(st->tail) - n);
		memcpy(st->tail + sizeof(st->tail) - n, p, n);
	}
}

/* Whole 64-byte blocks from p[*at] on, classified by `cls`: two windows each, new bytes 0..39
 * and 40..63. Inlined into one function per instruction set. */
typedef void (*classify_fn)(const uint8_t *p, masks *m);
static inline __attribute__((always_inline)) custos_err blocks(det_numeric *st, unsigned want,
                                                               const text *tx, size_t *at,
                                                               classify_fn cls, emit_fn emit,
                                                               void *ctx)
{
	const uint64_t fresh1 = fresh_bits(STEP), fresh2 = fresh_bits(64 - STEP);
	bool e164_on = want & (1u << DET_SCAN_E164);
	size_t i = *at;
	custos_err r = CUSTOS_OK;
	masks h; /* the state's masks, in registers for the loop */
#define X(f) h.f = st->f;
	EACH(X)
#undef X
	for (; tx->n - i >= 64; i += 64) {
		masks m, w1, w2;
		cls(tx->p + i, &m);
#define X(f)                                                                                       \
	w1.f = (h.f >> (64 - LOOKBACK)) | (m.f << LOOKBACK);                                       \
	w2.f = m.f >> (STEP - LOOKBACK);
		EACH(X)
#undef X
		bool after_digit = h.d >> 63; /* an SSN may end right before this block */
		h = m;
		/* E.164 starts at a '+' before a digit (or before the next block). */
		uint64_t plus = m.plus & ((m.d >> 1) | UINT64_C(1) << 63);
		if (e164_on && (plus != 0 || st->e_state != 0 || st->e_pend) &&
		    (r = e164(st, tx, i, i + 64, plus, emit, ctx)) != CUSTOS_OK)
			break;
		if ((m.d | m.col) == 0 && !after_digit)
			continue; /* every report ends at a digit or a colon */
		hits h1, h2;
		uint64_t any1 = window_bits(&w1, fresh1, want, &h1);
		uint64_t any2 = window_bits(&w2, fresh2, want, &h2);
		if ((any1 | any2) == 0)
			continue;
		if (any1 != 0 &&
		    (r = window_emit(&w1, &h1, fresh1, tx->base + i, tx, emit, ctx)) != CUSTOS_OK)
			break;
		if (any2 != 0 && (r = window_emit(&w2, &h2, fresh2, tx->base + i + STEP, tx, emit,
		                                  ctx)) != CUSTOS_OK)
			break;
	}
#define X(f) st->f = h.f;
	EACH(X)
#undef X
	*at = i;
	return r;
}

static custos_err blocks_generic(det_numeric *st, unsigned want, const text *tx, size_t *at,
                                 emit_fn emit, void *ctx)
{
#if HAVE_X86
	return blocks(st, want, tx, at, classify64_sse2, emit, ctx);
#else
	return blocks(st, want, tx, at, classify64_scalar, emit, ctx);
#endif
}

#if HAVE_X86
__attribute__((target("avx2"))) static custos_err
blocks_avx2(det_numeric *st, unsigned want, const text *tx, size_t *at, emit_fn emit, void *ctx)
{
	return blocks(st, want, tx, at, classify64_avx2, emit, ctx);
}

__attribute__((target("avx512bw"))) static custos_err
blocks_avx512(det_numeric *st, unsigned want, const text *tx, size_t *at, emit_fn emit, void *ctx)
{
	return blocks(st, want, tx, at, classify64_avx512, emit, ctx);
}
#endif

#if HAVE_X86
/* What the CPU and the kernel support: 3 AVX-512BW, 2 AVX2, 1 SSE2. Asked on the first scan, not
 * by __builtin_cpu_supports, whose libgcc constructor runs CPUID (a trap to the hypervisor in a
 * VM) at the start of every custos process, the ones that never scan included. */
static unsigned cpu_isa(void)
{
	static unsigned cached;
	unsigned isa = __atomic_load_n(&cached, __ATOMIC_RELAXED);
	if (isa != 0)
		return isa;
	unsigned a, b, c, d;
	isa = 1;
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) && (c & bit_AVX)) {
		unsigned lo, hi;
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		uint64_t xcr0 = ((uint64_t)hi << 32) | lo;
		/* The OS saves the SSE and AVX state (XCR0 bits 1, 2), and for AVX-512 the opmask
		 * and upper ZMM state (bits 5-7). */
		if ((xcr0 & 0x6) == 0x6 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
			if (b & bit_AVX2)
				isa = 2;
			if ((xcr0 & 0xe6) == 0xe6 && (b & bit_AVX512F) && (b & bit_AVX512BW))
				isa = 3;
		}
	}
	__atomic_store_n(&cached, isa, __ATOMIC_RELAXED);
	return isa;
}
#endif

custos_err det_numeric_scan(det_numeric *st, unsigned want, const uint8_t *p, size_t n,
                            uint64_t base, emit_fn emit, void *ctx)
{
	text tx = { .p = p, .n = n, .base = base, .tail = st->tail };
	bool e164_on = want & (1u << DET_SCAN_E164);
	size_t i = 0;
	if (n >= 64) {
#if HAVE_X86
		unsigned hw = cpu_isa(), isa = det_numeric_isa;
		if (isa == 0 || isa > hw)
			isa = hw;
		if (isa == 3)
			GUARD(blocks_avx512(st, want, &tx, &i, emit, ctx));
		else if (isa == 2)
			GUARD(blocks_avx2(st, want, &tx, &i, emit, ctx));
		else
#endif
			GUARD(blocks_generic(st, want, &tx, &i, emit, ctx));
	}
	/* The tail, and the small fragments of a stream. */
	while (i < n) {
		unsigned k = n - i < STEP ? (unsigned)(n - i) : STEP;
		masks m, w;
		classify(p + i, k, &m);
		window_of(st, &m, &w);
		push(st, &m, k);
		if (e164_on && (m.plus != 0 || st->e_state != 0 || st->e_pend))
			GUARD(e164(st, &tx, i, i + k, m.plus, emit, ctx));
		GUARD(window(&w, fresh_bits(k), base + i, want, &tx, emit, ctx));
		i += k;
	}
	tail_push(st, p, n);
	return CUSTOS_OK;
}

custos_err det_numeric_finish(det_numeric *st, unsigned want, uint64_t total, emit_fn emit,
                              void *ctx)
{
	/* One more byte that is in no class and no word: the end of the text. */
	text tx = { .p = NULL, .n = 0, .base = total, .tail = st->tail };
	masks m = { 0 }, w;
	window_of(st, &m, &w);
	push(st, &m, 1);
	if ((want & (1u << DET_SCAN_E164)) && st->e_pend) {
		st->e_pend = false;
		GUARD(emit(ctx, DET_SCAN_E164, st->e_start, total));
	}
	st->e_state = 0;
	return window(&w, fresh_bits(1), total, want & (1u << DET_SCAN_SSN), &tx, emit, ctx);
}
