/*
 * Offline verification: walks the files in chain order and checks every record's framing,
 * seq, link to its predecessor and hash, and every checkpoint's Ed25519 signature; stops at
 * the first problem and says where it is and what is wrong. The trail must also reach each
 * anchor it is checked against (DIR/audit.head, the writer's last durable checkpoint): a log cut
 * back below it, or whose newest files were removed, is not intact though what is left chains.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "audit_int.h"

CUSTOS_PRINTF(5, 6)
static void bad(audit_verify_result *r, const char *file, uint64_t line, uint64_t seq,
                const char *fmt, ...)
{
	va_list ap;

	r->ok = false;
	snprintf(r->bad_file, sizeof(r->bad_file), "%s", file);
	r->bad_line = line;
	r->bad_seq = seq;
	va_start(ap, fmt);
	vsnprintf(r->what, sizeof(r->what), fmt, ap);
	va_end(ap);
}

/* An anchor the trail must reach: the record at a.seq, with a.hash, in the file a.file. */
struct vhead {
	audit_anchor a;
	char path[PATH_MAX]; /* where it was read, for the report */
	bool reached;
};

struct vstate {
	EVP_PKEY *keys[AUDIT_VERIFY_MAX_KEYS];
	size_t nkeys;
	struct vhead *heads;
	size_t nheads;
	bool started;
	uint64_t seq;
	char head[AUDIT_HASH_HEX + 1];
	bool last_sealed;
	bool last_v1_shutdown; /* the last record is a format 1 shutdown checkpoint */
	const char *last_file; /* where the last record is */
	uint64_t last_line;
	/* With keys, what the writer always does: it follows each audit.start or recovery
	 * event with a signed start checkpoint, and the signing key changes only there. */
	bool want_start;  /* the previous record was audit.start or recovery */
	ssize_t last_key; /* the key of the last checkpoint (-1: none yet) */
};

/* Checks a checkpoint: it must sign its predecessor, and with keys its signature must verify
 * under the key its key_id names. *seal: a format 2 shutdown checkpoint (or, without keys,
 * any shutdown checkpoint: nothing is authenticated then). A format 1 signature covers only
 * the head, not the reason, so it never seals. */
