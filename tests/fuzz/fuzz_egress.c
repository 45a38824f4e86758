/*
 * libFuzzer target for the egress proxy's parsers of hostile input: the first byte picks the
 * TLS ClientHello parser (SNI extraction from the bytes a sandbox sends after CONNECT) or the
 * host/authority parser (URLs and CONNECT targets a model writes). Properties beyond memory
 * safety: an SNI found is NUL-free and shorter than its buffer; a complete answer stays the
 * same with more bytes appended; an accepted host is lower-case and canonical (parsing its
 * printed form again gives the same kind and address).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/egress_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static void hello(const uint8_t *d, size_t n)
{
	char sni[SSRF_MAX_HOST + 1], sni2[SSRF_MAX_HOST + 1];
	bool has = false, has2 = false;
	int r = egress_hello_sni(d, n, sni, sizeof(sni), &has);
	check(r >= -1 && r <= 1);
	if (r == 1 && has)
		check(strlen(sni) < sizeof(sni) && strlen(sni) > 0);
	if (r == 1) { /* trailing bytes (application data) do not change a complete answer */
		uint8_t *more = malloc(n + 8);
		check(more != NULL);
		memcpy(more, d, n);
		memset(more + n, 0x17, 8);
		int r2 = egress_hello_sni(more, n + 8, sni2, sizeof(sni2), &has2);
		check(r2 == 1 && has2 == has && (!has || strcmp(sni, sni2) == 0));
		free(more);
	}
}

static void host(const uint8_t *d, size_t n)
{
	span h;
	uint16_t port;
	ssrf_host a, b;
	if (ssrf_split_authority(span_of((const char *)d, n), 80, &h, &port) != CUSTOS_OK)
		return;
	check(port >= 1);
	if (ssrf_parse_host(h, &a) != CUSTOS_OK)
		return;
	check(strlen(a.name) > 0 && strlen(a.name) <= SSRF_MAX_HOST);
	for (const char *p = a.name; *p; p++)
		check(!(*p >= 'A' && *p <= 'Z'));
	char again[SSRF_MAX_HOST + 3];
	if (a.kind == SSRF_HOST_V6)
		snprintf(again, sizeof(again), "[%s]", a.name);
	else
		snprintf(again, sizeof(again), "%s", a.name);
	check(ssrf_parse_host(span_cstr(again), &b) == CUSTOS_OK);
	check(a.kind == b.kind);
	if (a.kind != SSRF_HOST_NAME)
		check(memcmp(a.addr, b.addr, a.kind == SSRF_HOST_V4 ? 4 : 16) == 0);
	else
		check(strcmp(a.name, b.name) == 0);
	(void)ssrf_class_v6(b.addr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		host(data + 1, size - 1);
	else
		hello(data + 1, size - 1);
	err_clear();
	return 0;
}
