/* The custos command line: one table of commands, each a thin function over module APIs. */
#ifndef CUSTOS_CLI_H
#define CUSTOS_CLI_H

#include <stdbool.h>

#include "custos/audit.h"
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

/* The global --log-level/--log-format flags (cli/main.c). A daemon's config file applies its
 * log: settings only where the command line said nothing: the command line wins. Static. */
typedef struct cli_log_flags {
	bool level_set, format_set; /* the flag was given */
	log_level level;            /* LOG_LVL_INFO unless given */
	log_format format;          /* LOG_FMT_AUTO unless given */
} cli_log_flags;
const cli_log_flags *cli_log_flags_get(void);
/* Whether --log-format json was given: command-line problems (cli_error, a usage line) are
 * then one JSON log line each on stderr, so that a log shipper reads every line custos writes. */
bool cli_stderr_json(void);
/* Reports a command-line problem: "custos: MSG" on stderr, or a JSON log line (cli_stderr_json). */
void cli_error(const char *fmt, ...) CUSTOS_PRINTF(1, 2);
/* A line for stderr (a problem, a failure) written as given ("custos ctl: ..."), or as a JSON
 * log line with --log-format json, where every line custos writes to stderr is JSON. */
void cli_say(const char *fmt, ...) CUSTOS_PRINTF(1, 2);
/* A check's diagnostics on stderr: file:line:col lines, or JSON log lines (cli_stderr_json). */
void cli_diag_print(const diag_list *d);
/* A usage error of one command: "custos <group> <name>: MSG", then its usage line; returns
 * CLI_USAGE. */
int cli_usage_error(const char *group, const char *name, const char *fmt, ...) CUSTOS_PRINTF(3, 4);
/* What getopt_long (opterr 0, optstring starting with ':' after any '+') found wrong in argv
 * when it returned ch ('?' or ':'), in words: "unknown option '--x'", "option '-c' needs a
 * value", "option '--host' takes no value". */
void cli_getopt_problem(int ch, char **argv, char *out, size_t size);
/* The operands of a command that takes no options: exactly n of them (after an optional "--")
 * into ops. A word starting with '-' before any "--" is an unknown option, never a file or a
 * directory name. CLI_OK, or CLI_USAGE after the problem and the usage line are written. */
int cli_operands(const char *group, const char *name, int argc, char **argv, int n, char **ops);

int cmd_version(int argc, char **argv);
int cmd_up(int argc, char **argv);
int cmd_config_check(int argc, char **argv);
int cmd_config_keys(int argc, char **argv);
/* custos config check --host (cli/config_host.c): adds to d what `custos up` would refuse on
 * this host (files it cannot read or write as the user that opens them, modes, directories,
 * proxy.user), at the setting's file:line:col; creates and changes nothing. */
struct custos_config;
void cli_config_host_check(const struct custos_config *cfg, diag_list *d);
/* Reads auth.api_keys_file ("id sha256hex" lines) into o->api_keys after the o->napi_keys
 * already there (o->api_keys holds PROXY_MAX_API_KEYS): what `custos up` loads, and what
 * `config check --host` checks. CUSTOS_ERR_PARSE naming FILE:LINE, _LIMIT past the limit. */
struct proxy_options;
custos_err cli_api_keys_load(const char *path, struct proxy_options *o) CUSTOS_WUR;
/* The policy's declared model isolation against custos.yaml (cli/isolation_check.c): fn gets
 * each finding, error true for a sandboxed model declared above what it runs in (custos up
 * refuses it), false for an unsandboxed one declared above none (custos cannot check it).
 * Returns the number of errors. */
struct cfg_model;
struct policy;
typedef void (*cli_iso_fn)(void *arg, bool error, const struct cfg_model *m, const char *msg);
size_t cli_isolation_check(const struct custos_config *cfg, const struct policy *p, cli_iso_fn fn,
                           void *arg);
/* SSL_CERT_FILE / SSL_CERT_DIR, when set, name an absolute readable file / directories:
 * CUSTOS_OK, or an error whose message `custos up` and `config check --host` both print. */
custos_err cli_trust_env_check(void) CUSTOS_WUR;
int cmd_policy_check(int argc, char **argv);
int cmd_policy_test(int argc, char **argv);
int cmd_policy_explain(int argc, char **argv);
int cmd_ca_init(int argc, char **argv);

/* custos.yaml's audit: section -> audit_options (cli/audit_config.c): the log, its keys and,
 * with with_sinks, every SIEM sink. Strings are borrowed from cfg; out is filled here. */
typedef struct cli_audit_opts {
	audit_options o;
	audit_sink_options sinks[AUDIT_MAX_SINKS];
} cli_audit_opts;
struct custos_config;
custos_err cli_audit_options(const struct custos_config *cfg, bool with_sinks,
                             cli_audit_opts *out) CUSTOS_WUR;

