/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor's checkpoint: in one command, for a live node, (a) freeze its
 * point in time with a copy-before-write node into a new scratch file
 * (fleece.c), (b) export that view read-only over NBD with the bitmap of
 * what changed since the previous checkpoint as qemu:dirty-bitmap:NAME,
 * and (c) start a fresh bitmap for the next one. (a) and (c), and the end
 * of the previous bitmap, happen with the node and its exports drained, so
 * the view and the bitmaps meet at one point: no write is in both
 * increments, none is in neither. Guest writes go on meanwhile; only the
 * first write to each 4 KiB unit copies its old data to the scratch file.
 *
 *   checkpoint-add    name, node | export, scratch, bitmap (the previous one)
 *   checkpoint-remove name
 *   query-checkpoints
 *
 * Checkpoints live in memory (not in --state-dir): a restart ends them.
 * Control reactor only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "block.h"
#include "cbw.h"
#include "export.h"
#include "fleece.h"
#include "qmp.h"
#include "state.h"
#include "vstor/reactor.h"

/* How long checkpoint-remove waits for the view's export to go. */
#define CHECKPOINT_EXPORT_WAIT_NS 10000000000ull

struct checkpoint {
	struct checkpoint *next;
	char *name, *node_name, *scratch, *prev;
	struct vs_node *src;
	/* The graph names of the scratch, copy-before-write and view nodes. */
	char *names[3];
};

static struct checkpoint *checkpoints;

static struct checkpoint *checkpoint_find(const char *name)
{
	for (struct checkpoint *c = checkpoints; c; c = c->next)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

static void checkpoint_free(struct checkpoint *c)
{
	if (!c)
		return;
	free(c->name);
	free(c->node_name);
	free(c->scratch);
	free(c->prev);
	for (int i = 0; i < 3; i++)
		free(c->names[i]);
	free(c);
}

static int bitmap_op(struct vs_node *node, enum vs_bitmap_action action, const char *name,
		     bool persistent, struct vs_error *err)
{
	struct vs_bitmap_op op = { .action = action, .name = name, .transient = !persistent };

	return vd_bitmap_apply(node, &op, err);
}

/*
 * The scratch image: a new sparse raw file of the node's size. The view
 * reads it only where a copy is complete (cbw.c), so it needs no backing
 * and no metadata: copies of different 4 KiB units (the copy unit of a
 * raw target) go to it side by side, where an allocating qcow2 write would
 * hold the image's lock through its data write.
 */
static int scratch_open(struct qmp_call *call, struct vs_node *src, const char *path,
			struct vs_node **out)
{
	struct vs_open_opts oo = {
		.filename = path,
		.format = "raw",
		.no_backing = true,
		.cache = vs_node_cache_mode(src),
	};
	struct vs_error err = { 0 };

