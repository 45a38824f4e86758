/* Unit tests of the sandbox's pure parts: profiles, validation, hashing, events, seccomp
 * compilation and names, the environment, cgroup file parsing, Landlock masks, and
 * self-restriction (in a forked child, since it cannot be undone). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/seccomp.h>
#include <seccomp.h>

#include "custos/config.h"
#include "custos/sandbox.h"
#include "sandbox/sb_int.h"

static void builtin_profiles(void **state)
{
	sandbox_profile p;
	(void)state;
	for (const char *const *n = sandbox_profile_builtin_names(); *n; n++) {
		assert_int_equal(sandbox_profile_builtin(*n, &p), CUSTOS_OK);
		assert_string_equal(p.name, *n);
		assert_int_equal(sandbox_profile_validate(&p), CUSTOS_OK);
	}
	assert_int_equal(sandbox_profile_builtin("gpu-nvidia", &p), CUSTOS_OK);
	assert_int_equal(p.gpu, SANDBOX_GPU_NVIDIA);
	assert_int_equal(p.seccomp, SANDBOX_SECCOMP_GPU);
	assert_int_equal(sandbox_profile_builtin("nope", &p), CUSTOS_ERR_NOTFOUND);
}

static void validate_rejects(void **state)
{
	sandbox_profile p;
	sandbox_bind many[SANDBOX_MAX_BINDS + 1];
	(void)state;

#define BAD(code, mutate)                                                                          \
	do {                                                                                       \
		assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);               \
		mutate;                                                                            \
		assert_int_equal(sandbox_profile_validate(&p), code);                              \
	} while (0)
	BAD(CUSTOS_ERR_INVAL, p.name = "bad name");
	BAD(CUSTOS_ERR_INVAL, p.name = "");
	BAD(CUSTOS_ERR_INVAL, p.namespaces = SANDBOX_NS_NET);
	sandbox_bind rel = { .src = "relative" };
	BAD(CUSTOS_ERR_INVAL, (p.binds = &rel, p.n_binds = 1));
	sandbox_bind dots = { .src = "/usr", .dst = "/x/../etc" };
	BAD(CUSTOS_ERR_INVAL, (p.binds = &dots, p.n_binds = 1));
	sandbox_bind root = { .src = "/usr", .dst = "/" };
	BAD(CUSTOS_ERR_INVAL, (p.binds = &root, p.n_binds = 1));
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(many); i++)
		many[i] = (sandbox_bind){ .src = "/usr" };
	BAD(CUSTOS_ERR_LIMIT, (p.binds = many, p.n_binds = CUSTOS_ARRAY_LEN(many)));
	static const char *const denied[] = { "ptrace" };
	BAD(CUSTOS_ERR_DENIED,
	    (p.seccomp = SANDBOX_SECCOMP_CUSTOM, p.syscalls = denied, p.n_syscalls = 1));
	static const char *const unknown[] = { "no_such_syscall" };
	BAD(CUSTOS_ERR_INVAL,
	    (p.seccomp = SANDBOX_SECCOMP_CUSTOM, p.syscalls = unknown, p.n_syscalls = 1));
	static const char *const fine[] = { "acct_not" };
	BAD(CUSTOS_ERR_INVAL, (p.syscalls = fine, p.n_syscalls = 1)); /* needs custom */
	static const char *const env_bad[] = { "NOEQUALS" };
	BAD(CUSTOS_ERR_INVAL, (p.env_set = env_bad, p.n_env_set = 1));
	static const char *const dev_abs[] = { "/dev/sda" };
	BAD(CUSTOS_ERR_INVAL, (p.devices = dev_abs, p.n_devices = 1));
	static const char *const dev_up[] = { "../sda" };
	BAD(CUSTOS_ERR_INVAL, (p.devices = dev_up, p.n_devices = 1));
	BAD(CUSTOS_ERR_INVAL, p.scratch_dir = "tmp");
	BAD(CUSTOS_ERR_INVAL, p.gpu = (sandbox_gpu)7);
	BAD(CUSTOS_ERR_LIMIT, p.limits.nofile = 1u << 21);
	BAD(CUSTOS_ERR_INVAL, p.uid = (uid_t)-1);
	/* swap is limited only beside a memory limit (v1's memsw counts both; v2's swap.max is
	 * written with memory.max): alone it would be silently unlimited */
	BAD(CUSTOS_ERR_INVAL, (p.limits.memory_bytes = 0, p.limits.swap_bytes = 1u << 20));
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.limits.swap_bytes = 1u << 20;
	assert_int_equal(sandbox_profile_validate(&p), CUSTOS_OK);
#undef BAD
	assert_int_equal(sandbox_profile_validate(NULL), CUSTOS_ERR_INVAL);
}

