/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rbd backend: the images of one Ceph pool are the volumes, through
 * librados/librbd (libstore/driver-rbd.h). The pool is --source-host
 * MON[:PORT] --source-name CEPHPOOL, with cephx as --auth-type ceph
 * --auth-username ID --auth-secret-file F (F holds the user's base64 key,
 * readable by its owner only). A volume's path is an rbd: name carrying the
 * monitor and the user, with the key file's path (never the key): the rbd
 * protocol driver opens it. Volumes are raw and thin; pool-info gives the
 * cluster's capacity and free space and the bytes the pool stores.
 */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver-rbd.h"
#include "pool-int.h"

static int rbd_check_def(const struct vs_pool_def *def, struct vs_error *err)
{
	if (!def->source_name[0])
		return vs_error_set(err, -EINVAL,
				    "an rbd pool needs the Ceph pool as --source-name");
	if (def->auth_type[0] && strcmp(def->auth_type, "ceph"))
		return vs_error_set(err, -ENOTSUP,
				    "authentication type '%s' is not supported for rbd "
				    "(only ceph)",
				    def->auth_type);
	if (!strcmp(def->auth_type, "ceph") &&
	    (!def->auth_username[0] || !def->auth_secret_file[0]))
		return vs_error_set(err, -EINVAL,
				    "ceph authentication needs --auth-username and "
				    "--auth-secret-file");
	return 0;
}

/* Append @s to @out escaping the rbd: name's separators. */
static void put_escaped(char *out, size_t outsz, const char *s)
{
	size_t l = strlen(out);

	for (; *s && l + 2 < outsz; s++) {
		if (strchr(":@/\\", *s))
			out[l++] = '\\';
		out[l++] = *s;
	}
	out[l] = '\0';
}

/* rbd:CEPHPOOL/IMAGE:mon_host=..:id=..:keyfile=.. for @image. */
static int rbd_name(const struct vs_pool *p, const char *image, char *out, size_t outsz,
		    struct vs_error *err)
{
	const struct vs_pool_def *d = &p->def;
	char host[300];

	out[0] = '\0';
	snprintf(out, outsz, "rbd:");
	put_escaped(out, outsz, d->source_name);
	snprintf(out + strlen(out), outsz - strlen(out), "/");
	put_escaped(out, outsz, image);
	if (d->source_host[0]) {
		/* Without a port librados tries both messengers' default ports. */
		if (d->source_port)
			snprintf(host, sizeof(host), "%s:%u", d->source_host, d->source_port);
		else
			snprintf(host, sizeof(host), "%s", d->source_host);
		snprintf(out + strlen(out), outsz - strlen(out), ":mon_host=");
		put_escaped(out, outsz, host);
	}
	if (d->auth_username[0]) {
		snprintf(out + strlen(out), outsz - strlen(out), ":id=");
		put_escaped(out, outsz, d->auth_username);
	}
	if (d->auth_secret_file[0]) {
		snprintf(out + strlen(out), outsz - strlen(out), ":keyring=:keyfile=");
		put_escaped(out, outsz, d->auth_secret_file);
	}
	if (strlen(out) + 2 >= outsz)
		return vs_error_set(err, -ENAMETOOLONG, "RBD volume name too long");
	return 0;
}

static int rbd_attach(struct vs_pool *p, struct vs_error *err)
{
	struct vs_rbd_pool *rp = NULL;
	char name[2 * VS_POOL_PATH_MAX];
	int ret = 0;

	if (p->def.auth_secret_file[0]) {
		char key[256];

		/* Refuses a key file others may read. */
		ret = vs_pool_read_secret(p->def.auth_secret_file, key, sizeof(key), err);
		memset(key, 0, sizeof(key));
	}
	if (ret == 0)
		ret = rbd_name(p, "-", name, sizeof(name), err);
	if (ret == 0)
		ret = vs_rbd_pool_open(&rp, name, err);
	if (ret == 0)
		p->priv = rp;
	return ret;
}

static void rbd_detach(struct vs_pool *p)
{
	vs_rbd_pool_close(p->priv);
	p->priv = NULL;
}

static int rbd_fill(struct vs_pool *p, const char *image, struct vs_vol_info *vol,
		    struct vs_error *err)
{
	char parent[VS_POOL_PATH_MAX], uuid[37];
	int ret;

