/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 driver internals: the open image's state and the interfaces between
 * the driver's files (qcow2.c open/close/submit, qcow2-cluster.c mapping
 * and allocation, qcow2-refcount.c refcounts and overlap checks,
 * qcow2-cache.c metadata cache, qcow2-compress.c, qcow2-create.c).
 *
 * Locking: every metadata structure below (L1, reftable, caches, header)
 * is only touched by the coroutine holding s->lock. Data I/O to clusters
 * that are already allocated runs outside the lock; such I/O is counted in
 * s->unlocked_io, and whoever frees clusters first waits for it to drain
 * (qcow2_drain_unlocked) so a cluster is never reused under a reader.
 */
#ifndef VSTOR_QCOW2_H
#define VSTOR_QCOW2_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "crypto-luks.h"
#include "driver.h"
#include "qcow2-bitmap.h"
#include "qcow2-format.h"
#include "qcow2-snapshot.h"

/* Cache types; they decide which overlap checks a write-back skips. */
enum qcow2_meta {
	QCOW2_META_HEADER = 0x1,
	QCOW2_META_L1 = 0x2,
	QCOW2_META_L2 = 0x4,
	QCOW2_META_REFTABLE = 0x8,
	QCOW2_META_REFBLOCK = 0x10,
	QCOW2_META_SNAPSHOTS = 0x20,
	QCOW2_META_INACTIVE_L1 = 0x40,
	QCOW2_META_ALL = 0x7f,
};

struct qcow2_cache_entry {
	uint64_t offset; /* host offset of the table; 0 = free slot */
	uint64_t lru;
	unsigned ref; /* pinned while > 0 */
	bool dirty;
};

struct qcow2_cache {
	enum qcow2_meta type;
	unsigned n;
	size_t table_size;
	uint8_t *mem; /* n * table_size, aligned */
	struct qcow2_cache_entry *e;
	uint64_t lru_clock;
	/* Entries of @depends must be on disk before ours are written. */
	struct qcow2_cache *depends;
	/* The file must be flushed before our entries are written (data they point to). */
	bool flush_first;
	unsigned nbuckets; /* power of two */
	int *bucket;	   /* hash of offset -> first entry index, -1 = none */
	int *next;	   /* chain of entries in one bucket */
};

/* An entry of the feature name table extension, to name refused features. */
struct qcow2_feature_name {
	uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
	uint8_t bit;
	char name[47];
};

struct qcow2_state {
	struct qcow2_header hdr;
	uint8_t *hdr_raw; /* the header_length bytes as read, so rewrites keep unknown fields */

	unsigned cluster_bits;
	uint64_t cluster_size;
	bool extl2;
	unsigned l2_entry_size; /* 8 or 16 bytes */
	unsigned l2_bits;	/* log2(entries per L2 table) */
	uint64_t l2_entries;
	unsigned subcluster_bits; /* cluster_bits - 5 with extended L2, else cluster_bits */
	uint64_t subcluster_size;
	unsigned csize_shift; /* compressed descriptor: offset bits */
	uint64_t csize_mask;  /* mask of the sector-count field after shifting */

	/* Active L1 table (host order). */
	uint64_t *l1;
	uint32_t l1_size;
	uint64_t l1_offset;

