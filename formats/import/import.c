/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The shared part of the read-only import drivers (see import.h): the data
 * path over the drivers' run lookups, table reads bounded by the file, the
 * second-level table cache, and what every one of them refuses.
 */
#include "import.h"

#include "iov.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int imp_open_check(struct vs_node *node, const struct vs_open_opts *opts, const char *format,
		   struct vs_error *err)
{
	if (opts->snapshot)
		return vs_error_set(err, -ENOTSUP,
				    "The %s format has no internal snapshots (cannot open '%s')",
				    format, opts->snapshot);
	if (!node->read_only)
		return vs_error_set(err, -EROFS,
				    "Format '%s' is read-only in vstor; convert to qcow2 or raw",
				    format);
	return 0;
}

int imp_refuse_create(const char *format, struct vs_error *err)
{
	return vs_error_set(err, -ENOTSUP,
			    "Format '%s' is read-only in vstor; convert to qcow2 or raw", format);
}

void imp_set_limits(struct vs_node *node, bool block_status)
{
	node->limits = node->file->limits;
	node->caps = block_status ? VS_CAP_BLOCK_STATUS : 0;
}

int imp_pread(struct vs_node *file, uint64_t off, void *buf, size_t len)
{
	uint64_t size = vs_node_size(file);
	size_t in = 0;

	if (off < size)
		in = size - off < len ? (size_t)(size - off) : len;
	if (in < len)
		memset((uint8_t *)buf + in, 0, len - in);
	return in ? vs_node_pread(file, off, buf, in) : 0;
}

int imp_read_table(struct vs_node *file, uint64_t off, uint64_t len, const char *what, void **out,
		   struct vs_error *err)
{
	uint64_t size = vs_node_size(file);
	void *buf;
	int ret;

	*out = NULL;
	if (off > size || len > size - off)
		return vs_error_set(err, -EINVAL,
				    "The %s (%" PRIu64 " bytes at offset %" PRIu64
				    ") lies beyond the end of the file",
				    what, len, off);
	buf = vs_buf_zalloc(len ? (size_t)len : 1);
	if (!buf)
		return vs_error_set(err, -ENOMEM, "Out of memory for the %s", what);
	ret = len ? vs_node_pread(file, off, buf, (size_t)len) : 0;
	if (ret < 0) {
		free(buf);
		return vs_error_setf_errno(err, ret, "Could not read the %s", what);
	}
	*out = buf;
	return 0;
}

int imp_info_backing(struct vs_node *node, struct vs_image_info *info)
{
	char path[4096];

	info->cluster_size = node->cluster_size;
	if (!node->backing_name)
		return 0;
	if (node->backing_fmt)
		snprintf(info->backing_format, sizeof(info->backing_format), "%s",
			 node->backing_fmt);
	info->backing_filename = strdup(node->backing_name);
	if (!info->backing_filename)
		return -ENOMEM;
	if (node->backing)
		info->full_backing_filename = strdup(node->backing->filename);
	else if (vs_path_combine(path, sizeof(path), node->filename, node->backing_name) == 0)
		info->full_backing_filename = strdup(path);
	return 0;
}

int imp_cache_init(struct imp_table_cache *c, size_t table_size)
{
	memset(c, 0, sizeof(*c));
	c->table_size = table_size;
	for (unsigned i = 0; i < IMP_CACHE_SLOTS; i++) {
		c->data[i] = vs_buf_alloc(table_size);
		if (!c->data[i]) {
			imp_cache_free(c);
			return -ENOMEM;
		}
	}
	return 0;
}

void imp_cache_free(struct imp_table_cache *c)
{
	for (unsigned i = 0; i < IMP_CACHE_SLOTS; i++) {
		free(c->data[i]);
		c->data[i] = NULL;
		c->file[i] = NULL;
	}
}

static int cache_find(const struct imp_table_cache *c, struct vs_node *file, uint64_t off)
{
	for (unsigned i = 0; i < IMP_CACHE_SLOTS; i++)
		if (c->file[i] == file && c->key[i] == off)
			return (int)i;
	return -1;
}

int imp_cache_get(struct imp_table_cache *c, struct vs_node *file, uint64_t off,
		  const uint8_t **out)
{
	uint8_t *tmp;
	unsigned slot;
	int i = cache_find(c, file, off), ret;

	if (i >= 0) {
		*out = c->data[i];
		return 0;
	}
	tmp = vs_buf_alloc(c->table_size);
	if (!tmp)
		return -ENOMEM;
	/* Another request may fill a slot while this one reads: look again after. */
	ret = imp_pread(file, off, tmp, c->table_size);
	if (ret < 0) {
		free(tmp);
		return ret;
	}
	i = cache_find(c, file, off);
	if (i < 0) {
		slot = c->next++ % IMP_CACHE_SLOTS;
		memcpy(c->data[slot], tmp, c->table_size);
		c->key[slot] = off;
		c->file[slot] = file;
		i = (int)slot;
	}
	free(tmp);
	*out = c->data[i];
	return 0;
}

/* Zeroes or the backing node's bytes for an unallocated run, into @iov. */
static int read_unallocated(struct vs_node *node, uint64_t offset, uint64_t len, struct iovec *iov,
			    int niov)
{
	struct vs_node *b = node->backing;
	uint64_t in = 0;

	if (b && offset < vs_node_size(b))
		in = vs_node_size(b) - offset < len ? vs_node_size(b) - offset : len;
	if (in < len)
		vs_iov_memset(iov, niov, in, 0, len - in);
	return in ? vs_node_preadv(b, offset, in, iov, niov, 0) : 0;
}

