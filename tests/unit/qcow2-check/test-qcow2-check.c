/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the qcow2 snapshot table parser and of check/repair, on
 * images built byte by byte in a memory: protocol node. The comparison
 * with qemu-img on real files is tests/integration/test-qcow2-corrupt.sh.
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

#include "driver.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

#include "formats/qcow2/qcow2-check.h"
#include "formats/qcow2/qcow2-format.h"
#include "formats/qcow2/qcow2-snapshot.h"

#define CB 16
#define CS (1u << CB)
#define NCL 7 /* header, reftable, refblock, L1, L2, data, data */

/* A minimal clean v3 image: clusters as in NCL's comment, refcount width 2^order. */
static uint8_t *build_image(unsigned order, size_t *len)
{
	struct qcow2_header h = {
		.version = 3,
		.cluster_bits = CB,
		.size = 64ull << 20,
		.l1_size = 1,
		.l1_table_offset = 3ull * CS,
		.refcount_table_offset = 1ull * CS,
		.refcount_table_clusters = 1,
		.refcount_order = order,
		.header_length = 112,
	};
	uint8_t *img = calloc(NCL, CS);

	assert_non_null(img);
	qcow2_header_encode(&h, img);
	vs_put_be64(img + CS, 2ull * CS);
	for (unsigned i = 0; i < NCL; i++) {
		uint8_t *rb = img + 2 * CS;

		/* refcount 1 in every width: the entry's lowest bit. */
		uint64_t bit = (uint64_t)i << order;

		if (order <= 3)
			rb[bit / 8] |= (uint8_t)(1u << (bit % 8));
		else
			rb[(bit + (1u << order)) / 8 - 1] = 1;
	}
	vs_put_be64(img + 3 * CS, QCOW2_OFLAG_COPIED | 4ull * CS);
	vs_put_be64(img + 4 * CS, QCOW2_OFLAG_COPIED | 5ull * CS);
	vs_put_be64(img + 4 * CS + 8, QCOW2_OFLAG_COPIED | 6ull * CS);
	memset(img + 5 * CS, 0xaa, 2 * CS);
	*len = (size_t)NCL * CS;
	return img;
}

struct co_test {
	const uint8_t *img;
	size_t len;
	unsigned fix;
	struct vs_check_result res;
	struct vs_error err;
	int ret;
	void (*body)(struct co_test *t, struct vs_node *file);
	uint64_t end_size;
};

static void co_entry(void *arg)
{
	struct co_test *t = arg;
	struct vs_open_opts o = { 0 };
	struct vs_node *file;
	char uri[64];

	snprintf(uri, sizeof(uri), "memory:%zu", t->len);
	o.filename = uri;
	t->ret = vs_protocol_open(&file, uri, &o, &t->err);
	if (t->ret < 0)
		return;
	t->ret = vs_node_pwrite(file, 0, t->img, t->len, 0);
	if (t->ret == 0)
		t->body(t, file);
	t->end_size = vs_node_size(file);
	vs_node_close(file);
}

static void run(struct co_test *t)
{
	assert_int_equal(vs_run_in_coroutine(co_entry, t), 0);
}

static void body_check(struct co_test *t, struct vs_node *file)
{
	t->ret = qcow2_check_image(file, &t->res, t->fix, &t->err);
}

/* Check with t->fix, then again without: the second result is stored in res2. */
static struct vs_check_result res2;
static int ret2;
static void body_fix_then_check(struct co_test *t, struct vs_node *file)
{
	struct vs_error e = { 0 };

	t->ret = qcow2_check_image(file, &t->res, t->fix, &t->err);
	memset(&res2, 0, sizeof(res2));
	ret2 = qcow2_check_image(file, &res2, 0, &e);
}

static void check_buf(const uint8_t *img, size_t len, unsigned fix, struct co_test *t)
{
	memset(t, 0, sizeof(*t));
	t->img = img;
	t->len = len;
	t->fix = fix;
	t->body = body_check;
	run(t);
}

static void assert_clean(const struct vs_check_result *r)
{
	assert_int_equal(r->corruptions, 0);
	assert_int_equal(r->leaks, 0);
	assert_int_equal(r->check_errors, 0);
}

