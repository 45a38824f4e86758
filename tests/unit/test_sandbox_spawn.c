/* Unit tests of sandbox_spawn and its lifecycle: exit status, events, violations, sockets
 * inside the netns (listener for the egress proxy, connections to the model, readiness),
 * restart with backoff, stop (SIGTERM, then kill), setup failures, and the unprivileged path
 * of the socket factory. They need user namespaces; without them each test skips. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <seccomp.h>

#include "custos/sandbox.h"

#define MAX_EV 64

struct rec {
	pthread_mutex_t mu;
	sandbox_event_kind kinds[MAX_EV];
	char syscalls[MAX_EV][32];
	uint64_t backoff[MAX_EV];
	pid_t pids[MAX_EV];
	uint64_t violations; /* calls denied, summed over events */
	int violation_events;
	int n;
	uint16_t listen_port; /* when set: make the egress listener in the START callback */
	int listen_fd;
	custos_err listen_err;
};

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
}

static int rec_count(struct rec *r, sandbox_event_kind k)
{
	int n = 0;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->n; i++)
		n += r->kinds[i] == k;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* The pid of the last event of kind k (-1: none). */
static pid_t rec_pid(struct rec *r, sandbox_event_kind k)
{
	pid_t pid = -1;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->n; i++)
		if (r->kinds[i] == k)
			pid = r->pids[i];
	pthread_mutex_unlock(&r->mu);
	return pid;
}

static bool rec_has_syscall(struct rec *r, const char *name)
{
	bool hit = false;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->n; i++)
		hit |= r->kinds[i] == SANDBOX_EV_VIOLATION && strcmp(r->syscalls[i], name) == 0;
	pthread_mutex_unlock(&r->mu);
	return hit;
}

static void on_event(const sandbox_event *ev, void *arg)
{
	struct rec *r = arg;
	assert_non_null(ev->profile_hash);
	assert_int_equal(strlen(ev->profile_hash), 64);
	pthread_mutex_lock(&r->mu);
	if (ev->kind == SANDBOX_EV_VIOLATION) {
		r->violations += ev->count;
		r->violation_events++;
	}
	if (r->n < MAX_EV) {
		r->kinds[r->n] = ev->kind;
		if (ev->syscall)
			snprintf(r->syscalls[r->n], sizeof(r->syscalls[0]), "%s", ev->syscall);
		r->backoff[r->n] = ev->backoff_ms;
		r->pids[r->n] = ev->pid;
		r->n++;
	}
	pthread_mutex_unlock(&r->mu);
	/* START arrives before the command runs: the listener exists before its first connect. */
	if (ev->kind == SANDBOX_EV_START && r->listen_port)
		r->listen_err =
		        sandbox_listen_inside(ev->sandbox, r->listen_port, 8, &r->listen_fd);
}

/* Options whose events go to r (cleared first). */
static void recorded_opts(sandbox_opts *o, struct rec *r)
{
	rec_init(r);
	sandbox_opts_init(o);
	o->on_event = on_event;
	o->arg = r;
}

static const char *fixture(void)
{
	static char path[1024];
	const char *d = getenv("CUSTOS_FIXTURES");
	snprintf(path, sizeof(path), "%s/escape/escape", d ? d : "tests/fixtures");
	return path;
}

static const char *model_server(void)
{
	static char path[1024];
	const char *d = getenv("CUSTOS_FIXTURES");
	snprintf(path, sizeof(path), "%s/model-server/model-server", d ? d : "tests/fixtures");
	return path;
}

static sandbox_bind fixture_binds[2];
static const char *const test_env[] = { "PATH=/usr/bin:/bin",
	                                /* fixtures may be ASan builds; LSan needs ptrace */
	                                "ASAN_OPTIONS=detect_leaks=0" };

static void profile(sandbox_profile *p)
{
	assert_int_equal(sandbox_profile_builtin("default", p), CUSTOS_OK);
	p->name = "unit";
	fixture_binds[0] = (sandbox_bind){ .src = fixture(), .dst = "/opt/escape" };
	fixture_binds[1] = (sandbox_bind){ .src = model_server(),
		                           .dst = "/opt/model-server",
		                           .optional = true };
	p->binds = fixture_binds;
	p->n_binds = 2;
	p->env_set = test_env;
	p->n_env_set = 2;
	p->limits.memory_bytes = 1u << 30;
}

static bool available = true;

/* Sandboxes work here (user namespaces allowed, fixture built)? */
static bool probe_available(void)
{
	sandbox_profile p;
	sandbox *sb = NULL;
	static const char *const argv[] = { "/bin/true", NULL };
	setenv("ASAN_OPTIONS", "detect_leaks=0",
	       1); /* for ASan-built commands; custos unaffected */
	if (access(fixture(), X_OK) != 0)
		return false;
	profile(&p);
	if (sandbox_spawn(&p, argv, NULL, &sb) != CUSTOS_OK) {
		fprintf(stderr, "sandbox unavailable: %s\n", err_msg());
		return false;
	}
	sandbox_free(sb);
	return true;
}

#define NEED()                                                                                     \
	do {                                                                                       \
		if (!available)                                                                    \
			skip();                                                                    \
	} while (0)

static sandbox *spawn(sandbox_profile *p, const char *const *argv, sandbox_opts *o)
{
	sandbox *sb = NULL;
	custos_err e = sandbox_spawn(p, argv, o, &sb);
	if (e != CUSTOS_OK)
		fail_msg("spawn: %s", err_msg());
	return sb;
}

/* no_profile_hash: every event carries "" instead of the hash; the default hashes (above). */
static void on_event_nohash(const sandbox_event *ev, void *arg)
{
	struct rec *r = arg;
	assert_non_null(ev->profile_hash);
	assert_string_equal(ev->profile_hash, "");
	pthread_mutex_lock(&r->mu);
	if (r->n < MAX_EV) {
		r->pids[r->n] = ev->pid;
		r->kinds[r->n++] = ev->kind;
	}
	pthread_mutex_unlock(&r->mu);
}

/* Mount points whose parents do not exist yet (made from the target upwards), next to ones
 * whose parents do (/etc, /dev: one mkdir each); a file bind, a directory bind, both deep. */
