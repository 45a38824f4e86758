/*
 * Compact event records: the producer's fast path. A proxy worker fills an audit_rec with
 * fixed-width fields and raw (unescaped) strings, no formatting and no escaping; the writer
 * process renders it to the canonical JSON body, byte for byte what the audit_event builder
 * makes for the same calls, before it chains the line. The record crosses the trust boundary,
 * so audit_rec_render treats it as hostile: every length is checked, reserved members and
 * types are refused, and strings are escaped by the writer.
 *
 * Layout (native byte order: producer and writer are one binary on one host):
 *   u8 AUDIT_REC_MAGIC, u64 wall_ns, u8 type_len, type
 *   then members, each an op byte:
 *     REC_STR   u8 klen, key, u16 vlen, value
 *     REC_U64   u8 klen, key, u64
 *     REC_BOOL  u8 klen, key, u8
 *     REC_STRS  u8 klen, key, u8 n, n x (u16 len, bytes; REC_NULL_LEN for null)
 *     REC_FIND  u8 n, n x (u8 tlen, type, u64 count)       -> "findings":[{type,count}...]
 *     REC_DURS  u8 n, n x (u8 plen, phase, u64 ns)          -> "duration_ns":{phase:ns...}
 */
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <openssl/evp.h>

#include "audit_int.h"

enum { REC_STR = 1, REC_U64, REC_BOOL, REC_STRS, REC_FIND, REC_DURS };
#define REC_NULL_LEN 0xffffu
#define REC_HEAD     10 /* magic + wall_ns + type_len */
/* `"time":"` + RFC 3339 (30) + `","type":"` + `"` */
#define REC_JSON_FIXED (8 + 30 + 10 + 1)

/* ---- producer side ---------------------------------------------------------------------- */

/* The producer does not scan strings: it keeps an upper bound of the rendered size (a byte
 * renders to at most 6, `\u00XX`; a number to at most 20 digits) and only when that bound
 * passes AUDIT_MAX_EVENT does audit_rec_end render the record to learn the exact size. */
#define ESC_MAX    6
#define DIGITS_MAX 20

static void rec_fail(audit_rec *r, custos_err e)
{
	if (r->err == CUSTOS_OK)
		r->err = e;
}

static bool rec_put(audit_rec *r, const void *p, size_t n)
{
	if (r->err != CUSTOS_OK)
		return false;
	if (n > sizeof(r->data) - r->len) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: record over %zu bytes",
		                    sizeof(r->data)));
		return false;
	}
	memcpy(r->data + r->len, p, n);
	r->len += n;
	return true;
}

static bool rec_u8(audit_rec *r, uint8_t v)
{
	return rec_put(r, &v, 1);
}

/* A short name (key, type, phase): at most 255 bytes. */
static bool rec_name(audit_rec *r, const char *s)
{
	size_t n = strlen(s);
	if (n > 255) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: name of %zu bytes", n));
		return false;
	}
	r->json_max += ESC_MAX * n;
	return rec_u8(r, (uint8_t)n) && rec_put(r, s, n);
}

/* The comma and quoted key of a member: `,"key":` */
static bool rec_key(audit_rec *r, uint8_t op, const char *key)
{
	if (key == NULL) {
		rec_fail(r, err_set(CUSTOS_ERR_INVAL, "audit: member without a key"));
		return false;
	}
	r->json_max += 4;
	return rec_u8(r, op) && rec_name(r, key);
}

static bool rec_sval(audit_rec *r, const char *s, size_t n)
{
	if (n >= REC_NULL_LEN) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: string of %zu bytes", n));
		return false;
	}
	uint16_t l = (uint16_t)n;
	r->json_max += 2 + ESC_MAX * n;
	return rec_put(r, &l, 2) && rec_put(r, s, n);
}

