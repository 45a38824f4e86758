/*
 * Client session slots of proxy/tls.c, driven through OpenSSL's own new-session callback with
 * sessions made here (no handshake): the ingress per-worker stacks (newest first, TLS 1.3 used
 * once, TLS 1.2 kept and replacing the stack, the bound and its eviction, a failed handshake,
 * expiry, one slot per worker) and the egress per-origin cache (keys kept apart, eviction of
 * the least recently stored origin, and each origin's stack under the same rules). ASan checks that the references add up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/ssl.h>
#include <pthread.h>

#include "proxy/proxy_int.h"
#include "proxy/tls.h"

#define SLOT_MAX   64 /* CLIENT_SESSIONS in tls.c */
#define ORIGIN_MAX 32 /* ORIGIN_SESSIONS in tls.c */
#define STACK_MAX  16 /* ORIGIN_STACK in tls.c */

/* A resumable session of the given version with a distinct id. */
static SSL_SESSION *mk_session(int version, unsigned id)
{
	SSL_SESSION *s = SSL_SESSION_new();
	unsigned char sid[32] = { 0 };
	assert_non_null(s);
	memcpy(sid, &id, sizeof(id));
	sid[31] = 1;
	assert_int_equal(SSL_SESSION_set1_id(s, sid, sizeof(sid)), 1);
	assert_int_equal(SSL_SESSION_set_protocol_version(s, version), 1);
	return s;
}

/* What the handshake of ssl would store: OpenSSL's callback, given the reference. */
static void deliver(SSL_CTX *ctx, SSL *ssl, SSL_SESSION *s)
{
	int (*cb)(SSL *, SSL_SESSION *) = SSL_CTX_sess_get_new_cb(ctx);
	assert_non_null(cb);
	if (cb(ssl, s) == 0)
		SSL_SESSION_free(s); /* not kept: the reference stays ours */
}

/* A new connection on slot w: the session offered (NULL: none), the SSL in *out. */
static SSL_SESSION *offer(SSL_CTX *ctx, unsigned w, SSL **out)
{
	SSL *ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_set_connect_state(ssl);
	tls_client_session_offer(ssl, w);
	*out = ssl;
	return SSL_get_session(ssl);
}

static SSL_CTX *client_ctx(unsigned nslots)
{
	proxy_upstream_opts u = { .name = "up", .address = "127.0.0.1:1", .tls = true };
	SSL_CTX *ctx = NULL;
	assert_int_equal(tls_client_ctx(&u, nslots, &ctx), CUSTOS_OK);
	return ctx;
}

static void test_tls13_stack(void **state)
{
	(void)state;
	SSL_CTX *ctx = client_ctx(2);
	SSL *a, *b;
	SSL_SESSION *made[SLOT_MAX + 6];

	assert_null(offer(ctx, 0, &a)); /* empty: a full handshake */
	for (unsigned i = 0; i < SLOT_MAX + 6; i++) {
		made[i] = mk_session(TLS1_3_VERSION, i);
		deliver(ctx, a, made[i]); /* tickets on a's connection */
	}
	/* Newest first, each once; the 6 oldest were evicted. */
	for (unsigned i = 0; i < SLOT_MAX; i++) {
		assert_ptr_equal(offer(ctx, 0, &b), made[SLOT_MAX + 5 - i]);
		SSL_free(b);
	}
	assert_null(offer(ctx, 0, &b));
	SSL_free(b);
	/* The other worker's slot saw none of it. */
	assert_null(offer(ctx, 1, &b));
	SSL_free(b);
	SSL_free(a);
	SSL_CTX_free(ctx);
}

