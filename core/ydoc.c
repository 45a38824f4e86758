/*
 * YAML to a position-carrying tree, with libyaml's event parser. Anchors, aliases, merge keys,
 * tags and multiple documents are refused: a security config must mean what it plainly says,
 * and aliases are the classic expansion bomb. Sizes and depth are bounded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "custos/core.h"

/* JSON writes a character above U+FFFF as a surrogate pair (\uD83D\uDE00), and YAML, a superset
 * of JSON, should take it; libyaml refuses each half ("found invalid Unicode character escape
 * code"). ydoc_parse then rewrites the pair libyaml stopped at as the one YAML escape for the
 * same character (\U0001F600), with every other pair of that double-quoted scalar, and parses
 * again: at most YDOC_MAX_PAIR_SCALARS scalars so. A lone half stays an error. Each rewrite is
 * two characters shorter; positions after it on its line are moved back (pos_fix). */
#define YDOC_MAX_SHIFTS 4096
struct shift {
	unsigned line, col; /* in the rewritten text: the character after a rewritten escape */
};

struct builder {
	ydoc *doc;
	diag_list *d;
	yaml_parser_t parser;
	const char *text; /* the input, for positions libyaml gives as byte offsets */
	size_t len;
	const struct shift *shifts; /* rewritten surrogate pairs, in text order */
	size_t nshifts;
	size_t pair_at; /* set with pair_hit: byte offset of a \u of a surrogate pair */
	bool pair_hit;
};

/* A position in the rewritten text to one in the file: two characters back for each
 * surrogate pair rewritten before it on its line. */
static void pos_fix(const struct builder *b, unsigned *line, unsigned *col)
{
	unsigned add = 0;
	for (size_t i = 0; i < b->nshifts; i++)
		if (b->shifts[i].line == *line && b->shifts[i].col <= *col)
			add += 2;
	*col += add;
}

/* Line and column (1-based, columns in characters as libyaml counts them) of byte off. */
static void text_pos(const char *text, size_t len, size_t off, unsigned *line, unsigned *col)
{
	unsigned l = 1, c = 1;
	if (off > len)
		off = len;
	for (size_t i = 0; i < off; i++) {
		unsigned char ch = (unsigned char)text[i];
		if (ch == '\n' || (ch == '\r' && (i + 1 >= len || text[i + 1] != '\n'))) {
			l++;
			c = 1;
		} else if ((ch & 0xc0) != 0x80 && ch != '\r') {
			c++;
		}
	}
	*line = l;
	*col = c;
}

static void node_free(ydoc_node *n)
{
	if (n == NULL)
		return;
	free(n->str);
	for (size_t i = 0; i < n->n; i++) {
		if (n->kind == YDOC_SEQ) {
			node_free(n->items[i]);
		} else if (n->kind == YDOC_MAP) {
			node_free(n->pairs[i].key);
			node_free(n->pairs[i].value);
		}
	}
	free(n->items);
	free(n->pairs);
	free(n);
}

void ydoc_free(ydoc *doc)
{
	node_free(doc->root);
	free(doc->file);
	memset(doc, 0, sizeof(*doc));
}

static void perr(struct builder *b, const yaml_mark_t *m, const char *hint, const char *fmt, ...)
        CUSTOS_PRINTF(4, 5);
static void perr(struct builder *b, const yaml_mark_t *m, const char *hint, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	unsigned line = (unsigned)m->line + 1, col = (unsigned)m->column + 1;
	pos_fix(b, &line, &col);
	diag_add(b->d, DIAG_ERROR, b->doc->file, line, col, hint, "%s", msg);
}

static ydoc_node *new_node(struct builder *b, ydoc_kind kind, const yaml_mark_t *m)
{
	if (b->doc->nodes >= YDOC_MAX_NODES) {
		perr(b, m, NULL, "%s", "document has too many nodes");
		return NULL;
	}
	ydoc_node *n = xcalloc(1, sizeof(*n));
	n->kind = kind;
	n->line = (unsigned)m->line + 1;
	n->col = (unsigned)m->column + 1;
	pos_fix(b, &n->line, &n->col);
	b->doc->nodes++;
	return n;
}

/* The \u escape value at p (6 bytes: backslash, u, 4 hex digits), or -1. */
static long u_escape(const char *p, const char *end)
{
	if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
		return -1;
	return num_hex4((const unsigned char *)p + 2);
}

/* Whether text[off] starts a high surrogate escape followed by a low one. */
static bool pair_at(const char *text, size_t len, size_t off)
{
	long hi = off < len ? u_escape(text + off, text + len) : -1;
	long lo = hi >= 0 ? u_escape(text + off + 6, text + len) : -1;
	return hi >= 0xD800 && hi <= 0xDBFF && lo >= 0xDC00 && lo <= 0xDFFF;
}

/* libyaml stopped at the hex digits of a \u escape of a surrogate (its mark counts characters,
 * a byte order mark not included): when that escape starts a high-low pair, its byte offset. */
