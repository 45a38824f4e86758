/*
 * Landlock: a second layer under the mount view. The ABI is probed at run time (1 to 7) and the
 * handled rights follow it; structs and flags newer than Debian 12's headers (ABI 2) are
 * declared here. Files: read/execute below /, read-write below scratch and writable binds,
 * device files with ioctl (ABI 5). TCP bind/connect ports (ABI 4). Abstract Unix sockets and
 * signals scoped to the sandbox (ABI 6).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sb_int.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule       445
#define SYS_landlock_restrict_self  446
#endif

struct sb_ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4 */
	uint64_t scoped;             /* ABI 6 */
};
struct sb_ll_path_beneath {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));
struct sb_ll_net_port {
	uint64_t allowed_access;
	uint64_t port;
};

#define SB_LL_CREATE_RULESET_VERSION (1U << 0)
#define SB_LL_RULE_PATH_BENEATH      1
#define SB_LL_RULE_NET_PORT          2
#define SB_LL_NET_BIND_TCP           (1ULL << 0)
#define SB_LL_NET_CONNECT_TCP        (1ULL << 1)
#define SB_LL_SCOPE_ABSTRACT_UNIX    (1ULL << 0)
#define SB_LL_SCOPE_SIGNAL           (1ULL << 1)

int sandbox_landlock_abi(void)
{
	long v = syscall(SYS_landlock_create_ruleset, NULL, 0, SB_LL_CREATE_RULESET_VERSION);
	return v < 0 ? 0 : (int)v;
}

uint64_t sb_landlock_fs_mask(int abi)
{
	uint64_t m = 0;
	if (abi >= 1)
		m = SB_LL_FS_ALL_V1;
	if (abi >= 2)
		m |= SB_LL_FS_REFER;
	if (abi >= 3)
		m |= SB_LL_FS_TRUNCATE;
	if (abi >= 5)
		m |= SB_LL_FS_IOCTL_DEV;
	return m;
}

static custos_err add(sb_landlock *l, const char *path, uint64_t access)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 16;
		sb_landlock_rule *r = realloc(l->rules, nc * sizeof(*r));
		ENSURE(r != NULL, CUSTOS_ERR_NOMEM, "landlock: out of memory");
		l->rules = r;
		l->cap = nc;
	}
	l->rules[l->n].path = xstrdup(path);
	l->rules[l->n].access = access;
	l->n++;
	return CUSTOS_OK;
}

custos_err sb_landlock_plan(const sandbox_profile *p, sb_landlock *l)
{
	memset(l, 0, sizeof(*l));
	if (!p->landlock)
		return CUSTOS_OK;
	l->enabled = true;
	l->no_links = true;
	l->required = p->landlock_required;
	l->abi = sandbox_landlock_abi();
	ENSURE(l->abi > 0 || !l->required, CUSTOS_ERR_UNSUPPORTED,
	       "landlock: required by profile '%s' but absent from this kernel", p->name);
	const char *scratch = p->scratch_target ? p->scratch_target : "/tmp";
	GUARD(add(l, "/", SB_LL_FS_READ));
	GUARD(add(l, scratch, SB_LL_FS_READ | SB_LL_FS_WRITE));
	GUARD(add(l, "/dev",
	          SB_LL_FS_READ_FILE | SB_LL_FS_WRITE_FILE | SB_LL_FS_READ_DIR |
	                  SB_LL_FS_IOCTL_DEV | SB_LL_FS_TRUNCATE));
	GUARD(add(l, "/dev/shm", SB_LL_FS_READ | SB_LL_FS_WRITE));
	for (size_t i = 0; i < p->n_binds; i++)
		if (p->binds[i].writable)
			GUARD(add(l, p->binds[i].dst ? p->binds[i].dst : p->binds[i].src,
			          SB_LL_FS_READ | SB_LL_FS_WRITE));
	l->restrict_tcp = p->restrict_tcp;
	for (size_t i = 0; i < p->n_tcp_bind; i++)
		l->bind_ports[l->n_bind++] = p->tcp_bind[i];
	for (size_t i = 0; i < p->n_tcp_connect; i++)
		l->connect_ports[l->n_connect++] = p->tcp_connect[i];
	ENSURE(!l->restrict_tcp || l->abi >= 4 || !l->required, CUSTOS_ERR_UNSUPPORTED,
	       "landlock: TCP rules need ABI 4, kernel has %d", l->abi);
	l->scope = true;
	return CUSTOS_OK;
}

void sb_landlock_free(sb_landlock *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->rules[i].path);
	free(l->rules);
	memset(l, 0, sizeof(*l));
}

/* The step that names a refused rule path (the child is single-threaded and ends at its first
 * failure: one static buffer). */
static char rule_step[SANDBOX_PATH_MAX + 128];

