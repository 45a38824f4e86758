/*
 * custos main: global options, then dispatch through one command table. Commands hold no
 * logic beyond argument handling; everything they do lives in a module tests can reach.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "custos/config.h"
#include "custos/core.h"
#include "custos/sandbox.h"

static const struct cli_command commands[] = {
	{ NULL, "version", cmd_version, "", "print versions of custos and its libraries" },
	{ NULL, "up", cmd_up, "-c FILE",
	  "run the proxy configured in custos.yaml in the foreground (SIGHUP reloads)" },
	{ "config", "check", cmd_config_check, "[--host] FILE",
	  "validate custos.yaml; print every error as file:line:col (--host: also what up would "
	  "refuse on this host: files, modes, directories, proxy.user)" },
	{ "config", "keys", cmd_config_keys, "",
	  "list every key custos.yaml may have, one path a line (docs/CONFIG.md)" },
	{ "policy", "check", cmd_policy_check, "FILE",
	  "validate policy.yaml: errors and warnings as file:line:col" },
	{ "policy", "test", cmd_policy_test, "FILE TESTS.yaml",
	  "run policy test cases; a line per failing case, then 'N passed, M failed'" },
	{ "policy", "explain", cmd_policy_explain, "FILE --request JSON|@FILE",
	  "show the decision for a request and why each rule matched or not" },
	{ "ca", "init", cmd_ca_init, "DIR",
	  "create the egress interception CA in DIR (ca.key 0600, ca.crt for sandboxes)" },
	{ "sandbox", "exec", cmd_sandbox_exec,
	  "[--profile NAME] [-c FILE] [OPTIONS] -- CMD ARGS...",
	  "run a command in a process sandbox; its exit status passes through (docs/SANDBOX.md)" },
	{ "vm", "run", cmd_vm_run, "[OPTIONS]",
	  "boot a model-server VM (libvirt), check QEMU's seccomp, bridge its channel" },
	{ "audit", "keygen", cmd_audit_keygen, "DIR",
	  "create the Ed25519 key pair that signs audit checkpoints (DIR/audit.key, audit.pub)" },
	{ "audit", "verify", cmd_audit_verify,
	  "[--pubkey FILE]... [--live] [--no-head] [--head FILE] PATH...",
	  "check the audit chain, signatures (--pubkey per key or keyring) and that it reaches "
	  "audit.head" },
	{ "audit", "accept-head", cmd_audit_accept_head, "DIR",
	  "accept a log head below its last recorded checkpoint or a sink cursor (then start)" },
	{ "audit", "export", cmd_audit_export, "[--format json|cef|leef|rfc5424] PATH...",
	  "render audit log files for a SIEM, one event per line (--format: json by default)" },
	{ NULL, "ctl", cmd_ctl, "[OPTIONS] CMD",
	  "admin API client (--socket PATH | --url URL --token-file F [--insecure-remote] "
	  "[--cacert F] [--cert F --key F]) [--timeout SECONDS]; URL: http://HOST:PORT "
	  "(loopback) or https://HOST:PORT (admin.tls); CMD: "
	  "health, ready, "
	  "metrics, policy [show|reload], decide JSON|@FILE, "
	  "sandboxes, restart ID, audit-status (docs/ADMIN.md)" },
};

bool cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

/* The global log flags as given; `up` lets them win over custos.yaml's log: section. */
static cli_log_flags log_flags = { .level = LOG_LVL_INFO, .format = LOG_FMT_AUTO };

const cli_log_flags *cli_log_flags_get(void)
{
	return &log_flags;
}

bool cli_stderr_json(void)
{
	return log_flags.format_set && log_flags.format == LOG_FMT_JSON;
}

/* One problem line on stderr: a JSON log line with --log-format json, else text after
 * prefix. */
static void say(const char *prefix, const char *fmt, va_list ap) CUSTOS_PRINTF(2, 0);
static void say(const char *prefix, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (cli_stderr_json())
		log_error("%s", msg);
	else
		fprintf(stderr, "%s%s\n", prefix, msg);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say("custos: ", fmt, ap);
	va_end(ap);
}

void cli_say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say("", fmt, ap);
	va_end(ap);
}

void cli_diag_print(const diag_list *d)
{
	if (cli_stderr_json())
		diag_log(d);
	else
		diag_print(d, stderr);
}

int cli_usage_error(const char *group, const char *name, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_say("custos %s%s%s: %s", group ? group : "", group ? " " : "", name, msg);
	return cli_usage(group, name, false);
}

