/*
 * Strict JSON (RFC 8259) validation and in-place reading. The validator bounds size, depth and
 * members per object, checks UTF-8 (no overlongs, surrogates or values past U+10FFFF) and
 * escapes (\u surrogate pairs must pair up), and refuses duplicate keys, compared after
 * unescaping, because two parsers that pick different duplicates see different requests.
 */
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* ---------------------------------------------------------------------------------------------
 * UTF-8 and escapes.
 */

/* Length of the valid UTF-8 sequence at s[0..n) (1..4) and its code point, or 0. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned char c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t len;
	uint32_t v, min;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		v = c & 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		v = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		v = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

static size_t utf8_encode(uint32_t cp, char out[4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Decodes one unit of string contents at s[i..n): a UTF-8 character or an escape (a surrogate
 * pair is one unit). Returns the raw bytes used and the code point, or 0 when invalid. */
static size_t unit_decode(const unsigned char *s, size_t i, size_t n, uint32_t *cp)
{
	unsigned char c = s[i];
	if (c == '"' || c < 0x20)
		return 0;
	if (c != '\\')
		return utf8_decode(s + i, n - i, cp);
	if (i + 1 >= n)
		return 0;
	switch (s[i + 1]) {
	case '"':
		*cp = '"';
		return 2;
	case '\\':
		*cp = '\\';
		return 2;
	case '/':
		*cp = '/';
		return 2;
	case 'b':
		*cp = '\b';
		return 2;
	case 'f':
		*cp = '\f';
		return 2;
	case 'n':
		*cp = '\n';
		return 2;
	case 'r':
		*cp = '\r';
		return 2;
	case 't':
		*cp = '\t';
		return 2;
	case 'u':
		break;
	default:
		return 0;
	}
	long h = i + 6 <= n ? num_hex4(s + i + 2) : -1;
	if (h < 0)
		return 0;
	uint32_t hi = (uint32_t)h, lo;
	if (hi >= 0xdc00 && hi <= 0xdfff)
		return 0; /* lone low surrogate */
	if (hi < 0xd800 || hi > 0xdbff) {
		*cp = hi;
		return 6;
	}
	long l = i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' ? num_hex4(s + i + 8) : -1;
	if (l < 0xdc00 || l > 0xdfff)
		return 0; /* high surrogate not followed by a low one */
	lo = (uint32_t)l;
	*cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
	return 12;
}

/* ---------------------------------------------------------------------------------------------
 * Validator.
 */
typedef struct key_ent {
	uint64_t hash;
	const char *ptr; /* escaped contents */
	size_t len;
} key_ent;

#define INLINE_KEYS 128

typedef struct vctx {
	const unsigned char *s;
	size_t n, i;
	unsigned max_depth;
	bool dups_ok;
	key_ent inl[INLINE_KEYS];
	key_ent *keys; /* inl, or heap when more are live */
	size_t nkeys, capkeys;
} vctx;

static custos_err verr(vctx *v, custos_err e, const char *what)
{
	return err_set(e, "JSON: %s at byte %zu", what, v->i);
}

/* The limit in force is named, so that a client (and the audit trail) can tell it from a
 * grammar error: it may be custos.yaml's limits.json_depth, lower than the reader's own. */
static custos_err verr_depth(vctx *v)
{
	return err_set(CUSTOS_ERR_LIMIT, "JSON: nested deeper than %u at byte %zu", v->max_depth,
	               v->i);
}

static void skip_ws(vctx *v)
{
	while (v->i < v->n) {
		unsigned char c = v->s[v->i];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		v->i++;
	}
}

/* Bytes that may stand for themselves in a string: ASCII but controls, '"' and '\\'. */
static const uint8_t plain[256] = {
	[0x20 ... 0x21] = 1,
	[0x23 ... 0x5b] = 1,
	[0x5d ... 0x7f] = 1,
};

/* Skips 8 bytes at a time while none is a control, '"', '\\' or non-ASCII (SWAR: a byte
 * test on a 64-bit word; exact for "is there such a byte"). */
