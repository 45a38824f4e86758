/* libFuzzer target: custos.yaml text through the whole loader (YAML tree, schema, cross-section
 * checks). Any crash, leak or sanitizer report is a bug; errors are the expected outcome. */
#include <stddef.h>
#include <stdint.h>

#include "custos/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	custos_config *cfg = NULL;
	diag_list d;

	diag_init(&d);
	if (config_parse("fuzz.yaml", (const char *)data, size, &cfg, &d) == CUSTOS_OK) {
		/* A valid config must be internally consistent. */
		for (size_t i = 0; i < cfg->n_models; i++) {
			const cfg_model *m = &cfg->models[i];
			if (m->sandbox.type != CFG_SANDBOX_NONE &&
			    m->sandbox.profile_index >= cfg->n_profiles)
				__builtin_trap();
			if (config_find_model(cfg, m->id) == NULL)
				__builtin_trap();
		}
		config_free(cfg);
	}
	diag_free(&d);
	return 0;
}
