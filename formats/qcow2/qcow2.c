/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 driver: probe, open (header, extensions, feature bits, L1,
 * refcount table, snapshot table, backing file), close, the request entry
 * point, flush, truncate, info and check.
 *
 * Header rewrites only touch the fixed header fields (the first
 * header_length bytes, kept as read), so header extensions and fields of a
 * newer spec survive byte for byte.
 */
#include "qcow2.h"
#include "direct.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-check.h"

#define QCOW2_DEFAULT_CACHE_BUDGET (32u * 1024 * 1024)
#define QCOW2_MIN_CACHE_TABLES 4

/* ---- small shared helpers ---- */

void qcow2_unlocked_io_begin(struct qcow2_state *s)
{
	s->unlocked_io++;
}

void qcow2_unlocked_io_end(struct qcow2_state *s)
{
	if (--s->unlocked_io == 0)
		vs_co_queue_wake_all(&s->drain_waiters);
}

void qcow2_drain_unlocked(struct qcow2_state *s)
{
	while (s->unlocked_io)
		vs_co_queue_wait(&s->drain_waiters);
}

int qcow2_header_update(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	if (node->read_only)
		return -EPERM;
	qcow2_header_encode(&s->hdr, s->hdr_raw);
	ret = vs_node_pwrite(node->file, 0, s->hdr_raw, s->hdr.header_length, 0);
	if (ret < 0)
		return ret;
	return vs_node_flush(node->file);
}

int qcow2_header_set(struct vs_node *node, const struct qcow2_header *h)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_header old = s->hdr;
	int ret;

	s->hdr = *h;
	ret = qcow2_header_update(node);
	if (ret < 0)
		s->hdr = old;
	return ret;
}

int qcow2_write_table_entry(struct vs_node *node, int meta, uint64_t table_offset, uint64_t idx,
			    uint64_t value)
{
	uint64_t off = table_offset + idx * 8;
	uint8_t be[8];
	int ret;

	ret = qcow2_overlap_check(node, meta, off, 8);
	if (ret < 0)
		return ret;
	vs_put_be64(be, value);
	return vs_node_pwrite(node->file, off, be, 8, 0);
}

int qcow2_mark_corrupt(struct vs_node *node, const char *why, uint64_t offset)
{
	struct qcow2_state *s = qcow2_state(node);

	if (s->corrupt)
		return -EIO;
	s->corrupt = true;
	/* Writes that went straight to the file stop too: at home they fail. */
	vs_node_direct_change_begin(node);
	vs_node_direct_change_end(node);
	if (node->read_only) {
		vs_warn("qcow2: image '%s' is corrupt: %s (offset 0x%" PRIx64 ")", node->filename,
			why, offset);
		return -EIO;
	}
	vs_warn("qcow2: marking image '%s' as corrupt: %s (offset 0x%" PRIx64
		"); further corruption events will be suppressed; "
		"run 'vstor-img check -r all' to repair it",
		node->filename, why, offset);
	if (s->hdr.version >= 3) {
		s->hdr.incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
		(void)qcow2_header_update(node);
	}
	return -EIO;
}

int qcow2_mark_dirty(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	if (!s->lazy_refcounts || s->dirty)
		return 0;
	/* Before the first write that leaves refcounts behind on disk. */
	ret = vs_node_flush(node->file);
	if (ret < 0)
		return ret;
	s->hdr.incompatible_features |= QCOW2_INCOMPAT_DIRTY;
	ret = qcow2_header_update(node);
	if (ret < 0) {
		s->hdr.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
		return ret;
	}
	s->dirty = true;
	return 0;
}

/* Lock held: write back the metadata caches (refcounts before the L2 tables that need them). */
int qcow2_flush_metadata(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	if (node->read_only || !s->l2_cache)
		return 0;
	/* What is flushed must not count clusters nobody uses. */
	ret = qcow2_release_reservations(node);
	if (ret < 0)
		return ret;
	ret = qcow2_cache_writeback(node, s->l2_cache);
	if (ret < 0)
		return ret;
	return qcow2_cache_writeback(node, s->rb_cache);
}

uint64_t qcow2_l1_size_for(const struct qcow2_state *s, uint64_t virtual_size)
{
	uint64_t span = s->l2_entries << s->cluster_bits;

	/* Not (size + span - 1) / span: that wraps for sizes near 2^64. */
	return virtual_size / span + (virtual_size % span != 0);
}

int qcow2_l1_write_entry(struct vs_node *node, uint32_t idx)
{
	struct qcow2_state *s = qcow2_state(node);

	return qcow2_write_table_entry(node, QCOW2_META_L1, s->l1_offset, idx, s->l1[idx]);
}

