/*
 * text/event-stream parsing and writing (WHATWG HTML "Server-sent events", §9.2.5-6). Lines
 * end in CRLF, LF or CR; a blank line ends an event. Bytes are copied once into the event's
 * bounded raw buffer, so an event split over any number of reads comes out whole.
 */
#include <string.h>

#include "sse.h"

static void event_clear(sse_parser *p)
{
	buf_reset(&p->raw);
	buf_reset(&p->data);
	buf_reset(&p->type);
	buf_reset(&p->id);
	p->line = 0;
	p->has_data = p->has_id = p->has_retry = false;
	p->retry = 0;
	p->comments = 0;
	p->ready = false;
}

void sse_parser_init(sse_parser *p, size_t max_event)
{
	memset(p, 0, sizeof(*p));
	if (max_event == 0 || max_event > SSE_MAX_EVENT_BYTES)
		max_event = SSE_MAX_EVENT_BYTES;
	p->max = max_event;
	buf_init(&p->raw, max_event + 1); /* + the LF of a final CRLF, see raw_append */
	buf_init(&p->data, max_event);
	buf_init(&p->type, max_event);
	buf_init(&p->id, max_event);
}

void sse_parser_free(sse_parser *p)
{
	buf_free(&p->raw);
	buf_free(&p->data);
	buf_free(&p->type);
	buf_free(&p->id);
}

bool sse_parser_pending(const sse_parser *p)
{
	return !p->ready && buf_used(&p->raw) > 0;
}

span sse_parser_pending_raw(const sse_parser *p)
{
	return sse_parser_pending(p) ? buf_span(&p->raw) : span_of("", 0);
}

/* One complete line (without its terminator): a field, a comment, or ignored. */
static custos_err process_line(sse_parser *p, span line)
{
	if (line.ptr[0] == ':') {
		p->comments++;
		return CUSTOS_OK;
	}
	const char *colon = memchr(line.ptr, ':', line.len);
	span name = line, value = span_of(line.ptr + line.len, 0);
	if (colon != NULL) {
		name = span_of(line.ptr, (size_t)(colon - line.ptr));
		value = span_of(colon + 1, line.len - name.len - 1);
		if (value.len > 0 && value.ptr[0] == ' ') {
			value.ptr++;
			value.len--;
		}
	}
	if (span_eq_cstr(name, "data")) {
		GUARD(buf_append(&p->data, value.ptr, value.len));
		GUARD(buf_append_byte(&p->data, '\n'));
		p->has_data = true;
	} else if (span_eq_cstr(name, "event")) {
		buf_reset(&p->type);
		GUARD(buf_append(&p->type, value.ptr, value.len));
	} else if (span_eq_cstr(name, "id")) {
		if (memchr(value.ptr, '\0', value.len) == NULL) {
			buf_reset(&p->id);
			GUARD(buf_append(&p->id, value.ptr, value.len));
			p->has_id = true;
		}
	} else if (span_eq_cstr(name, "retry")) {
		uint64_t ms;
		if (value.len > 0 && num_parse_u64(value, 0, UINT32_MAX, &ms) == CUSTOS_OK) {
			p->retry = ms;
			p->has_retry = true;
		}
		err_clear();
	}
	return CUSTOS_OK;
}

/* buf_span of a buffer that never held bytes would offset a NULL pointer. */
static span bspan(const buf *b)
{
	return b->data != NULL ? buf_span(b) : span_of("", 0);
}

static void fill_event(sse_parser *p, sse_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->raw = bspan(&p->raw);
	ev->type = bspan(&p->type);
	span d = bspan(&p->data);
	if (d.len > 0)
		d.len--; /* the LF after the last data line */
	ev->data = d;
	ev->id = bspan(&p->id);
	ev->has_data = p->has_data;
	ev->has_id = p->has_id;
	ev->has_retry = p->has_retry;
	ev->retry = p->retry;
	ev->comments = p->comments;
	ev->done = p->has_data && span_eq_cstr(d, "[DONE]");
}

/* Appends to the event's raw bytes within the event limit; `slack` lets the LF of the CRLF
 * that ends an event past it, so the limit does not depend on where reads split. */
static custos_err raw_append(sse_parser *p, const char *b, size_t n, bool slack)
{
	if (!slack && buf_used(&p->raw) + n > p->max)
		return CUSTOS_ERR_LIMIT;
	return buf_append(&p->raw, b, n);
}

static ssize_t too_big(sse_parser *p)
{
	(void)err_set(CUSTOS_ERR_LIMIT, "SSE event larger than %zu bytes", p->max);
	return -1;
}

