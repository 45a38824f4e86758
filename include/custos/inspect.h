/*
 * custos content inspection (policy module): detectors for sensitive data (cards, IBANs, SSNs,
 * e-mail, phone, IPs, cloud and SaaS tokens, private keys, JWTs, custom detectors from
 * policy.yaml), one Hyperscan database per policy scanned in streaming mode, redaction with
 * typed masks, a JSON-aware pass over OpenAI request bodies, and a per-stream inspector for
 * SSE deltas and egress bodies that holds back only what a detector could still claim.
 * Detectors see a normalised view of the text (Unicode spaces, invisible characters, fullwidth
 * forms, other scripts' digits); offsets and masks are always those of the original text.
 * docs/INSPECTION.md describes each detector, the normalised view and the streaming contract.
 */
#ifndef CUSTOS_INSPECT_H
#define CUSTOS_INSPECT_H

#include <custos/core.h>

/* ---------------------------------------------------------------------------------------------
 * Limits (named, STYLE.md 6).
 */
#define INSPECT_MAX_DETECTORS     64 /* built-ins + custom, per engine */
#define INSPECT_MAX_CUSTOM        (INSPECT_MAX_DETECTORS - INSPECT_BUILTIN_COUNT)
#define INSPECT_MAX_CUSTOM_EXPRS  64          /* patterns + keywords per custom detector */
#define INSPECT_MAX_PATTERN_LEN   1024        /* bytes of one custom pattern or keyword */
#define INSPECT_MAX_PATTERN_WIDTH 512         /* match length a stream is sure to catch whole */
#define INSPECT_CONTEXT_WINDOW    64          /* bytes before a match where a keyword counts */
#define INSPECT_NAME_MAX          257         /* custom detector name + NUL (policy: 256) */
#define INSPECT_MAX_FINDINGS      65536       /* pending findings per stream / scan */
#define INSPECT_MAX_TEXT          (64u << 20) /* bytes one feed or block scan accepts */
#define INSPECT_JSON_MAX_DEPTH    64          /* nesting of a JSON body */
#define INSPECT_JSON_MAX_BODY     (32u << 20) /* bytes of a JSON body */
#define INSPECT_JSON_MAX_FINDINGS (1 << 20)   /* findings and masks in one JSON body */
#define INSPECT_MASK_MAX          (INSPECT_NAME_MAX + 16) /* "[REDACTED:NAME]" */
/* Bytes of invisible characters in a row (no character of the view between them) that a
 * stream holds while it cannot release them; past it a feed fails (CUSTOS_ERR_LIMIT). */
#define INSPECT_MAX_INVISIBLE_HELD INSPECT_MAX_TEXT
/* Bytes of a word a stream holds back to decide whether its Cyrillic or Greek look-alike letters
 * are mapped (the word mixes scripts); a longer undecided word is taken as it is. */
#define INSPECT_WORD_HOLD 64

/* Built-in detectors. Their ids are fixed: custom detectors follow at INSPECT_BUILTIN_COUNT in
 * definition order, so a policy compiler can map names to ids without an engine. */
typedef enum inspect_builtin {
	INSPECT_EMAIL = 0,
	INSPECT_PHONE,
	INSPECT_PAYMENT_CARD,
	INSPECT_IBAN,
	INSPECT_US_SSN,
	INSPECT_IPV4,
	INSPECT_IPV6,
	INSPECT_AWS_ACCESS_KEY,
	INSPECT_AWS_SECRET_KEY,
	INSPECT_GITHUB_TOKEN,
	INSPECT_GITLAB_TOKEN,
	INSPECT_SLACK_TOKEN,
	INSPECT_STRIPE_KEY,
	INSPECT_PRIVATE_KEY,
	INSPECT_JWT,
	INSPECT_BUILTIN_COUNT
} inspect_builtin;

#define INSPECT_BUILTIN_ALL ((UINT64_C(1) << INSPECT_BUILTIN_COUNT) - 1)

