/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vdi format (VirtualBox), read-only: a little-endian header (version
 * 1.1), a block map of 32-bit entries, and 1 MiB blocks of data. An entry
 * names the block's slot in the data area, or says the block is free or
 * discarded (both read as zeroes). Static images allocate every block at
 * creation; dynamic ones as written. Snapshot links (a parent UUID) are
 * refused, as QEMU does.
 */
#include "../import/import.h"
#include "bytes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_HEADER 512
#define VDI_BLOCK (1u << 20)
#define VDI_TYPE_DYNAMIC 1
#define VDI_TYPE_STATIC 2
#define VDI_FREE 0xffffffffu
#define VDI_DISCARDED 0xfffffffeu
/* The header's fields. */
#define VDI_OFF_SIGNATURE 0x40
#define VDI_OFF_VERSION 0x44
#define VDI_OFF_TYPE 0x4c
#define VDI_OFF_BMAP 0x154
#define VDI_OFF_DATA 0x158
#define VDI_OFF_SECTOR_SIZE 0x168
#define VDI_OFF_DISK_SIZE 0x170
#define VDI_OFF_BLOCK_SIZE 0x178
#define VDI_OFF_BLOCKS 0x180
#define VDI_OFF_ALLOCATED 0x184
#define VDI_OFF_UUID_LINK 0x1a8
#define VDI_OFF_UUID_PARENT 0x1b8

struct vdi_state {
	uint32_t nb_blocks;
	uint32_t nb_allocated; /* as the header says */
	bool is_static;
	uint64_t data_offset;
	uint32_t *bmap; /* host byte order */
};

static int vdi_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	return len >= VDI_OFF_SIGNATURE + 4 && vs_le32(buf + VDI_OFF_SIGNATURE) == VDI_SIGNATURE ?
		       100 :
		       0;
}

static bool is_zero(const uint8_t *p, size_t len)
{
	while (len--)
		if (*p++)
			return false;
	return true;
}

static int vdi_check_header(struct vs_node *node, const uint8_t *h, struct vs_error *err)
{
	uint64_t disk = vs_le64(h + VDI_OFF_DISK_SIZE);
	uint32_t blocks = vs_le32(h + VDI_OFF_BLOCKS);
	uint32_t type = vs_le32(h + VDI_OFF_TYPE);

	if (vs_le32(h + VDI_OFF_SIGNATURE) != VDI_SIGNATURE)
		return vs_error_set(err, -EINVAL, "'%s' is not a VDI image", node->filename);
	if (vs_le32(h + VDI_OFF_VERSION) != VDI_VERSION_1_1)
		return vs_error_set(err, -ENOTSUP, "unsupported VDI image (version %#" PRIx32 ")",
				    vs_le32(h + VDI_OFF_VERSION));
	if (type != VDI_TYPE_DYNAMIC && type != VDI_TYPE_STATIC)
		return vs_error_set(err, -ENOTSUP, "unsupported VDI image (image type %" PRIu32 ")",
				    type);
	if (vs_le32(h + VDI_OFF_SECTOR_SIZE) != 512)
		return vs_error_set(err, -ENOTSUP,
				    "unsupported VDI image (sector size %" PRIu32 " is not 512)",
				    vs_le32(h + VDI_OFF_SECTOR_SIZE));
	if (vs_le32(h + VDI_OFF_BLOCK_SIZE) != VDI_BLOCK)
		return vs_error_set(err, -ENOTSUP,
				    "unsupported VDI image (block size %" PRIu32 " is not %u)",
				    vs_le32(h + VDI_OFF_BLOCK_SIZE), VDI_BLOCK);
	if (vs_le32(h + VDI_OFF_BMAP) % 512 || vs_le32(h + VDI_OFF_DATA) % 512)
		return vs_error_set(err, -ENOTSUP,
				    "unsupported VDI image (unaligned block map "
				    "or data offset)");
	if (disk > (uint64_t)blocks * VDI_BLOCK || disk > VS_NODE_MAX_SIZE)
		return vs_error_set(err, -ENOTSUP,
				    "unsupported VDI image (disk size %" PRIu64
				    ", image bitmap has room for %" PRIu64 ")",
				    disk, (uint64_t)blocks * VDI_BLOCK);
	if (!is_zero(h + VDI_OFF_UUID_LINK, 16))
		return vs_error_set(err, -ENOTSUP, "unsupported VDI image (non-NULL link UUID)");
	if (!is_zero(h + VDI_OFF_UUID_PARENT, 16))
		return vs_error_set(err, -ENOTSUP, "unsupported VDI image (non-NULL parent UUID)");
	return 0;
}

