/*
 * Content inspection on the ingress path: the prompt (request body, JSON-aware) before it goes
 * upstream, and the response on its way to the client: SSE streams reassembled per part (a
 * choice's content (a string or text parts), reasoning, refusal or audio transcript, a tool
 * call's arguments (its name per event, joined with its earlier pieces), a responses-API part, an
 * Anthropic-style content block, a llama.cpp /completion stream) through an inspect_stream
 * each (bounded hold-back, re-emitted as valid events), a
 * non-streamed JSON body held whole and its choices[].message.content redacted, any other body
 * through a byte stream. Findings are counted for the audit event; values are never kept.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/inspect.h"
#include "custos/policy.h"
#include "egress_int.h"
#include "ingress_inspect.h"
#include "json.h"
#include "openai.h"
#include "sse.h"

_Static_assert(POLICY_MAX_DETECTORS == INSPECT_MAX_DETECTORS, "detector numbering");
_Static_assert(sizeof(((decide_out *)0)->insp_prompt) == INSPECT_MAX_DETECTORS,
               "decide_out prompt actions");
_Static_assert(sizeof(((decide_out *)0)->insp_response) == INSPECT_MAX_DETECTORS,
               "decide_out response actions");

#define INSP_OUT_MAX     (8u * 1024u * 1024u) /* client bytes made from one piece of body */
#define INSP_PROMPT_MAX  (INSPECT_JSON_MAX_BODY + INSPECT_JSON_MAX_BODY / 2)

#define INSP_MAX_STREAMS 128u             /* content and tool-call streams of one response */
#define TOOL_NONE        UINT32_MAX       /* a slot for a choice's content, not a tool call */
#define RESP_CHOICE      (UINT32_MAX - 1) /* a slot for delta events (the responses API) */
#define RESP_POS_MAX     192u             /* bytes of a delta event's item id and indices */

/* The string members of a chat chunk's choices[].delta that are text a model wrote, each a
 * stream of its own per choice: the answer (content, or a completion's text), and what
 * reasoning models and refusals stream beside it. */
static const char *const chat_fields[] = { "content", "reasoning_content", "reasoning", "refusal" };
#define F_CONTENT 0u
/* A choice's delta.audio.transcript (the text of an audio answer): a part of its own. */
#define F_TRANSCRIPT ((unsigned)CUSTOS_ARRAY_LEN(chat_fields))

/* One inspect_stream: a choice's delta.content, one of its tool calls' arguments, or the
 * deltas of one part of a responses-API stream. */
typedef struct slot {
	uint32_t choice, tool;
	uint8_t field; /* chat chunks: which delta member of the choice (chat_fields) */
	bool parts;    /* chat content streamed as an array of parts (the tail goes out so) */
	inspect_stream *st;
	bool done;
	/* Tool calls: the arguments are a JSON text in pieces. An escape cut at a piece's end
	 * waits in pend; q_in / q_esc follow the released text's strings (mask quoting). */
	char pend[12];
	uint8_t npend;
	bool q_in, q_esc;
	/* Delta events (choice RESP_CHOICE): which part of the response (item id, output,
	 * content and summary index as raw JSON) and which delta type; the last event, the
	 * template of one more that carries the held-back tail at the part's end. */
	bool resp;
	char pos[RESP_POS_MAX];
	size_t pos_len;
	buf dtype;        /* the delta event's "type" (raw JSON) */
	buf last, etyp;   /* its data and SSE event type */
	size_t dat, dlen; /* where its "delta" string's contents are in last */
} slot;

/* A tool call's function.name as streamed so far (choice, tool). Its pieces are held until the
 * name is complete (name_hold_piece): the tool call's arguments start, another part or tool
 * call shows text, the choice finishes or the stream ends. Then it is inspected whole, joined
 * with any pieces released before (name_release), and written into the event of its first
 * held piece; the client bytes from that event on wait with it, so a client still reads the
 * name from the tool call's first delta. */
typedef struct name_acc {
	uint32_t choice, tool;
	buf text; /* unescaped, as received; its last NAME_KEEP bytes */
} name_acc;
#define NAME_KEEP       4096u
#define NAME_HOLD_MAX   1024u                /* bytes of a name held (names are short) */
#define NAME_HOLD_BYTES (4u * 1024u * 1024u) /* client bytes held with it */

typedef enum resp_mode {
	RM_NONE = 0, /* response not inspected */
	RM_SSE,      /* text/event-stream: chunk events, delta.content per choice */
	RM_JSON,     /* application/json: held whole, choices[].message.content */
	RM_RAW,      /* anything else: one byte stream */
	RM_BLOCK,    /* content-encoded: cannot be inspected, refused (fail closed) */
} resp_mode;

struct ingress_insp {
	const inspect_engine *eng;
	uint64_t eng_id;
	bool shadow;
	inspect_profile prompt, response;
	bool prompt_on, response_on;
	inspect_summary psum, rsum; /* prompt; response block scans (JSON, fallbacks) */
	resp_mode mode;
	bool denied;   /* the response was denied mid-way */
	bool raw_only; /* egress: any body is one byte stream */
	sse_parser sse;
	bool sse_init;
	bool text_completion;      /* synthetic chunks use choices[].text */
	slot sl[INSP_MAX_STREAMS]; /* RM_SSE: per choice content and tool call; RM_RAW: one */
	size_t nsl;
	name_acc nm[INSP_MAX_STREAMS]; /* RM_SSE: tool-call names streamed so far */
	size_t nnm;
	/* RM_SSE: a name being held (name_hold_piece), and the client bytes held with it: those
	 * of earlier calls in nh_buf, then ip->out from nh_from */
	bool np_done; /* sse_event_out: the content parts that are not text are inspected */
	bool nh_on;
	size_t nh_na;   /* its name_acc */
	size_t nh_a;    /* where its held pieces start in the name_acc's text */
	size_t nh_from; /* where the held bytes start in ip->out */
	size_t nh_at;   /* where the name goes, counted from the start of the held bytes */
	buf nh_buf;
	buf tmpl;      /* "id":..,"created":..,"model":.. of the stream's chunks (raw JSON) */
	buf out;       /* client bytes of the current piece */
	buf text, rel; /* unescaped delta text; released texts of one event */
	buf tail;      /* a finished stream's tail for a synthetic event */
	buf tmp;       /* rewritten event data */
	buf hold;      /* RM_JSON: the whole body */
	uint64_t t_ns;
	char why[192];
	char coding[32]; /* RM_BLOCK: the first coding other than identity, printable */
	char summary[96];
	audit_finding f[INSPECT_MAX_DETECTORS];
};

static custos_err scratch_get(const ingress_insp *ip, inspect_scratch **out)
{
	return inspect_thread_scratch(ip->eng, ip->eng_id, out);
}

/* ---------------------------------------------------------------------------------------------
 * helpers
 */

static const char *det_name(const ingress_insp *ip, int id)
{
	const char *n = id >= 0 ? inspect_engine_detector_name(ip->eng, (unsigned)id) : NULL;
	return n ? n : "a detector";
}

static custos_err args_decode(slot *sl, span in, bool fin, buf *out);

/* Byte `at` of b's contents; b may never have been written (no storage, at 0): NULL + 0 is
 * undefined behaviour, so "" then. */
static const char *buf_at(const buf *b, size_t at)
{
	const uint8_t *p = buf_ptr(b);
	return p ? (const char *)p + at : "";
}

/* Whether a request asks for logprobs (chat: "logprobs": true, completions: a number; or
 * top_logprobs): their token texts would carry a value past a stream's redaction. */
static bool asks_logprobs(span body)
{
	jsonr_val root, v;

	if (jsonr_parse(body, NULL, &root) != CUSTOS_OK)
		return false; /* not JSON: nothing asked */
	if (jsonr_obj_get(root, "logprobs", &v) && v.type != JSONR_NULL && v.type != JSONR_FALSE)
		return true;
	/* llama.cpp's name for them; its token ids spell the text as well */
	if (jsonr_obj_get(root, "n_probs", &v) && v.type != JSONR_NULL &&
	    !(v.type == JSONR_NUMBER && v.raw.len == 1 && v.raw.ptr[0] == '0'))
		return true;
	if (jsonr_obj_get(root, "return_tokens", &v) && v.type == JSONR_TRUE)
		return true;
	return jsonr_obj_get(root, "top_logprobs", &v) && v.type != JSONR_NULL &&
	       !(v.type == JSONR_NUMBER && v.raw.len == 1 && v.raw.ptr[0] == '0');
}

/* *ipp for dec (created on first use), its profiles set from the decision. */
static ingress_insp *insp_setup(ingress_insp **ipp, const decide_out *dec)
{
	ingress_insp *ip = *ipp;
	if (ip == NULL) {
		ip = xcalloc(1, sizeof(*ip));
		inspect_summary_init(&ip->psum);
		inspect_summary_init(&ip->rsum);
		buf_init(&ip->tmpl, 1024);
		buf_init(&ip->out, INSP_OUT_MAX);
		buf_init(&ip->nh_buf, NAME_HOLD_BYTES);
		buf_init(&ip->text, SSE_MAX_EVENT_BYTES);
		buf_init(&ip->rel, INSP_OUT_MAX);
		buf_init(&ip->tail, INSP_OUT_MAX);
		buf_init(&ip->tmp, INSP_OUT_MAX);
		buf_init(&ip->hold, INGRESS_INSPECT_RESP_MAX);
		*ipp = ip;
	}
	ip->eng = dec->insp_engine;
	ip->eng_id = dec->insp_engine_id;
	ip->shadow = dec->shadow;
	inspect_profile_from_actions(&ip->prompt, dec->insp_prompt);
	inspect_profile_from_actions(&ip->response, dec->insp_response);
	ip->prompt_on = inspect_profile_active(&ip->prompt);
	ip->response_on = inspect_profile_active(&ip->response);
	return ip;
}

