/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's throttle groups: block_set_io_throttle, throttle-group objects
 * (--object, object-add, object-del) and their qom-get/qom-set. Control
 * reactor only.
 */
#ifndef VSTORD_CMD_THROTTLE_H
#define VSTORD_CMD_THROTTLE_H

#include <stdbool.h>

#include "qmp.h"

struct vs_node;

/* Whether a throttle group named @id exists (made either way). */
bool vd_throttle_group_exists(const char *id);

/*
 * object-add of qom-type throttle-group @id: QEMU's properties ("limits",
 * and the flat x-bps-total ...). 0, or -1 after qmp_error().
 */
int vd_throttle_object_add(struct qmp_call *call, const char *id);

/* object-del @id: 1 deleted, 0 no such group object, -1 after qmp_error() (in use). */
int vd_throttle_object_del(struct qmp_call *call, const char *id);

/* Drops every group (the daemon stops; exports are gone). */
/*
 * Add QEMU's throttle fields of a drive to @o, a query-named-block-nodes
 * entry of @node: bps ... iops_wr always, and the bursts, iops_size and
 * group when an export of @node is throttled (the first such export's group).
 */
void vd_throttle_node_info(const struct vs_node *node, json_object *o);
void vd_throttle_close_all(void);

#endif
