/*
 * PROXY protocol header parser (pp.h). Strict: version 1 exactly as the spec writes it (single
 * spaces, TCP4/TCP6/UNKNOWN, addresses of the family named, ports 0..65535 in decimal without
 * leading zeros, CRLF within 107 bytes); version 2 with its signature, version 2, command
 * LOCAL or PROXY, TCP over IPv4/IPv6 or UNSPEC, a length bound and well-formed TLVs (skipped).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "pp.h"

static const uint8_t v1_magic[6] = { 'P', 'R', 'O', 'X', 'Y', ' ' };
static const uint8_t v2_magic[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                              0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static ssize_t bad(pp_hdr *h, const char *why)
{
	h->err = why;
	return -1;
}

/* A decimal port 0..65535 without leading zeros. */
static bool port_parse(const uint8_t *s, size_t n, uint16_t *out)
{
	unsigned v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

/* An address of family af (inet_pton's strict forms: no leading zeros in IPv4). */
static bool addr_parse(int af, const uint8_t *s, size_t n, struct sockaddr_storage *ss,
                       uint16_t port)
{
	char tmp[64];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		return inet_pton(AF_INET, tmp, &in->sin_addr) == 1;
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(port);
	return inet_pton(AF_INET6, tmp, &in6->sin6_addr) == 1;
}

/* Splits line[0..n) at single spaces into exactly want fields. */
static bool fields(const uint8_t *line, size_t n, const uint8_t *f[], size_t fl[], size_t want)
{
	size_t k = 0, start = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && line[i] != ' ')
			continue;
		if (i == start || k == want)
			return false; /* an empty field (two spaces, a trailing space), or too many */
		f[k] = line + start;
		fl[k] = i - start;
		k++;
		start = i + 1;
	}
	return k == want;
}

