/*
 * Spawning one sandbox instance. The parent prepares the plan, clones into new namespaces,
 * writes the id maps and joins the cgroup; the child, as the new pid namespace's init, runs the
 * setup steps in a fixed order (ids, cgroup ns, loopback, hostname, mounts and pivot_root,
 * rlimits, capabilities, NO_NEW_PRIVS, Landlock, seccomp last), hands the seccomp listener to
 * the parent and, once told to go, forks the command and reaps until it exits. Any failing
 * step ends the child and fails the spawn with that step's name (fail closed).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sb_int.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* One message on the sync socket. */
typedef struct sb_sync_msg {
	int32_t tag;
	int32_t val;
	char text[SB_MSG_MAX];
} sb_sync_msg;

/* The v1 tasks files: the sandbox's and custos' own (the seccomp listener is one). */
#define SB_SYNC_MAX_FDS (2 * SB_CG_V1_CTRLS)

static int sync_send_fds(int sock, int tag, int val, const char *text, const int *fds, int nfds)
{
	sb_sync_msg m;
	char cbuf[CMSG_SPACE(SB_SYNC_MAX_FDS * sizeof(int))];
	size_t tl = text ? strlen(text) : 0;

	memset(&m, 0, sizeof(m));
	m.tag = tag;
	m.val = val;
	if (tl >= sizeof(m.text))
		tl = sizeof(m.text) - 1;
	if (tl)
		memcpy(m.text, text, tl);
	struct iovec iov = { .iov_base = &m, .iov_len = offsetof(sb_sync_msg, text) + tl + 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds > 0 && nfds <= SB_SYNC_MAX_FDS) {
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	return n == -1 ? -1 : 0;
}

static int sync_send(int sock, int tag, int val, const char *text, int passfd)
{
	return sync_send_fds(sock, tag, val, text, &passfd, passfd >= 0 ? 1 : 0);
}

/* Returns 1 with a message, 0 on EOF, -1 on error. Up to maxfds passed fds land in fds (the rest
 * is -1; any beyond maxfds are closed). */
static int sync_recv_fds(int sock, int *tag, int *val, char *text, size_t textsz, int *fds,
                         int maxfds)
{
	sb_sync_msg m;
	char cbuf[CMSG_SPACE(SB_SYNC_MAX_FDS * sizeof(int))];
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr mh = { .msg_iov = &iov,
		             .msg_iovlen = 1,
		             .msg_control = cbuf,
		             .msg_controllen = sizeof(cbuf) };
	ssize_t n;
	int got = 0;

	for (int i = 0; i < maxfds; i++)
		fds[i] = -1;
	memset(&m, 0, sizeof(m));
	/* ECONNRESET: the peer closed with one of our messages unread in its queue (a child that
	 * failed while we sent it the next step). The kernel reports that error before the
	 * messages still queued here, once, so read again: the child's error report is next. */
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n == -1 && (errno == EINTR || errno == ECONNRESET));
	for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (got < maxfds)
					fds[got++] = fd;
				else
					close(fd);
			}
		}
	if (n == 0)
		return 0;
	if (n < (ssize_t)offsetof(sb_sync_msg, text)) {
		for (int i = 0; i < got; i++) {
			close(fds[i]);
			fds[i] = -1;
		}
		return -1;
	}
	m.text[sizeof(m.text) - 1] = '\0';
	*tag = m.tag;
	*val = m.val;
	if (text && textsz)
		snprintf(text, textsz, "%s", m.text);
	return 1;
}

int sb_sync_recv(int sock, int *tag, int *val, char *text, size_t textsz, int *passfd);
int sb_sync_recv(int sock, int *tag, int *val, char *text, size_t textsz, int *passfd)
{
	int fd;
	int r = sync_recv_fds(sock, tag, val, text, textsz, &fd, 1);
	if (passfd)
		*passfd = fd;
	else if (fd >= 0)
		close(fd);
	return r;
}

void sb_child_fail(int fd, const char *step, int err)
{
	char msg[SB_MSG_MAX];
	snprintf(msg, sizeof(msg), "%s: %s", step, strerror(err));
	sync_send(fd, SB_SYNC_ERROR, err, msg, -1);
	_exit(127);
}

/* ------------------------------------------------------------------------------- the child */

static volatile pid_t init_child_pid;

/* Signals the init forwards to the command. They are blocked from before clone until the
 * handlers are in place: an init ignores signals it has no handler for, so a SIGTERM from
 * sandbox_stop arriving during setup would otherwise be lost. */
