/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server: fixed newstyle handshake, then the transmission phase with
 * many requests in flight per connection, answered out of order.
 *
 * Each connection has a reader coroutine (handshake, then request headers and
 * write payloads) and one coroutine per request in flight, taken from the
 * reactor's pool. Replies go out under a per-connection send lock, one whole
 * reply (or structured chunk run) at a time. Everything a client can make us
 * allocate is bounded: option lengths, request sizes, requests and bytes in
 * flight per connection, and request and reply buffers server-wide.
 *
 * Time is bounded too: a connection must choose an export within the
 * handshake limit, and a request whose header or payload has started to
 * arrive must keep arriving; a watchdog coroutine (one ring slot for the
 * whole server) shuts down the sockets that miss their deadline.
 */
#include "nbd-server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd-proto.h"
#include "nbd-tls.h"
#include "vstor/reactor.h"

#define NBD_MAX_PAYLOAD (32u << 20)    /* largest READ/WRITE we accept */
#define NBD_MAX_OPTION_LEN (64u << 10) /* option data we read; more is dropped */
#define NBD_MAX_OPTIONS 4096	       /* options per handshake */
#define NBD_DEFAULT_MAX_REQUESTS 64
#define NBD_MAX_BYTES_IN_FLIGHT (64u << 20)
#define NBD_MAX_EXTENTS 4096 /* descriptors per block-status reply */
#define NBD_PREFERRED_BLOCK 4096
#define NBD_SPARSE_READ_MIN (64u << 10) /* reads this large look for holes */
/*
 * Buffer bytes every connection may hold whatever the others do (and what
 * it may keep cached while the server is under memory pressure).
 */
#define NBD_CONN_RESERVE (1u << 20)

#define CTX_BASE_ALLOCATION 1u
#define CTX_ALLOCATION_DEPTH 2u

struct nbd_export {
	struct vs_export *exp; /* the policy: read-only, discard, detect-zeroes, ranges, stats */
	const char *name;      /* vs_export_name(exp) */
	char *description;
	struct vs_node *node; /* vs_export_node(exp), for block status */
	bool read_only;	      /* vs_export_is_read_only(exp) */
	bool wce;
	struct nbd_export *next;
};

struct nbd_conn;

struct nbd_req {
	struct nbd_conn *conn;
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint64_t len;
	void *buf;
	size_t cap;
	uint64_t accounted; /* bytes counted in bytes_in_flight */
	uint64_t charged;   /* reply memory counted in the buffered bytes while it runs */
	struct nbd_req *next_free;
};

/* A reply waiting to be sent: the iovecs (and what they point to) belong to its sender. */
struct nbd_out {
	struct iovec *iov;
	int niov;
	int ret;
	bool done;
	struct vs_co *co;
	struct nbd_out *next;
};

struct nbd_conn {
	struct vs_nbd_server *srv;
	int fd;
	struct nbd_export *exp;
	bool structured;
	bool extended;
	bool no_zeroes;
	bool fixed;
	struct nbd_tls_session *tls; /* after STARTTLS */
	/*
	 * Receive buffer: one recv takes whatever the client has sent, so a
	 * burst of pipelined request headers costs one SQE, not one each.
	 */
	uint8_t *rbuf;
	size_t rpos, rlen;
	unsigned contexts; /* CTX_* negotiated for the export in ctx_export */
	char *ctx_export;  /* export the contexts were set for */
	bool dead;	   /* a send failed or the client left: stop reading */
	struct vs_co_mutex send_lock;
	/*
	 * Replies queued for the sender coroutine, which sends everything that
	 * queued up while it was busy in one sendmsg: under load, the replies
	 * of one loop turn cost one SQE and one wakeup of the client.
	 */
	struct nbd_out *out_head, **out_tail;
	bool sending;
	unsigned in_flight;
	uint64_t bytes_in_flight;
	struct vs_co_queue slot_wait;  /* reader waits for a free slot */
	struct vs_co_queue drain_wait; /* reader waits for in-flight to end */
	struct nbd_req *free_reqs;
	struct vs_co *reader;
	/*
	 * Buffer bytes this connection holds (request buffers in use or cached,
	 * reply memory of requests running), part of the server's total.
	 */
	uint64_t buffered;
	bool mem_waiting; /* the reader waits for the server's memory bound */
	/* Time limits: the watchdog shuts the socket down after the deadline. */
	bool in_handshake;
	uint64_t deadline;   /* CLOCK_MONOTONIC ns, 0 = none */
	uint64_t refresh_ns; /* a received byte moves the deadline this far ahead */
	struct nbd_conn *next;
};

struct nbd_listener {
	struct vs_nbd_server *srv;
	int fd;
	struct vs_co *co;
	bool closed;
	struct nbd_listener *next;
};

struct vs_nbd_server {
	struct vs_reactor *reactor;
	struct vs_nbd_server_opts opts;
	struct nbd_export *exports;
	struct nbd_listener *listeners;
	struct nbd_conn *conns;
	unsigned nconns;
	unsigned served; /* connections ever accepted */
	bool shutting_down;
	bool finished;
	unsigned listeners_alive;
	struct vs_co_queue accept_wait;	   /* acceptors wait for a connection slot */
	struct vs_co_queue idle_wait;	   /* shutdown waits for connections to end */
	struct vs_co_queue finish_wait;	   /* vs_nbd_server_wait() */
	uint64_t buffered;		   /* sum of the connections' buffered bytes */
	unsigned mem_waiters;		   /* readers waiting for the memory bound */
	uint64_t handshake_ns, request_ns; /* the time limits, 0 = none */
	struct vs_co *watchdog;		   /* alive while connections have deadlines */
	struct vs_nbd_server_stats stats;
};

/* ---- errors ---- */

