/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server: the transmission phase. The reader takes request headers
 * and write payloads under the per-connection and server-wide bounds and
 * spawns a coroutine per request, which runs it on the export layer and
 * replies (see nbd-server.c).
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

/* An export request of @r, run where the export's node lives (nbd_on_home). */
struct home_request {
	struct nbd_req *r;
	enum vs_export_op op;
	struct iovec iov;
	unsigned flags;
	int ret;
};

static void home_request_run(void *opaque)
{
	struct home_request *h = opaque;

	h->ret = vs_export_request(h->r->conn->exp->exp, h->op, h->r->offset, h->r->len, &h->iov, 1,
				   h->flags);
}

/*
 * A request on the export: through the connection's port away from home
 * (reads and writes of mapped bytes go straight to the file), else at home.
 */
static int export_request(struct nbd_req *r, enum vs_export_op op, unsigned flags)
{
	struct home_request h = { r, op, { r->buf, (size_t)r->len }, flags, 0 };
	int ret;

	if (r->conn->port)
		return vs_export_port_request(r->conn->port, op, r->offset, r->len, &h.iov, 1,
					      flags);
	ret = nbd_on_home(r->conn, home_request_run, &h);
	return ret < 0 ? ret : h.ret;
}

/* WRITE, WRITE_ZEROES, TRIM and FLUSH: one export request each. */
static int req_export(struct nbd_req *r, enum vs_export_op op)
{
	return export_request(r, op, req_export_flags(r));
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

	ret = export_request(r, VS_EXPORT_OP_READ, 0);
	if (ret < 0)
		return nbd_send_status(r, ret);
	vs_put_be32(hdr, NBD_SIMPLE_REPLY_MAGIC);
	vs_put_be32(hdr + 4, 0);
	vs_put_be64(hdr + 8, r->cookie);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ r->buf, r->len };
	return nbd_conn_reply(c, iov, 2);
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
	struct vs_node *n = vs_export_node(r->conn->exp->exp);
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
struct home_read {
	struct nbd_req *r;
	struct extent *ext;
	unsigned count;
	int ret;
};

/* The node side of a structured read, where the node lives (nbd_on_home). */
static void home_read_run(void *opaque)
{
	struct home_read *h = opaque;
	struct vs_export *e = h->r->conn->exp->exp;
	struct vs_export_span span;

	h->ret = vs_export_begin(e, VS_EXPORT_OP_READ, h->r->offset, h->r->len, &span);
	if (h->ret == 0) {
		do /* an error policy may hold a failed read and retry it */
			h->ret = read_extents(h->r, h->ext, &h->count);
		while (h->ret < 0 && vs_export_retry(e, &span, h->ret));
		vs_export_end(e, &span, h->ret);
	}
}

static int req_read_structured(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct extent ext[NBD_READ_EXTENTS];
	uint8_t hdr[NBD_READ_EXTENTS][32], off[NBD_READ_EXTENTS][12];
	struct iovec iov[NBD_READ_EXTENTS * 3];
	struct home_read h = { r, ext, 0, 0 };
	unsigned count;
	uint64_t pos = 0;
	int niov = 0, ret;

	if (c->port && ((r->flags & NBD_CMD_FLAG_DF) || r->len < NBD_SPARSE_READ_MIN)) {
		/* No hole to look for: one data chunk, read through the port. */
		ret = export_request(r, VS_EXPORT_OP_READ, 0);
		ext[0] = (struct extent){ .len = r->len, .status = VS_BS_DATA };
		h.count = 1;
	} else if (c->port &&
		   vs_export_port_read_direct(c->port, r->offset, r->len,
					      &(struct iovec){ r->buf, (size_t)r->len }, 1)) {
		/* Every byte was mapped, so there is no hole either: one data chunk. */
		ret = 0;
		ext[0] = (struct extent){ .len = r->len, .status = VS_BS_DATA };
		h.count = 1;
	} else {
		ret = nbd_on_home(c, home_read_run, &h);
		if (ret == 0)
			ret = h.ret;
	}
	count = h.count;
	/* A zero-length read: nothing to read or send but the completion. */
	if (ret < 0 || !r->len)
		return nbd_send_status(r, ret);
	/* All chunks as one reply: they go out together, in order. */
	pos = 0;
	for (unsigned i = 0; i < count; i++) {
		uint16_t flags = i + 1 == count ? NBD_REPLY_FLAG_DONE : 0;
		uint64_t o = r->offset + pos;

		vs_put_be64(off[i], o);
		if (ext[i].status & VS_BS_ZERO) {
			vs_put_be32(off[i] + 8, (uint32_t)ext[i].len);
			iov[niov++] =
				(struct iovec){ hdr[i], nbd_chunk_header(c, hdr[i], flags,
									 NBD_REPLY_TYPE_OFFSET_HOLE,
									 r->cookie, o, 12) };
			iov[niov++] = (struct iovec){ off[i], 12 };
		} else {
			iov[niov++] =
				(struct iovec){ hdr[i],
						nbd_chunk_header(c, hdr[i], flags,
								 NBD_REPLY_TYPE_OFFSET_DATA,
								 r->cookie, o, 8 + ext[i].len) };
			iov[niov++] = (struct iovec){ off[i], 8 };
			iov[niov++] = (struct iovec){ (uint8_t *)r->buf + pos, (size_t)ext[i].len };
		}
		pos += ext[i].len;
	}
	return nbd_conn_reply(c, iov, niov);
}

