/*
 * Time zones for time-window conditions, read at compile time from the TZ database
 * (TZif files under $TZDIR or /usr/share/zoneinfo): the 64-bit transition table, and the
 * POSIX rule in the file's footer for instants after the last transition. No setenv/tzset,
 * no global state: evaluation is a binary search over the precomputed offsets.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

#define PTZ_MAX_FILE  (1024u * 1024)
#define PTZ_MAX_TRANS 4096

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int64_t year_of_days(int64_t z)
{
	z += 719468;
	const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	const unsigned doe = (unsigned)(z - era * 146097);
	const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;
	const unsigned m = mp < 10 ? mp + 3 : mp - 9;
	return (int64_t)yoe + era * 400 + (m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* "[+-]hh[:mm[:ss]]" -> seconds; advances *s. */
static bool posix_time(const char **s, int32_t *out)
{
	const char *p = *s;
	int sign = 1;
	if (*p == '+' || *p == '-')
		sign = *p++ == '-' ? -1 : 1;
	if (!isdigit((unsigned char)*p))
		return false;
	long v[3] = { 0, 0, 0 };
	for (int i = 0; i < 3; i++) {
		if (i > 0) {
			if (*p != ':')
				break;
			p++;
		}
		if (!isdigit((unsigned char)*p))
			return false;
		int digits = 0;
		while (isdigit((unsigned char)*p) && digits < 3) {
			v[i] = v[i] * 10 + (*p++ - '0');
			digits++;
		}
	}
	if (v[0] > 167 || v[1] > 59 || v[2] > 59)
		return false;
	*out = (int32_t)(sign * (v[0] * 3600 + v[1] * 60 + v[2]));
	*s = p;
	return true;
}

static bool posix_name(const char **s)
{
	const char *p = *s;
	if (*p == '<') {
		while (*p && *p != '>')
			p++;
		if (*p != '>')
			return false;
		p++;
	} else {
		while (isalpha((unsigned char)*p))
			p++;
	}
	if (p - *s < 3)
		return false;
	*s = p;
	return true;
}

static bool posix_rule(const char **s, struct ptz_rule *r)
{
	const char *p = *s;
	long v[3] = { 0, 0, 0 };
	if (*p == 'M') {
		p++;
		for (int i = 0; i < 3; i++) {
			if (i > 0 && *p++ != '.')
				return false;
			if (!isdigit((unsigned char)*p))
				return false;
			while (isdigit((unsigned char)*p) && v[i] < 1000)
				v[i] = v[i] * 10 + (*p++ - '0');
		}
		if (v[0] < 1 || v[0] > 12 || v[1] < 1 || v[1] > 5 || v[2] > 6)
			return false;
		r->kind = 0;
	} else {
		r->kind = 2;
		if (*p == 'J') {
			r->kind = 1;
			p++;
		}
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p) && v[0] < 1000)
			v[0] = v[0] * 10 + (*p++ - '0');
		if (v[0] > 365)
			return false;
	}
	r->m = (uint16_t)v[0];
	r->w = (uint16_t)v[1];
	r->d = (uint16_t)v[2];
	r->time = 7200;
	if (*p == '/') {
		p++;
		if (!posix_time(&p, &r->time))
			return false;
	}
	*s = p;
	return true;
}

/* Parses a POSIX TZ string; false when unsupported (the zone then keeps its last offset). */
static bool posix_parse(const char *s, ptz *z)
{
	int32_t off;
	if (!posix_name(&s) || !posix_time(&s, &off))
		return false;
	z->std_off = -off;
	if (*s == '\0') {
		z->dst_off = z->std_off;
		z->has_rule = false;
		z->off0 = z->std_off;
		return true;
	}
	if (!posix_name(&s))
		return false;
	z->dst_off = z->std_off + 3600;
	if (*s != ',') {
		if (!posix_time(&s, &off))
			return false;
		z->dst_off = -off;
	}
	if (*s++ != ',' || !posix_rule(&s, &z->start) || *s++ != ',' || !posix_rule(&s, &z->end) ||
	    *s != '\0')
		return false;
	z->has_rule = true;
	return true;
}