uint32_t vs_nbd_errno_to_wire(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

/* ---- server and exports ---- */

int vs_nbd_server_new(struct vs_nbd_server **out, const struct vs_nbd_server_opts *opts)
{
	struct vs_nbd_server *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->reactor = vs_reactor_current();
	if (!s->reactor) {
		free(s);
		return -EINVAL;
	}
	if (opts)
		s->opts = *opts;
	if (!s->opts.max_requests)
		s->opts.max_requests = NBD_DEFAULT_MAX_REQUESTS;
	if (!s->opts.connection_limit)
		s->opts.connection_limit = VS_NBD_DEFAULT_CONNECTION_LIMIT;
	if (!s->opts.handshake_limit)
		s->opts.handshake_limit = VS_NBD_DEFAULT_HANDSHAKE_LIMIT;
	if (!s->opts.request_timeout)
		s->opts.request_timeout = VS_NBD_DEFAULT_REQUEST_TIMEOUT;
	if (!s->opts.max_buffered)
		s->opts.max_buffered = VS_NBD_DEFAULT_MAX_BUFFERED;
	if (s->opts.max_buffered < VS_NBD_MIN_MAX_BUFFERED)
		s->opts.max_buffered = VS_NBD_MIN_MAX_BUFFERED;
	if (s->opts.handshake_limit != VS_NBD_UNLIMITED)
		s->handshake_ns = s->opts.handshake_limit * 1000000000ull;
	if (s->opts.request_timeout != VS_NBD_UNLIMITED)
		s->request_ns = s->opts.request_timeout * 1000000000ull;
	*out = s;
	return 0;
}

static struct nbd_export *find_export(struct vs_nbd_server *s, const char *name, size_t len)
{
	struct nbd_export *e;

	if (len == 0 && s->exports) {
		/* The empty name picks the export named "", else the first one. */
		for (e = s->exports; e; e = e->next)
			if (!e->name[0])
				return e;
		return s->exports;
	}
	for (e = s->exports; e; e = e->next)
		if (strlen(e->name) == len && !memcmp(e->name, name, len))
			return e;
	return NULL;
}

int vs_nbd_server_add_export(struct vs_nbd_server *s, const struct vs_nbd_export_opts *opts,
			     struct vs_error *err)
{
	struct nbd_export *e, **tail;
	const char *name = opts->name ? opts->name : "";
	int ret;

	if (strlen(name) > NBD_MAX_STRING)
		return vs_error_set(err, -EINVAL, "Export name too long (max %d bytes)",
				    NBD_MAX_STRING);
	for (e = s->exports; e; e = e->next)
		if (!strcmp(e->name, name))
			return vs_error_set(err, -EEXIST, "Export '%s' is defined twice", name);
	e = calloc(1, sizeof(*e));
	if (!e)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	/*
	 * The write cache knob only says what NBD advertises: the node's cache
	 * mode makes writes durable, so the export is not writethrough itself.
	 */
	ret = vs_export_new(&e->exp, &(struct vs_export_opts){
					     .name = name,
					     .node = opts->node,
					     .read_only = opts->read_only,
					     .discard = opts->discard,
					     .detect_zeroes = opts->detect_zeroes,
				     });
	e->description = opts->description ? strdup(opts->description) : NULL;
	if (ret < 0 || (opts->description && !e->description)) {
		vs_export_free(ret < 0 ? NULL : e->exp);
		free(e->description);
		free(e);
		return vs_error_set(err, ret < 0 ? ret : -ENOMEM, "Out of memory");
	}
	e->name = vs_export_name(e->exp);
	e->node = opts->node;
	e->read_only = vs_export_is_read_only(e->exp);
	e->wce = opts->wce;
	for (tail = &s->exports; *tail; tail = &(*tail)->next)
		;
	*tail = e;
	return 0;
}

struct vs_export *vs_nbd_server_get_export(struct vs_nbd_server *s, const char *name)
{
	const char *n = name ? name : "";

	for (struct nbd_export *e = s->exports; e; e = e->next)
		if (!strcmp(e->name, n))
			return e->exp;
	return NULL;
}

static uint16_t export_flags(struct vs_nbd_server *s, const struct nbd_export *e)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_DF | NBD_FLAG_SEND_CACHE;

	if (e->read_only)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	if (e->wce)
		f |= NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
	/*
	 * Every connection to an export shares one node and its caches on one
	 * reactor, so a flush on any connection covers writes acknowledged on
	 * all of them: multi-conn is safe for writable exports too.
	 */
	if (s->opts.max_connections != 1)
		f |= NBD_FLAG_CAN_MULTI_CONN;
	return f;
}

/* ---- time limits and the memory bound ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * From now on the client must send a byte every @ns (0: no deadline), as
 * long as a request is on its way in.
 */
static void conn_expect_bytes(struct nbd_conn *c, uint64_t ns)
{
	c->refresh_ns = ns;
	c->deadline = ns ? now_ns() + ns : 0;
}

/* Add @delta bytes to what @c and the server hold; wake memory waiters on a release. */
static void conn_account(struct nbd_conn *c, int64_t delta)
{
	struct vs_nbd_server *s = c->srv;

	c->buffered += (uint64_t)delta;
	s->buffered += (uint64_t)delta;
	if (s->buffered > s->stats.buffered_peak)
		s->stats.buffered_peak = s->buffered;
	if (delta < 0 && s->mem_waiters) {
		for (struct nbd_conn *o = s->conns; o; o = o->next)
			if (o->mem_waiting)
				vs_co_queue_wake_all(&o->slot_wait);
	}
}

/*
 * May @c take @extra more buffer bytes? Always within its reserve; beyond
 * it, only under the server's bound, and once half the bound is in use,
 * only while it holds less than an equal share: the connections that hold
 * the most are the ones that stop being read.
 */
static bool conn_may_take(struct nbd_conn *c, uint64_t extra)
{
	struct vs_nbd_server *s = c->srv;
	uint64_t max = s->opts.max_buffered;

	if (!extra || c->buffered + extra <= NBD_CONN_RESERVE)
		return true;
	if (s->buffered + extra > max)
		return false;
	return s->buffered + extra <= max / 2 || c->buffered + extra <= max / s->nconns;
}

/* May a finished request's buffer stay cached on @c? */
static bool conn_may_cache(const struct nbd_conn *c)
{
	return c->buffered <= NBD_CONN_RESERVE || c->srv->buffered <= c->srv->opts.max_buffered / 2;
}

/* Free cached buffers of every connection beyond its reserve. */
static void server_trim_caches(struct vs_nbd_server *s)
{
	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		for (struct nbd_req *r = c->free_reqs; r && c->buffered > NBD_CONN_RESERVE;
		     r = r->next_free) {
			if (r->cap) {
				free(r->buf);
				r->buf = NULL;
				conn_account(c, -(int64_t)r->cap);
				r->cap = 0;
			}
		}
	}
}

/* The watchdog: shut down the sockets of connections past their deadline. */
static void server_watchdog(void *opaque)
{
	struct vs_nbd_server *s = opaque;
	uint64_t tick = 1000000000ull;

	/* A quarter of the shortest limit, between 100 ms and 1 s. */
	if (s->handshake_ns && s->handshake_ns / 4 < tick)
		tick = s->handshake_ns / 4;
	if (s->request_ns && s->request_ns / 4 < tick)
		tick = s->request_ns / 4;
	if (tick < 100000000ull)
		tick = 100000000ull;
	while (!s->shutting_down && s->nconns) {
		uint64_t now;

		vs_co_sleep_ns(tick);
		if (s->shutting_down)
			break;
		now = now_ns();
		for (struct nbd_conn *c = s->conns; c; c = c->next) {
			if (!c->deadline || now < c->deadline)
				continue;
			c->deadline = 0;
			c->dead = true;
			if (c->in_handshake)
				s->stats.handshake_timeouts++;
			else
				s->stats.request_timeouts++;
			/* The reader's recv returns at once; so does a blocked send. */
			shutdown(c->fd, SHUT_RDWR);
		}
	}
	s->watchdog = NULL;
	vs_co_queue_wake_all(&s->idle_wait);
}

/* ---- connection I/O: plain or through TLS ---- */

#define NBD_RBUF_SIZE (64u << 10)

/* Some bytes from the socket (or TLS), at most @len: > 0, 0 at EOF, or -errno. */
static ssize_t conn_recv_some(struct nbd_conn *c, void *buf, size_t len)
{
	ssize_t n;

	if (c->tls)
		n = nbd_tls_recv(c->tls, buf, len);
	else
		n = vs_aio_recv(c->fd, buf, len, 0);
	if (n > 0 && c->refresh_ns)
		c->deadline = now_ns() + c->refresh_ns;
	return n;
}

static int conn_recv_full(struct nbd_conn *c, void *buf, size_t len)
{
	uint8_t *out = buf;

	while (len) {
		ssize_t n;

		if (c->rpos < c->rlen) {
			size_t k = c->rlen - c->rpos < len ? c->rlen - c->rpos : len;

			memcpy(out, c->rbuf + c->rpos, k);
			c->rpos += k;
			out += k;
			len -= k;
			continue;
		}
		if (len >= NBD_RBUF_SIZE || !c->rbuf) {
			/* A big payload goes straight into its buffer. */
			n = conn_recv_some(c, out, len);
			if (n > 0) {
				out += n;
				len -= (size_t)n;
			}
		} else {
			c->rpos = c->rlen = 0;
			n = conn_recv_some(c, c->rbuf, NBD_RBUF_SIZE);
			if (n > 0)
				c->rlen = (size_t)n;
		}
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
	}
	return 0;
}

