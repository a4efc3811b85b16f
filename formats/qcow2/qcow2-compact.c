/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 offline compaction (vstor-img compact): move the data clusters of
 * the image down into the holes that discarded and zeroed clusters left,
 * then truncate the file.
 *
 * Crash safety comes from a shadow copy switched by one header write:
 *  1. every new cluster (moved data, new L2 tables, a new L1 table, new
 *     refcount table and blocks) goes into a cluster nothing references
 *     in the current image, so the current image stays valid throughout;
 *  2. the data is copied, the new metadata written, everything flushed;
 *  3. the header is rewritten to name the new L1 and refcount tables (one
 *     write of the first header bytes) and flushed;
 *  4. the file is truncated after the last cluster the new image uses.
 * A crash before 3 leaves the old image (with unreferenced garbage in its
 * holes); after 3, the new one (with a longer file than needed before 4).
 *
 * The header cluster and clusters holding compressed data stay in place
 * (compressed clusters share host clusters). Images with internal
 * snapshots are refused: their clusters are shared between L1 tables.
 * Persistent bitmaps are taken off the disk first and stored again, in new
 * clusters, when the image is closed.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-check.h"

#define COMPACT_COPY_MAX (2u << 20)

enum compact_kind {
	CK_FREE = 0, /* referenced by nothing: may be written before the switch */
	CK_PINNED,   /* header, compressed data: stays where it is */
	CK_DATA,     /* a data cluster (stays, or moves if reloc is set) */
	CK_OLDMETA,  /* old L1, L2, refcount table or block: free after the switch */
	CK_NEW,	     /* allocated for the new image */
};

struct compact {
	struct vs_node *node;
	struct qcow2_state *s;
	uint64_t cs;
	uint64_t cap;	 /* clusters tracked: everything old and new lies below */
	uint8_t *kind;	 /* per cluster */
	uint64_t *reloc; /* per data cluster: new cluster index, 0 = stays */
	uint64_t *l2new; /* per L1 index: new L2 table cluster, 0 = none */
	uint64_t rt, rt_n, nb_blocks, *rb;
	uint64_t l1new, l1c;
	uint64_t cursor; /* allocation search start */
	uint64_t moved;
	uint8_t *buf; /* one cluster */
};

/* The lowest run of @n clusters free in the old image; 0 when there is none. */
static uint64_t compact_alloc(struct compact *c, uint64_t n)
{
	for (uint64_t i = c->cursor; i + n <= c->cap; i++) {
		uint64_t j = 0;

		while (j < n && c->kind[i + j] == CK_FREE)
			j++;
		if (j < n) {
			i += j;
			continue;
		}
		memset(c->kind + i, CK_NEW, n);
		if (n == 1 || i == c->cursor)
			while (c->cursor < c->cap && c->kind[c->cursor] != CK_FREE)
				c->cursor++;
		return i;
	}
	return 0;
}

static int mark(struct compact *c, uint64_t off, uint64_t n, enum compact_kind k)
{
	uint64_t first = off / c->cs;

	if (first + n > c->cap || first + n < first)
		return -EIO;
	for (uint64_t i = first; i < first + n; i++) {
		/* Compressed clusters may share host clusters with each other. */
		if (c->kind[i] != CK_FREE && !(k == CK_PINNED && c->kind[i] == CK_PINNED))
			return -EIO;
		c->kind[i] = (uint8_t)k;
	}
	return 0;
}

static uint64_t l2e_get(const struct compact *c, const uint8_t *l2, uint64_t j)
{
	return vs_be64(l2 + j * c->s->l2_entry_size);
}

/* Classify every cluster of the old image. */
static int compact_scan(struct compact *c)
{
	struct qcow2_state *s = c->s;
	int ret;

	c->kind[0] = CK_PINNED;
	ret = s->l1_size ? mark(c, s->l1_offset, ((uint64_t)s->l1_size * 8 + c->cs - 1) / c->cs,
				CK_OLDMETA) :
			   0;
	if (ret == 0)
		ret = mark(c, s->reftable_offset, s->hdr.refcount_table_clusters, CK_OLDMETA);
	for (uint64_t i = 0; ret == 0 && i < s->reftable_size; i++)
		if (s->reftable[i])
			ret = mark(c, s->reftable[i], 1, CK_OLDMETA);
	for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++) {
		uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2off)
			continue;
		ret = mark(c, l2off, 1, CK_OLDMETA);
		if (ret == 0)
			ret = vs_node_pread(c->node->file, l2off, c->buf, c->cs);
		for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
			uint64_t e = l2e_get(c, c->buf, j), host;

			if (e & QCOW2_OFLAG_COMPRESSED) {
				uint64_t d = e & ~(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_COMPRESSED);
				uint64_t off = d & ((1ull << s->csize_shift) - 1);
				uint64_t len = (((d >> s->csize_shift) & s->csize_mask) + 1) * 512 -
					       (off & 511);
				uint64_t first = off & ~(c->cs - 1);
				uint64_t end = (off + len + c->cs - 1) & ~(c->cs - 1);

				ret = mark(c, first, (end - first) / c->cs, CK_PINNED);
				continue;
			}
			host = e & QCOW2_L2E_OFFSET_MASK;
			if (host)
				ret = mark(c, host, 1, CK_DATA);
		}
	}
	return ret;
}

