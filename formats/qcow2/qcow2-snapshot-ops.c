/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshots: create, apply and delete (the table codec is in
 * qcow2-snapshot.c).
 *
 * Crash ordering: a new snapshot's references (refcounts, cleared COPIED
 * flags) reach the disk before the header points to the new table, and a
 * deleted snapshot leaves the table on disk before its references are
 * dropped; so an interruption leaves at most leaked clusters, never a
 * cluster used by two owners with refcount 1.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t l2e_get(const struct qcow2_state *s, const void *l2, uint64_t i)
{
	return vs_be64((const uint8_t *)l2 + i * s->l2_entry_size);
}

static inline void l2e_set(const struct qcow2_state *s, void *l2, uint64_t i, uint64_t e)
{
	vs_put_be64((uint8_t *)l2 + i * s->l2_entry_size, e);
}

/* Host range holding one reference of L2 entry @e; *len = 0 when it has none. */
static void entry_range(const struct qcow2_state *s, uint64_t e, uint64_t *off, uint64_t *len)
{
	if (e & QCOW2_OFLAG_COMPRESSED) {
		uint64_t d = e & ~(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_COMPRESSED);
		uint64_t sectors = ((d >> s->csize_shift) & s->csize_mask) + 1;
		uint64_t o = d & ((1ull << s->csize_shift) - 1);
		uint64_t end = (o & ~511ull) + sectors * 512;

		/* Every host cluster the compressed bytes touch holds one reference. */
		*off = o & ~(s->cluster_size - 1);
		*len = ((end + s->cluster_size - 1) & ~(s->cluster_size - 1)) - *off;
		return;
	}
	*off = e & QCOW2_L2E_OFFSET_MASK;
	*len = *off ? s->cluster_size : 0;
}

enum walk_mode {
	WALK_CHECK,  /* every reference can take one more */
	WALK_INC,    /* +1 (a new snapshot); on the active L1 also clear COPIED */
	WALK_DEC,    /* -1 (a deleted snapshot's L1) */
	WALK_COPIED, /* active L1: COPIED exactly where the refcount is 1 */
};

/* Lock held. Refcount of every cluster of [off, off+len) below the maximum? */
static int check_room(struct vs_node *node, uint64_t off, uint64_t len)
{
	struct qcow2_state *s = qcow2_state(node);

	for (uint64_t c = off >> s->cluster_bits; c < (off + len) >> s->cluster_bits; c++) {
		uint64_t rc;
		int ret = qcow2_refcount_get(node, c, &rc);

		if (ret < 0)
			return ret;
		if (rc >= s->refcount_max)
			return -ERANGE;
	}
	return 0;
}

/* Lock held. Visit the references of entry @e of @l2 per @mode. */
static int walk_entry(struct vs_node *node, void *l2, uint64_t j, enum walk_mode mode, bool active)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t e = l2e_get(s, l2, j), off, len, rc;
	int ret;

	entry_range(s, e, &off, &len);
	if (!len)
		return 0;
	switch (mode) {
	case WALK_CHECK:
		return check_room(node, off, len);
	case WALK_INC:
	case WALK_DEC:
		ret = qcow2_refcount_update(node, off, len, mode == WALK_INC ? 1 : -1);
		if (ret < 0)
			return ret;
		if (mode == WALK_INC && active && (e & QCOW2_OFLAG_COPIED)) {
			l2e_set(s, l2, j, e & ~QCOW2_OFLAG_COPIED);
			qcow2_cache_mark_dirty(s->l2_cache, l2);
		}
		return 0;
	case WALK_COPIED:
		if (e & QCOW2_OFLAG_COMPRESSED)
			return 0;
		ret = qcow2_refcount_get(node, off >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
			l2e_set(s, l2, j,
				rc == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED);
			qcow2_cache_mark_dirty(s->l2_cache, l2);
		}
		return 0;
	}
	return -EINVAL;
}

