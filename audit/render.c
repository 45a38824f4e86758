/*
 * Renderings of a log line for SIEMs: CEF 0 (ArcSight), LEEF 2.0 (QRadar) and RFC 5424
 * syslog. Each format has its own escaping rules; values come from the JSON line (unescaped
 * first) and never carry raw CR/LF or the format's delimiters.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "audit_int.h"
#include "custos/version.h"

#define RENDER_FIELD_MAX AUDIT_MAX_LINE

custos_err audit_format_parse(const char *s, audit_format *out)
{
	static const char *const names[] = { "json", "cef", "leef", "rfc5424" };
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(names); i++)
		if (s != NULL && strcmp(s, names[i]) == 0) {
			*out = (audit_format)i;
			return CUSTOS_OK;
		}
	return err_set(CUSTOS_ERR_INVAL, "unknown format '%s' (json, cef, leef, rfc5424)",
	               s ? s : "");
}

/* The value of a top-level member as text: strings unescaped, arrays of strings joined by
 * ',', other values raw. Empty when absent. */
static custos_err field(span line, const char *key, buf *out)
{
	span v;
	char one[64];

	buf_reset(out);
	/* "a|b": the first of the names present (producers name a few things differently). */
	for (const char *k = key;;) {
		const char *bar = strchr(k, '|');
		size_t n = bar ? (size_t)(bar - k) : strlen(k);
		if (n >= sizeof(one))
			return CUSTOS_OK;
		memcpy(one, k, n);
		one[n] = '\0';
		if (ajson_get(line, one, &v) == CUSTOS_OK)
			break;
		if (bar == NULL)
			return CUSTOS_OK;
		k = bar + 1;
	}
	if (v.len > 0 && v.ptr[0] == '"')
		return ajson_unescape(v, out);
	if (v.len > 0 && v.ptr[0] == '[') {
		/* Walk an array of scalars by wrapping it as an object {"0":...}: simpler to
		 * scan elements directly. */
		size_t i = 1;
		bool firstel = true;
		while (i < v.len) {
			while (i < v.len && (v.ptr[i] == ',' || v.ptr[i] == ' '))
				i++;
			if (i >= v.len || v.ptr[i] == ']')
				break;
			size_t st = i;
			if (v.ptr[i] == '"') {
				i++;
				while (i < v.len && v.ptr[i] != '"')
					i += v.ptr[i] == '\\' ? 2 : 1;
				i++;
				if (!firstel)
					GUARD(buf_append_byte(out, ','));
				GUARD(ajson_unescape(span_of(v.ptr + st, i - st), out));
			} else {
				int depth = 0;
				while (i < v.len &&
				       (depth > 0 || (v.ptr[i] != ',' && v.ptr[i] != ']'))) {
					if (v.ptr[i] == '{' || v.ptr[i] == '[')
						depth++;
					else if (v.ptr[i] == '}' || v.ptr[i] == ']')
						depth--;
					else if (v.ptr[i] == '"') {
						i++;
						while (i < v.len && v.ptr[i] != '"')
							i += v.ptr[i] == '\\' ? 2 : 1;
					}
					i++;
				}
				if (!firstel)
					GUARD(buf_append_byte(out, ','));
				GUARD(buf_append(out, v.ptr + st, i - st));
			}
			firstel = false;
		}
		return CUSTOS_OK;
	}
	return buf_append_span(out, v);
}

/* findings [{"type":"x","count":2},...] as "x:2,y:1". */
static custos_err findings_text(span line, buf *out)
{
	span v, k, val;
	size_t i = 1;

	buf_reset(out);
	if (ajson_get(line, "findings", &v) != CUSTOS_OK || v.len < 2 || v.ptr[0] != '[')
		return CUSTOS_OK;
	while (i < v.len) {
		while (i < v.len && (v.ptr[i] == ',' || v.ptr[i] == ' '))
			i++;
		if (i >= v.len || v.ptr[i] != '{')
			break;
		size_t st = i, pos = 0;
		int depth = 0;
		for (; i < v.len; i++) {
			if (v.ptr[i] == '"') {
				i++;
				while (i < v.len && v.ptr[i] != '"')
					i += v.ptr[i] == '\\' ? 2 : 1;
			} else if (v.ptr[i] == '{')
				depth++;
			else if (v.ptr[i] == '}' && --depth == 0) {
				i++;
				break;
			}
		}
		span obj = span_of(v.ptr + st, i - st);
		span type = span_of("", 0), count = span_of("0", 1);
		while (ajson_next(obj, &pos, &k, &val) == CUSTOS_OK) {
			if (span_eq_cstr(k, "type"))
				type = val;
			else if (span_eq_cstr(k, "count"))
				count = val;
		}
		if (buf_used(out) > 0)
			GUARD(buf_append_byte(out, ','));
		if (type.len >= 2 && type.ptr[0] == '"')
			GUARD(ajson_unescape(type, out));
		GUARD(buf_append_byte(out, ':'));
		GUARD(buf_append_span(out, count));
	}
	return CUSTOS_OK;
}

