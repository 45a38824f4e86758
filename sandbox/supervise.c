/*
 * Lifecycle and supervision: one monitor thread per sandbox starts instances, answers seccomp
 * notifications (EPERM, or a kill when the profile says so) and reports each with the syscall
 * name, reads the cgroup counters (OOM kills, limit hits), reaps, restarts with exponential
 * backoff, and stops (SIGTERM, grace, then cgroup kill and SIGKILL to the pid namespace init).
 * Also the sockets inside the sandbox's netns and the readiness wait.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sb_int.h"

int sb_sync_recv(int sock, int *tag, int *val, char *text, size_t textsz, int *passfd);

void sandbox_opts_init(sandbox_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->restart.max_restarts = 0;
	o->restart.backoff_initial_ms = 100;
	o->restart.backoff_max_ms = 30000;
	o->restart.reset_after_ms = 60000;
	o->stop_grace_ms = 5000;
	o->stdin_fd = o->stdout_fd = o->stderr_fd = -1;
}

static void emit(sandbox *sb, sandbox_event *ev)
{
	ev->sandbox = sb;
	ev->name = sb->name;
	ev->profile_hash = sb->hash;
	ev->wall_ns = tm_wall_ns();
	if (ev->generation == 0)
		ev->generation = sb->generation;
	if (sb->opts.on_event)
		sb->opts.on_event(ev, sb->opts.arg);
}

static void emit_counters(sandbox *sb, pid_t pid)
{
	sb_cgroup_counters c;

	if (sb->cg.backend == SB_CG_NONE || sb_cgroup_read(&sb->cg, &c) != CUSTOS_OK)
		return;
	sb_cgroup_counters *l = &sb->cg.last;
	sandbox_event ev;
	if (c.oom_kill > l->oom_kill) {
		memset(&ev, 0, sizeof(ev));
		ev.kind = SANDBOX_EV_OOM;
		ev.pid = pid;
		ev.limit = "memory";
		ev.count = c.oom_kill - l->oom_kill;
		emit(sb, &ev);
	}
	struct {
		uint64_t now, before;
		const char *name;
	} lim[] = { { c.mem_max, l->mem_max, "memory" },
		    { c.pids_max, l->pids_max, "pids" },
		    { c.cpu_throttled, l->cpu_throttled, "cpu" } };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(lim); i++) {
		if (lim[i].now <= lim[i].before)
			continue;
		memset(&ev, 0, sizeof(ev));
		ev.kind = SANDBOX_EV_LIMIT;
		ev.pid = pid;
		ev.limit = lim[i].name;
		ev.count = lim[i].now - lim[i].before;
		emit(sb, &ev);
	}
	*l = c;
}

/* A hostile command can make denied calls as fast as the supervisor answers them. Each is
 * answered, but at most SANDBOX_VIOLATION_BURST events per second are emitted one by one; the
 * rest of the second is summed into one event (syscall "*", count = calls left out), so the
 * audit trail stays complete in number without being flooded. */
static void flush_suppressed(sandbox *sb, pid_t pid)
{
	if (sb->viol_suppressed == 0)
		return;
	sandbox_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.kind = SANDBOX_EV_VIOLATION;
	ev.pid = pid;
	ev.syscall = "*";
	ev.syscall_nr = -1;
	ev.count = sb->viol_suppressed;
	ev.detail = "denied calls beyond the per-second event budget, summed";
	sb->viol_suppressed = 0;
	emit(sb, &ev);
}

static bool violation_budget(sandbox *sb, pid_t pid)
{
	uint64_t now = tm_mono_ns();
	if (now - sb->viol_window_ns >= 1000000000ull) {
		flush_suppressed(sb, pid);
		sb->viol_window_ns = now;
		sb->viol_in_window = 0;
	}
	if (sb->viol_in_window < SANDBOX_VIOLATION_BURST) {
		sb->viol_in_window++;
		return true;
	}
	sb->viol_suppressed++;
	return false;
}

