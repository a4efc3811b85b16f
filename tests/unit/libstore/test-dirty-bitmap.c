/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the in-memory dirty bitmaps (dirty-bitmap.c): rounding of
 * set and clear, the dirty runs and the count, the bounds; and the hook on
 * a node's write path (writes, write-zeroes and discards mark the attached
 * bitmaps, reads do not, a detached bitmap is left alone); and the
 * before-write hook on the same path (called before each change, with
 * the old data still readable).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "co-test.h"
#include "vstor/dirty-bitmap.h"
#include "vstor/node.h"

static void test_dirty_bitmap_new_rejects_bad_granularity(void **state)
{
	struct vs_dirty_bitmap *bm;

	(void)state;
	assert_int_equal(vs_dirty_bitmap_new(1 << 20, 0, &bm), -EINVAL);
	assert_int_equal(vs_dirty_bitmap_new(1 << 20, 256, &bm), -EINVAL);
	assert_int_equal(vs_dirty_bitmap_new(1 << 20, 3 << 12, &bm), -EINVAL);
	assert_int_equal(vs_dirty_bitmap_new(1 << 20, 1ull << 31, &bm), -EINVAL);
	assert_int_equal(vs_dirty_bitmap_new(1 << 20, 4096, &bm), 0);
	assert_int_equal(vs_dirty_bitmap_granularity(bm), 4096);
	assert_int_equal(vs_dirty_bitmap_size(bm), 1 << 20);
	assert_int_equal(vs_dirty_bitmap_count(bm), 0);
	vs_dirty_bitmap_free(bm);
	vs_dirty_bitmap_free(NULL);
}

static void test_dirty_bitmap_set_rounds_out_clear_rounds_out(void **state)
{
	struct vs_dirty_bitmap *bm;
	uint64_t s, l;

	(void)state;
	assert_int_equal(vs_dirty_bitmap_new(1 << 20, 4096, &bm), 0);
	vs_dirty_bitmap_set(bm, 4095, 2); /* touches granules 0 and 1 */
	assert_true(vs_dirty_bitmap_get(bm, 0));
	assert_true(vs_dirty_bitmap_get(bm, 8191));
	assert_false(vs_dirty_bitmap_get(bm, 8192));
	assert_int_equal(vs_dirty_bitmap_count(bm), 8192);
	assert_true(vs_dirty_bitmap_next_dirty(bm, 0, 0, &s, &l));
	assert_int_equal(s, 0);
	assert_int_equal(l, 8192);
	vs_dirty_bitmap_clear(bm, 100, 1); /* clears the whole granule 0 */
	assert_false(vs_dirty_bitmap_get(bm, 0));
	assert_int_equal(vs_dirty_bitmap_count(bm), 4096);
	vs_dirty_bitmap_set(bm, 4096, 4096); /* already set: the count stays */
	assert_int_equal(vs_dirty_bitmap_count(bm), 4096);
	vs_dirty_bitmap_set(bm, 0, 0); /* empty: nothing */
	assert_int_equal(vs_dirty_bitmap_count(bm), 4096);
	vs_dirty_bitmap_free(bm);
}

static void test_dirty_bitmap_runs_across_words(void **state)
{
	struct vs_dirty_bitmap *bm;
	uint64_t s, l;

	(void)state;
	/* 1000 granules of 512 bytes, the last one short. */
	assert_int_equal(vs_dirty_bitmap_new(1000 * 512 - 100, 512, &bm), 0);
	vs_dirty_bitmap_set(bm, 60 * 512, 10 * 512); /* granules 60..69, across a word */
	vs_dirty_bitmap_set(bm, 200 * 512, 512);
	vs_dirty_bitmap_set(bm, 999 * 512, 1 << 20); /* clipped to the size */
	assert_int_equal(vs_dirty_bitmap_count(bm), 11 * 512 + 412);
	assert_true(vs_dirty_bitmap_next_dirty(bm, 0, 0, &s, &l));
	assert_int_equal(s, 60 * 512);
	assert_int_equal(l, 10 * 512);
	assert_true(vs_dirty_bitmap_next_dirty(bm, 0, 3 * 512 + 100, &s, &l));
	assert_int_equal(s, 60 * 512);
	assert_int_equal(l, 3 * 512); /* whole granules within max_len */
	assert_true(vs_dirty_bitmap_next_dirty(bm, 0, 100, &s, &l));
	assert_int_equal(l, 512); /* at least one */
	assert_true(vs_dirty_bitmap_next_dirty(bm, 70 * 512, 0, &s, &l));
	assert_int_equal(s, 200 * 512);
	assert_true(vs_dirty_bitmap_next_dirty(bm, 201 * 512, 0, &s, &l));
	assert_int_equal(s, 999 * 512);
	assert_int_equal(l, 412);
	assert_false(vs_dirty_bitmap_next_dirty(bm, 1000 * 512, 0, &s, &l));
	vs_dirty_bitmap_clear(bm, 0, 1 << 30);
	assert_int_equal(vs_dirty_bitmap_count(bm), 0);
	assert_false(vs_dirty_bitmap_next_dirty(bm, 0, 0, &s, &l));
	vs_dirty_bitmap_set(bm, 0, 1 << 30);
	assert_int_equal(vs_dirty_bitmap_count(bm), 1000 * 512 - 100);
	vs_dirty_bitmap_clear_all(bm);
	assert_int_equal(vs_dirty_bitmap_count(bm), 0);
	vs_dirty_bitmap_free(bm);
}

