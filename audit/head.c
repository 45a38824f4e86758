/*
 * The log's head at start: scanning the last file for the chain head (and a torn tail), and
 * checking that head against what the log once reached (the anchor in DIR/audit.head, written
 * at each durable checkpoint, and the sinks' cursors), so that a truncated log is never
 * silently re-anchored by a new start checkpoint. Also the operator's explicit acceptance.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "audit_int.h"

#define ANCHOR_FILE_MAX 256

/* ---- the anchor file: "custos-audit-head/1 <seq> <hash> <file> <key_id|->\n" */

static bool all_hex(span s)
{
	for (size_t i = 0; i < s.len; i++)
		if (!((s.ptr[i] >= '0' && s.ptr[i] <= '9') || (s.ptr[i] >= 'a' && s.ptr[i] <= 'f')))
			return false;
	return true;
}

/* Next space- or newline-delimited field of s from *pos. */
static span next_field(span s, size_t *pos)
{
	size_t st = *pos;
	while (*pos < s.len && s.ptr[*pos] != ' ' && s.ptr[*pos] != '\n')
		(*pos)++;
	span f = span_of(s.ptr + st, *pos - st);
	if (*pos < s.len)
		(*pos)++;
	return f;
}

static custos_err anchor_parse(span s, const char *name, bool allow_zero, audit_anchor *a)
{
	size_t pos = 0;
	uint64_t first;

	memset(a, 0, sizeof(*a));
	span dom = next_field(s, &pos), seq = next_field(s, &pos), hash = next_field(s, &pos),
	     file = next_field(s, &pos), kid = next_field(s, &pos);
	ENSURE(span_eq_cstr(dom, AUDIT_ANCHOR_DOMAIN) && pos == s.len && s.ptr[s.len - 1] == '\n',
	       CUSTOS_ERR_PARSE, "%s: not a " AUDIT_ANCHOR_DOMAIN " line", name);
	ENSURE(num_parse_u64(seq, allow_zero ? 0 : 1, UINT64_MAX, &a->seq) == CUSTOS_OK &&
	               hash.len == AUDIT_HASH_HEX && all_hex(hash) && file.len < sizeof(a->file) &&
	               ((kid.len == 16 && all_hex(kid)) || span_eq_cstr(kid, "-")),
	       CUSTOS_ERR_PARSE, "%s: malformed", name);
	memcpy(a->hash, hash.ptr, AUDIT_HASH_HEX);
	memcpy(a->file, file.ptr, file.len);
	ENSURE(audit_file_name_parse(a->file, &first) && (first <= a->seq || a->seq == 0),
	       CUSTOS_ERR_PARSE, "%s: malformed file name", name);
	if (kid.len == 16)
		memcpy(a->key_id, kid.ptr, 16);
	return CUSTOS_OK;
}

/* Reads the small file name of dirfd into b (at most ANCHOR_FILE_MAX bytes). */
static custos_err read_small(int dirfd, const char *name, char *b, size_t *n, bool *present)
{
	int fd;

	*present = false;
	*n = 0;
	/* O_NONBLOCK and a regular file only: a FIFO in audit.head's place would stop verify and
	 * the writer's start in open() or read(); it counts as a damaged anchor instead. */
	do
		fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
	while (fd == -1 && errno == EINTR);
	if (fd == -1 && errno == ENOENT)
		return CUSTOS_OK;
	if (fd == -1)
		return err_sys("%s: open", name);
	struct stat st;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(CUSTOS_ERR_PARSE, "%s: not a regular file", name);
	}
	for (;;) {
		ssize_t got = read(fd, b + *n, ANCHOR_FILE_MAX + 1 - *n);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			custos_err e = err_sys("%s: read", name);
			close(fd);
			return e;
		}
		if (got == 0)
			break;
		*n += (size_t)got;
		if (*n == ANCHOR_FILE_MAX + 1)
			break;
	}
	close(fd);
	ENSURE(*n > 0 && *n <= ANCHOR_FILE_MAX, CUSTOS_ERR_PARSE, "%s: empty or too long", name);
	*present = true;
	return CUSTOS_OK;
}

