/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's objects: throttle groups (cmd-throttle.c), and TLS credentials
 * for the NBD server, with the properties
 * of QEMU's tls-creds-x509 (dir with ca-cert.pem, server-cert.pem and
 * server-key.pem; verify-peer, on by default) and tls-creds-psk (dir with
 * keys.psk), loaded as vstor-nbd's --object loads them; and secrets (QEMU's
 * secret: data or file, format raw or base64), kept by libstore for the
 * nodes that name them. --object and the monitor's object-add/object-del.
 */
#include "object.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd-throttle.h"
#include "export.h"
#include "nbd-tls.h"
#include "state.h"
#include "vstor/node.h"

struct vd_object {
	struct vd_object *next;
	char *id;
	struct vs_nbd_tls *tls;
	bool secret;
};

static struct vd_object *objects;

static const char *const x509_params[] = { "qom-type",	  "id",		  "dir",      "endpoint",
					   "verify-peer", "sanity-check", "priority", NULL };
static const char *const psk_params[] = { "qom-type", "id",	  "dir", "endpoint",
					  "username", "priority", NULL };

static const char *const secret_params[] = { "qom-type", "id", "data", "file", "format", NULL };

static bool in_list(const char *const *list, const char *name)
{
	for (; *list; list++)
		if (!strcmp(*list, name))
			return true;
	return false;
}

static struct vd_object *object_find(const char *id)
{
	for (struct vd_object *o = objects; o; o = o->next)
		if (!strcmp(o->id, id))
			return o;
	return NULL;
}

static int duplicate(struct qmp_call *call, const char *id)
{
	return qmp_error(call, QMP_ERR_GENERIC,
			 "attempt to add duplicate property '%s' to object (type 'objects')", id);
}

