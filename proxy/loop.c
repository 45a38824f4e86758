/*
 * Per-worker event loop: epoll (edge-triggered for connections, level-triggered for listeners
 * and wake-up eventfds), a timer min-heap, and deferred frees.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"

#define EV_BATCH 128

custos_err ev_loop_init(ev_loop *l)
{
	*l = (ev_loop){ .epfd = -1 };
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd == -1)
		return err_sys("epoll_create1");
	l->now = tm_mono_ns();
	return CUSTOS_OK;
}

void ev_loop_free(ev_loop *l)
{
	if (l->epfd != -1)
		close(l->epfd);
	for (size_t i = 0; i < l->ngrave; i++)
		l->grave_fn[i](l->graveyard[i]);
	free(l->heap);
	free(l->graveyard);
	free(l->grave_fn);
	*l = (ev_loop){ .epfd = -1 };
}

static custos_err ev_ctl_add(ev_loop *l, ev_io *io, int fd, ev_io_cb cb, void *obj, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = io };

	io->fd = fd;
	io->cb = cb;
	io->obj = obj;
	io->dead = false;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) == -1)
		return err_sys("epoll_ctl add fd %d", fd);
	return CUSTOS_OK;
}

custos_err ev_add(ev_loop *l, ev_io *io, int fd, ev_io_cb cb, void *obj)
{
	return ev_ctl_add(l, io, fd, cb, obj, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
}

custos_err ev_add_lt(ev_loop *l, ev_io *io, int fd, ev_io_cb cb, void *obj)
{
	return ev_ctl_add(l, io, fd, cb, obj, EPOLLIN);
}

void ev_del(ev_loop *l, ev_io *io)
{
	if (io->fd != -1 && !io->dead)
		(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->dead = true;
}

/* ---- timer heap ---- */

static void heap_swap(ev_loop *l, size_t a, size_t b)
{
	ev_timer *t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->idx = a;
	l->heap[b]->idx = b;
}

static void heap_up(ev_loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p]->at <= l->heap[i]->at)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(ev_loop *l, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1, m = i;
		if (c < l->nheap && l->heap[c]->at < l->heap[m]->at)
			m = c;
		if (c + 1 < l->nheap && l->heap[c + 1]->at < l->heap[m]->at)
			m = c + 1;
		if (m == i)
			return;
		heap_swap(l, i, m);
		i = m;
	}
}

void ev_timer_clear(ev_loop *l, ev_timer *t)
{
	if (t->at == 0)
		return;
	size_t i = t->idx;
	t->at = 0;
	l->nheap--;
	if (i != l->nheap) {
		l->heap[i] = l->heap[l->nheap];
		l->heap[i]->idx = i;
		heap_down(l, i);
		heap_up(l, i);
	}
}

void ev_timer_set(ev_loop *l, ev_timer *t, uint64_t at)
{
	if (at == 0)
		at = 1;
	if (t->at != 0) {
		uint64_t old = t->at;
		t->at = at;
		if (at < old)
			heap_up(l, t->idx);
		else
			heap_down(l, t->idx);
		return;
	}
	if (l->nheap == l->capheap) {
		size_t nc = l->capheap ? l->capheap * 2 : 64;
		ev_timer **nh = realloc(l->heap, nc * sizeof(*nh));
		if (nh == NULL)
			abort(); /* a timer that silently never fires would be worse */
		l->heap = nh;
		l->capheap = nc;
	}
	t->at = at;
	t->idx = l->nheap;
	l->heap[l->nheap++] = t;
	heap_up(l, t->idx);
}

void ev_defer_free(ev_loop *l, void *obj, ev_free_fn fn)
{
	if (l->ngrave == l->capgrave) {
		size_t nc = l->capgrave ? l->capgrave * 2 : 64;
		void **ng = realloc(l->graveyard, nc * sizeof(*ng));
		if (ng == NULL)
			abort();
		l->graveyard = ng;
		ev_free_fn *nf = realloc(l->grave_fn, nc * sizeof(*nf));
		if (nf == NULL)
			abort();
		l->grave_fn = nf;
		l->capgrave = nc;
	}
	l->graveyard[l->ngrave] = obj;
	l->grave_fn[l->ngrave] = fn;
	l->ngrave++;
}

custos_err ev_run_once(ev_loop *l, int max_wait_ms)
{
	struct epoll_event evs[EV_BATCH];
	int timeout = max_wait_ms;

	l->now = tm_mono_ns();
	if (l->nheap) {
		uint64_t at = l->heap[0]->at;
		int ms = at <= l->now ? 0 : (int)((at - l->now + 999999) / 1000000);
		if (timeout < 0 || ms < timeout)
			timeout = ms;
	}
	int n = epoll_wait(l->epfd, evs, EV_BATCH, timeout);
	if (n == -1 && errno != EINTR)
		return err_sys("epoll_wait");
	l->now = tm_mono_ns();
	if (n > 0 && l->batch_cb)
		l->batch_cb(l, l->batch_obj, true);
	for (int i = 0; i < n; i++) {
		ev_io *io = evs[i].data.ptr;
		if (!io->dead)
			io->cb(l, io->obj, evs[i].events);
	}
	if (n > 0 && l->batch_cb)
		l->batch_cb(l, l->batch_obj, false);
	while (l->nheap && l->heap[0]->at <= l->now) {
		ev_timer *t = l->heap[0];
		ev_timer_clear(l, t);
		t->cb(l, t->obj);
	}
	for (size_t i = 0; i < l->ngrave; i++)
		l->grave_fn[i](l->graveyard[i]);
	l->ngrave = 0;
	return CUSTOS_OK;
}
