/*
 * libFuzzer target for the proxy's ingress inspection (proxy/ingress_inspect.c): a model
 * response (an SSE stream of any format, a JSON body, other text) or a prompt, under a
 * policy picked by the first byte, fed through the proxy's entry points in pieces cut at
 * input-chosen points, so events cross read boundaries. After the end: the SSE output parses
 * into whole events (each ends with a blank line), and its data events are JSON (or [DONE])
 * when the input's were; a JSON body stays valid JSON; a deny ends the stream with the error
 * event and [DONE] (a JSON body becomes the error object); and under redact, a test secret
 * written whole in one text member of one event, between words ("card 4111111111111111 ok"),
 * appears in no text member the proxy streams; under a policy that only logs, every part
 * (a choice's content, a tool call's name or arguments, a responses-API part, an Anthropic
 * block, a llama.cpp index) reads the same joined over the client's events as over the
 * input's, and under all-redact every text part (not arguments or names, masked in ways of
 * their own) reads as its joined input redacted as one block (fuzz_inspect checks the stream
 * against block redaction), so a value split over any of a part's events is masked. Values
 * split over parts are not joined (docs/INSPECTION.md "What it does not do").
 * FUZZ_INGRESS_DUMP=1 prints the client's bytes (and the parts compared) of a reproducer.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <custos/inspect.h>
#include <custos/policy.h>

#include "proxy/ingress_inspect.h"
#include "proxy/json.h"
#include "proxy/openai.h"
#include "proxy/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inspect_engine *eng;

/* The test secrets: one the card detector finds (Luhn-valid), one AWS access key id. */
static const char *const secrets[] = { "4111111111111111", "AKIAIOSFODNN7EXAMPLE" };

enum { POL_REDACT, POL_MIXED, POL_LOG, POL_DENY_CARD, POL_N };

static void check(int cond)
{
	if (!cond)
		abort();
}

/* A buf's bytes, "" when it was never written (NULL + 0 is undefined behaviour). */
static const char *buf_at_or(const buf *b)
{
	return buf_ptr(b) ? (const char *)buf_ptr(b) : "";
}

static void make_dec(decide_out *d, unsigned pol)
{
	memset(d, 0, sizeof(*d));
	d->has_inspect = true;
	d->insp_engine = eng;
	d->insp_engine_id = 1;
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++) {
		uint8_t a = pol == POL_LOG ? INSPECT_ACT_LOG : INSPECT_ACT_REDACT;
		if (pol == POL_MIXED)
			a = INSPECT_ACT_NONE;
		d->insp_response[i] = a;
	}
	if (pol == POL_MIXED) {
		d->insp_response[INSPECT_PAYMENT_CARD] = INSPECT_ACT_REDACT;
		d->insp_response[INSPECT_AWS_ACCESS_KEY] = INSPECT_ACT_DENY;
		d->insp_response[INSPECT_EMAIL] = INSPECT_ACT_LOG;
		d->insp_response[INSPECT_IPV4] = INSPECT_ACT_LOG;
	}
	if (pol == POL_DENY_CARD)
		d->insp_response[INSPECT_PAYMENT_CARD] = INSPECT_ACT_DENY;
	memcpy(d->insp_prompt, d->insp_response, sizeof(d->insp_prompt));
}

/* Whether a secret that policy pol masks or denies is in s between words: "x S y" (a word
 * character and a space on each side, in the same string), so nothing before or after it,
 * in this text or a neighbouring one, can make it part of a longer value. */
static bool secret_between_words(span s, unsigned pol)
{
	if (pol == POL_LOG)
		return false;
	for (size_t k = 0; k < CUSTOS_ARRAY_LEN(secrets); k++) {
		if (pol == POL_MIXED && k == 1)
			continue; /* the AWS key is denied there: checked by the deny */
		size_t l = strlen(secrets[k]);
		if (s.len < l + 4)
			continue;
		const char *p = s.ptr, *end = s.ptr + s.len;
		while ((p = memmem(p, (size_t)(end - p), secrets[k], l)) != NULL) {
			size_t at = (size_t)(p - s.ptr);
			if (at >= 2 && at + l + 2 <= s.len && s.ptr[at - 1] == ' ' &&
			    isalpha((unsigned char)s.ptr[at - 2]) && s.ptr[at + l] == ' ' &&
			    isalpha((unsigned char)s.ptr[at + l + 1]))
				return true;
			p++;
		}
	}
	return false;
}

