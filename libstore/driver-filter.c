/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers for test filter drivers (fault:, log-writes:): a protocol node
 * that wraps another protocol node, kept in node->file, and passes requests
 * on to it through the generic layer.
 */
#include "driver.h"

#include <errno.h>
#include <string.h>

int vs_filter_open_inner(struct vs_node *node, const char *inner, const struct vs_open_opts *opts,
			 struct vs_error *err)
{
	struct vs_open_opts o = *opts;
	struct vs_node *child = NULL;
	int ret;

	if (!inner[0])
		return vs_error_set(err, -EINVAL, "%s: no inner node in '%s'", node->drv->name,
				    opts->filename);
	o.filename = inner;
	ret = vs_protocol_open(&child, inner, &o, err);
	if (ret < 0)
		return ret;
	node->file = child;
	node->size = child->size;
	node->limits = child->limits;
	node->caps = child->caps | VS_CAP_FLUSH;
	return 0;
}

static void filter_sync_size(struct vs_node *node)
{
	if (node->file->size > node->size)
		node->size = node->file->size;
}

int vs_filter_submit(struct vs_node *node, struct vs_req *req)
{
	struct vs_node *c = node->file;
	uint64_t pnum = 0, map = 0;
	struct vs_node *file = NULL;
	unsigned status = 0;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		return vs_node_preadv(c, req->offset, req->len, req->iov, req->niov, 0);
	case VS_OP_WRITE:
		ret = vs_node_pwritev(c, req->offset, req->len, req->iov, req->niov, req->flags);
		filter_sync_size(node);
		return ret;
	case VS_OP_FLUSH:
		return vs_node_flush(c);
	case VS_OP_DISCARD:
		return vs_node_discard(c, req->offset, req->len);
	case VS_OP_WRITE_ZEROES:
		ret = vs_node_write_zeroes(c, req->offset, req->len, req->flags);
		filter_sync_size(node);
		return ret;
	case VS_OP_BLOCK_STATUS:
		ret = vs_node_block_status(c, req->offset, req->len, &pnum, &status, &map, &file);
		if (ret < 0)
			return ret;
		req->bs_pnum = pnum;
		req->bs_status = status;
		req->bs_map = map;
		req->bs_file = file;
		return 0;
	}
	return -EINVAL;
}

int vs_filter_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
		       struct vs_error *err)
{
	int ret = vs_node_truncate(node->file, size, prealloc, exact, err);

	if (ret == 0)
		node->size = node->file->size;
	return ret;
}

int64_t vs_filter_allocated_size(struct vs_node *node)
{
	return vs_node_allocated_size(node->file);
}