/* Lock held. Make the active L1 table hold at least @min_size entries. */
int qcow2_l1_grow(struct vs_node *node, uint64_t min_size, bool exact)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t new_size = min_size, bytes, old_offset = s->l1_offset;
	uint32_t old_size = s->l1_size;
	uint64_t *nl1;
	uint8_t *buf;
	int64_t off;
	int ret;

	if (min_size <= s->l1_size)
		return 0;
	if (!exact) {
		uint64_t grown = (uint64_t)s->l1_size + s->l1_size / 2;

		if (grown > new_size)
			new_size = grown;
		if (new_size > QCOW2_MAX_L1_SIZE / 8 && min_size <= QCOW2_MAX_L1_SIZE / 8)
			new_size = QCOW2_MAX_L1_SIZE / 8;
	}
	if (new_size > QCOW2_MAX_L1_SIZE / 8)
		return -EFBIG;
	bytes = (new_size * 8 + s->cluster_size - 1) & ~(s->cluster_size - 1);
	nl1 = calloc(new_size, sizeof(uint64_t));
	buf = vs_buf_zalloc(bytes);
	if (!nl1 || !buf) {
		free(nl1);
		free(buf);
		return -ENOMEM;
	}
	memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
	for (uint64_t i = 0; i < s->l1_size; i++)
		vs_put_be64(buf + 8 * i, s->l1[i]);

	off = qcow2_alloc_clusters(node, bytes >> s->cluster_bits);
	if (off < 0) {
		ret = (int)off;
		goto fail;
	}
	/* The new table and its refcounts are on disk before the header points to it. */
	ret = qcow2_cache_flush(node, s->rb_cache);
	if (ret < 0)
		goto fail_free;
	ret = qcow2_overlap_check(node, 0, (uint64_t)off, bytes);
	if (ret < 0)
		goto fail_free;
	ret = vs_node_pwrite(node->file, (uint64_t)off, buf, bytes, 0);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0)
		goto fail_free;
	struct qcow2_header h = s->hdr;

	h.l1_table_offset = (uint64_t)off;
	h.l1_size = (uint32_t)new_size;
	ret = qcow2_header_set(node, &h);
	if (ret < 0)
		goto fail_free;
	free(s->l1);
	free(buf);
	s->l1 = nl1;
	s->l1_size = (uint32_t)new_size;
	s->l1_offset = (uint64_t)off;
	if (old_offset && old_size)
		return qcow2_free_clusters(node, old_offset,
					   ((uint64_t)old_size * 8 + s->cluster_size - 1) &
						   ~(s->cluster_size - 1),
					   false);
	return 0;
fail_free:
	(void)qcow2_free_clusters(node, (uint64_t)off, bytes, false);
fail:
	free(nl1);
	free(buf);
	return ret;
}

/* ---- probe and open ---- */

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	if (len >= 8 && vs_be32(buf) == QCOW2_MAGIC &&
	    (vs_be32(buf + 4) == 2 || vs_be32(buf + 4) == 3))
		return 100;
	return 0;
}

static const char *feature_name(const struct qcow2_state *s, uint8_t type, unsigned bit)
{
	for (unsigned i = 0; i < s->nb_features; i++)
		if (s->features[i].type == type && s->features[i].bit == bit)
			return s->features[i].name;
	return NULL;
}

/* Parse the header extensions in @buf (the header cluster, @len bytes). */
static int parse_extensions(struct vs_node *node, const uint8_t *buf, size_t len,
			    struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t off = s->hdr.header_length;
	uint64_t end = s->hdr.backing_file_offset ? s->hdr.backing_file_offset : len;

	if (end > len)
		end = len;
	while (off + 8 <= end) {
		uint32_t type = vs_be32(buf + off);
		uint32_t elen = vs_be32(buf + off + 4);
		const uint8_t *data = buf + off + 8;

		if (type == QCOW2_EXT_END)
			break;
		if (elen > end - off - 8)
			return vs_error_set(err, -EINVAL,
					    "qcow2: header extension 0x%08x too large", type);
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (elen >= sizeof(s->backing_fmt))
				return vs_error_set(err, -EINVAL,
						    "qcow2: backing format name too long");
			memcpy(s->backing_fmt, data, elen);
			s->backing_fmt[elen] = 0;
			break;
		case QCOW2_EXT_FEATURE_TABLE: {
			unsigned n = elen / 48;

			free(s->features);
			s->features = calloc(n ? n : 1, sizeof(*s->features));
			if (!s->features)
				return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
			s->nb_features = n;
			for (unsigned i = 0; i < n; i++) {
				s->features[i].type = data[48 * i];
				s->features[i].bit = data[48 * i + 1];
				memcpy(s->features[i].name, data + 48 * i + 2, 46);
				s->features[i].name[46] = 0;
			}
			break;
		}
		case QCOW2_EXT_CRYPTO: {
			int ret = qcow2_crypto_parse_ext(node, data, elen, err);

			if (ret < 0)
				return ret;
			break;
		}
		case QCOW2_EXT_BITMAPS: {
			int ret = qcow2_bitmaps_parse_ext(node, data, elen, err);

			if (ret < 0)
				return ret;
			break;
		}
		case QCOW2_EXT_DATA_FILE:
			if (elen > QCOW2_MAX_DATA_FILE_NAME)
				return vs_error_set(err, -EINVAL, "qcow2: data file name too long");
			memcpy(s->data_file_name, data, elen);
			s->data_file_name[elen] = 0;
			if (strlen(s->data_file_name) != elen)
				return vs_error_set(err, -EINVAL,
						    "qcow2: data file name contains a NUL byte");
			break;
		default:
			/* Unknown or unused here: stays in the file untouched. */
			break;
		}
		off += 8 + ((elen + 7ull) & ~7ull);
	}
	return 0;
}

