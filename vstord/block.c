/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block graph of vstord and its commands: blockdev-add, blockdev-del,
 * query-named-block-nodes. Arguments, names and messages are
 * qemu-storage-daemon's (QEMU's qapi/block-core.json BlockdevOptions), for
 * the drivers vstor has: file, raw, qcow2, nbd, rbd (with librbd), and
 * vstor's own vol (a volume of a storage pool).
 */
#include "block.h"
#include "fleece.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "block-info.h"
#include "export.h"
#include "job.h"
#include "reactors.h"
#include "secret.h"
#include "state.h"

static struct vd_node *nodes, **nodes_tail = &nodes;

/* Automatic names of the nodes the graph holds without a name ("#blockN"). */
struct auto_name {
	struct auto_name *next;
	const struct vs_node *node;
	char name[24];
};
static struct auto_name *auto_names;
static unsigned auto_counter;

struct vd_node *vd_node_find(const char *name)
{
	for (struct vd_node *n = nodes; n; n = n->next)
		if (!strcmp(n->name, name))
			return n;
	return NULL;
}

struct vd_node *vd_node_lookup(struct qmp_call *call, const char *name)
{
	struct vd_node *n = vd_node_find(name);

	if (!n)
		qmp_error(call, QMP_ERR_GENERIC, "Cannot find device='%s' nor node-name='%s'", name,
			  name);
	return n;
}

void vd_node_for_each(void (*fn)(struct vd_node *n, void *opaque), void *opaque)
{
	for (struct vd_node *n = nodes, *next; n; n = next) {
		next = n->next;
		fn(n, opaque);
	}
}

static struct vd_node *find_by_ptr(const struct vs_node *node)
{
	for (struct vd_node *n = nodes; n; n = n->next)
		if (n->node == node)
			return n;
	return NULL;
}

const char *vd_node_name_of(struct vs_node *node)
{
	struct vd_node *n = find_by_ptr(node);
	struct auto_name *a;

	if (n)
		return n->name;
	for (a = auto_names; a; a = a->next)
		if (a->node == node)
			return a->name;
	a = calloc(1, sizeof(*a));
	if (!a)
		return "";
	a->node = node;
	snprintf(a->name, sizeof(a->name), "#block%u", auto_counter++);
	a->next = auto_names;
	auto_names = a;
	return a->name;
}

/* Whether @node is @top or in the graph below it (file children, backing chains). */
static bool reaches(const struct vs_node *top, const struct vs_node *node)
{
	for (const struct vs_node *n = top; n; n = vs_node_backing(n)) {
		if (n == node)
			return true;
		for (const struct vs_node *f = vs_node_file(n); f; f = vs_node_file(f))
			if (f == node)
				return true;
	}
	return false;
}

/* Forget automatic names of nodes no named node reaches any more. */
static void prune_auto_names(void)
{
	for (struct auto_name **p = &auto_names; *p;) {
		bool live = false;

		for (struct vd_node *n = nodes; n && !live; n = n->next)
			live = reaches(n->node, (*p)->node);
		if (live) {
			p = &(*p)->next;
		} else {
			struct auto_name *dead = *p;

			*p = dead->next;
			free(dead);
		}
	}
}

/* ---- blockdev-add ---- */

static const char *const common_params[] = {
	"driver",	  "node-name",	 "discard",	  "cache", "read-only",
	"auto-read-only", "force-share", "detect-zeroes", NULL,
};

static const char *const file_params[] = { "filename",	    "aio",	  "locking",
					   "aio-max-batch", "drop-cache", "x-check-cache-dropped",
					   "pr-manager",    NULL };