/* Place the new metadata, then move data down from the end into the lowest holes. */
static int compact_plan(struct compact *c)
{
	struct qcow2_state *s = c->s;
	uint64_t hi, *dsts;

	c->cursor = 1;
	c->rt = compact_alloc(c, c->rt_n);
	for (uint64_t b = 0; c->rt && b < c->nb_blocks; b++)
		if (!(c->rb[b] = compact_alloc(c, 1)))
			return -ENOSPC;
	c->l1new = compact_alloc(c, c->l1c);
	if (!c->rt || !c->l1new)
		return -ENOSPC;
	for (uint32_t i = 0; i < s->l1_size; i++)
		if ((s->l1[i] & QCOW2_L1E_OFFSET_MASK) && !(c->l2new[i] = compact_alloc(c, 1)))
			return -ENOSPC;
	/*
	 * Two fingers: the highest data clusters go to the lowest holes. Then
	 * the moved clusters keep their order: the i-th lowest source goes to
	 * the i-th lowest destination (every destination is still below every
	 * source), so the data does not end up reversed.
	 */
	dsts = malloc(64 * sizeof(uint64_t));
	if (!dsts)
		return -ENOMEM;
	hi = c->cap;
	while (hi-- > c->cursor) {
		uint64_t dst, *grown;

		if (c->kind[hi] != CK_DATA)
			continue;
		dst = compact_alloc(c, 1);
		if (!dst) {
			free(dsts);
			return -ENOSPC;
		}
		if (dst > hi) {
			c->kind[dst] = CK_FREE; /* no lower hole left */
			break;
		}
		if (!(c->moved & (c->moved + 1)) && c->moved >= 63) {
			grown = realloc(dsts, 2 * (c->moved + 1) * sizeof(uint64_t));
			if (!grown) {
				free(dsts);
				return -ENOMEM;
			}
			dsts = grown;
		}
		dsts[c->moved++] = dst;
		c->reloc[hi] = 1; /* a source; its destination follows */
	}
	for (uint64_t i = 0, k = 0; i < c->cap && k < c->moved; i++)
		if (c->kind[i] == CK_DATA && c->reloc[i])
			c->reloc[i] = dsts[k++];
	free(dsts);
	return 0;
}

/* One past the last cluster the new image uses. */
static uint64_t compact_new_end(const struct compact *c)
{
	for (uint64_t i = c->cap; i-- > 0;) {
		if (c->kind[i] == CK_PINNED || c->kind[i] == CK_NEW ||
		    (c->kind[i] == CK_DATA && !c->reloc[i]))
			return i + 1;
	}
	return 1;
}

static int compact_copy_data(struct compact *c, vs_progress_fn *progress, void *opaque)
{
	uint8_t *buf = vs_buf_alloc(COMPACT_COPY_MAX);
	uint64_t per = COMPACT_COPY_MAX / c->cs, done = 0;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < c->cap && ret == 0;) {
		uint64_t n = 1;

		if (c->kind[i] != CK_DATA || !c->reloc[i]) {
			i++;
			continue;
		}
		while (n < per && i + n < c->cap && c->kind[i + n] == CK_DATA &&
		       c->reloc[i + n] == c->reloc[i] + n)
			n++;
		ret = vs_node_pread(c->node->file, i * c->cs, buf, n * c->cs);
		if (ret == 0)
			ret = vs_node_pwrite(c->node->file, c->reloc[i] * c->cs, buf, n * c->cs, 0);
		i += n;
		done += n;
		if (progress)
			progress(done, c->moved, opaque);
	}
	free(buf);
	return ret;
}

