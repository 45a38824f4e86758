/*
 * custos process sandbox: runs a model server (or any command) in fresh user, pid, mount, net,
 * ipc, uts and cgroup namespaces on a tmpfs root, with no capabilities, NO_NEW_PRIVS, Landlock,
 * a seccomp allow-list whose denials are answered and reported by the supervisor, cgroup and
 * rlimit limits, and only the device nodes the profile names. docs/SANDBOX.md is the reference.
 *
 * Threads: sandbox_spawn() starts one monitor thread per sandbox. It answers seccomp
 * notifications, reaps the sandbox, reads cgroup counters and restarts the sandbox when the
 * restart policy says so; the event callback runs on that thread. Every other function may be
 * called from any thread.
 */
#ifndef CUSTOS_SANDBOX_H
#define CUSTOS_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "custos/config.h" /* the bounds custos.yaml shares with the sandbox (CFG_MAX_*) */
#include "custos/core.h"

/* Named limits on what a profile may hold (checked by sandbox_profile_validate). */
#define SANDBOX_MAX_BINDS    CFG_MAX_BINDS
#define SANDBOX_MAX_DEVICES  CFG_MAX_DEVICES
#define SANDBOX_MAX_ENV      CFG_MAX_ENV
#define SANDBOX_MAX_SYSCALLS CFG_MAX_SYSCALLS
#define SANDBOX_MAX_PORTS    16
#define SANDBOX_MAX_ARGS     4096
#define SANDBOX_PATH_MAX     CFG_MAX_SANDBOX_PATH
#define SANDBOX_NAME_MAX     CFG_MAX_ID_LEN
/* Violation events emitted one by one per second; the rest are summed (syscall "*"). */
#define SANDBOX_VIOLATION_BURST 100
/* Denied calls the supervisor answers per second and sandbox, at most (in slices of a tenth of
 * a second): each costs custos CPU outside the sandbox's cgroup, so a flood of them is
 * throttled: the calls beyond wait in the kernel for the next slice. */
#define SANDBOX_NOTIFY_RATE 1000

/* Namespaces (bit set). SANDBOX_NS_ALL is what every profile gets unless it says otherwise;
 * SANDBOX_NS_USER, _MNT and _PID cannot be turned off (the rest of the setup needs them). */
enum {
	SANDBOX_NS_USER = 1u << 0,
	SANDBOX_NS_PID = 1u << 1,
	SANDBOX_NS_MNT = 1u << 2,
	SANDBOX_NS_NET = 1u << 3,
	SANDBOX_NS_IPC = 1u << 4,
	SANDBOX_NS_UTS = 1u << 5,
	SANDBOX_NS_CGROUP = 1u << 6,
	SANDBOX_NS_ALL = 0x7f,
};

typedef enum sandbox_gpu { SANDBOX_GPU_NONE = 0, SANDBOX_GPU_NVIDIA, SANDBOX_GPU_AMD } sandbox_gpu;

/* seccomp profile: DEFAULT (allow-list for model servers), GPU (DEFAULT plus any ioctl and the
 * calls the NVIDIA/ROCm user-space stacks make), CUSTOM (DEFAULT's base plus `syscalls`).
 * The always-denied set (sandbox_seccomp_always_denied) can never be allowed. */
typedef enum sandbox_seccomp {
	SANDBOX_SECCOMP_DEFAULT = 0,
	SANDBOX_SECCOMP_GPU,
	SANDBOX_SECCOMP_CUSTOM,
} sandbox_seccomp;

/* Which cgroup backend: AUTO uses v2 when memory, pids and cpu are enabled there, else v1 when
 * those controllers are mounted; when neither can be written (an unprivileged run without a
 * delegated cgroup) AUTO falls back to rlimits and reports it in a SANDBOX_EV_START note.
 * REQUIRED fails the spawn instead. OFF uses rlimits only. */
typedef enum sandbox_cgroup_mode {
	SANDBOX_CGROUP_AUTO = 0,
	SANDBOX_CGROUP_REQUIRED,
	SANDBOX_CGROUP_OFF,
} sandbox_cgroup_mode;

