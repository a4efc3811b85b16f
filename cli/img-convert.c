/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img convert: copy one image, or several concatenated, into a new (or,
 * with -n, an existing) image, with qemu-img convert's options: sparse
 * detection (-S), a backing file for the target (-B: only what differs from
 * it is written), compression (-c), parallel copy (-m, -W) and progress.
 *
 * The target address space is cut into chunks; -m worker coroutines claim
 * them in turn, read them (block status first: ranges that read as zeroes
 * are not read), plan the writes and, unless -W or the target is raw (where
 * the order changes nothing in the result), wait for their turn so that
 * the writes reach the target in order.
 */
#include "img.h"
#include "vstor/parse.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vstor/reactor.h"

#define CONV_CHUNK (2u << 20)
#define CONV_MAX_SPARSE (16u << 20)
#define CONV_MAX_CO 16

struct conv_src {
	const char *filename;
	const char *fmt;				     /* --image-opts driver=, else -f */
	const char *key_secret;				     /* --image-opts key-secret= */
	const char *backing_secret[IMG_MAX_BACKING_SECRETS]; /* backing.encrypt.key-secret= */
	struct vs_node *node;
	uint64_t size;
	uint64_t start; /* offset of this source in the target */
};

enum conv_op_kind { OP_SKIP, OP_ZERO, OP_DATA, OP_COMPRESS };

struct conv_op {
	enum conv_op_kind kind;
	uint64_t off; /* target offset */
	uint64_t len;
};

struct conv_args {
	/* options */
	const char *fmt, *out_fmt, *out_filename;
	const char *backing, *backing_fmt, *snapshot;
	struct img_kv_list opts;
	struct img_kv_list image_opts;	/* strings of json: names */
	struct img_kv_list target_opts; /* strings of --target-image-opts */
	struct img_image_cli image_cli; /* --object, --image-opts */
	bool target_image_opts;
	const char *target_key_secret;
	enum vs_cache_mode cache, src_cache;
	bool compress, no_create, target_is_zero, out_of_order, progress, progress_json;
	bool quiet, force_share;
	bool bitmaps, skip_broken_bitmaps; /* --bitmaps, --skip-broken-bitmaps */
	uint64_t sparse;
	unsigned num_co;
	uint64_t rate;	    /* -r: bytes per second, 0 for no limit */
	bool salvage;	    /* --salvage: read errors give zeroes, with a warning */
	uint64_t rate_done; /* -r: data bytes read so far */

	/* state */
	struct conv_src *src;
	unsigned nb_src;
	uint64_t total;
	struct vs_node *target;
	struct vs_node *tbacking; /* the target's backing node, or NULL */
	uint64_t tbacking_size;
	bool target_zero; /* the target reads as zeroes where not written */
	uint64_t cluster; /* target cluster size (compression, backing granule) */
	uint64_t chunk;
	uint64_t next_chunk; /* offset of the next chunk to claim */
	uint64_t next_write; /* without -W: offset of the chunk whose turn it is */
	struct vs_co_queue turn;
	unsigned running;
	struct vs_co *main_co;
	int err;		       /* first error (negative errno), 0 if none */
	bool stop;		       /* stop claiming chunks */
	struct vs_image_info src_info; /* with --bitmaps: the source's bitmaps */
	uint64_t done;
	struct timespec t0, tlast;
	int last_pct;
	int rc;
};

struct conv_worker {
	struct conv_args *a;
	uint8_t *buf, *bbuf;
	struct conv_op *ops;
	size_t nops, ops_cap;
};

static double conv_elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void conv_progress(struct conv_args *a, bool final)
{
	struct timespec now;
	double el;

	if (!a->progress && !a->progress_json)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (a->progress_json) {
		if (!final && conv_elapsed(&a->tlast, &now) < 0.1)
			return;
		el = conv_elapsed(&a->t0, &now);
		fprintf(stderr, "{\"done\": %" PRIu64 ", \"total\": %" PRIu64 ", \"rate\": %.0f}\n",
			a->done, a->total, el > 0 ? (double)a->done / el : 0.0);
		fflush(stderr);
		a->tlast = now;
		return;
	}
	if (a->quiet)
		return;
	/* qemu-img's: on stdout, whether or not it is a terminal. */
	img_progress(true, a->done, a->total, &a->last_pct);
	if (final)
		img_progress_end(true);
}

