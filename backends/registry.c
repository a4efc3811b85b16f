/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pool backend registry. Every backend registers itself: its vtable is
 * defined with VS_POOL_BACKEND(name) = { ... } in its own file, which
 * registers it before main, as libstore's drivers do. Adding one names it
 * nowhere else: its file under backends/TYPE/ and its source in
 * backends/meson.build. Types are listed in the order they registered,
 * the link order of backends/meson.build (dir, netfs, iscsi, logical).
 */
#include "pool.h"

#include <string.h>

#include "pool-int.h"

#define MAX_BACKENDS 16

static const struct vs_pool_backend *registry[MAX_BACKENDS];
static const char *types[MAX_BACKENDS + 1];
static unsigned nregistered;

void vs_pool_backend_register(const struct vs_pool_backend *b)
{
	for (unsigned i = 0; i < nregistered; i++)
		if (registry[i] == b)
			return;
	/* A fixed table: overflowing it is a build error of ours, not input. */
	if (nregistered < MAX_BACKENDS) {
		types[nregistered] = b->type;
		registry[nregistered++] = b;
	}
}

const struct vs_pool_backend *vs_pool_backend_find(const char *type)
{
	for (unsigned i = 0; i < nregistered; i++)
		if (!strcmp(registry[i]->type, type))
			return registry[i];
	return NULL;
}

const char *const *vs_pool_backend_types(void)
{
	return types;
}
