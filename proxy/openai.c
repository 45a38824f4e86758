/*
 * OpenAI API awareness: the request fields policy and routing need, the text spans inspection
 * reads and redacts, token usage from responses and stream chunks, and the include_usage
 * rewrite. A field of the wrong type is an error, never ignored: a value policy did not see
 * must not reach the model.
 */
#include <stdlib.h>
#include <string.h>

#include "openai.h"

#define MAX_TOKENS_LIMIT (UINT64_C(1) << 53)

static custos_err type_err(const char *field, const char *want)
{
	return err_set(CUSTOS_ERR_PARSE, "OpenAI request: \"%s\" must be %s", field, want);
}

static custos_err add_text(openai_request *r, openai_text_kind kind, size_t msg, size_t part,
                           jsonr_val v)
{
	if (r->ntexts == OPENAI_MAX_TEXTS)
		return err_set(CUSTOS_ERR_LIMIT, "OpenAI request: more than %u text fields",
		               OPENAI_MAX_TEXTS);
	if (r->ntexts % 16 == 0) {
		openai_text *nt = realloc(r->texts, (r->ntexts + 16) * sizeof(*nt));
		ENSURE(nt != NULL, CUSTOS_ERR_NOMEM, "out of memory");
		r->texts = nt;
	}
	r->texts[r->ntexts++] = (openai_text){
		.kind = kind,
		.message = (uint32_t)msg,
		.part = (uint32_t)part,
		.raw = v.str,
	};
	return CUSTOS_OK;
}

static bool is_null(jsonr_val v)
{
	return v.type == JSONR_NULL;
}

/* content: a string, null, or an array of parts whose "text" strings are collected (type
 * "text", "input_text", "output_text"... all carry text). */
static custos_err read_content(openai_request *r, jsonr_val c, openai_text_kind str_kind,
                               size_t msg, const char *field)
{
	if (c.type == JSONR_STRING)
		return add_text(r, str_kind, msg, 0, c);
	if (is_null(c))
		return CUSTOS_OK;
	if (c.type != JSONR_ARRAY)
		return type_err(field, "a string, an array of parts or null");
	jsonr_iter it;
	jsonr_val part;
	size_t j = 0;
	jsonr_iter_init(&it, c);
	for (; jsonr_arr_next(&it, &part); j++) {
		if (part.type == JSONR_STRING) { /* prompt/input arrays of strings */
			GUARD(add_text(r, str_kind, msg, j, part));
			continue;
		}
		if (str_kind != OPENAI_TEXT_MESSAGE && part.type == JSONR_NUMBER) {
			r->opaque_input = true; /* token ids */
			continue;
		}
		if (str_kind != OPENAI_TEXT_MESSAGE && part.type == JSONR_ARRAY) {
			GUARD(read_content(r, part, str_kind, j, field));
			continue;
		}
		if (part.type != JSONR_OBJECT)
			return type_err(field, "an array of objects");
		static const char *const names[] = { "text", "content" };
		jsonr_val f[2];
		uint32_t got = jsonr_obj_pick(part, names, 2, f);
		if (got & 1) {
			if (f[0].type != JSONR_STRING)
				return type_err("text", "a string");
			GUARD(add_text(
			        r, str_kind == OPENAI_TEXT_MESSAGE ? OPENAI_TEXT_PART : str_kind,
			        msg, j, f[0]));
		}
		/* Responses-API input items carry their own content. */
		if ((got & 2) && !is_null(f[1]))
			GUARD(read_content(r, f[1], str_kind, msg, "content"));
	}
	return CUSTOS_OK;
}

static custos_err read_tool_calls(openai_request *r, jsonr_val tc, size_t msg)
{
	if (is_null(tc))
		return CUSTOS_OK;
	if (tc.type != JSONR_ARRAY)
		return type_err("tool_calls", "an array");
	jsonr_iter it;
	jsonr_val call;
	size_t j = 0;
	jsonr_iter_init(&it, tc);
	for (; jsonr_arr_next(&it, &call); j++) {
		jsonr_val fn, args;
		if (call.type != JSONR_OBJECT)
			return type_err("tool_calls", "an array of objects");
		if (!jsonr_obj_get(call, "function", &fn))
			continue;
		if (fn.type != JSONR_OBJECT)
			return type_err("function", "an object");
		if (!jsonr_obj_get(fn, "arguments", &args))
			continue;
		if (args.type != JSONR_STRING)
			return type_err("arguments", "a string");
		GUARD(add_text(r, OPENAI_TEXT_TOOL_ARGS, msg, j, args));
	}
	return CUSTOS_OK;
}

