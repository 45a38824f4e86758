/*
 * JSON-aware inspection of request bodies: a strict, depth-bounded RFC 8259 walker that
 * unescapes each string value (the body's keys are structure, not content; those of tool-call
 * arguments and other JSON inside a string are content), inspects it as its own text,
 * and rewrites only the escaped bytes a REDACT finding covers. The text values a model reads
 * one after the other (the `content`, `text`, `input`... members: message contents, content
 * parts; the string values of tool-call `arguments`, JSON inside a string) are also inspected
 * joined, in order, so that a value split over two of them is found; each piece is masked in
 * its own string. Kept here, not in proxy/json.c, because policy sits
 * below proxy in the dependency order (docs/INSPECTION.md).
 */
#include <stdlib.h>
#include <string.h>

#include "inspect_int.h"
#include "inspect_stream_int.h"

/* A rewrite of raw bytes [from, to): a mask, or (det < 0) rep bytes [rep_at, + rep_len). */
typedef struct jedit {
	size_t from, to;
	size_t rep_at, rep_len;
	int det;
} jedit;

/* A text value in the joined text: its string's opening quote, where its text starts; for a
 * string value of a JSON document inside that string (tool-call arguments), `inner` is that
 * value's opening quote in the string's text (SIZE_MAX: the string itself is the value). */
typedef struct jpart {
	size_t raw, at, inner;
} jpart;

typedef struct jctx jctx;
struct jctx {
	const uint8_t *p;
	size_t n, i;
	int depth;
	/* inspection (all NULL for a validity check) */
	const inspect_engine *e;
	inspect_scratch *s;
	const inspect_profile *prof;
	inspect_summary *sum;
	bool embedded; /* a JSON document inside a string: numbers and keys are content too */
	bool raw_keys; /* the caller inspects this document's own keys and numbers as sent */
	buf text;      /* the unescaped value */
	uint32_t *map; /* map[k]: raw offset of the escape that produced text byte k */
	size_t map_cap;
	inspect_findings found;
	jedit *ed; /* rewrites, written out at the end in raw order */
	size_t n_ed, cap_ed;
	buf rep;     /* replacement bytes of rewritten strings and numbers */
	buf joined;  /* the text values a model reads in order, joined */
	jpart *part; /* where each of them is */
	size_t n_part, cap_part;
	/* A document inside a string of `host` (at host_str) whose text values join the host's:
	 * its string values go to the host's joined text, not its own. */
	jctx *host;
	size_t host_str;
};

/* Member names whose string values (directly, or in arrays under them) a model reads as text,
 * in order: chat messages and content parts, the responses API's input and instructions,
 * completions' prompt, Anthropic's system, tool outputs. */
static const char *const join_keys[] = { "content",      "text",   "input", "prompt",
	                                 "instructions", "system", "output" };
/* Member names under which every string value, at any depth, is such a text: tool-call
 * arguments (a JSON text the model wrote, or an object where an API sends one). */
static const char *const join_all_keys[] = { "arguments" };
/* Member names under which every string value is such a text when the value is an object:
 * the input of an Anthropic-style tool_use block (an object, where OpenAI sends arguments). A
 * string or an array under them (the responses API's input) is read as under join_keys. */
static const char *const join_obj_keys[] = { "input" };

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

#define JSON_ESC_ONE 256 /* a switch's case for any one-character escape: no byte's value */

/* The byte a one-character JSON escape (\" \\ \/ \b \f \n \r \t) stands for, -1 for any
 * other character after the backslash (\u or an invalid escape). */
