/*
 * Server-sent events (text/event-stream, WHATWG HTML §9.2) parser and writer
 * (proxy-internal). The parser is incremental: bytes arrive split anywhere (CRLF, LF and CR
 * line endings, a CRLF split across calls), events come out whole, bounded in size. Each event
 * keeps its raw bytes, so an uninspected stream can be forwarded unchanged, event by event.
 */
#ifndef CUSTOS_PROXY_SSE_H
#define CUSTOS_PROXY_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "custos/core.h"

#define SSE_MAX_EVENT_BYTES (1024u * 1024u) /* raw bytes of one event (lines + blank line) */

typedef struct sse_event {
	span raw;  /* the event's bytes as received, through its terminating blank line (when
	              that line ends in a CR and its LF only comes with the next call, the LF
	              is consumed then and belongs to no event) */
	span type; /* "event:" value; empty when none (means "message") */
	span data; /* "data:" values joined with LF (no trailing LF) */
	span id;   /* "id:" value */
	bool has_data;
	bool has_id;
	bool has_retry;
	uint64_t retry;  /* "retry:" ms */
	bool done;       /* data is exactly "[DONE]" (OpenAI's end marker) */
	size_t comments; /* comment lines (":...") in it, e.g. keep-alives */
} sse_event;

typedef struct sse_parser {
	/* Private state. */
	size_t max;    /* event byte limit */
	buf raw;       /* raw bytes of the event being read */
	buf data;      /* joined data */
	buf type, id;  /* last event:/id: values */
	size_t line;   /* start of the current line in raw */
	bool cr;       /* the previous byte was a CR (a following LF belongs to it) */
	bool bom_done; /* a leading UTF-8 BOM is skipped once */
	bool has_data, has_id, has_retry;
	uint64_t retry;
	size_t comments;
	bool ready; /* an event was returned: clear it on the next call */
} sse_parser;

/* Prepares p with an event limit (0 = SSE_MAX_EVENT_BYTES, never above it). */
void sse_parser_init(sse_parser *p, size_t max_event);
void sse_parser_free(sse_parser *p);

/* Feeds in[len]. Returns -1 when an event exceeds the limit (err_msg says so), else the bytes
 * consumed; when *have is true an event ended at the last consumed byte and *ev describes it
 * (spans valid until the next call). Call again with the remaining bytes. An event with no
 * data lines (only comments, or id/retry) is returned too (has_data false). */
ssize_t sse_parse(sse_parser *p, const char *in, size_t len, sse_event *ev, bool *have) CUSTOS_WUR;
/* True when bytes of an unfinished event are held (end of stream mid-event). */
bool sse_parser_pending(const sse_parser *p);
/* Those bytes, as received (valid until the next call). */
span sse_parser_pending_raw(const sse_parser *p);

/* Appends an event: optional "event:" line, one "data:" line per line of data (LF, CR or
 * CRLF in data split lines), blank line. */
custos_err sse_write_event(buf *out, span type, span data) CUSTOS_WUR;
/* The same for an event rewritten from ev: its type, and its id: and retry: lines carried
 * over (a client's Last-Event-ID and reconnection delay must not depend on inspection). */
custos_err sse_write_event_from(buf *out, const sse_event *ev, span data) CUSTOS_WUR;
/* The same, with *out_at set to where data offset `at` (not at a line break) lands in out,
 * counted as buf_used(out): where a string can be written into the event later. */
custos_err sse_write_event_from_at(buf *out, const sse_event *ev, span data, size_t at,
                                   size_t *out_at) CUSTOS_WUR;
/* Appends a comment line (": text\n"); text must hold no line break (CUSTOS_ERR_INVAL). */
custos_err sse_write_comment(buf *out, span text) CUSTOS_WUR;

#endif /* CUSTOS_PROXY_SSE_H */
