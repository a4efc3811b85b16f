/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the qcow2 driver core: header codec, refcount widths,
 * compression, and the driver end to end against QEMU as the oracle
 * (images vstor writes pass `qemu-img check` and compare equal to a raw
 * reference; images qemu-img/qemu-io write read the same through vstor).
 *
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

/* Run a shell command in the temp dir; returns its exit status. */
/* ---- running test bodies in a coroutine ---- */

/* ---- header codec ---- */

static void test_format_header_roundtrip(void **state)
{
	struct qcow2_header h = { 0 }, d;
	uint8_t buf[4096];

	(void)state;
	memset(buf, 0xee, sizeof(buf));
	h.magic = QCOW2_MAGIC;
	h.version = 3;
	h.cluster_bits = 16;
	h.size = 1ull << 40;
	h.l1_size = 2048;
	h.l1_table_offset = 3 << 16;
	h.refcount_table_offset = 1 << 16;
	h.refcount_table_clusters = 1;
	h.incompatible_features = QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2;
	h.compatible_features = QCOW2_COMPAT_LAZY_REFCOUNTS;
	h.refcount_order = 6;
	h.header_length = 120;
	h.compression_type = QCOW2_COMPRESSION_ZSTD;
	qcow2_header_encode(&h, buf);
	/* Bytes past the known fields are the caller's: kept as they were. */
	assert_int_equal(buf[112], 0xee);
	assert_int_equal(buf[105], 0);
	assert_int_equal(qcow2_header_decode(buf, sizeof(buf), &d, NULL), 0);
	assert_int_equal(d.version, 3);
	assert_int_equal(d.size, h.size);
	assert_int_equal(d.refcount_order, 6);
	assert_int_equal(d.header_length, 120);
	assert_int_equal(d.compression_type, QCOW2_COMPRESSION_ZSTD);
	assert_int_equal(d.incompatible_features, h.incompatible_features);

	h.version = 2;
	h.incompatible_features = 0;
	memset(buf, 0, sizeof(buf));
	qcow2_header_encode(&h, buf);
	assert_int_equal(qcow2_header_decode(buf, sizeof(buf), &d, NULL), 0);
	assert_int_equal(d.refcount_order, 4);
	assert_int_equal(d.header_length, 72);
	assert_int_equal(d.compression_type, 0);
}

static void test_format_header_rejects_bad_fields(void **state)
{
	struct qcow2_header h = { 0 }, d;
	uint8_t buf[4096];
	struct vs_error err = { 0 };

	(void)state;
	h.magic = QCOW2_MAGIC;
	h.version = 3;
	h.cluster_bits = 16;
	h.refcount_table_offset = 1 << 16;
	h.refcount_table_clusters = 1;
	h.refcount_order = 4;
	h.header_length = 112;
#define EXPECT_BAD(field, value)                                                  \
	do {                                                                      \
		struct qcow2_header b = h;                                        \
		b.field = value;                                                  \
		memset(buf, 0, sizeof(buf));                                      \
		qcow2_header_encode(&b, buf);                                     \
		vs_error_clear(&err);                                             \
		assert_true(qcow2_header_decode(buf, sizeof(buf), &d, &err) < 0); \
		assert_true(err.msg[0] != 0);                                     \
	} while (0)
	EXPECT_BAD(version, 4);
	EXPECT_BAD(cluster_bits, 8);
	EXPECT_BAD(cluster_bits, 22);
	EXPECT_BAD(refcount_order, 7);
	EXPECT_BAD(header_length, 100);
	EXPECT_BAD(header_length, 113);
	EXPECT_BAD(l1_table_offset, 12345);
	EXPECT_BAD(refcount_table_offset, 512);
	EXPECT_BAD(l1_size, 0x10000000);
	EXPECT_BAD(compression_type, 1); /* zstd without the incompatible bit */
	EXPECT_BAD(compression_type, 7);
	EXPECT_BAD(incompatible_features,
		   QCOW2_INCOMPAT_COMPRESSION); /* the bit with zlib (QEMU refuses) */
	h.backing_file_offset = 112;
	EXPECT_BAD(backing_file_size, 2000);
	EXPECT_BAD(backing_file_size, 65500); /* name would run past the header cluster */
	h.backing_file_offset = 0;
#undef EXPECT_BAD
	memset(buf, 0, sizeof(buf));
	qcow2_header_encode(&h, buf);
	buf[0] ^= 1;
	assert_int_equal(qcow2_header_decode(buf, sizeof(buf), &d, NULL), -EINVAL);
	assert_true(qcow2_header_decode(buf, 50, &d, NULL) < 0);
}

/*
 * Virtual sizes qemu cannot address are refused by the decoder, with no
 * wrap-around: 2^64 - 1 used to pass (its L1 index, computed as
 * (size + span - 1) / span, wrapped to 0). The bounds: VS_NODE_MAX_SIZE
 * (qemu's "File too large") and an L1 index that fits an int ("Image is
 * too big"); whether the L1 table is large enough is the opener's check.
 */
