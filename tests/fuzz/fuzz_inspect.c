/*
 * libFuzzer target for content inspection: the JSON walker (a redacted valid body must stay
 * valid JSON and redacting it again must change nothing more), and the stream against the
 * block scan (the same text split at a fuzzer-chosen offset in 1..8-byte fragments must be
 * released exactly as block redaction produces it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <custos/inspect.h>

static inspect_engine *eng;
static inspect_scratch *scr;
static inspect_profile prof;

static void setup(void)
{
	static const char *const pats[] = { "\\bEMP-[0-9]{6}\\b", "\\bTKT-[A-Z0-9]+" };
	static const char *const kws[] = { "bluebird" };
	static const inspect_custom_def custom[] = {
		{ .name = "employee_id", .patterns = pats, .n_patterns = 1 },
		{ .name = "ticket", .patterns = pats + 1, .n_patterns = 1 },
		{ .name = "codename", .keywords = kws, .n_keywords = 1 },
	};
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL,
		                  .custom = custom,
		                  .n_custom = 3 };
	if (inspect_engine_new(&o, &eng) != CUSTOS_OK ||
	    inspect_scratch_new(eng, &scr) != CUSTOS_OK)
		abort();
	for (unsigned i = 0; i < inspect_engine_detector_count(eng); i++)
		prof.action[i] = INSPECT_ACT_REDACT;
}

static void check_json(span in)
{
	buf out, again;
	buf_init(&out, 4 * in.len + 4096);
	buf_init(&again, 4 * in.len + 4096);
	custos_err r = inspect_json_redact(eng, scr, &prof, in, &out, NULL);
	if (r == CUSTOS_OK) {
		if (!inspect_json_valid(in) || !inspect_json_valid(buf_span(&out)))
			abort(); /* accepted an invalid body, or produced one */
		if (inspect_json_redact(eng, scr, &prof, buf_span(&out), &again, NULL) != CUSTOS_OK)
			abort();
	} else if (r == CUSTOS_ERR_PARSE && inspect_json_valid(in)) {
		abort(); /* the two walkers disagree */
	}
	buf_free(&out);
	buf_free(&again);
}

static void check_stream(span in, size_t split, size_t frag)
{
	buf want, got;
	buf_init(&want, 4 * in.len + 4096);
	buf_init(&got, 4 * in.len + 4096);
	if (inspect_redact_text(eng, scr, &prof, in, &want, NULL) != CUSTOS_OK)
		abort();
	inspect_stream *st;
	if (inspect_stream_new(eng, &prof, &st) != CUSTOS_OK)
		abort();
	size_t at = 0;
	while (at < in.len) {
		size_t len = at < split ? split - at : frag;
		if (len > in.len - at)
			len = in.len - at;
		if (inspect_stream_feed(st, scr, span_of(in.ptr + at, len), &got) != CUSTOS_OK)
			abort();
		at += len;
	}
	if (inspect_stream_finish(st, scr, &got) != CUSTOS_OK)
		abort();
	if (buf_used(&got) != buf_used(&want) ||
	    (buf_used(&got) && memcmp(buf_ptr(&got), buf_ptr(&want), buf_used(&got)) != 0)) {
		fprintf(stderr, "split %zu frag %zu\nwant[%zu] %.*s\ngot[%zu]  %.*s\n", split, frag,
		        buf_used(&want), (int)buf_used(&want), (const char *)buf_ptr(&want),
		        buf_used(&got), (int)buf_used(&got), (const char *)buf_ptr(&got));
		abort(); /* streamed release differs from the block result */
	}
	inspect_stream_free(st);
	buf_free(&want);
	buf_free(&got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (eng == NULL)
		setup();
	if (size < 2 || size > 65536)
		return 0;
	size_t split = data[0] % (size - 1), frag = 1 + data[1] % 8;
	span in = span_of((const char *)data + 2, size - 2);
	check_json(in);
	check_stream(in, split, frag);
	return 0;
}
