/*
 * OpenAI API awareness (proxy-internal): the fields policy, routing, budgets and inspection
 * need from request bodies (model, stream, max tokens, text spans), token usage from responses
 * and stream chunks, and the body rewrites the proxy makes (redaction, include_usage).
 * Everything is read from a bounded, strictly validated JSON document (json.h).
 */
#ifndef CUSTOS_PROXY_OPENAI_H
#define CUSTOS_PROXY_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "custos/core.h"
#include "json.h"

#define OPENAI_MAX_MODEL   256u  /* bytes of the unescaped model name */
#define OPENAI_MAX_TEXTS   4096u /* text spans collected from one request */
#define OPENAI_MAX_CHOICES 64u   /* choices read from one response or chunk */

/* Where a text span came from. */
typedef enum openai_text_kind {
	OPENAI_TEXT_MESSAGE = 0,  /* messages[i].content (string) */
	OPENAI_TEXT_PART,         /* messages[i].content[j].text with type "text" */
	OPENAI_TEXT_TOOL_ARGS,    /* messages[i].tool_calls[j].function.arguments */
	OPENAI_TEXT_PROMPT,       /* prompt (string or array element) */
	OPENAI_TEXT_INPUT,        /* input (string or array element; embeddings, responses API) */
	OPENAI_TEXT_INSTRUCTIONS, /* instructions (responses API), system (legacy) */
} openai_text_kind;

typedef struct openai_text {
	openai_text_kind kind;
	uint32_t message; /* index in messages[] (or prompt/input array), else 0 */
	uint32_t part;    /* index within content[] / tool_calls[], else 0 */
	span raw;         /* the string's escaped contents inside the body (between the quotes) */
} openai_text;

typedef struct openai_request {
	char model[OPENAI_MAX_MODEL + 1]; /* unescaped; "" when absent */
	bool has_model;
	bool stream;
	bool has_max_tokens;
	uint64_t max_tokens; /* max_tokens, else max_completion_tokens, else max_output_tokens */
	bool has_include_usage;
	bool include_usage; /* stream_options.include_usage */
	bool opaque_input;  /* prompt/input given as token ids: not inspectable as text */
	size_t nmessages;
	openai_text *texts; /* owned; openai_request_free releases */
	size_t ntexts;
} openai_request;

/* Parses a request body (any of chat/completions, completions, embeddings, responses): the
 * document is validated with lim (NULL: defaults; duplicate top-level keys rejected). Fields of
 * the wrong type (model not a string, stream not a boolean...) are CUSTOS_ERR_PARSE. On error
 * *req holds nothing to free. */
custos_err openai_request_parse(span body, const jsonr_limits *lim, openai_request *req) CUSTOS_WUR;
void openai_request_free(openai_request *req);

/* Appends body to out with stream_options.include_usage set to true (added when absent,
 * replaced when false); *changed says whether anything changed (out holds a copy either way). */
custos_err openai_add_include_usage(span body, buf *out, bool *changed) CUSTOS_WUR;

typedef struct openai_usage {
	bool present; /* a usage object was there (null counts as absent) */
	uint64_t prompt_tokens;
	uint64_t completion_tokens;
	uint64_t total_tokens;
} openai_usage;

/* Reads the top-level "usage" of a response body or a stream chunk's JSON. */
custos_err openai_usage_parse(span json, openai_usage *u) CUSTOS_WUR;

/* The top-level "usage" member of a JSON response body, found while the body streams past,
 * whatever its size: only that member's value is kept (at most OPENAI_USAGE_SCAN_MAX bytes).
 * The scan follows strings, escapes and nesting, so a "usage" inside a string or a nested
 * object is not taken for it. */
#define OPENAI_USAGE_SCAN_MAX 1024
typedef struct openai_usage_scan {
	uint64_t depth;
	bool in_str, esc;
	bool want_key; /* inside the top-level object: the next string names a member */
	bool in_key;
	uint8_t klen; /* member name bytes so far; 6: longer than "usage", or escaped */
	char key[5];
	bool is_usage; /* the member name just read is "usage": its value follows the colon */
	bool cap;      /* keeping the usage value */
	bool found;    /* one whole usage value kept */
	bool bad;      /* a second usage member, or a value over OPENAI_USAGE_SCAN_MAX */
	size_t vlen;
	char val[OPENAI_USAGE_SCAN_MAX];
} openai_usage_scan;
void openai_usage_scan_init(openai_usage_scan *s);
void openai_usage_scan_feed(openai_usage_scan *s, span data);
/* The usage found: u->present is false when there was none, or it was not a valid usage. */
void openai_usage_scan_end(const openai_usage_scan *s, openai_usage *u);

/* One stream chunk (the JSON of an SSE data: event): delta texts and usage. */
typedef struct openai_delta {
	uint32_t choice; /* choices[].index (or position when index is absent) */
	span content;    /* escaped contents of choices[].delta.content; empty when none */
	bool has_content;
	bool has_parts; /* content is an array (of parts): raw JSON in parts, has_content false */
	span parts;
	span finish_reason; /* escaped; empty when null or absent */
} openai_delta;

typedef struct openai_chunk {
	openai_delta deltas[OPENAI_MAX_CHOICES];
	size_t ndeltas;
	bool has_choices; /* a "choices" array is there (it may be empty: a usage chunk) */
	openai_usage usage;
} openai_chunk;

/* Parses a chat.completion.chunk (or completion chunk: choices[].text) JSON. */
custos_err openai_chunk_parse(span json, openai_chunk *c) CUSTOS_WUR;

/* Response body of a non-streamed completion: choices[].message.content (or .text) spans. */
typedef struct openai_response {
	openai_delta choices[OPENAI_MAX_CHOICES]; /* content = message content */
	size_t nchoices;
	openai_usage usage;
} openai_response;
custos_err openai_response_parse(span json, openai_response *r) CUSTOS_WUR;

#endif /* CUSTOS_PROXY_OPENAI_H */
