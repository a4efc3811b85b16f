/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Export ports: an export served on another reactor than its node's home
 * (see vstor/export.h). Each port keeps windows of where the top node's
 * bytes lie (direct.h), made by the home when a request had to go there,
 * and serves what they map itself.
 *
 * Threads: the port's windows, its in-flight count and its waiters are its
 * reactor's; the export's list of ports and the domain are the home's. The
 * home revokes by moving the domain's generation and then waiting, on each
 * port's reactor, until no direct request is in flight there: a request
 * checks the generation and counts itself in one stretch without yielding,
 * so once that wait ends none runs on a window of an older generation.
 */
#include "direct.h"
#include "export-int.h"
#include "iov.h"

#include <errno.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* Windows a port keeps (by index modulo), and extents one direct request may have. */
#define PORT_WINDOWS 64
#define PORT_MAX_EXTENTS 8
/* log2 of the granules in a window. */
#define ENTRIES_BITS ((unsigned)__builtin_ctz(VS_DIRECT_WIN_ENTRIES))

struct vs_export_port {
	struct vs_export *e;
	struct vs_reactor *reactor, *home;
	struct vs_export_port *next; /* the export's list (home) */
	/* The port's reactor only: */
	unsigned inflight; /* direct requests */
	struct vs_co_queue idle;
	unsigned wbits; /* log2 of a window's span, of the last window installed */
	struct vs_direct_win *win[PORT_WINDOWS];
	/* Written on the port's reactor, read anywhere (relaxed): */
	struct vs_export_stats stats;
	struct vs_export_port_stats pstats;
};

