/*
 * Unicode obfuscation: values written with Unicode spaces, invisible characters between their
 * characters, fullwidth forms, other scripts' decimal digits or tag characters are found in the
 * normalised view, and their masks replace exactly the original characters (whole UTF-8
 * sequences; the output stays valid UTF-8), in block scans, in streams split at every byte
 * (inside UTF-8 sequences too), and in JSON bodies (raw UTF-8 and \uXXXX escapes). Negative
 * cases: what the view does not change, more invisible characters in a row than a stream holds,
 * and a
 * million of them in a stream (memory stays bounded, the text comes out whole).
 */
#include "test_inspect_util.h"

#include "policy/inspect_int.h"
#include "policy/inspect_stream_int.h"

/* Strict UTF-8 check (no overlongs, surrogates or values past U+10FFFF). */
static bool utf8_ok(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = inspect_norm_decode(p + i, n - i, &cp);
		if (l == 0 || l == INSPECT_NORM_SHORT)
			return false;
		i += l;
	}
	return true;
}

typedef struct obf_case {
	unsigned det;
	const char *pre, *value, *post; /* the text is pre + value + post */
} obf_case;

#define NBSP    "\xc2\xa0"     /* U+00A0 */
#define NNBSP   "\xe2\x80\xaf" /* U+202F narrow no-break space */
#define FIGSP   "\xe2\x80\x87" /* U+2007 figure space */
#define IDSP    "\xe3\x80\x80" /* U+3000 ideographic space */
#define ZWSP    "\xe2\x80\x8b" /* U+200B */
#define ZWNJ    "\xe2\x80\x8c" /* U+200C */
#define ZWJ     "\xe2\x80\x8d" /* U+200D */
#define WJ      "\xe2\x81\xa0" /* U+2060 */
#define BOM     "\xef\xbb\xbf" /* U+FEFF */
#define SHY     "\xc2\xad"     /* U+00AD soft hyphen */
#define CLL     "\xcc\xb2"     /* U+0332 combining low line */
#define NBH     "\xe2\x80\x91" /* U+2011 non-breaking hyphen */
#define FW_AT   "\xef\xbc\xa0" /* U+FF20 fullwidth @ */
#define FW_DOT  "\xef\xbc\x8e" /* U+FF0E fullwidth . */
#define FW_HY   "\xef\xbc\x8d" /* U+FF0D fullwidth - */
#define FW0     "\xef\xbc\x90" /* U+FF10 */
#define FW1     "\xef\xbc\x91"
#define FW4     "\xef\xbc\x94"
#define AR1     "\xd9\xa1" /* U+0661 Arabic-Indic one */
#define AR4     "\xd9\xa4"
#define DV1     "\xe0\xa5\xa7" /* U+0967 Devanagari one */
#define DV4     "\xe0\xa5\xaa"
#define MB1     "\xf0\x9d\x9f\x8f" /* U+1D7CF mathematical bold one */
#define MB4     "\xf0\x9d\x9f\x92"

#define SUP4    "\xe2\x81\xb4" /* U+2074 superscript four */
#define SUP1    "\xc2\xb9"     /* U+00B9 superscript one */
#define SUB4    "\xe2\x82\x84" /* U+2084 subscript four */
#define SUB1    "\xe2\x82\x81"
#define CIR4    "\xe2\x91\xa3" /* U+2463 circled four */
#define CIR1    "\xe2\x91\xa0"
#define PAR4    "\xe2\x91\xb7" /* U+2477 parenthesised four */
#define PAR1    "\xe2\x91\xb4"
#define DOT4    "\xe2\x92\x8b" /* U+248B digit four full stop */
#define DOT1    "\xe2\x92\x88"
#define MIDDOT  "\xc2\xb7"         /* U+00B7 middle dot */
#define ONEDOT  "\xe2\x80\xa4"     /* U+2024 one dot leader */
#define HYPHPT  "\xe2\x80\xa7"     /* U+2027 hyphenation point */
#define HYBUL   "\xe2\x81\x83"     /* U+2043 hyphen bullet */
#define SMALLAT "\xef\xb9\xab"     /* U+FE6B small commercial at */
#define SCRIPTE "\xe2\x84\xaf"     /* U+212F script small e */
#define MBJ     "\xf0\x9d\x90\xa3" /* U+1D423 mathematical bold small j */
#define MBA     "\xf0\x9d\x90\x9a"
#define MBN     "\xf0\x9d\x90\xa7"
#define MBE     "\xf0\x9d\x90\x9e"
#define DSA     "\xf0\x9d\x94\xb8" /* U+1D538 mathematical double-struck capital A */
#define DSK     "\xf0\x9d\x95\x82"
#define CAPI    "\xe2\x85\xa0" /* U+2160 Roman numeral one */
#define CIR11   "\xe2\x91\xaa" /* U+246A circled eleven */
#define CIR12   "\xe2\x91\xab" /* U+246B circled twelve */
#define PAR11   "\xe2\x91\xbe" /* U+247E parenthesised eleven */
#define NCIR11  "\xe2\x93\xab" /* U+24EB negative circled eleven */
#define LIG_FI  "\xef\xac\x81" /* U+FB01 latin small ligature fi */
#define LIG_FF  "\xef\xac\x80" /* U+FB00 latin small ligature ff */

#define CY_A    "\xd0\x90" /* U+0410 Cyrillic capital A */
#define CY_K    "\xd0\x9a" /* U+041A Cyrillic capital Ka */
#define CY_I    "\xd0\x86" /* U+0406 Cyrillic capital Byelorussian-Ukrainian I */
#define CY_a    "\xd0\xb0" /* U+0430 Cyrillic small a */
#define CY_e    "\xd0\xb5" /* U+0435 Cyrillic small ie */
#define CY_o    "\xd0\xbe" /* U+043E Cyrillic small o */
#define CY_s    "\xd1\x81" /* U+0441 Cyrillic small es */
#define GR_B    "\xce\x92" /* U+0392 Greek capital Beta */
#define GR_E    "\xce\x95" /* U+0395 Greek capital Epsilon */

#define FW_CARD FW4 FW1 FW1 FW1 " " FW1 FW1 FW1 FW1 " " FW1 FW1 FW1 FW1 " " FW1 FW1 FW1 FW1
#define AR_CARD AR4 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1 AR1
#define DV_CARD DV4 DV1 DV1 DV1 "-" DV1 DV1 DV1 DV1 "-" DV1 DV1 DV1 DV1 "-" DV1 DV1 DV1 DV1
#define MB_CARD MB4 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1 MB1
/* AKIAIOSFODNN7EXAMPLE in tag characters (U+E0041...): invisible, read by models */
static const char tag_key[] = "\xf3\xa0\x81\x81\xf3\xa0\x81\x8b\xf3\xa0\x81\x89\xf3\xa0\x81\x81"
                              "\xf3\xa0\x81\x89\xf3\xa0\x81\x8f\xf3\xa0\x81\x93\xf3\xa0\x81\x86"
                              "\xf3\xa0\x81\x8f\xf3\xa0\x81\x84\xf3\xa0\x81\x8e\xf3\xa0\x81\x8e"
                              "\xf3\xa0\x80\xb7\xf3\xa0\x81\x85\xf3\xa0\x81\x98\xf3\xa0\x81\x81"
                              "\xf3\xa0\x81\x8d\xf3\xa0\x81\x90\xf3\xa0\x81\x8c\xf3\xa0\x81\x85";

