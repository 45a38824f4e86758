/*
 * custos.yaml loader. (Placeholder structure: the full schema is filled in by the config
 * work; this version validates the top-level sections so the CLI and tests link.)
 */
#include <stdlib.h>

#include "custos/config.h"

struct custos_config {
	ydoc doc;
};

static const char *const top_keys[] = { "version", "log",    "listeners",    "tls",
	                                "auth",    "models", "data_sources", "egress",
	                                "audit",   "admin",  "policy" };

custos_err config_load(const char *path, custos_config **out, diag_list *d)
{
	custos_config *cfg = xcalloc(1, sizeof(*cfg));

	*out = NULL;
	if (ydoc_load(&cfg->doc, path, 4u << 20, d) != CUSTOS_OK) {
		config_free(cfg);
		return CUSTOS_ERR_PARSE;
	}
	if (cfg->doc.root && ydoc_expect(&cfg->doc, cfg->doc.root, YDOC_MAP, "the file", d))
		ydoc_check_keys(&cfg->doc, cfg->doc.root, top_keys, CUSTOS_ARRAY_LEN(top_keys), d);
	if (d->errors) {
		config_free(cfg);
		return CUSTOS_ERR_INVAL;
	}
	*out = cfg;
	return CUSTOS_OK;
}

void config_free(custos_config *cfg)
{
	if (cfg == NULL)
		return;
	ydoc_free(&cfg->doc);
	free(cfg);
}
