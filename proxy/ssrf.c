/*
 * SSRF defence: which addresses the egress proxy may connect to, and which spellings of a host
 * it accepts at all. custos resolves names itself and connects to exactly the addresses it
 * checked, so DNS rebinding between check and connect is impossible (docs/EGRESS.md).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "ssrf.h"

const char *ssrf_class_name(ssrf_class c)
{
	switch (c) {
	case SSRF_PUBLIC:
		return "public";
	case SSRF_LOOPBACK:
		return "loopback";
	case SSRF_LINK_LOCAL:
		return "link-local";
	case SSRF_METADATA:
		return "metadata";
	case SSRF_PRIVATE:
		return "private";
	case SSRF_SHARED:
		return "shared";
	case SSRF_MULTICAST:
		return "multicast";
	case SSRF_UNSPECIFIED:
		return "unspecified";
	case SSRF_BROADCAST:
		return "broadcast";
	case SSRF_RESERVED:
		return "reserved";
	}
	return "unknown";
}

ssrf_class ssrf_class_v4(const uint8_t a[4])
{
	if (a[0] == 0)
		return SSRF_UNSPECIFIED; /* 0/8 "this network" */
	if (a[0] == 127)
		return SSRF_LOOPBACK;
	if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168))
		return SSRF_PRIVATE;
	if (a[0] == 100 && (a[1] & 0xc0) == 64)
		return SSRF_SHARED;
	if (a[0] == 169 && a[1] == 254)
		return a[2] == 169 && a[3] == 254 ? SSRF_METADATA : SSRF_LINK_LOCAL;
	if (a[0] == 192 && a[1] == 0 && (a[2] == 0 || a[2] == 2))
		return SSRF_RESERVED; /* IETF assignments, TEST-NET-1 */
	if ((a[0] == 198 && a[1] == 51 && a[2] == 100) || (a[0] == 203 && a[1] == 0 && a[2] == 113))
		return SSRF_RESERVED; /* TEST-NET-2/3 */
	if (a[0] == 198 && (a[1] & 0xfe) == 18)
		return SSRF_RESERVED; /* benchmarking */
	if (a[0] == 192 && a[1] == 88 && a[2] == 99)
		return SSRF_RESERVED; /* 6to4 relay anycast */
	if ((a[0] & 0xf0) == 224)
		return SSRF_MULTICAST;
	if (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255)
		return SSRF_BROADCAST;
	if ((a[0] & 0xf0) == 240)
		return SSRF_RESERVED;
	return SSRF_PUBLIC;
}

static bool zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

ssrf_class ssrf_class_v6(const uint8_t a[16])
{
	static const uint8_t md[16] = { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0,    0,
		                        0,    0,    0,    0,    0, 0, 0x02, 0x54 };
	static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };

	if (zero(a, 16))
		return SSRF_UNSPECIFIED;
	if (zero(a, 15) && a[15] == 1)
		return SSRF_LOOPBACK;
	/* ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (SIIT translated): the embedded v4 decides. */
	if (zero(a, 10) && a[10] == 0xff && a[11] == 0xff)
		return ssrf_class_v4(a + 12);
	if (zero(a, 8) && a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0)
		return ssrf_class_v4(a + 12);
	/* ::a.b.c.d (deprecated IPv4-compatible): never a legitimate destination. */
	if (zero(a, 12)) {
		ssrf_class c = ssrf_class_v4(a + 12);
		return c == SSRF_PUBLIC ? SSRF_RESERVED : c;
	}
	if (memcmp(a, nat64, 12) == 0) /* 64:ff9b::/96 well-known NAT64 prefix */
		return ssrf_class_v4(a + 12);
	if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && a[4] == 0 && a[5] == 1)
		return SSRF_PRIVATE;      /* 64:ff9b:1::/48 local-use NAT64 */
	if (a[0] == 0x20 && a[1] == 0x02) /* 2002::/16 6to4 embeds a v4 in bits 16..47 */
		return ssrf_class_v4(a + 2);
	if (a[0] == 0x01 && zero(a + 1, 7))
		return SSRF_RESERVED; /* 100::/64 discard */
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
		return SSRF_RESERVED; /* documentation */
	if (a[0] == 0x20 && a[1] == 0x01 && (a[2] & 0xfe) == 0)
		return SSRF_RESERVED; /* 2001::/23 IETF protocol assignments, Teredo included */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return SSRF_LINK_LOCAL;
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
		return SSRF_PRIVATE; /* deprecated site-local */
	if (memcmp(a, md, 16) == 0)
		return SSRF_METADATA;
	if ((a[0] & 0xfe) == 0xfc)
		return SSRF_PRIVATE; /* unique local */
	if (a[0] == 0xff)
		return SSRF_MULTICAST;
	if ((a[0] & 0xe0) != 0x20)
		return SSRF_RESERVED; /* outside global unicast 2000::/3 */
	return SSRF_PUBLIC;
}