static void no_hash_and_deep_mount_points(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	sandbox_bind binds[4] = {
		fixture_binds[0],
		{ .src = "/usr/share", .dst = "/srv/deep/a/b/share" },
		{ .src = "/etc/hostname", .dst = "/opt/f/x/y/hostname", .optional = true },
		{ .src = "/nonexistent-custos-test", .dst = "/opt/g/missing", .optional = true },
	};
	p.binds = binds;
	p.n_binds = 4;
	rec_init(&r);
	sandbox_opts_init(&o);
	o.on_event = on_event_nohash;
	o.arg = &r;
	o.no_profile_hash = true;
	static const char *const a[] = {
		"/bin/sh", "-c",
		"test -d /srv/deep/a/b/share && test -d /opt/f/x/y && test -e /etc/passwd && "
		"test ! -e /opt/g && ! touch /srv/deep/a/b/share/x 2>/dev/null",
		NULL
	};
	sandbox *sb = spawn(&p, a, &o);
	assert_string_equal(sandbox_profile_hash_of(sb), "");
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_START), 1);
	assert_int_equal(rec_count(&r, SANDBOX_EV_EXIT), 1);

	/* A mount point that cannot be made fails the start (a file where a parent must be). */
	binds[1] = (sandbox_bind){ .src = "/usr/share", .dst = "/etc/passwd/below" };
	p.n_binds = 2;
	static const char *const t[] = { "/bin/true", NULL };
	sandbox *bad = NULL;
	assert_int_not_equal(sandbox_spawn(&p, t, &o, &bad), CUSTOS_OK);
	assert_null(bad);
	pthread_mutex_destroy(&r.mu);
}

static void exit_status(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	recorded_opts(&o, &r);
	static const char *const a3[] = { "/bin/sh", "-c", "exit 3", NULL };
	sandbox *sb = spawn(&p, a3, &o);
	assert_int_equal(sandbox_generation(sb), 1);
	assert_string_equal(sandbox_cgroup_backend(sb), geteuid() == 0 ? "v1" : "none");
	assert_int_equal(strlen(sandbox_profile_hash_of(sb)), 64);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 3);
	assert_int_equal(sandbox_pid(sb), -1);
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_START), 1);
	assert_int_equal(rec_count(&r, SANDBOX_EV_EXIT), 1);
	assert_int_equal(rec_count(&r, SANDBOX_EV_RESTART), 0);

	static const char *const ak[] = { "/bin/sh", "-c", "kill -USR1 $$", NULL };
	sb = spawn(&p, ak, NULL);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGUSR1);
	sandbox_free(sb);
	pthread_mutex_destroy(&r.mu);
}

/* leave_init (what `custos sandbox exec` uses): no monitor thread, the instance ends at the
 * command's status, the cgroups go at once; with no_start_barrier too. Events as ever; a
 * violation still reaches the callback; sandbox_free without sandbox_wait stops it (SIGTERM to
 * the command). */
static void leave_init_inline(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	rec_init(&r);
	sandbox_opts_init(&o);
	o.on_event = on_event_nohash;
	o.arg = &r;
	o.no_profile_hash = true;
	o.leave_init = true;
	o.no_start_barrier = true;
	static const char *const a[] = { "/bin/sh", "-c", "unshare -U true; exit 4", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(sandbox_generation(sb), 1);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 4);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK); /* again: same answer */
	assert_int_equal(WEXITSTATUS(st), 4);
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_START), 1);
	assert_int_equal(rec_count(&r, SANDBOX_EV_EXIT), 1);
	assert_true(rec_count(&r, SANDBOX_EV_VIOLATION) >= 1);
	if (geteuid() == 0) {
		char cmd[160];
		snprintf(cmd, sizeof(cmd),
		         "test -z \"$(find /sys/fs/cgroup -maxdepth 5 -type d -name "
		         "'custos-unit-%d-*' 2>/dev/null)\"",
		         (int)getpid());
		assert_int_equal(system(cmd), 0); /* removed already */
	}

	static const char *const s[] = { "/bin/sleep", "30", NULL };
	sb = spawn(&p, s, &o);
	pid_t spid = sandbox_pid(sb);
	assert_true(spid > 0);
	sandbox_free(sb); /* stops it: SIGTERM, the command ends */
	assert_int_equal(rec_count(&r, SANDBOX_EV_START), 2);
	assert_int_equal(rec_count(&r, SANDBOX_EV_EXIT), 2);
	assert_int_equal(rec_count(&r, SANDBOX_EV_STOP), 1);
	/* the stop names the process it ended, as its exit does */
	assert_int_equal(rec_pid(&r, SANDBOX_EV_EXIT), spid);
	assert_int_equal(rec_pid(&r, SANDBOX_EV_STOP), spid);
	pthread_mutex_destroy(&r.mu);
}

/* Mount attributes with and without mount_setattr: the same flags either way. A forked child
 * answers mount_setattr with ENOSYS (its seccomp filter, which the sandbox inherits), so the
 * sandbox falls back to remounts; then openat2, open_tree and move_mount too (a kernel before
 * 5.2: component walks, mount(2) and remounts through /proc/self/fd, tmpfs and proc moved
 * with MS_MOVE), with mount points that must be made, a file's and a directory's; the command
 * checks the flags and the mounts it sees. A bind's flags cover the mounts below its source
 * too: every mount below the read-only /sys that the command can reach (sysfs: /sys/fs/cgroup...
 * kept rw, suid and dev before), and as root a tmpfs mounted below a bound directory,
 * read-only and writable. */
