/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vhost-user protocol (QEMU docs/interop/vhost-user.rst), back-end side,
 * for a virtio-blk device: the connections and the messages on the unix
 * socket (the rings are in vhost-rings.c, inflight tracking in
 * vhost-inflight.c, the memory table in vhost-mem.c). Everything runs on
 * the back end's reactor: one coroutine reads the socket, one per started
 * ring waits on its kick eventfd (a poll SQE) and takes requests, and each
 * request runs as its own coroutine on the image node with iovecs into
 * guest memory.
 *
 * The front end is not trusted: message sizes, indexes, addresses, the
 * memory table and the file descriptors are checked; a bad message fails
 * (REPLY_ACK) or drops the connection, never the process.
 */
#include "vhost-user.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "vhost-user-int.h"

/* Message types (front end to back end). */
enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_INFLIGHT_FD = 31,
	VU_SET_INFLIGHT_FD = 32,
};

#define VU_VERSION 0x1
#define VU_VERSION_MASK 0x3
#define VU_FLAG_REPLY 0x4
#define VU_FLAG_NEED_REPLY 0x8
#define VU_HDR_SIZE 12
#define VU_MAX_PAYLOAD 4096
#define VU_MAX_FDS 8
#define VU_VRING_IDX_MASK 0xffu
#define VU_VRING_NOFD (1u << 8)

#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VU_PROTO_F_MQ 0
#define VU_PROTO_F_REPLY_ACK 3
#define VU_PROTO_F_BACKEND_REQ 5
#define VU_PROTO_F_CONFIG 9
#define VU_PROTO_F_INFLIGHT_SHMFD 12
#define VU_PROTO_FEATURES                                                 \
	((1ull << VU_PROTO_F_MQ) | (1ull << VU_PROTO_F_REPLY_ACK) |       \
	 (1ull << VU_PROTO_F_BACKEND_REQ) | (1ull << VU_PROTO_F_CONFIG) | \
	 (1ull << VU_PROTO_F_INFLIGHT_SHMFD))

/* Back end to front end, on the channel of SET_BACKEND_REQ_FD. */
#define VU_BACKEND_CONFIG_CHANGE_MSG 2

/* Payload bytes of a message (front-end byte layout). */
struct vu_msg {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
	uint8_t payload[VU_MAX_PAYLOAD];
};

void vu_log(struct vs_vhost_blk *b, const char *fmt, ...)
{
	va_list ap;

	if (b->opts.quiet)
		return;
	fputs("vstor-vhost: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- messages ---- */

/* Receive one message and the fds that came with it. */
static int vu_recv(struct vu_conn *c, struct vu_msg *m, int *fds, unsigned *nfds)
{
	size_t got = 0;
	int ret;

	*nfds = 0;
	while (got < VU_HDR_SIZE) {
		ssize_t n;

		if (got == 0) {
			union {
				char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
				struct cmsghdr align;
			} cbuf;
			struct iovec iov = { m, VU_HDR_SIZE };
			struct msghdr mh = { .msg_iov = &iov,
					     .msg_iovlen = 1,
					     .msg_control = cbuf.buf,
					     .msg_controllen = sizeof(cbuf.buf) };
			bool trunc = false;

			ret = vs_aio_poll(c->fd, POLLIN);
			if (ret < 0)
				return ret;
			n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				return -errno;
			}
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
			     cm = CMSG_NXTHDR(&mh, cm)) {
				size_t k;

				if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
					continue;
				k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < k; i++) {
					int fd;

					memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
					if (*nfds < VU_MAX_FDS)
						fds[(*nfds)++] = fd;
					else
						close(fd), trunc = true;
				}
			}
			if (mh.msg_flags & MSG_CTRUNC)
				trunc = true;
			if (trunc) {
				while (*nfds)
					close(fds[--(*nfds)]);
				return -EMSGSIZE;
			}
			if (n == 0)
				return -ECONNRESET;
		} else {
			n = vs_aio_recv(c->fd, (uint8_t *)m + got, VU_HDR_SIZE - got, 0);
			if (n < 0)
				return (int)n;
			if (n == 0)
				return -ECONNRESET;
		}
		got += (size_t)n;
	}
	if ((m->flags & VU_VERSION_MASK) != VU_VERSION)
		return -EPROTO;
	if (m->size > VU_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (m->size) {
		ret = vs_aio_recv_full(c->fd, m->payload, m->size);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int vu_send_reply(struct vu_conn *c, struct vu_msg *m, uint32_t size)
{
	m->flags = VU_VERSION | VU_FLAG_REPLY;
	m->size = size;
	if (c->reply_fd >= 0) {
		/* A reply that carries a file descriptor (GET_INFLIGHT_FD): one sendmsg. */
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} cbuf;
		struct iovec iov = { m, VU_HDR_SIZE + size };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cbuf.buf,
				     .msg_controllen = sizeof(cbuf.buf) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		ssize_t n;
		int ret;

		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &c->reply_fd, sizeof(int));
		ret = vs_aio_poll(c->fd, POLLOUT);
		n = ret < 0 ? ret : sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(c->reply_fd);
		c->reply_fd = -1;
		if (n < 0)
			return ret < 0 ? ret : -errno;
		if ((size_t)n < VU_HDR_SIZE + size)
			return vs_aio_send_full(c->fd, (uint8_t *)m + n,
						VU_HDR_SIZE + size - (size_t)n);
		return 0;
	}
	return vs_aio_send_full(c->fd, m, VU_HDR_SIZE + size);
}

