/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img rebase: change the backing file of an image, with qemu-img
 * rebase's options and messages.
 *
 * Safe mode keeps what the guest sees: every cluster that the image does not
 * allocate itself and where the old and the new backing chains read
 * differently is copied into the image (whole clusters, read through the
 * old chain), then the header is switched. Block status skips what cannot
 * differ: ranges that read as zeroes in both chains, and, when the new
 * backing file is part of the old chain, ranges that no image above it
 * allocates. -u only rewrites the header.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vstor/reactor.h"

#define REBASE_CHUNK (1u << 20)
/* qemu-img rebase's buffer: the largest step of its walk (progress follows it). */
#define REBASE_STEP (UINT64_C(2) << 20)

struct rebase_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	const char *backing;	/* NULL or "": remove the backing file */
	const char *backing_fmt;
	enum vs_cache_mode cache, src_cache;
	bool unsafe, progress, quiet, force_share;
	int rc;
};

struct rebase_ctx {
	struct rebase_args *a;
	struct vs_node *top_w; /* the image, writable, without its backing chain */
	struct vs_node *chain; /* the image with its old chain, read-only */
	struct vs_node *nb;    /* the new backing image, or NULL */
	unsigned prefix_depth; /* > 0: the new backing is the old chain's node at this depth */
	uint64_t cs;	       /* the image's cluster size: what is compared and written */
	uint64_t chunk;	       /* REBASE_CHUNK, or one cluster when clusters are larger */
	uint8_t *vbuf, *nbuf;
};

static void rebase_err(const struct rebase_args *a, int ret, const char *msg)
{
	img_error(ret, "Could not change the backing file to '%s': %s",
		  a->backing ? a->backing : "", msg);
}

/*
 * Whether [off, off+len) (not allocated in the image itself) may read
 * differently through the old chain and through the new backing file.
 * Sets *@pnum to the length of the leading run the answer holds for.
 */
static int rebase_may_differ(struct rebase_ctx *c, uint64_t off, uint64_t len, uint64_t *pnum,
			     bool *differ)
{
	struct vs_node *old = vs_node_backing(c->chain);
	uint64_t n1 = len, n2 = len;
	unsigned st1 = VS_BS_ZERO, st2 = VS_BS_ZERO, d = 0;
	int ret;

	if (old && off < vs_node_size(old)) {
		ret = vs_node_block_status_above(old, off, len, &n1, &st1, NULL, NULL, &d);
		if (ret < 0)
			return ret;
	} else if (old) {
		n1 = len;
	}
	if (c->prefix_depth && (st1 & VS_BS_ALLOCATED)) {
		/* Allocated at or below the new backing file in the old chain: same data. */
		*pnum = n1;
		*differ = d + 1 < c->prefix_depth;
		return 0;
	}
	if (c->nb && off < vs_node_size(c->nb)) {
		ret = vs_node_block_status_above(c->nb, off, len, &n2, &st2, NULL, NULL, NULL);
		if (ret < 0)
			return ret;
	}
	*pnum = n1 < n2 ? n1 : n2;
	*differ = !((st1 & VS_BS_ZERO) && (st2 & VS_BS_ZERO));
	return 0;
}

/* Read [off, off+len) of the new backing view (zeroes past its end) into c->nbuf. */
static int rebase_read_new(struct rebase_ctx *c, uint64_t off, uint64_t len)
{
	uint64_t nsize = c->nb ? vs_node_size(c->nb) : 0;
	uint64_t have = off < nsize ? (nsize - off < len ? nsize - off : len) : 0;

	memset(c->nbuf + have, 0, len - have);
	return have ? vs_node_pread(c->nb, off, c->nbuf, have) : 0;
}

