/*
 * Private to the inspection code in policy/: the detector table shared by the engine compiler
 * (inspect_engine.c), the scanner (inspect_stream.c) and the detectors (detect_builtin.c).
 */
#ifndef CUSTOS_POLICY_INSPECT_INT_H
#define CUSTOS_POLICY_INSPECT_INT_H

#include <custos/inspect.h>
#include <hs/hs.h>

/* What one Hyperscan expression reports.
 * MATCH: a whole bounded candidate, validated at once.
 * ANCHOR: a distinctive part of a value (a token prefix, "x@y", nine digits); the value (a
 *         region) starts up to `back` bytes before it over one byte class and extends over
 *         another until a byte outside it, its maximum length, or the detector's TERMINATOR.
 * TERMINATOR: closes the open region of its detector (PEM "-----END ... KEY-----").
 * CONTEXT: a custom detector's keyword that its pattern matches need nearby.
 * A MATCH or ANCHOR whose pattern is one of DET_*_PATTERN below is not compiled into
 * Hyperscan: the bit-parallel C scanner in detect_numeric.c reports exactly what Hyperscan
 * would for it (docs/INSPECTION.md). */
enum det_kind { DET_MATCH = 0, DET_ANCHOR, DET_TERMINATOR, DET_CONTEXT };

/* Byte classes a region extends over (and starts back over). */
enum det_class {
	CLS_NONE = 0,
	CLS_ANY,          /* until the terminator */
	CLS_EMAIL_DOMAIN, /* [A-Za-z0-9.-] */
	CLS_IPV6,         /* [0-9A-Fa-f:.] */
	CLS_ALNUM,        /* [A-Za-z0-9] */
	CLS_ALNUM_US,     /* [A-Za-z0-9_] */
	CLS_GITLAB,       /* [A-Za-z0-9_.-] */
	CLS_SLACK,        /* [A-Za-z0-9-] */
	CLS_JWT,          /* [A-Za-z0-9_.=-] */
	CLS_EMAIL_LOCAL,  /* [A-Za-z0-9._%+-] */
	CLS_HEX_COLON,    /* [0-9A-Fa-f:] */
	CLS_CARD,         /* [0-9 -] */
	CLS_PHONE,        /* [0-9 .()-] */
	CLS_SSN,          /* [0-9 ] */
	CLS_IBAN,         /* [A-Za-z0-9 ] */
	CLS_IPV4,         /* [0-9.] */
	CLS_DIGIT,        /* [0-9] */
};

/* A finding inside a candidate: p[off .. off + len) with a confidence 0..100. */
typedef struct det_hit {
	size_t off, len;
	uint8_t conf;
} det_hit;
#define DET_MAX_HITS 8

/* A validator: p[n] is the candidate (a MATCH, or a region); prev/next are the bytes around it
 * (-1 when unknown: start of text, or not yet fed). It writes the findings it accepts (narrowed,
 * re-anchored) to out[DET_MAX_HITS] and returns how many. */
typedef size_t (*det_validate_fn)(const uint8_t *p, size_t n, int prev, int next, det_hit *out);

typedef struct det_spec {
	uint16_t detector;
	uint8_t kind;     /* enum det_kind */
	uint8_t cls;      /* ANCHOR: the region extends over this class (enum det_class)... */
	uint32_t max;     /* ...up to this many bytes from its start */
	uint8_t back_cls; /* ANCHOR: the region starts back over this class... */
	uint16_t back;    /* ...at most this many bytes before the anchor */
	const char *pattern;
	det_validate_fn validate;
} det_spec;

/* The anchors of the C scanner, and the patterns they stand for (compiled with
 * HS_FLAG_SOM_LEFTMOST: leftmost start, one report per end). Digits, separators, dots, colons
 * and dashes are dense in logs, tables and JSON; character-class patterns there cost Hyperscan
 * more than all the literal-led ones together, and a few mask operations per 64 bytes less. */
enum det_scan_anchor {
	DET_SCAN_NUMERIC = 0, /* nine digits, at most two separators [ .()-] between digits */
	DET_SCAN_IPV4,        /* d.d.d: a digit, a dot, 1..3 digits, a dot, a digit */
	DET_SCAN_IPV6,        /* two colons with 0..4 hex digits between */
	DET_SCAN_SSN,         /* AAA-GG-SSSS between word boundaries */
	DET_SCAN_E164,        /* '+', [1-9], 6..16 digits with separators, a word boundary */
	DET_SCAN_N
};
#define DET_NUMERIC_PATTERN "[0-9](?:[ .()\\-]{0,2}[0-9]){8}"
#define DET_IPV4_PATTERN    "[0-9]\\.[0-9]{1,3}\\.[0-9]"
#define DET_IPV6_PATTERN    ":[0-9A-Fa-f]{0,4}:"
#define DET_SSN_PATTERN     "\\b[0-9]{3}-[0-9]{2}-[0-9]{4}\\b"
#define DET_E164_PATTERN    "\\+[1-9](?:[ .\\-()]{0,2}[0-9]){6,16}\\b"
#define DET_NUMERIC_DIGITS  9
/* The scanner's anchor for a pattern compiled with `flags`, or -1 when Hyperscan runs it. */
int det_scan_anchor_of(const char *pattern, unsigned flags);