static void test_format_header_size_limits(void **state)
{
	struct qcow2_header h = { 0 }, d;
	uint8_t buf[4096];
	struct vs_error err = { 0 };
	const struct {
		unsigned cluster_bits;
		uint64_t size;
		int want;
	} cases[] = {
		{ 16, UINT64_MAX, -EFBIG },
		{ 21, UINT64_MAX, -EFBIG },
		{ 16, UINT64_MAX - 511, -EFBIG },
		{ 16, UINT64_C(1) << 63, -EFBIG },
		{ 21, VS_NODE_MAX_SIZE + 512, -EFBIG },
		{ 21, VS_NODE_MAX_SIZE, 0 },	     /* 2^24 - 2 L1 entries of 2^39 bytes */
		{ 16, VS_NODE_MAX_SIZE, -EFBIG },    /* 2^34 - 2 L1 entries: not an int */
		{ 9, (uint64_t)INT32_MAX << 15, 0 }, /* 512-byte clusters: 2^15 per entry */
		{ 9, ((uint64_t)INT32_MAX << 15) + 512, -EFBIG },
		{ 16, UINT64_C(1) << 50, 0 },
	};

	(void)state;
	h.magic = QCOW2_MAGIC;
	h.version = 3;
	h.refcount_table_offset = 1 << 21;
	h.refcount_table_clusters = 1;
	h.refcount_order = 4;
	h.header_length = 112;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		h.cluster_bits = cases[i].cluster_bits;
		h.size = cases[i].size;
		memset(buf, 0, sizeof(buf));
		qcow2_header_encode(&h, buf);
		vs_error_clear(&err);
		assert_int_equal(qcow2_header_decode(buf, sizeof(buf), &d, &err), cases[i].want);
		if (cases[i].want)
			assert_true(err.msg[0] != 0);
		assert_int_equal(qcow2_check_virtual_size(cases[i].size, cases[i].cluster_bits,
							  false, NULL),
				 cases[i].want);
	}
	/* Extended L2 entries halve the span of an L1 entry. */
	assert_int_equal(qcow2_check_virtual_size((uint64_t)INT32_MAX << 23, 14, true, NULL), 0);
	assert_int_equal(qcow2_check_virtual_size(((uint64_t)INT32_MAX << 24) + 512, 14, true,
						  NULL),
			 -EFBIG);
	assert_int_equal(
		qcow2_check_virtual_size(((uint64_t)INT32_MAX << 24) + 512, 14, false, NULL), 0);
}

/* ---- refcount entries of every width ---- */

static void test_refcount_entry_widths(void **state)
{
	(void)state;
	for (unsigned order = 0; order <= 6; order++) {
		struct qcow2_state s = { 0 };
		uint8_t rb[512];
		unsigned bits = 1u << order;
		uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
		uint64_t n = sizeof(rb) * 8 / bits;

		s.refcount_order = order;
		s.refcount_bits = bits;
		memset(rb, 0, sizeof(rb));
		for (uint64_t i = 0; i < n; i++)
			qcow2_rb_entry_set(&s, rb, i, (i * 7 + 3) & max);
		for (uint64_t i = 0; i < n; i++)
			assert_int_equal(qcow2_rb_entry_get(&s, rb, i), (i * 7 + 3) & max);
		/* Setting one entry leaves its neighbours alone. */
		qcow2_rb_entry_set(&s, rb, 5, max);
		assert_int_equal(qcow2_rb_entry_get(&s, rb, 4), (4 * 7 + 3) & max);
		assert_int_equal(qcow2_rb_entry_get(&s, rb, 6), (6 * 7 + 3) & max);
		assert_int_equal(qcow2_rb_entry_get(&s, rb, 5), max);
	}
	/* Sub-byte widths: bit 0 is the least significant bit (qcow2.txt). */
	{
		struct qcow2_state s = { .refcount_order = 0, .refcount_bits = 1 };
		uint8_t rb[8] = { 0 };

		qcow2_rb_entry_set(&s, rb, 0, 1);
		qcow2_rb_entry_set(&s, rb, 9, 1);
		assert_int_equal(rb[0], 0x01);
		assert_int_equal(rb[1], 0x02);
	}
}

/* ---- compression ---- */

static void test_compress_roundtrip_with_padding(void **state)
{
	uint8_t src[65536], comp[70000], out[65536];

	(void)state;
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i / 100);
	for (uint8_t type = 0; type <= 1; type++) {
		ssize_t n = qcow2_compress(type, src, sizeof(src), comp, sizeof(comp));

		assert_true(n > 0 && n < (ssize_t)sizeof(src));
		/* Stored sizes are rounded up to sectors: trailing bytes are someone else's. */
		memset(comp + n, 0x5a, 600);
		memset(out, 0, sizeof(out));
		assert_int_equal(qcow2_decompress(type, comp, (size_t)n + 600, out, sizeof(out)),
				 0);
		assert_memory_equal(out, src, sizeof(src));
		/* Truncated input cannot fill a cluster. */
		assert_true(qcow2_decompress(type, comp, (size_t)n / 2, out, sizeof(out)) < 0);
	}
	assert_int_equal(qcow2_decompress(9, comp, 10, out, sizeof(out)), -ENOTSUP);
}

/*
 * zlib skips data that cannot compress (random), but compresses what only
 * looks random byte by byte: a counter (uniform bytes), a random block
 * repeated within the window, random data with a long repeat.
 */