ssrf_class ssrf_class_sa(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		return ssrf_class_v4((const uint8_t *)&s4->sin_addr);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		return ssrf_class_v6(s6->sin6_addr.s6_addr);
	}
	return SSRF_RESERVED;
}

bool ssrf_class_allowed(ssrf_class c, bool allow_private)
{
	switch (c) {
	case SSRF_PUBLIC:
		return true;
	case SSRF_LOOPBACK:
	case SSRF_LINK_LOCAL:
	case SSRF_PRIVATE:
	case SSRF_SHARED:
	case SSRF_RESERVED:
		return allow_private;
	case SSRF_METADATA:
	case SSRF_MULTICAST:
	case SSRF_UNSPECIFIED:
	case SSRF_BROADCAST:
		return false;
	}
	return false;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}
static bool is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Strict dotted quad: four decimal parts 0..255 without leading zeros. */
static bool strict_v4(span s, uint8_t out[4])
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= s.len || s.ptr[i] != '.')
				return false;
			i++;
		}
		size_t start = i;
		unsigned v = 0;
		while (i < s.len && is_digit(s.ptr[i]) && i - start < 4) {
			v = v * 10 + (unsigned)(s.ptr[i] - '0');
			i++;
		}
		size_t n = i - start;
		if (n == 0 || n > 3 || v > 255 || (n > 1 && s.ptr[start] == '0'))
			return false;
		out[part] = (uint8_t)v;
	}
	return i == s.len;
}

/* WHATWG URL rule: a host whose last label is a number (decimal, or 0x hex) is an IPv4
 * address to a browser and to inet_aton; anything but the strict form is refused. */
static bool last_label_numeric(span s)
{
	size_t end = s.len;
	if (end > 0 && s.ptr[end - 1] == '.')
		end--;
	size_t start = end;
	while (start > 0 && s.ptr[start - 1] != '.')
		start--;
	span l = span_of(s.ptr + start, end - start);
	if (l.len == 0)
		return false;
	size_t i = 0;
	if (l.len >= 2 && l.ptr[0] == '0' && (l.ptr[1] == 'x' || l.ptr[1] == 'X')) {
		for (i = 2; i < l.len; i++)
			if (!is_hex(l.ptr[i]))
				return false;
		return true;
	}
	for (i = 0; i < l.len; i++)
		if (!is_digit(l.ptr[i]))
			return false;
	return true;
}