enum esc { ESC_CEF_HDR, ESC_CEF_EXT, ESC_LEEF_HDR, ESC_LEEF_VAL, ESC_SD };

static custos_err put_escaped(buf *out, span s, enum esc how)
{
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		const char *rep = NULL;
		switch (how) {
		case ESC_CEF_HDR: /* pipes and backslashes escaped; no line breaks in a header */
			if (c == '|')
				rep = "\\|";
			else if (c == '\\')
				rep = "\\\\";
			else if (c == '\r' || c == '\n')
				rep = " ";
			break;
		case ESC_CEF_EXT: /* equals and backslashes escaped, CR/LF as \r \n */
			if (c == '=')
				rep = "\\=";
			else if (c == '\\')
				rep = "\\\\";
			else if (c == '\r')
				rep = "\\r";
			else if (c == '\n')
				rep = "\\n";
			break;
		case ESC_LEEF_HDR:
			if (c == '|')
				rep = "\\|";
			else if (c == '\\')
				rep = "\\\\";
			else if (c == '\r' || c == '\n' || c == '\t')
				rep = " ";
			break;
		case ESC_LEEF_VAL: /* the tab delimiter and line breaks never appear raw */
			if (c == '\t')
				rep = "\\t";
			else if (c == '\\')
				rep = "\\\\";
			else if (c == '\r')
				rep = "\\r";
			else if (c == '\n')
				rep = "\\n";
			break;
		case ESC_SD: /* RFC 5424 PARAM-VALUE: '"', '\' and ']' escaped */
			if (c == '"')
				rep = "\\\"";
			else if (c == '\\')
				rep = "\\\\";
			else if (c == ']')
				rep = "\\]";
			break;
		}
		if (rep != NULL)
			GUARD(buf_append_cstr(out, rep));
		else if ((unsigned char)c < 0x20 || c == 0x7f)
			GUARD(buf_append_byte(out, ' '));
		else
			GUARD(buf_append_byte(out, (uint8_t)c));
	}
	return CUSTOS_OK;
}

/* The raised severity (docs/AUDIT.md section 7): a refusal (every `deny`, the rejects
 * included), an enforcement hit in a process sandbox (`sandbox.process` with action
 * `violation`, `oom` or `limit`: seccomp, Landlock, cgroup), any `privsep` event (a call the
 * proxy's filter refused, or one of the two processes lost), and what says the trail itself
 * lost or refused something (`audit.invalid`, `trail.outage`, `trail.queue_full`). */
static bool is_alarming(span line, span type, span decision)
{
	static const char *const types[] = { "privsep", "audit.invalid", "trail.outage",
		                             "trail.queue_full", "trail.shipper" };
	static const char *const sandbox_actions[] = { "\"violation\"", "\"oom\"", "\"limit\"" };
	span v;

	if (span_eq_cstr(decision, "deny"))
		return true;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(types); i++)
		if (span_eq_cstr(type, types[i]))
			return true;
	if (!span_eq_cstr(type, "sandbox.process") || ajson_get(line, "action", &v) != CUSTOS_OK)
		return false;
	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(sandbox_actions); i++)
		if (span_eq_cstr(v, sandbox_actions[i]))
			return true;
	return false;
}

struct ext_map {
	const char *json;  /* member of the line */
	const char *key;   /* CEF or LEEF key */
	const char *label; /* CEF custom label, or NULL */
};

