/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Internal to backends/: the backends of the registry and shared helpers. */
#ifndef VSTOR_POOL_INT_H
#define VSTOR_POOL_INT_H

#include <sys/types.h>

#include "pool.h"

extern const struct vs_pool_backend vs_pool_backend_dir;
extern const struct vs_pool_backend vs_pool_backend_netfs;   /* with libnfs */
extern const struct vs_pool_backend vs_pool_backend_iscsi;   /* with libiscsi */
extern const struct vs_pool_backend vs_pool_backend_logical; /* with liblvm2cmd */

/* An open state directory (pool-state.c). */
struct vs_pool_state {
	char path[VS_POOL_PATH_MAX];
	int lock_fd; /* -1 without lock */
};

/*
 * DIR/@sub/@name@suffix of @st into @out (@name NULL: DIR/@sub@suffix);
 * -ENAMETOOLONG when it does not fit (pool-state.c).
 */
int pool_state_file(const struct vs_pool_state *st, char *out, size_t outsz, const char *sub,
		    const char *name, const char *suffix);
/* The definition file DIR/pools/@name.json (pool-state.c). */
int pool_file(const struct vs_pool_state *st, const char *name, char *out, size_t outsz);
/* mkdir -p with @mode for the directories it creates; 0 or -errno (pool-state.c). */
int pool_mkdir_p(const char *path, mode_t mode);

/* 0 when @p is active (attached to its backend), else an error (pool.c). */
int pool_need_active(struct vs_pool *p, struct vs_error *err);

/* The checks of a create; fills @args (format, allocation) from @a (pool-vol.c). */
int pool_vol_create_check(struct vs_pool *p, const struct vs_vol_create_args *a,
			  struct vs_vol_create_args *args, struct vs_error *err);

/* Delete what builds that died left in @p (pool-build.c). */
void pool_build_cleanup(struct vs_pool *p);

/* libvirt pool XML -> definition (pool-xml.c). */
int vs_pool_def_from_xml(struct vs_pool_def *def, const char *text, const char *what,
			 struct vs_error *err);

/* Copy @src into @dst of @dstsz bytes; -ENAMETOOLONG when it does not fit. */
int vs_pool_strcpy(char *dst, size_t dstsz, const char *src);

/* The checked <permissions> of @def (mode 0 and *set_* false when not given). */
int vs_pool_def_perms(const struct vs_pool_def *def, uint32_t *mode, uint32_t *owner,
		      bool *set_owner, uint32_t *group, bool *set_group, struct vs_error *err);

#endif
