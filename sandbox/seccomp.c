/*
 * seccomp: the allow-lists (default, gpu, custom), the always-denied set, compilation with
 * libseccomp into a BPF program in the parent, and loading it in the child with a user
 * notification listener, so every denied call reaches the supervisor, which answers EPERM and
 * reports the syscall by name. Unknown architectures are killed; libseccomp also rejects x32
 * calls on x86_64 through the same bad-arch action.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "custos/config.h"
#include "sb_int.h"

/* Calls libseccomp 2.5.4 has no names for (Linux >= 5.19 mostly): the generic numbers, which
 * x86_64 and aarch64 share from 424 on. */
static const struct {
	int nr;
	const char *name;
} newer_calls[] = {
	{ 424, "pidfd_send_signal" },
	{ 425, "io_uring_setup" },
	{ 426, "io_uring_enter" },
	{ 427, "io_uring_register" },
	{ 428, "open_tree" },
	{ 429, "move_mount" },
	{ 430, "fsopen" },
	{ 431, "fsconfig" },
	{ 432, "fsmount" },
	{ 433, "fspick" },
	{ 434, "pidfd_open" },
	{ 435, "clone3" },
	{ 436, "close_range" },
	{ 437, "openat2" },
	{ 438, "pidfd_getfd" },
	{ 439, "faccessat2" },
	{ 440, "process_madvise" },
	{ 441, "epoll_pwait2" },
	{ 442, "mount_setattr" },
	{ 443, "quotactl_fd" },
	{ 444, "landlock_create_ruleset" },
	{ 445, "landlock_add_rule" },
	{ 446, "landlock_restrict_self" },
	{ 447, "memfd_secret" },
	{ 448, "process_mrelease" },
	{ 449, "futex_waitv" },
	{ 450, "set_mempolicy_home_node" },
	{ 451, "cachestat" },
	{ 452, "fchmodat2" },
	{ 453, "map_shadow_stack" },
	{ 454, "futex_wake" },
	{ 455, "futex_wait" },
	{ 456, "futex_requeue" },
	{ 457, "statmount" },
	{ 458, "listmount" },
	{ 459, "lsm_get_self_attr" },
	{ 460, "lsm_set_self_attr" },
	{ 461, "lsm_list_modules" },
	{ 462, "mseal" },
	{ 463, "setxattrat" },
	{ 464, "getxattrat" },
	{ 465, "listxattrat" },
	{ 466, "removexattrat" },
	{ 467, "open_tree_attr" },
};

/* The list lives in core (config_always_denied_syscalls) so that `config check` refuses what
 * the sandbox would refuse: one list, no drift. */
const char *const *sandbox_seccomp_always_denied(void)
{
	return config_always_denied_syscalls();
}

bool sb_seccomp_is_denied(const char *name)
{
	const char *const *d = config_always_denied_syscalls();
	for (size_t i = 0; d[i]; i++)
		if (strcmp(d[i], name) == 0)
			return true;
	return false;
}

int sb_seccomp_resolve(const char *name)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr != __NR_SCMP_ERROR && nr >= 0)
		return nr;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(newer_calls); i++)
		if (strcmp(newer_calls[i].name, name) == 0)
			return newer_calls[i].nr;
	return -1;
}

bool sandbox_syscall_known(const char *name)
{
	return name != NULL && sb_seccomp_resolve(name) >= 0;
}

const char *sandbox_syscall_name(uint32_t arch, int nr, char *out, size_t outsz)
{
	char *n = seccomp_syscall_resolve_num_arch(arch, nr);

	if (n) {
		snprintf(out, outsz, "%s", n);
		free(n);
		return out;
	}
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(newer_calls); i++)
		if (newer_calls[i].nr == nr) {
			snprintf(out, outsz, "%s", newer_calls[i].name);
			return out;
		}
	snprintf(out, outsz, "syscall_%d", nr);
	return out;
}

/* What a model server (Python, llama.cpp, node) needs: files, memory, threads, futex, epoll,
 * timers, signals, sockets (family-filtered below), SysV IPC inside its own ipc namespace. */