static void check_str(jsonr_val v, unsigned pol)
{
	if (v.type != JSONR_STRING)
		return;
	buf t;
	buf_init(&t, v.str.len + 16);
	check(jsonr_unescape(v.str, &t) == CUSTOS_OK);
	if (secret_between_words(buf_span(&t), pol))
		abort(); /* a secret went out in a text the proxy inspects */
	buf_free(&t);
}

/* Every string value under v (member names are not inspected). */
static void check_all(jsonr_val v, unsigned pol)
{
	jsonr_iter it;
	jsonr_val x;
	span k;

	if (v.type == JSONR_STRING) {
		check_str(v, pol);
		return;
	}
	if (v.type != JSONR_OBJECT && v.type != JSONR_ARRAY)
		return;
	jsonr_iter_init(&it, v);
	while (v.type == JSONR_OBJECT ? jsonr_obj_next(&it, &k, &x) : jsonr_arr_next(&it, &x))
		check_all(x, pol);
}

/* The text members of one client event that the proxy streams (chat chunks, Anthropic-style
 * deltas, responses-API deltas, llama.cpp /completion): none may hold a secret whole. */
static void check_event_texts(span data, unsigned pol)
{
	static const char *const fields[] = { "content", "reasoning_content", "reasoning",
		                              "refusal" };
	jsonr_val root, ch, c, d, v, w, tc, fn;
	jsonr_iter it, it2;

	if (jsonr_parse(data, NULL, &root) != CUSTOS_OK || root.type != JSONR_OBJECT)
		return;
	if (jsonr_obj_get(root, "choices", &ch) && ch.type == JSONR_ARRAY) {
		jsonr_iter_init(&it, ch);
		while (jsonr_arr_next(&it, &c)) {
			if (jsonr_obj_get(c, "text", &v))
				check_str(v, pol);
			if (!jsonr_obj_get(c, "delta", &d))
				continue;
			for (size_t f = 0; f < CUSTOS_ARRAY_LEN(fields); f++)
				if (jsonr_obj_get(d, fields[f], &v))
					check_str(v, pol);
			if (jsonr_obj_get(d, "content", &v) && v.type == JSONR_ARRAY) {
				jsonr_iter_init(&it2, v);
				while (jsonr_arr_next(&it2, &w))
					if (jsonr_obj_get(w, "text", &tc))
						check_str(tc, pol);
			}
			if (jsonr_obj_get(d, "audio", &v) && jsonr_obj_get(v, "transcript", &w))
				check_str(w, pol);
			if (jsonr_obj_get(d, "tool_calls", &v) && v.type == JSONR_ARRAY) {
				jsonr_iter_init(&it2, v);
				while (jsonr_arr_next(&it2, &tc)) {
					if (!jsonr_obj_get(tc, "function", &fn))
						continue;
					if (jsonr_obj_get(fn, "name", &w))
						check_str(w, pol);
					if (jsonr_obj_get(fn, "arguments", &w))
						check_str(w, pol);
				}
			}
		}
		return;
	}
	if (jsonr_obj_get(root, "type", &v) && v.type == JSONR_STRING) {
		if (jsonr_str_eq(v.str, "content_block_delta") &&
		    jsonr_obj_get(root, "delta", &d)) {
			static const char *const dn[] = { "text", "thinking", "partial_json" };
			for (size_t f = 0; f < CUSTOS_ARRAY_LEN(dn); f++)
				if (jsonr_obj_get(d, dn[f], &w))
					check_str(w, pol);
			if (jsonr_obj_get(d, "citation", &w) && jsonr_obj_get(w, "cited_text", &tc))
				check_str(tc, pol);
		} else if (v.str.len >= 6 && memcmp(v.str.ptr + v.str.len - 6, ".delta", 6) == 0 &&
		           jsonr_obj_get(root, "delta", &w)) {
			check_str(w, pol);
		}
		return;
	}
	if (jsonr_obj_get(root, "content", &v) && jsonr_obj_get(root, "stop", &w) &&
	    (w.type == JSONR_TRUE || w.type == JSONR_FALSE))
		check_str(v, pol);
}

