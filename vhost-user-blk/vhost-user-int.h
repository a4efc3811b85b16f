/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to the vhost-user back end: the state of a front-end connection,
 * its rings and their requests, shared by the files of the back end:
 * vhost-user.c (the connection and its messages), vhost-rings.c (taking
 * and serving requests), vhost-inflight.c (inflight tracking) and
 * vhost-mem.c (the memory table). Everything runs on the back end's reactor.
 */
#ifndef VSTOR_VHOST_USER_INT_H
#define VSTOR_VHOST_USER_INT_H

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vhost-user.h"
#include "virtio-blk.h"
#include "virtq.h"
#include "vstor/reactor.h"

/*
 * The inflight area (vhost-user.rst, "Inflight I/O tracking"), split rings:
 * per queue a 16-byte header (u64 features, u16 version, u16 desc_num,
 * u16 last_batch_head, u16 used_idx) and 16 bytes per descriptor (u8
 * inflight, 5 padding, u16 next, u64 counter), the whole 64-byte aligned.
 * It lives in a memfd that the front end keeps across our restarts.
 */
#define VU_INFLIGHT_ALIGN 64
#define VU_INFLIGHT_HDR 16
#define VU_INFLIGHT_MAX_QSIZE 1024

/* Room for a whole chain plus the splits of descriptors across regions. */
#define VU_IOV_CAP (VQ_MAX_CHAIN + 2 * VQ_MAX_REGIONS)

/*
 * Requests in flight per queue (each slot holds VU_IOV_CAP iovecs, ~17 KiB):
 * a front end with huge rings must not make us allocate without bound.
 * More chains wait in the ring until a slot frees up.
 */
#define VU_MAX_INFLIGHT 256

struct vu_vq;

/* A request slot: one chain taken from a ring, served by one coroutine. */
struct vu_req {
	struct vu_vq *vq;
	struct vu_req *next_free;
	struct vq_elem elem;
	const char *chain_err; /* malformed chain: return it unprocessed */
	struct iovec iov[VU_IOV_CAP];
};

struct vu_conn;

struct vu_vq {
	struct vu_conn *c;
	unsigned index;
	uint16_t num;
	uint32_t base; /* where the ring resumes while stopped (vq_ring_base()) */
	uint64_t desc, avail, used;
	bool addr_set;
	bool enabled;
	bool running;  /* the kick coroutine is alive */
	bool stopping; /* ... and has been asked to stop */
	bool broken;   /* stopped on a ring error until the front end resets it */
	/* Where it runs while started (vu_vq_reactor()); its coroutines and queues are there. */
	struct vs_reactor *reactor;
	int kick_fd, call_fd, err_fd;
	struct vs_co *kick_co;
	struct vq_ring ring;
	unsigned in_flight, nreqs;
	struct vu_req *free_reqs;
	struct vs_co_queue slot_wait; /* the kick coroutine waits for a free slot */
	struct vs_co_queue idle_wait; /* stop waits for the coroutine and requests */
	uint8_t *inflight;	      /* this queue's inflight region, or NULL */
	uint16_t inflight_qsize;      /* descriptors it has room for */
	bool tracking;		      /* the started ring records requests in it */
	uint64_t inflight_counter;
	uint16_t *resubmit; /* heads in flight when the last back end died, oldest first */
	unsigned nresubmit;
};

struct vu_conn {
	struct vs_vhost_blk *b;
	int fd;
	struct vs_co *reader;
	bool closing;
	bool waiting;	   /* not (yet) the front end being served */
	uint64_t deadline; /* CLOCK_MONOTONIC ns to send SET_OWNER by, 0 = none */
	struct vu_conn *next_waiting;
	uint64_t features;
	uint64_t proto_features;
	struct vq_mem mem;
	unsigned nvqs;
	struct vu_vq vqs[VS_VHOST_BLK_MAX_QUEUES];
	struct vs_vhost_blk_stats at_start;
	void *inflight_map; /* the inflight area (GET/SET_INFLIGHT_FD) */
	size_t inflight_len;
	int reply_fd;	/* an fd to send with the next reply, or -1 */
	int backend_fd; /* the back-end channel (SET_BACKEND_REQ_FD), or -1 */
};

struct vs_vhost_blk {
	struct vs_reactor *reactor;
	struct vs_vhost_blk_opts opts;
	struct vs_reactor *queue_reactors[VS_VHOST_BLK_MAX_QUEUES]; /* opts.queue_reactors' copy */
	/* The export's port on each of those but the home (NULL there; freed with the export). */
	struct vs_export_port *queue_ports[VS_VHOST_BLK_MAX_QUEUES];
	struct vblk_dev dev;
	struct vs_vhost_blk_stats stats;
	struct vu_conn *conn;	 /* the front end being served */
	struct vu_conn *waiting; /* accepted, not served: silent yet, or queued */
	unsigned nconns;	 /* the served one and the waiting ones */
	uint64_t handshake_ns;	 /* 0 = no limit */
	struct vs_co *watchdog;	 /* alive while connections have deadlines */
	int listen_fd;
	struct vs_co *listen_co;
	bool listener_alive;
	bool shutting_down;
	struct vs_co_queue idle_wait; /* the connection or the listener went away */
};

/* A line on stderr (unless quiet), prefixed "vstor-vhost: ". */
void vu_log(struct vs_vhost_blk *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static inline void set32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static inline void set64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static inline void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Eventfds are shared with the front end: never let a read or write block us. */
static inline void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static inline void signal_fd(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
		/* A full counter or a closed peer: the notification is moot. */
	}
}

/* ---- inflight tracking (vhost-inflight.c) ---- */

static inline uint8_t *vu_inflight_desc(const struct vu_vq *vq, unsigned i)
{
	return vq->inflight + VU_INFLIGHT_HDR + 16 * (size_t)i;
}

/* Bytes of one queue's inflight region for a ring of @qsize descriptors. */
size_t vu_inflight_queue_size(unsigned qsize);
void vu_inflight_start(struct vu_vq *vq, uint16_t head);
void vu_inflight_recover(struct vu_vq *vq);

/* ---- rings (vhost-rings.c) ---- */

void vu_vq_free_slots(struct vu_vq *vq);
void vu_vq_maybe_start(struct vu_vq *vq);
/* The export's port for queue @index (NULL: the queue runs at home, or no port). */
struct vs_export_port *vu_vq_port(const struct vs_vhost_blk *b, unsigned index);
/* The reactor queue @index runs on (vs_vhost_blk_opts.queue_reactors). */
struct vs_reactor *vu_vq_reactor(const struct vs_vhost_blk *b, unsigned index);
void vu_vq_stop(struct vu_vq *vq);
void vu_vq_reset(struct vu_vq *vq);

/* ---- memory table (vhost-mem.c) ---- */

void vu_mem_unmap(struct vq_mem *m);
int vu_mem_map(struct vs_vhost_blk *b, struct vq_mem *m, const uint8_t *p, uint32_t size,
	       const int *fds, unsigned nfds);

#endif