CO_TEST(test_dirty_bitmap_node_writes_mark)
{
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct vs_dirty_bitmap *bm, *other;
	struct vs_error err = { 0 };
	struct vs_node *n;
	char buf[4096] = { 1 };
	uint64_t s, l;

	(void)arg;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_int_equal(vs_dirty_bitmap_new(vs_node_size(n), 65536, &bm), 0);
	assert_int_equal(vs_dirty_bitmap_new(vs_node_size(n), 65536, &other), 0);
	assert_int_equal(vs_node_dirty_bitmap_attach(n, bm), 0);
	assert_int_equal(vs_node_dirty_bitmap_attach(n, bm), -EBUSY);
	assert_int_equal(vs_node_pread(n, 0, buf, sizeof(buf)), 0);
	assert_int_equal(vs_dirty_bitmap_count(bm), 0); /* reads do not mark */
	assert_int_equal(vs_node_pwrite(n, 70000, buf, sizeof(buf), 0), 0);
	assert_true(vs_dirty_bitmap_next_dirty(bm, 0, 0, &s, &l));
	assert_int_equal(s, 65536);
	assert_int_equal(l, 65536);
	assert_int_equal(vs_node_write_zeroes(n, 262144, 4096, 0), 0);
	assert_true(vs_dirty_bitmap_get(bm, 262144));
	assert_int_equal(vs_node_discard(n, 524288, 65536), 0);
	assert_true(vs_dirty_bitmap_get(bm, 524288));
	assert_int_equal(vs_dirty_bitmap_count(bm), 3 * 65536);
	assert_int_equal(vs_dirty_bitmap_count(other), 0); /* not attached */
	vs_node_dirty_bitmap_detach(bm);
	vs_dirty_bitmap_clear_all(bm);
	assert_int_equal(vs_node_pwrite(n, 0, buf, sizeof(buf), 0), 0);
	assert_int_equal(vs_dirty_bitmap_count(bm), 0);
	/* A bitmap still attached when the node goes is detached, not freed. */
	assert_int_equal(vs_node_dirty_bitmap_attach(n, other), 0);
	vs_node_close(n);
	vs_dirty_bitmap_free(other);
	vs_dirty_bitmap_free(bm);
}

/* What the hook saw: begins, ends, and the last end's arguments. */
struct hook_log {
	int begins, ends, last_ret;
	enum vs_dirty_write last_kind;
	uint64_t last_off, last_len;
	int last_niov;
	char first_byte;
};

static void hook_begin(void *opaque, uint64_t offset, uint64_t len)
{
	struct hook_log *h = opaque;

	(void)offset;
	(void)len;
	h->begins++;
}

static void hook_end(void *opaque, enum vs_dirty_write kind, uint64_t offset, uint64_t len,
		     const struct iovec *iov, int niov, unsigned flags, int ret)
{
	struct hook_log *h = opaque;

	(void)flags;
	h->ends++;
	h->last_kind = kind;
	h->last_off = offset;
	h->last_len = len;
	h->last_niov = niov;
	h->last_ret = ret;
	if (niov)
		h->first_byte = *(const char *)iov[0].iov_base;
}

