/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transaction command and the machinery every action runs through
 * (transaction.h): drain, prepare all, commit all or abort those prepared,
 * then let the exports go on, on the nodes the snapshots put above them.
 */
#include "transaction.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "export.h"
#include "state.h"
#include "vstor/node.h"

static struct vd_action_type *action_types;

void vd_action_register(struct vd_action_type *t)
{
	t->next = action_types;
	action_types = t;
}

static const struct vd_action_type *action_type_find(const char *name)
{
	for (const struct vd_action_type *t = action_types; t; t = t->next)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

/* Every action type QEMU 7.2 knows (TransactionActionKind), for its error on the others. */
static const char *const qemu_action_types[] = {
	"abort",
	"block-dirty-bitmap-add",
	"block-dirty-bitmap-remove",
	"block-dirty-bitmap-clear",
	"block-dirty-bitmap-enable",
	"block-dirty-bitmap-disable",
	"block-dirty-bitmap-merge",
	"blockdev-backup",
	"blockdev-snapshot",
	"blockdev-snapshot-internal-sync",
	"blockdev-snapshot-sync",
	"drive-backup",
	NULL,
};

struct export_drain {
	struct vs_node *node; /* its exports are drained */
	struct vs_node *top;  /* where they go on (== node: where they were) */
};

struct vd_txn {
	struct export_drain *exports;
	unsigned nb_exports;
	bool exports_drained;
	struct vs_node **nodes; /* drained with vs_node_drain_begin */
	unsigned nb_nodes;
	bool oom;
};

static void txn_drain_exports(struct vd_txn *txn);

static void *grow(void *arr, unsigned n, size_t size)
{
	return realloc(arr, (n + 1) * size);
}

void vd_txn_quiesce(struct vd_txn *txn, struct vs_node *node)
{
	struct vs_node **nodes;

	if (!txn->exports_drained) {
		txn->exports_drained = true;
		txn_drain_exports(txn);
	}
	if (!node)
		return;
	for (unsigned i = 0; i < txn->nb_nodes; i++)
		if (txn->nodes[i] == node)
			return;
	nodes = grow(txn->nodes, txn->nb_nodes, sizeof(*nodes));
	if (!nodes) {
		/* Not kept for the end: drained and let go at once, still safe. */
		vs_node_drain_begin(node);
		vs_node_drain_end(node);
		txn->oom = true;
		return;
	}
	txn->nodes = nodes;
	vs_node_drain_begin(node);
	txn->nodes[txn->nb_nodes++] = node;
}

void vd_txn_switch(struct vd_txn *txn, struct vs_node *base, struct vs_node *overlay)
{
	/* A chain of snapshots in one transaction: the exports go to the last. */
	for (unsigned i = 0; i < txn->nb_exports; i++)
		if (txn->exports[i].top == base)
			txn->exports[i].top = overlay;
}

static void drain_exports_of(struct vd_node *n, void *opaque)
{
	struct vd_txn *txn = opaque;
	struct export_drain *e = grow(txn->exports, txn->nb_exports, sizeof(*e));

	if (!e) {
		txn->oom = true;
		return;
	}
	txn->exports = e;
	vd_exports_drain_begin(n->node);
	/* Held until the end: the export's own reference may move away. */
	txn->exports[txn->nb_exports].node = vs_node_ref(n->node);
	txn->exports[txn->nb_exports].top = n->node;
	txn->nb_exports++;
}

static void txn_drain_exports(struct vd_txn *txn)
{
	vd_node_for_each(drain_exports_of, txn);
}

static void txn_end(struct vd_txn *txn)
{
	for (unsigned i = 0; i < txn->nb_exports; i++) {
		struct export_drain *e = &txn->exports[i];

		vd_exports_drain_end(e->node, e->top != e->node ? e->top : NULL);
	}
	for (unsigned i = 0; i < txn->nb_nodes; i++)
		vs_node_drain_end(txn->nodes[i]);
	for (unsigned i = 0; i < txn->nb_exports; i++)
		vs_node_close(txn->exports[i].node);
	free(txn->exports);
	free(txn->nodes);
}

static void action_free(struct vd_action *a)
{
	if (a->clean && a->priv)
		a->clean(a->priv);
	free(a->priv);
	a->priv = NULL;
}

/* @args checked against @t's parameter names. */
static int check_params(struct qmp_call *call, const struct vd_action_type *t, json_object *args,
			size_t i)
{
	json_object_object_foreach(args, key, val)
	{
		const char *const *p;

		(void)val;
		for (p = t->params; *p && strcmp(*p, key); p++)
			;
		if (!*p)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'actions[%zu].data.%s' is unexpected", i, key);
	}
	return 0;
}

/* One prepared action of a transaction being run. */
struct step {
	struct vd_action action;
	json_object *args;
};

/*
 * An argument's error names it by its path in the transaction's input, as
 * QEMU's visitor does: 'name' of action 0 is 'actions[0].data.name'.
 */
static void argument_path(char *desc, size_t size, unsigned i)
{
	static const char *const forms[] = { "Parameter '", "Invalid parameter type for '" };
	char buf[sizeof(((struct qmp_call *)0)->desc) + 64];

	for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		size_t len = strlen(forms[f]);

		/* 'null' is QEMU's own name for a list element, kept as it is. */
		if (strncmp(desc, forms[f], len) || !strncmp(desc + len, "null'", 5))
			continue;
		snprintf(buf, sizeof(buf), "%sactions[%u].data.%s", forms[f], i, desc + len);
		len = strlen(buf) < size ? strlen(buf) : size - 1; /* cut as qmp_error cuts */
		memcpy(desc, buf, len);
		desc[len] = 0;
		return;
	}
}