static void check_checkpoint(struct vstate *v, audit_verify_result *r, span line,
                             const audit_line *l, const char *file, uint64_t ln, bool *seal)
{
	span sseq, shash, sig, kid, reason;
	uint64_t signed_seq;
	char hex[AUDIT_HASH_HEX + 1];

	*seal = false;
	v->last_v1_shutdown = false;
	if (ajson_get(line, "signed_seq", &sseq) != CUSTOS_OK ||
	    ajson_u64(sseq, &signed_seq) != CUSTOS_OK ||
	    ajson_get(line, "signed_hash", &shash) != CUSTOS_OK ||
	    shash.len != AUDIT_HASH_HEX + 2) {
		bad(r, file, ln, l->seq, "checkpoint lacks signed_seq/signed_hash");
		return;
	}
	memcpy(hex, shash.ptr + 1, AUDIT_HASH_HEX);
	hex[AUDIT_HASH_HEX] = '\0';
	if (signed_seq != l->seq - 1) {
		bad(r, file, ln, l->seq, "checkpoint signs seq %llu, not its predecessor",
		    (unsigned long long)signed_seq);
		return;
	}
	if (CRYPTO_memcmp(hex, l->prev, AUDIT_HASH_HEX) != 0) {
		bad(r, file, ln, l->seq,
		    "checkpoint's signed head differs from the chain: records before it were "
		    "rewritten (since the previous checkpoint)");
		return;
	}
	bool shutdown = ajson_get(line, "reason", &reason) == CUSTOS_OK &&
	                span_eq_cstr(reason, "\"shutdown\"");
	if (v->nkeys == 0) {
		r->checkpoints++;
		*seal = shutdown;
		return;
	}
	if (ajson_get(line, "sig", &sig) != CUSTOS_OK || sig.len != 130) {
		bad(r, file, ln, l->seq, "checkpoint is not signed");
		return;
	}
	/* The writer writes lowercase hex; another case of the same signature would be a second
	 * form of the record (a seal whose hash changes without its signature failing). */
	for (size_t i = 1; i < 129; i++)
		if (!((sig.ptr[i] >= '0' && sig.ptr[i] <= '9') ||
		      (sig.ptr[i] >= 'a' && sig.ptr[i] <= 'f'))) {
			bad(r, file, ln, l->seq, "checkpoint's sig is not lowercase hex");
			return;
		}
	/* The signature covers the record up to its sig member, which must be the last one. */
	span b = l->body;
	if (b.len <= AUDIT_CKPT_SIG_SUFFIX_LEN ||
	    memcmp(b.ptr + b.len - AUDIT_CKPT_SIG_SUFFIX_LEN, AUDIT_CKPT_SIG_KEY,
	           AUDIT_CKPT_SIG_KEY_LEN) != 0 ||
	    b.ptr + b.len - AUDIT_CKPT_SIG_SUFFIX_LEN + AUDIT_CKPT_SIG_KEY_LEN != sig.ptr + 1) {
		bad(r, file, ln, l->seq, "checkpoint's sig is not its last member");
		return;
	}
	size_t k = 0;
	kid = SPAN_LIT("(none)"); /* named in the report when the member is missing */
	if (ajson_get(line, "key_id", &kid) == CUSTOS_OK && kid.len == 18)
		while (k < v->nkeys && CRYPTO_memcmp(kid.ptr + 1, r->keys[k].key_id, 16) != 0)
			k++;
	else
		k = v->nkeys;
	if (k == v->nkeys) {
		bad(r, file, ln, l->seq,
		    "checkpoint signed by another key (key_id %.*s is not among the --pubkey keys)",
		    (int)kid.len, kid.ptr);
		return;
	}
	span signed_part =
	        span_of(line.ptr, (size_t)(b.ptr + b.len - AUDIT_CKPT_SIG_SUFFIX_LEN - line.ptr));
	span sighex = span_of(sig.ptr + 1, 128);
	bool v2 = audit_ckpt_verify(v->keys[k], signed_part, sighex) == CUSTOS_OK;
	if (!v2 && audit_ckpt_verify_v1(v->keys[k], signed_seq, hex, sighex) != CUSTOS_OK) {
		bad(r, file, ln, l->seq, "checkpoint signature does not verify");
		return;
	}
	/* The key changes only where the writer restarts with another one: at the start
	 * checkpoint right after its audit.start/recovery event (which names the previous key,
	 * previous_key_id, as far as audit.head knew it: not checked, it may be stale after a
	 * crash). A checkpoint of an earlier key after a later one's (re-signed by someone who
	 * still holds a retired key) fails here. */
	const char *lastk = v->last_key >= 0 ? r->keys[v->last_key].key_id : NULL;
	if (lastk != NULL && !v->want_start && CRYPTO_memcmp(r->keys[k].key_id, lastk, 16) != 0) {
		bad(r, file, ln, l->seq,
		    "checkpoint signed by key %s, but the checkpoint before it by key %s: the key "
		    "changes only at the start checkpoint of a restart",
		    r->keys[k].key_id, lastk);
		return;
	}
	v->last_key = (ssize_t)k;
	if (!v2) {
		r->v1_checkpoints++;
		v->last_v1_shutdown = shutdown;
	}
	audit_verify_key *vk = &r->keys[k];
	if (vk->checkpoints++ == 0)
		vk->first_seq = signed_seq;
	vk->last_seq = signed_seq;
	r->checkpoints++;
	r->signed_seq = signed_seq;
	*seal = v2 && shutdown;
}

/* The record l is where an anchor points: it must be the record the anchor recorded. */
static void check_heads(struct vstate *v, audit_verify_result *r, const audit_line *l,
                        const char *file, const char *base, uint64_t ln)
{
	for (size_t i = 0; i < v->nheads && r->ok; i++) {
		struct vhead *hd = &v->heads[i];
		if (hd->a.seq != l->seq)
			continue;
		if (CRYPTO_memcmp(l->hash, hd->a.hash, AUDIT_HASH_HEX) != 0)
			bad(r, file, ln, l->seq,
			    "the record at seq %llu has hash %.16s..., but %s recorded the signed "
			    "checkpoint there as %.16s... (in %s): the log was rewritten",
			    (unsigned long long)l->seq, l->hash, hd->path, hd->a.hash, hd->a.file);
		else if (strcmp(base, hd->a.file) != 0)
			bad(r, file, ln, l->seq,
			    "the record at seq %llu is in %s, but %s says it is in %s: files were "
			    "renamed or records moved",
			    (unsigned long long)l->seq, base, hd->path, hd->a.file);
		else
			hd->reached = true;
	}
}

