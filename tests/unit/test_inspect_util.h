/*
 * Helpers shared by the inspection unit tests: one engine with every built-in and a few custom
 * detectors, block and fragment-wise redaction, a deterministic PRNG for fragment sizes, and an
 * independent JSON validity check (not the module's own parser).
 */
#ifndef TEST_INSPECT_UTIL_H
#define TEST_INSPECT_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <custos/inspect.h>

#define TI_UNUSED __attribute__((unused))

static inspect_engine *E;
static inspect_scratch *S;

enum {
	ID_EMPLOYEE = INSPECT_BUILTIN_COUNT,
	ID_CODENAME,
	ID_INTERNAL_CARD,
	ID_CREDITOR_REF,
	ID_STAFF,
	ID_TICKET
};

static const char *const employee_pats[] = { "EMP-[0-9]{6}" };
static const char *const codename_kws[] = { "Project Falcon", "bluebird" };
static const char *const internal_card_pats[] = { "\\b9[0-9]{15}\\b" };
static const char *const creditor_pats[] = { "\\bRF[0-9]{2}[A-Z0-9]{4,21}\\b" };
static const char *const staff_pats[] = { "\\bSID-[0-9]{6}\\b" };
static const char *const staff_kws[] = { "employee", "staff" };
static const char *const ticket_pats[] = { "\\bTKT-[A-Z0-9]+" }; /* unbounded */

static TI_UNUSED int ti_setup(void **state)
{
	(void)state;
	static const inspect_custom_def custom[] = {
		{ .name = "employee_id", .patterns = employee_pats, .n_patterns = 1 },
		{ .name = "codename", .keywords = codename_kws, .n_keywords = 2 },
		{ .name = "internal_card",
		  .patterns = internal_card_pats,
		  .n_patterns = 1,
		  .validator = INSPECT_VALIDATE_LUHN },
		{ .name = "creditor_ref",
		  .patterns = creditor_pats,
		  .n_patterns = 1,
		  .validator = INSPECT_VALIDATE_MOD97 },
		{ .name = "staff_id",
		  .patterns = staff_pats,
		  .n_patterns = 1,
		  .keywords = staff_kws,
		  .n_keywords = 2 },
		{ .name = "ticket", .patterns = ticket_pats, .n_patterns = 1 },
	};
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL,
		                  .custom = custom,
		                  .n_custom = CUSTOS_ARRAY_LEN(custom) };
	if (inspect_engine_new(&o, &E) != CUSTOS_OK) {
		fprintf(stderr, "engine: %s\n", err_msg());
		return -1;
	}
	if (inspect_scratch_new(E, &S) != CUSTOS_OK)
		return -1;
	return 0;
}

static TI_UNUSED int ti_teardown(void **state)
{
	(void)state;
	inspect_scratch_free(S);
	inspect_engine_free(E);
	return 0;
}

static TI_UNUSED inspect_profile ti_profile(inspect_action a)
{
	inspect_profile p = { 0 };
	for (unsigned i = 0; i < inspect_engine_detector_count(E); i++)
		p.action[i] = (uint8_t)a;
	return p;
}

/* NUL-terminated malloc'd copy of a buffer's bytes (span_dup goes through strndup, which
 * ASan's strict_string_checks flags on bytes that are not NUL-terminated). */
static TI_UNUSED char *ti_dup(const buf *b)
{
	char *r = malloc(buf_used(b) + 1);
	assert_non_null(r);
	if (buf_used(b) > 0)
		memcpy(r, buf_ptr(b), buf_used(b));
	r[buf_used(b)] = '\0';
	return r;
}

/* Block redaction of text with profile p; returns a malloc'd NUL-terminated result. */
static TI_UNUSED char *ti_redact(const inspect_profile *p, const char *text, size_t n,
                                 inspect_summary *sum)
{
	buf out;
	buf_init(&out, 1u << 26);
	assert_int_equal(inspect_redact_text(E, S, p, span_of(text, n), &out, sum), CUSTOS_OK);
	char *r = ti_dup(&out);
	buf_free(&out);
	return r;
}

/* Streams text in fragments whose sizes come from sizes[] (cycled); returns the released text,
 * malloc'd. Checks that each release cuts on a UTF-8 boundary. */
static TI_UNUSED char *ti_stream(const inspect_profile *p, const char *text, size_t n,
                                 const size_t *sizes, size_t n_sizes, inspect_summary *sum)
{
	inspect_stream *st;
	assert_int_equal(inspect_stream_new(E, p, &st), CUSTOS_OK);
	buf out;
	buf_init(&out, 1u << 26);
	size_t at = 0, k = 0;
	while (at < n) {
		size_t len = sizes[k++ % n_sizes];
		if (len > n - at)
			len = n - at;
		size_t before = buf_used(&out);
		assert_int_equal(inspect_stream_feed(st, S, span_of(text + at, len), &out),
		                 CUSTOS_OK);
		if (buf_used(&out) > before) {
			/* released text never ends inside a multi-byte character */
			const uint8_t *o = buf_ptr(&out);
			size_t e = buf_used(&out), i = e;
			while (i > before && (o[i - 1] & 0xC0) == 0x80)
				i--;
			if (i > before && o[i - 1] >= 0xC0) {
				unsigned need = o[i - 1] >= 0xF0 ? 4 : o[i - 1] >= 0xE0 ? 3 : 2;
				assert_true(e - (i - 1) >= need);
			}
		}
		at += len;
	}
	assert_int_equal(inspect_stream_finish(st, S, &out), CUSTOS_OK);
	if (sum != NULL)
		*sum = *inspect_stream_summary(st);
	inspect_stream_free(st);
	char *r = ti_dup(&out);
	buf_free(&out);
	return r;
}

/* xorshift PRNG: fragment sizes like a model's output (1..4 bytes). */
static TI_UNUSED uint32_t ti_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Independent JSON validity check (recursive descent; only what the tests need). */
static const char *tj_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	return p;
}
static const char *tj_value(const char *p, int depth);
static const char *tj_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p != '"') {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int k = 1; k <= 4; k++)
					if (!((p[k] >= '0' && p[k] <= '9') ||
					      (p[k] >= 'a' && p[k] <= 'f') ||
					      (p[k] >= 'A' && p[k] <= 'F')))
						return NULL;
				p += 4;
			} else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
				return NULL;
			}
		}
		p++;
	}
	return p + 1;
}
static const char *tj_value(const char *p, int depth)
{
	if (depth > 100)
		return NULL;
	p = tj_ws(p);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		bool obj = *p == '{';
		p = tj_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (obj) {
				p = tj_string(tj_ws(p));
				if (p == NULL)
					return NULL;
				p = tj_ws(p);
				if (*p++ != ':')
					return NULL;
			}
			p = tj_value(p, depth + 1);
			if (p == NULL)
				return NULL;
			p = tj_ws(p);
			if (*p == ',') {
				p++;
				continue;
			}
			return *p == close ? p + 1 : NULL;
		}
	}
	if (*p == '"')
		return tj_string(p);
	if (strncmp(p, "true", 4) == 0)
		return p + 4;
	if (strncmp(p, "false", 5) == 0)
		return p + 5;
	if (strncmp(p, "null", 4) == 0)
		return p + 4;
	const char *s = p;
	if (*p == '-')
		p++;
	while ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
	       *p == '-')
		p++;
	return p > s ? p : NULL;
}
static TI_UNUSED bool ti_json_ok(const char *doc)
{
	const char *p = tj_value(doc, 0);
	return p != NULL && *tj_ws(p) == '\0';
}

#endif /* TEST_INSPECT_UTIL_H */
