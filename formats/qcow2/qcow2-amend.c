/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 header changes of an existing image: the backing file name and
 * format (rebase, set_backing).
 *
 * The header cluster is rebuilt from the fixed header as it is in memory,
 * a backing format extension when there is one, the bitmaps extension as
 * the state describes it, every other extension of the file kept byte for
 * byte in its order, the end marker and the backing
 * file name, and written in one request followed by a flush.
 */
#include "qcow2.h"
#include "vstor/parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Lock held. Rewrite the header cluster with the fixed header @nh (NULL:
 * the current one; its header_length may differ from the current one, for
 * a version change), backing name @bname and format @bfmt (NULL or "" for
 * none). On success s->hdr, s->hdr_raw, s->backing_file and s->backing_fmt
 * follow.
 */
static int rewrite_header_cluster(struct vs_node *node, const struct qcow2_header *nh,
				  const char *bname, const char *bfmt, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	uint64_t fsize = vs_node_size(node->file);
	size_t blen = bname ? strlen(bname) : 0, flen = bfmt ? strlen(bfmt) : 0;
	uint64_t old_end, in, out;
	uint8_t *old = NULL, *buf = NULL;
	struct qcow2_header h = nh ? *nh : s->hdr;
	uint8_t *raw = NULL;
	uint8_t bmext[QCOW2_BITMAPS_EXT_SIZE];
	unsigned bmlen = qcow2_bitmaps_ext_encode(&s->bitmaps, bmext);
	size_t dlen = strlen(s->data_file_name);
	int ret;

	if (blen > QCOW2_MAX_BACKING_NAME)
		return vs_error_set(err, -EINVAL, "Backing file name too long");
	if (flen >= sizeof(s->backing_fmt))
		return vs_error_set(err, -EINVAL, "Backing format name too long");
	old = vs_buf_zalloc(cs);
	buf = vs_buf_zalloc(cs);
	if (!old || !buf) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	ret = vs_node_pread(node->file, 0, old, fsize < cs ? (size_t)fsize : (size_t)cs);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not read the header of '%s'", node->filename);
		goto out;
	}
	raw = calloc(1, h.header_length);
	if (!raw) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	memcpy(buf, s->hdr_raw,
	       h.header_length < s->hdr.header_length ? h.header_length : s->hdr.header_length);
	out = h.header_length;
	if (flen) {
		vs_put_be32(buf + out, QCOW2_EXT_BACKING_FORMAT);
		vs_put_be32(buf + out + 4, (uint32_t)flen);
		memcpy(buf + out + 8, bfmt, flen);
		out += 8 + ((flen + 7) & ~(size_t)7);
	}
	/* The data file name from the state (amend data_file= renames it). */
	if (dlen) {
		if (out + 8 + dlen + 8 > cs) {
			ret = vs_error_set(err, -ENOSPC,
					   "The data file name does not fit in the header cluster");
			goto out;
		}
		vs_put_be32(buf + out, QCOW2_EXT_DATA_FILE);
		vs_put_be32(buf + out + 4, (uint32_t)dlen);
		memcpy(buf + out + 8, s->data_file_name, dlen);
		out += 8 + ((dlen + 7) & ~(size_t)7);
	}
	if (bmlen) {
		vs_put_be32(buf + out, QCOW2_EXT_BITMAPS);
		vs_put_be32(buf + out + 4, bmlen);
		memcpy(buf + out + 8, bmext, bmlen);
		out += 8 + bmlen;
	}
	/* Copy the other extensions as they are. */
	old_end = s->hdr.backing_file_offset ? s->hdr.backing_file_offset : cs;
	if (old_end > cs)
		old_end = cs;
	in = s->hdr.header_length;
	while (in + 8 <= old_end) {
		uint32_t type = vs_be32(old + in);
		uint64_t elen = vs_be32(old + in + 4);
		uint64_t step = 8 + ((elen + 7) & ~7ull);

		if (type == QCOW2_EXT_END || step > old_end - in)
			break;
		/* The feature names only explain bits: dropped where they leave no room, as QEMU does. */
		if (type == QCOW2_EXT_FEATURE_TABLE && out + step + 8 + blen > cs) {
			in += step;
			continue;
		}
		if (type != QCOW2_EXT_BACKING_FORMAT && type != QCOW2_EXT_BITMAPS &&
		    type != QCOW2_EXT_DATA_FILE) {
			if (out + step + 8 + blen > cs) {
				ret = vs_error_set(err, -ENOSPC,
						   "The header extensions and the backing file "
						   "name do not fit in the header cluster");
				goto out;
			}
			memcpy(buf + out, old + in, step);
			out += step;
		}
		in += step;
	}
	out += 8; /* end marker: zeroes */
	if (out + blen > cs) {
		ret = vs_error_set(err, -ENOSPC,
				   "The backing file name does not fit in the header cluster");
		goto out;
	}
	if (blen) {
		memcpy(buf + out, bname, blen);
		h.backing_file_offset = out;
		h.backing_file_size = (uint32_t)blen;
	} else {
		h.backing_file_offset = 0;
		h.backing_file_size = 0;
	}
	qcow2_header_encode(&h, buf);
	ret = vs_node_pwrite(node->file, 0, buf, (size_t)cs, 0);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0) {
		/* The file may hold either header now: no more writes through this node. */
		s->corrupt = true;
		vs_error_setf_errno(err, ret, "Could not write the header of '%s'", node->filename);
		goto out;
	}
	s->hdr = h;
	memcpy(raw, buf, h.header_length);
	free(s->hdr_raw);
	s->hdr_raw = raw;
	raw = NULL;
	memcpy(s->backing_file, bname ? bname : "", blen + 1);
	memcpy(s->backing_fmt, bfmt ? bfmt : "", flen + 1);
