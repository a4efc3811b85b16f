/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent dirty bitmaps of the qcow2 driver: the marking of the data
 * path at granule and byte edges (in memory), and bitmaps whose bits span
 * several table clusters stored on close and read back, in-memory bitmaps
 * that never reach the image, with qemu-img check as the oracle of the
 * image's consistency.
 *
 * The second case exits 77 (skip) when qemu-img is missing, unless CI is set.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qcow2-test-util.h"

#include "driver.h"
#include "qcow2.h"

static bool bit(const struct qcow2_bitmap *bm, uint64_t i)
{
	return bm->data[i / 8] & (1u << (i % 8));
}

/* Bits [first, last] set and no other. */
static void assert_only(const struct qcow2_bitmap *bm, uint64_t first, uint64_t last)
{
	for (uint64_t i = 0; i < bm->nbits; i++)
		assert_int_equal(bit(bm, i), i >= first && i <= last);
}

static void test_qcow2_bitmap_mark_edges(void **state)
{
	static const struct {
		uint64_t off, len, first, last;
	} cases[] = {
		{ 0, 1, 0, 0 },		      /* one byte: its granule */
		{ 511, 2, 0, 1 },	      /* across a granule edge */
		{ 512, 512, 1, 1 },	      /* exactly one granule */
		{ 3 * 512, 6 * 512, 3, 8 },   /* across a byte of bits */
		{ 8 * 512, 8 * 512, 8, 15 },  /* exactly one byte of bits */
		{ 5 * 512, 40 * 512, 5, 44 }, /* partial, whole and partial bytes */
		{ 99 * 512, 4096, 99, 99 },   /* past the end: clipped to the last bit */
		{ 100 * 512, 512, 1, 0 },     /* wholly past the end: nothing */
	};
	struct qcow2_bitmap bms[2];
	struct qcow2_bitmaps b;

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		memset(&b, 0, sizeof(b));
		memset(bms, 0, sizeof(bms));
		for (int i = 0; i < 2; i++) {
			bms[i].gran_bits = 9;
			bms[i].nbits = 100;
			bms[i].data = calloc(13, 1);
			assert_non_null(bms[i].data);
		}
		bms[0].flags = QCOW2_BME_FLAG_AUTO; /* enabled */
		b.bm = bms;
		b.nb = 2;
		b.nb_tracking = 1;
		qcow2_bitmaps_mark(&b, cases[c].off, cases[c].len);
		assert_only(&bms[0], cases[c].first, cases[c].last);
		assert_only(&bms[1], 1, 0); /* disabled: untouched */
		free(bms[0].data);
		free(bms[1].data);
	}
}

struct store_case {
	int ret;
	char msg[VS_ERROR_MSG_MAX];
};

/* 4 MiB, 512-byte clusters and granules: 8192 bits in two table clusters. */
static void store_body(void *opaque)
{
	struct store_case *c = opaque;
	struct vs_bitmap_op add = { .action = VS_BITMAP_ADD, .name = "b", .granularity = 512 };
	struct vs_error err = { 0 };
	struct qcow2_bitmap *bm;
	struct vs_node *n;
	uint8_t buf[512] = { 1 };

	c->ret = create_img("s.qcow2", 4u << 20, "cluster_size=512", &err);
	if (c->ret == 0) {
		n = open_img("s.qcow2", false, &err);
		c->ret = n ? vs_node_bitmap(n, &add, &err) : -EIO;
		/* Only the second half of the bits: the first table entry stays zero. */
		if (c->ret == 0)
			c->ret = vs_node_pwrite(n, 3u << 20, buf, sizeof(buf), 0);
		if (c->ret == 0)
			c->ret = vs_node_pwrite(n, (4u << 20) - 1, buf, 1, 0);
		vs_node_close(n);
	}
	if (c->ret == 0 && sh("qemu-img check -q s.qcow2"))
		c->ret = -EUCLEAN;
	if (c->ret == 0) {
		n = open_img("s.qcow2", false, &err);
		if (!n) {
			c->ret = -EIO;
		} else {
			bm = &qcow2_state(n)->bitmaps.bm[0];
			c->ret = qcow2_state(n)->bitmaps.nb == 1 && bm->nbits == 8192 &&
						 bm->table_size == 2 ?
					 0 :
					 -EINVAL;
			for (uint64_t i = 0; c->ret == 0 && i < bm->nbits; i++)
				if (bit(bm, i) != (i == 6144 || i == 8191))
					c->ret = -EBADMSG;
			vs_node_close(n);
		}
	}
	snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
}

