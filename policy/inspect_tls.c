/* Per-thread scratch for the proxies' scans: one Hyperscan scratch per engine a thread uses,
 * remade when a request comes with another engine (after a reload). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "custos/core.h"
#include "custos/inspect.h"

/* Two slots: the ingress and the egress engines may be used by one thread (their ids come
 * from different spaces); a third engine (a reload) takes the least recently used slot. */
#define TLS_SLOTS 2

struct tls_slot {
	inspect_scratch *s;
	uint64_t eng_id;
	uint64_t used; /* the thread's use counter at its last use */
};

struct tls_cache {
	struct tls_slot slot[TLS_SLOTS];
	uint64_t uses;
};

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static bool tls_key_ok;

static void tls_destroy(void *p)
{
	struct tls_cache *c = p;
	for (size_t i = 0; i < TLS_SLOTS; i++)
		inspect_scratch_free(c->slot[i].s);
	free(c);
}

static void tls_init(void)
{
	tls_key_ok = pthread_key_create(&tls_key, tls_destroy) == 0;
}

custos_err inspect_thread_scratch(const inspect_engine *e, uint64_t eng_id, inspect_scratch **out)
{
	ENSURE(pthread_once(&tls_once, tls_init) == 0 && tls_key_ok, CUSTOS_ERR_INTERNAL,
	       "inspect: no thread key for scratch");
	struct tls_cache *c = pthread_getspecific(tls_key);
	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		if (pthread_setspecific(tls_key, c) != 0) {
			free(c);
			return err_set(CUSTOS_ERR_INTERNAL, "inspect: cannot keep scratch");
		}
	}
	struct tls_slot *victim = &c->slot[0];
	for (size_t i = 0; i < TLS_SLOTS; i++) {
		struct tls_slot *sl = &c->slot[i];
		if (sl->s != NULL && sl->eng_id == eng_id) {
			sl->used = ++c->uses;
			*out = sl->s;
			return CUSTOS_OK;
		}
		if (sl->s == NULL || (victim->s != NULL && sl->used < victim->used))
			victim = sl;
	}
	inspect_scratch_free(victim->s);
	memset(victim, 0, sizeof(*victim));
	GUARD(inspect_scratch_new(e, &victim->s));
	victim->eng_id = eng_id;
	victim->used = ++c->uses;
	*out = victim->s;
	return CUSTOS_OK;
}
