/*
 * sandbox internals shared by the files of sandbox/ (one file per kernel facility). The parent
 * prepares a complete plan (paths, mount steps, environment, compiled seccomp program) before
 * clone, so the child runs on system calls alone: no allocation, no library locks, which keeps
 * it safe in a multi-threaded custos.
 */
#ifndef CUSTOS_SANDBOX_INT_H
#define CUSTOS_SANDBOX_INT_H

#include <linux/filter.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "custos/sandbox.h"

/* ---- child error reporting: a fixed message written to the sync socket, then _exit. ---- */
#define SB_MSG_MAX 512

/* Sync protocol on a SOCK_SEQPACKET pair: one byte tag, then payload. */
enum {
	SB_SYNC_MAPPED = 'M', /* parent -> child: id maps written */
	SB_SYNC_CGROUP = 'C', /* parent -> child: cgroup joined (overlaps the child's mounts) */
	SB_SYNC_READY = 'R',  /* child -> parent: set up; carries the seccomp listener fd */
	SB_SYNC_GO = 'G',     /* parent -> child: START delivered, exec now */
	SB_SYNC_ERROR = 'E',  /* child -> parent: setup or exec failed, text follows */
	SB_SYNC_STATUS = 'X', /* init -> parent: the command's wait status (int) follows */
};

/* Closes every fd >= 3 except those in keep[n] (n <= 8); system calls only. */
void sb_close_fds_except(const int *keep, size_t n);
/* Writes "step: strerror(errno)" to fd as an SB_SYNC_ERROR message and _exits(127). */
__attribute__((noreturn)) void sb_child_fail(int fd, const char *step, int err);

/* ---- mount plan ---- */
typedef enum sb_op_kind {
	SB_OP_DIR,     /* mkdir -p dst */
	SB_OP_BIND,    /* bind src (under /oldroot) on dst, then remount with flags */
	SB_OP_TMPFS,   /* tmpfs on dst with data */
	SB_OP_SYMLINK, /* symlink src -> dst */
	SB_OP_FILE,    /* regular file dst with content src */
	SB_OP_PROC,    /* proc on dst */
	SB_OP_RO,      /* bind dst on itself read-only (if it exists) */
	SB_OP_ATTRS,   /* nosuid+noexec on dst and every mount below it (the attr_later binds);
	                * with ro, dst's own mount read-only too */
} sb_op_kind;

typedef struct sb_op {
	sb_op_kind kind;
	char *src;       /* host path ("/oldroot/..."), link target, file content or tmpfs data */
	char *dst;       /* "/newroot/..." */
	bool ro;         /* BIND: read-only */
	bool dev;        /* BIND: device nodes allowed (no MS_NODEV) */
	bool exec;       /* BIND/TMPFS: exec allowed */
	bool must;       /* BIND: the source must exist (otherwise skipped) */
	bool attr_later; /* BIND: nosuid+noexec come from a later SB_OP_ATTRS over its tree */
	bool verify;     /* dst is at or below an earlier bind (a host directory): looked up again
	                  * once mounted */
	mode_t mode;
} sb_op;

typedef struct sb_mounts {
	sb_op *ops;
	size_t n, cap;
} sb_mounts;

void sb_mounts_free(sb_mounts *m);
/* Builds the plan for profile p (host paths checked here, in the parent). */
custos_err sb_mounts_plan(const sandbox_profile *p, sb_mounts *m) CUSTOS_WUR;
/* Adds the device nodes and /sys parts (devices.c). */
custos_err sb_devices_plan(const sandbox_profile *p, sb_mounts *m) CUSTOS_WUR;
/* Plan helpers (dst relative to the sandbox root, "/dev/null"). */
custos_err sb_plan_add(sb_mounts *m, sb_op_kind k, const char *src, const char *dst,
                       mode_t mode) CUSTOS_WUR;
sb_op *sb_plan_last(sb_mounts *m);
/* Opens path (O_PATH) following no symbolic link on the way, magic links included; the fd or
 * -errno (-ELOOP for a link). System calls only. */
