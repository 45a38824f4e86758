/* custos audit: keygen, verify and export; thin wrappers over the audit module. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "custos/audit.h"

int cmd_audit_keygen(int argc, char **argv)
{
	char *dir;

	if (cli_operands("audit", "keygen", argc, argv, 1, &dir) != CLI_OK)
		return CLI_USAGE;
	if (audit_keygen(dir) != CUSTOS_OK) {
		cli_say("custos: %s", err_msg());
		return CLI_FAIL;
	}
	printf("wrote %s/audit.key (0600, keep it for the writer) and %s/audit.pub (for verify)\n",
	       dir, dir);
	return CLI_OK;
}

/* getopt_long that also takes options after operands (verify DIR --live): returns the next
 * option as getopt does ('?' or ':' for a problem, cli_getopt_problem), 1 with *operand set for
 * an operand, -1 at the end. After "--" everything is an operand. */
static int next_arg(int argc, char **argv, const struct option *opts, bool *operands_only,
                    char **operand)
{
	if (!*operands_only) {
		int c = getopt_long(argc, argv, "+:", opts, NULL);
		if (c != -1)
			return c;
		if (optind > 1 && strcmp(argv[optind - 1], "--") == 0)
			*operands_only = true;
	}
	if (optind >= argc)
		return -1;
	*operand = argv[optind++];
	return 1;
}

static void print_keys(const audit_verify_result *r)
{
	for (size_t i = 0; i < r->n_keys; i++) {
		const audit_verify_key *k = &r->keys[i];
		if (k->checkpoints == 0)
			printf("  key %s (%s): signed no checkpoint\n", k->key_id, k->file);
		else
			printf("  key %s (%s): %llu checkpoints, signed heads seq %llu..%llu\n",
			       k->key_id, k->file, (unsigned long long)k->checkpoints,
			       (unsigned long long)k->first_seq, (unsigned long long)k->last_seq);
	}
}

int cmd_audit_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'k' },
		{ "live", no_argument, NULL, 'l' },
		{ "head", required_argument, NULL, 'H' },
		{ "no-head", no_argument, NULL, 'N' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pubs[AUDIT_VERIFY_MAX_KEYS];
	const char **paths = NULL;
	size_t npub = 0, npaths = 0;
	bool operands_only = false;
	char *operand = NULL;
	int c, rc = CLI_USAGE;
	audit_verify_options vo;
	audit_verify_result r;

	char why[256] = "";

	memset(&vo, 0, sizeof(vo));
	paths = xcalloc((size_t)argc, sizeof(char *));
	optind = 1;
	while ((c = next_arg(argc, argv, opts, &operands_only, &operand)) != -1) {
		if (c == 1)
			paths[npaths++] = operand;
		else if (c == 'k' && npub < AUDIT_VERIFY_MAX_KEYS)
			pubs[npub++] = optarg;
		else if (c == 'k')
			snprintf(why, sizeof(why),
			         "more than %d --pubkey (a keyring file holds several)",
			         AUDIT_VERIFY_MAX_KEYS);
		else if (c == 'l')
			vo.live = true;
		else if (c == 'H' && vo.head == NULL)
			vo.head = optarg;
		else if (c == 'H')
			snprintf(why, sizeof(why), "--head given twice");
		else if (c == 'N')
			vo.no_head = true;
		else
			cli_getopt_problem(c, argv, why, sizeof(why));
		if (why[0])
			goto out;
	}
	if (npaths == 0) {
		snprintf(why, sizeof(why), "missing PATH");
		goto out;
	}
	rc = CLI_FAIL;
	vo.pubkeys = pubs;
	vo.npub = npub;
	if (audit_verify(paths, npaths, &vo, &r) != CUSTOS_OK) {
		cli_say("custos: %s", err_msg());
		goto out;
	}
	if (!r.ok) {
		printf("FAILED after %llu verified records in %llu files\n",
		       (unsigned long long)r.events, (unsigned long long)r.files);
		if (r.bad_line == 0) /* not at a record: a damaged anchor, no files */
			printf("problem: %s: %s\n", r.bad_file, r.what);
		else
			printf("first bad record: %s:%llu seq %llu: %s\n", r.bad_file,
			       (unsigned long long)r.bad_line, (unsigned long long)r.bad_seq,
			       r.what);
		print_keys(&r);
		goto out;
	}
	printf("OK: %llu records verified (seq %llu..%llu) in %llu files; %llu checkpoints %s",
	       (unsigned long long)r.events, (unsigned long long)r.first_seq,
	       (unsigned long long)r.last_seq, (unsigned long long)r.files,
	       (unsigned long long)r.checkpoints,
	       npub ? "with valid signatures" : "(signatures NOT checked: no --pubkey)");
	if (npub && r.v1_checkpoints)
		printf(" (%llu in the old format 1, signing the head only)",
		       (unsigned long long)r.v1_checkpoints);
	if (npub)
		printf(", signed through seq %llu", (unsigned long long)r.signed_seq);
	if (npub && !r.sealed && r.last_seq > r.signed_seq)
		/* --live: an open end; whoever can write the directory can cut or rewrite it */
		printf(" (%llu records after it are not covered by a signature)",
		       (unsigned long long)(r.last_seq - r.signed_seq));
	printf("; %s", r.sealed ? "sealed by a shutdown checkpoint"
	                        : (r.torn_tail ? "open (incomplete last record)" : "open"));
	if (r.heads > 0)
		printf("; reaches audit.head (seq %llu)\n", (unsigned long long)r.head_seq);
	else
		printf("; no audit.head checked\n");
	print_keys(&r);
	rc = CLI_OK;
out:
	free(paths);
	if (rc == CLI_USAGE)
		return cli_usage_error("audit", "verify", "%s", why);
	return rc;
}