static custos_err read_messages(openai_request *r, jsonr_val msgs)
{
	if (msgs.type != JSONR_ARRAY)
		return type_err("messages", "an array");
	jsonr_iter it;
	jsonr_val m;
	size_t i = 0;
	jsonr_iter_init(&it, msgs);
	for (; jsonr_arr_next(&it, &m); i++) {
		if (m.type != JSONR_OBJECT)
			return type_err("messages", "an array of objects");
		static const char *const names[] = { "content", "tool_calls", "function_call" };
		jsonr_val f[3], v;
		uint32_t got = jsonr_obj_pick(m, names, 3, f);
		if (got & 1)
			GUARD(read_content(r, f[0], OPENAI_TEXT_MESSAGE, i, "content"));
		if (got & 2)
			GUARD(read_tool_calls(r, f[1], i));
		v = f[2];
		if ((got & 4) && !is_null(v)) {
			jsonr_val args;
			if (v.type != JSONR_OBJECT)
				return type_err("function_call", "an object");
			if (jsonr_obj_get(v, "arguments", &args)) {
				if (args.type != JSONR_STRING)
					return type_err("arguments", "a string");
				GUARD(add_text(r, OPENAI_TEXT_TOOL_ARGS, i, 0, args));
			}
		}
	}
	r->nmessages = i;
	return CUSTOS_OK;
}

static custos_err read_tokens(jsonr_val v, const char *field, uint64_t *out, bool *has)
{
	if (is_null(v))
		return CUSTOS_OK;
	uint64_t n;
	if (jsonr_u64(v, MAX_TOKENS_LIMIT, &n) != CUSTOS_OK)
		return type_err(field, "a whole number");
	/* Several of max_tokens / max_completion_tokens / max_output_tokens: the largest
	 * bounds what the upstream may produce. */
	if (!*has || n > *out)
		*out = n;
	*has = true;
	return CUSTOS_OK;
}

static custos_err read_request(openai_request *r, jsonr_val root)
{
	if (root.type != JSONR_OBJECT)
		return err_set(CUSTOS_ERR_PARSE, "OpenAI request: body is not a JSON object");
	jsonr_iter it;
	span k;
	jsonr_val v;
	jsonr_iter_init(&it, root);
	while (jsonr_obj_next(&it, &k, &v)) {
		if (jsonr_str_eq(k, "model")) {
			if (v.type != JSONR_STRING)
				return type_err("model", "a string");
			custos_err e = jsonr_unescape_cstr(v.str, r->model, sizeof(r->model));
			if (e != CUSTOS_OK)
				return err_wrap(e, "OpenAI request: model");
			r->has_model = true;
		} else if (jsonr_str_eq(k, "stream")) {
			if (v.type == JSONR_TRUE || v.type == JSONR_FALSE)
				r->stream = v.type == JSONR_TRUE;
			else if (!is_null(v))
				return type_err("stream", "a boolean");
		} else if (jsonr_str_eq(k, "max_tokens") ||
		           jsonr_str_eq(k, "max_completion_tokens") ||
		           jsonr_str_eq(k, "max_output_tokens")) {
			GUARD(read_tokens(v, "max_tokens", &r->max_tokens, &r->has_max_tokens));
		} else if (jsonr_str_eq(k, "stream_options")) {
			if (is_null(v))
				continue;
			if (v.type != JSONR_OBJECT)
				return type_err("stream_options", "an object");
			jsonr_val iu;
			if (jsonr_obj_get(v, "include_usage", &iu) && !is_null(iu)) {
				if (iu.type != JSONR_TRUE && iu.type != JSONR_FALSE)
					return type_err("include_usage", "a boolean");
				r->has_include_usage = true;
				r->include_usage = iu.type == JSONR_TRUE;
			}
		} else if (jsonr_str_eq(k, "messages")) {
			GUARD(read_messages(r, v));
		} else if (jsonr_str_eq(k, "prompt")) {
			GUARD(read_content(r, v, OPENAI_TEXT_PROMPT, 0, "prompt"));
		} else if (jsonr_str_eq(k, "input")) {
			GUARD(read_content(r, v, OPENAI_TEXT_INPUT, 0, "input"));
		} else if (jsonr_str_eq(k, "instructions") || jsonr_str_eq(k, "system")) {
			if (v.type == JSONR_STRING)
				GUARD(add_text(r, OPENAI_TEXT_INSTRUCTIONS, 0, 0, v));
			else if (v.type == JSONR_ARRAY)
				GUARD(read_content(r, v, OPENAI_TEXT_INSTRUCTIONS, 0, "system"));
			else if (!is_null(v))
				return type_err("instructions", "a string");
		}
	}
	return CUSTOS_OK;
}