custos_err ssrf_parse_host(span host, ssrf_host *out)
{
	memset(out, 0, sizeof(*out));
	ENSURE(host.len > 0, CUSTOS_ERR_PARSE, "empty host");
	if (host.ptr[0] == '[') {
		ENSURE(host.len > 2 && host.ptr[host.len - 1] == ']', CUSTOS_ERR_PARSE,
		       "unterminated IPv6 literal");
		span in = span_of(host.ptr + 1, host.len - 2);
		ENSURE(memchr(in.ptr, '%', in.len) == NULL, CUSTOS_ERR_DENIED,
		       "IPv6 zone identifiers are refused");
		ENSURE(in.len < INET6_ADDRSTRLEN, CUSTOS_ERR_PARSE, "IPv6 literal too long");
		char tmp[INET6_ADDRSTRLEN];
		memcpy(tmp, in.ptr, in.len);
		tmp[in.len] = '\0';
		ENSURE(inet_pton(AF_INET6, tmp, out->addr) == 1, CUSTOS_ERR_PARSE,
		       "malformed IPv6 literal");
		out->kind = SSRF_HOST_V6;
		/* canonical text (RFC 5952 as inet_ntop writes it) for matching, audit and SNI */
		ENSURE(inet_ntop(AF_INET6, out->addr, out->name, sizeof(out->name)) != NULL,
		       CUSTOS_ERR_PARSE, "malformed IPv6 literal");
		return CUSTOS_OK;
	}
	ENSURE(host.len <= SSRF_MAX_HOST, CUSTOS_ERR_LIMIT, "host longer than %d bytes",
	       SSRF_MAX_HOST);
	if (strict_v4(host, out->addr)) {
		out->kind = SSRF_HOST_V4;
		memcpy(out->name, host.ptr, host.len);
		return CUSTOS_OK;
	}
	if (last_label_numeric(host))
		return err_set(
		        CUSTOS_ERR_DENIED,
		        "non-canonical IPv4 literal '%.*s' (only a.b.c.d in decimal is accepted)",
		        (int)host.len, host.ptr);
	size_t label = 0;
	for (size_t i = 0; i < host.len; i++) {
		char c = host.ptr[i];
		if (c == '.') {
			ENSURE(label > 0, CUSTOS_ERR_PARSE, "empty label in host");
			label = 0;
			out->name[i] = c;
			continue;
		}
		bool ok = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          c == '-' || c == '_';
		ENSURE(ok, CUSTOS_ERR_PARSE, "invalid character in host");
		ENSURE(++label <= 63, CUSTOS_ERR_PARSE, "host label longer than 63 bytes");
		out->name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	/* One trailing dot (absolute name) is dropped: it names the same host. */
	size_t n = host.len;
	if (out->name[n - 1] == '.')
		out->name[--n] = '\0';
	ENSURE(n > 0, CUSTOS_ERR_PARSE, "empty host");
	out->kind = SSRF_HOST_NAME;
	return CUSTOS_OK;
}

custos_err ssrf_split_authority(span auth, uint16_t default_port, span *host, uint16_t *port)
{
	size_t hl = auth.len;
	span ps = { NULL, 0 };

	ENSURE(auth.len > 0, CUSTOS_ERR_PARSE, "empty authority");
	ENSURE(memchr(auth.ptr, '@', auth.len) == NULL, CUSTOS_ERR_DENIED,
	       "userinfo in an authority is refused");
	if (auth.ptr[0] == '[') {
		const char *rb = memchr(auth.ptr, ']', auth.len);
		ENSURE(rb != NULL, CUSTOS_ERR_PARSE, "unterminated IPv6 literal");
		hl = (size_t)(rb - auth.ptr) + 1;
		if (hl < auth.len) {
			ENSURE(auth.ptr[hl] == ':', CUSTOS_ERR_PARSE, "junk after IPv6 literal");
			ps = span_of(auth.ptr + hl + 1, auth.len - hl - 1);
		}
	} else {
		const char *c = memchr(auth.ptr, ':', auth.len);
		if (c) {
			hl = (size_t)(c - auth.ptr);
			ps = span_of(c + 1, auth.len - hl - 1);
		}
	}
	*host = span_of(auth.ptr, hl);
	if (ps.ptr == NULL) {
		*port = default_port;
		ENSURE(default_port != 0, CUSTOS_ERR_PARSE, "authority without a port");
		return CUSTOS_OK;
	}
	ENSURE(ps.len > 0 && ps.len <= 5, CUSTOS_ERR_PARSE, "bad port");
	for (size_t i = 0; i < ps.len; i++)
		ENSURE(is_digit(ps.ptr[i]), CUSTOS_ERR_PARSE, "bad port");
	uint64_t v;
	ENSURE(num_parse_u64(ps, 1, 65535, &v) == CUSTOS_OK, CUSTOS_ERR_PARSE, "bad port");
	*port = (uint16_t)v;
	return CUSTOS_OK;
}

static void fmt_addr(const struct sockaddr *sa, char *out, size_t n)
{
	const void *p =
	        sa->sa_family == AF_INET
	                ? (const void *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr
	                : (const void *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (inet_ntop(sa->sa_family, p, out, (socklen_t)n) == NULL)
		snprintf(out, n, "?");
}

static custos_err check_add(ssrf_target *t, const struct sockaddr *sa, socklen_t len, uint16_t port,
                            bool allow_private)
{
	ssrf_class c = ssrf_class_sa(sa);
	if (!ssrf_class_allowed(c, allow_private)) {
		t->denied_class = c;
		fmt_addr(sa, t->denied_addr, sizeof(t->denied_addr));
		return err_set(CUSTOS_ERR_DENIED, "address %s is %s", t->denied_addr,
		               ssrf_class_name(c));
	}
	if (t->n >= SSRF_MAX_ADDRS)
		return CUSTOS_OK; /* checked, not kept */
	memcpy(&t->addrs[t->n], sa, len);
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)(void *)&t->addrs[t->n])->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)(void *)&t->addrs[t->n])->sin6_port = htons(port);
	t->lens[t->n++] = len;
	return CUSTOS_OK;
}

