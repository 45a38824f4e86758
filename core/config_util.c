/*
 * Helpers for the custos.yaml loader: an arena owning every string and array of a config (so
 * config_free cannot miss one), typed getters that report at file:line:col and carry on (one
 * check run lists every problem), and address parsing.
 */
#include <arpa/inet.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <openssl/crypto.h>

#include "config_int.h"

struct arena_block {
	struct arena_block *next;
	size_t size;
	alignas(max_align_t) unsigned char data[];
};

/* Where a string of the config was written (config_where): keyed by the string's address. */
struct cfg_pos {
	const char *s;
	unsigned line, col;
};

struct cfg_arena {
	struct arena_block *head;
	struct cfg_pos *pos;
	size_t npos, cap;
};

cfg_arena *cfg_arena_new(void)
{
	return xcalloc(1, sizeof(cfg_arena));
}

void cfg_arena_free(cfg_arena *a)
{
	if (a == NULL)
		return;
	for (struct arena_block *b = a->head, *next; b; b = next) {
		next = b->next;
		OPENSSL_cleanse(b->data, b->size); /* digests and paths: wipe all, it is cheap */
		free(b);
	}
	free(a->pos);
	free(a);
}

static void note_pos(cfg_arena *a, const char *s, const ydoc_node *n)
{
	if (a->npos == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		struct cfg_pos *p = realloc(a->pos, cap * sizeof(*p));
		if (p == NULL)
			return; /* a position is a convenience: messages then name the file only */
		a->pos = p;
		a->cap = cap;
	}
	a->pos[a->npos++] = (struct cfg_pos){ .s = s, .line = n->line, .col = n->col };
}

bool cfg_arena_where(const cfg_arena *a, const char *s, unsigned *line, unsigned *col)
{
	for (size_t i = 0; a && s && i < a->npos; i++) {
		if (a->pos[i].s == s) {
			*line = a->pos[i].line;
			*col = a->pos[i].col;
			return true;
		}
	}
	return false;
}

void *cfg_alloc(cfg_arena *a, size_t n, size_t size)
{
	if (n == 0 || size == 0)
		n = size = 1;
	if (n > (SIZE_MAX - sizeof(struct arena_block)) / size)
		abort();
	struct arena_block *b = calloc(1, sizeof(*b) + n * size);
	if (b == NULL)
		abort();
	b->size = n * size;
	b->next = a->head;
	a->head = b;
	return b->data;
}

char *cfg_strdup(cfg_arena *a, const char *s)
{
	size_t n = strlen(s);
	char *p = cfg_alloc(a, n + 1, 1);
	memcpy(p, s, n);
	return p;
}

ydoc_node *cfg_get(ydoc_node *map, const char *key)
{
	return ydoc_map_get(map, key);
}

bool cfg_map(cfg_ctx *c, ydoc_node *node, const char *what, const char *const *keys, size_t nkeys)
{
	if (!ydoc_expect(c->doc, node, YDOC_MAP, what, c->d))
		return false;
	/* No schema mapping has this many keys; checking them all would be quadratic. */
	if (node->n > CFG_MAX_MAP_KEYS) {
		ydoc_error(c->doc, node, c->d, NULL, "%s has %zu keys; the limit is %d", what,
		           node->n, CFG_MAX_MAP_KEYS);
		return false;
	}
	ydoc_check_keys(c->doc, node, keys, nkeys, c->d);
	return true;
}

ydoc_node *cfg_section(cfg_ctx *c, ydoc_node *map, const char *key, const char *const *keys,
                       size_t nkeys)
{
	ydoc_node *n = cfg_get(map, key);
	char what[96];

	if (n == NULL)
		return NULL;
	snprintf(what, sizeof(what), "'%s'", key);
	return cfg_map(c, n, what, keys, nkeys) ? n : NULL;
}

