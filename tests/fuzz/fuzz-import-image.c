/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: a whole image of one read-only import format (FUZZ_FORMAT:
 * "vpc", "vdi", "vmdk", "vhdx", "qcow"), built once per format. The input
 * is copied into a memory: node and the driver opens it read-only there:
 * probe, info, reads spread over the virtual disk, block status, and check.
 * Backing files are never opened (no_backing); a vmdk text descriptor would
 * name extent files on the host, so for vmdk only sparse extents (KDMV) are
 * opened, and the descriptor text goes through the descriptor parser
 * alone. Any error is fine; a crash, a sanitizer report or a hang is a
 * finding.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "vstor/reactor.h"
#ifdef FUZZ_VMDK
#include "vmdk-desc.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define READ_CHUNK 65536
#define READ_SPOTS 32

struct run {
	const uint8_t *data;
	size_t size;
};

static struct vs_node *memory_with(const struct run *r)
{
	struct vs_open_opts o = { 0 };
	struct vs_error err = { 0 };
	struct vs_node *file = NULL;
	char uri[64];

	snprintf(uri, sizeof(uri), "memory:%zu", (r->size + 511) & ~(size_t)511);
	o.filename = uri;
	if (vs_protocol_open(&file, uri, &o, &err) < 0)
		abort();
	if (r->size && vs_node_pwrite(file, 0, r->data, r->size, 0) < 0)
		abort();
	return file;
}

static void exercise(struct vs_node *n, uint8_t *buf)
{
	uint64_t size = vs_node_size(n);
	struct vs_image_info info;
	struct vs_check_result res = { 0 };

	if (vs_node_get_info(n, &info) == 0)
		vs_image_info_free(&info);
	for (unsigned i = 0; i < READ_SPOTS && size; i++) {
		uint64_t off = (size / READ_SPOTS) * i;
		uint64_t len = size - off < READ_CHUNK ? size - off : READ_CHUNK;
		uint64_t pnum;
		unsigned status;

		off &= ~511ull;
		(void)vs_node_pread(n, off, buf, len);
		(void)vs_node_block_status(n, off, len, &pnum, &status, NULL, NULL);
	}
	(void)vs_node_check(n, &res, 0);
}

static void run_image(void *opaque)
{
	struct run *r = opaque;
	const struct vs_driver *drv = vs_driver_find(FUZZ_FORMAT);
	struct vs_open_opts o = {
		.filename = "fuzz.img", .format = FUZZ_FORMAT, .read_only = true, .no_backing = true
	};
	struct vs_error err = { 0 };
	uint8_t *buf = vs_buf_alloc(READ_CHUNK);
	struct vs_node *file, *n;

	if (!drv || !buf)
		abort();
	(void)drv->probe(r->data, r->size, "fuzz.img");
	file = memory_with(r);
	n = vs_node_new(drv, "fuzz.img", &o);
	if (!n)
		abort();
	n->file = file;
	n->read_only = true;
	if (drv->open(n, &o, &err) < 0) {
		vs_node_close(n->backing);
		vs_node_free(n);
		vs_node_close(file);
	} else {
		exercise(n, buf);
		vs_node_close(n);
	}
	free(buf);
}

static void quiet(const char *msg, void *opaque)
{
	(void)msg;
	(void)opaque;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r = { .data = data, .size = size };

	setenv("VSTOR_MEMORY_MAX_MB", "512", 0);
	vs_set_warn_handler(quiet, NULL);
#ifdef FUZZ_VMDK
	if (size < 4 || memcmp(data, "KDMV", 4)) {
		struct vmdk_desc d;

		if (vmdk_desc_parse((const char *)data, size, &d, NULL) == 0)
			vmdk_desc_free(&d);
		return 0;
	}
#endif
	if (vs_run_in_coroutine(run_image, &r) < 0)
		abort();
	return 0;
}