static int compact_write_tables(struct compact *c)
{
	struct qcow2_state *s = c->s;
	uint64_t l1bytes = c->l1c * c->cs;
	uint8_t *l1 = vs_buf_zalloc(l1bytes);
	int ret = 0;

	if (!l1)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->l1_size && ret == 0; i++) {
		uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2off)
			continue;
		ret = vs_node_pread(c->node->file, l2off, c->buf, c->cs);
		for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
			uint64_t e = l2e_get(c, c->buf, j), host = e & QCOW2_L2E_OFFSET_MASK;

			if ((e & QCOW2_OFLAG_COMPRESSED) || !host || !c->reloc[host / c->cs])
				continue;
			e = (e & ~QCOW2_L2E_OFFSET_MASK) | (c->reloc[host / c->cs] * c->cs);
			vs_put_be64(c->buf + j * s->l2_entry_size, e);
		}
		if (ret == 0)
			ret = vs_node_pwrite(c->node->file, c->l2new[i] * c->cs, c->buf, c->cs, 0);
		vs_put_be64(l1 + 8 * i, (c->l2new[i] * c->cs) | QCOW2_OFLAG_COPIED);
	}
	if (ret == 0)
		ret = vs_node_pwrite(c->node->file, c->l1new * c->cs, l1, l1bytes, 0);
	free(l1);
	return ret;
}

/* The refcounts of the new image: one per used cluster, compressed ones as they were. */
static int compact_write_refcounts(struct compact *c)
{
	struct qcow2_state *s = c->s;
	uint64_t per_block = 1ull << s->rb_bits;
	uint8_t *rt = vs_buf_zalloc(c->rt_n * c->cs);
	int ret = 0;

	if (!rt)
		return -ENOMEM;
	for (uint64_t b = 0; b < c->nb_blocks && ret == 0; b++) {
		memset(c->buf, 0, c->cs);
		for (uint64_t i = 0; i < per_block; i++) {
			uint64_t cl = b * per_block + i, rc = 0;

			if (cl >= c->cap)
				break;
			switch (c->kind[cl]) {
			case CK_PINNED:
				if (cl == 0)
					rc = 1;
				else
					ret = qcow2_refcount_get(c->node, cl, &rc);
				break;
			case CK_NEW:
				rc = 1;
				break;
			case CK_DATA:
				rc = c->reloc[cl] ? 0 : 1;
				break;
			default:
				break;
			}
			if (ret < 0)
				break;
			qcow2_rb_entry_set(s, c->buf, i, rc);
		}
		if (ret == 0)
			ret = vs_node_pwrite(c->node->file, c->rb[b] * c->cs, c->buf, c->cs, 0);
		vs_put_be64(rt + 8 * b, c->rb[b] * c->cs);
	}
	if (ret == 0)
		ret = vs_node_pwrite(c->node->file, c->rt * c->cs, rt, c->rt_n * c->cs, 0);
	free(rt);
	return ret;
}

/* Load the L1 table and the refcount table the header now names. */
static int compact_reload(struct vs_node *node, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint8_t *buf = vs_buf_alloc((size_t)s->l1_size * 8 + 8);
	int ret;

	if (!buf)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	qcow2_cache_drop_all(s->l2_cache);
	qcow2_cache_drop_all(s->rb_cache);
	ret = vs_node_pread(node->file, s->hdr.l1_table_offset, buf, (size_t)s->l1_size * 8);
	if (ret < 0) {
		free(buf);
		return vs_error_setf_errno(err, ret, "Could not read the new L1 table");
	}
	for (uint32_t i = 0; i < s->l1_size; i++)
		s->l1[i] = vs_be64(buf + 8 * i);
	free(buf);
	s->l1_offset = s->hdr.l1_table_offset;
	free(s->reftable);
	s->reftable = NULL;
	s->free_hint = 0;
	return qcow2_refcount_load(node, err);
}

