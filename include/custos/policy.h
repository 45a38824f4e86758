/*
 * custos policy: the compliance team's policy.yaml, compiled once into an immutable indexed
 * form and evaluated on every ingress request and egress call without allocating.
 * The language is documented in docs/POLICY.md.
 *
 * Ownership in one paragraph: a compiled `policy` is immutable and reference-counted. Whoever
 * holds a reference (policy_load/policy_parse's result, policy_ref, policy_store_get) must
 * drop it with policy_unref; every pointer handed out by the functions below (principals,
 * models, data sources, rule ids, reasons, detector definitions) points into the policy and
 * stays valid exactly as long as the caller holds its reference. References may be taken and
 * dropped from any thread.
 */
#ifndef CUSTOS_POLICY_H
#define CUSTOS_POLICY_H

#include "custos/core.h"

/* Named limits: every size from policy files or test files is checked against these. */
#define POLICY_MAX_FILE_BYTES      (16u * 1024 * 1024) /* one policy or test file */
#define POLICY_MAX_FILES           64                  /* files reachable through include: */
#define POLICY_MAX_INCLUDE_DEPTH   8
#define POLICY_MAX_RULES           100000
#define POLICY_MAX_SUBJECTS        100000 /* principals, models, data sources each */
#define POLICY_MAX_LIST            4096   /* items in one condition list */
#define POLICY_MAX_NAME            256    /* ids and names, bytes */
#define POLICY_MAX_DECISION_RULES  8      /* rule ids reported in one decision */
#define POLICY_MAX_DETECTORS       64     /* built-in + custom */
#define POLICY_MAX_CUSTOM_PATTERNS 32     /* patterns or keywords per custom detector */
#define POLICY_MAX_TEST_CASES      10000
#define POLICY_MAX_PATH            8192 /* request path bytes, normalised (longer: refused) */
/* JWT groups a caller's identity carries: the proxy keeps the first POLICY_MAX_JWT_GROUPS
 * string entries of the `groups` claim that are at most POLICY_MAX_JWT_GROUP_BYTES long
 * (longer ones are skipped); policy_match_principal applies the same cut, so `policy test`
 * and `explain` predict the proxy. */
#define POLICY_MAX_JWT_GROUPS      16
#define POLICY_MAX_JWT_GROUP_BYTES 127

/* Ordered scales. Comparisons (above/below/at_least/at_most) use the numeric order. */
typedef enum policy_class {
	POLICY_CLASS_PUBLIC = 0,
	POLICY_CLASS_INTERNAL,
	POLICY_CLASS_CONFIDENTIAL,
	POLICY_CLASS_RESTRICTED,
	POLICY_CLASS__COUNT
} policy_class;
typedef enum policy_isolation {
	POLICY_ISO_NONE = 0,
	POLICY_ISO_PROCESS,
	POLICY_ISO_VM,
	POLICY_ISO_VM_DEDICATED_GPU,
	POLICY_ISO__COUNT
} policy_isolation;

typedef enum policy_direction { POLICY_INGRESS = 0, POLICY_EGRESS = 1 } policy_direction;
typedef enum policy_effect { POLICY_DENY = 0, POLICY_ALLOW = 1 } policy_effect;
typedef enum policy_mode { POLICY_ENFORCE = 0, POLICY_SHADOW = 1 } policy_mode;

/* Inspection actions, ordered by severity: merging keeps the most severe. */
typedef enum policy_action {
	POLICY_ACT_NONE = 0,
	POLICY_ACT_LOG,
	POLICY_ACT_REDACT,
	POLICY_ACT_DENY
} policy_action;
typedef enum policy_audit_level {
	POLICY_AUDIT_METADATA = 0,
	POLICY_AUDIT_BODIES_HASHED,
	POLICY_AUDIT_BODIES
} policy_audit_level;

typedef struct policy policy;
typedef struct policy_principal policy_principal;
typedef struct policy_model policy_model;
typedef struct policy_data_source policy_data_source;

