/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the nfs driver's list of writes not yet known to be stable
 * (libstore/nfs-wlist.c): what a COMMIT drops and what it leaves, when a
 * verifier mismatch asks for a resend, when a stable write may leave at
 * once, and how kept data is laid over what a READ returned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "nfs-wlist.h"

static const uint8_t V1[VS_NFS_VERF_SIZE] = { 1 };
static const uint8_t V2[VS_NFS_VERF_SIZE] = { 2 };

/* Add a write of @len bytes of @byte at @off. */
static struct vs_nfs_wb *add(struct vs_nfs_wlist *l, uint64_t off, uint64_t len, uint8_t byte)
{
	static uint8_t buf[65536];
	struct iovec iov = { buf, len };
	struct vs_nfs_wb *wb;

	assert_true(len <= sizeof(buf));
	memset(buf, byte, len);
	wb = vs_nfs_wlist_add(l, off, &iov, 1, len);
	assert_non_null(wb);
	return wb;
}

static void test_commit_match(void **state)
{
	struct vs_nfs_wlist l;

	(void)state;
	vs_nfs_wlist_init(&l);
	vs_nfs_wlist_complete(&l, add(&l, 0, 4096, 1), false, V1);
	vs_nfs_wlist_complete(&l, add(&l, 8192, 512, 2), false, V1);
	assert_int_equal(l.count, 2);
	assert_int_equal(l.unstable, 2);
	assert_int_equal(l.bytes, 4608);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 2);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V1), 0);
	assert_int_equal(l.count, 0);
	assert_int_equal(l.bytes, 0);
	assert_int_equal(l.completed, 0);
	assert_null(l.head);
	assert_null(l.tail);
	vs_nfs_wlist_clear(&l);
}

/* A COMMIT with another verifier: nothing leaves, every entry is to be resent. */
static void test_commit_mismatch(void **state)
{
	struct vs_nfs_wlist l;
	struct vs_nfs_wb *a, *b;

	(void)state;
	vs_nfs_wlist_init(&l);
	a = add(&l, 0, 4096, 1);
	b = add(&l, 0, 1024, 2);
	vs_nfs_wlist_complete(&l, a, false, V1);
	vs_nfs_wlist_complete(&l, b, false, V2);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 2);
	/* b matches, a does not: b must stay too, or resending a would undo it. */
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V2), 1);
	assert_int_equal(l.count, 2);
	assert_false(a->in_commit);
	assert_false(b->in_commit);
	/* Written again under V2: the next COMMIT drops both. */
	vs_nfs_wlist_rewritten(&l, a, false, V2);
	vs_nfs_wlist_rewritten(&l, b, false, V2);
	assert_int_equal(l.unstable, 2);
	assert_int_equal(l.completed, 2);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 2);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V2), 0);
	assert_int_equal(l.count, 0);
	vs_nfs_wlist_clear(&l);
}

/* A failed COMMIT drops nothing. */
static void test_commit_failed(void **state)
{
	struct vs_nfs_wlist l;

	(void)state;
	vs_nfs_wlist_init(&l);
	vs_nfs_wlist_complete(&l, add(&l, 0, 4096, 1), false, V1);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 1);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, NULL), 0);
	assert_int_equal(l.count, 1);
	assert_false(l.head->in_commit);
	vs_nfs_wlist_clear(&l);
	assert_int_equal(l.count, 0);
	assert_int_equal(l.bytes, 0);
}

/* A write still on the wire when the COMMIT is sent is not covered by it. */
static void test_commit_skips_inflight(void **state)
{
	struct vs_nfs_wlist l;
	struct vs_nfs_wb *a, *b;

	(void)state;
	vs_nfs_wlist_init(&l);
	a = add(&l, 0, 4096, 1);
	b = add(&l, 4096, 4096, 2);
	vs_nfs_wlist_complete(&l, a, false, V1);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 1);
	/* b's reply comes while the COMMIT is out. */
	vs_nfs_wlist_complete(&l, b, false, V1);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V1), 0);
	assert_int_equal(l.count, 1);
	assert_ptr_equal(l.head, b);
	assert_int_equal(l.unstable, 1);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 1);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V1), 0);
	assert_int_equal(l.count, 0);
	vs_nfs_wlist_clear(&l);
}