static custos_err verify_file(struct vstate *v, const char *file, bool is_last, bool live,
                              audit_verify_result *r)
{
	audit_reader rd;
	span line;
	uint64_t off;
	custos_err e;
	const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
	uint64_t name_seq = 0;
	bool named = audit_file_name_parse(base, &name_seq), first = true;

	if (audit_reader_open(&rd, file) != CUSTOS_OK) {
		/* A FIFO or a device in a log's place is refused, not read. */
		bad(r, file, 0, 0, "%s", err_msg());
		return CUSTOS_OK;
	}
	r->files++;
	while (r->ok) {
		audit_line l;
		char h[AUDIT_HASH_HEX + 1];
		uint64_t ln = rd.line_no + 1;

		e = audit_reader_next(&rd, &line, &off);
		if (e == CUSTOS_ERR_NOTFOUND) {
			if (audit_reader_partial(&rd) > 0) {
				if (is_last && live)
					r->torn_tail = true;
				else
					bad(r, file, ln, v->seq + 1,
					    "file ends inside a record (%zu bytes without a "
					    "newline): "
					    "truncated or torn",
					    audit_reader_partial(&rd));
			}
			break;
		}
		if (e != CUSTOS_OK) {
			bad(r, file, ln, v->seq + 1, "%s", err_msg());
			break;
		}
		if (audit_line_parse(line, &l) != CUSTOS_OK) {
			bad(r, file, ln, v->seq + 1, "malformed record: %s", err_msg());
			break;
		}
		if (ajson_validate(line) != CUSTOS_OK) {
			bad(r, file, ln, l.seq, "record is not valid JSON: %s", err_msg());
			break;
		}
		if (first && named && name_seq != l.seq) {
			bad(r, file, ln, l.seq,
			    "file name says it starts at seq %llu, it starts at %llu",
			    (unsigned long long)name_seq, (unsigned long long)l.seq);
			break;
		}
		if (!v->started) {
			if (l.seq != 1 ||
			    CRYPTO_memcmp(l.prev, AUDIT_GENESIS_PREV, AUDIT_HASH_HEX) != 0) {
				bad(r, file, ln, l.seq,
				    "the chain does not start at genesis (seq 1): it starts at seq "
				    "%llu; earlier files are missing",
				    (unsigned long long)l.seq);
				break;
			}
			v->started = true;
			r->first_seq = l.seq;
		} else {
			if (l.seq != v->seq + 1) {
				if (first && l.seq > v->seq + 1)
					bad(r, file, ln, l.seq,
					    "seq %llu, expected %llu: %llu records are missing "
					    "before this file (a file removed?)",
					    (unsigned long long)l.seq,
					    (unsigned long long)v->seq + 1,
					    (unsigned long long)(l.seq - v->seq - 1));
				else
					bad(r, file, ln, l.seq,
					    "seq %llu, expected %llu: a record was deleted, "
					    "inserted "
					    "or moved",
					    (unsigned long long)l.seq,
					    (unsigned long long)v->seq + 1);
				break;
			}
			if (CRYPTO_memcmp(l.prev, v->head, AUDIT_HASH_HEX) != 0) {
				bad(r, file, ln, l.seq,
				    "prev does not match the hash of seq %llu: the chain is broken "
				    "(a record replaced or the previous one altered)",
				    (unsigned long long)v->seq);
				break;
			}
		}
		GUARD(audit_sha256_hex(l.canonical.ptr, l.canonical.len, h));
		if (CRYPTO_memcmp(h, l.hash, AUDIT_HASH_HEX) != 0) {
			bad(r, file, ln, l.seq, "hash mismatch: the record was modified");
			break;
		}
		/* The writer's own rules for a body: time and type first, no member that sets
		 * (or, escaped or repeated, seems to set) seq, prev, hash, time or type. A record
		 * that breaks them is named here, even when its hashes were recomputed. */
		if (audit_body_check(l.body, true) != CUSTOS_OK) {
			bad(r, file, ln, l.seq, "record breaks the writer's rules: %s", err_msg());
			break;
		}
		check_heads(v, r, &l, file, base, ln);
		if (!r->ok)
			break;
		span t = span_of(NULL, 0);
		v->last_sealed = false;
		v->last_v1_shutdown = false;
		bool ck = ajson_get(line, "type", &t) == CUSTOS_OK &&
		          span_eq_cstr(t, "\"checkpoint\""),
		     rec = span_eq_cstr(t, "\"recovery\"");
		/* A recovery event may come first: a power cut can tear the start checkpoint
		 * off (the next start cuts it); the recovery event then wants its own. */
		if (v->nkeys > 0 && !ck && !(rec && v->want_start) &&
		    (v->want_start || l.seq == 2)) {
			bad(r, file, ln, l.seq,
			    "not a checkpoint: the writer follows its first record and each "
			    "audit.start or recovery event with a signed start checkpoint: "
			    "checkpoints were removed and the chain recomputed");
			break;
		}
		if (ck) {
			check_checkpoint(v, r, line, &l, file, ln, &v->last_sealed);
			if (!r->ok)
				break;
		}
		v->want_start = rec || span_eq_cstr(t, "\"audit.start\"");
		v->seq = l.seq;
		memcpy(v->head, l.hash, sizeof(v->head));
		r->events++;
		r->last_seq = l.seq;
		v->last_file = file;
		v->last_line = ln;
		first = false;
	}
	audit_reader_close(&rd);
	return CUSTOS_OK;
}