/*
 * Lock held. Walk every L2 table and cluster reachable from @l1 (@n entries,
 * host order) per @mode. @active: @l1 is s->l1, whose entries are updated
 * on disk as their COPIED flags change.
 */
static int walk_l1(struct vs_node *node, uint64_t *l1, uint32_t n, enum walk_mode mode, bool active)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2off = l1[i] & QCOW2_L1E_OFFSET_MASK, rc, ne;
		void *l2;

		if (!l2off)
			continue;
		if ((l2off & (s->cluster_size - 1)) ||
		    l2off + s->cluster_size > vs_node_size(node->file))
			return qcow2_mark_corrupt(node, "L2 table offset invalid", l2off);
		ret = qcow2_cache_get(node, s->l2_cache, l2off, &l2);
		if (ret < 0)
			return ret;
		for (uint64_t j = 0; j < s->l2_entries && ret == 0; j++)
			ret = walk_entry(node, l2, j, mode, active);
		qcow2_cache_put(s->l2_cache, &l2);
		if (ret < 0)
			return ret;

		switch (mode) {
		case WALK_CHECK:
			ret = check_room(node, l2off, s->cluster_size);
			break;
		case WALK_INC:
		case WALK_DEC:
			ret = qcow2_refcount_update(node, l2off, s->cluster_size,
						    mode == WALK_INC ? 1 : -1);
			if (ret == 0 && mode == WALK_DEC &&
			    qcow2_refcount_get(node, l2off >> s->cluster_bits, &rc) == 0 && !rc)
				qcow2_cache_discard(s->l2_cache, l2off);
			break;
		case WALK_COPIED:
			ret = qcow2_refcount_get(node, l2off >> s->cluster_bits, &rc);
			break;
		}
		if (ret < 0 || !active || mode == WALK_CHECK)
			continue;
		ne = mode == WALK_COPIED && rc == 1 ? l1[i] | QCOW2_OFLAG_COPIED :
						      l1[i] & ~QCOW2_OFLAG_COPIED;
		if (ne != l1[i]) {
			l1[i] = ne;
			ret = qcow2_l1_write_entry(node, i);
		}
		if (ret < 0)
			return ret;
	}
	return ret;
}

/*
 * Lock held. Write @sn[0..@n) as a new snapshot table and point the header
 * to it; the old table is freed. The snapshot array itself is the caller's.
 */
static int write_table(struct vs_node *node, const struct qcow2_snapshot *sn, unsigned n,
		       uint64_t *size_out)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t size = qcow2_snapshots_encoded_size(sn, n);
	uint64_t bytes = (size + s->cluster_size - 1) & ~(s->cluster_size - 1);
	uint64_t old_off = s->hdr.snapshots_offset, old_size = s->snap_table_size;
	uint32_t old_nb = s->hdr.nb_snapshots;
	int64_t off = 0;
	uint8_t *buf = NULL;
	int ret;

	if (size > QCOW2_MAX_SNAPSHOTS_SIZE)
		return -EFBIG;
	if (n) {
		buf = vs_buf_zalloc(bytes);
		if (!buf)
			return -ENOMEM;
		qcow2_snapshots_encode(sn, n, buf);
		off = qcow2_alloc_clusters(node, bytes >> s->cluster_bits);
		if (off < 0) {
			free(buf);
			return (int)off;
		}
		ret = qcow2_overlap_check(node, 0, (uint64_t)off, bytes);
		if (ret == 0)
			ret = vs_node_pwrite(node->file, (uint64_t)off, buf, bytes, 0);
		free(buf);
		if (ret < 0)
			goto fail;
	}
	/* Everything the new table relies on is on disk before the header names it. */
	ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0)
		goto fail;
	struct qcow2_header h = s->hdr;

	h.nb_snapshots = n;
	h.snapshots_offset = (uint64_t)off;
	ret = qcow2_header_set(node, &h);
	if (ret < 0)
		goto fail;
	s->snap_table_size = size;
	*size_out = size;
	if (old_nb && old_size)
		return qcow2_free_clusters(
			node, old_off, (old_size + s->cluster_size - 1) & ~(s->cluster_size - 1),
			false);
	return 0;
