/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 cluster mapping: guest offset -> L1 -> L2 -> host offset, for
 * standard and extended (32 subclusters) L2 entries; the read, write,
 * write-zeroes, discard and block-status paths; preallocation.
 *
 * Allocating writes fill the parts of a new cluster that the request does
 * not cover with the current guest-visible content (backing file, zeroes,
 * old shared or compressed cluster), at subcluster granularity when the
 * image has extended L2 entries and the old cluster had no host storage.
 */
#include "qcow2.h"
#include "iov.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- L2 entries ---- */

static inline uint64_t l2_entry(const struct qcow2_state *s, const void *l2, uint64_t i)
{
	return vs_be64((const uint8_t *)l2 + i * s->l2_entry_size);
}

static inline uint64_t l2_bitmap(const struct qcow2_state *s, const void *l2, uint64_t i)
{
	return s->extl2 ? vs_be64((const uint8_t *)l2 + i * 16 + 8) : 0;
}

static inline void l2_set(const struct qcow2_state *s, void *l2, uint64_t i, uint64_t e,
			  uint64_t bitmap)
{
	vs_put_be64((uint8_t *)l2 + i * s->l2_entry_size, e);
	if (s->extl2)
		vs_put_be64((uint8_t *)l2 + i * 16 + 8, bitmap);
}

enum map_type { MAP_UNALLOC, MAP_ZERO, MAP_NORMAL, MAP_COMPRESSED };

struct map {
	enum map_type type;
	/*
	 * NORMAL, and ZERO or UNALLOC with host storage (a preallocated zero
	 * cluster; a subcluster of an allocated cluster): host offset of the
	 * first byte (0 without storage); COMPRESSED: the L2 entry.
	 */
	uint64_t host;
	uint64_t len; /* bytes from the looked-up offset */
	bool copied;  /* NORMAL: refcount 1, may be written in place */
};

/* Compressed cluster: host offset and byte length of the stored data. */
static void compressed_range(const struct qcow2_state *s, uint64_t e, uint64_t *off, uint64_t *len)
{
	uint64_t d = e & ~(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_COMPRESSED);
	uint64_t sectors = ((d >> s->csize_shift) & s->csize_mask) + 1;

	*off = d & ((1ull << s->csize_shift) - 1);
	*len = sectors * 512 - (*off & 511);
}

/* Type of (sub)cluster @sc of entry (@e, @bm); -EIO for an invalid entry. */
static int entry_type(struct vs_node *node, uint64_t e, uint64_t bm, unsigned sc, enum map_type *t)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t host = e & QCOW2_L2E_OFFSET_MASK;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		*t = MAP_COMPRESSED;
		return 0;
	}
	if (host & (s->cluster_size - 1))
		return qcow2_mark_corrupt(node, "cluster allocation offset unaligned", host);
	if (!s->extl2) {
		if (s->hdr.version >= 3 && (e & QCOW2_OFLAG_ZERO))
			*t = MAP_ZERO;
		else if (host || (s->data_file && (e & QCOW2_OFLAG_COPIED)))
			/* In a data file offset 0 is valid; COPIED tells it from unallocated. */
			*t = MAP_NORMAL;
		else
			*t = MAP_UNALLOC;
		return 0;
	}
	if ((bm & 0xffffffffu) & (bm >> 32))
		return qcow2_mark_corrupt(node, "subcluster both allocated and zero", host);
	if (!host && !(s->data_file && (e & QCOW2_OFLAG_COPIED)) && (bm & 0xffffffffu))
		return qcow2_mark_corrupt(node, "allocated subcluster without host cluster", host);
	if (bm & (1ull << sc))
		*t = MAP_NORMAL;
	else if (bm & (1ull << (32 + sc)))
		*t = MAP_ZERO;
	else
		*t = MAP_UNALLOC;
	return 0;
}

/*
 * Lock held. Map the run that starts at guest @offset (at most @maxlen
 * bytes, never past the end of the L2 table) and shares one type (and, for
 * normal clusters, contiguous host offsets and the COPIED flag).
 */
static int get_map(struct vs_node *node, uint64_t offset, uint64_t maxlen, struct map *m)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l2_span = s->l2_entries << s->cluster_bits;
	uint64_t l1i = offset / l2_span;
	uint64_t in_l2 = l2_span - offset % l2_span;
	uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t pos, first_e, first_host;
	uint64_t l2off;
	void *l2;
	int ret;

	if (maxlen > in_l2)
		maxlen = in_l2;
	memset(m, 0, sizeof(*m));
	if (l1i >= s->l1_size || !(s->l1[l1i] & QCOW2_L1E_OFFSET_MASK)) {
		m->type = MAP_UNALLOC;
		m->len = maxlen;
		return 0;
	}
	l2off = s->l1[l1i] & QCOW2_L1E_OFFSET_MASK;
	if ((l2off & (s->cluster_size - 1)) || l2off + s->cluster_size > vs_node_size(node->file))
		return qcow2_mark_corrupt(node, "L2 table offset invalid", l2off);
	ret = qcow2_cache_get(node, s->l2_cache, l2off, &l2);
	if (ret < 0)
		return ret;

	pos = 0;
	first_e = l2_entry(s, l2, l2i);
	first_host = first_e & QCOW2_L2E_OFFSET_MASK;
	while (pos < maxlen && l2i < s->l2_entries) {
		uint64_t e = l2_entry(s, l2, l2i), bm = l2_bitmap(s, l2, l2i);
		uint64_t coff = (offset + pos) & (s->cluster_size - 1);
		unsigned sc = (unsigned)(coff >> s->subcluster_bits);
		uint64_t step;
		enum map_type t;

		ret = entry_type(node, e, bm, sc, &t);
		if (ret < 0)
			break;
		if (pos == 0) {
			m->type = t;
			if (t == MAP_NORMAL) {
				m->host = first_host + coff;
				m->copied = !!(first_e & QCOW2_OFLAG_COPIED);
			} else if ((t == MAP_ZERO || t == MAP_UNALLOC) && first_host) {
				m->host = first_host + coff;
			} else if (t == MAP_COMPRESSED) {
				m->host = first_e;
			}
		} else {
			if (t != m->type || t == MAP_COMPRESSED)
				break;
			if (t == MAP_NORMAL &&
			    ((e & QCOW2_L2E_OFFSET_MASK) + coff != m->host + pos ||
			     !!(e & QCOW2_OFLAG_COPIED) != m->copied))
				break;
			/* Zero and unallocated runs: all without storage, or contiguous. */
			if ((t == MAP_ZERO || t == MAP_UNALLOC) &&
			    ((e & QCOW2_L2E_OFFSET_MASK) ?
				     (e & QCOW2_L2E_OFFSET_MASK) + coff != m->host + pos :
				     m->host != 0))
				break;
		}
		step = (t == MAP_COMPRESSED || !s->extl2) ?
			       s->cluster_size - coff :
			       s->subcluster_size - (coff & (s->subcluster_size - 1));
		pos += step;
		if (s->extl2 && t != MAP_COMPRESSED) {
			if (((offset + pos) & (s->cluster_size - 1)) == 0)
				l2i++;
		} else {
			l2i++;
		}
	}
	qcow2_cache_put(s->l2_cache, &l2);
	if (ret < 0)
		return ret;
	m->len = pos < maxlen ? pos : maxlen;
	return 0;
}

/*
 * Before L2 entries that point at new storage (clusters just allocated and
 * written) are dirtied: the L2 table may reach the disk only after the new
 * refcounts, and those only after the data; with lazy_refcounts there are
 * no refcounts to wait for, so the data is flushed before the L2 write.
 */
static int l2_after_new_storage(struct vs_node *node)
{
	struct qcow2_state *s = node->opaque;

	if (!s->lazy_refcounts && !s->data_file)
		return qcow2_cache_set_dependency(node, s->l2_cache, s->rb_cache);
	s->l2_cache->flush_first = true;
	return 0;
}

/* ---- reads ---- */

