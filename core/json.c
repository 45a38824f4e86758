/*
 * A JSON writer that cannot produce invalid JSON: strings are escaped per RFC 8259, control
 * characters become \u00XX and bytes that are not valid UTF-8 become U+FFFD. Commas are
 * placed by tracking nesting; the first error sticks.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "custos/core.h"

void json_init(json_writer *w, buf *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

static void emit(json_writer *w, const void *p, size_t n)
{
	if (w->err == CUSTOS_OK)
		w->err = buf_append(w->out, p, n);
}

/* Before any value: a comma unless first in its container, nothing right after a key. */
static void before_value(json_writer *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->need_comma[w->depth])
		emit(w, ",", 1);
	w->need_comma[w->depth] = true;
}

static void open_container(json_writer *w, char c)
{
	before_value(w);
	if (w->depth >= JSON_MAX_DEPTH) {
		if (w->err == CUSTOS_OK)
			w->err = err_set(CUSTOS_ERR_LIMIT, "JSON nesting deeper than %d",
			                 JSON_MAX_DEPTH);
		return;
	}
	emit(w, &c, 1);
	w->depth++;
	w->need_comma[w->depth] = false;
}

static void close_container(json_writer *w, char c)
{
	if (w->depth == 0 || w->after_key) {
		if (w->err == CUSTOS_OK)
			w->err = err_set(CUSTOS_ERR_INVAL, "unbalanced JSON container");
		return;
	}
	emit(w, &c, 1);
	w->depth--;
}

void json_obj_begin(json_writer *w)
{
	open_container(w, '{');
}
void json_obj_end(json_writer *w)
{
	close_container(w, '}');
}
void json_arr_begin(json_writer *w)
{
	open_container(w, '[');
}
void json_arr_end(json_writer *w)
{
	close_container(w, ']');
}

size_t json_utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF) {
		if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if (c == 0xE0 && p[1] < 0xA0)
			return 0; /* overlong */
		if (c == 0xED && p[1] >= 0xA0)
			return 0; /* surrogates */
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
		    (p[3] & 0xC0) != 0x80)
			return 0;
		if (c == 0xF0 && p[1] < 0x90)
			return 0; /* overlong */
		if (c == 0xF4 && p[1] >= 0x90)
			return 0; /* above U+10FFFF */
		return 4;
	}
	return 0;
}

custos_err json_escape(buf *b, span s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s.ptr;
	size_t i = 0, run = 0;

	if (s.len == 0) /* (NULL, 0) too: the span of a buf never written; NULL + 0 is UB */
		return CUSTOS_OK;
	while (i < s.len) {
		unsigned char c = p[i];
		const char *esc = NULL;
		char u[6];
		size_t elen = 0;

		if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
			i++;
			run++;
			continue;
		}
		if (c >= 0x80) {
			size_t l = json_utf8_seq_len(p + i, s.len - i);
			if (l > 0) {
				i += l;
				run += l;
				continue;
			}
			esc = "\xEF\xBF\xBD"; /* U+FFFD for an invalid byte */
			elen = 3;
		} else if (c == '"') {
			esc = "\\\"";
			elen = 2;
		} else if (c == '\\') {
			esc = "\\\\";
			elen = 2;
		} else if (c == '\n') {
			esc = "\\n";
			elen = 2;
		} else if (c == '\r') {
			esc = "\\r";
			elen = 2;
		} else if (c == '\t') {
			esc = "\\t";
			elen = 2;
		} else {
			u[0] = '\\';
			u[1] = 'u';
			u[2] = '0';
			u[3] = '0';
			u[4] = hex[c >> 4];
			u[5] = hex[c & 15];
			esc = u;
			elen = 6;
		}
		GUARD(buf_append(b, p + i - run, run));
		run = 0;
		GUARD(buf_append(b, esc, elen));
		i++;
	}
	return buf_append(b, p + i - run, run);
}

void json_key(json_writer *w, const char *key)
{
	before_value(w);
	emit(w, "\"", 1);
	if (w->err == CUSTOS_OK)
		w->err = json_escape(w->out, span_cstr(key));
	emit(w, "\":", 2);
	w->after_key = true;
}

void json_str(json_writer *w, span s)
{
	before_value(w);
	emit(w, "\"", 1);
	if (w->err == CUSTOS_OK)
		w->err = json_escape(w->out, s);
	emit(w, "\"", 1);
}

void json_cstr(json_writer *w, const char *s)
{
	if (s == NULL)
		json_null(w);
	else
		json_str(w, span_cstr(s));
}

void json_u64(json_writer *w, uint64_t v)
{
	char t[24];
	int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);

	before_value(w);
	emit(w, t, (size_t)n);
}

void json_i64(json_writer *w, int64_t v)
{
	char t[24];
	int n = snprintf(t, sizeof(t), "%lld", (long long)v);

	before_value(w);
	emit(w, t, (size_t)n);
}

void json_double(json_writer *w, double v)
{
	char t[32];

	if (!isfinite(v)) {
		json_null(w);
		return;
	}
	int n = snprintf(t, sizeof(t), "%.17g", v);
	before_value(w);
	emit(w, t, (size_t)n);
}

void json_bool(json_writer *w, bool v)
{
	before_value(w);
	if (v)
		emit(w, "true", 4);
	else
		emit(w, "false", 5);
}

void json_null(json_writer *w)
{
	before_value(w);
	emit(w, "null", 4);
}

void json_raw(json_writer *w, span s)
{
	before_value(w);
	emit(w, s.ptr, s.len);
}

void json_kv_str(json_writer *w, const char *key, span v)
{
	json_key(w, key);
	json_str(w, v);
}

void json_kv_cstr(json_writer *w, const char *key, const char *v)
{
	json_key(w, key);
	json_cstr(w, v);
}

void json_kv_u64(json_writer *w, const char *key, uint64_t v)
{
	json_key(w, key);
	json_u64(w, v);
}

void json_kv_i64(json_writer *w, const char *key, int64_t v)
{
	json_key(w, key);
	json_i64(w, v);
}

void json_kv_bool(json_writer *w, const char *key, bool v)
{
	json_key(w, key);
	json_bool(w, v);
}

custos_err json_finish(json_writer *w)
{
	if (w->err != CUSTOS_OK)
		return w->err;
	if (w->depth != 0 || w->after_key)
		return err_set(CUSTOS_ERR_INVAL, "unbalanced JSON: %d container(s) left open",
		               w->depth);
	return CUSTOS_OK;
}