/* Runs in the child: system calls only. */
int sb_landlock_apply(const sb_landlock *l, const char **step)
{
	struct sb_ll_ruleset_attr attr = { 0 };
	size_t attr_size = sizeof(uint64_t);
	int rfd, err;

	if (!l->enabled || l->abi <= 0)
		return 0;
	uint64_t fsmask = sb_landlock_fs_mask(l->abi);
	attr.handled_access_fs = fsmask;
	if (l->abi >= 4 && l->restrict_tcp) {
		attr.handled_access_net = SB_LL_NET_BIND_TCP | SB_LL_NET_CONNECT_TCP;
		attr_size = 2 * sizeof(uint64_t);
	}
	if (l->abi >= 6 && l->scope) {
		attr.scoped = SB_LL_SCOPE_ABSTRACT_UNIX | SB_LL_SCOPE_SIGNAL;
		attr_size = sizeof(attr);
	}
	*step = "landlock_create_ruleset";
	rfd = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	if (rfd == -1)
		return errno;
	for (size_t i = 0; i < l->n; i++) {
		struct sb_ll_path_beneath pb;
		/* In a sandbox no link is followed: a rule's path is a mount point (or nothing: an
		 * optional bind whose source was missing), and a link there, which the sandbox may
		 * have left in a writable bind, would carry the rule's rights to where it points
		 * (/proc). The proxy's own paths are the administrator's: followed. */
		int pfd = l->no_links ? sb_open_nofollow(l->rules[i].path)
		                      : open(l->rules[i].path, O_PATH | O_CLOEXEC);
		if (pfd == -1)
			pfd = -errno;
		if (pfd < 0) {
			if (pfd == -ENOENT)
				continue;
			if (pfd == -ELOOP && l->no_links) {
				snprintf(rule_step, sizeof(rule_step),
				         "landlock: rule path %s (a symbolic link on the way, "
				         "which custos "
				         "does not follow: the sandbox may have made it)",
				         l->rules[i].path);
				*step = rule_step;
			} else {
				*step = "landlock: open rule path";
			}
			close(rfd);
			return -pfd;
		}
		pb.allowed_access = l->rules[i].access & fsmask;
		pb.parent_fd = pfd;
		/* Directory-only rights on a file are refused: keep file rights for files. */
		struct stat st;
		if (fstat(pfd, &st) == 0 && !S_ISDIR(st.st_mode))
			pb.allowed_access &= SB_LL_FS_EXECUTE | SB_LL_FS_WRITE_FILE |
			                     SB_LL_FS_READ_FILE | SB_LL_FS_TRUNCATE |
			                     SB_LL_FS_IOCTL_DEV;
		long rc = syscall(SYS_landlock_add_rule, rfd, SB_LL_RULE_PATH_BENEATH, &pb, 0);
		err = errno;
		close(pfd);
		if (rc == -1) {
			*step = "landlock_add_rule (path)";
			close(rfd);
			return err;
		}
	}
	if (attr.handled_access_net) {
		for (size_t i = 0; i < l->n_bind + l->n_connect; i++) {
			struct sb_ll_net_port np;
			if (i < l->n_bind) {
				np.allowed_access = SB_LL_NET_BIND_TCP;
				np.port = l->bind_ports[i];
			} else {
				np.allowed_access = SB_LL_NET_CONNECT_TCP;
				np.port = l->connect_ports[i - l->n_bind];
			}
			if (syscall(SYS_landlock_add_rule, rfd, SB_LL_RULE_NET_PORT, &np, 0) ==
			    -1) {
				*step = "landlock_add_rule (port)";
				err = errno;
				close(rfd);
				return err;
			}
		}
	}
	*step = "landlock_restrict_self";
	if (syscall(SYS_landlock_restrict_self, rfd, 0) == -1) {
		err = errno;
		close(rfd);
		return err;
	}
	close(rfd);
	return 0;
}

custos_err sb_landlock_apply_paths(const char *const *ro, size_t n_ro, const char *const *rw,
                                   size_t n_rw, bool required)
{
	sb_landlock l;
	const char *step = "";
	custos_err e = CUSTOS_OK;

	memset(&l, 0, sizeof(l));
	l.enabled = true;
	l.abi = sandbox_landlock_abi();
	if (l.abi <= 0) {
		ENSURE(!required, CUSTOS_ERR_UNSUPPORTED, "landlock: absent from this kernel");
		return CUSTOS_OK;
	}
	for (size_t i = 0; i < n_ro && e == CUSTOS_OK; i++)
		e = add(&l, ro[i], SB_LL_FS_READ);
	for (size_t i = 0; i < n_rw && e == CUSTOS_OK; i++)
		e = add(&l, rw[i], SB_LL_FS_READ | SB_LL_FS_WRITE);
	/* The proxy signals nobody outside itself and uses no abstract sockets of others. */
	l.scope = true;
	if (e == CUSTOS_OK) {
		int rc = sb_landlock_apply(&l, &step);
		if (rc != 0) {
			errno = rc;
			e = err_sys("landlock: %s", step);
		}
	}
	sb_landlock_free(&l);
	return e;
}

custos_err sandbox_landlock_narrow(const char *const *read_paths, size_t n_read_paths,
                                   const char *const *write_paths, size_t n_write_paths,
                                   bool required)
{
	ENSURE(n_read_paths <= SANDBOX_MAX_BINDS && n_write_paths <= SANDBOX_MAX_BINDS,
	       CUSTOS_ERR_LIMIT, "landlock: too many paths");
	return sb_landlock_apply_paths(read_paths, n_read_paths, write_paths, n_write_paths,
	                               required);
}
