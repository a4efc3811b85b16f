/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The node graph and the request interface.
 *
 * A node is an opened driver instance: a protocol node moves bytes (file,
 * memory, null), a format node interprets the bytes of its "file" child
 * (raw, qcow2) and may have a "backing" node. Every I/O goes through the
 * generic layer below, which checks ranges and flags, splits and aligns
 * requests to the driver's limits and emulates what a driver lacks.
 *
 * All I/O functions run in coroutine context (see reactor.h) and return 0 or
 * -errno. Opening and closing also run in coroutine context, since formats
 * read their metadata through the engine.
 */
#ifndef VSTOR_NODE_H
#define VSTOR_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vstor/cache.h"
#include "vstor/error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct vs_node;

/* Request flags. */
#define VS_REQ_FUA 0x1	       /* write: durable when it completes */
#define VS_REQ_MAY_UNMAP 0x2   /* write-zeroes: may deallocate (punch) */
#define VS_REQ_NO_FALLBACK 0x4 /* write-zeroes: fail -ENOTSUP rather than write zeroes */
#define VS_REQ_COMPRESSED 0x8  /* write: store compressed (vs_node_pwritev_compressed) */

/* Block status bits (see vs_node_block_status()). */
#define VS_BS_DATA 0x1	       /* reads return data from this layer (or below) */
#define VS_BS_ZERO 0x2	       /* reads return zeroes */
#define VS_BS_OFFSET_VALID 0x4 /* *map is the byte offset in *file */
#define VS_BS_ALLOCATED 0x8    /* this layer decides the content (not the backing) */
#define VS_BS_COMPRESSED 0x10  /* stored compressed (no valid offset) */

/* Permission bits, as QEMU defines them (they also name the OFD lock bytes). */
#define VS_PERM_CONSISTENT_READ 0x1
#define VS_PERM_WRITE 0x2
#define VS_PERM_WRITE_UNCHANGED 0x4
#define VS_PERM_RESIZE 0x8
#define VS_PERM_ALL 0xf

/* Preallocation modes for create and truncate. */
enum vs_prealloc {
	VS_PREALLOC_OFF = 0,
	VS_PREALLOC_METADATA,
	VS_PREALLOC_FALLOC,
	VS_PREALLOC_FULL,
};
int vs_prealloc_parse(const char *s, enum vs_prealloc *out);
const char *vs_prealloc_name(enum vs_prealloc p);

/* A passphrase: @len bytes at @data. */
struct vs_secret_buf {
	const void *data;
	size_t len;
};

/* Options for opening an image (a format node over a protocol node). */
struct vs_open_opts {
	const char *filename;
	const char *format; /* "raw", "qcow2", or NULL to probe */
	bool read_only;
	bool force_share; /* -U: do not take or check the write locks */
	/*
	 * Share nothing, not even reading (vstor-img compact moves clusters):
	 * fails if anybody has the image open, and keeps everybody out.
	 */
	bool exclusive;
	bool no_backing; /* do not open the backing file */
	enum vs_cache_mode cache;
	uint64_t l2_cache_size;	      /* bytes; 0 = cover the image within the default budget */
	uint64_t refcount_cache_size; /* bytes; 0 = default */
	bool no_repair;		      /* do not repair a dirty lazy-refcounts image on open */
	/*
	 * Opened to be checked or repaired (vstor-img check): a read-write open
	 * of an image marked corrupt is allowed (writes stay refused until a
	 * repair clears the mark), and header bits are left as they are.
	 */
	bool for_check;
	/*
	 * Opened only to show what the image says (qemu-img info, QEMU's
	 * BDRV_O_NO_IO), read-only: an external data file of a qcow2 that
	 * cannot be opened is then no error; the node's data requests fail
	 * with EIO.
	 */
	bool no_io;
	/*
	 * Open the internal snapshot with this name or id instead of the active
	 * image, read-only (qemu-nbd -l, qemu-img convert -l). NULL: the image.
	 */
	const char *snapshot;
	/*
	 * The passphrase of an encrypted image (the luks format): @key_secret_len
	 * bytes, borrowed for the open (QEMU's key-secret, resolved). NULL: none;
	 * a LUKS image then opens read-only for its header alone (info), and
	 * reads of its data fail with -EACCES.
	 */
	const void *key_secret_data;
	size_t key_secret_len;
	/*
	 * The passphrases of the backing chain's levels when they differ from
	 * the image's (QEMU's backing.encrypt.key-secret,
	 * backing.backing.encrypt.key-secret, ...): backing_secrets[i] for the
	 * image i + 1 levels below this one, borrowed for the open. A level
	 * without one (data NULL, or i >= nb_backing_secrets) opens with the
	 * secret a resolver keeps for it (a pool volume's), else with
	 * key_secret_data.
	 */
	const struct vs_secret_buf *backing_secrets;
	size_t nb_backing_secrets;
	/*
	 * qcow2 with an external data file: open this name (any protocol)
	 * instead of the one the image records (QEMU's data-file.filename=).
	 * NULL: the recorded name, always as a local file.
	 */
	const char *data_file;
};

