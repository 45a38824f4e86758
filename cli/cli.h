/* The custos command line: one table of commands, each a thin function over module APIs. */
#ifndef CUSTOS_CLI_H
#define CUSTOS_CLI_H

#include <stdbool.h>

#include "custos/core.h"

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
int cmd_up(int argc, char **argv);
int cmd_config_check(int argc, char **argv);
int cmd_policy_check(int argc, char **argv);
int cmd_policy_test(int argc, char **argv);
int cmd_policy_explain(int argc, char **argv);
int cmd_ca_init(int argc, char **argv);

/* custos.yaml -> egress options (cli/egress_config.c); o is initialised here. */
struct custos_config;
struct egress_options;
struct audit_writer;
struct sandbox;
/* sbx[i]: model i's running sandbox (its listener is made inside), or NULL (host listener). */
custos_err cli_egress_options(const struct custos_config *cfg, struct audit_writer *audit,
                              struct sandbox *const *sbx, struct egress_options *o) CUSTOS_WUR;
struct egress_server;
/* Tells the sandbox-restart hook which egress server to re-listen for (NULL: detach). */
void cli_egress_attach(struct egress_server *eg);
/* From the sandbox START event: a restarted model's sandbox gets a new egress listener. */
void cli_egress_sandbox_started(const char *model, unsigned generation);
int cmd_sandbox_exec(int argc, char **argv);
int cmd_vm_run(int argc, char **argv);
int cmd_audit_keygen(int argc, char **argv);
int cmd_audit_verify(int argc, char **argv);
int cmd_audit_export(int argc, char **argv);

#endif
