/*
 * SIEM sinks, run in the shipper process (forked beside the writer; it holds no key). Each
 * sink tails the durable log from a persisted cursor and ships RFC 5424 messages with
 * octet-counting framing (RFC 6587 / RFC 5425) over TCP or TLS. Syslog has no application
 * acknowledgement, so an event counts as delivered only once the peer's TCP has acked every
 * byte sent (SIOCOUTQ is 0) and a replay window has passed; after any failure the sink
 * reconnects with backoff and resends from the cursor: at-least-once, gaps impossible,
 * duplicates recognisable by seq.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "audit_int.h"
#include "custos/crl.h"

#define SINK_BATCH_BYTES   (256 * 1024)
#define SINK_BATCH_EVENTS  2048
#define SINK_IO_TIMEOUT_MS 10000
/* Whole operations, however the peer trickles its bytes (each under SINK_IO_TIMEOUT_MS apart):
 * a connection with its TLS handshake, a HEC request with its response. */
#define SINK_CONNECT_NS   (10ull * 1000000000)
#define SINK_EXCHANGE_NS  (60ull * 1000000000)
#define SINK_IDLE_NS      (5ull * 1000 * 1000)
#define SINK_CONFIRMS     64
#define SINK_TOKEN_MAX    4096 /* HEC token file */
#define SINK_KEY_FILE_MAX (64 * 1024)
#define HEC_EVENT_PATH    "/services/collector/event"
#define HEC_BASE          "/services/collector"

static atomic_bool g_stopping;
static atomic_uint_fast64_t g_deadline; /* mono ns; valid once stopping */

struct confirm {
	uint64_t seq, at;
};

/* A batch written to the connection: its last seq and the connection's byte count at its end. */
struct pending {
	uint64_t seq, end;
};

struct sink {
	const audit_options *o;
	const audit_sink_options *so;
	char cursor_path[4096];
	int ship_fd; /* DIR/ship, fsynced after each cursor rename */
	char host[256];
	char peer[300];  /* host:port or unix:/path, for the log */
	uint64_t cursor; /* persisted: every seq <= cursor is delivered */
	uint64_t next;   /* next seq to read and send */
	uint64_t sent;   /* highest seq written to the connection */
	/* the log */
	audit_reader rd;
	bool rd_open;
	uint64_t rd_first; /* first seq of the open file */
	uint64_t rd_seen;  /* the last seq read from it (its first - 1 before any) */
	/* The cursor is past the log's end (ahead_end): this sink sends nothing more. */
	bool ahead;
	uint64_t ahead_end;
	uint64_t last_list;
	bool sealed_seen; /* the last line read was the shutdown checkpoint */
	/* the connection */
	int fd;
	SSL_CTX *ctx; /* the sink thread's: the next connection is made with it */
	SSL *ssl;
	/* A reload's new context (the CA, client certificate and CRL read again by the shipper's
	 * main thread), taken by the sink thread at its next step; under mu. */
	pthread_mutex_t mu;
	SSL_CTX *ctx_next;
	buf token_next; /* a reload's HEC token read again from hec_token_file; under mu */
	bool token_next_set;
	bool tls; /* TLS sink: set at init, read by both threads */
	buf out;
	struct confirm conf[SINK_CONFIRMS];
	size_t nconf;
	struct pending pend[SINK_CONFIRMS]; /* written, not yet acknowledged by the peer's TCP */
	size_t npend;
	uint64_t wbytes; /* bytes written to this connection (plain TCP, unix) */
	uint64_t backoff;
	size_t batch_bytes; /* a batch ends past this many bytes: SINK_BATCH_BYTES, less after a 413 */
	uint64_t op_until;   /* mono ns: the operation under way ends by then (0: no bound) */
	const char *op_what; /* its bound, for the message */
	audit_render_ctx rctx;
	/* HEC */
	buf in;           /* response bytes */
	buf req;          /* request head */
	char channel[40]; /* X-Splunk-Request-Channel (a random UUID) */
	const char *event_path;
	char ack_path[512];
	buf token; /* from hec_token_file (a secret: wiped on free) */
	const char *token_str;
	size_t token_len;
};

custos_err audit_cursor_read(const char *dir, const char *name, uint64_t *seq)
{
	char path[4096];
	buf b;
	custos_err e;

	*seq = 0;
	ENSURE((size_t)snprintf(path, sizeof(path), "%s/" AUDIT_SHIP_DIR "/cursor.%s", dir, name) <
	               sizeof(path),
	       CUSTOS_ERR_LIMIT, "path too long");
	if (access(path, F_OK) == -1)
		return CUSTOS_OK;
	/* file_load reserves 4096 bytes at a time: the buffer may hold that, the file not. */
	buf_init(&b, 4096);
	e = file_load(path, FILE_ANY, 64, &b);
	if (e == CUSTOS_OK) {
		span s = buf_span(&b);
		while (s.len > 0 && (s.ptr[s.len - 1] == '\n'))
			s.len--;
		e = num_parse_u64(s, 0, UINT64_MAX, seq);
		if (e != CUSTOS_OK)
			err_wrap(e, "%s", path);
	}
	buf_free(&b);
	return e;
}

static custos_err cursor_write(struct sink *s, uint64_t seq)
{
	char v[32];
	int n = snprintf(v, sizeof(v), "%llu\n", (unsigned long long)seq);
	/* The file is fsynced before its rename (file_write_atomic), the directory after: a
	 * power cut then finds the new cursor, never an older one (a resend of what the SIEM
	 * had, harmless) nor none (delivery from seq 1). */
	GUARD(file_write_atomic(s->cursor_path, v, (size_t)n, 0600));
	if (fsync(s->ship_fd) == -1)
		return err_sys("%s: directory fsync", s->cursor_path);
	s->cursor = seq;
	return CUSTOS_OK;
}

/* ---- reading the log */

static uint64_t line_seq(span line)
{
	size_t pl = sizeof(AUDIT_LINE_PREFIX) - 1, i = pl;
	uint64_t v = 0;
	if (line.len <= pl || memcmp(line.ptr, AUDIT_LINE_PREFIX, pl) != 0)
		return 0;
	while (i < line.len && line.ptr[i] >= '0' && line.ptr[i] <= '9')
		v = v * 10 + (uint64_t)(line.ptr[i++] - '0');
	return v;
}

static void reader_close(struct sink *s)
{
	if (s->rd_open)
		audit_reader_close(&s->rd);
	s->rd_open = false;
}

/* Opens the file holding seq (the last one whose first seq <= seq). */
static custos_err reader_open_at(struct sink *s, uint64_t seq)
{
	char **paths = NULL;
	size_t n = 0, pick = SIZE_MAX;
	uint64_t first = 0, f;
	custos_err e;

	reader_close(s);
	GUARD(audit_list_files(s->o->dir, &paths, &n));
	for (size_t i = 0; i < n; i++)
		if (audit_file_name_parse(strrchr(paths[i], '/') + 1, &f) && f <= seq) {
			pick = i;
			first = f;
		}
	if (pick == SIZE_MAX) {
		audit_paths_free(paths, n);
		return err_set(CUSTOS_ERR_NOTFOUND, "no log file holds seq %llu",
		               (unsigned long long)seq);
	}
	e = audit_reader_open(&s->rd, paths[pick]);
	audit_paths_free(paths, n);
	GUARD(e);
	s->rd_open = true;
	s->rd_first = first;
	s->rd_seen = first > 0 ? first - 1 : 0;
	return CUSTOS_OK;
}