/*
 * Secrets as QEMU's `--object secret,id=ID,...` defines them: create options
 * name them by id (key-secret=ID). vs_secret_add() copies @len bytes of
 * @data under @id, replacing a secret of the same id; 0 or -ENOMEM.
 * vs_secret_clear() wipes and forgets them all.
 */
int vs_secret_add(const char *id, const void *data, size_t len);
void vs_secret_clear(void);

/*
 * Define secret @id as QEMU's secret object's properties give it: exactly
 * one of @data (the value) and @file (a file holding it, which others may
 * not read: mode & 077 is refused) in @format "raw" (NULL: raw) or
 * "base64". The decoded bytes are kept as vs_secret_add() keeps them; every
 * copy made on the way is wiped. 0 or -errno with QEMU's message in @err.
 */
int vs_secret_define(const char *id, const char *data, const char *file, const char *format,
		     struct vs_error *err);

/* Forget secret @id (its bytes wiped); -ENOENT when there is none. */
int vs_secret_remove(const char *id);

/*
 * Define TLS credentials @id as QEMU's @type object ("tls-creds-x509" or
 * "tls-creds-psk") gives them to a client: @dir holds ca-cert.pem and
 * optionally client-cert.pem/client-key.pem (x509), or keys.psk (psk, with
 * identity @username, NULL: "qemu"). NBD client names over TLS (nbds://,
 * nbds+unix://) use them: the object named by their tls-creds=ID query
 * parameter, else the only one defined. Replaces an object of the same id.
 * 0 or -errno with a message in @err.
 */
int vs_tls_creds_define(const char *id, const char *type, const char *dir, const char *username,
			struct vs_error *err);

/* Forget TLS credentials @id; -ENOENT when there are none. */
int vs_tls_creds_remove(const char *id);

/*
 * Coroutine context. Open the image described by @opts: the protocol node
 * (file, or memory: / null: URIs for tests), the format node on top and
 * its backing chain. Returns 0 and stores the top node in *@out, or -errno
 * with a message in @err.
 */
int vs_image_open(struct vs_node **out, const struct vs_open_opts *opts, struct vs_error *err);

/* The deepest backing chain vs_image_open() opens (levels below the image). */
#define VS_MAX_BACKING_DEPTH 256

/*
 * Coroutine context. Drop one reference to @node; at the last one, flush
 * written-back state, close it and drop its references to its children
 * (protocol node, backing chain). NULL is a no-op.
 */
void vs_node_close(struct vs_node *node);

/*
 * Nodes are shared by reference (a graph, as QEMU's block layer builds it
 * with blockdev-add): every open returns one reference, a parent holds one
 * on its protocol child and its backing node, and vs_node_ref() takes one
 * more (a daemon's node name, an export). Returns @node.
 */
struct vs_node *vs_node_ref(struct vs_node *node);
unsigned vs_node_refcount(const struct vs_node *node);

/*
 * Coroutine context. Open the format @opts->format ("raw", "qcow2"; NULL
 * probes) on the already open node @file, which gains a reference (the
 * caller keeps its own). opts->filename is ignored; read_only, cache,
 * no_backing and the cache sizes apply; the backing chain opens by name as
 * in vs_image_open() unless no_backing. A writable format node needs a
 * writable @file.
 */
