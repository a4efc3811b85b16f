/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inflight I/O tracking for split rings (vhost-user.rst, "Inflight I/O
 * tracking"): the chains a ring took are marked in a memfd area that the
 * front end keeps across our restarts, so that a new back end resubmits what
 * a dead one never answered.
 */
#include "vhost-user-int.h"

#include <stdlib.h>

size_t vu_inflight_queue_size(unsigned qsize)
{
	size_t n = VU_INFLIGHT_HDR + 16 * (size_t)qsize;

	return (n + VU_INFLIGHT_ALIGN - 1) & ~(size_t)(VU_INFLIGHT_ALIGN - 1);
}

/* A chain was taken from the ring: it is in flight until its used entry is out. */
void vu_inflight_start(struct vu_vq *vq, uint16_t head)
{
	uint8_t *d = vu_inflight_desc(vq, head);
	uint64_t counter = ++vq->inflight_counter;

	memcpy(d + 8, &counter, 8);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(d, 1, __ATOMIC_RELAXED);
}

/* A head to resubmit and its counter, copied out of the shared area. */
struct inflight_head {
	uint64_t counter;
	uint16_t head;
};

static int inflight_cmp(const void *a, const void *b)
{
	const struct inflight_head *x = a, *y = b;

	return x->counter < y->counter ? -1 : x->counter > y->counter;
}

/*
 * The ring starts with an inflight region: requests a dead back end took and
 * never answered are still marked. Repair the one update a crash can tear
 * (the used index moved, the mark not yet cleared), then make the marked
 * heads the resubmit list (oldest first) and resume taking chains after them.
 */
void vu_inflight_recover(struct vu_vq *vq)
{
	uint16_t used = vq->ring.s.used_idx, num = vq->ring.s.num, last_batch, reg_used;
	struct inflight_head *list;
	uint64_t max_counter = 0;
	unsigned n = 0;

	memcpy(&last_batch, vq->inflight + 12, 2);
	memcpy(&reg_used, vq->inflight + 14, 2);
	if (reg_used != used) {
		if (last_batch < num)
			__atomic_store_n(vu_inflight_desc(vq, last_batch), 0, __ATOMIC_RELAXED);
		memcpy(vq->inflight + 14, &used, 2);
	}
	free(vq->resubmit);
	vq->resubmit = NULL;
	vq->nresubmit = 0;
	/*
	 * The area is shared with the front end, which may change it meanwhile:
	 * copy heads and counters out once, then sort our copy.
	 */
	list = malloc(num * sizeof(*list));
	if (!list)
		return;
	for (unsigned i = 0; i < num; i++) {
		if (__atomic_load_n(vu_inflight_desc(vq, i), __ATOMIC_RELAXED) != 1)
			continue;
		list[n].head = (uint16_t)i;
		memcpy(&list[n].counter, vu_inflight_desc(vq, i) + 8, 8);
		if (list[n].counter > max_counter)
			max_counter = list[n].counter;
		n++;
	}
	if (n) {
		qsort(list, n, sizeof(*list), inflight_cmp);
		vq->resubmit = malloc(n * sizeof(*vq->resubmit));
	}
	if (!vq->resubmit)
		n = 0;
	for (unsigned i = 0; i < n; i++)
		vq->resubmit[i] = list[i].head;
	free(list);
	vq->nresubmit = n;
	vq->inflight_counter = max_counter;
	/* The heads in flight were taken after the used ones. */
	vq->ring.s.last_avail = (uint16_t)(used + n);
	if (n)
		vu_log(vq->c->b, "queue %u: resubmitting %u requests of the previous back end",
		       vq->index, n);
}
