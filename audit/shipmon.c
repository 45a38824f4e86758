/*
 * The SIEM shipper's supervisor (custos-shipsup): forked by the audit client where the shipper
 * was, it forks the shipper, relays the client's messages to it and, when the shipper ends
 * unasked (a crash, a kill), starts it again with bounded exponential backoff, telling the
 * client, which logs and audits it. The new shipper resumes each sink from its cursor.
 *
 * Why a process of its own: by the time a shipper dies the proxy runs many threads, and a fork
 * there would copy locks other threads hold (OpenSSL's among them). This process is a copy of
 * the proxy taken when the first shipper was forked, single-threaded, so every shipper starts
 * from that same state, under the same confinement (the proxy's; each shipper narrows its own
 * Landlock view once its sinks are set up). It touches no file and no network.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "audit_int.h"

struct mon {
	const audit_options *o;
	int ctl, note;
	pid_t pid;   /* the shipper; 0 while none runs */
	int ship_fd; /* the write end of its pipe */
	uint64_t started_ns, due_ns;
	uint32_t failures;
	uint64_t restarts;
};

static bool read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n > 0) {
		ssize_t r = read(fd, b, n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		b += r;
		n -= (size_t)r;
	}
	return true;
}

static bool write_full(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t r = write(fd, b, n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		b += r;
		n -= (size_t)r;
	}
	return true;
}

static void reap(pid_t pid, int *status)
{
	int st = 0;
	while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
		;
	if (status != NULL)
		*status = st;
}

/* Forks a shipper and waits for its ready report (*a). CUSTOS_OK: it runs (m->pid, m->ship_fd);
 * otherwise it has ended, and a->msg says why. */
static custos_err spawn(struct mon *m, struct audit_ship_ready *a)
{
	int p[2], ready[2];

	memset(a, 0, sizeof(*a));
	if (pipe2(p, O_CLOEXEC) == -1)
		return err_sys("audit shipper: pipe2");
	if (pipe2(ready, O_CLOEXEC) == -1) {
		custos_err e = err_sys("audit shipper: pipe2");
		close(p[0]);
		close(p[1]);
		return e;
	}
	pid_t pid = fork();
	if (pid == -1) {
		custos_err e = err_sys("audit shipper: fork");
		close(p[0]);
		close(p[1]);
		close(ready[0]);
		close(ready[1]);
		return e;
	}
	if (pid == 0) {
		close(p[1]);
		close(ready[0]);
		_exit(audit_shipper_main(m->o, p[0], ready[1]));
	}
	close(p[0]);
	close(ready[1]);
	bool got = read_full(ready[0], a, sizeof(*a));
	close(ready[0]);
	if (got && a->status == CUSTOS_OK) {
		m->pid = pid;
		m->ship_fd = p[1];
		m->started_ns = tm_mono_ns();
		a->pid = (int32_t)pid;
		return CUSTOS_OK;
	}
	close(p[1]);
	int st = 0;
	reap(pid, &st);
	if (!got) {
		a->status = CUSTOS_ERR_IO;
		if (WIFSIGNALED(st))
			snprintf(a->msg, sizeof(a->msg),
			         "audit shipper: killed by signal %d before it was set up",
			         WTERMSIG(st));
		else
			snprintf(a->msg, sizeof(a->msg), "audit shipper: did not start");
	}
	a->msg[sizeof(a->msg) - 1] = '\0';
	return err_set((custos_err)a->status, "%s", a->msg);
}

static void notify(struct mon *m, struct audit_ship_notice *n)
{
	n->failures = m->failures;
	n->restarts = m->restarts;
	/* The client reads at once; were it gone, the next read of ctl says so. */
	(void)write_full(m->note, n, sizeof(*n));
}

/* One more failure in a row: the next start is due after the backoff for that many. */
static uint64_t backoff(struct mon *m)
{
	uint64_t b = AUDIT_SHIP_BACKOFF_MIN_NS;
	m->failures++;
	for (uint32_t i = 1; i < m->failures && b < AUDIT_SHIP_BACKOFF_MAX_NS; i++)
		b *= 2;
	if (b > AUDIT_SHIP_BACKOFF_MAX_NS)
		b = AUDIT_SHIP_BACKOFF_MAX_NS;
	m->due_ns = tm_mono_ns() + b;
	return b;
}

