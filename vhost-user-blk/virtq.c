/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest memory translation and split virtqueues (virtio 1.2, 2.7).
 * See virtq.h for the rules: every guest value is checked before use.
 */
#include "virtq.h"

#include <errno.h>
#include <string.h>

/* A descriptor as it sits in the table (little-endian). */
struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static const struct vq_region *find_gpa(const struct vq_mem *m, uint64_t gpa)
{
	for (unsigned i = 0; i < m->n; i++) {
		const struct vq_region *r = &m->r[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r;
	}
	return NULL;
}

void *vq_mem_gpa(const struct vq_mem *m, uint64_t gpa, uint64_t len)
{
	const struct vq_region *r = find_gpa(m, gpa);

	if (!r || len > r->size - (gpa - r->gpa))
		return NULL;
	return r->host + (gpa - r->gpa);
}

void *vq_mem_uva(const struct vq_mem *m, uint64_t uva, uint64_t len)
{
	for (unsigned i = 0; i < m->n; i++) {
		const struct vq_region *r = &m->r[i];

		if (uva >= r->uva && uva - r->uva < r->size) {
			if (len > r->size - (uva - r->uva))
				return NULL;
			return r->host + (uva - r->uva);
		}
	}
	return NULL;
}

int vq_mem_gpa_iov(const struct vq_mem *m, uint64_t gpa, uint64_t len, struct iovec *iov,
		   unsigned *n, unsigned cap)
{
	while (len) {
		const struct vq_region *r = find_gpa(m, gpa);
		uint64_t off, chunk;

		if (!r)
			return -EFAULT;
		off = gpa - r->gpa;
		chunk = r->size - off;
		if (chunk > len)
			chunk = len;
		if (*n >= cap)
			return -E2BIG;
		iov[*n].iov_base = r->host + off;
		iov[*n].iov_len = (size_t)chunk;
		(*n)++;
		gpa += chunk; /* cannot wrap: chunk ends inside a region */
		len -= chunk;
	}
	return 0;
}

/* Ring fields are shared with the guest: read each once, atomically. */
static inline uint16_t ld16(const uint8_t *p)
{
	return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED);
}

static inline void st16(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELAXED);
}

static inline void st32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)(void *)p, v, __ATOMIC_RELAXED);
}

#define AVAIL_FLAGS(vq) ((vq)->avail)
#define AVAIL_IDX(vq) ((vq)->avail + 2)
#define AVAIL_RING(vq, i) ((vq)->avail + 4 + 2 * (size_t)(i))
#define USED_EVENT(vq) ((vq)->avail + 4 + 2 * (size_t)(vq)->num)
#define USED_FLAGS(vq) ((vq)->used)
#define USED_IDX(vq) ((vq)->used + 2)
#define USED_RING(vq, i) ((vq)->used + 4 + 8 * (size_t)(i))
#define AVAIL_EVENT(vq) ((vq)->used + 4 + 8 * (size_t)(vq)->num)

void vq_split_init(struct vq_split *vq, uint16_t num, void *desc, void *avail, void *used,
		   uint16_t last_avail)
{
	bool event_idx = vq->event_idx, indirect = vq->indirect;

	memset(vq, 0, sizeof(*vq));
	vq->event_idx = event_idx;
	vq->indirect = indirect;
	vq->num = num;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	vq->last_avail = last_avail;
	vq->used_idx = ld16(USED_IDX(vq));
}

int vq_split_map(struct vq_split *vq, const struct vq_mem *m, uint16_t num, uint64_t desc,
		 uint64_t avail, uint64_t used, uint16_t last_avail)
{
	void *d, *a, *u;

	if (!num || num > VQ_MAX_SIZE || (num & (num - 1)))
		return -EINVAL;
	if ((desc & 15) || (avail & 1) || (used & 3))
		return -EINVAL;
	d = vq_mem_uva(m, desc, vq_desc_size(num));
	a = vq_mem_uva(m, avail, vq_avail_size(num));
	u = vq_mem_uva(m, used, vq_used_size(num));
	if (!d || !a || !u)
		return -EFAULT;
	/* Our mapping keeps the page alignment of the front end's. */
	if (((uintptr_t)d & 15) || ((uintptr_t)a & 1) || ((uintptr_t)u & 3))
		return -EINVAL;
	vq_split_init(vq, num, d, a, u, last_avail);
	return 0;
}