out:
	free(raw);
	free(old);
	free(buf);
	return ret;
}

int qcow2_header_cluster_rewrite(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	struct vs_error err = { 0 };

	return rewrite_header_cluster(node, NULL, s->backing_file[0] ? s->backing_file : NULL,
				      s->backing_fmt, &err);
}

int qcow2_set_backing(struct vs_node *node, const char *backing, const char *fmt,
		      struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	if (backing && !backing[0])
		backing = NULL;
	if (!backing && fmt && fmt[0])
		return vs_error_set(err, -EINVAL,
				    "Backing format cannot be used without backing file");
	vs_co_mutex_lock(&s->lock);
	if (s->corrupt) {
		ret = vs_error_set(err, -EIO, "'%s' is marked corrupt", node->filename);
	} else {
		ret = qcow2_flush_metadata(node);
		if (ret < 0)
			vs_error_setf_errno(err, ret, "Could not write back the metadata of '%s'",
					    node->filename);
		else
			ret = rewrite_header_cluster(node, NULL, backing, fmt, err);
	}
	vs_co_mutex_unlock(&s->lock);
	return ret;
}

/* ---- amend ---- */

struct amend_params {
	unsigned version;
	unsigned refcount_bits;
	bool lazy_refcounts;
	bool has_size, has_backing, has_backing_fmt;
	uint64_t size;
	const char *backing, *backing_fmt;
	const char *data_file; /* NULL: not given; "": drop the name */
	bool has_data_file_raw, data_file_raw;
};

/*
 * Whether an amend option (@given: @v) differs from what the header holds
 * (@recorded, "" for nothing), as QEMU compares them: nothing recorded and
 * an option not given are both "none", and an empty value is not "none".
 */
static bool amend_differs(bool given, const char *v, const char *recorded)
{
	if (!given || !recorded[0])
		return given != !!recorded[0];
	return strcmp(v, recorded) != 0;
}

static int amend_bool(const char *k, const char *v, bool *out, struct vs_error *err)
{
	if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
		*out = false;
		return 0;
	}
	return vs_error_set(err, -EINVAL, "Parameter '%s' expects 'on' or 'off'", k);
}

static int amend_parse(struct qcow2_state *s, const struct vs_kv *opts, size_t nopts,
		       struct amend_params *p, struct vs_error *err)
{
	static const char *const create_only[] = { "cluster_size",     "extended_l2",
						   "compression_type", "preallocation",
						   "encryption",       "nocow",
						   "extent_size_hint" };

