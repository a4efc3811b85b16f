/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Dirty bitmaps of vstord's nodes (bitmap.h): today the format's own, kept
 * by libstore's qcow2 driver (vs_node_bitmap, vs_node_dirty_bitmaps).
 */
#include "bitmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int vd_bitmap_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb)
{
	int ret = vs_node_dirty_bitmaps(node, out, nb);

	return ret == -ENOTSUP ? 0 : ret;
}

bool vd_bitmap_find(struct vs_node *node, const char *name, struct vs_dirty_bitmap_info *info)
{
	struct vs_dirty_bitmap_info *list;
	bool found = false;
	unsigned nb;

	if (vd_bitmap_list(node, &list, &nb) < 0)
		return false;
	for (unsigned i = 0; i < nb && !found; i++) {
		if (!strcmp(list[i].name, name)) {
			found = true;
			if (info)
				*info = list[i];
		}
	}
	free(list);
	return found;
}

bool vd_bitmap_supported(struct vs_node *node, struct vs_error *err)
{
	struct vs_dirty_bitmap_info *list = NULL;
	unsigned nb;

	if (vs_node_dirty_bitmaps(node, &list, &nb) != -ENOTSUP) {
		free(list);
		return true;
	}
	vs_error_set(err, -ENOTSUP, "Dirty bitmaps on a '%s' node are not supported by vstord yet",
		     vs_node_format(node));
	return false;
}

bool vd_bitmap_can_persist(struct vs_node *node)
{
	/* The formats that keep bitmaps today keep them in the image too. */
	return vd_bitmap_supported(node, NULL);
}

int vd_bitmap_apply(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err)
{
	if (!vd_bitmap_supported(node, err))
		return -ENOTSUP;
	return vs_node_bitmap(node, op, err);
}