static int read_data(struct vs_node *file, uint64_t off, uint64_t len, struct iovec *iov, int niov)
{
	uint64_t size = vs_node_size(file), in = 0;

	if (off < size)
		in = size - off < len ? size - off : len;
	if (in < len)
		vs_iov_memset(iov, niov, in, 0, len - in);
	return in ? vs_node_preadv(file, off, in, iov, niov, 0) : 0;
}

static int read_run(struct vs_node *node, const struct imp_ops *ops, const struct imp_run *run,
		    uint64_t offset, struct iovec *iov, int niov)
{
	uint8_t *buf;
	int ret;

	switch (run->kind) {
	case IMP_DATA:
		return read_data(run->file, run->file_offset, run->len, iov, niov);
	case IMP_ZERO:
		vs_iov_memset(iov, niov, 0, 0, run->len);
		return 0;
	case IMP_UNALLOCATED:
		return read_unallocated(node, offset, run->len, iov, niov);
	case IMP_COMPRESSED:
		if (!ops->read_compressed)
			return -EIO;
		buf = vs_buf_alloc(run->len);
		if (!buf)
			return -ENOMEM;
		ret = ops->read_compressed(node, run, offset, run->len, buf);
		if (ret == 0)
			vs_iov_from_buf(iov, niov, 0, buf, run->len);
		free(buf);
		return ret;
	}
	return -EIO;
}

static int imp_read(struct vs_node *node, struct vs_req *req, const struct imp_ops *ops)
{
	struct iovec stack[16], *room;
	uint64_t done = 0;
	int cap, ret = 0;

	room = vs_iov_room(stack, 16, req->niov, &cap);
	if (!room)
		return -ENOMEM;
	while (done < req->len && ret == 0) {
		struct imp_run run = { 0 };
		int n;

		ret = ops->lookup(node, req->offset + done, req->len - done, &run);
		if (ret < 0)
			break;
		if (run.len == 0 || run.len > req->len - done) {
			ret = -EIO; /* a driver bug; never loop on it */
			break;
		}
		n = vs_iov_slice(room, cap, req->iov, req->niov, done, run.len);
		if (n < 0) {
			ret = n;
			break;
		}
		ret = read_run(node, ops, &run, req->offset + done, room, n);
		done += run.len;
	}
	vs_iov_room_free(room, stack);
	return ret;
}

/* Whether @b continues @a (same kind, and for data the next bytes of the same file). */
static bool run_continues(const struct imp_run *a, const struct imp_run *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == IMP_COMPRESSED)
		return true;
	return a->kind != IMP_DATA || (a->file == b->file && a->recurse == b->recurse &&
				       a->file_offset + a->len == b->file_offset);
}

/*
 * Data stored in a hole of the file reads as zeroes: for the formats that
 * preallocate (where QEMU asks the file too), ask the file and shorten the
 * run to what its answer covers.
 */
static void refine_from_file(struct vs_req *req)
{
	struct vs_node *f = req->bs_file;
	uint64_t fpnum;
	unsigned fst;

	if (req->bs_map >= vs_node_size(f)) {
		req->bs_status |= VS_BS_ZERO;
		return;
	}
	if (vs_node_block_status(f, req->bs_map, req->bs_pnum, &fpnum, &fst, NULL, NULL) < 0 ||
	    !fpnum)
		return;
	if (fst & VS_BS_ZERO)
		req->bs_status |= VS_BS_ZERO;
	if (fpnum < req->bs_pnum)
		req->bs_pnum = fpnum;
}

static int imp_block_status(struct vs_node *node, struct vs_req *req, const struct imp_ops *ops)
{
	struct imp_run first = { 0 }, run;
	uint64_t done;
	int ret;

	ret = ops->lookup(node, req->offset, req->len, &first);
	if (ret < 0)
		return ret;
	if (first.len == 0 || first.len > req->len)
		return -EIO;
	/* Merge the runs that follow with the same answer, as one extent. */
	for (done = first.len; done < req->len; done += run.len) {
		memset(&run, 0, sizeof(run));
		ret = ops->lookup(node, req->offset + done, req->len - done, &run);
		if (ret < 0 || run.len == 0 || run.len > req->len - done)
			break;
		if (!run_continues(&first, &run))
			break;
		first.len += run.len;
	}
	req->bs_pnum = first.len;
	switch (first.kind) {
	case IMP_DATA:
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID;
		req->bs_map = first.file_offset;
		req->bs_file = first.file;
		if (first.recurse)
			refine_from_file(req);
		break;
	case IMP_ZERO:
		req->bs_status = VS_BS_ZERO | VS_BS_ALLOCATED;
		break;
	case IMP_UNALLOCATED:
		req->bs_status = 0;
		break;
	case IMP_COMPRESSED:
		req->bs_status = VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_COMPRESSED;
		break;
	}
	return 0;
}

int imp_submit(struct vs_node *node, struct vs_req *req, const struct imp_ops *ops)
{
	switch (req->op) {
	case VS_OP_READ:
		return imp_read(node, req, ops);
	case VS_OP_BLOCK_STATUS:
		return imp_block_status(node, req, ops);
	case VS_OP_FLUSH:
		return 0;
	default:
		return -EROFS;
	}
}

/* CRC-32C, reflected polynomial 0x82F63B78; the table is built before main. */
static uint32_t crc32c_table[256];

static void __attribute__((constructor)) crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc32c_table[i] = c;
	}
}

uint32_t imp_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint32_t *table = crc32c_table;
	const uint8_t *p = buf;

	crc = ~crc;
	while (len--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