static int vdi_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct vdi_state *s = node->opaque;
	uint8_t h[VDI_HEADER];
	void *bmap;
	int ret;

	ret = imp_open_check(node, opts, "vdi", err);
	if (ret < 0)
		return ret;
	if (vs_node_size(node->file) < VDI_HEADER)
		return vs_error_set(err, -EINVAL, "'%s' is too short for a VDI image",
				    node->filename);
	ret = vs_node_pread(node->file, 0, h, sizeof(h));
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read the VDI header");
	ret = vdi_check_header(node, h, err);
	if (ret < 0)
		return ret;
	s->nb_blocks = vs_le32(h + VDI_OFF_BLOCKS);
	s->nb_allocated = vs_le32(h + VDI_OFF_ALLOCATED);
	s->is_static = vs_le32(h + VDI_OFF_TYPE) == VDI_TYPE_STATIC;
	s->data_offset = vs_le32(h + VDI_OFF_DATA);
	/* The map lies inside the file: its size is bounded by the file's. */
	ret = imp_read_table(node->file, vs_le32(h + VDI_OFF_BMAP), (uint64_t)s->nb_blocks * 4,
			     "VDI block map", &bmap, err);
	if (ret < 0)
		return ret;
	s->bmap = bmap;
	for (uint32_t i = 0; i < s->nb_blocks; i++)
		s->bmap[i] = vs_le32((uint8_t *)&s->bmap[i]);
	node->size = vs_le64(h + VDI_OFF_DISK_SIZE);
	node->cluster_size = VDI_BLOCK;
	imp_set_limits(node, true);
	return 0;
}

static void vdi_close(struct vs_node *node)
{
	struct vdi_state *s = node->opaque;

	free(s->bmap);
	s->bmap = NULL;
}

static int vdi_lookup(struct vs_node *node, uint64_t offset, uint64_t len, struct imp_run *run)
{
	const struct vdi_state *s = node->opaque;
	uint64_t block = offset / VDI_BLOCK, in = offset % VDI_BLOCK;
	uint32_t e;

	run->len = VDI_BLOCK - in < len ? VDI_BLOCK - in : len;
	e = block < s->nb_blocks ? s->bmap[block] : VDI_FREE;
	if (e == VDI_FREE || e == VDI_DISCARDED) {
		run->kind = IMP_ZERO;
		return 0;
	}
	run->kind = IMP_DATA;
	run->file = node->file;
	run->file_offset = s->data_offset + (uint64_t)e * VDI_BLOCK + in;
	run->recurse = s->is_static;
	return 0;
}

static const struct imp_ops vdi_ops = { .lookup = vdi_lookup };

static int vdi_submit(struct vs_node *node, struct vs_req *req)
{
	return imp_submit(node, req, &vdi_ops);
}

/*
 * Every allocated entry must name a slot inside the map's range, used by no
 * other block, and the header's count of allocated blocks must match.
 */
static int vdi_check(struct vs_node *node, struct vs_check_result *res, unsigned fix)
{
	const struct vdi_state *s = node->opaque;
	uint32_t *owner, allocated = 0;

	if (fix)
		return -EROFS;
	owner = malloc(((size_t)s->nb_blocks + 1) * sizeof(*owner));
	if (!owner)
		return -ENOMEM;
	memset(owner, 0xff, ((size_t)s->nb_blocks + 1) * sizeof(*owner));
	for (uint32_t b = 0; b < s->nb_blocks; b++) {
		uint32_t e = s->bmap[b];

		if (e == VDI_FREE || e == VDI_DISCARDED)
			continue;
		if (e >= s->nb_blocks) {
			vs_warn("ERROR: block index %" PRIu32 " too large, is %" PRIu32, b, e);
			res->corruptions++;
			continue;
		}
		allocated++;
		if (owner[e] != VDI_FREE) {
			vs_warn("ERROR: block index %" PRIu32 " also used by %" PRIu32, owner[e],
				b);
			res->corruptions++;
		} else {
			owner[e] = b;
		}
	}
	free(owner);
	if (allocated != s->nb_allocated) {
		vs_warn("ERROR: allocated blocks mismatch, is %" PRIu32 ", should be %" PRIu32,
			allocated, s->nb_allocated);
		res->corruptions++;
	}
	return 0;
}

static int vdi_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		      unsigned flags, struct vs_error *err)
{
	(void)filename, (void)size, (void)opts, (void)nopts, (void)flags;
	return imp_refuse_create("vdi", err);
}

static int vdi_get_info(struct vs_node *node, struct vs_image_info *info)
{
	return imp_info_backing(node, info);
}

/*
 * The creation options qemu-img lists for vdi (create -o help), so that
 * the list reads the same; vstor does not write vdi (vdi_create refuses).
 */
static const struct vs_create_opt_desc vdi_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "static", "bool", "VDI static (pre-allocated) image" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_vdi = {
	.name = "vdi",
	.is_format = true,
	.state_size = sizeof(struct vdi_state),
	.probe = vdi_probe,
	.open = vdi_open,
	.close = vdi_close,
	.submit = vdi_submit,
	.create = vdi_create,
	.create_opts = vdi_create_opts,
	.get_info = vdi_get_info,
	.check = vdi_check,
};

VS_DRIVER_REGISTER(vs_driver_vdi)
