/* libFuzzer target: the input as a whole log file through audit_verify, as an attacker who can
 * write the audit directory would hand it over: once as it is, and once with every record's
 * prev and hash recomputed (anyone can; only the signatures cannot be redone), so the checks
 * after the hash (body rules, checkpoints, the start and key rules, the seal) are reached.
 * Each is verified without a key and with one, with and without --live. Findings are the
 * expected outcome; crashes, hangs and a result that contradicts itself are bugs. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../audit/audit_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], path[128], pub[128];

/* The public halves of the two keys that signed the seeds (tests/fuzz/corpus/audit_verify/,
 * made with audit-load; the private halves were not kept): a keyring, as after a rotation. */
static const char ring[] = "-----BEGIN PUBLIC KEY-----\n"
                           "MCowBQYDK2VwAyEAPoF6AZY6JHljWO3JUo+QFSGUx8MY9bls9gkjm6sqWl8=\n"
                           "-----END PUBLIC KEY-----\n"
                           "-----BEGIN PUBLIC KEY-----\n"
                           "MCowBQYDK2VwAyEA/DWEru6ucXXzAC3LxtJc+d69Ye1p8VwkkS/XKDglYYk=\n"
                           "-----END PUBLIC KEY-----\n";

static void cleanup(void)
{
	unlink(path);
	unlink(pub);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s/custos-fuzz-verify-XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/audit-00000000000000000001.jsonl", dir);
	snprintf(pub, sizeof(pub), "%s/ring.pem", dir);
	FILE *f = fopen(pub, "w");
	if (f == NULL || fputs(ring, f) < 0 || fclose(f) != 0)
		abort();
	atexit(cleanup);
	return 0;
}

static void put_file(span s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, s.ptr, s.len) != (ssize_t)s.len)
		abort();
	close(fd);
}

/* Every line that parses gets the prev and hash the chain wants; the rest stays as it is. */
static void rechain(span in, buf *out)
{
	char head[AUDIT_HASH_HEX + 1], h[AUDIT_HASH_HEX + 1];
	size_t at = 0;

	memcpy(head, AUDIT_GENESIS_PREV, sizeof(head));
	while (at < in.len) {
		const char *nl = memchr(in.ptr + at, '\n', in.len - at);
		size_t n = nl != NULL ? (size_t)(nl - in.ptr) - at : in.len - at;
		span line = span_of(in.ptr + at, n);
		audit_line l;
		if (nl != NULL && audit_line_parse(line, &l) == CUSTOS_OK &&
		    audit_line_build(out, l.seq, l.body, head, h) == CUSTOS_OK) {
			memcpy(head, h, sizeof(head));
		} else {
			if (buf_append_span(out, line) != CUSTOS_OK)
				abort();
			if (nl != NULL && buf_append_byte(out, '\n') != CUSTOS_OK)
				abort();
		}
		at += n + (nl != NULL);
	}
}

static void verify(bool keyed, bool live)
{
	const char *paths[] = { path };
	const char *keys[] = { pub };
	audit_verify_options o = { .pubkeys = keys, .npub = keyed, .live = live, .no_head = true };
	audit_verify_result r;

	if (audit_verify(paths, 1, &o, &r) != CUSTOS_OK)
		return;
	if (memchr(r.what, '\0', sizeof(r.what)) == NULL ||
	    memchr(r.bad_file, '\0', sizeof(r.bad_file)) == NULL)
		__builtin_trap();
	if (!r.ok) {
		if (r.what[0] == '\0')
			__builtin_trap(); /* a failure always says what */
		return;
	}
	/* Passed: genesis onwards, one record per seq, sealed unless live. */
	if (r.events == 0 || r.first_seq != 1 || r.last_seq != r.events || (!live && !r.sealed) ||
	    r.signed_seq > r.last_seq)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	span in = span_of((const char *)data, size);
	buf b;

	if (size > 8 * AUDIT_MAX_LINE)
		return 0;
	put_file(in);
	verify(false, false);
	buf_init(&b, size + 4096);
	rechain(in, &b);
	put_file(buf_span(&b));
	buf_free(&b);
	for (int k = 0; k < 2; k++)
		for (int live = 0; live < 2; live++)
			verify(k, live);
	return 0;
}
