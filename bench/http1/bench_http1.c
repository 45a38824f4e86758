/*
 * Micro-benchmark of the proxy's parsing layer on one core: HTTP/1.1 request and response
 * heads, chunked decoding, head writing, the OpenAI request reader and the SSE parser.
 * Prints ns per operation and throughput. Timing only: nothing here is a pass/fail test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/http1.h"
#include "proxy/openai.h"
#include "proxy/sse.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile size_t sink;

static void report(const char *what, size_t iters, size_t bytes, double secs)
{
	printf("%-34s %9.0f ns/op %10.0f op/s %8.0f MB/s\n", what, secs / (double)iters * 1e9,
	       (double)iters / secs, (double)bytes * (double)iters / secs / 1e6);
	fflush(stdout);
}

static const char req[] = "POST /v1/chat/completions HTTP/1.1\r\n"
                          "Host: api.example.internal:8443\r\n"
                          "User-Agent: OpenAI/Python 1.54.4\r\n"
                          "Accept: application/json\r\n"
                          "Accept-Encoding: gzip, deflate\r\n"
                          "Content-Type: application/json\r\n"
                          "Authorization: Bearer sk-0123456789abcdef0123456789abcdef\r\n"
                          "X-Stainless-Lang: python\r\n"
                          "X-Stainless-Package-Version: 1.54.4\r\n"
                          "X-Stainless-Runtime: CPython\r\n"
                          "Connection: keep-alive\r\n"
                          "Content-Length: 180\r\n"
                          "\r\n";

static const char resp[] = "HTTP/1.1 200 OK\r\n"
                           "Date: Fri, 27 Nov 2026 02:00:00 GMT\r\n"
                           "Content-Type: text/event-stream; charset=utf-8\r\n"
                           "Transfer-Encoding: chunked\r\n"
                           "Connection: keep-alive\r\n"
                           "Cache-Control: no-cache\r\n"
                           "X-Request-Id: 8f2c1e0b-3c1d-4a8e-9a51-0d3f8c6b2a11\r\n"
                           "\r\n";

int main(int argc, char **argv)
{
	size_t iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
	http1_parser p;
	double t;

	/* Request head. */
	t = now();
	for (size_t i = 0; i < iters; i++) {
		http1_parser_init_request(&p, NULL);
		sink += (size_t)http1_parse_head(&p, req, sizeof(req) - 1);
	}
	report("request head (12 fields, 446 B)", iters, sizeof(req) - 1, now() - t);

	/* The same head arriving in 3 reads (incremental path). */
	t = now();
	for (size_t i = 0; i < iters; i++) {
		http1_parser_init_request(&p, NULL);
		sink += (size_t)http1_parse_head(&p, req, 100);
		sink += (size_t)http1_parse_head(&p, req, 300);
		sink += (size_t)http1_parse_head(&p, req, sizeof(req) - 1);
	}
	report("request head in 3 reads", iters, sizeof(req) - 1, now() - t);

	/* Response head. */
	t = now();
	for (size_t i = 0; i < iters; i++) {
		http1_parser_init_response(&p, NULL, HTTP1_M_POST);
		sink += (size_t)http1_parse_head(&p, resp, sizeof(resp) - 1);
	}
	report("response head (6 fields)", iters, sizeof(resp) - 1, now() - t);

	/* Head writer: parse once, write many. */
	http1_parser_init_request(&p, NULL);
	sink += (size_t)http1_parse_head(&p, req, sizeof(req) - 1);
	buf out;
	buf_init(&out, 1 << 20);
	http1_header add[] = { { SPAN_LIT("X-Request-Id"), SPAN_LIT("0123456789abcdef") } };
	http1_write_opts o = {
		.framing = HTTP1_BODY_LENGTH, .content_length = 180, .add = add, .nadd = 1
	};
	t = now();
	for (size_t i = 0; i < iters; i++) {
		buf_reset(&out);
		if (http1_write_request_head(&out, &p.head, &o) != CUSTOS_OK)
			return 1;
		sink += buf_used(&out);
	}
	report("request head write", iters, buf_used(&out), now() - t);

	/* Chunked decoding of 1 MiB in 16 KiB chunks. */
	buf body;
	buf_init(&body, 4u << 20);
	static char chunk[16384];
	memset(chunk, 'x', sizeof(chunk));
	for (int i = 0; i < 64; i++)
		if (http1_chunk_append(&body, span_of(chunk, sizeof(chunk))) != CUSTOS_OK)
			return 1;
	if (http1_chunk_end(&body) != CUSTOS_OK)
		return 1;
	http1_head ch = { .framing = HTTP1_BODY_CHUNKED };
	size_t biters = iters / 2000 + 1;
	t = now();
	for (size_t i = 0; i < biters; i++) {
		http1_body b;
		http1_body_init(&b, &ch, NULL);
		size_t pos = 0;
		bool done = false;
		while (!done) {
			span d;
			ssize_t r = http1_body_decode(&b, (const char *)buf_ptr(&body) + pos,
			                              buf_used(&body) - pos, &d, &done);
			if (r <= 0)
				return 1;
			pos += (size_t)r;
			sink += d.len;
		}
	}
	report("chunked 1 MiB/16 KiB, framing only", biters, buf_used(&body), now() - t);

	/* OpenAI request body. */
	const char *js =
	        "{\"model\":\"llama-3.1-8b-instruct\",\"stream\":true,\"max_tokens\":512,"
	        "\"temperature\":0.7,\"messages\":[{\"role\":\"system\",\"content\":\"You are a "
	        "helpful assistant. Answer briefly and cite sources.\"},{\"role\":\"user\","
	        "\"content\":\"Summarise the attached quarterly report for the finance team, "
	        "highlighting revenue, margins and the outlook for \\\"Q4\\\".\\nKeep it under "
	        "200 words.\"},{\"role\":\"assistant\",\"content\":\"Sure. Revenue grew 12% year "
	        "over year, driven by subscriptions; gross margin held at 71%.\"},{\"role\":"
	        "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"And the risks?\"}]}]}";
	size_t jl = strlen(js);
	size_t jiters = iters / 4;
	t = now();
	for (size_t i = 0; i < jiters; i++) {
		openai_request r;
		if (openai_request_parse(span_of(js, jl), NULL, &r) != CUSTOS_OK)
			return 1;
		sink += r.ntexts;
		openai_request_free(&r);
	}
	report("OpenAI chat request body", jiters, jl, now() - t);

	/* SSE: a typical stream chunk of 8 events, parsed event by event. */
	buf sse;
	buf_init(&sse, 1 << 20);
	for (int i = 0; i < 8; i++)
		if (buf_append_cstr(&sse,
		                    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion."
		                    "chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
		                    "\" token\"},\"finish_reason\":null}]}\n\n") != CUSTOS_OK)
			return 1;
	sse_parser sp;
	sse_parser_init(&sp, 0);
	size_t siters = iters / 8;
	t = now();
	for (size_t i = 0; i < siters; i++) {
		size_t pos = 0;
		while (pos < buf_used(&sse)) {
			sse_event ev;
			bool have;
			ssize_t r = sse_parse(&sp, (const char *)buf_ptr(&sse) + pos,
			                      buf_used(&sse) - pos, &ev, &have);
			if (r <= 0)
				return 1;
			pos += (size_t)r;
			sink += have;
		}
	}
	report("SSE 8 events (parse only)", siters * 8, buf_used(&sse) / 8, now() - t);

	/* SSE event + chunk JSON (what response inspection does per event). */
	t = now();
	for (size_t i = 0; i < siters; i++) {
		size_t pos = 0;
		while (pos < buf_used(&sse)) {
			sse_event ev;
			bool have;
			ssize_t r = sse_parse(&sp, (const char *)buf_ptr(&sse) + pos,
			                      buf_used(&sse) - pos, &ev, &have);
			if (r <= 0)
				return 1;
			pos += (size_t)r;
			if (have && !ev.done) {
				openai_chunk c;
				if (openai_chunk_parse(ev.data, &c) != CUSTOS_OK)
					return 1;
				sink += c.ndeltas;
			}
		}
	}
	report("SSE event + chunk JSON", siters * 8, buf_used(&sse) / 8, now() - t);
	sse_parser_free(&sp);
	buf_free(&sse);
	buf_free(&body);
	buf_free(&out);
	return sink == 0;
}
