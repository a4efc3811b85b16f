/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots of a node, live: blockdev-snapshot-internal-sync and
 * blockdev-snapshot-delete-internal-sync, with qemu-storage-daemon's
 * arguments, messages and return value. The node is drained around the
 * change (vs_node_drain_begin), so requests of an export on it wait for the
 * few milliseconds it takes instead of racing the snapshot's metadata.
 */
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "qmp.h"

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