/* Stable writes: dropped at once with nothing older kept, else kept for order. */
static void test_stable(void **state)
{
	struct vs_nfs_wlist l;
	struct vs_nfs_wb *a, *s;

	(void)state;
	vs_nfs_wlist_init(&l);
	assert_true(vs_nfs_wlist_complete(&l, add(&l, 0, 4096, 1), true, NULL));
	assert_int_equal(l.count, 0);

	a = add(&l, 0, 4096, 1);
	vs_nfs_wlist_complete(&l, a, false, V1);
	s = add(&l, 0, 512, 2);
	assert_false(vs_nfs_wlist_complete(&l, s, true, NULL));
	assert_int_equal(s->state, VS_NFS_WB_STABLE);
	assert_int_equal(l.count, 2);
	assert_int_equal(l.completed, 2);
	assert_int_equal(l.unstable, 1);
	/* A mismatch counts only the unstable entry, but both are resent. */
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 1);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V2), 1);
	assert_int_equal(l.count, 2);
	vs_nfs_wlist_clear(&l);

	/* Only stable entries kept: no COMMIT needed, and they go. */
	vs_nfs_wlist_complete(&l, add(&l, 0, 4096, 1), false, V1);
	s = add(&l, 0, 512, 2);
	vs_nfs_wlist_complete(&l, s, true, NULL);
	vs_nfs_wlist_rewritten(&l, l.head, true, NULL);
	assert_int_equal(l.unstable, 0);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 0);
	assert_int_equal(l.count, 0);
	vs_nfs_wlist_clear(&l);
}

static void test_remove(void **state)
{
	struct vs_nfs_wlist l;
	struct vs_nfs_wb *a, *b, *c;

	(void)state;
	vs_nfs_wlist_init(&l);
	a = add(&l, 100, 10, 1);
	b = add(&l, 0, 20, 2);
	c = add(&l, 50, 30, 3);
	assert_int_equal(l.lo, 0);
	assert_int_equal(l.hi, 110);
	vs_nfs_wlist_remove(&l, b);
	assert_ptr_equal(a->next, c);
	assert_ptr_equal(c->prev, a);
	assert_int_equal(l.bytes, 40);
	vs_nfs_wlist_complete(&l, c, false, V1);
	vs_nfs_wlist_remove(&l, c);
	assert_int_equal(l.completed, 0);
	assert_int_equal(l.unstable, 0);
	assert_ptr_equal(l.tail, a);
	vs_nfs_wlist_remove(&l, a);
	assert_int_equal(l.count, 0);
	assert_int_equal(l.lo, 0);
	assert_int_equal(l.hi, 0);
	vs_nfs_wlist_clear(&l);
}

/* The data of completed entries goes over a READ's result, newest last. */
static void test_overlay(void **state)
{
	struct vs_nfs_wlist l;
	uint8_t a[100], b[28], want[128];
	struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
	struct vs_nfs_wb *inflight;

	(void)state;
	vs_nfs_wlist_init(&l);
	vs_nfs_wlist_complete(&l, add(&l, 1000, 100, 0x11), false, V1);
	vs_nfs_wlist_complete(&l, add(&l, 1050, 100, 0x22), false, V1);
	vs_nfs_wlist_complete(&l, add(&l, 1120, 4, 0x33), true, NULL);
	inflight = add(&l, 1000, 128, 0x44);
	memset(a, 0xee, sizeof(a));
	memset(b, 0xee, sizeof(b));
	/* Read [1010, 1138) across two iovecs. */
	vs_nfs_wlist_overlay(&l, 1010, 128, iov, 2);
	memset(want, 0x11, 40);	     /* [1010, 1050): the first write */
	memset(want + 40, 0x22, 88); /* [1050, 1138): the second, over the first */
	memset(want + 110, 0x33, 4); /* [1120, 1124): the third; the fourth is in flight */
	assert_memory_equal(a, want, 100);
	assert_memory_equal(b, want + 100, 28);
	(void)inflight;

	/* Outside every entry: untouched. */
	memset(a, 0xee, sizeof(a));
	vs_nfs_wlist_overlay(&l, 0, 100, iov, 1);
	memset(want, 0xee, 100);
	assert_memory_equal(a, want, 100);
	vs_nfs_wlist_clear(&l);
}