void audit_rec_begin_at(audit_rec *r, const char *type, uint64_t wall_ns)
{
	r->len = 0;
	r->err = CUSTOS_OK;
	r->ended = false;
	r->json_max = REC_JSON_FIXED;
	(void)rec_u8(r, AUDIT_REC_MAGIC);
	(void)rec_put(r, &wall_ns, 8);
	(void)rec_name(r, type ? type : "unknown");
}

void audit_rec_begin(audit_rec *r, const char *type)
{
	audit_rec_begin_at(r, type, tm_wall_ns());
}

void audit_rec_str(audit_rec *r, const char *key, span v)
{
	if (rec_key(r, REC_STR, key))
		(void)rec_sval(r, v.ptr, v.len);
}

void audit_rec_cstr(audit_rec *r, const char *key, const char *v)
{
	if (v != NULL)
		audit_rec_str(r, key, span_cstr(v));
}

void audit_rec_u64(audit_rec *r, const char *key, uint64_t v)
{
	if (rec_key(r, REC_U64, key)) {
		r->json_max += DIGITS_MAX;
		(void)rec_put(r, &v, 8);
	}
}

void audit_rec_bool(audit_rec *r, const char *key, bool v)
{
	if (rec_key(r, REC_BOOL, key)) {
		r->json_max += v ? 4 : 5;
		(void)rec_u8(r, v ? 1 : 0);
	}
}

void audit_rec_strs(audit_rec *r, const char *key, const char *const *v, size_t n)
{
	if (n > 255) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: %zu strings in %s", n, key));
		return;
	}
	if (!rec_key(r, REC_STRS, key) || !rec_u8(r, (uint8_t)n))
		return;
	r->json_max += 2 + (n ? n - 1 : 0); /* [] and commas */
	for (size_t i = 0; i < n; i++) {
		if (v[i] == NULL) {
			uint16_t l = REC_NULL_LEN;
			r->json_max += 4;
			(void)rec_put(r, &l, 2);
		} else {
			(void)rec_sval(r, v[i], strlen(v[i]));
		}
	}
}

void audit_rec_findings(audit_rec *r, const audit_finding *f, size_t n)
{
	if (n > AUDIT_MAX_FINDINGS) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "more than %d finding types",
		                    AUDIT_MAX_FINDINGS));
		return;
	}
	/* ,"findings":[ ... ] and per item {"type":"T","count":N} */
	r->json_max += 14 + (n ? n - 1 : 0);
	if (!rec_u8(r, REC_FIND) || !rec_u8(r, (uint8_t)n))
		return;
	for (size_t i = 0; i < n; i++) {
		r->json_max += 20 + DIGITS_MAX;
		if (!rec_name(r, f[i].type ? f[i].type : "") || !rec_put(r, &f[i].count, 8))
			return;
	}
}

void audit_rec_durations(audit_rec *r, const audit_duration *d, size_t n)
{
	if (n > 255) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: %zu durations", n));
		return;
	}
	/* ,"duration_ns":{ ... } and per item "phase":N */
	r->json_max += 17 + (n ? n - 1 : 0);
	if (!rec_u8(r, REC_DURS) || !rec_u8(r, (uint8_t)n))
		return;
	for (size_t i = 0; i < n; i++) {
		if (d[i].phase == NULL) {
			rec_fail(r, err_set(CUSTOS_ERR_INVAL, "audit: duration without a phase"));
			return;
		}
		r->json_max += 3 + DIGITS_MAX;
		if (!rec_name(r, d[i].phase) || !rec_put(r, &d[i].ns, 8))
			return;
	}
}

custos_err audit_rec_end(audit_rec *r)
{
	r->ended = true;
	if (r->err == CUSTOS_OK && r->json_max > AUDIT_MAX_EVENT) {
		/* The bound passes the limit: render to know (the writer renders the same way;
		 * a refusal other than the size is the writer's to record). */
		buf out;
		buf_init(&out, AUDIT_MAX_EVENT);
		custos_err e = audit_rec_render(audit_rec_bytes(r), &out);
		if (e == CUSTOS_ERR_LIMIT)
			r->err = err_set(CUSTOS_ERR_LIMIT, "audit: event over %d bytes",
			                 AUDIT_MAX_EVENT);
		else if (e == CUSTOS_OK)
			r->json_max = buf_used(&out);
		buf_free(&out);
	}
	if (r->err != CUSTOS_OK)
		return err_set(r->err, "audit: bad record: %s", err_msg());
	return CUSTOS_OK;
}