static int conn_sendv(struct nbd_conn *c, struct iovec *iov, int n)
{
	if (c->tls)
		return nbd_tls_sendv(c->tls, iov, n);
	return vs_aio_sendmsg_full(c->fd, iov, n);
}

static int conn_send_buf(struct nbd_conn *c, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return conn_sendv(c, &iov, 1);
}

/* ---- sending ---- */

static int conn_send(struct nbd_conn *c, struct iovec *iov, int n)
{
	int ret;

	if (c->dead)
		return -EPIPE;
	ret = conn_sendv(c, iov, n);
	if (ret < 0)
		c->dead = true;
	return ret;
}

#define NBD_OUT_MAX_IOV 512

/* The sender: sends the queue in batches until it is empty. */
static void conn_sender(void *opaque)
{
	struct nbd_conn *c = opaque;
	struct iovec iov[NBD_OUT_MAX_IOV];

	vs_co_mutex_lock(&c->send_lock);
	while (c->out_head) {
		struct nbd_out *first = c->out_head, *o = first, *end;
		int n = 0, ret;

		/* Whole replies only, as many as fit. */
		while (o && n + o->niov <= NBD_OUT_MAX_IOV) {
			memcpy(iov + n, o->iov, sizeof(*iov) * (size_t)o->niov);
			n += o->niov;
			o = o->next;
		}
		end = o;
		c->out_head = end;
		if (!end)
			c->out_tail = &c->out_head;
		ret = c->dead ? -EPIPE : conn_sendv(c, iov, n);
		if (ret < 0)
			c->dead = true;
		for (o = first; o != end;) {
			struct nbd_out *next = o->next;

			o->ret = ret;
			o->done = true;
			if (o->co != vs_co_self()) /* not the fallback in conn_reply() */
				vs_co_wake(o->co);
			o = next;
		}
	}
	c->sending = false;
	vs_co_mutex_unlock(&c->send_lock);
}

/*
 * Send one whole reply through the sender and wait until it is on the
 * socket (its buffers may be reused after that). Replies of up to
 * NBD_OUT_MAX_IOV iovecs.
 */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
/* @o lives on this coroutine's stack until the sender has unlinked it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
static int conn_reply(struct nbd_conn *c, struct iovec *iov, int n)
{
	struct nbd_out o = { .iov = iov, .niov = n, .co = vs_co_self() };

	if (c->dead)
		return -EPIPE;
	if (n > NBD_OUT_MAX_IOV)
		return -EINVAL; /* a bug: no reply is built that large */
	if (!c->out_tail)
		c->out_tail = &c->out_head;
	*c->out_tail = &o;
	c->out_tail = &o.next;
	if (!c->sending) {
		c->sending = true;
		if (!vs_co_spawn(c->srv->reactor, conn_sender, c)) {
			/* No coroutine for the sender: send what is queued from here. */
			conn_sender(c);
		}
	}
	while (!o.done)
		vs_co_yield();
	return o.ret;
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif

static int opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
		     uint32_t len)
{
	uint8_t hdr[20];
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };

	vs_put_be64(hdr, NBD_REP_MAGIC);
	vs_put_be32(hdr + 8, opt);
	vs_put_be32(hdr + 12, type);
	vs_put_be32(hdr + 16, len);
	return conn_send(c, iov, len ? 2 : 1);
}

static int opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	return opt_reply(c, opt, type, msg, (uint32_t)n);
}

/* The header of a structured (or extended) reply chunk into @hdr; returns its size. */
static size_t chunk_header(struct nbd_conn *c, uint8_t *hdr, uint16_t flags, uint16_t type,
			   uint64_t cookie, uint64_t offset, uint64_t len)
{
	if (c->extended) {
		vs_put_be32(hdr, NBD_EXTENDED_REPLY_MAGIC);
		vs_put_be16(hdr + 4, flags);
		vs_put_be16(hdr + 6, type);
		vs_put_be64(hdr + 8, cookie);
		vs_put_be64(hdr + 16, offset);
		vs_put_be64(hdr + 24, len);
		return 32;
	}
	vs_put_be32(hdr, NBD_STRUCTURED_REPLY_MAGIC);
	vs_put_be16(hdr + 4, flags);
	vs_put_be16(hdr + 6, type);
	vs_put_be64(hdr + 8, cookie);
	vs_put_be32(hdr + 16, (uint32_t)len);
	return 20;
}

/* A reply without payload: simple, or a structured NONE / ERROR chunk with DONE. */
static int send_status(struct nbd_req *r, int err)
{
	struct nbd_conn *c = r->conn;
	uint32_t wire = vs_nbd_errno_to_wire(err);
	uint8_t hdr[32], body[6];
	struct iovec iov[2];
	int n = 1;

	if (!c->structured) {
		vs_put_be32(hdr, NBD_SIMPLE_REPLY_MAGIC);
		vs_put_be32(hdr + 4, wire);
		vs_put_be64(hdr + 8, r->cookie);
		iov[0] = (struct iovec){ hdr, 16 };
	} else if (!wire) {
		iov[0] = (struct iovec){ hdr, chunk_header(c, hdr, NBD_REPLY_FLAG_DONE,
							   NBD_REPLY_TYPE_NONE, r->cookie,
							   r->offset, 0) };
	} else {
		vs_put_be32(body, wire);
		vs_put_be16(body + 4, 0); /* no message */
		iov[0] = (struct iovec){ hdr, chunk_header(c, hdr, NBD_REPLY_FLAG_DONE,
							   NBD_REPLY_TYPE_ERROR, r->cookie,
							   r->offset, sizeof(body)) };
		iov[1] = (struct iovec){ body, sizeof(body) };
		n = 2;
	}
	return conn_reply(c, iov, n);
}

/* ---- requests ---- */

/* The NBD command flags of @r as export flags. */
static unsigned req_export_flags(const struct nbd_req *r)
{
	unsigned fl = 0;

	if (r->flags & NBD_CMD_FLAG_FUA)
		fl |= VS_EXPORT_FUA;
	if (r->type == NBD_CMD_WRITE_ZEROES && !(r->flags & NBD_CMD_FLAG_NO_HOLE))
		fl |= VS_EXPORT_MAY_UNMAP;
	if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
		fl |= VS_EXPORT_NO_FALLBACK;
	return fl;
}

/* WRITE, WRITE_ZEROES, TRIM and FLUSH: one export request each. */
static int req_export(struct nbd_req *r, enum vs_export_op op)
{
	struct iovec iov = { r->buf, (size_t)r->len };

	return vs_export_request(r->conn->exp->exp, op, r->offset, r->len, &iov, 1,
				 req_export_flags(r));
}

struct extent {
	uint64_t len;
	unsigned status; /* VS_BS_* of the chain */
	unsigned depth;
};

/* Collect up to @max extents of [offset, offset+len) through the backing chain. */
static int collect_extents(struct vs_node *n, uint64_t offset, uint64_t len, struct extent *ext,
			   unsigned max, unsigned *count)
{
	unsigned k = 0;

	while (len && k < max) {
		uint64_t pnum;
		unsigned st, depth;
		int ret =
			vs_node_block_status_above(n, offset, len, &pnum, &st, NULL, NULL, &depth);

		if (ret < 0)
			return ret;
		if (!pnum)
			break;
		ext[k].len = pnum;
		ext[k].status = st;
		ext[k].depth = (st & VS_BS_ALLOCATED) ? depth + 1 : 0;
		k++;
		offset += pnum;
		len -= pnum;
	}
	*count = k;
	return 0;
}