static const char *const raw_params[] = { "file", "offset", "size", NULL };
static const char *const qcow2_params[] = {
	"file",
	"backing",
	"lazy-refcounts",
	"pass-discard-request",
	"pass-discard-snapshot",
	"pass-discard-other",
	"discard-no-unref",
	"overlap-check",
	"cache-size",
	"l2-cache-size",
	"l2-cache-entry-size",
	"refcount-cache-size",
	"cache-clean-interval",
	"encrypt", /* {"format": "luks"|"aes", "key-secret": ID} */
	NULL,
};
static const char *const luks_params[] = { "file", "key-secret", NULL };
static const char *const nbd_params[] = {
	"server", "export", "tls-creds", "tls-hostname", "reconnect-delay", "open-timeout", NULL
};
static const char *const vol_params[] = { "pool", "volume", NULL };
static const char *const cbw_params[] = { "file",	  "target",	 "bitmap",
					  "on-cbw-error", "cbw-timeout", NULL };
static const char *const access_params[] = { "file", NULL };
static const char *const rbd_params[] = { "pool", "namespace",	"image",  "conf", "snapshot",
					  "user", "key-secret", "server", NULL };

struct driver_desc {
	const char *name;
	const char *const *params;
};

static const struct driver_desc drivers[] = {
	{ "file", file_params },
	{ "raw", raw_params },
	{ "qcow2", qcow2_params },
	{ "nbd", nbd_params },
	{ "vol", vol_params },
	{ "rbd", rbd_params },
	{ "luks", luks_params },
	/* fleece.c */
	{ "copy-before-write", cbw_params },
	{ "snapshot-access", access_params },
};

static bool in_list(const char *const *list, const char *name)
{
	for (; *list; list++)
		if (!strcmp(*list, name))
			return true;
	return false;
}

/* Options every node takes, read from @call->args. */
struct node_opts {
	const char *node_name;
	bool read_only, force_share, direct, no_flush;
	enum vs_export_discard discard;
	enum vs_export_detect_zeroes detect_zeroes;
};

static int read_common(struct qmp_call *call, struct node_opts *o, const struct node_opts *parent)
{
	json_object *cache = NULL;
	const char *s;
	bool auto_ro = false;

	if (parent) /* a child inherits what its parent was given */
		*o = *parent;
	else
		memset(o, 0, sizeof(*o));
	o->node_name = NULL;
	if (qmp_arg_str(call, "node-name", false, &o->node_name) < 0 ||
	    qmp_arg_bool(call, "read-only", false, &o->read_only) < 0 ||
	    qmp_arg_bool(call, "auto-read-only", false, &auto_ro) < 0 ||
	    qmp_arg_bool(call, "force-share", false, &o->force_share) < 0 ||
	    qmp_arg_obj(call, "cache", false, &cache) < 0)
		return -1;
	if (cache) {
		struct qmp_call sub = { .session = call->session,
					.args = cache,
					.keyval = call->keyval };

		json_object_object_foreach(cache, key, val)
		{
			bool *dst = !strcmp(key, "direct")   ? &o->direct :
				    !strcmp(key, "no-flush") ? &o->no_flush :
							       NULL;

			(void)val;
			if (!dst)
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Parameter 'cache.%s' is unexpected", key);
			if (qmp_arg_bool(&sub, key, false, dst) < 0)
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Invalid parameter type for 'cache.%s', "
						 "expected: boolean",
						 key);
		}
	}
	if (o->direct && o->no_flush)
		return qmp_error(
			call, QMP_ERR_GENERIC,
			"cache.direct=on together with cache.no-flush=on is not supported");
	if (qmp_arg_str(call, "discard", false, &s) > 0 && vs_export_discard_parse(s, &o->discard))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'discard' does not accept value '%s'", s);
	if (qmp_arg_str(call, "detect-zeroes", false, &s) > 0 &&
	    vs_export_detect_zeroes_parse(s, &o->detect_zeroes))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'detect-zeroes' does not accept value '%s'", s);
	if (o->force_share && !o->read_only)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "force-share=on can only be used with read-only images");
	return 0;
}

static enum vs_cache_mode cache_mode(const struct node_opts *o)
{
	if (o->direct)
		return VS_CACHE_NONE;
	return o->no_flush ? VS_CACHE_UNSAFE : VS_CACHE_WRITEBACK;
}

