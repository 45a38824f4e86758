/*
 * cgroup v2 backend: a child of custos' own cgroup (from /proc/self/cgroup, "0::/path", under
 * the cgroup2 mount) with memory.max, memory.swap.max, pids.max and cpu.max; cgroup.kill to
 * stop; memory.events, pids.events and cpu.stat for the audit counters.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sb_int.h"

/* Copies the next line of b from *off into line (NUL-terminated, no newline); a line longer
 * than linesz - 1 is skipped whole. False at the end. */
static bool next_line(const buf *b, size_t *off, char *line, size_t linesz)
{
	const char *p = (const char *)buf_ptr(b);
	size_t n = buf_used(b);

	while (*off < n) {
		const char *s = p + *off;
		const char *nl = memchr(s, '\n', n - *off);
		size_t len = nl ? (size_t)(nl - s) : n - *off;
		*off += len + (nl ? 1 : 0);
		if (len >= linesz)
			continue;
		memcpy(line, s, len);
		line[len] = '\0';
		return true;
	}
	return false;
}

custos_err sb_cg_find_mount(const sb_cg_host *h, const char *fstype, const char *ctrl, char *out,
                            size_t outsz, char *root, size_t rootsz)
{
	char line[4096];
	size_t off = 0;

	while (next_line(&h->mountinfo, &off, line, sizeof(line))) {
		/* id parent major:minor root mountpoint opts [optional...] - fstype source super */
		char *sep = strstr(line, " - ");
		if (sep == NULL)
			continue;
		char fs[64], src[256], super[1024];
		if (sscanf(sep + 3, "%63s %255s %1023s", fs, src, super) < 2)
			continue;
		if (strcmp(fs, fstype) != 0)
			continue;
		if (ctrl) {
			bool hit = false;
			for (char *t = super, *save = NULL; (t = strtok_r(t, ",", &save)); t = NULL)
				if (strcmp(t, ctrl) == 0)
					hit = true;
			if (!hit)
				continue;
		}
		char r[1024], mp[1024];
		if (sscanf(line, "%*s %*s %*s %1023s %1023s", r, mp) != 2)
			continue;
		ENSURE(strlen(mp) < outsz && strlen(r) < rootsz, CUSTOS_ERR_LIMIT,
		       "cgroup: mount path too long");
		memcpy(out, mp, strlen(mp) + 1);
		memcpy(root, r, strlen(r) + 1);
		return CUSTOS_OK;
	}
	return err_set(CUSTOS_ERR_NOTFOUND, "cgroup: no %s mount%s%s", fstype, ctrl ? " for " : "",
	               ctrl ? ctrl : "");
}

/* Our cgroup path for a hierarchy line ("0::" for v2, or ":memory:" style for v1). */
custos_err sb_cg_self_path(const sb_cg_host *h, const char *ctrl, char *out, size_t outsz)
{
	char line[4096];
	size_t off = 0;

	while (next_line(&h->self, &off, line, sizeof(line))) {
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 == NULL)
			continue;
		*c2 = '\0';
		bool hit = false;
		if (ctrl == NULL)
			hit = c1[1] == '\0' && strncmp(line, "0", 1) == 0;
		else
			for (char *t = c1 + 1, *save = NULL; (t = strtok_r(t, ",", &save));
			     t = NULL)
				if (strcmp(t, ctrl) == 0)
					hit = true;
		if (!hit)
			continue;
		ENSURE(strlen(c2 + 1) < outsz, CUSTOS_ERR_LIMIT, "cgroup: path too long");
		memcpy(out, c2 + 1, strlen(c2 + 1) + 1);
		return CUSTOS_OK;
	}
	return err_set(CUSTOS_ERR_NOTFOUND, "cgroup: not in a %s hierarchy", ctrl ? ctrl : "v2");
}

/* mount point + (path relative to the mount's root). */
custos_err sb_cg_dir(const char *mnt, const char *root, const char *path, const char *leaf,
                     char **out);
custos_err sb_cg_dir(const char *mnt, const char *root, const char *path, const char *leaf,
                     char **out)
{
	size_t rl = strlen(root);
	const char *rel = path;
	if (strcmp(root, "/") != 0) {
		ENSURE(strncmp(path, root, rl) == 0, CUSTOS_ERR_NOTFOUND,
		       "cgroup: %s is outside the mounted root %s", path, root);
		rel = path + rl;
	}
	size_t n = strlen(mnt) + strlen(rel) + strlen(leaf) + 3;
	ENSURE(n < SANDBOX_PATH_MAX, CUSTOS_ERR_LIMIT, "cgroup: path too long");
	char *s = xcalloc(1, n);
	snprintf(s, n, "%s%s%s/%s", mnt, rel, (rel[0] && rel[strlen(rel) - 1] == '/') ? "" : "",
	         leaf);
	/* Collapse a "//" from a root path. */
	for (char *d = strstr(s, "//"); d; d = strstr(s, "//"))
		memmove(d, d + 1, strlen(d));
	*out = s;
	return CUSTOS_OK;
}

