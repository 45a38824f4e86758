/* custos sandbox exec: run any command in a sandbox (as bwrap does); its exit status passes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "custos/config.h"
#include "custos/sandbox.h"

static volatile pid_t exec_pid = -1;

static void forward_signal(int sig)
{
	if (exec_pid > 0)
		kill(exec_pid, sig);
}

struct exec_ctx {
	int events_fd;
};

static void on_event(const sandbox_event *ev, void *arg)
{
	struct exec_ctx *c = arg;
	buf b;

	if (c->events_fd >= 0) {
		buf_init(&b, 64 * 1024);
		if (sandbox_event_json(ev, &b) == CUSTOS_OK &&
		    buf_append_byte(&b, '\n') == CUSTOS_OK &&
		    file_write_all(c->events_fd, buf_ptr(&b), buf_used(&b)) != CUSTOS_OK)
			log_warn("sandbox: writing an event: %s", err_msg());
		buf_free(&b);
	}
	switch (ev->kind) {
	case SANDBOX_EV_VIOLATION:
		log_warn("sandbox %s: denied %s (pid %d)%s", ev->name, ev->syscall, (int)ev->pid,
		         ev->killed ? ", sandbox killed" : "");
		break;
	case SANDBOX_EV_OOM:
		log_warn("sandbox %s: out of memory, %llu process(es) killed", ev->name,
		         (unsigned long long)ev->count);
		break;
	case SANDBOX_EV_LIMIT:
		log_info("sandbox %s: %s limit hit %llu time(s)", ev->name, ev->limit,
		         (unsigned long long)ev->count);
		break;
	case SANDBOX_EV_START:
		log_debug("sandbox %s: started pid %d (%s), profile sha256 %s", ev->name,
		          (int)ev->pid, ev->detail ? ev->detail : "", ev->profile_hash);
		break;
	default:
		break;
	}
}

static int parse_u64(const char *opt, const char *v, uint64_t min, uint64_t max, uint64_t *out,
                     bool size)
{
	custos_err e = size ? num_parse_size(span_cstr(v), max, out)
	                    : num_parse_u64(span_cstr(v), min, max, out);
	if (e != CUSTOS_OK) {
		cli_say("custos sandbox exec: %s %s: %s", opt, v, err_msg());
		return -1;
	}
	return 0;
}

/* A list option given more often than the sandbox takes: said, then a usage error. */
static bool too_many(size_t n, size_t max, const char *opt)
{
	if (n < max)
		return false;
	cli_say("custos sandbox exec: more than %zu %s", max, opt);
	return true;
}

enum {
	OPT_RO_BIND = 256,
	OPT_BIND,
	OPT_SETENV,
	OPT_KEEPENV,
	OPT_DEVICE,
	OPT_DEVROOT,
	OPT_SYSROOT,
	OPT_GPU,
	OPT_SCRATCH,
	OPT_MEMORY,
	OPT_PIDS,
	OPT_CPU,
	OPT_NOFILE,
	OPT_TCPBIND,
	OPT_TCPCONN,
	OPT_EVENTS,
	OPT_KILLVIOL,
	OPT_CGROUP,
	OPT_SECCOMP,
	OPT_SYSCALL,
};

