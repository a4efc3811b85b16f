/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty bitmaps of vstord's nodes, behind one small interface that the
 * bitmap commands use. What keeps them today is the format's own machinery
 * (qcow2: persistent bitmaps, and in-memory ones that are never stored);
 * a generic node-level bitmap for the other formats plugs in here, and the
 * commands above do not change. Control reactor only.
 */
#ifndef VSTORD_BITMAP_H
#define VSTORD_BITMAP_H

#include <stdbool.h>

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

#endif
