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

/* Class bits per byte value (bit k: in class k), built at compile time: region extension
 * tests one byte per step and is on the hot path. */
#define C_DIG(c)   ((c) >= '0' && (c) <= '9')
#define C_UP(c)    ((c) >= 'A' && (c) <= 'Z')
#define C_LO(c)    ((c) >= 'a' && (c) <= 'z')
#define C_ALNUM(c) (C_DIG(c) || C_UP(c) || C_LO(c))
#define C_HEX(c)   (C_DIG(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define CB(k, x)   ((uint32_t)((x) ? 1u : 0u) << (k))
#define CLASS_BITS(c)                                                                              \
	(CB(CLS_ANY, 1) | CB(CLS_EMAIL_DOMAIN, C_ALNUM(c) || (c) == '.' || (c) == '-') |           \
	 CB(CLS_IPV6, C_HEX(c) || (c) == ':' || (c) == '.') | CB(CLS_ALNUM, C_ALNUM(c)) |          \
	 CB(CLS_ALNUM_US, C_ALNUM(c) || (c) == '_') |                                              \
	 CB(CLS_GITLAB, C_ALNUM(c) || (c) == '_' || (c) == '.' || (c) == '-') |                    \
	 CB(CLS_SLACK, C_ALNUM(c) || (c) == '-') |                                                 \
	 CB(CLS_JWT, C_ALNUM(c) || (c) == '_' || (c) == '.' || (c) == '=' || (c) == '-') |         \
	 CB(CLS_EMAIL_LOCAL,                                                                       \
	    C_ALNUM(c) || (c) == '.' || (c) == '_' || (c) == '%' || (c) == '+' || (c) == '-') |    \
	 CB(CLS_HEX_COLON, C_HEX(c) || (c) == ':') |                                               \
	 CB(CLS_CARD, C_DIG(c) || (c) == ' ' || (c) == '-') |                                      \
	 CB(CLS_PHONE,                                                                             \
	    C_DIG(c) || (c) == ' ' || (c) == '.' || (c) == '-' || (c) == '(' || (c) == ')') |      \
	 CB(CLS_SSN, C_DIG(c) || (c) == ' ') | CB(CLS_IBAN, C_ALNUM(c) || (c) == ' ') |            \
	 CB(CLS_IPV4, C_DIG(c) || (c) == '.') | CB(CLS_DIGIT, C_DIG(c)))
#define R4(c)  CLASS_BITS(c), CLASS_BITS((c) + 1), CLASS_BITS((c) + 2), CLASS_BITS((c) + 3)
#define R16(c) R4(c), R4((c) + 4), R4((c) + 8), R4((c) + 12)
#define R64(c) R16(c), R16((c) + 16), R16((c) + 32), R16((c) + 48)
const uint32_t det_class_tab[256] = { R64(0), R64(64), R64(128), R64(192) };
#undef R64
#undef R16
#undef R4

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
 * Helpers for validators.
 */
static size_t hit1(det_hit *out, size_t off, size_t len, uint8_t conf)
{
	out[0] = (det_hit){ .off = off, .len = len, .conf = conf };
	return 1;
}

static bool is_word(int c)
{
	return c >= 0 && (is_alnum(c) || c == '_');
}

static unsigned prefix_num(const uint8_t *d, unsigned k)
{
	unsigned v = 0;
	for (unsigned i = 0; i < k; i++)
		v = v * 10 + (unsigned)(d[i] - '0');
	return v;
}

static size_t count_digits(const uint8_t *p, size_t n)
{
	size_t d = 0;
	for (size_t i = 0; i < n; i++)
		d += is_digit(p[i]);
	return d;
}

/* Byte before / after p[a..b) inside the candidate, or the outside neighbour. */
static int before(const uint8_t *p, size_t a, int prev)
{
	return a > 0 ? p[a - 1] : prev;
}
static int after(const uint8_t *p, size_t n, size_t b, int next)
{
	return b < n ? p[b] : next;
}

/* Digit groups of a numeric token: gs[i]..ge[i] are runs of digits. */
#define MAX_GROUPS 24
typedef struct groups {
	size_t gs[MAX_GROUPS], ge[MAX_GROUPS];
	size_t n;
} groups;

