/*
 * policy compiler: policy.yaml (and its includes) -> validated, immutable, indexed form.
 * Every problem is reported with file:line:col; nothing with an error is ever returned.
 * Warnings: rules that can never match, allow rules shadowed by a deny, obligations that
 * cannot apply.
 */
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custos/inspect.h"
#include "custos/lazylib.h"
#include "policy_int.h"

static const char *const builtin_detectors[POLICY_BUILTIN_DETECTORS] = {
	"email",        "phone",       "payment_card",   "iban",           "us_ssn",
	"ipv4",         "ipv6",        "aws_access_key", "aws_secret_key", "github_token",
	"gitlab_token", "slack_token", "stripe_key",     "private_key",    "jwt",
};
static const char *const class_names[] = { "public", "internal", "confidential", "restricted" };
static const char *const iso_names[] = { "none", "process", "vm", "vm-dedicated-gpu" };
static const char *const action_names[] = { "none", "log", "redact", "deny" };
static const char *const audit_names[] = { "metadata", "bodies_hashed", "bodies" };

const char *policy_builtin_detector(size_t i)
{
	return i < POLICY_BUILTIN_DETECTORS ? builtin_detectors[i] : NULL;
}
const char *policy_class_name(policy_class c)
{
	return (unsigned)c < POLICY_CLASS__COUNT ? class_names[c] : "?";
}
const char *policy_isolation_name(policy_isolation i)
{
	return (unsigned)i < POLICY_ISO__COUNT ? iso_names[i] : "?";
}
const char *policy_action_name(policy_action a)
{
	return (unsigned)a <= POLICY_ACT_DENY ? action_names[a] : "?";
}
const char *policy_audit_level_name(policy_audit_level a)
{
	return (unsigned)a <= POLICY_AUDIT_BODIES ? audit_names[a] : "?";
}
static bool level_parse(span s, const char *const *names, size_t n, int *out)
{
	for (size_t i = 0; i < n; i++)
		if (span_eq_cstr(s, names[i])) {
			*out = (int)i;
			return true;
		}
	return false;
}
bool policy_class_parse(span s, policy_class *out)
{
	int v;
	if (!level_parse(s, class_names, 4, &v))
		return false;
	*out = (policy_class)v;
	return true;
}
bool policy_isolation_parse(span s, policy_isolation *out)
{
	int v;
	if (!level_parse(s, iso_names, 4, &v))
		return false;
	*out = (policy_isolation)v;
	return true;
}

/* ---------------------------------------------------------------------------------------------
 * Compile state
 */
struct cfile {
	ydoc doc;          /* first: a const ydoc * of a file converts back */
	const char *aname; /* the file's name, in the policy's arena (rules point to it) */
	char *real;        /* realpath, for cycle detection */
	char *dir;         /* directory includes resolve against */
	bool parsed;
};

struct cc {
	policy *p;
	diag_list *d;
	struct cfile files[POLICY_MAX_FILES];
	size_t n_files;
	size_t stack[POLICY_MAX_INCLUDE_DEPTH + 2]; /* files[] being read, outermost first */
	size_t depth;
	EVP_MD_CTX *sha;
	size_t cap_principals, cap_models, cap_data, cap_detectors, cap_rules;
	pmap rule_ids;
	size_t cap_zones, cap_routes;
	const char **group_names;
	size_t cap_groups;
	uint32_t *group_members; /* principals per group id */
	const char **attr_names;
	size_t cap_attrs;
	uint32_t *attr_holders;
	int hs_state; /* Hyperscan for pattern checks: 0 not tried, 1 loaded, -1 missing */
	bool hs_warned;
	/* ydoc positions for warnings after the rule pass */
	const ydoc **rule_doc;
	ydoc_node **rule_node;
	const ydoc **model_doc;
	ydoc_node **model_node;
	const ydoc **data_doc;
	ydoc_node **data_node;
	const ydoc **det_doc;
	ydoc_node **det_node;
	/* principals' attributes: positions for the level check after the rule pass */
	const ydoc **princ_doc;
	ydoc_node **princ_attrs;
	const char **attr_ordered_by; /* per attribute id: a rule comparing it in order */
	const prule *cur_rule;        /* the rule being parsed */
};