static void mount_attrs_fallback(void **state)
{
	(void)state;
	NEED();
	bool root = geteuid() == 0;
	char sub[] = "/tmp/custos-sb-sub.XXXXXX", inner[48];
	assert_non_null(mkdtemp(sub));
	assert_int_equal(chmod(sub, 0755), 0);
	snprintf(inner, sizeof(inner), "%s/inner", sub);
	assert_int_equal(mkdir(inner, 0755), 0);
	static char script[2048];
	snprintf(script, sizeof(script), "%s%s",
	         "grep -q ' /usr ro,nosuid,nodev' /proc/self/mountinfo && "
	         "grep -q ' /dev/null rw,nosuid,noexec' /proc/self/mountinfo && "
	         "grep -q ' /etc/ld.so.cache ro,nosuid,nodev,noexec' /proc/self/mountinfo && "
	         "grep -q ' /proc/sys ro,nosuid,nodev' /proc/self/mountinfo && "
	         "grep -q ' /dev ro,nosuid,nodev,noexec' /proc/self/mountinfo && "
	         "grep -q ' /dev/shm rw,nosuid,nodev,noexec' /proc/self/mountinfo && "
	         "! grep -q ' /dev/null [^ ]*nodev' /proc/self/mountinfo && "
	         "grep -q ' /srv/a/b/share ro,nosuid,nodev' /proc/self/mountinfo && "
	         "grep -q ' /opt/f/x/hostname ro,nosuid,nodev,relatime' /proc/self/mountinfo && "
	         "grep -q ' /tmp rw,nosuid,nodev,relatime - tmpfs' /proc/self/mountinfo && "
	         "test -r /srv/a/b/share && test -f /opt/f/x/hostname && test -r /proc/self/status "
	         "&& test -d /sys/class && while read -r id parent dev r mp opts rest; do "
	         "case $mp in /sys|/sys/*) test -e $mp || continue; "
	         "case $opts in ro,nosuid,nodev,noexec*) ;; "
	         "*) echo \"$mp $opts\" >&2; exit 1 ;; esac ;; esac; done </proc/self/mountinfo",
	         root ? " && grep -q ' /srv/sub/inner ro,nosuid,nodev,relatime - tmpfs' "
	                "/proc/self/mountinfo && "
	                "grep -q ' /srv/subw/inner rw,nosuid,nodev,relatime - tmpfs' "
	                "/proc/self/mountinfo && ! touch /srv/sub/inner/x 2>/dev/null && "
	                "touch /srv/subw/inner/x"
	              : "");
	const char *const check[] = { "/bin/sh", "-c", script, NULL };
	static const char *const calls[] = { "mount_setattr", "openat2", "open_tree",
		                             "move_mount" };
	for (int without = 0; without < 3; without++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* As root, a tmpfs below the bound directory, in a mount namespace of this
			 * process's own (the host never sees it). */
			if (root && (unshare(CLONE_NEWNS) == -1 ||
			             mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1 ||
			             mount("tmpfs", inner, "tmpfs", 0, "mode=0777,size=1m") == -1))
				_exit(89);
			scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
			for (size_t i = 0; f && i < (without == 2 ? 4u : (unsigned)without); i++)
				if (seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS),
				                     seccomp_syscall_resolve_name(calls[i]),
				                     0) != 0)
					_exit(90);
			if (without && (f == NULL || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
			                seccomp_load(f) != 0))
				_exit(90);
			seccomp_release(f);
			sandbox_profile p;
			profile(&p);
			p.sys_ro = true;
			sandbox_bind binds[5] = {
				fixture_binds[0],
				{ .src = "/usr/share", .dst = "/srv/a/b/share" },
				{ .src = "/etc/hostname", .dst = "/opt/f/x/hostname" },
				{ .src = sub, .dst = "/srv/sub" },
				{ .src = sub, .dst = "/srv/subw", .writable = true },
			};
			p.binds = binds;
			p.n_binds = root ? 5 : 3;
			sandbox *sb = NULL;
			int st = 0;
			if (sandbox_spawn(&p, check, NULL, &sb) != CUSTOS_OK) {
				fprintf(stderr, "spawn: %s\n", err_msg());
				_exit(91);
			}
			if (sandbox_wait(sb, &st) != CUSTOS_OK)
				_exit(92);
			sandbox_free(sb);
			_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 93);
		}
		int st = 0;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		if (WEXITSTATUS(st) != 0)
			fail_msg("without %d of mount_setattr, openat2, open_tree, move_mount: "
			         "exit %d",
			         without == 2 ? 4 : without, WEXITSTATUS(st));
	}
	assert_int_equal(rmdir(inner), 0);
	assert_int_equal(rmdir(sub), 0);
}

/* In a forked process: a sandbox whose writable bind holds the source of another bind; its
 * first instance replaces that source with a symbolic link to the host's /proc and exits 3. The
 * restart must not follow it: the plan (made once, before the link existed) is reused, so it is
 * the child's own lookup that must refuse it. With `old_kernel`, openat2, open_tree, move_mount
 * and mount_setattr answer ENOSYS (their fallbacks: the walk with O_NOFOLLOW, mount(2) through
 * /proc/self/fd). Returns 0 when all went as it should, else a code naming the step. */
static int link_between_instances(bool old_kernel)
{
	char dir[] = "/tmp/custos-sb-link.XXXXXX", data[64], models[80];
	if (mkdtemp(dir) == NULL || chmod(dir, 0755) == -1)
		return 20;
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(models, sizeof(models), "%s/data/models", dir);
	if (mkdir(data, 0777) == -1 || chmod(data, 0777) == -1 || mkdir(models, 0777) == -1)
		return 21;
	if (old_kernel) {
		static const int nrs[] = { 437 /* openat2 */, 428 /* open_tree */,
			                   429 /* move_mount */, 442 /* mount_setattr */ };
		scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
		for (size_t i = 0; f && i < sizeof(nrs) / sizeof(nrs[0]); i++)
			if (seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), nrs[i], 0) != 0)
				return 22;
		if (f == NULL || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    seccomp_load(f) != 0)
			return 22;
		seccomp_release(f);
	}
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	profile(&p);
	sandbox_bind binds[3] = { fixture_binds[0],
		                  { .src = data, .dst = "/data", .writable = true },
		                  { .src = models, .dst = "/models" } };
	p.binds = binds;
	p.n_binds = 3;
	recorded_opts(&o, &r);
	o.restart.max_restarts = 2;
	o.restart.backoff_initial_ms = 10;
	o.restart.backoff_max_ms = 10;
	static const char *const a[] = {
		"/bin/sh", "-c",
		"test -L /data/models && exit 9; test -d /models || exit 8; "
		"rm -rf /data/models && ln -s /oldroot/proc /data/models && exit 3; exit 7",
		NULL
	};
	sandbox *sb = NULL;
	int st = 0, rc = 0;
	if (sandbox_spawn(&p, a, &o, &sb) != CUSTOS_OK)
		rc = 23;
	else if (sandbox_wait(sb, &st) != CUSTOS_OK)
		rc = 24;
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 3)
		rc = 30 + (WIFEXITED(st) ? WEXITSTATUS(st) : 0); /* 39: a later instance ran */
	else if (rec_count(&r, SANDBOX_EV_START) != 1 || rec_count(&r, SANDBOX_EV_GIVE_UP) != 1)
		rc = 25;
	sandbox_free(sb);
	unlink(models);
	rmdir(data);
	rmdir(dir);
	return rc;
}

