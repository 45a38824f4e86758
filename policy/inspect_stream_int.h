/*
 * Private to policy/inspect_*.c: the stream state, so block scans and the JSON pass can keep
 * one on the stack and choose where its decisions go (released text, or a findings list).
 */
#ifndef CUSTOS_POLICY_INSPECT_STREAM_INT_H
#define CUSTOS_POLICY_INSPECT_STREAM_INT_H

#include "inspect_int.h"

typedef struct inspect_region {
	bool open;
	unsigned expr;  /* the ANCHOR expression that opened it */
	uint64_t start; /* absolute offset of the value */
	uint64_t scan;  /* bytes before this are known to be inside */
	uint64_t end;   /* where the last closed region ended: anchors before it belong to it */
	bool cont;      /* a value that outran the region's maximum and was accepted: the rest of
	                   it is masked as the same finding, piece by piece, unvalidated */
	uint8_t cont_conf;
} inspect_region;

/* One character the normalised view changed: dropped (n_len 0) or written as ASCII bytes
 * (n_len 1..4); a dropped character repeated in a row is one edit (rep), and so are invisible
 * characters of different kinds in a row (o_len 0: their bytes are in the stream's xb). Between
 * edits the view and the original text are the same bytes. */
typedef struct inspect_edit {
	uint64_t n_off; /* where its bytes are in the view (dropped: where they would be) */
	uint64_t o_off; /* where the character is in the original text */
	uint8_t n_len;
	uint8_t o_len; /* 2..4; 0: a sequence of dropped characters, x_len bytes at xb's x_off */
	uint16_t rep;  /* o written back this many times (1 but for a dropped character) */
	union {
		uint8_t o[4];   /* the original bytes, written back when the text is released */
		uint32_t x_len; /* (a sequence: its length) */
	};
	uint64_t x_off; /* a sequence: where its bytes are in xb (absolute) */
} inspect_edit;
_Static_assert(sizeof(inspect_edit) == 32, "an edit is 32 bytes");

/* Bytes of original text an edit stands for. */
static inline uint64_t inspect_edit_olen(const inspect_edit *e)
{
	return e->o_len != 0 ? (uint64_t)e->o_len * e->rep : e->x_len;
}

typedef struct inspect_ctx_hit {
	uint64_t end; /* where a context keyword ended */
	unsigned det;
} inspect_ctx_hit;

struct inspect_stream {
	const inspect_engine *e;
	inspect_profile prof;
	bool active;        /* a detector applies and a database (or the C scanner) exists */
	unsigned scan_want; /* the C scanner's anchors whose detectors apply (det_scan_anchor) */
	det_numeric num;
	hs_stream_t *hs;
	/* Offsets below are in the normalised view detectors see (equal to the text's own while
	 * no character was changed); the edits map them back to the original text. */
	buf win;            /* view bytes [base, total) when copied */
	const uint8_t *wp;  /* view bytes [base, total): win's, or the caller's (borrowed) */
	bool borrow;        /* block scan: the first feed's text is used in place... */
	bool borrowed;      /* ...and was */
	bool drop_open_any; /* finish drops an unterminated CLS_ANY region (joined JSON text) */
	uint64_t base;
	uint64_t total;    /* view bytes */
	uint64_t cursor;   /* view bytes before this were released (or masked) */
	uint64_t mask_end; /* cursor right after the last mask written */
	inspect_edit *ed;  /* live edits: ed[ed_head .. n_ed), in text order */
	size_t ed_head, n_ed, cap_ed;
	uint64_t ed_nb, ed_ob; /* view / text offsets where identity resumes after pruned edits */
	uint64_t ototal;       /* text bytes taken into the view */
	uint64_t ocursor;      /* text bytes released (or masked): the view's cursor, mapped */
	uint8_t upend[4];      /* an unfinished UTF-8 sequence waiting for the next fragment */
	uint8_t n_upend;
	uint64_t inv_held; /* text bytes of invisible characters dropped since the last view byte */
	buf xb;            /* the bytes of sequence edits (o_len 0), live ones from... */
	uint64_t xb_base;  /* ...this absolute offset */
	/* The look-alike rule (inspect_norm_word_at): the text before the fragment ends inside a
	 * word (w_open) that holds a Latin letter or digit (w_latin); in the fragment being
	 * normalised (from w_lo), the word decided last ends at w_end, its look-alikes mapped when
	 * w_map. The end of a word not yet decided (look-alikes, no Latin letter yet) waits for the
	 * next fragment in wpend (INSPECT_WORD_HOLD bytes at most; a longer one is kept as it is). */
	bool w_open, w_latin, w_map;
	size_t w_lo, w_end;
	uint8_t wpend[INSPECT_WORD_HOLD];
	uint8_t n_wpend;
	size_t hold;   /* the profile's hold-back */
	uint32_t wmax; /* widest expression of the engine (window kept for validators) */
	inspect_region reg[INSPECT_MAX_DETECTORS]; /* only built-ins have regions */
	inspect_finding *pend, *kept;
	size_t n_pend, cap_pend, n_kept, cap_kept;
	inspect_ctx_hit *ctx; /* recent context keywords of custom detectors, by end once sorted */
	size_t n_ctx, cap_ctx;
	bool ctx_unsorted;         /* one was added with an end before the last one's */
	buf *out;                  /* release mode: text goes here (NULL: collect only) */
	inspect_findings *collect; /* when set, kept findings are appended here */
	inspect_summary sum;
	custos_err cb_err;
	bool finished, denied;
};

/* qsort order of findings: start, longer first, confidence, detector id (deterministic). */
int inspect_finding_cmp(const void *a, const void *b);
custos_err inspect_stream_init(inspect_stream *st, const inspect_engine *e,
                               const inspect_profile *p) CUSTOS_WUR;
void inspect_stream_fini(inspect_stream *st);
custos_err inspect_stream_feed_int(inspect_stream *st, inspect_scratch *s, span text) CUSTOS_WUR;
custos_err inspect_stream_finish_int(inspect_stream *st, inspect_scratch *s) CUSTOS_WUR;

#endif /* CUSTOS_POLICY_INSPECT_STREAM_INT_H */
