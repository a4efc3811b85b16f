/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check and repair.
 *
 * The check rebuilds, in memory, the refcount every cluster should have
 * (the "in-memory refcount table", IMRT) by walking everything that
 * references clusters: the header, the active L1 table and its L2 tables,
 * every snapshot's L1 and L2 tables, the snapshot table, the refcount
 * table and blocks, the crypto header and the persistent bitmaps. It then
 * compares that with the stored refcounts: stored > expected is a leak,
 * stored < expected a corruption. Counting follows `qemu-img check` so
 * that both tools report the same numbers for the same file; QEMU is the
 * oracle (DESIGN.md, section 4).
 *
 * The IMRT uses the on-disk refblock encoding (big-endian entries of
 * 2^refcount_order bits, sub-byte entries LSB first) and is sized in whole
 * clusters, so when the refcount structures must be rebuilt each refblock
 * is written straight from a slice of it.
 *
 * Everything read from the file is untrusted: allocations are bounded by
 * the file size and qcow2's limits, reads past the end of the file return
 * zeroes (as QEMU's file driver does), and no entry is used as an index
 * before it has been range checked.
 */
#include "qcow2-check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-format.h"
#include "qcow2-snapshot.h"

#define REFT_RESERVED_MASK 0x1ffull
#define L2E_STD_RESERVED_MASK QCOW2_L2E_RESERVED_MASK
#define L1E_RESERVED_MASK QCOW2_L1E_RESERVED_MASK
#define L2_BITMAP_ALL_ALLOC 0xffffffffull
#define L2_BITMAP_ALL_ZEROES (L2_BITMAP_ALL_ALLOC << 32)

#define CRYPT_LUKS 2

/* Metadata kinds for the overlap check (as QEMU's "cached" template). */
enum {
	OL_MAIN_HEADER = 1 << 0,
	OL_ACTIVE_L1 = 1 << 1,
	OL_ACTIVE_L2 = 1 << 2,
	OL_REFCOUNT_TABLE = 1 << 3,
	OL_REFCOUNT_BLOCK = 1 << 4,
	OL_SNAPSHOT_TABLE = 1 << 5,
	OL_INACTIVE_L1 = 1 << 6,
	OL_BITMAP_DIRECTORY = 1 << 7,
};

enum cluster_type {
	CT_UNALLOCATED,
	CT_ZERO_PLAIN,
	CT_ZERO_ALLOC,
	CT_NORMAL,
	CT_COMPRESSED,
};

/* Flags of the L1/L2 walks. */
#define WALK_FRAG_INFO 0x1 /* count allocated/fragmented/compressed clusters */

struct chk {
	struct vs_node *file;
	struct vs_check_result *res;
	qcow2_check_report_fn *report;
	void *opaque;
	struct vs_error *err;

	struct qcow2_header h;
	unsigned cluster_bits;
	uint64_t cluster_size;
	uint64_t file_size;
	bool extl2;
	bool data_file;
	unsigned l2_entry_size;
	unsigned l2_entries;
	unsigned csize_shift;
	uint64_t csize_mask;
	uint64_t coffset_mask;
	unsigned refcount_order;
	uint64_t refcount_max;
	unsigned rb_bits; /* log2 of refcount entries per refblock */

	/* Stored refcount structures. */
	uint64_t *reftable; /* host order */
	uint32_t reftable_entries;
	uint64_t reftable_offset;
	uint8_t *rb; /* one cached refblock */
	uint64_t rb_offset;
	bool rb_valid;
	bool rb_dirty;

	/* Active L1 table as loaded before the walk (host order). */
	uint64_t *l1;
	uint32_t l1_size;
	uint64_t l1_offset;

	struct qcow2_snapshot_table sn;
	uint64_t snapshots_offset;

	uint64_t crypto_offset, crypto_length;
	uint32_t nb_bitmaps;
	uint64_t bitmap_dir_offset, bitmap_dir_size;

	uint8_t *l2; /* scratch: one L2 table */

	/* The in-memory refcount table. */
	uint8_t *imrt;
	int64_t imrt_nb; /* entries */
};

static void chk_report(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void chk_report(struct chk *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (!c->report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->report(msg, c->opaque);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t offset_into_cluster(const struct chk *c, uint64_t off)
{
	return off & (c->cluster_size - 1);
}

static int64_t size_to_clusters(const struct chk *c, uint64_t size)
{
	return (int64_t)((size + c->cluster_size - 1) >> c->cluster_bits);
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/*
 * Read [off, off+len) of the file; bytes past its end read as zeroes, as
 * QEMU's file driver returns them, so a table that runs past EOF is judged
 * the same way as QEMU judges it.
 */
static int chk_pread(struct chk *c, uint64_t off, void *buf, size_t len)
{
	size_t n = 0;
	int ret;

	if (off < c->file_size)
		n = (size_t)min_u64(len, c->file_size - off);
	if (n) {
		ret = vs_node_pread(c->file, off, buf, n);
		if (ret < 0)
			return ret;
	}
	memset((uint8_t *)buf + n, 0, len - n);
	return 0;
}

static int chk_pwrite(struct chk *c, uint64_t off, const void *buf, size_t len, bool sync)
{
	int ret = vs_node_pwrite(c->file, off, buf, len, 0);

	if (ret < 0)
		return ret;
	if (off + len > c->file_size)
		c->file_size = vs_node_size(c->file);
	return sync ? vs_node_flush(c->file) : 0;
}

/* Refcount arrays in refblock encoding. */
static uint64_t rc_get(const uint8_t *a, unsigned order, uint64_t i)
{
	switch (order) {
	case 0:
	case 1:
	case 2: {
		uint64_t bit = i << order;

		return (a[bit / 8] >> (bit % 8)) & ((1u << (1u << order)) - 1);
	}
	case 3:
		return a[i];
	case 4:
		return vs_be16(a + 2 * i);
	case 5:
		return vs_be32(a + 4 * i);
	default:
		return vs_be64(a + 8 * i);
	}
}

static void rc_set(uint8_t *a, unsigned order, uint64_t i, uint64_t v)
{
	switch (order) {
	case 0:
	case 1:
	case 2: {
		uint64_t bit = i << order;
		unsigned mask = ((1u << (1u << order)) - 1) << (bit % 8);

		a[bit / 8] = (uint8_t)((a[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
		break;
	}
	case 3:
		a[i] = (uint8_t)v;
		break;
	case 4:
		vs_put_be16(a + 2 * i, (uint16_t)v);
		break;
	case 5:
		vs_put_be32(a + 4 * i, (uint32_t)v);
		break;
	default:
		vs_put_be64(a + 8 * i, v);
		break;
	}
}

/* Bytes of an IMRT of @entries entries: whole clusters, so slices are refblocks. */
static uint64_t imrt_bytes(const struct chk *c, int64_t entries)
{
	uint64_t bytes = (((uint64_t)entries << c->refcount_order) + 7) / 8;

	return (uint64_t)size_to_clusters(c, bytes) << c->cluster_bits;
}

static int imrt_resize(struct chk *c, int64_t new_nb)
{
	uint64_t old_bytes = c->imrt ? imrt_bytes(c, c->imrt_nb) : 0;
	uint64_t new_bytes;
	uint8_t *p;

	/* QEMU refuses images of more than INT_MAX clusters; so do we. */
	if (new_nb > INT32_MAX)
		return -EFBIG;
	new_bytes = imrt_bytes(c, new_nb);
	if (new_bytes != old_bytes || !c->imrt) {
		p = realloc(c->imrt, new_bytes ? new_bytes : c->cluster_size);
		if (!p)
			return -ENOMEM;
		if (new_bytes > old_bytes)
			memset(p + old_bytes, 0, new_bytes - old_bytes);
		c->imrt = p;
	}
	c->imrt_nb = new_nb;
	return 0;
}

/* Count one reference to every cluster that [offset, offset+size) touches. */
static int inc_refcounts(struct chk *c, uint64_t offset, uint64_t size)
{
	uint64_t start, last;
	int ret;

	if (!size)
		return 0;
	/*
	 * The last cluster may be partly past EOF (a short final write), but a
	 * reference one whole cluster or more past the end is corrupt.
	 */
	if (offset > UINT64_MAX - size || offset + size >= c->file_size + c->cluster_size) {
		chk_report(c,
			   "ERROR: counting reference for region exceeding the end of the file "
			   "by one cluster or more: offset 0x%llx size 0x%llx",
			   (unsigned long long)offset, (unsigned long long)size);
		c->res->corruptions++;
		return 0;
	}

	start = offset >> c->cluster_bits;
	last = (offset + size - 1) >> c->cluster_bits;
	for (uint64_t k = start; k <= last; k++) {
		uint64_t rc;

		if ((int64_t)k >= c->imrt_nb) {
			ret = imrt_resize(c, (int64_t)k + 1);
			if (ret < 0) {
				c->res->check_errors++;
				return ret;
			}
		}
		rc = rc_get(c->imrt, c->refcount_order, k);
		if (rc == c->refcount_max) {
			chk_report(c, "ERROR: overflow cluster offset=0x%llx",
				   (unsigned long long)(k << c->cluster_bits));
			c->res->corruptions++;
			continue;
		}
		rc_set(c->imrt, c->refcount_order, k, rc + 1);
	}
	return 0;
}

/*
 * Is [offset, offset+size) free of the metadata kinds not in @ign? Returns 0,
 * or the OL_ bit of the first overlap found. The same set as QEMU's default
 * ("cached"): inactive L2 tables are not searched, since an active L2 table
 * is routinely shared with snapshots.
 */
static int chk_overlap(const struct chk *c, int ign, uint64_t offset, uint64_t size)
{
	int chk = ~ign;

	if (!size)
		return 0;
	if ((chk & OL_MAIN_HEADER) && offset < c->cluster_size)
		return OL_MAIN_HEADER;
	size = (offset_into_cluster(c, offset) + size + c->cluster_size - 1) &
	       ~(c->cluster_size - 1);
	offset &= ~(c->cluster_size - 1);

	if ((chk & OL_ACTIVE_L1) && ranges_overlap(offset, size, c->l1_offset, c->l1_size * 8ull))
		return OL_ACTIVE_L1;
	if ((chk & OL_REFCOUNT_TABLE) &&
	    ranges_overlap(offset, size, c->reftable_offset, c->reftable_entries * 8ull))
		return OL_REFCOUNT_TABLE;
	if ((chk & OL_SNAPSHOT_TABLE) &&
	    ranges_overlap(offset, size, c->snapshots_offset, c->sn.size))
		return OL_SNAPSHOT_TABLE;
	if (chk & OL_INACTIVE_L1) {
		for (unsigned i = 0; i < c->sn.nb; i++)
			if (ranges_overlap(offset, size, c->sn.sn[i].l1_table_offset,
					   c->sn.sn[i].l1_size * 8ull))
				return OL_INACTIVE_L1;
	}
	if (chk & OL_ACTIVE_L2) {
		for (uint32_t i = 0; i < c->l1_size; i++) {
			uint64_t o = c->l1[i] & QCOW2_L1E_OFFSET_MASK;

			if (o && ranges_overlap(offset, size, o, c->cluster_size))
				return OL_ACTIVE_L2;
		}
	}
	if (chk & OL_REFCOUNT_BLOCK) {
		for (uint32_t i = 0; i < c->reftable_entries; i++) {
			uint64_t o = c->reftable[i] & QCOW2_REFT_OFFSET_MASK;

			if (o && ranges_overlap(offset, size, o, c->cluster_size))
				return OL_REFCOUNT_BLOCK;
		}
	}
	if ((chk & OL_BITMAP_DIRECTORY) && c->nb_bitmaps &&
	    ranges_overlap(offset, size, c->bitmap_dir_offset, c->bitmap_dir_size))
		return OL_BITMAP_DIRECTORY;
	return 0;
}

static const char *ol_name(int ol)
{
	switch (ol) {
	case OL_MAIN_HEADER:
		return "qcow2 header";
	case OL_ACTIVE_L1:
		return "active L1 table";
	case OL_ACTIVE_L2:
		return "active L2 table";
	case OL_REFCOUNT_TABLE:
		return "refcount table";
	case OL_REFCOUNT_BLOCK:
		return "refcount block";
	case OL_SNAPSHOT_TABLE:
		return "snapshot table";
	case OL_INACTIVE_L1:
		return "inactive L1 table";
	default:
		return "bitmap directory";
	}
}

/* Refuse a metadata write that would hit other metadata; -EIO like QEMU. */
static int chk_overlap_write_check(struct chk *c, int ign, uint64_t offset, uint64_t size)
{
	int ol = chk_overlap(c, ign, offset, size);

	if (!ol)
		return 0;
	chk_report(c, "ERROR: refusing to write 0x%llx+0x%llx: overlaps with the %s",
		   (unsigned long long)offset, (unsigned long long)size, ol_name(ol));
	return -EIO;
}

/* Stored refcounts, through a one-block write-back cache. */
static int rb_flush(struct chk *c)
{
	int ret;

	if (!c->rb_valid || !c->rb_dirty)
		return 0;
	ret = chk_overlap_write_check(c, OL_REFCOUNT_BLOCK, c->rb_offset, c->cluster_size);
	if (ret < 0)
		return ret;
	ret = chk_pwrite(c, c->rb_offset, c->rb, c->cluster_size, false);
	if (ret < 0)
		return ret;
	c->rb_dirty = false;
	return 0;
}

static void rb_drop(struct chk *c)
{
	c->rb_valid = false;
	c->rb_dirty = false;
}

/* Load the refblock holding @cluster; 0 with *@present false when there is none. */
static int rb_load(struct chk *c, uint64_t cluster, bool *present)
{
	uint64_t idx = cluster >> c->rb_bits;
	uint64_t off;
	int ret;

	*present = false;
	if (idx >= c->reftable_entries)
		return 0;
	off = c->reftable[idx] & QCOW2_REFT_OFFSET_MASK;
	if (!off)
		return 0;
	if (offset_into_cluster(c, off))
		return -EIO;
	*present = true;
	if (c->rb_valid && c->rb_offset == off)
		return 0;
	ret = rb_flush(c);
	if (ret < 0)
		return ret;
	c->rb_valid = false;
	ret = chk_pread(c, off, c->rb, c->cluster_size);
	if (ret < 0)
		return ret;
	c->rb_offset = off;
	c->rb_valid = true;
	return 0;
}

static int get_refcount(struct chk *c, uint64_t cluster, uint64_t *rc)
{
	bool present;
	int ret = rb_load(c, cluster, &present);

	*rc = 0;
	if (ret < 0 || !present)
		return ret;
	*rc = rc_get(c->rb, c->refcount_order, cluster & ((1ull << c->rb_bits) - 1));
	return 0;
}

/* Store @rc for @cluster, whose refblock must exist. */
static int set_refcount(struct chk *c, uint64_t cluster, uint64_t rc)
{
	bool present;
	int ret = rb_load(c, cluster, &present);

	if (ret < 0)
		return ret;
	if (!present)
		return -ENOSPC;
	rc_set(c->rb, c->refcount_order, cluster & ((1ull << c->rb_bits) - 1), rc);
	c->rb_dirty = true;
	return 0;
}

static enum cluster_type cluster_type(const struct chk *c, uint64_t e)
{
	if (e & QCOW2_OFLAG_COMPRESSED)
		return CT_COMPRESSED;
	if ((e & QCOW2_OFLAG_ZERO) && !c->extl2)
		return (e & QCOW2_L2E_OFFSET_MASK) ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
	if (!(e & QCOW2_L2E_OFFSET_MASK)) {
		/* With a data file offset 0 is valid; COPIED tells it apart. */
		if (c->data_file && (e & QCOW2_OFLAG_COPIED))
			return CT_NORMAL;
		return CT_UNALLOCATED;
	}
	return CT_NORMAL;
}

static uint64_t l2_get(const struct chk *c, const uint8_t *l2, unsigned i)
{
	return vs_be64(l2 + (size_t)i * c->l2_entry_size);
}

static uint64_t l2_bitmap(const struct chk *c, const uint8_t *l2, unsigned i)
{
	return c->extl2 ? vs_be64(l2 + (size_t)i * c->l2_entry_size + 8) : 0;
}

/*
 * Turn an unaligned preallocated-zero entry into a plain zero entry (its
 * offset cannot be trusted, and the guest reads zeroes either way).
 * Decrements corruptions on success: the caller counted it already.
 */
static int fix_l2_entry_by_zero(struct chk *c, uint64_t l2_offset, uint8_t *l2, unsigned i,
				bool active, bool *overlap)
{
	uint8_t *e = l2 + (size_t)i * c->l2_entry_size;
	uint64_t eoff = l2_offset + (uint64_t)i * c->l2_entry_size;
	int ret;

	if (c->extl2) {
		uint64_t bm = l2_bitmap(c, l2, i);

		bm |= bm << 32;
		bm &= L2_BITMAP_ALL_ZEROES;
		vs_put_be64(e, 0);
		vs_put_be64(e + 8, bm);
	} else {
		vs_put_be64(e, QCOW2_OFLAG_ZERO);
	}
	ret = chk_overlap_write_check(c, active ? OL_ACTIVE_L2 : 0, eoff, c->l2_entry_size);
	*overlap = ret < 0;
	if (ret == 0)
		ret = chk_pwrite(c, eoff, e, c->l2_entry_size, true);
	if (ret < 0) {
		chk_report(c, "ERROR: failed to overwrite L2 table entry: %s", strerror(-ret));
		c->res->check_errors++;
		return ret;
	}
	c->res->corruptions--;
	c->res->corruptions_fixed++;
	return 0;
}

static int check_refcounts_l2(struct chk *c, uint64_t l2_offset, int flags, unsigned fix,
			      bool active)
{
	uint64_t next_contiguous = 0;
	int ret;

	/*
	 * A table wholly past the end of the file reads as zeroes: all its
	 * entries are unallocated and count nothing. Skipping it keeps a
	 * hostile L1 table full of such pointers from costing a walk each.
	 */
	if (l2_offset >= c->file_size)
		return 0;
	ret = chk_pread(c, l2_offset, c->l2, c->cluster_size);
	if (ret < 0) {
		chk_report(c, "ERROR: I/O error in check_refcounts_l2");
		c->res->check_errors++;
		return ret;
	}

	for (unsigned i = 0; i < c->l2_entries; i++) {
		uint64_t e = l2_get(c, c->l2, i);
		uint64_t bm = l2_bitmap(c, c->l2, i);
		enum cluster_type type = cluster_type(c, e);

		if (type != CT_COMPRESSED && (e & L2E_STD_RESERVED_MASK)) {
			chk_report(c, "ERROR found l2 entry with reserved bits set: %llx",
				   (unsigned long long)e);
			c->res->corruptions++;
		}

		switch (type) {
		case CT_COMPRESSED: {
			uint64_t coffset, nb_sectors, csize;

			if (e & QCOW2_OFLAG_COPIED) {
				chk_report(c,
					   "ERROR: coffset=0x%llx: copied flag must never be set "
					   "for compressed clusters",
					   (unsigned long long)(e & c->coffset_mask));
				e &= ~QCOW2_OFLAG_COPIED;
				c->res->corruptions++;
			}
			if (c->data_file) {
				chk_report(c, "ERROR compressed cluster %u with data file", i);
				c->res->corruptions++;
				break;
			}
			if (bm) {
				chk_report(c,
					   "ERROR compressed cluster %u with non-zero subcluster "
					   "allocation bitmap",
					   i);
				c->res->corruptions++;
				break;
			}
			coffset = e & c->coffset_mask;
			nb_sectors = ((e >> c->csize_shift) & c->csize_mask) + 1;
			csize = nb_sectors * 512 - (coffset & 511);
			ret = inc_refcounts(c, coffset, csize);
			if (ret < 0)
				return ret;
			if (flags & WALK_FRAG_INFO) {
				c->res->allocated_clusters++;
				c->res->compressed_clusters++;
				/*
				 * Compressed clusters are fragmented by nature:
				 * neighbours share sectors that are read twice.
				 */
				c->res->fragmented_clusters++;
			}
			break;
		}
		case CT_ZERO_ALLOC:
		case CT_NORMAL: {
			uint64_t offset = e & QCOW2_L2E_OFFSET_MASK;

			if ((bm >> 32) & bm) {
				c->res->corruptions++;
				chk_report(c,
					   "ERROR offset=%llx: Allocated cluster has corrupted "
					   "subcluster allocation bitmap",
					   (unsigned long long)offset);
			}
			if (offset_into_cluster(c, offset)) {
				bool has_data = c->extl2 ? (bm & L2_BITMAP_ALL_ALLOC) != 0 :
							   !(e & QCOW2_OFLAG_ZERO);

				c->res->corruptions++;
				if (!has_data) {
					chk_report(c,
						   "%s offset=%llx: Preallocated cluster is not "
						   "properly aligned; L2 entry corrupted.",
						   fix & VS_CHECK_FIX_ERRORS ? "Repairing" :
									       "ERROR",
						   (unsigned long long)offset);
					if (fix & VS_CHECK_FIX_ERRORS) {
						bool overlap;

						ret = fix_l2_entry_by_zero(c, l2_offset, c->l2, i,
									   active, &overlap);
						/* An overlap means worse trouble: stop this table. */
						if (overlap)
							return ret;
						if (ret == 0)
							continue; /* the cluster is unused now */
					}
				} else {
					chk_report(
						c,
						"ERROR offset=%llx: Data cluster is not properly "
						"aligned; L2 entry corrupted.",
						(unsigned long long)offset);
				}
			}
			if (flags & WALK_FRAG_INFO) {
				c->res->allocated_clusters++;
				if (next_contiguous && offset != next_contiguous)
					c->res->fragmented_clusters++;
				next_contiguous = offset + c->cluster_size;
			}
			if (!c->data_file) {
				ret = inc_refcounts(c, offset, c->cluster_size);
				if (ret < 0)
					return ret;
			}
			break;
		}
		case CT_ZERO_PLAIN:
			break;
		case CT_UNALLOCATED:
			if (bm & L2_BITMAP_ALL_ALLOC) {
				c->res->corruptions++;
				chk_report(c, "ERROR: Unallocated cluster has non-zero subcluster "
					      "allocation map");
			}
			break;
		}
	}
	return 0;
}

static int check_refcounts_l1(struct chk *c, uint64_t l1_offset, uint32_t l1_size, int flags,
			      unsigned fix, bool active)
{
	uint64_t *l1;
	int ret;

	if (!l1_size)
		return 0;
	ret = inc_refcounts(c, l1_offset, l1_size * 8ull);
	if (ret < 0)
		return ret;

	/* l1_size was checked against QCOW2_MAX_L1_SIZE by the caller. */
	l1 = malloc(l1_size * 8ull);
	if (!l1) {
		c->res->check_errors++;
		return -ENOMEM;
	}
	ret = chk_pread(c, l1_offset, l1, l1_size * 8ull);
	if (ret < 0) {
		chk_report(c, "ERROR: I/O error in check_refcounts_l1");
		c->res->check_errors++;
		goto out;
	}

	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t e = vs_be64((const uint8_t *)&l1[i]);
		uint64_t l2_offset;

		if (!e)
			continue;
		if (e & L1E_RESERVED_MASK) {
			chk_report(c, "ERROR found L1 entry with reserved bits set: %llx",
				   (unsigned long long)e);
			c->res->corruptions++;
		}
		l2_offset = e & QCOW2_L1E_OFFSET_MASK;
		ret = inc_refcounts(c, l2_offset, c->cluster_size);
		if (ret < 0)
			goto out;
		if (offset_into_cluster(c, l2_offset)) {
			chk_report(c,
				   "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry "
				   "corrupted",
				   (unsigned long long)l2_offset);
			c->res->corruptions++;
		}
		ret = check_refcounts_l2(c, l2_offset, flags, fix, active);
		if (ret < 0)
			goto out;
	}
	ret = 0;
out:
	free(l1);
	return ret;
}

static int check_bitmaps_refcounts(struct chk *c)
{
	uint8_t *dir = NULL;
	uint64_t pos = 0;
	uint32_t count = 0;
	int ret;

	if (!c->nb_bitmaps)
		return 0;
	ret = inc_refcounts(c, c->bitmap_dir_offset, c->bitmap_dir_size);
	if (ret < 0)
		return ret;

	/* Size bounded by QCOW2_MAX_BITMAP_DIRECTORY_SIZE when the extension was parsed. */
	dir = malloc(c->bitmap_dir_size ? c->bitmap_dir_size : 1);
	if (!dir) {
		c->res->check_errors++;
		return -ENOMEM;
	}
	ret = chk_pread(c, c->bitmap_dir_offset, dir, c->bitmap_dir_size);
	if (ret < 0) {
		c->res->check_errors++;
		goto out;
	}

	while (pos < c->bitmap_dir_size) {
		uint64_t tbl_off, esize;
		uint32_t tbl_size, extra;
		uint16_t name_size;
		uint64_t *tbl;

		if (c->bitmap_dir_size - pos < 24)
			goto broken;
		tbl_off = vs_be64(dir + pos);
		tbl_size = vs_be32(dir + pos + 8);
		name_size = vs_be16(dir + pos + 18);
		extra = vs_be32(dir + pos + 20);
		esize = (24 + (uint64_t)extra + name_size + 7) & ~7ull;
		if (esize > c->bitmap_dir_size - pos || tbl_size > QCOW2_BME_MAX_TABLE_SIZE ||
		    !tbl_off || offset_into_cluster(c, tbl_off))
			goto broken;
		pos += esize;
		count++;

		ret = inc_refcounts(c, tbl_off, tbl_size * 8ull);
		if (ret < 0)
			goto out;
		if (!tbl_size)
			continue;
		tbl = malloc(tbl_size * 8ull);
		if (!tbl) {
			c->res->check_errors++;
			ret = -ENOMEM;
			goto out;
		}
		ret = chk_pread(c, tbl_off, tbl, tbl_size * 8ull);
		if (ret < 0) {
			free(tbl);
			c->res->corruptions++;
			goto out;
		}
		for (uint32_t i = 0; i < tbl_size; i++) {
			uint64_t e = vs_be64((const uint8_t *)&tbl[i]);
			uint64_t off = e & QCOW2_BME_TABLE_OFFSET_MASK;

			if ((e & QCOW2_BME_TABLE_RESERVED_MASK) || offset_into_cluster(c, off) ||
			    (off && (e & QCOW2_BME_TABLE_ALL_ONES))) {
				c->res->corruptions++;
				continue;
			}
			if (!off)
				continue;
			ret = inc_refcounts(c, off, c->cluster_size);
			if (ret < 0) {
				free(tbl);
				goto out;
			}
		}
		free(tbl);
	}
	if (count != c->nb_bitmaps)
		goto broken;
	ret = 0;
	goto out;

broken:
	/* As QEMU: a directory that cannot be walked stops the check. */
	chk_report(c, "ERROR: broken bitmap directory");
	c->res->corruptions++;
	ret = vs_error_set(c->err, -EINVAL, "qcow2 check: broken bitmap directory");
out:
	free(dir);
	return ret;
}

/* Count the refblocks themselves, and judge the reftable entries. */
static int check_refblocks(struct chk *c, unsigned fix, bool *rebuild)
{
	int ret;

	for (uint32_t i = 0; i < c->reftable_entries; i++) {
		uint64_t offset = c->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		uint64_t cluster = offset >> c->cluster_bits;

		if (c->reftable[i] & REFT_RESERVED_MASK) {
			chk_report(c, "ERROR refcount table entry %u has reserved bits set", i);
			c->res->corruptions++;
			*rebuild = true;
			continue;
		}
		if (offset_into_cluster(c, offset)) {
			chk_report(c,
				   "ERROR refcount block %u is not cluster aligned; refcount table "
				   "entry corrupted",
				   i);
			c->res->corruptions++;
			*rebuild = true;
			continue;
		}
		if ((int64_t)cluster >= c->imrt_nb) {
			c->res->corruptions++;
			chk_report(c, "%s refcount block %u is outside image",
				   fix & VS_CHECK_FIX_ERRORS ? "Repairing" : "ERROR", i);
			if (fix & VS_CHECK_FIX_ERRORS) {
				/*
				 * Grow the file to cover the refblock (it reads as
				 * zeroes), as QEMU does; but refuse to blow a small
				 * file up to an absurd size on a hostile offset, and
				 * rebuild instead.
				 */
				uint64_t want = offset + c->cluster_size;
				struct vs_error terr = { 0 };
				int64_t nb;

				if (offset > INT64_MAX - c->cluster_size ||
				    want > 2 * c->file_size + (64ull << 20)) {
					ret = -EFBIG;
					goto resize_fail;
				}
				ret = vs_node_truncate(c->file, want, VS_PREALLOC_OFF, false,
						       &terr);
				if (ret < 0)
					goto resize_fail;
				c->file_size = vs_node_size(c->file);
				nb = size_to_clusters(c, c->file_size);
				if (nb > c->imrt_nb) {
					ret = imrt_resize(c, nb);
					if (ret < 0) {
						c->res->check_errors++;
						return ret;
					}
				}
				if ((int64_t)cluster >= c->imrt_nb) {
					ret = -EINVAL;
					goto resize_fail;
				}
				c->res->corruptions--;
				c->res->corruptions_fixed++;
				ret = inc_refcounts(c, offset, c->cluster_size);
				if (ret < 0)
					return ret;
				continue;
resize_fail:
				*rebuild = true;
				chk_report(c, "ERROR could not resize image: %s", strerror(-ret));
			}
			continue;
		}
		if (offset) {
			uint64_t rc;

			ret = inc_refcounts(c, offset, c->cluster_size);
			if (ret < 0)
				return ret;
			rc = rc_get(c->imrt, c->refcount_order, cluster);
			if (rc != 1) {
				chk_report(c, "ERROR refcount block %u refcount=%llu", i,
					   (unsigned long long)rc);
				c->res->corruptions++;
				*rebuild = true;
			}
		}
	}
	return 0;
}

static int calculate_refcounts(struct chk *c, unsigned fix, bool *rebuild)
{
	int ret;

	/* header */
	ret = inc_refcounts(c, 0, c->cluster_size);
	if (ret < 0)
		return ret;

	ret = check_refcounts_l1(c, c->l1_offset, c->l1_size, WALK_FRAG_INFO, fix, true);
	if (ret < 0)
		return ret;

	if (c->data_file && c->sn.nb) {
		chk_report(c, "ERROR %u snapshots in image with data file", c->sn.nb);
		c->res->corruptions++;
	}
	for (unsigned i = 0; i < c->sn.nb; i++) {
		const struct qcow2_snapshot *sn = &c->sn.sn[i];

		if (offset_into_cluster(c, sn->l1_table_offset)) {
			chk_report(c,
				   "ERROR snapshot %s (%s) l1_offset=%#llx: L1 table is not "
				   "cluster aligned; snapshot table entry corrupted",
				   sn->id, sn->name, (unsigned long long)sn->l1_table_offset);
			c->res->corruptions++;
			continue;
		}
		if (sn->l1_size > QCOW2_MAX_L1_SIZE / 8) {
			chk_report(c,
				   "ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; "
				   "snapshot table entry corrupted",
				   sn->id, sn->name, sn->l1_size);
			c->res->corruptions++;
			continue;
		}
		ret = check_refcounts_l1(c, sn->l1_table_offset, sn->l1_size, 0, fix, false);
		if (ret < 0)
			return ret;
	}
	ret = inc_refcounts(c, c->snapshots_offset, c->sn.size);
	if (ret < 0)
		return ret;

	ret = inc_refcounts(c, c->reftable_offset, c->reftable_entries * 8ull);
	if (ret < 0)
		return ret;

	if (c->crypto_length) {
		ret = inc_refcounts(c, c->crypto_offset, c->crypto_length);
		if (ret < 0)
			return ret;
	}

	ret = check_bitmaps_refcounts(c);
	if (ret < 0)
		return ret;

	return check_refblocks(c, fix, rebuild);
}

static void compare_refcounts(struct chk *c, unsigned fix, bool *rebuild, int64_t *highest)
{
	*highest = 0;
	for (int64_t i = 0; i < c->imrt_nb; i++) {
		uint64_t stored, expected;
		int64_t *fixed = NULL;
		int ret = get_refcount(c, (uint64_t)i, &stored);

		if (ret < 0) {
			chk_report(c, "Can't get refcount for cluster %lld: %s", (long long)i,
				   strerror(-ret));
			c->res->check_errors++;
			continue;
		}
		expected = rc_get(c->imrt, c->refcount_order, (uint64_t)i);
		if (stored || expected)
			*highest = i;
		if (stored == expected)
			continue;

		if (stored == 0)
			*rebuild = true; /* no refblock may cover it: rebuild, not patch */
		else if (stored > expected && (fix & VS_CHECK_FIX_LEAKS))
			fixed = &c->res->leaks_fixed;
		else if (stored < expected && (fix & VS_CHECK_FIX_ERRORS))
			fixed = &c->res->corruptions_fixed;

		chk_report(c, "%s cluster %lld refcount=%llu reference=%llu",
			   fixed	     ? "Repairing" :
			   stored < expected ? "ERROR" :
					       "Leaked",
			   (long long)i, (unsigned long long)stored, (unsigned long long)expected);
		if (fixed && set_refcount(c, (uint64_t)i, expected) == 0) {
			(*fixed)++;
			continue;
		}
		if (stored < expected)
			c->res->corruptions++;
		else
			c->res->leaks++;
	}
}

/*
 * Allocate @count contiguous clusters in the IMRT, from *@first_free on,
 * growing it past the end of the image when no hole is big enough.
 * Returns the byte offset or -errno.
 */
static int64_t alloc_clusters_imrt(struct chk *c, int64_t count, int64_t *first_free)
{
	int64_t cluster = *first_free, run = 0;
	bool first_gap = true;
	int ret;

	for (; cluster < c->imrt_nb && run < count; cluster++) {
		if (!rc_get(c->imrt, c->refcount_order, (uint64_t)cluster)) {
			run++;
			if (first_gap) {
				*first_free = cluster;
				first_gap = false;
			}
		} else {
			run = 0;
		}
	}
	if (run < count) {
		ret = imrt_resize(c, cluster + count - run);
		if (ret < 0)
			return ret;
	}
	cluster -= run;
	for (int64_t i = 0; i < count; i++)
		rc_set(c->imrt, c->refcount_order, (uint64_t)(cluster + i), 1);
	return cluster << c->cluster_bits;
}

/*
 * Write a refblock for every refblock-sized range of [first, end) that holds
 * a non-zero refcount, allocating it in the IMRT; the offsets go to
 * *@rt (grown as needed, *@rt_entries). Returns 1 if *@rt grew, 0 if not,
 * or -errno.
 */
static int rebuild_write_refblocks(struct chk *c, int64_t first, int64_t end, uint64_t **rt,
				   uint32_t *rt_entries)
{
	int64_t first_free = 0;
	bool grown = false;
	int ret;

	for (int64_t cluster = first; cluster < end; cluster++) {
		int64_t rb_index, rb_start, rb_offset;

		if (!rc_get(c->imrt, c->refcount_order, (uint64_t)cluster))
			continue;
		rb_index = cluster >> c->rb_bits;
		rb_start = rb_index << c->rb_bits;

		if (*rt_entries > rb_index && (*rt)[rb_index]) {
			rb_offset = (int64_t)(*rt)[rb_index];
		} else {
			int64_t rb_cluster;

			/* Never place a refblock inside a refblock already written. */
			if (first_free < rb_start)
				first_free = rb_start;
			rb_offset = alloc_clusters_imrt(c, 1, &first_free);
			if (rb_offset < 0)
				return (int)rb_offset;
			rb_cluster = rb_offset >> c->cluster_bits;
			if (rb_cluster >= end)
				end = rb_cluster + 1; /* its own refcount must be written too */

			if (*rt_entries <= rb_index) {
				uint64_t per_cluster = c->cluster_size / 8;
				uint64_t n = ((uint64_t)rb_index + per_cluster) / per_cluster *
					     per_cluster;
				uint64_t *p;

				if (n * 8 > QCOW2_MAX_REFTABLE_SIZE)
					return -EFBIG;
				p = realloc(*rt, n * 8);
				if (!p)
					return -ENOMEM;
				memset(p + *rt_entries, 0, (n - *rt_entries) * 8);
				*rt = p;
				*rt_entries = (uint32_t)n;
				grown = true;
			}
			(*rt)[rb_index] = (uint64_t)rb_offset;
		}

		ret = chk_overlap_write_check(c, 0, (uint64_t)rb_offset, c->cluster_size);
		if (ret < 0)
			return ret;
		ret = chk_pwrite(c, (uint64_t)rb_offset, c->imrt + rb_index * c->cluster_size,
				 c->cluster_size, false);
		if (ret < 0)
			return ret;
		cluster = rb_start + (1ll << c->rb_bits) - 1; /* this refblock is done */
	}
	return grown;
}

/*
 * Replace the refcount structures with new ones built from the IMRT alone.
 * The old structures become leaks that the following pass frees. The
 * reftable goes where the IMRT has room; placing it changes refcounts in
 * the range it occupies, so those refblocks are written again, until the
 * reftable stops growing (each reftable cluster covers many more refblocks,
 * so this ends).
 */
static int rebuild_refcount_structure(struct chk *c)
{
	uint64_t *rt = NULL;
	uint32_t rt_entries = 0;
	int64_t rt_offset = -1, rt_clusters = 0;
	uint8_t hdr[12];
	int ret;

	rb_drop(c);
	ret = rebuild_write_refblocks(c, 0, c->imrt_nb, &rt, &rt_entries);
	if (ret < 0)
		goto fail;

	do {
		int64_t first_free = 0;

		rt_clusters = size_to_clusters(c, rt_entries * 8ull);
		rt_offset = alloc_clusters_imrt(c, rt_clusters, &first_free);
		if (rt_offset < 0) {
			ret = (int)rt_offset;
			goto fail;
		}
		ret = rebuild_write_refblocks(c, rt_offset >> c->cluster_bits,
					      (rt_offset >> c->cluster_bits) + rt_clusters, &rt,
					      &rt_entries);
		if (ret < 0)
			goto fail;
	} while (ret > 0);

	{
		size_t len = rt_entries * 8ull;
		uint8_t *buf = calloc(1, len);

		if (!buf) {
			ret = -ENOMEM;
			goto fail;
		}
		for (uint32_t i = 0; i < rt_entries; i++)
			vs_put_be64(buf + 8ull * i, rt[i]);
		ret = chk_overlap_write_check(c, 0, (uint64_t)rt_offset, len);
		if (ret == 0)
			ret = chk_pwrite(c, (uint64_t)rt_offset, buf, len, true);
		free(buf);
		if (ret < 0)
			goto fail;
	}

	/* Refblocks and reftable are stable on disk: switch the header over. */
	vs_put_be64(hdr, (uint64_t)rt_offset);
	vs_put_be32(hdr + 8, (uint32_t)rt_clusters);
	ret = chk_pwrite(c, 48, hdr, sizeof(hdr), true);
	if (ret < 0)
		goto fail;

	free(c->reftable);
	c->reftable = rt;
	c->reftable_entries = rt_entries;
	c->reftable_offset = (uint64_t)rt_offset;
	c->h.refcount_table_offset = (uint64_t)rt_offset;
	c->h.refcount_table_clusters = (uint32_t)rt_clusters;
	return 0;

fail:
	chk_report(c, "ERROR rebuilding the refcount structure: %s", strerror(-ret));
	free(rt);
	return ret;
}

/*
 * The COPIED flag says "refcount is exactly 1, write in place"; a wrong flag
 * either corrupts a snapshot (set while shared) or costs a needless copy.
 */
static int check_oflag_copied(struct chk *c, unsigned fix)
{
	bool repair;
	int ret;

	if (fix & VS_CHECK_FIX_ERRORS)
		repair = true;
	else if (fix & VS_CHECK_FIX_LEAKS)
		/* Only when the refcounts are known to be right now. */
		repair = !c->res->check_errors && !c->res->corruptions && !c->res->leaks;
	else
		repair = false;

	for (uint32_t i = 0; i < c->l1_size; i++) {
		uint64_t l1e = c->l1[i];
		uint64_t l2_offset = l1e & QCOW2_L1E_OFFSET_MASK;
		uint64_t rc;
		unsigned dirty = 0;

		if (!l2_offset)
			continue;
		/* A refcount that cannot be read was counted already. */
		if (get_refcount(c, l2_offset >> c->cluster_bits, &rc) < 0)
			continue;
		if ((rc == 1) != !!(l1e & QCOW2_OFLAG_COPIED)) {
			c->res->corruptions++;
			chk_report(c,
				   "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx "
				   "refcount=%llu",
				   repair ? "Repairing" : "ERROR", i, (unsigned long long)l1e,
				   (unsigned long long)rc);
			if (repair) {
				uint8_t be[8];

				c->l1[i] = rc == 1 ? l1e | QCOW2_OFLAG_COPIED :
						     l1e & ~QCOW2_OFLAG_COPIED;
				vs_put_be64(be, c->l1[i]);
				ret = chk_overlap_write_check(c, OL_ACTIVE_L1,
							      c->l1_offset + 8ull * i, 8);
				if (ret == 0)
					ret = chk_pwrite(c, c->l1_offset + 8ull * i, be, 8, true);
				if (ret < 0) {
					c->res->check_errors++;
					return ret;
				}
				c->res->corruptions--;
				c->res->corruptions_fixed++;
			}
		}

		if (l2_offset >= c->file_size)
			continue; /* reads as zeroes: no allocated entry */
		ret = chk_pread(c, l2_offset, c->l2, c->cluster_size);
		if (ret < 0) {
			chk_report(c, "ERROR: Could not read L2 table: %s", strerror(-ret));
			c->res->check_errors++;
			return ret;
		}
		for (unsigned j = 0; j < c->l2_entries; j++) {
			uint64_t e = l2_get(c, c->l2, j);
			enum cluster_type t = cluster_type(c, e);

			if (t != CT_NORMAL && t != CT_ZERO_ALLOC)
				continue;
			if (c->data_file)
				rc = 1;
			else if (get_refcount(c, (e & QCOW2_L2E_OFFSET_MASK) >> c->cluster_bits,
					      &rc) < 0)
				continue;
			if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
				c->res->corruptions++;
				chk_report(c,
					   "%s OFLAG_COPIED data cluster: l2_entry=%llx "
					   "refcount=%llu",
					   repair ? "Repairing" : "ERROR", (unsigned long long)e,
					   (unsigned long long)rc);
				if (repair) {
					e = rc == 1 ? e | QCOW2_OFLAG_COPIED :
						      e & ~QCOW2_OFLAG_COPIED;
					vs_put_be64(c->l2 + (size_t)j * c->l2_entry_size, e);
					dirty++;
				}
			}
		}
		if (dirty) {
			ret = chk_overlap_write_check(c, OL_ACTIVE_L2, l2_offset, c->cluster_size);
			if (ret == 0)
				ret = chk_pwrite(c, l2_offset, c->l2, c->cluster_size, false);
			if (ret < 0) {
				chk_report(c, "ERROR: Could not write L2 table: %s",
					   strerror(-ret));
				c->res->check_errors++;
				return ret;
			}
			c->res->corruptions -= dirty;
			c->res->corruptions_fixed += dirty;
		}
	}
	return 0;
}

static int check_refcounts(struct chk *c, unsigned fix)
{
	struct vs_check_result *res = c->res;
	struct vs_check_result pre;
	int64_t nb_clusters, highest = 0;
	bool rebuild = false;
	int ret;

	nb_clusters = size_to_clusters(c, c->file_size);
	if (nb_clusters > INT32_MAX) {
		res->check_errors++;
		return vs_error_set(c->err, -EFBIG, "qcow2 check: image file too large");
	}
	res->total_clusters = size_to_clusters(c, c->h.size & ~511ull);
	res->has_cluster_stats = true;

	ret = imrt_resize(c, nb_clusters);
	if (ret < 0) {
		res->check_errors++;
		return vs_error_set(c->err, ret, "qcow2 check: out of memory");
	}
	ret = calculate_refcounts(c, fix, &rebuild);
	if (ret < 0)
		return ret;

	/* When only patching, the compare runs again with fixing on; keep the pre-compare counts. */
	pre = *res;
	compare_refcounts(c, 0, &rebuild, &highest);

	if (rebuild && (fix & VS_CHECK_FIX_ERRORS)) {
		struct vs_check_result old = *res;
		int64_t fresh_leaks = 0;

		chk_report(c, "Rebuilding refcount structure");
		ret = rebuild_refcount_structure(c);
		if (ret < 0) {
			res->check_errors++;
			return vs_error_setf_errno(c->err, ret,
						   "qcow2 check: rebuilding the refcounts failed");
		}
		res->corruptions = 0;
		res->leaks = 0;

		/* The old refcount structures are leaks now: count everything again. */
		rebuild = false;
		memset(c->imrt, 0, imrt_bytes(c, c->imrt_nb));
		ret = calculate_refcounts(c, 0, &rebuild);
		if (ret < 0)
			return ret;

		if (fix & VS_CHECK_FIX_LEAKS) {
			struct vs_check_result saved = *res;

			*res = (struct vs_check_result){ 0 };
			compare_refcounts(c, VS_CHECK_FIX_LEAKS, &rebuild, &highest);
			if (rebuild)
				chk_report(c, "ERROR rebuilt refcount structure is still broken");
			/* Leaks left here are the rebuild's own that could not be freed. */
			fresh_leaks = res->leaks;
			*res = saved;
		}
		if (res->corruptions < old.corruptions)
			res->corruptions_fixed += old.corruptions - res->corruptions;
		if (res->leaks < old.leaks)
			res->leaks_fixed += old.leaks - res->leaks;
		res->leaks += fresh_leaks;
	} else if (fix) {
		if (rebuild) {
			chk_report(c, "ERROR need to rebuild refcount structures");
			res->check_errors++;
			return vs_error_set(c->err, -EIO,
					    "qcow2 check: the refcount structures must be rebuilt "
					    "(repair with -r all)");
		}
		if (res->leaks || res->corruptions) {
			*res = pre;
			compare_refcounts(c, fix, &rebuild, &highest);
		}
	}
	ret = rb_flush(c);
	if (ret < 0) {
		res->check_errors++;
		return vs_error_setf_errno(c->err, ret, "qcow2 check: writing refcounts failed");
	}

	ret = check_oflag_copied(c, fix);
	if (ret < 0)
		return vs_error_setf_errno(c->err, ret, "qcow2 check: fixing COPIED flags failed");

	res->image_end_offset = (highest + 1) * (int64_t)c->cluster_size;
	return 0;
}

/* Header extensions this check needs: crypto header, bitmaps. */
static int parse_extensions(struct chk *c, const uint8_t *hdr, size_t hdr_len)
{
	uint64_t off = c->h.version >= 3 ? c->h.header_length : QCOW2_V2_HEADER_SIZE;
	uint64_t end = c->h.backing_file_offset ? c->h.backing_file_offset : c->cluster_size;

	end = min_u64(end, hdr_len);
	while (off + 8 <= end) {
		uint32_t type = vs_be32(hdr + off);
		uint32_t len = vs_be32(hdr + off + 4);
		const uint8_t *d = hdr + off + 8;

		off += 8;
		if (len > end - off)
			return vs_error_set(c->err, -EINVAL, "qcow2: header extension too large");
		switch (type) {
		case QCOW2_EXT_END:
			return 0;
		case QCOW2_EXT_CRYPTO:
			if (c->h.crypt_method != CRYPT_LUKS)
				return vs_error_set(c->err, -EINVAL,
						    "qcow2: crypto header extension without LUKS");
			if (len != 16)
				return vs_error_set(c->err, -EINVAL,
						    "qcow2: invalid crypto header extension");
			c->crypto_offset = vs_be64(d);
			c->crypto_length = vs_be64(d + 8);
			break;
		case QCOW2_EXT_BITMAPS:
			if (len != 24)
				return vs_error_set(c->err, -EINVAL,
						    "qcow2: invalid bitmaps extension length");
			/* Without the autoclear bit the bitmaps are stale: ignored. */
			if (!(c->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
				break;
			c->nb_bitmaps = vs_be32(d);
			c->bitmap_dir_size = vs_be64(d + 8);
			c->bitmap_dir_offset = vs_be64(d + 16);
			if (c->nb_bitmaps > QCOW2_MAX_BITMAPS || vs_be32(d + 4) ||
			    c->bitmap_dir_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE ||
			    offset_into_cluster(c, c->bitmap_dir_offset) ||
			    (c->nb_bitmaps && !c->bitmap_dir_size))
				return vs_error_set(c->err, -EINVAL,
						    "qcow2: invalid bitmaps extension");
			break;
		default:
			break;
		}
		off += (len + 7ull) & ~7ull;
	}
	return 0;
}

/*
 * Load what the walk needs, refusing what QEMU refuses to open (so that a
 * failure here is qemu-img's "Could not open").
 */
static int chk_load(struct chk *c)
{
	uint8_t *hdr;
	size_t hdr_len;
	uint64_t l1_needed, l2_span;
	int ret;

	c->file_size = vs_node_size(c->file);
	hdr_len = (size_t)min_u64(c->file_size, 1u << QCOW2_MAX_CLUSTER_BITS);
	hdr = malloc(hdr_len ? hdr_len : 1);
	if (!hdr)
		return vs_error_set(c->err, -ENOMEM, "qcow2 check: out of memory");
	ret = vs_node_pread(c->file, 0, hdr, hdr_len);
	if (ret < 0) {
		free(hdr);
		return vs_error_setf_errno(c->err, ret, "qcow2 check: reading the header");
	}
	ret = qcow2_header_decode_flags(hdr, hdr_len, &c->h, QCOW2_HDR_FOR_CHECK, c->err);
	if (ret < 0)
		goto out;

	c->cluster_bits = c->h.cluster_bits;
	c->cluster_size = 1ull << c->cluster_bits;
	if (c->h.incompatible_features & ~QCOW2_INCOMPAT_KNOWN) {
		ret = vs_error_set(
			c->err, -ENOTSUP, "qcow2: unsupported incompatible features %#llx",
			(unsigned long long)(c->h.incompatible_features & ~QCOW2_INCOMPAT_KNOWN));
		goto out;
	}
	if (c->h.crypt_method > CRYPT_LUKS) {
		ret = vs_error_set(c->err, -EINVAL, "qcow2: unsupported encryption method %u",
				   c->h.crypt_method);
		goto out;
	}
	c->extl2 = c->h.incompatible_features & QCOW2_INCOMPAT_EXTL2;
	c->data_file = c->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE;
	if (c->extl2 && c->cluster_bits < 14) {
		ret = vs_error_set(c->err, -EINVAL,
				   "qcow2: extended L2 entries need clusters of 16 KiB or more");
		goto out;
	}
	c->l2_entry_size = c->extl2 ? 16 : 8;
	c->l2_entries = (unsigned)(c->cluster_size / c->l2_entry_size);
	c->csize_shift = qcow2_csize_shift(c->cluster_bits);
	c->csize_mask = (1ull << (c->cluster_bits - 8)) - 1;
	c->coffset_mask = (1ull << c->csize_shift) - 1;
	c->refcount_order = c->h.refcount_order;
	c->refcount_max = c->refcount_order == 6 ? UINT64_MAX :
						   (1ull << (1u << c->refcount_order)) - 1;
	c->rb_bits = c->cluster_bits + 3 - c->refcount_order;

	/* The active L1 table must cover the virtual disk. */
	l2_span = (uint64_t)c->l2_entries << c->cluster_bits;
	l1_needed = c->h.size / l2_span + (c->h.size % l2_span != 0);
	if (l1_needed > INT32_MAX) {
		ret = vs_error_set(c->err, -EFBIG, "qcow2: image is too big");
		goto out;
	}
	if (c->h.l1_size < l1_needed) {
		ret = vs_error_set(c->err, -EINVAL, "qcow2: L1 table is too small");
		goto out;
	}
	if (c->h.l1_table_offset > INT64_MAX - c->h.l1_size * 8ull ||
	    c->h.refcount_table_offset >
		    INT64_MAX - ((uint64_t)c->h.refcount_table_clusters << c->cluster_bits)) {
		ret = vs_error_set(c->err, -EINVAL, "qcow2: table offset invalid");
		goto out;
	}

	ret = parse_extensions(c, hdr, hdr_len);
	if (ret < 0)
		goto out;

	c->l1_offset = c->h.l1_table_offset;
	c->l1_size = c->h.l1_size;
	c->reftable_offset = c->h.refcount_table_offset;
	c->reftable_entries =
		(uint32_t)(((uint64_t)c->h.refcount_table_clusters << c->cluster_bits) / 8);
	c->snapshots_offset = c->h.snapshots_offset;

	c->reftable = malloc(c->reftable_entries ? c->reftable_entries * 8ull : 8);
	c->l1 = malloc(c->l1_size ? c->l1_size * 8ull : 8);
	c->rb = malloc(c->cluster_size);
	c->l2 = malloc(c->cluster_size);
	if (!c->reftable || !c->l1 || !c->rb || !c->l2) {
		ret = vs_error_set(c->err, -ENOMEM, "qcow2 check: out of memory");
		goto out;
	}
	ret = chk_pread(c, c->reftable_offset, c->reftable, c->reftable_entries * 8ull);
	if (ret == 0)
		ret = chk_pread(c, c->l1_offset, c->l1, c->l1_size * 8ull);
	if (ret < 0) {
		vs_error_setf_errno(c->err, ret, "qcow2 check: reading the tables");
		goto out;
	}
	for (uint32_t i = 0; i < c->reftable_entries; i++)
		c->reftable[i] = vs_be64((const uint8_t *)&c->reftable[i]);
	for (uint32_t i = 0; i < c->l1_size; i++)
		c->l1[i] = vs_be64((const uint8_t *)&c->l1[i]);
out:
	free(hdr);
	return ret;
}

static void chk_free(struct chk *c)
{
	free(c->reftable);
	free(c->l1);
	free(c->rb);
	free(c->l2);
	free(c->imrt);
	qcow2_snapshot_table_free(&c->sn);
}

/* Read the snapshot table in check mode (counts into c->res). */
static int check_read_snapshot_table(struct chk *c, unsigned fix)
{
	struct vs_check_result *res = c->res;
	unsigned flags = QCOW2_SN_READ_PAST_EOF;
	int ret;

	if (fix & VS_CHECK_FIX_ERRORS)
		flags |= QCOW2_SN_READ_REPAIR;
	ret = qcow2_snapshot_table_read(c->file, &c->h, flags, &c->sn, c->err);
	if (ret < 0) {
		res->check_errors++;
		chk_report(c, "ERROR failed to read the snapshot table: %s",
			   c->err ? c->err->msg : "");
		return ret;
	}
	res->corruptions += c->sn.nb_dropped + c->sn.extra_truncated;

	if (c->sn.nb_dropped) {
		/*
		 * Shorten the table in the header now: the refcount pass
		 * must see what the header says, and the clusters of the
		 * dropped entries become leaks that it frees.
		 */
		uint8_t be[4];

		vs_put_be32(be, c->sn.nb);
		ret = chk_pwrite(c, 60, be, 4, true);
		if (ret < 0) {
			res->check_errors++;
			return vs_error_setf_errno(c->err, ret,
						   "qcow2 check: updating the snapshot count");
		}
		c->h.nb_snapshots = c->sn.nb;
		res->corruptions_fixed += c->sn.nb_dropped;
		res->corruptions -= c->sn.nb_dropped;
	}

	/* v3 entries need at least vm_state_size_large and disk_size. */
	if (c->h.version >= 3) {
		for (unsigned i = 0; i < c->sn.nb; i++) {
			if (c->sn.sn[i].extra_size < QCOW2_SNAPSHOT_EXTRA_V3) {
				res->corruptions++;
				chk_report(c, "%s snapshot table entry %u is incomplete",
					   fix & VS_CHECK_FIX_ERRORS ? "Repairing" : "ERROR", i);
			}
		}
	}
	return 0;
}

/*
 * Clear the dirty bit (the refcounts are right now) and the corrupt bit
 * (nothing is left to distrust) in a v3 header.
 */
static int mark_clean(struct chk *c)
{
	uint64_t f = c->h.incompatible_features;
	uint8_t be[8];

	if (c->h.version < 3 || !(f & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)))
		return 0;
	f &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
	vs_put_be64(be, f);
	/* Everything the bits guard must be on disk before they go. */
	int ret = vs_node_flush(c->file);

	if (ret == 0)
		ret = chk_pwrite(c, 72, be, 8, true);
	if (ret < 0)
		return vs_error_setf_errno(c->err, ret, "qcow2 check: updating the header");
	c->h.incompatible_features = f;
	return 0;
}

static int check_pass(struct vs_node *file, struct vs_check_result *res, unsigned fix,
		      qcow2_check_report_fn *report, void *opaque, struct vs_error *err)
{
	struct chk c = {
		.file = file,
		.res = res,
		.report = report,
		.opaque = opaque,
		.err = err,
	};
	struct vs_check_result sres = { 0 }, rres = { 0 };
	int ret;

	memset(res, 0, sizeof(*res));
	ret = chk_load(&c);
	if (ret < 0)
		goto out;

	c.res = &sres;
	ret = check_read_snapshot_table(&c, fix);
	if (ret < 0)
		goto add_snapshot;

	c.res = &rres;
	ret = check_refcounts(&c, fix);
	*res = rres;
	if (ret < 0)
		goto add_snapshot;

	/*
	 * Entries that are incomplete or carried too much extra data need a
	 * rewritten snapshot table; that needs cluster allocation, which this
	 * standalone check does not do: they stay counted as corruptions.
	 */
add_snapshot:
	res->corruptions += sres.corruptions;
	res->leaks += sres.leaks;
	res->check_errors += sres.check_errors;
	res->corruptions_fixed += sres.corruptions_fixed;
	res->leaks_fixed += sres.leaks_fixed;
	if (ret < 0)
		goto out;

	if (fix && !res->check_errors && !res->corruptions)
		ret = mark_clean(&c);
out:
	chk_free(&c);
	return ret;
}

int qcow2_check_image_report(struct vs_node *file, struct vs_check_result *res, unsigned fix,
			     qcow2_check_report_fn *report, void *opaque, struct vs_error *err)
{
	int64_t corruptions_fixed, leaks_fixed;
	int ret;

	ret = check_pass(file, res, fix, report, opaque, err);
	if (ret < 0 || !(res->corruptions_fixed || res->leaks_fixed))
		return ret;

	/*
	 * As qemu-img: report what remains after the repair, with what was
	 * fixed. The findings of this second pass are not reported: a caller
	 * that prints them (vstor-img check) runs its own double check, as
	 * qemu-img does, and prints them there.
	 */
	corruptions_fixed = res->corruptions_fixed;
	leaks_fixed = res->leaks_fixed;
	ret = check_pass(file, res, 0, NULL, NULL, err);
	res->corruptions_fixed = corruptions_fixed;
	res->leaks_fixed = leaks_fixed;
	return ret;
}

int qcow2_check_image(struct vs_node *file, struct vs_check_result *res, unsigned fix,
		      struct vs_error *err)
{
	return qcow2_check_image_report(file, res, fix, NULL, NULL, err);
}
