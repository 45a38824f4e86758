/*
 * Line framing and the hash chain. A line is {"v":1,"seq":S,<body>,"prev":"P","hash":"H"};
 * H = SHA-256 over the bytes from '{' through P's closing quote, so every record commits to
 * its predecessor. Fixed framing at both ends lets verify find the fields without trusting
 * anything in the body.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "audit_int.h"

custos_err audit_sha256_hex(const void *p, size_t n, char out[AUDIT_HASH_HEX + 1])
{
	uint8_t md[32];
	unsigned int mdlen = 0;

	if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return err_set(CUSTOS_ERR_CRYPTO, "SHA-256 failed");
	num_hex(md, 32, out);
	return CUSTOS_OK;
}

static bool all_hex(span s)
{
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

custos_err audit_line_parse(span line, audit_line *out)
{
	size_t pl = sizeof(AUDIT_LINE_PREFIX) - 1;

	memset(out, 0, sizeof(*out));
	ENSURE(line.len <= AUDIT_MAX_LINE, CUSTOS_ERR_LIMIT, "record longer than %d bytes",
	       AUDIT_MAX_LINE);
	ENSURE(line.len > pl + AUDIT_HASH_SUFFIX_LEN + AUDIT_PREV_SUFFIX_LEN &&
	               memcmp(line.ptr, AUDIT_LINE_PREFIX, pl) == 0,
	       CUSTOS_ERR_PARSE, "not an audit record (bad prefix)");
	size_t i = pl, ds = pl;
	while (i < line.len && line.ptr[i] >= '0' && line.ptr[i] <= '9')
		i++;
	ENSURE(i > ds && i < line.len && line.ptr[i] == ',', CUSTOS_ERR_PARSE, "bad seq");
	GUARD(num_parse_u64(span_of(line.ptr + ds, i - ds), 1, UINT64_MAX, &out->seq));
	size_t hs = line.len - AUDIT_HASH_SUFFIX_LEN;
	ENSURE(CRYPTO_memcmp(line.ptr + hs, AUDIT_HASH_KEY, 9) == 0 &&
	               line.ptr[line.len - 2] == '"' && line.ptr[line.len - 1] == '}' &&
	               all_hex(span_of(line.ptr + hs + 9, AUDIT_HASH_HEX)),
	       CUSTOS_ERR_PARSE, "bad or missing hash field");
	size_t ps = hs - AUDIT_PREV_SUFFIX_LEN;
	ENSURE(CRYPTO_memcmp(line.ptr + ps, AUDIT_PREV_KEY, 9) == 0 && line.ptr[hs - 1] == '"' &&
	               all_hex(span_of(line.ptr + ps + 9, AUDIT_HASH_HEX)),
	       CUSTOS_ERR_PARSE, "bad or missing prev field");
	ENSURE(ps > i + 1, CUSTOS_ERR_PARSE, "empty body");
	memcpy(out->hash, line.ptr + hs + 9, AUDIT_HASH_HEX);
	memcpy(out->prev, line.ptr + ps + 9, AUDIT_HASH_HEX);
	out->body = span_of(line.ptr + i + 1, ps - i - 1);
	out->canonical = span_of(line.ptr, hs);
	return CUSTOS_OK;
}

custos_err audit_line_build(buf *out, uint64_t seq, span body, const char *prev,
                            char hash[AUDIT_HASH_HEX + 1])
{
	return audit_line_build_md(out, seq, body, prev, hash, NULL, NULL);
}

/* SHA-256 through a reused context and a fetched digest (no per-call fetch or allocation). */
static custos_err sha256_hex_ctx(EVP_MD_CTX *ctx, const EVP_MD *md, const void *p, size_t n,
                                 char out[AUDIT_HASH_HEX + 1])
{
	uint8_t h[32];
	unsigned int hl = 0;

	if (EVP_DigestInit_ex2(ctx, md, NULL) != 1 || EVP_DigestUpdate(ctx, p, n) != 1 ||
	    EVP_DigestFinal_ex(ctx, h, &hl) != 1 || hl != 32)
		return err_set(CUSTOS_ERR_CRYPTO, "SHA-256 failed");
	num_hex(h, 32, out);
	return CUSTOS_OK;
}

custos_err audit_line_build_md(buf *out, uint64_t seq, span body, const char *prev,
                               char hash[AUDIT_HASH_HEX + 1], EVP_MD_CTX *ctx, const EVP_MD *md)
{
	char head[64], digits[20];
	size_t nd = 0, pl = sizeof(AUDIT_LINE_PREFIX) - 1;
	do {
		digits[nd++] = (char)('0' + seq % 10);
		seq /= 10;
	} while (seq);
	memcpy(head, AUDIT_LINE_PREFIX, pl);
	for (size_t i = 0; i < nd; i++)
		head[pl + i] = digits[nd - 1 - i];
	head[pl + nd] = ',';
	int hn = (int)(pl + nd + 1);
	size_t start = out->len - out->off;

	GUARD(buf_reserve(out, (size_t)hn + body.len + AUDIT_PREV_SUFFIX_LEN +
	                               AUDIT_HASH_SUFFIX_LEN + 1));
	GUARD(buf_append(out, head, (size_t)hn));
	GUARD(buf_append_span(out, body));
	GUARD(buf_append(out, AUDIT_PREV_KEY, 9));
	GUARD(buf_append(out, prev, AUDIT_HASH_HEX));
	GUARD(buf_append_byte(out, '"'));
	span all = buf_span(out);
	if (ctx != NULL && md != NULL)
		GUARD(sha256_hex_ctx(ctx, md, all.ptr + start, all.len - start, hash));
	else
		GUARD(audit_sha256_hex(all.ptr + start, all.len - start, hash));
	GUARD(buf_append(out, AUDIT_HASH_KEY, 9));
	GUARD(buf_append(out, hash, AUDIT_HASH_HEX));
	GUARD(buf_append(out, "\"}\n", 3));
	return CUSTOS_OK;
}

