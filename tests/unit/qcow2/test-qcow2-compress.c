/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Compressed writes of the qcow2 driver (VS_REQ_COMPRESSED) against QEMU as
 * the oracle: for zlib and zstd images, compressible and incompressible
 * clusters and a short last cluster read back the same through vstor, the
 * image passes `qemu-img check`, compares equal to a raw reference, and
 * `qemu-img map` reports the compressed clusters as data; normal and
 * compressed overwrites of compressed clusters keep it so.
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
/* ---- cases ---- */

struct cw_case {
	const char *opts;
	uint64_t size; /* not a multiple of the cluster size: the last cluster is short */
	int step;      /* 0: first pass; 1: overwrites */
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

/* Fill @len bytes: compressible text, or incompressible pseudo-random bytes. */
static void fill(uint8_t *buf, uint64_t len, bool random, unsigned seed)
{
	for (uint64_t i = 0; i < len; i++) {
		if (random) {
			seed = seed * 1103515245 + 12345;
			buf[i] = (uint8_t)(seed >> 16);
		} else {
			buf[i] = (uint8_t)("vstor compressed cluster "[i % 25] + seed);
		}
	}
}

/* Write [off, off+len) to the image (compressed or not) and the raw reference. */
static int write_both(struct vs_node *n, int ref, uint64_t off, uint64_t len, bool random,
		      unsigned seed, bool compressed)
{
	uint8_t *buf = vs_buf_alloc(len), *back = vs_buf_alloc(len);
	struct iovec v = { buf, len };
	int ret;

	if (!buf || !back) {
		free(buf);
		free(back);
		return -ENOMEM;
	}
	fill(buf, len, random, seed);
	if (compressed)
		ret = vs_node_pwritev_compressed(n, off, len, &v, 1);
	else
		ret = vs_node_pwrite(n, off, buf, len, 0);
	if (ret == 0 && pwrite(ref, buf, len, (off_t)off) != (ssize_t)len)
		ret = -EIO;
	/* Read back through vstor at once: the cache and the file must agree. */
	if (ret == 0)
		ret = vs_node_pread(n, off, back, len);
	if (ret == 0 && memcmp(buf, back, len))
		ret = -EILSEQ;
	free(buf);
	free(back);
	return ret;
}

/* Read the whole image through vstor and compare with the reference file. */
static int compare_ref(struct vs_node *n, int ref, uint64_t size)
{
	uint8_t *a = malloc(size), *b = vs_buf_alloc(size);
	int ret;

	if (!a || !b) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vs_node_pread(n, 0, b, size);
	if (ret == 0 && pread(ref, a, size, 0) != (ssize_t)size)
		ret = -EIO;
	if (ret == 0 && memcmp(a, b, size))
		ret = -EILSEQ;
out:
	free(a);
	free(b);
	return ret;
}

static void cw_body(void *arg)
{
	struct cw_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n = NULL;
	uint64_t cs;
	char p[128];
	int ref, ret = 0;

	path(p, sizeof(p), "cw.raw");
	if (c->step == 0) {
		sh("rm -f cw.qcow2 cw.raw");
		c->ret = create_img("cw.qcow2", c->size, c->opts, &err);
		if (c->ret < 0) {
			snprintf(c->msg, sizeof(c->msg), "create: %s", err.msg);
			return;
		}
		ref = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (ref >= 0 && ftruncate(ref, (off_t)c->size) < 0) {
			close(ref);
			ref = -1;
		}
	} else {
		ref = open(p, O_RDWR);
	}
	if (ref < 0) {
		c->ret = -errno;
		snprintf(c->msg, sizeof(c->msg), "reference: %s", strerror(errno));
		return;
	}
	n = open_img("cw.qcow2", false, &err);
	if (!n) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		close(ref);
		return;
	}
	cs = vs_node_cluster_size(n);
	if (c->step == 0) {
		uint64_t last = (c->size - 1) & ~(cs - 1);

		/* A normal cluster first, so that a compressed write replaces its storage. */
		ret = write_both(n, ref, 3 * cs, cs, true, 7, false);
		/* Compressible, incompressible, and a run of both in one request. */
		if (ret == 0)
			ret = write_both(n, ref, 0, cs, false, 1, true);
		if (ret == 0)
			ret = write_both(n, ref, cs, cs, true, 2, true);
		if (ret == 0)
			ret = write_both(n, ref, 2 * cs, 4 * cs, false, 3, true);
		if (ret == 0)
			ret = write_both(n, ref, 6 * cs, 2 * cs, true, 4, true);
		/* Past the first L2 table when clusters are small. */
		if (ret == 0 && last - 8 * cs > 3 * cs)
			ret = write_both(n, ref, last - 3 * cs, 2 * cs, false, 5, true);
		/* The short last cluster. */
		if (ret == 0)
			ret = write_both(n, ref, last, c->size - last, false, 6, true);
		/* Misaligned requests are refused by the generic layer. */
		if (ret == 0) {
			uint8_t *b = vs_buf_zalloc(cs);
			struct iovec v = { b, cs };

			if (vs_node_pwritev_compressed(n, cs / 2, cs, &v, 1) != -EINVAL)
				ret = -EPROTO;
			free(b);
		}
	} else {
		/* Partial normal overwrite of a compressed cluster: copy-on-write. */
		ret = write_both(n, ref, 2 * cs + (cs > 4096 ? 1024 : 0), cs / 2, true, 9, false);
		/* A whole compressed cluster overwritten normally, then compressed again. */
		if (ret == 0)
			ret = write_both(n, ref, 4 * cs, cs, true, 10, false);
		if (ret == 0)
			ret = write_both(n, ref, 4 * cs, cs, false, 11, true);
		/* Compressed over compressed, and over an uncompressed cluster. */
		if (ret == 0)
			ret = write_both(n, ref, 5 * cs, cs, false, 12, true);
		if (ret == 0)
			ret = write_both(n, ref, cs, cs, false, 13, true);
	}
	if (ret == 0)
		ret = compare_ref(n, ref, c->size);
	if (ret == 0)
		ret = vs_node_flush(n);
	vs_node_close(n);
	close(ref);
	c->ret = ret;
	if (ret < 0)
		snprintf(c->msg, sizeof(c->msg), "step %d: %s", c->step, strerror(-ret));
}