static int req_read_simple(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	uint8_t hdr[16];
	struct iovec iov[2];
	int ret;

	iov[0] = (struct iovec){ r->buf, (size_t)r->len };
	ret = vs_export_request(c->exp->exp, VS_EXPORT_OP_READ, r->offset, r->len, iov, 1, 0);
	if (ret < 0)
		return send_status(r, ret);
	vs_put_be32(hdr, NBD_SIMPLE_REPLY_MAGIC);
	vs_put_be32(hdr + 4, 0);
	vs_put_be64(hdr + 8, r->cookie);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ r->buf, r->len };
	return conn_reply(c, iov, 2);
}

/* Extents of one structured read reply (the rest goes out as data). */
#define NBD_READ_EXTENTS 64

/*
 * The extents of a structured read (holes found by block status unless DF)
 * into @ext, and the data ones read into the request's buffer: everything
 * is read before anything is sent, so a read error needs no partial reply.
 */
static int read_extents(struct nbd_req *r, struct extent *ext, unsigned *pcount)
{
	struct vs_node *n = r->conn->exp->node;
	unsigned count = 0;
	uint64_t pos = 0;
	int ret;

	*pcount = 0;
	if (!r->len)
		return 0;
	/*
	 * Looking for holes costs a block-status query (two lseeks on a raw
	 * file); it only pays off when it can save sending a large range.
	 */
	if (!(r->flags & NBD_CMD_FLAG_DF) && r->len >= NBD_SPARSE_READ_MIN) {
		ret = collect_extents(n, r->offset, r->len, ext, NBD_READ_EXTENTS, &count);
		if (ret < 0)
			return ret;
	}
	if (count == 0 || (r->flags & NBD_CMD_FLAG_DF)) {
		ext[0] = (struct extent){ .len = r->len, .status = VS_BS_DATA };
		count = 1;
	} else {
		uint64_t covered = 0;

		for (unsigned i = 0; i < count; i++)
			covered += ext[i].len;
		if (covered < r->len) /* more extents than we collect: the rest as data */
			ext[count - 1].len += r->len - covered, ext[count - 1].status = VS_BS_DATA;
	}
	for (unsigned i = 0; i < count; i++) {
		if (!(ext[i].status & VS_BS_ZERO)) {
			ret = vs_node_pread(n, r->offset + pos, (uint8_t *)r->buf + pos,
					    (size_t)ext[i].len);
			if (ret < 0)
				return ret;
		}
		pos += ext[i].len;
	}
	*pcount = count;
	return 0;
}

/*
 * Structured read: holes go out as OFFSET_HOLE chunks without reading them,
 * data as OFFSET_DATA. With DF the whole range is one OFFSET_DATA chunk.
 * One export request, run in several node calls.
 */
static int req_read_structured(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct vs_export_span span;
	struct extent ext[NBD_READ_EXTENTS];
	uint8_t hdr[NBD_READ_EXTENTS][32], off[NBD_READ_EXTENTS][12];
	struct iovec iov[NBD_READ_EXTENTS * 3];
	unsigned count = 0;
	uint64_t pos = 0;
	int niov = 0, ret;

	ret = vs_export_begin(c->exp->exp, VS_EXPORT_OP_READ, r->offset, r->len, &span);
	if (ret == 0) {
		ret = read_extents(r, ext, &count);
		vs_export_end(c->exp->exp, &span, ret);
	}
	/* A zero-length read: nothing to read or send but the completion. */
	if (ret < 0 || !r->len)
		return send_status(r, ret);
	/* All chunks as one reply: they go out together, in order. */
	pos = 0;
	for (unsigned i = 0; i < count; i++) {
		uint16_t flags = i + 1 == count ? NBD_REPLY_FLAG_DONE : 0;
		uint64_t o = r->offset + pos;

		vs_put_be64(off[i], o);
		if (ext[i].status & VS_BS_ZERO) {
			vs_put_be32(off[i] + 8, (uint32_t)ext[i].len);
			iov[niov++] =
				(struct iovec){ hdr[i], chunk_header(c, hdr[i], flags,
								     NBD_REPLY_TYPE_OFFSET_HOLE,
								     r->cookie, o, 12) };
			iov[niov++] = (struct iovec){ off[i], 12 };
		} else {
			iov[niov++] = (struct iovec){
				hdr[i], chunk_header(c, hdr[i], flags, NBD_REPLY_TYPE_OFFSET_DATA,
						     r->cookie, o, 8 + ext[i].len)
			};
			iov[niov++] = (struct iovec){ off[i], 8 };
			iov[niov++] = (struct iovec){ (uint8_t *)r->buf + pos, (size_t)ext[i].len };
		}
		pos += ext[i].len;
	}
	return conn_reply(c, iov, niov);
}

/* One BLOCK_STATUS chunk for context @ctx. */
static int send_block_status(struct nbd_req *r, unsigned ctx, const struct extent *ext,
			     unsigned count, bool last)
{
	struct nbd_conn *c = r->conn;
	size_t dsz = c->extended ? 16 : 8;
	size_t bodysz = (c->extended ? 8 : 4) + count * dsz;
	uint8_t hdr[32];
	uint8_t *body = malloc(bodysz);
	uint8_t *p;
	struct iovec iov[2];
	int ret;

	if (!body)
		return -ENOMEM;
	vs_put_be32(body, ctx);
	p = body + 4;
	if (c->extended) {
		vs_put_be32(p, count);
		p += 4;
	}
	for (unsigned i = 0; i < count; i++) {
		uint32_t flags;

		if (ctx == CTX_BASE_ALLOCATION) {
			flags = 0;
			if (ext[i].status & VS_BS_ZERO)
				flags |= NBD_STATE_ZERO;
			if (!(ext[i].status & VS_BS_DATA))
				flags |= NBD_STATE_HOLE;
		} else {
			flags = ext[i].depth;
		}
		if (c->extended) {
			vs_put_be64(p, ext[i].len);
			vs_put_be64(p + 8, flags);
		} else {
			vs_put_be32(p, (uint32_t)ext[i].len);
			vs_put_be32(p + 4, flags);
		}
		p += dsz;
	}
	iov[0] = (struct iovec){ hdr, chunk_header(c, hdr, last ? NBD_REPLY_FLAG_DONE : 0,
						   c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT :
								 NBD_REPLY_TYPE_BLOCK_STATUS,
						   r->cookie, r->offset, bodysz) };
	iov[1] = (struct iovec){ body, bodysz };
	ret = conn_send(c, iov, 2);
	free(body);
	return ret;
}

/*
 * Merge runs that look the same to context @ctx, so a client sees one
 * descriptor per change of its flags. Writes into @out, returns the count.
 */
static unsigned merge_extents(unsigned ctx, const struct extent *in, unsigned n, struct extent *out,
			      bool req_one)
{
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		bool same = false;

		if (k) {
			const struct extent *p = &out[k - 1];

			if (ctx == CTX_BASE_ALLOCATION)
				same = ((p->status ^ in[i].status) & (VS_BS_ZERO | VS_BS_DATA)) ==
				       0;
			else
				same = p->depth == in[i].depth;
		}
		if (same && out[k - 1].len + in[i].len <= UINT32_MAX) {
			out[k - 1].len += in[i].len;
		} else {
			if (req_one && k == 1)
				break;
			out[k++] = in[i];
		}
	}
	return k;
}

