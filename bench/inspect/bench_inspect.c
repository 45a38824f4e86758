/*
 * bench/inspect: content-inspection throughput on one core. Three 1 MiB corpora (mixed: prose
 * with logs, JSON, code and tables, the reference; chat: mostly prose; logs: mostly log lines,
 * JSON and tables, a digit-dense stress case), a sensitive value every few KiB, scanned with every built-in detector: the Hyperscan database alone, the C scanner
 * alone, the full inspect_scan (validators, regions, overlap resolution), block redaction,
 * and PCRE2 with JIT: full regular expressions for the same detectors with the same
 * validators on their matches (the like-for-like comparison), the same without validation,
 * the engine's own short patterns (one pass each, and one alternation). Then the streaming
 * cost per SSE event and the JSON pass. All figures of one corpus come from one run, side by
 * side; each is the median of `reps` runs. Uses the private detector table
 * (policy/inspect_int.h) so PCRE2 gets exactly the patterns and validators the engine has.
 * Usage: bench_inspect [reps] [json-out]; bench_inspect profile mixed|chat|logs N (for perf).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inspect_int.h"

#define CORPUS_BYTES (1u << 20)
#define MAX_REPS     64

static uint32_t rng = 0x2545F491u;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

/* CPU time of this thread: per-core figures that other load on a shared machine does not
 * distort (it is what a proxy worker spends). */
static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wall clock (vDSO, cheap) for per-event latency percentiles. */
static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *const words[] = {
	"the",     "of",       "and",     "to",       "in",       "is",       "for",     "that",
	"with",    "on",       "as",      "are",      "this",     "be",       "by",      "from",
	"at",      "or",       "an",      "it",       "model",    "data",     "request", "policy",
	"server",  "customer", "account", "report",   "quarter",  "revenue",  "system",  "network",
	"deploy",  "config",   "user",    "team",     "analysis", "result",   "summary", "table",
	"value",   "error",    "latency", "budget",   "project",  "contract", "invoice", "payment",
	"process", "security", "review",  "update",   "release",  "version",  "feature", "support",
	"please",  "thanks",   "meeting", "tomorrow", "schedule", "question", "answer",  "include",
	"without", "between",  "however", "because",  "although", "number",   "address", "phone",
	"email",   "card",     "bank",    "transfer", "balance",
};