unsigned ingress_inspect_request(ingress_insp **ipp, const decide_out *dec, bool has_oa,
                                 const openai_request *oa, buf *body, const char **why)
{
	*why = NULL;
	if (!dec->has_inspect || dec->insp_engine == NULL)
		return 0;
	ingress_insp *ip = insp_setup(ipp, dec);
	/* any path: llama.cpp's /completion is not under /v1/ */
	if (ip->response_on && !ip->shadow && asks_logprobs(buf_span(body))) {
		*why = "logprobs cannot be returned while responses are inspected";
		return 400;
	}
	if (!ip->prompt_on || buf_used(body) == 0)
		return 0;
	if (has_oa && oa->opaque_input && !ip->shadow) {
		*why = "prompt given as token ids cannot be inspected";
		return 400;
	}
	inspect_scratch *s;
	if (scratch_get(ip, &s) != CUSTOS_OK) {
		log_error("inspect: %s", err_msg());
		*why = "content inspection unavailable";
		return 500;
	}
	uint64_t t0 = tm_mono_ns();
	buf out;
	buf_init(&out, INSP_PROMPT_MAX);
	span in = buf_span(body);
	size_t bom = !has_oa && in.len >= 3 && memcmp(in.ptr, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
	custos_err e = buf_append(&out, in.ptr, bom); /* a BOM before JSON is kept as it was */
	if (e == CUSTOS_OK)
		e = inspect_json_redact(ip->eng, s, &ip->prompt,
		                        span_of(in.ptr + bom, in.len - bom), &out, &ip->psum);
	if (e == CUSTOS_ERR_PARSE && !has_oa) {
		/* not JSON (not an OpenAI path): as text, its JSON escapes decoded first */
		slot tmp = { 0 };
		buf plain;
		buf_init(&plain, INSP_PROMPT_MAX);
		buf_reset(&out);
		inspect_summary_init(&ip->psum);
		e = args_decode(&tmp, in, true, &plain);
		if (e == CUSTOS_OK)
			e = inspect_redact_text(ip->eng, s, &ip->prompt, buf_span(&plain), &out,
			                        &ip->psum);
		buf_free(&plain);
	}
	ip->t_ns += tm_mono_ns() - t0;
	if (e == CUSTOS_OK && ip->psum.redacted && !ip->shadow) {
		buf_free(body);
		*body = out;
		return 0;
	}
	buf_free(&out);
	if (e == CUSTOS_OK)
		return 0;
	if (e == CUSTOS_ERR_DENIED) {
		if (ip->shadow)
			return 0;
		snprintf(ip->why, sizeof(ip->why),
		         "prompt denied by content inspection: %s detected",
		         det_name(ip, ip->psum.deny_detector));
		*why = ip->why;
		return 403;
	}
	if (e == CUSTOS_ERR_PARSE) {
		*why = "request body cannot be inspected: not valid JSON";
		return 400;
	}
	if (e == CUSTOS_ERR_LIMIT) {
		/* over the inspector's byte bound (413), or too deep or too many findings to
		 * inspect (422): the message says which */
		snprintf(ip->why, sizeof(ip->why), "request body cannot be inspected: %s",
		         err_msg());
		*why = ip->why;
		return buf_used(body) > INSPECT_JSON_MAX_BODY ? 413 : 422;
	}
	log_error("inspect: prompt: %s", err_msg());
	*why = "content inspection failed";
	return 500;
}

unsigned ingress_inspect_request_multipart(ingress_insp **ipp, const decide_out *dec, span boundary,
                                           buf *body, const char **why)
{
	*why = NULL;
	if (!dec->has_inspect || dec->insp_engine == NULL)
		return 0;
	ingress_insp *ip = insp_setup(ipp, dec);
	if (!ip->prompt_on || buf_used(body) == 0)
		return 0;
	if (boundary.len == 0) {
		if (ip->shadow)
			return 0;
		*why = "multipart request body without one valid boundary parameter cannot be "
		       "inspected";
		return 400;
	}
	inspect_scratch *s;
	if (scratch_get(ip, &s) != CUSTOS_OK) {
		log_error("inspect: %s", err_msg());
		*why = "content inspection unavailable";
		return 500;
	}
	uint64_t t0 = tm_mono_ns();
	/* the masked copy, a JSON or form part's scratch, a part decoded and masked: each at
	 * most what the JSON path allows a body */
	buf out, tmp, dec_, msk;
	buf_init(&out, INSP_PROMPT_MAX);
	buf_init(&tmp, INSP_PROMPT_MAX);
	buf_init(&dec_, INSP_PROMPT_MAX);
	buf_init(&msk, INSP_PROMPT_MAX);
	custos_err e = egress_inspect_multipart(ip->eng, s, &ip->prompt, boundary, buf_span(body),
	                                        &tmp, &dec_, &msk, &out, &ip->psum);
	ip->t_ns += tm_mono_ns() - t0;
	buf_free(&tmp);
	buf_free(&dec_);
	buf_free(&msk);
	if (e == CUSTOS_OK && ip->psum.redacted && !ip->shadow) {
		buf_free(body);
		*body = out;
		return 0;
	}
	buf_free(&out);
	if (e == CUSTOS_OK || ip->shadow)
		return 0;
	if (e == CUSTOS_ERR_DENIED) {
		snprintf(ip->why, sizeof(ip->why),
		         "prompt denied by content inspection: %s detected",
		         det_name(ip, ip->psum.deny_detector));
		*why = ip->why;
		return 403;
	}
	if (e == CUSTOS_ERR_PARSE || e == CUSTOS_ERR_UNSUPPORTED || e == CUSTOS_ERR_LIMIT) {
		snprintf(ip->why, sizeof(ip->why), "multipart request body %s: %s (fail closed)",
		         e == CUSTOS_ERR_PARSE         ? "is malformed"
		         : e == CUSTOS_ERR_UNSUPPORTED ? "cannot be inspected"
		                                       : "is past an inspection limit",
		         err_msg());
		*why = ip->why;
		return e == CUSTOS_ERR_PARSE ? 400 : e == CUSTOS_ERR_UNSUPPORTED ? 415 : 413;
	}
	log_error("inspect: multipart prompt: %s", err_msg());
	*why = "content inspection failed";
	return 500;
}

/* ---------------------------------------------------------------------------------------------
 * responses
 */
/* The first element of h's Content-Encoding fields that is not identity, in *el. */
static bool encoded_first(const http1_head *h, span *el)
{
	for (size_t i = 0; i < h->nhdrs; i++) {
		if (!span_case_eq(h->hdrs[i].name, SPAN_LIT("Content-Encoding")))
			continue;
		span v = h->hdrs[i].value;
		while (v.len > 0) {
			const char *comma = memchr(v.ptr, ',', v.len);
			size_t l = comma ? (size_t)(comma - v.ptr) : v.len;
			*el = span_trim(span_of(v.ptr, l));
			if (el->len > 0 && !span_case_eq(*el, SPAN_LIT("identity")))
				return true;
			v = comma ? span_of(comma + 1, v.len - l - 1) : span_of("", 0);
		}
	}
	return false;
}

bool ingress_inspect_encoded(const http1_head *h)
{
	span el;
	return encoded_first(h, &el);
}

bool ingress_inspect_prompt_wanted(const decide_out *dec)
{
	if (!dec->has_inspect || dec->insp_engine == NULL)
		return false;
	for (size_t i = 0; i < INSPECT_MAX_DETECTORS; i++)
		if (dec->insp_prompt[i] != INSPECT_ACT_NONE)
			return true;
	return false;
}

bool ingress_inspect_response_on(const ingress_insp *ip)
{
	return ip != NULL && ip->response_on && !ip->shadow;
}

bool ingress_inspect_response_begin(ingress_insp *ip, const http1_head *h)
{
	span v;

	if (ip == NULL || !ip->response_on || ip->shadow || h->framing == HTTP1_BODY_NONE ||
	    h->framing == HTTP1_BODY_TUNNEL)
		return false;
	span el;
	if (encoded_first(h, &el)) {
		/* kept for the reason: lower case, printable, no quote or backslash, cut short */
		size_t n = 0;
		for (; n < el.len && n < sizeof(ip->coding) - 1; n++) {
			char c = el.ptr[n];
			ip->coding[n] = c >= 'A' && c <= 'Z' ? (char)(c + 32)
			                : c > ' ' && c < 127 && c != '"' && c != '\\' ? c
			                                                              : '?';
		}
		ip->coding[n] = '\0';
		ip->mode = RM_BLOCK;
		return true;
	}
	if (ip->raw_only) {
		ip->mode = RM_RAW;
		return true;
	}
	/* The media type without parameters, in any case (RFC 9110 §8.3.1). */
	span mt = span_of("", 0);
	if (http1_header_get(h, SPAN_LIT("Content-Type"), &v)) {
		const char *semi = memchr(v.ptr, ';', v.len);
		mt = span_trim(semi ? span_of(v.ptr, (size_t)(semi - v.ptr)) : v);
	}
	if (span_case_eq(mt, SPAN_LIT("text/event-stream"))) {
		ip->mode = RM_SSE;
		sse_parser_init(&ip->sse, 0);
		ip->sse_init = true;
	} else if (span_case_eq(mt, SPAN_LIT("application/json")) ||
	           (mt.len > 5 &&
	            span_case_eq(span_of(mt.ptr + mt.len - 5, 5), SPAN_LIT("+json")))) {
		ip->mode = RM_JSON;
	} else {
		ip->mode = RM_RAW;
	}
	return true;
}

void ingress_inspect_response_raw(ingress_insp *ip)
{
	if (ip)
		ip->raw_only = true;
}

bool ingress_inspect_response_active(const ingress_insp *ip)
{
	return ip != NULL && ip->mode != RM_NONE;
}

bool ingress_inspect_response_held(const ingress_insp *ip)
{
	return ip != NULL && ip->mode == RM_JSON;
}

bool ingress_inspect_response_refused(ingress_insp *ip, const char **why)
{
	if (ip == NULL || ip->mode != RM_BLOCK)
		return false;
	ip->denied = true;
	snprintf(ip->why, sizeof(ip->why),
	         "response under Content-Encoding %s not inspected: refused (fail closed)",
	         ip->coding);
	*why = ip->why;
	return true;
}

/* The SSE error event that ends a denied stream, then [DONE]. */
static custos_err sse_deny(ingress_insp *ip, int det)
{
	buf j;
	json_writer w;

	ip->denied = true;
	snprintf(ip->why, sizeof(ip->why), "response denied by content inspection: %s detected",
	         det_name(ip, det));
	buf_init(&j, 1024);
	json_init(&w, &j);
	json_obj_begin(&w);
	json_key(&w, "error");
	json_obj_begin(&w);
	json_kv_cstr(&w, "message", ip->why);
	json_kv_cstr(&w, "type", "policy_violation");
	json_kv_cstr(&w, "code", "content_denied");
	json_obj_end(&w);
	json_obj_end(&w);
	custos_err e = json_finish(&w);
	if (e == CUSTOS_OK)
		e = sse_write_event(&ip->out, span_of("", 0), buf_span(&j));
	if (e == CUSTOS_OK)
		e = sse_write_event(&ip->out, span_of("", 0), SPAN_LIT("[DONE]"));
	buf_free(&j);
	GUARD(e);
	return CUSTOS_ERR_DENIED;
}

/* Remembers id/created/model of the stream's chunks for synthetic events. */
static void sse_template(ingress_insp *ip, span data)
{
	static const char *const names[] = { "id", "created", "model", "object" };
	jsonr_val root, v[4];

	if (buf_used(&ip->tmpl) > 0 || jsonr_parse(data, NULL, &root) != CUSTOS_OK)
		return;
	uint32_t got = jsonr_obj_pick(root, names, 4, v);
	if ((got & 8) && v[3].type == JSONR_STRING && jsonr_str_eq(v[3].str, "text_completion"))
		ip->text_completion = true;
	for (size_t i = 0; i < 3; i++) {
		if (!(got & (1u << i)))
			continue;
		if (buf_printf(&ip->tmpl, "\"%s\":%.*s,", names[i], (int)v[i].raw.len,
		               v[i].raw.ptr) != CUSTOS_OK) {
			buf_reset(&ip->tmpl);
			return;
		}
	}
}

/* An extra chunk event carrying text for one choice's content or tool call (a held-back
 * tail), written to ip->out. */
static custos_err sse_synth(ingress_insp *ip, uint32_t choice, uint32_t tool, unsigned field,
                            bool parts, span text)
{
	buf j;

	if (text.len == 0)
		return CUSTOS_OK;
	buf_init(&j, INSP_OUT_MAX);
	custos_err e = buf_append_cstr(&j, "{");
	if (e == CUSTOS_OK)
		e = buf_append_span(&j, buf_span(&ip->tmpl));
	if (e == CUSTOS_OK)
		e = buf_printf(&j, "\"object\":\"%s\",\"choices\":[{\"index\":%u,",
		               ip->text_completion ? "text_completion" : "chat.completion.chunk",
		               choice);
	if (e == CUSTOS_OK && tool != TOOL_NONE)
		e = buf_printf(
		        &j,
		        "\"delta\":{\"tool_calls\":[{\"index\":%u,\"function\":{\"arguments\":\"",
		        tool);
	else if (e == CUSTOS_OK && ip->text_completion && field == F_CONTENT)
		e = buf_append_cstr(&j, "\"text\":\"");
	else if (e == CUSTOS_OK && field == F_TRANSCRIPT)
		e = buf_append_cstr(&j, "\"delta\":{\"audio\":{\"transcript\":\"");
	else if (e == CUSTOS_OK && parts)
		e = buf_append_cstr(&j, "\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"");
	else if (e == CUSTOS_OK)
		e = buf_printf(&j, "\"delta\":{\"%s\":\"", chat_fields[field]);
	if (e == CUSTOS_OK)
		e = json_escape(&j, text);
	if (e == CUSTOS_OK)
		/* closed in the order it was opened: a text-completion stream whose content came
		 * as parts (a mixed stream) was opened as "text" and must close as one */
		e = buf_append_cstr(&j, tool != TOOL_NONE ? "\"}}]},\"finish_reason\":null}]}"
		                        : ip->text_completion && field == F_CONTENT
		                                ? "\",\"finish_reason\":null}]}"
		                        : field == F_TRANSCRIPT ? "\"}},\"finish_reason\":null}]}"
		                        : parts                 ? "\"}]},\"finish_reason\":null}]}"
		                                                : "\"},\"finish_reason\":null}]}");
	if (e == CUSTOS_OK)
		e = sse_write_event(&ip->out, span_of("", 0), buf_span(&j));
	buf_free(&j);
	return e;
}

static custos_err slot_new(ingress_insp *ip, uint32_t choice, uint32_t tool, slot **out);

/* The stream of (choice, tool, field); made when `create`, else *out is NULL when there is
 * none. */
static custos_err slot_get(ingress_insp *ip, uint32_t choice, uint32_t tool, unsigned field,
                           bool create, slot **out)
{
	*out = NULL;
	for (size_t i = 0; i < ip->nsl; i++)
		if (!ip->sl[i].resp && ip->sl[i].choice == choice && ip->sl[i].tool == tool &&
		    ip->sl[i].field == field) {
			*out = &ip->sl[i];
			return CUSTOS_OK;
		}
	if (!create)
		return CUSTOS_OK;
	GUARD(slot_new(ip, choice, tool, out));
	(*out)->field = (uint8_t)field;
	return CUSTOS_OK;
}

static custos_err slot_new(ingress_insp *ip, uint32_t choice, uint32_t tool, slot **out)
{
	ENSURE(ip->nsl < INSP_MAX_STREAMS, CUSTOS_ERR_LIMIT,
	       "inspect: more than %u content and tool-call streams in one response",
	       INSP_MAX_STREAMS);
	slot *sl = &ip->sl[ip->nsl];
	GUARD(inspect_stream_new(ip->eng, &ip->response, &sl->st));
	sl->choice = choice;
	sl->tool = tool;
	sl->field = F_CONTENT;
	sl->parts = false;
	sl->done = false;
	sl->npend = 0;
	sl->q_in = sl->q_esc = false;
	sl->resp = false;
	sl->pos_len = 0;
	buf_init(&sl->dtype, 1024);
	buf_init(&sl->last, SSE_MAX_EVENT_BYTES);
	buf_init(&sl->etyp, SSE_MAX_EVENT_BYTES);
	ip->nsl++;
	*out = sl;
	return CUSTOS_OK;
}

/* The value of \uXXXX at p (6 bytes), or -1. */
static long u_escape(const char *p)
{
	if (p[0] != '\\' || p[1] != 'u')
		return -1;
	long v = 0;
	for (int k = 2; k < 6; k++) {
		int h = num_hex_digit((unsigned char)p[k]);
		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

/* Tool-call arguments are a JSON text that arrives in pieces: the escapes inside it that
 * stand for a plain character (\u0034, \/) are written as that character, so detectors see
 * what the tool will read and the JSON means the same. Quotes, backslashes and control
 * characters stay escaped. An escape cut at the end of a piece waits for the next (or fin). */
static custos_err args_decode(slot *sl, span in, bool fin, buf *out)
{
	const char *p;
	size_t len;
	buf joined;
	bool own = false;

	if (sl->npend > 0) {
		buf_init(&joined, sl->npend + in.len + 1);
		own = true;
		custos_err e = buf_append(&joined, sl->pend, sl->npend);
		if (e == CUSTOS_OK)
			e = buf_append_span(&joined, in);
		if (e != CUSTOS_OK) {
			buf_free(&joined);
			return e;
		}
		p = (const char *)buf_ptr(&joined);
		len = buf_used(&joined);
	} else {
		p = in.ptr;
		len = in.len;
	}
	sl->npend = 0;
	custos_err e = CUSTOS_OK;
	size_t i = 0;
	while (i < len && e == CUSTOS_OK) {
		size_t run = i;
		while (run < len && p[run] != '\\')
			run++;
		e = buf_append(out, p + i, run - i);
		i = run;
		if (i >= len || e != CUSTOS_OK)
			break;
		size_t left = len - i;
		if (left < 2 || (p[i + 1] == 'u' && left < 6)) {
			if (fin)
				e = buf_append(out, p + i, left);
			else
				memcpy(sl->pend, p + i, left), sl->npend = (uint8_t)left;
			break;
		}
		if (p[i + 1] == '/') {
			e = buf_append(out, "/", 1);
			i += 2;
			continue;
		}
		if (p[i + 1] != 'u') {
			e = buf_append(out, p + i, 2);
			i += 2;
			continue;
		}
		long u = u_escape(p + i);
		size_t used = 6;
		if (u >= 0xD800 && u <= 0xDBFF) {
			if (left < 12 && !fin) {
				memcpy(sl->pend, p + i, left);
				sl->npend = (uint8_t)left;
				break;
			}
			long lo = left >= 12 ? u_escape(p + i + 6) : -1;
			if (lo >= 0xDC00 && lo <= 0xDFFF) {
				u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
				used = 12;
			} else {
				u = -1;
			}
		}
		if (u < 0x20 || u == '"' || u == '\\' || (u >= 0xD800 && u <= 0xDFFF)) {
			e = buf_append(out, p + i, used); /* kept as it was */
		} else {
			char o[4];
			size_t ol;
			unsigned cp = (unsigned)u;
			if (cp < 0x80) {
				o[0] = (char)cp, ol = 1;
			} else if (cp < 0x800) {
				o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)),
				ol = 2;
			} else if (cp < 0x10000) {
				o[0] = (char)(0xE0 | cp >> 12),
				o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
				o[2] = (char)(0x80 | (cp & 0x3F)), ol = 3;
			} else {
				o[0] = (char)(0xF0 | cp >> 18),
				o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
				o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)),
				o[3] = (char)(0x80 | (cp & 0x3F));
				ol = 4;
			}
			e = buf_append(out, o, ol);
		}
		i += used;
	}
	if (own)
		buf_free(&joined);
	return e;
}