/* Static names for the enums ("confidential", "vm-dedicated-gpu", "egress", "redact"...). */
const char *policy_class_name(policy_class c);
const char *policy_isolation_name(policy_isolation i);
const char *policy_action_name(policy_action a);
const char *policy_audit_level_name(policy_audit_level a);
/* Parses a level name; false when s names none. */
bool policy_class_parse(span s, policy_class *out);
bool policy_isolation_parse(span s, policy_isolation *out);

/* ---------------------------------------------------------------------------------------------
 * Compile. Both return CUSTOS_OK and a policy with one reference owned by the caller, or an
 * error with every problem (file:line:col) in d; warnings go to d in both cases. A policy with
 * any error is never returned.
 */
/* Loads path (config-mode checked), resolves include: relative to the including file. */
custos_err policy_load(const char *path, policy **out, diag_list *d) CUSTOS_WUR;
/* policy_load, then the inspection engine compiled as the proxy compiles it at start (one
 * Hyperscan database of every detector a rule names), its failure an error at the detector's
 * file:line:col: for `custos policy check`. A warning instead where Hyperscan cannot run. */
custos_err policy_load_check(const char *path, policy **out, diag_list *d) CUSTOS_WUR;
/* Compiles text[len] named `name`; includes resolve relative to `name`'s directory. */
custos_err policy_parse(const char *name, const char *text, size_t len, policy **out,
                        diag_list *d) CUSTOS_WUR;
/* Takes one more reference; returns p. */
policy *policy_ref(policy *p);
/* Drops one reference; the last one frees the policy. NULL is ignored. */
void policy_unref(policy *p);

/* Facts about a compiled policy (for audit and the admin API). */
const char *policy_hash_hex(const policy *p); /* SHA-256 of all files read, 64 hex digits */
/* Whether a decision in dir can depend on the request's taint (on ingress: a rule that
 * applies to ingress compares it, or compares something with it): the proxy fetches the
 * model's taint only then. */
bool policy_needs_taint(const policy *p, policy_direction dir);
const char *policy_name(const policy *p); /* path or name it was compiled from */
policy_mode policy_get_mode(const policy *p);
size_t policy_rule_count(const policy *p);
size_t policy_memory_bytes(const policy *p); /* bytes held by the compiled form */

/* ---------------------------------------------------------------------------------------------
 * Subjects. Lookups return pointers into p (NULL when none matches).
 */
struct policy_attr {
	const char *name;
	const char *value;
	int level; /* the value as a policy_class, or -1 when it names none */
};
struct policy_principal {
	const char *id;
	const char *const *groups;
	size_t n_groups;
	const struct policy_attr *attrs;
	size_t n_attrs;
	uint32_t index; /* 0..n-1, stable for this policy */
};
struct policy_model {
	const char *id;
	const char *sandbox; /* may be NULL */
	policy_isolation isolation;
	uint32_t index;
};
struct policy_data_source {
	const char *id;
	const char *url; /* as written */
	const char *scheme, *host, *path_prefix;
	uint16_t port;
	policy_class classification;
	uint32_t index;
};

/* Identity facts the proxy established for a caller. Unused fields are empty / zero. */
typedef struct policy_identity {
	const span *san_uris; /* mTLS SAN URIs */
	size_t n_san_uris;
	const span *san_dns;
	size_t n_san_dns;
	const span *san_emails;
	size_t n_san_emails;
	span subject_cn; /* mTLS subject CN */
	span issuer_dn;  /* mTLS issuer DN, one-line RFC 2253 form */
	bool has_api_key;
	uint8_t api_key_sha256[32]; /* digest of the presented key; compared with CRYPTO_memcmp */
	span jwt_iss, jwt_sub;      /* verified JWT claims */
	const span *jwt_groups;
	size_t n_jwt_groups;
	unsigned bearer; /* POLICY_BEARER_*: the credential the caller authenticated with */
} policy_identity;

/* A bearer credential names the caller: only a principal whose match uses that kind of
 * credential can be matched, so a key or token that names nobody fails even when the
 * caller's certificate would match another principal. */
#define POLICY_BEARER_API_KEY 0x1u /* the principal's match has api_key_sha256 */
#define POLICY_BEARER_JWT     0x2u /* the principal's match has jwt_iss, jwt_sub or jwt_group */

