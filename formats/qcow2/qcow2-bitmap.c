/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 persistent dirty bitmaps, byte-compatible with QEMU 7.2
 * (docs/interop/qcow2.txt, "Bitmaps extension").
 *
 * Opened read-write, an image's bitmaps are loaded into memory and marked
 * in_use on disk (the autoclear bit cleared while the directory is rewritten
 * in place, as QEMU does), so that a crash leaves them visibly inconsistent.
 * Writes set bits in memory only. On close every consistent bitmap is
 * written to new clusters, a new directory is written and the header points
 * to it, and only then are the old tables freed: a crash at any point leaves
 * either the old bitmaps (in_use) or the new ones, and no leaked cluster
 * that a check would not also find referenced.
 */
#include "qcow2-bitmap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static uint64_t div_round_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static uint64_t bitmap_nbits(uint64_t disk_size, unsigned gran_bits)
{
	return div_round_up(disk_size, 1ull << gran_bits);
}

/* Table entries needed for a bitmap of @disk_size bytes of disk. */
static uint64_t bitmap_table_size(const struct qcow2_state *s, uint64_t disk_size,
				  unsigned gran_bits)
{
	return div_round_up(div_round_up(bitmap_nbits(disk_size, gran_bits), 8), s->cluster_size);
}

static size_t dir_entry_size(size_t name_size, size_t extra)
{
	return (QCOW2_BME_ENTRY_FIXED_SIZE + extra + name_size + 7) & ~(size_t)7;
}

static struct qcow2_bitmap *find_bitmap(struct qcow2_bitmaps *b, const char *name)
{
	for (unsigned i = 0; i < b->nb; i++)
		if (!strcmp(b->bm[i].name, name))
			return &b->bm[i];
	return NULL;
}

static void update_tracking(struct qcow2_bitmaps *b)
{
	b->nb_tracking = 0;
	for (unsigned i = 0; i < b->nb; i++)
		if (b->bm[i].data && !b->bm[i].inconsistent &&
		    (b->bm[i].flags & QCOW2_BME_FLAG_AUTO))
			b->nb_tracking++;
}