CO_TEST(test_dirty_bitmap_write_hook_replaces_marking)
{
	static const struct vs_dirty_bitmap_write_hook hook = { hook_begin, hook_end };
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct vs_dirty_bitmap *bm, *plain;
	struct vs_error err = { 0 };
	struct hook_log h = { 0 };
	struct vs_node *n;
	char buf[4096];

	(void)arg;
	memset(buf, 7, sizeof(buf));
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	assert_int_equal(vs_dirty_bitmap_new(vs_node_size(n), 65536, &bm), 0);
	assert_int_equal(vs_dirty_bitmap_new(vs_node_size(n), 65536, &plain), 0);
	vs_dirty_bitmap_set_write_hook(bm, &hook, &h);
	assert_int_equal(vs_node_dirty_bitmap_attach(n, bm), 0);
	assert_int_equal(vs_node_dirty_bitmap_attach(n, plain), 0);
	assert_int_equal(vs_node_pwrite(n, 8192, buf, sizeof(buf), 0), 0);
	/* The hook saw the write with its data; its bitmap is not marked, the other is. */
	assert_int_equal(h.begins, 1);
	assert_int_equal(h.ends, 1);
	assert_int_equal(h.last_kind, VS_DIRTY_WRITE);
	assert_int_equal(h.last_off, 8192);
	assert_int_equal(h.last_len, 4096);
	assert_int_equal(h.last_niov, 1);
	assert_int_equal(h.first_byte, 7);
	assert_int_equal(h.last_ret, 0);
	assert_int_equal(vs_dirty_bitmap_count(bm), 0);
	assert_true(vs_dirty_bitmap_get(plain, 8192));
	assert_int_equal(vs_node_write_zeroes(n, 65536, 4096, 0), 0);
	assert_int_equal(h.last_kind, VS_DIRTY_WRITE_ZEROES);
	assert_int_equal(vs_node_discard(n, 131072, 65536), 0);
	assert_int_equal(h.last_kind, VS_DIRTY_DISCARD);
	assert_int_equal(h.begins, 3);
	assert_int_equal(h.ends, 3);
	/* A write past the end fails: the hook still sees it, with the error. */
	assert_true(vs_node_pwrite(n, 1 << 20, buf, sizeof(buf), 0) < 0);
	assert_true(h.last_ret < 0);
	assert_int_equal(h.begins, h.ends);
	/* Without the hook the writes mark it again. */
	vs_dirty_bitmap_set_write_hook(bm, NULL, NULL);
	assert_int_equal(vs_node_pwrite(n, 0, buf, sizeof(buf), 0), 0);
	assert_true(vs_dirty_bitmap_get(bm, 0));
	assert_int_equal(h.ends, 4);
	vs_node_close(n);
	vs_dirty_bitmap_free(plain);
	vs_dirty_bitmap_free(bm);
}

/* What the before-write hook saw: the range, and the old data it read there. */
struct hook_seen {
	struct vs_node *node;
	unsigned calls;
	uint64_t offset, len;
	unsigned char old;
};

static void hook_record(void *opaque, uint64_t offset, uint64_t len)
{
	struct hook_seen *h = opaque;

	h->calls++;
	h->offset = offset;
	h->len = len;
	/* Inside the write, before it: the old data is still there. */
	assert_int_equal(vs_node_pread_held(h->node, offset, &h->old, 1), 0);
}

CO_TEST(test_dirty_bitmap_before_write_hook)
{
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct hook_seen h = { 0 };
	struct vs_error err = { 0 };
	unsigned char buf[4096];
	struct vs_node *n;

	(void)arg;
	assert_int_equal(vs_image_open(&n, &o, &err), 0);
	h.node = n;
	memset(buf, 0x11, sizeof(buf));
	assert_int_equal(vs_node_pwrite(n, 8192, buf, sizeof(buf), 0), 0);
	assert_int_equal(vs_node_set_before_write(n, hook_record, &h), 0);
	assert_int_equal(vs_node_set_before_write(n, hook_record, &h), -EBUSY);
	memset(buf, 0x22, sizeof(buf));
	assert_int_equal(vs_node_pwrite(n, 8192, buf, sizeof(buf), 0), 0);
	assert_int_equal(h.calls, 1);
	assert_int_equal(h.offset, 8192);
	assert_int_equal(h.len, 4096);
	assert_int_equal(h.old, 0x11); /* read before the write changed it */
	assert_int_equal(vs_node_pread(n, 8192, buf, 1), 0);
	assert_int_equal(buf[0], 0x22);
	assert_int_equal(vs_node_write_zeroes(n, 8192, 512, 0), 0);
	assert_int_equal(h.old, 0x22);
	assert_int_equal(vs_node_discard(n, 65536, 65536), 0);
	assert_int_equal(h.calls, 3);
	assert_int_equal(vs_node_pread(n, 0, buf, 512), 0); /* reads do not call it */
	assert_int_equal(h.calls, 3);
	assert_int_equal(vs_node_set_before_write(n, NULL, NULL), 0);
	assert_int_equal(vs_node_pwrite(n, 0, buf, 512, 0), 0);
	assert_int_equal(h.calls, 3);
	vs_node_close(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dirty_bitmap_new_rejects_bad_granularity),
		cmocka_unit_test(test_dirty_bitmap_set_rounds_out_clear_rounds_out),
		cmocka_unit_test(test_dirty_bitmap_runs_across_words),
		cmocka_unit_test(test_dirty_bitmap_node_writes_mark),
		cmocka_unit_test(test_dirty_bitmap_write_hook_replaces_marking),
		cmocka_unit_test(test_dirty_bitmap_before_write_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