/* The first principal (file order) all of whose match keys hold for id, and that id's bearer
 * credential names (see POLICY_BEARER_*), or NULL. A key over a fact the caller does not
 * have (an empty span, no SAN of that kind, no API key) is false, whatever the pattern:
 * `jwt_sub: "*"` never matches a caller without a JWT. */
const policy_principal *policy_match_principal(const policy *p, const policy_identity *id);
const policy_principal *policy_find_principal(const policy *p, span id);
/* True when id is one of the names the proxy gives a caller no principal matches: "anonymous",
 * "unknown-api-key", or one that starts with a kind of identity ("cert:", "cert-dns:",
 * "cert-email:", "cert-cn:", "jwt:", "key:"). No principal may be named so (docs/POLICY.md
 * section 3): it would share those callers' rate limits, token budgets and trail name. */
bool policy_principal_id_reserved(span id);
const policy_model *policy_find_model(const policy *p, span id);
const policy_data_source *policy_find_data_id(const policy *p, span id);
/* The data source whose URL has this scheme, host (case-insensitive), exactly this port (0 =
 * the scheme's default) and the longest path prefix of path (on a segment boundary), the path
 * normalised first (see policy_evaluate); NULL also when the path is refused as ambiguous. */
const policy_data_source *policy_find_data_source(const policy *p, span scheme, span host,
                                                  uint16_t port, span path);
/* The same from an absolute URL ("https://host:8443/api/x?q"); NULL for a malformed one too. */
const policy_data_source *policy_find_data_url(const policy *p, span url);

/* An absolute URL split by policy_url_split: views into the text it was given. */
typedef struct policy_url {
	span scheme;   /* before "://", not empty */
	span host;     /* a name, an IPv4 address, or an IPv6 literal with its brackets */
	uint16_t port; /* 0 when none is given */
	span path;     /* from the first '/' up to '?' or '#' ("" when there is none) */
	span rest;     /* from the end of the authority to the end (path, query, fragment) */
} policy_url;
/* The one parser of absolute URLs for policy `url` values, policy_find_data_url and
 * POST /v1/decide's `url`. Returns false, with *why a static reason, for a missing "://" or
 * scheme, user info, an unterminated '[' or a bad IPv6 literal (hex digits, ':' and '.'; no zone id), anything but ":port" after
 * ']', an empty host, a port not in 1..65535, or a '%' in the host not followed by two hex
 * digits. */
bool policy_url_split(span url, policy_url *out, const char **why);
/* A request path as every rule and data source sees it (the one normaliser, so that whatever
 * picks a data source elsewhere agrees with the policy): unreserved %XX decoded, runs of '/'
 * collapsed, the query dropped. False (with *why) for a path that cannot be normalised
 * without guessing (dot segments, %2F, control characters...) or over cap bytes. */
bool policy_path_normalize(span in, char *out, size_t cap, size_t *olen, const char **why);

/* ---------------------------------------------------------------------------------------------
 * Detectors the policy names in inspect: obligations. Indices 0..POLICY_BUILTIN_DETECTORS-1
 * are the built-ins (email, phone, ... jwt, in policy_builtin_detector order); custom ones
 * follow. The inspection engine compiles the custom definitions; the policy only names them.
 */
#define POLICY_BUILTIN_DETECTORS 15
typedef enum policy_validator {
	POLICY_VALIDATOR_NONE = 0,
	POLICY_VALIDATOR_LUHN,
	POLICY_VALIDATOR_MOD97
} policy_validator;
typedef struct policy_detector {
	const char *name;
	bool builtin;
	const char *const *patterns; /* custom: regular expressions (PCRE2 syntax) */
	size_t n_patterns;
	const char *const *keywords; /* custom: words that must appear near a match */
	size_t n_keywords;
	policy_validator validator;
	const char *description;
	bool used_prompt, used_response; /* named by some rule's inspect: (compile only these) */
	uint32_t index;
} policy_detector;
/* One inspect: obligation of a rule: detector index, prompt (0) or response (1), action. */
typedef struct policy_inspect_item {
	uint8_t detector;
	uint8_t response;
	uint8_t action; /* policy_action */
} policy_inspect_item;
/* A rule as written, for tools and the inspection engine (pointers into the policy). */
typedef struct policy_rule_info {
	const char *id, *description, *file;
	unsigned line;
	policy_effect effect;
	const policy_inspect_item *inspect;
	size_t n_inspect;
} policy_rule_info;
/* Fills *out with rule i (0..policy_rule_count-1, file order); false past the end. */
bool policy_rule_at(const policy *p, size_t i, policy_rule_info *out);

