/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty bitmap commands, with qemu-storage-daemon's names, arguments
 * and messages (QEMU's qapi/block-core.json): block-dirty-bitmap-add,
 * -remove, -clear, -enable, -disable and -merge. Each is a transaction
 * action too (transaction.h): add applies in prepare and is removed again
 * on abort; the others only check in prepare and apply in commit, where
 * nothing is left that can fail. They act on live nodes: the exports are
 * drained from prepare to the end (vd_txn_quiesce), so a bitmap starts,
 * stops or is cleared between two requests.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "block.h"
#include "qmp.h"
#include "transaction.h"

/* QEMU's longest bitmap name (BDRV_BITMAP_MAX_NAME_SIZE). */
#define BITMAP_NAME_MAX 1023

/*
 * The bitmaps a prepared remove will take away when its transaction
 * commits: busy to every other action until then (QEMU's wording).
 */
struct removal {
	struct vs_node *node;
	const char *name;
	struct removal *next;
};
static struct removal *removals;

static bool being_removed(struct vs_node *node, const char *name)
{
	for (struct removal *r = removals; r; r = r->next)
		if (r->node == node && !strcmp(r->name, name))
			return true;
	return false;
}

/* QEMU's block_dirty_bitmap_lookup: the node and its bitmap, or -1 after qmp_error. */
static int lookup(struct qmp_call *call, const char *node, const char *name, struct vd_node **out,
		  struct vs_dirty_bitmap_info *info)
{
	struct vd_node *n = vd_node_find(node);

	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC, "Node '%s' not found", node);
	if (!vd_bitmap_find(n->node, name, info))
		return qmp_error(call, QMP_ERR_GENERIC, "Dirty bitmap '%s' not found", name);
	*out = n;
	return 0;
}

/* QEMU's bdrv_dirty_bitmap_check: busy, read-only (unless @allow_ro), inconsistent. */
static int check_usable(struct qmp_call *call, struct vd_node *n,
			const struct vs_dirty_bitmap_info *info, bool allow_ro)
{
	if (being_removed(n->node, info->name) || vd_bitmap_busy(n->node, info->name))
		return qmp_error(
			call, QMP_ERR_GENERIC,
			"Bitmap '%s' is currently in use by another operation and cannot be "
			"used",
			info->name);
	if (!allow_ro && info->persistent && vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Bitmap '%s' is readonly and cannot be modified", info->name);
	if (info->inconsistent)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Bitmap '%s' is inconsistent and cannot be used\n"
				 "Try block-dirty-bitmap-remove to delete this bitmap from disk",
				 info->name);
	return 0;
}

/* The bitmap an action works on; its strings are the call's, alive until commit/abort. */
struct bitmap_target {
	struct vs_node *node;
	const char *name;
	bool added;		/* add: the bitmap exists and an abort removes it */
	struct removal removal; /* remove: listed in removals until commit or abort */
};

static struct bitmap_target *target_new(struct vd_action *a, struct qmp_call *call,
					struct vd_node *n, const char *name)
{
	struct bitmap_target *t = calloc(1, sizeof(*t));

	if (!t) {
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		return NULL;
	}
	t->node = n->node;
	t->name = name;
	a->priv = t;
	return t;
}

/* The message of a failed persistent add, as QEMU words it for @node_name. */
static void persist_error(struct qmp_call *call, const char *name, const char *node_name,
			  const struct vs_node *node, const struct vs_error *err)
{
	char prefix[2 * BITMAP_NAME_MAX + 4096];
	const char *msg = err->msg;

	/* libstore's own prefix (qemu-img's wording) gives way to QEMU's. */
	snprintf(prefix, sizeof(prefix), "Can't store persistent bitmap '%s' into '%s': ", name,
		 vs_node_filename(node));
	if (!strncmp(msg, prefix, strlen(prefix)))
		msg += strlen(prefix);
	qmp_error(call, QMP_ERR_GENERIC, "Can't make bitmap '%s' persistent in '%s': %s", name,
		  node_name, msg);
}

