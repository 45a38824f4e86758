/*
 * rlimits: open files, file size, no core dumps; and, when no cgroup enforces the pids limit
 * (an unprivileged run without delegation), RLIMIT_NPROC as the fallback.
 */
#include <errno.h>
#include <sys/resource.h>

#include "sb_int.h"

static void put(sb_rlimits *r, int res, uint64_t v)
{
	if (r->n < (int)CUSTOS_ARRAY_LEN(r->resource)) {
		r->resource[r->n] = res;
		r->value[r->n] = v;
		r->n++;
	}
}

void sb_rlimits_plan(const sandbox_profile *p, bool have_cgroup, sb_rlimits *r)
{
	r->n = 0;
	put(r, RLIMIT_CORE, 0);
	if (p->limits.nofile)
		put(r, RLIMIT_NOFILE, p->limits.nofile);
	if (p->limits.fsize_bytes)
		put(r, RLIMIT_FSIZE, p->limits.fsize_bytes);
	if (!have_cgroup && p->limits.pids)
		put(r, RLIMIT_NPROC, p->limits.pids);
}

int sb_rlimits_apply(const sb_rlimits *r, const char **step)
{
	for (int i = 0; i < r->n; i++) {
		struct rlimit rl = { .rlim_cur = r->value[i], .rlim_max = r->value[i] };
		struct rlimit cur;
		/* Never raise a hard limit we were given: lower both to the smaller one. */
		if (getrlimit(r->resource[i], &cur) == 0 && cur.rlim_max != RLIM_INFINITY &&
		    cur.rlim_max < rl.rlim_max)
			rl.rlim_cur = rl.rlim_max = cur.rlim_max;
		if (setrlimit(r->resource[i], &rl) == -1) {
			*step = "setrlimit";
			return errno;
		}
	}
	return 0;
}