static size_t plain_run8(const unsigned char *s, size_t i, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	while (n - i >= 8) {
		uint64_t x;
		memcpy(&x, s + i, 8);
		uint64_t lt20 = (x - ones * 0x20) & ~x;
		uint64_t q = x ^ (ones * '"');
		uint64_t b = x ^ (ones * '\\');
		uint64_t quote = (q - ones) & ~q;
		uint64_t bs = (b - ones) & ~b;
		if (((x | lt20 | quote | bs) & highs) != 0)
			break;
		i += 8;
	}
	return i;
}

/* Validates a string starting at its opening quote; hash (FNV-1a of the unescaped bytes) when
 * asked; leaves i after the closing quote. */
static custos_err v_string(vctx *v, uint64_t *hash)
{
	const unsigned char *s = v->s;
	size_t i = v->i + 1, n = v->n; /* after the opening quote */
	uint64_t h = 0xcbf29ce484222325ull;
	for (;;) {
		size_t run = i;
		if (hash == NULL)
			i = plain_run8(s, i, n);
		while (i < n && plain[s[i]])
			i++;
		if (hash != NULL)
			for (size_t k = run; k < i; k++)
				h = (h ^ s[k]) * 0x100000001b3ull;
		if (i >= n) {
			v->i = i;
			return verr(v, CUSTOS_ERR_PARSE, "unterminated string");
		}
		unsigned char c = s[i];
		if (c == '"') {
			i++;
			break;
		}
		uint32_t cp;
		size_t k = unit_decode(s, i, n, &cp);
		if (k == 0) {
			v->i = i;
			if (c < 0x20)
				return verr(v, CUSTOS_ERR_PARSE, "control character in string");
			if (c == '\\')
				return verr(v, CUSTOS_ERR_PARSE,
				            "invalid escape or lone surrogate");
			return verr(v, CUSTOS_ERR_PARSE, "invalid UTF-8");
		}
		if (hash != NULL) {
			char u[4];
			size_t m = utf8_encode(cp, u);
			for (size_t j = 0; j < m; j++)
				h = (h ^ (unsigned char)u[j]) * 0x100000001b3ull;
		}
		i += k;
	}
	v->i = i;
	if (hash != NULL)
		*hash = h;
	return CUSTOS_OK;
}

static custos_err v_number(vctx *v)
{
	const unsigned char *s = v->s;
	size_t n = v->n;
	if (v->i < n && s[v->i] == '-')
		v->i++;
	if (v->i >= n)
		return verr(v, CUSTOS_ERR_PARSE, "truncated number");
	if (s[v->i] == '0') {
		v->i++;
	} else if (s[v->i] >= '1' && s[v->i] <= '9') {
		while (v->i < n && s[v->i] >= '0' && s[v->i] <= '9')
			v->i++;
	} else {
		return verr(v, CUSTOS_ERR_PARSE, "invalid number");
	}
	if (v->i < n && s[v->i] == '.') {
		v->i++;
		size_t d = v->i;
		while (v->i < n && s[v->i] >= '0' && s[v->i] <= '9')
			v->i++;
		if (v->i == d)
			return verr(v, CUSTOS_ERR_PARSE, "invalid number fraction");
	}
	if (v->i < n && (s[v->i] == 'e' || s[v->i] == 'E')) {
		v->i++;
		if (v->i < n && (s[v->i] == '+' || s[v->i] == '-'))
			v->i++;
		size_t d = v->i;
		while (v->i < n && s[v->i] >= '0' && s[v->i] <= '9')
			v->i++;
		if (v->i == d)
			return verr(v, CUSTOS_ERR_PARSE, "invalid number exponent");
	}
	return CUSTOS_OK;
}

static custos_err v_literal(vctx *v, const char *lit, size_t len)
{
	if (v->n - v->i < len || memcmp(v->s + v->i, lit, len) != 0)
		return verr(v, CUSTOS_ERR_PARSE, "invalid literal");
	v->i += len;
	return CUSTOS_OK;
}