typedef struct via_arg {
	ssrf_target *t;
	uint16_t port;
	bool allow_private;
} via_arg;

static custos_err via_each(void *arg, const struct sockaddr *sa, socklen_t len)
{
	via_arg *a = arg;
	if (len > sizeof(struct sockaddr_storage) ||
	    (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return err_set(CUSTOS_ERR_INVAL, "resolver: not an IP address");
	return check_add(a->t, sa, len, a->port, a->allow_private);
}

custos_err ssrf_resolve(const ssrf_host *h, uint16_t port, bool allow_private, ssrf_target *out)
{
	return ssrf_resolve_via(h, port, allow_private, NULL, NULL, out);
}

custos_err ssrf_resolve_via(const ssrf_host *h, uint16_t port, bool allow_private,
                            ssrf_lookup_fn lookup, void *ctx, ssrf_target *out)
{
	memset(out, 0, sizeof(*out));
	if (h->kind == SSRF_HOST_V4) {
		struct sockaddr_in s = { .sin_family = AF_INET };
		memcpy(&s.sin_addr, h->addr, 4);
		return check_add(out, (struct sockaddr *)&s, sizeof(s), port, allow_private);
	}
	if (h->kind == SSRF_HOST_V6) {
		struct sockaddr_in6 s = { .sin6_family = AF_INET6 };
		memcpy(&s.sin6_addr, h->addr, 16);
		return check_add(out, (struct sockaddr *)&s, sizeof(s), port, allow_private);
	}
	if (lookup) {
		via_arg a = { out, port, allow_private };
		custos_err le = lookup(ctx, h->name, via_each, &a);
		if (le == CUSTOS_OK && out->n == 0)
			le = err_set(CUSTOS_ERR_NOTFOUND, "resolving %s: no address", h->name);
		if (le != CUSTOS_OK)
			out->n = 0;
		return le;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(h->name, NULL, &hints, &res);
	if (rc != 0)
		return err_set(CUSTOS_ERR_NOTFOUND, "resolving %s: %s", h->name, gai_strerror(rc));
	custos_err e = CUSTOS_OK;
	for (struct addrinfo *ai = res; ai && e == CUSTOS_OK; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		e = check_add(out, ai->ai_addr, ai->ai_addrlen, port, allow_private);
	}
	freeaddrinfo(res);
	if (e == CUSTOS_OK && out->n == 0)
		e = err_set(CUSTOS_ERR_NOTFOUND, "resolving %s: no address", h->name);
	if (e != CUSTOS_OK)
		out->n = 0;
	return e;
}