static void conv_set_err(struct conv_args *a, int ret)
{
	if (!a->err)
		a->err = ret;
	a->stop = true;
}

static int op_add(struct conv_worker *w, enum conv_op_kind kind, uint64_t off, uint64_t len)
{
	struct conv_op *last = w->nops ? &w->ops[w->nops - 1] : NULL;

	if (!len)
		return 0;
	if (last && last->kind == kind && kind != OP_COMPRESS && last->off + last->len == off) {
		last->len += len;
		return 0;
	}
	if (w->nops == w->ops_cap) {
		size_t cap = w->ops_cap ? 2 * w->ops_cap : 64;
		struct conv_op *ops = realloc(w->ops, cap * sizeof(*ops));

		if (!ops)
			return -ENOMEM;
		w->ops = ops;
		w->ops_cap = cap;
	}
	w->ops[w->nops++] = (struct conv_op){ kind, off, len };
	return 0;
}

static bool is_zero(const uint8_t *p, size_t len)
{
	/* Word-at-a-time scan: the buffers are malloc'd and blocks 512-aligned. */
	const uint64_t *q = (const uint64_t *)p;
	size_t i;

	for (i = 0; i < len / 8; i++)
		if (q[i])
			return false;
	for (i *= 8; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Read [off, off+len) of the concatenated sources into w->buf. Ranges that
 * read as zeroes are not read: they are memset and, when @zero_ops, planned
 * as zero ranges at once (the other ranges as data, planned by the caller
 * through @data_ops as OP_DATA placeholders).
 */
/*
 * --salvage: read [off, off+len) of @n again sector by sector; a sector
 * that cannot be read is zeroes, with qemu-img's warning. Returns 0.
 */
static int conv_salvage(struct conv_args *a, struct vs_node *n, uint64_t off, uint8_t *buf,
			uint64_t len)
{
	for (uint64_t pos = 0; pos < len; pos += 512) {
		size_t sl = (size_t)(len - pos < 512 ? len - pos : 512);
		int ret = vs_node_pread(n, off + pos, buf + pos, sl);

		if (ret < 0) {
			if (!a->quiet)
				fprintf(stderr,
					"%s: warning: error while reading offset %" PRIu64 ": %s\n",
					IMG_PROGNAME, off + pos, strerror(-ret));
			memset(buf + pos, 0, sl);
		}
	}
	return 0;
}

/* -r: sleep until reading more after @done bytes keeps to the rate limit. */
static void conv_rate_wait(struct conv_args *a, uint64_t done)
{
	struct timespec now;
	double due, el;

	if (!a->rate)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	due = (double)done / (double)a->rate;
	el = conv_elapsed(&a->t0, &now);
	if (due > el)
		vs_co_sleep_ns((uint64_t)((due - el) * 1e9));
}

static int conv_read(struct conv_worker *w, uint64_t off, uint64_t len, bool plan)
{
	struct conv_args *a = w->a;
	uint64_t pos = off, end = off + len;
	unsigned i = 0;
	int ret;

	while (pos < end) {
		struct conv_src *s;
		uint64_t soff, slen, pnum;
		unsigned st;

		while (i < a->nb_src && a->src[i].start + a->src[i].size <= pos)
			i++;
		if (i >= a->nb_src)
			return -EIO;
		s = &a->src[i];
		soff = pos - s->start;
		slen = s->size - soff;
		if (slen > end - pos)
			slen = end - pos;
		ret = vs_node_block_status_above(s->node, soff, slen, &pnum, &st, NULL, NULL, NULL);
		if (ret < 0 && a->salvage) {
			/* As qemu-img --salvage: an area of unknown status is read as data. */
			pnum = slen;
			st = 0;
			ret = 0;
		}
		if (ret < 0) {
			img_error(ret, "error while reading block status at offset %" PRIu64 ": %s",
				  soff, strerror(-ret));
			return ret;
		}
		if (!pnum)
			return -EIO;
		if (pnum > slen)
			pnum = slen;
		if (st & VS_BS_ZERO) {
			memset(w->buf + (pos - off), 0, pnum);
			if (plan && (ret = op_add(w, OP_ZERO, pos, pnum)) < 0)
				return ret;
		} else {
			/* -r counts the data read, as qemu-img: zeroes and holes go free. */
			conv_rate_wait(a, a->rate_done);
			a->rate_done += pnum;
			ret = vs_node_pread(s->node, soff, w->buf + (pos - off), pnum);
			if (ret < 0 && a->salvage)
				ret = conv_salvage(a, s->node, soff, w->buf + (pos - off), pnum);
			if (ret < 0) {
				img_error(ret, "error while reading at byte %" PRIu64 ": %s", soff,
					  strerror(-ret));
				return ret;
			}
			if (plan && (ret = op_add(w, OP_DATA, pos, pnum)) < 0)
				return ret;
		}
		pos += pnum;
	}
	return 0;
}

/* Plan one block of the buffer that holds data: zero or data (or compressed). */
static int plan_block(struct conv_worker *w, uint64_t chunk_off, uint64_t off, uint64_t len,
		      bool detect)
{
	struct conv_args *a = w->a;

	if (detect && is_zero(w->buf + (off - chunk_off), len))
		return op_add(w, a->target_zero ? OP_SKIP : OP_ZERO, off, len);
	return op_add(w, a->compress ? OP_COMPRESS : OP_DATA, off, len);
}

/*
 * Plan the writes of a chunk. Without a target backing file and without
 * compression, the block-status ranges are refined by -S; otherwise the
 * chunk is handled in target clusters.
 */
static int conv_plan(struct conv_worker *w, uint64_t off, uint64_t len)
{
	struct conv_args *a = w->a;
	uint64_t end = off + len;
	int ret;

	w->nops = 0;
	if (!a->tbacking && !a->compress) {
		struct conv_op *raw;
		size_t nraw;

		ret = conv_read(w, off, len, true);
		if (ret < 0)
			return ret;
		if (!a->sparse) {
			/* -S 0: everything is written, zeroes included. */
			w->nops = 0;
			return op_add(w, OP_DATA, off, len);
		}
		raw = w->ops;
		nraw = w->nops;
		w->ops = NULL;
		w->nops = w->ops_cap = 0;
		for (size_t i = 0; i < nraw && !ret; i++) {
			uint64_t p = raw[i].off, e = raw[i].off + raw[i].len;

			if (raw[i].kind == OP_ZERO) {
				ret = op_add(w, a->target_zero ? OP_SKIP : OP_ZERO, p, e - p);
				continue;
			}
			while (p < e && !ret) {
				uint64_t b = (p / a->sparse + 1) * a->sparse;

				if (b > e)
					b = e;
				/* Only whole -S blocks count as holes. */
				ret = plan_block(w, off, p, b - p, b - p == a->sparse);
				p = b;
			}
		}
		free(raw);
		return ret;
	}

	ret = conv_read(w, off, len, false);
	if (ret < 0)
		return ret;
	if (a->tbacking) {
		uint64_t bl = 0;

		if (off < a->tbacking_size)
			bl = a->tbacking_size - off < len ? a->tbacking_size - off : len;
		if (bl) {
			ret = vs_node_pread(a->tbacking, off, w->bbuf, bl);
			if (ret < 0) {
				img_error(ret,
					  "error while reading the backing file at byte %" PRIu64
					  ": %s",
					  off, strerror(-ret));
				return ret;
			}
		}
		memset(w->bbuf + bl, 0, len - bl);
	}
	for (uint64_t p = off; p < end && !ret;) {
		uint64_t e = (p / a->cluster + 1) * a->cluster;
		uint8_t *d = w->buf + (p - off);

		if (e > end)
			e = end;
		if (a->tbacking && !memcmp(d, w->bbuf + (p - off), e - p))
			ret = op_add(w, OP_SKIP, p, e - p);
		else if (a->tbacking && is_zero(d, e - p))
			ret = op_add(w, OP_ZERO, p, e - p);
		else if (a->tbacking)
			ret = op_add(w, a->compress ? OP_COMPRESS : OP_DATA, p, e - p);
		else
			ret = plan_block(w, off, p, e - p, a->sparse != 0);
		p = e;
	}
	return ret;
}

static int conv_write(struct conv_worker *w, uint64_t chunk_off)
{
	struct conv_args *a = w->a;
	int ret = 0;

	for (size_t i = 0; i < w->nops && !ret; i++) {
		struct conv_op *op = &w->ops[i];
		uint8_t *d = w->buf + (op->off - chunk_off);
		struct iovec iov = { d, op->len };

		switch (op->kind) {
		case OP_SKIP:
			break;
		case OP_ZERO:
			/* Over a backing file, zeroes must stay zeroes: no unmap. */
			ret = vs_node_write_zeroes(a->target, op->off, op->len,
						   a->tbacking ? 0 : VS_REQ_MAY_UNMAP);
			break;
		case OP_DATA:
			ret = vs_node_pwrite(a->target, op->off, d, op->len, 0);
			break;
		case OP_COMPRESS:
			ret = vs_node_pwritev_compressed(a->target, op->off, op->len, &iov, 1);
			if (ret == -ENOTSUP) {
				img_error(ret, "compression not supported by this format");
				return ret;
			}
			break;
		}
		if (ret < 0)
			img_error(ret, "error while writing at byte %" PRIu64 ": %s", op->off,
				  strerror(-ret));
	}
	return ret;
}

static void conv_worker_co(void *opaque)
{
	struct conv_worker *w = opaque;
	struct conv_args *a = w->a;

	while (!a->stop && a->next_chunk < a->total) {
		uint64_t off = a->next_chunk, len = a->total - off;
		int ret;

		if (len > a->chunk)
			len = a->chunk;
		a->next_chunk += len;
		ret = conv_plan(w, off, len);
		/*
		 * Compressed writes compress inside the write, so waiting for
		 * our turn would compress one chunk at a time: they are stored
		 * as their compression finishes instead (the content is the
		 * same; only the order of the clusters in the file differs).
		 */
		if (!a->out_of_order && !a->compress) {
			while (!a->stop && a->next_write != off)
				vs_co_queue_wait(&a->turn);
		}
		if (!ret && !a->stop)
			ret = conv_write(w, off);
		if (ret < 0)
			conv_set_err(a, ret);
		a->next_write = off + len;
		vs_co_queue_wake_all(&a->turn);
		a->done += len;
		conv_progress(a, false);
	}
	if (--a->running == 0)
		vs_co_wake(a->main_co);
}

static int conv_copy(struct conv_args *a)
{
	struct conv_worker w[CONV_MAX_CO] = { 0 };
	struct vs_reactor *r = vs_reactor_current();
	unsigned n = a->num_co;
	int ret = 0;

	a->main_co = vs_co_self();
	for (unsigned i = 0; i < n; i++) {
		w[i].a = a;
		w[i].buf = aligned_alloc(4096, a->chunk);
		w[i].bbuf = a->tbacking ? aligned_alloc(4096, a->chunk) : NULL;
		if (!w[i].buf || (a->tbacking && !w[i].bbuf)) {
			img_error(-ENOMEM, "Out of memory");
			ret = -ENOMEM;
			goto out;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &a->t0);
	a->tlast = a->t0;
	a->last_pct = -1;
	conv_progress(a, false);
	for (unsigned i = 0; i < n; i++) {
		a->running++;
		if (!vs_co_spawn(r, conv_worker_co, &w[i])) {
			a->running--;
			conv_set_err(a, -ENOMEM);
			img_error(-ENOMEM, "Out of memory");
			break;
		}
	}
	if (a->running)
		vs_co_yield();
	ret = a->err;
out:
	for (unsigned i = 0; i < n; i++) {
		free(w[i].buf);
		free(w[i].bbuf);
		free(w[i].ops);
	}
	return ret;
}

static uint64_t gcd64(uint64_t x, uint64_t y)
{
	while (y) {
		uint64_t t = x % y;

		x = y;
		y = t;
	}
	return x;
}

static int conv_open_sources(struct conv_args *a)
{
	for (unsigned i = 0; i < a->nb_src; i++) {
		struct conv_src *s = &a->src[i];
		struct vs_open_opts o = {
			.filename = s->filename,
			.format = s->fmt,
			.read_only = true,
			.force_share = a->force_share,
			.cache = a->src_cache,
			.snapshot = a->snapshot,
			.data_file = img_image_data_file(s->filename),
		};
		struct vs_error err = { 0 };
		int ret = img_secret_fill(&o, s->key_secret);

		if (ret == 0 && (ret = img_backing_secrets_fill(&o, s->backing_secret)) < 0)
			img_secret_wipe(&o);
		if (ret < 0) {
			s->node = NULL;
			return ret;
		}
		ret = vs_image_open(&s->node, &o, &err);
		img_secret_wipe(&o);
		if (ret < 0) {
			s->node = NULL;
			img_error(ret, "Could not open '%s': %s", img_image_shown(s->filename),
				  err.msg[0] ? err.msg : strerror(-ret));
			return ret;
		}
		s->size = vs_node_size(s->node);
		s->start = a->total;
		a->total += s->size;
	}
	return 0;
}

static int conv_create_target(struct conv_args *a)
{
	struct vs_error err = { 0 };
	int ret;

	if (a->backing && img_kv_set(&a->opts, "backing_file", a->backing) < 0)
		return -ENOMEM;
	if (a->backing_fmt && img_kv_set(&a->opts, "backing_fmt", a->backing_fmt) < 0)
		return -ENOMEM;
	ret = vs_image_create(a->out_filename, a->out_fmt, a->total, a->opts.kv, a->opts.n, &err);
	if (ret < 0) {
		img_error(ret, "%s: %s", a->out_filename, err.msg[0] ? err.msg : strerror(-ret));
		return ret;
	}
	return 0;
}

/* Whether @n is encrypted: its fresh areas do not read as zeroes (no zero init). */
static bool conv_target_encrypted(struct vs_node *n)
{
	struct vs_image_info info = { 0 };
	bool enc;

	if (vs_node_get_info(n, &info) < 0)
		return true; /* unknown: do not skip zeroes */
	enc = info.encrypted;
	vs_image_info_free(&info);
	return enc;
}

static int conv_open_target(struct conv_args *a)
{
	struct img_open_args oa = {
		.filename = a->out_filename,
		.fmt = a->out_fmt,
		.writable = true,
		.cache = a->cache,
		.key_secret = a->target_key_secret,
	};
	uint64_t s;
	int ret = img_open(&a->target, &oa);

	if (ret < 0) {
		a->target = NULL;
		return ret;
	}
	if (a->no_create && vs_node_size(a->target) < a->total) {
		img_error(-EINVAL, "output file is smaller than input file"); /* qemu-img's words */
		return -EINVAL;
	}
	a->tbacking = vs_node_backing(a->target);
	if (a->tbacking)
		a->tbacking_size = vs_node_size(a->tbacking);
	if (a->tbacking && a->target_is_zero) {
		img_error(-EINVAL, "--target-is-zero cannot be used with a target that has a "
				   "backing file");
		return -EINVAL;
	}
	a->target_zero = !a->tbacking && (!a->no_create || a->target_is_zero);
	if (a->target_zero && !a->target_is_zero && conv_target_encrypted(a->target))
		a->target_zero = false; /* a new encrypted image reads as garbage, not zeroes */
	a->cluster = vs_node_cluster_size(a->target);
	if (!a->cluster)
		a->cluster = 65536;
	/* A chunk holds whole clusters and whole -S blocks. */
	s = CONV_CHUNK;
	if (a->sparse && s % a->sparse)
		s = (s / a->sparse + 1) * a->sparse;
	if (s % a->cluster)
		s = s / gcd64(s, a->cluster) * a->cluster;
	a->chunk = s;
	return 0;
}

/* --bitmaps, before anything is created: the source has bitmaps, none broken unless skipped. */
static int conv_check_bitmaps(struct conv_args *a)
{
	struct vs_image_info *info = &a->src_info;
	int ret;

	if (strcmp(vs_node_format(a->src[0].node), "qcow2")) {
		img_error(-ENOTSUP, "Source lacks bitmap support");
		return -ENOTSUP;
	}
	ret = vs_node_get_info(a->src[0].node, info);
	if (ret < 0) {
		img_error(ret, "Could not get information of '%s': %s", a->src[0].filename,
			  strerror(-ret));
		return ret;
	}
	for (unsigned i = 0; i < info->nb_bitmaps; i++) {
		if (!(info->bitmaps[i].flags & VS_BITMAP_FLAG_IN_USE) || a->skip_broken_bitmaps)
			continue;
		img_error(-EINVAL,
			  "Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or "
			  "use 'qemu-img bitmap --remove' to delete it",
			  info->bitmaps[i].name);
		return -EINVAL;
	}
	return 0;
}

/* --bitmaps, after the data: each consistent bitmap added to the target and merged in. */
static int conv_copy_bitmaps(struct conv_args *a)
{
	const struct vs_image_info *info = &a->src_info;
	struct vs_image_info tinfo;
	bool v2 = false;
	int ret;

	memset(&tinfo, 0, sizeof(tinfo));
	if (!strcmp(vs_node_format(a->target), "qcow2") &&
	    vs_node_get_info(a->target, &tinfo) == 0) {
		for (unsigned i = 0; i < tinfo.nb_specific; i++)
			if (!strcmp(tinfo.specific[i].key, "compat") &&
			    !strcmp(tinfo.specific[i].str, "0.10"))
				v2 = true;
		vs_image_info_free(&tinfo);
	}
	if (strcmp(vs_node_format(a->target), "qcow2") || v2) {
		img_error(-ENOTSUP, "Format driver '%s' does not support bitmaps",
			  vs_node_format(a->target));
		return -ENOTSUP;
	}
	for (unsigned i = 0; i < info->nb_bitmaps; i++) {
		const struct vs_bitmap_info *bm = &info->bitmaps[i];
		struct vs_bitmap_op add = {
			.action = VS_BITMAP_ADD,
			.name = bm->name,
			.granularity = bm->granularity,
			.disabled = !(bm->flags & VS_BITMAP_FLAG_AUTO),
		};
		struct vs_bitmap_op merge = {
			.action = VS_BITMAP_MERGE,
			.name = bm->name,
			.src = a->src[0].node,
			.src_name = bm->name,
		};
		struct vs_error err = { 0 };

		if (bm->flags & VS_BITMAP_FLAG_IN_USE) {
			fprintf(stderr, "%s: warning: Skipping inconsistent bitmap '%s'\n",
				IMG_PROGNAME, bm->name);
			continue;
		}
		ret = vs_node_bitmap(a->target, &add, &err);
		if (ret == 0)
			ret = vs_node_bitmap(a->target, &merge, &err);
		if (ret < 0) {
			img_error(ret, "Failed to populate bitmap %s: %s", bm->name,
				  err.msg[0] ? err.msg : strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void conv_co(void *opaque)
{
	struct conv_args *a = opaque;
	int ret;

	ret = conv_open_sources(a);
	if (ret < 0)
		goto out;
	if (a->bitmaps) {
		ret = conv_check_bitmaps(a);
		if (ret < 0)
			goto out;
	}
	if (!a->no_create) {
		ret = conv_create_target(a);
		if (ret < 0)
			goto out;
	}
	ret = conv_open_target(a);
	if (ret < 0)
		goto out;
	if (a->compress && !strcmp(vs_node_format(a->target), "raw")) {
		img_error(-ENOTSUP, "compression not supported by this format");
		goto out;
	}
	if (a->compress && conv_target_encrypted(a->target)) {
		img_error(-ENOTSUP, "Compression and encryption not supported at the same time");
		goto out;
	}
	/*
	 * In-order writes keep a qcow2 target's clusters in guest order; a
	 * raw target's bytes sit at their guest offsets whatever the order,
	 * so its writes go out as soon as each chunk is read (as with -W).
	 */
	if (!strcmp(vs_node_format(a->target), "raw"))
		a->out_of_order = true;
	ret = conv_copy(a);
	if (ret < 0)
		goto out;
	if (a->bitmaps) {
		ret = conv_copy_bitmaps(a);
		if (ret < 0)
			goto out;
	}
	ret = vs_node_flush(a->target);
	if (ret < 0) {
		img_error(ret, "error while flushing the target: %s", strerror(-ret));
		goto out;
	}
	conv_progress(a, true);
	a->rc = 0;
out:
	vs_image_info_free(&a->src_info);
	vs_node_close(a->target);
	for (unsigned i = 0; i < a->nb_src; i++)
		vs_node_close(a->src[i].node);
}

enum {
	OPT_TARGET_IMAGE_OPTS = 256,
	OPT_TARGET_IS_ZERO,
	OPT_SALVAGE,
	OPT_BITMAPS,
	OPT_SKIP_BROKEN,
	OPT_PROGRESS,
};

static int conv_parse_snapshot(struct conv_args *a, const char *s)
{
	if (!strncmp(s, "snapshot.name=", 14))
		a->snapshot = s + 14;
	else if (!strncmp(s, "snapshot.id=", 12))
		a->snapshot = s + 12;
	else
		a->snapshot = s;
	if (!a->snapshot[0] || strchr(a->snapshot, ',')) {
		img_error(-EINVAL, "Failed in parsing snapshot param '%s'", s);
		return -1;
	}
	return 0;
}

/* "-o help": what create prints for the output format. */
static int conv_opts_help(struct conv_args *a)
{
	char f[] = "-f", o[] = "-o", h[] = "help", create[] = "create";
	char *argv[] = { create, f, (char *)a->out_fmt, o, h, NULL };

	optind = 1;
	return img_cmd_create(5, argv);
}

static int conv_main(struct conv_args *a, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
		{ "salvage", no_argument, NULL, OPT_SALVAGE },
		{ "bitmaps", no_argument, NULL, OPT_BITMAPS },
		{ "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
		{ "progress", optional_argument, NULL, OPT_PROGRESS },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a->fmt = optarg;
			break;
		case 'O':
			a->out_fmt = optarg;
			break;
		case 'B':
			a->backing = optarg;
			break;
		case 'F':
			a->backing_fmt = optarg;
			break;
		case 'C':
			break; /* copy offloading: the copy loop is the same */
		case 'c':
			a->compress = true;
			break;
		case 'o':
			if (img_kv_parse(&a->opts, optarg) < 0) {
				img_error(-ENOMEM, "Out of memory");
				return 1;
			}
			break;
		case 'l':
			if (conv_parse_snapshot(a, optarg) < 0)
				return 1;
			break;
		case 'S':
			if (vs_parse_size(optarg, &v) < 0 || v % 512 || v > CONV_MAX_SPARSE) {
				img_error(-EINVAL,
					  "Invalid buffer size for sparse output specified. Valid "
					  "sizes are multiples of 512 up to %u.",
					  CONV_MAX_SPARSE);
				return 1;
			}
			a->sparse = v;
			break;
		case 'p':
			a->progress = true;
			break;
		case OPT_PROGRESS:
			if (!optarg || !strcmp(optarg, "human")) {
				a->progress = true;
			} else if (!strcmp(optarg, "json")) {
				a->progress_json = true;
			} else {
				img_error(-EINVAL, "--progress must be 'human' or 'json'");
				return 1;
			}
			break;
		case 't':
			if (vs_cache_mode_parse(optarg, &a->cache) < 0) {
				img_error(-EINVAL, "Invalid cache option: %s", optarg);
				return 1;
			}
			break;
		case 'T':
			if (vs_cache_mode_parse(optarg, &a->src_cache) < 0) {
				img_error(-EINVAL, "Invalid source cache option: %s", optarg);
				return 1;
			}
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'n':
			a->no_create = true;
			break;
		case 'm':
			if (img_parse_uint(optarg, CONV_MAX_CO, &v) < 0 || v < 1) {
				img_error(-EINVAL,
					  "Invalid number of coroutines. Allowed number of "
					  "coroutines is between 1 and %d",
					  CONV_MAX_CO);
				return 1;
			}
			a->num_co = (unsigned)v;
			break;
		case 'W':
			a->out_of_order = true;
			break;
		case 'U':
			a->force_share = true;
			break;
		case OPT_TARGET_IS_ZERO:
			a->target_is_zero = true;
			break;
		case OPT_BITMAPS:
			a->bitmaps = true;
			break;
		case OPT_SKIP_BROKEN:
			a->skip_broken_bitmaps = true;
			break;
		case 'r':
			if (img_cvtnum("rate limit", optarg, &a->rate) < 0)
				return 1;
			break;
		case OPT_SALVAGE:
			a->salvage = true;
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&a->image_cli, c, optarg) < 0)
				return 1;
			break;
		case OPT_TARGET_IMAGE_OPTS:
			a->target_image_opts = true;
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (a->quiet)
		a->progress = false;
	if (!a->out_fmt)
		a->out_fmt = "raw"; /* with -n too, as qemu-img: no probing of the target */
	if (a->opts.help) {
		if (!a->out_fmt)
			a->out_fmt = "raw";
		return conv_opts_help(a);
	}
	if (argc - optind < 2)
		return img_usage_error("Expecting image file name");
	a->nb_src = (unsigned)(argc - optind - 1);
	a->out_filename = argv[argc - 1];
	if (img_kv_get(&a->opts, "backing_file")) {
		if (a->backing) {
			img_error(-EINVAL, "Option \"backing_file\" was specified twice");
			return 1;
		}
		a->backing = img_kv_get(&a->opts, "backing_file");
	}
	if (!a->backing_fmt && img_kv_get(&a->opts, "backing_fmt"))
		a->backing_fmt = img_kv_get(&a->opts, "backing_fmt");
	if (a->backing_fmt && !a->backing) {
		img_error(-EINVAL, "The -F option requires -B");
		return 1;
	}
	if (img_kv_get(&a->opts, "size")) {
		img_error(-EINVAL, "Invalid parameter 'size'");
		return 1;
	}
	if (a->target_is_zero && !a->no_create) {
		img_error(-EINVAL, "--target-is-zero requires use of -n flag");
		return 1;
	}
	if (a->backing && a->no_create) {
		img_error(-EINVAL, "Use of -B with -n is not supported: the target exists");
		return 1;
	}
	if (a->skip_broken_bitmaps && !a->bitmaps) {
		img_error(-EINVAL, "Use of --skip-broken-bitmaps requires --bitmaps");
		return 1;
	}
	if (a->bitmaps && a->nb_src > 1) {
		img_error(-EINVAL, "Copying bitmaps only possible with single source");
		return 1;
	}
	if (a->snapshot && a->nb_src > 1) {
		img_error(-EINVAL, "No support for concatenating multiple snapshot");
		return 1;
	}
	if (a->compress && img_kv_get(&a->opts, "encrypt.format")) {
		img_error(-ENOTSUP, "Compression and encryption not supported at the same time");
		return 1;
	}
	if (a->compress && a->out_fmt && !strcmp(a->out_fmt, "raw")) {
		img_error(-ENOTSUP, "compression not supported by this format");
		return 1;
	}
	if (a->no_create && a->opts.n) {
		img_error(-EINVAL, "-o has no effect when skipping image creation");
		return 1;
	}
	if (!a->no_create && !vs_format_create_opts(a->out_fmt)) {
		img_error(-EINVAL, "Unknown file format '%s'", a->out_fmt);
		return 1;
	}
	a->src = calloc(a->nb_src, sizeof(*a->src));
	if (!a->src) {
		img_error(-ENOMEM, "Out of memory");
		return 1;
	}
	for (unsigned i = 0; i < a->nb_src; i++) {
		struct img_open_args oa = { .filename = argv[optind + i], .fmt = a->fmt };

		if (a->image_cli.image_opts) {
			if (img_image_name_chain(&a->image_cli, &oa.filename, &oa.fmt,
						 &oa.key_secret, oa.backing_secret) < 0)
				return 1;
		} else if (!strncmp(oa.filename, "json:", 5)) {
			oa.filename = NULL;
			if (img_json_filename(&a->image_opts, argv[optind + i], &oa) < 0)
				return 1;
			img_image_origin_add(oa.filename, argv[optind + i], oa.data_file);
		}
		a->src[i].filename = oa.filename;
		a->src[i].fmt = oa.fmt;
		a->src[i].key_secret = oa.key_secret;
		memcpy(a->src[i].backing_secret, oa.backing_secret, sizeof(oa.backing_secret));
	}
	a->target_key_secret = img_kv_get(&a->opts, "key-secret");
	if (!a->target_key_secret) /* qcow2's encrypt.key-secret */
		a->target_key_secret = img_kv_get(&a->opts, "encrypt.key-secret");
	if (a->target_image_opts) {
		struct img_open_args oa = { .fmt = a->out_fmt };

		if (!a->no_create) {
			img_error(-EINVAL, "--target-image-opts requires use of -n flag");
			return 1;
		}
		if (img_image_opts(&a->target_opts, a->out_filename, &oa) < 0)
			return 1;
		a->out_filename = oa.filename;
		a->out_fmt = oa.fmt;
		a->target_key_secret = oa.key_secret;
	}
	if (img_run(conv_co, a) < 0)
		return 1;
	return a->rc;
}

int img_cmd_convert(int argc, char **argv)
{
	/*
	 * The target's cache mode defaults to unsafe, as qemu-img convert's
	 * does: no flush at the end (use -t writeback or sync for that).
	 */
	struct conv_args a = { .sparse = 4096, .num_co = 8, .rc = 1, .cache = VS_CACHE_UNSAFE };
	int rc = conv_main(&a, argc, argv);

	free(a.src);
	img_kv_free(&a.opts);
	img_kv_free(&a.image_opts);
	img_kv_free(&a.target_opts);
	return rc;
}
