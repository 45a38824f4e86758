/*
 * Mounts: the new root is a tmpfs reached by pivot_root, built from a plan the parent prepared.
 * As bubblewrap does, the child first pivots into a tmpfs over /tmp (private to its mount
 * namespace) with the host root at /oldroot, builds /newroot from /oldroot sources, drops the
 * host root and pivots again. A bind's flags (read-only, nosuid, nodev, noexec) are added with
 * mount_setattr (Linux 5.12), which only sets what it is given, so the source's locked flags
 * stay as a user namespace requires; the /dev nodes get theirs in one recursive call. Where
 * mount_setattr is missing, read-only bind remounts repeat the source's locked flags (nosuid,
 * nodev, noexec, atime).
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

	return CUSTOS_OK;
}

/* ------------------------------------------------------------------ child side: syscalls only */

/* Makes path and its missing parents. The path itself is tried first and the walk goes up
 * only while the kernel answers ENOENT, so an op whose parent exists costs one mkdir, not one
 * per component (most targets' parents exist: /newroot/etc, /newroot/dev ...). */
static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[SANDBOX_PATH_MAX + 16];
	size_t n = strlen(path), end = n;

	if (n == 0 || n >= sizeof(tmp))
		return n ? ENAMETOOLONG : ENOENT;
	memcpy(tmp, path, n + 1);
	for (;;) {
		if (mkdir(tmp, end == n ? mode : 0755) == 0 || errno == EEXIST)
			break;
		if (errno != ENOENT)
			return errno;
		char *slash = strrchr(tmp, '/');
		if (slash == NULL || slash == tmp)
			return ENOENT;
		*slash = '\0';
		end = (size_t)(slash - tmp);
	}
	/* Back down: each cut was a '/', the next '\0' ends the next directory. */
	while (end < n) {
		tmp[end] = '/';
		end += strlen(tmp + end);
		if (mkdir(tmp, end == n ? mode : 0755) == -1 && errno != EEXIST)
			return errno;
	}
	return 0;
}

static int parent_dir(const char *path)
{
	char tmp[SANDBOX_PATH_MAX + 16];
	size_t n = strlen(path);

	if (n >= sizeof(tmp))
		return ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	char *slash = strrchr(tmp, '/');
	if (slash == NULL || slash == tmp)
		return 0;
	*slash = '\0';
	return mkdir_p(tmp, 0755);
}

/* A mount point file: created first, its parents only when that fails with ENOENT. */
static int make_file(const char *path, int flags, mode_t mode)
{
	int fd = open(path, flags, mode);
	if (fd == -1 && errno == ENOENT) {
		int r = parent_dir(path);
		if (r)
			return -r;
		fd = open(path, flags, mode);
	}
	return fd == -1 ? -errno : fd;
}

/* Flags a remount in a user namespace must repeat: the ones locked on the source. */
static unsigned long locked_flags(const char *path)
{
	struct statvfs sv;
	unsigned long f = 0;

	if (statvfs(path, &sv) == -1)
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

/* Adds attributes to the mount at path (and with rec those below it); never clears one. 0, an
 * errno, or ENOSYS where mount_setattr is missing (kernel or C library): remount instead. */
static int add_attrs(const char *path, bool ro, bool dev, bool exec, bool rec)
{
#ifdef MOUNT_ATTR_RDONLY
	struct mount_attr a;
	memset(&a, 0, sizeof(a));
	a.attr_set = MOUNT_ATTR_NOSUID | (ro ? MOUNT_ATTR_RDONLY : 0) |
	             (dev ? 0 : MOUNT_ATTR_NODEV) | (exec ? 0 : MOUNT_ATTR_NOEXEC);
	if (mount_setattr(AT_FDCWD, path, rec ? AT_RECURSIVE : 0, &a, sizeof(a)) == 0)
		return 0;
	return errno == ENOSYS ? ENOSYS : errno;
#else
	(void)path, (void)ro, (void)dev, (void)exec, (void)rec;
	return ENOSYS;
#endif
}

/* The remount the attributes need without mount_setattr. */
static int remount_flags(const char *path, bool ro, bool dev, bool exec)
{
	unsigned long f = locked_flags(path) | MS_NOSUID;
	if (!dev)
		f |= MS_NODEV;
	if (!exec)
		f |= MS_NOEXEC;
	if (ro)
		f |= MS_RDONLY;
	if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | f, NULL) == -1)
		return errno;
	return 0;
}

