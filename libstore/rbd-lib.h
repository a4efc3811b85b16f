/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * librados and librbd, loaded when first used (internal to libstore).
 *
 * Linking them into every program costs each start about fifty shared
 * libraries (and, under AddressSanitizer, over a second), although only rbd
 * names and rbd pools need them. So libstore compiles against their headers
 * but calls them through the table below, filled by vs_rbd_lib_load() with
 * dlopen() on first use, as QEMU loads its block-rbd module. A machine
 * without librbd1 runs everything else and gets a clear error for rbd.
 */
#ifndef VSTOR_RBD_LIB_H
#define VSTOR_RBD_LIB_H

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "vstor/error.h"

/* Every library function libstore calls. */
#define VS_RADOS_FUNCS(X)            \
	X(rados_cluster_stat)        \
	X(rados_conf_parse_env)      \
	X(rados_conf_read_file)      \
	X(rados_conf_set)            \
	X(rados_connect)             \
	X(rados_create)              \
	X(rados_ioctx_create)        \
	X(rados_ioctx_destroy)       \
	X(rados_ioctx_pool_stat)     \
	X(rados_ioctx_set_namespace) \
	X(rados_shutdown)

#define VS_RBD_FUNCS(X)                  \
	X(rbd_aio_create_completion)     \
	X(rbd_aio_discard)               \
	X(rbd_aio_flush)                 \
	X(rbd_aio_get_return_value)      \
	X(rbd_aio_readv)                 \
	X(rbd_aio_release)               \
	X(rbd_aio_write_zeroes)          \
	X(rbd_aio_writev)                \
	X(rbd_clone)                     \
	X(rbd_close)                     \
	X(rbd_create4)                   \
	X(rbd_diff_iterate2)             \
	X(rbd_get_features)              \
	X(rbd_get_flags)                 \
	X(rbd_get_parent)                \
	X(rbd_get_size)                  \
	X(rbd_image_options_create)      \
	X(rbd_image_options_destroy)     \
	X(rbd_image_spec_list_cleanup)   \
	X(rbd_linked_image_spec_cleanup) \
	X(rbd_list2)                     \
	X(rbd_lock_acquire)              \
	X(rbd_lock_release)              \
	X(rbd_open)                      \
	X(rbd_open_read_only)            \
	X(rbd_remove)                    \
	X(rbd_rename)                    \
	X(rbd_resize)                    \
	X(rbd_snap_create)               \
	X(rbd_snap_is_protected)         \
	X(rbd_snap_list)                 \
	X(rbd_snap_list_end)             \
	X(rbd_snap_protect)              \
	X(rbd_snap_remove)               \
	X(rbd_snap_spec_cleanup)         \
	X(rbd_snap_unprotect)            \
	X(rbd_stat)

struct vs_rbd_lib {
#define VS_RBD_LIB_MEMBER(f) __typeof__(f) *f;
	VS_RADOS_FUNCS(VS_RBD_LIB_MEMBER)
	VS_RBD_FUNCS(VS_RBD_LIB_MEMBER)
#undef VS_RBD_LIB_MEMBER
};

/* Filled by vs_rbd_lib_load(); read-only afterwards. */
extern struct vs_rbd_lib vs_rbd;

/*
 * Load librados and librbd once per process (thread-safe); 0, or a negative
 * errno with @err saying which library or symbol is missing. Every entry
 * into the rbd code calls it before the first vs_rbd.* call.
 */
int vs_rbd_lib_load(struct vs_error *err);

#endif
