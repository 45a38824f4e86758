/*
 * libFuzzer target for the egress proxy's parsers of hostile input: the first byte picks the
 * TLS ClientHello parser (SNI extraction from the bytes a sandbox sends after CONNECT) or the
 * host/authority parser (URLs and CONNECT targets a model writes). Properties beyond memory
 * safety: an SNI found is NUL-free and shorter than its buffer; a complete answer stays the
 * same with more bytes appended; an accepted host is lower-case and canonical (parsing its
 * printed form again gives the same kind and address). Two more modes run the inspection of
 * bodies a source answers or a model uploads, every built-in detector redacting: a JSON
 * document (one with nothing redacted comes out as it came, and an inspected one is valid JSON
 * that inspects again without error) and a form body (the result is valid percent-encoding
 * with the same '&' and '=' separators, again after a second pass). A fifth runs the strict
 * multipart parser (every multipart type, parts nested in parts; and the form field reader
 * the ingress proxy routes uploads by): the bytes up to the first LF are a Content-Type value
 * (the boundary parser), the rest the body; a body with nothing redacted comes out byte for
 * byte, and a redacted one is still well-formed multipart with the same boundary that inspects
 * again without error. A sixth inspects a request path segment by segment: with nothing found
 * its audited form is the path as sent; with a finding it keeps the path's '/' and is valid
 * percent-encoding; the target forwarded for it (egress_forward_target) has one spelling, the
 * query as sent, and is clean to inspection when the path sent was.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <custos/inspect.h>

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

static inspect_engine *eng;
static inspect_scratch *scr;
static inspect_profile prof;

static void setup(void)
{
	inspect_engine_opts o = { .builtins = INSPECT_BUILTIN_ALL };
	check(inspect_engine_new(&o, &eng) == CUSTOS_OK);
	check(inspect_scratch_new(eng, &scr) == CUSTOS_OK);
	for (unsigned i = 0; i < inspect_engine_detector_count(eng); i++)
		prof.action[i] = INSPECT_ACT_REDACT;
}

static size_t count_seps(span t)
{
	size_t n = 0;
	for (size_t i = 0; i < t.len; i++)
		n += t.ptr[i] == '&' || t.ptr[i] == '=';
	return n;
}

#define EGRESS_MP_MAX_PARTS_FUZZ 256u /* egress_inspect.c's parts bound */

static void multipart(const uint8_t *d, size_t n)
{
	const uint8_t *lf = memchr(d, '\n', n);
	if (lf == NULL)
		return;
	char b[EGRESS_MP_BOUNDARY_MAX + 1];
	size_t bl = 0;
	if (!egress_multipart_boundary(span_of((const char *)d, (size_t)(lf - d)), b, &bl))
		return;
	check(bl > 0 && bl <= EGRESS_MP_BOUNDARY_MAX && strlen(b) == bl);
	span in = span_of((const char *)lf + 1, n - (size_t)(lf + 1 - d));
	buf tmp, dec, msk, out, out2;
	buf_init(&tmp, 1u << 20);
	buf_init(&dec, 1u << 20);
	buf_init(&msk, 1u << 20);
	buf_init(&out, 1u << 22);
	buf_init(&out2, 1u << 22);
	inspect_summary sum;
	inspect_summary_init(&sum);
	custos_err e = egress_inspect_multipart(eng, scr, &prof, span_of(b, bl), in, &tmp, &dec,
	                                        &msk, &out, &sum);
	check(e == CUSTOS_OK || e == CUSTOS_ERR_PARSE || e == CUSTOS_ERR_LIMIT ||
	      e == CUSTOS_ERR_UNSUPPORTED);
	if (e == CUSTOS_OK && !sum.redacted)
		check(buf_used(&out) == in.len &&
		      (in.len == 0 || memcmp(buf_ptr(&out), in.ptr, in.len) == 0));
	if (e == CUSTOS_OK && sum.redacted) {
		inspect_summary_init(&sum);
		e = egress_inspect_multipart(eng, scr, &prof, span_of(b, bl), buf_span(&out), &tmp,
		                             &dec, &msk, &out2, &sum);
		check(e == CUSTOS_OK);
	}
	/* The ingress proxy's form field reader (a multipart upload's model) over the same
	 * body: it fails only as a parse or limit error, and the value it gives lies inside the
	 * body. */
	span v;
	unsigned cnt = 99;
	custos_err fe = egress_multipart_field(span_of(b, bl), in, "model", &v, &cnt);
	check(fe == CUSTOS_OK || fe == CUSTOS_ERR_PARSE || fe == CUSTOS_ERR_LIMIT);
	check(cnt <= EGRESS_MP_MAX_PARTS_FUZZ);
	if (fe == CUSTOS_OK && cnt > 0)
		check(v.len <= in.len &&
		      (v.len == 0 || (v.ptr >= in.ptr && v.ptr + v.len <= in.ptr + in.len)));
	if (fe == CUSTOS_OK && cnt == 0)
		check(v.len == 0);
	buf_free(&tmp);
	buf_free(&dec);
	buf_free(&msk);
	buf_free(&out);
	buf_free(&out2);
}

