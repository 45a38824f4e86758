/*
 * Request-rate token buckets and token budgets per principal, shared by all workers: a hash
 * table split into mutex-protected stripes (contention stays per principal). Fixed windows
 * for token budgets (charged after the response, from `usage`), a continuously refilled
 * bucket for requests. Survives reloads (it lives in the server, not the state).
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_int.h"

#define LIMIT_STRIPES  64
#define LIMIT_BUCKETS  256 /* per stripe */
#define LIMIT_MAX_KEYS 100000
#define LIMIT_KEY_MAX  PROXY_PRINCIPAL_MAX

struct lentry {
	struct lentry *next;
	char key[LIMIT_KEY_MAX];
	double tokens; /* request bucket */
	uint64_t last; /* last refill, mono ns */
	uint64_t win_start;
	uint64_t used; /* tokens charged in the current window */
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
static struct lentry *lookup(struct stripe *s, uint64_t h, const char *key, uint64_t rate,
                             uint64_t now)
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
	e->tokens = (double)rate;
	e->last = now;
	e->win_start = now;
	e->next = s->b[bi];
	s->b[bi] = e;
	s->n++;
	return e;
}

limit_result limiter_check(struct limiter *l, const char *key, uint64_t rate, uint64_t rate_ns,
                           uint64_t tokens, uint64_t tokens_ns, uint64_t now, uint64_t *retry_ns)
{
	uint64_t h = hash_key(key);
	struct stripe *s = &l->s[h % LIMIT_STRIPES];
	limit_result res = LIMIT_OK;

	*retry_ns = 0;
	pthread_mutex_lock(&s->mu);
	struct lentry *e = lookup(s, h, key, rate, now);
	if (e == NULL) {
		res = LIMIT_RATE;          /* fail closed when the table is full */
		*retry_ns = 1000000000ull; /* a second */
		goto out;
	}
	if (tokens && tokens_ns) {
		if (now - e->win_start >= tokens_ns) {
			e->win_start = now;
			e->used = 0;
		}
		if (e->used >= tokens) {
			res = LIMIT_TOKENS;
			*retry_ns = e->win_start + tokens_ns - now; /* the window's end */
			goto out;
		}
	}
	if (rate && rate_ns) {
		double refill = (double)(now - e->last) * (double)rate / (double)rate_ns;
		e->tokens += refill;
		if (e->tokens > (double)rate)
			e->tokens = (double)rate;
		e->last = now;
		if (e->tokens < 1.0) {
			res = LIMIT_RATE;
			/* until the bucket holds one request again */
			*retry_ns =
			        (uint64_t)((1.0 - e->tokens) * (double)rate_ns / (double)rate) + 1;
			goto out;
		}
		e->tokens -= 1.0;
	}
out:
	pthread_mutex_unlock(&s->mu);
	return res;
}

void limiter_charge(struct limiter *l, const char *key, uint64_t tokens, uint64_t tokens_ns,
                    uint64_t now)
{
	uint64_t h = hash_key(key);
	struct stripe *s = &l->s[h % LIMIT_STRIPES];

	pthread_mutex_lock(&s->mu);
	struct lentry *e = lookup(s, h, key, 0, now);
	if (e) {
		if (tokens_ns && now - e->win_start >= tokens_ns) {
			e->win_start = now;
			e->used = 0;
		}
		e->used += tokens;
	}
	pthread_mutex_unlock(&s->mu);
}