/* Attribute id a is compared in order by the rule being parsed: its values must be levels. */
static void attr_ordered(struct cc *c, uint32_t a)
{
	if (c->attr_ordered_by && a < c->p->n_attr_names && c->attr_ordered_by[a] == NULL)
		c->attr_ordered_by[a] = c->cur_rule ? c->cur_rule->id : "?";
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* ---- list helpers: a scalar or a sequence of scalars */
static bool str_list(struct cc *c, const ydoc *doc, ydoc_node *n, const char ***out, uint32_t *nout)
{
	if (n->kind == YDOC_SCALAR) {
		const char *s;
		if (!ydoc_str(doc, n, &s, c->d))
			return false;
		const char **v = arena_alloc(&c->p->a, sizeof(*v));
		v[0] = arena_strdup(&c->p->a, s, n->len);
		*out = v;
		*nout = 1;
		return true;
	}
	if (n->kind != YDOC_SEQ) {
		ydoc_error(doc, n, c->d, NULL, "expected a string or a list of strings");
		return false;
	}
	if (n->n == 0) {
		/* in a rule's conditions an empty list is one no request meets; elsewhere (a
		 * detector's patterns, a principal's groups) it is a list with nothing in it */
		if (c->cur_rule)
			ydoc_error(doc, n, c->d, NULL,
			           "empty list: the condition could never hold");
		else
			ydoc_error(doc, n, c->d, "give at least one item, or omit the key",
			           "empty list");
		return false;
	}
	if (n->n > POLICY_MAX_LIST) {
		ydoc_error(doc, n, c->d, NULL, "list of %zu items is over the limit of %d", n->n,
		           POLICY_MAX_LIST);
		return false;
	}
	const char **v = arena_alloc(&c->p->a, sizeof(*v) * n->n);
	bool ok = true;
	for (size_t i = 0; i < n->n; i++) {
		const char *s;
		if (!ydoc_str(doc, n->items[i], &s, c->d)) {
			ok = false;
			continue;
		}
		v[i] = arena_strdup(&c->p->a, s, n->items[i]->len);
	}
	*out = v;
	*nout = (uint32_t)n->n;
	return ok;
}

static ydoc_node *list_item(ydoc_node *n, size_t i)
{
	return n->kind == YDOC_SEQ ? n->items[i] : n;
}

static bool name_ok(struct cc *c, const ydoc *doc, ydoc_node *n, const char *what)
{
	if (n->kind != YDOC_SCALAR || n->len == 0 || n->len > POLICY_MAX_NAME ||
	    strlen(n->str) != n->len) {
		ydoc_error(doc, n, c->d, NULL, "%s must be a non-empty name of at most %d bytes",
		           what, POLICY_MAX_NAME);
		return false;
	}
	for (size_t i = 0; i < n->len; i++) {
		unsigned char ch = (unsigned char)n->str[i];
		if (ch <= ' ' || ch == 0x7f) {
			ydoc_error(doc, n, c->d, NULL,
			           "%s '%s' contains a space or control character", what, n->str);
			return false;
		}
	}
	return true;
}

/* Unknown-reference error with a "did you mean" hint over a pmap's keys. */
static void unknown_ref(struct cc *c, const ydoc *doc, ydoc_node *n, const char *what,
                        const pmap *m)
{
	const char *hint = NULL;
	char hb[POLICY_MAX_NAME + 32];
	if (m->n > 0 && m->n <= 10000) {
		const char **cands = xcalloc(m->n, sizeof(*cands));
		size_t k = 0;
		for (size_t i = 0; i < m->cap; i++)
			if (m->ents[i].str)
				cands[k++] = m->ents[i].str;
		const char *g = diag_suggest((span){ n->str, n->len }, cands, k);
		if (g) {
			snprintf(hb, sizeof(hb), "did you mean '%s'?", g);
			hint = hb;
		}
		free(cands);
	}
	ydoc_error(doc, n, c->d, hint, "unknown %s '%s'", what, n->str);
}

/* Interns a name into map m (growing names[]/counts[]); returns its id. */
static uint32_t intern(struct cc *c, pmap *m, const char ***names, size_t *cap, uint32_t *count,
                       uint32_t **members, const char *s, size_t len)
{
	uint32_t id;
	if (pmap_get(m, s, len, &id))
		return id;
	if (*count == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		const char **nn = xcalloc(ncap, sizeof(*nn));
		uint32_t *nm = xcalloc(ncap, sizeof(*nm));
		if (*count) {
			memcpy(nn, *names, *count * sizeof(*nn));
			memcpy(nm, *members, *count * sizeof(*nm));
		}
		free(*names);
		free(*members);
		*names = nn;
		*members = nm;
		*cap = ncap;
	}
	char *k = arena_strdup(&c->p->a, s, len);
	id = (*count)++;
	(*names)[id] = k;
	(*members)[id] = 0;
	(void)pmap_put(m, &c->p->a, k, len, id, NULL);
	return id;
}

static uint32_t group_id(struct cc *c, const char *s, size_t len)
{
	return intern(c, &c->p->group_ids, &c->group_names, &c->cap_groups, &c->p->n_groups,
	              &c->group_members, s, len);
}
static uint32_t attr_id(struct cc *c, const char *s, size_t len)
{
	return intern(c, &c->p->attr_ids, &c->attr_names, &c->cap_attrs, &c->p->n_attr_names,
	              &c->attr_holders, s, len);
}

/* ---------------------------------------------------------------------------------------------
 * Files and includes
 */
static const char *const top_keys[] = { "version",    "mode",   "include", "detectors",
	                                "principals", "models", "data",    "rules" };

static custos_err load_file(struct cc *c, const char *name, const char *text, size_t len,
                            const char *real, const ydoc *from, ydoc_node *at);

static custos_err load_path(struct cc *c, const char *path, const ydoc *from, ydoc_node *at)
{
	char *real = realpath(path, NULL);
	if (real == NULL) {
		if (from)
			ydoc_error(from, at, c->d, NULL, "include '%s': %s", path, strerror(errno));
		else
			diag_add(c->d, DIAG_ERROR, path, 0, 0, NULL, "%s", strerror(errno));
		return CUSTOS_ERR_NOTFOUND;
	}
	for (size_t i = 0; i < c->depth; i++) {
		const struct cfile *open_f = &c->files[c->stack[i]];
		if (open_f->real == NULL || strcmp(open_f->real, real) != 0)
			continue;
		/* the file that closes the cycle is the one including, the chain shows how */
		char chain[1024];
		size_t off = 0;
		for (size_t j = i; j < c->depth && off < sizeof(chain); j++)
			off += (size_t)snprintf(chain + off, sizeof(chain) - off, "%s -> ",
			                        c->files[c->stack[j]].aname);
		if (off < sizeof(chain))
			snprintf(chain + off, sizeof(chain) - off, "%s", open_f->aname);
		ydoc_error(from, at, c->d, NULL,
		           "include cycle: '%s' includes '%s', which is already being read (%s)",
		           from ? from->file : "?", path, chain);
		free(real);
		return CUSTOS_ERR_INVAL;
	}
	for (size_t i = 0; i < c->n_files; i++) {
		if (c->files[i].real && strcmp(c->files[i].real, real) == 0) {
			ydoc_warn(from, at, c->d, NULL, "'%s' is already included; ignored", path);
			free(real);
			return CUSTOS_OK;
		}
	}
	buf b;
	buf_init(&b, POLICY_MAX_FILE_BYTES);
	custos_err e = file_load(path, FILE_CONFIG, POLICY_MAX_FILE_BYTES, &b);
	if (e != CUSTOS_OK) {
		if (from)
			ydoc_error(from, at, c->d, NULL, "include: %s", err_msg());
		else
			diag_add(c->d, DIAG_ERROR, path, 0, 0, NULL, "%s", err_msg());
		buf_free(&b);
		free(real);
		return e;
	}
	e = load_file(c, path, (const char *)buf_ptr(&b), buf_used(&b), real, from, at);
	buf_free(&b);
	free(real);
	return e;
}

static custos_err load_file(struct cc *c, const char *name, const char *text, size_t len,
                            const char *real, const ydoc *from, ydoc_node *at)
{
	if (c->n_files >= POLICY_MAX_FILES) {
		ydoc_error(from, at, c->d, NULL, "more than %d policy files", POLICY_MAX_FILES);
		return CUSTOS_ERR_LIMIT;
	}
	if (c->depth > POLICY_MAX_INCLUDE_DEPTH) {
		ydoc_error(from, at, c->d, NULL, "includes nested deeper than %d",
		           POLICY_MAX_INCLUDE_DEPTH);
		return CUSTOS_ERR_LIMIT;
	}
	/* hash: each file's length and content, in the order read (the include lists, which
	 * are content, fix the order): how a path is spelled never changes it */
	uint64_t tl = len;
	EVP_DigestUpdate(c->sha, &tl, sizeof(tl));
	EVP_DigestUpdate(c->sha, text, len);

	struct cfile *f = &c->files[c->n_files++];
	f->real = real ? xstrdup(real) : NULL;
	f->dir = dir_of(name);
	f->aname = arena_strdup(&c->p->a, name, strlen(name));
	custos_err e = ydoc_parse(&f->doc, name, text, len, c->d);
	if (e != CUSTOS_OK)
		return e;
	f->parsed = true;
	ydoc *doc = &f->doc;
	ydoc_node *root = doc->root;
	if (root == NULL) {
		diag_add(c->d, DIAG_ERROR, name, 1, 1, NULL, "empty policy file");
		return CUSTOS_ERR_PARSE;
	}
	if (!ydoc_expect(doc, root, YDOC_MAP, "a policy file", c->d))
		return CUSTOS_ERR_PARSE;
	(void)ydoc_check_keys(doc, root, top_keys, CUSTOS_ARRAY_LEN(top_keys), c->d);
	ydoc_node *v = ydoc_map_get(root, "version");
	uint64_t ver;
	if (v && ydoc_u64(doc, v, 0, UINT64_MAX, &ver, c->d) && ver != 1)
		ydoc_error(doc, v, c->d, "write version: 1", "unknown policy version %llu",
		           (unsigned long long)ver);
	if (v == NULL && from == NULL)
		diag_add(c->d, DIAG_ERROR, name, root->line, root->col, "add 'version: 1'",
		         "missing key 'version'");
	ydoc_node *mode = ydoc_map_get(root, "mode");
	if (mode) {
		if (from) {
			ydoc_error(doc, mode, c->d, NULL,
			           "'mode' may be set only in the top policy file");
		} else {
			static const char *const modes[] = { "enforce", "shadow" };
			int m;
			if (ydoc_enum(doc, mode, modes, 2, &m, c->d))
				c->p->mode = (policy_mode)m;
		}
	}
	ydoc_node *inc = ydoc_map_get(root, "include");
	if (inc == NULL)
		return CUSTOS_OK;
	if (inc->kind == YDOC_SCALAR) {
		ydoc_error(doc, inc, c->d, "write include: [file.yaml]",
		           "'include' must be a list");
		return CUSTOS_ERR_PARSE;
	}
	if (!ydoc_expect(doc, inc, YDOC_SEQ, "a list of files", c->d))
		return CUSTOS_ERR_PARSE;
	const char *dir = xstrdup(f->dir); /* f may move? no: fixed array; copy for clarity */
	c->stack[c->depth++] = (size_t)(f - c->files);
	for (size_t i = 0; i < inc->n; i++) {
		const char *s;
		if (!ydoc_str(doc, inc->items[i], &s, c->d))
			continue;
		if (s[0] == '\0') {
			ydoc_error(doc, inc->items[i], c->d, NULL, "empty include path");
			continue;
		}
		char path[PATH_MAX];
		int pn = s[0] == '/' ? snprintf(path, sizeof(path), "%s", s)
		                     : snprintf(path, sizeof(path), "%s/%s", dir, s);
		if (pn < 0 || (size_t)pn >= sizeof(path)) {
			/* never a truncated path: that would name another file */
			char hint[96];
			snprintf(hint, sizeof(hint),
			         "the path, joined to the including file's directory, "
			         "must be under %d bytes (PATH_MAX)",
			         PATH_MAX);
			ydoc_error(doc, inc->items[i], c->d, hint, "include path too long");
			continue;
		}
		(void)load_path(c, path, doc, inc->items[i]);
	}
	c->depth--;
	free((void *)dir);
	return CUSTOS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Subjects: detectors, principals, models, data sources
 */
static size_t count_map(struct cc *c, const char *key)
{
	size_t n = 0;
	for (size_t i = 0; i < c->n_files; i++) {
		if (!c->files[i].parsed || c->files[i].doc.root == NULL ||
		    c->files[i].doc.root->kind != YDOC_MAP)
			continue;
		ydoc_node *m = ydoc_map_get(c->files[i].doc.root, key);
		if (m && (m->kind == YDOC_MAP || m->kind == YDOC_SEQ))
			n += m->n;
	}
	return n;
}

/* A second definition: the error is at it, the hint names the first (ids are unique across
 * all included files). */
static void dup_error(struct cc *c, const ydoc *doc, ydoc_node *n, const char *what,
                      const char *first_file, unsigned line, unsigned col)
{
	char hint[POLICY_MAX_NAME + 4096];
	snprintf(hint, sizeof(hint), "first defined at %s:%u:%u", first_file, line, col);
	ydoc_error(doc, n, c->d, hint, "duplicate %s id '%s'", what, n->str);
}

static const char *file_name(const ydoc *doc)
{
	return ((const struct cfile *)doc)->aname;
}

/* A custom pattern is compiled as the inspection engine will compile it, so that `policy
 * check` refuses what the proxy would refuse at start, with the pattern's position. */
static void check_pattern(struct cc *c, const ydoc *doc, ydoc_node *n, const char *det,
                          const char *pattern)
{
	if (pattern[0] == '\0') {
		ydoc_error(doc, n, c->d, NULL, "empty pattern");
		return;
	}
	if (c->hs_state == 0)
		c->hs_state = lazylib_hyperscan() == CUSTOS_OK ? 1 : -1;
	if (c->hs_state < 0) {
		if (!c->hs_warned)
			ydoc_warn(doc, n, c->d, NULL,
			          "detector patterns are not checked here: %s (the proxy compiles "
			          "them at start)",
			          err_msg());
		c->hs_warned = true;
		return;
	}
	unsigned width = 0;
	if (inspect_pattern_compile(pattern, &width) != CUSTOS_OK)
		ydoc_error(
		        doc, n, c->d,
		        "detector patterns use the Hyperscan (PCRE subset) syntax and are compiled "
		        "for streaming; a large bounded repeat may not fit",
		        "detector '%s': %s", det, err_msg());
	else if (width > INSPECT_MAX_PATTERN_WIDTH)
		ydoc_warn(doc, n, c->d,
		          "bound the repeats (e.g. {1,64} for +) if the values are shorter; block "
		          "scans and JSON bodies see a match whole",
		          "detector '%s': a match may be longer than %d bytes "
		          "(INSPECT_MAX_PATTERN_WIDTH): in a stream its first part may be released "
		          "before it is found",
		          det, INSPECT_MAX_PATTERN_WIDTH);
}

static void parse_detector(struct cc *c, const ydoc *doc, ydoc_node *k, ydoc_node *v)
{
	static const char *const keys[] = { "patterns", "keywords", "validator", "description" };
	policy *p = c->p;
	if (!name_ok(c, doc, k, "detector name"))
		return;
	for (size_t i = 0; i < POLICY_BUILTIN_DETECTORS; i++)
		if (strcmp(k->str, builtin_detectors[i]) == 0) {
			ydoc_error(doc, k, c->d, NULL,
			           "'%s' is a built-in detector; pick another name", k->str);
			return;
		}
	if (!ydoc_expect(doc, v, YDOC_MAP, "a detector", c->d))
		return;
	(void)ydoc_check_keys(doc, v, keys, CUSTOS_ARRAY_LEN(keys), c->d);
	if (p->n_detectors >= POLICY_MAX_DETECTORS) {
		ydoc_error(doc, k, c->d, NULL, "more than %d detectors", POLICY_MAX_DETECTORS);
		return;
	}
	policy_detector *det = &p->detectors[p->n_detectors];
	det->name = arena_strdup(&p->a, k->str, k->len);
	uint32_t prev;
	if (!pmap_put(&p->detector_ids, &p->a, det->name, k->len, p->n_detectors, &prev)) {
		if (prev < POLICY_BUILTIN_DETECTORS) /* checked above; kept for safety */
			ydoc_error(doc, k, c->d, NULL, "'%s' is a built-in detector", k->str);
		else
			dup_error(c, doc, k, "detector", file_name(c->det_doc[prev]),
			          c->det_node[prev]->line, c->det_node[prev]->col);
		return;
	}
	c->det_doc[p->n_detectors] = doc;
	c->det_node[p->n_detectors] = k;
	ydoc_node *pat = ydoc_map_get(v, "patterns"), *kw = ydoc_map_get(v, "keywords");
	uint32_t n;
	if (pat == NULL) {
		ydoc_error(doc, k, c->d, NULL, "detector '%s' needs 'patterns'", k->str);
	} else if (str_list(c, doc, pat, (const char ***)&det->patterns, &n)) {
		det->n_patterns = n;
		if (n > POLICY_MAX_CUSTOM_PATTERNS)
			ydoc_error(doc, pat, c->d, NULL, "more than %d patterns",
			           POLICY_MAX_CUSTOM_PATTERNS);
		for (size_t i = 0; i < n; i++)
			check_pattern(c, doc, list_item(pat, i), k->str, det->patterns[i]);
	}
	if (kw && str_list(c, doc, kw, (const char ***)&det->keywords, &n)) {
		det->n_keywords = n;
		if (n > POLICY_MAX_CUSTOM_PATTERNS)
			ydoc_error(doc, kw, c->d, NULL, "more than %d keywords",
			           POLICY_MAX_CUSTOM_PATTERNS);
		for (size_t i = 0; i < n; i++) {
			size_t kl = strlen(det->keywords[i]);
			if (kl == 0 || kl > INSPECT_MAX_PATTERN_LEN)
				ydoc_error(doc, list_item(kw, i), c->d, NULL,
				           "a keyword is 1..%d bytes", INSPECT_MAX_PATTERN_LEN);
			else if (c->hs_state > 0 &&
			         inspect_keyword_compile(det->keywords[i], NULL) != CUSTOS_OK)
				ydoc_error(doc, list_item(kw, i), c->d, NULL, "detector '%s': %s",
				           k->str, err_msg());
		}
	}
	ydoc_node *val = ydoc_map_get(v, "validator");
	if (val) {
		static const char *const vals[] = { "none", "luhn", "mod97" };
		int x;
		if (ydoc_enum(doc, val, vals, 3, &x, c->d))
			det->validator = (policy_validator)x;
	}
	ydoc_node *desc = ydoc_map_get(v, "description");
	const char *s;
	if (desc && ydoc_str(doc, desc, &s, c->d))
		det->description = arena_strdup(&p->a, s, desc->len);
	det->index = p->n_detectors++;
}

static char *lower_dup(arena *a, span s);

static bool hex32(const char *s, size_t len, uint8_t out[32])
{
	return len == 64 && num_parse_hex(span_of(s, len), out, 32) == CUSTOS_OK;
}

static void parse_principal(struct cc *c, const ydoc *doc, ydoc_node *k, ydoc_node *v)
{
	static const char *const keys[] = { "match", "groups", "attributes", "description" };
	static const char *const mkeys[] = { "cert_san_uri", "cert_san_dns", "cert_san_email",
		                             "cert_cn",      "cert_issuer",  "api_key_sha256",
		                             "jwt_iss",      "jwt_sub",      "jwt_group" };
	policy *p = c->p;
	if (!name_ok(c, doc, k, "principal id") ||
	    !ydoc_expect(doc, v, YDOC_MAP, "a principal", c->d))
		return;
	/* still recorded, so that the rules naming it add no "unknown principal" errors */
	if (policy_principal_id_reserved(span_of(k->str, k->len)))
		ydoc_error(
		        doc, k, c->d, "rename the principal",
		        "principal id '%s' is reserved: the proxy names callers no principal "
		        "matches 'anonymous', 'unknown-api-key', 'cert:...', 'cert-dns:...', "
		        "'cert-email:...', 'cert-cn:...', 'jwt:...' or 'key:...', and a principal "
		        "so named would share their rate limits, token budgets and name in the "
		        "trail",
		        k->str);
	(void)ydoc_check_keys(doc, v, keys, CUSTOS_ARRAY_LEN(keys), c->d);
	pprincipal *pr = &p->principals[p->n_principals];
	pr->pub.id = arena_strdup(&p->a, k->str, k->len);
	pr->file = ((const struct cfile *)doc)->aname;
	pr->line = k->line;
	pr->col = k->col;
	uint32_t prev;
	if (!pmap_put(&p->principal_ids, &p->a, pr->pub.id, k->len, p->n_principals, &prev)) {
		dup_error(c, doc, k, "principal", p->principals[prev].file,
		          p->principals[prev].line, p->principals[prev].col);
		return;
	}
	c->princ_doc[p->n_principals] = doc;
	pr->pub.index = p->n_principals++;
	ydoc_node *m = ydoc_map_get(v, "match");
	if (m == NULL) {
		ydoc_error(doc, k, c->d, "e.g. match: { cert_san_uri: \"spiffe://corp/app\" }",
		           "principal '%s' needs 'match'", k->str);
	} else if (ydoc_expect(doc, m, YDOC_MAP, "'match'", c->d)) {
		(void)ydoc_check_keys(doc, m, mkeys, CUSTOS_ARRAY_LEN(mkeys), c->d);
		if (m->n == 0)
			ydoc_error(doc, m, c->d, NULL, "empty 'match' would match every caller");
		const char **slots[] = { &pr->m.san_uri, &pr->m.san_dns, &pr->m.san_email,
			                 &pr->m.cn,      &pr->m.issuer,  NULL,
			                 &pr->m.jwt_iss, &pr->m.jwt_sub, &pr->m.jwt_group };
		for (size_t i = 0; i < CUSTOS_ARRAY_LEN(mkeys); i++) {
			ydoc_node *x = ydoc_map_get(m, mkeys[i]);
			const char *s;
			if (x == NULL || !ydoc_str(doc, x, &s, c->d))
				continue;
			if (x->len == 0) {
				ydoc_error(doc, x, c->d, NULL, "empty '%s'", mkeys[i]);
				continue;
			}
			if (slots[i] == NULL) {
				if (!hex32(s, x->len, pr->m.key))
					ydoc_error(doc, x, c->d,
					           "store the key's SHA-256 digest: "
					           "printf %s KEY | sha256sum",
					           "api_key_sha256 must be 64 hex digits");
				else
					pr->m.has_key = true;
				continue;
			}
			if ((i <= 1 || i == 7) && x->len > POLICY_MAX_GLOB) {
				ydoc_error(doc, x, c->d, NULL, "'%s' pattern longer than %d bytes",
				           mkeys[i], POLICY_MAX_GLOB);
				continue;
			}
			if (i == 8 && x->len > POLICY_MAX_JWT_GROUP_BYTES)
				ydoc_warn(doc, x, c->d, NULL,
				          "principal '%s' can never match: the proxy keeps JWT "
				          "groups "
				          "of at most %d bytes",
				          k->str, POLICY_MAX_JWT_GROUP_BYTES);
			/* DNS names are case-insensitive: the pattern is lowered here, the
			 * subject when matched */
			*slots[i] = i == 1 ? lower_dup(&p->a, span_of(s, x->len))
			                   : arena_strdup(&p->a, s, x->len);
		}
	}
	ydoc_node *g = ydoc_map_get(v, "groups");
	const char **gl;
	uint32_t ng;
	if (g && str_list(c, doc, g, &gl, &ng)) {
		pr->pub.groups = gl;
		pr->pub.n_groups = ng;
		pr->group_ids = arena_alloc(&p->a, sizeof(uint32_t) * ng);
		for (uint32_t i = 0; i < ng; i++) {
			pr->group_ids[i] = group_id(c, gl[i], strlen(gl[i]));
			c->group_members[pr->group_ids[i]]++;
		}
	}
	ydoc_node *at = ydoc_map_get(v, "attributes");
	if (at && ydoc_expect(doc, at, YDOC_MAP, "'attributes'", c->d)) {
		c->princ_attrs[pr->pub.index] = at;
		struct policy_attr *attrs = arena_alloc(&p->a, sizeof(*attrs) * (at->n + 1));
		pr->attr_ids = arena_alloc(&p->a, sizeof(uint32_t) * (at->n + 1));
		size_t n = 0;
		for (size_t i = 0; i < at->n; i++) {
			ydoc_node *ak = at->pairs[i].key, *av = at->pairs[i].value;
			const char *s;
			if (!name_ok(c, doc, ak, "attribute name") || !ydoc_str(doc, av, &s, c->d))
				continue;
			for (size_t j = 0; j < i; j++)
				if (strcmp(at->pairs[j].key->str, ak->str) == 0)
					ydoc_error(doc, ak, c->d, NULL, "duplicate attribute '%s'",
					           ak->str);
			attrs[n].name = arena_strdup(&p->a, ak->str, ak->len);
			attrs[n].value = arena_strdup(&p->a, s, av->len);
			policy_class cl;
			attrs[n].level =
			        policy_class_parse(span_of(s, av->len), &cl) ? (int)cl : -1;
			pr->attr_ids[n] = attr_id(c, ak->str, ak->len);
			c->attr_holders[pr->attr_ids[n]]++;
			n++;
		}
		pr->pub.attrs = attrs;
		pr->pub.n_attrs = n;
	}
}

static void parse_model(struct cc *c, const ydoc *doc, ydoc_node *k, ydoc_node *v)
{
	static const char *const keys[] = { "isolation", "sandbox", "description" };
	policy *p = c->p;
	if (!name_ok(c, doc, k, "model id") || !ydoc_expect(doc, v, YDOC_MAP, "a model", c->d))
		return;
	(void)ydoc_check_keys(doc, v, keys, CUSTOS_ARRAY_LEN(keys), c->d);
	policy_model *m = &p->models[p->n_models];
	m->id = arena_strdup(&p->a, k->str, k->len);
	uint32_t prev;
	if (!pmap_put(&p->model_ids, &p->a, m->id, k->len, p->n_models, &prev)) {
		dup_error(c, doc, k, "model", file_name(c->model_doc[prev]),
		          c->model_node[prev]->line, c->model_node[prev]->col);
		return;
	}
	c->model_doc[p->n_models] = doc;
	c->model_node[p->n_models] = k;
	m->index = p->n_models++;
	ydoc_node *iso = ydoc_map_get(v, "isolation");
	int x;
	if (iso == NULL)
		ydoc_error(doc, k, c->d, "one of: none, process, vm, vm-dedicated-gpu",
		           "model '%s' needs 'isolation'", k->str);
	else if (ydoc_enum(doc, iso, iso_names, 4, &x, c->d))
		m->isolation = (policy_isolation)x;
	ydoc_node *sb = ydoc_map_get(v, "sandbox");
	const char *s;
	if (sb && ydoc_str(doc, sb, &s, c->d))
		m->sandbox = arena_strdup(&p->a, s, sb->len);
	ydoc_node *desc = ydoc_map_get(v, "description");
	if (desc)
		(void)ydoc_str(doc, desc, &s, c->d);
}

/* Splits "scheme://host[:port]/path" (no user info, query or fragment). */
static bool url_split(const char *u, size_t len, span *scheme, span *host, uint16_t *port,
                      span *path, const char **why)
{
	policy_url pu;
	if (!policy_url_split(span_of(u, len), &pu, why))
		return false;
	if (pu.rest.len != pu.path.len) {
		*why = "no user info, query or fragment allowed";
		return false;
	}
	*scheme = pu.scheme;
	*host = pu.host;
	*port = pu.port;
	*path = pu.path.len ? pu.path : SPAN_LIT("/");
	return true;
}

static uint16_t default_port(span scheme)
{
	if (span_eq_cstr(scheme, "https"))
		return 443;
	if (span_eq_cstr(scheme, "http"))
		return 80;
	return 0;
}

static char *lower_dup(arena *a, span s)
{
	char *r = arena_strdup(a, s.ptr, s.len);
	for (size_t i = 0; i < s.len; i++)
		if (r[i] >= 'A' && r[i] <= 'Z')
			r[i] = (char)(r[i] + 32);
	return r;
}

static void parse_data(struct cc *c, const ydoc *doc, ydoc_node *k, ydoc_node *v)
{
	static const char *const keys[] = { "url", "classification", "description" };
	policy *p = c->p;
	if (!name_ok(c, doc, k, "data source id") ||
	    !ydoc_expect(doc, v, YDOC_MAP, "a data source", c->d))
		return;
	(void)ydoc_check_keys(doc, v, keys, CUSTOS_ARRAY_LEN(keys), c->d);
	policy_data_source *ds = &p->data[p->n_data];
	ds->id = arena_strdup(&p->a, k->str, k->len);
	uint32_t prev;
	if (!pmap_put(&p->data_ids, &p->a, ds->id, k->len, p->n_data, &prev)) {
		dup_error(c, doc, k, "data source", file_name(c->data_doc[prev]),
		          c->data_node[prev]->line, c->data_node[prev]->col);
		return;
	}
	c->data_doc[p->n_data] = doc;
	c->data_node[p->n_data] = k;
	ds->index = p->n_data++;
	ydoc_node *u = ydoc_map_get(v, "url"), *cl = ydoc_map_get(v, "classification");
	const char *s;
	int x;
	if (u == NULL) {
		ydoc_error(doc, k, c->d, NULL, "data source '%s' needs 'url'", k->str);
	} else if (ydoc_str(doc, u, &s, c->d)) {
		span sch, host, path;
		uint16_t port;
		const char *why;
		if (!url_split(s, u->len, &sch, &host, &port, &path, &why)) {
			ydoc_error(doc, u, c->d, "e.g. https://hr.corp.example:8443/api/",
			           "bad url '%s': %s", s, why);
		} else if (default_port(sch) == 0) {
			ydoc_error(doc, u, c->d, NULL, "url scheme must be http or https");
		} else {
			/* the prefix is spelled as request paths are when looked up */
			char norm[POLICY_MAX_PATH];
			size_t nl;
			if (!ppath_normalize(path, false, norm, sizeof(norm), &nl, &why)) {
				ydoc_error(doc, u, c->d, NULL,
				           "bad url '%s': its path is ambiguous: %s", s, why);
			} else {
				ds->url = arena_strdup(&p->a, s, u->len);
				ds->scheme = lower_dup(&p->a, sch);
				/* one trailing dot (an absolute name) names the same host: the
				 * egress proxy drops it before the lookup, so it is dropped here
				 * too, or the source would match no call */
				if (host.len > 1 && host.ptr[host.len - 1] == '.')
					host.len--;
				/* a name the egress proxy refuses (proxy/ssrf.c: letters, digits,
				 * '-', '_', '.'; "%41" too) names a source no call maps to, whose
				 * deny rules would never fire */
				bool name_chars = host.ptr[0] != '[';
				for (size_t i = 0; i < host.len && name_chars; i++) {
					char ch = host.ptr[i];
					name_chars = (ch >= 'a' && ch <= 'z') ||
					             (ch >= 'A' && ch <= 'Z') ||
					             (ch >= '0' && ch <= '9') || ch == '-' ||
					             ch == '_' || ch == '.';
					if (!name_chars) {
						char what[32];
						unsigned char b = (unsigned char)ch;
						snprintf(what, sizeof(what),
						         b > ' ' && b < 0x7f ? "'%c'"
						                             : "byte 0x%02X",
						         b);
						ydoc_error(doc, u, c->d,
						           "write the host name itself (letters, "
						           "digits, "
						           "'-', '_', '.'), or an IP address",
						           "bad url '%s': the egress proxy refuses "
						           "%s in "
						           "a host, so no call would map to this "
						           "source",
						           s, what);
					}
				}
				char v6[PHOST_V6_MAX];
				ds->host = phost_v6_canon(host, v6)
				                   ? arena_strdup(&p->a, v6, strlen(v6))
				                   : lower_dup(&p->a, host);
				ds->port = port ? port : default_port(sch);
				ds->path_prefix = arena_strdup(&p->a, norm, nl);
			}
		}
	}
	if (cl == NULL)
		ydoc_error(doc, k, c->d, "one of: public, internal, confidential, restricted",
		           "data source '%s' needs 'classification'", k->str);
	else if (ydoc_enum(doc, cl, class_names, 4, &x, c->d))
		ds->classification = (policy_class)x;
	ydoc_node *desc = ydoc_map_get(v, "description");
	if (desc)
		(void)ydoc_str(doc, desc, &s, c->d);
}

typedef void (*subject_fn)(struct cc *, const ydoc *, ydoc_node *, ydoc_node *);
static void pass_subjects(struct cc *c, const char *key, subject_fn fn)
{
	for (size_t i = 0; i < c->n_files; i++) {
		if (!c->files[i].parsed || c->files[i].doc.root == NULL ||
		    c->files[i].doc.root->kind != YDOC_MAP)
			continue;
		const ydoc *doc = &c->files[i].doc;
		ydoc_node *m = ydoc_map_get(doc->root, key);
		char what[64];
		snprintf(what, sizeof(what), "'%s' (id: {...})", key);
		if (m == NULL || !ydoc_expect(doc, m, YDOC_MAP, what, c->d))
			continue;
		for (size_t j = 0; j < m->n; j++)
			fn(c, doc, m->pairs[j].key, m->pairs[j].value);
	}
}

/* ---------------------------------------------------------------------------------------------
 * Rules
 */
static const char *const when_keys[] = {
	"direction",
	"principal",
	"principal.groups",
	"principal.attributes",
	"model",
	"model.isolation",
	"data",
	"data.classification",
	"taint",
	"method",
	"route",
	"path",
	"body_size",
	"time",
	"client",
};
static const char *const ord_ops[] = { "is", "above", "below", "at_least", "at_most" };

static bool u32_listed(uint32_t v, const uint32_t *a, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (a[i] == v)
			return true;
	return false;
}

static bool parse_ref_list(struct cc *c, const ydoc *doc, ydoc_node *n, const pmap *m,
                           const char *what, uint32_t **out, uint32_t *nout)
{
	const char **names;
	uint32_t k;
	if (!str_list(c, doc, n, &names, &k))
		return false;
	uint32_t *ids = arena_alloc(&c->p->a, sizeof(uint32_t) * k);
	uint32_t kept = 0;
	bool ok = true;
	for (uint32_t i = 0; i < k; i++) {
		uint32_t id;
		if (!pmap_get(m, names[i], strlen(names[i]), &id)) {
			unknown_ref(c, doc, list_item(n, i), what, m);
			ok = false;
			continue;
		}
		if (u32_listed(id, ids, kept)) {
			/* kept once: a rule is filed and reported once */
			ydoc_warn(doc, list_item(n, i), c->d, NULL, "'%s' listed twice", names[i]);
			continue;
		}
		ids[kept++] = id;
	}
	*out = ids;
	*nout = kept;
	return ok;
}

/* Ordered comparison: `level` or `{ above|below|at_least|at_most|is: level-or-reference }`. */
static bool parse_ord(struct cc *c, const ydoc *doc, ydoc_node *n, bool classes, struct ord_cond *o)
{
	const char *const *names = classes ? class_names : iso_names;
	ydoc_node *val = n;
	o->op = ORD_EQ;
	if (n->kind == YDOC_MAP) {
		if (n->n != 1) {
			ydoc_error(doc, n, c->d, "e.g. { above: internal }",
			           "a comparison has exactly one operator");
			return false;
		}
		int op;
		if (!ydoc_enum(doc, n->pairs[0].key, ord_ops, 5, &op, c->d))
			return false;
		n->pairs[0].key->used = true;
		o->op = (uint8_t)op;
		val = n->pairs[0].value;
	}
	if (val->kind != YDOC_SCALAR) {
		ydoc_error(doc, val, c->d, NULL, "expected a level");
		return false;
	}
	o->rhs_text = arena_strdup(&c->p->a, val->str, val->len);
	int lv;
	if (level_parse(span_of(val->str, val->len), names, 4, &lv)) {
		o->rhs = RHS_LIT;
		o->lit = (int8_t)lv;
		return true;
	}
	if (classes) {
		if (strcmp(val->str, "data.classification") == 0) {
			o->rhs = RHS_DATA_CLASS;
			return true;
		}
		if (strcmp(val->str, "taint") == 0) {
			o->rhs = RHS_TAINT;
			return true;
		}
		if (strncmp(val->str, "principal.attributes.", 21) == 0 && val->len > 21) {
			o->rhs = RHS_ATTR;
			uint32_t id;
			if (!pmap_get(&c->p->attr_ids, val->str + 21, val->len - 21, &id)) {
				ydoc_error(doc, val, c->d, NULL, "no principal has attribute '%s'",
				           val->str + 21);
				return false;
			}
			o->attr = id;
			attr_ordered(c, id);
			return true;
		}
	}
	char hint[160];
	snprintf(hint, sizeof(hint), "one of: %s, %s, %s, %s%s", names[0], names[1], names[2],
	         names[3],
	         classes ? ", data.classification, taint, principal.attributes.NAME" : "");
	ydoc_error(doc, val, c->d, hint, "unknown %s '%s'",
	           classes ? "classification" : "isolation", val->str);
	return false;
}

/* Can an ordered comparison with a literal right side hold for left value v? */
static bool ord_holds(uint8_t op, int l, int r)
{
	switch (op) {
	case ORD_EQ:
		return l == r;
	case ORD_ABOVE:
		return l > r;
	case ORD_BELOW:
		return l < r;
	case ORD_AT_LEAST:
		return l >= r;
	case ORD_AT_MOST:
		return l <= r;
	}
	return false;
}

static bool parse_paths(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	size_t k = n->kind == YDOC_SEQ ? n->n : 1;
	if (k == 0 || k > POLICY_MAX_LIST) {
		ydoc_error(doc, n, c->d, NULL, "path list must have 1..%d items", POLICY_MAX_LIST);
		return false;
	}
	r->paths = arena_alloc(&c->p->a, sizeof(*r->paths) * k);
	r->n_paths = (uint32_t)k;
	bool ok = true;
	for (size_t i = 0; i < k; i++) {
		ydoc_node *it = list_item(n, i), *val = it;
		struct path_pat *pp = &r->paths[i];
		pp->kind = PATH_EXACT;
		if (it->kind == YDOC_MAP) {
			static const char *const pk[] = { "exact", "prefix", "glob" };
			int kind;
			if (it->n != 1) {
				ydoc_error(doc, it, c->d, "e.g. { prefix: /v1/ }",
				           "a path pattern has exactly one of exact, prefix, glob");
				ok = false;
				continue;
			}
			if (!ydoc_enum(doc, it->pairs[0].key, pk, 3, &kind, c->d)) {
				ok = false;
				continue;
			}
			pp->kind = (uint8_t)kind;
			val = it->pairs[0].value;
		}
		const char *s;
		if (!ydoc_str(doc, val, &s, c->d)) {
			ok = false;
			continue;
		}
		if (s[0] != '/') {
			ydoc_error(doc, val, c->d, NULL, "a path starts with '/'");
			ok = false;
			continue;
		}
		if (pp->kind != PATH_GLOB && strchr(s, '?') != NULL) {
			ydoc_error(doc, val, c->d, "a query is not part of the path",
			           "a path pattern has no '?'");
			ok = false;
			continue;
		}
		/* spelled as request paths are when matched (percent-decoding of unreserved
		 * characters, one '/' between segments) */
		char norm[POLICY_MAX_PATH];
		size_t nl;
		const char *why;
		if (!ppath_normalize(span_of(s, val->len), pp->kind == PATH_GLOB, norm,
		                     sizeof(norm), &nl, &why)) {
			ydoc_error(doc, val, c->d, NULL, "path pattern '%s' is ambiguous: %s", s,
			           why);
			ok = false;
			continue;
		}
		if (pp->kind == PATH_GLOB && nl > POLICY_MAX_GLOB) {
			ydoc_error(doc, val, c->d, NULL, "glob longer than %d bytes",
			           POLICY_MAX_GLOB);
			ok = false;
			continue;
		}
		pp->s = arena_strdup(&c->p->a, norm, nl);
		pp->len = (uint32_t)nl;
	}
	return ok;
}

static bool parse_hhmm(const char *s, uint16_t *out)
{
	if (strlen(s) != 5 || s[2] != ':')
		return false;
	for (int i = 0; i < 5; i++)
		if (i != 2 && (s[i] < '0' || s[i] > '9'))
			return false;
	int h = (s[0] - '0') * 10 + s[1] - '0', m = (s[3] - '0') * 10 + s[4] - '0';
	if (m > 59 || h > 24 || (h == 24 && m != 0))
		return false;
	*out = (uint16_t)(h * 60 + m);
	return true;
}

static uint32_t zone_index(struct cc *c, const ydoc *doc, ydoc_node *n, const char *name, bool *ok)
{
	policy *p = c->p;
	for (uint32_t i = 0; i < p->n_zones; i++)
		if (strcmp(p->zones[i].name, name) == 0)
			return i;
	if (p->n_zones == c->cap_zones) {
		size_t ncap = c->cap_zones ? c->cap_zones * 2 : 4;
		ptz *nz = arena_alloc(&p->a, ncap * sizeof(*nz));
		if (p->n_zones)
			memcpy(nz, p->zones, p->n_zones * sizeof(*nz));
		p->zones = nz;
		c->cap_zones = ncap;
	}
	if (ptz_load(&p->a, name, &p->zones[p->n_zones]) != CUSTOS_OK) {
		ydoc_error(doc, n, c->d, "an IANA name such as Europe/Paris, or UTC, or +05:30",
		           "%s", err_msg());
		*ok = false;
		return 0;
	}
	return p->n_zones++;
}

static bool parse_times(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	static const char *const tkeys[] = { "days", "from", "to", "tz" };
	static const char *const dnames[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
	size_t k = n->kind == YDOC_SEQ ? n->n : 1;
	if (k == 0 || k > 64) {
		ydoc_error(doc, n, c->d, NULL, "time: 1..64 windows");
		return false;
	}
	r->times = arena_alloc(&c->p->a, sizeof(*r->times) * k);
	r->n_times = (uint32_t)k;
	bool ok = true;
	for (size_t i = 0; i < k; i++) {
		ydoc_node *w = list_item(n, i);
		struct time_cond *t = &r->times[i];
		if (!ydoc_expect(doc, w, YDOC_MAP, "a window { days, from, to, tz }", c->d)) {
			ok = false;
			continue;
		}
		ok &= ydoc_check_keys(doc, w, tkeys, 4, c->d);
		t->days = 0x7f;
		t->from_min = 0;
		t->to_min = 24 * 60;
		ydoc_node *days = ydoc_map_get(w, "days"), *from = ydoc_map_get(w, "from"),
		          *to = ydoc_map_get(w, "to"), *tz = ydoc_map_get(w, "tz");
		if (days) {
			const char **dl;
			uint32_t nd;
			if (!str_list(c, doc, days, &dl, &nd)) {
				ok = false;
				continue;
			}
			t->days = 0;
			for (uint32_t j = 0; j < nd; j++) {
				int a = -1, b = -1;
				const char *dash = strchr(dl[j], '-');
				for (int q = 0; q < 7; q++) {
					if (strncmp(dl[j], dnames[q], 3) == 0 &&
					    (dl[j][3] == '\0' || dl[j][3] == '-'))
						a = q;
					if (dash && strcmp(dash + 1, dnames[q]) == 0)
						b = q;
				}
				if (a < 0 || (dash && b < 0)) {
					ydoc_error(doc, list_item(days, j), c->d,
					           "mon, tue, wed, thu, fri, sat, sun or a range "
					           "mon-fri",
					           "bad day '%s'", dl[j]);
					ok = false;
					continue;
				}
				if (b < 0)
					b = a;
				for (int q = a;; q = (q + 1) % 7) {
					t->days |= (uint8_t)(1u << q);
					if (q == b)
						break;
				}
			}
		}
		const char *s;
		if (from && ydoc_str(doc, from, &s, c->d) && !parse_hhmm(s, &t->from_min)) {
			ydoc_error(doc, from, c->d, NULL, "bad time '%s' (want HH:MM)", s);
			ok = false;
		} else if (t->from_min == 24 * 60) {
			/* 24:00 ends a day: as a start it would open the window on the next
			 * day, not the one 'days' names */
			ydoc_error(doc, from, c->d, "write from: \"00:00\" and name the next day",
			           "'from' must be 00:00..23:59: 24:00 only ends a window");
			ok = false;
		}
		if (to && ydoc_str(doc, to, &s, c->d) && !parse_hhmm(s, &t->to_min)) {
			ydoc_error(doc, to, c->d, NULL, "bad time '%s' (want HH:MM)", s);
			ok = false;
		}
		if (t->from_min == t->to_min) {
			ydoc_error(doc, from ? from : w, c->d, NULL,
			           "empty window: 'from' equals 'to'");
			ok = false;
		}
		const char *zone_name = "UTC";
		if (tz && ydoc_str(doc, tz, &s, c->d))
			zone_name = s;
		t->tz = zone_index(c, doc, tz ? tz : w, zone_name, &ok);
		char txt[128];
		snprintf(txt, sizeof(txt), "%02u:%02u-%02u:%02u %s", t->from_min / 60,
		         t->from_min % 60, t->to_min / 60, t->to_min % 60, zone_name);
		t->text = arena_strdup(&c->p->a, txt, strlen(txt));
	}
	return ok;
}

static bool parse_attrs(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	if (!ydoc_expect(doc, n, YDOC_MAP, "principal.attributes", c->d))
		return false;
	if (n->n == 0 || n->n > 64) {
		ydoc_error(doc, n, c->d, NULL, "principal.attributes: 1..64 attributes");
		return false;
	}
	r->attrs = arena_alloc(&c->p->a, sizeof(*r->attrs) * n->n);
	r->n_attrs = (uint32_t)n->n;
	bool ok = true;
	for (size_t i = 0; i < n->n; i++) {
		ydoc_node *k = n->pairs[i].key, *v = n->pairs[i].value;
		struct attr_cond *a = &r->attrs[i];
		bool dup = false;
		for (size_t j = 0; j < i && !dup; j++) {
			if (strcmp(n->pairs[j].key->str, k->str) == 0) {
				ydoc_error(doc, k, c->d, NULL,
				           "duplicate key '%s' (first at line %u)", k->str,
				           n->pairs[j].key->line);
				dup = true;
			}
		}
		if (dup) {
			ok = false;
			continue;
		}
		a->name = arena_strdup(&c->p->a, k->str, k->len);
		if (!pmap_get(&c->p->attr_ids, k->str, k->len, &a->name_id)) {
			ydoc_error(doc, k, c->d, NULL, "no principal has attribute '%s'", k->str);
			ok = false;
			continue;
		}
		if (v->kind == YDOC_MAP) {
			a->ordered = true;
			attr_ordered(c, a->name_id);
			ok &= parse_ord(c, doc, v, true, &a->ord);
		} else {
			const char **vals;
			ok &= str_list(c, doc, v, &vals, &a->n_values);
			a->values = vals;
		}
	}
	return ok;
}

static bool parse_body(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	static const char *const bk[] = { "above", "below", "at_least", "at_most" };
	if (!ydoc_expect(doc, n, YDOC_MAP, "body_size", c->d))
		return false;
	bool ok = ydoc_check_keys(doc, n, bk, 4, c->d);
	if (n->n == 0) {
		ydoc_error(doc, n, c->d, NULL, "body_size needs above, below, at_least or at_most");
		return false;
	}
	r->body_min = 0;
	r->body_max = UINT64_MAX;
	for (size_t i = 0; i < 4; i++) {
		ydoc_node *v = ydoc_map_get(n, bk[i]);
		uint64_t x;
		if (v == NULL)
			continue;
		if (!ydoc_size(doc, v, UINT64_MAX - 1, &x, c->d)) {
			ok = false;
			continue;
		}
		if (i == 0 && x + 1 > r->body_min)
			r->body_min = x + 1;
		else if (i == 1) {
			if (x == 0)
				r->body_min = 1, r->body_max = 0;
			else if (x - 1 < r->body_max)
				r->body_max = x - 1;
		} else if (i == 2 && x > r->body_min)
			r->body_min = x;
		else if (i == 3 && x < r->body_max)
			r->body_max = x;
	}
	return ok;
}

static uint32_t route_id(struct cc *c, const char *s, size_t len)
{
	policy *p = c->p;
	uint32_t id;
	if (pmap_get(&p->route_ids, s, len, &id))
		return id;
	if (p->n_routes == c->cap_routes) {
		size_t ncap = c->cap_routes ? c->cap_routes * 2 : 16;
		const char **nr = arena_alloc(&p->a, ncap * sizeof(*nr));
		if (p->n_routes)
			memcpy(nr, p->routes, p->n_routes * sizeof(*nr));
		p->routes = nr;
		c->cap_routes = ncap;
	}
	char *k = arena_strdup(&p->a, s, len);
	p->routes[p->n_routes] = k;
	(void)pmap_put(&p->route_ids, &p->a, k, len, p->n_routes, NULL);
	return p->n_routes++;
}

static bool parse_method_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < 'A' || *s > 'Z')
			return false;
	return true;
}

/* `client`: address ranges (core/cidr.c's rules: no host bits set; a bare address is one
 * host), any-of. An item listed twice (the same range, however spelled) is kept once. */
static bool parse_clients(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	const char **cl;
	uint32_t k;
	if (!str_list(c, doc, n, &cl, &k))
		return false;
	r->clients = arena_alloc(&c->p->a, sizeof(*r->clients) * k);
	bool ok = true;
	for (uint32_t i = 0; i < k; i++) {
		struct client_range cr = { .text = cl[i] };
		const char *why;
		if (!cidr_parse(cl[i], &cr.r, &why)) {
			ydoc_error(doc, list_item(n, i), c->d,
			           "e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7",
			           "client: bad address range '%s': %s", cl[i], why);
			ok = false;
			continue;
		}
		/* An IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 range: clients are
		 * compared as IPv4 when their address is IPv4-mapped (prule_match). */
		static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
		if (cr.r.family == 6 && cr.r.bits >= 96 && memcmp(cr.r.addr, mapped, 12) == 0) {
			memmove(cr.r.addr, cr.r.addr + 12, 4);
			memset(cr.r.addr + 4, 0, 12);
			cr.r.family = 4;
			cr.r.bits = (uint8_t)(cr.r.bits - 96);
		}
		bool dup = false;
		for (uint32_t j = 0; j < r->n_clients && !dup; j++)
			dup = memcmp(&r->clients[j].r, &cr.r, sizeof(cr.r)) == 0;
		if (dup) {
			ydoc_warn(doc, list_item(n, i), c->d, NULL, "'%s' listed twice", cl[i]);
			continue;
		}
		r->clients[r->n_clients++] = cr;
	}
	return ok;
}

static bool parse_when(struct cc *c, const ydoc *doc, ydoc_node *w, prule *r)
{
	policy *p = c->p;
	bool ok = ydoc_check_keys(doc, w, when_keys, CUSTOS_ARRAY_LEN(when_keys), c->d);
	ydoc_node *n;
	r->dirs = 3;
	if ((n = ydoc_map_get(w, "direction")) != NULL) {
		static const char *const dn[] = { "ingress", "egress" };
		int x;
		if (ydoc_enum(doc, n, dn, 2, &x, c->d)) {
			r->dirs = (uint8_t)(1u << x);
			r->present |= C_DIRECTION;
		} else
			ok = false;
	}
	if ((n = ydoc_map_get(w, "principal")) != NULL) {
		ok &= parse_ref_list(c, doc, n, &p->principal_ids, "principal", &r->principals,
		                     &r->n_principals);
		r->present |= C_PRINCIPAL;
	}
	if ((n = ydoc_map_get(w, "principal.groups")) != NULL) {
		const char **gl;
		uint32_t ng;
		if (str_list(c, doc, n, &gl, &ng)) {
			r->groups = arena_alloc(&p->a, sizeof(uint32_t) * ng);
			for (uint32_t i = 0; i < ng; i++) {
				uint32_t id;
				if (!pmap_get(&p->group_ids, gl[i], strlen(gl[i]), &id)) {
					ydoc_warn(doc, list_item(n, i), c->d, NULL,
					          "no principal is in group '%s'", gl[i]);
					id = UINT32_MAX;
				}
				if (u32_listed(id, r->groups, r->n_groups)) {
					if (id != UINT32_MAX)
						ydoc_warn(doc, list_item(n, i), c->d, NULL,
						          "'%s' listed twice", gl[i]);
					continue;
				}
				r->groups[r->n_groups++] = id;
			}
		} else
			ok = false;
		r->present |= C_GROUP;
	}
	if ((n = ydoc_map_get(w, "principal.attributes")) != NULL) {
		ok &= parse_attrs(c, doc, n, r);
		r->present |= C_ATTR;
	}
	if ((n = ydoc_map_get(w, "model")) != NULL) {
		ok &= parse_ref_list(c, doc, n, &p->model_ids, "model", &r->models, &r->n_models);
		r->present |= C_MODEL;
	}
	if ((n = ydoc_map_get(w, "model.isolation")) != NULL) {
		ok &= parse_ord(c, doc, n, false, &r->iso);
		r->present |= C_ISOLATION;
	}
	if ((n = ydoc_map_get(w, "data")) != NULL) {
		ok &= parse_ref_list(c, doc, n, &p->data_ids, "data source", &r->data, &r->n_data);
		r->present |= C_DATA;
	}
	if ((n = ydoc_map_get(w, "data.classification")) != NULL) {
		ok &= parse_ord(c, doc, n, true, &r->cls);
		r->present |= C_CLASS;
	}
	if ((n = ydoc_map_get(w, "taint")) != NULL) {
		ok &= parse_ord(c, doc, n, true, &r->taint);
		r->present |= C_TAINT;
	}
	if ((n = ydoc_map_get(w, "method")) != NULL) {
		const char **ml;
		if (str_list(c, doc, n, &ml, &r->n_methods)) {
			r->methods = arena_alloc(&p->a, sizeof(span) * r->n_methods);
			for (uint32_t i = 0; i < r->n_methods; i++) {
				if (!parse_method_token(ml[i])) {
					ydoc_error(doc, list_item(n, i), c->d,
					           "methods are upper case: GET, POST...",
					           "bad method '%s'", ml[i]);
					ok = false;
				}
				r->methods[i] = span_cstr(ml[i]);
			}
		} else
			ok = false;
		r->present |= C_METHOD;
	}
	if ((n = ydoc_map_get(w, "route")) != NULL) {
		const char **rl;
		uint32_t nr;
		if (str_list(c, doc, n, &rl, &nr)) {
			r->routes = arena_alloc(&p->a, sizeof(uint32_t) * nr);
			for (uint32_t i = 0; i < nr; i++) {
				const char *sp = strchr(rl[i], ' ');
				char m[32];
				size_t ml = sp ? (size_t)(sp - rl[i]) : 0;
				if (sp == NULL || ml >= sizeof(m) || sp[1] != '/' ||
				    strchr(sp + 1, ' ') != NULL) {
					ydoc_error(doc, list_item(n, i), c->d,
					           "e.g. \"POST /v1/chat/completions\"",
					           "a route is 'METHOD /path'");
					ok = false;
					continue;
				}
				memcpy(m, rl[i], ml);
				m[ml] = '\0';
				if (!parse_method_token(m)) {
					ydoc_error(doc, list_item(n, i), c->d, NULL,
					           "bad method in route '%s'", rl[i]);
					ok = false;
				}
				/* "METHOD /path" with the path spelled as requests' are */
				char rt[POLICY_MAX_PATH + 32];
				size_t nl;
				const char *why;
				memcpy(rt, rl[i], ml + 1);
				if (strchr(sp + 1, '?') != NULL) {
					ydoc_error(doc, list_item(n, i), c->d, NULL,
					           "a route has no query ('?')");
					ok = false;
					continue;
				}
				if (!ppath_normalize(span_cstr(sp + 1), false, rt + ml + 1,
				                     sizeof(rt) - ml - 1, &nl, &why)) {
					ydoc_error(doc, list_item(n, i), c->d, NULL,
					           "route '%s' is ambiguous: %s", rl[i], why);
					ok = false;
					continue;
				}
				uint32_t id = route_id(c, rt, ml + 1 + nl);
				if (u32_listed(id, r->routes, r->n_routes)) {
					ydoc_warn(doc, list_item(n, i), c->d, NULL,
					          "'%s' listed twice", rl[i]);
					continue;
				}
				r->routes[r->n_routes++] = id;
			}
		} else
			ok = false;
		r->present |= C_ROUTE;
	}
	if ((n = ydoc_map_get(w, "path")) != NULL) {
		ok &= parse_paths(c, doc, n, r);
		r->present |= C_PATH;
	}
	if ((n = ydoc_map_get(w, "body_size")) != NULL) {
		ok &= parse_body(c, doc, n, r);
		r->present |= C_BODY;
	}
	if ((n = ydoc_map_get(w, "time")) != NULL) {
		ok &= parse_times(c, doc, n, r);
		r->present |= C_TIME;
	}
	if (r->present & C_ROUTE) {
		/* A route is the ingress API route: it never holds on egress, so the rule is
		 * an ingress rule (an egress GET to evil.example/v1/models is no route). */
		if (!(r->present & C_DIRECTION))
			ydoc_warn(doc, ydoc_map_get(w, "route"), c->d, "add 'direction: ingress'",
			          "rule '%s' has a route and no direction: routes hold on ingress "
			          "only, so it never applies to egress",
			          r->id);
		r->dirs &= 1;
	}
	if ((n = ydoc_map_get(w, "client")) != NULL) {
		ok &= parse_clients(c, doc, n, r);
		r->present |= C_CLIENT;
		/* The client address is the caller's on ingress; an egress call comes from a
		 * sandbox, which has no client address to compare (its identity is the model). */
		if ((r->present & C_DIRECTION) && !(r->dirs & 1)) {
			ydoc_error(doc, n, c->d, "client conditions belong on ingress rules",
			           "rule '%s' is an egress rule: egress calls come from a sandbox "
			           "and have no client address",
			           r->id);
			ok = false;
		} else if (!(r->present & C_DIRECTION)) {
			ydoc_warn(doc, n, c->d, "add 'direction: ingress'",
			          "rule '%s' has a client condition and no direction: client "
			          "addresses are known on ingress only, so it never applies to "
			          "egress",
			          r->id);
		}
		r->dirs &= 1;
	}
	return ok;
}

static void parse_limits(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	static const char *const lk[] = { "requests_per_second", "requests_per_minute",
		                          "requests_per_hour",   "requests_per_day",
		                          "tokens_per_minute",   "tokens_per_hour",
		                          "tokens_per_day",      "max_body",
		                          "max_tokens" };
	if (!ydoc_expect(doc, n, YDOC_MAP, "'limits'", c->d))
		return;
	(void)ydoc_check_keys(doc, n, lk, CUSTOS_ARRAY_LEN(lk), c->d);
	r->has_limits = true;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(lk); i++) {
		ydoc_node *v = ydoc_map_get(n, lk[i]);
		uint64_t x;
		if (v == NULL)
			continue;
		if (i == 7) {
			/* 0 would read as "no limit" when merged: refused like every other 0 */
			if (ydoc_size(doc, v, UINT64_MAX, &x, c->d)) {
				if (x == 0)
					ydoc_error(doc, v, c->d, "omit max_body for no limit",
					           "max_body must be at least 1 byte");
				r->limits.max_body_bytes = x;
			}
			continue;
		}
		if (!ydoc_u64(doc, v, 1, UINT64_MAX, &x, c->d))
			continue;
		if (i == 8)
			r->limits.max_tokens = x;
		else if (i < 4)
			r->limits.requests_per[i] = x; /* every window given applies */
		else
			r->limits.tokens_per[i - 3] = x;
	}
}

