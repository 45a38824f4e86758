/*
 * cgroup v1 backend: one child per controller hierarchy (memory, pids, cpu), each under the
 * path /proc/self/cgroup gives for that controller (custos may already sit in a memory cgroup).
 * memory.limit_in_bytes (+ memsw for swap, + kmem.tcp for socket buffers), pids.max,
 * cpu.cfs_quota_us; no cgroup.kill on v1,
 * so stopping kills the pid namespace's init and sweeps cgroup.procs. Counters:
 * memory.oom_control (oom_kill), memory.failcnt, pids.events (max), cpu.stat (nr_throttled).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sb_int.h"

custos_err sb_cg_dir(const char *mnt, const char *root, const char *path, const char *leaf,
                     char **out);

static const char *const ctrls[SB_CG_V1_CTRLS] = { "memory", "pids", "cpu" };

custos_err sb_cgv1_plan(const sandbox_profile *p, const sb_cg_host *h, const char *id,
                        sb_cgroup *cg)
{
	char mnt[1024], root[1024], path[2048];
	custos_err e = CUSTOS_OK;
	const sandbox_limits *l = &p->limits;

	for (int i = 0; i < SB_CG_V1_CTRLS; i++) {
		if ((i == 0 && !l->memory_bytes) || (i == 1 && !l->pids) ||
		    (i == 2 && !l->cpu_millis))
			continue;
		if ((e = sb_cg_find_mount(h, "cgroup", ctrls[i], mnt, sizeof(mnt), root,
		                          sizeof(root))) != CUSTOS_OK ||
		    (e = sb_cg_self_path(h, ctrls[i], path, sizeof(path))) != CUSTOS_OK ||
		    (e = sb_cg_dir(mnt, root, path, id, &cg->v1dir[i])) != CUSTOS_OK)
			goto fail;
		/* Whether the directory can be made, without making it yet (sb_cgv1_make). */
		char *slash = strrchr(cg->v1dir[i], '/');
		if (slash == NULL || slash == cg->v1dir[i]) {
			e = err_set(CUSTOS_ERR_INVAL, "cgroup v1: bad directory %s", cg->v1dir[i]);
			goto fail;
		}
		*slash = '\0';
		int ok = access(cg->v1dir[i], W_OK | X_OK);
		*slash = '/';
		if (ok == -1) {
			e = err_sys("cgroup v1: %s cannot be created", cg->v1dir[i]);
			goto fail;
		}
		cg->backend = SB_CG_V1;
	}
	if (cg->backend != SB_CG_V1)
		return err_set(CUSTOS_ERR_UNSUPPORTED, "cgroup v1: no limits to apply");
	cg->v1_pending = true;
	return CUSTOS_OK;
fail:
	sb_cgroup_destroy(cg);
	return e;
}

