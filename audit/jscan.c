/*
 * A strict, allocation-free JSON scanner for audit lines: validates producer bodies in the
 * writer (the trust boundary) and finds top-level members for verify, export and the sinks.
 */
#include <string.h>

#include "audit_int.h"

static void skip_ws(span s, size_t *i)
{
	while (*i < s.len &&
	       (s.ptr[*i] == ' ' || s.ptr[*i] == '\t' || s.ptr[*i] == '\n' || s.ptr[*i] == '\r'))
		(*i)++;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static custos_err scan_string(span s, size_t *i)
{
	ENSURE(*i < s.len && s.ptr[*i] == '"', CUSTOS_ERR_PARSE, "expected a string at byte %zu",
	       *i);
	(*i)++;
	while (*i < s.len) {
		unsigned char c = (unsigned char)s.ptr[*i];
		if (c == '"') {
			(*i)++;
			return CUSTOS_OK;
		}
		ENSURE(c >= 0x20, CUSTOS_ERR_PARSE, "control byte 0x%02x in a string at byte %zu",
		       c, *i);
		if (c == '\\') {
			ENSURE(*i + 1 < s.len, CUSTOS_ERR_PARSE, "unterminated escape");
			char e = s.ptr[*i + 1];
			if (e == 'u') {
				ENSURE(*i + 5 < s.len && is_hex(s.ptr[*i + 2]) &&
				               is_hex(s.ptr[*i + 3]) && is_hex(s.ptr[*i + 4]) &&
				               is_hex(s.ptr[*i + 5]),
				       CUSTOS_ERR_PARSE, "bad \\u escape at byte %zu", *i);
				*i += 6;
				continue;
			}
			ENSURE(strchr("\"\\/bfnrt", e) != NULL && e != '\0', CUSTOS_ERR_PARSE,
			       "bad escape at byte %zu", *i);
			*i += 2;
			continue;
		}
		if (c >= 0x80) {
			/* RFC 8259 8.1: JSON text is UTF-8; raw invalid bytes are not JSON. */
			size_t l = json_utf8_seq_len((const unsigned char *)s.ptr + *i, s.len - *i);
			ENSURE(l > 0, CUSTOS_ERR_PARSE, "invalid UTF-8 in a string at byte %zu",
			       *i);
			*i += l;
			continue;
		}
		(*i)++;
	}
	return err_set(CUSTOS_ERR_PARSE, "unterminated string");
}

static custos_err scan_number(span s, size_t *i)
{
	size_t st = *i;
	if (*i < s.len && s.ptr[*i] == '-')
		(*i)++;
	ENSURE(*i < s.len && s.ptr[*i] >= '0' && s.ptr[*i] <= '9', CUSTOS_ERR_PARSE,
	       "bad number at byte %zu", st);
	if (s.ptr[*i] == '0')
		(*i)++;
	else
		while (*i < s.len && s.ptr[*i] >= '0' && s.ptr[*i] <= '9')
			(*i)++;
	if (*i < s.len && s.ptr[*i] == '.') {
		(*i)++;
		ENSURE(*i < s.len && s.ptr[*i] >= '0' && s.ptr[*i] <= '9', CUSTOS_ERR_PARSE,
		       "bad fraction at byte %zu", st);
		while (*i < s.len && s.ptr[*i] >= '0' && s.ptr[*i] <= '9')
			(*i)++;
	}
	if (*i < s.len && (s.ptr[*i] == 'e' || s.ptr[*i] == 'E')) {
		(*i)++;
		if (*i < s.len && (s.ptr[*i] == '+' || s.ptr[*i] == '-'))
			(*i)++;
		ENSURE(*i < s.len && s.ptr[*i] >= '0' && s.ptr[*i] <= '9', CUSTOS_ERR_PARSE,
		       "bad exponent at byte %zu", st);
		while (*i < s.len && s.ptr[*i] >= '0' && s.ptr[*i] <= '9')
			(*i)++;
	}
	return CUSTOS_OK;
}

static custos_err scan_lit(span s, size_t *i, const char *lit)
{
	size_t n = strlen(lit);
	ENSURE(*i + n <= s.len && memcmp(s.ptr + *i, lit, n) == 0, CUSTOS_ERR_PARSE,
	       "bad literal at byte %zu", *i);
	*i += n;
	return CUSTOS_OK;
}

static custos_err scan_value(span s, size_t *i, int depth)
{
	ENSURE(depth <= AJSON_MAX_DEPTH, CUSTOS_ERR_LIMIT, "JSON deeper than %d", AJSON_MAX_DEPTH);
	skip_ws(s, i);
	ENSURE(*i < s.len, CUSTOS_ERR_PARSE, "value expected at end");
	char c = s.ptr[*i];
	if (c == '"')
		return scan_string(s, i);
	if (c == 't')
		return scan_lit(s, i, "true");
	if (c == 'f')
		return scan_lit(s, i, "false");
	if (c == 'n')
		return scan_lit(s, i, "null");
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		(*i)++;
		skip_ws(s, i);
		if (*i < s.len && s.ptr[*i] == close) {
			(*i)++;
			return CUSTOS_OK;
		}
		for (;;) {
			if (c == '{') {
				skip_ws(s, i);
				GUARD(scan_string(s, i));
				skip_ws(s, i);
				ENSURE(*i < s.len && s.ptr[*i] == ':', CUSTOS_ERR_PARSE,
				       "':' expected at byte %zu", *i);
				(*i)++;
			}
			GUARD(scan_value(s, i, depth + 1));
			skip_ws(s, i);
			ENSURE(*i < s.len, CUSTOS_ERR_PARSE, "unterminated container");
			if (s.ptr[*i] == ',') {
				(*i)++;
				continue;
			}
			ENSURE(s.ptr[*i] == close, CUSTOS_ERR_PARSE,
			       "',' or '%c' expected at byte %zu", close, *i);
			(*i)++;
			return CUSTOS_OK;
		}
	}
	return scan_number(s, i);
}

