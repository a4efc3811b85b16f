/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img commit: write the data an image (and, with -b, the images
 * between it and the chosen base) allocates into its base, with qemu-img
 * commit's options and messages. Without -d and -b the image is emptied
 * afterwards, so that it reads the committed data from its backing file.
 *
 * The chain is read through a read-only, lock-free view; the base is opened
 * a second time, writable and locked, and the image is locked by its own
 * handle (writable when it is emptied) for the whole operation.
 */
#include "img.h"
#include "vstor/parse.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT_CHUNK (1u << 20)

struct commit_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	const char *base;
	enum vs_cache_mode cache;
	bool keep, progress, quiet;
	int rc;
};

/* The node of the chain below @top named @name (as given, or relative to @top's directory). */
static struct vs_node *commit_find_base(struct vs_node *top, const char *name, unsigned *depth)
{
	char rel[4096];
	unsigned d = 1;

	if (img_path_combine(rel, sizeof(rel), vs_node_filename(top), name) < 0)
		rel[0] = 0;
	for (struct vs_node *n = vs_node_backing(top); n; n = vs_node_backing(n), d++) {
		if (img_same_file(vs_node_filename(n), name) ||
		    (rel[0] && img_same_file(vs_node_filename(n), rel))) {
			*depth = d;
			return n;
		}
	}
	return NULL;
}

/*
 * Refuse to write a base whose format was guessed: a probed raw image could
 * be turned into something else by the data written to its first sector.
 */
static int commit_check_base_format(struct vs_node *top, struct vs_node *base)
{
	struct vs_image_info info;
	struct vs_node *parent = top;
	int ret;

	while (vs_node_backing(parent) != base)
		parent = vs_node_backing(parent);
	memset(&info, 0, sizeof(info));
	ret = vs_node_get_info(parent, &info);
	if (ret < 0)
		return 0;
	if (!info.backing_format[0] && !strcmp(vs_node_format(base), "raw")) {
		const char *bf = info.backing_filename ? info.backing_filename : "";

		img_error(-EPERM,
			  "The format of the backing file '%s' is not recorded in '%s' and "
			  "probing guessed raw; writing to an image whose format was guessed "
			  "as raw is refused. Record the format with "
			  "'vstor-img rebase -u -b %s -F raw %s' and commit again.",
			  bf, vs_node_filename(parent), bf, vs_node_filename(parent));
		ret = -EPERM;
	}
	vs_image_info_free(&info);
	return ret < 0 ? ret : 0;
}

/* Copy what the chain above @base_depth allocates into @base_w. */
static int commit_copy(struct commit_args *a, struct vs_node *chain, unsigned base_depth,
		       struct vs_node *base_w)
{
	uint64_t size = vs_node_size(chain), off = 0;
	uint8_t *buf = aligned_alloc(4096, COMMIT_CHUNK);
	int last = -1, ret = 0;

	if (!buf)
		return -ENOMEM;
	img_progress(a->progress, 0, size, &last);
	while (off < size) {
		uint64_t n = size - off < COMMIT_CHUNK ? size - off : COMMIT_CHUNK, pnum;
		unsigned st, depth;

		ret = vs_node_block_status_above(chain, off, n, &pnum, &st, NULL, NULL, &depth);
		if (ret < 0)
			break;
		if ((st & VS_BS_ALLOCATED) && depth < base_depth) {
			if ((st & VS_BS_ZERO) && !(st & VS_BS_DATA)) {
				ret = vs_node_write_zeroes(base_w, off, pnum, VS_REQ_MAY_UNMAP);
			} else {
				ret = vs_node_pread(chain, off, buf, pnum);
				if (ret == 0)
					ret = vs_node_pwrite(base_w, off, buf, pnum, 0);
			}
			if (ret < 0)
				break;
		}
		off += pnum;
		img_progress(a->progress, off, size, &last);
	}
	free(buf);
	if (ret == 0)
		ret = vs_node_flush(base_w);
	return ret;
}