static custos_err sink_ahead(const struct sink *s)
{
	return err_set(CUSTOS_ERR_PARSE,
	               "%s says seq %llu was delivered, but the log ends at seq %llu: this sink "
	               "sends nothing more, lest the records in between be skipped; mend or "
	               "remove the cursor file, then restart custos",
	               s->cursor_path, (unsigned long long)s->cursor,
	               (unsigned long long)s->ahead_end);
}

/* Next line with seq == s->next; CUSTOS_ERR_AGAIN when there is none yet. */
static custos_err reader_next(struct sink *s, span *line)
{
	uint64_t off;

	if (!s->rd_open)
		GUARD(reader_open_at(s, s->next));
	for (;;) {
		custos_err e = audit_reader_next(&s->rd, line, &off);
		if (e == CUSTOS_OK) {
			uint64_t q = line_seq(*line);
			if (q > s->rd_seen)
				s->rd_seen = q;
			if (q < s->next)
				continue; /* before the cursor: already delivered */
			ENSURE(q == s->next, CUSTOS_ERR_PARSE,
			       "log has seq %llu where %llu was expected (run custos audit verify)",
			       (unsigned long long)q, (unsigned long long)s->next);
			return CUSTOS_OK;
		}
		if (e != CUSTOS_ERR_NOTFOUND)
			return e;
		/* The cursor says seq next - 1 was delivered, yet the log ends before it: the
		 * cursor file was written by something else (the log is not cut while custos runs;
		 * at start the writer refuses a cursor past the head). Sending on from it would
		 * skip the records in between once they are written: this sink stops. */
		if (s->rd_seen + 1 < s->next && audit_reader_partial(&s->rd) == 0) {
			s->ahead = true;
			s->ahead_end = s->rd_seen;
			return sink_ahead(s);
		}
		/* End of this file: move on once the writer has rotated past it. */
		uint64_t now = tm_mono_ns();
		if (now - s->last_list < 50ull * 1000 * 1000)
			return CUSTOS_ERR_AGAIN;
		s->last_list = now;
		char name[64], path[4096];
		audit_file_name(s->next, name);
		snprintf(path, sizeof(path), "%s/%s", s->o->dir, name);
		if (s->next > s->rd_first && access(path, F_OK) == 0 &&
		    audit_reader_partial(&s->rd) == 0) {
			GUARD(reader_open_at(s, s->next));
			continue;
		}
		return CUSTOS_ERR_AGAIN;
	}
}

/* ---- the connection */

static void conn_close(struct sink *s)
{
	if (s->ssl != NULL) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->nconf = 0;
	s->npend = 0;
	s->wbytes = 0;
}

/* Bytes sent but not yet acked by the peer's TCP. */
static int unacked(struct sink *s)
{
	int q = 0;
	if (ioctl(s->fd, SIOCOUTQ, &q) == -1)
		return -1;
	return q;
}

static custos_err confirm_progress(struct sink *s, bool final);

/* Waits for fd (the sink's connection, or one being made) to be ready: at most
 * SINK_IO_TIMEOUT_MS of silence, and never past the end of the operation under way
 * (s->op_until) or, once stopping, the drain deadline (looked at every 50 ms: the stop may come
 * during the wait): a peer that trickles a byte at a time neither holds the sink in one step for
 * ever nor holds up custos' stop. */
static custos_err wait_fd(struct sink *s, int fd, short ev)
{
	struct pollfd p = { .fd = fd, .events = ev };
	uint64_t quiet_until = tm_mono_ns() + SINK_IO_TIMEOUT_MS * 1000000ull;
	/* Waiting to write: the kernel says writable only once much of its buffer is free, which
	 * a slow reader takes longer than SINK_IO_TIMEOUT_MS to free: its acknowledgements
	 * (the unacknowledged bytes going down) are progress too. */
	int q0 = (ev & POLLOUT) && fd == s->fd ? unacked(s) : -1;
	for (;;) {
		uint64_t now = tm_mono_ns(), until = quiet_until;
		ENSURE(now < quiet_until, CUSTOS_ERR_TIMEOUT, "%s: timed out", s->peer);
		ENSURE(s->op_until == 0 || now < s->op_until, CUSTOS_ERR_TIMEOUT,
		       "%s: timed out (%s)", s->peer, s->op_what);
		if (s->op_until != 0 && s->op_until < until)
			until = s->op_until;
		if (atomic_load(&g_stopping)) {
			uint64_t dl = atomic_load(&g_deadline);
			ENSURE(now < dl, CUSTOS_ERR_TIMEOUT, "%s: stopping: drain deadline passed",
			       s->peer);
			if (dl < until)
				until = dl;
		}
		uint64_t ms = (until - now + 999999) / 1000000;
		int r = poll(&p, 1, (int)(ms < 50 ? ms : 50));
		if (r == -1 && errno != EINTR)
			return err_sys("poll");
		if (r > 0)
			return CUSTOS_OK;
		int q = q0 >= 0 ? unacked(s) : -1;
		if (q >= 0 && q < q0) {
			q0 = q;
			quiet_until = tm_mono_ns() + SINK_IO_TIMEOUT_MS * 1000000ull;
			/* and the batches written before may be confirmed meanwhile: a write that
			 * waits long for room must not hold the cursor back */
			GUARD(confirm_progress(s, false));
		}
	}
}

/* A unix stream socket: connect() completes at once or fails (EAGAIN: the backlog is full,
 * retried like a refused connection). */
