/*
 * The one place the proxy calls the policy engine: identity facts -> policy_identity,
 * request -> policy_request, decision and obligations -> decide_out. Without a policy file
 * (tests only) every request is allowed, which is logged loudly at startup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/inspect.h"
#include "custos/policy.h"
#include "metrics.h"
#include "proxy_int.h"

_Static_assert(sizeof(((decide_out *)0)->principal) > POLICY_MAX_NAME,
               "a policy principal id must fit a decision's principal whole");

struct decide_policy {
	policy *p;
	inspect_engine *eng; /* compiled with the policy (content inspection) */
	uint64_t eng_id;
};

static atomic_uint_fast64_t decide_eng_seq;

custos_err decide_load(const char *path, struct decide_policy **out)
{
	diag_list d;
	policy *p = NULL;

	*out = NULL;
	diag_init(&d);
	custos_err e = policy_load(path, &p, &d);
	if (e != CUSTOS_OK) {
		/* Name the first problem; all of them go to the log. */
		diag_log(&d);
		e = d.errors ? diag_err(e, &d, "policy") : err_wrap(e, "policy %s", path);
		diag_free(&d);
		return e;
	}
	diag_free(&d);
	inspect_engine *eng = NULL;
	if ((e = inspect_engine_from_policy(p, &eng)) != CUSTOS_OK) {
		policy_unref(p);
		return err_wrap(e, "policy %s: inspection detectors", path);
	}
	struct decide_policy *dp = xcalloc(1, sizeof(*dp));
	dp->p = p;
	dp->eng = eng;
	dp->eng_id = atomic_fetch_add(&decide_eng_seq, 1) + 1;
	*out = dp;
	return CUSTOS_OK;
}

void decide_free(struct decide_policy *dp)
{
	if (dp == NULL)
		return;
	inspect_engine_free(dp->eng);
	policy_unref(dp->p);
	free(dp);
}

struct policy *decide_policy_ref(struct decide_policy *dp)
{
	return dp ? policy_ref(dp->p) : NULL;
}

static void spans_of(char *const *v, size_t n, span *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = span_cstr(v[i]);
}

/* The policy's principal for the identity (NULL: none matches); its name, or the identity's
 * label, goes to out->principal. */
static const policy_principal *principal_of(const policy *p, const ident *id, bool authenticated,
                                            decide_out *out)
{
	span uris[PROXY_MAX_SAN], dns[PROXY_MAX_SAN], emails[PROXY_MAX_SAN],
	        groups[CUSTOS_ARRAY_LEN(id->jwt_groups)];
	spans_of(id->san_uri, id->n_uri, uris);
	spans_of(id->san_dns, id->n_dns, dns);
	spans_of(id->san_email, id->n_email, emails);
	spans_of(id->jwt_groups, id->n_jwt_groups, groups);
	policy_identity pid = {
		.san_uris = uris,
		.n_san_uris = id->n_uri,
		.san_dns = dns,
		.n_san_dns = id->n_dns,
		.san_emails = emails,
		.n_san_emails = id->n_email,
		.subject_cn = span_cstr(id->cn),
		.issuer_dn = span_cstr(id->issuer),
		.has_api_key = id->has_api_key,
		.jwt_iss = span_cstr(id->jwt_iss),
		.jwt_sub = span_cstr(id->jwt_sub),
		.jwt_groups = groups,
		.n_jwt_groups = id->n_jwt_groups,
		/* The bearer credential presented names the principal, or no one: a certificate
		 * that would match cannot stand in for a key or token that failed. */
		.bearer = id->method == IDENT_API_KEY ? POLICY_BEARER_API_KEY
		          : id->method == IDENT_JWT   ? POLICY_BEARER_JWT
		                                      : 0,
	};
	if (id->has_api_key)
		memcpy(pid.api_key_sha256, id->api_key_sha256, 32);
	const policy_principal *pr = NULL;
	if (id->key_principal) /* a key from custos.yaml names its principal directly */
		pr = policy_find_principal(p, span_cstr(id->key_principal));
	if (pr == NULL && authenticated)
		pr = policy_match_principal(p, &pid);
	OPENSSL_cleanse(pid.api_key_sha256, sizeof(pid.api_key_sha256));
	out->principal_known = pr != NULL;
	if (pr != NULL || !authenticated || (id->has_api_key && id->key_principal == NULL)) {
		proxy_ignore(span_copy_cstr(span_cstr(pr ? pr->id : ident_label(id)),
		                            out->principal, sizeof(out->principal)));
	} else {
		/* An identity no policy principal matches is named with its kind, so that a
		 * certificate whose CN is "analytics" is never taken for the principal analytics
		 * (in the trail, the rate limits and the token budgets: the policy refuses
		 * principal ids of these forms). */
		ident_unmatched_label(id, out->principal);
	}
	return pr;
}