static int read_backing(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
			int niov, uint64_t ioff)
{
	struct iovec stack[16], *sl;
	uint64_t bsize, blen;
	int n, ret = 0;

	if (!node->backing) {
		vs_iov_memset(iov, niov, ioff, 0, len);
		return 0;
	}
	bsize = vs_node_size(node->backing);
	blen = offset >= bsize ? 0 : (bsize - offset < len ? bsize - offset : len);
	if (blen) {
		int slmax;

		sl = vs_iov_room(stack, 16, niov, &slmax);
		if (!sl)
			return -ENOMEM;
		n = vs_iov_slice(sl, slmax, iov, niov, ioff, blen);
		ret = n < 0 ? n : vs_node_preadv(node->backing, offset, blen, sl, n, 0);
		vs_iov_room_free(sl, stack);
	}
	if (blen < len)
		vs_iov_memset(iov, niov, ioff + blen, 0, len - blen);
	return ret;
}

/* A compression or decompression on the worker pool: touches only its buffers. */
struct codec_job {
	bool compress;
	uint8_t type;
	const void *src;
	size_t src_len;
	void *dst;
	size_t dst_len;
	ssize_t ret;
};

static void codec_job_run(void *arg)
{
	struct codec_job *j = arg;

	j->ret = j->compress ? qcow2_compress(j->type, j->src, j->src_len, j->dst, j->dst_len) :
			       qcow2_decompress(j->type, j->src, j->src_len, j->dst, j->dst_len);
}

/*
 * qcow2_compress (@compress) or qcow2_decompress on the worker pool, so
 * that the reactor thread goes on serving I/O meanwhile: what they return,
 * or the worker pool's -errno.
 */
static ssize_t codec_in_worker(bool compress, uint8_t type, const void *src, size_t src_len,
			       void *dst, size_t dst_len)
{
	struct codec_job j = { compress, type, src, src_len, dst, dst_len, 0 };
	int ret = vs_co_run_in_worker(codec_job_run, &j);

	return ret < 0 ? ret : j.ret;
}

static int read_compressed(struct vs_node *node, uint64_t e, uint64_t coff, uint64_t len,
			   struct iovec *iov, int niov, uint64_t ioff)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t off, clen, fsize = vs_node_size(node->file);
	uint8_t *cbuf, *out;
	int ret;

	compressed_range(s, e, &off, &clen);
	/* Checked (and the image marked corrupt) under the lock by the caller. */
	if (off >= fsize || off < s->cluster_size)
		return -EIO;
	if (off + clen > fsize)
		clen = fsize - off; /* the last compressed cluster may end before its last sector */
	cbuf = vs_buf_alloc(clen);
	out = vs_buf_alloc(s->cluster_size);
	if (!cbuf || !out) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vs_node_pread(node->file, off, cbuf, clen);
	if (ret < 0)
		goto out;
	ret = (int)codec_in_worker(false, s->hdr.compression_type, cbuf, clen, out,
				   s->cluster_size);
	if (ret < 0)
		goto out;
	vs_iov_from_buf(iov, niov, ioff, out + coff, len);
out:
	free(cbuf);
	free(out);
	return ret;
}

/*
 * Read [offset, offset+len) into @iov at @ioff. With @locked the caller
 * holds the lock throughout (allocating writes reading their COW data);
 * otherwise the lock is taken for each lookup and released for the I/O.
 */
/*
 * Read @len bytes at host @host of the data node. A data file shorter than
 * the image (qemu-img resize does not grow one that is not raw) reads
 * zeroes past its end.
 */
static int read_data(struct vs_node *node, uint64_t host, uint64_t len, struct iovec *iov, int niov)
{
	struct vs_node *d = qcow2_data_node(node);
	uint64_t dsize, have;

	if (d == node->file)
		return vs_node_preadv(d, host, len, iov, niov, 0);
	dsize = vs_node_size(d);
	have = host >= dsize ? 0 : (dsize - host < len ? dsize - host : len);
	if (have < len)
		vs_iov_memset(iov, niov, have, 0, len - have);
	if (!have)
		return 0;
	if (have < len) {
		struct iovec stack[16];
		int slmax, n, ret;
		struct iovec *sl = vs_iov_room(stack, 16, niov, &slmax);

		if (!sl)
			return -ENOMEM;
		n = vs_iov_slice(sl, slmax, iov, niov, 0, have);
		ret = n < 0 ? n : vs_node_preadv(d, host, have, sl, n, 0);
		vs_iov_room_free(sl, stack);
		return ret;
	}
	return vs_node_preadv(d, host, len, iov, niov, 0);
}

static int read_range(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
		      int niov, uint64_t ioff, bool locked)
{
	struct qcow2_state *s = qcow2_state(node);
	struct iovec stack[16];
	int slmax;
	struct iovec *sl = vs_iov_room(stack, 16, niov, &slmax);
	int ret = 0;

	if (!sl)
		return -ENOMEM;
	while (len) {
		struct map m;

		if (!locked)
			vs_co_mutex_lock(&s->lock);
		ret = get_map(node, offset, len, &m);
		/*
		 * Still under the lock: once counted as unlocked I/O, taking the
		 * lock again would deadlock with a discard that holds it and
		 * waits for that I/O to drain.
		 */
		if (ret == 0 && m.type == MAP_NORMAL && !s->data_file &&
		    m.host + m.len > vs_node_size(node->file))
			ret = qcow2_mark_corrupt(node, "data cluster beyond end of file", m.host);
		if (ret == 0 && m.type == MAP_COMPRESSED) {
			uint64_t coff, clen;

			compressed_range(s, m.host, &coff, &clen);
			if (coff >= vs_node_size(node->file) || coff < s->cluster_size)
				ret = qcow2_mark_corrupt(node, "compressed cluster offset invalid",
							 coff);
		}
		if (ret < 0) {
			if (!locked)
				vs_co_mutex_unlock(&s->lock);
			break;
		}
		if (!locked)
			qcow2_unlocked_io_begin(s);
		if (!locked)
			vs_co_mutex_unlock(&s->lock);

		switch (m.type) {
		case MAP_UNALLOC:
			ret = read_backing(node, offset, m.len, iov, niov, ioff);
			break;
		case MAP_ZERO:
			vs_iov_memset(iov, niov, ioff, 0, m.len);
			break;
		case MAP_NORMAL: {
			int n;

			n = vs_iov_slice(sl, slmax, iov, niov, ioff, m.len);
			ret = n < 0 ? n : read_data(node, m.host, m.len, sl, n);
			if (ret == 0 && s->hdr.crypt_method)
				ret = qcow2_decrypt_iov(s, m.host, offset, sl, n, m.len);
			break;
		}
		case MAP_COMPRESSED:
			ret = read_compressed(node, m.host, offset & (s->cluster_size - 1), m.len,
					      iov, niov, ioff);
			break;
		}
		if (!locked)
			qcow2_unlocked_io_end(s);
		if (ret < 0)
			break;
		offset += m.len;
		ioff += m.len;
		len -= m.len;
	}
	vs_iov_room_free(sl, stack);
	return ret;
}

/*
 * The direct data path (direct.h): only allocated clusters whose refcount
 * is one (COPIED) are handed out, for reads and writes alike. Those are
 * written in place here too, so only a change that the generic layer
 * brackets (discard, write-zeroes, a compressed write, a snapshot, a
 * resize...) moves them; a COW of a shared cluster never does.
 */
int qcow2_map(struct vs_node *node, uint64_t offset, uint64_t len, bool write, struct vs_map *m)
{
	struct qcow2_state *s = qcow2_state(node);
	struct vs_node *d = qcow2_data_node(node);
	struct map mp;
	int ret;

	vs_co_mutex_lock(&s->lock);
	if (s->corrupt || s->hdr.crypt_method) {
		vs_co_mutex_unlock(&s->lock);
		m->len = len;
		return 0;
	}
	ret = get_map(node, offset, len, &mp);
	if (ret == 0) {
		m->len = mp.len;
		/* Data past the end of the data node is read as zeroes at home. */
		if (mp.type == MAP_NORMAL && mp.copied && mp.host < vs_node_size(d) &&
		    vs_node_size(d) - mp.host >= mp.len &&
		    !(write && !s->data_file && qcow2_overlap_find(node, 0, mp.host, mp.len))) {
			m->child = d;
			m->offset = mp.host;
			ret = 1;
		}
	}
	vs_co_mutex_unlock(&s->lock);
	return ret;
}

