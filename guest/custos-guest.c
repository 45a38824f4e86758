/*
 * custos-guest: the agent inside a custos VM. It carries the multiplexed channel to custos
 * (a virtio-serial port, found by name, a device path, or an AF_VSOCK port custos connects to;
 * given a port name and a vsock port, whichever device the VM has) and bridges it: streams custos opens
 * go to the model server's TCP port on the guest's loopback (ingress, allow-listed ports only);
 * connections to its loopback HTTP proxy port go back to custos as egress streams, so a model
 * server in a VM sees the same HTTP_PROXY arrangement as in a process sandbox. Static, libc
 * only; the protocol code is sandbox/vm_mux.c, the same file the host uses.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "vm_mux.h"

#define MAX_ALLOWED 16

static uint16_t allowed[MAX_ALLOWED];
static size_t n_allowed;
static struct vm_mux *current;

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "custos-guest: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
	exit(1);
}

static unsigned long parse_num(const char *what, const char *s, unsigned long max)
{
	char *end = NULL;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || !end || *end || end == s || v > max)
		die("bad number for", what);
	return v;
}

/* Ingress: a stream custos opened to `port` becomes a connection to 127.0.0.1:port. */
static int guest_accept(void *arg, uint16_t port)
{
	(void)arg;
	size_t i;
	for (i = 0; i < n_allowed; i++)
		if (allowed[i] == port)
			break;
	if (i == n_allowed) {
		fprintf(stderr, "custos-guest: refused stream to port %u (not allowed)\n", port);
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons(port),
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	/* Loopback connects complete or fail at once; no need for a non-blocking connect. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* The virtio-serial port named `name`: /sys/class/virtio-ports/vportNpM/name -> /dev/vportNpM */
static int find_port(const char *name, char *dev, size_t devsz)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d)
		return -1;
	struct dirent *e;
	int rc = -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char p[512], got[256] = { 0 };
		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd == -1)
			continue;
		ssize_t n = read(fd, got, sizeof(got) - 1);
		close(fd);
		if (n <= 0)
			continue;
		while (n > 0 && (got[n - 1] == '\n' || got[n - 1] == '\0'))
			got[--n] = '\0';
		if (strcmp(got, name) == 0) {
			snprintf(dev, devsz, "/dev/%s", e->d_name);
			rc = 0;
			break;
		}
	}
	closedir(d);
	return rc;
}

/* Whether the VM has a vsock device: the guest's own CID is a real one. Without a device the
 * virtio transport answers VMADDR_CID_ANY. */
static int vsock_present(void)
{
	int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 0;
	unsigned int cid = VMADDR_CID_ANY;
	int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
	close(fd);
	return r == 0 && cid >= 3 && cid != VMADDR_CID_ANY;
}

static int listen_vsock(unsigned long port)
{
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_vm svm = { .svm_family = AF_VSOCK,
		                   .svm_port = (unsigned)port,
		                   .svm_cid = VMADDR_CID_ANY };
	if (fd == -1 || bind(fd, (struct sockaddr *)&svm, sizeof(svm)) == -1 || listen(fd, 4) == -1)
		die("cannot listen on vsock", strerror(errno));
	return fd;
}

static int listen_loopback(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons(port),
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, 128) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static volatile sig_atomic_t stopping;
static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
	if (current)
		vm_mux_stop(current);
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: custos-guest (--port-name NAME | --device PATH | --vsock-port N |\n"
	        "                     --port-name NAME --vsock-port N) --allow-port PORT...\n"
	        "                    [--proxy-port PORT] [--wait-s N]\n"
	        "  --port-name NAME  virtio-serial port name (org.custos.mux.0)\n"
	        "  --device PATH     the channel device\n"
	        "  --vsock-port N    listen on AF_VSOCK port N; custos connects to the guest's "
	        "CID\n"
	        "                    (with --port-name: whichever of the two the VM has)\n"
	        "  --allow-port P    a loopback TCP port custos may open streams to (repeatable)\n"
	        "  --proxy-port P    loopback HTTP proxy port whose connections become egress\n"
	        "                    streams to custos (default 3128; 0 = none)\n"
	        "  --wait-s N        wait up to N s for the port to appear (default 30)\n");
}