static custos_err unix_connect(struct sink *s)
{
	struct sockaddr_un sa;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	ENSURE(strlen(s->so->unix_path) < sizeof(sa.sun_path), CUSTOS_ERR_LIMIT,
	       "%s: socket path too long", s->so->unix_path);
	memcpy(sa.sun_path, s->so->unix_path, strlen(s->so->unix_path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return err_sys("socket");
	int r;
	do
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (r == -1 && errno == EINTR);
	if (r == -1) {
		custos_err e = err_sys("connect %s", s->so->unix_path);
		close(fd);
		return e;
	}
	s->fd = fd;
	return CUSTOS_OK;
}

static custos_err tcp_connect(struct sink *s)
{
	struct addrinfo hints, *res = NULL;
	char port[8];
	custos_err e = CUSTOS_OK;

	if (s->so->unix_path != NULL)
		return unix_connect(s);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", s->so->port);
	int g = getaddrinfo(s->so->host, port, &hints, &res);
	ENSURE(g == 0, CUSTOS_ERR_NOTFOUND, "%s: %s", s->so->host, gai_strerror(g));
	for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
		int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd == -1) {
			e = err_sys("socket");
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == -1 && errno != EINPROGRESS) {
			e = err_sys("connect %s:%s", s->so->host, port);
			close(fd);
			continue;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		e = wait_fd(s, fd, POLLOUT);
		if (e == CUSTOS_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
			e = err_sys("getsockopt");
		if (e == CUSTOS_OK && soerr != 0) {
			errno = soerr;
			e = err_sys("connect %s:%s", s->so->host, port);
		}
		if (e != CUSTOS_OK) {
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		s->fd = fd;
		break;
	}
	freeaddrinfo(res);
	return s->fd >= 0 ? CUSTOS_OK : e;
}

static custos_err tls_wait(struct sink *s, int r, const char *what)
{
	int err = SSL_get_error(s->ssl, r);
	if (err == SSL_ERROR_WANT_READ)
		return wait_fd(s, s->fd, POLLIN);
	if (err == SSL_ERROR_WANT_WRITE)
		return wait_fd(s, s->fd, POLLOUT);
	unsigned long le = ERR_get_error();
	char eb[256] = "";
	if (le != 0)
		ERR_error_string_n(le, eb, sizeof(eb));
	ERR_clear_error();
	if (err == SSL_ERROR_SYSCALL && le == 0)
		return err_sys("TLS %s", what);
	long vr = SSL_get_verify_result(s->ssl);
	if (vr != X509_V_OK)
		return err_set(CUSTOS_ERR_TLS, "TLS %s with %s: server certificate: %s", what,
		               s->peer, X509_verify_cert_error_string(vr));
	return err_set(CUSTOS_ERR_TLS, "TLS %s failed (%d): %s", what, err, eb);
}

static custos_err conn_open_tls(struct sink *s)
{
	GUARD(tcp_connect(s));
	if (s->ctx == NULL)
		return CUSTOS_OK;
	s->ssl = SSL_new(s->ctx);
	ENSURE(s->ssl != NULL, CUSTOS_ERR_NOMEM, "SSL_new");
	const char *name = s->so->server_name ? s->so->server_name : s->so->host;
	SSL_set_fd(s->ssl, s->fd);
	SSL_set_tlsext_host_name(s->ssl, name);
	if (!s->so->no_verify && SSL_set1_host(s->ssl, name) != 1)
		return err_set(CUSTOS_ERR_TLS, "SSL_set1_host");
	for (;;) {
		int r = SSL_connect(s->ssl);
		if (r == 1)
			break;
		GUARD(tls_wait(s, r, "handshake"));
	}
	return CUSTOS_OK;
}

/* The connection and its TLS handshake, within SINK_CONNECT_NS together: a server that
 * answers a byte at a time is cut like one that does not answer. */
static custos_err conn_open(struct sink *s)
{
	s->op_until = tm_mono_ns() + SINK_CONNECT_NS;
	s->op_what = "not connected within 10 s";
	custos_err e = conn_open_tls(s);
	s->op_until = 0;
	return e;
}

static custos_err conn_write(struct sink *s, const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (s->ssl != NULL) {
			size_t w = 0;
			int r = SSL_write_ex(s->ssl, p, n, &w);
			if (r != 1) {
				GUARD(tls_wait(s, r, "write"));
				continue;
			}
			p += w;
			n -= w;
			continue;
		}
		ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			GUARD(wait_fd(s, s->fd, POLLOUT));
			continue;
		}
		if (w == -1)
			return err_sys("send");
		p += w;
		n -= (size_t)w;
		s->wbytes += (uint64_t)w;
	}
	return CUSTOS_OK;
}

/* The peer never sends application data: readable means closed (or TLS housekeeping). */
static custos_err conn_check(struct sink *s)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN | POLLRDHUP };
	uint8_t junk[4096];

	if (poll(&p, 1, 0) <= 0)
		return CUSTOS_OK;
	ENSURE(!(p.revents & (POLLERR | POLLHUP | POLLRDHUP)) || (p.revents & POLLIN),
	       CUSTOS_ERR_CLOSED, "connection closed by the server");
	if (s->ssl != NULL) {
		size_t got = 0;
		int r = SSL_read_ex(s->ssl, junk, sizeof(junk), &got);
		if (r == 1)
			return CUSTOS_OK;
		int err = SSL_get_error(s->ssl, r);
		ERR_clear_error();
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			return CUSTOS_OK;
		return err_set(CUSTOS_ERR_CLOSED, "TLS connection closed by the server");
	}
	ssize_t r = recv(s->fd, junk, sizeof(junk), MSG_DONTWAIT);
	if (r > 0 || (r == -1 && (errno == EAGAIN || errno == EINTR)))
		return CUSTOS_OK;
	return err_set(CUSTOS_ERR_CLOSED, "connection closed by the server");
}

/* Bytes written to the connection's socket so far (with TLS: its records, as SIOCOUTQ counts). */
static uint64_t written(struct sink *s)
{
	return s->ssl != NULL ? (uint64_t)BIO_number_written(SSL_get_wbio(s->ssl)) : s->wbytes;
}

/* A batch up to seq was written: it is confirmed once the peer's TCP has acknowledged its last
 * byte. A full list takes it into its last entry (confirmed with it, a little later). */
static void pending_add(struct sink *s, uint64_t seq)
{
	struct pending p = { seq, written(s) };
	if (s->npend == SINK_CONFIRMS)
		s->pend[s->npend - 1] = p;
	else
		s->pend[s->npend++] = p;
}

/* Records TCP confirmation of each batch whose bytes the peer has all acknowledged (the bytes
 * written minus those still unacknowledged, SIOCOUTQ: a receiver that keeps a backlog queued
 * never lets that reach 0), and moves the cursor over confirmations older than the replay
 * window. */
static custos_err confirm_progress(struct sink *s, bool final)
{
	uint64_t now = tm_mono_ns();
	uint64_t win = s->so->replay_window_ns ? s->so->replay_window_ns : 1000000000ull;
	int q;

	if (s->fd >= 0 && s->npend > 0 && (q = unacked(s)) >= 0) {
		/* A unix socket counts its buffers' overhead too: never more than written. */
		uint64_t w = written(s), acked = w > (uint64_t)q ? w - (uint64_t)q : 0;
		size_t k = 0;
		while (k < s->npend && s->pend[k].end <= acked)
			k++;
		if (k > 0) {
			uint64_t seq = s->pend[k - 1].seq;
			memmove(s->pend, s->pend + k, (s->npend - k) * sizeof(s->pend[0]));
			s->npend -= k;
			if (s->nconf == SINK_CONFIRMS) {
				memmove(s->conf, s->conf + 1,
				        (SINK_CONFIRMS - 1) * sizeof(s->conf[0]));
				s->nconf--;
			}
			s->conf[s->nconf++] = (struct confirm){ seq, now };
		}
	}
	uint64_t move = s->cursor;
	size_t drop = 0;
	for (size_t i = 0; i < s->nconf; i++)
		if (final || now - s->conf[i].at >= win) {
			move = s->conf[i].seq;
			drop = i + 1;
		}
	if (drop) {
		memmove(s->conf, s->conf + drop, (s->nconf - drop) * sizeof(s->conf[0]));
		s->nconf -= drop;
	}
	if (move > s->cursor)
		GUARD(cursor_write(s, move));
	return CUSTOS_OK;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
	nanosleep(&ts, NULL);
}