int qcow2_co_readv(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov, int niov)
{
	return read_range(node, offset, len, iov, niov, 0, false);
}

static int read_locked_buf(struct vs_node *node, uint64_t offset, void *buf, uint64_t len)
{
	struct iovec v = { buf, len };

	if (!len)
		return 0;
	return read_range(node, offset, len, &v, 1, 0, true);
}

/*
 * Lock held. The head [@a0, @offset) and the first @tl bytes of the tail
 * [@end, @a1) of an allocating write, read into new buffers *@head and
 * *@tail (the caller frees them, also on failure). @zero: the buffers start
 * zeroed, for a tail read short.
 */
static int read_head_tail(struct vs_node *node, uint64_t a0, uint64_t offset, uint64_t end,
			  uint64_t a1, uint64_t tl, bool zero, uint8_t **head, uint8_t **tail)
{
	int ret;

	*head = zero ? vs_buf_zalloc(offset - a0 + 1) : vs_buf_alloc(offset - a0 + 1);
	*tail = zero ? vs_buf_zalloc(a1 - end + 1) : vs_buf_alloc(a1 - end + 1);
	if (!*head || !*tail)
		return -ENOMEM;
	ret = read_locked_buf(node, a0, *head, offset - a0);
	if (ret < 0)
		return ret;
	return read_locked_buf(node, end, *tail, tl);
}

/* ---- L1 / L2 allocation ---- */

/* Clusters allocated in advance for new L2 tables: [next, end) of the file. */
struct l2_reserve {
	uint64_t next, end;
};

/*
 * Lock held. The L2 table for guest @offset, allocated or made private
 * (copied when shared with a snapshot) so that it may be modified. A new
 * table takes a cluster of @reserve (may be NULL) while it has one.
 */
static int get_l2_writable_from(struct vs_node *node, uint64_t offset, struct l2_reserve *reserve,
				void **l2)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l1i = offset >> (s->cluster_bits + s->l2_bits);
	uint64_t old, e;
	int64_t nw;
	void *tbl, *oldtbl;
	int ret;

	if (l1i >= s->l1_size) {
		ret = qcow2_l1_grow(node, l1i + 1, false);
		if (ret < 0)
			return ret;
	}
	e = s->l1[l1i];
	old = e & QCOW2_L1E_OFFSET_MASK;
	if (old) {
		if ((old & (s->cluster_size - 1)) ||
		    old + s->cluster_size > vs_node_size(node->file))
			return qcow2_mark_corrupt(node, "L2 table offset invalid", old);
		if (e & QCOW2_OFLAG_COPIED)
			return qcow2_cache_get(node, s->l2_cache, old, l2);
	}
	ret = qcow2_mark_dirty(node);
	if (ret < 0)
		return ret;
	if (reserve && reserve->next < reserve->end) {
		nw = (int64_t)reserve->next;
		reserve->next += s->cluster_size;
	} else {
		nw = qcow2_alloc_clusters(node, 1);
		if (nw < 0)
			return (int)nw;
	}
	ret = qcow2_cache_get_empty(node, s->l2_cache, (uint64_t)nw, &tbl);
	if (ret < 0)
		return ret;
	if (old) {
		ret = qcow2_cache_get(node, s->l2_cache, old, &oldtbl);
		if (ret < 0) {
			qcow2_cache_put(s->l2_cache, &tbl);
			return ret;
		}
		memcpy(tbl, oldtbl, s->cluster_size);
		qcow2_cache_put(s->l2_cache, &oldtbl);
	}
	qcow2_cache_mark_dirty(s->l2_cache, tbl);
	/* Refcount of the new table, then the table itself, then the L1 entry. */
	if (!s->lazy_refcounts) {
		ret = qcow2_cache_flush(node, s->rb_cache);
		if (ret < 0)
			goto fail;
	}
	ret = qcow2_cache_flush(node, s->l2_cache);
	if (ret < 0)
		goto fail;
	s->l1[l1i] = (uint64_t)nw | QCOW2_OFLAG_COPIED;
	ret = qcow2_l1_write_entry(node, (uint32_t)l1i);
	if (ret < 0) {
		s->l1[l1i] = e;
		goto fail;
	}
	if (old) {
		uint64_t rc;

		/*
		 * The old table stays referenced by a snapshot's L1: its refcount
		 * may only drop once the active L1 no longer points to it on disk,
		 * or a reordering disk could leave two users with refcount 1.
		 */
		ret = vs_node_flush(node->file);
		if (ret < 0)
			goto fail;
		ret = qcow2_free_clusters(node, old, s->cluster_size, false);
		if (ret < 0)
			goto fail;
		if (qcow2_refcount_get(node, old >> s->cluster_bits, &rc) == 0 && rc == 0)
			qcow2_cache_discard(s->l2_cache, old);
	}
	*l2 = tbl;
	return 0;
fail:
	qcow2_cache_put(s->l2_cache, &tbl);
	return ret;
}

static int get_l2_writable(struct vs_node *node, uint64_t offset, void **l2)
{
	return get_l2_writable_from(node, offset, NULL, l2);
}

/* Lock held: drop one reference on the storage behind L2 entry @e (normal or compressed). */
static int free_entry_storage(struct vs_node *node, uint64_t e, bool punch)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t off, len;
	int ret;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		compressed_range(s, e, &off, &len);
		off &= ~511ull;
		len = (len + 511) & ~511ull;
		/* Every host cluster the compressed bytes touch holds one reference. */
		len = ((off + len + s->cluster_size - 1) & ~(s->cluster_size - 1)) -
		      (off & ~(s->cluster_size - 1));
		off &= ~(s->cluster_size - 1);
		punch = false; /* the clusters may be shared with other compressed data */
	} else {
		off = e & QCOW2_L2E_OFFSET_MASK;
		len = s->cluster_size;
		/* Data file clusters are not counted: nothing to give back. */
		if (!off || s->data_file)
			return 0;
	}
	if (!s->lazy_refcounts) {
		ret = qcow2_cache_set_dependency(node, s->rb_cache, s->l2_cache);
		if (ret < 0)
			return ret;
	}
	s->free_pending = true;
	return qcow2_free_clusters(node, off, len, punch);
}

/* ---- writes ---- */

/* Lock held. Write [off, off+len) at host @host (data of newly allocated/owned clusters). */
/*
 * Write @len bytes of @iov (from @ioff) to host @host of an encrypted image,
 * guest offset @guest: encrypted in a copy, the caller's buffer stays as it is.
 */
static int write_encrypted(struct vs_node *node, uint64_t host, uint64_t guest, uint64_t len,
			   struct iovec *iov, int niov, uint64_t ioff)
{
	uint8_t *buf = vs_buf_alloc(len);
	int ret;

	if (!buf)
		return -ENOMEM;
	vs_iov_to_buf(buf, iov, niov, ioff, len);
	ret = qcow2_encrypt_buf(qcow2_state(node), host, guest, buf, len);
	if (ret == 0)
		ret = vs_node_pwrite(qcow2_data_node(node), host, buf, len, 0);
	free(buf);
	return ret;
}

static int write_host(struct vs_node *node, uint64_t host, uint64_t len, void *head,
		      uint64_t head_len, struct iovec *iov, int niov, uint64_t ioff, uint64_t dlen,
		      void *tail, uint64_t tail_len, uint64_t guest)
{
	struct iovec stack[18], *v = stack;
	int n, max = niov + 2 > 18 ? niov + 2 : 18;
	int ret;

	if (!qcow2_state(node)->data_file) {
		ret = qcow2_overlap_check(node, 0, host, len);
		if (ret < 0)
			return ret;
	}
	if (niov + 2 > 18) {
		v = malloc(sizeof(*v) * (size_t)max);
		if (!v)
			return -ENOMEM;
	}
	n = 0;
	if (head_len) {
		v[n].iov_base = head;
		v[n++].iov_len = head_len;
	}
	ret = vs_iov_slice(v + n, max - n - 1, iov, niov, ioff, dlen);
	if (ret >= 0) {
		n += ret;
		if (tail_len) {
			v[n].iov_base = tail;
			v[n++].iov_len = tail_len;
		}
		if (qcow2_state(node)->hdr.crypt_method)
			ret = write_encrypted(node, host, guest, len, v, n, 0);
		else
			ret = vs_node_pwritev(qcow2_data_node(node), host, len, v, n, 0);
	}
	if (v != stack)
		free(v);
	return ret;
}

