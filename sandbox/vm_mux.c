/*
 * The VM channel multiplexer (protocol in vm_mux.h): one poll loop over the channel, the local
 * stream fds, an optional listener and a wake pipe. libc and pthreads only, because the static
 * guest agent compiles this same file. Memory per stream is bounded by its window.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vm_mux.h"

#define OUT_HIGH (4 * (VM_MUX_HDR_LEN + VM_MUX_MAX_PAYLOAD)) /* stop reading streams above */
#define IN_CAP   (4 * (VM_MUX_HDR_LEN + VM_MUX_MAX_PAYLOAD))

struct stream {
	uint32_t id;
	int fd;
	uint32_t send_win; /* bytes we may still send to the peer */
	uint8_t *rbuf;     /* bytes from the peer not yet written to fd */
	size_t roff, rlen, rcap;
	uint32_t credit; /* bytes written to fd, not yet granted back */
	bool local_eof;  /* fd read 0: CLOSE sent */
	bool peer_eof;   /* CLOSE received */
	bool shut_wr;    /* shutdown(fd, SHUT_WR) done */
	bool rd_ready;   /* poll said readable (or not asked yet): try a read */
	bool hup;        /* poll said POLLHUP/POLLERR after local_eof: the local end is gone */
	/* ERROR after the peer's CLOSE: the peer freed the stream; what it sent before is
	 * still written to fd, then the stream is freed (nothing more goes to the peer). */
	bool peer_gone;
};

struct pending {
	struct pending *next;
	uint16_t port;
	int fd;
};

struct vm_mux {
	struct vm_mux_opts o;
	int wake[2];
	volatile int stop;
	pthread_mutex_t lock;
	struct pending *pending;
	struct stream **s;
	size_t ns;
	uint32_t next_id; /* the next id to try; mux thread only */
	uint32_t set_id;  /* vm_mux_set_next_id's value, applied under lock (tests) */
	bool set_id_req;
	uint8_t *out; /* frames waiting to go down the channel */
	size_t out_off, out_len, out_cap, out_max;
	uint8_t in[IN_CAP];
	size_t in_len;
	char err[160];
};

