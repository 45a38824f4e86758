/* Unit tests of the audit module: event builder limits, the JSON scanner, line framing and
 * the hash chain, body checks at the trust boundary, keys and checkpoint signatures, and the
 * CEF / LEEF / RFC 5424 renderings with their escaping rules. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit/audit_int.h"
#include "custos/audit.h"

static span S(const char *s)
{
	return span_cstr(s);
}

static void test_event_builder(void **state)
{
	audit_event ev;
	const char *rules[] = { "r1", "r\"2" };
	audit_finding f[] = { { "payment_card", 2 } };
	audit_duration d[] = { { "total", 5 } };

	audit_event_begin_at(&ev, "request", 1000000000ull);
	audit_event_cstr(&ev, "principal", "alice\n");
	audit_event_strs(&ev, "rule_ids", rules, 2);
	audit_event_findings(&ev, f, 1);
	audit_event_durations(&ev, d, 1);
	assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
	span b = audit_event_body(&ev);
	const char *want = "\"time\":\"1970-01-01T00:00:01.000000000Z\",\"type\":\"request\","
	                   "\"principal\":\"alice\\n\",\"rule_ids\":[\"r1\",\"r\\\"2\"],"
	                   "\"findings\":[{\"type\":\"payment_card\",\"count\":2}],"
	                   "\"duration_ns\":{\"total\":5}";
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.ptr, want, b.len);
	assert_int_equal(audit_body_check(b, false), CUSTOS_OK);
}

static void test_event_too_big(void **state)
{
	audit_event ev;
	char *big = malloc(AUDIT_MAX_EVENT + 10);
	memset(big, 'a', AUDIT_MAX_EVENT + 9);
	big[AUDIT_MAX_EVENT + 9] = '\0';
	audit_event_begin(&ev, "request");
	audit_event_cstr(&ev, "reason", big);
	assert_int_equal(audit_event_end(&ev), CUSTOS_ERR_LIMIT);
	free(big);
	/* Too many finding types is a limit error too. */
	audit_finding f[AUDIT_MAX_FINDINGS + 1];
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(f); i++)
		f[i] = (audit_finding){ "x", 1 };
	audit_event_begin(&ev, "request");
	audit_event_findings(&ev, f, CUSTOS_ARRAY_LEN(f));
	assert_int_equal(audit_event_end(&ev), CUSTOS_ERR_LIMIT);
}

static void test_jscan(void **state)
{
	span k, v;
	size_t pos = 0;
	buf b;

	assert_int_equal(ajson_validate(S("{\"a\":[1,2.5e3,-0,true,null,{\"b\":\"\\u00e9\"}]}")),
	                 CUSTOS_OK);
	assert_int_equal(ajson_validate(S("{\"a\":01}")), CUSTOS_ERR_PARSE);
	assert_int_equal(ajson_validate(S("{\"a\":1,}")), CUSTOS_ERR_PARSE);
	assert_int_equal(ajson_validate(S("{\"a\":\"x\ny\"}")), CUSTOS_ERR_PARSE);
	assert_int_equal(ajson_validate(S("{\"a\":\"\\q\"}")), CUSTOS_ERR_PARSE);
	assert_int_equal(ajson_validate(S("{\"a\":1} x")), CUSTOS_ERR_PARSE);
	/* JSON text is UTF-8: raw invalid bytes in a string are not JSON. */
	assert_int_equal(ajson_validate(S("{\"a\":\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}")),
	                 CUSTOS_OK);
	assert_int_equal(ajson_validate(S("{\"a\":\"all\xffw\"}")), CUSTOS_ERR_PARSE);
	assert_int_equal(ajson_validate(S("{\"a\":\"\xc0\x80\"}")),
	                 CUSTOS_ERR_PARSE); /* overlong */
	assert_int_equal(ajson_validate(S("{\"a\":\"\xed\xa0\x80\"}")),
	                 CUSTOS_ERR_PARSE); /* surrogate */
	assert_int_equal(ajson_validate(S("{\"a\":\"\xe2\x82\"}")), CUSTOS_ERR_PARSE); /* cut */
	assert_int_equal(ajson_validate(S("{\"\xf4\x90\x80\x80\":1}")),
	                 CUSTOS_ERR_PARSE); /* above U+10FFFF, in a key */
	assert_int_equal(ajson_validate(S("[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]")),
	                 CUSTOS_ERR_LIMIT);
	span o = S("{\"x\":1,\"y\":{\"z\":[1]},\"s\":\"a\\\"b\"}");
	assert_int_equal(ajson_next(o, &pos, &k, &v), CUSTOS_OK);
	assert_true(span_eq_cstr(k, "x") && span_eq_cstr(v, "1"));
	assert_int_equal(ajson_next(o, &pos, &k, &v), CUSTOS_OK);
	assert_true(span_eq_cstr(v, "{\"z\":[1]}"));
	assert_int_equal(ajson_get(o, "s", &v), CUSTOS_OK);
	buf_init(&b, 64);
	assert_int_equal(ajson_unescape(v, &b), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&b), "a\"b"));
	buf_reset(&b);
	assert_int_equal(ajson_unescape(S("\"\\ud83d\\ude00\\u0041\""), &b), CUSTOS_OK);
	assert_true(span_eq_cstr(buf_span(&b), "\xf0\x9f\x98\x80"
	                                       "A"));
	buf_free(&b);
	assert_int_equal(ajson_get(o, "nope", &v), CUSTOS_ERR_NOTFOUND);
}

static void test_body_check(void **state)
{
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"request\""), false),
	                 CUSTOS_OK);
	/* Reserved members and writer-only types are refused from producers. */
	assert_int_equal(
	        audit_body_check(S("\"time\":\"t\",\"type\":\"request\",\"seq\":5"), false),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(
	        audit_body_check(S("\"time\":\"t\",\"type\":\"request\",\"hash\":\"x\""), false),
	        CUSTOS_ERR_DENIED);
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"checkpoint\""), false),
	                 CUSTOS_ERR_DENIED);
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"checkpoint\""), true),
	                 CUSTOS_OK);
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"audit.start\""), false),
	                 CUSTOS_ERR_DENIED);
	/* Framing escapes: a closing brace or a raw newline would split or end the record. */
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"r\"},{\"a\":1"), false),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"r\"\n"), false),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(audit_body_check(S("\"type\":\"r\",\"time\":\"t\""), false),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(audit_body_check(S(""), false), CUSTOS_ERR_LIMIT);
	/* What verify would refuse never reaches the log: raw invalid UTF-8. */
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"type\":\"r\",\"x\":\"\xff\""), false),
	                 CUSTOS_ERR_PARSE);
}

/* One form, one meaning: a member name that a JSON reader decodes to a framing member (escaped,
 * or time/type again, which a reader keeping the last of two equal names would show instead of
 * the first) is refused, from producers and (writer_types) in verify; look-alikes are not. */
static void test_body_check_canonical(void **state)
{
	static const char *const refused[] = {
		",\"se\\u0071\":5",
		",\"\\u0073eq\":5",
		",\"\\u0076\":2",
		",\"pr\\u0065v\":\"x\"",
		",\"\\u0068ash\":\"x\"",
		",\"typ\\u0065\":\"checkpoint\"",
		",\"type\":\"checkpoint\"",
		",\"type\":\"request\"",
		",\"time\":\"2000\"",
		",\"tim\\u0065\":1",
		",\"seq\" : 5",
	};
	static const char *const accepted[] = {
		",\"sequence\":5",
		",\"typ\":1",
		",\"se\\u0071q\":1",
		",\"hash\\u00e9\":1",
		",\"\\u0000\":1",
		",\"x\\\\\":1",
		",\"h\\u0041sh\":1",
		",\"types\":[\"type\"]",
		",\"o\":{\"seq\":1,\"type\":2}",
	};
	char b[256];

	(void)state;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(refused); i++) {
		snprintf(b, sizeof(b), "\"time\":\"t\",\"type\":\"request\"%s", refused[i]);
		assert_int_equal(audit_body_check(span_cstr(b), false), CUSTOS_ERR_DENIED);
		assert_int_equal(audit_body_check(span_cstr(b), true), CUSTOS_ERR_DENIED);
	}
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(accepted); i++) {
		snprintf(b, sizeof(b), "\"time\":\"t\",\"type\":\"request\"%s", accepted[i]);
		assert_int_equal(audit_body_check(span_cstr(b), false), CUSTOS_OK);
	}
	/* The first two members must be time and type unescaped. */
	assert_int_equal(audit_body_check(S("\"tim\\u0065\":\"t\",\"type\":\"r\""), false),
	                 CUSTOS_ERR_PARSE);
	assert_int_equal(audit_body_check(S("\"time\":\"t\",\"typ\\u0065\":\"r\""), false),
	                 CUSTOS_ERR_PARSE);
}

static void test_chain(void **state)
{
	buf b;
	char h1[65], h2[65], hx[65];
	audit_line l;

	buf_init(&b, 1 << 16);
	assert_int_equal(
	        audit_line_build(&b, 1, S("\"time\":\"t\",\"type\":\"a\""), AUDIT_GENESIS_PREV, h1),
	        CUSTOS_OK);
	size_t first = buf_used(&b);
	assert_int_equal(audit_line_build(&b, 2, S("\"time\":\"t\",\"type\":\"b\""), h1, h2),
	                 CUSTOS_OK);
	span all = buf_span(&b);
	span l1 = span_of(all.ptr, first - 1), l2 = span_of(all.ptr + first, all.len - first - 1);
	assert_int_equal(ajson_validate(l1), CUSTOS_OK);
	assert_int_equal(audit_line_parse(l2, &l), CUSTOS_OK);
	assert_int_equal(l.seq, 2);
	assert_memory_equal(l.prev, h1, 64);
	assert_memory_equal(l.hash, h2, 64);
	assert_true(span_eq_cstr(l.body, "\"time\":\"t\",\"type\":\"b\""));
	/* hash = SHA-256 of the line up to and including prev's closing quote. */
	assert_int_equal(audit_sha256_hex(l.canonical.ptr, l.canonical.len, hx), CUSTOS_OK);
	assert_memory_equal(hx, h2, 64);
	assert_int_equal(l.canonical.ptr[l.canonical.len - 1], '"');
	/* Malformed framings. */
	assert_int_equal(audit_line_parse(S("{\"v\":2,\"seq\":1}"), &l), CUSTOS_ERR_PARSE);
	char bad[1024];
	snprintf(bad, sizeof(bad), "%.*s", (int)l2.len - 3, l2.ptr);
	assert_int_equal(audit_line_parse(S(bad), &l), CUSTOS_ERR_PARSE);
	snprintf(bad, sizeof(bad), "%.*s", (int)l2.len, l2.ptr);
	bad[l2.len - 10] = 'X'; /* not hex */
	assert_int_equal(audit_line_parse(S(bad), &l), CUSTOS_ERR_PARSE);
	buf_free(&b);
}

