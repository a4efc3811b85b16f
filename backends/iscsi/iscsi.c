/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The iscsi backend: the LUNs of one iSCSI target are the volumes, through
 * libiscsi (libstore/driver-iscsi.h). The pool is --source-host HOST[:PORT]
 * --source-dev IQN, with --source-initiator, and CHAP as --auth-type chap
 * --auth-username U --auth-secret-file F (mutual CHAP: --extra
 * mutual_username=T --extra mutual_secret_file=F2). Volumes are named as
 * virsh names them, unit:0:0:LUN; their path is an iscsi:// URL that the
 * iscsi protocol driver opens. Creating, deleting and resizing LUNs are not
 * iSCSI operations: the target's administration does them.
 */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver-iscsi.h"
#include "pool-int.h"

static int iscsi_check_def(const struct vs_pool_def *def, struct vs_error *err)
{
	const char *mu = vs_pool_def_extra(def, "mutual_username");

	if (!def->source_host[0])
		return vs_error_set(err, -EINVAL, "an iscsi pool needs --source-host");
	if (def->nb_source_devs != 1 || !def->source_devs[0][0])
		return vs_error_set(err, -EINVAL,
				    "an iscsi pool needs the target IQN as one --source-dev");
	if (def->auth_type[0] && strcmp(def->auth_type, "chap"))
		return vs_error_set(err, -ENOTSUP,
				    "authentication type '%s' is not supported "
				    "(only chap)",
				    def->auth_type);
	if (!strcmp(def->auth_type, "chap") &&
	    (!def->auth_username[0] || !def->auth_secret_file[0]))
		return vs_error_set(err, -EINVAL,
				    "CHAP needs --auth-username and --auth-secret-file");
	if (mu && (!def->auth_username[0] || !vs_pool_def_extra(def, "mutual_secret_file")))
		return vs_error_set(err, -EINVAL,
				    "mutual CHAP needs CHAP as well and --extra "
				    "mutual_secret_file=FILE");
	return 0;
}

/* iscsi://[USER@]HOST[:PORT]/IQN/LUN?secret-file=..; @lun < 0: no LUN. */
static int iscsi_url(const struct vs_pool *p, int lun, char *out, size_t outsz,
		     struct vs_error *err)
{
	const struct vs_pool_def *d = &p->def;
	const char *mu = vs_pool_def_extra(d, "mutual_username");
	const char *mf = vs_pool_def_extra(d, "mutual_secret_file");
	char port[16] = "", lunstr[16] = "", q[3 * VS_POOL_PATH_MAX] = "";
	bool chap = !strcmp(d->auth_type, "chap") || d->auth_username[0];
	size_t l;
	int n;

	if (d->source_port)
		snprintf(port, sizeof(port), ":%u", d->source_port);
	if (lun >= 0)
		snprintf(lunstr, sizeof(lunstr), "/%d", lun);
	if (chap)
		snprintf(q, sizeof(q), "?secret-file=%s", d->auth_secret_file);
	if (chap && mu && mf) {
		l = strlen(q);
		snprintf(q + l, sizeof(q) - l, "&target-user=%s&target-secret-file=%s", mu, mf);
	}
	if (d->initiator_iqn[0]) {
		l = strlen(q);
		snprintf(q + l, sizeof(q) - l, "%cinitiator=%s", l ? '&' : '?', d->initiator_iqn);
	}
	n = snprintf(out, outsz, "iscsi://%s%s%s%s/%s%s%s", chap ? d->auth_username : "",
		     chap ? "@" : "", d->source_host, port, d->source_devs[0], lunstr, q);
	if (n < 0 || (size_t)n >= outsz)
		return vs_error_set(err, -ENAMETOOLONG, "iSCSI URL too long");
	return 0;
}

/* Check the secret files as the pool layer wants them (not readable by others). */
static int iscsi_check_secrets(struct vs_pool *p, struct vs_error *err)
{
	const char *mf = vs_pool_def_extra(&p->def, "mutual_secret_file");
	char buf[256];
	int ret = 0;

	if (p->def.auth_secret_file[0])
		ret = vs_pool_read_secret(p->def.auth_secret_file, buf, sizeof(buf), err);
	if (ret == 0 && mf)
		ret = vs_pool_read_secret(mf, buf, sizeof(buf), err);
	memset(buf, 0, sizeof(buf));
	return ret;
}

static int iscsi_list(struct vs_pool *p, struct vs_iscsi_lun **luns, size_t *n,
		      struct vs_error *err)
{
	char url[3 * VS_POOL_PATH_MAX];
	int ret = iscsi_check_secrets(p, err);

	if (ret == 0)
		ret = iscsi_url(p, -1, url, sizeof(url), err);
	if (ret == 0)
		ret = vs_iscsi_list_luns(url, luns, n, err);
	return ret;
}

static int iscsi_start(struct vs_pool *p, struct vs_error *err)
{
	struct vs_iscsi_lun *luns = NULL;
	size_t n;
	int ret = iscsi_list(p, &luns, &n, err);

	free(luns);
	return ret;
}

static int iscsi_fill(struct vs_pool *p, const struct vs_iscsi_lun *l, struct vs_vol_info *vol,
		      struct vs_error *err)
{
	int ret;

	memset(vol, 0, sizeof(*vol));
	snprintf(vol->name, sizeof(vol->name), "unit:0:0:%d", l->lun);
	ret = iscsi_url(p, l->lun, vol->path, sizeof(vol->path), err);
	if (ret < 0)
		return ret;
	vol->type = VS_VOL_NETWORK;
	vol->allocation = l->size;
	return vs_pool_probe_volume(p, vol, err);
}

