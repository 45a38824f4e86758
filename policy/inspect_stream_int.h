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
	buf win;           /* bytes [base, total) when copied */
	const uint8_t *wp; /* bytes [base, total): win's, or the caller's (borrowed) */
	bool borrow;       /* block scan: the first feed's text is used in place... */
	bool borrowed;     /* ...and was */
	uint64_t base;
	uint64_t total;    /* bytes fed */
	uint64_t cursor;   /* bytes before this were released (or masked) */
	uint64_t mask_end; /* cursor right after the last mask written */
	size_t hold;       /* the profile's hold-back */
	uint32_t wmax;     /* widest expression of the engine (window kept for validators) */
	inspect_region reg[INSPECT_MAX_DETECTORS]; /* only built-ins have regions */
	inspect_finding *pend, *kept;
	size_t n_pend, cap_pend, n_kept, cap_kept;
	inspect_ctx_hit *ctx; /* recent context keywords of custom detectors */
	size_t n_ctx, cap_ctx;
	buf *out;                  /* release mode: text goes here (NULL: collect only) */
	inspect_findings *collect; /* when set, kept findings are appended here */
	inspect_summary sum;
	custos_err cb_err;
	bool finished, denied;
};

custos_err inspect_stream_init(inspect_stream *st, const inspect_engine *e,
                               const inspect_profile *p) CUSTOS_WUR;
void inspect_stream_fini(inspect_stream *st);
custos_err inspect_stream_feed_int(inspect_stream *st, inspect_scratch *s, span text) CUSTOS_WUR;
custos_err inspect_stream_finish_int(inspect_stream *st, inspect_scratch *s) CUSTOS_WUR;

#endif /* CUSTOS_POLICY_INSPECT_STREAM_INT_H */