static void split_groups(const uint8_t *p, size_t n, groups *g)
{
	g->n = 0;
	for (size_t i = 0; i < n && g->n < MAX_GROUPS;) {
		if (!is_digit(p[i])) {
			i++;
			continue;
		}
		g->gs[g->n] = i;
		while (i < n && is_digit(p[i]))
			i++;
		g->ge[g->n++] = i;
	}
}

/* ---------------------------------------------------------------------------------------------
 * email: anchor "x@y"; the local part is found back over [A-Za-z0-9._%+-], the domain forward
 * over [A-Za-z0-9.-].
 */
static size_t v_email(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)next;
	if (det_class_has(CLS_EMAIL_LOCAL, (uint8_t)(prev < 0 ? ' ' : prev)))
		return 0; /* local part longer than 64 */
	const uint8_t *at = memchr(p, '@', n);
	if (at == NULL)
		return 0;
	size_t a = (size_t)(at - p), s = 0, e = n;
	while (s < a && p[s] == '.')
		s++;
	while (e > a + 1 && (p[e - 1] == '.' || p[e - 1] == '-'))
		e--;
	size_t local = a - s;
	if (local == 0 || local > 64 || p[a - 1] == '.')
		return 0;
	for (size_t i = s + 1; i < a; i++)
		if (p[i] == '.' && p[i - 1] == '.')
			return 0;
	/* Domain labels: 1..63 of [A-Za-z0-9-], no leading/trailing '-', >= 2 labels, the last
	 * one (TLD) alphabetic, 2..24. When the whole run is no domain, the longest one that ends
	 * where a '-' follows an alphabetic last label is the address: a hyphen glued to it is
	 * prose ("jane@example.com--she", "x@example.com-based"), not part of its TLD. */
	size_t labels = 0, ls = a + 1, cut = 0;
	bool alpha = true;
	for (size_t i = a + 1; i <= e; i++) {
		if (i < e && p[i] != '.') {
			if (p[i] == '-' && alpha && labels >= 1 && i - ls >= 2 && i - ls <= 24)
				cut = i; /* the labels before it are valid (else it broke off) */
			alpha = alpha && is_alpha(p[i]);
			continue;
		}
		size_t ll = i - ls;
		if (ll == 0 || ll > 63 || p[ls] == '-' || p[i - 1] == '-')
			break;
		labels++;
		if (i == e) {
			if (ll >= 2 && ll <= 24 && alpha && labels >= 2 && e - s <= 254)
				return hit1(out, s, e - s, 90);
			break;
		}
		ls = i + 1;
		alpha = true;
	}
	if (cut == 0 || cut - s > 254)
		return 0;
	return hit1(out, s, cut - s, 90);
}

/* ---------------------------------------------------------------------------------------------
 * phone: E.164 by its own pattern ('+' and 8..15 digits); North American, national (a trunk
 * 0: UK, FR, DE, ...) and 00-prefixed international forms from the digit groups of a numeric
 * token.
 */
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

static bool phone_edges_ok(int prev, int next)
{
	if (prev >= 0 &&
	    (is_word(prev) || prev == '+' || prev == '-' || prev == '.' || prev == '/'))
		return false;
	return !(next == '-' || next == '/' || (next >= 0 && is_digit(next)));
}

static size_t v_phone_e164(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	size_t d = count_digits(p, n);
	if (d < 8 || d > 15 || !phone_edges_ok(prev, next) || !parens_ok(p, n))
		return 0;
	return hit1(out, 0, n, 85);
}

/* Separator between groups a and b: one of " .-", or ") " / ")" / " (" forms around an area
 * code. Returns false when it is something else. */
static bool phone_sep_ok(const uint8_t *p, size_t from, size_t to)
{
	size_t l = to - from;
	if (l == 1)
		return p[from] == ' ' || p[from] == '.' || p[from] == '-' || p[from] == ')' ||
		       p[from] == '(';
	if (l == 2)
		return (p[from] == ')' && p[from + 1] == ' ') ||
		       (p[from] == ' ' && p[from + 1] == '(');
	return false;
}

