/* custos config check [--host] FILE: validate custos.yaml and report every problem (exit 0 ok, 1
 * errors); --host also finds what `custos up` would refuse on this host (cli/config_host.c).
 * custos config keys: every key the parser knows, one path a line (docs/CONFIG.md). */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "custos/config.h"

int cmd_config_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	custos_config *cfg = NULL;
	bool host = false;
	diag_list d;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		if (ch != 'H') {
			char why[256];
			cli_getopt_problem(ch, argv, why, sizeof(why));
			return cli_usage_error("config", "check", "%s", why);
		}
		host = true;
	}
	if (optind >= argc)
		return cli_usage_error("config", "check", "missing FILE");
	if (optind + 1 != argc)
		return cli_usage_error("config", "check", "unexpected argument '%s'",
		                       argv[optind + 1]);
	const char *path = argv[optind];
	diag_init(&d);
	custos_err e = config_load(path, &cfg, &d);
	if (e == CUSTOS_OK && host)
		cli_config_host_check(cfg, &d);
	cli_diag_print(&d);
	if (e == CUSTOS_OK && d.errors == 0) {
		printf("%s: ok: %zu listener(s), %zu model(s), %zu sandbox profile(s), "
		       "%zu data source(s), %zu audit sink(s)%s%s\n",
		       path, cfg->n_listeners, cfg->n_models, cfg->n_profiles, cfg->n_data_sources,
		       cfg->audit.n_sinks, d.warnings ? "; see the warnings above" : "",
		       host ? "" : " (files not opened: --host checks them on this host)");
		config_free(cfg);
		diag_free(&d);
		return CLI_OK;
	}
	cli_say("%s: %zu error(s)", path, d.errors ? d.errors : 1);
	config_free(cfg);
	diag_free(&d);
	return CLI_FAIL;
}

static void print_key(const char *path, bool refused, void *arg)
{
	(void)arg;
	printf("%s%s\n", path, refused ? "\trefused" : "");
}

int cmd_config_keys(int argc, char **argv)
{
	if (cli_operands("config", "keys", argc, argv, 0, NULL) != CLI_OK)
		return CLI_USAGE;
	config_keys(print_key, NULL);
	return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}