custos_err audit_anchor_read(int dirfd, const char *name, audit_anchor *a, bool *present)
{
	char b[ANCHOR_FILE_MAX + 1];
	size_t n;
	bool here;

	*present = false;
	GUARD(read_small(dirfd, name, b, &n, &here));
	if (!here)
		return CUSTOS_OK;
	/* The operator's acceptance may name an empty log (seq 0); the anchor never does. */
	GUARD(anchor_parse(span_of(b, n), name, strcmp(name, AUDIT_ACCEPT_FILE) == 0, a));
	*present = true;
	return CUSTOS_OK;
}

custos_err audit_own_as_dir(int dirfd, int fd, const char *name)
{
	struct stat d, f;

	if (geteuid() != 0)
		return CUSTOS_OK;
	if (fstat(dirfd, &d) == -1 || fstat(fd, &f) == -1)
		return err_sys("%s: stat", name);
	if (d.st_uid == 0 || (f.st_uid == d.st_uid && f.st_gid == d.st_gid))
		return CUSTOS_OK;
	if (fchown(fd, d.st_uid, d.st_gid) == -1)
		return err_sys("%s: chown", name);
	return CUSTOS_OK;
}

custos_err audit_file_write_at(int dirfd, const char *name, const void *p, size_t n, mode_t mode)
{
	char tmp[128];
	custos_err e = CUSTOS_OK;

	ENSURE((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", name) < sizeof(tmp), CUSTOS_ERR_LIMIT,
	       "name too long: %s", name);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd == -1)
		return err_sys("%s: create", tmp);
	if (fchmod(fd, mode) == -1)
		e = err_sys("%s: chmod", tmp);
	if (e == CUSTOS_OK)
		e = audit_own_as_dir(dirfd, fd, tmp);
	if (e == CUSTOS_OK && (e = file_write_all(fd, p, n)) != CUSTOS_OK)
		err_wrap(e, "%s", tmp);
	if (e == CUSTOS_OK && fsync(fd) == -1)
		e = err_sys("%s: fsync", tmp);
	close(fd);
	if (e == CUSTOS_OK && renameat(dirfd, tmp, dirfd, name) == -1)
		e = err_sys("rename %s -> %s", tmp, name);
	if (e != CUSTOS_OK) {
		unlinkat(dirfd, tmp, 0);
		return e;
	}
	/* The rename itself must survive a power cut, or the old anchor comes back. */
	if (fsync(dirfd) == -1)
		return err_sys("%s: directory fsync", name);
	return CUSTOS_OK;
}

static custos_err anchor_write(int dirfd, const char *name, const audit_anchor *a, mode_t mode)
{
	char b[ANCHOR_FILE_MAX];
	int n = snprintf(b, sizeof(b), AUDIT_ANCHOR_DOMAIN " %llu %.64s %s %s\n",
	                 (unsigned long long)a->seq, a->hash, a->file,
	                 a->key_id[0] ? a->key_id : "-");
	ENSURE(n > 0 && (size_t)n < sizeof(b), CUSTOS_ERR_LIMIT, "anchor too long");
	return audit_file_write_at(dirfd, name, b, (size_t)n, mode);
}

custos_err audit_anchor_write(int dirfd, const char *name, const audit_anchor *a)
{
	return anchor_write(dirfd, name, a, 0600);
}

/* ---- scanning the log for its head */

/* After a damaged record that ends at the reader's position: true when another complete line
 * (anything up to a '\n') follows, i.e. the damage is not a torn tail. */
static custos_err line_follows(audit_reader *r, bool *follows)
{
	span rest;
	uint64_t off;

	*follows = false;
	for (;;) {
		custos_err e = audit_reader_next(r, &rest, &off);
		if (e == CUSTOS_OK) {
			*follows = true;
			return CUSTOS_OK;
		}
		if (e == CUSTOS_ERR_NOTFOUND)
			return CUSTOS_OK;
		if (e != CUSTOS_ERR_LIMIT)
			return e;
		/* More than a line's worth without a newline: find where it ends, if anywhere. */
		e = audit_reader_skip_line(r);
		if (e == CUSTOS_OK) {
			*follows = true;
			return CUSTOS_OK;
		}
		return e == CUSTOS_ERR_NOTFOUND ? CUSTOS_OK : e;
	}
}

struct file_scan {
	bool any, clean;
	uint64_t seq, good_end;
	char head[AUDIT_HASH_HEX + 1];
};