/* The members a body may not set or set again, compared unescaped: JSON readers decode
 * "se\u0071" to "seq", and most keep the last of two equal names, so a body that named one of
 * these (again) would show a SIEM another seq, prev, hash, time or type than the one the chain
 * and verify read (the first). */
static bool framing_member(span k)
{
	static const char *const names[] = { "v", "seq", "prev", "hash", "time", "type" };
	char un[8];
	size_t n = 0;

	if (memchr(k.ptr, '\\', k.len) == NULL) /* the writer's hot path */
		return audit_reserved_member(k);
	/* Escaped: decode up to 8 bytes (every name above is shorter); longer is none of them. */
	for (size_t i = 0; i < k.len; i++) {
		uint32_t c = (unsigned char)k.ptr[i];
		if (c == '\\' && i + 1 < k.len) {
			char e = k.ptr[++i];
			if (e == 'u') {
				if (i + 4 >= k.len)
					return false;
				c = 0;
				for (int d = 1; d <= 4; d++) {
					char h = k.ptr[i + (size_t)d];
					c = c << 4 |
					    (uint32_t)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
				}
				i += 4;
			} else {
				c = (unsigned char)e; /* \" \\ \/ and the control escapes */
			}
		}
		if (c >= 0x80 || n == sizeof(un))
			return false;
		un[n++] = (char)c;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && memcmp(un, names[i], n) == 0)
			return true;
	return false;
}

bool audit_reserved_member(span k)
{
	switch (k.len) { /* by length first */
	case 1:
		return k.ptr[0] == 'v';
	case 3:
		return memcmp(k.ptr, "seq", 3) == 0;
	case 4:
		return memcmp(k.ptr, "prev", 4) == 0 || memcmp(k.ptr, "hash", 4) == 0 ||
		       memcmp(k.ptr, "time", 4) == 0 || memcmp(k.ptr, "type", 4) == 0;
	default:
		return false;
	}
}

static bool writer_only_type(span t)
{
	return span_eq_cstr(t, "\"checkpoint\"") || span_eq_cstr(t, "\"recovery\"") ||
	       span_starts_with(t, SPAN_LIT("\"audit."));
}

custos_err audit_body_check(span body, bool writer_types)
{
	char obj[AUDIT_MAX_EVENT + 2];
	size_t pos = 0, idx = 0;
	span k, v;
	custos_err e;

	ENSURE(body.len > 0 && body.len <= AUDIT_MAX_EVENT, CUSTOS_ERR_LIMIT,
	       "event body of %zu bytes (limit %d)", body.len, AUDIT_MAX_EVENT);
	for (size_t i = 0; i < body.len; i++)
		ENSURE((unsigned char)body.ptr[i] >= 0x20, CUSTOS_ERR_PARSE,
		       "raw control byte in event body");
	obj[0] = '{';
	memcpy(obj + 1, body.ptr, body.len);
	obj[body.len + 1] = '}';
	span o = span_of(obj, body.len + 2);
	GUARD(ajson_validate(o));
	while ((e = ajson_next(o, &pos, &k, &v)) == CUSTOS_OK) {
		if (idx == 0)
			ENSURE(span_eq_cstr(k, "time") && v.len > 2 && v.ptr[0] == '"',
			       CUSTOS_ERR_PARSE, "event must start with time");
		if (idx == 1) {
			ENSURE(span_eq_cstr(k, "type") && v.len > 2 && v.ptr[0] == '"',
			       CUSTOS_ERR_PARSE, "event type must follow time");
			ENSURE(writer_types || !writer_only_type(v), CUSTOS_ERR_DENIED,
			       "event type %.*s is reserved for the writer", (int)v.len, v.ptr);
		}
		ENSURE(idx < 2 || !framing_member(k), CUSTOS_ERR_DENIED,
		       "event sets the reserved member %.*s", (int)k.len, k.ptr);
		idx++;
	}
	if (e != CUSTOS_ERR_NOTFOUND)
		return e;
	ENSURE(idx >= 2, CUSTOS_ERR_PARSE, "event lacks time and type");
	return CUSTOS_OK;
}

void audit_file_name(uint64_t first_seq, char out[64])
{
	snprintf(out, 64, AUDIT_FILE_PREFIX "%020llu" AUDIT_FILE_SUFFIX,
	         (unsigned long long)first_seq);
}

bool audit_file_name_parse(const char *name, uint64_t *first_seq)
{
	size_t n = strlen(name), pl = sizeof(AUDIT_FILE_PREFIX) - 1,
	       sl = sizeof(AUDIT_FILE_SUFFIX) - 1;
	if (n != pl + 20 + sl || memcmp(name, AUDIT_FILE_PREFIX, pl) != 0 ||
	    memcmp(name + pl + 20, AUDIT_FILE_SUFFIX, sl) != 0)
		return false;
	return num_parse_u64(span_of(name + pl, 20), 0, UINT64_MAX, first_seq) == CUSTOS_OK;
}
