/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshots of a node, live: internal ones (blockdev-snapshot-internal-sync,
 * blockdev-snapshot-delete-internal-sync) and external ones (an overlay goes
 * above the node: blockdev-snapshot-sync, blockdev-snapshot), with
 * qemu-storage-daemon's arguments, messages and return values. The node is
 * drained around the change (vs_node_drain_begin), so requests of an export
 * on it wait for the few milliseconds it takes instead of racing the
 * snapshot's metadata. All but the delete are transaction actions too
 * (transaction.h): the commands run as transactions of one action.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block.h"
#include "export.h"
#include "job.h"
#include "qmp.h"
#include "transaction.h"
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

/* blockdev-snapshot-internal-sync: undone by deleting the snapshot it took. */
struct snap_internal {
	struct vs_node *node;
	char id[sizeof(((struct vs_snapshot_info *)0)->id)];
};

static int snap_internal_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *device, *name;
	struct vs_image_info info;
	struct vs_error err = { 0 };
	struct snap_internal *st;
	struct vd_node *n;
	int ret;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "name", true, &name) < 0)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	/* A job's node: qsd finds no root node for the device then. */
	if (vd_job_using(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Need a root block node");
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
	st = calloc(1, sizeof(*st));
	if (!st)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	a->priv = st;
	st->node = n->node;
	vd_txn_quiesce(a->txn, n->node);
	ret = vs_node_snapshot_create(n->node, name, NULL, &err);
	if (ret < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	/* Its id, to delete this one and no other on abort. */
	if (vs_node_get_info(n->node, &info) == 0) {
		for (unsigned i = 0; i < info.nb_snapshots; i++)
			if (!strcmp(info.snapshots[i].name, name))
				snprintf(st->id, sizeof(st->id), "%s", info.snapshots[i].id);
		vs_image_info_free(&info);
	}
	return 0;
}

static void snap_internal_abort(struct vd_action *a)
{
	struct snap_internal *st = a->priv;

	if (st && st->id[0])
		vs_node_snapshot_delete(st->node, st->id, NULL);
}
VD_ACTION_COMMAND(snapshot_internal, "blockdev-snapshot-internal-sync",
		  QMP_PARAMS("device", "name"), .prepare = snap_internal_prepare,
		  .abort = snap_internal_abort)

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
	/* A job's node: qsd finds no root node for the device then. */
	if (vd_job_using(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Need a root block node");
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
 * Both put an overlay above a node: prepare builds the graph change (the
 * overlay's backing node is the node, nothing reaches the overlay yet),
 * commit points the node's exports at the overlay when the transaction
 * ends, abort takes the overlay away again.
 */
struct snap_external {
	struct vs_node *base, *overlay;
	struct vd_node *named; /* blockdev-snapshot-sync: the overlay it added */
	char *created;	       /* blockdev-snapshot-sync: the file it created */
	bool header_changed;   /* blockdev-snapshot: the overlay's header names @base */
	char *old_backing;     /* blockdev-snapshot: what the header named before */
	char old_backing_fmt[32];
};

static void snap_external_clean(void *priv)
{
	struct snap_external *st = priv;

	free(st->created);
	free(st->old_backing);
}

static struct snap_external *snap_external_new(struct vd_action *a, struct qmp_call *call)
{
	struct snap_external *st = calloc(1, sizeof(*st));

	if (!st) {
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		return NULL;
	}
	a->priv = st;
	a->clean = snap_external_clean;
	return st;
}

static void snap_external_commit(struct vd_action *a)
{
	struct snap_external *st = a->priv;

	vd_txn_switch(a->txn, st->base, st->overlay);
}

static int snap_sync_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *device = NULL, *node_name = NULL, *file, *overlay_name = NULL;
	const char *format = "qcow2", *mode = "absolute-paths";
	struct vs_error err = { 0 };
	struct vs_node *overlay = NULL;
	struct snap_external *st;
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
	if (vd_job_check_node_free(call, n->node, node_name) < 0)
		return -1;
	if (!overlay_name)
		return qmp_error(call, QMP_ERR_GENERIC, "New overlay node-name missing");
	if (vd_node_find(overlay_name))
		return qmp_error(call, QMP_ERR_GENERIC, "New overlay node-name already in use");
	if (vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Device '%s' is read only", node_name);
	st = snap_external_new(a, call);
	if (!st)
		return -1;
	st->base = n->node;
	if (!strcmp(mode, "absolute-paths")) {
		struct vs_kv kv[] = {
			{ "backing_file", vs_node_filename(n->node) },
			{ "backing_fmt", vs_node_format(n->node) },
		};
		/* An abort removes the file only if this action made it. */
		bool existed = access(file, F_OK) == 0;

		if (vs_image_create(file, format, vs_node_size(n->node), kv, 2, &err) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
		if (!existed) {
			st->created = strdup(file);
			if (!st->created) {
				unlink(file);
				return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
			}
		}
	}
	{
		struct vs_open_opts oo = {
			.filename = file,
			.format = format,
			.no_backing = true,
			.cache = vs_node_cache_mode(n->node),
		};

		if (vs_image_open(&overlay, &oo, &err) < 0) {
			qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
			goto fail;
		}
	}
	/* The graph changes from here: requests wait until the transaction ends. */
	vd_txn_quiesce(a->txn, n->node);
	if (vs_node_size(overlay) != vs_node_size(n->node) ||
	    vs_node_replace_backing(overlay, n->node, &err) < 0) {
		if (!err.msg[0])
			vs_error_set(&err, -EINVAL, "The overlay's size differs from the node's");
		vs_node_close(overlay);
		qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
		goto fail;
	}
	st->named = vd_node_add(overlay_name, overlay);
	if (!st->named) {
		vs_node_close(overlay);
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		goto fail;
	}
	st->overlay = overlay;
	return 0;
fail:
	if (st->created)
		unlink(st->created);
	return -1;
}

static void snap_sync_abort(struct vd_action *a)
{
	struct snap_external *st = a->priv;

	if (!st)
		return;
	if (st->named)
		vd_node_remove(st->named); /* closes the overlay, which lets go of the base */
	if (st->created)
		unlink(st->created);
}
VD_ACTION_COMMAND(snapshot_sync, "blockdev-snapshot-sync",
		  QMP_PARAMS("device", "node-name", "snapshot-file", "snapshot-node-name", "format",
			     "mode"),
		  .prepare = snap_sync_prepare, .commit = snap_external_commit,
		  .abort = snap_sync_abort)

/* blockdev-snapshot: an overlay added with blockdev-add ("backing": null) goes above the node. */
static int snap_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *node_name, *overlay_name;
	struct vs_error err = { 0 };
	struct snap_external *st;
	struct vs_image_info info;
	struct vd_node *n, *o;

	if (qmp_arg_str(call, "node", true, &node_name) < 0 ||
	    qmp_arg_str(call, "overlay", true, &overlay_name) < 0)
		return -1;
	n = vd_node_lookup(call, node_name);
	if (!n)
		return -1;
	o = vd_node_lookup(call, overlay_name);
	if (!o || vd_job_check_node_free(call, n->node, node_name) < 0)
		return -1;
	if (vs_node_backing(o->node))
		return qmp_error(call, QMP_ERR_GENERIC, "The overlay already has a backing image");
	if (vs_node_is_read_only(o->node))
		return qmp_error(call, QMP_ERR_GENERIC, "The overlay is read only");
	if (vs_node_size(o->node) != vs_node_size(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "The overlay's size differs from the node's");
	st = snap_external_new(a, call);
	if (!st)
		return -1;
	st->base = n->node;
	st->overlay = o->node;
	/* What the overlay's header names now, for an abort to put back. */
	if (vs_node_get_info(o->node, &info) == 0) {
		if (info.backing_filename) {
			st->old_backing = strdup(info.backing_filename);
			snprintf(st->old_backing_fmt, sizeof(st->old_backing_fmt), "%s",
				 info.backing_format);
		}
		vs_image_info_free(&info);
	}
	vd_txn_quiesce(a->txn, n->node);
	if (vs_node_replace_backing(o->node, n->node, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	/* The image's header names its new backing file too, as QEMU writes it. */
	if (vs_node_set_backing(o->node, vs_node_filename(n->node), vs_node_format(n->node), &err) <
	    0) {
		vs_node_replace_backing(o->node, NULL, NULL);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	st->header_changed = true;
	return 0;
}

static void snap_abort(struct vd_action *a)
{
	struct snap_external *st = a->priv;

	if (!st || !st->header_changed)
		return;
	vs_node_set_backing(st->overlay, st->old_backing,
			    st->old_backing_fmt[0] ? st->old_backing_fmt : NULL, NULL);
	vs_node_replace_backing(st->overlay, NULL, NULL);
}
VD_ACTION_COMMAND(snapshot, "blockdev-snapshot", QMP_PARAMS("node", "overlay"),
		  .prepare = snap_prepare, .commit = snap_external_commit, .abort = snap_abort)