/* ---------------------------------------------------------------------------------------------
 * Parts under a log-only policy: nothing is masked, so each part the proxy streams (a chat
 * choice's content, reasoning, refusal, transcript, a tool call's arguments and name, a
 * responses-API part, an Anthropic block, a llama.cpp index) must read, joined over the client's
 * events, exactly as joined over the input's: held-back tails, held names, synthetic events and
 * rewritten events move text between events of a part, never lose, repeat or reorder it.
 * Events are classified the way the proxy does (proxy/ingress_inspect.c sse_event_out); any
 * other event passes unchanged and is left out on both sides.
 */
#define MAX_PARTS 64

typedef struct part {
	buf key;
	buf text[2]; /* input, output */
	bool skip;   /* not comparable: invalid UTF-8 in a piece, an escape in arguments */
	bool exact;  /* a text streamed as is (not arguments, not a name): block redaction */
} part;

typedef struct parts {
	part p[MAX_PARTS];
	size_t n;
	bool overflow;
} parts;

static bool utf8_ok(span s)
{
	for (size_t i = 0; i < s.len;) {
		size_t l = json_utf8_seq_len((const unsigned char *)s.ptr + i, s.len - i);
		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

/* Adds a piece (a JSON string's raw contents) to part `key` on side `side`; args: JSON in
 * pieces (the proxy writes its escapes of plain characters decoded: not compared then). */
static void part_add(parts *ps, int side, const char *key, size_t klen, span raw, bool args)
{
	part *pt = NULL;
	for (size_t i = 0; i < ps->n && pt == NULL; i++)
		if (span_eq(buf_span(&ps->p[i].key), span_of(key, klen)))
			pt = &ps->p[i];
	if (pt == NULL) {
		if (ps->n == MAX_PARTS) {
			ps->overflow = true;
			return;
		}
		pt = &ps->p[ps->n++];
		buf_init(&pt->key, 4096);
		buf_init(&pt->text[0], 1u << 24);
		buf_init(&pt->text[1], 1u << 24);
		pt->skip = false;
		pt->exact = !args &&
		            (klen < 5 || !span_eq(span_of(key + klen - 5, 5), SPAN_LIT("/name")));
		check(buf_append(&pt->key, key, klen) == CUSTOS_OK);
	}
	buf t;
	buf_init(&t, raw.len + 16);
	if (jsonr_unescape(raw, &t) != CUSTOS_OK || !utf8_ok(buf_span(&t)) ||
	    (args && memchr(buf_at_or(&t), '\\', buf_used(&t)) != NULL))
		pt->skip = true;
	else
		check(buf_append_span(&pt->text[side], buf_span(&t)) == CUSTOS_OK);
	buf_free(&t);
}

static void parts_free(parts *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		buf_free(&ps->p[i].key);
		buf_free(&ps->p[i].text[0]);
		buf_free(&ps->p[i].text[1]);
	}
}

/* Whether v holds a string other than those starting at skip[0..n) (ingress_inspect.c). */
static bool other_strs(jsonr_val v, const char *const *skip, size_t n)
{
	jsonr_iter it;
	jsonr_val x;
	span k;

	if (v.type == JSONR_STRING) {
		for (size_t i = 0; i < n; i++)
			if (v.str.ptr == skip[i])
				return false;
		return true;
	}
	if (v.type != JSONR_OBJECT && v.type != JSONR_ARRAY)
		return false;
	jsonr_iter_init(&it, v);
	while (v.type == JSONR_OBJECT ? jsonr_obj_next(&it, &k, &x) : jsonr_arr_next(&it, &x))
		if (other_strs(x, skip, n))
			return true;
	return false;
}

#define KEY(...) (kl = (size_t)snprintf(key, sizeof(key), __VA_ARGS__), kl < sizeof(key))

/* A chat chunk's parts; false when the proxy would not take it as one (inspected whole). */
static bool chunk_parts(parts *ps, int side, jsonr_val root, span data)
{
	static const char *const fields[] = { "content", "reasoning_content", "reasoning",
		                              "refusal" };
	openai_chunk ck;
	jsonr_val ch, c, d, v, w, tc, fn, idx, tt[2];
	jsonr_iter it, it2;
	char key[96];
	size_t kl;

	if (openai_chunk_parse(data, &ck) != CUSTOS_OK || !ck.has_choices ||
	    !jsonr_obj_get(root, "choices", &ch) || ch.type != JSONR_ARRAY)
		return false;
	/* first pass: the indices must be what the proxy accepts */
	jsonr_iter_init(&it, ch);
	while (jsonr_arr_next(&it, &c)) {
		uint64_t x;
		if (jsonr_obj_get(c, "index", &idx) &&
		    jsonr_u64(idx, UINT32_MAX - 1, &x) != CUSTOS_OK)
			return false;
		if (!jsonr_obj_get(c, "delta", &d))
			continue;
		if (jsonr_obj_get(d, "content", &v) && v.type == JSONR_ARRAY) {
			jsonr_iter_init(&it2, v);
			while (jsonr_arr_next(&it2, &w))
				if (w.type != JSONR_OBJECT)
					return false;
		}
		if (!jsonr_obj_get(d, "tool_calls", &v) || v.type != JSONR_ARRAY)
			continue;
		jsonr_iter_init(&it2, v);
		while (jsonr_arr_next(&it2, &tc))
			if (jsonr_obj_get(tc, "index", &idx) &&
			    jsonr_u64(idx, UINT32_MAX - 1, &x) != CUSTOS_OK)
				return false;
	}
	jsonr_iter_init(&it, ch);
	for (uint64_t pos = 0; jsonr_arr_next(&it, &c); pos++) {
		uint64_t ci = pos;
		if (jsonr_obj_get(c, "index", &idx))
			check(jsonr_u64(idx, UINT32_MAX - 1, &ci) == CUSTOS_OK);
		if (jsonr_obj_get(c, "text", &v) && v.type == JSONR_STRING &&
		    KEY("c/%llu/content", (unsigned long long)ci))
			part_add(ps, side, key, kl, v.str, false);
		if (!jsonr_obj_get(c, "delta", &d))
			continue;
		for (size_t f = 0; f < CUSTOS_ARRAY_LEN(fields); f++)
			if (jsonr_obj_get(d, fields[f], &v) && v.type == JSONR_STRING &&
			    KEY("c/%llu/%s", (unsigned long long)ci, fields[f]))
				part_add(ps, side, key, kl, v.str, false);
		if (jsonr_obj_get(d, "content", &v) && v.type == JSONR_ARRAY) {
			static const char *const tn[] = { "type", "text" };
			jsonr_iter_init(&it2, v);
			while (jsonr_arr_next(&it2, &w)) {
				uint32_t got = jsonr_obj_pick(w, tn, 2, tt);
				const char *known[2] = { (got & 1) && tt[0].type == JSONR_STRING
					                         ? tt[0].str.ptr
					                         : NULL,
					                 (got & 2) && tt[1].type == JSONR_STRING
					                         ? tt[1].str.ptr
					                         : NULL };
				if (known[1] != NULL && !other_strs(w, known, 2) &&
				    KEY("c/%llu/content", (unsigned long long)ci))
					part_add(ps, side, key, kl, tt[1].str, false);
			}
		}
		if (jsonr_obj_get(d, "audio", &v) && jsonr_obj_get(v, "transcript", &w) &&
		    w.type == JSONR_STRING && KEY("c/%llu/transcript", (unsigned long long)ci))
			part_add(ps, side, key, kl, w.str, false);
		if (!jsonr_obj_get(d, "tool_calls", &v) || v.type != JSONR_ARRAY)
			continue;
		jsonr_iter_init(&it2, v);
		for (uint64_t tpos = 0; jsonr_arr_next(&it2, &tc); tpos++) {
			uint64_t ti = tpos;
			if (jsonr_obj_get(tc, "index", &idx))
				check(jsonr_u64(idx, UINT32_MAX - 1, &ti) == CUSTOS_OK);
			if (!jsonr_obj_get(tc, "function", &fn))
				continue;
			if (jsonr_obj_get(fn, "name", &w) && w.type == JSONR_STRING &&
			    KEY("c/%llu/t%llu/name", (unsigned long long)ci,
			        (unsigned long long)ti))
				part_add(ps, side, key, kl, w.str, false);
			if (jsonr_obj_get(fn, "arguments", &w) && w.type == JSONR_STRING &&
			    KEY("c/%llu/t%llu/args", (unsigned long long)ci,
			        (unsigned long long)ti))
				part_add(ps, side, key, kl, w.str, true);
		}
	}
	return true;
}

/* The parts of one data event (other formats as the proxy's part_event and resp_event). */
static void event_parts(parts *ps, int side, span data)
{
	static const char *const dt[] = { "text_delta", "thinking_delta", "input_json_delta" };
	static const char *const df[] = { "text", "thinking", "partial_json" };
	static const char *const rn[] = { "item_id", "output_index", "content_index",
		                          "summary_index" };
	jsonr_val root, v, d, w, x, st;
	char key[1024];
	size_t kl;

	if (jsonr_parse(data, NULL, &root) != CUSTOS_OK || root.type != JSONR_OBJECT)
		return;
	if (chunk_parts(ps, side, root, data))
		return;
	bool has_type = jsonr_obj_get(root, "type", &v);
	span idx = jsonr_obj_get(root, "index", &x) ? x.raw : SPAN_LIT("0");
	if (has_type && v.type == JSONR_STRING) {
		if (jsonr_str_eq(v.str, "content_block_delta") && idx.len + 2 <= 192 &&
		    jsonr_obj_get(root, "delta", &d) && d.type == JSONR_OBJECT &&
		    jsonr_obj_get(d, "type", &w) && w.type == JSONR_STRING) {
			if (jsonr_str_eq(w.str, "citations_delta")) {
				if (jsonr_obj_get(d, "citation", &x) && x.type == JSONR_OBJECT &&
				    jsonr_obj_get(x, "cited_text", &st) &&
				    st.type == JSONR_STRING &&
				    KEY("A/%.*s/%.*s", (int)idx.len, idx.ptr, (int)w.raw.len,
				        w.raw.ptr))
					part_add(ps, side, key, kl, st.str, false);
				return;
			}
			for (size_t k = 0; k < CUSTOS_ARRAY_LEN(dt); k++)
				if (jsonr_str_eq(w.str, dt[k]) && jsonr_obj_get(d, df[k], &st) &&
				    st.type == JSONR_STRING &&
				    KEY("A/%.*s/%.*s", (int)idx.len, idx.ptr, (int)w.raw.len,
				        w.raw.ptr))
					part_add(ps, side, key, kl, st.str, k == 2);
			return;
		}
		if (jsonr_str_eq(v.str, "content_block_delta"))
			return;
		if (v.raw.len > 192 || v.str.len < 6 ||
		    memcmp(v.str.ptr + v.str.len - 6, ".delta", 6) != 0 ||
		    !jsonr_obj_get(root, "delta", &st) || st.type != JSONR_STRING)
			return;
		size_t n = 0;
		for (size_t k = 0; k < CUSTOS_ARRAY_LEN(rn); k++) {
			span r = jsonr_obj_get(root, rn[k], &x) ? x.raw : span_of("", 0);
			if (n + r.len + 1 > 192)
				return; /* not followed by the proxy */
			n += r.len + 1;
		}
		span r[4];
		for (size_t k = 0; k < 4; k++)
			r[k] = jsonr_obj_get(root, rn[k], &x) ? x.raw : span_of("", 0);
		if (KEY("R/%.*s/%.*s/%.*s/%.*s/%.*s", (int)v.raw.len, v.raw.ptr, (int)r[0].len,
		        r[0].ptr, (int)r[1].len, r[1].ptr, (int)r[2].len, r[2].ptr, (int)r[3].len,
		        r[3].ptr))
			part_add(ps, side, key, kl, st.str,
			         memmem(v.str.ptr, v.str.len, "arguments", 9) != NULL);
		return;
	}
	if (!has_type && idx.len + 2 <= 192 && jsonr_obj_get(root, "content", &st) &&
	    st.type == JSONR_STRING && jsonr_obj_get(root, "stop", &w) &&
	    (w.type == JSONR_TRUE || w.type == JSONR_FALSE) && KEY("L/%.*s", (int)idx.len, idx.ptr))
		part_add(ps, side, key, kl, st.str, false);
}

static void sse_parts(parts *ps, int side, span sse)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	for (size_t at = 0; at < sse.len;) {
		sse_event ev;
		bool have = false;
		ssize_t r = sse_parse(&p, sse.ptr + at, sse.len - at, &ev, &have);
		if (r <= 0)
			break;
		at += (size_t)r;
		if (have && ev.has_data && !ev.done)
			event_parts(ps, side, ev.data);
	}
	sse_parser_free(&p);
}