/* Released arguments text dst[at..]: a mask outside a JSON string (a number was masked)
 * is written as a string, so the arguments stay valid JSON. */
static custos_err args_quote_masks(slot *sl, buf *dst, size_t at)
{
	static const char mk[] = "[REDACTED:";
	buf t;
	size_t n = buf_used(dst) - at;

	if (n == 0)
		return CUSTOS_OK;
	buf_init(&t, 2 * n + 2);
	custos_err e = buf_append(&t, buf_ptr(dst) + at, n);
	const char *p = (const char *)buf_ptr(&t);
	dst->len = at;
	for (size_t i = 0; i < n && e == CUSTOS_OK; i++) {
		char x = p[i];
		if (sl->q_in) {
			if (sl->q_esc)
				sl->q_esc = false;
			else if (x == '\\')
				sl->q_esc = true;
			else if (x == '"')
				sl->q_in = false;
		} else if (x == '"') {
			sl->q_in = true;
		} else if (x == '[' && n - i >= sizeof(mk) - 1 &&
		           memcmp(p + i, mk, sizeof(mk) - 1) == 0) {
			const char *end = memchr(p + i, ']', n - i);
			if (end != NULL) {
				size_t ml = (size_t)(end - (p + i)) + 1;
				e = buf_append(dst, "\"", 1);
				if (e == CUSTOS_OK)
					e = buf_append(dst, p + i, ml);
				if (e == CUSTOS_OK)
					e = buf_append(dst, "\"", 1);
				i += ml - 1;
				continue;
			}
		}
		if (e == CUSTOS_OK)
			e = buf_append(dst, &x, 1);
	}
	buf_free(&t);
	return e;
}

/* Feeds text (escaped JSON string contents when `escaped`) and, when fin, finishes the slot;
 * what is released is appended to dst. DENIED: the closing events are in ip->out. */
static custos_err slot_feed(ingress_insp *ip, inspect_scratch *s, slot *sl, span text, bool escaped,
                            bool fin, buf *dst)
{
	custos_err e = CUSTOS_OK;

	ENSURE(!sl->done || text.len == 0, CUSTOS_ERR_PARSE,
	       "inspect: stream text after its finish_reason");
	size_t at = buf_used(dst);
	if (text.len > 0 || (sl->tool != TOOL_NONE && fin && sl->npend > 0)) {
		buf_reset(&ip->text);
		if (escaped)
			GUARD(jsonr_unescape(text, &ip->text));
		else
			GUARD(buf_append_span(&ip->text, text));
		span t = buf_span(&ip->text);
		buf dec;
		buf_init(&dec, SSE_MAX_EVENT_BYTES + sizeof(sl->pend));
		if (sl->tool != TOOL_NONE) {
			e = args_decode(sl, t, fin, &dec);
			t = buf_span(&dec);
		}
		if (e == CUSTOS_OK && t.len > 0)
			e = inspect_stream_feed(sl->st, s, t, dst);
		buf_free(&dec);
	}
	if (e == CUSTOS_OK && fin && !sl->done) {
		sl->done = true;
		e = inspect_stream_finish(sl->st, s, dst);
	}
	if (e == CUSTOS_OK && sl->tool != TOOL_NONE)
		e = args_quote_masks(sl, dst, at);
	if (e == CUSTOS_ERR_DENIED)
		return sse_deny(ip, inspect_stream_summary(sl->st)->deny_detector);
	return e;
}