static bool deadline_passed(void)
{
	return atomic_load(&g_stopping) && tm_mono_ns() >= atomic_load(&g_deadline);
}

static custos_err frame(struct sink *s, span line)
{
	char lenbuf[24];
	size_t at = buf_used(&s->out);

	/* Reserve room for the length prefix by rendering first, then inserting it. */
	GUARD(buf_reserve(&s->out, 24 + AUDIT_MAX_LINE * 2));
	GUARD(audit_render(AUDIT_FMT_RFC5424, line, &s->rctx, &s->out));
	size_t mlen = buf_used(&s->out) - at;
	int n = snprintf(lenbuf, sizeof(lenbuf), "%zu ", mlen);
	GUARD(buf_reserve(&s->out, (size_t)n));
	uint8_t *base = s->out.data + s->out.off + at;
	memmove(base + n, base, mlen);
	memcpy(base, lenbuf, (size_t)n);
	buf_commit(&s->out, (size_t)n);
	return CUSTOS_OK;
}

/* ---- Splunk HTTP Event Collector: POST /services/collector/event with a batch of event
 * objects; delivered on 200, or, when the server answers with an ackId (indexer
 * acknowledgement enabled), once /services/collector/ack reports that id as true. */

#define HEC_MAX_RESPONSE   (64 * 1024)
#define HEC_ACK_TIMEOUT_NS (60ull * 1000000000)

static custos_err conn_read_some(struct sink *s, buf *in)
{
	for (;;) {
		GUARD(buf_reserve(in, 4096));
		if (s->ssl != NULL) {
			size_t got = 0;
			int r = SSL_read_ex(s->ssl, buf_tail(in), 4096, &got);
			if (r == 1) {
				buf_commit(in, got);
				return CUSTOS_OK;
			}
			int err = SSL_get_error(s->ssl, r);
			if (err == SSL_ERROR_ZERO_RETURN)
				return err_set(CUSTOS_ERR_CLOSED,
				               "HEC server closed the connection");
			GUARD(tls_wait(s, r, "read"));
			continue;
		}
		ssize_t r = recv(s->fd, buf_tail(in), 4096, 0);
		if (r > 0) {
			buf_commit(in, (size_t)r);
			return CUSTOS_OK;
		}
		if (r == 0)
			return err_set(CUSTOS_ERR_CLOSED, "HEC server closed the connection");
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			GUARD(wait_fd(s, s->fd, POLLIN));
			continue;
		}
		return err_sys("recv");
	}
}

/* Sends one request and reads the response (Content-Length framing only); *status and the
 * body (a view into s->in) out. */
static custos_err hec_exchange_once(struct sink *s, const char *path, span body, int *status,
                                    span *rbody)
{
	buf_reset(&s->req);
	bool v6 = strchr(s->so->host, ':') != NULL; /* an IPv6 literal goes in brackets */
	GUARD(buf_printf(&s->req, "POST %s HTTP/1.1\r\nHost: %s%s%s:%u\r\n", path, v6 ? "[" : "",
	                 s->so->host, v6 ? "]" : "", s->so->port));
	if (s->token_str != NULL) {
		GUARD(buf_append_cstr(&s->req, "Authorization: Splunk "));
		GUARD(buf_append(&s->req, s->token_str, s->token_len));
		GUARD(buf_append_cstr(&s->req, "\r\n"));
	}
	GUARD(buf_printf(&s->req,
	                 "X-Splunk-Request-Channel: %s\r\nContent-Type: application/json\r\n"
	                 "Content-Length: %zu\r\n\r\n",
	                 s->channel, body.len));
	GUARD(conn_write(s, buf_ptr(&s->req), buf_used(&s->req)));
	GUARD(conn_write(s, (const uint8_t *)body.ptr, body.len));
	buf_reset(&s->in);
	const char *hend;
	for (;;) {
		span h = buf_span(&s->in);
		hend = h.len >= 4 ? memmem(h.ptr, h.len, "\r\n\r\n", 4) : NULL;
		if (hend != NULL)
			break;
		GUARD(conn_read_some(s, &s->in));
	}
	span h = buf_span(&s->in);
	size_t hlen = (size_t)(hend - h.ptr) + 4;
	ENSURE(h.len > 12 && memcmp(h.ptr, "HTTP/1.", 7) == 0, CUSTOS_ERR_PARSE,
	       "HEC: not an HTTP response");
	uint64_t st = 0;
	GUARD(num_parse_u64(span_of(h.ptr + 9, 3), 100, 599, &st));
	*status = (int)st;
	uint64_t clen = 0;
	bool have_len = false;
	for (size_t i = 0; i < hlen;) {
		const char *eol = memmem(h.ptr + i, hlen - i, "\r\n", 2);
		if (eol == NULL)
			break;
		span line = span_of(h.ptr + i, (size_t)(eol - (h.ptr + i)));
		i += line.len + 2;
		if (line.len > 15 &&
		    span_case_eq(span_of(line.ptr, 15), SPAN_LIT("content-length:"))) {
			GUARD(num_parse_u64(span_trim(span_of(line.ptr + 15, line.len - 15)), 0,
			                    HEC_MAX_RESPONSE, &clen));
			have_len = true;
		}
		ENSURE(!(line.len > 18 &&
		         span_case_eq(span_of(line.ptr, 18), SPAN_LIT("transfer-encoding:"))),
		       CUSTOS_ERR_UNSUPPORTED, "HEC: chunked responses are not supported");
	}
	ENSURE(have_len, CUSTOS_ERR_PARSE, "HEC: response without Content-Length");
	while (buf_used(&s->in) < hlen + clen)
		GUARD(conn_read_some(s, &s->in));
	h = buf_span(&s->in);
	*rbody = span_of(h.ptr + hlen, (size_t)clen);
	return CUSTOS_OK;
}

/* One request and its whole response within SINK_EXCHANGE_NS. */
static custos_err hec_exchange(struct sink *s, const char *path, span body, int *status,
                               span *rbody)
{
	s->op_until = tm_mono_ns() + SINK_EXCHANGE_NS;
	s->op_what = "no answer within 60 s";
	custos_err e = hec_exchange_once(s, path, body, status, rbody);
	s->op_until = 0;
	return e;
}

static custos_err hec_event(struct sink *s, span line)
{
	span t;
	uint64_t ns = 0;

	if (ajson_get(line, "time", &t) != CUSTOS_OK || t.len != 32 ||
	    tm_parse_rfc3339(span_of(t.ptr + 1, t.len - 2), &ns) != CUSTOS_OK)
		ns = tm_wall_ns();
	GUARD(buf_printf(&s->out, "{\"time\":%llu.%03llu,\"host\":\"",
	                 (unsigned long long)(ns / 1000000000ull),
	                 (unsigned long long)(ns / 1000000ull % 1000)));
	/* The host name is the kernel's (any bytes but NUL: a container's may hold a quote): a
	 * raw one would make every batch invalid JSON, refused by the collector for ever. */
	GUARD(json_escape(&s->out, span_cstr(s->host)));
	GUARD(buf_append_cstr(
	        &s->out, "\",\"source\":\"custos\",\"sourcetype\":\"custos:audit\",\"event\":"));
	GUARD(buf_append_span(&s->out, line));
	return buf_append_byte(&s->out, '}');
}

