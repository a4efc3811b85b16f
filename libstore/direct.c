/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The direct data path: windows of mapped bytes for other reactors, and the
 * changes that revoke them (see direct.h for the protocol).
 */
#include "direct.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Granule of nodes without clusters (raw): a window then spans 4 GiB. */
#define RAW_GRANULE_BITS 20

struct vs_direct {
	unsigned gen; /* atomic: read anywhere, moved at home */
	struct vs_node *top;
	vs_direct_revoke_fn *revoke;
	void *opaque;
	/* Home only: */
	unsigned refcnt;   /* the owner's, and a revoke's while it runs */
	unsigned changing; /* domain-wide changes running: no window is made meanwhile */
	struct vs_node *nodes[VS_DIRECT_MAX_NODES]; /* where it is registered */
	unsigned nnodes;
};

/* A domain registered on a node. */
struct vs_direct_link {
	struct vs_direct *d;
	struct vs_direct_link *next;
};

static void direct_ref(struct vs_direct *d)
{
	d->refcnt++;
}

static void direct_unref(struct vs_direct *d)
{
	if (--d->refcnt == 0)
		free(d);
}

struct vs_direct *vs_direct_new(struct vs_node *top, vs_direct_revoke_fn *revoke, void *opaque)
{
	struct vs_direct *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->refcnt = 1;
	d->top = top;
	d->revoke = revoke;
	d->opaque = opaque;
	return d;
}

unsigned vs_direct_gen(const struct vs_direct *d)
{
	return __atomic_load_n(&d->gen, __ATOMIC_ACQUIRE);
}

static void unlink_node(struct vs_direct *d, struct vs_node *n)
{
	struct vs_direct_link **pp;

	for (pp = &n->direct; *pp; pp = &(*pp)->next) {
		if ((*pp)->d == d) {
			struct vs_direct_link *l = *pp;

			*pp = l->next;
			free(l);
			return;
		}
	}
}

/* Forget every node (their windows die with the generation, moved first). */
static void unregister_all(struct vs_direct *d)
{
	for (unsigned i = 0; i < d->nnodes; i++)
		unlink_node(d, d->nodes[i]);
	d->nnodes = 0;
}

void vs_direct_free(struct vs_direct *d)
{
	if (!d)
		return;
	__atomic_add_fetch(&d->gen, 1, __ATOMIC_RELEASE);
	unregister_all(d);
	d->revoke = NULL;
	direct_unref(d);
}

void vs_direct_set_top(struct vs_direct *d, struct vs_node *top)
{
	__atomic_add_fetch(&d->gen, 1, __ATOMIC_RELEASE);
	unregister_all(d);
	d->top = top;
}

/* Register @d on @n (a node a window maps through); false when it cannot. */
static bool register_node(struct vs_direct *d, struct vs_node *n)
{
	struct vs_direct_link *l;

	for (unsigned i = 0; i < d->nnodes; i++)
		if (d->nodes[i] == n)
			return true;
	if (d->nnodes == VS_DIRECT_MAX_NODES)
		return false;
	l = malloc(sizeof(*l));
	if (!l)
		return false;
	l->d = d;
	l->next = n->direct;
	n->direct = l;
	d->nodes[d->nnodes++] = n;
	return true;
}

unsigned vs_direct_win_bits(const struct vs_direct *d)
{
	uint64_t cs = d->top ? vs_node_cluster_size(d->top) : 0;
	unsigned g = cs ? (unsigned)__builtin_ctzll(cs) : RAW_GRANULE_BITS;

	return g + (unsigned)__builtin_ctz(VS_DIRECT_WIN_ENTRIES);
}

/* ---- changes ---- */

/* Move @d to a new generation and wait until no direct I/O of an older one is left. */
static void revoke(struct vs_direct *d)
{
	__atomic_add_fetch(&d->gen, 1, __ATOMIC_RELEASE);
	if (d->revoke && vs_co_self()) {
		direct_ref(d);
		d->revoke(d->opaque);
		direct_unref(d);
	}
}

void vs_direct_change_begin(struct vs_direct *d)
{
	d->changing++;
	revoke(d);
}

void vs_direct_change_end(struct vs_direct *d)
{
	if (d->changing)
		d->changing--;
}