static const obf_case obf[] = {
	{ INSPECT_PAYMENT_CARD, "card ", "4111" NBSP "1111" NBSP "1111" NBSP "1111", " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", "4111" NNBSP "1111" NNBSP "1111" NNBSP "1111", "." },
	{ INSPECT_PAYMENT_CARD, "card ", "4111" FIGSP "1111" FIGSP "1111" FIGSP "1111", "" },
	{ INSPECT_PAYMENT_CARD, "card ", "4111" IDSP "1111" IDSP "1111" IDSP "1111", " x" },
	{ INSPECT_PAYMENT_CARD, "card ",
	  "4" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP
	  "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1" ZWSP "1",
	  " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", "4111" SHY "1111" WJ "1111" BOM "1111", "" },
	{ INSPECT_PAYMENT_CARD, "card ",
	  "4111" ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP ZWSP
	          ZWSP ZWSP ZWSP ZWSP "1111 1111 1111",
	  " ok" },
	{ INSPECT_EMAIL, "mail ",
	  "jane" CLL CLL CLL CLL CLL CLL CLL CLL CLL CLL CLL CLL "@example.com", " now" },
	{ INSPECT_PAYMENT_CARD, "c ", "4111 " ZWNJ ZWJ "1111 1111 " BOM WJ ZWSP "1111", " ok" },
	{ INSPECT_PAYMENT_CARD, "c ", "4" CLL "1" CLL "1" CLL "1" CLL " 1111 1111 1111", " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", FW_CARD, " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", AR_CARD, " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", DV_CARD, " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", MB_CARD, " ok" },
	{ INSPECT_PAYMENT_CARD, "card ",
	  SUP4 SUP1 SUP1 SUP1 " " SUP1 SUP1 SUP1 SUP1 " " SUP1 SUP1 SUP1 SUP1
	                      " " SUP1 SUP1 SUP1 SUP1,
	  " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", SUB4 SUB1 SUB1 SUB1 "-1111-" SUB1 SUB1 "11-1111", " ok" },
	{ INSPECT_PAYMENT_CARD, "card ",
	  CIR4 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1 CIR1, " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", PAR4 PAR1 PAR1 PAR1 " 1111 1111 " PAR1 PAR1 PAR1 PAR1,
	  "" },
	{ INSPECT_PAYMENT_CARD, "card ", DOT4 DOT1 DOT1 DOT1 " 1111 1111 1111", " ok" },
	/* characters that stand for two */
	{ INSPECT_PAYMENT_CARD, "card ", CIR4 CIR1 CIR11 " " CIR11 CIR11 " " CIR11 CIR11 " 1111",
	  " ok" },
	{ INSPECT_PAYMENT_CARD, "card ", "4111 " PAR11 "11 1" NCIR11 "1 " CIR11 CIR11, " ok" },
	{ INSPECT_US_SSN, "ssn ", CIR12 "3-45-6789", " ok" },
	{ INSPECT_EMAIL, "mail ", "con" LIG_FI "g.o" LIG_FF "ice@example.com", " now" },
	{ INSPECT_US_SSN, "ssn ", "123" HYBUL "45" HYBUL "6789", " ok" },
	{ INSPECT_EMAIL, "mail ", MBJ MBA MBN MBE "@example.com", " now" },
	{ INSPECT_EMAIL, "mail ", "jane@" SCRIPTE "xample.com", " now" },
	{ INSPECT_EMAIL, "mail ", "jane" MIDDOT "doe@example" MIDDOT "com", " now" },
	{ INSPECT_EMAIL, "mail ", "jane" HYPHPT "doe" SMALLAT "example" ONEDOT "com", " now" },
	{ INSPECT_AWS_ACCESS_KEY, "id ", DSA DSK CAPI "AIOSFODNN7EXAMPLE", " ok" },
	{ INSPECT_EMAIL, "mail ", "j" CY_a "n" CY_e "@" CY_e "x" CY_a "mple.com", " now" },
	{ INSPECT_EMAIL, "mail ", "jane@example." CY_s CY_o "m", " now" },
	{ INSPECT_AWS_ACCESS_KEY, "id ", CY_A CY_K CY_I CY_A "IOSFODNN7EXAMPLE", " ok" },
	{ INSPECT_AWS_ACCESS_KEY, "id ", CY_A CY_K CY_I CY_A ZWSP "IOSFODNN7EXAMPLE", " ok" },
	{ INSPECT_IBAN, "iban ", GR_B GR_E "71 0961 2345 6769", " ok" },
	{ INSPECT_JWT, "jwt ",
	  CY_e "yJhbGciOiJIUzI1NiJ9." CY_e
	       "yJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y"
	       "JV_adQssw5c",
	  " ok" },
	{ INSPECT_US_SSN, "ssn ", "123" FW_HY "45" FW_HY "6789", " ok" },
	{ INSPECT_US_SSN, "ssn ", "123" NBH "45" NBH "6789", "." },
	{ INSPECT_US_SSN, "ssn ", "1" ZWSP "2" ZWSP "3-4" ZWSP "5-6" ZWSP "789", " ok" },
	{ INSPECT_US_SSN, "ssn ", "078" NBSP "05" NBSP "1120", " ok" },
	{ INSPECT_PHONE, "call ", "+1" NBSP "415" NBSP "555" NBSP "2671", " now" },
	{ INSPECT_PHONE, "call ", "+44" NNBSP "20" NNBSP "7946" NNBSP "0958", " now" },
	{ INSPECT_PHONE, "call ", "\xef\xbc\x8b" FW1 " 415 555 2671", " now" },
	{ INSPECT_EMAIL, "mail ", "jane.doe" FW_AT "example.com", " now" },
	{ INSPECT_EMAIL, "mail ", "jane.doe@example" FW_DOT "com", " now" },
	{ INSPECT_EMAIL, "mail ", "jane" ZWSP ".doe@" ZWSP "example.com", " now" },
	{ INSPECT_EMAIL, "mail ",
	  "\xef\xbd\x8a\xef\xbd\x81\xef\xbd\x8e\xef\xbd\x85" FW_AT
	  "\xef\xbd\x85\xef\xbd\x98\xef\xbd\x81\xef\xbd\x8d\xef\xbd\x90\xef\xbd\x8c\xef\xbd"
	  "\x85" FW_DOT "\xef\xbd\x83\xef\xbd\x8f\xef\xbd\x8d",
	  " now" },
	{ INSPECT_AWS_ACCESS_KEY, "id ", "AKIA" ZWSP "IOSF" ZWSP "ODNN" ZWSP "7EXA" ZWSP "MPLE",
	  "," },
	{ INSPECT_AWS_ACCESS_KEY, "id ", tag_key, " ok" },
	{ INSPECT_GITHUB_TOKEN, "token ", "ghp_aB3dE5fG7h" SHY "J9kL1mN3pQ5r" SHY "S7tU9vW1xY3z5A",
	  " used" },
	{ INSPECT_STRIPE_KEY, "stripe ", "sk_live_4eC39Hq" ZWJ "LyjWDarjtT1zdp7dc", "!" },
};

/* "[REDACTED:NAME]" of a detector (the engine's rule: upper case, '_' for the rest). */
static const char *mask_of(unsigned det)
{
	static char m[300];
	const char *nm = inspect_engine_detector_name(E, det);
	size_t k = (size_t)snprintf(m, sizeof(m), "[REDACTED:");
	for (; *nm && k + 2 < sizeof(m); nm++)
		m[k++] = (*nm >= 'a' && *nm <= 'z') ? (char)(*nm - 32) : *nm == '-' ? '_' : *nm;
	m[k++] = ']';
	m[k] = '\0';
	return m;
}

static char *join3(const obf_case *c, size_t *n)
{
	size_t a = strlen(c->pre), b = strlen(c->value), d = strlen(c->post);
	char *t = malloc(a + b + d + 1);
	assert_non_null(t);
	memcpy(t, c->pre, a);
	memcpy(t + a, c->value, b);
	memcpy(t + a + b, c->post, d + 1);
	*n = a + b + d;
	return t;
}

/* Each value is found, the finding covers exactly its original bytes, and the mask replaces
 * them (the text around is left byte for byte, valid UTF-8). */
static void test_obfuscated_found(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(obf); i++) {
		const obf_case *c = &obf[i];
		size_t n;
		char *t = join3(c, &n);
		inspect_findings f = { 0 };
		assert_int_equal(inspect_scan(E, S, &p, span_of(t, n), &f), CUSTOS_OK);
		bool found = false;
		for (size_t k = 0; k < f.n; k++)
			found = found || (f.items[k].detector == c->det &&
			                  f.items[k].offset == strlen(c->pre) &&
			                  f.items[k].length == strlen(c->value));
		if (!found) {
			fprintf(stderr, "case %zu (%s): not found exactly; got:\n", i,
			        inspect_engine_detector_name(E, c->det));
			for (size_t k = 0; k < f.n; k++)
				fprintf(stderr, "  %s @%llu+%u\n",
				        inspect_engine_detector_name(E, f.items[k].detector),
				        (unsigned long long)f.items[k].offset, f.items[k].length);
		}
		assert_true(found);
		inspect_findings_free(&f);
		char want[512];
		snprintf(want, sizeof(want), "%s%s%s", c->pre, mask_of(c->det), c->post);
		inspect_summary sum;
		char *r = ti_redact(&p, t, n, &sum);
		assert_string_equal(r, want);
		assert_true(utf8_ok((const uint8_t *)r, strlen(r)));
		assert_int_equal(sum.count[c->det], 1);
		free(r);
		free(t);
	}
}

