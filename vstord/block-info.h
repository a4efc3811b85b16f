/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the queries say about a node: QEMU's BlockDeviceInfo and ImageInfo
 * (qapi/block-core.json), as query-named-block-nodes returns them.
 */
#ifndef VSTORD_BLOCK_INFO_H
#define VSTORD_BLOCK_INFO_H

#include <json-c/json.h>
#include <stdbool.h>

#include "block.h"

/* ImageInfo of @node; with @backing, its backing chain nested ("backing-image"). */
json_object *vd_image_info(struct vs_node *node, bool backing);

/*
 * BlockDeviceInfo of @node named @name (@named: its blockdev-add options,
 * NULL for a node the graph holds without a name).
 */
json_object *vd_block_device_info(struct vs_node *node, const char *name,
				  const struct vd_node *named, bool backing_image);

#endif