static void test_qcow2_write_compressed_against_qemu(void **state)
{
	static const struct {
		const char *opts;
		uint64_t size;
	} cases[] = {
		{ "", (8u << 20) + 3 * 512 },
		{ "compression_type=zstd", (8u << 20) + 4096 },
		{ "compression_type=zlib,cluster_size=4k,refcount_bits=1", (4u << 20) + 512 },
		{ "compression_type=zstd,cluster_size=512", (1u << 20) + 0 },
		{ "extended_l2=on,cluster_size=16k,compression_type=zstd", (2u << 20) + 1024 },
		{ "compat=0.10,cluster_size=2M", (18u << 20) + 512 },
		{ "lazy_refcounts=on", (3u << 20) + 512 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int step = 0; step < 2; step++) {
			struct cw_case c = { .opts = cases[i].opts,
					     .size = cases[i].size,
					     .step = step };

			in_co(cw_body, &c);
			if (c.ret < 0)
				fail_msg("[%s] %s", cases[i].opts, c.msg);
			if (sh("qemu-img check cw.qcow2"))
				fail_msg("[%s] step %d: qemu-img check failed", cases[i].opts,
					 step);
			if (sh("qemu-img compare -f qcow2 -F raw cw.qcow2 cw.raw"))
				fail_msg("[%s] step %d: content differs from the reference",
					 cases[i].opts, step);
			/*
			 * The first cluster was written compressed and stays so:
			 * qemu-img 7.2 maps compressed data without a host offset.
			 */
			if (sh("qemu-img map --output=json cw.qcow2 | head -1 | grep -F "
			       "'\"start\": 0,' | grep -F '\"data\": true' | grep -vF "
			       "'\"offset\"'"))
				fail_msg("[%s] step %d: qemu-img map does not show cluster 0 "
					 "compressed",
					 cases[i].opts, step);
			if (step == 0 && sh("qemu-img check --output=json cw.qcow2 | grep -E "
					    "'\"compressed-clusters\": [1-9]'"))
				fail_msg("[%s] no compressed clusters counted", cases[i].opts);
		}
	}
}

int main(void)
{
	const struct CMUnitTest qemu[] = {
		cmocka_unit_test(test_qcow2_write_compressed_against_qemu),
	};

	vs_set_warn_handler(NULL, NULL);
	if (system("qemu-img --version >/dev/null 2>&1")) {
		if (!getenv("CI"))
			return 77;
		fprintf(stderr, "qemu-img missing but CI is set\n");
		return 1;
	}
	return cmocka_run_group_tests_name("qcow2-compress", qemu, setup_tmp, teardown_tmp) ? 1 : 0;
}