static int json_escape_char(uint8_t e)
{
	switch (e) {
	case '"':
	case '\\':
	case '/':
		return e;
	case 'b':
		return '\b';
	case 'f':
		return '\f';
	case 'n':
		return '\n';
	case 'r':
		return '\r';
	case 't':
		return '\t';
	default:
		return -1;
	}
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
		int one = json_escape_char(esc);
		switch (one >= 0 ? JSON_ESC_ONE : esc) {
		case JSON_ESC_ONE:
			o[0] = (uint8_t)one;
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

/* A rewrite of raw bytes [from, to): the mask of det, or, det < 0, bytes rep[rep_at..]. */
static custos_err edit_add(jctx *c, size_t from, size_t to, int det, size_t rep_at)
{
	if (c->n_ed == c->cap_ed) {
		size_t nc = c->cap_ed ? c->cap_ed * 2 : 16;
		ENSURE(nc <= INSPECT_JSON_MAX_FINDINGS, CUSTOS_ERR_LIMIT,
		       "JSON body: more than %d values to mask", INSPECT_JSON_MAX_FINDINGS);
		jedit *q = realloc(c->ed, nc * sizeof(*q));
		ENSURE(q != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		c->ed = q;
		c->cap_ed = nc;
	}
	c->ed[c->n_ed++] = (jedit){ .from = from,
		                    .to = to,
		                    .det = det,
		                    .rep_at = rep_at,
		                    .rep_len = det < 0 ? buf_used(&c->rep) - rep_at : 0 };
	return CUSTOS_OK;
}

/* Scans text as one block and collects its findings (original offsets) in c->found; the
 * scan's own summary goes to *sum when sum is not NULL. */
static custos_err scan_text(jctx *c, span text, bool joined, inspect_summary *sum)
{
	inspect_stream st;
	c->found.n = 0;
	custos_err r = inspect_stream_init(&st, c->e, c->prof);
	st.collect = &c->found;
	st.borrow = true; /* the text does not change during the scan */
	st.drop_open_any = joined;
	if (r == CUSTOS_OK)
		r = inspect_stream_feed_int(&st, c->s, text);
	if (r == CUSTOS_OK)
		r = inspect_stream_finish_int(&st, c->s);
	if (sum != NULL)
		*sum = st.sum;
	inspect_stream_fini(&st);
	return r;
}

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

/* Inspects the string value just parsed on its own (one that is not joined). An escape is
 * replaced whole when a mask covers any byte it produced. */
static custos_err inspect_value(jctx *c)
{
	if (buf_used(&c->text) == 0)
		return CUSTOS_OK;
	inspect_summary sum;
	GUARD(scan_text(c, buf_span(&c->text), false, &sum));
	GUARD(sum_merge(c, &sum));
	for (size_t k = 0; k < c->found.n; k++) {
		const inspect_finding *f = &c->found.items[k];
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		size_t a = (size_t)f->offset, b = a + f->length;
		GUARD(edit_add(c, c->map[a], raw_end(c, b), f->detector, 0));
	}
	return CUSTOS_OK;
}

/* A text value the model reads in order with the others: its text goes to the joined text
 * (the host's, for a value of a document inside a host's string). */
static custos_err join_add(jctx *c, size_t str_at)
{
	jctx *h = c->host != NULL ? c->host : c;
	if (buf_used(&c->text) == 0)
		return CUSTOS_OK; /* nothing to join: "" between two parts changes nothing */
	if (h->n_part == h->cap_part) {
		size_t nc = h->cap_part ? h->cap_part * 2 : 16;
		jpart *q = realloc(h->part, nc * sizeof(*q));
		ENSURE(q != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		h->part = q;
		h->cap_part = nc;
	}
	h->part[h->n_part++] = (jpart){ .raw = c->host != NULL ? c->host_str : str_at,
		                        .at = buf_used(&h->joined),
		                        .inner = c->host != NULL ? str_at : SIZE_MAX };
	return buf_append_span(&h->joined, buf_span(&c->text));
}

/* Whether a member name (raw bytes of the key, escapes and all) is one of keys[0..nk). */
static bool key_in(const jctx *c, size_t at, size_t end, const char *const *keys, size_t nk)
{
	char k[16];
	size_t n = 0;
	for (size_t i = at; i < end; n++) {
		if (n == sizeof(k))
			return false;
		unsigned u;
		if (c->p[i] != '\\') {
			k[n] = (char)c->p[i++];
		} else if (c->p[i + 1] == 'u' && read_u4((jctx *)c, i + 2, &u) && u < 0x80) {
			k[n] = (char)u; /* "\u0074ext" is "text" to the server that reads it */
			i += 6;
		} else {
			return false; /* no join key has any other escape */
		}
	}
	for (size_t j = 0; j < nk; j++)
		if (strlen(keys[j]) == n && memcmp(keys[j], k, n) == 0)
			return true;
	return false;
}

static custos_err parse_doc(jctx *c);
static custos_err json_walk(jctx *c);
static void json_ctx_free(jctx *c);

/* Hex value of the four digits at p[0..4), or -1. */
static long hex4(const uint8_t *p)
{
	long v = 0;
	for (size_t k = 0; k < 4; k++) {
		int h = num_hex_digit(p[k]);
		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

/* A string whose text starts like a JSON document but is none to this strict walker may still
 * be one to its reader: Python's json takes NaN and Infinity, a repairing parser a cut
 * document. There its escapes are decoded, so the text with every JSON escape decoded is
 * inspected too: a finding that takes a byte an escape produced (one the text as it is does
 * not show) counts and is masked, the escapes it covers replaced whole. */
static custos_err inspect_near_json(jctx *c)
{
	span t = buf_span(&c->text);
	const uint8_t *q = (const uint8_t *)t.ptr;
	if (memchr(q, '\\', t.len) == NULL)
		return CUSTOS_OK;
	buf d;
	buf_init(&d, t.len + 4);
	uint32_t *m = malloc((t.len + 1) * sizeof(*m)); /* m[k]: text offset of decoded byte k */
	uint8_t *esc = malloc(t.len + 1);               /* esc[k]: it came from an escape */
	custos_err r = m != NULL && esc != NULL ? CUSTOS_OK : CUSTOS_ERR_NOMEM;
	if (r != CUSTOS_OK)
		err_set(r, "inspect: out of memory");
	size_t nd = 0;
	for (size_t i = 0; i < t.len && r == CUSTOS_OK;) {
		uint8_t o[4] = { q[i] };
		size_t ol = 1, il = 1;
		if (q[i] == '\\' && i + 1 < t.len) {
			il = 2;
			int one = json_escape_char(q[i + 1]);
			switch (one >= 0 ? JSON_ESC_ONE : q[i + 1]) {
			case JSON_ESC_ONE:
				o[0] = (uint8_t)one;
				break;
			case 'u': {
				long u = i + 6 <= t.len ? hex4(q + i + 2) : -1, lo = -1;
				if (u < 0) {
					il = 1; /* not an escape: the backslash as it is */
					break;
				}
				il = 6;
				if (u >= 0xD800 && u <= 0xDBFF && i + 12 <= t.len &&
				    q[i + 6] == '\\' && q[i + 7] == 'u')
					lo = hex4(q + i + 8);
				if (lo >= 0xDC00 && lo <= 0xDFFF) {
					u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
					il = 12;
				} else if (u >= 0xD800 && u <= 0xDFFF) {
					u = 0xFFFD;
				}
				ol = utf8_encode((unsigned)u, o);
				break;
			}
			default:
				il = 1;
				break;
			}
		}
		for (size_t k = 0; k < ol; k++) {
			m[nd] = (uint32_t)i;
			esc[nd++] = il > 1;
		}
		r = buf_append(&d, o, ol);
		i += il;
	}
	if (r == CUSTOS_OK && nd < t.len) { /* some escape was decoded */
		m[nd] = (uint32_t)t.len;
		r = scan_text(c, buf_span(&d), false, NULL);
	} else {
		c->found.n = 0;
	}
	inspect_summary sum;
	inspect_summary_init(&sum);
	for (size_t k = 0; k < c->found.n && r == CUSTOS_OK; k++) {
		const inspect_finding *f = &c->found.items[k];
		size_t a = (size_t)f->offset, b = a + f->length;
		bool hidden = false;
		for (size_t x = a; x < b && !hidden; x++)
			hidden = esc[x];
		if (!hidden)
			continue; /* the text as it is shows it: inspected there */
		sum.count[f->detector]++;
		sum.total++;
		if (f->action > sum.worst)
			sum.worst = f->action;
		if (f->action == INSPECT_ACT_DENY && sum.deny_detector < 0)
			sum.deny_detector = f->detector;
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		size_t e = b;
		while (e < nd && m[e] == m[b - 1])
			e++;
		r = edit_add(c, c->map[m[a]], raw_end(c, m[e]), f->detector, 0);
	}
	free(m);
	free(esc);
	buf_free(&d);
	if (r == CUSTOS_OK)
		r = sum_merge(c, &sum);
	return r;
}

/* A string value whose text is itself a JSON object or array (tool-call arguments, a JSON
 * document pasted into a prompt) is walked as JSON: its escapes are decoded, its numbers
 * inspected. Its rewrites (masks, a masked number written as a string) are carried over to
 * the string's own bytes, escaped, so both levels stay valid and everything else stays byte
 * for byte. When the string is a text value (`joins`), the document's string values join
 * the text values of this one in its place. *done is false when the text is not JSON.
 * CUSTOS_ERR_LIMIT when it starts like one and nests deeper than INSPECT_JSON_MAX_DEPTH with
 * the string's own depth (the reader of the string would decode escapes this one could not).
 * A document may be a string alone (its own escapes decoded): one more level. */
static custos_err inspect_embedded(jctx *c, size_t str_at, bool joins, bool *done)
{
	span t = buf_span(&c->text);
	size_t k = 0;

	*done = false;
	while (k < t.len &&
	       (t.ptr[k] == ' ' || t.ptr[k] == '\t' || t.ptr[k] == '\n' || t.ptr[k] == '\r'))
		k++;
	if (k == t.len || (t.ptr[k] != '{' && t.ptr[k] != '[' && t.ptr[k] != '"'))
		return CUSTOS_OK;
	/* A JSON text may be a string alone (arguments "\"4111 ... 111\\u0031\""): its reader
	 * decodes its escapes too. A string in a string in a string... is one level deeper each
	 * time, so that the walk stays bounded. */
	int depth = c->depth + (t.ptr[k] == '"');
	custos_err pr = CUSTOS_ERR_LIMIT;
	jctx v = { .p = (const uint8_t *)t.ptr, .n = t.len, .depth = depth };
	if (depth <= INSPECT_JSON_MAX_DEPTH)
		pr = parse_doc(&v);
	if (pr == CUSTOS_ERR_LIMIT) /* as text its escapes would pass undecoded: fail closed */
		return err_set(pr,
		               "JSON body: a JSON document in a string nested deeper than %d with "
		               "the string's depth",
		               INSPECT_JSON_MAX_DEPTH);
	if (pr != CUSTOS_OK) /* not JSON: inspected as text, and with its escapes decoded */
		return inspect_near_json(c);
	*done = true;
	inspect_summary sum;
	inspect_summary_init(&sum);
	jctx n = { .p = (const uint8_t *)t.ptr,
		   .n = t.len,
		   .depth = depth,
		   .embedded = true,
		   .e = c->e,
		   .s = c->s,
		   .prof = c->prof,
		   .sum = &sum,
		   .host = joins ? c : NULL,
		   .host_str = str_at };
	custos_err r = json_walk(&n);
	if (r == CUSTOS_OK || r == CUSTOS_ERR_DENIED) {
		custos_err m = sum_merge(c, &sum);
		if (r == CUSTOS_OK)
			r = m;
	}
	/* c->map still maps the string's text (n has buffers of its own): a rewrite of text
	 * bytes [from, to) is one of the string's escapes that produced them */
	for (size_t e = 0; e < n.n_ed && r == CUSTOS_OK; e++) {
		const jedit *x = &n.ed[e];
		size_t from = c->map[x->from], to = raw_end(c, x->to);
		if (x->det >= 0) {
			r = edit_add(c, from, to, x->det, 0);
			continue;
		}
		size_t at = buf_used(&c->rep);
		r = json_escape(&c->rep,
		                span_of((const char *)buf_ptr(&n.rep) + x->rep_at, x->rep_len));
		if (r == CUSTOS_OK)
			r = edit_add(c, from, to, -1, at);
	}
	json_ctx_free(&n);
	return r;
}

/* A number inside an embedded document (raw bytes [at, c->i)): inspected as text; when a
 * REDACT finding touches it, the whole number becomes the mask as a string. */
static custos_err inspect_number(jctx *c, size_t at)
{
	inspect_summary sum;
	GUARD(scan_text(c, span_of((const char *)c->p + at, c->i - at), false, &sum));
	GUARD(sum_merge(c, &sum));
	for (size_t k = 0; k < c->found.n; k++) {
		const inspect_finding *f = &c->found.items[k];
		if (f->action != INSPECT_ACT_REDACT)
			continue;
		size_t r = buf_used(&c->rep);
		GUARD(buf_append(&c->rep, "\"", 1));
		GUARD(buf_append(&c->rep, c->e->mask[f->detector], c->e->mask_len[f->detector]));
		GUARD(buf_append(&c->rep, "\"", 1));
		return edit_add(c, at, c->i, -1, r);
	}
	return CUSTOS_OK;
}

/* A member name that is content, not structure (below), just parsed into c->text from its
 * opening quote at str_at: inspected on its own, as a string value that is not joined, so a
 * mask replaces the escapes it covers inside the name's quotes. It is not joined with the text
 * values: names between them would break a value split over two values of the arguments
 * ({"part1":"4111 1111","part2":" 1111 1111"}). */
static custos_err inspect_key(jctx *c, size_t str_at)
{
	bool done = false;
	GUARD(inspect_embedded(c, str_at, false, &done));
	return done ? CUSTOS_OK : inspect_value(c);
}

/* `join`: a string here is a text value read in order (it sits under one of join_keys);
 * `all`: so is every string value under it (it sits under one of join_all_keys).
 * Member names and numbers of the request body are structure (the API's), but those of a JSON
 * document inside a string (tool-call arguments, JSON pasted into a prompt) and of an object
 * under `all` (arguments or a tool_use input sent as an object) are what the model or the user
 * wrote, and are inspected: {"4111111111111111": 1} in arguments is a card. */
static custos_err parse_value(jctx *c, bool join, bool all)
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
			/* array elements are read as the array is */
			bool member_joins = join, member_all = all;
			if (b == '{') {
				skip_ws(c);
				if (c->i >= c->n || c->p[c->i] != '"')
					return jerr(c, "expected a key");
				size_t key_at = c->i + 1;
				bool key_content =
				        c->e != NULL && !c->raw_keys && (c->embedded || all);
				GUARD(parse_string(c, key_content));
				if (key_content)
					GUARD(inspect_key(c, key_at - 1));
				member_all = all || (c->e != NULL &&
				                     key_in(c, key_at, c->i - 1, join_all_keys,
				                            CUSTOS_ARRAY_LEN(join_all_keys)));
				member_joins = member_all || (c->e != NULL &&
				                              key_in(c, key_at, c->i - 1, join_keys,
				                                     CUSTOS_ARRAY_LEN(join_keys)));
				bool obj_all =
				        c->e != NULL && key_in(c, key_at, c->i - 1, join_obj_keys,
				                               CUSTOS_ARRAY_LEN(join_obj_keys));
				skip_ws(c);
				if (c->i >= c->n || c->p[c->i] != ':')
					return jerr(c, "expected ':'");
				c->i++;
				skip_ws(c);
				if (obj_all && c->i < c->n && c->p[c->i] == '{')
					member_all = member_joins = true;
			}
			GUARD(parse_value(c, member_joins, member_all));
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
		/* in a document whose text values join its host's, every string value does */
		bool joins = join || c->host != NULL;
		if (c->e != NULL)
			GUARD(inspect_embedded(c, at, joins, &done));
		if (c->e != NULL && !done)
			GUARD(joins ? join_add(c, at) : inspect_value(c));
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
	if (c->e != NULL && !c->raw_keys && (c->embedded || all))
		GUARD(inspect_number(c, at));
	return CUSTOS_OK;
}

static custos_err parse_doc(jctx *c)
{
	GUARD(parse_value(c, false, false));
	skip_ws(c);
	if (c->i != c->n)
		return jerr(c, "trailing data");
	return CUSTOS_OK;
}

static custos_err findings_add(inspect_findings *all, const inspect_finding *f, uint64_t shift)
{
	if (all->n == all->cap) {
		size_t nc = all->cap ? all->cap * 2 : 16;
		ENSURE(nc <= INSPECT_JSON_MAX_FINDINGS, CUSTOS_ERR_LIMIT,
		       "JSON body: more than %d findings", INSPECT_JSON_MAX_FINDINGS);
		inspect_finding *q = realloc(all->items, nc * sizeof(*q));
		ENSURE(q != NULL, CUSTOS_ERR_NOMEM, "inspect: out of memory");
		all->items = q;
		all->cap = nc;
	}
	all->items[all->n] = *f;
	all->items[all->n++].offset += shift;
	return CUSTOS_OK;
}

/* Masks [a, b) of the joined text: one mask per text value it touches, each over the escapes
 * of its own piece. *mapped is the part whose map c->text / c->map hold (re-read on demand),
 * with, for a value inside a document in that string, the value's own text and map in sub. */
static custos_err join_mask(jctx *c, size_t a, size_t b, unsigned det, size_t *mapped, jctx *sub)
{
	size_t k = 0, hi = c->n_part; /* the part holding a: the last one starting at or before */
	while (k + 1 < hi) {
		size_t mid = (k + hi) / 2;
		if (c->part[mid].at <= a)
			k = mid;
		else
			hi = mid;
	}
	for (; k < c->n_part && c->part[k].at < b; k++) {
		size_t from = c->part[k].at,
		       to = k + 1 < c->n_part ? c->part[k + 1].at : buf_used(&c->joined);
		size_t la = (a > from ? a : from) - from, lb = (b < to ? b : to) - from;
		if (la >= lb)
			continue;
		size_t inner = c->part[k].inner;
		if (*mapped != k) {
			c->i = c->part[k].raw;
			GUARD(parse_string(c, true)); /* its text and map again */
			if (inner != SIZE_MAX) {
				sub->p = buf_ptr(&c->text);
				sub->n = buf_used(&c->text);
				sub->i = inner;
				GUARD(parse_string(sub, true));
			}
			ENSURE(buf_used(inner != SIZE_MAX ? &sub->text : &c->text) == to - from,
			       CUSTOS_ERR_INTERNAL, "inspect: a joined value reads differently");
			*mapped = k;
		}
		if (inner != SIZE_MAX) { /* through the value's escapes, then the string's */
			size_t ta = sub->map[la], tb = raw_end(sub, lb);
			GUARD(edit_add(c, c->map[ta], raw_end(c, tb), (int)det, 0));
			continue;
		}
		GUARD(edit_add(c, c->map[la], raw_end(c, lb), (int)det, 0));
	}
	return CUSTOS_OK;
}

/* Whether joined-text offset x is where a text value starts (a join), after the first. */
static bool is_join(const jctx *c, uint64_t x)
{
	size_t lo = 1, hi = c->n_part;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (c->part[mid].at < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->n_part && c->part[lo].at == x;
}

static bool is_letter(int b)
{
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z');
}

/* Whether t[0..n) reads as a top-level domain an address is likely cut inside: two letters (a
 * country code), or one of the common generic ones. Any case. */
static bool tld_plausible(const uint8_t *t, size_t n)
{
	static const char *const gtld[] = { "com",  "net", "org", "edu", "gov", "mil", "int",
		                            "info", "biz", "io",  "ai",  "dev", "app", "co" };
	for (size_t i = 0; i < n; i++)
		if (!is_letter(t[i]))
			return false;
	if (n == 2)
		return true;
	for (size_t g = 0; g < CUSTOS_ARRAY_LEN(gtld); g++) {
		size_t l = strlen(gtld[g]), i = 0;
		while (i < n && l == n && (t[i] | 0x20) == gtld[g][i])
			i++;
		if (l == n && i == n)
			return true;
	}
	return false;
}

/* Whether joined finding f, which goes on past pend (a join: the end of an address found in
 * the text before it, followed by a letter), continues that address's last label into a
 * plausible top-level domain ("example.co" + "m", "example.in" + "fo.uk"): the address was cut
 * inside its domain, not run on into a word ("example.com" + "Thanks"). */
static bool tld_cut(const uint8_t *j, const inspect_finding *f, uint64_t pend)
{
	uint64_t a = pend, b = pend, fend = f->offset + f->length;
	while (a > f->offset && j[a - 1] != '.' && j[a - 1] != '@')
		a--;
	while (b < fend && j[b] != '.')
		b++;
	return a > f->offset && j[a - 1] == '.' && tld_plausible(j + a, (size_t)(b - a));
}

static bool is_word_byte(int b)
{
	return is_letter(b) || (b >= '0' && b <= '9') || b >= 0x80;
}

/* Whether joined finding f, which goes on past pend (a join: the end of an address found in
 * the text before it, followed by a letter), reads as that address cut inside a label of its
 * domain rather than run on into a word. Every label from the one pend falls in to the end of
 * f must be a hostname label (1..63 letters, digits or '-', not starting or ending with '-')
 * written in one case ("comThanks", "ioOk" are words glued to a domain), and either f goes on
 * with a further label in the next text ("mail.ex" + "ample.info"), or the address before pend
 * does not end in a plausible top-level domain ("example.mus", not "example.com" + "ok") and
 * nothing but punctuation and spaces follows f in the next text ("eum", "eum."): a word after
 * which the text goes on ("thanks for that") is prose. */
static bool label_cut(const jctx *c, const inspect_finding *f, uint64_t pend)
{
	const uint8_t *j = buf_ptr(&c->joined);
	uint64_t fend = f->offset + f->length, s = pend;
	bool more = false;
	while (s > f->offset && j[s - 1] != '.' && j[s - 1] != '@')
		s--;
	uint64_t cut = s; /* the label pend falls in */
	for (uint64_t x = s; x <= fend; x++) {
		if (x < fend && j[x] != '.')
			continue;
		bool lo = false, up = false;
		if (x == s || x - s > 63 || j[s] == '-' || j[x - 1] == '-')
			return false;
		for (uint64_t k = s; k < x; k++) {
			if (j[k] >= 'a' && j[k] <= 'z')
				lo = true;
			else if (j[k] >= 'A' && j[k] <= 'Z')
				up = true;
			else if (!(j[k] >= '0' && j[k] <= '9') && j[k] != '-')
				return false;
		}
		if (lo && up)
			return false;
		more = more || (x < fend && x >= pend);
		s = x + 1;
	}
	if (more)
		return true;
	/* an address that ends in a plausible top-level domain was complete ("example.com" +
	 * "ok"): only one that does not ("example.mus") is taken as cut */
	if (tld_plausible(j + cut, (size_t)(pend - cut)))
		return false;
	/* the end of the text after pend: where the next text starts, or the joined end */
	size_t lo = 1, hi = c->n_part;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (c->part[mid].at <= pend)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t end = lo < c->n_part ? c->part[lo].at : buf_used(&c->joined);
	for (uint64_t x = fend; x < end; x++)
		if (is_word_byte(j[x]))
			return false;
	return true;
}

/* A finding of the joined text that is an e-mail address found whole at the end of one text,
 * run on into a word of the next: "bob@example.com" then "Thanks" reads
 * "bob@example.comThanks" (a domain runs over letters). The address alone is kept, not its
 * run-on: the next message's first word is not masked. But for an address cut inside its
 * top-level domain ("bob@example.co" + "m": tld_cut) or inside another label ("mail.ex" +
 * "ample.info", "example.mus" + "eum": label_cut), which is the joined one. Only for e-mail: a token, a JWT or a
 * key block whose first piece is valid alone may go on in the next text, and is masked there.
 * (A word glued before an address is masked with it: the address's start, a name, could be
 * what the first text holds.) Nor is a finding that starts with a value found whole in one
 * text, glued to a value found whole at the start of the next. pv[0..n) are the findings of
 * the texts alone, sorted. */
static bool run_on(const jctx *c, const inspect_finding *pv, size_t n, const inspect_finding *f)
{
	const uint8_t *j = buf_ptr(&c->joined);
	uint64_t fend = f->offset + f->length;
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (pv[mid].offset < f->offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* Two values, each whole in its own text, glued where the texts join (a card, then an
	 * address in the next value of tool-call arguments: "4242...4242a@b.example.com"): two
	 * values, each found and masked alone (the second with its own run-on rule), not one. */
	for (size_t g = lo; g < n && pv[g].offset == f->offset; g++) {
		uint64_t x = pv[g].offset + pv[g].length;
		if (x >= fend || !is_join(c, x))
			continue;
		for (size_t h = g + 1; h < n && pv[h].offset <= x; h++)
			if (pv[h].offset == x)
				return true;
	}
	if (f->detector != INSPECT_EMAIL)
		return false;
	for (size_t k = lo; k < n && pv[k].offset < fend; k++) {
		uint64_t pend = pv[k].offset + pv[k].length;
		if (pv[k].detector != f->detector)
			continue;
		if (pv[k].offset == f->offset && pend < fend && is_join(c, pend) &&
		    is_letter(j[pend]) && !tld_cut(j, f, pend) && !label_cut(c, f, pend))
			return true;
	}
	return false;
}

/* The text values of the document, each alone and all joined in order: a value split over
 * two of them is found in the joined text, one that ends where its string ends is found alone
 * (the text after it, in the next string, could hide it). Findings of both are resolved
 * together as in one text (inside a stronger one: dropped), counted, and masked piece by
 * piece. */
static custos_err join_pass(jctx *c)
{
	if (c->n_part == 0)
		return CUSTOS_OK;
	inspect_findings all = { 0 }, kept = { 0 };
	span jt = buf_span(&c->joined);
	custos_err r = CUSTOS_OK;
	for (size_t k = 0; k < c->n_part && r == CUSTOS_OK; k++) {
		size_t from = c->part[k].at, to = k + 1 < c->n_part ? c->part[k + 1].at : jt.len;
		r = scan_text(c, span_of(jt.ptr + from, to - from), false, NULL);
		for (size_t f = 0; f < c->found.n && r == CUSTOS_OK; f++)
			r = findings_add(&all, &c->found.items[f], from);
	}
	if (r == CUSTOS_OK && c->n_part > 1) {
		size_t n_pv = all.n;
		if (n_pv > 1)
			qsort(all.items, n_pv, sizeof(*all.items), inspect_finding_cmp);
		r = scan_text(c, jt, true, NULL);
		for (size_t f = 0; f < c->found.n && r == CUSTOS_OK; f++)
			if (!run_on(c, all.items, n_pv, &c->found.items[f]))
				r = findings_add(&all, &c->found.items[f], 0);
	}
	if (r == CUSTOS_OK && all.n > 1)
		qsort(all.items, all.n, sizeof(*all.items), inspect_finding_cmp);
	size_t mapped = SIZE_MAX;
	jctx sub = { .e = c->e };
	buf_init(&sub.text, INSPECT_JSON_MAX_BODY);
	for (size_t i = 0; i < all.n && r == CUSTOS_OK; i++) {
		const inspect_finding *f = &all.items[i];
		uint64_t fend = f->offset + f->length;
		size_t j = 0;
		bool inside = false;
		for (size_t q = 0; q < kept.n; q++) { /* those that end before f cannot hold it */
			const inspect_finding *h = &kept.items[q];
			if (h->offset + h->length <= f->offset)
				continue;
			kept.items[j++] = *h;
			inside = inside ||
			         (h->offset <= f->offset && h->offset + h->length >= fend &&
			          h->confidence >= f->confidence && h->action >= f->action);
		}
		kept.n = j;
		if (inside)
			continue;
		r = findings_add(&kept, f, 0);
		if (r != CUSTOS_OK)
			break;
		c->sum->count[f->detector]++;
		c->sum->total++;
		if (f->action > c->sum->worst)
			c->sum->worst = f->action;
		if (f->action == INSPECT_ACT_DENY && c->sum->deny_detector < 0)
			c->sum->deny_detector = f->detector;
		if (f->action == INSPECT_ACT_REDACT)
			r = join_mask(c, (size_t)f->offset, (size_t)fend, f->detector, &mapped,
			              &sub);
	}
	buf_free(&sub.text);
	free(sub.map);
	inspect_findings_free(&all);
	inspect_findings_free(&kept);
	GUARD(r);
	if (c->sum->deny_detector >= 0)
		return err_set(CUSTOS_ERR_DENIED, "inspection: %s found",
		               c->e->name[c->sum->deny_detector]);
	return CUSTOS_OK;
}

static int jedit_cmp(const void *a, const void *b)
{
	const jedit *x = a, *y = b;
	if (x->from != y->from)
		return x->from < y->from ? -1 : 1;
	if (x->to != y->to)
		return x->to > y->to ? -1 : 1;
	return x->det - y->det;
}

/* Walks the document and inspects it (alone and joined): its rewrites, sorted, in c->ed. */
static custos_err json_walk(jctx *c)
{
	buf_init(&c->text, INSPECT_JSON_MAX_BODY);
	buf_init(&c->rep, 2 * INSPECT_JSON_MAX_BODY);
	buf_init(&c->joined, INSPECT_JSON_MAX_BODY);
	custos_err r = parse_doc(c);
	if (r == CUSTOS_OK)
		r = join_pass(c);
	if (r == CUSTOS_OK && c->n_ed > 1)
		qsort(c->ed, c->n_ed, sizeof(*c->ed), jedit_cmp);
	return r;
}

static void json_ctx_free(jctx *c)
{
	buf_free(&c->text);
	buf_free(&c->rep);
	buf_free(&c->joined);
	free(c->map);
	free(c->ed);
	free(c->part);
	inspect_findings_free(&c->found);
}

/* Walks the document, inspects it (alone and joined), and writes it with its rewrites to out:
 * a rewrite that overlaps the one before merges into it (one mask, typed by the first). */
static custos_err json_redact_doc(jctx *c, buf *out)
{
	custos_err r = json_walk(c);
	size_t cursor = 0;
	for (size_t k = 0; k < c->n_ed && r == CUSTOS_OK; k++) {
		const jedit *x = &c->ed[k];
		if (x->from < cursor) {
			if (x->to > cursor)
				cursor = x->to;
			continue;
		}
		r = buf_append(out, c->p + cursor, x->from - cursor);
		if (r == CUSTOS_OK && x->det >= 0)
			r = buf_append(out, c->e->mask[x->det], c->e->mask_len[x->det]);
		else if (r == CUSTOS_OK)
			r = buf_append(out, buf_ptr(&c->rep) + x->rep_at, x->rep_len);
		cursor = x->to;
		c->sum->redacted = true;
	}
	if (r == CUSTOS_OK)
		r = buf_append(out, c->p + cursor, c->n - cursor);
	json_ctx_free(c);
	return r;
}

bool inspect_json_valid(span body)
{
	if (body.len > INSPECT_JSON_MAX_BODY)
		return false;
	jctx c = { .p = (const uint8_t *)body.ptr, .n = body.len };
	return parse_doc(&c) == CUSTOS_OK;
}

static custos_err json_redact(const inspect_engine *e, inspect_scratch *s, const inspect_profile *p,
                              span body, buf *out, inspect_summary *sum, bool raw_keys)
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
		   .raw_keys = raw_keys };
	return json_redact_doc(&c, out);
}

custos_err inspect_json_redact(const inspect_engine *e, inspect_scratch *s,
                               const inspect_profile *p, span body, buf *out, inspect_summary *sum)
{
	return json_redact(e, s, p, body, out, sum, false);
}

custos_err inspect_json_redact_strings(const inspect_engine *e, inspect_scratch *s,
                                       const inspect_profile *p, span body, buf *out,
                                       inspect_summary *sum)
{
	return json_redact(e, s, p, body, out, sum, true);
}
