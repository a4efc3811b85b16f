/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vmdk format (VMware's Virtual Disk Format 5.0), read-only. A disk is
 * a list of extents, named by a text descriptor: a file of its own
 * (monolithicFlat, twoGbMaxExtentFlat/Sparse: the image file is the text)
 * or embedded in a sparse extent (monolithicSparse, streamOptimized: the
 * image file starts with "KDMV"). Extents are FLAT (the bytes of a file
 * from an offset), SPARSE (a grain directory of grain tables of grains,
 * little-endian sector numbers; streamOptimized grains are deflated and
 * preceded by a marker, and its directory sits in a footer) or ZERO.
 * Other extent types (VMFSSPARSE, SESPARSE, raw device maps) are refused.
 * A delta disk's parent (parentFileNameHint) is its backing file.
 */
#include "../import/import.h"
#include "bytes.h"
#include "vmdk-desc.h"

#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VMDK_MAGIC "KDMV"
#define VMDK_HEADER 512
#define VMDK_GD_AT_END UINT64_MAX
#define VMDK_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK_FLAG_MARKERS (1u << 17)
#define VMDK_COMPRESS_DEFLATE 1
#define VMDK_GTE_ZEROED 1u
/* Grains up to 64 MiB, grain tables up to 512 entries, as QEMU accepts. */
#define VMDK_MAX_GRAIN_SECTORS (128u * 1024)
#define VMDK_MAX_GTES 512u
#define VMDK_MARKER_LEN 12

struct vmdk_extent {
	enum vmdk_extent_type type;
	struct vs_node *file; /* the extent's file; owned unless it is node->file */
	uint64_t start, len;  /* guest bytes */
	uint64_t flat_offset; /* FLAT: bytes into the file */
	/* SPARSE: */
	uint64_t grain;	   /* bytes */
	uint32_t gtes;	   /* entries per grain table */
	uint64_t gt_cover; /* guest bytes one grain table covers */
	uint64_t nb_gd;
	uint32_t *gd; /* host order, sectors of grain tables */
	bool compressed, markers, zero_grain;
};

struct vmdk_state {
	struct vmdk_desc desc;
	bool have_desc;
	unsigned nb_extents;
	struct vmdk_extent *extents;
	struct imp_table_cache gt_cache;
};

static int vmdk_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	if (len >= 4 && !memcmp(buf, VMDK_MAGIC, 4))
		return 100;
	return vmdk_desc_probe(buf, len);
}

