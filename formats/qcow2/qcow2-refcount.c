/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 refcounts: the refcount table, refcount blocks of any width
 * (1..64 bits), cluster allocation with refcount table growth, and the
 * overlap checks that keep data from landing on metadata.
 *
 * New refcount blocks are placed inside the range they describe (they
 * account for themselves), which keeps allocation free of recursion.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint64_t qcow2_rb_entry_get(const struct qcow2_state *s, const void *rb, uint64_t i)
{
	const uint8_t *p = rb;

	switch (s->refcount_order) {
	case 0:
		return (p[i / 8] >> (i % 8)) & 0x1;
	case 1:
		return (p[i / 4] >> (2 * (i % 4))) & 0x3;
	case 2:
		return (p[i / 2] >> (4 * (i % 2))) & 0xf;
	case 3:
		return p[i];
	case 4:
		return vs_be16(p + 2 * i);
	case 5:
		return vs_be32(p + 4 * i);
	default:
		return vs_be64(p + 8 * i);
	}
}

void qcow2_rb_entry_set(const struct qcow2_state *s, void *rb, uint64_t i, uint64_t v)
{
	uint8_t *p = rb;
	unsigned shift;

	switch (s->refcount_order) {
	case 0:
	case 1:
	case 2: {
		unsigned per_byte = 8u >> s->refcount_order;
		uint8_t mask = (uint8_t)((1u << s->refcount_bits) - 1);

		shift = (unsigned)(i % per_byte) * s->refcount_bits;
		p[i / per_byte] =
			(uint8_t)((p[i / per_byte] & ~(mask << shift)) | ((v & mask) << shift));
		break;
	}
	case 3:
		p[i] = (uint8_t)v;
		break;
	case 4:
		vs_put_be16(p + 2 * i, (uint16_t)v);
		break;
	case 5:
		vs_put_be32(p + 4 * i, (uint32_t)v);
		break;
	default:
		vs_put_be64(p + 8 * i, v);
		break;
	}
}

int qcow2_refcount_load(struct vs_node *node, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t bytes = (uint64_t)s->hdr.refcount_table_clusters << s->cluster_bits;
	uint64_t file_size = vs_node_size(node->file);
	uint8_t *buf;
	int ret;

	s->reftable_offset = s->hdr.refcount_table_offset;
	/* Offset first: a hostile offset near 2^64 must not wrap the sum. */
	if (s->reftable_offset > file_size ||
	    s->reftable_offset + bytes > file_size + s->cluster_size ||
	    s->reftable_offset < s->cluster_size)
		return vs_error_set(err, -EINVAL,
				    "qcow2: refcount table lies outside the image file");
	buf = vs_buf_zalloc(bytes);
	s->reftable = calloc(bytes / 8, sizeof(uint64_t));
	if (!buf || !s->reftable) {
		free(buf);
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory for the refcount table");
	}
	/* The last cluster may be cut short by EOF; it then reads as zeroes. */
	ret = vs_node_pread(
		node->file, s->reftable_offset, buf,
		s->reftable_offset + bytes > file_size ? file_size - s->reftable_offset : bytes);
	if (ret < 0) {
		free(buf);
		return vs_error_setf_errno(err, ret, "qcow2: reading the refcount table");
	}
	s->reftable_size = bytes / 8;
	s->reftable_used = 0;
	for (uint64_t i = 0; i < s->reftable_size; i++) {
		s->reftable[i] = vs_be64(buf + 8 * i) & QCOW2_REFT_OFFSET_MASK;
		if (s->reftable[i])
			s->reftable_used = i + 1;
	}
	free(buf);
	return 0;
}

/* The refcount block offset for @cluster, 0 if none; -EIO if the table entry is bogus. */
static int64_t rb_offset(struct vs_node *node, uint64_t cluster)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t idx = cluster >> s->rb_bits;
	uint64_t off;

	if (idx >= s->reftable_size)
		return 0;
	off = s->reftable[idx];
	if (!off)
		return 0;
	if (off & (s->cluster_size - 1)) {
		qcow2_mark_corrupt(node, "refcount block offset unaligned", off);
		return -EIO;
	}
	return (int64_t)off;
}