static void profile_hash(void **state)
{
	sandbox_profile p;
	char h1[65], h2[65], h3[65];
	(void)state;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	assert_int_equal(sandbox_profile_hash(&p, h1), CUSTOS_OK);
	assert_int_equal(sandbox_profile_hash(&p, h2), CUSTOS_OK);
	assert_int_equal(strlen(h1), 64);
	assert_string_equal(h1, h2);
	p.limits.memory_bytes++;
	assert_int_equal(sandbox_profile_hash(&p, h3), CUSTOS_OK);
	assert_string_not_equal(h1, h3);
	p.name = "bad name";
	assert_int_not_equal(sandbox_profile_hash(&p, h3), CUSTOS_OK);

	buf b;
	buf_init(&b, 1 << 16);
	assert_int_equal(sandbox_profile_builtin("gpu-amd", &p), CUSTOS_OK);
	assert_int_equal(sandbox_profile_json(&p, &b), CUSTOS_OK);
	const char *s;
	assert_int_equal(buf_cstr(&b, &s), CUSTOS_OK);
	assert_non_null(strstr(s, "\"gpu\":\"amd\""));
	assert_non_null(strstr(s, "\"seccomp\":\"gpu\""));
	buf_free(&b);
	buf_init(&b, 16); /* too small: the limit is reported, not overrun */
	assert_int_equal(sandbox_profile_json(&p, &b), CUSTOS_ERR_LIMIT);
	buf_free(&b);
}

static void event_json(void **state)
{
	sandbox_event ev = { .kind = SANDBOX_EV_VIOLATION,
		             .name = "m",
		             .profile_hash = "ab",
		             .generation = 2,
		             .pid = 42,
		             .syscall = "ptrace",
		             .syscall_nr = 101 };
	buf b;
	const char *s;
	(void)state;
	buf_init(&b, 4096);
	assert_int_equal(sandbox_event_json(&ev, &b), CUSTOS_OK);
	assert_int_equal(buf_cstr(&b, &s), CUSTOS_OK);
	assert_non_null(strstr(s, "\"event\":\"violation\""));
	assert_non_null(strstr(s, "\"syscall\":\"ptrace\""));
	assert_non_null(strstr(s, "\"profile_sha256\":\"ab\""));
	assert_non_null(strstr(s, "\"action\":\"eperm\""));
	buf_reset(&b);
	ev.kind = SANDBOX_EV_OOM;
	ev.limit = "memory";
	ev.count = 3;
	assert_int_equal(sandbox_event_json(&ev, &b), CUSTOS_OK);
	assert_int_equal(buf_cstr(&b, &s), CUSTOS_OK);
	assert_non_null(strstr(s, "\"count\":3"));
	assert_null(strstr(s, "syscall"));
	buf_free(&b);
	assert_string_equal(sandbox_event_kind_name(SANDBOX_EV_GIVE_UP), "give_up");
	assert_string_equal(sandbox_event_kind_name((sandbox_event_kind)99), "unknown");
}

static void syscall_names(void **state)
{
	char n[64];
	(void)state;
	const char *const *d = sandbox_seccomp_always_denied();
	bool ptrace_seen = false, uring = false;
	for (size_t i = 0; d[i]; i++) {
		ptrace_seen |= strcmp(d[i], "ptrace") == 0;
		uring |= strcmp(d[i], "io_uring_setup") == 0;
	}
	assert_true(ptrace_seen && uring);
	assert_true(sb_seccomp_is_denied("bpf"));
	assert_false(sb_seccomp_is_denied("read"));
	assert_int_equal(sb_seccomp_resolve("read"), SYS_read);
	assert_int_equal(sb_seccomp_resolve("landlock_create_ruleset"), 444);
	assert_int_equal(sb_seccomp_resolve("mseal"), 462); /* newer than libseccomp 2.5.4 */
	assert_int_equal(sb_seccomp_resolve("nope"), -1);
	assert_string_equal(sandbox_syscall_name(SCMP_ARCH_NATIVE, SYS_ptrace, n, sizeof(n)),
	                    "ptrace");
	assert_string_equal(sandbox_syscall_name(SCMP_ARCH_NATIVE, 462, n, sizeof(n)), "mseal");
	assert_string_equal(sandbox_syscall_name(SCMP_ARCH_NATIVE, 9999, n, sizeof(n)),
	                    "syscall_9999");
}

static void seccomp_build(void **state)
{
	sandbox_profile p;
	sb_filter f;
	(void)state;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	assert_int_equal(sb_seccomp_build(&p, &f), CUSTOS_OK);
	assert_true(f.len > 10);
	/* First instruction loads the architecture (the arch check comes first). */
	assert_int_equal(f.insns[0].k, offsetof(struct seccomp_data, arch));
	unsigned short def_len = f.len;
	sb_filter_free(&f);
	assert_int_equal(sandbox_profile_builtin("gpu-nvidia", &p), CUSTOS_OK);
	assert_int_equal(sb_seccomp_build(&p, &f), CUSTOS_OK);
	assert_int_not_equal(f.len, def_len);
	sb_filter_free(&f);
	static const char *const extra[] = { "sysfs" };
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.seccomp = SANDBOX_SECCOMP_CUSTOM;
	p.syscalls = extra;
	p.n_syscalls = 1;
	assert_int_equal(sb_seccomp_build(&p, &f), CUSTOS_OK);
	sb_filter_free(&f);
	static const char *const bad[] = { "mount" };
	p.syscalls = bad;
	assert_int_equal(sb_seccomp_build(&p, &f), CUSTOS_ERR_DENIED);
}