/* Opens path (O_PATH) without following any symbolic link on the way, magic links included:
 * openat2 RESOLVE_NO_SYMLINKS (Linux 5.6), else a walk component by component with
 * O_NOFOLLOW. The fd or -errno; -ELOOP for a link. */
static int open_nofollow(const char *path)
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

/* Bind-mounts the tree at the O_PATH fd src (with what is mounted below it) on dst, which is
 * opened without following links too: open_tree + move_mount (Linux 5.2), else mount(2)
 * through the fd's /proc link (the host's /proc, at /oldroot/proc while the root is built). */
static int mount_fd(int src, const char *dst)
{
	int to = open_nofollow(dst);
	if (to < 0)
		return -to;
	int r = 0;
	long tree = syscall(SYS_open_tree, src, "",
	                    OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
	if (tree >= 0) {
		if (syscall(SYS_move_mount, (int)tree, "", to, "",
		            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) == -1)
			r = errno;
		close((int)tree);
	} else if (errno == ENOSYS) {
		char from[64], onto[64];
		snprintf(from, sizeof(from), "/oldroot/proc/self/fd/%d", src);
		snprintf(onto, sizeof(onto), "/oldroot/proc/self/fd/%d", to);
		if (mount(from, onto, NULL, MS_BIND | MS_REC, NULL) == -1)
			r = errno;
	} else {
		r = errno;
	}
	close(to);
	return r;
}

/* Step names for a refused link: built in the child (no allocation: one static buffer, the
 * child is single-threaded and ends at its first failure). */
static char link_step[SANDBOX_PATH_MAX + 160];

static const char *link_refused(const char *what, const char *path)
{
	snprintf(link_step, sizeof(link_step),
	         "%s %s (a symbolic link on the way, which custos does not follow: the sandbox "
	         "may have made it)",
	         what, path);
	return link_step;
}

static int do_bind(const sb_op *op, const char **step)
{
	struct stat st;

	/* Name the host path: as root the lookup runs as outside_uid, which must reach it. The
	 * parent resolved the links only root could have made (resolve_source); any link found
	 * now appeared since, in a place others can write: refused. */
	*step = op->src;
	int src = open_nofollow(op->src);
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
	if (S_ISDIR(st.st_mode)) {
		int r = mkdir_p(op->dst, 0755);
		if (r) {
			close(src);
			return r;
		}
	} else {
		int fd = make_file(op->dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
		if (fd < 0 && fd != -EEXIST) {
			close(src);
			return -fd;
		}
		if (fd >= 0)
			close(fd);
	}
	int r = mount_fd(src, op->dst);
	close(src);
	if (r == ELOOP)
		*step = link_refused("bind target", op->dst + strlen("/newroot"));
	if (r)
		return r;
	if (op->attr_later)
		return 0;
	r = add_attrs(op->dst, op->ro, op->dev, op->exec, false);
	return r == ENOSYS ? remount_flags(op->dst, op->ro, op->dev, op->exec) : r;
}

/* SB_OP_ATTRS: nosuid+noexec over dst's tree at once, and with ro dst's own mount read-only;
 * without mount_setattr, the binds that waited for it (attr_later, listed before it) are
 * remounted one by one. */
static int do_attrs(const sb_mounts *m, size_t at)
{
	const sb_op *op = &m->ops[at];
	int r = add_attrs(op->dst, false, true, false, true);
	if (r == 0 && op->ro)
		r = add_attrs(op->dst, true, true, false, false);
	if (r != ENOSYS)
		return r;
	if (op->ro && (r = remount_flags(op->dst, true, false, false)) != 0)
		return r;
	for (size_t i = 0; i < at; i++) {
		const sb_op *b = &m->ops[i];
		struct stat st;
		if (b->kind != SB_OP_BIND || !b->attr_later || lstat(b->dst, &st) == -1)
			continue;
		if ((r = remount_flags(b->dst, b->ro, b->dev, b->exec)) != 0)
			return r;
	}
	return 0;
}

static int do_op(const sb_op *op, const char **step)
{
	int r, fd;

	*step = op->dst;
	switch (op->kind) {
	case SB_OP_DIR:
		return mkdir_p(op->dst, op->mode);
	case SB_OP_BIND:
		return do_bind(op, step);
	case SB_OP_TMPFS: {
		if ((r = mkdir_p(op->dst, 0755)) != 0)
			return r;
		unsigned long f = MS_NOSUID | MS_NODEV | (op->exec ? 0 : MS_NOEXEC);
		if (mount("tmpfs", op->dst, "tmpfs", f, op->src) == -1)
			return errno;
		return 0;
	}
	case SB_OP_SYMLINK:
		if (symlink(op->src, op->dst) == 0 || errno == EEXIST)
			return 0;
		if (errno != ENOENT)
			return errno;
		if ((r = parent_dir(op->dst)) != 0)
			return r;
		if (symlink(op->src, op->dst) == -1 && errno != EEXIST)
			return errno;
		return 0;
	case SB_OP_FILE: {
		fd = make_file(op->dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		               op->mode);
		if (fd < 0)
			return -fd;
		size_t len = strlen(op->src), off = 0;
		while (off < len) {
			ssize_t w = write(fd, op->src + off, len - off);
			if (w == -1 && errno == EINTR)
				continue;
			if (w <= 0) {
				r = errno ? errno : EIO;
				close(fd);
				return r;
			}
			off += (size_t)w;
		}
		close(fd);
		return 0;
	}
	case SB_OP_PROC:
		if ((r = mkdir_p(op->dst, 0555)) != 0)
			return r;
		if (mount("proc", op->dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == -1)
			return errno;
		return 0;
	case SB_OP_RO: {
		struct stat st;
		if (lstat(op->dst, &st) == -1)
			return 0;
		if (mount(op->dst, op->dst, NULL, MS_BIND | MS_REC, NULL) == -1)
			return errno;
		r = add_attrs(op->dst, true, false, true, false);
		if (r != ENOSYS)
			return r;
		unsigned long f = locked_flags(op->dst) | MS_RDONLY | MS_NOSUID | MS_NODEV;
		if (mount(NULL, op->dst, NULL, MS_REMOUNT | MS_BIND | f, NULL) == -1)
			return errno;
		return 0;
	}
	case SB_OP_ATTRS:
		return EINVAL; /* sb_mounts_apply runs it: it needs the ops before it */
	}
	return EINVAL;
}

int sb_mounts_apply(const sb_mounts *m, const char **step)
{
	int r;

	*step = "make / a slave mount";
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) == -1)
		return errno;
	*step = "tmpfs on " SB_BASE;
	if (mount("tmpfs", SB_BASE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") == -1)
		return errno;
	*step = "first pivot_root";
	if (chdir(SB_BASE) == -1 || mkdir("newroot", 0755) == -1 || mkdir("oldroot", 0755) == -1)
		return errno;
	if (syscall(SYS_pivot_root, SB_BASE, SB_BASE "/oldroot") == -1)
		return errno;
	if (chdir("/") == -1)
		return errno;
	*step = "tmpfs for the new root";
	if (mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") == -1)
		return errno;
	for (size_t i = 0; i < m->n; i++) {
		if (m->ops[i].kind == SB_OP_ATTRS) {
			*step = m->ops[i].dst;
			r = do_attrs(m, i);
		} else {
			r = do_op(&m->ops[i], step);
		}
		if (r != 0)
			return r;
	}
	*step = "detach the host root";
	if (umount2("/oldroot", MNT_DETACH) == -1)
		return errno;
	*step = "second pivot_root";
	if (chdir("/newroot") == -1)
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