static ssize_t parse_v1(const uint8_t *p, size_t n, pp_hdr *h)
{
	/* The CR can be at most at offset 105: CRLF then ends the 107th byte. */
	size_t lim = n < PP_V1_MAX - 1 ? n : PP_V1_MAX - 1, end = 0;

	for (size_t i = sizeof(v1_magic); i < lim; i++) {
		if (p[i] == '\r') {
			if (i + 1 >= n)
				return 0; /* the LF may follow */
			if (p[i + 1] != '\n')
				return bad(h, "PROXY v1: CR not followed by LF");
			end = i;
			break;
		}
		if (p[i] == '\n' || p[i] < 0x20 || p[i] > 0x7e)
			return bad(h, "PROXY v1: a byte that is not printable ASCII in the line");
	}
	if (end == 0) {
		if (n >= PP_V1_MAX - 1)
			return bad(h, "PROXY v1: no CRLF within 107 bytes");
		return 0;
	}
	const uint8_t *line = p + sizeof(v1_magic);
	size_t len = end - sizeof(v1_magic);
	h->version = 1;
	if (len >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (len == 7 || line[7] == ' ')) {
		h->local = true; /* the rest of the line is to be ignored (spec 2.1) */
		return (ssize_t)(end + 2);
	}
	const uint8_t *f[5];
	size_t fl[5];
	if (!fields(line, len, f, fl, 5))
		return bad(h, "PROXY v1: not 'TCP4|TCP6 SRC DST SPORT DPORT' with single spaces");
	int af;
	if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
		af = AF_INET;
	else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
		af = AF_INET6;
	else
		return bad(h, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
	uint16_t sport, dport;
	if (!port_parse(f[3], fl[3], &sport) || !port_parse(f[4], fl[4], &dport))
		return bad(h, "PROXY v1: a port is not a decimal 0..65535 without leading zeros");
	if (!addr_parse(af, f[1], fl[1], &h->src, sport) ||
	    !addr_parse(af, f[2], fl[2], &h->dst, dport))
		return bad(h, af == AF_INET ? "PROXY v1: an address is not an IPv4 address"
		                            : "PROXY v1: an address is not an IPv6 address");
	return (ssize_t)(end + 2);
}

static ssize_t parse_v2(const uint8_t *p, size_t n, pp_hdr *h)
{
	if (n < PP_V2_FIXED)
		return 0;
	uint8_t ver = p[12] >> 4, cmd = p[12] & 0x0f, fam = p[13] >> 4, proto = p[13] & 0x0f;
	size_t len = ((size_t)p[14] << 8) | p[15];
	if (ver != 2)
		return bad(h, "PROXY v2: version is not 2");
	if (cmd > 1)
		return bad(h, "PROXY v2: command is neither LOCAL nor PROXY");
	if (len > PP_V2_MAX_LEN)
		return bad(h, "PROXY v2: header longer than custos accepts (2048 bytes)");
	if (n < PP_V2_FIXED + len)
		return 0;
	const uint8_t *b = p + PP_V2_FIXED;
	size_t alen = 0;
	h->version = 2;
	if (cmd == 0) {
		h->local = true; /* the balancer's own connection (health check): block skipped */
		return (ssize_t)(PP_V2_FIXED + len);
	}
	if (fam == 0 && proto == 0) {
		h->local = true; /* spec 2.2: UNSPEC, keep the real endpoints, skip the block */
		return (ssize_t)(PP_V2_FIXED + len);
	}
	if (proto != 1)
		return bad(h, "PROXY v2: transport is not STREAM (TCP)");
	memset(&h->src, 0, sizeof(h->src));
	memset(&h->dst, 0, sizeof(h->dst));
	if (fam == 1) {
		alen = 12;
		if (len < alen)
			return bad(h, "PROXY v2: length too short for IPv4 addresses");
		struct sockaddr_in *s = (struct sockaddr_in *)&h->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&h->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, b, 4);
		memcpy(&d->sin_addr, b + 4, 4);
		memcpy(&s->sin_port, b + 8, 2);
		memcpy(&d->sin_port, b + 10, 2);
	} else if (fam == 2) {
		alen = 36;
		if (len < alen)
			return bad(h, "PROXY v2: length too short for IPv6 addresses");
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&h->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, b, 16);
		memcpy(&d->sin6_addr, b + 16, 16);
		memcpy(&s->sin6_port, b + 32, 2);
		memcpy(&d->sin6_port, b + 34, 2);
	} else {
		return bad(h, "PROXY v2: address family is not IPv4 or IPv6");
	}
	/* TLVs (type, 16-bit length, value) fill the rest exactly; their content is not used. */
	for (size_t i = alen; i < len;) {
		if (len - i < 3)
			return bad(h, "PROXY v2: truncated TLV");
		size_t tl = ((size_t)b[i + 1] << 8) | b[i + 2];
		if (tl > len - i - 3)
			return bad(h, "PROXY v2: TLV longer than the header");
		i += 3 + tl;
	}
	return (ssize_t)(PP_V2_FIXED + len);
}

ssize_t pp_parse(const uint8_t *p, size_t n, pp_hdr *h)
{
	memset(h, 0, sizeof(*h));
	if (n == 0)
		return 0;
	if (p[0] == v1_magic[0]) {
		size_t k = n < sizeof(v1_magic) ? n : sizeof(v1_magic);
		if (memcmp(p, v1_magic, k) != 0)
			return bad(h, "no PROXY protocol header");
		return k < sizeof(v1_magic) ? 0 : parse_v1(p, n, h);
	}
	if (p[0] == v2_magic[0]) {
		size_t k = n < sizeof(v2_magic) ? n : sizeof(v2_magic);
		if (memcmp(p, v2_magic, k) != 0)
			return bad(h, "no PROXY protocol header");
		return k < sizeof(v2_magic) ? 0 : parse_v2(p, n, h);
	}
	return bad(h, "no PROXY protocol header");
}