/*
 * Prepare @n steps in order; commit them all, or abort the prepared ones.
 * @in_transaction: the transaction command's (not a command's own) actions.
 */
static int txn_run(struct qmp_call *call, struct step *steps, unsigned n, bool in_transaction)
{
	struct vd_txn txn = { 0 };
	unsigned done = 0;
	int ret = 0;

	for (; done < n; done++) {
		struct vd_action *a = &steps[done].action;
		struct qmp_call sub = {
			.session = call->session,
			.args = steps[done].args,
			.keyval = call->keyval,
		};

		a->txn = &txn;
		if (a->type->prepare(a, &sub) < 0 || sub.failed) {
			if (in_transaction)
				argument_path(sub.desc, sizeof(sub.desc), done);
			qmp_error(call, sub.failed ? sub.cls : QMP_ERR_GENERIC, "%s", sub.desc);
			ret = -1;
			break;
		}
		/* The return value of the one action of a command. */
		if (n == 1)
			call->ret = sub.ret;
		else
			json_object_put(sub.ret);
	}
	if (ret < 0) {
		action_free(&steps[done].action);
		while (done--) {
			if (steps[done].action.type->abort)
				steps[done].action.type->abort(&steps[done].action);
			action_free(&steps[done].action);
		}
	} else {
		for (unsigned i = 0; i < n; i++) {
			if (steps[i].action.type->commit)
				steps[i].action.type->commit(&steps[i].action);
			action_free(&steps[i].action);
		}
	}
	txn_end(&txn);
	if (ret >= 0)
		vd_state_save(); /* snapshots add nodes and move exports */
	return ret;
}

int vd_txn_run_one(struct qmp_call *call, const struct vd_action_type *t)
{
	struct step step = { .action = { .type = t }, .args = call->args };

	return txn_run(call, &step, 1, false);
}

/* The abort action: fails its transaction on purpose. */
static int abort_prepare(struct vd_action *a, struct qmp_call *call)
{
	(void)a;
	return qmp_error(call, QMP_ERR_GENERIC, "Transaction aborted using Abort action");
}
VD_ACTION(abort, "abort", ((const char *const[]){ NULL }), .prepare = abort_prepare)

