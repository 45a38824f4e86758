/*
 * Address ranges ("10.0.0.0/8", "2001:db8::/32", a bare address for one host): parsed once
 * (config), matched against a peer's socket address (the proxy's PROXY protocol trust list).
 */
#ifndef CUSTOS_CIDR_H
#define CUSTOS_CIDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct custos_cidr {
	uint8_t family; /* 4 or 6 */
	uint8_t bits;   /* prefix length: 0..32 or 0..128 */
	uint8_t addr[16];
} custos_cidr;

/* Parses "ADDR/BITS" or a bare ADDR (all bits). False, with *why set to a static text, for
 * anything else, including a prefix with host bits set ("10.0.0.1/8": write 10.0.0.0/8). */
bool cidr_parse(const char *s, custos_cidr *out, const char **why);
/* True when sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as IPv4) is in r. */
bool cidr_match(const custos_cidr *r, const struct sockaddr *sa);

#endif
