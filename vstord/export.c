/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's exports and their commands: nbd-server-start/stop,
 * block-export-add/del (types nbd and vhost-user-blk), query-block-exports,
 * query-blockstats and block_resize. Names, arguments, return shapes and
 * messages are qemu-storage-daemon's (QEMU's qapi/block-export.json and
 * block-core.json). Every export holds a reference to its node, so an
 * exported node cannot be blockdev-del'd. Control reactor only.
 */
#include "export.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "block.h"
#include "daemon.h"
#include "job.h"
#include "export-error.h"
#include "monitor.h"
#include "nbd-server.h"
#include "object.h"
#include "reactors.h"
#include "state.h"
#include "vhost-user.h"

#define NBD_MAX_LISTENERS 8

enum vd_export_type { VD_EXPORT_NBD, VD_EXPORT_VHOST };

struct vd_export {
	struct vd_export *next;
	char *id;
	enum vd_export_type type;
	char *node_name;
	struct vs_node *node; /* the export's reference */
	char *nbd_name;	      /* NBD: the export's name on the server */
	char **bitmaps;	      /* NBD: the node's bitmaps it serves, busy while it lives */
	unsigned nb_bitmaps;
	struct vs_vhost_blk *vhost;
	char *socket_path; /* vhost-user-blk: removed when the export goes */
	bool shutting_down;
	bool error_policy; /* werror/rerror given: queries show whether it stopped */
	int reactor;	   /* the I/O reactor its data path runs on (x-reactor) */
	bool homed;	   /* its node's chain is homed there (vd_node_home_get) */
	bool multi_reactor; /* connections (NBD) or queues (vhost) over every reactor (x-multi-reactor) */
	unsigned nb_queue_reactors; /* vhost with x-multi-reactor: the reactors its queues use */
};

static struct vs_nbd_server *nbd;
/* With several I/O reactors: the NBD server's part on each (its connections). */
static struct vs_nbd_server **nbd_shards;
static unsigned nbd_nshards;
static char *nbd_tls_creds; /* the object id the NBD server's credentials came from */
static struct vd_export *exports;
static bool refuse_addresses;

void vd_export_refuse_addresses(void)
{
	refuse_addresses = true;
}

static struct vd_export *export_find(const char *id)
{
	for (struct vd_export *e = exports; e; e = e->next)
		if (!strcmp(e->id, id))
			return e;
	return NULL;
}

static struct vs_export *layer_export(const struct vd_export *e)
{
	if (e->type == VD_EXPORT_VHOST)
		return e->vhost ? vs_vhost_blk_get_export(e->vhost) : NULL;
	return nbd ? vs_nbd_server_get_export(nbd, e->nbd_name) : NULL;
}

/* ---- work on an export's reactor ---- */

struct on_export {
	struct vd_export *e;
	struct vs_export *x;
	void (*fn)(struct on_export *o);
	uint64_t u;
	void *p;
	int ret;
};

static void on_export_run(void *opaque)
{
	struct on_export *o = opaque;

	o->fn(o);
}

/* Run @o->fn on @e's reactor (inline when it is the caller's). */
static void run_on_export(struct vd_export *e, struct on_export *o)
{
	o->e = e;
	o->x = layer_export(e);
	if (vd_reactor_run_on(e->reactor, on_export_run, o) < 0)
		o->ret = -ESHUTDOWN;
}

struct shard_op {
	struct vs_nbd_server_opts *opts;
	struct vs_nbd_server *srv;
	const char *name;
	int ret;
};

static void shard_new(void *opaque)
{
	struct shard_op *op = opaque;

	op->ret = vs_nbd_server_new(&op->srv, op->opts);
}

static void shard_shutdown(void *opaque)
{
	struct shard_op *op = opaque;

	vs_nbd_server_shutdown(op->srv);
}

static void shard_clients(void *opaque)
{
	struct shard_op *op = opaque;

	op->ret = (int)vs_nbd_server_export_clients(op->srv, op->name);
}

/* Shut down and free the NBD server: its shards first, each on its reactor. */
static void nbd_server_close(void)
{
	for (unsigned i = 0; i < nbd_nshards; i++) {
		struct shard_op op = { .srv = nbd_shards[i] };

		if (op.srv)
			vd_reactor_run_on((int)i, shard_shutdown, &op);
	}
	vs_nbd_server_shutdown(nbd);
	vs_nbd_server_free(nbd);
	nbd = NULL;
	for (unsigned i = 0; i < nbd_nshards; i++)
		vs_nbd_server_free(nbd_shards[i]);
	free(nbd_shards);
	nbd_shards = NULL;
	nbd_nshards = 0;
}

/* ---- nbd-server-start / nbd-server-stop ---- */

/* A string member of @sub, the object at @what; false after qmp_error() on @call. */
static bool member_str(struct qmp_call *call, struct qmp_call *sub, const char *what,
		       const char *name, const char **out)
{
	int ret = qmp_arg_str(sub, name, false, out);

	if (ret < 0)
		qmp_error(call, QMP_ERR_GENERIC,
			  "Invalid parameter type for '%s.%s', expected: string", what, name);
	else if (ret == 0)
		qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s.%s' is missing", what, name);
	return ret > 0;
}

/*
 * Listen on @addr, the descriptors in @fds: a SocketAddress (flat: {type,
 * path} or {type, host, port}, as --nbd-server and vhost-user-blk give it)
 * or, for nbd-server-start, the SocketAddressLegacy QMP has ({type, data:
 * {...}}). A missing member is named as QEMU names it ("addr.data.path").
 */