/* Without a policy, an identity is known when it was verified: a certificate, a JWT, or an
 * API key that custos.yaml names (a key no one configured is no caller, policy or not). */
static bool no_policy_known(const ident *id)
{
	return !(id->has_api_key && id->key_principal == NULL);
}

void decide_principal(struct decide_policy *dp, const ident *id, decide_out *out)
{
	memset(out, 0, sizeof(*out));
	if (dp == NULL) {
		out->principal_known = no_policy_known(id);
		proxy_ignore(span_copy_cstr(span_cstr(ident_label(id)), out->principal,
		                            sizeof(out->principal)));
		return;
	}
	(void)principal_of(dp->p, id, id->method != IDENT_NONE, out);
}

bool decide_needs_taint(const struct decide_policy *dp)
{
	return dp != NULL && policy_needs_taint(dp->p, POLICY_INGRESS);
}

void decide_eval(struct decide_policy *dp, const decide_in *in, decide_out *out)
{
	const ident *id = in->id;

	memset(out, 0, sizeof(*out));
	if (dp == NULL) {
		out->allow = out->verdict_allow = true;
		out->principal_known = no_policy_known(id);
		out->reason = "no policy configured";
		proxy_ignore(span_copy_cstr(span_cstr(ident_label(id)), out->principal,
		                            sizeof(out->principal)));
		return;
	}
	const policy *p = dp->p;
	const policy_principal *pr = principal_of(p, id, in->authenticated, out);

	policy_request req = {
		.direction = POLICY_INGRESS,
		.principal = pr,
		.model = in->model.len ? policy_find_model(p, in->model) : NULL,
		.method = in->method,
		.path = in->path,
		.body_size = in->body_size,
		.isolation = -1,
		.taint = in->taint > 0 ? (policy_class)in->taint : POLICY_CLASS_PUBLIC,
		.client = in->client,
	};
	policy_decision d;
	policy_evaluate(p, &req, &d);
	metrics_inc(METRICS_POLICY_EVALS);
	out->allow = d.effect == POLICY_ALLOW;
	out->verdict_allow = d.verdict == POLICY_ALLOW;
	out->shadow = d.shadow;
	out->reason = d.reason; /* static or owned by the policy, which the state keeps alive */
	size_t used = 0;
	for (size_t i = 0; i < d.n_rules && used < sizeof(out->rules) - 1; i++) {
		int n = snprintf(out->rules + used, sizeof(out->rules) - used, "%s%s", i ? "," : "",
		                 d.rules[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	if (used >= sizeof(out->rules))
		out->rules[sizeof(out->rules) - 1] = '\0';
	out->max_body = d.limits.max_body_bytes;
	out->max_tokens = d.limits.max_tokens;
	out->rate = d.limits.requests;
	out->rate_ns = d.limits.requests_window_ns;
	out->tokens = d.limits.tokens;
	out->tokens_ns = d.limits.tokens_window_ns;
	_Static_assert(LIMIT_WINDOWS == POLICY_WINDOWS, "limit windows differ");
	memcpy(out->rate_per, d.limits.requests_per, sizeof(out->rate_per));
	memcpy(out->tokens_per, d.limits.tokens_per, sizeof(out->tokens_per));
	out->has_inspect = d.has_inspect && dp->eng != NULL;
	memcpy(out->insp_prompt, d.inspect_prompt, sizeof(out->insp_prompt));
	memcpy(out->insp_response, d.inspect_response, sizeof(out->insp_response));
	out->insp_engine = dp->eng;
	out->insp_engine_id = dp->eng_id;
	out->audit = (uint8_t)d.audit;
	proxy_ignore(span_copy_cstr(span_cstr(policy_hash_hex(p)), out->policy_hash,
	                            sizeof(out->policy_hash)));
}