	if (access(path, F_OK) == 0)
		return qmp_error(call, QMP_ERR_GENERIC, "Scratch file '%s' exists already", path);
	if (vs_image_create(path, "raw", vs_node_size(src), NULL, 0, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	if (vs_image_open(out, &oo, &err) < 0) {
		vs_node_close(*out);
		*out = NULL;
		unlink(path);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	return 0;
}

/* The view's export, as block-export-add would make it (not kept in --state-dir). */
static int checkpoint_export(struct qmp_call *call, struct checkpoint *c)
{
	json_object *args = json_object_new_object(), *bitmaps;
	char desc[512];
	int ret;

	if (!args)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	json_object_object_add(args, "type", json_object_new_string("nbd"));
	json_object_object_add(args, "id", json_object_new_string(c->name));
	json_object_object_add(args, "node-name", json_object_new_string(c->names[2]));
	json_object_object_add(args, "name", json_object_new_string(c->name));
	if (c->prev) {
		/* The view shows the source's bitmaps (fleece.c). */
		bitmaps = json_object_new_array();
		json_object_array_add(bitmaps, json_object_new_string(c->prev));
		json_object_object_add(args, "bitmaps", bitmaps);
	}
	ret = qmp_run_command("block-export-add", args, false, desc, sizeof(desc));
	json_object_put(args);
	if (ret < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", desc);
	vd_state_remove(VD_STATE_EXPORT, c->name);
	return 0;
}

/* Remove the view's export (waiting for it to go) and the nodes, newest first. */
static void checkpoint_release(struct checkpoint *c)
{
	json_object *args = json_object_new_object();
	char desc[512];

	if (args && vd_export_node(c->name)) {
		json_object_object_add(args, "id", json_object_new_string(c->name));
		json_object_object_add(args, "mode", json_object_new_string("hard"));
		(void)qmp_run_command("block-export-del", args, false, desc, sizeof(desc));
		for (uint64_t waited = 0;
		     vd_export_node(c->name) && waited < CHECKPOINT_EXPORT_WAIT_NS;
		     waited += 10000000)
			vs_co_sleep_ns(10000000);
	}
	json_object_put(args);
	for (int i = 2; i >= 0; i--) {
		struct vd_node *n = c->names[i] ? vd_node_find(c->names[i]) : NULL;

		if (n)
			vd_node_remove(n); /* the copy-before-write node's drains its source */
	}
	if (c->scratch)
		unlink(c->scratch);
}

static int cmd_checkpoint_add(struct qmp_call *call)
{
	const char *name, *node = NULL, *export = NULL, *scratch, *prev = NULL;
	struct vs_node *src, *tmp = NULL, *cbw = NULL, *view = NULL;
	struct vs_dirty_bitmap_info info;
	struct vs_error err = { 0 };
	struct checkpoint *c;
	bool persistent;
	int ret = -1;

	if (qmp_arg_str(call, "name", true, &name) < 0 ||
	    qmp_arg_str(call, "node", false, &node) < 0 ||
	    qmp_arg_str(call, "export", false, &export) < 0 ||
	    qmp_arg_str(call, "scratch", true, &scratch) < 0 ||
	    qmp_arg_str(call, "bitmap", false, &prev) < 0)
		return -1;
	if (!node == !export)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Exactly one of 'node' and 'export' is needed");
	if (!name[0] || strlen(name) > 24 ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyz"
			 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789-_.") != strlen(name))
		return qmp_error(call, QMP_ERR_GENERIC, "Invalid checkpoint name '%s'", name);
	if (checkpoint_find(name))
		return qmp_error(call, QMP_ERR_GENERIC, "Checkpoint '%s' exists already", name);
	if (export) {
		src = vd_export_node(export);
		if (!src)
			return qmp_error(call, QMP_ERR_GENERIC, "Export '%s' is not found", export);
		node = vd_node_name_of(src);
	} else {
		struct vd_node *n = vd_node_lookup(call, node);

		if (!n)
			return -1;
		src = n->node;
	}
	if (vd_bitmap_find(src, name, NULL))
		return qmp_error(call, QMP_ERR_GENERIC, "Bitmap already exists: %s", name);
	if (prev && !vd_bitmap_find(src, prev, &info))
		return qmp_error(call, QMP_ERR_GENERIC, "Dirty bitmap '%s' not found", prev);
	if (prev && (vd_bitmap_busy(src, prev) || info.inconsistent))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Bitmap '%s' is in use or inconsistent and cannot be used", prev);
	if (vd_export_node(name))
		return qmp_error(call, QMP_ERR_GENERIC, "Export '%s' exists already", name);
	c = calloc(1, sizeof(*c));
	if (!c || !(c->name = strdup(name)) || !(c->node_name = strdup(node)) ||
	    (prev && !(c->prev = strdup(prev))) || asprintf(&c->names[0], "%s-scratch", name) < 0 ||
	    asprintf(&c->names[1], "%s-cbw", name) < 0 ||
	    asprintf(&c->names[2], "%s-view", name) < 0) {
		checkpoint_free(c);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	for (int i = 0; i < 3; i++)
		if (vd_node_find(c->names[i])) {
			qmp_error(call, QMP_ERR_GENERIC, "Duplicate nodes with node-name='%s'",
				  c->names[i]);
			goto fail;
		}
	c->src = src;
	/* Slow work that changes nothing live comes before the drain. */
	if (scratch_open(call, src, scratch, &tmp) < 0)
		goto fail;
	c->scratch = strdup(scratch);
	persistent = vd_bitmap_can_persist(src);
	vd_exports_drain_begin(src);
	vs_node_drain_begin(src);
	if (bitmap_op(src, VS_BITMAP_ADD, name, persistent, &err) < 0) {
		qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	} else if (prev && bitmap_op(src, VS_BITMAP_DISABLE, prev, false, &err) < 0) {
		qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
		bitmap_op(src, VS_BITMAP_REMOVE, name, false, &err);
	} else if (vd_fleece_cbw_open(call, src, tmp, true, &cbw) < 0 ||
		   vd_fleece_access_open(call, cbw, &view) < 0) {
		if (prev)
			bitmap_op(src, VS_BITMAP_ENABLE, prev, false, &err);
		bitmap_op(src, VS_BITMAP_REMOVE, name, false, &err);
	} else {
		ret = 0;
	}
	vs_node_drain_end(src);
	vd_exports_drain_end(src, NULL);
	if (ret < 0) {
		vs_node_close(cbw); /* after the drain: its close drains the source */
		goto fail;
	}
	/* The graph holds them by name from here; checkpoint_release drops them. */
	if (!vd_node_add(c->names[0], tmp)) {
		vs_node_close(view);
		vs_node_close(cbw);
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		goto fail_live;
	}
	tmp = NULL;
	if (!vd_node_add(c->names[1], cbw)) {
		vs_node_close(view);
		vs_node_close(cbw);
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		goto fail_live;
	}
	if (!vd_node_add(c->names[2], view)) {
		vs_node_close(view);
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		goto fail_live;
	}
	if (checkpoint_export(call, c) < 0)
		goto fail_live;
	c->next = checkpoints;
	checkpoints = c;
	return 0;

fail_live:
	ret = -1;
	checkpoint_release(c);
	vs_node_close(tmp);
	if (prev)
		bitmap_op(src, VS_BITMAP_ENABLE, prev, false, &err);
	bitmap_op(src, VS_BITMAP_REMOVE, name, false, &err);
	checkpoint_free(c);
	return ret;
fail:
	vs_node_close(tmp);
	if (c->scratch)
		unlink(c->scratch);
	checkpoint_free(c);
	return -1;
}
QMP_COMMAND(checkpoint_add, "checkpoint-add", cmd_checkpoint_add,
	    .params = QMP_PARAMS("name", "node", "export", "scratch", "bitmap"))

static int cmd_checkpoint_remove(struct qmp_call *call)
{
	struct checkpoint **p, *c;
	const char *name;

	if (qmp_arg_str(call, "name", true, &name) < 0)
		return -1;
	for (p = &checkpoints; *p && strcmp((*p)->name, name); p = &(*p)->next)
		;
	c = *p;
	if (!c)
		return qmp_error(call, QMP_ERR_GENERIC, "Checkpoint '%s' not found", name);
	*p = c->next;
	checkpoint_release(c);
	checkpoint_free(c);
	return 0;
}
QMP_COMMAND(checkpoint_remove, "checkpoint-remove", cmd_checkpoint_remove,
	    .params = QMP_PARAMS("name"))

/* The copy-before-write counters of @c's view (cbw.h), into @o. */
static void checkpoint_stats(const struct checkpoint *c, json_object *o)
{
	struct vd_node *n = vd_node_find(c->names[1]);
	struct vd_cbw *cbw = n ? vd_fleece_cbw(n->node) : NULL;
	json_object *st;
	struct vd_cbw_stats cs;

	if (!cbw || !(st = json_object_new_object()))
		return;
	vd_cbw_stats(cbw, &cs);
	json_object_object_add(st, "copy-unit", json_object_new_int64((int64_t)cs.unit));
	json_object_object_add(st, "writes", json_object_new_int64((int64_t)cs.writes));
	json_object_object_add(st, "copies", json_object_new_int64((int64_t)cs.copies));
	json_object_object_add(st, "copied-bytes", json_object_new_int64((int64_t)cs.copied_bytes));
	json_object_object_add(st, "waits", json_object_new_int64((int64_t)cs.waits));
	json_object_object_add(o, "copy-before-write", st);
}

static int cmd_query_checkpoints(struct qmp_call *call)
{
	json_object *list = json_object_new_array();

	if (!list)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	for (struct checkpoint *c = checkpoints; c; c = c->next) {
		json_object *o = json_object_new_object();

		if (!o)
			continue;
		json_object_object_add(o, "name", json_object_new_string(c->name));
		json_object_object_add(o, "node", json_object_new_string(c->node_name));
		json_object_object_add(o, "export", json_object_new_string(c->name));
		json_object_object_add(o, "scratch", json_object_new_string(c->scratch));
		if (c->prev)
			json_object_object_add(o, "bitmap", json_object_new_string(c->prev));
		json_object_object_add(o, "new-bitmap", json_object_new_string(c->name));
		checkpoint_stats(c, o);
		json_object_array_add(list, o);
	}
	call->ret = list;
	return 0;
}
QMP_COMMAND(query_checkpoints, "query-checkpoints", cmd_query_checkpoints,
	    .params = QMP_PARAMS(NULL))