/* The supervisor answers at most SANDBOX_NOTIFY_RATE denied calls a second per sandbox, in
 * ten slices: a command that makes them in a loop made custos spend 1.5 times the sandbox's
 * own CPU quota answering them, outside its cgroup. Beyond a slice's share the listener is
 * not polled until the next slice; the callers wait in the kernel meanwhile (a sandbox can
 * only slow itself). Returns 0 when a call may be answered now, else the milliseconds until
 * the next slice. */
#define NOTIFY_SLICE_NS  100000000ull
#define NOTIFY_PER_SLICE (SANDBOX_NOTIFY_RATE / 10)

static int notify_wait_ms(sandbox *sb)
{
	uint64_t now = tm_mono_ns();
	if (now - sb->notify_slice_ns >= NOTIFY_SLICE_NS) {
		sb->notify_slice_ns = now;
		sb->notify_in_slice = 0;
	}
	if (sb->notify_in_slice < NOTIFY_PER_SLICE)
		return 0;
	return (int)((sb->notify_slice_ns + NOTIFY_SLICE_NS - now) / 1000000) + 1;
}

static void handle_notify(sandbox *sb, int nfd, pid_t init_pid)
{
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;
	char name[64];

	sb->notify_in_slice++;
	if (seccomp_notify_alloc(&req, &resp) != 0)
		return;
	if (seccomp_notify_receive(nfd, req) != 0)
		goto out; /* the caller died meanwhile */
	resp->id = req->id;
	resp->error = -EPERM;
	resp->val = 0;
	resp->flags = 0;
	/* Kill before answering when the profile says so: answered first, the caller ran on with
	 * EPERM and could finish (exit 0) before the kill landed. The init, SIGKILLed while the
	 * caller still waits for the answer, can report no status of its own. */
	if (sb->kill_on_violation) {
		sb_cgroup_kill(&sb->cg);
		kill(init_pid, SIGKILL);
	}
	/* Answer before reporting, so a slow audit sink never stalls the sandbox. ENOENT: the
	 * caller is gone. */
	(void)seccomp_notify_respond(nfd, resp);
	sandbox_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.kind = SANDBOX_EV_VIOLATION;
	ev.pid = (pid_t)req->pid;
	ev.syscall_nr = req->data.nr;
	ev.syscall = sandbox_syscall_name(req->data.arch, req->data.nr, name, sizeof(name));
	ev.count = 1;
	ev.killed = sb->kill_on_violation;
	if (violation_budget(sb, init_pid) || ev.killed)
		emit(sb, &ev);
out:
	seccomp_notify_free(req, resp);
}

static void handle_sync(sandbox *sb, sb_instance *in, bool *eof)
{
	int tag, val;
	char text[SB_MSG_MAX];
	int r = sb_sync_recv(in->sync_fd, &tag, &val, text, sizeof(text), NULL);

	if (r != 1) {
		*eof = true;
		return;
	}
	if (tag == SB_SYNC_STATUS) {
		in->status_known = true;
		in->cmd_status = val;
	} else if (tag == SB_SYNC_ERROR) {
		log_error("sandbox %s: %s", sb->name, text);
		snprintf(sb->exit_detail, sizeof(sb->exit_detail), "%s", text);
	}
}

