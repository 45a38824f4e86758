/*
 * custos.yaml's sandbox_profiles.<id> (include/custos/config.h) mapped onto a sandbox_profile,
 * the one mapping behind `custos up` and `custos sandbox exec -c`, so that a profile tried
 * with exec runs the same under up. What the entry leaves unset keeps the built-in profile's
 * value (memory, CPU, the scratch at /tmp). The sandbox API itself stays config-free.
 */
#include <stdlib.h>
#include <string.h>

#include "custos/config.h"
#include "sb_int.h"

custos_err sandbox_profile_from_cfg(const struct cfg_profile *cp, sandbox_profile *p)
{
	ENSURE(cp != NULL && cp->id != NULL, CUSTOS_ERR_INVAL, "sandbox: no profile");
	GUARD(sandbox_profile_builtin(cp->gpu == CFG_GPU_NVIDIA ? "gpu-nvidia"
	                              : cp->gpu == CFG_GPU_AMD  ? "gpu-amd"
	                                                        : "default",
	                              p));
	p->name = cp->id;
	/* The CFG_NS_* and SANDBOX_NS_* bits are the same; keep them from drifting apart. */
	_Static_assert((unsigned)CFG_NS_USER == (unsigned)SANDBOX_NS_USER &&
	                       (unsigned)CFG_NS_CGROUP == (unsigned)SANDBOX_NS_CGROUP &&
	                       (unsigned)CFG_NS_NET == (unsigned)SANDBOX_NS_NET &&
	                       (unsigned)CFG_NS_ALL == (unsigned)SANDBOX_NS_ALL,
	               "namespace bits differ");
	p->namespaces = cp->namespaces ? cp->namespaces : SANDBOX_NS_ALL;
	p->gpu = cp->gpu == CFG_GPU_NVIDIA ? SANDBOX_GPU_NVIDIA
	         : cp->gpu == CFG_GPU_AMD  ? SANDBOX_GPU_AMD
	                                   : SANDBOX_GPU_NONE;
	p->seccomp = cp->seccomp.base == CFG_SECCOMP_GPU || p->gpu != SANDBOX_GPU_NONE
	                     ? SANDBOX_SECCOMP_GPU
	                     : SANDBOX_SECCOMP_DEFAULT;
	if (cp->seccomp.n_allow) {
		/* custom = the default base plus these; a gpu base keeps its ioctl via gpu. */
		p->seccomp = SANDBOX_SECCOMP_CUSTOM;
		p->syscalls = (const char *const *)cp->seccomp.allow;
		p->n_syscalls = cp->seccomp.n_allow;
	}
	p->deny_syscalls = (const char *const *)cp->seccomp.deny;
	p->n_deny_syscalls = cp->seccomp.n_deny;
	p->sys_ro = p->sys_ro || cp->sysfs;
	p->landlock = cp->landlock;
	if (cp->scratch.type == CFG_SCRATCH_DIR)
		p->scratch_dir = cp->scratch.path; /* at the built-in scratch_target, /tmp */
	if (cp->scratch.size)
		p->limits.scratch_bytes = cp->scratch.size;
	/* 0 (unset): the built-in profile's 1 GiB and 1 CPU (16 GiB and 4 with a GPU) */
	if (cp->limits.memory)
		p->limits.memory_bytes = cp->limits.memory;
	p->limits.swap_bytes = cp->limits.swap;
	if (cp->limits.pids)
		p->limits.pids = cp->limits.pids;
	ENSURE(cp->limits.cpu_milli <= 1024u * 1000u, CUSTOS_ERR_LIMIT,
	       "sandbox profile '%s': cpu beyond 1024 CPUs", cp->id);
	if (cp->limits.cpu_milli)
		p->limits.cpu_millis = (uint32_t)cp->limits.cpu_milli;
	if (cp->limits.nofile)
		p->limits.nofile = cp->limits.nofile;
	/* Exactly the profile's env_allow (docs/CONFIG.md: default none), not the built-in
	 * profiles' LANG, LC_ALL, TZ and TERM. */
	p->env_allow = (const char *const *)cp->env_allow;
	p->n_env_allow = cp->n_env_allow;
	ENSURE(cp->n_binds <= SANDBOX_MAX_BINDS && cp->n_devices <= SANDBOX_MAX_DEVICES,
	       CUSTOS_ERR_LIMIT, "sandbox profile '%s': too many binds or devices", cp->id);
	if (cp->n_binds) {
		sandbox_bind *b = xcalloc(cp->n_binds, sizeof(*b));
		for (size_t i = 0; i < cp->n_binds; i++)
			b[i] = (sandbox_bind){ .src = cp->binds[i].src,
				               .dst = cp->binds[i].dst,
				               .writable = cp->binds[i].rw };
		p->binds = b;
		p->n_binds = cp->n_binds;
	}
	if (cp->n_devices) {
		const char **d = xcalloc(cp->n_devices, sizeof(*d));
		for (size_t i = 0; i < cp->n_devices; i++) {
			const char *n = cp->devices[i];
			d[i] = strncmp(n, "/dev/", 5) == 0 ? n + 5 : n;
		}
		p->devices = d;
		p->n_devices = cp->n_devices;
	}
	custos_err e = sandbox_profile_validate(p);
	if (e != CUSTOS_OK)
		sandbox_profile_cfg_free(p);
	return e;
}

void sandbox_profile_cfg_free(sandbox_profile *p)
{
	if (p == NULL)
		return;
	free((void *)p->binds);
	free((void *)p->devices);
	p->binds = NULL;
	p->n_binds = 0;
	p->devices = NULL;
	p->n_devices = 0;
}