int qcow2_refcount_get(struct vs_node *node, uint64_t cluster, uint64_t *rc)
{
	struct qcow2_state *s = qcow2_state(node);
	int64_t off = rb_offset(node, cluster);
	void *rb;
	int ret;

	*rc = 0;
	if (off <= 0)
		return (int)off;
	ret = qcow2_cache_get(node, s->rb_cache, (uint64_t)off, &rb);
	if (ret < 0)
		return ret;
	*rc = qcow2_rb_entry_get(s, rb, cluster & ((1ull << s->rb_bits) - 1));
	qcow2_cache_put(s->rb_cache, &rb);
	return 0;
}

/* [off, off+len) is in use again: drop it from the clusters waiting for a punch. */
static void punch_forget(struct qcow2_state *s, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < s->npunch; i++) {
		uint64_t a = s->punch[i].off, b = a + s->punch[i].len;

		if (off >= b || off + len <= a)
			continue;
		if (off <= a && off + len >= b) {
			s->punch[i--] = s->punch[--s->npunch]; /* covered: gone */
		} else if (off <= a) {
			s->punch[i].off = off + len; /* the head goes */
			s->punch[i].len = b - (off + len);
		} else if (off + len >= b) {
			s->punch[i].len = off - a; /* the tail goes */
		} else if (s->npunch < QCOW2_PUNCH_MAX) {
			/* The middle goes: the tail becomes a range of its own. */
			s->punch[s->npunch].off = off + len;
			s->punch[s->npunch].len = b - (off + len);
			s->npunch++;
			s->punch[i].len = off - a;
		} else {
			s->punch[i].len = off - a; /* no room: the tail is not punched */
		}
	}
}

int qcow2_refcount_update(struct vs_node *node, uint64_t offset, uint64_t len, int64_t delta)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t first = offset >> s->cluster_bits;
	uint64_t last = (offset + len - 1) >> s->cluster_bits;
	uint64_t mask = (1ull << s->rb_bits) - 1;
	void *rb = NULL;
	uint64_t rb_off = 0;
	int ret = 0;

	if (!len)
		return 0;
	for (uint64_t c = first; c <= last; c++) {
		int64_t off = rb_offset(node, c);
		uint64_t v;

		if (off < 0) {
			ret = (int)off;
			break;
		}
		if (off == 0) {
			ret = qcow2_mark_corrupt(node,
						 "refcount update of a cluster without "
						 "refcount block",
						 c << s->cluster_bits);
			break;
		}
		if ((uint64_t)off != rb_off) {
			qcow2_cache_put(s->rb_cache, &rb);
			ret = qcow2_cache_get(node, s->rb_cache, (uint64_t)off, &rb);
			if (ret < 0)
				break;
			rb_off = (uint64_t)off;
		}
		v = qcow2_rb_entry_get(s, rb, c & mask);
		if ((delta < 0 && v < (uint64_t)-delta) ||
		    (delta > 0 && s->refcount_max - v < (uint64_t)delta)) {
			ret = qcow2_mark_corrupt(
				node, delta < 0 ? "refcount underflow" : "refcount overflow",
				c << s->cluster_bits);
			break;
		}
		if (v == 0 && delta > 0 && s->npunch)
			punch_forget(s, c << s->cluster_bits, s->cluster_size);
		v += (uint64_t)delta;
		qcow2_rb_entry_set(s, rb, c & mask, v);
		qcow2_cache_mark_dirty(s->rb_cache, rb);
		if (v == 0 && c < s->free_hint)
			s->free_hint = c;
		if (v == 0)
			for (int i = 0; i < QCOW2_CBYTE_SLOTS; i++)
				if (s->cslot[i].next && (s->cslot[i].next >> s->cluster_bits) == c)
					s->cslot[i].next = 0;
	}
	qcow2_cache_put(s->rb_cache, &rb);
	return ret;
}

/*
 * The first run of @n clusters with refcount 0 at or after s->free_hint.
 * Clusters no refcount block covers count as free.
 */
static int find_free(struct vs_node *node, uint64_t n, uint64_t *start)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t c = s->free_hint, run = 0, first_free = UINT64_MAX;
	int ret;

	/* Cluster 0 is always the header. */
	if (c == 0)
		c = 1;
	for (;; c++) {
		uint64_t rc;

		ret = qcow2_refcount_get(node, c, &rc);
		if (ret < 0)
			return ret;
		if (rc) {
			run = 0;
			continue;
		}
		if (first_free == UINT64_MAX)
			first_free = c;
		if (++run == n)
			break;
	}
	*start = c + 1 - n;
	s->free_hint = first_free;
	return 0;
}