static int check_features(struct vs_node *node, const struct vs_open_opts *opts,
			  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t unknown = s->hdr.incompatible_features & ~QCOW2_INCOMPAT_KNOWN;

	if (unknown) {
		char names[256] = "";
		size_t used = 0;

		for (unsigned bit = 0; bit < 64; bit++) {
			const char *name;
			int n;

			if (!(unknown & (1ull << bit)))
				continue;
			name = feature_name(s, 0, bit);
			if (name && name[0])
				n = snprintf(names + used, sizeof(names) - used, "%s%s",
					     used ? ", " : "", name);
			else
				n = snprintf(names + used, sizeof(names) - used,
					     "%sUnknown incompatible feature: %" PRIx64,
					     used ? ", " : "", (uint64_t)1 << bit);
			if (n < 0 || (size_t)n >= sizeof(names) - used)
				break;
			used += (size_t)n;
		}
		return vs_error_set(err, -ENOTSUP, "qcow2: '%s' uses unsupported feature(s): %s",
				    node->filename, names);
	}
	/* As QEMU: the raw bit means nothing without a data file. */
	if (!(s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) &&
	    (s->hdr.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW))
		return vs_error_set(err, -EINVAL, "data-file-raw requires a data file");
	/*
	 * A corrupt image opens read-write only for check (for_check, as QEMU's
	 * BDRV_O_CHECK): the check callback may then repair it, while every
	 * write stays refused because s->corrupt is set.
	 */
	if ((s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) && !opts->read_only &&
	    !opts->for_check)
		return vs_error_set(
			err, -EACCES,
			"qcow2: '%s' is marked corrupt and cannot be opened read/write; "
			"run 'vstor-img check -r all' to repair it",
			node->filename);
	return 0;
}

/*
 * The external data file of an image with the incompatible bit: the name of
 * the header extension, opened as a local file with the image's mode. As
 * qemu 7.2 does, a relative name is taken as it is (relative to the
 * current directory), not resolved against the image's directory.
 */
static int open_data_file(struct vs_node *node, const struct vs_open_opts *opts,
			  struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct vs_open_opts o = { 0 };
	struct vs_error inner = { 0 };
	int ret;

	s->data_file_raw = !!(s->hdr.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
	if (!(s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE))
		return 0;
	o.format = "file";
	o.read_only = node->read_only;
	o.force_share = node->force_share;
	o.cache = node->cache;
	/* The caller's name (data-file.filename=): trusted, any protocol. */
	if (opts->data_file) {
		o.filename = opts->data_file;
		o.format = NULL;
		ret = vs_protocol_open(&s->data_file, opts->data_file, &o, &inner);
		if (ret < 0)
			return vs_error_set(err, ret, "Could not open '%s': %s", opts->data_file,
					    inner.msg[0] ? inner.msg : strerror(-ret));
		return 0;
	}
	if (!s->data_file_name[0])
		return vs_error_set(err, -EINVAL, "'data-file' is required for this image");
	o.filename = s->data_file_name;
	/*
	 * Always a local file: a name from the image must not make us connect
	 * anywhere ("nbd://...") or reach a pool volume through a resolver.
	 */
	s->data_file = vs_node_new(&vs_driver_file, s->data_file_name, &o);
	if (!s->data_file)
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	ret = vs_driver_file.open(s->data_file, &o, &inner);
	if (ret < 0) {
		vs_node_free(s->data_file);
		s->data_file = NULL;
		/* qemu-img info shows an image whose data file is gone. */
		if (opts->no_io && node->read_only) {
			s->data_file_missing = true;
			return 0;
		}
		return vs_error_set(err, ret, "Could not open '%s': %s", s->data_file_name,
				    strerror(-ret));
	}
	return 0;
}

static int read_header(struct vs_node *node, uint8_t **cluster0, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t fsize = vs_node_size(node->file);
	uint8_t first[512];
	uint32_t cbits;
	uint64_t cs, len;
	uint8_t *buf;
	int ret;

	memset(first, 0, sizeof(first));
	ret = vs_node_pread(node->file, 0, first, fsize < 512 ? (size_t)fsize : 512);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "qcow2: reading the header of '%s'",
					   node->filename);
	cbits = vs_be32(first + 20);
	if (cbits < QCOW2_MIN_CLUSTER_BITS || cbits > QCOW2_MAX_CLUSTER_BITS)
		return qcow2_header_decode(first, fsize < 512 ? fsize : 512, &s->hdr, err);
	cs = 1ull << cbits;
	len = fsize < cs ? fsize : cs;
	buf = vs_buf_zalloc(cs);
	if (!buf)
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	ret = vs_node_pread(node->file, 0, buf, len);
	if (ret < 0) {
		free(buf);
		return vs_error_setf_errno(err, ret, "qcow2: reading the header of '%s'",
					   node->filename);
	}
	ret = qcow2_header_decode_flags(buf, len, &s->hdr, s->for_check ? QCOW2_HDR_FOR_CHECK : 0,
					err);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	free(s->hdr_raw);
	s->hdr_raw = malloc(s->hdr.header_length);
	if (!s->hdr_raw) {
		free(buf);
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	}
	memcpy(s->hdr_raw, buf, s->hdr.header_length);
	*cluster0 = buf;
	return 0;
}

