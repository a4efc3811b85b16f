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
#include "nbd-server-int.h"

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

struct nbd_export *nbd_find_export(struct vs_nbd_server *s, const char *name, size_t len)
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

static void export_free(struct nbd_export *e);

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
	if (opts->nb_bitmaps > VS_NBD_MAX_BITMAPS)
		return vs_error_set(err, -EINVAL, "Too many bitmaps (max %d)", VS_NBD_MAX_BITMAPS);
	for (unsigned i = 0; i < opts->nb_bitmaps; i++) {
		if (strlen(opts->bitmaps[i]) > NBD_MAX_STRING - strlen(CTX_BITMAP_PREFIX))
			return vs_error_set(err, -EINVAL, "Bitmap name '%s' too long",
					    opts->bitmaps[i]);
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(opts->bitmaps[i], opts->bitmaps[j]))
				return vs_error_set(err, -EINVAL, "Bitmap '%s' is given twice",
						    opts->bitmaps[i]);
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	if (opts->nb_bitmaps) {
		e->bitmaps = calloc(opts->nb_bitmaps, sizeof(*e->bitmaps));
		for (unsigned i = 0; e->bitmaps && i < opts->nb_bitmaps; i++, e->nb_bitmaps++)
			if (!(e->bitmaps[i] = strdup(opts->bitmaps[i])))
				break;
		if (e->nb_bitmaps != opts->nb_bitmaps) {
			for (unsigned i = 0; i < e->nb_bitmaps; i++)
				free(e->bitmaps[i]);
			free(e->bitmaps);
			free(e);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
	}
	e->bitmap_status = opts->bitmap_status;
	e->bitmap_opaque = opts->bitmap_opaque;
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
		if (ret < 0)
			e->exp = NULL;
		export_free(e);
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

int nbd_export_bitmap_status(const struct nbd_export *e, unsigned i, uint64_t offset, uint64_t len,
			     bool *dirty, uint64_t *run)
{
	if (e->bitmap_status)
		return e->bitmap_status(e->bitmap_opaque, e->bitmaps[i], offset, len, dirty, run);
	return vs_node_bitmap_status(e->node, e->bitmaps[i], offset, len, dirty, run);
}

struct vs_export *vs_nbd_server_get_export(struct vs_nbd_server *s, const char *name)
{
	const char *n = name ? name : "";

	for (struct nbd_export *e = s->exports; e; e = e->next)
		if (!strcmp(e->name, n))
			return e->exp;
	return NULL;
}

unsigned vs_nbd_server_export_clients(const struct vs_nbd_server *s, const char *name)
{
	const char *n = name ? name : "";
	unsigned count = 0;

	for (const struct nbd_conn *c = s->conns; c; c = c->next)
		if (c->exp && !strcmp(c->exp->name, n))
			count++;
	return count;
}

static void export_free(struct nbd_export *e)
{
	vs_export_free(e->exp);
	free(e->description);
	for (unsigned i = 0; i < e->nb_bitmaps; i++)
		free(e->bitmaps[i]);
	free(e->bitmaps);
	free(e);
}

/* Free the removed exports once no connection is in its handshake. */
static void free_removed(struct vs_nbd_server *s)
{
	struct nbd_export *e;

	if (s->forwarded)
		return; /* a connection on a shard may still point to one */
	for (const struct nbd_conn *c = s->conns; c; c = c->next)
		if (c->in_handshake)
			return;
	while ((e = s->removed)) {
		s->removed = e->next;
		export_free(e);
	}
}

/*
 * @e's clients on @s read no more requests: the reader's recv is cancelled
 * (or sees the end of the stream), requests in flight finish and reply,
 * then the connection closes. Returns once none is left.
 */
static void evict_clients(struct vs_nbd_server *s, struct nbd_export *e)
{
	bool busy;

	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		if (c->exp != e)
			continue;
		c->evicted = true;
		shutdown(c->fd, SHUT_RD);
		if (c->reader && c->reader != vs_co_self())
			vs_aio_cancel(c->reader);
		vs_co_queue_wake_all(&c->slot_wait);
	}
	do {
		busy = false;
		for (struct nbd_conn *c = s->conns; c && !busy; c = c->next)
			busy = c->exp == e;
		if (busy)
			vs_co_queue_wait(&s->idle_wait);
	} while (busy);
}

struct shard_evict {
	struct vs_nbd_server *shard;
	struct nbd_export *e;
};

/* On a shard's reactor: evict the removed export's clients there. */
static void shard_evict(void *opaque)
{
	struct shard_evict *ev = opaque;

	evict_clients(ev->shard, ev->e);
}

/* On the export's home reactor: flush its node. */
static void export_flush_there(void *opaque)
{
	struct nbd_export *e = opaque;

	vs_node_flush(vs_export_node(e->exp));
}

static struct nbd_export *export_named(struct vs_nbd_server *s, const char *name)
{
	const char *n = name ? name : "";

	for (struct nbd_export *e = s->exports; e; e = e->next)
		if (!strcmp(e->name, n))
			return e;
	return NULL;
}