/* Next unit's code point of escaped contents (validated), advancing *i. */
static uint32_t next_cp(span s, size_t *i)
{
	uint32_t cp = 0;
	size_t k = unit_decode((const unsigned char *)s.ptr, *i, s.len, &cp);
	*i += k ? k : 1;
	return cp;
}

/* Unescaped equality of two validated escaped strings. */
static bool key_eq(span a, span b)
{
	size_t i = 0, j = 0;
	while (i < a.len && j < b.len)
		if (next_cp(a, &i) != next_cp(b, &j))
			return false;
	return i == a.len && j == b.len;
}

static int key_cmp(const void *x, const void *y)
{
	const key_ent *a = x, *b = y;
	return a->hash < b->hash ? -1 : a->hash > b->hash;
}

static custos_err push_key(vctx *v, uint64_t hash, const char *p, size_t len)
{
	if (v->nkeys == v->capkeys) {
		size_t ncap = v->capkeys * 2;
		ENSURE(ncap <= (size_t)JSONR_MAX_KEYS * JSONR_MAX_DEPTH, CUSTOS_ERR_LIMIT,
		       "JSON: too many keys");
		key_ent *nk = malloc(ncap * sizeof(*nk));
		ENSURE(nk != NULL, CUSTOS_ERR_NOMEM, "JSON: out of memory");
		memcpy(nk, v->keys, v->nkeys * sizeof(*nk));
		if (v->keys != v->inl)
			free(v->keys);
		v->keys = nk;
		v->capkeys = ncap;
	}
	v->keys[v->nkeys++] = (key_ent){ hash, p, len };
	return CUSTOS_OK;
}

/* Duplicate check of the keys of one object (keys[from..nkeys)): sort by hash, compare
 * neighbours with equal hashes. O(k log k). */
static custos_err check_dups(vctx *v, size_t from, size_t at)
{
	size_t k = v->nkeys - from;
	if (k < 2)
		return CUSTOS_OK;
	key_ent *e = v->keys + from;
	if (k == 2) {
		if (e[0].hash == e[1].hash &&
		    key_eq(span_of(e[0].ptr, e[0].len), span_of(e[1].ptr, e[1].len)))
			goto dup;
		return CUSTOS_OK;
	}
	if (k <= 16) {
		/* Insertion sort: objects are small and qsort's calls cost more. */
		for (size_t i = 1; i < k; i++) {
			key_ent t = e[i];
			size_t j = i;
			for (; j > 0 && e[j - 1].hash > t.hash; j--)
				e[j] = e[j - 1];
			e[j] = t;
		}
	} else {
		qsort(e, k, sizeof(*e), key_cmp);
	}
	for (size_t i = 0; i + 1 < k; i++)
		for (size_t j = i + 1; j < k && e[j].hash == e[i].hash; j++)
			if (key_eq(span_of(e[i].ptr, e[i].len), span_of(e[j].ptr, e[j].len)))
				goto dup;
	return CUSTOS_OK;
dup:
	return err_set(CUSTOS_ERR_PARSE, "JSON: duplicate key in the object at byte %zu", at);
}