/* The delta event that carries a responses-API part's held-back tail: its last delta event
 * again, with "delta" replaced by the tail. */
static custos_err resp_synth(ingress_insp *ip, slot *sl, span text)
{
	if (text.len == 0)
		return CUSTOS_OK;
	jsonr_edit ed = { .at = span_of((const char *)buf_ptr(&sl->last) + sl->dat, sl->dlen),
		          .text = text };
	buf_reset(&ip->tmp);
	GUARD(jsonr_rewrite(buf_span(&sl->last), &ed, 1, &ip->tmp));
	return sse_write_event(&ip->out, buf_span(&sl->etyp), buf_span(&ip->tmp));
}

/* Finishes one open stream: its held-back tail goes out in a synthetic event. */
static custos_err slot_finish(ingress_insp *ip, inspect_scratch *s, slot *sl)
{
	buf_reset(&ip->tail);
	GUARD(slot_feed(ip, s, sl, span_of("", 0), false, true, &ip->tail));
	if (sl->resp)
		return resp_synth(ip, sl, buf_span(&ip->tail));
	return sse_synth(ip, sl->choice, sl->tool, sl->field, sl->parts, buf_span(&ip->tail));
}

/* Finishes the open streams of one choice (or all, choice == TOOL_NONE, delta-event parts
 * included) that had no text in the current event: their tails go out as synthetic events,
 * before it. */
static custos_err sse_finish(ingress_insp *ip, inspect_scratch *s, uint32_t choice)
{
	for (size_t i = 0; i < ip->nsl; i++) {
		slot *sl = &ip->sl[i];
		if (sl->done || (choice != TOOL_NONE && (sl->resp || sl->choice != choice)))
			continue;
		GUARD(slot_finish(ip, s, sl));
	}
	return CUSTOS_OK;
}

/* Finishes the open delta-event parts at pos[0..n) (NULL: all of them). */
static custos_err resp_done(ingress_insp *ip, inspect_scratch *s, const char *pos, size_t n)
{
	for (size_t i = 0; i < ip->nsl; i++) {
		slot *sl = &ip->sl[i];
		if (!sl->resp || sl->done ||
		    (pos != NULL && (sl->pos_len != n || memcmp(sl->pos, pos, n) != 0)))
			continue;
		GUARD(slot_finish(ip, s, sl));
	}
	return CUSTOS_OK;
}

static bool str_ends(span s, const char *lit)
{
	size_t l = strlen(lit);
	return s.len >= l && memcmp(s.ptr + s.len - l, lit, l) == 0;
}

static custos_err sse_event_out(ingress_insp *ip, inspect_scratch *s, const sse_event *ev);
static custos_err part_write(ingress_insp *ip, inspect_scratch *s, slot *sl, const sse_event *ev,
                             jsonr_val root, span str, const char *const *known, size_t n,
                             const char *k0, const char *k1, const char *k2);

/* The responses API streams text as events such as {"type":"response.output_text.delta",
 * "item_id":..,"output_index":..,"content_index":..,"delta":".."}: every event whose type ends
 * in ".delta" and whose "delta" is a string feeds the stream of its part (item id and indices)
 * and type, as chunks do, so a value split over events is reassembled; the event goes out with
 * "delta" replaced by what is released. A ".done" event of the same part (or a terminal event,
 * [DONE], the end of the body) finishes it: the held-back tail goes out first, in one more
 * delta event. "Arguments" deltas are JSON text in pieces, as tool-call arguments are.
 * *handled: the event was such a delta and has been written. */
static custos_err resp_event(ingress_insp *ip, inspect_scratch *s, const sse_event *ev,
                             bool *handled)
{
	static const char *const names[] = { "type",         "delta",         "item_id",
		                             "output_index", "content_index", "summary_index",
		                             "logprobs" };
	jsonr_val root, v[7];
	char pos[RESP_POS_MAX];
	size_t n = 0;

	*handled = false;
	if (jsonr_parse(ev->data, NULL, &root) != CUSTOS_OK || root.type != JSONR_OBJECT)
		return CUSTOS_OK; /* inspected whole, as text if need be */
	uint32_t got = jsonr_obj_pick(root, names, CUSTOS_ARRAY_LEN(names), v);
	if (!(got & 1) || v[0].type != JSONR_STRING || v[0].raw.len > RESP_POS_MAX)
		return CUSTOS_OK;
	for (size_t k = 2; k <= 5; k++) {
		span r = got & (1u << k) ? v[k].raw : span_of("", 0);
		if (n + r.len + 1 > sizeof(pos))
			return CUSTOS_OK; /* not a part this proxy follows: inspected whole */
		memcpy(pos + n, r.ptr, r.len);
		n += r.len;
		pos[n++] = '\x1f';
	}
	span type = v[0].str;
	if (!str_ends(type, ".delta") || !(got & 2) || v[1].type != JSONR_STRING) {
		if (str_ends(type, ".done"))
			return resp_done(ip, s, pos, n);
		if (jsonr_str_eq(type, "response.completed") ||
		    jsonr_str_eq(type, "response.failed") ||
		    jsonr_str_eq(type, "response.incomplete") ||
		    jsonr_str_eq(type, "response.done") || jsonr_str_eq(type, "error"))
			return resp_done(ip, s, NULL, 0);
		return CUSTOS_OK;
	}
	if ((got & 64) && !span_eq_cstr(v[6].raw, "[]") && !span_eq_cstr(v[6].raw, "null")) {
		/* token logprobs carry the text past the stream: written [] (as chunks' are null) */
		buf stripped;
		buf_init(&stripped, SSE_MAX_EVENT_BYTES + 4);
		const char *d = ev->data.ptr;
		size_t at = (size_t)(v[6].raw.ptr - d);
		custos_err e = buf_append(&stripped, d, at);
		if (e == CUSTOS_OK)
			e = buf_append_cstr(&stripped, "[]");
		if (e == CUSTOS_OK)
			e = buf_append(&stripped, d + at + v[6].raw.len,
			               ev->data.len - at - v[6].raw.len);
		sse_event ev2 = *ev;
		ev2.data = buf_span(&stripped);
		if (e == CUSTOS_OK)
			e = sse_event_out(ip, s, &ev2);
		buf_free(&stripped);
		*handled = true;
		return e;
	}
	slot *sl = NULL;
	for (size_t i = 0; i < ip->nsl && sl == NULL; i++)
		if (ip->sl[i].resp && ip->sl[i].pos_len == n &&
		    memcmp(ip->sl[i].pos, pos, n) == 0 &&
		    span_eq(buf_span(&ip->sl[i].dtype), v[0].raw))
			sl = &ip->sl[i];
	if (sl == NULL) {
		bool args = memmem(type.ptr, type.len, "arguments", 9) != NULL;
		GUARD(slot_new(ip, RESP_CHOICE, args ? 0 : TOOL_NONE, &sl));
		sl->resp = true;
		memcpy(sl->pos, pos, n);
		sl->pos_len = n;
		GUARD(buf_append_span(&sl->dtype, v[0].raw));
	}
	buf_reset(&ip->rel);
	GUARD(slot_feed(ip, s, sl, v[1].str, true, false, &ip->rel));
	*handled = true;
	/* the event's other strings (besides its type and item id) are inspected whole */
	const char *known[3] = { v[1].str.ptr, v[0].str.ptr,
		                 (got & 4) && v[2].type == JSONR_STRING ? v[2].str.ptr : NULL };
	return part_write(ip, s, sl, ev, root, v[1].str, known, CUSTOS_ARRAY_LEN(known), "delta",
	                  NULL, NULL);
}

static custos_err block_redact(ingress_insp *ip, inspect_scratch *s, span data, buf *out);

/* The string at path (one to three member names) of a JSON object, or false. */
static bool member_str(span json, const char *k0, const char *k1, const char *k2, span *out)
{
	jsonr_val root, v;

	if (jsonr_parse(json, NULL, &root) != CUSTOS_OK || !jsonr_obj_get(root, k0, &v))
		return false;
	if (k1 != NULL && !jsonr_obj_get(v, k1, &v))
		return false;
	if (k2 != NULL && !jsonr_obj_get(v, k2, &v))
		return false;
	if (v.type != JSONR_STRING)
		return false;
	*out = v.str;
	return true;
}

/* Whether v holds a string value other than those starting at skip[0..n) (at any depth). */
static bool other_strings(jsonr_val v, const char *const *skip, size_t n)
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
		if (other_strings(x, skip, n))
			return true;
	return false;
}

/* Writes a delta event of part sl: its streamed string str (at member path k0.k1.k2 of
 * ev->data) replaced by what was released (ip->rel). The rest of the event, the streamed string
 * blanked, is inspected whole when it holds a string other than those starting at known[0..n)
 * (the streamed one, the event's types and ids; most events hold none), so a text a server
 * puts beside the delta is not passed uninspected. The event so written is the template of the
 * one that carries the part's tail. DENIED: the closing events are in ip->out. */
static custos_err part_write(ingress_insp *ip, inspect_scratch *s, slot *sl, const sse_event *ev,
                             jsonr_val root, span str, const char *const *known, size_t n,
                             const char *k0, const char *k1, const char *k2)
{
	buf blank, red;
	buf_init(&blank, SSE_MAX_EVENT_BYTES);
	buf_init(&red, INSP_OUT_MAX);
	span base = ev->data, at = str;
	custos_err e = CUSTOS_OK;
	if (other_strings(root, known, n)) {
		jsonr_edit blanked = { .at = str, .text = span_of("", 0) };
		e = jsonr_rewrite(ev->data, &blanked, 1, &blank);
		if (e == CUSTOS_OK)
			e = block_redact(ip, s, buf_span(&blank), &red);
		if (e == CUSTOS_ERR_DENIED)
			e = sse_deny(ip, ip->rsum.deny_detector);
		base = buf_span(&red);
		if (e == CUSTOS_OK && (!member_str(base, k0, k1, k2, &at) || at.len != 0))
			e = err_set(CUSTOS_ERR_INTERNAL, "inspect: a streamed member moved");
	}
	if (e == CUSTOS_OK) {
		jsonr_edit ed = { .at = at, .text = buf_span(&ip->rel) };
		buf_reset(&ip->tmp);
		e = jsonr_rewrite(base, &ed, 1, &ip->tmp);
	}
	if (e == CUSTOS_OK) { /* the template of the event that carries the tail */
		buf_reset(&sl->last);
		buf_reset(&sl->etyp);
		sl->dat = (size_t)(at.ptr - base.ptr);
		sl->dlen = buf_used(&ip->tmp) + at.len - base.len;
		e = buf_append_span(&sl->last, buf_span(&ip->tmp));
		if (e == CUSTOS_OK)
			e = buf_append_span(&sl->etyp, ev->type);
	}
	if (e == CUSTOS_OK)
		e = sse_write_event_from(&ip->out, ev, buf_span(&ip->tmp));
	buf_free(&blank);
	buf_free(&red);
	return e;
}

