/*
 * custos ctl [--socket PATH | --url http(s)://HOST:PORT --token-file F [--insecure-remote]
 * [--cacert F] [--cert F --key F]] COMMAND: a client for the admin API (docs/ADMIN.md); HOST is a
 * numeric address or a name. A tiny HTTP/1.1 client: one request per connection
 * (Connection: close), over TLS with OpenSSL for https:// (the server's certificate verified,
 * its name or address checked), the answer read into a bounded buffer until its framing says it
 * is whole (a close_notify is not needed then; an answer cut short is an error), the body
 * printed.
 * Exit status: 0 on a 2xx answer, 1 otherwise (so `custos ctl ready` works in scripts).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "custos/admin.h"
#include "custos/proxy.h"

#define CTL_DEFAULT_SOCKET "/run/custos/admin.sock"
#define CTL_RESPONSE_MAX   ADMIN_RESPONSE_MAX
#define CTL_TIMEOUT_S      30 /* default --timeout: each connect attempt, then the answer */
#define CTL_TIMEOUT_MAX_S  3600

custos_err proxy_parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len);

/* At most this many addresses of a --url host name are kept (all are checked for loopback). */
#define CTL_ADDRS_MAX 16

struct ctl_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

struct ctl_target {
	const char *socket;
	const char *url_hostport; /* "127.0.0.1:9090" or "localhost:9090" (from http://...) */
	struct ctl_addr addrs[CTL_ADDRS_MAX]; /* --url resolved once: checked, then connected */
	size_t naddrs;
	bool all_loopback;               /* every address the --url host resolved to is loopback */
	buf token;                       /* bearer token, wiped after use */
	int timeout_ms;                  /* --timeout */
	bool tls;                        /* https:// */
	const char *cacert, *cert, *key; /* --cacert (NULL: the system store), --cert/--key */
};

/* One connection: a socket, and its TLS when https://. */
struct ctl_conn {
	int fd;
	SSL *ssl;
};

/* Whether an address stays on this host: 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104, or a unix:
 * path. Anything else (0.0.0.0 and :: included) carries the bearer token in clear over a
 * network, which only --insecure-remote allows. */
static bool ctl_addr_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_UNIX)
		return true;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family != AF_INET6)
		return false;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)ss;
	if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
		return true;
	return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
}

