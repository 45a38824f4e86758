/*
 * The VM-sandboxed models of `custos up` (sandbox.type: vm): boots each one through libvirt
 * (custos/vm.h), refuses to route to it until its QEMU process is seen under a seccomp filter,
 * opens the multiplexed channel, and keeps that up across crashes: libvirt's lifecycle events
 * are audited and drive the restart with backoff; a supervisor thread re-checks seccomp and
 * reconnects the channel (and re-creates the egress listener) once the new QEMU runs. The
 * ingress proxy reaches the model through cli_vm_connect (a stream over the channel); the
 * egress proxy accepts the guest's proxy connections from the listener cli_vm_egress_fd gives.
 * The channel is virtio-serial (QEMU's unix socket) or vsock (custos connects to the guest
 * CID it reserved for the domain); `channel: auto` picks vsock where /dev/vhost-vsock exists.
 * Under privilege separation all of this runs in the supervisor, which hands the streams and
 * listeners to the proxy (cmd_up.c). A model's VM is domain custos-<id>; a second VM of the
 * same model, started while the first still runs (a reload's replacement, or a model added back
 * while its removed VM still drains), is custos-<id>-2 (then -3, ...) with its own channel
 * socket and console log (virtlogd holds one writer per file), so that the two never collide.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "custos/admin.h"
#include "custos/audit.h"
#include "custos/config.h"
#include "custos/egress.h"
#include "custos/vm.h"

#define NS_PER_MS 1000000ull
#define NS_PER_S  1000000000ull

struct up_vm {
	struct up_vm *next_live; /* live_vms (live_mu) */
	char *model;
	char name[VM_NAME_MAX + 1]; /* domain name: custos-<model>, custos-<model>-<n> */
	char *chan_path;
	char *console_path; /* the profile's console_log, or this VM's variant of it; NULL: none */
	uint16_t port;
	char *health; /* sandbox.health.path; NULL: /v1/models (every readiness probe) */
	uint64_t timeout_ns;
	struct audit_writer *audit;
	vm_host *h;
	vm *v;
	pthread_mutex_t mu;                   /* ch, routable, egress_fn/arg */
	vm_channel *ch;                       /* NULL while the VM is down */
	bool routable;                        /* QEMU seen under seccomp and the channel up */
	void (*egress_fn)(void *arg, int fd); /* gets each new egress listener */
	void *egress_arg;
	pthread_t sup;
	bool sup_started;
	/* While cli_vm_start waits (NULL after): true when its caller gives the start up. */
	bool (*give_up)(const void *arg);
	const void *give_up_arg;
	atomic_bool quit;
	vm_chan_kind chan;
	unsigned cid;  /* the reserved guest CID (vsock), else 0 */
	char hash[65]; /* vm_profile_hash: SHA-256 of the domain XML */
	/* Under mu, for the admin API. on_vm_event takes mu under the host's lock: never call
	 * into vm_* (the host's lock) with mu held. */
	pid_t qemu_pid;      /* QEMU last checked; 0: none */
	int seccomp;         /* 0 pending, 1 filter seen (routed), -1 refused */
	uint64_t started_ns; /* wall time of the current domain's start */
	int last_event;      /* vm_event_kind of the last lifecycle event; -1 none */
};

/* The VMs of this custos from the choice of their names until their domains are gone: what a
 * new VM's domain name, channel socket and console log must differ from. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct up_vm *live_vms;

#define VM_INSTANCES_MAX CFG_MAX_VM_INSTANCES /* VMs of one model at once (PSX_MAX_MODELS) */
/* config check bounds a VM model's id (CFG_MAX_VM_MODEL_ID) so that every name live_claim can
 * pick fits: the prefix, the id and "-<n>" of at most 3 bytes. */
_Static_assert(VM_INSTANCES_MAX < 100, "\"-<n>\" has at most 3 bytes");
_Static_assert(sizeof(CFG_VM_DOMAIN_PREFIX) - 1 + CFG_MAX_VM_MODEL_ID + 3 <= VM_NAME_MAX,
               "a VM model's id of CFG_MAX_VM_MODEL_ID bytes fits every domain name");