static void test_compress_skips_only_incompressible(void **state)
{
	static uint8_t src[65536], comp[70000], out[65536];
	uint32_t seed = 12345;
	ssize_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(src); i++) {
		seed = seed * 1103515245 + 12345;
		src[i] = (uint8_t)(seed >> 16);
	}
	assert_int_equal(qcow2_compress(0, src, sizeof(src), comp, sizeof(src) - 1), -ENOSPC);
	/* A 2 KiB random run repeated: deflate matches it. */
	for (size_t i = 2048; i < sizeof(src); i++)
		src[i] = src[i % 2048];
	n = qcow2_compress(0, src, sizeof(src), comp, sizeof(src) - 1);
	assert_true(n > 0 && n < 8192);
	/* Uniform bytes, but a counter. */
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)i;
	n = qcow2_compress(0, src, sizeof(src), comp, sizeof(src) - 1);
	assert_true(n > 0 && n < 4096);
	assert_int_equal(qcow2_decompress(0, comp, (size_t)n, out, sizeof(out)), 0);
	assert_memory_equal(out, src, sizeof(src));
	/* Random, with a 3 KiB repeat 3500 bytes back (inside the window): worth compressing. */
	for (size_t i = 0; i < sizeof(src); i++) {
		seed = seed * 1103515245 + 12345;
		src[i] = (uint8_t)(seed >> 16);
	}
	memcpy(src + 20000, src + 16500, 3072);
	n = qcow2_compress(0, src, sizeof(src), comp, sizeof(src) - 1);
	assert_true(n > 0 && n < 65536 - 2048);
}

/* ---- the driver against qemu-img ---- */

struct rw_case {
	const char *opts;
	uint64_t size;
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

/* Write a pattern to an image and to a raw reference with the same requests. */
static int write_both(struct vs_node *n, int ref, uint64_t off, uint64_t len, uint8_t v)
{
	uint8_t *buf = vs_buf_alloc(len);
	int ret;

	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(v + i / 4096);
	ret = vs_node_pwrite(n, off, buf, len, 0);
	if (ret == 0 && pwrite(ref, buf, len, (off_t)off) != (ssize_t)len)
		ret = -EIO;
	free(buf);
	return ret;
}

static int zero_both(struct vs_node *n, int ref, uint64_t off, uint64_t len, unsigned flags)
{
	uint8_t *buf = vs_buf_zalloc(len);
	int ret = vs_node_write_zeroes(n, off, len, flags);

	if (ret == 0 && pwrite(ref, buf, len, (off_t)off) != (ssize_t)len)
		ret = -EIO;
	free(buf);
	return ret;
}

static void rw_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n;
	char p[128];
	int ref, ret = 0;
	unsigned seed = 1;

	sh("rm -f rw.qcow2 rw.raw");
	c->ret = create_img("rw.qcow2", c->size, c->opts, &err);
	if (c->ret < 0) {
		snprintf(c->msg, sizeof(c->msg), "create: %s", err.msg);
		return;
	}
	path(p, sizeof(p), "rw.raw");
	ref = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (ref < 0 || ftruncate(ref, (off_t)c->size) < 0) {
		c->ret = -errno;
		return;
	}
	n = open_img("rw.qcow2", false, &err);
	if (!n) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		close(ref);
		return;
	}
	/* Partial clusters, cluster-crossing runs, rewrites, zeroes of both kinds. */
	for (int i = 0; i < 120 && ret == 0; i++) {
		uint64_t off, len;

		seed = seed * 1103515245 + 12345;
		off = (seed >> 4) % c->size;
		seed = seed * 1103515245 + 12345;
		len = 1 + (seed >> 4) % 300000;
		if (i % 3)
			off &= ~511ull;
		if (off + len > c->size)
			len = c->size - off;
		if (i % 7 == 6)
			ret = zero_both(n, ref, off, len, i % 2 ? VS_REQ_MAY_UNMAP : 0);
		else
			ret = write_both(n, ref, off, len, (uint8_t)i);
	}
	if (ret == 0)
		ret = vs_node_flush(n);
	vs_node_close(n);
	close(ref);
	c->ret = ret;
	if (ret < 0)
		snprintf(c->msg, sizeof(c->msg), "I/O: %s", strerror(-ret));
}

static void test_qcow2_writes_pass_qemu_check_and_compare(void **state)
{
	static const char *const opts[] = {
		"",
		"compat=0.10",
		"cluster_size=512",
		"cluster_size=2M",
		"extended_l2=on",
		"extended_l2=on,cluster_size=16k",
		"refcount_bits=1",
		"refcount_bits=64,cluster_size=512", /* refcount table growth */
		"lazy_refcounts=on",
		"compression_type=zstd,refcount_bits=8,cluster_size=4k",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		struct rw_case c = { .opts = opts[i], .size = 8u << 20 };

		in_co(rw_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		if (sh("qemu-img check rw.qcow2"))
			fail_msg("[%s] qemu-img check failed", opts[i]);
		if (sh("qemu-img compare -f qcow2 -F raw rw.qcow2 rw.raw"))
			fail_msg("[%s] content differs from the reference", opts[i]);
	}
}

static void create_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };

	c->ret = create_img("c.qcow2", c->size, c->opts, &err);
	snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
}

