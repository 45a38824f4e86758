/*
 * libFuzzer target for content inspection: the JSON walker (a redacted valid body must stay
 * valid JSON and redacting it again must change nothing more), the stream against the
 * block scan (the same text split at a fuzzer-chosen offset in 1..8-byte fragments must be
 * released exactly as block redaction produces it), and the C scanner of the digit, dot,
 * colon and dash anchors against Hyperscan running their patterns (the same reports, in
 * fuzzer-chosen fragments, with a fuzzer-chosen instruction set). Text that is valid UTF-8
 * stays valid UTF-8 when redacted, and every finding covers whole characters of it (the
 * normalised view maps back to the original text); the stream check covers splits inside
 * UTF-8 sequences.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <custos/inspect.h>

#include "policy/inspect_int.h"

static inspect_engine *eng;
static inspect_scratch *scr;
static inspect_profile prof;

static void setup(void)
{
	static const char *const pats[] = { "\\bEMP-[0-9]{6}\\b", "\\bTKT-[A-Z0-9]+" };
	static const char *const kws[] = { "bluebird" };
	static const inspect_custom_def custom[] = {
		{ .name = "employee_id", .patterns = pats, .n_patterns = 1 },
		{ .name = "ticket", .patterns = pats + 1, .n_patterns = 1 },
		{ .name = "codename", .keywords = kws, .n_keywords = 1 },
	};
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL,
		                  .custom = custom,
		                  .n_custom = 3 };
	if (inspect_engine_new(&o, &eng) != CUSTOS_OK ||
	    inspect_scratch_new(eng, &scr) != CUSTOS_OK)
		abort();
	for (unsigned i = 0; i < inspect_engine_detector_count(eng); i++)
		prof.action[i] = INSPECT_ACT_REDACT;
}

/* The C scanner (policy/detect_numeric.c) against Hyperscan on the same text. */
static hs_database_t *scan_db;
static hs_scratch_t *scan_scr;

typedef struct scan_list {
	uint64_t from[DET_SCAN_N][1024], to[DET_SCAN_N][1024];
	size_t n[DET_SCAN_N];
	bool overflow;
} scan_list;

static void scan_add(scan_list *l, unsigned a, uint64_t from, uint64_t to)
{
	if (a >= DET_SCAN_N || l->n[a] == 1024) {
		l->overflow = true;
		return;
	}
	l->from[a][l->n[a]] = from;
	l->to[a][l->n[a]++] = to;
}

static custos_err scan_emit(void *ctx, unsigned anchor, uint64_t from, uint64_t to)
{
	scan_add(ctx, anchor, from, to);
	return CUSTOS_OK;
}

static int scan_hs(unsigned id, unsigned long long from, unsigned long long to, unsigned flags,
                   void *ctx)
{
	(void)flags;
	scan_add(ctx, id, from, to);
	return 0;
}

static void scan_setup(void)
{
	const char *pats[DET_SCAN_N] = { DET_NUMERIC_PATTERN, DET_IPV4_PATTERN, DET_IPV6_PATTERN,
		                         DET_SSN_PATTERN, DET_E164_PATTERN };
	unsigned flags[DET_SCAN_N], ids[DET_SCAN_N];
	for (unsigned a = 0; a < DET_SCAN_N; a++) {
		flags[a] = HS_FLAG_SOM_LEFTMOST;
		ids[a] = a;
	}
	hs_compile_error_t *ce = NULL;
	if (hs_compile_multi(pats, flags, ids, DET_SCAN_N, HS_MODE_BLOCK, NULL, &scan_db, &ce) !=
	            HS_SUCCESS ||
	    hs_alloc_scratch(scan_db, &scan_scr) != HS_SUCCESS)
		abort();
}

static void check_scanner(span in, size_t split, size_t frag, unsigned isa)
{
	static scan_list want, got;
	memset(&want, 0, sizeof(want));
	memset(&got, 0, sizeof(got));
	if (hs_scan(scan_db, in.ptr, (unsigned)in.len, 0, scan_scr, scan_hs, &want) != HS_SUCCESS)
		abort();
	det_numeric_isa = isa;
	det_numeric st = { 0 };
	/* One piece up to the split, then pieces of 1..8 or 57..64+ bytes (the block path). */
	size_t at = 0;
	while (at < in.len) {
		size_t len = at < split ? split - at : frag;
		if (len > in.len - at)
			len = in.len - at;
		if (det_numeric_scan(&st, (1u << DET_SCAN_N) - 1, (const uint8_t *)in.ptr + at, len,
		                     at, scan_emit, &got) != CUSTOS_OK)
			abort();
		at += len;
	}
	if (det_numeric_finish(&st, (1u << DET_SCAN_N) - 1, in.len, scan_emit, &got) != CUSTOS_OK)
		abort();
	det_numeric_isa = 0;
	if (want.overflow || got.overflow)
		return;
	for (unsigned a = 0; a < DET_SCAN_N; a++) {
		if (got.n[a] != want.n[a])
			abort();
		for (size_t k = 0; k < want.n[a]; k++)
			if (got.from[a][k] != want.from[a][k] || got.to[a][k] != want.to[a][k])
				abort();
	}
}