static void free_metadata(struct qcow2_state *s)
{
	free(s->l1);
	s->l1 = NULL;
	free(s->reftable);
	s->reftable = NULL;
	qcow2_snapshots_free(s->snaps, s->nb_snaps);
	s->snaps = NULL;
	s->nb_snaps = 0;
	s->snap_table_size = 0;
}

/* L1, refcount table, snapshot table and caches, from s->hdr. */
/* The snapshot whose id, else whose name, is @key (QEMU's order); NULL if none. */
static const struct qcow2_snapshot *find_snapshot(const struct qcow2_state *s, const char *key)
{
	for (unsigned i = 0; i < s->nb_snaps; i++)
		if (!strcmp(s->snaps[i].id, key))
			return &s->snaps[i];
	for (unsigned i = 0; i < s->nb_snaps; i++)
		if (!strcmp(s->snaps[i].name, key))
			return &s->snaps[i];
	return NULL;
}

/*
 * Read-only open of an internal snapshot: its L1 table replaces the active
 * one in memory. Clusters reached from it are shared (COPIED clear), and the
 * node is read-only, so nothing is ever written through it.
 */
static int load_snapshot_l1(struct vs_node *node, const char *key, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	const struct qcow2_snapshot *sn = find_snapshot(s, key);
	uint64_t *l1;
	uint8_t *buf;
	int ret;

	if (!sn)
		return vs_error_set(err, -ENOENT, "qcow2: no snapshot '%s' in '%s'", key,
				    node->filename);
	ret = qcow2_snapshot_check_l1(&s->hdr, sn, vs_node_size(node->file), err);
	if (ret < 0)
		return ret;
	if (sn->l1_size < qcow2_l1_size_for(s, sn->disk_size))
		return vs_error_set(
			err, -EINVAL,
			"qcow2: the L1 table of snapshot '%s' is too small for its size", key);
	l1 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(uint64_t));
	buf = vs_buf_alloc((size_t)sn->l1_size * 8 + 1);
	if (!l1 || !buf) {
		free(l1);
		free(buf);
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory for an L1 table");
	}
	ret = sn->l1_size ?
		      vs_node_pread(node->file, sn->l1_table_offset, buf, (size_t)sn->l1_size * 8) :
		      0;
	if (ret < 0) {
		free(l1);
		free(buf);
		return vs_error_setf_errno(err, ret, "qcow2: reading the L1 table of snapshot '%s'",
					   key);
	}
	for (uint32_t i = 0; i < sn->l1_size; i++)
		l1[i] = vs_be64(buf + 8 * i);
	free(buf);
	free(s->l1);
	s->l1 = l1;
	s->l1_size = sn->l1_size;
	s->l1_offset = sn->l1_table_offset;
	return 0;
}

static int load_metadata(struct vs_node *node, const struct vs_open_opts *opts,
			 struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t fsize = vs_node_size(node->file);
	struct qcow2_snapshot_table t;
	uint64_t need, n;
	uint8_t *buf;
	int ret;

	s->l1_size = s->hdr.l1_size;
	s->l1_offset = s->hdr.l1_table_offset;
	need = qcow2_l1_size_for(s, s->hdr.size);
	if (s->l1_size < need)
		return vs_error_set(err, -EINVAL,
				    "qcow2: L1 table is too small for the image size");
	if (s->l1_size && (s->l1_offset < s->cluster_size || s->l1_offset > fsize ||
			   s->l1_offset + (uint64_t)s->l1_size * 8 > fsize))
		return vs_error_set(err, -EINVAL, "qcow2: L1 table lies outside the image file");
	s->l1 = calloc(s->l1_size ? s->l1_size : 1, sizeof(uint64_t));
	buf = vs_buf_alloc((size_t)s->l1_size * 8);
	if (!s->l1 || !buf) {
		free(buf);
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory for the L1 table");
	}
	if (s->l1_size) {
		ret = vs_node_pread(node->file, s->l1_offset, buf, (size_t)s->l1_size * 8);
		if (ret < 0) {
			free(buf);
			return vs_error_setf_errno(err, ret, "qcow2: reading the L1 table");
		}
	}
	for (uint32_t i = 0; i < s->l1_size; i++)
		s->l1[i] = vs_be64(buf + 8 * i);
	free(buf);

	s->no_reftable = false;
	if (s->for_check && (!s->hdr.refcount_table_offset || !s->hdr.refcount_table_clusters ||
			     s->hdr.refcount_table_offset >= fsize)) {
		/* Nothing to load: only the check (which reads the file itself) may run. */
		s->no_reftable = true;
		s->corrupt = true;
	} else {
		ret = qcow2_refcount_load(node, err);
		if (ret < 0)
			return ret;
	}
	s->free_hint = 0;

	memset(&t, 0, sizeof(t));
	if (s->hdr.nb_snapshots) {
		ret = qcow2_snapshot_table_read(node->file, &s->hdr, 0, &t, err);
		if (ret < 0)
			return ret;
		s->snaps = t.sn;
		s->nb_snaps = t.nb;
		s->snap_table_size = t.size;
	}
	if (opts && opts->snapshot) {
		ret = load_snapshot_l1(node, opts->snapshot, err);
		if (ret < 0)
			return ret;
	}

	if (!s->l2_cache) {
		uint64_t budget = opts && opts->l2_cache_size ? opts->l2_cache_size :
								QCOW2_DEFAULT_CACHE_BUDGET;
		uint64_t tables = qcow2_l1_size_for(s, s->hdr.size);

		n = budget >> s->cluster_bits;
		if (!(opts && opts->l2_cache_size) && tables < n)
			n = tables; /* cover the whole image, no more */
		if (n < QCOW2_MIN_CACHE_TABLES)
			n = QCOW2_MIN_CACHE_TABLES;
		s->l2_cache = qcow2_cache_new((unsigned)n, s->cluster_size, QCOW2_META_L2);
		budget = opts && opts->refcount_cache_size ? opts->refcount_cache_size :
							     (n << s->cluster_bits) / 4;
		n = budget >> s->cluster_bits;
		if (n < QCOW2_MIN_CACHE_TABLES)
			n = QCOW2_MIN_CACHE_TABLES;
		s->rb_cache = qcow2_cache_new((unsigned)n, s->cluster_size, QCOW2_META_REFBLOCK);
		if (!s->l2_cache || !s->rb_cache)
			return vs_error_set(err, -ENOMEM, "qcow2: out of memory for the caches");
	}
	return 0;
}