/* The sparse header of @f into @e; the embedded descriptor's place into *@desc_off/len. */
static int sparse_open(struct vs_node *f, struct vmdk_extent *e, uint64_t *desc_off,
		       uint64_t *desc_len, struct vs_error *err)
{
	uint64_t fsize = vs_node_size(f), cap, grain, gd_off;
	uint8_t h[VMDK_HEADER];
	void *gd;
	int ret;

	if (fsize < VMDK_HEADER)
		return vs_error_set(err, -EINVAL, "'%s' is too short for a VMDK sparse extent",
				    vs_node_filename(f));
	ret = vs_node_pread(f, 0, h, sizeof(h));
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read the VMDK header");
	if (memcmp(h, VMDK_MAGIC, 4))
		return vs_error_set(err, -EINVAL, "'%s' is not a VMDK sparse extent",
				    vs_node_filename(f));
	if (vs_le32(h + 4) > 3)
		return vs_error_set(err, -ENOTSUP, "Unsupported VMDK version %" PRIu32,
				    vs_le32(h + 4));
	*desc_off = vs_le64(h + 28) * 512;
	*desc_len = vs_le64(h + 36) * 512;
	if (vs_le64(h + 56) == VMDK_GD_AT_END) {
		/* streamOptimized: the directory is known at the end, in a footer copy. */
		if (fsize < 3 * VMDK_HEADER)
			return vs_error_set(err, -EINVAL, "VMDK footer missing");
		ret = vs_node_pread(f, fsize - 2 * VMDK_HEADER, h, sizeof(h));
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Could not read the VMDK footer");
		if (memcmp(h, VMDK_MAGIC, 4) || vs_le64(h + 56) == VMDK_GD_AT_END)
			return vs_error_set(err, -EINVAL, "Invalid VMDK footer in '%s'",
					    vs_node_filename(f));
	}
	cap = vs_le64(h + 12);
	grain = vs_le64(h + 20);
	e->gtes = vs_le32(h + 44);
	gd_off = vs_le64(h + 56);
	if (!grain || grain > VMDK_MAX_GRAIN_SECTORS)
		return vs_error_set(err, -EINVAL, "Invalid VMDK grain size %" PRIu64 " sectors",
				    grain);
	if (!e->gtes || e->gtes > VMDK_MAX_GTES)
		return vs_error_set(err, -EINVAL, "Invalid VMDK grain table size %" PRIu32,
				    e->gtes);
	if (cap > VS_NODE_MAX_SIZE / 512)
		return vs_error_set(err, -EFBIG, "VMDK extent too large");
	e->type = VMDK_EXTENT_SPARSE;
	e->len = cap * 512;
	e->grain = grain * 512;
	e->gt_cover = e->grain * e->gtes;
	e->nb_gd = (e->len + e->gt_cover - 1) / e->gt_cover;
	e->compressed = vs_le16(h + 77) == VMDK_COMPRESS_DEFLATE;
	e->markers = vs_le32(h + 8) & VMDK_FLAG_MARKERS;
	e->zero_grain = vs_le32(h + 8) & VMDK_FLAG_ZERO_GRAIN;
	if (gd_off > UINT64_MAX / 512)
		return vs_error_set(err, -EINVAL, "Invalid VMDK grain directory offset");
	/* Inside the file, so no larger than the file. */
	ret = imp_read_table(f, gd_off * 512, e->nb_gd * 4, "VMDK grain directory", &gd, err);
	if (ret < 0)
		return ret;
	e->gd = gd;
	for (uint64_t i = 0; i < e->nb_gd; i++)
		e->gd[i] = vs_le32((uint8_t *)&e->gd[i]);
	return 0;
}

static struct vmdk_extent *add_extent(struct vmdk_state *s, struct vs_error *err)
{
	struct vmdk_extent *e = realloc(s->extents, sizeof(*e) * (s->nb_extents + 1));

	if (!e) {
		vs_error_set(err, -ENOMEM, "Out of memory");
		return NULL;
	}
	s->extents = e;
	e = &s->extents[s->nb_extents++];
	memset(e, 0, sizeof(*e));
	return e;
}

/* Parse a descriptor of @len bytes at @off of @f into s->desc. */
static int read_desc(struct vs_node *f, struct vmdk_state *s, uint64_t off, uint64_t len,
		     struct vs_error *err)
{
	char *text;
	int ret;

	if (len > VMDK_DESC_MAX_LEN)
		return vs_error_set(err, -EINVAL, "VMDK descriptor too large (%" PRIu64 " bytes)",
				    len);
	ret = imp_read_table(f, off, len, "VMDK descriptor", (void **)&text, err);
	if (ret < 0)
		return ret;
	ret = vmdk_desc_parse(text, (size_t)len, &s->desc, err);
	free(text);
	if (ret == 0)
		s->have_desc = true;
	return ret;
}

/* monolithicSparse, streamOptimized: the file is the one sparse extent. */
static int open_sparse_file(struct vs_node *node, struct vmdk_state *s, struct vs_error *err)
{
	struct vmdk_extent *e = add_extent(s, err);
	struct vs_error ignored = { 0 };
	uint64_t doff, dlen;
	int ret;

	if (!e)
		return -ENOMEM;
	e->file = node->file;
	ret = sparse_open(node->file, e, &doff, &dlen, err);
	if (ret < 0)
		return ret;
	/* The embedded descriptor only adds the CIDs, the type and the parent. */
	if (doff && dlen)
		(void)read_desc(node->file, s, doff, dlen, &ignored);
	return 0;
}

