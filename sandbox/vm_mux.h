/*
 * The custos VM channel protocol: many byte streams multiplexed over one virtio-serial port
 * (or one vsock connection), with per-stream flow-control windows so that one slow stream
 * cannot block the others. Shared by the host (sandbox/vm_channel.c) and the guest agent
 * (guest/custos-guest.c), so this header and vm_mux.c use libc and pthreads only: no custos
 * core, no OpenSSL, no libvirt. Functions return 0 or a negative errno (HAProxy-style parser
 * contract for the decoder); the custos wrappers turn that into custos_err.
 *
 * Frame: 12-byte header, then `len` payload bytes.
 *   byte 0      version (1)
 *   byte 1      type: OPEN=1 DATA=2 CLOSE=3 WINDOW=4 ERROR=5
 *   bytes 2-3   reserved, zero
 *   bytes 4-7   stream id, big-endian, non-zero; the host opens odd ids, the guest even ids
 *   bytes 8-11  payload length, big-endian, at most VM_MUX_MAX_PAYLOAD
 * OPEN   payload: 2-byte big-endian service port (guest: a TCP port it allows; host: 0 = egress)
 * DATA   payload: stream bytes; never more than the window the receiver granted
 * CLOSE  no payload: the sender will send no more (half-close, like shutdown(SHUT_WR))
 * WINDOW payload: 4-byte big-endian increment of the sender's receive window for the stream
 * ERROR  payload: up to VM_MUX_MAX_ERROR bytes of text; the stream is reset in both directions.
 *        Also sent once the local end of a stream is closed for good after its EOF (CLOSE
 *        sent): the stream is freed without waiting for the peer's CLOSE.
 * Each direction of a stream starts with the window given at start (both sides configured with
 * the same value). A malformed frame or a window overrun ends the whole channel: framing is lost.
 */
#ifndef CUSTOS_VM_MUX_H
#define CUSTOS_VM_MUX_H

#include <stddef.h>
#include <stdint.h>

#define VM_MUX_VERSION        1
#define VM_MUX_HDR_LEN        12
#define VM_MUX_MAX_PAYLOAD    16384
#define VM_MUX_MAX_ERROR      256
#define VM_MUX_DEFAULT_WINDOW (256u * 1024)
#define VM_MUX_MAX_WINDOW     (16u * 1024 * 1024)
#define VM_MUX_MAX_STREAMS    1024
#define VM_MUX_PORT_EGRESS    0

enum vm_mux_type {
	VM_MUX_OPEN = 1,
	VM_MUX_DATA = 2,
	VM_MUX_CLOSE = 3,
	VM_MUX_WINDOW = 4,
	VM_MUX_ERROR = 5,
};

struct vm_mux_hdr {
	uint8_t type;
	uint32_t stream;
	uint32_t len;
};

/* Writes the 12 header bytes. */
void vm_mux_hdr_encode(const struct vm_mux_hdr *h, uint8_t out[VM_MUX_HDR_LEN]);
/* Parses a header from p[n]: VM_MUX_HDR_LEN when parsed, 0 when more bytes are needed, -1 when
 * malformed (*why says how; static string). Checks version, type, reserved bytes, stream id,
 * the length limit and each type's payload length. */
int vm_mux_hdr_decode(const uint8_t *p, size_t n, struct vm_mux_hdr *h, const char **why);

struct vm_mux;

/* A stream the peer opened: return a connected fd for it (the mux owns it from then on), or
 * -1 to refuse (the peer gets ERROR). Runs on the mux thread. */
typedef int (*vm_mux_accept_fn)(void *arg, uint16_t port);

struct vm_mux_opts {
	int chan_fd;        /* the channel; set non-blocking; NOT closed by the mux */
	int odd_ids;        /* 1 on the host (opens odd ids), 0 in the guest */
	uint32_t window;    /* per-stream, per-direction window; 0 = VM_MUX_DEFAULT_WINDOW */
	size_t max_streams; /* 0 = VM_MUX_MAX_STREAMS */
	vm_mux_accept_fn accept;
	void *accept_arg;
	int listen_fd;        /* optional listening socket (-1 none): each accepted connection */
	uint16_t listen_port; /* becomes a stream opened to listen_port on the peer */
};

/* Creates a mux. Returns 0 or -errno. Owner: caller, vm_mux_free. */
int vm_mux_new(const struct vm_mux_opts *o, struct vm_mux **out);
/* Opens a stream to the peer's service `port`, carried by the connected fd (the mux owns it
 * from this call, also on failure). Thread-safe. Returns 0 or -errno. */
int vm_mux_open(struct vm_mux *m, uint16_t port, int fd);
/* Runs the mux until vm_mux_stop (returns 0), the peer closes the channel (returns 0) or an
 * error (returns -errno; -EPROTO for a protocol violation; vm_mux_error says what). */
int vm_mux_run(struct vm_mux *m);
/* Makes vm_mux_run return soon. Thread-safe, async-signal-safe. */
void vm_mux_stop(struct vm_mux *m);
/* The reason the last run failed ("" when none). */
const char *vm_mux_error(const struct vm_mux *m);
/* Number of open streams (for tests and stats; approximate while running). */
size_t vm_mux_streams(const struct vm_mux *m);
/* For tests: the next stream id this side allocates is `id` or, when that one is 0, of the
 * wrong parity or still open, the next free one after it (ids wrap from the largest of our
 * parity back to 1 or 2 and skip ids in use). Thread-safe; applied before the next open. */
void vm_mux_set_next_id(struct vm_mux *m, uint32_t id);
/* Closes every stream fd and frees m (not the channel fd). */
void vm_mux_free(struct vm_mux *m);

#endif /* CUSTOS_VM_MUX_H */