_Static_assert(CFG_MAX_VM_SOCKET + 3 < sizeof(((struct sockaddr_un *)0)->sun_path),
               "a channel_socket of CFG_MAX_VM_SOCKET bytes fits every -<n> socket path");

static bool live_taken_locked(const char *name, const char *chan_path, const char *console)
{
	for (const struct up_vm *v = live_vms; v; v = v->next_live)
		if (strcmp(v->name, name) == 0 || strcmp(v->chan_path, chan_path) == 0 ||
		    (console && v->console_path && strcmp(v->console_path, console) == 0))
			return true;
	return false;
}

/* path for the n-th VM of a model: path itself for n 1, else "-<n>" before the file name's
 * extension (/var/log/vm-llm.log -> /var/log/vm-llm-2.log; mux.sock -> mux-2.sock), or at
 * its end when it has none. False when out is too small. */
static bool path_nth(const char *path, unsigned n, char *out, size_t size)
{
	if (n == 1)
		return (size_t)snprintf(out, size, "%s", path) < size;
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	const char *dot = strrchr(base, '.');
	size_t stem = dot && dot != base ? (size_t)(dot - path) : strlen(path);
	int r = snprintf(out, size, "%.*s-%u%s", (int)stem, path, n, path + stem);
	return r > 0 && (size_t)r < size;
}

/* Picks u's domain name, channel socket and console log: custos-<id>, the configured socket
 * (or /run/custos/vm-<id>.sock) and console_log for the first VM of the model; while one of
 * those is taken by a VM of this custos still running, custos-<id>-<n> and the paths with
 * "-<n>" before their extension (path_nth), for the lowest n from 2 that is free. Links u to
 * live_vms. */
static custos_err live_claim(struct up_vm *u, const char *id, const cfg_profile *pr)
{
	char name[VM_NAME_MAX + 1], path[108] /* sun_path */, console[4096], chan_socket[108];
	const char *console_log = pr ? pr->vm.console_log : NULL;
	custos_err e = CUSTOS_OK;

	GUARD(vm_config_chan_socket(id, pr, chan_socket, sizeof(chan_socket)));
	pthread_mutex_lock(&live_mu);
	for (unsigned n = 1;; n++) {
		if (n > VM_INSTANCES_MAX) {
			e = err_set(CUSTOS_ERR_LIMIT, "model %s: %d of its VMs run already", id,
			            VM_INSTANCES_MAX);
			break;
		}
		char sfx[16] = "";
		if (n > 1)
			snprintf(sfx, sizeof(sfx), "-%u", n);
		int a = snprintf(name, sizeof(name), CFG_VM_DOMAIN_PREFIX "%s%s", id, sfx);
		if (a < 0 || (size_t)a >= sizeof(name)) {
			e = err_set(CUSTOS_ERR_LIMIT,
			            "model %s: id too long for a domain name (%s)", id, name);
			break;
		}
		if (!path_nth(chan_socket, n, path, sizeof(path))) {
			e = err_set(CUSTOS_ERR_LIMIT, "model %s: channel socket path too long (%s)",
			            id, chan_socket);
			break;
		}
		if (console_log && !path_nth(console_log, n, console, sizeof(console))) {
			e = err_set(CUSTOS_ERR_LIMIT, "model %s: console_log path too long", id);
			break;
		}
		if (live_taken_locked(name, path, console_log ? console : NULL))
			continue;
		memcpy(u->name, name, (size_t)a + 1);
		u->chan_path = xstrdup(path);
		u->console_path = console_log ? xstrdup(console) : NULL;
		u->next_live = live_vms;
		live_vms = u;
		break;
	}
	pthread_mutex_unlock(&live_mu);
	return e;
}

static void live_release(struct up_vm *u)
{
	pthread_mutex_lock(&live_mu);
	for (struct up_vm **pp = &live_vms; *pp; pp = &(*pp)->next_live) {
		if (*pp == u) {
			*pp = u->next_live;
			break;
		}
	}
	pthread_mutex_unlock(&live_mu);
}