/* Compare and copy the clusters of [start, end) (cluster aligned, end clipped to the size). */
static int rebase_copy_range(struct rebase_ctx *c, uint64_t start, uint64_t end)
{
	uint64_t len = end - start;
	int ret;

	ret = vs_node_pread(c->chain, start, c->vbuf, len);
	if (ret < 0)
		return ret;
	ret = rebase_read_new(c, start, len);
	if (ret < 0)
		return ret;
	for (uint64_t o = 0; o < len; o += c->cs) {
		uint64_t n = len - o < c->cs ? len - o : c->cs;

		if (!memcmp(c->vbuf + o, c->nbuf + o, n))
			continue;
		ret = vs_node_pwrite(c->top_w, start + o, c->vbuf + o, n, 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* One chunk [off, off+len) (cluster aligned start): find the clusters to compare. */
static int rebase_chunk(struct rebase_ctx *c, uint64_t off, uint64_t len)
{
	uint64_t end = off + len, pos = off, run_start = 0, run_end = 0;
	bool in_run = false;
	int ret;

	while (pos < end) {
		uint64_t pnum, n2;
		unsigned st;
		bool differ = false;

		ret = vs_node_block_status(c->chain, pos, end - pos, &pnum, &st, NULL, NULL);
		if (ret < 0)
			return ret;
		if (!(st & VS_BS_ALLOCATED)) {
			ret = rebase_may_differ(c, pos, pnum, &n2, &differ);
			if (ret < 0)
				return ret;
			pnum = n2;
		}
		if (differ) {
			uint64_t cstart = pos & ~(c->cs - 1);
			uint64_t cend = (pos + pnum + c->cs - 1) & ~(c->cs - 1);

			if (cend > end)
				cend = end;
			if (in_run && cstart <= run_end) {
				run_end = cend > run_end ? cend : run_end;
			} else {
				if (in_run) {
					ret = rebase_copy_range(c, run_start, run_end);
					if (ret < 0)
						return ret;
				}
				in_run = true;
				run_start = cstart;
				run_end = cend;
			}
		}
		pos += pnum;
	}
	if (in_run)
		return rebase_copy_range(c, run_start, run_end);
	return 0;
}

/* The depth (from the image) of the old chain's node that is the new backing file, or 0. */
static unsigned rebase_find_prefix(struct rebase_ctx *c)
{
	unsigned d = 1;

	if (!c->nb)
		return 0;
	for (struct vs_node *n = vs_node_backing(c->chain); n; n = vs_node_backing(n), d++) {
		if (!strcmp(vs_node_format(n), vs_node_format(c->nb)) &&
		    img_same_file(vs_node_filename(n), vs_node_filename(c->nb)))
			return d;
	}
	return 0;
}

/* qemu-img's progress rule: printed once it moved by more than 2%, or at 0% and 100%. */
static void rebase_progress(const struct rebase_args *a, float *pct, float *printed, float add)
{
	*pct += add;
	if (*pct > 100)
		*pct = 100;
	if (!a->progress ||
	    !(*pct > *printed + 2.0f || *pct < *printed - 2.0f || *pct == 0 || *pct == 100))
		return;
	*printed = *pct;
	printf("    (%3.2f/100%%)\r", (double)*pct);
	fflush(stdout);
}

static int rebase_safe(struct rebase_ctx *c)
{
	struct rebase_args *a = c->a;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = vs_node_format(c->top_w),
		.key_secret = a->key_secret,
		.force_share = true,
		.cache = a->src_cache,
	};
	uint64_t size, off, n, old_size, new_size;
	float step, pct = 0, printed = 0;
	int ret;

	if (img_open(&c->chain, &oa) < 0)
		return -1;
	if (a->backing && a->backing[0]) {
		char path[PATH_MAX];
		struct vs_open_opts o = {
			.format = a->backing_fmt,
			.read_only = true,
			.force_share = a->force_share,
			.cache = a->src_cache,
		};
		struct vs_error err = { 0 };

		if (img_path_combine(path, sizeof(path), a->filename, a->backing) < 0) {
			img_error(-ENAMETOOLONG, "Backing file name too long");
			return -1;
		}
		o.filename = path;
		ret = vs_image_open(&c->nb, &o, &err);
		if (ret < 0) {
			img_error(ret, "Could not open new backing file '%s': %s", a->backing,
				  err.msg[0] ? err.msg : strerror(-ret));
			return -1;
		}
	}
	c->prefix_depth = rebase_find_prefix(c);
	/*
	 * Whole clusters only: the image is open without its backing chain,
	 * so a partial write into an unallocated cluster would fill the rest
	 * of it with zeroes instead of the old backing data.
	 */
	c->cs = vs_node_cluster_size(c->top_w);
	if (!c->cs)
		c->cs = 65536;
	c->chunk = c->cs > REBASE_CHUNK ? c->cs : REBASE_CHUNK;
	c->vbuf = aligned_alloc(4096, c->chunk);
	c->nbuf = aligned_alloc(4096, c->chunk);
	if (!c->vbuf || !c->nbuf) {
		img_error(-ENOMEM, "Out of memory");
		return -1;
	}
	size = vs_node_size(c->chain);
	old_size = vs_node_backing(c->chain) ? vs_node_size(vs_node_backing(c->chain)) : 0;
	new_size = c->nb ? vs_node_size(c->nb) : 0;
	/*
	 * qemu-img's walk, for its progress: steps of at most 2 MiB, each cut
	 * to a run of the image's own allocation; allocated runs are skipped
	 * silently, every other step adds 100 / (size / 2 MiB) percent.
	 */
	step = size ? 100.0f / (float)(size / (size < REBASE_STEP ? size : REBASE_STEP)) : 100.0f;
	for (off = 0; off < size; off += n) {
		uint64_t pnum;
		unsigned st;

		n = size - off < REBASE_STEP ? size - off : REBASE_STEP;
		ret = vs_node_block_status(c->chain, off, n, &pnum, &st, NULL, NULL);
		if (ret == 0 && pnum)
			n = pnum;
		if (ret == 0 && (st & VS_BS_ALLOCATED))
			continue;
		/* qemu-img also cuts a step at the end of the old and of the new backing file. */
		if (off < old_size && off + n > old_size)
			n = old_size - off;
		if (c->nb && off < new_size && off + n > new_size)
			n = new_size - off;
		for (uint64_t o = off; ret == 0 && o < off + n; o += c->chunk)
			ret = rebase_chunk(c, o, off + n - o < c->chunk ? off + n - o : c->chunk);
		if (ret < 0) {
			img_error(ret, "Error while rebasing the image: %s", strerror(-ret));
			return -1;
		}
		rebase_progress(a, &pct, &printed, step);
	}
	ret = vs_node_flush(c->top_w);
	if (ret < 0) {
		img_error(ret, "Error while writing to '%s': %s", a->filename, strerror(-ret));
		return -1;
	}
	return 0;
}

static void rebase_co(void *opaque)
{
	struct rebase_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.writable = true,
		.no_backing = true,
		.cache = a->cache,
	};
	struct rebase_ctx c = { .a = a };
	struct vs_error err = { 0 };
	int ret, last = -1;

	/*
	 * As qemu-img: 0% before anything is opened, 100% once the rebase
	 * is done (printed again even after the copy reached it), and the
	 * end of the line whatever happened.
	 */
	img_progress(a->progress, 0, 1, &last);
	if (img_open(&c.top_w, &oa) < 0)
		goto out;
	if (strcmp(vs_node_format(c.top_w), "qcow2")) {
		rebase_err(a, -ENOTSUP, strerror(ENOTSUP));
		goto out;
	}
	if (!a->unsafe && rebase_safe(&c) < 0)
		goto out;
	ret = vs_node_set_backing(c.top_w, a->backing, a->backing_fmt, &err);
	if (ret < 0) {
		rebase_err(a, ret, err.msg[0] ? err.msg : strerror(-ret));
		goto out;
	}
	a->rc = 0;
	if (a->progress) {
		printf("    (100.00/100%%)\r");
		fflush(stdout);
	}
out:
	img_progress_end(a->progress);
	free(c.vbuf);
	free(c.nbuf);
	vs_node_close(c.nb);
	vs_node_close(c.chain);
	vs_node_close(c.top_w);
}

int img_cmd_rebase(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct rebase_args a = { .rc = 1,
				 .cache = VS_CACHE_WRITEBACK,
				 .src_cache = VS_CACHE_WRITEBACK };
	struct img_image_cli ic = { 0 };
	bool has_b = false;
	int c;

	while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 'F':
			a.backing_fmt = optarg;
			break;
		case 'b':
			a.backing = optarg;
			has_b = true;
			break;
		case 'u':
			a.unsafe = true;
			break;
		case 'p':
			a.progress = true;
			break;
		case 't':
			if (img_parse_cache(optarg, &a.cache) < 0)
				return 1;
			break;
		case 'T':
			if (img_parse_cache(optarg, &a.src_cache) < 0)
				return 1;
			break;
		case 'q':
			a.quiet = true;
			break;
		case 'U':
			a.force_share = true;
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
	if (!has_b && !a.unsafe)
		return img_usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (a.backing && !a.backing[0])
		a.backing = NULL;
	if (a.backing && (!a.backing_fmt || !a.backing_fmt[0])) {
		rebase_err(&a, -EINVAL, "backing format must be specified");
		return 1;
	}
	/* Without a backing file, qemu-img ignores -F (the backing file is dropped). */
	if (!a.backing)
		a.backing_fmt = NULL;
	if (img_run(rebase_co, &a) < 0)
		return 1;
	return a.rc;
}