/* The scanner's state between fragments (detect_numeric.c). */
typedef struct det_numeric {
	uint64_t d, s, dot, col, hex, dash; /* class bits of the last 64 bytes fed (bit 63: the
	                                       last byte; zero before the start of the text) */
	uint8_t tail[16];                   /* the last 16 bytes fed (zero before the start) */
	uint64_t e_start;                   /* E.164: where the current candidate's '+' is */
	uint8_t e_state;                    /* 0 none, 1 after '+', 2 in the digits */
	uint8_t e_digits, e_gap;            /* digits so far, separators since the last one */
	bool e_pend;                        /* the last byte ended a candidate (needs \b) */
} det_numeric;
/* Calls emit(ctx, anchor, from, to) for every match of the anchors in `want` (bits of enum
 * det_scan_anchor) that p[n], fed at absolute offset base, completes, in order of `to` per
 * anchor. A match that ends with \b is reported once the byte after it is fed, or by
 * det_numeric_finish. Stops and returns the first error emit returns. */
custos_err
det_numeric_scan(det_numeric *st, unsigned want, const uint8_t *p, size_t n, uint64_t base,
                 custos_err (*emit)(void *ctx, unsigned anchor, uint64_t from, uint64_t to),
                 void *ctx) CUSTOS_WUR;
/* Which classification det_numeric_scan uses: 0 the best the CPU has (the default), 1 SSE2,
 * 2 AVX2, 3 AVX-512BW (lowered to what the CPU has). For tests; set before any scan. */
extern unsigned det_numeric_isa;
/* The end of the text at absolute offset `total`: reports the matches that end there. */
custos_err det_numeric_finish(det_numeric *st, unsigned want, uint64_t total,
                              custos_err (*emit)(void *ctx, unsigned anchor, uint64_t from,
                                                 uint64_t to),
                              void *ctx) CUSTOS_WUR;

/* Unicode normalisation (inspect_norm.c): detectors see a view of the text in which invisible
 * characters are dropped and some characters become one ASCII byte (docs/INSPECTION.md). */
#define INSPECT_NORM_KEEP       (-1) /* inspect_norm_class: the character stays as it is */
#define INSPECT_NORM_DROP       0    /* ...it is dropped (else: the ASCII byte it becomes) */
#define INSPECT_NORM_SHORT      ((size_t)-1) /* inspect_norm_decode: valid so far, cut by the end */
#define INSPECT_NORM_MULTI      0x100 /* inspect_norm_class: from this on, several ASCII bytes */
#define INSPECT_NORM_MAX_EXPAND 4     /* ...at most this many (inspect_norm_multi) */
/* What the view makes of code point cp: KEEP, DROP, the ASCII byte (0x20..0x7E), or a value
 * from INSPECT_NORM_MULTI on for a character that stands for several (`⑩`, `½`, `ﬁ`). */
int inspect_norm_class(uint32_t cp);
/* The ASCII bytes (2..INSPECT_NORM_MAX_EXPAND) a class from INSPECT_NORM_MULTI on stands for
 * in *bytes, and their count; 0 for any other class. */
size_t inspect_norm_multi(int cls, const uint8_t **bytes);
/* Decodes the UTF-8 sequence at p[0..n): its length with *cp, 0 when it is not valid UTF-8
 * (overlong, surrogate, over U+10FFFF, a stray byte), INSPECT_NORM_SHORT when n ends it early. */
size_t inspect_norm_decode(const uint8_t *p, size_t n, uint32_t *cp);
/* 1 for the lead bytes of sequences inspect_norm_class may change; 0 for every other byte. */
extern const uint8_t inspect_norm_lead[256];
extern const size_t inspect_norm_n_digit_blocks; /* blocks of ten Nd digits mapped (tests) */
/* The first offset at or after i where inspect_norm_stop holds, or n (AVX2 or SSSE3 when the
 * CPU has it: 64-byte windows, ASCII with one test, other text as bit masks). */
size_t inspect_norm_skip(const uint8_t *p, size_t n, size_t i);
/* Which code inspect_norm_skip uses: 0 the best the CPU has (the default), 1 plain C, 2 SSSE3
 * at most, 3 AVX2 at most (lowered to what the CPU has). For tests; set before any scan. */
extern unsigned inspect_norm_isa;

