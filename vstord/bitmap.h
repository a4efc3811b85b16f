/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty bitmaps of vstord's nodes, behind one small interface that the
 * bitmap commands use. What keeps them is the format's own machinery where
 * it has one (qcow2: persistent bitmaps, and in-memory ones that are never
 * stored), else in-memory bitmaps over libstore's generic node-level dirty
 * bitmap (raw, file, ...: persistent=false only). Control reactor only.
 */
#ifndef VSTORD_BITMAP_H
#define VSTORD_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "vstor/error.h"
#include "vstor/node.h"

/*
 * The bitmaps of @node, newest first: *@out malloc'd (NULL when none).
 * A node that cannot keep bitmaps has none. 0 or -ENOMEM.
 */
int vd_bitmap_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb);

/* Whether @node has a bitmap @name; its description in *@info (may be NULL). */
bool vd_bitmap_find(struct vs_node *node, const char *name, struct vs_dirty_bitmap_info *info);

/*
 * Whether @node can keep bitmaps at all (persistent or in memory): when
 * false, @err says so ("... not supported by vstord yet").
 */
bool vd_bitmap_supported(struct vs_node *node, struct vs_error *err);

/* Whether @node can store bitmaps in its image (persistent=true). */
bool vd_bitmap_can_persist(struct vs_node *node);

/*
 * Coroutine context: apply @op to @node's bitmaps (op->transient: an
 * in-memory one). 0, or -errno with @err.
 */
int vd_bitmap_apply(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err);

/*
 * The state of bitmap @name of the node @opaque at @offset, for the NBD
 * export's qemu:dirty-bitmap context (vs_nbd_export_opts.bitmap_status).
 */
int vd_bitmap_status(void *opaque, const char *name, uint64_t offset, uint64_t len, bool *dirty,
		     uint64_t *run);

/*
 * Bitmaps an export serves are busy (QEMU's word): the bitmap commands
 * refuse them until the last export lets go. get: 0 or -ENOMEM.
 */
int vd_bitmap_busy_get(struct vs_node *node, const char *name);
void vd_bitmap_busy_put(struct vs_node *node, const char *name);
bool vd_bitmap_busy(struct vs_node *node, const char *name);

/* @node is being closed: drop its in-memory bitmaps kept here. */
void vd_bitmap_node_gone(struct vs_node *node);

#endif