int vs_nbd_server_set_export_shard(struct vs_nbd_server *s, const char *name,
				   struct vs_nbd_server *shard)
{
	struct nbd_export *e = export_named(s, name);

	if (!e)
		return -ENOENT;
	e->shards[0] = shard;
	e->nshards = 1;
	return 0;
}

int vs_nbd_server_add_export_shard(struct vs_nbd_server *s, const char *name,
				   struct vs_nbd_server *shard)
{
	struct nbd_export *e = export_named(s, name);

	if (!e)
		return -ENOENT;
	if (!e->nshards)
		return -EINVAL; /* the home comes first */
	for (unsigned i = 0; i < e->nshards; i++)
		if (e->shards[i] == shard)
			return -EEXIST;
	if (e->nshards == NBD_MAX_SHARDS)
		return -ENOSPC;
	e->shards[e->nshards++] = shard;
	return 0;
}

int nbd_on_home(struct nbd_conn *c, vs_co_fn *fn, void *arg)
{
	if (!c->home) {
		fn(arg);
		return 0;
	}
	return vs_reactor_call(c->home, fn, arg);
}

int vs_nbd_server_remove_export(struct vs_nbd_server *s, const char *name, struct vs_error *err)
{
	const char *n = name ? name : "";
	struct nbd_export *e, **pp;

	for (pp = &s->exports; *pp && strcmp((*pp)->name, n); pp = &(*pp)->next)
		;
	e = *pp;
	if (!e)
		return vs_error_set(err, -ENOENT, "Export '%s' is not found", n);
	/* New clients no longer find it; a handshake that already did hangs up. */
	*pp = e->next;
	__atomic_store_n(&e->removed, true, __ATOMIC_RELEASE);
	e->next = s->removed;
	s->removed = e;
	evict_clients(s, e);
	/* Its clients on the shards; then the node is flushed where it lives. */
	for (unsigned i = 0; i < e->nshards; i++) {
		struct shard_evict ev = { e->shards[i], e };

		if (e->shards[i] != s)
			vs_reactor_call(e->shards[i]->reactor, shard_evict, &ev);
	}
	if (!e->read_only) {
		if (!e->nshards || e->shards[0] == s ||
		    vs_reactor_call(e->shards[0]->reactor, export_flush_there, e) < 0)
			export_flush_there(e);
	}
	/* The node may go away now: nothing reaches it through this export. */
	e->node = NULL;
	free_removed(s);
	return 0;
}

uint16_t nbd_export_flags(struct vs_nbd_server *s, const struct nbd_export *e)
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

uint64_t nbd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * From now on the client must send a byte every @ns (0: no deadline), as
 * long as a request is on its way in.
 */
void nbd_conn_expect_bytes(struct nbd_conn *c, uint64_t ns)
{
	c->refresh_ns = ns;
	c->deadline = ns ? nbd_now_ns() + ns : 0;
}

/* Add @delta bytes to what @c and the server hold; wake memory waiters on a release. */
void nbd_conn_account(struct nbd_conn *c, int64_t delta)
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
bool nbd_conn_may_take(struct nbd_conn *c, uint64_t extra)
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
bool nbd_conn_may_cache(const struct nbd_conn *c)
{
	return c->buffered <= NBD_CONN_RESERVE || c->srv->buffered <= c->srv->opts.max_buffered / 2;
}