custos_err openai_request_parse(span body, const jsonr_limits *lim, openai_request *req)
{
	jsonr_val root;
	memset(req, 0, sizeof(*req));
	GUARD(jsonr_parse(body, lim, &root));
	custos_err e = read_request(req, root);
	if (e != CUSTOS_OK)
		openai_request_free(req);
	return e;
}

void openai_request_free(openai_request *req)
{
	free(req->texts);
	req->texts = NULL;
	req->ntexts = 0;
}

/* ---------------------------------------------------------------------------------------------
 * include_usage rewrite: splices text into the body at one place.
 */
static custos_err splice(span body, const char *at, size_t cut, const char *text, buf *out)
{
	size_t pre = (size_t)(at - body.ptr);
	GUARD(buf_reserve(out, body.len + strlen(text)));
	GUARD(buf_append(out, body.ptr, pre));
	GUARD(buf_append_cstr(out, text));
	return buf_append(out, at + cut, body.len - pre - cut);
}

/* Where to insert a first member into obj, and whether a comma must follow it. */
static const char *obj_insert_point(jsonr_val obj, bool *comma)
{
	jsonr_iter it;
	span k;
	jsonr_val v;
	jsonr_iter_init(&it, obj);
	*comma = jsonr_obj_next(&it, &k, &v);
	return obj.raw.ptr + 1;
}

custos_err openai_add_include_usage(span body, buf *out, bool *changed)
{
	jsonr_val root, so, iu;
	*changed = false;
	GUARD(jsonr_parse(body, NULL, &root));
	ENSURE(root.type == JSONR_OBJECT, CUSTOS_ERR_PARSE,
	       "OpenAI request: body is not a JSON object");
	bool comma;
	if (!jsonr_obj_get(root, "stream_options", &so)) {
		const char *at = obj_insert_point(root, &comma);
		*changed = true;
		return splice(body, at, 0,
		              comma ? "\"stream_options\":{\"include_usage\":true},"
		                    : "\"stream_options\":{\"include_usage\":true}",
		              out);
	}
	if (is_null(so)) {
		*changed = true;
		return splice(body, so.raw.ptr, so.raw.len, "{\"include_usage\":true}", out);
	}
	if (so.type != JSONR_OBJECT)
		return type_err("stream_options", "an object");
	if (!jsonr_obj_get(so, "include_usage", &iu)) {
		const char *at = obj_insert_point(so, &comma);
		*changed = true;
		return splice(body, at, 0,
		              comma ? "\"include_usage\":true," : "\"include_usage\":true", out);
	}
	if (iu.type == JSONR_TRUE)
		return buf_append(out, body.ptr, body.len);
	if (iu.type != JSONR_FALSE && !is_null(iu))
		return type_err("include_usage", "a boolean");
	*changed = true;
	return splice(body, iu.raw.ptr, iu.raw.len, "true", out);
}

/* ---------------------------------------------------------------------------------------------
 * Responses.
 */
