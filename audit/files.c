/*
 * Log files: listing a directory's files in chain order (by the first seq in their name) and
 * reading lines from a file that may still be growing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_int.h"

struct named {
	uint64_t seq;
	char *path;
};

static int cmp_named(const void *a, const void *b)
{
	const struct named *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void audit_paths_free(char **paths, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
}

custos_err audit_list_files(const char *dir, char ***paths, size_t *n)
{
	DIR *d = opendir(dir);
	struct named *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	custos_err e = CUSTOS_OK;

	*paths = NULL;
	*n = 0;
	if (d == NULL)
		return err_sys("%s: opendir", dir);
	while ((de = readdir(d)) != NULL) {
		uint64_t s;
		if (!audit_file_name_parse(de->d_name, &s))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			struct named *nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				e = err_set(CUSTOS_ERR_NOMEM, "listing %s", dir);
				goto out;
			}
			v = nv;
		}
		size_t pl = strlen(dir) + strlen(de->d_name) + 2;
		v[cnt].path = malloc(pl);
		if (v[cnt].path == NULL) {
			e = err_set(CUSTOS_ERR_NOMEM, "listing %s", dir);
			goto out;
		}
		snprintf(v[cnt].path, pl, "%s/%s", dir, de->d_name);
		v[cnt].seq = s;
		cnt++;
	}
	if (cnt > 1)
		qsort(v, cnt, sizeof(*v), cmp_named);
	if (cnt > 0) {
		*paths = calloc(cnt, sizeof(char *));
		if (*paths == NULL) {
			e = err_set(CUSTOS_ERR_NOMEM, "listing %s", dir);
			goto out;
		}
		for (size_t i = 0; i < cnt; i++)
			(*paths)[i] = steal_pointer(&v[i].path);
		*n = cnt;
	}
out:
	for (size_t i = 0; i < cnt; i++)
		free(v[i].path);
	free(v);
	closedir(d);
	return e;
}

custos_err audit_reader_open(audit_reader *r, const char *path)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->b, AUDIT_READ_CHUNK + AUDIT_MAX_LINE);
	/* O_NONBLOCK: a FIFO put in a log's place must not stop the reader in open(); anything
	 * but a regular file (a FIFO, a device such as /dev/zero behind a link) is refused. */
	do
		r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	while (r->fd == -1 && errno == EINTR);
	custos_err e = CUSTOS_OK;
	struct stat st;
	int fl;
	if (r->fd == -1)
		e = err_sys("%s: open", path);
	else if (fstat(r->fd, &st) == -1)
		e = err_sys("%s: fstat", path);
	else if (!S_ISREG(st.st_mode))
		e = err_set(CUSTOS_ERR_PARSE, "%s: not a regular file", path);
	else if ((fl = fcntl(r->fd, F_GETFL)) == -1 ||
	         fcntl(r->fd, F_SETFL, fl & ~O_NONBLOCK) == -1)
		e = err_sys("%s: fcntl", path);
	if (e != CUSTOS_OK)
		audit_reader_close(r); /* closing again is harmless */
	return e;
}

void audit_reader_close(audit_reader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	buf_free(&r->b);
}

size_t audit_reader_partial(const audit_reader *r)
{
	return buf_used(&r->b);
}

/* Appends the next chunk of the file to r->b: CUSTOS_ERR_NOTFOUND at its end. */
static custos_err read_chunk(audit_reader *r)
{
	for (;;) {
		GUARD(buf_reserve(&r->b, AUDIT_READ_CHUNK));
		ssize_t got = read(r->fd, buf_tail(&r->b), AUDIT_READ_CHUNK);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1)
			return err_sys("read");
		if (got == 0)
			return CUSTOS_ERR_NOTFOUND;
		buf_commit(&r->b, (size_t)got);
		return CUSTOS_OK;
	}
}

custos_err audit_reader_next(audit_reader *r, span *line, uint64_t *line_off)
{
	for (;;) {
		span s = buf_span(&r->b);
		const char *nl = s.len ? memchr(s.ptr, '\n', s.len) : NULL;
		if (nl != NULL) {
			size_t n = (size_t)(nl - s.ptr);
			*line = span_of(s.ptr, n);
			*line_off = r->off;
			buf_consume(&r->b, n + 1);
			r->off += n + 1;
			r->line_no++;
			return CUSTOS_OK;
		}
		ENSURE(s.len <= AUDIT_MAX_LINE, CUSTOS_ERR_LIMIT,
		       "record at offset %llu longer than %d bytes", (unsigned long long)r->off,
		       AUDIT_MAX_LINE);
		GUARD(read_chunk(r));
	}
}

custos_err audit_reader_skip_line(audit_reader *r)
{
	for (;;) {
		span s = buf_span(&r->b);
		const char *nl = s.len ? memchr(s.ptr, '\n', s.len) : NULL;
		if (nl != NULL) {
			size_t n = (size_t)(nl - s.ptr) + 1;
			buf_consume(&r->b, n);
			r->off += n;
			r->line_no++;
			return CUSTOS_OK;
		}
		r->off += s.len;
		buf_reset(&r->b);
		GUARD(read_chunk(r));
	}
}

static void close_span(unsigned lo, unsigned hi)
{
	if (lo > hi)
		return;
	if (close_range(lo, hi, 0) == -1) /* kernels before 5.9: one by one, bounded */
		for (unsigned fd = lo; fd <= hi && fd < 65536; fd++)
			close((int)fd);
}

void audit_close_fds_keep(const int *keep, size_t n)
{
	unsigned from = 3;
	for (;;) {
		unsigned next = ~0U; /* the lowest kept descriptor at or above from */
		for (size_t i = 0; i < n; i++)
			if (keep[i] >= 0 && (unsigned)keep[i] >= from && (unsigned)keep[i] < next)
				next = (unsigned)keep[i];
		if (next == ~0U) {
			close_span(from, ~0U);
			return;
		}
		if (next > from)
			close_span(from, next - 1);
		from = next + 1;
	}
}

void audit_close_fds_except(int a, int b)
{
	const int keep[2] = { a, b };
	audit_close_fds_keep(keep, 2);
}