static int add_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *node, *name;
	uint64_t granularity = 0;
	bool persistent = false, disabled = false;
	struct vs_error err = { 0 };
	struct bitmap_target *t;
	struct vd_node *n;

	if (qmp_arg_str(call, "node", true, &node) < 0 ||
	    qmp_arg_str(call, "name", true, &name) < 0 ||
	    qmp_arg_uint(call, "granularity", false, &granularity) < 0 ||
	    qmp_arg_bool(call, "persistent", false, &persistent) < 0 ||
	    qmp_arg_bool(call, "disabled", false, &disabled) < 0)
		return -1;
	if (granularity > UINT32_MAX)
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'granularity' expects uint32_t");
	if (!name[0])
		return qmp_error(call, QMP_ERR_GENERIC, "Bitmap name cannot be empty");
	n = vd_node_lookup(call, node);
	if (!n)
		return -1;
	if (json_object_object_get_ex(call->args, "granularity", NULL) &&
	    (granularity < 512 || (granularity & (granularity - 1))))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Granularity must be power of 2 and at least 512");
	if (persistent && !vd_bitmap_can_persist(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Can't store persistent bitmaps to %s: Operation not supported",
				 node);
	if (persistent && strlen(name) > BITMAP_NAME_MAX)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Can't make bitmap '%s' persistent in '%s': Name length exceeds "
				 "maximum (%d characters)",
				 name, node, BITMAP_NAME_MAX);
	if (vd_bitmap_find(n->node, name, NULL))
		return qmp_error(call, QMP_ERR_GENERIC, "Bitmap already exists: %s", name);
	if (strlen(name) > BITMAP_NAME_MAX)
		return qmp_error(call, QMP_ERR_GENERIC, "Bitmap name too long: %s", name);
	if (!vd_bitmap_supported(n->node, &err))
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	if (vs_node_is_read_only(n->node))
		return qmp_error(
			call, QMP_ERR_GENERIC,
			"Dirty bitmaps on read-only nodes are not supported by vstord yet");
	t = target_new(a, call, n, name);
	if (!t)
		return -1;
	/* From here to the end of the transaction no request runs. */
	vd_txn_quiesce(a->txn, NULL);
	{
		struct vs_bitmap_op op = {
			.action = VS_BITMAP_ADD,
			.name = name,
			.granularity = granularity,
			.disabled = disabled,
			.transient = !persistent,
		};

		if (vd_bitmap_apply(n->node, &op, &err) < 0) {
			if (persistent && err.code != -EEXIST)
				persist_error(call, name, node, n->node, &err);
			else
				qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
			return -1;
		}
	}
	t->added = true;
	return 0;
}

static void apply(struct bitmap_target *t, enum vs_bitmap_action action)
{
	struct vs_bitmap_op op = { .action = action, .name = t->name };
	struct vs_error err = { 0 };

	/* Checked in prepare, with the exports drained since: nothing can fail here. */
	if (vd_bitmap_apply(t->node, &op, &err) < 0)
		vs_warn("vstord: dirty bitmap '%s': %s", t->name, err.msg);
}

static void add_abort(struct vd_action *a)
{
	struct bitmap_target *t = a->priv;

	if (t && t->added)
		apply(t, VS_BITMAP_REMOVE);
}
VD_ACTION_COMMAND(bitmap_add, "block-dirty-bitmap-add",
		  QMP_PARAMS("node", "name", "granularity", "persistent", "disabled"),
		  .prepare = add_prepare, .abort = add_abort)

/* remove, clear, enable, disable: checked in prepare, applied in commit. */
static int simple_prepare(struct vd_action *a, struct qmp_call *call, bool allow_ro)
{
	const char *node, *name;
	struct vs_dirty_bitmap_info info;
	struct vd_node *n;

	if (qmp_arg_str(call, "node", true, &node) < 0 ||
	    qmp_arg_str(call, "name", true, &name) < 0 || lookup(call, node, name, &n, &info) < 0 ||
	    check_usable(call, n, &info, allow_ro) < 0)
		return -1;
	if (!target_new(a, call, n, name))
		return -1;
	vd_txn_quiesce(a->txn, NULL);
	return 0;
}