/* A host name as RFC 1123 writes one: letters, digits, '-' and '.', at most 253 bytes. */
static bool ctl_hostname_ok(span h)
{
	if (h.len == 0 || h.len > 253)
		return false;
	for (size_t i = 0; i < h.len; i++) {
		char ch = h.ptr[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.'))
			return false;
	}
	return true;
}

/* Resolves --url's HOST:PORT into t->addrs: a numeric address (IPv6 in brackets) as it is, a
 * name by getaddrinfo (its AF_INET and AF_INET6 addresses, in the resolver's order). The
 * addresses checked for loopback are the ones connected to: the name is resolved only once.
 * "localhost" is a name like any other here (docs/ADMIN.md).
 * Returns CUSTOS_ERR_INVAL for a malformed HOST:PORT (a usage error), CUSTOS_ERR_NOTFOUND
 * when the name does not resolve to an address. */
static custos_err ctl_url_resolve(struct ctl_target *t) CUSTOS_WUR;
static custos_err ctl_url_resolve(struct ctl_target *t)
{
	const char *hp = t->url_hostport;
	struct ctl_addr *a = &t->addrs[0];

	const char *colon = strrchr(hp, ':');
	ENSURE(colon != NULL, CUSTOS_ERR_INVAL,
	       "--url http://%s: HOST:PORT expected (an IPv6 address in brackets)", hp);
	span host = { hp, (size_t)(colon - hp) };
	char name[254];
	struct in_addr in4;
	bool numeric = strncmp(hp, "unix:", 5) == 0 || host.len == 0 || hp[0] == '[' ||
	               host.len >= sizeof(name);
	if (!numeric) {
		memcpy(name, host.ptr, host.len);
		name[host.len] = '\0';
		numeric = inet_pton(AF_INET, name, &in4) == 1;
	}
	if (numeric) {
		if (proxy_parse_address(hp, &a->ss, &a->len) != CUSTOS_OK) {
			char why[256];
			snprintf(why, sizeof(why), "%s", err_msg());
			return err_set(CUSTOS_ERR_INVAL, "--url http://%s: %s", hp, why);
		}
		t->naddrs = 1;
		t->all_loopback = ctl_addr_loopback(&a->ss);
		return CUSTOS_OK;
	}
	uint64_t port = 0;
	ENSURE(ctl_hostname_ok(host), CUSTOS_ERR_INVAL,
	       "--url http://%s: '%.*s' is neither a numeric address nor a host name", hp,
	       (int)host.len, host.ptr);
	ENSURE(num_parse_u64(span_cstr(colon + 1), 1, 65535, &port) == CUSTOS_OK, CUSTOS_ERR_INVAL,
	       "--url http://%s: the port must be 1..65535", hp);

	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int r = getaddrinfo(name, NULL, &hints, &res);
	ENSURE(r == 0, CUSTOS_ERR_NOTFOUND, "--url http://%s: cannot resolve %s: %s", hp, name,
	       r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
	t->naddrs = 0;
	t->all_loopback = true;
	for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(struct sockaddr_storage))
			continue;
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)(void *)&ss)->sin_port = htons((uint16_t)port);
		else
			((struct sockaddr_in6 *)(void *)&ss)->sin6_port = htons((uint16_t)port);
		/* every address counts for the check, even those past CTL_ADDRS_MAX */
		t->all_loopback = t->all_loopback && ctl_addr_loopback(&ss);
		if (t->naddrs < CTL_ADDRS_MAX) {
			t->addrs[t->naddrs].ss = ss;
			t->addrs[t->naddrs].len = (socklen_t)ai->ai_addrlen;
			t->naddrs++;
		}
	}
	freeaddrinfo(res);
	ENSURE(t->naddrs > 0, CUSTOS_ERR_NOTFOUND,
	       "--url http://%s: %s has no IPv4 or IPv6 address", hp, name);
	return CUSTOS_OK;
}

/* connect(2) bounded by timeout_ms: non-blocking, then poll for the outcome; the socket is
 * blocking again on return, with a send timeout of the same length. An address that drops
 * packets thus costs timeout_ms, not the kernel's SYN retries (minutes). */