static void test_tls12_kept(void **state)
{
	(void)state;
	SSL_CTX *ctx = client_ctx(1);
	SSL *a, *b;

	assert_null(offer(ctx, 0, &a));
	deliver(ctx, a, mk_session(TLS1_3_VERSION, 1));
	deliver(ctx, a, mk_session(TLS1_3_VERSION, 2));
	SSL_SESSION *s12 = mk_session(TLS1_2_VERSION, 3);
	deliver(ctx, a, s12); /* replaces the whole stack */
	for (int i = 0; i < 3; i++) {
		assert_ptr_equal(offer(ctx, 0, &b), s12); /* again and again */
		SSL_free(b);
	}
	/* A failed handshake empties the slot; a session delivered later on the failed
	 * connection is not kept. */
	assert_ptr_equal(offer(ctx, 0, &b), s12);
	tls_client_session_failed(b);
	deliver(ctx, b, mk_session(TLS1_2_VERSION, 4));
	SSL_free(b);
	assert_null(offer(ctx, 0, &b));
	SSL_free(b);
	SSL_free(a);
	SSL_CTX_free(ctx); /* frees what the slots hold (ASan: no leak) */
}

static void test_unusable_dropped(void **state)
{
	(void)state;
	SSL_CTX *ctx = client_ctx(1);
	SSL *a, *b;

	assert_null(offer(ctx, 0, &a));
	SSL_SESSION *good = mk_session(TLS1_3_VERSION, 1);
	deliver(ctx, a, good);
	SSL_SESSION *old = mk_session(TLS1_3_VERSION, 2);
	SSL_SESSION_set_timeout(old, 10);
	SSL_SESSION_set_time(old, (long)time(NULL) - 100); /* expired */
	deliver(ctx, a, old);
	/* Not resumable (no id, no ticket): never stored. */
	SSL_SESSION *none = SSL_SESSION_new();
	assert_int_equal(SSL_SESSION_set_protocol_version(none, TLS1_3_VERSION), 1);
	deliver(ctx, a, none);
	assert_ptr_equal(offer(ctx, 0, &b), good); /* the expired one on top was dropped */
	SSL_free(b);
	assert_null(offer(ctx, 0, &b));
	SSL_free(b);
	SSL_free(a);
	SSL_CTX_free(ctx);
}

static void test_origin_cache(void **state)
{
	(void)state;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *a, *b;
	char key[32];

	assert_non_null(ctx);
	assert_int_equal(tls_origin_cache_attach(ctx), CUSTOS_OK);
	/* One TLS 1.3 session for origin x: offered to x once, never to y. */
	a = SSL_new(ctx);
	tls_origin_session_offer(a, "1|x|443");
	assert_null(SSL_get_session(a));
	SSL_SESSION *sx = mk_session(TLS1_3_VERSION, 1);
	deliver(ctx, a, sx);
	SSL_free(a);
	b = SSL_new(ctx);
	tls_origin_session_offer(b, "1|y|443");
	assert_null(SSL_get_session(b));
	SSL_free(b);
	b = SSL_new(ctx);
	tls_origin_session_offer(b, "1|x|443");
	assert_ptr_equal(SSL_get_session(b), sx);
	SSL_free(b);
	b = SSL_new(ctx);
	tls_origin_session_offer(b, "1|x|443");
	assert_null(SSL_get_session(b)); /* used once */
	SSL_free(b);
	/* ORIGIN_MAX + 1 origins with a TLS 1.2 session each: the first stored is evicted. */
	for (unsigned i = 0; i <= ORIGIN_MAX; i++) {
		snprintf(key, sizeof(key), "1|o%u|443", i);
		a = SSL_new(ctx);
		tls_origin_session_offer(a, key);
		deliver(ctx, a, mk_session(TLS1_2_VERSION, 100 + i));
		SSL_free(a);
	}
	b = SSL_new(ctx);
	tls_origin_session_offer(b, "1|o0|443");
	assert_null(SSL_get_session(b));
	SSL_free(b);
	for (unsigned i = 1; i <= ORIGIN_MAX; i++) {
		snprintf(key, sizeof(key), "1|o%u|443", i);
		b = SSL_new(ctx);
		tls_origin_session_offer(b, key);
		assert_non_null(SSL_get_session(b));
		if (i == 1) /* a failed handshake drops the origin's session */
			tls_origin_session_failed(b);
		SSL_free(b);
	}
	b = SSL_new(ctx);
	tls_origin_session_offer(b, "1|o1|443");
	assert_null(SSL_get_session(b));
	SSL_free(b);
	SSL_CTX_free(ctx);
}

