/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's block graph: the nodes the monitor added (blockdev-add), by
 * node name, each holding one reference to its libstore node. Exports,
 * jobs and the queries find nodes here. Control reactor only.
 */
#ifndef VSTORD_BLOCK_H
#define VSTORD_BLOCK_H

#include <stdbool.h>

#include "qmp.h"
#include "vstor/cache.h"
#include "vstor/export.h"
#include "vstor/node.h"

struct vd_node {
	struct vd_node *next;
	char *name;
	struct vs_node *node; /* the monitor's reference */
	/* What blockdev-add was given, for the queries. */
	bool direct, no_flush;
	enum vs_export_discard discard;
	enum vs_export_detect_zeroes detect_zeroes;
};

/* The node named @name, or NULL. */
struct vd_node *vd_node_find(const char *name);

/*
 * The node named @name for a command: NULL after qmp_error() with QEMU's
 * "Cannot find device='NAME' nor node-name='NAME'".
 */
struct vd_node *vd_node_lookup(struct qmp_call *call, const char *name);

/* Name @node (its reference moves to the table); NULL when out of memory. */
struct vd_node *vd_node_add(const char *name, struct vs_node *node);

/* Forget @n and drop its reference (a node an aborted transaction added). */
void vd_node_remove(struct vd_node *n);

/* The name a query shows for @node: its node-name, or an automatic "#blockN". */
const char *vd_node_name_of(struct vs_node *node);

/* Calls @fn for each named node, in the order they were added. */
void vd_node_for_each(void (*fn)(struct vd_node *n, void *opaque), void *opaque);

/* Drops every node (the daemon stops); exports must be gone. */
void vd_block_close_all(void);

#endif
