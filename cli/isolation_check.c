/*
 * The policy's declared isolation against what custos.yaml runs (docs/POLICY.md "Models and
 * data sources"). Ingress rules compare a model's declared `isolation`; the egress proxy, for a
 * sandboxed model, the running sandbox's. A policy that declares more than custos runs a
 * sandboxed model with would let an ingress rule trust what is not there: refused, at start,
 * at a reload and by `config check --host`. For a model custos does not sandbox (its upstream
 * runs elsewhere) custos cannot know: a declared level above `none` is warned about.
 */
#include <stdio.h>

#include "cli.h"
#include "custos/config.h"
#include "custos/policy.h"

static policy_isolation runs_with(const custos_config *cfg, const cfg_model *m)
{
	if (m->sandbox.type == CFG_SANDBOX_PROCESS)
		return POLICY_ISO_PROCESS;
	if (m->sandbox.type != CFG_SANDBOX_VM)
		return POLICY_ISO_NONE;
	const cfg_profile *pr =
	        m->sandbox.profile ? &cfg->profiles[m->sandbox.profile_index] : NULL;
	return pr && pr->vm.n_hostdev ? POLICY_ISO_VM_DEDICATED_GPU : POLICY_ISO_VM;
}

size_t cli_isolation_check(const custos_config *cfg, const struct policy *p, cli_iso_fn fn,
                           void *arg)
{
	size_t errors = 0;
	char msg[512];

	for (size_t i = 0; p && i < cfg->n_models; i++) {
		const cfg_model *m = &cfg->models[i];
		const policy_model *pm = policy_find_model(p, span_cstr(m->id));
		if (pm == NULL)
			continue;
		policy_isolation runs = runs_with(cfg, m);
		if (pm->isolation <= runs)
			continue;
		if (m->sandbox.type == CFG_SANDBOX_NONE) {
			snprintf(msg, sizeof(msg),
			         "models[%zu] (%s): the policy declares isolation %s, and custos "
			         "does "
			         "not sandbox this model (its upstream runs elsewhere): custos "
			         "cannot "
			         "check the claim, which ingress rules (and egress rules, for its "
			         "calls) trust",
			         i, m->id, policy_isolation_name(pm->isolation));
			fn(arg, false, m, msg);
			continue;
		}
		snprintf(msg, sizeof(msg),
		         "models[%zu] (%s): the policy declares isolation %s, but custos.yaml runs "
		         "it "
		         "in a %s sandbox (isolation %s): an ingress rule would trust isolation it "
		         "does not have; declare %s in the policy, or run the model as declared",
		         i, m->id, policy_isolation_name(pm->isolation),
		         m->sandbox.type == CFG_SANDBOX_VM ? "VM" : "process",
		         policy_isolation_name(runs), policy_isolation_name(runs));
		fn(arg, true, m, msg);
		errors++;
	}
	return errors;
}
