/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Volume operations: info, create, delete and resize, with the checks they
 * make before they call a backend (in use, backing file of another volume).
 */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "pool-int.h"

/* ---- Volume operations ---------------------------------------------------- */

int vs_pool_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
		     struct vs_error *err)
{
	int ret = pool_need_active(p, err);

	memset(out, 0, sizeof(*out));
	if (ret < 0)
		return ret;
	ret = vs_pool_check_name(name, "Volume", err);
	if (ret < 0)
		return ret;
	return p->backend->vol_info(p, name, out, err);
}

/* The checks of a create; fills @args (format, allocation) from @a. */
int pool_vol_create_check(struct vs_pool *p, const struct vs_vol_create_args *a,
			  struct vs_vol_create_args *args, struct vs_error *err)
{
	struct vs_vol_info existing;
	int ret = pool_need_active(p, err);

	*args = *a;
	if (ret < 0)
		return ret;
	ret = vs_pool_check_name(a->name, "Volume", err);
	if (ret < 0)
		return ret;
	if (!args->format || !args->format[0])
		args->format = p->backend->default_format ? p->backend->default_format : "raw";
	if (strcmp(args->format, "raw") && strcmp(args->format, "qcow2"))
		return vs_error_set(err, -EINVAL, "unsupported volume format '%s' (raw or qcow2)",
				    args->format);
	if (args->allocation != UINT64_MAX && args->allocation > args->capacity)
		args->allocation = args->capacity;
	if (args->mode > 07777)
		return vs_error_set(err, -EINVAL, "invalid permission mode %o", args->mode);
	if (!p->backend->vol_create)
		return vs_error_set(err, -ENOTSUP, "storage pool type '%s' cannot create volumes",
				    p->def.type);
	if (a->encrypt_secret && !p->backend->encryption)
		return vs_error_set(err, -ENOTSUP,
				    "storage pool type '%s' cannot create encrypted volumes",
				    p->def.type);
	if (a->encrypt_secret && a->clone_of)
		return vs_error_set(err, -ENOTSUP,
				    "an encrypted volume cannot be a storage-side clone");
	if (p->backend->vol_info(p, a->name, &existing, NULL) == 0)
		return vs_error_set(err, -EEXIST, "storage volume '%s' already exists in pool '%s'",
				    a->name, p->def.name);
	return 0;
}

int vs_pool_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a, struct vs_error *err)
{
	struct vs_vol_build *b;
	int ret = vs_pool_vol_build_begin(p, a, &b, err);

	return ret < 0 ? ret : vs_pool_vol_build_commit(b, err);
}

/*
 * Does the backing file @backing, as recorded in a volume of pool @op whose
 * path is @path, name volume @vol of @p? Absolute paths and URLs compare
 * with the volume's path (paths through realpath, so that links and ".."
 * agree); a relative name resolves beside the overlay, as QEMU resolves it;
 * vol:POOL/VOLUME names compare by name.
 */
static bool backing_names(const char *backing, const struct vs_pool *op, const char *path,
			  const struct vs_pool *p, const struct vs_vol_info *vol)
{
	char a[PATH_MAX], b[PATH_MAX], rel[VS_POOL_PATH_MAX * 2];
	const char *slash;

	if (!strncmp(backing, "vol:", 4)) {
		size_t plen = strlen(p->def.name);

		return !strncmp(backing + 4, p->def.name, plen) && backing[4 + plen] == '/' &&
		       !strcmp(backing + 5 + plen, vol->name);
	}
	if (!strcmp(backing, vol->path))
		return true;
	if (backing[0] != '/' && !strstr(backing, "://")) {
		/* Relative: beside the overlay (same directory, or same export). */
		slash = strrchr(path, '/');
		if (!slash)
			return false;
		snprintf(rel, sizeof(rel), "%.*s/%s", (int)(slash - path), path, backing);
		if (!strcmp(rel, vol->path))
			return true;
		if (op == p && !strchr(backing, '/') && !strcmp(backing, vol->name))
			return true;
		backing = rel;
	}
	if (backing[0] != '/' || vol->path[0] != '/')
		return false;
	return realpath(backing, a) && realpath(vol->path, b) && !strcmp(a, b);
}