int sb_open_nofollow(const char *path);
/* Child: executes the plan and pivots into the new root. Returns 0 or errno with *step set. */
int sb_mounts_apply(const sb_mounts *m, const char **step);

/* ---- landlock (landlock.c) ---- */
typedef struct sb_landlock_rule {
	char *path;      /* inside the sandbox */
	uint64_t access; /* full set; masked by the ABI at apply time */
} sb_landlock_rule;

typedef struct sb_landlock {
	bool enabled;
	bool required;
	bool no_links; /* a sandbox's: rule paths are opened following no symbolic link */
	int abi;
	sb_landlock_rule *rules;
	size_t n, cap;
	bool restrict_tcp;
	uint16_t bind_ports[SANDBOX_MAX_PORTS];
	size_t n_bind;
	uint16_t connect_ports[SANDBOX_MAX_PORTS];
	size_t n_connect;
	bool scope; /* abstract unix sockets and signals scoped to the sandbox (ABI >= 6) */
} sb_landlock;

custos_err sb_landlock_plan(const sandbox_profile *p, sb_landlock *l) CUSTOS_WUR;
void sb_landlock_free(sb_landlock *l);
/* Child: applies the ruleset; 0 or errno with *step set. ENOSYS-style absence returns 0 when
 * not required. */
int sb_landlock_apply(const sb_landlock *l, const char **step);

/* Landlock access bits (declared here: Debian 12's headers stop at ABI 2). */
#define SB_LL_FS_EXECUTE     (1ULL << 0)
#define SB_LL_FS_WRITE_FILE  (1ULL << 1)
#define SB_LL_FS_READ_FILE   (1ULL << 2)
#define SB_LL_FS_READ_DIR    (1ULL << 3)
#define SB_LL_FS_REMOVE_DIR  (1ULL << 4)
#define SB_LL_FS_REMOVE_FILE (1ULL << 5)
#define SB_LL_FS_MAKE_CHAR   (1ULL << 6)
#define SB_LL_FS_MAKE_DIR    (1ULL << 7)
#define SB_LL_FS_MAKE_REG    (1ULL << 8)
#define SB_LL_FS_MAKE_SOCK   (1ULL << 9)
#define SB_LL_FS_MAKE_FIFO   (1ULL << 10)
#define SB_LL_FS_MAKE_BLOCK  (1ULL << 11)
#define SB_LL_FS_MAKE_SYM    (1ULL << 12)
#define SB_LL_FS_REFER       (1ULL << 13)
#define SB_LL_FS_TRUNCATE    (1ULL << 14)
#define SB_LL_FS_IOCTL_DEV   (1ULL << 15)
#define SB_LL_FS_READ        (SB_LL_FS_EXECUTE | SB_LL_FS_READ_FILE | SB_LL_FS_READ_DIR)
#define SB_LL_FS_WRITE                                                                             \
	(SB_LL_FS_WRITE_FILE | SB_LL_FS_REMOVE_DIR | SB_LL_FS_REMOVE_FILE | SB_LL_FS_MAKE_DIR |    \
	 SB_LL_FS_MAKE_REG | SB_LL_FS_MAKE_SOCK | SB_LL_FS_MAKE_FIFO | SB_LL_FS_MAKE_SYM |         \
	 SB_LL_FS_REFER | SB_LL_FS_TRUNCATE)
#define SB_LL_FS_ALL_V1 ((1ULL << 13) - 1)
/* Handled rights for an ABI. */
uint64_t sb_landlock_fs_mask(int abi);
/* Applies a ruleset of (path, access) pairs in the calling process (self-restriction). */
custos_err sb_landlock_apply_paths(const char *const *ro, size_t n_ro, const char *const *rw,
                                   size_t n_rw, bool required) CUSTOS_WUR;

/* ---- seccomp (seccomp.c) ---- */
typedef struct sb_filter {
	struct sock_filter *insns;
	unsigned short len;
} sb_filter;