static uint64_t sc_mask(const struct qcow2_state *s, uint64_t from, uint64_t to)
{
	/* Subclusters covered by byte range [from, to) within one cluster. */
	unsigned a = (unsigned)(from >> s->subcluster_bits);
	unsigned b = (unsigned)((to + s->subcluster_size - 1) >> s->subcluster_bits);
	uint64_t m = (b >= 32 ? 0xffffffffull : ((1ull << b) - 1));

	return m & ~((1ull << a) - 1);
}

/*
 * Lock held. Write the part of [offset, offset+len) that falls into the
 * clusters from offset's cluster on (within one L2 table) that need new
 * storage or a metadata update; *done receives the bytes handled.
 */
static int write_alloc(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
		       int niov, uint64_t ioff, uint64_t *done)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t cstart = offset & ~(cs - 1);
	uint64_t end, a0, a1, nclusters, k, e0, bm0, host;
	uint8_t *head = NULL, *tail = NULL;
	void *l2 = NULL;
	int64_t nw;
	int ret;

	ret = get_l2_writable(node, offset, &l2);
	if (ret < 0)
		return ret;

	end = offset + len;
	nclusters = ((end - cstart) + cs - 1) >> s->cluster_bits;
	if (nclusters > s->l2_entries - l2i)
		nclusters = s->l2_entries - l2i;
	if (end > cstart + (nclusters << s->cluster_bits))
		end = cstart + (nclusters << s->cluster_bits);

	e0 = l2_entry(s, l2, l2i);
	bm0 = l2_bitmap(s, l2, l2i);

	/* Owned storage (preallocated zero cluster, or extended L2 partial): update in place. */
	if ((e0 & QCOW2_OFLAG_COPIED) && !(e0 & QCOW2_OFLAG_COMPRESSED) &&
	    (e0 & QCOW2_L2E_OFFSET_MASK)) {
		uint64_t g = s->extl2 ? s->subcluster_size : cs;
		uint64_t cend = cstart + cs;

		host = e0 & QCOW2_L2E_OFFSET_MASK;
		if (end > cend)
			end = cend;
		/*
		 * Stop before the next allocated subcluster: writes to those go
		 * in place without the lock, and the read-modify-write of a tail
		 * subcluster that one of them is changing would put the old bytes
		 * back over it. The caller writes the rest in place.
		 */
		if (s->extl2) {
			unsigned sc = (unsigned)((offset - cstart) >> s->subcluster_bits);

			while (sc < 32 && !(bm0 & (1ull << sc)))
				sc++;
			if (end > cstart + ((uint64_t)sc << s->subcluster_bits))
				end = cstart + ((uint64_t)sc << s->subcluster_bits);
		}
		a0 = offset & ~(g - 1);
		a1 = (end + g - 1) & ~(g - 1);
		if (a1 > cend)
			a1 = cend;
		ret = read_head_tail(node, a0, offset, end, a1, a1 - end, false, &head, &tail);
		if (ret < 0)
			goto out;
		ret = write_host(node, host + (a0 - cstart), a1 - a0, head, offset - a0, iov, niov,
				 ioff, end - offset, tail, a1 - end, a0);
		if (ret < 0)
			goto out;
		if (s->extl2) {
			uint64_t m = sc_mask(s, a0 - cstart, a1 - cstart);

			bm0 = (bm0 | m) & ~(m << 32);
			l2_set(s, l2, l2i, e0, bm0);
		} else {
			l2_set(s, l2, l2i, host | QCOW2_OFLAG_COPIED, 0);
		}
		/*
		 * The entry now exposes what was just written over the cluster's
		 * stale bytes (it was a zero cluster): that data must be on disk
		 * before the entry, and no new refcount orders it here.
		 */
		s->l2_cache->flush_first = true;
		qcow2_cache_mark_dirty(s->l2_cache, l2);
		*done = end - offset;
		goto out;
	}

	/* Count the clusters that need new storage. */
	for (k = 1; k < nclusters; k++) {
		uint64_t e = l2_entry(s, l2, l2i + k);

		if ((e & QCOW2_OFLAG_COPIED) && !(e & QCOW2_OFLAG_COMPRESSED))
			break;
	}
	if (end > cstart + (k << s->cluster_bits))
		end = cstart + (k << s->cluster_bits);

	/*
	 * Granularity of the head and tail fill: a subcluster when the old
	 * cluster had no storage of its own (its untouched subclusters keep
	 * their status), else the whole cluster (the copy takes all of it).
	 */
	{
		uint64_t el = l2_entry(s, l2, l2i + k - 1);
		uint64_t lstart = cstart + ((k - 1) << s->cluster_bits);
		uint64_t gh =
			(s->extl2 && !(e0 & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED))) ?
				s->subcluster_size :
				cs;
		uint64_t gt =
			(s->extl2 && !(el & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED))) ?
				s->subcluster_size :
				cs;

		a0 = offset & ~(gh - 1);
		a1 = (end + gt - 1) & ~(gt - 1);
		if (a1 > lstart + cs)
			a1 = lstart + cs;
	}
	/* Virtual size may end inside the last cluster; beyond it there is nothing to copy. */
	{
		uint64_t tl = a1 - end;

		if (end + tl > node->size)
			tl = end < node->size ? node->size - end : 0;
		ret = read_head_tail(node, a0, offset, end, a1, tl, true, &head, &tail);
		if (ret < 0)
			goto out;
	}

	ret = qcow2_mark_dirty(node);
	if (ret < 0)
		goto out;
	/* In a data file every cluster has its guest offset, taken from no refcount. */
	nw = s->data_file ? (int64_t)cstart : qcow2_alloc_clusters(node, k);
	if (nw < 0) {
		ret = (int)nw;
		goto out;
	}
	host = (uint64_t)nw;
	ret = write_host(node, host + (a0 - cstart), a1 - a0, head, offset - a0, iov, niov, ioff,
			 end - offset, tail, a1 - end, a0);
	if (ret < 0) {
		if (!s->data_file)
			(void)qcow2_free_clusters(node, host, k << s->cluster_bits, false);
		goto out;
	}
	/*
	 * The L2 entries may only reach the disk after the new refcounts and
	 * the data (else a crash leaves entries pointing past the end of the
	 * file or at stale data); without refcounts to wait for
	 * (lazy_refcounts), flush before the L2 write.
	 */
	ret = l2_after_new_storage(node);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < k; i++) {
		uint64_t old = l2_entry(s, l2, l2i + i);
		uint64_t obm = l2_bitmap(s, l2, l2i + i);
		uint64_t cst = cstart + (i << s->cluster_bits);
		uint64_t from = a0 > cst ? a0 - cst : 0;
		uint64_t to = a1 < cst + cs ? a1 - cst : cs;
		uint64_t bm = 0;

		if (s->extl2) {
			uint64_t m = sc_mask(s, from, to);

			if (old & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED))
				bm = 0xffffffffull; /* the whole old cluster was copied */
			else
				bm = (obm | m) & ~(m << 32);
		}
		l2_set(s, l2, l2i + i, (host + (i << s->cluster_bits)) | QCOW2_OFLAG_COPIED, bm);
		qcow2_cache_mark_dirty(s->l2_cache, l2);
		if (old & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)) {
			qcow2_drain_unlocked(s);
			ret = free_entry_storage(node, old, false);
			if (ret < 0)
				goto out;
		}
	}
	*done = end - offset;