static bool surrogate_pair_stop(const struct builder *b, size_t *off)
{
	const char *problem = b->parser.problem;
	size_t want = b->parser.problem_mark.index, chars = 0, i = 0;

	if (b->parser.error != YAML_SCANNER_ERROR || problem == NULL ||
	    strcmp(problem, "found invalid Unicode character escape code") != 0 || want < 2)
		return false;
	if (b->len >= 3 && memcmp(b->text, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	for (; i < b->len && chars < want - 2; i++)
		if (((unsigned char)b->text[i] & 0xc0) != 0x80)
			chars++;
	while (i < b->len && ((unsigned char)b->text[i] & 0xc0) == 0x80)
		i++;
	if (!pair_at(b->text, b->len, i))
		return false;
	*off = i;
	return true;
}

static bool next_event(struct builder *b, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&b->parser, ev)) {
		size_t at;
		if (surrogate_pair_stop(b, &at)) {
			b->pair_at = at;
			b->pair_hit = true; /* ydoc_parse rewrites it and parses again */
			return false;
		}
		const yaml_mark_t *m = &b->parser.problem_mark;
		unsigned line = (unsigned)m->line + 1, col = (unsigned)m->column + 1;
		char msg[512];
		snprintf(msg, sizeof(msg), "YAML syntax: %s%s%s",
		         b->parser.problem ? b->parser.problem : "error",
		         b->parser.context ? " " : "", b->parser.context ? b->parser.context : "");
		if (b->parser.error == YAML_READER_ERROR) {
			/* the reader (NUL and control bytes, invalid UTF-8) gives a byte offset and
			 * leaves the mark at 1:1 */
			size_t off = b->parser.problem_offset;
			int value = b->parser.problem_value;
			if (b->parser.problem &&
			    strncmp(b->parser.problem, "invalid trailing", 16) == 0 && off > 0 &&
			    off <= b->len) {
				/* point at the character, not at the byte that broke it */
				do
					off--;
				while (off > 0 && ((unsigned char)b->text[off] & 0xc0) == 0x80);
				value = (unsigned char)b->text[off];
			}
			text_pos(b->text, b->len, off, &line, &col);
			if (value >= 0) {
				size_t ml = strlen(msg);
				snprintf(msg + ml, sizeof(msg) - ml, " (byte 0x%02X)",
				         (unsigned)value & 0xffu);
			}
		}
		pos_fix(b, &line, &col);
		diag_add(b->d, DIAG_ERROR, b->doc->file, line, col, NULL, "%s", msg);
		return false;
	}
	return true;
}

/* Refuses what we do not support on any node-starting event. */
static bool check_plain(struct builder *b, yaml_event_t *ev)
{
	const yaml_char_t *anchor = NULL, *tag = NULL;

	if (ev->type == YAML_SCALAR_EVENT) {
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.plain_implicit || ev->data.scalar.quoted_implicit
		              ? NULL
		              : ev->data.scalar.tag;
	} else if (ev->type == YAML_SEQUENCE_START_EVENT) {
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.implicit ? NULL : ev->data.sequence_start.tag;
	} else if (ev->type == YAML_MAPPING_START_EVENT) {
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.implicit ? NULL : ev->data.mapping_start.tag;
	}
	if (anchor) {
		perr(b, &ev->start_mark, "write the value out in full", "%s",
		     "YAML anchors are not supported");
		return false;
	}
	if (tag) {
		perr(b, &ev->start_mark, "remove the tag", "YAML tag '%s' is not supported",
		     (const char *)tag);
		return false;
	}
	return true;
}

static ydoc_node *build(struct builder *b, yaml_event_t *ev, int depth);