int vs_image_open_on(struct vs_node **out, struct vs_node *file, const struct vs_open_opts *opts,
		     struct vs_error *err);

/*
 * Coroutine context. Quiesce @node for a change of the image under it (an
 * internal snapshot, a graph switch): requests that reach it from now on
 * wait, and this returns once those already in it have finished. Until
 * vs_node_drain_end() only the calling coroutine's requests pass. One
 * drain at a time per node; another caller waits its turn.
 */
void vs_node_drain_begin(struct vs_node *node);
void vs_node_drain_end(struct vs_node *node);

/*
 * Make @backing the backing node of the format node @node (a reference is
 * taken), dropping the one it had; NULL leaves it without one. Only changes
 * the graph in memory (vs_node_set_backing() rewrites the image's header).
 * No request may be in flight on @node. -ELOOP when @node is in @backing's
 * chain, -ENOTSUP for a node without backing files (raw, protocols).
 */
int vs_node_replace_backing(struct vs_node *node, struct vs_node *backing, struct vs_error *err);

/* One key=value of the -o option list of create and amend. */
struct vs_kv {
	const char *key;
	const char *value;
};

/*
 * Coroutine context. Create an image of @format at @filename with virtual
 * size @size (0 with a backing file: take the backing file's size). @opts is
 * the -o list (cluster_size, compat, refcount_bits, lazy_refcounts,
 * extended_l2, preallocation, backing_file, backing_fmt, compression_type);
 * unknown keys are an error.
 */
int vs_image_create(const char *filename, const char *format, uint64_t size,
		    const struct vs_kv *opts, size_t nopts, struct vs_error *err);

/* Flags of vs_image_create_ex(). */
#define VS_CREATE_NO_BACKING_CHECK 0x1 /* -u: do not open the backing file (size must be given) */

/* vs_image_create() with flags. */
int vs_image_create_ex(const char *filename, const char *format, uint64_t size,
		       const struct vs_kv *opts, size_t nopts, unsigned flags,
		       struct vs_error *err);

/* Description of a create option, for "-o help". */
struct vs_create_opt_desc {
	const char *name;
	const char *type; /* "size", "bool", "number", "string" */
	const char *help;
};
/* The create options of @format (NULL-terminated array), or NULL if unknown. */
const struct vs_create_opt_desc *vs_format_create_opts(const char *format);
/*
 * The amend options of @format (NULL-terminated array): empty if its images
 * cannot be amended, NULL if @format is unknown.
 */
const struct vs_create_opt_desc *vs_format_amend_opts(const char *format);

/* Generic layer; coroutine context. Byte offsets and lengths. */
int vs_node_preadv(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov, int niov,
		   unsigned flags);
int vs_node_pwritev(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov, int niov,
		    unsigned flags);
int vs_node_pread(struct vs_node *n, uint64_t offset, void *buf, size_t len);

/*
 * Copy-before-write (a backup job's point in time): @fn is called for every
 * write, write-zeroes and discard that enters @node through its public entry
 * points, after the request passed the node's drain gate and before it
 * changes anything, with the range it is about to change. It may yield; it
 * reads @node with vs_node_pread_held(). Its return value is ignored: the
 * guest's write goes on (the hook's owner fails its own work instead).
 * One hook per node: -EBUSY when @node has one; @fn NULL removes it.
 */
typedef void vs_node_before_write_fn(void *opaque, uint64_t offset, uint64_t len);
int vs_node_set_before_write(struct vs_node *node, vs_node_before_write_fn *fn, void *opaque);

/*
 * A read of @n from inside one of @n's own requests (a before-write hook):
 * it does not wait at the drain gate, which that request already passed.
 */
int vs_node_pread_held(struct vs_node *n, uint64_t offset, void *buf, size_t len);
int vs_node_pwrite(struct vs_node *n, uint64_t offset, const void *buf, size_t len, unsigned flags);
int vs_node_flush(struct vs_node *n);
int vs_node_discard(struct vs_node *n, uint64_t offset, uint64_t len);
int vs_node_write_zeroes(struct vs_node *n, uint64_t offset, uint64_t len, unsigned flags);
int vs_node_truncate(struct vs_node *n, uint64_t size, enum vs_prealloc prealloc, bool exact,
		     struct vs_error *err);