static custos_err v_value(vctx *v, unsigned depth)
{
	skip_ws(v);
	if (v->i >= v->n)
		return verr(v, CUSTOS_ERR_PARSE, "value expected");
	unsigned char c = v->s[v->i];
	switch (c) {
	case '"':
		return v_string(v, NULL);
	case 't':
		return v_literal(v, "true", 4);
	case 'f':
		return v_literal(v, "false", 5);
	case 'n':
		return v_literal(v, "null", 4);
	case '[': {
		if (depth >= v->max_depth)
			return verr_depth(v);
		v->i++;
		skip_ws(v);
		if (v->i < v->n && v->s[v->i] == ']') {
			v->i++;
			return CUSTOS_OK;
		}
		for (;;) {
			GUARD(v_value(v, depth + 1));
			skip_ws(v);
			if (v->i >= v->n)
				return verr(v, CUSTOS_ERR_PARSE, "unterminated array");
			if (v->s[v->i] == ']') {
				v->i++;
				return CUSTOS_OK;
			}
			if (v->s[v->i] != ',')
				return verr(v, CUSTOS_ERR_PARSE, "',' or ']' expected");
			v->i++;
		}
	}
	case '{': {
		if (depth >= v->max_depth)
			return verr_depth(v);
		size_t at = v->i, from = v->nkeys, members = 0;
		v->i++;
		skip_ws(v);
		if (v->i < v->n && v->s[v->i] == '}') {
			v->i++;
			return CUSTOS_OK;
		}
		for (;;) {
			skip_ws(v);
			if (v->i >= v->n || v->s[v->i] != '"')
				return verr(v, CUSTOS_ERR_PARSE, "key string expected");
			if (++members > JSONR_MAX_KEYS)
				return verr(v, CUSTOS_ERR_LIMIT, "too many members in an object");
			size_t ks = v->i + 1;
			uint64_t h;
			GUARD(v_string(v, v->dups_ok ? NULL : &h));
			if (!v->dups_ok)
				GUARD(push_key(v, h, (const char *)v->s + ks, v->i - 1 - ks));
			skip_ws(v);
			if (v->i >= v->n || v->s[v->i] != ':')
				return verr(v, CUSTOS_ERR_PARSE, "':' expected");
			v->i++;
			GUARD(v_value(v, depth + 1));
			skip_ws(v);
			if (v->i >= v->n)
				return verr(v, CUSTOS_ERR_PARSE, "unterminated object");
			if (v->s[v->i] == '}') {
				v->i++;
				break;
			}
			if (v->s[v->i] != ',')
				return verr(v, CUSTOS_ERR_PARSE, "',' or '}' expected");
			v->i++;
		}
		if (!v->dups_ok) {
			GUARD(check_dups(v, from, at));
			v->nkeys = from;
		}
		return CUSTOS_OK;
	}
	default:
		if (c == '-' || (c >= '0' && c <= '9'))
			return v_number(v);
		return verr(v, CUSTOS_ERR_PARSE, "unexpected character");
	}
}

/* The value starting at p (validated): its type and raw extent. */
static jsonr_val value_at(const char *p, const char *end);
/* The value at p whose length is known. */
static jsonr_val value_make(const char *p, size_t len);

custos_err jsonr_parse(span doc, const jsonr_limits *lim, jsonr_val *root)
{
	jsonr_limits l = { 0 };
	if (lim != NULL)
		l = *lim;
	if (l.max_bytes == 0 || l.max_bytes > JSONR_MAX_DOC_BYTES)
		l.max_bytes = JSONR_MAX_DOC_BYTES;
	if (l.max_depth == 0 || l.max_depth > JSONR_MAX_DEPTH)
		l.max_depth = JSONR_MAX_DEPTH;
	ENSURE(doc.len <= l.max_bytes, CUSTOS_ERR_LIMIT, "JSON document of %zu bytes exceeds %zu",
	       doc.len, l.max_bytes);

	vctx ctx, *v = &ctx;
	v->s = (const unsigned char *)doc.ptr;
	v->n = doc.len;
	v->i = 0;
	v->max_depth = l.max_depth;
	v->dups_ok = l.allow_dup_keys;
	v->keys = v->inl;
	v->nkeys = 0;
	v->capkeys = INLINE_KEYS;
	custos_err e = CUSTOS_OK;
	size_t start = 0, end = 0;
	if (doc.len == 0) {
		e = err_set(CUSTOS_ERR_PARSE, "JSON: empty document");
	} else {
		skip_ws(v);
		start = v->i;
		e = v_value(v, 0);
		end = v->i;
	}
	if (e == CUSTOS_OK) {
		skip_ws(v);
		if (v->i != v->n)
			e = verr(v, CUSTOS_ERR_PARSE, "trailing bytes after the document");
	}
	if (e == CUSTOS_OK) {
		/* The validator knows where the value ends: no second walk over it. */
		*root = value_make(doc.ptr + start, end - start);
	}
	if (v->keys != v->inl)
		free(v->keys);
	return e;
}

/* ---------------------------------------------------------------------------------------------
 * Reading a validated document.
 */