static custos_err read_usage(jsonr_val us, openai_usage *u)
{
	static const char *const names[] = { "prompt_tokens", "input_tokens", "completion_tokens",
		                             "output_tokens", "total_tokens" };
	jsonr_val f[5];
	memset(u, 0, sizeof(*u));
	if (is_null(us))
		return CUSTOS_OK;
	ENSURE(us.type == JSONR_OBJECT, CUSTOS_ERR_PARSE, "OpenAI response: usage not an object");
	u->present = true;
	uint32_t got = jsonr_obj_pick(us, names, 5, f);
	uint64_t n[5] = { 0 };
	for (size_t i = 0; i < 5; i++) {
		if (!(got & (1u << i)) || is_null(f[i]))
			continue;
		if (jsonr_u64(f[i], MAX_TOKENS_LIMIT, &n[i]) != CUSTOS_OK)
			return err_set(CUSTOS_ERR_PARSE, "OpenAI response: usage.%s not a count",
			               names[i]);
	}
	u->prompt_tokens = n[0] ? n[0] : n[1];
	u->completion_tokens = n[2] ? n[2] : n[3];
	u->total_tokens = n[4] ? n[4] : u->prompt_tokens + u->completion_tokens;
	return CUSTOS_OK;
}

/* The top-level "choices" and "usage" of a response or chunk, in one pass. */
static custos_err top_fields(span json, jsonr_val *choices, jsonr_val *usage, uint32_t *got)
{
	static const char *const names[] = { "choices", "usage" };
	jsonr_val root, f[2];
	GUARD(jsonr_parse(json, NULL, &root));
	ENSURE(root.type == JSONR_OBJECT, CUSTOS_ERR_PARSE, "OpenAI response: not a JSON object");
	*got = jsonr_obj_pick(root, names, 2, f);
	*choices = f[0];
	*usage = f[1];
	return CUSTOS_OK;
}

custos_err openai_usage_parse(span json, openai_usage *u)
{
	jsonr_val ch, us;
	uint32_t got = 0;
	memset(u, 0, sizeof(*u));
	GUARD(top_fields(json, &ch, &us, &got));
	return (got & 2) ? read_usage(us, u) : CUSTOS_OK;
}

void openai_usage_scan_init(openai_usage_scan *s)
{
	s->depth = 0;
	s->in_str = s->esc = s->want_key = s->in_key = false;
	s->klen = 0;
	s->is_usage = s->cap = s->found = s->bad = false;
	s->vlen = 0;
}

static void scan_cap_end(openai_usage_scan *s)
{
	s->cap = false;
	if (s->found)
		s->bad = true; /* two usage members: neither is trusted */
	s->found = true;
}

void openai_usage_scan_feed(openai_usage_scan *s, span data)
{
	for (size_t i = 0; i < data.len && !s->bad; i++) {
		char ch = data.ptr[i];
		bool keep = s->cap; /* the byte is part of the usage value */
		if (s->in_str) {
			if (s->esc) {
				s->esc = false;
			} else if (ch == '\\') {
				s->esc = true;
				if (s->in_key)
					s->klen =
					        6; /* an escaped name is never taken for "usage" */
			} else if (ch == '"') {
				s->in_str = false;
				if (s->in_key) {
					s->in_key = false;
					s->is_usage = s->klen == 5 &&
					              span_eq_cstr(span_of(s->key, 5), "usage");
				}
			} else if (s->in_key) {
				if (s->klen < 5)
					s->key[s->klen++] = ch;
				else
					s->klen = 6;
			}
		} else {
			switch (ch) {
			case '"':
				s->in_str = true;
				if (s->depth == 1 && s->want_key) {
					s->want_key = false;
					s->in_key = true;
					s->klen = 0;
				}
				break;
			case '{':
			case '[':
				s->depth++;
				if (s->depth == 1)
					s->want_key = ch == '{';
				break;
			case '}':
			case ']':
				if (s->depth == 1 && s->cap) {
					scan_cap_end(s);
					keep = false;
				}
				if (s->depth > 0)
					s->depth--;
				break;
			case ',':
				if (s->depth == 1) {
					if (s->cap) {
						scan_cap_end(s);
						keep = false;
					}
					s->want_key = true;
				}
				break;
			case ':':
				if (s->depth == 1 && s->is_usage) {
					s->is_usage = false;
					s->cap = true;
					s->vlen = 0;
				}
				break;
			default:
				break;
			}
		}
		if (keep) {
			if (s->vlen == sizeof(s->val))
				s->bad = true;
			else
				s->val[s->vlen++] = ch;
		}
	}
}

