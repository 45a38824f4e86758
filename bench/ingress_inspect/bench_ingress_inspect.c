/*
 * Cost of content inspection on the proxy's ingress path (proxy/ingress_inspect.c), CPU only:
 * per SSE event of a streamed chat completion (parse the event and the chunk JSON, feed the
 * delta to the choice's stream, rewrite and re-emit the event), for a stream with no values
 * and one with a card number every 50 events; and one chat prompt of ~2.6 KiB redacted as JSON.
 * Usage: bench_ingress_inspect [reps]. Prints the median over reps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/inspect.h"
#include "proxy/ingress_inspect.h"

#define EVENTS 20000

static inspect_engine *eng;

static void make_dec(decide_out *d)
{
	memset(d, 0, sizeof(*d));
	d->has_inspect = true;
	d->insp_engine = eng;
	d->insp_engine_id = 1;
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++) {
		d->insp_prompt[i] = INSPECT_ACT_REDACT;
		d->insp_response[i] = INSPECT_ACT_REDACT;
	}
}

static const char *words[] = { "The ",     "quick ",  "analysis ", "of the ",  "quarterly ",
	                       "report, ", "shows ",  "that ",     "revenue ", "grew ",
	                       "by 4.2% ", "in the ", "region. " };

static void make_stream(buf *b, bool values)
{
	for (unsigned i = 0; i < EVENTS; i++) {
		const char *w = words[i % (sizeof(words) / sizeof(words[0]))];
		if (values && i % 50 == 10)
			w = "card 4111 11";
		else if (values && i % 50 == 11)
			w = "11 1111 1111 ";
		if (buf_printf(b,
		               "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
		               "\"created\":1700000000,\"model\":\"m\",\"choices\":[{\"index\":0,"
		               "\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n",
		               w) != CUSTOS_OK)
			abort();
	}
	if (buf_append_cstr(b, "data: [DONE]\n\n") != CUSTOS_OK)
		abort();
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double run_stream(span body, size_t *found)
{
	decide_out d;
	ingress_insp *ip = NULL;
	const char *why;
	buf empty;
	http1_head *h = calloc(1, sizeof(*h));

	make_dec(&d);
	buf_init(&empty, 16);
	if (ingress_inspect_request(&ip, &d, false, NULL, &empty, &why) != 0)
		abort();
	h->framing = HTTP1_BODY_CHUNKED;
	h->hdrs[h->nhdrs++] =
	        (http1_header){ SPAN_LIT("Content-Type"), SPAN_LIT("text/event-stream") };
	if (!ingress_inspect_response_begin(ip, h))
		abort();
	uint64_t t0 = tm_mono_ns();
	size_t out_bytes = 0;
	/* pieces of one upstream read each (the proxy passes at most 16 KiB at a time) */
	for (size_t at = 0; at < body.len; at += 16384) {
		size_t n = body.len - at < 16384 ? body.len - at : 16384;
		span out;
		if (ingress_inspect_response_data(ip, span_of(body.ptr + at, n), &out) != CUSTOS_OK)
			abort();
		out_bytes += out.len;
	}
	span out;
	if (ingress_inspect_response_end(ip, &out) != CUSTOS_OK)
		abort();
	uint64_t t1 = tm_mono_ns();
	const audit_finding *f;
	const char *sum;
	uint64_t ns;
	ingress_inspect_audit(ip, &f, found, &sum, &ns);
	*found = *found ? f[0].count : 0;
	ingress_inspect_free(ip);
	buf_free(&empty);
	free(h);
	(void)out_bytes;
	return (double)(t1 - t0) / EVENTS;
}

static double run_prompt(span body)
{
	decide_out d;
	make_dec(&d);
	const int n = 200;
	uint64_t t0 = tm_mono_ns();
	for (int i = 0; i < n; i++) {
		ingress_insp *ip = NULL;
		const char *why;
		buf b;
		buf_init(&b, 1 << 20);
		if (buf_append_span(&b, body) != CUSTOS_OK)
			abort();
		if (ingress_inspect_request(&ip, &d, true, &(openai_request){ 0 }, &b, &why) != 0)
			abort();
		ingress_inspect_free(ip);
		buf_free(&b);
	}
	return (double)(tm_mono_ns() - t0) / n;
}

int main(int argc, char **argv)
{
	uint64_t r = 5;
	if (argc > 1 && num_parse_u64(span_cstr(argv[1]), 1, 1000, &r) != CUSTOS_OK)
		return 1;
	int reps = (int)r;
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL };
	if (inspect_engine_new(&o, &eng) != CUSTOS_OK)
		return 1;
	buf clean, dirty, prompt;
	buf_init(&clean, 64u << 20);
	buf_init(&dirty, 64u << 20);
	buf_init(&prompt, 1 << 20);
	make_stream(&clean, false);
	make_stream(&dirty, true);
	if (buf_append_cstr(&prompt,
	                    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"You "
	                    "are helpful.\"},{\"role\":\"user\",\"content\":\"") != CUSTOS_OK)
		return 1;
	for (int i = 0; i < 60; i++)
		if (buf_append_cstr(&prompt,
		                    i == 30 ? "mail bob@example.com now, "
		                            : "the quarterly report shows growth 4.2% ok. ") !=
		    CUSTOS_OK)
			return 1;
	if (buf_append_cstr(&prompt, "\"}]}") != CUSTOS_OK)
		return 1;
	double *a = calloc((size_t)reps, sizeof(double)), *b = calloc((size_t)reps, sizeof(double)),
	       *c = calloc((size_t)reps, sizeof(double));
	size_t f1 = 0, f2 = 0;
	for (int i = 0; i < reps; i++) {
		a[i] = run_stream(buf_span(&clean), &f1);
		b[i] = run_stream(buf_span(&dirty), &f2);
		c[i] = run_prompt(buf_span(&prompt));
	}
	qsort(a, (size_t)reps, sizeof(double), cmp);
	qsort(b, (size_t)reps, sizeof(double), cmp);
	qsort(c, (size_t)reps, sizeof(double), cmp);
	printf("SSE event, all 15 built-ins, no values:         %.2f us/event (%d events)\n",
	       a[reps / 2] / 1000, EVENTS);
	printf("SSE event, all 15 built-ins, a card per 50 evts: %.2f us/event (%zu cards "
	       "redacted)\n",
	       b[reps / 2] / 1000, f2);
	printf("prompt of %zu bytes redacted as JSON:           %.2f us/request\n",
	       buf_used(&prompt), c[reps / 2] / 1000);
	free(a);
	free(b);
	free(c);
	buf_free(&clean);
	buf_free(&dirty);
	buf_free(&prompt);
	inspect_engine_free(eng);
	return 0;
}
