/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The driver contract. Internal to libstore and the in-tree drivers.
 *
 * Every callback below runs in coroutine context on the node's reactor and
 * returns 0 or -errno. The generic layer (node.c) guarantees, before it calls
 * a driver's submit():
 *  - offset + len lies within the node (except for block status, clamped);
 *  - writes, discards and write-zeroes never reach a read-only node;
 *  - offset and len are multiples of limits.request_align, and every iovec
 *    element's base and length are multiples of limits.mem_align;
 *  - len <= limits.max_transfer for reads and writes (when non-zero);
 *  - flags only contain bits the driver declared in supported_*_flags;
 *  - write-zeroes and discard only reach drivers with the VS_CAP_ bit.
 */
#ifndef VSTOR_DRIVER_H
#define VSTOR_DRIVER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vstor/dirty-bitmap.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

enum vs_op {
	VS_OP_READ,
	VS_OP_WRITE,
	VS_OP_FLUSH,
	VS_OP_DISCARD,
	VS_OP_WRITE_ZEROES,
	VS_OP_BLOCK_STATUS,
};

/* A request as the driver sees it. Lives on the caller's coroutine stack. */
struct vs_req {
	enum vs_op op;
	unsigned flags; /* VS_REQ_* */
	uint64_t offset;
	uint64_t len;
	struct iovec *iov; /* READ / WRITE */
	int niov;
	/* BLOCK_STATUS results, filled by the driver: */
	uint64_t bs_pnum;   /* > 0, <= len */
	unsigned bs_status; /* VS_BS_* */
	uint64_t bs_map;
	struct vs_node *bs_file;
};

/*
 * BLOCK_STATUS answer of a protocol node that maps every byte to itself:
 * the whole request is @status (VS_BS_*), at the same offset of @node.
 */
static inline void vs_req_bs_whole(struct vs_req *req, struct vs_node *node, unsigned status)
{
	req->bs_pnum = req->len;
	req->bs_status = status | VS_BS_OFFSET_VALID;
	req->bs_map = req->offset;
	req->bs_file = node;
}

/* Capabilities. */
#define VS_CAP_DISCARD 0x1
#define VS_CAP_WRITE_ZEROES 0x2
#define VS_CAP_BLOCK_STATUS 0x4
#define VS_CAP_BACKING 0x8
#define VS_CAP_FLUSH 0x10 /* flush does something (else it is a no-op) */
/* Protocol nodes whose writes may extend them (files): no end-of-node check on writes. */
#define VS_CAP_GROWABLE 0x20

struct vs_limits {
	uint32_t request_align; /* offset/length alignment; 1 = byte granularity */
	uint32_t mem_align;	/* buffer alignment (O_DIRECT); 1 = none */
	uint64_t max_transfer;	/* 0 = unlimited */
	uint64_t max_discard;	/* 0 = unlimited */
};

/* Where a node keeps some of its bytes (the map callback, the direct data path). */
struct vs_map {
	struct vs_node *child; /* in this node, at @offset; NULL: in the file @fd */
	int fd;
	uint64_t offset;
	uint64_t len;
};

struct vs_driver {
	const char *name;
	/*
	 * Protocol drivers: the filename prefixes that select this driver
	 * ("nbd://", "memory:"), NULL-terminated; the longest match wins, and a
	 * name no prefix claims goes to the file driver. NULL: by name only.
	 */
	const char *const *prefixes;
	bool is_format;	   /* interprets a file child; else a protocol driver */
	size_t state_size; /* bytes of node->opaque, zeroed at open */

	/*
	 * Format drivers: how well @buf (the first @len bytes of the file, at
	 * least 512 or the whole file) matches; 0 = not at all, 100 = sure.
	 */
	int (*probe)(const uint8_t *buf, size_t len, const char *filename);

	/*
	 * Open. Protocol drivers open @opts->filename; format drivers find their
	 * child in node->file (already open) and name their backing file in
	 * node->backing_name and node->backing_fmt (borrowed from their state,
	 * valid while the node is open); the image layer opens the chain.
	 * node->probed says the format was guessed, not given. Fill node->size,
	 * limits, caps.
	 * With @opts->snapshot (the node is then read-only), open that internal
	 * snapshot or fail with a clear message if the format has none.
	 */
	int (*open)(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err);

	/* Write back caches and release everything; children are closed after. */
	void (*close)(struct vs_node *node);

	/* The data path: one entry, switching on req->op. */
	int (*submit)(struct vs_node *node, struct vs_req *req);

