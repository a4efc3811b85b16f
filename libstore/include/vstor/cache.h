/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Cache modes, as QEMU users know them. One table (cache.c) maps each mode to
 * the three knobs that define it; see docs/cache-modes.md.
 */
#ifndef VSTOR_CACHE_H
#define VSTOR_CACHE_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vs_cache_mode {
	VS_CACHE_WRITEBACK = 0, /* default */
	VS_CACHE_NONE,
	VS_CACHE_WRITETHROUGH,
	VS_CACHE_DIRECTSYNC,
	VS_CACHE_UNSAFE,
};

struct vs_cache_knobs {
	bool direct;	    /* open files with O_DIRECT */
	bool wce;	    /* the client sees a volatile write cache (may send flushes) */
	bool flush_to_disk; /* a flush reaches stable storage (fsync) */
};

/* The knobs of @mode. */
struct vs_cache_knobs vs_cache_mode_knobs(enum vs_cache_mode mode);

/* Parse "writeback", "none", "off" (= none), "writethrough", "directsync", "unsafe".
 * Returns 0 or -EINVAL. */
int vs_cache_mode_parse(const char *s, enum vs_cache_mode *out);

/* The canonical name of @mode. */
const char *vs_cache_mode_name(enum vs_cache_mode mode);

#ifdef __cplusplus
}
#endif

#endif
