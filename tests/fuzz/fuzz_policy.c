/* libFuzzer target: the policy compiler (YAML -> validated, indexed policy), then a few
 * evaluations and an explain over whatever compiled. Includes are skipped so the target
 * never reads other files. */
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "custos/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 256 * 1024 || memmem(data, size, "include", 7) != NULL)
		return 0;
	diag_list d;
	diag_init(&d);
	policy *p = NULL;
	if (policy_parse("fuzz.yaml", (const char *)data, size, &p, &d) == CUSTOS_OK) {
		policy_request r;
		memset(&r, 0, sizeof(r));
		r.isolation = -1;
		r.time_ns = 1800000000ull * 1000000000ull;
		r.method = SPAN_LIT("POST");
		r.path = SPAN_LIT("/v1/chat/completions");
		policy_decision dec;
		/* a client address (IPv4-mapped IPv6, so both families' ranges are compared) */
		struct sockaddr_in6 cl;
		memset(&cl, 0, sizeof(cl));
		cl.sin6_family = AF_INET6;
		static const uint8_t mapped[16] = { [10] = 0xff, [11] = 0xff, 10, 1, 2, 3 };
		memcpy(&cl.sin6_addr, mapped, sizeof(mapped));
		for (int dir = 0; dir < 2; dir++) {
			r.direction = (policy_direction)dir;
			policy_evaluate(p, &r, &dec);
			policy_identity id;
			memset(&id, 0, sizeof(id));
			span uri = SPAN_LIT("spiffe://corp/team/analytics/x");
			id.san_uris = &uri;
			id.n_san_uris = 1;
			r.principal = policy_match_principal(p, &id);
			r.data = policy_find_data_url(p, SPAN_LIT("https://wiki.corp.example/a/b"));
			policy_evaluate(p, &r, &dec);
			/* the input's head as a path and as identity facts: the path normaliser,
			 * path globs and identity globs see hostile bytes too */
			span raw = span_of((const char *)data, size < 512 ? size : 512);
			id.jwt_sub = raw;
			id.san_dns = &raw;
			id.n_san_dns = 1;
			(void)policy_match_principal(p, &id);
			r.path = raw;
			policy_evaluate(p, &r, &dec);
			(void)policy_find_data_source(p, SPAN_LIT("https"),
			                              SPAN_LIT("wiki.corp.example"), 0, raw);
			r.path = SPAN_LIT("/v1/chat/completions");
			r.client = (const struct sockaddr *)&cl;
			policy_evaluate(p, &r, &dec);
		}
		buf out;
		buf_init(&out, 1 << 20);
		if (policy_explain(p, &r, &out) != CUSTOS_OK) {
			/* a full buffer is fine */
		}
		buf_free(&out);
		policy_unref(p);
	}
	diag_free(&d);
	return 0;
}