static int reftable_write_entry(struct vs_node *node, uint64_t idx)
{
	struct qcow2_state *s = qcow2_state(node);

	return qcow2_write_table_entry(node, QCOW2_META_REFTABLE, s->reftable_offset, idx,
				       s->reftable[idx]);
}

/*
 * Grow the refcount table so that it covers block index @b. The new table
 * and the refcount blocks it needs for itself go to a free run; blocks
 * created for them describe themselves too.
 */
static int reftable_grow(struct vs_node *node, uint64_t b)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t per_cluster = s->cluster_size / 8;
	uint64_t new_entries, table_clusters, start = 0, m = 0, nb_new = 0, end;
	uint64_t *new_blocks = NULL, *new_table = NULL;
	uint64_t old_offset = s->reftable_offset, old_clusters = s->hdr.refcount_table_clusters;
	uint8_t *buf = NULL;
	int ret;

	new_entries = s->reftable_size + s->reftable_size / 2;
	if (new_entries < b + 1)
		new_entries = b + 1;
	for (int iter = 0;; iter++) {
		uint64_t need = 0;

		table_clusters = (new_entries + per_cluster - 1) / per_cluster;
		if (table_clusters > QCOW2_MAX_REFTABLE_SIZE >> s->cluster_bits)
			return -EFBIG;
		ret = find_free(node, table_clusters + m, &start);
		if (ret < 0)
			return ret;
		end = start + table_clusters + m;
		for (uint64_t bb = start >> s->rb_bits; bb <= (end - 1) >> s->rb_bits; bb++) {
			if (bb >= s->reftable_size || !s->reftable[bb])
				need++;
			if (bb + 1 > new_entries)
				new_entries = bb + 1;
		}
		if (need <= m && table_clusters * per_cluster >= new_entries)
			break;
		if (iter > 16)
			return -EIO;
		m = need > m ? need : m;
	}
	new_entries = table_clusters * per_cluster;

	new_blocks = calloc(m ? m : 1, sizeof(uint64_t));
	new_table = calloc(new_entries, sizeof(uint64_t));
	buf = vs_buf_zalloc(table_clusters << s->cluster_bits);
	if (!new_blocks || !new_table || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(new_table, s->reftable, s->reftable_size * sizeof(uint64_t));

	/* Assign the missing blocks to the clusters after the table. */
	for (uint64_t bb = start >> s->rb_bits; bb <= (end - 1) >> s->rb_bits; bb++) {
		if (!new_table[bb]) {
			uint64_t p = start + table_clusters + nb_new;
			void *rb;

			new_table[bb] = p << s->cluster_bits;
			new_blocks[nb_new++] = bb;
			ret = qcow2_cache_get_empty(node, s->rb_cache, p << s->cluster_bits, &rb);
			if (ret < 0)
				goto out;
			qcow2_cache_mark_dirty(s->rb_cache, rb);
			qcow2_cache_put(s->rb_cache, &rb);
		}
	}
	/* Account for the table and the new blocks. */
	for (uint64_t c = start; c < start + table_clusters + nb_new; c++) {
		uint64_t bb = c >> s->rb_bits;
		void *rb;

		ret = qcow2_cache_get(node, s->rb_cache, new_table[bb], &rb);
		if (ret < 0)
			goto out;
		qcow2_rb_entry_set(s, rb, c & ((1ull << s->rb_bits) - 1),
				   qcow2_rb_entry_get(s, rb, c & ((1ull << s->rb_bits) - 1)) + 1);
		qcow2_cache_mark_dirty(s->rb_cache, rb);
		qcow2_cache_put(s->rb_cache, &rb);
	}
	ret = qcow2_cache_flush(node, s->rb_cache);
	if (ret < 0)
		goto out;

	for (uint64_t i = 0; i < new_entries; i++)
		vs_put_be64(buf + 8 * i, new_table[i]);
	ret = qcow2_overlap_check(node, 0, start << s->cluster_bits,
				  table_clusters << s->cluster_bits);
	if (ret < 0)
		goto out;
	ret = vs_node_pwrite(node->file, start << s->cluster_bits, buf,
			     table_clusters << s->cluster_bits, 0);
	if (ret < 0)
		goto out;
	ret = vs_node_flush(node->file);
	if (ret < 0)
		goto out;

	struct qcow2_header h = s->hdr;

	h.refcount_table_offset = start << s->cluster_bits;
	h.refcount_table_clusters = (uint32_t)table_clusters;
	ret = qcow2_header_set(node, &h);
	if (ret < 0)
		goto out;
	free(s->reftable);
	s->reftable = new_table;
	new_table = NULL;
	s->reftable_size = new_entries;
	for (uint64_t i = s->reftable_used; i < new_entries; i++)
		if (s->reftable[i])
			s->reftable_used = i + 1;
	s->reftable_offset = start << s->cluster_bits;
	ret = qcow2_free_clusters(node, old_offset, old_clusters << s->cluster_bits, false);
out:
	free(new_blocks);
	free(new_table);
	free(buf);
	return ret;
}

