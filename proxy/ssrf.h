/*
 * SSRF defence for the egress proxy (proxy-internal): strict host parsing (non-canonical IPv4
 * literals refused), address-class checks over every resolved address, and resolution that
 * yields the exact addresses to connect to (no second lookup). Policy in docs/EGRESS.md.
 */
#ifndef CUSTOS_PROXY_SSRF_H
#define CUSTOS_PROXY_SSRF_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "custos/core.h"

#define SSRF_MAX_HOST  253 /* DNS name length limit (RFC 1035) */
#define SSRF_MAX_ADDRS 16  /* resolved addresses kept (all are checked) */

/* Address classes. Everything but SSRF_PUBLIC is denied unless a data source allows private
 * addresses; SSRF_METADATA, SSRF_UNSPECIFIED, SSRF_MULTICAST and SSRF_BROADCAST are denied
 * even then (no data source lives there). */
typedef enum ssrf_class {
	SSRF_PUBLIC = 0,
	SSRF_LOOPBACK,
	SSRF_LINK_LOCAL,
	SSRF_METADATA, /* 169.254.169.254, fd00:ec2::254 (cloud instance metadata) */
	SSRF_PRIVATE,  /* 10/8, 172.16/12, 192.168/16, fc00::/7 */
	SSRF_SHARED,   /* 100.64/10 carrier-grade NAT */
	SSRF_MULTICAST,
	SSRF_UNSPECIFIED,
	SSRF_BROADCAST,
	SSRF_RESERVED, /* documentation, benchmarking, 240/4, IETF, Teredo, discard, ... */
} ssrf_class;

/* Static name of a class ("loopback"). */
const char *ssrf_class_name(ssrf_class c);
/* Class of an IPv4 address in network byte order (4 bytes). */
ssrf_class ssrf_class_v4(const uint8_t a[4]);
/* Class of an IPv6 address (16 bytes). IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96)
 * and 6to4 (2002::/16) forms take the class of the IPv4 address they embed when that is not
 * public. */
ssrf_class ssrf_class_v6(const uint8_t a[16]);
/* Class of a sockaddr (AF_INET/AF_INET6); other families are SSRF_RESERVED. */
ssrf_class ssrf_class_sa(const struct sockaddr *sa);
/* True when c may be reached: public always; private kinds only with allow_private. */
bool ssrf_class_allowed(ssrf_class c, bool allow_private);

/* A host as written in a URL or CONNECT authority. */
typedef enum ssrf_host_kind { SSRF_HOST_NAME = 0, SSRF_HOST_V4, SSRF_HOST_V6 } ssrf_host_kind;
typedef struct ssrf_host {
	ssrf_host_kind kind;
	char name[SSRF_MAX_HOST + 1]; /* lower-case name, or the literal without brackets */
	uint8_t addr[16];             /* the literal's address (4 bytes for V4) */
} ssrf_host;

/* Parses host (no port; IPv6 in brackets). Accepts DNS names (letters, digits, '-', '_', '.';
 * labels 1..63 bytes, lower-cased), strict dotted-quad IPv4 (four decimal parts, no leading
 * zeros) and bracketed IPv6 (no zone id). Refuses with CUSTOS_ERR_DENIED, message saying why,
 * every other IPv4 spelling a resolver might accept (2130706433, 0177.0.0.1, 0x7f.1, 127.1)
 * and any name whose last label is numeric. CUSTOS_ERR_PARSE for other malformed hosts. */
custos_err ssrf_parse_host(span host, ssrf_host *out) CUSTOS_WUR;

/* Splits "host:port" / "[v6]:port" / "host" (default_port when none) into host and port.
 * Port must be 1..65535 in plain decimal. */
custos_err ssrf_split_authority(span auth, uint16_t default_port, span *host,
                                uint16_t *port) CUSTOS_WUR;

typedef struct ssrf_target {
	struct sockaddr_storage addrs[SSRF_MAX_ADDRS];
	socklen_t lens[SSRF_MAX_ADDRS];
	size_t n;
	ssrf_class denied_class; /* why, when CUSTOS_ERR_DENIED */
	char denied_addr[64];    /* the address that was refused */
} ssrf_target;

/* Resolves h (names through getaddrinfo; literals as they are) and checks every address.
 * CUSTOS_OK with the addresses in out; CUSTOS_ERR_DENIED when any address is of a denied class
 * (out->denied_* say which: one bad address poisons the name, against DNS rebinding mixes);
 * CUSTOS_ERR_NOTFOUND when the name does not resolve. */
custos_err ssrf_resolve(const ssrf_host *h, uint16_t port, bool allow_private,
                        ssrf_target *out) CUSTOS_WUR;

/* A resolver for names other than getaddrinfo (the egress proxy's own, egress_dns.c): calls
 * each(arg, address) for every address name has, and stops at the first error each returns
 * (handing it back). CUSTOS_ERR_NOTFOUND when the name does not exist or has no address. */
typedef custos_err (*ssrf_each_fn)(void *arg, const struct sockaddr *sa, socklen_t len);
typedef custos_err (*ssrf_lookup_fn)(void *ctx, const char *name, ssrf_each_fn each, void *arg);
/* As ssrf_resolve, names going through lookup(ctx, ...) (NULL lookup: getaddrinfo). */
custos_err ssrf_resolve_via(const ssrf_host *h, uint16_t port, bool allow_private,
                            ssrf_lookup_fn lookup, void *ctx, ssrf_target *out) CUSTOS_WUR;

#endif