/* The ring named by a message's index, or NULL. */
static struct vu_vq *msg_vq(struct vu_conn *c, uint32_t index)
{
	return index < c->nvqs ? &c->vqs[index] : NULL;
}

/* Take the single fd of a KICK/CALL/ERR message (or none with the NOFD bit). */
static int take_ring_fd(struct vu_conn *c, const struct vu_msg *m, int *fds, unsigned nfds,
			struct vu_vq **vq, int *fd)
{
	uint64_t v;

	if (m->size != 8)
		return -EINVAL;
	v = get64(m->payload);
	*vq = msg_vq(c, (uint32_t)(v & VU_VRING_IDX_MASK));
	if (!*vq || (v & ~(uint64_t)(VU_VRING_IDX_MASK | VU_VRING_NOFD)))
		return -EINVAL;
	if (v & VU_VRING_NOFD) {
		if (nfds)
			return -EINVAL;
		*fd = -1;
		return 0;
	}
	if (nfds != 1)
		return -EINVAL;
	*fd = fds[0];
	fds[0] = -1;
	set_nonblock(*fd);
	return 0;
}

static void stats_log(struct vu_conn *c)
{
	struct vs_vhost_blk_stats now, *s = &now, *a = &c->at_start;

	vs_vhost_blk_get_stats(c->b, &now);
	vu_log(c->b,
	       "front end gone: %llu reads, %llu writes, %llu flushes, %llu discards, "
	       "%llu write-zeroes, %llu get-id, %llu I/O errors, %llu unsupported, "
	       "%llu bad chains",
	       (unsigned long long)(s->reads - a->reads),
	       (unsigned long long)(s->writes - a->writes),
	       (unsigned long long)(s->flushes - a->flushes),
	       (unsigned long long)(s->discards - a->discards),
	       (unsigned long long)(s->write_zeroes - a->write_zeroes),
	       (unsigned long long)(s->get_ids - a->get_ids),
	       (unsigned long long)(s->io_errors - a->io_errors),
	       (unsigned long long)(s->unsupported - a->unsupported),
	       (unsigned long long)(s->bad_chains - a->bad_chains));
}

static void inflight_unmap(struct vu_conn *c)
{
	for (unsigned i = 0; i < c->nvqs; i++) {
		c->vqs[i].inflight = NULL;
		c->vqs[i].inflight_qsize = 0;
		c->vqs[i].tracking = false;
	}
	if (c->inflight_map)
		munmap(c->inflight_map, c->inflight_len);
	c->inflight_map = NULL;
	c->inflight_len = 0;
}

/* Point each queue at its region of a mapped inflight area. */
static void inflight_assign(struct vu_conn *c, uint8_t *base, unsigned nq, unsigned qsize)
{
	for (unsigned i = 0; i < c->nvqs && i < nq; i++) {
		c->vqs[i].inflight = base + i * vu_inflight_queue_size(qsize);
		c->vqs[i].inflight_qsize = (uint16_t)qsize;
	}
}