static inline void counter_add(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline uint64_t counter_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* ---- the home side ---- */

/* On a port's reactor: until its direct requests are over. */
static void port_quiesce(void *opaque)
{
	struct vs_export_port *p = opaque;

	while (p->inflight)
		vs_co_queue_wait(&p->idle);
}

static void export_revoke_ports(void *opaque)
{
	struct vs_export *e = opaque;

	for (struct vs_export_port *p = e->ports; p; p = p->next)
		if (vs_reactor_call(p->reactor, port_quiesce, p) < 0)
			port_quiesce(
				p); /* cannot happen from home: calls only fail off-coroutine */
}

void vs_export_direct_revoke(struct vs_export *e)
{
	if (e->direct) {
		vs_direct_change_begin(e->direct);
		vs_direct_change_end(e->direct);
	}
}

int vs_export_port_new(struct vs_export *e, struct vs_reactor *r, struct vs_export_port **out)
{
	struct vs_export_port *p;

	if (!r || !vs_reactor_current())
		return -EINVAL;
	if (!e->direct) {
		e->direct = vs_direct_new(e->node, export_revoke_ports, e);
		if (!e->direct)
			return -ENOMEM;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->e = e;
	p->reactor = r;
	p->home = vs_reactor_current();
	p->next = e->ports;
	e->ports = p;
	*out = p;
	return 0;
}

void vs_export_port_free(struct vs_export_port *p)
{
	struct vs_export_port **pp;

	if (!p)
		return;
	for (pp = &p->e->ports; *pp && *pp != p; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = p->next;
	for (unsigned i = 0; i < PORT_WINDOWS; i++)
		free(p->win[i]);
	free(p);
}

void vs_export_port_get_stats(const struct vs_export_port *p, struct vs_export_port_stats *st)
{
	st->direct = counter_get(&p->pstats.direct);
	st->home = counter_get(&p->pstats.home);
	st->windows = counter_get(&p->pstats.windows);
}

bool vs_export_get_port_stats(const struct vs_export *e, struct vs_export_port_stats *st)
{
	*st = (struct vs_export_port_stats){ 0 };
	for (const struct vs_export_port *p = e->ports; p; p = p->next) {
		struct vs_export_port_stats one;

		vs_export_port_get_stats(p, &one);
		st->direct += one.direct;
		st->home += one.home;
		st->windows += one.windows;
	}
	return e->ports != NULL;
}

void vs_export_ports_add_stats(const struct vs_export *e, struct vs_export_stats *st)
{
	for (const struct vs_export_port *p = e->ports; p; p = p->next) {
		for (unsigned op = 0; op < VS_EXPORT_OP_COUNT; op++) {
			const struct vs_export_op_stats *a = &p->stats.op[op];
			struct vs_export_op_stats *b = &st->op[op];

			b->ops += counter_get(&a->ops);
			b->bytes += counter_get(&a->bytes);
			b->errors += counter_get(&a->errors);
			for (unsigned i = 0; i < VS_EXPORT_LATENCY_BUCKETS; i++)
				b->latency_us[i] += counter_get(&a->latency_us[i]);
		}
	}
}

/* Whether the home may map windows for the export's ports now. */
static bool export_direct_ok(const struct vs_export *e)
{
	return !e->quiesced && !e->stopped && !e->throttle && !e->hooks.before_request &&
	       !e->hooks.after_write;
}

/* ---- the port side ---- */

/* What a request that goes home brings back for the port's windows. */
enum port_want {
	WANT_NOTHING,
	WANT_WINDOW, /* there was none (or an old one) for its offset */
	WANT_PATCH,  /* its window had unmapped granules (an allocating write, likely) */
};

struct port_call {
	struct vs_export_port *p;
	enum vs_export_op op;
	uint64_t offset, len;
	struct iovec *iov;
	int niov;
	unsigned flags;
	enum port_want want;
	int ret;
	struct vs_direct_win *win;
	bool patched;
	struct vs_direct_patch patch;
};

/* At home: the request (unless @op is VS_EXPORT_OP_COUNT), then what the port asked for. */
static void port_call_run(void *opaque)
{
	struct port_call *c = opaque;
	struct vs_export *e = c->p->e;

	if (c->op != VS_EXPORT_OP_COUNT)
		c->ret = vs_export_request(e, c->op, c->offset, c->len, c->iov, c->niov, c->flags);
	if (c->ret < 0 || !e->direct || !export_direct_ok(e))
		return;
	if (c->want == WANT_WINDOW)
		c->win = vs_direct_fill(e->direct, c->offset, !e->read_only);
	else if (c->want == WANT_PATCH)
		c->patched =
			vs_direct_patch(e->direct, c->offset, c->len, !e->read_only, &c->patch);
}

/* The port's window of this generation for @offset, or NULL. */
static struct vs_direct_win *port_window(struct vs_export_port *p, uint64_t offset, unsigned gen)
{
	struct vs_direct_win *w;

	w = p->win[p->wbits ? (unsigned)((offset >> p->wbits) % PORT_WINDOWS) : 0];
	if (!w || !p->wbits || w->index != offset >> p->wbits || w->gen != gen)
		return NULL;
	return w;
}

static int port_home(struct vs_export_port *p, enum vs_export_op op, uint64_t offset, uint64_t len,
		     struct iovec *iov, int niov, unsigned flags, enum port_want want)
{
	struct port_call c = { .p = p,
			       .op = op,
			       .offset = offset,
			       .len = len,
			       .iov = iov,
			       .niov = niov,
			       .flags = flags,
			       .want = want };
	int ret = vs_reactor_call(p->home, port_call_run, &c);

	if (op != VS_EXPORT_OP_COUNT)
		counter_add(&p->pstats.home, 1);
	if (ret < 0)
		return ret;
	if (c.win) {
		struct vs_direct_win *w = c.win;
		unsigned bits = w->granule_bits + ENTRIES_BITS;
		unsigned slot = (unsigned)(w->index % PORT_WINDOWS);

		/* A pivot may change the granule: the old windows are stale anyway. */
		p->wbits = bits;
		free(p->win[slot]);
		p->win[slot] = w;
		counter_add(&p->pstats.windows, 1);
	} else if (c.patched && p->wbits == c.patch.granule_bits + ENTRIES_BITS) {
		struct vs_direct_win *w = p->win[(c.patch.first >> ENTRIES_BITS) % PORT_WINDOWS];

		if (w)
			vs_direct_win_patch(w, &c.patch); /* it checks the window and generation */
	}
	return c.ret;
}

struct extent {
	uint64_t host, len;
	unsigned path;
	int fd, rw_flags; /* from the path: the window may be replaced while the I/O runs */
};

/*
 * The extents [offset, offset+len) maps to in @w, or 0 when a granule of it
 * is not mapped (or there are too many).
 */
static unsigned port_extents(const struct vs_direct_win *w, uint64_t offset, uint64_t len,
			     struct extent *x)
{
	unsigned gbits = w->granule_bits, nx = 0;
	uint64_t pos = offset, end = offset + len;

	while (pos < end) {
		const struct vs_direct_entry *en =
			&w->e[(pos >> gbits) & (VS_DIRECT_WIN_ENTRIES - 1)];
		uint64_t in = pos - (pos >> gbits << gbits);
		uint64_t n, host;

		if (in >= en->len)
			return 0;
		n = en->len - in < end - pos ? en->len - in : end - pos;
		host = en->host + in;
		if (nx && x[nx - 1].path == en->path && x[nx - 1].host + x[nx - 1].len == host) {
			x[nx - 1].len += n;
		} else {
			if (nx == PORT_MAX_EXTENTS)
				return 0;
			x[nx++] = (struct extent){ host, n, en->path, -1, 0 };
		}
		pos += n;
	}
	return nx;
}

static void port_account(struct vs_export_port *p, enum vs_export_op op, uint64_t len,
			 uint64_t start_ns)
{
	struct vs_export_op_stats *s = &p->stats.op[op];

	counter_add(&s->ops, 1);
	counter_add(&s->bytes, len);
	counter_add(&s->latency_us[vs_export_latency_bucket(vs_export_clock_ns() - start_ns)], 1);
	counter_add(&p->pstats.direct, 1);
}

/*
 * Serve a read or write straight from the file if @p's windows map it:
 * 1 (with *@ret), or 0 to run it at home (*@want: ask for its window).
 */
static int port_direct(struct vs_export_port *p, enum vs_export_op op, uint64_t offset,
		       uint64_t len, struct iovec *iov, int niov, unsigned flags, int *ret,
		       enum port_want *want)
{
	struct vs_export *e = p->e;
	bool write = op == VS_EXPORT_OP_WRITE;
	uint64_t start_ns = vs_export_clock_ns();
	struct extent x[PORT_MAX_EXTENTS];
	const struct vs_direct_win *w;
	unsigned nx, gen;
	uint32_t malign = 1;
	bool fua = false;
	uint64_t ioff = 0;
	int r = 0;

	*want = WANT_NOTHING;
	if (!len || vs_export_check(e, op, offset, len) < 0 || !e->direct)
		return 0;
	gen = vs_direct_gen(e->direct);
	w = port_window(p, offset, gen);
	if (!w) {
		*want = WANT_WINDOW;
		return 0;
	}
	if (((offset + len - 1) >> p->wbits) != w->index)
		return 0; /* across windows: rare enough to go home */
	nx = port_extents(w, offset, len, x);
	if (!nx) {
		/* Home may map it after the request (a write there likely allocates). */
		*want = WANT_PATCH;
		return 0;
	}
	if (write) {
		if (!w->writable)
			return 0;
		if (e->detect_zeroes != VS_EXPORT_DETECT_ZEROES_OFF && vs_iov_is_zero(iov, niov))
			return 0;
		fua = (flags & VS_EXPORT_FUA) || vs_export_writethrough(e);
	}
	for (unsigned i = 0; i < nx; i++) {
		const struct vs_direct_path *pa = &w->path[x[i].path];

		if ((x[i].host | x[i].len) & (pa->request_align - 1))
			return 0;
		if (pa->mem_align > malign)
			malign = pa->mem_align;
		x[i].fd = pa->fd;
		if (write) {
			if ((fua || pa->writethrough) && !pa->fua)
				return 0; /* FUA needs a flush there: home does it */
			x[i].rw_flags = (fua || pa->writethrough) ? RWF_DSYNC : 0;
			for (unsigned k = 0; k < VS_DIRECT_MAX_DEPTH; k++)
				if (pa->fence[k] &&
				    atomic_load_explicit(pa->fence[k], memory_order_relaxed))
					return 0; /* home fails it with EIO */
		}
	}
	if (!vs_iov_aligned(iov, niov, malign))
		return 0;
	/* From here until the I/O is over, a revoke waits for this request. */
	p->inflight++;
	for (unsigned i = 0; i < nx && r == 0; i++) {
		struct iovec stack[16];
		int slmax, n;
		struct iovec *sl = vs_iov_room(stack, 16, niov, &slmax);

		if (!sl) {
			r = -ENOMEM;
			break;
		}
		n = vs_iov_slice(sl, slmax, iov, niov, ioff, x[i].len);
		if (n < 0)
			r = n;
		else if (write)
			r = vs_aio_pwritev_full(x[i].fd, sl, n, x[i].host, (size_t)x[i].len,
						x[i].rw_flags);
		else
			r = vs_aio_preadv_full(x[i].fd, sl, n, x[i].host, (size_t)x[i].len);
		vs_iov_room_free(sl, stack);
		ioff += x[i].len;
	}
	if (--p->inflight == 0)
		vs_co_queue_wake_all(&p->idle);
	if (r < 0)
		return 0; /* home runs it again, under the export's error policy */
	port_account(p, op, len, start_ns);
	*ret = 0;
	return 1;
}

bool vs_export_port_read_direct(struct vs_export_port *p, uint64_t offset, uint64_t len,
				struct iovec *iov, int niov)
{
	enum port_want want;
	int ret;

	if (port_direct(p, VS_EXPORT_OP_READ, offset, len, iov, niov, 0, &ret, &want) == 1)
		return true;
	/* The caller reads at home: bring the window along (only a map, no request). */
	if (want == WANT_WINDOW)
		(void)port_home(p, VS_EXPORT_OP_COUNT, offset, len, NULL, 0, 0, want);
	return false;
}

int vs_export_port_request(struct vs_export_port *p, enum vs_export_op op, uint64_t offset,
			   uint64_t len, struct iovec *iov, int niov, unsigned flags)
{
	enum port_want want = WANT_NOTHING;
	int ret;

	if ((op == VS_EXPORT_OP_READ || op == VS_EXPORT_OP_WRITE) &&
	    port_direct(p, op, offset, len, iov, niov, flags, &ret, &want))
		return ret;
	return port_home(p, op, offset, len, iov, niov, flags, want);
}