static const char *const allow_default[] = {
	/* files */
	/* (open, openat, creat and the chmod family are mode-filtered: add_mode_filtered) */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
	"pwritev2", "close", "close_range", "stat", "fstat", "lstat", "newfstatat", "statx",
	"statfs", "fstatfs", "lseek", "access", "faccessat", "faccessat2", "getdents", "getdents64",
	"readlink", "readlinkat", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
	"unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
	"symlinkat", "chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate", "fallocate",
	"fsync", "fdatasync", "sync_file_range", "syncfs", "flock", "fcntl", "dup", "dup2", "dup3",
	"pipe", "pipe2", "utime", "utimes", "utimensat", "futimesat", "umask", "getxattr",
	"lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "sendfile", "splice",
	"tee", "vmsplice", "copy_file_range", "fadvise64", "readahead", "inotify_init",
	"inotify_init1", "inotify_add_watch", "inotify_rm_watch", "memfd_create", "cachestat",
	/* memory */
	"mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "msync", "mincore", "mlock",
	"mlock2", "munlock", "mlockall", "munlockall", "membarrier", "get_mempolicy",
	"set_mempolicy", "mbind", "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack",
	/* processes and threads (clone is flag-filtered below) */
	"fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill",
	"tgkill", "tkill", "getpid", "gettid", "getppid", "getpgid", "getpgrp", "setpgid", "getsid",
	"setsid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
	"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
	"set_tid_address", "set_robust_list", "get_robust_list", "rseq", "prctl", "arch_prctl",
	"sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
	"sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getattr", "sched_setattr", "sched_rr_get_interval",
	"getpriority", "setpriority", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit",
	"prlimit64", "getrusage", "times", "sysinfo", "uname", "capget", "capset", "getcpu",
	"pidfd_open", "pidfd_send_signal", "seccomp", "landlock_create_ruleset",
	"landlock_add_rule", "landlock_restrict_self", "futex", "futex_waitv", "futex_wake",
	"futex_wait", "futex_requeue",
	/* signals and time */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "restart_syscall", "rt_sigsuspend",
	"rt_sigpending", "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack",
	"signalfd", "signalfd4", "pause", "alarm", "clock_gettime", "clock_getres",
	"clock_nanosleep", "nanosleep", "gettimeofday", "time", "getitimer", "setitimer",
	"timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
	"timerfd_create", "timerfd_settime", "timerfd_gettime",
	/* events */
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"poll", "ppoll", "select", "pselect6", "eventfd", "eventfd2",
	/* sockets (socket and socketpair are family-filtered below) */
	"bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
	"setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg",
	"recvmmsg", "shutdown",
	/* SysV IPC and POSIX queues (private ipc namespace) */
	"shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semctl", "semtimedop", "msgget",
	"msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
	"mq_notify", "mq_getsetattr", "getrandom", NULL
};

/* What the NVIDIA and ROCm user-space stacks add: any ioctl (their device files speak only
 * ioctl), NUMA page moves of their own pages. */
static const char *const allow_gpu[] = { "migrate_pages", "move_pages", NULL };

/* ioctls a model server makes on ttys and sockets. */
static const unsigned long ioctl_default[] = {
	TCGETS,    TCSETS,    TCSETSW,  TCSETSF, TIOCGWINSZ, TIOCSWINSZ,
	TIOCGPGRP, TIOCSPGRP, FIONREAD, FIONBIO, FIOCLEX,    FIONCLEX,
	FIOASYNC,  TIOCOUTQ,  TIOCINQ,  TCFLSH,  0x80045430, /* TIOCGPTN */
};

/* ioctls that reach past the sandbox through a terminal it holds on its stdio: TIOCSTI and
 * TIOCLINUX (selection paste) push input into the terminal's queue, i.e. into the operator's
 * shell; TIOCCONS redirects the console; TIOCSETD changes the line discipline; TIOCNOTTY and
 * TIOCSCTTY give up or take a controlling terminal. Refused in every profile, by request
 * number, before libseccomp's program runs (tty_prefix): the gpu profile, which allows any
 * other ioctl, included. */
static const uint32_t ioctl_tty_denied[] = { TIOCSTI,  TIOCLINUX, TIOCCONS,
	                                     TIOCSETD, TIOCNOTTY, TIOCSCTTY };

#define CLONE_NS_FLAGS                                                                             \
	(CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | \
	 CLONE_NEWCGROUP | CLONE_NEWTIME)

/* Names a profile removed from its base list (set while one filter is compiled). */
typedef struct deny_list {
	const char *const *names;
	size_t n;
} deny_list;

static bool in_deny(const deny_list *d, const char *name)
{
	for (size_t i = 0; d && i < d->n; i++)
		if (strcmp(d->names[i], name) == 0)
			return true;
	return false;
}