out:
	free(head);
	free(tail);
	qcow2_cache_put(s->l2_cache, &l2);
	return ret;
}

int qcow2_co_writev(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
		    int niov)
{
	struct qcow2_state *s = qcow2_state(node);
	struct iovec stack[16];
	int slmax;
	struct iovec *sl = vs_iov_room(stack, 16, niov, &slmax);
	uint64_t ioff = 0;
	int ret = 0;

	if (!sl)
		return -ENOMEM;
	while (len) {
		struct map m;
		uint64_t done = 0;
		int n;

		vs_co_mutex_lock(&s->lock);
		if (s->corrupt) {
			vs_co_mutex_unlock(&s->lock);
			ret = -EIO;
			break;
		}
		ret = get_map(node, offset, len, &m);
		if (ret < 0) {
			vs_co_mutex_unlock(&s->lock);
			break;
		}
		if (m.type == MAP_NORMAL && m.copied) {
			/* Overwrite in place: the data I/O needs no lock. */
			ret = s->data_file ? 0 : qcow2_overlap_check(node, 0, m.host, m.len);
			if (ret < 0) {
				vs_co_mutex_unlock(&s->lock);
				break;
			}
			qcow2_unlocked_io_begin(s);
			vs_co_mutex_unlock(&s->lock);
			if (s->hdr.crypt_method) {
				ret = write_encrypted(node, m.host, offset, m.len, iov, niov, ioff);
			} else {
				n = vs_iov_slice(sl, slmax, iov, niov, ioff, m.len);
				ret = n < 0 ? n :
					      vs_node_pwritev(qcow2_data_node(node), m.host, m.len,
							      sl, n, 0);
			}
			qcow2_unlocked_io_end(s);
			done = m.len;
		} else {
			ret = write_alloc(node, offset, len, iov, niov, ioff, &done);
			vs_co_mutex_unlock(&s->lock);
		}
		if (ret < 0)
			break;
		offset += done;
		ioff += done;
		len -= done;
	}
	vs_iov_room_free(sl, stack);
	return ret;
}

/* ---- write-zeroes and discard ---- */

static int zero_partial(struct vs_node *node, uint64_t offset, uint64_t len, unsigned flags)
{
	struct qcow2_state *s = qcow2_state(node);
	struct iovec v;
	void *buf;
	int ret;

	if (flags & VS_REQ_NO_FALLBACK)
		return -ENOTSUP;
	buf = vs_buf_zalloc(len);
	if (!buf)
		return -ENOMEM;
	v.iov_base = buf;
	v.iov_len = len;
	vs_co_mutex_unlock(&s->lock);
	ret = qcow2_co_writev(node, offset, len, &v, 1);
	vs_co_mutex_lock(&s->lock);
	free(buf);
	return ret;
}

/* Lock held. Zero (or discard) whole clusters [offset, offset+len) of one L2 table. */
static int zero_clusters(struct vs_node *node, uint64_t offset, uint64_t len, unsigned flags,
			 bool discard)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l1i = offset >> (s->cluster_bits + s->l2_bits);
	uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t n = len >> s->cluster_bits;
	bool has_l2 = l1i < s->l1_size && (s->l1[l1i] & QCOW2_L1E_OFFSET_MASK);
	bool want_zero_flag = s->hdr.version >= 3 && (node->backing || !discard);
	void *l2 = NULL;
	int ret;

	/* Nothing mapped and nothing below: already reads as zeroes. */
	if (!has_l2 && !node->backing)
		return 0;
	if (!has_l2 && discard && !want_zero_flag)
		return 0;
	ret = get_l2_writable(node, offset, &l2);
	if (ret < 0)
		return ret;
	if (!s->lazy_refcounts) {
		ret = qcow2_cache_set_dependency(node, s->rb_cache, s->l2_cache);
		if (ret < 0)
			goto out;
	}
	for (uint64_t i = 0; i < n && l2i + i < s->l2_entries; i++) {
		uint64_t old = l2_entry(s, l2, l2i + i);
		uint64_t obm = l2_bitmap(s, l2, l2i + i);
		uint64_t host = old & QCOW2_L2E_OFFSET_MASK;
		bool owned = host && (old & QCOW2_OFLAG_COPIED) && !(old & QCOW2_OFLAG_COMPRESSED);
		bool keep = !discard && !(flags & VS_REQ_MAY_UNMAP) && owned;
		uint64_t ne, nbm = 0;

		if (!want_zero_flag) {
			ne = 0; /* unallocated reads as zeroes without backing */
			keep = false;
		} else if (s->extl2) {
			ne = keep ? old : 0;
			nbm = 0xffffffffull << 32;
		} else {
			ne = (keep ? (host | QCOW2_OFLAG_COPIED) : 0) | QCOW2_OFLAG_ZERO;
		}
		if (ne == old && nbm == obm)
			continue;
		l2_set(s, l2, l2i + i, ne, nbm);
		qcow2_cache_mark_dirty(s->l2_cache, l2);
		if (!keep && (host || (old & QCOW2_OFLAG_COMPRESSED))) {
			qcow2_drain_unlocked(s);
			ret = free_entry_storage(node, old, true);
			if (ret < 0)
				goto out;
		}
	}
out:
	qcow2_cache_put(s->l2_cache, &l2);
	return ret;
}

/* Lock held. Zero whole subclusters of one cluster (extended L2). */
static int zero_subclusters(struct vs_node *node, uint64_t offset, uint64_t len)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t coff = offset & (s->cluster_size - 1);
	uint64_t m = sc_mask(s, coff, coff + len);
	uint64_t e, bm;
	void *l2;
	int ret;

	ret = get_l2_writable(node, offset, &l2);
	if (ret < 0)
		return ret;
	e = l2_entry(s, l2, l2i);
	bm = l2_bitmap(s, l2, l2i);
	if ((e & QCOW2_OFLAG_COMPRESSED) ||
	    ((e & QCOW2_L2E_OFFSET_MASK) && !(e & QCOW2_OFLAG_COPIED))) {
		/* Shared or compressed: no subcluster bitmap to edit in place. */
		qcow2_cache_put(s->l2_cache, &l2);
		return 1;
	}
	bm = (bm & ~m) | (m << 32);
	l2_set(s, l2, l2i, e, bm);
	qcow2_cache_mark_dirty(s->l2_cache, l2);
	qcow2_cache_put(s->l2_cache, &l2);
	return 0;
}

int qcow2_co_zero(struct vs_node *node, uint64_t offset, uint64_t len, unsigned flags, bool discard)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	int ret = 0;

	if (!discard && s->hdr.version < 3 && node->backing)
		return -ENOTSUP;
	vs_co_mutex_lock(&s->lock);
	if (s->corrupt) {
		vs_co_mutex_unlock(&s->lock);
		return -EIO;
	}
	while (len) {
		uint64_t cstart = offset & ~(cs - 1);
		uint64_t cend = cstart + cs;
		/* The last cluster counts as whole when the request reaches the end of the disk. */
		bool whole = offset == cstart &&
			     (offset + len >= cend || offset + len >= node->size);
		uint64_t chunk;

		if (whole) {
			uint64_t l2_end = (cstart | ((s->l2_entries << s->cluster_bits) - 1)) + 1;
			uint64_t full = offset + len >= node->size ?
						(((node->size + cs - 1) & ~(cs - 1)) - offset) :
						((offset + len) & ~(cs - 1)) - offset;

			chunk = full < l2_end - offset ? full : l2_end - offset;
			/* A raw data file reads what the guest reads: zeroed first, as QEMU. */
			ret = 0;
			if (s->data_file_raw)
				ret = vs_node_write_zeroes(s->data_file, offset,
							   (offset + chunk < node->size ?
								    offset + chunk :
								    node->size) -
								   offset,
							   VS_REQ_MAY_UNMAP);
			if (ret == 0)
				ret = zero_clusters(node, offset, chunk, flags, discard);
			if (chunk > len)
				chunk = len;
		} else {
			chunk = (cend - offset) < len ? cend - offset : len;
			if (discard) {
				ret = 0; /* discard is advisory: partial clusters stay */
			} else if (s->extl2 && !s->data_file_raw &&
				   !(offset & (s->subcluster_size - 1)) &&
				   (!((offset + chunk) & (s->subcluster_size - 1)) ||
				    offset + chunk >= node->size)) {
				ret = zero_subclusters(node, offset, chunk);
				if (ret == 1)
					ret = zero_partial(node, offset, chunk, flags);
			} else {
				ret = zero_partial(node, offset, chunk, flags);
			}
		}
		if (ret < 0)
			break;
		offset += chunk;
		len -= chunk;
	}
	vs_co_mutex_unlock(&s->lock);
	return ret;
}