	p->version = s->hdr.version;
	p->refcount_bits = s->refcount_bits;
	p->lazy_refcounts = s->lazy_refcounts;
	for (size_t i = 0; i < nopts; i++) {
		const char *k = opts[i].key, *v = opts[i].value ? opts[i].value : "";
		char *end;

		if (!strcmp(k, "compat")) {
			if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
				p->version = 2;
			else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
				p->version = 3;
			else
				return vs_error_set(err, -EINVAL, "Unknown compatibility level %s",
						    v);
		} else if (!strcmp(k, "refcount_bits")) {
			unsigned long long n = strtoull(v, &end, 0);

			if (!v[0] || *end || v[0] == '-')
				return vs_error_set(err, -EINVAL, "Parameter '%s' expects a number",
						    k);
			if (!n || n > 64 || (n & (n - 1)))
				return vs_error_set(err, -EINVAL,
						    "Refcount width must be a power of two and may "
						    "not exceed 64 bits");
			p->refcount_bits = (unsigned)n;
		} else if (!strcmp(k, "lazy_refcounts")) {
			if (amend_bool(k, v, &p->lazy_refcounts, err) < 0)
				return -EINVAL;
		} else if (!strcmp(k, "size")) {
			if (vs_parse_size(v, &p->size) < 0)
				return vs_error_set(err, -EINVAL,
						    "Parameter 'size' expects a size");
			p->has_size = true;
		} else if (!strcmp(k, "backing_file")) {
			p->backing = v;
			p->has_backing = true;
		} else if (!strcmp(k, "backing_fmt")) {
			p->backing_fmt = v;
			p->has_backing_fmt = true;
		} else if (!strcmp(k, "data_file")) {
			if (!(s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE))
				return vs_error_set(err, -EINVAL,
						    "data-file can only be set for images that use "
						    "an external data file");
			if (strlen(v) > QCOW2_MAX_DATA_FILE_NAME)
				return vs_error_set(err, -EINVAL, "Data file name too long");
			p->data_file = v;
		} else if (!strcmp(k, "data_file_raw")) {
			int ret = amend_bool(k, v, &p->data_file_raw, err);

			if (ret < 0)
				return ret;
			if (p->data_file_raw && !s->data_file_raw)
				return vs_error_set(
					err, -EINVAL,
					"data-file-raw cannot be set on existing images");
			p->has_data_file_raw = true;
		} else {
			for (size_t j = 0; j < sizeof(create_only) / sizeof(create_only[0]); j++)
				if (!strcmp(k, create_only[j]))
					return vs_error_set(
						err, -EINVAL,
						"Invalid parameter '%s'\nThis option is "
						"only supported for image creation",
						k);
			if (!strncmp(k, "encrypt.", 8))
				return vs_error_set(err, -ENOTSUP,
						    "Option '%s' is not supported by vstor", k);
			return vs_error_set(err, -EINVAL, "Invalid parameter '%s'", k);
		}
	}
	return 0;
}

/* Lock held: everything on disk, and the dirty bit (lazy refcounts) cleared. */
static int amend_mark_clean(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_header h;
	int ret;

	qcow2_drain_unlocked(s);
	ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0 || !s->dirty)
		return ret;
	h = s->hdr;
	h.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
	ret = qcow2_header_set(node, &h);
	if (ret < 0)
		return ret;
	s->dirty = false;
	return 0;
}

static int amend_upgrade(struct vs_node *node, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_header h = s->hdr;
	int ret;

	/* v3 wants 16 bytes of extra data in each snapshot entry: rewrite a table that lacks them. */
	for (unsigned i = 0; i < s->nb_snaps; i++) {
		if (s->snaps[i].extra_size >= 16)
			continue;
		ret = qcow2_snapshot_table_rewrite(node);
		if (ret < 0)
			return vs_error_setf_errno(err, ret,
						   "Could not rewrite the snapshot table");
		h = s->hdr;
		break;
	}
	h.version = 3;
	h.header_length = 112;
	h.refcount_order = 4;
	h.incompatible_features = 0;
	h.compatible_features = 0;
	h.autoclear_features = 0;
	h.compression_type = QCOW2_COMPRESSION_ZLIB;
	return rewrite_header_cluster(node, &h, s->backing_file, s->backing_fmt, err);
}