/* What a rule does with a finding, ordered by strength (a merged decision takes the max). */
typedef enum inspect_action {
	INSPECT_ACT_NONE = 0, /* detector not applied */
	INSPECT_ACT_LOG,      /* counted in the summary, text unchanged */
	INSPECT_ACT_REDACT,   /* replaced by "[REDACTED:TYPE]" */
	INSPECT_ACT_DENY      /* the request / stream is refused */
} inspect_action;

typedef enum inspect_validator {
	INSPECT_VALIDATE_NONE = 0,
	INSPECT_VALIDATE_LUHN,  /* digits of the match (separators ignored) pass the Luhn check */
	INSPECT_VALIDATE_MOD97, /* ISO 13616 / ISO 7064 mod 97-10 (IBAN style), spaces ignored */
} inspect_validator;

/* Static name of a built-in ("payment_card"), or NULL when id is not one. */
const char *inspect_builtin_name(unsigned id);
/* Finds a built-in by name: CUSTOS_OK with *id, or CUSTOS_ERR_NOTFOUND (message names it). */
custos_err inspect_builtin_lookup(span name, unsigned *id) CUSTOS_WUR;
/* The built-in names, for "did you mean" hints; *n receives INSPECT_BUILTIN_COUNT. */
const char *const *inspect_builtin_names(size_t *n);
/* "luhn" | "mod97" | "none": CUSTOS_OK, or CUSTOS_ERR_INVAL with a message. */
custos_err inspect_validator_parse(span name, inspect_validator *out) CUSTOS_WUR;
/* "deny" | "redact" | "log": CUSTOS_OK, or CUSTOS_ERR_INVAL with a message. */
custos_err inspect_action_parse(span name, inspect_action *out) CUSTOS_WUR;
const char *inspect_action_name(inspect_action a); /* static; "none" for NONE */

/* Checks a custom detector pattern the way the engine will compile it (Hyperscan syntax: the
 * PCRE subset without back-references or look-around; must not match empty text; no character
 * the normalised view drops or rewrites, which detectors never see): CUSTOS_OK,
 * or CUSTOS_ERR_INVAL with a message a policy checker can print at the pattern's line:col.
 * *max_width (may be NULL) receives the longest text it can match, UINT_MAX if unbounded: a
 * stream holds back at most INSPECT_MAX_PATTERN_WIDTH for a pattern, so a longer match may
 * have its start released before it is found (a checker may warn). */
custos_err inspect_pattern_check(const char *pattern, unsigned *max_width) CUSTOS_WUR;
/* inspect_pattern_check, then the pattern compiled alone in the engine's mode (streaming, SOM):
 * Hyperscan refuses some patterns only there ("Pattern is too large."). The keyword form
 * checks a custom keyword (1..INSPECT_MAX_PATTERN_LEN bytes) as the literal the engine makes
 * of it (its normalised view, as detectors see text). What these pass, the engine compiles; a policy checker calls them (Hyperscan loaded),
 * and can still only miss a failure of the whole set: policy_load_check compiles the engine as
 * the proxy does at start for that. */
custos_err inspect_pattern_compile(const char *pattern, unsigned *max_width) CUSTOS_WUR;
custos_err inspect_keyword_compile(const char *keyword, unsigned *max_width) CUSTOS_WUR;
/* Checks a custom detector name: 1..256 bytes, no space or control character (as policy.yaml
 * names), not a built-in. The mask is its upper-case form with anything outside [A-Z0-9_]
 * written as '_', so it is safe inside JSON strings and SSE events. */
custos_err inspect_name_check(span name) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Engine: compiled once per policy, immutable afterwards, shared by every thread.
 */
/* A custom detector (policy.yaml `detectors:`). Keywords are literals matched
 * case-insensitively on word boundaries. With patterns, keywords are context: a pattern match
 * counts only when one of them ends within INSPECT_CONTEXT_WINDOW bytes before it ("staff id
 * EMP-004211"). Without patterns, each keyword occurrence is itself a finding (code names). */
