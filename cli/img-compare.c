/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img compare: compare the guest-visible content of two images, with
 * qemu-img compare's messages and exit codes (0 identical, 1 different,
 * 2 open error, 3 block status error, 4 read error).
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMP_BUF_SIZE (2u << 20)
#define CMP_SECTOR 512
#define CMP_STATUS_BITS (VS_BS_ALLOCATED | VS_BS_DATA | VS_BS_ZERO | VS_BS_OFFSET_VALID)

enum { CMP_SAME = 0, CMP_DIFFERENT = 1, CMP_OPEN_ERR = 2, CMP_STATUS_ERR = 3, CMP_READ_ERR = 4 };

struct cmp_image {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	struct vs_node *node;
	uint64_t size;
};

struct cmp_args {
	struct cmp_image img[2];
	enum vs_cache_mode cache;
	bool strict;
	bool quiet;
	bool force_share;
	uint8_t *buf[2];
	int rc;
};

/* Index of the first non-zero byte of @buf, or @len. */
static size_t find_nonzero(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return i;
	return len;
}

static size_t find_mismatch(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (a[i] != b[i])
			return i;
	return len;
}

static int cmp_read(struct cmp_image *im, uint64_t off, uint8_t *buf, size_t len)
{
	int ret = vs_node_pread(im->node, off, buf, len);

	if (ret < 0) {
		img_error(ret, "Error while reading offset %" PRIu64 " of %s: %s", off,
			  im->filename, strerror(-ret));
		return CMP_READ_ERR;
	}
	return 0;
}

static int cmp_mismatch(struct cmp_args *a, uint64_t off)
{
	/* qemu-img reports the sector that differs. */
	img_printf(a->quiet, "Content mismatch at offset %" PRIu64 "!\n",
		   off & ~(uint64_t)(CMP_SECTOR - 1));
	return CMP_DIFFERENT;
}

/* The range of @im must read as zeroes. */
static int cmp_check_zero(struct cmp_args *a, struct cmp_image *im, uint64_t off, size_t len)
{
	size_t i;
	int ret = cmp_read(im, off, a->buf[0], len);

	if (ret)
		return ret;
	i = find_nonzero(a->buf[0], len);
	return i < len ? cmp_mismatch(a, off + i) : 0;
}

static int cmp_status(struct cmp_image *im, uint64_t off, uint64_t len, uint64_t *pnum,
		      unsigned *st)
{
	int ret = vs_node_block_status_above(im->node, off, len, pnum, st, NULL, NULL, NULL);

	if (ret < 0 || !*pnum) {
		img_error(ret < 0 ? ret : -EIO, "Sector allocation test failed for %s",
			  im->filename);
		return CMP_STATUS_ERR;
	}
	return 0;
}

static int cmp_chunk(struct cmp_args *a, uint64_t off, size_t len, unsigned st0, unsigned st1)
{
	bool alloc0 = st0 & VS_BS_ALLOCATED, alloc1 = st1 & VS_BS_ALLOCATED;
	size_t i;
	int ret;

	if ((st0 & VS_BS_ZERO) && (st1 & VS_BS_ZERO))
		return 0;
	if (alloc0 != alloc1)
		return cmp_check_zero(a, alloc0 ? &a->img[0] : &a->img[1], off, len);
	if (!alloc0)
		return 0;
	ret = cmp_read(&a->img[0], off, a->buf[0], len);
	if (!ret)
		ret = cmp_read(&a->img[1], off, a->buf[1], len);
	if (ret)
		return ret;
	i = find_mismatch(a->buf[0], a->buf[1], len);
	return i < len ? cmp_mismatch(a, off + i) : 0;
}

/* Compare the part both images have. */
static int cmp_common(struct cmp_args *a, uint64_t end, uint64_t *offp)
{
	uint64_t off = 0;
	int ret;

	while (off < end) {
		uint64_t pnum0, pnum1, chunk;
		unsigned st0, st1;

		ret = cmp_status(&a->img[0], off, a->img[0].size - off, &pnum0, &st0);
		if (!ret)
			ret = cmp_status(&a->img[1], off, a->img[1].size - off, &pnum1, &st1);
		if (ret)
			return ret;
		chunk = pnum0 < pnum1 ? pnum0 : pnum1;
		if (a->strict && (st0 & CMP_STATUS_BITS) != (st1 & CMP_STATUS_BITS)) {
			img_printf(a->quiet,
				   "Strict mode: Offset %" PRIu64 " block status mismatch!\n", off);
			return CMP_DIFFERENT;
		}
		if (chunk > CMP_BUF_SIZE)
			chunk = CMP_BUF_SIZE;
		ret = cmp_chunk(a, off, chunk, st0, st1);
		if (ret)
			return ret;
		off += chunk;
	}
	*offp = off;
	return 0;
}

