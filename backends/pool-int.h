/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Internal to backends/: the backends of the registry and shared helpers. */
#ifndef VSTOR_POOL_INT_H
#define VSTOR_POOL_INT_H

#include "pool.h"

extern const struct vs_pool_backend vs_pool_backend_dir;
extern const struct vs_pool_backend vs_pool_backend_netfs;   /* with libnfs */
extern const struct vs_pool_backend vs_pool_backend_iscsi;   /* with libiscsi */
extern const struct vs_pool_backend vs_pool_backend_logical; /* with liblvm2cmd */

/* libvirt pool XML -> definition (pool-xml.c). */
int vs_pool_def_from_xml(struct vs_pool_def *def, const char *text, const char *what,
			 struct vs_error *err);

/* Copy @src into @dst of @dstsz bytes; -ENAMETOOLONG when it does not fit. */
int vs_pool_strcpy(char *dst, size_t dstsz, const char *src);

/* The checked <permissions> of @def (mode 0 and *set_* false when not given). */
int vs_pool_def_perms(const struct vs_pool_def *def, uint32_t *mode, uint32_t *owner,
		      bool *set_owner, uint32_t *group, bool *set_group, struct vs_error *err);

#endif