int qcow2_bitmaps_parse_ext(struct vs_node *node, const uint8_t *data, uint32_t len,
			    struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;

	if (len != QCOW2_BITMAPS_EXT_SIZE)
		return vs_error_set(err, -EINVAL, "bitmaps_ext: Invalid extension length");
	/* Ignored, as QEMU ignores them (and leaves the extension until the header changes). */
	if (!(s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
		if (s->hdr.version < 3)
			vs_warn("qcow2: '%s': this qcow2 v2 image contains bitmaps, but they may "
				"have been modified by a program without persistent bitmap "
				"support; so now they must all be considered inconsistent; some "
				"clusters may be leaked, run 'vstor-img check -r leaks' to fix",
				node->filename);
		else
			vs_warn("qcow2: '%s': a program lacking bitmap support modified this "
				"file, so all bitmaps are now considered inconsistent; some clusters "
				"may be leaked, run 'vstor-img check -r leaks' to fix",
				node->filename);
		b->ext_ignored = true;
		return 0;
	}
	b->ext_nb = vs_be32(data);
	b->ext_dir_size = vs_be64(data + 8);
	b->ext_dir_offset = vs_be64(data + 16);
	if (vs_be32(data + 4))
		return vs_error_set(err, -EINVAL, "bitmaps_ext: Reserved field is not zero");
	if (b->ext_nb > QCOW2_MAX_BITMAPS)
		return vs_error_set(err, -EINVAL,
				    "bitmaps_ext: Image has %" PRIu32 " bitmaps, exceeding the "
				    "QEMU supported maximum of %d",
				    b->ext_nb, QCOW2_MAX_BITMAPS);
	if (b->ext_nb == 0)
		return vs_error_set(err, -EINVAL, "found bitmaps extension with zero bitmaps");
	if (b->ext_dir_offset & ((1ull << s->hdr.cluster_bits) - 1))
		return vs_error_set(err, -EINVAL, "bitmaps_ext: invalid bitmap directory offset");
	if (b->ext_dir_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE)
		return vs_error_set(err, -EINVAL,
				    "bitmaps_ext: bitmap directory size (%" PRIu64
				    ") exceeds the maximum supported size (%u)",
				    b->ext_dir_size, QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
	return 0;
}

/* Decode and check one directory entry at @p (@avail bytes left); its size in *@esize. */
static int parse_dir_entry(struct qcow2_state *s, const uint8_t *p, uint64_t avail,
			   struct qcow2_bitmap *bm, size_t *esize, struct vs_error *err)
{
	uint32_t extra, name_size;
	uint64_t phys;

	if (avail < QCOW2_BME_ENTRY_FIXED_SIZE)
		return vs_error_set(err, -EINVAL, "Broken bitmap directory");
	memset(bm, 0, sizeof(*bm));
	bm->table_offset = vs_be64(p);
	bm->table_size = vs_be32(p + 8);
	bm->flags = vs_be32(p + 12);
	bm->gran_bits = p[17];
	name_size = vs_be16(p + 18);
	extra = vs_be32(p + 20);
	*esize = dir_entry_size(name_size, extra);
	if (*esize > avail || extra > avail)
		return vs_error_set(err, -EINVAL, "Broken bitmap directory");
	if (extra)
		return vs_error_set(err, -ENOTSUP, "Bitmap extra data is not supported");
	if (name_size == 0 || name_size > QCOW2_BME_MAX_NAME_SIZE)
		return vs_error_set(err, -EINVAL, "Broken bitmap directory");
	memcpy(bm->name, p + QCOW2_BME_ENTRY_FIXED_SIZE, name_size);
	bm->name[name_size] = 0;
	if (p[16] != QCOW2_BME_TYPE_DIRTY_TRACKING)
		return vs_error_set(err, -EINVAL, "Bitmap '%s' has unsupported type", bm->name);
	phys = (uint64_t)bm->table_size * s->cluster_size;
	if (bm->table_size > QCOW2_BME_MAX_TABLE_SIZE || phys > QCOW2_BME_MAX_PHYS_SIZE ||
	    bm->table_offset == 0 || qcow2_offset_in_cluster(s, bm->table_offset) ||
	    bm->gran_bits > QCOW2_BME_MAX_GRANULARITY_BITS ||
	    bm->gran_bits < QCOW2_BME_MIN_GRANULARITY_BITS ||
	    (bm->flags & QCOW2_BME_RESERVED_FLAGS) ||
	    (!(bm->flags & QCOW2_BME_FLAG_IN_USE) &&
	     bm->table_size != bitmap_table_size(s, s->hdr.size, bm->gran_bits)))
		return vs_error_set(err, -EINVAL, "Bitmap '%s' doesn't satisfy the constraints",
				    bm->name);
	bm->inconsistent = !!(bm->flags & QCOW2_BME_FLAG_IN_USE);
	/* Extra data refused above: the flag has nothing left to say. */
	bm->flags &= QCOW2_BME_FLAG_IN_USE | QCOW2_BME_FLAG_AUTO;
	return 0;
}

static int read_directory(struct vs_node *node, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	uint64_t pos = 0;
	uint8_t *dir;
	int ret = 0;

	if (b->ext_dir_size == 0 || b->ext_dir_offset + b->ext_dir_size < b->ext_dir_offset ||
	    b->ext_dir_offset + b->ext_dir_size > vs_node_size(node->file))
		return vs_error_set(err, -EINVAL, "Broken bitmap directory");
	dir = malloc(b->ext_dir_size);
	b->bm = calloc(b->ext_nb, sizeof(*b->bm));
	if (!dir || !b->bm) {
		free(dir);
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory for the bitmap directory");
	}
	ret = vs_node_pread(node->file, b->ext_dir_offset, dir, b->ext_dir_size);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Failed to read bitmap directory");
		goto out;
	}
	while (pos < b->ext_dir_size) {
		struct qcow2_bitmap *bm;
		size_t esize = 0;

		if (b->nb == b->ext_nb) {
			ret = vs_error_set(err, -EINVAL, "Broken bitmap directory");
			goto out;
		}
		bm = &b->bm[b->nb];
		ret = parse_dir_entry(s, dir + pos, b->ext_dir_size - pos, bm, &esize, err);
		if (ret < 0)
			goto out;
		if (find_bitmap(b, bm->name)) {
			ret = vs_error_set(err, -EINVAL, "Broken bitmap directory");
			goto out;
		}
		b->nb++;
		pos += esize;
	}
	if (b->nb != b->ext_nb)
		ret = vs_error_set(err, -EINVAL,
				   "Bitmap directory doesn't match the bitmaps extension");
out:
	free(dir);
	return ret;
}

/* Read the table and the bits of @bm (consistent, table size checked) into memory. */
static int load_data(struct vs_node *node, struct qcow2_bitmap *bm, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t nbits = bitmap_nbits(s->hdr.size, bm->gran_bits);
	uint64_t nbytes = div_round_up(nbits, 8);
	uint64_t fsize = vs_node_size(node->file);
	uint8_t *tbl, *data;
	int ret = 0;

	tbl = malloc((size_t)bm->table_size * 8 + 1);
	data = calloc(nbytes ? nbytes : 1, 1);
	if (!tbl || !data) {
		ret = vs_error_set(err, -ENOMEM, "qcow2: out of memory for bitmap '%s'", bm->name);
		goto fail;
	}
	if (bm->table_offset + (uint64_t)bm->table_size * 8 > fsize) {
		ret = vs_error_set(err, -EINVAL, "Bitmap '%s' doesn't satisfy the constraints",
				   bm->name);
		goto fail;
	}
	ret = vs_node_pread(node->file, bm->table_offset, tbl, (size_t)bm->table_size * 8);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not read bitmap '%s'", bm->name);
		goto fail;
	}
	for (uint32_t i = 0; i < bm->table_size; i++) {
		uint64_t e = vs_be64(tbl + 8 * i), off = e & QCOW2_BME_TABLE_OFFSET_MASK;
		uint64_t start = (uint64_t)i * s->cluster_size;
		uint64_t n = nbytes - start < s->cluster_size ? nbytes - start : s->cluster_size;

		if ((e & QCOW2_BME_TABLE_RESERVED_MASK) ||
		    (off && (e & QCOW2_BME_TABLE_ALL_ONES)) ||
		    (off && off + s->cluster_size > fsize)) {
			ret = vs_error_set(
				err, -EINVAL,
				"Could not read bitmap_table table from image for bitmap "
				"'%s': Invalid argument",
				bm->name);
			goto fail;
		}
		if (!off) {
			if (e & QCOW2_BME_TABLE_ALL_ONES)
				memset(data + start, 0xff, n);
			continue;
		}
		ret = vs_node_pread(node->file, off, data + start, n);
		if (ret < 0) {
			vs_error_setf_errno(err, ret, "Could not read bitmap '%s'", bm->name);
			goto fail;
		}
	}
	/* Bits past the end of the disk are not part of the bitmap. */
	if (nbits % 8)
		data[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
	free(tbl);
	bm->data = data;
	bm->nbits = nbits;
	return 0;
fail:
	free(tbl);
	free(data);
	return ret;
}

static void encode_dir_entry(const struct qcow2_bitmap *bm, uint8_t *p)
{
	size_t nlen = strlen(bm->name);

	memset(p, 0, dir_entry_size(nlen, 0));
	vs_put_be64(p, bm->table_offset);
	vs_put_be32(p + 8, bm->table_size);
	vs_put_be32(p + 12, bm->flags);
	p[16] = QCOW2_BME_TYPE_DIRTY_TRACKING;
	p[17] = (uint8_t)bm->gran_bits;
	vs_put_be16(p + 18, (uint16_t)nlen);
	memcpy(p + QCOW2_BME_ENTRY_FIXED_SIZE, bm->name, nlen);
}

static uint64_t directory_size(const struct qcow2_bitmaps *b)
{
	uint64_t size = 0;

	for (unsigned i = 0; i < b->nb; i++)
		if (!b->bm[i].transient)
			size += dir_entry_size(strlen(b->bm[i].name), 0);
	return size;
}

/* The bitmaps the directory holds (all but the transient ones). */
static unsigned nb_persistent(const struct qcow2_bitmaps *b)
{
	unsigned n = 0;

	for (unsigned i = 0; i < b->nb; i++)
		n += !b->bm[i].transient;
	return n;
}

static uint8_t *directory_encode(const struct qcow2_bitmaps *b, uint64_t size)
{
	uint8_t *dir = vs_buf_zalloc(size ? size : 1);
	uint64_t pos = 0;

	if (!dir)
		return NULL;
	for (unsigned i = 0; i < b->nb; i++) {
		if (b->bm[i].transient)
			continue;
		encode_dir_entry(&b->bm[i], dir + pos);
		pos += dir_entry_size(strlen(b->bm[i].name), 0);
	}
	return dir;
}

unsigned qcow2_bitmaps_ext_encode(const struct qcow2_bitmaps *b, uint8_t *out)
{
	if (!b->ext_nb)
		return 0;
	vs_put_be32(out, b->ext_nb);
	vs_put_be32(out + 4, 0);
	vs_put_be64(out + 8, b->ext_dir_size);
	vs_put_be64(out + 16, b->ext_dir_offset);
	return QCOW2_BITMAPS_EXT_SIZE;
}

/* The directory changed in place (flags only): QEMU's update_ext_header_and_dir_in_place. */
static int write_directory_in_place(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	uint8_t *dir;
	int ret;

	if (directory_size(b) != b->ext_dir_size)
		return -EINVAL;
	dir = directory_encode(b, b->ext_dir_size);
	if (!dir)
		return -ENOMEM;
	/* Without the bit while the directory is half written: a crash leaves bitmaps stale. */
	s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
	ret = qcow2_header_update(node);
	if (ret == 0)
		ret = vs_node_pwrite(node->file, b->ext_dir_offset, dir, b->ext_dir_size, 0);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret == 0) {
		s->hdr.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
		ret = qcow2_header_update(node);
	}
	free(dir);
	return ret;
}