static int open_extent_file(struct vs_node *node, const struct vs_open_opts *opts, const char *name,
			    struct vs_node **out, struct vs_error *err)
{
	struct vs_open_opts o = { .read_only = true,
				  .force_share = opts->force_share,
				  .cache = opts->cache };
	struct vs_error inner = { 0 };
	char path[4096];
	int ret;

	if (vs_path_combine(path, sizeof(path), node->filename, name) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "VMDK extent name too long: '%s'", name);
	o.filename = path;
	ret = vs_protocol_open(out, path, &o, &inner);
	if (ret < 0)
		return vs_error_set(err, ret, "Could not open VMDK extent '%s': %s", path,
				    inner.msg);
	return 0;
}

/* A text descriptor file: open every extent it names, in order. */
static int open_desc_file(struct vs_node *node, const struct vs_open_opts *opts,
			  struct vmdk_state *s, struct vs_error *err)
{
	uint64_t fsize = vs_node_size(node->file), start = 0;
	int ret;

	ret = read_desc(node->file, s, 0, fsize, err);
	if (ret < 0)
		return ret;
	if (!s->desc.nb_extents)
		return vs_error_set(err, -EINVAL, "VMDK descriptor '%s' names no extent",
				    node->filename);
	for (unsigned i = 0; i < s->desc.nb_extents; i++) {
		const struct vmdk_desc_extent *d = &s->desc.extents[i];
		struct vmdk_extent *e = add_extent(s, err);
		uint64_t doff, dlen;

		if (!e)
			return -ENOMEM;
		e->type = d->type;
		if (d->sectors > VS_NODE_MAX_SIZE / 512)
			return vs_error_set(err, -EFBIG, "VMDK extent too large");
		e->len = d->sectors * 512;
		if (d->type != VMDK_EXTENT_ZERO) {
			ret = open_extent_file(node, opts, d->filename, &e->file, err);
			if (ret < 0)
				return ret;
		}
		if (d->type == VMDK_EXTENT_FLAT) {
			if (d->offset > UINT64_MAX / 512)
				return vs_error_set(err, -EINVAL, "Invalid VMDK extent offset");
			e->flat_offset = d->offset * 512;
		} else if (d->type == VMDK_EXTENT_SPARSE) {
			ret = sparse_open(e->file, e, &doff, &dlen, err);
			if (ret < 0)
				return ret;
		}
		if (e->len > VS_NODE_MAX_SIZE - start)
			return vs_error_set(err, -EFBIG, "VMDK image too large");
		e->start = start;
		start += e->len;
	}
	return 0;
}

static void vmdk_close(struct vs_node *node)
{
	struct vmdk_state *s = node->opaque;

	for (unsigned i = 0; i < s->nb_extents; i++) {
		free(s->extents[i].gd);
		if (s->extents[i].file && s->extents[i].file != node->file)
			vs_node_close(s->extents[i].file);
	}
	free(s->extents);
	s->extents = NULL;
	s->nb_extents = 0;
	vmdk_desc_free(&s->desc);
	imp_cache_free(&s->gt_cache);
}

