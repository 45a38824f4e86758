/* custos config check: validate custos.yaml and report every problem. */
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
		printf("%s: ok%s\n", argv[1], d.warnings ? " (with warnings)" : "");
		config_free(cfg);
		diag_free(&d);
		return CLI_OK;
	}
	fprintf(stderr, "%s: %zu error(s)\n", argv[1], d.errors ? d.errors : 1);
	config_free(cfg);
	diag_free(&d);
	return CLI_FAIL;
}
