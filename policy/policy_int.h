/*
 * policy internals shared by the compiler, the evaluator and the tools: the compiled form
 * (everything lives in one arena owned by the policy), the string map, time zones.
 */
#ifndef CUSTOS_POLICY_INT_H
#define CUSTOS_POLICY_INT_H

#include <stdatomic.h>

#include "custos/cidr.h"
#include "custos/policy.h"

/* ---- arena: one bump allocator per compiled policy; freed in one go. Aborts on OOM (the
 * inputs are bounded by the POLICY_MAX_* limits). */
typedef struct arena_chunk arena_chunk;
typedef struct arena {
	arena_chunk *head;
	size_t total; /* bytes allocated from the system */
} arena;
void *arena_alloc(arena *a, size_t n); /* zeroed, 16-byte aligned */
char *arena_strdup(arena *a, const char *s, size_t len);
void arena_free(arena *a);

/* ---- string -> u32 map (open addressing, FNV-1a). Keys are not copied. */
typedef struct pmap_ent {
	const char *str; /* NULL: empty slot */
	uint32_t len;
	uint32_t val;
	uint64_t h;
} pmap_ent;
typedef struct pmap {
	pmap_ent *ents;
	size_t cap, n; /* cap: power of two */
} pmap;
uint64_t pmap_hash(const char *s, size_t len);
uint64_t pmap_hash_more(uint64_t h, const char *s, size_t len);
#define PMAP_HASH_INIT 1469598103934665603ull
/* Inserts key -> val unless present; returns true when inserted, false with *existing set. */
bool pmap_put(pmap *m, arena *a, const char *key, size_t len, uint32_t val, uint32_t *existing);
bool pmap_get_h(const pmap *m, uint64_t h, const char *key, size_t len, uint32_t *val);
static inline bool pmap_get(const pmap *m, const char *key, size_t len, uint32_t *val)
{
	return pmap_get_h(m, pmap_hash(key, len), key, len, val);
}

/* ---- time zones (policy_tz.c): read from the TZ database at compile time. */
typedef struct ptz {
	const char *name;
	int64_t *trans; /* UTC seconds of each transition, ascending */
	int32_t *offs;  /* UTC offset in seconds from trans[i] on */
	uint32_t n;
	int32_t off0; /* before the first transition */
	/* POSIX rule for instants after the last transition (from the TZif footer) */
	bool has_rule;
	int32_t std_off, dst_off; /* seconds east of UTC */
	struct ptz_rule {
		uint8_t kind; /* 0 = Mm.w.d, 1 = Jn, 2 = n */
		uint16_t m, w, d;
		int32_t time; /* seconds after local midnight */
	} start, end;
} ptz;
/* Loads zone `name` ("UTC", "+05:30", "Europe/Paris") into *out, arrays in a. */
custos_err ptz_load(arena *a, const char *name, ptz *out) CUSTOS_WUR;
/* UTC offset in seconds at UTC instant t. */
int32_t ptz_offset(const ptz *z, int64_t t);

/* ---- compiled form */
enum ord_op { ORD_EQ = 0, ORD_ABOVE, ORD_BELOW, ORD_AT_LEAST, ORD_AT_MOST };
enum ord_rhs { RHS_LIT = 0, RHS_DATA_CLASS, RHS_TAINT, RHS_ATTR };
struct ord_cond {
	uint8_t op, rhs;
	int8_t lit;
	uint32_t attr; /* attribute name id for RHS_ATTR */
	const char *rhs_text;
};
struct attr_cond {
	uint32_t name_id;
	const char *name;
	bool ordered;
	struct ord_cond ord;
	const char *const *values;
	uint32_t n_values;
};
enum path_kind { PATH_EXACT = 0, PATH_PREFIX, PATH_GLOB };
struct path_pat {
	uint8_t kind;
	const char *s;
	uint32_t len;
};
struct time_cond {
	uint8_t days; /* bit 0 = Monday .. bit 6 = Sunday */
	uint16_t from_min, to_min;
	uint32_t tz;
	const char *text;
};

enum cond_bit {
	C_DIRECTION = 1u << 0,
	C_PRINCIPAL = 1u << 1,
	C_GROUP = 1u << 2,
	C_ATTR = 1u << 3,
	C_MODEL = 1u << 4,
	C_ISOLATION = 1u << 5,
	C_DATA = 1u << 6,
	C_CLASS = 1u << 7,
	C_TAINT = 1u << 8,
	C_METHOD = 1u << 9,
	C_ROUTE = 1u << 10,
	C_PATH = 1u << 11,
	C_BODY = 1u << 12,
	C_TIME = 1u << 13,
	C_CLIENT = 1u << 14,
};
/* One range of a `client` condition, with its text as written (for explain). */
struct client_range {
	custos_cidr r;
	const char *text;
};

typedef struct prule {
	const char *id, *description, *file;
	unsigned line, col;
	uint8_t effect, dirs; /* dirs: bit 0 ingress, bit 1 egress */
	uint32_t present;     /* cond_bit set */
	uint32_t index;
	uint32_t *principals, n_principals;
	uint32_t *groups, n_groups;
	struct attr_cond *attrs;
	uint32_t n_attrs;
	uint32_t *models, n_models;
	struct ord_cond iso;
	uint32_t *data, n_data;
	struct ord_cond cls;
	struct ord_cond taint;
	span *methods;
	uint32_t n_methods;
	uint32_t *routes, n_routes;
	struct path_pat *paths;
	uint32_t n_paths;
	uint64_t body_min, body_max; /* inclusive */
	struct time_cond *times;
	uint32_t n_times;
	struct client_range *clients; /* any-of; ingress only */
	uint32_t n_clients;
	/* obligations (allow rules) */
	bool has_limits, has_audit;
	policy_limits limits;
	uint8_t audit;
	policy_inspect_item *inspect;
	uint32_t n_inspect;
} prule;