static const int fwd_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };

static void fwd_sigset(sigset_t *s)
{
	sigemptyset(s);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(fwd_signals); i++)
		sigaddset(s, fwd_signals[i]);
}

static void init_forward(int sig)
{
	if (init_child_pid > 0)
		kill(init_child_pid, sig);
}

static void exec_command(const sb_plan *plan, int sync)
{
	const char *cmd = plan->argv[0];
	int err = ENOENT;

	if (strchr(cmd, '/')) {
		execve(cmd, plan->argv, plan->envp);
		err = errno;
	} else {
		static const char *const dirs[] = { "/usr/local/bin", "/usr/bin", "/bin",
			                            "/usr/sbin", "/sbin" };
		for (size_t i = 0; i < CUSTOS_ARRAY_LEN(dirs); i++) {
			char path[SANDBOX_PATH_MAX];
			if ((size_t)snprintf(path, sizeof(path), "%s/%s", dirs[i], cmd) >=
			    sizeof(path))
				break;
			execve(path, plan->argv, plan->envp);
			if (errno != ENOENT)
				err = errno;
		}
	}
	char msg[SB_MSG_MAX];
	snprintf(msg, sizeof(msg), "exec %s: %s", cmd, strerror(err));
	sync_send(sync, SB_SYNC_ERROR, err, msg, -1);
	_exit(127);
}

/* The command's process. Not glibc's fork(): that takes malloc's and stdio's locks for its atfork
 * handling, and this process is a clone3 copy of a multi-threaded custos: a lock another custos
 * thread held at that instant (the spawning thread's neighbour hashing the profile, a proxy
 * worker in `custos up`) has no owner here and fork() would wait on it forever. And not a copy
 * at all: the command shares the init's memory (CLONE_VM) and the init waits until its execve
 * (CLONE_VFORK), as posix_spawn does, so no page table is copied and no page faulted back in
 * copy-on-write for a process that replaces its image at once. The command runs on a stack of
 * its own and calls only async-signal-safe functions until execve; it writes nothing the init
 * reads. (seccomp allows clone without namespace flags.) */
/* The v1 cgroup fds the init got at the cgroup step: the sandbox's `tasks` files (join) and
 * custos' own (home). */
typedef struct init_cg {
	int fds[SB_SYNC_MAX_FDS];
	int n_join, n_home; /* fds[0..n_join) and fds[n_join..n_join + n_home) */
} init_cg;

typedef struct init_cmd {
	const sb_plan *plan;
	int sync;
	const int *stdio;
	const init_cg *cg;
} init_cmd;

static int init_command(void *arg)
{
	const init_cmd *c = arg;
	struct sigaction sa;
	sigset_t set;
	int r;

	/* Into the sandbox's cgroups, by itself, before anything of the command runs (the init
	 * has just left them: see init_main). */
	if ((r = sb_cgroup_join_self(c->cg->fds, c->cg->n_join)) != 0)
		sb_child_fail(c->sync, "join the cgroup (v1 tasks)", r);
	for (int i = 0; i < 3; i++)
		if (c->stdio[i] >= 0 && c->stdio[i] != i && dup2(c->stdio[i], i) == -1)
			sb_child_fail(c->sync, "dup2 of stdio", errno);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(fwd_signals); i++)
		sigaction(fwd_signals[i], &sa, NULL);
	fwd_sigset(&set);
	sigprocmask(SIG_UNBLOCK, &set, NULL); /* execve keeps the mask */
	exec_command(c->plan, c->sync);
	return 127; /* not reached: exec_command ends the process */
}

#define INIT_CMD_STACK (64 * 1024)
static char init_cmd_stack[INIT_CMD_STACK] __attribute__((aligned(64)));

static pid_t init_spawn(const sb_plan *plan, int sync, const int stdio[3], const init_cg *cg)
{
	init_cmd c = { .plan = plan, .sync = sync, .stdio = stdio, .cg = cg };
	return clone(init_command, init_cmd_stack + sizeof(init_cmd_stack),
	             CLONE_VM | CLONE_VFORK | SIGCHLD, &c);
}

