/*
 * The one error idiom: a code from custos_err plus a per-thread message with context.
 * Also the small allocation and cleanup helpers every module uses.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/core.h"

#define ERR_MSG_MAX 1024

static _Thread_local char err_text[ERR_MSG_MAX];

static const char *const err_names[CUSTOS_ERR__COUNT] = {
	[CUSTOS_OK] = "ok",
	[CUSTOS_ERR_NOMEM] = "out of memory",
	[CUSTOS_ERR_LIMIT] = "limit exceeded",
	[CUSTOS_ERR_INVAL] = "invalid value",
	[CUSTOS_ERR_PARSE] = "parse error",
	[CUSTOS_ERR_IO] = "I/O error",
	[CUSTOS_ERR_PERM] = "permission refused",
	[CUSTOS_ERR_NOTFOUND] = "not found",
	[CUSTOS_ERR_EXISTS] = "already exists",
	[CUSTOS_ERR_CRYPTO] = "cryptographic failure",
	[CUSTOS_ERR_TLS] = "TLS failure",
	[CUSTOS_ERR_AGAIN] = "try again",
	[CUSTOS_ERR_TIMEOUT] = "timed out",
	[CUSTOS_ERR_DENIED] = "denied",
	[CUSTOS_ERR_UNSUPPORTED] = "not supported",
	[CUSTOS_ERR_SYS] = "system call failed",
	[CUSTOS_ERR_CLOSED] = "closed",
	[CUSTOS_ERR_INTERNAL] = "internal error",
};

const char *custos_strerror(custos_err e)
{
	if ((unsigned)e >= CUSTOS_ERR__COUNT || err_names[e] == NULL)
		return "unknown error";
	return err_names[e];
}

custos_err err_set(custos_err e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err_text, sizeof(err_text), fmt, ap);
	va_end(ap);
	return e;
}

custos_err err_sys(const char *fmt, ...)
{
	int saved = errno;
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err_text, sizeof(err_text), "%s: %s", msg, strerror(saved));
	errno = saved;
	return CUSTOS_ERR_SYS;
}

custos_err err_wrap(custos_err e, const char *fmt, ...)
{
	char prefix[ERR_MSG_MAX];
	char old[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(old, sizeof(old), "%s", err_text);
	if (old[0] != '\0')
		snprintf(err_text, sizeof(err_text), "%s: %s", prefix, old);
	else
		snprintf(err_text, sizeof(err_text), "%s: %s", prefix, custos_strerror(e));
	return e;
}

const char *err_msg(void)
{
	return err_text;
}

void err_clear(void)
{
	err_text[0] = '\0';
}

void cleanup_freep(void *p)
{
	void **pp = (void **)p;

	free(*pp);
	*pp = NULL;
}

static void oom_abort(void)
{
	/* Nothing sensible can continue: write without allocating and stop. */
	log_out_of_memory();
	abort();
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		oom_abort();
	return p;
}

void *xreallocarray(void *p, size_t n, size_t size)
{
	size_t bytes;

	if (__builtin_mul_overflow(n ? n : 1, size ? size : 1, &bytes))
		oom_abort();
	void *q = realloc(p, bytes);
	if (q == NULL)
		oom_abort();
	return q;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");

	if (p == NULL)
		oom_abort();
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	/* Not strndup: it may scan for a NUL past n (ASan's strict_string_checks reports it), and
	 * spans of wire data are not NUL-terminated. */
	if (s == NULL)
		s = "";
	const char *z = memchr(s, '\0', n);
	size_t len = z ? (size_t)(z - s) : n;
	char *p = malloc(len + 1);

	if (p == NULL)
		oom_abort();
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}