/* Reads path: every record must frame, hash and follow its predecessor. Stops at the first
 * damaged one; damage followed by another line is an error (evidence is never cut), damage at
 * the end (a torn write, zeros after a power cut, however long) is left for the caller to cut
 * at good_end. Records the hash of want_seq into s->want_hash when it passes it. */
static custos_err scan_file(const char *path, struct audit_log_scan *ls, struct file_scan *f)
{
	audit_reader r;
	span line;
	uint64_t off;
	custos_err e;

	memset(f, 0, sizeof(*f));
	GUARD(audit_reader_open(&r, path));
	for (;;) {
		audit_line l;
		char h[AUDIT_HASH_HEX + 1];
		bool damaged = false, follows = false;
		uint64_t dline = r.line_no + 1, doff = r.off;

		e = audit_reader_next(&r, &line, &off);
		if (e == CUSTOS_ERR_NOTFOUND) {
			e = CUSTOS_OK;
			break;
		}
		if (e == CUSTOS_ERR_LIMIT) {
			/* A line longer than the reader holds: damage of unknown length. */
			damaged = true;
			e = audit_reader_skip_line(&r);
			if (e == CUSTOS_ERR_NOTFOUND) {
				e = CUSTOS_OK;
				break; /* it runs to the end of the file: a torn tail */
			}
		} else if (e == CUSTOS_OK) {
			damaged = audit_line_parse(line, &l) != CUSTOS_OK ||
			          audit_sha256_hex(l.canonical.ptr, l.canonical.len, h) !=
			                  CUSTOS_OK ||
			          CRYPTO_memcmp(h, l.hash, AUDIT_HASH_HEX) != 0 ||
			          (f->any && (l.seq != f->seq + 1 ||
			                      CRYPTO_memcmp(l.prev, f->head, AUDIT_HASH_HEX) != 0));
		}
		if (e != CUSTOS_OK)
			break;
		if (damaged) {
			/* Only a damaged final record is a torn write; anything after it means
			 * the damage is in the middle: evidence, not ours to cut. */
			e = line_follows(&r, &follows);
			if (e == CUSTOS_OK && follows)
				e = err_set(
				        CUSTOS_ERR_PARSE,
				        "%s: damaged record at line %llu (offset %llu) is not the "
				        "last; refusing to write (run custos audit verify)",
				        path, (unsigned long long)dline, (unsigned long long)doff);
			break;
		}
		f->any = true;
		f->seq = l.seq;
		memcpy(f->head, l.hash, sizeof(f->head));
		f->good_end = off + line.len + 1;
		if (ls->want_seq != 0 && l.seq == ls->want_seq) {
			memcpy(ls->want_hash, l.hash, sizeof(ls->want_hash));
			ls->want_found = true;
		}
		span t, r2;
		f->clean = ajson_get(line, "type", &t) == CUSTOS_OK &&
		           span_eq_cstr(t, "\"checkpoint\"") &&
		           ajson_get(line, "reason", &r2) == CUSTOS_OK &&
		           span_eq_cstr(r2, "\"shutdown\"");
	}
	audit_reader_close(&r);
	return e;
}

void audit_log_scan_free(struct audit_log_scan *s)
{
	audit_paths_free(s->paths, s->n);
	s->paths = NULL;
	s->n = 0;
}

custos_err audit_log_scan(const char *dir, uint64_t want_seq, struct audit_log_scan *s)
{
	custos_err e = CUSTOS_OK;

	memset(s, 0, sizeof(*s));
	s->want_seq = want_seq;
	GUARD(audit_list_files(dir, &s->paths, &s->n));
	for (size_t fi = s->n; fi-- > 0 && !s->found;) {
		struct file_scan f;
		e = scan_file(s->paths[fi], s, &f);
		if (e != CUSTOS_OK)
			break;
		if (fi == s->n - 1) {
			struct stat st;
			if (stat(s->paths[fi], &st) == -1) {
				e = err_sys("%s: stat", s->paths[fi]);
				break;
			}
			s->last_size = (uint64_t)st.st_size;
			s->last_good_end = f.good_end;
			if (!audit_file_name_parse(strrchr(s->paths[fi], '/') + 1,
			                           &s->last_first)) {
				e = err_set(CUSTOS_ERR_INTERNAL, "bad file name");
				break;
			}
		}
		if (f.any) {
			s->found = true;
			s->found_fi = fi;
			s->seq = f.seq;
			memcpy(s->head, f.head, sizeof(s->head));
			s->clean = f.clean;
		}
	}
	if (e != CUSTOS_OK)
		audit_log_scan_free(s);
	return e;
}

