/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of vhost-user-blk/virtq.c (guest memory, split and packed
 * rings) and of the virtio-blk request parser, on plain memory.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio-blk.h"
#include "virtq.h"

#define MEM0 65536
#define MEM1 8192
#define UVA0 0x100000000ull

static uint8_t mem0[MEM0] __attribute__((aligned(4096)));
static uint8_t mem1[MEM1] __attribute__((aligned(4096)));
static struct iovec iov[64];
static struct vq_mem mem;

/* Guest memory: 64 KiB at 0 and 8 KiB right after it (adjacent regions). */
static int setup(void **state)
{
	memset(mem0, 0, sizeof(mem0));
	memset(mem1, 0, sizeof(mem1));
	mem.n = 2;
	mem.r[0] = (struct vq_region){ .gpa = 0, .size = MEM0, .uva = UVA0, .host = mem0 };
	mem.r[1] =
		(struct vq_region){ .gpa = MEM0, .size = MEM1, .uva = UVA0 + MEM0, .host = mem1 };
	return 0;
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}

static void split_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = mem0 + 16 * i;

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	put16(d + 12, flags);
	put16(d + 14, next);
}

/* Split ring of 8: descriptors at 0, avail at 0x1000, used at 0x2000. */
static void split_init(struct vq_split *vq, bool event_idx)
{
	memset(vq, 0, sizeof(*vq));
	vq->event_idx = event_idx;
	vq->indirect = true;
	assert_int_equal(vq_split_map(vq, &mem, 8, UVA0, UVA0 + 0x1000, UVA0 + 0x2000, 0), 0);
}

static void split_avail(uint16_t slot, uint16_t head, uint16_t new_idx)
{
	put16(mem0 + 0x1000 + 4 + 2 * slot, head);
	put16(mem0 + 0x1000 + 2, new_idx);
}

static void test_virtq_mem_translate(void **state)
{
	unsigned n = 0;

	assert_ptr_equal(vq_mem_gpa(&mem, 100, 10), mem0 + 100);
	assert_ptr_equal(vq_mem_gpa(&mem, MEM0 + 8, 8), mem1 + 8);
	assert_null(vq_mem_gpa(&mem, MEM0 - 4, 8)); /* spans two regions */
	assert_null(vq_mem_gpa(&mem, MEM0 + MEM1, 1));
	assert_null(vq_mem_gpa(&mem, UINT64_MAX - 4, 16));
	assert_ptr_equal(vq_mem_uva(&mem, UVA0 + 4, 4), mem0 + 4);
	assert_null(vq_mem_uva(&mem, 4, 4));
	/* A buffer across adjacent regions becomes two iovecs. */
	assert_int_equal(vq_mem_gpa_iov(&mem, MEM0 - 4, 8, iov, &n, 64), 0);
	assert_int_equal(n, 2);
	assert_ptr_equal(iov[0].iov_base, mem0 + MEM0 - 4);
	assert_int_equal(iov[0].iov_len, 4);
	assert_ptr_equal(iov[1].iov_base, mem1);
	n = 0;
	assert_int_equal(vq_mem_gpa_iov(&mem, MEM0 + MEM1 - 4, 8, iov, &n, 64), -EFAULT);
	n = 0;
	assert_int_equal(vq_mem_gpa_iov(&mem, MEM0 - 4, 8, iov, &n, 1), -E2BIG);
}

static void test_virtq_split_pop_push(void **state)
{
	struct vq_elem e = { .iov = iov, .cap = 64 };
	struct vq_split vq;
	const char *why = NULL;

	split_init(&vq, false);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), 0);
	split_desc(2, 0x4000, 16, VQ_DESC_F_NEXT, 5);
	split_desc(5, 0x5000, 512, VQ_DESC_F_NEXT | VQ_DESC_F_WRITE, 6);
	split_desc(6, 0x4010, 1, VQ_DESC_F_WRITE, 0);
	split_avail(0, 2, 1);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), 1);
	assert_int_equal(e.head, 2);
	assert_int_equal(e.out_num, 1);
	assert_int_equal(e.in_num, 2);
	assert_ptr_equal(iov[1].iov_base, mem0 + 0x5000);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), 0);
	vq_split_push(&vq, 2, 513);
	assert_int_equal(get16(mem0 + 0x2000 + 2), 1);
	assert_int_equal(mem0[0x2000 + 4], 2);
	assert_true(vq_split_should_notify(&vq));
	put16(mem0 + 0x1000, VQ_AVAIL_F_NO_INTERRUPT);
	assert_false(vq_split_should_notify(&vq));
}