/* Delivers s->out (events up to seq last) and moves the cursor. */
static custos_err hec_deliver(struct sink *s, uint64_t last)
{
	int status = 0;
	span body, v;
	uint64_t ack = 0;

	GUARD(hec_exchange(s, s->event_path, buf_span(&s->out), &status, &body));
	if (status == 413 && buf_used(&s->out) / 2 < s->batch_bytes) {
		/* Too large for the collector (or a proxy in front of it): smaller batches from now
		 * on, down to one event each; one event refused alone stalls the sink (logged). */
		s->batch_bytes = buf_used(&s->out) / 2;
		log_warn("audit sink %s: HEC answered 413 for a batch of %zu bytes: batches cut to "
		         "%zu bytes",
		         s->so->name, buf_used(&s->out), s->batch_bytes);
	}
	ENSURE(status == 200, CUSTOS_ERR_IO, "HEC answered %d: %.*s", status,
	       (int)(body.len > 200 ? 200 : body.len), body.ptr);
	/* A collector says success in its body too ({"text":"Success","code":0}); a 200 without
	 * it (an error code, an HTML page from something in between) delivered nothing. */
	ENSURE(ajson_get(body, "code", &v) == CUSTOS_OK && span_eq_cstr(v, "0"), CUSTOS_ERR_IO,
	       "HEC answered 200 without success (no \"code\":0): %.*s",
	       (int)(body.len > 200 ? 200 : body.len), body.ptr);
	if (s->so->hec_no_ack || ajson_get(body, "ackId", &v) != CUSTOS_OK ||
	    ajson_u64(v, &ack) != CUSTOS_OK)
		return cursor_write(s, last); /* no indexer acknowledgement offered, or used */
	char q[64];
	int qn = snprintf(q, sizeof(q), "{\"acks\":[%llu]}", (unsigned long long)ack);
	char key[32];
	snprintf(key, sizeof(key), "%llu", (unsigned long long)ack);
	uint64_t until = tm_mono_ns() + HEC_ACK_TIMEOUT_NS, pause = 5ull * 1000 * 1000;
	while (tm_mono_ns() < until && !deadline_passed()) {
		span acks, one;
		GUARD(hec_exchange(s, s->ack_path, span_of(q, (size_t)qn), &status, &body));
		ENSURE(status == 200, CUSTOS_ERR_IO, "HEC ack answered %d", status);
		if (ajson_get(body, "acks", &acks) == CUSTOS_OK &&
		    ajson_get(acks, key, &one) == CUSTOS_OK && span_eq_cstr(one, "true"))
			return cursor_write(s, last);
		sleep_ns(pause);
		if (pause < 200ull * 1000 * 1000)
			pause *= 2; /* 5 ms, doubling to 200 ms: indexing takes its time */
	}
	return err_set(CUSTOS_ERR_TIMEOUT, "HEC: ack %llu not confirmed; resending",
	               (unsigned long long)ack);
}

/* Whether the open connection's server still verifies with the sink's (new) context: its chain
 * as it sent it, against the CAs and CRLs read again, with the connection's parameters (the
 * name or address the handshake checked), as OpenSSL verifies a server in the handshake. */
static custos_err peer_still_valid(struct sink *s)
{
	X509 *peer = SSL_get1_peer_certificate(s->ssl);
	X509_STORE_CTX *x = X509_STORE_CTX_new();
	int ok = 0, verr = X509_V_ERR_UNSPECIFIED;

	if (peer != NULL && x != NULL &&
	    X509_STORE_CTX_init(x, SSL_CTX_get_cert_store(s->ctx), peer,
	                        SSL_get_peer_cert_chain(s->ssl)) == 1 &&
	    X509_STORE_CTX_set_default(x, "ssl_server") == 1 &&
	    X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(x), SSL_get0_param(s->ssl)) == 1) {
		ok = X509_verify_cert(x) == 1;
		verr = X509_STORE_CTX_get_error(x);
	}
	X509_STORE_CTX_free(x);
	X509_free(peer);
	ERR_clear_error();
	if (ok)
		return CUSTOS_OK;
	return err_set(CUSTOS_ERR_TLS,
	               "reload: the server certificate of %s does not verify with the TLS files "
	               "read again (%s): closing the connection",
	               s->peer, X509_verify_cert_error_string(verr));
}

static void token_use(struct sink *s)
{
	s->token_str = (const char *)buf_ptr(&s->token);
	s->token_len = buf_used(&s->token);
}

/* Takes a reload's token: the next request carries it (the connection stays: Splunk checks
 * the token per request). */
static void token_pickup(struct sink *s)
{
	pthread_mutex_lock(&s->mu);
	if (s->token_next_set) {
		buf t = s->token;
		s->token = s->token_next;
		s->token_next = t;
		s->token_next_set = false;
		token_use(s);
		buf_free_secret(&s->token_next);
		buf_init(&s->token_next, 0);
	}
	pthread_mutex_unlock(&s->mu);
}

/* Takes a reload's new context: the next connection is made with it, and an open connection
 * whose server it refuses (a CRL that now revokes its certificate, a CA no longer trusted) is
 * closed (an error: the caller closes and reconnects, which then fails and says why). */
static custos_err ctx_pickup(struct sink *s)
{
	pthread_mutex_lock(&s->mu);
	SSL_CTX *n = s->ctx_next;
	s->ctx_next = NULL;
	pthread_mutex_unlock(&s->mu);
	if (n == NULL)
		return CUSTOS_OK;
	SSL_CTX_free(s->ctx); /* an open connection's SSL holds its own reference */
	s->ctx = n;
	if (s->ssl == NULL || s->so->no_verify)
		return CUSTOS_OK;
	return peer_still_valid(s);
}

/* One pass: connect if needed, send a batch, confirm. Returns AGAIN when idle. */
static custos_err sink_step(struct sink *s)
{
	span line;
	uint64_t batch_last = 0;
	size_t cnt = 0;
	custos_err e = CUSTOS_OK;

	if (s->ahead)
		return sink_ahead(s);
	if (s->tls)
		GUARD(ctx_pickup(s));
	if (s->so->kind == AUDIT_SINK_HEC && s->so->hec_token_file != NULL)
		token_pickup(s);
	if (s->fd < 0) {
		s->next = s->cursor + 1;
		s->sent = s->cursor;
		reader_close(s);
		GUARD(conn_open(s));
		log_info("audit sink %s: connected to %s, resuming at seq %llu", s->so->name,
		         s->peer, (unsigned long long)s->next);
		s->backoff = 0;
	}
	GUARD(conn_check(s));
	buf_reset(&s->out);
	while (cnt < SINK_BATCH_EVENTS && (cnt == 0 || buf_used(&s->out) < s->batch_bytes)) {
		e = reader_next(s, &line);
		if (e == CUSTOS_ERR_AGAIN)
			break;
		GUARD(e);
		if (s->so->kind == AUDIT_SINK_HEC)
			GUARD(hec_event(s, line));
		else
			GUARD(frame(s, line));
		span t;
		s->sealed_seen = ajson_get(line, "reason", &t) == CUSTOS_OK &&
		                 span_eq_cstr(t, "\"shutdown\"");
		batch_last = s->next++;
		cnt++;
	}
	if (s->so->kind == AUDIT_SINK_HEC) {
		if (cnt > 0) {
			GUARD(hec_deliver(s, batch_last));
			s->sent = batch_last;
		}
		return cnt > 0 ? CUSTOS_OK : CUSTOS_ERR_AGAIN;
	}
	if (cnt > 0) {
		GUARD(conn_write(s, buf_ptr(&s->out), buf_used(&s->out)));
		s->sent = batch_last;
		pending_add(s, batch_last);
	}
	GUARD(confirm_progress(s, false));
	return cnt > 0 ? CUSTOS_OK : CUSTOS_ERR_AGAIN;
}

