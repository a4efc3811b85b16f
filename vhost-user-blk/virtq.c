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

/*
 * The indirect descriptor table at @addr (@len bytes) in guest memory, split
 * or packed (16-byte entries either way), or NULL with @why.
 */
static const uint8_t *indirect_table(const struct vq_mem *m, uint64_t addr, uint32_t len,
				     const char **why)
{
	const uint8_t *table;

	if (!len || (len & 15) || len / 16 > VQ_MAX_CHAIN) {
		*why = "bad indirect table length";
		return NULL;
	}
	table = vq_mem_gpa(m, addr, len);
	if (!table)
		*why = "indirect table outside guest memory";
	return table;
}

static void read_desc(const uint8_t *table, unsigned i, struct vq_desc *d)
{
	memcpy(d, table + 16 * (size_t)i, sizeof(*d));
}

/* Append one buffer of a chain to @e: readable ones first, then writable. */
static int add_buf(const struct vq_mem *m, struct vq_elem *e, uint64_t addr, uint32_t len,
		   bool write, const char **why)
{
	int ret;

	if (write) {
		/* Writable iovecs follow the readable ones in iov[]. */
		ret = vq_mem_gpa_iov(m, addr, len, e->iov + e->out_num, &e->in_num,
				     e->cap - e->out_num);
	} else {
		if (e->in_num) {
			*why = "device-readable descriptor after a writable one";
			return -EINVAL;
		}
		ret = vq_mem_gpa_iov(m, addr, len, e->iov, &e->out_num, e->cap);
	}
	if (ret == -EFAULT) {
		*why = "buffer outside guest memory";
		return -EINVAL;
	}
	if (ret < 0) {
		*why = "too many segments";
		return -EINVAL;
	}
	return 0;
}

int vq_split_pop(struct vq_split *vq, const struct vq_mem *m, struct vq_elem *e, const char **why)
{
	unsigned i;
	int n;

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
	return vq_split_read_chain(vq, m, (uint16_t)i, e, why);
}

int vq_split_read_chain(const struct vq_split *vq, const struct vq_mem *m, uint16_t head,
			struct vq_elem *e, const char **why)
{
	const uint8_t *table = vq->desc;
	unsigned max = vq->num, i = head, seen = 0, total = 0;
	bool in_indirect = false;
	struct vq_desc d;
	int ret;

	e->head = head;
	e->ndescs = 1;
	e->out_num = e->in_num = 0;
	if (head >= vq->num) {
		*why = "head index out of range";
		return -EPROTO;
	}
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
			table = indirect_table(m, d.addr, d.len, why);
			if (!table)
				return -EINVAL;
			max = d.len / 16;
			in_indirect = true;
			seen = 0;
			i = 0;
			continue;
		}
		ret = add_buf(m, e, d.addr, d.len, d.flags & VQ_DESC_F_WRITE, why);
		if (ret < 0)
			return ret;
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

/* ---- packed rings (virtio 1.2, 2.8) ---- */

/* A packed descriptor as it sits in the ring (little-endian). */
struct vq_pdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};

static void read_pdesc(const uint8_t *table, unsigned i, struct vq_pdesc *d)
{
	memcpy(d, table + 16 * (size_t)i, sizeof(*d));
}

/* Has the driver made the descriptor at our next position available? */
static bool packed_avail(const struct vq_packed *vq)
{
	uint16_t f = ld16(vq->desc + 16 * (size_t)vq->last_avail + 14);

	return !!(f & VQ_DESC_F_AVAIL) == vq->avail_wrap &&
	       !!(f & VQ_DESC_F_USED) != vq->avail_wrap;
}

static int vq_packed_map(struct vq_packed *vq, const struct vq_mem *m, uint16_t num, uint64_t desc,
			 uint64_t driver, uint64_t device, uint32_t base)
{
	void *d, *dr, *dv;

	if (!num || num > VQ_MAX_SIZE)
		return -EINVAL;
	if ((desc & 15) || (driver & 3) || (device & 3))
		return -EINVAL;
	if ((base & 0x7fff) >= num || ((base >> 16) & 0x7fff) >= num)
		return -EINVAL;
	d = vq_mem_uva(m, desc, vq_desc_size(num));
	dr = vq_mem_uva(m, driver, 4);
	dv = vq_mem_uva(m, device, 4);
	if (!d || !dr || !dv)
		return -EFAULT;
	if (((uintptr_t)d & 15) || ((uintptr_t)dr & 3) || ((uintptr_t)dv & 3))
		return -EINVAL;
	vq->num = num;
	vq->desc = d;
	vq->driver = dr;
	vq->device = dv;
	vq->last_avail = base & 0x7fff;
	vq->avail_wrap = (base >> 15) & 1;
	vq->used_idx = (base >> 16) & 0x7fff;
	vq->used_wrap = (base >> 31) & 1;
	vq->signalled_used_valid = false;
	return 0;
}

