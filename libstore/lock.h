/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image locking with OFD locks in QEMU's byte layout, so that vstor and QEMU
 * exclude each other as writers both ways. For each permission bit n that a
 * user holds, it keeps a shared lock on byte 100+n; for each permission it
 * does not let others have, a shared lock on byte 200+n. A new user conflicts
 * when somebody holds 200+n for a permission n it wants, or 100+n for a
 * permission n it refuses to share. (Seen in /proc/locks with qemu-nbd 7.2:
 * a read-write qcow2 holds 100, 101, 103, 201, 203.)
 */
#ifndef VSTOR_LOCK_H
#define VSTOR_LOCK_H

#include "vstor/error.h"

/*
 * Take the lock bytes for @perm / @shared on @fd and check that nobody else
 * conflicts. On conflict, releases what it took and returns -EAGAIN with a
 * message naming the permission and @filename.
 */
int vs_lock_acquire(int fd, unsigned perm, unsigned shared, const char *filename,
		    struct vs_error *err);

/* Drop all lock bytes of @fd (closing the fd drops them too). */
void vs_lock_release(int fd);

#endif
