/*
 * The built-in detectors: one row per Hyperscan expression (what it matches and how its
 * candidate is validated), and the validators themselves (Luhn, mod 97, IIN ranges, SSN
 * ranges, IPv6 parsing, token shapes). Patterns are deliberately loose; validators decide.
 */
#include <arpa/inet.h>
#include <string.h>

#include "inspect_int.h"

const char *const det_builtin_names[INSPECT_BUILTIN_COUNT] = {
	[INSPECT_EMAIL] = "email",
	[INSPECT_PHONE] = "phone",
	[INSPECT_PAYMENT_CARD] = "payment_card",
	[INSPECT_IBAN] = "iban",
	[INSPECT_US_SSN] = "us_ssn",
	[INSPECT_IPV4] = "ipv4",
	[INSPECT_IPV6] = "ipv6",
	[INSPECT_AWS_ACCESS_KEY] = "aws_access_key",
	[INSPECT_AWS_SECRET_KEY] = "aws_secret_key",
	[INSPECT_GITHUB_TOKEN] = "github_token",
	[INSPECT_GITLAB_TOKEN] = "gitlab_token",
	[INSPECT_SLACK_TOKEN] = "slack_token",
	[INSPECT_STRIPE_KEY] = "stripe_key",
	[INSPECT_PRIVATE_KEY] = "private_key",
	[INSPECT_JWT] = "jwt",
};

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}
static bool is_upper(int c)
{
	return c >= 'A' && c <= 'Z';
}
static bool is_lower(int c)
{
	return c >= 'a' && c <= 'z';
}
static bool is_alpha(int c)
{
	return is_upper(c) || is_lower(c);
}
static bool is_alnum(int c)
{
	return is_alpha(c) || is_digit(c);
}
static bool is_hex(int c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool det_class_has(unsigned cls, uint8_t c)
{
	switch (cls) {
	case CLS_ANY:
		return true;
	case CLS_EMAIL_DOMAIN:
		return is_alnum(c) || c == '.' || c == '-';
	case CLS_IPV6:
		return is_hex(c) || c == ':' || c == '.';
	case CLS_ALNUM:
		return is_alnum(c);
	case CLS_ALNUM_US:
		return is_alnum(c) || c == '_';
	case CLS_GITLAB:
		return is_alnum(c) || c == '_' || c == '.' || c == '-';
	case CLS_SLACK:
		return is_alnum(c) || c == '-';
	case CLS_JWT:
		return is_alnum(c) || c == '_' || c == '.' || c == '=' || c == '-';
	default:
		return false;
	}
}

/* ---------------------------------------------------------------------------------------------
 * Checksums.
 */
bool det_luhn_ok(const uint8_t *p, size_t n)
{
	unsigned sum = 0, digits = 0;
	for (size_t i = n; i-- > 0;) {
		if (!is_digit(p[i]))
			continue;
		unsigned d = (unsigned)(p[i] - '0');
		if (digits++ & 1) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return digits >= 2 && sum % 10 == 0;
}

/* ISO 7064 mod 97-10 over the IBAN rearrangement: the first four characters move to the end,
 * letters count as 10..35. Spaces are skipped; anything else fails. */
bool det_mod97_ok(const uint8_t *p, size_t n)
{
	uint8_t c[64];
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == ' ')
			continue;
		if (m == sizeof(c))
			return false;
		c[m++] = p[i];
	}
	if (m < 5)
		return false;
	unsigned rem = 0;
	for (size_t k = 0; k < m; k++) {
		uint8_t ch = c[(k + 4) % m];
		if (is_digit(ch)) {
			rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
		} else if (is_alpha(ch)) {
			unsigned v = (unsigned)((ch | 0x20) - 'a') + 10;
			rem = (rem * 100 + v) % 97;
		} else {
			return false;
		}
	}
	return rem == 1;
}

/* ---------------------------------------------------------------------------------------------
 * email (region: local@ anchor, then the domain class).
 */