static void test_qcow2_check_clean_every_refcount_width(void **state)
{
	for (unsigned order = 0; order <= 6; order++) {
		struct co_test t;
		size_t len;
		uint8_t *img = build_image(order, &len);

		check_buf(img, len, 0, &t);
		assert_int_equal(t.ret, 0);
		assert_clean(&t.res);
		assert_true(t.res.has_cluster_stats);
		assert_int_equal(t.res.total_clusters, 1024);
		assert_int_equal(t.res.allocated_clusters, 2);
		assert_int_equal(t.res.fragmented_clusters, 0);
		assert_int_equal(t.res.image_end_offset, (int64_t)NCL * CS);
		free(img);
	}
}

static void set_rc16(uint8_t *img, unsigned cluster, uint16_t v)
{
	vs_put_be16(img + 2 * CS + 2 * cluster, v);
}

static void test_qcow2_check_leak_counted_and_fixed(void **state)
{
	struct co_test t;
	size_t len;
	uint8_t *img = build_image(4, &len);

	set_rc16(img, 3, 3); /* the L1 table's cluster: one leaked cluster */
	set_rc16(img, 7, 1); /* past the end of the file: not part of the image, as for QEMU */
	check_buf(img, len, 0, &t);
	assert_int_equal(t.ret, 0);
	assert_int_equal(t.res.leaks, 1);
	assert_int_equal(t.res.corruptions, 0);

	memset(&t, 0, sizeof(t));
	t.img = img;
	t.len = len;
	t.fix = VS_CHECK_FIX_LEAKS;
	t.body = body_fix_then_check;
	run(&t);
	assert_int_equal(t.ret, 0);
	assert_int_equal(t.res.leaks_fixed, 1);
	assert_int_equal(t.res.leaks, 0);
	assert_int_equal(ret2, 0);
	assert_clean(&res2);
	free(img);
}

static void test_qcow2_check_missing_refcount_rebuilds(void **state)
{
	struct co_test t;
	size_t len;
	uint8_t *img = build_image(4, &len);

	set_rc16(img, 5, 0);
	check_buf(img, len, 0, &t);
	assert_int_equal(t.ret, 0);
	assert_int_equal(t.res.corruptions, 2); /* refcount 0, and COPIED set on it */

	/* -r leaks cannot rebuild: the check does not complete. */
	check_buf(img, len, VS_CHECK_FIX_LEAKS, &t);
	assert_true(t.ret < 0);
	assert_true(t.res.check_errors > 0);

	memset(&t, 0, sizeof(t));
	t.img = img;
	t.len = len;
	t.fix = VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS;
	t.body = body_fix_then_check;
	run(&t);
	assert_int_equal(t.ret, 0);
	assert_clean(&t.res);
	assert_true(t.res.corruptions_fixed >= 1);
	assert_int_equal(ret2, 0);
	assert_clean(&res2);
	free(img);
}

static void test_qcow2_check_reftable_gone_rebuilds(void **state)
{
	struct co_test t;
	size_t len;
	uint8_t *img = build_image(4, &len);

	vs_put_be64(img + CS, 0);
	memset(&t, 0, sizeof(t));
	t.img = img;
	t.len = len;
	t.fix = VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS;
	t.body = body_fix_then_check;
	run(&t);
	assert_int_equal(t.ret, 0);
	assert_clean(&t.res);
	assert_int_equal(ret2, 0);
	assert_clean(&res2);
	free(img);
}

static void test_qcow2_check_copied_flag_fixed(void **state)
{
	struct co_test t;
	size_t len;
	uint8_t *img = build_image(4, &len);

	vs_put_be64(img + 4 * CS, 5ull * CS); /* COPIED missing */
	check_buf(img, len, 0, &t);
	assert_int_equal(t.res.corruptions, 1);

	memset(&t, 0, sizeof(t));
	t.img = img;
	t.len = len;
	t.fix = VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS;
	t.body = body_fix_then_check;
	run(&t);
	assert_int_equal(t.res.corruptions_fixed, 1);
	assert_clean(&res2);
	free(img);
}

static void test_qcow2_check_bad_header_fails(void **state)
{
	struct co_test t;
	size_t len;
	uint8_t *img = build_image(4, &len);

	vs_put_be32(img, 0x12345678);
	check_buf(img, len, 0, &t);
	assert_true(t.ret < 0);
	assert_true(t.err.msg[0] != '\0');

	/* L1 too small for the virtual size: QEMU refuses to open it. */
	free(img);
	img = build_image(4, &len);
	vs_put_be64(img + 24, 1ull << 50);
	check_buf(img, len, 0, &t);
	assert_true(t.ret < 0);
	free(img);
}

