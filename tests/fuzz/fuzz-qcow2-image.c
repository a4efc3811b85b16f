/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: a whole qcow2 image file, metadata and data path. The input
 * is copied into a memory: node and the qcow2 driver opens it there twice:
 *  - read-only: info, reads spread over the virtual disk, block status,
 *    and a check (no repair);
 *  - read-write: opening repairs a dirty lazy_refcounts image, then a
 *    check that repairs leaks and errors, reads, a write, a flush, close.
 * Backing files are never opened (no_backing) and an external data file
 * is always a fresh 1 MiB memory: node (data_file), never the name the
 * image records, so no host file is touched. Encrypted images
 * (LUKS header extension and header, legacy AES) open without a secret:
 * read-only for their headers and info, reads refused; read-write refused.
 * No passphrase is tried, so a fuzzed PBKDF2 iteration count cannot hang the
 * run. Any error is fine;
 * a crash, a sanitizer report or a hang is a finding.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "vstor/reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define READ_CHUNK 65536
#define READ_SPOTS 32

struct run {
	const uint8_t *data;
	size_t size;
};

/* The format node over @file, as image.c builds it (the test owns the layout). */
static struct vs_node *format_open(struct vs_node *file, bool ro)
{
	/* Small caches: fast runs, and the eviction paths get fuzzed too. */
	struct vs_open_opts o = { .filename = "fuzz.qcow2",
				  .format = "qcow2",
				  .read_only = ro,
				  .no_backing = true,
				  .data_file = "memory:1048576",
				  .l2_cache_size = 65536,
				  .refcount_cache_size = 65536 };
	struct vs_error err = { 0 };
	struct vs_node *n = vs_node_new(&vs_driver_qcow2, "fuzz.qcow2", &o);

	if (!n)
		abort();
	n->file = file;
	if (vs_driver_qcow2.open(n, &o, &err) < 0) {
		vs_node_close(n->backing);
		vs_node_free(n);
		return NULL;
	}
	return n;
}

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

static void exercise(struct vs_node *n, uint8_t *buf, bool rw)
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
	(void)vs_node_check(n, &res, rw ? VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS : 0);
	if (rw && size >= 4096) {
		memset(buf, 0x5a, 4096);
		(void)vs_node_pwrite(n, size / 2 & ~4095ull, buf, 4096, 0);
		(void)vs_node_write_zeroes(n, 0, 4096, VS_REQ_MAY_UNMAP);
		(void)vs_node_flush(n);
		(void)vs_node_pread(n, size / 2 & ~4095ull, buf, 4096);
	}
}

static void run_image(void *opaque)
{
	struct run *r = opaque;
	uint8_t *buf = vs_buf_alloc(READ_CHUNK);
	struct vs_node *n;

	if (!buf)
		abort();
	for (int rw = 0; rw < 2; rw++) {
		struct vs_node *file = memory_with(r);

		n = format_open(file, !rw);
		if (!n) {
			vs_node_close(file);
			continue;
		}
		exercise(n, buf, rw);
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

	/*
	 * A fuzzed image may place metadata gigabytes into its file; the
	 * memory: node holding the file stops at 512 MiB (ENOSPC) instead of
	 * going past libFuzzer's RSS limit.
	 */
	setenv("VSTOR_MEMORY_MAX_MB", "512", 0);
	vs_set_warn_handler(quiet, NULL);
	if (vs_run_in_coroutine(run_image, &r) < 0)
		abort();
	return 0;
}