static bool v_email(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                    uint8_t *conf)
{
	(void)prev;
	(void)next;
	const uint8_t *at = memchr(p, '@', n);
	if (at == NULL)
		return false;
	size_t a = (size_t)(at - p), s = 0, e = n;
	while (s < a && p[s] == '.')
		s++;
	while (e > a + 1 && (p[e - 1] == '.' || p[e - 1] == '-'))
		e--;
	size_t local = a - s;
	if (local == 0 || local > 64 || p[a - 1] == '.' || e - s > 254)
		return false;
	for (size_t i = s + 1; i < a; i++)
		if (p[i] == '.' && p[i - 1] == '.')
			return false;
	/* Domain labels: 1..63 of [A-Za-z0-9-], no leading/trailing '-', >= 2 labels, the last
	 * one (TLD) alphabetic, 2..24. */
	size_t labels = 0, ls = a + 1;
	for (size_t i = a + 1; i <= e; i++) {
		if (i < e && p[i] != '.')
			continue;
		size_t ll = i - ls;
		if (ll == 0 || ll > 63 || p[ls] == '-' || p[i - 1] == '-')
			return false;
		labels++;
		if (i == e) {
			if (ll < 2 || ll > 24)
				return false;
			for (size_t k = ls; k < i; k++)
				if (!is_alpha(p[k]))
					return false;
		}
		ls = i + 1;
	}
	if (labels < 2)
		return false;
	*off = s;
	*len = e - s;
	*conf = 90;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * phone: E.164 (+ and 8..15 digits), North American with separators, national forms with a
 * leading trunk 0 (UK, FR, DE, ...).
 */
static size_t count_digits(const uint8_t *p, size_t n)
{
	size_t d = 0;
	for (size_t i = 0; i < n; i++)
		d += is_digit(p[i]);
	return d;
}

static bool parens_ok(const uint8_t *p, size_t n)
{
	int depth = 0, pairs = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '(') {
			if (depth++ != 0)
				return false;
		} else if (p[i] == ')') {
			if (depth-- != 1)
				return false;
			pairs++;
		}
	}
	return depth == 0 && pairs <= 1;
}

static bool phone_edges_ok(const uint8_t *p, size_t n, int prev, int next)
{
	if (prev >= 0 && (is_alnum(prev) || prev == '+' || prev == '-' || prev == '.' ||
	                  prev == '/' || prev == '_'))
		return false;
	if (next == '-' || next == '/' || (next >= 0 && is_digit(next)))
		return false;
	return parens_ok(p, n);
}

static bool v_phone_e164(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                         uint8_t *conf)
{
	size_t d = count_digits(p, n);
	if (d < 8 || d > 15 || !phone_edges_ok(p, n, prev, next))
		return false;
	*off = 0;
	*len = n;
	*conf = 85;
	return true;
}

static bool v_phone_nanp(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                         uint8_t *conf)
{
	size_t d = count_digits(p, n);
	if (!(d == 10 || (d == 11 && p[0] == '1')) || !phone_edges_ok(p, n, prev, next))
		return false;
	*off = 0;
	*len = n;
	*conf = 75;
	return true;
}

