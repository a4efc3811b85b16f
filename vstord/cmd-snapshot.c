/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots of a node, live: blockdev-snapshot-internal-sync and
 * blockdev-snapshot-delete-internal-sync, with qemu-storage-daemon's
 * arguments, messages and return value. The node is drained around the
 * change (vs_node_drain_begin), so requests of an export on it wait for the
 * few milliseconds it takes instead of racing the snapshot's metadata.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "export.h"
#include "qmp.h"
#include "state.h"

/* The snapshots of @node (freed with vs_image_info_free), or -1 after qmp_error. */
static int snapshot_list(struct qmp_call *call, struct vs_node *node, struct vs_image_info *info)
{
	if (vs_node_get_info(node, info) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "Failed to get a snapshot list: %s",
				 "Operation not supported");
	return 0;
}

static bool has_internal_snapshots(struct vs_node *node)
{
	/* Only formats with a snapshot table have them (qcow2). */
	return !strcmp(vs_node_format(node), "qcow2");
}

static int cmd_snapshot_internal(struct qmp_call *call)
{
	const char *device, *name;
	struct vs_image_info info;
	struct vs_error err = { 0 };
	struct vd_node *n;
	int ret;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "name", true, &name) < 0)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	if (!name[0])
		return qmp_error(call, QMP_ERR_GENERIC, "Name is empty");
	if (vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Device '%s' is read only", device);
	if (!has_internal_snapshots(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Block format '%s' used by device '%s' does not support internal "
				 "snapshots",
				 vs_node_format(n->node), device);
	if (snapshot_list(call, n->node, &info) < 0)
		return -1;
	for (unsigned i = 0; i < info.nb_snapshots; i++) {
		if (!strcmp(info.snapshots[i].name, name)) {
			vs_image_info_free(&info);
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Snapshot with name '%s' already exists on device '%s'",
					 name, device);
		}
	}
	vs_image_info_free(&info);
	vs_node_drain_begin(n->node);
	ret = vs_node_snapshot_create(n->node, name, &err);
	vs_node_drain_end(n->node);
	if (ret < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	return 0;
}
QMP_COMMAND(snapshot_internal, "blockdev-snapshot-internal-sync", cmd_snapshot_internal,
	    .params = QMP_PARAMS("device", "name"))

static json_object *snapshot_info(const struct vs_snapshot_info *sn)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(sn->id));
	json_object_object_add(o, "name", json_object_new_string(sn->name));
	json_object_object_add(o, "vm-state-size",
			       json_object_new_int64((int64_t)sn->vm_state_size));
	json_object_object_add(o, "date-sec", json_object_new_int64((int64_t)sn->date_sec));
	json_object_object_add(o, "date-nsec", json_object_new_int64(sn->date_nsec));
	json_object_object_add(o, "vm-clock-sec",
			       json_object_new_int64((int64_t)(sn->vm_clock_nsec / 1000000000ULL)));
	json_object_object_add(o, "vm-clock-nsec",
			       json_object_new_int64((int64_t)(sn->vm_clock_nsec % 1000000000ULL)));
	if (sn->icount != UINT64_MAX)
		json_object_object_add(o, "icount", json_object_new_int64((int64_t)sn->icount));
	return o;
}

