/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Building node graphs: format probing, opening an image (protocol node,
 * format node, backing chain) and creating one. Drivers come from the
 * registry (registry.c).
 */
#include "driver.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gnutls/gnutls.h>

#define PROBE_LEN 4096

/*
 * Whether @name starts with a protocol ("nbd:", "rbd:", "json:"): a ':'
 * before any '/', as QEMU decides; "./a:b.qcow2" is a relative file name.
 */
static bool has_protocol(const char *name)
{
	return name[strcspn(name, ":/")] == ':';
}

int vs_path_combine(char *out, size_t outsz, const char *base, const char *name)
{
	const char *slash;
	int n;

	if (name[0] == '/' || has_protocol(name) || !(slash = strrchr(base, '/')))
		n = snprintf(out, outsz, "%s", name);
	else
		n = snprintf(out, outsz, "%.*s%s", (int)(slash - base + 1), base, name);
	return (n < 0 || (size_t)n >= outsz) ? -ENAMETOOLONG : 0;
}

#define MAX_RESOLVERS 4
static const struct vs_image_resolver *resolvers[MAX_RESOLVERS];

int vs_image_register_resolver(const struct vs_image_resolver *r)
{
	for (size_t i = 0; i < MAX_RESOLVERS; i++) {
		if (!resolvers[i] || !strcmp(resolvers[i]->prefix, r->prefix)) {
			resolvers[i] = r;
			return 0;
		}
	}
	return -ENOSPC;
}

static const struct vs_image_resolver *resolver_for(const char *filename)
{
	for (size_t i = 0; i < MAX_RESOLVERS && resolvers[i]; i++)
		if (!strncmp(filename, resolvers[i]->prefix, strlen(resolvers[i]->prefix)))
			return resolvers[i];
	return NULL;
}

int vs_protocol_open(struct vs_node **out, const char *filename, const struct vs_open_opts *opts,
		     struct vs_error *err)
{
	const struct vs_image_resolver *res = resolver_for(filename);
	const struct vs_driver *drv;
	struct vs_node *n;
	int ret;

	if (res) {
		if (!res->open)
			return vs_error_set(err, -ENOTSUP, "'%s' cannot be opened", filename);
		return res->open(filename, opts, out, err);
	}
	drv = vs_protocol_driver_for(filename);
	n = vs_node_new(drv, filename, opts);
	if (!n)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = drv->open(n, opts, err);
	if (ret < 0) {
		vs_node_free(n);
		return ret;
	}
	*out = n;
	return 0;
}

int vs_protocol_create_existing(const char *filename, uint64_t size, const struct vs_kv *opts,
				size_t nopts, const char *where, uint64_t *have,
				struct vs_error *err)
{
	struct vs_open_opts o = { .filename = filename, .format = "file" };
	struct vs_node *node = NULL;
	int ret;

	for (size_t i = 0; i < nopts; i++)
		if (strcmp(opts[i].key, "size") &&
		    (strcmp(opts[i].key, "preallocation") || strcmp(opts[i].value, "off")))
			return vs_error_set(err, -EINVAL, "Option '%s' is not supported %s",
					    opts[i].key, where);
	ret = vs_protocol_open(&node, filename, &o, err);
	if (ret < 0)
		return ret;
	*have = node->size;
	vs_node_close(node);
	return size > *have ? -ENOSPC : 0;
}

/*
 * Open the format node @drv (NULL: probe) named @name on @file, taking over
 * the caller's reference to @file (dropped on failure). The backing file
 * the format names is left to open_backing_chain(). The name is what the
 * image was opened as (vol:POOL/VOLUME stays that, while its protocol node
 * has the volume's path): backing names resolve against it.
 */
static int format_open(struct vs_node **out, const char *name, struct vs_node *file,
		       const struct vs_driver *drv, const struct vs_open_opts *opts, unsigned depth,
		       struct vs_node *overlay, struct vs_error *err)
{
	struct vs_node *n;
	bool probed = false;
	int ret;