	/* Refcounts. */
	unsigned refcount_order;
	unsigned refcount_bits;
	uint64_t refcount_max;
	unsigned rb_bits; /* log2(entries per refcount block) */
	uint64_t *reftable;
	uint64_t reftable_size; /* entries */
	uint64_t reftable_used; /* entries up to the last non-zero one (overlap checks scan these) */
	uint64_t reftable_offset;
	uint64_t free_hint; /* cluster index where free-space search starts */
			    /*
	 * Compressed clusters are packed into host clusters. Each slot is a
	 * host cluster being filled: the next free byte in it (0: unused), and
	 * the cluster right after it, taken in advance with one reference so
	 * that the next piece can run on into it although other writers
	 * allocate meanwhile (0: none). Several slots, so that compressed
	 * writes interleaved with ordinary allocations (parallel converts)
	 * still fill their clusters. Reservations are given back before
	 * metadata is written (qcow2_flush_metadata), so a flushed image has
	 * no leak; a slot is dropped when its cluster's refcount reaches zero,
	 * so freed space is never written behind the allocator's back.
	 */
#define QCOW2_CBYTE_SLOTS 8
	struct {
		uint64_t next;
		uint64_t reserved;
	} cslot[QCOW2_CBYTE_SLOTS];
	/*
	 * Clusters were freed by L2 updates that may not be on disk yet; the
	 * next allocation, which may reuse them, first writes those L2 tables.
	 */
	bool free_pending;
	/*
	 * Freed clusters to give back to the host (punch a hole) once no L2
	 * entry on disk points to them any more: punching at once would let a
	 * crash leave an old entry on disk reading zeroes where the image
	 * should read its old data, or the backing file's (an emptied image
	 * after commit). Punched after the metadata and the file are flushed;
	 * a cluster allocated again meanwhile leaves the list.
	 */
#define QCOW2_PUNCH_MAX 64
	struct {
		uint64_t off, len;
	} punch[QCOW2_PUNCH_MAX];
	unsigned npunch;

	struct qcow2_cache *l2_cache;
	struct qcow2_cache *rb_cache;

	struct qcow2_snapshot *snaps;
	unsigned nb_snaps;
	uint64_t snap_table_size; /* bytes at hdr.snapshots_offset */

	char backing_file[QCOW2_MAX_BACKING_NAME + 1];
	char backing_fmt[32];
	struct qcow2_feature_name *features;
	unsigned nb_features;

	struct qcow2_bitmaps bitmaps;

	bool read_only;
	bool corrupt; /* refuse writes: metadata found inconsistent */
	bool lazy_refcounts;
	bool dirty; /* the dirty bit is set on disk */
	bool prealloc_checked;
	bool metadata_prealloc; /* many more clusters referenced than the file allocates */
	/*
	 * Opened to be checked (vs_open_opts.for_check): a refcount table
	 * that is missing or outside the file is accepted, as QEMU does, and
	 * left unloaded (no_reftable, with corrupt set) for check -r all to
	 * rebuild.
	 */
	bool for_check;
	bool no_reftable;

	/* Encryption (qcow2-crypto.c): the LUKS header extension and header, the key. */
	uint64_t crypto_offset, crypto_length;
	struct vs_luks_header *luks;	 /* crypt_method LUKS */
	struct vs_sector_cipher *cipher; /* NULL: not unlocked (no secret given) */

	/*
	 * External data file (incompatible bit "external data file"): guest
	 * clusters live at their own offset in @data_file, never counted in
	 * the refcounts; the qcow2 file holds only metadata. @data_file_name
	 * is the name in the header extension (empty: none recorded).
	 */
	struct vs_node *data_file;
	char data_file_name[QCOW2_MAX_DATA_FILE_NAME + 1];
	bool data_file_raw;	/* autoclear bit: the data file stays a valid raw image */
	bool data_file_missing; /* opened no_io without its data file: no data requests */

	struct vs_co_mutex lock;
	unsigned unlocked_io;
	struct vs_co_queue drain_waiters;
};

static inline struct qcow2_state *qcow2_state(struct vs_node *node)
{
	return node->opaque;
}

/* The node guest data lives in: the external data file, else the image file. */
static inline struct vs_node *qcow2_data_node(struct vs_node *node)
{
	struct qcow2_state *s = qcow2_state(node);

	return s->data_file ? s->data_file : node->file;
}

static inline uint64_t qcow2_offset_in_cluster(const struct qcow2_state *s, uint64_t off)
{
	return off & (s->cluster_size - 1);
}

static inline uint64_t qcow2_size_to_clusters(const struct qcow2_state *s, uint64_t size)
{
	return (size + s->cluster_size - 1) >> s->cluster_bits;
}

/* qcow2.c */
int qcow2_header_update(struct vs_node *node);
/*
 * Lock held. Make @h the header, in memory and on disk (qcow2_header_update);
 * on failure the old one stays in memory.
 */
