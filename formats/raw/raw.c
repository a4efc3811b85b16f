/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The raw format: the image is the bytes of its protocol node. Everything
 * passes through; raw decides the content of every byte (no backing).
 * As QEMU, the image has whole sectors: a file whose length is not a
 * multiple of 512 is an image of the next multiple, its tail reading as
 * zeroes (a write there grows the file).
 */
#include "driver.h"
#include "iov.h"

#include <errno.h>
#include <string.h>

/* The bytes a format probe looks at to tell a format from raw (QEMU: 512). */
#define RAW_PROBE_LEN 512

/* QEMU's sector: the unit of an image's size. */
#define RAW_SECTOR 512

static uint64_t raw_round_size(uint64_t size)
{
	return size > UINT64_MAX - (RAW_SECTOR - 1) ?
		       size :
		       (size + RAW_SECTOR - 1) & ~(uint64_t)(RAW_SECTOR - 1);
}

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
	node->size = raw_round_size(file->size);
	node->limits = file->limits;
	node->caps = file->caps &
		     (VS_CAP_DISCARD | VS_CAP_WRITE_ZEROES | VS_CAP_BLOCK_STATUS | VS_CAP_FLUSH);
	if (node->probed && !node->read_only) {
		/* Writes to the first sector are checked whole (raw_check_sector0). */
		if (node->limits.request_align < RAW_PROBE_LEN)
			node->limits.request_align = RAW_PROBE_LEN;
		vs_warn("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
			"         Automatically detecting the format is dangerous for raw images, "
			"write operations on block 0 will be restricted.\n"
			"         Specify the 'raw' format explicitly to remove the restrictions.",
			node->filename);
	}
	return 0;
}

/*
 * A raw image whose format was probed must stay raw: a write that would make
 * its first sector probe as another format (a client writing a qcow2 header
 * that names /etc/shadow as its backing file) is refused, as QEMU does. The
 * node's alignment makes every such write cover the whole sector.
 */
static int raw_check_sector0(struct vs_node *node, const struct vs_req *req)
{
	uint8_t buf[RAW_PROBE_LEN];

	if (!node->probed || req->offset >= RAW_PROBE_LEN)
		return 0;
	if (req->offset != 0 || req->len < RAW_PROBE_LEN)
		return -EPERM; /* cannot happen: request_align is RAW_PROBE_LEN */
	vs_iov_to_buf(buf, req->iov, req->niov, 0, sizeof(buf));
	return vs_driver_probe(buf, sizeof(buf), NULL) == &vs_driver_raw ? 0 : -EPERM;
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
		if (req->offset + req->len > file->size) {
			/* The tail of the last sector, past the end of the file. */
			uint64_t in = req->offset < file->size ? file->size - req->offset : 0;

			vs_iov_memset(req->iov, req->niov, in, 0, req->len - in);
			if (!in)
				return 0;
			return vs_node_preadv(file, req->offset, in, req->iov, req->niov, 0);
		}
		return vs_node_preadv(file, req->offset, req->len, req->iov, req->niov, 0);
	case VS_OP_WRITE:
		ret = raw_check_sector0(node, req);
		if (ret < 0)
			return ret;
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
		if (req->offset >= file->size) {
			/* Past the end of the file: zeroes, at their place in it (as QEMU). */
			req->bs_pnum = req->len;
			req->bs_status = VS_BS_ZERO | VS_BS_OFFSET_VALID | VS_BS_ALLOCATED;
			req->bs_map = req->offset;
			req->bs_file = file;
			return 0;
		}
		ret = vs_node_block_status(file, req->offset, req->len, &req->bs_pnum,
					   &req->bs_status, &req->bs_map, &req->bs_file);
		req->bs_status |= VS_BS_ALLOCATED;
		return ret;
	}
	return -EINVAL;
}

/* The direct data path: the file's bytes, as far as the file goes. */
static int raw_map(struct vs_node *node, uint64_t offset, uint64_t len, bool write,
		   struct vs_map *m)
{
	struct vs_node *file = node->file;

	if (write && node->probed && offset < RAW_PROBE_LEN) {
		m->len = len < RAW_PROBE_LEN - offset ? len : RAW_PROBE_LEN - offset;
		return 0; /* checked whole by raw_check_sector0 */
	}
	if (offset >= file->size) {
		m->len = len;
		return 0;
	}
	m->child = file;
	m->offset = offset;
	m->len = len < file->size - offset ? len : file->size - offset;
	return 1;
}

static int raw_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
			struct vs_error *err)
{
	int ret = vs_node_truncate(node->file, size, prealloc, exact, err);

	if (ret == 0)
		node->size = raw_round_size(size);
	return ret;
}

static int raw_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		      unsigned flags, struct vs_error *err)
{
	/* As QEMU's file protocol: whole sectors. */
	return vs_driver_file.create(filename, raw_round_size(size), opts, nopts, flags, err);
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
	.map = raw_map,
	.truncate = raw_truncate,
	.create = raw_create,
	.create_opts = raw_create_opts,
	.measure = raw_measure,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_raw)