/* Whether the transaction's "properties" are ones vstord runs (0), or -1 after qmp_error. */
static int check_properties(struct qmp_call *call, json_object *props, const char *first_type)
{
	json_object *mode;

	if (!props)
		return 0;
	json_object_object_foreach(props, key, val)
	{
		(void)val;
		if (strcmp(key, "completion-mode"))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'properties.%s' is unexpected", key);
	}
	if (!json_object_object_get_ex(props, "completion-mode", &mode))
		return 0;
	if (!json_object_is_type(mode, json_type_string))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Invalid parameter type for 'properties.completion-mode', "
				 "expected: string");
	if (!strcmp(json_object_get_string(mode), "individual"))
		return 0;
	if (strcmp(json_object_get_string(mode), "grouped"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'completion-mode' does not accept value '%s'",
				 json_object_get_string(mode));
	/* Only QEMU's backup actions take part in grouped completion. */
	if (!first_type)
		return 0;
	return qmp_error(call, QMP_ERR_GENERIC,
			 "Action '%s' does not support Transaction property completion-mode = "
			 "grouped",
			 first_type);
}

static int cmd_transaction(struct qmp_call *call)
{
	json_object *actions, *props = NULL;
	struct step *steps;
	size_t n;
	int ret;

	if (qmp_arg_array(call, "actions", true, &actions) < 0 ||
	    qmp_arg_obj(call, "properties", false, &props) < 0)
		return -1;
	n = json_object_array_length(actions);
	steps = calloc(n ? n : 1, sizeof(*steps));
	if (!steps)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	/* The whole input is checked before any action runs, as QEMU's visitor does. */
	for (size_t i = 0; i < n; i++) {
		json_object *act = json_object_array_get_idx(actions, i), *type, *data;
		const struct vd_action_type *t;
		const char *tname;
		bool known = false;

		if (!json_object_is_type(act, json_type_object)) {
			ret = qmp_error(
				call, QMP_ERR_GENERIC,
				"Invalid parameter type for 'actions[%zu]', expected: object", i);
			goto out;
		}
		if (!json_object_object_get_ex(act, "type", &type)) {
			ret = qmp_error(call, QMP_ERR_GENERIC,
					"Parameter 'actions[%zu].type' is missing", i);
			goto out;
		}
		if (!json_object_is_type(type, json_type_string)) {
			ret = qmp_error(call, QMP_ERR_GENERIC,
					"Invalid parameter type for 'actions[%zu].type', expected: "
					"string",
					i);
			goto out;
		}
		tname = json_object_get_string(type);
		for (const char *const *k = qemu_action_types; *k; k++)
			known = known || !strcmp(*k, tname);
		if (!known) {
			ret = qmp_error(call, QMP_ERR_GENERIC,
					"Parameter 'type' does not accept value '%s'", tname);
			goto out;
		}
		if (!json_object_object_get_ex(act, "data", &data)) {
			ret = qmp_error(call, QMP_ERR_GENERIC,
					"Parameter 'actions[%zu].data' is missing", i);
			goto out;
		}
		if (!json_object_is_type(data, json_type_object)) {
			ret = qmp_error(call, QMP_ERR_GENERIC,
					"Invalid parameter type for 'actions[%zu].data', expected: "
					"object",
					i);
			goto out;
		}
		json_object_object_foreach(act, key, val)
		{
			(void)val;
			if (strcmp(key, "type") && strcmp(key, "data")) {
				ret = qmp_error(call, QMP_ERR_GENERIC,
						"Parameter 'actions[%zu].%s' is unexpected", i,
						key);
				goto out;
			}
		}
		t = action_type_find(tname);
		if (!t) {
			ret = qmp_error(call, QMP_ERR_GENERIC,
					"Transaction action '%s' is not supported by vstord yet",
					tname);
			goto out;
		}
		if (check_params(call, t, data, i) < 0) {
			ret = -1;
			goto out;
		}
		steps[i].action.type = t;
		steps[i].args = data;
	}
	ret = check_properties(call, props, n ? steps[0].action.type->name : NULL);
	if (ret == 0 && n)
		ret = txn_run(call, steps, (unsigned)n, true);
	/* transaction returns {}, whatever its actions would as commands. */
	json_object_put(call->ret);
	call->ret = NULL;
out:
	free(steps);
	return ret;
}
QMP_COMMAND(transaction, "transaction", cmd_transaction,
	    .params = QMP_PARAMS("actions", "properties"))