/* Every case streamed with a split at every byte offset (inside UTF-8 sequences too) and in
 * 1..4-byte fragments: the stream releases exactly what block redaction gives, never the value,
 * and never ends a release inside a character (ti_stream checks). */
static void test_obfuscated_split_every_offset(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(obf); i++) {
		size_t n;
		char *t = join3(&obf[i], &n);
		inspect_summary bs, ss;
		char *want = ti_redact(&p, t, n, &bs);
		assert_null(strstr(want, obf[i].value));
		for (size_t k = 0; k <= n; k++) {
			size_t sizes[2] = { k, n - k + 1 };
			char *got = ti_stream(&p, t, n, k == 0 ? sizes + 1 : sizes, k == 0 ? 1 : 2,
			                      &ss);
			if (strcmp(got, want) != 0)
				fprintf(stderr, "case %zu split %zu:\n  want %s\n  got  %s\n", i, k,
				        want, got);
			assert_string_equal(got, want);
			assert_int_equal(ss.total, bs.total);
			free(got);
		}
		uint32_t seed = 0x51ed270bu + (uint32_t)i;
		for (int run = 0; run < 8; run++) {
			size_t sizes[64];
			for (size_t k = 0; k < 64; k++)
				sizes[k] = 1 + ti_rand(&seed) % 4;
			char *got = ti_stream(&p, t, n, sizes, 64, &ss);
			assert_string_equal(got, want);
			free(got);
		}
		free(want);
		free(t);
	}
}

/* Negative cases: what the view does not change stays unfound, text without a value passes
 * byte for byte (accents, CJK, emoji, ZWJ sequences), and invalid UTF-8 is bytes. */
static void test_not_normalised(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const misses[] = {
		/* a character that stands for two digits stands for both: one too many here */
		"card 4111 " CIR11 CIR12 " 1111 1111",
		/* a fullwidth card that fails Luhn */
		"card " FW4 FW1 FW1 FW1 " " FW1 FW1 FW1 FW1 " " FW1 FW1 FW1 FW1 " " FW1 FW1 FW1 FW0,
		/* mixed separators stay refused, as in ASCII */
		"card 4111" NBSP "1111-1111 1111",
		/* an em dash is punctuation, not a hyphen (parenthesised: one element, for clang) */
		("ssn 123\xe2\x80\x94"
		 "45\xe2\x80\x94"
		 "6789"),
		/* a value glued to a fullwidth letter is glued */
		("x\xef\xbd\x98"
		 "4111111111111111"),
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(misses); i++) {
		inspect_summary sum;
		char *r = ti_redact(&p, misses[i], strlen(misses[i]), &sum);
		if (sum.total != 0)
			fprintf(stderr, "miss case %zu found: %s\n", i, r);
		assert_int_equal(sum.total, 0);
		assert_string_equal(r, misses[i]);
		free(r);
	}
	const char *clean =
	        "caf\xc3\xa9 na\xc3\xafve \xe6\x9d\xb1\xe4\xba\xac "
	        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 "
	        "e\xcc\x81 \xef\xbc\xa1\xef\xbc\xa2 \xd9\xa1\xd9\xa2 " NBSP "ok" ZWSP;
	inspect_summary sum;
	char *r = ti_redact(&p, clean, strlen(clean), &sum);
	assert_string_equal(r, clean);
	assert_int_equal(sum.total, 0);
	free(r);
	size_t sizes[] = { 1, 2, 3 };
	r = ti_stream(&p, clean, strlen(clean), sizes, 3, &sum);
	assert_string_equal(r, clean);
	free(r);
	/* invalid UTF-8 (a lead without its continuation, an overlong, a lone surrogate) around
	 * obfuscated values: bytes like any other, kept as they were */
	const char bad[] = "\xe2\x80 \xc0\xaf \xed\xa0\x80 card " FW_CARD " \xef\xbc";
	const char want[] = "\xe2\x80 \xc0\xaf \xed\xa0\x80 card [REDACTED:PAYMENT_CARD] \xef\xbc";
	r = ti_redact(&p, bad, sizeof(bad) - 1, &sum);
	assert_string_equal(r, want);
	free(r);
	for (size_t k = 1; k <= 5; k++) {
		size_t one[] = { k };
		r = ti_stream(&p, bad, sizeof(bad) - 1, one, 1, &sum);
		assert_string_equal(r, want);
		free(r);
	}
}

/* Invisible characters that change kind any number of times in a row (WJ and ZWSP in turn, 8,
 * 9, 100 or 300,000 of them; a cycle of seven kinds; runs of 30 and 100 of one kind in turn)
 * between two groups of a card are all dropped: the card is found and masked whole, in a block
 * and streamed in 2-byte and 4093-byte pieces, and the text around comes out byte for byte.
 * Negative: more than INSPECT_MAX_INVISIBLE_HELD bytes of them in a row fail the stream
 * (LIMIT), nothing of the value released. */
static void test_invisible_mixed(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const kinds[] = { ZWSP, ZWNJ, ZWJ, WJ, BOM, SHY, CLL };
	static const struct {
		size_t n, kinds, run;
	} cases[] = { { 8, 2, 1 },   { 9, 2, 1 },     { 100, 2, 1 },   { 300000, 2, 1 },
		      { 700, 7, 1 }, { 3000, 2, 30 }, { 3000, 2, 100 } };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		buf b;
		buf_init(&b, 4u << 20);
		assert_int_equal(buf_append_cstr(&b, "card 4111"), CUSTOS_OK);
		for (size_t k = 0; k < cases[i].n; k++)
			assert_int_equal(
			        buf_append_cstr(&b, kinds[(k / cases[i].run) % cases[i].kinds]),
			        CUSTOS_OK);
		assert_int_equal(buf_append_cstr(&b, " 1111 1111 1111 ok"), CUSTOS_OK);
		inspect_summary sum;
		char *r = ti_redact(&p, (const char *)buf_ptr(&b), buf_used(&b), &sum);
		assert_string_equal(r, "card [REDACTED:PAYMENT_CARD] ok");
		assert_int_equal(sum.count[INSPECT_PAYMENT_CARD], 1);
		size_t two[] = { 2 }, big[] = { 4093 };
		char *s = ti_stream(&p, (const char *)buf_ptr(&b), buf_used(&b),
		                    cases[i].n > 10000 ? big : two, 1, NULL);
		assert_string_equal(s, r);
		free(s);
		free(r);
		/* the same between two values: every invisible byte comes out as it came */
		buf t;
		buf_init(&t, 8u << 20);
		assert_int_equal(buf_append_cstr(&t, "a 4111 1111 1111 1111 "), CUSTOS_OK);
		assert_int_equal(buf_append(&t, buf_ptr(&b) + 9, buf_used(&b) - 9 - 18), CUSTOS_OK);
		assert_int_equal(buf_append_cstr(&t, " 123-45-6789 z"), CUSTOS_OK);
		buf want;
		buf_init(&want, 8u << 20);
		assert_int_equal(buf_append_cstr(&want, "a [REDACTED:PAYMENT_CARD] "), CUSTOS_OK);
		assert_int_equal(buf_append(&want, buf_ptr(&b) + 9, buf_used(&b) - 9 - 18),
		                 CUSTOS_OK);
		assert_int_equal(buf_append_cstr(&want, " [REDACTED:US_SSN] z"), CUSTOS_OK);
		assert_int_equal(buf_append(&want, "", 1), CUSTOS_OK);
		s = ti_stream(&p, (const char *)buf_ptr(&t), buf_used(&t),
		              cases[i].n > 10000 ? big : two, 1, NULL);
		assert_string_equal(s, (const char *)buf_ptr(&want));
		free(s);
		buf_free(&want);
		buf_free(&t);
		buf_free(&b);
	}
	/* past INSPECT_MAX_INVISIBLE_HELD bytes in a row: LIMIT */
	size_t n = INSPECT_MAX_INVISIBLE_HELD / 3 + 2;
	uint8_t *big = malloc(3 * n + 16);
	assert_non_null(big);
	memcpy(big, "card 4111", 9);
	for (size_t k = 0; k < n; k++)
		memcpy(big + 9 + 3 * k, k % 2 ? ZWSP : ZWNJ, 3);
	memcpy(big + 9 + 3 * n, " 1111", 5);
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 1u << 20);
	custos_err e = CUSTOS_OK;
	for (size_t at = 0; at < 3 * n + 14 && e == CUSTOS_OK; at += 1u << 20) {
		size_t len = 3 * n + 14 - at < (1u << 20) ? 3 * n + 14 - at : 1u << 20;
		e = inspect_stream_feed(st, S, span_of((const char *)big + at, len), &out);
	}
	assert_int_equal(e, CUSTOS_ERR_LIMIT);
	assert_true(buf_used(&out) == 0 ||
	            memmem(buf_ptr(&out), buf_used(&out), "4111", 4) == NULL);
	inspect_stream_free(st);
	buf_free(&out);
	free(big);
}

