/*
 * The writer process: the only writer of the log and the only holder of the signing key.
 * It receives batches of event bodies from the client over a SEQPACKET socket, checks each
 * body (the trust boundary: a worker may add events, never frame or sign them), chains and
 * appends them with one write + fdatasync per group, acks the group, writes signed
 * checkpoints, rotates files and recovers a torn tail at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "audit_int.h"

#define WRITER_OUT_MAX     (16u * 1024 * 1024)
#define WRITER_PENDING_MAX (4u * 1024 * 1024) /* raw bytes drained per group */
#define WRITER_RETRY_NS    (500ull * 1000 * 1000)
#define WRITER_PACE_BYTES  (1024u * 1024) /* batch mode: commit at once past this much */

struct wstate {
	const audit_options *o;
	int dirfd, fd;
	uint64_t file_first, file_bytes, file_opened;
	uint64_t seq;
	uint64_t fsyncs, fsync_ns, fsync_buckets[AUDIT_FSYNC_BUCKETS]; /* commit latency */
	char head[AUDIT_HASH_HEX + 1];
	uint64_t since_ckpt, last_ckpt;
	uint64_t linger; /* audit_linger_ns: batch mode's commit deadline after a first event */
	uint64_t due;    /* when what is pending must be committed (UINT64_MAX: nothing) */
	EVP_PKEY *key;
	char key_id[17];
	buf out;  /* lines of the group being committed */
	buf body; /* a compact record rendered to its JSON body */
	EVP_MD_CTX *md_ctx;
	EVP_MD *sha256;
	buf pending; /* raw records (u32 len + body) not yet durable */
	uint64_t pending_gen, acked_gen;
	bool failing;
	char fail_msg[512];
	/* The last checkpoint added (due: not yet durable) and the last one made durable (ready:
	 * to be written to DIR/audit.head once the producers have their acknowledgement). */
	audit_anchor anchor, anchor_durable;
	bool anchor_due, anchor_ready;
	uint64_t anchor_last; /* when audit.head was last written (mono ns) */
	char prev_key_id[17]; /* key_id of the anchor found at start ("" if none) */
};

/* Where the chain stood, to go back to when what was added after it could not be made
 * durable: the next record then follows what is on disk. */
struct chain_mark {
	uint64_t seq, since_ckpt, last_ckpt;
	char head[AUDIT_HASH_HEX + 1];
};

static void chain_mark(const struct wstate *w, struct chain_mark *m)
{
	m->seq = w->seq;
	m->since_ckpt = w->since_ckpt;
	m->last_ckpt = w->last_ckpt;
	memcpy(m->head, w->head, sizeof(m->head));
}

static void chain_rewind(struct wstate *w, const struct chain_mark *m)
{
	w->anchor_due = false; /* a checkpoint after the mark was never made durable */
	w->seq = m->seq;
	w->since_ckpt = m->since_ckpt;
	w->last_ckpt = m->last_ckpt;
	memcpy(w->head, m->head, sizeof(w->head));
}

static custos_err open_file(struct wstate *w, uint64_t first)
{
	char name[64];
	struct stat st;

	audit_file_name(first, name);
	w->fd = openat(w->dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
	               0600);
	if (w->fd == -1)
		return err_sys("%s/%s: open", w->o->dir, name);
	GUARD(audit_own_as_dir(w->dirfd, w->fd, name));
	if (fstat(w->fd, &st) == -1)
		return err_sys("%s/%s: stat", w->o->dir, name);
	w->file_first = first;
	w->file_bytes = (uint64_t)st.st_size;
	w->file_opened = tm_mono_ns();
	if (fsync(w->dirfd) == -1)
		return err_sys("%s: fsync", w->o->dir);
	return CUSTOS_OK;
}

/* Appends body as the next record to w->out, advancing seq and head. */
static custos_err add_line(struct wstate *w, span body)
{
	char h[AUDIT_HASH_HEX + 1];
	GUARD(audit_line_build_md(&w->out, w->seq + 1, body, w->head, h, w->md_ctx, w->sha256));
	w->seq++;
	memcpy(w->head, h, sizeof(h));
	w->since_ckpt++;
	return CUSTOS_OK;
}

/* A checkpoint over the chain head. Signed (format 2, docs/AUDIT.md 1.2) over the record's own
 * bytes up to its final sig member, so its seq, reason and key are covered, not only the head. */