/* A new origin connection to key: the session offered (NULL: none), the SSL in *out. */
static SSL_SESSION *origin_offer(SSL_CTX *ctx, const char *key, SSL **out)
{
	SSL *ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_set_connect_state(ssl);
	tls_origin_session_offer(ssl, key);
	*out = ssl;
	return SSL_get_session(ssl);
}

static void test_origin_stack(void **state)
{
	(void)state;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *a, *b;
	SSL_SESSION *made[STACK_MAX + 3];

	assert_non_null(ctx);
	assert_int_equal(tls_origin_cache_attach(ctx), CUSTOS_OK);
	/* More TLS 1.3 tickets than the stack holds: the newest STACK_MAX, newest first, each
	 * once (several connections at once each resume); the oldest three were given up. */
	assert_null(origin_offer(ctx, "1|x|443", &a));
	for (unsigned i = 0; i < STACK_MAX + 3; i++) {
		made[i] = mk_session(TLS1_3_VERSION, i);
		deliver(ctx, a, made[i]);
	}
	SSL *held[STACK_MAX];
	for (unsigned i = 0; i < STACK_MAX; i++) /* all open at once */
		assert_ptr_equal(origin_offer(ctx, "1|x|443", &held[i]), made[STACK_MAX + 2 - i]);
	assert_null(origin_offer(ctx, "1|x|443", &b)); /* the next one: a full handshake */
	SSL_free(b);
	for (unsigned i = 0; i < STACK_MAX; i++)
		SSL_free(held[i]);
	/* Expired and unresumable sessions on top are dropped on the way to a usable one. */
	SSL_SESSION *good = mk_session(TLS1_3_VERSION, 50);
	deliver(ctx, a, good);
	for (unsigned i = 0; i < 3; i++) {
		SSL_SESSION *old = mk_session(TLS1_3_VERSION, 51 + i);
		SSL_SESSION_set_timeout(old, 10);
		SSL_SESSION_set_time(old, (long)time(NULL) - 100);
		deliver(ctx, a, old);
	}
	assert_ptr_equal(origin_offer(ctx, "1|x|443", &b), good);
	SSL_free(b);
	assert_null(origin_offer(ctx, "1|x|443", &b));
	SSL_free(b);
	/* A TLS 1.2 session replaces the stack and stays; a TLS 1.3 one then goes on top. */
	deliver(ctx, a, mk_session(TLS1_3_VERSION, 60));
	SSL_SESSION *s12 = mk_session(TLS1_2_VERSION, 61);
	deliver(ctx, a, s12);
	for (int i = 0; i < 3; i++) {
		assert_ptr_equal(origin_offer(ctx, "1|x|443", &b), s12);
		SSL_free(b);
	}
	/* A failed handshake drops the origin's whole stack, not other origins'; a session
	 * arriving later on the failed connection is not kept. */
	deliver(ctx, a, mk_session(TLS1_3_VERSION, 62));
	deliver(ctx, a, mk_session(TLS1_3_VERSION, 63));
	SSL_free(a);
	assert_null(origin_offer(ctx, "1|y|443", &a));
	SSL_SESSION *sy = mk_session(TLS1_3_VERSION, 70);
	deliver(ctx, a, sy);
	SSL_free(a);
	assert_non_null(origin_offer(ctx, "1|x|443", &b));
	tls_origin_session_failed(b);
	deliver(ctx, b, mk_session(TLS1_3_VERSION, 64));
	SSL_free(b);
	assert_null(origin_offer(ctx, "1|x|443", &b));
	SSL_free(b);
	assert_ptr_equal(origin_offer(ctx, "1|y|443", &b), sy);
	SSL_free(b);
	/* An evicted origin's stack is freed with it (ASan: no leak), the context frees the
	 * rest. */
	char key[32];
	for (unsigned i = 0; i <= ORIGIN_MAX; i++) {
		snprintf(key, sizeof(key), "1|o%u|443", i);
		a = SSL_new(ctx);
		tls_origin_session_offer(a, key);
		for (unsigned j = 0; j < 4; j++)
			deliver(ctx, a, mk_session(TLS1_3_VERSION, 1000 + 8 * i + j));
		SSL_free(a);
	}
	assert_null(origin_offer(ctx, "1|o0|443", &b));
	SSL_free(b);
	SSL_CTX_free(ctx);
}