/* NANP at group i: [1] area exchange line = 3 3 4 digits, area and exchange start 2-9. */
static bool try_nanp(const uint8_t *p, const groups *g, size_t i, size_t *last)
{
	size_t k = i;
	if (g->ge[k] - g->gs[k] == 1 && p[g->gs[k]] == '1')
		k++;
	if (k + 2 >= g->n)
		return false;
	static const size_t want[3] = { 3, 3, 4 };
	for (size_t j = 0; j < 3; j++) {
		if (g->ge[k + j] - g->gs[k + j] != want[j])
			return false;
		if (k + j > i && !phone_sep_ok(p, g->ge[k + j - 1], g->gs[k + j]))
			return false;
	}
	if (p[g->gs[k]] < '2' || p[g->gs[k + 1]] < '2')
		return false;
	*last = k + 2;
	return true;
}

/* National at group i: a group starting 0[1-9] (2..6 digits), then 2..8-digit groups, 9..12
 * digits in all, one-byte separators. The longest such run. */
static bool try_national(const uint8_t *p, const groups *g, size_t i, size_t *last)
{
	size_t l0 = g->ge[i] - g->gs[i];
	if (p[g->gs[i]] != '0' || l0 < 2 || l0 > 6 || p[g->gs[i] + 1] == '0')
		return false;
	size_t digits = l0, best = 0;
	bool found = false;
	for (size_t j = i + 1; j < g->n; j++) {
		size_t lj = g->ge[j] - g->gs[j];
		size_t sl = g->gs[j] - g->ge[j - 1];
		uint8_t sc = p[g->ge[j - 1]];
		if (lj < 2 || lj > 8 || sl != 1 || !(sc == ' ' || sc == '.' || sc == '-'))
			break;
		digits += lj;
		if (digits > 12)
			break;
		if (digits >= 9) {
			best = j;
			found = true;
		}
	}
	*last = best;
	return found;
}

/* International with the 00 prefix written for '+' (how most of Europe writes it) at group i:
 * "00" and a country code starting 1-9, in one group of 3..5 digits ("0044", "00353") or as
 * "00" and a group of its own ("00 44"), then groups of 1..8 digits with one-byte separators,
 * 9..15 digits after the 00 (E.164 allows 15). The longest such run. A run without a separator
 * after the country code is not taken (zero-padded ids: "0012345678"). */
static bool try_intl00(const uint8_t *p, const groups *g, size_t i, size_t *last)
{
	size_t s = g->gs[i], l0 = g->ge[i] - s, cc = i, digits = l0 - 2;
	if (l0 < 2 || l0 > 5 || p[s] != '0' || p[s + 1] != '0')
		return false;
	if (l0 == 2) { /* "00 44 ..." */
		if (i + 1 >= g->n || g->gs[i + 1] - g->ge[i] != 1 ||
		    g->ge[i + 1] - g->gs[i + 1] > 3)
			return false;
		cc = i + 1;
		digits = g->ge[cc] - g->gs[cc];
	}
	if (p[g->gs[cc] + (cc == i ? 2 : 0)] == '0')
		return false;
	bool found = false;
	for (size_t j = cc + 1; j < g->n; j++) {
		size_t lj = g->ge[j] - g->gs[j];
		size_t sl = g->gs[j] - g->ge[j - 1];
		uint8_t sc = p[g->ge[j - 1]];
		if (lj > 8 || sl != 1 || !(sc == ' ' || sc == '.' || sc == '-'))
			break;
		digits += lj;
		if (digits > 15)
			return false; /* a longer run of groups is no phone number */
		if (digits >= 9) {
			*last = j;
			found = true;
		}
	}
	if (found && cc != i) {
		uint8_t sc = p[g->ge[i]];
		found = sc == ' ' || sc == '.' || sc == '-';
	}
	return found;
}