static void test_qcow2_create_matches_qemu_info(void **state)
{
	static const struct {
		const char *opts;
		const char *expect; /* grep -F pattern in qemu-img info --output=json */
	} cases[] = {
		{ "", "\"compat\": \"1.1\"" },
		{ "compat=v2", "\"compat\": \"0.10\"" },
		{ "compat=0.10", "\"refcount-bits\": 16" },
		{ "lazy_refcounts=on", "\"lazy-refcounts\": true" },
		{ "extended_l2=on", "\"extended-l2\": true" },
		{ "compression_type=zstd", "\"compression-type\": \"zstd\"" },
		{ "refcount_bits=4", "\"refcount-bits\": 4" },
		{ "cluster_size=2M", "\"cluster-size\": 2097152" },
		{ "preallocation=metadata", "\"virtual-size\": 1048576" },
		{ "preallocation=full", "\"virtual-size\": 1048576" },
		{ "preallocation=falloc,cluster_size=4k", "\"cluster-size\": 4096" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rw_case c = { .opts = cases[i].opts, .size = 1 << 20 };

		sh("rm -f c.qcow2");
		in_co(create_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", cases[i].opts, c.msg);
		if (sh("qemu-img check c.qcow2"))
			fail_msg("[%s] qemu-img check failed", cases[i].opts);
		if (sh("qemu-img info --output=json c.qcow2 | grep -F '%s'", cases[i].expect))
			fail_msg("[%s] qemu-img info lacks %s", cases[i].opts, cases[i].expect);
	}
}

static void create_rejects_body(void *arg)
{
	static const char *const bad[] = {
		"compat=0.10,refcount_bits=8",
		"compat=0.10,lazy_refcounts=on",
		"compat=0.10,extended_l2=on",
		"compat=0.10,compression_type=zstd",
		"extended_l2=on,cluster_size=8k",
		"cluster_size=3000",
		"cluster_size=4M",
		"refcount_bits=3",
		"refcount_bits=128",
		"compat=1.0",
		"backing_fmt=qcow2",
		"bogus=1",
		"compression_type=lz4",
		"preallocation=foo",
		"backing_file=nonexistent.qcow2,backing_fmt=qcow2",
		"backing_file=base.raw", /* no backing format: refused as qemu-img 7.2 does */
		"backing_file=base.raw,backing_fmt=raw,preallocation=metadata",
	};
	int *failures = arg;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vs_error err = { 0 };

		if (create_img("bad.qcow2", 1 << 20, bad[i], &err) >= 0 || !err.msg[0]) {
			fprintf(stderr, "accepted: %s\n", bad[i]);
			(*failures)++;
		}
	}
}

static void test_qcow2_create_rejects_what_qemu_rejects(void **state)
{
	int failures = 0;

	(void)state;
	assert_int_equal(sh("qemu-img create -f raw base.raw 1M"), 0);
	in_co(create_rejects_body, &failures);
	assert_int_equal(failures, 0);
}

struct dump_case {
	const char *img, *out;
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

static void dump_body(void *arg)
{
	struct dump_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n = open_img(c->img, true, &err);
	char p[128];
	uint8_t *buf;
	int fd;

	if (!n) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		return;
	}
	path(p, sizeof(p), c->out);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	buf = vs_buf_alloc(1 << 20);
	c->ret = 0;
	for (uint64_t off = 0; off < vs_node_size(n) && c->ret == 0; off += 1 << 20) {
		uint64_t l = vs_node_size(n) - off < (1 << 20) ? vs_node_size(n) - off : (1 << 20);

		c->ret = vs_node_pread(n, off, buf, l);
		if (c->ret == 0 && pwrite(fd, buf, l, (off_t)off) != (ssize_t)l)
			c->ret = -EIO;
	}
	free(buf);
	close(fd);
	vs_node_close(n);
}

static void expect_reads_like_qemu(const char *img)
{
	struct dump_case c = { .img = img, .out = "dump.raw" };

	in_co(dump_body, &c);
	if (c.ret < 0)
		fail_msg("%s: %s", img, c.msg);
	if (sh("qemu-img convert -O raw %s ref.raw && cmp dump.raw ref.raw", img))
		fail_msg("%s reads differently through vstor", img);
}

static void test_qcow2_reads_what_qemu_writes(void **state)
{
	/* Compressed writes must cover whole clusters: the second field is their length. */
	static const char *const opts[][2] = {
		{ "compat=1.1", "512k" },
		{ "compat=0.10", "512k" },
		{ "extended_l2=on", "512k" },
		{ "compression_type=zstd", "512k" },
		{ "cluster_size=512,refcount_bits=2", "1k" },
		{ "cluster_size=2M", "2M" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		assert_int_equal(
			sh("rm -f q.qcow2 && qemu-img create -f qcow2 -o %s q.qcow2 8M && "
			   "qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1500k 7k' "
			   "-c 'write -c -P 0x33 4M %s' -c 'write -z 2M 256k' "
			   "-c 'write -P 0x44 2M 4k' -c 'write -P 0x55 8387584 512' q.qcow2",
			   opts[i][0], opts[i][1]),
			0);
		expect_reads_like_qemu("q.qcow2");
	}
}

/* Writes through vstor over an image with an internal snapshot leave the snapshot intact. */
static void cow_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n = open_img("snap.qcow2", false, &err);
	char p[128];
	int ref;

	if (!n) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		return;
	}
	path(p, sizeof(p), "active.raw");
	ref = open(p, O_RDWR);
	c->ret = write_both(n, ref, 0, 3000, 0xa1); /* shared cluster, partial */
	if (c->ret == 0)
		c->ret = write_both(n, ref, 4u << 20, 70000, 0xa2); /* over compressed clusters */
	if (c->ret == 0)
		c->ret = zero_both(n, ref, 1u << 20, 128 << 10, VS_REQ_MAY_UNMAP);
	if (c->ret == 0)
		c->ret = write_both(n, ref, 6u << 20, 1u << 20, 0xa3); /* unallocated */
	vs_node_close(n);
	close(ref);
}

