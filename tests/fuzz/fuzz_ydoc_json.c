/*
 * libFuzzer target for ydoc_parse_json (strict JSON into the ydoc tree, POST /v1/decide's
 * reader) and the request context read from it. Properties checked beyond memory safety:
 *  - success and an empty diag list go together; a refusal leaves the doc zeroed and names a
 *    line:col;
 *  - every scalar is a C string of its length (no NUL inside) and valid UTF-8; nodes come in
 *    text order;
 *  - it accepts exactly what proxy/json.c's strict reader accepts, outside their documented
 *    differences (a "\u0000" escape, nesting near the bound, over 4096 keys in one object).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "custos/policy.h"
#include "proxy/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static bool utf8_ok(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		size_t k = c < 0x80                 ? 1
		           : c >= 0xc2 && c <= 0xdf ? 2
		           : c >= 0xe0 && c <= 0xef ? 3
		           : c >= 0xf0 && c <= 0xf4 ? 4
		                                    : 0;
		if (k == 0 || i + k > n)
			return false;
		for (size_t j = 1; j < k; j++)
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
		if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
		    (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
			return false;
		i += k;
	}
	return true;
}

/* Checks n and its children; (*line, *col) is the last position seen, for text order. */
static void walk(const ydoc_node *n, unsigned *line, unsigned *col)
{
	check(n->line >= 1 && n->col >= 1);
	check(n->line > *line || (n->line == *line && n->col > *col));
	*line = n->line;
	*col = n->col;
	if (n->kind == YDOC_SCALAR) {
		check(n->str != NULL && strlen(n->str) == n->len);
		check(utf8_ok((const unsigned char *)n->str, n->len));
		return;
	}
	for (size_t i = 0; i < n->n; i++) {
		if (n->kind == YDOC_SEQ) {
			walk(n->items[i], line, col);
		} else {
			check(n->pairs[i].key->kind == YDOC_SCALAR && n->pairs[i].key->quoted);
			walk(n->pairs[i].key, line, col);
			walk(n->pairs[i].value, line, col);
		}
	}
}

/* Inputs where the two readers differ on purpose: skipped by the differential check. */
static bool documented_difference(const uint8_t *data, size_t size)
{
	size_t open = 0, colons = 0;
	for (size_t i = 0; i < size; i++) {
		open += data[i] == '[' || data[i] == '{';
		colons += data[i] == ':';
	}
	return open >= 60 || colons > 4000 ||
	       memmem(data, size, "\\u0000", 6) != NULL; /* ydoc holds C strings */
}

static const char policy_text[] =
        "version: 1\n"
        "principals:\n"
        "  alice: { match: { cert_san_uri: \"spiffe://corp/alice\" } }\n"
        "models:\n"
        "  m1: { isolation: process }\n"
        "data:\n"
        "  wiki: { url: \"https://wiki.corp.example/\", classification: internal }\n"
        "rules:\n"
        "  - id: chat\n"
        "    effect: allow\n"
        "    when: { direction: ingress, principal: alice, model: m1 }\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static policy *pol;
	if (size > 256 * 1024)
		return 0;
	if (pol == NULL) {
		diag_list pd;
		diag_init(&pd);
		if (policy_parse("fuzz.yaml", policy_text, sizeof(policy_text) - 1, &pol, &pd) !=
		    CUSTOS_OK)
			abort();
		diag_free(&pd);
	}
	const char *text = (const char *)data;
	diag_list d;
	diag_init(&d);
	ydoc doc;
	custos_err e = ydoc_parse_json(&doc, "fuzz.json", text, size, &d);
	check((e == CUSTOS_OK) == (d.errors == 0));
	if (e == CUSTOS_OK) {
		unsigned line = 0, col = 0;
		check(doc.root != NULL);
		walk(doc.root, &line, &col);
		ydoc_free(&doc);
	} else {
		check(e == CUSTOS_ERR_PARSE && doc.root == NULL && doc.file == NULL);
		check(d.n == 1 && d.items[0].line >= 1 && d.items[0].col >= 1);
	}
	if (!documented_difference(data, size)) {
		jsonr_val root;
		bool other = jsonr_parse(span_of(text, size), NULL, &root) == CUSTOS_OK;
		check(other == (e == CUSTOS_OK));
	}
	diag_free(&d);

	policy_request r;
	policy_request_doc *k = NULL;
	diag_init(&d);
	if (policy_request_parse_json(pol, text, size, &r, &k, &d) == CUSTOS_OK) {
		policy_decision dec;
		policy_evaluate(pol, &r, &dec);
	}
	policy_request_doc_free(k);
	diag_free(&d);
	return 0;
}