fail:
	if (off > 0)
		(void)qcow2_free_clusters(node, (uint64_t)off, bytes, false);
	return ret;
}

int qcow2_snapshot_table_rewrite(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t size;

	return write_table(node, s->snaps, s->nb_snaps, &size);
}

/* The snapshot whose id, else whose name, is @key (QEMU's order); -1 if none. */
static int find_index(const struct qcow2_state *s, const char *key)
{
	for (unsigned i = 0; i < s->nb_snaps; i++)
		if (!strcmp(s->snaps[i].id, key))
			return (int)i;
	for (unsigned i = 0; i < s->nb_snaps; i++)
		if (!strcmp(s->snaps[i].name, key))
			return (int)i;
	return -1;
}

/*
 * The index of snapshot @key for deleting or applying it: not in a corrupt
 * image, and only with an L1 table that lies inside the file. Or -errno
 * with @err.
 */
static int find_usable(struct vs_node *node, const char *key, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	int idx = find_index(s, key), ret;

	if (s->corrupt)
		return vs_error_set(err, -EIO, "qcow2: '%s' is corrupt", node->filename);
	if (idx < 0)
		return vs_error_set(err, -ENOENT, "qcow2: no snapshot '%s' in '%s'", key,
				    node->filename);
	ret = qcow2_snapshot_check_l1(&s->hdr, &s->snaps[idx], vs_node_size(node->file), err);
	return ret < 0 ? ret : idx;
}