/* One bind mount of a host path into the sandbox. dst NULL means the same path. Binds are
 * read-only unless `writable`; `optional` skips a source that does not exist. Every bind is
 * nosuid and nodev. */
typedef struct sandbox_bind {
	const char *src;
	const char *dst;
	bool writable;
	bool optional;
} sandbox_bind;

/* Resource limits; 0 means "no limit" for every field. */
typedef struct sandbox_limits {
	uint64_t memory_bytes;  /* memory.max / memory.limit_in_bytes */
	uint64_t swap_bytes;    /* memory.swap.max (v2) / memsw - memory (v1) */
	uint64_t pids;          /* pids.max (RLIMIT_NPROC without a cgroup) */
	uint32_t cpu_millis;    /* CPU share in thousandths of one CPU (cpu.max quota) */
	uint64_t nofile;        /* RLIMIT_NOFILE */
	uint64_t fsize_bytes;   /* RLIMIT_FSIZE */
	uint64_t scratch_bytes; /* size of the scratch tmpfs */
} sandbox_limits;

/* A sandbox profile: a plain options struct. Strings and arrays are borrowed: they must stay
 * valid until sandbox_spawn returns (the sandbox keeps its own copy). Fill one with
 * sandbox_profile_builtin() and adjust fields, or zero it and set everything yourself. */
typedef struct sandbox_profile {
	const char *name;    /* for events and the hostname; [A-Za-z0-9_.-]{1,64} */
	unsigned namespaces; /* SANDBOX_NS_* bits */

	/* Filesystem. The root is a fresh read-only tmpfs. usr_merged adds /usr read-only plus
	 * bin, lib, lib64 and sbin as the host has them (symlinks into /usr on Debian 12). */
	bool usr_merged;
	const sandbox_bind *binds;
	size_t n_binds;
	const char *scratch_dir;    /* host dir bound writable at scratch_target; NULL: tmpfs */
	const char *scratch_target; /* where scratch appears (default "/tmp") */
	const char *workdir;        /* cwd for the command (default scratch_target) */
	bool sys_ro;                /* whole /sys read-only (GPU profiles bind only parts) */

	/* Devices: always null, zero, full, random, urandom, tty and a /dev/shm tmpfs; plus
	 * these names relative to device_root (e.g. "nvidia0", "dri/renderD128"), each bound at
	 * /dev/<name>, and the nodes of `gpu`. device_root defaults to "/dev"; tests point it at a
	 * directory of stand-in nodes. */
	const char *const *devices;
	size_t n_devices;
	sandbox_gpu gpu;
	const char *device_root;
	const char *sys_root; /* where the GPU stack's /sys parts come from (default "/sys") */

	/* Privilege and identity. Inside the sandbox the command runs as uid/gid (default 1000).
	 * Outside, those map to outside_uid/gid when custos is root (default 65534, nobody) and to
	 * the caller's own ids when it is not (an unprivileged user may map only itself). */
	uid_t uid, gid;
	uid_t outside_uid;
	gid_t outside_gid;

	/* seccomp. kill_on_violation: a denied call kills the sandbox (SIGSYS) instead of
	 * failing with EPERM; either way the supervisor reports it. */
	sandbox_seccomp seccomp;
	const char *const *syscalls; /* CUSTOM: extra allowed syscall names */
	size_t n_syscalls;
	const char *const *deny_syscalls; /* removed from the base allow-list (any profile) */
	size_t n_deny_syscalls;
	bool seccomp_kill_on_violation;

	/* Landlock (ABI detected at run time; a host without Landlock gets the other layers and a
	 * note in the START event unless landlock_required). TCP ports the sandbox may bind and
	 * connect to (ABI >= 4); an empty list with restrict_tcp denies all TCP bind/connect. */
	bool landlock;
	bool landlock_required;
	bool restrict_tcp;
	const uint16_t *tcp_bind;
	size_t n_tcp_bind;
	const uint16_t *tcp_connect;
	size_t n_tcp_connect;

	/* Resources. */
	sandbox_limits limits;
	sandbox_cgroup_mode cgroup;

	/* Environment: host variables named in env_allow are passed (exact names), then env_set
	 * ("NAME=value") is added; PATH defaults to /usr/local/bin:/usr/bin:/bin. */
	const char *const *env_allow;
	size_t n_env_allow;
	const char *const *env_set;
	size_t n_env_set;
} sandbox_profile;