int qcow2_header_set(struct vs_node *node, const struct qcow2_header *h);
/*
 * Lock held. Write entry @idx (@value) of the big-endian u64 table at
 * @table_offset, a metadata structure of type @meta (QCOW2_META_*) for the
 * overlap check.
 */
int qcow2_write_table_entry(struct vs_node *node, int meta, uint64_t table_offset, uint64_t idx,
			    uint64_t value);
int qcow2_mark_corrupt(struct vs_node *node, const char *why, uint64_t offset);
int qcow2_mark_dirty(struct vs_node *node);
void qcow2_drain_unlocked(struct qcow2_state *s);
void qcow2_unlocked_io_begin(struct qcow2_state *s);
void qcow2_unlocked_io_end(struct qcow2_state *s);
int qcow2_flush_metadata(struct vs_node *node);
int qcow2_l1_write_entry(struct vs_node *node, uint32_t idx);
int qcow2_l1_grow(struct vs_node *node, uint64_t min_size, bool exact);
uint64_t qcow2_l1_size_for(const struct qcow2_state *s, uint64_t virtual_size);

/* qcow2-cache.c */
struct qcow2_cache *qcow2_cache_new(unsigned n, size_t table_size, enum qcow2_meta type);
void qcow2_cache_free(struct qcow2_cache *c);
int qcow2_cache_get(struct vs_node *node, struct qcow2_cache *c, uint64_t offset, void **table);
int qcow2_cache_get_empty(struct vs_node *node, struct qcow2_cache *c, uint64_t offset,
			  void **table);
void qcow2_cache_put(struct qcow2_cache *c, void **table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, void *table);
int qcow2_cache_writeback(struct vs_node *node, struct qcow2_cache *c);
int qcow2_cache_flush(struct vs_node *node, struct qcow2_cache *c);
int qcow2_cache_set_dependency(struct vs_node *node, struct qcow2_cache *c,
			       struct qcow2_cache *dep);
void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset);
void qcow2_cache_drop_all(struct qcow2_cache *c);

/* qcow2-refcount.c */
int qcow2_refcount_load(struct vs_node *node, struct vs_error *err);
int qcow2_refcount_get(struct vs_node *node, uint64_t cluster, uint64_t *rc);
int qcow2_refcount_update(struct vs_node *node, uint64_t offset, uint64_t len, int64_t delta);
int64_t qcow2_alloc_clusters(struct vs_node *node, uint64_t n);
int qcow2_free_clusters(struct vs_node *node, uint64_t offset, uint64_t len, bool punch);
int64_t qcow2_alloc_bytes(struct vs_node *node, uint64_t len);
int qcow2_release_reservations(struct vs_node *node);
int qcow2_punch_pending(struct vs_node *node);
int qcow2_overlap_check(struct vs_node *node, unsigned ignore, uint64_t offset, uint64_t len);
/* The metadata [offset, offset+len) overlaps ("active L2 table"), or NULL; marks nothing. */
const char *qcow2_overlap_find(struct vs_node *node, unsigned ignore, uint64_t offset,
			       uint64_t len);
uint64_t qcow2_rb_entry_get(const struct qcow2_state *s, const void *rb, uint64_t i);
void qcow2_rb_entry_set(const struct qcow2_state *s, void *rb, uint64_t i, uint64_t v);

/* qcow2-cluster.c */
int qcow2_map(struct vs_node *node, uint64_t offset, uint64_t len, bool write, struct vs_map *m);
int qcow2_co_readv(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
		   int niov);
int qcow2_co_writev(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
		    int niov);
int qcow2_co_zero(struct vs_node *node, uint64_t offset, uint64_t len, unsigned flags,
		  bool discard);
/* Whole clusters, compressed where that saves space (a write with VS_REQ_COMPRESSED). */
int qcow2_co_write_compressed(struct vs_node *node, uint64_t offset, uint64_t len,
			      struct iovec *iov, int niov);
