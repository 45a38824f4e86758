/*
 * Address ranges: parsing (strict: inet_pton's forms, a decimal prefix length without leading
 * zeros, no host bits set) and matching a socket address against one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "custos/cidr.h"

#define CIDR_TEXT_MAX 64 /* longer than any address with a prefix */

bool cidr_parse(const char *s, custos_cidr *out, const char **why)
{
	char host[CIDR_TEXT_MAX];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);

	memset(out, 0, sizeof(*out));
	*why = "not an address range (write 10.0.0.0/8, 2001:db8::/32 or one address)";
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, out->addr) == 1)
		out->family = 4;
	else if (inet_pton(AF_INET6, host, out->addr) == 1)
		out->family = 6;
	else
		return false;
	unsigned max = out->family == 4 ? 32 : 128, bits = max;
	if (slash) {
		const char *p = slash + 1;
		size_t n = strlen(p);
		if (n == 0 || n > 3 || (n > 1 && p[0] == '0')) {
			*why = "the prefix length must be a decimal number without leading zeros";
			return false;
		}
		bits = 0;
		for (size_t i = 0; i < n; i++) {
			if (p[i] < '0' || p[i] > '9') {
				*why = "the prefix length must be a decimal number without leading "
				       "zeros";
				return false;
			}
			bits = bits * 10 + (unsigned)(p[i] - '0');
		}
		if (bits > max) {
			*why = out->family == 4 ? "an IPv4 prefix length is at most 32"
			                        : "an IPv6 prefix length is at most 128";
			return false;
		}
	}
	out->bits = (uint8_t)bits;
	for (unsigned i = bits; i < max; i++) {
		if (out->addr[i / 8] & (0x80u >> (i % 8))) {
			*why = "the address has bits set past the prefix length (write the network "
			       "address)";
			return false;
		}
	}
	*why = NULL;
	return true;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

bool cidr_match(const custos_cidr *r, const struct sockaddr *sa)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		return r->family == 4 &&
		       prefix_eq((const uint8_t *)&in->sin_addr, r->addr, r->bits);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		const uint8_t *a = in6->sin6_addr.s6_addr;
		if (r->family == 6)
			return prefix_eq(a, r->addr, r->bits);
		return memcmp(a, mapped, 12) == 0 && prefix_eq(a + 12, r->addr, r->bits);
	}
	return false;
}