static void test_qcow2_cow_keeps_internal_snapshot(void **state)
{
	static const char *const opts[] = { "compat=1.1", "compat=0.10", "extended_l2=on" };

	(void)state;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		struct rw_case c = { 0 };

		assert_int_equal(
			sh("rm -f snap.qcow2 && qemu-img create -f qcow2 -o %s snap.qcow2 8M "
			   "&& qemu-io -c 'write -P 0x11 0 2M' -c 'write -c -P 0x22 4M 1M' "
			   "snap.qcow2 && qemu-img snapshot -c s1 snap.qcow2 && "
			   "qemu-img convert -O raw snap.qcow2 snap.raw && cp snap.raw active.raw",
			   opts[i]),
			0);
		in_co(cow_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		if (sh("qemu-img check snap.qcow2"))
			fail_msg("[%s] qemu-img check failed", opts[i]);
		if (sh("qemu-img compare snap.qcow2 active.raw"))
			fail_msg("[%s] active layer differs", opts[i]);
		if (sh("qemu-img convert -l snapshot.name=s1 -O raw snap.qcow2 s1.raw && "
		       "cmp s1.raw snap.raw"))
			fail_msg("[%s] the snapshot changed", opts[i]);
	}
}

static void backing_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n;
	char p[128];
	int ref;

	sh("rm -f ov.qcow2");
	c->ret = create_img("ov.qcow2", 0, c->opts, &err);
	if (c->ret < 0) {
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		return;
	}
	n = open_img("ov.qcow2", false, &err);
	if (!n) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		return;
	}
	if (vs_node_size(n) != (6u << 20) || !vs_node_backing(n)) {
		c->ret = -EINVAL;
		snprintf(c->msg, sizeof(c->msg), "size or backing wrong");
	}
	path(p, sizeof(p), "ov.raw");
	ref = open(p, O_RDWR);
	if (c->ret == 0)
		c->ret = write_both(n, ref, 1000, 5000, 0xb1);
	if (c->ret == 0)
		c->ret = write_both(n, ref, (4u << 20) - 700, 1400, 0xb2);
	if (c->ret == 0)
		c->ret = zero_both(n, ref, 2u << 20, 1u << 20, 0);
	if (c->ret == 0) {
		/* Discard over a backing file keeps reading zeroes (v3 zero flag). */
		c->ret = vs_node_discard(n, 3u << 20, 1u << 20);
		if (c->ret == 0) {
			uint8_t *z = vs_buf_zalloc(1u << 20);

			if (pwrite(ref, z, 1u << 20, 3u << 20) != (1 << 20))
				c->ret = -EIO;
			free(z);
		}
	}
	vs_node_close(n);
	close(ref);
}

static void test_qcow2_backing_chain_cow(void **state)
{
	static const char *const opts[] = {
		"backing_file=base.qcow2,backing_fmt=qcow2",
		"backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		struct rw_case c = { .opts = opts[i] };

		assert_int_equal(sh("rm -f base.qcow2 && qemu-img create -f qcow2 base.qcow2 6M && "
				    "qemu-io -c 'write -P 0x77 0 6M' base.qcow2 && "
				    "qemu-img convert -O raw base.qcow2 ov.raw"),
				 0);
		in_co(backing_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		if (sh("qemu-img check ov.qcow2"))
			fail_msg("[%s] qemu-img check failed", opts[i]);
		if (sh("qemu-img compare ov.qcow2 ov.raw"))
			fail_msg("[%s] overlay content differs", opts[i]);
		if (sh("qemu-img info --output=json ov.qcow2 | grep -F '\"backing-filename-format\": "
		       "\"qcow2\"'"))
			fail_msg("[%s] backing format not recorded", opts[i]);
	}
}

/* Many coroutines allocating at once in one image. */
struct conc_job {
	struct vs_node *n;
	int ref;
	unsigned idx;
	int ret;
	int *running;
};

static void conc_worker(void *arg)
{
	struct conc_job *j = arg;

	for (unsigned k = 0; k < 40 && j->ret == 0; k++) {
		uint64_t off = (uint64_t)(k * 16 + j->idx) * 37000;

		j->ret = write_both(j->n, j->ref, off, 30000, (uint8_t)(j->idx * 16 + k));
	}
	(*j->running)--;
}

static void conc_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };
	struct conc_job jobs[16];
	int running = 16, ref;
	struct vs_node *n;
	char p[128];

	sh("rm -f cc.qcow2 cc.raw && truncate -s 24M cc.raw");
	c->ret = create_img("cc.qcow2", 24u << 20, c->opts, &err);
	n = c->ret == 0 ? open_img("cc.qcow2", false, &err) : NULL;
	if (!n) {
		c->ret = c->ret ? c->ret : err.code;
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		return;
	}
	path(p, sizeof(p), "cc.raw");
	ref = open(p, O_RDWR);
	for (unsigned i = 0; i < 16; i++) {
		jobs[i] = (struct conc_job){ n, ref, i, 0, &running };
		vs_co_spawn(vs_reactor_current(), conc_worker, &jobs[i]);
	}
	while (running)
		vs_co_yield_now();
	for (unsigned i = 0; i < 16; i++)
		if (jobs[i].ret < 0)
			c->ret = jobs[i].ret;
	vs_node_close(n);
	close(ref);
}

