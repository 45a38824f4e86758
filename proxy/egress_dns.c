/*
 * The egress proxy's own DNS stub resolver, used when custos.yaml names egress.dns.servers:
 * A and AAAA questions over UDP from a random source port with random IDs, TCP when an answer
 * comes back truncated, every answer matched to its question before it counts, servers tried
 * in order (twice) with a timeout per try. The addresses found go to the SSRF check exactly as
 * getaddrinfo's do (ssrf_resolve_via), and the connection uses them: no second resolution.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "egress_int.h"

#define DNS_HDR        12
#define DNS_UDP_MAX    512 /* no EDNS0: larger answers come truncated and go to TCP */
#define DNS_MAX_RR     256 /* answer records accepted in one message (more: refused) */
#define DNS_MAX_CNAME  8   /* CNAME hops followed inside one answer */
#define DNS_NAME_MAX   255 /* wire form; the text form is shorter */
#define DNS_T_A        1
#define DNS_T_CNAME    5
#define DNS_T_AAAA     28
#define DNS_C_IN       1
#define DNS_ROUNDS     2 /* every server is tried this many times */
#define DNS_TRY_NS_DEF (2 * NS_PER_S)

struct edns {
	struct sockaddr_storage srv[EGRESS_MAX_DNS_SERVERS];
	socklen_t len[EGRESS_MAX_DNS_SERVERS];
	size_t n;
	uint64_t try_ns;
};

/* One question's outcome. */
typedef struct dq {
	uint16_t type, id;
	uint8_t q[DNS_HDR + DNS_NAME_MAX + 4]; /* the query message */
	size_t qlen;
	enum { DQ_WAIT = 0, DQ_DONE, DQ_NX, DQ_TRUNC, DQ_FAIL } st;
	uint8_t addr[DNS_MAX_RR][16];
	size_t naddr;
	char why[96];
} dq;

