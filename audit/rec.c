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

/* Where the next n bytes go, or NULL (the record failed, now or before). Each member reserves
 * its bytes once and writes them in place: the record is built at the rate of a few stores
 * per member, on the request path. */
static inline uint8_t *rec_room(audit_rec *r, size_t n)
{
	if (r->err != CUSTOS_OK)
		return NULL;
	if (n > sizeof(r->data) - r->len) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: record over %zu bytes",
		                    sizeof(r->data)));
		return NULL;
	}
	return r->data + r->len;
}

/* A short name (key, type, phase): at most 255 bytes; false (and the record failed) past it. */
static inline bool rec_name_ok(audit_rec *r, size_t n)
{
	if (n <= 255)
		return true;
	rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: name of %zu bytes", n));
	return false;
}

/* A u8-length name at p; returns the byte after it. */
static inline uint8_t *put_name(uint8_t *p, const char *s, size_t n)
{
	*p++ = (uint8_t)n;
	memcpy(p, s, n);
	return p + n;
}

/* A u16-length string at p; returns the byte after it. */
static inline uint8_t *put_sval(uint8_t *p, const char *s, size_t n)
{
	uint16_t l = (uint16_t)n;
	memcpy(p, &l, 2);
	memcpy(p + 2, s, n);
	return p + 2 + n;
}

/* The op and key of a member, `,"key":` rendered, with extra bytes of value to follow;
 * returns where the value goes, or NULL. */
static uint8_t *rec_member(audit_rec *r, uint8_t op, const char *key, size_t extra)
{
	if (key == NULL) {
		rec_fail(r, err_set(CUSTOS_ERR_INVAL, "audit: member without a key"));
		return NULL;
	}
	size_t kl = strlen(key);
	if (!rec_name_ok(r, kl))
		return NULL;
	uint8_t *p = rec_room(r, 2 + kl + extra);
	if (p == NULL)
		return NULL;
	r->len += 2 + kl + extra;
	r->json_max += 4 + ESC_MAX * kl;
	*p = op;
	return put_name(p + 1, key, kl);
}

static bool rec_sval_ok(audit_rec *r, size_t n)
{
	if (n < REC_NULL_LEN)
		return true;
	rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: string of %zu bytes", n));
	return false;
}

void audit_rec_begin_at(audit_rec *r, const char *type, uint64_t wall_ns)
{
	r->len = 0;
	r->err = CUSTOS_OK;
	r->ended = false;
	r->json_max = REC_JSON_FIXED;
	if (type == NULL)
		type = "unknown";
	size_t n = strlen(type);
	if (!rec_name_ok(r, n))
		return;
	uint8_t *p = rec_room(r, REC_HEAD + n);
	if (p == NULL)
		return;
	p[0] = AUDIT_REC_MAGIC;
	memcpy(p + 1, &wall_ns, 8);
	(void)put_name(p + 9, type, n);
	r->len = REC_HEAD + n;
	r->json_max += ESC_MAX * n;
}

void audit_rec_begin(audit_rec *r, const char *type)
{
	audit_rec_begin_at(r, type, tm_wall_ns());
}

void audit_rec_str(audit_rec *r, const char *key, span v)
{
	if (!rec_sval_ok(r, v.len))
		return;
	uint8_t *p = rec_member(r, REC_STR, key, 2 + v.len);
	if (p != NULL) {
		(void)put_sval(p, v.ptr, v.len);
		r->json_max += 2 + ESC_MAX * v.len;
	}
}

void audit_rec_cstr(audit_rec *r, const char *key, const char *v)
{
	if (v != NULL)
		audit_rec_str(r, key, span_cstr(v));
}

void audit_rec_u64(audit_rec *r, const char *key, uint64_t v)
{
	uint8_t *p = rec_member(r, REC_U64, key, 8);
	if (p != NULL) {
		memcpy(p, &v, 8);
		r->json_max += DIGITS_MAX;
	}
}

