/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest memory and split virtqueues, as a vhost-user back end sees them.
 *
 * Everything here reads memory that the guest (and the front end) may change
 * at any moment and that holds values chosen by the guest: every index and
 * address is checked before use, descriptors are copied out once before they
 * are interpreted, and no function trusts what it read a moment ago.
 * Nothing here touches the reactor: the functions are plain code, which lets
 * unit tests and fuzz targets drive them on ordinary memory.
 *
 * The layouts and rules are those of the virtio 1.2 specification, section
 * 2.7 (split virtqueues). The host is assumed little-endian, as virtio 1.x
 * rings are (the build refuses a big-endian target).
 */
#ifndef VSTOR_VIRTQ_H
#define VSTOR_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vhost-user-blk assumes a little-endian host"
#endif

/* At most this many memory regions (VHOST_MEMORY_BASELINE_NREGIONS). */
#define VQ_MAX_REGIONS 8

/* The longest descriptor chain we walk (QEMU's VIRTQUEUE_MAX_SIZE). */
#define VQ_MAX_CHAIN 1024

/* The largest queue size of a split ring (virtio 1.2, 2.7). */
#define VQ_MAX_SIZE 32768

/* Descriptor flags. */
#define VQ_DESC_F_NEXT 1
#define VQ_DESC_F_WRITE 2
#define VQ_DESC_F_INDIRECT 4

/* Packed rings: the driver's and the device's marks (virtio 1.2, 2.8.1). */
#define VQ_DESC_F_AVAIL (1 << 7)
#define VQ_DESC_F_USED (1 << 15)

/* Event suppression flags of packed rings. */
#define VQ_EVENT_FLAGS_ENABLE 0
#define VQ_EVENT_FLAGS_DISABLE 1
#define VQ_EVENT_FLAGS_DESC 2

/* avail->flags and used->flags. */
#define VQ_AVAIL_F_NO_INTERRUPT 1
#define VQ_USED_F_NO_NOTIFY 1

struct vq_region {
	uint64_t gpa;  /* guest physical address of the first byte */
	uint64_t size; /* bytes */
	uint64_t uva;  /* the front end's virtual address of the first byte */
	uint8_t *host; /* our mapping of the first byte */
	void *map;     /* what to munmap (NULL: not ours, e.g. in tests) */
	size_t map_len;
};

/* The memory table of a connection. */
struct vq_mem {
	unsigned n;
	struct vq_region r[VQ_MAX_REGIONS];
};

/*
 * Our pointer to [@gpa, @gpa + @len) of guest physical memory, or NULL if the
 * range is not inside one region (or wraps). @len 0 needs a valid @gpa.
 */
void *vq_mem_gpa(const struct vq_mem *m, uint64_t gpa, uint64_t len);

/* The same for an address in the front end's address space (ring addresses). */
void *vq_mem_uva(const struct vq_mem *m, uint64_t uva, uint64_t len);

/*
 * Append iovecs for [@gpa, @gpa + @len) to @iov (at *@n, capacity @cap); a
 * range may span adjacent regions. Returns 0, -EFAULT if part of the range is
 * not guest memory, -E2BIG if @cap is too small.
 */
int vq_mem_gpa_iov(const struct vq_mem *m, uint64_t gpa, uint64_t len, struct iovec *iov,
		   unsigned *n, unsigned cap);

/* A split virtqueue. */
struct vq_split {
	uint16_t num; /* queue size, a power of two */
	uint8_t *desc;
	uint8_t *avail;
	uint8_t *used;
	uint16_t last_avail; /* next avail slot to take */
	uint16_t used_idx;   /* our copy of used->idx */
	uint16_t signalled_used;
	bool signalled_used_valid;
	bool event_idx; /* VIRTIO_RING_F_EVENT_IDX negotiated */
	bool indirect;	/* VIRTIO_RING_F_INDIRECT_DESC negotiated */
};

/* Bytes of each part of a split ring of @num entries (with the event fields). */
static inline uint64_t vq_desc_size(unsigned num)
{
	return 16ull * num;
}
static inline uint64_t vq_avail_size(unsigned num)
{
	return 6 + 2ull * num;
}
static inline uint64_t vq_used_size(unsigned num)
{
	return 6 + 8ull * num;
}

/*
 * Set up @vq over ring memory already mapped and checked for size and
 * alignment by the caller (vq_split_map() does both). Reads used->idx.
 */
void vq_split_init(struct vq_split *vq, uint16_t num, void *desc, void *avail, void *used,
		   uint16_t last_avail);