static __attribute__((noreturn)) void init_main(const sb_plan *plan, int sync, const int stdio[3],
                                                init_cg *cg)
{
	const int *fwd = fwd_signals;
	struct sigaction sa;
	sigset_t set;

	fwd_sigset(&set);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = init_forward;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(fwd_signals); i++)
		sigaction(fwd[i], &sa, NULL);

	/* v1: back into custos' own cgroups, so that the sandbox's hold only the command and what
	 * it starts, which joins them itself (init_command). They are empty, and removable, once
	 * the command is reaped, before this process has gone (sandbox_opts.leave_init). A failed
	 * move leaves the init inside (removal then waits for its exit, as on v2); the command
	 * joins every one in any case. */
	if (cg->n_home > 0)
		(void)sb_cgroup_join_self(cg->fds + cg->n_join, cg->n_home);
	for (int i = cg->n_join; i < cg->n_join + cg->n_home; i++)
		close(cg->fds[i]); /* before the command exists (they are O_CLOEXEC too) */
	pid_t pid = init_spawn(plan, sync, stdio, cg);
	if (pid == -1)
		sb_child_fail(sync, "start of the command", errno);
	for (int i = 0; i < cg->n_join; i++)
		close(cg->fds[i]);
	init_child_pid = pid;
	sigprocmask(SIG_UNBLOCK, &set, NULL); /* pending ones reach the command now */
	for (int i = 0; i < 3; i++)
		if (stdio[i] > 2)
			close(stdio[i]);
	int status = 0;
	for (;;) {
		int st;
		pid_t w = waitpid(-1, &st, 0);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (w == pid) {
			status = st;
			break;
		}
	}
	sync_send(sync, SB_SYNC_STATUS, status, NULL, -1);
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	_exit(128 + WTERMSIG(status));
}

void sb_close_fds_except(const int *keep, size_t n)
{
	/* Close every gap between the fds we keep (close_range, Linux >= 5.9). */
	int k[8];
	size_t m = 0;
	for (size_t i = 0; i < n && m < CUSTOS_ARRAY_LEN(k); i++)
		if (keep[i] >= 3)
			k[m++] = keep[i];
	for (size_t i = 0; i < m; i++)
		for (size_t j = i + 1; j < m; j++)
			if (k[j] < k[i]) {
				int t = k[i];
				k[i] = k[j];
				k[j] = t;
			}
	unsigned lo = 3;
	for (size_t i = 0; i < m; i++) {
		if (k[i] < (int)lo)
			continue;
		if ((unsigned)k[i] > lo)
			syscall(SYS_close_range, lo, (unsigned)k[i] - 1, 0);
		lo = (unsigned)k[i] + 1;
	}
	syscall(SYS_close_range, lo, ~0U, 0);
}

static void close_other_fds(int keep, const int stdio[3])
{
	/* Nothing of custos reaches the sandbox but the sync socket and the chosen stdio. */
	int k[4] = { keep, stdio[0], stdio[1], stdio[2] };
	sb_close_fds_except(k, CUSTOS_ARRAY_LEN(k));
}

/* Overwrites the init's copy of custos' argv and environment strings; /proc/1/cmdline then
 * reads "custos-sandbox-init". */
static void wipe_custos_strings(const sb_plan *plan)
{
	static const char name[] = "custos-sandbox-init";
	if (plan->arg_end > plan->arg_start) {
		char *a = (char *)plan->arg_start;
		size_t n = plan->arg_end - plan->arg_start;
		memset(a, 0, n);
		if (n > sizeof(name))
			memcpy(a, name, sizeof(name));
	}
	if (plan->env_end > plan->env_start)
		memset((char *)plan->env_start, 0, plan->env_end - plan->env_start);
}