static int cmd_snapshot_delete_internal(struct qmp_call *call)
{
	const char *device, *id = NULL, *name = NULL;
	struct vs_image_info info;
	struct vs_error err = { 0 };
	const struct vs_snapshot_info *found = NULL;
	struct vd_node *n;
	json_object *ret_obj;
	int ret;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "id", false, &id) < 0 || qmp_arg_str(call, "name", false, &name) < 0)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	if (!id && !name)
		return qmp_error(call, QMP_ERR_GENERIC, "Name or id must be provided");
	if (vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Device '%s' is read only", device);
	if (!has_internal_snapshots(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Failed to get a snapshot list: %s",
				 "Operation not supported");
	if (snapshot_list(call, n->node, &info) < 0)
		return -1;
	for (unsigned i = 0; i < info.nb_snapshots && !found; i++) {
		const struct vs_snapshot_info *sn = &info.snapshots[i];

		if ((!id || !strcmp(sn->id, id)) && (!name || !strcmp(sn->name, name)))
			found = sn;
	}
	if (!found) {
		qmp_error(call, QMP_ERR_GENERIC,
			  "Snapshot with id '%s' and name '%s' does not exist on device '%s'",
			  id ? id : "null", name ? name : "null", device);
		vs_image_info_free(&info);
		return -1;
	}
	ret_obj = snapshot_info(found);
	vs_node_drain_begin(n->node);
	ret = vs_node_snapshot_delete(n->node, found->id, &err);
	vs_node_drain_end(n->node);
	vs_image_info_free(&info);
	if (ret < 0) {
		json_object_put(ret_obj);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	call->ret = ret_obj;
	return 0;
}
QMP_COMMAND(snapshot_delete_internal, "blockdev-snapshot-delete-internal-sync",
	    cmd_snapshot_delete_internal, .params = QMP_PARAMS("device", "id", "name"))

/* ---- external snapshots ---- */

/*
 * Put @overlay (whose backing node is @base already) above @base for
 * everything that used @base: the exports of @base are drained, pointed at
 * @overlay, and let go on. Requests never see a half-switched graph.
 */
static void switch_to_overlay(struct vs_node *base, struct vs_node *overlay)
{
	vd_exports_drain_begin(base);
	vs_node_drain_begin(base);
	vd_exports_drain_end(base, overlay);
	vs_node_drain_end(base);
}

static int cmd_snapshot_sync(struct qmp_call *call)
{
	const char *device = NULL, *node_name = NULL, *file, *overlay_name = NULL;
	const char *format = "qcow2", *mode = "absolute-paths";
	struct vs_error err = { 0 };
	struct vs_node *overlay = NULL;
	struct vd_node *n;

	if (qmp_arg_str(call, "device", false, &device) < 0 ||
	    qmp_arg_str(call, "node-name", false, &node_name) < 0 ||
	    qmp_arg_str(call, "snapshot-file", true, &file) < 0 ||
	    qmp_arg_str(call, "snapshot-node-name", false, &overlay_name) < 0 ||
	    qmp_arg_str(call, "format", false, &format) < 0 ||
	    qmp_arg_str(call, "mode", false, &mode) < 0)
		return -1;
	if (strcmp(mode, "absolute-paths") && strcmp(mode, "existing"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'mode' does not accept value '%s'", mode);
	/* vstord has no devices (BlockBackends), as qsd: nodes go by node-name. */
	n = node_name ? vd_node_find(node_name) : NULL;
	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Cannot find device='%s' nor node-name='%s'", device ? device : "",
				 node_name ? node_name : "");
	if (!overlay_name)
		return qmp_error(call, QMP_ERR_GENERIC, "New overlay node-name missing");
	if (vd_node_find(overlay_name))
		return qmp_error(call, QMP_ERR_GENERIC, "New overlay node-name already in use");
	if (vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Device '%s' is read only", node_name);
	if (!strcmp(mode, "absolute-paths")) {
		struct vs_kv kv[] = {
			{ "backing_file", vs_node_filename(n->node) },
			{ "backing_fmt", vs_node_format(n->node) },
		};

		if (vs_image_create(file, format, vs_node_size(n->node), kv, 2, &err) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	{
		struct vs_open_opts oo = {
			.filename = file,
			.format = format,
			.no_backing = true,
			.cache = vs_node_cache_mode(n->node),
		};

		if (vs_image_open(&overlay, &oo, &err) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	if (vs_node_size(overlay) != vs_node_size(n->node) ||
	    vs_node_replace_backing(overlay, n->node, &err) < 0) {
		if (!err.msg[0])
			vs_error_set(&err, -EINVAL, "The overlay's size differs from the node's");
		vs_node_close(overlay);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	if (!vd_node_add(overlay_name, overlay)) {
		vs_node_close(overlay);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	switch_to_overlay(n->node, overlay);
	vd_state_save(); /* the new node, and the exports moved */
	return 0;
}
QMP_COMMAND(snapshot_sync, "blockdev-snapshot-sync", cmd_snapshot_sync,
	    .params = QMP_PARAMS("device", "node-name", "snapshot-file", "snapshot-node-name",
				 "format", "mode"))

/* blockdev-snapshot: an overlay added with blockdev-add ("backing": null) goes above the node. */
static int cmd_snapshot(struct qmp_call *call)
{
	const char *node_name, *overlay_name;
	struct vs_error err = { 0 };
	struct vd_node *n, *o;

	if (qmp_arg_str(call, "node", true, &node_name) < 0 ||
	    qmp_arg_str(call, "overlay", true, &overlay_name) < 0)
		return -1;
	n = vd_node_lookup(call, node_name);
	if (!n)
		return -1;
	o = vd_node_lookup(call, overlay_name);
	if (!o)
		return -1;
	if (vs_node_backing(o->node))
		return qmp_error(call, QMP_ERR_GENERIC, "The overlay already has a backing image");
	if (vs_node_is_read_only(o->node))
		return qmp_error(call, QMP_ERR_GENERIC, "The overlay is read only");
	if (vs_node_size(o->node) != vs_node_size(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "The overlay's size differs from the node's");
	if (vs_node_replace_backing(o->node, n->node, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	/* The image's header names its new backing file too, as QEMU writes it. */
	if (vs_node_set_backing(o->node, vs_node_filename(n->node), vs_node_format(n->node), &err) <
	    0) {
		vs_node_replace_backing(o->node, NULL, NULL);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	switch_to_overlay(n->node, o->node);
	vd_state_save(); /* the overlay's backing and the exports moved */
	return 0;
}
QMP_COMMAND(snapshot, "blockdev-snapshot", cmd_snapshot, .params = QMP_PARAMS("node", "overlay"))