static int ctl_connect_fd(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -1;
	int r = connect(fd, sa, len);
	if (r == -1 && errno == EINPROGRESS) {
		struct pollfd pfd = { fd, POLLOUT, 0 };
		int pr;
		do
			pr = poll(&pfd, 1, timeout_ms);
		while (pr == -1 && errno == EINTR);
		if (pr == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (pr == -1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
			return -1;
		if (soerr) {
			errno = soerr;
			return -1;
		}
		r = 0;
	}
	if (r == -1)
		return -1;
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	if (fcntl(fd, F_SETFL, fl) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1)
		return -1;
	return 0;
}

/* Connects to the --url addresses in order (the first that accepts within --timeout), or the
 * Unix socket. */
static custos_err ctl_connect(const struct ctl_target *t, int *out)
{
	if (t->url_hostport) {
		int err = 0;
		for (size_t i = 0; i < t->naddrs; i++) {
			const struct ctl_addr *a = &t->addrs[i];
			int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd == -1)
				return err_sys("socket");
			if (ctl_connect_fd(fd, (const struct sockaddr *)&a->ss, a->len,
			                   t->timeout_ms) == 0) {
				*out = fd;
				return CUSTOS_OK;
			}
			err = errno;
			close(fd);
		}
		errno = err;
		if (t->naddrs > 1)
			return err_sys("connect %s (each of its %zu addresses)", t->url_hostport,
			               t->naddrs);
		return err_sys("connect %s", t->url_hostport);
	}

	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ENSURE(strlen(t->socket) < sizeof(sun.sun_path), CUSTOS_ERR_LIMIT,
	       "%s: socket path too long", t->socket);
	memcpy(sun.sun_path, t->socket, strlen(t->socket) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return err_sys("socket");
	if (ctl_connect_fd(fd, (struct sockaddr *)&sun, sizeof(sun), t->timeout_ms) == -1) {
		custos_err e = err_sys("connect %s", t->socket);
		close(fd);
		return e;
	}
	*out = fd;
	return CUSTOS_OK;
}

/* OpenSSL's reason for a failed TLS call, with what: the certificate check's when it failed. */
static custos_err ctl_tls_err(SSL *ssl, const char *what)
{
	char msg[256] = "";
	unsigned long e = ERR_peek_error();
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (vr != X509_V_OK)
		snprintf(msg, sizeof(msg), "server certificate: %s",
		         X509_verify_cert_error_string(vr));
	else if (e)
		ERR_error_string_n(e, msg, sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "connection closed");
	ERR_clear_error();
	return err_set(CUSTOS_ERR_CRYPTO, "%s: %s", what, msg);
}

/* Waits until fd is ready for what SSL error err asks, at most timeout_ms. */
static custos_err ctl_tls_wait(int fd, int err, int timeout_ms, const char *what)
{
	struct pollfd pfd = { fd, err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, 0 };
	int pr;

	do
		pr = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
	while (pr == -1 && errno == EINTR);
	if (pr == -1)
		return err_sys("poll");
	ENSURE(pr == 1, CUSTOS_ERR_TIMEOUT, "%s: not done within --timeout", what);
	return CUSTOS_OK;
}

/* The host of --url's HOST:PORT (brackets of an IPv6 address dropped) into out. */
static void ctl_url_host(const char *hp, char *out, size_t cap)
{
	const char *colon = strrchr(hp, ':');
	size_t n = colon ? (size_t)(colon - hp) : strlen(hp);

	if (n >= 2 && hp[0] == '[' && hp[n - 1] == ']') {
		hp++;
		n -= 2;
	}
	snprintf(out, cap, "%.*s", (int)n, hp);
}

/* --key: a secret as the token file is (mode 0600 or stricter), PEM, the --cert's key. */
static custos_err ctl_tls_key(SSL_CTX *ctx, const char *path)
{
	buf b;

	buf_init(&b, 65536);
	custos_err e = file_load(path, FILE_SECRET, 65536, &b);
	if (e != CUSTOS_OK) {
		buf_free_secret(&b);
		return e;
	}
	BIO *bio = BIO_new_mem_buf(b.data, (int)b.len);
	EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	buf_free_secret(&b);
	bool ok = pk != NULL && SSL_CTX_use_PrivateKey(ctx, pk) == 1 &&
	          SSL_CTX_check_private_key(ctx) == 1;
	EVP_PKEY_free(pk);
	return ok ? CUSTOS_OK : ctl_tls_err(NULL, path);
}

/* TLS over the connected fd: the server's certificate verified against --cacert (or the
 * system store) and checked for --url's host (an IP address as such, a name as a DNS name,
 * sent as SNI); --cert/--key as the client certificate. The handshake has --timeout in all. */
static custos_err ctl_tls_open(const struct ctl_target *t, struct ctl_conn *c)
{
	char host[256];
	custos_err e = CUSTOS_OK;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return ctl_tls_err(NULL, "TLS");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if ((t->cacert ? SSL_CTX_load_verify_locations(ctx, t->cacert, NULL)
	               : SSL_CTX_set_default_verify_paths(ctx)) != 1)
		e = ctl_tls_err(NULL, t->cacert ? t->cacert : "the system trust store");
	else if (t->cert && SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1)
		e = ctl_tls_err(NULL, t->cert);
	else if (t->cert)
		e = ctl_tls_key(ctx, t->key);
	if (e == CUSTOS_OK && (c->ssl = SSL_new(ctx)) == NULL)
		e = ctl_tls_err(NULL, "TLS");
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (e != CUSTOS_OK)
		return e;
	ctl_url_host(t->url_hostport, host, sizeof(host));
	struct in6_addr a6;
	bool ip = inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
	bool ok = SSL_set_fd(c->ssl, c->fd) == 1;
	if (ip)
		ok = ok && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) == 1;
	else
		ok = ok && SSL_set1_host(c->ssl, host) == 1 &&
		     SSL_set_tlsext_host_name(c->ssl, host) == 1;
	if (!ok)
		return ctl_tls_err(NULL, host);
	int fl = fcntl(c->fd, F_GETFL);
	if (fl == -1 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return err_sys("fcntl");
	uint64_t end = tm_mono_ns() + (uint64_t)t->timeout_ms * 1000000ull;
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(c->ssl);
		if (r == 1)
			return CUSTOS_OK;
		int err = SSL_get_error(c->ssl, r);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
			return ctl_tls_err(c->ssl, "TLS handshake");
		uint64_t now = tm_mono_ns();
		GUARD(ctl_tls_wait(c->fd, err,
		                   now >= end ? 0 : (int)((end - now + 999999) / 1000000),
		                   "TLS handshake"));
	}
}

static custos_err write_all(const struct ctl_conn *c, const uint8_t *p, size_t n, int timeout_ms)
{
	int fd = c->fd;

	while (n && c->ssl) {
		ERR_clear_error();
		int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		int err = SSL_get_error(c->ssl, w);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
			return ctl_tls_err(c->ssl, "send");
		GUARD(ctl_tls_wait(fd, err, timeout_ms, "send"));
	}
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return err_set(CUSTOS_ERR_TIMEOUT,
			               "send: the request not taken within --timeout");
		if (w == -1)
			return err_sys("send");
		p += w;
		n -= (size_t)w;
	}
	return CUSTOS_OK;
}