/* The look-alike letters of other scripts (Cyrillic, Greek) are mapped only inside a word that
 * also holds a Latin letter or a digit: a word is a run of ASCII letters, digits and ._-@+/=%,
 * Greek and Cyrillic letters, characters the view drops, and characters it makes one of those
 * ASCII bytes. Plain Cyrillic or Greek text is left as it is. */
enum inspect_norm_wordclass {
	INSPECT_WORD_BREAK = 0, /* ends a word */
	INSPECT_WORD_LATIN,     /* an ASCII letter or digit in the view */
	INSPECT_WORD_JOIN,      /* ._-@+/=% in the view, or dropped */
	INSPECT_WORD_LOOKALIKE, /* a Cyrillic or Greek letter that looks like a Latin one */
	INSPECT_WORD_SCRIPT,    /* another Greek or Cyrillic letter (U+0370..U+052F) */
};
/* The ASCII letter (or digit) a look-alike stands for in a mixed word, or 0. */
int inspect_norm_confusable(uint32_t cp);
extern const size_t inspect_norm_n_confusables;
int inspect_norm_word(uint32_t cp); /* enum inspect_norm_wordclass of a code point */
typedef struct inspect_norm_wordinfo {
	size_t start, end; /* the word around an offset (start == end: not in one) */
	bool latin;        /* it holds a Latin letter or digit */
	bool lookalike;    /* it holds a look-alike */
	bool open_start;   /* it reaches back to the lower bound (may go on before it) */
	bool open_end;     /* it reaches the end of the text (may go on after it) */
	bool cut;          /* it ends in a UTF-8 sequence the end of the text cuts */
} inspect_norm_wordinfo;
/* The word of p[lo..n) around the character at offset i (a character boundary). */
void inspect_norm_word_at(const uint8_t *p, size_t n, size_t lo, size_t i,
                          inspect_norm_wordinfo *w);
/* Whether inspect_norm_skip stops at p[i]: a lead byte, or a Greek or Cyrillic character next
 * to an ASCII byte of a word (a word that may mix scripts). */
bool inspect_norm_stop(const uint8_t *p, size_t n, size_t i);

/* The built-in table (detect_builtin.c). */
extern const det_spec det_builtin_specs[];
extern const size_t det_builtin_n_specs;
extern const char *const det_builtin_names[INSPECT_BUILTIN_COUNT];

/* Validators shared with custom detectors (detect_builtin.c). */
bool det_luhn_ok(const uint8_t *p, size_t n);  /* digits of p (others skipped) */
bool det_mod97_ok(const uint8_t *p, size_t n); /* IBAN-style rearranged mod 97 == 1 */
size_t det_validate_custom_none(const uint8_t *p, size_t n, int prev, int next, det_hit *out);
size_t det_validate_custom_luhn(const uint8_t *p, size_t n, int prev, int next, det_hit *out);
size_t det_validate_custom_mod97(const uint8_t *p, size_t n, int prev, int next, det_hit *out);
size_t det_validate_custom_keyword(const uint8_t *p, size_t n, int prev, int next, det_hit *out);
extern const uint32_t det_class_tab[256]; /* bit per enum det_class (detect_builtin.c) */
static inline bool det_class_has(unsigned cls, uint8_t c)
{
	return (det_class_tab[c] >> cls) & 1u;
}

/* One compiled expression. */
typedef struct inspect_expr {
	uint16_t detector;
	uint8_t kind;
	uint8_t cls;
	uint8_t back_cls;
	uint16_t back;
	uint32_t max;
	uint32_t width; /* Hyperscan's max_width for the expression, plus back */
	int32_t next;   /* next expression sharing this Hyperscan pattern, or -1 */
	det_validate_fn validate;
} inspect_expr;

struct inspect_engine {
	hs_database_t *db; /* NULL when no expression is compiled */
	unsigned n_det;
	uint64_t compiled; /* bit per detector id with at least one expression */
	inspect_expr *expr;
	unsigned n_expr;
	uint32_t width[INSPECT_MAX_DETECTORS];  /* longest MATCH/ANCHOR width per detector */
	bool has_region[INSPECT_MAX_DETECTORS]; /* detector has ANCHOR expressions */
	bool needs_ctx[INSPECT_MAX_DETECTORS];  /* detector has CONTEXT expressions */
	int32_t scan[DET_SCAN_N]; /* first NUMERIC expression per anchor (chained by next), or -1 */
	char name[INSPECT_MAX_DETECTORS][INSPECT_NAME_MAX];
	char mask[INSPECT_MAX_DETECTORS][INSPECT_MASK_MAX];
	size_t mask_len[INSPECT_MAX_DETECTORS];
};

struct inspect_scratch {
	hs_scratch_t *hs;
};

#endif /* CUSTOS_POLICY_INSPECT_INT_H */