int qcow2_co_block_status(struct vs_node *node, struct vs_req *req);
int qcow2_preallocate(struct vs_node *node, uint64_t offset, uint64_t len, enum vs_prealloc mode);
int qcow2_shrink_check(struct vs_node *node, uint64_t new_size, bool *tail_allocated);
int qcow2_discard_tail(struct vs_node *node, uint64_t new_size);
/*
 * Lock held, after a shrink: drop the refcount blocks that count nothing but
 * themselves and cut the file after the last cluster in use, as QEMU does.
 * A failure to cut is only warned about (the image is consistent).
 */
int qcow2_shrink_file(struct vs_node *node);

/* qcow2-compress.c */
int qcow2_decompress(uint8_t type, const void *src, size_t src_len, void *dst, size_t dst_len);
ssize_t qcow2_compress(uint8_t type, const void *src, size_t src_len, void *dst, size_t dst_len);

/* qcow2-snapshot-ops.c */
int qcow2_snapshot_create(struct vs_node *node, const char *name, const struct vs_snapshot_opts *o,
			  struct vs_error *err);
int qcow2_snapshot_delete(struct vs_node *node, const char *name_or_id, struct vs_error *err);
int qcow2_snapshot_apply(struct vs_node *node, const char *name_or_id, struct vs_error *err);
/*
 * Lock held. Write the snapshot table again (every entry with the known
 * extra data that v3 requires) and point the header to it.
 */
int qcow2_snapshot_table_rewrite(struct vs_node *node);

/* qcow2-amend.c */
int qcow2_set_backing(struct vs_node *node, const char *backing, const char *fmt,
		      struct vs_error *err);
/*
 * Lock held. Write the header cluster again from the state (fixed header,
 * backing file and format, the bitmaps extension of s->bitmaps, every other
 * extension kept as it is), then flush.
 */
int qcow2_header_cluster_rewrite(struct vs_node *node);
/* qemu-img amend: compat, lazy_refcounts, refcount_bits, backing_file, backing_fmt, size. */
int qcow2_amend(struct vs_node *node, const struct vs_kv *opts, size_t nopts, struct vs_error *err);

/* qcow2-compact.c: offline compaction (driver compact). */
int qcow2_compact(struct vs_node *node, vs_progress_fn *progress, void *opaque,
		  struct vs_error *err);

/* qcow2-crypto.c */
int qcow2_crypto_parse_ext(struct vs_node *node, const uint8_t *data, uint32_t len,
			   struct vs_error *err);
/* After the header is read: parse the LUKS header, unlock with opts' secret. */
int qcow2_crypto_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err);
void qcow2_crypto_close(struct qcow2_state *s);
/*
 * Decrypt @len bytes (whole sectors) read from host offset @host, guest
 * offset @guest, in place; encrypt a buffer before it is written there.
 * -EACCES when no key was given.
 */
int qcow2_decrypt_iov(struct qcow2_state *s, uint64_t host, uint64_t guest, struct iovec *iov,
		      int niov, uint64_t len);
int qcow2_encrypt_buf(struct qcow2_state *s, uint64_t host, uint64_t guest, uint8_t *buf,
		      uint64_t len);
int qcow2_crypto_info(struct vs_node *node, struct vs_image_info *info);
/* Driver amend: encrypt.* key slot changes (vs_luks_amend), then qcow2_amend. */
int qcow2_amend_all(struct vs_node *node, const struct vs_kv *opts, size_t nopts,
		    struct vs_error *err);

/* qcow2-create.c */
int qcow2_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		 unsigned flags, struct vs_error *err);
/*
 * qemu-img measure for a qcow2 target: @allocated is the data of the source
 * counted in whole target clusters (the caller rounds, as qemu-img does).
 */
int qcow2_measure(uint64_t size, uint64_t allocated, const struct vs_kv *opts, size_t nopts,
		  struct vs_measure_result *res, struct vs_error *err);
extern const struct vs_create_opt_desc qcow2_create_opts[];
/* qcow2-amend.c: what amend takes, as qemu-img lists it. */
extern const struct vs_create_opt_desc qcow2_amend_opts[];

#endif
