/* The custos command line: one table of commands, each a thin function over module APIs. */
#ifndef CUSTOS_CLI_H
#define CUSTOS_CLI_H

#include <stdbool.h>

/* Exit codes (documented in README and custos(8)). */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* A command gets argv with argv[0] = its own name ("check" for "custos config check"). */
typedef int (*cli_fn)(int argc, char **argv);

struct cli_command {
	const char *group; /* "config", "policy", ...; NULL for top-level commands */
	const char *name;
	cli_fn fn;
	const char *usage;   /* arguments after the command name */
	const char *summary; /* one line */
};

/* True when argv holds -h or --help (before a "--"). */
bool cli_wants_help(int argc, char **argv);
/* Prints "usage: custos <group> <name> <usage>" and the summary to stdout (help) or stderr. */
int cli_usage(const char *group, const char *name, bool to_stdout);

int cmd_version(int argc, char **argv);
int cmd_config_check(int argc, char **argv);
int cmd_policy_check(int argc, char **argv);
int cmd_policy_test(int argc, char **argv);
int cmd_policy_explain(int argc, char **argv);
int cmd_sandbox_exec(int argc, char **argv);

#endif