void vs_node_direct_change_begin(struct vs_node *n)
{
	struct vs_direct *ds[VS_DIRECT_MAX_DOMAINS];
	unsigned nd = 0;

	/* No window maps through @n from now until the end (map_down checks). */
	n->direct_changing++;
	/* Revoking yields and links may go meanwhile: hold the domains first. */
	for (struct vs_direct_link *l = n->direct; l && nd < VS_DIRECT_MAX_DOMAINS; l = l->next) {
		direct_ref(l->d);
		ds[nd++] = l->d;
	}
	for (unsigned i = 0; i < nd; i++) {
		revoke(ds[i]);
		direct_unref(ds[i]);
	}
}

void vs_node_direct_change_end(struct vs_node *n)
{
	if (n->direct_changing)
		n->direct_changing--;
}

void vs_node_direct_forget(struct vs_node *n)
{
	while (n->direct) {
		struct vs_direct *d = n->direct->d;

		/* Every window of the domain may map through @n: they all go. */
		__atomic_add_fetch(&d->gen, 1, __ATOMIC_RELEASE);
		unregister_all(d);
	}
}

/* ---- windows ---- */

/* Whether writes may go straight through @n (no hook or bitmap must see them). */
static bool node_write_ok(const struct vs_node *n)
{
	return !n->read_only && !n->dirty_bitmaps && !n->before_write;
}

/* Index of @p in @paths (added if new), or -1 when there is no room. */
static int path_index(struct vs_direct_path *paths, unsigned *npaths,
		      const struct vs_direct_path *p)
{
	for (unsigned i = 0; i < *npaths; i++)
		if (!memcmp(&paths[i], p, sizeof(*p)))
			return (int)i;
	if (*npaths == VS_DIRECT_MAX_PATHS)
		return -1;
	paths[*npaths] = *p;
	return (int)(*npaths)++;
}

/*
 * Map the bytes from @offset of @d's top down to a file: 1 with *@m (fd,
 * offset, len) and *@p the path, 0 with m->len bytes that cannot be, or
 * -errno. @write: whether every node on the way must take writes too.
 */
static int map_down(struct vs_direct *d, uint64_t offset, uint64_t len, bool *write,
		    struct vs_map *m, struct vs_direct_path *p)
{
	struct vs_node *n = d->top;
	unsigned depth = 0;

	memset(p, 0, sizeof(*p));
	p->fua = true;
	for (;;) {
		int ret;

		if (!n->drv->map || n->quiesced || n->direct_changing ||
		    depth == VS_DIRECT_MAX_DEPTH || !register_node(d, n)) {
			m->len = len;
			return 0;
		}
		if (!node_write_ok(n))
			*write = false;
		p->fence[depth++] = n->write_fence;
		if (!(n->drv->supported_write_flags & VS_REQ_FUA))
			p->fua = false;
		if (n->writethrough)
			p->writethrough = true;
		memset(m, 0, sizeof(*m));
		m->fd = -1;
		ret = n->drv->map(n, offset, len, *write, m);
		if (ret <= 0) {
			if (ret == 0 && (!m->len || m->len > len))
				m->len = len;
			return ret;
		}
		if (!m->len || m->len > len)
			return -EIO; /* a driver bug: never map what was not asked */
		if (!m->child) {
			p->fd = m->fd;
			p->request_align = n->limits.request_align ? n->limits.request_align : 1;
			p->mem_align = n->limits.mem_align ? n->limits.mem_align : 1;
			return 1;
		}
		n = m->child;
		offset = m->offset;
		len = m->len;
	}
}

/* Where map_range() puts what it maps: entry 0 is the granule at its @from. */
struct map_target {
	struct vs_direct_path *paths;
	unsigned *npaths;
	struct vs_direct_entry *e;
	bool writable;
};

/*
 * Map [from, to) of @d's top (granules of 2^@gbits, @from aligned to one)
 * into @t under generation @gen: 0, or -1 when the generation moved or a
 * change began meanwhile (nothing mapped may be used).
 */
static int map_range(struct vs_direct *d, unsigned gen, uint64_t from, uint64_t to, unsigned gbits,
		     struct map_target *t)
{
	uint64_t size = vs_node_size(d->top);

