/*
 * Number parsing in the strtonum spirit: the whole input must be a number in range, with no
 * sign surprises, no trailing junk and no silent overflow. Sizes and durations carry units.
 */
#include <stdio.h>
#include <string.h>

#include "custos/core.h"

custos_err num_parse_u64(span s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	ENSURE(s.len > 0, CUSTOS_ERR_INVAL, "empty number");
	ENSURE(s.len <= 20, CUSTOS_ERR_INVAL, "number too long");
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		ENSURE(c >= '0' && c <= '9', CUSTOS_ERR_INVAL, "'%.*s' is not a whole number",
		       (int)s.len, s.ptr);
		unsigned d = c - '0';
		ENSURE(v <= (UINT64_MAX - d) / 10, CUSTOS_ERR_INVAL, "'%.*s' is too large",
		       (int)s.len, s.ptr);
		v = v * 10 + d;
	}
	ENSURE(v >= min && v <= max, CUSTOS_ERR_INVAL, "%llu is out of range [%llu, %llu]",
	       (unsigned long long)v, (unsigned long long)min, (unsigned long long)max);
	*out = v;
	return CUSTOS_OK;
}

custos_err num_parse_i64(span s, int64_t min, int64_t max, int64_t *out)
{
	bool neg = false;
	uint64_t mag;

	if (s.len > 0 && (s.ptr[0] == '-' || s.ptr[0] == '+')) {
		neg = s.ptr[0] == '-';
		s.ptr++;
		s.len--;
	}
	GUARD(num_parse_u64(s, 0, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &mag));
	int64_t v =
	        neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
	ENSURE(v >= min && v <= max, CUSTOS_ERR_INVAL, "%lld is out of range [%lld, %lld]",
	       (long long)v, (long long)min, (long long)max);
	*out = v;
	return CUSTOS_OK;
}

struct unit {
	const char *name;
	uint64_t mult;
};

/* How limits are written back to people: the largest unit that divides v exactly. */
static const struct unit duration_units[] = {
	{ "ns", 1 },
	{ "us", 1000 },
	{ "ms", 1000000 },
	{ "s", 1000000000ull },
	{ "m", 60ull * 1000000000ull },
	{ "h", 3600ull * 1000000000ull },
	{ "d", 86400ull * 1000000000ull },
};
static const struct unit size_units[] = {
	{ "B", 1 },
	{ "kB", 1000 },
	{ "MB", 1000000 },
	{ "GB", 1000000000 },
	{ "KiB", 1024 },
	{ "MiB", 1024 * 1024 },
	{ "GiB", 1024ull * 1024 * 1024 },
	{ "TiB", 1024ull * 1024 * 1024 * 1024 },
};

static void format_with_units(uint64_t v, const struct unit *units, size_t nunits, const char *zero,
                              char *out, size_t size)
{
	const struct unit *best = NULL;

	for (size_t u = 0; u < nunits && v > 0; u++)
		if (v % units[u].mult == 0 && (best == NULL || units[u].mult > best->mult))
			best = &units[u];
	if (best == NULL)
		snprintf(out, size, "0%s", zero);
	else
		snprintf(out, size, "%llu%s", (unsigned long long)(v / best->mult), best->name);
}

void num_format_duration(uint64_t ns, char *out, size_t size)
{
	format_with_units(ns, duration_units, CUSTOS_ARRAY_LEN(duration_units), "s", out, size);
}

void num_format_size(uint64_t bytes, char *out, size_t size)
{
	format_with_units(bytes, size_units, CUSTOS_ARRAY_LEN(size_units), "B", out, size);
}

static custos_err parse_with_units(span s, const struct unit *units, size_t nunits, uint64_t max,
                                   const char *what, uint64_t *out)
{
	size_t i = 0;

	s = span_trim(s);
	while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9')
		i++;
	span digits = { s.ptr, i };
	span suffix = span_trim((span){ s.ptr + i, s.len - i });
	uint64_t v, mult = 0;

	ENSURE(digits.len > 0, CUSTOS_ERR_INVAL, "'%.*s' is not a %s", (int)s.len, s.ptr, what);
	GUARD(num_parse_u64(digits, 0, UINT64_MAX, &v));
	for (size_t u = 0; u < nunits; u++) {
		if (span_eq_cstr(suffix, units[u].name)) {
			mult = units[u].mult;
			break;
		}
	}
	ENSURE(mult != 0, CUSTOS_ERR_INVAL, "'%.*s' has an unknown unit '%.*s'", (int)s.len, s.ptr,
	       (int)suffix.len, suffix.ptr);
	ENSURE(v == 0 || v <= UINT64_MAX / mult, CUSTOS_ERR_INVAL, "'%.*s' is too large",
	       (int)s.len, s.ptr);
	if (v * mult > max) {
		char lim[32];
		if (strcmp(what, "duration") == 0)
			num_format_duration(max, lim, sizeof(lim));
		else
			num_format_size(max, lim, sizeof(lim));
		return err_set(CUSTOS_ERR_INVAL, "'%.*s' exceeds the maximum %s of %s", (int)s.len,
		               s.ptr, what, lim);
	}
	*out = v * mult;
	return CUSTOS_OK;
}

custos_err num_parse_size(span s, uint64_t max, uint64_t *out)
{
	static const struct unit units[] = {
		{ "", 1 },
		{ "B", 1 },
		{ "k", 1000 },
		{ "kB", 1000 },
		{ "KB", 1000 },
		{ "M", 1000000 },
		{ "MB", 1000000 },
		{ "G", 1000000000 },
		{ "GB", 1000000000 },
		{ "Ki", 1024 },
		{ "KiB", 1024 },
		{ "Mi", 1024 * 1024 },
		{ "MiB", 1024 * 1024 },
		{ "Gi", 1024ull * 1024 * 1024 },
		{ "GiB", 1024ull * 1024 * 1024 },
		{ "TiB", 1024ull * 1024 * 1024 * 1024 },
	};
	return parse_with_units(s, units, CUSTOS_ARRAY_LEN(units), max, "size", out);
}

custos_err num_parse_duration(span s, uint64_t max_ns, uint64_t *out_ns)
{
	return parse_with_units(s, duration_units, CUSTOS_ARRAY_LEN(duration_units), max_ns,
	                        "duration", out_ns);
}

custos_err num_parse_hex(span s, uint8_t *out, size_t outlen)
{
	ENSURE(s.len == outlen * 2, CUSTOS_ERR_INVAL, "expected %zu hex digits, got %zu",
	       outlen * 2, s.len);
	for (size_t i = 0; i < outlen; i++) {
		int hi = num_hex_digit((unsigned char)s.ptr[2 * i]);
		int lo = num_hex_digit((unsigned char)s.ptr[2 * i + 1]);
		ENSURE(hi >= 0 && lo >= 0, CUSTOS_ERR_INVAL, "not a hex digit at %zu",
		       hi < 0 ? 2 * i : 2 * i + 1);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return CUSTOS_OK;
}

void num_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}