/* verify names a record whose body another JSON reader would read differently (an escaped
 * seq, a second type), even with every hash recomputed, and refuses a FIFO in a log's place. */
static void test_verify_canonical(void **state)
{
	static const char *const bodies[] = {
		"\"time\":\"t\",\"type\":\"audit.start\"",
		"\"time\":\"t\",\"type\":\"request\",\"se\\u0071\":9",
		"\"time\":\"t\",\"type\":\"request\",\"type\":\"checkpoint\"",
	};
	char dir[] = "/tmp/custos-test-vcanon-XXXXXX", path[128], head[65], h[65];
	audit_verify_result r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/audit-00000000000000000001.jsonl", dir);
	const char *paths[] = { path };
	for (size_t bad = 1; bad < CUSTOS_ARRAY_LEN(bodies); bad++) {
		buf b;
		buf_init(&b, 1024);
		memcpy(head, AUDIT_GENESIS_PREV, sizeof(head));
		assert_int_equal(audit_line_build(&b, 1, S(bodies[0]), head, h), CUSTOS_OK);
		memcpy(head, h, sizeof(head));
		assert_int_equal(audit_line_build(&b, 2, S(bodies[bad]), head, h), CUSTOS_OK);
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		assert_int_equal(fwrite(buf_ptr(&b), 1, buf_used(&b), f), buf_used(&b));
		fclose(f);
		buf_free(&b);
		assert_int_equal(
		        audit_verify(paths, 1, &(audit_verify_options){ .live = true }, &r),
		        CUSTOS_OK);
		assert_false(r.ok);
		assert_int_equal(r.bad_line, 2);
		assert_int_equal(r.bad_seq, 2);
		assert_non_null(strstr(r.what, "reserved member"));
	}
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_false(r.ok);
	assert_non_null(strstr(r.what, "not a regular file"));
	unlink(path);
	rmdir(dir);
}

static void test_file_names(void **state)
{
	char n[64];
	uint64_t s;
	audit_file_name(42, n);
	assert_string_equal(n, "audit-00000000000000000042.jsonl");
	assert_true(audit_file_name_parse(n, &s));
	assert_int_equal(s, 42);
	assert_false(audit_file_name_parse("audit-42.jsonl", &s));
	assert_false(audit_file_name_parse("audit-0000000000000000004x.jsonl", &s));
}

static void test_keys(void **state)
{
	char dir[] = "/tmp/test_audit_keysXXXXXX", path[128], sig[129];
	EVP_PKEY *priv = NULL, *pub = NULL;
	const char *head = AUDIT_GENESIS_PREV;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(audit_keygen(dir), CUSTOS_OK);
	assert_int_equal(audit_keygen(dir), CUSTOS_ERR_EXISTS); /* never overwrites */
	snprintf(path, sizeof(path), "%s/audit.key", dir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	chmod(path, 0640);
	assert_int_equal(audit_key_load_private(path, &priv), CUSTOS_ERR_PERM);
	chmod(path, 0600);
	assert_int_equal(audit_key_load_private(path, &priv), CUSTOS_OK);
	snprintf(path, sizeof(path), "%s/audit.pub", dir);
	assert_int_equal(audit_key_load_public(path, &pub), CUSTOS_OK);
	assert_int_equal(audit_ckpt_sign_v1(priv, 7, head, sig), CUSTOS_OK);
	assert_int_equal(audit_ckpt_verify_v1(pub, 7, head, S(sig)), CUSTOS_OK);
	assert_int_equal(audit_ckpt_verify_v1(pub, 8, head, S(sig)), CUSTOS_ERR_CRYPTO);
	sig[0] = sig[0] == '0' ? '1' : '0';
	assert_int_equal(audit_ckpt_verify_v1(pub, 7, head, S(sig)), CUSTOS_ERR_CRYPTO);
	assert_int_equal(audit_ckpt_verify_v1(pub, 7, head, S("abc")), CUSTOS_ERR_PARSE);
	/* Format 2 signs the checkpoint record's bytes up to its sig: any change to them (the
	 * reason, say) fails, and neither format's signature passes for the other's. */
	span rec = S("{\"v\":1,\"seq\":8,\"time\":\"t\",\"type\":\"checkpoint\","
	             "\"reason\":\"interval\",\"signed_seq\":7");
	span forged = S("{\"v\":1,\"seq\":8,\"time\":\"t\",\"type\":\"checkpoint\","
	                "\"reason\":\"shutdown\",\"signed_seq\":7");
	assert_int_equal(audit_ckpt_sign(priv, rec, sig), CUSTOS_OK);
	assert_int_equal(audit_ckpt_verify(pub, rec, S(sig)), CUSTOS_OK);
	assert_int_equal(audit_ckpt_verify(pub, forged, S(sig)), CUSTOS_ERR_CRYPTO);
	assert_int_equal(audit_ckpt_verify_v1(pub, 7, head, S(sig)), CUSTOS_ERR_CRYPTO);
	char sig1[129], m1[128];
	assert_int_equal(audit_ckpt_sign_v1(priv, 7, head, sig1), CUSTOS_OK);
	snprintf(m1, sizeof(m1), "7 %s", head);
	assert_int_equal(audit_ckpt_verify(pub, S(m1), S(sig1)), CUSTOS_ERR_CRYPTO);
	/* A keyring: several public keys in one file; a damaged block is refused. */
	char kdir2[160], ring[160], cmd[512];
	EVP_PKEY *ks[AUDIT_VERIFY_MAX_KEYS];
	size_t nk = 0;
	snprintf(kdir2, sizeof(kdir2), "%s/k2", dir);
	assert_int_equal(audit_keygen(kdir2), CUSTOS_OK);
	snprintf(ring, sizeof(ring), "%s/ring.pem", dir);
	snprintf(cmd, sizeof(cmd), "cat %s %s/audit.pub > %s", path, kdir2, ring);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(audit_keyring_load(ring, ks, AUDIT_VERIFY_MAX_KEYS, &nk), CUSTOS_OK);
	assert_int_equal(nk, 2);
	char id0[17], id1[17], idp[17];
	assert_int_equal(audit_key_id(ks[0], id0), CUSTOS_OK);
	assert_int_equal(audit_key_id(ks[1], id1), CUSTOS_OK);
	assert_int_equal(audit_key_id(pub, idp), CUSTOS_OK);
	assert_string_equal(id0, idp);
	assert_string_not_equal(id0, id1);
	EVP_PKEY_free(ks[0]);
	EVP_PKEY_free(ks[1]);
	assert_int_equal(audit_keyring_load(ring, ks, 1, &nk), CUSTOS_ERR_LIMIT);
	snprintf(cmd, sizeof(cmd), "sed -i '5s/^M/X/' %s", ring); /* the second key's body */
	assert_int_equal(system(cmd), 0);
	assert_int_not_equal(audit_keyring_load(ring, ks, AUDIT_VERIFY_MAX_KEYS, &nk), CUSTOS_OK);
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", kdir2, ring);
	assert_int_equal(system(cmd), 0);
	/* A public key is not a private key. */
	EVP_PKEY *x = NULL;
	assert_int_not_equal(audit_key_load_private(path, &x), CUSTOS_OK);
	EVP_PKEY_free(priv);
	EVP_PKEY_free(pub);
	unlink(path);
	snprintf(path, sizeof(path), "%s/audit.key", dir);
	unlink(path);
	rmdir(dir);
}

static const char *LINE =
        "{\"v\":1,\"seq\":7,\"time\":\"2026-11-27T01:55:11.123456789Z\",\"type\":\"request\","
        "\"request_id\":\"r-1\",\"principal\":\"a|b=c\\\\d\\ne\\tf\",\"action\":\"POST /v1\","
        "\"resource\":\"llama\",\"decision\":\"deny\",\"rule_ids\":[\"x\",\"y\"],"
        "\"reason\":\"bad ] \\\"q\\\"\",\"findings\":[{\"type\":\"email\",\"count\":2}],"
        "\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\","
        "\"hash\":\"1111111111111111111111111111111111111111111111111111111111111111\"}";

static char *render(audit_format f, const audit_render_ctx *ctx, const char *line)
{
	buf b;
	const char *s;
	buf_init(&b, 1 << 16);
	custos_err e = audit_render(f, S(line), ctx, &b);
	if (e != CUSTOS_OK) {
		buf_free(&b);
		return NULL;
	}
	assert_int_equal(buf_cstr(&b, &s), CUSTOS_OK);
	char *r = strdup(s);
	buf_free(&b);
	return r;
}

static void test_render_cef(void **state)
{
	char *r = render(AUDIT_FMT_CEF, NULL, LINE);
	assert_non_null(r);
	/* Header: pipes escaped; severity 7 for a deny; rt in ms. */
	assert_non_null(strstr(r, "CEF:0|custos|custos|"));
	assert_non_null(strstr(r, "|request|request deny|7|rt=1795744511123 "));
	/* Extension values: '=' and '\' escaped, newline as \n, other controls as a space; a
	 * pipe stays raw. */
	assert_non_null(strstr(r, " suser=a|b\\=c\\\\d\\ne f "));
	assert_non_null(strstr(r, " cs1=x,y cs1Label=rule_ids"));
	assert_non_null(strstr(r, " cs6=email:2 cs6Label=findings"));
	assert_non_null(strstr(r, " cn1=7 cn1Label=seq"));
	assert_null(strchr(r, '\n'));
	free(r);
	/* A type with a pipe in the header is escaped there. */
	r = render(AUDIT_FMT_CEF, NULL,
	           "{\"v\":1,\"seq\":1,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":\"a|b\\\\\"}");
	assert_non_null(r);
	assert_non_null(strstr(r, "|a\\|b\\\\|a\\|b\\\\|3|"));
	free(r);
}

/* The raised severity: CEF 7 / LEEF 7 / RFC 5424 warning (PRI 13*8+4 = 108) for refusals,
 * enforcement hits in a process sandbox, privsep events and losses of the trail; CEF 3 /
 * LEEF 3 / info (110) for the rest. The action is read as a member of the record, never from
 * inside a string. */
static void test_render_severity(void **state)
{
	(void)state;
	static const struct {
		const char *members;
		bool raised;
	} cases[] = {
		{ "\"type\":\"http.request\",\"decision\":\"deny\"", true },
		{ "\"type\":\"http.request\",\"decision\":\"allow\"", false },
		{ "\"type\":\"tls.reject\",\"decision\":\"deny\"", true },
		{ "\"type\":\"connection.reject\",\"remote\":\"127.0.0.1:1\",\"decision\":"
		  "\"deny\"",
		  true },
		{ "\"type\":\"sandbox.process\",\"model\":\"m\",\"action\":\"violation\"", true },
		{ "\"type\":\"sandbox.process\",\"action\":\"oom\"", true },
		{ "\"type\":\"sandbox.process\",\"action\":\"limit\"", true },
		{ "\"type\":\"sandbox.process\",\"action\":\"start\"", false },
		{ "\"type\":\"sandbox.process\",\"action\":\"exit\",\"detail\":"
		  "\"\\\"action\\\":\\\"violation\\\"\"",
		  false },
		{ "\"type\":\"sandbox.vm\",\"action\":\"violation\"", false },
		{ "\"type\":\"privsep\",\"action\":\"proxy_call_refused\"", true },
		{ "\"type\":\"trail.outage\",\"events_refused\":3", true },
		{ "\"type\":\"trail.queue_full\",\"events_refused\":3", true },
		{ "\"type\":\"trail.shipper\",\"action\":\"exit\"", true },
		{ "\"type\":\"audit.invalid\"", true },
		{ "\"type\":\"checkpoint\"", false },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		char line[512];
		snprintf(line, sizeof(line),
		         "{\"v\":1,\"seq\":1,\"time\":\"2026-11-27T01:55:11.1Z\",%s}",
		         cases[i].members);
		char *cef = render(AUDIT_FMT_CEF, NULL, line);
		char *leef = render(AUDIT_FMT_LEEF, NULL, line);
		char *syslog = render(AUDIT_FMT_RFC5424, NULL, line);
		assert_non_null(cef);
		assert_non_null(leef);
		assert_non_null(syslog);
		bool r = cases[i].raised;
		if ((strstr(cef, r ? "|7|rt=" : "|3|rt=") == NULL) ||
		    (strstr(leef, r ? "|x09|sev=7" : "|x09|sev=3") == NULL) ||
		    (strncmp(syslog, r ? "<108>1 " : "<110>1 ", 7) != 0))
			fail_msg("case %zu (%s): want %s; got %s / %s / %.8s", i, cases[i].members,
			         r ? "raised" : "ordinary", cef, leef, syslog);
		free(cef);
		free(leef);
		free(syslog);
	}
}

static void test_render_leef(void **state)
{
	char *r = render(AUDIT_FMT_LEEF, NULL, LINE);
	assert_non_null(r);
	assert_non_null(strstr(r, "LEEF:2.0|custos|custos|"));
	assert_non_null(strstr(r, "|request|x09|sev=7\tdevTime=2026-11-27T01:55:11.123Z\t"));
	/* Values: tab (the delimiter) and newline escaped, backslash doubled, '=' raw. */
	assert_non_null(strstr(r, "\tusrName=a|b=c\\\\d\\ne\\tf\t"));
	assert_non_null(strstr(r, "\truleIds=x,y"));
	assert_non_null(strstr(r, "\tfindings=email:2"));
	assert_null(strchr(r, '\n'));
	free(r);
	/* A forged time (found by fuzz_audit_record) is never copied into devTime. */
	r = render(AUDIT_FMT_LEEF, NULL, "{\"v\":1,\"time\":\"2026-11-27T02f\\nd\\tc2be.967Z\"}");
	assert_non_null(r);
	assert_null(strchr(r, '\n'));
	assert_null(strstr(r, "devTime"));
	free(r);
}

/* The sandbox profile's hash reaches CEF flexString1 and LEEF sandboxProfileHash under the
 * names the producers write: `profile_hash` (sandbox.process), `profile_sha256` (sandbox.vm).
 * Before, the renderers looked only for `sandbox_profile_hash`, which no producer writes. */
static void test_render_profile_hash(void **state)
{
	(void)state;
	static const char *const lines[] = {
		"{\"v\":1,\"seq\":1,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
		"\"sandbox.process\",\"model\":\"m\",\"action\":\"start\",\"generation\":1,"
		"\"profile_hash\":\"ab12\"}",
		"{\"v\":1,\"seq\":1,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":\"sandbox.vm\","
		"\"model\":\"m\",\"vm\":\"d\",\"action\":\"started\",\"profile_sha256\":\"ab12\"}",
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(lines); i++) {
		char *cef = render(AUDIT_FMT_CEF, NULL, lines[i]);
		char *leef = render(AUDIT_FMT_LEEF, NULL, lines[i]);
		assert_non_null(cef);
		assert_non_null(leef);
		if (strstr(cef, " flexString1=ab12 flexString1Label=sandbox_profile_hash") ==
		            NULL ||
		    strstr(leef, "\tsandboxProfileHash=ab12") == NULL)
			fail_msg("line %zu: no profile hash in %s / %s", i, cef, leef);
		free(cef);
		free(leef);
	}
}

/* CEF requestMethod is the HTTP method (`method`) only; what custos did is `act`: the decision,
 * else the action of an event without one (a sandbox's lifecycle, a reload, privsep). Before,
 * "start" or "proxy_lost" went to requestMethod. */
static void test_render_cef_act(void **state)
{
	(void)state;
	static const struct {
		const char *members, *want, *not ;
	} cases[] = {
		{ "\"type\":\"sandbox.process\",\"model\":\"m\",\"action\":\"start\"", " act=start",
		  "requestMethod=" },
		{ "\"type\":\"privsep\",\"process\":\"supervisor\",\"action\":\"proxy_lost\"",
		  " act=proxy_lost", "requestMethod=" },
		{ "\"type\":\"http.request\",\"method\":\"POST\",\"path\":\"/v1\",\"decision\":"
		  "\"allow\"",
		  " requestMethod=POST request=/v1 act=allow", "act=POST" },
	};
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(cases); i++) {
		char line[512];
		snprintf(line, sizeof(line),
		         "{\"v\":1,\"seq\":1,\"time\":\"2026-11-27T01:55:11.1Z\",%s}",
		         cases[i].members);
		char *cef = render(AUDIT_FMT_CEF, NULL, line);
		assert_non_null(cef);
		if (strstr(cef, cases[i].want) == NULL || strstr(cef, cases[i].not ) != NULL)
			fail_msg("case %zu: want '%s', not '%s': %s", i, cases[i].want,
			         cases[i].not, cef);
		free(cef);
	}
}