static custos_err add_allow(scmp_filter_ctx ctx, const char *name, bool strict)
{
	int nr = sb_seccomp_resolve(name);
	if (nr < 0) {
		/* Names of the portable list that this architecture lacks (open on arm64). */
		ENSURE(!strict, CUSTOS_ERR_INVAL, "seccomp: unknown syscall '%s'", name);
		return CUSTOS_OK;
	}
	int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	ENSURE(rc == 0 || rc == -EEXIST, CUSTOS_ERR_INTERNAL, "seccomp: allow %s: %s", name,
	       strerror(-rc));
	return CUSTOS_OK;
}

static custos_err add_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
                           const struct scmp_arg_cmp *cmp)
{
	int nr = sb_seccomp_resolve(name);
	if (nr < 0)
		return CUSTOS_OK;
	int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
	ENSURE(rc == 0 || rc == -EEXIST, CUSTOS_ERR_INTERNAL, "seccomp: rule %s: %s", name,
	       strerror(-rc));
	return CUSTOS_OK;
}

/* Rules shared by sandboxes and the self-restricted proxy: socket families, types and
 * protocols, clone without namespace flags, the harmless personality values, clone3 answered
 * ENOSYS (its flags live in memory seccomp cannot read, and glibc falls back to clone). */
static custos_err add_filtered(scmp_filter_ctx ctx, const deny_list *d)
{
	/* TCP and UDP over IPv4/IPv6, by protocol 0 or by name: not MPTCP (262), UDP-Lite (136),
	 * SCTP (132) or ICMP, whose kernel code a model server has no use for. */
	static const int fams[] = { AF_INET, AF_INET6 };
	static const struct {
		int type, proto;
	} tp[] = { { SOCK_STREAM, 0 },
		   { SOCK_STREAM, IPPROTO_TCP },
		   { SOCK_DGRAM, 0 },
		   { SOCK_DGRAM, IPPROTO_UDP } };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(fams) && !in_deny(d, "socket"); i++)
		for (size_t j = 0; j < CUSTOS_ARRAY_LEN(tp); j++) {
			struct scmp_arg_cmp c[3] = {
				SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)fams[i], 0),
				SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, (scmp_datum_t)tp[j].type),
				SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)tp[j].proto, 0)
			};
			GUARD(add_rule(ctx, SCMP_ACT_ALLOW, "socket", 3, c));
		}
	struct scmp_arg_cmp unx[2] = { SCMP_A0(SCMP_CMP_EQ, AF_UNIX, 0),
		                       SCMP_A2(SCMP_CMP_EQ, 0, 0) };
	if (!in_deny(d, "socket"))
		GUARD(add_rule(ctx, SCMP_ACT_ALLOW, "socket", 2, unx));
	if (!in_deny(d, "socketpair"))
		GUARD(add_rule(ctx, SCMP_ACT_ALLOW, "socketpair", 2, unx));
	struct scmp_arg_cmp cl = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NS_FLAGS, 0);
	if (!in_deny(d, "clone"))
		GUARD(add_rule(ctx, SCMP_ACT_ALLOW, "clone", 1, &cl));
	GUARD(add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL));
	static const scmp_datum_t pers[] = { 0, 8, 0x20000, 0x20008, 0xffffffff };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(pers) && !in_deny(d, "personality"); i++) {
		struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffff, pers[i]);
		GUARD(add_rule(ctx, SCMP_ACT_ALLOW, "personality", 1, &c));
	}
	return CUSTOS_OK;
}

/* A setuid or setgid file a sandbox leaves in a writable bind (or a `scratch_dir`) is a file
 * of the host, where the bind's nosuid does not hold: run there by anyone, it takes the
 * sandbox's outside uid or gid (nobody, or the unprivileged caller's own ids). So the calls
 * that give a file its mode are allowed only without S_ISUID and S_ISGID in it: chmod,
 * fchmod, fchmodat, fchmodat2, creat; open and openat also whenever they create nothing
 * (neither O_CREAT nor O_TMPFILE: the mode argument is then unused, and need not be clean).
 * Other modes take the default action (the supervisor: EPERM and a violation event). mkdir
 * drops both bits itself, mknod is always denied, setxattr (file capabilities) is not
 * allowed. openat2 carries its mode in a struct seccomp cannot read: it answers ENOSYS, as
 * clone3, and callers (none in glibc) fall back to openat. */
