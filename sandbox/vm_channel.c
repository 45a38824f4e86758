/*
 * Host side of the VM channel: connects to the unix socket QEMU listens on for the
 * virtio-serial port, or over AF_VSOCK to the guest agent at the VM's CID, and runs the
 * multiplexer (vm_mux.c) on a thread. Each stream is handed to the caller as one end of a
 * socketpair, so the proxy treats a VM exactly like a socket.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include <linux/vm_sockets.h>
#include <time.h>
#include <unistd.h>

#include "custos/vm.h"
#include "vm_mux.h"

struct vm_channel {
	vm_channel_opts o;
	int fd;
	struct vm_mux *mux;
	pthread_t thread;
	bool started;
	volatile int alive;
	int run_rc;
	struct sockaddr_un egress_addr; /* autobound abstract address of the egress listener */
	socklen_t egress_len;
	int egress_set; /* read with __atomic_load_n: set once, after the address */
};

static int host_accept(void *arg, uint16_t port)
{
	vm_channel *c = arg;
	if (port == VM_MUX_PORT_EGRESS && __atomic_load_n(&c->egress_set, __ATOMIC_ACQUIRE)) {
		/* Like a connection to the listening socket sandbox_listen_inside gives for a
		 * process sandbox: the proxy accepts it from the fd vm_channel_listen_egress
		 * returned. Non-blocking: when the listener's backlog is full (the proxy does not
		 * accept as fast as the guest opens streams, or not at all) connect() fails with
		 * EAGAIN and the stream is refused; a blocking connect would stop the channel
		 * thread, every stream of the VM and vm_channel_close with it. */
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd == -1)
			return -1;
		if (connect(fd, (struct sockaddr *)&c->egress_addr, c->egress_len) == -1) {
			close(fd);
			return -1;
		}
		return fd;
	}
	if (!c->o.on_accept)
		return -1;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	c->o.on_accept(c->o.accept_arg, port, sv[0]);
	return sv[1];
}

static void *channel_thread(void *arg)
{
	vm_channel *c = arg;
	proc_name_self("custos-vm-chan");
	c->run_rc = vm_mux_run(c->mux);
	if (c->run_rc != 0)
		log_warn("vm channel: %s", vm_mux_error(c->mux));
	c->alive = 0;
	return NULL;
}

static custos_err connect_unix(const char *path, uint64_t timeout_ns, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	ENSURE(strlen(path) < sizeof(sa.sun_path), CUSTOS_ERR_LIMIT,
	       "vm channel: socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	uint64_t deadline = tm_mono_ns() + timeout_ns;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd == -1)
			return err_sys("vm channel: socket");
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			*out = fd;
			return CUSTOS_OK;
		}
		int e = errno;
		close(fd);
		if (e != ENOENT && e != ECONNREFUSED && e != EINTR) {
			errno = e;
			return err_sys("vm channel: connecting to %s", path);
		}
		if (tm_mono_ns() >= deadline)
			return err_set(CUSTOS_ERR_TIMEOUT, "vm channel: %s did not appear", path);
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* Whether a failed vsock connect may succeed later: the guest is still booting (no transport
 * yet: the connect times out or the device is not there yet) or custos-guest does not listen
 * yet (reset/refused). */
static bool vsock_retryable(int e)
{
	return e == ECONNRESET || e == ECONNREFUSED || e == ETIMEDOUT || e == ENODEV ||
	       e == EHOSTUNREACH || e == ENETUNREACH || e == EINTR || e == EAGAIN;
}

/* Connects to the guest agent at cid:port, retrying until the deadline. Each attempt is
 * bounded by the kernel's vsock connect timeout, set to at most 1 s. */
static custos_err connect_vsock(unsigned cid, unsigned port, uint64_t timeout_ns, int *out)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
	uint64_t deadline = tm_mono_ns() + timeout_ns;
	for (;;) {
		int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd == -1)
			return err_sys("vm channel: AF_VSOCK socket");
		uint64_t now = tm_mono_ns();
		uint64_t left = deadline > now ? deadline - now : 0;
		if (left > 1000000000ull)
			left = 1000000000ull;
		struct timeval tv = { .tv_sec = (time_t)(left / 1000000000ull),
			              .tv_usec = (suseconds_t)(left % 1000000000ull / 1000) };
		if (tv.tv_sec == 0 && tv.tv_usec < 10000)
			tv.tv_usec = 10000;
		/* Best effort: older kernels keep their default (2 s). */
		(void)setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			*out = fd;
			return CUSTOS_OK;
		}
		int e = errno;
		close(fd);
		if (!vsock_retryable(e)) {
			errno = e;
			return err_sys("vm channel: connecting to vsock CID %u port %u", cid, port);
		}
		if (tm_mono_ns() >= deadline)
			return err_set(CUSTOS_ERR_TIMEOUT,
			               "vm channel: no guest agent at vsock CID %u port %u (%s)",
			               cid, port, strerror(e));
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