static bool has_word(const char *text, const char *w)
{
	size_t n = strlen(w);
	for (const char *s = text; (s = strstr(s, w)); s += n)
		if ((s == text || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\n' || s[n] == '\0'))
			return true;
	return false;
}

custos_err sb_cgv2_create(const sandbox_profile *p, const sb_cg_host *h, const char *id,
                          sb_cgroup *cg)
{
	char mnt[1024], root[1024], path[2048], text[512];
	char *parent = NULL;
	custos_err e;

	GUARD(sb_cg_find_mount(h, "cgroup2", NULL, mnt, sizeof(mnt), root, sizeof(root)));
	GUARD(sb_cg_self_path(h, NULL, path, sizeof(path)));
	GUARD(sb_cg_dir(mnt, root, path, "", &parent));
	/* The controllers must be available to our children. */
	char ctl[SANDBOX_PATH_MAX + 32];
	snprintf(ctl, sizeof(ctl), "%s/cgroup.controllers", parent);
	buf b;
	buf_init(&b, 4096);
	e = file_load(ctl, FILE_ANY, 4096, &b);
	if (e == CUSTOS_OK) {
		size_t n = buf_used(&b) < sizeof(text) - 1 ? buf_used(&b) : sizeof(text) - 1;
		memcpy(text, buf_ptr(&b), n);
		text[n] = '\0';
	}
	buf_free(&b);
	if (e != CUSTOS_OK) {
		free(parent);
		return e;
	}
	if (!has_word(text, "memory") || !has_word(text, "pids") || !has_word(text, "cpu")) {
		free(parent);
		return err_set(
		        CUSTOS_ERR_UNSUPPORTED,
		        "cgroup v2: memory, pids and cpu are not all available (have: %.100s)",
		        text);
	}
	e = sb_cg_write(parent, "cgroup.subtree_control", "+memory +pids +cpu");
	if (e != CUSTOS_OK) {
		free(parent);
		return e;
	}
	sb_cgroup_gc(parent);
	e = sb_cg_dir(mnt, root, path, id, &cg->dir);
	free(parent);
	GUARD(e);
	if (mkdir(cg->dir, 0755) == -1) {
		e = err_sys("cgroup v2: mkdir %s", cg->dir);
		free(cg->dir);
		cg->dir = NULL;
		return e;
	}
	cg->backend = SB_CG_V2;
	/* clone3 places the child here directly: no migration (and its RCU sync) later. */
	cg->dirfd = open(cg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char v[64];
	const sandbox_limits *l = &p->limits;
	if (l->memory_bytes) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->memory_bytes);
		if ((e = sb_cg_write(cg->dir, "memory.max", v)) != CUSTOS_OK)
			goto fail;
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->swap_bytes);
		/* memory.swap.max is absent without swap accounting: nothing to limit then. */
		char sw[SANDBOX_PATH_MAX + 32];
		snprintf(sw, sizeof(sw), "%s/memory.swap.max", cg->dir);
		if (access(sw, F_OK) == 0 &&
		    (e = sb_cg_write(cg->dir, "memory.swap.max", v)) != CUSTOS_OK)
			goto fail;
	}
	if (l->pids) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->pids);
		if ((e = sb_cg_write(cg->dir, "pids.max", v)) != CUSTOS_OK)
			goto fail;
	}
	if (l->cpu_millis) {
		snprintf(v, sizeof(v), "%u 100000", l->cpu_millis * 100);
		if ((e = sb_cg_write(cg->dir, "cpu.max", v)) != CUSTOS_OK)
			goto fail;
	}
	return CUSTOS_OK;
fail:
	sb_cgroup_destroy(cg);
	return e;
}

custos_err sb_cgv2_read(const sb_cgroup *cg, sb_cgroup_counters *c)
{
	c->oom_kill = sb_cg_read_key(cg->dir, "memory.events", "oom_kill");
	c->mem_max = sb_cg_read_key(cg->dir, "memory.events", "max");
	c->pids_max = sb_cg_read_key(cg->dir, "pids.events", "max");
	c->cpu_throttled = sb_cg_read_key(cg->dir, "cpu.stat", "nr_throttled");
	return CUSTOS_OK;
}