/*
 * Block status of [offset, offset+len) in @n: fills *@pnum with the length of
 * the leading run that shares one status (> 0 unless len is 0), *@status
 * with VS_BS_* bits, and when VS_BS_OFFSET_VALID, *@map and *@file with the
 * host offset and node that store the data. @map and @file may be NULL.
 * Unallocated ranges of a format node with a backing node report no
 * VS_BS_ALLOCATED; callers that want the content's status use
 * vs_node_block_status_above().
 */
int vs_node_block_status(struct vs_node *n, uint64_t offset, uint64_t len, uint64_t *pnum,
			 unsigned *status, uint64_t *map, struct vs_node **file);

/*
 * Block status through the backing chain: the first layer (depth 0 = @n)
 * that allocates the leading run decides. An unallocated run of the whole
 * chain reads as zeroes (VS_BS_ZERO, *@depth = chain length).
 */
int vs_node_block_status_above(struct vs_node *n, uint64_t offset, uint64_t len, uint64_t *pnum,
			       unsigned *status, uint64_t *map, struct vs_node **file,
			       unsigned *depth);

/* Accessors. */
uint64_t vs_node_size(const struct vs_node *n);
const char *vs_node_format(const struct vs_node *n); /* driver name */
const char *vs_node_filename(const struct vs_node *n);
struct vs_node *vs_node_file(const struct vs_node *n);	  /* protocol child or NULL */
struct vs_node *vs_node_backing(const struct vs_node *n); /* backing node or NULL */
bool vs_node_is_read_only(const struct vs_node *n);
enum vs_cache_mode vs_node_cache_mode(const struct vs_node *n); /* as opened */
/* Bytes allocated on the host for the node's storage, or -errno. */
int64_t vs_node_allocated_size(struct vs_node *n);

/*
 * Information for "info". The fixed arrays are short names; the backing file
 * names and the snapshot list are allocated and owned by the struct: release
 * them with vs_image_info_free().
 */
#define VS_INFO_MAX_SPECIFIC 16
struct vs_info_kv {
	char key[40]; /* JSON name, e.g. "lazy-refcounts"; human: '-' -> ' ' */
	enum { VS_KV_STR, VS_KV_INT, VS_KV_BOOL } type;
	char str[64];
	int64_t i;
	bool b;
};
/* A LUKS key slot, as qemu-img info lists them (format-specific "slots"). */
#define VS_INFO_MAX_KEY_SLOTS 8
struct vs_info_key_slot {
	bool active;
	uint32_t iters;	     /* active slots only */
	uint32_t stripes;    /* active slots only */
	uint64_t key_offset; /* bytes */
};
struct vs_snapshot_info {
	char id[32];
	char name[256];
	uint64_t vm_state_size;
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t icount; /* UINT64_MAX if absent */
};
/* A persistent dirty bitmap as qemu-img info lists it. */
#define VS_BITMAP_NAME_MAX 1023
#define VS_BITMAP_FLAG_IN_USE 0x1 /* "in-use": not known to be consistent */
#define VS_BITMAP_FLAG_AUTO 0x2	  /* "auto": enabled, tracks writes */
struct vs_bitmap_info {
	char name[VS_BITMAP_NAME_MAX + 1];
	uint64_t granularity;
	unsigned flags; /* VS_BITMAP_FLAG_* */
};
/* One extent of a multi-file format (vmdk), as qemu-img info lists it. */
struct vs_info_extent {
	char *filename;	       /* malloc'd */
	char format[16];       /* "FLAT", "SPARSE", "" (the image file itself) */
	uint64_t virtual_size; /* guest bytes it holds */
	uint64_t cluster_size; /* grain size of a sparse extent, 0 if none */
	bool compressed;
};
struct vs_image_info {
	char format[32];
	uint64_t virtual_size;
	int64_t actual_size;   /* host allocation, -1 if unknown */
	uint64_t cluster_size; /* 0 if not applicable */
	bool dirty;
	bool encrypted;
	char *backing_filename;	     /* as recorded in the image; NULL if none */
	char *full_backing_filename; /* resolved against the image's directory; may be NULL */
	char backing_format[32];
	struct vs_snapshot_info *snapshots; /* malloc'd, nb_snapshots entries */
	unsigned nb_snapshots;
	char specific_type[32]; /* "qcow2", or "" if no format-specific info */
	struct vs_info_kv specific[VS_INFO_MAX_SPECIFIC];
	unsigned nb_specific;
	struct vs_bitmap_info *bitmaps; /* malloc'd, nb_bitmaps entries; NULL if none */
	unsigned nb_bitmaps;
	/* Encrypted formats: the key slots (printed after "cipher-mode", as qemu-img does). */
	struct vs_info_key_slot key_slots[VS_INFO_MAX_KEY_SLOTS];
	unsigned nb_key_slots;
	/* vmdk: its extents, malloc'd (printed after the other format-specific fields). */
	struct vs_info_extent *extents;
	unsigned nb_extents;
};