static __attribute__((noreturn)) void child_main(const sb_plan *plan, int sync, const int stdio[3])
{
	const char *step = "";
	int tag = 0, val = 0, r;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1)
		sb_child_fail(sync, "PR_SET_PDEATHSIG", errno);
	close_other_fds(sync, stdio);
	/* A session of our own, as bwrap --new-session: custos' controlling terminal is not the
	 * sandbox's (no TIOCSTI into the operator's shell, no job-control signals from it). The
	 * command may still hold the terminal on its stdio; custos forwards SIGINT and the rest. */
	if (setsid() == -1)
		sb_child_fail(sync, "setsid", errno);
	if (sb_sync_recv(sync, &tag, &val, NULL, 0, NULL) != 1 || tag != SB_SYNC_MAPPED)
		_exit(127); /* the parent gave up */
	/* This process is a copy of custos: its memory holds custos' environment, keys and
	 * configuration, and unprivileged it runs under custos' own uid, where the command could
	 * read /proc/1/environ and /proc/1/mem. Not dumpable, they are closed to the command (the
	 * check wants CAP_SYS_PTRACE where custos runs); the command's execve makes only its own
	 * new image dumpable again. The parent has written our id maps and opened our namespaces
	 * by now: both need us dumpable. Then the copies of custos' argv (/proc/1/cmdline, which
	 * anyone may read) and environment go. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
		sb_child_fail(sync, "PR_SET_DUMPABLE", errno);
	wipe_custos_strings(plan);
	if ((r = sb_userns_become(plan->uid, plan->gid, &step)) != 0)
		sb_child_fail(sync, step, r);
	/* A credential change clears the parent-death signal: set it again. Should custos have
	 * died in between, the next read of the sync socket sees EOF and we end there. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1)
		sb_child_fail(sync, "PR_SET_PDEATHSIG", errno);
	if (plan->net_ns && (r = sb_net_lo_up()) != 0)
		sb_child_fail(sync, "bring up lo", r);
	if ((plan->clone_flags & CLONE_NEWUTS) &&
	    sethostname(plan->hostname, strlen(plan->hostname)) == -1)
		sb_child_fail(sync, "sethostname", errno);
	if ((r = sb_mounts_apply(&plan->mounts, &step)) != 0)
		sb_child_fail(sync, step, r);
	if (chdir(plan->workdir) == -1)
		sb_child_fail(sync, "chdir to the workdir", errno);
	if ((r = sb_rlimits_apply(&plan->rlimits, &step)) != 0)
		sb_child_fail(sync, step, r);
	/* Into the cgroup: v2 cloned us into it; on v1 the parent made the directories meanwhile
	 * (sb_cgroup_realize) and sends their `tasks` files here, which we join by ourselves (see
	 * sb_cgroup_join_fds); otherwise the parent moved us. Only now is it the right root for the
	 * cgroup namespace, and the command never runs outside it. */
	init_cg cg;
	int got = sync_recv_fds(sync, &tag, &val, NULL, 0, cg.fds, SB_SYNC_MAX_FDS);
	if (got != 1 || tag != SB_SYNC_CGROUP)
		_exit(127);
	cg.n_join = cg.n_home = 0;
	for (int i = 0; i < SB_SYNC_MAX_FDS; i++)
		if (cg.fds[i] >= 0)
			*(i < val ? &cg.n_join : &cg.n_home) += 1;
	if (val < 0 || val > SB_CG_V1_CTRLS || cg.n_join != val ||
	    (cg.n_home != 0 && cg.n_home != val))
		sb_child_fail(sync, "cgroup step", EPROTO);
	if ((r = sb_cgroup_join_self(cg.fds, cg.n_join)) != 0)
		sb_child_fail(sync, "join the cgroup (v1 tasks)", r);
	if (plan->cgroup_ns && unshare(CLONE_NEWCGROUP) == -1)
		sb_child_fail(sync, "unshare cgroup namespace", errno);
	if ((r = sb_caps_drop_all(&step)) != 0)
		sb_child_fail(sync, step, r);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		sb_child_fail(sync, "PR_SET_NO_NEW_PRIVS", errno);
	if ((r = sb_landlock_apply(&plan->landlock, &step)) != 0)
		sb_child_fail(sync, step, r);
	int lfd = sb_seccomp_load_listener(&plan->filter);
	if (lfd < 0)
		sb_child_fail(sync, "seccomp load", -lfd);
	if (sync_send(sync, SB_SYNC_READY, 0, NULL, lfd) == -1)
		_exit(127);
	close(lfd);
	if (plan->go_barrier &&
	    (sb_sync_recv(sync, &tag, &val, NULL, 0, NULL) != 1 || tag != SB_SYNC_GO))
		_exit(127);
	init_main(plan, sync, stdio, &cg);
}

/* ------------------------------------------------------------------------------ the parent */

/* Where this process's argv and environment strings lie (/proc/self/stat, fields 48-51): read
 * once, they do not move. */
static uintptr_t strings_area[4];
static pthread_once_t strings_once = PTHREAD_ONCE_INIT;

