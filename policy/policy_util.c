/* policy helpers: the arena that holds a compiled policy, the string map used for ids, and the
 * URL splitter every policy URL goes through. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

struct arena_chunk {
	arena_chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK (64u * 1024)

void *arena_alloc(arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	arena_chunk *c = a->head;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
		c = xcalloc(1, sizeof(*c) + cap);
		c->cap = cap;
		a->total += sizeof(*c) + cap;
		if (n > ARENA_CHUNK / 4 && a->head != NULL) {
			/* a big block gets its own chunk behind the current one */
			c->next = a->head->next;
			a->head->next = c;
			c->used = n;
			return c->data;
		}
		c->next = a->head;
		a->head = c;
	}
	void *p = c->data + c->used;
	c->used += n;
	return p;
}

char *arena_strdup(arena *a, const char *s, size_t len)
{
	char *p = arena_alloc(a, len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

void arena_free(arena *a)
{
	arena_chunk *c = a->head;
	while (c) {
		arena_chunk *n = c->next;
		free(c);
		c = n;
	}
	a->head = NULL;
	a->total = 0;
}

uint64_t pmap_hash_more(uint64_t h, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

uint64_t pmap_hash(const char *s, size_t len)
{
	return pmap_hash_more(PMAP_HASH_INIT, s, len);
}

static void pmap_grow(pmap *m, arena *a)
{
	size_t ncap = m->cap ? m->cap * 2 : 16;
	pmap_ent *ne = arena_alloc(a, ncap * sizeof(*ne));
	for (size_t i = 0; i < m->cap; i++) {
		if (m->ents[i].str == NULL)
			continue;
		size_t j = m->ents[i].h & (ncap - 1);
		while (ne[j].str)
			j = (j + 1) & (ncap - 1);
		ne[j] = m->ents[i];
	}
	m->ents = ne;
	m->cap = ncap;
}

bool pmap_put(pmap *m, arena *a, const char *key, size_t len, uint32_t val, uint32_t *existing)
{
	uint64_t h = pmap_hash(key, len);
	uint32_t old;
	if (pmap_get_h(m, h, key, len, &old)) {
		if (existing)
			*existing = old;
		return false;
	}
	if ((m->n + 1) * 2 > m->cap)
		pmap_grow(m, a);
	size_t j = h & (m->cap - 1);
	while (m->ents[j].str)
		j = (j + 1) & (m->cap - 1);
	m->ents[j] = (pmap_ent){ .str = key, .len = (uint32_t)len, .val = val, .h = h };
	m->n++;
	return true;
}

bool pmap_get_h(const pmap *m, uint64_t h, const char *want, size_t len, uint32_t *val)
{
	if (m->cap == 0)
		return false;
	size_t j = h & (m->cap - 1);
	for (;;) {
		const pmap_ent *e = &m->ents[j];
		if (e->str == NULL)
			return false;
		if (e->h == h && e->len == len && memcmp(e->str, want, len) == 0) {
			*val = e->val;
			return true;
		}
		j = (j + 1) & (m->cap - 1);
	}
}

static bool url_hex(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

bool policy_url_split(span url, policy_url *out, const char **why)
{
	const char *u = url.ptr, *end = url.ptr + url.len;
	const char *sep = url.len >= 3 ? memmem(u, url.len, "://", 3) : NULL;

	memset(out, 0, sizeof(*out));
	if (sep == NULL || sep == u) {
		*why = sep ? "missing scheme" : "missing '://'";
		return false;
	}
	out->scheme = span_of(u, (size_t)(sep - u));
	const char *h = sep + 3, *ae = h;
	while (ae < end && *ae != '/' && *ae != '?' && *ae != '#')
		ae++;
	if (memchr(h, '@', (size_t)(ae - h))) {
		*why = "no user info allowed";
		return false;
	}
	const char *colon = NULL;
	if (h < ae && *h == '[') {
		const char *rb = memchr(h, ']', (size_t)(ae - h));
		if (rb == NULL) {
			*why = "unterminated IPv6 literal";
			return false;
		}
		bool hexcolon = rb > h + 1;
		for (const char *q = h + 1; q < rb && hexcolon; q++)
			hexcolon = url_hex(*q) || *q == ':' || *q == '.'; /* no zone id */
		if (!hexcolon || memchr(h + 1, ':', (size_t)(rb - h - 1)) == NULL) {
			*why = "bad IPv6 literal";
			return false;
		}
		if (rb + 1 < ae && rb[1] != ':') {
			*why = "junk after IPv6 literal";
			return false;
		}
		colon = rb + 1 < ae ? rb + 1 : NULL;
		out->host = span_of(h, (size_t)(rb + 1 - h));
	} else {
		colon = memchr(h, ':', (size_t)(ae - h));
		out->host = span_of(h, (size_t)((colon ? colon : ae) - h));
	}
	if (out->host.len == 0) {
		*why = "empty host";
		return false;
	}
	for (size_t i = 0; i < out->host.len; i++)
		if (out->host.ptr[i] == '%' &&
		    (i + 2 >= out->host.len || !url_hex(out->host.ptr[i + 1]) ||
		     !url_hex(out->host.ptr[i + 2]))) {
			*why = "bad percent-encoding in host";
			return false;
		}
	if (colon) {
		uint64_t pv;
		if (num_parse_u64(span_of(colon + 1, (size_t)(ae - colon - 1)), 1, 65535, &pv) !=
		    CUSTOS_OK) {
			*why = "port not a number in 1..65535";
			return false;
		}
		out->port = (uint16_t)pv;
	}
	out->rest = span_of(ae, (size_t)(end - ae));
	const char *pe = ae;
	while (pe < end && *pe != '?' && *pe != '#')
		pe++;
	out->path = span_of(ae, (size_t)(pe - ae));
	return true;
}

bool phost_v6_canon(span host, char out[PHOST_V6_MAX])
{
	char in[PHOST_V6_MAX], txt[INET6_ADDRSTRLEN];
	struct in6_addr a;
	span h = host;

	if (h.len >= 2 && h.ptr[0] == '[' && h.ptr[h.len - 1] == ']')
		h = span_of(h.ptr + 1, h.len - 2);
	if (h.len == 0 || h.len >= sizeof(in) || memchr(h.ptr, ':', h.len) == NULL)
		return false;
	memcpy(in, h.ptr, h.len);
	in[h.len] = '\0';
	if (inet_pton(AF_INET6, in, &a) != 1 || inet_ntop(AF_INET6, &a, txt, sizeof(txt)) == NULL)
		return false;
	snprintf(out, PHOST_V6_MAX, "[%s]", txt);
	return true;
}