/* The shipper's pipe has no reader: it ended (or is ending) unasked. */
static void ended(struct mon *m)
{
	struct audit_ship_notice n;
	int st = 0;

	reap(m->pid, &st);
	close(m->ship_fd);
	m->ship_fd = -1;
	memset(&n, 0, sizeof(n));
	n.kind = AUDIT_SHIP_EXITED;
	n.pid = (int32_t)m->pid;
	n.status = st;
	n.uptime_ns = tm_mono_ns() - m->started_ns;
	m->pid = 0;
	if (n.uptime_ns >= AUDIT_SHIP_STABLE_NS)
		m->failures = 0;
	n.backoff_ns = backoff(m);
	notify(m, &n);
}

static void restart(struct mon *m)
{
	struct audit_ship_ready a;
	struct audit_ship_notice n;

	memset(&n, 0, sizeof(n));
	if (spawn(m, &a) == CUSTOS_OK) {
		m->restarts++;
		n.kind = AUDIT_SHIP_RESTARTED;
		n.pid = (int32_t)m->pid;
	} else {
		n.kind = AUDIT_SHIP_START_FAILED;
		snprintf(n.msg, sizeof(n.msg), "%s", a.msg);
		n.backoff_ns = backoff(m);
	}
	notify(m, &n);
}

/* One message from the client, passed on to the shipper when one runs (a RELOAD or TOKEN
 * while none does is dropped: the next shipper reads those files at its start). False: stop
 * (a STOP, passed on; EOF: the client is gone, and the shipper stops now). */
static bool relay(struct mon *m)
{
	struct {
		struct audit_ship_msg h;
		uint8_t token[AUDIT_SHIP_TOKEN_MAX];
	} r;
	bool keep = true;
	size_t n = sizeof(r.h);

	if (!read_full(m->ctl, &r.h, sizeof(r.h)))
		return false;
	if (r.h.kind == AUDIT_SHIP_TOKEN) {
		if (r.h.len > AUDIT_SHIP_TOKEN_MAX ||
		    !read_full(m->ctl, r.token, (size_t)r.h.len)) {
			log_error("audit shipper supervisor: a malformed message from the proxy; "
			          "stopping the shipper");
			keep = false;
			n = 0;
		} else {
			n += (size_t)r.h.len;
		}
	} else if (r.h.kind != AUDIT_SHIP_RELOAD) {
		keep = false; /* AUDIT_SHIP_STOP */
	}
	if (m->pid > 0 && n > 0)
		(void)write_full(m->ship_fd, &r, n); /* EPIPE: it ended; poll says so next */
	OPENSSL_cleanse(r.token, sizeof(r.token));
	return keep;
}

int audit_ship_monitor_main(const audit_options *o, int ctl_fd, int ready_fd, int note_fd)
{
	struct mon m = { .o = o, .ctl = ctl_fd, .note = note_fd, .ship_fd = -1 };
	struct audit_ship_ready a;
	const int keep[3] = { ctl_fd, ready_fd, note_fd };

	proc_name_self("custos-shipsup");
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	audit_close_fds_keep(keep, 3);
	/* It holds the sinks' options (a HEC token among them): as the shipper. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 || prctl(PR_SET_DUMPABLE, 0) == -1) {
		memset(&a, 0, sizeof(a));
		a.status = err_sys("audit shipper supervisor: prctl");
		snprintf(a.msg, sizeof(a.msg), "%s", err_msg());
		(void)write_full(ready_fd, &a, sizeof(a));
		return 1;
	}
	custos_err e = spawn(&m, &a);
	(void)write_full(ready_fd, &a, sizeof(a));
	close(ready_fd);
	if (e != CUSTOS_OK)
		return 1;
	for (;;) {
		struct pollfd pf[2] = { { .fd = m.ctl, .events = POLLIN },
			                { .fd = m.ship_fd, .events = 0 } };
		int timeout = -1;
		if (m.pid == 0) {
			uint64_t now = tm_mono_ns();
			timeout = m.due_ns > now ? (int)((m.due_ns - now) / 1000000 + 1) : 0;
		}
		int r = poll(pf, m.pid > 0 ? 2 : 1, timeout);
		if (r == -1 && errno != EINTR) {
			log_error("audit shipper supervisor: poll: %s", strerror(errno));
			break;
		}
		if (r > 0 && pf[0].revents != 0 && !relay(&m))
			break;
		/* No reader left on its pipe: the shipper has ended. */
		if (m.pid > 0 && r > 0 && (pf[1].revents & (POLLERR | POLLHUP)) != 0)
			ended(&m);
		if (m.pid == 0 && tm_mono_ns() >= m.due_ns)
			restart(&m);
	}
	if (m.pid > 0) {
		close(m.ship_fd); /* after a STOP: it drains; else it stops now */
		reap(m.pid, NULL);
	}
	close(m.note);
	close(m.ctl);
	return 0;
}