/*
 * Call @fn on each disk of the target (LUN 0 of tgtd is its controller, not
 * a disk) until it returns non-zero; returns that, or the listing's error.
 */
static int iscsi_each_disk(struct vs_pool *p,
			   int (*fn)(struct vs_pool *p, const struct vs_iscsi_lun *l, void *opaque),
			   void *opaque, struct vs_error *err)
{
	struct vs_iscsi_lun *luns = NULL;
	size_t n = 0;
	int ret = iscsi_list(p, &luns, &n, err);

	for (size_t i = 0; i < n && ret == 0; i++)
		if (luns[i].device_type == 0)
			ret = fn(p, &luns[i], opaque);
	free(luns);
	return ret;
}

struct iscsi_walk {
	struct vs_pool_info *info;
	struct vs_vol_list *vols;
	const char *name;
	struct vs_vol_info *out;
	struct vs_error *err;
};

static int iscsi_refresh_one(struct vs_pool *p, const struct vs_iscsi_lun *l, void *opaque)
{
	struct iscsi_walk *w = opaque;
	struct vs_vol_info *v;
	struct vs_error e = { 0 };

	w->info->capacity += l->size;
	if (!w->vols)
		return 0;
	v = vs_vol_list_add(w->vols);
	if (!v)
		return vs_error_set(w->err, -ENOMEM, "Out of memory");
	if (iscsi_fill(p, l, v, &e) < 0)
		w->vols->n--;
	return 0;
}

static int iscsi_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
			 struct vs_error *err)
{
	struct iscsi_walk w = { .info = info, .vols = vols, .err = err };
	int ret;

	memset(info, 0, sizeof(*info));
	ret = iscsi_each_disk(p, iscsi_refresh_one, &w, err);
	info->allocation = info->capacity;
	info->available = 0;
	return ret;
}

/* 1 when @l is the volume asked for (and filled), 0 when it is another. */
static int iscsi_find_one(struct vs_pool *p, const struct vs_iscsi_lun *l, void *opaque)
{
	struct iscsi_walk *w = opaque;
	char name[32];
	int ret;

	snprintf(name, sizeof(name), "unit:0:0:%d", l->lun);
	if (strcmp(name, w->name))
		return 0;
	ret = iscsi_fill(p, l, w->out, w->err);
	return ret < 0 ? ret : 1;
}

static int iscsi_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
			  struct vs_error *err)
{
	struct iscsi_walk w = { .name = name, .out = out, .err = err };
	int ret = iscsi_each_disk(p, iscsi_find_one, &w, err);

	if (ret == 0)
		return vs_pool_vol_not_found(err, name);
	return ret < 0 ? ret : 0;
}

static int iscsi_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a,
			    struct vs_error *err)
{
	(void)p;
	(void)a;
	return vs_error_set(err, -ENOTSUP,
			    "iSCSI cannot create volumes: a LUN is created on the target (e.g. "
			    "tgtadm --op new --mode logicalunit); then run pool-refresh");
}

static int iscsi_vol_delete(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	(void)p;
	return vs_error_set(err, -ENOTSUP,
			    "iSCSI cannot delete volumes: remove LUN '%s' on the target "
			    "(vol-wipe clears its data)",
			    vol->name);
}

static int iscsi_vol_resize(struct vs_pool *p, const struct vs_vol_info *vol, uint64_t capacity,
			    unsigned flags, struct vs_error *err)
{
	(void)p;
	(void)capacity;
	(void)flags;
	return vs_error_set(err, -ENOTSUP,
			    "iSCSI cannot resize volumes: resize LUN '%s' on the target",
			    vol->name);
}

/* The targets of the portal --source-host[:port] (SendTargets, as iscsiadm -m discovery). */
static int iscsi_find_sources(const struct vs_pool_def *spec, struct vs_pool_def **out, size_t *n,
			      struct vs_error *err)
{
	char **iqns = NULL;
	size_t ni = 0;
	int ret;

	*out = NULL;
	*n = 0;
	if (!spec->source_host[0])
		return vs_error_set(err, -EINVAL, "hostname must be specified for iscsi sources");
	ret = vs_iscsi_discover(spec->source_host, spec->source_port,
				spec->initiator_iqn[0] ? spec->initiator_iqn : NULL, &iqns, &ni,
				err);
	if (ret == 0 && ni && !(*out = calloc(ni, sizeof(**out))))
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
	for (size_t i = 0; i < ni; i++) {
		if (ret == 0 && strlen(iqns[i]) < sizeof((*out)[i].source_devs[0])) {
			struct vs_pool_def *d = &(*out)[(*n)++];

			strcpy(d->type, "iscsi");
			strcpy(d->source_host, spec->source_host);
			d->source_port = spec->source_port ? spec->source_port : 3260;
			strcpy(d->source_devs[0], iqns[i]);
			d->nb_source_devs = 1;
		}
		free(iqns[i]);
	}
	free(iqns);
	return ret;
}

VS_POOL_BACKEND(iscsi_backend) = {
	.type = "iscsi",
	.default_format = "raw",
	.find_sources = iscsi_find_sources,
	.check_def = iscsi_check_def,
	.start = iscsi_start,
	.refresh = iscsi_refresh,
	.vol_info = iscsi_vol_info,
	.vol_create = iscsi_vol_create,
	.vol_delete = iscsi_vol_delete,
	.vol_resize = iscsi_vol_resize,
};
