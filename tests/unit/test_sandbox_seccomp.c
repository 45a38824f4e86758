/* Unit tests for the seccomp programs compiled at build time (sandbox/gen/seccomp_gen.c): each
 * equals what libseccomp compiles now for the same profile, and only equal inputs use one. And
 * what the programs do with ioctl, loaded in a forked child. */
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>
#include <seccomp.h>

#include "custos/sandbox.h"
#include "sandbox/sb_int.h"

static const sb_seccomp_builtin *find_builtin(const char *key)
{
	for (size_t i = 0; i < sb_seccomp_n_builtins; i++)
		if (strcmp(sb_seccomp_builtins[i].key, key) == 0)
			return &sb_seccomp_builtins[i];
	return NULL;
}

static void test_builtins_equal_a_fresh_compile(void **state)
{
	(void)state;
	const char *const *names = sandbox_profile_builtin_names();
	assert_true(sb_seccomp_n_builtins >= 2); /* default, gpu */
	for (size_t i = 0; names[i]; i++) {
		sandbox_profile p;
		assert_int_equal(sandbox_profile_builtin(names[i], &p), CUSTOS_OK);
		char *key = sb_seccomp_key(&p);
		assert_non_null(key);
		const sb_seccomp_builtin *b = find_builtin(key);
		assert_non_null(b);
		assert_int_equal(b->arch, seccomp_arch_native());
		sb_filter fresh, built;
		assert_int_equal(sb_seccomp_compile(&p, &fresh), CUSTOS_OK);
		assert_int_equal(b->len, fresh.len);
		assert_memory_equal(b->insns, fresh.insns, fresh.len * sizeof(fresh.insns[0]));
		/* ... and it is what a spawn gets. */
		assert_int_equal(sb_seccomp_build(&p, &built), CUSTOS_OK);
		assert_int_equal(built.len, fresh.len);
		assert_memory_equal(built.insns, fresh.insns, fresh.len * sizeof(fresh.insns[0]));
		sb_filter_free(&fresh);
		sb_filter_free(&built);
		free(key);
	}
}

static void test_other_inputs_compile_at_run_time(void **state)
{
	(void)state;
	sandbox_profile p;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	static const char *const deny[] = { "ioctl" };
	p.deny_syscalls = deny;
	p.n_deny_syscalls = 1;
	char *key = sb_seccomp_key(&p);
	assert_non_null(key);
	assert_null(find_builtin(key)); /* a deny list is part of the key */
	sandbox_profile d;
	assert_int_equal(sandbox_profile_builtin("default", &d), CUSTOS_OK);
	char *dkey = sb_seccomp_key(&d);
	const sb_seccomp_builtin *b = find_builtin(dkey);
	assert_non_null(b);
	sb_filter f;
	assert_int_equal(sb_seccomp_build(&p, &f), CUSTOS_OK);
	assert_true(f.len != b->len || memcmp(f.insns, b->insns, f.len * sizeof(f.insns[0])) != 0);
	sb_filter_free(&f);
	/* Custom lists too, and an unknown name in one still fails. */
	static const char *const custom[] = { "custos_no_such_call" };
	d.seccomp = SANDBOX_SECCOMP_CUSTOM;
	d.syscalls = custom;
	d.n_syscalls = 1;
	assert_int_not_equal(sb_seccomp_build(&d, &f), CUSTOS_OK);
	free(key);
	free(dkey);
}

/* Loads p's program in a forked child (no listener: a notified call fails with ENOSYS there)
 * and runs probe there; returns probe's bit mask, or -1 when the child could not run. */
static int in_filtered_child(const sandbox_profile *p, int (*probe)(void))
{
	sb_filter f;
	int pfd[2];
	assert_int_equal(sb_seccomp_build(p, &f), CUSTOS_OK);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_fprog prog = { .len = f.len, .filter = f.insns };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
		    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == -1)
			_exit(1);
		int mask = probe();
		_exit(write(pfd[1], &mask, sizeof(mask)) == sizeof(mask) ? 0 : 1);
	}
	close(pfd[1]);
	int st = 0, mask = -1;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
	    read(pfd[0], &mask, sizeof(mask)) != sizeof(mask))
		mask = -1;
	close(pfd[0]);
	sb_filter_free(&f);
	return mask;
}