static const struct ext_map cef_map[] = {
	{ "seq", "cn1", "seq" },
	{ "request_id", "externalId", NULL },
	{ "principal", "suser", NULL },
	{ "src_ip", "src", NULL },
	{ "method", "requestMethod", NULL }, /* an HTTP method only, as CEF defines the key */
	{ "resource|path", "request", NULL },
	{ "host", "dhost", NULL },
	/* What custos did: the decision, else (lifecycle, reload, privsep) the action. */
	{ "decision|action", "act", NULL },
	{ "reason", "reason", NULL },
	{ "rule_ids|rules", "cs1", "rule_ids" },
	{ "model", "cs2", "model" },
	{ "data_source", "cs3", "data_source" },
	{ "classification", "cs4", "classification" },
	{ "policy_hash", "cs5", "policy_hash" },
	{ "sandbox_profile_hash|profile_hash|profile_sha256", "flexString1",
	  "sandbox_profile_hash" },
	{ "status", "cn2", "status" },
	{ "bytes_in|bytes_up", "in", NULL },
	{ "bytes_out|bytes_down", "out", NULL },
	{ "tokens_in|prompt_tokens", "cn3", "tokens_in" },
	{ "sandbox", "flexString2", "sandbox" },
	{ "hash", "fileHash", NULL },
};

static const struct ext_map leef_map[] = {
	{ "seq", "seq", NULL },
	{ "type", "cat", NULL },
	{ "request_id", "requestId", NULL },
	{ "principal", "usrName", NULL },
	{ "src_ip", "src", NULL },
	{ "remote", "remote", NULL },
	{ "action|method", "action", NULL },
	{ "resource|path", "resource", NULL },
	{ "host", "dstHost", NULL },
	{ "decision", "decision", NULL },
	{ "reason", "reason", NULL },
	{ "rule_ids|rules", "ruleIds", NULL },
	{ "model", "model", NULL },
	{ "data_source", "dataSource", NULL },
	{ "classification", "classification", NULL },
	{ "policy_hash", "policyHash", NULL },
	{ "sandbox_profile_hash|profile_hash|profile_sha256", "sandboxProfileHash", NULL },
	{ "status", "status", NULL },
	{ "bytes_in|bytes_up", "srcBytes", NULL },
	{ "bytes_out|bytes_down", "dstBytes", NULL },
	{ "tokens_in|prompt_tokens", "tokensIn", NULL },
	{ "tokens_out|completion_tokens", "tokensOut", NULL },
	{ "sandbox", "sandbox", NULL },
	{ "request_body_sha256", "requestBodySha256", NULL },
	{ "request_body_forwarded_sha256", "requestBodyForwardedSha256", NULL },
	{ "response_body_sha256", "responseBodySha256", NULL },
	{ "hash", "recordHash", NULL },
};

/* via (the load balancer that sent a PROXY header) as the proxy writes it, "ip:port" or
 * "[ipv6]:port", split into an address inet_pton takes and a port of 1-65535. False for any
 * other text: the typed keys it goes to (CEF sourceTranslatedAddress/Port, LEEF
 * srcPostNAT/srcPostNATPort) never get a value a SIEM would refuse to parse. */
static bool via_split(span v, char ip[INET6_ADDRSTRLEN], unsigned *port)
{
	const char *colon = NULL;
	unsigned char a[16];

	for (size_t i = 0; i < v.len; i++)
		if (v.ptr[i] == ':')
			colon = v.ptr + i;
	if (colon == NULL)
		return false;
	size_t alen = (size_t)(colon - v.ptr), plen = v.len - alen - 1;
	const char *addr = v.ptr;
	bool six = alen >= 2 && addr[0] == '[' && addr[alen - 1] == ']';
	if (six) {
		addr++;
		alen -= 2;
	}
	if (alen == 0 || alen >= INET6_ADDRSTRLEN || plen == 0 || plen > 5)
		return false;
	memcpy(ip, addr, alen);
	ip[alen] = '\0';
	if (inet_pton(six ? AF_INET6 : AF_INET, ip, a) != 1)
		return false;
	*port = 0;
	for (size_t i = 0; i < plen; i++) {
		char c = colon[1 + i];
		if (c < '0' || c > '9')
			return false;
		*port = *port * 10 + (unsigned)(c - '0');
	}
	return *port >= 1 && *port <= 65535;
}

/* " addr_key=IP port_key=PORT" (sep ' ') or tab-separated, when the line's member name (via, or
 * remote) is a well-formed "ip:port"; nothing otherwise (remote "unix", a forged value). The
 * address and port are checked text: no escaping needed. tmp is left holding the member's
 * text (empty when absent). */
static custos_err put_endpoint(span line, const char *name, buf *out, buf *tmp, char sep,
                               const char *addr_key, const char *port_key)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned port;

	GUARD(field(line, name, tmp));
	if (!via_split(buf_span(tmp), ip, &port))
		return CUSTOS_OK;
	return buf_printf(out, "%c%s=%s%c%s=%u", sep, addr_key, ip, sep, port_key, port);
}