vm_chan_kind vm_channel_auto(const char *vhost_dev)
{
	struct stat st;
	if (stat(vhost_dev ? vhost_dev : VM_VHOST_VSOCK_DEV, &st) == 0 && S_ISCHR(st.st_mode))
		return VM_CHAN_VSOCK;
	return VM_CHAN_VIRTIO_SERIAL;
}

const char *vm_chan_kind_name(vm_chan_kind k)
{
	return k == VM_CHAN_VSOCK ? "vsock" : "virtio-serial";
}

custos_err vm_channel_open(const vm_channel_opts *o, vm_channel **out)
{
	ENSURE((o->path && *o->path) || (!o->path && (o->vsock_cid || o->fd >= 0)),
	       CUSTOS_ERR_INVAL, "vm channel: neither a path, a vsock CID nor an fd");
	ENSURE(o->path || o->vsock_cid == 0 ||
	               (o->vsock_cid >= VM_VSOCK_CID_MIN && o->vsock_cid <= VM_VSOCK_CID_MAX),
	       CUSTOS_ERR_INVAL, "vm channel: vsock CID %u is not a guest CID", o->vsock_cid);
	ENSURE(o->window <= VM_MUX_MAX_WINDOW, CUSTOS_ERR_LIMIT, "vm channel: window over %u",
	       VM_MUX_MAX_WINDOW);
	uint64_t tmo = o->connect_timeout_ns ? o->connect_timeout_ns : 30000000000ull;
	int fd = o->path || o->vsock_cid ? -1 : o->fd;
	if (o->path)
		GUARD(connect_unix(o->path, tmo, &fd));
	else if (o->vsock_cid)
		GUARD(connect_vsock(o->vsock_cid,
		                    o->vsock_port ? o->vsock_port : VM_VSOCK_PORT_DEFAULT, tmo,
		                    &fd));
	vm_channel *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return err_set(CUSTOS_ERR_NOMEM, "vm channel: out of memory");
	}
	c->o = *o;
	c->fd = fd;
	struct vm_mux_opts mo = {
		.chan_fd = fd,
		.odd_ids = 1,
		.window = o->window,
		.accept = host_accept,
		.accept_arg = c,
		.listen_fd = -1,
	};
	int rc = vm_mux_new(&mo, &c->mux);
	if (rc != 0) {
		close(fd);
		free(c);
		errno = -rc;
		return err_sys("vm channel: creating the mux");
	}
	c->alive = 1;
	rc = pthread_create(&c->thread, NULL, channel_thread, c);
	if (rc != 0) {
		c->alive = 0;
		vm_channel_close(c);
		return err_set(CUSTOS_ERR_SYS, "vm channel: thread: %s", strerror(rc));
	}
	c->started = true;
	*out = c;
	return CUSTOS_OK;
}

custos_err vm_channel_open_stream(vm_channel *c, uint16_t port, int *fd)
{
	ENSURE(c->alive, CUSTOS_ERR_CLOSED, "vm channel: the channel is down");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return err_sys("vm channel: socketpair");
	int rc = vm_mux_open(c->mux, port, sv[1]);
	if (rc != 0) {
		close(sv[0]);
		errno = -rc;
		return err_sys("vm channel: opening a stream");
	}
	*fd = sv[0];
	return CUSTOS_OK;
}

custos_err vm_channel_listen_egress(vm_channel *c, int backlog, int *lfd)
{
	ENSURE(!__atomic_load_n(&c->egress_set, __ATOMIC_ACQUIRE), CUSTOS_ERR_EXISTS,
	       "vm channel: the egress listener exists already");
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return err_sys("vm channel: egress socket");
	/* Autobind: the kernel picks a unique abstract name; nothing appears in the filesystem. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa_family_t)) == -1 ||
	    listen(fd, backlog > 0 ? backlog : 128) == -1) {
		custos_err e = err_sys("vm channel: egress listener");
		close(fd);
		return e;
	}
	c->egress_len = sizeof(c->egress_addr);
	if (getsockname(fd, (struct sockaddr *)&c->egress_addr, &c->egress_len) == -1) {
		custos_err e = err_sys("vm channel: egress listener name");
		close(fd);
		return e;
	}
	__atomic_store_n(&c->egress_set, 1, __ATOMIC_RELEASE);
	*lfd = fd;
	return CUSTOS_OK;
}

bool vm_channel_alive(vm_channel *c)
{
	return c->alive != 0;
}

void vm_channel_close(vm_channel *c)
{
	if (!c)
		return;
	if (c->started) {
		vm_mux_stop(c->mux);
		pthread_join(c->thread, NULL);
	}
	vm_mux_free(c->mux);
	close(c->fd);
	free(c);
}
