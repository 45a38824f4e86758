/*
 * VM sandbox lifecycle on the libvirt C API: one connection, libvirt's default event loop on a
 * thread of its own, transient domains, and a restart with exponential backoff when a domain
 * stops without custos asking for it. Every lifecycle change goes to the caller's callback so
 * that it can be audited. A restart's virDomainCreateXML runs on a thread of its own, never on
 * the event loop's: starting a domain takes seconds (a minute under TCG), and an event loop
 * that waits for it leaves libvirtd's keepalive pings to this process' other connections (the
 * other VMs') unanswered until libvirtd closes them.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vhost.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "custos/lazylib.h"
#include "custos/vm.h"

#define VM_TICK_MS 50 /* restart scheduler tick; also bounds how long close waits */

struct vm {
	vm *next;
	char *name;
	char *xml;
	virDomainPtr dom;
	bool stopping;       /* custos destroys it: no restart */
	unsigned restarts;   /* restarts done */
	uint64_t backoff_ns; /* next delay */
	uint64_t restart_at; /* tm_mono_ns when a restart is due; 0 = none */
	bool restart_due;    /* due now: for the restart thread */
	bool restarting;     /* the restart thread is starting the domain (lock not held) */
	bool gave_up;
};

struct vm_host {
	vm_host_opts o;
	virConnectPtr conn;
	int cb_id;
	int timer;
	pthread_t thread;
	bool thread_started;
	volatile int quit;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* restart_due set, a restart done, quit */
	pthread_t restart_thread;
	bool restart_started;
	vm *vms;
};

static pthread_once_t event_once = PTHREAD_ONCE_INIT;
static int event_impl_rc;

static void event_impl_init(void)
{
	event_impl_rc = virEventRegisterDefaultImpl();
}

static const char *const event_names[] = { "started",    "stopped",   "crashed",
	                                   "restarting", "restarted", "gave_up" };

const char *vm_event_name(vm_event_kind k)
{
	if ((size_t)k >= CUSTOS_ARRAY_LEN(event_names))
		return "unknown";
	return event_names[k];
}

static const char *virt_msg(void)
{
	virErrorPtr e = virGetLastError();
	return e && e->message ? e->message : "unknown libvirt error";
}

/* libvirt prints every error to stderr by default; custos reports them through err_msg. */
static void virt_silent(void *arg, virErrorPtr e)
{
	(void)arg;
	(void)e;
}

static void emit(vm_host *h, const char *name, vm_event_kind k, const char *detail)
{
	log_info("vm %s: %s%s%s", name, vm_event_name(k), detail ? ": " : "", detail ? detail : "");
	if (h->o.on_event)
		h->o.on_event(h->o.event_arg, name, k, detail);
}

static vm *find_locked(vm_host *h, const char *name)
{
	for (vm *v = h->vms; v; v = v->next)
		if (strcmp(v->name, name) == 0)
			return v;
	return NULL;
}

/* An unexpected stop: schedule a restart with backoff, or give up. Called with the lock. */
static void crashed_locked(vm_host *h, vm *v, const char *detail)
{
	if (v->dom) {
		virDomainFree(v->dom);
		v->dom = NULL;
	}
	emit(h, v->name, VM_EV_CRASHED, detail);
	if (v->restarts >= h->o.max_restarts) {
		v->gave_up = true;
		v->restart_at = 0;
		emit(h, v->name, VM_EV_GAVE_UP, "restart limit reached");
		return;
	}
	char msg[64];
	snprintf(msg, sizeof(msg), "in %llu ms", (unsigned long long)(v->backoff_ns / 1000000));
	v->restart_at = tm_mono_ns() + v->backoff_ns;
	emit(h, v->name, VM_EV_RESTARTING, msg);
	v->backoff_ns *= 2;
	if (v->backoff_ns > h->o.backoff_max_ns)
		v->backoff_ns = h->o.backoff_max_ns;
}

static const char *stopped_detail(int detail)
{
	switch (detail) {
	case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
		return "guest shut down";
	case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
		return "destroyed";
	case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
		return "guest crashed";
	case VIR_DOMAIN_EVENT_STOPPED_FAILED:
		return "emulator failed";
	default:
		return "stopped";
	}
}

