/* libFuzzer target: one audit log record through everything that reads records: the line
 * framing parser (verify), the JSON scanner, the writer's body check and its rendering of
 * compact records (the trust boundary), every SIEM rendering, and the same bytes as a request
 * path through audit.query's filter (no query value under names or none). Errors are the expected outcome; crashes and broken invariants are
 * bugs. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../audit/audit_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* in as an audited path under each audit.query mode, in room enough and in room cut short:
 * NUL-terminated within the room; none keeps nothing from the first '?'; names keeps after it
 * only names, '=', '&' and markers: every '=' is followed by a marker (or the cut). */
static void query_filter(span in)
{
	static char out[AUDIT_QUERY_ROOM(4 * AUDIT_MAX_LINE)];
	const char *qm = memchr(in.ptr, '?', in.len);
	for (int q = AUDIT_QUERY_NAMES; q <= AUDIT_QUERY_NONE; q++) {
		size_t rooms[2] = { AUDIT_QUERY_ROOM(in.len), in.len / 2 + 1 };
		for (int k = 0; k < 2; k++) {
			size_t n = audit_query_filter(in, (audit_query)q, out, rooms[k]);
			if (n >= rooms[k] || out[n] != '\0')
				__builtin_trap();
			if (q == AUDIT_QUERY_FULL && k == 0 &&
			    (n != in.len || memcmp(out, in.ptr, n)))
				__builtin_trap();
			if (qm == NULL || q == AUDIT_QUERY_FULL)
				continue;
			size_t at = (size_t)(qm - in.ptr);
			if (q == AUDIT_QUERY_NONE && n > at)
				__builtin_trap();
			if (q != AUDIT_QUERY_NAMES || n <= at + 1)
				continue;
			for (size_t i = at + 1; i < n; i++)
				if (out[i] == '=' && i + 1 < n &&
				    memcmp(out + i + 1, AUDIT_QUERY_MARK,
				           sizeof(AUDIT_QUERY_MARK) - 1))
					__builtin_trap();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	span in = span_of((const char *)data, size);
	audit_line l;
	buf out;

	if (size > 4 * AUDIT_MAX_LINE)
		return 0;
	buf_init(&out, 8 * AUDIT_MAX_LINE);
	if (audit_line_parse(in, &l) == CUSTOS_OK) {
		/* The views stay inside the input and in order. */
		if (l.body.ptr < in.ptr || l.body.ptr + l.body.len > in.ptr + in.len ||
		    l.canonical.len >= in.len)
			__builtin_trap();
		(void)!audit_body_check(l.body, true);
	}
	if (ajson_validate(in) == CUSTOS_OK) {
		size_t pos = 0;
		span k, v;
		while (ajson_next(in, &pos, &k, &v) == CUSTOS_OK)
			if (v.len > 0 && v.ptr[0] == '"') {
				buf_reset(&out);
				if (ajson_unescape(v, &out) != CUSTOS_OK)
					__builtin_trap(); /* validated strings always unescape */
			}
		audit_render_ctx ctx = { .hostname = "fuzz", .inner = AUDIT_FMT_CEF };
		for (int f = AUDIT_FMT_JSON; f <= AUDIT_FMT_RFC5424; f++) {
			buf_reset(&out);
			if (audit_render((audit_format)f, in, &ctx, &out) != CUSTOS_OK)
				continue;
			/* No rendering may contain a raw line break: one event, one line. */
			span o = buf_span(&out);
			if (f != AUDIT_FMT_JSON && memchr(o.ptr, '\n', o.len) != NULL)
				__builtin_trap();
		}
	}
	(void)!audit_body_check(in, false);
	/* The same bytes as a compact record (first byte forced to the magic): what renders is
	 * a body the writer's JSON check accepts, within AUDIT_MAX_EVENT. */
	if (size > 0 && size <= AUDIT_MAX_EVENT) {
		uint8_t rec[AUDIT_MAX_EVENT];
		memcpy(rec, data, size);
		rec[0] = AUDIT_REC_MAGIC;
		buf body;
		buf_init(&body, AUDIT_MAX_EVENT);
		if (audit_rec_render(span_of((const char *)rec, size), &body) == CUSTOS_OK &&
		    audit_body_check(buf_span(&body), false) != CUSTOS_OK)
			__builtin_trap();
		buf_free(&body);
	}
	buf_free(&out);
	query_filter(in);
	return 0;
}