static void set_geometry(struct qcow2_state *s)
{
	s->cluster_bits = s->hdr.cluster_bits;
	s->cluster_size = 1ull << s->cluster_bits;
	s->extl2 = !!(s->hdr.incompatible_features & QCOW2_INCOMPAT_EXTL2);
	s->l2_entry_size = s->extl2 ? 16 : 8;
	s->l2_bits = s->cluster_bits - (s->extl2 ? 4 : 3);
	s->l2_entries = 1ull << s->l2_bits;
	s->subcluster_bits = s->extl2 ? s->cluster_bits - 5 : s->cluster_bits;
	s->subcluster_size = 1ull << s->subcluster_bits;
	s->csize_shift = qcow2_csize_shift(s->cluster_bits);
	s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
	s->refcount_order = s->hdr.refcount_order;
	s->refcount_bits = 1u << s->refcount_order;
	s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
	s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
	s->lazy_refcounts = s->hdr.version >= 3 &&
			    (s->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
}

static void qcow2_free_state(struct qcow2_state *s)
{
	free_metadata(s);
	qcow2_cache_free(s->l2_cache);
	s->l2_cache = NULL;
	qcow2_cache_free(s->rb_cache);
	s->rb_cache = NULL;
	free(s->features);
	s->features = NULL;
	free(s->hdr_raw);
	s->hdr_raw = NULL;
	qcow2_bitmaps_free(&s->bitmaps);
	qcow2_crypto_close(s);
	if (s->data_file) {
		vs_node_close(s->data_file);
		s->data_file = NULL;
	}
}

static int qcow2_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t keep_autoclear;
	uint8_t *c0 = NULL;
	int ret;

	s->read_only = node->read_only;
	s->for_check = opts->for_check;
	ret = read_header(node, &c0, err);
	if (ret < 0)
		goto fail;
	ret = parse_extensions(node, c0,
			       (size_t)(vs_node_size(node->file) < (1ull << s->hdr.cluster_bits) ?
						vs_node_size(node->file) :
						(1ull << s->hdr.cluster_bits)),
			       err);
	if (ret < 0)
		goto fail;
	if (s->hdr.backing_file_offset && s->hdr.backing_file_size) {
		memcpy(s->backing_file, c0 + s->hdr.backing_file_offset, s->hdr.backing_file_size);
		s->backing_file[s->hdr.backing_file_size] = 0;
	}
	ret = check_features(node, opts, err);
	if (ret < 0)
		goto fail;
	ret = open_data_file(node, opts, err);
	if (ret < 0)
		goto fail;

	if ((s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) && !node->read_only &&
	    !opts->no_repair) {
		struct vs_check_result res;

		vs_warn("qcow2: '%s' was not closed cleanly; repairing its refcounts",
			node->filename);
		memset(&res, 0, sizeof(res));
		ret = qcow2_check_image(node->file, &res, VS_CHECK_FIX_ERRORS | VS_CHECK_FIX_LEAKS,
					err);
		if (ret < 0)
			goto fail;
		free(c0);
		c0 = NULL;
		ret = read_header(node, &c0, err);
		if (ret < 0)
			goto fail;
		if (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
			ret = vs_error_set(err, -EIO, "qcow2: '%s': repair left the dirty bit set",
					   node->filename);
			goto fail;
		}
	}
	free(c0);
	c0 = NULL;

	set_geometry(s);
	ret = qcow2_crypto_open(node, opts, err);
	if (ret < 0)
		goto fail;
	s->dirty = !!(s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY);
	s->corrupt = !!(s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT);
	ret = load_metadata(node, opts, err);
	if (ret < 0)
		goto fail;

	/*
	 * Opens for writing clear the bits of extensions they do not keep
	 * valid; the bitmaps they do keep (qcow2-bitmap.c). A check (-r) keeps
	 * the known bits, whose extensions it repairs, and clears the unknown
	 * ones as QEMU does on every writable open.
	 */
	if (opts->for_check)
		keep_autoclear = QCOW2_AUTOCLEAR_KNOWN;
	else
		keep_autoclear = s->bitmaps.ext_nb ? QCOW2_AUTOCLEAR_BITMAPS : 0;
	/* Writes go to a raw data file in place: it stays valid. */
	if (s->data_file)
		keep_autoclear |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	if (!node->read_only && (s->hdr.autoclear_features & ~keep_autoclear)) {
		s->hdr.autoclear_features &= keep_autoclear;
		ret = qcow2_header_update(node);
		if (ret < 0) {
			vs_error_setf_errno(err, ret, "qcow2: updating the header of '%s'",
					    node->filename);
			goto fail;
		}
	}
	ret = qcow2_bitmaps_load(node, !node->read_only && !opts->for_check, !opts->for_check, err);
	if (ret < 0)
		goto fail;

	node->size = s->hdr.size;
	if (opts->snapshot)
		node->size = find_snapshot(s, opts->snapshot)->disk_size;
	node->cluster_size = s->cluster_size;
	/* Encrypted data is en/decrypted in whole sectors: smaller requests are RMW'd. */
	node->limits.request_align = s->hdr.crypt_method ? 512 : 1;
	node->limits.mem_align = 1;
	node->limits.max_transfer = 0;
	node->caps = VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_BLOCK_STATUS | VS_CAP_BACKING |
		     VS_CAP_FLUSH;

	if (s->backing_file[0]) {
		node->backing_name = s->backing_file;
		node->backing_fmt = s->backing_fmt[0] ? s->backing_fmt : NULL;
	}
	return 0;
fail:
	free(c0);
	qcow2_free_state(s);
	return ret;
}