int qcow2_bitmaps_load(struct vs_node *node, bool own, bool load, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	int ret;

	if (!b->ext_nb)
		return 0;
	ret = read_directory(node, err);
	if (ret < 0 || !load)
		return ret;
	if (!own) {
		/* Read-only: loaded all the same, so that a broken table fails the open as in QEMU. */
		for (unsigned i = 0; i < b->nb; i++) {
			if (b->bm[i].inconsistent)
				continue;
			ret = load_data(node, &b->bm[i], err);
			if (ret < 0)
				return ret;
		}
		return 0;
	}
	b->old = calloc(b->nb, sizeof(*b->old));
	if (!b->old)
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory for the bitmaps");
	for (unsigned i = 0; i < b->nb; i++) {
		struct qcow2_bitmap *bm = &b->bm[i];

		b->old[i].offset = bm->table_offset;
		b->old[i].size = bm->table_size;
		if (bm->inconsistent)
			continue;
		ret = load_data(node, bm, err);
		if (ret < 0)
			return ret;
		bm->flags |= QCOW2_BME_FLAG_IN_USE;
	}
	b->nb_old = b->nb;
	b->old_dir_offset = b->ext_dir_offset;
	b->old_dir_size = b->ext_dir_size;
	ret = write_directory_in_place(node);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Can't update bitmap directory");
	b->owned = true;
	update_tracking(b);
	return 0;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Write @bm's data and table to new clusters; table_offset/size follow. */
static int store_bitmap(struct vs_node *node, struct qcow2_bitmap *bm)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t nbytes = div_round_up(bm->nbits, 8);
	uint64_t tsize = div_round_up(nbytes, s->cluster_size);
	uint8_t *tbl, *cl;
	int64_t off;
	int ret = 0;

	if (tsize == 0)
		tsize = 1; /* an empty disk still has a table (of one empty entry) */
	tbl = vs_buf_zalloc(qcow2_size_to_clusters(s, tsize * 8) << s->cluster_bits);
	cl = vs_buf_alloc(s->cluster_size);
	if (!tbl || !cl) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < tsize; i++) {
		uint64_t start = i * s->cluster_size;
		uint64_t n = start >= nbytes		      ? 0 :
			     nbytes - start < s->cluster_size ? nbytes - start :
								s->cluster_size;

		if (!n || all_zero(bm->data + start, n))
			continue;
		off = qcow2_alloc_clusters(node, 1);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		memset(cl, 0, s->cluster_size);
		memcpy(cl, bm->data + start, n);
		ret = vs_node_pwrite(node->file, (uint64_t)off, cl, s->cluster_size, 0);
		if (ret < 0)
			goto out;
		vs_put_be64(tbl + 8 * i, (uint64_t)off);
	}
	off = qcow2_alloc_clusters(node, qcow2_size_to_clusters(s, tsize * 8));
	if (off < 0) {
		ret = (int)off;
		goto out;
	}
	ret = vs_node_pwrite(node->file, (uint64_t)off, tbl,
			     qcow2_size_to_clusters(s, tsize * 8) << s->cluster_bits, 0);
	if (ret < 0)
		goto out;
	bm->table_offset = (uint64_t)off;
	bm->table_size = (uint32_t)tsize;