/* GET_INFLIGHT_FD / SET_INFLIGHT_FD: u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size */
static int inflight_msg(struct vu_conn *c, struct vu_msg *m, int *fds, unsigned nfds)
{
	uint64_t size, off;
	uint16_t nq, qs;
	size_t need;
	void *map;
	int fd;

	if (m->size < 20)
		return -EINVAL;
	memcpy(&size, m->payload, 8);
	memcpy(&off, m->payload + 8, 8);
	memcpy(&nq, m->payload + 16, 2);
	memcpy(&qs, m->payload + 18, 2);
	if (!nq || nq > VS_VHOST_BLK_MAX_QUEUES || !qs || qs > VU_INFLIGHT_MAX_QSIZE)
		return -EINVAL;
	for (unsigned i = 0; i < c->nvqs; i++)
		if (c->vqs[i].running)
			return -EBUSY;
	need = nq * vu_inflight_queue_size(qs);
	if (m->request == VU_GET_INFLIGHT_FD) {
		fd = memfd_create("vstor-vhost-inflight", MFD_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (ftruncate(fd, (off_t)need) < 0) {
			close(fd);
			return -errno;
		}
		map = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			close(fd);
			return -errno;
		}
		for (unsigned i = 0; i < nq; i++) {
			uint8_t *q = (uint8_t *)map + i * vu_inflight_queue_size(qs);
			uint16_t version = 1;

			memcpy(q + 8, &version, 2);
			memcpy(q + 10, &qs, 2);
		}
		inflight_unmap(c);
		c->inflight_map = map;
		c->inflight_len = need;
		inflight_assign(c, map, nq, qs);
		size = need;
		off = 0;
		memcpy(m->payload, &size, 8);
		memcpy(m->payload + 8, &off, 8);
		c->reply_fd = fd;
		return 24;
	}
	/* SET_INFLIGHT_FD: the area we (or a back end before us) handed out. */
	if (nfds != 1 || size < need || off > SIZE_MAX - size)
		return -EINVAL;
	{
		struct stat st;

		if (fstat(fds[0], &st) < 0 || !S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size < off + size)
			return -EINVAL;
	}
	map = mmap(NULL, (size_t)(off + size), PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	if (map == MAP_FAILED)
		return -errno;
	if (c->b->opts.verbose)
		vu_log(c->b, "inflight area: %u queues of %u descriptors", nq, qs);
	inflight_unmap(c);
	c->inflight_map = map;
	c->inflight_len = (size_t)(off + size);
	inflight_assign(c, (uint8_t *)map + off, nq, qs);
	return -1;
}

static void conn_reset_device(struct vu_conn *c)
{
	for (unsigned i = 0; i < c->nvqs; i++)
		vu_vq_reset(&c->vqs[i]);
	inflight_unmap(c);
	vu_mem_unmap(&c->mem);
	c->features = 0;
	c->b->dev.features = 0;
}

/*
 * Handle one message. Returns the reply payload size (>= 0) when the message
 * has a reply, -1 when it has none, or -errno on failure. Fds it keeps are
 * set to -1 in @fds.
 */
static int vu_handle(struct vu_conn *c, struct vu_msg *m, int *fds, unsigned nfds)
{
	struct vs_vhost_blk *b = c->b;
	struct vu_vq *vq;
	bool packed = c->features & (1ull << VIRTIO_F_RING_PACKED);
	uint32_t idx, val;
	int fd, ret;

	switch (m->request) {
	case VU_GET_FEATURES:
		set64(m->payload,
		      vblk_features(&b->dev) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES));
		return 8;
	case VU_SET_FEATURES: {
		uint64_t f,
			offered = vblk_features(&b->dev) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES);

		if (m->size != 8)
			return -EINVAL;
		f = get64(m->payload);
		if (f & ~offered) {
			vu_log(b, "SET_FEATURES: 0x%llx was not offered",
			       (unsigned long long)(f & ~offered));
			return -EINVAL;
		}
		c->features = f;
		b->dev.features = f;
		if (b->opts.verbose)
			vu_log(b, "features 0x%llx: %s rings%s%s", (unsigned long long)f,
			       f & (1ull << VIRTIO_F_RING_PACKED) ? "packed" : "split",
			       f & (1ull << VIRTIO_RING_F_EVENT_IDX) ? ", event idx" : "",
			       f & (1ull << VIRTIO_RING_F_INDIRECT_DESC) ? ", indirect" : "");
		return -1;
	}
	case VU_GET_PROTOCOL_FEATURES:
		set64(m->payload, VU_PROTO_FEATURES);
		return 8;
	case VU_SET_PROTOCOL_FEATURES:
		if (m->size != 8 || (get64(m->payload) & ~VU_PROTO_FEATURES))
			return -EINVAL;
		c->proto_features = get64(m->payload);
		return -1;
	case VU_GET_QUEUE_NUM:
		set64(m->payload, c->nvqs);
		return 8;
	case VU_SET_OWNER:
		c->deadline = 0; /* a front end, not a socket that only connected */
		return -1;
	case VU_RESET_OWNER:
		conn_reset_device(c);
		return -1;
	case VU_SET_MEM_TABLE: {
		struct vq_mem fresh;

		ret = vu_mem_map(b, &fresh, m->payload, m->size, fds, nfds);
		if (ret < 0)
			return ret;
		/* Requests in flight point into the old mappings: let them finish. */
		for (unsigned i = 0; i < c->nvqs; i++)
			vu_vq_stop(&c->vqs[i]);
		vu_mem_unmap(&c->mem);
		c->mem = fresh;
		for (unsigned i = 0; i < c->nvqs; i++)
			vu_vq_maybe_start(&c->vqs[i]);
		return -1;
	}
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
	case VU_GET_VRING_BASE:
		if (m->size != 8)
			return -EINVAL;
		idx = get32(m->payload);
		val = get32(m->payload + 4);
		vq = msg_vq(c, idx);
		if (!vq)
			return -EINVAL;
		if (m->request == VU_GET_VRING_BASE) {
			vu_vq_stop(vq);
			/* The ring is stopped: the next start brings new eventfds. */
			close_fd(&vq->kick_fd);
			close_fd(&vq->call_fd);
			vq->broken = false;
			set32(m->payload + 4, vq->base);
			return 8;
		}
		if (m->request == VU_SET_VRING_ENABLE) {
			if (val > 1)
				return -EINVAL;
			vq->enabled = val;
			if (val)
				vu_vq_maybe_start(vq);
			else
				vu_vq_stop(vq);
			return -1;
		}
		if (vq->running)
			return -EBUSY;
		if (m->request == VU_SET_VRING_NUM) {
			/* Split rings need a power of two; packed ones any size. */
			if (!val || val > VQ_MAX_SIZE || (!packed && (val & (val - 1))))
				return -EINVAL;
			vq->num = (uint16_t)val;
			vu_vq_free_slots(vq); /* their count was bounded by the old size */
		} else {
			/* Packed: avail and used positions with wrap counters (vq_ring_base()). */
			if (!packed && val > 0xffff)
				return -EINVAL;
			vq->base = val;
		}
		vq->broken = false;
		return -1;
	case VU_SET_VRING_ADDR:
		if (m->size != 40)
			return -EINVAL;
		vq = msg_vq(c, get32(m->payload));
		if (!vq)
			return -EINVAL;
		if (vq->running)
			return -EBUSY;
		/* vhost_vring_addr: index, flags, desc, used, avail, log */
		vq->desc = get64(m->payload + 8);
		vq->used = get64(m->payload + 16);
		vq->avail = get64(m->payload + 24);
		vq->addr_set = true;
		vq->broken = false;
		vu_vq_maybe_start(vq);
		return -1;
	case VU_SET_VRING_KICK:
		ret = take_ring_fd(c, m, fds, nfds, &vq, &fd);
		if (ret < 0)
			return ret;
		vu_vq_stop(vq);
		close_fd(&vq->kick_fd);
		vq->kick_fd = fd;
		if (fd < 0) {
			vu_log(b, "queue %u: polling mode (no kick fd) is not supported",
			       vq->index);
			return -ENOTSUP;
		}
		/* Without protocol features a ring is enabled once it has its kick fd. */
		if (!(c->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)))
			vq->enabled = true;
		vq->broken = false;
		vu_vq_maybe_start(vq);
		return -1;
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		ret = take_ring_fd(c, m, fds, nfds, &vq, &fd);
		if (ret < 0)
			return ret;
		if (m->request == VU_SET_VRING_CALL) {
			close_fd(&vq->call_fd);
			vq->call_fd = fd;
		} else {
			close_fd(&vq->err_fd);
			vq->err_fd = fd;
		}
		return -1;
	case VU_GET_CONFIG:
	case VU_SET_CONFIG: {
		uint8_t cfg[VBLK_CFG_SIZE];
		uint32_t off, len;

		if (m->size < 12)
			return -EINVAL;
		off = get32(m->payload);
		len = get32(m->payload + 4);
		if (len > VBLK_CFG_SIZE || off > VBLK_CFG_SIZE - len || m->size != 12 + len)
			return -EINVAL;
		if (m->request == VU_GET_CONFIG) {
			vblk_config(&b->dev, c->nvqs, cfg);
			memcpy(m->payload + 12, cfg + off, len);
			return (int)(12 + len);
		}
		/* The only writable field: the write cache (CONFIG_WCE). */
		if (off != VBLK_CFG_WRITEBACK || len != 1 ||
		    !(c->features & (1ull << VIRTIO_BLK_F_CONFIG_WCE)))
			return -EINVAL;
		b->dev.wce = m->payload[12] != 0;
		vs_export_set_writethrough(b->dev.exp, !b->dev.wce);
		if (b->opts.verbose)
			vu_log(b, "guest set the write cache to %s",
			       b->dev.wce ? "write back" : "write through");
		return -1;
	}
	case VU_GET_INFLIGHT_FD:
	case VU_SET_INFLIGHT_FD:
		if (!(c->proto_features & (1ull << VU_PROTO_F_INFLIGHT_SHMFD)))
			return -ENOTSUP;
		return inflight_msg(c, m, fds, nfds);
	case VU_SET_BACKEND_REQ_FD:
		if (!(c->proto_features & (1ull << VU_PROTO_F_BACKEND_REQ)) || nfds != 1)
			return -EINVAL;
		if (c->backend_fd >= 0)
			close(c->backend_fd);
		c->backend_fd = fds[0];
		fds[0] = -1;
		return -1;
	default:
		vu_log(b, "unsupported request %u", m->request);
		return -ENOTSUP;
	}
}