/* Built-in profiles: "default" (no GPU, seccomp default, 1 GiB, 256 pids, 1 CPU, 1024 files)
 * and "gpu-nvidia", "gpu-amd" (the same plus the GPU wiring, 16 GiB). Fills *p with static
 * data; returns CUSTOS_ERR_NOTFOUND for an unknown name. */
custos_err sandbox_profile_builtin(const char *name, sandbox_profile *p) CUSTOS_WUR;
/* Names of the built-in profiles, NULL-terminated (static). */
const char *const *sandbox_profile_builtin_names(void);
/* Checks every field against the named limits and rules (absolute paths, no always-denied
 * syscall in CUSTOM lists, known syscall names). CUSTOS_OK or INVAL/LIMIT with a message. */
custos_err sandbox_profile_validate(const sandbox_profile *p) CUSTOS_WUR;
/* SHA-256 of the profile's canonical JSON (sandbox_profile_json), as 64 hex digits and a NUL. */
custos_err sandbox_profile_hash(const sandbox_profile *p, char out[65]) CUSTOS_WUR;
/* Appends the profile as canonical JSON (stable key order) to out. */
custos_err sandbox_profile_json(const sandbox_profile *p, buf *out) CUSTOS_WUR;

/* Syscall names that no profile may allow (NULL-terminated, static). */
const char *const *sandbox_seccomp_always_denied(void);
/* Name of syscall nr for the audit record: libseccomp's table, then ours for calls newer than
 * libseccomp knows; "syscall_<nr>" otherwise. Writes into out[outsz]; returns out. */
const char *sandbox_syscall_name(uint32_t arch, int nr, char *out, size_t outsz);
/* Whether name is a system call the sandbox can filter on this architecture (what a profile's
 * syscalls and deny_syscalls must be): config_set_syscall_check's function. */
bool sandbox_syscall_known(const char *name);

/* Maps a `sandbox_profiles.<id>` entry of custos.yaml (include/custos/config.h) onto *p:
 * built-in defaults first, then every key the entry sets. p borrows the strings of cp (keep
 * the config alive while p is used) and owns two arrays: release them with
 * sandbox_profile_cfg_free. Returns INVAL for what the sandbox cannot express. */
struct cfg_profile;
custos_err sandbox_profile_from_cfg(const struct cfg_profile *cp, sandbox_profile *p) CUSTOS_WUR;
void sandbox_profile_cfg_free(sandbox_profile *p);

/* ---------------------------------------------------------------------------------------------
 * Events: what the caller turns into audit records. Pointers inside are valid only during the
 * callback. profile_hash is the SHA-256 of the profile (sandbox_profile_hash).
 */
typedef enum sandbox_event_kind {
	SANDBOX_EV_START,     /* an instance is set up and about to exec the command */
	SANDBOX_EV_EXIT,      /* the instance ended: exit_code or signal */
	SANDBOX_EV_STOP,      /* sandbox_stop() finished; no more instances */
	SANDBOX_EV_RESTART,   /* a new instance will start after backoff_ms */
	SANDBOX_EV_GIVE_UP,   /* restart policy exhausted */
	SANDBOX_EV_OOM,       /* the memory limit was hit and the kernel OOM-killed (count) */
	SANDBOX_EV_LIMIT,     /* a limit was hit: limit = "pids" | "memory" | "cpu" (count) */
	SANDBOX_EV_VIOLATION, /* a denied syscall: syscall, syscall_nr, pid (host pid); beyond
	                       * SANDBOX_VIOLATION_BURST a second, one event with syscall "*"
	                       * and count = the calls summed */
} sandbox_event_kind;

typedef struct sandbox sandbox;