/* Runs until the instance's init exits; returns its command's wait status. */
static int run_instance(sandbox *sb)
{
	sb_instance *in = &sb->cur;
	bool sync_eof = false, notify_hup = false, terminating = false, early = false;
	uint64_t kill_at = 0, counters_ns = 0;
	int status = 0;

	sb->exit_detail[0] = '\0';
	for (;;) {
		struct pollfd pf[4];
		int n = 0, i_notify = -1, i_sync = -1;
		int throttled = notify_hup ? 0 : notify_wait_ms(sb);
		pf[n++] = (struct pollfd){ .fd = in->pidfd, .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = sb->stop_efd, .events = POLLIN };
		if (!notify_hup && !throttled) {
			i_notify = n;
			pf[n++] = (struct pollfd){ .fd = in->notify_fd, .events = POLLIN };
		}
		if (!sync_eof) {
			i_sync = n;
			pf[n++] = (struct pollfd){ .fd = in->sync_fd, .events = POLLIN };
		}
		int timeout = sb->cg.backend != SB_CG_NONE || sb->viol_suppressed ? 1000 : -1;
		if (terminating) {
			uint64_t now = tm_mono_ns();
			uint64_t left = kill_at > now ? (kill_at - now) / 1000000 + 1 : 0;
			timeout = (int)(left < 1000 ? left : 1000);
		}
		if (throttled && (timeout < 0 || throttled < timeout))
			timeout = throttled;
		int r = poll(pf, (nfds_t)n, timeout);
		if (r == -1 && errno != EINTR) {
			log_error("sandbox %s: poll: %s", sb->name, strerror(errno));
			break;
		}
		if (terminating && tm_mono_ns() >= kill_at) {
			sb_cgroup_kill(&sb->cg);
			kill(in->pid, SIGKILL);
			kill_at = UINT64_MAX;
		}
		if (r <= 0) {
			uint64_t now = tm_mono_ns();
			if (now - sb->viol_window_ns >= 1000000000ull)
				flush_suppressed(sb, in->pid);
			if (now - counters_ns >= 1000000000ull || !throttled) {
				counters_ns = now;
				emit_counters(sb, in->pid);
			}
			continue;
		}
		if (i_notify >= 0 && pf[i_notify].revents) {
			if (pf[i_notify].revents & POLLIN)
				handle_notify(sb, in->notify_fd, in->pid);
			else
				notify_hup = true;
		}
		if (i_sync >= 0 && pf[i_sync].revents) {
			handle_sync(sb, in, &sync_eof);
			if (in->status_known && sb->leave_init) {
				early = true; /* the command is gone; its init is going */
				break;
			}
		}
		if (pf[1].revents & POLLIN) {
			uint64_t v;
			(void)!read(sb->stop_efd, &v, sizeof(v));
			if (!terminating) {
				terminating = true;
				kill(in->pid, SIGTERM);
				kill_at = tm_mono_ns() + sb->opts.stop_grace_ms * 1000000ull;
			}
		}
		if (pf[0].revents & POLLIN)
			break;
	}
	/* The init wrote the command's status before it exited: drain what is queued. */
	while (!sync_eof) {
		struct pollfd p = { .fd = in->sync_fd, .events = POLLIN };
		if (poll(&p, 1, 0) != 1)
			break;
		handle_sync(sb, in, &sync_eof);
	}
	int st = 0;
	pid_t w;
	do
		w = waitpid(in->pid, &st, early ? WNOHANG : 0);
	while (w == -1 && errno == EINTR);
	status = in->status_known ? in->cmd_status : st;
	flush_suppressed(sb, in->pid);
	emit_counters(sb, in->pid);
	return status;
}

/* sandbox_spawn's thread hashes the profile while this one starts the first instance, so the
 * hash (an OpenSSL initialisation, ~1 ms) is off the start's critical path; every event
 * carries it, the first (START) is sent once the instance is ready. */
static bool hash_wait(sandbox *sb)
{
	pthread_mutex_lock(&sb->mu);
	while (sb->hash_state == 0)
		pthread_cond_wait(&sb->cv, &sb->mu);
	bool ok = sb->hash_state == 1;
	pthread_mutex_unlock(&sb->mu);
	return ok;
}

/* The gate of the first start, between the clone and the cgroup step: a deferred v1 cgroup is
 * made here while the child sets up its mounts (sb_cgroup_realize); later starts find it made.
 * Runs on the thread that starts instances, the only one that touches sb->cg until the end. */
static custos_err cg_gate(void *ctx)
{
	sandbox *sb = ctx;
	if (sb->cg.v1_pending)
		return sb_cgroup_realize(&sb->cg_limits, &sb->cg);
	return CUSTOS_OK;
}

