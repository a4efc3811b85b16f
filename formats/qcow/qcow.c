/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow format (version 1, QEMU's first), read-only. A big-endian
 * header, a backing file name, an L1 table of L2 table offsets, L2 tables
 * of cluster offsets; bit 63 of an L2 entry marks a deflated cluster whose
 * compressed size sits in the bits below it. Unallocated clusters come
 * from the backing file. AES-encrypted images are refused.
 */
#include "../import/import.h"
#include "bytes.h"

#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>

#define QCOW_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW_HEADER 48
#define QCOW_COMPRESSED (1ull << 63)
#define QCOW_MAX_BACKING 1023
/* The L2 cache holds tables of up to 2^13 entries (l2_bits <= 13). */
#define QCOW_MAX_L2_BYTES (8u << 13)

struct qcow_state {
	unsigned cluster_bits, l2_bits;
	uint64_t cluster; /* bytes */
	uint64_t l1_size;
	uint64_t *l1; /* host order */
	char backing[QCOW_MAX_BACKING + 1];
	struct imp_table_cache l2_cache;
};

static int qcow_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	return len >= 8 && vs_be32(buf) == QCOW_MAGIC && vs_be32(buf + 4) == 1 ? 100 : 0;
}

static void qcow_close(struct vs_node *node)
{
	struct qcow_state *s = node->opaque;

	free(s->l1);
	s->l1 = NULL;
	imp_cache_free(&s->l2_cache);
}

static int qcow_read_backing(struct vs_node *node, struct qcow_state *s, const uint8_t *h,
			     struct vs_error *err)
{
	uint64_t off = vs_be64(h + 8);
	uint32_t len = vs_be32(h + 16);
	int ret;

	if (!off)
		return 0;
	if (len > QCOW_MAX_BACKING)
		return vs_error_set(err, -EINVAL, "Backing file name too long");
	if (off > vs_node_size(node->file) || len > vs_node_size(node->file) - off)
		return vs_error_set(err, -EINVAL,
				    "Backing file name lies beyond the end of the file");
	ret = vs_node_pread(node->file, off, s->backing, len);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read the backing file name");
	s->backing[len] = '\0';
	if (len && strlen(s->backing) == len)
		node->backing_name = s->backing;
	return 0;
}

static int qcow_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct qcow_state *s = node->opaque;
	uint8_t h[QCOW_HEADER];
	uint64_t size, shift;
	void *l1;
	int ret;

	ret = imp_open_check(node, opts, "qcow", err);
	if (ret < 0)
		return ret;
	if (vs_node_size(node->file) < QCOW_HEADER)
		return vs_error_set(err, -EINVAL, "'%s' is too short for a qcow image",
				    node->filename);
	ret = vs_node_pread(node->file, 0, h, sizeof(h));
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read the qcow header");
	if (vs_be32(h) != QCOW_MAGIC || vs_be32(h + 4) != 1)
		return vs_error_set(err, -EINVAL, "'%s' is not a qcow (version 1) image",
				    node->filename);
	size = vs_be64(h + 24);
	s->cluster_bits = h[32];
	s->l2_bits = h[33];
	/* QEMU's bounds: clusters of 512 bytes to 64 KiB, tables within a cluster. */
	if (s->cluster_bits < 9 || s->cluster_bits > 16)
		return vs_error_set(err, -EINVAL, "Cluster size must be between 512 and 64k");
	if (s->l2_bits < 9 - 3 || s->l2_bits > 16 - 3)
		return vs_error_set(err, -EINVAL, "L2 table size must be between 512 and 64k");
	if (vs_be32(h + 36))
		return vs_error_set(err, -ENOTSUP,
				    "Encrypted qcow images are not supported by vstor ('%s')",
				    node->filename);
	if (size > VS_NODE_MAX_SIZE)
		return vs_error_set(err, -EFBIG, "Image too large");
	s->cluster = 1ull << s->cluster_bits;
	shift = s->cluster_bits + s->l2_bits;
	s->l1_size = (size + (1ull << shift) - 1) >> shift;
	/* Inside the file, so no larger than the file. */
	ret = imp_read_table(node->file, vs_be64(h + 40), s->l1_size * 8, "qcow L1 table", &l1,
			     err);
	if (ret < 0)
		return ret;
	s->l1 = l1;
	for (uint64_t i = 0; i < s->l1_size; i++)
		s->l1[i] = vs_be64((uint8_t *)&s->l1[i]);
	ret = qcow_read_backing(node, s, h, err);
	if (ret == 0 && imp_cache_init(&s->l2_cache, QCOW_MAX_L2_BYTES) < 0)
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
	if (ret < 0) {
		qcow_close(node);
		return ret;
	}
	node->size = size;
	node->cluster_size = s->cluster;
	imp_set_limits(node, true);
	return 0;
}