/* One invisible character repeated any number of times in a row is one edit per UINT16_MAX of
 * them: a card with 9, 20, 1000, 70000 or 524,281 zero-width spaces between its groups is found
 * and masked whole, in a block and streamed in 2-byte and 4093-byte pieces. */
static void test_invisible_repeated(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const size_t runs[] = {
		9, 20, 1000, 70000, (size_t)8 * UINT16_MAX, (size_t)8 * UINT16_MAX + 1
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(runs); i++) {
		buf b;
		buf_init(&b, 4u << 20);
		assert_int_equal(buf_append_cstr(&b, "card 4111"), CUSTOS_OK);
		for (size_t k = 0; k < runs[i]; k++)
			assert_int_equal(buf_append(&b, ZWSP, 3), CUSTOS_OK);
		assert_int_equal(buf_append_cstr(&b, " 1111 1111 1111 ok"), CUSTOS_OK);
		const char *t = (const char *)buf_ptr(&b);
		size_t n = buf_used(&b);
		bool found = true;
		inspect_findings f = { 0 };
		assert_int_equal(inspect_scan(E, S, &p, span_of(t, n), &f), CUSTOS_OK);
		assert_int_equal(f.n, found ? 1 : 0);
		if (found) {
			assert_int_equal(f.items[0].detector, INSPECT_PAYMENT_CARD);
			assert_int_equal(f.items[0].offset, 5);
			assert_int_equal(f.items[0].length, n - 5 - 3);
		}
		inspect_findings_free(&f);
		inspect_summary sum;
		char *r = ti_redact(&p, t, n, &sum);
		if (found)
			assert_string_equal(r, "card [REDACTED:PAYMENT_CARD] ok");
		else
			assert_int_equal(strlen(r), n);
		size_t two[] = { 2 }, big[] = { 4093 };
		char *s1 = ti_stream(&p, t, n, runs[i] > 100000 ? big : two, 1, NULL);
		assert_string_equal(s1, r);
		free(s1);
		free(r);
		buf_free(&b);
	}
}

/* A million zero-width spaces between two values and inside a third, streamed in 4093-byte
 * pieces (cut inside characters): the memory the stream holds (window and edits) stays bounded,
 * every byte comes out, the values are masked. */
static void test_million_invisible(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	size_t hold = inspect_profile_holdback(E, &p);
	const size_t runs = 1000000;
	const char *head = "card 4111 1111 1111 1111 then ", *tail = " ssn 123-45-6789 end";
	buf text;
	buf_init(&text, 8u << 20);
	assert_int_equal(buf_append_cstr(&text, head), CUSTOS_OK);
	for (size_t k = 0; k < runs; k++)
		assert_int_equal(buf_append(&text, ZWSP, 3), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&text, tail), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&text, " and 5500"), CUSTOS_OK);
	for (size_t k = 0; k < runs / 3; k++)
		assert_int_equal(buf_append(&text, ZWSP, 3), CUSTOS_OK);
	assert_int_equal(buf_append_cstr(&text, " 0000 0000 0004 ok"), CUSTOS_OK);
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 8u << 20);
	const char *t = (const char *)buf_ptr(&text);
	size_t n = buf_used(&text), most_ed = 0, most_win = 0;
	for (size_t at = 0; at < n; at += 4093) {
		size_t len = n - at < 4093 ? n - at : 4093;
		assert_int_equal(inspect_stream_feed(st, S, span_of(t + at, len), &out), CUSTOS_OK);
		if (st->n_ed - st->ed_head > most_ed)
			most_ed = st->n_ed - st->ed_head;
		if (buf_used(&st->win) > most_win)
			most_win = buf_used(&st->win);
	}
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
	/* a run of one character is one edit per UINT16_MAX of it, and none of it is in the view */
	assert_true(most_ed <= hold + 1000000 / UINT16_MAX + 2);
	assert_true(st->cap_ed <= 4096);
	assert_true(most_win <= 3 * hold + 2 * 4093);
	const char *o = (const char *)buf_ptr(&out);
	size_t on = buf_used(&out);
	const char *h2 = "card [REDACTED:PAYMENT_CARD] then ",
	           *t2 = " ssn [REDACTED:US_SSN] end and [REDACTED:PAYMENT_CARD] ok";
	assert_int_equal(on, strlen(h2) + 3 * runs + strlen(t2));
	assert_memory_equal(o, h2, strlen(h2));
	assert_memory_equal(o + on - strlen(t2), t2, strlen(t2));
	assert_memory_equal(o + strlen(h2), t + strlen(head), 3 * runs);
	inspect_stream_free(st);
	buf_free(&out);
	buf_free(&text);
}

/* Cyrillic and Greek prose is left alone: its look-alike letters are mapped only in a word that
 * also holds a Latin letter or digit, so capitals in words of their own (a country code and an
 * AWS prefix written apart from the digits) stay as they are, nothing is found but the Latin
 * address, the text comes out byte for byte, in a block and split at every offset; a block of
 * it makes no edit, and prose without ASCII next to its letters does not stop the search. */