/* Whether the L2 table at @off has an entry with the zero flag. */
static int l2_has_zero(struct vs_node *node, uint64_t off, bool *found)
{
	struct qcow2_state *s = qcow2_state(node);
	void *l2;
	int ret = qcow2_cache_get(node, s->l2_cache, off, &l2);

	if (ret < 0)
		return ret;
	for (uint64_t j = 0; j < s->l2_entries && !*found; j++) {
		uint64_t e = vs_be64((uint8_t *)l2 + 8 * j);

		if (!(e & QCOW2_OFLAG_COMPRESSED) && (e & QCOW2_OFLAG_ZERO))
			*found = true;
	}
	qcow2_cache_put(s->l2_cache, &l2);
	return 0;
}

/* Any zero flag in the L2 tables of the internal snapshots? */
static int snapshots_have_zero(struct vs_node *node, bool *found)
{
	struct qcow2_state *s = qcow2_state(node);

	*found = false;
	for (unsigned i = 0; i < s->nb_snaps && !*found; i++) {
		const struct qcow2_snapshot *sn = &s->snaps[i];
		uint64_t bytes = (uint64_t)sn->l1_size * 8;
		uint8_t *l1 = vs_buf_zalloc(bytes ? bytes : 8);
		int ret;

		if (!l1)
			return -ENOMEM;
		ret = bytes ? vs_node_pread(node->file, sn->l1_table_offset, l1, bytes) : 0;
		for (uint32_t j = 0; ret == 0 && j < sn->l1_size && !*found; j++) {
			uint64_t off = vs_be64(l1 + 8 * j) & QCOW2_L1E_OFFSET_MASK;

			if (off)
				ret = l2_has_zero(node, off, found);
		}
		free(l1);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * Lock held. Turn the zero clusters of the active image into what v2 can
 * say: an unallocated entry without a backing file, else a cluster of
 * zeroes (a preallocated zero cluster keeps its host cluster, zeroed). The
 * zeroes are on disk before an L2 entry points to them.
 */
static int expand_zero_clusters(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	uint64_t *newhost = calloc(s->l2_entries, sizeof(uint64_t));
	uint64_t *oldhost = calloc(s->l2_entries, sizeof(uint64_t));
	int ret = 0;

	if (!newhost || !oldhost) {
		free(newhost);
		free(oldhost);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->l1_size && ret == 0; i++) {
		uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
		bool any = false;
		void *l2;

		if (!l2off)
			continue;
		ret = l2_has_zero(node, l2off, &any);
		if (ret < 0 || !any)
			continue;
		ret = qcow2_cache_get(node, s->l2_cache, l2off, &l2);
		if (ret < 0)
			break;
		/* First the data: zeroed clusters, new ones allocated (leaked on a crash). */
		for (uint64_t j = 0; j < s->l2_entries && ret == 0; j++) {
			uint64_t e = vs_be64((uint8_t *)l2 + 8 * j);
			uint64_t host = e & QCOW2_L2E_OFFSET_MASK;
			int64_t nw;

			newhost[j] = oldhost[j] = 0;
			if ((e & QCOW2_OFLAG_COMPRESSED) || !(e & QCOW2_OFLAG_ZERO))
				continue;
			if (!host && !s->backing_file[0])
				continue;
			if (host) {
				uint64_t rc;

				/*
				 * A preallocated zero cluster shared with a snapshot
				 * keeps the snapshot's data: zeroes go to a new cluster.
				 */
				ret = qcow2_refcount_get(node, host >> s->cluster_bits, &rc);
				if (ret < 0)
					break;
				if (rc > 1) {
					oldhost[j] = host;
					host = 0;
				} else {
					ret = qcow2_overlap_check(node, 0, host, cs);
					if (ret < 0)
						break;
				}
			}
			if (!host) {
				nw = qcow2_alloc_clusters(node, 1);
				if (nw < 0) {
					ret = (int)nw;
					break;
				}
				host = (uint64_t)nw;
				newhost[j] = host;
			}
			ret = vs_node_write_zeroes(node->file, host, cs, 0);
		}
		/*
		 * The refcounts of the new clusters, and the zeroes, on disk
		 * before any entry points to them (an evicted L2 table would
		 * otherwise reach the disk first).
		 */
		if (ret == 0)
			ret = qcow2_cache_writeback(node, s->rb_cache);
		if (ret == 0)
			ret = vs_node_flush(node->file);
		/* Then the entries. */
		for (uint64_t j = 0; j < s->l2_entries && ret == 0; j++) {
			uint64_t e = vs_be64((uint8_t *)l2 + 8 * j);
			uint64_t host = e & QCOW2_L2E_OFFSET_MASK;

			if ((e & QCOW2_OFLAG_COMPRESSED) || !(e & QCOW2_OFLAG_ZERO))
				continue;
			if (newhost[j])
				e = newhost[j] | QCOW2_OFLAG_COPIED;
			else if (host)
				e &= ~QCOW2_OFLAG_ZERO;
			else
				e = 0;
			vs_put_be64((uint8_t *)l2 + 8 * j, e);
			qcow2_cache_mark_dirty(s->l2_cache, l2);
		}
		/* The shared clusters lose this image's reference once the entries are on disk. */
		for (uint64_t j = 0; j < s->l2_entries && ret == 0; j++) {
			if (!oldhost[j])
				continue;
			ret = qcow2_cache_set_dependency(node, s->rb_cache, s->l2_cache);
			if (ret == 0)
				ret = qcow2_free_clusters(node, oldhost[j], cs, false);
		}
		qcow2_cache_put(s->l2_cache, &l2);
	}
	free(newhost);
	free(oldhost);
	if (ret == 0)
		ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	return ret;
}

static int amend_downgrade(struct vs_node *node, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_header h;
	uint64_t incompat;
	bool zero_in_snapshots = false;
	int ret;

	if (s->refcount_order != 4)
		return vs_error_set(err, -ENOTSUP, "compat=0.10 requires refcount_bits=16");
	ret = amend_mark_clean(node);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Failed to make the image clean");
	incompat = s->hdr.incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION;
	if (incompat)
		return vs_error_set(
			err, -ENOTSUP,
			"Cannot downgrade an image with incompatible features 0x%llx set",
			(unsigned long long)incompat);
	if (s->hdr.compression_type != QCOW2_COMPRESSION_ZLIB)
		return vs_error_set(err, -ENOTSUP,
				    "Cannot downgrade an image with compression type zstd: "
				    "version 2 images only have zlib");
	/* Version 2 snapshot entries have no disk size and a 32-bit VM state size. */
	for (unsigned i = 0; i < s->nb_snaps; i++)
		if (s->snaps[i].disk_size != node->size || s->snaps[i].vm_state_size > UINT32_MAX)
			return vs_error_set(err, -ENOTSUP,
					    "Internal snapshots prevent downgrade of image");
	if (s->nb_snaps) {
		ret = snapshots_have_zero(node, &zero_in_snapshots);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Could not read the snapshots");
		if (!zero_in_snapshots) {
			/* The active L2 tables may be shared with the snapshots: look at them too. */
			for (uint32_t i = 0; i < s->l1_size && !zero_in_snapshots; i++)
				if ((s->l1[i] & QCOW2_L1E_OFFSET_MASK) &&
				    !(s->l1[i] & QCOW2_OFLAG_COPIED)) {
					ret = l2_has_zero(node, s->l1[i] & QCOW2_L1E_OFFSET_MASK,
							  &zero_in_snapshots);
					if (ret < 0)
						return vs_error_setf_errno(err, ret,
									   "Could not read L2");
				}
		}
		if (zero_in_snapshots)
			return vs_error_set(
				err, -ENOTSUP,
				"Cannot downgrade: internal snapshots share zero "
				"clusters, which version 2 cannot represent; delete the "
				"snapshots first");
	}
	ret = expand_zero_clusters(node);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Failed to turn zero into data clusters");
	h = s->hdr;
	h.version = 2;
	h.header_length = QCOW2_V2_HEADER_SIZE;
	h.incompatible_features = 0;
	h.compatible_features = 0;
	h.autoclear_features = 0;
	h.refcount_order = 4;
	h.compression_type = QCOW2_COMPRESSION_ZLIB;
	ret = rewrite_header_cluster(node, &h, s->backing_file, s->backing_fmt, err);
	if (ret == 0)
		s->lazy_refcounts = false;
	return ret;
}

static int amend_lazy_refcounts(struct vs_node *node, bool on, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_header h;
	int ret;

	if (!on) {
		ret = amend_mark_clean(node);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Failed to make the image clean");
	}
	h = s->hdr;
	if (on)
		h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
	else
		h.compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
	ret = qcow2_header_set(node, &h);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not update the header");
	s->lazy_refcounts = on;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Lock held. Rebuild the refcount structures with entries of @bits bits:
 * the new table and blocks go after every cluster in use and count
 * themselves; the header switches to them in one write; the old ones then
 * have no reference in the new structures (free space). A crash before the
 * switch leaves the old structures valid and the new clusters unreferenced.
 */
static int amend_refcount_bits(struct vs_node *node, unsigned bits, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t cs = s->cluster_size;
	uint64_t per_block = cs * 8 / bits, per_table = cs / 8;
	uint64_t new_max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
	uint64_t n = (vs_node_size(node->file) + cs - 1) / cs;
	uint64_t old_rt_first = s->reftable_offset / cs;
	uint64_t old_rt_n = s->hdr.refcount_table_clusters;
	uint64_t *old_rb = NULL, nb_old_rb = 0, blocks = 0, table = 0, total, last;
	struct qcow2_state geo;
	struct qcow2_header saved = s->hdr;
	uint8_t *buf = NULL;
	unsigned order = 0;
	int ret;

	while ((1u << order) < bits)
		order++;
	ret = amend_mark_clean(node);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not write back the metadata");
	/* The old refcount blocks, sorted, to leave them out of the new counts. */
	old_rb = calloc(s->reftable_size ? s->reftable_size : 1, sizeof(uint64_t));
	if (!old_rb)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	for (uint64_t i = 0; i < s->reftable_size; i++)
		if (s->reftable[i])
			old_rb[nb_old_rb++] = s->reftable[i] / cs;
	qsort(old_rb, nb_old_rb, sizeof(uint64_t), u64_cmp);
	/* Every cluster with a refcount, also past the end of the file, and the new width. */
	for (uint64_t c = 0; c < s->reftable_used << s->rb_bits; c++) {
		uint64_t rc;

		if (!s->reftable[c >> s->rb_bits]) {
			c |= (1ull << s->rb_bits) - 1;
			continue;
		}
		ret = qcow2_refcount_get(node, c, &rc);
		if (ret < 0) {
			vs_error_setf_errno(err, ret, "Could not read the refcounts");
			goto out;
		}
		if (rc && c >= n)
			n = c + 1;
		if (rc > new_max && !(c >= old_rt_first && c < old_rt_first + old_rt_n) &&
		    !bsearch(&c, old_rb, nb_old_rb, sizeof(uint64_t), u64_cmp)) {
			ret = vs_error_set(
				err, -EINVAL,
				"Cannot decrease refcount entry width to %u bits: Cluster "
				"at offset %#llx has a refcount of %llu",
				bits, (unsigned long long)(c * cs), (unsigned long long)rc);
			goto out;
		}
	}
	/* The new table and blocks at [n, n + table + blocks): their fixed point. */
	do {
		last = blocks + table;
		blocks = (n + table + blocks + per_block - 1) / per_block;
		table = (blocks + per_table - 1) / per_table;
	} while (blocks + table != last);
	total = n + table + blocks;
	if (table * cs > QCOW2_MAX_REFTABLE_SIZE) {
		ret = vs_error_set(err, -EFBIG, "The refcount table would be too large");
		goto out;
	}
	memset(&geo, 0, sizeof(geo));
	geo.refcount_order = order;
	geo.refcount_bits = bits;
	buf = vs_buf_zalloc(table * cs > cs ? table * cs : cs);
	if (!buf) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	for (uint64_t b = 0; b < blocks; b++)
		vs_put_be64(buf + 8 * b, (n + table + b) * cs);
	ret = vs_node_pwrite(node->file, n * cs, buf, table * cs, 0);
	for (uint64_t b = 0; b < blocks && ret == 0; b++) {
		memset(buf, 0, cs);
		for (uint64_t i = 0; i < per_block; i++) {
			uint64_t c = b * per_block + i, rc = 0;

			if (c >= total)
				break;
			if (c >= n) {
				rc = 1;
			} else if (!(c >= old_rt_first && c < old_rt_first + old_rt_n) &&
				   !bsearch(&c, old_rb, nb_old_rb, sizeof(uint64_t), u64_cmp)) {
				ret = qcow2_refcount_get(node, c, &rc);
				if (ret < 0)
					break;
			}
			qcow2_rb_entry_set(&geo, buf, i, rc);
		}
		if (ret == 0)
			ret = vs_node_pwrite(node->file, (n + table + b) * cs, buf, cs, 0);
	}
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not write the new refcount structures");
		goto out;
	}
	/* The switch: one header write. */
	s->hdr.refcount_table_offset = n * cs;
	s->hdr.refcount_table_clusters = (uint32_t)table;
	s->hdr.refcount_order = order;
	ret = qcow2_header_update(node);
	if (ret < 0) {
		/*
		 * The header may have reached the file although the flush failed:
		 * it may name either refcount structure, and allocating from the
		 * old one could overwrite the new one. No more writes through this
		 * node; a new open reads whichever the file names.
		 */
		s->hdr = saved;
		s->corrupt = true;
		vs_error_setf_errno(err, ret, "Could not update the header");
		goto out;
	}
	qcow2_cache_drop_all(s->rb_cache);
	free(s->reftable);
	s->reftable = NULL;
	s->refcount_order = order;
	s->refcount_bits = bits;
	s->refcount_max = new_max;
	s->rb_bits = s->cluster_bits + 3 - order;
	s->free_hint = 0;
	ret = qcow2_refcount_load(node, err);
	if (ret < 0)
		s->corrupt = true; /* the file is right, our view of it is not: stop writing */
out:
	free(buf);
	free(old_rb);
	return ret;
}

int qcow2_amend(struct vs_node *node, const struct vs_kv *opts, size_t nopts, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct amend_params p;
	unsigned old_version;
	int ret;

	memset(&p, 0, sizeof(p));
	vs_co_mutex_lock(&s->lock);
	ret = amend_parse(s, opts, nopts, &p, err);
	if (ret < 0)
		goto out;
	if (s->corrupt) {
		ret = vs_error_set(err, -EIO, "'%s' is marked corrupt", node->filename);
		goto out;
	}
	/*
	 * qemu's rule: backing_file and backing_fmt may only repeat what the
	 * header holds (an option not given counts as "none"); changing them is
	 * rebase's job, which checks the new chain.
	 */
	if ((p.has_backing || p.has_backing_fmt) &&
	    (amend_differs(p.has_backing, p.backing, s->backing_file) ||
	     amend_differs(p.has_backing_fmt, p.backing_fmt, s->backing_fmt))) {
		ret = vs_error_set(err, -EINVAL,
				   "Cannot amend the backing file\n"
				   "You can use 'vstor-img rebase' instead.");
		goto out;
	}
	if (p.version < 3 && (s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)) {
		ret = vs_error_set(err, -ENOTSUP, "Cannot downgrade an image with a data file");
		goto out;
	}
	qcow2_drain_unlocked(s);
	old_version = s->hdr.version;
	/* qemu's order: upgrade, refcount width, backing file, lazy refcounts, size, downgrade. */
	if (p.version > old_version) {
		ret = amend_upgrade(node, err);
		if (ret < 0)
			goto out;
	}
	if (p.refcount_bits != s->refcount_bits) {
		/* compat=0.10,refcount_bits=16 narrows first, then downgrades below. */
		if (p.version < 3 && p.refcount_bits != 16) {
			ret = vs_error_set(
				err, -EINVAL,
				"Refcount widths other than 16 bits require compatibility "
				"level 1.1 or above (use compat=1.1 or greater)");
			goto out;
		}
		ret = amend_refcount_bits(node, p.refcount_bits, err);
		if (ret < 0)
			goto out;
	}
	if (p.lazy_refcounts != s->lazy_refcounts) {
		if (p.lazy_refcounts && p.version < 3) {
			ret = vs_error_set(err, -EINVAL,
					   "Lazy refcounts only supported with compatibility level "
					   "1.1 and above (use compat=1.1 or greater)");
			goto out;
		}
		ret = amend_lazy_refcounts(node, p.lazy_refcounts, err);
		if (ret < 0)
			goto out;
	}
	if (p.data_file && strcmp(p.data_file, s->data_file_name)) {
		char old[sizeof(s->data_file_name)];

		/* The new name is recorded; this open keeps the file it has, as QEMU. */
		memcpy(old, s->data_file_name, sizeof(old));
		snprintf(s->data_file_name, sizeof(s->data_file_name), "%s", p.data_file);
		ret = qcow2_flush_metadata(node);
		if (ret == 0)
			ret = rewrite_header_cluster(node, NULL,
						     s->backing_file[0] ? s->backing_file : NULL,
						     s->backing_fmt, err);
		else
			vs_error_setf_errno(err, ret, "Could not write back the metadata");
		if (ret < 0) {
			memcpy(s->data_file_name, old, sizeof(old));
			goto out;
		}
	}
	if (p.has_data_file_raw && !p.data_file_raw && s->data_file_raw) {
		struct qcow2_header h = s->hdr;

		h.autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
		ret = qcow2_header_set(node, &h);
		if (ret < 0) {
			vs_error_setf_errno(err, ret, "Could not update the header");
			goto out;
		}
		s->data_file_raw = false;
	}
	if (p.version < old_version || (p.version < s->hdr.version)) {
		if (p.has_size) {
			/* The size changes below, outside the lock; downgrade after it. */
		} else {
			ret = amend_downgrade(node, err);
			if (ret < 0)
				goto out;
		}
	}
out:
	vs_co_mutex_unlock(&s->lock);
	if (ret < 0 || !p.has_size)
		return ret;
	/* As QEMU: the image gets exactly the size asked for, smaller or larger. */
	if (p.size != node->size) {
		ret = vs_node_truncate(node, p.size, VS_PREALLOC_OFF, false, err);
		if (ret < 0)
			return ret;
	}
	if (p.version < s->hdr.version) {
		vs_co_mutex_lock(&s->lock);
		ret = amend_downgrade(node, err);
		vs_co_mutex_unlock(&s->lock);
	}
	return ret;
}

const struct vs_create_opt_desc qcow2_amend_opts[] = {
	{ "backing_file", "string", "File name of a base image" },
	{ "backing_fmt", "string", "Image format of the base image" },
	{ "compat", "string", "Compatibility level (v2 [0.10] or v3 [1.1])" },
	{ "data_file", "string", "File name of an external data file" },
	{ "data_file_raw", "bool", "The external data file must stay valid as a raw image" },
	{ "encrypt.iter-time", "number", "Time to spend in PBKDF in milliseconds" },
	{ "encrypt.keyslot", "number", "Select a single keyslot to modify explicitly" },
	{ "encrypt.new-secret", "string",
	  "New secret to set in the matching keyslots. Empty string to erase" },
	{ "encrypt.old-secret", "string", "Select all keyslots that match this password" },
	{ "encrypt.state", "string", "Select new state of affected keyslots (active/inactive)" },
	{ "lazy_refcounts", "bool", "Postpone refcount updates" },
	{ "refcount_bits", "number", "Width of a reference count entry in bits" },
	{ "size", "size", "Virtual disk size" },
	{ NULL, NULL, NULL },
};
