/*
 * `audit: bodies`: how a request or response body goes into the request's audit event
 * (docs/POLICY.md "Bodies"). Pure functions, no I/O: the first bytes of a body, up to a cap,
 * as a JSON string when they are text, else as base64, with the body's whole length.
 */
#ifndef CUSTOS_PROXY_BODYREC_H
#define CUSTOS_PROXY_BODYREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "custos/audit.h"
#include "custos/config.h"
#include "custos/core.h"

/* Room for the base64 text of max bytes of body and the NUL that ends it. */
#define BODYREC_B64_ROOM(max) ((((max) + 2) / 3) * 4 + 1)
/* The most JSON a recorded body of max bytes adds to an event: its four members
 * (`,"response_body":"..."`, `_encoding`, `_length` with 20 digits, `_truncated`). Text is
 * at most twice its bytes escaped (only '"', '\', TAB, LF and CR are escaped: other control
 * characters make a body binary), base64 is 4/3. */
#define BODYREC_JSON_MAX(max) (2 * (max) + 140)
/* What the rest of an http.request event keeps, at worst, beside two bodies at the largest
 * cap custos.yaml accepts; an event that needs more has its bodies cut further (emit.c). */
#define BODYREC_EVENT_RESERVE 1536
_Static_assert(CFG_AUDIT_RECORD_BYTES == AUDIT_MAX_EVENT, "config.h names the record's size");
_Static_assert(2 * BODYREC_JSON_MAX(CFG_MAX_AUDIT_BODY_RECORD) + BODYREC_EVENT_RESERVE <=
                       AUDIT_MAX_EVENT,
               "audit.body_record_max's maximum must leave two bodies room in an event");

typedef struct bodyrec {
	span data;       /* the event's value: the body's first bytes, or their base64 */
	bool base64;     /* data is base64 (the bytes are not UTF-8 text) */
	bool truncated;  /* data holds fewer bytes than the body had */
	uint64_t length; /* the body's whole length in bytes */
} bodyrec;

/* True when p[0..n) is UTF-8 text as the trail records it verbatim: valid UTF-8 (as
 * json_utf8_seq_len) with no control character but TAB, LF and CR. *text_len gets the bytes
 * of p that are that text: n, or, when cut is true (p is a prefix of a longer body), n less
 * an incomplete character at its end. */
bool bodyrec_is_text(const uint8_t *p, size_t n, bool cut, size_t *text_len);

/* The record of a body of total bytes whose first bytes are have (have.len <= total; the
 * bytes past have.len were not kept) with at most max bytes recorded: *out's data points into
 * have (text) or into b64 (base64; b64_room at least BODYREC_B64_ROOM(max)). */
void bodyrec_make(span have, uint64_t total, size_t max, char *b64, size_t b64_room, bodyrec *out);

#endif