static void bind_link_made_inside(void **state)
{
	(void)state;
	NEED();
	for (int old_kernel = 0; old_kernel < 2; old_kernel++) {
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(link_between_instances(old_kernel));
		int st = 0;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
}

/* ---- mount points and symbolic links: nothing followed below the new root while it is built */

/* A temporary directory with data/ (writable by anyone: the sandbox's writable bind),
 * outside/ (writable by anyone: where a followed link would lead custos) and src/ with a file
 * (a bind source). 0 or a code. */
struct link_dirs {
	char top[40], data[64], outside[64], src[64], file[72];
};

static int link_dirs_make(struct link_dirs *d)
{
	snprintf(d->top, sizeof(d->top), "/tmp/custos-sb-target.XXXXXX");
	if (mkdtemp(d->top) == NULL || chmod(d->top, 0755) == -1)
		return 40;
	snprintf(d->data, sizeof(d->data), "%s/data", d->top);
	snprintf(d->outside, sizeof(d->outside), "%s/outside", d->top);
	snprintf(d->src, sizeof(d->src), "%s/src", d->top);
	snprintf(d->file, sizeof(d->file), "%s/src/f", d->top);
	if (mkdir(d->data, 0777) == -1 || chmod(d->data, 0777) == -1 ||
	    mkdir(d->outside, 0777) == -1 || chmod(d->outside, 0777) == -1 ||
	    mkdir(d->src, 0755) == -1)
		return 41;
	int fd = open(d->file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd == -1)
		return 42;
	close(fd);
	return 0;
}

static void link_dirs_remove(const struct link_dirs *d)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->top);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", d->top);
}

/* Entries in dir, "." and ".." aside (-1 when it cannot be read). */
static int dir_entries(const char *dir)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "exit $(ls -A '%s' | wc -l)", dir);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The race the fd walk closes: custos makes a bind target's directories below a writable bind,
 * and between two of its steps something else (another sandbox sharing the directory, a
 * process of the same user) replaces a directory it made with a link to the host
 * (/oldroot/...). Made deterministic with a seccomp user notification: this process's filter
 * (the sandbox's child inherits it) holds every mkdir and mkdirat; the thread below lets each
 * go on, and before the one that makes the target's last directory ("race-leaf") it swaps
 * data/a for the link. Followed, that mkdir would make outside/race-leaf on the host. */
struct race {
	int listener;
	char data[64];
	char link_to[80];
	bool swapped;
};

/* The path argument of a held mkdir / mkdirat, read from the caller's memory (root reads it:
 * the child is not dumpable by then). */
static bool held_path(const struct seccomp_notif *req, char *out, size_t outsz)
{
	char mem[64];
	bool at = req->data.nr == seccomp_syscall_resolve_name("mkdirat");
	snprintf(mem, sizeof(mem), "/proc/%u/mem", req->pid);
	int fd = open(mem, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return false;
	ssize_t n = pread(fd, out, outsz - 1, (off_t)req->data.args[at ? 1 : 0]);
	close(fd);
	if (n <= 0)
		return false;
	out[n] = '\0';
	return true;
}

static void *race_thread(void *arg)
{
	struct race *rc = arg;
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;
	char path[256], a[96], moved[104];

	if (seccomp_notify_alloc(&req, &resp) != 0)
		return NULL;
	snprintf(a, sizeof(a), "%s/a", rc->data);
	snprintf(moved, sizeof(moved), "%s/a.moved", rc->data);
	for (;;) {
		memset(req, 0, sizeof(*req));
		if (seccomp_notify_receive(rc->listener, req) != 0)
			break;
		size_t n;
		if (!rc->swapped && held_path(req, path, sizeof(path)) && (n = strlen(path)) >= 9 &&
		    strcmp(path + n - 9, "race-leaf") == 0) {
			/* custos made data/a and holds it (or its path): swap it now. */
			if (rename(a, moved) == 0 && symlink(rc->link_to, a) == 0)
				rc->swapped = true;
		}
		memset(resp, 0, sizeof(*resp));
		resp->id = req->id;
		resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		if (seccomp_notify_respond(rc->listener, resp) != 0)
			break;
	}
	seccomp_notify_free(req, resp);
	return NULL;
}

/* In a forked process (the filter stays): 0 when the start was refused naming the link and
 * nothing was made outside; else a code naming the step. */
static int target_race(bool old_kernel)
{
	struct link_dirs d;
	static struct race rc;
	pthread_t t;
	int code = link_dirs_make(&d);
	if (code)
		return code;
	memset(&rc, 0, sizeof(rc));
	snprintf(rc.data, sizeof(rc.data), "%s", d.data);
	snprintf(rc.link_to, sizeof(rc.link_to), "/oldroot%s", d.outside);
	scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
	if (f == NULL ||
	    seccomp_rule_add(f, SCMP_ACT_NOTIFY, seccomp_syscall_resolve_name("mkdir"), 0) != 0 ||
	    seccomp_rule_add(f, SCMP_ACT_NOTIFY, seccomp_syscall_resolve_name("mkdirat"), 0) != 0)
		return 43;
	static const int nrs[] = { 437 /* openat2 */, 428 /* open_tree */, 429 /* move_mount */,
		                   442 /* mount_setattr */ };
	for (size_t i = 0; old_kernel && i < sizeof(nrs) / sizeof(nrs[0]); i++)
		if (seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), nrs[i], 0) != 0)
			return 44;
	/* This thread only: the one below answers and must not wait on itself. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || seccomp_load(f) != 0 ||
	    (rc.listener = seccomp_notify_fd(f)) < 0)
		return 45;
	seccomp_release(f);
	if (pthread_create(&t, NULL, race_thread, &rc) != 0)
		return 46;

	sandbox_profile p;
	profile(&p);
	sandbox_bind binds[3] = { fixture_binds[0],
		                  { .src = d.data, .dst = "/data", .writable = true },
		                  { .src = d.src, .dst = "/data/a/race-leaf" } };
	p.binds = binds;
	p.n_binds = 3;
	static const char *const a[] = { "/bin/true", NULL };
	sandbox *sb = NULL;
	custos_err e = sandbox_spawn(&p, a, NULL, &sb);
	if (!rc.swapped)
		code = 47; /* the race did not happen: the test proves nothing */
	else if (dir_entries(d.outside) != 0)
		code = 48; /* custos made something outside */
	else if (e == CUSTOS_OK)
		code = 49;
	else if (strstr(err_msg(), "/data/a is a symbolic link") == NULL)
		code = 50;
	if (code)
		fprintf(stderr, "target_race(%d): code %d, spawn: %s\n", old_kernel, code,
		        e == CUSTOS_OK ? "ok" : err_msg());
	sandbox_free(sb);
	link_dirs_remove(&d);
	return code;
}