/* -EBUSY if a volume of @op has @vol of @p as its backing file. */
static int backing_users_in(struct vs_pool *op, struct vs_pool *p, const struct vs_vol_info *vol,
			    struct vs_error *err)
{
	struct vs_vol_list vols = { 0 };
	struct vs_pool_info info;
	int ret = 0;

	if (vs_pool_refresh(op, &info, &vols, NULL) < 0)
		return 0;
	for (size_t i = 0; i < vols.n && ret == 0; i++) {
		const struct vs_vol_info *v = &vols.v[i];

		if ((op == p && !strcmp(v->name, vol->name)) || !v->backing[0] ||
		    !backing_names(v->backing, op, v->path, p, vol))
			continue;
		ret = vs_error_set(
			err, -EBUSY,
			"Requested operation is not valid: storage volume '%s' is the "
			"backing file of volume '%s' in pool '%s'; use --force to delete "
			"it anyway",
			vol->name, v->name, op->def.name);
	}
	vs_vol_list_free(&vols);
	return ret;
}

/*
 * Refuse to delete a volume that another volume uses as its backing file:
 * in its own pool, and in the other active pools that need no connection
 * (dir, logical: a network pool's server may be away, and a delete must
 * not wait on it).
 */
static int vol_check_no_overlay(struct vs_pool *p, const struct vs_vol_info *vol,
				struct vs_error *err)
{
	char **names = NULL;
	size_t n = 0;
	int ret = backing_users_in(p, p, vol, err);

	if (ret < 0 || vs_pool_state_list(p->state, &names, &n, NULL) < 0)
		return ret;
	for (size_t i = 0; i < n && ret == 0; i++) {
		struct vs_pool *op = NULL;

		if (!strcmp(names[i], p->def.name) ||
		    vs_pool_load(p->state, names[i], &op, NULL) < 0)
			continue;
		if (op->active && !op->backend->attach)
			ret = backing_users_in(op, p, vol, err);
		vs_pool_free(op);
	}
	vs_pool_names_free(names, n);
	return ret;
}

/* @name's info into @vol, when the pool's type can @verb volumes (@can). */
static int vol_op_begin(struct vs_pool *p, const char *name, bool can, const char *verb,
			struct vs_vol_info *vol, struct vs_error *err)
{
	int ret = vs_pool_vol_info(p, name, vol, err);

	if (ret < 0)
		return ret;
	if (!can)
		return vs_error_set(err, -ENOTSUP, "storage pool type '%s' cannot %s volumes",
				    p->def.type, verb);
	return 0;
}

int vs_pool_vol_delete(struct vs_pool *p, const char *name, unsigned flags, struct vs_error *err)
{
	struct vs_vol_info vol;
	int ret = vol_op_begin(p, name, p->backend->vol_delete != NULL, "delete", &vol, err);

	if (ret < 0)
		return ret;
	ret = pool_vol_check_unforced(p, &vol, flags, err);
	if (ret == 0 && !(flags & VS_VOL_FORCE))
		ret = vol_check_no_overlay(p, &vol, err);
	if (ret < 0)
		return ret;
	ret = p->backend->vol_delete(p, &vol, err);
	if (ret == 0) {
		vs_vol_lease_remove(p->state, p->def.name, name);
		(void)vs_pool_vol_link_secret(p, name, NULL, NULL);
		pool_sanlock_remove(p, name);
	}
	return ret;
}

int vs_pool_vol_resize(struct vs_pool *p, const char *name, uint64_t capacity, unsigned flags,
		       struct vs_error *err)
{
	struct vs_vol_info vol;
	int ret = vol_op_begin(p, name, p->backend->vol_resize != NULL, "resize", &vol, err);

	if (ret < 0)
		return ret;
	if (capacity < vol.capacity) {
		if (!(flags & VS_VOL_RESIZE_SHRINK))
			return vs_error_set(err, -EINVAL,
					    "invalid argument: Can't shrink capacity below "
					    "current capacity unless shrink flag explicitly "
					    "specified");
		ret = pool_vol_check_unforced(p, &vol, flags, err);
		if (ret < 0)
			return ret;
	}
	if (capacity == vol.capacity)
		return 0;
	return p->backend->vol_resize(p, &vol, capacity, flags, err);
}

/* ---- Helpers of the backends' volume callbacks ------------------------------- */