static size_t v_phone_token(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	groups g;
	split_groups(p, n, &g);
	size_t hits = 0, hit_last = SIZE_MAX;
	for (size_t i = 0; i < g.n && hits < DET_MAX_HITS; i++) {
		size_t last = 0;
		uint8_t conf;
		bool nanp = false;
		/* A group that goes on from the digits before it ("8 045 311 447", "1.045.311.447",
		 * "2024 0115 1030 4411") is inside a larger number, not the start of a national or
		 * 00 number; after a phone number found just before, it may start the next one. */
		bool runs_on =
		        i > 0 && hit_last != i - 1 && g.gs[i] - g.ge[i - 1] == 1 &&
		        (p[g.ge[i - 1]] == ' ' || p[g.ge[i - 1]] == '.' || p[g.ge[i - 1]] == '-');
		if (try_nanp(p, &g, i, &last)) {
			conf = 75;
			nanp = true;
		} else if (!runs_on && try_national(p, &g, i, &last)) {
			conf = 55;
		} else if (!runs_on && try_intl00(p, &g, i, &last)) {
			conf = 60;
		} else {
			continue;
		}
		size_t s = g.gs[i], e = g.ge[last];
		if (s > 0 && p[s - 1] == '(' && nanp)
			s--; /* "(415) 555-2671" */
		if (!phone_edges_ok(before(p, s, prev), after(p, n, e, next)) ||
		    !parens_ok(p + s, e - s))
			continue;
		out[hits++] = (det_hit){ .off = s, .len = e - s, .conf = conf };
		i = hit_last = last;
	}
	return hits;
}

/* ---------------------------------------------------------------------------------------------
 * payment_card: digit groups of a numeric token; IIN ranges and lengths of the major networks,
 * Luhn, one kind of separator between groups.
 */
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

/* Groups i..j as a card: single same-kind separators, 13..19 digits, IIN range, Luhn. */
static bool card_try(const uint8_t *p, const groups *g, size_t i, size_t j)
{
	uint8_t d[19];
	size_t nd = 0;
	int sep = -1;
	for (size_t k = i; k <= j; k++) {
		if (k > i) {
			if (g->gs[k] - g->ge[k - 1] != 1)
				return false;
			uint8_t c = p[g->ge[k - 1]];
			if ((sep >= 0 && sep != c) || (c != ' ' && c != '-'))
				return false;
			sep = c;
		}
		for (size_t x = g->gs[k]; x < g->ge[k]; x++) {
			if (nd == sizeof(d))
				return false;
			d[nd++] = p[x];
		}
	}
	return nd >= 13 && card_brand_ok(d, nd) && det_luhn_ok(d, nd);
}

static size_t v_card(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	groups g;
	split_groups(p, n, &g);
	size_t hits = 0;
	for (size_t i = 0; i < g.n && hits < DET_MAX_HITS; i++) {
		if (is_word(before(p, g.gs[i], prev)))
			continue;
		/* The longest card starting at group i (a group in front may not belong). */
		for (size_t j = g.n; j-- > i;) {
			if (is_word(after(p, n, g.ge[j], next)) || !card_try(p, &g, i, j))
				continue;
			out[hits++] =
			        (det_hit){ .off = g.gs[i], .len = g.ge[j] - g.gs[i], .conf = 95 };
			i = j;
			break;
		}
	}
	return hits;
}

/* ---------------------------------------------------------------------------------------------
 * iban: a token of [A-Za-z0-9 ]; each start "CCdd" at a word start, with its country's length
 * (single spaces allowed between characters) and mod 97. Case is ignored: an IBAN is defined
 * in upper case, but people paste it lower-cased ("de89 3704 ..."); mod 97 reads letters
 * without case, so the check digits still decide.
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

static size_t iban_len(const uint8_t *p)
{
	char c0 = (char)(p[0] & ~0x20), c1 = (char)(p[1] & ~0x20); /* letters: upper case */
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(iban_lengths); i++)
		if (iban_lengths[i].cc[0] == c0 && iban_lengths[i].cc[1] == c1)
			return iban_lengths[i].len;
	return 0;
}

static size_t v_iban(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	size_t hits = 0;
	for (size_t s = 0; s + 4 <= n && hits < DET_MAX_HITS; s++) {
		if (is_word(before(p, s, prev)) || !is_alpha(p[s]) || !is_alpha(p[s + 1]) ||
		    !is_digit(p[s + 2]) || !is_digit(p[s + 3]))
			continue;
		size_t want = iban_len(p + s), chars = 0, e = s;
		if (want == 0)
			continue;
		while (e < n && chars < want) {
			if (p[e] == ' ') {
				if (e + 1 >= n || p[e + 1] == ' ' || e == s)
					break;
			} else {
				chars++;
			}
			e++;
		}
		if (chars != want || is_word(after(p, n, e, next)) || !det_mod97_ok(p + s, e - s))
			continue;
		out[hits++] = (det_hit){ .off = s, .len = e - s, .conf = 95 };
		s = e;
	}
	return hits;
}

