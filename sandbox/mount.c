/*
 * Mounts: the new root is a tmpfs reached by pivot_root, built from a plan the parent prepared.
 * As bubblewrap does, the child first pivots into a tmpfs over /tmp (private to its mount
 * namespace) with the host root at /oldroot, builds /newroot from /oldroot sources, drops the
 * host root and pivots again. Every mount point is reached from /newroot's fd without following
 * a symbolic link, made relative to its parent's fd where missing, and mounted onto by fd (see
 * "Symbolic links are followed nowhere" below). A bind's flags (read-only, nosuid, nodev,
 * noexec) are added to every mount of its tree (the source's and those below it) with
 * mount_setattr (Linux 5.12), which only sets what it is given, so the source's locked flags
 * stay as a user namespace requires; the /dev nodes get theirs in one recursive call. Where
 * mount_setattr is missing, bind remounts of each mount (found in mountinfo) repeat its locked
 * flags (nosuid, nodev, noexec, atime).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sb_int.h"

#define SB_BASE "/tmp"

void sb_mounts_free(sb_mounts *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->ops[i].src);
		free(m->ops[i].dst);
	}
	free(m->ops);
	memset(m, 0, sizeof(*m));
}

static char *join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = xcalloc(1, la + lb + 2);
	memcpy(s, a, la);
	if (lb && b[0] != '/')
		s[la++] = '/';
	memcpy(s + la, b, lb);
	return s;
}

/* Symbolic links a bind source may pass through, at most (as the kernel's 40). */
#define SB_LINK_HOPS 40

/* The host path of a bind source with its symbolic links resolved, following only those that
 * nobody but root could have put where they are: a link of root's in a directory of root's
 * that neither group nor others may write. Any other link may be the sandbox's own work: a
 * sandbox that can write below a bind source can replace a directory there with a link (to
 * /proc, to /) that the next start would otherwise mount. Such a source is refused. A
 * component that is missing or out of reach ends the walk: the rest stays as written and the
 * child, which opens the result without following any link, reports it (or skips a missing
 * optional source). Parent only; out gets an absolute path without "." or "..". */
static custos_err resolve_source(const char *path, char *out, size_t outsz)
{
	char rest[2 * SANDBOX_PATH_MAX], target[SANDBOX_PATH_MAX];
	size_t len = 0; /* out[0..len): resolved so far, no trailing '/'; "" is the root */
	unsigned hops = 0;
	struct stat st, ds;

	ENSURE(outsz > 1 && strlen(path) < sizeof(rest), CUSTOS_ERR_LIMIT,
	       "sandbox: bind source %s is too long", path);
	memcpy(rest, path, strlen(path) + 1);
	out[0] = '\0';
	const char *p = rest;
	for (;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);
		if (n == 1 && p[0] == '.') {
			p = end;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.') { /* out has no link: lexical is right */
			while (len > 0 && out[len - 1] != '/')
				len--;
			len = len > 0 ? len - 1 : 0;
			out[len] = '\0';
			p = end;
			continue;
		}
		ENSURE(len + 1 + n < outsz, CUSTOS_ERR_LIMIT, "sandbox: bind source %s is too long",
		       path);
		size_t dirlen = len;
		out[len++] = '/';
		memcpy(out + len, p, n);
		len += n;
		out[len] = '\0';
		p = end;
		if (lstat(out, &st) == -1) {
			ENSURE(len + strlen(p) < outsz, CUSTOS_ERR_LIMIT,
			       "sandbox: bind source %s is too long", path);
			memcpy(out + len, p, strlen(p) + 1);
			return CUSTOS_OK;
		}
		if (!S_ISLNK(st.st_mode))
			continue;
		out[dirlen] = '\0';
		bool trusted = st.st_uid == 0 && stat(dirlen ? out : "/", &ds) == 0 &&
		               ds.st_uid == 0 && (ds.st_mode & 022) == 0;
		out[dirlen] = '/';
		ENSURE(trusted, CUSTOS_ERR_DENIED,
		       "sandbox: bind source %s: %s is a symbolic link that someone other than "
		       "root "
		       "could have made (a sandbox, through a writable bind); custos follows no "
		       "such "
		       "link: bind the real path",
		       path, out);
		ENSURE(++hops <= SB_LINK_HOPS, CUSTOS_ERR_INVAL,
		       "sandbox: bind source %s: too many symbolic links", path);
		ssize_t t = readlink(out, target, sizeof(target) - 1);
		if (t <= 0)
			return err_sys("sandbox: bind source %s: readlink %s", path, out);
		target[t] = '\0';
		/* The link's target, then what followed it. */
		size_t tl = (size_t)t, pl = strlen(p);
		ENSURE(tl + 1 + pl < sizeof(rest), CUSTOS_ERR_LIMIT,
		       "sandbox: bind source %s is too long", path);
		memmove(rest + tl + 1, p, pl + 1);
		memcpy(rest, target, tl);
		rest[tl] = '/';
		p = rest;
		len = target[0] == '/' ? 0 : dirlen;
		out[len] = '\0';
	}
	if (len == 0)
		memcpy(out, "/", 2);
	return CUSTOS_OK;
}