static const char *const values[] = {
	"jane.doe@example.org",
	"+44 20 7946 0958",
	"(415) 555-2671",
	"4111 1111 1111 1111",
	"5555555555554444",
	"DE89 3704 0044 0532 0130 00",
	"123-45-6789",
	"203.0.113.7",
	"2001:db8::ff00:42:8329",
	"AKIAIOSFODNN7EXAMPLE",
	"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	"ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
	"glpat-xR4nD0mT0k3nV4lu3xyz",
	"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
	"sk_live_4eC39HqLyjWDarjtT1zdp7dc",
	("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
	 "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
};

/* The same detectors written as full regular expressions, the way a regex-per-detector
 * scanner runs them (and how the engine's first version did), each with the engine's
 * validator for its matches: `match` uses the detector's whole-match validator (DET_MATCH row),
 * otherwise its region validator (DET_ANCHOR row) gets the match as the region. */
#define OCTET "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
static const struct full_regex {
	unsigned detector;
	bool match;
	const char *re;
} full_regexes[] = {
	{ INSPECT_EMAIL, false,
	  "\\b[A-Za-z0-9._%+\\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9\\-]{0,62}[A-Za-z0-9])?(?:\\.[A-Za-"
	  "z0-9](?:[A-Za-z0-9\\-]{0,62}[A-Za-z0-9])?){0,7}\\.[A-Za-z]{2,24}\\b" },
	{ INSPECT_PHONE, true, "\\+[1-9](?:[ .\\-()]{0,2}[0-9]){6,16}\\b" },
	{ INSPECT_PHONE, false,
	  "(?:\\b1[ .\\-]?)?(?:\\b[2-9][0-9]{2}|\\([2-9][0-9]{2}\\))[ .\\-]?[2-9][0-9]{2}[ "
	  ".\\-][0-9]{4}\\b" },
	{ INSPECT_PHONE, false,
	  "\\b0[1-9][0-9]{0,4}[ .\\-][0-9]{2,4}(?:[ .\\-]?[0-9]{2,4}){0,4}\\b" },
	{ INSPECT_PAYMENT_CARD, false, "\\b[2-6](?:[ \\-]?[0-9]){11,18}\\b" },
	{ INSPECT_IBAN, false, "\\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,28}\\b" },
	{ INSPECT_US_SSN, true, "\\b[0-9]{3}-[0-9]{2}-[0-9]{4}\\b" },
	{ INSPECT_US_SSN, false, "\\b[0-9]{3} [0-9]{2} [0-9]{4}\\b" },
	{ INSPECT_IPV4, false, "\\b(?:" OCTET "\\.){3}" OCTET "\\b" },
	{ INSPECT_IPV6, false, "\\b(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::?[0-9A-Fa-f]{1,4}){1,7})" },
	{ INSPECT_AWS_ACCESS_KEY, true, "\\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\\b" },
	{ INSPECT_AWS_SECRET_KEY, true,
	  "(?i:aws|secret[_\\- ]?access[_\\- ]?key)[^\\r\\n]{0,40}[^A-Za-z0-9/+][A-Za-z0-9/+]{40}"
	  "(?:[^A-Za-z0-9/+=]|$)" },
	{ INSPECT_GITHUB_TOKEN, false,
	  "\\bgh[pousr]_[A-Za-z0-9]{36,251}\\b|\\bgithub_pat_[A-Za-z0-9_]{22,255}\\b" },
	{ INSPECT_GITLAB_TOKEN, false, "\\bglpat-[A-Za-z0-9_\\-]{20,255}" },
	{ INSPECT_SLACK_TOKEN, false, "\\bxox[abposr]-[A-Za-z0-9\\-]{10,255}" },
	{ INSPECT_STRIPE_KEY, false, "\\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,247}\\b" },
	{ INSPECT_PRIVATE_KEY, false,
	  "-----BEGIN [A-Z ]{0,20}PRIVATE KEY(?: BLOCK)?-----[\\s\\S]{0,16384}?-----END [A-Z "
	  "]{0,20}PRIVATE KEY(?: BLOCK)?-----" },
	{ INSPECT_JWT, false,
	  "\\beyJ[A-Za-z0-9_\\-]{7,}\\.eyJ[A-Za-z0-9_\\-]{7,}\\.[A-Za-z0-9_\\-]*" },
};

/* The engine's validator for a full regex's matches. */
static det_validate_fn full_validator(const struct full_regex *f)
{
	for (size_t i = 0; i < det_builtin_n_specs; i++) {
		const det_spec *sp = &det_builtin_specs[i];
		if (sp->detector == f->detector && (sp->kind == DET_MATCH) == f->match &&
		    sp->validate != NULL)
			return sp->validate;
	}
	fprintf(stderr, "no validator for detector %u\n", f->detector);
	exit(1);
}

static void put(char *dst, size_t *n, size_t cap, const char *s)
{
	size_t l = strlen(s);
	if (*n + l > cap)
		l = cap - *n;
	memcpy(dst + *n, s, l);
	*n += l;
}

/* What a corpus is made of, in bytes per kind of piece. */
enum { K_PROSE, K_LOG, K_JSON, K_CODE, K_TABLE, K_VALUE, K_N };
static const char *const kind_names[K_N] = { "sentences", "log lines",  "JSON records",
	                                     "C code",    "table rows", "planted values" };
typedef struct corpus_mix {
	size_t bytes[K_N];
} corpus_mix;

/* Sentences for `prose` of 20 pieces, the rest split between log lines, JSON, code and table
 * rows; one sensitive value every 2..6 KiB. Fixed seed: the same corpus every run. */
static char *make_corpus(size_t size, unsigned prose, size_t *values_out, corpus_mix *mix)
{
	char *b = malloc(size);
	size_t n = 0, next_value = 2048, nv = 0;
	corpus_mix local;
	if (mix == NULL)
		mix = &local;
	memset(mix, 0, sizeof(*mix));
	unsigned rest = 20 - prose;
	char tmp[256];
	while (n < size) {
		unsigned kind = rnd() % 20, k;
		size_t n0 = n;
		if (kind < prose) {
			k = K_PROSE;
			unsigned len = 8 + rnd() % 14;
			for (unsigned i = 0; i < len && n < size; i++) {
				const char *w = words[rnd() % (sizeof(words) / sizeof(words[0]))];
				if (i == 0) {
					snprintf(tmp, sizeof(tmp), "%c%s", w[0] - 32, w + 1);
					put(b, &n, size, tmp);
				} else {
					put(b, &n, size, " ");
					put(b, &n, size, w);
				}
				if (rnd() % 11 == 0) {
					snprintf(tmp, sizeof(tmp), " %u", rnd() % 100000);
					put(b, &n, size, tmp);
				}
			}
			put(b, &n, size, rnd() % 5 ? ". " : ".\n");
		} else if (kind < prose + rest * 2 / 7) {
			k = K_LOG;
			snprintf(tmp, sizeof(tmp),
			         "2026-11-%02uT%02u:%02u:%02uZ INFO req=%08x took %u ms status=%u "
			         "v%u.%u.%u\n",
			         1 + rnd() % 28, rnd() % 24, rnd() % 60, rnd() % 60, rnd(),
			         rnd() % 900, 200 + rnd() % 300, rnd() % 9, rnd() % 30,
			         rnd() % 100);
			put(b, &n, size, tmp);
		} else if (kind < prose + rest * 4 / 7) {
			k = K_JSON;
			snprintf(
			        tmp, sizeof(tmp),
			        "{\"id\": %u, \"name\": \"item-%u\", \"price\": %u.%02u, \"tags\": "
			        "[\"a\", \"b\"], \"ok\": true}\n",
			        rnd() % 100000, rnd() % 1000, rnd() % 1000, rnd() % 100);
			put(b, &n, size, tmp);
		} else if (kind < prose + rest * 6 / 7) {
			k = K_CODE;
			put(b, &n, size,
			    "for (size_t i = 0; i < n; i++) { sum += a[i] * 0x5bd1e995; if (sum > "
			    "limit) break; }\n");
		} else {
			k = K_TABLE;
			snprintf(tmp, sizeof(tmp), "| %u | %u.%u%% | %u,%03u | %08X |\n",
			         rnd() % 5000, rnd() % 100, rnd() % 10, rnd() % 999, rnd() % 1000,
			         rnd());
			put(b, &n, size, tmp);
		}
		mix->bytes[k] += n - n0;
		if (n >= next_value && n < size) {
			n0 = n;
			put(b, &n, size, " Note: ");
			put(b, &n, size, values[nv++ % (sizeof(values) / sizeof(values[0]))]);
			put(b, &n, size, " end.\n");
			mix->bytes[K_VALUE] += n - n0;
			next_value = n + 2048 + rnd() % 4096;
		}
	}
	*values_out = nv;
	return b;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[n / 2];
}

static unsigned long long hs_count;
static int count_cb(unsigned int id, unsigned long long from, unsigned long long to,
                    unsigned int flags, void *ctx)
{
	(void)id;
	(void)from;
	(void)to;
	(void)flags;
	(void)ctx;
	hs_count++;
	return 0;
}

typedef struct result {
	char name[96];
	double mbps;
	double seconds;
	unsigned long long matches;
} result;

static FILE *jsonf;
static void report(const result *r)
{
	printf("  %-58s %8.1f MB/s %8.3f ms %6llu matches\n", r->name, r->mbps, r->seconds * 1e3,
	       r->matches);
	if (jsonf)
		fprintf(jsonf,
		        "{\"bench\":\"inspect\",\"case\":\"%s\",\"mb_per_s\":%.1f,\"ms\":%.3f,"
		        "\"matches\":%llu}\n",
		        r->name, r->mbps, r->seconds * 1e3, r->matches);
}

typedef struct pcre_set {
	pcre2_code *codes[64];
	det_validate_fn validate[64]; /* NULL: matching only */
	size_t n;
	const char *label;
} pcre_set;

static void pcre_set_add(pcre_set *ps, const char *pattern, det_validate_fn validate)
{
	int ec;
	PCRE2_SIZE eo;
	pcre2_code *c =
	        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
	if (c == NULL || pcre2_jit_compile(c, PCRE2_JIT_COMPLETE) != 0 || ps->n == 64) {
		fprintf(stderr, "pcre2: does not compile: %s\n", pattern);
		exit(1);
	}
	ps->validate[ps->n] = validate;
	ps->codes[ps->n++] = c;
}

/* Every leftmost match of every pattern, one pass per pattern; with validators, each match
 * is validated as the engine validates its candidates (bytes around it included) and the
 * accepted findings are counted. */
static result run_pcre(const pcre_set *ps, const char *label, span text, int reps)
{
	double t[MAX_REPS], mb = (double)text.len / 1e6;
	pcre2_match_data *md = pcre2_match_data_create(1, NULL);
	const uint8_t *p = (const uint8_t *)text.ptr;
	result r = { .mbps = 0 };
	snprintf(r.name, sizeof(r.name), "%s: %s", label, ps->label);
	for (int i = 0; i < reps; i++) {
		unsigned long long m = 0;
		double t0 = now_s();
		for (size_t k = 0; k < ps->n; k++) {
			PCRE2_SIZE at = 0;
			while (at < text.len) {
				int rc = pcre2_jit_match(ps->codes[k], (PCRE2_SPTR)text.ptr,
				                         text.len, at, 0, md, NULL);
				if (rc < 0)
					break;
				PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
				if (ps->validate[k] == NULL) {
					m++;
				} else if (ov[1] > ov[0]) {
					det_hit hits[DET_MAX_HITS];
					int prev = ov[0] > 0 ? p[ov[0] - 1] : -1;
					int next = ov[1] < text.len ? p[ov[1]] : -1;
					m += ps->validate[k](p + ov[0], ov[1] - ov[0], prev, next,
					                     hits);
				}
				at = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
			}
		}
		t[i] = now_s() - t0;
		r.matches = m;
	}
	pcre2_match_data_free(md);
	r.seconds = median(t, reps);
	r.mbps = mb / r.seconds;
	return r;
}

static custos_err scan_count(void *ctx, unsigned anchor, uint64_t from, uint64_t to)
{
	(void)anchor;
	(void)from;
	(void)to;
	(*(unsigned long long *)ctx)++;
	return CUSTOS_OK;
}

/* What the corpus is made of: pieces by kind, bytes by class. */
static void describe_corpus(const char *label, span text, size_t nvalues, const corpus_mix *mix)
{
	size_t letters = 0, digits = 0, space = 0, punct = 0, other = 0, runs = 0, long_runs = 0;
	size_t run = 0;
	for (size_t i = 0; i < text.len; i++) {
		uint8_t c = (uint8_t)text.ptr[i];
		bool d = c >= '0' && c <= '9';
		if (d)
			digits++;
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
			letters++;
		else if (c == ' ' || c == '\n')
			space++;
		else if (c > ' ' && c < 0x7f)
			punct++;
		else
			other++;
		if (d) {
			run++;
		} else if (run > 0) {
			runs++;
			long_runs += run >= 4;
			run = 0;
		}
	}
	double n = (double)text.len / 100.0;
	printf("%s corpus: %zu bytes, %zu sensitive values planted\n", label, text.len, nvalues);
	printf("  pieces by bytes:");
	for (unsigned k = 0; k < K_N; k++)
		printf(" %s %.1f%%%s", kind_names[k], (double)mix->bytes[k] / n,
		       k + 1 < K_N ? "," : "\n");
	printf("  bytes: letters %.1f%%, digits %.1f%%, space/newline %.1f%%, punctuation %.1f%%, "
	       "other %.1f%%; %.0f digit runs per KiB (%.0f of 4+ digits)\n",
	       (double)letters / n, (double)digits / n, (double)space / n, (double)punct / n,
	       (double)other / n, (double)runs * 1024 / (double)text.len,
	       (double)long_runs * 1024 / (double)text.len);
	if (jsonf)
		fprintf(jsonf,
		        "{\"bench\":\"inspect\",\"case\":\"%s corpus\",\"digits_pct\":%.1f,"
		        "\"letters_pct\":%.1f,\"digit_runs_per_kib\":%.0f}\n",
		        label, (double)digits / n, (double)letters / n,
		        (double)runs * 1024 / (double)text.len);
}

static void loadavg(const char *when)
{
	char b[128] = "?";
	FILE *f = fopen("/proc/loadavg", "r");
	if (f != NULL) {
		if (fgets(b, sizeof(b), f) == NULL)
			b[0] = '\0';
		fclose(f);
	}
	b[strcspn(b, "\n")] = '\0';
	printf("load average (%s): %s\n", when, b);
}

static void run_corpus(const char *label, span text, size_t nvalues, const corpus_mix *mix,
                       inspect_engine *e, inspect_scratch *s, const inspect_profile *all,
                       const pcre_set *sets, size_t nsets, int reps)
{
	double t[MAX_REPS], mb = (double)text.len / 1e6, t0;
	describe_corpus(label, text, nvalues, mix);

	/* 1. Hyperscan alone, streaming mode, one call. */
	result r = { .mbps = 0 };
	snprintf(r.name, sizeof(r.name), "%s: hyperscan database alone (literal-led patterns)",
	         label);
	for (int i = 0; i < reps; i++) {
		hs_count = 0;
		hs_stream_t *hs;
		if (hs_open_stream(e->db, 0, &hs) != HS_SUCCESS)
			exit(1);
		t0 = now_s();
		hs_scan_stream(hs, text.ptr, (unsigned)text.len, 0, s->hs, count_cb, NULL);
		hs_close_stream(hs, s->hs, count_cb, NULL);
		t[i] = now_s() - t0;
	}
	r.seconds = median(t, reps);
	r.mbps = mb / r.seconds;
	r.matches = hs_count;
	report(&r);

	/* 2. The C scanner alone (all five anchors, counting reports). */
	result rc = { .mbps = 0 };
	snprintf(rc.name, sizeof(rc.name), "%s: C scanner alone (digit/dot/colon/dash anchors)",
	         label);
	for (int i = 0; i < reps; i++) {
		det_numeric st = { 0 };
		rc.matches = 0;
		t0 = now_s();
		if (det_numeric_scan(&st, (1u << DET_SCAN_N) - 1, (const uint8_t *)text.ptr,
		                     text.len, 0, scan_count, &rc.matches) != CUSTOS_OK ||
		    det_numeric_finish(&st, (1u << DET_SCAN_N) - 1, text.len, scan_count,
		                       &rc.matches) != CUSTOS_OK)
			exit(1);
		t[i] = now_s() - t0;
	}
	rc.seconds = median(t, reps);
	rc.mbps = mb / rc.seconds;
	report(&rc);

	/* 3. inspect_scan: validators, regions, overlap resolution. */
	inspect_findings f = { 0 };
	result rs = { .mbps = 0 };
	snprintf(rs.name, sizeof(rs.name), "%s: inspect_scan (validated findings)", label);
	for (int i = 0; i < reps; i++) {
		f.n = 0;
		t0 = now_s();
		if (inspect_scan(e, s, all, text, &f) != CUSTOS_OK) {
			fprintf(stderr, "scan: %s\n", err_msg());
			exit(1);
		}
		t[i] = now_s() - t0;
	}
	rs.seconds = median(t, reps);
	rs.mbps = mb / rs.seconds;
	rs.matches = f.n;
	report(&rs);
	inspect_findings_free(&f);

	/* 4. Block redaction into a new buffer. */
	buf out;
	buf_init(&out, 4u << 20);
	result rr = { .mbps = 0 };
	snprintf(rr.name, sizeof(rr.name), "%s: inspect_redact_text (masked copy)", label);
	inspect_summary sum;
	for (int i = 0; i < reps; i++) {
		buf_reset(&out);
		t0 = now_s();
		if (inspect_redact_text(e, s, all, text, &out, &sum) != CUSTOS_OK)
			exit(1);
		t[i] = now_s() - t0;
	}
	rr.seconds = median(t, reps);
	rr.mbps = mb / rr.seconds;
	rr.matches = sum.total;
	report(&rr);
	buf_free(&out);

	/* 5. PCRE2 JIT. */
	for (size_t k = 0; k < nsets; k++) {
		result rp = run_pcre(&sets[k], label, text, reps);
		report(&rp);
		printf("  %-58s %.1fx\n",
		       "  custos inspect_scan speed-up over it:", rs.mbps / rp.mbps);
		if (jsonf)
			fprintf(jsonf,
			        "{\"bench\":\"inspect\",\"case\":\"%s: speed-up over %s\","
			        "\"ratio\":%.2f}\n",
			        label, sets[k].label, rs.mbps / rp.mbps);
	}
	printf("\n");
}

/* Streaming: model answers of ~2 KiB in 1..4-byte deltas, one stream per answer. */
static void run_sse(const char *corpus, inspect_engine *e, inspect_scratch *s,
                    const inspect_profile *all)
{
	enum { ANSWERS = 300, ANSWER_BYTES = 2048 };
	double *ev = malloc(sizeof(double) * ANSWERS * ANSWER_BYTES);
	size_t nev = 0;
	double total_s = 0, sum_ev = 0;
	buf sse;
	buf_init(&sse, 1u << 20);
	for (int a = 0; a < ANSWERS; a++) {
		const char *src = corpus + (size_t)a * 3001 % (CORPUS_BYTES - ANSWER_BYTES);
		inspect_stream *st;
		double ta = now_s();
		if (inspect_stream_new(e, all, &st) != CUSTOS_OK)
			exit(1);
		buf_reset(&sse);
		size_t at = 0;
		while (at < ANSWER_BYTES) {
			size_t len = 1 + rnd() % 4;
			if (len > ANSWER_BYTES - at)
				len = ANSWER_BYTES - at;
			double te = wall_s();
			if (inspect_stream_feed(st, s, span_of(src + at, len), &sse) != CUSTOS_OK)
				exit(1);
			ev[nev++] = wall_s() - te;
			at += len;
		}
		if (inspect_stream_finish(st, s, &sse) != CUSTOS_OK)
			exit(1);
		inspect_stream_free(st);
		total_s += now_s() - ta;
	}
	for (size_t i = 0; i < nev; i++)
		sum_ev += ev[i];
	qsort(ev, nev, sizeof(*ev), cmp_double);
	printf("sse: %zu events (1..4 bytes each) in %d streams of %d bytes: %.2f us CPU per event "
	       "(stream open, feeds, finish); wall per feed: mean %.2f us, p50 %.2f, p99 %.2f, "
	       "p99.9 %.2f, max %.1f (a shared machine: includes preemption)\n",
	       nev, ANSWERS, ANSWER_BYTES, total_s / (double)nev * 1e6, sum_ev / (double)nev * 1e6,
	       ev[nev / 2] * 1e6, ev[nev * 99 / 100] * 1e6, ev[nev * 999 / 1000] * 1e6,
	       ev[nev - 1] * 1e6);
	printf("sse: hold-back with every built-in detector: %zu bytes\n",
	       inspect_profile_holdback(e, all));
	if (jsonf)
		fprintf(jsonf,
		        "{\"bench\":\"inspect\",\"case\":\"sse_event\",\"cpu_us\":%.3f,"
		        "\"p99_us\":%.3f,\"max_us\":%.3f}\n",
		        total_s / (double)nev * 1e6, ev[nev * 99 / 100] * 1e6, ev[nev - 1] * 1e6);
	buf_free(&sse);
	free(ev);
}

/* JSON: a chat request of ~64 KiB (many messages, escapes, a few values). */
static void run_json(const char *corpus, inspect_engine *e, inspect_scratch *s,
                     const inspect_profile *all, int reps)
{
	double t[MAX_REPS], t0;
	buf body;
	buf_init(&body, 1u << 20);
	if (buf_append_cstr(&body, "{\"model\":\"llama-8b\",\"stream\":true,\"messages\":[") !=
	    CUSTOS_OK)
		exit(1);
	for (int m = 0; buf_used(&body) < 64 * 1024; m++) {
		json_writer w;
		buf msg;
		buf_init(&msg, 4096);
		json_init(&w, &msg);
		json_obj_begin(&w);
		json_kv_cstr(&w, "role", m % 2 ? "assistant" : "user");
		json_key(&w, "content");
		json_str(&w, span_of(corpus + (size_t)m * 1777 % (CORPUS_BYTES - 900), 900));
		json_obj_end(&w);
		if (json_finish(&w) != CUSTOS_OK ||
		    (m && buf_append_byte(&body, ',') != CUSTOS_OK) ||
		    buf_append_span(&body, buf_span(&msg)) != CUSTOS_OK)
			exit(1);
		buf_free(&msg);
	}
	if (buf_append_cstr(&body, "]}") != CUSTOS_OK)
		exit(1);
	buf jo;
	buf_init(&jo, 4u << 20);
	inspect_summary sum;
	for (int i = 0; i < reps; i++) {
		buf_reset(&jo);
		t0 = now_s();
		custos_err jr = inspect_json_redact(e, s, all, buf_span(&body), &jo, &sum);
		t[i] = now_s() - t0;
		if (jr != CUSTOS_OK) {
			fprintf(stderr, "json: %s\n", err_msg());
			exit(1);
		}
	}
	double js = median(t, reps);
	printf("json: %zu-byte chat request, %u findings: %.1f us per request (%.1f MB/s)\n",
	       buf_used(&body), sum.total, js * 1e6, (double)buf_used(&body) / 1e6 / js);
	if (jsonf)
		fprintf(jsonf,
		        "{\"bench\":\"inspect\",\"case\":\"json_request\",\"bytes\":%zu,\"us\":%."
		        "1f}\n",
		        buf_used(&body), js * 1e6);
	buf_free(&jo);
	buf_free(&body);
}

/* `bench_inspect profile mixed|chat|logs N`: inspect_scan only, N times, for perf record. */
static int run_profile(const char *which, int n, const char *mixed, const char *chat,
                       const char *logs)
{
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL };
	inspect_engine *e;
	inspect_scratch *s;
	if (inspect_engine_new(&o, &e) != CUSTOS_OK || inspect_scratch_new(e, &s) != CUSTOS_OK)
		return 1;
	inspect_profile all = { 0 };
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++)
		all.action[i] = INSPECT_ACT_REDACT;
	span text = span_of(strcmp(which, "chat") == 0   ? chat
	                    : strcmp(which, "logs") == 0 ? logs
	                                                 : mixed,
	                    CORPUS_BYTES);
	inspect_findings f = { 0 };
	double t0 = now_s();
	for (int i = 0; i < n; i++) {
		f.n = 0;
		if (inspect_scan(e, s, &all, text, &f) != CUSTOS_OK)
			return 1;
	}
	double el = now_s() - t0;
	printf("profile %s: %d scans, %zu findings, %.1f MB/s\n", which, n, f.n,
	       (double)text.len * n / 1e6 / el);
	inspect_findings_free(&f);
	inspect_scratch_free(s);
	inspect_engine_free(e);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 3 && strcmp(argv[1], "profile") == 0) {
		size_t a, b;
		char *m = make_corpus(CORPUS_BYTES, 13, &a, NULL);
		char *c = make_corpus(CORPUS_BYTES, 18, &b, NULL);
		char *l = make_corpus(CORPUS_BYTES, 4, &b, NULL);
		int rc = run_profile(argv[2], (int)strtol(argv[3], NULL, 10), m, c, l);
		free(m);
		free(c);
		free(l);
		return rc;
	}
	int reps = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 10;
	if (reps < 3)
		reps = 3;
	if (reps > MAX_REPS)
		reps = MAX_REPS;
	if (argc > 2)
		jsonf = fopen(argv[2], "w");
	size_t nmixed, nchat, nlogs;
	corpus_mix mixm, chatm, logsm;
	char *mixed = make_corpus(CORPUS_BYTES, 13, &nmixed, &mixm);
	char *chat = make_corpus(CORPUS_BYTES, 18, &nchat, &chatm);
	char *logs = make_corpus(CORPUS_BYTES, 4, &nlogs, &logsm); /* a stress case */
	loadavg("start");

	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL };
	inspect_engine *e;
	double t0 = now_s();
	if (inspect_engine_new(&o, &e) != CUSTOS_OK) {
		fprintf(stderr, "engine: %s\n", err_msg());
		return 1;
	}
	double compile_s = now_s() - t0;
	inspect_scratch *s;
	if (inspect_scratch_new(e, &s) != CUSTOS_OK)
		return 1;
	size_t db_size = 0, stream_size = 0;
	hs_database_size(e->db, &db_size);
	hs_stream_size(e->db, &stream_size);
	printf("engine: %u detector expressions, compiled in %.1f ms, database %zu bytes, stream "
	       "state %zu bytes (+ %zu bytes of C scanner state); %d runs each, median\n\n",
	       e->n_expr, compile_s * 1e3, db_size, stream_size, sizeof(det_numeric), reps);
	inspect_profile all = { 0 };
	for (unsigned i = 0; i < INSPECT_BUILTIN_COUNT; i++)
		all.action[i] = INSPECT_ACT_REDACT;

	/* PCRE2: full regexes with and without the validators, the engine's own patterns (each
	 * once), and their alternation. */
	static pcre_set sets[4] = {
		{ .label = "pcre2 jit, full regexes + same validators (same detection)" },
		{ .label = "pcre2 jit, full regexes, matching only" },
		{ .label = "pcre2 jit, engine's short patterns, matching only" },
		{ .label = "pcre2 jit, engine's short patterns as one alternation" },
	};
	for (size_t i = 0; i < sizeof(full_regexes) / sizeof(full_regexes[0]); i++) {
		pcre_set_add(&sets[0], full_regexes[i].re, full_validator(&full_regexes[i]));
		pcre_set_add(&sets[1], full_regexes[i].re, NULL);
	}
	buf alt;
	buf_init(&alt, 1u << 16);
	for (size_t i = 0; i < det_builtin_n_specs; i++) {
		bool dup = false;
		for (size_t k = 0; k < i; k++)
			dup |= strcmp(det_builtin_specs[k].pattern, det_builtin_specs[i].pattern) ==
			       0;
		if (dup)
			continue;
		pcre_set_add(&sets[2], det_builtin_specs[i].pattern, NULL);
		if (buf_printf(&alt, "%s(?:%s)", buf_used(&alt) ? "|" : "",
		               det_builtin_specs[i].pattern) != CUSTOS_OK)
			return 1;
	}
	const char *alts;
	if (buf_cstr(&alt, &alts) != CUSTOS_OK)
		return 1;
	pcre_set_add(&sets[3], alts, NULL);

	run_corpus("mixed", span_of(mixed, CORPUS_BYTES), nmixed, &mixm, e, s, &all, sets, 4, reps);
	run_corpus("chat", span_of(chat, CORPUS_BYTES), nchat, &chatm, e, s, &all, sets, 4, reps);
	run_corpus("logs", span_of(logs, CORPUS_BYTES), nlogs, &logsm, e, s, &all, sets, 4, reps);
	run_sse(mixed, e, s, &all);
	run_json(mixed, e, s, &all, reps);
	loadavg("end");

	if (jsonf)
		fclose(jsonf);
	for (size_t k = 0; k < 4; k++)
		for (size_t i = 0; i < sets[k].n; i++)
			pcre2_code_free(sets[k].codes[i]);
	buf_free(&alt);
	inspect_scratch_free(s);
	inspect_engine_free(e);
	free(mixed);
	free(chat);
	free(logs);
	return 0;
}
