/*
 * libFuzzer target for admin_answer_feed (proxy/admin_answer.c), how custos ctl reads an answer.
 * The first byte picks the piece size and how the connection ends; the rest is the answer.
 * Properties checked beyond memory safety:
 *  - fed in pieces (end OPEN) then whole with the end, or whole at once, the outcome is the
 *    same: the code, and for a whole answer its status and body;
 *  - a whole answer's body is never longer than the input, and is empty while not whole;
 *  - an ABRUPT end never completes an answer that has no framing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "custos/admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BODY_MAX 4096

static void check(int cond)
{
	if (!cond)
		abort();
}

typedef struct outcome {
	custos_err e;
	unsigned status;
	size_t len;
	uint8_t body[BODY_MAX];
} outcome;

static void run(const char *d, size_t n, size_t step, admin_answer_end end, outcome *o)
{
	admin_answer *a = admin_answer_new(BODY_MAX);
	custos_err e = CUSTOS_ERR_AGAIN;

	for (size_t k = step; step && k < n && e == CUSTOS_ERR_AGAIN; k += step)
		e = admin_answer_feed(a, span_of(d, k), ADMIN_END_OPEN);
	if (e == CUSTOS_ERR_AGAIN)
		e = admin_answer_feed(a, span_of(d, n), end);
	check(e != CUSTOS_ERR_AGAIN || end == ADMIN_END_OPEN);
	span b = admin_answer_body(a);
	o->e = e;
	o->status = admin_answer_status(a);
	check(b.len <= n && b.len <= BODY_MAX);
	check(e == CUSTOS_OK || (b.len == 0 && o->status == 0));
	check(e != CUSTOS_OK || (o->status >= 100 && o->status <= 599));
	o->len = b.len;
	if (b.len)
		memcpy(o->body, b.ptr, b.len);
	admin_answer_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static outcome whole, pieces;

	if (size < 1)
		return 0;
	size_t step = 1 + (data[0] & 0x3f);
	admin_answer_end end = (admin_answer_end)((data[0] >> 6) % 3);
	const char *d = (const char *)data + 1;
	size_t n = size - 1;

	run(d, n, 0, end, &whole);
	run(d, n, step, end, &pieces);
	check(whole.e == pieces.e);
	check(whole.status == pieces.status);
	check(whole.len == pieces.len && memcmp(whole.body, pieces.body, whole.len) == 0);
	return 0;
}
