/* custos ca init DIR: creates the egress interception CA (key 0600, never overwritten). */
#include <stdio.h>

#include "cli.h"
#include "custos/egress.h"

int cmd_ca_init(int argc, char **argv)
{
	char *dir;

	if (cli_operands("ca", "init", argc, argv, 1, &dir) != CLI_OK)
		return CLI_USAGE;
	if (egress_ca_init(dir) != CUSTOS_OK) {
		cli_say("custos ca init: %s", err_msg());
		return CLI_FAIL;
	}
	printf("CA written to %s/ca.key (0600) and %s/ca.crt\n"
	       "Put ca.crt into each sandbox's trust store (see docs/EGRESS.md) and set\n"
	       "egress.ca_dir: %s in custos.yaml.\n",
	       dir, dir, dir);
	return CLI_OK;
}