/*
 * Map the three ring parts at front-end addresses @desc/@avail/@used through
 * @m and set up @vq. Returns 0, or -EINVAL (bad size or alignment), -EFAULT
 * (not in the memory table).
 */
int vq_split_map(struct vq_split *vq, const struct vq_mem *m, uint16_t num, uint64_t desc,
		 uint64_t avail, uint64_t used, uint16_t last_avail);

/* A descriptor chain taken from the ring. */
struct vq_elem {
	uint16_t head;	  /* split: the head index; packed: the buffer id */
	uint16_t ndescs;  /* packed: ring descriptors the chain took */
	unsigned out_num; /* device-readable iovecs, first in iov[] */
	unsigned in_num;  /* device-writable iovecs, after them */
	struct iovec *iov;
	unsigned cap; /* capacity of iov[] */
};

/*
 * Take the next available chain. Returns 1 with *@e filled, 0 if none is
 * available, -EINVAL if the chain is malformed (loop, bad index, address
 * outside guest memory, readable after writable, bad indirect table, too
 * long): e->head is then valid and the chain must be returned (used length
 * 0); -EPROTO if the ring itself is broken (avail index or head out of
 * range): the queue must stop. *@why gets a short reason on errors.
 */
int vq_split_pop(struct vq_split *vq, const struct vq_mem *m, struct vq_elem *e, const char **why);

/*
 * Map the chain starting at descriptor @head (already taken from the ring;
 * for resubmitting in-flight requests). Returns as vq_split_pop().
 */
int vq_split_read_chain(const struct vq_split *vq, const struct vq_mem *m, uint16_t head,
			struct vq_elem *e, const char **why);

/* Number of chains the driver has made available and we have not taken (or -EPROTO). */
int vq_split_pending(const struct vq_split *vq);

/* Return chain @head with @len bytes written into its buffers. */
void vq_split_push(struct vq_split *vq, uint16_t head, uint32_t len);

/*
 * After pushes: should the driver be notified (call eventfd)? Honours
 * VIRTQ_AVAIL_F_NO_INTERRUPT or, with event idx, used_event.
 */
bool vq_split_should_notify(struct vq_split *vq);

/*
 * Before sleeping on the kick eventfd: ask the driver to kick for the next
 * chain (avail_event with event idx). Returns true if chains arrived
 * meanwhile (process them instead of sleeping).
 */
bool vq_split_enable_notify(struct vq_split *vq);

/* A packed virtqueue (virtio 1.2, 2.8). */
struct vq_packed {
	uint16_t num; /* queue size, any value up to 32768 */
	uint8_t *desc;
	uint8_t *driver; /* driver event suppression (read) */
	uint8_t *device; /* device event suppression (written) */
	uint16_t last_avail;
	bool avail_wrap;
	uint16_t used_idx;
	bool used_wrap;
	uint16_t signalled_used;
	bool signalled_used_valid;
	bool event_idx;
	bool indirect;
};

/*
 * A ring of either layout, as the transport uses it. The base is what
 * SET/GET_VRING_BASE carry: split, the next avail index; packed, the next
 * avail index with its wrap counter in bit 15, and the used index and its
 * wrap counter in the upper 16 bits (QEMU's encoding).
 */
struct vq_ring {
	bool packed;
	struct vq_split s;
	struct vq_packed p;
};

static inline uint16_t vq_ring_num(const struct vq_ring *r)
{
	return r->packed ? r->p.num : r->s.num;
}

/*
 * Map a ring at front-end addresses @desc, @avail (split: avail ring;
 * packed: driver area) and @used (split: used ring; packed: device area).
 * Returns 0, -EINVAL (bad size, alignment or base) or -EFAULT.
 */
int vq_ring_map(struct vq_ring *r, const struct vq_mem *m, bool packed, bool event_idx,
		bool indirect, uint16_t num, uint64_t desc, uint64_t avail, uint64_t used,
		uint32_t base);
uint32_t vq_ring_base(const struct vq_ring *r);
/* As vq_split_pop(); a packed chain whose end cannot be found is -EPROTO. */
int vq_ring_pop(struct vq_ring *r, const struct vq_mem *m, struct vq_elem *e, const char **why);
void vq_ring_push(struct vq_ring *r, const struct vq_elem *e, uint32_t len);
bool vq_ring_should_notify(struct vq_ring *r);
bool vq_ring_enable_notify(struct vq_ring *r);

#endif
