/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vhdx format (Microsoft's MS-VHDX), read-only. A file type identifier,
 * two headers (the valid one with the higher sequence number wins; CRC-32C
 * checked), two copies of a region table naming the BAT and the metadata
 * region, metadata items (block size, virtual disk size, sector sizes),
 * and a block allocation table of 64-bit entries (a state in the low 3
 * bits, a file offset in MiB above bit 20) whose payload entries are
 * interleaved with sector bitmap entries, one per chunk. Fields are
 * little-endian, GUIDs in their mixed-endian on-disk form.
 *
 * Not supported, and refused by name: differencing images (a parent), and
 * an image whose log must be replayed (QEMU refuses that read-only too;
 * replaying means writing).
 */
#include "../import/import.h"
#include "bytes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define VHDX_HEADER1 (64u * 1024)
#define VHDX_HEADER2 (128u * 1024)
#define VHDX_HEADER_LEN 4096
#define VHDX_REGION1 (192u * 1024)
#define VHDX_REGION2 (256u * 1024)
#define VHDX_REGION_LEN (64u * 1024)
#define VHDX_REGION_MAX_ENTRIES 2047
#define VHDX_METADATA_TABLE_LEN (64u * 1024)
#define VHDX_METADATA_MAX_ENTRIES 2047
#define VHDX_MIB (1ull << 20)
#define VHDX_MAX_SIZE (64ull << 40) /* 64 TiB */
#define VHDX_LOG_PAGE 4096

/* BAT payload states. */
#define VHDX_PAYLOAD_FULLY_PRESENT 6
#define VHDX_PAYLOAD_PARTIALLY_PRESENT 7

/* Metadata item flags. */
#define VHDX_META_REQUIRED 0x4
/* File parameters flags. */
#define VHDX_PARAMS_HAS_PARENT 0x2

static const uint8_t vhdx_guid_bat[16] = { 0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
					   0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
static const uint8_t vhdx_guid_metadata[16] = { 0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
						0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
static const uint8_t vhdx_guid_file_params[16] = { 0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
						   0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };
static const uint8_t vhdx_guid_disk_size[16] = { 0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
						 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 };
static const uint8_t vhdx_guid_page83[16] = { 0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
					      0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 };
static const uint8_t vhdx_guid_logical_sector[16] = { 0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9,
						      0x09, 0x47, 0xba, 0x47, 0xf2, 0x33,
						      0xa8, 0xfa, 0xab, 0x5f };
static const uint8_t vhdx_guid_physical_sector[16] = { 0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44,
						       0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88,
						       0x52, 0x51, 0xc5, 0x56 };
static const uint8_t vhdx_guid_parent_locator[16] = { 0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3,
						      0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8,
						      0x48, 0x34, 0xab, 0x0c };

struct vhdx_state {
	uint32_t block_size;
	uint32_t logical_sector;
	uint64_t chunk_ratio; /* payload blocks per sector bitmap block */
	uint64_t nb_blocks;
	uint64_t nb_entries;
	uint64_t *bat; /* host order */
};

static int vhdx_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	return len >= 8 && !memcmp(buf, "vhdxfile", 8) ? 100 : 0;
}

/* Whether the CRC-32C of @len bytes at @buf, with its own field at @at zeroed, matches. */
static bool crc_ok(uint8_t *buf, size_t len, size_t at)
{
	uint32_t want = vs_le32(buf + at);

	memset(buf + at, 0, 4);
	return imp_crc32c(0, buf, len) == want;
}

static bool is_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* The current header (4 KiB) into @h. */
static int read_header(struct vs_node *node, uint8_t *h, struct vs_error *err)
{
	uint8_t *a = vs_buf_alloc(VHDX_HEADER_LEN), *b = vs_buf_alloc(VHDX_HEADER_LEN);
	bool a_ok, b_ok;
	int ret = a && b ? 0 : -ENOMEM;

	if (ret == 0)
		ret = imp_pread(node->file, VHDX_HEADER1, a, VHDX_HEADER_LEN);
	if (ret == 0)
		ret = imp_pread(node->file, VHDX_HEADER2, b, VHDX_HEADER_LEN);
	if (ret < 0) {
		free(a);
		free(b);
		return vs_error_setf_errno(err, ret, "Could not read the VHDX headers");
	}
	a_ok = !memcmp(a, "head", 4) && crc_ok(a, VHDX_HEADER_LEN, 4) && vs_le16(a + 66) == 1;
	b_ok = !memcmp(b, "head", 4) && crc_ok(b, VHDX_HEADER_LEN, 4) && vs_le16(b + 66) == 1;
	if (a_ok && (!b_ok || vs_le64(a + 8) >= vs_le64(b + 8)))
		memcpy(h, a, VHDX_HEADER_LEN);
	else if (b_ok)
		memcpy(h, b, VHDX_HEADER_LEN);
	else
		ret = vs_error_set(err, -EINVAL, "No valid VHDX header found in '%s'",
				   node->filename);
	free(a);
	free(b);
	return ret;
}

/*
 * A log whose guid the header names and that holds an entry of that guid
 * must be replayed before the data is current.
 */
static int check_log(struct vs_node *node, const uint8_t *h, struct vs_error *err)
{
	uint64_t off = vs_le64(h + 72), len = vs_le32(h + 68);
	uint8_t *log;
	bool pending = false;
	int ret;

	if (is_zero(h + 48, 16))
		return 0;
	ret = imp_read_table(node->file, off, len, "VHDX log", (void **)&log, err);
	if (ret < 0)
		return ret;
	/* An entry: "loge", its CRC-32C over its length (pages), the header's log guid. */
	for (uint64_t p = 0; p + VHDX_LOG_PAGE <= len && !pending; p += VHDX_LOG_PAGE) {
		uint8_t *e = log + p;
		uint64_t elen = vs_le32(e + 8);

		if (memcmp(e, "loge", 4) || memcmp(e + 32, h + 48, 16) || !elen ||
		    elen % VHDX_LOG_PAGE || elen > len - p)
			continue;
		pending = crc_ok(e, (size_t)elen, 4);
	}
	free(log);
	if (pending)
		return vs_error_set(err, -ENOTSUP,
				    "VHDX image '%s' has a log that needs to be replayed; "
				    "vstor does not replay it (qemu-img check -r all '%s' does)",
				    node->filename, node->filename);
	return 0;
}

struct vhdx_regions {
	uint64_t bat_off, bat_len, meta_off, meta_len;
};

static int parse_regions(struct vs_node *node, struct vhdx_regions *r, struct vs_error *err)
{
	uint8_t *t = vs_buf_alloc(VHDX_REGION_LEN);
	const uint64_t where[2] = { VHDX_REGION1, VHDX_REGION2 };
	int ret = -EINVAL;

	if (!t)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < 2 && ret < 0; i++) {
		uint32_t n;

		if (imp_pread(node->file, where[i], t, VHDX_REGION_LEN) < 0)
			continue;
		if (memcmp(t, "regi", 4) || !crc_ok(t, VHDX_REGION_LEN, 4))
			continue;
		n = vs_le32(t + 8);
		if (n > VHDX_REGION_MAX_ENTRIES)
			continue;
		ret = 0;
		for (uint32_t k = 0; k < n && ret == 0; k++) {
			const uint8_t *e = t + 16 + 32 * k;

			if (!memcmp(e, vhdx_guid_bat, 16)) {
				r->bat_off = vs_le64(e + 16);
				r->bat_len = vs_le32(e + 24);
			} else if (!memcmp(e, vhdx_guid_metadata, 16)) {
				r->meta_off = vs_le64(e + 16);
				r->meta_len = vs_le32(e + 24);
			} else if (vs_le32(e + 28) & 1) {
				ret = vs_error_set(err, -ENOTSUP,
						   "VHDX image '%s' requires a region vstor does "
						   "not know",
						   node->filename);
			}
		}
	}
	free(t);
	if (ret == -EINVAL)
		return vs_error_set(err, -EINVAL, "No valid VHDX region table found in '%s'",
				    node->filename);
	if (ret == 0 && (!r->bat_len || !r->meta_len))
		return vs_error_set(err, -EINVAL, "VHDX region table lacks the BAT or metadata");
	return ret;
}

/* One metadata item's value: *@p at the item, of at least @need bytes. */
static int meta_item(const uint8_t *meta, uint64_t meta_len, const uint8_t *e, size_t need,
		     const uint8_t **p, struct vs_error *err)
{
	uint64_t off = vs_le32(e + 16), len = vs_le32(e + 20);

	if (len < need || off > meta_len || need > meta_len - off)
		return vs_error_set(err, -EINVAL, "Invalid VHDX metadata item");
	*p = meta + off;
	return 0;
}

static int parse_metadata(struct vs_node *node, struct vhdx_state *s, const struct vhdx_regions *r,
			  struct vs_error *err)
{
	uint64_t size = 0;
	uint32_t flags = 0, n;
	uint8_t *meta;
	bool have_params = false, have_size = false, have_lss = false;
	int ret;

	ret = imp_read_table(node->file, r->meta_off, r->meta_len, "VHDX metadata region",
			     (void **)&meta, err);
	if (ret < 0)
		return ret;
	n = vs_le16(meta + 10);
	if (memcmp(meta, "metadata", 8) || n > VHDX_METADATA_MAX_ENTRIES ||
	    32 + 32 * (uint64_t)n > r->meta_len) {
		free(meta);
		return vs_error_set(err, -EINVAL, "Invalid VHDX metadata table in '%s'",
				    node->filename);
	}
	for (uint32_t k = 0; k < n && ret == 0; k++) {
		const uint8_t *e = meta + 32 + 32 * k, *p;

		if (!memcmp(e, vhdx_guid_file_params, 16)) {
			ret = meta_item(meta, r->meta_len, e, 8, &p, err);
			if (ret == 0) {
				s->block_size = vs_le32(p);
				flags = vs_le32(p + 4);
				have_params = true;
			}
		} else if (!memcmp(e, vhdx_guid_disk_size, 16)) {
			ret = meta_item(meta, r->meta_len, e, 8, &p, err);
			if (ret == 0) {
				size = vs_le64(p);
				have_size = true;
			}
		} else if (!memcmp(e, vhdx_guid_logical_sector, 16)) {
			ret = meta_item(meta, r->meta_len, e, 4, &p, err);
			if (ret == 0) {
				s->logical_sector = vs_le32(p);
				have_lss = true;
			}
		} else if (!memcmp(e, vhdx_guid_parent_locator, 16)) {
			flags |= VHDX_PARAMS_HAS_PARENT;
		} else if (memcmp(e, vhdx_guid_page83, 16) &&
			   memcmp(e, vhdx_guid_physical_sector, 16) &&
			   (vs_le32(e + 24) & VHDX_META_REQUIRED)) {
			ret = vs_error_set(err, -ENOTSUP,
					   "VHDX image '%s' requires metadata vstor does not know",
					   node->filename);
		}
	}
	free(meta);
	if (ret < 0)
		return ret;
	if (!have_params || !have_size || !have_lss)
		return vs_error_set(err, -EINVAL, "VHDX metadata incomplete in '%s'",
				    node->filename);
	if (flags & VHDX_PARAMS_HAS_PARENT)
		return vs_error_set(err, -ENOTSUP,
				    "VHDX differencing images are not supported by vstor ('%s')",
				    node->filename);
	if (s->block_size < VHDX_MIB || s->block_size > 256 * VHDX_MIB ||
	    (s->block_size & (s->block_size - 1)))
		return vs_error_set(err, -EINVAL, "Invalid VHDX block size %" PRIu32,
				    s->block_size);
	if (s->logical_sector != 512 && s->logical_sector != 4096)
		return vs_error_set(err, -EINVAL, "Invalid VHDX logical sector size %" PRIu32,
				    s->logical_sector);
	if (!size || size > VHDX_MAX_SIZE || size % s->logical_sector)
		return vs_error_set(err, -EINVAL, "Invalid VHDX virtual disk size %" PRIu64, size);
	node->size = size;
	return 0;
}

static int vhdx_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct vhdx_state *s = node->opaque;
	struct vhdx_regions r;
	uint8_t *h;
	void *bat;
	int ret;

	ret = imp_open_check(node, opts, "vhdx", err);
	if (ret < 0)
		return ret;
	h = vs_buf_alloc(VHDX_HEADER_LEN);
	if (!h)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = read_header(node, h, err);
	if (ret == 0)
		ret = check_log(node, h, err);
	free(h);
	if (ret == 0)
		ret = parse_regions(node, &r, err);
	if (ret == 0)
		ret = parse_metadata(node, s, &r, err);
	if (ret < 0)
		return ret;
	s->chunk_ratio = ((1ull << 23) * s->logical_sector) / s->block_size;
	s->nb_blocks = (node->size + s->block_size - 1) / s->block_size;
	s->nb_entries = s->nb_blocks + (s->nb_blocks - 1) / s->chunk_ratio;
	if (s->nb_entries * 8 > r.bat_len)
		return vs_error_set(err, -EINVAL, "VHDX BAT region too small for the disk");
	ret = imp_read_table(node->file, r.bat_off, s->nb_entries * 8, "VHDX BAT", &bat, err);
	if (ret < 0)
		return ret;
	s->bat = bat;
	for (uint64_t i = 0; i < s->nb_entries; i++)
		s->bat[i] = vs_le64((uint8_t *)&s->bat[i]);
	node->cluster_size = s->block_size;
	/* QEMU's vhdx answers no block status: every byte is data. */
	imp_set_limits(node, false);
	return 0;
}

