/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The netfs backend: volumes are files on an NFSv3 export reached through
 * libnfs (libstore/driver-nfs.h), with no kernel mount. The pool is
 * --source-host HOST[:PORT] --source-path /EXPORT; --target is accepted and
 * unused (nothing is mounted). A volume's path is its nfs:// URL, which the
 * nfs protocol driver opens. Extra fields: nfsport, mountport (skip the
 * portmapper), uid, gid.
 */
#include "pool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver-nfs.h"
#include "pool-int.h"

static int netfs_check_def(const struct vs_pool_def *def, struct vs_error *err)
{
	if (!def->source_host[0])
		return vs_error_set(err, -EINVAL, "a netfs pool needs --source-host");
	if (!def->source_path[0] || def->source_path[0] != '/')
		return vs_error_set(err, -EINVAL,
				    "a netfs pool needs --source-path (the export, e.g. /export)");
	if (def->source_format[0] && strcmp(def->source_format, "nfs") &&
	    strcmp(def->source_format, "auto"))
		return vs_error_set(err, -ENOTSUP,
				    "netfs source format '%s' is not supported (only nfs)",
				    def->source_format);
	if (vs_pool_def_extra(def, "protocol_ver") &&
	    strcmp(vs_pool_def_extra(def, "protocol_ver"), "3"))
		return vs_error_set(err, -ENOTSUP, "only NFS protocol version 3 is supported");
	return 0;
}

/* nfs://HOST/EXPORT[/NAME][?nfsport=..&mountport=..&uid=..&gid=..] */
static int netfs_url(const struct vs_pool *p, const char *name, char *out, size_t outsz,
		     struct vs_error *err)
{
	static const char *const keys[] = { "nfsport", "mountport", "uid", "gid" };
	const char *path = p->def.source_path;
	size_t plen = strlen(path);
	char query[512] = "", port[16];
	int n;

	while (plen > 1 && path[plen - 1] == '/')
		plen--;
	if (p->def.source_port && !vs_pool_def_extra(&p->def, "nfsport")) {
		snprintf(port, sizeof(port), "%u", p->def.source_port);
		snprintf(query, sizeof(query), "?nfsport=%s", port);
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = vs_pool_def_extra(&p->def, keys[i]);
		size_t l = strlen(query);

		if (v)
			snprintf(query + l, sizeof(query) - l, "%c%s=%s", l ? '&' : '?', keys[i],
				 v);
	}
	n = snprintf(out, outsz, "nfs://%s%.*s%s%s%s", p->def.source_host, (int)plen, path,
		     name ? (plen > 1 ? "/" : "") : "", name ? name : "", query);
	if (n < 0 || (size_t)n >= outsz)
		return vs_error_set(err, -ENAMETOOLONG, "NFS URL too long");
	return 0;
}

/* Names that cannot be spelled in an nfs:// URL as libnfs parses it. */
static bool netfs_name_ok(const char *name)
{
	return !strpbrk(name, "?#%&");
}

static int netfs_attach(struct vs_pool *p, struct vs_error *err)
{
	char url[VS_POOL_PATH_MAX];
	struct vs_nfs *s;
	int ret = netfs_url(p, NULL, url, sizeof(url), err);

	if (ret < 0)
		return ret;
	ret = vs_nfs_mount(&s, url, err);
	if (ret < 0)
		return ret;
	p->priv = s;
	return 0;
}

static void netfs_detach(struct vs_pool *p)
{
	vs_nfs_unmount(p->priv);
	p->priv = NULL;
}

/* The export must be there and be a directory we can list. */
static int netfs_start(struct vs_pool *p, struct vs_error *err)
{
	struct vs_nfs_stat st;
	int ret = vs_nfs_stat(p->priv, "/", &st, err);

	if (ret == 0 && !st.is_dir)
		ret = vs_error_set(err, -ENOTDIR, "the export root is not a directory");
	return ret;
}

static int netfs_build(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	/* The export is the server's: nothing to create, but it must answer. */
	(void)flags;
	return netfs_start(p, err);
}

static int netfs_delete(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	(void)p;
	(void)flags;
	/* Nothing was mounted or created locally; the export stays the server's. */
	(void)err;
	return 0;
}

static int netfs_fill(struct vs_pool *p, const char *name, const struct vs_nfs_stat *st,
		      struct vs_vol_info *vol, struct vs_error *err)
{
	int ret;

