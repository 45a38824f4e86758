/* custos ca init DIR: creates the egress interception CA (key 0600, never overwritten). */
#include <stdio.h>

#include "cli.h"
#include "custos/egress.h"

int cmd_ca_init(int argc, char **argv)
{
	if (argc != 2) {
		cli_usage("ca", "init", false);
		return CLI_USAGE;
	}
	if (egress_ca_init(argv[1]) != CUSTOS_OK) {
		fprintf(stderr, "custos ca init: %s\n", err_msg());
		return CLI_FAIL;
	}
	printf("CA written to %s/ca.key (0600) and %s/ca.crt\n"
	       "Put ca.crt into each sandbox's trust store (see docs/EGRESS.md) and set\n"
	       "egress.ca_dir: %s in custos.yaml.\n",
	       argv[1], argv[1], argv[1]);
	return CLI_OK;
}
