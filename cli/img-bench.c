/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img bench: qemu-img bench on the engine. @depth coroutines each keep
 * one request in flight on their own slice of one buffer; nothing is
 * allocated per request.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver.h"
#include "vstor/reactor.h"

#define BENCH_DEFAULT_COUNT 75000
#define BENCH_DEFAULT_DEPTH 64
#define BENCH_DEFAULT_BUFSIZE 4096

struct bench_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	enum vs_cache_mode cache;
	uint64_t count;
	uint64_t depth;
	uint64_t bufsize;
	uint64_t step;
	uint64_t offset;
	uint64_t flush_interval;
	bool write;
	bool drain;
	bool force_share;
	bool random; /* --random: uniform offsets instead of a step */
	uint64_t seed;
	int pattern;
	int rc;
};

struct bench_state {
	const struct bench_args *a;
	struct vs_node *node;
	uint8_t *buf;
	uint64_t image_size;
	uint64_t issued; /* requests handed out to workers */
	uint64_t next_offset;
	uint64_t rng; /* xorshift64* state for --random */
	uint64_t in_flight;
	unsigned alive;	       /* workers still running */
	bool draining;	       /* a flush waits for the queue to empty */
	struct vs_co *flusher; /* the worker that waits to flush */
	struct vs_co *main;
	struct vs_co_queue drain_wait;
	int err;
};

struct bench_worker {
	struct bench_state *s;
	uint8_t *buf;
};

/* Flush before request @i when the interval says so; drain first unless --no-drain. */
static int bench_maybe_flush(struct bench_state *s, uint64_t i)
{
	int ret;

	if (!s->a->flush_interval || !i || i % s->a->flush_interval)
		return 0;
	if (!s->a->drain)
		return vs_node_flush(s->node);
	s->draining = true;
	while (s->in_flight) {
		s->flusher = vs_co_self();
		vs_co_yield();
	}
	ret = vs_node_flush(s->node);
	s->draining = false;
	vs_co_queue_wake_all(&s->drain_wait);
	return ret;
}

/*
 * --random: a buffer-sized slot between the start offset and the end of the
 * image, uniformly (xorshift64*; the modulo bias is below 2^-40 for any
 * image size there is).
 */
static uint64_t bench_random_slot(struct bench_state *s)
{
	uint64_t x = s->rng, span = s->image_size - s->a->offset;
	uint64_t slots = s->a->bufsize ? span / s->a->bufsize : 1;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return slots ? (x * 0x2545f4914f6cdd1dull) % slots : 0;
}

static int bench_one(struct bench_state *s, uint8_t *buf)
{
	uint64_t off = s->next_offset;
	int ret;

	if (s->a->random) {
		off = s->a->offset + bench_random_slot(s) * s->a->bufsize;
	} else {
		s->next_offset += s->a->step;
		s->next_offset = s->image_size ? s->next_offset % s->image_size : 0;
	}
	if (off > s->image_size || s->a->bufsize > s->image_size - off)
		return -EIO; /* as qemu-img reports a request beyond the end */
	s->in_flight++;
	if (s->a->write)
		ret = vs_node_pwrite(s->node, off, buf, s->a->bufsize, 0);
	else
		ret = vs_node_pread(s->node, off, buf, s->a->bufsize);
	s->in_flight--;
	if (s->flusher && !s->in_flight) {
		struct vs_co *co = s->flusher;

		s->flusher = NULL;
		vs_co_wake(co);
	}
	return ret;
}