static void strings_area_read(void)
{
	char st[2048];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return;
	ssize_t n = read(fd, st, sizeof(st) - 1);
	close(fd);
	if (n <= 0)
		return;
	st[n] = '\0';
	const char *p = strrchr(st, ')'); /* the name before it may hold anything */
	unsigned long long v[4];
	/* After ")": field 3 (state) to 47, then arg_start, arg_end, env_start, env_end. */
	for (int field = 2; p && field < 48; field++)
		p = strchr(p + 1, ' ');
	if (p && sscanf(p, " %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3]) == 4)
		for (int i = 0; i < 4; i++)
			strings_area[i] = (uintptr_t)v[i];
}

custos_err sb_plan_build(const sandbox_profile *p, const char *const *argv, bool have_cgroup,
                         sb_plan *plan)
{
	custos_err e;

	memset(plan, 0, sizeof(*plan));
	plan->go_barrier = true;
	plan->clone_flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS;
	if (p->namespaces & SANDBOX_NS_NET)
		plan->clone_flags |= CLONE_NEWNET;
	if (p->namespaces & SANDBOX_NS_IPC)
		plan->clone_flags |= CLONE_NEWIPC;
	if (p->namespaces & SANDBOX_NS_UTS)
		plan->clone_flags |= CLONE_NEWUTS;
	plan->net_ns = (p->namespaces & SANDBOX_NS_NET) != 0;
	plan->cgroup_ns = (p->namespaces & SANDBOX_NS_CGROUP) != 0;
	plan->privileged = geteuid() == 0;
	plan->uid = p->uid;
	plan->gid = p->gid;
	plan->out_uid = plan->privileged ? p->outside_uid : getuid();
	plan->out_gid = plan->privileged ? p->outside_gid : getgid();
	snprintf(plan->hostname, sizeof(plan->hostname), "%s", p->name);
	plan->mounts.ops = NULL;
	if ((e = sb_mounts_plan(p, &plan->mounts)) != CUSTOS_OK ||
	    (e = sb_landlock_plan(p, &plan->landlock)) != CUSTOS_OK ||
	    (e = sb_seccomp_build(p, &plan->filter)) != CUSTOS_OK)
		goto fail;
	sb_rlimits_plan(p, have_cgroup, &plan->rlimits);
	plan->argv = sb_strv_dup(argv, SANDBOX_MAX_ARGS, &e);
	if (plan->argv == NULL)
		goto fail;
	if ((e = sb_env_build(p, &plan->envp)) != CUSTOS_OK)
		goto fail;
	pthread_once(&strings_once, strings_area_read);
	plan->arg_start = strings_area[0];
	plan->arg_end = strings_area[1];
	plan->env_start = strings_area[2];
	plan->env_end = strings_area[3];
	plan->workdir = xstrdup(p->workdir          ? p->workdir
	                        : p->scratch_target ? p->scratch_target
	                                            : "/tmp");
	return CUSTOS_OK;
fail:
	sb_plan_free(plan);
	return e;
}

void sb_plan_free(sb_plan *plan)
{
	sb_mounts_free(&plan->mounts);
	sb_landlock_free(&plan->landlock);
	sb_filter_free(&plan->filter);
	sb_strv_free(plan->argv);
	sb_strv_free(plan->envp);
	free(plan->workdir);
	memset(plan, 0, sizeof(*plan));
}

void sb_instance_close(sb_instance *in)
{
	if (in->pidfd >= 0)
		close(in->pidfd);
	if (in->sync_fd >= 0)
		close(in->sync_fd);
	if (in->notify_fd >= 0)
		close(in->notify_fd);
	if (in->userns_fd >= 0)
		close(in->userns_fd);
	if (in->netns_fd >= 0)
		close(in->netns_fd);
	in->pidfd = in->sync_fd = in->notify_fd = in->userns_fd = in->netns_fd = -1;
	in->pid = -1;
}

static void reap(pid_t pid)
{
	int st;
	pid_t r;
	do
		r = waitpid(pid, &st, 0);
	while (r == -1 && errno == EINTR);
}

static custos_err open_ns(pid_t pid, const char *ns, bool want, int *fd)
{
	char path[64];
	if (!want)
		return CUSTOS_OK;
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, ns);
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd == -1)
		return err_sys("sandbox: open %s", path);
	return CUSTOS_OK;
}