static void bind_target_race(void **state)
{
	(void)state;
	NEED();
	if (geteuid() != 0)
		skip(); /* reading the held call's path needs CAP_SYS_PTRACE over the child */
	for (int old_kernel = 0; old_kernel < 2; old_kernel++) {
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(target_race(old_kernel));
		int st = 0;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
}

/* Landlock grants a writable bind's target read-write. Where that bind is optional and its
 * source missing, nothing is mounted there, and a link the sandbox left at that path (in a
 * writable bind around it) carried the grant to where it points: /proc, whose files Landlock
 * otherwise keeps the sandbox from writing. Such a start is refused. */
static void landlock_rule_link(void **state)
{
	struct link_dirs d;
	sandbox_profile p;
	int st;
	(void)state;
	NEED();
	if (sandbox_landlock_abi() < 1)
		skip();
	assert_int_equal(link_dirs_make(&d), 0);
	profile(&p);
	sandbox_bind binds[3] = { fixture_binds[0],
		                  { .src = d.data, .dst = "/data", .writable = true },
		                  { .src = "/nonexistent-custos-test",
		                    .dst = "/data/x",
		                    .writable = true,
		                    .optional = true } };
	p.binds = binds;
	p.n_binds = 2;
	/* Landlock keeps /proc read-only here; the sandbox leaves its link. */
	static const char *const plant[] = { "/bin/sh", "-c",
		                             "! echo x 2>/dev/null >/proc/self/comm && "
		                             "ln -s /proc /data/x",
		                             NULL };
	sandbox *sb = spawn(&p, plant, NULL);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	sandbox_free(sb);
	/* With the optional bind: refused, the link named. */
	p.n_binds = 3;
	static const char *const write_proc[] = { "/bin/sh", "-c", "echo x >/proc/self/comm",
		                                  NULL };
	sb = NULL;
	custos_err e = sandbox_spawn(&p, write_proc, NULL, &sb);
	if (e == CUSTOS_OK) {
		assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
		sandbox_free(sb);
		fail_msg("started with the link; the command exited %d (0: it wrote /proc)",
		         WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
	assert_non_null(strstr(err_msg(), "landlock: rule path /data/x"));
	link_dirs_remove(&d);
}

static void violation_audited(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	recorded_opts(&o, &r);
	static const char *const a[] = { "/opt/escape", "--ioctl", "/dev/null", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_int_equal(WEXITSTATUS(st), 0);
	sandbox_free(sb);
	assert_true(rec_has_syscall(&r, "ioctl"));
	pthread_mutex_destroy(&r.mu);
}

/* A flood of denied calls: every one answered EPERM and counted, events bounded. */
static void violation_flood(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	recorded_opts(&o, &r);
	static const char *const a[] = { "/opt/escape", "--violations", "2000", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_int_equal(WEXITSTATUS(st), 0);
	sandbox_free(sb);
	assert_int_equal(r.violations, 2000);
	/* at most a burst and a summary per second: far fewer events than calls */
	assert_true(r.violation_events >= SANDBOX_VIOLATION_BURST);
	assert_true(r.violation_events < 1000);
	assert_true(rec_has_syscall(&r, "acct"));
	pthread_mutex_destroy(&r.mu);
}

/* A flood of denied calls costs the supervisor (custos, outside the sandbox's cgroup) CPU for
 * each: it answers at most SANDBOX_NOTIFY_RATE a second, so two seconds of flood cost it a
 * bounded amount (it was about the sandbox's whole CPU quota, and more). */
static void violation_flood_throttled(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	struct rusage before, after;
	int st;
	(void)state;
	NEED();
	profile(&p);
	recorded_opts(&o, &r);
	static const char *const a[] = { "/opt/escape", "--flood", "2", NULL };
	assert_int_equal(getrusage(RUSAGE_SELF, &before), 0);
	uint64_t t0 = tm_mono_ns();
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	double wall = (double)(tm_mono_ns() - t0) / 1e9;
	assert_int_equal(getrusage(RUSAGE_SELF, &after), 0);
	assert_int_equal(WEXITSTATUS(st), 0);
	sandbox_free(sb);
	double cpu = (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec) +
	             (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1e6 +
	             (double)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
	             (double)(after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6;
	fprintf(stderr, "flood: %llu calls answered in %.2f s, supervisor CPU %.3f s\n",
	        (unsigned long long)r.violations, wall, cpu);
	assert_true(r.violations > 0);
	assert_true(r.violations <= (uint64_t)(SANDBOX_NOTIFY_RATE * (wall + 0.5)));
	/* The start and stop cost some too (ASan build); unthrottled this was 0.5 s and more. */
	assert_true(cpu < 0.25);
	pthread_mutex_destroy(&r.mu);
}

static void spawn_failures(void **state)
{
	sandbox_profile p;
	sandbox *sb = (sandbox *)1;
	static const char *const argv[] = { "/bin/true", NULL };
	static const char *const empty[] = { NULL };
	(void)state;
	NEED();
	profile(&p);
	assert_int_equal(sandbox_spawn(&p, empty, NULL, &sb), CUSTOS_ERR_INVAL);
	assert_null(sb);
	sandbox_bind missing = { .src = "/nonexistent/custos" };
	p.binds = &missing;
	p.n_binds = 1;
	assert_int_equal(sandbox_spawn(&p, argv, NULL, &sb), CUSTOS_ERR_SYS);
	assert_non_null(strstr(err_msg(), "/nonexistent/custos"));
	missing.optional = true;
	sb = spawn(&p, argv, NULL);
	sandbox_free(sb);
	p.name = "no good";
	assert_int_equal(sandbox_spawn(&p, argv, NULL, &sb), CUSTOS_ERR_INVAL);
	sandbox_free(NULL);
}

/* The egress listener: custos listens inside (made in the START callback, before the command
 * runs), the sandboxed client connects to it at once. */
static void listen_inside(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st, c;
	(void)state;
	NEED();
	profile(&p);
	rec_init(&r);
	r.listen_port = 18081;
	r.listen_fd = -1;
	sandbox_opts_init(&o);
	o.on_event = on_event;
	o.arg = &r;
	static const char *const a[] = { "/opt/escape", "--client", "18081", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(r.listen_err, CUSTOS_OK);
	int lfd = r.listen_fd;
	struct pollfd pf = { .fd = lfd, .events = POLLIN };
	assert_int_equal(poll(&pf, 1, 10000), 1);
	c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(c >= 0);
	char rb[16] = { 0 };
	pf.fd = c;
	assert_int_equal(poll(&pf, 1, 5000), 1);
	assert_int_equal(read(c, rb, sizeof(rb) - 1), 6);
	assert_string_equal(rb, "hello\n");
	assert_int_equal(write(c, "ok\n", 3), 3);
	close(c);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_int_equal(WEXITSTATUS(st), 0);
	/* Between instances there is no namespace to listen in. */
	assert_int_equal(sandbox_listen_inside(sb, 18082, 8, &c), CUSTOS_ERR_AGAIN);
	assert_int_equal(sandbox_connect_inside(sb, 18082, &c), CUSTOS_ERR_AGAIN);
	close(lfd);
	sandbox_free(sb);
	pthread_mutex_destroy(&r.mu);
}

/* Batches of unconnected sockets for the privilege-separated proxy: all made in the
 * sandbox's netns, not ours; bad counts refused; none between instances. */
static void sockets_inside_batch(void **state)
{
	sandbox_profile p;
	int fds[SANDBOX_SOCKETS_BATCH + 1];
	size_t got = 99;
	unsigned gen = 0;
	struct stat self_ns, sb_ns;
	char path[64];
	(void)state;
	NEED();
	profile(&p);
	static const char *const a[] = { "/bin/sleep", "30", NULL };
	sandbox *sb = spawn(&p, a, NULL);
	assert_int_equal(sandbox_sockets_inside(sb, fds, 0, &got, &gen), CUSTOS_ERR_INVAL);
	assert_int_equal(sandbox_sockets_inside(sb, fds, SANDBOX_SOCKETS_BATCH + 1, &got, &gen),
	                 CUSTOS_ERR_INVAL);
	assert_int_equal(sandbox_sockets_inside(sb, fds, SANDBOX_SOCKETS_BATCH, &got, &gen),
	                 CUSTOS_OK);
	assert_int_equal(got, SANDBOX_SOCKETS_BATCH);
	assert_int_equal(gen, 1);
	assert_int_equal(stat("/proc/self/ns/net", &self_ns), 0);
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)sandbox_pid(sb));
	assert_int_equal(stat(path, &sb_ns), 0);
	assert_true(self_ns.st_ino != sb_ns.st_ino);
	for (size_t i = 0; i < got; i++) {
		int dom = 0;
		socklen_t l = sizeof(dom);
		assert_int_equal(getsockopt(fds[i], SOL_SOCKET, SO_DOMAIN, &dom, &l), 0);
		assert_int_equal(dom, AF_INET);
		assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
		assert_true(fcntl(fds[i], F_GETFL) & O_NONBLOCK);
		int ns = ioctl(fds[i], SIOCGSKNS);
		assert_true(ns >= 0);
		struct stat st;
		assert_int_equal(fstat(ns, &st), 0);
		assert_int_equal(st.st_ino, sb_ns.st_ino); /* the sandbox's netns */
		close(ns);
		close(fds[i]);
	}
	assert_int_equal(sandbox_stop(sb), CUSTOS_OK);
	assert_int_equal(sandbox_sockets_inside(sb, fds, 4, &got, &gen), CUSTOS_ERR_AGAIN);
	assert_int_equal(got, 0);
	sandbox_free(sb);
}

/* Landlock's TCP rules (ABI >= 4): with restrict_tcp, connect only to the listed ports. */
static void landlock_tcp(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	if (sandbox_landlock_abi() < 4)
		skip();
	static const char *const a[] = { "/opt/escape", "--client", "18091", NULL };
	static const uint16_t allowed[] = { 18091 };
	for (int allow = 0; allow < 2; allow++) {
		profile(&p);
		p.restrict_tcp = true;
		p.tcp_connect = allow ? allowed : NULL;
		p.n_tcp_connect = allow ? 1 : 0;
		rec_init(&r);
		r.listen_port = 18091;
		r.listen_fd = -1;
		sandbox_opts_init(&o);
		o.on_event = on_event;
		o.arg = &r;
		sandbox *sb = spawn(&p, a, &o);
		assert_int_equal(r.listen_err, CUSTOS_OK);
		if (allow) {
			struct pollfd pf = { .fd = r.listen_fd, .events = POLLIN };
			assert_int_equal(poll(&pf, 1, 10000), 1);
			int c = accept4(r.listen_fd, NULL, NULL, SOCK_CLOEXEC);
			assert_true(c >= 0);
			close(c);
		}
		assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
		/* --client exits 1 when connect fails (EACCES from Landlock) */
		assert_int_equal(WEXITSTATUS(st), allow ? 0 : 1);
		close(r.listen_fd);
		sandbox_free(sb);
		pthread_mutex_destroy(&r.mu);
	}
}

/* The model side: a server inside, custos connects and waits for readiness. */
static void connect_inside_ready(void **state)
{
	sandbox_profile p;
	int fd;
	(void)state;
	NEED();
	profile(&p);
	static const char *const a[] = { "/opt/escape", "--listen", "8080", NULL };
	sandbox *sb = spawn(&p, a, NULL);
	assert_int_equal(sandbox_wait_ready(sb, 8080, "/health", 60000), CUSTOS_OK);
	assert_int_equal(sandbox_wait_ready(sb, 8080, NULL, 1000), CUSTOS_OK);
	assert_int_equal(sandbox_wait_ready(sb, 8080, "bad path", 1000), CUSTOS_ERR_INVAL);
	/* Nothing listens on 8081 inside (and a host listener would not count). */
	assert_int_equal(sandbox_wait_ready(sb, 8081, NULL, 300), CUSTOS_ERR_TIMEOUT);
	assert_int_equal(sandbox_connect_inside(sb, 8080, &fd), CUSTOS_OK);
	struct pollfd pf = { .fd = fd, .events = POLLOUT };
	assert_int_equal(poll(&pf, 1, 5000), 1);
	const char req[] = "GET / HTTP/1.0\r\n\r\n";
	assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
	char rb[64] = { 0 };
	pf.events = POLLIN;
	assert_int_equal(poll(&pf, 1, 5000), 1);
	assert_true(read(fd, rb, sizeof(rb) - 1) > 12);
	assert_memory_equal(rb, "HTTP/1.0 200", 12);
	close(fd);
	assert_int_equal(sandbox_stop(sb), CUSTOS_OK);
	assert_int_equal(sandbox_stop(sb), CUSTOS_OK); /* idempotent */
	sandbox_free(sb);

	/* A command that exits before it listens: CLOSED, not a timeout. */
	static const char *const t[] = { "/bin/true", NULL };
	sb = spawn(&p, t, NULL);
	custos_err e = sandbox_wait_ready(sb, 8080, NULL, 60000);
	assert_true(e == CUSTOS_ERR_CLOSED);
	sandbox_free(sb);
}

static void restart_backoff(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	recorded_opts(&o, &r);
	o.restart.max_restarts = 2;
	o.restart.backoff_initial_ms = 10;
	o.restart.backoff_max_ms = 15;
	static const char *const a[] = { "/bin/sh", "-c", "exit 4", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_int_equal(WEXITSTATUS(st), 4);
	assert_int_equal(sandbox_generation(sb), 3);
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_START), 3);
	assert_int_equal(rec_count(&r, SANDBOX_EV_EXIT), 3);
	assert_int_equal(rec_count(&r, SANDBOX_EV_RESTART), 2);
	assert_int_equal(rec_count(&r, SANDBOX_EV_GIVE_UP), 1);
	uint64_t b[2];
	int k = 0;
	for (int i = 0; i < r.n && k < 2; i++)
		if (r.kinds[i] == SANDBOX_EV_RESTART)
			b[k++] = r.backoff[i];
	assert_int_equal(b[0], 10);
	assert_int_equal(b[1], 15); /* doubled, capped at backoff_max_ms */

	/* Success is not restarted unless asked. */
	rec_init(&r);
	static const char *const ok[] = { "/bin/true", NULL };
	sb = spawn(&p, ok, &o);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_START), 1);
	pthread_mutex_destroy(&r.mu);
}

static void stop_term_then_kill(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int st;
	(void)state;
	NEED();
	profile(&p);
	recorded_opts(&o, &r);
	o.restart.max_restarts = UINT32_MAX; /* stop must also end supervision */
	static const char *const a[] = { "/bin/sleep", "100", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_true(sandbox_pid(sb) > 0);
	assert_int_equal(sandbox_stop(sb), CUSTOS_OK);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGTERM); /* forwarded by the sandbox's init */
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_STOP), 1);
	assert_int_equal(rec_count(&r, SANDBOX_EV_RESTART), 0);

	/* A command that ignores SIGTERM is killed after the grace period. It says "ready" on
	 * its stdout (our pipe) once the trap is in place. */
	o.stop_grace_ms = 200;
	o.on_event = NULL;
	int pp[2];
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	o.stdout_fd = pp[1];
	static const char *const ig[] = { "/bin/sh", "-c",
		                          "trap '' TERM; echo ready; while :; do sleep 1; done",
		                          NULL };
	sb = spawn(&p, ig, &o);
	close(pp[1]);
	char rb[8] = { 0 };
	struct pollfd pf = { .fd = pp[0], .events = POLLIN };
	assert_int_equal(poll(&pf, 1, 20000), 1);
	assert_true(read(pp[0], rb, sizeof(rb) - 1) > 0);
	assert_memory_equal(rb, "ready", 5);
	close(pp[0]);
	assert_int_equal(sandbox_stop(sb), CUSTOS_OK);
	assert_int_equal(sandbox_wait(sb, &st), CUSTOS_OK);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGKILL);
	sandbox_free(sb);
	pthread_mutex_destroy(&r.mu);
}