/* The error of a failed open, as QEMU words it for a file. */
static int open_error(struct qmp_call *call, const struct vs_error *err)
{
	return qmp_error(call, QMP_ERR_GENERIC, "%s", err->msg);
}

/* Write ":@key=@v" (@key NULL: @v alone) to @f, '\\'-escaping rbd: separators. */
static void rbd_put(FILE *f, const char *key, const char *v)
{
	if (key)
		fprintf(f, ":%s=", key);
	for (; *v; v++) {
		if (strchr(":@/\\", *v))
			fputc('\\', f);
		fputc(*v, f);
	}
}

/*
 * QEMU's BlockdevOptionsRbd as an rbd: name (libstore/driver-rbd.h):
 * rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:id=USER][:conf=F][:key-secret=ID]
 * [:mon_host=H1\:P1\;H2\:P2].
 */
static int rbd_uri(struct qmp_call *call, char **uri)
{
	const char *pool, *image, *s;
	json_object *servers = NULL;
	size_t len = 0;
	FILE *f;

	*uri = NULL;
	if (qmp_arg_str(call, "pool", true, &pool) < 0 ||
	    qmp_arg_str(call, "image", true, &image) < 0 ||
	    qmp_arg_array(call, "server", false, &servers) < 0)
		return -1;
	f = open_memstream(uri, &len);
	if (!f)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	fputs("rbd:", f);
	rbd_put(f, NULL, pool);
	if (qmp_arg_str(call, "namespace", false, &s) > 0 && s[0]) {
		fputc('/', f);
		rbd_put(f, NULL, s);
	}
	fputc('/', f);
	rbd_put(f, NULL, image);
	if (qmp_arg_str(call, "snapshot", false, &s) > 0) {
		fputc('@', f);
		rbd_put(f, NULL, s);
	}
	if (qmp_arg_str(call, "user", false, &s) > 0)
		rbd_put(f, "id", s);
	if (qmp_arg_str(call, "conf", false, &s) > 0)
		rbd_put(f, "conf", s);
	if (qmp_arg_str(call, "key-secret", false, &s) > 0)
		rbd_put(f, "key-secret", s);
	if (servers && json_object_array_length(servers)) {
		fputs(":mon_host=", f);
		for (size_t i = 0; i < json_object_array_length(servers); i++) {
			json_object *srv = json_object_array_get_idx(servers, i), *h = NULL,
				    *p = NULL;

			if (!json_object_is_type(srv, json_type_object) ||
			    !json_object_object_get_ex(srv, "host", &h) ||
			    !json_object_is_type(h, json_type_string)) {
				fclose(f);
				free(*uri);
				*uri = NULL;
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Parameter 'server.host' is missing");
			}
			if (i)
				fputc(';', f);
			rbd_put(f, NULL, json_object_get_string(h));
			if (json_object_object_get_ex(srv, "port", &p)) {
				fputs("\\:", f);
				rbd_put(f, NULL, json_object_get_string(p));
			}
		}
	}
	if (fclose(f) != 0) {
		free(*uri);
		*uri = NULL;
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	return 0;
}

/*
 * tls-creds=ID (an object-add'ed tls-creds object, endpoint client) and
 * tls-hostname=NAME of an nbd node, as the query parameters of its name
 * that libstore's NBD client reads.
 */
static int nbd_tls_query(struct qmp_call *call, char **uri)
{
	const char *creds = NULL, *host = NULL;
	char *u;

	if (qmp_arg_str(call, "tls-creds", false, &creds) < 0 ||
	    qmp_arg_str(call, "tls-hostname", false, &host) < 0) {
		free(*uri);
		*uri = NULL;
		return -1;
	}
	if (!creds)
		return 0;
	if (asprintf(&u, "%s%ctls-creds=%s%s%s", *uri, strchr(*uri, '?') ? '&' : '?', creds,
		     host ? "&tls-hostname=" : "", host ? host : "") < 0) {
		free(*uri);
		*uri = NULL;
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	free(*uri);
	*uri = u;
	return 0;
}

static int open_protocol(struct qmp_call *call, const char *driver, const struct node_opts *o,
			 struct vs_node **out)
{
	struct vs_open_opts oo = {
		.read_only = o->read_only,
		.force_share = o->force_share,
		.cache = cache_mode(o),
	};
	struct vs_error err = { 0 };
	char *uri = NULL;
	const char *s;
	int ret;

	if (!strcmp(driver, "file")) {
		if (qmp_arg_str(call, "filename", true, &oo.filename) < 0)
			return -1;
		if (qmp_arg_str(call, "locking", false, &s) > 0 && !strcmp(s, "off"))
			oo.force_share = true;
		oo.format = "file";
	} else if (!strcmp(driver, "vol")) {
		const char *pool, *vol;

		if (qmp_arg_str(call, "pool", true, &pool) < 0 ||
		    qmp_arg_str(call, "volume", true, &vol) < 0)
			return -1;
		if (asprintf(&uri, "vol:%s/%s", pool, vol) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		oo.filename = uri;
		oo.format = "file";
	} else if (!strcmp(driver, "rbd")) {
		if (rbd_uri(call, &uri) < 0)
			return -1;
		oo.filename = uri;
		oo.format = "rbd";
	} else { /* nbd */
		json_object *server;
		const char *export = "", *type = NULL, *path = NULL, *host = NULL, *port = "10809";
		struct qmp_call sub = { .session = call->session, .keyval = call->keyval };

		if (qmp_arg_obj(call, "server", true, &server) < 0)
			return -1;
		qmp_arg_str(call, "export", false, &export);
		sub.args = server;
		if (qmp_arg_str(&sub, "type", true, &type) < 0)
			return qmp_error(call, sub.cls, "%s", sub.desc);
		if (!strcmp(type, "unix")) {
			if (qmp_arg_str(&sub, "path", true, &path) < 0)
				return qmp_error(call, sub.cls, "%s", sub.desc);
			ret = asprintf(&uri, "nbd+unix:///%s?socket=%s", export, path);
		} else if (!strcmp(type, "inet")) {
			if (qmp_arg_str(&sub, "host", true, &host) < 0 ||
			    qmp_arg_str(&sub, "port", false, &port) < 0)
				return qmp_error(call, sub.cls, "%s", sub.desc);
			ret = asprintf(&uri, "nbd://%s:%s/%s", host, port, export);
		} else {
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter 'server.type' does not accept value '%s'",
					 type);
		}
		if (ret < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		if (nbd_tls_query(call, &uri) < 0)
			return -1;
		oo.filename = uri;
		oo.format = "nbd";
	}
	ret = vs_image_open(out, &oo, &err);
	free(uri);
	return ret < 0 ? open_error(call, &err) : 0;
}

static int add_node(struct qmp_call *call, const struct node_opts *parent, struct vs_node **out,
		    struct node_opts *o);

/*
 * A child given as a node name (a reference is taken) or as inline options
 * (a node without a name is opened). @what names the argument in errors.
 */
static int child_ref(struct qmp_call *call, json_object *ref, const struct node_opts *parent,
		     struct vs_node **out)
{
	if (json_object_is_type(ref, json_type_string)) {
		struct vd_node *n = vd_node_lookup(call, json_object_get_string(ref));

		if (!n)
			return -1;
		*out = vs_node_ref(n->node);
		return 0;
	}
	if (!json_object_is_type(ref, json_type_object))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Invalid parameter type for 'file', expected: BlockdevRef");

	struct qmp_call sub = { .session = call->session, .args = ref, .keyval = call->keyval };
	struct node_opts o;
	int ret = add_node(&sub, parent, out, &o);

	if (ret < 0)
		qmp_error(call, sub.cls, "%s", sub.desc);
	return ret;
}

/*
 * The passphrase of an encrypted format node: qcow2's "encrypt":
 * {"format": ..., "key-secret": ID}, luks's "key-secret": ID, as QEMU's
 * blockdev-add takes them; the secret comes from object-add secret.
 */
static int open_secret(struct qmp_call *call, const char *driver, struct vs_open_opts *oo)
{
	json_object *enc = NULL, *ks = NULL;
	const char *id = NULL;
	uint8_t *pass;
	size_t len;

	if (!strcmp(driver, "luks")) {
		json_object_object_get_ex(call->args, "key-secret", &ks);
	} else if (json_object_object_get_ex(call->args, "encrypt", &enc) && enc) {
		if (!json_object_is_type(enc, json_type_object))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Invalid parameter type for 'encrypt', expected: dict");
		json_object_object_foreach(enc, key, val)
		{
			(void)val;
			if (strcmp(key, "format") && strcmp(key, "key-secret"))
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Parameter 'encrypt.%s' is unexpected", key);
		}
		json_object_object_get_ex(enc, "key-secret", &ks);
	}
	if (ks) {
		if (!json_object_is_type(ks, json_type_string))
			return qmp_error(
				call, QMP_ERR_GENERIC,
				"Invalid parameter type for 'key-secret', expected: string");
		id = json_object_get_string(ks);
	}
	if (!id)
		return 0;
	if (vs_secret_get(id, &pass, &len) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "No secret with id '%s' found", id);
	oo->key_secret_data = pass;
	oo->key_secret_len = len;
	return 0;
}

static void wipe_secret(struct vs_open_opts *oo)
{
	if (!oo->key_secret_data)
		return;
	gnutls_memset((void *)oo->key_secret_data, 0, oo->key_secret_len);
	free((void *)oo->key_secret_data);
	oo->key_secret_data = NULL;
}

static int open_format(struct qmp_call *call, const char *driver, const struct node_opts *o,
		       struct vs_node **out)
{
	struct vs_open_opts oo = {
		.format = driver,
		.read_only = o->read_only,
		.force_share = o->force_share,
		.cache = cache_mode(o),
	};
	struct vs_error err = { 0 };
	struct vs_node *file = NULL, *backing = NULL;
	json_object *file_ref, *backing_ref = NULL;
	int64_t v;
	int ret;

	if (!strcmp(driver, "raw") && (qmp_arg_int(call, "offset", false, &v) > 0 ||
				       qmp_arg_int(call, "size", false, &v) > 0))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "raw's offset and size options are not supported");
	if (!json_object_object_get_ex(call->args, "file", &file_ref))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'file' is missing");
	if (json_object_object_get_ex(call->args, "backing", &backing_ref) && !backing_ref)
		oo.no_backing = true; /* "backing": null */
	else if (backing_ref)
		oo.no_backing = true; /* a node given: attached below */
	if (open_secret(call, driver, &oo) < 0)
		return -1;
	if (child_ref(call, file_ref, o, &file) < 0) {
		wipe_secret(&oo);
		return -1;
	}
	ret = vs_image_open_on(out, file, &oo, &err);
	wipe_secret(&oo);
	vs_node_close(file); /* the format node holds its own reference */
	if (ret < 0)
		return open_error(call, &err);
	if (backing_ref) {
		struct node_opts bo = *o;

		bo.read_only = true;
		if (child_ref(call, backing_ref, &bo, &backing) < 0 ||
		    vs_node_replace_backing(*out, backing, &err) < 0) {
			if (backing)
				open_error(call, &err);
			vs_node_close(backing);
			vs_node_close(*out);
			return -1;
		}
		vs_node_close(backing);
	}
	return 0;
}

/* copy-before-write (file, target) and snapshot-access (file): fleece.c's nodes. */
static int open_fleece(struct qmp_call *call, const char *driver, const struct node_opts *o,
		       struct vs_node **out)
{
	struct vs_node *file = NULL, *target = NULL;
	json_object *file_ref, *target_ref = NULL, *v;
	int ret = -1;

	if (!json_object_object_get_ex(call->args, "file", &file_ref))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'file' is missing");
	if (!strcmp(driver, "copy-before-write")) {
		if (!json_object_object_get_ex(call->args, "target", &target_ref))
			return qmp_error(call, QMP_ERR_GENERIC, "Parameter 'target' is missing");
		if (json_object_object_get_ex(call->args, "bitmap", &v))
			return qmp_error(
				call, QMP_ERR_GENERIC,
				"copy-before-write's bitmap is not supported by vstord yet");
	}
	if (child_ref(call, file_ref, o, &file) < 0)
		return -1;
	if (target_ref && child_ref(call, target_ref, o, &target) < 0)
		goto out;
	ret = target ? vd_fleece_cbw_open(call, file, target, false, out) :
		       vd_fleece_access_open(call, file, out);
out:
	vs_node_close(target);
	vs_node_close(file);
	return ret;
}

/* Open the node @call->args describe (its own reference in *@out), its options in @o. */
static int add_node(struct qmp_call *call, const struct node_opts *parent, struct vs_node **out,
		    struct node_opts *o)
{
	const struct driver_desc *d = NULL;
	const char *driver;

	if (qmp_arg_str(call, "driver", true, &driver) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (!strcmp(drivers[i].name, driver))
			d = &drivers[i];
	if (!d)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'driver' does not accept value '%s'", driver);
	json_object_object_foreach(call->args, key, val)
	{
		(void)val;
		if (!in_list(common_params, key) && !in_list(d->params, key))
			return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' is unexpected",
					 key);
	}
	if (read_common(call, o, parent) < 0)
		return -1;
	if (o->node_name && parent)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "A node-name inside a child's options is not supported; "
				 "add the child with blockdev-add and name it");
	if (!strcmp(d->name, "raw") || !strcmp(d->name, "qcow2"))
		return open_format(call, d->name, o, out);
	if (!strcmp(d->name, "copy-before-write") || !strcmp(d->name, "snapshot-access"))
		return open_fleece(call, d->name, o, out);
	return open_protocol(call, d->name, o, out);
}

struct vd_node *vd_node_add(const char *name, struct vs_node *node)
{
	struct vd_node *n = calloc(1, sizeof(*n));

	if (n)
		n->name = strdup(name);
	if (!n || !n->name) {
		free(n);
		return NULL;
	}
	n->node = node;
	*nodes_tail = n;
	nodes_tail = &n->next;
	return n;
}

static int cmd_blockdev_add(struct qmp_call *call)
{
	struct node_opts o = { 0 };
	struct vd_node *n;
	struct vs_node *node;
	const char *name = NULL;

	if (qmp_arg_str(call, "node-name", false, &name) < 0)
		return -1;
	if (!name)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "'node-name' must be specified for the root node");
	if (!name[0] || name[0] == '#' || strlen(name) > 31)
		return qmp_error(call, QMP_ERR_GENERIC, "Invalid node-name: '%s'", name);
	if (vd_node_find(name))
		return qmp_error(call, QMP_ERR_GENERIC, "Duplicate nodes with node-name='%s'",
				 name);
	if (add_node(call, NULL, &node, &o) < 0)
		return -1;
	n = vd_node_add(name, node);
	if (!n) {
		vs_node_close(node);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	n->direct = o.direct;
	n->no_flush = o.no_flush;
	n->discard = o.discard;
	n->detect_zeroes = o.detect_zeroes;
	vd_state_add(VD_STATE_NODE, name, call->args);
	return 0;
}
QMP_COMMAND(blockdev_add, "blockdev-add", cmd_blockdev_add, .params = NULL)

/* ---- blockdev-del ---- */

static void node_free(struct vd_node *n)
{
	struct vd_node **p;

	for (p = &nodes; *p != n; p = &(*p)->next)
		;
	*p = n->next;
	if (nodes_tail == &n->next)
		nodes_tail = p;
	vd_bitmap_node_gone(n->node);
	vs_node_close(n->node);
	free(n->name);
	free(n);
	prune_auto_names();
}

void vd_node_remove(struct vd_node *n)
{
	node_free(n);
}

static int cmd_blockdev_del(struct qmp_call *call)
{
	const char *name;
	struct vd_node *n;

	if (qmp_arg_str(call, "node-name", true, &name) < 0)
		return -1;
	n = vd_node_find(name);
	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC, "Failed to find node with node-name='%s'",
				 name);
	/* A node above uses it as its backing file (QEMU's op blocker says which). */
	for (struct vd_node *m = nodes; m; m = m->next) {
		for (struct vs_node *b = m->node; b; b = vs_node_backing(b)) {
			if (vs_node_backing(b) == n->node)
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Node '%s' is busy: node is used as backing hd of "
						 "'%s'",
						 name, vd_node_name_of(b));
		}
	}
	if (vd_job_check_node_free(call, n->node, name) < 0)
		return -1;
	/* QEMU's message for a node with a BlockBackend (an export's, a mirror target's). */
	if (vd_export_uses(n->node) || vd_job_holds(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Node %s is in use", name);
	/* Another node, an export or a job holds it too. */
	if (vs_node_refcount(n->node) > 1)
		return qmp_error(call, QMP_ERR_GENERIC, "Block device %s is in use", name);
	node_free(n);
	vd_state_remove(VD_STATE_NODE, name);
	return 0;
}
QMP_COMMAND(blockdev_del, "blockdev-del", cmd_blockdev_del, .params = QMP_PARAMS("node-name"))

void vd_block_close_all(void)
{
	/* Parents first: a node added later may hold one added earlier. */
	while (nodes) {
		struct vd_node *last = nodes;

		while (last->next)
			last = last->next;
		node_free(last);
	}
}

/* ---- query-named-block-nodes ---- */

struct listing {
	json_object *arr;
	bool flat;
	const struct vs_node *seen[256];
	unsigned nseen;
};

static bool seen(struct listing *l, const struct vs_node *node)
{
	for (unsigned i = 0; i < l->nseen; i++)
		if (l->seen[i] == node)
			return true;
	if (l->nseen < sizeof(l->seen) / sizeof(l->seen[0]))
		l->seen[l->nseen++] = node;
	return false;
}

/*
 * A node's info (size, allocation, snapshots, bitmaps' counts) is read on
 * its home reactor, where its requests change it.
 */
struct node_info_call {
	struct vs_node *node;
	const struct vd_node *named;
	bool backing;
	json_object *ret;
};

static void node_info_run(void *arg)
{
	struct node_info_call *c = arg;

	c->ret = vd_block_device_info(c->node, vd_node_name_of(c->node), c->named, c->backing);
}

static void list_node(struct listing *l, struct vs_node *node)
{
	/* Each node once, then the nodes below it (QEMU lists every node). */
	for (struct vs_node *n = node; n; n = vs_node_backing(n)) {
		if (!seen(l, n)) {
			struct node_info_call c = { n, find_by_ptr(n), !l->flat, NULL };

			if (vd_reactor_run_on(vd_node_home(n), node_info_run, &c) < 0 || !c.ret)
				node_info_run(&c); /* its reactor stopped: none runs there */
			json_object_array_add(l->arr, c.ret);
		}
		if (vs_node_file(n))
			list_node(l, vs_node_file(n));
	}
}

static void list_named(struct vd_node *n, void *opaque)
{
	list_node(opaque, n->node);
}

static int cmd_query_named_block_nodes(struct qmp_call *call)
{
	struct listing *l = calloc(1, sizeof(*l));

	if (!l)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	if (qmp_arg_bool(call, "flat", false, &l->flat) < 0) {
		free(l);
		return -1;
	}
	l->arr = json_object_new_array();
	vd_node_for_each(list_named, l);
	call->ret = l->arr;
	free(l);
	return 0;
}
QMP_COMMAND(query_named_block_nodes, "query-named-block-nodes", cmd_query_named_block_nodes,
	    .params = QMP_PARAMS("flat"))