/* Whether SSL_read's failure err is the peer's TCP EOF without a close_notify (OpenSSL 3:
 * "unexpected eof while reading"; 1.1: SSL_ERROR_SYSCALL with nothing queued). */
static bool ctl_tls_abrupt_eof(int err)
{
	unsigned long e = ERR_peek_error();

	if (err == SSL_ERROR_SYSCALL)
		return e == 0;
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
	if (err == SSL_ERROR_SSL)
		return ERR_GET_LIB(e) == ERR_LIB_SSL &&
		       ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#endif
	return false;
}

/* Reads the answer until its framing says it is whole (Content-Length, the last chunk), as
 * curl does: a server need not close, nor send a TLS close_notify, after a whole answer. Only
 * an answer without either is delimited by the connection's end, and over TLS only a
 * close_notify says that end is the answer's (a TCP FIN without it is a cut anyone on the path
 * can make: admin_answer_feed refuses a cut answer). */
static custos_err read_all(const struct ctl_conn *c, buf *in, admin_answer *a, int timeout_ms)
{
	int fd = c->fd;
	admin_answer_end end = ADMIN_END_OPEN;
	custos_err e;

	for (;;) {
		GUARD(buf_reserve(in, 65536));
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf_tail(in), 65536);
			if (r > 0) {
				buf_commit(in, (size_t)r);
			} else {
				int err = SSL_get_error(c->ssl, r);
				if (err == SSL_ERROR_ZERO_RETURN) {
					end = ADMIN_END_CLEAN; /* close_notify */
				} else if (ctl_tls_abrupt_eof(err)) {
					ERR_clear_error();
					end = ADMIN_END_ABRUPT;
				} else if (err != SSL_ERROR_WANT_READ &&
				           err != SSL_ERROR_WANT_WRITE) {
					return ctl_tls_err(c->ssl, "recv");
				} else {
					e = ctl_tls_wait(fd, err, timeout_ms, "recv");
					ENSURE(e == CUSTOS_OK, e, "no answer within %d ms",
					       timeout_ms);
					continue;
				}
			}
		} else {
			struct pollfd pfd = { fd, POLLIN, 0 };
			int pr = poll(&pfd, 1, timeout_ms);
			if (pr == -1 && errno == EINTR)
				continue;
			if (pr == -1)
				return err_sys("poll");
			ENSURE(pr == 1, CUSTOS_ERR_TIMEOUT, "no answer within %d ms", timeout_ms);
			ssize_t r = recv(fd, buf_tail(in), 65536, 0);
			if (r == -1 && errno == EINTR)
				continue;
			if (r == -1)
				return err_sys("recv");
			if (r == 0)
				end = ADMIN_END_CLEAN;
			else
				buf_commit(in, (size_t)r);
		}
		e = admin_answer_feed(a, buf_span(in), end);
		if (e != CUSTOS_ERR_AGAIN)
			return e;
	}
}

