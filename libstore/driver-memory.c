/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test-only protocol drivers for the conformance suite:
 *  memory:SIZE  a zero-filled buffer in RAM that grows on writes past its end
 *  null:SIZE    reads return zeroes, writes are accepted and dropped
 * SIZE takes the usual suffixes (k, M, G).
 */
#include "driver.h"
#include "iov.h"
#include "vstor/parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MEMORY_MAX_SIZE (1ull << 34) /* a bound on what a test can make us allocate */

struct memory_state {
	uint8_t *data;
	uint64_t cap;
};

/*
 * What opening memory:SIZE and null:SIZE share: the size in the URI (a
 * qemu-img size, vstor/parse.h) and byte granularity. @name is the prefix
 * without its ':'.
 */
static int uri_size_open(struct vs_node *node, const char *filename, const char *name,
			 struct vs_error *err)
{
	size_t n = strlen(name);
	uint64_t v;

	if (strncmp(filename, name, n) || filename[n] != ':' ||
	    vs_parse_size(filename + n + 1, &v) < 0 || v > MEMORY_MAX_SIZE)
		return vs_error_set(err, -EINVAL, "Invalid %s URI '%s' (%s:SIZE)", name, filename,
				    name);
	node->size = v;
	node->limits.request_align = 1;
	node->limits.mem_align = 1;
	return 0;
}

/*
 * How far a memory: node may grow: MEMORY_MAX_SIZE, or less with
 * VSTOR_MEMORY_MAX_MB (the fuzz targets set it below libFuzzer's RSS limit:
 * a fuzzed qcow2 image may put metadata at any offset of its file).
 */
static uint64_t memory_max(void)
{
	/* Worked out once; reactor threads may race to do it, with the same result. */
	static uint64_t max;
	uint64_t m = __atomic_load_n(&max, __ATOMIC_RELAXED);

	if (!m) {
		const char *e = getenv("VSTOR_MEMORY_MAX_MB");
		uint64_t mb = e ? strtoull(e, NULL, 10) : 0;

		m = mb && mb < (MEMORY_MAX_SIZE >> 20) ? mb << 20 : MEMORY_MAX_SIZE;
		__atomic_store_n(&max, m, __ATOMIC_RELAXED);
	}
	return m;
}

static int memory_reserve(struct memory_state *s, uint64_t end)
{
	uint64_t cap = s->cap ? s->cap : 4096;
	uint8_t *p;

	if (end <= s->cap)
		return 0;
	if (end > memory_max())
		return -ENOSPC;
	while (cap < end)
		cap *= 2;
	p = realloc(s->data, cap);
	if (!p)
		return -ENOMEM;
	memset(p + s->cap, 0, cap - s->cap);
	s->data = p;
	s->cap = cap;
	return 0;
}

static int memory_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct memory_state *s = node->opaque;
	int ret;

	ret = uri_size_open(node, opts->filename, "memory", err);
	if (ret < 0)
		return ret;
	ret = memory_reserve(s, node->size);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not allocate '%s'", opts->filename);
	node->caps = VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_GROWABLE;
	return 0;
}

static void memory_close(struct vs_node *node)
{
	struct memory_state *s = node->opaque;

	free(s->data);
	s->data = NULL;
}

static int memory_submit(struct vs_node *node, struct vs_req *req)
{
	struct memory_state *s = node->opaque;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		vs_iov_from_buf(req->iov, req->niov, 0, s->data + req->offset, req->len);
		return 0;
	case VS_OP_WRITE:
	case VS_OP_WRITE_ZEROES:
	case VS_OP_DISCARD:
		ret = memory_reserve(s, req->offset + req->len);
		if (ret < 0)
			return ret;
		if (req->op == VS_OP_WRITE)
			vs_iov_to_buf(s->data + req->offset, req->iov, req->niov, 0, req->len);
		else
			memset(s->data + req->offset, 0, req->len);
		if (req->offset + req->len > node->size)
			node->size = req->offset + req->len;
		return 0;
	case VS_OP_FLUSH:
		return 0;
	case VS_OP_BLOCK_STATUS:
		vs_req_bs_whole(req, node, VS_BS_DATA | VS_BS_ALLOCATED);
		return 0;
	}
	return -EINVAL;
}

static int memory_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc,
			   bool exact, struct vs_error *err)
{
	struct memory_state *s = node->opaque;
	int ret;

	(void)prealloc;
	(void)exact;
	ret = memory_reserve(s, size);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not resize '%s'", node->filename);
	if (size < node->size)
		memset(s->data + size, 0, node->size - size);
	node->size = size;
	return 0;
}

static int64_t memory_allocated_size(struct vs_node *node)
{
	return (int64_t)node->size;
}

const struct vs_driver vs_driver_memory = {
	.name = "memory",
	.prefixes = (const char *const[]){ "memory:", NULL },
	.state_size = sizeof(struct memory_state),
	.open = memory_open,
	.close = memory_close,
	.submit = memory_submit,
	.truncate = memory_truncate,
	.allocated_size = memory_allocated_size,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

static int null_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	int ret = uri_size_open(node, opts->filename, "null", err);

	if (ret < 0)
		return ret;
	node->caps = VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_BLOCK_STATUS;
	return 0;
}

static void null_close(struct vs_node *node)
{
	(void)node;
}

static int null_submit(struct vs_node *node, struct vs_req *req)
{
	switch (req->op) {
	case VS_OP_READ:
		vs_iov_memset(req->iov, req->niov, 0, 0, req->len);
		return 0;
	case VS_OP_WRITE:
	case VS_OP_WRITE_ZEROES:
	case VS_OP_DISCARD:
	case VS_OP_FLUSH:
		return 0;
	case VS_OP_BLOCK_STATUS:
		vs_req_bs_whole(req, node, VS_BS_ZERO | VS_BS_ALLOCATED);
		return 0;
	}
	return -EINVAL;
}

const struct vs_driver vs_driver_null = {
	.name = "null",
	.prefixes = (const char *const[]){ "null:", NULL },
	.open = null_open,
	.close = null_close,
	.submit = null_submit,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_memory)
VS_DRIVER_REGISTER(vs_driver_null)