/* ---------------------------------------------------------------------------------------------
 * us_ssn: AAA-GG-SSSS by its own pattern, AAA GG SSSS from a numeric token; area 000, 666 and
 * 900-999, group 00 and serial 0000 are never issued.
 */
static bool ssn_ranges_ok(const uint8_t *a, const uint8_t *g, const uint8_t *s)
{
	unsigned area = prefix_num(a, 3), group = prefix_num(g, 2), serial = prefix_num(s, 4);
	return !(area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0);
}

static size_t v_ssn(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	if (n != 11)
		return 0;
	if (prev >= 0 && (is_word(prev) || prev == '-' || prev == '.' || prev == '/'))
		return 0;
	if (next == '-' || next == '/')
		return 0;
	if (!ssn_ranges_ok(p, p + 4, p + 7))
		return 0;
	return hit1(out, 0, n, 85);
}

static size_t v_ssn_token(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	groups g;
	split_groups(p, n, &g);
	size_t hits = 0;
	for (size_t i = 0; i + 2 < g.n && hits < DET_MAX_HITS; i++) {
		size_t a = g.gs[i], e = g.ge[i + 2];
		if (g.ge[i] - a != 3 || g.ge[i + 1] - g.gs[i + 1] != 2 || e - g.gs[i + 2] != 4 ||
		    g.gs[i + 1] - g.ge[i] != 1 || g.gs[i + 2] - g.ge[i + 1] != 1 ||
		    p[g.ge[i]] != ' ' || p[g.ge[i + 1]] != ' ')
			continue; /* AAA GG SSSS with single spaces (the dashed form has its pattern) */
		int b = before(p, a, prev), f = after(p, n, e, next);
		if ((b >= 0 && (is_word(b) || b == '-' || b == '.' || b == '/')) || f == '-' ||
		    f == '/' || is_word(f))
			continue;
		if (!ssn_ranges_ok(p + a, p + g.gs[i + 1], p + g.gs[i + 2]))
			continue;
		out[hits++] = (det_hit){ .off = a, .len = e - a, .conf = 60 };
		i += 2;
	}
	return hits;
}

/* ---------------------------------------------------------------------------------------------
 * ipv4: a token of [0-9.] with exactly four octets (no leading zeros, <= 255); ipv6: a token of
 * [0-9A-Fa-f:.] that inet_pton accepts.
 */
static size_t v_ipv4(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	if (is_word(prev) || prev == '.' || is_word(next))
		return 0;
	while (n > 0 && p[n - 1] == '.')
		n--;
	unsigned parts = 0;
	for (size_t i = 0; i < n;) {
		size_t s = i;
		unsigned v = 0;
		while (i < n && is_digit(p[i]) && i - s < 4)
			v = v * 10 + (unsigned)(p[i++] - '0');
		size_t l = i - s;
		if (l == 0 || l > 3 || v > 255 || (l > 1 && p[s] == '0'))
			return 0;
		parts++;
		if (i < n) {
			if (p[i] != '.')
				return 0;
			i++;
			if (i == n)
				return 0;
		}
	}
	if (parts != 4)
		return 0;
	return hit1(out, 0, n, 80);
}

static size_t v_ipv6(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	size_t s = 0;
	if (n >= 2 && p[0] == ':' && p[1] != ':') {
		s = 1; /* "addr:fe80::1": the label's colon */
		prev = ':';
	}
	if (is_word(prev) || prev == '.' || (prev == ':' && s == 0) || is_word(next))
		return 0;
	while (n > s && p[n - 1] == '.')
		n--;
	if (n - s >= 2 && p[n - 1] == ':' && p[n - 2] != ':')
		n--;
	if (n - s < 3 || n - s > 45)
		return 0;
	char tmp[46];
	memcpy(tmp, p + s, n - s);
	tmp[n - s] = '\0';
	struct in6_addr a;
	if (inet_pton(AF_INET6, tmp, &a) != 1)
		return 0;
	return hit1(out, s, n - s, 85);
}

/* ---------------------------------------------------------------------------------------------
 * AWS: access key ids (AKIA long-term, ASIA temporary, ...) and secret access keys. A secret
 * key is 40 characters of [A-Za-z0-9/+] and nothing else distinguishes it, so the pattern
 * requires an AWS keyword in front on the same line (docs/INSPECTION.md).
 */