/* Local seconds-since-epoch at 00:00 of the rule's day in year y, plus the rule's time. */
static int64_t rule_local(const struct ptz_rule *r, int64_t y)
{
	int64_t day;
	if (r->kind == 0) {
		int64_t first = days_from_civil(y, r->m, 1);
		int wd_first = (int)((first % 7 + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
		int64_t d = (r->d - wd_first + 7) % 7 + (int64_t)(r->w - 1) * 7;
		static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
		int len = mdays[r->m - 1] + (r->m == 2 && is_leap(y));
		while (d >= len)
			d -= 7;
		day = first + d;
	} else if (r->kind == 1) {
		int64_t n = r->m; /* 1..365, Feb 29 never counted */
		day = days_from_civil(y, 1, 1) + n - 1;
		if (is_leap(y) && n >= 60)
			day++;
	} else {
		day = days_from_civil(y, 1, 1) + r->m;
	}
	return day * 86400 + r->time;
}

static int32_t rule_offset(const ptz *z, int64_t t)
{
	if (!z->has_rule)
		return z->std_off;
	int64_t y = year_of_days((t + z->std_off) / 86400 - ((t + z->std_off) % 86400 < 0));
	int64_t start = rule_local(&z->start, y) - z->std_off;
	int64_t end = rule_local(&z->end, y) - z->dst_off;
	bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
	return dst ? z->dst_off : z->std_off;
}

int32_t ptz_offset(const ptz *z, int64_t t)
{
	if (z->n == 0)
		return z->has_rule ? rule_offset(z, t) : z->off0;
	if (t < z->trans[0])
		return z->off0;
	if (t >= z->trans[z->n - 1] && z->has_rule)
		return rule_offset(z, t);
	uint32_t lo = 0, hi = z->n; /* last i with trans[i] <= t */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (z->trans[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return z->offs[lo];
}

static bool name_ok(const char *n)
{
	if (n[0] == '\0' || n[0] == '/' || strstr(n, "..") != NULL || strlen(n) > 128)
		return false;
	for (const char *p = n; *p; p++)
		if (!isalnum((unsigned char)*p) && strchr("/_+-", *p) == NULL)
			return false;
	return true;
}

static custos_err tzif_parse(arena *a, const unsigned char *p, size_t len, ptz *z)
{
	ENSURE(len >= 44 && memcmp(p, "TZif", 4) == 0, CUSTOS_ERR_PARSE, "not a TZif file");
	ENSURE(p[4] >= '2', CUSTOS_ERR_UNSUPPORTED, "TZif version 1 has no 64-bit data");
	uint32_t c[6];
	for (int i = 0; i < 6; i++)
		c[i] = be32(p + 20 + 4 * i);
	/* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
	uint64_t v1 =
	        (uint64_t)c[3] * 5 + (uint64_t)c[4] * 6 + c[5] + (uint64_t)c[2] * 8 + c[1] + c[0];
	ENSURE(44 + v1 + 44 <= len, CUSTOS_ERR_PARSE, "truncated TZif file");
	const unsigned char *h = p + 44 + v1;
	ENSURE(memcmp(h, "TZif", 4) == 0, CUSTOS_ERR_PARSE, "bad TZif second header");
	for (int i = 0; i < 6; i++)
		c[i] = be32(h + 20 + 4 * i);
	uint32_t timecnt = c[3], typecnt = c[4];
	ENSURE(timecnt <= PTZ_MAX_TRANS && typecnt >= 1 && typecnt <= 256, CUSTOS_ERR_LIMIT,
	       "TZif file has %u transitions and %u types", timecnt, typecnt);
	uint64_t v2 = (uint64_t)timecnt * 9 + (uint64_t)typecnt * 6 + c[5] + (uint64_t)c[2] * 12 +
	              c[1] + c[0];
	const unsigned char *d = h + 44;
	ENSURE((size_t)(d - p) + v2 <= len, CUSTOS_ERR_PARSE, "truncated TZif v2 data");
	const unsigned char *tt = d, *ti = d + (size_t)timecnt * 8, *ty = ti + timecnt;
	for (uint32_t i = 0; i < timecnt; i++)
		ENSURE(ti[i] < typecnt, CUSTOS_ERR_PARSE, "TZif transition type out of range");
	z->n = timecnt;
	z->trans = arena_alloc(a, sizeof(int64_t) * (timecnt + 1));
	z->offs = arena_alloc(a, sizeof(int32_t) * (timecnt + 1));
	for (uint32_t i = 0; i < timecnt; i++) {
		z->trans[i] = be64(tt + 8 * i);
		z->offs[i] = (int32_t)be32(ty + 6 * ti[i]);
		ENSURE(i == 0 || z->trans[i] > z->trans[i - 1], CUSTOS_ERR_PARSE,
		       "TZif transitions out of order");
	}
	z->off0 = (int32_t)be32(ty);
	/* footer: "\n<POSIX TZ>\n" */
	const unsigned char *f = d + v2, *end = p + len;
	if (f < end && *f == '\n') {
		const unsigned char *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
		if (nl && nl - f - 1 < 128) {
			char tzs[128];
			memcpy(tzs, f + 1, (size_t)(nl - f - 1));
			tzs[nl - f - 1] = '\0';
			int32_t keep = z->off0;
			if (tzs[0] && !posix_parse(tzs, z)) {
				z->has_rule = false;
			}
			z->off0 = keep;
		}
	}
	return CUSTOS_OK;
}

custos_err ptz_load(arena *a, const char *name, ptz *z)
{
	memset(z, 0, sizeof(*z));
	z->name = arena_strdup(a, name, strlen(name));
	if (strcmp(name, "UTC") == 0 || strcmp(name, "Z") == 0)
		return CUSTOS_OK;
	if (name[0] == '+' || name[0] == '-') {
		/* exactly [+-]hh:mm, as documented: "+5:3" or "+05:30:45" would be guesses */
		const char *s = name;
		int32_t off;
		bool shape = strlen(name) == 6 && isdigit((unsigned char)name[1]) &&
		             isdigit((unsigned char)name[2]) && name[3] == ':' &&
		             isdigit((unsigned char)name[4]) && isdigit((unsigned char)name[5]);
		ENSURE(shape && posix_time(&s, &off) && *s == '\0' && off > -86400 && off < 86400,
		       CUSTOS_ERR_INVAL, "bad UTC offset '%s' (want +hh:mm)", name);
		z->off0 = off;
		return CUSTOS_OK;
	}
	ENSURE(name_ok(name), CUSTOS_ERR_INVAL, "bad time zone name '%s'", name);
	const char *dir = getenv("TZDIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir && dir[0] ? dir : "/usr/share/zoneinfo", name);
	buf b;
	buf_init(&b, PTZ_MAX_FILE);
	custos_err e = file_load(path, FILE_ANY, PTZ_MAX_FILE, &b);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return err_set(CUSTOS_ERR_NOTFOUND, "unknown time zone '%s' (no %s)", name, path);
	}
	e = tzif_parse(a, buf_ptr(&b), buf_used(&b), z);
	buf_free(&b);
	if (e != CUSTOS_OK)
		return err_wrap(e, "time zone '%s'", name);
	return CUSTOS_OK;
}