static int remove_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *node, *name;
	struct vs_dirty_bitmap_info info;
	struct bitmap_target *t;
	struct vd_node *n;

	/* An inconsistent bitmap can be removed: that is how it goes away. */
	if (qmp_arg_str(call, "node", true, &node) < 0 ||
	    qmp_arg_str(call, "name", true, &name) < 0 || lookup(call, node, name, &n, &info) < 0)
		return -1;
	if (being_removed(n->node, name) || vd_bitmap_busy(n->node, name))
		return qmp_error(
			call, QMP_ERR_GENERIC,
			"Bitmap '%s' is currently in use by another operation and cannot be "
			"used",
			name);
	if (info.persistent && vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Bitmap '%s' is readonly and cannot be modified", name);
	t = target_new(a, call, n, name);
	if (!t)
		return -1;
	t->removal.node = n->node;
	t->removal.name = name;
	t->removal.next = removals;
	removals = &t->removal;
	vd_txn_quiesce(a->txn, NULL);
	return 0;
}

static void removal_end(struct bitmap_target *t)
{
	for (struct removal **p = &removals; *p; p = &(*p)->next) {
		if (*p == &t->removal) {
			*p = t->removal.next;
			return;
		}
	}
}

static void remove_commit(struct vd_action *a)
{
	removal_end(a->priv);
	apply(a->priv, VS_BITMAP_REMOVE);
}

static void remove_abort(struct vd_action *a)
{
	if (a->priv)
		removal_end(a->priv);
}
VD_ACTION_COMMAND(bitmap_remove, "block-dirty-bitmap-remove", QMP_PARAMS("node", "name"),
		  .prepare = remove_prepare, .commit = remove_commit, .abort = remove_abort)

static int clear_prepare(struct vd_action *a, struct qmp_call *call)
{
	return simple_prepare(a, call, false);
}

static void clear_commit(struct vd_action *a)
{
	apply(a->priv, VS_BITMAP_CLEAR);
}
VD_ACTION_COMMAND(bitmap_clear, "block-dirty-bitmap-clear", QMP_PARAMS("node", "name"),
		  .prepare = clear_prepare, .commit = clear_commit)

static int toggle_prepare(struct vd_action *a, struct qmp_call *call)
{
	return simple_prepare(a, call, true);
}

static void enable_commit(struct vd_action *a)
{
	apply(a->priv, VS_BITMAP_ENABLE);
}
VD_ACTION_COMMAND(bitmap_enable, "block-dirty-bitmap-enable", QMP_PARAMS("node", "name"),
		  .prepare = toggle_prepare, .commit = enable_commit)

static void disable_commit(struct vd_action *a)
{
	apply(a->priv, VS_BITMAP_DISABLE);
}
VD_ACTION_COMMAND(bitmap_disable, "block-dirty-bitmap-disable", QMP_PARAMS("node", "name"),
		  .prepare = toggle_prepare, .commit = disable_commit)

/* merge: every source found and usable in prepare, merged into the target in commit. */
struct merge_source {
	struct vs_node *node;
	const char *name;
};

struct bitmap_merge {
	struct bitmap_target target;
	unsigned nb;
	struct merge_source src[]; /* nb entries */
};

/* One element of "bitmaps": a name on the target's node, or {node, name}. */
static int merge_source(struct qmp_call *call, json_object *el, size_t i, struct vd_node *target,
			struct merge_source *src)
{
	struct vs_dirty_bitmap_info info;
	struct vd_node *n = target;