int64_t qcow2_alloc_clusters(struct vs_node *node, uint64_t n)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t start, m = 0, need;
	int ret;

	if (s->corrupt)
		return -EIO;
	/*
	 * A freed cluster may only take new data once no L2 entry on disk
	 * points to it any more: otherwise a crash leaves the old entry
	 * reading the new owner's bytes (a compressed or shared cluster that
	 * was overwritten would read neither its old nor its new content).
	 */
	if (s->free_pending) {
		ret = qcow2_cache_flush(node, s->l2_cache);
		if (ret < 0)
			return ret;
		s->free_pending = false;
	}
	/*
	 * Find a free run for the data plus the refcount blocks that are
	 * missing for the run: the new blocks go first in the run, so that
	 * placing them never breaks the run apart.
	 */
	for (int iter = 0;; iter++) {
		uint64_t end;

		ret = find_free(node, n + m, &start);
		if (ret < 0)
			return ret;
		end = start + n + m;
		if (end > (UINT64_C(1) << (56 - s->cluster_bits)))
			return -EFBIG;
		if (((end - 1) >> s->rb_bits) >= s->reftable_size) {
			ret = reftable_grow(node, (end - 1) >> s->rb_bits);
			if (ret < 0)
				return ret;
			m = 0;
			continue;
		}
		need = 0;
		for (uint64_t b = start >> s->rb_bits; b <= (end - 1) >> s->rb_bits; b++)
			if (!s->reftable[b])
				need++;
		if (need <= m)
			break;
		if (iter > 64)
			return -EIO;
		m = need;
	}
	if (need) {
		uint64_t p = start, first = start >> s->rb_bits,
			 last = (start + n + m - 1) >> s->rb_bits;

		for (uint64_t b = first; b <= last; b++) {
			void *rb;

			if (s->reftable[b])
				continue;
			ret = qcow2_cache_get_empty(node, s->rb_cache, p << s->cluster_bits, &rb);
			if (ret < 0)
				return ret;
			qcow2_cache_mark_dirty(s->rb_cache, rb);
			qcow2_cache_put(s->rb_cache, &rb);
			s->reftable[b] = p << s->cluster_bits;
			if (b + 1 > s->reftable_used)
				s->reftable_used = b + 1;
			p++;
		}
		/* The new blocks account for themselves (they all lie in covered blocks now). */
		ret = qcow2_refcount_update(node, start << s->cluster_bits, need << s->cluster_bits,
					    1);
		if (ret < 0)
			return ret;
		/* Blocks on disk before the table entries that point to them. */
		ret = qcow2_cache_flush(node, s->rb_cache);
		if (ret < 0)
			return ret;
		for (uint64_t b = first; b <= last; b++) {
			if (s->reftable[b] >= (start << s->cluster_bits) &&
			    s->reftable[b] < (p << s->cluster_bits)) {
				ret = reftable_write_entry(node, b);
				if (ret < 0)
					return ret;
			}
		}
		start += need;
	}
	ret = qcow2_refcount_update(node, start << s->cluster_bits, n << s->cluster_bits, 1);
	if (ret < 0)
		return ret;
	return (int64_t)(start << s->cluster_bits);
}

/*
 * Take the cluster at @offset if it is free and a refcount block already
 * covers it: 1 taken, 0 not possible, or -errno.
 */