custos_err sb_plan_add(sb_mounts *m, sb_op_kind k, const char *src, const char *dst, mode_t mode)
{
	char real[SANDBOX_PATH_MAX];

	if (k == SB_OP_BIND && src) {
		GUARD(resolve_source(src, real, sizeof(real)));
		src = real;
	}
	ENSURE(m->n < 4 * (SANDBOX_MAX_BINDS + SANDBOX_MAX_DEVICES) + 64, CUSTOS_ERR_LIMIT,
	       "sandbox: too many mount steps");
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 32;
		sb_op *o = realloc(m->ops, nc * sizeof(*o));
		ENSURE(o != NULL, CUSTOS_ERR_NOMEM, "sandbox: out of memory");
		m->ops = o;
		m->cap = nc;
	}
	sb_op *op = &m->ops[m->n++];
	memset(op, 0, sizeof(*op));
	op->kind = k;
	op->mode = mode;
	if (src)
		op->src = (k == SB_OP_BIND) ? join("/oldroot", src) : xstrdup(src);
	op->dst = join("/newroot", dst);
	op->ro = true;
	op->must = true;
	return CUSTOS_OK;
}

sb_op *sb_plan_last(sb_mounts *m)
{
	return &m->ops[m->n - 1];
}

/* /bin, /lib, /lib64, /sbin (and 32-bit variants): symlinks into /usr on merged-/usr hosts
 * (Debian 12), so recreate the link; a real directory is bound read-only. */
static custos_err plan_usr(sb_mounts *m)
{
	static const char *const tops[] = {
		"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"
	};
	GUARD(sb_plan_add(m, SB_OP_BIND, "/usr", "/usr", 0));
	sb_plan_last(m)->exec = true;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(tops); i++) {
		struct stat st;
		if (lstat(tops[i], &st) == -1)
			continue;
		if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(tops[i], target, sizeof(target) - 1);
			if (n <= 0)
				return err_sys("sandbox: readlink %s", tops[i]);
			target[n] = '\0';
			GUARD(sb_plan_add(m, SB_OP_SYMLINK, target, tops[i], 0));
		} else if (S_ISDIR(st.st_mode)) {
			GUARD(sb_plan_add(m, SB_OP_BIND, tops[i], tops[i], 0));
			sb_plan_last(m)->exec = true;
		}
	}
	/* Programs find their loader cache, certificates, alternatives and time zone here. */
	static const char *const etc[] = { "/etc/ld.so.cache", "/etc/ssl/certs",
		                           "/etc/alternatives", "/etc/localtime",
		                           "/etc/ca-certificates" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(etc); i++) {
		GUARD(sb_plan_add(m, SB_OP_BIND, etc[i], etc[i], 0));
		sb_plan_last(m)->must = false;
	}
	return CUSTOS_OK;
}