custos_err edns_parse_server(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	span host;
	uint16_t port = 53;
	char h[INET6_ADDRSTRLEN + 2];
	memset(ss, 0, sizeof(*ss));
	span sp = span_cstr(s);
	/* "addr", "v4:port" or "[v6]:port"; a bare v6 address has more than one colon */
	const char *c1 = strchr(s, ':');
	if (s[0] != '[' && c1 && strchr(c1 + 1, ':')) {
		host = sp;
	} else {
		if (ssrf_split_authority(sp, 53, &host, &port) != CUSTOS_OK)
			return err_set(CUSTOS_ERR_INVAL, "DNS server '%s': %s", s, err_msg());
	}
	GUARD(span_copy_cstr(host, h, sizeof(h)));
	size_t hl = strlen(h);
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
		h[hl - 1] = '\0';
		memmove(h, h + 1, hl - 1);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)ss;
	if (inet_pton(AF_INET, h, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
		return CUSTOS_OK;
	}
	if (inet_pton(AF_INET6, h, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
		return CUSTOS_OK;
	}
	return err_set(CUSTOS_ERR_INVAL,
	               "DNS server '%s' is not an IP address (with an optional port)", s);
}

custos_err edns_new(char *const *servers, size_t n, uint64_t try_ns, edns **out)
{
	*out = NULL;
	ENSURE(n > 0 && n <= EGRESS_MAX_DNS_SERVERS, CUSTOS_ERR_LIMIT,
	       "egress: 1 to %d DNS servers", EGRESS_MAX_DNS_SERVERS);
	edns *d = xcalloc(1, sizeof(*d));
	for (size_t i = 0; i < n; i++) {
		custos_err e = edns_parse_server(servers[i], &d->srv[i], &d->len[i]);
		if (e != CUSTOS_OK) {
			free(d);
			return e;
		}
	}
	d->n = n;
	d->try_ns = try_ns ? try_ns : DNS_TRY_NS_DEF;
	*out = d;
	return CUSTOS_OK;
}

void edns_free(edns *d)
{
	free(d);
}

/* ---------------------------------------------------------------------------------------------
 * Messages
 */
static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint16_t rand16(void)
{
	uint8_t b[2];
	if (RAND_bytes(b, sizeof(b)) != 1)
		abort(); /* predictable IDs would invite spoofing: never carry on without */
	return rd16(b);
}

static custos_err build_query(dq *q, const char *name, uint16_t type)
{
	size_t nl = strlen(name);
	ENSURE(nl > 0 && nl <= 253, CUSTOS_ERR_INVAL, "DNS: bad name length");
	q->type = type;
	q->id = rand16();
	uint8_t *p = q->q;
	memset(p, 0, DNS_HDR);
	p[0] = (uint8_t)(q->id >> 8);
	p[1] = (uint8_t)q->id;
	p[2] = 0x01; /* RD */
	p[5] = 1;    /* QDCOUNT */
	size_t o = DNS_HDR;
	const char *s = name;
	while (*s) {
		const char *dot = strchr(s, '.');
		size_t ll = dot ? (size_t)(dot - s) : strlen(s);
		ENSURE(ll > 0 && ll <= 63, CUSTOS_ERR_INVAL, "DNS: bad label in %s", name);
		p[o++] = (uint8_t)ll;
		memcpy(p + o, s, ll);
		o += ll;
		s += ll;
		if (*s == '.')
			s++;
	}
	p[o++] = 0;
	p[o++] = (uint8_t)(type >> 8);
	p[o++] = (uint8_t)type;
	p[o++] = 0;
	p[o++] = DNS_C_IN;
	q->qlen = o;
	return CUSTOS_OK;
}

/* Reads the (possibly compressed) name at *off into out (lower-case text, no final dot).
 * Returns false on a malformed name; *off moves past it. */
static bool rd_name(const uint8_t *m, size_t n, size_t *off, char out[DNS_NAME_MAX + 1])
{
	size_t o = *off, w = 0, total = 0;
	bool jumped = false;
	int jumps = 0;
	for (;;) {
		if (o >= n)
			return false;
		uint8_t l = m[o];
		if ((l & 0xc0) == 0xc0) {
			if (o + 1 >= n || ++jumps > 32)
				return false;
			size_t to = (size_t)(l & 0x3f) << 8 | m[o + 1];
			if (!jumped)
				*off = o + 2;
			jumped = true;
			if (to >= n)
				return false;
			o = to;
			continue;
		}
		if (l & 0xc0)
			return false;
		o++;
		if (l == 0)
			break;
		total += l + 1u;
		if (total > DNS_NAME_MAX - 1 || o + l > n)
			return false;
		if (w)
			out[w++] = '.';
		for (size_t i = 0; i < l; i++) {
			uint8_t ch = m[o + i];
			if (ch == '.' || ch == 0)
				return false; /* the text form would be ambiguous */
			out[w++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
		o += l;
	}
	out[w] = '\0';
	if (!jumped)
		*off = o;
	return true;
}

static bool name_eq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char x = *a >= 'A' && *a <= 'Z' ? (char)(*a + 32) : *a;
		char y = *b >= 'A' && *b <= 'Z' ? (char)(*b + 32) : *b;
		if (x != y)
			return false;
	}
	return *a == *b;
}

typedef struct rr {
	char owner[DNS_NAME_MAX + 1];
	uint16_t type;
	size_t rd, rdlen;
} rr;

/* Whether m[n] answers q (same ID, a response to our one question). Anything else is not
 * ours: it is ignored, never taken as an answer. */
static bool is_answer_to(const dq *q, const char *name, const uint8_t *m, size_t n)
{
	char qn[DNS_NAME_MAX + 1];
	if (n < DNS_HDR || rd16(m) != q->id || !(m[2] & 0x80) || (m[2] & 0x78) != 0 ||
	    rd16(m + 4) != 1)
		return false;
	size_t o = DNS_HDR;
	if (!rd_name(m, n, &o, qn) || o + 4 > n)
		return false;
	return name_eq(qn, name) && rd16(m + o) == q->type && rd16(m + o + 2) == DNS_C_IN;
}

/* Takes the answer m[n] (already matched to q) into q. */
static void take_answer(dq *q, const char *name, const uint8_t *m, size_t n, bool tcp)
{
	rr *rrs = NULL;
	char tmp[DNS_NAME_MAX + 1];
	unsigned rcode = m[3] & 0x0f;
	if ((m[2] & 0x02) && !tcp) {
		q->st = DQ_TRUNC;
		return;
	}
	if (rcode == 3) {
		q->st = DQ_NX;
		return;
	}
	if (rcode != 0 || (m[2] & 0x02)) {
		q->st = DQ_FAIL;
		snprintf(q->why, sizeof(q->why), "server answered rcode %u", rcode);
		return;
	}
	size_t an = rd16(m + 6), o = DNS_HDR;
	if (an > DNS_MAX_RR) {
		q->st = DQ_FAIL;
		snprintf(q->why, sizeof(q->why), "%zu answer records (more than %d)", an,
		         DNS_MAX_RR);
		return;
	}
	if (!rd_name(m, n, &o, tmp) || o + 4 > n)
		goto bad;
	o += 4;
	rrs = xcalloc(an ? an : 1, sizeof(*rrs));
	for (size_t i = 0; i < an; i++) {
		if (!rd_name(m, n, &o, rrs[i].owner) || o + 10 > n)
			goto bad;
		rrs[i].type = rd16(m + o);
		uint16_t cls = rd16(m + o + 2);
		rrs[i].rdlen = rd16(m + o + 8);
		rrs[i].rd = o + 10;
		o += 10 + rrs[i].rdlen;
		if (o > n)
			goto bad;
		if (cls != DNS_C_IN)
			rrs[i].type = 0; /* not ours */
	}
	/* The names that stand for the question: it, and the CNAME chain from it. */
	char chain[DNS_MAX_CNAME + 1][DNS_NAME_MAX + 1];
	size_t nc = 1;
	snprintf(chain[0], sizeof(chain[0]), "%s", name);
	for (bool more = true; more && nc <= DNS_MAX_CNAME;) {
		more = false;
		for (size_t i = 0; i < an; i++) {
			if (rrs[i].type != DNS_T_CNAME || !name_eq(rrs[i].owner, chain[nc - 1]))
				continue;
			size_t ro = rrs[i].rd;
			if (!rd_name(m, n, &ro, chain[nc]) || ro != rrs[i].rd + rrs[i].rdlen)
				goto bad;
			nc++;
			more = true;
			break;
		}
	}
	size_t want = q->type == DNS_T_A ? 4 : 16;
	for (size_t i = 0; i < an; i++) {
		if (rrs[i].type != q->type)
			continue;
		if (rrs[i].rdlen != want)
			goto bad;
		bool mine = false;
		for (size_t k = 0; k < nc && !mine; k++)
			mine = name_eq(rrs[i].owner, chain[k]);
		if (mine)
			memcpy(q->addr[q->naddr++], m + rrs[i].rd, want);
	}
	q->st = DQ_DONE;
	free(rrs);
	return;
bad:
	free(rrs);
	q->st = DQ_FAIL;
	q->naddr = 0;
	snprintf(q->why, sizeof(q->why), "malformed answer");
}

/* ---------------------------------------------------------------------------------------------
 * Transport
 */
static int wait_fd(int fd, short ev, uint64_t deadline)
{
	for (;;) {
		uint64_t now = tm_mono_ns();
		if (now >= deadline)
			return 0;
		struct pollfd pf = { .fd = fd, .events = ev };
		int ms = (int)((deadline - now + 999999) / 1000000);
		int r = poll(&pf, 1, ms);
		if (r == -1 && errno == EINTR)
			continue;
		return r;
	}
}

/* A UDP socket bound to a random port of its own (not left to the kernel's next-port choice),
 * connected to the server, so that only the server's address and port reach it. */
static int udp_open(const struct sockaddr_storage *srv, socklen_t sl)
{
	int fd = socket(srv->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return -1;
	for (int i = 0; i < 16; i++) {
		struct sockaddr_storage me;
		memset(&me, 0, sizeof(me));
		me.ss_family = srv->ss_family;
		uint16_t p = (uint16_t)(1024 + rand16() % (65536 - 1024));
		socklen_t ml;
		if (srv->ss_family == AF_INET) {
			((struct sockaddr_in *)(void *)&me)->sin_port = htons(p);
			ml = sizeof(struct sockaddr_in);
		} else {
			((struct sockaddr_in6 *)(void *)&me)->sin6_port = htons(p);
			ml = sizeof(struct sockaddr_in6);
		}
		if (bind(fd, (struct sockaddr *)&me, ml) == 0)
			break;
		if (errno != EADDRINUSE && errno != EACCES)
			break; /* connect() below binds an ephemeral port instead */
	}
	if (connect(fd, (const struct sockaddr *)srv, sl) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Every question of this try still waiting fails; why is "what: strerror(err)", either part
 * left out when empty (err 0). */
static void fail_waiting(dq *qs, size_t nq, const char *what, int err)
{
	for (size_t i = 0; i < nq; i++)
		if (qs[i].st == DQ_WAIT) {
			qs[i].st = DQ_FAIL;
			snprintf(qs[i].why, sizeof(qs[i].why), "%s%s%s", what,
			         what[0] && err ? ": " : "", err ? strerror(err) : "");
		}
}

/* Both questions over UDP to one server within one try's time. */
static void ask_udp(const edns *d, size_t si, const char *name, dq *qs, size_t nq)
{
	uint8_t m[DNS_UDP_MAX + 1];
	int fd = udp_open(&d->srv[si], d->len[si]);
	if (fd == -1) {
		fail_waiting(qs, nq, "socket", errno);
		return;
	}
	for (size_t i = 0; i < nq; i++)
		if (qs[i].st == DQ_WAIT && send(fd, qs[i].q, qs[i].qlen, MSG_NOSIGNAL) == -1) {
			/* The error can be an earlier question's: ECONNREFUSED is the ICMP port
			 * unreachable the first question brought back. Taken by this send, it
			 * leaves the socket nothing to wake the wait below with, so the questions
			 * already sent would wait out the whole timeout for answers that cannot
			 * come: the server fails this try at once, all questions together. */
			fail_waiting(qs, nq, "send", errno);
			break;
		}
	uint64_t deadline = tm_mono_ns() + d->try_ns;
	for (;;) {
		size_t waiting = 0;
		for (size_t i = 0; i < nq; i++)
			waiting += qs[i].st == DQ_WAIT;
		if (waiting == 0)
			break;
		if (wait_fd(fd, POLLIN, deadline) <= 0) {
			fail_waiting(qs, nq, "timed out", 0);
			break;
		}
		ssize_t r = recv(fd, m, sizeof(m), 0);
		if (r == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			fail_waiting(qs, nq, "", errno); /* e.g. ECONNREFUSED: nobody there */
			break;
		}
		if ((size_t)r > DNS_UDP_MAX)
			continue; /* not a message we asked for (no EDNS0) */
		for (size_t i = 0; i < nq; i++)
			if (qs[i].st == DQ_WAIT && is_answer_to(&qs[i], name, m, (size_t)r)) {
				take_answer(&qs[i], name, m, (size_t)r, false);
				break;
			}
	}
	close(fd);
}

static bool io_all(int fd, uint8_t *p, size_t n, bool wr, uint64_t deadline)
{
	while (n) {
		ssize_t r = wr ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r == 0)
			return false;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || wait_fd(fd, wr ? POLLOUT : POLLIN, deadline) <= 0)
			return false;
	}
	return true;
}

/* One question over TCP (after a truncated UDP answer). */
static void ask_tcp(const edns *d, size_t si, const char *name, dq *q)
{
	uint8_t *m = NULL;
	uint64_t deadline = tm_mono_ns() + d->try_ns;
	q->st = DQ_FAIL;
	q->naddr = 0;
	q->id = rand16(); /* a new question: a new ID */
	q->q[0] = (uint8_t)(q->id >> 8);
	q->q[1] = (uint8_t)q->id;
	int fd = socket(d->srv[si].ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		snprintf(q->why, sizeof(q->why), "socket: %s", strerror(errno));
		return;
	}
	int r = connect(fd, (const struct sockaddr *)&d->srv[si], d->len[si]);
	int err = 0;
	socklen_t el = sizeof(err);
	if (r == -1 && errno == EINPROGRESS) {
		if (wait_fd(fd, POLLOUT, deadline) <= 0)
			err = ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1)
			err = errno;
	} else if (r == -1) {
		err = errno;
	}
	uint8_t l2[2] = { (uint8_t)(q->qlen >> 8), (uint8_t)q->qlen };
	size_t ml = 0;
	if (err == 0 && io_all(fd, l2, 2, true, deadline) &&
	    io_all(fd, q->q, q->qlen, true, deadline) && io_all(fd, l2, 2, false, deadline)) {
		ml = rd16(l2);
		m = xcalloc(1, ml ? ml : 1);
		if (ml < DNS_HDR || !io_all(fd, m, ml, false, deadline))
			ml = 0;
	} else if (err == 0) {
		err = ETIMEDOUT;
	}
	close(fd);
	if (ml == 0 || !is_answer_to(q, name, m, ml)) {
		snprintf(q->why, sizeof(q->why), "over TCP: %s",
		         err ? strerror(err) : "no matching answer");
		free(m);
		return;
	}
	take_answer(q, name, m, ml, true);
	free(m);
}

/* ---------------------------------------------------------------------------------------------
 * Lookup
 */
custos_err edns_lookup(void *ctx, const char *name, ssrf_each_fn each, void *arg)
{
	const edns *d = ctx;
	dq *qs = xcalloc(2, sizeof(*qs));
	custos_err e = CUSTOS_OK;
	char last[128] = "no server";

	if ((e = build_query(&qs[0], name, DNS_T_A)) != CUSTOS_OK ||
	    (e = build_query(&qs[1], name, DNS_T_AAAA)) != CUSTOS_OK)
		goto out;
	for (size_t t = 0; t < d->n * DNS_ROUNDS; t++) {
		size_t si = t % d->n;
		for (size_t i = 0; i < 2; i++) { /* a fresh question (new ID) per try */
			qs[i].st = DQ_WAIT;
			qs[i].naddr = 0;
			qs[i].id = rand16();
			qs[i].q[0] = (uint8_t)(qs[i].id >> 8);
			qs[i].q[1] = (uint8_t)qs[i].id;
		}
		ask_udp(d, si, name, qs, 2);
		for (size_t i = 0; i < 2; i++)
			if (qs[i].st == DQ_TRUNC)
				ask_tcp(d, si, name, &qs[i]);
		bool fail = false;
		for (size_t i = 0; i < 2; i++)
			if (qs[i].st == DQ_FAIL) {
				fail = true;
				char a[INET6_ADDRSTRLEN] = "?";
				const struct sockaddr *sa = (const struct sockaddr *)&d->srv[si];
				if (sa->sa_family == AF_INET)
					inet_ntop(AF_INET,
					          &((const struct sockaddr_in *)(const void *)sa)
					                   ->sin_addr,
					          a, sizeof(a));
				else
					inet_ntop(AF_INET6,
					          &((const struct sockaddr_in6 *)(const void *)sa)
					                   ->sin6_addr,
					          a, sizeof(a));
				snprintf(last, sizeof(last), "%s (%s): %s", a,
				         qs[i].type == DNS_T_A ? "A" : "AAAA", qs[i].why);
			}
		if (fail)
			continue; /* this server could not say: ask the next */
		if (qs[0].st == DQ_NX || qs[1].st == DQ_NX) {
			e = err_set(CUSTOS_ERR_NOTFOUND, "resolving %s: no such name (NXDOMAIN)",
			            name);
			goto out;
		}
		/* Both answered: every address goes through the check (one bad one poisons). */
		for (size_t i = 0; i < 2; i++) {
			for (size_t k = 0; k < qs[i].naddr; k++) {
				struct sockaddr_storage ss;
				memset(&ss, 0, sizeof(ss));
				socklen_t sl;
				if (qs[i].type == DNS_T_A) {
					struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&ss;
					s4->sin_family = AF_INET;
					memcpy(&s4->sin_addr, qs[i].addr[k], 4);
					sl = sizeof(*s4);
				} else {
					struct sockaddr_in6 *s6 =
					        (struct sockaddr_in6 *)(void *)&ss;
					s6->sin6_family = AF_INET6;
					memcpy(&s6->sin6_addr, qs[i].addr[k], 16);
					sl = sizeof(*s6);
				}
				if ((e = each(arg, (struct sockaddr *)&ss, sl)) != CUSTOS_OK)
					goto out;
			}
		}
		if (qs[0].naddr + qs[1].naddr == 0)
			e = err_set(CUSTOS_ERR_NOTFOUND, "resolving %s: no address", name);
		goto out;
	}
	e = err_set(CUSTOS_ERR_IO, "resolving %s: no DNS server answered; last: %s", name, last);
out:
	free(qs);
	return e;
}
