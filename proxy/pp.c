/*
 * PROXY protocol header parser (pp.h). Strict: version 1 exactly as the spec writes it (single
 * spaces, TCP4/TCP6/UNKNOWN, addresses of the family named, ports 0..65535 in decimal without
 * leading zeros, CRLF within 107 bytes); version 2 with its signature, version 2, command
 * LOCAL or PROXY, TCP over IPv4/IPv6 or UNSPEC, a length bound and well-formed TLVs: a
 * CRC32C TLV is verified, an AUTHORITY TLV must be a host name and a UNIQUE_ID TLV at most 128
 * bytes (both handed back as views, each at most once), the nested sub-TLVs of an SSL TLV are
 * checked for framing, and the content of every other TLV is skipped unread.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "pp.h"

static const uint8_t v1_magic[6] = { 'P', 'R', 'O', 'X', 'Y', ' ' };
static const uint8_t v2_magic[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                              0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* v2 TLV types (spec 2.2) that the parser looks at; every other one is skipped. */
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C    0x03
#define PP2_TYPE_UNIQUE_ID 0x05
#define PP2_TYPE_SSL       0x20
#define PP2_CRC32C_LEN     4
#define PP2_SSL_HEAD       5 /* the SSL TLV's value: client (1 byte), verify (4), then sub-TLVs */

/* CRC32c, reflected polynomial 0x82F63B78: crc32c_table[i] is the CRC of the byte i. */
static const uint32_t crc32c_table[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c, 0x26a1e7e8,
	0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b, 0x4d43cfd0, 0xbf284cd3,
	0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c, 0xf165b798, 0x030e349b, 0xd7c45070,
	0x25afd373, 0x36ff2087, 0xc494a384, 0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54,
	0x5d1d08bf, 0xaf768bbc, 0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29,
	0x33ed7d2a, 0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
	0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa, 0x30e349b1,
	0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad, 0x1642ae59, 0xe4292d5a,
	0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a, 0x7da08661, 0x8fcb0562, 0x9c9bf696,
	0x6ef07595, 0x417b1dbc, 0xb3109ebf, 0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0,
	0x67dafa54, 0x95b17957, 0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c,
	0xfe53516f, 0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f, 0x3ac7f2eb,
	0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7, 0x61c69362, 0x93ad1061,
	0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e, 0x4767748a, 0xb50cf789, 0xeb1fcbad,
	0x197448ae, 0x0a24bb5a, 0xf84f3859, 0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46,
	0x7198540d, 0x83f3d70e, 0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5,
	0xa55230e6, 0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
	0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c, 0x456cac67,
	0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4, 0xe9141340, 0x1b7f9043,
	0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c, 0x92a8fc17, 0x60c37f14, 0x73938ce0,
	0x81f80fe3, 0x55326b08, 0xa759e80b, 0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db,
	0xf94ad42f, 0x0b21572c, 0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6,
	0x502036a5, 0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975, 0x0e330a81,
	0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d, 0x758fe5d6, 0x87e466d5,
	0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905, 0xd9f75af1, 0x2b9cd9f2, 0xff56bd19,
	0x0d3d3e1a, 0x1e6dcdee, 0xec064eed, 0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530,
	0x0417b1db, 0xf67c32d8, 0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc,
	0x5a048dff, 0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
	0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540, 0x590ab964,
	0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78, 0x7fab5e8c, 0x8dc0dd8f,
	0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee, 0x24aa3f05, 0xd6c1bc06, 0xc5914ff2,
	0x37faccf1, 0x69e9f0d5, 0x9b8273d6, 0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9,
	0x4f48173d, 0xbd23943e, 0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a,
	0xc69f7b69, 0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

uint32_t pp_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
	uint32_t c = ~crc;

	for (size_t i = 0; i < n; i++)
		c = (c >> 8) ^ crc32c_table[(c ^ p[i]) & 0xff];
	return ~c;
}

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

/* The SSL TLV's value v[0..n): client and verify, then sub-TLVs filling the rest exactly (one
 * level of nesting, spec 2.2.6). Returns NULL when well-formed, else why not. */
static const char *ssl_tlv_check(const uint8_t *v, size_t n)
{
	if (n < PP2_SSL_HEAD)
		return "PROXY v2: SSL TLV shorter than its client and verify fields";
	for (size_t i = PP2_SSL_HEAD; i < n;) {
		if (n - i < 3)
			return "PROXY v2: truncated sub-TLV in the SSL TLV";
		size_t sl = ((size_t)v[i + 1] << 8) | v[i + 2];
		if (sl > n - i - 3)
			return "PROXY v2: sub-TLV longer than the SSL TLV";
		i += 3 + sl;
	}
	return NULL;
}