ssize_t sse_parse(sse_parser *p, const char *in, size_t len, sse_event *ev, bool *have)
{
	static const unsigned char bom[3] = { 0xef, 0xbb, 0xbf };
	size_t i = 0;

	*have = false;
	if (p->ready)
		event_clear(p);
	while (i < len) {
		unsigned char c = (unsigned char)in[i];
		if (!p->bom_done) {
			/* A UTF-8 BOM at the very start of the stream is skipped (kept in raw). */
			size_t m = buf_used(&p->raw);
			if (m < 3 && c == bom[m]) {
				if (raw_append(p, (const char *)&c, 1, false) != CUSTOS_OK)
					return too_big(p);
				i++;
				if (m == 2) {
					p->bom_done = true;
					p->line = 3;
				}
				continue;
			}
			p->bom_done = true;
		}
		if (p->cr) {
			p->cr = false;
			if (c == '\n') {
				/* The LF of a CRLF. After an event ended on the CR it belongs to no
				 * event (see sse.h); else it stays in the raw bytes. */
				if (buf_used(&p->raw) > 0 &&
				    raw_append(p, "\n", 1, false) != CUSTOS_OK)
					return too_big(p);
				p->line = buf_used(&p->raw);
				i++;
				continue;
			}
		}
		/* A run up to the next line terminator. */
		const char *lf = memchr(in + i, '\n', len - i);
		size_t j = lf ? (size_t)(lf - in) : len;
		const char *cr = memchr(in + i, '\r', j - i);
		if (cr != NULL)
			j = (size_t)(cr - in);
		if (j > i) {
			if (raw_append(p, in + i, j - i, false) != CUSTOS_OK)
				return too_big(p);
			i = j;
			continue;
		}
		/* c is CR or LF: the line ends. */
		span all = bspan(&p->raw);
		span line = span_of(all.ptr + p->line, all.len - p->line);
		if (raw_append(p, (const char *)&c, 1, false) != CUSTOS_OK)
			return too_big(p);
		i++;
		if (c == '\r') {
			/* Take the LF of a CRLF now when it is here. */
			if (i < len && in[i] == '\n') {
				if (raw_append(p, "\n", 1, line.len == 0) != CUSTOS_OK)
					return too_big(p);
				i++;
			} else if (i == len) {
				p->cr = true;
			}
		}
		if (line.len == 0) {
			fill_event(p, ev);
			p->ready = true;
			*have = true;
			return (ssize_t)i;
		}
		/* line.ptr may have moved with the appends: recompute from raw. */
		all = bspan(&p->raw);
		line = span_of(all.ptr + p->line, line.len);
		if (process_line(p, line) != CUSTOS_OK)
			return too_big(p);
		p->line = buf_used(&p->raw);
	}
	return (ssize_t)i;
}

/* ---------------------------------------------------------------------------------------------
 * Writer.
 */
static custos_err write_event(buf *out, span type, const sse_event *ev, span data, size_t at,
                              size_t *out_at)
{
	if (data.len == 0) /* (NULL, 0) too, the span of a buf never written: NULL + 0 is UB */
		data = span_of("", 0);
	if (type.len > 0) {
		ENSURE(memchr(type.ptr, '\n', type.len) == NULL &&
		               memchr(type.ptr, '\r', type.len) == NULL,
		       CUSTOS_ERR_INVAL, "SSE event type with a line break");
		GUARD(buf_append(out, "event: ", 7));
		GUARD(buf_append(out, type.ptr, type.len));
		GUARD(buf_append_byte(out, '\n'));
	}
	if (ev && ev->has_id) { /* a value from one line: it holds no line break */
		ENSURE(ev->id.len == 0 || (memchr(ev->id.ptr, '\n', ev->id.len) == NULL &&
		                           memchr(ev->id.ptr, '\r', ev->id.len) == NULL),
		       CUSTOS_ERR_INVAL, "SSE event id with a line break");
		GUARD(buf_append(out, "id: ", 4));
		GUARD(buf_append(out, ev->id.ptr, ev->id.len));
		GUARD(buf_append_byte(out, '\n'));
	}
	if (ev && ev->has_retry)
		GUARD(buf_printf(out, "retry: %llu\n", (unsigned long long)ev->retry));
	size_t i = 0;
	do {
		size_t j = i;
		while (j < data.len && data.ptr[j] != '\n' && data.ptr[j] != '\r')
			j++;
		GUARD(buf_append(out, "data: ", 6));
		if (out_at != NULL && at >= i && at <= j)
			*out_at = buf_used(out) + (at - i);
		GUARD(buf_append(out, data.ptr + i, j - i));
		GUARD(buf_append_byte(out, '\n'));
		if (j < data.len && data.ptr[j] == '\r' && j + 1 < data.len &&
		    data.ptr[j + 1] == '\n')
			j++;
		i = j + 1;
	} while (i <= data.len);
	return buf_append_byte(out, '\n');
}

custos_err sse_write_event(buf *out, span type, span data)
{
	return write_event(out, type, NULL, data, 0, NULL);
}

custos_err sse_write_event_from(buf *out, const sse_event *ev, span data)
{
	return write_event(out, ev->type, ev, data, 0, NULL);
}

custos_err sse_write_event_from_at(buf *out, const sse_event *ev, span data, size_t at,
                                   size_t *out_at)
{
	*out_at = SIZE_MAX;
	GUARD(write_event(out, ev->type, ev, data, at, out_at));
	ENSURE(*out_at != SIZE_MAX, CUSTOS_ERR_INVAL, "SSE data offset at a line break");
	return CUSTOS_OK;
}

custos_err sse_write_comment(buf *out, span text)
{
	ENSURE(memchr(text.ptr, '\n', text.len) == NULL && memchr(text.ptr, '\r', text.len) == NULL,
	       CUSTOS_ERR_INVAL, "SSE comment with a line break");
	GUARD(buf_append(out, ": ", 2));
	GUARD(buf_append(out, text.ptr, text.len));
	return buf_append_byte(out, '\n');
}
