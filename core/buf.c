/*
 * Bounded byte buffers and (pointer, length) views. Every growth is checked against the
 * buffer's hard maximum before allocating, so hostile sizes fail with CUSTOS_ERR_LIMIT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "custos/core.h"

span span_cstr(const char *s)
{
	return s ? (span){ s, strlen(s) } : (span){ "", 0 };
}

bool span_eq(span a, span b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool span_eq_cstr(span a, const char *s)
{
	return span_eq(a, span_cstr(s));
}

static inline unsigned char ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool span_case_eq(span a, span b)
{
	if (a.len != b.len)
		return false;
	for (size_t i = 0; i < a.len; i++)
		if (ascii_lower((unsigned char)a.ptr[i]) != ascii_lower((unsigned char)b.ptr[i]))
			return false;
	return true;
}

bool span_starts_with(span a, span prefix)
{
	return a.len >= prefix.len &&
	       (prefix.len == 0 || memcmp(a.ptr, prefix.ptr, prefix.len) == 0);
}

span span_trim(span a)
{
	while (a.len > 0 && (a.ptr[0] == ' ' || a.ptr[0] == '\t')) {
		a.ptr++;
		a.len--;
	}
	while (a.len > 0 && (a.ptr[a.len - 1] == ' ' || a.ptr[a.len - 1] == '\t'))
		a.len--;
	return a;
}

custos_err span_copy_cstr(span a, char *out, size_t outsz)
{
	ENSURE(outsz > 0 && a.len < outsz, CUSTOS_ERR_LIMIT, "value of %zu bytes exceeds %zu",
	       a.len, outsz ? outsz - 1 : 0);
	if (a.len)
		memcpy(out, a.ptr, a.len);
	out[a.len] = '\0';
	return CUSTOS_OK;
}

char *span_dup(span a)
{
	/* Not strndup: a view is not NUL-terminated, and strndup may read past it looking for one. */
	char *p = xcalloc(1, a.len + 1);
	if (a.len)
		memcpy(p, a.ptr, a.len);
	return p;
}

void buf_init(buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void buf_free(buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

void buf_free_secret(buf *b)
{
	if (b->data != NULL)
		OPENSSL_cleanse(b->data, b->cap);
	buf_free(b);
}

void buf_reset(buf *b)
{
	b->off = b->len = 0;
}

custos_err buf_reserve_slow(buf *b, size_t n)
{
	size_t used = b->len - b->off;

	ENSURE(n <= b->max && used <= b->max - n, CUSTOS_ERR_LIMIT,
	       "buffer limit of %zu bytes exceeded", b->max);
	if (b->cap - b->len >= n)
		return CUSTOS_OK;
	/* Compact first: consumed bytes at the front are free space. */
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, used);
		b->len = used;
		b->off = 0;
		if (b->cap - b->len >= n)
			return CUSTOS_OK;
	}
	size_t want = used + n;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < want)
		ncap = ncap > SIZE_MAX / 2 ? want : ncap * 2;
	if (b->max < SIZE_MAX && ncap > b->max + 1)
		ncap = b->max + 1; /* +1 leaves room for buf_cstr's NUL at the maximum */
	if (ncap < want)
		ncap = want;
	uint8_t *p = realloc(b->data, ncap);
	ENSURE(p != NULL, CUSTOS_ERR_NOMEM, "cannot grow buffer to %zu bytes", ncap);
	b->data = p;
	b->cap = ncap;
	return CUSTOS_OK;
}

custos_err buf_append_span(buf *b, span s)
{
	return buf_append(b, s.ptr, s.len);
}

custos_err buf_append_cstr(buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

custos_err buf_append_byte(buf *b, uint8_t c)
{
	return buf_append(b, &c, 1);
}

custos_err buf_vprintf(buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	char small[256];

	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap2);
	va_end(ap2);
	ENSURE(n >= 0, CUSTOS_ERR_INVAL, "bad format");
	if ((size_t)n < sizeof(small))
		return buf_append(b, small, (size_t)n);
	GUARD(buf_reserve(b, (size_t)n + 1));
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return CUSTOS_OK;
}

custos_err buf_printf(buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	custos_err e = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return e;
}

void buf_consume(buf *b, size_t n)
{
	size_t used = b->len - b->off;

	if (n >= used) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
}

custos_err buf_cstr(buf *b, const char **out)
{
	/* The NUL is outside the counted bytes, so it may sit one past max. */
	if (b->cap - b->len < 1) {
		size_t saved = b->max;
		b->max = saved + 1;
		custos_err e = buf_reserve(b, 1);
		b->max = saved;
		GUARD(e);
	}
	b->data[b->len] = '\0';
	*out = (const char *)b->data + b->off;
	return CUSTOS_OK;
}