static custos_err part_event(ingress_insp *ip, inspect_scratch *s, const sse_event *ev,
                             bool *handled);

/* The event with the values at strip[0..n) (raw spans in ev->data, any order) written [],
 * then handled as a delta event. */
static custos_err llama_strip(ingress_insp *ip, inspect_scratch *s, const sse_event *ev,
                              jsonr_edit *strip, size_t n, bool *handled)
{
	for (size_t i = 1; i < n; i++) /* document order */
		for (size_t j = i; j > 0 && strip[j].at.ptr < strip[j - 1].at.ptr; j--) {
			jsonr_edit t = strip[j];
			strip[j] = strip[j - 1];
			strip[j - 1] = t;
		}
	buf stripped;
	buf_init(&stripped, SSE_MAX_EVENT_BYTES);
	const char *at = ev->data.ptr;
	custos_err e = CUSTOS_OK;
	for (size_t i = 0; i < n && e == CUSTOS_OK; i++) {
		e = buf_append(&stripped, at, (size_t)(strip[i].at.ptr - at));
		if (e == CUSTOS_OK)
			e = buf_append_cstr(&stripped, "[]");
		at = strip[i].at.ptr + strip[i].at.len;
	}
	if (e == CUSTOS_OK)
		e = buf_append(&stripped, at, (size_t)(ev->data.ptr + ev->data.len - at));
	sse_event ev2 = *ev;
	ev2.data = buf_span(&stripped);
	if (e == CUSTOS_OK)
		e = part_event(ip, s, &ev2, handled);
	buf_free(&stripped);
	return e;
}

/* Streams that are neither chat chunks nor responses-API deltas, each part a stream of its
 * own like a choice's content:
 * - Anthropic-style events {"type":"content_block_delta","index":N,"delta":{"type":
 *   "text_delta","text":..}} (also thinking_delta / thinking, and input_json_delta /
 *   partial_json, JSON in pieces like tool-call arguments): one stream per block index and
 *   delta type; content_block_stop of the block (message_stop, error, [DONE], the end of the
 *   body) finishes it, its tail in one more delta event before.
 * - llama.cpp /completion events {"content":..,"stop":false,..}: one stream per "index"; the
 *   event with "stop": true finishes it (its tail goes in that event's content).
 * The streamed string is replaced by what is released; the rest of the event (the final
 * llama.cpp event's settings, an unknown member) is inspected whole as before, with the
 * streamed string blanked. *handled: the event was such a delta and has been written. */
static custos_err part_event(ingress_insp *ip, inspect_scratch *s, const sse_event *ev,
                             bool *handled)
{
	static const char *const names[] = { "type",    "index", "delta",
		                             "content", "stop",  "completion_probabilities",
		                             "probs",   "tokens" };
	static const char *const dnames[] = { "type", "text", "thinking", "partial_json" };
	static const char *const dtypes[] = { "", "text_delta", "thinking_delta",
		                              "input_json_delta" };
	jsonr_val root, v[8], d[4];
	char pos[RESP_POS_MAX];
	const char *k0, *k1 = NULL, *k2 = NULL;
	const char *known[3] = { NULL, NULL, NULL }; /* the streamed string, the event's types */
	span str, dtype;
	bool fin = false, args = false;

	*handled = false;
	if (jsonr_parse(ev->data, NULL, &root) != CUSTOS_OK || root.type != JSONR_OBJECT)
		return CUSTOS_OK;
	uint32_t got = jsonr_obj_pick(root, names, CUSTOS_ARRAY_LEN(names), v);
	span idx = (got & 2) ? v[1].raw : SPAN_LIT("0"); /* one stream: index 0 */
	if (idx.len + 2 > sizeof(pos))
		return CUSTOS_OK; /* not a part this proxy follows: inspected whole */
	pos[1] = '\x1f';
	memcpy(pos + 2, idx.ptr, idx.len);
	if ((got & 1) && v[0].type == JSONR_STRING) {
		span type = v[0].str;
		pos[0] = 'A';
		if (jsonr_str_eq(type, "content_block_stop"))
			return resp_done(ip, s, pos, idx.len + 2);
		if (jsonr_str_eq(type, "message_stop"))
			return resp_done(ip, s, NULL, 0);
		if (!jsonr_str_eq(type, "content_block_delta") || !(got & 4) ||
		    v[2].type != JSONR_OBJECT)
			return CUSTOS_OK;
		uint32_t dg = jsonr_obj_pick(v[2], dnames, CUSTOS_ARRAY_LEN(dnames), d);
		if (!(dg & 1) || d[0].type != JSONR_STRING)
			return CUSTOS_OK;
		unsigned k = 1;
		while (k < CUSTOS_ARRAY_LEN(dtypes) && !jsonr_str_eq(d[0].str, dtypes[k]))
			k++;
		/* A thinking block's signature comes after its text: the text's tail goes first. */
		if (jsonr_str_eq(d[0].str, "signature_delta"))
			return resp_done(ip, s, pos, idx.len + 2);
		jsonr_val cit, ct;
		if (jsonr_str_eq(d[0].str, "citations_delta")) {
			/* the cited texts of a block, one after the other: a part of their own */
			if (!jsonr_obj_get(v[2], "citation", &cit) || cit.type != JSONR_OBJECT ||
			    !jsonr_obj_get(cit, "cited_text", &ct) || ct.type != JSONR_STRING)
				return CUSTOS_OK; /* inspected whole */
			str = ct.str;
			k2 = "cited_text";
			k1 = "citation";
		} else if (k == CUSTOS_ARRAY_LEN(dtypes) || !(dg & (1u << k)) ||
		           d[k].type != JSONR_STRING) {
			return CUSTOS_OK; /* signatures, unknown deltas...: inspected whole */
		} else {
			str = d[k].str;
			k1 = dnames[k];
			args = k == 3;
		}
		dtype = d[0].raw;
		known[1] = v[0].str.ptr;
		known[2] = d[0].str.ptr;
		k0 = "delta";
	} else if (!(got & 1) && (got & 8) && v[3].type == JSONR_STRING && (got & 16) &&
	           (v[4].type == JSONR_TRUE || v[4].type == JSONR_FALSE)) {
		/* token probabilities and ids carry the text past the stream (as logprobs do):
		 * written [] */
		jsonr_edit strip[3];
		size_t ns = 0;
		for (unsigned k = 5; k < 8; k++)
			if ((got & (1u << k)) && !span_eq_cstr(v[k].raw, "[]") &&
			    !span_eq_cstr(v[k].raw, "null"))
				strip[ns++] = (jsonr_edit){ .at = v[k].raw };
		if (ns > 0)
			return llama_strip(ip, s, ev, strip, ns, handled);
		pos[0] = 'L';
		str = v[3].str;
		dtype = SPAN_LIT("content");
		k0 = "content";
		fin = v[4].type == JSONR_TRUE;
	} else {
		return CUSTOS_OK;
	}
	size_t n = idx.len + 2;
	slot *sl = NULL;
	for (size_t i = 0; i < ip->nsl && sl == NULL; i++)
		if (ip->sl[i].resp && ip->sl[i].pos_len == n &&
		    memcmp(ip->sl[i].pos, pos, n) == 0 &&
		    span_eq(buf_span(&ip->sl[i].dtype), dtype))
			sl = &ip->sl[i];
	if (sl == NULL) {
		GUARD(slot_new(ip, RESP_CHOICE, args ? 0 : TOOL_NONE, &sl));
		sl->resp = true;
		memcpy(sl->pos, pos, n);
		sl->pos_len = n;
		GUARD(buf_append_span(&sl->dtype, dtype));
	}
	*handled = true;
	buf_reset(&ip->rel);
	GUARD(slot_feed(ip, s, sl, str, true, fin, &ip->rel));
	known[0] = str.ptr;
	return part_write(ip, s, sl, ev, root, str, known, CUSTOS_ARRAY_LEN(known), k0, k1, k2);
}

/* Whole-text fallback for data that is no chunk (an error object...): every string value. */
static custos_err block_redact(ingress_insp *ip, inspect_scratch *s, span data, buf *out)
{
	inspect_summary sum;
	inspect_summary_init(&sum);
	custos_err e = inspect_json_redact(ip->eng, s, &ip->response, data, out, &sum);
	if (e == CUSTOS_ERR_PARSE) { /* as text, its JSON escapes decoded (args_decode) */
		slot tmp = { 0 };
		buf dec;
		buf_init(&dec, INSP_OUT_MAX);
		buf_reset(out);
		inspect_summary_init(&sum);
		e = args_decode(&tmp, data, true, &dec);
		if (e == CUSTOS_OK)
			e = inspect_redact_text(ip->eng, s, &ip->response, buf_span(&dec), out,
			                        &sum);
		buf_free(&dec);
	}
	inspect_summary_add(&ip->rsum, &sum);
	if (e == CUSTOS_ERR_DENIED)
		ip->rsum.deny_detector = sum.deny_detector;
	return e;
}

/* The texts of a chunk besides a choices[].delta.content string (validated JSON): each
 * choice's delta.tool_calls[].function.arguments and its other chat_fields, the text parts of
 * a delta.content array, delta.audio.transcript, and tool-call function names. */
typedef struct targ {
	uint32_t choice, tool; /* tool TOOL_NONE: field of the delta */
	unsigned field;
	bool parts;   /* a text part of a delta.content array (the choice's content stream) */
	bool whole;   /* a tool call's function.name: inspected whole, in this event */
	span args;    /* escaped; rawpart: the part's raw JSON */
	bool rawpart; /* a part of a delta.content array that is not text (sse_event_out) */
} targ;

/* The text parts of choice ci's delta.content array, in order; a part that is an object with
 * strings besides a "type" and a "text" (an image, a refusal part...) is reported as a rawpart
 * when `raw` (else skipped: it was inspected). An array that holds anything but objects is
 * CUSTOS_ERR_PARSE: the event is then inspected whole, every string value. */