/*
 * Coroutine context: fill @info for @n (a format node). Returns 0, or -errno
 * with nothing left to free in @info.
 */
int vs_node_get_info(struct vs_node *n, struct vs_image_info *info);
/* Free what @info owns (backing names, snapshots, bitmaps) and clear them. NULL is a no-op. */
void vs_image_info_free(struct vs_image_info *info);

/* Result of a consistency check, as qemu-img check reports it. */
struct vs_check_result {
	int64_t corruptions;
	int64_t leaks;
	int64_t check_errors;
	int64_t corruptions_fixed;
	int64_t leaks_fixed;
	int64_t image_end_offset;
	int64_t total_clusters;
	int64_t allocated_clusters;
	int64_t fragmented_clusters;
	int64_t compressed_clusters;
	bool has_cluster_stats; /* the fields above from total_clusters on are valid */
};

#define VS_CHECK_FIX_LEAKS 0x1
#define VS_CHECK_FIX_ERRORS 0x2

/*
 * Coroutine context: check @n (a format node opened read-write when
 * fixing). Returns 0 when the check ran (the result says what it found),
 * -ENOTSUP if the format cannot be checked, other -errno on failure.
 */
int vs_node_check(struct vs_node *n, struct vs_check_result *res, unsigned fix);

/* One human line per finding or repair, without newline ("Leaked cluster 5 refcount=1 reference=0"). */
typedef void vs_check_report_fn(const char *msg, void *opaque);

/*
 * As vs_node_check(), and pass each line qemu-img check prints on stderr
 * for a finding or a repair to @report (NULL: none), as they happen.
 */
int vs_node_check_report(struct vs_node *n, struct vs_check_result *res, unsigned fix,
			 vs_check_report_fn *report, void *opaque);

/*
 * Coroutine context. Write whole clusters compressed (qemu-img convert -c):
 * @offset and @len must be multiples of the cluster size (the last cluster
 * of the image may be short). The format may store a cluster uncompressed
 * when compression does not save space. -ENOTSUP if the format has no
 * compression.
 */
int vs_node_pwritev_compressed(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov,
			       int niov);

/* The cluster size of a format node (0 if it has none). */
uint64_t vs_node_cluster_size(const struct vs_node *n);

/* Internal snapshots (coroutine context; -ENOTSUP without support). */
#define VS_SNAPSHOT_NO_ICOUNT UINT64_MAX
struct vs_snapshot_opts {
	/*
	 * The guest's instruction count to record: VS_SNAPSHOT_NO_ICOUNT (none,
	 * what a live snapshot of QEMU or qemu-storage-daemon writes, and the
	 * default for NULL opts) or 0, what qemu-img snapshot -c writes.
	 */
	uint64_t icount;
};
int vs_node_snapshot_create(struct vs_node *n, const char *name,
			    const struct vs_snapshot_opts *opts, struct vs_error *err);
int vs_node_snapshot_apply(struct vs_node *n, const char *name_or_id, struct vs_error *err);
int vs_node_snapshot_delete(struct vs_node *n, const char *name_or_id, struct vs_error *err);

