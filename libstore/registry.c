/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The driver registry. Every driver registers itself (VS_DRIVER_REGISTER in
 * its own file, run before main as QEMU's block_init and nbdkit's plugin
 * registration are), carrying its name and the filename prefixes it serves.
 * The graph builder asks the registry; it keeps no list of drivers, and no
 * driver has to be named anywhere else for its images to open.
 */
#include "driver.h"

#include <string.h>

#define MAX_DRIVERS 32

static const struct vs_driver *registry[MAX_DRIVERS];
static unsigned nregistered;

void vs_driver_register(const struct vs_driver *drv)
{
	for (unsigned i = 0; i < nregistered; i++)
		if (registry[i] == drv)
			return;
	/* A fixed table: overflowing it is a build error of ours, not input. */
	if (nregistered < MAX_DRIVERS)
		registry[nregistered++] = drv;
}

const struct vs_driver *vs_driver_find(const char *name)
{
	for (unsigned i = 0; i < nregistered; i++)
		if (!strcmp(registry[i]->name, name))
			return registry[i];
	return NULL;
}

const struct vs_driver *vs_driver_probe(const uint8_t *buf, size_t len, const char *filename)
{
	const struct vs_driver *best = vs_driver_find("raw");
	int best_score = 0;

	for (unsigned i = 0; i < nregistered; i++) {
		const struct vs_driver *drv = registry[i];
		int score;

		if (!drv->is_format || !drv->probe)
			continue;
		score = drv->probe(buf, len, filename);
		if (score > best_score) {
			best_score = score;
			best = drv;
		}
	}
	return best;
}

const struct vs_driver *vs_protocol_driver_for(const char *filename)
{
	const struct vs_driver *best = NULL;
	size_t best_len = 0;

	/* The longest prefix wins, so the order of registration never matters. */
	for (unsigned i = 0; i < nregistered; i++) {
		const char *const *p = registry[i]->prefixes;

		for (; p && *p; p++) {
			size_t len = strlen(*p);

			if (len > best_len && !strncmp(filename, *p, len)) {
				best = registry[i];
				best_len = len;
			}
		}
	}
	/* A name no prefix claims is a local path, as in QEMU. */
	return best ? best : vs_driver_find("file");
}

const struct vs_create_opt_desc *vs_format_create_opts(const char *format)
{
	const struct vs_driver *drv = vs_driver_find(format);

	if (!drv || !drv->is_format)
		return NULL;
	return drv->create_opts;
}

const struct vs_create_opt_desc *vs_format_amend_opts(const char *format)
{
	static const struct vs_create_opt_desc none[] = { { NULL, NULL, NULL } };
	const struct vs_driver *drv = vs_driver_find(format);

	if (!drv || !drv->is_format)
		return NULL;
	return drv->amend && drv->amend_opts ? drv->amend_opts : none;
}
