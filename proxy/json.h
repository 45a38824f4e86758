/*
 * Bounded, strict JSON reader (RFC 8259) for request and response bodies (proxy-internal).
 * A document is validated once (size, depth, grammar, UTF-8, escapes, duplicate keys), then
 * read in place with iterators that hand out span views of the values. Reading allocates
 * nothing; validation allocates only when more than 128 keys are open at once. A rewriting helper
 * replaces ranges of string contents with escaped text, so redaction keeps the JSON valid.
 * (Prefix jsonr_: core owns json_ for its writer.)
 */
#ifndef CUSTOS_PROXY_JSON_H
#define CUSTOS_PROXY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "custos/core.h"

#define JSONR_MAX_DOC_BYTES (16u * 1024u * 1024u) /* largest document accepted */
#define JSONR_MAX_DEPTH     64u                   /* nesting of arrays and objects */
#define JSONR_MAX_KEYS      4096u                 /* members of one object */

typedef struct jsonr_limits {
	size_t max_bytes;    /* 0 = JSONR_MAX_DOC_BYTES; never above it */
	unsigned max_depth;  /* 0 = JSONR_MAX_DEPTH; never above it */
	bool allow_dup_keys; /* default (false): a key repeated in any object is an error */
} jsonr_limits;

typedef enum jsonr_type {
	JSONR_NULL = 0,
	JSONR_FALSE,
	JSONR_TRUE,
	JSONR_NUMBER,
	JSONR_STRING,
	JSONR_ARRAY,
	JSONR_OBJECT,
} jsonr_type;

/* A value inside a validated document. `raw` is the whole value text (quotes and brackets
 * included); for strings `str` is the contents between the quotes, still escaped. */
typedef struct jsonr_val {
	jsonr_type type;
	span raw;
	span str;
} jsonr_val;

/* Validates doc against lim (NULL: defaults, duplicate keys rejected). On success
 * *root is the top-level value. CUSTOS_ERR_LIMIT for size/depth, CUSTOS_ERR_PARSE otherwise;
 * err_msg() says what and the byte offset. */
custos_err jsonr_parse(span doc, const jsonr_limits *lim, jsonr_val *root) CUSTOS_WUR;

/* Iterators over a validated object or array (they trust the validation). */
typedef struct jsonr_iter {
	const char *p, *end;
	bool first;
} jsonr_iter;
void jsonr_iter_init(jsonr_iter *it, jsonr_val container);
/* Next member of an object: *key is its escaped key contents, *val its value; false at end. */
bool jsonr_obj_next(jsonr_iter *it, span *key, jsonr_val *val);
/* Next element of an array; false at end. */
bool jsonr_arr_next(jsonr_iter *it, jsonr_val *val);
/* The first member of obj whose (unescaped) key equals `key`; false if absent or obj is not
 * an object. */
bool jsonr_obj_get(jsonr_val obj, const char *key, jsonr_val *val);

/* One pass over obj for several keys: for each member whose unescaped key equals names[i]
 * (i < n <= 32), vals[i] is set and bit i of the result; the first match wins. 0 when obj is
 * not an object. */
uint32_t jsonr_obj_pick(jsonr_val obj, const char *const *names, size_t n, jsonr_val *vals);

/* Unescaped text of a string value's contents (escaped span `s`): appended to out as UTF-8. */
custos_err jsonr_unescape(span s, buf *out) CUSTOS_WUR;
/* Unescaped text into a fixed array out[outsz] with a NUL; CUSTOS_ERR_LIMIT when it does not
 * fit, CUSTOS_ERR_PARSE when it contains a NUL character (\u0000). */
custos_err jsonr_unescape_cstr(span s, char *out, size_t outsz) CUSTOS_WUR;
/* True when the string contents s, unescaped, equal the C string lit (no allocation). */
bool jsonr_str_eq(span s, const char *lit);
/* Maps the range [off, off+len) of the unescaped text of string contents s back to the
 * escaped bytes in s (widened to whole escapes). For redaction edits. */
custos_err jsonr_unescaped_to_raw(span s, size_t off, size_t len, span *raw) CUSTOS_WUR;
/* Reads a number value as an unsigned integer (no fraction, exponent or sign) <= max. */
custos_err jsonr_u64(jsonr_val v, uint64_t max, uint64_t *out) CUSTOS_WUR;

/* An edit: replace `at` (a range inside one string's escaped contents, within the document
 * passed to jsonr_rewrite) by `text` (raw UTF-8; escaped on output). */
typedef struct jsonr_edit {
	span at;
	span text;
} jsonr_edit;

/* Appends doc with the edits applied to out. Edits must be sorted, non-overlapping and each
 * inside one string's contents (checked: CUSTOS_ERR_INVAL otherwise). The result is valid
 * JSON when doc was. */
custos_err jsonr_rewrite(span doc, const jsonr_edit *edits, size_t n, buf *out) CUSTOS_WUR;

#endif /* CUSTOS_PROXY_JSON_H */