static custos_err start_instance(sandbox *sb)
{
	sb_instance in;

	GUARD(sb_instance_start(&sb->plan, &sb->cg, cg_gate, sb, sb->stdio, &in));
	if (!hash_wait(sb)) {
		/* Never released: a sandbox whose events cannot name its profile does not run. */
		kill(in.pid, SIGKILL);
		while (waitpid(in.pid, NULL, 0) == -1 && errno == EINTR)
			;
		sb_instance_close(&in);
		return err_set(CUSTOS_ERR_CRYPTO, "%s", sb->hash_err);
	}
	pthread_mutex_lock(&sb->mu);
	sb->cur = in;
	sb->running = true;
	sb->generation++;
	pthread_mutex_unlock(&sb->mu);

	sandbox_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.kind = SANDBOX_EV_START;
	ev.pid = in.pid;
	ev.detail = sb->detail;
	emit(sb, &ev); /* the callback may create sockets inside before the command runs */
	custos_err e = sb->plan.go_barrier ? sb_instance_go(&sb->cur) : CUSTOS_OK;
	if (e != CUSTOS_OK) {
		kill(in.pid, SIGKILL);
		/* run_instance reaps it */
	}
	return CUSTOS_OK;
}

static void end_instance(sandbox *sb, int status)
{
	sandbox_event ev;
	pid_t pid = sb->cur.pid;

	pthread_mutex_lock(&sb->mu);
	sb->running = false;
	sb->last_status = status;
	sb->last_pid = pid;
	sb_sockfactory_stop(&sb->factory);
	sb_instance_close(&sb->cur);
	pthread_mutex_unlock(&sb->mu);

	memset(&ev, 0, sizeof(ev));
	ev.kind = SANDBOX_EV_EXIT;
	ev.pid = pid;
	if (WIFSIGNALED(status)) {
		ev.exit_code = -1;
		ev.signal = WTERMSIG(status);
	} else {
		ev.exit_code = WEXITSTATUS(status);
	}
	ev.detail = sb->exit_detail[0] ? sb->exit_detail : NULL;
	emit(sb, &ev);
}

static bool stop_requested(sandbox *sb)
{
	pthread_mutex_lock(&sb->mu);
	bool s = sb->stop_req;
	pthread_mutex_unlock(&sb->mu);
	return s;
}

/* Sleeps ms unless a stop arrives; returns true when stopped. */
static bool backoff_sleep(sandbox *sb, uint64_t ms)
{
	uint64_t end = tm_mono_ns() + ms * 1000000ull;
	for (;;) {
		if (stop_requested(sb))
			return true;
		uint64_t now = tm_mono_ns();
		if (now >= end)
			return false;
		struct pollfd p = { .fd = sb->stop_efd, .events = POLLIN };
		uint64_t left = (end - now) / 1000000 + 1;
		if (poll(&p, 1, (int)(left > 1000 ? 1000 : left)) == 1) {
			uint64_t v;
			(void)!read(sb->stop_efd, &v, sizeof(v));
		}
	}
}

/* The first start, on the monitor thread or (inline) on sandbox_spawn's caller. */
static custos_err monitor_first(sandbox *sb)
{
	custos_err e = start_instance(sb);
	pthread_mutex_lock(&sb->mu);
	sb->first_done = true;
	sb->first_err = e;
	if (e != CUSTOS_OK)
		snprintf(sb->first_msg, sizeof(sb->first_msg), "%s", err_msg());
	pthread_cond_broadcast(&sb->cv);
	pthread_mutex_unlock(&sb->mu);
	return e;
}