static int alloc_cluster_at(struct vs_node *node, uint64_t offset)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t c = offset >> s->cluster_bits, b = c >> s->rb_bits, rc;
	int ret;

	if (b >= s->reftable_size || !s->reftable[b] ||
	    c + 1 > (UINT64_C(1) << (56 - s->cluster_bits)))
		return 0;
	ret = qcow2_refcount_get(node, c, &rc);
	if (ret < 0 || rc)
		return ret < 0 ? ret : 0;
	/* As in qcow2_alloc_clusters(): no L2 entry on disk may still point here. */
	if (s->free_pending) {
		ret = qcow2_cache_flush(node, s->l2_cache);
		if (ret < 0)
			return ret;
		s->free_pending = false;
	}
	ret = qcow2_refcount_update(node, offset, s->cluster_size, 1);
	return ret < 0 ? ret : 1;
}

/* Give back slot @i's reserved cluster, if it has one. */
static int release_slot(struct vs_node *node, int i)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t r = s->cslot[i].reserved;

	if (!r)
		return 0;
	s->cslot[i].reserved = 0;
	return qcow2_refcount_update(node, r, s->cluster_size, -1);
}

int qcow2_release_reservations(struct vs_node *node)
{
	int ret = 0;

	for (int i = 0; i < QCOW2_CBYTE_SLOTS; i++) {
		int r = release_slot(node, i);

		if (r < 0 && ret == 0)
			ret = r;
	}
	return ret;
}

/* Slot @i took @len bytes at its next free byte: move on, and reserve ahead. */
static int slot_advance(struct vs_node *node, int i, uint64_t off, uint64_t len)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size, end = off + len;
	int ret;

	if (!(end & (cs - 1))) {
		/* Exactly full: the slot is done, and so is its reservation. */
		s->cslot[i].next = 0;
		return release_slot(node, i);
	}
	s->cslot[i].next = end;
	if (!s->cslot[i].reserved) {
		uint64_t after = (end & ~(cs - 1)) + cs;

		ret = alloc_cluster_at(node, after);
		if (ret < 0)
			return ret;
		if (ret == 1)
			s->cslot[i].reserved = after;
	}
	return 0;
}

/*
 * Byte-granular allocation for compressed data, as QEMU packs it: @len
 * bytes (a multiple of the packing unit, at most a cluster) go at the next
 * free byte of a host cluster being filled when they fit there, or run on
 * into the cluster after it when that one is reserved for the slot or free;
 * otherwise they start a new cluster, which replaces the slot with the least
 * room left. Every host cluster the bytes touch gains one reference, which
 * is what freeing a compressed entry drops.
 */