/* The profile's filter (unlisted and denied calls -> user notification): the program compiled
 * at build time when the profile's seccomp inputs are a built-in profile's, else compiled
 * (libseccomp, ~2 ms) and cached per process. Owner of f: caller, sb_filter_free. */
custos_err sb_seccomp_build(const sandbox_profile *p, sb_filter *f) CUSTOS_WUR;
/* Compiles p's filter with libseccomp, no cache (what sb_seccomp_build does on a miss). */
custos_err sb_seccomp_compile(const sandbox_profile *p, sb_filter *f) CUSTOS_WUR;
/* Everything of p that its filter depends on, as a string (malloc'd; NULL on failure): equal
 * keys give equal programs. */
char *sb_seccomp_key(const sandbox_profile *p);
void sb_filter_free(sb_filter *f);

/* Programs compiled at build time for the built-in profiles: sandbox/gen/seccomp_gen.c runs the
 * code above (sb_seccomp_compile) during the build and writes them into seccomp_builtin.c in
 * the build tree, which is part of custos_sandbox. Empty when cross-compiling. */
typedef struct sb_seccomp_builtin {
	const char *key; /* sb_seccomp_key of the profile */
	uint32_t arch;   /* seccomp_arch_native() of the build: used only on the same */
	const struct sock_filter *insns;
	unsigned short len;
} sb_seccomp_builtin;
extern const sb_seccomp_builtin sb_seccomp_builtins[];
extern const size_t sb_seccomp_n_builtins;
/* Child: loads f with a new listener; returns the listener fd or -errno. */
int sb_seccomp_load_listener(const sb_filter *f);
/* True when name is in the always-denied set. */
bool sb_seccomp_is_denied(const char *name);
/* True when a base list allows name only with some arguments (clone, socket, ioctl...): a
 * custom list that names it keeps those filters. */
bool sb_seccomp_is_arg_filtered(const char *name);
/* Resolves a name for the native arch; -1 when unknown. */
int sb_seccomp_resolve(const char *name);
/* Self-restriction filter. */
custos_err sb_seccomp_self(const sandbox_self_opts *o) CUSTOS_WUR;

/* ---- capabilities, rlimits, user ids (caps.c, rlimit.c, userns.c) ---- */
/* Child: bounding set, ambient, all sets cleared, securebits locked. 0 or errno. */
int sb_caps_drop_all(const char **step);
/* Child: keeps the effective set equal to the permitted one (after a uid change). */
int sb_caps_raise_effective(void);
/* Self: libcap path for the proxy. */
custos_err sb_caps_drop_self(void) CUSTOS_WUR;
/* Empties the bounding set; fails without CAP_SETPCAP (unless it is empty already). */
custos_err sb_caps_drop_bounding(void) CUSTOS_WUR;

typedef struct sb_rlimits {
	int n;
	int resource[8];
	uint64_t value[8];
} sb_rlimits;
void sb_rlimits_plan(const sandbox_profile *p, bool have_cgroup, sb_rlimits *r);
int sb_rlimits_apply(const sb_rlimits *r, const char **step);

/* Parent: writes uid_map, setgroups and gid_map of child pid. */
custos_err sb_userns_map(pid_t pid, uid_t in_uid, uid_t out_uid, gid_t in_gid,
                         gid_t out_gid) CUSTOS_WUR;
/* Child: switches to the mapped ids while keeping capabilities. 0 or errno. */
int sb_userns_become(uid_t uid, gid_t gid, const char **step);

/* ---- cgroups (cgroup.c dispatch, cgroup_v2.c, cgroup_v1.c) ---- */
typedef struct sb_cgroup_counters {
	uint64_t oom_kill;
	uint64_t mem_max; /* times usage hit the limit */
	uint64_t pids_max;
	uint64_t cpu_throttled;
} sb_cgroup_counters;

typedef enum sb_cg_backend { SB_CG_NONE = 0, SB_CG_V2, SB_CG_V1 } sb_cg_backend;