static ydoc_node *build_children(struct builder *b, ydoc_node *n, yaml_event_type_t end, int depth)
{
	size_t cap = 0;

	for (;;) {
		yaml_event_t ev;
		if (!next_event(b, &ev))
			goto fail;
		if (ev.type == end) {
			yaml_event_delete(&ev);
			return n;
		}
		ydoc_node *child = build(b, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (child == NULL)
			goto fail;
		if (n->kind == YDOC_SEQ) {
			if (n->n == cap) {
				cap = cap ? cap * 2 : 4;
				n->items = xreallocarray(n->items, cap, sizeof(*n->items));
			}
			n->items[n->n++] = child;
			continue;
		}
		/* Mapping: child is the key; the value follows. */
		if (child->kind != YDOC_SCALAR) {
			diag_add(b->d, DIAG_ERROR, b->doc->file, child->line, child->col, NULL,
			         "mapping keys must be plain scalars");
			node_free(child);
			goto fail;
		}
		if (strlen(child->str) != child->len) {
			/* keys are compared as C strings: "direction\0x" would read as direction */
			diag_add(b->d, DIAG_ERROR, b->doc->file, child->line, child->col, NULL,
			         "mapping key contains a NUL byte");
			node_free(child);
			goto fail;
		}
		if (!child->quoted && strcmp(child->str, "<<") == 0) {
			diag_add(b->d, DIAG_ERROR, b->doc->file, child->line, child->col,
			         "write the keys out in full", "YAML merge keys are not supported");
			node_free(child);
			goto fail;
		}
		if (!next_event(b, &ev)) {
			node_free(child);
			goto fail;
		}
		ydoc_node *value = build(b, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (value == NULL) {
			node_free(child);
			goto fail;
		}
		if (n->n == cap) {
			cap = cap ? cap * 2 : 4;
			n->pairs = xreallocarray(n->pairs, cap, sizeof(*n->pairs));
		}
		n->pairs[n->n++] = (ydoc_pair){ child, value };
	}
fail:
	node_free(n);
	return NULL;
}

static ydoc_node *build(struct builder *b, yaml_event_t *ev, int depth)
{
	if (depth > YDOC_MAX_DEPTH) {
		perr(b, &ev->start_mark, NULL, "%s", "document nested too deeply");
		return NULL;
	}
	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		perr(b, &ev->start_mark, "write the value out in full", "%s",
		     "YAML aliases are not supported");
		return NULL;
	case YAML_SCALAR_EVENT: {
		if (!check_plain(b, ev))
			return NULL;
		ydoc_node *n = new_node(b, YDOC_SCALAR, &ev->start_mark);
		if (n == NULL)
			return NULL;
		n->len = ev->data.scalar.length;
		n->str = xstrndup((const char *)ev->data.scalar.value, n->len);
		n->quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
		            ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE ||
		            ev->data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
		            ev->data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
		return n;
	}
	case YAML_SEQUENCE_START_EVENT: {
		if (!check_plain(b, ev))
			return NULL;
		ydoc_node *n = new_node(b, YDOC_SEQ, &ev->start_mark);
		return n ? build_children(b, n, YAML_SEQUENCE_END_EVENT, depth) : NULL;
	}
	case YAML_MAPPING_START_EVENT: {
		if (!check_plain(b, ev))
			return NULL;
		ydoc_node *n = new_node(b, YDOC_MAP, &ev->start_mark);
		return n ? build_children(b, n, YAML_MAPPING_END_EVENT, depth) : NULL;
	}
	default:
		perr(b, &ev->start_mark, NULL, "%s", "unexpected YAML structure");
		return NULL;
	}
}

/* One parse of text. CUSTOS_ERR_AGAIN (nothing reported, doc released) when libyaml stopped at
 * a surrogate pair escape: its offset in *pair. */
static custos_err parse_once(ydoc *doc, const char *file, const char *text, size_t len,
                             diag_list *d, const struct shift *shifts, size_t nshifts, size_t *pair)
{
	static const unsigned char empty_input[1];
	struct builder b = {
		.doc = doc, .d = d, .text = text, .len = len, .shifts = shifts, .nshifts = nshifts
	};
	yaml_event_t ev;
	custos_err e = CUSTOS_ERR_PARSE;
	int docs = 0;

	memset(doc, 0, sizeof(*doc));
	doc->file = xstrdup(file);
	if (!yaml_parser_initialize(&b.parser)) {
		ydoc_free(doc);
		return err_set(CUSTOS_ERR_NOMEM, "cannot initialise the YAML parser");
	}
	/* UTF-8 only: libyaml would take a UTF-16 file by its byte order mark, which the byte
	 * checks (NUL, control, invalid UTF-8 at line:col) and review tools read otherwise. A
	 * UTF-8 BOM is skipped by libyaml, as before. */
	if (text && len >= 2 &&
	    (((unsigned char)text[0] == 0xff && (unsigned char)text[1] == 0xfe) ||
	     ((unsigned char)text[0] == 0xfe && (unsigned char)text[1] == 0xff))) {
		diag_add(d, DIAG_ERROR, file, 1, 1, "save the file as UTF-8",
		         "the file is UTF-16 (byte order mark 0x%02X 0x%02X): only UTF-8 is read",
		         (unsigned char)text[0], (unsigned char)text[1]);
		yaml_parser_delete(&b.parser);
		ydoc_free(doc);
		return err_set(CUSTOS_ERR_PARSE, "%s: not UTF-8", file);
	}
	/* libyaml asserts on a NULL input even for length 0 (an empty buf's pointer is NULL). */
	yaml_parser_set_input_string(&b.parser, text ? (const unsigned char *)text : empty_input,
	                             text ? len : 0);
	for (;;) {
		if (!next_event(&b, &ev))
			goto out;
		yaml_event_type_t t = ev.type;
		if (t == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
			perr(&b, &ev.start_mark, "use one document per file", "%s",
			     "multiple YAML documents are not supported");
			yaml_event_delete(&ev);
			goto out;
		}
		if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT ||
		    t == YAML_MAPPING_START_EVENT || t == YAML_ALIAS_EVENT) {
			doc->root = build(&b, &ev, 0);
			yaml_event_delete(&ev);
			if (doc->root == NULL)
				goto out;
			continue;
		}
		yaml_event_delete(&ev);
	}
	e = CUSTOS_OK;
out:
	yaml_parser_delete(&b.parser);
	if (e != CUSTOS_OK) {
		ydoc_free(doc); /* nothing is left for the caller to release */
		if (b.pair_hit) {
			*pair = b.pair_at;
			return CUSTOS_ERR_AGAIN;
		}
		err_set(e, "%s: YAML parse failed", file);
	}
	return e;
}

/* Rewrites, in *t, every surrogate pair escape of the double-quoted scalar whose pair starts at
 * byte off, from there to the scalar's closing quote, as \UXXXXXXXX; records each in sh. */
static bool rewrite_pairs(char **t, size_t *len, size_t off, struct shift *sh, size_t *nsh)
{
	char *s = *t;
	size_t n = *len, i = off;

	while (i < n && s[i] != '"') {
		if (s[i] != '\\') {
			i++;
			continue;
		}
		if (!pair_at(s, n, i)) {
			i += i + 1 < n ? 2 : 1; /* any other escape, \\ and \" included */
			continue;
		}
		if (*nsh >= YDOC_MAX_SHIFTS)
			return false;
		uint32_t cp = 0x10000u + (((uint32_t)u_escape(s + i, s + n) - 0xD800u) << 10) +
		              ((uint32_t)u_escape(s + i + 6, s + n) - 0xDC00u);
		char esc[11];
		snprintf(esc, sizeof(esc), "\\U%08X", (unsigned)cp);
		memcpy(s + i, esc, 10);
		memmove(s + i + 10, s + i + 12, n - (i + 12));
		n -= 2;
		text_pos(s, n, i + 10, &sh[*nsh].line, &sh[*nsh].col);
		(*nsh)++;
		i += 10;
	}
	*len = n;
	return true;
}