static size_t v_aws_access(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	bool base32 = true;
	for (size_t i = 4; i < n; i++)
		if (!(is_upper(p[i]) || (p[i] >= '2' && p[i] <= '7')))
			base32 = false;
	return hit1(out, 0, n, base32 ? 95 : 70);
}

static bool aws_secret_char(int c)
{
	return c >= 0 && (is_alnum(c) || c == '/' || c == '+');
}

static size_t v_aws_secret(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	size_t e = n;
	if (e > 0 && !aws_secret_char(p[e - 1]))
		e--; /* the consumed boundary byte */
	else if (aws_secret_char(next) || next == '=')
		return 0;
	if (e < 41)
		return 0;
	size_t s = e - 40;
	if (aws_secret_char(p[s - 1]))
		return 0;
	unsigned up = 0, lo = 0, other = 0;
	for (size_t i = s; i < e; i++) {
		if (!aws_secret_char(p[i]))
			return 0;
		up += is_upper(p[i]);
		lo += is_lower(p[i]);
		other += !is_alpha(p[i]);
	}
	if (up == 0 || lo == 0 || other == 0)
		return 0;
	return hit1(out, s, 40, 80);
}

/* ---------------------------------------------------------------------------------------------
 * Token formats (regions from their prefix).
 */
static bool starts(const uint8_t *p, size_t n, const char *pre)
{
	size_t k = strlen(pre);
	return n >= k && memcmp(p, pre, k) == 0;
}

static size_t v_github(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	if (starts(p, n, "github_pat_")) {
		if (n - 11 < 22 || n - 11 > 255)
			return 0;
		return hit1(out, 0, n, 95);
	}
	size_t body = n - 4;
	if (body < 36 || body > 251)
		return 0;
	return hit1(out, 0, n, body == 36 ? 95 : 80);
}

static size_t v_gitlab(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	while (n > 6 && p[n - 1] == '.')
		n--;
	if (n - 6 < 20 || n - 6 > 255)
		return 0;
	return hit1(out, 0, n, 95);
}

static size_t v_slack(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	while (n > 5 && p[n - 1] == '-')
		n--;
	if (n - 5 < 10 || n - 5 > 255 || count_digits(p + 5, n - 5) == 0)
		return 0;
	return hit1(out, 0, n, 90);
}

static size_t v_stripe(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	if (n - 8 < 16 || n - 8 > 247)
		return 0;
	uint8_t conf = 95;
	if (p[3] != 'l')
		conf = 50; /* test mode */
	else if (p[0] == 'p')
		conf = 70; /* publishable: meant to be public, still worth knowing */
	return hit1(out, 0, n, conf);
}

static size_t v_private_key(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)p;
	(void)prev;
	(void)next;
	return hit1(out, 0, n, 99);
}

static size_t v_jwt(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
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
			return 0;
		seg_start[segs] = s;
		seg_len[segs] = i - s;
		segs++;
		s = i + 1;
	}
	if (segs < 2)
		return 0;
	for (size_t k = 0; k < 2; k++)
		if (seg_len[k] < 10 || !starts(p + seg_start[k], seg_len[k], "eyJ"))
			return 0;
	return hit1(out, 0, n, segs >= 3 ? 95 : 70);
}

/* ---------------------------------------------------------------------------------------------
 * Custom detectors' validators.
 */
size_t det_validate_custom_none(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)p;
	(void)prev;
	(void)next;
	return n > 0 ? hit1(out, 0, n, 80) : 0;
}

size_t det_validate_custom_luhn(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	return det_luhn_ok(p, n) ? hit1(out, 0, n, 95) : 0;
}

size_t det_validate_custom_mod97(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)prev;
	(void)next;
	return det_mod97_ok(p, n) ? hit1(out, 0, n, 95) : 0;
}

size_t det_validate_custom_keyword(const uint8_t *p, size_t n, int prev, int next, det_hit *out)
{
	(void)p;
	(void)prev;
	(void)next;
	return n > 0 ? hit1(out, 0, n, 75) : 0;
}