static void test_script_prose(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\x21\x20\xd0\xad\xd1\x82\xd0\xbe"
		  "\x20\xd0\xbe\xd0\xb1\xd1\x8b\xd1\x87\xd0\xbd\xd1\x8b\xd0\xb9\x20\xd1\x82\xd0\xb5"
		  "\xd0\xba\xd1\x81\xd1\x82\x20\xd0\xbd\xd0\xb0\x20\xd1\x80\xd1\x83\xd1\x81\xd1\x81"
		  "\xd0\xba\xd0\xbe\xd0\xbc\x20\xd1\x8f\xd0\xb7\xd1\x8b\xd0\xba\xd0\xb5\x2c\x20\xd0"
		  "\xb1\xd0\xb5\xd0\xb7\x20\xd1\x81\xd0\xb5\xd0\xba\xd1\x80\xd0\xb5\xd1\x82\xd0\xbe"
		  "\xd0\xb2\x2e\x20\xd0\x9d\xd0\xbe\xd0\xbc\xd0\xb5\xd1\x80\x20\xd0\xb7\xd0\xb0\xd0"
		  "\xba\xd0\xb0\xd0\xb7\xd0\xb0\x3a\x20\x31\x32\x33\x34\x35\x2e\x20\xd0\x92\xd1\x81"
		  "\xd1\x82\xd1\x80\xd0\xb5\xd1\x87\xd0\xb0\x20\xd0\xb2\x20\x31\x30\x3a\x33\x30\x2c"
		  "\x20\xd0\xba\xd0\xb0\xd0\xb1\xd0\xb8\xd0\xbd\xd0\xb5\xd1\x82\x20\x35\xd0\x91\x2c"
		  "\x20\xd1\x8d\xd1\x82\xd0\xb0\xd0\xb6\x20\x33\x2d\xd0\xb9\x2e\x20\xd0\x9a\xd1\x82"
		  "\xd0\xbe\x2d\xd1\x82\xd0\xbe\x20\xd0\xb8\xd0\xb7\x2d\xd0\xb7\xd0\xb0\x20\xd0\xb4"
		  "\xd0\xbe\xd0\xb6\xd0\xb4\xd1\x8f\x20\xd0\xbe\xd0\xbf\xd0\xbe\xd0\xb7\xd0\xb4\xd0"
		  "\xb0\xd0\xbb\x2e\x20\xd0\x92\xd0\x95\x20\x37\x31\x30\x39\x20\x36\x31\x32\x33\x20"
		  "\x34\x35\x36\x37\x20\x36\x39\x20\xe2\x80\x94\x20\xd1\x8d\xd1\x82\xd0\xbe\x20\xd0"
		  "\xbd\xd0\xb5\x20\x49\x42\x41\x4e\x2c\x20\xd0\x90\xd0\x9a\xd0\x86\xd0\x90\x20\xd0"
		  "\x9e\xd0\x85\x46\xd0\x9e\x20\xd1\x82\xd0\xbe\xd0\xb6\xd0\xb5\x20\xd0\xbd\xd0\xb5"
		  "\x20\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\x2e\x20\xd0\x9f\xd0\xb8\xd1\x88\xd0\xb8\xd1"
		  "\x82\xd0\xb5\x20\xd0\xbd\xd0\xb0\x20\x6a\x61\x6e\x65\x40\x65\x78\x61\x6d\x70\x6c"
		  "\x65\x2e\x63\x6f\x6d\x2c\x20\xd0\x9e\xd0\x9a\x3f",
		  "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\x21\x20\xd0\xad\xd1\x82\xd0\xbe"
		  "\x20\xd0\xbe\xd0\xb1\xd1\x8b\xd1\x87\xd0\xbd\xd1\x8b\xd0\xb9\x20\xd1\x82\xd0\xb5"
		  "\xd0\xba\xd1\x81\xd1\x82\x20\xd0\xbd\xd0\xb0\x20\xd1\x80\xd1\x83\xd1\x81\xd1\x81"
		  "\xd0\xba\xd0\xbe\xd0\xbc\x20\xd1\x8f\xd0\xb7\xd1\x8b\xd0\xba\xd0\xb5\x2c\x20\xd0"
		  "\xb1\xd0\xb5\xd0\xb7\x20\xd1\x81\xd0\xb5\xd0\xba\xd1\x80\xd0\xb5\xd1\x82\xd0\xbe"
		  "\xd0\xb2\x2e\x20\xd0\x9d\xd0\xbe\xd0\xbc\xd0\xb5\xd1\x80\x20\xd0\xb7\xd0\xb0\xd0"
		  "\xba\xd0\xb0\xd0\xb7\xd0\xb0\x3a\x20\x31\x32\x33\x34\x35\x2e\x20\xd0\x92\xd1\x81"
		  "\xd1\x82\xd1\x80\xd0\xb5\xd1\x87\xd0\xb0\x20\xd0\xb2\x20\x31\x30\x3a\x33\x30\x2c"
		  "\x20\xd0\xba\xd0\xb0\xd0\xb1\xd0\xb8\xd0\xbd\xd0\xb5\xd1\x82\x20\x35\xd0\x91\x2c"
		  "\x20\xd1\x8d\xd1\x82\xd0\xb0\xd0\xb6\x20\x33\x2d\xd0\xb9\x2e\x20\xd0\x9a\xd1\x82"
		  "\xd0\xbe\x2d\xd1\x82\xd0\xbe\x20\xd0\xb8\xd0\xb7\x2d\xd0\xb7\xd0\xb0\x20\xd0\xb4"
		  "\xd0\xbe\xd0\xb6\xd0\xb4\xd1\x8f\x20\xd0\xbe\xd0\xbf\xd0\xbe\xd0\xb7\xd0\xb4\xd0"
		  "\xb0\xd0\xbb\x2e\x20\xd0\x92\xd0\x95\x20\x37\x31\x30\x39\x20\x36\x31\x32\x33\x20"
		  "\x34\x35\x36\x37\x20\x36\x39\x20\xe2\x80\x94\x20\xd1\x8d\xd1\x82\xd0\xbe\x20\xd0"
		  "\xbd\xd0\xb5\x20\x49\x42\x41\x4e\x2c\x20\xd0\x90\xd0\x9a\xd0\x86\xd0\x90\x20\xd0"
		  "\x9e\xd0\x85\x46\xd0\x9e\x20\xd1\x82\xd0\xbe\xd0\xb6\xd0\xb5\x20\xd0\xbd\xd0\xb5"
		  "\x20\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\x2e\x20\xd0\x9f\xd0\xb8\xd1\x88\xd0\xb8\xd1"
		  "\x82\xd0\xb5\x20\xd0\xbd\xd0\xb0\x20\x5b\x52\x45\x44\x41\x43\x54\x45\x44\x3a\x45"
		  "\x4d\x41\x49\x4c\x5d\x2c\x20\xd0\x9e\xd0\x9a\x3f" },
		{ "\xce\x9a\xce\xb1\xce\xbb\xce\xb7\xce\xbc\xce\xad\xcf\x81\xce\xb1\x21\x20\xce\x91"
		  "\xcf\x85\xcf\x84\xcf\x8c\x20\xce\xb5\xce\xaf\xce\xbd\xce\xb1\xce\xb9\x20\xce\xad"
		  "\xce\xbd\xce\xb1\x20\xce\xb1\xcf\x80\xce\xbb\xcf\x8c\x20\xce\xba\xce\xb5\xce\xaf"
		  "\xce\xbc\xce\xb5\xce\xbd\xce\xbf\x20\xcf\x83\xcf\x84\xce\xb1\x20\xce\xb5\xce\xbb"
		  "\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac\x2e\x20\xce\x9f\xce\x9a\x2c\x20"
		  "\xcf\x84\xce\xb1\x20\xce\xbb\xce\xad\xce\xbc\xce\xb5\x20\xcf\x83\xcf\x84\xce\xb9"
		  "\xcf\x82\x20\x31\x30\x2e\x20\xce\x91\xce\x92\xce\x93\x2d\xce\x95\xce\x96\xce\x97"
		  "\x2c\x20\xce\xa1\x2e\xce\xa4\x2e\xce\xa7\x2e",
		  NULL },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		const char *t = cases[i].text, *want = cases[i].want ? cases[i].want : t;
		size_t n = strlen(t);
		inspect_summary sum;
		char *r = ti_redact(&p, t, n, &sum);
		assert_string_equal(r, want);
		assert_int_equal(sum.total, cases[i].want ? 1 : 0);
		free(r);
		for (size_t k = 0; k <= n; k++) {
			size_t sizes[2] = { k, n - k + 1 };
			r = ti_stream(&p, t, n, k == 0 ? sizes + 1 : sizes, k == 0 ? 1 : 2, &sum);
			assert_string_equal(r, want);
			free(r);
		}
		inspect_stream *st;
		assert_int_equal(inspect_stream_new(E, &p, &st), CUSTOS_OK);
		buf out;
		buf_init(&out, 1u << 16);
		assert_int_equal(inspect_stream_feed(st, S, span_of(t, n), &out), CUSTOS_OK);
		if (cases[i].want == NULL)
			assert_int_equal(st->n_ed, 0);
		assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
		inspect_stream_free(st);
		buf_free(&out);
	}
	const char *plain = "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\x2c\x20\xd0\xba\xd0"
	                    "\xb0\xd0\xba\x20\xd0\xb4\xd0\xb5\xd0\xbb\xd0\xb0\x20\xd1\x83\x20\xd0"
	                    "\xb2\xd0\xb0\xd1\x81\x20\xd1\x81\xd0\xb5\xd0\xb3\xd0\xbe\xd0\xb4\xd0"
	                    "\xbd\xd1\x8f\x20\xd1\x83\xd1\x82\xd1\x80\xd0\xbe\xd0\xbc";
	assert_int_equal(inspect_norm_skip((const uint8_t *)plain, strlen(plain), 0),
	                 strlen(plain));
	/* the look-alikes themselves, and letters that are not */
	assert_int_equal(inspect_norm_confusable(0x0410), 'A');
	assert_int_equal(inspect_norm_confusable(0x0411), 0);
	assert_int_equal(inspect_norm_confusable(0x0430), 'a');
	assert_int_equal(inspect_norm_confusable(0x03BF), 'o');
	assert_int_equal(inspect_norm_confusable(0x052F), 0);
	assert_int_equal(inspect_norm_confusable('A'), 0);
	assert_int_equal(inspect_norm_class(0x0410), INSPECT_NORM_KEEP);
	assert_int_equal(inspect_norm_word(0x0410), INSPECT_WORD_LOOKALIKE);
	assert_int_equal(inspect_norm_word(0x0411), INSPECT_WORD_SCRIPT);
	assert_int_equal(inspect_norm_word(0xFF41), INSPECT_WORD_LATIN);
	assert_int_equal(inspect_norm_word(0x200B), INSPECT_WORD_JOIN);
	assert_int_equal(inspect_norm_word(0x00E9), INSPECT_WORD_BREAK);
	/* Armenian (U+0530..U+058F) shares the lead byte D4 with the end of Cyrillic: it is no
	 * Greek or Cyrillic letter, so it ends a word (fuzz_inspect found it read past the table
	 * of look-alikes) */
	static const char arm[] = "a\xd4\xb1" CY_a "b1 \xd4\xbf\xd5\xa1" CY_e "x9";
	size_t an = sizeof(arm) - 1;
	inspect_norm_wordinfo wi;
	inspect_norm_word_at((const uint8_t *)arm, an, 0, 0, &wi);
	assert_int_equal(wi.end, 1);
	inspect_norm_word_at((const uint8_t *)arm, an, 0, 3, &wi);
	assert_int_equal(wi.start, 3);
	assert_int_equal(wi.end, 7);
	assert_true(wi.latin && wi.lookalike);
	inspect_norm_word_at((const uint8_t *)arm, an, 0, 8, &wi);
	assert_int_equal(wi.end, 8);
	assert_int_equal(inspect_norm_word(0x0531), INSPECT_WORD_BREAK);
	assert_int_equal(inspect_norm_word(0x053F), INSPECT_WORD_BREAK);
	inspect_summary asum;
	char *ar = ti_redact(&p, arm, an, &asum);
	assert_string_equal(ar, arm);
	free(ar);
	/* quote marks and dashes the view keeps are in no word (a stream takes no look there) */
	assert_int_equal(inspect_norm_word(0x00AB), INSPECT_WORD_BREAK);
	assert_int_equal(inspect_norm_word(0x2014), INSPECT_WORD_BREAK);
}

