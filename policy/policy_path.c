/*
 * policy paths: one spelling per request path, so that "/v1/%66iles" and "/v1//files" meet
 * the conditions written for "/v1/files" (the proxy's routing and the upstream decode them
 * so). Paths that only a guess could normalise are refused, and a refused path is denied.
 */
#include "policy_int.h"

/* RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool unreserved(unsigned c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* pchar written as itself: unreserved, sub-delims, ':' and '@' */
static bool pchar_plain(unsigned c)
{
	return unreserved(c) || c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' ||
	       c == ')' || c == '*' || c == '+' || c == ',' || c == ';' || c == '=' || c == ':' ||
	       c == '@';
}

#define REFUSE(text)                                                                               \
	do {                                                                                       \
		*why = (text);                                                                     \
		return false;                                                                      \
	} while (0)

bool policy_path_normalize(span in, char *out, size_t cap, size_t *olen, const char **why)
{
	return ppath_normalize(in, false, out, cap, olen, why);
}

bool ppath_normalize(span in, bool glob, char *out, size_t cap, size_t *olen, const char **why)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)in.ptr;
	size_t n = in.len, i = 0, o = 0;

	*olen = 0;
	if (n == 0)
		return true;
	if (s[0] != '/')
		REFUSE("it does not start with '/'");
	while (i < n) {
		/* at a run of '/': one separator, then a segment */
		while (i < n && s[i] == '/')
			i++;
		if (o == cap)
			REFUSE("it is longer than the limit");
		out[o++] = '/';
		size_t seg = o;
		bool query = false;
		for (; i < n && s[i] != '/'; i++) {
			unsigned c = s[i];
			if (c == '?' && !glob) {
				query = true;
				break;
			}
			if (c == '%') {
				int hi = i + 2 < n ? num_hex_digit(s[i + 1]) : -1;
				int lo = i + 2 < n ? num_hex_digit(s[i + 2]) : -1;
				if (hi < 0 || lo < 0)
					REFUSE("it has a '%' that is not followed by two hex "
					       "digits");
				c = (unsigned)(hi * 16 + lo);
				i += 2;
				if (c == '/' || c == '\\')
					REFUSE("it has an encoded '/' or backslash (%2F, %5C)");
				if (c < 0x20 || c == 0x7f)
					REFUSE("it has an encoded control character or NUL");
				if (!unreserved(c)) {
					if (cap - o < 3)
						REFUSE("it is longer than the limit");
					out[o++] = '%';
					out[o++] = hex[c >> 4];
					out[o++] = hex[c & 15];
					continue;
				}
			} else if (c == '\\') {
				REFUSE("it has a backslash");
			} else if (c < 0x20 || c == 0x7f) {
				REFUSE("it has a control character");
			} else if (!pchar_plain(c) && !(glob && c == '?')) {
				/* a byte a URI never carries as itself: its encoded form */
				if (cap - o < 3)
					REFUSE("it is longer than the limit");
				out[o++] = '%';
				out[o++] = hex[c >> 4];
				out[o++] = hex[c & 15];
				continue;
			}
			if (o == cap)
				REFUSE("it is longer than the limit");
			out[o++] = (char)c;
		}
		size_t sl = o - seg;
		if ((sl == 1 && out[seg] == '.') ||
		    (sl == 2 && out[seg] == '.' && out[seg + 1] == '.'))
			REFUSE("it has a '.' or '..' segment");
		if (query)
			break;
	}
	*olen = o;
	return true;
}