static void *sink_main(void *arg)
{
	struct sink *s = arg;
	uint64_t rmin = s->so->retry_min_ns ? s->so->retry_min_ns : 100ull * 1000 * 1000;
	uint64_t rmax = s->so->retry_max_ns ? s->so->retry_max_ns : 5ull * 1000000000;
	proc_name_self("custos-sink");

	for (;;) {
		if (deadline_passed())
			break;
		custos_err e = sink_step(s);
		if (e == CUSTOS_OK)
			continue;
		if (e == CUSTOS_ERR_AGAIN) {
			/* Caught up. When stopping and the log is sealed, finish cleanly. */
			if (atomic_load(&g_stopping) && s->sealed_seen && s->fd >= 0 &&
			    unacked(s) == 0) {
				if (confirm_progress(s, true) != CUSTOS_OK)
					log_error("audit sink %s: %s", s->so->name, err_msg());
				break;
			}
			sleep_ns(SINK_IDLE_NS);
			continue;
		}
		if (deadline_passed()) {
			log_warn("audit sink %s: %s; stopped at the drain deadline: seq %llu and "
			         "after are sent again from the cursor at the next start",
			         s->so->name, err_msg(), (unsigned long long)s->cursor + 1);
			break;
		}
		log_warn("audit sink %s: %s; retrying in %llu ms", s->so->name, err_msg(),
		         (unsigned long long)((s->backoff ? s->backoff : rmin) / 1000000));
		conn_close(s);
		s->backoff = s->backoff ? s->backoff * 2 : rmin;
		if (s->backoff > rmax)
			s->backoff = rmax;
		uint64_t until = tm_mono_ns() + s->backoff;
		while (tm_mono_ns() < until && !deadline_passed())
			sleep_ns(10ull * 1000 * 1000);
	}
	conn_close(s);
	reader_close(s);
	return NULL;
}

static custos_err tls_err(const char *what)
{
	char eb[256] = "";
	unsigned long le = ERR_get_error();
	if (le != 0)
		ERR_error_string_n(le, eb, sizeof(eb));
	ERR_clear_error();
	return err_set(CUSTOS_ERR_TLS, "%s%s%s", what, le ? ": " : "", eb);
}

/* The client certificate and its key (FILE_SECRET: refused when group or others may read). */
static custos_err load_client_cert(SSL_CTX *ctx, const char *cert, const char *key)
{
	char what[4200];
	buf b;

	snprintf(what, sizeof(what), "client certificate %s", cert);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return tls_err(what);
	buf_init(&b, SINK_KEY_FILE_MAX);
	custos_err e = file_load(key, FILE_SECRET, SINK_KEY_FILE_MAX, &b);
	if (e != CUSTOS_OK) {
		buf_free_secret(&b);
		return e;
	}
	BIO *bio = BIO_new_mem_buf(buf_ptr(&b), (int)buf_used(&b));
	EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	buf_free_secret(&b);
	snprintf(what, sizeof(what), "client key %s", key);
	if (pk == NULL)
		return tls_err(what);
	int ok = SSL_CTX_use_PrivateKey(ctx, pk);
	EVP_PKEY_free(pk);
	if (ok != 1 || SSL_CTX_check_private_key(ctx) != 1)
		return tls_err(what);
	return CUSTOS_OK;
}

/* The HEC token goes into a header: one word of visible ASCII, at most SINK_TOKEN_MAX. */
static custos_err token_check(const char *what, const uint8_t *p, size_t n)
{
	ENSURE(n > 0 && n <= SINK_TOKEN_MAX, CUSTOS_ERR_INVAL, "%s: %s", what,
	       n ? "token too long" : "empty token");
	for (size_t i = 0; i < n; i++)
		ENSURE(p[i] > 0x20 && p[i] < 0x7f, CUSTOS_ERR_INVAL,
		       "%s: the token must be one word of visible ASCII", what);
	return CUSTOS_OK;
}

/* A token file's bytes in *b made the token: the trailing line break cut off (buf_used(b) is
 * the token's length), then checked; what names the file in a message. */
static custos_err token_trim(buf *b, const char *what)
{
	size_t n = buf_used(b);
	const uint8_t *p = buf_ptr(b);
	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' '))
		n--;
	GUARD(token_check(what, p, n));
	b->len = b->off + n;
	return CUSTOS_OK;
}

/* A token from its file (FILE_SECRET) into *b. On error b may hold part of the file: free it
 * secret. */
static custos_err load_token(buf *b, const char *path)
{
	_Static_assert(AUDIT_SHIP_TOKEN_MAX == SINK_TOKEN_MAX + 2, "a reload's token file");
	buf_init(b, SINK_TOKEN_MAX + 2);
	GUARD(file_load(path, FILE_SECRET, SINK_TOKEN_MAX + 2, b));
	return token_trim(b, path);
}

/* The event path as given (default HEC_EVENT_PATH); the ack endpoint is the part up to and
 * including HEC_BASE, then /ack (Splunk: /services/collector/ack). */
static custos_err hec_paths(struct sink *s)
{
	const char *p = s->so->hec_path && s->so->hec_path[0] ? s->so->hec_path : HEC_EVENT_PATH;
	const char *b = strstr(p, HEC_BASE);
	ENSURE(p[0] == '/' && b != NULL && strpbrk(p, " \t\r\n?#") == NULL, CUSTOS_ERR_INVAL,
	       "HEC path %s: not a collector endpoint (.../services/collector/event)", p);
	size_t pre = (size_t)(b - p) + sizeof(HEC_BASE) - 1;
	ENSURE(pre + 5 < sizeof(s->ack_path), CUSTOS_ERR_LIMIT, "HEC path too long");
	snprintf(s->ack_path, sizeof(s->ack_path), "%.*s/ack", (int)pre, p);
	s->event_path = p;
	return CUSTOS_OK;
}

/* A client context for a TLS sink from its files: the CA file (or the system trust store), the
 * CRL, the client certificate and its key. Made at start and again by each reload (the same
 * paths: sinks_reload); an error names the file. expired: NULL at start (a CRL past its
 * nextUpdate is warned about and loaded: every server is then refused, fail closed); at a
 * reload, the number of such CRLs, for sinks_reload to refuse the file. */