static const char *skip_ws_p(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* End of the string whose opening quote is at p (just after the closing quote). */
static const char *string_end(const char *p, const char *end)
{
	p++;
	while (p < end) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		if (q == NULL)
			return end;
		/* The quote is escaped when preceded by an odd number of backslashes. */
		size_t bs = 0;
		while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
			bs++;
		if ((bs & 1) == 0)
			return q + 1;
		p = q + 1;
	}
	return end;
}

static const char *value_end(const char *p, const char *end)
{
	if (p >= end)
		return end;
	switch (*p) {
	case '"':
		return string_end(p, end);
	case '{':
	case '[': {
		size_t depth = 0;
		while (p < end) {
			char c = *p;
			if (c == '"') {
				p = string_end(p, end);
				continue;
			}
			if (c == '{' || c == '[')
				depth++;
			else if (c == '}' || c == ']') {
				if (--depth == 0)
					return p + 1;
			}
			p++;
		}
		return end;
	}
	default:
		while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
		       *p != '\n' && *p != '\r')
			p++;
		return p;
	}
}

static jsonr_val value_at(const char *p, const char *end)
{
	return value_make(p, (size_t)(value_end(p, end) - p));
}

static jsonr_val value_make(const char *p, size_t len)
{
	jsonr_val v = { 0 };
	const char *end = p + len;
	v.raw = span_of(p, len);
	switch (p < end ? *p : 'n') {
	case '"':
		v.type = JSONR_STRING;
		v.str = span_of(p + 1, v.raw.len >= 2 ? v.raw.len - 2 : 0);
		break;
	case '{':
		v.type = JSONR_OBJECT;
		break;
	case '[':
		v.type = JSONR_ARRAY;
		break;
	case 't':
		v.type = JSONR_TRUE;
		break;
	case 'f':
		v.type = JSONR_FALSE;
		break;
	case 'n':
		v.type = JSONR_NULL;
		break;
	default:
		v.type = JSONR_NUMBER;
		break;
	}
	if (v.type != JSONR_STRING)
		v.str = span_of(p, 0);
	return v;
}

void jsonr_iter_init(jsonr_iter *it, jsonr_val container)
{
	it->first = true;
	if ((container.type != JSONR_OBJECT && container.type != JSONR_ARRAY) ||
	    container.raw.len < 2) {
		it->p = it->end = container.raw.ptr; /* nothing to iterate */
		return;
	}
	it->p = container.raw.ptr + 1;
	it->end = container.raw.ptr + container.raw.len - 1;
}

static bool iter_step(jsonr_iter *it)
{
	it->p = skip_ws_p(it->p, it->end);
	if (it->p >= it->end)
		return false;
	if (!it->first) {
		if (*it->p != ',')
			return false;
		it->p = skip_ws_p(it->p + 1, it->end);
	}
	it->first = false;
	return it->p < it->end;
}

bool jsonr_obj_next(jsonr_iter *it, span *key, jsonr_val *val)
{
	if (!iter_step(it) || *it->p != '"')
		return false;
	const char *ke = string_end(it->p, it->end);
	*key = span_of(it->p + 1, (size_t)(ke - it->p - 2));
	const char *p = skip_ws_p(ke, it->end);
	if (p >= it->end || *p != ':')
		return false;
	p = skip_ws_p(p + 1, it->end);
	*val = value_at(p, it->end);
	it->p = val->raw.ptr + val->raw.len;
	return true;
}

bool jsonr_arr_next(jsonr_iter *it, jsonr_val *val)
{
	if (!iter_step(it))
		return false;
	*val = value_at(it->p, it->end);
	it->p = val->raw.ptr + val->raw.len;
	return true;
}