/* True when path is dir or below it ("/a/b" and "/a"; not "/ab"). */
static bool path_at_or_below(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

custos_err sb_mounts_plan(const sandbox_profile *p, sb_mounts *m)
{
	char text[256];
	const char *scratch = p->scratch_target ? p->scratch_target : "/tmp";

	memset(m, 0, sizeof(*m));
	if (p->usr_merged)
		GUARD(plan_usr(m));
	/* A minimal /etc: who the sandbox user is, and localhost. */
	GUARD(sb_plan_add(m, SB_OP_DIR, NULL, "/etc", 0755));
	snprintf(text, sizeof(text),
	         "root:x:0:0:root:/root:/bin/sh\nmodel:x:%u:%u:model:%s:/bin/sh\n"
	         "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
	         (unsigned)p->uid, (unsigned)p->gid, scratch);
	GUARD(sb_plan_add(m, SB_OP_FILE, text, "/etc/passwd", 0644));
	snprintf(text, sizeof(text), "root:x:0:\nmodel:x:%u:\nnogroup:x:65534:\n",
	         (unsigned)p->gid);
	GUARD(sb_plan_add(m, SB_OP_FILE, text, "/etc/group", 0644));
	GUARD(sb_plan_add(m, SB_OP_FILE, "127.0.0.1 localhost\n::1 localhost\n", "/etc/hosts",
	                  0644));
	snprintf(text, sizeof(text), "%s\n", p->name);
	GUARD(sb_plan_add(m, SB_OP_FILE, text, "/etc/hostname", 0644));

	/* /proc: fresh for the pid namespace; the parts that reach the host kernel read-only. */
	GUARD(sb_plan_add(m, SB_OP_PROC, NULL, "/proc", 0555));
	static const char *const proc_ro[] = { "/proc/sys", "/proc/sysrq-trigger", "/proc/irq",
		                               "/proc/bus", "/proc/fs" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(proc_ro); i++)
		GUARD(sb_plan_add(m, SB_OP_RO, NULL, proc_ro[i], 0));

	/* /dev: a tmpfs with the usual nodes bound from the host (mknod fails in a userns). */
	GUARD(sb_plan_add(m, SB_OP_TMPFS, "mode=0755,size=64k", "/dev", 0755));
	static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(nodes); i++) {
		char host[32], dst[32];
		snprintf(host, sizeof(host), "/dev/%s", nodes[i]);
		snprintf(dst, sizeof(dst), "/dev/%s", nodes[i]);
		GUARD(sb_plan_add(m, SB_OP_BIND, host, dst, 0));
		sb_op *op = sb_plan_last(m);
		op->ro = false;
		op->dev = true;
		op->attr_later = true; /* the SB_OP_ATTRS over /dev below */
	}
	GUARD(sb_plan_add(m, SB_OP_SYMLINK, "/proc/self/fd", "/dev/fd", 0));
	GUARD(sb_plan_add(m, SB_OP_SYMLINK, "/proc/self/fd/0", "/dev/stdin", 0));
	GUARD(sb_plan_add(m, SB_OP_SYMLINK, "/proc/self/fd/1", "/dev/stdout", 0));
	GUARD(sb_plan_add(m, SB_OP_SYMLINK, "/proc/self/fd/2", "/dev/stderr", 0));
	GUARD(sb_plan_add(m, SB_OP_TMPFS, "mode=1777,size=64m", "/dev/shm", 01777));
	GUARD(sb_devices_plan(p, m));
	/* Then /dev itself read-only: its tmpfs belongs to the sandbox user, who could otherwise
	 * add files and links there where Landlock is off (the nodes and /dev/shm are mounts of
	 * their own and stay writable). */
	GUARD(sb_plan_add(m, SB_OP_ATTRS, NULL, "/dev", 0));
	sb_plan_last(m)->ro = true;
	if (p->sys_ro && p->gpu == SANDBOX_GPU_NONE)
		GUARD(sb_plan_add(m, SB_OP_BIND, p->sys_root ? p->sys_root : "/sys", "/sys", 0));

	/* Scratch: a tmpfs owned by the sandbox user, or a host directory bound writable. */
	if (p->scratch_dir) {
		GUARD(sb_plan_add(m, SB_OP_BIND, p->scratch_dir, scratch, 0));
		sb_op *op = sb_plan_last(m);
		op->ro = false;
		op->exec = true;
	} else {
		char data[128];
		uint64_t size = p->limits.scratch_bytes ? p->limits.scratch_bytes : 256ull << 20;
		snprintf(data, sizeof(data), "mode=0700,uid=%u,gid=%u,size=%llu", (unsigned)p->uid,
		         (unsigned)p->gid, (unsigned long long)size);
		GUARD(sb_plan_add(m, SB_OP_TMPFS, data, scratch, 0700));
		sb_plan_last(m)->exec = true;
	}
	/* Profile binds. */
	for (size_t i = 0; i < p->n_binds; i++) {
		const sandbox_bind *b = &p->binds[i];
		GUARD(sb_plan_add(m, SB_OP_BIND, b->src, b->dst ? b->dst : b->src, 0));
		sb_op *op = sb_plan_last(m);
		op->ro = !b->writable;
		op->must = !b->optional;
		op->exec = true;
	}

	/* A mount point at or below an earlier bind lies in a host directory that others may
	 * write while the child mounts (the sandbox's last instance is gone, but another
	 * sandbox or process may share that directory): the child looks it up again once
	 * mounted. Everywhere else (the new root's tmpfs, /dev, /proc) only the child writes. */
	for (size_t i = 0; i < m->n; i++)
		for (size_t j = 0; j < i && !m->ops[i].verify; j++)
			m->ops[i].verify = m->ops[j].kind == SB_OP_BIND &&
			                   path_at_or_below(m->ops[i].dst, m->ops[j].dst);
	return CUSTOS_OK;
}

/* ------------------------------------------------------------------ child side: syscalls only */

/* The new root while it is built, and where a tmpfs or proc is mounted before it is moved onto
 * its mount point: both in the first pivot's tmpfs, which nothing but this process reaches. */
#define SB_NEWROOT "/newroot"
#define SB_STAGE   "/stage"

/* Symbolic links are followed nowhere below the new root while it is built: a sandbox that can
 * write a bound host directory (scratch_dir, a writable bind) may have left one there, to
 * /oldroot/... or ../../oldroot/..., and a mkdir or mount that followed it would act on the
 * host. So every mount point is reached from the new root's directory fd without following
 * links (one openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where it is all there, else openat
 * O_NOFOLLOW name by name), what is missing made with mkdirat/openat relative to its parent's
 * fd, the mount made onto the fd, and the result looked up again: a directory moved or
 * replaced meanwhile fails the start rather than leave the mount elsewhere. */

/* Step names with a path, built in the child (no allocation: one static buffer; the child is
 * single-threaded and ends at its first failure). */
static char step_buf[2 * SANDBOX_PATH_MAX + 192];

static const char *link_refused(const char *what, const char *path)
{
	snprintf(step_buf, sizeof(step_buf),
	         "%s %s (a symbolic link on the way, which custos does not follow: the sandbox "
	         "may have made it)",
	         what, path);
	return step_buf;
}

/* The refusal of a mount point whose component path[0..len) is a symbolic link. */
static const char *target_link(const char *what, const char *path, size_t len)
{
	snprintf(step_buf, sizeof(step_buf),
	         "%s %s: %.*s is a symbolic link, which custos does not follow in a mount point "
	         "(the sandbox may have made it)",
	         what, path, (int)len, path);
	return step_buf;
}

static const char *target_moved(const char *what, const char *path)
{
	snprintf(step_buf, sizeof(step_buf),
	         "%s %s: moved or replaced while custos mounted it (a directory on the way is "
	         "writable by others)",
	         what, path);
	return step_buf;
}