static uint64_t first_seq(const char *path)
{
	uint64_t f = 0;
	(void)audit_file_name_parse(strrchr(path, '/') + 1, &f);
	return f;
}

/* The hash of the record at seq, reading the file that must hold it. */
static custos_err hash_at(const struct audit_log_scan *s, uint64_t seq,
                          char out[AUDIT_HASH_HEX + 1])
{
	size_t pick = SIZE_MAX;
	uint64_t first;
	audit_reader r;
	span line;
	uint64_t off;
	custos_err e;

	for (size_t i = 0; i < s->n; i++)
		if (audit_file_name_parse(strrchr(s->paths[i], '/') + 1, &first) && first <= seq)
			pick = i;
	if (pick == SIZE_MAX)
		return CUSTOS_ERR_NOTFOUND;
	GUARD(audit_reader_open(&r, s->paths[pick]));
	while ((e = audit_reader_next(&r, &line, &off)) == CUSTOS_OK) {
		audit_line l;
		if (audit_line_parse(line, &l) != CUSTOS_OK || l.seq > seq)
			break;
		if (l.seq == seq) {
			memcpy(out, l.hash, AUDIT_HASH_HEX + 1);
			audit_reader_close(&r);
			return CUSTOS_OK;
		}
	}
	audit_reader_close(&r);
	return CUSTOS_ERR_NOTFOUND;
}

/* ---- checking the head against the anchor and the cursors */

void audit_note_add(char *out, size_t outsz, const char *fmt, ...)
{
	size_t l = strlen(out);
	va_list ap;

	if (l + 3 >= outsz)
		return;
	if (l > 0) {
		memcpy(out + l, "; ", 3);
		l += 2;
	}
	va_start(ap, fmt);
	vsnprintf(out + l, outsz - l, fmt, ap);
	va_end(ap);
}

static void head_name(const struct audit_log_scan *s, char *out, size_t n)
{
	if (!s->found)
		snprintf(out, n, "the log holds no record");
	else
		snprintf(out, n, "the log ends at seq %llu (%s)", (unsigned long long)s->seq,
		         strrchr(s->paths[s->found_fi], '/') + 1);
}

custos_err audit_anchor_load(int dirfd, audit_anchor *a, bool *anchored, char *damage,
                             size_t damagesz)
{
	damage[0] = '\0';
	custos_err e = audit_anchor_read(dirfd, AUDIT_ANCHOR_FILE, a, anchored);
	if (e == CUSTOS_ERR_PARSE) {
		snprintf(damage, damagesz, "%s", err_msg());
		*anchored = false;
		return CUSTOS_OK;
	}
	return e;
}