static void qcow2_close(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);

	vs_co_mutex_lock(&s->lock);
	qcow2_drain_unlocked(s);
	if (!node->read_only && s->l2_cache) {
		int ret = qcow2_bitmaps_store(node);

		if (ret < 0)
			vs_warn("qcow2: '%s': could not store the bitmaps: %s; they stay in_use",
				node->filename, strerror(-ret));
		ret = qcow2_flush_metadata(node);

		if (ret == 0 && s->data_file)
			ret = vs_node_flush(s->data_file);
		if (ret == 0)
			ret = vs_node_flush(node->file);
		if (ret == 0 && s->npunch)
			ret = qcow2_punch_pending(node);
		/* Everything is on disk: the refcounts are right again. */
		if (ret == 0 && s->dirty && !s->corrupt) {
			s->hdr.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
			if (qcow2_header_update(node) == 0)
				s->dirty = false;
		}
	}
	vs_co_mutex_unlock(&s->lock);
	qcow2_free_state(s);
}

/* ---- requests ---- */

static int qcow2_flush(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	int ret;

	vs_co_mutex_lock(&s->lock);
	ret = qcow2_flush_metadata(node);
	/* Freed clusters waiting for their hole: now nothing on disk points at them. */
	if (ret == 0 && s->npunch)
		ret = qcow2_punch_pending(node);
	vs_co_mutex_unlock(&s->lock);
	if (ret == 0 && s->data_file)
		ret = vs_node_flush(s->data_file);
	if (ret < 0)
		return ret;
	return vs_node_flush(node->file);
}

/* The generic layer adds no FUA to compressed writes: honour writethrough here. */
static int qcow2_write_compressed(struct vs_node *node, uint64_t offset, uint64_t len,
				  struct iovec *iov, int niov)
{
	int ret;

	/* As QEMU: compressed clusters are never encrypted, so they are refused. */
	if (qcow2_state(node)->hdr.crypt_method)
		return -ENOTSUP;
	/* Nor with an external data file: the data must stay at its guest offset. */
	if (qcow2_state(node)->data_file)
		return -ENOTSUP;
	ret = qcow2_co_write_compressed(node, offset, len, iov, niov);

	if (ret == 0 && node->writethrough)
		ret = qcow2_flush(node);
	return ret;
}