/*
 * One BLOCK_STATUS chunk for context @ctx (its wire id): base:allocation's
 * flags come from the status, any other context's are the depth field
 * (allocation depth, or 1 for a dirty run of a bitmap).
 */
static int send_block_status(struct nbd_req *r, uint32_t ctx, const struct extent *ext,
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
	iov[0] = (struct iovec){ hdr,
				 nbd_chunk_header(c, hdr, last ? NBD_REPLY_FLAG_DONE : 0,
						  c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT :
								NBD_REPLY_TYPE_BLOCK_STATUS,
						  r->cookie, r->offset, bodysz) };
	iov[1] = (struct iovec){ body, bodysz };
	ret = nbd_conn_send(c, iov, 2);
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

/*
 * The runs of export bitmap @i over [offset, offset+len), at most @max
 * (descriptors with depth 1 for dirty, 0 for clean), into a malloc'd *@out.
 */
static int collect_bitmap_extents(const struct nbd_export *e, unsigned i, uint64_t offset,
				  uint64_t len, unsigned max, struct extent **out, unsigned *count)
{
	struct extent *ext = NULL;
	unsigned n = 0, cap = 0;

	while (len && n < max) {
		bool dirty;
		uint64_t run;
		int ret = nbd_export_bitmap_status(e, i, offset, len, &dirty, &run);

		if (ret == 0 && (run == 0 || run > len))
			ret = -EIO;
		if (ret < 0) {
			free(ext);
			return ret;
		}
		if (n && (ext[n - 1].depth != 0) == dirty) {
			ext[n - 1].len +=
				run; /* within the request, so at most 32 bits if need be */
		} else {
			if (n == cap) {
				unsigned nc = cap ? cap * 2 : 16;
				struct extent *x = realloc(ext, sizeof(*ext) * nc);

				if (!x) {
					free(ext);
					return -ENOMEM;
				}
				ext = x;
				cap = nc;
			}
			ext[n++] = (struct extent){ .len = run, .depth = dirty ? 1 : 0 };
		}
		offset += run;
		len -= run;
	}
	*out = ext;
	*count = n;
	return 0;
}

struct home_status {
	struct nbd_req *r;
	uint64_t contexts;
	uint64_t len;
	struct extent *ext; /* for base:allocation and qemu:allocation-depth, or NULL */
	unsigned *count;
	struct extent **bext;
	unsigned *bcount;
	int ret;
};

/*
 * The node side of BLOCK_STATUS, where the node lives (nbd_on_home): every
 * context's runs before the first chunk goes out, so an error is one reply.
 */
static void home_status_run(void *opaque)
{
	struct home_status *h = opaque;
	struct nbd_req *r = h->r;
	struct nbd_conn *c = r->conn;
	const struct nbd_export *e = c->exp;
	bool req_one = r->flags & NBD_CMD_FLAG_REQ_ONE;
	int ret = 0;

	if (h->ext) {
		ret = collect_extents(vs_export_node(e->exp), r->offset, h->len, h->ext,
				      req_one ? 1 : NBD_MAX_EXTENTS, h->count);
		if (ret == 0 && *h->count == 0)
			ret = -EINVAL;
		if (ret == 0 && !c->extended) {
			for (unsigned i = 0; i < *h->count; i++)
				if (h->ext[i].len > UINT32_MAX) /* only after a 64-bit run: clamp */
					h->ext[i].len = UINT32_MAX & ~(uint64_t)511;
		}
	}
	for (unsigned i = 0; i < e->nb_bitmaps && ret == 0; i++) {
		if (!(h->contexts & CTX_BITMAP(i)))
			continue;
		ret = collect_bitmap_extents(e, i, r->offset, h->len, req_one ? 1 : NBD_MAX_EXTENTS,
					     &h->bext[i], &h->bcount[i]);
		if (ret == 0 && h->bcount[i] == 0)
			ret = -EINVAL;
	}
	h->ret = ret;
}

static int req_block_status(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	const struct nbd_export *e = c->exp;
	bool req_one = r->flags & NBD_CMD_FLAG_REQ_ONE;
	struct extent *ext = NULL, *merged = NULL;
	struct extent *bext[VS_NBD_MAX_BITMAPS] = { 0 };
	unsigned bcount[VS_NBD_MAX_BITMAPS] = { 0 };
	unsigned count = 0, m, sent = 0, nctx = 0;
	uint64_t contexts = c->contexts;
	uint64_t len = r->len;
	int ret = 0;

	/* Bitmaps the export no longer has (removed and added again) are gone. */
	contexts &= CTX_BASE_ALLOCATION | CTX_ALLOCATION_DEPTH |
		    ((CTX_BITMAP(e->nb_bitmaps) - 1) & ~(CTX_BITMAP(0) - 1));
	if (!contexts)
		return nbd_send_status(r, -EINVAL);
	/* Without extended headers a descriptor holds 32 bits. */
	if (!c->extended && len > UINT32_MAX)
		len = UINT32_MAX;
	if (contexts & (CTX_BASE_ALLOCATION | CTX_ALLOCATION_DEPTH)) {
		ext = malloc(sizeof(*ext) * NBD_MAX_EXTENTS * 2);
		if (!ext)
			return nbd_send_status(r, -ENOMEM);
		merged = ext + NBD_MAX_EXTENTS;
		nctx += !!(contexts & CTX_BASE_ALLOCATION) + !!(contexts & CTX_ALLOCATION_DEPTH);
	}
	for (unsigned i = 0; i < e->nb_bitmaps; i++)
		nctx += !!(contexts & CTX_BITMAP(i));
	{
		struct home_status h = { r, contexts, len, ext, &count, bext, bcount, 0 };

		ret = nbd_on_home(c, home_status_run, &h);
		if (ret == 0)
			ret = h.ret;
	}
	if (ret < 0)
		goto out;
	vs_co_mutex_lock(&c->send_lock);
	for (unsigned ctx = CTX_BASE_ALLOCATION; ctx <= CTX_ALLOCATION_DEPTH && ret == 0;
	     ctx <<= 1) {
		if (!(contexts & ctx))
			continue;
		m = merge_extents(ctx, ext, count, merged, req_one);
		ret = send_block_status(r, ctx, merged, m, ++sent == nctx);
	}
	for (unsigned i = 0; i < e->nb_bitmaps && ret == 0; i++)
		if (contexts & CTX_BITMAP(i))
			ret = send_block_status(r, CTX_BITMAP_SHIFT + 1 + i, bext[i], bcount[i],
						++sent == nctx);
	vs_co_mutex_unlock(&c->send_lock);
out:
	free(ext);
	for (unsigned i = 0; i < e->nb_bitmaps; i++)
		free(bext[i]);
	if (ret < 0 && sent == 0)
		return nbd_send_status(r, ret);
	return ret;
}

static void req_done(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;

	c->in_flight--;
	c->bytes_in_flight -= r->accounted;
	r->accounted = 0;
	if (r->charged) {
		nbd_conn_account(c, -(int64_t)r->charged);
		r->charged = 0;
	}
	if (r->cap && !nbd_conn_may_cache(c)) {
		free(r->buf);
		r->buf = NULL;
		nbd_conn_account(c, -(int64_t)r->cap);
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
		nbd_send_status(r, req_export(r, VS_EXPORT_OP_WRITE));
		break;
	case NBD_CMD_FLUSH:
		nbd_send_status(r, req_export(r, VS_EXPORT_OP_FLUSH));
		break;
	case NBD_CMD_TRIM:
		nbd_send_status(r, req_export(r, VS_EXPORT_OP_DISCARD));
		break;
	case NBD_CMD_WRITE_ZEROES:
		nbd_send_status(r, req_export(r, VS_EXPORT_OP_WRITE_ZEROES));
		break;
	case NBD_CMD_CACHE:
		nbd_send_status(r, 0); /* advisory; the range was checked */
		break;
	case NBD_CMD_BLOCK_STATUS:
		req_block_status(r);
		break;
	default:
		nbd_send_status(r, -EINVAL);
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
			nbd_conn_account(c, -(int64_t)r->cap);
			r->cap = 0;
		}
		if (posix_memalign(&b, 4096, (size_t)buflen)) {
			r->next_free = c->free_reqs;
			c->free_reqs = r;
			return NULL;
		}
		r->buf = b;
		r->cap = buflen;
		nbd_conn_account(c, (int64_t)buflen);
	}
	return r;
}