static custos_err add_checkpoint(struct wstate *w, const char *reason)
{
	audit_event ev;
	char sig[129], body[1024], sp[1024];

	audit_event_begin(&ev, "checkpoint");
	audit_event_cstr(&ev, "reason", reason);
	audit_event_u64(&ev, "signed_seq", w->seq);
	audit_event_cstr(&ev, "signed_hash", w->head);
	if (w->key != NULL)
		audit_event_cstr(&ev, "key_id", w->key_id);
	GUARD(audit_event_end(&ev));
	span b = audit_event_body(&ev);
	if (w->key != NULL) {
		int pn = snprintf(sp, sizeof(sp), AUDIT_LINE_PREFIX "%llu,%.*s",
		                  (unsigned long long)(w->seq + 1), (int)b.len, b.ptr);
		ENSURE(pn > 0 && (size_t)pn < sizeof(sp), CUSTOS_ERR_LIMIT, "checkpoint too long");
		GUARD(audit_ckpt_sign(w->key, span_of(sp, (size_t)pn), sig));
		int bn = snprintf(body, sizeof(body), "%.*s" AUDIT_CKPT_SIG_KEY "%s\"", (int)b.len,
		                  b.ptr, sig);
		ENSURE(bn > 0 && (size_t)bn < sizeof(body), CUSTOS_ERR_LIMIT,
		       "checkpoint too long");
		b = span_of(body, (size_t)bn);
	}
	GUARD(add_line(w, b));
	w->since_ckpt = 0;
	w->last_ckpt = tm_mono_ns();
	w->anchor.seq = w->seq;
	memcpy(w->anchor.hash, w->head, sizeof(w->anchor.hash));
	audit_file_name(w->file_first, w->anchor.file);
	memcpy(w->anchor.key_id, w->key != NULL ? w->key_id : "", w->key != NULL ? 17 : 1);
	w->anchor_due = true;
	return CUSTOS_OK;
}

/* Writes w->out and makes it durable; on failure the file is cut back so it stays intact. */
const uint64_t audit_fsync_bounds_ns[AUDIT_FSYNC_BUCKETS] = {
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 100000000, 1000000000
};

static custos_err commit(struct wstate *w)
{
	span s = buf_span(&w->out);
	custos_err e;

	if (s.len == 0)
		return CUSTOS_OK;
	e = file_write_all(w->fd, s.ptr, s.len);
	if (e == CUSTOS_OK) {
		uint64_t t0 = tm_mono_ns();
		if (fdatasync(w->fd) == -1)
			e = err_sys("fdatasync");
		uint64_t d = tm_mono_ns() - t0;
		w->fsyncs++;
		w->fsync_ns += d;
		for (size_t i = 0; i < AUDIT_FSYNC_BUCKETS; i++)
			if (d <= audit_fsync_bounds_ns[i])
				w->fsync_buckets[i]++;
	}
	if (e != CUSTOS_OK) {
		w->anchor_due = false;
		err_wrap(e, "%s", w->o->dir);
		if (ftruncate(w->fd, (off_t)w->file_bytes) == -1)
			log_error("audit: cutting back after a failed write: %s", strerror(errno));
		return e;
	}
	w->file_bytes += s.len;
	buf_reset(&w->out);
	if (w->anchor_due) {
		w->anchor_durable = w->anchor;
		w->anchor_due = false;
		w->anchor_ready = true;
	}
	return CUSTOS_OK;
}

/* Records the last durable checkpoint in DIR/audit.head (two fsyncs: after the ack, off the
 * producers' path). The records are durable whatever happens here; a failed anchor only lags
 * (the next checkpoint writes it again), so it is logged, not failed closed. */
static void anchor_flush(struct wstate *w, bool force)
{
	if (!w->anchor_ready)
		return;
	/* At most once a second (checkpoints can come a hundred times a second at the default
	 * every_events under load, each anchor two fsyncs); start and shutdown always write it. */
	uint64_t now = tm_mono_ns();
	if (!force && w->anchor_last && now - w->anchor_last < AUDIT_ANCHOR_MIN_NS)
		return;
	w->anchor_last = now;
	w->anchor_ready = false;
	if (audit_anchor_write(w->dirfd, AUDIT_ANCHOR_FILE, &w->anchor_durable) != CUSTOS_OK)
		log_error("audit: %s/" AUDIT_ANCHOR_FILE ": %s", w->o->dir, err_msg());
}

/* A checkpoint committed on its own (an idle interval, shutdown). On failure the chain goes
 * back to the last durable record, so that the next record follows what is on disk. */