custos_err sb_cgv1_make(const sandbox_limits *l, sb_cgroup *cg)
{
	char v[64];
	custos_err e = CUSTOS_OK;

	if (!cg->v1_pending)
		return CUSTOS_OK;
	cg->v1_pending = false;
	for (int i = 0; i < SB_CG_V1_CTRLS; i++) {
		if (!cg->v1dir[i])
			continue;
		char *slash = strrchr(cg->v1dir[i], '/'); /* checked by sb_cgv1_plan */
		*slash = '\0';
		sb_cgroup_gc(cg->v1dir[i]);
		*slash = '/';
		if (mkdir(cg->v1dir[i], 0755) == -1) {
			e = err_sys("cgroup v1: mkdir %s", cg->v1dir[i]);
			free(cg->v1dir[i]);
			cg->v1dir[i] = NULL;
			goto fail;
		}
	}
	if (cg->v1dir[0]) {
		const char *d = cg->v1dir[0];
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->memory_bytes);
		if ((e = sb_cg_write(d, "memory.limit_in_bytes", v)) != CUSTOS_OK)
			goto fail;
		char sw[SANDBOX_PATH_MAX + 48];
		snprintf(sw, sizeof(sw), "%s/memory.memsw.limit_in_bytes", d);
		if (access(sw, F_OK) == 0) {
			snprintf(v, sizeof(v), "%llu",
			         (unsigned long long)(l->memory_bytes + l->swap_bytes));
			if ((e = sb_cg_write(d, "memory.memsw.limit_in_bytes", v)) != CUSTOS_OK)
				goto fail;
		}
		/* TCP socket buffers: v1 charges them to memory.limit_in_bytes never, and counts
		 * them on their own only once memory.kmem.tcp.limit_in_bytes is set (v2's
		 * memory.max covers them). Without it a sandbox queued 403 MiB on loopback
		 * connections under a 64 MiB limit. The same size again: memory and socket
		 * buffers together stay under twice the limit. Set before anything joins: a
		 * socket is accounted from its creation only. */
		snprintf(sw, sizeof(sw), "%s/memory.kmem.tcp.limit_in_bytes", d);
		if (access(sw, F_OK) == 0) {
			snprintf(v, sizeof(v), "%llu", (unsigned long long)l->memory_bytes);
			if ((e = sb_cg_write(d, "memory.kmem.tcp.limit_in_bytes", v)) != CUSTOS_OK)
				goto fail;
		}
		/* An OOM inside the sandbox kills there; never freeze it waiting for memory. */
		if (sb_cg_write(d, "memory.oom_control", "0") != CUSTOS_OK)
			err_clear();
	}
	if (cg->v1dir[1]) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->pids);
		if ((e = sb_cg_write(cg->v1dir[1], "pids.max", v)) != CUSTOS_OK)
			goto fail;
	}
	if (cg->v1dir[2]) {
		/* The period is a new cgroup's default, 100000 us (not inherited): the quota alone
		 * sets the share. */
		snprintf(v, sizeof(v), "%u", l->cpu_millis * 100);
		if ((e = sb_cg_write(cg->v1dir[2], "cpu.cfs_quota_us", v)) != CUSTOS_OK)
			goto fail;
	}
	static const struct {
		int dir;
		const char *file;
	} cnt[4] = { { 0, "memory.oom_control" },
		     { 0, "memory.failcnt" },
		     { 1, "pids.events" },
		     { 2, "cpu.stat" } };
	for (int i = 0; i < 4; i++) {
		char path[SANDBOX_PATH_MAX + 32];
		cg->v1cnt[i] = -1;
		if (!cg->v1dir[cnt[i].dir])
			continue;
		snprintf(path, sizeof(path), "%s/%s", cg->v1dir[cnt[i].dir], cnt[i].file);
		cg->v1cnt[i] = open(path, O_RDONLY | O_CLOEXEC);
	}
	cg->v1cnt_open = true;
	return CUSTOS_OK;
fail:
	sb_cgroup_destroy(cg);
	return e;
}

/* One counter: from the file kept open when there is one, else by path. */
static uint64_t counter(const sb_cgroup *cg, int i, int dir, const char *file, const char *key)
{
	if (cg->v1cnt_open && cg->v1cnt[i] >= 0)
		return sb_cg_read_key_fd(cg->v1cnt[i], key);
	return sb_cg_read_key(cg->v1dir[dir], file, key);
}

custos_err sb_cgv1_read(const sb_cgroup *cg, sb_cgroup_counters *c)
{
	if (cg->v1dir[0]) {
		c->oom_kill = counter(cg, 0, 0, "memory.oom_control", "oom_kill");
		/* open/read, not stdio: this runs on the monitor thread at each exit, and a FILE
		 * would be that thread's first malloc (a new arena: mmap, munmap, mprotect). */
		char path[SANDBOX_PATH_MAX + 32], text[64];
		bool kept = cg->v1cnt_open && cg->v1cnt[1] >= 0;
		int fd = kept ? cg->v1cnt[1] : -1;
		if (!kept) {
			snprintf(path, sizeof(path), "%s/memory.failcnt", cg->v1dir[0]);
			fd = open(path, O_RDONLY | O_CLOEXEC);
		}
		if (fd != -1) {
			ssize_t n;
			do
				n = pread(fd, text, sizeof(text) - 1, 0);
			while (n == -1 && errno == EINTR);
			if (!kept)
				close(fd);
			uint64_t v;
			if (n > 0) {
				text[n] = '\0';
				if (num_parse_u64(span_trim(span_of(text, strcspn(text, "\n"))), 0,
				                  UINT64_MAX, &v) == CUSTOS_OK)
					c->mem_max = v;
			}
		}
	}
	if (cg->v1dir[1])
		c->pids_max = counter(cg, 2, 1, "pids.events", "max");
	if (cg->v1dir[2])
		c->cpu_throttled = counter(cg, 3, 2, "cpu.stat", "nr_throttled");
	return CUSTOS_OK;
}
