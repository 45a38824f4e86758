/*
 * One egress client connection, on its own thread with blocking sockets and kernel timeouts:
 * absolute-URI HTTP requests forwarded (keep-alive both sides), CONNECT tunnels relayed after
 * the ClientHello's SNI was checked against the CONNECT host, or intercepted with a minted
 * certificate so that every request inside is decided on method and path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "egress_int.h"
#include "tls.h"

#define EIO_CHUNK      (64u * 1024)
#define EIN_MAX        (HTTP1_MAX_HEAD_BYTES + EGRESS_HELLO_MAX)
#define EUP_MAX        (HTTP1_MAX_HEAD_BYTES + EIO_CHUNK)
#define EOUT_MAX       (HTTP1_MAX_HEAD_BYTES + EIO_CHUNK + 64) /* head + one chunk */
#define ECONNECTED_MSG "HTTP/1.1 200 Connection established\r\n\r\n"

typedef struct eio {
	int fd;
	SSL *ssl;
	int *alert; /* NULL, or where a read records the peer's fatal TLS alert (code + 1) */
} eio;

typedef struct econn {
	egress_server *s;
	elistener *l;
	struct econn *prev, *next;
	int cfd;
	int ufd; /* kept upstream connection, -1 when none */
	SSL *ussl;
	int ualert; /* the fatal TLS alert ussl's origin sent (code + 1), 0: none */
	char ukey[SSRF_MAX_HOST + 32];
	char uaddr[64];
	char remote[64];
	buf in;        /* client bytes */
	buf uin;       /* upstream bytes */
	buf out;       /* heads being written */
	buf qin, qout; /* a request body read whole for inspection, and what goes upstream */
} econn;

static void ignore(custos_err e)
{
	(void)e;
}

/* ---------------------------------------------------------------------------------------------
 * I/O
 */
static void set_rcv_timeout(int fd, uint64_t rcv_ns)
{
	if (rcv_ns < 1000)
		rcv_ns = 1000; /* 0 would mean no timeout */
	struct timeval r = { (time_t)(rcv_ns / NS_PER_S), (suseconds_t)(rcv_ns % NS_PER_S / 1000) };
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof(r));
}