/* via, the balancer that sent a PROXY header: CEF's source NAT keys, LEEF's post-NAT keys, the
 * port apart; IPv6 without its brackets; a via that is no ip:port (forged) is left out. */
static void test_render_via(void **state)
{
	(void)state;
	static const char *V4 =
	        "{\"v\":1,\"seq\":3,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":\"http.request\","
	        "\"remote\":\"203.0.113.7:41000\",\"via\":\"10.0.0.5:51234\"}";
	static const char *V6 =
	        "{\"v\":1,\"seq\":4,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":\"tls.reject\","
	        "\"via\":\"[2001:db8::5]:443\"}";
	char *r = render(AUDIT_FMT_CEF, NULL, V4);
	assert_non_null(r);
	assert_non_null(strstr(r, " sourceTranslatedAddress=10.0.0.5 sourceTranslatedPort=51234"));
	assert_non_null(strstr(r, " src=203.0.113.7 spt=41000"));
	free(r);
	r = render(AUDIT_FMT_LEEF, NULL, V4);
	assert_non_null(r);
	assert_non_null(strstr(r, "\tsrcPostNAT=10.0.0.5\tsrcPostNATPort=51234"));
	assert_non_null(strstr(r, "\tremote=203.0.113.7:41000"));
	assert_non_null(strstr(r, "\tsrc=203.0.113.7\tsrcPort=41000"));
	free(r);
	r = render(AUDIT_FMT_CEF, NULL, V6);
	assert_non_null(r);
	assert_non_null(strstr(r, " sourceTranslatedAddress=2001:db8::5 sourceTranslatedPort=443"));
	free(r);
	r = render(AUDIT_FMT_LEEF, NULL, V6);
	assert_non_null(r);
	assert_non_null(strstr(r, "\tsrcPostNAT=2001:db8::5\tsrcPostNATPort=443"));
	free(r);
	/* Cases for the RFC 5424 inner rendering too: the CEF MSG carries it. */
	audit_render_ctx ctx = { .hostname = "h", .inner = AUDIT_FMT_CEF, .facility = 13 };
	r = render(AUDIT_FMT_RFC5424, &ctx, V4);
	assert_non_null(r);
	assert_non_null(strstr(r, " sourceTranslatedAddress=10.0.0.5 "));
	free(r);
	static const char *const bad[] = { "10.0.0.5",       "10.0.0.5:",       "10.0.0.5:0",
		                           "10.0.0.5:65536", "x=1 y:2",         "10.0.0.5:1\\tz",
		                           "[10.0.0.5]:1",   "2001:db8::5:443", "unix" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(bad); i++) {
		char line[256];
		snprintf(line, sizeof(line),
		         "{\"v\":1,\"seq\":5,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
		         "\"http.request\",\"via\":\"%s\"}",
		         bad[i]);
		r = render(AUDIT_FMT_CEF, NULL, line);
		assert_non_null(r);
		assert_null(strstr(r, "sourceTranslated"));
		free(r);
		r = render(AUDIT_FMT_LEEF, NULL, line);
		assert_non_null(r);
		assert_null(strstr(r, "srcPostNAT"));
		free(r);
		/* The same values as the client's remote: no typed source keys. */
		snprintf(line, sizeof(line),
		         "{\"v\":1,\"seq\":5,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
		         "\"http.request\",\"remote\":\"%s\"}",
		         bad[i]);
		r = render(AUDIT_FMT_CEF, NULL, line);
		assert_non_null(r);
		assert_null(strstr(r, " src="));
		assert_null(strstr(r, " spt="));
		free(r);
		r = render(AUDIT_FMT_LEEF, NULL, line);
		assert_non_null(r);
		assert_null(strstr(r, "\tsrc="));
		assert_null(strstr(r, "\tsrcPort="));
		free(r);
	}
	/* A record with src_ip keeps it as src (the table's mapping), and remote adds nothing. */
	r = render(AUDIT_FMT_CEF, NULL,
	           "{\"v\":1,\"seq\":6,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":\"x\","
	           "\"src_ip\":\"192.0.2.1\",\"remote\":\"203.0.113.7:41000\"}");
	assert_non_null(r);
	assert_non_null(strstr(r, " src=192.0.2.1"));
	assert_null(strstr(r, "203.0.113.7"));
	free(r);
}