span audit_rec_bytes(const audit_rec *r)
{
	return span_of((const char *)r->data, r->len);
}

void audit_batch_init(audit_batch *b)
{
	buf_init(&b->b, AUDIT_MSG_MAX);
	b->n = 0;
}

void audit_batch_free(audit_batch *b)
{
	buf_free(&b->b);
	b->n = 0;
}

custos_err audit_batch_add(audit_batch *b, const audit_rec *r)
{
	ENSURE(r->ended && r->err == CUSTOS_OK, CUSTOS_ERR_INVAL,
	       "audit: record not finished with audit_rec_end");
	uint32_t len = (uint32_t)r->len;
	GUARD(buf_reserve(&b->b, 4 + r->len));
	memcpy(buf_tail(&b->b), &len, 4);
	memcpy(buf_tail(&b->b) + 4, r->data, r->len);
	buf_commit(&b->b, 4 + r->len);
	b->n++;
	return CUSTOS_OK;
}

/* ---- writer side: rendering a (hostile) record ------------------------------------------ */

typedef struct rd {
	const uint8_t *p;
	size_t n, at;
} rd;

static bool rd_take(rd *d, void *out, size_t n)
{
	if (n > d->n - d->at)
		return false;
	memcpy(out, d->p + d->at, n);
	d->at += n;
	return true;
}

/* A u8-length name as a view into the record. */
static bool rd_name(rd *d, span *s)
{
	uint8_t l;
	if (!rd_take(d, &l, 1) || l > d->n - d->at)
		return false;
	*s = span_of((const char *)d->p + d->at, l);
	d->at += l;
	return true;
}

static bool rd_sval(rd *d, span *s, bool *null)
{
	uint16_t l;
	if (!rd_take(d, &l, 2))
		return false;
	*null = l == REC_NULL_LEN;
	if (*null)
		return true;
	if (l > d->n - d->at)
		return false;
	*s = span_of((const char *)d->p + d->at, l);
	d->at += l;
	return true;
}

/* Bytes json_escape copies as they are: printable ASCII but the quote and the backslash. */
static const bool plain_byte[256] = {
	[0x20] = 1,
	[0x21] = 1,
	[0x23 ... 0x5b] = 1,
	[0x5d ... 0x7f] = 1,
};

#ifdef __SSE2__
/* Bit i set when byte i of the 16 at p needs escaping: a signed compare below 0x20 catches the
 * control bytes and every byte >= 0x80 at once. */
static unsigned escape_mask16(const unsigned char *p)
{
	const __m128i sp = _mm_set1_epi8(0x20), q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, sp),
	                           _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, bs)));
	return (unsigned)_mm_movemask_epi8(bad);
}
#endif

/* How many leading bytes of p need no escaping: a string of 16 bytes or more 16 at a time with
 * SSE2, its last block overlapping the one before (nothing past p + n is read); shorter ones
 * by table. */
static size_t plain_prefix(const unsigned char *p, size_t n)
{
	size_t i = 0;
#ifdef __SSE2__
	if (n >= 16) {
		unsigned m;
		for (; i + 16 <= n; i += 16)
			if ((m = escape_mask16(p + i)) != 0)
				return i + (size_t)__builtin_ctz(m);
		if (i == n)
			return n;
		/* The last n - i bytes are the top of the block ending at p + n. */
		m = escape_mask16(p + n - 16) >> (16 - (n - i));
		return m != 0 ? i + (size_t)__builtin_ctz(m) : n;
	}
#endif
	while (i < n && plain_byte[p[i]])
		i++;
	return i;
}