static void bench_worker(void *opaque)
{
	struct bench_worker *w = opaque;
	struct bench_state *s = w->s;

	while (!s->err && s->issued < s->a->count) {
		uint64_t i;
		int ret;

		if (s->draining) {
			vs_co_queue_wait(&s->drain_wait);
			continue;
		}
		i = s->issued++;
		ret = bench_maybe_flush(s, i);
		if (ret == 0)
			ret = bench_one(s, w->buf);
		if (ret < 0 && !s->err)
			s->err = ret;
	}
	if (--s->alive == 0)
		vs_co_wake(s->main);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench_run(struct bench_state *s, struct bench_worker *w)
{
	const struct bench_args *a = s->a;
	struct vs_reactor *r = vs_reactor_current();
	double t0;

	if (a->random)
		printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
		       " in parallel (random offsets from %" PRIu64 ", seed %" PRIu64 ")\n",
		       a->count, a->write ? "write" : "read", a->bufsize, a->depth, a->offset,
		       a->seed);
	else
		printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
		       " in parallel (starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
		       a->count, a->write ? "write" : "read", a->bufsize, a->depth, a->offset,
		       a->step);
	if (a->flush_interval)
		printf("Sending flush every %" PRIu64 " requests\n", a->flush_interval);
	fflush(stdout);
	t0 = now_sec();
	s->main = vs_co_self();
	for (uint64_t i = 0; i < a->depth; i++) {
		w[i].s = s;
		w[i].buf = s->buf + i * a->bufsize;
		if (!vs_co_spawn(r, bench_worker, &w[i])) {
			s->err = -ENOMEM;
			break;
		}
		s->alive++;
	}
	while (s->alive)
		vs_co_yield();
	if (!s->err && a->write && a->flush_interval)
		s->err = vs_node_flush(s->node);
	if (s->err) {
		img_error(s->err, "Failed request: %s", strerror(-s->err));
		return s->err;
	}
	printf("Run completed in %3.3f seconds.\n", now_sec() - t0);
	return 0;
}

static void bench_co(void *opaque)
{
	struct bench_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.writable = a->write,
		.force_share = a->force_share,
		.cache = a->cache,
	};
	struct bench_state s = { .a = a, .next_offset = a->offset, .rng = a->seed | 1 };
	struct bench_worker *w = NULL;
	size_t len = a->depth * a->bufsize;

	if (img_open(&s.node, &oa) < 0)
		return;
	s.image_size = vs_node_size(s.node);
	if (a->random && (a->offset > s.image_size || a->bufsize > s.image_size - a->offset)) {
		img_error(-EINVAL, "--random: the image is smaller than offset plus buffer size");
		goto out;
	}
	w = calloc(a->depth, sizeof(*w));
	if (!w || !(s.buf = vs_buf_alloc(len))) {
		img_error(-ENOMEM, "Could not allocate %zu bytes of buffers", len);
		goto out;
	}
	memset(s.buf, a->pattern, len);
	if (bench_run(&s, w) == 0)
		a->rc = 0;
out:
	free(s.buf);
	free(w);
	vs_node_close(s.node);
}

enum { OPT_FLUSH = 256, OPT_NO_DRAIN, OPT_PATTERN, OPT_RANDOM };

/* A size option that qemu-img keeps in an int. */
static int bench_size(const char *what, const char *s, uint64_t *out)
{
	if (img_cvtnum(what, s, out) < 0)
		return -1;
	if (*out > INT_MAX) {
		img_error(-EINVAL, "Invalid %s specified. Must be between 0 and %d.", what,
			  INT_MAX);
		return -1;
	}
	return 0;
}

static int bench_uint(const char *s, uint64_t min, const char *what, uint64_t *out)
{
	if (img_parse_uint(s, INT_MAX, out) < 0 || *out < min) {
		img_error(-EINVAL, "Invalid %s specified", what);
		return -1;
	}
	return 0;
}