ydoc_node *cfg_seq_hint(cfg_ctx *c, ydoc_node *map, const char *key, size_t max, const char *hint)
{
	ydoc_node *n = cfg_get(map, key);
	char what[96];

	if (n == NULL)
		return NULL;
	snprintf(what, sizeof(what), "'%s'", key);
	if (!ydoc_expect(c->doc, n, YDOC_SEQ, what, c->d))
		return NULL;
	if (n->n > max) {
		ydoc_error(c->doc, n, c->d, hint, "'%s' has %zu entries; the limit is %zu", key,
		           n->n, max);
		return NULL;
	}
	return n;
}

ydoc_node *cfg_seq(cfg_ctx *c, ydoc_node *map, const char *key, size_t max)
{
	return cfg_seq_hint(c, map, key, max, NULL);
}

static bool missing(cfg_ctx *c, ydoc_node *map, const char *key, bool req)
{
	if (req)
		ydoc_error(c->doc, map, c->d, NULL, "missing required key '%s'", key);
	return false;
}

bool cfg_str_node(cfg_ctx *c, ydoc_node *node, char **out)
{
	const char *s;

	if (!ydoc_str(c->doc, node, &s, c->d))
		return false;
	if (*s == '\0') {
		ydoc_error(c->doc, node, c->d, NULL, "value must not be empty");
		return false;
	}
	if (node->len > CFG_MAX_PATH_LEN) {
		ydoc_error(c->doc, node, c->d, NULL, "value longer than %d bytes",
		           CFG_MAX_PATH_LEN);
		return false;
	}
	*out = cfg_strdup(c->a, s);
	note_pos(c->a, *out, node);
	return true;
}

bool cfg_str(cfg_ctx *c, ydoc_node *map, const char *key, bool req, char **out)
{
	ydoc_node *n = cfg_get(map, key);

	if (n == NULL)
		return missing(c, map, key, req);
	return cfg_str_node(c, n, out);
}

bool cfg_path(cfg_ctx *c, ydoc_node *map, const char *key, bool req, bool absolute, char **out)
{
	ydoc_node *n = cfg_get(map, key);
	char *p;

	if (n == NULL)
		return missing(c, map, key, req);
	if (!cfg_str_node(c, n, &p))
		return false;
	if (absolute && p[0] != '/') {
		ydoc_error(c->doc, n, c->d, "write the full path, starting with /",
		           "'%s' must be an absolute path", key);
		return false;
	}
	*out = p;
	return true;
}