/* Everything after the first start: supervision, restarts, the end. */
static void monitor_rest(sandbox *sb, custos_err e)
{
	const sandbox_restart *rp = &sb->opts.restart;
	uint64_t backoff = rp->backoff_initial_ms ? rp->backoff_initial_ms : 100;

	if (e != CUSTOS_OK)
		goto done;

	for (;;) {
		uint64_t started = sb->cur.started_ns;
		int status = run_instance(sb);
		end_instance(sb, status);
		if (stop_requested(sb))
			break;
		bool success = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (rp->max_restarts == 0 || (success && !rp->restart_on_success))
			break;
		if (tm_mono_ns() - started >= rp->reset_after_ms * 1000000ull)
			backoff = rp->backoff_initial_ms ? rp->backoff_initial_ms : 100;
		bool started_ok = false;
		while (!started_ok) {
			sandbox_event ev;
			if (rp->max_restarts != UINT32_MAX && sb->restarts >= rp->max_restarts) {
				memset(&ev, 0, sizeof(ev));
				ev.kind = SANDBOX_EV_GIVE_UP;
				ev.count = sb->restarts;
				emit(sb, &ev);
				goto done;
			}
			sb->restarts++;
			memset(&ev, 0, sizeof(ev));
			ev.kind = SANDBOX_EV_RESTART;
			ev.backoff_ms = backoff;
			ev.count = sb->restarts;
			emit(sb, &ev);
			if (backoff_sleep(sb, backoff))
				goto done;
			uint64_t maxb = rp->backoff_max_ms ? rp->backoff_max_ms : 30000;
			backoff = backoff * 2 > maxb ? maxb : backoff * 2;
			if (start_instance(sb) == CUSTOS_OK)
				started_ok = true;
			else
				log_error("sandbox %s: restart failed: %s", sb->name, err_msg());
		}
	}
done:
	pthread_mutex_lock(&sb->mu);
	bool stopped = sb->stop_req;
	pthread_mutex_unlock(&sb->mu);
	if (stopped && e == CUSTOS_OK) {
		sandbox_event ev;
		memset(&ev, 0, sizeof(ev));
		ev.kind = SANDBOX_EV_STOP;
		ev.pid = sb->last_pid; /* so that a stop is tied to the process it ended */
		emit(sb, &ev);
	}
	pthread_mutex_lock(&sb->mu);
	sb->done = true;
	pthread_cond_broadcast(&sb->cv);
	pthread_mutex_unlock(&sb->mu);
}

static void *monitor_main(void *arg)
{
	sandbox *sb = arg;
	proc_name_self("custos-sb-mon");
	monitor_rest(sb, monitor_first(sb));
	return NULL;
}

static unsigned long spawn_counter;