static void test_virtq_split_event_idx(void **state)
{
	struct vq_split vq;

	split_init(&vq, true);
	/* The first notification is always sent; then only when used passes used_event. */
	vq_split_push(&vq, 0, 0);
	assert_true(vq_split_should_notify(&vq));
	put16(mem0 + 0x1000 + 4 + 2 * 8, 5); /* used_event: notify when used passes 5 */
	vq_split_push(&vq, 1, 0);
	assert_false(vq_split_should_notify(&vq)); /* used 2 */
	for (int i = 0; i < 4; i++)
		vq_split_push(&vq, 1, 0);
	assert_true(vq_split_should_notify(&vq)); /* used 6 > 5 */
	/* avail_event tells the driver where to kick next. */
	assert_false(vq_split_enable_notify(&vq));
	assert_int_equal(get16(mem0 + 0x2000 + 4 + 8 * 8), 0);
	split_avail(0, 0, 1);
	assert_true(vq_split_enable_notify(&vq));
}

static void test_virtq_split_malformed(void **state)
{
	struct vq_elem e = { .iov = iov, .cap = 64 };
	struct vq_split vq;
	const char *why = NULL;

	split_init(&vq, false);
	/* A loop. */
	split_desc(0, 0x4000, 16, VQ_DESC_F_NEXT, 1);
	split_desc(1, 0x5000, 16, VQ_DESC_F_NEXT, 0);
	split_avail(0, 0, 1);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), -EINVAL);
	assert_int_equal(e.head, 0);
	/* next out of range. */
	split_desc(0, 0x4000, 16, VQ_DESC_F_NEXT, 8);
	split_avail(1, 0, 2);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), -EINVAL);
	/* Nested indirect tables. */
	split_desc(0, 0x6000, 32, VQ_DESC_F_INDIRECT, 0);
	memcpy(mem0 + 0x6000, mem0, 16);
	split_avail(2, 0, 3);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), -EINVAL);
	/* A head out of range breaks the ring; so does an avail index jump. */
	split_avail(3, 9, 4);
	assert_int_equal(vq_split_pop(&vq, &mem, &e, &why), -EPROTO);
	split_init(&vq, false);
	put16(mem0 + 0x1000 + 2, 9);
	assert_int_equal(vq_split_pending(&vq), -EPROTO);
}

/* Packed ring of 4: descriptors at 0, driver area at 0x1000, device area at 0x1100. */
static void packed_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t id, uint16_t flags,
			bool wrap)
{
	uint8_t *d = mem0 + 16 * i;

	flags |= wrap ? VQ_DESC_F_AVAIL : VQ_DESC_F_USED;
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	put16(d + 12, id);
	put16(d + 14, flags);
}

static void test_virtq_packed_wrap(void **state)
{
	struct vq_elem e = { .iov = iov, .cap = 64 };
	struct vq_ring r;
	const char *why = NULL;

	assert_int_equal(vq_ring_map(&r, &mem, true, false, true, 4, UVA0, UVA0 + 0x1000,
				     UVA0 + 0x1100, 0x80008000u),
			 0);
	assert_int_equal(vq_ring_pop(&r, &mem, &e, &why), 0);
	/* A chain of 3 (id 7) and one of 1 (id 9): the second crosses the wrap. */
	packed_desc(0, 0x4000, 16, 0, VQ_DESC_F_NEXT, true);
	packed_desc(1, 0x5000, 512, 0, VQ_DESC_F_NEXT | VQ_DESC_F_WRITE, true);
	packed_desc(2, 0x4010, 1, 7, VQ_DESC_F_WRITE, true);
	packed_desc(3, 0x4020, 16, 0, VQ_DESC_F_NEXT, true);
	assert_int_equal(vq_ring_pop(&r, &mem, &e, &why), 1);
	assert_int_equal(e.head, 7);
	assert_int_equal(e.ndescs, 3);
	assert_int_equal(e.out_num, 1);
	assert_int_equal(e.in_num, 2);
	/* Descriptor 3 continues into 0 of the next lap (wrap counter 0). */
	packed_desc(0, 0x4030, 1, 9, VQ_DESC_F_WRITE, false);
	assert_int_equal(vq_ring_pop(&r, &mem, &e, &why), 1);
	assert_int_equal(e.head, 9);
	assert_int_equal(e.ndescs, 2);
	assert_int_equal(vq_ring_base(&r), 0x80000001u); /* avail 1, wrap 0; used 0, wrap 1 */
	/* Answer id 9 first: one used descriptor at position 0, then skip its 2. */
	vq_ring_push(&r, &e, 0);
	assert_int_equal(get16(mem0 + 12), 9);
	assert_int_equal(get16(mem0 + 14), VQ_DESC_F_AVAIL | VQ_DESC_F_USED);
	assert_int_equal(vq_ring_base(&r), 0x80020001u);
	e.head = 7;
	e.ndescs = 3;
	vq_ring_push(&r, &e, 513);
	assert_int_equal(get16(mem0 + 16 * 2 + 12), 7);
	assert_int_equal(get16(mem0 + 16 * 2 + 14),
			 VQ_DESC_F_AVAIL | VQ_DESC_F_USED | VQ_DESC_F_WRITE);
	assert_int_equal(vq_ring_base(&r), 0x00010001u); /* used 1 with the wrap flipped */
}

