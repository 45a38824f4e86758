/*
 * Content inspection on the ingress path (proxy-internal): prompts (request bodies) and model
 * responses (SSE streams, JSON bodies, other text) are inspected with the policy's engine and
 * the decision's per-detector actions; findings (types and counts, never values) go into the
 * request's audit event. docs/PROXY.md "Content inspection" describes the behaviour.
 *
 * One ingress_insp per request that carries inspect: obligations, owned by the request
 * (ingress_inspect_free). The engine belongs to the policy (decide.c); the Hyperscan scratch is
 * per worker thread, made here on first use.
 */
#ifndef CUSTOS_PROXY_INGRESS_INSPECT_H
#define CUSTOS_PROXY_INGRESS_INSPECT_H

#include "custos/audit.h"
#include "proxy_int.h"

#define INGRESS_INSPECT_RESP_MAX (4u * 1024u * 1024u) /* non-streamed body held to inspect */

typedef struct ingress_insp ingress_insp;

/* Prompt side, called with the whole request body before it goes upstream. Creates *ip when
 * the decision carries inspection (NULL otherwise: nothing to do). Returns 0 when the request
 * may go on (body replaced in place when redacted; the caller writes Content-Length from it),
 * or the HTTP status to answer (400 unreadable body, 403 denied, 500 internal) with *why
 * (static or owned by *ip; names detectors, never values). In shadow mode nothing is changed
 * or refused; findings are still recorded. */
unsigned ingress_inspect_request(ingress_insp **ip, const decide_out *dec, bool has_oa,
                                 const openai_request *oa, buf *body, const char **why);
/* The same for a multipart body (a multipart Content-Type: an OpenAI file or audio upload)
 * with boundary (empty: the Content-Type had no valid one, 400): its parts by the egress
 * proxy's strict multipart rules (egress_inspect_multipart: transfer encodings undone, JSON and
 * form parts on their values, a part that is not text 415, malformed 400). */
unsigned ingress_inspect_request_multipart(ingress_insp **ip, const decide_out *dec, span boundary,
                                           buf *body, const char **why);

/* Whether any Content-Encoding field of h (any field, any list element) names a coding
 * other than identity: such a body cannot be inspected. */
bool ingress_inspect_encoded(const http1_head *h);
/* Whether the decision asks for prompt inspection (a request body custos must read). */
bool ingress_inspect_prompt_wanted(const decide_out *dec);
/* Whether responses of this request are inspected (not in shadow mode): the upstream is
 * then asked for an uncompressed answer. */
bool ingress_inspect_response_on(const ingress_insp *ip);

/* Egress data sources: every response body is inspected as one byte stream (no SSE or JSON
 * handling). Call before ingress_inspect_response_begin. */
void ingress_inspect_response_raw(ingress_insp *ip);
/* Response head: true when the body will be rewritten, so the caller must not keep the
 * upstream's Content-Length (re-frame as chunked, or close-delimited for HTTP/1.0). */
bool ingress_inspect_response_begin(ingress_insp *ip, const http1_head *h);
/* Whether response bytes go through ingress_inspect_response_data. */
bool ingress_inspect_response_active(const ingress_insp *ip);
/* Whether the body is held whole until ingress_inspect_response_end (a JSON body, after
 * _begin): nothing of it is released before, so the caller may hold the head as well and
 * answer with the verdict (403 on deny, a Content-Length otherwise). */
bool ingress_inspect_response_held(const ingress_insp *ip);
/* After _begin: whether the body is content-encoded, so it cannot be inspected and the
 * response is refused whole before any of it is sent (fail closed). *why (owned by ip) is the
 * reason, naming the coding; the response counts as denied (ingress_inspect_outcome). A
 * caller that does not ask gets CUSTOS_ERR_DENIED from the first body byte, after its head. */
bool ingress_inspect_response_refused(ingress_insp *ip, const char **why);
/* A piece of decoded response body: *out (owned by ip, valid until the next call) is what the
 * client gets instead, unframed. CUSTOS_OK; CUSTOS_ERR_DENIED when a deny detector fired: *out
 * holds the closing events (SSE: an error event and [DONE]) or nothing, and the caller ends
 * the response and closes the upstream; another error: abort the client connection. */
custos_err ingress_inspect_response_data(ingress_insp *ip, span in, span *out) CUSTOS_WUR;
/* End of the upstream body: the held-back rest (SSE tails, a whole JSON body). Same returns. */
custos_err ingress_inspect_response_end(ingress_insp *ip, span *out) CUSTOS_WUR;

/* For the audit event: findings (prompt and response merged; *n may be 0), a short summary
 * ("prompt:redact response:log") or NULL, and inspection time in ns. Pointers owned by ip. */
void ingress_inspect_audit(ingress_insp *ip, const audit_finding **f, size_t *n,
                           const char **summary, uint64_t *ns);
/* When the response was denied mid-way: overrides decision and reason for the audit event. */
void ingress_inspect_outcome(const ingress_insp *ip, const char **decision, const char **reason);
void ingress_inspect_free(ingress_insp *ip);

#endif /* CUSTOS_PROXY_INGRESS_INSPECT_H */
