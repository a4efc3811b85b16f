/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * NFSv3 sessions through libnfs, driven by the reactor (internal to libstore
 * and the pool backends). A session mounts one export; the nfs protocol
 * driver (driver-nfs.c) opens one per node, the netfs pool backend one per
 * operation for its directory work.
 *
 * Every function runs in coroutine context and returns 0 or -errno; the
 * control-path ones fill @err. Paths are inside the export and start with
 * '/' ("/vol.qcow2").
 */
#ifndef VSTOR_DRIVER_NFS_H
#define VSTOR_DRIVER_NFS_H

#include <stdbool.h>
#include <stdint.h>

#include "vstor/error.h"

struct vs_nfs;

/*
 * Mount the export named by @url, nfs://HOST/EXPORT[?nfsport=N&mountport=N
 * &uid=N&gid=N&autoreconnect=N] (libnfs's URL form; the whole path is the
 * export). NFSv3 only.
 */
int vs_nfs_mount(struct vs_nfs **out, const char *url, struct vs_error *err);

/* Unmount and free. NULL is a no-op. */
void vs_nfs_unmount(struct vs_nfs *s);

struct vs_nfs_stat {
	uint64_t size;
	uint64_t used; /* bytes the server allocates */
	bool is_dir;
	bool is_reg;
	uint32_t mode;
	uint32_t uid, gid;
};

int vs_nfs_stat(struct vs_nfs *s, const char *path, struct vs_nfs_stat *st, struct vs_error *err);

/* Capacity and available bytes of the export's file system. */
int vs_nfs_statvfs(struct vs_nfs *s, uint64_t *capacity, uint64_t *available, struct vs_error *err);

/* Create an empty regular file (mode 0644); -EEXIST with @excl when it exists. */
int vs_nfs_create(struct vs_nfs *s, const char *path, bool excl, struct vs_error *err);
int vs_nfs_unlink(struct vs_nfs *s, const char *path, struct vs_error *err);
int vs_nfs_truncate(struct vs_nfs *s, const char *path, uint64_t size, struct vs_error *err);
int vs_nfs_rename(struct vs_nfs *s, const char *from, const char *to, struct vs_error *err);
/* A hard link @to of @from (LINK: -EEXIST when @to exists, never replaces it). */
int vs_nfs_link(struct vs_nfs *s, const char *from, const char *to, struct vs_error *err);
/* SETATTR mode (07777 bits) / owner and group (-1: unchanged). */
int vs_nfs_chmod(struct vs_nfs *s, const char *path, uint32_t mode, struct vs_error *err);
int vs_nfs_chown(struct vs_nfs *s, const char *path, int uid, int gid, struct vs_error *err);
int vs_nfs_mkdir(struct vs_nfs *s, const char *path, struct vs_error *err);

/*
 * Call @fn for every entry of directory @path except "." and "..". A
 * non-zero return of @fn stops the walk and is returned.
 */
typedef int vs_nfs_dir_fn(const char *name, const struct vs_nfs_stat *st, void *opaque);
int vs_nfs_list(struct vs_nfs *s, const char *path, vs_nfs_dir_fn *fn, void *opaque,
		struct vs_error *err);

/*
 * The exports @host's MOUNT service lists (found through its portmapper),
 * as virsh find-storage-pool-sources does for netfs. Blocking; not on a
 * reactor. *@dirs is a malloc'd array of *@n malloc'd paths (free both).
 */
int vs_nfs_exports(const char *host, char ***dirs, size_t *n, struct vs_error *err);

#endif