void vm_mux_hdr_encode(const struct vm_mux_hdr *h, uint8_t out[VM_MUX_HDR_LEN])
{
	out[0] = VM_MUX_VERSION;
	out[1] = h->type;
	out[2] = 0;
	out[3] = 0;
	out[4] = (uint8_t)(h->stream >> 24);
	out[5] = (uint8_t)(h->stream >> 16);
	out[6] = (uint8_t)(h->stream >> 8);
	out[7] = (uint8_t)h->stream;
	out[8] = (uint8_t)(h->len >> 24);
	out[9] = (uint8_t)(h->len >> 16);
	out[10] = (uint8_t)(h->len >> 8);
	out[11] = (uint8_t)h->len;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int vm_mux_hdr_decode(const uint8_t *p, size_t n, struct vm_mux_hdr *h, const char **why)
{
	if (n < VM_MUX_HDR_LEN)
		return 0;
	*why = NULL;
	if (p[0] != VM_MUX_VERSION)
		*why = "unknown protocol version";
	else if (p[1] < VM_MUX_OPEN || p[1] > VM_MUX_ERROR)
		*why = "unknown frame type";
	else if (p[2] != 0 || p[3] != 0)
		*why = "reserved bytes not zero";
	h->type = p[1];
	h->stream = be32(p + 4);
	h->len = be32(p + 8);
	if (!*why && h->stream == 0)
		*why = "stream id 0";
	if (!*why && h->len > VM_MUX_MAX_PAYLOAD)
		*why = "frame larger than the limit";
	if (!*why) {
		switch (h->type) {
		case VM_MUX_OPEN:
			if (h->len != 2)
				*why = "OPEN payload must be 2 bytes";
			break;
		case VM_MUX_CLOSE:
			if (h->len != 0)
				*why = "CLOSE carries no payload";
			break;
		case VM_MUX_WINDOW:
			if (h->len != 4)
				*why = "WINDOW payload must be 4 bytes";
			break;
		case VM_MUX_ERROR:
			if (h->len > VM_MUX_MAX_ERROR)
				*why = "ERROR text too long";
			break;
		case VM_MUX_DATA:
			if (h->len == 0)
				*why = "empty DATA frame";
			break;
		}
	}
	return *why ? -1 : VM_MUX_HDR_LEN;
}

static int fail(struct vm_mux *m, int e, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int fail(struct vm_mux *m, int e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
	return -e;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -errno;
	return 0;
}

int vm_mux_new(const struct vm_mux_opts *o, struct vm_mux **out)
{
	if (o->chan_fd < 0)
		return -EINVAL;
	if (o->window > VM_MUX_MAX_WINDOW)
		return -EINVAL;
	struct vm_mux *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->o = *o;
	if (!m->o.window)
		m->o.window = VM_MUX_DEFAULT_WINDOW;
	if (!m->o.max_streams || m->o.max_streams > VM_MUX_MAX_STREAMS)
		m->o.max_streams = VM_MUX_MAX_STREAMS;
	m->next_id = o->odd_ids ? 1 : 2;
	/* Data frames stop at OUT_HIGH; the rest is room for control frames (a few per stream). */
	m->out_max = OUT_HIGH + VM_MUX_HDR_LEN + VM_MUX_MAX_PAYLOAD +
	             m->o.max_streams * 4 * (VM_MUX_HDR_LEN + 4) + 64 * 1024;
	m->s = calloc(m->o.max_streams, sizeof(*m->s));
	int rc = m->s ? 0 : -ENOMEM;
	if (rc == 0 && pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) == -1) {
		rc = -errno;
		m->wake[0] = m->wake[1] = -1;
	}
	if (rc == 0)
		rc = set_nonblock(o->chan_fd);
	if (rc == 0 && o->listen_fd >= 0)
		rc = set_nonblock(o->listen_fd);
	if (rc != 0) {
		if (m->wake[0] > 0) {
			close(m->wake[0]);
			close(m->wake[1]);
		}
		free(m->s);
		free(m);
		return rc;
	}
	pthread_mutex_init(&m->lock, NULL);
	*out = m;
	return 0;
}

void vm_mux_stop(struct vm_mux *m)
{
	m->stop = 1;
	ssize_t r = write(m->wake[1], "x", 1);
	(void)r;
}

const char *vm_mux_error(const struct vm_mux *m)
{
	return m->err;
}

size_t vm_mux_streams(const struct vm_mux *m)
{
	return m->ns;
}

int vm_mux_open(struct vm_mux *m, uint16_t port, int fd)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	p->port = port;
	p->fd = fd;
	pthread_mutex_lock(&m->lock);
	p->next = m->pending;
	m->pending = p;
	pthread_mutex_unlock(&m->lock);
	ssize_t r = write(m->wake[1], "o", 1);
	(void)r;
	return 0;
}

/* Appends one frame to the output queue. Data frames are gated by the caller (OUT_HIGH);
 * reaching out_max means the peer stopped reading the channel altogether. */
static int queue_frame(struct vm_mux *m, uint8_t type, uint32_t id, const void *p, uint32_t len)
{
	size_t need = VM_MUX_HDR_LEN + len;
	if (m->out_off > 0 && m->out_off == m->out_len)
		m->out_off = m->out_len = 0;
	if (m->out_len + need > m->out_cap) {
		if (m->out_off > 0) {
			memmove(m->out, m->out + m->out_off, m->out_len - m->out_off);
			m->out_len -= m->out_off;
			m->out_off = 0;
		}
		if (m->out_len + need > m->out_cap) {
			size_t cap = m->out_cap ? m->out_cap : 64 * 1024;
			while (cap < m->out_len + need)
				cap *= 2;
			if (cap > m->out_max)
				cap = m->out_max;
			if (m->out_len + need > cap)
				return fail(m, ENOBUFS, "channel output queue over %zu bytes",
				            m->out_max);
			uint8_t *n = realloc(m->out, cap);
			if (!n)
				return fail(m, ENOMEM, "out of memory");
			m->out = n;
			m->out_cap = cap;
		}
	}
	struct vm_mux_hdr h = { .type = type, .stream = id, .len = len };
	vm_mux_hdr_encode(&h, m->out + m->out_len);
	if (len)
		memcpy(m->out + m->out_len + VM_MUX_HDR_LEN, p, len);
	m->out_len += need;
	return 0;
}