/* custos.yaml -> egress options (cli/egress_config.c); o is initialised here. */
struct egress_options;
struct audit_writer;
struct sandbox;
/* sbx[i]: model i's running sandbox (its listener is made inside), or NULL (host listener). */
/* sbx_fds[cfg model index]: the egress listener the supervisor made inside each sandboxed
 * model's sandbox (taken over: set to -1); sbx_vm: which of them are VMs. */
custos_err cli_egress_options(const struct custos_config *cfg, struct audit_writer *audit,
                              int *sbx_fds, const bool *sbx_vm,
                              struct egress_options *o) CUSTOS_WUR;
struct egress_server;
/* Tells the sandbox-restart hook which egress server to re-listen for (NULL: detach). */
void cli_egress_attach(struct egress_server *eg);
/* A restarted model's sandbox (new netns, new VM channel) got a new egress listener fd
 * (taken over, closed when no listener follows that model). */
custos_err cli_egress_replace(size_t index, int fd) CUSTOS_WUR;
/* A listener for process-sandboxed model m, which a reload added, on fd (taken over, closed on
 * error), with the identity a sandboxed model gets at start; *index: its listener index. */
struct cfg_model;
custos_err cli_egress_add(const struct cfg_model *m, int fd, size_t *index) CUSTOS_WUR;
/* Closes listener index (its sandbox was removed) and forgets it. */
custos_err cli_egress_close(size_t index) CUSTOS_WUR;
/* Highest classification model's sandboxes have read through egress, over all of its
 * listeners (a reload's draining sandbox beside its new one): the admin API's `taint` and the
 * one ingress policy sees. -1: no listener. */
int cli_egress_taint(const char *model);
int cmd_sandbox_exec(int argc, char **argv);
int cmd_vm_run(int argc, char **argv);
/* cli/cmd_vm.c: waits up to timeout_ns for the domain's QEMU (libvirt pidfile in run_dir, NULL =
 * /run/libvirt/qemu) to be running under a seccomp filter; CUSTOS_OK when it is. */
custos_err cli_vm_check_seccomp(const char *run_dir, const char *name,
                                uint64_t timeout_ns) CUSTOS_WUR;
/* cli/vm_up.c: VM-sandboxed models of `custos up` (sandbox.type: vm). */
struct up_vm;
struct cfg_model;
/* Boots model m's VM, checks QEMU's seccomp filter, opens the channel, waits for the model
 * server; a supervisor thread re-does that after each restart. give_up (NULL: never), asked
 * while it waits for the model server, ends that wait early (a reload given up, custos
 * stopping): the VM is stopped, CUSTOS_ERR_CLOSED. *out: caller's (cli_vm_stop). */
custos_err cli_vm_start(const struct custos_config *cfg, const struct cfg_model *m,
                        struct audit_writer *audit, bool (*give_up)(const void *arg),
                        const void *give_up_arg, struct up_vm **out) CUSTOS_WUR;
/* proxy_upstream_opts.connect_fn for a VM model (arg: its up_vm): a stream to the model
 * server's port over the channel; refused while the VM is not routable. */
custos_err cli_vm_connect(void *arg, int *fd) CUSTOS_WUR;
/* A new listener (caller owns *lfd) for the guest's egress streams, for the egress proxy. */
custos_err cli_vm_egress_fd(struct up_vm *u, int *lfd) CUSTOS_WUR;
/* Who gets the new egress listener after the VM's channel came back (fn owns the fd; it
 * runs on the VM's supervisor thread). NULL: nobody (none is made). */
void cli_vm_egress_hook(struct up_vm *u, void (*fn)(void *arg, int fd), void *arg);
/* True while the VM's QEMU is checked and its channel up. */
bool cli_vm_routable(struct up_vm *u);
/* cli/cmd_up.c, supervisor side: sends a finished audit event to the proxy, whose writer
 * records it (or to the supervisor's own writer once the proxy is gone). */
struct audit_event;
void cli_privsep_audit(const struct audit_event *ev);
/* The model id the VM serves. */
const char *cli_vm_model(const struct up_vm *u);
struct admin_vm;
/* The admin API's view of one VM (GET /v1/sandboxes): a snapshot into *out. */
void cli_vm_admin_info(struct up_vm *u, struct admin_vm *out);
/* cli_vm_admin_info for vms[0..n), at most max; returns how many were filled. */
size_t cli_vm_admin_list(struct up_vm *const *vms, size_t n, struct admin_vm *out, size_t max);
/* Stops the supervisor, closes the channel, destroys the domain, frees u (NULL: no-op). */
void cli_vm_stop(struct up_vm *u);
int cmd_audit_keygen(int argc, char **argv);
int cmd_audit_verify(int argc, char **argv);
int cmd_audit_accept_head(int argc, char **argv);
int cmd_audit_export(int argc, char **argv);
int cmd_ctl(int argc, char **argv);

#endif
