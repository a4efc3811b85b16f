/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* librados and librbd through dlopen() on first use (see rbd-lib.h). */
#include "rbd-lib.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

/* The libraries' sonames (Debian's librados2 and librbd1). */
#define RADOS_SONAME "librados.so.2"
#define RBD_SONAME "librbd.so.1"

struct vs_rbd_lib vs_rbd;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void *lib_open(const char *soname, const char *package)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);

	if (!h)
		snprintf(load_error, sizeof(load_error),
			 "Ceph RBD support needs %s (Debian package %s): %s", soname, package,
			 dlerror());
	return h;
}

static void load(void)
{
	void *rados = lib_open(RADOS_SONAME, "librados2");
	void *rbd = rados ? lib_open(RBD_SONAME, "librbd1") : NULL;

	if (!rbd)
		return;
		/* The handles stay open for the life of the process. */
#define VS_RBD_LIB_SYM(lib, f)                                                    \
	if (!load_error[0] && !(vs_rbd.f = (__typeof__(vs_rbd.f))dlsym(lib, #f))) \
		snprintf(load_error, sizeof(load_error), "%s has no symbol %s", #lib, #f);
#define VS_RADOS_SYM(f) VS_RBD_LIB_SYM(rados, f)
#define VS_RBD_SYM(f) VS_RBD_LIB_SYM(rbd, f)
	VS_RADOS_FUNCS(VS_RADOS_SYM)
	VS_RBD_FUNCS(VS_RBD_SYM)
#undef VS_RBD_SYM
#undef VS_RADOS_SYM
#undef VS_RBD_LIB_SYM
}

int vs_rbd_lib_load(struct vs_error *err)
{
	pthread_once(&load_once, load);
	if (load_error[0])
		return vs_error_set(err, -ENOTSUP, "%s", load_error);
	return 0;
}
