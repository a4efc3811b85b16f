/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Error policies of vstord's exports: what a node error does (report it to
 * the client, or stop the export and hold the request until `cont`), the
 * BLOCK_IO_ERROR event in QEMU's shape, and `cont`. The holding itself is
 * the export layer's (vs_export_retry()).
 */
#include "export-error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "export.h"
#include "monitor.h"
#include "reactors.h"

/* One policy argument: 1 given, 0 absent, -1 after qmp_error(). */
static int action_arg(struct qmp_call *call, const char *name, bool enospc,
		      enum vs_export_error_action *out)
{
	const char *s;
	int ret = qmp_arg_str(call, name, false, &s);

	if (ret <= 0)
		return ret;
	if (!strcmp(s, "ignore") || !strcmp(s, "auto"))
		return qmp_error(call, QMP_ERR_GENERIC, "%s=%s is not supported by vstord", name,
				 s);
	if (vs_export_error_action_parse(s, out) < 0 || (!enospc && *out == VS_EXPORT_ERROR_ENOSPC))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' does not accept value '%s'",
				 name, s);
	return 1;
}

int vd_export_error_args(struct qmp_call *call, struct vs_export_error_policy *p)
{
	int w, r;

	*p = (struct vs_export_error_policy){ 0 };
	w = action_arg(call, "werror", true, &p->write);
	if (w < 0)
		return -1;
	r = action_arg(call, "rerror", false, &p->read);
	if (r < 0)
		return -1;
	return w || r;
}

struct node_of {
	const char *id;
	const char *name;
};

static void find_node(const struct vd_export_view *v, void *opaque)
{
	struct node_of *n = opaque;

	if (!strcmp(v->id, n->id) && v->exp)
		n->name = vd_node_name_of(vs_export_node(v->exp));
}

struct io_error {
	char *id;
	enum vs_export_op op;
	int err;
	enum vs_export_error_action action;
};

static void emit_io_error(const char *id, enum vs_export_op op, int err,
			  enum vs_export_error_action action);

static void emit_posted(void *opaque)
{
	struct io_error *ev = opaque;

	emit_io_error(ev->id, ev->op, ev->err, ev->action);
	free(ev->id);
	free(ev);
}

/* On the export's reactor: the event is made on main, where the tables are. */
static void on_error(void *opaque, enum vs_export_op op, int err,
		     enum vs_export_error_action action)
{
	struct io_error *ev;

	if (vd_on_main()) {
		emit_io_error(opaque, op, err, action);
		return;
	}
	ev = malloc(sizeof(*ev));
	if (!ev)
		return;
	*ev = (struct io_error){ strdup(opaque), op, err, action };
	if (!ev->id || vd_reactor_post_main(emit_posted, ev) < 0) {
		free(ev->id);
		free(ev);
	}
}

/* BLOCK_IO_ERROR: device is the export id, node-name the node it serves now. */
static void emit_io_error(const char *id, enum vs_export_op op, int err,
			  enum vs_export_error_action action)
{
	json_object *data = json_object_new_object();
	struct node_of node = { .id = id, .name = "" };

	vd_export_for_each(find_node, &node);
	json_object_object_add(data, "device", json_object_new_string(id));
	json_object_object_add(data, "node-name", json_object_new_string(node.name));
	json_object_object_add(data, "operation",
			       json_object_new_string(op == VS_EXPORT_OP_READ ? "read" : "write"));
	json_object_object_add(data, "action",
			       json_object_new_string(vs_export_error_action_name(action)));
	json_object_object_add(data, "nospace", json_object_new_boolean(err == -ENOSPC));
	json_object_object_add(data, "reason", json_object_new_string(strerror(-err)));
	monitor_emit_event("BLOCK_IO_ERROR", data);
	json_object_put(data);
}

void vd_export_error_apply(struct vs_export *exp, const char *id,
			   const struct vs_export_error_policy *p)
{
	struct vs_export_error_policy pol = *p;

	pol.on_error = on_error;
	pol.opaque = (void *)id;
	vs_export_set_error_policy(exp, &pol);
}

void vd_export_error_release(struct vs_export *exp)
{
	vs_export_set_error_policy(exp, NULL);
	if (vs_export_is_stopped(exp))
		vs_export_resume(exp);
}

static void resume_here(void *opaque)
{
	struct vs_export *exp = opaque;

	if (vs_export_is_stopped(exp))
		vs_export_resume(exp);
}

static void resume_one(const struct vd_export_view *v, void *opaque)
{
	(void)opaque;
	if (v->exp) /* where its held requests wait */
		vd_reactor_run_on(v->reactor, resume_here, v->exp);
}

/*
 * QEMU's cont resumes a VM that an I/O error stopped, retrying the failed
 * requests; vstord has no VM, so it resumes every stopped export.
 */
static int cmd_cont(struct qmp_call *call)
{
	(void)call;
	vd_export_for_each(resume_one, NULL);
	return 0;
}
QMP_COMMAND(cont, "cont", cmd_cont, .params = QMP_PARAMS(NULL))