static int snapshot_create_locked(struct vs_node *node, const char *name, uint64_t icount,
				  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t max_id = 0, bytes, size;
	struct qcow2_snapshot *arr, *sn;
	struct timespec now;
	char idbuf[24];
	uint8_t *buf;
	int64_t l1off;
	int ret;

	if (s->corrupt)
		return vs_error_set(err, -EIO, "qcow2: '%s' is corrupt", node->filename);
	if (!*name || strlen(name) > UINT16_MAX)
		return vs_error_set(err, -EINVAL, "qcow2: invalid snapshot name");
	/* Names identify snapshots for convert -l and delete: keep them unique. */
	for (unsigned i = 0; i < s->nb_snaps; i++)
		if (!strcmp(s->snaps[i].name, name) || !strcmp(s->snaps[i].id, name))
			return vs_error_set(err, -EEXIST, "qcow2: snapshot '%s' already exists",
					    name);
	if (s->nb_snaps >= QCOW2_MAX_SNAPSHOTS)
		return vs_error_set(err, -EFBIG, "qcow2: too many snapshots");
	/* Data written in place from here on would change the snapshot. */
	qcow2_drain_unlocked(s);
	/* Refuse before changing anything rather than overflow half way. */
	ret = walk_l1(node, s->l1, s->l1_size, WALK_CHECK, true);
	if (ret == -ERANGE)
		return vs_error_set(err, ret,
				    "qcow2: refcount_bits=%u is too small for another snapshot",
				    s->refcount_bits);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "qcow2: checking refcounts");

	/* The snapshot's own copy of the L1 table, without COPIED flags. */
	bytes = ((uint64_t)s->l1_size * 8 + s->cluster_size - 1) & ~(s->cluster_size - 1);
	if (!bytes)
		bytes = s->cluster_size;
	buf = vs_buf_zalloc(bytes);
	if (!buf)
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	for (uint32_t i = 0; i < s->l1_size; i++)
		vs_put_be64(buf + 8 * i, s->l1[i] & ~QCOW2_OFLAG_COPIED);
	ret = qcow2_mark_dirty(node);
	l1off = ret < 0 ? ret : qcow2_alloc_clusters(node, bytes >> s->cluster_bits);
	if (l1off < 0) {
		free(buf);
		return vs_error_setf_errno(err, (int)l1off, "qcow2: allocating the snapshot L1");
	}
	ret = qcow2_overlap_check(node, 0, (uint64_t)l1off, bytes);
	if (ret == 0)
		ret = vs_node_pwrite(node->file, (uint64_t)l1off, buf, bytes, 0);
	free(buf);
	if (ret < 0) {
		(void)qcow2_free_clusters(node, (uint64_t)l1off, bytes, false);
		return vs_error_setf_errno(err, ret, "qcow2: writing the snapshot L1");
	}
	/*
	 * From here a failure leaks clusters at worst: refcounts only grow
	 * and COPIED flags only go, until the header names the new table.
	 */
	if (!s->lazy_refcounts) {
		ret = qcow2_cache_set_dependency(node, s->l2_cache, s->rb_cache);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "qcow2: flushing refcounts");
	}
	ret = walk_l1(node, s->l1, s->l1_size, WALK_INC, true);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "qcow2: updating refcounts");

	for (unsigned i = 0; i < s->nb_snaps; i++) {
		uint64_t v = strtoull(s->snaps[i].id, NULL, 10);

		if (v > max_id)
			max_id = v;
	}
	snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)max_id + 1);
	arr = calloc(s->nb_snaps + 1, sizeof(*arr));
	if (!arr)
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	if (s->nb_snaps)
		memcpy(arr, s->snaps, s->nb_snaps * sizeof(*arr));
	sn = &arr[s->nb_snaps];
	clock_gettime(CLOCK_REALTIME, &now);
	sn->l1_table_offset = (uint64_t)l1off;
	sn->l1_size = s->l1_size;
	sn->id = strdup(idbuf);
	sn->id_len = (uint16_t)strlen(idbuf);
	sn->name = strdup(name);
	sn->name_len = (uint16_t)strlen(name);
	sn->date_sec = (uint32_t)now.tv_sec;
	sn->date_nsec = (uint32_t)now.tv_nsec;
	sn->disk_size = node->size;
	sn->icount = icount;
	if (!sn->id || !sn->name) {
		ret = -ENOMEM;
	} else {
		ret = write_table(node, arr, s->nb_snaps + 1, &size);
	}
	if (ret < 0) {
		free(sn->id);
		free(sn->name);
		free(arr);
		return vs_error_setf_errno(err, ret, "qcow2: writing the snapshot table");
	}
	/* The entries moved into @arr: free only the old array. */
	free(s->snaps);
	s->snaps = arr;
	s->nb_snaps++;
	return 0;
}

static int qcow2_snapshot_delete_locked(struct vs_node *node, const char *key, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_snapshot victim, *arr = NULL;
	uint64_t *l1 = NULL, bytes, size;
	uint8_t *buf = NULL;
	int idx = find_usable(node, key, err), ret;

	if (idx < 0)
		return idx;
	victim = s->snaps[idx];
	/* Its L1 table, read before the entry goes (nothing names it afterwards). */
	bytes = (uint64_t)victim.l1_size * 8;
	if (bytes) {
		buf = vs_buf_alloc(bytes);
		l1 = calloc(victim.l1_size, sizeof(*l1));
		if (!buf || !l1) {
			ret = -ENOMEM;
			goto out;
		}
		ret = vs_node_pread(node->file, victim.l1_table_offset, buf, bytes);
		if (ret < 0)
			goto out;
		for (uint32_t i = 0; i < victim.l1_size; i++)
			l1[i] = vs_be64(buf + 8 * i);
	}
	ret = qcow2_mark_dirty(node);
	if (ret < 0)
		goto out;
	if (s->nb_snaps > 1) {
		arr = calloc(s->nb_snaps - 1, sizeof(*arr));
		if (!arr) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(arr, s->snaps, (size_t)idx * sizeof(*arr));
		memcpy(arr + idx, s->snaps + idx + 1, (s->nb_snaps - idx - 1) * sizeof(*arr));
	}
	/* The table without the entry is on disk before any reference drops. */
	ret = write_table(node, arr, s->nb_snaps - 1, &size);
	if (ret < 0) {
		free(arr);
		goto out;
	}
	free(s->snaps);
	s->snaps = arr;
	s->nb_snaps--;
	free(victim.id);
	free(victim.name);
	free(victim.extra);

	/* From here a failure leaks clusters at worst. */
	ret = walk_l1(node, l1, victim.l1_size, WALK_DEC, false);
	if (ret == 0)
		ret = qcow2_free_clusters(node, victim.l1_table_offset,
					  (bytes + s->cluster_size - 1) & ~(s->cluster_size - 1),
					  false);
	/* COPIED may only appear once the refcount of 1 is on disk. */
	if (ret == 0 && !s->lazy_refcounts)
		ret = qcow2_cache_set_dependency(node, s->l2_cache, s->rb_cache);
	if (ret == 0)
		ret = walk_l1(node, s->l1, s->l1_size, WALK_COPIED, true);
out:
	free(buf);
	free(l1);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "qcow2: deleting snapshot '%s'", key);
	return 0;
}