static void test_qcow2_concurrent_allocating_writes(void **state)
{
	static const char *const opts[] = { "", "cluster_size=4k", "extended_l2=on" };

	(void)state;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		struct rw_case c = { .opts = opts[i] };

		in_co(conc_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		if (sh("qemu-img check cc.qcow2") || sh("qemu-img compare cc.qcow2 cc.raw"))
			fail_msg("[%s] concurrent writes broke the image", opts[i]);
	}
}

struct open_case {
	const char *img;
	bool ro;
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

static void open_body(void *arg)
{
	struct open_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n = open_img(c->img, c->ro, &err);

	c->ret = n ? 0 : err.code;
	snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
	vs_node_close(n);
}

/* Set bits in the header of a qemu-img image with dd (offset, 8 bytes big-endian). */
static void test_qcow2_refuses_unknown_and_unsupported_features(void **state)
{
	struct open_case c;

	(void)state;
	/* Incompatible bit 5 named "fancy feature" in the feature table we add by hand. */
	assert_int_equal(sh("rm -f f.qcow2 && qemu-img create -f qcow2 f.qcow2 1M && "
			    "printf '\\000\\000\\000\\000\\000\\000\\000\\040' | "
			    "dd of=f.qcow2 bs=1 seek=72 conv=notrunc"),
			 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = true };
	in_co(open_body, &c);
	assert_int_equal(c.ret, -ENOTSUP);
	assert_non_null(strstr(c.msg, "20")); /* names the unknown bit */

	/* Corrupt bit: read-only is fine, read-write refused with the repair hint. */
	assert_int_equal(sh("rm -f f.qcow2 && qemu-img create -f qcow2 f.qcow2 1M && "
			    "printf '\\000\\000\\000\\000\\000\\000\\000\\002' | "
			    "dd of=f.qcow2 bs=1 seek=72 conv=notrunc"),
			 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = true };
	in_co(open_body, &c);
	assert_int_equal(c.ret, 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = false };
	in_co(open_body, &c);
	assert_true(c.ret < 0);
	assert_non_null(strstr(c.msg, "check -r all"));

	/* Encryption: legacy AES opens read-only only; LUKS needs its header extension. */
	assert_int_equal(
		sh("rm -f f.qcow2 && qemu-img create -f qcow2 f.qcow2 1M && "
		   "printf '\\000\\000\\000\\001' | dd of=f.qcow2 bs=1 seek=32 conv=notrunc"),
		0);
	c = (struct open_case){ .img = "f.qcow2", .ro = true };
	in_co(open_body, &c);
	assert_int_equal(c.ret, 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = false };
	in_co(open_body, &c);
	assert_int_equal(c.ret, -ENOTSUP);
	assert_non_null(strstr(c.msg, "AES-CBC"));
	assert_int_equal(sh("printf '\\000\\000\\000\\002' | dd of=f.qcow2 bs=1 seek=32 "
			    "conv=notrunc"),
			 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = true };
	in_co(open_body, &c);
	assert_int_equal(c.ret, -EINVAL);
	assert_non_null(strstr(c.msg, "header extension"));
	assert_int_equal(sh("printf '\\000\\000\\000\\003' | dd of=f.qcow2 bs=1 seek=32 "
			    "conv=notrunc"),
			 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = true };
	in_co(open_body, &c);
	assert_int_equal(c.ret, -EINVAL);
	assert_non_null(strstr(c.msg, "unsupported encryption method"));

	/* Unknown autoclear bits are cleared on read-write open. */
	assert_int_equal(sh("rm -f f.qcow2 && qemu-img create -f qcow2 f.qcow2 1M && "
			    "printf '\\000\\000\\000\\000\\000\\000\\000\\014' | "
			    "dd of=f.qcow2 bs=1 seek=88 conv=notrunc"),
			 0);
	c = (struct open_case){ .img = "f.qcow2", .ro = false };
	in_co(open_body, &c);
	assert_int_equal(c.ret, 0);
	assert_int_equal(sh("test \"$(od -An -tx1 -j88 -N8 f.qcow2 | tr -d ' \\n')\" = "
			    "0000000000000000"),
			 0);
}

/* An L2 entry that points at the L1 table: the write is refused and the image marked corrupt. */
static void overlap_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n = open_img("ov2.qcow2", false, &err);
	uint8_t buf[4096];

	if (!n) {
		c->ret = err.code;
		return;
	}
	memset(buf, 0xcc, sizeof(buf));
	c->ret = vs_node_pwrite(n, 0, buf, sizeof(buf), 0);
	vs_node_close(n);
}

static void test_qcow2_overlap_sets_corrupt_bit(void **state)
{
	struct rw_case c = { 0 };

	(void)state;
	/* Default layout: L1 at 0x30000, first L2 table at 0x40000. */
	assert_int_equal(sh("rm -f ov2.qcow2 && qemu-img create -f qcow2 ov2.qcow2 1M && "
			    "qemu-io -c 'write 0 64k' ov2.qcow2 && "
			    "printf '\\200\\000\\000\\000\\000\\003\\000\\000' | "
			    "dd of=ov2.qcow2 bs=1 seek=$((0x40000)) conv=notrunc"),
			 0);
	in_co(overlap_body, &c);
	assert_int_equal(c.ret, -EIO);
	assert_int_equal(sh("qemu-img info --output=json ov2.qcow2 | grep -F '\"corrupt\": true'"),
			 0);
	/* Still readable, and `qemu-img check -r all` repairs it. */
	expect_reads_like_qemu("ov2.qcow2");
}