static custos_err collect_parts(uint32_t ci, jsonr_val arr, targ *t, size_t max, size_t *n,
                                bool raw)
{
	static const char *const names[] = { "type", "text" };
	jsonr_iter it;
	jsonr_val part, f[2];

	jsonr_iter_init(&it, arr);
	while (jsonr_arr_next(&it, &part)) {
		if (part.type != JSONR_OBJECT)
			return err_set(CUSTOS_ERR_PARSE, "inspect: a content part not an object");
		uint32_t got = jsonr_obj_pick(part, names, 2, f);
		const char *known[2] = {
			(got & 1) && f[0].type == JSONR_STRING ? f[0].str.ptr : NULL,
			(got & 2) && f[1].type == JSONR_STRING ? f[1].str.ptr : NULL
		};
		bool text = !other_strings(part, known, 2);
		if ((text && known[1] == NULL) || (!text && !raw))
			continue;
		ENSURE(*n < max, CUSTOS_ERR_LIMIT, "inspect: too many content parts in a chunk");
		t[(*n)++] = text ? (targ){ ci, TOOL_NONE, F_CONTENT, true, false, f[1].str, false }
		                 : (targ){ ci, TOOL_NONE, F_CONTENT, false, false, part.raw, true };
	}
	return CUSTOS_OK;
}

static custos_err collect_tool_args(span data, targ *t, size_t max, size_t *n, span *lp,
                                    size_t *nlp, bool raw)
{
	jsonr_val root, ch, c, delta, tcs, tc, fn, a, idx, l, au;
	jsonr_iter it, it2;

	*n = 0;
	*nlp = 0;
	GUARD(jsonr_parse(data, NULL, &root));
	if (!jsonr_obj_get(root, "choices", &ch) || ch.type != JSONR_ARRAY)
		return CUSTOS_OK;
	jsonr_iter_init(&it, ch);
	for (uint64_t pos = 0; jsonr_arr_next(&it, &c); pos++) {
		uint64_t ci = pos, ti;
		if (jsonr_obj_get(c, "index", &idx))
			GUARD(jsonr_u64(idx, UINT32_MAX - 1, &ci));
		/* logprobs carry the token texts past the streams: dropped (written null) */
		if (jsonr_obj_get(c, "logprobs", &l) && l.type != JSONR_NULL) {
			ENSURE(*nlp < OPENAI_MAX_CHOICES, CUSTOS_ERR_LIMIT,
			       "inspect: too many choices");
			lp[(*nlp)++] = l.raw;
		}
		if (!jsonr_obj_get(c, "delta", &delta))
			continue;
		jsonr_val fv[CUSTOS_ARRAY_LEN(chat_fields)];
		uint32_t got =
		        jsonr_obj_pick(delta, chat_fields, CUSTOS_ARRAY_LEN(chat_fields), fv);
		for (unsigned f = F_CONTENT + 1; f < CUSTOS_ARRAY_LEN(chat_fields); f++) {
			if (!(got & (1u << f)) || fv[f].type != JSONR_STRING)
				continue;
			ENSURE(*n < max, CUSTOS_ERR_LIMIT, "inspect: too many deltas in a chunk");
			t[(*n)++] = (targ){ (uint32_t)ci, TOOL_NONE, f,    false,
				            false,        fv[f].str, false };
		}
		if ((got & 1) && fv[F_CONTENT].type == JSONR_ARRAY)
			GUARD(collect_parts((uint32_t)ci, fv[F_CONTENT], t, max, n, raw));
		if (jsonr_obj_get(delta, "audio", &au) && jsonr_obj_get(au, "transcript", &a) &&
		    a.type == JSONR_STRING) {
			ENSURE(*n < max, CUSTOS_ERR_LIMIT, "inspect: too many deltas in a chunk");
			t[(*n)++] = (targ){ (uint32_t)ci, TOOL_NONE, F_TRANSCRIPT, false,
				            false,        a.str,     false };
		}
		if (!jsonr_obj_get(delta, "tool_calls", &tcs) || tcs.type != JSONR_ARRAY)
			continue;
		jsonr_iter_init(&it2, tcs);
		for (uint64_t tpos = 0; jsonr_arr_next(&it2, &tc); tpos++) {
			ti = tpos;
			if (jsonr_obj_get(tc, "index", &idx))
				GUARD(jsonr_u64(idx, UINT32_MAX - 1, &ti));
			if (!jsonr_obj_get(tc, "function", &fn))
				continue;
			if (jsonr_obj_get(fn, "name", &a) && a.type == JSONR_STRING) {
				ENSURE(*n < max, CUSTOS_ERR_LIMIT,
				       "inspect: too many tool-call deltas");
				t[(*n)++] = (targ){ (uint32_t)ci, (uint32_t)ti, F_CONTENT, false,
					            true,         a.str,        false };
			}
			if (!jsonr_obj_get(fn, "arguments", &a) || a.type != JSONR_STRING)
				continue;
			ENSURE(*n < max, CUSTOS_ERR_LIMIT, "inspect: too many tool-call deltas");
			t[(*n)++] = (targ){ (uint32_t)ci, (uint32_t)ti, F_CONTENT, false,
				            false,        a.str,        false };
		}
	}
	return CUSTOS_OK;
}

static void buf_cut(buf *b, size_t used)
{
	b->len = b->off + used;
}

/* The name_acc of tool call (choice, tool), made when there is none; its index in *ni. */
static custos_err name_acc_get(ingress_insp *ip, uint32_t choice, uint32_t tool, size_t *ni)
{
	for (size_t i = 0; i < ip->nnm; i++)
		if (ip->nm[i].choice == choice && ip->nm[i].tool == tool) {
			*ni = i;
			return CUSTOS_OK;
		}
	ENSURE(ip->nnm < INSP_MAX_STREAMS, CUSTOS_ERR_LIMIT,
	       "inspect: more than %u tool-call names in one response", INSP_MAX_STREAMS);
	name_acc *na = &ip->nm[ip->nnm];
	na->choice = choice;
	na->tool = tool;
	buf_init(&na->text, NAME_KEEP + NAME_HOLD_MAX + SSE_MAX_EVENT_BYTES);
	*ni = ip->nnm++;
	return CUSTOS_OK;
}

/* Releases the pieces of a name from na->text[a..] (complete, or a piece of one whose earlier
 * pieces have gone out): inspected alone and joined after the pieces before, so a value split
 * over pieces is found; a value found only joined is masked from `a` on (what is before has
 * gone out). Redacted text appended to dst. DENIED: the closing events are in ip->out. */
static custos_err name_release(ingress_insp *ip, inspect_scratch *s, name_acc *na, size_t a,
                               buf *dst)
{
	span piece = span_of(buf_at(&na->text, a), buf_used(&na->text) - a);
	inspect_findings alone = { 0 }, joined = { 0 };
	custos_err e = inspect_scan(ip->eng, s, &ip->response, piece, &alone);
	if (e == CUSTOS_OK && a > 0 && piece.len > 0)
		e = inspect_scan(ip->eng, s, &ip->response, buf_span(&na->text), &joined);
	/* masks over the piece: its own findings, and those of the joined name that start in
	 * the pieces before and go on into this one (clipped to it) */
	size_t nm = 0;
	inspect_finding *m = NULL;
	if (e == CUSTOS_OK && alone.n + joined.n > 0) {
		m = calloc(alone.n + joined.n, sizeof(*m));
		if (m == NULL)
			e = err_set(CUSTOS_ERR_NOMEM, "inspect: out of memory");
	}
	inspect_summary sum;
	inspect_summary_init(&sum);
	for (size_t k = 0; k < alone.n + joined.n && e == CUSTOS_OK; k++) {
		inspect_finding f = k < alone.n ? alone.items[k] : joined.items[k - alone.n];
		if (k >= alone.n) {
			if (f.offset >= a || f.offset + f.length <= a)
				continue;
			f.length = (uint32_t)(f.offset + f.length - a);
			f.offset = 0;
		}
		sum.count[f.detector]++;
		sum.total++;
		if (f.action > sum.worst)
			sum.worst = f.action;
		if (f.action == INSPECT_ACT_DENY && sum.deny_detector < 0)
			sum.deny_detector = f.detector;
		if (f.action != INSPECT_ACT_REDACT)
			continue;
		m[nm++] = f;
	}
	inspect_findings_free(&alone);
	inspect_findings_free(&joined);
	if (e == CUSTOS_OK)
		inspect_summary_add(&ip->rsum, &sum);
	if (e == CUSTOS_OK && sum.deny_detector >= 0) {
		ip->rsum.deny_detector = sum.deny_detector;
		e = sse_deny(ip, sum.deny_detector);
		nm = 0;
	}
	for (size_t i = 1; i < nm; i++) /* by offset; few */
		for (size_t j = i; j > 0 && m[j].offset < m[j - 1].offset; j--) {
			inspect_finding t = m[j];
			m[j] = m[j - 1];
			m[j - 1] = t;
		}
	size_t cur = 0;
	for (size_t k = 0; k < nm && e == CUSTOS_OK; k++) { /* overlapping masks merge */
		uint64_t end = m[k].offset + m[k].length;
		if (m[k].offset < cur) {
			if (end > cur)
				cur = (size_t)end;
			continue;
		}
		e = buf_append(dst, piece.ptr + cur, (size_t)m[k].offset - cur);
		if (e == CUSTOS_OK)
			e = buf_append_span(dst,
			                    inspect_engine_detector_mask(ip->eng, m[k].detector));
		cur = (size_t)end;
	}
	free(m);
	if (e == CUSTOS_OK)
		e = buf_append(dst, piece.ptr + cur, piece.len - cur);
	if (buf_used(&na->text) > NAME_KEEP) { /* a value longer than this is not a name */
		size_t drop = buf_used(&na->text) - NAME_KEEP;
		memmove((uint8_t *)buf_ptr(&na->text), buf_ptr(&na->text) + drop, NAME_KEEP);
		buf_cut(&na->text, NAME_KEEP);
	}
	return e;
}

/* A piece of tool call (choice, tool)'s name (escaped) that completes it in its event, or
 * comes with pieces of other names: released now (name_release). */
static custos_err name_text(ingress_insp *ip, inspect_scratch *s, uint32_t choice, uint32_t tool,
                            span escaped, buf *dst)
{
	size_t ni;
	GUARD(name_acc_get(ip, choice, tool, &ni));
	name_acc *na = &ip->nm[ni];
	size_t a = buf_used(&na->text); /* where this piece starts in the joined name */
	GUARD(jsonr_unescape(escaped, &na->text));
	return name_release(ip, s, na, a, dst);
}

/* A piece of tool call (choice, tool)'s name that does not complete it: held (nothing of it
 * is written in its event). The first held piece starts the hold: the client bytes from its
 * event on wait in the held bytes. Past NAME_HOLD_MAX bytes of name (or NAME_HOLD_BYTES held),
 * CUSTOS_ERR_LIMIT: a name that long is not one, and is not released in pieces. */
