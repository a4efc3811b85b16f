/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Concurrency stress of the qcow2 driver: many coroutines issue random
 * writes, write-zeroes, discards and reads on one node, against an
 * in-memory reference. Requests that touch the same bytes are serialised
 * by the test (their order would be undefined), requests on different
 * bytes of the same cluster or L2 table run concurrently, which is where
 * a driver that reads metadata or data, yields and then acts on what it
 * read goes wrong.
 *
 * The image file's protocol node is wrapped so that every file I/O sleeps
 * a random time first: completions come back out of submission order, as
 * they do with O_DIRECT or io-wq, instead of in the order a page-cache
 * backed file usually completes them.
 *
 * Every read is checked against the reference; at the end the whole image
 * is, and `qemu-img check` and `qemu-img compare` must agree; internal
 * snapshots must read as they did before the run.
 *
 * VSTOR_STRESS_LONG=1 (suite 'long') runs many more operations.
 * Exit 77 (skip) when qemu-img is missing, unless CI is set.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "qcow2-test-util.h"

#include "driver.h"
#include "qcow2.h"

static bool long_run;

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* ---- a protocol node whose I/O completes out of order ---- */

static struct vs_driver delay_drv;
static uint64_t delay_rng = 0x1234567;
static unsigned delay_max_us = 200;

/* When set, decides the delay (in microseconds) of each file request instead. */
static uint64_t (*delay_fn)(const struct vs_req *req);

/* When set, sees each file request after it completed (the file holds its effect). */
static void (*after_fn)(struct vs_node *node, const struct vs_req *req);

static int delay_submit(struct vs_node *node, struct vs_req *req)
{
	int ret;

	if (delay_fn) {
		uint64_t us = delay_fn(req);

		if (us)
			vs_co_sleep_ns(us * 1000);
	} else if (req->op != VS_OP_BLOCK_STATUS && delay_max_us) {
		uint64_t us = rng_next(&delay_rng) % delay_max_us;

		/* Some requests go at once, the others after a random sleep. */
		if (us > delay_max_us / 4)
			vs_co_sleep_ns(us * 1000);
	}
	ret = vs_driver_file.submit(node, req);
	if (after_fn)
		after_fn(node, req);
	return ret;
}

static void delay_wrap(struct vs_node *n)
{
	delay_drv = *n->file->drv;
	delay_drv.submit = delay_submit;
	n->file->drv = &delay_drv;
}

/* ---- the stress run ---- */

struct range {
	uint64_t off, len;
	bool busy;
};

struct stress_cfg {
	const char *name;
	const char *setup; /* shell, in tmpdir: makes st.qcow2 (and s1.raw for snapshot s1) */
	uint64_t size;
	uint64_t hot; /* most requests fall into [0, hot) */
	uint64_t max_len;
	uint64_t l2_cache;	      /* bytes, 0 = default */
	bool discard_exposes_backing; /* compat=0.10 with a backing file */
	bool snapshot;
	unsigned workers;
	unsigned ops;
};

struct stress {
	const struct stress_cfg *cfg;
	struct vs_node *n;
	uint8_t *ref;
	uint8_t *below; /* what an unallocated cluster reads as (backing), or NULL */
	uint64_t cluster;
	struct range *active;
	unsigned running;
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

struct worker {
	struct stress *st;
	unsigned idx;
	uint64_t rng;
};

static bool range_free(struct stress *st, unsigned self, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < st->cfg->workers; i++) {
		struct range *r = &st->active[i];

		if (i != self && r->busy && off < r->off + r->len && r->off < off + len)
			return false;
	}
	return true;
}

static void fail_at(struct stress *st, const char *what, uint64_t off, uint64_t len, int ret)
{
	if (st->ret)
		return;
	st->ret = ret ? ret : -EIO;
	snprintf(st->msg, sizeof(st->msg), "%s at 0x%llx+0x%llx: %d", what, (unsigned long long)off,
		 (unsigned long long)len, ret);
}