typedef struct sandbox_event {
	sandbox_event_kind kind;
	sandbox *sandbox;         /* the sandbox (for sandbox_listen_inside in a START callback) */
	const char *name;         /* profile name */
	const char *profile_hash; /* 64 hex digits ("" with sandbox_opts.no_profile_hash) */
	unsigned generation;      /* instance number, 1 for the first start */
	pid_t pid;                /* host pid of the instance's init (VIOLATION: of the caller) */
	uint64_t wall_ns;         /* when it happened */
	/* EXIT */
	int exit_code; /* -1 when killed by a signal */
	int signal;    /* 0 unless killed by a signal */
	/* VIOLATION */
	const char *syscall;
	int syscall_nr;
	bool killed; /* the violation killed the sandbox (seccomp_kill_on_violation) */
	/* OOM, LIMIT (and VIOLATION: 1, or the calls summed) */
	const char *limit;
	uint64_t count;
	/* RESTART */
	uint64_t backoff_ms;
	/* START: what was applied ("cgroup v1; landlock abi 7"), or a fallback note */
	const char *detail;
} sandbox_event;

typedef void (*sandbox_event_fn)(const sandbox_event *ev, void *arg);

/* Static name of an event kind ("start", "exit", "violation", ...). */
const char *sandbox_event_kind_name(sandbox_event_kind k);
/* Appends the event as one JSON object (no newline) to out: the audit-ready form. */
custos_err sandbox_event_json(const sandbox_event *ev, buf *out) CUSTOS_WUR;

/* Restart policy of the supervisor: after an instance exits it is started again unless
 * max_restarts is reached (0 = never restart; UINT32_MAX = always). The delay doubles from
 * backoff_initial_ms up to backoff_max_ms and resets once an instance ran reset_after_ms. */
typedef struct sandbox_restart {
	uint32_t max_restarts;
	uint64_t backoff_initial_ms; /* default 100 */
	uint64_t backoff_max_ms;     /* default 30000 */
	uint64_t reset_after_ms;     /* default 60000 */
	bool restart_on_success;     /* also restart after exit status 0 */
} sandbox_restart;

typedef struct sandbox_opts {
	sandbox_event_fn on_event; /* may be NULL */
	void *arg;
	sandbox_restart restart;
	uint64_t stop_grace_ms; /* SIGTERM to cgroup kill in sandbox_stop (default 5000) */
	/* Standard fds for the command; -1 inherits custos' own. The command runs in a session
	 * of its own (no controlling terminal) and may not TIOCSTI, but a terminal on its stdin
	 * can still be read: a caller that runs unattended (`custos up`) gives /dev/null. */
	int stdin_fd, stdout_fd, stderr_fd;
	/* The caller records no event (`sandbox exec` without --events): skip the profile's
	 * SHA-256, whose OpenSSL initialisation is the largest CPU cost of a start after the
	 * kernel's; events then carry an empty profile_hash. Nothing else changes. */
	bool no_profile_hash;
	/* The caller exits soon after sandbox_wait (`sandbox exec`): with no restarts, an instance
	 * ends when its init reports the command's status, not when the init itself has gone
	 * (its namespaces torn down); on v1, where the init has left the sandbox's cgroups before
	 * the command started, they are removed at once. The init, already exiting, is not
	 * reaped: the process that inherits it does that. */
	bool leave_init;
	/* The caller's START handler needs nothing before the command runs (it creates no socket
	 * inside): the child does not wait for the START event's delivery, one round trip less.
	 * Only with no_profile_hash: a hashed profile's START waits for the hash, and a sandbox
	 * whose events cannot name its profile never runs. */
	bool no_start_barrier;
} sandbox_opts;

/* Defaults: no callback, no restart, 5 s grace, inherited stdio, the profile hashed. */
void sandbox_opts_init(sandbox_opts *o);

/* Validates the profile, then starts argv[0] (an absolute path inside the sandbox; argv is
 * NULL-terminated) in a new sandbox and returns once the first instance runs (its START event
 * was delivered). Any setup failure fails the spawn (fail closed) with the step and errno in
 * err_msg(). On success *out is owned by the caller: sandbox_stop() then sandbox_free(). */