/* What the balancer's PROXY v2 header said besides the client, after put_endpoint(via) left
 * via's text in tmp: looked for only in a record with a via (the proxy writes them only
 * beside one), so that no other record pays a lookup. The authority, the host name the client
 * asked the balancer for, is the destination host (host_key, CEF dhost, LEEF dstHost) unless
 * the record names its own host; the unique id goes to uid_key (LEEF only: NULL for CEF,
 * whose dictionary has no key for it and whose six custom strings are taken). */
static custos_err put_via_tlvs(span line, buf *out, buf *tmp, char sep, enum esc how,
                               const char *host_key, const char *uid_key)
{
	if (buf_used(tmp) == 0)
		return CUSTOS_OK;
	GUARD(field(line, "host", tmp));
	if (buf_used(tmp) == 0) {
		GUARD(field(line, "via_authority", tmp));
		if (buf_used(tmp) > 0) {
			GUARD(buf_printf(out, "%c%s=", sep, host_key));
			GUARD(put_escaped(out, buf_span(tmp), how));
		}
	}
	if (uid_key == NULL)
		return CUSTOS_OK;
	GUARD(field(line, "via_unique_id", tmp));
	if (buf_used(tmp) == 0)
		return CUSTOS_OK;
	GUARD(buf_printf(out, "%c%s=", sep, uid_key));
	return put_escaped(out, buf_span(tmp), how);
}

/* The client: src_ip when a record has it (mapped with the table), else the proxy's remote
 * split into the typed source address and port keys. */
static custos_err put_source(span line, buf *out, buf *tmp, char sep, const char *addr_key,
                             const char *port_key)
{
	GUARD(field(line, "src_ip", tmp));
	if (buf_used(tmp) > 0)
		return CUSTOS_OK;
	return put_endpoint(line, "remote", out, tmp, sep, addr_key, port_key);
}

static custos_err render_cef(span line, buf *out, buf *tmp)
{
	buf type, dec;
	uint64_t ns = 0;
	custos_err e;

	buf_init(&type, RENDER_FIELD_MAX);
	buf_init(&dec, RENDER_FIELD_MAX);
	e = field(line, "type", &type);
	if (e == CUSTOS_OK)
		e = field(line, "decision", &dec);
	if (e == CUSTOS_OK)
		e = field(line, "time", tmp);
	if (e == CUSTOS_OK && tm_parse_rfc3339(buf_span(tmp), &ns) != CUSTOS_OK)
		e = err_set(CUSTOS_ERR_PARSE, "bad time");
	if (e != CUSTOS_OK)
		goto out;
	e = buf_printf(out, "CEF:0|custos|custos|%s|", CUSTOS_VERSION);
	if (e == CUSTOS_OK)
		e = put_escaped(out, buf_span(&type), ESC_CEF_HDR);
	if (e == CUSTOS_OK)
		e = buf_append_byte(out, '|');
	if (e == CUSTOS_OK)
		e = put_escaped(out, buf_span(&type), ESC_CEF_HDR);
	if (e == CUSTOS_OK && buf_used(&dec) > 0) {
		e = buf_append_byte(out, ' ');
		if (e == CUSTOS_OK)
			e = put_escaped(out, buf_span(&dec), ESC_CEF_HDR);
	}
	if (e == CUSTOS_OK)
		e = buf_printf(out, "|%d|rt=%llu",
		               is_alarming(line, buf_span(&type), buf_span(&dec)) ? 7 : 3,
		               (unsigned long long)(ns / 1000000));
	for (size_t i = 0; e == CUSTOS_OK && i < CUSTOS_ARRAY_LEN(cef_map); i++) {
		e = field(line, cef_map[i].json, tmp);
		if (e != CUSTOS_OK || buf_used(tmp) == 0)
			continue;
		e = buf_printf(out, " %s=", cef_map[i].key);
		if (e == CUSTOS_OK)
			e = put_escaped(out, buf_span(tmp), ESC_CEF_EXT);
		if (e == CUSTOS_OK && cef_map[i].label != NULL)
			e = buf_printf(out, " %sLabel=%s", cef_map[i].key, cef_map[i].label);
	}
	/* The client is the source (src, spt); the balancer stands where CEF's source NAT would:
	 * the connection's source after translation. */
	if (e == CUSTOS_OK)
		e = put_source(line, out, tmp, ' ', "src", "spt");
	if (e == CUSTOS_OK)
		e = put_endpoint(line, "via", out, tmp, ' ', "sourceTranslatedAddress",
		                 "sourceTranslatedPort");
	if (e == CUSTOS_OK)
		e = put_via_tlvs(line, out, tmp, ' ', ESC_CEF_EXT, "dhost", NULL);
	if (e == CUSTOS_OK)
		e = findings_text(line, tmp);
	if (e == CUSTOS_OK && buf_used(tmp) > 0) {
		e = buf_append_cstr(out, " cs6=");
		if (e == CUSTOS_OK)
			e = put_escaped(out, buf_span(tmp), ESC_CEF_EXT);
		if (e == CUSTOS_OK)
			e = buf_append_cstr(out, " cs6Label=findings");
	}
out:
	buf_free(&type);
	buf_free(&dec);
	return e;
}