/* ---- block status ---- */

/*
 * Lock held. Whether the image looks metadata-preallocated: it references
 * clearly more clusters than the file has allocated. QEMU uses the same
 * test to decide whether normal clusters may be holes in the file, and so
 * whether block status asks the file for zeroes.
 */
static void detect_metadata_prealloc(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	int64_t real = vs_node_allocated_size(node->file);
	uint64_t real_clusters, threshold, used = 0;

	s->prealloc_checked = true;
	/* Data file clusters are not counted here: nothing to compare. */
	if (real < 0 || s->data_file)
		return;
	real_clusters = (uint64_t)real >> s->cluster_bits;
	threshold = real_clusters * 10 / 9 > real_clusters + 2 ? real_clusters * 10 / 9 :
								 real_clusters + 2;
	for (uint64_t i = 0; i < s->reftable_size && used < threshold; i++) {
		void *rb;

		if (!s->reftable[i] || qcow2_cache_get(node, s->rb_cache, s->reftable[i], &rb) < 0)
			continue;
		for (uint64_t j = 0; j < (1ull << s->rb_bits); j++)
			used += qcow2_rb_entry_get(s, rb, j) != 0;
		qcow2_cache_put(s->rb_cache, &rb);
	}
	s->metadata_prealloc = used >= threshold;
}

int qcow2_co_block_status(struct vs_node *node, struct vs_req *req)
{
	struct qcow2_state *s = qcow2_state(node);
	struct map m;
	int ret;

	vs_co_mutex_lock(&s->lock);
	if (!s->prealloc_checked)
		detect_metadata_prealloc(node);
	ret = get_map(node, req->offset, req->len, &m);
	vs_co_mutex_unlock(&s->lock);
	if (ret < 0)
		return ret;
	req->bs_pnum = m.len;
	req->bs_map = 0;
	req->bs_file = NULL;
	switch (m.type) {
	case MAP_UNALLOC:
	case MAP_ZERO:
		if (m.type == MAP_UNALLOC)
			req->bs_status = node->backing ? 0 : VS_BS_ZERO;
		else
			req->bs_status = VS_BS_ZERO | VS_BS_ALLOCATED;
		if (m.host && !s->hdr.crypt_method) {
			/*
			 * A preallocated zero cluster, or a subcluster of an
			 * allocated cluster: it has its place in the file, as QEMU
			 * maps it.
			 */
			req->bs_status |= VS_BS_OFFSET_VALID;
			req->bs_map = m.host;
			req->bs_file = qcow2_data_node(node);
		}
		break;
	case MAP_NORMAL: {
		uint64_t fpnum = 0;
		unsigned fst = 0;

		if (s->hdr.crypt_method) {
			/* As QEMU: the file's bytes are not the data, so no offset. */
			req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED;
			break;
		}
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID;
		req->bs_map = m.host;
		req->bs_file = qcow2_data_node(node);
		/*
		 * As QEMU's block layer does: a hole in the file under allocated
		 * clusters (metadata preallocation) reads as zeroes.
		 */
		if (!s->metadata_prealloc) {
			/* Allocated clusters were written: data, as QEMU reports them. */
		} else if (m.host >= vs_node_size(node->file)) {
			req->bs_status |= VS_BS_ZERO;
		} else if (vs_node_block_status(node->file, m.host, m.len, &fpnum, &fst, NULL,
						NULL) == 0 &&
			   fpnum) {
			if (fst & VS_BS_ZERO)
				req->bs_status |= VS_BS_ZERO;
			if (fpnum < req->bs_pnum)
				req->bs_pnum = fpnum;
		}
		break;
	}
	case MAP_COMPRESSED:
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_COMPRESSED;
		break;
	}
	return 0;
}

/* ---- preallocation and truncation helpers ---- */

/* The entry has host storage of its own (normal, preallocated zero, or compressed). */
static bool entry_has_storage(uint64_t e)
{
	return (e & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)) != 0;
}

/*
 * Lock held. Clusters of [c, stop) (cluster indexes inside one L2 table's
 * span) without host storage: @n, and whether giving them entries needs a
 * new L2 table (@new_table: none yet, or one shared with a snapshot).
 */
static int prealloc_scan(struct vs_node *node, uint64_t c, uint64_t stop, uint64_t *n,
			 bool *new_table)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l1i = c >> s->l2_bits;
	uint64_t e = l1i < s->l1_size ? s->l1[l1i] : 0;
	uint64_t l2off = e & QCOW2_L1E_OFFSET_MASK;
	void *l2;
	int ret;

	*n = 0;
	*new_table = !l2off || !(e & QCOW2_OFLAG_COPIED);
	if (!l2off) {
		*n = stop - c;
		return 0;
	}
	if ((l2off & (s->cluster_size - 1)) || l2off + s->cluster_size > vs_node_size(node->file))
		return qcow2_mark_corrupt(node, "L2 table offset invalid", l2off);
	ret = qcow2_cache_get(node, s->l2_cache, l2off, &l2);
	if (ret < 0)
		return ret;
	for (uint64_t i = c; i < stop; i++)
		if (!entry_has_storage(l2_entry(s, l2, i & (s->l2_entries - 1))))
			(*n)++;
	qcow2_cache_put(s->l2_cache, &l2);
	return 0;
}

/*
 * Lock held. Give the file storage for [off, off+len), a run of clusters
 * that nothing points to yet: inside the file zeroed (the clusters may be
 * reused ones), past its end by growing the file with @mode, which for
 * 'metadata' only extends it.
 */
static int prealloc_host(struct vs_node *f, uint64_t off, uint64_t len, enum vs_prealloc mode)
{
	const uint64_t chunk = 1u << 20;
	uint64_t eof = vs_node_size(f), end = off + len;
	uint64_t in_end = end < eof ? end : eof;
	int ret = 0;

	if (off < in_end && mode == VS_PREALLOC_FALLOC) {
		ret = vs_node_write_zeroes(f, off, in_end - off, 0);
	} else if (off < in_end && mode == VS_PREALLOC_FULL) {
		void *zero = vs_buf_zalloc(chunk);

		if (!zero)
			return -ENOMEM;
		for (uint64_t p = off; p < in_end && ret == 0; p += chunk)
			ret = vs_node_pwrite(f, p, zero, in_end - p < chunk ? in_end - p : chunk,
					     0);
		free(zero);
	}
	if (ret == 0 && end > eof)
		ret = vs_node_truncate(
			f, end, mode == VS_PREALLOC_METADATA ? VS_PREALLOC_OFF : mode, false, NULL);
	return ret;
}

/*
 * Lock held. Point every cluster of [first, end) without host storage to
 * the next cluster of the data run at *@data; new L2 tables come from
 * @reserve. @old_eof: clusters below it may hold stale bytes.
 */