/* Free cached buffers of every connection beyond its reserve. */
void nbd_server_trim_caches(struct vs_nbd_server *s)
{
	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		for (struct nbd_req *r = c->free_reqs; r && c->buffered > NBD_CONN_RESERVE;
		     r = r->next_free) {
			if (r->cap) {
				free(r->buf);
				r->buf = NULL;
				nbd_conn_account(c, -(int64_t)r->cap);
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
		now = nbd_now_ns();
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

/* ---- connections ---- */

/* Free @c's cached requests, their buffers counted off its bound. */
static void conn_free_reqs(struct nbd_conn *c)
{
	struct nbd_req *r;

	while ((r = c->free_reqs)) {
		c->free_reqs = r->next_free;
		free(r->buf);
		if (r->cap)
			nbd_conn_account(c, -(int64_t)r->cap);
		free(r);
	}
}

static void conn_free(struct nbd_conn *c)
{
	conn_free_reqs(c);
	free(c->ctx_export);
	free(c->rbuf);
	free(c);
}

static void conn_unlink(struct vs_nbd_server *s, struct nbd_conn *c)
{
	for (struct nbd_conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
}

/*
 * On the shard's reactor: serve @c's requests there until it ends, then
 * give it back (its request cache freed, counted off the shard).
 */
struct conn_adoption {
	struct nbd_conn *c;
	struct vs_nbd_server *shard;
};

/* At home: the export's port on shard @k (made once). */
struct port_make {
	struct nbd_export *e;
	unsigned k;
};

static void port_make_there(void *opaque)
{
	struct port_make *m = opaque;
	struct vs_export_port *p;

	if (__atomic_load_n(&m->e->ports[m->k], __ATOMIC_ACQUIRE) ||
	    __atomic_load_n(&m->e->removed, __ATOMIC_ACQUIRE))
		return;
	if (vs_export_port_new(m->e->exp, m->e->shards[m->k]->reactor, &p) == 0)
		__atomic_store_n(&m->e->ports[m->k], p, __ATOMIC_RELEASE);
}

/* On shard @sh: the export's port there, or NULL (requests then run at home whole). */
static struct vs_export_port *conn_port(struct nbd_export *e, struct vs_nbd_server *sh,
					struct vs_reactor *node_home)
{
	struct port_make m = { e, 0 };

	while (m.k < e->nshards && e->shards[m.k] != sh)
		m.k++;
	if (m.k == 0 || m.k == e->nshards)
		return NULL;
	if (!__atomic_load_n(&e->ports[m.k], __ATOMIC_ACQUIRE))
		(void)vs_reactor_call(node_home, port_make_there, &m);
	return __atomic_load_n(&e->ports[m.k], __ATOMIC_ACQUIRE);
}

static void conn_adopt(void *opaque)
{
	struct conn_adoption *a = opaque;
	struct nbd_conn *c = a->c;
	struct vs_nbd_server *home = c->srv, *sh = a->shard;
	struct vs_reactor *node_home = c->exp->shards[0]->reactor;

	if (sh->shutting_down || __atomic_load_n(&c->exp->removed, __ATOMIC_ACQUIRE))
		return; /* hung up at home */
	c->home = node_home != sh->reactor ? node_home : NULL;
	c->port = c->home ? conn_port(c->exp, sh, node_home) : NULL;
	if (sh->shutting_down || __atomic_load_n(&c->exp->removed, __ATOMIC_ACQUIRE)) {
		c->home = NULL;
		c->port = NULL;
		return; /* went while the port was made */
	}
	c->srv = sh;
	sh->buffered += c->buffered;
	c->next = sh->conns;
	sh->conns = c;
	sh->nconns++;
	sh->served++;
	sh->stats.accepted++;
	if (!sh->watchdog && sh->request_ns)
		sh->watchdog = vs_co_spawn(sh->reactor, server_watchdog, sh);
	c->reader = vs_co_self();
	nbd_conn_transmission(c);
	while (c->in_flight)
		vs_co_queue_wait(&c->drain_wait);
	c->reader = NULL;
	conn_free_reqs(c);
	sh->buffered -= c->buffered;
	conn_unlink(sh, c);
	sh->nconns--;
	vs_co_queue_wake_all(&sh->idle_wait);
	c->srv = home;
	c->home = NULL;
	c->port = NULL;
}

/*
 * Hand @c over to the export's shard with the fewest of its connections
 * (the home first: a lone client, or one that probed first and left, runs
 * where the node is) and wait until its requests are over there.
 */
static void conn_forward(struct nbd_conn *c)
{
	struct vs_nbd_server *s = c->srv;
	struct nbd_export *e = c->exp;
	unsigned k = 0;
	struct conn_adoption a;

	for (unsigned i = 1; i < e->nshards; i++)
		if (e->shard_conns[i] < e->shard_conns[k])
			k = i;
	a = (struct conn_adoption){ c, e->shards[k] };
	conn_unlink(s, c);
	s->forwarded++;
	s->buffered -= c->buffered;
	c->reader = NULL;
	e->shard_conns[k]++;
	(void)vs_reactor_call(a.shard->reactor, conn_adopt, &a);
	e->shard_conns[k]--;
	s->buffered += c->buffered;
	/* Back on the list for conn_main's end. */
	c->next = s->conns;
	s->conns = c;
	s->forwarded--;
}

static void conn_main(void *opaque)
{
	struct nbd_conn *c = opaque;
	struct vs_nbd_server *s = c->srv;
	struct nbd_conn **pp;

	c->reader = vs_co_self();
	if (nbd_conn_handshake(c) == 1) {
		c->in_handshake = false;
		nbd_conn_expect_bytes(c, 0);
		if (c->exp->nshards && c->exp->shards[0] != s)
			conn_forward(c);
		else
			nbd_conn_transmission(c);
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
	/* vs_nbd_server_remove_export() waits for its clients to go. */
	vs_co_queue_wake_all(&s->idle_wait);
	if (s->nconns == 0) {
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
		c->deadline = nbd_now_ns() + s->handshake_ns;
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

struct shard_flush {
	struct vs_node *node;
	int ret;
};

static void flush_there(void *opaque)
{
	struct shard_flush *f = opaque;

	f->ret = vs_node_flush(f->node);
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
			struct shard_flush f = { vs_export_node(e->exp), 0 };
			int r;

			/* Where the node lives. */
			if (!e->nshards || e->shards[0] == s ||
			    vs_reactor_call(e->shards[0]->reactor, flush_there, &f) < 0)
				flush_there(&f);
			r = f.ret;
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
		export_free(e);
	}
	while ((e = s->removed)) {
		s->removed = e->next;
		export_free(e);
	}
	while ((l = s->listeners)) {
		s->listeners = l->next;
		close(l->fd);
		free(l);
	}
	free(s);
}