static void check_read(struct stress *st, uint64_t off, uint64_t len, const char *what)
{
	uint8_t *buf = vs_buf_alloc(len);
	int ret;

	ret = vs_node_pread(st->n, off, buf, len);
	if (ret < 0) {
		fail_at(st, what, off, len, ret);
	} else if (memcmp(buf, st->ref + off, len)) {
		uint64_t i = 0;

		while (buf[i] == st->ref[off + i])
			i++;
		fail_at(st, what, off + i, len - i, 0);
		snprintf(st->msg + strlen(st->msg), sizeof(st->msg) - strlen(st->msg),
			 " (got 0x%02x, expected 0x%02x)", buf[i], st->ref[off + i]);
	}
	free(buf);
}

/* What a discard of [off, off+len) does: whole clusters read as zeroes (or the backing file). */
static void discard_ref(struct stress *st, uint64_t off, uint64_t len)
{
	uint64_t cs = st->cluster, size = st->cfg->size;
	uint64_t c = (off + cs - 1) & ~(cs - 1);

	for (; c < off + len; c += cs) {
		uint64_t l = size - c < cs ? size - c : cs;

		if (c + cs > off + len && off + len < size)
			break;
		if (st->cfg->discard_exposes_backing && st->below)
			memcpy(st->ref + c, st->below + c, l);
		else
			memset(st->ref + c, 0, l);
	}
}

static void stress_worker(void *arg)
{
	struct worker *w = arg;
	struct stress *st = w->st;
	const struct stress_cfg *cfg = st->cfg;
	unsigned ops = long_run ? cfg->ops * 10 : cfg->ops;

	for (unsigned k = 0; k < ops && !st->ret; k++) {
		uint64_t r = rng_next(&w->rng);
		unsigned op = (unsigned)(r % 100);
		uint64_t span = (r >> 8) % 4 ? cfg->hot : cfg->size;
		uint64_t off, len;
		int ret = 0;

		len = 1 + rng_next(&w->rng) % cfg->max_len;
		/*
		 * Mostly sector-aligned requests, some byte-granular ones, some
		 * aligned to subclusters or clusters (so that write-zeroes and
		 * discards leave holes in allocated clusters to be filled again).
		 */
		if (rng_next(&w->rng) % 4 == 0) {
			uint64_t g = 2048ull << (rng_next(&w->rng) % 6);

			off = (rng_next(&w->rng) % span) & ~(g - 1);
			len = (len + g - 1) & ~(g - 1);
		} else if (rng_next(&w->rng) % 8) {
			len = (len + 511) & ~511ull;
			off = (rng_next(&w->rng) % span) & ~511ull;
		} else {
			off = rng_next(&w->rng) % span;
		}
		if (off >= cfg->size)
			off = cfg->size - 512;
		if (off + len > cfg->size)
			len = cfg->size - off;

		while (!range_free(st, w->idx, off, len))
			vs_co_yield_now();
		st->active[w->idx] = (struct range){ off, len, true };

		if (op < 40) {
			uint8_t *buf = vs_buf_alloc(len);
			uint8_t seed = (uint8_t)rng_next(&w->rng);

			for (uint64_t i = 0; i < len; i++)
				buf[i] = (uint8_t)(seed + w->idx * 31 + i * 7 + (i >> 9));
			ret = vs_node_pwrite(st->n, off, buf, len, 0);
			if (ret == 0)
				memcpy(st->ref + off, buf, len);
			else
				fail_at(st, "write", off, len, ret);
			free(buf);
		} else if (op < 55) {
			unsigned flags = rng_next(&w->rng) % 2 ? VS_REQ_MAY_UNMAP : 0;

			ret = vs_node_write_zeroes(st->n, off, len, flags);
			if (ret == 0)
				memset(st->ref + off, 0, len);
			else
				fail_at(st, "write-zeroes", off, len, ret);
		} else if (op < 65) {
			ret = vs_node_discard(st->n, off, len);
			if (ret == 0)
				discard_ref(st, off, len);
			else
				fail_at(st, "discard", off, len, ret);
		} else if (op < 67) {
			ret = vs_node_flush(st->n);
			if (ret < 0)
				fail_at(st, "flush", 0, 0, ret);
		} else {
			check_read(st, off, len, "read differs from the reference");
		}
		st->active[w->idx].busy = false;
	}
	st->running--;
}