	memset(vol, 0, sizeof(*vol));
	ret = vs_pool_strcpy(vol->name, sizeof(vol->name), image);
	if (ret < 0)
		return vs_error_set(err, ret, "RBD image name '%s' too long", image);
	ret = rbd_name(p, image, vol->path, sizeof(vol->path), err);
	if (ret < 0)
		return ret;
	ret = vs_rbd_image_stat(p->priv, image, &vol->capacity, &vol->allocation, parent,
				sizeof(parent), err);
	if (ret == -ENOENT)
		return vs_pool_vol_not_found(err, image);
	if (ret < 0)
		return ret;
	vol->type = VS_VOL_NETWORK;
	snprintf(vol->format, sizeof(vol->format), "raw");
	/*
	 * An encrypted volume (raw LUKS over the image) has a secret of the
	 * store: only those are read, to tell the payload's capacity and the
	 * encryption; the others cost no read.
	 */
	if (vs_pool_vol_secret(p, vol, uuid, NULL) == 0) {
		uint64_t allocation = vol->allocation;

		ret = vs_pool_probe_volume(p, vol, err);
		vol->allocation = allocation;
	}
	return ret;
}

static int rbd_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
		       struct vs_error *err)
{
	uint64_t used = 0;
	char **names = NULL;
	size_t n = 0;
	int ret;

	memset(info, 0, sizeof(*info));
	ret = vs_rbd_pool_stat(p->priv, &info->capacity, &info->available, &used, err);
	if (ret < 0)
		return ret;
	info->allocation = used;
	if (!vols)
		return 0;
	ret = vs_rbd_list(p->priv, &names, &n, err);
	for (size_t i = 0; i < n && ret == 0; i++) {
		struct vs_vol_info *v;
		struct vs_error e = { 0 };

		if (names[i][0] == '.')
			continue; /* being built */
		v = vs_vol_list_add(vols);
		if (!v) {
			ret = vs_error_set(err, -ENOMEM, "Out of memory");
			break;
		}
		if (rbd_fill(p, names[i], v, &e) < 0)
			vols->n--; /* removed meanwhile */
	}
	vs_rbd_names_free(names, n);
	return ret;
}

static int rbd_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
			struct vs_error *err)
{
	return rbd_fill(p, name, out, err);
}

static int rbd_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a,
			  struct vs_error *err)
{
	if (a->format && strcmp(a->format, "raw"))
		return vs_error_set(err, -ENOTSUP,
				    "rbd pools hold raw volumes only (not '%s'): RBD images "
				    "are thin and have their own snapshots and clones",
				    a->format);
	if (a->backing_path)
		return vs_error_set(err, -ENOTSUP,
				    "rbd volumes have no backing file (use vol-clone)");
	if (a->clone_of) {
		/* One snapshot per clone, named after it (its build name: unique). */
		char snap[VS_POOL_NAME_MAX + 16];

		snprintf(snap, sizeof(snap), "vstor-clone-%s", a->name + (a->name[0] == '.'));
		return vs_rbd_clone(p->priv, a->clone_of->name, snap, a->name, err);
	}
	if (a->encrypt_secret) {
		/* QEMU's luks driver over the image: the header, then the payload. */
		char path[VS_POOL_PATH_MAX];
		const char *format;
		struct vs_kv kv[3];
		size_t nkv = vs_pool_create_encrypt_opts(kv, a, &format);
		int ret = rbd_name(p, a->name, path, sizeof(path), err);

		return ret < 0 ? ret : vs_image_create(path, format, a->capacity, kv, nkv, err);
	}
	return vs_rbd_create(p->priv, a->name, a->capacity, err);
}

static int rbd_vol_delete(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	return vs_rbd_remove(p->priv, vol->name, err);
}

static int rbd_vol_rename(struct vs_pool *p, const struct vs_vol_info *vol, const char *name,
			  struct vs_error *err)
{
	struct vs_vol_info tmp;
	struct vs_error e = { 0 };

	if (rbd_fill(p, name, &tmp, &e) == 0)
		return vs_error_set(err, -EEXIST, "storage volume '%s' exists already", name);
	return vs_rbd_rename(p->priv, vol->name, name, err);
}

static int rbd_vol_resize(struct vs_pool *p, const struct vs_vol_info *vol, uint64_t capacity,
			  unsigned flags, struct vs_error *err)
{
	(void)flags; /* --allocate: RBD images are thin */
	/* Raw LUKS: the header (what the image holds beyond the payload) stays. */
	if (!strcmp(vol->encryption, "luks") && vol->physical > vol->capacity)
		capacity += vol->physical - vol->capacity;
	return vs_rbd_resize(p->priv, vol->name, capacity, err);
}

VS_POOL_BACKEND(rbd_backend) = {
	.type = "rbd",
	.default_format = "raw",
	.vol_formats = (const char *const[]){ "raw", NULL },
	.cow_clone = true,
	.encryption = true,
	.check_def = rbd_check_def,
	.attach = rbd_attach,
	.detach = rbd_detach,
	.refresh = rbd_refresh,
	.vol_info = rbd_vol_info,
	.vol_create = rbd_vol_create,
	.vol_delete = rbd_vol_delete,
	.vol_rename = rbd_vol_rename,
	.vol_resize = rbd_vol_resize,
};