int64_t qcow2_alloc_bytes(struct vs_node *node, uint64_t len)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	int victim = -1;
	int64_t nw;
	int ret;

	if (!len || len > cs)
		return -EINVAL;
	for (int i = 0; i < QCOW2_CBYTE_SLOTS; i++) {
		uint64_t off = s->cslot[i].next, cur = off & ~(cs - 1), rc;

		if (!off) {
			ret = release_slot(node, i);
			if (ret < 0)
				return ret;
			continue;
		}
		ret = qcow2_refcount_get(node, cur >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		/* A full refcount (e.g. refcount_bits=1) cannot take another user. */
		if (rc == 0 || rc >= s->refcount_max) {
			s->cslot[i].next = 0;
			ret = release_slot(node, i);
			if (ret < 0)
				return ret;
			continue;
		}
		if (off + len <= cur + cs) {
			ret = qcow2_refcount_update(node, cur, cs, 1);
			if (ret < 0)
				return ret;
			ret = slot_advance(node, i, off, len);
			return ret < 0 ? ret : (int64_t)off;
		}
		/* Run on into the reserved cluster (its reference is the piece's now). */
		if (s->cslot[i].reserved == cur + cs) {
			ret = qcow2_refcount_update(node, cur, cs, 1);
			if (ret < 0)
				return ret;
			s->cslot[i].reserved = 0;
			ret = slot_advance(node, i, off, len);
			return ret < 0 ? ret : (int64_t)off;
		}
	}
	/* Or into the cluster after a slot's when that one happens to be free. */
	for (int i = 0; i < QCOW2_CBYTE_SLOTS; i++) {
		uint64_t off = s->cslot[i].next, cur = off & ~(cs - 1);

		uint64_t rc;

		if (!off || s->cslot[i].reserved)
			continue;
		ret = qcow2_refcount_get(node, cur >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		if (rc == 0 || rc >= s->refcount_max)
			continue;
		ret = alloc_cluster_at(node, cur + cs);
		if (ret < 0)
			return ret;
		if (ret == 0)
			continue;
		ret = qcow2_refcount_update(node, cur, cs, 1);
		if (ret < 0) {
			(void)qcow2_free_clusters(node, cur + cs, cs, false);
			return ret;
		}
		ret = slot_advance(node, i, off, len);
		return ret < 0 ? ret : (int64_t)off;
	}
	nw = qcow2_alloc_clusters(node, 1);
	if (nw < 0)
		return nw;
	/* A new slot: an unused one, or the one with the least room left. */
	for (int i = 0; i < QCOW2_CBYTE_SLOTS; i++) {
		if (!s->cslot[i].next) {
			victim = i;
			break;
		}
		if (victim < 0 ||
		    (s->cslot[i].next & (cs - 1)) > (s->cslot[victim].next & (cs - 1)))
			victim = i;
	}
	ret = release_slot(node, victim);
	if (ret < 0)
		return ret;
	s->cslot[victim].next = (uint64_t)nw;
	ret = slot_advance(node, victim, (uint64_t)nw, len);
	return ret < 0 ? ret : nw;
}

/*
 * Lock held. Punch the clusters waiting for it: first the metadata that
 * stopped pointing at them and the file are flushed, then every range
 * whose clusters are still free is discarded in the file.
 */
int qcow2_punch_pending(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t fsize = vs_node_size(node->file);
	int ret;

	if (!s->npunch)
		return 0;
	ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0)
		return ret;
	/* The list may change under the I/O below only by this loop. */
	while (s->npunch) {
		uint64_t off = s->punch[s->npunch - 1].off, len = s->punch[s->npunch - 1].len;

		s->npunch--;
		for (uint64_t c = off; c < off + len && c < fsize; c += s->cluster_size) {
			uint64_t rc;

			ret = qcow2_refcount_get(node, c >> s->cluster_bits, &rc);
			if (ret < 0)
				return ret;
			if (rc == 0) /* advisory: a failed punch only keeps the space */
				(void)vs_node_discard(node->file, c, s->cluster_size);
		}
	}
	return 0;
}

int qcow2_free_clusters(struct vs_node *node, uint64_t offset, uint64_t len, bool punch)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t first, last;
	int ret;

	if (!len)
		return 0;
	ret = qcow2_refcount_update(node, offset, len, -1);
	if (ret < 0 || !punch)
		return ret;
	/* Give the space of clusters nobody references any more back to the host, later. */
	first = offset >> s->cluster_bits;
	last = (offset + len - 1) >> s->cluster_bits;
	for (uint64_t c = first; c <= last; c++) {
		uint64_t rc, o = c << s->cluster_bits;

		ret = qcow2_refcount_get(node, c, &rc);
		if (ret < 0)
			return ret;
		if (rc)
			continue;
		if (s->npunch && s->punch[s->npunch - 1].off + s->punch[s->npunch - 1].len == o) {
			s->punch[s->npunch - 1].len += s->cluster_size;
			continue;
		}
		if (s->npunch == QCOW2_PUNCH_MAX) {
			ret = qcow2_punch_pending(node);
			if (ret < 0)
				return ret;
		}
		s->punch[s->npunch].off = o;
		s->punch[s->npunch].len = s->cluster_size;
		s->npunch++;
	}
	return 0;
}