/* Random text of Latin, Cyrillic and Greek look-alikes, digits, word punctuation, spaces and
 * characters the view changes, with values written in look-alikes here and there, streamed in
 * random 1..7-byte fragments: the stream releases exactly what block redaction gives (a word's
 * look-alikes are decided the same way however the text is split). */
static void test_script_random_splits(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const char *const atoms[] = {
		"a",
		"K",
		"n",
		"1",
		"7",
		".",
		"@",
		"-",
		" ",
		" ",
		CY_A,
		CY_K,
		CY_I,
		CY_a,
		CY_e,
		CY_o,
		CY_s,
		GR_B,
		GR_E,
		ZWSP,
		NBSP,
		FW_AT,
		MB1,
		"\xd0\x91" /* Б */,
		"\xc3\xa9" /* é */,
		"\xc2\xab" /* « */,
		"\xe2\x80\x94" /* — */,
		CIR1,
		SUP1,
		"j" CY_a "ne@ex" CY_a "mple.com",
		CY_A CY_K CY_I CY_A "IOSFODNN7EXAMPLE",
		GR_B GR_E "71 0961 2345 6769",
	};
	uint32_t seed = 0x5c1a7e5u;
	char t[2048];
	for (int round = 0; round < 300; round++) {
		size_t n = 0;
		size_t parts = 1 + ti_rand(&seed) % 60;
		for (size_t k = 0; k < parts; k++) {
			const char *a = atoms[ti_rand(&seed) % CUSTOS_ARRAY_LEN(atoms)];
			size_t l = strlen(a);
			if (n + l >= sizeof(t))
				break;
			memcpy(t + n, a, l);
			n += l;
		}
		t[n] = '\0';
		inspect_summary bs, ss;
		char *want = ti_redact(&p, t, n, &bs);
		for (unsigned isa = 1; isa <= 3; isa++) { /* each code path of the search */
			inspect_norm_isa = isa;
			char *got = ti_redact(&p, t, n, &ss);
			assert_string_equal(got, want);
			free(got);
		}
		inspect_norm_isa = 0;
		for (int run = 0; run < 4; run++) {
			size_t sizes[64];
			for (size_t k = 0; k < 64; k++)
				sizes[k] = 1 + ti_rand(&seed) % 7;
			char *got = ti_stream(&p, t, n, sizes, 64, &ss);
			if (strcmp(got, want) != 0)
				fprintf(stderr, "round %d:\n  text %s\n  want %s\n  got  %s\n",
				        round, t, want, got);
			assert_string_equal(got, want);
			assert_int_equal(ss.total, bs.total);
			free(got);
		}
		free(want);
	}
}