int vs_pool_vol_not_found(struct vs_error *err, const char *name)
{
	return vs_error_set(err, -ENOENT,
			    "Storage volume not found: no storage vol with matching name '%s'",
			    name);
}

bool vs_vol_create_full(const struct vs_vol_create_args *a)
{
	return a->allocation != UINT64_MAX && a->allocation >= a->capacity && a->capacity;
}

size_t vs_pool_create_opts(struct vs_kv *kv, const char *backing, const char *backing_fmt,
			   const char *prealloc)
{
	size_t n = 0;

	if (backing) {
		kv[n++] = (struct vs_kv){ "backing_file", backing };
		if (backing_fmt && backing_fmt[0])
			kv[n++] = (struct vs_kv){ "backing_fmt", backing_fmt };
	}
	if (prealloc)
		kv[n++] = (struct vs_kv){ "preallocation", prealloc };
	return n;
}

size_t vs_pool_create_qcow2_opts(struct vs_kv *kv, const struct vs_vol_create_args *a)
{
	size_t n = 0;

	if (!a->format || strcmp(a->format, "qcow2"))
		return 0;
	if (a->compat)
		kv[n++] = (struct vs_kv){ "compat", a->compat };
	if (a->cluster_size)
		kv[n++] = (struct vs_kv){ "cluster_size", a->cluster_size };
	if (a->lazy_refcounts)
		kv[n++] = (struct vs_kv){ "lazy_refcounts", a->lazy_refcounts };
	return n;
}

size_t vs_pool_create_encrypt_opts(struct vs_kv *kv, const struct vs_vol_create_args *a,
				   const char **format)
{
	bool qcow2 = a->format && !strcmp(a->format, "qcow2");
	size_t n = 0;

	*format = a->format;
	if (!a->encrypt_secret || !a->encrypt_key_secret)
		return 0;
	if (qcow2) {
		kv[n++] = (struct vs_kv){ "encrypt.format", "luks" };
		kv[n++] = (struct vs_kv){ "encrypt.key-secret", a->encrypt_key_secret };
		if (a->encrypt_iter_time)
			kv[n++] = (struct vs_kv){ "encrypt.iter-time", a->encrypt_iter_time };
		return n;
	}
	*format = "luks";
	kv[n++] = (struct vs_kv){ "key-secret", a->encrypt_key_secret };
	if (a->encrypt_iter_time)
		kv[n++] = (struct vs_kv){ "iter-time", a->encrypt_iter_time };
	return n;
}

int vs_pool_image_resize(struct vs_pool *p, const struct vs_vol_info *vol, bool force_share,
			 uint64_t capacity, enum vs_prealloc prealloc, struct vs_error *err)
{
	uint8_t *pass = NULL;
	size_t passlen = 0;
	char uuid[37];
	bool luks = !strcmp(vol->encryption, "luks") && !strcmp(vol->format, "raw");
	struct vs_open_opts o = {
		.filename = vol->path,
		.format = vol->format,
		.no_backing = true,
		.force_share = force_share,
	};
	struct vs_node *n = NULL;
	int ret;

	/*
	 * Raw LUKS: the file grows or shrinks behind the header, which stays
	 * as it is (no key needed, as for QEMU's luks truncate).
	 */
	if (luks) {
		if (capacity % 512)
			return vs_error_set(err, -EINVAL,
					    "The size of a luks image must be a "
					    "multiple of 512 bytes");
		if (vol->physical > vol->capacity)
			capacity += vol->physical - vol->capacity;
	} else if (vol->encryption[0]) {
		/* Encrypted qcow2: the open checks the passphrase, the pool's secret. */
		ret = vs_pool_vol_secret(p, vol, uuid, err);
		if (ret == 0)
			ret = vs_pool_secret_get_value(p->state, uuid, &pass, &passlen, err);
		if (ret < 0)
			return ret;
		o.key_secret_data = pass;
		o.key_secret_len = passlen;
	}
	ret = vs_image_open(&n, &o, err);
	if (pass) {
		gnutls_memset(pass, 0, passlen);
		free(pass);
	}
	if (ret < 0)
		return ret;
	ret = vs_node_truncate(n, capacity, prealloc, false, err);
	vs_node_close(n);
	return ret;
}