static void test_qcow2_bitmap_stored_across_tables(void **state)
{
	struct store_case c = { 0 };

	(void)state;
	in_co(store_body, &c);
	if (c.ret)
		fprintf(stderr, "ret %d: %s\n", c.ret, c.msg);
	assert_int_equal(c.ret, 0);
}

/*
 * An in-memory (transient) bitmap beside a persistent one: both mark
 * writes and are listed newest first with their counts; only the
 * persistent one reaches the image; an image with only transient ones is
 * left without a bitmaps extension.
 */
static void transient_body(void *opaque)
{
	struct store_case *c = opaque;
	struct vs_bitmap_op add_p = { .action = VS_BITMAP_ADD, .name = "p", .granularity = 4096 };
	struct vs_bitmap_op add_t = {
		.action = VS_BITMAP_ADD, .name = "t", .granularity = 65536, .transient = true
	};
	struct vs_error err = { 0 };
	struct vs_dirty_bitmap_info *list = NULL;
	struct vs_node *n;
	uint8_t buf[512] = { 1 };
	unsigned nb = 0;

	c->ret = create_img("t.qcow2", 4u << 20, NULL, &err);
	if (c->ret == 0)
		c->ret = create_img("only-t.qcow2", 4u << 20, NULL, &err);
	if (c->ret)
		goto out;
	n = open_img("t.qcow2", false, &err);
	c->ret = n ? vs_node_bitmap(n, &add_p, &err) : -EIO;
	if (c->ret == 0)
		c->ret = vs_node_bitmap(n, &add_t, &err);
	if (c->ret == 0)
		c->ret = vs_node_pwrite(n, 4096 - 1, buf, 2, 0); /* 2 granules of p, 1 of t */
	if (c->ret == 0)
		c->ret = vs_node_dirty_bitmaps(n, &list, &nb);
	if (c->ret == 0 &&
	    (nb != 2 || strcmp(list[0].name, "t") || list[0].persistent || list[0].count != 65536 ||
	     !list[0].recording || strcmp(list[1].name, "p") || !list[1].persistent ||
	     list[1].count != 2 * 4096))
		c->ret = -EBADMSG;
	free(list);
	vs_node_close(n);
	if (c->ret)
		goto out;
	n = open_img("t.qcow2", false, &err);
	c->ret = n ? vs_node_dirty_bitmaps(n, &list, &nb) : -EIO;
	if (c->ret == 0 && (nb != 1 || strcmp(list[0].name, "p") || list[0].count != 2 * 4096))
		c->ret = -ENOENT;
	free(list);
	vs_node_close(n);
	if (c->ret)
		goto out;
	n = open_img("only-t.qcow2", false, &err);
	add_t.name = "only";
	c->ret = n ? vs_node_bitmap(n, &add_t, &err) : -EIO;
	if (c->ret == 0)
		c->ret = vs_node_pwrite(n, 0, buf, sizeof(buf), 0);
	vs_node_close(n);
	if (c->ret == 0 &&
	    (sh("qemu-img check -q t.qcow2") || sh("qemu-img check -q only-t.qcow2")))
		c->ret = -EUCLEAN;
	if (c->ret == 0 && !sh("qemu-img info only-t.qcow2 | grep -q bitmaps"))
		c->ret = -EEXIST;
out:
	snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
}

static void test_qcow2_bitmap_transient_never_stored(void **state)
{
	struct store_case c = { 0 };

	(void)state;
	in_co(transient_body, &c);
	if (c.ret)
		fprintf(stderr, "ret %d: %s\n", c.ret, c.msg);
	assert_int_equal(c.ret, 0);
}

int main(void)
{
	const struct CMUnitTest memory[] = {
		cmocka_unit_test(test_qcow2_bitmap_mark_edges),
	};
	const struct CMUnitTest qemu[] = {
		cmocka_unit_test(test_qcow2_bitmap_stored_across_tables),
		cmocka_unit_test(test_qcow2_bitmap_transient_never_stored),
	};
	int failed;

	vs_set_warn_handler(NULL, NULL);
	failed = cmocka_run_group_tests_name("qcow2-bitmap", memory, NULL, NULL);
	if (system("qemu-img --version >/dev/null 2>&1")) {
		if (!getenv("CI"))
			return failed ? 1 : 77;
		fprintf(stderr, "qemu-img missing but CI is set\n");
		return 1;
	}
	failed += cmocka_run_group_tests_name("qcow2-bitmap-qemu", qemu, setup_tmp, teardown_tmp);
	return failed ? 1 : 0;
}