static custos_err load_keys(struct vstate *v, const char *const *pubkeys, size_t npub,
                            audit_verify_result *r)
{
	for (size_t i = 0; i < npub; i++) {
		size_t got = 0;
		GUARD(audit_keyring_load(pubkeys[i], v->keys + v->nkeys,
		                         AUDIT_VERIFY_MAX_KEYS - v->nkeys, &got));
		for (size_t j = v->nkeys; j < v->nkeys + got; j++) {
			r->keys[j].file = pubkeys[i];
			GUARD(audit_key_id(v->keys[j], r->keys[j].key_id));
		}
		v->nkeys += got;
		r->n_keys = v->nkeys;
	}
	return CUSTOS_OK;
}

/* Reads the anchor at path into v's list. A directory's audit.head may be absent (present:
 * false); a damaged one fails verification (r), as the writer refuses it at start: how far the
 * log reached is then unknown. Anything else that stops the read is an error. */
static custos_err head_load(struct vstate *v, const char *path, bool *present,
                            audit_verify_result *r)
{
	struct vhead *hd = &v->heads[v->nheads];
	custos_err e;

	*present = false;
	ENSURE(strlen(path) < sizeof(hd->path), CUSTOS_ERR_LIMIT, "%s: path too long", path);
	memcpy(hd->path, path, strlen(path) + 1);
	e = audit_anchor_read(AT_FDCWD, path, &hd->a, present);
	if (e == CUSTOS_ERR_PARSE) {
		/* The message names the file, which the report names already. */
		const char *why = err_msg();
		size_t pl = strlen(path);
		if (strncmp(why, path, pl) == 0 && strncmp(why + pl, ": ", 2) == 0)
			why += pl + 2;
		bad(r, path, 0, 0,
		    "%s: how far the log once reached cannot be checked (--no-head verifies "
		    "without it)",
		    why);
		return CUSTOS_OK;
	}
	GUARD(e);
	if (*present)
		v->nheads++;
	return CUSTOS_OK;
}

/* The anchors not reached: the trail ends before them. */
static void check_heads_reached(struct vstate *v, audit_verify_result *r, const char *lf)
{
	for (size_t i = 0; i < v->nheads && r->ok; i++) {
		const struct vhead *hd = &v->heads[i];
		if (hd->reached) {
			if (hd->a.seq > r->head_seq)
				r->head_seq = hd->a.seq;
			continue;
		}
		/* The walk started at genesis and stopped at no gap: the anchor lies past it. */
		bad(r, lf, v->last_line, r->last_seq,
		    "the log ends at seq %llu (%s), below the last signed checkpoint recorded in "
		    "%s "
		    "(seq %llu, hash %.16s..., in %s): the log was truncated or its newest files "
		    "were removed (--no-head verifies without it)",
		    (unsigned long long)r->last_seq, strrchr(lf, '/') ? strrchr(lf, '/') + 1 : lf,
		    hd->path, (unsigned long long)hd->a.seq, hd->a.hash, hd->a.file);
	}
	r->heads = v->nheads;
}