	/* Optional. Resize to @size; the generic layer checks permissions. */
	int (*truncate)(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
			struct vs_error *err);

	/*
	 * Optional. Create an image (format drivers) or a file (protocol).
	 * @flags are VS_CREATE_* (vs_image_create_ex() checked them); a driver
	 * with no backing file has nothing to do with them.
	 */
	int (*create)(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		      unsigned flags, struct vs_error *err);
	const struct vs_create_opt_desc *create_opts;

	/* Optional. Format-specific info and host allocation. */
	int (*get_info)(struct vs_node *node, struct vs_image_info *info);
	int64_t (*allocated_size)(struct vs_node *node);

	/* Optional. Consistency check and repair. */
	int (*check)(struct vs_node *node, struct vs_check_result *res, unsigned fix);

	/* Optional operations; see node.h for their meaning. */
	int (*snapshot_create)(struct vs_node *node, const char *name,
			       const struct vs_snapshot_opts *opts, struct vs_error *err);
	int (*snapshot_apply)(struct vs_node *node, const char *name, struct vs_error *err);
	int (*snapshot_delete)(struct vs_node *node, const char *name, struct vs_error *err);
	int (*amend)(struct vs_node *node, const struct vs_kv *opts, size_t nopts,
		     struct vs_error *err);
	/* The options amend takes (NULL-terminated), for "amend -o help". */
	const struct vs_create_opt_desc *amend_opts;
	int (*set_backing)(struct vs_node *node, const char *backing, const char *fmt,
			   struct vs_error *err);
	int (*measure)(uint64_t size, uint64_t allocated, const struct vs_kv *opts, size_t nopts,
		       struct vs_measure_result *res, struct vs_error *err);
	int (*compact)(struct vs_node *node, vs_progress_fn *progress, void *opaque,
		       struct vs_error *err);
	int (*bitmap)(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err);
	int (*bitmap_list)(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb);
	int (*bitmap_status)(struct vs_node *node, const char *name, uint64_t offset, uint64_t len,
			     bool *dirty, uint64_t *run);

	/*
	 * Optional: the direct data path (direct.h). Where the bytes from
	 * @offset (at most @len) lie while no change runs on the node: fill @m
	 * and return 1, with m->len > 0 bytes that are stored plainly there
	 * (reads and, with @write, writes of them may go straight to the file
	 * without the driver); or return 0 when they cannot, with m->len the
	 * bytes (> 0) that cannot; or -errno.
	 */
	int (*map)(struct vs_node *node, uint64_t offset, uint64_t len, bool write,
		   struct vs_map *m);

	/* VS_REQ_FUA; VS_REQ_COMPRESSED: whole clusters, stored compressed */
	unsigned supported_write_flags;
	unsigned supported_zero_flags; /* VS_REQ_MAY_UNMAP, VS_REQ_FUA */
};

/*
 * The largest size a node may have: qemu's BDRV_MAX_LENGTH, INT64_MAX
 * rounded down to 1 GiB. qemu refuses to open anything larger ("File too
 * large"), so an image or export past it is refused here too, rather than
 * handed to clients that would reject it or to arithmetic that would wrap.
 */
#define VS_NODE_MAX_SIZE ((uint64_t)INT64_MAX & ~((UINT64_C(1) << 30) - 1))