/* Appends pre, s escaped and post (each of pre/post at most 2 bytes): plain ASCII, the usual
 * case, is copied in one pass; anything else goes through core's json_escape. */
static custos_err put_quoted(buf *out, const char *pre, size_t npre, span s, const char *post,
                             size_t npost)
{
	GUARD(buf_reserve(out, npre + s.len + npost));
	uint8_t *t = buf_tail(out);
	const unsigned char *p = (const unsigned char *)s.ptr;

	memcpy(t, pre, npre);
	t += npre;
	size_t i = plain_prefix(p, s.len);
	memcpy(t, p, i);
	if (i == s.len) {
		memcpy(t + i, post, npost);
		buf_commit(out, npre + s.len + npost);
		return CUSTOS_OK;
	}
	buf_commit(out, npre + i);
	GUARD(json_escape(out, span_of(s.ptr + i, s.len - i)));
	return buf_append(out, post, npost);
}

static custos_err put_str(buf *out, span s)
{
	return put_quoted(out, "\"", 1, s, "\"", 1);
}

/* Decimal, two digits per division (durations and sizes are up to 20 digits long). */
static custos_err put_u64(buf *out, uint64_t v)
{
	static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
	                               "25262728293031323334353637383940414243444546474849"
	                               "50515253545556575859606162636465666768697071727374"
	                               "75767778798081828384858687888990919293949596979899";
	char t[20];
	size_t i = sizeof(t);
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		t[--i] = pairs[2 * r + 1];
		t[--i] = pairs[2 * r];
	}
	if (v >= 10) {
		t[--i] = pairs[2 * v + 1];
		t[--i] = pairs[2 * v];
	} else {
		t[--i] = (char)('0' + v);
	}
	return buf_append(out, t + i, sizeof(t) - i);
}

/* `,"key":` */
static custos_err put_key(buf *out, span k)
{
	return put_quoted(out, ",\"", 2, k, "\":", 2);
}

static bool reserved_key(span k)
{
	switch (k.len) {
	case 1:
		return k.ptr[0] == 'v';
	case 3:
		return memcmp(k.ptr, "seq", 3) == 0;
	case 4:
		return memcmp(k.ptr, "prev", 4) == 0 || memcmp(k.ptr, "hash", 4) == 0;
	default:
		return false;
	}
}

/* RFC 3339 with nanoseconds, as tm_rfc3339 writes it; the calendar part is cached per second
 * (a writer renders thousands of events within one second). */
static void put_time(char out[TM_RFC3339_LEN], uint64_t wall_ns)
{
	static _Thread_local uint64_t cached_sec = UINT64_MAX;
	static _Thread_local char cached[TM_RFC3339_LEN];
	uint64_t sec = wall_ns / 1000000000ull;
	unsigned ns = (unsigned)(wall_ns % 1000000000ull);

	if (sec != cached_sec) {
		tm_rfc3339(sec * 1000000000ull, cached);
		cached_sec = sec;
	}
	memcpy(out, cached, TM_RFC3339_LEN);
	char *dot = strchr(out, '.');
	if (dot == NULL || strlen(dot) != 11) { /* a year past 9999: no fast path */
		tm_rfc3339(wall_ns, out);
		return;
	}
	for (int i = 9; i >= 1; i--) {
		dot[i] = (char)('0' + ns % 10);
		ns /= 10;
	}
}

