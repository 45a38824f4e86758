/*
 * Content inspection of egress responses: data a source returns to the sandbox goes through
 * the same engine and streaming inspector as model responses (ingress_inspect.c), when the
 * rule that allowed the request asks for it (inspect: response:). The engine is compiled from
 * the egress policy on first need and again after a reload brings another policy; requests
 * hold a reference to the engine they started with. docs/EGRESS.md "Content inspection".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/inspect.h"
#include "custos/policy.h"
#include "egress_int.h"
#include "ingress_inspect.h"

struct eeng {
	inspect_engine *eng;
	policy *p; /* the policy it was compiled from (a reference: the pointer stays unique) */
	uint64_t id;
	atomic_uint refs;
};

/* Engine ids for the per-thread scratch: a space of their own (decide.c counts from 1). */
static atomic_uint_fast64_t eeng_seq;

void egress_eng_unref(struct eeng *e)
{
	if (e == NULL || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	inspect_engine_free(e->eng);
	policy_unref(e->p);
	free(e);
}

/* The engine of p with one reference for the caller; NULL (err_msg set) when it cannot be
 * compiled. Compiles under the server's lock, once per policy. */
static struct eeng *eng_get(egress_server *s, policy *p)
{
	struct eeng *e = NULL;

	pthread_mutex_lock(&s->eng_lock);
	if (s->eng_cur == NULL || s->eng_cur->p != p) {
		inspect_engine *ie = NULL;
		if (inspect_engine_from_policy(p, &ie) != CUSTOS_OK) {
			pthread_mutex_unlock(&s->eng_lock);
			return NULL;
		}
		e = xcalloc(1, sizeof(*e));
		e->eng = ie;
		e->p = policy_ref(p);
		e->id = (1ull << 63) | (atomic_fetch_add(&eeng_seq, 1) + 1);
		atomic_init(&e->refs, 1); /* the server's */
		egress_eng_unref(s->eng_cur);
		s->eng_cur = e;
	}
	e = s->eng_cur;
	atomic_fetch_add(&e->refs, 1);
	pthread_mutex_unlock(&s->eng_lock);
	return e;
}

bool egress_inspect_wanted(const policy_decision *d)
{
	if (d->shadow || !d->has_inspect)
		return false;
	for (size_t i = 0; i < POLICY_MAX_DETECTORS; i++)
		if (d->inspect_response[i])
			return true;
	return false;
}

bool egress_inspect_decide(egress_server *s, policy *p, const policy_decision *d, erec *r,
                           bool tunnel)
{
	if (!egress_inspect_wanted(d))
		return false;
	if (tunnel) {
		snprintf(r->reason, sizeof(r->reason),
		         "policy: the rule asks for response inspection, which needs TLS "
		         "interception (intercept: true on data source %s)",
		         r->source ? r->source : "?");
		return true;
	}
	struct eeng *e = eng_get(s, p);
	if (e == NULL) {
		log_error("egress: inspection engine: %s", err_msg());
		snprintf(r->reason, sizeof(r->reason), "content inspection unavailable");
		r->decision = "error";
		return true;
	}
	egress_eng_unref(r->eng); /* a second decision on the same request (not expected) */
	r->eng = e;
	memcpy(r->insp_response, d->inspect_response, sizeof(r->insp_response));
	return false;
}

int egress_inspect_open(erec *r)
{
	if (r->eng == NULL)
		return 0;
	if (r->ip == NULL) {
		decide_out dec;
		const char *why = NULL;
		buf none;
		memset(&dec, 0, sizeof(dec));
		dec.has_inspect = true;
		memcpy(dec.insp_response, r->insp_response, sizeof(dec.insp_response));
		dec.insp_engine = r->eng->eng;
		dec.insp_engine_id = r->eng->id;
		buf_init(&none, 1);
		/* Request bodies are not inspected on egress: an empty body opens response state
		 * only. */
		unsigned st = ingress_inspect_request(&r->ip, &dec, false, NULL, &none, &why);
		buf_free(&none);
		if (st != 0 || r->ip == NULL)
			return -1;
		ingress_inspect_response_raw(r->ip);
	}
	return 1;
}

void egress_inspect_release(erec *r)
{
	ingress_inspect_free(r->ip);
	r->ip = NULL;
	egress_eng_unref(r->eng);
	r->eng = NULL;
}

void egress_eng_drop(egress_server *s)
{
	egress_eng_unref(s->eng_cur);
	s->eng_cur = NULL;
}