static void environment(void **state)
{
	sandbox_profile p;
	char **env = NULL;
	static const char *const allow[] = { "CUSTOS_T_A", "CUSTOS_T_MISSING" };
	static const char *const set[] = { "CUSTOS_T_A=override", "X=1" };
	(void)state;
	setenv("CUSTOS_T_A", "host", 1);
	setenv("CUSTOS_T_B", "secret", 1);
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.env_allow = allow;
	p.n_env_allow = 2;
	p.env_set = set;
	p.n_env_set = 2;
	assert_int_equal(sb_env_build(&p, &env), CUSTOS_OK);
	bool a = false, x = false, path = false;
	for (size_t i = 0; env[i]; i++) {
		assert_null(strstr(env[i], "secret"));
		assert_null(strstr(env[i], "MISSING"));
		a |= strcmp(env[i], "CUSTOS_T_A=override") == 0;
		x |= strcmp(env[i], "X=1") == 0;
		path |= strncmp(env[i], "PATH=", 5) == 0;
	}
	assert_true(a && x && path);
	sb_strv_free(env);
}

static void host_set(sb_cg_host *h, const char *mountinfo, const char *self)
{
	buf_init(&h->mountinfo, SB_CG_PROC_MAX);
	buf_init(&h->self, SB_CG_PROC_MAX);
	assert_int_equal(buf_append(&h->mountinfo, mountinfo, strlen(mountinfo)), CUSTOS_OK);
	assert_int_equal(buf_append(&h->self, self, strlen(self)), CUSTOS_OK);
}

/* Cgroup discovery from one snapshot of mountinfo and /proc/self/cgroup (read once per start). */
static void cgroup_discovery(void **state)
{
	(void)state;
	char mnt[64], root[64], path[64];
	char longline[6000];
	memset(longline, 'x', sizeof(longline) - 2);
	longline[sizeof(longline) - 2] = '\n';
	longline[sizeof(longline) - 1] = '\0';
	char mi[8192];
	snprintf(mi, sizeof(mi),
	         "%s"
	         "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
	         "30 27 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
	         "31 27 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
	         "32 27 0:28 /sub /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
	         longline); /* the last line has no newline */
	sb_cg_host h;
	host_set(&h, mi, "4:memory:/a/b\n1:cpu,cpuacct:/sub/c\n0::/\n");
	assert_int_equal(
	        sb_cg_find_mount(&h, "cgroup2", NULL, mnt, sizeof(mnt), root, sizeof(root)),
	        CUSTOS_OK);
	assert_string_equal(mnt, "/sys/fs/cgroup/unified");
	assert_int_equal(
	        sb_cg_find_mount(&h, "cgroup", "memory", mnt, sizeof(mnt), root, sizeof(root)),
	        CUSTOS_OK);
	assert_string_equal(mnt, "/sys/fs/cgroup/memory");
	assert_string_equal(root, "/");
	assert_int_equal(
	        sb_cg_find_mount(&h, "cgroup", "cpu", mnt, sizeof(mnt), root, sizeof(root)),
	        CUSTOS_OK);
	assert_string_equal(mnt, "/sys/fs/cgroup/cpu,cpuacct");
	assert_string_equal(root, "/sub");
	assert_int_equal(sb_cg_self_path(&h, "memory", path, sizeof(path)), CUSTOS_OK);
	assert_string_equal(path, "/a/b");
	assert_int_equal(sb_cg_self_path(&h, "cpu", path, sizeof(path)), CUSTOS_OK);
	assert_string_equal(path, "/sub/c");
	assert_int_equal(sb_cg_self_path(&h, NULL, path, sizeof(path)), CUSTOS_OK);
	assert_string_equal(path, "/");
	/* Negative: a controller with no hierarchy, a name that is only a prefix of an option,
	 * a v1 line for v2, results too long for the caller's buffer. */
	assert_int_equal(
	        sb_cg_find_mount(&h, "cgroup", "pids", mnt, sizeof(mnt), root, sizeof(root)),
	        CUSTOS_ERR_NOTFOUND);
	assert_int_equal(
	        sb_cg_find_mount(&h, "cgroup", "mem", mnt, sizeof(mnt), root, sizeof(root)),
	        CUSTOS_ERR_NOTFOUND);
	assert_int_equal(sb_cg_self_path(&h, "pids", path, sizeof(path)), CUSTOS_ERR_NOTFOUND);
	assert_int_equal(sb_cg_find_mount(&h, "cgroup2", NULL, mnt, 8, root, sizeof(root)),
	                 CUSTOS_ERR_LIMIT);
	assert_int_equal(sb_cg_self_path(&h, "memory", path, 4), CUSTOS_ERR_LIMIT);
	buf_free(&h.mountinfo);
	buf_free(&h.self);
	/* Nothing to read: every lookup fails, none crashes. */
	host_set(&h, "", "");
	assert_int_equal(
	        sb_cg_find_mount(&h, "cgroup2", NULL, mnt, sizeof(mnt), root, sizeof(root)),
	        CUSTOS_ERR_NOTFOUND);
	assert_int_equal(sb_cg_self_path(&h, NULL, path, sizeof(path)), CUSTOS_ERR_NOTFOUND);
	buf_free(&h.mountinfo);
	buf_free(&h.self);
}

