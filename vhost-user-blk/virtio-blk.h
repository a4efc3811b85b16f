/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-blk requests (virtio 1.2, section 5.2): the parser, which turns a
 * descriptor chain into a checked request without trusting its layout, and
 * the executor, which runs it on the image node. Separate from the vhost-user
 * transport so that tests and fuzz targets can drive them directly.
 */
#ifndef VSTOR_VIRTIO_BLK_H
#define VSTOR_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vhost-user.h"
#include "vstor/export.h"
#include "virtq.h"

/* Feature bits. */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_GEOMETRY 4
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_RING_PACKED 34

/* Request types and status values. */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR 512

/* struct virtio_blk_config offsets (little-endian fields). */
#define VBLK_CFG_CAPACITY 0
#define VBLK_CFG_SIZE_MAX 8
#define VBLK_CFG_SEG_MAX 12
#define VBLK_CFG_BLK_SIZE 20
#define VBLK_CFG_PHYS_BLOCK_EXP 24
#define VBLK_CFG_MIN_IO_SIZE 26
#define VBLK_CFG_OPT_IO_SIZE 28
#define VBLK_CFG_WRITEBACK 32
#define VBLK_CFG_NUM_QUEUES 34
#define VBLK_CFG_MAX_DISCARD_SECTORS 36
#define VBLK_CFG_MAX_DISCARD_SEG 40
#define VBLK_CFG_DISCARD_ALIGN 44
#define VBLK_CFG_MAX_WZ_SECTORS 48
#define VBLK_CFG_MAX_WZ_SEG 52
#define VBLK_CFG_WZ_MAY_UNMAP 56
/* Room for the fields we fill and the ones newer front ends may ask for. */
#define VBLK_CFG_SIZE 256

/* What we advertise. */
#define VBLK_SEG_MAX 126
#define VBLK_MAX_DISCARD_SECTORS (1u << 21) /* 1 GiB */
#define VBLK_MAX_WZ_SECTORS (1u << 21)

/*
 * The device state the requests need (one per back end). The export holds
 * the node and the policy (read-only, write cache, discard, detect-zeroes,
 * the size in whole sectors) and counts the requests that reach it.
 */
struct vblk_dev {
	struct vs_export *exp;
	bool wce;	   /* the guest's view of the write cache (keep the export's in step) */
	bool discard;	   /* offer DISCARD (the export's discard mode is unmap) */
	bool write_zeroes; /* offer WRITE_ZEROES */
	uint64_t features; /* acked by the driver */
	char serial[VIRTIO_BLK_ID_BYTES];
	struct vs_vhost_blk_stats *stats;
};

/* A parsed request: what the chain says, checked for shape (not for range). */
struct vblk_req {
	uint32_t type;
	uint64_t sector;
	struct iovec *data; /* the payload iovecs (inside the element's array) */
	unsigned data_num;
	uint64_t data_len;
	uint8_t *status; /* the status byte in guest memory, NULL if the chain has none */
	bool bad_header; /* the chain is too short for the 16-byte header */
	/*
	 * Where the export's node lives when the queue runs on another
	 * reactor: its export requests run there (vs_reactor_call); NULL: here.
	 */
	struct vs_reactor *home;
	/* Then: the export's port on the queue's reactor (reads, writes), or NULL. */
	struct vs_export_port *port;
};

/*
 * Parse @e (its iovecs are trimmed in place). Returns 0, or -EINVAL when the
 * chain has no writable byte for the status (it can only be returned with
 * used length 0).
 */
int vblk_parse(struct vq_elem *e, struct vblk_req *r);

/*
 * Coroutine context. Run @r on @d's export, write the status byte and return
 * the used length (bytes written into the chain's writable buffers).
 */
uint32_t vblk_exec(struct vblk_dev *d, struct vblk_req *r);

/* Fill the config space @cfg (VBLK_CFG_SIZE bytes) for @d with @num_queues. */
void vblk_config(const struct vblk_dev *d, unsigned num_queues, uint8_t *cfg);

/* The feature bits @d offers (virtio-blk and ring features, not vhost-user's). */
uint64_t vblk_features(const struct vblk_dev *d);

#endif
