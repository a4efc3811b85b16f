/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vpc format (Microsoft's VHD), read-only: fixed images (the disk's
 * bytes, then a 512-byte footer) and dynamic images (a copy of the footer, a
 * dynamic-disk header, a block allocation table of 32-bit sector numbers,
 * and blocks of data each preceded by a sector bitmap). Differencing
 * images are refused. Fields are big-endian.
 *
 * The disk size follows QEMU's rule, so both agree on it: the CHS geometry
 * of the footer, except for images whose creator is known to mean the
 * size field (Hyper-V, disk2vhd, XenServer, XenConverter, QEMU with
 * force_size) or whose geometry is the largest there is.
 */
#include "../import/import.h"
#include "bytes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define VPC_FOOTER 512
#define VPC_DYN_HEADER 1024
#define VPC_TYPE_FIXED 2
#define VPC_TYPE_DYNAMIC 3
#define VPC_TYPE_DIFF 4
#define VPC_BAT_FREE 0xffffffffu
/* 65535 cylinders x 16 heads x 255 sectors: the geometry of every large disk. */
#define VPC_MAX_CHS_SECTORS (65535ull * 16 * 255)
/* Blocks of 512 bytes to 256 MiB. */
#define VPC_MAX_BLOCK (256u << 20)

struct vpc_state {
	bool dynamic;
	uint32_t block_size;
	uint32_t bitmap_size; /* bytes of sector bitmap before each block's data */
	uint32_t nb_entries;
	uint32_t *bat; /* host byte order, sector numbers */
};

static int vpc_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	/* A dynamic image starts with a copy of its footer; a fixed one only ends with it. */
	return len >= 8 && !memcmp(buf, "conectix", 8) ? 100 : 0;
}

static uint64_t vpc_size(const uint8_t *f)
{
	static const char *const sized[] = { "win ", "qem2", "d2v ", "CTXS" };
	uint64_t chs = (uint64_t)vs_be16(f + 56) * f[58] * f[59];
	bool use_size = chs == VPC_MAX_CHS_SECTORS || !memcmp(f + 28, "tap\0", 4);

	for (size_t i = 0; i < sizeof(sized) / sizeof(sized[0]); i++)
		if (!memcmp(f + 28, sized[i], 4))
			use_size = true;
	return use_size ? vs_be64(f + 48) : chs * 512;
}

static int vpc_open_dynamic(struct vs_node *node, struct vpc_state *s, uint64_t dyn_off,
			    struct vs_error *err)
{
	uint8_t *h = NULL;
	void *bat;
	uint64_t table;
	int ret;

	ret = imp_read_table(node->file, dyn_off, VPC_DYN_HEADER, "VHD dynamic disk header",
			     (void **)&h, err);
	if (ret < 0)
		return ret;
	if (memcmp(h, "cxsparse", 8)) {
		free(h);
		return vs_error_set(err, -EINVAL, "Invalid VHD dynamic disk header in '%s'",
				    node->filename);
	}
	table = vs_be64(h + 16);
	s->nb_entries = vs_be32(h + 28);
	s->block_size = vs_be32(h + 32);
	free(h);
	if (s->block_size < 512 || s->block_size > VPC_MAX_BLOCK ||
	    (s->block_size & (s->block_size - 1)))
		return vs_error_set(err, -EINVAL, "Invalid VHD block size %" PRIu32, s->block_size);
	/* One bit per sector, rounded up to whole sectors. */
	s->bitmap_size = ((s->block_size / 512 / 8) + 511) & ~511u;
	/* The table lies inside the file, so its size is bounded by the file's. */
	ret = imp_read_table(node->file, table, (uint64_t)s->nb_entries * 4,
			     "VHD block allocation table", &bat, err);
	if (ret < 0)
		return ret;
	s->bat = bat;
	for (uint32_t i = 0; i < s->nb_entries; i++)
		s->bat[i] = vs_be32((uint8_t *)&s->bat[i]);
	return 0;
}

