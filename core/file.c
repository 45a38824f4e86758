/*
 * Guarded file loading: config files writable by group/others and secret files readable by
 * group/others are refused (as sshd and relayd refuse them), sizes are bounded, EINTR retried.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "custos/core.h"

custos_err file_check_mode(int fd, const char *path, file_kind kind)
{
	struct stat st;

	if (fstat(fd, &st) == -1)
		return err_sys("%s: stat", path);
	ENSURE(S_ISREG(st.st_mode), CUSTOS_ERR_INVAL, "%s: not a regular file", path);
	if (kind == FILE_CONFIG && (st.st_mode & (S_IWGRP | S_IWOTH)))
		return err_set(CUSTOS_ERR_PERM,
		               "%s: refusing a file writable by group or others (mode %04o); "
		               "run chmod go-w %s",
		               path, (unsigned)(st.st_mode & 07777), path);
	if (kind == FILE_SECRET && (st.st_mode & (S_IRWXG | S_IRWXO)))
		return err_set(CUSTOS_ERR_PERM,
		               "%s: refusing a key file accessible by group or others (mode %04o); "
		               "run chmod 600 %s",
		               path, (unsigned)(st.st_mode & 07777), path);
	return CUSTOS_OK;
}

custos_err file_load(const char *path, file_kind kind, size_t max, buf *out)
{
	custos_err e;
	int fd;

	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer (a `policy check` or a
	 * reload hung on it); the regular-file check refuses it right after, and clearing the
	 * flag restores ordinary reads for the files that pass. */
	do
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	while (fd == -1 && errno == EINTR);
	if (fd == -1)
		return err_sys("%s: open", path);
	e = file_check_mode(fd, path, kind);
	if (e != CUSTOS_OK)
		goto out;
	int fl = fcntl(fd, F_GETFL);
	if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
		e = err_sys("%s: fcntl", path);
		goto out;
	}
	for (;;) {
		if (buf_used(out) >= max) {
			/* One more byte tells "exactly max" from "over max". */
			char probe;
			ssize_t r;
			do
				r = read(fd, &probe, 1);
			while (r == -1 && errno == EINTR);
			if (r == 0)
				break;
			e = err_set(CUSTOS_ERR_LIMIT, "%s: larger than the limit of %zu bytes",
			            path, max);
			goto out;
		}
		size_t want = max - buf_used(out);
		if (want > 65536)
			want = 65536;
		e = buf_reserve(out, want);
		if (e != CUSTOS_OK) {
			err_wrap(e, "%s", path);
			goto out;
		}
		ssize_t r = read(fd, buf_tail(out), want);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			e = err_sys("%s: read", path);
			goto out;
		}
		if (r == 0)
			break;
		buf_commit(out, (size_t)r);
	}
out:
	close(fd);
	return e;
}

custos_err file_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1)
			return err_sys("write");
		c += w;
		n -= (size_t)w;
	}
	return CUSTOS_OK;
}

custos_err file_write_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
	char tmp[4096];
	custos_err e;

	ENSURE((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) < sizeof(tmp),
	       CUSTOS_ERR_LIMIT, "path too long: %s", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd == -1)
		return err_sys("%s: create", tmp);
	if (fchmod(fd, mode) == -1) {
		e = err_sys("%s: chmod", tmp);
		goto fail;
	}
	e = file_write_all(fd, p, n);
	if (e != CUSTOS_OK) {
		err_wrap(e, "%s", tmp);
		goto fail;
	}
	if (fsync(fd) == -1) {
		e = err_sys("%s: fsync", tmp);
		goto fail;
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		e = err_sys("rename %s -> %s", tmp, path);
		unlink(tmp);
		return e;
	}
	return CUSTOS_OK;
fail:
	close(fd);
	unlink(tmp);
	return e;
}

void *file_bridge_thread(void *fds)
{
	enum { BRIDGE_BUF = 64 * 1024 };
	int a = ((int *)fds)[0], b = ((int *)fds)[1];
	free(fds);
	char *bb = malloc(BRIDGE_BUF);
	bool open_ab = true, open_ba = true;

	while (bb && (open_ab || open_ba)) {
		struct pollfd p[2] = { { .fd = open_ab ? a : -1, .events = POLLIN },
			               { .fd = open_ba ? b : -1, .events = POLLIN } };
		if (poll(p, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			int from = i == 0 ? a : b, to = i == 0 ? b : a;
			ssize_t n = read(from, bb, BRIDGE_BUF);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0 || file_write_all(to, bb, (size_t)n) != CUSTOS_OK) {
				shutdown(to, SHUT_WR);
				if (i == 0)
					open_ab = false;
				else
					open_ba = false;
				if (n < 0) /* an error, not an orderly end: stop both ways */
					open_ab = open_ba = false;
			}
		}
	}
	free(bb);
	close(a);
	close(b);
	return NULL;
}

custos_err file_connect_timeout(int fd, const void *sa, size_t len, uint64_t timeout_ns)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return err_sys("connect: fcntl");
	custos_err e = CUSTOS_OK;
	if (connect(fd, (const struct sockaddr *)sa, (socklen_t)len) == -1) {
		if (errno != EINPROGRESS && errno != EINTR) {
			e = err_sys("connect");
		} else {
			uint64_t deadline = tm_mono_ns() + timeout_ns;
			for (;;) {
				uint64_t now = tm_mono_ns();
				if (now >= deadline) {
					e = err_set(CUSTOS_ERR_TIMEOUT,
					            "connect: no answer in %llu ms",
					            (unsigned long long)(timeout_ns / 1000000));
					break;
				}
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				int pr = poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
				if (pr == -1 && errno != EINTR) {
					e = err_sys("connect: poll");
					break;
				}
				if (pr <= 0)
					continue;
				int soe = 0;
				socklen_t sl = sizeof(soe);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soe, &sl) == -1) {
					e = err_sys("connect: SO_ERROR");
				} else if (soe != 0) {
					errno = soe;
					e = err_sys("connect");
				}
				break;
			}
		}
	}
	if (fcntl(fd, F_SETFL, fl) == -1 && e == CUSTOS_OK)
		e = err_sys("connect: fcntl");
	return e;
}