const char *cli_vm_model(const struct up_vm *u)
{
	return u->model;
}

static void on_vm_event(void *arg, const char *domain, vm_event_kind kind, const char *detail)
{
	struct up_vm *u = arg;
	audit_event ev;

	log_info("vm %s (model %s): %s%s%s", domain, u->model, vm_event_name(kind),
	         detail && *detail ? ": " : "", detail ? detail : "");
	pthread_mutex_lock(&u->mu);
	u->last_event = (int)kind;
	if (kind == VM_EV_STARTED)
		u->started_ns = tm_wall_ns();
	if (kind == VM_EV_CRASHED || kind == VM_EV_STOPPED || kind == VM_EV_GAVE_UP) {
		u->seccomp = 0; /* the next QEMU is checked again */
		u->qemu_pid = 0;
	}
	pthread_mutex_unlock(&u->mu);
	audit_event_begin(&ev, "sandbox.vm");
	audit_event_cstr(&ev, "model", u->model);
	audit_event_cstr(&ev, "vm", domain);
	audit_event_cstr(&ev, "action", vm_event_name(kind));
	audit_event_cstr(&ev, "detail", detail);
	audit_event_cstr(&ev, "profile_sha256", u->hash);
	audit_event_cstr(&ev, "channel", vm_chan_kind_name(u->chan));
	if (audit_event_end(&ev) != CUSTOS_OK)
		log_error("vm %s: lifecycle event not audited: %s", domain, err_msg());
	else if (u->audit == NULL) /* privilege separation: the proxy's writer records it */
		cli_privsep_audit(&ev);
	else if (audit_submit(u->audit, &ev) != CUSTOS_OK)
		log_error("vm %s: lifecycle event not audited: %s", domain, err_msg());
}

/* One request to the model server over the channel; CUSTOS_OK when an HTTP status line comes
 * back within 2 s. */
static custos_err probe(struct up_vm *u, vm_channel *ch, const char *path)
{
	char req[CFG_MAX_SANDBOX_PATH + 64], resp[16]; /* config check: health.path < 1024 */
	int fd = -1;

	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: model\r\n\r\n",
	                 path ? path : "/v1/models");
	ENSURE(n > 0 && (size_t)n < sizeof(req), CUSTOS_ERR_LIMIT, "health path too long");
	GUARD(vm_channel_open_stream(ch, u->port, &fd));
	custos_err e = file_write_all(fd, req, (size_t)n);
	size_t got = 0;
	uint64_t deadline = tm_mono_ns() + 2 * NS_PER_S;
	while (e == CUSTOS_OK && got < 8) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		uint64_t now = tm_mono_ns();
		if (now >= deadline) {
			e = err_set(CUSTOS_ERR_TIMEOUT, "model server did not answer");
			break;
		}
		int pr = poll(&pf, 1, (int)((deadline - now) / NS_PER_MS) + 1);
		if (pr == -1 && errno == EINTR)
			continue;
		if (pr <= 0)
			continue;
		ssize_t r = read(fd, resp + got, sizeof(resp) - got);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			e = err_set(CUSTOS_ERR_CLOSED, "model server closed the stream");
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	if (e == CUSTOS_OK && memcmp(resp, "HTTP/1.", 7) != 0)
		e = err_set(CUSTOS_ERR_PARSE, "not an HTTP answer from the model server");
	return e;
}

/* Waits for the new QEMU's seccomp filter, connects the channel, waits for the model server,
 * gives the egress proxy a new listener; then routes again. */