typedef struct inspect_custom_def {
	const char *name;            /* detector name; the mask: see inspect_name_check */
	const char *const *patterns; /* regular expressions (Hyperscan syntax), may be empty */
	size_t n_patterns;
	const char *const *keywords; /* context words, or the matches themselves (see above) */
	size_t n_keywords;
	inspect_validator validator; /* applied to every pattern candidate of this detector */
	bool unused;                 /* keeps the id, compiles nothing (named by no rule) */
} inspect_custom_def;

typedef struct inspect_engine_opts {
	uint64_t builtins; /* bit (1 << inspect_builtin) per built-in to compile; see _ALL */
	const inspect_custom_def *custom;
	size_t n_custom; /* <= INSPECT_MAX_CUSTOM */
} inspect_engine_opts;

typedef struct inspect_engine inspect_engine;
typedef struct inspect_scratch inspect_scratch;

/* Compiles the enabled detectors into one streaming Hyperscan database. CUSTOS_OK with *out
 * (owned by the caller, inspect_engine_free); CUSTOS_ERR_INVAL for a bad custom definition,
 * CUSTOS_ERR_UNSUPPORTED when the CPU lacks what Hyperscan needs (SSSE3). */
custos_err inspect_engine_new(const inspect_engine_opts *o, inspect_engine **out) CUSTOS_WUR;
/* inspect_engine_new; on failure *failed is the detector id it names (one whose definition is
 * refused, or whose expression Hyperscan's compile of the whole set names), -1 when none (the
 * set as a whole: each expression compiles alone, the database does not). */
custos_err inspect_engine_new_at(const inspect_engine_opts *o, inspect_engine **out,
                                 int *failed) CUSTOS_WUR;
void inspect_engine_free(inspect_engine *e);
/* Number of detector ids (INSPECT_BUILTIN_COUNT + custom). */
unsigned inspect_engine_detector_count(const inspect_engine *e);
/* Name of detector id (engine-owned), or NULL when out of range. */
const char *inspect_engine_detector_name(const inspect_engine *e, unsigned id);
/* The mask of detector id ("[REDACTED:PAYMENT_CARD]", engine-owned), empty when out of range. */
span inspect_engine_detector_mask(const inspect_engine *e, unsigned id);
/* Whether detector id is compiled into this engine (a built-in may be left out by opts). */
bool inspect_engine_has(const inspect_engine *e, unsigned id);
/* Finds a detector (built-in or custom) by name: CUSTOS_OK or CUSTOS_ERR_NOTFOUND. */
custos_err inspect_engine_detector_find(const inspect_engine *e, span name,
                                        unsigned *id) CUSTOS_WUR;

/* The engine for a compiled policy (include/custos/policy.h): the built-ins some rule names
 * and every custom detector, with the policy's detector numbering (the two headers share it,
 * checked at compile time). Failure (a custom pattern Hyperscan refuses) must be handled like
 * a policy error: the policy in force stays. Owned by the caller. */
struct policy;
custos_err inspect_engine_from_policy(const struct policy *p, inspect_engine **out) CUSTOS_WUR;
/* The same, with *failed as inspect_engine_new_at gives it (a policy detector index, or -1):
 * for `policy check`, to place the failure at the detector's file:line:col. */
custos_err inspect_engine_from_policy_at(const struct policy *p, inspect_engine **out,
                                         int *failed) CUSTOS_WUR;

/* Per-thread scanning memory (Hyperscan scratch). One per thread that scans with this engine;
 * owned by the caller, inspect_scratch_free. */
custos_err inspect_scratch_new(const inspect_engine *e, inspect_scratch **out) CUSTOS_WUR;
void inspect_scratch_free(inspect_scratch *s);

/* The calling thread's scratch for engine e, whose caller-given id eng_id is unique over the
 * process's life (a new engine gets a new id): made on first use, remade when an engine with
 * another id comes, freed when the thread ends. Holds two engines' scratch per thread (the
 * ingress and egress ones). */