static struct stream *find(struct vm_mux *m, uint32_t id)
{
	for (size_t i = 0; i < m->ns; i++)
		if (m->s[i]->id == id)
			return m->s[i];
	return NULL;
}

static int add_stream(struct vm_mux *m, uint32_t id, int fd, struct stream **out)
{
	if (m->ns >= m->o.max_streams)
		return -EMFILE;
	int rc = set_nonblock(fd);
	if (rc != 0)
		return rc;
	struct stream *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->id = id;
	s->fd = fd;
	s->send_win = m->o.window;
	s->rd_ready = true;
	m->s[m->ns++] = s;
	*out = s;
	return 0;
}

static void drop_stream(struct vm_mux *m, struct stream *s)
{
	for (size_t i = 0; i < m->ns; i++) {
		if (m->s[i] == s) {
			m->s[i] = m->s[--m->ns];
			break;
		}
	}
	close(s->fd);
	free(s->rbuf);
	free(s);
}

/* Resets a stream: ERROR to the peer, fd closed. */
static int reset_stream(struct vm_mux *m, struct stream *s, const char *why)
{
	size_t n = strlen(why);
	if (n > VM_MUX_MAX_ERROR)
		n = VM_MUX_MAX_ERROR;
	int rc = queue_frame(m, VM_MUX_ERROR, s->id, why, (uint32_t)n);
	drop_stream(m, s);
	return rc;
}

static void maybe_finish(struct vm_mux *m, struct stream *s)
{
	if (s->peer_eof && s->roff == s->rlen && !s->shut_wr) {
		shutdown(s->fd, SHUT_WR);
		s->shut_wr = true;
	}
	if (s->local_eof && s->shut_wr)
		drop_stream(m, s);
}

/* The id for a new local stream: the counter's next value of our parity that is not 0 and not
 * the id of a stream still open. The counter wraps after 2^31 opens; without the check a
 * long-lived stream's id would be handed out again (the peer ends the channel: "reopened live
 * stream"; or worse, our own table holds two streams with one id), and the guest's even
 * counter would reach 0, which the peer rejects as malformed. Fewer than max_streams ids are
 * in use, so the loop ends within ns + 2 tries. */
static uint32_t alloc_id(struct vm_mux *m)
{
	uint32_t par = m->o.odd_ids ? 1u : 0u;
	uint32_t id = m->next_id;
	for (;;) {
		if ((id & 1) != par)
			id++; /* only after vm_mux_set_next_id */
		if (id == 0)  /* wrapped: back to the first id of our parity */
			id = par ? 1 : 2;
		uint32_t nx = id + 2;
		m->next_id = nx < id ? (par ? 1 : 2) : nx;
		if (!find(m, id))
			return id;
		id = m->next_id;
	}
}

void vm_mux_set_next_id(struct vm_mux *m, uint32_t id)
{
	pthread_mutex_lock(&m->lock);
	m->set_id = id;
	m->set_id_req = true;
	pthread_mutex_unlock(&m->lock);
}

static int open_pending(struct vm_mux *m)
{
	pthread_mutex_lock(&m->lock);
	struct pending *p = m->pending;
	m->pending = NULL;
	if (m->set_id_req) {
		m->next_id = m->set_id;
		m->set_id_req = false;
	}
	pthread_mutex_unlock(&m->lock);
	int rc = 0;
	while (p) {
		struct pending *next = p->next;
		struct stream *s = NULL;
		int r = rc == 0 ? add_stream(m, alloc_id(m), p->fd, &s) : -ECANCELED;
		if (r != 0) {
			close(p->fd); /* the caller sees its end close: the open failed */
		} else {
			uint8_t port[2] = { (uint8_t)(p->port >> 8), (uint8_t)p->port };
			rc = queue_frame(m, VM_MUX_OPEN, s->id, port, 2);
		}
		free(p);
		p = next;
	}
	return rc;
}