custos_err audit_rec_render(span rec, buf *out)
{
	rd d = { (const uint8_t *)rec.ptr, rec.len, 0 };
	uint8_t magic, op;
	uint64_t wall;
	span type, k, s;
	char ts[TM_RFC3339_LEN];
	bool null;

	ENSURE(rd_take(&d, &magic, 1) && magic == AUDIT_REC_MAGIC && rd_take(&d, &wall, 8) &&
	               rd_name(&d, &type),
	       CUSTOS_ERR_PARSE, "audit: bad record head");
	ENSURE(type.len > 0, CUSTOS_ERR_PARSE, "audit: event type is empty");
	ENSURE(!span_eq_cstr(type, "checkpoint") && !span_eq_cstr(type, "recovery") &&
	               !span_starts_with(type, SPAN_LIT("audit.")),
	       CUSTOS_ERR_DENIED, "event type \"%.*s\" is reserved for the writer", (int)type.len,
	       type.ptr);
	put_time(ts, wall);
	GUARD(buf_append(out, "\"time\":\"", 8));
	GUARD(buf_append_cstr(out, ts));
	GUARD(buf_append(out, "\",\"type\":", 9));
	GUARD(put_str(out, type));
	while (d.at < d.n) {
		(void)rd_take(&d, &op, 1);
		switch (op) {
		case REC_STR:
		case REC_U64:
		case REC_BOOL:
		case REC_STRS: {
			ENSURE(rd_name(&d, &k), CUSTOS_ERR_PARSE, "audit: truncated record");
			ENSURE(!reserved_key(k), CUSTOS_ERR_DENIED,
			       "event sets the reserved member %.*s", (int)k.len, k.ptr);
			GUARD(put_key(out, k));
			if (op == REC_STR) {
				ENSURE(rd_sval(&d, &s, &null) && !null, CUSTOS_ERR_PARSE,
				       "audit: bad string in record");
				GUARD(put_str(out, s));
			} else if (op == REC_U64) {
				uint64_t v;
				ENSURE(rd_take(&d, &v, 8), CUSTOS_ERR_PARSE,
				       "audit: truncated record");
				GUARD(put_u64(out, v));
			} else if (op == REC_BOOL) {
				uint8_t v;
				ENSURE(rd_take(&d, &v, 1) && v <= 1, CUSTOS_ERR_PARSE,
				       "audit: bad bool in record");
				GUARD(v ? buf_append(out, "true", 4) : buf_append(out, "false", 5));
			} else {
				uint8_t n;
				ENSURE(rd_take(&d, &n, 1), CUSTOS_ERR_PARSE,
				       "audit: truncated record");
				GUARD(buf_append_byte(out, '['));
				for (unsigned i = 0; i < n; i++) {
					ENSURE(rd_sval(&d, &s, &null), CUSTOS_ERR_PARSE,
					       "audit: bad string in record");
					if (i)
						GUARD(buf_append_byte(out, ','));
					GUARD(null ? buf_append(out, "null", 4) : put_str(out, s));
				}
				GUARD(buf_append_byte(out, ']'));
			}
			break;
		}
		case REC_FIND:
		case REC_DURS: {
			uint8_t n;
			uint64_t v;
			ENSURE(rd_take(&d, &n, 1), CUSTOS_ERR_PARSE, "audit: truncated record");
			ENSURE(op != REC_FIND || n <= AUDIT_MAX_FINDINGS, CUSTOS_ERR_PARSE,
			       "audit: too many findings in record");
			GUARD(op == REC_FIND ? buf_append(out, ",\"findings\":[", 13)
			                     : buf_append(out, ",\"duration_ns\":{", 16));
			for (unsigned i = 0; i < n; i++) {
				ENSURE(rd_name(&d, &k) && rd_take(&d, &v, 8), CUSTOS_ERR_PARSE,
				       "audit: truncated record");
				if (i)
					GUARD(buf_append_byte(out, ','));
				if (op == REC_FIND) {
					GUARD(buf_append(out, "{\"type\":", 8));
					GUARD(put_str(out, k));
					GUARD(buf_append(out, ",\"count\":", 9));
					GUARD(put_u64(out, v));
					GUARD(buf_append_byte(out, '}'));
				} else {
					GUARD(put_str(out, k));
					GUARD(buf_append_byte(out, ':'));
					GUARD(put_u64(out, v));
				}
			}
			GUARD(buf_append_byte(out, op == REC_FIND ? ']' : '}'));
			break;
		}
		default:
			return err_set(CUSTOS_ERR_PARSE, "audit: unknown member kind %u in record",
			               op);
		}
	}
	return CUSTOS_OK;
}