static custos_err render_leef(span line, buf *out, buf *tmp)
{
	buf type, dec;
	custos_err e;

	buf_init(&type, RENDER_FIELD_MAX);
	buf_init(&dec, RENDER_FIELD_MAX);
	e = field(line, "type", &type);
	if (e == CUSTOS_OK)
		e = field(line, "decision", &dec);
	if (e == CUSTOS_OK)
		e = buf_printf(out, "LEEF:2.0|custos|custos|%s|", CUSTOS_VERSION);
	if (e == CUSTOS_OK)
		e = put_escaped(out, buf_span(&type), ESC_LEEF_HDR);
	/* LEEF 2.0's sixth header field names the attribute delimiter: x09 is tab. */
	if (e == CUSTOS_OK)
		e = buf_printf(out, "|x09|sev=%d",
		               is_alarming(line, buf_span(&type), buf_span(&dec)) ? 7 : 3);
	if (e == CUSTOS_OK)
		e = field(line, "time", tmp);
	uint64_t ns;
	char ts[TM_RFC3339_LEN];
	if (e == CUSTOS_OK && tm_parse_rfc3339(buf_span(tmp), &ns) == CUSTOS_OK) {
		/* Re-rendered from the parsed time, never copied: a forged time string must not
		 * carry a delimiter or line break. yyyy-MM-dd'T'HH:mm:ss.SSS then Z. */
		e = buf_printf(out, "\tdevTime=%.23sZ\tdevTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSX",
		               tm_rfc3339(ns, ts));
	}
	for (size_t i = 0; e == CUSTOS_OK && i < CUSTOS_ARRAY_LEN(leef_map); i++) {
		e = field(line, leef_map[i].json, tmp);
		if (e != CUSTOS_OK || buf_used(tmp) == 0)
			continue;
		e = buf_printf(out, "\t%s=", leef_map[i].key);
		if (e == CUSTOS_OK)
			e = put_escaped(out, buf_span(tmp), ESC_LEEF_VAL);
	}
	if (e == CUSTOS_OK)
		e = put_source(line, out, tmp, '\t', "src", "srcPort");
	if (e == CUSTOS_OK)
		e = put_endpoint(line, "via", out, tmp, '\t', "srcPostNAT", "srcPostNATPort");
	if (e == CUSTOS_OK)
		e = put_via_tlvs(line, out, tmp, '\t', ESC_LEEF_VAL, "dstHost", "viaUniqueId");
	if (e == CUSTOS_OK)
		e = findings_text(line, tmp);
	if (e == CUSTOS_OK && buf_used(tmp) > 0) {
		e = buf_append_cstr(out, "\tfindings=");
		if (e == CUSTOS_OK)
			e = put_escaped(out, buf_span(tmp), ESC_LEEF_VAL);
	}
	buf_free(&type);
	buf_free(&dec);
	return e;
}

static custos_err put_token(buf *out, const char *s, size_t max)
{
	size_t n = 0;
	if (s == NULL || s[0] == '\0')
		return buf_append_byte(out, '-');
	for (; s[n] && n < max; n++) {
		unsigned char c = (unsigned char)s[n];
		GUARD(buf_append_byte(out, (c > 32 && c < 127) ? c : '_'));
	}
	return CUSTOS_OK;
}