custos_err ydoc_parse(ydoc *doc, const char *file, const char *text, size_t len, diag_list *d)
{
	struct shift *sh = NULL;
	size_t nsh = 0, pair = 0, n = len;
	char *own = NULL;
	custos_err e;

	for (unsigned round = 0;; round++) {
		e = parse_once(doc, file, own ? own : text, n, d, sh, nsh, &pair);
		if (e != CUSTOS_ERR_AGAIN)
			break;
		if (own == NULL) {
			own = xcalloc(len + 1, 1);
			memcpy(own, text, len);
			sh = xcalloc(YDOC_MAX_SHIFTS, sizeof(*sh));
		}
		if (round >= YDOC_MAX_PAIR_SCALARS || !rewrite_pairs(&own, &n, pair, sh, &nsh)) {
			unsigned line, col;
			text_pos(own, n, pair, &line, &col);
			struct builder b = { .shifts = sh, .nshifts = nsh };
			pos_fix(&b, &line, &col);
			doc->file = xstrdup(file);
			diag_add(d, DIAG_ERROR, file, line, col,
			         "write such characters as themselves (UTF-8) or as \\U escapes",
			         "YAML syntax: more than %u quoted scalars or %u \\u surrogate "
			         "pairs "
			         "to rewrite",
			         YDOC_MAX_PAIR_SCALARS, YDOC_MAX_SHIFTS);
			ydoc_free(doc);
			e = err_set(CUSTOS_ERR_PARSE, "%s: YAML parse failed", file);
			break;
		}
	}
	free(own);
	free(sh);
	return e;
}

/* ---------------------------------------------------------------------------------------------
 * Strict JSON (RFC 8259) to the same tree. A JSON endpoint must refuse what is not JSON, which
 * libyaml (a superset, with unquoted and single-quoted scalars, tags, comments and a 1024
 * character limit on implicit keys) cannot do. Positions are those libyaml would give: 1-based,
 * columns in characters, a node at its first character. Literals and numbers become plain
 * scalars (so ydoc_bool takes true/false), strings quoted ones.
 */
struct jparser {
	ydoc *doc;
	diag_list *d;
	const unsigned char *p, *end;
	unsigned line, col; /* of *p */
	bool failed;
	char *sb; /* string decoding scratch, reused */
	size_t sb_len, sb_cap;
};

static void jerr(struct jparser *j, unsigned line, unsigned col, const char *hint, const char *fmt,
                 ...) CUSTOS_PRINTF(5, 6);
static void jerr(struct jparser *j, unsigned line, unsigned col, const char *hint, const char *fmt,
                 ...)
{
	char msg[512];
	va_list ap;

	if (j->failed)
		return; /* the first error is the one that means something */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	diag_add(j->d, DIAG_ERROR, j->doc->file, line, col, hint, "JSON: %s", msg);
	j->failed = true;
}

/* Moves past one byte that is no line break; a UTF-8 continuation byte is no new column. */
static void jstep(struct jparser *j)
{
	if ((*j->p & 0xc0) != 0x80)
		j->col++;
	j->p++;
}

static void jskip_ws(struct jparser *j)
{
	while (j->p < j->end) {
		unsigned char c = *j->p;
		if (c == ' ' || c == '\t') {
			j->p++;
			j->col++;
		} else if (c == '\n' || c == '\r') {
			j->p++;
			if (c == '\r' && j->p < j->end && *j->p == '\n')
				j->p++;
			j->line++;
			j->col = 1;
		} else {
			return;
		}
	}
}

static ydoc_node *jnode(struct jparser *j, ydoc_kind kind, unsigned line, unsigned col)
{
	if (j->doc->nodes >= YDOC_MAX_NODES) {
		jerr(j, line, col, NULL, "document has too many nodes (limit %d)", YDOC_MAX_NODES);
		return NULL;
	}
	ydoc_node *n = xcalloc(1, sizeof(*n));
	n->kind = kind;
	n->line = line;
	n->col = col;
	j->doc->nodes++;
	return n;
}

/* v (holding *cap elements of size) with room for need of them: the capacity starts at first
 * and doubles. Out of memory ends the process, as xcalloc does. */
static void *jgrow(void *v, size_t *cap, size_t need, size_t size, size_t first)
{
	if (need <= *cap)
		return v;
	size_t c = *cap ? *cap : first;
	while (c < need)
		c *= 2;
	v = xreallocarray(v, c, size);
	*cap = c;
	return v;
}

static void sb_put(struct jparser *j, const void *s, size_t n)
{
	j->sb = jgrow(j->sb, &j->sb_cap, j->sb_len + n + 1, 1, 64);
	memcpy(j->sb + j->sb_len, s, n);
	j->sb_len += n;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at
 * most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
	size_t n = (size_t)(end - s);
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 &&
		                       (s[3] & 0xc0) == 0x80
		               ? 4
		               : 0;
	}
	return 0;
}

static void put_utf8(struct jparser *j, uint32_t cp)
{
	unsigned char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | (cp >> 6));
		u[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | (cp >> 12));
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xf0 | (cp >> 18));
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	sb_put(j, u, n);
}