bool jsonr_str_eq(span s, const char *lit)
{
	size_t i = 0, j = 0, n = strlen(lit);
	/* Raw contents are never shorter than their unescaped text, and are equally long only
	 * without escapes: length and bytes decide the common cases. */
	if (s.len < n)
		return false;
	if (s.len == n)
		return memcmp(s.ptr, lit, n) == 0 && memchr(s.ptr, '\\', s.len) == NULL;
	if (memchr(s.ptr, '\\', s.len) == NULL)
		return false;
	while (i < s.len && j < n) {
		uint32_t a = next_cp(s, &i), b;
		/* The literal is plain UTF-8 (not JSON-escaped). */
		size_t k = utf8_decode((const unsigned char *)lit + j, n - j, &b);
		if (k == 0)
			return false;
		j += k;
		if (a != b)
			return false;
	}
	return i == s.len && j == n;
}

uint32_t jsonr_obj_pick(jsonr_val obj, const char *const *names, size_t n, jsonr_val *vals)
{
	uint32_t found = 0;
	if (obj.type != JSONR_OBJECT || n > 32)
		return 0;
	jsonr_iter it;
	span k;
	jsonr_val v;
	jsonr_iter_init(&it, obj);
	while (jsonr_obj_next(&it, &k, &v))
		for (size_t i = 0; i < n; i++)
			if (!(found & (1u << i)) && jsonr_str_eq(k, names[i])) {
				vals[i] = v;
				found |= 1u << i;
				break;
			}
	return found;
}

bool jsonr_obj_get(jsonr_val obj, const char *key, jsonr_val *val)
{
	if (obj.type != JSONR_OBJECT)
		return false;
	jsonr_iter it;
	span k;
	jsonr_val v;
	jsonr_iter_init(&it, obj);
	while (jsonr_obj_next(&it, &k, &v))
		if (jsonr_str_eq(k, key)) {
			*val = v;
			return true;
		}
	return false;
}

custos_err jsonr_unescape(span s, buf *out)
{
	const unsigned char *p = (const unsigned char *)s.ptr;
	size_t i = 0;
	while (i < s.len) {
		/* Copy runs without escapes in one go (UTF-8 was validated). */
		const char *bs = memchr(s.ptr + i, '\\', s.len - i);
		size_t run = bs ? (size_t)(bs - s.ptr) - i : s.len - i;
		if (run > 0) {
			GUARD(buf_append(out, s.ptr + i, run));
			i += run;
			continue;
		}
		uint32_t cp;
		size_t k = unit_decode(p, i, s.len, &cp);
		ENSURE(k != 0, CUSTOS_ERR_PARSE, "JSON: invalid escape at %zu", i);
		char u[4];
		GUARD(buf_append(out, u, utf8_encode(cp, u)));
		i += k;
	}
	return CUSTOS_OK;
}

custos_err jsonr_unescape_cstr(span s, char *out, size_t outsz)
{
	size_t o = 0, i = 0;
	ENSURE(outsz > 0, CUSTOS_ERR_LIMIT, "no room");
	while (i < s.len) {
		uint32_t cp;
		size_t k = unit_decode((const unsigned char *)s.ptr, i, s.len, &cp);
		ENSURE(k != 0, CUSTOS_ERR_PARSE, "JSON: invalid string contents at %zu", i);
		ENSURE(cp != 0, CUSTOS_ERR_PARSE, "JSON: NUL character in a string");
		char u[4];
		size_t m = utf8_encode(cp, u);
		ENSURE(o + m < outsz, CUSTOS_ERR_LIMIT, "JSON: string longer than %zu bytes",
		       outsz - 1);
		memcpy(out + o, u, m);
		o += m;
		i += k;
	}
	out[o] = '\0';
	return CUSTOS_OK;
}

