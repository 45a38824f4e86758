/*
 * libFuzzer target for the PROXY protocol parser (proxy/pp.c): any input parses to a length
 * within it and PP_MAX, "need more", or a refusal with a reason; an answer on the whole input
 * is the same as on any longer input with it as a prefix (the parser never looks past a header
 * it took), and every proper prefix of an accepted header asks for more. An AUTHORITY or
 * UNIQUE_ID handed back lies inside the header, within its bound, an authority only of host
 * name bytes, and the same when the header is parsed on its own bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/pp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

/* A view v[0..n) handed back from data[0..k): inside it, or absent with length 0. */
static void view_in(const uint8_t *v, size_t n, const uint8_t *data, size_t k, size_t max)
{
	if (v == NULL) {
		check(n == 0);
		return;
	}
	check(n > 0 && n <= max && v >= data && (size_t)(v - data) + n <= k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	pp_hdr h, h2;
	ssize_t k = pp_parse(data, size, &h);

	check(k >= -1 && (k <= 0 || ((size_t)k <= size && (size_t)k <= PP_MAX)));
	check(k != -1 || h.err != NULL);
	if (k > 0) {
		check(h.version == 1 || h.version == 2);
		if (!h.local)
			check(h.src.ss_family == h.dst.ss_family &&
			      (h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6));
		view_in(h.authority, h.authority_len, data, (size_t)k, PP_AUTHORITY_MAX);
		view_in(h.unique_id, h.unique_id_len, data, (size_t)k, PP_UNIQUE_ID_MAX);
		check(h.version == 2 || (h.authority == NULL && h.unique_id == NULL));
		for (size_t i = 0; i < h.authority_len; i++) {
			uint8_t c = h.authority[i];
			check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-' || c == '.');
		}
		/* The same header with only its own bytes; its prefixes need more. */
		check(pp_parse(data, (size_t)k, &h2) == k && h2.local == h.local);
		check(h2.authority == h.authority && h2.authority_len == h.authority_len);
		check(h2.unique_id == h.unique_id && h2.unique_id_len == h.unique_id_len);
		for (size_t i = 0; i < (size_t)k; i++)
			check(pp_parse(data, i, &h2) == 0);
	} else if (k == -1 && size > 0) {
		/* A refusal stays one with more bytes after. */
		uint8_t *more = malloc(size + 8);
		if (more) {
			memcpy(more, data, size);
			memset(more + size, 'A', 8);
			check(pp_parse(more, size + 8, &h2) == -1);
			free(more);
		}
	}
	return 0;
}