static int prealloc_link(struct vs_node *node, uint64_t first, uint64_t end,
			 struct l2_reserve *reserve, uint64_t *data, uint64_t old_eof)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	int ret = 0;

	for (uint64_t c = first; c < end;) {
		uint64_t stop = ((c >> s->l2_bits) + 1) << s->l2_bits, n;
		bool new_table;
		void *l2;

		if (stop > end)
			stop = end;
		ret = prealloc_scan(node, c, stop, &n, &new_table);
		if (ret < 0)
			return ret;
		if (!n) {
			c = stop;
			continue;
		}
		ret = get_l2_writable_from(node, c << s->cluster_bits, reserve, &l2);
		if (ret < 0)
			return ret;
		/*
		 * The run's refcounts and its storage (the grown file, the zeroes)
		 * reach the disk before entries that point into it; with
		 * lazy_refcounts there are no refcounts to wait for, only the file.
		 */
		ret = l2_after_new_storage(node);
		if (ret < 0) {
			qcow2_cache_put(s->l2_cache, &l2);
			return ret;
		}
		for (; c < stop; c++) {
			uint64_t i = c & (s->l2_entries - 1);
			uint64_t old = l2_entry(s, l2, i);
			uint64_t h = *data;

			if (entry_has_storage(old))
				continue;
			if (s->data_file) {
				/* A data file cluster is at its guest offset. */
				h = c << s->cluster_bits;
				if (!s->data_file_raw && (old & QCOW2_OFLAG_ZERO))
					h |= QCOW2_OFLAG_ZERO;
				l2_set(s, l2, i, h | QCOW2_OFLAG_COPIED,
				       s->extl2 ? l2_bitmap(s, l2, i) : 0);
				continue;
			}
			*data += cs;
			if (s->extl2)
				l2_set(s, l2, i, h | QCOW2_OFLAG_COPIED, l2_bitmap(s, l2, i));
			else if (s->hdr.version >= 3 && (h < old_eof || (old & QCOW2_OFLAG_ZERO)))
				/* A reused cluster may hold stale bytes: keep it reading zeroes. */
				l2_set(s, l2, i, h | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO, 0);
			else
				l2_set(s, l2, i, h | QCOW2_OFLAG_COPIED, 0);
		}
		qcow2_cache_mark_dirty(s->l2_cache, l2);
		qcow2_cache_put(s->l2_cache, &l2);
	}
	return 0;
}

/*
 * Lock held. The first cluster of a preallocation that starts inside it,
 * at @offset, gets host cluster @host: its bytes below @offset are the
 * guest's, read so far from the backing file through an unallocated entry,
 * and go into @host first (qemu's copy-on-write does the same), or the new
 * entry would hide them behind zeroes. Extended L2 entries keep their
 * subcluster bitmap, so reads still go to the backing file there.
 */
static int prealloc_copy_head(struct vs_node *node, uint64_t offset, uint64_t host)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t start = offset & ~(s->cluster_size - 1);
	uint64_t n;
	bool new_table;
	void *buf;
	int ret;

	if (start == offset || !node->backing || s->extl2)
		return 0;
	ret = prealloc_scan(node, start >> s->cluster_bits, (start >> s->cluster_bits) + 1, &n,
			    &new_table);
	if (ret < 0 || !n)
		return ret;
	buf = vs_buf_alloc(offset - start);
	if (!buf)
		return -ENOMEM;
	ret = read_locked_buf(node, start, buf, offset - start);
	if (ret == 0)
		ret = vs_node_pwrite(qcow2_data_node(node), host, buf, offset - start, 0);
	free(buf);
	return ret;
}

/*
 * Lock held. Give every cluster of [offset, offset+len) that has no host
 * storage a cluster (reads still see zeroes/backing), allocated in the
 * file per @mode. As qemu does, and so that a failure changes nothing:
 * one run takes the data clusters and the L2 tables they need; the run's
 * refcounts are taken, then its storage allocated (ENOSPC, or EOPNOTSUPP
 * where 'falloc' cannot write zeroes instead, stops here and the run is
 * given back), and only then do L2 entries point into it, written after
 * the refcounts. No allocation is left for the linking that could fail
 * for want of space.
 */
/*
 * Lock held. qcow2_preallocate() with an external data file: the L2 tables
 * come from the image file, the data clusters [first, end) are the data
 * file's own at their guest offsets (grown per @mode to whole clusters, as
 * QEMU grows it).
 */
static int prealloc_data_file(struct vs_node *node, uint64_t offset, uint64_t first, uint64_t end,
			      uint64_t ntables, enum vs_prealloc mode)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t dend = end << s->cluster_bits;
	struct l2_reserve reserve = { 0, 0 };
	uint64_t unused = 0;
	int64_t run = 0;
	int ret;

	ret = prealloc_host(s->data_file, first << s->cluster_bits,
			    dend - (first << s->cluster_bits), mode);
	if (ret < 0)
		return ret;
	if (ntables) {
		run = qcow2_alloc_clusters(node, ntables);
		if (run < 0)
			return (int)run;
		ret = prealloc_host(node->file, (uint64_t)run, ntables << s->cluster_bits,
				    VS_PREALLOC_METADATA);
		if (ret < 0) {
			(void)qcow2_free_clusters(node, (uint64_t)run, ntables << s->cluster_bits,
						  false);
			return ret;
		}
		reserve.next = (uint64_t)run;
		reserve.end = (uint64_t)run + (ntables << s->cluster_bits);
	}
	ret = prealloc_copy_head(node, offset, offset & ~(s->cluster_size - 1));
	if (ret == 0)
		ret = prealloc_link(node, first, end, &reserve, &unused, 0);
	if (reserve.next < reserve.end)
		(void)qcow2_free_clusters(node, reserve.next, reserve.end - reserve.next, false);
	return ret;
}

int qcow2_preallocate(struct vs_node *node, uint64_t offset, uint64_t len, enum vs_prealloc mode)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	uint64_t first = offset >> s->cluster_bits;
	uint64_t end = (offset + len + cs - 1) >> s->cluster_bits;
	uint64_t old_eof = vs_node_size(node->file);
	uint64_t ndata = 0, ntables = 0, run_len, data;
	struct l2_reserve reserve;
	int64_t run;
	int ret;

	if (!len)
		return 0;
	ret = qcow2_l1_grow(node, ((end - 1) >> s->l2_bits) + 1, false);
	if (ret < 0)
		return ret;
	for (uint64_t c = first; c < end;) {
		uint64_t stop = ((c >> s->l2_bits) + 1) << s->l2_bits, n;
		bool new_table;

		if (stop > end)
			stop = end;
		ret = prealloc_scan(node, c, stop, &n, &new_table);
		if (ret < 0)
			return ret;
		ndata += n;
		if (n && new_table)
			ntables++;
		c = stop;
	}
	if (!ndata)
		return 0;
	if (s->data_file)
		return prealloc_data_file(node, offset, first, end, ntables, mode);
	run = qcow2_alloc_clusters(node, ntables + ndata);
	if (run < 0)
		return (int)run;
	run_len = (ntables + ndata) << s->cluster_bits;
	ret = prealloc_host(node->file, (uint64_t)run, run_len, mode);
	if (ret < 0) {
		/* Nothing points into the run: it goes back, and the image is as it was. */
		(void)qcow2_free_clusters(node, (uint64_t)run, run_len, false);
		return ret;
	}
	reserve.next = (uint64_t)run;
	reserve.end = (uint64_t)run + (ntables << s->cluster_bits);
	data = reserve.end;
	ret = prealloc_copy_head(node, offset, data);
	if (ret < 0) {
		(void)qcow2_free_clusters(node, (uint64_t)run, run_len, false);
		return ret;
	}
	ret = prealloc_link(node, first, end, &reserve, &data, old_eof);
	/* What the linking did not use (it cannot be much) goes back. */
	if (reserve.next < reserve.end)
		(void)qcow2_free_clusters(node, reserve.next, reserve.end - reserve.next, false);
	if (data < (uint64_t)run + run_len)
		(void)qcow2_free_clusters(node, data, (uint64_t)run + run_len - data, false);
	return ret;
}