custos_err inspect_thread_scratch(const inspect_engine *e, uint64_t eng_id,
                                  inspect_scratch **out) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Profile: which detectors a rule applies to one direction (prompt, response, egress) and what
 * a hit does. A plain value: policy compiles one per rule and direction.
 */
typedef struct inspect_profile {
	uint8_t action[INSPECT_MAX_DETECTORS]; /* inspect_action per detector id; 0 = not applied */
} inspect_profile;

static inline void inspect_profile_set(inspect_profile *p, unsigned id, inspect_action a)
{
	if (id < INSPECT_MAX_DETECTORS)
		p->action[id] = (uint8_t)a;
}
/* A profile from a policy decision's per-detector actions (policy_decision.inspect_prompt or
 * .inspect_response: the same numbering and values). */
static inline void inspect_profile_from_actions(inspect_profile *p,
                                                const uint8_t actions[INSPECT_MAX_DETECTORS])
{
	for (size_t i = 0; i < INSPECT_MAX_DETECTORS; i++)
		p->action[i] =
		        actions[i] <= INSPECT_ACT_DENY ? actions[i] : (uint8_t)INSPECT_ACT_DENY;
}
/* Stronger of the two actions per detector (two matching rules combine this way). */
void inspect_profile_merge(inspect_profile *into, const inspect_profile *other);
/* Whether any detector is applied. */
bool inspect_profile_active(const inspect_profile *p);
/* Bytes a stream with this profile holds back at most while no token-like value is open: the
 * longest span an applied detector can need before it is decided (docs/INSPECTION.md). */
size_t inspect_profile_holdback(const inspect_engine *e, const inspect_profile *p);

/* ---------------------------------------------------------------------------------------------
 * Findings and summaries. Offsets count bytes of the inspected text (for JSON: of the
 * unescaped string value). Values are never copied into a finding or a summary.
 */
typedef struct inspect_finding {
	uint64_t offset;
	uint32_t length;
	uint16_t detector;  /* detector id */
	uint8_t confidence; /* 0..100 */
	uint8_t action;     /* inspect_action the profile gave it */
} inspect_finding;

typedef struct inspect_summary {
	uint32_t count[INSPECT_MAX_DETECTORS]; /* findings kept after overlap resolution */
	uint32_t total;
	uint8_t worst;     /* strongest inspect_action applied */
	int deny_detector; /* detector id that denied, or -1 */
	bool redacted;     /* the output differs from the input */
} inspect_summary;

void inspect_summary_init(inspect_summary *s);
/* Adds s into into: counts summed, the stronger action, the first deny kept, redacted or'ed. */
void inspect_summary_add(inspect_summary *into, const inspect_summary *s);
/* Writes {"payment_card":2,"email":1} (types and counts only) as the next value of w. */
void inspect_summary_json(const inspect_engine *e, const inspect_summary *s, json_writer *w);

typedef struct inspect_findings {
	inspect_finding *items; /* owned; inspect_findings_free */
	size_t n, cap;
} inspect_findings;
void inspect_findings_free(inspect_findings *f);

/* Scans text[] as one block with the profile's detectors. Appends the findings that survive
 * overlap resolution (sorted by offset) to out; they keep their action (deny is reported in
 * the findings, not as an error). CUSTOS_ERR_LIMIT past INSPECT_MAX_TEXT / _FINDINGS. */
custos_err inspect_scan(const inspect_engine *e, inspect_scratch *s, const inspect_profile *p,
                        span text, inspect_findings *out) CUSTOS_WUR;

/* Block redaction of raw text (non-JSON egress bodies): appends text with REDACT findings
 * masked to out, fills sum. CUSTOS_ERR_DENIED (sum->deny_detector set, out holds nothing
 * meaningful) when a DENY finding is present. */