/* Four hex digits after "\u" at p (which has at least 4 bytes), or -1. */
/* One \u escape (p at the backslash) into sb, a surrogate pair whole. Returns false on error. */
static bool jescape_u(struct jparser *j)
{
	unsigned line = j->line, col = j->col;
	if (j->end - j->p < 6 || num_hex4(j->p + 2) < 0) {
		jerr(j, line, col, "\\u is followed by four hex digits", "%s",
		     "bad \\u escape in a string");
		return false;
	}
	uint32_t cp = (uint32_t)num_hex4(j->p + 2);
	j->p += 6;
	j->col += 6;
	if (cp >= 0xdc00 && cp <= 0xdfff) {
		jerr(j, line, col, "a low surrogate must follow a high one (\\uD800-\\uDBFF)",
		     "lone surrogate \\u%04X in a string", (unsigned)cp);
		return false;
	}
	if (cp >= 0xd800 && cp <= 0xdbff) {
		long lo = j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u'
		                  ? num_hex4(j->p + 2)
		                  : -1;
		if (lo < 0xdc00 || lo > 0xdfff) {
			jerr(j, line, col,
			     "a high surrogate must be followed by a \\uDC00-\\uDFFF escape",
			     "lone surrogate \\u%04X in a string", (unsigned)cp);
			return false;
		}
		cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
		j->p += 6;
		j->col += 6;
	}
	if (cp == 0) {
		/* the tree holds C strings: a NUL would cut a key or value short where it is read */
		jerr(j, line, col, NULL, "%s", "\\u0000 (NUL) is not allowed in a string");
		return false;
	}
	put_utf8(j, cp);
	return true;
}