static int vpc_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct vpc_state *s = node->opaque;
	uint64_t fsize = vs_node_size(node->file);
	uint8_t foot[VPC_FOOTER];
	uint32_t type;
	int ret;

	ret = imp_open_check(node, opts, "vpc", err);
	if (ret < 0)
		return ret;
	if (fsize < VPC_FOOTER)
		return vs_error_set(err, -EINVAL, "'%s' is too short for a VHD image",
				    node->filename);
	ret = vs_node_pread(node->file, 0, foot, sizeof(foot));
	if (ret == 0 && memcmp(foot, "conectix", 8))
		ret = vs_node_pread(node->file, fsize - VPC_FOOTER, foot, sizeof(foot));
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read the VHD footer");
	if (memcmp(foot, "conectix", 8))
		return vs_error_set(err, -EINVAL, "'%s' has no VHD footer", node->filename);
	type = vs_be32(foot + 60);
	node->size = vpc_size(foot);
	if (node->size > VS_NODE_MAX_SIZE)
		return vs_error_set(err, -EFBIG, "VHD image size too large");
	if (type == VPC_TYPE_DIFF)
		return vs_error_set(err, -ENOTSUP,
				    "VHD differencing images are not supported by vstor "
				    "('%s'); convert it with qemu-img",
				    node->filename);
	if (type == VPC_TYPE_DYNAMIC) {
		s->dynamic = true;
		ret = vpc_open_dynamic(node, s, vs_be64(foot + 16), err);
		if (ret < 0)
			return ret;
		node->cluster_size = s->block_size;
	} else if (type != VPC_TYPE_FIXED) {
		return vs_error_set(err, -ENOTSUP, "Unknown VHD disk type %" PRIu32 " in '%s'",
				    type, node->filename);
	}
	imp_set_limits(node, true);
	return 0;
}

static void vpc_close(struct vs_node *node)
{
	struct vpc_state *s = node->opaque;

	free(s->bat);
	s->bat = NULL;
}

static int vpc_lookup(struct vs_node *node, uint64_t offset, uint64_t len, struct imp_run *run)
{
	const struct vpc_state *s = node->opaque;
	uint64_t block, in;

	run->len = len;
	if (!s->dynamic) {
		run->kind = IMP_DATA;
		run->file = node->file;
		run->file_offset = offset;
		run->recurse = true;
		return 0;
	}
	block = offset / s->block_size;
	in = offset % s->block_size;
	if (s->block_size - in < len)
		run->len = s->block_size - in;
	/* Past the table, or a free entry: zeroes (as QEMU reads them). */
	if (block >= s->nb_entries || s->bat[block] == VPC_BAT_FREE) {
		run->kind = IMP_ZERO;
		return 0;
	}
	run->kind = IMP_DATA;
	run->file = node->file;
	run->file_offset = (uint64_t)s->bat[block] * 512 + s->bitmap_size + in;
	return 0;
}

static const struct imp_ops vpc_ops = { .lookup = vpc_lookup };

static int vpc_submit(struct vs_node *node, struct vs_req *req)
{
	return imp_submit(node, req, &vpc_ops);
}

static int vpc_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		      unsigned flags, struct vs_error *err)
{
	(void)filename, (void)size, (void)opts, (void)nopts, (void)flags;
	return imp_refuse_create("vpc", err);
}

static int vpc_get_info(struct vs_node *node, struct vs_image_info *info)
{
	return imp_info_backing(node, info);
}

/*
 * The creation options qemu-img lists for vpc (create -o help), so that
 * the list reads the same; vstor does not write vpc (vpc_create refuses).
 */
static const struct vs_create_opt_desc vpc_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "subformat", "string",
	  "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} " },
	{ "force_size", "bool",
	  "Force disk size calculation to use the actual size specified, rather than using the "
	  "nearest CHS-based calculation" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_vpc = {
	.name = "vpc",
	.is_format = true,
	.state_size = sizeof(struct vpc_state),
	.probe = vpc_probe,
	.open = vpc_open,
	.close = vpc_close,
	.submit = vpc_submit,
	.create = vpc_create,
	.create_opts = vpc_create_opts,
	.get_info = vpc_get_info,
};

VS_DRIVER_REGISTER(vs_driver_vpc)
