/*
 * cgroups: backend choice and the operations both backends share. v2 when memory, pids and cpu
 * can be enabled below custos' own cgroup; v1 (per-controller hierarchies) otherwise, as on
 * hosts whose controllers still sit on v1; none for an unprivileged run without delegation
 * (AUTO falls back to rlimits and says so; REQUIRED fails).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sb_int.h"

void sb_cgroup_gc(const char *parent)
{
	/* Sandboxes of a custos that died without cleaning up (SIGKILL, crash) leave empty
	 * cgroups named custos-<name>-<pid>-<n>. Remove those whose custos is gone; rmdir
	 * refuses any that still hold a process, and a reused pid only delays the cleanup. */
	DIR *d = opendir(parent);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "custos-", 7) != 0 || de->d_type != DT_DIR)
			continue;
		const char *last = strrchr(de->d_name, '-');
		if (last == NULL || last == de->d_name + 6)
			continue;
		const char *p = last - 1;
		while (p > de->d_name && *p != '-')
			p--;
		uint64_t pid;
		if (num_parse_u64(span_of(p + 1, (size_t)(last - p - 1)), 1, INT32_MAX, &pid) !=
		    CUSTOS_OK)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		/* A custos in another pid namespace looks dead from here: leave young cgroups
		 * alone, as one may sit empty between its mkdir and the child's arrival. */
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
		    time(NULL) - st.st_mtime < 60)
			continue;
		if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) == 0)
			log_info("cgroup: removed %s/%s left by a custos that is gone", parent,
			         de->d_name);
	}
	closedir(d);
}

const char *sb_cgroup_backend_name(sb_cg_backend b)
{
	switch (b) {
	case SB_CG_V2:
		return "v2";
	case SB_CG_V1:
		return "v1";
	default:
		return "none";
	}
}

custos_err sb_cg_write(const char *dir, const char *file, const char *value)
{
	char path[SANDBOX_PATH_MAX + 64];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1)
		return err_sys("cgroup: open %s", path);
	ssize_t n;
	do
		n = write(fd, value, strlen(value));
	while (n == -1 && errno == EINTR);
	int saved = errno;
	close(fd);
	if (n == -1) {
		errno = saved;
		return err_sys("cgroup: write '%s' to %s", value, path);
	}
	return CUSTOS_OK;
}

static uint64_t parse_key(char *text, const char *key)
{
	size_t klen = strlen(key);
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
			uint64_t v = 0;
			span s = span_trim(span_cstr(line + klen + 1));
			if (num_parse_u64(s, 0, UINT64_MAX, &v) == CUSTOS_OK)
				return v;
			return 0;
		}
		line = nl ? nl + 1 : NULL;
	}
	return 0;
}

uint64_t sb_cg_read_key_fd(int fd, const char *key)
{
	char text[4096];
	ssize_t n;
	do
		n = pread(fd, text, sizeof(text) - 1, 0);
	while (n == -1 && errno == EINTR);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	return parse_key(text, key);
}