/* Connection threads sharing one source's cache: each offers, receives tickets (or fails) and
 * frees its connection, on two origins at once. ASan checks that the references add up (no
 * double free, no leak); the stack stays within its bound. */
struct hammer {
	SSL_CTX *ctx;
	unsigned id;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	const char *key = h->id % 2 ? "1|x|443" : "1|y|443";

	for (unsigned i = 0; i < 300; i++) {
		SSL *ssl = SSL_new(h->ctx);
		if (ssl == NULL)
			return "SSL_new";
		SSL_set_connect_state(ssl);
		tls_origin_session_offer(ssl, key);
		if (i % 37 == 0) {
			tls_origin_session_failed(ssl);
		} else {
			int (*cb)(SSL *, SSL_SESSION *) = SSL_CTX_sess_get_new_cb(h->ctx);
			for (unsigned k = 0; k < 1 + i % 2; k++) {
				SSL_SESSION *s = SSL_SESSION_new();
				unsigned char sid[32] = { 1 };
				unsigned v = h->id * 10000 + i * 2 + k;
				memcpy(sid + 1, &v, sizeof(v));
				SSL_SESSION_set1_id(s, sid, sizeof(sid));
				SSL_SESSION_set_protocol_version(s, i % 50 == 1 ? TLS1_2_VERSION
				                                                : TLS1_3_VERSION);
				if (cb(ssl, s) == 0)
					SSL_SESSION_free(s);
			}
		}
		SSL_free(ssl);
	}
	return NULL;
}

static void test_origin_threads(void **state)
{
	(void)state;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	pthread_t th[8];
	struct hammer h[8];

	assert_non_null(ctx);
	assert_int_equal(tls_origin_cache_attach(ctx), CUSTOS_OK);
	for (unsigned i = 0; i < 8; i++) {
		h[i] = (struct hammer){ ctx, i };
		assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
	}
	for (unsigned i = 0; i < 8; i++) {
		void *why = NULL;
		assert_int_equal(pthread_join(th[i], &why), 0);
		assert_null(why);
	}
	/* At most STACK_MAX TLS 1.3 tickets per origin are left to take (a TLS 1.2 session on
	 * top would be offered for ever: then one offer tells). */
	const char *keys[] = { "1|x|443", "1|y|443" };
	for (unsigned k = 0; k < 2; k++) {
		unsigned n = 0;
		for (;;) {
			SSL *b;
			SSL_SESSION *s = origin_offer(ctx, keys[k], &b);
			bool tls12 = s && SSL_SESSION_get_protocol_version(s) < TLS1_3_VERSION;
			SSL_free(b);
			if (s == NULL || tls12)
				break;
			n++;
			assert_true(n <= STACK_MAX);
		}
	}
	SSL_CTX_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls13_stack),      cmocka_unit_test(test_tls12_kept),
		cmocka_unit_test(test_unusable_dropped), cmocka_unit_test(test_origin_cache),
		cmocka_unit_test(test_origin_stack),     cmocka_unit_test(test_origin_threads),
	};
	log_setup(LOG_LVL_ERROR, LOG_FMT_TEXT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