static int req_block_status(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct extent *ext, *merged;
	unsigned count, m, sent = 0, nctx = 0;
	uint64_t len = r->len;
	int ret;

	if (!c->contexts)
		return send_status(r, -EINVAL);
	/* Without extended headers a descriptor holds 32 bits. */
	if (!c->extended && len > UINT32_MAX)
		len = UINT32_MAX;
	ext = malloc(sizeof(*ext) * NBD_MAX_EXTENTS * 2);
	if (!ext)
		return send_status(r, -ENOMEM);
	merged = ext + NBD_MAX_EXTENTS;
	ret = collect_extents(c->exp->node, r->offset, len, ext,
			      (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS, &count);
	if (ret < 0 || count == 0) {
		free(ext);
		return send_status(r, ret < 0 ? ret : -EINVAL);
	}
	if (!c->extended) {
		for (unsigned i = 0; i < count; i++)
			if (ext[i].len > UINT32_MAX) /* only after a 64-bit run: clamp */
				ext[i].len = UINT32_MAX & ~(uint64_t)511;
	}
	nctx = !!(c->contexts & CTX_BASE_ALLOCATION) + !!(c->contexts & CTX_ALLOCATION_DEPTH);
	vs_co_mutex_lock(&c->send_lock);
	for (unsigned ctx = CTX_BASE_ALLOCATION; ctx <= CTX_ALLOCATION_DEPTH && ret == 0;
	     ctx <<= 1) {
		if (!(c->contexts & ctx))
			continue;
		m = merge_extents(ctx, ext, count, merged, r->flags & NBD_CMD_FLAG_REQ_ONE);
		ret = send_block_status(r, ctx, merged, m, ++sent == nctx);
	}
	vs_co_mutex_unlock(&c->send_lock);
	free(ext);
	return ret;
}

static void req_done(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;

	c->in_flight--;
	c->bytes_in_flight -= r->accounted;
	r->accounted = 0;
	if (r->charged) {
		conn_account(c, -(int64_t)r->charged);
		r->charged = 0;
	}
	if (r->cap && !conn_may_cache(c)) {
		free(r->buf);
		r->buf = NULL;
		conn_account(c, -(int64_t)r->cap);
		r->cap = 0;
	}
	r->next_free = c->free_reqs;
	c->free_reqs = r;
	vs_co_queue_wake_all(&c->slot_wait);
	if (c->in_flight == 0)
		vs_co_queue_wake_all(&c->drain_wait);
}

static void req_run(void *opaque)
{
	struct nbd_req *r = opaque;
	struct nbd_conn *c = r->conn;

	switch (r->type) {
	case NBD_CMD_READ:
		if (c->structured)
			req_read_structured(r);
		else
			req_read_simple(r);
		break;
	case NBD_CMD_WRITE:
		send_status(r, req_export(r, VS_EXPORT_OP_WRITE));
		break;
	case NBD_CMD_FLUSH:
		send_status(r, req_export(r, VS_EXPORT_OP_FLUSH));
		break;
	case NBD_CMD_TRIM:
		send_status(r, req_export(r, VS_EXPORT_OP_DISCARD));
		break;
	case NBD_CMD_WRITE_ZEROES:
		send_status(r, req_export(r, VS_EXPORT_OP_WRITE_ZEROES));
		break;
	case NBD_CMD_CACHE:
		send_status(r, 0); /* advisory; the range was checked */
		break;
	case NBD_CMD_BLOCK_STATUS:
		req_block_status(r);
		break;
	default:
		send_status(r, -EINVAL);
		break;
	}
	req_done(r);
}

/* New buffer bytes req_get() would take for @buflen: 0 when a cached buffer fits. */
static uint64_t req_buf_need(const struct nbd_conn *c, uint64_t buflen)
{
	if (!buflen)
		return 0;
	for (const struct nbd_req *r = c->free_reqs; r; r = r->next_free)
		if (r->cap >= buflen)
			return 0;
	return buflen;
}

/* A request with a buffer of @buflen bytes or more: a cached one that fits, else a new one. */
static struct nbd_req *req_get(struct nbd_conn *c, uint64_t buflen)
{
	struct nbd_req *r, **pp = &c->free_reqs;

	if (buflen) {
		for (; *pp; pp = &(*pp)->next_free)
			if ((*pp)->cap >= buflen)
				break;
		if (!*pp)
			pp = &c->free_reqs; /* none fits: replace the first one's buffer */
	}
	r = *pp;
	if (r) {
		*pp = r->next_free;
	} else {
		r = calloc(1, sizeof(*r));
		if (!r)
			return NULL;
		r->conn = c;
	}
	if (buflen > r->cap) {
		void *b = NULL;

		if (r->cap) {
			free(r->buf);
			r->buf = NULL;
			conn_account(c, -(int64_t)r->cap);
			r->cap = 0;
		}
		if (posix_memalign(&b, 4096, (size_t)buflen)) {
			r->next_free = c->free_reqs;
			c->free_reqs = r;
			return NULL;
		}
		r->buf = b;
		r->cap = buflen;
		conn_account(c, (int64_t)buflen);
	}
	return r;
}

/* Read and drop @len payload bytes we will not use. */
static int drain_payload(struct nbd_conn *c, uint64_t len)
{
	uint8_t tmp[4096];

	while (len) {
		size_t n = len < sizeof(tmp) ? (size_t)len : sizeof(tmp);
		int ret = conn_recv_full(c, tmp, n);

		if (ret < 0)
			return ret;
		len -= n;
	}
	return 0;
}

/* Reply memory a running request holds outside its buffer (block status). */
#define NBD_BS_CHARGE (NBD_MAX_EXTENTS * (2 * sizeof(struct extent) + 16))

/*
 * Wait until @c may start a request of @type with @buflen buffer bytes:
 * requests and bytes in flight per connection, and the server's memory
 * bound. Returns false when the connection or the server is going away.
 */
static bool conn_wait_admission(struct nbd_conn *c, uint16_t type, uint64_t buflen)
{
	struct vs_nbd_server *s = c->srv;
	uint64_t charge = type == NBD_CMD_BLOCK_STATUS ? NBD_BS_CHARGE : 0;

	for (;;) {
		if (c->dead || s->shutting_down)
			return false;
		if (c->in_flight < s->opts.max_requests &&
		    (!c->in_flight || c->bytes_in_flight + buflen <= NBD_MAX_BYTES_IN_FLIGHT)) {
			if (conn_may_take(c, req_buf_need(c, buflen) + charge))
				return true;
			/* Cached buffers (ours and idle connections') go first. */
			server_trim_caches(s);
			if (conn_may_take(c, req_buf_need(c, buflen) + charge))
				return true;
			c->mem_waiting = true;
			s->mem_waiters++;
			vs_co_queue_wait(&c->slot_wait);
			c->mem_waiting = false;
			s->mem_waiters--;
			continue;
		}
		vs_co_queue_wait(&c->slot_wait);
	}
}

/* A reply for a request we reject before it runs (no coroutine needed). */
static int reject(struct nbd_conn *c, uint64_t cookie, uint64_t offset, int err)
{
	struct nbd_req tmp = { .conn = c, .cookie = cookie, .offset = offset };

	return send_status(&tmp, err);
}

static int validate_request(struct nbd_conn *c, uint16_t type, uint16_t flags, uint64_t offset,
			    uint64_t len)
{
	enum vs_export_op op = VS_EXPORT_OP_READ; /* CACHE and BLOCK_STATUS: the range only */
	uint16_t allowed = NBD_CMD_FLAG_FUA;

	switch (type) {
	case NBD_CMD_READ:
		allowed = NBD_CMD_FLAG_DF;
		if (len > NBD_MAX_PAYLOAD)
			return c->structured ? -EOVERFLOW : -EINVAL;
		break;
	case NBD_CMD_WRITE:
		op = VS_EXPORT_OP_WRITE;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		op = VS_EXPORT_OP_WRITE_ZEROES;
		break;
	case NBD_CMD_TRIM:
		op = VS_EXPORT_OP_DISCARD;
		break;
	case NBD_CMD_FLUSH:
		allowed = 0;
		if (offset || len)
			return -EINVAL;
		return 0;
	case NBD_CMD_CACHE:
		allowed = 0;
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed = NBD_CMD_FLAG_REQ_ONE;
		if (!len)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	if (flags & ~allowed)
		return -EINVAL;
	/* Before the payload is read: -EPERM (read-only) or -EINVAL (range). */
	return vs_export_check(c->exp->exp, op, offset, len);
}

/* The transmission phase. Returns when the client leaves or breaks protocol. */
static void conn_transmission(struct nbd_conn *c)
{
	struct vs_reactor *reactor = c->srv->reactor;

	while (!c->dead && !c->srv->shutting_down) {
		uint8_t h[32];
		size_t hlen = c->extended ? 32 : 28;
		uint16_t flags, type;
		uint64_t cookie, offset, len, buflen;
		struct nbd_req *r;
		int ret, verr;

		/* Between requests a client may idle; once one has begun, it must arrive. */
		ret = conn_recv_full(c, h, 1);
		if (ret < 0)
			break;
		conn_expect_bytes(c, c->srv->request_ns);
		ret = conn_recv_full(c, h + 1, hlen - 1);
		conn_expect_bytes(c, 0);
		if (ret < 0)
			break;
		if (vs_be32(h) != (c->extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC))
			break; /* out of sync: the only safe answer is to hang up */
		flags = vs_be16(h + 4);
		type = vs_be16(h + 6);
		cookie = vs_be64(h + 8);
		offset = vs_be64(h + 16);
		len = c->extended ? vs_be64(h + 24) : vs_be32(h + 24);
		if (type == NBD_CMD_DISC)
			break;
		verr = validate_request(c, type, flags, offset, len);
		if (type == NBD_CMD_WRITE) {
			if (len > NBD_MAX_PAYLOAD)
				break; /* cannot stay in sync without reading it all: hang up */
			if (verr) {
				conn_expect_bytes(c, c->srv->request_ns);
				ret = drain_payload(c, len);
				conn_expect_bytes(c, 0);
				if (ret < 0 || reject(c, cookie, offset, verr) < 0)
					break;
				continue;
			}
		} else if (verr) {
			if (reject(c, cookie, offset, verr) < 0)
				break;
			continue;
		}
		/*
		 * Backpressure: bounded requests and bytes in flight per connection,
		 * and buffers server-wide. A write's payload waits in the socket.
		 */
		buflen = (type == NBD_CMD_READ || type == NBD_CMD_WRITE) ? len : 0;
		if (!conn_wait_admission(c, type, buflen))
			break;
		r = req_get(c, buflen);
		if (!r) {
			if (type == NBD_CMD_WRITE) {
				conn_expect_bytes(c, c->srv->request_ns);
				ret = drain_payload(c, len);
				conn_expect_bytes(c, 0);
				if (ret < 0)
					break;
			}
			if (reject(c, cookie, offset, -ENOMEM) < 0)
				break;
			continue;
		}
		r->flags = flags;
		r->type = type;
		r->cookie = cookie;
		r->offset = offset;
		r->len = len;
		if (type == NBD_CMD_WRITE && len) {
			conn_expect_bytes(c, c->srv->request_ns);
			ret = conn_recv_full(c, r->buf, len);
			conn_expect_bytes(c, 0);
			if (ret < 0) {
				r->next_free = c->free_reqs;
				c->free_reqs = r;
				break;
			}
		}
		c->in_flight++;
		r->accounted = buflen;
		c->bytes_in_flight += r->accounted;
		if (type == NBD_CMD_BLOCK_STATUS) {
			r->charged = NBD_BS_CHARGE;
			conn_account(c, (int64_t)r->charged);
		}
		if (!vs_co_spawn(reactor, req_run, r)) {
			req_done(r);
			if (reject(c, cookie, offset, -ENOMEM) < 0)
				break;
		}
	}
}

/* ---- handshake ---- */

static int send_info_export(struct nbd_conn *c, uint32_t opt, struct nbd_export *e)
{
	uint8_t b[12];

	vs_put_be16(b, NBD_INFO_EXPORT);
	vs_put_be64(b + 2, vs_export_size(e->exp));
	vs_put_be16(b + 10, export_flags(c->srv, e));
	return opt_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
}

static int send_info_string(struct nbd_conn *c, uint32_t opt, uint16_t type, const char *s)
{
	size_t len = strlen(s);
	uint8_t *b = malloc(2 + len);
	int ret;

	if (!b)
		return -ENOMEM;
	vs_put_be16(b, type);
	memcpy(b + 2, s, len);
	ret = opt_reply(c, opt, NBD_REP_INFO, b, (uint32_t)(2 + len));
	free(b);
	return ret;
}

static int send_info_block_size(struct nbd_conn *c, uint32_t opt)
{
	uint8_t b[14];

	vs_put_be16(b, NBD_INFO_BLOCK_SIZE);
	vs_put_be32(b + 2, 1); /* the generic layer bounces anything unaligned */
	vs_put_be32(b + 6, NBD_PREFERRED_BLOCK);
	vs_put_be32(b + 10, NBD_MAX_PAYLOAD);
	return opt_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
}

/* NBD_OPT_INFO / NBD_OPT_GO. Returns 1 when GO succeeded, 0 to continue, <0 to hang up. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	uint32_t namelen;
	uint16_t ninfo;
	struct nbd_export *e;
	bool want_name = false, want_desc = false;
	int ret;

	if (len < 6 || (namelen = vs_be32(d)) > len - 6 ||
	    (ninfo = vs_be16(d + 4 + namelen), len != 6 + namelen + 2u * ninfo))
		return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed %s request",
				 opt == NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO");
	for (unsigned i = 0; i < ninfo; i++) {
		uint16_t t = vs_be16(d + 6 + namelen + 2 * i);

		want_name |= t == NBD_INFO_NAME;
		want_desc |= t == NBD_INFO_DESCRIPTION;
	}
	e = find_export(c->srv, (const char *)d + 4, namelen);
	if (!e)
		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' not present",
				 (int)(namelen > 256 ? 256 : namelen), (const char *)d + 4);
	ret = send_info_export(c, opt, e);
	if (ret == 0 && want_name)
		ret = send_info_string(c, opt, NBD_INFO_NAME, e->name);
	if (ret == 0 && want_desc && e->description)
		ret = send_info_string(c, opt, NBD_INFO_DESCRIPTION, e->description);
	if (ret == 0)
		ret = send_info_block_size(c, opt);
	if (ret == 0)
		ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (ret < 0)
		return ret;
	if (opt != NBD_OPT_GO)
		return 0;
	c->exp = e;
	/* Contexts negotiated for another export do not apply. */
	if (c->ctx_export && strcmp(c->ctx_export, e->name))
		c->contexts = 0;
	return 1;
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
	int ret = 0;

	if (len)
		return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				 "NBD_OPT_LIST takes no data");
	for (struct nbd_export *e = c->srv->exports; e && ret == 0; e = e->next) {
		size_t nl = strlen(e->name), dl = e->description ? strlen(e->description) : 0;
		uint8_t *b = malloc(4 + nl + dl);

		if (!b)
			return -ENOMEM;
		vs_put_be32(b, (uint32_t)nl);
		memcpy(b + 4, e->name, nl);
		if (dl)
			memcpy(b + 4 + nl, e->description, dl);
		ret = opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, b, (uint32_t)(4 + nl + dl));
		free(b);
	}
	if (ret == 0)
		ret = opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
	return ret;
}

