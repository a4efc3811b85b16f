/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: vstor-img's command-line value parsers. The input is split
 * at the first newline: the first part goes to the size parser (as -o
 * cluster_size=..., resize and create sizes do), the integer and cache
 * mode parsers, the second to the -o key=value list parser (",," escapes a
 * comma) and its get/set/remove, and every value of a known qcow2 create
 * option of type size through the size parser again. Invariants checked:
 * a parsed size fits in int64, and formatting it for humans terminates.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"
#include "vstor/parse.h"
#include "vstor/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sizes(const char *s)
{
	uint64_t v = 0;
	char human[64];
	enum vs_cache_mode cm;
	enum vs_prealloc pa;

	if (vs_parse_size(s, &v) == 0) {
		if (v > INT64_MAX)
			abort();
		img_size_to_str(v, human, sizeof(human));
		if (!memchr(human, '\0', sizeof(human)))
			abort();
	}
	(void)img_parse_uint(s, UINT32_MAX, &v);
	(void)vs_cache_mode_parse(s, &cm);
	(void)vs_prealloc_parse(s, &pa);
}

static void options(const char *s)
{
	const struct vs_create_opt_desc *desc = vs_format_create_opts("qcow2");
	struct img_kv_list l = { 0 };

	if (img_kv_parse(&l, s) == 0) {
		for (size_t i = 0; i < l.n; i++) {
			if (!l.kv[i].key || !l.kv[i].value)
				abort();
			for (size_t d = 0; desc && desc[d].name; d++)
				if (!strcmp(desc[d].name, l.kv[i].key) &&
				    !strcmp(desc[d].type, "size"))
					sizes(l.kv[i].value);
		}
		if (l.n) {
			char *key = strdup(l.kv[0].key);

			if (!key)
				abort();
			(void)img_kv_get(&l, key);
			if (img_kv_set(&l, key, "x") == 0 && strcmp(img_kv_get(&l, key), "x"))
				abort();
			img_kv_remove(&l, key);
			if (img_kv_get(&l, key))
				abort();
			free(key);
		}
	}
	img_kv_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	char *nl;

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		options(nl + 1);
	}
	sizes(s);
	free(s);
	return 0;
}