custos_err sandbox_spawn(const sandbox_profile *p, const char *const *argv,
                         const sandbox_opts *opts, sandbox **out) CUSTOS_WUR;

/* Blocks until the sandbox has ended for good (its last instance exited and no restart is
 * due, or sandbox_stop ran). *wstatus gets the last command's wait status (WIFEXITED...),
 * as if custos had run it itself. */
custos_err sandbox_wait(sandbox *sb, int *wstatus) CUSTOS_WUR;
/* Stops supervision and the current instance: SIGTERM, then after stop_grace_ms the cgroup
 * kill (and SIGKILL to the instance's init, which ends its pid namespace). Idempotent. */
custos_err sandbox_stop(sandbox *sb) CUSTOS_WUR;
/* Stops (if needed), joins the monitor thread, removes the cgroups and frees. NULL is ok. */
void sandbox_free(sandbox *sb);

/* Host pid of the current instance's init (pid 1 inside), or -1 between instances. */
pid_t sandbox_pid(const sandbox *sb);
/* Current instance number (1 for the first), 0 before the first start. */
unsigned sandbox_generation(const sandbox *sb);
/* The profile's hash (64 hex digits, owned by sb; "" with sandbox_opts.no_profile_hash). */
const char *sandbox_profile_hash_of(const sandbox *sb);
/* Where the sandbox's limits live ("v2", "v1", "none"), static. */
const char *sandbox_cgroup_backend(const sandbox *sb);

/* Sockets inside the sandbox's network namespace (loopback only). A socket keeps the
 * namespace it was made in, so custos (or the unprivileged proxy it hands the fd to) can
 * serve the sandbox without any interface between the namespaces.
 * sandbox_listen_inside: a listening TCP socket on 127.0.0.1:port in the current instance's
 * netns (the egress proxy listener; SO_REUSEADDR, non-blocking, close-on-exec). *fd is the
 * caller's. sandbox_connect_inside: a non-blocking TCP socket connecting to 127.0.0.1:port
 * inside (connect may still be in progress: poll for POLLOUT, then SO_ERROR). Both return
 * CUSTOS_ERR_AGAIN between instances; call them again after the next START event (a new
 * instance has a new netns, so old listeners serve nobody). Safe from the event callback. */
custos_err sandbox_listen_inside(sandbox *sb, uint16_t port, int backlog, int *fd) CUSTOS_WUR;
custos_err sandbox_connect_inside(sandbox *sb, uint16_t port, int *fd) CUSTOS_WUR;
/* Unconnected, non-blocking TCP sockets (AF_INET, close-on-exec) made inside the current
 * instance's netns in one round trip to its socket factory, for a process that will
 * connect() them itself (the unprivileged proxy gets these over a Unix socket): up to want
 * (1..SANDBOX_SOCKETS_BATCH) into fds, *got >= 1 on success (fewer when fds ran out). The fds
 * are the caller's. *generation: the instance they belong to. Errors as above. */
#define SANDBOX_SOCKETS_BATCH 16
custos_err sandbox_sockets_inside(sandbox *sb, int *fds, size_t want, size_t *got,
                                  unsigned *generation) CUSTOS_WUR;
/* Waits until a TCP connect to 127.0.0.1:port inside succeeds and, when http_path is not
 * NULL, a GET of that path answers 2xx. CUSTOS_ERR_TIMEOUT after timeout_ms, CUSTOS_ERR_CLOSED
 * when the instance exits first. */
custos_err sandbox_wait_ready(sandbox *sb, uint16_t port, const char *http_path,
                              uint64_t timeout_ms) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Self-restriction for custos' own proxy process, after it has opened what it needs: clears
 * every capability set, the bounding set and ambient set, sets NO_NEW_PRIVS, applies Landlock
 * (paths below read_paths read-only, below write_paths read-write, nothing else) and a seccomp
 * allow-list (a network server's calls plus extra_syscalls; always-denied calls fail with
 * EPERM, anything else kills the process). Libraries bound on first use (libvirt,
 * libmicrohttpd, Hyperscan: include/custos/lazylib.h) must be bound before (lazylib_*()):
 * Landlock would refuse reading them afterwards.
 */