/* A string (p at its opening quote), decoded into a new quoted scalar. */
static ydoc_node *jstring(struct jparser *j)
{
	unsigned line = j->line, col = j->col;
	j->sb_len = 0;
	jstep(j);
	for (;;) {
		if (j->p >= j->end) {
			jerr(j, line, col, "close it with '\"'", "%s", "unterminated string");
			return NULL;
		}
		unsigned char c = *j->p;
		if (c == '"') {
			jstep(j);
			break;
		}
		if (c < 0x20) {
			jerr(j, j->line, j->col, "escape it (\\n, \\t, \\u00XX)",
			     "control character U+%04X in a string", (unsigned)c);
			return NULL;
		}
		if (c == '\\') {
			if (j->end - j->p < 2) {
				jerr(j, line, col, "close it with '\"'", "%s",
				     "unterminated string");
				return NULL;
			}
			static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
			const char *e = j->p[1] ? strchr(from, j->p[1]) : NULL;
			if (e != NULL) {
				sb_put(j, &to[e - from], 1);
				j->p += 2;
				j->col += 2;
				continue;
			}
			if (j->p[1] == 'u') {
				if (!jescape_u(j))
					return NULL;
				continue;
			}
			jerr(j, j->line, j->col,
			     "JSON escapes are \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX",
			     "bad escape '\\%c' in a string",
			     j->p[1] > 0x20 && j->p[1] < 0x7f ? j->p[1] : '?');
			return NULL;
		}
		size_t n = utf8_len(j->p, j->end);
		if (n == 0) {
			jerr(j, j->line, j->col, NULL, "invalid UTF-8 in a string (byte 0x%02X)",
			     (unsigned)c);
			return NULL;
		}
		sb_put(j, j->p, n);
		j->p += n;
		j->col++;
	}
	ydoc_node *n = jnode(j, YDOC_SCALAR, line, col);
	if (n == NULL)
		return NULL;
	n->quoted = true;
	n->len = j->sb_len;
	n->str = xstrndup(j->sb_len ? j->sb : "", j->sb_len);
	return n;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* A run of characters that could be a bare word or number, for messages and literals. */
static size_t word_len(const struct jparser *j)
{
	size_t n = 0;
	while (j->p + n < j->end) {
		unsigned char c = j->p[n];
		if (!(is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
		      c == '-' || c == '+' || c == '.'))
			break;
		n++;
	}
	return n;
}

/* A number (RFC 8259 section 6) or true/false/null, as a plain scalar. */
static ydoc_node *jbare(struct jparser *j)
{
	unsigned line = j->line, col = j->col;
	size_t wl = word_len(j);
	const unsigned char *s = j->p;
	bool ok;

	if (wl == 0) {
		unsigned char c = *j->p;
		if (c == '\'')
			jerr(j, line, col, "write \"...\"", "%s",
			     "strings are in double quotes, not single");
		else if (c >= 0x21 && c < 0x7f)
			jerr(j, line, col, NULL, "unexpected character '%c'", c);
		else
			jerr(j, line, col, NULL, "unexpected byte 0x%02X", (unsigned)c);
		return NULL;
	}
	if (s[0] == '-' || is_digit(s[0])) {
		size_t i = s[0] == '-';
		ok = i < wl && is_digit(s[i]);
		if (ok && s[i] == '0')
			i++;
		else
			while (i < wl && is_digit(s[i]))
				i++;
		if (ok && i < wl && s[i] == '.') {
			i++;
			ok = i < wl && is_digit(s[i]);
			while (i < wl && is_digit(s[i]))
				i++;
		}
		if (ok && i < wl && (s[i] == 'e' || s[i] == 'E')) {
			i++;
			if (i < wl && (s[i] == '+' || s[i] == '-'))
				i++;
			ok = i < wl && is_digit(s[i]);
			while (i < wl && is_digit(s[i]))
				i++;
		}
		ok = ok && i == wl;
	} else {
		ok = (wl == 4 && memcmp(s, "true", 4) == 0) ||
		     (wl == 5 && memcmp(s, "false", 5) == 0) ||
		     (wl == 4 && memcmp(s, "null", 4) == 0);
	}
	if (!ok) {
		int show = wl > 40 ? 40 : (int)wl;
		jerr(j, line, col,
		     "strings are in double quotes; numbers like -1, 0, 2.5, 1e3 (no leading zero, "
		     "no '+', no '.5')",
		     "'%.*s%s' is not a JSON value", show, (const char *)s, wl > 40 ? "..." : "");
		return NULL;
	}
	ydoc_node *n = jnode(j, YDOC_SCALAR, line, col);
	if (n == NULL)
		return NULL;
	n->len = wl;
	n->str = xstrndup((const char *)s, wl);
	j->p += wl;
	j->col += (unsigned)wl;
	return n;
}

/* Orders scalars by their bytes (length included) */
static int name_cmp(const ydoc_node *a, const ydoc_node *b)
{
	int c = memcmp(a->str, b->str, a->len < b->len ? a->len : b->len);
	if (c != 0)
		return c;
	return a->len < b->len ? -1 : a->len > b->len;
}

static int pair_cmp(const void *a, const void *b)
{
	const ydoc_pair *x = *(const ydoc_pair *const *)a, *y = *(const ydoc_pair *const *)b;
	int c = name_cmp(x->key, y->key);
	if (c != 0)
		return c;
	return x < y ? -1 : x > y; /* text order among equals */
}

/* Refuses a repeated key (RFC 8259 leaves its meaning open: parsers differ, which is a hole).
 * Reports the repeat that comes first in the text. O(n log n). */
static bool junique_keys(struct jparser *j, ydoc_node *m)
{
	if (m->n < 2)
		return true;
	const ydoc_pair **v = xcalloc(m->n, sizeof(*v));
	for (size_t i = 0; i < m->n; i++)
		v[i] = &m->pairs[i];
	qsort(v, m->n, sizeof(*v), pair_cmp);
	const ydoc_pair *first = NULL, *dup = NULL;
	/* in each run of equal keys, sorted in text order, the second is that key's first repeat */
	for (size_t i = 0; i + 1 < m->n;) {
		size_t run = i + 1;
		while (run < m->n && name_cmp(v[i]->key, v[run]->key) == 0)
			run++;
		if (run - i >= 2 && (dup == NULL || v[i + 1] < dup)) {
			dup = v[i + 1];
			first = v[i];
		}
		i = run;
	}
	free(v);
	if (dup == NULL)
		return true;
	int show = dup->key->len > 64 ? 64 : (int)dup->key->len;
	jerr(j, dup->key->line, dup->key->col, "give each key once",
	     "duplicate key '%.*s%s' (first at line %u, column %u)", show, dup->key->str,
	     dup->key->len > 64 ? "..." : "", first->key->line, first->key->col);
	return false;
}

static ydoc_node *jvalue(struct jparser *j, int depth);

/* An object or array n's closing bracket, and the words its messages use. */
static unsigned char jclose(const ydoc_node *n)
{
	return n->kind == YDOC_MAP ? '}' : ']';
}

static const char *jname(const ydoc_node *n)
{
	return n->kind == YDOC_MAP ? "object" : "array";
}

/* The end of the text inside n: reported at n's opening bracket. */
static void junterminated(struct jparser *j, const ydoc_node *n)
{
	jerr(j, n->line, n->col, n->kind == YDOC_MAP ? "close it with '}'" : "close it with ']'",
	     "unterminated %s", jname(n));
}

/* Where a member or item must start (at the first, or after a ','): neither the end of the
 * text nor n's closing bracket. */
static bool jentry(struct jparser *j, const ydoc_node *n)
{
	if (j->p >= j->end) {
		junterminated(j, n);
		return false;
	}
	if (*j->p == jclose(n)) {
		jerr(j, j->line, j->col, "remove the last ','", "trailing ',' in an %s", jname(n));
		return false;
	}
	return true;
}

/* After a member or item of n: 1 past a ',' (another follows), 0 past n's closing bracket,
 * -1 on error (reported). */
static int jafter(struct jparser *j, const ydoc_node *n)
{
	jskip_ws(j);
	if (j->p < j->end && *j->p == ',') {
		jstep(j);
		jskip_ws(j);
		return 1;
	}
	if (j->p < j->end && *j->p == jclose(n)) {
		jstep(j);
		return 0;
	}
	if (j->p >= j->end)
		junterminated(j, n);
	else
		jerr(j, j->line, j->col, NULL, "expected ',' or '%c' after %s", jclose(n),
		     n->kind == YDOC_MAP ? "an object member" : "an array item");
	return -1;
}

/* One "key": value of object n (p at the key), appended. */
static bool jmember(struct jparser *j, ydoc_node *n, size_t *cap, int depth)
{
	if (*j->p != '"') {
		jerr(j, j->line, j->col, "write \"key\": value", "%s",
		     "object keys must be strings in double quotes");
		return false;
	}
	ydoc_node *key = jstring(j);
	if (key == NULL)
		return false;
	jskip_ws(j);
	if (j->p >= j->end || *j->p != ':') {
		jerr(j, j->line, j->col, NULL, "%s", "expected ':' after object key");
		node_free(key);
		return false;
	}
	jstep(j);
	jskip_ws(j);
	ydoc_node *value = jvalue(j, depth + 1);
	if (value == NULL) {
		node_free(key);
		return false;
	}
	n->pairs = jgrow(n->pairs, cap, n->n + 1, sizeof(*n->pairs), 4);
	n->pairs[n->n++] = (ydoc_pair){ key, value };
	return true;
}

/* One item of array n, appended. */
static bool jitem(struct jparser *j, ydoc_node *n, size_t *cap, int depth)
{
	ydoc_node *item = jvalue(j, depth + 1);
	if (item == NULL)
		return false;
	n->items = jgrow(n->items, cap, n->n + 1, sizeof(*n->items), 4);
	n->items[n->n++] = item;
	return true;
}

/* An object or array (p at its opening bracket) into n, which it frees on error. */
static ydoc_node *jcontainer(struct jparser *j, ydoc_node *n, int depth)
{
	size_t cap = 0;
	int more = 1;

	jstep(j); /* { or [ */
	jskip_ws(j);
	if (j->p < j->end && *j->p == jclose(n)) {
		jstep(j);
		more = 0;
	}
	while (more > 0) {
		if (!jentry(j, n))
			goto fail;
		if (!(n->kind == YDOC_MAP ? jmember(j, n, &cap, depth) : jitem(j, n, &cap, depth)))
			goto fail;
		more = jafter(j, n);
	}
	if (more < 0 || (n->kind == YDOC_MAP && !junique_keys(j, n)))
		goto fail;
	return n;
fail:
	node_free(n);
	return NULL;
}

/* A value at p (blanks already skipped). */
static ydoc_node *jvalue(struct jparser *j, int depth)
{
	if (j->p >= j->end) {
		jerr(j, j->line, j->col, NULL, "%s", "expected a value, found the end of the text");
		return NULL;
	}
	if (depth > YDOC_MAX_DEPTH) {
		jerr(j, j->line, j->col, NULL, "document nested too deeply (limit %d levels)",
		     YDOC_MAX_DEPTH);
		return NULL;
	}
	ydoc_node *n;
	switch (*j->p) {
	case '{':
	case '[':
		n = jnode(j, *j->p == '{' ? YDOC_MAP : YDOC_SEQ, j->line, j->col);
		return n ? jcontainer(j, n, depth) : NULL;
	case '"':
		return jstring(j);
	default:
		return jbare(j);
	}
}

custos_err ydoc_parse_json(ydoc *doc, const char *file, const char *text, size_t len, diag_list *d)
{
	struct jparser j = { .doc = doc, .d = d, .line = 1, .col = 1 };

	memset(doc, 0, sizeof(*doc));
	doc->file = xstrdup(file);
	j.p = (const unsigned char *)(text ? text : "");
	j.end = j.p + (text ? len : 0);
	if (j.end - j.p >= 3 && memcmp(j.p, "\xef\xbb\xbf", 3) == 0) {
		jerr(&j, 1, 1, "send the text without it", "%s",
		     "a byte order mark (U+FEFF) is not allowed");
		goto fail;
	}
	jskip_ws(&j);
	doc->root = jvalue(&j, 0);
	if (doc->root == NULL)
		goto fail;
	jskip_ws(&j);
	if (j.p < j.end) {
		jerr(&j, j.line, j.col, "one JSON value per request", "%s",
		     "unexpected text after the JSON value");
		goto fail;
	}
	free(j.sb);
	return CUSTOS_OK;
fail:
	free(j.sb);
	ydoc_free(doc); /* nothing is left for the caller to release */
	return err_set(CUSTOS_ERR_PARSE, "%s: JSON parse failed", file);
}

custos_err ydoc_load(ydoc *doc, const char *path, size_t max, diag_list *d)
{
	buf text;
	custos_err e;

	memset(doc, 0, sizeof(*doc));
	buf_init(&text, max);
	e = file_load(path, FILE_CONFIG, max, &text);
	if (e != CUSTOS_OK) {
		diag_add(d, DIAG_ERROR, path, 0, 0, NULL, "%s", err_msg());
		buf_free(&text);
		return e;
	}
	e = ydoc_parse(doc, path, (const char *)buf_ptr(&text), buf_used(&text), d);
	if (e == CUSTOS_OK && !sha256_hex(buf_span(&text), doc->sha256)) {
		diag_add(d, DIAG_ERROR, path, 0, 0, NULL, "SHA-256 of the file failed (OpenSSL)");
		e = err_set(CUSTOS_ERR_SYS, "%s: SHA-256 of the file failed (OpenSSL)", path);
	}
	buf_free(&text);
	return e;
}

static void vadd(const ydoc *doc, const ydoc_node *node, diag_list *d, diag_severity sev,
                 const char *hint, const char *fmt, va_list ap) CUSTOS_PRINTF(6, 0);
static void vadd(const ydoc *doc, const ydoc_node *node, diag_list *d, diag_severity sev,
                 const char *hint, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	diag_add(d, sev, doc->file, node ? node->line : 0, node ? node->col : 0, hint, "%s", msg);
}

void ydoc_error(const ydoc *doc, const ydoc_node *node, diag_list *d, const char *hint,
                const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vadd(doc, node, d, DIAG_ERROR, hint, fmt, ap);
	va_end(ap);
}

void ydoc_warn(const ydoc *doc, const ydoc_node *node, diag_list *d, const char *hint,
               const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vadd(doc, node, d, DIAG_WARNING, hint, fmt, ap);
	va_end(ap);
}

ydoc_node *ydoc_map_get(ydoc_node *map, const char *key)
{
	if (map == NULL || map->kind != YDOC_MAP)
		return NULL;
	for (size_t i = 0; i < map->n; i++) {
		if (strcmp(map->pairs[i].key->str, key) == 0) {
			map->pairs[i].key->used = true;
			return map->pairs[i].value;
		}
	}
	return NULL;
}

static const char *kind_name(ydoc_kind k)
{
	return k == YDOC_SCALAR ? "a scalar" : k == YDOC_SEQ ? "a list" : "a mapping";
}

bool ydoc_check_keys(const ydoc *doc, ydoc_node *map, const char *const *allowed, size_t n,
                     diag_list *d)
{
	bool ok = true;

	if (map == NULL || map->kind != YDOC_MAP)
		return true;
	for (size_t i = 0; i < map->n; i++) {
		ydoc_node *k = map->pairs[i].key;
		bool known = false;
		for (size_t j = 0; j < n && !known; j++)
			known = strcmp(k->str, allowed[j]) == 0;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(map->pairs[j].key->str, k->str) == 0) {
				ydoc_error(doc, k, d, NULL, "duplicate key '%s' (first at line %u)",
				           k->str, map->pairs[j].key->line);
				ok = false;
				break;
			}
		}
		if (known)
			continue;
		const char *guess = diag_suggest((span){ k->str, k->len }, allowed, n);
		char hint[256];
		if (guess) {
			snprintf(hint, sizeof(hint), "did you mean '%s'?", guess);
		} else {
			size_t off = (size_t)snprintf(hint, sizeof(hint), "allowed keys:");
			for (size_t j = 0; j < n && off < sizeof(hint); j++)
				off += (size_t)snprintf(hint + off, sizeof(hint) - off, "%s %s",
				                        j ? "," : "", allowed[j]);
		}
		ydoc_error(doc, k, d, hint, "unknown key '%s'", k->str);
		ok = false;
	}
	return ok;
}

