/* custos version: our version and revision, and the versions of the libraries linked. */
#include <stdio.h>

#include <hs/hs.h>
#include <libvirt/libvirt.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <seccomp.h>
#include <yaml.h>

#include "cli.h"
#include "custos/lazylib.h"
#include "custos/version.h"

int cmd_version(int argc, char **argv)
{
	const struct scmp_version *sv = seccomp_version();
	unsigned long lv = 0;

	if (cli_operands(NULL, "version", argc, argv, 0, NULL) != CLI_OK)
		return CLI_USAGE;
	/* libvirt and libmicrohttpd are bound on first use (dl/); this command asks for them. */
	bool have_virt = lazylib_libvirt() == CUSTOS_OK && virGetVersion(&lv, NULL, NULL) == 0;
	char virt_err[LAZYLIB_MSG_MAX];
	snprintf(virt_err, sizeof(virt_err), "%s", have_virt ? "" : err_msg());
	bool have_mhd = lazylib_microhttpd() == CUSTOS_OK;
	printf("custos %s (git %s)\n", CUSTOS_VERSION, CUSTOS_GIT_REV);
	printf("  OpenSSL        %s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("  libseccomp     %u.%u.%u\n", sv->major, sv->minor, sv->micro);
	if (have_mhd)
		printf("  libmicrohttpd  %s\n", MHD_get_version());
	else
		printf("  libmicrohttpd  not available: %s\n", err_msg());
	if (have_virt)
		printf("  libvirt        %lu.%lu.%lu\n", lv / 1000000, lv / 1000 % 1000, lv % 1000);
	else
		printf("  libvirt        not available: %s\n", virt_err);
	printf("  libyaml        %s\n", yaml_get_version_string());
	if (lazylib_hyperscan() == CUSTOS_OK)
		printf("  Hyperscan      %s\n", hs_version());
	else
		printf("  Hyperscan      not available: %s\n", err_msg());
	return CLI_OK;
}