/* via_authority and via_unique_id (a PROXY v2 header's AUTHORITY and UNIQUE_ID): the authority
 * is the destination host (CEF dhost, LEEF dstHost) unless the record has its own host, the id
 * LEEF's viaUniqueId and nowhere in CEF; neither is looked for without a via; forged values are
 * escaped as any other. */
static void test_render_via_tlvs(void **state)
{
	(void)state;
	static const char *L = "{\"v\":1,\"seq\":3,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
	                       "\"http.request\",\"remote\":\"203.0.113.7:41000\",\"via\":"
	                       "\"10.0.0.5:51234\",\"via_authority\":\"api.example.com\","
	                       "\"via_unique_id\":\"0001feff\"}";
	char *r = render(AUDIT_FMT_CEF, NULL, L);
	assert_non_null(r);
	assert_non_null(strstr(r, " dhost=api.example.com"));
	assert_null(strstr(r, "0001feff"));
	free(r);
	r = render(AUDIT_FMT_LEEF, NULL, L);
	assert_non_null(r);
	assert_non_null(strstr(r, "\tdstHost=api.example.com\tviaUniqueId=0001feff"));
	free(r);
	/* A record's own host wins; the id stays. */
	static const char *H = "{\"v\":1,\"seq\":4,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
	                       "\"x\",\"host\":\"data.example\",\"via\":\"10.0.0.5:1\","
	                       "\"via_authority\":\"api.example.com\",\"via_unique_id\":\"ab\"}";
	r = render(AUDIT_FMT_CEF, NULL, H);
	assert_non_null(r);
	assert_non_null(strstr(r, " dhost=data.example"));
	assert_null(strstr(r, "api.example.com"));
	free(r);
	r = render(AUDIT_FMT_LEEF, NULL, H);
	assert_non_null(r);
	assert_non_null(strstr(r, "\tdstHost=data.example"));
	assert_null(strstr(r, "api.example.com"));
	assert_non_null(strstr(r, "\tviaUniqueId=ab"));
	free(r);
	/* Without a via they are not looked at (the proxy never writes them alone). */
	static const char *N = "{\"v\":1,\"seq\":5,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
	                       "\"x\",\"via_authority\":\"api.example.com\",\"via_unique_id\":"
	                       "\"ab\"}";
	r = render(AUDIT_FMT_CEF, NULL, N);
	assert_non_null(r);
	assert_null(strstr(r, "dhost"));
	free(r);
	r = render(AUDIT_FMT_LEEF, NULL, N);
	assert_non_null(r);
	assert_null(strstr(r, "dstHost"));
	assert_null(strstr(r, "viaUniqueId"));
	free(r);
	/* Forged values (a line not written by the proxy) are escaped: no raw delimiter, no
	 * line break, no second key. */
	static const char *F = "{\"v\":1,\"seq\":6,\"time\":\"2026-11-27T01:55:11.1Z\",\"type\":"
	                       "\"x\",\"via\":\"x\",\"via_authority\":\"a=b\\nsuser=root\","
	                       "\"via_unique_id\":\"c\\td=e\"}";
	r = render(AUDIT_FMT_CEF, NULL, F);
	assert_non_null(r);
	assert_non_null(strstr(r, " dhost=a\\=b\\nsuser\\=root"));
	assert_null(strchr(r, '\n'));
	free(r);
	r = render(AUDIT_FMT_LEEF, NULL, F);
	assert_non_null(r);
	assert_non_null(strstr(r, "\tdstHost=a=b\\nsuser=root\tviaUniqueId=c\\td=e"));
	assert_null(strchr(r, '\n'));
	free(r);
}

static void test_render_5424(void **state)
{
	audit_render_ctx ctx = { .hostname = "host one", .app_name = NULL, .facility = 13 };
	char *r = render(AUDIT_FMT_RFC5424, &ctx, LINE);
	assert_non_null(r);
	/* PRI 13*8+4 (deny: warning); time cut to microseconds; spaces in tokens replaced. */
	const char *want = "<108>1 2026-11-27T01:55:11.123456Z host_one custos - request "
	                   "[origin software=\"custos\" swVersion=\"";
	assert_true(strncmp(r, want, strlen(want)) == 0);
	assert_non_null(strstr(r, "[custos@32473 seq=\"7\"] {\"v\":1,\"seq\":7,"));
	free(r);
	ctx.inner = AUDIT_FMT_CEF;
	r = render(AUDIT_FMT_RFC5424, &ctx, LINE);
	assert_non_null(r);
	assert_non_null(strstr(r, "\"] CEF:0|custos|"));
	free(r);
	/* Invalid JSON is refused, not rendered. */
	assert_null(render(AUDIT_FMT_RFC5424, &ctx, "{\"v\":1,"));
	assert_null(render(AUDIT_FMT_CEF, &ctx, "not json"));
}

static void test_format_parse(void **state)
{
	audit_format f;
	assert_int_equal(audit_format_parse("leef", &f), CUSTOS_OK);
	assert_int_equal(f, AUDIT_FMT_LEEF);
	assert_int_equal(audit_format_parse("xml", &f), CUSTOS_ERR_INVAL);
	assert_int_equal(audit_format_parse(NULL, &f), CUSTOS_ERR_INVAL);
}

static void test_writer_refuses(void **state)
{
	audit_options o;
	audit_writer *w = NULL;
	audit_options_default(&o);
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL); /* no dir */
	o.dir = "/proc/self/nonexistent/audit";
	assert_int_not_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_null(w);
	o.dir = "/tmp";
	o.signing_key = "/nonexistent.key";
	assert_int_not_equal(audit_writer_start(&o, &w), CUSTOS_OK);
}

/* A sink that cannot be set up fails audit_writer_start, naming the sink (custos up then
 * refuses to start) instead of a shipper that silently ships to fewer SIEMs. A receiver that
 * is not there is no error: the sink retries. */
static size_t count_in_dir(const char *dir, const char *needle);