out:
	free(tbl);
	free(cl);
	return ret;
}

/* Free a table and the clusters it points to. */
static int free_table(struct vs_node *node, uint64_t offset, uint32_t size)
{
	struct qcow2_state *s = qcow2_state(node);
	uint8_t *tbl;
	int ret;

	if (!offset || !size)
		return 0;
	tbl = malloc((size_t)size * 8);
	if (!tbl)
		return -ENOMEM;
	ret = vs_node_pread(node->file, offset, tbl, (size_t)size * 8);
	for (uint32_t i = 0; ret == 0 && i < size; i++) {
		uint64_t off = vs_be64(tbl + 8 * i) & QCOW2_BME_TABLE_OFFSET_MASK;

		if (off)
			ret = qcow2_free_clusters(node, off, s->cluster_size, true);
	}
	free(tbl);
	if (ret == 0)
		ret = qcow2_free_clusters(
			node, offset,
			qcow2_size_to_clusters(s, (uint64_t)size * 8) << s->cluster_bits, true);
	return ret;
}

/*
 * Free the directory and tables that were on disk when the bitmaps were
 * loaded, but for the tables of inconsistent bitmaps that the directory
 * on disk still names.
 */
static int free_old_structures(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	int ret = 0;

	for (unsigned i = 0; ret == 0 && i < b->nb_old; i++) {
		bool kept = false;

		for (unsigned j = 0; j < b->nb; j++)
			if (b->bm[j].inconsistent && b->bm[j].table_offset == b->old[i].offset)
				kept = true;
		if (!kept)
			ret = free_table(node, b->old[i].offset, b->old[i].size);
	}
	if (ret == 0 && b->old_dir_size)
		ret = qcow2_free_clusters(
			node, b->old_dir_offset,
			qcow2_size_to_clusters(s, b->old_dir_size) << s->cluster_bits, true);
	b->nb_old = 0;
	b->old_dir_size = 0;
	return ret;
}