static custos_err add_mode_filtered(scmp_filter_ctx ctx, const deny_list *d)
{
	static const struct {
		const char *name;
		unsigned mode_arg; /* the argument holding the mode */
		int flags_arg;     /* the one holding the open flags, or -1 */
	} calls[] = {
		{ "open", 2, 1 },       { "openat", 3, 2 },  { "creat", 1, -1 },
		{ "chmod", 1, -1 },     { "fchmod", 1, -1 }, { "fchmodat", 2, -1 },
		{ "fchmodat2", 2, -1 },
	};
	const scmp_datum_t suid = S_ISUID | S_ISGID, creating = O_CREAT | __O_TMPFILE;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(calls); i++) {
		if (in_deny(d, calls[i].name))
			continue;
		struct scmp_arg_cmp m = { .arg = calls[i].mode_arg,
			                  .op = SCMP_CMP_MASKED_EQ,
			                  .datum_a = suid,
			                  .datum_b = 0 };
		GUARD(add_rule(ctx, SCMP_ACT_ALLOW, calls[i].name, 1, &m));
		if (calls[i].flags_arg < 0)
			continue;
		struct scmp_arg_cmp f = { .arg = (unsigned)calls[i].flags_arg,
			                  .op = SCMP_CMP_MASKED_EQ,
			                  .datum_a = creating,
			                  .datum_b = 0 };
		GUARD(add_rule(ctx, SCMP_ACT_ALLOW, calls[i].name, 1, &f));
	}
	if (!in_deny(d, "openat2"))
		GUARD(add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "openat2", 0, NULL));
	return CUSTOS_OK;
}

/* Calls the base lists allow only with some arguments (add_filtered, the ioctl requests, and
 * for the proxy the signal targets and the scheduler policy). Named in an extra list (a custom
 * profile's `syscalls`, `extra_syscalls`), they keep those filters: an unconditional rule
 * would replace them (libseccomp keeps the widest rule of one action), and allowing `clone`
 * would allow namespaces, `socket` netlink, `ioctl` TIOCSTI. What a base profile denies
 * outright is what an extra list widens. */
static const char *const arg_filtered[] = {
	"clone", "clone3", "socket", "socketpair", "ioctl",     "personality",
	"kill",  "tgkill", "tkill",  "open",       "openat",    "openat2",
	"creat", "chmod",  "fchmod", "fchmodat",   "fchmodat2", "sched_setscheduler",
	NULL
};

bool sb_seccomp_is_arg_filtered(const char *name)
{
	for (size_t i = 0; arg_filtered[i]; i++)
		if (strcmp(arg_filtered[i], name) == 0)
			return true;
	return false;
}

/* strict: the names come from a profile (unknown ones fail); extra: such a list, whose
 * argument-filtered names keep their filters (arg_filtered). */
static custos_err add_list(scmp_filter_ctx ctx, const char *const *names, size_t n, bool strict,
                           const deny_list *d)
{
	for (size_t i = 0; i < n && names[i]; i++) {
		ENSURE(!sb_seccomp_is_denied(names[i]), CUSTOS_ERR_DENIED,
		       "seccomp: '%s' is always denied", names[i]);
		if (in_deny(d, names[i]) || (strict && sb_seccomp_is_arg_filtered(names[i])))
			continue;
		GUARD(add_allow(ctx, names[i], strict));
	}
	return CUSTOS_OK;
}

static custos_err build_ctx(const sandbox_profile *p, scmp_filter_ctx ctx)
{
	deny_list dl = { p->deny_syscalls, p->n_deny_syscalls };
	GUARD(add_list(ctx, allow_default, SIZE_MAX, false, &dl));
	GUARD(add_filtered(ctx, &dl));
	GUARD(add_mode_filtered(ctx, &dl));
	if (in_deny(&dl, "ioctl")) {
		/* no ioctl at all */
	} else if (p->seccomp == SANDBOX_SECCOMP_GPU || p->gpu != SANDBOX_GPU_NONE) {
		GUARD(add_list(ctx, allow_gpu, SIZE_MAX, false, &dl));
		GUARD(add_allow(ctx, "ioctl", true));
	} else {
		for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ioctl_default); i++) {
			struct scmp_arg_cmp c =
			        SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffff, ioctl_default[i]);
			GUARD(add_rule(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &c));
		}
	}
	if (p->seccomp == SANDBOX_SECCOMP_CUSTOM)
		GUARD(add_list(ctx, p->syscalls, p->n_syscalls, true, NULL));
	return CUSTOS_OK;
}

/* Compiled programs by their inputs: compiling the allow-list with libseccomp costs about two
 * milliseconds, paid once per distinct profile instead of once per spawn (and never for the
 * built-in profiles, compiled at build time). */