/* PP2_TYPE_AUTHORITY's value v[0..n): the host name the client asked for (SNI: RFC 6066 wants
 * it in ASCII without a trailing dot). Only letters, digits, '-' and '.', in labels of 1 to 63
 * bytes: no control byte, space, ':' or non-ASCII byte reaches an audit event or a log line. */
static bool authority_ok(const uint8_t *v, size_t n)
{
	size_t label = 0;

	if (n == 0 || n > PP_AUTHORITY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = v[i];
		if (c == '.') {
			if (label == 0)
				return false; /* a leading or doubled dot */
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0; /* no trailing dot */
}

/* Spec 2.2.3: the CRC32c of the whole header hdr[0..n) with the 4 bytes of the checksum at
 * hdr + at taken as zeros equals the checksum (big-endian). */
static bool crc32c_ok(const uint8_t *hdr, size_t n, size_t at)
{
	static const uint8_t zeros[PP2_CRC32C_LEN];
	uint32_t want = ((uint32_t)hdr[at] << 24) | ((uint32_t)hdr[at + 1] << 16) |
	                ((uint32_t)hdr[at + 2] << 8) | hdr[at + 3];
	uint32_t c = pp_crc32c(0, hdr, at);

	c = pp_crc32c(c, zeros, sizeof(zeros));
	c = pp_crc32c(c, hdr + at + PP2_CRC32C_LEN, n - at - PP2_CRC32C_LEN);
	return c == want;
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
	/* TLVs (type, 16-bit length, value) fill the rest exactly. A CRC32C, an AUTHORITY, a
	 * UNIQUE_ID and the framing of an SSL TLV's sub-TLVs are looked at; the spec allows each
	 * of the first three once. */
	size_t crc_at = 0; /* offset in p of the CRC32C value; 0: none */
	bool seen_authority = false, seen_unique_id = false;
	const uint8_t *authority = NULL, *unique_id = NULL;
	size_t authority_len = 0, unique_id_len = 0;
	for (size_t i = alen; i < len;) {
		if (len - i < 3)
			return bad(h, "PROXY v2: truncated TLV");
		size_t tl = ((size_t)b[i + 1] << 8) | b[i + 2];
		if (tl > len - i - 3)
			return bad(h, "PROXY v2: TLV longer than the header");
		if (b[i] == PP2_TYPE_CRC32C) {
			if (tl != PP2_CRC32C_LEN)
				return bad(h, "PROXY v2: CRC32C TLV is not 4 bytes long");
			if (crc_at != 0)
				return bad(h, "PROXY v2: more than one CRC32C TLV");
			crc_at = PP_V2_FIXED + i + 3;
		} else if (b[i] == PP2_TYPE_AUTHORITY) {
			if (seen_authority)
				return bad(h, "PROXY v2: more than one AUTHORITY TLV");
			if (!authority_ok(b + i + 3, tl))
				return bad(h,
				           "PROXY v2: AUTHORITY TLV is not a host name of 1 to 255 "
				           "bytes");
			seen_authority = true;
			authority = b + i + 3;
			authority_len = tl;
		} else if (b[i] == PP2_TYPE_UNIQUE_ID) {
			if (seen_unique_id)
				return bad(h, "PROXY v2: more than one UNIQUE_ID TLV");
			if (tl > PP_UNIQUE_ID_MAX)
				return bad(h, "PROXY v2: UNIQUE_ID TLV longer than 128 bytes");
			seen_unique_id = true;
			unique_id = tl ? b + i + 3 : NULL; /* an empty one: none to record */
			unique_id_len = tl;
		} else if (b[i] == PP2_TYPE_SSL) {
			const char *why = ssl_tlv_check(b + i + 3, tl);
			if (why != NULL)
				return bad(h, why);
		}
		i += 3 + tl;
	}
	if (crc_at != 0 && !crc32c_ok(p, PP_V2_FIXED + len, crc_at))
		return bad(h, "PROXY v2: CRC32C mismatch");
	/* Handed back only with an accepted header. */
	h->authority = authority;
	h->authority_len = authority_len;
	h->unique_id = unique_id;
	h->unique_id_len = unique_id_len;
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