static void parse_inspect(struct cc *c, const ydoc *doc, ydoc_node *n, prule *r)
{
	/* "request" is the egress name of the prompt direction (the body the model sends to a
	 * data source): the same slot, merged with "prompt" when both are given. */
	static const char *const ik[] = { "prompt", "response", "request" };
	static const char *const acts[] = { "log", "redact", "deny" };
	policy *p = c->p;
	if (!ydoc_expect(doc, n, YDOC_MAP, "'inspect'", c->d))
		return;
	(void)ydoc_check_keys(doc, n, ik, CUSTOS_ARRAY_LEN(ik), c->d);
	size_t total = 0;
	for (int w = 0; w < 3; w++) {
		ydoc_node *m = ydoc_map_get(n, ik[w]);
		if (m && m->kind == YDOC_MAP)
			total += m->n;
	}
	r->inspect = arena_alloc(&p->a, sizeof(*r->inspect) * (total + 1));
	for (int w = 0; w < 3; w++) {
		ydoc_node *m = ydoc_map_get(n, ik[w]);
		if (m == NULL || !ydoc_expect(doc, m, YDOC_MAP,
		                              "'inspect' of a direction (detector: action)", c->d))
			continue;
		for (size_t i = 0; i < m->n; i++) {
			ydoc_node *k = m->pairs[i].key;
			uint32_t det;
			int act;
			for (size_t j = 0; j < i; j++)
				if (strcmp(m->pairs[j].key->str, k->str) == 0)
					ydoc_error(doc, k, c->d, NULL, "duplicate detector '%s'",
					           k->str);
			if (!pmap_get(&p->detector_ids, k->str, k->len, &det)) {
				unknown_ref(c, doc, k, "detector", &p->detector_ids);
				continue;
			}
			if (!ydoc_enum(doc, m->pairs[i].value, acts, 3, &act, c->d))
				continue;
			if (w == 1)
				p->detectors[det].used_response = true;
			else
				p->detectors[det].used_prompt = true;
			r->inspect[r->n_inspect++] =
			        (policy_inspect_item){ .detector = (uint8_t)det,
				                       .response = (uint8_t)(w == 1),
				                       .action = (uint8_t)(act + 1) };
		}
	}
}