int qcow2_bitmaps_store(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	uint64_t dsize = directory_size(b);
	unsigned nb = nb_persistent(b);
	uint8_t *dir = NULL;
	int64_t doff = 0;
	int ret = 0;

	if (!b->owned || s->corrupt)
		return 0;
	/* No table can describe an empty disk: QEMU loses them too. */
	if (!s->hdr.size && nb) {
		vs_warn("qcow2: '%s': the image is empty: its persistent bitmaps are dropped",
			node->filename);
		for (unsigned i = 0; i < b->nb; i++)
			free(b->bm[i].data);
		b->nb = 0;
		nb = 0;
		dsize = 0;
	}
	for (unsigned i = 0; i < b->nb; i++) {
		struct qcow2_bitmap *bm = &b->bm[i];

		if (bm->transient)
			continue;
		if (bm->inconsistent && bm->table_offset)
			continue; /* kept as it is on disk, in_use */
		ret = store_bitmap(node, bm);
		if (ret < 0)
			return ret;
		if (!bm->inconsistent)
			bm->flags &= ~QCOW2_BME_FLAG_IN_USE;
	}
	if (nb) {
		dir = directory_encode(b, dsize);
		if (!dir)
			return -ENOMEM;
		doff = qcow2_alloc_clusters(node, qcow2_size_to_clusters(s, dsize));
		if (doff < 0) {
			ret = (int)doff;
			goto out;
		}
		ret = vs_node_pwrite(node->file, (uint64_t)doff, dir, dsize, 0);
		if (ret < 0)
			goto out;
	}
	/* Everything the new header points to is on disk before it does. */
	ret = qcow2_flush_metadata(node);
	if (ret == 0)
		ret = vs_node_flush(node->file);
	if (ret < 0)
		goto out;
	b->ext_nb = nb;
	b->ext_dir_offset = nb ? (uint64_t)doff : 0;
	b->ext_dir_size = nb ? dsize : 0;
	b->ext_ignored = false;
	if (nb)
		s->hdr.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
	else
		s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
	ret = qcow2_header_cluster_rewrite(node);
	if (ret < 0)
		goto out;
	if (ret == 0)
		ret = free_old_structures(node);
	b->owned = false;
out:
	free(dir);
	return ret;
}

int qcow2_bitmaps_release(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	int ret;

	if (!b->ext_nb)
		return 0;
	if (!b->owned)
		return -EPERM;
	/* An inconsistent bitmap loses its table: an empty one, still in_use, replaces it. */
	for (unsigned i = 0; i < b->nb; i++) {
		struct qcow2_bitmap *bm = &b->bm[i];

		if (!bm->data) {
			bm->nbits = bitmap_nbits(node->size, bm->gran_bits);
			bm->data = calloc(div_round_up(bm->nbits, 8) + 1, 1);
			if (!bm->data)
				return -ENOMEM;
		}
		bm->table_offset = 0;
		bm->table_size = 0;
	}
	b->ext_nb = 0;
	b->ext_dir_offset = 0;
	b->ext_dir_size = 0;
	s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
	ret = qcow2_header_cluster_rewrite(node);
	if (ret == 0)
		ret = free_old_structures(node);
	if (ret == 0)
		ret = qcow2_flush_metadata(node);
	return ret;
}

void qcow2_bitmaps_free(struct qcow2_bitmaps *b)
{
	for (unsigned i = 0; i < b->nb; i++)
		free(b->bm[i].data);
	free(b->bm);
	free(b->old);
	memset(b, 0, sizeof(*b));
}

static void set_bits(uint8_t *data, uint64_t first, uint64_t last)
{
	uint64_t fb = first / 8, lb = last / 8;

	if (fb == lb) {
		data[fb] |= (uint8_t)((0xffu << (first % 8)) & (0xffu >> (7 - last % 8)));
		return;
	}
	data[fb] |= (uint8_t)(0xffu << (first % 8));
	if (lb > fb + 1)
		memset(data + fb + 1, 0xff, lb - fb - 1);
	data[lb] |= (uint8_t)(0xffu >> (7 - last % 8));
}

