/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The commands of the protocol itself: qmp_capabilities, query-version,
 * query-commands, quit.
 */
#include <stdio.h>
#include <string.h>

#include "qmp.h"
#include "vstord.h"

static int cmd_qmp_capabilities(struct qmp_call *call)
{
	json_object *enable = NULL;

	if (qmp_arg_array(call, "enable", false, &enable) < 0)
		return -1;
	for (size_t i = 0; enable && i < json_object_array_length(enable); i++) {
		json_object *cap = json_object_array_get_idx(enable, i);

		if (!json_object_is_type(cap, json_type_string))
			return qmp_error(
				call, QMP_ERR_GENERIC,
				"Invalid parameter type for 'enable[%zu]', expected: string", i);
		if (strcmp(json_object_get_string(cap), "oob"))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'enable[%zu]' does not accept value '%s'", i,
					 json_object_get_string(cap));
		/* vstord offers no out-of-band execution: every command runs in order. */
		return qmp_error(call, QMP_ERR_GENERIC, "Capability oob not available");
	}
	return 0;
}
QMP_COMMAND(qmp_capabilities, "qmp_capabilities", cmd_qmp_capabilities,
	    .params = QMP_PARAMS("enable"), .before_negotiation = true)

static int cmd_query_version(struct qmp_call *call)
{
	call->ret = qmp_version_object();
	return 0;
}
QMP_COMMAND(query_version, "query-version", cmd_query_version, .params = QMP_PARAMS(NULL))

static void add_command(const struct qmp_command *cmd, void *opaque)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(cmd->name));
	json_object_array_add(opaque, o);
}

static int cmd_query_commands(struct qmp_call *call)
{
	call->ret = json_object_new_array();
	qmp_for_each_command(add_command, call->ret);
	return 0;
}
QMP_COMMAND(query_commands, "query-commands", cmd_query_commands, .params = QMP_PARAMS(NULL))

static int cmd_quit(struct qmp_call *call)
{
	/* The reply goes out first: the daemon stops after this command returns. */
	vstord_request_stop();
	return 0;
}
QMP_COMMAND(quit, "quit", cmd_quit, .params = QMP_PARAMS(NULL))