static int read_file(const char *name, uint8_t *buf, uint64_t len)
{
	char p[128];
	int fd;
	ssize_t r;

	path(p, sizeof(p), name);
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return -errno;
	r = pread(fd, buf, len, 0);
	close(fd);
	return r < 0 ? -errno : 0;
}

static void stress_body(void *arg)
{
	struct stress *st = arg;
	const struct stress_cfg *cfg = st->cfg;
	struct vs_open_opts o = { 0 };
	struct vs_error err = { 0 };
	struct worker *w;
	char p[128];
	int fd, ret;

	path(p, sizeof(p), "st.qcow2");
	o.filename = p;
	o.l2_cache_size = cfg->l2_cache;
	o.refcount_cache_size = cfg->l2_cache;
	if (vs_image_open(&st->n, &o, &err) < 0) {
		st->ret = err.code;
		snprintf(st->msg, sizeof(st->msg), "open: %s", err.msg);
		return;
	}
	st->cluster = qcow2_state(st->n)->cluster_size;
	delay_wrap(st->n);

	w = calloc(cfg->workers, sizeof(*w));
	st->active = calloc(cfg->workers, sizeof(*st->active));
	st->running = cfg->workers;
	for (unsigned i = 0; i < cfg->workers; i++) {
		w[i] = (struct worker){ st, i, 0x9e3779b97f4a7c15ull * (i + 1) };
		vs_co_spawn(vs_reactor_current(), stress_worker, &w[i]);
	}
	while (st->running)
		vs_co_yield_now();

	/* The whole image, in pieces that cross cluster and L2 boundaries. */
	for (uint64_t off = 0; off < cfg->size && !st->ret; off += 1 << 20) {
		uint64_t l = cfg->size - off < (1 << 20) ? cfg->size - off : 1 << 20;

		check_read(st, off, l, "final read differs from the reference");
	}
	vs_node_close(st->n);
	free(w);
	free(st->active);

	path(p, sizeof(p), "ref.raw");
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ret = fd < 0 ? -errno : 0;
	if (!ret && pwrite(fd, st->ref, cfg->size, 0) != (ssize_t)cfg->size)
		ret = -EIO;
	if (fd >= 0)
		close(fd);
	if (ret && !st->ret)
		fail_at(st, "writing ref.raw", 0, 0, ret);
}

static void run_stress(const struct stress_cfg *cfg)
{
	struct stress st = { .cfg = cfg };

	if (sh("rm -f *.qcow2 *.raw && %s", cfg->setup))
		fail_msg("[%s] setup failed: %s", cfg->name, cfg->setup);
	if (sh("qemu-img convert -O raw st.qcow2 start.raw"))
		fail_msg("[%s] qemu-img convert failed", cfg->name);
	st.ref = malloc(cfg->size);
	assert_non_null(st.ref);
	assert_int_equal(read_file("start.raw", st.ref, cfg->size), 0);
	if (!sh("test -f below.raw")) {
		st.below = calloc(1, cfg->size);
		assert_non_null(st.below);
		assert_int_equal(read_file("below.raw", st.below, cfg->size), 0);
	}

	in_co(stress_body, &st);
	free(st.ref);
	free(st.below);
	if (st.ret)
		fail_msg("[%s] %s", cfg->name, st.msg);
	if (sh("qemu-img check st.qcow2"))
		fail_msg("[%s] qemu-img check failed", cfg->name);
	if (sh("qemu-img compare -f qcow2 -F raw st.qcow2 ref.raw"))
		fail_msg("[%s] qemu-img compare with the reference failed", cfg->name);
	if (cfg->snapshot &&
	    sh("qemu-img convert -l snapshot.name=s1 -O raw st.qcow2 s1-after.raw && "
	       "cmp s1.raw s1-after.raw"))
		fail_msg("[%s] snapshot s1 changed", cfg->name);
}