static void test_sink_setup_refused(void **state)
{
	char dir[] = "/tmp/test_audit_sinkXXXXXX", bad[160], tok[160], cmd[256];
	audit_options o;
	audit_sink_options k[2];
	audit_writer *w = NULL;

	assert_non_null(mkdtemp(dir));
	snprintf(bad, sizeof(bad), "%s/ca.pem", dir);
	FILE *f = fopen(bad, "w");
	assert_non_null(f);
	fputs("not a certificate\n", f);
	fclose(f);
	snprintf(tok, sizeof(tok), "%s/hec.token", dir);
	f = fopen(tok, "w");
	assert_non_null(f);
	fputs("tok en\n", f); /* a space: not one header-safe word */
	fclose(f);
	chmod(tok, 0600);
	audit_options_default(&o);
	o.dir = dir;
	memset(k, 0, sizeof(k));
	k[0] = (audit_sink_options){
		.name = "up", .kind = AUDIT_SINK_SYSLOG_TCP, .host = "127.0.0.1", .port = 9
	}; /* nobody listens */
	k[1] = (audit_sink_options){ .name = "siem",
		                     .kind = AUDIT_SINK_SYSLOG_TLS,
		                     .host = "127.0.0.1",
		                     .port = 9,
		                     .ca_file = bad };
	o.sinks = k;
	o.n_sinks = 2;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_TLS);
	assert_null(w);
	assert_non_null(strstr(err_msg(), "audit sink siem: cannot load CA file"));
	/* A client certificate without its key. */
	k[1].ca_file = NULL;
	k[1].cert_file = bad;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "audit sink siem: a client certificate needs its key"));
	/* A HEC token file that is not one visible word, then one others may read. */
	k[1] = (audit_sink_options){ .name = "hec",
		                     .kind = AUDIT_SINK_HEC,
		                     .host = "127.0.0.1",
		                     .port = 9,
		                     .hec_token_file = tok };
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "audit sink hec:"));
	chmod(tok, 0644);
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_PERM);
	assert_non_null(strstr(err_msg(), "audit sink hec:"));
	/* Not a collector endpoint; TLS over a unix socket. */
	k[1].hec_token_file = NULL;
	k[1].hec_path = "/ingest";
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL);
	k[1] = (audit_sink_options){ .name = "local",
		                     .kind = AUDIT_SINK_SYSLOG_TLS,
		                     .unix_path = "/run/x.sock" };
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL);
	/* A name whose cursor (cursor.a.tmp) the head check would skip as a replacement. */
	k[1] = (audit_sink_options){
		.name = "a.tmp", .kind = AUDIT_SINK_SYSLOG_TCP, .host = "127.0.0.1", .port = 9
	};
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL);
	assert_non_null(strstr(err_msg(), "audit sink a.tmp: a sink name holds no '.tmp'"));
	/* Both set up (the receivers are absent): it starts; names and positions are known. */
	k[1] = (audit_sink_options){ .name = "local",
		                     .kind = AUDIT_SINK_SYSLOG_TCP,
		                     .unix_path = "/nonexistent/x.sock" };
	/* But not from a cursor file that does not parse: the start fails, naming it. */
	char cpath[160];
	snprintf(cpath, sizeof(cpath), "%s/ship/cursor.local", dir);
	FILE *cf = fopen(cpath, "w");
	assert_non_null(cf);
	fputs("12x\n", cf);
	fclose(cf);
	assert_int_not_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_null(w);
	assert_non_null(strstr(err_msg(), "audit sink local: "));
	assert_non_null(strstr(err_msg(), "/ship/cursor.local: '12x' is not a whole number"));
	assert_int_equal(unlink(cpath), 0);
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_string_equal(audit_sink_name(w, 0), "up");
	assert_string_equal(audit_sink_name(w, 1), "local");
	assert_null(audit_sink_name(w, 2));
	assert_true(audit_shipper_running(w));
	/* Killed, the shipper is started again by its supervisor, which counts it; the client
	 * audits both (trail.shipper exit, restart). */
	audit_shipper_status ss;
	audit_shipper_status_get(w, &ss);
	assert_true(ss.configured && ss.supervised && ss.running && ss.pid > 0);
	assert_int_equal(ss.restarts, 0);
	assert_string_equal(ss.last_exit, "");
	int killed = ss.pid;
	assert_int_equal(kill(killed, SIGKILL), 0);
	for (int i = 0; i < 1000 && !(ss.restarts == 1 && ss.running); i++) {
		usleep(10000);
		audit_shipper_status_get(w, &ss);
	}
	assert_int_equal(ss.restarts, 1);
	assert_true(ss.running && ss.pid > 0 && ss.pid != killed);
	assert_string_equal(ss.last_exit, "killed by signal 9");
	assert_int_equal(ss.failures, 1);
	assert_false(ss.crash_loop);
	uint64_t cur = 1, head = 0, lag = 0;
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "\"type\":\"trail.shipper\""), 2);
	assert_int_equal(audit_sink_position(w, 1, &cur, &head), CUSTOS_OK);
	assert_int_equal(cur, 0);
	assert_true(head >= 2);
	assert_int_equal(audit_sink_lag(w, 1, &lag), CUSTOS_OK);
	assert_int_equal(lag, head);
	assert_int_equal(audit_sink_position(w, 2, &cur, &head), CUSTOS_ERR_INVAL);
	/* The supervisor itself killed (the shipper's parent): nothing restarts the shipper any
	 * more, which the status and the trail say (trail.shipper lost); the stop still works. */
	char stat_path[64];
	int sup = 0;
	snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", ss.pid);
	FILE *sf = fopen(stat_path, "r");
	assert_non_null(sf);
	assert_int_equal(fscanf(sf, "%*d (%*[^)]) %*c %d", &sup), 1);
	fclose(sf);
	assert_true(sup > 1 && sup != getpid());
	assert_int_equal(kill(sup, SIGKILL), 0);
	for (int i = 0; i < 1000 && ss.supervised; i++) {
		usleep(10000);
		audit_shipper_status_get(w, &ss);
	}
	assert_false(ss.supervised);
	assert_false(ss.running);
	assert_false(audit_shipper_running(w));
	assert_non_null(strstr(ss.last_error, "supervisor"));
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "\"action\":\"lost\""), 1);
	audit_sinks_reload(w); /* nothing to tell: no write to a pipe without reader */
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* audit.public_key must be the signing key's public half. */
static void test_public_key_checked(void **state)
{
	char dir[] = "/tmp/test_audit_pubXXXXXX", other[160], key[160], pub[160], opub[160];
	char cmd[256];
	audit_options o;
	audit_writer *w = NULL;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(audit_keygen(dir), CUSTOS_OK);
	snprintf(other, sizeof(other), "%s/other", dir);
	assert_int_equal(audit_keygen(other), CUSTOS_OK);
	snprintf(key, sizeof(key), "%s/audit.key", dir);
	snprintf(pub, sizeof(pub), "%s/audit.pub", dir);
	snprintf(opub, sizeof(opub), "%s/audit.pub", other);
	audit_options_default(&o);
	o.dir = dir;
	o.public_key = pub;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_INVAL); /* no signing key */
	o.signing_key = key;
	o.public_key = opub;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_ERR_CRYPTO);
	assert_non_null(strstr(err_msg(), "is not the public half of signing key"));
	o.public_key = pub;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_writer_roundtrip(void **state)
{
	char dir[] = "/tmp/test_audit_wXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_event ev;
	audit_verify_result r;

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.durability = AUDIT_DURABILITY_SYNC;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	for (int i = 0; i < 50; i++) {
		audit_event_begin(&ev, "request");
		audit_event_u64(&ev, "i", (uint64_t)i);
		assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
		assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
	}
	/* An unfinished event is refused. */
	audit_event_begin(&ev, "request");
	assert_int_equal(audit_submit(w, &ev), CUSTOS_ERR_INVAL);
	audit_stats st;
	audit_writer_stats(w, &st);
	assert_int_equal(st.submitted, 50);
	assert_true(st.durable_seq >= 52);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_true(r.ok);
	assert_int_equal(r.events, 53); /* start + checkpoint + 50 + shutdown checkpoint */
	assert_true(r.sealed);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static size_t count_in_dir(const char *dir, const char *needle)
{
	char **paths = NULL;
	size_t n = 0, hits = 0;
	assert_int_equal(audit_list_files(dir, &paths, &n), CUSTOS_OK);
	for (size_t i = 0; i < n; i++) {
		FILE *f = fopen(paths[i], "r");
		char line[AUDIT_MAX_LINE + 2];
		assert_non_null(f);
		while (fgets(line, sizeof(line), f) != NULL)
			if (strstr(line, needle) != NULL)
				hits++;
		fclose(f);
	}
	audit_paths_free(paths, n);
	return hits;
}

/* The sum of the integer member `key` over the events of type `type` in dir's log files. */
static uint64_t sum_in_dir(const char *dir, const char *type, const char *key)
{
	char **paths = NULL, t[96], k[96];
	size_t n = 0;
	uint64_t sum = 0;

	snprintf(t, sizeof(t), "\"type\":\"%s\"", type);
	snprintf(k, sizeof(k), "\"%s\":", key);
	assert_int_equal(audit_list_files(dir, &paths, &n), CUSTOS_OK);
	for (size_t i = 0; i < n; i++) {
		FILE *f = fopen(paths[i], "r");
		char line[AUDIT_MAX_LINE + 2];
		assert_non_null(f);
		while (fgets(line, sizeof(line), f) != NULL) {
			const char *at = strstr(line, t) ? strstr(line, k) : NULL;
			if (at != NULL)
				sum += strtoull(at + strlen(k), NULL, 10);
		}
		fclose(f);
	}
	audit_paths_free(paths, n);
	return sum;
}

/* A compromised worker hands the writer a forged checkpoint: the writer refuses to frame it
 * and records an audit.invalid event instead (never a silent drop). */
static void test_writer_refuses_forged_body(void **state)
{
	char dir[] = "/tmp/test_audit_fXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_event ev;
	audit_verify_result r;
	const char *forged = "{\"time\":\"t\",\"type\":\"checkpoint\",\"sig\":\"00\"}";

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	/* Bypass the builder the way memory corruption would. */
	audit_event_begin(&ev, "request");
	assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
	buf_reset(&ev.b);
	assert_int_equal(buf_append_cstr(&ev.b, forged), CUSTOS_OK);
	assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
	buf_reset(&ev.b);
	assert_int_equal(buf_append_cstr(&ev.b, "{\"time\":\"t\",\"type\":\"x\",\"seq\":1}"),
	                 CUSTOS_OK);
	assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "\"type\":\"audit.invalid\""), 2);
	assert_int_equal(count_in_dir(dir, "\"sig\":\"00\""), 0);
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_true(r.ok);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* Queue full in deny mode: with the writer stopped (SIGSTOP) the socket and then the queue
 * fill, submit fails with CUSTOS_ERR_AGAIN, and every accepted event still reaches the log. */
static void test_queue_full_deny(void **state)
{
	char dir[] = "/tmp/test_audit_qXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_event ev;
	uint64_t ok = 0, again = 0;

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.queue_events = 8;
	o.on_full = AUDIT_ON_FULL_DENY;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(kill(audit_writer_pid(w), SIGSTOP), 0);
	for (int i = 0; i < 5000; i++) {
		audit_event_begin(&ev, "request");
		audit_event_cstr(&ev, "reason", "padding padding padding padding padding padding");
		assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
		custos_err e = audit_submit(w, &ev);
		assert_true(e == CUSTOS_OK || e == CUSTOS_ERR_AGAIN);
		if (e == CUSTOS_OK)
			ok++;
		else
			again++;
	}
	assert_true(again > 0);
	audit_stats st;
	audit_writer_stats(w, &st);
	assert_int_equal(st.denied_full, again);
	assert_int_equal(kill(audit_writer_pid(w), SIGCONT), 0);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	/* The next event queued after the refusals is preceded by their report. */
	audit_event_begin(&ev, "request");
	assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
	assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
	ok++;
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), ok);
	/* Every refused event is counted once in the reports (one each time the queue took
	 * events again), and no request was refused (no slot was asked for). */
	assert_true(count_in_dir(dir, "\"type\":\"trail.queue_full\"") >= 1);
	assert_int_equal(sum_in_dir(dir, "trail.queue_full", "events_refused"), again);
	assert_int_equal(sum_in_dir(dir, "trail.queue_full", "requests_refused"), 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* Deny mode, slots (audit_reserve): with the writer stopped, slots are taken until they fill
 * the queue; an unreserved submit is then refused, while batches and a record whose events
 * hold slots are queued; a slot given back (audit_unreserve) can be taken again, and all are
 * free once the queue drains; block mode takes none. Every held event reaches the log. */
static void test_queue_reserve(void **state)
{
	char dir[] = "/tmp/test_audit_rXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_event ev;
	audit_rec r;
	audit_batch b;
	bool held = false;

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.queue_events = 8;
	o.on_full = AUDIT_ON_FULL_DENY;
	char cmd[256];
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(kill(audit_writer_pid(w), SIGSTOP), 0);
	/* Slots first: as many as the queue holds, then none. */
	int slots = 0;
	for (int i = 0; i < 100000 && audit_reserve(w, &held) == CUSTOS_OK; i++) {
		assert_true(held);
		slots++;
	}
	assert_int_equal(slots, 8);
	/* An unreserved event has no room beside 8 held slots, even with the queue empty. */
	audit_event_begin(&ev, "request");
	assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
	assert_int_equal(audit_submit(w, &ev), CUSTOS_ERR_AGAIN);
	/* One slot given back: one slot to take again. */
	audit_unreserve(w, 1);
	assert_int_equal(audit_reserve(w, &held), CUSTOS_OK);
	assert_true(held);
	assert_int_equal(audit_reserve(w, &held), CUSTOS_ERR_AGAIN);
	/* The 8 held events, in batches of 4 and as one record: queued whatever the socket says. */
	audit_batch_init(&b);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3 + round; i++) {
			audit_rec_begin(&r, "held");
			assert_int_equal(audit_rec_end(&r), CUSTOS_OK);
			assert_int_equal(audit_batch_add(&b, &r), CUSTOS_OK);
		}
		b.held = b.n;
		size_t acc = 0;
		assert_int_equal(audit_submit_batch(w, &b, &acc), CUSTOS_OK);
		assert_int_equal(acc, 3 + round);
		assert_int_equal(b.held, 0);
	}
	audit_rec_begin(&r, "held");
	assert_int_equal(audit_rec_end(&r), CUSTOS_OK);
	assert_int_equal(audit_submit_rec_held(w, &r), CUSTOS_OK);
	audit_batch_free(&b);
	assert_int_equal(kill(audit_writer_pid(w), SIGCONT), 0);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	/* Drained: every slot is free again. */
	for (slots = 0; slots < 100 && audit_reserve(w, &held) == CUSTOS_OK; slots++)
		;
	assert_int_equal(slots, 8);
	audit_unreserve(w, 8);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "\"type\":\"held\""), 8);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);

	/* Block mode: no slot is ever taken. */
	memcpy(dir + sizeof(dir) - 7, "XXXXXX", 6);
	assert_non_null(mkdtemp(dir));
	o.on_full = AUDIT_ON_FULL_BLOCK;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(audit_reserve(w, &held), CUSTOS_OK);
	assert_false(held);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void submit_n(audit_writer *w, int n)
{
	audit_event ev;
	for (int i = 0; i < n; i++) {
		audit_event_begin(&ev, "request");
		audit_event_u64(&ev, "i", (uint64_t)i);
		assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
		assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
	}
}