static custos_err name_hold_piece(ingress_insp *ip, uint32_t choice, uint32_t tool, span escaped)
{
	size_t ni;
	GUARD(name_acc_get(ip, choice, tool, &ni));
	name_acc *na = &ip->nm[ni];
	if (!ip->nh_on) {
		ip->nh_on = true;
		ip->nh_na = ni;
		ip->nh_a = buf_used(&na->text);
		ip->nh_from = buf_used(&ip->out);
		ip->nh_at = SIZE_MAX;
		buf_reset(&ip->nh_buf);
	}
	ENSURE(ip->nh_na == ni, CUSTOS_ERR_INTERNAL, "inspect: two tool-call names held");
	GUARD(jsonr_unescape(escaped, &na->text));
	ENSURE(buf_used(&na->text) - ip->nh_a <= NAME_HOLD_MAX, CUSTOS_ERR_LIMIT,
	       "inspect: a tool-call name over %u bytes", NAME_HOLD_MAX);
	return CUSTOS_OK;
}

/* The held client bytes of ip->out (from nh_from) to nh_buf, at the end of a call. */
static custos_err name_hold_keep(ingress_insp *ip)
{
	if (!ip->nh_on)
		return CUSTOS_OK;
	GUARD(buf_append(&ip->nh_buf, buf_at(&ip->out, ip->nh_from),
	                 buf_used(&ip->out) - ip->nh_from));
	buf_cut(&ip->out, ip->nh_from);
	ip->nh_from = 0;
	return CUSTOS_OK;
}

/* The held name is complete: inspected whole (name_release) and written into the event of its
 * first piece; the held bytes go out. DENIED: they are dropped, the closing events follow. */
static custos_err name_flush(ingress_insp *ip, inspect_scratch *s)
{
	if (!ip->nh_on)
		return CUSTOS_OK;
	GUARD(name_hold_keep(ip));
	ip->nh_on = false;
	ENSURE(ip->nh_at <= buf_used(&ip->nh_buf), CUSTOS_ERR_INTERNAL,
	       "inspect: a held tool-call name without its event");
	buf red;
	buf_init(&red, INSP_OUT_MAX);
	custos_err e = name_release(ip, s, &ip->nm[ip->nh_na], ip->nh_a, &red);
	if (e == CUSTOS_OK)
		e = buf_append(&ip->out, buf_ptr(&ip->nh_buf), ip->nh_at);
	if (e == CUSTOS_OK)
		e = json_escape(&ip->out, buf_span(&red));
	if (e == CUSTOS_OK)
		e = buf_append(&ip->out, buf_ptr(&ip->nh_buf) + ip->nh_at,
		               buf_used(&ip->nh_buf) - ip->nh_at);
	buf_free(&red);
	buf_reset(&ip->nh_buf);
	return e;
}

static custos_err sse_event_out(ingress_insp *ip, inspect_scratch *s, const sse_event *ev)
{
	openai_chunk ck;
	targ tools[INSP_MAX_STREAMS];
	jsonr_edit edits[OPENAI_MAX_CHOICES + INSP_MAX_STREAMS];
	size_t off[OPENAI_MAX_CHOICES + INSP_MAX_STREAMS],
	        len[OPENAI_MAX_CHOICES + INSP_MAX_STREAMS];
	span lps[OPENAI_MAX_CHOICES];
	size_t ne = 0, ntools = 0, nlp = 0;
	slot *sl;

	if (!ev->has_data) /* comments (keep-alives), id/retry only */
		return buf_append_span(&ip->out, ev->raw);
	if (ev->done) {
		GUARD(name_flush(ip, s));
		GUARD(sse_finish(ip, s, TOOL_NONE));
		return buf_append_span(&ip->out, ev->raw);
	}
	/* Anything but a chunk with choices is a responses-API delta (streamed per part, above),
	 * or is inspected whole: every string value (Anthropic-style content_block_delta, an
	 * error object, the responses API's other events...). */
	if (openai_chunk_parse(ev->data, &ck) != CUSTOS_OK || !ck.has_choices ||
	    collect_tool_args(ev->data, tools, INSP_MAX_STREAMS, &ntools, lps, &nlp,
	                      !ip->np_done) != CUSTOS_OK) {
		bool handled = false;
		GUARD(name_flush(ip, s)); /* another part */
		GUARD(part_event(ip, s, ev, &handled));
		if (!handled)
			GUARD(resp_event(ip, s, ev, &handled));
		if (handled)
			return CUSTOS_OK;
		buf_reset(&ip->tmp);
		custos_err e = block_redact(ip, s, ev->data, &ip->tmp);
		if (e == CUSTOS_ERR_DENIED)
			return sse_deny(ip, ip->rsum.deny_detector);
		GUARD(e);
		return sse_write_event_from(&ip->out, ev, buf_span(&ip->tmp));
	}
	if (nlp > 0) { /* the same event with each choice's logprobs written null */
		buf stripped;
		buf_init(&stripped, SSE_MAX_EVENT_BYTES + 4 * OPENAI_MAX_CHOICES);
		const char *at = ev->data.ptr;
		custos_err e = CUSTOS_OK;
		for (size_t i = 0; i < nlp && e == CUSTOS_OK; i++) {
			e = buf_append(&stripped, at, (size_t)(lps[i].ptr - at));
			if (e == CUSTOS_OK)
				e = buf_append_cstr(&stripped, "null");
			at = lps[i].ptr + lps[i].len;
		}
		if (e == CUSTOS_OK)
			e = buf_append(&stripped, at, (size_t)(ev->data.ptr + ev->data.len - at));
		sse_event ev2 = *ev;
		ev2.data = buf_span(&stripped);
		if (e == CUSTOS_OK)
			e = sse_event_out(ip, s, &ev2);
		buf_free(&stripped);
		return e;
	}
	/* Parts of a delta.content array that are not text (an image, a refusal part): each
	 * inspected whole, on its own (unchanged when it holds nothing), then the event with them
	 * as redacted is handled as one of text parts only, the text parts joined to the choice's
	 * content stream. */
	bool raws = false;
	for (size_t i = 0; i < ntools; i++)
		raws = raws || tools[i].rawpart;
	if (raws) {
		buf spliced, red;
		buf_init(&spliced, INSP_OUT_MAX);
		buf_init(&red, INSP_OUT_MAX);
		const char *at = ev->data.ptr;
		custos_err e = CUSTOS_OK;
		for (size_t i = 0; i < ntools && e == CUSTOS_OK; i++) { /* in document order */
			if (!tools[i].rawpart)
				continue;
			e = buf_append(&spliced, at, (size_t)(tools[i].args.ptr - at));
			buf_reset(&red);
			if (e == CUSTOS_OK)
				e = block_redact(ip, s, tools[i].args, &red);
			if (e == CUSTOS_OK)
				e = buf_append_span(&spliced, buf_span(&red));
			at = tools[i].args.ptr + tools[i].args.len;
		}
		if (e == CUSTOS_OK)
			e = buf_append(&spliced, at, (size_t)(ev->data.ptr + ev->data.len - at));
		buf_free(&red);
		if (e == CUSTOS_ERR_DENIED) {
			buf_free(&spliced);
			return sse_deny(ip, ip->rsum.deny_detector);
		}
		sse_event ev2 = *ev;
		ev2.data = buf_span(&spliced);
		if (e == CUSTOS_OK) {
			ip->np_done = true;
			e = sse_event_out(ip, s, &ev2);
			ip->np_done = false;
		}
		buf_free(&spliced);
		return e;
	}
	/* Tool-call names: pw 1 when this event holds pieces of one name (pc, pt), 2 of several;
	 * `other`: something here shows a held name, or this one, complete (its arguments,
	 * another part's text, a finish_reason). */
	int pw = 0;
	uint32_t pc = 0, pt = 0;
	bool other = false;
	for (size_t i = 0; i < ntools; i++)
		if (tools[i].whole && pw == 0) {
			pw = 1;
			pc = tools[i].choice;
			pt = tools[i].tool;
		} else if (tools[i].whole && (tools[i].choice != pc || tools[i].tool != pt)) {
			pw = 2;
		}
	uint32_t kc = pw == 1 || !ip->nh_on ? pc : ip->nm[ip->nh_na].choice;
	uint32_t kt = pw == 1 || !ip->nh_on ? pt : ip->nm[ip->nh_na].tool;
	for (size_t i = 0; i < ntools; i++)
		if (!tools[i].whole &&
		    (tools[i].args.len > 0 ||
		     ((pw == 1 || ip->nh_on) && tools[i].tool == kt && tools[i].choice == kc)))
			other = true;
	for (size_t k = 0; k < ck.ndeltas; k++)
		if ((ck.deltas[k].has_content && ck.deltas[k].content.len > 0) ||
		    ck.deltas[k].finish_reason.len > 0)
			other = true;
	if (ip->nh_on && (pw == 2 || (pw == 1 && ip->nm[ip->nh_na].choice != pc) ||
	                  (pw == 1 && ip->nm[ip->nh_na].tool != pt) || (pw == 0 && other)))
		GUARD(name_flush(ip, s));
	bool held = pw == 1 && (ip->nh_on || !other); /* this event's piece is held */
	const char *held_at = NULL;                   /* its name string in ev->data */
	sse_template(ip, ev->data);
	buf_reset(&ip->rel);
	/* Content, then the other texts; a stream whose choice finishes here is finished right
	 * after its last text in this event, so its tail stays in this event. */
	size_t nall = ck.ndeltas + ntools;
	for (size_t i = 0; i < nall; i++) {
		const targ *t = i >= ck.ndeltas ? &tools[i - ck.ndeltas] : NULL;
		uint32_t choice = t ? t->choice : ck.deltas[i].choice;
		span text = t ? t->args : ck.deltas[i].content;
		if (t == NULL && !ck.deltas[i].has_content)
			continue;
		size_t at = buf_used(&ip->rel);
		if (t != NULL && t->whole && held) {
			GUARD(name_hold_piece(ip, t->choice, t->tool, text));
			if (held_at == NULL && ip->nh_at == SIZE_MAX)
				held_at = text.ptr; /* the first held piece: the name goes here */
		} else if (t != NULL && t->whole) {
			GUARD(name_text(ip, s, t->choice, t->tool, text, &ip->rel));
		} else {
			uint32_t tool = t ? t->tool : TOOL_NONE;
			unsigned field = t ? t->field : F_CONTENT;
			bool fin = false;
			for (size_t k = 0; k < ck.ndeltas; k++)
				fin = fin || (ck.deltas[k].choice == choice &&
				              ck.deltas[k].finish_reason.len);
			for (size_t j = i + 1; j < nall && fin; j++) { /* not its last text here */
				const targ *u = j >= ck.ndeltas ? &tools[j - ck.ndeltas] : NULL;
				fin = u ? u->whole || u->choice != choice || u->tool != tool ||
				                      u->field != field
				        : !ck.deltas[j].has_content ||
				                      ck.deltas[j].choice != choice ||
				                      tool != TOOL_NONE || field != F_CONTENT;
			}
			GUARD(slot_get(ip, choice, tool, field, true, &sl));
			if (tool == TOOL_NONE && field == F_CONTENT)
				sl->parts = t != NULL && t->parts;
			GUARD(slot_feed(ip, s, sl, text, true, fin, &ip->rel));
		}
		edits[ne].at = text;
		off[ne] = at;
		len[ne] = buf_used(&ip->rel) - at;
		ne++;
	}
	/* Streams of finishing choices with no text here: their tails go in events before. */
	for (size_t k = 0; k < ck.ndeltas; k++)
		if (ck.deltas[k].finish_reason.len)
			GUARD(sse_finish(ip, s, ck.deltas[k].choice));
	for (size_t i = 0; i < ne; i++)
		edits[i].text = span_of(buf_at(&ip->rel, off[i]), len[i]);
	for (size_t i = 1; i < ne; i++) /* edits go in document order */
		for (size_t j = i; j > 0 && edits[j].at.ptr < edits[j - 1].at.ptr; j--) {
			jsonr_edit t = edits[j];
			edits[j] = edits[j - 1];
			edits[j - 1] = t;
		}
	buf_reset(&ip->tmp);
	GUARD(jsonr_rewrite(ev->data, edits, ne, &ip->tmp));
	if (held_at == NULL) {
		GUARD(sse_write_event_from(&ip->out, ev, buf_span(&ip->tmp)));
	} else {
		/* where the held name's string lands in the event: its offset in the data, moved
		 * by what the edits before it changed */
		size_t at = (size_t)(held_at - ev->data.ptr), out_at;
		buf esc;
		buf_init(&esc, INSP_OUT_MAX);
		custos_err e = CUSTOS_OK;
		for (size_t i = 0; i < ne && edits[i].at.ptr < held_at && e == CUSTOS_OK; i++) {
			buf_reset(&esc);
			e = json_escape(&esc, edits[i].text);
			at = at + buf_used(&esc) - edits[i].at.len;
		}
		buf_free(&esc);
		GUARD(e);
		GUARD(sse_write_event_from_at(&ip->out, ev, buf_span(&ip->tmp), at, &out_at));
		ip->nh_at = buf_used(&ip->nh_buf) + out_at - ip->nh_from;
	}
	if (pw == 1 && other) /* the held name is complete with this event */
		GUARD(name_flush(ip, s));
	return CUSTOS_OK;
}

