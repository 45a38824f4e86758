/* custos audit: keygen, verify and export; thin wrappers over the audit module. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "custos/audit.h"

int cmd_audit_keygen(int argc, char **argv)
{
	if (argc != 2)
		return cli_usage("audit", "keygen", false);
	if (audit_keygen(argv[1]) != CUSTOS_OK) {
		fprintf(stderr, "custos: %s\n", err_msg());
		return CLI_FAIL;
	}
	printf("wrote %s/audit.key (0600, keep it for the writer) and %s/audit.pub (for verify)\n",
	       argv[1], argv[1]);
	return CLI_OK;
}

int cmd_audit_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'k' },
		{ "live", no_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pub = NULL;
	bool live = false;
	int c;
	audit_verify_result r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (c == 'k')
			pub = optarg;
		else if (c == 'l')
			live = true;
		else
			return cli_usage("audit", "verify", false);
	}
	if (optind >= argc)
		return cli_usage("audit", "verify", false);
	if (audit_verify((const char *const *)argv + optind, (size_t)(argc - optind), pub, live,
	                 &r) != CUSTOS_OK) {
		fprintf(stderr, "custos: %s\n", err_msg());
		return CLI_FAIL;
	}
	if (!r.ok) {
		printf("FAILED after %llu verified records in %llu files\n",
		       (unsigned long long)r.events, (unsigned long long)r.files);
		printf("first bad record: %s:%llu seq %llu: %s\n", r.bad_file,
		       (unsigned long long)r.bad_line, (unsigned long long)r.bad_seq, r.what);
		return CLI_FAIL;
	}
	printf("OK: %llu records verified (seq %llu..%llu) in %llu files; %llu checkpoints %s",
	       (unsigned long long)r.events, (unsigned long long)r.first_seq,
	       (unsigned long long)r.last_seq, (unsigned long long)r.files,
	       (unsigned long long)r.checkpoints,
	       pub ? "with valid signatures" : "(signatures NOT checked: no --pubkey)");
	if (pub)
		printf(", signed through seq %llu", (unsigned long long)r.signed_seq);
	printf("; %s\n", r.sealed ? "sealed by a shutdown checkpoint"
	                          : (r.torn_tail ? "open (incomplete last record)" : "open"));
	return CLI_OK;
}

int cmd_audit_export(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	audit_format f = AUDIT_FMT_JSON;
	audit_render_ctx ctx;
	char host[256] = "";
	int c, rc = CLI_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (c != 'f' || audit_format_parse(optarg, &f) != CUSTOS_OK) {
			if (c == 'f')
				fprintf(stderr, "custos: %s\n", err_msg());
			return cli_usage("audit", "export", false);
		}
	}
	if (optind >= argc)
		return cli_usage("audit", "export", false);
	memset(&ctx, 0, sizeof(ctx));
	if (gethostname(host, sizeof(host) - 1) == 0)
		ctx.hostname = host;
	for (int i = optind; i < argc && rc == CLI_OK; i++) {
		char **files = NULL;
		size_t nf = 0;
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			if (audit_list_files(argv[i], &files, &nf) != CUSTOS_OK) {
				fprintf(stderr, "custos: %s\n", err_msg());
				rc = CLI_FAIL;
				break;
			}
		} else {
			files = xcalloc(1, sizeof(char *));
			files[0] = xstrdup(argv[i]);
			nf = 1;
		}
		for (size_t j = 0; j < nf && rc == CLI_OK; j++)
			if (audit_export_file(files[j], f, &ctx, stdout) != CUSTOS_OK) {
				fprintf(stderr, "custos: %s\n", err_msg());
				rc = CLI_FAIL;
			}
		audit_paths_free(files, nf);
	}
	if (fflush(stdout) != 0)
		rc = CLI_FAIL;
	return rc;
}
