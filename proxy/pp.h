/*
 * PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a load balancer
 * sends before the client's bytes to say whom it is relaying. Parsing only: no I/O, for
 * hostile input, usable on a prefix of the stream as it arrives.
 */
#ifndef CUSTOS_PROXY_PP_H
#define CUSTOS_PROXY_PP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PP_V1_MAX   107 /* version 1: the longest line, "PROXY ... \r\n" included */
#define PP_V2_FIXED 16  /* version 2: signature, version/command, family, length */
#define PP_V2_MAX_LEN                                                                              \
	2048 /* version 2: the most address and TLV bytes accepted (the spec
                              allows 65535; load balancers send a few dozen to a few hundred) */
#define PP_MAX           (PP_V2_FIXED + PP_V2_MAX_LEN) /* the longest header accepted */
#define PP_AUTHORITY_MAX 255 /* v2 PP2_TYPE_AUTHORITY: a host name, at most 255 bytes */
#define PP_UNIQUE_ID_MAX 128 /* v2 PP2_TYPE_UNIQUE_ID: at most 128 opaque bytes (spec 2.2.5) */

typedef struct pp_hdr {
	uint8_t version; /* 1 or 2 */
	/* true: no client address to take (v1 UNKNOWN, v2 LOCAL, v2 PROXY with family
	 * UNSPEC): the connection's own endpoints stay */
	bool local;
	struct sockaddr_storage src, dst; /* when !local: AF_INET or AF_INET6, with port */
	/* v2 PROXY with an address, from its TLVs: views into the parsed bytes (valid while they
	 * are), length 0 when absent. authority: the host name the client asked the balancer for
	 * (SNI), checked (1..255 bytes of letters, digits, '-' and '.', no empty label); unique_id:
	 * the balancer's opaque connection id, 1..128 bytes. */
	const uint8_t *authority, *unique_id;
	size_t authority_len, unique_id_len;
	const char *err; /* why the header was refused (static text) */
} pp_hdr;

/* Parses the header at the start of p[0..n). Returns its length (>0: the bytes after it belong
 * to TLS or HTTP), 0 when p is a valid prefix of a header that is not complete yet (read more:
 * at most PP_MAX bytes are ever needed), or -1 when p cannot start a valid header (h->err
 * says why). */
ssize_t pp_parse(const uint8_t *p, size_t n, pp_hdr *h);

/* The CRC32c (Castagnoli, RFC 3720 and RFC 4960 appendix B: the checksum of a v2 header's
 * PP2_TYPE_CRC32C TLV) of p[0..n), continuing crc, which is 0 to start: pp_crc32c(pp_crc32c(0,
 * a, na), b, nb) is the CRC of a then b. */
uint32_t pp_crc32c(uint32_t crc, const uint8_t *p, size_t n);

#endif
