/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "vstor/cache.h"

#include <errno.h>
#include <string.h>

/* The one table: DESIGN.md section 5. */
static const struct {
	const char *name;
	struct vs_cache_knobs knobs;
} cache_modes[] = {
	[VS_CACHE_WRITEBACK] = { "writeback",
				 { .direct = false, .wce = true, .flush_to_disk = true } },
	[VS_CACHE_NONE] = { "none", { .direct = true, .wce = true, .flush_to_disk = true } },
	[VS_CACHE_WRITETHROUGH] = { "writethrough",
				    { .direct = false, .wce = false, .flush_to_disk = true } },
	[VS_CACHE_DIRECTSYNC] = { "directsync",
				  { .direct = true, .wce = false, .flush_to_disk = true } },
	[VS_CACHE_UNSAFE] = { "unsafe", { .direct = false, .wce = true, .flush_to_disk = false } },
};

struct vs_cache_knobs vs_cache_mode_knobs(enum vs_cache_mode mode)
{
	if ((unsigned)mode >= sizeof(cache_modes) / sizeof(cache_modes[0]))
		mode = VS_CACHE_WRITEBACK;
	return cache_modes[mode].knobs;
}

const char *vs_cache_mode_name(enum vs_cache_mode mode)
{
	if ((unsigned)mode >= sizeof(cache_modes) / sizeof(cache_modes[0]))
		return "unknown";
	return cache_modes[mode].name;
}

int vs_cache_mode_parse(const char *s, enum vs_cache_mode *out)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "off")) { /* qemu-img accepts "off" for none */
		*out = VS_CACHE_NONE;
		return 0;
	}
	for (unsigned i = 0; i < sizeof(cache_modes) / sizeof(cache_modes[0]); i++) {
		if (!strcmp(s, cache_modes[i].name)) {
			*out = (enum vs_cache_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}
