/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Copy-before-write: a point-in-time copy of a live node. A "todo" bitmap
 * holds the granules of the source whose old data still has to reach the
 * target; a before-write hook on the source (vs_node_set_before_write)
 * copies the old data of todo granules to the target before a write,
 * write-zeroes or discard changes them, whoever issues it.
 *
 * The granule is the copy unit: a write copies only the todo granules its
 * own range touches, nothing around them. A copy in flight (the hook's or
 * the backup job's vd_cbw_put) claims its range; a write waits only for
 * the copies that overlap its own range, so copies of unrelated ranges run
 * side by side. A small copy holds the old data in memory and lets the
 * write go on before the target has it (the view reads it from memory
 * meanwhile; vd_cbw_detach waits for the target's writes). A granule leaves todo only once its old data is in the
 * target, which is what lets the readers of the point-in-time view
 * (vd_cbw_read) go without a lock. The unit must not be smaller than the
 * target's cluster (two copies then never share an unallocated cluster).
 * The backup job (job-backup.c) and the fleecing nodes (fleece.c) use it.
 * Control reactor only.
 */
#ifndef VSTORD_CBW_H
#define VSTORD_CBW_H

#include <stdbool.h>
#include <stdint.h>

struct vs_node;
struct vs_dirty_bitmap;
struct vd_cbw;

/* What a copy-before-write did so far (query-checkpoints shows it). */
struct vd_cbw_stats {
	uint64_t unit;	       /* the copy unit (the granule), bytes */
	uint64_t writes;       /* writes, write-zeroes and discards the hook saw */
	uint64_t copies;       /* of those, the ones that copied old data first */
	uint64_t copied_bytes; /* bytes those copies moved */
	uint64_t waits;	       /* times a write waited for another's copy of its range */
};

/*
 * A copy-before-write of @src into @dst (same size; both referenced until
 * vd_cbw_free) with granules (copy units) of @granularity bytes and
 * nothing to do yet.
 * @progress (may be NULL) is called with the bytes each copy moved.
 * Returns 0 and *@out, -EINVAL (granularity), or -ENOMEM.
 */
int vd_cbw_new(struct vs_node *src, struct vs_node *dst, uint64_t granularity,
	       void (*progress)(void *opaque, uint64_t bytes), void *opaque, struct vd_cbw **out);

/* The todo bitmap, to be marked before vd_cbw_attach (it belongs to @cbw). */
struct vs_dirty_bitmap *vd_cbw_todo(struct vd_cbw *cbw);

/*
 * Start copying before writes: 0, or -EBUSY when the source has a hook
 * already. Call it with the source drained, so that the point in time is
 * exact (the first write after it is covered).
 */
int vd_cbw_attach(struct vd_cbw *cbw);
/* Whether a copy-before-write is attached to @src (one per node). */
bool vd_cbw_attached(const struct vs_node *src);
/* Stop (coroutine context: drains the source so no write is inside the hook). */
void vd_cbw_detach(struct vd_cbw *cbw);
/* Detach if attached; free; drop the references. NULL is a no-op. */
void vd_cbw_free(struct vd_cbw *cbw);

/* The first failure of a copy-before-write (-errno), or 0. */
int vd_cbw_error(const struct vd_cbw *cbw);

/* The counters so far. */
void vd_cbw_stats(const struct vd_cbw *cbw, struct vd_cbw_stats *out);

/*
 * The backup job's copy: @buf holds what it read of the source at
 * [@offset, @offset+@len) (@zero: zeroes, @buf unused), read before the
 * call; the granules still todo get it in the target. Returns the bytes
 * written, or -errno (the target's error).
 */
int64_t vd_cbw_put(struct vd_cbw *cbw, uint64_t offset, uint64_t len, const void *buf, bool zero);

/* Clear todo granules of [@offset, @offset+@len) without copying them (an ignored error). */
void vd_cbw_skip(struct vd_cbw *cbw, uint64_t offset, uint64_t len);

/*
 * The point-in-time view: [@offset, @offset+@len) into @buf, each granule
 * from the source while it is todo (no write can change it meanwhile) and
 * from the target once copied. 0 or -errno; once a copy failed, the view
 * is broken and every read fails with that error (as QEMU's
 * break-snapshot).
 */
int vd_cbw_read(struct vd_cbw *cbw, uint64_t offset, uint64_t len, void *buf);

/*
 * Block status of the point-in-time view at @offset: *@pnum bytes (> 0,
 * <= @len) that all read as zeroes (*@zero) or may hold data. A granule
 * still todo answers as the source does; a copied one as the target's own
 * layer does (data when the target does not say zero). 0 or -errno.
 */
int vd_cbw_block_status(struct vd_cbw *cbw, uint64_t offset, uint64_t len, uint64_t *pnum,
			bool *zero);

#endif