int vq_split_pending(const struct vq_split *vq)
{
	uint16_t n = (uint16_t)(ld16(AVAIL_IDX(vq)) - vq->last_avail);

	return n > vq->num ? -EPROTO : n;
}

static void read_desc(const uint8_t *table, unsigned i, struct vq_desc *d)
{
	memcpy(d, table + 16 * (size_t)i, sizeof(*d));
}

int vq_split_pop(struct vq_split *vq, const struct vq_mem *m, struct vq_elem *e, const char **why)
{
	const uint8_t *table = vq->desc;
	unsigned max = vq->num, i, seen = 0, total = 0;
	bool in_indirect = false;
	struct vq_desc d;
	int n, ret;

	n = vq_split_pending(vq);
	if (n < 0) {
		*why = "avail index moved by more than the queue size";
		return n;
	}
	if (n == 0)
		return 0;
	/* The entries are valid once we have seen the index that publishes them. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	i = ld16(AVAIL_RING(vq, vq->last_avail & (vq->num - 1)));
	if (i >= vq->num) {
		*why = "head index out of range";
		return -EPROTO;
	}
	vq->last_avail++;
	e->head = (uint16_t)i;
	e->out_num = e->in_num = 0;
	for (;;) {
		if (++seen > max || ++total > VQ_MAX_CHAIN) {
			*why = "descriptor chain too long or looping";
			return -EINVAL;
		}
		read_desc(table, i, &d);
		if (d.flags & VQ_DESC_F_INDIRECT) {
			if (!vq->indirect || in_indirect || (d.flags & VQ_DESC_F_NEXT)) {
				*why = "indirect descriptor not allowed here";
				return -EINVAL;
			}
			if (!d.len || (d.len & 15) || d.len / 16 > VQ_MAX_CHAIN) {
				*why = "bad indirect table length";
				return -EINVAL;
			}
			table = vq_mem_gpa(m, d.addr, d.len);
			if (!table) {
				*why = "indirect table outside guest memory";
				return -EINVAL;
			}
			max = d.len / 16;
			in_indirect = true;
			seen = 0;
			i = 0;
			continue;
		}
		if (d.flags & VQ_DESC_F_WRITE) {
			/* Writable iovecs follow the readable ones in iov[]. */
			ret = vq_mem_gpa_iov(m, d.addr, d.len, e->iov + e->out_num, &e->in_num,
					     e->cap - e->out_num);
		} else {
			if (e->in_num) {
				*why = "device-readable descriptor after a writable one";
				return -EINVAL;
			}
			ret = vq_mem_gpa_iov(m, d.addr, d.len, e->iov, &e->out_num, e->cap);
		}
		if (ret == -EFAULT) {
			*why = "buffer outside guest memory";
			return -EINVAL;
		}
		if (ret < 0) {
			*why = "too many segments";
			return -EINVAL;
		}
		if (!(d.flags & VQ_DESC_F_NEXT))
			break;
		i = d.next;
		if (i >= max) {
			*why = "next index out of range";
			return -EINVAL;
		}
	}
	return 1;
}

void vq_split_push(struct vq_split *vq, uint16_t head, uint32_t len)
{
	uint8_t *slot = USED_RING(vq, vq->used_idx & (vq->num - 1));

	st32(slot, head);
	st32(slot + 4, len);
	vq->used_idx++;
	/* The entry must be visible before the index that publishes it. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	st16(USED_IDX(vq), vq->used_idx);
}

bool vq_split_should_notify(struct vq_split *vq)
{
	uint16_t old, new, event;
	bool valid;

	/* Our used->idx store must be visible before we read the driver's event. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(ld16(AVAIL_FLAGS(vq)) & VQ_AVAIL_F_NO_INTERRUPT);
	old = vq->signalled_used;
	valid = vq->signalled_used_valid;
	new = vq->signalled_used = vq->used_idx;
	vq->signalled_used_valid = true;
	if (!valid)
		return true;
	event = ld16(USED_EVENT(vq));
	/* vring_need_event(): did new pass event since old? */
	return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

bool vq_split_enable_notify(struct vq_split *vq)
{
	if (vq->event_idx)
		st16(AVAIL_EVENT(vq), vq->last_avail);
	else
		st16(USED_FLAGS(vq), 0);
	/* Publish the request before looking at the index once more. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return vq_split_pending(vq) != 0;
}