#define SB_CG_V1_CTRLS 3 /* memory, pids, cpu */
typedef struct sb_cgroup {
	sb_cg_backend backend;
	char *dir;                   /* v2: the sandbox's cgroup directory */
	int dirfd;                   /* v2: open directory for clone3 CLONE_INTO_CGROUP, or -1 */
	char *v1dir[SB_CG_V1_CTRLS]; /* v1: per-controller directories (NULL when absent) */
	bool v1_pending;             /* v1: planned, not made yet (sb_cgroup_realize) */
	/* v1: the counter files, open from the make to the destroy (read with pread: no path
	 * walk at each read; where one could not be opened, it is read by path). */
	bool v1cnt_open;
	int v1cnt[4]; /* memory.oom_control, memory.failcnt, pids.events, cpu.stat; -1 none */
	sb_cgroup_counters last;
} sb_cgroup;

/* Creates the sandbox's cgroup(s) and writes the limits. AUTO/REQUIRED per the profile.
 * With no usable backend (AUTO) returns CUSTOS_OK with backend NONE and *note set. With
 * defer_v1, a v1 outcome is only planned (directories named, their parents found writable):
 * sb_cgroup_realize makes them and writes the limits (the monitor, between the clone and the
 * cgroup step, while the child sets up); v2 is made at once: its child is cloned into it. */
custos_err sb_cgroup_create(const sandbox_profile *p, const char *id, bool defer_v1, sb_cgroup *cg,
                            const char **note) CUSTOS_WUR;
/* Makes what sb_cgroup_create deferred (nothing otherwise). On failure the cgroup is destroyed:
 * the caller fails the start (fail closed; the AUTO fallback was decided by then). */
custos_err sb_cgroup_realize(const sandbox_limits *l, sb_cgroup *cg) CUSTOS_WUR;
/* Moves pid into the cgroup where the child cannot join by itself (v2 without
 * CLONE_INTO_CGROUP); v1 children join with sb_cgroup_join_self, so nothing to do there. */
custos_err sb_cgroup_attach(const sb_cgroup *cg, pid_t pid) CUSTOS_WUR;
/* v1: opens each controller directory's `tasks` file for writing, sent to the child at the
 * cgroup step (fds[i] = -1 where a controller is absent, all -1 on other backends). The child,
 * single-threaded, joins by writing "0" to them (sb_cgroup_join_self): a thread moving itself skips the global
 * threadgroup lock whose RCU grace period makes moving another process take 5-25 ms. The
 * kernel checks the opener's credentials (custos'), not the child's. Close with
 * sb_cgroup_close_fds. */
custos_err sb_cgroup_join_fds(const sb_cgroup *cg, int fds[SB_CG_V1_CTRLS]) CUSTOS_WUR;
/* v1: opens the `tasks` file of each controller directory's parent (custos' own cgroups), sent
 * to the child with the others: the init moves back there by itself just before it starts the
 * command, which joins the sandbox's cgroups by itself before execve. The sandbox's cgroups
 * then hold only the command and what it starts, and are empty, so removable, as soon as the
 * command's status is known, before the init's teardown (sandbox_opts.leave_init). */
custos_err sb_cgroup_home_fds(const sb_cgroup *cg, int fds[SB_CG_V1_CTRLS]) CUSTOS_WUR;
/* In the child: the calling thread joins every cgroup in fds[0..n) (-1 entries skipped); 0 or
 * an errno. The fds stay open. */
int sb_cgroup_join_self(const int *fds, int n);
void sb_cgroup_close_fds(int fds[SB_CG_V1_CTRLS]);
custos_err sb_cgroup_read(const sb_cgroup *cg, sb_cgroup_counters *c) CUSTOS_WUR;
/* Kills every process in the cgroup (cgroup.kill on v2, SIGKILL over cgroup.procs on v1). */
void sb_cgroup_kill(const sb_cgroup *cg);
/* Removes the directories (retries briefly while the kernel drops the last members). */
void sb_cgroup_destroy(sb_cgroup *cg);
const char *sb_cgroup_backend_name(sb_cg_backend b);
/* Removes empty custos-* cgroups below parent whose custos process no longer exists. */
void sb_cgroup_gc(const char *parent);

