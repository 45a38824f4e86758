/*
 * policy store: the policy in force, swapped atomically on reload. Readers take a reference
 * under a mutex held for a pointer load and an atomic increment; compilation and freeing
 * happen outside it, so a reload never makes an evaluation wait for more than that.
 */
#include <pthread.h>
#include <stdlib.h>

#include "policy_int.h"

struct policy_store {
	pthread_mutex_t mu;
	policy *cur;
	_Atomic uint64_t generation;
};

custos_err policy_store_new(policy *initial, policy_store **out)
{
	policy_store *s = calloc(1, sizeof(*s));
	ENSURE(s != NULL, CUSTOS_ERR_NOMEM, "policy store: out of memory");
	int rc = pthread_mutex_init(&s->mu, NULL);
	if (rc != 0) {
		free(s);
		return err_set(CUSTOS_ERR_SYS, "policy store: pthread_mutex_init: %d", rc);
	}
	s->cur = initial;
	atomic_init(&s->generation, 1);
	*out = s;
	return CUSTOS_OK;
}

void policy_store_free(policy_store *s)
{
	if (s == NULL)
		return;
	policy_unref(s->cur);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

policy *policy_store_get(policy_store *s)
{
	pthread_mutex_lock(&s->mu);
	policy *p = policy_ref(s->cur);
	pthread_mutex_unlock(&s->mu);
	return p;
}

uint64_t policy_store_generation(const policy_store *s)
{
	return atomic_load_explicit(&((policy_store *)s)->generation, memory_order_acquire);
}

void policy_store_swap(policy_store *s, policy *next)
{
	pthread_mutex_lock(&s->mu);
	policy *old = s->cur;
	s->cur = next;
	atomic_fetch_add_explicit(&s->generation, 1, memory_order_release);
	pthread_mutex_unlock(&s->mu);
	policy_unref(old); /* frees outside the lock if it was the last reference */
}

custos_err policy_store_reload(policy_store *s, const char *path, diag_list *d)
{
	policy *next = NULL;
	custos_err e = policy_load(path, &next, d);
	if (e != CUSTOS_OK)
		return err_wrap(e, "reload refused, the policy in force stays");
	policy_store_swap(s, next);
	return CUSTOS_OK;
}