struct vs_node {
	const struct vs_driver *drv;
	void *opaque;	      /* driver state, drv->state_size bytes */
	struct vs_node *file; /* protocol child of a format node */
	struct vs_node *backing;
	struct vs_reactor *reactor;
	char *filename;
	uint64_t size;
	struct vs_limits limits;
	unsigned caps;
	bool read_only;
	bool force_share;
	uint64_t cluster_size;	  /* format nodes with clusters; 0 otherwise */
	unsigned chain_depth;	  /* 0 for the top of an image, +1 per backing level */
	struct vs_node *overlay;  /* the node whose backing this is (while opening), or NULL */
	const char *backing_name; /* what the format names as backing file (driver's), or NULL */
	const char *backing_fmt;  /* its recorded format, or NULL */
	bool probed;		  /* the format was probed, not given */
	bool writethrough;	  /* top node of a cache mode without WCE: every write is FUA */
	enum vs_cache_mode cache;
	struct vs_cache_knobs knobs;
	/* Serialises read-modify-write of unaligned requests (generic layer). */
	struct vs_co_mutex rmw_lock;
	unsigned in_flight;
	/* Requests inside the node's public entry points (see vs_node_drain_begin). */
	unsigned active;
	/* vs_node_drain_begin(): new requests wait while @quiesced (but @drainer's). */
	struct vs_co_mutex drain_lock;
	bool quiesced;
	struct vs_co *drainer;
	struct vs_co_queue quiesce_wait; /* requests held at the gate */
	struct vs_co_queue drain_wait;	 /* the drainer, for in_flight == 0 */
	/* References: the opener's, a parent's (file, backing), vs_node_ref()'s. */
	unsigned refcnt;
	/* Called after the driver's close (a resolver's lease); may be NULL. */
	void (*close_hook)(void *opaque);
	void *close_hook_opaque;
	/*
	 * Set (by whoever opened the node, e.g. a pool's cross-host lease)
	 * once the node must not be written any more: its writes, flushes and
	 * resizes fail with EIO from then on. NULL: never.
	 */
	const atomic_bool *write_fence;
	/* Direct-path domains that map through this node (direct.c). */
	struct vs_direct_link *direct;
	unsigned direct_changing; /* vs_node_direct_change_begin() nesting */
	/* In-memory dirty bitmaps the node's writes mark (dirty-bitmap.c). */
	struct vs_dirty_bitmap *dirty_bitmaps;
	/* vs_node_set_before_write(): called inside each write, before it. */
	vs_node_before_write_fn *before_write;
	void *before_write_opaque;
	/* During vs_node_check_report(): where the driver's check reports its findings, or NULL. */
	vs_check_report_fn *check_report;
	void *check_report_opaque;
};

/*
 * dirty-bitmap.c: mark the bitmaps of @node for a write to [offset,
 * offset+len) (the generic layer, after a write, write-zeroes or discard);
 * detach them all (the node is freed).
 */
/*
 * The write path's calls around a write of @node when it has dirty bitmaps:
 * the hooks' begin before, and after it the hooks' end or the marking of
 * the bitmaps without a hook (dirty-bitmap.c).
 */
void vs_node_dirty_write_begin(struct vs_node *node, uint64_t offset, uint64_t len);
void vs_node_dirty_write_end(struct vs_node *node, enum vs_dirty_write kind, uint64_t offset,
			     uint64_t len, const struct iovec *iov, int niov, unsigned flags,
			     int ret);
void vs_node_dirty_bitmaps_orphan(struct vs_node *node);

/*
 * The registry (registry.c). Each driver registers itself in its own file
 * with VS_DRIVER_REGISTER(its vtable), which runs before main.
 */
void vs_driver_register(const struct vs_driver *drv);
#define VS_DRIVER_REGISTER(drv)                                                 \
	static void __attribute__((constructor)) vs_driver_register_##drv(void) \
	{                                                                       \
		vs_driver_register(&(drv));                                     \
	}
const struct vs_driver *vs_driver_find(const char *name);
/* Best format for the first bytes of a file ("raw" when none matches). */
const struct vs_driver *vs_driver_probe(const uint8_t *buf, size_t len, const char *filename);
/* The protocol driver for @filename: the longest registered prefix, else "file". */
const struct vs_driver *vs_protocol_driver_for(const char *filename);

/* Resolve @name against the directory of @base into @out (size @outsz). */
int vs_path_combine(char *out, size_t outsz, const char *base, const char *name);

/*
 * A json:{...} image name (json-name.c): the local file it names into
 * @path and its "driver" into @fmt ("" if none). Returns 0, or -errno with
 * a message in @err (QEMU's words) for a name vstor cannot open.
 */
int vs_json_name_resolve(const char *name, char *path, size_t pathsz, char *fmt, size_t fmtsz,
			 struct vs_error *err);

/*
 * Coroutine context: open a protocol node for @filename with @opts (its
 * format, read_only, cache used). For drivers that create their image on a
 * protocol node (create callbacks) and for tools.
 */
int vs_protocol_open(struct vs_node **out, const char *filename, const struct vs_open_opts *opts,
		     struct vs_error *err);

/*
 * Coroutine context: "create" for protocol drivers whose images exist
 * already (an iSCSI LUN, a mapped LV), what formats do before they write
 * their header. Options other than size and preallocation=off fail
 * (-EINVAL, "Option 'X' is not supported @where"); then @filename is opened
 * and *@have is its size. Returns -ENOSPC, with @err untouched for the
 * driver's own words, when @size is larger.
 */
int vs_protocol_create_existing(const char *filename, uint64_t size, const struct vs_kv *opts,
				size_t nopts, const char *where, uint64_t *have,
				struct vs_error *err);

