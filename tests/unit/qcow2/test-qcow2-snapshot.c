/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots made and deleted by the qcow2 driver against QEMU as
 * the oracle: `qemu-img snapshot -l` lists vstor's snapshots, `qemu-img
 * check` stays clean, `qemu-img convert -l` of each snapshot equals the data
 * at snapshot time while the active image goes on changing, and deleting
 * snapshots made by either side leaves a clean image.
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

struct sn_case {
	const char *opts;
	int step;
	int ret;
	char msg[VS_ERROR_MSG_MAX + 64];
};

#define SN_SIZE (4u << 20)

/* Write a pattern to the image and the raw reference (compressed if asked). */
static int write_both(struct vs_node *n, int ref, uint64_t off, uint64_t len, uint8_t v,
		      bool compressed)
{
	uint8_t *buf = vs_buf_alloc(len);
	struct iovec iv = { buf, len };
	int ret;

	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(v + i / 512);
	if (compressed)
		ret = vs_node_pwritev_compressed(n, off, len, &iv, 1);
	else
		ret = vs_node_pwrite(n, off, buf, len, 0);
	if (ret == 0 && pwrite(ref, buf, len, (off_t)off) != (ssize_t)len)
		ret = -EIO;
	free(buf);
	return ret;
}

static int snap(struct vs_node *n, const char *name, const char *copy_to, struct vs_error *err)
{
	int ret = vs_node_snapshot_create(n, name, NULL, err);

	if (ret == 0 && copy_to && sh("cp active.raw %s", copy_to))
		ret = -EIO;
	return ret;
}

static void sn_body(void *arg)
{
	struct sn_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n;
	uint64_t cs;
	char p[128];
	int ref, ret = 0;

	path(p, sizeof(p), "active.raw");
	if (c->step == 0) {
		sh("rm -f sn.qcow2 *.raw");
		c->ret = create_img("sn.qcow2", SN_SIZE, c->opts, &err);
		if (c->ret < 0) {
			snprintf(c->msg, sizeof(c->msg), "create: %s", err.msg);
			return;
		}
		ref = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (ref >= 0 && ftruncate(ref, SN_SIZE) < 0) {
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
	n = open_img("sn.qcow2", false, &err);
	if (!n) {
		c->ret = err.code;
		snprintf(c->msg, sizeof(c->msg), "open: %s", err.msg);
		close(ref);
		return;
	}
	cs = vs_node_cluster_size(n);
	if (c->step == 0) {
		/* Data, a compressed cluster, zeroes; then snapshots between changes. */
		ret = write_both(n, ref, 0, 3 * cs + 1024, 1, false);
		if (ret == 0)
			ret = write_both(n, ref, 8 * cs, cs, 2, true);
		if (ret == 0)
			ret = write_both(n, ref, SN_SIZE - 2 * cs, 2 * cs, 3, false);
		if (ret == 0)
			ret = snap(n, "s1", "s1.raw", &err);
		if (ret == 0 && vs_node_snapshot_create(n, "s1", NULL, &err) != -EEXIST)
			ret = -EPROTO;
		/* Overwrites of shared clusters: partial, whole, compressed. */
		if (ret == 0)
			ret = write_both(n, ref, 512, 1024, 4, false);
		if (ret == 0)
			ret = write_both(n, ref, 8 * cs, cs, 5, false);
		if (ret == 0)
			ret = write_both(n, ref, 2 * cs, cs, 6, true);
		if (ret == 0)
			ret = write_both(n, ref, SN_SIZE / 2, 3 * cs, 7, false);
		if (ret == 0)
			ret = snap(n, "s2", "s2.raw", &err);
		if (ret == 0)
			ret = write_both(n, ref, 0, cs, 8, false);
		if (ret == 0)
			ret = write_both(n, ref, SN_SIZE / 2 + cs, cs, 9, false);
	} else if (c->step == 2) {
		/* The last snapshot: every active cluster must get COPIED back. */
		ret = vs_node_snapshot_delete(n, "s2", &err);
		if (ret == 0)
			ret = write_both(n, ref, 3 * cs, cs, 13, false);
	} else {
		/* q1 was made by qemu-img; delete it and s1 (by id), keep s2. */
		ret = vs_node_snapshot_delete(n, "q1", &err);
		if (ret == 0)
			ret = write_both(n, ref, cs, cs, 10, false);
		if (ret == 0)
			ret = vs_node_snapshot_delete(n, "1", &err);
		if (ret == 0 && vs_node_snapshot_delete(n, "s1", &err) != -ENOENT)
			ret = -EPROTO;
		if (ret == 0)
			ret = write_both(n, ref, SN_SIZE / 2, 2 * cs, 11, false);
		if (ret == 0)
			ret = snap(n, "s3", "s3.raw", &err);
		if (ret == 0)
			ret = write_both(n, ref, 0, 4 * cs, 12, false);
	}
	if (ret == 0)
		ret = vs_node_flush(n);
	vs_node_close(n);
	close(ref);
	c->ret = ret;
	if (ret < 0)
		snprintf(c->msg, sizeof(c->msg), "step %d: %s (%s)", c->step, strerror(-ret),
			 err.msg);
}

static void expect_snapshot(const char *opts, const char *name, const char *raw)
{
	if (sh("qemu-img snapshot -l sn.qcow2 | grep -qw %s", name))
		fail_msg("[%s] qemu-img snapshot -l does not list %s", opts, name);
	if (sh("rm -f out.raw && qemu-img convert -l snapshot.name=%s -O raw sn.qcow2 out.raw && "
	       "cmp out.raw %s",
	       name, raw))
		fail_msg("[%s] snapshot %s differs from its data at snapshot time", opts, name);
}

static void expect_clean(const char *opts, int step)
{
	if (sh("qemu-img check sn.qcow2"))
		fail_msg("[%s] step %d: qemu-img check failed", opts, step);
	if (sh("qemu-img compare -f qcow2 -F raw sn.qcow2 active.raw"))
		fail_msg("[%s] step %d: active image differs from the reference", opts, step);
}

static void test_qcow2_snapshots_against_qemu(void **state)
{
	static const char *const opts[] = {
		"",
		"compat=0.10",
		"compression_type=zstd,cluster_size=4k,refcount_bits=4",
		"extended_l2=on,cluster_size=16k",
		"lazy_refcounts=on",
		"cluster_size=512",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		struct sn_case c = { .opts = opts[i] };

		in_co(sn_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		expect_clean(opts[i], 0);
		expect_snapshot(opts[i], "s1", "s1.raw");
		expect_snapshot(opts[i], "s2", "s2.raw");
		if (sh("qemu-img snapshot -c q1 sn.qcow2"))
			fail_msg("[%s] qemu-img snapshot -c failed", opts[i]);

		c.step = 1;
		in_co(sn_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		expect_clean(opts[i], 1);
		expect_snapshot(opts[i], "s2", "s2.raw");
		expect_snapshot(opts[i], "s3", "s3.raw");
		if (!sh("qemu-img snapshot -l sn.qcow2 | grep -qw -e s1 -e q1"))
			fail_msg("[%s] deleted snapshots still listed", opts[i]);
		/* QEMU deletes one vstor made, vstor the last one. */
		if (sh("qemu-img snapshot -d s3 sn.qcow2 && qemu-img check sn.qcow2"))
			fail_msg("[%s] qemu-img could not delete vstor's snapshot", opts[i]);
		c.step = 2;
		in_co(sn_body, &c);
		if (c.ret < 0)
			fail_msg("[%s] %s", opts[i], c.msg);
		expect_clean(opts[i], 2);
		if (!sh("qemu-img info sn.qcow2 | grep -q 'Snapshot list'"))
			fail_msg("[%s] snapshots left after deleting all", opts[i]);
	}
}

static void full_body(void *arg)
{
	struct sn_case *c = arg;
	struct vs_error err = { 0 };
	struct vs_node *n;

	sh("rm -f sn.qcow2 && qemu-img create -f qcow2 -o refcount_bits=1 sn.qcow2 1M && "
	   "qemu-io -c 'write -P 1 0 128k' sn.qcow2");
	n = open_img("sn.qcow2", false, &err);
	if (!n) {
		c->ret = err.code;
		return;
	}
	c->ret = vs_node_snapshot_create(n, "x", NULL, &err);
	vs_node_close(n);
}

/* With 1-bit refcounts no cluster can be shared: refused, image unchanged. */
static void test_qcow2_snapshot_refcount_too_narrow(void **state)
{
	struct sn_case c = { .opts = "refcount_bits=1" };

	(void)state;
	in_co(full_body, &c);
	assert_int_equal(c.ret, -ERANGE);
	assert_int_equal(sh("qemu-img check sn.qcow2"), 0);
	assert_int_not_equal(sh("qemu-img snapshot -l sn.qcow2 | grep -qw x"), 0);
}

int main(void)
{
	const struct CMUnitTest qemu[] = {
		cmocka_unit_test(test_qcow2_snapshots_against_qemu),
		cmocka_unit_test(test_qcow2_snapshot_refcount_too_narrow),
	};

	vs_set_warn_handler(NULL, NULL);
	if (system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		if (!getenv("CI"))
			return 77;
		fprintf(stderr, "qemu-img/qemu-io missing but CI is set\n");
		return 1;
	}
	return cmocka_run_group_tests_name("qcow2-snapshot", qemu, setup_tmp, teardown_tmp) ? 1 : 0;
}