/* The built-in detector name for index i < POLICY_BUILTIN_DETECTORS, else NULL. */
const char *policy_builtin_detector(size_t i);
size_t policy_detector_count(const policy *p);
const policy_detector *policy_detector_at(const policy *p, size_t i); /* NULL past the end */

/* ---------------------------------------------------------------------------------------------
 * Evaluation. A request context is filled by the caller (no allocation, no ownership: spans
 * and pointers must outlive the call). Pointers to subjects must come from the same policy.
 */
struct sockaddr;
typedef struct policy_request {
	policy_direction direction;
	const policy_principal *principal; /* NULL: unauthenticated / unknown */
	const policy_model *model;         /* the model served (ingress) or calling (egress) */
	const policy_data_source *data;    /* egress destination, NULL when unknown */
	span method;                       /* "GET" */
	span path;                         /* "/v1/chat/completions", no query */
	span route; /* "POST /v1/chat/completions"; empty: method + " " + path */
	uint64_t body_size;
	uint64_t time_ns;   /* wall clock, ns since the epoch (0: now) */
	policy_class taint; /* highest classification the sandbox has read */
	int isolation;      /* policy_isolation of the running sandbox; -1: the model's */
	bool force_shadow;  /* evaluate as in mode: shadow whatever the policy says */
	/* The client's address on ingress (AF_INET or AF_INET6; the port is ignored): the
	 * PROXY protocol source when a trusted balancer sent one, else the socket peer. NULL:
	 * unknown (a Unix socket), and then no `client` condition holds. */
	const struct sockaddr *client;
} policy_request;

/* Obligations merged over every matching allow rule (most restrictive limit, most severe
 * inspection action, highest audit level). 0 in a limit means "no limit".
 * Rates are kept per window: requests_per[w] / tokens_per[w] is the smallest count any
 * matching rule sets for window w (POLICY_WINDOW_*), and every one of them applies (2 a
 * second and 100000 a day: both hold). requests/requests_window_ns (tokens/..._ns) name the
 * tightest of them by rate, for display. */
enum { POLICY_WINDOW_SECOND = 0, POLICY_WINDOW_MINUTE, POLICY_WINDOW_HOUR, POLICY_WINDOW_DAY };
#define POLICY_WINDOWS 4
extern const uint64_t policy_window_ns[POLICY_WINDOWS]; /* 1 s, 60 s, 3600 s, 86400 s in ns */
typedef struct policy_limits {
	uint64_t requests_per[POLICY_WINDOWS];
	uint64_t tokens_per[POLICY_WINDOWS]; /* [POLICY_WINDOW_SECOND] is always 0 */
	uint64_t requests;
	uint64_t requests_window_ns;
	uint64_t tokens;
	uint64_t tokens_window_ns;
	uint64_t max_body_bytes;
	uint64_t max_tokens;
} policy_limits;

typedef struct policy_decision {
	policy_effect effect;  /* what the proxy must do (always ALLOW in shadow mode) */
	policy_effect verdict; /* what enforcement decides (== effect unless shadow) */
	bool shadow;           /* evaluated in shadow mode */
	bool default_deny;     /* no rule matched */
	const char *reason;    /* static or policy-owned text */
	const char *rules[POLICY_MAX_DECISION_RULES]; /* ids of the deciding rules */
	size_t n_rules;       /* ids stored (<= POLICY_MAX_DECISION_RULES) */
	size_t n_rules_total; /* deciding rules in all */
	size_t n_considered;  /* rules whose conditions were evaluated (index candidates) */
	policy_limits limits;
	policy_audit_level audit;
	uint8_t inspect_prompt[POLICY_MAX_DETECTORS];   /* policy_action per detector index */
	uint8_t inspect_response[POLICY_MAX_DETECTORS]; /* policy_action per detector index */
	bool has_inspect;                               /* any action set */
} policy_decision;