/* Many entries, freed out of order: the span index stays in list order. */
static void test_many(void **state)
{
	struct vs_nfs_wlist l;
	struct vs_nfs_wb *wb[600];
	uint8_t buf[512];
	struct iovec iov = { buf, sizeof(buf) };

	(void)state;
	vs_nfs_wlist_init(&l);
	/* Entry i: 512 bytes of i & 0xff at (i % 100) * 256: every range overlaps others. */
	for (int i = 0; i < 600; i++)
		wb[i] = add(&l, (uint64_t)(i % 100) * 256, 512, (uint8_t)i);
	/* Complete all but the last 100 (in flight); remove every other of 100..299 (failed). */
	for (int i = 0; i < 500; i++) {
		if (i >= 100 && i < 300 && i % 2) {
			vs_nfs_wlist_remove(&l, wb[i]);
			wb[i] = NULL;
		} else {
			vs_nfs_wlist_complete(&l, wb[i], false, V1);
		}
	}
	assert_int_equal(l.count, 500);
	assert_true(l.nspans <= 600);
	/* [10 * 256, 10 * 256 + 512): entries i % 100 == 9 (its second half) and 10
	 * (the first half); the newest completed of each wins: 409 and 410. */
	memset(buf, 0xee, sizeof(buf));
	vs_nfs_wlist_overlay(&l, 10 * 256, 512, &iov, 1);
	for (int k = 0; k < 256; k++)
		assert_int_equal(buf[k], 410 & 0xff);
	for (int k = 256; k < 512; k++)
		assert_int_equal(buf[k], 411 & 0xff);
	/* A COMMIT drops the 400 completed ones; the index is compacted on the way. */
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 400);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V1), 0);
	assert_int_equal(l.count, 100);
	assert_int_equal(l.nspans - l.dead_spans, 100);
	assert_true(l.nspans <= 200);
	for (int i = 500, j = 0; i < 600; i++, j++) {
		while (!l.spans[j].wb)
			j++;
		assert_ptr_equal(l.spans[j].wb, wb[i]);
		assert_int_equal(wb[i]->span, j);
		vs_nfs_wlist_complete(&l, wb[i], false, V1);
	}
	memset(buf, 0xee, sizeof(buf));
	vs_nfs_wlist_overlay(&l, 10 * 256, 512, &iov, 1);
	for (int k = 0; k < 256; k++)
		assert_int_equal(buf[k], 510 & 0xff);
	for (int k = 256; k < 512; k++)
		assert_int_equal(buf[k], 511 & 0xff);
	vs_nfs_wlist_clear(&l);
	assert_null(l.spans);
}

/* Large freed buffers are reused, up to spare_max; small ones are not kept. */
static void test_spares(void **state)
{
	static uint8_t big[256 << 10];
	struct iovec iov = { big, sizeof(big) };
	struct vs_nfs_wlist l;
	struct vs_nfs_wb *a, *b, *c;

	(void)state;
	vs_nfs_wlist_init(&l);
	l.spare_max = 2 * sizeof(big);
	memset(big, 0x77, sizeof(big));
	a = vs_nfs_wlist_add(&l, 0, &iov, 1, sizeof(big));
	b = vs_nfs_wlist_add(&l, 1 << 20, &iov, 1, sizeof(big));
	c = vs_nfs_wlist_add(&l, 2 << 20, &iov, 1, sizeof(big));
	vs_nfs_wlist_complete(&l, a, false, V1);
	vs_nfs_wlist_complete(&l, b, false, V1);
	vs_nfs_wlist_complete(&l, c, false, V1);
	vs_nfs_wlist_complete(&l, add(&l, 4 << 20, 4096, 1), false, V1);
	assert_int_equal(vs_nfs_wlist_commit_begin(&l), 4);
	assert_int_equal(vs_nfs_wlist_commit_end(&l, V1), 0);
	/* Two big ones kept (the bound), the third and the small one freed. */
	assert_int_equal(l.spare_bytes, 2 * sizeof(big));
	/* A write of 200 KiB reuses one; its data and state are fresh. */
	a = vs_nfs_wlist_add(&l, 8 << 20, &iov, 1, 200 << 10);
	assert_non_null(a);
	assert_int_equal(l.spare_bytes, sizeof(big));
	assert_int_equal(a->len, 200 << 10);
	assert_int_equal(a->cap, sizeof(big));
	assert_int_equal(a->state, VS_NFS_WB_INFLIGHT);
	assert_false(a->in_commit);
	assert_int_equal(l.bytes, 200 << 10);
	/* A 4 KiB write does not take a 256 KiB buffer. */
	b = add(&l, 0, 4096, 2);
	assert_int_equal(b->cap, 4096);
	assert_int_equal(l.spare_bytes, sizeof(big));
	vs_nfs_wlist_drop_spares(&l);
	assert_int_equal(l.spare_bytes, 0);
	assert_null(l.spare);
	vs_nfs_wlist_clear(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_match),  cmocka_unit_test(test_commit_mismatch),
		cmocka_unit_test(test_commit_failed), cmocka_unit_test(test_commit_skips_inflight),
		cmocka_unit_test(test_stable),	      cmocka_unit_test(test_remove),
		cmocka_unit_test(test_overlay),	      cmocka_unit_test(test_many),
		cmocka_unit_test(test_spares),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