static custos_err bring_up(struct up_vm *u)
{
	vm_channel *ch = NULL;
	uint64_t deadline = tm_mono_ns() + u->timeout_ns;

	custos_err se = cli_vm_check_seccomp(NULL, u->name, u->timeout_ns);
	pid_t qpid = 0;
	if (vm_qemu_pid(NULL, u->name, &qpid) != CUSTOS_OK)
		qpid = 0;
	pthread_mutex_lock(&u->mu);
	u->seccomp = se == CUSTOS_OK ? 1 : -1;
	u->qemu_pid = qpid;
	pthread_mutex_unlock(&u->mu);
	GUARD(err_wrap(se, "vm %s: refusing to route to it", u->name));
	vm_channel_opts co = { .connect_timeout_ns = u->timeout_ns };
	if (u->chan == VM_CHAN_VSOCK) {
		co.vsock_cid = u->cid;
		co.vsock_port = VM_VSOCK_PORT_DEFAULT;
	} else {
		co.path = u->chan_path;
	}
	GUARD(vm_channel_open(&co, &ch));
	custos_err e;
	while ((e = probe(u, ch, u->health)) != CUSTOS_OK) {
		if (u->give_up && u->give_up(u->give_up_arg)) {
			vm_channel_close(ch);
			return err_set(CUSTOS_ERR_CLOSED, "vm %s: start given up", u->name);
		}
		if (tm_mono_ns() >= deadline || atomic_load(&u->quit) || !vm_channel_alive(ch)) {
			vm_channel_close(ch);
			return err_wrap(e, "vm %s: model server not ready", u->name);
		}
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&u->mu);
	if (u->egress_fn) {
		int lfd = -1;
		if (vm_channel_listen_egress(ch, 128, &lfd) != CUSTOS_OK)
			log_error("vm %s: restarted without an egress listener: %s", u->name,
			          err_msg());
		else
			u->egress_fn(u->egress_arg, lfd);
	}
	u->ch = ch;
	u->routable = true;
	pthread_mutex_unlock(&u->mu);
	return CUSTOS_OK;
}

static void *supervise(void *arg)
{
	struct up_vm *u = arg;
	proc_name_self("custos-vm-sup");
	while (!atomic_load(&u->quit)) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&u->mu);
		bool down = u->ch == NULL || !vm_channel_alive(u->ch);
		vm_channel *old = down ? u->ch : NULL;
		if (down) {
			u->routable = false;
			u->ch = NULL;
		}
		pthread_mutex_unlock(&u->mu);
		if (!down)
			continue;
		if (old)
			log_warn("vm %s: channel down; nothing is routed until the VM is back",
			         u->name);
		vm_channel_close(old);
		if (bring_up(u) == CUSTOS_OK)
			log_info("vm %s: channel up again, seccomp checked", u->name);
		else if (!atomic_load(&u->quit))
			log_warn("%s", err_msg());
	}
	return NULL;
}

custos_err cli_vm_connect(void *arg, int *fd)
{
	struct up_vm *u = arg;
	custos_err e;

	pthread_mutex_lock(&u->mu);
	if (!u->routable || u->ch == NULL)
		e = err_set(CUSTOS_ERR_CLOSED, "vm %s: not routable (down or not checked)",
		            u->name);
	else
		e = vm_channel_open_stream(u->ch, u->port, fd);
	pthread_mutex_unlock(&u->mu);
	return e;
}

custos_err cli_vm_egress_fd(struct up_vm *u, int *lfd)
{
	pthread_mutex_lock(&u->mu);
	custos_err e = u->ch ? vm_channel_listen_egress(u->ch, 128, lfd)
	                     : err_set(CUSTOS_ERR_CLOSED, "vm %s: channel down", u->name);
	pthread_mutex_unlock(&u->mu);
	return e;
}

void cli_vm_egress_hook(struct up_vm *u, void (*fn)(void *arg, int fd), void *arg)
{
	pthread_mutex_lock(&u->mu);
	u->egress_fn = fn;
	u->egress_arg = arg;
	pthread_mutex_unlock(&u->mu);
}

bool cli_vm_routable(struct up_vm *u)
{
	pthread_mutex_lock(&u->mu);
	bool r = u->routable;
	pthread_mutex_unlock(&u->mu);
	return r;
}

/* The channel (channel: auto resolved here, logged), then the profile by the one mapping from
 * custos.yaml (vm_profile_from_config). */
