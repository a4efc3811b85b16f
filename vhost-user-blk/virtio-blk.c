/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-blk requests: parse a descriptor chain, run it on the node, answer.
 *
 * The header is copied out of guest memory before it is looked at (it may
 * span descriptors, and the guest may change it meanwhile); the payload
 * iovecs point straight into guest memory (zero copy) and go to the export as
 * they are. The export (libstore/export.c) checks every range against the
 * size the guest was told and applies the policy; this file only translates.
 */
#include "virtio-blk.h"
#include "bytes.h"
#include "iov.h"
#include "vstor/reactor.h"

#include <errno.h>
#include <string.h>

/* Drop the first @skip bytes of @iov[0..*@n) in place; returns the new start. */
static struct iovec *iov_skip(struct iovec *iov, unsigned *n, size_t skip)
{
	while (*n && skip >= iov->iov_len) {
		skip -= iov->iov_len;
		iov++;
		(*n)--;
	}
	if (*n && skip) {
		iov->iov_base = (uint8_t *)iov->iov_base + skip;
		iov->iov_len -= skip;
	}
	return iov;
}

int vblk_parse(struct vq_elem *e, struct vblk_req *r)
{
	struct iovec *out = e->iov, *in = e->iov + e->out_num;
	unsigned out_num = e->out_num, in_num = e->in_num;
	uint8_t hdr[16];

	memset(r, 0, sizeof(*r));
	/* The status is the last writable byte of the chain. */
	while (in_num && in[in_num - 1].iov_len == 0)
		in_num--;
	if (!in_num)
		return -EINVAL;
	r->status = (uint8_t *)in[in_num - 1].iov_base + in[in_num - 1].iov_len - 1;
	/*
	 * The status usually has a descriptor of its own: drop it whole, since an
	 * empty iovec at an odd address would make the payload look unaligned
	 * and send O_DIRECT requests through a bounce buffer.
	 */
	if (--in[in_num - 1].iov_len == 0)
		in_num--;
	if (vs_iov_size(out, (int)out_num) < sizeof(hdr)) {
		r->bad_header = true;
		return 0;
	}
	vs_iov_to_buf(hdr, out, (int)out_num, 0, sizeof(hdr));
	r->type = vs_le32(hdr);
	r->sector = vs_le64(hdr + 8);
	if (r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_GET_ID) {
		r->data = in;
		r->data_num = in_num;
	} else {
		r->data = iov_skip(out, &out_num, sizeof(hdr));
		r->data_num = out_num;
	}
	r->data_len = vs_iov_size(r->data, (int)r->data_num);
	return 0;
}

/* One export request, where the node lives. */
struct vblk_home_call {
	struct vblk_dev *d;
	enum vs_export_op op;
	uint64_t offset, len;
	struct vblk_req *r;
	unsigned flags;
	int ret;
};

static void run_there(void *opaque)
{
	struct vblk_home_call *h = opaque;

	h->ret = vs_export_request(h->d->exp, h->op, h->offset, h->len, h->r->data,
				   (int)h->r->data_num, h->flags);
}

/*
 * Run one request on the export from sector @sector (on the node's home
 * reactor when the queue runs elsewhere). A sector number whose byte
 * offset does not fit 64 bits is outside any disk.
 */
static uint8_t run(struct vblk_dev *d, enum vs_export_op op, uint64_t sector, uint64_t len,
		   struct vblk_req *r, unsigned flags)
{
	struct vblk_home_call h = { d, op, sector * VIRTIO_BLK_SECTOR, len, r, flags, 0 };

	if (sector > UINT64_MAX / VIRTIO_BLK_SECTOR)
		return VIRTIO_BLK_S_IOERR;
	if (r->port) {
		h.ret = vs_export_port_request(r->port, op, h.offset, len, r->data,
					       (int)r->data_num, flags);
	} else if (r->home) {
		if (vs_reactor_call(r->home, run_there, &h) < 0)
			return VIRTIO_BLK_S_IOERR;
	} else {
		run_there(&h);
	}
	return h.ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
}

/* Counters: queues on several reactors count into one set. */
#define STAT_INC(d, field) __atomic_fetch_add(&(d)->stats->field, 1, __ATOMIC_RELAXED)

static bool has(const struct vblk_dev *d, unsigned bit)
{
	return d->features & (1ull << bit);
}

/* One discard / write-zeroes segment (virtio_blk_discard_write_zeroes). */
static int exec_dwz(struct vblk_dev *d, struct vblk_req *r, bool zeroes)
{
	uint8_t seg[16];
	uint64_t sector, len;
	uint32_t nsec, flags;

	if (!has(d, zeroes ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD))
		return VIRTIO_BLK_S_UNSUPP;
	if (r->data_len != sizeof(seg)) /* max_discard_seg = max_write_zeroes_seg = 1 */
		return r->data_len && r->data_len % sizeof(seg) == 0 ? VIRTIO_BLK_S_UNSUPP :
								       VIRTIO_BLK_S_IOERR;
	vs_iov_to_buf(seg, r->data, (int)r->data_num, 0, sizeof(seg));
	sector = vs_le64(seg);
	nsec = vs_le32(seg + 8);
	flags = vs_le32(seg + 12);
	if (flags & ~1u)
		return VIRTIO_BLK_S_UNSUPP;
	if (!zeroes && (flags & 1)) /* the unmap flag is for write-zeroes only */
		return VIRTIO_BLK_S_UNSUPP;
	if (nsec > (zeroes ? VBLK_MAX_WZ_SECTORS : VBLK_MAX_DISCARD_SECTORS))
		return VIRTIO_BLK_S_IOERR;
	len = (uint64_t)nsec * VIRTIO_BLK_SECTOR;
	if (zeroes) {
		STAT_INC(d, write_zeroes);
		/* The unmap flag may deallocate if the export's discard mode is unmap. */
		return run(d, VS_EXPORT_OP_WRITE_ZEROES, sector, len, r,
			   (flags & 1) ? VS_EXPORT_MAY_UNMAP : 0);
	}
	STAT_INC(d, discards);
	return run(d, VS_EXPORT_OP_DISCARD, sector, len, r, 0);
}