void cli_getopt_problem(int ch, char **argv, char *out, size_t size)
{
	/* getopt_long has moved optind past the word it refused, but for an unknown letter in
	 * the middle of a cluster (-xv), where optopt names it. */
	const char *word = optind > 0 ? argv[optind - 1] : "";
	bool is_long = strncmp(word, "--", 2) == 0;
	size_t wl = strcspn(word, "=");

	if (ch == ':')
		snprintf(out, size, "option '%s' needs a value", word);
	else if (is_long && optopt != 0 && word[wl] == '=')
		snprintf(out, size, "option '%.*s' takes no value", (int)wl, word);
	else if (is_long)
		snprintf(out, size, "unknown option '%.*s'", (int)wl, word);
	else
		snprintf(out, size, "unknown option '-%c'", optopt ? optopt : '?');
}

int cli_operands(const char *group, const char *name, int argc, char **argv, int n, char **ops)
{
	int got = 0;
	bool options = true;

	for (int i = 1; i < argc; i++) {
		if (options && strcmp(argv[i], "--") == 0) {
			options = false;
			continue;
		}
		if (options && argv[i][0] == '-' && argv[i][1] != '\0')
			return cli_usage_error(group, name, "unknown option '%s'", argv[i]);
		if (got == n)
			return cli_usage_error(group, name, "unexpected argument '%s'", argv[i]);
		ops[got++] = argv[i];
	}
	if (got < n)
		return cli_usage_error(group, name, "missing argument (%d expected, %d given)", n,
		                       got);
	return CLI_OK;
}

int cli_usage(const char *group, const char *name, bool to_stdout)
{
	FILE *f = to_stdout ? stdout : stderr;

	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(commands); i++) {
		const struct cli_command *c = &commands[i];
		if (strcmp(c->name, name) != 0 || (group == NULL) != (c->group == NULL) ||
		    (group && strcmp(group, c->group) != 0))
			continue;
		const char *sp = c->usage[0] ? " " : "";
		if (!to_stdout && cli_stderr_json())
			log_error("usage: custos %s%s%s%s%s (%s)", c->group ? c->group : "",
			          c->group ? " " : "", c->name, sp, c->usage, c->summary);
		else
			fprintf(f, "usage: custos %s%s%s%s%s\n  %s\n", c->group ? c->group : "",
			        c->group ? " " : "", c->name, sp, c->usage, c->summary);
		return to_stdout ? CLI_OK : CLI_USAGE;
	}
	return CLI_USAGE;
}

#define GLOBAL_USAGE "usage: custos [--log-level LEVEL] [--log-format text|json] COMMAND [ARGS]"

/* The help on stdout; on stderr (a usage error) one JSON log line instead with --log-format
 * json. */
static void print_help(FILE *f)
{
	if (f == stderr && cli_stderr_json()) {
		log_error(GLOBAL_USAGE " ('custos --help' lists the commands)");
		return;
	}
	fprintf(f, "usage: custos [--log-level LEVEL] [--log-format text|json] COMMAND [ARGS]\n"
	           "\n"
	           "custos: a security and governance enforcement proxy for AI data access.\n"
	           "\n"
	           "commands:\n");
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(commands); i++) {
		const struct cli_command *c = &commands[i];
		char left[160];
		snprintf(left, sizeof(left), "%s%s%s %s", c->group ? c->group : "",
		         c->group ? " " : "", c->name, c->usage);
		if (strlen(left) <= 34)
			fprintf(f, "  %-34s %s\n", left, c->summary);
		else
			fprintf(f, "  %s\n  %-34s %s\n", left, "", c->summary);
	}
	fprintf(f, "\n'custos COMMAND --help' describes one command.\n"
	           "exit status: 0 ok, 1 failure or check failed, 2 usage error\n");
}

static void print_group_help(FILE *f, const char *group)
{
	if (f == stderr && cli_stderr_json()) {
		log_error("usage: custos %s SUBCOMMAND [ARGS] ('custos %s --help' lists them)",
		          group, group);
		return;
	}
	fprintf(f, "usage: custos %s SUBCOMMAND [ARGS]\n\nsubcommands:\n", group);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(commands); i++) {
		const struct cli_command *c = &commands[i];
		if (c->group && strcmp(c->group, group) == 0)
			fprintf(f, "  %s%s%s\n      %s\n", c->name, c->usage[0] ? " " : "",
			        c->usage, c->summary);
	}
}

static bool is_group(const char *s)
{
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(commands); i++)
		if (commands[i].group && strcmp(commands[i].group, s) == 0)
			return true;
	return false;
}

