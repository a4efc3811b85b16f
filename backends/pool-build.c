/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Building volumes under a temporary name: a volume is created as
 * NAME.vstor-tmp-XXXX with a record in DIR/building/POOL, renamed into place
 * when complete, and deleted by the next refresh when its builder died.
 */
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool-int.h"

/* ---- Building volumes under a temporary name ------------------------------------ */

#define BUILD_TAG ".vstor-tmp-"

struct vs_vol_build {
	struct vs_pool *p;
	char name[VS_POOL_NAME_MAX + 1]; /* the final name */
	char tmp[VS_POOL_NAME_MAX + 1];	 /* the name it is built under */
	char record[VS_POOL_PATH_MAX];	 /* DIR/building/POOL/TMP, "" without one */
	int record_fd;			 /* flock'ed while the build runs */
};

const char *vs_vol_build_name(const struct vs_vol_build *b)
{
	return b->tmp;
}

bool pool_build_tmp_name(const char *name)
{
	const char *tag = strstr(name, BUILD_TAG);

	return name[0] == '.' && tag && strlen(tag) == strlen(BUILD_TAG) + 6 && !strchr(name, '/');
}

static void build_record_drop(struct vs_vol_build *b)
{
	if (b->record[0])
		(void)unlink(b->record);
	if (b->record_fd >= 0)
		close(b->record_fd); /* drops the flock */
	b->record_fd = -1;
}

/*
 * Record the build of b->tmp in the state directory and lock the record.
 * A refresh that finds a record nobody locks deletes the volume it names.
 * -EEXIST when the name is taken (the caller picks another).
 */
