/*
 * libFuzzer target for the VM channel protocol (sandbox/vm_mux.c): the input is what a hostile
 * guest writes down the channel. The header decoder runs on every 12-byte window, then a whole
 * mux consumes the bytes (streams opened to socketpairs; port 9 refused, port 8 a service that
 * closes at once) until EOF or a protocol error.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../sandbox/vm_mux.h"

#define MAX_PEERS 64
static int peers[MAX_PEERS];
static size_t n_peers;

static int fuzz_accept(void *arg, uint16_t port)
{
	(void)arg;
	if (port == 9 || n_peers == MAX_PEERS)
		return -1; /* exercise refusal too */
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	if (port == 8) { /* a service that is gone at once: EOF, then the stream is reset */
		close(sv[0]);
		return sv[1];
	}
	peers[n_peers++] = sv[0];
	return sv[1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i + VM_MUX_HDR_LEN <= size && i < 256; i++) {
		struct vm_mux_hdr h;
		const char *why = NULL;
		(void)vm_mux_hdr_decode(data + i, size - i, &h, &why);
	}
	if (size > 65536)
		return 0;
	int chan[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) == -1)
		return 0;
	int sz = 1 << 20;
	setsockopt(chan[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(chan[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	size_t off = 0;
	while (off < size) {
		ssize_t w = write(chan[1], data + off, size - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	shutdown(chan[1], SHUT_WR);
	struct vm_mux_opts o = { .chan_fd = chan[0],
		                 .odd_ids = 1,
		                 .window = 4096,
		                 .max_streams = 32,
		                 .accept = fuzz_accept,
		                 .listen_fd = -1 };
	struct vm_mux *m = NULL;
	if (vm_mux_new(&o, &m) == 0) {
		(void)vm_mux_run(m);
		vm_mux_free(m);
	}
	for (size_t i = 0; i < n_peers; i++)
		close(peers[i]);
	n_peers = 0;
	close(chan[0]);
	close(chan[1]);
	return 0;
}
