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

/*
 * A connection to one pool (the pool backend's control path). @name is an
 * rbd: name whose image part is ignored (rbd:POOL/-:OPTS). All calls block
 * the calling coroutine, not the reactor (they run on the worker pool).
 */
struct vs_rbd_pool;

int vs_rbd_pool_open(struct vs_rbd_pool **out, const char *name, struct vs_error *err);
void vs_rbd_pool_close(struct vs_rbd_pool *p);

/* Cluster capacity and free space, and the bytes the pool stores. */
int vs_rbd_pool_stat(struct vs_rbd_pool *p, uint64_t *capacity, uint64_t *available, uint64_t *used,
		     struct vs_error *err);

/* The image names of the pool: *@names malloc'd, each entry too (vs_rbd_names_free). */
int vs_rbd_list(struct vs_rbd_pool *p, char ***names, size_t *n, struct vs_error *err);
void vs_rbd_names_free(char **names, size_t n);

/*
 * Size of image @image, and the bytes it takes (fast-diff: the objects it
 * has; without fast-diff, its size), and its parent "POOL/IMAGE@SNAP" ("" if none).
 */
int vs_rbd_image_stat(struct vs_rbd_pool *p, const char *image, uint64_t *size,
		      uint64_t *allocation, char *parent, size_t parentsz, struct vs_error *err);

/* Create (thin, the cluster's default features), remove, resize, rename an image. */
int vs_rbd_create(struct vs_rbd_pool *p, const char *image, uint64_t size, struct vs_error *err);
int vs_rbd_remove(struct vs_rbd_pool *p, const char *image, struct vs_error *err);
int vs_rbd_resize(struct vs_rbd_pool *p, const char *image, uint64_t size, struct vs_error *err);
int vs_rbd_rename(struct vs_rbd_pool *p, const char *from, const char *to, struct vs_error *err);

/*
 * A copy-on-write clone @to of @from, as libvirt makes it: a snapshot of
 * @from (@snap), protected, and a clone of it with @from's features.
 */
int vs_rbd_clone(struct vs_rbd_pool *p, const char *from, const char *snap, const char *to,
		 struct vs_error *err);

#endif