static void check_json(span in)
{
	buf out, again;
	buf_init(&out, 4 * in.len + 4096);
	buf_init(&again, 4 * in.len + 4096);
	custos_err r = inspect_json_redact(eng, scr, &prof, in, &out, NULL);
	if (r == CUSTOS_OK) {
		if (!inspect_json_valid(in) || !inspect_json_valid(buf_span(&out)))
			abort(); /* accepted an invalid body, or produced one */
		if (inspect_json_redact(eng, scr, &prof, buf_span(&out), &again, NULL) != CUSTOS_OK)
			abort();
	} else if (r == CUSTOS_ERR_PARSE && inspect_json_valid(in)) {
		abort(); /* the two walkers disagree */
	}
	buf_free(&out);
	buf_free(&again);
}

static void check_stream(span in, size_t split, size_t frag)
{
	buf want, got;
	buf_init(&want, 4 * in.len + 4096);
	buf_init(&got, 4 * in.len + 4096);
	if (inspect_redact_text(eng, scr, &prof, in, &want, NULL) != CUSTOS_OK)
		abort();
	inspect_stream *st;
	if (inspect_stream_new(eng, &prof, &st) != CUSTOS_OK)
		abort();
	size_t at = 0;
	while (at < in.len) {
		size_t len = at < split ? split - at : frag;
		if (len > in.len - at)
			len = in.len - at;
		if (inspect_stream_feed(st, scr, span_of(in.ptr + at, len), &got) != CUSTOS_OK)
			abort();
		at += len;
	}
	if (inspect_stream_finish(st, scr, &got) != CUSTOS_OK)
		abort();
	if (buf_used(&got) != buf_used(&want) ||
	    (buf_used(&got) && memcmp(buf_ptr(&got), buf_ptr(&want), buf_used(&got)) != 0)) {
		fprintf(stderr, "split %zu frag %zu\nwant[%zu] %.*s\ngot[%zu]  %.*s\n", split, frag,
		        buf_used(&want), (int)buf_used(&want), (const char *)buf_ptr(&want),
		        buf_used(&got), (int)buf_used(&got), (const char *)buf_ptr(&got));
		abort(); /* streamed release differs from the block result */
	}
	inspect_stream_free(st);
	buf_free(&want);
	buf_free(&got);
}

static bool utf8_valid(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = inspect_norm_decode(p + i, n - i, &cp);
		if (l == 0 || l == INSPECT_NORM_SHORT)
			return false;
		i += l;
	}
	return true;
}

/* Valid UTF-8 in, valid UTF-8 out; findings within the text, on character boundaries. */
static void check_utf8(span in)
{
	const uint8_t *p = (const uint8_t *)in.ptr;
	if (!utf8_valid(p, in.len))
		return;
	buf out;
	buf_init(&out, 4 * in.len + 4096);
	if (inspect_redact_text(eng, scr, &prof, in, &out, NULL) != CUSTOS_OK ||
	    !utf8_valid(buf_ptr(&out), buf_used(&out)))
		abort();
	buf_free(&out);
	inspect_findings f = { 0 };
	if (inspect_scan(eng, scr, &prof, in, &f) != CUSTOS_OK)
		abort();
	for (size_t k = 0; k < f.n; k++) {
		uint64_t a = f.items[k].offset, b = a + f.items[k].length;
		if (f.items[k].length == 0 || b > in.len || (p[a] & 0xC0) == 0x80 ||
		    (b < in.len && (p[b] & 0xC0) == 0x80))
			abort();
	}
	inspect_findings_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (eng == NULL) {
		setup();
		scan_setup();
	}
	if (size < 2 || size > 65536)
		return 0;
	size_t split = data[0] % (size - 1), frag = 1 + data[1] % 8;
	span in = span_of((const char *)data + 2, size - 2);
	check_json(in);
	check_stream(in, split, frag);
	check_utf8(in);
	/* Fragment sizes for the scanner from the same byte: small, or around its 64-byte blocks;
	 * the instruction set from the high bits of the split byte. */
	size_t sfrag = data[1] & 0x80 ? 57 + data[1] % 16 : frag;
	check_scanner(in, split, sfrag, (unsigned)(data[0] >> 6));
	return 0;
}