static void parse_rule(struct cc *c, const ydoc *doc, ydoc_node *n)
{
	static const char *const rk[] = { "id",     "description", "effect", "when",
		                          "limits", "inspect",     "audit" };
	policy *p = c->p;
	if (!ydoc_expect(doc, n, YDOC_MAP, "a rule", c->d))
		return;
	(void)ydoc_check_keys(doc, n, rk, CUSTOS_ARRAY_LEN(rk), c->d);
	ydoc_node *id = ydoc_map_get(n, "id");
	if (id == NULL) {
		ydoc_error(doc, n, c->d, NULL, "rule needs an 'id'");
		return;
	}
	if (!name_ok(c, doc, id, "rule id"))
		return;
	prule *r = &p->rules[p->n_rules];
	r->id = arena_strdup(&p->a, id->str, id->len);
	r->file = ((const struct cfile *)doc)->aname;
	r->line = id->line;
	r->col = id->col;
	uint32_t prev;
	if (!pmap_put(&c->rule_ids, &p->a, r->id, id->len, p->n_rules, &prev)) {
		char hint[512];
		snprintf(hint, sizeof(hint), "first defined at %s:%u:%u", p->rules[prev].file,
		         p->rules[prev].line, p->rules[prev].col);
		ydoc_error(doc, id, c->d, hint, "duplicate rule id '%s'", id->str);
		return;
	}
	c->rule_doc[p->n_rules] = doc;
	c->rule_node[p->n_rules] = n;
	c->cur_rule = r;
	r->index = p->n_rules++;
	ydoc_node *v;
	const char *s;
	if ((v = ydoc_map_get(n, "description")) != NULL && ydoc_str(doc, v, &s, c->d))
		r->description = arena_strdup(&p->a, s, v->len);
	int x;
	v = ydoc_map_get(n, "effect");
	if (v == NULL) {
		ydoc_error(doc, id, c->d, "effect: allow or effect: deny",
		           "rule '%s' needs 'effect'", r->id);
	} else {
		static const char *const effects[] = { "deny", "allow" };
		if (ydoc_enum(doc, v, effects, 2, &x, c->d))
			r->effect = (uint8_t)x;
	}
	r->dirs = 3;
	v = ydoc_map_get(n, "when");
	if (v && ydoc_expect(doc, v, YDOC_MAP, "'when'", c->d))
		(void)parse_when(c, doc, v, r);
	if ((v = ydoc_map_get(n, "limits")) != NULL)
		parse_limits(c, doc, v, r);
	if ((v = ydoc_map_get(n, "inspect")) != NULL)
		parse_inspect(c, doc, v, r);
	if ((v = ydoc_map_get(n, "audit")) != NULL && ydoc_enum(doc, v, audit_names, 3, &x, c->d)) {
		r->has_audit = true;
		r->audit = (uint8_t)x;
	}
	if (r->effect == POLICY_DENY && (r->has_limits || r->n_inspect || r->has_audit))
		ydoc_warn(doc, id, c->d, NULL,
		          "rule '%s' is a deny: its limits/inspect/audit obligations never apply",
		          r->id);
	/* Obligations the proxy does not act on: said at check time, not found in production. */
	if (r->effect == POLICY_ALLOW && r->has_limits && r->dirs == 2)
		ydoc_warn(doc, ydoc_map_get(n, "limits"), c->d, NULL,
		          "rule '%s' applies to egress only, where 'limits' are not enforced (the "
		          "egress proxy applies only 'inspect' obligations)",
		          r->id);
	/* Egress hashes the bodies of each request it reads (docs/EGRESS.md "Body hashes"); a
	 * tunnel's bytes are opaque, and a CONNECT is decided on its own. */
	bool connect_only = r->methods != NULL && r->n_methods > 0;
	for (uint32_t i = 0; i < r->n_methods && connect_only; i++)
		connect_only = span_eq(r->methods[i], SPAN_LIT("CONNECT"));
	if (r->effect == POLICY_ALLOW && r->has_audit && r->audit > POLICY_AUDIT_METADATA &&
	    connect_only)
		ydoc_warn(doc, ydoc_map_get(n, "audit"), c->d, NULL,
		          "rule '%s' applies to CONNECT only, where 'audit: %s' hashes nothing: a "
		          "tunnel's bytes are opaque (requests inside an intercepted tunnel are "
		          "decided, and hashed, by their own method)",
		          r->id, audit_names[r->audit]);
	else if (r->effect == POLICY_ALLOW && r->has_audit && r->audit == POLICY_AUDIT_BODIES &&
	         r->dirs == 2)
		ydoc_warn(doc, ydoc_map_get(n, "audit"), c->d, "write 'audit: bodies_hashed'",
		          "rule '%s' applies to egress only, where 'audit: bodies' records the "
		          "bodies' SHA-256, as bodies_hashed does; the bodies themselves are not "
		          "written to the trail",
		          r->id);
}

