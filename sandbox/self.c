/*
 * Self-restriction of custos' proxy process, once its listeners, files and keys are open:
 * capabilities (libcap), NO_NEW_PRIVS, Landlock on the listed paths, then the seccomp
 * allow-list for a network server (always-denied calls EPERM, the rest killed), TSYNC so every
 * thread gets it. In that order: seccomp last, any failure fatal for the caller.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "sb_int.h"

/* Threads of this process (entries of /proc/self/task), or -1 when unknown. */
static int thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	if (d == NULL)
		return -1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

custos_err sandbox_self_restrict(const sandbox_self_opts *o)
{
	ENSURE(o != NULL, CUSTOS_ERR_INVAL, "sandbox: self_restrict: NULL options");
	ENSURE(o->n_read_paths <= SANDBOX_MAX_BINDS && o->n_write_paths <= SANDBOX_MAX_BINDS &&
	               o->n_extra_syscalls <= SANDBOX_MAX_SYSCALLS,
	       CUSTOS_ERR_LIMIT, "sandbox: self_restrict: too many paths or syscalls");
	for (size_t i = 0; i < o->n_extra_syscalls; i++)
		ENSURE(!sb_seccomp_is_denied(o->extra_syscalls[i]), CUSTOS_ERR_DENIED,
		       "sandbox: self_restrict: '%s' is always denied", o->extra_syscalls[i]);
	/* Capabilities and Landlock bind only the calling thread (seccomp alone synchronises
	 * across threads): a thread started earlier would keep both. */
	int threads = thread_count();
	ENSURE(threads == 1, CUSTOS_ERR_INVAL,
	       "sandbox: self_restrict must run before any other thread starts (%d threads)",
	       threads);
	if (o->set_ids) {
		/* The bounding set needs CAP_SETPCAP, which the uid change takes away: first. */
		GUARD(sb_caps_drop_bounding());
		if (setgroups(0, NULL) == -1)
			return err_sys("sandbox: setgroups");
		if (setresgid(o->gid, o->gid, o->gid) == -1)
			return err_sys("sandbox: setresgid %u", (unsigned)o->gid);
		if (setresuid(o->uid, o->uid, o->uid) == -1)
			return err_sys("sandbox: setresuid %u", (unsigned)o->uid);
	}
	GUARD(sb_caps_drop_self());
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return err_sys("sandbox: PR_SET_NO_NEW_PRIVS");
	GUARD(sb_landlock_apply_paths(o->read_paths, o->n_read_paths, o->write_paths,
	                              o->n_write_paths, o->landlock_required));
	return sb_seccomp_self(o);
}