void audit_rec_bool(audit_rec *r, const char *key, bool v)
{
	uint8_t *p = rec_member(r, REC_BOOL, key, 1);
	if (p != NULL) {
		*p = v ? 1 : 0;
		r->json_max += v ? 4 : 5;
	}
}

void audit_rec_strs(audit_rec *r, const char *key, const char *const *v, size_t n)
{
	if (n > 255) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: %zu strings in %s", n, key));
		return;
	}
	uint8_t *p = rec_member(r, REC_STRS, key, 1);
	if (p == NULL)
		return;
	*p = (uint8_t)n;
	r->json_max += 2 + (n ? n - 1 : 0); /* [] and commas */
	for (size_t i = 0; i < n; i++) {
		size_t l = v[i] == NULL ? 0 : strlen(v[i]);
		if (!rec_sval_ok(r, l) || (p = rec_room(r, 2 + l)) == NULL)
			return;
		r->len += 2 + l;
		if (v[i] == NULL) {
			uint16_t nl = REC_NULL_LEN;
			memcpy(p, &nl, 2);
			r->json_max += 4;
		} else {
			(void)put_sval(p, v[i], l);
			r->json_max += 2 + ESC_MAX * l;
		}
	}
}

/* A list member: op, u8 count, then per item a u8-length name and a u64 (findings: type and
 * count; durations: phase and nanoseconds). */
static void rec_pairs(audit_rec *r, uint8_t op, size_t n, const char *(*name)(const void *, size_t),
                      uint64_t (*val)(const void *, size_t), const void *items, size_t item_json)
{
	uint8_t *p = rec_room(r, 2);
	if (p == NULL)
		return;
	p[0] = op;
	p[1] = (uint8_t)n;
	r->len += 2;
	for (size_t i = 0; i < n; i++) {
		const char *nm = name(items, i);
		if (nm == NULL) {
			rec_fail(r, err_set(CUSTOS_ERR_INVAL, "audit: duration without a phase"));
			return;
		}
		size_t l = strlen(nm);
		uint64_t v = val(items, i);
		if (!rec_name_ok(r, l) || (p = rec_room(r, 1 + l + 8)) == NULL)
			return;
		memcpy(put_name(p, nm, l), &v, 8);
		r->len += 1 + l + 8;
		r->json_max += item_json + DIGITS_MAX + ESC_MAX * l;
	}
}

static const char *finding_type(const void *items, size_t i)
{
	const char *t = ((const audit_finding *)items)[i].type;
	return t ? t : "";
}

static uint64_t finding_count(const void *items, size_t i)
{
	return ((const audit_finding *)items)[i].count;
}

static const char *duration_phase(const void *items, size_t i)
{
	return ((const audit_duration *)items)[i].phase;
}

static uint64_t duration_ns(const void *items, size_t i)
{
	return ((const audit_duration *)items)[i].ns;
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
	rec_pairs(r, REC_FIND, n, finding_type, finding_count, f, 20);
}

void audit_rec_durations(audit_rec *r, const audit_duration *d, size_t n)
{
	if (n > 255) {
		rec_fail(r, err_set(CUSTOS_ERR_LIMIT, "audit: %zu durations", n));
		return;
	}
	/* ,"duration_ns":{ ... } and per item "phase":N */
	r->json_max += 17 + (n ? n - 1 : 0);
	rec_pairs(r, REC_DURS, n, duration_phase, duration_ns, d, 3);
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
	b->held = 0;
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

/* True when none of the w (4 or 8) bytes at p needs escaping: no byte below 0x20 or from 0x80,
 * no quote, no backslash (the exact "has a byte less than n" and "has a zero byte" word tests:
 * no false answer either way). */
static inline bool word_plain(const unsigned char *p, size_t w)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	uint64_t x = 0;
	memcpy(&x, p, w);
	if (w < 8)
		x |= 0x2020202000000000ull; /* pad the unused half with spaces (plain) */
	uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
	uint64_t bad = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x;
	return (bad & high) == 0;
}

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
	if (n >= 4) {
		/* Two overlapping words (8-15 bytes) or half-words (4-7): all plain, the usual case
		 * for keys and short values, is answered without a loop. */
		if (n >= 8 ? word_plain(p, 8) && word_plain(p + n - 8, 8)
		           : word_plain(p, 4) && word_plain(p + n - 4, 4))
			return n;
	}
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