/* ---------------------------------------------------------------------------------------------
 * Warnings over the compiled rules
 */
static void never_matches(struct cc *c, const prule *r, const char *why)
{
	ydoc_warn(c->rule_doc[r->index],
	          c->rule_node[r->index]->kind == YDOC_MAP
	                  ? ydoc_map_get(c->rule_node[r->index], "id")
	                  : c->rule_node[r->index],
	          c->d, NULL, "rule '%s' can never match: %s", r->id, why);
}

static void check_rule(struct cc *c, const prule *r)
{
	const policy *p = c->p;
	char why[POLICY_MAX_NAME + 128];
	if (r->present & C_BODY && r->body_min > r->body_max)
		never_matches(c, r, "body_size bounds exclude every size");
	const struct {
		uint32_t bit;
		const struct ord_cond *o;
		const char *what;
	} ords[] = { { C_ISOLATION, &r->iso, "model.isolation" },
		     { C_CLASS, &r->cls, "data.classification" },
		     { C_TAINT, &r->taint, "taint" } };
	for (size_t i = 0; i < 3; i++) {
		if (!(r->present & ords[i].bit) || ords[i].o->rhs != RHS_LIT)
			continue;
		bool any = false;
		for (int l = 0; l < 4; l++)
			any |= ord_holds(ords[i].o->op, l, ords[i].o->lit);
		if (!any) {
			snprintf(why, sizeof(why), "no level satisfies %s", ords[i].what);
			never_matches(c, r, why);
		}
	}
	if ((r->present & C_MODEL) && (r->present & C_ISOLATION) && r->iso.rhs == RHS_LIT) {
		bool any = false;
		for (uint32_t i = 0; i < r->n_models; i++)
			any |= ord_holds(r->iso.op, p->models[r->models[i]].isolation, r->iso.lit);
		if (!any)
			never_matches(c, r,
			              "none of its models has a matching isolation level "
			              "(unless the request overrides isolation)");
	}
	if ((r->present & C_DATA) && (r->present & C_CLASS) && r->cls.rhs == RHS_LIT) {
		bool any = false;
		for (uint32_t i = 0; i < r->n_data; i++)
			any |= ord_holds(r->cls.op, p->data[r->data[i]].classification, r->cls.lit);
		if (!any)
			never_matches(c, r,
			              "none of its data sources has a matching classification");
	}
	if ((r->present & C_GROUP)) {
		bool any = false;
		for (uint32_t i = 0; i < r->n_groups; i++)
			any |= r->groups[i] != UINT32_MAX;
		if (!any)
			never_matches(c, r, "no principal is in any of its groups");
		else if (r->present & C_PRINCIPAL) {
			bool hit = false;
			for (uint32_t i = 0; i < r->n_principals && !hit; i++) {
				const pprincipal *pr = &p->principals[r->principals[i]];
				for (size_t g = 0; g < pr->pub.n_groups && !hit; g++)
					for (uint32_t j = 0; j < r->n_groups && !hit; j++)
						hit = pr->group_ids[g] == r->groups[j];
			}
			if (!hit)
				never_matches(c, r, "none of its principals is in its groups");
		}
	}
	if ((r->present & C_ROUTE) && (r->present & C_METHOD)) {
		bool any = false;
		for (uint32_t i = 0; i < r->n_routes && !any; i++) {
			const char *rt = p->routes[r->routes[i]];
			size_t ml = (size_t)(strchr(rt, ' ') - rt);
			for (uint32_t j = 0; j < r->n_methods && !any; j++)
				any = r->methods[j].len == ml &&
				      memcmp(r->methods[j].ptr, rt, ml) == 0;
		}
		if (!any)
			never_matches(c, r, "its methods and its routes' methods differ");
	}
	if ((r->present & C_ROUTE) && r->dirs == 0)
		never_matches(c, r, "routes are matched on ingress only, and it is an egress rule");
	if ((r->present & (C_DATA | C_CLASS)) && r->dirs == 1)
		never_matches(c, r,
		              "data sources are matched on egress only, and it is an ingress "
		              "rule");
}