bool cfg_id_node(cfg_ctx *c, ydoc_node *node, char **out)
{
	char *s;

	if (!cfg_str_node(c, node, &s))
		return false;
	size_t n = strlen(s);
	bool ok = n <= CFG_MAX_ID_LEN;
	for (size_t i = 0; i < n && ok; i++) {
		char ch = s[i];
		ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		     (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == '/' ||
		     ch == ':';
	}
	if (!ok) {
		ydoc_error(c->doc, node, c->d,
		           "ids use letters, digits and . _ - / : (at most 64 characters)",
		           "'%s' is not a valid id", s);
		return false;
	}
	*out = s;
	return true;
}

bool cfg_id(cfg_ctx *c, ydoc_node *map, const char *key, bool req, char **out)
{
	ydoc_node *n = cfg_get(map, key);

	if (n == NULL)
		return missing(c, map, key, req);
	return cfg_id_node(c, n, out);
}

bool cfg_bool(cfg_ctx *c, ydoc_node *map, const char *key, bool *out)
{
	ydoc_node *n = cfg_get(map, key);

	return n != NULL && ydoc_bool(c->doc, n, out, c->d);
}

/* Scalar check and number parsing with the key named in the message. */
static bool num_node(cfg_ctx *c, ydoc_node *n, const char *key, const char *what, const char *hint)
{
	if (n->kind == YDOC_SCALAR && n->str[0] != '\0')
		return true;
	ydoc_error(c->doc, n, c->d, hint, "'%s' must be %s", key, what);
	return false;
}

bool cfg_u64(cfg_ctx *c, ydoc_node *map, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
	ydoc_node *n = cfg_get(map, key);

	if (n == NULL || !num_node(c, n, key, "a whole number", NULL))
		return false;
	if (num_parse_u64((span){ n->str, n->len }, min, max, out) != CUSTOS_OK) {
		ydoc_error(c->doc, n, c->d, NULL, "'%s': %s", key, err_msg());
		return false;
	}
	return true;
}

/* A size as people write it: 1KiB, 16GiB; "N bytes" where no unit divides it. */
static void size_words(uint64_t v, char *out, size_t size)
{
	if (v < 1000 || (v % 1000 != 0 && v % 1024 != 0))
		snprintf(out, size, "%llu bytes", (unsigned long long)v);
	else
		num_format_size(v, out, size);
}

/* v, read from n for key, within [min, max] (lo and hi: the bounds as the reader writes them):
 * stored in *out; otherwise an error naming the range. */
static bool cfg_in_range(cfg_ctx *c, ydoc_node *n, const char *key, uint64_t v, uint64_t min,
                         uint64_t max, const char *lo, const char *hi, uint64_t *out)
{
	if (v > max) {
		ydoc_error(c->doc, n, c->d, NULL,
		           "'%s': '%s' is above the maximum of %s (range %s - %s)", key, n->str, hi,
		           lo, hi);
		return false;
	}
	if (v < min) {
		/* no range when the caller checks the maximum itself (up_bound) */
		if (max == UINT64_MAX)
			ydoc_error(c->doc, n, c->d, NULL, "'%s' must be at least %s", key, lo);
		else
			ydoc_error(c->doc, n, c->d, NULL,
			           "'%s' must be at least %s (range %s - %s)", key, lo, lo, hi);
		return false;
	}
	*out = v;
	return true;
}

bool cfg_size(cfg_ctx *c, ydoc_node *map, const char *key, uint64_t min, uint64_t max,
              uint64_t *out)
{
	static const char *hint = "sizes look like 512, 64KiB, 10MiB, 1GiB";
	ydoc_node *n = cfg_get(map, key);
	uint64_t v;
	char lo[32], hi[32];

	if (n == NULL || !num_node(c, n, key, "a size", hint))
		return false;
	if (num_parse_size((span){ n->str, n->len }, UINT64_MAX, &v) != CUSTOS_OK) {
		ydoc_error(c->doc, n, c->d, hint, "'%s': %s", key, err_msg());
		return false;
	}
	size_words(min, lo, sizeof(lo));
	size_words(max, hi, sizeof(hi));
	return cfg_in_range(c, n, key, v, min, max, lo, hi, out);
}

bool cfg_dur(cfg_ctx *c, ydoc_node *map, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
	static const char *hint = "durations look like 250ms, 10s, 5m, 1h";
	ydoc_node *n = cfg_get(map, key);
	uint64_t v;
	char lo[32], hi[32];

	if (n == NULL || !num_node(c, n, key, "a duration", hint))
		return false;
	if (num_parse_duration((span){ n->str, n->len }, UINT64_MAX, &v) != CUSTOS_OK) {
		ydoc_error(c->doc, n, c->d, hint, "'%s': %s", key, err_msg());
		return false;
	}
	num_format_duration(min, lo, sizeof(lo));
	num_format_duration(max, hi, sizeof(hi));
	return cfg_in_range(c, n, key, v, min, max, lo, hi, out);
}

bool cfg_enum(cfg_ctx *c, ydoc_node *map, const char *key, const char *const *choices, size_t n,
              int *out)
{
	ydoc_node *node = cfg_get(map, key);

	return node != NULL && ydoc_enum(c->doc, node, choices, n, out, c->d);
}

bool cfg_strlist(cfg_ctx *c, ydoc_node *map, const char *key, size_t max, char ***out, size_t *n)
{
	return cfg_strlist_hint(c, map, key, max, NULL, out, n);
}

bool cfg_strlist_hint(cfg_ctx *c, ydoc_node *map, const char *key, size_t max, const char *hint,
                      char ***out, size_t *n)
{
	ydoc_node *s = cfg_seq_hint(c, map, key, max, hint);
	bool ok = true;

	if (s == NULL)
		return false;
	char **v = cfg_alloc(c->a, s->n, sizeof(char *));
	size_t k = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (cfg_str_node(c, s->items[i], &v[k]))
			k++;
		else
			ok = false;
	}
	*out = v;
	*n = k;
	return ok;
}