static void vhdx_close(struct vs_node *node)
{
	struct vhdx_state *s = node->opaque;

	free(s->bat);
	s->bat = NULL;
}

static uint64_t bat_entry(const struct vhdx_state *s, uint64_t block)
{
	return s->bat[block + block / s->chunk_ratio];
}

static int vhdx_lookup(struct vs_node *node, uint64_t offset, uint64_t len, struct imp_run *run)
{
	const struct vhdx_state *s = node->opaque;
	uint64_t block = offset / s->block_size, in = offset % s->block_size, e;

	run->len = s->block_size - in < len ? s->block_size - in : len;
	run->recurse = false;
	if (block >= s->nb_blocks) {
		run->kind = IMP_ZERO;
		return 0;
	}
	e = bat_entry(s, block);
	switch (e & 7) {
	case VHDX_PAYLOAD_FULLY_PRESENT:
		run->kind = IMP_DATA;
		run->file = node->file;
		run->file_offset = (e >> 20) * VHDX_MIB + in;
		return 0;
	case VHDX_PAYLOAD_PARTIALLY_PRESENT:
		return -EIO; /* only in differencing images, which are refused */
	default:
		run->kind = IMP_ZERO; /* not present, undefined, zero, unmapped */
		return 0;
	}
}

static const struct imp_ops vhdx_ops = { .lookup = vhdx_lookup };