/*
 * Lock held. Revert the active image to snapshot @key: a new active L1,
 * a copy of the snapshot's, is written and its references taken (flushed)
 * before the header names it; the old active references drop afterwards,
 * so an interruption leaks clusters at worst.
 */
static int snapshot_apply_locked(struct vs_node *node, const char *key, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t *nl1 = NULL, *old_l1, old_off, bytes, n;
	uint32_t old_size;
	struct qcow2_snapshot *sn;
	uint8_t *buf = NULL;
	int64_t off = 0;
	int idx = find_usable(node, key, err), ret;

	if (idx < 0)
		return idx;
	sn = &s->snaps[idx];
	n = qcow2_l1_size_for(s, sn->disk_size);
	if (n < sn->l1_size)
		n = sn->l1_size;
	if (n > QCOW2_MAX_L1_SIZE / 8)
		return vs_error_set(err, -EFBIG, "qcow2: snapshot '%s' is too large", key);
	bytes = (n * 8 + s->cluster_size - 1) & ~(s->cluster_size - 1);
	if (!bytes)
		bytes = s->cluster_size;
	buf = vs_buf_zalloc(bytes);
	nl1 = calloc(n ? n : 1, sizeof(*nl1));
	if (!buf || !nl1) {
		ret = -ENOMEM;
		goto fail;
	}
	if (sn->l1_size) {
		ret = vs_node_pread(node->file, sn->l1_table_offset, buf,
				    (uint64_t)sn->l1_size * 8);
		if (ret < 0)
			goto fail;
	}
	/* Shared with the snapshot from now on: no COPIED flag. */
	for (uint64_t i = 0; i < sn->l1_size; i++) {
		nl1[i] = vs_be64(buf + 8 * i) & ~QCOW2_OFLAG_COPIED;
		vs_put_be64(buf + 8 * i, nl1[i]);
	}
	/* Writes in flight would land in the table being replaced. */
	qcow2_drain_unlocked(s);
	ret = walk_l1(node, nl1, (uint32_t)n, WALK_CHECK, false);
	if (ret == -ERANGE) {
		ret = vs_error_set(err, ret,
				   "qcow2: refcount_bits=%u is too small to apply a snapshot",
				   s->refcount_bits);
		goto out;
	}
	if (ret < 0)
		goto fail;
	ret = qcow2_mark_dirty(node);
	if (ret < 0)
		goto fail;
	off = qcow2_alloc_clusters(node, bytes >> s->cluster_bits);
	if (off < 0) {
		ret = (int)off;
		off = 0;
		goto fail;
	}
	ret = qcow2_overlap_check(node, 0, (uint64_t)off, bytes);
	if (ret == 0)
		ret = vs_node_pwrite(node->file, (uint64_t)off, buf, bytes, 0);
	if (ret < 0)
		goto fail;
	/* From here a failure leaks clusters at worst: refcounts only grow. */
	ret = walk_l1(node, nl1, (uint32_t)n, WALK_INC, false);
	if (ret < 0) {
		off = 0; /* some references may be taken: leak rather than free */
		goto fail;
	}
	/* The new table and every reference it holds are on disk first. */
	ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0) {
		off = 0;
		goto fail;
	}
	old_l1 = s->l1;
	old_size = s->l1_size;
	old_off = s->l1_offset;
	struct qcow2_header h = s->hdr;

	h.l1_table_offset = (uint64_t)off;
	h.l1_size = (uint32_t)n;
	h.size = sn->disk_size;
	ret = qcow2_header_set(node, &h);
	if (ret < 0) {
		off = 0;
		goto fail;
	}
	s->l1 = nl1;
	s->l1_size = (uint32_t)n;
	s->l1_offset = (uint64_t)off;
	node->size = sn->disk_size;
	nl1 = NULL;

	/* The old active image's references go. */
	ret = walk_l1(node, old_l1, old_size, WALK_DEC, false);
	if (ret == 0 && old_off && old_size)
		ret = qcow2_free_clusters(node, old_off,
					  ((uint64_t)old_size * 8 + s->cluster_size - 1) &
						  ~(s->cluster_size - 1),
					  false);
	free(old_l1);
	/* COPIED may only appear once the refcount of 1 is on disk. */
	if (ret == 0 && !s->lazy_refcounts)
		ret = qcow2_cache_set_dependency(node, s->l2_cache, s->rb_cache);
	if (ret == 0)
		ret = walk_l1(node, s->l1, s->l1_size, WALK_COPIED, true);
	if (ret < 0)
		goto fail;
	free(buf);
	return 0;
