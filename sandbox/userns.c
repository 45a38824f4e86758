/*
 * User namespace id mapping. One id inside (uid/gid, default 1000) maps to one id outside:
 * the profile's outside ids when custos is root (default nobody), the caller's own ids when it
 * is not (all an unprivileged user may map). setgroups is denied first, as the kernel requires
 * for unprivileged maps and as keeps supplementary groups from being dropped to dodge
 * group-deny permissions.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sb_int.h"

static custos_err write_proc(pid_t pid, const char *file, const char *text)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1)
		return err_sys("userns: open %s", path);
	custos_err e = file_write_all(fd, text, strlen(text));
	close(fd);
	if (e != CUSTOS_OK)
		return err_wrap(e, "userns: writing %s", path);
	return CUSTOS_OK;
}

custos_err sb_userns_map(pid_t pid, uid_t in_uid, uid_t out_uid, gid_t in_gid, gid_t out_gid)
{
	char line[64];

	snprintf(line, sizeof(line), "%u %u 1\n", (unsigned)in_uid, (unsigned)out_uid);
	GUARD(write_proc(pid, "uid_map", line));
	GUARD(write_proc(pid, "setgroups", "deny"));
	snprintf(line, sizeof(line), "%u %u 1\n", (unsigned)in_gid, (unsigned)out_gid);
	GUARD(write_proc(pid, "gid_map", line));
	return CUSTOS_OK;
}

int sb_userns_become(uid_t uid, gid_t gid, const char **step)
{
	/* Root outside: the child still has kuid 0, which this namespace does not map; files it
	 * made would fail with EOVERFLOW. Take the mapped ids, keeping the capabilities the
	 * namespace gave us for the rest of the setup. */
	/* Raw system calls: glibc's wrappers would try to signal the other threads of the
	 * (multi-threaded) parent, which do not exist in this child. */
	*step = "setresgid";
	if (syscall(SYS_setresgid, gid, gid, gid) == -1)
		return errno;
	*step = "setresuid";
	if (syscall(SYS_setresuid, uid, uid, uid) == -1)
		return errno;
	*step = "capset (keep effective)";
	return sb_caps_raise_effective();
}