/* A dirty lazy-refcounts image with a wrong refcount is repaired on read-write open. */
static void test_qcow2_dirty_image_repaired_on_open(void **state)
{
	struct open_case c = { .img = "d.qcow2" };

	(void)state;
	/* Refcount block at 0x20000 (16-bit entries): zero the refcount of cluster 5. */
	assert_int_equal(
		sh("rm -f d.qcow2 && qemu-img create -f qcow2 -o lazy_refcounts=on "
		   "d.qcow2 4M && qemu-io -c 'write -P 0x3c 0 1M' d.qcow2 && "
		   "qemu-img convert -O raw d.qcow2 d.raw && "
		   "printf '\\000\\000' | dd of=d.qcow2 bs=1 seek=$((0x20000 + 10)) "
		   "conv=notrunc && printf '\\001' | dd of=d.qcow2 bs=1 seek=79 conv=notrunc"),
		0);
	assert_int_not_equal(sh("qemu-img check d.qcow2"), 0);
	in_co(open_body, &c);
	if (c.ret < 0)
		fail_msg("%s", c.msg);
	assert_int_equal(sh("qemu-img check d.qcow2"), 0);
	assert_int_equal(sh("qemu-img compare d.qcow2 d.raw"), 0);
	assert_int_equal(
		sh("qemu-img info --output=json d.qcow2 | grep -F '\"dirty-flag\": false'"), 0);
}