static int vhdx_submit(struct vs_node *node, struct vs_req *req)
{
	return imp_submit(node, req, &vhdx_ops);
}

/* Payload blocks stored past the end of the file (a truncated image). */
static int vhdx_check(struct vs_node *node, struct vs_check_result *res, unsigned fix)
{
	const struct vhdx_state *s = node->opaque;
	uint64_t fsize = vs_node_size(node->file);

	if (fix)
		return -EROFS;
	for (uint64_t b = 0; b < s->nb_blocks; b++) {
		uint64_t e = bat_entry(s, b), off = (e >> 20) * VHDX_MIB;

		if ((e & 7) != VHDX_PAYLOAD_FULLY_PRESENT &&
		    (e & 7) != VHDX_PAYLOAD_PARTIALLY_PRESENT)
			continue;
		if (off > fsize || s->block_size > fsize - off) {
			vs_warn("VHDX BAT entry %" PRIu64 " start offset %" PRIu64
				" points after end of file (%" PRIu64
				"). Image has probably been truncated.",
				b, off, fsize);
			res->corruptions++;
		}
	}
	return 0;
}

static int vhdx_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		       unsigned flags, struct vs_error *err)
{
	(void)filename, (void)size, (void)opts, (void)nopts, (void)flags;
	return imp_refuse_create("vhdx", err);
}

static int vhdx_get_info(struct vs_node *node, struct vs_image_info *info)
{
	return imp_info_backing(node, info);
}

/*
 * The creation options qemu-img lists for vhdx (create -o help), so that
 * the list reads the same; vstor does not write vhdx (vhdx_create refuses).
 */
static const struct vs_create_opt_desc vhdx_create_opts[] = {
	{ "size", "size", "Virtual disk size; max of 64TB." },
	{ "log_size", "size", "Log size; min 1MB." },
	{ "block_size", "size",
	  "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size." },
	{ "subformat", "string",
	  "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'." },
	{ "block_state_zero", "bool",
	  "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to "
	  "'off' when using 'qemu-img convert' with subformat=dynamic." },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_vhdx = {
	.name = "vhdx",
	.is_format = true,
	.state_size = sizeof(struct vhdx_state),
	.probe = vhdx_probe,
	.open = vhdx_open,
	.close = vhdx_close,
	.submit = vhdx_submit,
	.create = vhdx_create,
	.create_opts = vhdx_create_opts,
	.get_info = vhdx_get_info,
	.check = vhdx_check,
};

VS_DRIVER_REGISTER(vs_driver_vhdx)