static void cgroup_files(void **state)
{
	char dir[] = "/tmp/custos-cgtest.XXXXXX";
	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(
	        sb_cg_write(dir, "memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n"),
	        CUSTOS_ERR_SYS); /* no such file: cgroup files are never created */
	char path[128];
	snprintf(path, sizeof(path), "%s/memory.events", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n", f);
	fclose(f);
	assert_int_equal(sb_cg_read_key(dir, "memory.events", "max"), 7);
	assert_int_equal(sb_cg_read_key(dir, "memory.events", "oom_kill"), 2);
	assert_int_equal(sb_cg_read_key(dir, "memory.events", "oom"), 2);
	assert_int_equal(sb_cg_read_key(dir, "memory.events", "absent"), 0);
	assert_int_equal(sb_cg_read_key(dir, "nofile", "max"), 0);
	assert_int_equal(sb_cg_write(dir, "memory.events", "x"), CUSTOS_OK);
	unlink(path);
	/* v1 counters: memory.failcnt is a bare number (read without stdio). */
	sb_cgroup cg;
	sb_cgroup_counters c;
	memset(&cg, 0, sizeof(cg));
	cg.backend = SB_CG_V1;
	cg.v1dir[0] = dir;
	assert_int_equal(sb_cgroup_read(&cg, &c), CUSTOS_OK);
	assert_int_equal(c.mem_max, 0); /* no file: nothing counted */
	snprintf(path, sizeof(path), "%s/memory.failcnt", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("12345\n", f);
	fclose(f);
	assert_int_equal(sb_cgroup_read(&cg, &c), CUSTOS_OK);
	assert_int_equal(c.mem_max, 12345);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("garbage\n", f);
	fclose(f);
	assert_int_equal(sb_cgroup_read(&cg, &c), CUSTOS_OK);
	assert_int_equal(c.mem_max, 0);
	unlink(path);
	rmdir(dir);
	assert_string_equal(sb_cgroup_backend_name(SB_CG_V1), "v1");
	assert_string_equal(sb_cgroup_backend_name(SB_CG_NONE), "none");
}

/* v1 in two steps (the make runs while the child sets up): the plan names the directories
 * without making them; the make creates them and writes the limits, and when a limit cannot be
 * written it removes what it made and fails (the start then fails: fail closed). A hierarchy
 * stand-in on the test's own directory: mkdir works there, the limit files never exist. */
static void cgroup_v1_deferred(void **state)
{
	(void)state;
	char top[] = "/tmp/custos-cgv1.XXXXXX";
	assert_non_null(mkdtemp(top));
	char memdir[96], mi[512], leaf[160];
	snprintf(memdir, sizeof(memdir), "%s/memory", top);
	assert_int_equal(mkdir(memdir, 0755), 0);
	snprintf(mi, sizeof(mi), "31 27 0:27 / %s rw - cgroup cgroup rw,memory\n", memdir);
	sandbox_profile p;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.limits.pids = 0;
	p.limits.cpu_millis = 0;
	p.limits.memory_bytes = 64ull << 20;

	sb_cg_host h;
	sb_cgroup cg;
	host_set(&h, mi, "4:memory:/\n");
	memset(&cg, 0, sizeof(cg));
	assert_int_equal(sb_cgv1_plan(&p, &h, "custos-unit-1", &cg), CUSTOS_OK);
	assert_int_equal(cg.backend, SB_CG_V1);
	assert_true(cg.v1_pending);
	assert_non_null(cg.v1dir[0]);
	assert_null(cg.v1dir[1]);
	snprintf(leaf, sizeof(leaf), "%s/custos-unit-1", memdir);
	assert_string_equal(cg.v1dir[0], leaf);
	struct stat st;
	assert_int_equal(stat(leaf, &st), -1); /* planned, not made */
	/* The make: mkdir succeeds, memory.limit_in_bytes does not exist: error, dir removed. */
	assert_int_equal(sb_cgroup_realize(&p.limits, &cg), CUSTOS_ERR_SYS);
	assert_non_null(strstr(err_msg(), "memory.limit_in_bytes"));
	assert_int_equal(stat(leaf, &st), -1);
	assert_int_equal(cg.backend, SB_CG_NONE);
	assert_false(cg.v1_pending);
	/* Nothing deferred: realize does nothing. */
	assert_int_equal(sb_cgroup_realize(&p.limits, &cg), CUSTOS_OK);
	buf_free(&h.mountinfo);
	buf_free(&h.self);

	/* A parent that does not exist fails the plan, before anything is made. */
	host_set(&h, mi, "4:memory:/no/such/parent\n");
	memset(&cg, 0, sizeof(cg));
	assert_int_equal(sb_cgv1_plan(&p, &h, "custos-unit-2", &cg), CUSTOS_ERR_SYS);
	assert_non_null(strstr(err_msg(), "cannot be created"));
	assert_int_equal(cg.backend, SB_CG_NONE);
	buf_free(&h.mountinfo);
	buf_free(&h.self);
	/* No controller with a limit: nothing to plan. */
	p.limits.memory_bytes = 0;
	host_set(&h, mi, "4:memory:/\n");
	memset(&cg, 0, sizeof(cg));
	assert_int_equal(sb_cgv1_plan(&p, &h, "custos-unit-3", &cg), CUSTOS_ERR_UNSUPPORTED);
	buf_free(&h.mountinfo);
	buf_free(&h.self);
	assert_int_equal(rmdir(memdir), 0);
	assert_int_equal(rmdir(top), 0);
}

static void landlock_masks(void **state)
{
	(void)state;
	int abi = sandbox_landlock_abi();
	assert_true(abi >= 0);
	assert_int_equal(sb_landlock_fs_mask(0), 0);
	assert_int_equal(sb_landlock_fs_mask(1), SB_LL_FS_ALL_V1);
	assert_true(sb_landlock_fs_mask(2) & SB_LL_FS_REFER);
	assert_false(sb_landlock_fs_mask(4) & SB_LL_FS_IOCTL_DEV);
	assert_true(sb_landlock_fs_mask(5) & SB_LL_FS_IOCTL_DEV);
}

static void self_restrict_refuses(void **state)
{
	sandbox_self_opts o;
	static const char *const bad[] = { "ptrace" };
	(void)state;
	memset(&o, 0, sizeof(o));
	o.extra_syscalls = bad;
	o.n_extra_syscalls = 1;
	/* Refused before anything is applied, so this process stays unrestricted. */
	assert_int_equal(sandbox_self_restrict(&o), CUSTOS_ERR_DENIED);
	assert_int_equal(sandbox_self_restrict(NULL), CUSTOS_ERR_INVAL);
	assert_int_equal(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0);
}

static int thread_pipe[2];
static void *blocked_thread(void *arg)
{
	char c;
	(void)arg;
	(void)!read(thread_pipe[0], &c, 1);
	return NULL;
}

static void self_restrict_threads(void **state)
{
	sandbox_self_opts o;
	pthread_t t;
	(void)state;
	memset(&o, 0, sizeof(o));
	assert_int_equal(pipe2(thread_pipe, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&t, NULL, blocked_thread, NULL), 0);
	/* A second thread would keep capabilities and escape Landlock: refused, nothing done. */
	assert_int_equal(sandbox_self_restrict(&o), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "thread"));
	assert_int_equal(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0);
	assert_int_equal(write(thread_pipe[1], "x", 1), 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	close(thread_pipe[0]);
	close(thread_pipe[1]);
}

/* In a child: restrict, then probe. Exit codes name the failed check. */
static int self_child(int mode)
{
	static const char *const ro[] = { "/usr", "/proc" };
	static const char *const rw[] = { "/dev/null" };
	sandbox_self_opts o;
	memset(&o, 0, sizeof(o));
	o.read_paths = ro;
	o.n_read_paths = 2;
	o.write_paths = rw;
	o.n_write_paths = 1;
	if (sandbox_self_restrict(&o) != CUSTOS_OK)
		return 10;
	if (mode == 1) {
#ifdef SYS_sysfs
		syscall(SYS_sysfs, 3); /* unlisted: the filter kills */
		return 11;
#else
		raise(SIGSYS);
#endif
	}
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != -1 || errno != EPERM)
		return 12;
	if (open("/etc/hostname", O_RDONLY | O_CLOEXEC) != -1 || errno != EACCES)
		return 13;
	int fd = open("/usr/bin/env", O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 14;
	close(fd);
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd == -1)
		return 15;
	close(fd);
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return 16;
	if (prctl(PR_CAPBSET_READ, 0 /* CAP_CHOWN */, 0, 0, 0) != 0)
		return 17;
	if (unshare(CLONE_NEWUSER) != -1 || errno != EPERM)
		return 18;
	if (socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0) != -1 || errno != EPERM)
		return 19;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return 20;
	close(fd);
	/* Signals to this process only: the parent (root, same uid) is out of reach. */
	if (kill(getppid(), 0) != -1 || errno != EPERM)
		return 21;
	if (kill(-1, 0) != -1 || errno != EPERM)
		return 22;
	if (kill(getpid(), 0) != 0 || syscall(SYS_tgkill, getpid(), gettid(), 0) != 0)
		return 23;
	if (syscall(SYS_tgkill, getppid(), getppid(), 0) != -1 || errno != EPERM)
		return 24;
	if (syscall(SYS_tkill, gettid(), 0) != -1 || errno != EPERM)
		return 25;
	return 0;
}