int qcow2_shrink_file(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t per_block = UINT64_C(1) << s->rb_bits, end = 0;
	int ret;

	ret = qcow2_punch_pending(node);
	if (ret == 0)
		ret = qcow2_flush_metadata(node);
	if (ret < 0)
		return ret;
	/* 1: refcount blocks that count nothing but (maybe) themselves go. */
	for (uint64_t i = 0; i < s->reftable_used; i++) {
		uint64_t off = s->reftable[i], self = off >> s->cluster_bits;
		bool unused = true;
		void *rb;

		if (!off)
			continue;
		ret = qcow2_cache_get(node, s->rb_cache, off, &rb);
		if (ret < 0)
			return ret;
		for (uint64_t j = 0; j < per_block && unused; j++)
			if ((i << s->rb_bits) + j != self && qcow2_rb_entry_get(s, rb, j))
				unused = false;
		qcow2_cache_put(s->rb_cache, &rb);
		if (!unused)
			continue;
		/*
		 * The table entry goes first: a crash before the block's own
		 * refcount drops leaves a leak, never a block in use counted free.
		 */
		s->reftable[i] = 0;
		ret = reftable_write_entry(node, i);
		if (ret == 0)
			ret = vs_node_flush(node->file);
		if (ret < 0) {
			s->reftable[i] = off;
			return ret;
		}
		qcow2_cache_discard(s->rb_cache, off);
		if (self >> s->rb_bits != i) {
			ret = qcow2_refcount_update(node, off, s->cluster_size, -1);
			if (ret < 0)
				return ret;
		}
	}
	while (s->reftable_used && !s->reftable[s->reftable_used - 1])
		s->reftable_used--;
	ret = qcow2_flush_metadata(node);
	if (ret < 0)
		return ret;
	/* 2: the file ends after the last cluster in use. */
	for (uint64_t i = s->reftable_used; i-- > 0 && !end;) {
		void *rb;

		if (!s->reftable[i])
			continue;
		ret = qcow2_cache_get(node, s->rb_cache, s->reftable[i], &rb);
		if (ret < 0)
			return ret;
		for (uint64_t j = per_block; j-- > 0;) {
			if (qcow2_rb_entry_get(s, rb, j)) {
				end = ((i << s->rb_bits) + j + 1) << s->cluster_bits;
				break;
			}
		}
		qcow2_cache_put(s->rb_cache, &rb);
	}
	if (s->free_hint > end >> s->cluster_bits)
		s->free_hint = end >> s->cluster_bits;
	if (end && end < vs_node_size(node->file)) {
		ret = vs_node_truncate(node->file, end, VS_PREALLOC_OFF, true, NULL);
		if (ret < 0)
			vs_warn("qcow2: '%s': could not cut the file's tail: %s", node->filename,
				strerror(-ret));
	}
	return 0;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

const char *qcow2_overlap_find(struct vs_node *node, unsigned ignore, uint64_t offset, uint64_t len)
{
	struct qcow2_state *s = qcow2_state(node);
	const char *what = NULL;

	if (!(ignore & QCOW2_META_HEADER) && overlaps(offset, len, 0, s->cluster_size))
		what = "qcow2 header";
	else if (!(ignore & QCOW2_META_L1) &&
		 overlaps(offset, len, s->l1_offset, s->l1_size * 8ull))
		what = "active L1 table";
	else if (!(ignore & QCOW2_META_REFTABLE) &&
		 overlaps(offset, len, s->reftable_offset, s->reftable_size * 8))
		what = "refcount table";
	else if (!(ignore & QCOW2_META_SNAPSHOTS) &&
		 overlaps(offset, len, s->hdr.snapshots_offset, s->snap_table_size))
		what = "snapshot table";
	if (!what && !(ignore & QCOW2_META_REFBLOCK)) {
		/* Only up to the last block in use: every data write passes here. */
		for (uint64_t i = 0; i < s->reftable_used; i++) {
			if (overlaps(offset, len, s->reftable[i],
				     s->reftable[i] ? s->cluster_size : 0)) {
				what = "refcount block";
				break;
			}
		}
	}
	if (!what && !(ignore & QCOW2_META_L2)) {
		for (uint32_t i = 0; i < s->l1_size; i++) {
			uint64_t l2 = s->l1[i] & QCOW2_L1E_OFFSET_MASK;

			if (l2 && overlaps(offset, len, l2, s->cluster_size)) {
				what = "active L2 table";
				break;
			}
		}
	}
	if (!what && !(ignore & QCOW2_META_INACTIVE_L1)) {
		for (unsigned i = 0; i < s->nb_snaps; i++) {
			if (overlaps(offset, len, s->snaps[i].l1_table_offset,
				     s->snaps[i].l1_size * 8ull)) {
				what = "inactive L1 table";
				break;
			}
		}
	}
	return what;
}

int qcow2_overlap_check(struct vs_node *node, unsigned ignore, uint64_t offset, uint64_t len)
{
	const char *what = qcow2_overlap_find(node, ignore, offset, len);

	return what ? qcow2_mark_corrupt(node, what, offset) : 0;
}