/* Batch mode's group commit: the writer holds what it received until the oldest record has
 * waited half the window (one linger) since it entered the client's queue, so groups the
 * client ships early (full) are committed together, and audit_flush commits at once. The
 * "not yet durable" checks are made only while the linger has not passed, so a slow machine
 * cannot fail them; the commit count after the flush holds whatever the timing. */
static void test_batch_group_commit(void **state)
{
	char dir[] = "/tmp/test_audit_gXXXXXX";
	audit_options o;
	audit_writer *w = NULL;
	audit_stats st0, st;

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.batch_window_ns = 1000000000ull; /* linger 500 ms */
	o.checkpoint_ns = 0;               /* no interval checkpoint commits to count */
	uint64_t linger = audit_linger_ns(&o);
	assert_int_equal(linger, 500000000ull);
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	submit_n(w, 1); /* flushed: the ack brings the writer's fsync count up to date */
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	audit_writer_stats(w, &st0);

	/* Three full groups (2048 events each) and some: shipped early, held by the writer. */
	uint64_t t0 = mono_ns();
	submit_n(w, 3 * 2048 + 100);
	usleep(100 * 1000);
	audit_writer_stats(w, &st);
	if (mono_ns() - t0 < linger - 50000000ull) {
		assert_int_equal(st.durable_seq, st0.durable_seq);
		assert_int_equal(st.fsyncs, st0.fsyncs);
	} else {
		print_message("group commit: machine too slow for the early check\n");
	}
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	audit_writer_stats(w, &st);
	assert_true(st.durable_seq >= st0.durable_seq + 3 * 2048 + 100);
	if (mono_ns() - t0 < linger)
		assert_int_equal(st.fsyncs, st0.fsyncs + 1); /* one commit for every group */

	/* One event, no flush: durable by itself after the linger, not before. */
	st0 = st;
	t0 = mono_ns();
	submit_n(w, 1);
	usleep(50 * 1000);
	audit_writer_stats(w, &st);
	if (mono_ns() - t0 < linger - 50000000ull)
		assert_int_equal(st.durable_seq, st0.durable_seq);
	for (int i = 0; i < 500 && st.durable_seq == st0.durable_seq; i++) {
		usleep(10 * 1000);
		audit_writer_stats(w, &st);
	}
	assert_int_equal(st.durable_seq, st0.durable_seq + 1);
	assert_true(mono_ns() - t0 >= linger);
	assert_int_equal(st.fsyncs, st0.fsyncs + 1);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), 3 * 2048 + 102);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* An interval checkpoint the disk refuses, with no record in flight (the writer's file size
 * limit, RLIMIT_FSIZE, stands in for a full or failing disk). The writer must fail closed
 * (producers are told), keep the chain where the disk has it, retry, and take records again
 * once the disk does: the log then verifies. Before, the chain moved past the refused
 * checkpoint, so the next record named a predecessor that was never written. */
static void test_checkpoint_write_failure(void **state)
{
	char dir[] = "/tmp/test_audit_cXXXXXX", path[256], name[64];
	audit_options o;
	audit_writer *w = NULL;
	audit_verify_result r;
	struct stat st;

	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.checkpoint_ns = 1000000000ull; /* the first interval checkpoint 1 s after the start */
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	uint64_t t0 = mono_ns();
	submit_n(w, 5);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	audit_file_name(1, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &st), 0);
	pid_t wp = (pid_t)audit_writer_pid(w);
	struct rlimit lim = { (rlim_t)st.st_size, RLIM_INFINITY };
	assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
	if (mono_ns() - t0 > 800000000ull) { /* too slow to beat the checkpoint: no test */
		lim.rlim_cur = RLIM_INFINITY;
		assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
		assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
		snprintf(path, sizeof(path), "rm -rf %s", dir);
		assert_int_equal(system(path), 0);
		skip();
	}
	/* The checkpoint comes due and is refused: the producers hear it. */
	for (int i = 0; i < 300 && audit_writer_ok(w); i++)
		usleep(10 * 1000);
	assert_false(audit_writer_ok(w));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, (uint64_t)lim.rlim_cur); /* nothing torn */
	/* Events submitted meanwhile are refused (the proxy answers 503), and counted. */
	for (int i = 0; i < 3; i++) {
		audit_event ev;
		audit_event_begin(&ev, "request");
		assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
		assert_int_equal(audit_submit(w, &ev), CUSTOS_ERR_IO);
	}
	/* The disk takes writes again: the retry (every 500 ms) succeeds. */
	lim.rlim_cur = RLIM_INFINITY;
	assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
	for (int i = 0; i < 300 && !audit_writer_ok(w); i++)
		usleep(10 * 1000);
	assert_true(audit_writer_ok(w));
	submit_n(w, 5);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_true(r.ok);
	assert_true(r.sealed);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), 10);
	assert_true(count_in_dir(dir, "\"reason\":\"interval\"") >= 1);
	/* The trail says where its gap is: one trail.outage, with the 3 refused events. */
	assert_int_equal(count_in_dir(dir, "\"type\":\"trail.outage\""), 1);
	assert_int_equal(count_in_dir(dir, "\"events_refused\":3,"), 1);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void watchdog_fired(int sig)
{
	static const char m[] =
	        "watchdog: the audit client blocked on a writer that cannot write\n";

	(void)sig;
	(void)!write(2, m, sizeof(m) - 1);
	_exit(1);
}

/* Arms a watchdog: the process fails (instead of hanging the test run) if the call it guards
 * has not returned within s seconds. alarm(0) disarms it. */
static void watchdog(unsigned s)
{
	signal(SIGALRM, watchdog_fired);
	alarm(s);
}

/* Whether this process's sender thread (custos-asend) sleeps in sendmsg: the socket has no
 * room for its next message (a sender that can go on never sleeps there). */
static bool sender_blocked(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	bool blocked = false;

	assert_non_null(d);
	while (!blocked && (de = readdir(d)) != NULL) {
		char path[300], text[256];
		long nr = -1;
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		bool sender = fgets(text, sizeof(text), f) != NULL &&
		              strncmp(text, "custos-asend", 12) == 0;
		fclose(f);
		if (!sender)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", de->d_name);
		f = fopen(path, "r");
		if (f != NULL && fscanf(f, "%ld", &nr) == 1 && nr == SYS_sendmsg) {
			char state = '?';
			fclose(f);
			snprintf(path, sizeof(path), "/proc/self/task/%s/stat", de->d_name);
			f = fopen(path, "r");
			/* pid (comm) state: the comm has no ')' (custos-asend). */
			if (f != NULL && fscanf(f, "%*d (%*[^)]) %c", &state) == 1)
				blocked = state == 'S';
		}
		if (f != NULL)
			fclose(f);
	}
	closedir(d);
	return blocked;
}

/* The client's end of its socket to the writer: this process's one SEQPACKET socket. */
static int client_socket(void)
{
	int found = -1;

	for (int fd = 3; fd < 1024; fd++) {
		int type = 0;
		socklen_t len = sizeof(type);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
		    type == SOCK_SEQPACKET) {
			assert_int_equal(found, -1);
			found = fd;
		}
	}
	assert_int_not_equal(found, -1);
	return found;
}

/* Fills what room the client's socket has left with commit requests (messages of no records,
 * as audit_flush sends), while the writer reads nothing. */