static void self_restrict(void **state)
{
	(void)state;
	if (sandbox_landlock_abi() <= 0)
		skip();
	for (int mode = 0; mode < 2; mode++) {
		fflush(NULL);
		pid_t pid = fork();
		assert_int_not_equal(pid, -1);
		if (pid == 0)
			_exit(self_child(mode)); /* _exit: LSan cannot run under the filter */
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		if (mode == 0) {
			assert_true(WIFEXITED(st));
			assert_int_equal(WEXITSTATUS(st), 0);
		} else {
			assert_true(WIFSIGNALED(st));
			assert_int_equal(WTERMSIG(st), SIGSYS);
		}
	}
}

/* sandbox_landlock_narrow in a child confined as the proxy is (Landlock and its seccomp filter,
 * which must let the narrowing through): the narrower layer refuses what the proxy's view
 * allowed, keeps what it names, and cannot widen the first layer. Exit codes name the check. */
static int narrow_child(const char *t)
{
	char keys[256], log[256], extra[256], p[300], q[300];
	snprintf(keys, sizeof(keys), "%s/keys", t);
	snprintf(log, sizeof(log), "%s/log", t);
	snprintf(extra, sizeof(extra), "%s/extra", t);
	const char *ro[] = { "/usr", keys }, *rw[] = { log };
	sandbox_self_opts o;
	memset(&o, 0, sizeof(o));
	o.read_paths = ro;
	o.n_read_paths = 2;
	o.write_paths = rw;
	o.n_write_paths = 1;
	if (sandbox_self_restrict(&o) != CUSTOS_OK)
		return 10;
	snprintf(p, sizeof(p), "%s/key", keys);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 11; /* the first layer (the proxy's view) reads it */
	close(fd);
	const char *nrw[] = { log, extra };
	if (sandbox_landlock_narrow(NULL, 0, nrw, 2, true) != CUSTOS_OK)
		return 12;
	if (open(p, O_RDONLY | O_CLOEXEC) != -1 || errno != EACCES)
		return 13; /* the proxy's file is out of the narrower view */
	if (open("/usr/bin/env", O_RDONLY | O_CLOEXEC) != -1 || errno != EACCES)
		return 14;
	snprintf(p, sizeof(p), "%s/cursor.tmp", log);
	snprintf(q, sizeof(q), "%s/cursor", log);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return 15;
	close(fd);
	if (rename(p, q) != 0)
		return 16; /* a cursor replaced by rename, as the shipper does */
	snprintf(p, sizeof(p), "%s/f", extra);
	if (open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) != -1 || errno != EACCES)
		return 17; /* named by the second layer only: the first still refuses */
	return 0;
}