static void mark_one(struct qcow2_bitmap *bm, uint64_t offset, uint64_t len)
{
	uint64_t first = offset >> bm->gran_bits, last = (offset + len - 1) >> bm->gran_bits;

	if (first >= bm->nbits)
		return;
	if (last >= bm->nbits)
		last = bm->nbits - 1;
	set_bits(bm->data, first, last);
}

void qcow2_bitmaps_mark(struct qcow2_bitmaps *b, uint64_t offset, uint64_t len)
{
	if (!len)
		return;
	for (unsigned i = 0; i < b->nb; i++) {
		struct qcow2_bitmap *bm = &b->bm[i];

		if (bm->data && !bm->inconsistent && (bm->flags & QCOW2_BME_FLAG_AUTO))
			mark_one(bm, offset, len);
	}
}

int qcow2_bitmaps_resize(struct vs_node *node, uint64_t size)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;

	for (unsigned i = 0; i < b->nb; i++) {
		struct qcow2_bitmap *bm = &b->bm[i];
		uint64_t nbits = bitmap_nbits(size, bm->gran_bits);
		uint64_t oldbytes = div_round_up(bm->nbits, 8), nbytes = div_round_up(nbits, 8);
		uint8_t *d;

		if (!bm->data)
			continue;
		d = realloc(bm->data, nbytes ? nbytes : 1);
		if (!d)
			return -ENOMEM;
		if (nbytes > oldbytes)
			memset(d + oldbytes, 0, nbytes - oldbytes);
		if (nbits < bm->nbits && nbits % 8)
			d[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
		else if (nbits > bm->nbits && bm->nbits % 8)
			d[oldbytes - 1] &= (uint8_t)((1u << (bm->nbits % 8)) - 1);
		bm->data = d;
		bm->nbits = nbits;
	}
	return 0;
}

/* ---- operations (qemu-img bitmap) ---- */

static int add_bitmap(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	uint64_t gran = op->granularity;
	struct qcow2_bitmap *nbm, *bm;
	unsigned gbits = 0;
	size_t nlen = strlen(op->name);

	/* QEMU's default: the cluster size, within 4 KiB .. 64 KiB. */
	if (!gran)
		gran = s->cluster_size < 4096  ? 4096 :
		       s->cluster_size > 65536 ? 65536 :
						 s->cluster_size;
	/* QEMU takes the granularity as 32 bits: larger ones end up refused this way. */
	if (gran < 512 || gran > (1ull << QCOW2_BME_MAX_GRANULARITY_BITS) || (gran & (gran - 1)))
		return vs_error_set(err, -EINVAL,
				    "Granularity must be power of 2 and at least 512");
	while ((1ull << gbits) < gran)
		gbits++;
	if (find_bitmap(b, op->name))
		return vs_error_set(err, -EEXIST, "Bitmap already exists: %s", op->name);
	if (op->transient) {
		/* In memory only: none of the image's limits apply (QEMU's own does). */
		if (nlen == 0 || nlen > VS_BITMAP_NAME_MAX)
			return vs_error_set(err, -EINVAL, "Bitmap name too long: %s", op->name);
		goto add;
	}
	/* QEMU cannot store one there either (it loses it on close). */
	if (!node->size)
		return vs_error_set(err, -EINVAL,
				    "Can't store persistent bitmap '%s' into '%s': the image is "
				    "empty",
				    op->name, node->filename);
	if (s->hdr.version < 3)
		return vs_error_set(err, -ENOTSUP, "Cannot store dirty bitmaps in qcow2 v2 files");
	if (nlen == 0 || nlen > QCOW2_BME_MAX_NAME_SIZE)
		return vs_error_set(err, -EINVAL,
				    "Can't store persistent bitmap '%s' into '%s': bitmap name "
				    "is too long, the maximum is %d",
				    op->name, node->filename, QCOW2_BME_MAX_NAME_SIZE);
	if (gbits > QCOW2_BME_MAX_GRANULARITY_BITS ||
	    bitmap_table_size(s, node->size, gbits) > QCOW2_BME_MAX_TABLE_SIZE ||
	    bitmap_table_size(s, node->size, gbits) * s->cluster_size > QCOW2_BME_MAX_PHYS_SIZE)
		return vs_error_set(err, -EINVAL,
				    "Can't store persistent bitmap '%s' into '%s': too large "
				    "bitmap for the granularity",
				    op->name, node->filename);
	if (b->nb >= QCOW2_MAX_BITMAPS)
		return vs_error_set(err, -ENOSPC,
				    "Can't store persistent bitmap '%s' into '%s': the maximum "
				    "number of bitmaps is %d",
				    op->name, node->filename, QCOW2_MAX_BITMAPS);
	if (directory_size(b) + dir_entry_size(nlen, 0) > QCOW2_MAX_BITMAP_DIRECTORY_SIZE)
		return vs_error_set(err, -ENOSPC,
				    "Can't store persistent bitmap '%s' into '%s': no space in "
				    "the bitmap directory",
				    op->name, node->filename);
add:
	nbm = realloc(b->bm, (b->nb + 1) * sizeof(*b->bm));
	if (!nbm)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	b->bm = nbm;
	bm = &b->bm[b->nb];
	memset(bm, 0, sizeof(*bm));
	memcpy(bm->name, op->name, nlen + 1);
	bm->gran_bits = gbits;
	bm->nbits = bitmap_nbits(node->size, gbits);
	bm->data = calloc(div_round_up(bm->nbits, 8) + 1, 1);
	if (!bm->data)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	bm->flags = QCOW2_BME_FLAG_IN_USE | (op->disabled ? 0 : QCOW2_BME_FLAG_AUTO);
	bm->transient = op->transient;
	b->nb++;
	return 0;
}