/* Evaluates req against p into *out (overwritten). Never allocates; safe from any thread.
 * The path (and a route's path) is normalised before any rule sees it: percent-encoded
 * unreserved characters are decoded (RFC 3986 6.2.2.2), other percent-encodings written with
 * upper-case hex, other bytes outside RFC 3986 pchar percent-encoded, runs of '/' collapsed,
 * and the part from '?' on dropped. A path that cannot be normalised without guessing (a '.'
 * or '..' segment, an encoded '/' or backslash, a backslash, a control character, a bad or
 * NUL percent-encoding, a non-empty path not starting with '/', longer than POLICY_MAX_PATH)
 * is denied whatever the rules (the reason names it). An empty path stays empty. */
void policy_evaluate(const policy *p, const policy_request *req, policy_decision *out);

/* Explains the decision for req into out as text: the decision, the deciding rules, and for
 * each rule of the request's direction whether it matched and, if not, the first condition
 * that failed and why. Returns CUSTOS_ERR_LIMIT when out is full. */
custos_err policy_explain(const policy *p, const policy_request *req, buf *out) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Hot reload. A store holds the policy in force; readers take a reference (a few nanoseconds
 * under a mutex that is never held during compilation or freeing), so a swap never makes an
 * evaluation wait. A worker may cache its reference and re-get when the generation changes.
 */
typedef struct policy_store policy_store;
/* Creates a store holding initial (takes over the caller's reference; may be NULL). */
custos_err policy_store_new(policy *initial, policy_store **out) CUSTOS_WUR;
void policy_store_free(policy_store *s); /* drops the store's reference */
/* The policy in force with one reference for the caller (NULL when none). */
policy *policy_store_get(policy_store *s);
/* Bumped on every successful swap. */
uint64_t policy_store_generation(const policy_store *s);
/* Puts next in force (taking over the caller's reference) and drops the old one. */
void policy_store_swap(policy_store *s, policy *next);
/* Compiles path; on success swaps it in, on any error keeps the old policy and returns the
 * error with the problems in d. */
custos_err policy_store_reload(policy_store *s, const char *path, diag_list *d) CUSTOS_WUR;

/* ---------------------------------------------------------------------------------------------
 * Tools behind `custos policy test` and `explain`: a request context written as YAML/JSON
 * (docs/POLICY.md "Requests"), and the test runner.
 */
/* Owns what a parsed request's spans point to. Free with policy_request_doc_free. */
typedef struct policy_request_doc policy_request_doc;
/* Parses the request mapping at node of doc into req; problems go to d. */
custos_err policy_request_from_yaml(const policy *p, const ydoc *doc, ydoc_node *node,
                                    policy_request *req, policy_request_doc **keep,
                                    diag_list *d) CUSTOS_WUR;
/* Parses a request text in YAML, of which JSON is mostly a subset (the request files of
 * `custos policy explain` and `test`). At most 1 MiB. */
custos_err policy_request_parse(const policy *p, const char *text, size_t len, policy_request *req,
                                policy_request_doc **keep, diag_list *d) CUSTOS_WUR;
/* The same, with diagnostics placed in `name` (the file the text came from) rather than
 * "<request>". */
custos_err policy_request_parse_named(const policy *p, const char *name, const char *text,
                                      size_t len, policy_request *req, policy_request_doc **keep,
                                      diag_list *d) CUSTOS_WUR;
/* The same for strict JSON (ydoc_parse_json), what POST /v1/decide takes. */
custos_err policy_request_parse_json(const policy *p, const char *text, size_t len,
                                     policy_request *req, policy_request_doc **keep,
                                     diag_list *d) CUSTOS_WUR;
void policy_request_doc_free(policy_request_doc *k);

typedef struct policy_test_result {
	size_t passed, failed;
} policy_test_result;
/* Runs the cases in tests_path against p: one line per failing case to `report` (a FILE*),
 * no summary. CUSTOS_OK when the file was read (whatever the outcome); problems in the test
 * file itself go to d. */
custos_err policy_run_tests(const policy *p, const char *tests_path, void *report,
                            policy_test_result *res, diag_list *d) CUSTOS_WUR;

#endif /* CUSTOS_POLICY_H */