/* What was written to stdout must have reached it: a full disk or a closed pipe under a
 * command that printed its answer is a failure (exit 1), not a success with the answer lost.
 * A reader that went away (EPIPE: `custos config keys | head -1`) is not told about. */
static int stdout_done(int rc)
{
	bool flushed = fflush(stdout) == 0;
	int err = errno;

	if (flushed && !ferror(stdout))
		return rc;
	if (!flushed && err != EPIPE)
		cli_error("standard output: %s", strerror(err));
	else if (flushed)
		cli_error("standard output: a write failed");
	return rc == CLI_OK ? CLI_FAIL : rc;
}

static int run(int argc, char **argv);

int main(int argc, char **argv)
{
	return stdout_done(run(argc, argv));
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	cli_log_flags *lf = &log_flags;
	char bad[512] = ""; /* the first problem, reported once the format is known */
	bool help = false;
	int c;

	signal(SIGPIPE, SIG_IGN);
	/* config check refuses at its position a system call name the sandbox would refuse */
	config_set_syscall_check(sandbox_syscall_known);
	/* '+' stops at the first non-option: the command's own options are its business. ':' and
	 * opterr 0: getopt reports nothing itself, so that --log-format json (wherever it stands)
	 * decides how the problem is written. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (log_level_parse(span_cstr(optarg), &lf->level) != CUSTOS_OK) {
				if (!bad[0])
					snprintf(bad, sizeof(bad), "%s", err_msg());
				break;
			}
			lf->level_set = true;
			break;
		case 'f':
			if (strcmp(optarg, "text") == 0) {
				lf->format = LOG_FMT_TEXT;
			} else if (strcmp(optarg, "json") == 0) {
				lf->format = LOG_FMT_JSON;
			} else {
				if (!bad[0])
					snprintf(bad, sizeof(bad),
					         "--log-format must be text or json, not '%s'",
					         optarg);
				break;
			}
			lf->format_set = true;
			break;
		case 'h':
			help = true;
			break;
		case ':':
			if (!bad[0])
				snprintf(bad, sizeof(bad), "option '%s' needs a value",
				         argv[optind - 1]);
			break;
		default:
			if (bad[0])
				break;
			if (optopt) /* a short option; 0 for a long one, then it is the last word */
				snprintf(bad, sizeof(bad), "unknown option '-%c'", optopt);
			else
				snprintf(bad, sizeof(bad), "unknown option '%s'", argv[optind - 1]);
			break;
		}
	}
	log_setup(lf->level, lf->format);
	/* The commands' own getopt loops stay silent too: each says what is wrong itself
	 * (cli_getopt_problem), in the format --log-format asks for. */
	opterr = 0;
	if (bad[0]) {
		cli_error("%s", bad);
		print_help(stderr);
		return CLI_USAGE;
	}
	if (help) {
		print_help(stdout);
		return CLI_OK;
	}
	if (optind >= argc) {
		print_help(stderr);
		return CLI_USAGE;
	}

	const char *first = argv[optind];
	const char *group = NULL;
	int cmd_at = optind;
	if (strcmp(first, "help") == 0) {
		if (optind + 1 < argc) {
			cli_error(
			        "help takes no argument ('custos %s --help' describes one command)",
			        argv[optind + 1]);
			print_help(stderr);
			return CLI_USAGE;
		}
		print_help(stdout);
		return CLI_OK;
	}
	if (is_group(first)) {
		group = first;
		cmd_at = optind + 1;
		if (cmd_at >= argc || strcmp(argv[cmd_at], "--help") == 0 ||
		    strcmp(argv[cmd_at], "-h") == 0) {
			print_group_help(cmd_at >= argc ? stderr : stdout, group);
			return cmd_at >= argc ? CLI_USAGE : CLI_OK;
		}
	}
	const char *name = argv[cmd_at];
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(commands); i++) {
		const struct cli_command *cmd = &commands[i];
		if (strcmp(cmd->name, name) != 0 || (group == NULL) != (cmd->group == NULL) ||
		    (group && strcmp(group, cmd->group) != 0))
			continue;
		int sub_argc = argc - cmd_at;
		char **sub_argv = argv + cmd_at;
		if (cli_wants_help(sub_argc, sub_argv))
			return cli_usage(group, name, true);
		return cmd->fn(sub_argc, sub_argv);
	}
	cli_error("unknown command '%s%s%s'", group ? group : "", group ? " " : "", name);
	if (group)
		print_group_help(stderr, group);
	else
		print_help(stderr);
	return CLI_USAGE;
}
