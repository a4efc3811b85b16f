/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vstor/node.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
#define LOCK_NBITS 4

static const char *const perm_names[LOCK_NBITS] = {
	"consistent read",
	"write",
	"write unchanged",
	"resize",
};

static int lock_byte(int fd, int type, off_t byte)
{
	struct flock fl = {
		.l_type = (short)type,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
		return -errno;
	return 0;
}

/* True if another open file description holds a lock on @byte. */
static int byte_taken(int fd, off_t byte)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

void vs_lock_release(int fd)
{
	struct flock fl = {
		.l_type = F_UNLCK,
		.l_whence = SEEK_SET,
		.l_start = LOCK_PERM_BASE,
		.l_len = LOCK_SHARED_BASE + LOCK_NBITS - LOCK_PERM_BASE,
	};

	(void)fcntl(fd, F_OFD_SETLK, &fl);
}

int vs_lock_acquire(int fd, unsigned perm, unsigned shared, const char *filename,
		    struct vs_error *err)
{
	unsigned unshared = ~shared & VS_PERM_ALL;
	int ret;

	for (int i = 0; i < LOCK_NBITS; i++) {
		if (perm & (1u << i)) {
			ret = lock_byte(fd, F_RDLCK, LOCK_PERM_BASE + i);
			if (ret < 0)
				goto fail_lock;
		}
		if (unshared & (1u << i)) {
			ret = lock_byte(fd, F_RDLCK, LOCK_SHARED_BASE + i);
			if (ret < 0)
				goto fail_lock;
		}
	}
	for (int i = 0; i < LOCK_NBITS; i++) {
		if (perm & (1u << i)) {
			ret = byte_taken(fd, LOCK_SHARED_BASE + i);
			if (ret < 0)
				goto fail_lock;
			if (ret) {
				vs_lock_release(fd);
				return vs_error_set(err, -EAGAIN,
						    "Failed to get \"%s\" lock on '%s': another "
						    "process (QEMU or vstor) is using the image",
						    perm_names[i], filename);
			}
		}
		if (unshared & (1u << i)) {
			ret = byte_taken(fd, LOCK_PERM_BASE + i);
			if (ret < 0)
				goto fail_lock;
			if (ret) {
				vs_lock_release(fd);
				return vs_error_set(
					err, -EAGAIN,
					"Failed to get shared \"%s\" lock on '%s': "
					"another process (QEMU or vstor) is using the "
					"image; use -U (--force-share) to read it anyway",
					perm_names[i], filename);
			}
		}
	}
	return 0;

fail_lock:
	vs_lock_release(fd);
	return vs_error_setf_errno(err, ret, "Could not lock '%s'", filename);
}