static int vq_packed_pop(struct vq_packed *vq, const struct vq_mem *m, struct vq_elem *e,
			 const char **why)
{
	unsigned start = vq->last_avail, i = start, n = 0;
	struct vq_pdesc d;

	if (!packed_avail(vq))
		return 0;
	/* The descriptors are valid once we have seen the flags that publish them. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	/* First find where the chain ends: its last descriptor has the buffer id. */
	for (;;) {
		read_pdesc(vq->desc, i, &d);
		if (++n > vq->num) {
			*why = "descriptor chain longer than the ring";
			return -EPROTO;
		}
		if (!(d.flags & VQ_DESC_F_NEXT))
			break;
		i = i + 1 == vq->num ? 0 : i + 1;
	}
	e->head = d.id;
	e->ndescs = (uint16_t)n;
	e->out_num = e->in_num = 0;
	vq->last_avail = (uint16_t)(vq->last_avail + n);
	if (vq->last_avail >= vq->num) {
		vq->last_avail = (uint16_t)(vq->last_avail - vq->num);
		vq->avail_wrap = !vq->avail_wrap;
	}
	/* Then map its buffers. */
	i = start;
	for (unsigned k = 0; k < n; k++) {
		int ret;

		read_pdesc(vq->desc, i, &d);
		if (d.flags & VQ_DESC_F_INDIRECT) {
			const uint8_t *table;

			if (!vq->indirect || n != 1) {
				*why = "indirect descriptor not allowed here";
				return -EINVAL;
			}
			table = indirect_table(m, d.addr, d.len, why);
			if (!table)
				return -EINVAL;
			/* Only the WRITE flag counts in an indirect table. */
			for (unsigned t = 0; t < d.len / 16; t++) {
				struct vq_pdesc td;

				read_pdesc(table, t, &td);
				ret = add_buf(m, e, td.addr, td.len, td.flags & VQ_DESC_F_WRITE,
					      why);
				if (ret < 0)
					return ret;
			}
			return 1;
		}
		ret = add_buf(m, e, d.addr, d.len, d.flags & VQ_DESC_F_WRITE, why);
		if (ret < 0)
			return ret;
		i = i + 1 == vq->num ? 0 : i + 1;
	}
	return 1;
}

static void vq_packed_push(struct vq_packed *vq, uint16_t id, uint16_t ndescs, uint32_t len)
{
	uint8_t *d = vq->desc + 16 * (size_t)vq->used_idx;
	uint16_t flags = vq->used_wrap ? VQ_DESC_F_AVAIL | VQ_DESC_F_USED : 0;

	if (len)
		flags |= VQ_DESC_F_WRITE;
	st32(d + 8, len);
	st16(d + 12, id);
	/* id and len must be visible before the flags that mark the descriptor used. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	st16(d + 14, flags);
	vq->used_idx = (uint16_t)(vq->used_idx + ndescs);
	if (vq->used_idx >= vq->num) {
		vq->used_idx = (uint16_t)(vq->used_idx - vq->num);
		vq->used_wrap = !vq->used_wrap;
	}
}

static bool vq_packed_should_notify(struct vq_packed *vq)
{
	uint16_t off_wrap, flags, old, new;
	bool valid;
	int off;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	off_wrap = ld16(vq->driver);
	flags = ld16(vq->driver + 2) & 3;
	old = vq->signalled_used;
	valid = vq->signalled_used_valid;
	new = vq->signalled_used = vq->used_idx;
	vq->signalled_used_valid = true;
	if (flags == VQ_EVENT_FLAGS_DISABLE)
		return false;
	if (flags != VQ_EVENT_FLAGS_DESC || !vq->event_idx || !valid)
		return true;
	/* The driver's event offset on our used index's scale (wrap-adjusted). */
	off = off_wrap & 0x7fff;
	if (!!(off_wrap >> 15) != vq->used_wrap)
		off -= vq->num;
	return (uint16_t)(new - (uint16_t)off - 1) < (uint16_t)(new - old);
}

static bool vq_packed_enable_notify(struct vq_packed *vq)
{
	/* Kicks stay enabled (RING_EVENT_FLAGS_ENABLE); look once more before sleeping. */
	st16(vq->device + 2, VQ_EVENT_FLAGS_ENABLE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return packed_avail(vq);
}

/* ---- either layout ---- */

int vq_ring_map(struct vq_ring *r, const struct vq_mem *m, bool packed, bool event_idx,
		bool indirect, uint16_t num, uint64_t desc, uint64_t avail, uint64_t used,
		uint32_t base)
{
	memset(r, 0, sizeof(*r));
	r->packed = packed;
	if (packed) {
		r->p.event_idx = event_idx;
		r->p.indirect = indirect;
		return vq_packed_map(&r->p, m, num, desc, avail, used, base);
	}
	if (base > 0xffff)
		return -EINVAL;
	r->s.event_idx = event_idx;
	r->s.indirect = indirect;
	return vq_split_map(&r->s, m, num, desc, avail, used, (uint16_t)base);
}

uint32_t vq_ring_base(const struct vq_ring *r)
{
	if (!r->packed)
		return r->s.last_avail;
	return (uint32_t)r->p.last_avail | (uint32_t)r->p.avail_wrap << 15 |
	       (uint32_t)r->p.used_idx << 16 | (uint32_t)r->p.used_wrap << 31;
}

int vq_ring_pop(struct vq_ring *r, const struct vq_mem *m, struct vq_elem *e, const char **why)
{
	return r->packed ? vq_packed_pop(&r->p, m, e, why) : vq_split_pop(&r->s, m, e, why);
}

void vq_ring_push(struct vq_ring *r, const struct vq_elem *e, uint32_t len)
{
	if (r->packed)
		vq_packed_push(&r->p, e->head, e->ndescs, len);
	else
		vq_split_push(&r->s, e->head, len);
}

bool vq_ring_should_notify(struct vq_ring *r)
{
	return r->packed ? vq_packed_should_notify(&r->p) : vq_split_should_notify(&r->s);
}

bool vq_ring_enable_notify(struct vq_ring *r)
{
	return r->packed ? vq_packed_enable_notify(&r->p) : vq_split_enable_notify(&r->s);
}