int cmd_sandbox_exec(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "profile", required_argument, NULL, 'p' },
		{ "config", required_argument, NULL, 'c' },
		{ "ro-bind", required_argument, NULL, OPT_RO_BIND },
		{ "bind", required_argument, NULL, OPT_BIND },
		{ "setenv", required_argument, NULL, OPT_SETENV },
		{ "keep-env", required_argument, NULL, OPT_KEEPENV },
		{ "device", required_argument, NULL, OPT_DEVICE },
		{ "device-root", required_argument, NULL, OPT_DEVROOT },
		{ "sys-root", required_argument, NULL, OPT_SYSROOT },
		{ "gpu", required_argument, NULL, OPT_GPU },
		{ "scratch", required_argument, NULL, OPT_SCRATCH },
		{ "memory", required_argument, NULL, OPT_MEMORY },
		{ "pids", required_argument, NULL, OPT_PIDS },
		{ "cpu", required_argument, NULL, OPT_CPU },
		{ "nofile", required_argument, NULL, OPT_NOFILE },
		{ "allow-tcp-bind", required_argument, NULL, OPT_TCPBIND },
		{ "allow-tcp-connect", required_argument, NULL, OPT_TCPCONN },
		{ "events", required_argument, NULL, OPT_EVENTS },
		{ "kill-on-violation", no_argument, NULL, OPT_KILLVIOL },
		{ "cgroup", required_argument, NULL, OPT_CGROUP },
		{ "seccomp", required_argument, NULL, OPT_SECCOMP },
		{ "allow-syscall", required_argument, NULL, OPT_SYSCALL },
		{ NULL, 0, NULL, 0 },
	};
	sandbox_profile p;
	sandbox_bind binds[SANDBOX_MAX_BINDS];
	const char *env_set[SANDBOX_MAX_ENV], *env_allow[SANDBOX_MAX_ENV];
	const char *devices[SANDBOX_MAX_DEVICES], *syscalls[SANDBOX_MAX_SYSCALLS];
	uint16_t tcp_bind[SANDBOX_MAX_PORTS], tcp_conn[SANDBOX_MAX_PORTS];
	size_t nb = 0, nset = 0, nallow = 0, ndev = 0, nsys = 0, ntb = 0, ntc = 0;
	const char *profile = "default", *config = NULL, *events = NULL;
	char *splits[SANDBOX_MAX_BINDS];
	size_t nsplits = 0;
	int c, rc = CLI_FAIL;
	uint64_t v;
	custos_config *cfg = NULL;
	bool from_cfg = false;
	sandbox_profile mapped; /* what sandbox_profile_from_cfg allocated, to free */
	struct {
		bool gpu, mem, pids, cpu, nofile, scratch, devroot, sysroot, kill, cg, sc;
		sandbox_gpu gpu_v;
		sandbox_cgroup_mode cg_v;
		sandbox_seccomp sc_v;
		uint64_t mem_v, pids_v, cpu_v, nofile_v;
		const char *scratch_v, *devroot_v, *sysroot_v;
	} o;

	memset(&o, 0, sizeof(o));
	optind = 1;
	while ((c = getopt_long(argc, argv, "+:p:c:", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			profile = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case OPT_RO_BIND:
		case OPT_BIND: {
			if (too_many(nb, SANDBOX_MAX_BINDS, "--bind and --ro-bind"))
				goto out_usage;
			char *s = xstrdup(optarg);
			splits[nsplits++] = s;
			char *colon = strchr(s, ':');
			if (colon)
				*colon = '\0';
			binds[nb++] = (sandbox_bind){ .src = s,
				                      .dst = colon ? colon + 1 : NULL,
				                      .writable = c == OPT_BIND };
			break;
		}
		case OPT_SETENV:
			if (too_many(nset, SANDBOX_MAX_ENV, "--setenv"))
				goto out_usage;
			env_set[nset++] = optarg;
			break;
		case OPT_KEEPENV:
			if (too_many(nallow, SANDBOX_MAX_ENV, "--keep-env"))
				goto out_usage;
			env_allow[nallow++] = optarg;
			break;
		case OPT_DEVICE:
			if (too_many(ndev, SANDBOX_MAX_DEVICES, "--device"))
				goto out_usage;
			devices[ndev++] = optarg;
			break;
		case OPT_SYSCALL:
			if (too_many(nsys, SANDBOX_MAX_SYSCALLS, "--allow-syscall"))
				goto out_usage;
			syscalls[nsys++] = optarg;
			break;
		case OPT_DEVROOT:
			o.devroot = true;
			o.devroot_v = optarg;
			break;
		case OPT_SYSROOT:
			o.sysroot = true;
			o.sysroot_v = optarg;
			break;
		case OPT_SCRATCH:
			o.scratch = true;
			o.scratch_v = optarg;
			break;
		case OPT_GPU:
			o.gpu = true;
			if (strcmp(optarg, "none") == 0)
				o.gpu_v = SANDBOX_GPU_NONE;
			else if (strcmp(optarg, "nvidia") == 0)
				o.gpu_v = SANDBOX_GPU_NVIDIA;
			else if (strcmp(optarg, "amd") == 0)
				o.gpu_v = SANDBOX_GPU_AMD;
			else {
				cli_say("custos sandbox exec: --gpu %s: none, nvidia or amd",
				        optarg);
				goto out_usage;
			}
			break;
		case OPT_CGROUP:
			o.cg = true;
			if (strcmp(optarg, "auto") == 0)
				o.cg_v = SANDBOX_CGROUP_AUTO;
			else if (strcmp(optarg, "required") == 0)
				o.cg_v = SANDBOX_CGROUP_REQUIRED;
			else if (strcmp(optarg, "off") == 0)
				o.cg_v = SANDBOX_CGROUP_OFF;
			else {
				cli_say("custos sandbox exec: --cgroup %s: auto, required or off",
				        optarg);
				goto out_usage;
			}
			break;
		case OPT_SECCOMP:
			o.sc = true;
			if (strcmp(optarg, "default") == 0)
				o.sc_v = SANDBOX_SECCOMP_DEFAULT;
			else if (strcmp(optarg, "gpu") == 0)
				o.sc_v = SANDBOX_SECCOMP_GPU;
			else if (strcmp(optarg, "custom") == 0)
				o.sc_v = SANDBOX_SECCOMP_CUSTOM;
			else {
				cli_say("custos sandbox exec: --seccomp %s: default, gpu or custom",
				        optarg);
				goto out_usage;
			}
			break;
		case OPT_MEMORY:
			if (parse_u64("--memory", optarg, 0, 1ull << 50, &o.mem_v, true))
				goto out_usage;
			o.mem = true;
			break;
		case OPT_PIDS:
			if (parse_u64("--pids", optarg, 0, 1u << 22, &o.pids_v, false))
				goto out_usage;
			o.pids = true;
			break;
		case OPT_CPU:
			if (parse_u64("--cpu", optarg, 0, 1024u * 1000u, &o.cpu_v, false))
				goto out_usage;
			o.cpu = true;
			break;
		case OPT_NOFILE:
			if (parse_u64("--nofile", optarg, 0, 1u << 20, &o.nofile_v, false))
				goto out_usage;
			o.nofile = true;
			break;
		case OPT_TCPBIND:
		case OPT_TCPCONN:
			if (parse_u64(c == OPT_TCPBIND ? "--allow-tcp-bind" : "--allow-tcp-connect",
			              optarg, 1, 65535, &v, false))
				goto out_usage;
			if (c == OPT_TCPBIND &&
			    !too_many(ntb, SANDBOX_MAX_PORTS, "--allow-tcp-bind"))
				tcp_bind[ntb++] = (uint16_t)v;
			else if (c == OPT_TCPCONN &&
			         !too_many(ntc, SANDBOX_MAX_PORTS, "--allow-tcp-connect"))
				tcp_conn[ntc++] = (uint16_t)v;
			else
				goto out_usage;
			break;
		case OPT_EVENTS:
			events = optarg;
			break;
		case OPT_KILLVIOL:
			o.kill = true;
			break;
		default: {
			char why[256];
			cli_getopt_problem(c, argv, why, sizeof(why));
			cli_say("custos sandbox exec: %s", why);
			goto out_usage;
		}
		}
	}
	if (optind >= argc) {
		cli_say("custos sandbox exec: no command given");
		goto out_usage;
	}
	if (config) {
		/* The profile comes from custos.yaml's sandbox_profiles; command-line options
		 * below still override it. */
		diag_list d;
		diag_init(&d);
		custos_err e = config_load(config, &cfg, &d);
		cli_diag_print(&d);
		diag_free(&d);
		if (e != CUSTOS_OK) {
			cli_say("custos sandbox exec: %s: not a valid configuration", config);
			goto out;
		}
		const cfg_profile *cp = config_find_profile(cfg, profile);
		if (cp == NULL) {
			cli_say("custos sandbox exec: %s: no sandbox profile '%s'", config,
			        profile);
			goto out;
		}
		if (sandbox_profile_from_cfg(cp, &p) != CUSTOS_OK) {
			cli_say("custos sandbox exec: %s", err_msg());
			goto out;
		}
		from_cfg = true;
		mapped = p;
	} else if (sandbox_profile_builtin(profile, &p) != CUSTOS_OK) {
		cli_say("custos sandbox exec: %s", err_msg());
		goto out_usage;
	}
	/* Binds and devices from the command line come after the profile's own. */
	if (from_cfg && (p.n_binds || p.n_devices)) {
		for (size_t i = 0; i < p.n_binds && nb < SANDBOX_MAX_BINDS; i++) {
			memmove(binds + 1, binds, nb * sizeof(binds[0]));
			binds[0] = p.binds[p.n_binds - 1 - i];
			nb++;
		}
		for (size_t i = 0; i < p.n_devices && ndev < SANDBOX_MAX_DEVICES; i++)
			devices[ndev++] = p.devices[i];
	}
	p.binds = binds;
	p.n_binds = nb;
	if (nset) {
		/* The profile's own variables first, the command line's override them. */
		const char *all[SANDBOX_MAX_ENV];
		size_t n = 0;
		for (size_t i = 0; i < p.n_env_set && n < SANDBOX_MAX_ENV; i++)
			all[n++] = p.env_set[i];
		for (size_t i = 0; i < nset && n < SANDBOX_MAX_ENV; i++)
			all[n++] = env_set[i];
		memcpy(env_set, all, n * sizeof(all[0]));
		nset = n;
		p.env_set = env_set;
		p.n_env_set = nset;
	}
	if (nallow) {
		for (size_t i = 0; i < p.n_env_allow && nallow < SANDBOX_MAX_ENV; i++)
			env_allow[nallow++] = p.env_allow[i];
		p.env_allow = env_allow;
		p.n_env_allow = nallow;
	}
	if (ndev) {
		p.devices = devices;
		p.n_devices = ndev;
	}
	if (o.gpu) {
		p.gpu = o.gpu_v;
		if (p.gpu != SANDBOX_GPU_NONE && p.seccomp == SANDBOX_SECCOMP_DEFAULT)
			p.seccomp = SANDBOX_SECCOMP_GPU;
	}
	if (o.sc)
		p.seccomp = o.sc_v;
	if (nsys) {
		p.seccomp = SANDBOX_SECCOMP_CUSTOM;
		p.syscalls = syscalls;
		p.n_syscalls = nsys;
	}
	if (o.cg)
		p.cgroup = o.cg_v;
	if (o.devroot)
		p.device_root = o.devroot_v;
	if (o.sysroot)
		p.sys_root = o.sysroot_v;
	if (o.scratch)
		p.scratch_dir = o.scratch_v;
	if (o.mem)
		p.limits.memory_bytes = o.mem_v;
	if (o.pids)
		p.limits.pids = o.pids_v;
	if (o.cpu)
		p.limits.cpu_millis = (uint32_t)o.cpu_v;
	if (o.nofile)
		p.limits.nofile = o.nofile_v;
	if (o.kill)
		p.seccomp_kill_on_violation = true;
	if (ntb || ntc) {
		p.restrict_tcp = true;
		p.tcp_bind = tcp_bind;
		p.n_tcp_bind = ntb;
		p.tcp_connect = tcp_conn;
		p.n_tcp_connect = ntc;
	}

	struct exec_ctx ctx = { .events_fd = -1 };
	if (events) {
		ctx.events_fd = open(events, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (ctx.events_fd == -1) {
			cli_say("custos sandbox exec: %s: %s", events, strerror(errno));
			goto out;
		}
	}
	sandbox_opts so;
	sandbox_opts_init(&so);
	so.on_event = on_event;
	so.arg = &ctx;
	so.stop_grace_ms = 2000;
	/* The hash is seen only in the events file and the debug log: without either, no
	 * OpenSSL initialisation on this path. */
	so.no_profile_hash = ctx.events_fd < 0 && log_get_level() < LOG_LVL_DEBUG;
	/* This process ends right after the command: its status is the answer, the init's
	 * teardown need not be waited for. */
	so.leave_init = true;
	so.no_start_barrier = true; /* START only goes to the events file */

	sandbox *sb = NULL;
	struct sigaction sa, old[3];
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(sigs); i++)
		sigaction(sigs[i], &sa, &old[i]);
	if (sandbox_spawn(&p, (const char *const *)(argv + optind), &so, &sb) != CUSTOS_OK) {
		cli_say("custos sandbox exec: %s", err_msg());
	} else {
		int st = 0;
		exec_pid = sandbox_pid(sb);
		if (sandbox_wait(sb, &st) != CUSTOS_OK)
			cli_say("custos sandbox exec: %s", err_msg());
		else if (WIFEXITED(st))
			rc = WEXITSTATUS(st);
		else if (WIFSIGNALED(st))
			rc = 128 + WTERMSIG(st);
		exec_pid = -1;
		sandbox_free(sb);
	}
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(sigs); i++)
		sigaction(sigs[i], &old[i], NULL);
	if (ctx.events_fd >= 0)
		close(ctx.events_fd);
out:
	if (from_cfg)
		sandbox_profile_cfg_free(&mapped);
	config_free(cfg);
	for (size_t i = 0; i < nsplits; i++)
		free(splits[i]);
	return rc;
out_usage:
	if (from_cfg)
		sandbox_profile_cfg_free(&mapped);
	config_free(cfg);
	for (size_t i = 0; i < nsplits; i++)
		free(splits[i]);
	cli_usage("sandbox", "exec", false);
	return CLI_USAGE;
}