static enum imp_kind entry_kind(uint64_t e)
{
	return !e ? IMP_UNALLOCATED : (e & QCOW_COMPRESSED) ? IMP_COMPRESSED : IMP_DATA;
}

static int qcow_lookup(struct vs_node *node, uint64_t offset, uint64_t len, struct imp_run *run)
{
	struct qcow_state *s = node->opaque;
	unsigned shift = s->cluster_bits + s->l2_bits;
	uint64_t l1i = offset >> shift, in = offset & (s->cluster - 1);
	uint64_t l2i = (offset >> s->cluster_bits) & ((1ull << s->l2_bits) - 1);
	uint64_t l2_end = ((l1i + 1) << shift) - offset, e;
	const uint8_t *l2;
	int ret;

	run->file = node->file;
	run->recurse = false;
	if (l1i >= s->l1_size || !s->l1[l1i]) {
		run->kind = IMP_UNALLOCATED;
		run->len = l2_end < len ? l2_end : len;
		return 0;
	}
	ret = imp_cache_get(&s->l2_cache, node->file, s->l1[l1i], &l2);
	if (ret < 0)
		return ret;
	e = vs_be64(l2 + 8 * l2i);
	run->kind = entry_kind(e);
	run->file_offset = e + (run->kind == IMP_DATA ? in : 0);
	if (run->kind == IMP_COMPRESSED)
		run->file_offset = e & ~QCOW_COMPRESSED;
	run->len = s->cluster - in;
	while (run->len < len && run->kind != IMP_COMPRESSED && ++l2i < (1ull << s->l2_bits)) {
		uint64_t next = vs_be64(l2 + 8 * l2i);

		if (entry_kind(next) != run->kind ||
		    (run->kind == IMP_DATA && next != run->file_offset + run->len))
			break;
		run->len += s->cluster;
	}
	if (run->len > len)
		run->len = len;
	return 0;
}

/* A deflated cluster: the size is in the entry's bits above the offset. */
static int qcow_read_compressed(struct vs_node *node, const struct imp_run *run, uint64_t offset,
				uint64_t len, uint8_t *buf)
{
	const struct qcow_state *s = node->opaque;
	unsigned csize_shift = 63 - s->cluster_bits;
	uint64_t e = run->file_offset, in = offset & (s->cluster - 1);
	uint64_t coff = e & ((1ull << csize_shift) - 1);
	size_t csize = (size_t)((e >> csize_shift) & (s->cluster - 1)), out = 0;
	struct libdeflate_decompressor *d = NULL;
	uint8_t *cbuf, *cl;
	int ret;

	if (in + len > s->cluster)
		return -EIO;
	cbuf = malloc(csize ? csize : 1);
	cl = malloc((size_t)s->cluster);
	d = libdeflate_alloc_decompressor();
	ret = cbuf && cl && d ? 0 : -ENOMEM;
	if (ret == 0)
		ret = imp_pread(node->file, coff, cbuf, csize);
	if (ret == 0 && libdeflate_deflate_decompress_ex(d, cbuf, csize, cl, (size_t)s->cluster,
							 NULL, &out) != LIBDEFLATE_SUCCESS)
		ret = -EIO;
	if (ret == 0 && out != s->cluster)
		ret = -EIO;
	if (ret == 0)
		memcpy(buf, cl + in, (size_t)len);
	if (d)
		libdeflate_free_decompressor(d);
	free(cl);
	free(cbuf);
	return ret;
}

static const struct imp_ops qcow_ops = {
	.lookup = qcow_lookup,
	.read_compressed = qcow_read_compressed,
};

static int qcow_submit(struct vs_node *node, struct vs_req *req)
{
	return imp_submit(node, req, &qcow_ops);
}

static int qcow_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		       unsigned flags, struct vs_error *err)
{
	(void)filename, (void)size, (void)opts, (void)nopts, (void)flags;
	return imp_refuse_create("qcow", err);
}

static int qcow_get_info(struct vs_node *node, struct vs_image_info *info)
{
	return imp_info_backing(node, info);
}

/*
 * The creation options qemu-img lists for qcow version 1 (create -o help),
 * so that the list reads the same; vstor does not write qcow (qcow_create
 * refuses).
 */
static const struct vs_create_opt_desc qcow_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "backing_file", "string", "File name of a base image" },
	{ "backing_fmt", "string", "Format of the backing image" },
	{ "encryption", "bool",
	  "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
	{ "encrypt.format", "string", "Encrypt the image, format choices: 'aes'" },
	{ "encrypt.key-secret", "string", "ID of the secret that provides the AES encryption key" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_qcow = {
	.name = "qcow",
	.is_format = true,
	.state_size = sizeof(struct qcow_state),
	.probe = qcow_probe,
	.open = qcow_open,
	.close = qcow_close,
	.submit = qcow_submit,
	.create = qcow_create,
	.create_opts = qcow_create_opts,
	.get_info = qcow_get_info,
};

VS_DRIVER_REGISTER(vs_driver_qcow)
