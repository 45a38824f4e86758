/*
 * `audit: bodies`: a body's first bytes as the audit event records them (bodyrec.h). Text
 * stays text, so that a reader of the trail sees the prompt as it went; anything else is
 * base64, so that the record is exact and its size bounded.
 */
#include "bodyrec.h"

/* RFC 4648 base64 of p[0..n) at out (BODYREC_B64_ROOM(n) bytes, NUL-terminated); returns the
 * text's length. OpenSSL's encoder is not among the functions custos loads (dl/). */
static size_t b64_encode(const uint8_t *p, size_t n, char *out)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = al[v >> 18];
		out[o++] = al[(v >> 12) & 63];
		out[o++] = al[(v >> 6) & 63];
		out[o++] = al[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		out[o++] = al[v >> 18];
		out[o++] = al[(v >> 12) & 63];
		out[o++] = i + 1 < n ? al[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

bool bodyrec_is_text(const uint8_t *p, size_t n, bool cut, size_t *text_len)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		if (c < 0x80) {
			if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
				return false;
			i++;
			continue;
		}
		size_t l = json_utf8_seq_len(p + i, n - i);
		if (l > 0) {
			i += l;
			continue;
		}
		/* A character the cut split: a lead byte and fewer continuation bytes than it
		 * announces, at the very end of a prefix. */
		size_t want = c >= 0xC2 && c <= 0xDF   ? 2
		              : c >= 0xE0 && c <= 0xEF ? 3
		              : c >= 0xF0 && c <= 0xF4 ? 4
		                                       : 0;
		if (!cut || want == 0 || n - i >= want)
			return false;
		for (size_t k = i + 1; k < n; k++)
			if ((p[k] & 0xC0) != 0x80)
				return false;
		break;
	}
	*text_len = i;
	return true;
}

void bodyrec_make(span have, uint64_t total, size_t max, char *b64, size_t b64_room, bodyrec *out)
{
	size_t n = have.len < max ? have.len : max;
	bool cut = total > n;
	size_t tl = 0;

	*out = (bodyrec){ .length = total };
	if (bodyrec_is_text((const uint8_t *)have.ptr, n, cut, &tl)) {
		out->data = span_of(have.ptr ? have.ptr : "", tl);
		out->truncated = total > tl;
		return;
	}
	if (b64_room < BODYREC_B64_ROOM(n)) /* the caller's buffer: record less, flagged */
		n = b64_room ? (b64_room - 1) / 4 * 3 : 0;
	out->data = span_of(b64, n ? b64_encode((const uint8_t *)have.ptr, n, b64) : 0);
	out->base64 = true;
	out->truncated = total > n;
}
