/*
 * libFuzzer target for the body record of `audit: bodies` (proxy/bodyrec.c): the first two
 * bytes pick the cap (0 to CFG_MAX_AUDIT_BODY_RECORD) and how many of the body's bytes were
 * kept (a response's capture), the rest is the body. The record holds at most the cap; text
 * is a prefix of the body that json_escape keeps as it is and that escapes to at most twice
 * its bytes (the bound proxy/bodyrec.h sizes the event with); base64 decodes to a prefix of
 * the body; the flag says exactly whether fewer bytes than the body's were recorded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/bodyrec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes s (padded base64) into out; returns the bytes, or aborts on anything else. */
static size_t b64_decode(span s, uint8_t *out)
{
	size_t o = 0;
	check(s.len % 4 == 0);
	for (size_t i = 0; i < s.len; i += 4) {
		int v[4];
		for (int k = 0; k < 4; k++)
			v[k] = s.ptr[i + (size_t)k] == '=' ? -2 : b64val(s.ptr[i + (size_t)k]);
		check(v[0] >= 0 && v[1] >= 0);
		check(v[2] != -1 && v[3] != -1);
		check(v[2] >= 0 || v[3] == -2);
		check(i + 4 == s.len || (v[2] >= 0 && v[3] >= 0)); /* padding only at the end */
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (v[2] >= 0)
			out[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
		if (v[3] >= 0)
			out[o++] = (uint8_t)((v[2] & 3) << 6 | v[3]);
	}
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char b64[BODYREC_B64_ROOM(CFG_MAX_AUDIT_BODY_RECORD)];
	static uint8_t dec[CFG_MAX_AUDIT_BODY_RECORD + 3];

	if (size < 2)
		return 0;
	size_t max = ((size_t)data[0] << 8 | data[1]) % (CFG_MAX_AUDIT_BODY_RECORD + 1);
	const char *body = (const char *)data + 2;
	size_t total = size - 2;
	/* the capture: the whole body, or (odd cap) only its first cap bytes */
	size_t have = (data[1] & 1) && total > max ? max : total;
	bodyrec br;

	bodyrec_make(span_of(body, have), total, max, b64, sizeof(b64), &br);
	check(br.length == total);
	size_t rec;
	if (br.base64) {
		rec = b64_decode(br.data, dec);
		check(rec <= max && rec <= have);
		check(rec == 0 || memcmp(dec, body, rec) == 0);
	} else {
		rec = br.data.len;
		check(rec <= max && rec <= have && (rec == 0 || br.data.ptr == body));
		size_t tl = 0;
		check(bodyrec_is_text((const uint8_t *)br.data.ptr, rec, false, &tl) && tl == rec);
		buf esc;
		buf_init(&esc, 2 * CFG_MAX_AUDIT_BODY_RECORD + 16);
		check(json_escape(&esc, br.data) == CUSTOS_OK);
		check(buf_used(&esc) <= 2 * rec); /* kept as it is, quotes and TAB/LF/CR doubled */
		buf_free(&esc);
	}
	check(br.truncated == (rec < total));
	return 0;
}
