/* custos config check: validate custos.yaml and report every problem (exit 0 ok, 1 errors). */
#include <stdio.h>

#include "cli.h"
#include "custos/config.h"

int cmd_config_check(int argc, char **argv)
{
	custos_config *cfg = NULL;
	diag_list d;

	if (argc != 2) {
		cli_usage("config", "check", false);
		return CLI_USAGE;
	}
	diag_init(&d);
	custos_err e = config_load(argv[1], &cfg, &d);
	diag_print(&d, stderr);
	if (e == CUSTOS_OK && d.errors == 0) {
		printf("%s: ok: %zu listener(s), %zu model(s), %zu sandbox profile(s), "
		       "%zu data source(s), %zu audit sink(s)%s\n",
		       argv[1], cfg->n_listeners, cfg->n_models, cfg->n_profiles,
		       cfg->n_data_sources, cfg->audit.n_sinks,
		       d.warnings ? "; see the warnings above" : "");
		config_free(cfg);
		diag_free(&d);
		return CLI_OK;
	}
	fprintf(stderr, "%s: %zu error(s)\n", argv[1], d.errors ? d.errors : 1);
	config_free(cfg);
	diag_free(&d);
	return CLI_FAIL;
}
