/*
 * Request-rate token buckets and token budgets per principal, shared by all workers: a hash
 * table split into mutex-protected stripes (contention stays per principal). Fixed windows
 * for token budgets (charged after the response, from `usage`), a continuously refilled
 * bucket for requests; one of each per window (second, minute, hour, day), every limit the
 * policy sets applies. Survives reloads (it lives in the server, not the state).
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "custos/policy.h"
#include "proxy_int.h"

_Static_assert(LIMIT_WINDOWS == POLICY_WINDOWS, "limit windows differ");

#define LIMIT_STRIPES  64
#define LIMIT_BUCKETS  256 /* per stripe */
#define LIMIT_MAX_KEYS 100000
#define LIMIT_KEY_MAX  PROXY_PRINCIPAL_MAX

struct lentry {
	struct lentry *next;
	char key[LIMIT_KEY_MAX];
	/* per window (a second, a minute, an hour, a day): */
	double tokens[LIMIT_WINDOWS]; /* request bucket */
	uint64_t last[LIMIT_WINDOWS]; /* its last refill, mono ns; 0: never used (full) */
	uint64_t win_start[LIMIT_WINDOWS];
	uint64_t used[LIMIT_WINDOWS]; /* tokens charged in the current window */
	bool win_open[LIMIT_WINDOWS];
};

struct stripe {
	pthread_mutex_t mu;
	struct lentry *b[LIMIT_BUCKETS];
	size_t n;
};

struct limiter {
	struct stripe s[LIMIT_STRIPES];
};

custos_err limiter_new(struct limiter **out)
{
	struct limiter *l = calloc(1, sizeof(*l));
	ENSURE(l, CUSTOS_ERR_NOMEM, "limiter: out of memory");
	for (size_t i = 0; i < LIMIT_STRIPES; i++)
		pthread_mutex_init(&l->s[i].mu, NULL);
	*out = l;
	return CUSTOS_OK;
}

void limiter_free(struct limiter *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < LIMIT_STRIPES; i++) {
		for (size_t j = 0; j < LIMIT_BUCKETS; j++) {
			for (struct lentry *e = l->s[i].b[j], *n; e; e = n) {
				n = e->next;
				free(e);
			}
		}
		pthread_mutex_destroy(&l->s[i].mu);
	}
	free(l);
}

static uint64_t hash_key(const char *k)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *k; k++)
		h = (h ^ (uint8_t)*k) * 1099511628211ull;
	return h;
}

/* The entry for key, created when absent (NULL past LIMIT_MAX_KEYS); stripe locked. */
static struct lentry *lookup(struct stripe *s, uint64_t h, const char *key)
{
	size_t bi = (size_t)(h >> 8) % LIMIT_BUCKETS;
	for (struct lentry *e = s->b[bi]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e;
	if (s->n >= LIMIT_MAX_KEYS / LIMIT_STRIPES)
		return NULL;
	struct lentry *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	if (span_copy_cstr(span_cstr(key), e->key, sizeof(e->key)) != CUSTOS_OK) {
		free(e);
		return NULL;
	}
	e->next = s->b[bi];
	s->b[bi] = e;
	s->n++;
	return e;
}

/* Starts a new budget window w when the current one is over (or none was open). */
static void window_roll(struct lentry *e, size_t w, uint64_t now)
{
	if (!e->win_open[w] || now - e->win_start[w] >= policy_window_ns[w]) {
		e->win_open[w] = true;
		e->win_start[w] = now;
		e->used[w] = 0;
	}
}

limit_result limiter_check(struct limiter *l, const char *key, const uint64_t rate[LIMIT_WINDOWS],
                           const uint64_t tokens[LIMIT_WINDOWS], uint64_t now, uint64_t *retry_ns)
{
	uint64_t h = hash_key(key);
	struct stripe *s = &l->s[h % LIMIT_STRIPES];
	limit_result res = LIMIT_OK;

	*retry_ns = 0;
	pthread_mutex_lock(&s->mu);
	struct lentry *e = lookup(s, h, key);
	if (e == NULL) {
		res = LIMIT_RATE;          /* fail closed when the table is full */
		*retry_ns = 1000000000ull; /* a second */
		goto out;
	}
	/* Budgets first: a spent one refuses until its window ends (the latest end wins). */
	for (size_t w = 0; w < LIMIT_WINDOWS; w++) {
		if (tokens[w] == 0)
			continue;
		window_roll(e, w, now);
		if (e->used[w] >= tokens[w]) {
			uint64_t wait = e->win_start[w] + policy_window_ns[w] - now;
			res = LIMIT_TOKENS;
			if (wait > *retry_ns)
				*retry_ns = wait;
		}
	}
	if (res != LIMIT_OK)
		goto out;
	/* Every bucket must hold a request; only then is one taken from each. */
	for (size_t w = 0; w < LIMIT_WINDOWS; w++) {
		if (rate[w] == 0)
			continue;
		double cap = (double)rate[w], ns = (double)policy_window_ns[w];
		if (e->last[w] == 0)
			e->tokens[w] = cap; /* first use: a full bucket */
		else
			e->tokens[w] += (double)(now - e->last[w]) * cap / ns;
		if (e->tokens[w] > cap)
			e->tokens[w] = cap;
		e->last[w] = now ? now : 1;
		if (e->tokens[w] < 1.0) {
			/* until the bucket holds one request again */
			uint64_t wait = (uint64_t)((1.0 - e->tokens[w]) * ns / cap) + 1;
			res = LIMIT_RATE;
			if (wait > *retry_ns)
				*retry_ns = wait;
		}
	}
	if (res != LIMIT_OK)
		goto out;
	for (size_t w = 0; w < LIMIT_WINDOWS; w++)
		if (rate[w])
			e->tokens[w] -= 1.0;
out:
	pthread_mutex_unlock(&s->mu);
	return res;
}

void limiter_charge(struct limiter *l, const char *key, uint64_t used,
                    const uint64_t tokens[LIMIT_WINDOWS], uint64_t now)
{
	uint64_t h = hash_key(key);
	struct stripe *s = &l->s[h % LIMIT_STRIPES];

	pthread_mutex_lock(&s->mu);
	struct lentry *e = lookup(s, h, key);
	if (e) {
		for (size_t w = 0; w < LIMIT_WINDOWS; w++) {
			if (tokens[w] == 0)
				continue;
			window_roll(e, w, now);
			e->used[w] += used;
		}
	}
	pthread_mutex_unlock(&s->mu);
}