/* Sends one request; *status and body (the answer's body) on success. */
static custos_err ctl_request(struct ctl_target *t, const char *method, const char *path, span body,
                              unsigned *status, buf *out)
{
	buf req, in;
	struct ctl_conn c = { -1, NULL };
	admin_answer *a = admin_answer_new(CTL_RESPONSE_MAX);
	custos_err e;

	buf_init(&req, ADMIN_BODY_MAX + 8192);
	buf_init(&in, CTL_RESPONSE_MAX);
	e = buf_printf(&req, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", method,
	               path);
	if (e == CUSTOS_OK && t->token.len)
		e = buf_printf(&req, "Authorization: Bearer %.*s\r\n", (int)t->token.len,
		               (const char *)t->token.data);
	if (e == CUSTOS_OK && (body.len || strcmp(method, "POST") == 0))
		e = buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
		               body.len);
	if (e == CUSTOS_OK)
		e = buf_append_cstr(&req, "\r\n");
	if (e == CUSTOS_OK)
		e = buf_append_span(&req, body);
	if (e == CUSTOS_OK)
		e = ctl_connect(t, &c.fd);
	if (e == CUSTOS_OK && t->tls)
		e = ctl_tls_open(t, &c);
	if (e == CUSTOS_OK)
		e = write_all(&c, req.data, req.len, t->timeout_ms);
	if (e == CUSTOS_OK)
		e = read_all(&c, &in, a, t->timeout_ms);
	if (e == CUSTOS_OK && c.ssl) {
		ERR_clear_error();
		(void)SSL_shutdown(c.ssl); /* our close_notify, best effort (non-blocking) */
		ERR_clear_error();
	}
	SSL_free(c.ssl);
	if (c.fd != -1)
		close(c.fd);
	buf_free_secret(&req);
	if (e == CUSTOS_OK) {
		*status = admin_answer_status(a);
		e = buf_append_span(out, admin_answer_body(a));
	}
	admin_answer_free(a);
	buf_free(&in);
	return e;
}

static custos_err load_body(const char *arg, buf *out)
{
	if (arg[0] == '@')
		return file_load(arg + 1, FILE_ANY, ADMIN_BODY_MAX, out);
	return buf_append_cstr(out, arg);
}

/* A sandbox id as custos.yaml allows it (letters, digits and . _ - / :, at most 64): it goes
 * into the request line as it is, so nothing else (a space, CR, LF, '%', '?') may. */
static bool ctl_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = id[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' ||
		      ch == '/' || ch == ':'))
			return false;
	}
	return true;
}

/* A refused request, on stderr, in one line: which request, the status and its reason phrase,
 * the server's {"error": "..."} message when the body has one (bytes outside printable ASCII
 * shown as '?': the answer may come from anything listening), and for 401/403 what to check.
 * The body itself still goes to stdout (readyz's fields, decide's errors list). */