static void commit_co(void *opaque)
{
	struct commit_args *a = opaque;
	bool empty = !a->keep && !a->base;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.writable = empty,
		.no_backing = true,
		.cache = a->cache,
	};
	struct vs_node *top = NULL, *chain = NULL, *base, *base_w = NULL;
	struct vs_open_opts bo = { .cache = a->cache };
	struct vs_error err = { 0 };
	unsigned base_depth = 1;
	int ret;

	/* The image's own handle holds its lock (and empties it at the end). */
	if (img_open(&top, &oa) < 0)
		return;
	oa.fmt = vs_node_format(top);
	oa.writable = false;
	oa.no_backing = false;
	oa.force_share = true;
	if (img_open(&chain, &oa) < 0)
		goto out;
	if (!vs_node_backing(chain)) {
		img_error(-EINVAL, "Image does not have a backing file");
		goto out;
	}
	if (a->base) {
		base = commit_find_base(chain, a->base, &base_depth);
		if (!base) {
			img_error(-ENOENT, "Did not find '%s' in the backing chain of '%s'",
				  a->base, a->filename);
			goto out;
		}
	} else {
		base = vs_node_backing(chain);
	}
	if (commit_check_base_format(chain, base) < 0)
		goto out;
	bo.filename = vs_node_filename(base);
	bo.format = vs_node_format(base);
	ret = vs_image_open(&base_w, &bo, &err);
	if (ret < 0) {
		img_error(ret, "Could not open '%s' for writing: %s", bo.filename,
			  err.msg[0] ? err.msg : strerror(-ret));
		goto out;
	}
	if (vs_node_size(base_w) < vs_node_size(chain)) {
		ret = vs_node_truncate(base_w, vs_node_size(chain), VS_PREALLOC_OFF, false, &err);
		if (ret < 0) {
			img_error(ret,
				  "Top image %s is larger than base image %s, and resize of "
				  "base image failed: %s",
				  a->filename, bo.filename, err.msg[0] ? err.msg : strerror(-ret));
			goto out;
		}
	}
	ret = commit_copy(a, chain, base_depth, base_w);
	if (ret < 0) {
		img_error(ret, "Error while committing the image: %s", strerror(-ret));
		goto out;
	}
	img_progress_end(a->progress);
	vs_node_close(base_w);
	base_w = NULL;
	if (empty) {
		/* Without its backing chain, a discarded cluster becomes unallocated. */
		ret = vs_node_discard(top, 0, vs_node_size(top));
		if (ret == 0)
			ret = vs_node_flush(top);
		if (ret < 0) {
			img_error(ret, "Could not empty %s: %s", a->filename, strerror(-ret));
			goto out;
		}
	}
	img_printf(a->quiet, "Image committed.\n");
	a->rc = 0;
out:
	vs_node_close(base_w);
	vs_node_close(chain);
	vs_node_close(top);
}

int img_cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ NULL, 0, NULL, 0 },
	};
	struct commit_args a = { .rc = 1, .cache = VS_CACHE_WRITEBACK };
	struct img_image_cli ic = { 0 };
	uint64_t rate;
	int c;

	while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 't':
			if (img_parse_cache(optarg, &a.cache) < 0)
				return 1;
			break;
		case 'b':
			a.base = optarg;
			break;
		case 'd':
			a.keep = true;
			break;
		case 'p':
			a.progress = true;
			break;
		case 'q':
			a.quiet = true;
			break;
		case 'r':
			if (vs_parse_size(optarg, &rate) < 0) {
				img_error(-EINVAL, "Invalid rate limit specified");
				return 1;
			}
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&ic, c, optarg) < 0)
				return 1;
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (a.quiet)
		a.progress = false;
	if (optind != argc - 1)
		return img_usage_error("Expecting one image file name");
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (img_run(commit_co, &a) < 0)
		return 1;
	return a.rc;
}