custos_err ajson_validate(span s)
{
	size_t i = 0;
	GUARD(scan_value(s, &i, 0));
	skip_ws(s, &i);
	ENSURE(i == s.len, CUSTOS_ERR_PARSE, "trailing bytes at %zu", i);
	return CUSTOS_OK;
}

custos_err ajson_next(span obj, size_t *pos, span *key, span *val)
{
	size_t i = *pos;
	if (i == 0) {
		skip_ws(obj, &i);
		ENSURE(i < obj.len && obj.ptr[i] == '{', CUSTOS_ERR_PARSE, "object expected");
		i++;
		skip_ws(obj, &i);
		if (i < obj.len && obj.ptr[i] == '}') {
			*pos = obj.len;
			return CUSTOS_ERR_NOTFOUND;
		}
	} else {
		if (i >= obj.len)
			return CUSTOS_ERR_NOTFOUND;
		skip_ws(obj, &i);
		ENSURE(i < obj.len, CUSTOS_ERR_PARSE, "unterminated object");
		if (obj.ptr[i] == '}') {
			*pos = obj.len;
			return CUSTOS_ERR_NOTFOUND;
		}
		ENSURE(obj.ptr[i] == ',', CUSTOS_ERR_PARSE, "',' expected at byte %zu", i);
		i++;
		skip_ws(obj, &i);
	}
	size_t ks = i;
	GUARD(scan_string(obj, &i));
	*key = span_of(obj.ptr + ks + 1, i - ks - 2);
	skip_ws(obj, &i);
	ENSURE(i < obj.len && obj.ptr[i] == ':', CUSTOS_ERR_PARSE, "':' expected at byte %zu", i);
	i++;
	skip_ws(obj, &i);
	size_t vs = i;
	GUARD(scan_value(obj, &i, 1));
	*val = span_of(obj.ptr + vs, i - vs);
	*pos = i;
	return CUSTOS_OK;
}

custos_err ajson_get(span obj, const char *key, span *val)
{
	size_t pos = 0;
	span k, v;
	custos_err e;
	while ((e = ajson_next(obj, &pos, &k, &v)) == CUSTOS_OK)
		if (span_eq_cstr(k, key)) {
			*val = v;
			return CUSTOS_OK;
		}
	if (e == CUSTOS_ERR_NOTFOUND)
		return err_set(CUSTOS_ERR_NOTFOUND, "no member %s", key);
	return e;
}

static unsigned hexval(char c)
{
	if (c >= '0' && c <= '9')
		return (unsigned)(c - '0');
	if (c >= 'a' && c <= 'f')
		return (unsigned)(c - 'a' + 10);
	return (unsigned)(c - 'A' + 10);
}

static custos_err put_utf8(buf *out, uint32_t cp)
{
	uint8_t b[4];
	size_t n;
	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xC0 | (cp >> 6));
		b[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xE0 | (cp >> 12));
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xF0 | (cp >> 18));
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return buf_append(out, b, n);
}

custos_err ajson_unescape(span str, buf *out)
{
	size_t i = 0;
	GUARD(scan_string(str, &i));
	ENSURE(i == str.len, CUSTOS_ERR_PARSE, "not a single string");
	for (i = 1; i + 1 < str.len; i++) {
		char c = str.ptr[i];
		if (c != '\\') {
			GUARD(buf_append_byte(out, (uint8_t)c));
			continue;
		}
		char e = str.ptr[++i];
		switch (e) {
		case 'b':
			c = '\b';
			break;
		case 'f':
			c = '\f';
			break;
		case 'n':
			c = '\n';
			break;
		case 'r':
			c = '\r';
			break;
		case 't':
			c = '\t';
			break;
		case 'u': {
			uint32_t cp = 0;
			for (int k = 1; k <= 4; k++)
				cp = cp << 4 | hexval(str.ptr[i + (size_t)k]);
			i += 4;
			if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < str.len &&
			    str.ptr[i + 1] == '\\' && str.ptr[i + 2] == 'u') {
				uint32_t lo = 0;
				for (int k = 3; k <= 6; k++)
					lo = lo << 4 | hexval(str.ptr[i + (size_t)k]);
				if (lo >= 0xDC00 && lo < 0xE000) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					i += 6;
				}
			}
			if (cp >= 0xD800 && cp < 0xE000)
				cp = 0xFFFD;
			GUARD(put_utf8(out, cp));
			continue;
		}
		default:
			c = e;
		}
		GUARD(buf_append_byte(out, (uint8_t)c));
	}
	return CUSTOS_OK;
}

custos_err ajson_u64(span v, uint64_t *out)
{
	return num_parse_u64(v, 0, UINT64_MAX, out);
}