/* What cgroup discovery needs from /proc (mount points, custos' own cgroups), read once per
 * sb_cgroup_create and shared by both backends' lookups (it was read once per lookup: four
 * mountinfo reads per start on a v1 host). */
#define SB_CG_PROC_MAX (1u << 20)
typedef struct sb_cg_host {
	buf mountinfo; /* /proc/self/mountinfo */
	buf self;      /* /proc/self/cgroup */
} sb_cg_host;
custos_err sb_cgv2_create(const sandbox_profile *p, const sb_cg_host *h, const char *id,
                          sb_cgroup *cg) CUSTOS_WUR;
/* v1 in two steps: plan (names the directories, checks their parents are writable; sets
 * v1_pending) and make (gc of stale siblings, mkdir, limits; destroys on failure). */
custos_err sb_cgv1_plan(const sandbox_profile *p, const sb_cg_host *h, const char *id,
                        sb_cgroup *cg) CUSTOS_WUR;
custos_err sb_cgv1_make(const sandbox_limits *l, sb_cgroup *cg) CUSTOS_WUR;
/* Looks up the mount point (and its root) of fstype, for v1 the one whose super options name
 * ctrl; and custos' path in the v2 hierarchy (ctrl NULL) or a v1 controller's. */
custos_err sb_cg_find_mount(const sb_cg_host *h, const char *fstype, const char *ctrl, char *out,
                            size_t outsz, char *root, size_t rootsz) CUSTOS_WUR;
custos_err sb_cg_self_path(const sb_cg_host *h, const char *ctrl, char *out,
                           size_t outsz) CUSTOS_WUR;
custos_err sb_cgv2_read(const sb_cgroup *cg, sb_cgroup_counters *c) CUSTOS_WUR;
custos_err sb_cgv1_read(const sb_cgroup *cg, sb_cgroup_counters *c) CUSTOS_WUR;
/* Reads "key N" from a flat-keyed cgroup file; 0 when the key or file is missing. */
uint64_t sb_cg_read_key(const char *dir, const char *file, const char *key);
/* The same from an open file (pread at offset 0). */
uint64_t sb_cg_read_key_fd(int fd, const char *key);
custos_err sb_cg_write(const char *dir, const char *file, const char *value) CUSTOS_WUR;

/* ---- network (net.c) ---- */
/* Child: brings lo up in the new netns. 0 or errno. */
int sb_net_lo_up(void);
/* A process living in a sandbox's netns that makes sockets there on request. */
typedef struct sb_sockfactory {
	pid_t pid;
	int fd; /* our end of the request socket; -1 when not started */
} sb_sockfactory;
/* userns_fd (-1 as root) and netns_fd: the sandbox's namespaces (sb_instance); borrowed. */
custos_err sb_sockfactory_start(sb_sockfactory *f, int userns_fd, int netns_fd) CUSTOS_WUR;
custos_err sb_sockfactory_socket(sb_sockfactory *f, int domain, int type, int *out) CUSTOS_WUR;
/* Up to want (1..SB_FACTORY_BATCH) sockets in one round trip; *got >= 1 on success (fewer
 * than want when the factory ran out of fds). */
#define SB_FACTORY_BATCH 16
custos_err sb_sockfactory_sockets(sb_sockfactory *f, int domain, int type, int *out, size_t want,
                                  size_t *got) CUSTOS_WUR;
void sb_sockfactory_stop(sb_sockfactory *f);

/* ---- environment (env.c) ---- */
/* NULL-terminated envp built from the allow-list and env_set; free with sb_strv_free. */
custos_err sb_env_build(const sandbox_profile *p, char ***out) CUSTOS_WUR;
void sb_strv_free(char **v);
char **sb_strv_dup(const char *const *v, size_t max, custos_err *e);