static int vmdk_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct vmdk_state *s = node->opaque;
	uint8_t magic[4] = { 0 };
	int ret;

	ret = imp_open_check(node, opts, "vmdk", err);
	if (ret < 0)
		return ret;
	if (imp_cache_init(&s->gt_cache, VMDK_MAX_GTES * 4) < 0)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = imp_pread(node->file, 0, magic, sizeof(magic));
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Could not read '%s'", node->filename);
		goto fail;
	}
	if (!memcmp(magic, VMDK_MAGIC, 4))
		ret = open_sparse_file(node, s, err);
	else
		ret = open_desc_file(node, opts, s, err);
	if (ret < 0)
		goto fail;
	node->size = 0;
	for (unsigned i = 0; i < s->nb_extents; i++)
		node->size += s->extents[i].len;
	if (s->extents[0].type == VMDK_EXTENT_SPARSE)
		node->cluster_size = s->extents[0].grain;
	if (s->have_desc && s->desc.parent_cid != UINT32_MAX && s->desc.parent_hint) {
		/* A delta disk's parent is a vmdk (QEMU records the same). */
		node->backing_name = s->desc.parent_hint;
		node->backing_fmt = "vmdk";
	}
	imp_set_limits(node, true);
	return 0;
fail:
	vmdk_close(node);
	return ret;
}

static const struct vmdk_extent *find_extent(const struct vmdk_state *s, uint64_t offset)
{
	unsigned lo = 0, hi = s->nb_extents;

	while (hi - lo > 1) {
		unsigned mid = lo + (hi - lo) / 2;

		if (s->extents[mid].start <= offset)
			lo = mid;
		else
			hi = mid;
	}
	return &s->extents[lo];
}

/* What a grain table entry says: the run's kind and file offset. */
static enum imp_kind gte_kind(const struct vmdk_extent *e, uint32_t gte)
{
	if (gte == 0)
		return IMP_UNALLOCATED;
	if (gte == VMDK_GTE_ZEROED && e->zero_grain)
		return IMP_ZERO;
	return e->compressed ? IMP_COMPRESSED : IMP_DATA;
}

static int sparse_lookup(struct vmdk_state *s, const struct vmdk_extent *e, uint64_t eoff,
			 uint64_t len, struct imp_run *run)
{
	uint64_t gdi = eoff / e->gt_cover, in_gt = eoff % e->gt_cover;
	uint32_t i = (uint32_t)(in_gt / e->grain), gte;
	uint64_t in = eoff % e->grain;
	const uint8_t *gt;
	int ret;

	run->file = e->file;
	if (gdi >= e->nb_gd || e->gd[gdi] == 0) {
		run->kind = IMP_UNALLOCATED;
		run->len = e->gt_cover - in_gt < len ? e->gt_cover - in_gt : len;
		return 0;
	}
	ret = imp_cache_get(&s->gt_cache, e->file, (uint64_t)e->gd[gdi] * 512, &gt);
	if (ret < 0)
		return ret;
	gte = vs_le32(gt + 4 * i);
	run->kind = gte_kind(e, gte);
	run->file_offset = (uint64_t)gte * 512 + (run->kind == IMP_DATA ? in : 0);
	run->len = e->grain - in;
	/* Whole grains that follow with the same answer (one compressed grain a run). */
	while (run->len < len && run->kind != IMP_COMPRESSED && ++i < e->gtes) {
		uint32_t next = vs_le32(gt + 4 * i);

		if (gte_kind(e, next) != run->kind ||
		    (run->kind == IMP_DATA && (uint64_t)next * 512 != run->file_offset + run->len))
			break;
		run->len += e->grain;
	}
	if (run->len > len)
		run->len = len;
	return 0;
}

static int vmdk_lookup(struct vs_node *node, uint64_t offset, uint64_t len, struct imp_run *run)
{
	struct vmdk_state *s = node->opaque;
	const struct vmdk_extent *e = find_extent(s, offset);
	uint64_t eoff = offset - e->start;

	if (len > e->len - eoff)
		len = e->len - eoff;
	run->len = len;
	run->recurse = false;
	switch (e->type) {
	case VMDK_EXTENT_FLAT:
		run->kind = IMP_DATA;
		run->file = e->file;
		run->file_offset = e->flat_offset + eoff;
		run->recurse = true;
		return 0;
	case VMDK_EXTENT_ZERO:
		run->kind = IMP_ZERO;
		return 0;
	case VMDK_EXTENT_SPARSE:
		return sparse_lookup(s, e, eoff, len, run);
	}
	return -EIO;
}