static int add_secret(struct qmp_call *call, const char *id)
{
	const char *data = NULL, *file = NULL, *format = NULL;
	struct vs_error err = { 0 };
	struct vd_object *o;

	json_object_object_foreach(call->args, key, val)
	{
		(void)val;
		if (!in_list(secret_params, key))
			return qmp_error(call, QMP_ERR_GENERIC, "Property 'secret.%s' not found",
					 key);
	}
	if (qmp_arg_str(call, "data", false, &data) < 0 ||
	    qmp_arg_str(call, "file", false, &file) < 0 ||
	    qmp_arg_str(call, "format", false, &format) < 0)
		return -1;
	if (object_find(id) || vd_throttle_group_exists(id))
		return duplicate(call, id);
	/* The state file is not a place for secrets: only a file's name goes there. */
	if (data && vd_state_active())
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Secret '%s' given with 'data' cannot be kept in the state "
				 "directory; give it with 'file'",
				 id);
	o = calloc(1, sizeof(*o));
	if (!o || !(o->id = strdup(id))) {
		free(o);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	if (vs_secret_define(id, data, file, format, &err) < 0) {
		free(o->id);
		free(o);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	o->secret = true;
	o->next = objects;
	objects = o;
	return 0;
}

int vd_object_add(struct qmp_call *call)
{
	const char *type, *id, *dir = NULL, *endpoint = "client", *priority = NULL;
	struct vs_nbd_tls_opts opts = { .verify_peer = true };
	struct vs_error err = { 0 };
	struct vd_object *o;
	char *psk = NULL;
	bool psk_type;
	int ret;

	if (qmp_arg_str(call, "qom-type", true, &type) < 0 ||
	    qmp_arg_str(call, "id", true, &id) < 0)
		return -1;
	if (!strcmp(type, "throttle-group")) {
		if (object_find(id))
			return duplicate(call, id);
		return vd_throttle_object_add(call, id);
	}
	if (!strcmp(type, "secret"))
		return add_secret(call, id);
	if (strcmp(type, "tls-creds-x509") && strcmp(type, "tls-creds-psk"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Object type '%s' is not supported by vstord", type);
	psk_type = !strcmp(type, "tls-creds-psk");
	json_object_object_foreach(call->args, key, val)
	{
		(void)val;
		if (!in_list(psk_type ? psk_params : x509_params, key))
			return qmp_error(call, QMP_ERR_GENERIC, "Property '%s.%s' not found", type,
					 key);
	}
	if (qmp_arg_str(call, "dir", false, &dir) < 0 ||
	    qmp_arg_str(call, "endpoint", false, &endpoint) < 0 ||
	    qmp_arg_str(call, "priority", false, &priority) < 0 ||
	    (!psk_type && qmp_arg_bool(call, "verify-peer", false, &opts.verify_peer) < 0))
		return -1;
	if (object_find(id) || vd_throttle_group_exists(id))
		return duplicate(call, id);
	if (strcmp(endpoint, "server") && strcmp(endpoint, "client"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'endpoint' does not accept value '%s'", endpoint);
	if (priority)
		return qmp_error(call, QMP_ERR_GENERIC, "priority is not supported by vstord");
	if (!dir)
		return qmp_error(call, QMP_ERR_GENERIC, "Unable to access credentials: no dir");
	o = calloc(1, sizeof(*o));
	if (!o || !(o->id = strdup(id))) {
		free(o);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	if (!strcmp(endpoint, "server")) {
		if (psk_type && asprintf(&psk, "%s/keys.psk", dir) < 0)
			psk = NULL;
		opts.psk_file = psk;
		opts.certificates_dir = psk_type ? NULL : dir;
		if (psk_type)
			opts.verify_peer = false;
		ret = psk_type && !psk ? -1 : vs_nbd_tls_new(&o->tls, &opts, &err);
		free(psk);
		if (ret < 0) {
			free(o->id);
			free(o);
			return qmp_error(call, QMP_ERR_GENERIC, "%s",
					 err.msg[0] ? err.msg : "Out of memory");
		}
	}
	/* A client endpoint: the credentials of nbd nodes' tls-creds (libstore keeps them). */
	if (strcmp(endpoint, "server")) {
		const char *user = NULL;

		if ((psk_type && qmp_arg_str(call, "username", false, &user) < 0) ||
		    vs_tls_creds_define(id, type, dir, user, &err) < 0) {
			vs_nbd_tls_free(o->tls);
			free(o->id);
			free(o);
			return err.msg[0] ? qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg) : -1;
		}
	}
	o->next = objects;
	objects = o;
	return 0;
}

struct vs_nbd_tls *vd_object_tls(struct qmp_call *call, const char *id)
{
	for (struct vd_object *o = objects; o; o = o->next) {
		if (strcmp(o->id, id) || o->secret)
			continue;
		if (!o->tls)
			qmp_error(call, QMP_ERR_GENERIC,
				  "Expecting TLS credentials with a server endpoint");
		return o->tls;
	}
	qmp_error(call, QMP_ERR_GENERIC, "No TLS credentials with id '%s'", id);
	return NULL;
}

static void object_free(struct vd_object *o)
{
	if (o->secret)
		vs_secret_remove(o->id);
	vs_nbd_tls_free(o->tls);
	free(o->id);
	free(o);
}

static int cmd_object_add(struct qmp_call *call)
{
	const char *id;

	if (vd_object_add(call) < 0)
		return -1;
	qmp_arg_str(call, "id", true, &id);
	vd_state_add(VD_STATE_OBJECT, id, call->args);
	return 0;
}
QMP_COMMAND(object_add, "object-add", cmd_object_add, .params = NULL)

static int cmd_object_del(struct qmp_call *call)
{
	struct vd_object **p;
	const char *id;
	int ret;

	if (qmp_arg_str(call, "id", true, &id) < 0)
		return -1;
	ret = vd_throttle_object_del(call, id); /* 1: a throttle group, deleted */
	if (ret != 0) {
		if (ret > 0)
			vd_state_remove(VD_STATE_OBJECT, id);
		return ret < 0 ? -1 : 0;
	}
	for (p = &objects; *p && strcmp((*p)->id, id); p = &(*p)->next)
		;
	if (!*p)
		return qmp_error(call, QMP_ERR_GENERIC, "object '%s' not found", id);
	if (vd_export_uses_object(id))
		return qmp_error(call, QMP_ERR_GENERIC, "object '%s' is in use, can not be deleted",
				 id);
	struct vd_object *o = *p;

	*p = o->next;
	vd_state_remove(VD_STATE_OBJECT, id);
	(void)vs_tls_creds_remove(id);
	object_free(o);
	return 0;
}
QMP_COMMAND(object_del, "object-del", cmd_object_del, .params = QMP_PARAMS("id"))

void vd_object_close_all(void)
{
	struct vd_object *o;

	while ((o = objects)) {
		objects = o->next;
		object_free(o);
	}
}