static int send_meta_context(struct nbd_conn *c, uint32_t opt, uint32_t id, const char *name)
{
	size_t nl = strlen(name);
	uint8_t b[64];

	vs_put_be32(b, id);
	memcpy(b + 4, name, nl);
	return opt_reply(c, opt, NBD_REP_META_CONTEXT, b, (uint32_t)(4 + nl));
}

static bool query_is(const uint8_t *q, uint32_t ql, const char *s)
{
	return ql == strlen(s) && !memcmp(q, s, ql);
}

static int opt_meta_context(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	bool set = opt == NBD_OPT_SET_META_CONTEXT;
	uint32_t namelen, nq, pos;
	unsigned found = 0;
	struct nbd_export *e;
	int ret = 0;

	if (set && !c->structured)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "structured replies must be negotiated first");
	if (len < 8 || (namelen = vs_be32(d)) > len - 8)
		return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed meta context request");
	nq = vs_be32(d + 4 + namelen);
	/* Validate the whole query list before acting on it. */
	pos = 8 + namelen;
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql;

		if (len - pos < 4 || (ql = vs_be32(d + pos)) > len - pos - 4)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "malformed meta context query");
		pos += 4 + ql;
	}
	if (pos != len)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "trailing data in meta context request");
	e = find_export(c->srv, (const char *)d + 4, namelen);
	if (!e)
		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' not present",
				 (int)(namelen > 256 ? 256 : namelen), (const char *)d + 4);
	if (nq == 0 && !set) {
		found = CTX_BASE_ALLOCATION | CTX_ALLOCATION_DEPTH;
	} else {
		pos = 8 + namelen;
		for (uint32_t i = 0; i < nq; i++) {
			uint32_t ql = vs_be32(d + pos);
			const uint8_t *q = d + pos + 4;

			if (query_is(q, ql, "base:allocation") ||
			    (!set && query_is(q, ql, "base:")))
				found |= CTX_BASE_ALLOCATION;
			if (query_is(q, ql, "qemu:allocation-depth") ||
			    (!set && query_is(q, ql, "qemu:")))
				found |= CTX_ALLOCATION_DEPTH;
			pos += 4 + ql;
		}
	}
	if (found & CTX_BASE_ALLOCATION)
		ret = send_meta_context(c, opt, CTX_BASE_ALLOCATION, "base:allocation");
	if (ret == 0 && (found & CTX_ALLOCATION_DEPTH))
		ret = send_meta_context(c, opt, CTX_ALLOCATION_DEPTH, "qemu:allocation-depth");
	if (ret == 0)
		ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (ret == 0 && set) {
		char *name = strdup(e->name);

		if (!name)
			return -ENOMEM;
		free(c->ctx_export);
		c->ctx_export = name;
		c->contexts = found;
	}
	return ret;
}