static int lifecycle_cb(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
	(void)conn;
	vm_host *h = opaque;
	const char *name = virDomainGetName(dom);
	if (!name)
		return 0;
	pthread_mutex_lock(&h->lock);
	vm *v = find_locked(h, name);
	if (v) {
		if (event == VIR_DOMAIN_EVENT_STARTED) {
			emit(h, name, VM_EV_STARTED, NULL);
		} else if (event == VIR_DOMAIN_EVENT_STOPPED ||
		           (event == VIR_DOMAIN_EVENT_CRASHED)) {
			if (!v->stopping && v->dom) /* not already handled */
				crashed_locked(h, v,
				               event == VIR_DOMAIN_EVENT_CRASHED
				                       ? "guest crashed"
				                       : stopped_detail(detail));
		}
	}
	pthread_mutex_unlock(&h->lock);
	return 0;
}

static void tick_cb(int timer, void *opaque)
{
	(void)timer;
	vm_host *h = opaque;
	uint64_t now = tm_mono_ns();
	pthread_mutex_lock(&h->lock);
	for (vm *v = h->vms; v; v = v->next) {
		if (v->restart_at == 0 || now < v->restart_at || v->stopping)
			continue;
		v->restart_at = 0;
		v->restart_due = true;
		pthread_cond_broadcast(&h->cond);
	}
	pthread_mutex_unlock(&h->lock);
}

/* Starts the domains whose restart is due, one at a time, without the lock while libvirt
 * works (vm_stop and vm_host_close wait for a restart in progress). */