void openai_usage_scan_end(const openai_usage_scan *s, openai_usage *u)
{
	char doc[OPENAI_USAGE_SCAN_MAX + 16];

	memset(u, 0, sizeof(*u));
	if (!s->found || s->bad)
		return;
	memcpy(doc, "{\"usage\":", 9);
	memcpy(doc + 9, s->val, s->vlen);
	doc[9 + s->vlen] = '}';
	if (openai_usage_parse(span_of(doc, s->vlen + 10), u) != CUSTOS_OK)
		memset(u, 0, sizeof(*u));
}

/* choices[]: for each, `inner` ("delta" or "message") .content, or .text (completions). */
static custos_err read_choices(jsonr_val ch, const char *inner, openai_delta *out, size_t *nout)
{
	const char *const names[] = { "index", "finish_reason", inner, "text" };
	static const char *const content[] = { "content" };
	jsonr_val c, f[4], v;
	jsonr_iter it;
	*nout = 0;
	if (is_null(ch))
		return CUSTOS_OK;
	ENSURE(ch.type == JSONR_ARRAY, CUSTOS_ERR_PARSE, "OpenAI response: choices not an array");
	jsonr_iter_init(&it, ch);
	for (size_t pos = 0; jsonr_arr_next(&it, &c); pos++) {
		ENSURE(*nout < OPENAI_MAX_CHOICES, CUSTOS_ERR_LIMIT,
		       "OpenAI response: more than %u choices", OPENAI_MAX_CHOICES);
		ENSURE(c.type == JSONR_OBJECT, CUSTOS_ERR_PARSE,
		       "OpenAI response: choice not an object");
		openai_delta *o = &out[(*nout)++];
		memset(o, 0, sizeof(*o));
		o->choice = (uint32_t)pos;
		o->content = span_of(c.raw.ptr, 0);
		o->finish_reason = span_of(c.raw.ptr, 0);
		uint32_t got = jsonr_obj_pick(c, names, 4, f);
		if (got & 1) {
			uint64_t idx;
			if (jsonr_u64(f[0], UINT32_MAX, &idx) != CUSTOS_OK)
				return err_set(CUSTOS_ERR_PARSE,
				               "OpenAI response: bad choice index");
			o->choice = (uint32_t)idx;
		}
		if ((got & 2) && f[1].type == JSONR_STRING)
			o->finish_reason = f[1].str;
		bool found = false;
		if ((got & 4) && f[2].type == JSONR_OBJECT &&
		    jsonr_obj_pick(f[2], content, 1, &v) != 0) {
			found = true;
		} else if (got & 8) {
			v = f[3];
			found = true;
		}
		if (!found || is_null(v))
			continue;
		if (v.type == JSONR_ARRAY) { /* parts, as some servers stream content */
			o->parts = v.raw;
			o->has_parts = true;
			continue;
		}
		ENSURE(v.type == JSONR_STRING, CUSTOS_ERR_PARSE,
		       "OpenAI response: content not a string or an array of parts");
		o->content = v.str;
		o->has_content = true;
	}
	return CUSTOS_OK;
}

custos_err openai_chunk_parse(span json, openai_chunk *c)
{
	jsonr_val ch, us;
	uint32_t got = 0;
	c->ndeltas = 0;
	c->has_choices = false;
	memset(&c->usage, 0, sizeof(c->usage));
	GUARD(top_fields(json, &ch, &us, &got));
	c->has_choices = (got & 1) && ch.type == JSONR_ARRAY;
	if (got & 1)
		GUARD(read_choices(ch, "delta", c->deltas, &c->ndeltas));
	return (got & 2) ? read_usage(us, &c->usage) : CUSTOS_OK;
}

custos_err openai_response_parse(span json, openai_response *r)
{
	jsonr_val ch, us;
	uint32_t got = 0;
	r->nchoices = 0;
	memset(&r->usage, 0, sizeof(r->usage));
	GUARD(top_fields(json, &ch, &us, &got));
	if (got & 1)
		GUARD(read_choices(ch, "message", r->choices, &r->nchoices));
	return (got & 2) ? read_usage(us, &r->usage) : CUSTOS_OK;
}