	memset(vol, 0, sizeof(*vol));
	snprintf(vol->name, sizeof(vol->name), "%s", name);
	ret = netfs_url(p, name, vol->path, sizeof(vol->path), err);
	if (ret < 0)
		return ret;
	vol->type = VS_VOL_NETWORK;
	vol->allocation = st->used;
	vol->has_perms = true;
	vol->mode = st->mode & 07777;
	vol->owner = st->uid;
	vol->group = st->gid;
	return vs_pool_probe_volume(p, vol, err);
}

struct netfs_walk {
	struct vs_pool *p;
	struct vs_vol_list *vols;
	uint64_t allocation;
	int err;
};

static int netfs_walk_one(const char *name, const struct vs_nfs_stat *st, void *opaque)
{
	struct netfs_walk *w = opaque;
	struct vs_vol_info *v;
	struct vs_error e = { 0 };

	if (!st->is_reg || name[0] == '.' || vs_pool_check_name(name, "Volume", NULL) < 0 ||
	    !netfs_name_ok(name))
		return 0;
	w->allocation += st->used;
	if (!w->vols)
		return 0;
	v = vs_vol_list_add(w->vols);
	if (!v) {
		w->err = -ENOMEM;
		return 1;
	}
	if (netfs_fill(w->p, name, st, v, &e) < 0)
		w->vols->n--; /* unreadable meanwhile */
	return 0;
}

static int netfs_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
			 struct vs_error *err)
{
	struct netfs_walk w = { .p = p, .vols = vols };
	uint64_t cap, avail;
	int ret = vs_nfs_statvfs(p->priv, &cap, &avail, err);

	if (ret < 0)
		return ret;
	ret = vs_nfs_list(p->priv, "/", netfs_walk_one, &w, err);
	if (ret < 0)
		return ret;
	if (w.err)
		return vs_error_set(err, w.err, "Out of memory");
	info->capacity = cap;
	info->available = avail;
	info->allocation = cap - avail;
	return 0;
}

static int netfs_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
			  struct vs_error *err)
{
	char path[VS_POOL_NAME_MAX + 2];
	struct vs_nfs_stat st;
	struct vs_error e = { 0 };

	snprintf(path, sizeof(path), "/%s", name);
	if (vs_nfs_stat(p->priv, path, &st, &e) < 0 || !st.is_reg)
		return vs_pool_vol_not_found(err, name);
	return netfs_fill(p, name, &st, out, err);
}

static int netfs_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a,
			    struct vs_error *err)
{
	char url[VS_POOL_PATH_MAX], path[VS_POOL_NAME_MAX + 2];
	struct vs_kv kv[9];
	const char *format;
	size_t nkv;
	bool qcow2 = !strcmp(a->format, "qcow2");
	int ret;

	if (a->backing_path && !qcow2)
		return vs_error_set(err, -EINVAL, "a backing volume needs the qcow2 format");
	if (!netfs_name_ok(a->name))
		return vs_error_set(err, -EINVAL,
				    "volume name '%s' cannot be used in an nfs:// URL (no ?, #, %% "
				    "or &)",
				    a->name);
	ret = netfs_url(p, a->name, url, sizeof(url), err);
	if (ret < 0)
		return ret;
	snprintf(path, sizeof(path), "/%s", a->name);
	/*
	 * Claim the name first (exclusive create), then set the mode and
	 * owner before any data goes in (an EXCLUSIVE CREATE carries no
	 * attributes: a SETATTR follows).
	 */
	ret = vs_nfs_create(p->priv, path, true, err);
	if (ret < 0)
		return ret;
	if (a->set_owner || a->set_group)
		ret = vs_nfs_chown(p->priv, path, a->set_owner ? (int)a->owner : -1,
				   a->set_group ? (int)a->group : -1, err);
	if (ret == 0)
		ret = vs_nfs_chmod(p->priv, path, a->mode ? a->mode : VS_VOL_DEFAULT_MODE, err);
	if (ret < 0) {
		(void)vs_nfs_unlink(p->priv, path, NULL);
		return ret;
	}
	/* Full allocation of a qcow2 over NFS is not offered: metadata at most. */
	nkv = vs_pool_create_opts(kv, a->backing_path, a->backing_format,
				  qcow2 ? (a->prealloc_metadata ? "metadata" : NULL) :
					  (vs_vol_create_full(a) ? "full" : NULL));
	nkv += vs_pool_create_qcow2_opts(kv + nkv, a);
	nkv += vs_pool_create_encrypt_opts(kv + nkv, a, &format);
	ret = vs_image_create(url, format, a->capacity, kv, nkv, err);
	if (ret < 0)
		(void)vs_nfs_unlink(p->priv, path, NULL);
	return ret;
}