uint64_t sb_cg_read_key(const char *dir, const char *file, const char *key)
{
	char path[SANDBOX_PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 0;
	uint64_t v = sb_cg_read_key_fd(fd, key);
	close(fd);
	return v;
}

custos_err sb_cgroup_create(const sandbox_profile *p, const char *id, bool defer_v1, sb_cgroup *cg,
                            const char **note)
{
	memset(cg, 0, sizeof(*cg));
	cg->dirfd = -1;
	*note = NULL;
	if (p->cgroup == SANDBOX_CGROUP_OFF) {
		*note = "cgroup off: rlimits only";
		return CUSTOS_OK;
	}
	sb_cg_host h;
	buf_init(&h.mountinfo, SB_CG_PROC_MAX);
	buf_init(&h.self, SB_CG_PROC_MAX);
	custos_err e = file_load("/proc/self/mountinfo", FILE_ANY, SB_CG_PROC_MAX, &h.mountinfo);
	if (e == CUSTOS_OK)
		e = file_load("/proc/self/cgroup", FILE_ANY, SB_CG_PROC_MAX, &h.self);
	char why2[256];
	bool loaded = e == CUSTOS_OK; /* else neither backend can look anything up */
	if (loaded && (e = sb_cgv2_create(p, &h, id, cg)) == CUSTOS_OK)
		goto done;
	snprintf(why2, sizeof(why2), "%s", err_msg());
	if (loaded && (e = sb_cgv1_plan(p, &h, id, cg)) == CUSTOS_OK &&
	    (defer_v1 || (e = sb_cgv1_make(&p->limits, cg)) == CUSTOS_OK))
		goto done;
	if (p->cgroup == SANDBOX_CGROUP_REQUIRED) {
		e = err_set(CUSTOS_ERR_UNSUPPORTED, "cgroup required but unusable: v2: %s; v1: %s",
		            why2, err_msg());
		goto done;
	}
	err_clear();
	e = CUSTOS_OK;
	*note = "no writable cgroup: memory and cpu limits not enforced, pids by RLIMIT_NPROC";
done:
	buf_free(&h.mountinfo);
	buf_free(&h.self);
	return e;
}

custos_err sb_cgroup_realize(const sandbox_limits *l, sb_cgroup *cg)
{
	if (cg->backend == SB_CG_V1 && cg->v1_pending)
		return sb_cgv1_make(l, cg);
	return CUSTOS_OK;
}

custos_err sb_cgroup_attach(const sb_cgroup *cg, pid_t pid)
{
	char v[32];

	snprintf(v, sizeof(v), "%d", (int)pid);
	if (cg->backend == SB_CG_V2)
		return cg->dirfd >= 0 ? CUSTOS_OK /* CLONE_INTO_CGROUP */
		                      : sb_cg_write(cg->dir, "cgroup.procs", v);
	/* v1: the child joined by itself (sb_cgroup_join_self) before it got this far. */
	return CUSTOS_OK;
}

void sb_cgroup_close_fds(int fds[SB_CG_V1_CTRLS])
{
	for (int i = 0; i < SB_CG_V1_CTRLS; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

/* The v1 `tasks` files to open for writing: each controller's sandbox directory, or (parent)
 * the directory above it, where custos itself runs. */
static custos_err open_tasks_fds(const sb_cgroup *cg, bool parent, int fds[SB_CG_V1_CTRLS])
{
	char path[SANDBOX_PATH_MAX + 16];

	for (int i = 0; i < SB_CG_V1_CTRLS; i++)
		fds[i] = -1;
	if (cg->backend != SB_CG_V1)
		return CUSTOS_OK;
	for (int i = 0; i < SB_CG_V1_CTRLS; i++) {
		if (!cg->v1dir[i])
			continue;
		int dirlen = (int)strlen(cg->v1dir[i]);
		if (parent) /* the slash is checked by sb_cgv1_plan */
			dirlen = (int)(strrchr(cg->v1dir[i], '/') - cg->v1dir[i]);
		snprintf(path, sizeof(path), "%.*s/tasks", dirlen, cg->v1dir[i]);
		fds[i] = open(path, O_WRONLY | O_CLOEXEC);
		if (fds[i] == -1) {
			custos_err e = err_sys("cgroup: open %s", path);
			sb_cgroup_close_fds(fds);
			return e;
		}
	}
	return CUSTOS_OK;
}

custos_err sb_cgroup_join_fds(const sb_cgroup *cg, int fds[SB_CG_V1_CTRLS])
{
	return open_tasks_fds(cg, false, fds);
}

custos_err sb_cgroup_home_fds(const sb_cgroup *cg, int fds[SB_CG_V1_CTRLS])
{
	return open_tasks_fds(cg, true, fds);
}

int sb_cgroup_join_self(const int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		ssize_t w;
		do
			w = write(fds[i], "0", 1);
		while (w == -1 && errno == EINTR);
		if (w != 1)
			return w == -1 ? errno : EIO;
	}
	return 0;
}

custos_err sb_cgroup_read(const sb_cgroup *cg, sb_cgroup_counters *c)
{
	memset(c, 0, sizeof(*c));
	if (cg->backend == SB_CG_V2)
		return sb_cgv2_read(cg, c);
	if (cg->backend == SB_CG_V1)
		return sb_cgv1_read(cg, c);
	return CUSTOS_OK;
}

/* SIGKILL to every process listed; returns how many were listed. */
static int kill_procs_once(const char *dir)
{
	char path[SANDBOX_PATH_MAX + 32], text[8192];
	int n_killed = 0;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 0;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	for (char *s = text; *s;) {
		char *nl = strchr(s, '\n');
		if (nl)
			*nl = '\0';
		uint64_t pid;
		if (num_parse_u64(span_cstr(s), 1, INT32_MAX, &pid) == CUSTOS_OK) {
			kill((pid_t)pid, SIGKILL);
			n_killed++;
		}
		if (!nl)
			break;
		s = nl + 1;
	}
	return n_killed;
}

static void kill_procs(const char *dir)
{
	for (int round = 0; round < 50 && kill_procs_once(dir) > 0; round++) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
}

void sb_cgroup_kill(const sb_cgroup *cg)
{
	if (cg->backend == SB_CG_V2) {
		if (sb_cg_write(cg->dir, "cgroup.kill", "1") != CUSTOS_OK)
			kill_procs(cg->dir);
	} else if (cg->backend == SB_CG_V1) {
		for (int i = 0; i < SB_CG_V1_CTRLS; i++)
			if (cg->v1dir[i]) {
				kill_procs(cg->v1dir[i]);
				break;
			}
	}
}

static void rmdir_retry(const char *dir)
{
	/* The kernel lets go of an emptied cgroup asynchronously; under load that can take a
	 * while. Back off up to about 5 s in all before leaving it (and saying so). */
	long wait_ns = 1000000;
	for (int i = 0; i < 40; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY)
			break;
		kill_procs_once(dir);
		struct timespec ts = { 0, wait_ns };
		nanosleep(&ts, NULL);
		if (wait_ns < 200000000)
			wait_ns *= 2;
	}
	log_warn("cgroup: could not remove %s: %s", dir, strerror(errno));
}

void sb_cgroup_destroy(sb_cgroup *cg)
{
	if (cg->dirfd >= 0)
		close(cg->dirfd);
	for (int i = 0; cg->v1cnt_open && i < 4; i++)
		if (cg->v1cnt[i] >= 0)
			close(cg->v1cnt[i]);
	if (cg->dir) {
		rmdir_retry(cg->dir);
		free(cg->dir);
	}
	for (int i = 0; i < SB_CG_V1_CTRLS; i++)
		if (cg->v1dir[i]) {
			rmdir_retry(cg->v1dir[i]);
			free(cg->v1dir[i]);
		}
	memset(cg, 0, sizeof(*cg));
	cg->dirfd = -1;
}