/* The character classes at their edges, and every decimal digit of every script mapped. */
static void test_norm_classes(void **state)
{
	(void)state;
	static const uint32_t zeros[] = {
		0x0660,  0x06F0,  0x07C0,  0x0966,  0x09E6,  0x0A66,  0x0AE6,  0x0B66,  0x0BE6,
		0x0C66,  0x0CE6,  0x0D66,  0x0DE6,  0x0E50,  0x0ED0,  0x0F20,  0x1040,  0x1090,
		0x17E0,  0x1810,  0x1946,  0x19D0,  0x1A80,  0x1A90,  0x1B50,  0x1BB0,  0x1C40,
		0x1C50,  0xA620,  0xA8D0,  0xA900,  0xA9D0,  0xA9F0,  0xAA50,  0xABF0,  0xFF10,
		0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
		0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50,
		0x16A60, 0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140,
		0x1E2F0, 0x1E4F0, 0x1E950, 0x1FBF0,
	};
	assert_int_equal(inspect_norm_n_digit_blocks, CUSTOS_ARRAY_LEN(zeros));
	for (size_t b = 0; b < CUSTOS_ARRAY_LEN(zeros); b++)
		for (uint32_t d = 0; d < 10; d++)
			assert_int_equal(inspect_norm_class(zeros[b] + d), '0' + (int)d);
	static const struct {
		uint32_t cp;
		int want;
	} edges[] = {
		{ 'a', INSPECT_NORM_KEEP },
		{ 0x00A0, ' ' },
		{ 0x00AD, INSPECT_NORM_DROP },
		{ 0x00B2, '2' }, /* superscript two */
		{ 0x00B7, '.' },
		{ 0x00B8, INSPECT_NORM_KEEP },
		{ 0x0300, INSPECT_NORM_DROP },
		{ 0x036F, INSPECT_NORM_DROP },
		{ 0x0370, INSPECT_NORM_KEEP },
		{ 0x065F, INSPECT_NORM_KEEP },
		{ 0x066A, INSPECT_NORM_KEEP },
		{ 0x19DA, INSPECT_NORM_KEEP }, /* No, not Nd */
		{ 0x1FFF, INSPECT_NORM_KEEP },
		{ 0x2000, ' ' },
		{ 0x200A, ' ' },
		{ 0x200B, INSPECT_NORM_DROP },
		{ 0x200F, INSPECT_NORM_DROP },
		{ 0x2010, '-' },
		{ 0x2013, '-' },
		{ 0x2014, INSPECT_NORM_KEEP },
		{ 0x2029, INSPECT_NORM_KEEP },
		{ 0x202A, INSPECT_NORM_DROP },
		{ 0x202F, ' ' },
		{ 0x205F, ' ' },
		{ 0x2060, INSPECT_NORM_DROP },
		{ 0x206F, INSPECT_NORM_DROP },
		{ 0x2070, '0' },
		{ 0x2072, INSPECT_NORM_KEEP },
		{ 0x2089, '9' },
		{ 0x2094, INSPECT_NORM_KEEP },
		{ 0x209C, 't' },
		{ 0x210B, 'H' },
		{ 0x210D, 'H' },
		{ 0x210F, INSPECT_NORM_KEEP },
		{ 0x211D, 'R' },
		{ 0x24B5, 'z' },
		{ 0x24CF, 'Z' },
		{ 0x24EA, '0' },
		{ 0x2792, '9' },
		{ 0x20E3, INSPECT_NORM_DROP },
		{ 0x2212, '-' },
		{ 0x2460, '1' }, /* circled one */
		{ 0x3000, ' ' },
		{ 0xFE0F, INSPECT_NORM_DROP },
		{ 0xFEFF, INSPECT_NORM_DROP },
		{ 0xFF00, INSPECT_NORM_KEEP },
		{ 0xFF01, '!' },
		{ 0xFF20, '@' },
		{ 0xFF5E, '~' },
		{ 0xFF5F, INSPECT_NORM_KEEP },
		{ 0xE0001, INSPECT_NORM_DROP },
		{ 0xE0020, ' ' },
		{ 0xE0041, 'A' },
		{ 0xE007E, '~' },
		{ 0xE007F, INSPECT_NORM_DROP },
		{ 0xE0100, INSPECT_NORM_DROP },
		{ 0xE01EF, INSPECT_NORM_DROP },
		{ 0xE01F0, INSPECT_NORM_KEEP },
		{ 0x1D400, 'A' },
		{ 0x1D433, 'z' },
		{ 0x1D6A3, 'z' },
		{ 0x1D6A5, 'j' },
		{ 0x1D6A8, INSPECT_NORM_KEEP }, /* bold capital alpha */
		{ 0x1F10C, '0' },
		{ 0x1F189, 'Z' },
		{ 0x1F1E6, INSPECT_NORM_KEEP }, /* regional indicator A */
		{ 0x1F600, INSPECT_NORM_KEEP },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(edges); i++) {
		if (inspect_norm_class(edges[i].cp) != edges[i].want)
			fprintf(stderr, "U+%04X: %d, want %d\n", (unsigned)edges[i].cp,
			        inspect_norm_class(edges[i].cp), edges[i].want);
		assert_int_equal(inspect_norm_class(edges[i].cp), edges[i].want);
	}
	/* characters that stand for several ASCII characters */
	static const struct {
		uint32_t cp;
		const char *want;
	} multi[] = {
		{ 0x00BC, "1/4" },  { 0x00BD, "1/2" }, { 0x2152, "1/10" }, { 0x2469, "10" },
		{ 0x2473, "20" },   { 0x247D, "10" },  { 0x2487, "20" },   { 0x249B, "20" },
		{ 0x24EB, "11" },   { 0x24FE, "10" },  { 0x2793, "10" },   { 0x3251, "21" },
		{ 0x32BF, "50" },   { 0xFB00, "ff" },  { 0xFB01, "fi" },   { 0xFB03, "ffi" },
		{ 0x2167, "VIII" }, { 0x217B, "xii" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(multi); i++) {
		const uint8_t *b = NULL;
		int c = inspect_norm_class(multi[i].cp);
		size_t n = inspect_norm_multi(c, &b);
		assert_true(c >= INSPECT_NORM_MULTI);
		assert_int_equal(n, strlen(multi[i].want));
		assert_memory_equal(b, multi[i].want, n);
		assert_int_equal(inspect_norm_word(multi[i].cp), INSPECT_WORD_LATIN);
	}
	assert_int_equal(inspect_norm_class(0x2474), '1'); /* parenthesised one: one digit */
	assert_int_equal(inspect_norm_class(0x2488), '1');
	assert_int_equal(inspect_norm_class(0x3250), INSPECT_NORM_KEEP); /* PTE sign */
	assert_int_equal(inspect_norm_class(0xFB07), INSPECT_NORM_KEEP);
	assert_int_equal(inspect_norm_multi('a', &(const uint8_t *){ NULL }), 0);
	/* the lead table covers every character the view changes */
	for (uint32_t cp = 0x80; cp <= 0x10FFFF; cp++) {
		if (cp >= 0xD800 && cp <= 0xDFFF)
			continue;
		uint8_t lead = cp < 0x800     ? (uint8_t)(0xC0 | cp >> 6)
		               : cp < 0x10000 ? (uint8_t)(0xE0 | cp >> 12)
		                              : (uint8_t)(0xF0 | cp >> 18);
		if (inspect_norm_class(cp) != INSPECT_NORM_KEEP && !inspect_norm_lead[lead]) {
			fprintf(stderr, "U+%04X changes but lead %02x is not marked\n",
			        (unsigned)cp, lead);
			fail();
		}
	}
	/* the vector search agrees with inspect_norm_stop (a lead byte, or a Greek or Cyrillic
	 * character next to an ASCII byte of a word): every byte value at every position of
	 * texts of 1..140 bytes, in ASCII, Latin, Cyrillic and mixed surroundings, with each
	 * vector path (AVX2, SSSE3 at every third length: lowered to what the CPU has; plain C
	 * below) */
	uint8_t t[160];
	for (unsigned isa = 2; isa <= 3; isa++) {
		inspect_norm_isa = isa;
		for (int fill = 0; fill < 4; fill++) {
			for (size_t len = 1; len <= 140; len += isa == 3 ? 1 : 3) {
				for (size_t k = 0; k < len; k++)
					t[k] = fill == 0   ? (uint8_t)('a' + k % 26)
					       : fill == 1 ? (k % 2 ? 0xA9 : 0xC3)
					       : fill == 2 ? (k % 2 ? 0xB0 : 0xD0)
					                   : (k % 5 == 4 ? ' '
					                      : k % 2    ? 0x80
					                                 : 0xD1);
				for (unsigned b = 0; b < 256; b++) {
					for (size_t at = 0; at < len; at += 1 + at / 8) {
						uint8_t keep = t[at];
						t[at] = (uint8_t)b;
						size_t want = len;
						for (size_t k = 0; k < len && want == len; k++)
							if (inspect_norm_stop(t, len, k))
								want = k;
						assert_int_equal(inspect_norm_skip(t, len, 0),
						                 want);
						t[at] = keep;
					}
				}
			}
		}
	}
	/* and at every position around the 64-byte windows (each decides bytes 2..60 of its 64,
	 * and steps by 59 or by 62), in Cyrillic and mixed fills, with an ASCII word byte or '.'
	 * next to it, from every start offset of the first 70 */
	static const size_t lens[] = { 64, 65, 66, 67, 129, 131 };
	for (unsigned isa = 2; isa <= 3; isa++) {
		inspect_norm_isa = isa;
		for (int fill = 2; fill < 4; fill++) {
			for (size_t li = 0; li < CUSTOS_ARRAY_LEN(lens); li++) {
				size_t len = lens[li];
				for (size_t k = 0; k < len; k++)
					t[k] = fill == 2 ? (k % 2 ? 0xB0 : 0xD0)
					                 : (k % 5 == 4 ? '.'
					                    : k % 2    ? 0x80
					                               : 0xD1);
				for (unsigned b = 0; b < 256; b += (b < 0x80 ? 1 : 7)) {
					for (size_t at = 0; at < len; at++) {
						uint8_t keep = t[at];
						t[at] = (uint8_t)b;
						size_t want = len;
						for (size_t from = len; from-- > 0;) {
							if (inspect_norm_stop(t, len, from))
								want = from;
							if (from < 70 &&
							    (from % 7 == 0 || at - from < 4))
								assert_int_equal(
								        inspect_norm_skip(t, len,
								                          from),
								        want);
						}
						assert_int_equal(inspect_norm_skip(t, len, 0),
						                 want);
						t[at] = keep;
					}
				}
			}
		}
	}
	/* random mixed texts (ASCII word bytes, '.', '-', spaces, Cyrillic and Greek letters,
	 * characters the view changes or keeps, stray bytes) of up to 400 bytes: every stop from
	 * every start, with each code path, is the first offset where inspect_norm_stop holds */
	static const char *const bits[] = { "a",        "Z",        "7",
		                            ".",        "-",        "_",
		                            "@",        " ",        ",",
		                            "\xd0\xb0", "\xd0\x91", "\xce\xbf",
		                            "\xcf\x80", "\xc2\xab", "\xe2\x80\x94",
		                            "\xc2\xa0", "\xc3\xa9", "\xe4\xb8\xad",
		                            "\x80",     "\xd0" };
	uint32_t seed = 0x6b1d5u;
	size_t next[400];
	uint8_t r[400];
	for (int round = 0; round < 250; round++) {
		size_t len = 0, parts = ti_rand(&seed) % 200;
		for (size_t k = 0; k < parts; k++) {
			const char *a = bits[ti_rand(&seed) % CUSTOS_ARRAY_LEN(bits)];
			size_t l = strlen(a);
			if (len + l > sizeof(r))
				break;
			memcpy(r + len, a, l);
			len += l;
		}
		size_t want = len;
		for (size_t from = len; from-- > 0;) {
			if (inspect_norm_stop(r, len, from))
				want = from;
			next[from] = want;
		}
		for (unsigned isa = 1; isa <= 3; isa++) {
			inspect_norm_isa = isa;
			for (size_t from = 0; from < len; from += isa == 1 ? 5 : 1)
				assert_int_equal(inspect_norm_skip(r, len, from), next[from]);
			assert_int_equal(inspect_norm_skip(r, len, len), len);
		}
	}
	inspect_norm_isa = 0;
	/* the decoder refuses what is not UTF-8, and says when the end cuts a sequence */
	uint32_t cp;
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xc0\xaf", 2, &cp), 0);
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xe0\x80\x80", 3, &cp), 0);
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xed\xa0\x80", 3, &cp), 0);
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xf4\x90\x80\x80", 4, &cp), 0);
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xe2\x80", 2, &cp),
	                 INSPECT_NORM_SHORT);
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xed\xa0", 2, &cp), 0);
	assert_int_equal(inspect_norm_decode((const uint8_t *)"\xf0\x9d\x9f\x8f", 4, &cp), 4);
	assert_int_equal(cp, 0x1D7CF);
}

