/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dir backend: a directory of image files (raw or qcow2), one per
 * volume, named after the volume. Files are sparse; capacity, allocation
 * and available come from statvfs and each file's real allocation.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "pool-int.h"

static int dir_check_def(const struct vs_pool_def *def, struct vs_error *err)
{
	if (!def->target[0])
		return vs_error_set(err, -EINVAL, "a dir pool needs a target directory (--target)");
	if (def->target[0] != '/')
		return vs_error_set(err, -EINVAL, "the target '%s' must be an absolute path",
				    def->target);
	return 0;
}

static int vol_path(const struct vs_pool *p, const char *name, char *out, size_t outsz,
		    struct vs_error *err)
{
	int n = snprintf(out, outsz, "%s/%s", p->def.target, name);

	if (n < 0 || (size_t)n >= outsz)
		return vs_error_set(err, -ENAMETOOLONG, "volume path too long");
	return 0;
}

/*
 * pool-build: create the directory (and its parents, 0755), then apply the
 * pool's <permissions> as libvirt does: the mode given, or 0711 for a
 * directory this build creates (an existing one keeps its mode unless one
 * is given); the owner and group when given.
 */
static int dir_build(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	char tmp[VS_POOL_PATH_MAX];
	uint32_t mode, owner, group;
	bool set_owner, set_group, created = false;
	struct stat st;
	int ret;

	(void)flags;
	ret = vs_pool_def_perms(&p->def, &mode, &owner, &set_owner, &group, &set_group, err);
	if (ret < 0)
		return ret;
	if (stat(p->def.target, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return vs_error_set(err, -ENOTDIR, "'%s' exists and is not a directory",
					    p->def.target);
	} else {
		strcpy(tmp, p->def.target);
		for (char *s = tmp + 1; *s; s++) {
			if (*s != '/')
				continue;
			*s = '\0';
			if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
				return vs_error_setf_errno(err, -errno,
							   "cannot create directory '%s'", tmp);
			*s = '/';
		}
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return vs_error_setf_errno(err, -errno, "cannot create directory '%s'",
						   tmp);
		created = true;
	}
	if (!p->def.perm_mode[0] && created)
		mode = VS_POOL_DEFAULT_MODE;
	if ((set_owner || set_group) &&
	    chown(p->def.target, set_owner ? owner : (uid_t)-1, set_group ? group : (gid_t)-1) < 0)
		return vs_error_setf_errno(err, -errno, "cannot set the owner of '%s' to %s:%s",
					   p->def.target, set_owner ? p->def.perm_owner : "-1",
					   set_group ? p->def.perm_group : "-1");
	if ((p->def.perm_mode[0] || created) && chmod(p->def.target, mode) < 0)
		return vs_error_setf_errno(err, -errno, "cannot set the mode of '%s' to %04o",
					   p->def.target, (unsigned)mode);
	return 0;
}

static int dir_start(struct vs_pool *p, struct vs_error *err)
{
	struct stat st;

	if (stat(p->def.target, &st) < 0)
		return vs_error_setf_errno(err, -errno, "cannot open directory '%s'",
					   p->def.target);
	if (!S_ISDIR(st.st_mode))
		return vs_error_set(err, -ENOTDIR, "'%s' is not a directory", p->def.target);
	if (access(p->def.target, R_OK | X_OK) < 0)
		return vs_error_setf_errno(err, -errno, "cannot open directory '%s'",
					   p->def.target);
	return 0;
}

static int dir_delete(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	if (rmdir(p->def.target) < 0)
		return vs_error_setf_errno(err, -errno, "cannot remove directory '%s'",
					   p->def.target);
	return 0;
}

/* Fill @vol for the file @name; -ENOENT if there is no such regular file. */
static int dir_fill(struct vs_pool *p, const char *name, struct vs_vol_info *vol,
		    struct vs_error *err)
{
	struct stat st;
	int ret;

	memset(vol, 0, sizeof(*vol));
	strcpy(vol->name, name);
	ret = vol_path(p, name, vol->path, sizeof(vol->path), err);
	if (ret < 0)
		return ret;
	if (lstat(vol->path, &st) < 0 || !S_ISREG(st.st_mode))
		return vs_pool_vol_not_found(err, name);
	vol->type = VS_VOL_FILE;
	vol->allocation = (uint64_t)st.st_blocks * 512;
	vol->physical = (uint64_t)st.st_size;
	vol->has_times = true;
	vol->atime = st.st_atim;
	vol->mtime = st.st_mtim;
	vol->ctime = st.st_ctim;
	vol->has_perms = true;
	vol->mode = st.st_mode & 07777;
	vol->owner = st.st_uid;
	vol->group = st.st_gid;
	return vs_pool_probe_volume(p, vol, err);
}

static int dir_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
		       struct vs_error *err)
{
	struct statvfs sv;
	struct dirent *de;
	DIR *d;