#define MB (1ull << 20)

/* Data, compressed clusters and zero clusters made by QEMU, then snapshot s1 of them. */
#define QEMU_DATA(img)                                                   \
	"qemu-io -c 'write -P 0x11 0 1M' -c 'write -c -P 0x22 1M 256k' " \
	"-c 'write -z 1536k 128k' -c 'write -P 0x33 3M 64k' " img " && "

#define SNAP(img)                             \
	"qemu-img snapshot -c s1 " img " && " \
	"qemu-img convert -l snapshot.name=s1 -O raw " img " s1.raw"

static void test_stress_extl2(void **state)
{
	static const struct stress_cfg cfg = {
		.name = "extended_l2",
		.setup = "qemu-img create -f qcow2 -o extended_l2=on st.qcow2 4M",
		.size = 4 * MB,
		.hot = 128 << 10,
		.max_len = 4000,
		.workers = 32,
		.ops = 400,
	};

	(void)state;
	run_stress(&cfg);
}

static void test_stress_small_clusters_small_cache(void **state)
{
	static const struct stress_cfg cfg = {
		.name = "cluster_size=4k, tiny caches",
		.setup = "qemu-img create -f qcow2 -o cluster_size=4k st.qcow2 24M",
		.size = 24 * MB,
		.hot = 2 * MB,
		.max_len = 20000,
		.l2_cache = 16384,
		.workers = 32,
		.ops = 300,
	};

	(void)state;
	run_stress(&cfg);
}

static void test_stress_snapshot(void **state)
{
	static const struct stress_cfg cfg = {
		.name = "internal snapshot",
		.setup = "qemu-img create -f qcow2 st.qcow2 4M && " QEMU_DATA("st.qcow2")
			SNAP("st.qcow2"),
		.size = 4 * MB,
		.hot = 2 * MB,
		.max_len = 100000,
		.snapshot = true,
		.workers = 32,
		.ops = 200,
	};

	(void)state;
	run_stress(&cfg);
}

static void test_stress_snapshot_extl2_small_clusters(void **state)
{
	static const struct stress_cfg cfg = {
		.name = "internal snapshot, extended_l2, cluster_size=16k",
		.setup = "qemu-img create -f qcow2 -o extended_l2=on,cluster_size=16k st.qcow2 4M "
			 "&& " QEMU_DATA("st.qcow2") SNAP("st.qcow2"),
		.size = 4 * MB,
		.hot = 2 * MB,
		.max_len = 40000,
		.l2_cache = 65536,
		.snapshot = true,
		.workers = 32,
		.ops = 200,
	};

	(void)state;
	run_stress(&cfg);
}

static void test_stress_backing(void **state)
{
	static const struct stress_cfg cfg = {
		.name = "backing file, cluster_size=8k, lazy_refcounts",
		.setup = "qemu-img create -f qcow2 base.qcow2 4M && "
			 "qemu-io -c 'write -P 0x77 0 4M' base.qcow2 && "
			 "qemu-img create -f qcow2 -b base.qcow2 -F qcow2 "
			 "-o cluster_size=8k,lazy_refcounts=on st.qcow2 && " QEMU_DATA(
				 "st.qcow2") "qemu-img convert -O raw base.qcow2 below.raw",
		.size = 4 * MB,
		.hot = 1 * MB,
		.max_len = 30000,
		.workers = 32,
		.ops = 200,
	};

	(void)state;
	run_stress(&cfg);
}