static custos_err tls_ctx_new(const audit_sink_options *so, SSL_CTX **out, size_t *expired)
{
	custos_err e = CUSTOS_OK;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	*out = NULL;
	ENSURE(ctx != NULL, CUSTOS_ERR_TLS, "SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, so->no_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
	/* As the proxy's upstreams: no renegotiation, no compression, a wildcard only as a whole
	 * left-most label (RFC 9525 6.3). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx),
	                                X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (so->ca_file != NULL) {
		/* file_load, not OpenSSL's fopen: a FIFO in its place must not hold the shipper */
		if (tls_ca_file_load(ctx, so->ca_file, "tls.ca_file") != CUSTOS_OK) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err_msg());
			e = err_set(CUSTOS_ERR_TLS, "cannot load CA file %s: %s", so->ca_file, why);
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		e = tls_err("cannot load the system trust store");
	}
	/* After the CAs: the CRL turns on checks for the whole chain. */
	if (e == CUSTOS_OK && so->crl_file != NULL)
		e = tls_crl_load_ex(ctx, so->crl_file, "tls.crl", NULL, expired);
	if (e == CUSTOS_OK && so->cert_file != NULL)
		e = load_client_cert(ctx, so->cert_file, so->key_file);
	if (e != CUSTOS_OK) {
		SSL_CTX_free(ctx);
		return e;
	}
	*out = ctx;
	return CUSTOS_OK;
}

static custos_err sink_init(struct sink *s, const audit_options *o, const audit_sink_options *so)
{
	memset(s, 0, sizeof(*s));
	s->o = o;
	s->so = so;
	s->fd = -1;
	s->ship_fd = -1;
	s->batch_bytes = SINK_BATCH_BYTES;
	pthread_mutex_init(&s->mu, NULL);
	buf_init(&s->out, SINK_BATCH_BYTES + 4 * AUDIT_MAX_LINE);
	buf_init(&s->in, HEC_MAX_RESPONSE + 8192);
	buf_init(&s->req, 8192);
	buf_init(&s->token, 0);
	buf_init(&s->token_next, 0);
	ENSURE(so->name != NULL && so->name[0] != '\0' && strchr(so->name, '/') == NULL,
	       CUSTOS_ERR_INVAL, "a sink needs a name without '/'");
	/* cursor.<name>.tmp* is a replacement being written, skipped by the head check. */
	ENSURE(strstr(so->name, ".tmp") == NULL, CUSTOS_ERR_INVAL,
	       "a sink name holds no '.tmp' (it names the cursor file)");
	if (so->unix_path != NULL) {
		ENSURE(so->kind == AUDIT_SINK_SYSLOG_TCP, CUSTOS_ERR_INVAL,
		       "a unix socket carries plain syslog only (no TLS, no HEC)");
		ENSURE(so->unix_path[0] == '/', CUSTOS_ERR_INVAL, "%s: not an absolute path",
		       so->unix_path);
		snprintf(s->peer, sizeof(s->peer), "unix:%s", so->unix_path);
	} else {
		ENSURE(so->host != NULL && so->port != 0, CUSTOS_ERR_INVAL, "no host/port");
		snprintf(s->peer, sizeof(s->peer), "%s:%u", so->host, so->port);
	}
	{
		uint8_t r[16];
		if (RAND_bytes(r, sizeof(r)) != 1)
			return err_set(CUSTOS_ERR_CRYPTO, "RAND_bytes");
		r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
		r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
		char hx[33];
		num_hex(r, 16, hx);
		snprintf(s->channel, sizeof(s->channel), "%.8s-%.4s-%.4s-%.4s-%.12s", hx, hx + 8,
		         hx + 12, hx + 16, hx + 20);
	}
	ENSURE((size_t)snprintf(s->cursor_path, sizeof(s->cursor_path),
	                        "%s/" AUDIT_SHIP_DIR "/cursor.%s", o->dir,
	                        so->name) < sizeof(s->cursor_path),
	       CUSTOS_ERR_LIMIT, "path too long");
	GUARD(audit_cursor_read(o->dir, so->name, &s->cursor));
	{
		char sdir[4096];
		ENSURE((size_t)snprintf(sdir, sizeof(sdir), "%s/" AUDIT_SHIP_DIR, o->dir) <
		               sizeof(sdir),
		       CUSTOS_ERR_LIMIT, "path too long");
		do
			s->ship_fd = open(sdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		while (s->ship_fd == -1 && errno == EINTR);
		if (s->ship_fd == -1)
			return err_sys("%s: open", sdir);
	}
	if (gethostname(s->host, sizeof(s->host) - 1) == 0)
		s->rctx.hostname = s->host;
	s->rctx.inner = so->format == AUDIT_FMT_RFC5424 ? AUDIT_FMT_JSON : so->format;
	if (so->kind == AUDIT_SINK_HEC) {
		GUARD(hec_paths(s));
		if (so->hec_token_file != NULL) {
			GUARD(load_token(&s->token, so->hec_token_file));
			token_use(s);
		} else if (so->hec_token != NULL) {
			s->token_str = so->hec_token;
			s->token_len = strlen(so->hec_token);
			GUARD(token_check("hec_token", (const uint8_t *)s->token_str,
			                  s->token_len));
		}
	}
	s->tls = so->kind == AUDIT_SINK_SYSLOG_TLS || (so->kind == AUDIT_SINK_HEC && so->tls);
	if (s->tls) {
		/* The messages name the settings as custos.yaml spells them (tls.crl). */
		ENSURE(so->crl_file == NULL || !so->no_verify, CUSTOS_ERR_INVAL,
		       "a CRL needs the server verified (tls.crl with tls.verify: false)");
		ENSURE((so->cert_file == NULL) == (so->key_file == NULL), CUSTOS_ERR_INVAL,
		       "a client certificate needs its key, and a key its certificate");
		GUARD(tls_ctx_new(so, &s->ctx, NULL));
		if (so->no_verify)
			log_warn("audit sink %s: TLS without verifying %s (tls.verify: false)",
			         so->name, s->peer);
	} else {
		ENSURE(so->cert_file == NULL && so->key_file == NULL && so->ca_file == NULL &&
		               so->crl_file == NULL,
		       CUSTOS_ERR_INVAL, "TLS files given for a connection without TLS");
	}
	return CUSTOS_OK;
}

static void sink_free(struct sink *s)
{
	conn_close(s);
	reader_close(s);
	if (s->ship_fd != -1)
		close(s->ship_fd);
	SSL_CTX_free(s->ctx);
	SSL_CTX_free(s->ctx_next);
	pthread_mutex_destroy(&s->mu);
	buf_free(&s->out);
	buf_free(&s->in);
	buf_free_secret(&s->req); /* held the Authorization header */
	buf_free_secret(&s->token);
	buf_free_secret(&s->token_next);
}

/* A reload's HEC token: hec_token_file as the parent read it again (AUDIT_SHIP_TOKEN), taken
 * over in *t; the sink thread uses it from its next request. A token that does not pass (empty,
 * not one word) keeps the token in use, said why, as a TLS file does. */
static void token_offer(struct sink *s, buf *t)
{
	if (token_trim(t, s->so->hec_token_file) != CUSTOS_OK) {
		buf_free_secret(t);
		log_warn("audit sink %s: reload: http.token_file: %s; the token read before stays "
		         "in use",
		         s->so->name, err_msg());
		return;
	}
	pthread_mutex_lock(&s->mu);
	buf_free_secret(&s->token_next); /* an earlier reload's, not taken yet */
	s->token_next = *t;
	s->token_next_set = true;
	pthread_mutex_unlock(&s->mu);
	log_info("audit sink %s: reload: http.token_file %s read again: used from the next "
	         "request on",
	         s->so->name, s->so->hec_token_file);
}

/* Reads exactly n bytes from the parent's pipe; false at EOF or an error. */
static bool pipe_read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n > 0) {
		ssize_t r = read(fd, b, n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		b += r;
		n -= (size_t)r;
	}
	return true;
}