#define SB_FILTER_CACHE 8
static struct {
	char *key;
	sb_filter f;
} filter_cache[SB_FILTER_CACHE];
static unsigned filter_cache_next;
static pthread_mutex_t filter_cache_mu = PTHREAD_MUTEX_INITIALIZER;

char *sb_seccomp_key(const sandbox_profile *p)
{
	buf b;
	const char *s;
	char *key = NULL;
	buf_init(&b, 64u * 1024);
	bool gpu = p->seccomp == SANDBOX_SECCOMP_GPU || p->gpu != SANDBOX_GPU_NONE;
	if (buf_printf(&b, "%d/%d", (int)p->seccomp, gpu) != CUSTOS_OK)
		goto out;
	for (size_t i = 0; i < p->n_syscalls && p->seccomp == SANDBOX_SECCOMP_CUSTOM; i++)
		if (buf_printf(&b, ",%s", p->syscalls[i]) != CUSTOS_OK)
			goto out;
	for (size_t i = 0; i < p->n_deny_syscalls; i++)
		if (buf_printf(&b, ",-%s", p->deny_syscalls[i]) != CUSTOS_OK)
			goto out;
	if (buf_cstr(&b, &s) == CUSTOS_OK)
		key = xstrdup(s);
out:
	buf_free(&b);
	return key;
}

static bool filter_copy(sb_filter *dst, const sb_filter *src)
{
	dst->insns = xcalloc(src->len, sizeof(struct sock_filter));
	memcpy(dst->insns, src->insns, src->len * sizeof(struct sock_filter));
	dst->len = src->len;
	return true;
}

static bool builtin_copy(const char *key, sb_filter *f)
{
	uint32_t arch = seccomp_arch_native();
	for (size_t i = 0; i < sb_seccomp_n_builtins; i++) {
		const sb_seccomp_builtin *b = &sb_seccomp_builtins[i];
		if (b->arch == arch && strcmp(b->key, key) == 0) {
			sb_filter src = { .insns = (struct sock_filter *)b->insns, .len = b->len };
			return filter_copy(f, &src);
		}
	}
	return false;
}

custos_err sb_seccomp_build(const sandbox_profile *p, sb_filter *f)
{
	char *key = sb_seccomp_key(p);
	bool hit = false;

	memset(f, 0, sizeof(*f));
	if (key && builtin_copy(key, f)) {
		free(key);
		return CUSTOS_OK;
	}
	if (key) {
		pthread_mutex_lock(&filter_cache_mu);
		for (unsigned i = 0; i < SB_FILTER_CACHE && !hit; i++)
			if (filter_cache[i].key && strcmp(filter_cache[i].key, key) == 0)
				hit = filter_copy(f, &filter_cache[i].f);
		pthread_mutex_unlock(&filter_cache_mu);
	}
	if (hit) {
		free(key);
		return CUSTOS_OK;
	}
	custos_err e = sb_seccomp_compile(p, f);
	if (e == CUSTOS_OK && key) {
		pthread_mutex_lock(&filter_cache_mu);
		unsigned slot = filter_cache_next++ % SB_FILTER_CACHE;
		free(filter_cache[slot].key);
		sb_filter_free(&filter_cache[slot].f);
		filter_cache[slot].key = key;
		key = NULL;
		filter_copy(&filter_cache[slot].f, f);
		pthread_mutex_unlock(&filter_cache_mu);
	}
	free(key);
	return e;
}

/* Prepends to f the check of ioctl_tty_denied: libseccomp cannot express "any ioctl but
 * these" (an unconditional rule swallows conditional ones for the same call, and its 64-bit
 * NE would let a request with high bits set through, while the kernel reads only the low 32
 * bits of it). So a few instructions of our own come first: on the native architecture, an
 * ioctl whose low 32 request bits are one of those goes to the supervisor (user notification:
 * EPERM and a violation event, or the kill of kill_on_violation); anything else falls through
 * to libseccomp's program, which checks the architecture again and ends in its default. */