/* The tail of the larger image must read as zeroes. */
static int cmp_tail(struct cmp_args *a, uint64_t off)
{
	struct cmp_image *im = a->img[0].size > a->img[1].size ? &a->img[0] : &a->img[1];
	int ret;

	img_printf(a->quiet, "Warning: Image size mismatch!\n");
	while (off < im->size) {
		uint64_t chunk;
		unsigned st;

		ret = cmp_status(im, off, im->size - off, &chunk, &st);
		if (ret)
			return ret;
		if ((st & VS_BS_ALLOCATED) && !(st & VS_BS_ZERO)) {
			if (chunk > CMP_BUF_SIZE)
				chunk = CMP_BUF_SIZE;
			ret = cmp_check_zero(a, im, off, chunk);
			if (ret)
				return ret;
		}
		off += chunk;
	}
	return 0;
}

static int cmp_run(struct cmp_args *a)
{
	uint64_t s0 = a->img[0].size, s1 = a->img[1].size, off = 0;
	int ret;

	if (a->strict && s0 != s1) {
		img_printf(a->quiet, "Strict mode: Image size mismatch!\n");
		return CMP_DIFFERENT;
	}
	ret = cmp_common(a, s0 < s1 ? s0 : s1, &off);
	if (ret)
		return ret;
	if (s0 != s1) {
		ret = cmp_tail(a, off);
		if (ret)
			return ret;
	}
	img_printf(a->quiet, "Images are identical.\n");
	return CMP_SAME;
}

static void cmp_co(void *opaque)
{
	struct cmp_args *a = opaque;
	int i;

	for (i = 0; i < 2; i++) {
		struct img_open_args oa = {
			.filename = a->img[i].filename,
			.fmt = a->img[i].fmt,
			.key_secret = a->img[i].key_secret,
			.force_share = a->force_share,
			.cache = a->cache,
		};

		if (img_open(&a->img[i].node, &oa) < 0) {
			a->rc = CMP_OPEN_ERR;
			goto out_close;
		}
		a->img[i].size = vs_node_size(a->img[i].node);
	}
	a->buf[0] = malloc(CMP_BUF_SIZE);
	a->buf[1] = malloc(CMP_BUF_SIZE);
	if (!a->buf[0] || !a->buf[1]) {
		img_error(-ENOMEM, "Out of memory");
		a->rc = CMP_READ_ERR;
	} else {
		a->rc = cmp_run(a);
	}
	free(a->buf[0]);
	free(a->buf[1]);
out_close:
	while (i-- > 0)
		vs_node_close(a->img[i].node);
}

int img_cmd_compare(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmp_args a = { .rc = CMP_OPEN_ERR };
	struct img_image_cli ic = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.img[0].fmt = optarg;
			break;
		case 'F':
			a.img[1].fmt = optarg;
			break;
		case 'T':
			if (vs_cache_mode_parse(optarg, &a.cache) < 0) {
				img_error(-EINVAL, "Invalid source cache option: %s", optarg);
				return CMP_OPEN_ERR;
			}
			break;
		case 'p':
			break; /* progress: accepted, not shown */
		case 'q':
			a.quiet = true;
			break;
		case 's':
			a.strict = true;
			break;
		case 'U':
			a.force_share = true;
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&ic, c, optarg) < 0)
				return CMP_OPEN_ERR;
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (optind != argc - 2)
		return img_usage_error("Expecting two image file names");
	a.img[0].filename = argv[optind];
	a.img[1].filename = argv[optind + 1];
	for (int i = 0; i < 2; i++) {
		struct cmp_image *im = &a.img[i];

		if (img_image_name(&ic, &im->filename, &im->fmt, &im->key_secret) < 0)
			return CMP_OPEN_ERR;
	}
	if (img_run(cmp_co, &a) < 0)
		return CMP_OPEN_ERR;
	return a.rc;
}