custos_err audit_head_check(const char *dir, const struct audit_log_scan *s, const audit_anchor *a,
                            bool anchored, const char *anchor_damage, struct audit_head_check *c)
{
	char hn[128], h[AUDIT_HASH_HEX + 1];
	DIR *d;
	struct dirent *de;

	memset(c, 0, sizeof(*c));
	head_name(s, hn, sizeof(hn));
	if (anchor_damage != NULL && anchor_damage[0] != '\0')
		audit_note_add(c->problem, sizeof(c->problem),
		               "%s: how far the log reached is unknown (%s)", anchor_damage, hn);
	if (anchored) {
		if (!s->found || s->seq < a->seq) {
			audit_note_add(
			        c->problem, sizeof(c->problem),
			        "%s, below the last signed checkpoint recorded "
			        "in " AUDIT_ANCHOR_FILE
			        " (seq %llu, hash %.16s..., in %s): the log was truncated or files "
			        "were removed",
			        hn, (unsigned long long)a->seq, a->hash, a->file);
		} else if (s->n > 0 && first_seq(s->paths[0]) > a->seq) {
			/* The files up to it were removed (retention: docs/OPERATIONS.md) and the
			 * log goes on past it: nothing left to compare. */
		} else {
			custos_err e = CUSTOS_OK;
			if (s->want_found && s->want_seq == a->seq)
				memcpy(h, s->want_hash, sizeof(h));
			else
				e = hash_at(s, a->seq, h);
			if (e == CUSTOS_ERR_NOTFOUND)
				audit_note_add(c->problem, sizeof(c->problem),
				               "the record at seq %llu, the last signed checkpoint "
				               "recorded in " AUDIT_ANCHOR_FILE
				               " (%s), is missing from the log",
				               (unsigned long long)a->seq, a->file);
			else if (e != CUSTOS_OK)
				return e;
			else if (CRYPTO_memcmp(h, a->hash, AUDIT_HASH_HEX) != 0)
				audit_note_add(c->problem, sizeof(c->problem),
				               "the record at seq %llu has hash %.16s..., "
				               "but " AUDIT_ANCHOR_FILE
				               " recorded the signed checkpoint there as "
				               "%.16s... (%s): the log was rewritten",
				               (unsigned long long)a->seq, h, a->hash, a->file);
		}
	}
	/* A sink's cursor is a second witness: it says how far the log once reached. */
	char sdir[4096];
	ENSURE((size_t)snprintf(sdir, sizeof(sdir), "%s/" AUDIT_SHIP_DIR, dir) < sizeof(sdir),
	       CUSTOS_ERR_LIMIT, "path too long");
	d = opendir(sdir);
	if (d == NULL && errno == ENOENT)
		return CUSTOS_OK; /* no sink ever ran (audit_ship_prepare makes it) */
	if (d == NULL)
		return err_sys("%s: opendir", sdir);
	while ((de = readdir(d)) != NULL) {
		uint64_t cur;
		const char *nm = de->d_name;
		if (strncmp(nm, "cursor.", 7) != 0 || strstr(nm, ".tmp") != NULL || nm[7] == '\0')
			continue;
		if (audit_cursor_read(dir, nm + 7, &cur) != CUSTOS_OK) {
			log_warn("audit: %s", err_msg());
			continue;
		}
		if (cur > (s->found ? s->seq : 0) && c->n_cursors < AUDIT_MAX_CURSORS) {
			snprintf(c->cursors[c->n_cursors], sizeof(c->cursors[0]), "%s", nm);
			c->n_cursors++;
			audit_note_add(c->problem, sizeof(c->problem),
			               AUDIT_SHIP_DIR "/%s says seq %llu was delivered to a SIEM, "
			                              "past the head "
			                              "(seq %llu)",
			               nm, (unsigned long long)cur,
			               (unsigned long long)(s->found ? s->seq : 0));
		}
	}
	closedir(d);
	return CUSTOS_OK;
}

/* ---- the shipper's directory */

/* Moves the cursor file name (in dirfd) into ship/ (sfd) unless one is there already. */
static custos_err ship_migrate(int dirfd, int sfd, const char *dir, const char *name)
{
	struct stat st;

	if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		/* ship/ is what the shipper wrote since: the old file is stale. */
		if (unlinkat(dirfd, name, 0) == -1)
			return err_sys("%s/%s: unlink", dir, name);
		log_warn("audit: %s/%s removed: %s/" AUDIT_SHIP_DIR "/%s is the sink's cursor", dir,
		         name, dir, name);
		return CUSTOS_OK;
	}
	if (errno != ENOENT)
		return err_sys("%s/" AUDIT_SHIP_DIR "/%s: stat", dir, name);
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return err_sys("%s/%s: stat", dir, name);
	ENSURE(S_ISREG(st.st_mode), CUSTOS_ERR_INVAL, "%s/%s: not a regular file", dir, name);
	if (renameat(dirfd, name, sfd, name) == -1)
		return err_sys("rename %s/%s -> %s/" AUDIT_SHIP_DIR "/%s", dir, name, dir, name);
	log_info("audit: %s/%s moved to %s/" AUDIT_SHIP_DIR "/%s (the shipper writes only there)",
	         dir, name, dir, name);
	return CUSTOS_OK;
}