/* Returns 1 when an export was selected, 0 when the client ended politely, <0 on error. */
static int conn_handshake(struct nbd_conn *c)
{
	uint8_t b[18];
	uint32_t cflags;
	int ret;

	vs_put_be64(b, NBD_MAGIC);
	vs_put_be64(b + 8, NBD_IHAVEOPT);
	vs_put_be16(b + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	ret = vs_aio_send_full(c->fd, b, sizeof(b));
	if (ret < 0)
		return ret;
	ret = vs_aio_recv_full(c->fd, b, 4);
	if (ret < 0)
		return ret;
	cflags = vs_be32(b);
	if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EPROTO;
	c->fixed = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
	c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

	for (unsigned n = 0; n < NBD_MAX_OPTIONS; n++) {
		uint8_t h[16];
		uint8_t *data = NULL;
		uint32_t opt, len;

		ret = conn_recv_full(c, h, sizeof(h));
		if (ret < 0)
			return ret;
		if (vs_be64(h) != NBD_IHAVEOPT)
			return -EPROTO;
		opt = vs_be32(h + 8);
		len = vs_be32(h + 12);
		if (len > NBD_MAX_OPTION_LEN) {
			/* Too big to read: drop it, and hang up if it is huge. */
			if (len > 16 * NBD_MAX_OPTION_LEN || !c->fixed)
				return -EPROTO;
			ret = drain_payload(c, len);
			if (ret == 0)
				ret = opt_error(c, opt, NBD_REP_ERR_TOO_BIG,
						"option data too long");
			if (ret < 0)
				return ret;
			continue;
		}
		if (len) {
			data = malloc(len);
			if (!data)
				return -ENOMEM;
			ret = conn_recv_full(c, data, len);
			if (ret < 0) {
				free(data);
				return ret;
			}
		}
		if (c->srv->opts.tls_mode == VS_NBD_TLS_REQUIRE && !c->tls &&
		    opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
			free(data);
			if (opt == NBD_OPT_EXPORT_NAME)
				return -EACCES; /* no error reply exists for it */
			ret = opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
					"TLS is required: use NBD_OPT_STARTTLS first");
			if (ret < 0)
				return ret;
			continue;
		}
		switch (opt) {
		case NBD_OPT_EXPORT_NAME: {
			struct nbd_export *e = find_export(c->srv, (const char *)data, len);
			uint8_t r[10 + 124];
			size_t rl = c->no_zeroes ? 10 : sizeof(r);

			free(data);
			if (!e)
				return -ENOENT; /* this option has no error reply: hang up */
			memset(r, 0, sizeof(r));
			vs_put_be64(r, vs_export_size(e->exp));
			vs_put_be16(r + 8, export_flags(c->srv, e));
			ret = conn_send_buf(c, r, rl);
			if (ret < 0)
				return ret;
			c->exp = e;
			if (c->ctx_export && strcmp(c->ctx_export, e->name))
				c->contexts = 0;
			return 1;
		}
		case NBD_OPT_ABORT:
			free(data);
			(void)opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
			return 0;
		case NBD_OPT_LIST:
			ret = opt_list(c, len);
			break;
		case NBD_OPT_INFO:
		case NBD_OPT_GO:
			ret = opt_info_go(c, opt, data, len);
			if (ret == 1) {
				free(data);
				return 1;
			}
			break;
		case NBD_OPT_STRUCTURED_REPLY:
			if (len)
				ret = opt_error(c, opt, NBD_REP_ERR_INVALID,
						"option takes no data");
			else if (c->extended)
				ret = opt_error(c, opt, NBD_REP_ERR_EXT_HEADER_REQD,
						"extended headers already negotiated");
			else {
				ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
				c->structured = true;
			}
			break;
		case NBD_OPT_EXTENDED_HEADERS:
			if (len) {
				ret = opt_error(c, opt, NBD_REP_ERR_INVALID,
						"option takes no data");
			} else {
				ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
				c->extended = true;
				c->structured = true;
			}
			break;
		case NBD_OPT_LIST_META_CONTEXT:
		case NBD_OPT_SET_META_CONTEXT:
			ret = opt_meta_context(c, opt, data, len);
			break;
		case NBD_OPT_STARTTLS:
			if (len) {
				ret = opt_error(c, opt, NBD_REP_ERR_INVALID,
						"option takes no data");
			} else if (c->tls) {
				ret = opt_error(c, opt, NBD_REP_ERR_INVALID,
						"TLS is already active");
			} else if (c->srv->opts.tls_mode == VS_NBD_TLS_OFF || !c->srv->opts.tls) {
				ret = opt_error(c, opt, NBD_REP_ERR_POLICY,
						"TLS is not enabled on this server");
			} else if (c->rpos < c->rlen) {
				/*
				 * Bytes sent after STARTTLS but before the handshake would
				 * be taken as if they came through TLS: an injection. Hang up.
				 */
				free(data);
				return -EPROTO;
			} else {
				ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
				if (ret == 0)
					ret = nbd_tls_session_start(c->srv->opts.tls, c->fd,
								    &c->tls);
				/* What was negotiated in the clear does not carry over. */
				c->structured = false;
				c->extended = false;
				c->contexts = 0;
			}
			break;
		default:
			if (!c->fixed) {
				free(data);
				return -EPROTO;
			}
			ret = opt_error(c, opt, NBD_REP_ERR_UNSUP, "option %u not supported", opt);
			break;
		}
		free(data);
		if (ret < 0)
			return ret;
	}
	return -EPROTO; /* too many options: a client that never decides */
}