	if (json_object_is_type(el, json_type_string)) {
		src->name = json_object_get_string(el);
		if (!vd_bitmap_find(target->node, src->name, &info))
			return qmp_error(call, QMP_ERR_GENERIC, "Dirty bitmap '%s' not found",
					 src->name);
	} else if (json_object_is_type(el, json_type_object)) {
		struct qmp_call sub = { .session = call->session, .args = el };
		const char *node;

		json_object_object_foreach(el, key, val)
		{
			(void)val;
			if (strcmp(key, "node") && strcmp(key, "name"))
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Parameter 'bitmaps[%zu].%s' is unexpected", i,
						 key);
		}
		/* Named by their path, as QEMU's visitor names them. */
		if (!json_object_object_get_ex(el, "node", NULL))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'bitmaps[%zu].node' is missing", i);
		if (!json_object_object_get_ex(el, "name", NULL))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'bitmaps[%zu].name' is missing", i);
		if (qmp_arg_str(&sub, "node", true, &node) < 0 ||
		    qmp_arg_str(&sub, "name", true, &src->name) < 0)
			return qmp_error(call, sub.cls, "%s", sub.desc);
		if (lookup(call, node, src->name, &n, &info) < 0)
			return -1;
	} else {
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Invalid parameter type for 'null', expected: "
				 "BlockDirtyBitmapOrStr");
	}
	src->node = n->node;
	if (check_usable(call, n, &info, true) < 0)
		return -1;
	if (vs_node_size(n->node) != vs_node_size(target->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Bitmaps are of different sizes (destination size is %" PRIu64
				 ", source size is %" PRIu64 ") and can't be merged",
				 vs_node_size(target->node), vs_node_size(n->node));
	return 0;
}

static int merge_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *node, *target;
	struct vs_dirty_bitmap_info info;
	struct bitmap_merge *m;
	json_object *bitmaps;
	struct vd_node *n;
	size_t nb;

	if (qmp_arg_str(call, "node", true, &node) < 0 ||
	    qmp_arg_str(call, "target", true, &target) < 0 ||
	    qmp_arg_array(call, "bitmaps", true, &bitmaps) < 0)
		return -1;
	/* The whole list's shape first, as QEMU's visitor checks it. */
	nb = json_object_array_length(bitmaps);
	for (size_t i = 0; i < nb; i++) {
		json_object *el = json_object_array_get_idx(bitmaps, i);

		if (!json_object_is_type(el, json_type_string) &&
		    !json_object_is_type(el, json_type_object))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Invalid parameter type for 'null', expected: "
					 "BlockDirtyBitmapOrStr");
	}
	if (lookup(call, node, target, &n, &info) < 0)
		return -1;
	m = calloc(1, sizeof(*m) + nb * sizeof(m->src[0]));
	if (!m)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	a->priv = m;
	m->target.node = n->node;
	m->target.name = target;
	for (size_t i = 0; i < nb; i++)
		if (merge_source(call, json_object_array_get_idx(bitmaps, i), i, n, &m->src[i]) < 0)
			return -1;
	m->nb = (unsigned)nb;
	if (check_usable(call, n, &info, false) < 0)
		return -1;
	vd_txn_quiesce(a->txn, NULL);
	return 0;
}

static void merge_commit(struct vd_action *a)
{
	struct bitmap_merge *m = a->priv;

	for (unsigned i = 0; i < m->nb; i++) {
		struct vs_bitmap_op op = {
			.action = VS_BITMAP_MERGE,
			.name = m->target.name,
			.src = m->src[i].node,
			.src_name = m->src[i].name,
		};
		struct vs_error err = { 0 };

		if (vd_bitmap_apply(m->target.node, &op, &err) < 0)
			vs_warn("vstord: merging dirty bitmap '%s': %s", m->src[i].name, err.msg);
	}
}
VD_ACTION_COMMAND(bitmap_merge, "block-dirty-bitmap-merge", QMP_PARAMS("node", "target", "bitmaps"),
		  .prepare = merge_prepare, .commit = merge_commit)