static custos_err map_profile(const custos_config *cfg, const cfg_model *m, struct up_vm *u,
                              vm_profile *p, int *pin)
{
	const cfg_profile *pr =
	        m->sandbox.profile ? &cfg->profiles[m->sandbox.profile_index] : NULL;
	ENSURE(pr && pr->vm.enabled, CUSTOS_ERR_INVAL, "model %s: its profile has no vm: block",
	       m->id);
	if (pr->vm.channel == CFG_VM_AUTO) {
		u->chan = vm_channel_auto(NULL);
		log_info("up: model %s: channel auto -> %s (%s)", m->id, vm_chan_kind_name(u->chan),
		         u->chan == VM_CHAN_VSOCK ? VM_VHOST_VSOCK_DEV " exists"
		                                  : "no " VM_VHOST_VSOCK_DEV);
	} else {
		u->chan = pr->vm.channel == CFG_VM_VSOCK ? VM_CHAN_VSOCK : VM_CHAN_VIRTIO_SERIAL;
	}
	vm_config_vm inst = { .name = u->name,
		              .chan = u->chan,
		              .chan_path = u->chan_path,
		              .console_log = u->console_path };
	return vm_profile_from_config(m, pr, &inst, pin, p);
}

/* The guest CID for a vsock channel (the configured one, or the lowest free), then the
 * checks and the profile hash of the final profile. */
static custos_err finish_profile(const cfg_profile *pr, struct up_vm *u, vm_profile *p)
{
	if (u->chan == VM_CHAN_VSOCK) {
		GUARD(err_wrap(vm_vsock_cid_reserve(u->h, pr->vm.vsock_cid, NULL, &u->cid),
		               "vm %s: vsock", u->name));
		p->vsock_cid = u->cid;
		log_info("up: vm %s: vsock guest CID %u%s", u->name, u->cid,
		         pr->vm.vsock_cid ? " (configured)" : " (picked)");
	}
	GUARD(vm_profile_check(p));
	return vm_profile_hash(p, u->hash);
}

void cli_vm_admin_info(struct up_vm *u, struct admin_vm *out)
{
	static const char *const last_state[] = {
		[VM_EV_STARTED] = "starting",   [VM_EV_STOPPED] = "stopped",
		[VM_EV_CRASHED] = "restarting", [VM_EV_RESTARTING] = "restarting",
		[VM_EV_RESTARTED] = "starting", [VM_EV_GAVE_UP] = "failed",
	};
	memset(out, 0, sizeof(*out));
	/* vm_* take the host's lock: before mu (see struct up_vm). */
	out->restarts = u->v ? vm_restarts(u->h, u->v) : 0;
	if (u->v)
		vm_uuid(u->h, u->v, out->uuid);
	snprintf(out->name, sizeof(out->name), "%s", u->model);
	snprintf(out->domain, sizeof(out->domain), "%s", u->name);
	memcpy(out->profile_hash, u->hash, sizeof(out->profile_hash));
	out->channel = vm_chan_kind_name(u->chan);
	out->vsock_cid = u->cid;
	pthread_mutex_lock(&u->mu);
	out->routable = u->routable && u->ch != NULL;
	out->state = out->routable ? "running"
	             : u->last_event >= 0 && (size_t)u->last_event < CUSTOS_ARRAY_LEN(last_state)
	                     ? last_state[u->last_event]
	                     : "starting";
	out->started_wall_ns = u->started_ns;
	out->qemu_pid = u->qemu_pid > 0 ? (int64_t)u->qemu_pid : -1;
	out->seccomp = u->seccomp > 0 ? "filter" : u->seccomp < 0 ? "refused" : "pending";
	out->taint = -1; /* the egress proxy, in the proxy process, knows (cmd_up.c fills it) */
	pthread_mutex_unlock(&u->mu);
}

size_t cli_vm_admin_list(struct up_vm *const *vms, size_t n, struct admin_vm *out, size_t max)
{
	size_t i;
	for (i = 0; i < n && i < max; i++)
		cli_vm_admin_info(vms[i], &out[i]);
	return i;
}