static int handle_frame(struct vm_mux *m, const struct vm_mux_hdr *h, const uint8_t *p)
{
	struct stream *s = find(m, h->stream);
	bool peer_id = (h->stream & 1) != (m->o.odd_ids ? 1u : 0u);
	switch (h->type) {
	case VM_MUX_OPEN: {
		if (!peer_id)
			return fail(m, EPROTO, "peer opened stream %u with our id parity",
			            h->stream);
		if (s)
			return fail(m, EPROTO, "peer reopened live stream %u", h->stream);
		uint16_t port = (uint16_t)(p[0] << 8 | p[1]);
		if (m->ns >= m->o.max_streams || !m->o.accept)
			return queue_frame(m, VM_MUX_ERROR, h->stream, "refused", 7);
		int fd = m->o.accept(m->o.accept_arg, port);
		if (fd < 0)
			return queue_frame(m, VM_MUX_ERROR, h->stream, "refused", 7);
		int rc = add_stream(m, h->stream, fd, &s);
		if (rc != 0) {
			close(fd);
			return queue_frame(m, VM_MUX_ERROR, h->stream, "refused", 7);
		}
		return 0;
	}
	case VM_MUX_DATA:
		if (!s)
			return 0; /* reset by us while in flight */
		if (s->peer_eof)
			return fail(m, EPROTO, "DATA after CLOSE on stream %u", h->stream);
		if ((s->rlen - s->roff) + s->credit + h->len > m->o.window)
			return fail(m, EPROTO, "peer overran the window on stream %u", h->stream);
		if (s->rlen + h->len > s->rcap) {
			if (s->roff > 0) {
				memmove(s->rbuf, s->rbuf + s->roff, s->rlen - s->roff);
				s->rlen -= s->roff;
				s->roff = 0;
			}
			if (s->rlen + h->len > s->rcap) {
				size_t cap = s->rcap ? s->rcap : 16384;
				while (cap < s->rlen + h->len)
					cap *= 2;
				uint8_t *n = realloc(s->rbuf, cap);
				if (!n)
					return fail(m, ENOMEM, "out of memory");
				s->rbuf = n;
				s->rcap = cap;
			}
		}
		memcpy(s->rbuf + s->rlen, p, h->len);
		s->rlen += h->len;
		return 0;
	case VM_MUX_CLOSE:
		if (!s)
			return 0;
		s->peer_eof = true;
		maybe_finish(m, s);
		return 0;
	case VM_MUX_WINDOW: {
		if (!s)
			return 0;
		uint64_t w = (uint64_t)s->send_win + be32(p);
		if (w > m->o.window)
			return fail(m, EPROTO, "window over the maximum on stream %u", h->stream);
		s->send_win = (uint32_t)w;
		return 0;
	}
	case VM_MUX_ERROR:
		if (s && s->peer_eof && s->roff < s->rlen) {
			/* The peer closed, then freed the stream (its local end is gone): the
			 * DATA before its CLOSE may still be waiting here, in the same read, and is
			 * delivered before the stream goes. */
			s->peer_gone = true;
			s->local_eof = true; /* nothing more is read from fd nor sent */
			s->rd_ready = false;
			s->credit = 0;
			return 0;
		}
		if (s)
			drop_stream(m, s);
		return 0;
	}
	return fail(m, EPROTO, "unknown frame type %u", h->type);
}

/* Reads and handles at most READ_BATCH buffers per call: a peer that writes as fast as it is
 * read would otherwise keep the thread here for good, with no stop check, no output written and
 * no local stream served. poll reports the rest at once. */
#define READ_BATCH 16

static int read_channel(struct vm_mux *m, bool *eof)
{
	for (int batch = 0; batch < READ_BATCH; batch++) {
		if (m->in_len == sizeof(m->in))
			return fail(m, EPROTO, "frame does not fit the input buffer");
		ssize_t n = read(m->o.chan_fd, m->in + m->in_len, sizeof(m->in) - m->in_len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return fail(m, errno, "reading the channel: %s", strerror(errno));
		}
		if (n == 0) {
			*eof = true;
			return 0;
		}
		m->in_len += (size_t)n;
		size_t off = 0;
		for (;;) {
			struct vm_mux_hdr h;
			const char *why = NULL;
			int r = vm_mux_hdr_decode(m->in + off, m->in_len - off, &h, &why);
			if (r < 0)
				return fail(m, EPROTO, "malformed frame: %s", why);
			if (r == 0 || m->in_len - off < VM_MUX_HDR_LEN + h.len)
				break;
			int rc = handle_frame(m, &h, m->in + off + VM_MUX_HDR_LEN);
			if (rc != 0)
				return rc;
			off += VM_MUX_HDR_LEN + h.len;
		}
		memmove(m->in, m->in + off, m->in_len - off);
		m->in_len -= off;
	}
	return 0;
}