/* The terminal ioctls that reach past the sandbox (TIOCSTI injects input into the operator's
 * shell), one with high bits set in the request (the kernel reads only the low 32); then a
 * terminal request every profile allows and a device's (an NVIDIA-style request). A bit per
 * request that was let through (/dev/null answers ENOTTY then). */
static const unsigned long ioctl_reqs[] = { TIOCSTI,   (1UL << 32) | TIOCSTI,
	                                    TIOCLINUX, TIOCCONS,
	                                    TIOCSETD,  TIOCNOTTY,
	                                    TIOCSCTTY, TCGETS,
	                                    0xc03046d2 };
enum { TTY = 0x7f, TCGETS_BIT = 1 << 7, DEVICE = 1 << 8 };

static int probe_ioctls(void)
{
	int mask = 0, fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (size_t i = 0; fd >= 0 && i < sizeof(ioctl_reqs) / sizeof(ioctl_reqs[0]); i++) {
		char arg[64] = { 0 };
		if (syscall(SYS_ioctl, fd, ioctl_reqs[i], arg) == -1 && errno == ENOTTY)
			mask |= 1 << i;
	}
	return mask;
}

/* TIOCSTI and company are refused in every profile; the gpu profile lets every other request
 * through, a custom profile that lists ioctl keeps the default's request filter. */
static void tty_ioctls_refused_everywhere(void **state)
{
	(void)state;
	sandbox_profile p;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_ioctls), TCGETS_BIT);
	assert_int_equal(sandbox_profile_builtin("gpu-nvidia", &p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_ioctls), TCGETS_BIT | DEVICE);
	p.seccomp = SANDBOX_SECCOMP_GPU;
	p.gpu = SANDBOX_GPU_NONE;
	assert_int_equal(in_filtered_child(&p, probe_ioctls), TCGETS_BIT | DEVICE);
	static const char *const allow_ioctl[] = { "ioctl" };
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.seccomp = SANDBOX_SECCOMP_CUSTOM;
	p.syscalls = allow_ioctl;
	p.n_syscalls = 1;
	assert_int_equal(in_filtered_child(&p, probe_ioctls), TCGETS_BIT);
}

/* Sockets and clone: a bit per call that was let through. The first four are the allowed
 * ones; then MPTCP, UDP-Lite, SCTP, netlink, a packet socket, clone with namespace flags. */
static int probe_sockets_clone(void)
{
	static const int calls[][3] = {
		{ AF_INET, SOCK_STREAM, 0 },
		{ AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP },
		{ AF_INET, SOCK_DGRAM, IPPROTO_UDP },
		{ AF_UNIX, SOCK_STREAM, 0 },
		{ AF_INET, SOCK_STREAM, 262 },
		{ AF_INET, SOCK_DGRAM, 136 },
		{ AF_INET, SOCK_STREAM, 132 },
		{ AF_NETLINK, SOCK_RAW, 0 },
		{ AF_PACKET, SOCK_DGRAM, 0 },
	};
	int mask = 0;
	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		long fd = syscall(SYS_socket, calls[i][0], calls[i][1], calls[i][2]);
		if (fd >= 0 || errno != ENOSYS)
			mask |= 1 << i;
		if (fd >= 0)
			close((int)fd);
	}
	long r = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	if (r >= 0 || errno != ENOSYS)
		mask |= 1 << 9;
	return mask;
}

/* Only TCP and UDP (by 0 or by name) and Unix sockets, no clone with namespace flags; a custom
 * profile that lists socket or clone keeps the filters. */
static void socket_and_clone_filters_kept(void **state)
{
	(void)state;
	sandbox_profile p;
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_sockets_clone), 0xf);
	assert_int_equal(sandbox_profile_builtin("gpu-nvidia", &p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_sockets_clone), 0xf);
	static const char *const allow[] = { "clone", "socket", "socketpair", "personality",
		                             "clone3" };
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.seccomp = SANDBOX_SECCOMP_CUSTOM;
	p.syscalls = allow;
	p.n_syscalls = 5;
	assert_int_equal(sandbox_profile_validate(&p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_sockets_clone), 0xf);
}