static void check_parts_kept(span in, span out, unsigned pol, const decide_out *d)
{
	static parts ps;
	static inspect_scratch *scr;
	inspect_profile prof;
	buf want;

	if (scr == NULL)
		check(inspect_scratch_new(eng, &scr) == CUSTOS_OK);
	inspect_profile_from_actions(&prof, d->insp_response);
	buf_init(&want, 1u << 24);
	memset(&ps, 0, sizeof(ps));
	sse_parts(&ps, 0, in);
	sse_parts(&ps, 1, out);
	for (size_t i = 0; i < ps.n && !ps.overflow; i++) {
		part *pt = &ps.p[i];
		if (pol != POL_LOG) {
			/* redact (no deny, no log): a text part reads as its joined input
			 * redacted as one block (fuzz_inspect checks the stream against it);
			 * arguments and names are masked in ways of their own */
			if (pt->skip || !pt->exact)
				continue;
			/* a value in what names the part (a type, an id) is masked with the rest
			 * of the event: the client then reads the part under another name */
			buf_reset(&want);
			check(inspect_redact_text(eng, scr, &prof, buf_span(&pt->key), &want,
			                          NULL) == CUSTOS_OK);
			if (!span_eq(buf_span(&want), buf_span(&pt->key)) ||
			    memmem(buf_at_or(&pt->key), buf_used(&pt->key), "[REDACTED:", 10))
				continue;
			buf_reset(&want);
			check(inspect_redact_text(eng, scr, &prof, buf_span(&pt->text[0]), &want,
			                          NULL) == CUSTOS_OK);
			if (span_eq(buf_span(&want), buf_span(&pt->text[1])))
				continue;
			fprintf(stderr, "part %.*s\nwant[%zu] %.*s\nout[%zu]  %.*s\n",
			        (int)buf_used(&pt->key), buf_at_or(&pt->key), buf_used(&want),
			        (int)buf_used(&want), buf_at_or(&want), buf_used(&pt->text[1]),
			        (int)buf_used(&pt->text[1]), buf_at_or(&pt->text[1]));
			abort(); /* a part's text is not its block redaction */
		}
		if (getenv("FUZZ_INGRESS_DUMP") != NULL)
			fprintf(stderr, "part %.*s%s: %zu bytes in, %zu out\n",
			        (int)buf_used(&pt->key), buf_at_or(&pt->key),
			        pt->skip ? " (not compared)" : "", buf_used(&pt->text[0]),
			        buf_used(&pt->text[1]));
		if (pt->skip || span_eq(buf_span(&pt->text[0]), buf_span(&pt->text[1])))
			continue;
		fprintf(stderr, "part %.*s\nin[%zu]  %.*s\nout[%zu] %.*s\n",
		        (int)buf_used(&pt->key), buf_at_or(&pt->key), buf_used(&pt->text[0]),
		        (int)buf_used(&pt->text[0]), buf_at_or(&pt->text[0]),
		        buf_used(&pt->text[1]), (int)buf_used(&pt->text[1]),
		        buf_at_or(&pt->text[1]));
		abort(); /* a part's text changed under a policy that only logs */
	}
	parts_free(&ps);
	buf_free(&want);
}