bool ydoc_expect(const ydoc *doc, ydoc_node *node, ydoc_kind kind, const char *what, diag_list *d)
{
	if (node && node->kind == kind)
		return true;
	ydoc_error(doc, node, d, NULL, "%s must be %s%s%s", what, kind_name(kind),
	           node ? ", not " : "", node ? kind_name(node->kind) : "");
	return false;
}

bool ydoc_require(const ydoc *doc, ydoc_node *map, const char *key, diag_list *d)
{
	if (ydoc_map_get(map, key) != NULL)
		return true;
	ydoc_error(doc, map, d, NULL, "missing required key '%s'", key);
	return false;
}

static bool want_scalar(const ydoc *doc, ydoc_node *node, const char *what, diag_list *d)
{
	if (node->kind == YDOC_SCALAR)
		return true;
	ydoc_error(doc, node, d, NULL, "expected %s, found %s", what, kind_name(node->kind));
	return false;
}

bool ydoc_str(const ydoc *doc, ydoc_node *node, const char **out, diag_list *d)
{
	if (!want_scalar(doc, node, "a string", d))
		return false;
	if (strlen(node->str) != node->len) {
		ydoc_error(doc, node, d, NULL, "string contains a NUL byte");
		return false;
	}
	*out = node->str;
	return true;
}

