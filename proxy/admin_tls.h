/*
 * The admin API's TLS gate (admin_tls.c): accepts on the admin TCP listener, makes the TLS
 * handshake with OpenSSL and hands each finished one to libmicrohttpd as plaintext over a
 * socketpair. Private to proxy/admin*.c.
 */
#ifndef CUSTOS_PROXY_ADMIN_TLS_H
#define CUSTOS_PROXY_ADMIN_TLS_H

#include <microhttpd.h>
#include <openssl/ssl.h>

#include "custos/core.h"

/* What the gate reports to the admin server (from the gate's thread). who: "tcp:ADDR". */
typedef struct admin_tls_events {
	void *arg;
	/* A connection closed before its handshake ended, to make room (slots full). */
	void (*shed)(void *arg, const char *who);
	/* A handshake failed (or timed out); remote "ADDR:PORT", why a short reason. Not called
	 * for a peer that closed or timed out without sending a byte (a port probe). */
	void (*rejected)(void *arg, const char *remote, const char *why);
} admin_tls_events;

struct admin_tls_gate;

/* Starts the gate's thread on listen_fd (non-blocking, listening; still the caller's, closed by
 * the caller after admin_tls_gate_stop). ctx: one reference taken. d: the libmicrohttpd daemon
 * (started with MHD_USE_NO_LISTEN_SOCKET) that gets each connection once its handshake is done.
 * A handshake has timeout_s to finish; at most max_handshakes are in progress (a new one sheds
 * the one that has waited longest) and max_conns connections are open through the gate. */
custos_err admin_tls_gate_start(int listen_fd, SSL_CTX *ctx, struct MHD_Daemon *d,
                                unsigned timeout_s, unsigned max_handshakes, unsigned max_conns,
                                const admin_tls_events *ev, struct admin_tls_gate **out) CUSTOS_WUR;
/* New connections use ctx from now on (one reference taken); handshakes in progress and
 * connections keep the context they started with. Any thread. */
void admin_tls_gate_set_ctx(struct admin_tls_gate *g, SSL_CTX *ctx);
/* Stops the thread and closes every connection it holds; NULL is fine. Before MHD_stop_daemon. */
void admin_tls_gate_stop(struct admin_tls_gate *g);

#endif /* CUSTOS_PROXY_ADMIN_TLS_H */