static void *restart_main(void *arg)
{
	vm_host *h = arg;
	proc_name_self("custos-virt-rs");
	pthread_mutex_lock(&h->lock);
	while (!h->quit) {
		vm *v = h->vms;
		while (v && !(v->restart_due && !v->stopping))
			v = v->next;
		if (v == NULL) {
			pthread_cond_wait(&h->cond, &h->lock);
			continue;
		}
		v->restart_due = false;
		v->restarting = true;
		v->restarts++;
		pthread_mutex_unlock(&h->lock);
		char msg[256] = "";
		virDomainPtr dom = virDomainCreateXML(h->conn, v->xml, 0);
		if (!dom)
			snprintf(msg, sizeof(msg), "restart failed: %s", virt_msg());
		pthread_mutex_lock(&h->lock);
		v->restarting = false;
		if (dom) {
			v->dom = dom; /* a stop asked for meanwhile destroys it (vm_stop) */
			if (!v->stopping)
				emit(h, v->name, VM_EV_RESTARTED, NULL);
		} else if (!v->stopping) {
			crashed_locked(h, v, msg);
		}
		pthread_cond_broadcast(&h->cond);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

/* Called with the lock: no restart of v is due or runs from here on. */
static void quiesce_locked(vm_host *h, vm *v)
{
	v->stopping = true;
	v->restart_at = 0;
	v->restart_due = false;
	while (v->restarting)
		pthread_cond_wait(&h->cond, &h->lock);
}

static void *event_thread(void *arg)
{
	vm_host *h = arg;
	proc_name_self("custos-virt-ev");
	while (!h->quit) {
		if (virEventRunDefaultImpl() < 0) {
			log_error("vm: libvirt event loop: %s", virt_msg());
			break;
		}
	}
	return NULL;
}

custos_err vm_host_open(const vm_host_opts *o, vm_host **out)
{
	ENSURE(o->uri && *o->uri, CUSTOS_ERR_INVAL, "vm: no libvirt URI");
	GUARD(lazylib_libvirt()); /* libvirt.so.0 is loaded now, or the error names it */
	pthread_once(&event_once, event_impl_init);
	ENSURE(event_impl_rc == 0, CUSTOS_ERR_INTERNAL,
	       "vm: registering libvirt's event loop failed");
	virSetErrorFunc(NULL, virt_silent);

	vm_host *h = calloc(1, sizeof(*h));
	ENSURE(h, CUSTOS_ERR_NOMEM, "vm: out of memory");
	h->o = *o;
	if (!h->o.backoff_min_ns)
		h->o.backoff_min_ns = 1000000000ull;
	if (!h->o.backoff_max_ns)
		h->o.backoff_max_ns = 60000000000ull;
	if (h->o.backoff_max_ns < h->o.backoff_min_ns)
		h->o.backoff_max_ns = h->o.backoff_min_ns;
	if (!h->o.max_restarts)
		h->o.max_restarts = 5;
	h->cb_id = -1;
	h->timer = -1;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	h->conn = virConnectOpen(o->uri);
	if (!h->conn) {
		custos_err e = err_set(CUSTOS_ERR_UNSUPPORTED, "vm: connecting to %s: %s", o->uri,
		                       virt_msg());
		vm_host_close(h);
		return e;
	}
	h->cb_id =
	        virConnectDomainEventRegisterAny(h->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
	                                         VIR_DOMAIN_EVENT_CALLBACK(lifecycle_cb), h, NULL);
	h->timer = virEventAddTimeout(VM_TICK_MS, tick_cb, h, NULL);
	if (h->cb_id < 0 || h->timer < 0) {
		custos_err e =
		        err_set(CUSTOS_ERR_INTERNAL, "vm: registering for events: %s", virt_msg());
		vm_host_close(h);
		return e;
	}
	int rc = pthread_create(&h->thread, NULL, event_thread, h);
	if (rc != 0) {
		vm_host_close(h);
		return err_set(CUSTOS_ERR_SYS, "vm: event thread: %s", strerror(rc));
	}
	h->thread_started = true;
	rc = pthread_create(&h->restart_thread, NULL, restart_main, h);
	if (rc != 0) {
		vm_host_close(h);
		return err_set(CUSTOS_ERR_SYS, "vm: restart thread: %s", strerror(rc));
	}
	h->restart_started = true;
	*out = h;
	return CUSTOS_OK;
}

static void vm_free(vm *v)
{
	if (!v)
		return;
	if (v->dom)
		virDomainFree(v->dom);
	free(v->name);
	free(v->xml);
	free(v);
}

static void unlink_locked(vm_host *h, vm *v)
{
	for (vm **pp = &h->vms; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			return;
		}
	}
}

/* custos' own stop: reported here, because the domain leaves the table before libvirt's
 * STOPPED event arrives. */
static void destroy_locked(vm_host *h, vm *v)
{
	v->stopping = true;
	v->restart_at = 0;
	if (v->dom) {
		if (virDomainDestroy(v->dom) < 0)
			log_warn("vm %s: destroy: %s", v->name, virt_msg());
		virDomainFree(v->dom);
		v->dom = NULL;
		emit(h, v->name, VM_EV_STOPPED, "destroyed by custos");
	}
}

void vm_host_close(vm_host *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	for (vm *v = h->vms; v; v = v->next)
		quiesce_locked(h, v);
	while (h->vms) {
		vm *v = h->vms;
		destroy_locked(h, v);
		h->vms = v->next;
		vm_free(v);
	}
	h->quit = 1;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	if (h->restart_started)
		pthread_join(h->restart_thread, NULL);
	if (h->thread_started) {
		/* The tick timer wakes the loop at least every VM_TICK_MS, so it sees quit. */
		h->quit = 1;
		pthread_join(h->thread, NULL);
	}
	if (h->timer >= 0)
		virEventRemoveTimeout(h->timer);
	if (h->cb_id >= 0)
		virConnectDomainEventDeregisterAny(h->conn, h->cb_id);
	if (h->conn)
		virConnectClose(h->conn);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

custos_err vm_start(vm_host *h, const vm_profile *p, vm **out)
{
	buf xml;
	buf_init(&xml, VM_XML_MAX);
	custos_err e = vm_domain_xml(p, &xml);
	const char *s = NULL;
	if (e == CUSTOS_OK)
		e = buf_cstr(&xml, &s);
	if (e != CUSTOS_OK) {
		buf_free(&xml);
		return e;
	}
	vm *v = calloc(1, sizeof(*v));
	if (!v) {
		buf_free(&xml);
		return err_set(CUSTOS_ERR_NOMEM, "vm: out of memory");
	}
	v->name = xstrdup(p->name);
	v->xml = xstrdup(s);
	buf_free(&xml);
	v->backoff_ns = h->o.backoff_min_ns;

	pthread_mutex_lock(&h->lock);
	if (find_locked(h, v->name)) {
		pthread_mutex_unlock(&h->lock);
		vm_free(v);
		return err_set(CUSTOS_ERR_EXISTS, "vm %s: already started", p->name);
	}
	/* Linked before the domain starts so that its STARTED event finds it. The lock is not
	 * held while libvirt starts the domain (seconds; a minute under TCG): the event loop
	 * (libvirt's default one, process-wide) would wait for it in lifecycle_cb meanwhile,
	 * and libvirtd closes the other hosts' connections (another VM's) whose keepalive
	 * pings go unanswered for 30 s. No restart is scheduled for v (restart_at 0) and
	 * nobody stops it before vm_start returns it. */
	v->next = h->vms;
	h->vms = v;
	pthread_mutex_unlock(&h->lock);
	virDomainPtr dom = virDomainCreateXML(h->conn, v->xml, 0);
	if (!dom)
		e = err_set(CUSTOS_ERR_IO, "vm %s: starting the domain: %s", p->name, virt_msg());
	pthread_mutex_lock(&h->lock);
	v->dom = dom;
	if (!dom)
		unlink_locked(h, v);
	pthread_mutex_unlock(&h->lock);
	if (!dom) {
		vm_free(v);
		return e;
	}
	*out = v;
	return CUSTOS_OK;
}

custos_err vm_stop(vm_host *h, vm *v)
{
	pthread_mutex_lock(&h->lock);
	quiesce_locked(h, v);
	destroy_locked(h, v);
	unlink_locked(h, v);
	pthread_mutex_unlock(&h->lock);
	vm_free(v);
	return CUSTOS_OK;
}

bool vm_running(vm_host *h, vm *v)
{
	pthread_mutex_lock(&h->lock);
	bool r = v->dom && virDomainIsActive(v->dom) == 1;
	pthread_mutex_unlock(&h->lock);
	return r;
}

unsigned vm_restarts(vm_host *h, vm *v)
{
	pthread_mutex_lock(&h->lock);
	unsigned n = v->restarts;
	pthread_mutex_unlock(&h->lock);
	return n;
}

const char *vm_name(const vm *v)
{
	return v->name;
}

void vm_inject_crash(vm_host *h, vm *v)
{
	/* Destroying it behind custos' back looks exactly like a crash to the event handler. */
	pthread_mutex_lock(&h->lock);
	virDomainPtr d = v->dom;
	if (d)
		virDomainRef(d);
	pthread_mutex_unlock(&h->lock);
	if (d) {
		(void)virDomainDestroy(d);
		virDomainFree(d);
	}
}

void vm_uuid(vm_host *h, vm *v, char out[37])
{
	out[0] = '\0';
	pthread_mutex_lock(&h->lock);
	if (v->dom && virDomainGetUUIDString(v->dom, out) != 0)
		out[0] = '\0';
	pthread_mutex_unlock(&h->lock);
}

/* ---- vsock guest CIDs ----------------------------------------------------------------------
 * One registry per process: each VM of `custos up` has its own vm_host (connection), and two
 * of them must never pick the same CID between the pick and the domain's start. */
#define VM_CID_RESERVED_MAX 256   /* VMs of one custos process with a vsock device */
#define VM_CID_DOMAINS_MAX  16384 /* CIDs collected from libvirt's domains */

static pthread_mutex_t cid_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned cid_reserved[VM_CID_RESERVED_MAX];
static size_t n_cid_reserved;

static bool cid_in(const unsigned *set, size_t n, unsigned cid)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == cid)
			return true;
	return false;
}