struct trunc_case {
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

static void trunc_body(void *arg)
{
	struct trunc_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n;
	char p[128];
	int ref;

	sh("rm -f tr.qcow2 tr.raw && truncate -s 4M tr.raw");
	c->ret = create_img("tr.qcow2", 4u << 20, "cluster_size=4k", &err);
	n = c->ret == 0 ? open_img("tr.qcow2", false, &err) : NULL;
	if (!n) {
		c->ret = c->ret ? c->ret : err.code;
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		return;
	}
	path(p, sizeof(p), "tr.raw");
	ref = open(p, O_RDWR);
	c->ret = write_both(n, ref, 0, 4u << 20, 0x10);
	/* Shrink into the middle of a cluster, then grow past the old L1 coverage. */
	if (c->ret == 0)
		c->ret = vs_node_truncate(n, 3000 * 512, VS_PREALLOC_OFF, false, &err);
	if (c->ret == 0 && ftruncate(ref, 3000 * 512) < 0)
		c->ret = -errno;
	if (c->ret == 0)
		c->ret = vs_node_truncate(n, 64u << 20, VS_PREALLOC_OFF, false, &err);
	if (c->ret == 0 && ftruncate(ref, 64u << 20) < 0)
		c->ret = -errno;
	if (c->ret == 0)
		c->ret = write_both(n, ref, 60u << 20, 100000, 0x20);
	if (c->ret == 0)
		c->ret = vs_node_truncate(n, 72u << 20, VS_PREALLOC_FULL, false, &err);
	if (c->ret == 0 && ftruncate(ref, 72u << 20) < 0)
		c->ret = -errno;
	if (c->ret < 0)
		snprintf(c->msg, sizeof(c->msg), "%s", err.msg[0] ? err.msg : strerror(-c->ret));
	vs_node_close(n);
	close(ref);
}

static void test_qcow2_truncate_shrink_and_grow(void **state)
{
	struct trunc_case c = { 0 };

	(void)state;
	in_co(trunc_body, &c);
	if (c.ret < 0)
		fail_msg("%s", c.msg);
	assert_int_equal(sh("qemu-img check tr.qcow2"), 0);
	assert_int_equal(sh("qemu-img compare tr.qcow2 tr.raw"), 0);
}

static void bs_body(void *arg)
{
	struct rw_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n = open_img("bs.qcow2", true, &err);
	uint64_t pnum, map;
	unsigned st;
	struct vs_node *f;

	c->ret = n ? 0 : err.code;
	if (!n)
		return;
	/* 0..64k data, 64k..128k zero flag, compressed at 128k, then unallocated. */
	c->ret |= vs_node_block_status(n, 0, 1 << 20, &pnum, &st, &map, &f);
	if (pnum != 65536 || st != (VS_BS_DATA | VS_BS_ALLOCATED | VS_BS_OFFSET_VALID) ||
	    f != vs_node_file(n))
		c->ret = -1;
	c->ret |= vs_node_block_status(n, 65536, 1 << 20, &pnum, &st, &map, &f);
	if (pnum != 65536 || st != (VS_BS_ZERO | VS_BS_ALLOCATED))
		c->ret = -2;
	c->ret |= vs_node_block_status(n, 131072, 1 << 20, &pnum, &st, &map, &f);
	if (pnum != 65536 || !(st & VS_BS_COMPRESSED) || (st & VS_BS_OFFSET_VALID))
		c->ret = -3;
	c->ret |= vs_node_block_status(n, 196608, 1 << 20, &pnum, &st, &map, &f);
	if (st & VS_BS_ALLOCATED)
		c->ret = -4;
	vs_node_close(n);
}

static void test_qcow2_block_status(void **state)
{
	struct rw_case c = { 0 };

	(void)state;
	assert_int_equal(sh("rm -f bs.qcow2 && qemu-img create -f qcow2 bs.qcow2 1M && "
			    "qemu-io -c 'write 0 64k' -c 'write -z 64k 64k' -c 'write -c 128k 64k' "
			    "bs.qcow2"),
			 0);
	in_co(bs_body, &c);
	assert_int_equal(c.ret, 0);
}

/*
 * Emptying an overlay (what commit does): the image is open without its
 * backing file, so discarded clusters become unallocated. Until the L2
 * tables are on disk, the image on disk (what a killed process leaves)
 * must read each cluster's old data or the backing file's, never zeroes:
 * freed clusters are punched only after the metadata is flushed.
 */
struct empty_case {
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

static void empty_body(void *arg)
{
	struct empty_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_open_opts o = { 0 };
	struct vs_node *n = NULL;
	char p[128];

	path(p, sizeof(p), "ov.qcow2");
	o.filename = p;
	o.no_backing = true;
	c->ret = vs_image_open(&n, &o, &err);
	if (c->ret < 0) {
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		return;
	}
	c->ret = vs_node_discard(n, 0, vs_node_size(n));
	/* The state a kill -9 would leave: the file as the page cache holds it. */
	if (c->ret == 0 && sh("cp ov.qcow2 crash.qcow2"))
		c->ret = -EIO;
	if (c->ret < 0)
		snprintf(c->msg, sizeof(c->msg), "discard: %s", strerror(-c->ret));
	vs_node_close(n);
}

static void test_qcow2_emptied_overlay_never_reads_zeroes(void **state)
{
	struct empty_case c = { 0 };

	(void)state;
	assert_int_equal(sh("rm -f base.qcow2 ov.qcow2 crash.qcow2 && "
			    "qemu-img create -q -f qcow2 base.qcow2 4M && "
			    "qemu-io -c 'write -P 0x77 0 4M' base.qcow2 >/dev/null && "
			    "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2 && "
			    "qemu-io -c 'write -P 0x55 0 4M' ov.qcow2 >/dev/null"),
			 0);
	in_co(empty_body, &c);
	if (c.ret < 0)
		fail_msg("%s", c.msg);
	if (sh("qemu-img convert -O raw crash.qcow2 crash.raw && python3 -c '"
	       "import sys; d = open(\"crash.raw\", \"rb\").read(); "
	       "ok = all(d[i:i + 65536] in (b\"\\x55\" * 65536, b\"\\x77\" * 65536) "
	       "for i in range(0, len(d), 65536)); sys.exit(0 if ok else 1)'"))
		fail_msg("the image as a crash leaves it reads neither its data nor the backing's");
	/* Closed: empty, reads the backing file, and the clusters were given back. */
	if (sh("qemu-img check -q ov.qcow2 && qemu-img compare -q ov.qcow2 base.qcow2"))
		fail_msg("the emptied overlay does not read its backing file");
	if (sh("test $(du -k ov.qcow2 | cut -f1) -lt 1024"))
		fail_msg("the freed clusters were not punched");
}

int main(void)
{
	const struct CMUnitTest unit[] = {
		cmocka_unit_test(test_format_header_roundtrip),
		cmocka_unit_test(test_format_header_rejects_bad_fields),
		cmocka_unit_test(test_format_header_size_limits),
		cmocka_unit_test(test_refcount_entry_widths),
		cmocka_unit_test(test_compress_roundtrip_with_padding),
		cmocka_unit_test(test_compress_skips_only_incompressible),
	};
	const struct CMUnitTest qemu[] = {
		cmocka_unit_test(test_qcow2_writes_pass_qemu_check_and_compare),
		cmocka_unit_test(test_qcow2_create_matches_qemu_info),
		cmocka_unit_test(test_qcow2_create_rejects_what_qemu_rejects),
		cmocka_unit_test(test_qcow2_reads_what_qemu_writes),
		cmocka_unit_test(test_qcow2_cow_keeps_internal_snapshot),
		cmocka_unit_test(test_qcow2_backing_chain_cow),
		cmocka_unit_test(test_qcow2_concurrent_allocating_writes),
		cmocka_unit_test(test_qcow2_refuses_unknown_and_unsupported_features),
		cmocka_unit_test(test_qcow2_overlap_sets_corrupt_bit),
		cmocka_unit_test(test_qcow2_dirty_image_repaired_on_open),
		cmocka_unit_test(test_qcow2_truncate_shrink_and_grow),
		cmocka_unit_test(test_qcow2_block_status),
		cmocka_unit_test(test_qcow2_emptied_overlay_never_reads_zeroes),
	};
	int fails;

	vs_set_warn_handler(NULL, NULL);
	fails = cmocka_run_group_tests_name("qcow2-unit", unit, NULL, NULL);
	if (system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		if (!getenv("CI"))
			return fails ? 1 : 77;
		fprintf(stderr, "qemu-img/qemu-io missing but CI is set\n");
		return 1;
	}
	fails += cmocka_run_group_tests_name("qcow2-qemu", qemu, setup_tmp, teardown_tmp);
	return fails ? 1 : 0;
}