	if (statvfs(p->def.target, &sv) < 0)
		return vs_error_setf_errno(err, -errno, "cannot statvfs '%s'", p->def.target);
	info->capacity = (uint64_t)sv.f_blocks * sv.f_frsize;
	info->available = (uint64_t)sv.f_bavail * sv.f_frsize;
	info->allocation = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
	if (!vols)
		return 0;
	d = opendir(p->def.target);
	if (!d)
		return vs_error_setf_errno(err, -errno, "cannot open directory '%s'",
					   p->def.target);
	while ((de = readdir(d))) {
		struct vs_vol_info *v;
		struct vs_error e = { 0 };

		/* Hidden files are the tool's own (temporaries); bad names are not volumes. */
		if (de->d_name[0] == '.' || vs_pool_check_name(de->d_name, "Volume", NULL) < 0)
			continue;
		v = vs_vol_list_add(vols);
		if (!v) {
			closedir(d);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
		if (dir_fill(p, de->d_name, v, &e) < 0)
			vols->n--; /* gone meanwhile, not a regular file, or unreadable */
	}
	closedir(d);
	return 0;
}

static int dir_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
			struct vs_error *err)
{
	return dir_fill(p, name, out, err);
}

static int dir_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a,
			  struct vs_error *err)
{
	struct vs_kv kv[9];
	const char *format;
	size_t nkv;
	char path[VS_POOL_PATH_MAX];
	bool qcow2 = !strcmp(a->format, "qcow2");
	bool full = vs_vol_create_full(a);
	int fd, ret;

	ret = vol_path(p, a->name, path, sizeof(path), err);
	if (ret < 0)
		return ret;
	if (a->backing_path && !qcow2)
		return vs_error_set(err, -EINVAL, "a backing volume needs the qcow2 format");
	/*
	 * Claim the name first: a concurrent create of the same name fails
	 * here. The mode and owner are set before any data goes in (fchmod:
	 * the umask must not change the mode asked for).
	 */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "cannot create '%s'", path);
	if ((a->set_owner || a->set_group) && fchown(fd, a->set_owner ? a->owner : (uid_t)-1,
						     a->set_group ? a->group : (gid_t)-1) < 0)
		ret = vs_error_setf_errno(err, -errno, "cannot set the owner of '%s'", path);
	else if (fchmod(fd, a->mode ? a->mode : VS_VOL_DEFAULT_MODE) < 0)
		ret = vs_error_setf_errno(err, -errno, "cannot set the mode of '%s'", path);
	close(fd);
	if (ret < 0) {
		unlink(path);
		return ret;
	}
	nkv = vs_pool_create_opts(kv, a->backing_path, a->backing_format,
				  full				? "falloc" :
				  qcow2 && a->prealloc_metadata ? "metadata" :
								  NULL);
	nkv += vs_pool_create_qcow2_opts(kv + nkv, a);
	nkv += vs_pool_create_encrypt_opts(kv + nkv, a, &format);
	ret = vs_image_create(path, format, a->capacity, kv, nkv, err);
	if (ret == 0 && !qcow2 && !full && a->allocation != UINT64_MAX && a->allocation) {
		/* --allocation below the capacity: allocate that much up front, sparse after. */
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || posix_fallocate(fd, 0, (off_t)a->allocation) != 0)
			ret = vs_error_set(err, -ENOSPC, "cannot allocate %llu bytes for '%s'",
					   (unsigned long long)a->allocation, path);
		if (fd >= 0)
			close(fd);
	}
	if (ret < 0)
		unlink(path);
	return ret;
}

static int dir_vol_delete(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	if (unlink(vol->path) < 0)
		return vs_error_setf_errno(err, -errno, "cannot remove '%s'", vol->path);
	return 0;
}

static int dir_vol_rename(struct vs_pool *p, const struct vs_vol_info *vol, const char *name,
			  struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	int ret = vol_path(p, name, path, sizeof(path), err);

	if (ret < 0)
		return ret;
	if (renameat2(AT_FDCWD, vol->path, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return vs_error_setf_errno(err, -errno, "cannot rename '%s' to '%s'", vol->path,
					   path);
	/* A file system without RENAME_NOREPLACE: link() does not replace either. */
	if (link(vol->path, path) < 0)
		return vs_error_setf_errno(err, -errno, "cannot rename '%s' to '%s'", vol->path,
					   path);
	(void)unlink(vol->path);
	return 0;
}

static int dir_vol_resize(struct vs_pool *p, const struct vs_vol_info *vol, uint64_t capacity,
			  unsigned flags, struct vs_error *err)
{
	return vs_pool_image_resize(
		p, vol, (flags & VS_VOL_FORCE) != 0, capacity,
		(flags & VS_VOL_RESIZE_ALLOCATE) ? VS_PREALLOC_FALLOC : VS_PREALLOC_OFF, err);
}

VS_POOL_BACKEND(dir_backend) = {
	.type = "dir",
	.default_format = "raw",
	.vol_formats = (const char *const[]){ "raw", "qcow2", NULL },
	.encryption = true,
	.check_def = dir_check_def,
	.build = dir_build,
	.start = dir_start,
	.delete = dir_delete,
	.refresh = dir_refresh,
	.vol_info = dir_vol_info,
	.vol_create = dir_vol_create,
	.vol_delete = dir_vol_delete,
	.vol_rename = dir_vol_rename,
	.vol_resize = dir_vol_resize,
};