/* Whether every data event of the input is JSON or [DONE] (a partial last event is
 * dropped by the proxy and does not count). */
static bool input_all_json(span in)
{
	sse_parser p;
	bool ok = true;
	sse_parser_init(&p, 0);
	for (size_t at = 0; at < in.len && ok;) {
		sse_event ev;
		bool have = false;
		ssize_t r = sse_parse(&p, in.ptr + at, in.len - at, &ev, &have);
		if (r <= 0) {
			ok = r == 0;
			break;
		}
		at += (size_t)r;
		if (have && ev.has_data && !ev.done && !inspect_json_valid(ev.data))
			ok = false;
	}
	sse_parser_free(&p);
	return ok;
}

static bool is_deny_error(span data)
{
	jsonr_val root, e, c;
	return jsonr_parse(data, NULL, &root) == CUSTOS_OK && jsonr_obj_get(root, "error", &e) &&
	       jsonr_obj_get(e, "code", &c) && c.type == JSONR_STRING &&
	       jsonr_str_eq(c.str, "content_denied");
}

/* The client's SSE: whole events; JSON data when the input's was; texts without secrets;
 * after a deny, the error event then [DONE] last. */
static void check_sse_out(span out, bool all_json, bool denied, unsigned pol)
{
	sse_parser p;
	sse_parser_init(&p, 0);
	buf last, prev;
	buf_init(&last, SSE_MAX_EVENT_BYTES);
	buf_init(&prev, SSE_MAX_EVENT_BYTES);
	size_t ndata = 0;
	for (size_t at = 0; at < out.len;) {
		sse_event ev;
		bool have = false;
		ssize_t r = sse_parse(&p, out.ptr + at, out.len - at, &ev, &have);
		check(r > 0);
		at += (size_t)r;
		if (!have || !ev.has_data)
			continue;
		ndata++;
		if (all_json && !ev.done)
			check(inspect_json_valid(ev.data));
		check_event_texts(ev.data, pol);
		buf_reset(&prev);
		check(buf_append_span(&prev, buf_span(&last)) == CUSTOS_OK);
		buf_reset(&last);
		check(buf_append_span(&last, ev.data) == CUSTOS_OK);
	}
	check(!sse_parser_pending(&p)); /* every event ends with a blank line */
	if (denied) {
		check(ndata >= 2);
		check(span_eq_cstr(buf_span(&last), "[DONE]"));
		check(is_deny_error(buf_span(&prev)));
	}
	buf_free(&last);
	buf_free(&prev);
	sse_parser_free(&p);
}