/* ---- the prepared plan and one spawn (spawn.c) ---- */
typedef struct sb_plan {
	unsigned long clone_flags;
	uid_t uid, gid, out_uid, out_gid;
	bool privileged; /* custos runs as root */
	char hostname[SANDBOX_NAME_MAX + 1];
	sb_mounts mounts;
	sb_landlock landlock;
	sb_filter filter;
	sb_rlimits rlimits;
	char **argv;
	char **envp;
	char *workdir;
	bool net_ns, cgroup_ns;
	bool go_barrier; /* the child waits for *G* (START delivered) before the command */
	/* custos' argv and environment strings (/proc/self/stat): the init, a copy of custos,
	 * overwrites its copy of them (0 when unknown). */
	uintptr_t arg_start, arg_end, env_start, env_end;
} sb_plan;

custos_err sb_plan_build(const sandbox_profile *p, const char *const *argv, bool have_cgroup,
                         sb_plan *plan) CUSTOS_WUR;
void sb_plan_free(sb_plan *plan);

/* One running instance. */
typedef struct sb_instance {
	pid_t pid;     /* host pid of the init (pid 1 inside) */
	int pidfd;     /* pidfd of pid */
	int sync_fd;   /* our end of the sync socket */
	int notify_fd; /* seccomp listener */
	/* The init's user and network namespaces, opened while it was still dumpable (the socket
	 * factory joins them; unprivileged, /proc/<init>/ns is closed to us afterwards). -1 when
	 * not needed: userns as root, netns without a net namespace. */
	int userns_fd, netns_fd;
	uint64_t started_ns;
	bool status_known;
	int cmd_status; /* the command's wait status from the init */
} sb_instance;

/* Waits until the cgroup the child joins is made (a deferred v1 cgroup, sb_cgroup_realize); its
 * error fails the start. */
typedef custos_err (*sb_cg_gate)(void *ctx);
/* Clones and sets up one instance up to the GO barrier; gate (optional) is called after the
 * clone, before the cgroup is joined. stdio: three fds or -1. */
custos_err sb_instance_start(const sb_plan *plan, const sb_cgroup *cg, sb_cg_gate gate,
                             void *gate_ctx, const int stdio[3], sb_instance *in) CUSTOS_WUR;
custos_err sb_instance_go(sb_instance *in) CUSTOS_WUR;
void sb_instance_close(sb_instance *in);

/* The sandbox object (supervise.c). */
struct sandbox {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	bool thread_started;

	char *name;
	char hash[65]; /* written once by sandbox_spawn's thread, before hash_state = 1 */
	sb_plan plan;
	sb_cgroup cg;
	const char *cg_note;
	char detail[256];
	char exit_detail[SB_MSG_MAX]; /* monitor thread only */
	uint64_t viol_window_ns;      /* monitor thread only: violation event budget */
	unsigned viol_in_window;
	uint64_t viol_suppressed;
	uint64_t notify_slice_ns; /* monitor thread only: SANDBOX_NOTIFY_RATE's current slice */
	unsigned notify_in_slice;
	bool kill_on_violation;
	bool leave_init; /* opts.leave_init where it applies (no restarts, not v2) */
	sandbox_opts opts;
	int stdio[3];

	/* guarded by mu */
	sb_instance cur;
	bool running;
	unsigned generation;
	sb_sockfactory factory;
	bool done;      /* no more instances */
	bool stop_req;  /* sandbox_stop asked */
	int hash_state; /* 0: being computed, 1: hash ready, -1: failed (hash_err) */
	char hash_err[SB_MSG_MAX];
	sandbox_limits cg_limits; /* the limits a deferred v1 cgroup is made with: cg_gate */
	bool inline_mon;          /* no monitor thread: leave_init (sandbox_spawn, sandbox_wait) */
	bool inline_ran;          /* inline: supervision has run */
	bool first_done;          /* the first start finished (ok or not) */
	custos_err first_err;
	char first_msg[SB_MSG_MAX];
	int last_status;
	pid_t last_pid; /* the last instance's pid (0: none ran): named by the STOP event */
	int stop_efd;   /* eventfd waking the monitor */
	unsigned restarts;
};

#endif