static void test_stress_v2_backing_snapshot(void **state)
{
	static const struct stress_cfg cfg = {
		.name = "compat=0.10, backing file, internal snapshot",
		.setup = "qemu-img create -f qcow2 base.qcow2 4M && "
			 "qemu-io -c 'write -P 0x77 0 4M' base.qcow2 && "
			 "qemu-img create -f qcow2 -b base.qcow2 -F qcow2 "
			 "-o compat=0.10,cluster_size=4k st.qcow2 && "
			 "qemu-io -c 'write -P 0x11 0 1M' -c 'write -c -P 0x22 1M 256k' "
			 "st.qcow2 && qemu-img convert -O raw base.qcow2 below.raw && " SNAP(
				 "st.qcow2"),
		.size = 4 * MB,
		.hot = 2 * MB,
		.max_len = 20000,
		.discard_exposes_backing = true,
		.snapshot = true,
		.workers = 32,
		.ops = 200,
	};

	(void)state;
	run_stress(&cfg);
}

/* ---- targeted races ---- */

struct race {
	struct vs_node *n;
	uint64_t off, len;
	uint8_t pat;
	int ret;
	bool done;
};

static void race_write(void *arg)
{
	struct race *r = arg;
	uint8_t *buf = vs_buf_alloc(r->len);

	memset(buf, r->pat, r->len);
	r->ret = vs_node_pwrite(r->n, r->off, buf, r->len, 0);
	free(buf);
	r->done = true;
}

/*
 * Subcluster size 2k (64k clusters with extended L2). The small in-place
 * write reaches the file late, the large write's own data write later
 * still: the large write's read of the tail of its last subcluster comes
 * first of all.
 */
static uint64_t rmw_delays(const struct vs_req *req)
{
	if (req->op != VS_OP_WRITE)
		return 0;
	return req->len == 512 ? 20000 : 60000;
}

struct rmw_case {
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

static void rmw_body(void *arg)
{
	struct rmw_case *c = arg;
	struct vs_open_opts o = { 0 };
	struct vs_error err = { 0 };
	struct vs_node *n;
	struct race a, b;
	uint8_t *buf = vs_buf_alloc(8192);
	char p[128];

	path(p, sizeof(p), "rmw.qcow2");
	o.filename = p;
	if (vs_image_open(&n, &o, &err) < 0) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		return;
	}
	/* Subcluster 1 of cluster 0 allocated, subcluster 0 not. */
	memset(buf, 0x11, 2048);
	c->ret = vs_node_pwrite(n, 2048, buf, 2048, 0);
	delay_wrap(n);
	delay_fn = rmw_delays;
	/* a: in place, inside subcluster 1; b: subcluster 0 up to the start of subcluster 1. */
	a = (struct race){ n, 3072, 512, 0xaa, 0, false };
	b = (struct race){ n, 1024, 1536, 0xbb, 0, false };
	vs_co_spawn(vs_reactor_current(), race_write, &a);
	vs_co_spawn(vs_reactor_current(), race_write, &b);
	while (!a.done || !b.done)
		vs_co_yield_now();
	delay_fn = NULL;
	if (!c->ret)
		c->ret = a.ret ? a.ret : b.ret;
	if (!c->ret)
		c->ret = vs_node_pread(n, 0, buf, 4096);
	if (!c->ret) {
		for (unsigned i = 0; i < 4096 && !c->msg[0]; i++) {
			uint8_t want = i < 1024		       ? 0 :
				       i < 2560		       ? 0xbb :
				       (i >= 3072 && i < 3584) ? 0xaa :
								 0x11;

			if (buf[i] != want)
				snprintf(c->msg, sizeof(c->msg),
					 "byte %u is 0x%02x, expected 0x%02x", i, buf[i], want);
		}
	}
	vs_node_close(n);
	free(buf);
}

/*
 * A write into an unallocated subcluster of a cluster that already has
 * storage fills the rest of its subclusters by read-modify-write; it must
 * not rewrite bytes of an allocated subcluster that a concurrent in-place
 * write is changing.
 */