static custos_err render_5424(span line, const audit_render_ctx *ctx, buf *out, buf *tmp)
{
	buf type, dec, seq;
	custos_err e;
	int fac = ctx && ctx->facility > 0 && ctx->facility < 24 ? ctx->facility : 13;

	buf_init(&type, RENDER_FIELD_MAX);
	buf_init(&dec, RENDER_FIELD_MAX);
	buf_init(&seq, 64);
	e = field(line, "type", &type);
	if (e == CUSTOS_OK)
		e = field(line, "decision", &dec);
	if (e == CUSTOS_OK)
		e = field(line, "seq", &seq);
	if (e == CUSTOS_OK)
		e = field(line, "time", tmp);
	if (e != CUSTOS_OK)
		goto out;
	int sev = is_alarming(line, buf_span(&type), buf_span(&dec)) ? 4 : 6;
	e = buf_printf(out, "<%d>1 ", fac * 8 + sev);
	/* TIME-SECFRAC allows at most 6 digits: our nanoseconds are cut to microseconds. The
	 * time is re-rendered from its parsed value, never copied. */
	uint64_t ns;
	char ts[TM_RFC3339_LEN];
	if (e == CUSTOS_OK && tm_parse_rfc3339(buf_span(tmp), &ns) == CUSTOS_OK)
		e = buf_printf(out, "%.26sZ ", tm_rfc3339(ns, ts));
	else if (e == CUSTOS_OK)
		e = buf_append_cstr(out, "- ");
	if (e == CUSTOS_OK)
		e = put_token(out, ctx ? ctx->hostname : NULL, 255);
	if (e == CUSTOS_OK)
		e = buf_append_byte(out, ' ');
	if (e == CUSTOS_OK)
		e = put_token(out, ctx && ctx->app_name ? ctx->app_name : "custos", 48);
	if (e == CUSTOS_OK)
		e = buf_append_cstr(out, " - ");
	if (e == CUSTOS_OK)
		e = buf_cstr(&type, &(const char *){ NULL });
	if (e == CUSTOS_OK)
		e = put_token(out, (const char *)buf_ptr(&type), 32);
	if (e == CUSTOS_OK)
		e = buf_printf(out,
		               " [origin software=\"custos\" swVersion=\"%s\"][custos@32473 seq=\"",
		               CUSTOS_VERSION);
	if (e == CUSTOS_OK)
		e = put_escaped(out, buf_span(&seq), ESC_SD);
	if (e == CUSTOS_OK)
		e = buf_append_cstr(out, "\"] ");
	if (e != CUSTOS_OK)
		goto out;
	if (ctx && ctx->inner == AUDIT_FMT_CEF)
		e = render_cef(line, out, tmp);
	else if (ctx && ctx->inner == AUDIT_FMT_LEEF)
		e = render_leef(line, out, tmp);
	else
		e = buf_append_span(out, line);
out:
	buf_free(&type);
	buf_free(&dec);
	buf_free(&seq);
	return e;
}

custos_err audit_render(audit_format f, span line, const audit_render_ctx *ctx, buf *out)
{
	buf tmp;
	custos_err e;

	ENSURE(line.len <= AUDIT_MAX_LINE, CUSTOS_ERR_LIMIT, "record over %d bytes",
	       AUDIT_MAX_LINE);
	GUARD(ajson_validate(line));
	if (f == AUDIT_FMT_JSON)
		return buf_append_span(out, line);
	buf_init(&tmp, RENDER_FIELD_MAX);
	switch (f) {
	case AUDIT_FMT_CEF:
		e = render_cef(line, out, &tmp);
		break;
	case AUDIT_FMT_LEEF:
		e = render_leef(line, out, &tmp);
		break;
	default:
		e = render_5424(line, ctx, out, &tmp);
		break;
	}
	buf_free(&tmp);
	return e;
}

custos_err audit_export_file(const char *path, audit_format fmt, const audit_render_ctx *ctx,
                             void *f)
{
	audit_reader r;
	buf out;
	span line;
	uint64_t off;
	custos_err e;

	GUARD(audit_reader_open(&r, path));
	buf_init(&out, 4 * AUDIT_MAX_LINE);
	while ((e = audit_reader_next(&r, &line, &off)) == CUSTOS_OK) {
		buf_reset(&out);
		e = audit_render(fmt, line, ctx, &out);
		if (e == CUSTOS_OK)
			e = buf_append_byte(&out, '\n');
		if (e != CUSTOS_OK) {
			err_wrap(e, "%s:%llu", path, (unsigned long long)r.line_no);
			break;
		}
		if (fwrite(buf_ptr(&out), 1, buf_used(&out), f) != buf_used(&out)) {
			e = err_sys("writing the export");
			break;
		}
	}
	if (e == CUSTOS_ERR_NOTFOUND)
		e = CUSTOS_OK;
	audit_reader_close(&r);
	buf_free(&out);
	return e;
}
