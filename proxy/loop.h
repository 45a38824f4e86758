/*
 * Per-worker event loop: one epoll instance (edge-triggered), a binary min-heap of timers and
 * a deferred-free list so an object closed during a batch is not touched again in that batch.
 * Private to proxy/.
 */
#ifndef CUSTOS_PROXY_LOOP_H
#define CUSTOS_PROXY_LOOP_H

#include <stdint.h>

#include "custos/core.h"

struct ev_loop;
typedef void (*ev_io_cb)(struct ev_loop *l, void *obj, uint32_t events);
typedef void (*ev_timer_cb)(struct ev_loop *l, void *obj);

typedef struct ev_io {
	int fd;
	ev_io_cb cb;
	void *obj;
	bool dead; /* closed during this batch: ignore further events */
} ev_io;

typedef struct ev_timer {
	uint64_t at; /* monotonic ns; 0 when not armed */
	size_t idx;  /* position in the heap */
	ev_timer_cb cb;
	void *obj;
} ev_timer;

typedef void (*ev_free_fn)(void *obj);
/* Called with begin true before a batch of I/O events is handled and false after it. */
typedef void (*ev_batch_cb)(struct ev_loop *l, void *obj, bool begin);

typedef struct ev_loop {
	int epfd;
	ev_timer **heap;
	size_t nheap, capheap;
	void **graveyard; /* objects freed after the current batch */
	ev_free_fn *grave_fn;
	size_t ngrave, capgrave;
	uint64_t now; /* monotonic ns, refreshed per batch */
	bool stop;
	ev_batch_cb batch_cb; /* NULL: none */
	void *batch_obj;
} ev_loop;

custos_err ev_loop_init(ev_loop *l) CUSTOS_WUR;
void ev_loop_free(ev_loop *l);
/* Registers fd edge-triggered for in+out+rdhup. */
custos_err ev_add(ev_loop *l, ev_io *io, int fd, ev_io_cb cb, void *obj) CUSTOS_WUR;
/* Registers fd level-triggered for input only (listeners, eventfds). */
custos_err ev_add_lt(ev_loop *l, ev_io *io, int fd, ev_io_cb cb, void *obj) CUSTOS_WUR;
void ev_del(ev_loop *l, ev_io *io); /* deregisters (does not close) and marks dead */
void ev_timer_set(ev_loop *l, ev_timer *t, uint64_t at); /* (re)arms; at = monotonic ns */
void ev_timer_clear(ev_loop *l, ev_timer *t);
/* Frees obj with fn after the current batch of events. */
void ev_defer_free(ev_loop *l, void *obj, ev_free_fn fn);
/* Runs one batch: waits at most until the next timer or max_wait_ms. */
custos_err ev_run_once(ev_loop *l, int max_wait_ms) CUSTOS_WUR;

#endif
