/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Ceph RBD images through librbd (internal to libstore and the pool
 * backends). The rbd protocol driver (driver-rbd.c) opens one cluster
 * connection per node; the rbd pool backend uses the calls below for its
 * control path.
 *
 * Image names, as QEMU spells them:
 *   rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:KEY=VALUE[:KEY=VALUE...]]
 * A ':', '@', '/' or '\' inside a part is escaped with '\'. Keys:
 *   id=ID             the cephx user (client.ID; default admin)
 *   conf=PATH         ceph.conf to read (default: librados's search path, $CEPH_CONF)
 *   keyring=PATH      keyring to read
 *   keyfile=PATH      a file holding the user's base64 key
 *   key-secret=ID     the user's key, a secret object (vstor-img --object secret,...)
 *   mon_host=HOSTS    monitors (as in ceph.conf)
 *   anything else     a librados/librbd setting (rbd_cache=false, ...)
 * Every function runs in coroutine context; librados's blocking calls run on
 * the worker pool.
 */
#ifndef VSTOR_DRIVER_RBD_H
#define VSTOR_DRIVER_RBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vstor/error.h"

/* A parsed rbd: name; the strings are owned by it. */
struct vs_rbd_spec {
	char *pool;
	char *ns; /* NULL: the default namespace */
	char *image;
	char *snap;
	struct {
		char *key;
		char *value;
	} opts[32];
	size_t nopts;
};

int vs_rbd_spec_parse(const char *name, struct vs_rbd_spec *spec, struct vs_error *err);
void vs_rbd_spec_free(struct vs_rbd_spec *spec);

#endif
