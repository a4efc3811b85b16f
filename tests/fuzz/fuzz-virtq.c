/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the split-virtqueue walker and the virtio-blk request parser
 * and executor (vhost-user-blk/virtq.c, virtio-blk.c), on guest memory the
 * input fills. The input:
 *
 *   byte 0   bit 0 event idx, bit 1 indirect descriptors, bits 2-4 log2 of
 *            the queue size (1..128), bit 5 packed ring (then bit 6 starts
 *            both wrap counters at 0 instead of 1, bit 7 makes the size 100)
 *   byte 1   bit 0 read-only, bit 1 discard, bit 2 write-zeroes, bit 3 write cache
 *   rest     the first 64 KiB of guest memory (descriptor table at 0, avail
 *            ring or driver area at 8 KiB, used ring or device area at
 *            12 KiB), zeroes after it
 *
 * Guest memory is two regions: 64 KiB at 0 and 4 KiB at 1 MiB, so chains can
 * point into holes and across region ends. Up to 64 chains are taken and run
 * on a 1 MiB memory image.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio-blk.h"
#include "virtq.h"
#include "vstor/reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEM0 65536
#define MEM1 4096
#define IOV_CAP (VQ_MAX_CHAIN + 2 * VQ_MAX_REGIONS)

static uint8_t mem0[MEM0] __attribute__((aligned(4096)));
static uint8_t mem1[MEM1] __attribute__((aligned(4096)));
static struct iovec iov[IOV_CAP];

struct run {
	const uint8_t *data;
	size_t size;
};

static void run_input(void *opaque)
{
	struct run *in = opaque;
	struct vs_open_opts o = { .filename = "memory:1M", .format = "raw" };
	struct vs_vhost_blk_stats stats = { 0 };
	struct vs_error err = { 0 };
	struct vblk_dev d = { .stats = &stats };
	struct vq_mem m = { .n = 2 };
	struct vq_ring vq;
	struct vs_node *node = NULL;
	uint8_t f0 = in->size > 0 ? in->data[0] : 0, f1 = in->size > 1 ? in->data[1] : 0;
	uint16_t num = (uint16_t)(1u << ((f0 >> 2) & 7));
	bool packed = f0 & 0x20;
	uint32_t base = packed && !(f0 & 0x40) ? 0x80008000u : 0;

	if (vs_image_open(&node, &o, &err) < 0)
		abort();
	memset(mem0, 0, sizeof(mem0));
	memset(mem1, 0, sizeof(mem1));
	if (in->size > 2)
		memcpy(mem0, in->data + 2, in->size - 2 < MEM0 ? in->size - 2 : MEM0);
	m.r[0] = (struct vq_region){ .gpa = 0, .size = MEM0, .uva = 0x10000000, .host = mem0 };
	m.r[1] =
		(struct vq_region){ .gpa = 1 << 20, .size = MEM1, .uva = 0x20000000, .host = mem1 };
	if (vs_export_new(&d.exp, &(struct vs_export_opts){
					  .node = node,
					  .read_only = f1 & 1,
					  .writethrough = !(f1 & 8),
					  .discard = (f1 & 2) ? VS_EXPORT_DISCARD_UNMAP :
								VS_EXPORT_DISCARD_IGNORE,
					  .detect_zeroes = (f1 >> 4) % 3,
					  .block_size = VIRTIO_BLK_SECTOR,
				  }) < 0)
		abort();
	d.discard = f1 & 2;
	d.write_zeroes = f1 & 4;
	d.wce = f1 & 8;
	d.features = vblk_features(&d);
	memcpy(d.serial, "fuzz", 4);
	if (packed && (f0 & 0x80))
		num = 100;
	if (vq_ring_map(&vq, &m, packed, f0 & 1, f0 & 2, num, 0x10000000, 0x10000000 + 8192,
			0x10000000 + 12288, base) < 0)
		abort();
	for (int i = 0; i < 64; i++) {
		struct vq_elem e = { .iov = iov, .cap = IOV_CAP };
		struct vblk_req r;
		const char *why = NULL;
		uint32_t used = 0;
		int ret = vq_ring_pop(&vq, &m, &e, &why);

		if (ret == 0 || ret == -EPROTO)
			break;
		if (ret == 1 && vblk_parse(&e, &r) == 0)
			used = vblk_exec(&d, &r);
		vq_ring_push(&vq, &e, used);
		(void)vq_ring_should_notify(&vq);
	}
	(void)vq_ring_enable_notify(&vq);
	if (getenv("VSTOR_FUZZ_VERBOSE")) /* what a seed reaches, for corpus work */
		fprintf(stderr, "reads %llu writes %llu discards %llu ioerr %llu base 0x%x\n",
			(unsigned long long)stats.reads, (unsigned long long)stats.writes,
			(unsigned long long)stats.discards, (unsigned long long)stats.io_errors,
			vq_ring_base(&vq));
	vs_export_free(d.exp);
	vs_node_close(node);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r = { data, size };

	if (vs_run_in_coroutine(run_input, &r) < 0)
		abort();
	return 0;
}
