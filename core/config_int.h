/*
 * Private to the custos.yaml loader: the arena that owns every string and array of a config,
 * and the typed getters that report problems at the node's file:line:col and keep going.
 */
#ifndef CUSTOS_CONFIG_INT_H
#define CUSTOS_CONFIG_INT_H

#include "custos/config.h"

typedef struct cfg_ctx {
	const ydoc *doc;
	diag_list *d;
	cfg_arena *a;
} cfg_ctx;

cfg_arena *cfg_arena_new(void);
void cfg_arena_free(cfg_arena *a);
/* Zeroed memory for n elements of size; aborts on exhaustion (sizes are bounded by limits). */
void *cfg_alloc(cfg_arena *a, size_t n, size_t size);
char *cfg_strdup(cfg_arena *a, const char *s);
/* Where string s (a pointer the arena holds, from a cfg_str* getter) was written. */
bool cfg_arena_where(const cfg_arena *a, const char *s, unsigned *line, unsigned *col);

/* The value under key (marked used), NULL when absent. */
ydoc_node *cfg_get(ydoc_node *map, const char *key);
/* A sub-mapping: NULL when absent or not a mapping (reported); unknown keys reported. */
ydoc_node *cfg_section(cfg_ctx *c, ydoc_node *map, const char *key, const char *const *keys,
                       size_t nkeys);
#define CFG_SECTION(c, map, key, keys)                                                             \
	cfg_section((c), (map), (key), (keys), CUSTOS_ARRAY_LEN(keys))
/* A mapping node itself (list item): false when it is not one; unknown keys reported. */
bool cfg_map(cfg_ctx *c, ydoc_node *node, const char *what, const char *const *keys, size_t nkeys);
#define CFG_MAP(c, node, what, keys) cfg_map((c), (node), (what), (keys), CUSTOS_ARRAY_LEN(keys))
/* A sequence under key of at most max items: NULL when absent or wrong (reported). */
ydoc_node *cfg_seq(cfg_ctx *c, ydoc_node *map, const char *key, size_t max);
/* Same, with hint (may be NULL) on the error for more than max items: where a bound is one
 * `custos up` has, the hint says so. */
ydoc_node *cfg_seq_hint(cfg_ctx *c, ydoc_node *map, const char *key, size_t max, const char *hint);

/* Getters: absent leaves *out unchanged (the default) and returns false; present but wrong is
 * reported and returns false; present and valid sets *out and returns true. `req` variants
 * report a missing key. Strings are copied into the arena; an empty string is an error. */
bool cfg_str(cfg_ctx *c, ydoc_node *map, const char *key, bool req, char **out);
bool cfg_str_node(cfg_ctx *c, ydoc_node *node, char **out);
bool cfg_path(cfg_ctx *c, ydoc_node *map, const char *key, bool req, bool absolute, char **out);
bool cfg_id_node(cfg_ctx *c, ydoc_node *node, char **out);
bool cfg_id(cfg_ctx *c, ydoc_node *map, const char *key, bool req, char **out);
bool cfg_bool(cfg_ctx *c, ydoc_node *map, const char *key, bool *out);
bool cfg_u64(cfg_ctx *c, ydoc_node *map, const char *key, uint64_t min, uint64_t max,
             uint64_t *out);
bool cfg_size(cfg_ctx *c, ydoc_node *map, const char *key, uint64_t min, uint64_t max,
              uint64_t *out);
bool cfg_dur(cfg_ctx *c, ydoc_node *map, const char *key, uint64_t min, uint64_t max,
             uint64_t *out);
bool cfg_enum(cfg_ctx *c, ydoc_node *map, const char *key, const char *const *choices, size_t n,
              int *out);
#define CFG_ENUM(c, map, key, choices, field)                                                      \
	do {                                                                                       \
		int v_ = (int)(field);                                                             \
		if (cfg_enum((c), (map), (key), (choices), CUSTOS_ARRAY_LEN(choices), &v_))        \
			(field) = v_;                                                              \
	} while (0)
/* A list of non-empty strings (at most max). */
bool cfg_strlist(cfg_ctx *c, ydoc_node *map, const char *key, size_t max, char ***out, size_t *n);
bool cfg_strlist_hint(cfg_ctx *c, ydoc_node *map, const char *key, size_t max, const char *hint,
                      char ***out, size_t *n);
/* A 64-hex-digit SHA-256 digest. */
bool cfg_sha256(cfg_ctx *c, ydoc_node *map, const char *key, bool req, uint8_t out[32]);
/* An address (see cfg_addr); default_port 0 means the port is required. */
bool cfg_addr_parse(cfg_ctx *c, ydoc_node *node, const char *s, cfg_addr *out);

#endif
