/*
 * Benchmark helper: the VM channel without the VM. A host TCP port is forwarded through
 * vm_channel (host mux) and a socketpair standing in for the virtio-serial port to a second mux
 * playing custos-guest's part, which connects to the fixture on host loopback. Separates the
 * protocol's cost from the emulated guest's. Prints "ready PORT".
 *   mux_forward HOST_PORT FIXTURE_PORT
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "custos/core.h"
#include "custos/vm.h"
#include "sandbox/vm_mux.h"

static uint16_t fixture_port;

static int guest_accept(void *arg, uint16_t port)
{
	(void)arg;
	(void)port;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons(fixture_port),
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void *guest_thread(void *arg)
{
	int rc = vm_mux_run(arg);
	if (rc != 0)
		fprintf(stderr, "guest mux: %s\n", vm_mux_error(arg));
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: mux_forward HOST_PORT FIXTURE_PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	fixture_port = (uint16_t)strtoul(argv[2], NULL, 10);
	int chan[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) == -1)
		return 1;
	struct vm_mux_opts go = { .chan_fd = chan[1], .accept = guest_accept, .listen_fd = -1 };
	struct vm_mux *g = NULL;
	pthread_t gt;
	if (vm_mux_new(&go, &g) != 0 || pthread_create(&gt, NULL, guest_thread, g) != 0)
		return 1;
	vm_channel_opts co = { .fd = chan[0] };
	vm_channel *c = NULL;
	if (vm_channel_open(&co, &c) != CUSTOS_OK) {
		fprintf(stderr, "%s\n", err_msg());
		return 1;
	}
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons((uint16_t)strtoul(argv[1], NULL, 10)),
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(l, 512) == -1) {
		perror("listen");
		return 1;
	}
	printf("ready %s\n", argv[1]);
	fflush(stdout);
	for (;;) {
		int cfd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (cfd == -1)
			continue;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		int s = -1;
		if (vm_channel_open_stream(c, 8000, &s) != CUSTOS_OK) {
			close(cfd);
			continue;
		}
		int *fds = malloc(2 * sizeof(int));
		fds[0] = cfd;
		fds[1] = s;
		pthread_t t;
		if (pthread_create(&t, NULL, file_bridge_thread, fds) != 0) {
			free(fds);
			close(cfd);
			close(s);
			continue;
		}
		pthread_detach(t);
	}
}