static void test_race_extl2_rmw_vs_inplace_write(void **state)
{
	struct rmw_case c = { 0 };

	(void)state;
	assert_int_equal(sh("rm -f rmw.qcow2 && "
			    "qemu-img create -f qcow2 -o extended_l2=on rmw.qcow2 1M"),
			 0);
	in_co(rmw_body, &c);
	if (c.ret)
		fail_msg("I/O failed: %d %s", c.ret, c.msg);
	if (c.msg[0])
		fail_msg("concurrent write lost: %s", c.msg);
	if (sh("qemu-img check rmw.qcow2"))
		fail_msg("qemu-img check failed");
}

/*
 * The file as it is right after the data write of the second request:
 * the freshest state a crash can leave behind, with every write issued so
 * far on disk in order.
 */
static bool crash_taken;

static void crash_copy_after_55(struct vs_node *node, const struct vs_req *req)
{
	if (crash_taken || req->op != VS_OP_WRITE || !req->niov ||
	    ((const uint8_t *)req->iov[0].iov_base)[0] != 0x55)
		return;
	crash_taken = true;
	sh("cp %s crash.qcow2", node->filename);
}

/* Whether the first 64k of @img read back as @pat throughout (qemu-io). */
static bool reads_pattern(const char *img, uint8_t pat)
{
	return sh("out=$(qemu-io -r -c 'read -P 0x%02x 0 64k' %s 2>&1) && "
		  "echo \"$out\" | grep -q 'read 65536/65536' && "
		  "! echo \"$out\" | grep -q 'verification failed'",
		  pat, img) == 0;
}

static void reuse_body(void *arg)
{
	struct rmw_case *c = arg;
	struct vs_open_opts o = { 0 };
	struct vs_error err = { 0 };
	struct vs_node *n;
	uint8_t *buf = vs_buf_alloc(65536);
	char p[128];

	path(p, sizeof(p), "reuse.qcow2");
	o.filename = p;
	if (vs_image_open(&n, &o, &err) < 0) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		return;
	}
	delay_wrap(n);
	delay_fn = NULL;
	delay_max_us = 0;
	crash_taken = false;
	after_fn = crash_copy_after_55;
	/* Overwrite the compressed cluster: its host cluster becomes free... */
	memset(buf, 0x33, 65536);
	c->ret = vs_node_pwrite(n, 0, buf, 65536, 0);
	/* ...and the next allocation may take it. */
	memset(buf, 0x55, 65536);
	if (!c->ret)
		c->ret = vs_node_pwrite(n, 1 << 20, buf, 65536, 0);
	after_fn = NULL;
	delay_max_us = 200;
	vs_node_close(n);
	free(buf);
}

/*
 * A cluster freed by an overwrite must not take new data before the L2
 * entry that dropped it is on disk: else a crash leaves the old entry
 * pointing at foreign bytes, and data the guest had flushed long ago (the
 * compressed cluster) reads as garbage, neither old nor new.
 */
static void test_crash_freed_cluster_reused_before_l2_update(void **state)
{
	struct rmw_case c = { 0 };

	(void)state;
	assert_int_equal(sh("rm -f reuse.qcow2 crash.qcow2 && "
			    "qemu-img create -f qcow2 reuse.qcow2 4M && "
			    "qemu-io -c 'write -c -P 0x22 0 64k' -c 'write -P 0x11 2M 64k' "
			    "reuse.qcow2"),
			 0);
	in_co(reuse_body, &c);
	if (c.ret)
		fail_msg("I/O failed: %d %s", c.ret, c.msg);
	if (!crash_taken)
		fail_msg("the data write of the second request was not seen");
	/* Guest cluster 0 reads as before the overwrite, or as after it. */
	if (!reads_pattern("crash.qcow2", 0x22) && !reads_pattern("crash.qcow2", 0x33))
		fail_msg("after a crash, cluster 0 is neither its old nor its new content");
	if (sh("qemu-img check crash.qcow2; test $? -eq 0 -o $? -eq 3"))
		fail_msg("the crash state has corruptions, not just leaks");
}

