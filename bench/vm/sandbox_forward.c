/*
 * Benchmark helper: the process-sandbox side of bench/vm. Runs the model-server fixture in a
 * custos process sandbox (builtin "default" profile: own netns with lo only, seccomp, ...) and
 * forwards a host TCP port to it with sockets created inside the sandbox's netns
 * (sandbox_connect_inside), bridged by a thread per connection exactly as `custos vm run
 * --forward` bridges to the VM channel. Prints "ready PORT" when it serves.
 *   sandbox_forward FIXTURE HOST_PORT [FIXTURE_ARGS...]
 */
#include <errno.h>
#include <fcntl.h>
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
#include "custos/sandbox.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: sandbox_forward FIXTURE HOST_PORT [ARGS...]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	sandbox_profile p;
	if (sandbox_profile_builtin("default", &p) != CUSTOS_OK)
		goto fail;
	p.name = "bench-vm-fixture";
	sandbox_bind fixture_bind = { .src = argv[1], .dst = "/fixture" };
	p.binds = &fixture_bind;
	p.n_binds = 1;
	const char *av[64] = { "/fixture", "--listen", "127.0.0.1:8000" };
	int n = 3;
	for (int i = 3; i < argc && n < 63; i++)
		av[n++] = argv[i];
	av[n] = NULL;
	sandbox_opts o;
	sandbox_opts_init(&o);
	sandbox *sb = NULL;
	if (sandbox_spawn(&p, av, &o, &sb) != CUSTOS_OK ||
	    sandbox_wait_ready(sb, 8000, "/v1/models", 20000) != CUSTOS_OK)
		goto fail;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons((uint16_t)strtoul(argv[2], NULL, 10)),
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(l, 512) == -1) {
		perror("listen");
		return 1;
	}
	printf("ready %s\n", argv[2]);
	fflush(stdout);
	for (;;) {
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (c == -1)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		int s = -1;
		if (sandbox_connect_inside(sb, 8000, &s) != CUSTOS_OK) {
			close(c);
			continue;
		}
		struct pollfd pf = { .fd = s, .events = POLLOUT };
		poll(&pf, 1, 5000);
		int fl = 0;
		socklen_t fl_len = sizeof(fl);
		getsockopt(s, SOL_SOCKET, SO_ERROR, &fl, &fl_len);
		/* back to blocking for the simple bridge */
		int flags = fcntl(s, F_GETFL);
		fcntl(s, F_SETFL, flags & ~O_NONBLOCK);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		int *fds = malloc(2 * sizeof(int));
		fds[0] = c;
		fds[1] = s;
		pthread_t t;
		if (fl != 0 || pthread_create(&t, NULL, file_bridge_thread, fds) != 0) {
			free(fds);
			close(c);
			close(s);
			continue;
		}
		pthread_detach(t);
	}
fail:
	fprintf(stderr, "sandbox_forward: %s\n", err_msg());
	return 1;
}