static bool list_subset(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
	for (uint32_t i = 0; i < na; i++) {
		bool found = false;
		for (uint32_t j = 0; j < nb && !found; j++)
			found = a[i] == b[j];
		if (!found)
			return false;
	}
	return true;
}

/* A model that no ingress allow rule can reach: every request to it is denied. */
static void check_models(struct cc *c)
{
	const policy *p = c->p;
	if (p->n_models == 0)
		return;
	uint8_t *reach = xcalloc(p->n_models, 1);
	bool wild = false;
	for (uint32_t i = 0; i < p->n_rules && !wild; i++) {
		const prule *r = &p->rules[i];
		if (r->effect != POLICY_ALLOW || !(r->dirs & 1))
			continue;
		if (!(r->present & C_MODEL))
			wild = true;
		for (uint32_t j = 0; j < r->n_models; j++)
			reach[r->models[j]] = 1;
	}
	for (uint32_t i = 0; i < p->n_models && !wild; i++)
		if (!reach[i])
			ydoc_warn(c->model_doc[i], c->model_node[i], c->d, NULL,
			          "model '%s' is named by no ingress allow rule and no such rule "
			          "applies to every model: every request to it is denied",
			          p->models[i].id);
	free(reach);
}

/* An allow is shadowed by a deny whose only conditions are direction and id lists that
 * contain the allow's (so every request the allow matches, the deny matches too). */