static custos_err tty_prefix(sb_filter *f)
{
	enum { N = CUSTOS_ARRAY_LEN(ioctl_tty_denied), PRE = 6 + N };
	int nr = sb_seccomp_resolve("ioctl");
	ENSURE(nr >= 0, CUSTOS_ERR_INTERNAL, "seccomp: no number for ioctl");
	ENSURE((size_t)f->len + PRE <= BPF_MAXINSNS, CUSTOS_ERR_LIMIT, "seccomp: program too long");
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint32_t arg1_lo = offsetof(struct seccomp_data, args[1]);
#else
	const uint32_t arg1_lo = offsetof(struct seccomp_data, args[1]) + 4;
#endif
	struct sock_filter *p = xcalloc((size_t)f->len + PRE, sizeof(*p));
	size_t i = 0;
	/* Jump offsets count from the next instruction; PRE is where libseccomp's program starts. */
	p[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
	                                      offsetof(struct seccomp_data, arch));
	p[i] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, seccomp_arch_native(), 0,
	                                    (uint8_t)(PRE - i - 1));
	i++;
	p[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
	                                      offsetof(struct seccomp_data, nr));
	p[i] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0,
	                                    (uint8_t)(PRE - i - 1));
	i++;
	p[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg1_lo);
	for (size_t k = 0; k < N; k++, i++) /* match: to the RET below; else the next test */
		p[i] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ioctl_tty_denied[k],
		                                    (uint8_t)(N - k - 1), k + 1 == N ? 1 : 0);
	p[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	memcpy(p + i, f->insns, f->len * sizeof(*p));
	free(f->insns);
	f->insns = p;
	f->len = (unsigned short)(f->len + PRE);
	return CUSTOS_OK;
}

custos_err sb_seccomp_compile(const sandbox_profile *p, sb_filter *f)
{
	scmp_filter_ctx ctx;
	custos_err e;
	int mfd = -1;
	int rc;

	memset(f, 0, sizeof(*f));
	/* Unlisted and denied calls go to the supervisor (user notification), which answers
	 * EPERM, or kills when the profile says so, and reports the call. */
	ctx = seccomp_init(SCMP_ACT_NOTIFY);
	ENSURE(ctx != NULL, CUSTOS_ERR_NOMEM, "seccomp: init failed");
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0); /* set by us, earlier */
	/* A binary tree over syscall numbers instead of a linear list: ~log2(n) comparisons per
	 * call, and a cheaper action-cache emulation when the kernel loads it. */
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (rc != 0) {
		e = err_set(CUSTOS_ERR_INTERNAL, "seccomp: attributes: %s", strerror(-rc));
		goto out;
	}
	e = build_ctx(p, ctx);
	if (e != CUSTOS_OK)
		goto out;
	/* libseccomp 2.5 exports only to an fd: a memfd, read back into memory. */
	mfd = memfd_create("custos-seccomp", MFD_CLOEXEC);
	if (mfd == -1) {
		e = err_sys("seccomp: memfd_create");
		goto out;
	}
	rc = seccomp_export_bpf(ctx, mfd);
	if (rc != 0) {
		e = err_set(CUSTOS_ERR_INTERNAL, "seccomp: export: %s", strerror(-rc));
		goto out;
	}
	off_t size = lseek(mfd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0 ||
	    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
		e = err_set(CUSTOS_ERR_LIMIT, "seccomp: program of %lld bytes", (long long)size);
		goto out;
	}
	f->insns = xcalloc(1, (size_t)size);
	if (pread(mfd, f->insns, (size_t)size, 0) != size) {
		e = err_sys("seccomp: reading the program");
		sb_filter_free(f);
		goto out;
	}
	f->len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
	e = tty_prefix(f);
	if (e != CUSTOS_OK)
		sb_filter_free(f);
out:
	if (mfd != -1)
		close(mfd);
	seccomp_release(ctx);
	return e;
}

void sb_filter_free(sb_filter *f)
{
	free(f->insns);
	f->insns = NULL;
	f->len = 0;
}

int sb_seccomp_load_listener(const sb_filter *f)
{
	struct sock_fprog prog = { .len = f->len, .filter = f->insns };
	long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
	                  &prog);
	if (fd == -1)
		return -errno;
	return (int)fd;
}

/* ---- the proxy's own filter ---- */
/* The self-restricted proxy's own allow-list: a threaded network server that reads its
 * configuration, certificates and policy again on reload, writes its log, and forks its audit
 * writer (clone is flag-filtered: no namespaces). Nothing to execute, no identity or
 * capability changes, no process control beyond its own children, no seccomp changes once in
 * place. Landlock only narrows (a layer never widens what an earlier one refused): the audit
 * writer and the shipper add their own, narrower view after the fork. */