/* form != 0: a form body, else a JSON document. */
static void body(const uint8_t *d, size_t n, int form)
{
	buf tmp, out, out2;
	inspect_summary sum;
	span in = span_of((const char *)d, n);
	buf_init(&tmp, 1u << 20);
	buf_init(&out, 1u << 22);
	buf_init(&out2, 1u << 22);
	inspect_summary_init(&sum);
	custos_err e = form ? egress_inspect_form(eng, scr, &prof, in, &tmp, &out, &sum)
	                    : egress_inspect_json_doc(eng, scr, &prof, in, &tmp, &out, &sum);
	if (e == CUSTOS_OK) {
		if (!form && !sum.redacted)
			check(buf_used(&out) == n && (n == 0 || memcmp(buf_ptr(&out), d, n) == 0));
		if (form)
			check(count_seps(buf_span(&out)) == count_seps(in));
		inspect_summary_init(&sum);
		e = form ? egress_inspect_form(eng, scr, &prof, buf_span(&out), &tmp, &out2, &sum)
		         : egress_inspect_json_doc(eng, scr, &prof, buf_span(&out), &tmp, &out2,
		                                   &sum);
		/* Not byte for byte: a mask can give a neighbour a new context ("::ff:" before
		 * "[REDACTED:EMAIL]" reads as an IPv6 address), as in any redacted text. */
		check(e == CUSTOS_OK);
		if (form)
			check(count_seps(buf_span(&out2)) == count_seps(in));
	}
	buf_free(&tmp);
	buf_free(&out);
	buf_free(&out2);
}

/* A request path: every segment percent-decoded and inspected (everything redacts, so never
 * DENIED). The audited form is NUL-terminated within its room; with nothing found it is the
 * path up to '?' as sent; with a finding it has as many '/' as the path (when not cut) and is
 * valid percent-encoding. */
/* egress_forward_target on the same target: the path forwarded starts with '/', has no "//",
 * spells itself again (one spelling), and the query after it is the one sent; and a path in
 * which inspection found nothing (clean) is still clean forwarded: inspection and the policy
 * see the same decoded segments, so what the source gets was inspected. */
static void forward_target(span in, bool clean)
{
	buf t, t2, dec;
	if (egress_forward_target(in, &t) != CUSTOS_OK) {
		buf_free(&t);
		return;
	}
	span f = buf_span(&t);
	const char *fq = memchr(f.ptr, '?', f.len);
	const char *iq = in.len ? memchr(in.ptr, '?', in.len) : NULL;
	size_t fpl = fq ? (size_t)(fq - f.ptr) : f.len;
	check(fpl > 0 && f.ptr[0] == '/');
	for (size_t i = 0; i + 1 < fpl; i++)
		check(!(f.ptr[i] == '/' && f.ptr[i + 1] == '/'));
	check((fq == NULL) == (iq == NULL));
	if (iq)
		check(f.len - fpl == in.len - (size_t)(iq - in.ptr) &&
		      memcmp(fq, iq, f.len - fpl) == 0);
	check(egress_forward_target(f, &t2) == CUSTOS_OK && span_eq(buf_span(&t2), f));
	buf_free(&t2);
	if (clean) {
		char aud[512];
		int rdet = -2;
		inspect_summary sum;
		buf_init(&dec, fpl + 1);
		inspect_summary_init(&sum);
		check(egress_inspect_path(eng, scr, &prof, span_of(f.ptr, fpl), &dec, &sum, &rdet,
		                          aud, sizeof(aud)) == CUSTOS_OK &&
		      sum.total == 0);
		buf_free(&dec);
	}
	buf_free(&t);
}

static void path(const uint8_t *d, size_t n)
{
	buf dec;
	char aud[512];
	int rdet = -2;
	inspect_summary sum;
	span in = span_of((const char *)d, n);
	buf_init(&dec, n + 1);
	inspect_summary_init(&sum);
	custos_err e =
	        egress_inspect_path(eng, scr, &prof, in, &dec, &sum, &rdet, aud, sizeof(aud));
	check(e == CUSTOS_OK || e == CUSTOS_ERR_UNSUPPORTED || e == CUSTOS_ERR_PARSE);
	size_t al = strnlen(aud, sizeof(aud));
	check(al < sizeof(aud));
	const char *qm = n ? memchr(d, '?', n) : NULL;
	size_t pl = qm ? (size_t)(qm - (const char *)d) : n;
	bool nul = pl && memchr(d, 0, pl) != NULL; /* the request parser refuses it: a C string */
	if (e == CUSTOS_OK && !nul) {
		check(sum.total == 0 && rdet == -1);
		size_t want = pl < sizeof(aud) - 1 ? pl : sizeof(aud) - 1;
		check(al == want && memcmp(aud, d, al) == 0);
	}
	if (e == CUSTOS_ERR_UNSUPPORTED)
		check(rdet >= 0 && sum.total > 0);
	if (e == CUSTOS_ERR_UNSUPPORTED && !nul) {
		size_t slashes = 0, aslashes = 0;
		for (size_t i = 0; i < pl; i++)
			slashes += d[i] == '/';
		for (size_t i = 0; i < al; i++)
			aslashes += aud[i] == '/';
		check(aslashes <= slashes);
		if (al < sizeof(aud) - 1)
			check(aslashes == slashes);
		for (size_t i = 0; i + 2 < al; i++)
			if (aud[i] == '%')
				check(num_hex_digit((unsigned char)aud[i + 1]) >= 0 &&
				      num_hex_digit((unsigned char)aud[i + 2]) >= 0);
	}
	buf_free(&dec);
	if (!nul)
		forward_target(in, e == CUSTOS_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (eng == NULL)
		setup();
	switch (data[0] & 7) { /* 0-3 as the seed corpus has them; 6 multipart, 7 a path */
	case 0:
	case 4:
		hello(data + 1, size - 1);
		break;
	case 1:
	case 5:
		host(data + 1, size - 1);
		break;
	case 6:
		multipart(data + 1, size - 1);
		break;
	case 7:
		path(data + 1, size - 1);
		break;
	default:
		body(data + 1, size - 1, data[0] & 1);
		break;
	}
	err_clear();
	return 0;
}