/* Persistent dirty bitmaps: one operation of qemu-img bitmap. */
enum vs_bitmap_action {
	VS_BITMAP_ADD,
	VS_BITMAP_REMOVE,
	VS_BITMAP_CLEAR,
	VS_BITMAP_ENABLE,
	VS_BITMAP_DISABLE,
	VS_BITMAP_MERGE,
};
struct vs_bitmap_op {
	enum vs_bitmap_action action;
	const char *name;
	uint64_t granularity; /* ADD: bytes, 0 for the default */
	bool disabled;	      /* ADD: created disabled */
	struct vs_node *src;  /* MERGE: the node holding @src_name (may be @n itself) */
	const char *src_name; /* MERGE: set in @name every bit set in @src_name */
	/*
	 * ADD: an in-memory bitmap only (QEMU's persistent=false): it tracks
	 * writes like the others but is never written to the image.
	 */
	bool transient;
};

/*
 * Coroutine context: apply @op to the persistent bitmaps of @n (opened
 * read-write). The messages are qemu's ("Dirty bitmap 'x' not found").
 * Returns 0, -ENOTSUP if the format has no bitmaps, or -errno with @err.
 */
int vs_node_bitmap(struct vs_node *n, const struct vs_bitmap_op *op, struct vs_error *err);

/* A dirty bitmap of an open node, persistent or not (QEMU's BlockDirtyInfo). */
struct vs_dirty_bitmap_info {
	char name[VS_BITMAP_NAME_MAX + 1];
	uint64_t granularity; /* bytes per bit */
	uint64_t count;	      /* dirty bytes: bits set times the granularity */
	bool recording;	      /* enabled: writes set bits */
	bool persistent;      /* stored in the image on close */
	bool inconsistent;    /* found in_use: never used as valid */
};

/*
 * The dirty bitmaps of @n, newest first (as QEMU lists them): *@out is
 * malloc'd (NULL when there are none), *@nb its entries. Does not yield.
 * Returns 0, -ENOTSUP if the format keeps no bitmaps, or -ENOMEM.
 */
int vs_node_dirty_bitmaps(struct vs_node *n, struct vs_dirty_bitmap_info **out, unsigned *nb);

/*
 * The state of @n's bitmap @name at byte @offset: *@dirty, and in *@run
 * how far from @offset that state lasts (at least one byte, at most @len;
 * runs end on the bitmap's granules). What an NBD server sends for the
 * qemu:dirty-bitmap:NAME meta context. Does not yield. Returns 0, -ENOENT
 * if there is no such bitmap, -EINVAL if it is inconsistent (in_use when
 * found), -ENOTSUP if the format keeps no bitmaps.
 */
int vs_node_bitmap_status(struct vs_node *n, const char *name, uint64_t offset, uint64_t len,
			  bool *dirty, uint64_t *run);

/*
 * Change format options of an existing image (qemu-img amend): compat,
 * lazy_refcounts, refcount_bits, backing_file, backing_fmt, ...
 */
int vs_node_amend(struct vs_node *n, const struct vs_kv *opts, size_t nopts, struct vs_error *err);

/*
 * Record a new backing file in the image without touching data (rebase -u).
 * @backing NULL or "" removes the backing file.
 */
int vs_node_set_backing(struct vs_node *n, const char *backing, const char *backing_fmt,
			struct vs_error *err);

/* Sizes for qemu-img measure. */
struct vs_measure_result {
	uint64_t required;	  /* bytes the image needs for the given data */
	uint64_t fully_allocated; /* bytes with every cluster allocated */
	uint64_t bitmaps;	  /* bytes of persistent bitmaps (0: none) */
};

/*
 * Measure an image of @format with create options @opts: of virtual size
 * @size holding @allocated bytes of data (what block status of a source
 * reports as data or non-zero). -ENOTSUP for formats without a method.
 */
int vs_image_measure(const char *format, uint64_t size, uint64_t allocated,
		     const struct vs_kv *opts, size_t nopts, struct vs_measure_result *res,
		     struct vs_error *err);

/*
 * Offline compaction (vstor-img compact): move allocated clusters down into
 * free space and shrink the file. @progress (may be NULL) is called with
 * done/total. Needs an exclusive, read-write open.
 */
typedef void vs_progress_fn(uint64_t done, uint64_t total, void *opaque);
int vs_node_compact(struct vs_node *n, vs_progress_fn *progress, void *opaque,
		    struct vs_error *err);

#ifdef __cplusplus
}
#endif

#endif