custos_err sb_instance_start(const sb_plan *plan, const sb_cgroup *cg, sb_cg_gate gate,
                             void *gate_ctx, const int stdio[3], sb_instance *in)
{
	int sp[2];
	int pidfd = -1;
	custos_err e;

	memset(in, 0, sizeof(*in));
	in->pid = -1;
	in->pidfd = in->sync_fd = in->notify_fd = in->userns_fd = in->netns_fd = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1)
		return err_sys("sandbox: socketpair");

	sigset_t block, old;
	fwd_sigset(&block);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	struct clone_args ca;
	memset(&ca, 0, sizeof(ca));
	ca.flags = plan->clone_flags | CLONE_PIDFD;
	ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
	ca.exit_signal = SIGCHLD;
	if (cg->backend == SB_CG_V2 && cg->dirfd >= 0) {
		ca.flags |= CLONE_INTO_CGROUP;
		ca.cgroup = (uint64_t)cg->dirfd;
	}
	long pid = syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid == 0) {
		close(sp[0]);
		child_main(plan, sp[1], stdio);
	}
	int saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(sp[1]);
	if (pid == -1) {
		close(sp[0]);
		errno = saved;
		if (saved == EPERM || saved == ENOSPC || saved == EUSERS)
			return err_sys("sandbox: clone3 into new namespaces (are unprivileged user "
			               "namespaces allowed here?)");
		return err_sys("sandbox: clone3");
	}
	in->pid = (pid_t)pid;
	in->pidfd = pidfd;
	in->sync_fd = sp[0];
	in->started_ns = tm_mono_ns();

	if ((e = sb_userns_map(in->pid, plan->uid, plan->out_uid, plan->gid, plan->out_gid)) !=
	    CUSTOS_OK)
		goto fail;
	/* The namespaces the socket factory joins, while the child is still dumpable (it stops
	 * being so once mapped): unprivileged, its /proc/<pid>/ns is closed to us afterwards. */
	if ((e = open_ns(in->pid, "net", plan->net_ns, &in->netns_fd)) != CUSTOS_OK ||
	    (e = open_ns(in->pid, "user", plan->net_ns && !plan->privileged, &in->userns_fd)) !=
	            CUSTOS_OK)
		goto fail;
	if (sync_send(in->sync_fd, SB_SYNC_MAPPED, 0, NULL, -1) == -1) {
		e = err_sys("sandbox: sync with the child");
		goto fail;
	}
	/* The child sets up its mounts now; a deferred v1 cgroup is being made meanwhile. */
	if (gate && (e = gate(gate_ctx)) != CUSTOS_OK)
		goto fail;
	/* Only v2 without CLONE_INTO_CGROUP moves the child from here (v1 children join by
	 * themselves: no RCU grace period). */
	if ((e = sb_cgroup_attach(cg, in->pid)) != CUSTOS_OK)
		goto fail;
	/* v1: the sandbox's tasks files, then custos' own in the same order (val: how many of
	 * each). Without the latter the init stays inside, which is only slower to clean up. */
	int join[SB_CG_V1_CTRLS], home[SB_CG_V1_CTRLS], fds[SB_SYNC_MAX_FDS], nj = 0, nh = 0;
	if ((e = sb_cgroup_join_fds(cg, join)) != CUSTOS_OK)
		goto fail;
	if (sb_cgroup_home_fds(cg, home) != CUSTOS_OK) {
		log_debug("sandbox: %s: the init stays in the sandbox's cgroups", err_msg());
		err_clear();
	}
	for (int i = 0; i < SB_CG_V1_CTRLS; i++)
		if (join[i] >= 0)
			fds[nj++] = join[i];
	for (int i = 0; i < SB_CG_V1_CTRLS; i++)
		if (join[i] >= 0 && home[i] >= 0)
			fds[nj + nh++] = home[i];
	if (nh != nj)
		nh = 0;
	/* A child that failed meanwhile has closed its end: its message is read below. */
	(void)sync_send_fds(in->sync_fd, SB_SYNC_CGROUP, nj, NULL, fds, nj + nh);
	sb_cgroup_close_fds(join);
	sb_cgroup_close_fds(home);
	int tag = 0, val = 0, lfd = -1;
	char text[SB_MSG_MAX];
	int r = sb_sync_recv(in->sync_fd, &tag, &val, text, sizeof(text), &lfd);
	if (r == 1 && tag == SB_SYNC_READY && lfd >= 0) {
		in->notify_fd = lfd;
		return CUSTOS_OK;
	}
	if (lfd >= 0)
		close(lfd);
	if (r == 1 && tag == SB_SYNC_ERROR)
		e = err_set(CUSTOS_ERR_SYS, "sandbox setup failed at %s", text);
	else
		e = err_set(CUSTOS_ERR_SYS, "sandbox setup: the child ended before it was ready");
fail:
	kill(in->pid, SIGKILL);
	reap(in->pid);
	sb_instance_close(in);
	return e;
}

custos_err sb_instance_go(sb_instance *in)
{
	if (sync_send(in->sync_fd, SB_SYNC_GO, 0, NULL, -1) == -1)
		return err_sys("sandbox: releasing the child");
	return CUSTOS_OK;
}