/* A bitmap that an operation may change, or NULL with @err. */
static struct qcow2_bitmap *usable_bitmap(struct qcow2_bitmaps *b, const char *name,
					  struct vs_error *err)
{
	struct qcow2_bitmap *bm = find_bitmap(b, name);

	if (!bm) {
		vs_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", name);
		return NULL;
	}
	if (bm->inconsistent || !bm->data) {
		vs_error_set(err, -EINVAL,
			     "Bitmap '%s' is inconsistent and cannot be used\n"
			     "Try block-dirty-bitmap-remove to delete this bitmap from disk",
			     name);
		return NULL;
	}
	return bm;
}

static int merge_bitmap(struct vs_node *node, struct qcow2_bitmap *dst,
			const struct vs_bitmap_op *op, struct vs_error *err)
{
	struct vs_node *src_node = op->src ? op->src : node;
	struct qcow2_bitmap *src, tmp;
	struct qcow2_bitmaps *sb;
	int ret;

	if (src_node->drv != node->drv)
		return vs_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", op->src_name);
	sb = &qcow2_state(src_node)->bitmaps;
	src = find_bitmap(sb, op->src_name);
	if (!src)
		return vs_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", op->src_name);
	if (src->inconsistent)
		return vs_error_set(err, -EINVAL,
				    "Bitmap '%s' is inconsistent and cannot be used\n"
				    "Try block-dirty-bitmap-remove to delete this bitmap from disk",
				    op->src_name);
	if (src_node->size != node->size)
		return vs_error_set(err, -EINVAL,
				    "Bitmaps are of different sizes (destination size is %" PRIu64
				    ", source size is %" PRIu64 ") and can't be merged",
				    node->size, src_node->size);
	tmp = *src;
	if (!src->data) {
		/* A read-only source: its bits read for this merge only. */
		ret = load_data(src_node, &tmp, err);
		if (ret < 0)
			return ret;
	}
	for (uint64_t i = 0; i < tmp.nbits; i++)
		if (tmp.data[i / 8] & (1u << (i % 8))) {
			uint64_t off = i << tmp.gran_bits;
			uint64_t len = 1ull << tmp.gran_bits;

			if (len > node->size - off)
				len = node->size - off;
			mark_one(dst, off, len);
		}
	if (tmp.data != src->data)
		free(tmp.data);
	return 0;
}

int qcow2_bitmap_op(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct qcow2_bitmaps *b = &s->bitmaps;
	struct qcow2_bitmap *bm;
	int ret = 0;

	vs_co_mutex_lock(&s->lock);
	if (!b->owned && nb_persistent(b)) {
		ret = vs_error_set(err, -EPERM, "'%s': bitmaps are not writable", node->filename);
		goto out;
	}
	switch (op->action) {
	case VS_BITMAP_ADD:
		ret = add_bitmap(node, op, err);
		/*
		 * The first persistent bitmap of an image: owned from now on,
		 * stored on close. Transient ones never change the image.
		 */
		if (ret == 0 && !op->transient)
			b->owned = true;
		break;
	case VS_BITMAP_REMOVE:
		bm = find_bitmap(b, op->name);
		if (!bm) {
			ret = vs_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", op->name);
			break;
		}
		free(bm->data);
		memmove(bm, bm + 1, (size_t)(b->bm + b->nb - bm - 1) * sizeof(*bm));
		b->nb--;
		break;
	case VS_BITMAP_CLEAR:
	case VS_BITMAP_ENABLE:
	case VS_BITMAP_DISABLE:
	case VS_BITMAP_MERGE:
		bm = usable_bitmap(b, op->name, err);
		if (!bm) {
			ret = -EINVAL;
			break;
		}
		if (op->action == VS_BITMAP_CLEAR)
			memset(bm->data, 0, div_round_up(bm->nbits, 8));
		else if (op->action == VS_BITMAP_ENABLE)
			bm->flags |= QCOW2_BME_FLAG_AUTO;
		else if (op->action == VS_BITMAP_DISABLE)
			bm->flags &= ~QCOW2_BME_FLAG_AUTO;
		else
			ret = merge_bitmap(node, bm, op, err);
		break;
	}
	update_tracking(b);
out:
	vs_co_mutex_unlock(&s->lock);
	return ret;
}