int cmd_audit_accept_head(int argc, char **argv)
{
	char report[2048];
	char *dir;

	if (cli_operands("audit", "accept-head", argc, argv, 1, &dir) != CLI_OK)
		return CLI_USAGE;
	if (audit_accept_head(dir, report, sizeof(report)) != CUSTOS_OK) {
		cli_say("custos: %s", err_msg());
		return CLI_FAIL;
	}
	printf("%s\n", report);
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

	char **paths = xcalloc((size_t)argc, sizeof(char *));
	size_t npaths = 0;
	bool operands_only = false;
	char *operand = NULL;
	optind = 1;
	while ((c = next_arg(argc, argv, opts, &operands_only, &operand)) != -1) {
		if (c == 1) {
			paths[npaths++] = operand;
			continue;
		}
		if (c != 'f' || audit_format_parse(optarg, &f) != CUSTOS_OK) {
			char why[256];
			if (c == 'f')
				snprintf(why, sizeof(why), "--format: %s", err_msg());
			else
				cli_getopt_problem(c, argv, why, sizeof(why));
			free(paths);
			return cli_usage_error("audit", "export", "%s", why);
		}
	}
	if (npaths == 0) {
		free(paths);
		return cli_usage_error("audit", "export", "missing PATH");
	}
	memset(&ctx, 0, sizeof(ctx));
	if (gethostname(host, sizeof(host) - 1) == 0)
		ctx.hostname = host;
	for (size_t i = 0; i < npaths && rc == CLI_OK; i++) {
		char **files = NULL;
		size_t nf = 0;
		struct stat st;
		if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			if (audit_list_files(paths[i], &files, &nf) != CUSTOS_OK) {
				cli_say("custos: %s", err_msg());
				rc = CLI_FAIL;
				break;
			}
			if (nf == 0) { /* a wrong directory is not an empty trail: as verify */
				cli_say("custos: %s: no audit files found", paths[i]);
				audit_paths_free(files, nf);
				rc = CLI_FAIL;
				break;
			}
		} else {
			files = xcalloc(1, sizeof(char *));
			files[0] = xstrdup(paths[i]);
			nf = 1;
		}
		for (size_t j = 0; j < nf && rc == CLI_OK; j++)
			if (audit_export_file(files[j], f, &ctx, stdout) != CUSTOS_OK) {
				cli_say("custos: %s", err_msg());
				rc = CLI_FAIL;
			}
		audit_paths_free(files, nf);
	}
	if (fflush(stdout) != 0)
		rc = CLI_FAIL;
	free(paths);
	return rc;
}
