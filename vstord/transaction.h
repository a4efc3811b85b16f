/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP's transaction, in QEMU's prepare/commit/abort model: every action is
 * prepared in order (checked, and whatever can be undone applied); if one
 * fails, those prepared are aborted in reverse order and nothing is left
 * applied; otherwise all are committed. The exports are drained once, from
 * the first change to the end, so no request sees the transaction half done.
 *
 * An action that is also a command (blockdev-snapshot-sync, the dirty
 * bitmap commands, ...) runs as a transaction of that one action: the
 * command and the action share the same code. Control reactor only.
 */
#ifndef VSTORD_TRANSACTION_H
#define VSTORD_TRANSACTION_H

#include "qmp.h"

struct vs_node;
struct vd_txn;
struct vd_action;

struct vd_action_type {
	const char *name;	   /* the action's "type" (and the command's name) */
	const char *const *params; /* the argument names, NULL-terminated */
	/*
	 * Check @call's arguments and the graph, and apply what abort() can
	 * undo. 0, or -1 after qmp_error() (nothing of this action left
	 * applied). May yield.
	 */
	int (*prepare)(struct vd_action *a, struct qmp_call *call);
	/* Make the action final; cannot fail. NULL: nothing left to do. */
	void (*commit)(struct vd_action *a);
	/* Undo what prepare() applied. NULL: nothing to undo. */
	void (*abort)(struct vd_action *a);
	struct vd_action_type *next;
};

struct vd_action {
	const struct vd_action_type *type;
	struct vd_txn *txn;
	/* The action's state from prepare(), malloc'd; freed after commit or abort. */
	void *priv;
	/* Freed with it: its strings, when priv holds some (NULL: none). */
	void (*clean)(void *priv);
};

void vd_action_register(struct vd_action_type *t);

/* Registers an action type of the transaction command. */
#define VD_ACTION(ident, type_name, params_list, ...)                             \
	static struct vd_action_type vd_action_##ident = { .name = type_name,     \
							   .params = params_list, \
							   __VA_ARGS__ };         \
	__attribute__((constructor)) static void vd_action_reg_##ident(void)      \
	{                                                                         \
		vd_action_register(&vd_action_##ident);                           \
	}

/* An action that is also a command of the same name and arguments. */
#define VD_ACTION_COMMAND(ident, type_name, params_list, ...)    \
	VD_ACTION(ident, type_name, params_list, __VA_ARGS__)    \
	static int vd_action_cmd_##ident(struct qmp_call *call)  \
	{                                                        \
		return vd_txn_run_one(call, &vd_action_##ident); \
	}                                                        \
	QMP_COMMAND(ident, type_name, vd_action_cmd_##ident, .params = params_list)

/* A command's handler: @call's arguments as the one action of type @t. */
int vd_txn_run_one(struct qmp_call *call, const struct vd_action_type *t);

/*
 * For prepare(), before it changes anything: from now until the
 * transaction ends, the exports are drained (all of them, once, at the
 * first action that asks) and so is @node (vs_node_drain_begin, once per
 * node; NULL: the exports only). Slow preparation that changes nothing
 * (creating an overlay file) comes before it, so the exports stop only
 * for the change itself.
 */
void vd_txn_quiesce(struct vd_txn *txn, struct vs_node *node);

/*
 * For commit(): once the transaction ends, the exports that served @base
 * serve @overlay (whose backing node @base is).
 */
void vd_txn_switch(struct vd_txn *txn, struct vs_node *base, struct vs_node *overlay);

#endif