static void test_virtq_packed_notify(void **state)
{
	struct vq_elem e = { .head = 1, .ndescs = 1 };
	struct vq_ring r;

	assert_int_equal(vq_ring_map(&r, &mem, true, true, false, 4, UVA0, UVA0 + 0x1000,
				     UVA0 + 0x1100, 0x80008000u),
			 0);
	vq_ring_push(&r, &e, 0);
	assert_true(vq_ring_should_notify(&r));
	put16(mem0 + 0x1002, VQ_EVENT_FLAGS_DISABLE);
	vq_ring_push(&r, &e, 0);
	assert_false(vq_ring_should_notify(&r));
	/* DESC: notify once the used position passes offset 3 in this lap. */
	put16(mem0 + 0x1000, 0x8000 | 3);
	put16(mem0 + 0x1002, VQ_EVENT_FLAGS_DESC);
	vq_ring_push(&r, &e, 0);
	assert_false(vq_ring_should_notify(&r)); /* used 3 */
	vq_ring_push(&r, &e, 0);
	assert_true(vq_ring_should_notify(&r)); /* used 4 = 0 of the next lap */
	/* Kicks stay enabled in the device area. */
	assert_false(vq_ring_enable_notify(&r));
	assert_int_equal(get16(mem0 + 0x1102), VQ_EVENT_FLAGS_ENABLE);
}

static void test_virtq_packed_endless_chain(void **state)
{
	struct vq_elem e = { .iov = iov, .cap = 64 };
	struct vq_ring r;
	const char *why = NULL;

	assert_int_equal(vq_ring_map(&r, &mem, true, false, false, 4, UVA0, UVA0 + 0x1000,
				     UVA0 + 0x1100, 0x80008000u),
			 0);
	for (unsigned i = 0; i < 4; i++)
		packed_desc(i, 0x4000, 16, 0, VQ_DESC_F_NEXT, true);
	assert_int_equal(vq_ring_pop(&r, &mem, &e, &why), -EPROTO);
	/* A base outside the ring is refused. */
	assert_int_equal(vq_ring_map(&r, &mem, true, false, false, 4, UVA0, UVA0 + 0x1000,
				     UVA0 + 0x1100, 0x80008004u),
			 -EINVAL);
}

static void test_virtq_blk_parse(void **state)
{
	struct vq_elem e = { .iov = iov, .cap = 64 };
	struct vblk_req r;
	uint32_t type = VIRTIO_BLK_T_IN;
	uint64_t sector = 77;

	/* The header split over two buffers, 512 bytes of data, the status. */
	memcpy(mem0, &type, 4);
	memcpy(mem0 + 0x100 + 0, &sector, 8);
	iov[0] = (struct iovec){ mem0, 8 };
	iov[1] = (struct iovec){ mem0 + 0x100, 8 };
	iov[2] = (struct iovec){ mem0 + 0x1000, 513 };
	e.out_num = 2;
	e.in_num = 1;
	assert_int_equal(vblk_parse(&e, &r), 0);
	assert_false(r.bad_header);
	assert_int_equal(r.type, VIRTIO_BLK_T_IN);
	assert_int_equal(r.sector, 77);
	assert_int_equal(r.data_len, 512);
	assert_ptr_equal(r.status, mem0 + 0x1000 + 512);
	/* A status byte of its own leaves no empty iovec behind (it would look unaligned). */
	iov[0] = (struct iovec){ mem0, 16 };
	iov[1] = (struct iovec){ mem0 + 0x2000, 4096 };
	iov[2] = (struct iovec){ mem0 + 0x1001, 1 };
	e.out_num = 1;
	e.in_num = 2;
	assert_int_equal(vblk_parse(&e, &r), 0);
	assert_int_equal(r.data_num, 1);
	assert_int_equal(r.data_len, 4096);
	assert_ptr_equal(r.status, mem0 + 0x1001);
	/* A short header still has a status to report it in. */
	iov[0] = (struct iovec){ mem0, 8 };
	iov[1] = (struct iovec){ mem0 + 0x1000, 1 };
	e.out_num = 1;
	e.in_num = 1;
	assert_int_equal(vblk_parse(&e, &r), 0);
	assert_true(r.bad_header);
	/* No writable byte: nothing to answer in. */
	iov[0] = (struct iovec){ mem0, 16 };
	e.out_num = 1;
	e.in_num = 0;
	assert_int_equal(vblk_parse(&e, &r), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_virtq_mem_translate, setup),
		cmocka_unit_test_setup(test_virtq_split_pop_push, setup),
		cmocka_unit_test_setup(test_virtq_split_event_idx, setup),
		cmocka_unit_test_setup(test_virtq_split_malformed, setup),
		cmocka_unit_test_setup(test_virtq_packed_wrap, setup),
		cmocka_unit_test_setup(test_virtq_packed_notify, setup),
		cmocka_unit_test_setup(test_virtq_packed_endless_chain, setup),
		cmocka_unit_test_setup(test_virtq_blk_parse, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