custos_err sandbox_spawn(const sandbox_profile *p, const char *const *argv,
                         const sandbox_opts *opts, sandbox **out)
{
	custos_err e;
	char id[SANDBOX_NAME_MAX + 64];

	*out = NULL;
	ENSURE(argv && argv[0] && argv[0][0], CUSTOS_ERR_INVAL, "sandbox: empty command");
	GUARD(sandbox_profile_validate(p));
	sandbox *sb = xcalloc(1, sizeof(*sb));
	pthread_mutex_init(&sb->mu, NULL);
	pthread_cond_init(&sb->cv, NULL);
	sb->stop_efd = -1;
	sb->factory.fd = -1;
	sb->factory.pid = -1;
	sb->cg.dirfd = -1;
	sb->cur.pid = -1;
	sb->cur.pidfd = sb->cur.sync_fd = sb->cur.notify_fd = -1;
	sb->cur.userns_fd = sb->cur.netns_fd = -1;
	sb->name = xstrdup(p->name);
	sb->kill_on_violation = p->seccomp_kill_on_violation;
	if (opts)
		sb->opts = *opts;
	else
		sandbox_opts_init(&sb->opts);
	sb->stdio[0] = sb->opts.stdin_fd;
	sb->stdio[1] = sb->opts.stdout_fd;
	sb->stdio[2] = sb->opts.stderr_fd;
	snprintf(id, sizeof(id), "custos-%s-%d-%lu", p->name, (int)getpid(),
	         __atomic_add_fetch(&spawn_counter, 1, __ATOMIC_RELAXED));
	/* v1 directories are only planned here: cg_gate makes them while the child sets up. */
	if ((e = sb_cgroup_create(p, id, true, &sb->cg, &sb->cg_note)) != CUSTOS_OK)
		goto fail;
	sb->cg_limits = p->limits;
	sb->leave_init = sb->opts.leave_init && sb->opts.restart.max_restarts == 0 &&
	                 sb->cg.backend != SB_CG_V2;
	if ((e = sb_plan_build(p, argv, sb->cg.backend != SB_CG_NONE, &sb->plan)) != CUSTOS_OK)
		goto fail;
	/* Without a hash to wait for, a caller that needs nothing before the command runs lets
	 * the child go on at once (a sandbox whose events cannot name its profile never runs). */
	sb->plan.go_barrier = !(sb->opts.no_start_barrier && sb->opts.no_profile_hash);
	snprintf(sb->detail, sizeof(sb->detail), "cgroup %s; landlock abi %d; seccomp %s%s%s",
	         sb_cgroup_backend_name(sb->cg.backend),
	         sb->plan.landlock.enabled ? sb->plan.landlock.abi : 0,
	         p->seccomp == SANDBOX_SECCOMP_GPU      ? "gpu"
	         : p->seccomp == SANDBOX_SECCOMP_CUSTOM ? "custom"
	                                                : "default",
	         sb->cg_note ? "; " : "", sb->cg_note ? sb->cg_note : "");
	sb->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sb->stop_efd == -1) {
		e = err_sys("sandbox: eventfd");
		goto fail;
	}
	/* Inline (leave_init: one instance, the caller waits for it next): no monitor thread;
	 * the first start runs here and supervision in sandbox_wait. Two hand-offs between
	 * threads fewer, and no thread to create. */
	sb->inline_mon = sb->leave_init;
	if (!sb->inline_mon) {
		if (pthread_create(&sb->thread, NULL, monitor_main, sb) != 0) {
			e = err_set(CUSTOS_ERR_SYS, "sandbox: cannot start the monitor thread");
			goto fail;
		}
		sb->thread_started = true;
	}
	/* Meanwhile the monitor thread clones and the child sets up (see hash_wait). */
	char hash[65] = "";
	custos_err he = sb->opts.no_profile_hash ? CUSTOS_OK : sandbox_profile_hash(p, hash);
	pthread_mutex_lock(&sb->mu);
	if (he == CUSTOS_OK) {
		memcpy(sb->hash, hash, sizeof(hash));
		sb->hash_state = 1;
	} else {
		snprintf(sb->hash_err, sizeof(sb->hash_err), "%s", err_msg());
		sb->hash_state = -1;
	}
	pthread_cond_broadcast(&sb->cv);
	pthread_mutex_unlock(&sb->mu);
	if (sb->inline_mon)
		(void)monitor_first(sb);
	pthread_mutex_lock(&sb->mu);
	while (!sb->first_done)
		pthread_cond_wait(&sb->cv, &sb->mu);
	e = sb->first_err;
	pthread_mutex_unlock(&sb->mu);
	if (e != CUSTOS_OK) {
		char msg[SB_MSG_MAX];
		snprintf(msg, sizeof(msg), "%s", sb->first_msg);
		sandbox_free(sb);
		return err_set(e, "%s", msg);
	}
	*out = sb;
	return CUSTOS_OK;
fail:
	sandbox_free(sb);
	return e;
}

custos_err sandbox_wait(sandbox *sb, int *wstatus)
{
	ENSURE(sb != NULL, CUSTOS_ERR_INVAL, "sandbox: NULL");
	if (sb->inline_mon && !sb->inline_ran) {
		sb->inline_ran = true;
		monitor_rest(sb, sb->first_err); /* supervision, here: no monitor thread */
	}
	pthread_mutex_lock(&sb->mu);
	while (!sb->done)
		pthread_cond_wait(&sb->cv, &sb->mu);
	if (wstatus)
		*wstatus = sb->last_status;
	pthread_mutex_unlock(&sb->mu);
	return CUSTOS_OK;
}