/* Inflate the grain at run->file_offset and copy [offset, offset+len) of it. */
static int vmdk_read_compressed(struct vs_node *node, const struct imp_run *run, uint64_t offset,
				uint64_t len, uint8_t *buf)
{
	const struct vmdk_extent *e = find_extent(node->opaque, offset);
	uint64_t in = (offset - e->start) % e->grain, pos = run->file_offset;
	size_t clen = (size_t)(2 * e->grain + 512), out = 0;
	struct libdeflate_decompressor *d = NULL;
	uint8_t *cbuf = NULL, *grain = NULL, marker[VMDK_MARKER_LEN];
	int ret;

	if (in + len > e->grain)
		return -EIO;
	if (e->markers) {
		ret = imp_pread(e->file, pos, marker, sizeof(marker));
		if (ret < 0)
			return ret;
		if (vs_le32(marker + 8) > clen)
			return -EIO;
		clen = vs_le32(marker + 8);
		pos += VMDK_MARKER_LEN;
	}
	cbuf = malloc(clen ? clen : 1);
	grain = malloc((size_t)e->grain);
	d = libdeflate_alloc_decompressor();
	ret = cbuf && grain && d ? 0 : -ENOMEM;
	if (ret == 0)
		ret = imp_pread(e->file, pos, cbuf, clen);
	if (ret == 0 && libdeflate_zlib_decompress_ex(d, cbuf, clen, grain, (size_t)e->grain, NULL,
						      &out) != LIBDEFLATE_SUCCESS)
		ret = -EIO;
	if (ret == 0) {
		memset(grain + out, 0, (size_t)e->grain - out);
		memcpy(buf, grain + in, (size_t)len);
	}
	if (d)
		libdeflate_free_decompressor(d);
	free(grain);
	free(cbuf);
	return ret;
}

static const struct imp_ops vmdk_ops = {
	.lookup = vmdk_lookup,
	.read_compressed = vmdk_read_compressed,
};

static int vmdk_submit(struct vs_node *node, struct vs_req *req)
{
	return imp_submit(node, req, &vmdk_ops);
}

/* Grains stored past the end of their file: corruptions, as qemu-img check finds them. */
static int vmdk_check(struct vs_node *node, struct vs_check_result *res, unsigned fix)
{
	struct vmdk_state *s = node->opaque;

	if (fix)
		return -EROFS;
	for (unsigned x = 0; x < s->nb_extents; x++) {
		const struct vmdk_extent *e = &s->extents[x];
		uint64_t fsize;

		if (e->type != VMDK_EXTENT_SPARSE)
			continue;
		fsize = vs_node_size(e->file);
		for (uint64_t g = 0; g < e->nb_gd; g++) {
			const uint8_t *gt;

			if (!e->gd[g])
				continue;
			if ((uint64_t)e->gd[g] * 512 >= fsize) {
				vs_warn("ERROR: grain table %" PRIu64
					" of extent %u points after EOF",
					g, x);
				res->check_errors++;
				return 0;
			}
			if (imp_cache_get(&s->gt_cache, e->file, (uint64_t)e->gd[g] * 512, &gt) <
			    0) {
				res->check_errors++;
				return 0;
			}
			for (uint32_t i = 0; i < e->gtes; i++) {
				uint32_t gte = vs_le32(gt + 4 * i);
				uint64_t sector = (e->start + g * e->gt_cover + i * e->grain) / 512;

				if (gte_kind(e, gte) == IMP_UNALLOCATED ||
				    gte_kind(e, gte) == IMP_ZERO)
					continue;
				if ((uint64_t)gte * 512 >= fsize) {
					vs_warn("ERROR: cluster offset for sector %" PRIu64
						" points after EOF",
						sector);
					res->corruptions++;
					return 0;
				}
			}
		}
	}
	return 0;
}