	if (!drv) {
		uint8_t *buf = vs_buf_zalloc(PROBE_LEN);
		size_t len = file->size < PROBE_LEN ? (size_t)file->size : PROBE_LEN;
		size_t plen = (len + 511) & ~(size_t)511;

		if (!buf) {
			vs_node_close(file);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
		ret = plen ? vs_node_pread(file, 0, buf, plen) : 0;
		if (ret < 0) {
			free(buf);
			vs_node_close(file);
			return vs_error_setf_errno(err, ret, "Could not read '%s'", name);
		}
		drv = vs_driver_probe(buf, len, name);
		probed = true;
		free(buf);
	}
	n = vs_node_new(drv, name, opts);
	if (!n) {
		vs_node_close(file);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	n->file = file;
	n->chain_depth = depth;
	n->overlay = overlay;
	n->probed = probed;
	ret = drv->open(n, opts, err);
	if (ret < 0) {
		/* The driver closed its own state; the child is ours. */
		vs_node_close(file);
		vs_node_free(n);
		return ret;
	}
	n->writethrough = depth == 0 && !n->knobs.wce;
	*out = n;
	return 0;
}

/*
 * Open one image: its protocol node and, unless -f names a protocol driver,
 * the format node on top. The backing file the format names is left to
 * open_backing_chain(), so that a chain opens in a loop, not by recursion: a
 * 256-deep chain then needs no more coroutine stack than one image does.
 */
static int image_open_one_as(struct vs_node **out, const struct vs_open_opts *opts, unsigned depth,
			     struct vs_node *overlay, struct vs_error *err)
{
	const struct vs_driver *drv = NULL;
	struct vs_node *file = NULL;
	int ret;

	if (opts->format) {
		drv = vs_driver_find(opts->format);
		if (!drv)
			return vs_error_set(err, -EINVAL, "Unknown file format '%s'", opts->format);
	}
	ret = vs_protocol_open(&file, opts->filename, opts, err);
	if (ret < 0)
		return ret;
	if (drv && !drv->is_format) {
		if (opts->snapshot) {
			vs_node_close(file);
			return vs_error_set(err, -ENOTSUP,
					    "The %s driver has no internal snapshots", drv->name);
		}
		/* -f file / memory / null: the protocol node is the image. */
		*out = file;
		file->writethrough = depth == 0 && !file->knobs.wce;
		return 0;
	}
	return format_open(out, opts->filename, file, drv, opts, depth, overlay, err);
}

/*
 * image_open_one_as() with the passphrase the resolver keeps for the image
 * (a pool volume's secret), unless @secret_given: the caller named one for
 * this level.
 */
static int image_open_one(struct vs_node **out, const struct vs_open_opts *opts, unsigned depth,
			  struct vs_node *overlay, bool secret_given, struct vs_error *err)
{
	const struct vs_image_resolver *res = resolver_for(opts->filename);
	struct vs_open_opts ro;
	uint8_t *pass = NULL;
	size_t passlen = 0;
	int ret;

	if (!secret_given && res && res->key_secret) {
		ret = res->key_secret(opts->filename, &pass, &passlen, err);
		if (ret < 0 && ret != -ENOENT)
			return ret;
		if (ret == 0) {
			ro = *opts;
			ro.key_secret_data = pass;
			ro.key_secret_len = passlen;
			opts = &ro;
		}
	}
	ret = image_open_one_as(out, opts, depth, overlay, err);
	if (pass) {
		gnutls_memset(pass, 0, passlen);
		free(pass);
	}
	return ret;
}

/* Whether @path names the image of @node or of one of the images above it. */
static bool backing_loops(const struct vs_node *node, const char *path)
{
	struct stat st, an;
	bool local = stat(path, &st) == 0;

	for (const struct vs_node *n = node; n; n = n->overlay) {
		if (!strcmp(n->filename, path))
			return true;
		if (local && stat(n->filename, &an) == 0 && an.st_dev == st.st_dev &&
		    an.st_ino == st.st_ino)
			return true;
	}
	return false;
}

/*
 * Open the backing file that @node names, read-only, into node->backing.
 * Where @node came through a resolver that confines backing files (pool
 * volumes), the resolver maps the name, and a format that is not recorded
 * may only be probed as raw (libvirt's rule: a probed qcow2 could name any
 * file as its own backing file).
 */
static int image_open_backing(struct vs_node *node, const struct vs_open_opts *top_opts,
			      struct vs_error *err)
{
	const struct vs_image_resolver *res = resolver_for(node->filename);
	const char *fmt = node->backing_fmt && node->backing_fmt[0] ? node->backing_fmt : NULL;
	bool confined = res && res->resolve_backing;
	char json_fmt[32];
	struct vs_open_opts o = *top_opts;
	struct vs_error inner = { 0 };
	char *path = malloc(PATH_MAX);
	bool given = false;
	unsigned level;
	int ret;

	if (!path)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	if (confined) {
		ret = res->resolve_backing(node->filename, node->backing_name, path, PATH_MAX,
					   &inner);
		if (ret < 0) {
			vs_error_set(err, ret, "Could not open backing file: %s", inner.msg);
			goto out;
		}
	} else if (vs_path_combine(path, PATH_MAX, node->filename, node->backing_name) < 0) {
		ret = vs_error_set(err, -ENAMETOOLONG, "Backing file name too long: '%s'",
				   node->backing_name);
		goto out;
	}
	if (!confined && !strncmp(path, "json:", 5)) {
		/* As QEMU: the format recorded in the image wins over the name's driver. */
		char *name = strdup(path);

		ret = name ? vs_json_name_resolve(name, path, PATH_MAX, json_fmt, sizeof(json_fmt),
						  &inner) :
			     -ENOMEM;
		free(name);
		if (ret < 0) {
			vs_error_set(err, ret, "Could not open backing file: %s",
				     inner.msg[0] ? inner.msg : "Out of memory");
			goto out;
		}
		if (!fmt && json_fmt[0])
			fmt = json_fmt;
	}
	if (backing_loops(node, path)) {
		ret = vs_error_set(err, -ELOOP, "Backing file '%s' creates an infinite loop.",
				   node->backing_name);
		goto out;
	}
	if (node->chain_depth + 1 > VS_MAX_BACKING_DEPTH) {
		ret = vs_error_set(err, -ELOOP, "Backing chain deeper than %d at '%s'",
				   VS_MAX_BACKING_DEPTH, path);
		goto out;
	}
	o.filename = path;
	o.format = fmt;
	o.read_only = true;
	o.exclusive = false; /* only the image itself is taken whole */
	o.no_backing = false;
	o.no_repair = true;
	/*
	 * The passphrase of this level: the one named for it (QEMU's
	 * backing.encrypt.key-secret), else the resolver's for it (a pool
	 * volume's), else the image's own.
	 */
	level = node->chain_depth; /* index of the level below @node */
	if (level < top_opts->nb_backing_secrets && top_opts->backing_secrets[level].data) {
		o.key_secret_data = top_opts->backing_secrets[level].data;
		o.key_secret_len = top_opts->backing_secrets[level].len;
		given = true;
	}
	ret = image_open_one(&node->backing, &o, node->chain_depth + 1, node, given, &inner);
	if (ret < 0) {
		vs_error_set(err, ret, "Could not open backing file: %s", inner.msg);
		goto out;
	}
	if (confined && !fmt && node->backing->drv != &vs_driver_raw) {
		ret = vs_error_set(err, -EPERM,
				   "format of backing image '%s' of image '%s' was not specified "
				   "in the image metadata; a probed %s is not trusted as a "
				   "backing file (set it with: vstor-img rebase -u -b NAME -F FMT)",
				   node->backing_name, node->filename, node->backing->drv->name);
		vs_node_close(node->backing);
		node->backing = NULL;
	}
out:
	free(path);
	return ret;
}

/* Open the backing chain below @top, one level at a time; closes @top on failure. */
static int open_backing_chain(struct vs_node **out, struct vs_node *top,
			      const struct vs_open_opts *opts, struct vs_error *err)
{
	struct vs_node *n;
	int ret = 0;

	for (n = top; !opts->no_backing && n->backing_name; n = n->backing) {
		ret = image_open_backing(n, opts, err);
		if (ret < 0)
			break;
	}
	for (n = top; n; n = n->backing)
		n->overlay = NULL; /* only needed while the chain opens */
	if (ret < 0) {
		vs_node_close(top);
		return ret;
	}
	*out = top;
	return 0;
}

/* Open the image of @opts and then its backing chain. */
static int image_open_chain(struct vs_node **out, const struct vs_open_opts *opts,
			    struct vs_error *err)
{
	struct vs_node *top;
	int ret = image_open_one(&top, opts, 0, NULL, opts->key_secret_data != NULL, err);

	if (ret < 0)
		return ret;
	return open_backing_chain(out, top, opts, err);
}

int vs_image_open_on(struct vs_node **out, struct vs_node *file, const struct vs_open_opts *opts,
		     struct vs_error *err)
{
	const struct vs_driver *drv = NULL;
	struct vs_node *top;
	int ret;

	if (!vs_in_coroutine())
		return vs_error_set(err, -EINVAL, "vs_image_open_on() needs coroutine context");
	if (opts->format) {
		drv = vs_driver_find(opts->format);
		if (!drv)
			return vs_error_set(err, -EINVAL, "Unknown file format '%s'", opts->format);
		if (!drv->is_format)
			return vs_error_set(err, -EINVAL, "'%s' is not an image format",
					    opts->format);
	}
	if (!opts->read_only && file->read_only)
		return vs_error_set(err, -EPERM, "Block node is read-only");
	ret = format_open(&top, vs_node_filename(file), vs_node_ref(file), drv, opts, 0, NULL, err);
	if (ret < 0)
		return ret;
	return open_backing_chain(out, top, opts, err);
}

int vs_node_replace_backing(struct vs_node *node, struct vs_node *backing, struct vs_error *err)
{
	if (!node->drv->is_format || !node->drv->set_backing)
		return vs_error_set(err, -ENOTSUP, "Driver '%s' does not support backing files",
				    node->drv->name);
	for (const struct vs_node *n = backing; n; n = n->backing)
		if (n == node)
			return vs_error_set(
				err, -ELOOP,
				"Making '%s' a backing file of '%s' would create a loop",
				backing->filename, node->filename);
	if (node->active || node->in_flight)
		return vs_error_set(err, -EBUSY, "'%s' has requests in flight", node->filename);
	if (backing)
		vs_node_ref(backing);
	vs_node_close(node->backing);
	node->backing = backing;
	return 0;
}

int vs_image_open(struct vs_node **out, const struct vs_open_opts *opts, struct vs_error *err)
{
	if (!opts || !opts->filename || !opts->filename[0])
		return vs_error_set(err, -EINVAL, "No image file name given");
	if (!vs_in_coroutine())
		return vs_error_set(err, -EINVAL, "vs_image_open() needs coroutine context");
	if (opts->snapshot && !opts->read_only) {
		/* A snapshot is a past state: it is only ever read. */
		struct vs_open_opts ro = *opts;

		ro.read_only = true;
		return image_open_chain(out, &ro, err);
	}
	return image_open_chain(out, opts, err);
}

int vs_image_create_ex(const char *filename, const char *format, uint64_t size,
		       const struct vs_kv *opts, size_t nopts, unsigned flags, struct vs_error *err)
{
	const struct vs_driver *drv = vs_driver_find(format ? format : "raw");
	const struct vs_image_resolver *res = resolver_for(filename);

	if (res) {
		if (!res->create)
			return vs_error_set(err, -ENOTSUP, "'%s' cannot be created", filename);
		return res->create(filename, format, size, opts, nopts, flags, err);
	}
	if (!drv || !drv->create)
		return vs_error_set(err, -EINVAL, "Unknown file format '%s' for create",
				    format ? format : "raw");
	if (size > INT64_MAX)
		return vs_error_set(err, -EINVAL, "Image size too large");
	if (flags & ~(unsigned)VS_CREATE_NO_BACKING_CHECK)
		return vs_error_set(err, -EINVAL, "Unknown create flags %#x", flags);
	return drv->create(filename, size, opts, nopts, flags, err);
}

int vs_image_create(const char *filename, const char *format, uint64_t size,
		    const struct vs_kv *opts, size_t nopts, struct vs_error *err)
{
	return vs_image_create_ex(filename, format, size, opts, nopts, 0, err);
}

int vs_image_measure(const char *format, uint64_t size, uint64_t allocated,
		     const struct vs_kv *opts, size_t nopts, struct vs_measure_result *res,
		     struct vs_error *err)
{
	const struct vs_driver *drv = vs_driver_find(format ? format : "raw");

	memset(res, 0, sizeof(*res));
	if (!drv || !drv->is_format)
		return vs_error_set(err, -EINVAL, "Unknown file format '%s'",
				    format ? format : "raw");
	if (!drv->measure)
		return vs_error_set(err, -ENOTSUP, "Format '%s' does not support measure",
				    drv->name);
	return drv->measure(size, allocated, opts, nopts, res, err);
}