static int write_channel(struct vm_mux *m, bool *eof)
{
	while (m->out_off < m->out_len) {
		ssize_t n = write(m->o.chan_fd, m->out + m->out_off, m->out_len - m->out_off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EPIPE || errno == ECONNRESET) {
				*eof = true;
				return 0;
			}
			return fail(m, errno, "writing the channel: %s", strerror(errno));
		}
		m->out_off += (size_t)n;
	}
	m->out_off = m->out_len = 0;
	return 0;
}

/* Local fd -> DATA frames, within the stream's window and the output high-water mark. */
static int pump_in(struct vm_mux *m, struct stream *s)
{
	uint8_t tmp[VM_MUX_MAX_PAYLOAD];
	while (!s->local_eof && s->send_win > 0 && m->out_len - m->out_off < OUT_HIGH) {
		size_t want = s->send_win < sizeof(tmp) ? s->send_win : sizeof(tmp);
		ssize_t n = read(s->fd, tmp, want);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				s->rd_ready = false;
				return 0;
			}
			return reset_stream(m, s, "local read failed");
		}
		if (n == 0) {
			s->local_eof = true;
			int rc = queue_frame(m, VM_MUX_CLOSE, s->id, NULL, 0);
			if (rc != 0)
				return rc;
			maybe_finish(m, s);
			return 0;
		}
		int rc = queue_frame(m, VM_MUX_DATA, s->id, tmp, (uint32_t)n);
		if (rc != 0)
			return rc;
		s->send_win -= (uint32_t)n;
	}
	return 0;
}

/* Buffered peer bytes -> local fd; grants the window back as they leave. */
static int pump_out(struct vm_mux *m, struct stream *s)
{
	while (s->roff < s->rlen) {
		ssize_t n = send(s->fd, s->rbuf + s->roff, s->rlen - s->roff, MSG_NOSIGNAL);
		if (n == -1 && errno == ENOTSOCK)
			n = write(s->fd, s->rbuf + s->roff, s->rlen - s->roff);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return reset_stream(m, s, "local write failed");
		}
		s->roff += (size_t)n;
		s->credit += (uint32_t)n;
	}
	if (s->roff == s->rlen)
		s->roff = s->rlen = 0;
	/* Grant in batches: a quarter window, or everything once the buffer is empty. */
	if (s->peer_gone)
		s->credit = 0;
	if (s->credit > 0 && (s->rlen == 0 || s->credit >= m->o.window / 4)) {
		uint8_t w[4] = { (uint8_t)(s->credit >> 24), (uint8_t)(s->credit >> 16),
			         (uint8_t)(s->credit >> 8), (uint8_t)s->credit };
		int rc = queue_frame(m, VM_MUX_WINDOW, s->id, w, 4);
		if (rc != 0)
			return rc;
		s->credit = 0;
	}
	maybe_finish(m, s);
	return 0;
}

static int accept_listener(struct vm_mux *m)
{
	for (;;) {
		int fd = accept4(m->o.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return 0; /* EAGAIN, or EMFILE and the like: try again on the next event */
		}
		struct stream *s = NULL;
		if (m->ns >= m->o.max_streams || add_stream(m, alloc_id(m), fd, &s) != 0) {
			close(fd);
			return 0;
		}
		uint8_t port[2] = { (uint8_t)(m->o.listen_port >> 8), (uint8_t)m->o.listen_port };
		int rc = queue_frame(m, VM_MUX_OPEN, s->id, port, 2);
		if (rc != 0)
			return rc;
	}
}