static custos_err sse_piece(ingress_insp *ip, inspect_scratch *s, span in)
{
	const char *p = in.ptr;
	size_t n = in.len;

	while (n > 0) {
		sse_event ev;
		bool have = false;
		ssize_t k = sse_parse(&ip->sse, p, n, &ev, &have);
		if (k < 0)
			return CUSTOS_ERR_LIMIT;
		if (have)
			GUARD(sse_event_out(ip, s, &ev));
		p += k;
		n -= (size_t)k;
		if (k == 0 && !have)
			break;
	}
	return CUSTOS_OK;
}

/* RM_RAW: the body as one byte stream; released bytes go to ip->out. */
static custos_err raw_feed(ingress_insp *ip, inspect_scratch *s, span in, bool fin)
{
	slot *sl;
	custos_err e = CUSTOS_OK;

	GUARD(slot_get(ip, 0, TOOL_NONE, F_CONTENT, true, &sl));
	if (sl->done)
		return CUSTOS_OK;
	buf dec;
	buf_init(&dec, INSP_OUT_MAX + sizeof(sl->pend));
	if (!ip->raw_only && (in.len || sl->npend)) {
		/* A model's answer under another media type may still be JSON or SSE: its escapes
		 * that stand for plain characters are decoded before detection (and so sent). */
		e = args_decode(sl, in, fin, &dec);
		in = buf_span(&dec);
	}
	if (e == CUSTOS_OK && in.len)
		e = inspect_stream_feed(sl->st, s, in, &ip->out);
	buf_free(&dec);
	if (e == CUSTOS_OK && fin) {
		sl->done = true;
		e = inspect_stream_finish(sl->st, s, &ip->out);
	}
	if (e == CUSTOS_ERR_DENIED) {
		ip->denied = true;
		snprintf(ip->why, sizeof(ip->why),
		         "response denied by content inspection: %s detected",
		         det_name(ip, inspect_stream_summary(sl->st)->deny_detector));
	}
	return e;
}

custos_err ingress_inspect_response_data(ingress_insp *ip, span in, span *out)
{
	inspect_scratch *s;
	custos_err e;

	*out = span_of("", 0);
	buf_reset(&ip->out);
	if (ip->denied)
		return CUSTOS_ERR_DENIED;
	if (ip->mode == RM_BLOCK) {
		ip->denied = true;
		snprintf(ip->why, sizeof(ip->why),
		         "response with a content-encoding cannot be inspected");
		return CUSTOS_ERR_DENIED;
	}
	if (ip->mode == RM_JSON) /* held until the end */
		return buf_append_span(&ip->hold, in);
	GUARD(scratch_get(ip, &s));
	uint64_t t0 = tm_mono_ns();
	if (ip->mode == RM_SSE) {
		ip->nh_from = 0;
		e = sse_piece(ip, s, in);
		if (e == CUSTOS_OK)
			e = name_hold_keep(ip); /* a name still held: its bytes wait */
	} else {
		e = raw_feed(ip, s, in, false);
	}
	ip->t_ns += tm_mono_ns() - t0;
	*out = buf_span(&ip->out);
	return e;
}

/* RM_JSON at the end: every string value under "choices" (message content, tool-call
 * arguments, refusals) is inspected, ids and model names are left alone; a body without
 * choices (an error object...) is inspected whole. */
static custos_err json_end(ingress_insp *ip, inspect_scratch *s)
{
	span body = buf_span(&ip->hold);
	jsonr_val root, ch;
	custos_err e;

	if (body.len >= 3 && memcmp(body.ptr, "\xef\xbb\xbf", 3) == 0) /* a BOM: dropped */
		body = span_of(body.ptr + 3, body.len - 3);

	if (jsonr_parse(body, NULL, &root) == CUSTOS_OK && jsonr_obj_get(root, "choices", &ch) &&
	    ch.type == JSONR_ARRAY) {
		buf_reset(&ip->tmp);
		e = block_redact(ip, s, ch.raw, &ip->tmp);
		if (e == CUSTOS_OK) {
			size_t pre = (size_t)(ch.raw.ptr - body.ptr);
			e = buf_append(&ip->out, body.ptr, pre);
			if (e == CUSTOS_OK)
				e = buf_append_span(&ip->out, buf_span(&ip->tmp));
			if (e == CUSTOS_OK)
				e = buf_append(&ip->out, ch.raw.ptr + ch.raw.len,
				               body.len - pre - ch.raw.len);
		}
	} else {
		e = block_redact(ip, s, body, &ip->out);
	}
	if (e != CUSTOS_ERR_DENIED)
		return e;
	/* The body becomes an OpenAI-style error; a caller that held the head (conn.c does for
	 * every JSON body, ingress_inspect_response_held) answers 403 with its own instead. */
	ip->denied = true;
	snprintf(ip->why, sizeof(ip->why), "response denied by content inspection: %s detected",
	         det_name(ip, ip->rsum.deny_detector));
	buf_reset(&ip->out);
	json_writer w;
	json_init(&w, &ip->out);
	json_obj_begin(&w);
	json_key(&w, "error");
	json_obj_begin(&w);
	json_kv_cstr(&w, "message", ip->why);
	json_kv_cstr(&w, "type", "policy_violation");
	json_kv_cstr(&w, "code", "content_denied");
	json_obj_end(&w);
	json_obj_end(&w);
	GUARD(json_finish(&w));
	return CUSTOS_ERR_DENIED;
}

custos_err ingress_inspect_response_end(ingress_insp *ip, span *out)
{
	inspect_scratch *s;
	custos_err e = CUSTOS_OK;

	*out = span_of("", 0);
	buf_reset(&ip->out);
	if (ip->denied)
		return CUSTOS_ERR_DENIED;
	if (ip->mode == RM_BLOCK)
		return ingress_inspect_response_data(ip, span_of("", 0), out);
	GUARD(scratch_get(ip, &s));
	uint64_t t0 = tm_mono_ns();
	if (ip->mode == RM_SSE) {
		ip->nh_from = 0;
		e = name_flush(ip, s); /* a stream without [DONE]; a partial event is dropped */
		if (e == CUSTOS_OK)
			e = sse_finish(ip, s, TOOL_NONE);
	} else if (ip->mode == RM_JSON) {
		e = json_end(ip, s);
	} else {
		e = raw_feed(ip, s, span_of("", 0), true);
	}
	ip->t_ns += tm_mono_ns() - t0;
	*out = buf_span(&ip->out);
	return e;
}

/* ---------------------------------------------------------------------------------------------
 * audit
 */
void ingress_inspect_audit(ingress_insp *ip, const audit_finding **f, size_t *n,
                           const char **summary, uint64_t *ns)
{
	inspect_summary all = ip->psum, resp = ip->rsum;

	for (size_t i = 0; i < ip->nsl; i++)
		if (i < ip->nsl)
			inspect_summary_add(&resp, inspect_stream_summary(ip->sl[i].st));
	inspect_summary_add(&all, &resp);
	size_t k = 0;
	unsigned nd = ip->eng ? inspect_engine_detector_count(ip->eng) : 0;
	for (unsigned i = 0; i < nd && i < INSPECT_MAX_DETECTORS; i++) {
		if (all.count[i] == 0)
			continue;
		ip->f[k].type = det_name(ip, (int)i);
		ip->f[k].count = all.count[i];
		k++;
	}
	*f = ip->f;
	*n = k;
	*ns = ip->t_ns;
	*summary = NULL;
	if (!ip->prompt_on && !ip->response_on)
		return;
	snprintf(ip->summary, sizeof(ip->summary), "%sprompt:%s response:%s",
	         ip->shadow ? "shadow " : "",
	         ip->prompt_on ? inspect_action_name((inspect_action)ip->psum.worst) : "off",
	         ip->response_on
	                 ? (ip->denied ? "deny" : inspect_action_name((inspect_action)resp.worst))
	                 : "off");
	*summary = ip->summary;
}

void ingress_inspect_outcome(const ingress_insp *ip, const char **decision, const char **reason)
{
	if (ip == NULL || !ip->denied)
		return;
	*decision = "deny";
	*reason = ip->why;
}

void ingress_inspect_free(ingress_insp *ip)
{
	if (ip == NULL)
		return;
	for (size_t i = 0; i < ip->nsl; i++) {
		inspect_stream_free(ip->sl[i].st);
		buf_free(&ip->sl[i].dtype);
		buf_free(&ip->sl[i].last);
		buf_free(&ip->sl[i].etyp);
	}
	for (size_t i = 0; i < ip->nnm; i++)
		buf_free(&ip->nm[i].text);
	buf_free(&ip->nh_buf);
	if (ip->sse_init)
		sse_parser_free(&ip->sse);
	buf_free(&ip->tmpl);
	buf_free(&ip->out);
	buf_free(&ip->text);
	buf_free(&ip->rel);
	buf_free(&ip->tail);
	buf_free(&ip->tmp);
	buf_free(&ip->hold);
	free(ip);
}