static void check_shadowing(struct cc *c)
{
	const policy *p = c->p;
	const uint32_t simple = C_DIRECTION | C_PRINCIPAL | C_MODEL | C_DATA;
	size_t budget = 4u * 1000 * 1000; /* pair checks; bounded so huge policies compile fast */
	for (uint32_t i = 0; i < p->n_rules; i++) {
		const prule *dn = &p->rules[i];
		if (dn->effect != POLICY_DENY || (dn->present & ~simple))
			continue;
		for (uint32_t j = 0; j < p->n_rules && budget; j++, budget--) {
			const prule *al = &p->rules[j];
			if (al->effect != POLICY_ALLOW || al->dirs == 0 || (al->dirs & ~dn->dirs))
				continue;
			if ((dn->present & C_PRINCIPAL) &&
			    (!(al->present & C_PRINCIPAL) ||
			     !list_subset(al->principals, al->n_principals, dn->principals,
			                  dn->n_principals)))
				continue;
			if ((dn->present & C_MODEL) &&
			    (!(al->present & C_MODEL) ||
			     !list_subset(al->models, al->n_models, dn->models, dn->n_models)))
				continue;
			if ((dn->present & C_DATA) &&
			    (!(al->present & C_DATA) ||
			     !list_subset(al->data, al->n_data, dn->data, dn->n_data)))
				continue;
			char hint[512];
			snprintf(hint, sizeof(hint), "the deny is at %s:%u:%u", dn->file, dn->line,
			         dn->col);
			ydoc_warn(c->rule_doc[j], ydoc_map_get(c->rule_node[j], "id"), c->d, hint,
			          "allow rule '%s' is shadowed by deny rule '%s' and never allows "
			          "anything",
			          al->id, dn->id);
		}
	}
}

/* An attribute some rule compares in order (above, at_most, ... or as a reference) must hold
 * a classification level in every principal that has it: a misspelt level would make the
 * comparison false, and a deny written over it would silently never fire. */
static void check_attr_levels(struct cc *c)
{
	const policy *p = c->p;
	for (uint32_t i = 0; i < p->n_principals; i++) {
		const pprincipal *pr = &p->principals[i];
		for (size_t k = 0; k < pr->pub.n_attrs; k++) {
			const struct policy_attr *a = &pr->pub.attrs[k];
			const char *by = c->attr_ordered_by[pr->attr_ids[k]];
			if (by == NULL || a->level >= 0)
				continue;
			ydoc_node *v = ydoc_map_get(c->princ_attrs[i], a->name);
			const char *g = diag_suggest(span_cstr(a->value), class_names, 4);
			char hint[128];
			if (g)
				snprintf(hint, sizeof(hint), "did you mean '%s'?", g);
			else
				snprintf(hint, sizeof(hint),
				         "one of: public, internal, confidential, restricted");
			ydoc_error(c->princ_doc[i], v ? v : c->princ_attrs[i], c->d, hint,
			           "attribute '%s' of principal '%s' is '%s', not a classification "
			           "level, and rule '%s' compares it in order",
			           a->name, pr->pub.id, a->value, by);
		}
	}
}

/* ---------------------------------------------------------------------------------------------
 * Index: each rule goes into exactly one dimension (principal, model, route, data, or the
 * wildcard bucket) for each direction it applies to, so a request's candidates are the
 * union of four buckets and one wildcard list, with no duplicates.
 */
static void bucket_add(arena *a, struct bucket *b, uint32_t rule)
{
	if (b->n == b->cap) {
		uint32_t ncap = b->cap ? b->cap * 2 : 2;
		uint32_t *nr = arena_alloc(a, sizeof(uint32_t) * ncap);
		if (b->n)
			memcpy(nr, b->rules, sizeof(uint32_t) * b->n);
		b->rules = nr;
		b->cap = ncap;
	}
	b->rules[b->n++] = rule;
}

static bool uses_pairs(const prule *r)
{
	return !(r->present & C_PRINCIPAL) && (r->present & C_MODEL) && (r->present & C_ROUTE) &&
	       (uint64_t)r->n_models * r->n_routes <= PAIR_MAX_PER_RULE;
}

static struct bucket *pair_slot(struct dir_index *x, uint64_t key)
{
	uint64_t h = key * 0x9e3779b97f4a7c15ull;
	for (uint32_t j = (uint32_t)(h >> 40) & (x->pair_cap - 1);;
	     j = (j + 1) & (x->pair_cap - 1)) {
		if (x->by_pair[j].key == key || x->by_pair[j].key == 0) {
			x->by_pair[j].key = key;
			return &x->by_pair[j].b;
		}
	}
}

static void build_index(policy *p)
{
	uint64_t pairs = 0;
	for (uint32_t i = 0; i < p->n_rules; i++)
		if (uses_pairs(&p->rules[i]))
			pairs += (uint64_t)p->rules[i].n_models * p->rules[i].n_routes;
	uint32_t cap = 0;
	if (pairs) {
		cap = 16;
		while (cap < pairs * 2)
			cap *= 2;
	}
	for (int d = 0; d < 2; d++) {
		struct dir_index *x = &p->idx[d];
		x->pair_cap = cap;
		if (cap)
			x->by_pair = arena_alloc(&p->a, sizeof(struct pair_bucket) * cap);
		x->by_principal = arena_alloc(&p->a, sizeof(struct bucket) * (p->n_principals + 1));
		x->by_model = arena_alloc(&p->a, sizeof(struct bucket) * (p->n_models + 1));
		x->by_data = arena_alloc(&p->a, sizeof(struct bucket) * (p->n_data + 1));
		x->by_route = arena_alloc(&p->a, sizeof(struct bucket) * (p->n_routes + 1));
	}
	for (uint32_t i = 0; i < p->n_rules; i++) {
		const prule *r = &p->rules[i];
		for (int d = 0; d < 2; d++) {
			if (!(r->dirs & (1u << d)))
				continue;
			struct dir_index *x = &p->idx[d];
			if (r->present & C_PRINCIPAL) {
				for (uint32_t j = 0; j < r->n_principals; j++)
					bucket_add(&p->a, &x->by_principal[r->principals[j]], i);
			} else if (uses_pairs(r)) {
				for (uint32_t j = 0; j < r->n_models; j++)
					for (uint32_t k = 0; k < r->n_routes; k++)
						bucket_add(&p->a,
						           pair_slot(x, pair_key(r->models[j],
						                                 r->routes[k])),
						           i);
			} else if (r->present & C_MODEL) {
				for (uint32_t j = 0; j < r->n_models; j++)
					bucket_add(&p->a, &x->by_model[r->models[j]], i);
			} else if (r->present & C_ROUTE) {
				for (uint32_t j = 0; j < r->n_routes; j++)
					bucket_add(&p->a, &x->by_route[r->routes[j]], i);
			} else if (r->present & C_DATA) {
				for (uint32_t j = 0; j < r->n_data; j++)
					bucket_add(&p->a, &x->by_data[r->data[j]], i);
			} else {
				bucket_add(&p->a, &x->wildcard, i);
			}
		}
	}
}