static bool v_phone_national(const uint8_t *p, size_t n, int prev, int next, size_t *off,
                             size_t *len, uint8_t *conf)
{
	size_t d = count_digits(p, n);
	if (d < 9 || d > 12 || !phone_edges_ok(p, n, prev, next))
		return false;
	*off = 0;
	*len = n;
	*conf = 55;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * payment_card: IIN ranges and lengths of the major networks, Luhn, one kind of separator.
 */
static unsigned prefix_num(const uint8_t *d, unsigned k)
{
	unsigned v = 0;
	for (unsigned i = 0; i < k; i++)
		v = v * 10 + (unsigned)(d[i] - '0');
	return v;
}

static bool card_brand_ok(const uint8_t *d, size_t len)
{
	unsigned p1 = prefix_num(d, 1), p2 = prefix_num(d, 2), p3 = prefix_num(d, 3),
	         p4 = prefix_num(d, 4), p6 = prefix_num(d, 6);
	bool l16_19 = len >= 16 && len <= 19;
	if (p1 == 4) /* Visa */
		return len == 13 || len == 16 || len == 19;
	if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) /* Mastercard */
		return len == 16;
	if (p2 == 34 || p2 == 37) /* American Express */
		return len == 15;
	if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 || (p6 >= 622126 && p6 <= 622925))
		return l16_19;        /* Discover */
	if (p4 >= 3528 && p4 <= 3589) /* JCB */
		return l16_19;
	if ((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
		return len >= 14 && len <= 19; /* Diners Club */
	if (p2 == 62)                          /* UnionPay */
		return l16_19;
	return false;
}

static bool card_try(const uint8_t *p, size_t n)
{
	uint8_t d[19];
	size_t nd = 0;
	int sep = -1;
	for (size_t i = 0; i < n; i++) {
		if (is_digit(p[i])) {
			if (nd == sizeof(d))
				return false;
			d[nd++] = p[i];
		} else {
			if (sep >= 0 && sep != p[i])
				return false;
			sep = p[i];
		}
	}
	return nd >= 13 && card_brand_ok(d, nd) && det_luhn_ok(d, nd);
}

static bool v_card(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                   uint8_t *conf)
{
	(void)next;
	if (prev >= 0 && (is_digit(prev) || is_alpha(prev)))
		return false;
	/* Leftmost start per end: a digit group in front may hide the card; retry from each
	 * group start, longest first. */
	for (size_t s = 0; s < n; s++) {
		if (s > 0 && is_digit(p[s - 1]))
			continue;
		if (!is_digit(p[s]))
			continue;
		if (card_try(p + s, n - s)) {
			*off = s;
			*len = n - s;
			*conf = 95;
			return true;
		}
	}
	return false;
}

/* ---------------------------------------------------------------------------------------------
 * iban: country code with its registered length, mod 97.
 */
static const struct {
	char cc[3];
	uint8_t len;
} iban_lengths[] = {
	{ "AD", 24 }, { "AE", 23 }, { "AL", 28 }, { "AT", 20 }, { "AZ", 28 }, { "BA", 20 },
	{ "BE", 16 }, { "BG", 22 }, { "BH", 22 }, { "BR", 29 }, { "BY", 28 }, { "CH", 21 },
	{ "CR", 22 }, { "CY", 28 }, { "CZ", 24 }, { "DE", 22 }, { "DK", 18 }, { "DO", 28 },
	{ "EE", 20 }, { "EG", 29 }, { "ES", 24 }, { "FI", 18 }, { "FO", 18 }, { "FR", 27 },
	{ "GB", 22 }, { "GE", 22 }, { "GI", 23 }, { "GL", 18 }, { "GR", 27 }, { "GT", 28 },
	{ "HR", 21 }, { "HU", 28 }, { "IE", 22 }, { "IL", 23 }, { "IQ", 23 }, { "IS", 26 },
	{ "IT", 27 }, { "JO", 30 }, { "KW", 30 }, { "KZ", 20 }, { "LB", 28 }, { "LC", 32 },
	{ "LI", 21 }, { "LT", 20 }, { "LU", 20 }, { "LV", 21 }, { "MC", 27 }, { "MD", 24 },
	{ "ME", 22 }, { "MK", 19 }, { "MR", 27 }, { "MT", 31 }, { "MU", 30 }, { "NL", 18 },
	{ "NO", 15 }, { "PK", 24 }, { "PL", 28 }, { "PS", 29 }, { "PT", 25 }, { "QA", 29 },
	{ "RO", 24 }, { "RS", 22 }, { "SA", 24 }, { "SC", 31 }, { "SE", 24 }, { "SI", 19 },
	{ "SK", 24 }, { "SM", 27 }, { "ST", 25 }, { "SV", 28 }, { "TL", 23 }, { "TN", 24 },
	{ "TR", 26 }, { "UA", 29 }, { "VA", 22 }, { "VG", 24 }, { "XK", 20 },
};

static bool iban_try(const uint8_t *p, size_t n)
{
	if (n < 4 || !is_upper(p[0]) || !is_upper(p[1]) || !is_digit(p[2]) || !is_digit(p[3]))
		return false;
	size_t chars = 0;
	for (size_t i = 0; i < n; i++)
		chars += p[i] != ' ';
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(iban_lengths); i++) {
		if (iban_lengths[i].cc[0] == p[0] && iban_lengths[i].cc[1] == p[1])
			return chars == iban_lengths[i].len && det_mod97_ok(p, n);
	}
	return false;
}