/* The calls that give a file its mode: a bit per call that was let through (a notified call
 * fails with ENOSYS here, as does openat2, answered ENOSYS). Bits 0-3 are allowed: a plain
 * create, a plain chmod, and an open and an openat that create nothing (their mode argument
 * unused, whatever it holds); the rest set S_ISUID or S_ISGID, and openat2. */
static char mode_dir[64];

static int probe_modes(void)
{
	char f[128], g[128];
	snprintf(f, sizeof(f), "%s/plain", mode_dir);
	snprintf(g, sizeof(g), "%s/suid", mode_dir);
	struct {
		uint64_t flags, mode, resolve;
	} how = { O_WRONLY | O_CREAT | O_CLOEXEC, 04755, 0 };
	long r[] = {
		syscall(SYS_openat, AT_FDCWD, f, O_WRONLY | O_CREAT | O_CLOEXEC, 0644),
		syscall(SYS_chmod, f, 0700),
		syscall(SYS_open, f, O_RDONLY | O_CLOEXEC, 04755),
		syscall(SYS_openat, AT_FDCWD, f, O_RDONLY | O_CLOEXEC, 06755),
		syscall(SYS_open, g, O_WRONLY | O_CREAT | O_CLOEXEC, 04755),
		syscall(SYS_openat, AT_FDCWD, g, O_WRONLY | O_CREAT | O_CLOEXEC, 02755),
		syscall(SYS_openat, AT_FDCWD, mode_dir, O_WRONLY | __O_TMPFILE | O_CLOEXEC, 04700),
		syscall(SYS_creat, g, 04755),
		syscall(SYS_chmod, f, 04755),
		syscall(SYS_fchmodat, AT_FDCWD, f, 02755),
		syscall(452 /* fchmodat2 */, AT_FDCWD, f, 04755, 0),
		syscall(437 /* openat2 */, AT_FDCWD, g, &how, sizeof(how)),
	};
	int mask = 0;
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
		if (r[i] >= 0 || errno != ENOSYS)
			mask |= 1 << i;
	int fd = open(f, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && (syscall(SYS_fchmod, fd, 04755) >= 0 || errno != ENOSYS))
		mask |= 1 << 12;
	return mask;
}

/* No profile lets a sandbox give a file S_ISUID or S_ISGID (in a writable bind it is a host
 * file, where the bind's nosuid does not hold); a custom profile listing the calls keeps the
 * filters. */
static void setuid_modes_refused(void **state)
{
	(void)state;
	sandbox_profile p;
	snprintf(mode_dir, sizeof(mode_dir), "/tmp/custos-modes.XXXXXX");
	assert_non_null(mkdtemp(mode_dir));
	char f[128], g[128];
	snprintf(f, sizeof(f), "%s/plain", mode_dir);
	snprintf(g, sizeof(g), "%s/suid", mode_dir);
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_modes), 0xf);
	assert_int_equal(sandbox_profile_builtin("gpu-nvidia", &p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_modes), 0xf);
	static const char *const allow[] = { "open",  "openat", "openat2",  "creat",
		                             "chmod", "fchmod", "fchmodat", "fchmodat2" };
	assert_int_equal(sandbox_profile_builtin("default", &p), CUSTOS_OK);
	p.seccomp = SANDBOX_SECCOMP_CUSTOM;
	p.syscalls = allow;
	p.n_syscalls = 8;
	assert_int_equal(sandbox_profile_validate(&p), CUSTOS_OK);
	assert_int_equal(in_filtered_child(&p, probe_modes), 0xf);
	struct stat st;
	assert_int_equal(stat(f, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(access(g, F_OK), -1);
	unlink(f);
	assert_int_equal(rmdir(mode_dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builtins_equal_a_fresh_compile),
		cmocka_unit_test(test_other_inputs_compile_at_run_time),
		cmocka_unit_test(tty_ioctls_refused_everywhere),
		cmocka_unit_test(socket_and_clone_filters_kept),
		cmocka_unit_test(setuid_modes_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
