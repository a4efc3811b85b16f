/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic pool layer: names, extras and volume lists, and the pool
 * operations with the checks each makes before it calls a backend. The
 * definitions and the state directory are in pool-state.c, volumes in
 * pool-vol.c, pool-build.c, pool-lease.c and pool-open.c.
 */
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool-int.h"

int vs_pool_strcpy(char *dst, size_t dstsz, const char *src)
{
	size_t len = strlen(src);

	if (len >= dstsz)
		return -ENAMETOOLONG;
	memcpy(dst, src, len + 1);
	return 0;
}

/* ---- Names, extras, lists ----------------------------------------------- */

int vs_pool_check_name(const char *name, const char *what, struct vs_error *err)
{
	size_t len = strlen(name);

	if (!len)
		return vs_error_set(err, -EINVAL, "%s name must not be empty", what);
	if (len > VS_POOL_NAME_MAX)
		return vs_error_set(err, -EINVAL, "%s name '%.32s...' is longer than %d bytes",
				    what, name, VS_POOL_NAME_MAX);
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return vs_error_set(err, -EINVAL, "%s name '%s' is not allowed", what, name);
	if (name[0] == '-')
		return vs_error_set(err, -EINVAL, "%s name '%s' must not start with '-'", what,
				    name);
	for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
		if (*c == '/')
			return vs_error_set(err, -EINVAL, "%s name '%s' must not contain '/'", what,
					    name);
		if (*c < 0x20 || *c == 0x7f)
			return vs_error_set(err, -EINVAL,
					    "%s name must not contain control characters", what);
	}
	return 0;
}

const char *vs_pool_def_extra(const struct vs_pool_def *def, const char *key)
{
	for (unsigned i = 0; i < def->nb_extra; i++)
		if (!strcmp(def->extra[i].key, key))
			return def->extra[i].value;
	return NULL;
}

int vs_pool_def_set_extra(struct vs_pool_def *def, const char *key, const char *value)
{
	unsigned i;

	for (i = 0; i < def->nb_extra; i++)
		if (!strcmp(def->extra[i].key, key))
			break;
	if (i == VS_POOL_MAX_EXTRA)
		return -ENOSPC;
	if (strlen(key) >= sizeof(def->extra[i].key) ||
	    strlen(value) >= sizeof(def->extra[i].value))
		return -ENAMETOOLONG;
	strcpy(def->extra[i].key, key);
	strcpy(def->extra[i].value, value);
	if (i == def->nb_extra)
		def->nb_extra++;
	return 0;
}

const char *vs_vol_type_name(enum vs_vol_type t)
{
	switch (t) {
	case VS_VOL_FILE:
		return "file";
	case VS_VOL_BLOCK:
		return "block";
	case VS_VOL_NETWORK:
		return "network";
	case VS_VOL_MAPPED:
		return "mapped";
	}
	return "unknown";
}

int vs_pool_parse_mode(const char *s, uint32_t *mode)
{
	char *end;
	unsigned long v;

	if (s[0] < '0' || s[0] > '7') /* no sign, no blank: strtoul would take them */
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno || *end || v > 07777)
		return -EINVAL;
	*mode = (uint32_t)v;
	return 0;
}

int vs_pool_parse_id(const char *s, uint32_t *id, bool *given)
{
	char *end;
	unsigned long long v;

	*given = false;
	if (!s[0] || !strcmp(s, "-1"))
		return 0;
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v >= UINT32_MAX)
		return -EINVAL;
	*id = (uint32_t)v;
	*given = true;
	return 0;
}

/* The pool's <permissions>, checked; "not given" as 0 / false. */
int vs_pool_def_perms(const struct vs_pool_def *def, uint32_t *mode, uint32_t *owner,
		      bool *set_owner, uint32_t *group, bool *set_group, struct vs_error *err)
{
	*mode = 0;
	if (def->perm_mode[0] && vs_pool_parse_mode(def->perm_mode, mode) < 0)
		return vs_error_set(err, -EINVAL,
				    "pool '%s': permission mode '%s' is not an octal mode",
				    def->name, def->perm_mode);
	if (vs_pool_parse_id(def->perm_owner, owner, set_owner) < 0)
		return vs_error_set(err, -EINVAL, "pool '%s': owner '%s' is not a numeric id",
				    def->name, def->perm_owner);
	if (vs_pool_parse_id(def->perm_group, group, set_group) < 0)
		return vs_error_set(err, -EINVAL, "pool '%s': group '%s' is not a numeric id",
				    def->name, def->perm_group);
	return 0;
}