static void socket_fill(void)
{
	int fd = client_socket(), i = 0;
	struct audit_msg_hdr h = { AUDIT_MSG_BATCH, 0, 0, 0 };

	while (i < 100000 && send(fd, &h, sizeof(h), MSG_DONTWAIT | MSG_NOSIGNAL) == sizeof(h))
		i++;
	assert_true(i < 100000);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

#define BACKLOG_EVENTS 1200 /* of ~7 KiB: 8 MiB, past the writer's 4 MiB backlog and the socket */

/* Brings a batch-mode writer into the state of the audit_diskfull hang: the disk refuses
 * (RLIMIT_FSIZE stands in for it), the writer holds a full backlog and reads nothing more, the
 * sender sits in sendmsg with the rest of its last group, the queue is empty and the socket
 * takes no message at all. Returns the writer's pid with the file size limit set; 5 events
 * are durable before it. */
static pid_t writer_stuck_full(const char *dir, audit_writer **out)
{
	char path[256], name[64];
	static char pad[7001];
	audit_options o;
	audit_writer *w = NULL;
	audit_event ev;
	audit_stats st;
	struct stat fs;

	memset(pad, 'p', sizeof(pad) - 1);
	audit_options_default(&o);
	o.dir = dir;
	o.batch_window_ns = 1000000000ull; /* linger 500 ms: audit_flush asks for the commit */
	o.checkpoint_ns = 0;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	submit_n(w, 5);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	audit_file_name(1, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &fs), 0);
	pid_t wp = (pid_t)audit_writer_pid(w);
	struct rlimit lim = { (rlim_t)fs.st_size, RLIM_INFINITY };
	assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
	/* With the writer stopped, the sender fills the socket and blocks inside one group; the
	 * rest waits in the queue. Once it runs, the writer fails its first commit, reads on up to
	 * its backlog bound and stops reading, while the sender ships the whole queue as its last
	 * group: the queue is empty, the socket full. */
	assert_int_equal(kill(wp, SIGSTOP), 0);
	/* First a trickle, until the sender sleeps in sendmsg: its group then holds a few events
	 * only. Submitted in one go, a sender that a loaded machine let run late would have taken
	 * hundreds into one group, more than the writer's backlog takes: it would stay in that
	 * group with the rest queued behind it, not the state sought here. */
	int n = 0;
	for (int t = 0; !sender_blocked(); t++) {
		if (t == 30000)
			fail_msg("the sender never blocked on the stopped writer (%d events)", n);
		if (n < 200) {
			audit_event_begin(&ev, "request");
			audit_event_cstr(&ev, "reason", pad);
			assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
			assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
			n++;
		}
		usleep(1000);
	}
	for (; n < BACKLOG_EVENTS; n++) {
		audit_event_begin(&ev, "request");
		audit_event_cstr(&ev, "reason", pad);
		assert_int_equal(audit_event_end(&ev), CUSTOS_OK);
		assert_int_equal(audit_submit(w, &ev), CUSTOS_OK);
	}
	assert_int_equal(kill(wp, SIGCONT), 0);
	/* The writer reaches its bound: the sender stays asleep in sendmsg (a writer with room
	 * reads within milliseconds; seen asleep for 300 ms, it has none). */
	for (int i = 0, seen = 0; seen < 4; i++) {
		audit_writer_stats(w, &st);
		if (i == 300)
			fail_msg("no stuck writer: queued %zu, writer %s, sender %s", st.queued,
			         audit_writer_ok(w) ? "ok" : "failing",
			         sender_blocked() ? "blocked" : "running");
		bool stuck = st.queued == 0 && !audit_writer_ok(w) && sender_blocked();
		seen = stuck ? seen + 1 : 0;
		usleep(100 * 1000);
	}
	socket_fill(); /* the sender's large messages may wait where a header still fits */
	*out = w;
	return wp;
}

/* The audit_diskfull hang: audit_flush asked a lingering writer for the commit with a send()
 * that blocked for good, since a failing writer with a full backlog reads nothing. The flush
 * must fail closed instead; once the disk takes writes again the writer commits its backlog,
 * the client ships the rest, and every accepted event is in the log. */
static void test_flush_writer_full_backlog(void **state)
{
	char dir[] = "/tmp/test_audit_bXXXXXX";
	audit_writer *w = NULL;
	audit_verify_result r;

	assert_non_null(mkdtemp(dir));
	pid_t wp = writer_stuck_full(dir, &w);
	watchdog(30);
	assert_int_equal(audit_flush(w), CUSTOS_ERR_IO);
	alarm(0);
	/* Space comes back: the retry (every 500 ms) commits the backlog. */
	struct rlimit lim = { RLIM_INFINITY, RLIM_INFINITY };
	assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
	for (int i = 0; i < 1000 && !audit_writer_ok(w); i++)
		usleep(10 * 1000);
	assert_true(audit_writer_ok(w));
	watchdog(30);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	alarm(0);
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_true(r.ok);
	assert_true(r.sealed);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), 5 + BACKLOG_EVENTS);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* The disk never recovers: flush and stop both return with the error (stop names the last
 * durable seq), the log stays intact at what was durable. */
static void test_stop_writer_full_backlog(void **state)
{
	char dir[] = "/tmp/test_audit_sXXXXXX";
	audit_writer *w = NULL;
	audit_verify_result r;

	assert_non_null(mkdtemp(dir));
	(void)writer_stuck_full(dir, &w);
	watchdog(30);
	assert_int_equal(audit_flush(w), CUSTOS_ERR_IO);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_ERR_IO);
	alarm(0);
	assert_non_null(strstr(err_msg(), "stopped while failing"));
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, &(audit_verify_options){ .live = true }, &r),
	                 CUSTOS_OK);
	assert_true(r.ok);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), 5);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

#define LEADERS 96 /* sync producers with a 64 KiB batch each: 6 MiB in flight */
static char leader_pad[7001];

struct leader_job {
	audit_writer *w;
	custos_err e;
};

/* Fills a batch with records of ~7 KiB (as many as it takes); returns how many. */
static size_t big_batch(audit_batch *b)
{
	audit_rec r;
	size_t n = 0;

	memset(leader_pad, 'p', sizeof(leader_pad) - 1);
	for (;;) {
		audit_rec_begin(&r, "request");
		audit_rec_cstr(&r, "reason", leader_pad);
		if (audit_rec_end(&r) != CUSTOS_OK || audit_batch_add(b, &r) != CUSTOS_OK)
			return n;
		n++;
	}
}

static void *leader_submit(void *arg)
{
	struct leader_job *j = arg;
	audit_batch b;

	audit_batch_init(&b);
	(void)big_batch(&b);
	j->e = audit_submit_batch(j->w, &b, NULL);
	audit_batch_free(&b);
	return NULL;
}

/* Sync mode: the first producer to find nobody sending ships the group itself, and sent it with
 * a blocking sendmsg. With the writer failing on a full backlog that producer (a proxy worker,
 * on the request path) waited for good instead of failing closed. Here the socket is full
 * when the leader starts, and the other producers' batches (6 MiB) take the writer past its
 * backlog bound: every producer must get the error, and once the disk takes writes again
 * every record is written. */
static void test_sync_leader_writer_full_backlog(void **state)
{
	char dir[] = "/tmp/test_audit_lXXXXXX", path[256], name[64];
	audit_options o;
	audit_writer *w = NULL;
	audit_verify_result r;
	audit_batch probe;
	audit_stats st;
	struct stat fs;
	pthread_t tid[LEADERS];
	struct leader_job jobs[LEADERS];

	audit_batch_init(&probe);
	size_t per = big_batch(&probe);
	audit_batch_free(&probe);
	assert_true(per > 0);
	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.durability = AUDIT_DURABILITY_SYNC;
	o.checkpoint_ns = 0;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	submit_n(w, 5);
	audit_file_name(1, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &fs), 0);
	pid_t wp = (pid_t)audit_writer_pid(w);
	struct rlimit lim = { (rlim_t)fs.st_size, RLIM_INFINITY };
	assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
	assert_int_equal(kill(wp, SIGSTOP), 0);
	socket_fill();
	for (int i = 0; i < LEADERS; i++) {
		jobs[i] = (struct leader_job){ w, CUSTOS_OK };
		assert_int_equal(pthread_create(&tid[i], NULL, leader_submit, &jobs[i]), 0);
	}
	/* Every batch queued (one of them taken by the leader) before the writer runs again. */
	audit_writer_stats(w, &st);
	for (int i = 0; i < 3000 && st.submitted < 5 + LEADERS * per; i++) {
		usleep(10 * 1000);
		audit_writer_stats(w, &st);
	}
	assert_int_equal(st.submitted, 5 + LEADERS * per);
	assert_int_equal(kill(wp, SIGCONT), 0);
	watchdog(60);
	for (int i = 0; i < LEADERS; i++) {
		assert_int_equal(pthread_join(tid[i], NULL), 0);
		assert_int_equal(jobs[i].e, CUSTOS_ERR_IO);
	}
	assert_int_equal(audit_flush(w), CUSTOS_ERR_IO);
	alarm(0);
	lim.rlim_cur = RLIM_INFINITY;
	assert_int_equal(prlimit(wp, RLIMIT_FSIZE, &lim, NULL), 0);
	for (int i = 0; i < 1000 && !audit_writer_ok(w); i++)
		usleep(10 * 1000);
	assert_true(audit_writer_ok(w));
	watchdog(30);
	assert_int_equal(audit_flush(w), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	alarm(0);
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_true(r.ok);
	assert_true(r.sealed);
	assert_int_equal(count_in_dir(dir, "\"type\":\"request\""), 5 + LEADERS * per);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* A log written before checkpoint format 2: its format 1 signatures still verify, but a
 * format 1 shutdown checkpoint is no seal (its reason was never signed). */
static void test_verify_format1(void **state)
{
	char dir[] = "/tmp/test_audit_v1XXXXXX", path[256], body[512], sig[129], h1[65], h2[65];
	EVP_PKEY *priv = NULL;
	audit_verify_result r;
	buf b;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(audit_keygen(dir), CUSTOS_OK);
	snprintf(path, sizeof(path), "%s/audit.key", dir);
	assert_int_equal(audit_key_load_private(path, &priv), CUSTOS_OK);
	char kid[17];
	assert_int_equal(audit_key_id(priv, kid), CUSTOS_OK);
	buf_init(&b, 1 << 16);
	assert_int_equal(audit_line_build(&b, 1, S("\"time\":\"t\",\"type\":\"audit.start\""),
	                                  AUDIT_GENESIS_PREV, h1),
	                 CUSTOS_OK);
	assert_int_equal(audit_ckpt_sign_v1(priv, 1, h1, sig), CUSTOS_OK);
	snprintf(body, sizeof(body),
	         "\"time\":\"t\",\"type\":\"checkpoint\",\"reason\":\"shutdown\","
	         "\"signed_seq\":1,\"signed_hash\":\"%s\",\"key_id\":\"%s\",\"sig\":\"%s\"",
	         h1, kid, sig);
	assert_int_equal(audit_line_build(&b, 2, S(body), h1, h2), CUSTOS_OK);
	audit_file_name(1, body);
	snprintf(path, sizeof(path), "%s/%s", dir, body);
	assert_int_equal(file_write_atomic(path, buf_ptr(&b), buf_used(&b), 0600), CUSTOS_OK);
	buf_free(&b);
	snprintf(path, sizeof(path), "%s/audit.pub", dir);
	const char *paths[] = { dir }, *keys[] = { path };
	assert_int_equal(
	        audit_verify(paths, 1, &(audit_verify_options){ .pubkeys = keys, .npub = 1 }, &r),
	        CUSTOS_OK);
	assert_false(r.ok);
	assert_false(r.sealed);
	assert_int_equal(r.bad_line, 2);
	assert_non_null(strstr(r.what, "old format"));
	assert_int_equal(
	        audit_verify(paths, 1,
	                     &(audit_verify_options){ .pubkeys = keys, .npub = 1, .live = true },
	                     &r),
	        CUSTOS_OK);
	assert_true(r.ok);
	assert_int_equal(r.v1_checkpoints, 1);
	assert_int_equal(r.n_keys, 1);
	assert_int_equal(r.keys[0].checkpoints, 1);
	assert_int_equal(r.keys[0].last_seq, 1);
	EVP_PKEY_free(priv);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void read_text(const char *path, char *out, size_t n)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t got = fread(out, 1, n - 1, f);
	out[got] = '\0';
	fclose(f);
}

/* The writer keeps DIR/audit.head at its last durable checkpoint; a damaged one stops the next
 * start until the operator accepts the head. */
static void test_writer_anchor(void **state)
{
	char dir[] = "/tmp/test_audit_aXXXXXX", path[256], text[512], want[256];
	audit_options o;
	audit_writer *w = NULL;
	audit_verify_result r;

	assert_non_null(mkdtemp(dir));
	/* Run as root (custos up's supervisor after its proxy is gone), the writer leaves its
	 * files to the directory's owner, who must be able to start the next writer. */
	bool root = geteuid() == 0;
	if (root)
		assert_int_equal(chown(dir, 65534, 65534), 0);
	audit_options_default(&o);
	o.dir = dir;
	o.checkpoint_events = 10;
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	submit_n(w, 25);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	if (root) {
		struct stat st;
		snprintf(path, sizeof(path), "%s/audit.head", dir);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_uid, 65534);
		snprintf(path, sizeof(path), "%s/audit-00000000000000000001.jsonl", dir);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_uid, 65534);
	}
	/* start, start checkpoint, 25 records with two interval checkpoints, the seal: seq 30 */
	snprintf(path, sizeof(path), "%s/audit.head", dir);
	read_text(path, text, sizeof(text));
	snprintf(want, sizeof(want), "custos-audit-head/1 30 ");
	assert_true(strncmp(text, want, strlen(want)) == 0);
	assert_non_null(strstr(text, " audit-00000000000000000001.jsonl -\n"));
	assert_int_equal(count_in_dir(dir, "\"seq\":30,"), 1);
	/* A damaged anchor: the writer refuses; the operator accepts; the start says so. */
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("custos-audit-head/1 30 xyz\n", f);
	fclose(f);
	assert_int_not_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_non_null(strstr(err_msg(), "audit.head: malformed"));
	assert_non_null(strstr(err_msg(), "custos audit accept-head"));
	char report[2048];
	assert_int_equal(audit_accept_head(dir, report, sizeof(report)), CUSTOS_OK);
	assert_non_null(strstr(report, "accepted the log head at seq 30"));
	assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
	assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	assert_int_equal(count_in_dir(dir, "the operator accepted the head at seq 30"), 1);
	read_text(path, text, sizeof(text));
	assert_true(strncmp(text, "custos-audit-head/1 33 ", 23) == 0); /* recovery, start, seal */
	assert_int_equal(audit_accept_head(dir, report, sizeof(report)), CUSTOS_OK);
	assert_non_null(strstr(report, "nothing to accept"));
	const char *paths[] = { dir };
	assert_int_equal(audit_verify(paths, 1, NULL, &r), CUSTOS_OK);
	assert_true(r.ok);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* Cuts the log file path back to its first n lines. */