static void conn_free(struct vu_conn *c)
{
	if (c->reply_fd >= 0)
		close(c->reply_fd);
	if (c->backend_fd >= 0)
		close(c->backend_fd);
	close(c->fd);
	free(c);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void waiting_unlink(struct vs_vhost_blk *b, struct vu_conn *c)
{
	for (struct vu_conn **pp = &b->waiting; *pp; pp = &(*pp)->next_waiting) {
		if (*pp == c) {
			*pp = c->next_waiting;
			break;
		}
	}
	c->waiting = false;
}

/*
 * Coroutine context: wait until @c has sent something and the device is
 * free, then make it the front end served. A socket that only connects
 * waits on the reactor's epoll instance (no ring slot) and never holds the
 * device. Returns false when it is dropped meanwhile.
 */
static bool conn_take_device(struct vu_conn *c)
{
	struct vs_vhost_blk *b = c->b;
	int ev = vs_aio_poll(c->fd, POLLIN);
	char byte;

	/* Gone without a word (or dropped meanwhile): it never becomes the front end. */
	if (ev < 0 || (ev & (POLLERR | POLLNVAL)) ||
	    recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
		c->closing = true;
	while (b->conn && !c->closing && !b->shutting_down)
		vs_co_queue_wait(&b->idle_wait);
	waiting_unlink(b, c);
	if (c->closing || b->shutting_down)
		return false;
	b->conn = c;
	b->stats.connections++;
	vs_vhost_blk_get_stats(b, &c->at_start);
	if (b->opts.verbose)
		vu_log(b, "front end connected");
	return true;
}

static void conn_main(void *opaque)
{
	struct vu_conn *c = opaque;
	struct vs_vhost_blk *b = c->b;
	struct vu_msg *m;
	int ret;

	c->reader = vs_co_self();
	if (!conn_take_device(c)) {
		c->reader = NULL;
		conn_free(c);
		b->nconns--;
		vs_co_queue_wake_all(&b->idle_wait);
		return;
	}
	m = malloc(sizeof(*m));
	ret = m ? 0 : -ENOMEM;
	while (ret == 0 && !c->closing) {
		int fds[VU_MAX_FDS];
		unsigned nfds;
		bool ack;
		int size;

		ret = vu_recv(c, m, fds, &nfds);
		if (ret < 0)
			break;
		size = vu_handle(c, m, fds, nfds);
		/* After the handler: SET_PROTOCOL_FEATURES may just have enabled it. */
		ack = (m->flags & VU_FLAG_NEED_REPLY) &&
		      (c->proto_features & (1ull << VU_PROTO_F_REPLY_ACK));
		for (unsigned i = 0; i < nfds; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		if (size >= 0) {
			ret = vu_send_reply(c, m, (uint32_t)size);
		} else if (ack) {
			/* REPLY_ACK: 0 for success, non-zero for failure; keep serving. */
			set64(m->payload, size == -1 ? 0 : 1);
			if (size != -1)
				vu_log(b, "request %u failed: %s", m->request, strerror(-size));
			ret = vu_send_reply(c, m, 8);
		} else if (size < -1) {
			vu_log(b, "request %u failed: %s; dropping the front end", m->request,
			       strerror(-size));
			ret = size;
		}
	}
	if (ret < 0 && ret != -ECONNRESET && ret != -ECANCELED && !c->closing)
		vu_log(b, "front end connection: %s", strerror(-ret));
	free(m);
	c->reader = NULL;
	conn_reset_device(c);
	/* A front end that goes away (QEMU killed) leaves a consistent image. */
	if (!b->opts.read_only) {
		ret = vs_node_flush(vs_export_node(vs_vhost_blk_get_export(b)));
		if (ret < 0)
			vu_log(b, "flush after the front end left: %s", strerror(-ret));
	}
	if (b->opts.verbose)
		stats_log(c);
	conn_free(c);
	b->conn = NULL;
	b->nconns--;
	vs_co_queue_wake_all(&b->idle_wait);
}

/* The watchdog: drop connections that have not sent SET_OWNER in time. */
static void vu_watchdog(void *opaque)
{
	struct vs_vhost_blk *b = opaque;
	uint64_t tick = b->handshake_ns / 4;

	if (tick > 1000000000ull)
		tick = 1000000000ull;
	if (tick < 100000000ull)
		tick = 100000000ull;
	while (!b->shutting_down && b->nconns) {
		uint64_t now;

		vs_co_sleep_ns(tick);
		if (b->shutting_down)
			break;
		now = now_ns();
		for (struct vu_conn *c = b->waiting; c; c = c->next_waiting) {
			if (c->deadline && now >= c->deadline) {
				c->deadline = 0;
				c->closing = true;
				b->stats.handshake_timeouts++;
				shutdown(c->fd, SHUT_RDWR);
			}
		}
		if (b->conn && b->conn->deadline && now >= b->conn->deadline) {
			b->conn->deadline = 0;
			b->stats.handshake_timeouts++;
			vu_log(b, "front end sent no SET_OWNER in %llu s: dropped",
			       (unsigned long long)(b->handshake_ns / 1000000000ull));
			shutdown(b->conn->fd, SHUT_RDWR);
		}
		vs_co_queue_wake_all(&b->idle_wait); /* queued ones that were dropped */
	}
	b->watchdog = NULL;
	vs_co_queue_wake_all(&b->idle_wait);
}

int vs_vhost_blk_serve_fd(struct vs_vhost_blk *b, int fd)
{
	struct vu_conn *c;

	if (b->shutting_down) {
		close(fd);
		return -EBUSY;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->b = b;
	c->fd = fd;
	c->reply_fd = -1;
	c->backend_fd = -1;
	c->nvqs = b->opts.num_queues;
	for (unsigned i = 0; i < c->nvqs; i++) {
		struct vu_vq *vq = &c->vqs[i];

		vq->c = c;
		vq->index = i;
		vq->kick_fd = vq->call_fd = vq->err_fd = -1;
	}
	if (b->handshake_ns)
		c->deadline = now_ns() + b->handshake_ns;
	c->waiting = true;
	c->next_waiting = b->waiting;
	b->waiting = c;
	b->nconns++;
	if (!vs_co_spawn(b->reactor, conn_main, c)) {
		b->waiting = c->next_waiting;
		b->nconns--;
		close(fd);
		free(c);
		return -ENOMEM;
	}
	if (!b->watchdog && b->handshake_ns)
		b->watchdog = vs_co_spawn(b->reactor, vu_watchdog, b);
	return 0;
}

static void listener_main(void *opaque)
{
	struct vs_vhost_blk *b = opaque;

	b->listen_co = vs_co_self();
	while (!b->shutting_down) {
		int fd = vs_aio_accept(b->listen_fd);

		if (fd < 0) {
			if (fd == -ECANCELED || b->shutting_down)
				break;
			if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM)
				vs_co_sleep_ns(100000000);
			continue;
		}
		if (b->shutting_down) {
			close(fd);
			break;
		}
		if (b->opts.max_connections != VS_VHOST_BLK_UNLIMITED &&
		    b->nconns >= b->opts.max_connections) {
			/* Closed at once: the backlog does not fill with front ends waiting in vain. */
			close(fd);
			b->stats.refused++;
			continue;
		}
		vs_vhost_blk_serve_fd(b, fd);
	}
	b->listen_co = NULL;
	b->listener_alive = false;
	vs_co_queue_wake_all(&b->idle_wait);
}

int vs_vhost_blk_new(struct vs_vhost_blk **out, const struct vs_vhost_blk_opts *opts)
{
	struct vs_vhost_blk *b;
	const char *serial = opts->serial ? opts->serial : "vstor";
	int ret;

	if (!opts->node || opts->num_queues > VS_VHOST_BLK_MAX_QUEUES ||
	    opts->nb_queue_reactors > VS_VHOST_BLK_MAX_QUEUES ||
	    (opts->nb_queue_reactors && !opts->queue_reactors))
		return -EINVAL;
	for (unsigned i = 0; i < opts->nb_queue_reactors; i++)
		if (!opts->queue_reactors[i])
			return -EINVAL;
	if (!vs_reactor_current())
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->reactor = vs_reactor_current();
	b->opts = *opts;
	for (unsigned i = 0; i < opts->nb_queue_reactors; i++)
		b->queue_reactors[i] = opts->queue_reactors[i];
	b->opts.queue_reactors = NULL; /* the copy above is the back end's */
	if (!b->opts.num_queues)
		b->opts.num_queues = 1;
	if (!b->opts.max_connections)
		b->opts.max_connections = VS_VHOST_BLK_DEFAULT_MAX_CONNECTIONS;
	if (!b->opts.handshake_limit)
		b->opts.handshake_limit = VS_VHOST_BLK_DEFAULT_HANDSHAKE_LIMIT;
	if (b->opts.handshake_limit != VS_VHOST_BLK_UNLIMITED)
		b->handshake_ns = b->opts.handshake_limit * 1000000000ull;
	b->listen_fd = -1;
	/* The guest sees whole sectors; the write cache is the guest's to toggle. */
	ret = vs_export_new(&b->dev.exp,
			    &(struct vs_export_opts){
				    .name = serial,
				    .node = opts->node,
				    .read_only = opts->read_only,
				    .writethrough = !opts->wce,
				    .discard = opts->discard ? VS_EXPORT_DISCARD_UNMAP :
							       VS_EXPORT_DISCARD_IGNORE,
				    .detect_zeroes = opts->detect_zeroes,
				    .block_size = VIRTIO_BLK_SECTOR,
			    });
	if (ret < 0) {
		free(b);
		return ret;
	}
	b->opts.read_only = vs_export_is_read_only(b->dev.exp);
	/* Queues away from home read and write mapped bytes there (one port per reactor). */
	for (unsigned i = 0; i < opts->nb_queue_reactors; i++) {
		struct vs_reactor *r = b->queue_reactors[i];

		if (r == b->reactor)
			continue;
		for (unsigned k = 0; k < i && !b->queue_ports[i]; k++)
			if (b->queue_reactors[k] == r)
				b->queue_ports[i] = b->queue_ports[k];
		if (!b->queue_ports[i] && vs_export_port_new(b->dev.exp, r, &b->queue_ports[i]) < 0)
			b->queue_ports[i] = NULL; /* its requests run at home */
	}
	b->dev.wce = opts->wce;
	b->dev.discard = opts->discard && !b->opts.read_only;
	b->dev.write_zeroes = opts->write_zeroes && !b->opts.read_only;
	strncpy(b->dev.serial, serial, sizeof(b->dev.serial));
	b->dev.stats = &b->stats;
	*out = b;
	return 0;
}

int vs_vhost_blk_add_listener(struct vs_vhost_blk *b, int fd)
{
	if (b->listener_alive)
		return -EBUSY;
	b->listen_fd = fd;
	b->listener_alive = true;
	if (!vs_co_spawn(b->reactor, listener_main, b)) {
		b->listener_alive = false;
		b->listen_fd = -1;
		close(fd);
		return -ENOMEM;
	}
	return 0;
}

int vs_vhost_blk_shutdown(struct vs_vhost_blk *b)
{
	b->shutting_down = true;
	vs_co_queue_wake_all(&b->idle_wait);
	if (b->listen_co && b->listen_co != vs_co_self())
		vs_aio_cancel(b->listen_co);
	if (b->watchdog && b->watchdog != vs_co_self())
		vs_aio_cancel(b->watchdog);
	if (b->conn) {
		b->conn->closing = true;
		if (b->conn->reader && b->conn->reader != vs_co_self())
			vs_aio_cancel(b->conn->reader);
	}
	for (struct vu_conn *c = b->waiting; c; c = c->next_waiting) {
		c->closing = true;
		if (c->reader)
			vs_aio_cancel(c->reader);
	}
	while (b->nconns || b->listener_alive || b->watchdog)
		vs_co_queue_wait(&b->idle_wait);
	close_fd(&b->listen_fd);
	return b->opts.read_only ? 0 : vs_node_flush(vs_export_node(vs_vhost_blk_get_export(b)));
}

void vs_vhost_blk_wait_idle(struct vs_vhost_blk *b)
{
	while (b->conn)
		vs_co_queue_wait(&b->idle_wait);
}

int vs_vhost_blk_config_changed(struct vs_vhost_blk *b)
{
	struct vu_conn *c = b->conn;
	uint8_t hdr[VU_HDR_SIZE] = { 0 };
	ssize_t n;

	if (!c || c->backend_fd < 0 || !(c->proto_features & (1ull << VU_PROTO_F_CONFIG)))
		return -ENOTCONN;
	/*
	 * No reply asked for: the front end answers by reading the config
	 * space (GET_CONFIG) on the main channel, and a front end that does
	 * not read this channel must not stall the back end.
	 */
	set32(hdr, VU_BACKEND_CONFIG_CHANGE_MSG);
	set32(hdr + 4, VU_VERSION);
	n = send(c->backend_fd, hdr, sizeof(hdr), MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(hdr) ? 0 : -EIO;
}

bool vs_vhost_blk_connected(const struct vs_vhost_blk *b)
{
	return b->conn != NULL;
}

void vs_vhost_blk_get_stats(const struct vs_vhost_blk *b, struct vs_vhost_blk_stats *st)
{
	/* Queues on other reactors count into the same set: word by word. */
	const uint64_t *from = (const uint64_t *)&b->stats;
	uint64_t *to = (uint64_t *)st;

	_Static_assert(sizeof(*st) % sizeof(uint64_t) == 0, "the counters are 64-bit words");
	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

struct vs_export *vs_vhost_blk_get_export(struct vs_vhost_blk *b)
{
	return b->dev.exp;
}

void vs_vhost_blk_free(struct vs_vhost_blk *b)
{
	if (!b)
		return;
	vs_export_free(b->dev.exp);
	if (b->listen_fd >= 0)
		close(b->listen_fd);
	free(b);
}