/* Read and drop @len payload bytes we will not use. */
int nbd_drain_payload(struct nbd_conn *c, uint64_t len)
{
	uint8_t tmp[4096];

	while (len) {
		size_t n = len < sizeof(tmp) ? (size_t)len : sizeof(tmp);
		int ret = nbd_conn_recv_full(c, tmp, n);

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
		if (c->dead || c->evicted || s->shutting_down)
			return false;
		if (c->in_flight < s->opts.max_requests &&
		    (!c->in_flight || c->bytes_in_flight + buflen <= NBD_MAX_BYTES_IN_FLIGHT)) {
			if (nbd_conn_may_take(c, req_buf_need(c, buflen) + charge))
				return true;
			/* Cached buffers (ours and idle connections') go first. */
			nbd_server_trim_caches(s);
			if (nbd_conn_may_take(c, req_buf_need(c, buflen) + charge))
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

	return nbd_send_status(&tmp, err);
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
void nbd_conn_transmission(struct nbd_conn *c)
{
	struct vs_reactor *reactor = c->srv->reactor;

	while (!c->dead && !c->evicted && !c->srv->shutting_down) {
		uint8_t h[32];
		size_t hlen = c->extended ? 32 : 28;
		uint16_t flags, type;
		uint64_t cookie, offset, len, buflen;
		struct nbd_req *r;
		int ret, verr;

		/* Between requests a client may idle; once one has begun, it must arrive. */
		ret = nbd_conn_recv_full(c, h, 1);
		if (ret < 0)
			break;
		nbd_conn_expect_bytes(c, c->srv->request_ns);
		ret = nbd_conn_recv_full(c, h + 1, hlen - 1);
		nbd_conn_expect_bytes(c, 0);
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
				nbd_conn_expect_bytes(c, c->srv->request_ns);
				ret = nbd_drain_payload(c, len);
				nbd_conn_expect_bytes(c, 0);
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
				nbd_conn_expect_bytes(c, c->srv->request_ns);
				ret = nbd_drain_payload(c, len);
				nbd_conn_expect_bytes(c, 0);
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
			nbd_conn_expect_bytes(c, c->srv->request_ns);
			ret = nbd_conn_recv_full(c, r->buf, len);
			nbd_conn_expect_bytes(c, 0);
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
			nbd_conn_account(c, (int64_t)r->charged);
		}
		if (!vs_co_spawn(reactor, req_run, r)) {
			req_done(r);
			if (reject(c, cookie, offset, -ENOMEM) < 0)
				break;
		}
	}
}
