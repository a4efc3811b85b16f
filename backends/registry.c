/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pool backends. Adding one: its file under backends/TYPE/, its source
 * in backends/meson.build, and one line in the table below.
 */
#include "pool.h"

#include <string.h>

#include "pool-int.h"

static const struct vs_pool_backend *const backends[] = {
	&vs_pool_backend_dir,
#ifdef VSTOR_HAVE_NFS
	&vs_pool_backend_netfs,
#endif
#ifdef VSTOR_HAVE_ISCSI
	&vs_pool_backend_iscsi,
#endif
#ifdef VSTOR_HAVE_LVM
	&vs_pool_backend_logical,
#endif
};

#define NB_BACKENDS (sizeof(backends) / sizeof(backends[0]))

const struct vs_pool_backend *vs_pool_backend_find(const char *type)
{
	for (size_t i = 0; i < NB_BACKENDS; i++)
		if (!strcmp(backends[i]->type, type))
			return backends[i];
	return NULL;
}

const char *const *vs_pool_backend_types(void)
{
	static const char *types[NB_BACKENDS + 1];

	for (size_t i = 0; i < NB_BACKENDS; i++)
		types[i] = backends[i]->type;
	return types;
}