static void set_timeouts(int fd, uint64_t rcv_ns, uint64_t snd_ns)
{
	struct timeval r = { (time_t)(rcv_ns / NS_PER_S), (suseconds_t)(rcv_ns % NS_PER_S / 1000) };
	struct timeval w = { (time_t)(snd_ns / NS_PER_S), (suseconds_t)(snd_ns % NS_PER_S / 1000) };
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof(r));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &w, sizeof(w));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* >0 bytes, 0 end of stream, -1 error or timeout. */
static ssize_t eio_read(eio io, void *p, size_t n)
{
	if (io.ssl) {
		int r = SSL_read(io.ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (r > 0)
			return r;
		int e = SSL_get_error(io.ssl, r);
		int a = e == SSL_ERROR_SSL && io.alert != NULL ? tls_err_peer_alert() : -1;
		if (a >= 0)
			*io.alert = a + 1;
		ERR_clear_error();
		return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
	ssize_t r;
	do
		r = recv(io.fd, p, n, 0);
	while (r == -1 && errno == EINTR);
	return r;
}

static int eio_write(eio io, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		if (io.ssl) {
			int r = SSL_write(io.ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
			if (r <= 0) {
				ERR_clear_error();
				return -1;
			}
			b += r;
			n -= (size_t)r;
			continue;
		}
		ssize_t r = send(io.fd, b, n, MSG_NOSIGNAL);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Reads more into b: >0 bytes, 0 end of stream, -1 error, -2 buffer full. */
static ssize_t read_more(eio io, buf *b)
{
	size_t room = b->max - buf_used(b);
	if (room == 0)
		return -2;
	size_t want = room < EIO_CHUNK ? room : EIO_CHUNK;
	if (buf_reserve(b, want) != CUSTOS_OK)
		return -2;
	ssize_t n = eio_read(io, buf_tail(b), want);
	if (n > 0)
		buf_commit(b, (size_t)n);
	return n;
}

/* Head length (>0), 0 for a clean end before any byte, -1 with *st the status to answer (0:
 * nothing to answer: I/O error, timeout or a truncated head). */
/* total_ns (a client's head; 0: none, an upstream's): from its first byte the head must be
 * whole within total_ns, however the bytes trickle in (each read otherwise waits the socket's
 * own timeout anew); past it -1 with errno EAGAIN, as a read that timed out. The socket's
 * receive timeout is narrowed for the reads in between and set back to total_ns after. */
static ssize_t read_head(eio io, buf *b, http1_parser *p, unsigned *st, uint64_t total_ns)
{
	uint64_t t0 = 0;
	bool narrowed = false;
	ssize_t ret;

	*st = 0;
	for (;;) {
		if (buf_used(b)) {
			ssize_t r = http1_parse_head(p, (const char *)buf_ptr(b), buf_used(b));
			if (r > 0) {
				ret = r;
				break;
			}
			if (r < 0) {
				*st = p->err.status;
				ret = -1;
				break;
			}
			if (total_ns) { /* a head begun and not whole: what is left of its time */
				uint64_t now = tm_mono_ns();
				if (t0 == 0)
					t0 = now;
				uint64_t used = now - t0;
				if (used >= total_ns) {
					errno = EAGAIN;
					ret = -1;
					break;
				}
				set_rcv_timeout(io.fd, total_ns - used);
				narrowed = true;
			}
		}
		ssize_t n = read_more(io, b);
		if (n == -2) {
			*st = 431;
			ret = -1;
			break;
		}
		if (n <= 0) {
			ret = n == 0 && buf_used(b) == 0 ? 0 : -1;
			break;
		}
	}
	if (narrowed) {
		int e = errno;
		set_rcv_timeout(io.fd, total_ns);
		errno = e;
	}
	return ret;
}

static void header_safe(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* A small response from custos itself, with the reason in X-Custos-Reason. */
static void reply(econn *c, eio io, unsigned status, const char *reason, bool close)
{
	char why[256];
	snprintf(why, sizeof(why), "%s",
	         reason && reason[0] ? reason : http1_status_reason(status));
	header_safe(why);
	http1_header add = { SPAN_LIT(EGRESS_REASON_HEADER), span_cstr(why) };
	char body[300];
	int n = snprintf(body, sizeof(body), "%s\n", why);
	buf_reset(&c->out);
	if (http1_write_simple_response(&c->out, status, SPAN_LIT("text/plain"),
	                                span_of(body, (size_t)n), &add, 1,
	                                close ? HTTP1_SIMPLE_CLOSE : 0) == CUSTOS_OK)
		(void)eio_write(io, buf_ptr(&c->out), buf_used(&c->out));
	buf_reset(&c->out);
}

static void span_to(span s, char *out, size_t n)
{
	size_t l = s.len < n - 1 ? s.len : n - 1;
	memcpy(out, s.ptr, l);
	out[l] = '\0';
}

/* A request head that did not come whole (read_head gave hl <= 0, err the errno after it):
 * nothing when the client ended the connection, or it idled out, between requests; else the
 * refusal is audited (egress.request, decision deny): a head the parser refused or one too
 * large (st: answered with it), one that did not arrive within the read timeout (408,
 * answered), one the client cut off (400: no one to answer). ih: the intercepted tunnel's
 * host (port iport), or NULL. */
static void head_failed(econn *c, eio cli, const http1_parser *p, ssize_t hl, unsigned st, int err,
                        const ssrf_host *ih, uint16_t iport)
{
	erec r;
	bool answer = true;
	if (hl == 0 || (st == 0 && buf_used(&c->in) == 0))
		return;
	erec_init(&r, ih ? "intercepted" : "http");
	r.decision = "deny";
	if (ih) {
		r.scheme = "https";
		snprintf(r.host, sizeof(r.host), "%s", ih->name);
		r.port = iport;
	}
	if (st) {
		r.status = st;
		snprintf(r.reason, sizeof(r.reason), "malformed request: %s",
		         p->err.reason ? p->err.reason : "request head too large");
	} else if (err == EAGAIN || err == EWOULDBLOCK) {
		r.status = 408;
		snprintf(r.reason, sizeof(r.reason), "request head not received in time");
	} else {
		r.status = 400;
		snprintf(r.reason, sizeof(r.reason), "client closed inside the request head");
		answer = false;
	}
	if (answer)
		reply(c, cli, r.status, r.reason, true);
	egress_audit(c->s, c->l, &r);
}

/* ---------------------------------------------------------------------------------------------
 * Upstream connections
 */
static void up_close(econn *c)
{
	pthread_mutex_lock(&c->s->lock);
	int fd = c->ufd;
	c->ufd = -1;
	pthread_mutex_unlock(&c->s->lock);
	if (c->ussl) {
		/* A best-effort close_notify: OpenSSL drops the session of a connection freed
		 * without one, and the origin's session is kept for resumption (tls.c). Sent
		 * only if the socket has room at once (non-blocking; SIGPIPE is ignored): an
		 * origin that stopped reading must not hold this thread for the send timeout,
		 * and ufd is already -1, so a drain could not cut the wait short. Nothing is
		 * sent during a handshake that failed. */
		if (fd >= 0) {
			int fl = fcntl(fd, F_GETFL);
			if (fl != -1 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != -1)
				(void)SSL_shutdown(c->ussl);
		}
		ERR_clear_error();
		SSL_free(c->ussl);
		c->ussl = NULL;
	}
	if (fd >= 0)
		close(fd);
	c->ukey[0] = '\0';
	buf_reset(&c->uin);
}

/* Whether the kept upstream connection is unfit for another request: bytes are waiting on it
 * (buffered, in TLS, or on the socket), or it hung up or failed. Between requests the source
 * has nothing to say; what it said anyway (a second response behind a Content-Length body)
 * would be read as the next request's answer. The loops path drops such a connection when it
 * becomes readable (egress_fwd.c up_io); here it is checked before reuse. */
static bool up_stale(econn *c)
{
	if (buf_used(&c->uin) > 0 || (c->ussl != NULL && SSL_has_pending(c->ussl)))
		return true;
	struct pollfd p = { .fd = c->ufd, .events = POLLIN };
	int n;
	do
		n = poll(&p, 1, 0);
	while (n == -1 && errno == EINTR);
	return n != 0; /* readable, hung up, or poll failed */
}

static int connect_any(econn *c, const ssrf_target *t, uint64_t timeout_ns, char *why, size_t wn)
{
	int err = 0;
	for (size_t i = 0; i < t->n; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&t->addrs[i];
		int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd == -1) {
			err = errno;
			continue;
		}
		int r = connect(fd, sa, t->lens[i]);
		if (r == -1 && errno == EINPROGRESS) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			int pr;
			do
				pr = poll(&pf, 1, (int)(timeout_ns / 1000000));
			while (pr == -1 && errno == EINTR);
			socklen_t el = sizeof(err);
			if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
			    err == 0)
				r = 0;
			else if (pr == 0)
				err = ETIMEDOUT;
		} else if (r == -1) {
			err = errno;
		}
		if (r == 0) {
			int fl = fcntl(fd, F_GETFL);
			if (fl != -1 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != -1) {
				const void *a =
				        sa->sa_family == AF_INET
				                ? (const void *)&(
				                          (const struct sockaddr_in *)(const void *)
				                                  sa)
				                          ->sin_addr
				                : (const void *)&((const struct sockaddr_in6
				                                           *)(const void *)sa)
				                          ->sin6_addr;
				if (inet_ntop(sa->sa_family, a, c->uaddr, sizeof(c->uaddr)) == NULL)
					c->uaddr[0] = '\0';
				return fd;
			}
			err = errno;
		}
		close(fd);
	}
	snprintf(why, wn, "cannot connect upstream: %s", strerror(err ? err : ECONNREFUSED));
	return -1;
}

/* The kept upstream connection's key, "https|host|port" (no printf on the hot path). */
static void ukey_make(char key[SSRF_MAX_HOST + 32], bool https, const char *name, uint16_t port)
{
	size_t nl = strnlen(name, SSRF_MAX_HOST);
	char *p = key;
	*p++ = https ? '1' : '0';
	*p++ = '|';
	memcpy(p, name, nl);
	p += nl;
	*p++ = '|';
	char d[6];
	int k = 0;
	do
		d[k++] = (char)('0' + port % 10);
	while ((port /= 10) != 0);
	while (k)
		*p++ = d[--k];
	*p = '\0';
}

/* Connects (or reuses the kept connection) to the checked addresses; TLS verified for https.
 * 0, or 502 with r->reason. */
static unsigned up_get(econn *c, erec *r, const esource *src, const ssrf_host *h, uint16_t port,
                       const ssrf_target *t)
{
	char key[sizeof(c->ukey)];
	ukey_make(key, src->o.https, h->name, port);
	if (c->ufd >= 0 && strcmp(key, c->ukey) == 0) {
		snprintf(r->addr, sizeof(r->addr), "%s", c->uaddr);
		return 0;
	}
	up_close(c);
	int fd = connect_any(c, t, c->s->o.connect_timeout_ns, r->reason, sizeof(r->reason));
	if (fd < 0)
		return 502;
	uint64_t rt = src->o.timeout_ns ? src->o.timeout_ns : c->s->o.read_timeout_ns;
	set_timeouts(fd, rt, rt);
	pthread_mutex_lock(&c->s->lock);
	c->ufd = fd;
	pthread_mutex_unlock(&c->s->lock);
	snprintf(r->addr, sizeof(r->addr), "%s", c->uaddr);
	if (src->o.https) {
		SSL *ssl = egress_source_ssl_new(c->s, src);
		if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
			SSL_free(ssl);
			snprintf(r->reason, sizeof(r->reason), "upstream TLS setup failed");
			up_close(c);
			return 502;
		}
		c->ussl = ssl;
		c->ualert = 0;
		if (h->kind == SSRF_HOST_NAME) {
			SSL_set_tlsext_host_name(ssl, h->name);
			SSL_set1_host(ssl, h->name);
		} else {
			X509_VERIFY_PARAM_set1_ip(SSL_get0_param(ssl), h->addr,
			                          h->kind == SSRF_HOST_V4 ? 4 : 16);
		}
		/* The origin's newest session, if any: the key names the host (the name verified,
		 * and the SNI) and the port; the context is the source's (its CA). */
		tls_origin_session_offer(ssl, key);
		if (SSL_connect(ssl) != 1) {
			tls_origin_session_failed(ssl);
			long vr = SSL_get_verify_result(ssl);
			unsigned long oe = ERR_peek_error();
			char eb[160] = "";
			if (oe)
				ERR_error_string_n(oe, eb, sizeof(eb));
			ERR_clear_error();
			if (vr != X509_V_OK)
				snprintf(r->reason, sizeof(r->reason),
				         "upstream certificate verification failed: %s",
				         X509_verify_cert_error_string(vr));
			else
				snprintf(r->reason, sizeof(r->reason),
				         "upstream TLS handshake failed: %s",
				         eb[0] ? eb : "connection closed");
			up_close(c);
			return 502;
		}
	}
	snprintf(c->ukey, sizeof(c->ukey), "%s", key);
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * One HTTP request (absolute-form from the client, or origin-form inside an intercepted
 * tunnel when ih is set). Returns true when the client connection may carry another one.
 */
static bool send_chunk(eio io, span d)
{
	char hdr[HTTP1_CHUNK_HDR_MAX];
	size_t hl = http1_chunk_header(hdr, d.len);
	return eio_write(io, hdr, hl) == 0 && eio_write(io, d.ptr, d.len) == 0 &&
	       eio_write(io, "\r\n", 2) == 0;
}

static int flush_out(econn *c, eio cli)
{
	int r = buf_used(&c->out) ? eio_write(cli, buf_ptr(&c->out), buf_used(&c->out)) : 0;
	buf_reset(&c->out);
	return r;
}

/* Appends body bytes d for the client behind what c->out holds (framed as cf), flushing when
 * full; *sent is set once bytes went to the client. False on a client write error. */
static bool out_body(econn *c, eio cli, http1_framing cf, span d, bool *sent)
{
	if (buf_used(&c->out) + d.len + HTTP1_CHUNK_HDR_MAX + 2 > c->out.max) {
		*sent = true;
		if (flush_out(c, cli) != 0)
			return false;
	}
	if (d.len + HTTP1_CHUNK_HDR_MAX + 2 > c->out.max) {
		*sent = true;
		return cf == HTTP1_BODY_CHUNKED ? send_chunk(cli, d)
		                                : eio_write(cli, d.ptr, d.len) == 0;
	}
	return (cf == HTTP1_BODY_CHUNKED ? http1_chunk_append(&c->out, d)
	                                 : buf_append(&c->out, d.ptr, d.len)) == CUSTOS_OK;
}

/* The request's audit event, then its inspection state is released. */
static void req_done(econn *c, erec *r)
{
	/* an inspected request body, whatever path ended the request: freed before the audit
	 * event gives back what it counted as held (egress_inspect_unhold) */
	buf_free(&c->qin);
	buf_free(&c->qout);
	egress_audit(c->s, c->l, r);
	egress_inspect_release(r);
}

/* Inside an intercepted tunnel the Host field must name the CONNECT authority, as the plain
 * proxy requires it to equal the absolute-form authority: the same host (canonical form) and
 * port, a Host without a port meaning 443. Policy and audit see the CONNECT host, so any other
 * name (another vhost on the same address) would reach the source unchecked. An absent Host
 * (HTTP/1.0) is written from the CONNECT authority. */
/* Reads the rest of a request body (bd) from the client into c->qin, at most
 * egress.inspect.max_body bytes: 0, the status to answer with r->reason (413 past the limit,
 * 503 past egress.inspect.max_held, the parser's status for a malformed body), or -1 when the
 * client went away. */
static int read_body(econn *c, eio cli, http1_body *bd, erec *r)
{
	buf_reset(&c->qin);
	while (!http1_body_done(bd)) {
		span d = { NULL, 0 };
		bool done = false;
		ssize_t k = http1_body_decode(bd, (const char *)buf_ptr(&c->in), buf_used(&c->in),
		                              &d, &done);
		if (k < 0) {
			snprintf(r->reason, sizeof(r->reason), "request body: %s", bd->err.reason);
			r->decision = "deny";
			return (int)bd->err.status;
		}
		unsigned st = d.len ? egress_inspect_request_append(r, &c->qin, d) : 0;
		if (st)
			return (int)st;
		buf_consume(&c->in, (size_t)k);
		if (done)
			break;
		if (k == 0 && read_more(cli, &c->in) <= 0)
			return -1;
	}
	return 0;
}

static bool tunnel_host_ok(span hv, const ssrf_host *ih, uint16_t iport)
{
	span hs;
	uint16_t hp = 0;
	ssrf_host hh;
	if (hv.len == 0)
		return true;
	if (ssrf_split_authority(hv, 443, &hs, &hp) != CUSTOS_OK ||
	    ssrf_parse_host(hs, &hh) != CUSTOS_OK) {
		err_clear();
		return false;
	}
	if (hp != iport || hh.kind != ih->kind)
		return false;
	return hh.kind == SSRF_HOST_NAME
	               ? strcmp(hh.name, ih->name) == 0
	               : memcmp(hh.addr, ih->addr, hh.kind == SSRF_HOST_V4 ? 4 : 16) == 0;
}

/* The CONNECT authority as a Host value ("h", "h:8443", "[::1]:8443"): 443 is left out. */
static void tunnel_authority(char *out, size_t n, const ssrf_host *ih, uint16_t iport)
{
	bool v6 = ih->kind == SSRF_HOST_V6;
	if (iport == 443)
		snprintf(out, n, "%s%s%s", v6 ? "[" : "", ih->name, v6 ? "]" : "");
	else
		snprintf(out, n, "%s%s%s:%u", v6 ? "[" : "", ih->name, v6 ? "]" : "",
		         (unsigned)iport);
}

static bool handle_request(econn *c, eio cli, http1_parser *p, size_t hl, const ssrf_host *ih,
                           uint16_t iport)
{
	egress_server *s = c->s;
	http1_head *h = &p->head;
	erec r;
	ssrf_host host;
	uint16_t port = iport;
	bool cli_ka = h->keep_alive && h->framing == HTTP1_BODY_NONE;

	erec_init(&r, ih ? "intercepted" : "http");
	span_to(h->method, r.method, sizeof(r.method));
	r.scheme = ih ? "https" : "http";
	if (ih) {
		host = *ih;
		if (h->form != HTTP1_TARGET_ORIGIN) {
			r.status = 400;
			snprintf(r.reason, sizeof(r.reason),
			         "origin-form expected inside a tunnel");
			goto reject;
		}
		if (!tunnel_host_ok(h->host, ih, iport)) {
			r.status = 400;
			snprintf(r.reason, sizeof(r.reason),
			         "Host differs from the CONNECT authority");
			span_to(h->path, r.path, sizeof(r.path));
			snprintf(r.host, sizeof(r.host), "%s", host.name);
			r.port = port;
			goto reject;
		}
	} else {
		span hs;
		custos_err e = ssrf_split_authority(h->authority, 80, &hs, &port);
		if (e == CUSTOS_OK)
			e = ssrf_parse_host(hs, &host);
		if (e != CUSTOS_OK) {
			r.status = e == CUSTOS_ERR_DENIED ? 403 : 400;
			r.decision = "deny";
			snprintf(r.reason, sizeof(r.reason), "%s", err_msg());
			span_to(h->authority, r.host, sizeof(r.host));
			goto reject;
		}
	}
	snprintf(r.host, sizeof(r.host), "%s", host.name);
	r.port = port;
	span path = h->path;
	span_to(path, r.path, sizeof(r.path));
	span hid = { NULL, 0 };
	(void)http1_header_get(h, SPAN_LIT(EGRESS_REQUEST_ID_HEADER), &hid);
	r.how = egress_attribute(c->l->model, hid, r.ingress_id, r.principal);

	const esource *src = NULL;
	ssrf_target tgt;
	span ppath = path.len && path.ptr[0] == '/' ? path : SPAN_LIT("/");
	char key[sizeof(c->ukey)];
	ukey_make(key, ih != NULL, host.name, port);
	bool reuse = c->ufd >= 0 && strcmp(key, c->ukey) == 0;
	r.status = egress_decide(s, c->l, &r, ih != NULL, &host, port, h->method, ppath,
	                         reuse ? EDECIDE_REUSE : EDECIDE_REQUEST, &src, &tgt);
	if (r.status)
		goto reject;

	/* The path and query string the rule inspects (inspect: request:): a value found in the
	 * path refuses the request; the target goes upstream with the query's masks. */
	span qtarget = { NULL, 0 };
	if (egress_inspect_target_wanted(&r)) {
		r.status = egress_inspect_target(&r, h, &qtarget);
		if (r.status)
			goto reject;
	}
	/* A body the rule inspects is read whole and decided before anything goes upstream. */
	bool qinsp = h->framing != HTTP1_BODY_NONE && egress_inspect_request_wanted(&r);
	egress_body_kind qkind = qinsp ? egress_body_kind_of(h) : EBODY_RAW;
	if (qinsp) {
		r.status = egress_inspect_request_begin(&r, h);
		if (r.status)
			goto reject;
	}

	/* The upstream head, written while the spans into c->in are valid. The source gets the
	 * path the policy judged (normalised), the query as sent or as inspection masked it. */
	buf ftgt;
	if (egress_forward_target(qtarget.len ? qtarget : h->path, &ftgt) != CUSTOS_OK) {
		buf_free(&ftgt);
		log_error("egress: %s", err_msg());
		r.status = 500;
		r.decision = "error";
		snprintf(r.reason, sizeof(r.reason), "request target could not be written");
		goto reject;
	}
	static const span drop[] = { SPAN_LIT("Proxy-Authorization"),
		                     SPAN_LIT(EGRESS_REQUEST_ID_HEADER), SPAN_LIT("Expect") };
	http1_write_opts wo = {
		.framing = qinsp ? HTTP1_BODY_NONE /* length added below */
		           : h->framing == HTTP1_BODY_CHUNKED ? HTTP1_BODY_CHUNKED
		           : h->framing == HTTP1_BODY_LENGTH  ? HTTP1_BODY_LENGTH
		                                              : HTTP1_BODY_NONE,
		.target = buf_span(&ftgt),
		.content_length = h->content_length,
		.drop = drop,
		.ndrop = CUSTOS_ARRAY_LEN(drop),
	};
	char iauth[SSRF_MAX_HOST + 16];
	if (ih && h->host.len == 0) {
		tunnel_authority(iauth, sizeof(iauth), ih, iport);
		wo.host = span_cstr(iauth);
	}
	buf_reset(&c->out);
	custos_err we = http1_write_request_head(&c->out, h, &wo);
	buf_free(&ftgt);
	if (we != CUSTOS_OK) {
		r.status = 400;
		snprintf(r.reason, sizeof(r.reason), "request head too large to forward");
		goto reject;
	}
	cli_ka = h->keep_alive;
	bool expect = h->expect_continue;
	http1_framing rqf = h->framing;
	http1_method meth = h->meth;
	http1_limits lim = { .max_body = EGRESS_MAX_REQUEST_BODY };
	http1_body bd;
	http1_body_init(&bd, h, &lim);
	buf_consume(&c->in, hl); /* h's spans are stale from here */

	if (qinsp) {
		if (expect && eio_write(cli, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
			goto fail_close;
		expect = false;
		int st = read_body(c, cli, &bd, &r);
		if (st < 0)
			goto fail_close;
		if (st == 0) {
			egress_hash_request_whole(&r, buf_span(&c->qin)); /* as the model sent it */
			st = (int)egress_inspect_request(&r, qkind, &c->qin, &c->qout);
		}
		buf_free(&c->qin);
		if (st == 0 && egress_head_set_length(&c->out, buf_used(&c->qout)) != CUSTOS_OK) {
			snprintf(r.reason, sizeof(r.reason), "request head too large to forward");
			r.decision = "error";
			st = 400;
		}
		if (st) {
			buf_free(&c->qout);
			r.status = (unsigned)st;
			reply(c, cli, r.status, r.reason, true);
			req_done(c, &r);
			return false;
		}
		egress_hash_forwarded(&r, buf_span(&c->qout)); /* when inspection rewrote it */
		rqf = HTTP1_BODY_NONE;                         /* the body goes out with the head */
	}
	/* Fail closed: nothing goes upstream before the decision is in the audit trail. It is
	 * written once custos has nothing left to refuse before sending (an inspected body
	 * passed), as on the forward loops: a refused call has its egress.request alone. */
	if (egress_audit_decision(s, c->l, &r) != CUSTOS_OK) {
		r.status = 503;
		r.decision = "error";
		snprintf(r.reason, sizeof(r.reason), "%s", EGRESS_AUDIT_REFUSED);
		buf_free(&c->qout);
		if (rqf != HTTP1_BODY_NONE)
			cli_ka = false; /* the body was not read */
		reply(c, cli, r.status, r.reason, !cli_ka);
		req_done(c, &r);
		return cli_ka;
	}

	/* A kept upstream connection may have been closed by the source while idle: a bodyless
	 * request that finds it dead before any response byte is sent once more on a new one. */
	bool can_retry = reuse && rqf == HTTP1_BODY_NONE && !qinsp;
	if (reuse && up_stale(c))
		goto retry; /* closed, the name resolved (EDECIDE_REUSE did not), a new one made */
again:
	r.status = up_get(c, &r, src, &host, port, &tgt);
	if (r.status) {
		r.decision = "error";
		if (rqf != HTTP1_BODY_NONE)
			cli_ka = false;
		reply(c, cli, r.status, r.reason, !cli_ka);
		req_done(c, &r);
		return cli_ka;
	}
	eio up = { c->ufd, c->ussl, &c->ualert };
	if (expect && eio_write(cli, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
		goto fail_close;
	expect = false;
	if (eio_write(up, buf_ptr(&c->out), buf_used(&c->out)) != 0 ||
	    (qinsp && eio_write(up, buf_ptr(&c->qout), buf_used(&c->qout)) != 0)) {
		buf_free(&c->qout);
		if (can_retry)
			goto retry;
		snprintf(r.reason, sizeof(r.reason),
		         "upstream connection failed while the request was sent");
		goto up_fail;
	}
	if (qinsp) {
		r.bytes_up += buf_used(&c->qout);
		buf_free(&c->qout);
	}
	/* Request body. */
	while (rqf != HTTP1_BODY_NONE && !http1_body_done(&bd)) {
		span d = { NULL, 0 };
		bool done = false;
		ssize_t k = http1_body_decode(&bd, (const char *)buf_ptr(&c->in), buf_used(&c->in),
		                              &d, &done);
		if (k < 0) {
			r.status = bd.err.status;
			snprintf(r.reason, sizeof(r.reason), "request body: %s", bd.err.reason);
			r.decision = "deny";
			up_close(c);
			reply(c, cli, r.status, r.reason, true);
			req_done(c, &r);
			return false;
		}
		if (d.len) {
			bool ok = rqf == HTTP1_BODY_CHUNKED ? send_chunk(up, d)
			                                    : eio_write(up, d.ptr, d.len) == 0;
			if (!ok)
				goto up_fail;
			r.bytes_up += d.len;
			egress_hash_request(&r, d);
		}
		buf_consume(&c->in, (size_t)k);
		if (done)
			break;
		if (k == 0 && read_more(cli, &c->in) <= 0)
			goto fail_close;
	}
	if (rqf == HTTP1_BODY_CHUNKED && eio_write(up, "0\r\n\r\n", 5) != 0)
		goto up_fail;
	egress_hash_request_end(&r); /* the whole body went (none: the empty body's digest) */

	/* Response head (1xx interim responses skipped). */
	http1_parser rp;
	ssize_t rhl;
	unsigned st;
	for (;;) {
		http1_parser_init_response(&rp, NULL, meth);
		errno = 0;
		rhl = read_head(up, &c->uin, &rp, &st, 0);
		/* An origin that ended the connection with a TLS alert (with TLS 1.3, its refusal
		 * of the client certificate comes on the first read) answered: not retried. */
		if (rhl <= 0 && can_retry && buf_used(&c->uin) == 0 && !c->ualert)
			goto retry;
		if (rhl <= 0) {
			if (st)
				egress_head_refused(&r, &rp);
			else if (c->ualert)
				tls_peer_alert_reason(c->ussl, c->ualert - 1, r.reason,
				                      sizeof(r.reason));
			else if (errno == EAGAIN || errno == EWOULDBLOCK)
				snprintf(r.reason, sizeof(r.reason),
				         "upstream read timed out before the response head");
			else if (rhl == 0)
				snprintf(r.reason, sizeof(r.reason),
				         "upstream closed the connection before a response");
			goto up_fail;
		}
		if (rp.head.status >= 200 || rp.head.status == 101)
			break;
		buf_consume(&c->uin, (size_t)rhl);
	}
	http1_head *rh = &rp.head;
	r.status = rh->status;
	uint64_t cap = src->o.max_response ? src->o.max_response : s->o.max_response;
	if (rh->status == 101 || rh->framing == HTTP1_BODY_TUNNEL) {
		egress_head_refused(&r, &rp);
		r.status = 502;
		goto up_fail_reason;
	}
	if (rh->framing == HTTP1_BODY_LENGTH && rh->content_length > cap) {
		snprintf(r.reason, sizeof(r.reason),
		         "response of %llu bytes exceeds max_response %llu",
		         (unsigned long long)rh->content_length, (unsigned long long)cap);
		r.status = 502;
		r.decision = EGRESS_DECISION_CAP;
		goto up_fail_reason;
	}
	if (r.classification >= 0)
		egress_taint_raise(c->l, r.classification);
	/* Response inspection (the rule's inspect: response:): the body is rewritten (masks
	 * change lengths), so it goes out chunked; the head is held back until the first
	 * inspected bytes are released, so a value found early is answered with a clean 403. */
	int iop = egress_inspect_open(&r);
	if (iop < 0) {
		snprintf(r.reason, sizeof(r.reason), "content inspection unavailable");
		r.status = 502;
		goto up_fail_reason;
	}
	bool insp = iop > 0 && egress_inspect_response_begin(&r, rh);
	bool sent = false, released = false;
	custos_err ie = CUSTOS_OK;
	http1_framing rf = rh->framing;
	http1_framing cf = insp || rf == HTTP1_BODY_CLOSE ? HTTP1_BODY_CHUNKED : rf;
	http1_write_opts ro = { .framing = cf,
		                .content_length = rh->content_length,
		                .close = !cli_ka };
	if (cf == HTTP1_BODY_NONE && egress_bodyless_length(rh, &ro.content_length))
		ro.framing = HTTP1_BODY_LENGTH; /* HEAD, 304: the size, no body */
	bool up_ka = rh->keep_alive;
	http1_body rb;
	http1_body_init(&rb, rh, NULL);
	buf_reset(&c->out);
	if (http1_write_response_head(&c->out, rh, &ro) != CUSTOS_OK) {
		snprintf(r.reason, sizeof(r.reason), "response head too large");
		r.status = 502;
		goto up_fail_reason;
	}
	buf_consume(&c->uin, (size_t)rhl);
	egress_hash_response_begin(&r);
	/* Response body, streamed and counted against the cap. Bytes gather in c->out behind the
	 * head (one send for a small response) and are flushed before waiting on the upstream. */
	bool body_done = rf == HTTP1_BODY_NONE;
	while (!body_done) {
		span d = { NULL, 0 };
		bool done = false;
		ssize_t k = buf_used(&c->uin)
		                    ? http1_body_decode(&rb, (const char *)buf_ptr(&c->uin),
		                                        buf_used(&c->uin), &d, &done)
		                    : 0;
		if (k < 0) {
			snprintf(r.reason, sizeof(r.reason), "upstream body: %s", rb.err.reason);
			egress_upstream_cut(&r);
			goto truncated;
		}
		if (d.len) {
			if (r.bytes_down + d.len > cap) {
				snprintf(r.reason, sizeof(r.reason),
				         "response exceeded max_response %llu; cut off",
				         (unsigned long long)cap);
				r.decision = EGRESS_DECISION_CAP;
				goto truncated;
			}
			r.bytes_down += d.len;
			span o = d;
			if (insp) {
				ie = egress_inspect_response_data(&r, d, &o);
				if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED)
					goto insp_failed;
			}
			if (o.len) {
				released = true;
				egress_hash_response(&r, o);
				if (!out_body(c, cli, cf, o, &sent))
					goto fail_close;
			}
			if (ie == CUSTOS_ERR_DENIED)
				goto insp_denied;
		}
		buf_consume(&c->uin, (size_t)k);
		if (done)
			break;
		if (k == 0) {
			if (!insp || released) {
				sent = true;
				if (flush_out(c, cli) != 0)
					goto fail_close;
			}
			ssize_t n = read_more(up, &c->uin);
			if (n == 0 && http1_body_eof(&rb) == CUSTOS_OK) {
				up_ka = false;
				break;
			}
			if (n <= 0) {
				snprintf(r.reason, sizeof(r.reason), "%s",
				         n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
				                 ? "upstream read timed out mid-body"
				                 : "upstream closed mid-body");
				egress_upstream_cut(&r);
				goto truncated;
			}
		}
	}
	if (insp) { /* the held-back tail */
		span o;
		ie = egress_inspect_response_end(&r, &o);
		if (ie != CUSTOS_OK && ie != CUSTOS_ERR_DENIED)
			goto insp_failed;
		egress_hash_response(&r, o);
		if (o.len && !out_body(c, cli, cf, o, &sent))
			goto fail_close;
		if (ie == CUSTOS_ERR_DENIED)
			goto insp_denied;
	}
	if (cf == HTTP1_BODY_CHUNKED && http1_chunk_end(&c->out) != CUSTOS_OK)
		goto fail_close;
	if (flush_out(c, cli) != 0)
		goto fail_close;
	egress_hash_response_end(&r); /* the whole body was written to the model */
	if (!up_ka || rf == HTTP1_BODY_CLOSE || buf_used(&c->uin))
		up_close(c);
	req_done(c, &r);
	return cli_ka;

retry:
	can_retry = false;
	up_close(c);
	{
		custos_err e = egress_resolve(s, &host, port, src->o.allow_private, &tgt);
		if (e != CUSTOS_OK) {
			r.status = e == CUSTOS_ERR_DENIED ? 403 : 502;
			snprintf(r.reason, sizeof(r.reason), "%s", err_msg());
			r.decision = e == CUSTOS_ERR_DENIED ? "deny" : "error";
			reply(c, cli, r.status, r.reason, !cli_ka);
			req_done(c, &r);
			return cli_ka;
		}
	}
	goto again;
reject:
	if (!r.decision)
		r.decision = "deny";
	if (h->framing != HTTP1_BODY_NONE)
		cli_ka = false; /* the body was not read: the connection cannot continue */
	reply(c, cli, r.status, r.reason, !cli_ka);
	req_done(c, &r);
	if (cli_ka)
		buf_consume(&c->in, hl);
	return cli_ka;
up_fail:
	if (!r.reason[0])
		snprintf(r.reason, sizeof(r.reason), "upstream failed: closed or timed out");
	r.status = 502;
up_fail_reason:
	r.decision = r.decision && strcmp(r.decision, "allow") == 0 ? "error" : r.decision;
	up_close(c);
	reply(c, cli, r.status, r.reason, true);
	req_done(c, &r);
	return false;
truncated:
	up_close(c);
	req_done(c, &r);
	return false;
insp_failed:
	log_error("egress: response inspection: %s", err_msg());
	snprintf(r.reason, sizeof(r.reason), "%s",
	         egress_inspect_fail_reason(&r) ? egress_inspect_fail_reason(&r)
	                                        : "content inspection failed; response cut off");
	r.decision = "error";
	if (!sent) { /* the head is still held: answer instead of the source */
		r.status = egress_inspect_fail_status(&r);
		reply(c, cli, r.status, r.reason, true);
	}
	goto truncated;
insp_denied:
	/* Nothing of the value went out. Before any byte reached the client the answer is a
	 * 403; after, the body is cut without its last chunk, so the client sees a truncated
	 * transfer, never a complete-looking one. */
	up_close(c);
	{
		const char *dec = "deny", *why = "response denied by content inspection";
		egress_inspect_outcome(&r, &dec, &why);
		snprintf(r.reason, sizeof(r.reason), "%s", why);
	}
	r.decision = "deny";
	if (!sent) {
		r.status = 403;
		reply(c, cli, r.status, r.reason, true);
	} else {
		(void)flush_out(c, cli);
	}
	req_done(c, &r);
	return false;
fail_close:
	if (!r.reason[0])
		snprintf(r.reason, sizeof(r.reason), "client went away");
	up_close(c);
	req_done(c, &r);
	return false;
}

/* ---------------------------------------------------------------------------------------------
 * CONNECT
 */
static int parse_hello(const uint8_t *p, size_t n, char *sni, size_t sn, bool *has)
{
	size_t i = 0;
#define NEED(k)                                                                                    \
	do {                                                                                       \
		if (n - i < (k))                                                                   \
			return -1;                                                                 \
	} while (0)
	NEED(35);
	i += 34; /* version, random */
	size_t l = p[i++];
	NEED(l + 2);
	i += l;
	l = (size_t)p[i] << 8 | p[i + 1];
	i += 2;
	NEED(l + 1);
	i += l;
	l = p[i++];
	NEED(l);
	i += l;
	if (i == n)
		return 1; /* no extensions */
	NEED(2);
	size_t el = (size_t)p[i] << 8 | p[i + 1];
	i += 2;
	NEED(el);
	size_t end = i + el;
	while (i + 4 <= end) {
		unsigned type = (unsigned)p[i] << 8 | p[i + 1];
		size_t xl = (size_t)p[i + 2] << 8 | p[i + 3];
		i += 4;
		if (xl > end - i)
			return -1;
		if (type == 0) {
			if (*has || xl < 5)
				return -1;
			size_t ll = (size_t)p[i] << 8 | p[i + 1];
			size_t nl = (size_t)p[i + 3] << 8 | p[i + 4];
			if (ll + 2 != xl || p[i + 2] != 0 || nl + 3 > ll || nl == 0 || nl >= sn)
				return -1;
			memcpy(sni, p + i + 5, nl);
			sni[nl] = '\0';
			if (strlen(sni) != nl)
				return -1;
			*has = true;
		}
		i += xl;
	}
	return i == end ? 1 : -1;
#undef NEED
}

int egress_hello_sni(const uint8_t *b, size_t n, char *sni, size_t sn, bool *has)
{
	static _Thread_local uint8_t hs[EGRESS_HELLO_MAX];
	size_t off = 0, hl = 0;
	*has = false;
	while (off + 5 <= n) {
		if (b[off] != 22 || b[off + 1] != 3)
			return -1;
		size_t rl = (size_t)b[off + 3] << 8 | b[off + 4];
		if (rl == 0 || rl > 16384)
			return -1;
		if (off + 5 + rl > n)
			return 0;
		if (hl + rl > sizeof(hs))
			return -1;
		memcpy(hs + hl, b + off + 5, rl);
		hl += rl;
		off += 5 + rl;
		if (hl >= 4) {
			if (hs[0] != 1)
				return -1;
			size_t ml = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
			if (ml + 4 > sizeof(hs))
				return -1;
			if (hl >= ml + 4)
				return parse_hello(hs + 4, ml, sni, sn, has);
		}
	}
	return 0;
}

/* The SNI rule, for tunnels and interception alike: a named host must be sent and equal
 * (case-insensitive, trailing dot dropped by the caller); an IP-literal host takes no SNI (RFC
 * 6066 has none for addresses) or its own spelling. */
static bool sni_matches(const ssrf_host *host, bool has, const char *sni)
{
	return host->kind == SSRF_HOST_NAME ? has && strcasecmp(sni, host->name) == 0
	                                    : !has || strcasecmp(sni, host->name) == 0;
}

/* True when the tunnel went on to the relay loop (egress_relay.c), which owns it from there. */
static bool tunnel(econn *c, erec *r, const esource *src, const ssrf_host *host,
                   const ssrf_target *tgt)
{
	eio cli = { c->cfd, NULL, NULL };
	char sni[SSRF_MAX_HOST + 1];
	bool has = false;
	int hr;
	while ((hr = egress_hello_sni(buf_ptr(&c->in), buf_used(&c->in), sni, sizeof(sni), &has)) ==
	       0)
		if (read_more(cli, &c->in) <= 0)
			break;
	if (hr != 1) {
		r->status = 403;
		r->decision = "deny";
		snprintf(r->reason, sizeof(r->reason),
		         hr == 0 ? "no TLS ClientHello arrived" : "not a TLS ClientHello");
		egress_audit(c->s, c->l, r);
		return false;
	}
	if (has) {
		size_t sl = strlen(sni);
		if (sl > 0 && sni[sl - 1] == '.')
			sni[sl - 1] = '\0';
		snprintf(r->sni, sizeof(r->sni), "%s", sni);
	}
	if (!sni_matches(host, has, sni)) {
		/* fatal alert unrecognized_name, then close */
		static const uint8_t alert[] = { 21, 3, 3, 0, 2, 2, 112 };
		(void)eio_write(cli, alert, sizeof(alert));
		r->status = 403;
		r->decision = "deny";
		snprintf(r->reason, sizeof(r->reason),
		         "TLS SNI '%s' does not match CONNECT host '%s'", has ? sni : "(none)",
		         host->name);
		egress_audit(c->s, c->l, r);
		return false;
	}
	up_close(c);
	int fd = connect_any(c, tgt, c->s->o.connect_timeout_ns, r->reason, sizeof(r->reason));
	if (fd < 0) {
		r->status = 502;
		r->decision = "error";
		egress_audit(c->s, c->l, r);
		return false;
	}
	pthread_mutex_lock(&c->s->lock);
	c->ufd = fd;
	pthread_mutex_unlock(&c->s->lock);
	snprintf(r->addr, sizeof(r->addr), "%s", c->uaddr);
	uint64_t rt = src->o.timeout_ns ? src->o.timeout_ns : c->s->o.read_timeout_ns;
	set_timeouts(fd, rt, rt);
	r->status = 200;
	if (r->classification >= 0)
		egress_taint_raise(c->l, r->classification);
	if (eio_write((eio){ fd, NULL, NULL }, buf_ptr(&c->in), buf_used(&c->in)) != 0) {
		snprintf(r->reason, sizeof(r->reason), "upstream went away");
	} else {
		r->bytes_up += buf_used(&c->in);
		buf_reset(&c->in);
		uint64_t cap = src->o.max_response ? src->o.max_response : c->s->o.max_response;
		pthread_mutex_lock(&c->s->lock);
		bool handed = egress_relay_add(c->s, c->l, c->cfd, fd, r, cap);
		if (handed)
			c->ufd = c->cfd = -1; /* the relay's now */
		pthread_mutex_unlock(&c->s->lock);
		if (handed)
			return true;
		snprintf(r->reason, sizeof(r->reason), "egress proxy stopping");
	}
	up_close(c);
	egress_audit(c->s, c->l, r);
	return false;
}

/* The SNI rule of a tunnel (sni_matches) inside an intercepted one, applied by the minted
 * context's ClientHello callback (mint_ssl_set_hello_check): a refusal fails the handshake with
 * an unrecognized_name alert before custos' certificate is sent. */
typedef struct sni_check {
	const ssrf_host *host;
	erec *r;
	bool ran, refused, has;
} sni_check;

static bool intercept_sni(void *arg, const char *sn)
{
	sni_check *k = arg;
	char name[TLSEXT_MAXLEN_host_name + 2] = ""; /* OpenSSL refuses longer names */
	k->ran = true;
	k->has = sn != NULL;
	if (sn) {
		snprintf(name, sizeof(name), "%s", sn);
		size_t sl = strlen(name);
		if (sl && name[sl - 1] == '.')
			name[sl - 1] = '\0';
	}
	snprintf(k->r->sni, sizeof(k->r->sni), "%s", name); /* for the audit event */
	k->refused = !sni_matches(k->host, k->has, name);
	return !k->refused;
}

static void intercept(econn *c, erec *r, const esource *src, const ssrf_host *host, uint16_t port)
{
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	sni_check k = { .host = host, .r = r };
	const mint_hello_check hc = { intercept_sni, &k };
	(void)src;
	if (buf_used(&c->in)) {
		r->status = 400;
		r->decision = "deny";
		snprintf(r->reason, sizeof(r->reason), "bytes sent before the CONNECT answer");
		egress_audit(c->s, c->l, r);
		return;
	}
	if (mint_ctx_for(c->s->mint, host->name, &ctx) != CUSTOS_OK) {
		r->status = 502;
		r->decision = "error";
		snprintf(r->reason, sizeof(r->reason), "minting a certificate: %s", err_msg());
		egress_audit(c->s, c->l, r);
		return;
	}
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL keeps its own reference */
	bool shook = ssl != NULL && mint_ssl_set_hello_check(ssl, &hc) == CUSTOS_OK &&
	             SSL_set_fd(ssl, c->cfd) == 1 && SSL_accept(ssl) == 1;
	if (!shook || !k.ran) { /* a handshake without the SNI check never goes on */
		unsigned long oe = ERR_peek_error();
		char eb[160] = "";
		if (oe)
			ERR_error_string_n(oe, eb, sizeof(eb));
		else if (shook)
			snprintf(eb, sizeof(eb), "the SNI check did not run");
		ERR_clear_error();
		r->status = 403;
		if (k.refused) { /* the alert went out; the client saw no certificate */
			r->decision = "deny";
			snprintf(r->reason, sizeof(r->reason),
			         "TLS SNI '%s' does not match CONNECT host '%s'",
			         k.has ? r->sni : "(none)", host->name);
		} else {
			r->decision = "error";
			snprintf(r->reason, sizeof(r->reason),
			         "client TLS handshake with the interception certificate failed "
			         "(does the sandbox trust the custos CA?): %s",
			         eb);
		}
		SSL_free(ssl);
		egress_audit(c->s, c->l, r);
		return;
	}
	r->status = 200;
	egress_audit(c->s, c->l, r); /* the tunnel; each request inside gets its own event */
	eio cli = { c->cfd, ssl, NULL };
	for (;;) {
		http1_parser p;
		unsigned st;
		http1_parser_init_request(&p, NULL);
		errno = 0; /* an end of stream leaves it: head_failed tells it from a timeout */
		ssize_t hl = read_head(cli, &c->in, &p, &st, c->s->o.idle_timeout_ns);
		if (hl <= 0) {
			head_failed(c, cli, &p, hl, st, errno, host, port);
			break;
		}
		if (!handle_request(c, cli, &p, (size_t)hl, host, port))
			break;
	}
	up_close(c);
	(void)SSL_shutdown(ssl);
	SSL_free(ssl);
}

/* True when the connection went on to the relay loop as a tunnel. */
static bool handle_connect(econn *c, http1_parser *p, size_t hl)
{
	http1_head *h = &p->head;
	eio cli = { c->cfd, NULL, NULL };
	erec r;
	span hs;
	ssrf_host host;
	uint16_t port = 0;

	erec_init(&r, "connect");
	snprintf(r.method, sizeof(r.method), "CONNECT");
	r.scheme = "https";
	span auth = h->authority.len ? h->authority : h->target;
	custos_err e = ssrf_split_authority(auth, 0, &hs, &port);
	if (e == CUSTOS_OK)
		e = ssrf_parse_host(hs, &host);
	if (e != CUSTOS_OK) {
		r.status = e == CUSTOS_ERR_DENIED ? 403 : 400;
		r.decision = "deny";
		snprintf(r.reason, sizeof(r.reason), "%s", err_msg());
		span_to(auth, r.host, sizeof(r.host));
		reply(c, cli, r.status, r.reason, true);
		egress_audit(c->s, c->l, &r);
		return false;
	}
	snprintf(r.host, sizeof(r.host), "%s", host.name);
	r.port = port;
	span hid = { NULL, 0 };
	(void)http1_header_get(h, SPAN_LIT(EGRESS_REQUEST_ID_HEADER), &hid);
	r.how = egress_attribute(c->l->model, hid, r.ingress_id, r.principal);
	const esource *src = egress_find_source(c->s, true, &host, port);
	bool icpt = src && src->o.intercept;
	ssrf_target tgt;
	r.status =
	        egress_decide(c->s, c->l, &r, true, &host, port, SPAN_LIT("CONNECT"), SPAN_LIT(""),
	                      icpt ? EDECIDE_INTERCEPT : EDECIDE_CONNECT, &src, &tgt);
	buf_consume(&c->in, hl);
	if (r.status == 0 && egress_audit_decision(c->s, c->l, &r) != CUSTOS_OK) {
		r.status = 503; /* fail closed: no tunnel without its decision on record */
		r.decision = "error";
		snprintf(r.reason, sizeof(r.reason), "%s", EGRESS_AUDIT_REFUSED);
	}
	if (r.status) {
		reply(c, cli, r.status, r.reason, true);
		egress_audit(c->s, c->l, &r);
		return false;
	}
	if (eio_write(cli, ECONNECTED_MSG, sizeof(ECONNECTED_MSG) - 1) != 0) {
		r.decision = "error";
		snprintf(r.reason, sizeof(r.reason), "client went away");
		egress_audit(c->s, c->l, &r);
		return false;
	}
	if (icpt) {
		r.kind = "intercept-tunnel";
		intercept(c, &r, src, &host, port);
		return false;
	}
	return tunnel(c, &r, src, &host, &tgt);
}

/* ---------------------------------------------------------------------------------------------
 * Connection
 */
void egress_conn_shutdown_all(egress_server *s)
{
	pthread_mutex_lock(&s->lock);
	for (econn *c = s->conns; c; c = c->next) {
		if (c->cfd >= 0)
			(void)shutdown(c->cfd, SHUT_RDWR);
		if (c->ufd >= 0)
			(void)shutdown(c->ufd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->lock);
}

bool egress_conn_serve(egress_server *s, elistener *l, int fd, const char *remote,
                       const uint8_t *pre, size_t npre)
{
	bool handed = false;
	econn c = { .s = s, .l = l, .cfd = fd, .ufd = -1 };
	eio cli = { fd, NULL, NULL };

	snprintf(c.remote, sizeof(c.remote), "%s", remote);
	buf_init(&c.in, EIN_MAX);
	buf_init(&c.uin, EUP_MAX);
	buf_init(&c.out, EOUT_MAX);
	buf_init(&c.qin, EGRESS_INSPECT_BODY_CEIL); /* egress.inspect.max_body checks first */
	buf_init(&c.qout, EGRESS_INSPECT_QOUT_MAX);
	if (npre && buf_append(&c.in, pre, npre) != CUSTOS_OK) { /* bounded by EIN_MAX */
		close(fd);
		buf_free(&c.in);
		buf_free(&c.uin);
		buf_free(&c.out);
		buf_free(&c.qin);
		buf_free(&c.qout);
		buf_free(&c.qin);
		buf_free(&c.qout);
		return false;
	}
	set_timeouts(fd, s->o.idle_timeout_ns, s->o.read_timeout_ns);
	pthread_mutex_lock(&s->lock);
	c.next = s->conns;
	if (s->conns)
		s->conns->prev = &c;
	s->conns = &c;
	s->nconns++;
	pthread_mutex_unlock(&s->lock);

	while (!atomic_load(&s->stopping)) {
		http1_parser p;
		unsigned st;
		http1_limits lim = { .max_body = EGRESS_MAX_REQUEST_BODY };
		http1_parser_init_request(&p, &lim);
		errno = 0; /* an end of stream leaves it: head_failed tells it from a timeout */
		ssize_t hl = read_head(cli, &c.in, &p, &st, s->o.idle_timeout_ns);
		if (hl <= 0) {
			head_failed(&c, cli, &p, hl, st, errno, NULL, 0);
			break;
		}
		http1_head *h = &p.head;
		if (h->meth == HTTP1_M_CONNECT) {
			handed = handle_connect(&c, &p, (size_t)hl);
			break;
		}
		if (h->form != HTTP1_TARGET_ABSOLUTE ||
		    !span_case_eq(h->scheme, SPAN_LIT("http"))) {
			erec r;
			erec_init(&r, "http");
			span_to(h->method, r.method, sizeof(r.method));
			span_to(h->target, r.path, sizeof(r.path));
			r.status = 400;
			r.decision = "deny";
			snprintf(r.reason, sizeof(r.reason),
			         h->form == HTTP1_TARGET_ABSOLUTE
			                 ? "https:// targets go through CONNECT"
			                 : "a forward proxy takes absolute URIs (http://host/path) "
			                   "or CONNECT");
			reply(&c, cli, 400, r.reason, true);
			egress_audit(s, l, &r);
			break;
		}
		if (!handle_request(&c, cli, &p, (size_t)hl, NULL, 0))
			break;
	}

	up_close(&c);
	pthread_mutex_lock(&s->lock);
	if (c.prev)
		c.prev->next = c.next;
	else
		s->conns = c.next;
	if (c.next)
		c.next->prev = c.prev;
	s->nconns--;
	pthread_mutex_unlock(&s->lock);
	if (!handed)
		close(fd);
	buf_free(&c.in);
	buf_free(&c.uin);
	buf_free(&c.out);
	buf_free(&c.qin);
	buf_free(&c.qout);
	(void)ignore;
	return handed;
}