/* The descriptor and every extent file, as qemu-img's "disk size". */
static int64_t vmdk_allocated_size(struct vs_node *node)
{
	const struct vmdk_state *s = node->opaque;
	int64_t sum = vs_node_allocated_size(node->file), n;

	for (unsigned i = 0; i < s->nb_extents && sum >= 0; i++) {
		struct vs_node *f = s->extents[i].file;

		if (!f || f == node->file)
			continue;
		n = vs_node_allocated_size(f);
		sum = n < 0 ? n : sum + n;
	}
	return sum;
}

static int vmdk_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		       unsigned flags, struct vs_error *err)
{
	(void)filename, (void)size, (void)opts, (void)nopts, (void)flags;
	return imp_refuse_create("vmdk", err);
}

/* As qemu-img: the CIDs, the create type and the extents. */
static int vmdk_get_info(struct vs_node *node, struct vs_image_info *info)
{
	const struct vmdk_state *s = node->opaque;
	int ret = imp_info_backing(node, info);

	if (ret < 0 || !s->have_desc)
		return ret;
	snprintf(info->specific_type, sizeof(info->specific_type), "vmdk");
	vs_info_add_int(info, "cid", s->desc.cid);
	vs_info_add_int(info, "parent-cid", s->desc.parent_cid);
	vs_info_add_str(info, "create-type", s->desc.create_type);
	info->extents = calloc(s->nb_extents ? s->nb_extents : 1, sizeof(*info->extents));
	if (!info->extents)
		return -ENOMEM;
	for (unsigned i = 0; i < s->nb_extents; i++) {
		const struct vmdk_extent *e = &s->extents[i];
		struct vs_info_extent *x = &info->extents[i];
		const char *name = vs_node_filename(e->file ? e->file : node->file);

		x->filename = strdup(name ? name : "");
		if (!x->filename)
			return -ENOMEM; /* the caller frees what is filled */
		info->nb_extents++;
		x->virtual_size = e->len;
		x->compressed = e->compressed;
		if (e->type == VMDK_EXTENT_SPARSE)
			x->cluster_size = e->grain;
		/* An extent in the descriptor's own file has no type, as in qemu-img. */
		if (e->file == node->file)
			x->format[0] = 0;
		else
			snprintf(x->format, sizeof(x->format), "%s",
				 e->type == VMDK_EXTENT_SPARSE ? "SPARSE" :
				 e->type == VMDK_EXTENT_ZERO   ? "ZERO" :
								 "FLAT");
	}
	return 0;
}

/*
 * The creation options qemu-img lists for vmdk (create -o help), so that
 * the list reads the same; vstor does not write vmdk (vmdk_create refuses).
 */
static const struct vs_create_opt_desc vmdk_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "adapter_type", "string",
	  "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX" },
	{ "backing_file", "string", "File name of a base image" },
	{ "backing_fmt", "string", "Must be 'vmdk' if present" },
	{ "compat6", "bool", "VMDK version 6 image" },
	{ "hwversion", "string", "VMDK hardware version" },
	{ "toolsversion", "string", "VMware guest tools version" },
	{ "subformat", "string",
	  "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | "
	  "twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} " },
	{ "zeroed_grain", "bool",
	  "Enable efficient zero writes using the zeroed-grain GTE feature" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_vmdk = {
	.name = "vmdk",
	.is_format = true,
	.state_size = sizeof(struct vmdk_state),
	.probe = vmdk_probe,
	.open = vmdk_open,
	.close = vmdk_close,
	.submit = vmdk_submit,
	.create = vmdk_create,
	.create_opts = vmdk_create_opts,
	.get_info = vmdk_get_info,
	.allocated_size = vmdk_allocated_size,
	.check = vmdk_check,
};

VS_DRIVER_REGISTER(vs_driver_vmdk)