	/* Run by run; a granule counts only when one run covers it from its start. */
	for (uint64_t pos = from; pos < to;) {
		struct vs_map m;
		struct vs_direct_path p;
		bool wr = t->writable;
		int ret = map_down(d, pos, to - pos, &wr, &m, &p);
		int pi;

		if (ret < 0 || vs_direct_gen(d) != gen || d->changing)
			return -1;
		if (ret == 0) {
			pos += m.len;
			continue;
		}
		t->writable = wr;
		pi = path_index(t->paths, t->npaths, &p);
		for (uint64_t g = pos; g < pos + m.len && pi >= 0;) {
			uint64_t gstart = g >> gbits << gbits;
			uint64_t gend = gstart + (UINT64_C(1) << gbits);
			uint64_t stop = pos + m.len < gend ? pos + m.len : gend;

			if (g == gstart && (stop == gend || stop == size)) {
				struct vs_direct_entry *e = &t->e[(g - from) >> gbits];

				e->host = m.offset + (g - pos);
				e->len = (uint32_t)(stop - g);
				e->path = (uint8_t)pi;
			}
			g = stop;
		}
		pos += m.len;
	}
	return vs_direct_gen(d) != gen || d->changing ? -1 : 0;
}

struct vs_direct_win *vs_direct_fill(struct vs_direct *d, uint64_t offset, bool writable)
{
	unsigned gen = vs_direct_gen(d);
	unsigned wbits = vs_direct_win_bits(d);
	unsigned gbits = wbits - (unsigned)__builtin_ctz(VS_DIRECT_WIN_ENTRIES);
	uint64_t start = offset >> wbits << wbits;
	uint64_t size = d->top ? vs_node_size(d->top) : 0;
	uint64_t end = size - start < (UINT64_C(1) << wbits) ? size :
							       start + (UINT64_C(1) << wbits);
	struct vs_direct_win *w;
	struct map_target t;

	if (d->changing || !d->top || offset >= size)
		return NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->index = offset >> wbits;
	w->gen = gen;
	w->granule_bits = gbits;
	t = (struct map_target){ w->path, &w->npaths, w->e, writable };
	if (map_range(d, gen, start, end, gbits, &t) < 0) {
		free(w);
		return NULL;
	}
	w->writable = t.writable;
	return w;
}

bool vs_direct_patch(struct vs_direct *d, uint64_t offset, uint64_t len, bool writable,
		     struct vs_direct_patch *p)
{
	unsigned gen = vs_direct_gen(d);
	unsigned wbits = vs_direct_win_bits(d);
	unsigned gbits = wbits - (unsigned)__builtin_ctz(VS_DIRECT_WIN_ENTRIES);
	uint64_t size = d->top ? vs_node_size(d->top) : 0;
	uint64_t from = offset >> gbits << gbits, to;
	struct map_target t;

	if (d->changing || !d->top || !len || offset >= size || len > size - offset)
		return false;
	to = ((offset + len - 1) >> gbits) + 1;
	if (to - (from >> gbits) > VS_DIRECT_PATCH_ENTRIES ||
	    (from >> wbits) != ((offset + len - 1) >> wbits))
		return false;
	to = to << gbits < size ? to << gbits : size;
	memset(p, 0, sizeof(*p));
	p->gen = gen;
	p->granule_bits = gbits;
	p->first = from >> gbits;
	p->n = (unsigned)(((to - from) + (UINT64_C(1) << gbits) - 1) >> gbits);
	t = (struct map_target){ p->path, &p->npaths, p->e, writable };
	if (map_range(d, gen, from, to, gbits, &t) < 0)
		return false;
	p->writable = t.writable;
	return true;
}

void vs_direct_win_patch(struct vs_direct_win *w, const struct vs_direct_patch *p)
{
	unsigned map[VS_DIRECT_MAX_PATHS];
	unsigned ebits = (unsigned)__builtin_ctz(VS_DIRECT_WIN_ENTRIES);

	if (p->gen != w->gen || p->granule_bits != w->granule_bits || p->first >> ebits != w->index)
		return;
	for (unsigned i = 0; i < p->npaths; i++) {
		int k = path_index(w->path, &w->npaths, &p->path[i]);

		if (k < 0)
			return; /* no room: the window stays as it was */
		map[i] = (unsigned)k;
	}
	if (!p->writable)
		w->writable = false;
	for (unsigned i = 0; i < p->n; i++) {
		struct vs_direct_entry e = p->e[i];

		if (!e.len)
			continue;
		e.path = (uint8_t)map[e.path];
		w->e[(p->first + i) & (VS_DIRECT_WIN_ENTRIES - 1)] = e;
	}
}