custos_err audit_verify(const char *const *paths, size_t n, const audit_verify_options *o,
                        audit_verify_result *r)
{
	static const audit_verify_options none;
	struct vstate v;
	char **files = NULL;
	size_t nf = 0, cap = 0;
	bool present;
	custos_err e = CUSTOS_OK;

	memset(r, 0, sizeof(*r));
	memset(&v, 0, sizeof(v));
	v.last_key = -1;
	r->ok = true;
	if (o == NULL)
		o = &none;
	bool live = o->live;
	e = load_keys(&v, o->pubkeys, o->npub, r);
	if (e != CUSTOS_OK)
		goto out;
	v.heads = xcalloc(n + 1, sizeof(*v.heads));
	if (o->head != NULL) {
		/* Given by the operator, maybe through a link: read where it leads. */
		char real[PATH_MAX];
		if (realpath(o->head, real) == NULL) {
			e = err_sys("%s", o->head);
			goto out;
		}
		e = head_load(&v, real, &present, r);
		if (e == CUSTOS_OK && !present)
			e = err_set(CUSTOS_ERR_NOTFOUND, "%s: no such file", o->head);
		if (e != CUSTOS_OK || !r->ok)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		char **sub = NULL;
		size_t ns = 0;
		if (stat(paths[i], &st) == -1) {
			e = err_sys("%s", paths[i]);
			goto out;
		}
		if (S_ISDIR(st.st_mode) && !o->no_head) {
			/* Before the files: the writer replaces audit.head only once the record it
			 * names is durable, so a running log read afterwards holds it. */
			char hp[PATH_MAX];
			if ((size_t)snprintf(hp, sizeof(hp), "%s/" AUDIT_ANCHOR_FILE, paths[i]) >=
			    sizeof(hp)) {
				e = err_set(CUSTOS_ERR_LIMIT, "%s: path too long", paths[i]);
				goto out;
			}
			e = head_load(&v, hp, &present, r);
			if (e != CUSTOS_OK || !r->ok)
				goto out;
		}
		if (S_ISDIR(st.st_mode)) {
			e = audit_list_files(paths[i], &sub, &ns);
			if (e != CUSTOS_OK)
				goto out;
		} else {
			sub = xcalloc(1, sizeof(char *));
			sub[0] = xstrdup(paths[i]);
			ns = 1;
		}
		if (nf + ns > cap) {
			cap = (nf + ns) * 2;
			char **nv = realloc(files, cap * sizeof(char *));
			if (nv == NULL) {
				audit_paths_free(sub, ns);
				e = err_set(CUSTOS_ERR_NOMEM, "verify");
				goto out;
			}
			files = nv;
		}
		for (size_t j = 0; j < ns; j++)
			files[nf++] = steal_pointer(&sub[j]);
		audit_paths_free(sub, ns);
	}
	if (nf == 0) {
		bad(r, n ? paths[0] : "", 0, 0, "no audit files found");
		goto out;
	}
	for (size_t i = 0; i < nf && r->ok; i++) {
		e = verify_file(&v, files[i], i + 1 == nf, live, r);
		if (e != CUSTOS_OK)
			goto out;
	}
	if (r->ok && r->events == 0)
		bad(r, files[0], 0, 0, "no records");
	r->sealed = v.last_sealed;
	/* The location is the last record's, wherever it is (the last file may be empty). */
	const char *lf = v.last_file != NULL ? v.last_file : files[nf - 1];
	/* Before the seal: an anchor not reached says for certain that the log was cut, and
	 * --live (a running writer has no seal) still checks it. */
	if (r->ok)
		check_heads_reached(&v, r, lf);
	if (!r->ok || v.last_sealed || live)
		goto out;
	if (v.last_v1_shutdown)
		bad(r, lf, v.last_line, r->last_seq,
		    "the log ends at seq %llu with a shutdown checkpoint in the old format "
		    "(" AUDIT_CKPT_DOMAIN_V1 "), whose signature does not cover its reason: not a "
		    "seal, so truncation at a record boundary cannot be ruled out (--live accepts "
		    "that)",
		    (unsigned long long)r->last_seq);
	else if (v.nkeys == 0)
		bad(r, lf, v.last_line, r->last_seq,
		    "the log ends at seq %llu without a shutdown checkpoint: the tail was "
		    "truncated, or the writer is running or crashed (--live accepts that); "
		    "signatures were not checked (no --pubkey)",
		    (unsigned long long)r->last_seq);
	else
		bad(r, lf, v.last_line, r->last_seq,
		    "the log ends at seq %llu without a shutdown checkpoint: %llu records after "
		    "seq %llu (the last one a checkpoint signs) are not covered by a signature; "
		    "the tail was truncated, or the writer is running or crashed (--live accepts "
		    "that)",
		    (unsigned long long)r->last_seq,
		    (unsigned long long)(r->last_seq - r->signed_seq),
		    (unsigned long long)r->signed_seq);
out:
	audit_paths_free(files, nf);
	free(v.heads);
	for (size_t i = 0; i < v.nkeys; i++)
		EVP_PKEY_free(v.keys[i]);
	return e;
}