custos_err inspect_redact_text(const inspect_engine *e, inspect_scratch *s,
                               const inspect_profile *p, span text, buf *out,
                               inspect_summary *sum) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * JSON-aware redaction of a request body (OpenAI chat/completions/embeddings/responses shapes
 * and anything else): every string VALUE is unescaped, inspected as its own text, and findings
 * are mapped back to the raw escaped bytes; the body's own keys, numbers and structure are not
 * inspected, except under `arguments` and in a `tool_use` `input` object, and the keys and
 * numbers of a JSON document inside a string (tool-call arguments) are: what the model or the
 * user wrote (a key is masked inside its quotes, a number becomes the mask as a string).
 * The text values a model reads in order (under content, text, input, prompt, instructions,
 * system, output) are also inspected joined, so a value split over two of them is found; each
 * piece is masked in its own string.
 * A REDACT span is replaced by "[REDACTED:TYPE]" (escape sequences it covers are replaced
 * whole), everything else is copied byte for byte, so out is valid JSON.
 * Returns CUSTOS_OK with the new body in out (identical when sum->redacted is false; the
 * caller fixes Content-Length), CUSTOS_ERR_DENIED on a DENY finding, CUSTOS_ERR_PARSE for a
 * body that is not valid JSON, CUSTOS_ERR_LIMIT past INSPECT_JSON_MAX_BODY / _DEPTH /
 * _FINDINGS.
 */
custos_err inspect_json_redact(const inspect_engine *e, inspect_scratch *s,
                               const inspect_profile *p, span body, buf *out,
                               inspect_summary *sum) CUSTOS_WUR;
/* inspect_json_redact for a caller that inspects every key and number of the body itself, as
 * sent (the egress proxy): the body's own keys and numbers are left to it, those under
 * `arguments` or a tool_use `input` too, so each is counted once; those of a JSON document
 * inside a string are inspected here as above. */
custos_err inspect_json_redact_strings(const inspect_engine *e, inspect_scratch *s,
                                       const inspect_profile *p, span body, buf *out,
                                       inspect_summary *sum) CUSTOS_WUR;
/* Strict RFC 8259 validity check (depth-bounded), for tests and the proxy: true when valid. */
bool inspect_json_valid(span body);

/* ---------------------------------------------------------------------------------------------
 * Streams (SSE delta.content fragments of one choice, or an egress body in chunks). Text fed
 * in is reassembled; the caller gets back only text no detector can still claim, with REDACT
 * findings masked, cut on UTF-8 character boundaries. Fragments may be cut anywhere, inside a
 * UTF-8 sequence too. A held-back tail is at most the profile's hold-back (in bytes of the
 * normalised view), or longer while a token-like value (JWT, private key block, API token) is
 * still open. Not thread-safe: one stream is used by one thread at a time, with that thread's
 * scratch.
 */
typedef struct inspect_stream inspect_stream;

/* Opens a stream over engine e with profile p (copied). Owned by the caller. */
custos_err inspect_stream_new(const inspect_engine *e, const inspect_profile *p,
                              inspect_stream **out) CUSTOS_WUR;
/* Feeds the next fragment; appends the text now safe to release to out (possibly nothing).
 * CUSTOS_ERR_DENIED when a DENY detector fired: nothing more is released, the caller ends the
 * stream with an error event (err_msg names the detector, never the value). */
custos_err inspect_stream_feed(inspect_stream *st, inspect_scratch *s, span text,
                               buf *out) CUSTOS_WUR;
/* End of stream: decides what was held back and appends the rest to out. CUSTOS_ERR_DENIED as
 * for feed. After finish the stream accepts no more text. */
custos_err inspect_stream_finish(inspect_stream *st, inspect_scratch *s, buf *out) CUSTOS_WUR;
/* Bytes fed but not yet released. */
size_t inspect_stream_held(const inspect_stream *st);
/* Types and counts found so far (valid until free). */
const inspect_summary *inspect_stream_summary(const inspect_stream *st);
void inspect_stream_free(inspect_stream *st);

#endif /* CUSTOS_INSPECT_H */
