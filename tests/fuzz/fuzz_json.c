/*
 * libFuzzer target for the bounded JSON reader and the OpenAI layer. Properties checked
 * beyond memory safety, for every document the validator accepts:
 *  - every string unescapes, and its unescaped ranges map back to raw ranges that rewrite;
 *  - rewriting strings (with text taken from the input, quotes and controls included) gives a
 *    document the validator accepts again, and the new text reads back;
 *  - openai_add_include_usage output parses with include_usage true (when it succeeds).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/json.h"
#include "proxy/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

#define MAX_EDITS 64

typedef struct walk {
	jsonr_edit edits[MAX_EDITS];
	size_t nedits;
	span repl;
	buf tmp;
} walk;

static void visit_string(walk *w, span s)
{
	buf_reset(&w->tmp);
	check(jsonr_unescape(s, &w->tmp) == CUSTOS_OK);
	size_t ulen = buf_used(&w->tmp);
	span raw;
	check(jsonr_unescaped_to_raw(s, 0, ulen, &raw) == CUSTOS_OK);
	if (ulen > 0) {
		check(raw.ptr == s.ptr && raw.len == s.len);
		/* A range in the middle maps inside the string. */
		size_t off = ulen / 3, len = ulen - off > 1 ? (ulen - off) / 2 : 1;
		check(jsonr_unescaped_to_raw(s, off, len, &raw) == CUSTOS_OK);
		check(raw.ptr >= s.ptr && raw.ptr + raw.len <= s.ptr + s.len && raw.len > 0);
		if (w->nedits < MAX_EDITS)
			w->edits[w->nedits++] = (jsonr_edit){ raw, w->repl };
	} else if (w->nedits < MAX_EDITS) {
		w->edits[w->nedits++] = (jsonr_edit){ raw, w->repl };
	}
	char small[16];
	custos_err e = jsonr_unescape_cstr(s, small, sizeof(small));
	check(e == CUSTOS_OK || e == CUSTOS_ERR_LIMIT || e == CUSTOS_ERR_PARSE);
}

static void visit(walk *w, jsonr_val v, int depth)
{
	check(depth <= (int)JSONR_MAX_DEPTH);
	if (v.type == JSONR_STRING) {
		visit_string(w, v.str);
	} else if (v.type == JSONR_OBJECT) {
		jsonr_iter it;
		span k;
		jsonr_val m;
		jsonr_iter_init(&it, v);
		while (jsonr_obj_next(&it, &k, &m)) {
			visit_string(w, k);
			visit(w, m, depth + 1);
		}
	} else if (v.type == JSONR_ARRAY) {
		jsonr_iter it;
		jsonr_val m;
		jsonr_iter_init(&it, v);
		while (jsonr_arr_next(&it, &m))
			visit(w, m, depth + 1);
	} else if (v.type == JSONR_NUMBER) {
		uint64_t n;
		(void)jsonr_u64(v, UINT64_MAX, &n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *doc = malloc(size ? size : 1);
	if (doc == NULL)
		return 0;
	memcpy(doc, data, size);
	span d = span_of(doc, size);
	jsonr_val root;
	if (jsonr_parse(d, NULL, &root) != CUSTOS_OK) {
		/* The OpenAI entry points must refuse it too. */
		openai_request r;
		check(openai_request_parse(d, NULL, &r) != CUSTOS_OK);
		free(doc);
		return 0;
	}
	walk *w = calloc(1, sizeof(*w));
	check(w != NULL);
	buf_init(&w->tmp, 1u << 26);
	/* Replacement text: the first bytes of the input, whatever they are. */
	w->repl = span_of(doc, size < 12 ? size : 12);
	visit(w, root, 0);

	/* Keys may have become duplicates after an edit: allow them for the re-check. Edits
	 * come in document order from the walk; keep only increasing, non-overlapping ones. */
	size_t k = 0;
	for (size_t i = 0; i < w->nedits; i++) {
		if (k > 0 && w->edits[i].at.ptr < w->edits[k - 1].at.ptr + w->edits[k - 1].at.len)
			continue;
		w->edits[k++] = w->edits[i];
	}
	buf out;
	buf_init(&out, 1u << 26);
	check(jsonr_rewrite(d, w->edits, k, &out) == CUSTOS_OK);
	jsonr_limits dup = { .allow_dup_keys = true };
	jsonr_val r2;
	check(jsonr_parse(buf_span(&out), &dup, &r2) == CUSTOS_OK);
	buf_free(&out);

	openai_request req;
	if (openai_request_parse(d, NULL, &req) == CUSTOS_OK) {
		for (size_t i = 0; i < req.ntexts; i++)
			check(req.texts[i].raw.ptr >= doc &&
			      req.texts[i].raw.ptr + req.texts[i].raw.len <= doc + size);
		openai_request_free(&req);
		buf iu;
		bool changed;
		buf_init(&iu, 1u << 26);
		if (openai_add_include_usage(d, &iu, &changed) == CUSTOS_OK) {
			check(openai_request_parse(buf_span(&iu), NULL, &req) == CUSTOS_OK);
			check(req.has_include_usage && req.include_usage);
			openai_request_free(&req);
		}
		buf_free(&iu);
	}
	openai_usage u;
	(void)openai_usage_parse(d, &u);
	openai_chunk *c = malloc(sizeof(*c));
	check(c != NULL);
	(void)openai_chunk_parse(d, c);
	free(c);
	openai_response *rs = malloc(sizeof(*rs));
	check(rs != NULL);
	(void)openai_response_parse(d, rs);
	free(rs);
	buf_free(&w->tmp);
	free(w);
	free(doc);
	return 0;
}