bool ydoc_bool(const ydoc *doc, ydoc_node *node, bool *out, diag_list *d)
{
	if (!want_scalar(doc, node, "true or false", d))
		return false;
	/* YAML 1.2 core schema only: yes/no/on/off are not booleans here. */
	if (!node->quoted && strcmp(node->str, "true") == 0) {
		*out = true;
		return true;
	}
	if (!node->quoted && strcmp(node->str, "false") == 0) {
		*out = false;
		return true;
	}
	ydoc_error(doc, node, d,
	           node->quoted ? "write true or false without quotes: a quoted value is a string"
	                        : "write true or false",
	           "'%s' is not a boolean", node->str);
	return false;
}

bool ydoc_u64(const ydoc *doc, ydoc_node *node, uint64_t min, uint64_t max, uint64_t *out,
              diag_list *d)
{
	if (!want_scalar(doc, node, "a number", d))
		return false;
	if (num_parse_u64((span){ node->str, node->len }, min, max, out) != CUSTOS_OK) {
		ydoc_error(doc, node, d, NULL, "%s", err_msg());
		return false;
	}
	return true;
}

bool ydoc_size(const ydoc *doc, ydoc_node *node, uint64_t max, uint64_t *out, diag_list *d)
{
	if (!want_scalar(doc, node, "a size", d))
		return false;
	if (num_parse_size((span){ node->str, node->len }, max, out) != CUSTOS_OK) {
		ydoc_error(doc, node, d, "sizes look like 512, 64KiB, 10MiB, 1GiB", "%s",
		           err_msg());
		return false;
	}
	return true;
}

bool ydoc_duration(const ydoc *doc, ydoc_node *node, uint64_t max_ns, uint64_t *out_ns,
                   diag_list *d)
{
	if (!want_scalar(doc, node, "a duration", d))
		return false;
	if (num_parse_duration((span){ node->str, node->len }, max_ns, out_ns) != CUSTOS_OK) {
		ydoc_error(doc, node, d, "durations look like 250ms, 10s, 5m, 1h", "%s", err_msg());
		return false;
	}
	return true;
}

bool ydoc_enum(const ydoc *doc, ydoc_node *node, const char *const *choices, size_t n, int *out,
               diag_list *d)
{
	char hint[256];
	size_t off = 0;

	if (!want_scalar(doc, node, "a word", d))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(node->str, choices[i]) == 0) {
			*out = (int)i;
			return true;
		}
	}
	const char *guess = diag_suggest((span){ node->str, node->len }, choices, n);
	if (guess) {
		snprintf(hint, sizeof(hint), "did you mean '%s'?", guess);
	} else {
		off = (size_t)snprintf(hint, sizeof(hint), "one of:");
		for (size_t i = 0; i < n && off < sizeof(hint); i++)
			off += (size_t)snprintf(hint + off, sizeof(hint) - off, "%s %s",
			                        i ? "," : "", choices[i]);
	}
	ydoc_error(doc, node, d, hint, "'%s' is not a valid value", node->str);
	return false;
}
