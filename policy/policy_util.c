/* policy helpers: the arena that holds a compiled policy and the string map used for ids. */
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
