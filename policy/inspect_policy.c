/*
 * The bridge from a compiled policy to the inspection engine: the same detector numbering,
 * action values and validators on both sides (checked here at compile time), so a policy's
 * detectors become an engine and a decision's actions become a profile by copying.
 */
#include <custos/policy.h>

#include "inspect_int.h"

_Static_assert(POLICY_MAX_DETECTORS == INSPECT_MAX_DETECTORS, "detector limits differ");
_Static_assert(POLICY_BUILTIN_DETECTORS == INSPECT_BUILTIN_COUNT, "built-in counts differ");
_Static_assert((int)POLICY_ACT_NONE == (int)INSPECT_ACT_NONE &&
                       (int)POLICY_ACT_LOG == (int)INSPECT_ACT_LOG &&
                       (int)POLICY_ACT_REDACT == (int)INSPECT_ACT_REDACT &&
                       (int)POLICY_ACT_DENY == (int)INSPECT_ACT_DENY,
               "action values differ");
_Static_assert((int)POLICY_VALIDATOR_NONE == (int)INSPECT_VALIDATE_NONE &&
                       (int)POLICY_VALIDATOR_LUHN == (int)INSPECT_VALIDATE_LUHN &&
                       (int)POLICY_VALIDATOR_MOD97 == (int)INSPECT_VALIDATE_MOD97,
               "validator values differ");

custos_err inspect_engine_from_policy(const struct policy *p, inspect_engine **out)
{
	int failed;
	return inspect_engine_from_policy_at(p, out, &failed);
}

custos_err inspect_engine_from_policy_at(const struct policy *p, inspect_engine **out, int *failed)
{
	*out = NULL;
	*failed = -1;
	size_t n = policy_detector_count(p);
	ENSURE(n >= INSPECT_BUILTIN_COUNT && n <= INSPECT_MAX_DETECTORS, CUSTOS_ERR_LIMIT,
	       "inspect: policy has %zu detectors", n);
	inspect_custom_def defs[INSPECT_MAX_CUSTOM];
	inspect_engine_opts o = { .custom = defs };
	for (size_t i = 0; i < n; i++) {
		const policy_detector *d = policy_detector_at(p, i);
		ENSURE(d != NULL, CUSTOS_ERR_INTERNAL, "inspect: policy detector %zu missing", i);
		bool used = d->used_prompt || d->used_response;
		if (i < INSPECT_BUILTIN_COUNT) {
			ENSURE(span_eq_cstr(span_cstr(d->name), det_builtin_names[i]),
			       CUSTOS_ERR_INTERNAL,
			       "inspect: policy built-in %zu is '%s', engine has '%s'", i, d->name,
			       det_builtin_names[i]);
			if (used)
				o.builtins |= UINT64_C(1) << i;
			continue;
		}
		defs[o.n_custom++] =
		        (inspect_custom_def){ .name = d->name,
			                      .patterns = d->patterns,
			                      .n_patterns = d->n_patterns,
			                      .keywords = d->keywords,
			                      .n_keywords = d->n_keywords,
			                      .validator = (inspect_validator)d->validator,
			                      .unused = !used };
	}
	return inspect_engine_new_at(&o, out, failed);
}