static void ctl_explain(const struct ctl_target *t, const char *method, const char *path,
                        unsigned status, span body)
{
	const char *reason = proxy_status_reason(status);
	char msg[512] = "";
	ydoc doc = { 0 };
	diag_list d;

	diag_init(&d);
	if (body.len && ydoc_parse_json(&doc, "<answer>", body.ptr, body.len, &d) == CUSTOS_OK &&
	    doc.root && doc.root->kind == YDOC_MAP) {
		ydoc_node *e = ydoc_map_get(doc.root, "error");
		if (e && e->kind == YDOC_SCALAR && e->quoted) {
			size_t n = 0;
			for (size_t i = 0; i < e->len && n + 1 < sizeof(msg); i++)
				msg[n++] = e->str[i] >= 0x20 && e->str[i] < 0x7f ? e->str[i] : '?';
			msg[n] = '\0';
		}
	}
	ydoc_free(&doc);
	diag_free(&d);
	char hint[160] = "";
	if (status == 401)
		snprintf(hint, sizeof(hint),
		         " (check --token-file: the token is not the one "
		         "admin.tcp.token_sha256 names)");
	else if (status == 403 && t->url_hostport == NULL)
		snprintf(hint, sizeof(hint), " (uid %u is not in admin.allowed_uids)",
		         (unsigned)getuid());
	cli_say("custos ctl: %s %s: HTTP %u%s%s%s%s%s", method, path, status, reason ? " " : "",
	        reason ? reason : "", msg[0] ? ": " : "", msg, hint);
}

static int ctl_usage(const char *why)
{
	cli_usage_error(NULL, "ctl", "%s", why);
	cli_say("commands: health | ready | metrics | policy [show|reload] | decide JSON|@FILE"
	        " | sandboxes | restart ID | audit-status");
	return CLI_USAGE;
}

/* Whether COMMAND ARGS is one of the forms above; when not, what is wrong with it (an unknown
 * command, a known one with arguments missing or too many) is said: CLI_USAGE. Checked before
 * the token file is read or a --url name resolved. */
static int ctl_command_check(const char *cmd, int nargs, char **args)
{
	static const struct {
		const char *name;
		int min, max;
		const char *args;
	} known[] = {
		{ "health", 0, 0, "" },
		{ "ready", 0, 0, "" },
		{ "metrics", 0, 0, "" },
		{ "policy", 0, 1, " [show|reload]" },
		{ "decide", 1, 1, " JSON|@FILE" },
		{ "sandboxes", 0, 0, "" },
		{ "restart", 1, 1, " ID" },
		{ "audit-status", 0, 0, "" },
	};
	char why[512];

	for (size_t i = 0; i < CUSTOS_ARRAY_LEN(known); i++) {
		if (strcmp(cmd, known[i].name) != 0)
			continue;
		bool policy_word = strcmp(cmd, "policy") != 0 || nargs == 0 ||
		                   strcmp(args[0], "show") == 0 || strcmp(args[0], "reload") == 0;
		if (nargs >= known[i].min && nargs <= known[i].max && policy_word) {
			if (strcmp(cmd, "restart") != 0 || ctl_id_ok(args[0]))
				return CLI_OK;
			/* the id goes into the request line */
			cli_say("custos ctl: restart: not a sandbox id (letters, digits, '.', '_', "
			        "'-', '/', ':', 1 to 64 bytes, as custos.yaml allows)");
			return CLI_USAGE;
		}
		if (nargs < known[i].min)
			snprintf(why, sizeof(why), "%s: missing argument (%s%s)", cmd, cmd,
			         known[i].args);
		else if (nargs > known[i].max)
			snprintf(why, sizeof(why), "%s: unexpected argument '%s' (%s%s)", cmd,
			         args[known[i].max], cmd, known[i].args);
		else /* policy with a word other than show or reload */
			snprintf(why, sizeof(why), "%s: unknown subcommand '%s' (%s%s)", cmd,
			         args[0], cmd, known[i].args);
		return ctl_usage(why);
	}
	snprintf(why, sizeof(why), "unknown command '%s'", cmd);
	return ctl_usage(why);
}