custos_err jsonr_unescaped_to_raw(span s, size_t off, size_t len, span *raw)
{
	size_t i = 0, u = 0;
	size_t rs = SIZE_MAX, re = SIZE_MAX;
	size_t end = off + len;
	ENSURE(end >= off, CUSTOS_ERR_INVAL, "range overflows");
	if (len == 0) {
		/* An empty range maps to the unit boundary at or after off. */
		while (i < s.len && u < off) {
			uint32_t cp;
			size_t k = unit_decode((const unsigned char *)s.ptr, i, s.len, &cp);
			ENSURE(k != 0, CUSTOS_ERR_PARSE, "JSON: invalid string contents");
			char tmp[4];
			u += utf8_encode(cp, tmp);
			i += k;
		}
		ENSURE(u >= off, CUSTOS_ERR_INVAL, "offset past the string");
		*raw = span_of(s.ptr + i, 0);
		return CUSTOS_OK;
	}
	while (i < s.len) {
		uint32_t cp;
		size_t k = unit_decode((const unsigned char *)s.ptr, i, s.len, &cp);
		ENSURE(k != 0, CUSTOS_ERR_PARSE, "JSON: invalid string contents");
		char tmp[4];
		size_t m = utf8_encode(cp, tmp);
		/* This unit covers unescaped bytes [u, u+m). */
		if (rs == SIZE_MAX && off < u + m)
			rs = i;
		if (end <= u + m) {
			re = i + k;
			break;
		}
		u += m;
		i += k;
	}
	ENSURE(rs != SIZE_MAX && re != SIZE_MAX, CUSTOS_ERR_INVAL,
	       "range [%zu, %zu) past the string", off, end);
	*raw = span_of(s.ptr + rs, re - rs);
	return CUSTOS_OK;
}

custos_err jsonr_u64(jsonr_val v, uint64_t max, uint64_t *out)
{
	ENSURE(v.type == JSONR_NUMBER, CUSTOS_ERR_PARSE, "JSON: number expected");
	if (num_parse_u64(v.raw, 0, max, out) != CUSTOS_OK)
		return err_set(CUSTOS_ERR_PARSE, "JSON: %.*s is not a whole number <= %llu",
		               (int)(v.raw.len > 32 ? 32 : v.raw.len), v.raw.ptr,
		               (unsigned long long)max);
	return CUSTOS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Rewriting.
 */
custos_err jsonr_rewrite(span doc, const jsonr_edit *edits, size_t n, buf *out)
{
	const unsigned char *s = (const unsigned char *)doc.ptr;
	size_t i = 0, copied = 0, k = 0;
	bool in_str = false;

	/* One pass: i walks unit boundaries; an edit must start and end on a boundary inside
	 * one string's contents. */
	for (size_t e = 0; e < n; e++) {
		const jsonr_edit *ed = &edits[e];
		ENSURE(ed->at.ptr >= doc.ptr && ed->at.ptr <= doc.ptr + doc.len &&
		               ed->at.len <= (size_t)(doc.ptr + doc.len - ed->at.ptr),
		       CUSTOS_ERR_INVAL, "edit %zu outside the document", e);
		ENSURE(e == 0 || ed->at.ptr >= edits[e - 1].at.ptr + edits[e - 1].at.len,
		       CUSTOS_ERR_INVAL, "edits not sorted or overlapping");
	}
	while (k < n) {
		size_t es = (size_t)(edits[k].at.ptr - doc.ptr);
		size_t ee = es + edits[k].at.len;
		/* Walk to es. */
		while (i < es) {
			if (!in_str) {
				if (s[i] == '"')
					in_str = true;
				i++;
				continue;
			}
			if (s[i] == '"') {
				in_str = false;
				i++;
				continue;
			}
			uint32_t cp;
			size_t u = unit_decode(s, i, doc.len, &cp);
			ENSURE(u != 0, CUSTOS_ERR_INVAL, "document is not valid JSON");
			i += u;
		}
		ENSURE(i == es && in_str, CUSTOS_ERR_INVAL, "edit %zu does not start in a string",
		       k);
		while (i < ee) {
			ENSURE(s[i] != '"', CUSTOS_ERR_INVAL, "edit %zu crosses a string end", k);
			uint32_t cp;
			size_t u = unit_decode(s, i, doc.len, &cp);
			ENSURE(u != 0, CUSTOS_ERR_INVAL, "document is not valid JSON");
			i += u;
		}
		ENSURE(i == ee, CUSTOS_ERR_INVAL, "edit %zu ends inside an escape or character", k);
		GUARD(buf_append(out, doc.ptr + copied, es - copied));
		GUARD(json_escape(out, edits[k].text));
		copied = ee;
		k++;
	}
	return buf_append(out, doc.ptr + copied, doc.len - copied);
}