/* Opens path (O_PATH) without following any symbolic link on the way, magic links included:
 * openat2 RESOLVE_NO_SYMLINKS (Linux 5.6), else a walk component by component with
 * O_NOFOLLOW. The fd or -errno; -ELOOP for a link. */
int sb_open_nofollow(const char *path)
{
#ifdef SYS_openat2
	struct open_how how;
	memset(&how, 0, sizeof(how));
	how.flags = O_PATH | O_CLOEXEC;
	how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
	long r = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
	if (r >= 0)
		return (int)r;
	if (errno != ENOSYS)
		return -errno;
#endif
	char comp[NAME_MAX + 1];
	struct stat st;
	int cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur == -1)
		return -errno;
	for (const char *p = path;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			return cur;
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);
		if (n > NAME_MAX) {
			close(cur);
			return -ENAMETOOLONG;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		int next = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		int err = next == -1 ? errno : 0;
		close(cur);
		if (next == -1)
			return -err;
		if (fstat(next, &st) == -1 || S_ISLNK(st.st_mode)) {
			err = S_ISLNK(st.st_mode) ? ELOOP : errno;
			close(next);
			return -err;
		}
		cur = next;
		p = end;
	}
}

/* What walk_below makes where the path ends in nothing. */
typedef enum sb_make {
	SB_MAKE_NONE, /* nothing: -ENOENT */
	SB_MAKE_DIR,  /* the directories on the way (0755) and the last one (mode) */
	SB_MAKE_FILE, /* the directories on the way and an empty file (mode) */
} sb_make;

/* One step of walk_below: opens the name p[0..n) in the directory dir without following a
 * link, making it as make says where it is missing (a directory on the way when not last);
 * missing: it was just found missing (make it first). The fd or -errno: -ELOOP for a link,
 * -ENOTDIR where a directory is wanted. */