/* A reload (SIGHUP, or the admin API's; audit_sinks_reload): each TLS sink's CA file, client
 * certificate and key, and CRL, read again from the paths it started with, into a new context
 * that its thread takes at its next step. A file that does not load (or a CRL past its
 * nextUpdate, which would refuse every server) keeps the sink's context in use, said why: the
 * old files were good when read, and a half-written replacement must not cut the trail's
 * delivery. */
static void sinks_reload(struct sink *sinks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct sink *s = &sinks[i];
		const audit_sink_options *so = s->so;
		SSL_CTX *ctx = NULL;
		if (!s->tls)
			continue;
		size_t expired = 0;
		custos_err e = tls_ctx_new(so, &ctx, &expired);
		if (e == CUSTOS_OK && expired > 0)
			e = err_set(CUSTOS_ERR_INVAL,
			            "tls.crl %s: past its nextUpdate (an expired CRL would refuse "
			            "every server)",
			            so->crl_file);
		if (e != CUSTOS_OK) {
			SSL_CTX_free(ctx);
			log_warn("audit sink %s: reload: %s; the TLS files read before stay in use",
			         so->name, err_msg());
			continue;
		}
		pthread_mutex_lock(&s->mu);
		SSL_CTX_free(s->ctx_next); /* an earlier reload's, not taken yet */
		s->ctx_next = ctx;
		pthread_mutex_unlock(&s->mu);
		log_info("audit sink %s: reload: TLS files read again (tls.ca %s, tls.cert %s, "
		         "tls.crl %s): used from the next connection on",
		         so->name, so->ca_file ? so->ca_file : "system trust store",
		         so->cert_file ? so->cert_file : "none",
		         so->crl_file ? so->crl_file : "none");
	}
}

/* Tells the parent whether every sink is set up (audit_writer_start waits for it). */
static void shipper_report(int fd, custos_err e)
{
	struct audit_ship_ready a;
	memset(&a, 0, sizeof(a));
	a.status = (int32_t)e;
	if (e != CUSTOS_OK)
		snprintf(a.msg, sizeof(a.msg), "%s", err_msg());
	(void)!write(fd, &a, sizeof(a));
	close(fd);
}

int audit_shipper_main(const audit_options *o, int stop_fd, int ready_fd)
{
	struct sink *sinks = calloc(o->n_sinks, sizeof(*sinks));
	pthread_t tid[AUDIT_MAX_SINKS];
	size_t inited = 0, started = 0;
	uint64_t drain = 0;
	custos_err e = CUSTOS_OK;

	proc_name_self("custos-ship");
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	audit_close_fds_except(stop_fd, ready_fd);
	/* It will hold a HEC token and client keys: no ptrace or core dump by a same-uid
	 * process, as the writer. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 || prctl(PR_SET_DUMPABLE, 0) == -1) {
		shipper_report(ready_fd, err_sys("audit shipper: prctl"));
		free(sinks);
		return 1;
	}
	if (sinks == NULL || o->n_sinks > AUDIT_MAX_SINKS) {
		shipper_report(ready_fd, err_set(CUSTOS_ERR_NOMEM, "audit shipper: no memory"));
		free(sinks);
		return 1;
	}
	/* Every sink is set up before any runs: one that cannot be (its CA, client key or token
	 * file) fails custos' start, naming it, rather than shipping to some SIEMs only. */
	for (; inited < o->n_sinks && e == CUSTOS_OK; inited++) {
		e = sink_init(&sinks[inited], o, &o->sinks[inited]);
		if (e != CUSTOS_OK)
			e = err_wrap(e, "audit sink %s",
			             o->sinks[inited].name ? o->sinks[inited].name : "(unnamed)");
	}
	/* Nothing read from here on but the log, the cursors and what a connection reads (the
	 * trust store, the resolver's files), nothing written but the cursors in DIR/ship: the
	 * caller's narrower view goes on now. */
	if (e == CUSTOS_OK && o->confine_shipper != NULL &&
	    (e = o->confine_shipper(o->confine_shipper_arg, -1)) != CUSTOS_OK)
		e = err_wrap(e, "audit shipper: confine");
	while (e == CUSTOS_OK && started < o->n_sinks) {
		if (pthread_create(&tid[started], NULL, sink_main, &sinks[started]) != 0)
			e = err_set(CUSTOS_ERR_SYS, "audit sink %s: pthread_create",
			            o->sinks[started].name);
		else
			started++;
	}
	if (e != CUSTOS_OK) {
		atomic_store(&g_deadline, tm_mono_ns());
		atomic_store(&g_stopping, true);
	}
	shipper_report(ready_fd, e);
	while (e == CUSTOS_OK) {
		struct audit_ship_msg m;
		bool got = pipe_read_full(stop_fd, &m, sizeof(m));
		if (got && m.kind == AUDIT_SHIP_RELOAD) {
			sinks_reload(sinks, started);
			continue;
		}
		if (got && m.kind == AUDIT_SHIP_TOKEN && m.len <= AUDIT_SHIP_TOKEN_MAX) {
			buf t;
			buf_init(&t, AUDIT_SHIP_TOKEN_MAX);
			got = buf_reserve(&t, (size_t)m.len) == CUSTOS_OK &&
			      pipe_read_full(stop_fd, buf_tail(&t), (size_t)m.len);
			if (got)
				buf_commit(&t, (size_t)m.len);
			if (got && m.sink < started && sinks[m.sink].so->kind == AUDIT_SINK_HEC &&
			    sinks[m.sink].so->hec_token_file != NULL) {
				token_offer(&sinks[m.sink], &t); /* takes t over */
				continue;
			}
			buf_free_secret(&t);
			if (got)
				continue; /* not a HEC sink of ours: nothing to do */
		}
		/* AUDIT_SHIP_STOP; anything else: the parent died: stop now; the cursors are safe
		 * to resume from */
		drain = got && m.kind == AUDIT_SHIP_STOP ? m.drain_ns : 0;
		atomic_store(&g_deadline, tm_mono_ns() + drain);
		atomic_store(&g_stopping, true);
		break;
	}
	for (size_t i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	for (size_t i = 0; i < inited; i++)
		sink_free(&sinks[i]);
	free(sinks);
	close(stop_fd);
	return e == CUSTOS_OK ? 0 : 1;
}