/* ---- connections ---- */

static void conn_free(struct nbd_conn *c)
{
	struct nbd_req *r;

	while ((r = c->free_reqs)) {
		c->free_reqs = r->next_free;
		free(r->buf);
		if (r->cap)
			conn_account(c, -(int64_t)r->cap);
		free(r);
	}
	free(c->ctx_export);
	free(c->rbuf);
	free(c);
}

static void conn_main(void *opaque)
{
	struct nbd_conn *c = opaque;
	struct vs_nbd_server *s = c->srv;
	struct nbd_conn **pp;

	c->reader = vs_co_self();
	if (conn_handshake(c) == 1) {
		c->in_handshake = false;
		conn_expect_bytes(c, 0);
		conn_transmission(c);
	}
	/* Let requests in flight finish and reply before the socket goes away. */
	while (c->in_flight)
		vs_co_queue_wait(&c->drain_wait);
	c->reader = NULL;
	nbd_tls_session_free(c->tls);
	c->tls = NULL;
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
	for (pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	conn_free(c);
	s->nconns--;
	vs_co_queue_wake_one(&s->accept_wait);
	if (s->nconns == 0) {
		vs_co_queue_wake_all(&s->idle_wait);
		if (!s->opts.persistent && s->served > 0) {
			s->finished = true;
			vs_co_queue_wake_all(&s->finish_wait);
		}
	}
}

int vs_nbd_server_serve_fd(struct vs_nbd_server *s, int fd)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->srv = s;
	c->fd = fd;
	c->in_handshake = true;
	if (s->handshake_ns)
		c->deadline = now_ns() + s->handshake_ns;
	c->rbuf = malloc(NBD_RBUF_SIZE);
	if (!c->rbuf) {
		close(fd);
		free(c);
		return -ENOMEM;
	}
	c->next = s->conns;
	s->conns = c;
	s->nconns++;
	s->served++;
	if (!vs_co_spawn(s->reactor, conn_main, c)) {
		s->conns = c->next;
		s->nconns--;
		close(fd);
		free(c->rbuf);
		free(c);
		return -ENOMEM;
	}
	s->stats.accepted++;
	if (!s->watchdog && (s->handshake_ns || s->request_ns))
		s->watchdog = vs_co_spawn(s->reactor, server_watchdog, s);
	return 0;
}

static void listener_main(void *opaque)
{
	struct nbd_listener *l = opaque;
	struct vs_nbd_server *s = l->srv;

	l->co = vs_co_self();
	while (!s->shutting_down && !l->closed) {
		int fd;

		while (s->opts.max_connections && s->nconns >= s->opts.max_connections &&
		       !s->shutting_down)
			vs_co_queue_wait(&s->accept_wait);
		if (s->shutting_down)
			break;
		fd = vs_aio_accept(l->fd);
		if (fd < 0) {
			if (fd == -ECANCELED || s->shutting_down)
				break;
			if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM)
				vs_co_sleep_ns(100000000); /* let descriptors free up */
			continue;
		}
		if (s->shutting_down) {
			close(fd);
			break;
		}
		if (s->opts.connection_limit != VS_NBD_UNLIMITED &&
		    s->nconns >= s->opts.connection_limit) {
			/* Closed at once: the backlog does not fill with clients waiting in vain. */
			close(fd);
			s->stats.refused++;
			continue;
		}
		vs_nbd_server_serve_fd(s, fd);
	}
	l->co = NULL;
	s->listeners_alive--;
	vs_co_queue_wake_all(&s->idle_wait);
}

int vs_nbd_server_add_listener(struct vs_nbd_server *s, int fd)
{
	struct nbd_listener *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->fd = fd;
	l->next = s->listeners;
	s->listeners = l;
	l->srv = s;
	s->listeners_alive++;
	if (!vs_co_spawn(s->reactor, listener_main, l)) {
		s->listeners = l->next;
		s->listeners_alive--;
		free(l);
		return -ENOMEM;
	}
	return 0;
}

int vs_nbd_server_shutdown(struct vs_nbd_server *s)
{
	int ret = 0;

	s->shutting_down = true;
	vs_co_queue_wake_all(&s->accept_wait);
	for (struct nbd_listener *l = s->listeners; l; l = l->next) {
		l->closed = true;
		if (l->co && l->co != vs_co_self())
			vs_aio_cancel(l->co);
	}
	if (s->watchdog && s->watchdog != vs_co_self())
		vs_aio_cancel(s->watchdog);
	/* Readers parked in recv stop; their requests in flight still complete. */
	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		if (c->reader)
			vs_aio_cancel(c->reader);
		vs_co_queue_wake_all(&c->slot_wait); /* a reader waiting for memory */
	}
	while (s->nconns || s->listeners_alive || s->watchdog)
		vs_co_queue_wait(&s->idle_wait);
	for (struct nbd_export *e = s->exports; e; e = e->next) {
		if (!e->read_only) {
			int r = vs_node_flush(e->node);

			if (r < 0 && ret == 0)
				ret = r;
		}
	}
	s->finished = true;
	vs_co_queue_wake_all(&s->finish_wait);
	return ret;
}

void vs_nbd_server_wait(struct vs_nbd_server *s)
{
	while (!s->finished)
		vs_co_queue_wait(&s->finish_wait);
}

void vs_nbd_server_get_stats(const struct vs_nbd_server *s, struct vs_nbd_server_stats *st)
{
	*st = s->stats;
	st->buffered = s->buffered;
}

bool vs_nbd_server_is_shutting_down(const struct vs_nbd_server *s)
{
	return s->shutting_down;
}

bool vs_nbd_server_finished(const struct vs_nbd_server *s)
{
	return s->finished;
}

void vs_nbd_server_free(struct vs_nbd_server *s)
{
	struct nbd_export *e;
	struct nbd_listener *l;

	if (!s)
		return;
	while ((e = s->exports)) {
		s->exports = e->next;
		vs_export_free(e->exp);
		free(e->description);
		free(e);
	}
	while ((l = s->listeners)) {
		s->listeners = l->next;
		close(l->fd);
		free(l);
	}
	free(s);
}
