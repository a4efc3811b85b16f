/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-memory dirty bitmaps of a node: which ranges were written since the
 * bitmap was created or cleared, one bit per @granularity bytes. Attached
 * to a node (vs_node_dirty_bitmap_attach), a bitmap is marked by every
 * successful write, write-zeroes and discard that enters the node through
 * its public entry points (vs_node_pwritev, vs_node_write_zeroes, ...),
 * whatever its format and whoever issues it (an export, a job, a tool).
 * Writes a node makes to its own children (a format's metadata and data in
 * its protocol node) do not mark the format node's bitmaps.
 *
 * Block jobs use them to follow a guest's writes (mirror, active commit);
 * they are not persistent (qcow2's persistent bitmaps are vs_node_bitmap()).
 * A bitmap belongs to the reactor of its node: no locking.
 */
#ifndef VSTOR_DIRTY_BITMAP_H
#define VSTOR_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vs_node;
struct vs_dirty_bitmap;

/*
 * A clean bitmap covering @size bytes with one bit per @granularity bytes
 * (a power of two, 512 bytes to 1 GiB). Returns 0 and stores it in *@out,
 * -EINVAL for a bad granularity, or -ENOMEM.
 */
int vs_dirty_bitmap_new(uint64_t size, uint64_t granularity, struct vs_dirty_bitmap **out);

/* Detach @bm from its node (if attached) and free it. NULL is a no-op. */
void vs_dirty_bitmap_free(struct vs_dirty_bitmap *bm);

uint64_t vs_dirty_bitmap_granularity(const struct vs_dirty_bitmap *bm);
uint64_t vs_dirty_bitmap_size(const struct vs_dirty_bitmap *bm);

/*
 * Mark or clear every granule [@offset, @offset+@len) touches, clipped to
 * the bitmap's size. Marking rounds outwards (a partial granule is dirty);
 * clearing clears whole granules the range touches as well, so a caller
 * that copies a range clears the granules of the range it is about to copy.
 */
void vs_dirty_bitmap_set(struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t len);
void vs_dirty_bitmap_clear(struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t len);
void vs_dirty_bitmap_clear_all(struct vs_dirty_bitmap *bm);

/* Whether the granule holding byte @offset is dirty. */
bool vs_dirty_bitmap_get(const struct vs_dirty_bitmap *bm, uint64_t offset);

/*
 * The first dirty run at or after @offset, at most @max_len bytes (0: no
 * limit): true with *@start and *@len set (granule-aligned, clipped to the
 * size), false when nothing from @offset on is dirty.
 */
bool vs_dirty_bitmap_next_dirty(const struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t max_len,
				uint64_t *start, uint64_t *len);

/* Dirty bytes (dirty granules times the granularity, clipped to the size). */
uint64_t vs_dirty_bitmap_count(const struct vs_dirty_bitmap *bm);

/*
 * Attach @bm to @node: from now on the node's successful writes mark it.
 * A bitmap is attached to one node at most (-EBUSY); a node holds any
 * number of them. Detach before the node is closed.
 */
int vs_node_dirty_bitmap_attach(struct vs_node *node, struct vs_dirty_bitmap *bm);
void vs_node_dirty_bitmap_detach(struct vs_dirty_bitmap *bm);

/*
 * What kind of write a write hook sees (vs_dirty_bitmap_write_hook).
 */
enum vs_dirty_write {
	VS_DIRTY_WRITE,	       /* data (@iov, @niov) */
	VS_DIRTY_WRITE_ZEROES, /* write-zeroes (@flags: VS_REQ_* of the node's request) */
	VS_DIRTY_DISCARD,
	VS_DIRTY_WRITE_COMPRESSED, /* data written compressed */
};

/*
 * A bitmap with a write hook is not marked by the node's writes: the hook
 * is (a write-blocking mirror: it writes the guest's data to the target as
 * well, and marks only what it could not keep in sync). Coroutine context,
 * the node's reactor; both calls may yield.
 */
struct vs_dirty_bitmap_write_hook {
	/* Before a write of [@offset, @offset+@len) enters the node. */
	void (*begin)(void *opaque, uint64_t offset, uint64_t len);
	/*
	 * After it, with the node's result @ret (even a failed write may have
	 * changed the range): the hook marks the bitmap as it needs. Every
	 * begin is followed by one end.
	 */
	void (*end)(void *opaque, enum vs_dirty_write kind, uint64_t offset, uint64_t len,
		    const struct iovec *iov, int niov, unsigned flags, int ret);
};

/*
 * Give @bm the write hook @hook (borrowed; NULL: marked by the writes
 * again) with @opaque. Takes effect for the writes that begin from now on.
 */
void vs_dirty_bitmap_set_write_hook(struct vs_dirty_bitmap *bm,
				    const struct vs_dirty_bitmap_write_hook *hook, void *opaque);

#ifdef __cplusplus
}
#endif

#endif