/* Decimal, two digits per division (durations and sizes are up to 20 digits long), written at
 * t; returns the byte after it. */
static uint8_t *u64_digits(uint8_t *t, uint64_t v)
{
	static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
	                               "25262728293031323334353637383940414243444546474849"
	                               "50515253545556575859606162636465666768697071727374"
	                               "75767778798081828384858687888990919293949596979899";
	char d[20];
	size_t i = sizeof(d);
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		d[--i] = pairs[2 * r + 1];
		d[--i] = pairs[2 * r];
	}
	if (v >= 10) {
		d[--i] = pairs[2 * v + 1];
		d[--i] = pairs[2 * v];
	} else {
		d[--i] = (char)('0' + v);
	}
	memcpy(t, d + i, sizeof(d) - i);
	return t + (sizeof(d) - i);
}

static custos_err put_u64(buf *out, uint64_t v)
{
	GUARD(buf_reserve(out, 20));
	uint8_t *t = buf_tail(out);
	buf_commit(out, (size_t)(u64_digits(t, v) - t));
	return CUSTOS_OK;
}

/* `,"key":` */
static custos_err put_key(buf *out, span k)
{
	return put_quoted(out, ",\"", 2, k, "\":", 2);
}

/* A member whose key (and, for a string, value) need no escaping, written with one reserve:
 * `,"key":"value"` or `,"key":N`. False, with nothing read or written, when it does not apply
 * (escaping, a bad or truncated value, no room): the general path then renders or refuses it. */
static bool put_plain_member(buf *out, rd *d, uint8_t op, span k)
{
	const unsigned char *kp = (const unsigned char *)k.ptr;
	if (plain_prefix(kp, k.len) != k.len)
		return false;
	if (op == REC_STR) {
		uint16_t l;
		if (d->n - d->at < 2)
			return false;
		memcpy(&l, d->p + d->at, 2);
		if (l == REC_NULL_LEN || l > d->n - d->at - 2)
			return false;
		const unsigned char *v = d->p + d->at + 2;
		if (plain_prefix(v, l) != l || buf_reserve(out, 6 + k.len + l) != CUSTOS_OK)
			return false;
		uint8_t *t = buf_tail(out);
		memcpy(t, ",\"", 2);
		memcpy(t + 2, kp, k.len);
		t += 2 + k.len;
		memcpy(t, "\":\"", 3);
		memcpy(t + 3, v, l);
		t[3 + l] = '"';
		buf_commit(out, 6 + k.len + l);
		d->at += 2 + (size_t)l;
		return true;
	}
	if (op == REC_U64) {
		uint64_t v;
		if (d->n - d->at < 8 || buf_reserve(out, 4 + k.len + 20) != CUSTOS_OK)
			return false;
		memcpy(&v, d->p + d->at, 8);
		uint8_t *t = buf_tail(out), *e;
		memcpy(t, ",\"", 2);
		memcpy(t + 2, kp, k.len);
		memcpy(t + 2 + k.len, "\":", 2);
		e = u64_digits(t + 4 + k.len, v);
		buf_commit(out, (size_t)(e - t));
		d->at += 8;
		return true;
	}
	return false;
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
			ENSURE(!audit_reserved_member(k), CUSTOS_ERR_DENIED,
			       "event sets the reserved member %.*s", (int)k.len, k.ptr);
			if (op != REC_STRS && put_plain_member(out, &d, op, k))
				break; /* the usual case, in one piece */
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