uint32_t vblk_exec(struct vblk_dev *d, struct vblk_req *r)
{
	uint32_t used = 1; /* the status byte */
	uint8_t st;
	size_t n;

	if (r->bad_header) {
		st = VIRTIO_BLK_S_IOERR;
		goto out;
	}
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		STAT_INC(d, reads);
		used += (uint32_t)(r->data_len > UINT32_MAX - 1 ? UINT32_MAX - 1 : r->data_len);
		st = r->data_len % VIRTIO_BLK_SECTOR ?
			     VIRTIO_BLK_S_IOERR :
			     run(d, VS_EXPORT_OP_READ, r->sector, r->data_len, r, 0);
		break;
	case VIRTIO_BLK_T_OUT:
		STAT_INC(d, writes);
		/* Writethrough (the guest turned the write cache off) is the export's. */
		st = r->data_len % VIRTIO_BLK_SECTOR ?
			     VIRTIO_BLK_S_IOERR :
			     run(d, VS_EXPORT_OP_WRITE, r->sector, r->data_len, r, 0);
		break;
	case VIRTIO_BLK_T_FLUSH:
		STAT_INC(d, flushes);
		st = run(d, VS_EXPORT_OP_FLUSH, 0, 0, r, 0);
		break;
	case VIRTIO_BLK_T_GET_ID:
		STAT_INC(d, get_ids);
		/* As much of the serial as the buffer takes. */
		n = r->data_len < sizeof(d->serial) ? (size_t)r->data_len : sizeof(d->serial);
		vs_iov_from_buf(r->data, (int)r->data_num, 0, d->serial, n);
		used += (uint32_t)n;
		st = VIRTIO_BLK_S_OK;
		break;
	case VIRTIO_BLK_T_DISCARD:
		st = (uint8_t)exec_dwz(d, r, false);
		break;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		st = (uint8_t)exec_dwz(d, r, true);
		break;
	default:
		st = VIRTIO_BLK_S_UNSUPP;
		break;
	}
out:
	if (st == VIRTIO_BLK_S_IOERR)
		STAT_INC(d, io_errors);
	else if (st == VIRTIO_BLK_S_UNSUPP)
		STAT_INC(d, unsupported);
	*r->status = st;
	return used;
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

void vblk_config(const struct vblk_dev *d, unsigned num_queues, uint8_t *cfg)
{
	uint64_t cluster = vs_node_cluster_size(vs_export_node(d->exp));
	uint32_t align = cluster >= VIRTIO_BLK_SECTOR ? (uint32_t)(cluster / VIRTIO_BLK_SECTOR) : 8;

	memset(cfg, 0, VBLK_CFG_SIZE);
	put64(cfg + VBLK_CFG_CAPACITY, vs_export_size(d->exp) / VIRTIO_BLK_SECTOR);
	put32(cfg + VBLK_CFG_SEG_MAX, VBLK_SEG_MAX);
	put32(cfg + VBLK_CFG_BLK_SIZE, VIRTIO_BLK_SECTOR);
	cfg[VBLK_CFG_PHYS_BLOCK_EXP] = 0;
	put16(cfg + VBLK_CFG_MIN_IO_SIZE, 1);
	put32(cfg + VBLK_CFG_OPT_IO_SIZE, 0);
	cfg[VBLK_CFG_WRITEBACK] = d->wce;
	put16(cfg + VBLK_CFG_NUM_QUEUES, (uint16_t)num_queues);
	if (d->discard) {
		put32(cfg + VBLK_CFG_MAX_DISCARD_SECTORS, VBLK_MAX_DISCARD_SECTORS);
		put32(cfg + VBLK_CFG_MAX_DISCARD_SEG, 1);
		put32(cfg + VBLK_CFG_DISCARD_ALIGN, align);
	}
	if (d->write_zeroes) {
		put32(cfg + VBLK_CFG_MAX_WZ_SECTORS, VBLK_MAX_WZ_SECTORS);
		put32(cfg + VBLK_CFG_MAX_WZ_SEG, 1);
		cfg[VBLK_CFG_WZ_MAY_UNMAP] = d->discard;
	}
}

uint64_t vblk_features(const struct vblk_dev *d)
{
	uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_RING_PACKED) |
		     (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
		     (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
		     (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_TOPOLOGY) |
		     (1ull << VIRTIO_BLK_F_CONFIG_WCE) | (1ull << VIRTIO_BLK_F_MQ);

	bool ro = vs_export_is_read_only(d->exp);

	if (ro)
		f |= 1ull << VIRTIO_BLK_F_RO;
	if (d->discard && !ro)
		f |= 1ull << VIRTIO_BLK_F_DISCARD;
	if (d->write_zeroes && !ro)
		f |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	return f;
}