static const char *const allow_self[] = {
	/* files */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "open",
	"openat", "openat2", "close", "close_range", "stat", "fstat", "lstat", "newfstatat",
	"statx", "statfs", "fstatfs", "lseek", "access", "faccessat", "faccessat2", "getdents",
	"getdents64", "readlink", "readlinkat", "getcwd", "mkdir", "mkdirat", "unlink", "unlinkat",
	"rename", "renameat", "renameat2", "chmod", "fchmod", "fchmodat", "ftruncate", "fallocate",
	"fsync", "fdatasync", "flock", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2", "umask",
	"sendfile", "splice", "fadvise64",
	/* memory */
	"mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "mincore", "membarrier",
	/* threads, and the audit writer's fork (clone is flag-filtered); kill and tgkill only to
	 * this process (sb_seccomp_self) */
	"exit", "exit_group", "wait4", "waitid", "getpid", "gettid", "getppid", "getpgrp", "getsid",
	"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
	"set_tid_address", "set_robust_list", "get_robust_list", "rseq", "prctl", "arch_prctl",
	"sched_yield", "sched_getaffinity", "getrlimit", "prlimit64", "getrusage", "sysinfo",
	"uname", "capget", "futex", "futex_waitv", "futex_wake", "futex_wait",
	/* a further, narrower Landlock layer (sandbox_landlock_narrow) */
	"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
	/* signals and time */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending",
	"restart_syscall", "sigaltstack", "clock_gettime", "clock_getres", "clock_nanosleep",
	"nanosleep", "gettimeofday", "time", "timerfd_create", "timerfd_settime", "timerfd_gettime",
	/* events */
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"poll", "ppoll", "select", "pselect6", "eventfd", "eventfd2",
	/* sockets (socket and socketpair are family-filtered) */
	"bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
	"setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg",
	"recvmmsg", "shutdown", "getrandom", NULL
};

custos_err sb_seccomp_self(const sandbox_self_opts *o)
{
	scmp_filter_ctx ctx;
	custos_err e = CUSTOS_OK;
	int rc;

	bool notify = o->notify_fd != NULL && !o->log_denied;
	if (o->notify_fd)
		*o->notify_fd = -1;
	ctx = seccomp_init(o->log_denied ? SCMP_ACT_LOG
	                   : notify      ? SCMP_ACT_NOTIFY
	                                 : SCMP_ACT_KILL_PROCESS);
	ENSURE(ctx != NULL, CUSTOS_ERR_NOMEM, "seccomp: init failed");
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc != 0) {
		e = err_set(CUSTOS_ERR_INTERNAL, "seccomp: attributes: %s", strerror(-rc));
		goto out;
	}
	if ((e = add_list(ctx, allow_self, SIZE_MAX, false, NULL)) != CUSTOS_OK ||
	    (e = add_filtered(ctx, NULL)) != CUSTOS_OK ||
	    (e = add_list(ctx, o->extra_syscalls, o->n_extra_syscalls, true, NULL)) != CUSTOS_OK)
		goto out;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(ioctl_default); i++) {
		struct scmp_arg_cmp c = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffff, ioctl_default[i]);
		if ((e = add_rule(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &c)) != CUSTOS_OK)
			goto out;
	}
	/* Signals to this process only (raise, abort, a thread to another): a proxy left at
	 * uid 0 could otherwise signal every root process on the host. Its children (the audit
	 * writer, the shipper) stop through their socket and pipe, never by a signal. Any other
	 * target, a process group or -1 included, fails with EPERM; tkill is not used. */
	scmp_datum_t self = (scmp_datum_t)getpid();
	struct scmp_arg_cmp me = SCMP_A0(SCMP_CMP_EQ, self, 0),
	                    other = SCMP_A0(SCMP_CMP_NE, self, 0);
	static const char *const sig_calls[] = { "kill", "tgkill" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(sig_calls); i++)
		if ((e = add_rule(ctx, SCMP_ACT_ALLOW, sig_calls[i], 1, &me)) != CUSTOS_OK ||
		    (e = add_rule(ctx, SCMP_ACT_ERRNO(EPERM), sig_calls[i], 1, &other)) !=
		            CUSTOS_OK)
			goto out;
	if ((e = add_rule(ctx, SCMP_ACT_ERRNO(EPERM), "tkill", 0, NULL)) != CUSTOS_OK)
		goto out;
	/* The audit writer and its client threads demote themselves to SCHED_BATCH (the
	 * calling thread, that policy only: nothing else about scheduling may change). */
	struct scmp_arg_cmp sb[2] = { SCMP_A0(SCMP_CMP_EQ, 0, 0),
		                      SCMP_A1(SCMP_CMP_EQ, SCHED_BATCH, 0) };
	if ((e = add_rule(ctx, SCMP_ACT_ALLOW, "sched_setscheduler", 2, sb)) != CUSTOS_OK)
		goto out;
	/* glibc's getaddrinfo(AI_ADDRCONFIG) probes with a netlink socket and copes with its
	 * failure: refuse it with EPERM rather than killing custos. */
	struct scmp_arg_cmp nl = SCMP_A0(SCMP_CMP_EQ, AF_NETLINK, 0);
	if ((e = add_rule(ctx, SCMP_ACT_ERRNO(EPERM), "socket", 1, &nl)) != CUSTOS_OK)
		goto out;
	/* Always-denied calls fail with EPERM (a library probing them must not kill custos).
	 * With a listener they take the default action instead, to its holder, which answers
	 * EPERM and reports them (sandbox_self_violation): ptrace, unshare, bpf, mount... are
	 * what an intruder in the proxy would try. */
	const char *const *always_denied = config_always_denied_syscalls();
	for (size_t i = 0; !notify && always_denied[i]; i++)
		if ((e = add_rule(ctx, SCMP_ACT_ERRNO(EPERM), always_denied[i], 0, NULL)) !=
		    CUSTOS_OK)
			goto out;
	/* libseccomp reads a listener on fd 0 as "no listener" (and loses it): keep fd 0 taken
	 * while loading when it is free (a daemon started with its stdin closed). */
	int hold = -1;
	if (notify && fcntl(0, F_GETFD) == -1 && errno == EBADF)
		hold = eventfd(0, EFD_CLOEXEC);
	rc = seccomp_load(ctx);
	if (hold >= 0)
		close(hold);
	if (rc != 0) {
		e = err_set(CUSTOS_ERR_SYS, "seccomp: load: %s", strerror(-rc));
	} else if (notify) {
		/* The filter is in force: an unlisted call now waits for the listener's holder. */
		int fd = seccomp_notify_fd(ctx);
		if (fd < 0)
			e = err_set(CUSTOS_ERR_SYS, "seccomp: no listener: %s", strerror(-fd));
		else
			*o->notify_fd = fd;
	}