static void check_json_out(span in, span out, custos_err e, unsigned pol)
{
	if (in.len >= 3 && memcmp(in.ptr, "\xef\xbb\xbf", 3) == 0)
		in = span_of(in.ptr + 3, in.len - 3);
	if (e == CUSTOS_ERR_DENIED) {
		check(is_deny_error(out));
		return;
	}
	if (e != CUSTOS_OK || !inspect_json_valid(in))
		return;
	check(inspect_json_valid(out));
	if (pol == POL_LOG) /* nothing masked: the body as received (a BOM dropped) */
		check(span_eq(in, out));
	jsonr_val root, ch;
	check(jsonr_parse(out, NULL, &root) == CUSTOS_OK);
	/* with choices, only strings under them are inspected (ids and model names not) */
	if (jsonr_obj_get(root, "choices", &ch) && ch.type == JSONR_ARRAY)
		check_all(ch, pol);
	else
		check_all(root, pol);
}

static http1_head *resp_head(const char *ctype)
{
	http1_head *h = calloc(1, sizeof(*h));
	check(h != NULL);
	h->is_response = true;
	h->version = 11;
	h->status = 200;
	h->framing = HTTP1_BODY_CHUNKED;
	h->hdrs[h->nhdrs++] = (http1_header){ SPAN_LIT("Content-Type"), span_cstr(ctype) };
	return h;
}

