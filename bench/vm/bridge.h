/*
 * Benchmark helper shared by bench/vm's forwarders: one thread per connection copying both ways
 * between two sockets until each side ends (a half-close is passed on), as `custos vm run
 * --forward` bridges to the VM channel. arg: a malloc'd int[2], freed here; both fds closed.
 */
#ifndef CUSTOS_BENCH_VM_BRIDGE_H
#define CUSTOS_BENCH_VM_BRIDGE_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "custos/core.h"

static void *bridge_thread(void *arg)
{
	int *fds = arg;
	int a = fds[0], b = fds[1];
	free(fds);
	char bb[65536];
	bool ab = true, ba = true;
	while (ab || ba) {
		struct pollfd p[2] = { { .fd = ab ? a : -1, .events = POLLIN },
			               { .fd = ba ? b : -1, .events = POLLIN } };
		if (poll(p, 2, -1) == -1 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			int from = i == 0 ? a : b, to = i == 0 ? b : a;
			ssize_t n = read(from, bb, sizeof(bb));
			if (n <= 0 || file_write_all(to, bb, (size_t)n) != CUSTOS_OK) {
				shutdown(to, SHUT_WR);
				if (i == 0)
					ab = false;
				else
					ba = false;
			}
		}
	}
	close(a);
	close(b);
	return NULL;
}

#endif