int vm_mux_run(struct vm_mux *m)
{
	struct pollfd *pfd = calloc(m->o.max_streams + 3, sizeof(*pfd));
	struct stream **ps = calloc(m->o.max_streams, sizeof(*ps));
	int rc = (pfd && ps) ? 0 : -ENOMEM;
	m->err[0] = '\0';
	bool eof = false;
	while (rc == 0 && !m->stop && !eof) {
		rc = open_pending(m);
		if (rc != 0)
			break;
		/* Move whatever can move without waiting before polling. */
		for (size_t i = m->ns; i-- > 0 && rc == 0;) {
			if (i >= m->ns)
				continue;
			struct stream *s = m->s[i];
			/* Everything the local end sent is read and CLOSE is queued, and the local
			 * end is now closed for good: nothing can be written to it nor read from
			 * it. Reset rather than wait for the peer's CLOSE, which a hostile peer never
			 * sends: the stream and its fd would be held for the channel's lifetime. */
			if (s->local_eof && s->hup) {
				if (s->peer_gone)
					drop_stream(m, s);
				else
					rc = reset_stream(m, s, "closed");
				continue;
			}
			if (s->roff < s->rlen || s->credit > 0 || s->peer_eof)
				rc = pump_out(m, s);
			if (rc == 0 && i < m->ns && m->s[i] == s && s->rd_ready)
				rc = pump_in(m, s);
		}
		if (rc != 0)
			break;
		rc = write_channel(m, &eof);
		if (rc != 0 || eof)
			break;

		size_t n = 0;
		pfd[n++] = (struct pollfd){ .fd = m->wake[0], .events = POLLIN };
		short cev = POLLIN;
		if (m->out_off < m->out_len)
			cev |= POLLOUT;
		pfd[n++] = (struct pollfd){ .fd = m->o.chan_fd, .events = cev };
		size_t lidx = 0;
		if (m->o.listen_fd >= 0 && m->ns < m->o.max_streams) {
			lidx = n;
			pfd[n++] = (struct pollfd){ .fd = m->o.listen_fd, .events = POLLIN };
		}
		size_t first = n;
		for (size_t i = 0; i < m->ns; i++) {
			struct stream *s = m->s[i];
			short ev = 0;
			if (!s->local_eof && s->send_win > 0 && m->out_len - m->out_off < OUT_HIGH)
				ev |= POLLIN;
			if (s->roff < s->rlen)
				ev |= POLLOUT;
			ps[i] = s;
			/* After local_eof the fd is polled with no events too: POLLHUP (always
			 * reported) says the local end closed; before it, POLLIN covers that. */
			bool watch = ev != 0 || s->local_eof;
			pfd[n++] = (struct pollfd){ .fd = watch ? s->fd : -1, .events = ev };
		}
		int pr = poll(pfd, n, -1);
		if (pr == -1) {
			if (errno == EINTR)
				continue;
			rc = fail(m, errno, "poll: %s", strerror(errno));
			break;
		}
		/* Readiness first: the stream table may change once frames are handled. */
		for (size_t i = first; i < n; i++) {
			if (pfd[i].fd >= 0 && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				ps[i - first]->rd_ready = true;
			if (pfd[i].fd >= 0 && ps[i - first]->local_eof &&
			    (pfd[i].revents & (POLLHUP | POLLERR)))
				ps[i - first]->hup = true;
		}
		if (pfd[0].revents) {
			char tmp[64];
			while (read(m->wake[0], tmp, sizeof(tmp)) > 0) {
			}
		}
		if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			rc = read_channel(m, &eof);
			if (rc != 0)
				break;
		}
		if (lidx && (pfd[lidx].revents & POLLIN)) {
			rc = accept_listener(m);
			if (rc != 0)
				break;
		}
	}
	free(pfd);
	free(ps);
	return rc;
}

void vm_mux_free(struct vm_mux *m)
{
	if (!m)
		return;
	while (m->ns > 0)
		drop_stream(m, m->s[m->ns - 1]);
	struct pending *p = m->pending;
	while (p) {
		struct pending *next = p->next;
		close(p->fd);
		free(p);
		p = next;
	}
	close(m->wake[0]);
	close(m->wake[1]);
	pthread_mutex_destroy(&m->lock);
	free(m->out);
	free(m->s);
	free(m);
}