static void landlock_narrow(void **state)
{
	char t[] = "/tmp/test_sb_narrowXXXXXX", p[300];
	(void)state;
	if (sandbox_landlock_abi() <= 0)
		skip();
	assert_non_null(mkdtemp(t));
	static const char *const sub[] = { "keys", "log", "extra" };
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", t, sub[i]);
		assert_int_equal(mkdir(p, 0700), 0);
	}
	snprintf(p, sizeof(p), "%s/keys/key", t);
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	fflush(NULL);
	pid_t pid = fork();
	assert_int_not_equal(pid, -1);
	if (pid == 0)
		_exit(narrow_child(t)); /* _exit: LSan cannot run under the filter */
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	snprintf(p, sizeof(p), "rm -rf %s", t);
	assert_int_equal(system(p), 0);
}

/* notify_fd: the filter holds an unlisted call and reports it on a listener that the child
 * hands over (as the proxy hands its own to the supervisor); sandbox_self_violation names the
 * call and kills the caller before it runs on, or, for an always-denied call, answers EPERM
 * and lets it run on. Exit codes name the failed step. */
static int self_notify_child(int sock)
{
	static const char *const ro[] = { "/usr" };
	sandbox_self_opts o;
	int nfd = -1;
	memset(&o, 0, sizeof(o));
	o.read_paths = ro;
	o.n_read_paths = 1;
	o.notify_fd = &nfd;
	if (sandbox_self_restrict(&o) != CUSTOS_OK || nfd < 0)
		return 40;
	char cbuf[CMSG_SPACE(sizeof(int))], one = 'L';
	struct iovec iov = { &one, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	memset(cbuf, 0, sizeof(cbuf));
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &nfd, sizeof(int));
	if (sendmsg(sock, &mh, 0) != 1)
		return 41;
	close(nfd); /* no copy kept: nothing here can answer its own calls */
	/* Always-denied: reported, answered EPERM, and we run on. */
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != -1 || errno != EPERM)
		return 43;
#ifdef SYS_sysfs
	syscall(SYS_sysfs, 3); /* unlisted: held until the parent kills us */
#endif
	return 42;
}