/* The project's model-server fixture inside a sandbox, reached only through a socket made in
 * its namespace: health, then a chat completion; and it made no denied calls. */
static void model_server_inside(void **state)
{
	sandbox_profile p;
	sandbox_opts o;
	struct rec r;
	int fd;
	(void)state;
	NEED();
	if (access(model_server(), X_OK) != 0)
		skip();
	profile(&p);
	recorded_opts(&o, &r);
	static const char *const a[] = { "/opt/model-server", "--listen", "127.0.0.1:8000", NULL };
	sandbox *sb = spawn(&p, a, &o);
	assert_int_equal(sandbox_wait_ready(sb, 8000, "/health", 60000), CUSTOS_OK);
	assert_int_equal(sandbox_connect_inside(sb, 8000, &fd), CUSTOS_OK);
	struct pollfd pf = { .fd = fd, .events = POLLOUT };
	assert_int_equal(poll(&pf, 1, 5000), 1);
	static const char body[] = "{\"model\":\"fixture-model\",\"messages\":[{\"role\":\"user\","
	                           "\"content\":\"hello sandbox\"}]}";
	char req[512];
	int n = snprintf(req, sizeof(req),
	                 "POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\nContent-Type: "
	                 "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
	                 sizeof(body) - 1, body);
	assert_int_equal(write(fd, req, (size_t)n), n);
	char resp[4096];
	size_t got = 0;
	pf.events = POLLIN;
	while (got < sizeof(resp) - 1 && poll(&pf, 1, 5000) == 1) {
		ssize_t k = read(fd, resp + got, sizeof(resp) - 1 - got);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	resp[got] = '\0';
	close(fd);
	assert_non_null(strstr(resp, "HTTP/1.1 200"));
	assert_non_null(strstr(resp, "hello"));
	assert_int_equal(sandbox_stop(sb), CUSTOS_OK);
	sandbox_free(sb);
	assert_int_equal(rec_count(&r, SANDBOX_EV_VIOLATION), 0);
	pthread_mutex_destroy(&r.mu);
}

/* custos killed outright (no sandbox_stop): the sandbox must not outlive it. The test
 * process is a child subreaper, so the orphaned sandbox init is reparented to it and its end
 * can be observed with waitpid. */
static void dies_with_custos(void **state)
{
	int pfd[2];
	(void)state;
	NEED();
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t custos = fork();
	assert_int_not_equal(custos, -1);
	if (custos == 0) {
		sandbox_profile p;
		sandbox *sb = NULL;
		static const char *const a[] = { "/bin/sleep", "1000", NULL };
		profile(&p);
		if (sandbox_spawn(&p, a, NULL, &sb) != CUSTOS_OK)
			_exit(1);
		pid_t init = sandbox_pid(sb);
		if (write(pfd[1], &init, sizeof(init)) != (ssize_t)sizeof(init))
			_exit(2);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	pid_t init = -1;
	assert_int_equal(read(pfd[0], &init, sizeof(init)), (ssize_t)sizeof(init));
	close(pfd[0]);
	assert_true(init > 0);
	kill(custos, SIGKILL);
	int st;
	assert_int_equal(waitpid(custos, &st, 0), custos);
	/* The init is ours now (subreaper); it must end by SIGKILL (its parent-death signal). */
	pid_t w = 0;
	for (int i = 0; i < 100 && w == 0; i++) {
		w = waitpid(init, &st, WNOHANG);
		if (w == 0) {
			struct timespec ts = { 0, 100000000 };
			nanosleep(&ts, NULL);
		}
	}
	if (w == 0) {
		kill(init, SIGKILL); /* it survived custos: clean up, then fail */
		waitpid(init, &st, 0);
		fail_msg("the sandbox outlived custos");
	}
	assert_int_equal(w, init);
	/* The killed custos could not remove its cgroups (a later custos would, after a minute). */
	char cmd[256];
	snprintf(
	        cmd, sizeof(cmd),
	        "find /sys/fs/cgroup -maxdepth 5 -type d -name 'custos-unit-%d-*' -exec rmdir {} + "
	        "2>/dev/null",
	        (int)custos);
	(void)!system(cmd);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGKILL);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0), 0);
}

