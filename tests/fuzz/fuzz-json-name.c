/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: json:{...} image names (libstore/json-name.c). A backing
 * file name comes from the image file itself, so the reader sees whatever
 * a hostile image holds. The input follows "json:" as a C string; a name
 * that resolves must give a path and a format that fit their buffers and
 * are NUL-terminated (abort otherwise, so the fuzzer reports it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *name = malloc(size + 6);
	char path[64], fmt[16];
	struct vs_error err = { 0 };

	if (!name)
		return 0;
	memcpy(name, "json:", 5);
	memcpy(name + 5, data, size);
	name[size + 5] = '\0';
	/* Small buffers, so that a long file name or driver must be refused, not cut. */
	memset(path, 'x', sizeof(path));
	memset(fmt, 'x', sizeof(fmt));
	if (vs_json_name_resolve(name, path, sizeof(path), fmt, sizeof(fmt), &err) == 0 &&
	    (!memchr(path, '\0', sizeof(path)) || !memchr(fmt, '\0', sizeof(fmt))))
		abort();
	free(name);
	return 0;
}