static int qcow2_submit(struct vs_node *node, struct vs_req *req)
{
	struct qcow2_state *s = qcow2_state(node);

	if (s->data_file_missing)
		return -EIO;
	/* Dirty tracking: bits in memory, set before the data can change. */
	if (s->bitmaps.nb_tracking &&
	    (req->op == VS_OP_WRITE || req->op == VS_OP_DISCARD || req->op == VS_OP_WRITE_ZEROES))
		qcow2_bitmaps_mark(&s->bitmaps, req->offset, req->len);
	switch (req->op) {
	case VS_OP_READ:
		return qcow2_co_readv(node, req->offset, req->len, req->iov, req->niov);
	case VS_OP_WRITE:
		if (req->flags & VS_REQ_COMPRESSED)
			return qcow2_write_compressed(node, req->offset, req->len, req->iov,
						      req->niov);
		return qcow2_co_writev(node, req->offset, req->len, req->iov, req->niov);
	case VS_OP_FLUSH:
		return qcow2_flush(node);
	case VS_OP_DISCARD:
		return qcow2_co_zero(node, req->offset, req->len, 0, true);
	case VS_OP_WRITE_ZEROES:
		return qcow2_co_zero(node, req->offset, req->len, req->flags, false);
	case VS_OP_BLOCK_STATUS:
		return qcow2_co_block_status(node, req);
	}
	return -ENOTSUP;
}

/* ---- truncate ---- */

static int qcow2_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
			  bool exact, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t old = node->size;
	int ret;

	(void)exact;
	if (s->corrupt)
		return vs_error_set(err, -EIO, "qcow2: '%s' is corrupt", node->filename);
	if (size == old)
		return 0;
	if (size & 511)
		return vs_error_set(err, -EINVAL,
				    "qcow2: the new size must be a multiple of 512 bytes");
	/*
	 * A v2 snapshot table entry has no disk size: a snapshot taken at the
	 * old size could not be reverted to it (QEMU's rule and message).
	 */
	if (s->nb_snaps && s->hdr.version < 3)
		return vs_error_set(err, -ENOTSUP, "Can't resize a v2 image which has snapshots");
	if (size < old) {
		uint64_t cend = (size + s->cluster_size - 1) & ~(s->cluster_size - 1);

		/*
		 * v3 snapshots keep their own size: the clusters they share with
		 * the cut range only lose the active image's reference, as QEMU does.
		 */
		if (prealloc != VS_PREALLOC_OFF)
			return vs_error_set(err, -ENOTSUP,
					    "qcow2: preallocation is not allowed when shrinking");
		/* Zero the tail of the last cluster so a later growth shows zeroes there. */
		if (cend > size) {
			ret = qcow2_co_zero(node, size, (cend < old ? cend : old) - size, 0, false);
			if (ret == -ENOTSUP)
				ret = 0; /* v2 with backing: the area is zeroed when it grows again */
			if (ret < 0)
				return vs_error_setf_errno(err, ret, "qcow2: shrinking '%s'",
							   node->filename);
		}
		vs_co_mutex_lock(&s->lock);
		ret = qcow2_discard_tail(node, cend);
		if (ret == 0)
			ret = qcow2_shrink_file(node);
	} else {
		uint64_t need;

		/* As QEMU: a raw data file has every cluster mapped, the new ones too. */
		if (s->data_file_raw && prealloc == VS_PREALLOC_OFF)
			prealloc = VS_PREALLOC_METADATA;
		vs_co_mutex_lock(&s->lock);
		need = qcow2_l1_size_for(s, size);
		ret = qcow2_l1_grow(node, need, true);
		if (ret == 0 && prealloc != VS_PREALLOC_OFF)
			ret = qcow2_preallocate(node, old, size - old, prealloc);
		/* The data file grows with the image, as qemu-img resize grows it. */
		if (ret == 0 && s->data_file && vs_node_size(s->data_file) < size)
			ret = vs_node_truncate(s->data_file, size, VS_PREALLOC_OFF, false, NULL);
	}
	if (ret == 0)
		ret = qcow2_flush_metadata(node);
	if (ret == 0) {
		struct qcow2_header h = s->hdr;

		h.size = size;
		ret = qcow2_header_set(node, &h);
		if (ret == 0)
			node->size = size;
	}
	if (ret == 0)
		ret = qcow2_bitmaps_resize(node, size);
	vs_co_mutex_unlock(&s->lock);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "qcow2: resizing '%s'", node->filename);
	/*
	 * Grown over a backing file that is longer than the image was: the new
	 * area must read zeroes (as it did, past the old end), not the backing
	 * file's data, so it is zeroed explicitly (v2 writes zero data).
	 */
	if (size > old && node->backing && vs_node_size(node->backing) > old) {
		uint64_t end = vs_node_size(node->backing) < size ? vs_node_size(node->backing) :
								    size;

		ret = vs_node_write_zeroes(node, old, end - old, 0);
		if (ret < 0)
			return vs_error_setf_errno(
				err, ret, "qcow2: zeroing the grown area of '%s'", node->filename);
	}
	return 0;
}

/* ---- info and check ---- */