bool cfg_sha256(cfg_ctx *c, ydoc_node *map, const char *key, bool req, uint8_t out[32])
{
	ydoc_node *n = cfg_get(map, key);

	if (n == NULL)
		return missing(c, map, key, req);
	if (n->kind != YDOC_SCALAR ||
	    num_parse_hex((span){ n->str, n->len }, out, 32) != CUSTOS_OK) {
		ydoc_error(c->doc, n, c->d, "generate one with: printf %s TOKEN | sha256sum",
		           "'%s' must be a SHA-256 digest of 64 hex digits", key);
		return false;
	}
	return true;
}

static bool host_is_loopback(const char *h)
{
	unsigned char a[16];

	if (strcmp(h, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, h, a) == 1)
		return a[0] == 127;
	if (inet_pton(AF_INET6, h, a) == 1) {
		static const unsigned char one[16] = { [15] = 1 };
		return memcmp(a, one, 16) == 0;
	}
	return false;
}

bool cfg_addr_parse(cfg_ctx *c, ydoc_node *node, const char *s, cfg_addr *out)
{
	const char *hint = "write host:port, [ipv6]:port, or unix:/path";
	struct sockaddr_un sun;

	memset(out, 0, sizeof(*out));
	if (strncmp(s, "unix:", 5) == 0 || s[0] == '/') {
		const char *p = s[0] == '/' ? s : s + 5;
		if (p[0] != '/') {
			ydoc_error(c->doc, node, c->d, hint, "unix socket path must be absolute");
			return false;
		}
		if (strlen(p) >= sizeof(sun.sun_path)) {
			ydoc_error(c->doc, node, c->d, NULL,
			           "unix socket path longer than %zu bytes",
			           sizeof(sun.sun_path) - 1);
			return false;
		}
		out->kind = CFG_ADDR_UNIX;
		out->path = cfg_strdup(c->a, p);
		out->loopback = true;
		return true;
	}
	const char *colon, *hs = s, *he;
	if (s[0] == '[') {
		he = strchr(s, ']');
		if (he == NULL || he[1] != ':') {
			ydoc_error(c->doc, node, c->d, hint, "bad address '%s'", s);
			return false;
		}
		hs = s + 1;
		colon = he + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			ydoc_error(c->doc, node, c->d, hint, "address '%s' has no port", s);
			return false;
		}
		he = colon;
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			ydoc_error(c->doc, node, c->d, "IPv6 addresses go in brackets: [::1]:8443",
			           "bad address '%s'", s);
			return false;
		}
	}
	if (he == hs) {
		ydoc_error(c->doc, node, c->d, "to listen on every address write 0.0.0.0:PORT",
		           "address '%s' has no host", s);
		return false;
	}
	uint64_t port;
	if (num_parse_u64(span_cstr(colon + 1), 1, 65535, &port) != CUSTOS_OK) {
		ydoc_error(c->doc, node, c->d, hint, "bad port in '%s': %s", s, err_msg());
		return false;
	}
	char *host = cfg_alloc(c->a, (size_t)(he - hs) + 1, 1);
	memcpy(host, hs, (size_t)(he - hs));
	for (const char *p = host; s[0] != '[' && *p; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		          (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_';
		if (!ok) {
			ydoc_error(c->doc, node, c->d, "host names use letters, digits, '.', '-'",
			           "bad character '%c' in host '%s'", *p, host);
			return false;
		}
	}
	unsigned char tmp[16];
	if (s[0] == '[' && inet_pton(AF_INET6, host, tmp) != 1) {
		ydoc_error(c->doc, node, c->d, hint, "'%s' is not an IPv6 address", host);
		return false;
	}
	out->kind = CFG_ADDR_TCP;
	out->host = host;
	out->port = (uint16_t)port;
	out->loopback = host_is_loopback(host);
	return true;
}