custos_err sandbox_stop(sandbox *sb)
{
	ENSURE(sb != NULL, CUSTOS_ERR_INVAL, "sandbox: NULL");
	if (!sb->thread_started && !(sb->inline_mon && sb->first_done))
		return CUSTOS_OK;
	pthread_mutex_lock(&sb->mu);
	sb->stop_req = true;
	pthread_mutex_unlock(&sb->mu);
	uint64_t one = 1;
	(void)!write(sb->stop_efd, &one, sizeof(one));
	return sandbox_wait(sb, NULL);
}

void sandbox_free(sandbox *sb)
{
	if (sb == NULL)
		return;
	if (sb->thread_started || (sb->inline_mon && sb->first_done && !sb->first_err)) {
		if (sandbox_stop(sb) != CUSTOS_OK)
			err_clear();
		if (sb->thread_started)
			pthread_join(sb->thread, NULL);
	}
	sb_sockfactory_stop(&sb->factory);
	sb_instance_close(&sb->cur);
	sb_cgroup_destroy(&sb->cg);
	sb_plan_free(&sb->plan);
	if (sb->stop_efd >= 0)
		close(sb->stop_efd);
	pthread_mutex_destroy(&sb->mu);
	pthread_cond_destroy(&sb->cv);
	free(sb->name);
	free(sb);
}

pid_t sandbox_pid(const sandbox *sb)
{
	sandbox *m = (sandbox *)sb;
	pthread_mutex_lock(&m->mu);
	pid_t p = m->running ? m->cur.pid : -1;
	pthread_mutex_unlock(&m->mu);
	return p;
}

unsigned sandbox_generation(const sandbox *sb)
{
	sandbox *m = (sandbox *)sb;
	pthread_mutex_lock(&m->mu);
	unsigned g = m->generation;
	pthread_mutex_unlock(&m->mu);
	return g;
}

const char *sandbox_profile_hash_of(const sandbox *sb)
{
	return sb->hash;
}

const char *sandbox_cgroup_backend(const sandbox *sb)
{
	return sb_cgroup_backend_name(sb->cg.backend);
}

/* ------------------------------------------------------------------ sockets inside the netns */

static custos_err inside_sockets(sandbox *sb, int type, int *fds, size_t want, size_t *got,
                                 unsigned *gen)
{
	custos_err e;

	pthread_mutex_lock(&sb->mu);
	if (!sb->running) {
		pthread_mutex_unlock(&sb->mu);
		return err_set(CUSTOS_ERR_AGAIN, "sandbox %s: no instance running", sb->name);
	}
	if (!sb->plan.net_ns) {
		pthread_mutex_unlock(&sb->mu);
		return err_set(CUSTOS_ERR_UNSUPPORTED, "sandbox %s: no network namespace",
		               sb->name);
	}
	e = CUSTOS_OK;
	if (sb->factory.fd < 0)
		e = sb_sockfactory_start(&sb->factory, sb->cur.userns_fd, sb->cur.netns_fd);
	if (e == CUSTOS_OK)
		e = sb_sockfactory_sockets(&sb->factory, AF_INET, type, fds, want, got);
	if (gen)
		*gen = sb->generation;
	pthread_mutex_unlock(&sb->mu);
	return e;
}

static custos_err inside_socket(sandbox *sb, int type, int *fd, unsigned *gen)
{
	size_t got;
	return inside_sockets(sb, type, fd, 1, &got, gen);
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

custos_err sandbox_listen_inside(sandbox *sb, uint16_t port, int backlog, int *fd)
{
	int s, one = 1;

	ENSURE(sb && fd && port, CUSTOS_ERR_INVAL, "sandbox: listen_inside: bad arguments");
	GUARD(inside_socket(sb, SOCK_STREAM | SOCK_NONBLOCK, &s, NULL));
	struct sockaddr_in a = loopback(port);
	if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(s, (struct sockaddr *)&a, sizeof(a)) == -1 ||
	    listen(s, backlog > 0 ? backlog : 128) == -1) {
		custos_err e = err_sys("sandbox %s: listen on 127.0.0.1:%u inside", sb->name,
		                       (unsigned)port);
		close(s);
		return e;
	}
	*fd = s;
	return CUSTOS_OK;
}