static int step_in(int dir, const char *p, size_t n, bool last, sb_make make, mode_t mode,
                   bool missing)
{
	char comp[NAME_MAX + 1];
	struct stat st;
	bool want_dir = !last || make == SB_MAKE_DIR;

	if (n == 0 || n > NAME_MAX)
		return n ? -ENAMETOOLONG : -ENOENT;
	if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
		return -EINVAL;
	memcpy(comp, p, n);
	comp[n] = '\0';
	/* Open it; where it is missing, make it and open it again (another try covers a name
	 * removed in between; O_EXCL and mkdirat follow no link). O_DIRECTORY | O_NOFOLLOW fails
	 * on a link with ENOTDIR; without O_DIRECTORY, fstat tells. */
	int fd = -1, err = ENOENT;
	for (int tries = 0; tries < 3; tries++) {
		if (!missing || tries > 0) {
			fd = openat(dir, comp,
			            O_PATH | O_NOFOLLOW | O_CLOEXEC | (want_dir ? O_DIRECTORY : 0));
			if (fd != -1)
				break;
			err = errno;
			if (err != ENOENT || make == SB_MAKE_NONE)
				break;
		}
		if (last && make == SB_MAKE_FILE) {
			fd = openat(dir, comp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			            mode);
			if (fd != -1)
				return fd; /* a new regular file */
			err = errno;
			if (err != EEXIST)
				break;
		} else if (mkdirat(dir, comp, last ? mode : 0755) == -1 && errno != EEXIST) {
			err = errno;
			break;
		}
	}
	if (fd == -1) {
		if (err == ENOTDIR && fstatat(dir, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISLNK(st.st_mode))
			err = ELOOP;
		return -err;
	}
	if (!want_dir) {
		err = fstat(fd, &st) == -1 ? errno : S_ISLNK(st.st_mode) ? ELOOP : 0;
		if (err) {
			close(fd);
			return -err;
		}
	}
	return fd;
}

/* Opens path ("/a/b", below the directory root) without following any symbolic link and
 * without leaving root, making what is missing as make says, each directory or file relative
 * to its parent's fd. "." and ".." are refused (the profile's validation refuses ".." already).
 * Returns an fd (O_PATH; O_WRONLY for a file it made) or -errno; -ELOOP with *link the length
 * of path's prefix that is a link, 0 when none was found (a race: a new look finds it). */
static int walk_below(int root, const char *path, sb_make make, mode_t mode, size_t *link)
{
	const char *rel = path;
	int fd;

	*link = 0;
	while (*rel == '/')
		rel++;
	if (*rel == '\0') {
		fd = fcntl(root, F_DUPFD_CLOEXEC, 0);
		return fd == -1 ? -errno : fd;
	}
#ifdef SYS_openat2
	/* One call where the path is there already (most mount points: /etc/passwd, /dev/null). */
	struct open_how how;
	memset(&how, 0, sizeof(how));
	how.flags = O_PATH | O_CLOEXEC | (make == SB_MAKE_DIR ? O_DIRECTORY : 0);
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
	long r = syscall(SYS_openat2, root, rel, &how, sizeof(how));
	if (r >= 0)
		return (int)r;
	int err = errno;
	if (err != ENOSYS && err != ELOOP && err != EAGAIN &&
	    !(err == ENOENT && make != SB_MAKE_NONE))
		return -err;
	/* Missing: most often the last name only (/dev/null, /proc), whose parent is one more
	 * call; the walk below is for the rest. */
	const char *leaf = strrchr(rel, '/');
	char parent[SANDBOX_PATH_MAX + 16];
	if (err == ENOENT &&
	    (leaf == NULL || (leaf[1] != '\0' && (size_t)(leaf - rel) < sizeof(parent)))) {
		int dir = root;
		if (leaf) {
			memcpy(parent, rel, (size_t)(leaf - rel));
			parent[leaf - rel] = '\0';
			how.flags = O_PATH | O_CLOEXEC | O_DIRECTORY;
			r = syscall(SYS_openat2, root, parent, &how, sizeof(how));
			dir = r >= 0 ? (int)r : -1;
		}
		if (dir != -1) {
			const char *name = leaf ? leaf + 1 : rel;
			fd = step_in(dir, name, strlen(name), true, make, mode, true);
			if (dir != root)
				close(dir);
			if (fd == -ELOOP)
				*link = strlen(path);
			return fd;
		}
	}
#endif
	int cur = fcntl(root, F_DUPFD_CLOEXEC, 0);
	if (cur == -1)
		return -errno;
	for (const char *p = rel;;) {
		const char *end = strchrnul(p, '/'), *next_p = end;
		while (*next_p == '/')
			next_p++;
		bool last = *next_p == '\0';
		fd = step_in(cur, p, (size_t)(end - p), last, make, mode, false);
		close(cur);
		if (fd == -ELOOP)
			*link = (size_t)(end - path);
		if (fd < 0 || last)
			return fd;
		cur = fd;
		p = next_p;
	}
}

/* "/oldroot/proc/self/fd/N": how mount(2) reaches what an fd holds where the new mount API is
 * missing (the host's /proc, at /oldroot/proc while the root is built). */
static void fd_path(char *out, size_t n, int fd)
{
	snprintf(out, n, "/oldroot/proc/self/fd/%d", fd);
}

/* Flags a remount in a user namespace must repeat: the ones locked on the mount fd is in. */
static unsigned long locked_flags(int fd)
{
	struct statvfs sv;
	unsigned long f = 0;

	if (fstatvfs(fd, &sv) == -1)
		return 0;
	if (sv.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	if (sv.f_flag & ST_RDONLY)
		f |= MS_RDONLY;
	return f;
}

/* Adds attributes to the mount fd is the root of, attached or not (and with rec those below
 * it); never clears one. 0, an errno, or ENOSYS where mount_setattr is missing (kernel or C
 * library): remount instead. */
static int add_attrs(int fd, bool ro, bool dev, bool exec, bool rec)
{
#ifdef MOUNT_ATTR_RDONLY
	struct mount_attr a;
	memset(&a, 0, sizeof(a));
	a.attr_set = MOUNT_ATTR_NOSUID | (ro ? MOUNT_ATTR_RDONLY : 0) |
	             (dev ? 0 : MOUNT_ATTR_NODEV) | (exec ? 0 : MOUNT_ATTR_NOEXEC);
	if (mount_setattr(fd, "", AT_EMPTY_PATH | (rec ? AT_RECURSIVE : 0), &a, sizeof(a)) == 0)
		return 0;
	return errno == ENOSYS ? ENOSYS : errno;
#else
	(void)fd, (void)ro, (void)dev, (void)exec, (void)rec;
	return ENOSYS;
#endif
}

/* The remount the attributes need without mount_setattr, of the mount fd is the root of. */
static int remount_flags(int fd, bool ro, bool dev, bool exec)
{
	char at[64];
	unsigned long f = locked_flags(fd) | MS_NOSUID;
	if (!dev)
		f |= MS_NODEV;
	if (!exec)
		f |= MS_NOEXEC;
	if (ro)
		f |= MS_RDONLY;
	fd_path(at, sizeof(at), fd);
	if (mount(NULL, at, NULL, MS_REMOUNT | MS_BIND | f, NULL) == -1)
		return errno;
	return 0;
}

/* The attributes one mount gets. */
typedef struct sb_attrs {
	bool set; /* false: none now (a later SB_OP_ATTRS adds them) */
	bool ro, dev, exec;
} sb_attrs;

/* Bind-mounts the tree at the fd src (with what is mounted below it) onto the fd to, with
 * attributes a on every mount of the tree: open_tree + mount_setattr on the detached copy +
 * move_mount (Linux 5.2, 5.12), else mount(2) through the fds' /proc links. *done: the
 * attributes are set (else the caller remounts the tree once it is attached: remount_tree).
 * 0 or an errno. */
static int bind_fd(int src, int to, const sb_attrs *a, bool *done)
{
	int r = 0;

	*done = !a->set;
	long tree = syscall(SYS_open_tree, src, "",
	                    OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
	if (tree >= 0) {
		if (a->set) {
			/* The whole tree: a mount below the source (/sys/fs/cgroup below /sys)
			 * would otherwise keep its own rw, suid, dev. */
			r = add_attrs((int)tree, a->ro, a->dev, a->exec, true);
			*done = r == 0;
			if (r == ENOSYS)
				r = 0;
		}
		if (r == 0 && syscall(SYS_move_mount, (int)tree, "", to, "",
		                      MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) == -1)
			r = errno;
		close((int)tree);
		return r;
	}
	if (errno != ENOSYS)
		return errno;
	char from[64], onto[64];
	fd_path(from, sizeof(from), src);
	fd_path(onto, sizeof(onto), to);
	if (mount(from, onto, NULL, MS_BIND | MS_REC, NULL) == -1)
		return errno;
	return 0;
}

/* The id of the mount fd is in (/proc/self/fdinfo: statx has it from Linux 5.8 only), or -1. */
static long fd_mnt_id(int fd)
{
	char at[64], text[512];
	snprintf(at, sizeof(at), "/oldroot/proc/self/fdinfo/%d", fd);
	int f = open(at, O_RDONLY | O_CLOEXEC);
	if (f == -1)
		return -1;
	ssize_t n = read(f, text, sizeof(text) - 1);
	close(f);
	if (n <= 0)
		return -1;
	text[n] = '\0';
	const char *m = strstr(text, "\nmnt_id:");
	if (m == NULL)
		return -1;
	m += strlen("\nmnt_id:");
	while (*m == ' ' || *m == '\t')
		m++;
	long id = -1;
	for (; *m >= '0' && *m <= '9' && id < (1L << 40); m++)
		id = (id < 0 ? 0 : id * 10) + (*m - '0');
	return id;
}

/* One line of mountinfo ("ID PARENT MAJ:MIN ROOT MOUNT-POINT ..."): its id and its mount point
 * unescaped (\ooo) into mp. False for a line that does not parse or does not fit. */
static bool mountinfo_line(const char *line, long *id, char *mp, size_t mpsz)
{
	*id = 0;
	for (; *line >= '0' && *line <= '9' && *id < (1L << 40); line++)
		*id = *id * 10 + (*line - '0');
	for (int field = 1; field < 4; field++) {
		line = strchr(line + 1, ' ');
		if (line == NULL)
			return false;
	}
	line++; /* at the mount point */
	size_t n = 0;
	while (*line && *line != ' ') {
		char c = *line++;
		if (c == '\\' && line[0] >= '0' && line[0] <= '3' && line[1] >= '0' &&
		    line[1] <= '7' && line[2] >= '0' && line[2] <= '7') {
			c = (char)(((line[0] - '0') << 6) | ((line[1] - '0') << 3) |
			           (line[2] - '0'));
			line += 3;
		}
		if (n + 1 >= mpsz)
			return false;
		mp[n++] = c;
	}
	mp[n] = '\0';
	return n > 0;
}

/* One mountinfo line: when its mount is below path (below the root) and is what a lookup of
 * its mount point finds there (not a mount hidden under another), it is remounted. */
static int remount_if_below(int root, const char *line, const char *path, size_t plen, bool ro,
                            bool dev, bool exec)
{
	char mp[SANDBOX_PATH_MAX + 64];
	long id;
	size_t nr = strlen(SB_NEWROOT), link;

	if (!mountinfo_line(line, &id, mp, sizeof(mp)))
		return strlen(line) >= sizeof(mp) ? ENAMETOOLONG : 0;
	if (strncmp(mp, SB_NEWROOT, nr) != 0 || strncmp(mp + nr, path, plen) != 0 ||
	    mp[nr + plen] != '/')
		return 0;
	snprintf(step_buf, sizeof(step_buf), "remount of %s (a mount below %.*s)", mp + nr,
	         (int)plen, path);
	int fd = walk_below(root, mp + nr, SB_MAKE_NONE, 0, &link);
	/* Hidden below another mount, or out of reach (/sys/kernel/debug is root's, 0700): the
	 * lookup runs as the sandbox's user, with more rights than its command, which cannot
	 * reach that mount either. */
	if (fd == -ENOENT || fd == -EACCES)
		return 0;
	if (fd < 0)
		return -fd;
	int r = fd_mnt_id(fd) == id ? remount_flags(fd, ro, dev, exec) : 0;
	close(fd);
	return r;
}

/* Without mount_setattr: the remounts a bind's tree needs, of its own mount (fd, at path below
 * the root) and of every mount below it that the sandbox can reach, found in
 * /proc/self/mountinfo. 0 or an errno. */
static int remount_tree(int root, const char *path, int fd, bool ro, bool dev, bool exec,
                        const char **step)
{
	static char chunk[4096], line[2 * SANDBOX_PATH_MAX + 512];
	size_t plen = strlen(path), ll = 0;
	bool overlong = false;

	while (plen > 0 && path[plen - 1] == '/')
		plen--;
	int r = remount_flags(fd, ro, dev, exec);
	if (r)
		return r;
	int mi = open("/oldroot/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (mi == -1)
		return errno;
	while (r == 0) {
		ssize_t n = read(mi, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n == 0 ? 0 : errno;
			break;
		}
		for (ssize_t i = 0; i < n && r == 0; i++) {
			if (chunk[i] != '\n') {
				if (ll + 1 < sizeof(line))
					line[ll++] = chunk[i];
				else
					overlong = true;
				continue;
			}
			line[ll] = '\0';
			r = overlong ? ENAMETOOLONG
			             : remount_if_below(root, line, path, plen, ro, dev, exec);
			if (r && !overlong)
				*step = step_buf;
			ll = 0;
			overlong = false;
		}
	}
	close(mi);
	return r;
}

/* Looks path up again from the root and checks that what is there now is want (the root of
 * the mount just made: same device and inode). The fd of the mount, or -errno; -ESTALE where
 * something else is there (*step says so). */
static int check_mounted(int root, const char *path, const struct stat *want, const char *what,
                         const char **step)
{
	struct stat st;
	size_t link;
	int fd = walk_below(root, path, SB_MAKE_NONE, 0, &link);
	if (fd < 0) {
		*step = fd == -ELOOP ? target_link(what, path, link ? link : strlen(path))
		                     : target_moved(what, path);
		return fd;
	}
	if (fstat(fd, &st) == -1 || st.st_dev != want->st_dev || st.st_ino != want->st_ino) {
		close(fd);
		*step = target_moved(what, path);
		return -ESTALE;
	}
	return fd;
}

/* The mount point path (below root) opened as walk_below makes it; -errno with *step set. */
static int open_target(int root, const char *path, sb_make make, mode_t mode, const char *what,
                       const char **step)
{
	size_t link;
	int fd = walk_below(root, path, make, mode, &link);
	if (fd == -ELOOP && link == 0) /* the fast path met it: walk again to name it */
		fd = walk_below(root, path, make, mode, &link);
	if (fd == -ELOOP)
		*step = link ? target_link(what, path, link) : link_refused(what, path);
	return fd;
}

/* The path of op's destination below the new root ("/etc/passwd"). */
static const char *below(const sb_op *op)
{
	return op->dst + strlen(SB_NEWROOT);
}

static int do_bind(int root, const sb_op *op, const char **step)
{
	struct stat st;

	/* Name the host path: as root the lookup runs as outside_uid, which must reach it. The
	 * parent resolved the links only root could have made (resolve_source); any link found
	 * now appeared since, in a place others can write: refused. */
	*step = op->src;
	int src = sb_open_nofollow(op->src);
	if (src < 0) {
		if (src == -ENOENT && !op->must)
			return 0;
		if (src == -ELOOP)
			*step = link_refused("bind source", op->src + strlen("/oldroot"));
		return -src;
	}
	if (fstat(src, &st) == -1) {
		int r = errno;
		close(src);
		return r;
	}
	*step = op->dst;
	bool dir = S_ISDIR(st.st_mode);
	int to = open_target(root, below(op), dir ? SB_MAKE_DIR : SB_MAKE_FILE, dir ? 0755 : 0444,
	                     "bind target", step);
	if (to < 0) {
		close(src);
		return -to;
	}
	sb_attrs a = { .set = !op->attr_later, .ro = op->ro, .dev = op->dev, .exec = op->exec };
	bool done;
	int r = bind_fd(src, to, &a, &done);
	close(to);
	close(src);
	if (r)
		return r;
	if (!op->verify && done)
		return 0;
	int fd = check_mounted(root, below(op), &st, "bind target", step);
	if (fd < 0)
		return -fd;
	r = done ? 0 : remount_tree(root, below(op), fd, op->ro, op->dev, op->exec, step);
	close(fd);
	return r;
}

/* A new tmpfs or proc on op's destination: mounted on the stage, then moved onto the mount
 * point's fd. */
static int do_fs(int root, const sb_op *op, const char *type, unsigned long flags, const char *data,
                 mode_t mode, const char **step)
{
	struct stat st;
	char onto[64];

	int to = open_target(root, below(op), SB_MAKE_DIR, mode, "mount point", step);
	if (to < 0)
		return -to;
	int r = 0;
	if (mount(type, SB_STAGE, type, flags, data) == -1 ||
	    (op->verify && stat(SB_STAGE, &st) == -1))
		r = errno;
	else if (syscall(SYS_move_mount, AT_FDCWD, SB_STAGE, to, "", MOVE_MOUNT_T_EMPTY_PATH) ==
	         -1) {
		r = errno;
		if (r == ENOSYS) {
			fd_path(onto, sizeof(onto), to);
			r = mount(SB_STAGE, onto, NULL, MS_MOVE, NULL) == -1 ? errno : 0;
		}
	}
	close(to);
	if (r || !op->verify)
		return r;
	int fd = check_mounted(root, below(op), &st, "mount point", step);
	if (fd < 0)
		return -fd;
	close(fd);
	return 0;
}

/* SB_OP_RO: dst bound on itself read-only (nosuid, nodev), when it exists. */
static int do_ro(int root, const sb_op *op, const char **step)
{
	struct stat st;
	size_t link;

	int at = walk_below(root, below(op), SB_MAKE_NONE, 0, &link);
	if (at == -ENOENT)
		return 0;
	if (at < 0) {
		if (at == -ELOOP)
			*step = target_link("mount point", below(op),
			                    link ? link : strlen(below(op)));
		return -at;
	}
	sb_attrs a = { .set = true, .ro = true, .dev = false, .exec = true };
	bool done = false;
	int r = fstat(at, &st) == -1 ? errno : bind_fd(at, at, &a, &done);
	close(at);
	if (r)
		return r;
	if (!op->verify && done)
		return 0;
	int fd = check_mounted(root, below(op), &st, "mount point", step);
	if (fd < 0)
		return -fd;
	r = done ? 0 : remount_tree(root, below(op), fd, true, false, true, step);
	close(fd);
	return r;
}

/* SB_OP_ATTRS: nosuid+noexec over dst's tree at once, and with ro dst's own mount read-only;
 * without mount_setattr, the binds that waited for it (attr_later, listed before it) are
 * remounted one by one. */
static int do_attrs(int root, const sb_mounts *m, size_t at, const char **step)
{
	const sb_op *op = &m->ops[at];
	size_t link;
	int fd = walk_below(root, below(op), SB_MAKE_NONE, 0, &link);
	if (fd < 0)
		return -fd;
	int r = add_attrs(fd, false, true, false, true);
	if (r == 0 && op->ro)
		r = add_attrs(fd, true, true, false, false);
	if (r != ENOSYS) {
		close(fd);
		return r;
	}
	r = op->ro ? remount_flags(fd, true, false, false) : 0;
	close(fd);
	for (size_t i = 0; r == 0 && i < at; i++) {
		const sb_op *b = &m->ops[i];
		if (b->kind != SB_OP_BIND || !b->attr_later)
			continue;
		*step = b->dst;
		if ((fd = walk_below(root, below(b), SB_MAKE_NONE, 0, &link)) == -ENOENT)
			continue; /* an optional node that was not there */
		if (fd < 0)
			return -fd;
		r = remount_flags(fd, b->ro, b->dev, b->exec);
		close(fd);
	}
	return r;
}

/* SB_OP_FILE and SB_OP_SYMLINK: made in their parent directory's fd. */
static int do_entry(int root, const sb_op *op, const char **step)
{
	char parent[SANDBOX_PATH_MAX + 16];
	const char *path = below(op), *slash = strrchr(path, '/');

	if (slash == NULL || (size_t)(slash - path) >= sizeof(parent) || slash[1] == '\0')
		return EINVAL;
	size_t n = (size_t)(slash - path);
	memcpy(parent, path, n);
	parent[n] = '\0';
	int dir = n == 0 ? root : open_target(root, parent, SB_MAKE_DIR, 0755, "mount point", step);
	if (dir < 0)
		return -dir;
	int r = 0, fd = -1;
	if (op->kind == SB_OP_SYMLINK) {
		if (symlinkat(op->src, dir, slash + 1) == -1 && errno != EEXIST)
			r = errno;
	} else {
		fd = openat(dir, slash + 1, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		            op->mode);
		r = fd == -1 ? errno : 0;
	}
	if (dir != root)
		close(dir);
	size_t len = op->kind == SB_OP_FILE ? strlen(op->src) : 0, off = 0;
	while (r == 0 && off < len) {
		ssize_t w = write(fd, op->src + off, len - off);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			r = w == -1 ? errno : EIO;
		else
			off += (size_t)w;
	}
	if (fd != -1)
		close(fd);
	return r;
}

static int do_op(int root, const sb_op *op, const char **step)
{
	int fd;

	*step = op->dst;
	switch (op->kind) {
	case SB_OP_DIR:
		fd = open_target(root, below(op), SB_MAKE_DIR, op->mode, "mount point", step);
		if (fd < 0)
			return -fd;
		close(fd);
		return 0;
	case SB_OP_BIND:
		return do_bind(root, op, step);
	case SB_OP_TMPFS:
		return do_fs(root, op, "tmpfs", MS_NOSUID | MS_NODEV | (op->exec ? 0 : MS_NOEXEC),
		             op->src, 0755, step);
	case SB_OP_SYMLINK:
	case SB_OP_FILE:
		return do_entry(root, op, step);
	case SB_OP_PROC:
		return do_fs(root, op, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555, step);
	case SB_OP_RO:
		return do_ro(root, op, step);
	case SB_OP_ATTRS:
		return EINVAL; /* sb_mounts_apply runs it: it needs the ops before it */
	}
	return EINVAL;
}

int sb_mounts_apply(const sb_mounts *m, const char **step)
{
	int r = 0;

	*step = "make / a slave mount";
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) == -1)
		return errno;
	*step = "tmpfs on " SB_BASE;
	if (mount("tmpfs", SB_BASE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") == -1)
		return errno;
	*step = "first pivot_root";
	if (chdir(SB_BASE) == -1 || mkdir("newroot", 0755) == -1 || mkdir("oldroot", 0755) == -1 ||
	    mkdir("stage", 0700) == -1)
		return errno;
	if (syscall(SYS_pivot_root, SB_BASE, SB_BASE "/oldroot") == -1)
		return errno;
	if (chdir("/") == -1)
		return errno;
	*step = "tmpfs for the new root";
	if (mount("tmpfs", SB_NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") == -1)
		return errno;
	int root = open(SB_NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root == -1)
		return errno;
	for (size_t i = 0; i < m->n && r == 0; i++) {
		if (m->ops[i].kind == SB_OP_ATTRS) {
			*step = m->ops[i].dst;
			r = do_attrs(root, m, i, step);
		} else {
			r = do_op(root, &m->ops[i], step);
		}
	}
	close(root);
	if (r != 0)
		return r;
	*step = "detach the host root";
	if (umount2("/oldroot", MNT_DETACH) == -1)
		return errno;
	*step = "second pivot_root";
	if (chdir(SB_NEWROOT) == -1)
		return errno;
	if (syscall(SYS_pivot_root, ".", ".") == -1)
		return errno;
	if (umount2(".", MNT_DETACH) == -1)
		return errno;
	if (chdir("/") == -1)
		return errno;
	*step = "read-only root";
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) ==
	    -1)
		return errno;
	return 0;
}