static void self_restrict_notify(void **state)
{
	int sv[2];
	(void)state;
#ifndef SYS_sysfs
	skip();
#else
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_int_not_equal(pid, -1);
	if (pid == 0) {
		close(sv[0]);
		_exit(self_notify_child(sv[1])); /* _exit: LSan cannot run under the filter */
	}
	close(sv[1]);
	char cbuf[CMSG_SPACE(sizeof(int))], one;
	struct iovec iov = { &one, 1 };
	struct msghdr mh = { .msg_iov = &iov,
		             .msg_iovlen = 1,
		             .msg_control = cbuf,
		             .msg_controllen = sizeof(cbuf) };
	if (recvmsg(sv[0], &mh, MSG_CMSG_CLOEXEC) != 1) {
		int cst = 0;
		waitpid(pid, &cst, 0);
		fail_msg("the child sent no listener (status 0x%x)", cst);
	}
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	assert_non_null(c);
	assert_int_equal(c->cmsg_type, SCM_RIGHTS);
	int nfd;
	memcpy(&nfd, CMSG_DATA(c), sizeof(int));
	close(sv[0]);
	struct pollfd pf = { .fd = nfd, .events = POLLIN };
	sandbox_violation v;
	assert_int_equal(poll(&pf, 1, 10000), 1);
	assert_int_equal(sandbox_self_violation(nfd, &v), CUSTOS_OK);
	assert_string_equal(v.syscall, "ptrace");
	assert_int_equal(v.nr, SYS_ptrace);
	assert_int_equal(v.pid, pid);
	assert_true(v.denied);
	assert_false(v.killed);
	pf.revents = 0;
	assert_int_equal(poll(&pf, 1, 10000), 1);
	assert_true(pf.revents & POLLIN); /* the child ran on (EPERM) to its next call */
	assert_int_equal(sandbox_self_violation(nfd, &v), CUSTOS_OK);
	assert_false(v.denied);
	assert_int_equal(v.pid, pid);
	assert_int_equal(v.tid, pid);
	assert_int_equal(v.nr, SYS_sysfs);
	assert_string_equal(v.syscall, "sysfs");
	assert_true(v.thread[0] != '\0');
	assert_true(v.killed);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st)); /* not exit 42: the call never returned */
	assert_int_equal(WTERMSIG(st), SIGKILL);
	/* The filter has no user left: the listener hangs up. */
	pf.revents = 0;
	assert_int_equal(poll(&pf, 1, 5000), 1);
	assert_true(pf.revents & POLLHUP);
	close(nfd);
#endif
}

/* set_ids: the bounding set goes first (it needs CAP_SETPCAP), then the user; nothing is left
 * to regain. Exit codes name the failed check. */
static int self_ids_child(void)
{
	static const char *const ro[] = { "/usr" };
	sandbox_self_opts o;
	memset(&o, 0, sizeof(o));
	o.read_paths = ro;
	o.n_read_paths = 1;
	o.set_ids = true;
	o.uid = 65534;
	o.gid = 65534;
	if (sandbox_self_restrict(&o) != CUSTOS_OK)
		return 30;
	uid_t r, e, s;
	gid_t gr, ge, gs;
	if (getresuid(&r, &e, &s) != 0 || r != 65534 || e != 65534 || s != 65534)
		return 31;
	if (getresgid(&gr, &ge, &gs) != 0 || gr != 65534 || ge != 65534 || gs != 65534)
		return 32;
	if (getgroups(0, NULL) != 0)
		return 33;
	for (int c = 0; c <= 40; c++)
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
			return 34;
	if (setuid(0) != -1) /* seccomp: no set*id once confined */
		return 35;
	return 0;
}

static void self_restrict_ids(void **state)
{
	(void)state;
	if (geteuid() != 0 || sandbox_landlock_abi() <= 0)
		skip();
	fflush(NULL);
	pid_t pid = fork();
	assert_int_not_equal(pid, -1);
	if (pid == 0)
		_exit(self_ids_child());
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	/* setuid is not on the proxy's allow-list: the filter kills at the last check, which
	 * proves every earlier one passed. */
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
}

/* With the sandbox's table installed (as the custos binary does), config check refuses at its
 * position a system call name the sandbox would refuse at start; every name it passes, the
 * mapped profile validates. */