/* One option; returns 0, or -1 after printing why it is wrong. */
static int bench_opt(struct bench_args *a, struct img_image_cli *ic, int c, char **argv)
{
	uint64_t v;

	switch (c) {
	case 'c':
		return bench_uint(optarg, 0, "request count", &a->count);
	case 'd':
		return bench_uint(optarg, 1, "queue depth", &a->depth);
	case 'f':
		a->fmt = optarg;
		return 0;
	case 'i':
		/* The engine always uses io_uring; the choice is accepted. */
		if (strcmp(optarg, "native") && strcmp(optarg, "threads") &&
		    strcmp(optarg, "io_uring")) {
			img_error(-EINVAL, "Invalid aio option: %s", optarg);
			return -1;
		}
		return 0;
	case 'n':
		a->cache = VS_CACHE_NONE;
		return 0;
	case 'o':
		return img_cvtnum("offset", optarg, &a->offset) < 0 ? -1 : 0;
	case 'q':
		return 0; /* qemu-img bench prints its lines even with -q */
	case 's':
		return bench_size("buffer size", optarg, &a->bufsize);
	case 'S':
		return bench_size("step_size", optarg, &a->step);
	case 't':
		return img_parse_cache(optarg, &a->cache);
	case 'w':
		a->write = true;
		return 0;
	case 'U':
		a->force_share = true;
		return 0;
	case OPT_FLUSH:
		return bench_uint(optarg, 0, "flush interval", &a->flush_interval);
	case OPT_NO_DRAIN:
		a->drain = false;
		return 0;
	case OPT_PATTERN:
		if (img_parse_uint(optarg, 0xff, &v) < 0) {
			img_error(-EINVAL, "Invalid pattern byte specified");
			return -1;
		}
		a->pattern = (int)v;
		return 0;
	case OPT_RANDOM:
		a->random = true;
		a->seed = 1;
		if (optarg && img_parse_uint(optarg, UINT64_MAX, &a->seed) < 0) {
			img_error(-EINVAL, "Invalid random seed specified");
			return -1;
		}
		return 0;
	case IMG_OPT_OBJECT:
	case IMG_OPT_IMAGE_OPTS:
		return img_image_getopt(ic, c, optarg);
	default:
		img_getopt_error(argv, c);
		return -1;
	}
}

static int bench_check(const struct bench_args *a)
{
	if (a->flush_interval && !a->write) {
		img_error(-EINVAL, "--flush-interval is only available in write tests");
		return -1;
	}
	if (a->flush_interval && a->flush_interval < a->depth) {
		img_error(-EINVAL, "Flush interval can't be smaller than depth");
		return -1;
	}
	if (a->write && a->force_share) {
		img_error(-EINVAL,
			  "Could not open '%s': force-share=on can only be used with "
			  "read-only images",
			  a->filename);
		return -1;
	}
	if (a->bufsize && a->depth > SIZE_MAX / a->bufsize) {
		img_error(-ENOMEM, "Buffer size times queue depth is too large");
		return -1;
	}
	return 0;
}

int img_cmd_bench(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "flush-interval", required_argument, NULL, OPT_FLUSH },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "pattern", required_argument, NULL, OPT_PATTERN },
		{ "no-drain", no_argument, NULL, OPT_NO_DRAIN },
		{ "random", optional_argument, NULL, OPT_RANDOM },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_args a = {
		.count = BENCH_DEFAULT_COUNT,
		.depth = BENCH_DEFAULT_DEPTH,
		.bufsize = BENCH_DEFAULT_BUFSIZE,
		.drain = true,
		.rc = 1,
	};
	struct img_image_cli ic = { 0 };
	bool has_step = false;
	int c;

	while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", longopts, NULL)) != -1) {
		if (c == 'h') {
			img_help();
			return 0;
		}
		if (bench_opt(&a, &ic, c, argv) < 0)
			return 1;
		if (c == 'S')
			has_step = true;
	}
	if (optind != argc - 1)
		return img_usage_error("Expecting one image file name");
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (!has_step || !a.step)
		a.step = a.bufsize;
	if (bench_check(&a) < 0)
		return 1;
	fflush(stdout);
	if (img_run(bench_co, &a) < 0)
		return 1;
	return a.rc;
}