/* The prompt side: the body as a request (not an OpenAI path: any body, JSON or text). */
static void run_prompt(unsigned pol, span in)
{
	decide_out d;
	make_dec(&d, pol);
	ingress_insp *ip = NULL;
	const char *why = NULL;
	buf body;
	buf_init(&body, INSPECT_JSON_MAX_BODY);
	check(buf_append_span(&body, in) == CUSTOS_OK);
	unsigned st = ingress_inspect_request(&ip, &d, false, NULL, &body, &why);
	check(st == 0 || st == 400 || st == 403 || st == 413);
	check(st == 0 || why != NULL);
	if (st == 0) {
		span b = buf_span(&body), i = in;
		if (b.len >= 3 && memcmp(b.ptr, "\xef\xbb\xbf", 3) == 0)
			b = span_of(b.ptr + 3, b.len - 3), i = span_of(i.ptr + 3, i.len - 3);
		if (inspect_json_valid(i)) {
			/* inspect_json_valid, like the inspector, takes a key repeated in an
			 * object (each value is inspected); the proxy's reader refuses one by
			 * default (an OpenAI body with one is a 400 before inspection) */
			const jsonr_limits dups = { .allow_dup_keys = true };
			jsonr_val root;
			check(inspect_json_valid(b));
			check(jsonr_parse(b, &dups, &root) == CUSTOS_OK);
			check_all(root, pol);
		}
	}
	ingress_inspect_free(ip);
	buf_free(&body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (eng == NULL) {
		inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL };
		if (inspect_engine_new(&o, &eng) != CUSTOS_OK)
			abort();
	}
	if (size < 2 || size > 65536)
		return 0;
	unsigned pol = data[0] % POL_N, kind = (data[0] >> 2) % 4;
	/* Piece lengths: 1..maxfrag from a generator seeded by the second byte (and the
	 * first's high bits), so events cross read boundaries at chosen points. */
	uint32_t rng = (uint32_t)data[1] * 2654435761u + (data[0] >> 4) + 1;
	size_t maxfrag = (data[1] & 0x80) ? 1 + (data[1] & 0x0f) : 1 + (size_t)(data[1] & 0x7f) * 8;
	span in = span_of((const char *)data + 2, size - 2);

	if (kind == 3) {
		run_prompt(pol, in);
		return 0;
	}
	decide_out d;
	make_dec(&d, pol);
	ingress_insp *ip = NULL;
	const char *why = NULL;
	buf empty, client;
	buf_init(&empty, 16);
	check(ingress_inspect_request(&ip, &d, false, NULL, &empty, &why) == 0 && ip != NULL);
	buf_free(&empty);
	static const char *const ctypes[] = { "text/event-stream", "application/json",
		                              "text/plain" };
	http1_head *h = resp_head(ctypes[kind]);
	check(ingress_inspect_response_begin(ip, h));
	free(h);
	buf_init(&client, INGRESS_INSPECT_RESP_MAX * 4);
	custos_err e = CUSTOS_OK;
	span out;
	for (size_t at = 0; at < in.len && e == CUSTOS_OK;) {
		rng = rng * 1103515245u + 12345u;
		size_t n = 1 + (rng >> 8) % maxfrag;
		if (n > in.len - at)
			n = in.len - at;
		e = ingress_inspect_response_data(ip, span_of(in.ptr + at, n), &out);
		at += n;
		if (e == CUSTOS_OK || e == CUSTOS_ERR_DENIED)
			check(buf_append_span(&client, out) == CUSTOS_OK);
	}
	if (e == CUSTOS_OK) {
		e = ingress_inspect_response_end(ip, &out);
		if (e == CUSTOS_OK || e == CUSTOS_ERR_DENIED)
			check(buf_append_span(&client, out) == CUSTOS_OK);
	}
	/* An internal error is a broken invariant of the code, never the input's doing. */
	check(e != CUSTOS_ERR_INTERNAL);
	if (e == CUSTOS_ERR_DENIED) {
		/* later data is refused, with nothing out */
		check(ingress_inspect_response_data(ip, SPAN_LIT("data: x\n\n"), &out) ==
		      CUSTOS_ERR_DENIED);
		check(out.len == 0);
		const char *dec = "allow", *reason = NULL;
		ingress_inspect_outcome(ip, &dec, &reason);
		check(strcmp(dec, "deny") == 0 && reason != NULL);
	}
	if (getenv("FUZZ_INGRESS_DUMP") != NULL) /* to read a reproducer's output */
		fprintf(stderr, "result %s (%s), client bytes:\n%.*s\n", custos_strerror(e),
		        err_msg(), (int)buf_used(&client), (const char *)buf_ptr(&client));
	const audit_finding *f;
	size_t nf;
	const char *sum;
	uint64_t ns;
	ingress_inspect_audit(ip, &f, &nf, &sum, &ns);
	check(sum != NULL);
	if (kind == 0 && (e == CUSTOS_OK || e == CUSTOS_ERR_DENIED))
		check_sse_out(buf_span(&client), input_all_json(in), e == CUSTOS_ERR_DENIED, pol);
	if (kind == 0 && e == CUSTOS_OK && (pol == POL_LOG || pol == POL_REDACT))
		check_parts_kept(in, buf_span(&client), pol, &d);
	else if (kind == 1)
		check_json_out(in, buf_span(&client), e, pol);
	else if (kind == 2 && e == CUSTOS_OK && secret_between_words(buf_span(&client), pol))
		abort(); /* raw: the body is one text */
	ingress_inspect_free(ip);
	buf_free(&client);
	return 0;
}