/* Hostile metadata must never crash, hang or allocate without bound. */
static void test_qcow2_check_garbage_never_crashes(void **state)
{
	static const size_t spots[] = {
		36, 40, 48, 56, 60, 64, 96, /* header fields */
	};
	uint32_t seed = 12345;

	for (unsigned iter = 0; iter < 300; iter++) {
		struct co_test t;
		size_t len;
		uint8_t *img = build_image(iter % 7, &len);
		unsigned n = 1 + iter % 8;

		for (unsigned k = 0; k < n; k++) {
			size_t off;

			seed = seed * 1103515245u + 12345u;
			if (seed % 5 == 0)
				off = spots[(seed >> 8) % (sizeof(spots) / sizeof(spots[0]))] +
				      (seed >> 16) % 8;
			else
				off = CS + ((size_t)(seed >> 4) % 64) + CS * ((seed >> 12) % 4);
			seed = seed * 1103515245u + 12345u;
			img[off] = (uint8_t)(seed >> 16);
		}
		check_buf(img, len, 0, &t);
		memset(&t, 0, sizeof(t));
		t.img = img;
		t.len = len;
		t.fix = VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS;
		t.body = body_fix_then_check;
		run(&t);
		/* A repair never blows the file up far past its metadata. */
		assert_true(t.end_size < 2 * len + (64ull << 20) + 4 * CS);
		free(img);
	}
}

/* Snapshot table parsing. */

struct sn_test {
	const uint8_t *img;
	size_t len;
	struct qcow2_header h;
	struct qcow2_snapshot_table tab;
	unsigned flags;
	struct vs_error err;
	int ret;
};

static void sn_co(void *arg)
{
	struct sn_test *t = arg;
	struct vs_open_opts o = { 0 };
	struct vs_node *file;
	char uri[64];

	snprintf(uri, sizeof(uri), "memory:%zu", t->len);
	o.filename = uri;
	t->ret = vs_protocol_open(&file, uri, &o, &t->err);
	if (t->ret < 0)
		return;
	t->ret = vs_node_pwrite(file, 0, t->img, t->len, 0);
	if (t->ret == 0)
		t->ret = qcow2_snapshot_table_read(file, &t->h, t->flags, &t->tab, &t->err);
	vs_node_close(file);
}

static size_t put_entry(uint8_t *p, uint64_t l1off, uint32_t l1size, const char *id,
			const char *name, const uint8_t *extra, uint32_t extra_len)
{
	size_t idl = strlen(id), nl = strlen(name);

	vs_put_be64(p, l1off);
	vs_put_be32(p + 8, l1size);
	vs_put_be16(p + 12, (uint16_t)idl);
	vs_put_be16(p + 14, (uint16_t)nl);
	vs_put_be32(p + 16, 1700000000);
	vs_put_be32(p + 20, 5);
	vs_put_be64(p + 24, 777);
	vs_put_be32(p + 32, 4096);
	vs_put_be32(p + 36, extra_len);
	memcpy(p + 40, extra, extra_len);
	memcpy(p + 40 + extra_len, id, idl);
	memcpy(p + 40 + extra_len + idl, name, nl);
	return 40 + extra_len + idl + nl;
}