static bool v_iban(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                   uint8_t *conf)
{
	(void)prev;
	(void)next;
	for (size_t s = 0; s + 4 <= n; s++) {
		if (s > 0 && p[s - 1] != ' ')
			continue;
		if (iban_try(p + s, n - s)) {
			*off = s;
			*len = n - s;
			*conf = 95;
			return true;
		}
	}
	return false;
}

/* ---------------------------------------------------------------------------------------------
 * us_ssn: AAA-GG-SSSS; area 000, 666 and 900-999, group 00 and serial 0000 are never issued.
 */
static bool v_ssn(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                  uint8_t *conf)
{
	if (n != 11)
		return false;
	if (prev >= 0 && (is_alnum(prev) || prev == '-' || prev == '.' || prev == '/'))
		return false;
	if (next == '-' || next == '/')
		return false;
	unsigned area = prefix_num(p, 3), group = prefix_num(p + 4, 2),
	         serial = prefix_num(p + 7, 4);
	if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
		return false;
	*off = 0;
	*len = n;
	*conf = p[3] == '-' ? 85 : 60;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * ipv4 (regex bounds each octet) and ipv6 (region over [0-9A-Fa-f:.], parsed by inet_pton).
 */
static bool v_ipv4(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                   uint8_t *conf)
{
	(void)next;
	if (prev == '.')
		return false;
	*off = 0;
	*len = n;
	*conf = 80;
	return true;
}

static bool v_ipv6(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                   uint8_t *conf)
{
	(void)next;
	if (prev >= 0 && (is_hex(prev) || prev == ':' || prev == '.'))
		return false;
	while (n > 0 && p[n - 1] == '.')
		n--;
	if (n >= 2 && p[n - 1] == ':' && p[n - 2] != ':')
		n--;
	if (n < 3 || n > 45)
		return false;
	char tmp[46];
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	struct in6_addr a;
	if (inet_pton(AF_INET6, tmp, &a) != 1)
		return false;
	*off = 0;
	*len = n;
	*conf = 85;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * AWS: access key ids (AKIA long-term, ASIA temporary, ...) and secret access keys. A secret
 * key is 40 characters of [A-Za-z0-9/+] and nothing else distinguishes it, so the pattern
 * requires an AWS keyword in front on the same line (docs/INSPECTION.md).
 */
static bool v_aws_access(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                         uint8_t *conf)
{
	(void)prev;
	(void)next;
	bool base32 = true;
	for (size_t i = 4; i < n; i++)
		if (!(is_upper(p[i]) || (p[i] >= '2' && p[i] <= '7')))
			base32 = false;
	*off = 0;
	*len = n;
	*conf = base32 ? 95 : 70;
	return true;
}

static bool aws_secret_char(int c)
{
	return is_alnum(c) || c == '/' || c == '+';
}

static bool v_aws_secret(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                         uint8_t *conf)
{
	(void)prev;
	size_t e = n;
	if (e > 0 && !aws_secret_char(p[e - 1]))
		e--; /* the consumed boundary byte */
	else if (next >= 0 && (aws_secret_char(next) || next == '='))
		return false;
	if (e < 41)
		return false;
	size_t s = e - 40;
	if (aws_secret_char(p[s - 1]))
		return false;
	unsigned up = 0, lo = 0, other = 0;
	for (size_t i = s; i < e; i++) {
		if (!aws_secret_char(p[i]))
			return false;
		up += is_upper(p[i]);
		lo += is_lower(p[i]);
		other += !is_alpha(p[i]);
	}
	if (up == 0 || lo == 0 || other == 0)
		return false;
	*off = s;
	*len = 40;
	*conf = 80;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * Token formats (regions from their prefix).
 */
static bool starts(const uint8_t *p, size_t n, const char *pre)
{
	size_t k = strlen(pre);
	return n >= k && memcmp(p, pre, k) == 0;
}

static bool v_github(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                     uint8_t *conf)
{
	(void)prev;
	(void)next;
	if (starts(p, n, "github_pat_")) {
		if (n - 11 < 22 || n - 11 > 255)
			return false;
		*conf = 95;
	} else {
		size_t body = n - 4;
		if (body < 36 || body > 251)
			return false;
		*conf = body == 36 ? 95 : 80;
	}
	*off = 0;
	*len = n;
	return true;
}

static bool v_gitlab(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                     uint8_t *conf)
{
	(void)prev;
	(void)next;
	while (n > 6 && p[n - 1] == '.')
		n--;
	if (n - 6 < 20 || n - 6 > 255)
		return false;
	*off = 0;
	*len = n;
	*conf = 95;
	return true;
}

static bool v_slack(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                    uint8_t *conf)
{
	(void)prev;
	(void)next;
	while (n > 5 && p[n - 1] == '-')
		n--;
	if (n - 5 < 10 || n - 5 > 255 || count_digits(p + 5, n - 5) == 0)
		return false;
	*off = 0;
	*len = n;
	*conf = 90;
	return true;
}

static bool v_stripe(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                     uint8_t *conf)
{
	(void)prev;
	(void)next;
	if (n - 8 < 16 || n - 8 > 247)
		return false;
	bool live = p[3] == 'l';
	if (!live)
		*conf = 50;
	else if (p[0] == 'p')
		*conf = 70; /* publishable: meant to be public, still worth knowing */
	else
		*conf = 95;
	*off = 0;
	*len = n;
	return true;
}

static bool v_private_key(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                          uint8_t *conf)
{
	(void)p;
	(void)prev;
	(void)next;
	*off = 0;
	*len = n;
	*conf = 99;
	return true;
}

static bool v_jwt(const uint8_t *p, size_t n, int prev, int next, size_t *off, size_t *len,
                  uint8_t *conf)
{
	(void)prev;
	(void)next;
	while (n > 0 && (p[n - 1] == '.' || p[n - 1] == '='))
		n--;
	size_t seg_start[6], seg_len[6], segs = 0, s = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] != '.')
			continue;
		if (segs == 5)
			return false;
		seg_start[segs] = s;
		seg_len[segs] = i - s;
		segs++;
		s = i + 1;
	}
	if (segs < 2)
		return false;
	for (size_t k = 0; k < 2; k++)
		if (seg_len[k] < 10 || !starts(p + seg_start[k], seg_len[k], "eyJ"))
			return false;
	*off = 0;
	*len = n;
	*conf = segs >= 3 ? 95 : 70;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * Custom detectors' validators.
 */
bool det_validate_custom_none(const uint8_t *p, size_t n, int prev, int next, size_t *off,
                              size_t *len, uint8_t *conf)
{
	(void)p;
	(void)prev;
	(void)next;
	*off = 0;
	*len = n;
	*conf = 80;
	return n > 0;
}

bool det_validate_custom_luhn(const uint8_t *p, size_t n, int prev, int next, size_t *off,
                              size_t *len, uint8_t *conf)
{
	(void)prev;
	(void)next;
	if (!det_luhn_ok(p, n))
		return false;
	*off = 0;
	*len = n;
	*conf = 95;
	return true;
}

bool det_validate_custom_mod97(const uint8_t *p, size_t n, int prev, int next, size_t *off,
                               size_t *len, uint8_t *conf)
{
	(void)prev;
	(void)next;
	if (!det_mod97_ok(p, n))
		return false;
	*off = 0;
	*len = n;
	*conf = 95;
	return true;
}

bool det_validate_custom_keyword(const uint8_t *p, size_t n, int prev, int next, size_t *off,
                                 size_t *len, uint8_t *conf)
{
	(void)p;
	(void)prev;
	(void)next;
	*off = 0;
	*len = n;
	*conf = 75;
	return n > 0;
}

/* ---------------------------------------------------------------------------------------------
 * The table. Every MATCH and ANCHOR pattern is bounded (the engine checks it): its width is
 * what a stream must hold back for it. Patterns are byte-oriented ASCII.
 */
#define PK_KINDS   "(?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
#define IPV4_OCTET "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"

const det_spec det_builtin_specs[] = {
	{ INSPECT_EMAIL, DET_ANCHOR, CLS_EMAIL_DOMAIN, 320, 0,
	  "\\b[A-Za-z0-9._%+\\-]{1,64}@[A-Za-z0-9]", v_email },
	{ INSPECT_PHONE, DET_MATCH, 0, 0, 0, "\\+[1-9](?:[ .\\-()]{0,2}[0-9]){6,16}\\b",
	  v_phone_e164 },
	{ INSPECT_PHONE, DET_MATCH, 0, 0, 0,
	  "(?:\\b1[ .\\-]?)?(?:\\b[2-9][0-9]{2}|\\([2-9][0-9]{2}\\))[ .\\-]?[2-9][0-9]{2}[ "
	  ".\\-][0-9]{"
	  "4}\\b",
	  v_phone_nanp },
	{ INSPECT_PHONE, DET_MATCH, 0, 0, 0,
	  "\\b0[1-9][0-9]{0,4}[ .\\-][0-9]{2,4}(?:[ .\\-]?[0-9]{2,4}){0,4}\\b", v_phone_national },
	{ INSPECT_PAYMENT_CARD, DET_MATCH, 0, 0, 0, "\\b[2-6](?:[ \\-]?[0-9]){11,18}\\b", v_card },
	{ INSPECT_IBAN, DET_MATCH, 0, 0, 0, "\\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,28}\\b", v_iban },
	{ INSPECT_US_SSN, DET_MATCH, 0, 0, 0, "\\b[0-9]{3}-[0-9]{2}-[0-9]{4}\\b", v_ssn },
	{ INSPECT_US_SSN, DET_MATCH, 0, 0, 0, "\\b[0-9]{3} [0-9]{2} [0-9]{4}\\b", v_ssn },
	{ INSPECT_IPV4, DET_MATCH, 0, 0, 0, "\\b(?:" IPV4_OCTET "\\.){3}" IPV4_OCTET "\\b",
	  v_ipv4 },
	{ INSPECT_IPV6, DET_ANCHOR, CLS_IPV6, 64, 0,
	  "\\b[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:", v_ipv6 },
	{ INSPECT_IPV6, DET_ANCHOR, CLS_IPV6, 64, 0, "::[0-9A-Fa-f]", v_ipv6 },
	{ INSPECT_AWS_ACCESS_KEY, DET_MATCH, 0, 0, 0, "\\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\\b",
	  v_aws_access },
	{ INSPECT_AWS_SECRET_KEY, DET_MATCH, 0, 0, 0,
	  "(?i:aws|secret[_\\- ]?access[_\\- ]?key)[^\\r\\n]{0,40}[^A-Za-z0-9/+][A-Za-z0-9/+]{40}"
	  "(?:[^A-Za-z0-9/+=]|$)",
	  v_aws_secret },
	{ INSPECT_GITHUB_TOKEN, DET_ANCHOR, CLS_ALNUM, 300, 0, "\\bgh[pousr]_", v_github },
	{ INSPECT_GITHUB_TOKEN, DET_ANCHOR, CLS_ALNUM_US, 300, 0, "\\bgithub_pat_", v_github },
	{ INSPECT_GITLAB_TOKEN, DET_ANCHOR, CLS_GITLAB, 300, 0, "\\bglpat-", v_gitlab },
	{ INSPECT_SLACK_TOKEN, DET_ANCHOR, CLS_SLACK, 300, 0, "\\bxox[abposr]-", v_slack },
	{ INSPECT_STRIPE_KEY, DET_ANCHOR, CLS_ALNUM, 300, 0, "\\b(?:sk|rk|pk)_(?:live|test)_",
	  v_stripe },
	{ INSPECT_PRIVATE_KEY, DET_ANCHOR, CLS_ANY, 16384, 0, "-----BEGIN " PK_KINDS,
	  v_private_key },
	{ INSPECT_PRIVATE_KEY, DET_TERMINATOR, 0, 0, 0, "-----END " PK_KINDS, NULL },
	{ INSPECT_JWT, DET_ANCHOR, CLS_JWT, 16384, 0, "\\beyJ[A-Za-z0-9_\\-]{5}", v_jwt },
};
const size_t det_builtin_n_specs = CUSTOS_ARRAY_LEN(det_builtin_specs);
