/* custos policy check|test|explain: thin wrappers over the policy module. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "custos/policy.h"

static policy *load_or_report(const char *path, diag_list *d, bool engine)
{
	policy *p = NULL;
	custos_err e = engine ? policy_load_check(path, &p, d) : policy_load(path, &p, d);
	cli_diag_print(d);
	if (e != CUSTOS_OK) {
		cli_say("%s: %zu error(s)", path, d->errors ? d->errors : 1);
		if (d->errors == 0)
			cli_say("custos: %s", err_msg());
		return NULL;
	}
	return p;
}

int cmd_policy_check(int argc, char **argv)
{
	diag_list d;
	char *file;
	if (cli_operands("policy", "check", argc, argv, 1, &file) != CLI_OK)
		return CLI_USAGE;
	diag_init(&d);
	policy *p = load_or_report(file, &d, true);
	if (p == NULL) {
		diag_free(&d);
		return CLI_FAIL;
	}
	printf("%s: ok, %zu rules, mode %s, sha256 %s%s\n", file, policy_rule_count(p),
	       policy_get_mode(p) == POLICY_SHADOW ? "shadow" : "enforce", policy_hash_hex(p),
	       d.warnings ? " (with warnings)" : "");
	policy_unref(p);
	diag_free(&d);
	return CLI_OK;
}

int cmd_policy_test(int argc, char **argv)
{
	diag_list d;
	char *files[2];
	if (cli_operands("policy", "test", argc, argv, 2, files) != CLI_OK)
		return CLI_USAGE;
	diag_init(&d);
	policy *p = load_or_report(files[0], &d, false);
	if (p == NULL) {
		diag_free(&d);
		return CLI_FAIL;
	}
	diag_free(&d);
	diag_init(&d);
	policy_test_result res;
	custos_err e = policy_run_tests(p, files[1], stdout, &res, &d);
	cli_diag_print(&d);
	int rc = CLI_OK;
	if (e != CUSTOS_OK) {
		/* the diagnostics above say what is wrong, at their place; a failure that left
		 * none (out of memory) is said here */
		if (d.errors == 0)
			cli_say("%s: %s", files[1], err_msg());
		rc = CLI_FAIL;
	}
	if (e != CUSTOS_OK) /* the file has errors: what ran is not the whole file */
		printf("%zu passed, %zu failed, the test file refused (%zu error(s) above)\n",
		       res.passed, res.failed, d.errors);
	else
		printf("%zu passed, %zu failed\n", res.passed, res.failed);
	if (res.failed)
		rc = CLI_FAIL;
	policy_unref(p);
	diag_free(&d);
	return rc;
}

int cmd_policy_explain(int argc, char **argv)
{
	const char *file = NULL, *request = NULL;
	bool options = true;
	for (int i = 1; i < argc; i++) {
		const char *r = NULL;
		if (options && strcmp(argv[i], "--") == 0) {
			options = false;
			continue;
		}
		if (options && strcmp(argv[i], "--request") == 0) {
			if (i + 1 >= argc)
				return cli_usage_error("policy", "explain",
				                       "option '--request' needs a value");
			r = argv[++i];
		} else if (options && strncmp(argv[i], "--request=", 10) == 0) {
			r = argv[i] + 10;
		} else if (options && argv[i][0] == '-' && argv[i][1] != '\0') {
			return cli_usage_error("policy", "explain", "unknown option '%s'", argv[i]);
		} else if (file == NULL) {
			file = argv[i];
			continue;
		} else {
			return cli_usage_error("policy", "explain", "unexpected argument '%s'",
			                       argv[i]);
		}
		if (request != NULL) /* two contexts: which one was meant is not for us to guess */
			return cli_usage_error("policy", "explain", "--request given twice");
		request = r;
	}
	if (file == NULL)
		return cli_usage_error("policy", "explain", "missing FILE");
	if (request == NULL)
		return cli_usage_error("policy", "explain", "missing --request JSON|@FILE");
	diag_list d;
	diag_init(&d);
	policy *p = load_or_report(file, &d, false);
	if (p == NULL) {
		diag_free(&d);
		return CLI_FAIL;
	}
	diag_free(&d);
	diag_init(&d);
	buf text, out;
	buf_init(&text, 1024 * 1024);
	buf_init(&out, 16 * 1024 * 1024);
	int rc = CLI_FAIL;
	custos_err e;
	if (request[0] == '@')
		e = file_load(request + 1, FILE_ANY, 1024 * 1024, &text);
	else
		e = buf_append_cstr(&text, request);
	if (e != CUSTOS_OK) {
		cli_say("custos: --request: %s", err_msg());
		goto out;
	}
	policy_request req;
	policy_request_doc *keep = NULL;
	/* a request read from a file is placed in that file */
	e = policy_request_parse_named(p, request[0] == '@' ? request + 1 : "<request>",
	                               (const char *)buf_ptr(&text), buf_used(&text), &req, &keep,
	                               &d);
	cli_diag_print(&d);
	if (e != CUSTOS_OK) {
		cli_say("custos: bad --request");
		policy_request_doc_free(keep);
		goto out;
	}
	e = policy_explain(p, &req, &out);
	policy_request_doc_free(keep);
	if (e != CUSTOS_OK) {
		cli_say("custos: %s", err_msg());
		goto out;
	}
	fwrite(buf_ptr(&out), 1, buf_used(&out), stdout);
	rc = CLI_OK;
out:
	buf_free(&text);
	buf_free(&out);
	diag_free(&d);
	policy_unref(p);
	return rc;
}