static int qcow2_get_info(struct vs_node *node, struct vs_image_info *info)
{
	struct qcow2_state *s = qcow2_state(node);
	const struct qcow2_header *h = &s->hdr;

	info->cluster_size = s->cluster_size;
	info->dirty = !!(h->incompatible_features & QCOW2_INCOMPAT_DIRTY);
	info->encrypted = h->crypt_method != 0;
	if (s->backing_file[0]) {
		info->backing_filename = strdup(s->backing_file);
		if (!info->backing_filename)
			return -ENOMEM;
	}
	/*
	 * The name the backing file opened under (a pool resolves it), else the
	 * plain one; a json: name is its own full name, as in QEMU.
	 */
	if (node->backing && strncmp(s->backing_file, "json:", 5)) {
		info->full_backing_filename = strdup(node->backing->filename);
		if (!info->full_backing_filename)
			return -ENOMEM;
	} else if (s->backing_file[0]) {
		char path[PATH_MAX];

		if (vs_path_combine(path, sizeof(path), node->filename, s->backing_file) == 0) {
			info->full_backing_filename = strdup(path);
			if (!info->full_backing_filename)
				return -ENOMEM;
		}
	}
	snprintf(info->backing_format, sizeof(info->backing_format), "%s", s->backing_fmt);
	if (s->nb_snaps) {
		info->snapshots = calloc(s->nb_snaps, sizeof(*info->snapshots));
		if (!info->snapshots)
			return -ENOMEM;
		for (unsigned i = 0; i < s->nb_snaps; i++)
			qcow2_snapshot_to_info(&s->snaps[i], &info->snapshots[i]);
		info->nb_snapshots = s->nb_snaps;
	}
	snprintf(info->specific_type, sizeof(info->specific_type), "qcow2");
	info->nb_specific = 0;
	vs_info_add_str(info, "compat", h->version >= 3 ? "1.1" : "0.10");
	vs_info_add_str(info, "compression-type",
			h->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib");
	if (h->version >= 3)
		vs_info_add_bool(info, "lazy-refcounts", s->lazy_refcounts);
	vs_info_add_int(info, "refcount-bits", s->refcount_bits);
	if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
		if (s->data_file_name[0])
			vs_info_add_str(info, "data-file", s->data_file_name);
		vs_info_add_bool(info, "data-file-raw", s->data_file_raw);
	}
	if (h->version >= 3) {
		vs_info_add_bool(info, "corrupt",
				 !!(h->incompatible_features & QCOW2_INCOMPAT_CORRUPT));
		vs_info_add_bool(info, "extended-l2", s->extl2);
	}
	qcow2_crypto_info(node, info);
	return qcow2_bitmaps_info(node, info);
}

static int qcow2_check(struct vs_node *node, struct vs_check_result *res, unsigned fix)
{
	struct qcow2_state *s = qcow2_state(node);
	struct vs_error err = { 0 };
	int ret;

	vs_co_mutex_lock(&s->lock);
	qcow2_drain_unlocked(s);
	ret = qcow2_flush_metadata(node);
	if (ret == 0 && !node->read_only)
		ret = vs_node_flush(node->file);
	if (ret == 0 && !node->read_only && s->npunch)
		ret = qcow2_punch_pending(node);
	if (ret < 0)
		goto out;
	ret = qcow2_check_image_report(node->file, res, fix, node->check_report,
				       node->check_report_opaque, &err);
	if (fix && !node->read_only) {
		uint8_t *c0 = NULL;
		int r;

		/* The repair rewrote metadata behind our back: start over from the file. */
		qcow2_cache_drop_all(s->l2_cache);
		qcow2_cache_drop_all(s->rb_cache);
		free_metadata(s);
		/* Allocator state that described the old refcounts goes with them. */
		memset(s->cslot, 0, sizeof(s->cslot));
		s->npunch = 0;
		s->free_hint = 0;
		s->free_pending = false;
		r = read_header(node, &c0, &err);
		free(c0);
		if (r == 0) {
			set_geometry(s);
			s->dirty = !!(s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY);
			s->corrupt = !!(s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT);
			r = load_metadata(node, NULL, &err);
		}
		if (r < 0) {
			s->corrupt = true; /* no usable metadata: refuse further writes */
			if (ret == 0)
				ret = r;
		}
	}
out:
	vs_co_mutex_unlock(&s->lock);
	return ret;
}

const struct vs_driver vs_driver_qcow2 = {
	.name = "qcow2",
	.is_format = true,
	.state_size = sizeof(struct qcow2_state),
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.submit = qcow2_submit,
	.map = qcow2_map,
	.truncate = qcow2_truncate,
	.create = qcow2_create,
	.create_opts = qcow2_create_opts,
	.get_info = qcow2_get_info,
	.check = qcow2_check,
	.snapshot_create = qcow2_snapshot_create,
	.snapshot_apply = qcow2_snapshot_apply,
	.snapshot_delete = qcow2_snapshot_delete,
	.set_backing = qcow2_set_backing,
	.amend = qcow2_amend_all,
	.amend_opts = qcow2_amend_opts,
	.compact = qcow2_compact,
	.measure = qcow2_measure,
	.bitmap = qcow2_bitmap_op,
	.bitmap_list = qcow2_bitmaps_list,
	.bitmap_status = qcow2_bitmap_status,
	.supported_write_flags = VS_REQ_COMPRESSED,
	.supported_zero_flags = VS_REQ_MAY_UNMAP,
};

VS_DRIVER_REGISTER(vs_driver_qcow2)