struct pmatch {
	const char *san_uri, *san_dns, *san_email, *cn, *issuer, *jwt_iss, *jwt_sub, *jwt_group;
	bool has_key;
	uint8_t key[32];
};
typedef struct pprincipal {
	policy_principal pub; /* first: a policy_principal* converts back */
	uint32_t *group_ids;
	uint32_t *attr_ids;
	struct pmatch m;
	const char *file;
	unsigned line, col;
} pprincipal;

struct bucket {
	uint32_t *rules;
	uint32_t n, cap;
};
/* (model, route) pairs for rules that name both but no principal; key 0 = empty slot. */
struct pair_bucket {
	uint64_t key; /* (model index + 1) << 32 | route index */
	struct bucket b;
};
#define PAIR_MAX_PER_RULE 64 /* rules with more model x route pairs go by model alone */
struct dir_index {
	struct bucket *by_principal, *by_model, *by_data, *by_route;
	struct pair_bucket *by_pair;
	uint32_t pair_cap; /* power of two, or 0 */
	struct bucket wildcard;
};
static inline uint64_t pair_key(uint32_t model, uint32_t route)
{
	return (uint64_t)(model + 1) << 32 | route;
}
static inline const struct bucket *pair_find(const struct dir_index *x, uint64_t key)
{
	if (x->pair_cap == 0)
		return NULL;
	uint64_t h = key * 0x9e3779b97f4a7c15ull;
	for (uint32_t j = (uint32_t)(h >> 40) & (x->pair_cap - 1);;
	     j = (j + 1) & (x->pair_cap - 1)) {
		if (x->by_pair[j].key == key)
			return &x->by_pair[j].b;
		if (x->by_pair[j].key == 0)
			return NULL;
	}
}

struct policy {
	atomic_uint refs;
	arena a;
	char *name;
	char hash[65];
	policy_mode mode;
	pprincipal *principals;
	uint32_t n_principals;
	policy_model *models;
	uint32_t n_models;
	policy_data_source *data;
	uint32_t n_data;
	policy_detector *detectors;
	uint32_t n_detectors;
	prule *rules;
	uint32_t n_rules;
	ptz *zones;
	uint32_t n_zones;
	const char **routes; /* route id -> text */
	uint32_t n_routes;
	uint32_t n_groups, n_attr_names;
	pmap principal_ids, model_ids, data_ids, detector_ids, route_ids, group_ids, attr_ids;
	struct dir_index idx[2];
	bool ingress_taint; /* a rule that applies to ingress compares taint (policy_needs_taint) */
};

/* Evaluator entry used by explain: true when r matches req; when why != NULL, appends the
 * reason (which condition failed, or "all conditions hold"). */
bool prule_match(const policy *p, const prule *r, const policy_request *req, uint64_t now_ns,
                 buf *why);
/* Globs longer than this are refused at compile time (the matcher keeps its state on the stack). */
#define POLICY_MAX_GLOB 256
/* Glob match ('*', '**', '?'): '?' and every step of a star take one UTF-8 character (an
 * invalid byte counts as one). With path set, a percent-encoded UTF-8 sequence of a
 * normalised path ("%C3%A9") is one character too. */
bool policy_glob_match_in(const char *pat, size_t plen, const char *s, size_t slen, bool path);
static inline bool policy_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
	return policy_glob_match_in(pat, plen, s, slen, false);
}
/* Normalises a path (policy_evaluate in policy.h says how) into out[0..cap): true with
 * *olen, or false with *why (static text: "it has a '..' segment"). glob: a '?' is a
 * pattern character, not the start of a query. */
bool ppath_normalize(span in, bool glob, char *out, size_t cap, size_t *olen, const char **why);
/* An IPv6 literal host ("[::1]", or bare "::1" as the egress proxy holds it) in one spelling:
 * "[" inet_ntop's canonical text "]" (so [0:0::1] and [::1] are one host). False (out
 * untouched) for any other host, a name or an IPv4 address, compared as written. */
#define PHOST_V6_MAX 48
bool phost_v6_canon(span host, char out[PHOST_V6_MAX]);
/* A request with its path and route normalised, in storage that lives as long as it. */
struct preq {
	policy_request r;
	const char *refused; /* why the path was refused, or NULL */
	char path[POLICY_MAX_PATH];
	char route[POLICY_MAX_PATH + 64];
};
void preq_init(struct preq *n, const policy_request *req);
/* The route id of req (normalised) or UINT32_MAX. */
uint32_t policy_route_of(const policy *p, const policy_request *req);
/* policy_evaluate over a normalised request; all (cap entries, may be NULL) receives every
 * deciding rule's id, not only the first POLICY_MAX_DECISION_RULES. */
void policy_evaluate_n(const policy *p, const struct preq *n, policy_decision *out,
                       const char **all, size_t cap);

#endif