/*
 * Image names that start with a registered prefix (the tools register
 * "vol:" for pool volumes) are resolved by a hook, so that libstore itself
 * knows nothing of pools. open returns the protocol node that stores the
 * image named @name (the whole name, prefix included); the format node is
 * then built on it as for any file. create makes the image @name as
 * vs_image_create_ex() would. Both fill @err on failure.
 */
struct vs_image_resolver {
	const char *prefix;
	int (*open)(const char *name, const struct vs_open_opts *opts, struct vs_node **out,
		    struct vs_error *err);
	int (*create)(const char *name, const char *format, uint64_t size, const struct vs_kv *opts,
		      size_t nopts, unsigned flags, struct vs_error *err);
	/*
	 * Optional: confine backing files. Map @backing, the backing file name
	 * recorded in the image @overlay (a name of this resolver), to the name
	 * to open (size @outsz), or fail with @err filled when it names
	 * something the resolver does not hold. With it, a backing file whose
	 * format is not recorded may only be probed as raw.
	 */
	int (*resolve_backing)(const char *overlay, const char *backing, char *out, size_t outsz,
			       struct vs_error *err);
	/*
	 * Optional: the passphrase the resolver keeps for the encrypted image
	 * @name (a pool volume's secret), used when the caller names none for
	 * it: 0 with *@data malloc'd (*@len bytes; the caller wipes and frees
	 * it), -ENOENT when there is none, else -errno with @err filled.
	 */
	int (*key_secret)(const char *name, uint8_t **data, size_t *len, struct vs_error *err);
};

/*
 * Register @r (borrowed; must outlive its use) for its prefix, replacing an
 * earlier resolver of the same prefix. Call before any image is opened.
 * Returns 0 or -ENOSPC (at most 4 resolvers).
 */
int vs_image_register_resolver(const struct vs_image_resolver *r);

/* Node lifetime (node.c): a node of @drv for @filename, its state zeroed. */
struct vs_node *vs_node_new(const struct vs_driver *drv, const char *filename,
			    const struct vs_open_opts *opts);
/* Free a node that was never opened, or whose driver has closed it. */
void vs_node_free(struct vs_node *n);

/*
 * Append a format-specific entry to @info (get_info callbacks; at most
 * VS_INFO_MAX_SPECIFIC in all), JSON name @key (node.c).
 */
void vs_info_add_str(struct vs_image_info *info, const char *key, const char *v);
void vs_info_add_int(struct vs_image_info *info, const char *key, int64_t v);
void vs_info_add_bool(struct vs_image_info *info, const char *key, bool v);

/*
 * Allocate an I/O buffer aligned for any node (4096); free with free() (iov.c).
 * From VS_BUF_HUGE bytes on, the buffer is aligned to it and asks for
 * transparent huge pages.
 */
#define VS_BUF_HUGE (2u << 20)
void *vs_buf_alloc(size_t len);
void *vs_buf_zalloc(size_t len);

extern const struct vs_driver vs_driver_file;
extern const struct vs_driver vs_driver_memory;
extern const struct vs_driver vs_driver_null;
extern const struct vs_driver vs_driver_raw;
extern const struct vs_driver vs_driver_qcow2;
extern const struct vs_driver vs_driver_luks;
extern const struct vs_driver vs_driver_nfs;   /* with libnfs */
extern const struct vs_driver vs_driver_iscsi; /* with libiscsi */
extern const struct vs_driver vs_driver_lvmap; /* LVs mapped onto their PVs */
extern const struct vs_driver vs_driver_rbd;   /* with librbd */

/*
 * Test filter drivers (driver-filter.c): a protocol node over another
 * protocol node (node->file) that passes requests on.
 *   fault:RULES:INNER       fails chosen requests (docs/reliability.md)
 *   log-writes:LOG:INNER    records every write, discard and flush in LOG
 */
extern const struct vs_driver vs_driver_fault;
extern const struct vs_driver vs_driver_log_writes;
int vs_filter_open_inner(struct vs_node *node, const char *inner, const struct vs_open_opts *opts,
			 struct vs_error *err);
int vs_filter_submit(struct vs_node *node, struct vs_req *req);
int vs_filter_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
		       struct vs_error *err);
int64_t vs_filter_allocated_size(struct vs_node *node);

/*
 * Coroutine context: append a MARK record with @value to the log of @node,
 * which must be a log-writes node (-EINVAL otherwise). Tests mark where each
 * of their requests starts and ends.
 */
int vs_log_writes_mark(struct vs_node *node, uint64_t value);

#endif