out:
	seccomp_release(ctx);
	return e;
}

custos_err sandbox_self_violation(int notify_fd, sandbox_violation *v)
{
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;
	custos_err e = CUSTOS_OK;
	char path[64], line[128];

	memset(v, 0, sizeof(*v));
	ENSURE(seccomp_notify_alloc(&req, &resp) == 0, CUSTOS_ERR_NOMEM, "seccomp: notify alloc");
	int rc = seccomp_notify_receive(notify_fd, req);
	if (rc != 0) {
		/* libseccomp reports any failed receive as ECANCELED: the usual cause is a caller
		 * killed (or its thread group ended) after poll said the call was there. */
		e = rc == -ENOENT || rc == -ECANCELED
		            ? err_set(CUSTOS_ERR_NOTFOUND, "seccomp: the caller is gone")
		            : err_set(CUSTOS_ERR_SYS, "seccomp: receive: %s", strerror(-rc));
		goto out;
	}
	v->tid = (pid_t)req->pid;
	v->nr = req->data.nr;
	sandbox_syscall_name(req->data.arch, req->data.nr, v->syscall, sizeof(v->syscall));
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)v->tid);
	FILE *f = fopen(path, "re");
	if (f) {
		if (fgets(v->thread, sizeof(v->thread), f))
			v->thread[strcspn(v->thread, "\n")] = '\0';
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)v->tid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "Tgid:", 5) == 0) {
				v->pid = (pid_t)strtol(line + 5, NULL, 10);
				break;
			}
		fclose(f);
	}
	/* What /proc said is about the caller only while its call is still held: the tid cannot
	 * have been reused then. SIGKILL to a tid ends its whole thread group. An always-denied
	 * call is only refused, as without a listener. */
	if (seccomp_notify_id_valid(notify_fd, req->id) != 0) {
		e = err_set(CUSTOS_ERR_NOTFOUND, "seccomp: the caller is gone");
		goto out;
	}
	v->denied = sb_seccomp_is_denied(v->syscall);
	if (!v->denied)
		v->killed = kill(v->pid > 0 ? v->pid : v->tid, SIGKILL) == 0;
	/* Answered (EPERM): the refusal, or so that nothing waits should the kill have failed. */
	resp->id = req->id;
	resp->error = -EPERM;
	resp->val = 0;
	resp->flags = 0;
	(void)seccomp_notify_respond(notify_fd, resp);
out:
	seccomp_notify_free(req, resp);
	return e;
}
