/*
 * What an audited request path keeps of its query string (audit.query): query values such as
 * ?api_key=... or ?token=... are secrets that must not reach a trail shipped to a SIEM.
 */
#include <string.h>

#include "custos/audit.h"

typedef struct qout {
	char *p;
	size_t n, cap; /* cap: bytes usable, the NUL excluded */
	bool full;
} qout;

/* Appends v, cut on a UTF-8 boundary when it does not fit (then nothing more is appended). */
static void put(qout *o, const char *v, size_t len)
{
	if (o->full)
		return;
	if (len > o->cap - o->n) {
		len = o->cap - o->n;
		while (len > 0 && ((unsigned char)v[len] & 0xc0) == 0x80)
			len--;
		o->full = true;
	}
	memcpy(o->p + o->n, v, len);
	o->n += len;
}

/* The marker, whole or not at all. */
static void put_mark(qout *o)
{
	if (o->full)
		return;
	if (o->cap - o->n < sizeof(AUDIT_QUERY_MARK) - 1) {
		o->full = true;
		return;
	}
	put(o, AUDIT_QUERY_MARK, sizeof(AUDIT_QUERY_MARK) - 1);
}

size_t audit_query_filter(span path, audit_query q, char *out, size_t cap)
{
	qout o = { .p = out, .cap = cap ? cap - 1 : 0 };
	if (cap == 0)
		return 0;
	const char *qm = path.len ? memchr(path.ptr, '?', path.len) : NULL;
	if (qm == NULL || q == AUDIT_QUERY_FULL) {
		put(&o, path.ptr, path.len);
	} else {
		size_t at = (size_t)(qm - path.ptr);
		put(&o, path.ptr, at);
		if (q == AUDIT_QUERY_NAMES) {
			put(&o, "?", 1);
			size_t i = at + 1;
			while (i <= path.len) {
				const char *f = path.ptr + i;
				const char *amp = memchr(f, '&', path.len - i);
				size_t flen = amp ? (size_t)(amp - f) : path.len - i;
				const char *eq = flen ? memchr(f, '=', flen) : NULL;
				if (eq) {
					put(&o, f, (size_t)(eq - f) + 1);
					put_mark(&o);
				} else if (flen) {
					put_mark(&o);
				}
				if (amp == NULL)
					break;
				put(&o, "&", 1);
				i += flen + 1;
			}
		}
	}
	out[o.n] = '\0';
	return o.n;
}

const char *audit_query_name(audit_query q)
{
	switch (q) {
	case AUDIT_QUERY_FULL:
		return "full";
	case AUDIT_QUERY_NONE:
		return "none";
	case AUDIT_QUERY_NAMES:
		break;
	}
	return "names";
}