struct eof_job {
	struct vs_node *n;
	bool discard;
	int ret;
	bool done;
};

static void eof_worker(void *arg)
{
	struct eof_job *j = arg;
	uint8_t *buf = vs_buf_alloc(65536);

	if (j->discard)
		j->ret = vs_node_discard(j->n, 0, 65536);
	else
		j->ret = vs_node_pread(j->n, 0, buf, 65536);
	free(buf);
	j->done = true;
}

static void eof_body(void *arg)
{
	struct rmw_case *c = arg;
	struct vs_open_opts o = { 0 };
	struct vs_error err = { 0 };
	struct eof_job r = { 0 }, d = { 0 };
	struct vs_node *n;
	char p[128];

	path(p, sizeof(p), "eof.qcow2");
	o.filename = p;
	if (vs_image_open(&n, &o, &err) < 0) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		return;
	}
	r.n = d.n = n;
	d.discard = true;
	/* The read takes the lock and yields reading the L2 table; the discard queues. */
	vs_co_spawn(vs_reactor_current(), eof_worker, &r);
	vs_co_spawn(vs_reactor_current(), eof_worker, &d);
	for (unsigned i = 0; i < 200 && !(r.done && d.done); i++)
		vs_co_sleep_ns(10 * 1000 * 1000);
	if (!r.done || !d.done) {
		/* Hung: leave the node open, its coroutines cannot be unwound. */
		snprintf(c->msg, sizeof(c->msg), "read %s, discard %s after 2 s",
			 r.done ? "done" : "hung", d.done ? "done" : "hung");
		return;
	}
	if (r.ret != -EIO)
		snprintf(c->msg, sizeof(c->msg), "read of a cluster past EOF returned %d", r.ret);
	vs_node_close(n);
}

/*
 * Hostile image: an L2 entry points past the end of the file. The read
 * that finds out marks the image corrupt; it must not wait for the lock
 * while it still counts as in-flight unlocked I/O, which a discard holding
 * the lock waits to drain.
 */
static void test_hostile_cluster_past_eof_read_vs_discard(void **state)
{
	struct rmw_case c = { 0 };

	(void)state;
	/* Header, reftable, refblock, L1, L2, then the data cluster: cut it off. */
	assert_int_equal(
		sh("rm -f eof.qcow2 && qemu-img create -f qcow2 eof.qcow2 1M && "
		   "qemu-io -c 'write -P 0x11 0 64k' eof.qcow2 && "
		   "qemu-img map --output=json eof.qcow2 | grep -q '\"offset\": 327680' && "
		   "truncate -s 320k eof.qcow2"),
		0);
	in_co(eof_body, &c);
	if (c.ret)
		fail_msg("open failed: %d %s", c.ret, c.msg);
	if (c.msg[0])
		fail_msg("%s", c.msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_race_extl2_rmw_vs_inplace_write),
		cmocka_unit_test(test_crash_freed_cluster_reused_before_l2_update),
		cmocka_unit_test(test_hostile_cluster_past_eof_read_vs_discard),
		cmocka_unit_test(test_stress_extl2),
		cmocka_unit_test(test_stress_small_clusters_small_cache),
		cmocka_unit_test(test_stress_snapshot),
		cmocka_unit_test(test_stress_snapshot_extl2_small_clusters),
		cmocka_unit_test(test_stress_backing),
		cmocka_unit_test(test_stress_v2_backing_snapshot),
	};

	long_run = getenv("VSTOR_STRESS_LONG") != NULL;
	vs_set_warn_handler(NULL, NULL);
	if (system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		if (!getenv("CI"))
			return 77;
		fprintf(stderr, "qemu-img/qemu-io missing but CI is set\n");
		return 1;
	}
	return cmocka_run_group_tests_name("qcow2-stress", tests, setup_tmp, teardown_tmp) ? 1 : 0;
}