struct vs_vol_info *vs_vol_list_add(struct vs_vol_list *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct vs_vol_info *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		l->v = v;
		l->cap = cap;
	}
	memset(&l->v[l->n], 0, sizeof(l->v[0]));
	return &l->v[l->n++];
}

static int vol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vs_vol_info *)a)->name, ((const struct vs_vol_info *)b)->name);
}

void vs_vol_list_sort(struct vs_vol_list *l)
{
	if (l->n)
		qsort(l->v, l->n, sizeof(l->v[0]), vol_cmp);
}

void vs_vol_list_free(struct vs_vol_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* ---- Pool operations ------------------------------------------------------ */

static int pool_attach(struct vs_pool *p, struct vs_error *err)
{
	int ret;

	if (p->attached || !p->backend->attach)
		return 0;
	ret = p->backend->attach(p, err);
	if (ret < 0)
		return ret;
	p->attached = true;
	return 0;
}

int pool_need_active(struct vs_pool *p, struct vs_error *err)
{
	if (!p->active)
		return vs_error_set(err, -EINVAL,
				    "Requested operation is not valid: storage pool '%s' is not "
				    "active",
				    p->def.name);
	return pool_attach(p, err);
}

static int need_inactive(struct vs_pool *p, struct vs_error *err)
{
	if (p->active)
		return vs_error_set(err, -EBUSY,
				    "Requested operation is not valid: storage pool '%s' is still "
				    "active",
				    p->def.name);
	return 0;
}

int vs_pool_build(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	int ret;

	if ((flags & VS_POOL_BUILD_OVERWRITE) && (flags & VS_POOL_BUILD_NO_OVERWRITE))
		return vs_error_set(err, -EINVAL,
				    "--overwrite and --no-overwrite are mutually exclusive");
	ret = need_inactive(p, err);
	if (ret < 0)
		return ret;
	if (p->backend->build) {
		ret = pool_attach(p, err);
		if (ret == 0)
			ret = p->backend->build(p, flags, err);
		if (ret < 0)
			return ret;
	}
	/* Shared pools with cross-host leases: the sanlock lockspace. */
	return pool_sanlock_build(p, err);
}

int vs_pool_start(struct vs_pool *p, struct vs_error *err)
{
	int ret;

	if (p->active)
		return vs_error_set(
			err, -EBUSY,
			"Requested operation is not valid: storage pool '%s' is already "
			"active",
			p->def.name);
	/* A redefinition made while it ran and not taken at its stop. */
	ret = vs_pool_apply_next(p, err);
	if (ret == 0)
		ret = pool_attach(p, err);
	if (ret == 0 && p->backend->start)
		ret = p->backend->start(p, err);
	/* Join the lockspace now, in the background: the first writer need not wait. */
	if (ret == 0)
		ret = pool_sanlock_start(p, err);
	if (ret < 0)
		return ret;
	p->active = true;
	ret = vs_pool_save(p, err);
	if (ret < 0) {
		if (p->backend->stop)
			p->backend->stop(p, NULL);
		p->active = false;
	}
	return ret;
}

static int pool_busy(struct vs_pool *p, const char *verb, const struct vs_vol_info *vol,
		     struct vs_error *err)
{
	struct vs_error e = { 0 };

	if (vs_pool_vol_check_closed(p, vol, &e) != -EBUSY)
		return 0;
	return vs_error_set(err, -EBUSY,
			    "Requested operation is not valid: cannot %s storage pool '%s': %s; "
			    "use --force to override",
			    verb, p->def.name, e.msg);
}

/*
 * -EBUSY when a volume of @p is open. Volumes that are not local files
 * carry their locks on a lease in the state directory: every lease of the
 * pool is checked there, without reaching the storage (a network pool's
 * server may be away, and pool-destroy must not wait on it). Local files
 * and block devices (dir; logical with device-mapper) carry them on the
 * volume: the backend lists those, if it can without a connection (an
 * inactive pool may still answer; storage that cannot be listed has
 * nothing open to protect).
 */
static int pool_check_closed(struct vs_pool *p, const char *verb, struct vs_error *err)
{
	struct vs_vol_list vols = { 0 };
	struct vs_pool_info info;
	char dir[VS_POOL_PATH_MAX];
	struct dirent *de;
	int ret = 0;
	DIR *d;

	if (pool_state_file(p->state, dir, sizeof(dir), "leases", p->def.name, "") == 0 &&
	    (d = opendir(dir))) {
		while (ret == 0 && (de = readdir(d))) {
			struct vs_vol_info v = { .type = VS_VOL_NETWORK };
			size_t len = strlen(de->d_name);

			if (len <= 6 || len - 6 > VS_POOL_NAME_MAX ||
			    strcmp(de->d_name + len - 6, ".lease"))
				continue;
			memcpy(v.name, de->d_name, len - 6);
			ret = pool_busy(p, verb, &v, err);
		}
		closedir(d);
	}
	if (ret < 0 || p->backend->attach || p->backend->refresh(p, &info, &vols, NULL) < 0) {
		vs_vol_list_free(&vols);
		return ret;
	}
	for (size_t i = 0; i < vols.n && ret == 0; i++)
		if (vols.v[i].type == VS_VOL_FILE || vols.v[i].type == VS_VOL_BLOCK)
			ret = pool_busy(p, verb, &vols.v[i], err);
	vs_vol_list_free(&vols);
	return ret;
}

int vs_pool_stop(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	int ret;

	if (!p->active)
		return vs_error_set(err, -EINVAL,
				    "Requested operation is not valid: storage pool '%s' is not "
				    "active",
				    p->def.name);
	if (!(flags & VS_POOL_FORCE)) {
		ret = pool_check_closed(p, "destroy", err);
		if (ret < 0)
			return ret;
	}
	if (p->backend->stop) {
		ret = p->backend->stop(p, err);
		if (ret < 0)
			return ret;
	}
	p->active = false;
	ret = vs_pool_save(p, err);
	if (ret < 0) {
		p->active = true;
		return ret;
	}
	/* Stopped: a redefinition made while it ran takes over (else at pool-start). */
	(void)vs_pool_apply_next(p, NULL);
	return 0;
}

int vs_pool_delete(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	int ret = need_inactive(p, err);

	if (ret < 0)
		return ret;
	if (!p->backend->delete)
		return vs_error_set(err, -ENOTSUP, "pool type '%s' cannot be deleted", p->def.type);
	if (!(flags & VS_POOL_FORCE)) {
		ret = pool_check_closed(p, "delete", err);
		if (ret < 0)
			return ret;
	}
	ret = pool_attach(p, err);
	return ret < 0 ? ret : p->backend->delete (p, flags & ~VS_POOL_FORCE, err);
}

int vs_pool_undefine(struct vs_pool *p, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	int ret = need_inactive(p, err);

	if (ret < 0)
		return ret;
	pool_file(p->state, p->def.name, path, sizeof(path));
	if (unlink(path) < 0)
		return vs_error_setf_errno(err, -errno, "Cannot remove '%s'", path);
	if (pool_next_file(p->state, p->def.name, path, sizeof(path)) == 0)
		(void)unlink(path);
	pool_state_file(p->state, path, sizeof(path), "leases", p->def.name, "");
	(void)rmdir(path); /* leases of volumes: only if none is left */
	pool_state_file(p->state, path, sizeof(path), "building", p->def.name, "");
	(void)rmdir(path); /* records of builds: likewise */
	return 0;
}

int vs_pool_set_autostart(struct vs_pool *p, bool on, struct vs_error *err)
{
	bool old = p->def.autostart;
	int ret;

	p->def.autostart = on;
	ret = vs_pool_save(p, err);
	if (ret < 0)
		p->def.autostart = old;
	return ret;
}

int vs_pool_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
		    struct vs_error *err)
{
	int ret = pool_need_active(p, err);

	memset(info, 0, sizeof(*info));
	if (ret < 0)
		return ret;
	pool_build_cleanup(p);
	ret = p->backend->refresh(p, info, vols, err);
	if (ret == 0 && vols)
		vs_vol_list_sort(vols);
	return ret;
}