/* Lock held. Drop every mapping at or past @new_size (which is cluster aligned). */
int qcow2_discard_tail(struct vs_node *node, uint64_t new_size)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l2_span = UINT64_C(1) << (s->cluster_bits + s->l2_bits);
	uint64_t end = (uint64_t)s->l1_size << (s->cluster_bits + s->l2_bits);
	uint64_t pos = new_size;
	int ret;

	while (pos < end) {
		uint64_t l1i = pos >> (s->cluster_bits + s->l2_bits);
		uint64_t span_end = (l1i + 1) << (s->cluster_bits + s->l2_bits);
		uint64_t l2i = (pos >> s->cluster_bits) & (s->l2_entries - 1);
		void *l2;

		if (!(s->l1[l1i] & QCOW2_L1E_OFFSET_MASK)) {
			pos = span_end;
			continue;
		}
		ret = get_l2_writable(node, pos, &l2);
		if (ret < 0)
			return ret;
		if (!s->lazy_refcounts) {
			ret = qcow2_cache_set_dependency(node, s->rb_cache, s->l2_cache);
			if (ret < 0) {
				qcow2_cache_put(s->l2_cache, &l2);
				return ret;
			}
		}
		for (uint64_t i = l2i; i < s->l2_entries; i++) {
			uint64_t old = l2_entry(s, l2, i);

			if (!old && !l2_bitmap(s, l2, i))
				continue;
			l2_set(s, l2, i, 0, 0);
			qcow2_cache_mark_dirty(s->l2_cache, l2);
			if (old & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)) {
				qcow2_drain_unlocked(s);
				ret = free_entry_storage(node, old, true);
				if (ret < 0) {
					qcow2_cache_put(s->l2_cache, &l2);
					return ret;
				}
			}
		}
		qcow2_cache_put(s->l2_cache, &l2);
		pos = span_end;
	}
	/*
	 * L2 tables that map nothing below the new size go, as QEMU's shrink
	 * drops them: the L1 entry is cleared on disk before the table's
	 * cluster is freed (a crash in between leaks it, never reuses it).
	 */
	for (uint64_t i = (new_size + l2_span - 1) / l2_span; i < s->l1_size; i++) {
		uint64_t old = s->l1[i], off = old & QCOW2_L1E_OFFSET_MASK;

		if (!off)
			continue;
		s->l1[i] = 0;
		ret = qcow2_l1_write_entry(node, (uint32_t)i);
		if (ret == 0)
			ret = vs_node_flush(node->file);
		if (ret < 0) {
			s->l1[i] = old;
			return ret;
		}
		qcow2_cache_discard(s->l2_cache, off);
		ret = qcow2_free_clusters(node, off, s->cluster_size, true);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Lock held. Does any cluster at or past @new_size have a mapping? */
int qcow2_shrink_check(struct vs_node *node, uint64_t new_size, bool *tail_allocated)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t pos = new_size, end = node->size;
	int ret;

	*tail_allocated = false;
	while (pos < end) {
		struct map m;

		ret = get_map(node, pos, end - pos, &m);
		if (ret < 0)
			return ret;
		if (m.type != MAP_UNALLOC) {
			*tail_allocated = true;
			return 0;
		}
		pos += m.len;
	}
	(void)s;
	return 0;
}

/* ---- compressed writes ---- */

static uint64_t round_up_u64(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* The unit compressed data is packed in: a sector, or the protocol's block. */
static uint64_t palign(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t a = node->file->limits.request_align;

	if (a < 512)
		a = 512;
	return a > s->cluster_size ? s->cluster_size : a;
}

/* Drop the references that qcow2_alloc_bytes() took for [host, host+len). */
static int free_host_bytes(struct vs_node *node, uint64_t host, uint64_t len)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t first = host & ~(s->cluster_size - 1);
	uint64_t end = (host + len + s->cluster_size - 1) & ~(s->cluster_size - 1);

	return qcow2_free_clusters(node, first, end - first, false);
}

/*
 * Lock held. Store @clen bytes of compressed data (@cbuf, padded with zeroes
 * to whole sectors) as the cluster at guest @offset. Returns 1 when the
 * descriptor cannot express the allocated offset (the caller then writes
 * the cluster uncompressed).
 */
static int write_compressed_cluster(struct vs_node *node, uint64_t offset, uint8_t *cbuf,
				    uint64_t clen)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t wlen = (clen + 511) & ~511ull;
	uint64_t host, desc, old;
	void *l2 = NULL;
	int64_t nw;
	int ret;

	ret = get_l2_writable(node, offset, &l2);
	if (ret < 0)
		return ret;
	ret = qcow2_mark_dirty(node);
	if (ret < 0)
		goto out;
	/*
	 * Packed like QEMU packs them, but each piece starts on a boundary of
	 * the protocol's alignment: two pieces never share a block, so
	 * concurrent compressed writes never read-modify-write each other's.
	 */
	nw = qcow2_alloc_bytes(node, round_up_u64(clen, palign(node)));
	if (nw < 0) {
		ret = (int)nw;
		goto out;
	}
	host = (uint64_t)nw;
	if (host >> s->csize_shift) {
		/* Beyond what the descriptor's offset field holds. */
		ret = free_host_bytes(node, host, wlen);
		if (ret == 0)
			ret = 1;
		goto out;
	}
	ret = qcow2_overlap_check(node, 0, host, wlen);
	if (ret == 0)
		ret = vs_node_pwrite(node->file, host, cbuf, wlen, 0);
	if (ret < 0) {
		(void)free_host_bytes(node, host, wlen);
		goto out;
	}
	/*
	 * The L2 entry may only reach the disk after the new refcount, and
	 * after the compressed data (else a crash leaves an entry that does not
	 * decompress): flushing the refcounts flushes the data too; without
	 * refcounts to wait for (lazy_refcounts), flush before the L2 write.
	 */
	ret = l2_after_new_storage(node);
	if (ret < 0)
		goto out;
	/* Extra sectors past the one holding the offset; COPIED stays clear. */
	desc = QCOW2_OFLAG_COMPRESSED | (((clen - 1) >> 9) << s->csize_shift) | host;
	old = l2_entry(s, l2, l2i);
	/* Extended L2: a compressed cluster's bitmap must be all zero. */
	l2_set(s, l2, l2i, desc, 0);
	qcow2_cache_mark_dirty(s->l2_cache, l2);
	if (old & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)) {
		/* In-place writers of the old cluster must finish before it can be reused. */
		qcow2_drain_unlocked(s);
		ret = free_entry_storage(node, old, false);
	}
out:
	qcow2_cache_put(s->l2_cache, &l2);
	return ret;
}

int qcow2_co_write_compressed(struct vs_node *node, uint64_t offset, uint64_t len,
			      struct iovec *iov, int niov)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	/* Largest compressed size the descriptor's sector count can express. */
	uint64_t cmax = (s->csize_mask + 1) * 512;
	uint8_t *buf, *cbuf;
	uint64_t ioff = 0;
	int ret = 0;

	buf = vs_buf_alloc(cs);
	cbuf = vs_buf_alloc(cs);
	if (!buf || !cbuf) {
		ret = -ENOMEM;
		goto out;
	}
	while (ioff < len) {
		uint64_t l = len - ioff < cs ? len - ioff : cs;
		/* Only a strictly smaller result is worth storing compressed. */
		size_t dst_len = cs - 1 < cmax ? cs - 1 : cmax;
		ssize_t r;
		uint64_t clen;

		/* The short last cluster of the image compresses as zero-padded, as QEMU does. */
		vs_iov_to_buf(buf, iov, niov, ioff, l);
		if (l < cs)
			memset(buf + l, 0, cs - l);
		r = codec_in_worker(true, s->hdr.compression_type, buf, cs, cbuf, dst_len);
		if (r < 0 && r != -ENOSPC) {
			ret = (int)r;
			break;
		}
		clen = r < 0 ? 0 : (uint64_t)r; /* -ENOSPC: it does not get smaller */
		if (clen) {
			memset(cbuf + clen, 0, ((clen + 511) & ~511ull) - clen);
			vs_co_mutex_lock(&s->lock);
			ret = s->corrupt ?
				      -EIO :
				      write_compressed_cluster(node, offset + ioff, cbuf, clen);
			vs_co_mutex_unlock(&s->lock);
			if (ret < 0)
				break;
		}
		if (!clen || ret == 1) {
			struct iovec v = { buf, l };

			ret = qcow2_co_writev(node, offset + ioff, l, &v, 1);
			if (ret < 0)
				break;
		}
		ioff += l;
	}
out:
	free(buf);
	free(cbuf);
	return ret;
}