static void test_qcow2_snapshot_roundtrip_keeps_unknown_extra(void **state)
{
	uint8_t *img = calloc(2, CS);
	uint8_t extra1[32], extra2[16];
	struct sn_test t = { 0 };
	struct vs_snapshot_info info;
	size_t pos = 0, enc_len;
	uint8_t *enc;

	for (unsigned i = 0; i < sizeof(extra1); i++)
		extra1[i] = (uint8_t)(i * 7 + 1);
	vs_put_be64(extra1, 1ull << 33); /* vm_state_size_large */
	vs_put_be64(extra1 + 8, 1ull << 30);
	memset(extra2, 0, sizeof(extra2));
	vs_put_be64(extra2 + 8, 5ull << 20);
	pos = put_entry(img + CS, 3 * CS, 1, "1", "first", extra1, sizeof(extra1));
	pos = (pos + 7) & ~(size_t)7;
	pos += put_entry(img + CS + pos, 4 * CS, 2, "22", "second snapshot", extra2,
			 sizeof(extra2));

	t.img = img;
	t.len = 2 * CS;
	t.h.cluster_bits = CB;
	t.h.version = 3;
	t.h.size = 64ull << 20;
	t.h.nb_snapshots = 2;
	t.h.snapshots_offset = CS;
	assert_int_equal(vs_run_in_coroutine(sn_co, &t), 0);
	assert_int_equal(t.ret, 0);
	assert_int_equal(t.tab.nb, 2);
	assert_int_equal(t.tab.size, pos);
	assert_string_equal(t.tab.sn[0].name, "first");
	assert_string_equal(t.tab.sn[1].id, "22");
	assert_int_equal(t.tab.sn[0].vm_state_size, 1ull << 33);
	assert_int_equal(t.tab.sn[0].vm_state_size32, 4096);
	assert_int_equal(t.tab.sn[0].icount, vs_be64(extra1 + 16));
	assert_int_equal(t.tab.sn[1].icount, UINT64_MAX);
	assert_int_equal(t.tab.sn[1].disk_size, 5ull << 20);
	assert_int_equal(qcow2_snapshot_unknown_extra_size(&t.tab.sn[0]), 8);

	/* Re-encoding yields the same bytes for an entry that had full extra data. */
	enc_len = qcow2_snapshots_encoded_size(t.tab.sn, 1);
	enc = calloc(1, enc_len);
	qcow2_snapshots_encode(t.tab.sn, 1, enc);
	/* vm_state_size32 is re-derived: a state > 4 GiB is written as 0 there. */
	vs_put_be32(img + CS + 32, 0);
	assert_memory_equal(enc, img + CS, enc_len);
	free(enc);

	qcow2_snapshot_to_info(&t.tab.sn[1], &info);
	assert_string_equal(info.name, "second snapshot");
	assert_int_equal(info.date_sec, 1700000000);
	assert_int_equal(info.vm_clock_nsec, 777);
	qcow2_snapshot_table_free(&t.tab);
	free(img);
}

static void test_qcow2_snapshot_hostile_tables_refused(void **state)
{
	uint8_t *img = calloc(2, CS);
	uint8_t extra[16] = { 0 };
	struct sn_test t = { 0 };

	put_entry(img + CS, 3 * CS, 1, "1", "a", extra, sizeof(extra));
	t.img = img;
	t.len = 2 * CS;
	t.h.cluster_bits = CB;
	t.h.version = 3;
	t.h.nb_snapshots = 1;
	t.h.snapshots_offset = CS;

	/* Too much extra data: refused, or cut to the limit in repair mode. */
	vs_put_be32(img + CS + 36, 5000);
	assert_int_equal(vs_run_in_coroutine(sn_co, &t), 0);
	assert_int_equal(t.ret, -EFBIG);
	t.flags = QCOW2_SN_READ_REPAIR | QCOW2_SN_READ_PAST_EOF;
	assert_int_equal(vs_run_in_coroutine(sn_co, &t), 0);
	assert_int_equal(t.ret, 0);
	assert_int_equal(t.tab.extra_truncated, 1);
	assert_int_equal(t.tab.sn[0].extra_size, QCOW2_MAX_SNAPSHOT_EXTRA_DATA);
	qcow2_snapshot_table_free(&t.tab);

	/* Many entries running past the end of the file. */
	vs_put_be32(img + CS + 36, 16);
	t.flags = 0;
	t.h.nb_snapshots = 60000;
	assert_int_equal(vs_run_in_coroutine(sn_co, &t), 0);
	assert_int_equal(t.ret, -EINVAL);

	/* Unaligned table. */
	t.h.nb_snapshots = 1;
	t.h.snapshots_offset = CS + 8;
	assert_int_equal(vs_run_in_coroutine(sn_co, &t), 0);
	assert_int_equal(t.ret, -EINVAL);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qcow2_check_clean_every_refcount_width),
		cmocka_unit_test(test_qcow2_check_leak_counted_and_fixed),
		cmocka_unit_test(test_qcow2_check_missing_refcount_rebuilds),
		cmocka_unit_test(test_qcow2_check_reftable_gone_rebuilds),
		cmocka_unit_test(test_qcow2_check_copied_flag_fixed),
		cmocka_unit_test(test_qcow2_check_bad_header_fails),
		cmocka_unit_test(test_qcow2_check_garbage_never_crashes),
		cmocka_unit_test(test_qcow2_snapshot_roundtrip_keeps_unknown_extra),
		cmocka_unit_test(test_qcow2_snapshot_hostile_tables_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
