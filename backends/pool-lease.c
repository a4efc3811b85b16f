/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Whether a volume is in use: its lock bytes (QEMU's, on the image itself)
 * or, for volumes that are not local files, its lease file under
 * DIR/leases/POOL.
 */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lock.h"
#include "pool-int.h"

/* ---- Volume locks ---------------------------------------------------------- */

static int lock_check_fd(int fd, const char *name, struct vs_error *err)
{
	struct vs_error e = { 0 };
	int ret;

	/*
	 * Claim write and resize without sharing them: this conflicts with
	 * every writer (byte 101/103 held) and every user that does not let
	 * others write (201/203 held), as QEMU's own check would.
	 */
	ret = vs_lock_acquire(fd, VS_PERM_WRITE | VS_PERM_RESIZE,
			      VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED, name, &e);
	vs_lock_release(fd);
	if (ret == -EAGAIN)
		return vs_error_set(err, -EBUSY,
				    "storage volume '%s' is in use (opened by an export, a "
				    "convert or QEMU); use --force to override",
				    name);
	if (ret < 0)
		return vs_error_set(err, ret, "%s", e.msg);
	return 0;
}

static int lease_path(struct vs_pool_state *st, const char *pool, const char *vol, char *out,
		      size_t outsz, bool mkdirs)
{
	char dir[VS_POOL_PATH_MAX];
	int n;

	if (pool_state_file(st, dir, sizeof(dir), "leases", pool, "") < 0)
		return -ENAMETOOLONG;
	if (mkdirs && mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	n = snprintf(out, outsz, "%s/%s.lease", dir, vol);
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/*
 * Open the file that carries @vol's locks into *@fd: the image itself, or
 * its lease (*@fd = -1 when the volume was never leased: nobody holds it).
 */
static int vol_lock_fd(struct vs_pool *p, const struct vs_vol_info *vol, int *fd,
		       struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];

	*fd = -1;
	if (vol->type == VS_VOL_FILE || vol->type == VS_VOL_BLOCK) {
		*fd = open(vol->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		return *fd >= 0 ? 0 :
				  vs_error_setf_errno(err, -errno, "Cannot open '%s'", vol->path);
	}
	if (lease_path(p->state, p->def.name, vol->name, path, sizeof(path), false) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "Volume name too long");
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0 && errno == ENOENT)
		return 0;
	return *fd >= 0 ? 0 : vs_error_setf_errno(err, -errno, "Cannot open '%s'", path);
}

int vs_pool_vol_check_unused(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	int fd, ret = pool_sanlock_check_free(p, vol->name, err);

	if (ret == 0)
		ret = vol_lock_fd(p, vol, &fd, err);
	if (ret < 0 || fd < 0)
		return ret;
	ret = lock_check_fd(fd, vol->name, err);
	close(fd);
	return ret;
}

int pool_vol_check_unforced(struct vs_pool *p, const struct vs_vol_info *vol, unsigned flags,
			    struct vs_error *err)
{
	/* --force overrides this host's users, never another host's lease. */
	if (flags & VS_VOL_FORCE)
		return pool_sanlock_check_free(p, vol->name, err);
	return vs_pool_vol_check_unused(p, vol, err);
}

int vs_pool_vol_check_closed(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	struct vs_error e = { 0 };
	int fd, ret = vol_lock_fd(p, vol, &fd, err);

	if (ret < 0 || fd < 0)
		return ret;
	/*
	 * Claim every permission and share none: this conflicts with any
	 * user that holds a permission byte or refuses to share one, readers
	 * included. Users that opened with force-share hold nothing.
	 */
	ret = vs_lock_acquire(fd, VS_PERM_ALL, 0, vol->name, &e);
	vs_lock_release(fd);
	close(fd);
	if (ret == -EAGAIN)
		return vs_error_set(err, -EBUSY,
				    "storage volume '%s' is open (by an export, a convert or QEMU)",
				    vol->name);
	if (ret < 0)
		return vs_error_set(err, ret, "%s", e.msg);
	return 0;
}

int vs_pool_vol_lease_holder(struct vs_pool *p, const char *name, uint64_t *host_id,
			     struct vs_error *err)
{
	*host_id = 0;
	if (!pool_sanlock_dir(p))
		return vs_error_set(
			err, -EINVAL,
			"pool '%s' takes no cross-host leases (no sanlock_leases field)",
			p->def.name);
	return pool_sanlock_holder(p, name, host_id, err);
}

/* ---- Leases ------------------------------------------------------------------ */

struct vs_vol_lease {
	int fd;
};

int vs_vol_lease_acquire(struct vs_pool_state *st, const char *pool, const char *vol, unsigned perm,
			 unsigned shared, struct vs_vol_lease **out, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_error e = { 0 };
	struct vs_vol_lease *l;
	int ret;

	ret = lease_path(st, pool, vol, path, sizeof(path), true);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot make the lease of volume '%s'", vol);
	l = calloc(1, sizeof(*l));
	if (!l)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (l->fd < 0) {
		ret = vs_error_setf_errno(err, -errno, "Cannot open '%s'", path);
		free(l);
		return ret;
	}
	ret = vs_lock_acquire(l->fd, perm, shared, path, &e);
	if (ret < 0) {
		close(l->fd);
		free(l);
		if (ret == -EAGAIN)
			return vs_error_set(err, -EAGAIN,
					    "storage volume '%s' of pool '%s': another process "
					    "(an export, a convert) is using the volume",
					    vol, pool);
		return vs_error_set(err, ret, "%s", e.msg);
	}
	*out = l;
	return 0;
}

void vs_vol_lease_release(struct vs_vol_lease *l)
{
	if (!l)
		return;
	close(l->fd);
	free(l);
}

void vs_vol_lease_remove(struct vs_pool_state *st, const char *pool, const char *vol)
{
	char path[VS_POOL_PATH_MAX];

	if (lease_path(st, pool, vol, path, sizeof(path), false) == 0)
		(void)unlink(path);
}