int main(int argc, char **argv)
{
	const char *port_name = NULL, *device = NULL;
	unsigned long proxy_port = 3128, wait_s = 30, vsock_port = 0;
	static const struct option opts[] = {
		{ "port-name", required_argument, NULL, 'n' },
		{ "device", required_argument, NULL, 'd' },
		{ "allow-port", required_argument, NULL, 'a' },
		{ "proxy-port", required_argument, NULL, 'p' },
		{ "wait-s", required_argument, NULL, 'w' },
		{ "vsock-port", required_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			port_name = optarg;
			break;
		case 'd':
			device = optarg;
			break;
		case 'a':
			if (n_allowed == MAX_ALLOWED)
				die("too many --allow-port", NULL);
			allowed[n_allowed++] = (uint16_t)parse_num("--allow-port", optarg, 65535);
			break;
		case 'p':
			proxy_port = parse_num("--proxy-port", optarg, 65535);
			break;
		case 'w':
			wait_s = parse_num("--wait-s", optarg, 3600);
			break;
		case 'v':
			vsock_port = parse_num("--vsock-port", optarg, 0xffffffffUL);
			break;
		default:
			usage();
			return c == 'h' ? 0 : 2;
		}
	}
	int n_chan = (port_name != NULL) + (device != NULL) + (vsock_port != 0);
	int either = port_name != NULL && vsock_port != 0 && device == NULL;
	if ((n_chan != 1 && !either) || n_allowed == 0) {
		usage();
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_term };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	char dev[300];
	int vl = -1;
	if (device) {
		snprintf(dev, sizeof(dev), "%s", device);
	} else if (vsock_port && !port_name) {
		vl = listen_vsock(vsock_port);
	} else {
		/* The named virtio-serial port, or (given both) a vsock device, whichever the VM
		 * has: custos' `channel: auto` gives it exactly one of them. */
		unsigned long tries = wait_s * 10;
		while (find_port(port_name, dev, sizeof(dev)) != 0) {
			if (vsock_port && vsock_present()) {
				vl = listen_vsock(vsock_port);
				break;
			}
			if (tries-- == 0)
				die(vsock_port ? "neither the virtio-serial port nor a vsock device"
				               : "virtio-serial port not found",
				    port_name);
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	/* vsock: custos connects to CID:port; one connection carries the mux, as the
	 * virtio-serial port does. The next connection is accepted when the mux ends. */
	if (vl >= 0)
		snprintf(dev, sizeof(dev), "vsock:%lu", vsock_port);
	int chan = -1;
	if (vl == -1) {
		chan = open(dev, O_RDWR | O_CLOEXEC | O_NOCTTY);
		if (chan == -1)
			die("cannot open the channel", dev);
	}
	int lfd = -1;
	if (proxy_port) {
		lfd = listen_loopback((uint16_t)proxy_port);
		if (lfd == -1)
			die("cannot listen on the proxy port", NULL);
	}
	fprintf(stderr, "custos-guest: ready on %s (proxy 127.0.0.1:%lu)\n", dev, proxy_port);

	/* One mux per host connection: when custos disconnects the port reads EOF; streams are
	 * dropped and a fresh mux waits for the next connection. */
	while (!stopping) {
		if (vl >= 0) {
			if (chan >= 0)
				close(chan);
			chan = accept4(vl, NULL, NULL, SOCK_CLOEXEC);
			if (chan == -1)
				continue;
		}
		struct vm_mux_opts o = { .chan_fd = chan,
			                 .odd_ids = 0,
			                 .accept = guest_accept,
			                 .listen_fd = lfd,
			                 .listen_port = VM_MUX_PORT_EGRESS };
		struct vm_mux *m = NULL;
		int rc = vm_mux_new(&o, &m);
		if (rc != 0)
			die("mux", strerror(-rc));
		current = m;
		rc = vm_mux_run(m);
		current = NULL;
		if (rc != 0)
			fprintf(stderr, "custos-guest: channel: %s\n", vm_mux_error(m));
		vm_mux_free(m);
		if (!stopping) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	if (lfd >= 0)
		close(lfd);
	if (chan >= 0)
		close(chan);
	if (vl >= 0)
		close(vl);
	return 0;
}
