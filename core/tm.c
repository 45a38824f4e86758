/* Clocks and RFC 3339 timestamps (UTC, nanoseconds) for logs and audit events. */
#include <stdio.h>
#include <time.h>

#include "custos/core.h"

uint64_t tm_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t tm_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

char *tm_rfc3339(uint64_t wall_ns, char out[TM_RFC3339_LEN])
{
	time_t secs = (time_t)(wall_ns / 1000000000ull);
	unsigned nsec = (unsigned)(wall_ns % 1000000000ull);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(out, TM_RFC3339_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%09uZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nsec);
	return out;
}

static bool digits(span s, size_t at, size_t n, unsigned *out)
{
	unsigned v = 0;

	if (at + n > s.len)
		return false;
	for (size_t i = at; i < at + n; i++) {
		if (s.ptr[i] < '0' || s.ptr[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s.ptr[i] - '0');
	}
	*out = v;
	return true;
}

custos_err tm_parse_rfc3339(span s, uint64_t *out_ns)
{
	unsigned y, mo, d, h, mi, sec, oh = 0, om = 0;
	uint64_t frac = 0;
	size_t i = 19;
	int sign = 0;

	if (!digits(s, 0, 4, &y) || s.len < 20 || s.ptr[4] != '-' || !digits(s, 5, 2, &mo) ||
	    s.ptr[7] != '-' || !digits(s, 8, 2, &d) || (s.ptr[10] != 'T' && s.ptr[10] != 't') ||
	    !digits(s, 11, 2, &h) || s.ptr[13] != ':' || !digits(s, 14, 2, &mi) ||
	    s.ptr[16] != ':' || !digits(s, 17, 2, &sec))
		goto bad;
	if (i < s.len && s.ptr[i] == '.') {
		unsigned nd = 0;
		i++;
		while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9') {
			if (nd < 9) {
				frac = frac * 10 + (uint64_t)(s.ptr[i] - '0');
				nd++;
			}
			i++;
		}
		if (nd == 0)
			goto bad;
		while (nd++ < 9)
			frac *= 10;
	}
	if (i < s.len && (s.ptr[i] == 'Z' || s.ptr[i] == 'z')) {
		i++;
	} else if (i < s.len && (s.ptr[i] == '+' || s.ptr[i] == '-')) {
		sign = s.ptr[i] == '+' ? 1 : -1;
		if (!digits(s, i + 1, 2, &oh) || i + 3 >= s.len || s.ptr[i + 3] != ':' ||
		    !digits(s, i + 4, 2, &om))
			goto bad;
		i += 6;
	} else {
		goto bad;
	}
	if (i != s.len || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
	    oh > 23 || om > 59 || y < 1970)
		goto bad;
	/* timegm would carry a day past the month's end into the next month (02-30 is 03-02) */
	static const unsigned char mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (d > (unsigned)mdays[mo - 1] + (mo == 2 && leap))
		goto bad;
	struct tm tm = { .tm_year = (int)y - 1900,
		         .tm_mon = (int)mo - 1,
		         .tm_mday = (int)d,
		         .tm_hour = (int)h,
		         .tm_min = (int)mi,
		         .tm_sec = (int)sec };
	int64_t t = (int64_t)timegm(&tm) - sign * (int64_t)(oh * 3600 + om * 60);
	/* nanoseconds since 1970 in 64 bits run to 2554-07-21T23:34:33Z: later would wrap */
	if (t < 0 || (uint64_t)t > (UINT64_MAX - frac) / 1000000000ull)
		goto bad;
	*out_ns = (uint64_t)t * 1000000000ull + frac;
	return CUSTOS_OK;
bad:
	return err_set(CUSTOS_ERR_INVAL, "'%.*s' is not an RFC 3339 timestamp", (int)s.len, s.ptr);
}