fail:
	if (off > 0)
		(void)qcow2_free_clusters(node, (uint64_t)off, bytes, false);
	ret = vs_error_setf_errno(err, ret, "qcow2: applying snapshot '%s'", key);
out:
	free(buf);
	free(nl1);
	return ret;
}

typedef int snapshot_op_fn(struct vs_node *node, const char *key, struct vs_error *err);

/*
 * With the metadata lock held and @ret the result of a snapshot operation:
 * write back the caches and flush the file, so the operation is on disk when
 * it returns; unlocks.
 */
static int snapshot_finish(struct vs_node *node, int ret, const char *key, const char *what,
			   struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);

	if (ret < 0) {
		vs_co_mutex_unlock(&s->lock);
		return ret; /* @err already says why */
	}
	ret = qcow2_flush_metadata(node);
	vs_co_mutex_unlock(&s->lock);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "qcow2: %s snapshot '%s'", what, key);
	return 0;
}

/* Run @op under the metadata lock, then snapshot_finish(). */
static int snapshot_op(struct vs_node *node, snapshot_op_fn *op, const char *key, const char *what,
		       struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);

	/* As QEMU: an internal snapshot could not keep the data file's clusters. */
	if (s->data_file)
		return -ENOTSUP;
	vs_co_mutex_lock(&s->lock);
	return snapshot_finish(node, op(node, key, err), key, what, err);
}

int qcow2_snapshot_create(struct vs_node *node, const char *name, const struct vs_snapshot_opts *o,
			  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);

	/* As QEMU: an internal snapshot could not keep the data file's clusters. */
	if (s->data_file)
		return -ENOTSUP;
	vs_co_mutex_lock(&s->lock);
	return snapshot_finish(node,
			       snapshot_create_locked(node, name,
						      o ? o->icount : VS_SNAPSHOT_NO_ICOUNT, err),
			       name, "creating", err);
}

int qcow2_snapshot_delete(struct vs_node *node, const char *name_or_id, struct vs_error *err)
{
	return snapshot_op(node, qcow2_snapshot_delete_locked, name_or_id, "deleting", err);
}

int qcow2_snapshot_apply(struct vs_node *node, const char *name_or_id, struct vs_error *err)
{
	return snapshot_op(node, snapshot_apply_locked, name_or_id, "applying", err);
}
