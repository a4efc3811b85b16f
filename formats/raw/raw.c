/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The raw format: the image is the bytes of its protocol node. Everything
 * passes through; raw decides the content of every byte (no backing).
 */
#include "driver.h"

#include <errno.h>
#include <string.h>

static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)buf;
	(void)len;
	(void)filename;
	return 1; /* anything is raw, as a last resort */
}

static int raw_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct vs_node *file = node->file;

	if (opts->snapshot)
		return vs_error_set(err, -ENOTSUP,
				    "The raw format has no internal snapshots (cannot open '%s')",
				    opts->snapshot);
	node->size = file->size;
	node->limits = file->limits;
	node->caps = file->caps &
		     (VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_BLOCK_STATUS | VS_CAP_FLUSH);
	return 0;
}

static void raw_close(struct vs_node *node)
{
	(void)node;
}

static int raw_submit(struct vs_node *node, struct vs_req *req)
{
	struct vs_node *file = node->file;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		return vs_node_preadv(file, req->offset, req->len, req->iov, req->niov, 0);
	case VS_OP_WRITE:
		return vs_node_pwritev(file, req->offset, req->len, req->iov, req->niov,
				       req->flags);
	case VS_OP_FLUSH:
		return vs_node_flush(file);
	case VS_OP_DISCARD:
		return vs_node_discard(file, req->offset, req->len);
	case VS_OP_WRITE_ZEROES:
		return vs_node_write_zeroes(file, req->offset, req->len,
					    req->flags | VS_REQ_NO_FALLBACK);
	case VS_OP_BLOCK_STATUS:
		ret = vs_node_block_status(file, req->offset, req->len, &req->bs_pnum,
					   &req->bs_status, &req->bs_map, &req->bs_file);
		req->bs_status |= VS_BS_ALLOCATED;
		return ret;
	}
	return -EINVAL;
}

static int raw_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
			struct vs_error *err)
{
	int ret = vs_node_truncate(node->file, size, prealloc, exact, err);

	if (ret == 0)
		node->size = size;
	return ret;
}

static int raw_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		      struct vs_error *err)
{
	return vs_driver_file.create(filename, size, opts, nopts, err);
}

static int raw_measure(uint64_t size, uint64_t allocated, const struct vs_kv *opts, size_t nopts,
		       struct vs_measure_result *res, struct vs_error *err)
{
	(void)allocated;
	for (size_t i = 0; i < nopts; i++)
		if (strcmp(opts[i].key, "preallocation") && strcmp(opts[i].key, "size"))
			return vs_error_set(err, -EINVAL, "Invalid parameter '%s' for raw",
					    opts[i].key);
	/* A raw file needs its whole size; holes are the filesystem's business. */
	res->required = size;
	res->fully_allocated = size;
	return 0;
}

static const struct vs_create_opt_desc raw_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "preallocation", "string", "Preallocation mode (allowed values: off, falloc, full)" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_raw = {
	.name = "raw",
	.is_format = true,
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.submit = raw_submit,
	.truncate = raw_truncate,
	.create = raw_create,
	.create_opts = raw_create_opts,
	.measure = raw_measure,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};