static custos_err checkpoint_commit(struct wstate *w, const char *reason)
{
	struct chain_mark m;

	chain_mark(w, &m);
	custos_err e = add_checkpoint(w, reason);
	if (e == CUSTOS_OK)
		e = commit(w);
	if (e != CUSTOS_OK) {
		buf_reset(&w->out);
		chain_rewind(w, &m);
	}
	return e;
}

/* Seals the current file with a checkpoint and continues the chain in a new file named by
 * the next seq. The new file is created first so a failure leaves the old one in use. */
static custos_err rotate(struct wstate *w)
{
	char name[64];
	int old = w->fd, nfd;

	audit_file_name(w->seq + 2, name);
	nfd = openat(w->dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (nfd == -1)
		return err_sys("%s/%s: open", w->o->dir, name);
	if (audit_own_as_dir(w->dirfd, nfd, name) != CUSTOS_OK) {
		close(nfd);
		unlinkat(w->dirfd, name, 0);
		return CUSTOS_ERR_SYS;
	}
	struct chain_mark m;
	chain_mark(w, &m);
	custos_err e = add_checkpoint(w, "rotate");
	if (e == CUSTOS_OK)
		e = commit(w);
	if (e != CUSTOS_OK) {
		chain_rewind(w, &m);
	} else if (fsync(w->dirfd) == -1) {
		/* The seal is durable in the old file: the chain stays past it (rolling back would
		 * give the next record the seal's seq and predecessor again). The old file goes on;
		 * the rotation is retried with a new seal once the directory syncs. */
		e = err_sys("%s: fsync", w->o->dir);
	}
	if (e != CUSTOS_OK) {
		close(nfd);
		unlinkat(w->dirfd, name, 0);
		return e;
	}
	close(old);
	w->fd = nfd;
	w->file_first = w->seq + 1;
	w->file_bytes = 0;
	w->file_opened = tm_mono_ns();
	return CUSTOS_OK;
}

static bool rotation_due(const struct wstate *w)
{
	if (w->file_bytes == 0)
		return false;
	if (w->o->rotate_bytes && w->file_bytes >= w->o->rotate_bytes)
		return true;
	return w->o->rotate_ns && tm_mono_ns() - w->file_opened >= w->o->rotate_ns;
}

/* Renders raw records from w->pending into w->out until all are done or the file reaches
 * its size limit; *consumed says how many raw bytes were used. A body that fails the checks is
 * not dropped silently: an audit.invalid event records its size and the reason instead. */
static custos_err render_pending(struct wstate *w, size_t *consumed)
{
	span p = buf_span(&w->pending);
	size_t i = 0;

	while (i < p.len) {
		if (w->o->rotate_bytes && buf_used(&w->out) > 0 &&
		    w->file_bytes + buf_used(&w->out) >= w->o->rotate_bytes)
			break;
		uint32_t len;
		memcpy(&len, p.ptr + i, 4);
		span body = span_of(p.ptr + i + 4, len);
		i += 4 + len;
		custos_err ce;
		if (len > 0 && (uint8_t)body.ptr[0] == AUDIT_REC_MAGIC) {
			/* A compact record: rendered here, checked by construction. */
			buf_reset(&w->body);
			ce = audit_rec_render(body, &w->body);
			body = buf_span(&w->body);
		} else {
			ce = audit_body_check(body, false);
		}
		if (ce == CUSTOS_OK) {
			GUARD(add_line(w, body));
		} else {
			audit_event ev;
			audit_event_begin(&ev, "audit.invalid");
			audit_event_u64(&ev, "size", len);
			audit_event_cstr(&ev, "reason", err_msg());
			GUARD(audit_event_end(&ev));
			GUARD(add_line(w, audit_event_body(&ev)));
		}
		if (w->o->checkpoint_events && w->since_ckpt >= w->o->checkpoint_events)
			GUARD(add_checkpoint(w, "interval"));
	}
	/* Under steady traffic the writer is never idle: time-based checkpoints go here. */
	if (w->o->checkpoint_ns && w->since_ckpt > 0 &&
	    tm_mono_ns() - w->last_ckpt >= w->o->checkpoint_ns)
		GUARD(add_checkpoint(w, "interval"));
	*consumed = i;
	return CUSTOS_OK;
}

static void send_ack(struct wstate *w, int sock, custos_err status)
{
	struct audit_ack a;

	memset(&a, 0, sizeof(a));
	a.kind = AUDIT_MSG_ACK;
	a.status = (int32_t)status;
	a.gen = w->acked_gen;
	a.seq = w->seq;
	a.fsyncs = w->fsyncs;
	a.fsync_ns = w->fsync_ns;
	memcpy(a.fsync_buckets, w->fsync_buckets, sizeof(a.fsync_buckets));
	if (status != CUSTOS_OK)
		snprintf(a.msg, sizeof(a.msg), "%s", w->fail_msg);
	while (send(sock, &a, sizeof(a), MSG_NOSIGNAL) == -1 && errno == EINTR)
		;
}

/* The log takes records again: producers hear it with the acknowledgement. */
static void writing_again(struct wstate *w, int sock)
{
	if (w->failing)
		log_info("audit: writing again after: %s", w->fail_msg);
	w->failing = false;
	send_ack(w, sock, CUSTOS_OK);
}

/* A write or sync failed: producers are told (they fail closed) and the writer retries. */
static void writing_failed(struct wstate *w, int sock, custos_err e)
{
	if (!w->failing)
		log_error("audit: cannot write the log, failing closed: %s", err_msg());
	snprintf(w->fail_msg, sizeof(w->fail_msg), "%s", err_msg());
	w->failing = true;
	send_ack(w, sock, e);
}

/* Group commit of everything pending (in more than one write when a rotation falls inside
 * it). On failure the chain state goes back to the last durable record and the records not
 * yet durable stay pending for a retry. */
static custos_err process_pending(struct wstate *w, int sock)
{
	struct chain_mark m;
	custos_err e = CUSTOS_OK;

	while (buf_used(&w->pending) > 0) {
		size_t consumed = 0;
		if (rotation_due(w)) {
			e = rotate(w);
			if (e != CUSTOS_OK) {
				buf_reset(&w->out);
				goto fail_nostate;
			}
		}
		chain_mark(w, &m);
		e = render_pending(w, &consumed);
		if (e == CUSTOS_OK)
			e = commit(w);
		if (e != CUSTOS_OK) {
			buf_reset(&w->out);
			chain_rewind(w, &m);
			goto fail_nostate;
		}
		buf_consume(&w->pending, consumed);
	}
	buf_reset(&w->pending);
	w->acked_gen = w->pending_gen;
	writing_again(w, sock);
	return CUSTOS_OK;
fail_nostate:
	writing_failed(w, sock, e);
	return e;
}

/* What recover found, for the recovery or audit.start event. */
struct start_note {
	char reason[1536]; /* "" when the log ended with a clean shutdown and nothing else */
	char anchor[1280]; /* what the head was checked against */
	uint64_t cut;      /* bytes of a torn tail cut */
	bool accepted;     /* the operator accepted a head below the anchor or a cursor */
	struct audit_head_check check;
};

/* Checks the head against the anchor and the cursors (nothing is changed before these pass),
 * then cuts a torn tail of the last file, removes an empty file left by a crash during
 * rotation and opens the file to append to. */
static custos_err recover(struct wstate *w, struct start_note *sn)
{
	struct audit_log_scan s;
	audit_anchor a, acc;
	bool anchored = false, acc_here = false;
	char damage[512];
	custos_err e;

	memset(sn, 0, sizeof(*sn));
	GUARD(audit_anchor_load(w->dirfd, &a, &anchored, damage, sizeof(damage)));
	GUARD(audit_anchor_read(w->dirfd, AUDIT_ACCEPT_FILE, &acc, &acc_here));
	GUARD(audit_log_scan(w->o->dir, anchored ? a.seq : 0, &s));
	e = audit_head_check(w->o->dir, &s, &a, anchored, damage, &sn->check);
	if (e != CUSTOS_OK)
		goto out;
	if (anchored)
		memcpy(w->prev_key_id, a.key_id, sizeof(w->prev_key_id));
	uint64_t head_seq = s.found ? s.seq : 0;
	const char *head_hash = s.found ? s.head : AUDIT_GENESIS_PREV;
	if (sn->check.problem[0] != '\0') {
		if (!acc_here || acc.seq != head_seq ||
		    CRYPTO_memcmp(acc.hash, head_hash, AUDIT_HASH_HEX) != 0) {
			e = err_set(CUSTOS_ERR_DENIED,
			            "%s: %s; refusing to write. Restore the log from a copy, or "
			            "accept this head with: custos audit accept-head %s%s",
			            w->o->dir, sn->check.problem, w->o->dir,
			            acc_here ? " (" AUDIT_ACCEPT_FILE " is for another head)" : "");
			goto out;
		}
		sn->accepted = true;
		audit_note_add(
		        sn->reason, sizeof(sn->reason),
		        "the operator accepted the head at seq %llu (custos audit accept-head): %s",
		        (unsigned long long)head_seq, sn->check.problem);
		snprintf(sn->anchor, sizeof(sn->anchor), "accepted at seq %llu by the operator",
		         (unsigned long long)head_seq);
	} else if (anchored) {
		snprintf(sn->anchor, sizeof(sn->anchor),
		         "the log reaches the last checkpoint recorded in " AUDIT_ANCHOR_FILE
		         " (seq %llu in %s)",
		         (unsigned long long)a.seq, a.file);
	} else {
		snprintf(sn->anchor, sizeof(sn->anchor),
		         s.n > 0 ? "none: no " AUDIT_ANCHOR_FILE " (written since this version; or "
		                   "removed)"
		                 : "none: a new log");
	}
	if (s.n > 0 && s.last_size > s.last_good_end) {
		const char *last = s.paths[s.n - 1];
		sn->cut = s.last_size - s.last_good_end;
		if (truncate(last, (off_t)s.last_good_end) == -1) {
			e = err_sys("%s: truncate", last);
			goto out;
		}
		audit_note_add(sn->reason, sizeof(sn->reason),
		               "torn record cut from %s (%llu bytes at offset %llu)",
		               strrchr(last, '/') + 1, (unsigned long long)sn->cut,
		               (unsigned long long)s.last_good_end);
	}
	if (s.n > 0 && !s.clean)
		audit_note_add(sn->reason, sizeof(sn->reason),
		               "the log did not end with a shutdown checkpoint");
	w->seq = head_seq;
	memcpy(w->head, head_hash, sizeof(w->head));
	w->file_first = s.n > 0 ? s.last_first : 1;
	if (s.n > 1 && s.found && s.found_fi != s.n - 1 && w->file_first != w->seq + 1) {
		/* A crash between creating a rotated file and sealing the old one leaves an
		 * empty file named past the chain head: remove it and go on in the old one. */
		uint64_t first;
		if (unlink(s.paths[s.n - 1]) == -1) {
			e = err_sys("%s: unlink", s.paths[s.n - 1]);
			goto out;
		}
		if (!audit_file_name_parse(strrchr(s.paths[s.found_fi], '/') + 1, &first)) {
			e = err_set(CUSTOS_ERR_INTERNAL, "bad file name");
			goto out;
		}
		w->file_first = first;
	}
	/* Appends go on in the last file (named by its first seq), or a first file. */
	e = open_file(w, w->file_first);
out:
	audit_log_scan_free(&s);
	return e;
}

/* After the operator's acceptance is in the trail: cursors past the head go back to it, so
 * sinks send the records that now follow it instead of skipping them; the acceptance is
 * used up. */
static void accepted_done(struct wstate *w, const struct start_note *sn, uint64_t head_seq)
{
	char v[32];
	int n = snprintf(v, sizeof(v), "%llu\n", (unsigned long long)head_seq);

	int sfd = sn->check.n_cursors == 0
	                  ? -1
	                  : openat(w->dirfd, AUDIT_SHIP_DIR,
	                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sn->check.n_cursors > 0 && sfd == -1)
		log_error("audit: %s/" AUDIT_SHIP_DIR ": open: %s", w->o->dir, strerror(errno));
	for (size_t i = 0; sfd != -1 && i < sn->check.n_cursors; i++) {
		if (audit_file_write_at(sfd, sn->check.cursors[i], v, (size_t)n, 0600) != CUSTOS_OK)
			log_error("audit: %s", err_msg());
		else
			log_warn("audit: %s/" AUDIT_SHIP_DIR "/%s moved back to seq %llu (accepted "
			         "head): the sink resends from there",
			         w->o->dir, sn->check.cursors[i], (unsigned long long)head_seq);
	}
	if (sfd != -1)
		close(sfd);
	if (unlinkat(w->dirfd, AUDIT_ACCEPT_FILE, 0) == -1 && errno != ENOENT)
		log_error("audit: %s/" AUDIT_ACCEPT_FILE ": unlink: %s", w->o->dir,
		          strerror(errno));
}

static void report_ready(int fd, custos_err e, uint64_t seq)
{
	struct audit_ack a;
	memset(&a, 0, sizeof(a));
	a.kind = AUDIT_MSG_ACK;
	a.status = (int32_t)e;
	a.seq = seq;
	if (e != CUSTOS_OK)
		snprintf(a.msg, sizeof(a.msg), "%s", err_msg());
	(void)!write(fd, &a, sizeof(a));
	close(fd);
}

/* The published public key must be the signing key's own half: otherwise every checkpoint
 * would fail `custos audit verify --pubkey` with the key operators hold. */
static custos_err check_public_key(const char *path, EVP_PKEY *key, const char *key_path)
{
	uint8_t a[32], b[32];
	size_t an = sizeof(a), bn = sizeof(b);
	EVP_PKEY *pub = NULL;

	ENSURE(key != NULL, CUSTOS_ERR_INVAL,
	       "public key %s is set but no signing key: checkpoints would be unsigned", path);
	GUARD(audit_key_load_public(path, &pub));
	bool same = EVP_PKEY_get_raw_public_key(pub, a, &an) == 1 &&
	            EVP_PKEY_get_raw_public_key(key, b, &bn) == 1 && an == bn &&
	            memcmp(a, b, an) == 0;
	EVP_PKEY_free(pub);
	ENSURE(same, CUSTOS_ERR_CRYPTO, "public key %s is not the public half of signing key %s",
	       path, key_path);
	return CUSTOS_OK;
}

static custos_err writer_setup(struct wstate *w)
{
	struct start_note *sn;
	audit_event ev;
	custos_err e;

	if (w->o->signing_key != NULL) {
		GUARD(audit_key_load_private(w->o->signing_key, &w->key));
		GUARD(audit_key_id(w->key, w->key_id));
	}
	if (w->o->public_key != NULL)
		GUARD(check_public_key(w->o->public_key, w->key, w->o->signing_key));
	if (mkdir(w->o->dir, 0700) == -1 && errno != EEXIST)
		return err_sys("%s: mkdir", w->o->dir);
	w->dirfd = open(w->o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd == -1)
		return err_sys("%s: open", w->o->dir);
	/* One writer per log: a second custos, or a killed writer still finishing its last
	 * write(), must not interleave with us. The lock dies with the process. */
	int lfd = openat(w->dirfd, "audit.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lfd == -1)
		return err_sys("%s/audit.lock: open", w->o->dir);
	for (int i = 0;; i++) {
		if (flock(lfd, LOCK_EX | LOCK_NB) == 0)
			break;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return err_sys("%s/audit.lock: flock", w->o->dir);
		if (i >= 100)
			return err_set(CUSTOS_ERR_EXISTS, "%s: another audit writer holds the log",
			               w->o->dir);
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	/* The cursors an older custos kept in the directory itself move to ship/ before they
	 * are checked, and before the shipper (which may write only there) starts. */
	GUARD(audit_ship_prepare(w->dirfd, w->o->dir));
	memcpy(w->head, AUDIT_GENESIS_PREV, sizeof(w->head));
	sn = calloc(1, sizeof(*sn));
	if (sn == NULL)
		return err_set(CUSTOS_ERR_NOMEM, "audit writer");
	e = recover(w, sn);
	if (e != CUSTOS_OK) {
		log_error("audit: %s", err_msg()); /* in full: the client's copy is bounded */
		goto out;
	}
	uint64_t head_seq = w->seq;
	if (sn->reason[0] != '\0') {
		audit_event_begin(&ev, "recovery");
		audit_event_cstr(&ev, "reason", sn->reason);
		audit_event_u64(&ev, "cut_bytes", sn->cut);
		audit_event_u64(&ev, "last_seq", w->seq);
	} else {
		audit_event_begin(&ev, "audit.start");
	}
	audit_event_cstr(&ev, "anchor", sn->anchor);
	audit_event_u64(&ev, "pid", (uint64_t)getpid());
	audit_event_bool(&ev, "signed", w->key != NULL);
	if (w->key != NULL && w->prev_key_id[0] != '\0' && strcmp(w->prev_key_id, w->key_id) != 0) {
		/* A key rotation: the previous checkpoints were signed by this key. */
		audit_event_cstr(&ev, "previous_key_id", w->prev_key_id);
		log_info("audit: signing key changed from %s to %s", w->prev_key_id, w->key_id);
	}
	e = audit_event_end(&ev);
	if (e == CUSTOS_OK)
		e = add_line(w, audit_event_body(&ev));
	if (e == CUSTOS_OK)
		e = add_checkpoint(w, "start");
	if (e == CUSTOS_OK)
		e = commit(w);
	if (e != CUSTOS_OK)
		goto out;
	anchor_flush(w, true);
	if (sn->accepted)
		accepted_done(w, sn, head_seq);
	if (w->o->confine != NULL)
		e = w->o->confine(w->o->confine_arg, w->dirfd);
out:
	free(sn);
	return e;
}

/* Receives what is waiting (up to WRITER_PENDING_MAX) into w->pending. Returns false once the
 * client said stop or went away. */
static bool drain(struct wstate *w, int sock, uint8_t *msg, bool wait)
{
	for (;;) {
		if (buf_used(&w->pending) >= WRITER_PENDING_MAX)
			return true;
		ssize_t n = recv(sock, msg, AUDIT_MSG_MAX, wait ? 0 : MSG_DONTWAIT);
		wait = false;
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n <= 0)
			return false;
		struct audit_msg_hdr h;
		if ((size_t)n < sizeof(h)) {
			log_error("audit: short message from the client");
			return false;
		}
		memcpy(&h, msg, sizeof(h));
		if ((h.kind & 0xff) == AUDIT_MSG_STOP)
			return false;
		if ((h.kind & 0xff) != AUDIT_MSG_BATCH) {
			log_error("audit: unknown message kind %u", h.kind);
			return false;
		}
		/* Check the framing before taking anything from it. */
		size_t at = sizeof(h), cnt = 0;
		while (at + 4 <= (size_t)n) {
			uint32_t len;
			memcpy(&len, msg + at, 4);
			if (len > AUDIT_MAX_EVENT || at + 4 + len > (size_t)n)
				break;
			at += 4 + len;
			cnt++;
		}
		if (at != (size_t)n || cnt != h.count) {
			log_error("audit: malformed batch from the client; closing");
			return false;
		}
		if (buf_append(&w->pending, msg + sizeof(h), (size_t)n - sizeof(h)) != CUSTOS_OK) {
			log_error("audit: %s", err_msg());
			return false;
		}
		if (h.kind & AUDIT_MSG_LAST)
			w->pending_gen = h.gen;
		/* The commit deadline: the oldest record's first_ns + linger, the client's clock
		 * clamped to [now - linger, now] so that it can neither postpone a commit past one
		 * linger after arrival nor claim records older than that. The messages of a group
		 * follow each other at once: its earlier ones wait for its last one (or the
		 * linger), so that one group is one commit. */
		uint64_t now = tm_mono_ns(), first = h.first_ns;
		if (first == 0 || first + w->linger < now)
			first = now - w->linger;
		else if (first > now)
			first = now;
		if (!(h.kind & AUDIT_MSG_LAST) && h.count > 0)
			first = now;
		if ((h.count > 0 || h.first_ns == 0) && first + w->linger < w->due)
			w->due = first + w->linger;
	}
}

int audit_writer_main(const audit_options *o, int sock, int ready_fd)
{
	struct wstate w;
	uint8_t *msg = NULL;
	custos_err e;
	bool open = true;

	memset(&w, 0, sizeof(w));
	w.o = o;
	w.fd = w.dirfd = -1;
	buf_init(&w.out, WRITER_OUT_MAX);
	buf_init(&w.body, AUDIT_MAX_EVENT);
	w.md_ctx = EVP_MD_CTX_new();
	w.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	buf_init(&w.pending, WRITER_PENDING_MAX + AUDIT_MSG_MAX);
	proc_name_self("custos-audit");
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN); /* a file size limit fails the write (EFBIG), closed */
	audit_close_fds_except(sock, ready_fd);
	/* No privilege gain through exec, and no ptrace/core dump by a same-uid worker. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 || prctl(PR_SET_DUMPABLE, 0) == -1) {
		e = err_sys("prctl");
		report_ready(ready_fd, e, 0);
		return 1;
	}
	if (o->durability == AUDIT_DURABILITY_BATCH)
		audit_sched_batch();
	if (w.md_ctx == NULL || w.sha256 == NULL)
		e = err_set(CUSTOS_ERR_CRYPTO, "audit: SHA-256 unavailable");
	else
		e = writer_setup(&w);
	report_ready(ready_fd, e, w.seq);
	if (e != CUSTOS_OK)
		goto out;
	/* Batch mode: what is pending is committed when its oldest record has waited one linger
	 * (half the window) since it entered the client's queue. The client ships a group after
	 * the same linger, so under steady load each message is committed as it arrives, one
	 * write + fdatasync per linger; groups shipped early (full) wait for the next ones.
	 * Sync mode: linger 0, every message is committed at once. */
	w.linger = audit_linger_ns(o);
	w.due = UINT64_MAX;
	msg = malloc(AUDIT_MSG_MAX);
	if (msg == NULL)
		goto out;
	uint64_t next_retry = 0;
	while (open || buf_used(&w.pending) > 0) {
		uint64_t now = tm_mono_ns(), wait_ns = UINT64_MAX;
		bool room = buf_used(&w.pending) < WRITER_PENDING_MAX;
		if (w.failing)
			wait_ns = next_retry > now ? next_retry - now : 0;
		else if (o->checkpoint_ns && w.since_ckpt > 0)
			wait_ns = w.last_ckpt + o->checkpoint_ns > now
			                  ? w.last_ckpt + o->checkpoint_ns - now
			                  : 0;
		bool pacing = w.linger > 0 && open && !w.failing && buf_used(&w.pending) > 0 &&
		              buf_used(&w.pending) < WRITER_PACE_BYTES && now < w.due;
		if (pacing && w.due - now < wait_ns)
			wait_ns = w.due - now;
		if (open) {
			/* While failing with a full backlog, listen only for the client going
			 * away: it must be able to stop us even when the disk never recovers. */
			struct pollfd p = { .fd = sock, .events = room ? POLLIN : 0 };
			struct timespec ts = { (time_t)(wait_ns / 1000000000ull),
				               (long)(wait_ns % 1000000000ull) };
			int r = ppoll(&p, 1, wait_ns == UINT64_MAX ? NULL : &ts, NULL);
			if (r == -1 && errno != EINTR)
				break;
			if (r > 0 && room && (p.revents & (POLLIN | POLLHUP)))
				open = drain(&w, sock, msg, true);
			else if (r > 0 && (p.revents & (POLLHUP | POLLERR)))
				open = false;
		} else if (w.failing && wait_ns > 0) {
			struct timespec ts = { (time_t)(wait_ns / 1000000000ull),
				               (long)(wait_ns % 1000000000ull) };
			nanosleep(&ts, NULL);
		}
		if (w.failing && tm_mono_ns() < next_retry)
			continue;
		if (w.linger > 0 && open && !w.failing && buf_used(&w.pending) > 0 &&
		    buf_used(&w.pending) < WRITER_PACE_BYTES && tm_mono_ns() < w.due)
			continue; /* let the group fill until its commit is due */
		if (buf_used(&w.pending) > 0) {
			if (process_pending(&w, sock) == CUSTOS_OK) {
				w.due = UINT64_MAX;
				anchor_flush(&w, false);
			} else {
				next_retry = tm_mono_ns() + WRITER_RETRY_NS;
				if (!open)
					break; /* the client is gone and the disk refuses */
			}
		} else if (o->checkpoint_ns && w.since_ckpt > 0 &&
		           tm_mono_ns() - w.last_ckpt >= o->checkpoint_ns) {
			/* Idle: the interval checkpoint on its own. A disk that refuses it
			 * refuses records too: fail closed, and retry it (when failing, this
			 * is reached once next_retry has passed). */
			custos_err ce = checkpoint_commit(&w, "interval");
			if (ce == CUSTOS_OK) {
				if (w.failing)
					writing_again(&w, sock);
				anchor_flush(&w, false);
			} else {
				writing_failed(&w, sock, ce);
				next_retry = tm_mono_ns() + WRITER_RETRY_NS;
			}
		}
	}
	if (!w.failing) {
		if (checkpoint_commit(&w, "shutdown") == CUSTOS_OK)
			send_ack(&w, sock, CUSTOS_OK);
		else
			log_error("audit: sealing the log: %s", err_msg());
	}
	anchor_flush(&w, true);
out:
	free(msg);
	buf_free(&w.out);
	buf_free(&w.body);
	buf_free(&w.pending);
	EVP_MD_CTX_free(w.md_ctx);
	EVP_MD_free(w.sha256);
	EVP_PKEY_free(w.key);
	if (w.fd >= 0)
		close(w.fd);
	if (w.dirfd >= 0)
		close(w.dirfd);
	close(sock);
	return e == CUSTOS_OK ? 0 : 1;
}