static void cut_lines(const char *path, int n)
{
	FILE *f = fopen(path, "r");
	long off = 0;
	int c, lines = 0;
	assert_non_null(f);
	while (lines < n && (c = fgetc(f)) != EOF) {
		off++;
		if (c == '\n')
			lines++;
	}
	fclose(f);
	assert_int_equal(lines, n);
	assert_int_equal(truncate(path, off), 0);
}

/* audit_verify checks that the trail reaches DIR/audit.head: a second run cut back to the first
 * run's shutdown seal chains and ends sealed, and only the anchor shows the cut; a damaged
 * anchor fails; no_head ignores it; head names a copy kept elsewhere. */
static void test_verify_anchor(void **state)
{
	char dir[] = "/tmp/test_audit_vaXXXXXX", path[256], head[256], copy[256];
	const char *paths[] = { dir };
	audit_options o;
	audit_writer *w = NULL;
	audit_verify_result r;
	audit_verify_options vo;

	(void)state;
	assert_non_null(mkdtemp(dir));
	audit_options_default(&o);
	o.dir = dir;
	o.checkpoint_events = 10;
	for (int run = 0; run < 2; run++) {
		assert_int_equal(audit_writer_start(&o, &w), CUSTOS_OK);
		submit_n(w, run == 0 ? 25 : 5);
		assert_int_equal(audit_writer_stop(w, 0), CUSTOS_OK);
	}
	/* run 1: seq 1..30 (sealed at 30); run 2: audit.start, start, 5, seal: 31..38 */
	memset(&vo, 0, sizeof(vo));
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_true(r.ok);
	assert_int_equal(r.heads, 1);
	assert_int_equal(r.head_seq, 38);
	snprintf(path, sizeof(path), "%s/audit-00000000000000000001.jsonl", dir);
	snprintf(head, sizeof(head), "%s/audit.head", dir);
	cut_lines(path, 30);
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_false(r.ok);
	assert_int_equal(r.bad_seq, 30);
	assert_int_equal(r.bad_line, 30);
	assert_non_null(strstr(r.what, "below the last signed checkpoint recorded in"));
	assert_non_null(strstr(r.what, "(seq 38, hash "));
	vo.live = true; /* a running writer has no seal, but never an end below its anchor */
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_false(r.ok);
	vo.live = false;
	vo.no_head = true;
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_true(r.ok);
	assert_true(r.sealed);
	assert_int_equal(r.heads, 0);
	/* The anchor kept elsewhere (here: moved out of the directory). */
	snprintf(copy, sizeof(copy), "%s.copy", dir);
	assert_int_equal(rename(head, copy), 0);
	memset(&vo, 0, sizeof(vo));
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_true(r.ok);
	vo.head = copy;
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_false(r.ok);
	assert_non_null(strstr(r.what, copy));
	vo.head = "/nonexistent/audit.head";
	assert_int_not_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	/* A damaged anchor fails verification, naming it; no_head verifies without it. */
	FILE *f = fopen(head, "w");
	assert_non_null(f);
	fputs("custos-audit-head/1 30\n", f);
	fclose(f);
	memset(&vo, 0, sizeof(vo));
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_false(r.ok);
	assert_int_equal(r.bad_line, 0);
	assert_string_equal(r.bad_file, head);
	assert_non_null(strstr(r.what, "malformed"));
	vo.no_head = true;
	assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
	assert_true(r.ok);
	/* An anchor at seq 30 (the last record now): with its hash and file it is reached; with
	 * another hash the log was rewritten; in another file, records were moved. */
	static char line[AUDIT_MAX_LINE + 2];
	f = fopen(path, "r");
	assert_non_null(f);
	for (int i = 0; i < 30; i++)
		assert_non_null(fgets(line, sizeof(line), f));
	fclose(f);
	const char *hash = line + strlen(line) - 3 - AUDIT_HASH_HEX; /* ...,"hash":"<H>"}\n */
	for (size_t i = 0; i < 3; i++) {
		char body[256];
		snprintf(body, sizeof(body), "custos-audit-head/1 30 %.64s %s -\n", hash,
		         i == 2 ? "audit-00000000000000000030.jsonl"
		                : "audit-00000000000000000001.jsonl");
		if (i == 1) /* the hash's last digit changed */
			body[23 + 63] = hash[63] == 'a' ? 'b' : 'a';
		f = fopen(head, "w");
		assert_non_null(f);
		fputs(body, f);
		fclose(f);
		memset(&vo, 0, sizeof(vo));
		assert_int_equal(audit_verify(paths, 1, &vo, &r), CUSTOS_OK);
		assert_int_equal(r.ok, i == 0);
		if (i == 0)
			assert_int_equal(r.head_seq, 30);
		else
			assert_non_null(
			        strstr(r.what, i == 1 ? "the log was rewritten"
			                              : "files were renamed or records moved"));
	}
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir, copy);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_builder),
		cmocka_unit_test(test_event_too_big),
		cmocka_unit_test(test_jscan),
		cmocka_unit_test(test_body_check),
		cmocka_unit_test(test_body_check_canonical),
		cmocka_unit_test(test_chain),
		cmocka_unit_test(test_verify_canonical),
		cmocka_unit_test(test_file_names),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_render_cef),
		cmocka_unit_test(test_render_leef),
		cmocka_unit_test(test_render_profile_hash),
		cmocka_unit_test(test_render_cef_act),
		cmocka_unit_test(test_render_severity),
		cmocka_unit_test(test_render_via),
		cmocka_unit_test(test_render_via_tlvs),
		cmocka_unit_test(test_render_5424),
		cmocka_unit_test(test_format_parse),
		cmocka_unit_test(test_writer_refuses),
		cmocka_unit_test(test_sink_setup_refused),
		cmocka_unit_test(test_public_key_checked),
		cmocka_unit_test(test_writer_roundtrip),
		cmocka_unit_test(test_writer_refuses_forged_body),
		cmocka_unit_test(test_queue_full_deny),
		cmocka_unit_test(test_queue_reserve),
		cmocka_unit_test(test_batch_group_commit),
		cmocka_unit_test(test_checkpoint_write_failure),
		cmocka_unit_test(test_flush_writer_full_backlog),
		cmocka_unit_test(test_stop_writer_full_backlog),
		cmocka_unit_test(test_sync_leader_writer_full_backlog),
		cmocka_unit_test(test_verify_format1),
		cmocka_unit_test(test_writer_anchor),
		cmocka_unit_test(test_verify_anchor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