static int compact_locked(struct vs_node *node, vs_progress_fn *progress, void *opaque,
			  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct compact c = { .node = node, .s = s, .cs = s->cluster_size };
	struct vs_check_result res;
	uint64_t n, per_block = 1ull << s->rb_bits, per_table = s->cluster_size / 8;
	uint64_t nl2 = 0, last = 0, end;
	struct qcow2_header h;
	int ret;

	if (s->nb_snaps)
		return vs_error_set(err, -ENOTSUP,
				    "Cannot compact '%s': it has internal snapshots, whose "
				    "clusters are shared; delete them first",
				    node->filename);
	if (s->corrupt)
		return vs_error_set(err, -EIO, "'%s' is marked corrupt", node->filename);
	qcow2_drain_unlocked(s);
	/* Their clusters would move under them: the bitmaps are stored again on close. */
	ret = qcow2_bitmaps_release(node);
	if (ret < 0)
		return vs_error_setf_errno(err, ret,
					   "Could not take the bitmaps of '%s' off the disk",
					   node->filename);
	ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not write back the metadata");
	memset(&res, 0, sizeof(res));
	ret = qcow2_check_image(node->file, &res, 0, err);
	if (ret < 0)
		return ret;
	if (res.corruptions || res.check_errors)
		return vs_error_set(err, -EIO,
				    "'%s' has errors; run 'vstor-img check -r all' before "
				    "compacting it",
				    node->filename);

	n = (vs_node_size(node->file) + c.cs - 1) / c.cs;
	c.l1c = ((uint64_t)s->l1_size * 8 + c.cs - 1) / c.cs;
	if (!c.l1c)
		c.l1c = 1;
	for (uint32_t i = 0; i < s->l1_size; i++)
		nl2 += !!(s->l1[i] & QCOW2_L1E_OFFSET_MASK);
	/* Room for everything old and new: the refcount structures cover all of it. */
	do {
		last = c.nb_blocks + c.rt_n;
		c.cap = n + c.l1c + nl2 + c.nb_blocks + c.rt_n + 1;
		c.nb_blocks = (c.cap + per_block - 1) / per_block;
		c.rt_n = (c.nb_blocks + per_table - 1) / per_table;
	} while (c.nb_blocks + c.rt_n != last);
	c.cap = n + c.l1c + nl2 + c.nb_blocks + c.rt_n + 1;
	if (c.cap > c.nb_blocks * per_block)
		c.cap = c.nb_blocks * per_block;
	if (c.rt_n * c.cs > QCOW2_MAX_REFTABLE_SIZE)
		return vs_error_set(err, -EFBIG, "The image is too large to compact");

	c.kind = calloc(c.cap, 1);
	c.reloc = calloc(c.cap, sizeof(uint64_t));
	c.l2new = calloc(s->l1_size ? s->l1_size : 1, sizeof(uint64_t));
	c.rb = calloc(c.nb_blocks, sizeof(uint64_t));
	c.buf = vs_buf_alloc(c.cs);
	if (!c.kind || !c.reloc || !c.l2new || !c.rb || !c.buf) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	ret = compact_scan(&c);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not map the clusters of '%s'", node->filename);
		goto out;
	}
	ret = compact_plan(&c);
	if (ret < 0) {
		vs_error_set(err, ret, "No room to place the new metadata of '%s'", node->filename);
		goto out;
	}
	end = compact_new_end(&c);
	if (end >= n) {
		/* Nothing to gain: leave the image as it is. */
		if (progress)
			progress(1, 1, opaque);
		ret = 0;
		goto out;
	}

	/* 1-2: data and new metadata where nothing points, then a flush. */
	ret = compact_copy_data(&c, progress, opaque);
	if (ret == 0)
		ret = compact_write_tables(&c);
	if (ret == 0)
		ret = compact_write_refcounts(&c);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not write the compacted layout");
		goto out;
	}
	/* 3: the switch. */
	h = s->hdr;
	h.l1_table_offset = c.l1new * c.cs;
	h.refcount_table_offset = c.rt * c.cs;
	h.refcount_table_clusters = (uint32_t)c.rt_n;
	ret = qcow2_header_set(node, &h);
	if (ret < 0) {
		/*
		 * The write may have reached the file although its flush failed:
		 * the file may name either set of tables, and allocating from
		 * the old refcounts could overwrite the new ones. No more writes
		 * through this node; reopening reads whichever the file says.
		 */
		s->corrupt = true;
		vs_error_setf_errno(err, ret, "Could not update the header");
		goto out;
	}
	ret = compact_reload(node, err);
	if (ret < 0) {
		s->corrupt = true; /* the file is right, our view of it is not */
		goto out;
	}
	/* 4: cut the file after the last cluster in use. */
	ret = vs_node_truncate(node->file, end * c.cs, VS_PREALLOC_OFF, true, err);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0 && !err->msg[0])
		vs_error_setf_errno(err, ret, "Could not truncate '%s'", node->filename);
out:
	free(c.kind);
	free(c.reloc);
	free(c.l2new);
	free(c.rb);
	free(c.buf);
	return ret;
}

int qcow2_compact(struct vs_node *node, vs_progress_fn *progress, void *opaque,
		  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	/* Moving a cluster would change the IV its data was encrypted with (host offset). */
	if (s->hdr.crypt_method)
		return vs_error_set(err, -ENOTSUP, "qcow2: encrypted images cannot be compacted");
	/* Data file clusters sit at their guest offsets: there is nothing to move. */
	if (s->data_file)
		return vs_error_set(err, -ENOTSUP,
				    "qcow2: images with an external data file cannot be compacted");
	vs_co_mutex_lock(&s->lock);
	ret = compact_locked(node, progress, opaque, err);
	vs_co_mutex_unlock(&s->lock);
	return ret;
}