/* A custom pattern that ends inside a multi-byte character (its first byte): the finding is
 * widened to the whole character, so the mask never leaves half a UTF-8 sequence behind. */
static void test_mask_whole_characters(void **state)
{
	(void)state;
	static const char *const pats[] = { "ID-[0-9]{2}\\xe6" };
	inspect_custom_def d = { .name = "part", .patterns = pats, .n_patterns = 1 };
	inspect_engine_opts o = { .custom = &d, .n_custom = 1 };
	inspect_engine *e;
	inspect_scratch *s;
	assert_int_equal(inspect_engine_new(&o, &e), CUSTOS_OK);
	assert_int_equal(inspect_scratch_new(e, &s), CUSTOS_OK);
	inspect_profile p = { 0 };
	inspect_profile_set(&p, INSPECT_BUILTIN_COUNT, INSPECT_ACT_REDACT);
	const char *t = "x ID-42\xe6\x9d\xb1\xe4\xba\xac y";
	const char *want = "x [REDACTED:PART]\xe4\xba\xac y";
	buf out;
	buf_init(&out, 4096);
	assert_int_equal(inspect_redact_text(e, s, &p, span_cstr(t), &out, NULL), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&out), want));
	size_t n = strlen(t);
	for (size_t k = 1; k < n; k++) {
		inspect_stream *st;
		assert_int_equal(inspect_stream_new(e, &p, &st), CUSTOS_OK);
		buf_reset(&out);
		assert_int_equal(inspect_stream_feed(st, s, span_of(t, k), &out), CUSTOS_OK);
		assert_int_equal(inspect_stream_feed(st, s, span_of(t + k, n - k), &out),
		                 CUSTOS_OK);
		assert_int_equal(inspect_stream_finish(st, s, &out), CUSTOS_OK);
		assert_true(span_eq_cstr(buf_span(&out), want));
		inspect_stream_free(st);
	}
	inspect_findings f = { 0 };
	assert_int_equal(inspect_scan(e, s, &p, span_cstr(t), &f), CUSTOS_OK);
	assert_int_equal(f.n, 1);
	assert_int_equal(f.items[0].offset, 2);
	assert_int_equal(f.items[0].length, 8);
	inspect_findings_free(&f);
	buf_free(&out);
	inspect_scratch_free(s);
	inspect_engine_free(e);
}

/* JSON bodies: the same characters as raw UTF-8 or as \uXXXX escapes (surrogate pairs too)
 * are found; the escapes a mask covers are replaced whole, the ones next to it kept; the body
 * stays valid JSON. */
static void test_json_obfuscated(void **state)
{
	(void)state;
	inspect_profile p = ti_profile(INSPECT_ACT_REDACT);
	static const struct {
		const char *body, *want;
	} cases[] = {
		{ "{\"messages\":[{\"role\":\"user\",\"content\":\"card 4111" NBSP "1111" NBSP
		  "1111" NBSP "1111 ok\"}]}",
		  "{\"messages\":[{\"role\":\"user\",\"content\":\"card [REDACTED:PAYMENT_CARD] "
		  "ok\"}]}" },
		{ "{\"content\":\"card 4111\\u00a01111\\u202f1111\\u20071111 ok\"}",
		  "{\"content\":\"card [REDACTED:PAYMENT_CARD] ok\"}" },
		{ "{\"content\":\"card \\uff14\\uff11\\uff11\\uff11 \\uff11\\uff11\\uff11\\uff11 "
		  "\\uff11\\uff11\\uff11\\uff11 \\uff11\\uff11\\uff11\\uff11\\u200b ok\"}",
		  "{\"content\":\"card [REDACTED:PAYMENT_CARD]\\u200b ok\"}" },
		{ "{\"content\":\"4\\u200b1\\u200c1\\u200d1\\u20601\\ufeff1\\u00ad1111111111 x\"}",
		  "{\"content\":\"[REDACTED:PAYMENT_CARD] x\"}" },
		{ "{\"content\":\"mail jane\\uff20example\\uff0ecom\"}",
		  "{\"content\":\"mail [REDACTED:EMAIL]\"}" },
		{ "{\"content\":\"\\ud835\\udfd2\\ud835\\udfcf\\ud835\\udfcf\\ud835\\udfcf"
		  "111111111111 \\ud835\\udfcf\"}",
		  "{\"content\":\"[REDACTED:PAYMENT_CARD] \\ud835\\udfcf\"}" },
		{ "{\"content\":\"id \\u0410\\u041a\\u0406\\u0410IOSFODNN7EXAMPLE\"}",
		  "{\"content\":\"id [REDACTED:AWS_ACCESS_KEY]\"}" },
		{ "{\"content\":\"card \\u2074\\u00b9\\u00b9\\u00b9 1111 1111 \\u2460111 x\"}",
		  "{\"content\":\"card [REDACTED:PAYMENT_CARD] x\"}" },
		{ "{\"content\":\"ssn 123\\u201145\\u20116789\"}",
		  "{\"content\":\"ssn [REDACTED:US_SSN]\"}" },
		/* characters that stand for two, escaped and raw; a fraction beside a value kept */
		{ "{\"content\":\"\\u00bd cup, card 4111 1111 1111 11\\u246a x\"}",
		  "{\"content\":\"\\u00bd cup, card [REDACTED:PAYMENT_CARD] x\"}" },
		{ "{\"content\":\"mail con" LIG_FI "g@example.com\"}",
		  "{\"content\":\"mail [REDACTED:EMAIL]\"}" },
		/* invisible characters changing kind ten times in a row */
		{ "{\"content\":\"4\\u200b\\u200c\\u200b\\u200c\\u200b\\u200c\\u200b\\u200c\\u200b"
		  "\\u200c111 1111 1111 1111 x\"}",
		  "{\"content\":\"[REDACTED:PAYMENT_CARD] x\"}" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		buf out;
		buf_init(&out, 1u << 20);
		inspect_summary sum;
		assert_true(ti_json_ok(cases[i].body));
		assert_int_equal(
		        inspect_json_redact(E, S, &p, span_cstr(cases[i].body), &out, &sum),
		        CUSTOS_OK);
		char *r = ti_dup(&out);
		if (strcmp(r, cases[i].want) != 0)
			fprintf(stderr, "case %zu: %s\n", i, r);
		assert_string_equal(r, cases[i].want);
		assert_true(ti_json_ok(r));
		assert_true(utf8_ok((const uint8_t *)r, strlen(r)));
		assert_int_equal(sum.total, 1);
		free(r);
		buf_free(&out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_obfuscated_found),
		cmocka_unit_test(test_obfuscated_split_every_offset),
		cmocka_unit_test(test_not_normalised),
		cmocka_unit_test(test_invisible_mixed),
		cmocka_unit_test(test_invisible_repeated),
		cmocka_unit_test(test_million_invisible),
		cmocka_unit_test(test_script_prose),
		cmocka_unit_test(test_script_random_splits),
		cmocka_unit_test(test_norm_classes),
		cmocka_unit_test(test_mask_whole_characters),
		cmocka_unit_test(test_json_obfuscated),
	};
	return cmocka_run_group_tests(tests, ti_setup, ti_teardown);
}