int cmd_ctl(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "url", required_argument, NULL, 'u' },
		{ "token-file", required_argument, NULL, 't' },
		{ "insecure-remote", no_argument, NULL, 'R' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "cacert", required_argument, NULL, 'C' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl_target t = { .socket = CTL_DEFAULT_SOCKET, .timeout_ms = CTL_TIMEOUT_S * 1000 };
	const char *url = NULL, *token_file = NULL;
	bool insecure_remote = false, socket_given = false;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+:s:u:t:", opts, NULL)) != -1) {
		if (ch == 's') {
			t.socket = optarg;
			socket_given = true;
		} else if (ch == 'u')
			url = optarg;
		else if (ch == 't')
			token_file = optarg;
		else if (ch == 'R')
			insecure_remote = true;
		else if (ch == 'C')
			t.cacert = optarg;
		else if (ch == 'c')
			t.cert = optarg;
		else if (ch == 'k')
			t.key = optarg;
		else if (ch == 'T') {
			uint64_t v;
			if (num_parse_u64((span){ optarg, strlen(optarg) }, 1, CTL_TIMEOUT_MAX_S,
			                  &v) != CUSTOS_OK) {
				cli_say("custos ctl: --timeout %s: want whole seconds, 1 to %d",
				        optarg, CTL_TIMEOUT_MAX_S);
				return CLI_USAGE;
			}
			t.timeout_ms = (int)v * 1000;
		} else {
			char why[256];
			cli_getopt_problem(ch, argv, why, sizeof(why));
			return ctl_usage(why);
		}
	}
	if (optind >= argc)
		return ctl_usage("missing COMMAND");
	if (ctl_command_check(argv[optind], argc - optind - 1, argv + optind + 1) != CLI_OK)
		return CLI_USAGE;
	if (url && socket_given) {
		cli_say("custos ctl: --socket and --url: one or the other");
		return CLI_USAGE;
	}
	if (url && token_file == NULL) {
		cli_say("custos ctl: --url needs --token-file FILE (the token whose SHA-256 "
		        "is admin.tcp.token_sha256)");
		return CLI_USAGE;
	}
	if (insecure_remote && (url == NULL || strncmp(url, "http://", 7) != 0)) {
		/* It lifts the loopback rule of http:// alone; elsewhere it would do nothing, and
		 * over https:// it might be read as "skip the certificate check", which it is not. */
		cli_say("custos ctl: --insecure-remote goes with --url http://");
		return CLI_USAGE;
	}
	if (url) {
		static const char pfx[] = "http://", spfx[] = "https://";
		t.tls = strncmp(url, spfx, sizeof(spfx) - 1) == 0;
		if (!t.tls && strncmp(url, pfx, sizeof(pfx) - 1) != 0) {
			cli_say("custos ctl: --url must be https://HOST:PORT or "
			        "http://HOST:PORT (loopback)");
			return CLI_USAGE;
		}
		t.url_hostport = url + (t.tls ? sizeof(spfx) : sizeof(pfx)) - 1;
		size_t n = strlen(t.url_hostport);
		if (n && t.url_hostport[n - 1] == '/') {
			cli_say("custos ctl: --url takes no path");
			return CLI_USAGE;
		}
		custos_err re = ctl_url_resolve(&t);
		if (re != CUSTOS_OK) {
			cli_say("custos ctl: %s", err_msg());
			return re == CUSTOS_ERR_INVAL ? CLI_USAGE : CLI_FAIL;
		}
		if (!insecure_remote && !t.tls && !t.all_loopback) {
			cli_say("custos ctl: --url %s is not a loopback address (a name must "
			        "resolve to loopback addresses only): the admin token would cross "
			        "the network in clear over http (give --insecure-remote to do it "
			        "anyway, or use an SSH tunnel to a loopback port)",
			        url);
			return CLI_USAGE;
		}
	}
	if ((t.cacert || t.cert || t.key) && !t.tls) {
		cli_say("custos ctl: --cacert, --cert and --key go with --url https://");
		return CLI_USAGE;
	}
	if ((t.cert == NULL) != (t.key == NULL)) {
		cli_say("custos ctl: --cert and --key go together");
		return CLI_USAGE;
	}
	buf_init(&t.token, ADMIN_TOKEN_MAX + 2);
	if (token_file) {
		if (file_load(token_file, FILE_SECRET, ADMIN_TOKEN_MAX + 1, &t.token) !=
		    CUSTOS_OK) {
			cli_say("custos ctl: %s", err_msg());
			buf_free_secret(&t.token);
			return CLI_FAIL;
		}
		while (t.token.len && (t.token.data[t.token.len - 1] == '\n' ||
		                       t.token.data[t.token.len - 1] == '\r'))
			t.token.len--;
		/* One line of visible characters: it goes into the Authorization header as it is,
		 * so a second line would be sent as headers of its own. */
		bool tok_ok = t.token.len > 0;
		for (size_t i = 0; tok_ok && i < t.token.len; i++)
			tok_ok = t.token.data[i] > 0x20 && t.token.data[i] < 0x7f;
		if (!tok_ok) {
			cli_say("custos ctl: %s: the token must be one line of visible ASCII "
			        "characters (no spaces)",
			        token_file);
			buf_free_secret(&t.token);
			return CLI_FAIL;
		}
	}

	const char *cmd = argv[optind];
	int nargs = argc - optind - 1;
	char **args = argv + optind + 1;
	const char *method = "GET", *path = NULL;
	char pathbuf[256];
	buf body;
	buf_init(&body, ADMIN_BODY_MAX);
	int rc = CLI_OK;

	if (strcmp(cmd, "health") == 0 && nargs == 0) {
		path = "/healthz";
	} else if (strcmp(cmd, "ready") == 0 && nargs == 0) {
		path = "/readyz";
	} else if (strcmp(cmd, "metrics") == 0 && nargs == 0) {
		path = "/metrics";
	} else if (strcmp(cmd, "policy") == 0 &&
	           (nargs == 0 || (nargs == 1 && strcmp(args[0], "show") == 0))) {
		path = "/v1/policy";
	} else if (strcmp(cmd, "policy") == 0 && nargs == 1 && strcmp(args[0], "reload") == 0) {
		method = "POST";
		path = "/v1/policy";
	} else if (strcmp(cmd, "decide") == 0 && nargs == 1) {
		method = "POST";
		path = "/v1/decide";
		if (load_body(args[0], &body) != CUSTOS_OK) {
			cli_say("custos ctl: %s", err_msg());
			rc = CLI_FAIL;
		}
	} else if (strcmp(cmd, "sandboxes") == 0 && nargs == 0) {
		path = "/v1/sandboxes";
	} else if (strcmp(cmd, "restart") == 0 && nargs == 1 && ctl_id_ok(args[0])) {
		method = "POST";
		snprintf(pathbuf, sizeof(pathbuf), "/v1/sandboxes/%s/restart", args[0]);
		path = pathbuf;
	} else if (strcmp(cmd, "audit-status") == 0 && nargs == 0) {
		path = "/v1/audit/status";
	} else {
		buf_free_secret(&t.token);
		buf_free(&body);
		return ctl_usage("bad command"); /* ctl_command_check let nothing else through */
	}
	if (rc == CLI_OK) {
		buf out;
		unsigned status = 0;
		buf_init(&out, CTL_RESPONSE_MAX);
		if (ctl_request(&t, method, path, buf_span(&body), &status, &out) != CUSTOS_OK) {
			cli_say("custos ctl: %s", err_msg());
			rc = CLI_FAIL;
		} else {
			fwrite(out.data, 1, out.len, stdout);
			fflush(stdout);
			if (status < 200 || status > 299) {
				ctl_explain(&t, method, path, status, buf_span(&out));
				rc = CLI_FAIL;
			}
		}
		buf_free(&out);
	}
	buf_free_secret(&t.token);
	buf_free(&body);
	return rc;
}