static int netfs_vol_delete(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	char path[VS_POOL_NAME_MAX + 2];

	snprintf(path, sizeof(path), "/%s", vol->name);
	return vs_nfs_unlink(p->priv, path, err);
}

/*
 * NFSv3 RENAME replaces its target: LINK (which fails when the name
 * exists) then REMOVE of the old name gives a rename that never replaces.
 * A server without hard links gets a check, then RENAME.
 */
static int netfs_vol_rename(struct vs_pool *p, const struct vs_vol_info *vol, const char *name,
			    struct vs_error *err)
{
	char from[VS_POOL_NAME_MAX + 2], to[VS_POOL_NAME_MAX + 2];
	struct vs_nfs_stat st;
	struct vs_error e = { 0 };
	int ret;

	if (!netfs_name_ok(name))
		return vs_error_set(err, -EINVAL,
				    "volume name '%s' cannot be used in an nfs:// URL (no ?, #, %% "
				    "or &)",
				    name);
	snprintf(from, sizeof(from), "/%s", vol->name);
	snprintf(to, sizeof(to), "/%s", name);
	ret = vs_nfs_link(p->priv, from, to, &e);
	if (ret == 0) {
		(void)vs_nfs_unlink(p->priv, from, NULL);
		return 0;
	}
	if (ret != -ENOTSUP && ret != -EOPNOTSUPP && ret != -EPERM && ret != -ENOSYS)
		return vs_error_set(err, ret, "%s", e.msg);
	if (vs_nfs_stat(p->priv, to, &st, NULL) == 0)
		return vs_error_set(err, -EEXIST, "'%s' exists", name);
	return vs_nfs_rename(p->priv, from, to, err);
}

static int netfs_vol_resize(struct vs_pool *p, const struct vs_vol_info *vol, uint64_t capacity,
			    unsigned flags, struct vs_error *err)
{
	return vs_pool_image_resize(
		p, vol, false, capacity,
		(flags & VS_VOL_RESIZE_ALLOCATE) && !strcmp(vol->format, "raw") ? VS_PREALLOC_FULL :
										  VS_PREALLOC_OFF,
		err);
}

/* The exports of --source-host, through its MOUNT service (as libvirt's showmount). */
static int netfs_find_sources(const struct vs_pool_def *spec, struct vs_pool_def **out, size_t *n,
			      struct vs_error *err)
{
	char **dirs = NULL;
	size_t nd = 0;
	int ret;

	*out = NULL;
	*n = 0;
	if (!spec->source_host[0])
		return vs_error_set(err, -EINVAL, "hostname must be specified for netfs sources");
	ret = vs_nfs_exports(spec->source_host, &dirs, &nd, err);
	if (ret == 0 && nd && !(*out = calloc(nd, sizeof(**out))))
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
	for (size_t i = 0; i < nd; i++) {
		if (ret == 0 && strlen(dirs[i]) < sizeof((*out)[i].source_path)) {
			struct vs_pool_def *d = &(*out)[(*n)++];

			strcpy(d->type, "netfs");
			strcpy(d->source_host, spec->source_host);
			strcpy(d->source_path, dirs[i]);
			strcpy(d->source_format, "nfs");
		}
		free(dirs[i]);
	}
	free(dirs);
	return ret;
}

VS_POOL_BACKEND(netfs_backend) = {
	.type = "netfs",
	.default_format = "raw",
	.vol_formats = (const char *const[]){ "raw", "qcow2", NULL },
	.encryption = true,
	.source_formats = (const char *const[]){ "auto", "nfs", NULL },
	.find_sources = netfs_find_sources,
	.check_def = netfs_check_def,
	.attach = netfs_attach,
	.detach = netfs_detach,
	.build = netfs_build,
	.start = netfs_start,
	.delete = netfs_delete,
	.refresh = netfs_refresh,
	.vol_info = netfs_vol_info,
	.vol_create = netfs_vol_create,
	.vol_delete = netfs_vol_delete,
	.vol_rename = netfs_vol_rename,
	.vol_resize = netfs_vol_resize,
};