/* Appends every <cid ... address='N'/> of a domain's XML to *set (bounded). */
static custos_err cids_of_xml(const char *xml, unsigned **set, size_t *n, size_t *cap)
{
	for (const char *p = strstr(xml, "<cid "); p; p = strstr(p + 1, "<cid ")) {
		const char *end = strchr(p, '>');
		if (!end)
			break;
		const char *a = strstr(p, "address=");
		if (!a || a > end || (a[8] != '\'' && a[8] != '"'))
			continue;
		const char *v = a + 9, *q = strchr(v, a[8]);
		uint64_t cid;
		if (!q || q > end ||
		    num_parse_u64(span_of(v, (size_t)(q - v)), 0, UINT32_MAX, &cid) != CUSTOS_OK)
			continue;
		ENSURE(*n < VM_CID_DOMAINS_MAX, CUSTOS_ERR_LIMIT,
		       "vm: more than %d vsock CIDs in libvirt's domains", VM_CID_DOMAINS_MAX);
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			unsigned *grown = realloc(*set, *cap * sizeof(**set));
			ENSURE(grown, CUSTOS_ERR_NOMEM, "vm: out of memory");
			*set = grown;
		}
		(*set)[(*n)++] = (unsigned)cid;
	}
	return CUSTOS_OK;
}

