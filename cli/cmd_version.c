/* custos version: our version and revision, and the versions of the libraries linked. */
#include <stdio.h>

#include <libvirt/libvirt.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <seccomp.h>
#include <yaml.h>

#include "cli.h"
#include "custos/version.h"

int cmd_version(int argc, char **argv)
{
	const struct scmp_version *sv = seccomp_version();
	unsigned long lv = 0;

	if (argc > 1) {
		cli_usage(NULL, "version", false);
		return CLI_USAGE;
	}
	if (virGetVersion(&lv, NULL, NULL) == -1)
		lv = 0;
	printf("custos %s (git %s)\n", CUSTOS_VERSION, CUSTOS_GIT_REV);
	printf("  OpenSSL        %s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("  libseccomp     %u.%u.%u\n", sv->major, sv->minor, sv->micro);
	printf("  libmicrohttpd  %s\n", MHD_get_version());
	printf("  libvirt        %lu.%lu.%lu\n", lv / 1000000, lv / 1000 % 1000, lv % 1000);
	printf("  libyaml        %s\n", yaml_get_version_string());
	return CLI_OK;
}