/* ---------------------------------------------------------------------------------------------
 * Entry points
 */
static void cc_free(struct cc *c)
{
	for (size_t i = 0; i < c->n_files; i++) {
		ydoc_free(&c->files[i].doc);
		free(c->files[i].real);
		free(c->files[i].dir);
	}
	free(c->group_names);
	free(c->group_members);
	free(c->attr_names);
	free(c->attr_holders);
	free(c->rule_doc);
	free(c->rule_node);
	free(c->model_doc);
	free(c->model_node);
	free(c->data_doc);
	free(c->data_node);
	free(c->det_doc);
	free(c->det_node);
	free(c->princ_doc);
	free(c->princ_attrs);
	free(c->attr_ordered_by);
	EVP_MD_CTX_free(c->sha);
}

static void policy_destroy(policy *p)
{
	if (p == NULL)
		return;
	free(p->name);
	arena_free(&p->a);
	free(p);
}

/* The inspection engine compiled as the proxy compiles it at start (proxy/decide.c): every
 * pattern also compiled alone (check_pattern) can still fail as one Hyperscan database, too
 * large or complex together, and the engine has its own bounds. Placed at the detector the
 * failure names, else at the first custom detector a rule uses, else at the file's start. */
static void check_engine(struct cc *c, const char *name)
{
	policy *p = c->p;
	bool any = false;
	for (size_t i = 0; i < p->n_detectors && !any; i++)
		any = p->detectors[i].used_prompt || p->detectors[i].used_response;
	if (!any) /* the proxy compiles no database */
		return;
	if (c->hs_state == 0)
		c->hs_state = lazylib_hyperscan() == CUSTOS_OK ? 1 : -1;
	if (c->hs_state < 0) {
		diag_add(c->d, DIAG_WARNING, name, 1, 1, NULL,
		         "the inspection detectors are not compiled here: %s (the proxy compiles "
		         "them at start)",
		         err_msg());
		return;
	}
	inspect_engine *eng = NULL;
	int failed = -1;
	custos_err e = inspect_engine_from_policy_at(p, &eng, &failed);
	inspect_engine_free(eng);
	if (e == CUSTOS_OK)
		return;
	if (e == CUSTOS_ERR_UNSUPPORTED) { /* this host's CPU, not the policy */
		diag_add(c->d, DIAG_WARNING, name, 1, 1, NULL,
		         "the inspection detectors are not compiled here: %s", err_msg());
		return;
	}
	size_t at = failed >= POLICY_BUILTIN_DETECTORS && (size_t)failed < p->n_detectors
	                    ? (size_t)failed
	                    : 0;
	for (size_t i = POLICY_BUILTIN_DETECTORS; at == 0 && i < p->n_detectors; i++)
		if (p->detectors[i].used_prompt || p->detectors[i].used_response)
			at = i;
	const char *hint =
	        failed < 0
	                ? "each pattern compiles alone; the proxy compiles every detector a rule "
	                  "names into one streaming Hyperscan database, which fails: use fewer "
	                  "or simpler patterns (bounded repeats, fewer alternatives)"
	                : NULL;
	if (at != 0 && c->det_doc[at] != NULL && c->det_node[at] != NULL)
		ydoc_error(c->det_doc[at], c->det_node[at], c->d, hint, "inspection detectors: %s",
		           err_msg());
	else
		diag_add(c->d, DIAG_ERROR, name, 1, 1, hint, "inspection detectors: %s", err_msg());
}

static custos_err compile(const char *name, const char *text, size_t len, bool from_path,
                          bool engine, policy **out, diag_list *d)
{
	struct cc c;
	memset(&c, 0, sizeof(c));
	*out = NULL;
	size_t errors0 = d->errors;
	c.d = d;
	c.p = xcalloc(1, sizeof(policy));
	atomic_init(&c.p->refs, 1);
	c.p->name = xstrdup(name);
	c.sha = EVP_MD_CTX_new();
	if (c.sha == NULL || EVP_DigestInit_ex(c.sha, EVP_sha256(), NULL) != 1) {
		cc_free(&c);
		policy_destroy(c.p);
		return err_set(CUSTOS_ERR_CRYPTO, "SHA-256 unavailable");
	}
	custos_err e;
	if (from_path) {
		e = load_path(&c, name, NULL, NULL);
	} else {
		char *real = realpath(name, NULL);
		e = load_file(&c, name, text, len, real, NULL, NULL);
		free(real);
	}
	policy *p = c.p;
	if (e == CUSTOS_OK && d->errors == errors0) {
		size_t nd = count_map(&c, "detectors"), np = count_map(&c, "principals"),
		       nm = count_map(&c, "models"), nda = count_map(&c, "data"),
		       nr = count_map(&c, "rules");
		if (np > POLICY_MAX_SUBJECTS || nm > POLICY_MAX_SUBJECTS ||
		    nda > POLICY_MAX_SUBJECTS || nr > POLICY_MAX_RULES) {
			diag_add(d, DIAG_ERROR, name, 1, 1, NULL,
			         "policy over its limits: %zu principals, %zu models, %zu data "
			         "sources (max %d each), %zu rules (max %d)",
			         np, nm, nda, POLICY_MAX_SUBJECTS, nr, POLICY_MAX_RULES);
		} else {
			p->detectors = arena_alloc(&p->a, sizeof(policy_detector) *
			                                          (POLICY_MAX_DETECTORS + nd + 1));
			for (size_t i = 0; i < POLICY_BUILTIN_DETECTORS; i++) {
				policy_detector *det = &p->detectors[i];
				det->name = builtin_detectors[i];
				det->builtin = true;
				det->index = (uint32_t)i;
				(void)pmap_put(&p->detector_ids, &p->a, det->name,
				               strlen(det->name), (uint32_t)i, NULL);
			}
			p->n_detectors = POLICY_BUILTIN_DETECTORS;
			p->principals = arena_alloc(&p->a, sizeof(pprincipal) * (np + 1));
			p->models = arena_alloc(&p->a, sizeof(policy_model) * (nm + 1));
			p->data = arena_alloc(&p->a, sizeof(policy_data_source) * (nda + 1));
			p->rules = arena_alloc(&p->a, sizeof(prule) * (nr + 1));
			c.rule_doc = xcalloc(nr + 1, sizeof(*c.rule_doc));
			c.rule_node = xcalloc(nr + 1, sizeof(*c.rule_node));
			c.model_doc = xcalloc(nm + 1, sizeof(*c.model_doc));
			c.model_node = xcalloc(nm + 1, sizeof(*c.model_node));
			c.data_doc = xcalloc(nda + 1, sizeof(*c.data_doc));
			c.data_node = xcalloc(nda + 1, sizeof(*c.data_node));
			c.det_doc = xcalloc(POLICY_MAX_DETECTORS + nd + 1, sizeof(*c.det_doc));
			c.det_node = xcalloc(POLICY_MAX_DETECTORS + nd + 1, sizeof(*c.det_node));
			c.princ_doc = xcalloc(np + 1, sizeof(*c.princ_doc));
			c.princ_attrs = xcalloc(np + 1, sizeof(*c.princ_attrs));
			pass_subjects(&c, "detectors", parse_detector);
			pass_subjects(&c, "principals", parse_principal);
			pass_subjects(&c, "models", parse_model);
			pass_subjects(&c, "data", parse_data);
			c.attr_ordered_by =
			        xcalloc(p->n_attr_names + 1, sizeof(*c.attr_ordered_by));
			for (size_t i = 0; i < c.n_files; i++) {
				const ydoc *doc = &c.files[i].doc;
				if (!c.files[i].parsed || doc->root == NULL ||
				    doc->root->kind != YDOC_MAP)
					continue;
				ydoc_node *rl = ydoc_map_get(doc->root, "rules");
				if (rl == NULL ||
				    !ydoc_expect(doc, rl, YDOC_SEQ, "a list of rules", d))
					continue;
				for (size_t j = 0; j < rl->n; j++)
					parse_rule(&c, doc, rl->items[j]);
			}
			check_attr_levels(&c);
			if (d->errors == errors0) {
				if (p->n_rules == 0)
					diag_add(d, DIAG_WARNING, name, 1, 1, NULL,
					         "no rules: every request is denied");
				for (uint32_t i = 0; i < p->n_rules; i++)
					check_rule(&c, &p->rules[i]);
				check_shadowing(&c);
				check_models(&c);
				build_index(p);
			}
			if (engine && d->errors == errors0)
				check_engine(&c, name);
		}
	}
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (EVP_DigestFinal_ex(c.sha, md, &mdlen) == 1 && mdlen == 32)
		num_hex(md, 32, p->hash);
	cc_free(&c);
	if (d->errors != errors0 || e != CUSTOS_OK) {
		policy_destroy(p);
		if (e == CUSTOS_OK || e == CUSTOS_ERR_PARSE)
			return err_set(CUSTOS_ERR_PARSE, "%s: %zu error(s)", name,
			               d->errors - errors0);
		return e;
	}
	for (uint32_t i = 0; i < p->n_rules && !p->ingress_taint; i++) {
		const prule *r = &p->rules[i];
		bool t = (r->present & C_TAINT) || r->iso.rhs == RHS_TAINT ||
		         r->cls.rhs == RHS_TAINT || r->taint.rhs == RHS_TAINT;
		for (uint32_t j = 0; j < r->n_attrs && !t; j++)
			t = r->attrs[j].ordered && r->attrs[j].ord.rhs == RHS_TAINT;
		p->ingress_taint = t && (r->dirs & 1);
	}
	*out = p;
	return CUSTOS_OK;
}

custos_err policy_load(const char *path, policy **out, diag_list *d)
{
	return compile(path, NULL, 0, true, false, out, d);
}

custos_err policy_load_check(const char *path, policy **out, diag_list *d)
{
	return compile(path, NULL, 0, true, true, out, d);
}

custos_err policy_parse(const char *name, const char *text, size_t len, policy **out, diag_list *d)
{
	ENSURE(len <= POLICY_MAX_FILE_BYTES, CUSTOS_ERR_LIMIT,
	       "%s: %zu bytes is over the limit of %u", name, len, POLICY_MAX_FILE_BYTES);
	return compile(name, text, len, false, false, out, d);
}

policy *policy_ref(policy *p)
{
	if (p)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

void policy_unref(policy *p)
{
	if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		policy_destroy(p);
}

const char *policy_hash_hex(const policy *p)
{
	return p->hash;
}

bool policy_needs_taint(const policy *p, policy_direction dir)
{
	return dir == POLICY_EGRESS || p->ingress_taint;
}
const char *policy_name(const policy *p)
{
	return p->name;
}
policy_mode policy_get_mode(const policy *p)
{
	return p->mode;
}
size_t policy_rule_count(const policy *p)
{
	return p->n_rules;
}
size_t policy_memory_bytes(const policy *p)
{
	return sizeof(*p) + p->a.total;
}
bool policy_rule_at(const policy *p, size_t i, policy_rule_info *out)
{
	if (i >= p->n_rules)
		return false;
	const prule *r = &p->rules[i];
	*out = (policy_rule_info){ .id = r->id,
		                   .description = r->description,
		                   .file = r->file,
		                   .line = r->line,
		                   .effect = (policy_effect)r->effect,
		                   .inspect = r->inspect,
		                   .n_inspect = r->n_inspect };
	return true;
}

size_t policy_detector_count(const policy *p)
{
	return p->n_detectors;
}
const policy_detector *policy_detector_at(const policy *p, size_t i)
{
	return i < p->n_detectors ? &p->detectors[i] : NULL;
}
