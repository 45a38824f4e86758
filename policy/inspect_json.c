/*
 * JSON-aware inspection of request bodies: a strict, depth-bounded RFC 8259 walker that
 * unescapes each string value (keys are structure, not content), inspects it as its own text,
 * and rewrites only the escaped bytes a REDACT finding covers. Kept here, not in proxy/json.c,
 * because policy sits below proxy in the dependency order (docs/INSPECTION.md).
 */
#include <stdlib.h>
#include <string.h>

#include "inspect_int.h"
#include "inspect_stream_int.h"

typedef struct jctx {
	const uint8_t *p;
	size_t n, i;
	int depth;
	/* inspection (all NULL for a validity check) */
	const inspect_engine *e;
	inspect_scratch *s;
	const inspect_profile *prof;
	inspect_summary *sum;
	buf *out;
	size_t copied; /* raw bytes before this are in out */
	bool embedded; /* a JSON document inside a string: numbers are content too */
	buf text;      /* the unescaped value */
	uint32_t *map; /* map[k]: raw offset of the escape that produced text byte k */
	size_t map_cap;
	inspect_findings found;
} jctx;

static custos_err jerr(const jctx *c, const char *what)
{
	return err_set(CUSTOS_ERR_PARSE, "JSON body: %s at byte %zu", what, c->i);
}

static void skip_ws(jctx *c)
{
	while (c->i < c->n) {
		uint8_t b = c->p[c->i];
		if (b != ' ' && b != '\t' && b != '\n' && b != '\r')
			break;
		c->i++;
	}
}

static bool read_u4(jctx *c, size_t at, unsigned *out)
{
	if (at + 4 > c->n)
		return false;
	unsigned v = 0;
	for (size_t k = 0; k < 4; k++) {
		int h = num_hex_digit((unsigned char)c->p[at + k]);
		if (h < 0)
			return false;
		v = v << 4 | (unsigned)h;
	}
	*out = v;
	return true;
}

