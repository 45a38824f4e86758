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

struct builder {
	ydoc *doc;
	diag_list *d;
	yaml_parser_t parser;
	const char *text; /* the input, for positions libyaml gives as byte offsets */
	size_t len;
};

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
	diag_add(b->d, DIAG_ERROR, b->doc->file, (unsigned)m->line + 1, (unsigned)m->column + 1,
	         hint, "%s", msg);
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
	b->doc->nodes++;
	return n;
}

static bool next_event(struct builder *b, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&b->parser, ev)) {
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
				n->items = realloc(n->items, cap * sizeof(*n->items));
				if (n->items == NULL)
					abort();
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
			n->pairs = realloc(n->pairs, cap * sizeof(*n->pairs));
			if (n->pairs == NULL)
				abort();
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

custos_err ydoc_parse(ydoc *doc, const char *file, const char *text, size_t len, diag_list *d)
{
	static const unsigned char empty_input[1];
	struct builder b = { .doc = doc, .d = d, .text = text, .len = len };
	yaml_event_t ev;
	custos_err e = CUSTOS_ERR_PARSE;
	int docs = 0;

	memset(doc, 0, sizeof(*doc));
	doc->file = xstrdup(file);
	if (!yaml_parser_initialize(&b.parser))
		return err_set(CUSTOS_ERR_NOMEM, "cannot initialise the YAML parser");
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
		err_set(e, "%s: YAML parse failed", file);
	}
	return e;
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
	ydoc_error(doc, node, d, "write true or false", "'%s' is not a boolean", node->str);
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