/* The CIDs in the XML of every domain libvirt knows on h's connection (running: the live XML;
 * defined: the inactive XML, which also holds fixed CIDs). *set is the caller's (free). */
static custos_err domain_cids(vm_host *h, unsigned **set, size_t *n)
{
	virDomainPtr *doms = NULL;
	size_t cap = 0;
	*set = NULL;
	*n = 0;
	int nd = virConnectListAllDomains(h->conn, &doms, 0);
	ENSURE(nd >= 0, CUSTOS_ERR_IO, "vm: listing libvirt's domains: %s", virt_msg());
	custos_err e = CUSTOS_OK;
	for (int i = 0; i < nd; i++) {
		char *xml = e == CUSTOS_OK ? virDomainGetXMLDesc(doms[i], 0) : NULL;
		if (xml) /* a domain that went away meanwhile has no XML: nothing to avoid */
			e = cids_of_xml(xml, set, n, &cap);
		free(xml);
		virDomainFree(doms[i]);
	}
	free(doms);
	if (e != CUSTOS_OK) {
		free(*set);
		*set = NULL;
		*n = 0;
	}
	return e;
}

/* 1 when the host kernel has a VM with this CID, 0 when not, -1 when it cannot tell (no
 * /dev/vhost-vsock, or no permission). The probe claims the CID on a fresh vhost-vsock
 * instance, which is released again when the fd closes. */
static int vhost_cid_in_use(const char *dev, unsigned cid)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd == -1)
		return -1;
	int r = -1;
	if (ioctl(fd, VHOST_SET_OWNER) == 0) {
		uint64_t c = cid;
		if (ioctl(fd, VHOST_VSOCK_SET_GUEST_CID, &c) == 0)
			r = 0;
		else if (errno == EADDRINUSE)
			r = 1;
	}
	close(fd);
	return r;
}

custos_err vm_vsock_cid_reserve(vm_host *h, unsigned want, const char *vhost_dev, unsigned *out)
{
	ENSURE(want == 0 || (want >= VM_VSOCK_CID_MIN && want <= VM_VSOCK_CID_MAX),
	       CUSTOS_ERR_INVAL, "vm: vsock CID %u is not a guest CID (%u-%u)", want,
	       VM_VSOCK_CID_MIN, VM_VSOCK_CID_MAX);
	unsigned *used = NULL;
	size_t n_used = 0;
	GUARD(domain_cids(h, &used, &n_used));
	const char *dev = vhost_dev ? vhost_dev : VM_VHOST_VSOCK_DEV;
	custos_err e = CUSTOS_OK;
	pthread_mutex_lock(&cid_lock);
	unsigned first = want ? want : VM_VSOCK_CID_MIN;
	unsigned last = want ? want : VM_VSOCK_CID_MIN + VM_VSOCK_CID_SCAN - 1;
	unsigned got = 0;
	const char *why = NULL;
	if (n_cid_reserved == VM_CID_RESERVED_MAX) {
		e = err_set(CUSTOS_ERR_LIMIT, "vm: more than %d VMs with vsock",
		            VM_CID_RESERVED_MAX);
		goto out;
	}
	for (unsigned cid = first; cid <= last; cid++) {
		if (cid_in(cid_reserved, n_cid_reserved, cid))
			why = "reserved for another VM of this custos";
		else if (cid_in(used, n_used, cid))
			why = "in the XML of a libvirt domain";
		else if (vhost_cid_in_use(dev, cid) == 1)
			why = "in use by a VM of this host (vhost-vsock)";
		else {
			got = cid;
			break;
		}
	}
	if (got == 0) {
		e = want ? err_set(CUSTOS_ERR_EXISTS, "vm: vsock CID %u is taken: %s", want, why)
		         : err_set(CUSTOS_ERR_LIMIT, "vm: no free vsock CID in %u-%u", first, last);
		goto out;
	}
	cid_reserved[n_cid_reserved++] = got;
	*out = got;
out:
	pthread_mutex_unlock(&cid_lock);
	free(used);
	return e;
}

void vm_vsock_cid_release(unsigned cid)
{
	if (cid == 0)
		return;
	pthread_mutex_lock(&cid_lock);
	for (size_t i = 0; i < n_cid_reserved; i++) {
		if (cid_reserved[i] == cid) {
			cid_reserved[i] = cid_reserved[--n_cid_reserved];
			break;
		}
	}
	pthread_mutex_unlock(&cid_lock);
}