custos_err audit_ship_prepare(int dirfd, const char *dir)
{
	custos_err e = CUSTOS_OK;
	bool moved = false;
	struct dirent *de;

	if (mkdirat(dirfd, AUDIT_SHIP_DIR, 0700) == -1 && errno != EEXIST)
		return err_sys("%s/" AUDIT_SHIP_DIR ": mkdir", dir);
	int sfd = openat(dirfd, AUDIT_SHIP_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd == -1)
		return err_sys("%s/" AUDIT_SHIP_DIR ": open", dir);
	if ((e = audit_own_as_dir(dirfd, sfd, AUDIT_SHIP_DIR)) != CUSTOS_OK) {
		close(sfd);
		return e;
	}
	int lfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0); /* fdopendir owns what it is given */
	DIR *d = lfd == -1 ? NULL : fdopendir(lfd);
	if (d == NULL) {
		e = err_sys("%s: opendir", dir);
		if (lfd != -1)
			close(lfd);
		close(sfd);
		return e;
	}
	rewinddir(d);
	while (e == CUSTOS_OK && (de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		if (strncmp(nm, "cursor.", 7) != 0 || nm[7] == '\0')
			continue;
		if (strstr(nm, ".tmp") != NULL)
			continue; /* an older shipper's unfinished replacement: left as it is */
		e = ship_migrate(dirfd, sfd, dir, nm);
		moved = true;
	}
	closedir(d);
	if (e == CUSTOS_OK && moved && (fsync(sfd) == -1 || fsync(dirfd) == -1))
		e = err_sys("%s: directory fsync", dir);
	close(sfd);
	return e;
}

/* ---- the operator's acceptance */

custos_err audit_accept_head(const char *dir, char *report, size_t reportsz)
{
	struct audit_log_scan s;
	struct audit_head_check c;
	audit_anchor a, acc;
	bool anchored = false;
	char damage[512];
	custos_err e;
	int dirfd, lfd;

	report[0] = '\0';
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd == -1)
		return err_sys("%s: open", dir);
	/* Never while a writer runs: the head would move under us. The lock file is the
	 * writer's; it is not created here (a root-owned one would lock the writer out). */
	lfd = openat(dirfd, "audit.lock", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (lfd == -1 && errno != ENOENT) {
		e = err_sys("%s/audit.lock: open", dir);
		goto out_dir;
	}
	if (lfd != -1 && flock(lfd, LOCK_SH | LOCK_NB) == -1) {
		e = err_set(CUSTOS_ERR_EXISTS, "%s: an audit writer is running; stop custos first",
		            dir);
		goto out_lock;
	}
	/* An older custos' cursors are checked where the next start will look for them. */
	e = audit_ship_prepare(dirfd, dir);
	if (e != CUSTOS_OK)
		goto out_lock;
	e = audit_anchor_load(dirfd, &a, &anchored, damage, sizeof(damage));
	if (e != CUSTOS_OK)
		goto out_lock;
	e = audit_log_scan(dir, anchored ? a.seq : 0, &s);
	if (e != CUSTOS_OK)
		goto out_lock;
	e = audit_head_check(dir, &s, &a, anchored, damage, &c);
	if (e != CUSTOS_OK)
		goto out_scan;
	if (c.problem[0] == '\0') {
		snprintf(report, reportsz, "nothing to accept: the log head matches %s",
		         anchored ? AUDIT_ANCHOR_FILE " and the cursors" : "the cursors");
		unlinkat(dirfd, AUDIT_ACCEPT_FILE, 0); /* a stale acceptance */
		goto out_scan;
	}
	memset(&acc, 0, sizeof(acc));
	if (s.found) {
		acc.seq = s.seq;
		memcpy(acc.hash, s.head, sizeof(acc.hash));
		snprintf(acc.file, sizeof(acc.file), "%s", strrchr(s.paths[s.found_fi], '/') + 1);
	} else {
		/* No record at all: the acceptance names genesis. */
		acc.seq = 0;
		memcpy(acc.hash, AUDIT_GENESIS_PREV, sizeof(acc.hash));
		audit_file_name(1, acc.file);
	}
	/* Readable by the writer's user when root runs this (a seq and a hash, no secret). */
	e = anchor_write(dirfd, AUDIT_ACCEPT_FILE, &acc, 0644);
	if (e != CUSTOS_OK)
		goto out_scan;
	snprintf(report, reportsz,
	         "accepted the log head at seq %llu: %s. The next start continues the chain there "
	         "and records this in its recovery event",
	         (unsigned long long)acc.seq, c.problem);
out_scan:
	audit_log_scan_free(&s);
out_lock:
	if (lfd != -1)
		close(lfd);
out_dir:
	close(dirfd);
	return e;
}