/* ---------------------------------------------------------------------------------------------
 * The table. Hyperscan runs fastest on patterns that hold a literal, so most detectors are an
 * anchor (a literal-led or short pattern) plus a region the validator reads: "@" for e-mail,
 * ':' for IPv6, "d.d" for IPv4, the token prefixes, and one shared numeric anchor (nine digits
 * with short separators, run by detect_numeric.c) for cards, national phones, spaced SSNs and
 * IBANs. Every
 * pattern is bounded; its width plus `back` is what a stream holds back for it.
 */
#define PK_KINDS "(?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"

const det_spec det_builtin_specs[] = {
	{ INSPECT_EMAIL, DET_ANCHOR, CLS_EMAIL_DOMAIN, 320, CLS_EMAIL_LOCAL, 64,
	  "[A-Za-z0-9._%+\\-]@[A-Za-z0-9]", v_email },
	{ INSPECT_PHONE, DET_MATCH, 0, 0, 0, 0, DET_E164_PATTERN, v_phone_e164 },
	{ INSPECT_PHONE, DET_ANCHOR, CLS_PHONE, 48, CLS_PHONE, 8, DET_NUMERIC_PATTERN,
	  v_phone_token },
	{ INSPECT_PAYMENT_CARD, DET_ANCHOR, CLS_CARD, 64, CLS_CARD, 8, DET_NUMERIC_PATTERN,
	  v_card },
	{ INSPECT_IBAN, DET_ANCHOR, CLS_IBAN, 80, CLS_IBAN, 24, DET_NUMERIC_PATTERN, v_iban },
	{ INSPECT_US_SSN, DET_MATCH, 0, 0, 0, 0, DET_SSN_PATTERN, v_ssn },
	{ INSPECT_US_SSN, DET_ANCHOR, CLS_SSN, 48, CLS_SSN, 4, DET_NUMERIC_PATTERN, v_ssn_token },
	{ INSPECT_IPV4, DET_ANCHOR, CLS_IPV4, 24, CLS_DIGIT, 3, DET_IPV4_PATTERN, v_ipv4 },
	{ INSPECT_IPV6, DET_ANCHOR, CLS_IPV6, 64, CLS_HEX_COLON, 40, DET_IPV6_PATTERN, v_ipv6 },
	{ INSPECT_AWS_ACCESS_KEY, DET_MATCH, 0, 0, 0, 0,
	  "\\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\\b", v_aws_access },
	{ INSPECT_AWS_SECRET_KEY, DET_MATCH, 0, 0, 0, 0,
	  "(?i:aws|secret[_\\- ]?access[_\\- ]?key)[^\\r\\n]{0,40}[^A-Za-z0-9/+][A-Za-z0-9/+]{40}"
	  "(?:[^A-Za-z0-9/+=]|$)",
	  v_aws_secret },
	{ INSPECT_GITHUB_TOKEN, DET_ANCHOR, CLS_ALNUM, 300, 0, 0, "\\bgh[pousr]_", v_github },
	{ INSPECT_GITHUB_TOKEN, DET_ANCHOR, CLS_ALNUM_US, 300, 0, 0, "\\bgithub_pat_", v_github },
	{ INSPECT_GITLAB_TOKEN, DET_ANCHOR, CLS_GITLAB, 300, 0, 0, "\\bglpat-", v_gitlab },
	{ INSPECT_SLACK_TOKEN, DET_ANCHOR, CLS_SLACK, 300, 0, 0, "\\bxox[abposr]-", v_slack },
	{ INSPECT_STRIPE_KEY, DET_ANCHOR, CLS_ALNUM, 300, 0, 0, "\\b(?:sk|rk|pk)_(?:live|test)_",
	  v_stripe },
	{ INSPECT_PRIVATE_KEY, DET_ANCHOR, CLS_ANY, 16384, 0, 0, "-----BEGIN " PK_KINDS,
	  v_private_key },
	{ INSPECT_PRIVATE_KEY, DET_TERMINATOR, 0, 0, 0, 0, "-----END " PK_KINDS, NULL },
	{ INSPECT_JWT, DET_ANCHOR, CLS_JWT, 16384, 0, 0, "\\beyJ[A-Za-z0-9_\\-]{5}", v_jwt },
};
const size_t det_builtin_n_specs = CUSTOS_ARRAY_LEN(det_builtin_specs);