static int build_record(struct vs_vol_build *b, struct vs_error *err)
{
	struct stat st1, st2;
	int ret;

	ret = pool_state_file(b->p->state, b->record, sizeof(b->record), "building", b->p->def.name,
			      "");
	if (ret == 0)
		ret = pool_mkdir_p(b->record, 0755);
	if (ret == 0) {
		size_t len = strlen(b->record);

		if (len + 1 + strlen(b->tmp) >= sizeof(b->record))
			ret = -ENAMETOOLONG;
		else
			snprintf(b->record + len, sizeof(b->record) - len, "/%s", b->tmp);
	}
	if (ret < 0) {
		b->record[0] = '\0';
		return vs_error_setf_errno(err, ret, "Cannot record the build of volume '%s'",
					   b->name);
	}
	b->record_fd = open(b->record, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (b->record_fd < 0) {
		ret = -errno;
		b->record[0] = '\0';
		return ret == -EEXIST ?
			       ret :
			       vs_error_setf_errno(err, ret, "Cannot record the build of '%s'",
						   b->name);
	}
	/* A refresh may have taken it for a dead build between the create and the lock. */
	if (flock(b->record_fd, LOCK_EX | LOCK_NB) < 0 || fstat(b->record_fd, &st1) < 0 ||
	    stat(b->record, &st2) < 0 || st1.st_ino != st2.st_ino || st1.st_dev != st2.st_dev) {
		close(b->record_fd);
		b->record_fd = -1;
		b->record[0] = '\0';
		return -EEXIST;
	}
	return 0;
}

static void build_free(struct vs_vol_build *b)
{
	build_record_drop(b);
	free(b);
}

/* Delete the volume @name of @p if it is there (a build that did not finish). */
static void build_delete_vol(struct vs_pool *p, const char *name);

/* The passphrase of an encrypted volume, for the create only. */
static int build_secret(struct vs_vol_build *b, struct vs_vol_create_args *a, struct vs_error *err)
{
	return pool_secret_register(b->p->state, a->encrypt_secret, &a->encrypt_key_secret, err);
}

int vs_pool_vol_build_begin(struct vs_pool *p, const struct vs_vol_create_args *a,
			    struct vs_vol_build **out, struct vs_error *err)
{
	struct vs_vol_create_args args;
	struct vs_vol_build *b;
	int ret = pool_vol_create_check(p, a, &args, err);

	if (ret < 0)
		return ret;
	b = calloc(1, sizeof(*b));
	if (!b)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	b->p = p;
	b->record_fd = -1;
	strcpy(b->name, a->name);
	strcpy(b->tmp, a->name);
	if (p->backend->vol_rename) {
		for (int tries = 0;; tries++) {
			uint8_t rnd[3];

			if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
				rnd[0] = rnd[1] = rnd[2] = (uint8_t)(getpid() + tries);
			/* Short enough for VS_POOL_NAME_MAX; LVM's characters only. */
			snprintf(b->tmp, sizeof(b->tmp), ".%.100s" BUILD_TAG "%02x%02x%02x",
				 a->name, rnd[0], rnd[1], rnd[2]);
			ret = build_record(b, err);
			if (ret != -EEXIST)
				break;
			if (tries == 16) {
				ret = vs_error_set(err, -EEXIST,
						   "Cannot find a free temporary name for '%s'",
						   a->name);
				break;
			}
		}
		if (ret < 0) {
			build_free(b);
			return ret;
		}
		args.name = b->tmp;
	}
	if (a->encrypt_secret) {
		ret = build_secret(b, &args, err);
		if (ret < 0) {
			build_free(b);
			return ret;
		}
	}
	ret = p->backend->vol_create(p, &args, err);
	if (args.encrypt_key_secret)
		(void)vs_secret_remove(args.encrypt_key_secret);
	if (ret == 0 && a->encrypt_secret)
		ret = vs_pool_vol_link_secret(p, b->tmp, a->encrypt_secret, err);
	if (ret < 0) {
		if (a->encrypt_secret)
			build_delete_vol(p, b->tmp);
		build_free(b);
		return ret;
	}
	*out = b;
	return 0;
}

/* Delete the volume @name of @p if it is there (a build that did not finish). */
static void build_delete_vol(struct vs_pool *p, const char *name)
{
	struct vs_vol_info vol;

	if (p->backend->vol_info(p, name, &vol, NULL) == 0 && p->backend->vol_delete)
		(void)p->backend->vol_delete(p, &vol, NULL);
	vs_vol_lease_remove(p->state, p->def.name, name);
	(void)vs_pool_vol_link_secret(p, name, NULL, NULL);
}

int vs_pool_vol_build_commit(struct vs_vol_build *b, struct vs_error *err)
{
	struct vs_pool *p = b->p;
	struct vs_vol_info vol;
	int ret = 0;

	if (!strcmp(b->tmp, b->name)) {
		build_free(b);
		return 0;
	}
	ret = p->backend->vol_info(p, b->tmp, &vol, err);
	if (ret == 0)
		ret = p->backend->vol_rename(p, &vol, b->name, err);
	if (ret == -EEXIST)
		ret = vs_error_set(err, -EEXIST, "storage volume '%s' already exists in pool '%s'",
				   b->name, p->def.name);
	if (ret < 0) {
		vs_pool_vol_build_abort(b);
		return ret;
	}
	vs_vol_lease_remove(p->state, p->def.name, b->tmp);
	vs_pool_vol_rename_secret(p, b->tmp, b->name);
	build_free(b);
	return 0;
}

void vs_pool_vol_build_abort(struct vs_vol_build *b)
{
	if (!b)
		return;
	build_delete_vol(b->p, b->tmp);
	build_free(b);
}

/*
 * Delete what builds that died left in @p: each record in
 * DIR/building/POOL that nobody holds locked names a volume to delete.
 */
void pool_build_cleanup(struct vs_pool *p)
{
	char dir[VS_POOL_PATH_MAX], path[VS_POOL_PATH_MAX];
	struct dirent *de;
	DIR *d;

	if (!p->backend->vol_rename ||
	    pool_state_file(p->state, dir, sizeof(dir), "building", p->def.name, "") < 0)
		return;
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st1, st2;
		int fd, n;

		if (!pool_build_tmp_name(de->d_name))
			continue;
		n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(path))
			continue;
		fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		/* Locked: the build runs. Gone meanwhile: another refresh took it. */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st1) == 0 &&
		    stat(path, &st2) == 0 && st1.st_ino == st2.st_ino && st1.st_dev == st2.st_dev) {
			build_delete_vol(p, de->d_name);
			(void)unlink(path);
		}
		close(fd);
	}
	closedir(d);
}
