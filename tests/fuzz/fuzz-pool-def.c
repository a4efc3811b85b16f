/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: pool definitions (pool-define reads them from any file):
 * the JSON parser, the libvirt pool XML parser, and the mapping onto a
 * definition, which is serialised again and must parse back to the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vs_pool_def *def = malloc(sizeof(*def)), *again = malloc(sizeof(*again));
	char *text = malloc(size + 1);
	struct vs_error err = { 0 };
	bool active = false;
	char *json;

	if (!def || !again || !text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (vs_pool_def_parse(def, text, "fuzz", &active, &err) == 0) {
		json = vs_pool_def_to_json(def, active);
		if (!json)
			abort();
		/* What we write, we read back unchanged. */
		if (vs_pool_def_parse(again, json, "again", NULL, NULL) < 0 ||
		    memcmp(def->name, again->name, sizeof(def->name)) ||
		    memcmp(def->target, again->target, sizeof(def->target)) ||
		    def->nb_source_devs != again->nb_source_devs ||
		    def->nb_extra != again->nb_extra)
			abort();
		free(json);
	} else if (!err.msg[0]) {
		abort(); /* every failure says why */
	}
	free(text);
	free(again);
	free(def);
	return 0;
}
