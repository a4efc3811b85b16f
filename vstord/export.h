/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's exports: one NBD server (nbd-server-start) with any number of
 * exports, and vhost-user-blk exports, each holding a reference to its
 * node. Control reactor only.
 */
#ifndef VSTORD_EXPORT_H
#define VSTORD_EXPORT_H

#include <stdbool.h>

struct vs_node;

/* Whether an export serves @node (blockdev-del refuses it). */
bool vd_export_uses(const struct vs_node *node);

/* The fuzz target's: every address is refused, no socket is ever created. */
void vd_export_refuse_addresses(void);

/*
 * A graph change under the exports of @node: drain_begin holds their new
 * requests and waits for those in flight; drain_end points them at
 * @new_node (their references move; NULL: no change) and lets the held
 * requests run there.
 */
void vd_exports_drain_begin(struct vs_node *node);
void vd_exports_drain_end(struct vs_node *node, struct vs_node *new_node);

/* Hold the requests of every export, each on its reactor, and wait for those in flight. */
void vd_exports_drain_all_begin(void);
void vd_exports_drain_all_end(void);

struct vs_export;

/* An export as the throttle and error-policy commands see it. */
struct vd_export_view {
	const char *id;
	const char *node_name; /* the node it was added on */
	struct vs_export *exp; /* the export layer object; NULL while it has none */
	int reactor;	       /* the I/O reactor it runs on */
};

/* Calls @fn for each export, in the order they were added. */
void vd_export_for_each(void (*fn)(const struct vd_export_view *v, void *opaque), void *opaque);

/* The node export @id serves now (NULL: no such export). */
struct vs_node *vd_export_node(const char *id);

/* Show @node_name as the node export @id was added on (a restore of a moved export). */
void vd_export_set_node_name(const char *id, const char *node_name);

/* Whether the running NBD server uses the TLS credentials object @id. */
bool vd_export_uses_object(const char *id);

/* Deletes every export and stops the NBD server (the daemon stops). */
void vd_export_close_all(void);

#endif