int qcow2_bitmaps_info(struct vs_node *node, struct vs_image_info *info)
{
	struct qcow2_bitmaps *b = &qcow2_state(node)->bitmaps;
	unsigned n = 0;

	if (!nb_persistent(b))
		return 0;
	info->bitmaps = calloc(nb_persistent(b), sizeof(*info->bitmaps));
	if (!info->bitmaps)
		return -ENOMEM;
	for (unsigned i = 0; i < b->nb; i++) {
		struct vs_bitmap_info *bi;
		const struct qcow2_bitmap *bm = &b->bm[i];

		if (bm->transient)
			continue;
		bi = &info->bitmaps[n++];

		snprintf(bi->name, sizeof(bi->name), "%s", bm->name);
		bi->granularity = 1ull << bm->gran_bits;
		/* Loaded by this open: in_use on disk, yet consistent to whoever opened it. */
		if (bm->inconsistent || (!b->owned && (bm->flags & QCOW2_BME_FLAG_IN_USE)))
			bi->flags |= VS_BITMAP_FLAG_IN_USE;
		if (bm->flags & QCOW2_BME_FLAG_AUTO)
			bi->flags |= VS_BITMAP_FLAG_AUTO;
	}
	info->nb_bitmaps = n;
	return 0;
}

static uint64_t count_bits(const uint8_t *data, uint64_t nbits)
{
	uint64_t n = 0, nbytes = nbits / 8;

	for (uint64_t i = 0; i < nbytes; i++)
		n += (uint64_t)__builtin_popcount(data[i]);
	if (nbits % 8)
		n += (uint64_t)__builtin_popcount(data[nbytes] & ((1u << (nbits % 8)) - 1));
	return n;
}

int qcow2_bitmaps_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb)
{
	struct qcow2_bitmaps *b = &qcow2_state(node)->bitmaps;
	struct vs_dirty_bitmap_info *list;

	*out = NULL;
	*nb = 0;
	if (!b->nb)
		return 0;
	list = calloc(b->nb, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (unsigned i = 0; i < b->nb; i++) {
		const struct qcow2_bitmap *bm = &b->bm[b->nb - 1 - i];
		struct vs_dirty_bitmap_info *bi = &list[i];

		snprintf(bi->name, sizeof(bi->name), "%s", bm->name);
		bi->granularity = 1ull << bm->gran_bits;
		bi->count = bm->data ? count_bits(bm->data, bm->nbits) << bm->gran_bits : 0;
		bi->recording = bm->data && !bm->inconsistent && (bm->flags & QCOW2_BME_FLAG_AUTO);
		bi->persistent = !bm->transient;
		bi->inconsistent = bm->inconsistent;
	}
	*out = list;
	*nb = b->nb;
	return 0;
}

static bool test_bit(const uint8_t *data, uint64_t i)
{
	return data[i / 8] & (1u << (i % 8));
}

int qcow2_bitmap_status(struct vs_node *node, const char *name, uint64_t offset, uint64_t len,
			bool *dirty, uint64_t *run)
{
	struct qcow2_bitmap *bm = find_bitmap(&qcow2_state(node)->bitmaps, name);
	uint64_t i, last, end;
	bool state;

	if (!bm)
		return -ENOENT;
	if (bm->inconsistent || !bm->data)
		return -EINVAL;
	i = offset >> bm->gran_bits;
	if (i >= bm->nbits) { /* past the disk: nothing was written there */
		*dirty = false;
		*run = len;
		return 0;
	}
	end = offset + len < offset ? UINT64_MAX : offset + len;
	last = ((end - 1) >> bm->gran_bits) + 1; /* granules [i, last) hold the range */
	if (last > bm->nbits)
		last = bm->nbits;
	state = test_bit(bm->data, i);
	for (i++; i < last; i++) {
		/* Whole bytes of the same state at once. */
		if (i % 8 == 0 && last - i >= 8 && bm->data[i / 8] == (state ? 0xff : 0)) {
			i += 7;
			continue;
		}
		if (test_bit(bm->data, i) != state)
			break;
	}
	*dirty = state;
	*run = i == bm->nbits ? len : (i << bm->gran_bits) - offset;
	if (*run > len)
		*run = len;
	return 0;
}