void cli_vm_stop(struct up_vm *u)
{
	if (u == NULL)
		return;
	atomic_store(&u->quit, true);
	if (u->sup_started)
		pthread_join(u->sup, NULL);
	pthread_mutex_lock(&u->mu);
	vm_channel *ch = u->ch;
	u->ch = NULL;
	u->routable = false;
	pthread_mutex_unlock(&u->mu);
	vm_channel_close(ch);
	if (u->v && vm_stop(u->h, u->v) != CUSTOS_OK)
		log_warn("vm %s: stopping: %s", u->name, err_msg());
	vm_host_close(u->h);
	vm_vsock_cid_release(u->cid); /* after the domain is gone */
	live_release(u);              /* its name and paths too */
	pthread_mutex_destroy(&u->mu);
	free(u->chan_path);
	free(u->console_path);
	free(u->health);
	free(u->model);
	free(u);
}

custos_err cli_vm_start(const custos_config *cfg, const cfg_model *m, struct audit_writer *audit,
                        bool (*give_up)(const void *arg), const void *give_up_arg,
                        struct up_vm **out)
{
	const cfg_profile *pr =
	        m->sandbox.profile ? &cfg->profiles[m->sandbox.profile_index] : NULL;
	struct up_vm *u = xcalloc(1, sizeof(*u));
	static int pin[VM_MAX_VCPUS]; /* only read by vm_start: starts and reloads' starts */
	vm_profile p;
	custos_err e;

	pthread_mutex_init(&u->mu, NULL);
	u->last_event = -1;
	u->model = xstrdup(m->id);
	u->audit = audit;
	u->give_up = give_up;
	u->give_up_arg = give_up_arg;
	u->port = m->sandbox.port ? m->sandbox.port : 8000;
	u->health = m->sandbox.health.path ? xstrdup(m->sandbox.health.path) : NULL;
	u->timeout_ns = m->sandbox.health.start_timeout_ns ? m->sandbox.health.start_timeout_ns
	                                                   : 120 * NS_PER_S;
	e = live_claim(u, m->id, pr);
	if (e != CUSTOS_OK) {
		cli_vm_stop(u);
		return e;
	}
	if (strcmp(u->name + strlen(CFG_VM_DOMAIN_PREFIX), m->id) != 0)
		log_info("up: model %s: another VM of it still runs: this one is domain %s, "
		         "channel socket %s, console log %s",
		         m->id, u->name, u->chan_path, u->console_path ? u->console_path : "none");
	e = map_profile(cfg, m, u, &p, pin);
	vm_host_opts ho = {
		.uri = pr && pr->vm.libvirt_uri ? pr->vm.libvirt_uri : "qemu:///system",
		.on_event = on_vm_event,
		.event_arg = u,
		.backoff_min_ns = m->sandbox.restart_initial_ns,
		.backoff_max_ns = m->sandbox.restart_max_ns,
		.max_restarts = UINT32_MAX,
	};
	uint64_t t0 = tm_mono_ns();
	if (e == CUSTOS_OK)
		e = vm_host_open(&ho, &u->h);
	if (e == CUSTOS_OK)
		e = finish_profile(pr, u, &p);
	if (e == CUSTOS_OK)
		e = vm_start(u->h, &p, &u->v);
	if (e == CUSTOS_OK) {
		log_info("up: model %s: VM %s started (channel %s), waiting for seccomp, channel "
		         "and port %u",
		         m->id, u->name, vm_chan_kind_name(u->chan), u->port);
		e = bring_up(u);
	}
	u->give_up = NULL; /* the supervisor thread's bring_up waits for the VM alone */
	u->give_up_arg = NULL;
	if (e == CUSTOS_OK && pthread_create(&u->sup, NULL, supervise, u) != 0)
		e = err_set(CUSTOS_ERR_SYS, "vm %s: supervisor thread", u->name);
	else if (e == CUSTOS_OK)
		u->sup_started = true;
	if (e != CUSTOS_OK) {
		e = err_wrap(e, "model %s: VM sandbox", m->id);
		cli_vm_stop(u);
		return e;
	}
	log_info("up: model %s: VM %s ready (QEMU under seccomp, channel up) in %.1f s", m->id,
	         u->name, (double)(tm_mono_ns() - t0) / 1e9);
	*out = u;
	return CUSTOS_OK;
}