static void config_syscall_names(void **state)
{
	static const char ok[] = "version: 1\nsandbox_profiles:\n  p:\n"
	                         "    seccomp: { allow: [sysfs, getcpu], deny: [mbind] }\n";
	static const char bad_allow[] = "version: 1\nsandbox_profiles:\n  p:\n"
	                                "    seccomp: { allow: [sysfs, frobnicate] }\n";
	static const char bad_deny[] = "version: 1\nsandbox_profiles:\n  p:\n"
	                               "    seccomp: { deny: [mbind, no_such_call] }\n";
	custos_config *cfg = NULL;
	diag_list d;
	sandbox_profile p;
	(void)state;
	/* without the table (core alone) the spelling passes; the sandbox refuses the name */
	config_set_syscall_check(NULL);
	diag_init(&d);
	assert_int_equal(config_parse("t.yaml", bad_allow, sizeof(bad_allow) - 1, &cfg, &d),
	                 CUSTOS_OK);
	diag_free(&d);
	assert_int_not_equal(sandbox_profile_from_cfg(config_find_profile(cfg, "p"), &p),
	                     CUSTOS_OK);
	config_free(cfg);

	config_set_syscall_check(sandbox_syscall_known);
	diag_init(&d);
	assert_int_equal(config_parse("t.yaml", ok, sizeof(ok) - 1, &cfg, &d), CUSTOS_OK);
	diag_free(&d);
	assert_int_equal(sandbox_profile_from_cfg(config_find_profile(cfg, "p"), &p), CUSTOS_OK);
	sandbox_profile_cfg_free(&p);
	config_free(cfg);
	const char *texts[] = { bad_allow, bad_deny };
	const char *names[] = { "unknown system call 'frobnicate'",
		                "unknown system call 'no_such_call'" };
	const unsigned cols[] = { 31, 30 };
	for (size_t t = 0; t < 2; t++) {
		cfg = (custos_config *)1;
		diag_init(&d);
		assert_int_not_equal(config_parse("t.yaml", texts[t], strlen(texts[t]), &cfg, &d),
		                     CUSTOS_OK);
		assert_null(cfg);
		const diag_item *it = NULL;
		for (size_t i = 0; i < d.n && it == NULL; i++)
			if (strstr(d.items[i].message, names[t]))
				it = &d.items[i];
		if (it == NULL || it->line != 4 || it->col != cols[t])
			diag_print(&d, stderr);
		assert_non_null(it);
		assert_int_equal(it->line, 4);
		assert_int_equal(it->col, cols[t]);
		assert_non_null(strstr(it->hint, "libseccomp"));
		diag_free(&d);
	}
	config_set_syscall_check(NULL);
}

static void from_config(void **state)
{
	static const char yaml[] =
	        "version: 1\n"
	        "sandbox_profiles:\n"
	        "  gpu:\n"
	        "    gpu: nvidia\n"
	        "    devices: [/dev/fuse]\n"
	        "    binds: [ { src: /models, dst: /m }, { src: /data, rw: true } ]\n"
	        "    scratch: { type: dir, path: /var/lib/custos/s }\n"
	        "    limits: { memory: 1GiB, pids: 99, cpu: \"1.5\" }\n"
	        "    seccomp: { base: gpu, deny: [mbind] }\n"
	        "  custom:\n"
	        "    seccomp: { allow: [sysfs] }\n";
	custos_config *cfg = NULL;
	diag_list d;
	sandbox_profile p;
	(void)state;
	diag_init(&d);
	assert_int_equal(config_parse("t.yaml", yaml, sizeof(yaml) - 1, &cfg, &d), CUSTOS_OK);
	diag_free(&d);
	assert_int_equal(sandbox_profile_from_cfg(config_find_profile(cfg, "gpu"), &p), CUSTOS_OK);
	assert_string_equal(p.name, "gpu");
	assert_int_equal(p.gpu, SANDBOX_GPU_NVIDIA);
	assert_int_equal(p.seccomp, SANDBOX_SECCOMP_GPU);
	assert_int_equal(p.n_binds, 2);
	assert_string_equal(p.binds[0].dst, "/m");
	assert_true(p.binds[1].writable);
	assert_int_equal(p.n_devices, 1);
	assert_string_equal(p.devices[0], "fuse");
	assert_string_equal(p.scratch_dir, "/var/lib/custos/s");
	assert_string_equal(p.scratch_target, "/tmp"); /* the built-in's, as under up */
	assert_int_equal(p.limits.memory_bytes, 1ull << 30);
	assert_int_equal(p.limits.pids, 99);
	assert_int_equal(p.limits.cpu_millis, 1500);
	assert_int_equal(p.n_deny_syscalls, 1);
	char h[65];
	assert_int_equal(sandbox_profile_hash(&p, h), CUSTOS_OK);
	sandbox_profile_cfg_free(&p);
	assert_int_equal(sandbox_profile_from_cfg(config_find_profile(cfg, "custom"), &p),
	                 CUSTOS_OK);
	assert_int_equal(p.seccomp, SANDBOX_SECCOMP_CUSTOM);
	assert_int_equal(p.n_syscalls, 1);
	/* limits the entry leaves unset keep the built-in profile's, as custos up runs it */
	assert_int_equal(p.limits.memory_bytes, 1ull << 30);
	assert_int_equal(p.limits.cpu_millis, 1000);
	sandbox_profile_cfg_free(&p);
	assert_int_equal(sandbox_profile_from_cfg(NULL, &p), CUSTOS_ERR_INVAL);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(builtin_profiles),      cmocka_unit_test(validate_rejects),
		cmocka_unit_test(profile_hash),          cmocka_unit_test(event_json),
		cmocka_unit_test(syscall_names),         cmocka_unit_test(seccomp_build),
		cmocka_unit_test(environment),           cmocka_unit_test(cgroup_files),
		cmocka_unit_test(cgroup_discovery),      cmocka_unit_test(cgroup_v1_deferred),
		cmocka_unit_test(landlock_masks),        cmocka_unit_test(self_restrict_refuses),
		cmocka_unit_test(self_restrict_threads), cmocka_unit_test(self_restrict),
		cmocka_unit_test(self_restrict_notify),  cmocka_unit_test(self_restrict_ids),
		cmocka_unit_test(from_config),           cmocka_unit_test(config_syscall_names),
		cmocka_unit_test(landlock_narrow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