typedef struct sandbox_self_opts {
	const char *const *read_paths;
	size_t n_read_paths;
	const char *const *write_paths;
	size_t n_write_paths;
	const char *const *extra_syscalls;
	size_t n_extra_syscalls;
	bool landlock_required; /* fail when the kernel has no Landlock */
	bool log_denied;        /* kernel-log (SECCOMP_RET_LOG) unlisted calls instead of killing */
	/* notify_fd: when set (and not log_denied), an unlisted call is held by the kernel and
	 * reported on a seccomp listener (SECCOMP_RET_USER_NOTIF) instead of killing the process
	 * outright, and so is an always-denied call instead of failing at once with EPERM;
	 * *notify_fd gets the listener (O_CLOEXEC), -1 otherwise. The caller must hand
	 * it at once to a process outside (custos up: the supervisor), which names the call and
	 * kills the caller with sandbox_self_violation, and close its own copy: a process that
	 * kept its listener could answer its own calls and let them through. Until then a held
	 * call just waits; once every listener is closed, held calls fail with ENOSYS. */
	int *notify_fd;
	/* set_ids: become uid/gid (supplementary groups cleared) after the bounding set is
	 * dropped and before the other capability sets are cleared. */
	bool set_ids;
	uid_t uid;
	gid_t gid;
} sandbox_self_opts;

/* CUSTOS_OK when every layer is in place; any failure leaves the process partly restricted,
 * so the caller must exit on error. Must run while the process has one thread (capabilities
 * and Landlock bind only the calling thread and its later children): CUSTOS_ERR_INVAL
 * otherwise, before anything is changed. Threads created afterwards inherit every layer. */
custos_err sandbox_self_restrict(const sandbox_self_opts *o) CUSTOS_WUR;

/* A call outside a sandbox_self_restrict filter, as its listener reported it. */
typedef struct sandbox_violation {
	pid_t tid;        /* the calling thread (this pid namespace) */
	pid_t pid;        /* its process (thread group); 0 when /proc did not say */
	int nr;           /* the system call's number (native architecture) */
	char syscall[48]; /* its name (sandbox_syscall_name) */
	char thread[16];  /* the thread's name (comm), "" when unknown */
	bool denied;      /* an always-denied call: it failed with EPERM, the caller runs on */
	bool killed;      /* otherwise: the process was sent SIGKILL while the call was held */
} sandbox_violation;

/* Takes one held call from a listener made by sandbox_self_restrict (notify_fd) and fills *v.
 * A call outside the allow-list kills the calling process (SIGKILL to its thread group) before
 * it can run on; an always-denied call (sandbox_seccomp_always_denied) fails with EPERM, as it
 * does without a listener. Either way the call never executes. CUSTOS_ERR_NOTFOUND when the
 * caller was gone before it could be read; SYS when the listener fails. */
custos_err sandbox_self_violation(int notify_fd, sandbox_violation *v) CUSTOS_WUR;

/* A further Landlock layer for the calling thread and the children it forks afterwards, for a
 * process that needs less than the view it inherited (custos up's audit writer and shipper,
 * forked from the confined proxy). Layers stack: what an earlier one refused stays refused;
 * this one leaves the file system below read_paths read-only and below write_paths
 * read-write, nothing else, and does not restrict the network. Binds the calling thread only:
 * call it while the process has one thread (not checked: /proc may be outside the view).
 * Needs NO_NEW_PRIVS. Without Landlock in the kernel: CUSTOS_ERR_UNSUPPORTED when required,
 * else CUSTOS_OK and nothing done. Any other failure is an error (the caller must not go on). */
custos_err sandbox_landlock_narrow(const char *const *read_paths, size_t n_read_paths,
                                   const char *const *write_paths, size_t n_write_paths,
                                   bool required) CUSTOS_WUR;

/* Landlock ABI version of this kernel (0 when absent). */
int sandbox_landlock_abi(void);

#endif /* CUSTOS_SANDBOX_H */