/* Room for map[0 .. need). */
static custos_err map_reserve(jctx *c, size_t need)
{
	if (need <= c->map_cap)
		return CUSTOS_OK;
	size_t nc = c->map_cap ? c->map_cap : 256;
	while (nc < need)
		nc *= 2;
	uint32_t *m = realloc(c->map, nc * sizeof(*m));
	ENSURE(m != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
	c->map = m;
	c->map_cap = nc;
	return CUSTOS_OK;
}

static custos_err text_put(jctx *c, const uint8_t *b, size_t n, size_t raw)
{
	GUARD(map_reserve(c, buf_used(&c->text) + n + 1));
	for (size_t k = 0; k < n; k++)
		c->map[buf_used(&c->text) + k] = (uint32_t)raw;
	return buf_append(&c->text, b, n);
}

/* Plain bytes raw[at .. at + n) into the text, each mapped to its own raw offset. */
static custos_err text_put_raw(jctx *c, size_t at, size_t n)
{
	size_t base = buf_used(&c->text);
	GUARD(map_reserve(c, base + n + 1));
	for (size_t k = 0; k < n; k++)
		c->map[base + k] = (uint32_t)(at + k);
	return buf_append(&c->text, c->p + at, n);
}

static size_t utf8_encode(unsigned cp, uint8_t o[4])
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xC0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xE0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (uint8_t)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (uint8_t)(0xF0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (uint8_t)(0x80 | (cp & 0x3F));
	return 4;
}

/* Length of a valid UTF-8 sequence at p[0..n) (no overlongs, surrogates or > U+10FFFF), or 0. */
static size_t utf8_valid_len(const uint8_t *p, size_t n)
{
	uint8_t b = p[0];
	size_t len;
	unsigned min, cp;
	if (b < 0x80)
		return 1;
	if (b >= 0xC2 && b <= 0xDF) {
		len = 2, min = 0x80, cp = b & 0x1F;
	} else if (b >= 0xE0 && b <= 0xEF) {
		len = 3, min = 0x800, cp = b & 0x0F;
	} else if (b >= 0xF0 && b <= 0xF4) {
		len = 4, min = 0x10000, cp = b & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t k = 1; k < len; k++) {
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (p[k] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

/* Parses the string at c->i (on its opening quote). When `value` and inspecting, its unescaped
 * text goes to c->text with the offset map. */
static custos_err parse_string(jctx *c, bool value)
{
	bool collect = value && c->e != NULL;
	c->i++; /* opening quote */
	if (collect)
		buf_reset(&c->text);
	for (;;) {
		if (c->i >= c->n)
			return jerr(c, "unterminated string");
		uint8_t b = c->p[c->i];
		size_t at = c->i;
		if (b == '"') {
			if (collect) {
				GUARD(map_reserve(c, buf_used(&c->text) + 1));
				c->map[buf_used(&c->text)] = (uint32_t)at; /* end sentinel */
			}
			c->i++;
			return CUSTOS_OK;
		}
		if (b < 0x20)
			return jerr(c, "control character in string");
		if (b != '\\') {
			/* A run of plain characters goes over in one piece. */
			size_t run = c->i;
			while (run < c->n) {
				uint8_t x = c->p[run];
				if (x == '"' || x == '\\' || x < 0x20)
					break;
				if (x < 0x80) {
					run++;
					continue;
				}
				size_t l = utf8_valid_len(c->p + run, c->n - run);
				if (l == 0) {
					c->i = run;
					return jerr(c, "invalid UTF-8");
				}
				run += l;
			}
			if (collect)
				GUARD(text_put_raw(c, at, run - at));
			c->i = run;
			continue;
		}
		if (c->i + 1 >= c->n)
			return jerr(c, "unterminated escape");
		uint8_t esc = c->p[c->i + 1], o[4];
		size_t ol = 1;
		c->i += 2;
		switch (esc) {
		case '"':
		case '\\':
		case '/':
			o[0] = esc;
			break;
		case 'b':
			o[0] = '\b';
			break;
		case 'f':
			o[0] = '\f';
			break;
		case 'n':
			o[0] = '\n';
			break;
		case 'r':
			o[0] = '\r';
			break;
		case 't':
			o[0] = '\t';
			break;
		case 'u': {
			unsigned u, lo;
			if (!read_u4(c, c->i, &u))
				return jerr(c, "bad \\u escape");
			c->i += 4;
			if (u >= 0xD800 && u <= 0xDBFF && c->i + 6 <= c->n && c->p[c->i] == '\\' &&
			    c->p[c->i + 1] == 'u' && read_u4(c, c->i + 2, &lo) && lo >= 0xDC00 &&
			    lo <= 0xDFFF) {
				u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
				c->i += 6;
			} else if (u >= 0xD800 && u <= 0xDFFF) {
				u = 0xFFFD; /* a lone surrogate is inspected as U+FFFD, left as is */
			}
			ol = utf8_encode(u, o);
			break;
		}
		default:
			return jerr(c, "bad escape");
		}
		if (collect)
			GUARD(text_put(c, o, ol, at));
	}
}

static custos_err parse_number(jctx *c)
{
	size_t s = c->i;
	if (c->i < c->n && c->p[c->i] == '-')
		c->i++;
	if (c->i >= c->n)
		return jerr(c, "bad number");
	if (c->p[c->i] == '0') {
		c->i++;
	} else if (c->p[c->i] >= '1' && c->p[c->i] <= '9') {
		while (c->i < c->n && c->p[c->i] >= '0' && c->p[c->i] <= '9')
			c->i++;
	} else {
		return jerr(c, "bad number");
	}
	if (c->i < c->n && c->p[c->i] == '.') {
		c->i++;
		size_t d = c->i;
		while (c->i < c->n && c->p[c->i] >= '0' && c->p[c->i] <= '9')
			c->i++;
		if (c->i == d)
			return jerr(c, "bad fraction");
	}
	if (c->i < c->n && (c->p[c->i] == 'e' || c->p[c->i] == 'E')) {
		c->i++;
		if (c->i < c->n && (c->p[c->i] == '+' || c->p[c->i] == '-'))
			c->i++;
		size_t d = c->i;
		while (c->i < c->n && c->p[c->i] >= '0' && c->p[c->i] <= '9')
			c->i++;
		if (c->i == d)
			return jerr(c, "bad exponent");
	}
	return c->i > s ? CUSTOS_OK : jerr(c, "bad number");
}

static custos_err parse_lit(jctx *c, const char *lit)
{
	size_t l = strlen(lit);
	if (c->n - c->i < l || memcmp(c->p + c->i, lit, l) != 0)
		return jerr(c, "unexpected token");
	c->i += l;
	return CUSTOS_OK;
}

/* Raw end of text span ending at b: the end of the escape that produced byte b-1. */
static size_t raw_end(const jctx *c, size_t b)
{
	size_t k = b;
	while (c->map[k] == c->map[b - 1])
		k++;
	return c->map[k];
}

/* Inspects the string value just parsed (whose raw bytes end before c->i). */
static custos_err inspect_value(jctx *c)
{
	size_t n = buf_used(&c->text);
	if (n == 0)
		return CUSTOS_OK;
	inspect_stream st;
	c->found.n = 0;
	custos_err r = inspect_stream_init(&st, c->e, c->prof);
	st.collect = &c->found;
	st.borrow = true; /* c->text does not change during the scan */
	if (r == CUSTOS_OK)
		r = inspect_stream_feed_int(&st, c->s, buf_span(&c->text));
	if (r == CUSTOS_OK)
		r = inspect_stream_finish_int(&st, c->s);
	for (unsigned d = 0; d < INSPECT_MAX_DETECTORS; d++)
		c->sum->count[d] += st.sum.count[d];
	c->sum->total += st.sum.total;
	if (st.sum.worst > c->sum->worst)
		c->sum->worst = st.sum.worst;
	if (c->sum->deny_detector < 0)
		c->sum->deny_detector = st.sum.deny_detector;
	inspect_stream_fini(&st);
	GUARD(r);
	if (c->sum->deny_detector >= 0)
		return err_set(CUSTOS_ERR_DENIED, "inspection: %s found",
		               c->e->name[c->sum->deny_detector]);
	/* Findings come sorted by offset; a mask that overlaps the previous one merges into it.
	 * An escape is replaced whole when a mask covers any byte it produced. */
	size_t cursor = 0; /* text bytes before this are decided */
	for (size_t k = 0; k < c->found.n; k++) {
		const inspect_finding *f = &c->found.items[k];
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		size_t a = (size_t)f->offset, b = a + f->length;
		if (b <= cursor)
			continue;
		size_t re = raw_end(c, b);
		if (a >= cursor) {
			size_t rs = c->map[a] > c->copied ? c->map[a] : c->copied;
			GUARD(buf_append(c->out, c->p + c->copied, rs - c->copied));
			GUARD(buf_append(c->out, c->e->mask[f->detector],
			                 c->e->mask_len[f->detector]));
			c->sum->redacted = true;
		}
		if (re > c->copied)
			c->copied = re;
		cursor = b;
	}
	return CUSTOS_OK;
}

static custos_err parse_doc(jctx *c);

/* Merges a scan's counts into the walk's summary; DENIED when a deny detector fired. */
static custos_err sum_merge(jctx *c, const inspect_summary *s)
{
	for (unsigned d = 0; d < INSPECT_MAX_DETECTORS; d++)
		c->sum->count[d] += s->count[d];
	c->sum->total += s->total;
	if (s->worst > c->sum->worst)
		c->sum->worst = s->worst;
	if (c->sum->deny_detector < 0)
		c->sum->deny_detector = s->deny_detector;
	c->sum->redacted = c->sum->redacted || s->redacted;
	if (c->sum->deny_detector >= 0)
		return err_set(CUSTOS_ERR_DENIED, "inspection: %s found",
		               c->e->name[c->sum->deny_detector]);
	return CUSTOS_OK;
}

/* A string value whose text is itself a JSON object or array (tool-call arguments, a JSON
 * document pasted into a prompt) is walked as JSON: its escapes are decoded, its numbers
 * inspected, and, when something is masked, the string is rewritten as the escaped
 * redacted document (so both levels stay valid). *done is false when the text is not JSON. */
static custos_err inspect_embedded(jctx *c, size_t str_at, bool *done)
{
	span t = buf_span(&c->text);
	size_t k = 0;

	*done = false;
	while (k < t.len &&
	       (t.ptr[k] == ' ' || t.ptr[k] == '\t' || t.ptr[k] == '\n' || t.ptr[k] == '\r'))
		k++;
	if (k == t.len || (t.ptr[k] != '{' && t.ptr[k] != '['))
		return CUSTOS_OK;
	jctx v = { .p = (const uint8_t *)t.ptr, .n = t.len, .depth = c->depth };
	if (parse_doc(&v) != CUSTOS_OK)
		return CUSTOS_OK; /* not JSON: inspected as text */
	*done = true;
	inspect_summary sum;
	inspect_summary_init(&sum);
	buf inner;
	buf_init(&inner, INSPECT_JSON_MAX_BODY);
	jctx n = { .p = (const uint8_t *)t.ptr,
		   .n = t.len,
		   .depth = c->depth,
		   .embedded = true,
		   .e = c->e,
		   .s = c->s,
		   .prof = c->prof,
		   .sum = &sum,
		   .out = &inner };
	buf_init(&n.text, INSPECT_JSON_MAX_BODY);
	custos_err r = parse_doc(&n);
	if (r == CUSTOS_OK)
		r = buf_append(&inner, n.p + n.copied, n.n - n.copied);
	if (r == CUSTOS_OK || r == CUSTOS_ERR_DENIED) {
		custos_err m = sum_merge(c, &sum);
		if (r == CUSTOS_OK)
			r = m;
	}
	if (r == CUSTOS_OK && sum.redacted) {
		r = buf_append(c->out, c->p + c->copied, str_at + 1 - c->copied);
		if (r == CUSTOS_OK)
			r = json_escape(c->out, buf_span(&inner));
		c->copied = c->i - 1; /* the closing quote */
	}
	buf_free(&n.text);
	free(n.map);
	inspect_findings_free(&n.found);
	buf_free(&inner);
	return r;
}

/* A number inside an embedded document (raw bytes [at, c->i)): inspected as text; when a
 * REDACT finding touches it, the whole number becomes the mask as a string. */
static custos_err inspect_number(jctx *c, size_t at)
{
	inspect_stream st;
	c->found.n = 0;
	custos_err r = inspect_stream_init(&st, c->e, c->prof);
	st.collect = &c->found;
	st.borrow = true;
	if (r == CUSTOS_OK)
		r = inspect_stream_feed_int(&st, c->s, span_of((const char *)c->p + at, c->i - at));
	if (r == CUSTOS_OK)
		r = inspect_stream_finish_int(&st, c->s);
	inspect_summary sum = st.sum;
	inspect_stream_fini(&st);
	GUARD(r);
	GUARD(sum_merge(c, &sum));
	for (size_t k = 0; k < c->found.n; k++) {
		const inspect_finding *f = &c->found.items[k];
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		GUARD(buf_append(c->out, c->p + c->copied, at - c->copied));
		GUARD(buf_append(c->out, "\"", 1));
		GUARD(buf_append(c->out, c->e->mask[f->detector], c->e->mask_len[f->detector]));
		GUARD(buf_append(c->out, "\"", 1));
		c->copied = c->i;
		c->sum->redacted = true;
		break;
	}
	return CUSTOS_OK;
}

static custos_err parse_value(jctx *c)
{
	skip_ws(c);
	if (c->i >= c->n)
		return jerr(c, "unexpected end");
	uint8_t b = c->p[c->i];
	if (b == '{' || b == '[') {
		ENSURE(c->depth < INSPECT_JSON_MAX_DEPTH, CUSTOS_ERR_LIMIT,
		       "JSON body: nested deeper than %d", INSPECT_JSON_MAX_DEPTH);
		c->depth++;
		uint8_t close = b == '{' ? '}' : ']';
		c->i++;
		skip_ws(c);
		if (c->i < c->n && c->p[c->i] == close) {
			c->i++;
			c->depth--;
			return CUSTOS_OK;
		}
		for (;;) {
			if (b == '{') {
				skip_ws(c);
				if (c->i >= c->n || c->p[c->i] != '"')
					return jerr(c, "expected a key");
				GUARD(parse_string(c, false));
				skip_ws(c);
				if (c->i >= c->n || c->p[c->i] != ':')
					return jerr(c, "expected ':'");
				c->i++;
			}
			GUARD(parse_value(c));
			skip_ws(c);
			if (c->i >= c->n)
				return jerr(c, "unexpected end");
			if (c->p[c->i] == ',') {
				c->i++;
				continue;
			}
			if (c->p[c->i] == close) {
				c->i++;
				c->depth--;
				return CUSTOS_OK;
			}
			return jerr(c, "expected ',' or a closing bracket");
		}
	}
	if (b == '"') {
		size_t at = c->i;
		bool done = false;
		GUARD(parse_string(c, true));
		if (c->e != NULL && c->depth < INSPECT_JSON_MAX_DEPTH)
			GUARD(inspect_embedded(c, at, &done));
		if (c->e != NULL && !done)
			GUARD(inspect_value(c));
		return CUSTOS_OK;
	}
	if (b == 't')
		return parse_lit(c, "true");
	if (b == 'f')
		return parse_lit(c, "false");
	if (b == 'n')
		return parse_lit(c, "null");
	size_t at = c->i;
	GUARD(parse_number(c));
	if (c->e != NULL && c->embedded)
		GUARD(inspect_number(c, at));
	return CUSTOS_OK;
}

static custos_err parse_doc(jctx *c)
{
	GUARD(parse_value(c));
	skip_ws(c);
	if (c->i != c->n)
		return jerr(c, "trailing data");
	return CUSTOS_OK;
}

bool inspect_json_valid(span body)
{
	if (body.len > INSPECT_JSON_MAX_BODY)
		return false;
	jctx c = { .p = (const uint8_t *)body.ptr, .n = body.len };
	return parse_doc(&c) == CUSTOS_OK;
}

custos_err inspect_json_redact(const inspect_engine *e, inspect_scratch *s,
                               const inspect_profile *p, span body, buf *out, inspect_summary *sum)
{
	inspect_summary local;
	if (sum == NULL)
		sum = &local;
	inspect_summary_init(sum);
	ENSURE(body.len <= INSPECT_JSON_MAX_BODY, CUSTOS_ERR_LIMIT, "JSON body over %u bytes",
	       INSPECT_JSON_MAX_BODY);
	jctx c = { .p = (const uint8_t *)body.ptr,
		   .n = body.len,
		   .e = e,
		   .s = s,
		   .prof = p,
		   .sum = sum,
		   .out = out };
	buf_init(&c.text, INSPECT_JSON_MAX_BODY);
	custos_err r = parse_doc(&c);
	if (r == CUSTOS_OK)
		r = buf_append(out, c.p + c.copied, c.n - c.copied);
	buf_free(&c.text);
	free(c.map);
	inspect_findings_free(&c.found);
	return r;
}