static int listen_addr(struct qmp_call *call, json_object *addr, bool vhost, int *fds, unsigned max)
{
	struct qmp_call sub = { .session = call->session, .args = addr, .keyval = call->keyval };
	struct vs_error err = { 0 };
	const char *type, *path, *host, *port, *what = "addr";
	json_object *data = NULL;
	int n;

	if (qmp_arg_str(&sub, "type", true, &type) < 0)
		return qmp_error(call, sub.cls, "%s", sub.desc);
	if (strcmp(type, "unix") && strcmp(type, "inet") && strcmp(type, "fd") &&
	    strcmp(type, "vsock"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'type' does not accept value '%s'", type);
	if (vhost && strcmp(type, "unix"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Only socket address types 'unix' and 'fd' are supported");
	if (!vhost && !call->keyval) { /* QMP's nbd-server-start: the legacy union */
		if (qmp_arg_obj(&sub, "data", false, &data) < 0)
			return qmp_error(call, sub.cls, "%s", sub.desc);
		if (!data && !json_object_object_get_ex(addr, "path", NULL) &&
		    !json_object_object_get_ex(addr, "host", NULL))
			return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'addr.data' is missing");
		if (data) {
			sub.args = data;
			what = "addr.data";
		}
	}
	if (strcmp(type, "unix") && strcmp(type, "inet"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Socket address type '%s' is not supported by vstord", type);
	if (!strcmp(type, "unix")) {
		if (!member_str(call, &sub, what, "path", &path))
			return -1;
		if (refuse_addresses)
			return qmp_error(call, QMP_ERR_GENERIC, "Failed to listen on '%s': refused",
					 path);
		fds[0] = vs_daemon_listen_unix(path, &err);
		if (fds[0] < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
		return 1;
	}
	if (!member_str(call, &sub, what, "host", &host) ||
	    !member_str(call, &sub, what, "port", &port))
		return -1;
	if (refuse_addresses)
		return qmp_error(call, QMP_ERR_GENERIC, "Failed to listen on '%s:%s': refused",
				 host, port);
	n = vs_daemon_listen_tcp(host[0] ? host : NULL, port, fds, max, &err);
	if (n < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	return n;
}

static int cmd_nbd_server_start(struct qmp_call *call)
{
	struct vs_nbd_server_opts opts = { .persistent = true };
	json_object *addr;
	const char *creds = NULL;
	uint64_t max_conn = 0;
	int fds[NBD_MAX_LISTENERS], n, ret;

	if (qmp_arg_obj(call, "addr", true, &addr) < 0 ||
	    qmp_arg_str(call, "tls-creds", false, &creds) < 0 ||
	    qmp_arg_uint(call, "max-connections", false, &max_conn) < 0)
		return -1;
	if (nbd)
		return qmp_error(call, QMP_ERR_GENERIC, "NBD server already running");
	if (creds) {
		opts.tls = vd_object_tls(call, creds);
		if (!opts.tls)
			return -1;
		opts.tls_mode = VS_NBD_TLS_REQUIRE; /* as QEMU: credentials mean TLS only */
	}
	if (json_object_object_get_ex(call->args, "tls-authz", NULL))
		return qmp_error(call, QMP_ERR_GENERIC, "tls-authz is not supported by vstord");
	if (max_conn > UINT32_MAX)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'max-connections' expects uint32");
	opts.max_connections = (unsigned)max_conn;
	n = listen_addr(call, addr, false, fds, NBD_MAX_LISTENERS);
	if (n < 0)
		return -1;
	ret = vs_nbd_server_new(&nbd, &opts);
	if (ret == 0 && vd_reactor_count() > 1) {
		/* A part on each I/O reactor; the buffer bound is split between them. */
		struct vs_nbd_server_opts sopts = opts;

		nbd_shards = calloc(vd_reactor_count(), sizeof(*nbd_shards));
		if (!nbd_shards)
			ret = -ENOMEM;
		if (sopts.max_buffered)
			sopts.max_buffered /= vd_reactor_count();
		for (unsigned i = 0; ret == 0 && i < vd_reactor_count(); i++) {
			struct shard_op op = { .opts = &sopts };

			if (vd_reactor_run_on((int)i, shard_new, &op) < 0)
				op.ret = -ESHUTDOWN;
			ret = op.ret;
			if (ret == 0)
				nbd_shards[nbd_nshards++] = op.srv;
		}
	}
	for (int i = 0; i < n; i++) {
		if (ret == 0)
			ret = vs_nbd_server_add_listener(nbd, fds[i]);
		else
			close(fds[i]);
	}
	if (ret < 0) {
		if (nbd)
			nbd_server_close();
		return qmp_error(call, QMP_ERR_GENERIC, "%s", strerror(-ret));
	}
	nbd_tls_creds = creds ? strdup(creds) : NULL;
	vd_state_add(VD_STATE_NBD_SERVER, "", call->args);
	return 0;
}
QMP_COMMAND(nbd_server_start, "nbd-server-start", cmd_nbd_server_start,
	    .params = QMP_PARAMS("addr", "tls-creds", "tls-authz", "max-connections"))

static void export_delete(struct vd_export *e);

static int cmd_nbd_server_stop(struct qmp_call *call)
{
	if (!nbd)
		return qmp_error(call, QMP_ERR_GENERIC, "NBD server not running");
	/* As QEMU: the server's exports go with it. */
	for (struct vd_export *e = exports, *next; e; e = next) {
		next = e->next;
		if (e->type == VD_EXPORT_NBD) {
			vd_state_remove(VD_STATE_EXPORT, e->id);
			export_delete(e);
		}
	}
	nbd_server_close();
	free(nbd_tls_creds);
	nbd_tls_creds = NULL;
	vd_state_remove(VD_STATE_NBD_SERVER, "");
	return 0;
}
QMP_COMMAND(nbd_server_stop, "nbd-server-stop", cmd_nbd_server_stop, .params = QMP_PARAMS(NULL))

/* ---- block-export-add ---- */

static const char *const common_params[] = {
	"type", "id", "node-name", "writable", "writethrough", "iothread", "fixed-iothread", NULL
};
static const char *const error_params[] = { VD_EXPORT_ERROR_PARAMS, NULL }; /* vstor's */
static const char *const nbd_params[] = {
	"name", "description", "bitmaps", "allocation-depth", "x-multi-reactor", NULL
};
static const char *const vhost_params[] = { "addr", "logical-block-size", "num-queues",
					    "x-multi-reactor", NULL };

static bool in_list(const char *const *list, const char *name)
{
	for (; *list; list++)
		if (!strcmp(*list, name))
			return true;
	return false;
}

/*
 * block-export-add's "bitmaps" (QEMU's BlockDirtyBitmapOrStr list): a name
 * of a bitmap of the exported node, or {node, name}. Checked as qsd does;
 * the names go to *@names (borrowed from the arguments). vstord serves the
 * bitmaps of the exported node only. 0, or -1 after qmp_error().
 */
static int nbd_bitmaps(struct qmp_call *call, struct vd_node *n, bool writable, const char **names,
		       unsigned *nb)
{
	json_object *list, *v, *jn, *jname;
	struct vs_dirty_bitmap_info info;
	size_t len;

	*nb = 0;
	if (!json_object_object_get_ex(call->args, "bitmaps", &list))
		return 0;
	if (!json_object_is_type(list, json_type_array))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Invalid parameter type for 'bitmaps', expected: array");
	len = json_object_array_length(list);
	/* Every element's shape first, as QAPI checks the whole argument. */
	for (size_t i = 0; i < len; i++) {
		v = json_object_array_get_idx(list, i);
		if (json_object_is_type(v, json_type_string))
			continue;
		if (!json_object_is_type(v, json_type_object))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Invalid parameter type for 'null', expected: "
					 "BlockDirtyBitmapOrStr");
		if (!json_object_object_get_ex(v, "node", &jn))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'bitmaps[%zu].node' is missing", i);
		if (!json_object_object_get_ex(v, "name", &jname))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'bitmaps[%zu].name' is missing", i);
		if (!json_object_is_type(jn, json_type_string))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Invalid parameter type for 'bitmaps[%zu].node', "
					 "expected: string",
					 i);
		if (!json_object_is_type(jname, json_type_string))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Invalid parameter type for 'bitmaps[%zu].name', "
					 "expected: string",
					 i);
		json_object_object_foreach(v, key, val)
		{
			(void)val;
			if (strcmp(key, "node") && strcmp(key, "name"))
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Parameter 'bitmaps[%zu].%s' is unexpected", i,
						 key);
		}
	}
	if (len > VS_NBD_MAX_BITMAPS)
		return qmp_error(call, QMP_ERR_GENERIC, "Too many bitmaps (at most %d)",
				 VS_NBD_MAX_BITMAPS);
	for (size_t i = 0; i < len; i++) {
		const char *name;

		v = json_object_array_get_idx(list, i);
		if (json_object_is_type(v, json_type_string)) {
			name = json_object_get_string(v);
			if (!vd_bitmap_find(n->node, name, &info))
				return qmp_error(call, QMP_ERR_GENERIC, "Bitmap '%s' is not found",
						 name);
		} else {
			struct vd_node *bn;

			json_object_object_get_ex(v, "node", &jn);
			json_object_object_get_ex(v, "name", &jname);
			name = json_object_get_string(jname);
			bn = vd_node_find(json_object_get_string(jn));
			if (!bn)
				return qmp_error(call, QMP_ERR_GENERIC, "Node '%s' not found",
						 json_object_get_string(jn));
			if (!vd_bitmap_find(bn->node, name, &info))
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Dirty bitmap '%s' not found", name);
			if (bn != n)
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Exporting a bitmap of another node than the "
						 "exported one is not supported yet by vstord");
		}
		if (vd_bitmap_busy(n->node, name))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap '%s' is currently in use by another operation and "
					 "cannot be used",
					 name);
		if (info.inconsistent)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap '%s' is inconsistent and cannot be used", name);
		if (!writable && !vs_node_is_read_only(n->node) && info.recording)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Enabled bitmap '%s' incompatible with readonly export",
					 name);
		for (unsigned j = 0; j < *nb; j++)
			if (!strcmp(names[j], name))
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Bitmap '%s' is given twice", name);
		names[(*nb)++] = name;
	}
	return 0;
}

static int add_nbd(struct qmp_call *call, struct vd_export *e, struct vd_node *n, bool writable,
		   bool writethrough)
{
	struct vs_error err = { 0 };
	const char *name = e->node_name, *desc = NULL;
	const char *bitmaps[VS_NBD_MAX_BITMAPS];
	unsigned nb_bitmaps = 0;
	bool depth = false;

	if (qmp_arg_str(call, "name", false, &name) < 0 ||
	    qmp_arg_str(call, "description", false, &desc) < 0 ||
	    qmp_arg_bool(call, "allocation-depth", false, &depth) < 0 ||
	    qmp_arg_bool(call, "x-multi-reactor", false, &e->multi_reactor) < 0)
		return -1;
	if (!nbd)
		return qmp_error(call, QMP_ERR_GENERIC, "NBD server not running");
	if (strlen(name) > 4096)
		return qmp_error(call, QMP_ERR_GENERIC, "export name '%s' too long", name);
	if (desc && strlen(desc) > 4096)
		return qmp_error(call, QMP_ERR_GENERIC, "description '%s' too long", desc);
	if (vs_nbd_server_get_export(nbd, name))
		return qmp_error(call, QMP_ERR_GENERIC, "NBD server already has export named '%s'",
				 name);
	if (nbd_bitmaps(call, n, writable, bitmaps, &nb_bitmaps) < 0)
		return -1;
	e->nbd_name = strdup(name);
	if (!e->nbd_name)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	if (vs_nbd_server_add_export(nbd,
				     &(struct vs_nbd_export_opts){
					     .name = name,
					     .description = desc,
					     .node = e->node,
					     .read_only = !writable,
					     .wce = !writethrough,
					     .discard = n->discard,
					     .detect_zeroes = n->detect_zeroes,
					     .bitmaps = bitmaps,
					     .nb_bitmaps = nb_bitmaps,
					     .bitmap_status = vd_bitmap_status,
					     .bitmap_opaque = e->node,
				     },
				     &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	if (writethrough)
		vs_export_set_writethrough(vs_nbd_server_get_export(nbd, name), true);
	if (nbd_nshards && e->reactor >= 0) {
		vs_nbd_server_set_export_shard(nbd, name, nbd_shards[e->reactor]);
		/* Its node stays home; the other reactors take connections in turn. */
		for (unsigned k = 1; e->multi_reactor && k < nbd_nshards; k++)
			vs_nbd_server_add_export_shard(
				nbd, name, nbd_shards[((unsigned)e->reactor + k) % nbd_nshards]);
	}
	/* Busy while the export lives: export_free lets them go. */
	e->bitmaps = nb_bitmaps ? calloc(nb_bitmaps, sizeof(*e->bitmaps)) : NULL;
	for (unsigned i = 0; e->bitmaps && i < nb_bitmaps; i++) {
		e->bitmaps[i] = strdup(bitmaps[i]);
		if (!e->bitmaps[i] || vd_bitmap_busy_get(e->node, bitmaps[i]) < 0) {
			free(e->bitmaps[i]);
			break;
		}
		e->nb_bitmaps++;
	}
	return 0;
}

static void vhost_start(struct on_export *o)
{
	int fd = (int)o->u;

	o->ret = vs_vhost_blk_new(&o->e->vhost, o->p);
	if (o->ret == 0)
		o->ret = vs_vhost_blk_add_listener(o->e->vhost, fd);
	else
		close(fd);
}

static void vhost_stop(struct on_export *o)
{
	vs_vhost_blk_shutdown(o->e->vhost);
	vs_vhost_blk_free(o->e->vhost);
}

static int add_vhost(struct qmp_call *call, struct vd_export *e, struct vd_node *n, bool writable,
		     bool writethrough)
{
	json_object *addr, *path;
	uint64_t lbs = 512, queues = 1;
	struct vs_reactor *qr[VS_VHOST_BLK_MAX_QUEUES];
	unsigned nqr = 0;
	int fd, ret;

	if (qmp_arg_obj(call, "addr", true, &addr) < 0 ||
	    qmp_arg_uint(call, "logical-block-size", false, &lbs) < 0 ||
	    qmp_arg_uint(call, "num-queues", false, &queues) < 0 ||
	    qmp_arg_bool(call, "x-multi-reactor", false, &e->multi_reactor) < 0)
		return -1;
	if (lbs != 512)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "logical-block-size other than 512 is not supported yet");
	if (queues < 1 || queues > VS_VHOST_BLK_MAX_QUEUES)
		return qmp_error(call, QMP_ERR_GENERIC, "num-queues must be greater than 0");
	/* Queue i on reactor home + i: the node stays home, the rings spread. */
	if (e->multi_reactor && e->reactor >= 0 && vd_reactor_count() > 1) {
		unsigned nr = vd_reactor_count();

		nqr = queues < nr ? (unsigned)queues : nr;
		for (unsigned i = 0; i < nqr; i++)
			qr[i] = vd_reactor_get((int)(((unsigned)e->reactor + i) % nr));
		e->nb_queue_reactors = nqr;
	}
	if (listen_addr(call, addr, true, &fd, 1) < 0)
		return -1;
	json_object_object_get_ex(addr, "path", &path);
	e->socket_path = strdup(json_object_get_string(path));
	struct vs_vhost_blk_opts vopts = {
		.node = e->node,
		.read_only = !writable,
		.wce = !writethrough,
		.discard = n->discard == VS_EXPORT_DISCARD_UNMAP,
		.detect_zeroes = n->detect_zeroes,
		.write_zeroes = writable,
		.num_queues = (unsigned)queues,
		.quiet = true,
		.queue_reactors = nqr ? qr : NULL,
		.nb_queue_reactors = nqr,
	};
	struct on_export o = { .fn = vhost_start, .p = &vopts, .u = (uint64_t)fd };

	/* Listened on, and served, on the export's reactor. */
	run_on_export(e, &o);
	ret = o.ret;
	if (ret < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", strerror(-ret));
	return 0;
}

static void export_free(struct vd_export *e)
{
	if (e->vhost) {
		struct on_export o = { .fn = vhost_stop };

		run_on_export(e, &o);
	}
	if (e->socket_path)
		unlink(e->socket_path);
	for (unsigned i = 0; i < e->nb_bitmaps; i++) {
		vd_bitmap_busy_put(e->node, e->bitmaps[i]);
		free(e->bitmaps[i]);
	}
	free(e->bitmaps);
	if (e->homed)
		vd_node_home_put(e->node);
	if (e->node)
		vs_node_close(e->node);
	free(e->socket_path);
	free(e->nbd_name);
	free(e->node_name);
	free(e->id);
	free(e);
}

static void apply_policy(struct on_export *o)
{
	vd_export_error_apply(o->x, o->e->id, o->p);
}

static int cmd_block_export_add(struct qmp_call *call)
{
	const char *type, *id, *node_name;
	bool writable = false, writethrough = false;
	struct vs_export_error_policy policy;
	struct vd_export *e, **tail;
	struct vd_node *n;
	int ret, has_policy;

	if (qmp_arg_str(call, "type", true, &type) < 0)
		return -1;
	if (strcmp(type, "nbd") && strcmp(type, "vhost-user-blk"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'type' does not accept value '%s'", type);
	json_object_object_foreach(call->args, key, val)
	{
		(void)val;
		if (!in_list(common_params, key) && !in_list(error_params, key) &&
		    !in_list(strcmp(type, "nbd") ? vhost_params : nbd_params, key))
			return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' is unexpected",
					 key);
	}
	if (qmp_arg_str(call, "id", true, &id) < 0 ||
	    qmp_arg_str(call, "node-name", true, &node_name) < 0 ||
	    qmp_arg_bool(call, "writable", false, &writable) < 0 ||
	    qmp_arg_bool(call, "writethrough", false, &writethrough) < 0)
		return -1;
	has_policy = vd_export_error_args(call, &policy);
	if (has_policy < 0)
		return -1;
	if (json_object_object_get_ex(call->args, "iothread", NULL))
		return qmp_error(call, QMP_ERR_GENERIC, "iothread is not supported by vstord");
	if (export_find(id))
		return qmp_error(call, QMP_ERR_GENERIC, "Block export id '%s' is already in use",
				 id);
	n = vd_node_find(node_name);
	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC, "Cannot find device='' nor node-name='%s'",
				 node_name);
	if (writable && vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Cannot export read-only node as writable");
	e = calloc(1, sizeof(*e));
	if (!e)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	e->id = strdup(id);
	e->node_name = strdup(node_name);
	e->node = vs_node_ref(n->node);
	if (!e->id || !e->node_name) {
		export_free(e);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	e->type = strcmp(type, "nbd") ? VD_EXPORT_VHOST : VD_EXPORT_NBD;
	/* Its reactor: its node's, else the next one. */
	e->reactor = vd_node_home_get(e->node, VD_REACTOR_ANY);
	if (e->reactor < -1) {
		export_free(e);
		return qmp_error(call, QMP_ERR_GENERIC, "Node '%s' is used on two reactors already",
				 node_name);
	}
	e->homed = true;
	if (e->type == VD_EXPORT_NBD)
		ret = add_nbd(call, e, n, writable, writethrough);
	else
		ret = add_vhost(call, e, n, writable, writethrough);
	if (ret < 0) {
		free(e->nbd_name); /* not added: nothing to remove from the server */
		e->nbd_name = NULL;
		export_free(e);
		return -1;
	}
	if (has_policy && layer_export(e)) {
		/* Its requests read the policy: set it where they run. */
		struct on_export o = { .fn = apply_policy, .p = &policy };

		run_on_export(e, &o);
		e->error_policy = true;
	}
	for (tail = &exports; *tail; tail = &(*tail)->next)
		;
	*tail = e;
	vd_state_add(VD_STATE_EXPORT, id, call->args);
	return 0;
}
QMP_COMMAND(block_export_add, "block-export-add", cmd_block_export_add, .params = NULL)

/* ---- block-export-del ---- */

static void release_held(struct on_export *o)
{
	vd_export_error_release(o->x);
	vs_export_set_throttle(o->x, NULL);
}

/* Unlink, disconnect, free and announce @e. */
static void export_delete(struct vd_export *e)
{
	json_object *data = json_object_new_object();
	struct vd_export **pp;

	for (pp = &exports; *pp != e; pp = &(*pp)->next)
		;
	*pp = e->next;
	e->shutting_down = true;
	if (layer_export(e)) { /* held and throttled requests go now */
		struct on_export o = { .fn = release_held };

		run_on_export(e, &o);
	}
	if (e->type == VD_EXPORT_NBD && nbd)
		vs_nbd_server_remove_export(nbd, e->nbd_name, NULL);
	json_object_object_add(data, "id", json_object_new_string(e->id));
	export_free(e);
	monitor_emit_event("BLOCK_EXPORT_DELETED", data);
	json_object_put(data);
}

static void drain_begin(struct on_export *o)
{
	vs_export_drain_begin(o->x);
}

static void drain_end(struct on_export *o)
{
	if (o->p)
		vs_export_set_node(o->x, o->p);
	vs_export_drain_end(o->x);
}

void vd_exports_drain_all_begin(void)
{
	for (struct vd_export *e = exports; e; e = e->next) {
		struct on_export o = { .fn = drain_begin };

		if (layer_export(e))
			run_on_export(e, &o);
	}
}

void vd_exports_drain_all_end(void)
{
	for (struct vd_export *e = exports; e; e = e->next) {
		struct on_export o = { .fn = drain_end };

		if (layer_export(e))
			run_on_export(e, &o);
	}
}

void vd_exports_drain_begin(struct vs_node *node)
{
	for (struct vd_export *e = exports; e; e = e->next) {
		struct on_export o = { .fn = drain_begin };

		if (e->node == node && layer_export(e))
			run_on_export(e, &o);
	}
}

void vd_exports_drain_end(struct vs_node *node, struct vs_node *new_node)
{
	for (struct vd_export *e = exports; e; e = e->next) {
		struct on_export o = { .fn = drain_end, .p = new_node };

		if (e->node != node || !layer_export(e))
			continue;
		if (new_node) {
			/* The export's reference, and its home, move to the new node. */
			if (e->homed)
				vd_node_home_put(node);
			e->homed = vd_node_home_get(new_node, e->reactor) >= -1;
			e->node = vs_node_ref(new_node);
			vs_node_close(node);
		}
		run_on_export(e, &o);
	}
}

void vd_export_for_each(void (*fn)(const struct vd_export_view *v, void *opaque), void *opaque)
{
	for (struct vd_export *e = exports, *next; e; e = next) {
		struct vd_export_view v = { e->id, e->node_name, layer_export(e), e->reactor };

		next = e->next;
		fn(&v, opaque);
	}
}

struct vs_node *vd_export_node(const char *id)
{
	struct vd_export *e = export_find(id);

	return e ? e->node : NULL;
}

void vd_export_set_node_name(const char *id, const char *node_name)
{
	struct vd_export *e = export_find(id);
	char *copy = strdup(node_name);

	if (!e || !copy) {
		free(copy);
		return;
	}
	free(e->node_name);
	e->node_name = copy;
}

bool vd_export_uses_object(const char *id)
{
	return nbd && nbd_tls_creds && !strcmp(nbd_tls_creds, id);
}

bool vd_export_uses(const struct vs_node *node)
{
	for (struct vd_export *e = exports; e; e = e->next)
		if (e->node == node)
			return true;
	return false;
}

static void vhost_connected(struct on_export *o)
{
	o->ret = vs_vhost_blk_connected(o->e->vhost);
}

static bool export_in_use(struct vd_export *e)
{
	struct on_export o = { .fn = vhost_connected };
	struct shard_op op = { .name = e->nbd_name };

	if (e->type == VD_EXPORT_VHOST) {
		run_on_export(e, &o);
		return o.ret > 0;
	}
	if (!nbd)
		return false;
	if (vs_nbd_server_export_clients(nbd, e->nbd_name) > 0)
		return true;
	if (!nbd_nshards || e->reactor < 0)
		return false;
	/* Its clients may be spread over every shard. */
	for (unsigned i = 0; i < nbd_nshards; i++) {
		op.srv = nbd_shards[i];
		if (vd_reactor_run_on((int)i, shard_clients, &op) == 0 && op.ret > 0)
			return true;
	}
	return false;
}

static int cmd_block_export_del(struct qmp_call *call)
{
	const char *id, *mode = "safe";
	struct vd_export *e;

	if (qmp_arg_str(call, "id", true, &id) < 0 || qmp_arg_str(call, "mode", false, &mode) < 0)
		return -1;
	if (strcmp(mode, "safe") && strcmp(mode, "hard"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'mode' does not accept value '%s'", mode);
	e = export_find(id);
	if (!e)
		return qmp_error(call, QMP_ERR_GENERIC, "Export '%s' is not found", id);
	if (e->shutting_down)
		return qmp_error(call, QMP_ERR_GENERIC, "Export '%s' is already shutting down", id);
	if (!strcmp(mode, "safe") && export_in_use(e))
		return qmp_error(call, QMP_ERR_GENERIC, "export '%s' still in use", id);
	vd_state_remove(VD_STATE_EXPORT, id);
	export_delete(e);
	return 0;
}
QMP_COMMAND(block_export_del, "block-export-del", cmd_block_export_del,
	    .params = QMP_PARAMS("id", "mode"))

void vd_export_close_all(void)
{
	while (exports)
		export_delete(exports);
	if (nbd)
		nbd_server_close();
	free(nbd_tls_creds);
	nbd_tls_creds = NULL;
}

/* ---- query-block-exports ---- */

static void get_stopped(struct on_export *o)
{
	o->u = vs_export_is_stopped(o->x);
}

static void get_port_stats(struct on_export *o)
{
	o->ret = vs_export_get_port_stats(o->x, o->p) ? 1 : 0;
}

/*
 * vstor's: what the export's requests on other reactors than its home did
 * (x-multi-reactor): straight to the file, or at home; and the windows of
 * mapped bytes the home made for them.
 */
static void add_port_stats(json_object *o, struct vd_export *e)
{
	struct vs_export_port_stats st;
	struct on_export op = { .fn = get_port_stats, .p = &st };
	json_object *d;

	run_on_export(e, &op);
	if (op.ret != 1)
		return;
	d = json_object_new_object();
	json_object_object_add(d, "direct", json_object_new_int64((int64_t)st.direct));
	json_object_object_add(d, "home", json_object_new_int64((int64_t)st.home));
	json_object_object_add(d, "windows", json_object_new_int64((int64_t)st.windows));
	json_object_object_add(o, "x-direct-path", d);
}

/* vstor's: an NBD export's clients on each reactor (x-multi-reactor spreads them). */
static json_object *clients_per_reactor(const struct vd_export *e)
{
	json_object *a = json_object_new_array();

	for (unsigned i = 0; i < nbd_nshards; i++) {
		struct shard_op op = { .srv = nbd_shards[i], .name = e->nbd_name };

		if (vd_reactor_run_on((int)i, shard_clients, &op) < 0)
			op.ret = 0;
		json_object_array_add(a, json_object_new_int(op.ret));
	}
	return a;
}

/* Newest first, as QEMU lists them. */
static void list_exports(json_object *arr, struct vd_export *e)
{
	const char *nn;
	json_object *o;

	if (!e)
		return;
	list_exports(arr, e->next);
	o = json_object_new_object();
	json_object_object_add(o, "type",
			       json_object_new_string(e->type == VD_EXPORT_NBD ? "nbd" :
										 "vhost-user-blk"));
	json_object_object_add(o, "id", json_object_new_string(e->id));
	/* The node the export serves now (a snapshot or a pivot moves it), as qsd reports it. */
	nn = e->node ? vd_node_name_of(e->node) : NULL;
	json_object_object_add(o, "node-name", json_object_new_string(nn ? nn : e->node_name));
	json_object_object_add(o, "shutting-down", json_object_new_boolean(e->shutting_down));
	/* vstor's: the I/O reactor its requests run on (-1: main), with --reactors N > 1. */
	if (vd_reactor_count() > 1) {
		json_object_object_add(o, "x-reactor", json_object_new_int(e->reactor));
		if (e->type == VD_EXPORT_NBD && e->multi_reactor && nbd_nshards && e->reactor >= 0)
			json_object_object_add(o, "x-clients-per-reactor", clients_per_reactor(e));
		if (e->type == VD_EXPORT_VHOST && e->nb_queue_reactors) {
			/* vstor's: the reactor each of its queues runs on (x-multi-reactor). */
			json_object *a = json_object_new_array();

			for (unsigned i = 0; i < e->nb_queue_reactors; i++)
				json_object_array_add(
					a, json_object_new_int((int)(((unsigned)e->reactor + i) %
								     vd_reactor_count())));
			json_object_object_add(o, "x-queue-reactors", a);
		}
		if (e->multi_reactor && layer_export(e))
			add_port_stats(o, e);
	}
	if (e->error_policy && layer_export(e)) {
		/* vstor's: an error stopped it (cont resumes); read where its requests run. */
		struct on_export st = { .fn = get_stopped };

		run_on_export(e, &st);
		json_object_object_add(o, "x-vstor-stopped", json_object_new_boolean(st.u));
	}
	json_object_array_add(arr, o);
}

static int cmd_query_block_exports(struct qmp_call *call)
{
	call->ret = json_object_new_array();
	list_exports(call->ret, exports);
	return 0;
}
QMP_COMMAND(query_block_exports, "query-block-exports", cmd_query_block_exports,
	    .params = QMP_PARAMS(NULL))

/* ---- query-blockstats ---- */

struct stats_sum {
	struct vs_export_stats st;
	bool exported;
};

static void get_stats(struct on_export *o)
{
	vs_export_get_stats(o->x, o->p);
}

static void sum_stats(struct stats_sum *sum, const struct vs_node *node)
{
	for (struct vd_export *e = exports; e; e = e->next) {
		struct vs_export_stats st;
		struct on_export o = { .fn = get_stats, .p = &st };

		if (e->node != node || !layer_export(e))
			continue;
		/* Counted where its requests run. */
		run_on_export(e, &o);
		if (o.ret < 0)
			continue;
		sum->exported = true;
		for (int op = 0; op < VS_EXPORT_OP_COUNT; op++) {
			sum->st.op[op].ops += st.op[op].ops;
			sum->st.op[op].bytes += st.op[op].bytes;
			sum->st.op[op].errors += st.op[op].errors;
			for (int b = 0; b < VS_EXPORT_LATENCY_BUCKETS; b++)
				sum->st.op[op].latency_us[b] += st.op[op].latency_us[b];
		}
	}
}

static void add_int(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

/* Nanoseconds spent, from the histogram (each request at its bucket's lower bound). */
static uint64_t total_ns(const struct vs_export_op_stats *s)
{
	uint64_t ns = 0;

	for (int b = 0; b < VS_EXPORT_LATENCY_BUCKETS; b++)
		ns += s->latency_us[b] * ((b ? 1ull << b : 0) * 1000);
	return ns;
}

static json_object *stats_object(const struct vs_export_stats *st)
{
	const struct vs_export_op_stats *rd = &st->op[VS_EXPORT_OP_READ],
					*wr = &st->op[VS_EXPORT_OP_WRITE],
					*fl = &st->op[VS_EXPORT_OP_FLUSH],
					*un = &st->op[VS_EXPORT_OP_DISCARD],
					*wz = &st->op[VS_EXPORT_OP_WRITE_ZEROES];
	json_object *o = json_object_new_object(), *hist = json_object_new_object();

	add_int(o, "rd_bytes", rd->bytes);
	add_int(o, "wr_bytes", wr->bytes + wz->bytes);
	add_int(o, "zone_append_bytes", 0);
	add_int(o, "unmap_bytes", un->bytes);
	add_int(o, "rd_operations", rd->ops);
	add_int(o, "wr_operations", wr->ops + wz->ops);
	add_int(o, "zone_append_operations", 0);
	add_int(o, "flush_operations", fl->ops);
	add_int(o, "unmap_operations", un->ops);
	add_int(o, "rd_total_time_ns", total_ns(rd));
	add_int(o, "wr_total_time_ns", total_ns(wr) + total_ns(wz));
	add_int(o, "zone_append_total_time_ns", 0);
	add_int(o, "flush_total_time_ns", total_ns(fl));
	add_int(o, "unmap_total_time_ns", total_ns(un));
	add_int(o, "wr_highest_offset", 0);
	add_int(o, "rd_merged", 0);
	add_int(o, "wr_merged", 0);
	add_int(o, "zone_append_merged", 0);
	add_int(o, "unmap_merged", 0);
	add_int(o, "failed_rd_operations", rd->errors);
	add_int(o, "failed_wr_operations", wr->errors + wz->errors);
	add_int(o, "failed_zone_append_operations", 0);
	add_int(o, "failed_flush_operations", fl->errors);
	add_int(o, "failed_unmap_operations", un->errors);
	add_int(o, "invalid_rd_operations", 0);
	add_int(o, "invalid_wr_operations", 0);
	add_int(o, "invalid_zone_append_operations", 0);
	add_int(o, "invalid_flush_operations", 0);
	add_int(o, "invalid_unmap_operations", 0);
	json_object_object_add(o, "account_invalid", json_object_new_boolean(true));
	json_object_object_add(o, "account_failed", json_object_new_boolean(true));
	json_object_object_add(o, "timed_stats", json_object_new_array());
	/* vstor's own: per operation, requests per latency bucket [2^i, 2^(i+1)) µs. */
	for (int op = 0; op < VS_EXPORT_OP_COUNT; op++) {
		json_object *arr = json_object_new_array();

		for (int b = 0; b < VS_EXPORT_LATENCY_BUCKETS; b++)
			json_object_array_add(
				arr, json_object_new_int64((int64_t)st->op[op].latency_us[b]));
		json_object_object_add(hist, vs_export_op_name(op), arr);
	}
	json_object_object_add(o, "x-vstor-latency-histogram-us", hist);
	return o;
}

static void add_blockstats(struct vd_node *n, void *opaque)
{
	struct stats_sum sum = { 0 };
	json_object *o = json_object_new_object();

	sum_stats(&sum, n->node);
	/* QEMU names a device only for a BlockBackend of a drive; qsd has none. */
	json_object_object_add(o, "device", json_object_new_string(""));
	json_object_object_add(o, "node-name", json_object_new_string(n->name));
	json_object_object_add(o, "stats", stats_object(&sum.st));
	json_object_array_add(opaque, o);
}

static int cmd_query_blockstats(struct qmp_call *call)
{
	bool query_nodes = false;

	if (qmp_arg_bool(call, "query-nodes", false, &query_nodes) < 0)
		return -1;
	call->ret = json_object_new_array();
	vd_node_for_each(add_blockstats, call->ret);
	return 0;
}
QMP_COMMAND(query_blockstats, "query-blockstats", cmd_query_blockstats,
	    .params = QMP_PARAMS("query-nodes"))

/* ---- block_resize ---- */

static void export_resized(struct on_export *o)
{
	vs_export_resize(o->x, o->u);
	if (o->e->type == VD_EXPORT_VHOST)
		vs_vhost_blk_config_changed(o->e->vhost);
}

static int cmd_block_resize(struct qmp_call *call)
{
	const char *device = NULL, *node_name = NULL;
	struct vs_error err = { 0 };
	struct vd_node *n;
	int64_t size;

	if (qmp_arg_str(call, "device", false, &device) < 0 ||
	    qmp_arg_str(call, "node-name", false, &node_name) < 0 ||
	    qmp_arg_int(call, "size", true, &size) < 0)
		return -1;
	/* QEMU's device names a drive's BlockBackend: vstord, as qsd, has none. */
	n = node_name ? vd_node_find(node_name) : NULL;
	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Cannot find device='%s' nor node-name='%s'", device ? device : "",
				 node_name ? node_name : "");
	if (size < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'size' expects a >0 size");
	/* A job's copy and its bitmaps cover the size it started with. */
	if (vd_job_check_node_free(call, n->node, node_name) < 0)
		return -1;
	if (vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Block node is read-only");
	if (vs_node_truncate(n->node, (uint64_t)size, VS_PREALLOC_OFF, false, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	/*
	 * Range checks follow; new NBD connections see the new size; a
	 * vhost-user-blk front end is told that the capacity changed.
	 */
	for (struct vd_export *e = exports; e; e = e->next) {
		struct on_export o = { .fn = export_resized, .u = vs_node_size(n->node) };

		if (e->node == n->node && layer_export(e))
			run_on_export(e, &o);
	}
	return 0;
}
QMP_COMMAND(block_resize, "block_resize", cmd_block_resize,
	    .params = QMP_PARAMS("device", "node-name", "size"))