/* Unprivileged: the socket factory must join the user namespace before the netns. */
static void unprivileged_sockets(void **state)
{
	(void)state;
	NEED();
	if (geteuid() != 0)
		skip();
	fflush(NULL);
	pid_t pid = fork();
	assert_int_not_equal(pid, -1);
	if (pid == 0) {
		sandbox_profile p;
		int fd;
		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			_exit(10);
		/* A uid change clears "dumpable", which would keep us from writing our child's
		 * uid_map; an unprivileged custos started normally is dumpable. */
		if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == -1)
			_exit(10);
		profile(&p);
		static const char *const a[] = { "/opt/escape", "--listen", "8080", NULL };
		sandbox *sb = NULL;
		if (sandbox_spawn(&p, a, NULL, &sb) != CUSTOS_OK) {
			fprintf(stderr, "unprivileged spawn: %s\n", err_msg());
			_exit(11);
		}
		if (sandbox_wait_ready(sb, 8080, "/", 60000) != CUSTOS_OK)
			_exit(12);
		if (sandbox_listen_inside(sb, 3128, 4, &fd) != CUSTOS_OK)
			_exit(13);
		close(fd);
		if (sandbox_stop(sb) != CUSTOS_OK)
			_exit(14);
		sandbox_free(sb);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	available = probe_available();
	if (!available)
		fprintf(stderr,
		        "sandbox tests skip: namespaces or the escape fixture unavailable\n");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(exit_status),
		cmocka_unit_test(leave_init_inline),
		cmocka_unit_test(mount_attrs_fallback),
		cmocka_unit_test(bind_link_made_inside),
		cmocka_unit_test(bind_target_race),
		cmocka_unit_test(landlock_rule_link),
		cmocka_unit_test(violation_audited),
		cmocka_unit_test(spawn_failures),
		cmocka_unit_test(violation_flood),
		cmocka_unit_test(violation_flood_throttled),
		cmocka_unit_test(listen_inside),
		cmocka_unit_test(landlock_tcp),
		cmocka_unit_test(sockets_inside_batch),
		cmocka_unit_test(connect_inside_ready),
		cmocka_unit_test(restart_backoff),
		cmocka_unit_test(stop_term_then_kill),
		cmocka_unit_test(unprivileged_sockets),
		cmocka_unit_test(dies_with_custos),
		cmocka_unit_test(model_server_inside),
		cmocka_unit_test(no_hash_and_deep_mount_points),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