custos_err sandbox_connect_inside(sandbox *sb, uint16_t port, int *fd)
{
	int s;

	ENSURE(sb && fd && port, CUSTOS_ERR_INVAL, "sandbox: connect_inside: bad arguments");
	GUARD(inside_socket(sb, SOCK_STREAM | SOCK_NONBLOCK, &s, NULL));
	struct sockaddr_in a = loopback(port);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) == -1 && errno != EINPROGRESS) {
		custos_err e = err_sys("sandbox %s: connect to 127.0.0.1:%u inside", sb->name,
		                       (unsigned)port);
		close(s);
		return e;
	}
	*fd = s;
	return CUSTOS_OK;
}

/* One probe: 1 ready, 0 not yet. */
static int probe(sandbox *sb, uint16_t port, const char *http_path, int wait_ms)
{
	int fd = -1;
	if (sandbox_connect_inside(sb, port, &fd) != CUSTOS_OK)
		return 0;
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int ok = 0, soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (poll(&p, 1, wait_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1 ||
	    soerr != 0)
		goto out;
	if (http_path == NULL) {
		ok = 1;
		goto out;
	}
	char req[SANDBOX_PATH_MAX + 96];
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
	                 http_path);
	if (n <= 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		goto out;
	char resp[64];
	size_t got = 0;
	while (got < 12) {
		p.events = POLLIN;
		if (poll(&p, 1, wait_ms) != 1)
			goto out;
		ssize_t r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
		if (r <= 0)
			goto out;
		got += (size_t)r;
	}
	resp[got] = '\0';
	/* "HTTP/1.x 2xx" */
	ok = strncmp(resp, "HTTP/1.", 7) == 0 && resp[9] == '2';
out:
	close(fd);
	return ok;
}

custos_err sandbox_sockets_inside(sandbox *sb, int *fds, size_t want, size_t *got,
                                  unsigned *generation)
{
	ENSURE(sb && fds && got && want >= 1 && want <= SANDBOX_SOCKETS_BATCH, CUSTOS_ERR_INVAL,
	       "sandbox: sockets_inside: bad arguments");
	*got = 0;
	return inside_sockets(sb, SOCK_STREAM | SOCK_NONBLOCK, fds, want, got, generation);
}

custos_err sandbox_wait_ready(sandbox *sb, uint16_t port, const char *http_path,
                              uint64_t timeout_ms)
{
	ENSURE(sb && port, CUSTOS_ERR_INVAL, "sandbox: wait_ready: bad arguments");
	ENSURE(http_path == NULL || (http_path[0] == '/' && strlen(http_path) < SANDBOX_PATH_MAX &&
	                             !strpbrk(http_path, "\r\n ")),
	       CUSTOS_ERR_INVAL, "sandbox: wait_ready: bad HTTP path");
	uint64_t end = tm_mono_ns() + timeout_ms * 1000000ull;
	unsigned gen = sandbox_generation(sb);
	for (;;) {
		pthread_mutex_lock(&sb->mu);
		bool alive = sb->running && sb->generation == gen;
		pthread_mutex_unlock(&sb->mu);
		if (!alive)
			return err_set(CUSTOS_ERR_CLOSED, "sandbox %s: exited before it was ready",
			               sb->name);
		if (probe(sb, port, http_path, 500))
			return CUSTOS_OK;
		if (tm_mono_ns() >= end)
			return err_set(CUSTOS_ERR_TIMEOUT,
			               "sandbox %s: not ready on port %u after %llu ms", sb->name,
			               (unsigned)port, (unsigned long long)timeout_ms);
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
}
