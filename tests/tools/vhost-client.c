/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vhost-client: a small vhost-user-blk front end for tests and benchmarks.
 * It plays the VMM: guest memory is a memfd, the rings live in it, and it
 * speaks vhost-user on the back end's socket. Modes:
 *
 *   vhost-client SOCKET conformance [NQ]   valid requests and the error
 *                                          statuses every back end must give
 *                                          (run against qemu-storage-daemon too)
 *   vhost-client SOCKET readonly           a read-only device refuses writes
 *   vhost-client SOCKET inflight           INFLIGHT_SHMFD: requests a dead back
 *                                          end left are run by the next one
 *   vhost-client SOCKET hostile            malformed chains, rings and messages;
 *                                          the back end must answer and survive
 *   vhost-client SOCKET config-change [SECTORS]
 *                                          the back-end channel: prints the
 *                                          capacity and "ready", waits for a
 *                                          config-change message, prints the
 *                                          new capacity (must be SECTORS)
 *   vhost-client SOCKET write SECTOR LEN BYTE
 *                                          one write of LEN bytes, each BYTE
 *                                          (0x.. or decimal), from SECTOR
 *   vhost-client SOCKET bench RW BS QD SECS [NQ]
 *                                          RW = randread, randwrite, read, write;
 *                                          prints "iops N mbps N requests N"
 *
 * Exit status 0 when every check passed; each failure prints a line.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (160u << 20)
#define RING_AREA 0x0	      /* 64 KiB per queue */
#define INDIRECT_AREA 0x80000 /* 512 KiB .. 1 MiB: indirect tables */
#define HDR_AREA 0x100000     /* 1 MiB: headers and status bytes, per slot */
#define DATA_AREA 0x200000    /* 2 MiB ..: data buffers, 1 MiB per slot, 32 slots per queue */
#define MAX_Q 4
#define QSIZE 256
#define TIMEOUT_MS 5000

/* vhost-user */
enum {
	GET_FEATURES = 1,
	SET_FEATURES = 2,
	SET_OWNER = 3,
	SET_MEM_TABLE = 5,
	SET_VRING_NUM = 8,
	SET_VRING_ADDR = 9,
	SET_VRING_BASE = 10,
	GET_VRING_BASE = 11,
	SET_VRING_KICK = 12,
	SET_VRING_CALL = 13,
	GET_PROTOCOL_FEATURES = 15,
	SET_PROTOCOL_FEATURES = 16,
	GET_QUEUE_NUM = 17,
	SET_VRING_ENABLE = 18,
	GET_CONFIG = 24,
};
#define F_PROTOCOL_FEATURES (1ull << 30)
#define PF_MQ (1ull << 0)
#define PF_REPLY_ACK (1ull << 3)
#define PF_BACKEND_REQ (1ull << 5)
#define SET_BACKEND_REQ_FD 21
#define BACKEND_CONFIG_CHANGE_MSG 2
#define PF_CONFIG (1ull << 9)
#define PF_INFLIGHT (1ull << 12)
#define GET_INFLIGHT_FD 31
#define SET_INFLIGHT_FD 32
#define NEED_REPLY 0x8

/* virtio */
#define F_INDIRECT (1ull << 28)
#define F_EVENT_IDX (1ull << 29)
#define F_VERSION_1 (1ull << 32)
#define F_BLK_SEG_MAX (1ull << 2)
#define F_BLK_RO (1ull << 5)
#define F_BLK_BLK_SIZE (1ull << 6)
#define F_BLK_FLUSH (1ull << 9)
#define F_BLK_MQ (1ull << 12)
#define F_BLK_DISCARD (1ull << 13)
#define F_BLK_WZ (1ull << 14)
#define D_NEXT 1
#define D_WRITE 2
#define D_INDIRECT 4
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WZ 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define S_NONE 0xff /* our sentinel: the back end did not write the status */

struct vq {
	unsigned idx, num;
	uint64_t desc, avail, used; /* guest physical = offsets into mem */
	int kick, call;
	uint16_t avail_idx, last_used;
};

struct client {
	int sock, memfd;
	uint8_t *mem;
	uint64_t offered, features, proto;
	unsigned nq;
	struct vq vq[MAX_Q];
	uint64_t capacity; /* sectors */
	bool event_idx;
};

static int failures;
static const char *sock_path;

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
	va_list ap;

	fputs("vhost-client: FAIL: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("vhost-client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* ---- messages ---- */

static int send_msg(struct client *c, uint32_t req, uint32_t flags, const void *payload,
		    uint32_t size, const int *fds, unsigned nfds)
{
	uint8_t buf[12 + 512];
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr a;
	} cbuf;
	struct iovec iov = { buf, 12 + size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint32_t hdr[3] = { req, 0x1 | flags, size };

	memcpy(buf, hdr, 12);
	if (size > 512)
		die("message too large");
	if (size)
		memcpy(buf + 12, payload, size);
	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	return sendmsg(c->sock, &mh, MSG_NOSIGNAL) == (ssize_t)(12 + size) ? 0 : -EIO;
}

static int recv_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, (char *)buf + got, len - got, 0);
		if (n <= 0)
			return -ECONNRESET;
		got += (size_t)n;
	}
	return 0;
}

/* Receive a reply to @req into @payload (up to @cap bytes); returns its size or -errno. */
static int recv_reply(struct client *c, uint32_t req, void *payload, uint32_t cap)
{
	uint32_t hdr[3];
	uint8_t junk[512];

	if (recv_full(c->sock, hdr, 12) < 0)
		return -ECONNRESET;
	if (hdr[0] != req || !(hdr[1] & 0x4) || hdr[2] > sizeof(junk))
		return -EPROTO;
	if (recv_full(c->sock, hdr[2] <= cap ? payload : junk, hdr[2]) < 0)
		return -ECONNRESET;
	return hdr[2] <= cap ? (int)hdr[2] : -EMSGSIZE;
}

static int get_u64(struct client *c, uint32_t req, uint64_t *v)
{
	if (send_msg(c, req, 0, NULL, 0, NULL, 0) < 0)
		return -EIO;
	return recv_reply(c, req, v, 8) == 8 ? 0 : -EPROTO;
}

/* Send a message that has no reply; with REPLY_ACK, ask for one and return its verdict. */
static int set_msg(struct client *c, uint32_t req, const void *p, uint32_t size, const int *fds,
		   unsigned nfds)
{
	bool ack = c->proto & PF_REPLY_ACK;
	uint64_t v;

	if (send_msg(c, req, ack ? NEED_REPLY : 0, p, size, fds, nfds) < 0)
		return -EIO;
	if (!ack)
		return 0;
	if (recv_reply(c, req, &v, 8) != 8)
		return -ECONNRESET;
	return v ? -EINVAL : 0;
}

static int set_u64(struct client *c, uint32_t req, uint64_t v)
{
	return set_msg(c, req, &v, 8, NULL, 0);
}

static int set_state(struct client *c, uint32_t req, uint32_t idx, uint32_t num)
{
	uint32_t p[2] = { idx, num };

	return set_msg(c, req, p, 8, NULL, 0);
}

static int set_mem_table(struct client *c, uint64_t size)
{
	uint64_t p[5] = { 1, 0, size, (uint64_t)(uintptr_t)c->mem, 0 };

	/* nregions (u32) + padding, then one region: gpa, size, uva, mmap offset */
	return set_msg(c, SET_MEM_TABLE, p, 40, &c->memfd, 1);
}

static int set_vring_addr(struct client *c, struct vq *q, uint64_t desc, uint64_t used,
			  uint64_t avail)
{
	uint64_t base = (uint64_t)(uintptr_t)c->mem;
	uint32_t p[10] = { q->idx, 0 };
	uint64_t a[3] = { base + desc, base + used, base + avail };

	memcpy(p + 2, a, 24);
	memset(p + 8, 0, 8);
	return set_msg(c, SET_VRING_ADDR, p, 40, NULL, 0);
}

/* ---- rings ---- */

static uint8_t *gp(struct client *c, uint64_t gpa)
{
	return c->mem + gpa;
}

static void put_desc(struct client *c, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	uint8_t *d = gp(c, table + 16ull * i);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void make_avail(struct client *c, struct vq *q, uint16_t head)
{
	uint8_t *avail = gp(c, q->avail);
	uint16_t idx = q->avail_idx;

	memcpy(avail + 4 + 2 * (idx % q->num), &head, 2);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	q->avail_idx++;
	__atomic_store_n((uint16_t *)(void *)(avail + 2), q->avail_idx, __ATOMIC_RELAXED);
}

static void kick(struct vq *q)
{
	uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (write(q->kick, &one, 8) != 8)
		die("kick: %s", strerror(errno));
}

/* Take one used entry if there is one. */
static bool take_used(struct client *c, struct vq *q, uint32_t *id, uint32_t *len)
{
	uint8_t *used = gp(c, q->used);
	uint16_t idx = __atomic_load_n((uint16_t *)(void *)(used + 2), __ATOMIC_ACQUIRE);
	uint8_t *e;

	if (idx == q->last_used)
		return false;
	e = used + 4 + 8 * (q->last_used % q->num);
	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
	q->last_used++;
	if (c->event_idx) /* used_event: notify us on the next completion */
		memcpy(gp(c, q->avail) + 4 + 2 * q->num, &q->last_used, 2);
	return true;
}

/* Wait for one completion; returns 0 or -ETIMEDOUT. */
static int wait_used(struct client *c, struct vq *q, uint32_t *id, uint32_t *len)
{
	for (;;) {
		struct pollfd p = { q->call, POLLIN, 0 };
		uint64_t v;

		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (take_used(c, q, id, len))
			return 0;
		if (poll(&p, 1, TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
		if (read(q->call, &v, 8) < 0 && errno != EAGAIN)
			return -EIO;
	}
}

static void vq_layout(struct vq *q, unsigned idx, unsigned num)
{
	q->idx = idx;
	q->num = num;
	q->desc = RING_AREA + 0x10000ull * idx;
	q->avail = q->desc + 16ull * num;
	q->used = (q->avail + 6 + 2ull * num + 4095) & ~4095ull;
	q->avail_idx = q->last_used = 0;
}

/*
 * Give queue @idx to the back end. @fresh: new (zeroed) ring memory from
 * index 0; otherwise the ring as it is, resumed at @base (a reconnection).
 */
static int setup_vq(struct client *c, unsigned idx, unsigned num, bool fresh, uint32_t base)
{
	struct vq *q = &c->vq[idx];
	int ret;

	if (fresh) {
		vq_layout(q, idx, num);
		memset(gp(c, q->desc), 0, 0x10000);
	}
	q->kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->call = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->kick < 0 || q->call < 0)
		die("eventfd: %s", strerror(errno));
	ret = set_state(c, SET_VRING_NUM, idx, num);
	if (!ret)
		ret = set_state(c, SET_VRING_BASE, idx, base);
	if (!ret)
		ret = set_vring_addr(c, q, q->desc, q->used, q->avail);
	if (!ret)
		ret = set_msg(c, SET_VRING_KICK, &(uint64_t){ idx }, 8, &q->kick, 1);
	if (!ret)
		ret = set_msg(c, SET_VRING_CALL, &(uint64_t){ idx }, 8, &q->call, 1);
	if (!ret && (c->features & F_PROTOCOL_FEATURES))
		ret = set_state(c, SET_VRING_ENABLE, idx, 1);
	return ret;
}

static void client_close(struct client *c)
{
	for (unsigned i = 0; i < c->nq; i++) {
		close(c->vq[i].kick);
		close(c->vq[i].call);
	}
	c->nq = 0;
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
}

static int client_connect(struct client *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strncpy(sa.sun_path, sock_path, sizeof(sa.sun_path) - 1);
	if (c->sock < 0 || connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	return 0;
}

/*
 * Negotiate like QEMU up to the memory table, for @nq queues. @want: extra
 * virtio features to ask for; @want_proto: extra protocol features.
 */
static int client_negotiate(struct client *c, unsigned nq, uint64_t want, uint64_t want_pf)
{
	uint64_t offered, nqueues, want_proto;
	uint8_t cfg[12 + 60] = { 0 };
	uint32_t ch[3] = { 0, 60, 0 };

	if (client_connect(c) < 0)
		return -ECONNREFUSED;
	c->proto = 0;
	if (get_u64(c, GET_FEATURES, &offered) < 0)
		return -EPROTO;
	if (!(offered & F_PROTOCOL_FEATURES) || !(offered & F_VERSION_1))
		return -ENOTSUP;
	c->offered = offered;
	if (get_u64(c, GET_PROTOCOL_FEATURES, &c->proto) < 0)
		return -EPROTO;
	want_proto = c->proto & (PF_MQ | PF_REPLY_ACK | PF_CONFIG | want_pf);
	/* As QEMU: no reply asked for this one; REPLY_ACK applies from the next. */
	c->proto = 0;
	if (set_u64(c, SET_PROTOCOL_FEATURES, want_proto) < 0)
		return -EPROTO;
	c->proto = want_proto;
	if ((c->proto & PF_MQ) && get_u64(c, GET_QUEUE_NUM, &nqueues) == 0 && nqueues < nq)
		return -ENOTSUP;
	if (c->proto & PF_CONFIG) {
		memcpy(cfg, ch, 12);
		if (send_msg(c, GET_CONFIG, 0, cfg, 12 + 60, NULL, 0) < 0 ||
		    recv_reply(c, GET_CONFIG, cfg, sizeof(cfg)) != 12 + 60)
			return -EPROTO;
		memcpy(&c->capacity, cfg + 12, 8);
	}
	if (set_msg(c, SET_OWNER, NULL, 0, NULL, 0) < 0)
		return -EPROTO;
	c->features = offered &
		      (F_PROTOCOL_FEATURES | F_VERSION_1 | F_BLK_SEG_MAX | F_BLK_BLK_SIZE |
		       F_BLK_FLUSH | F_BLK_MQ | F_BLK_DISCARD | F_BLK_WZ | want);
	c->event_idx = c->features & F_EVENT_IDX;
	if (set_u64(c, SET_FEATURES, c->features) < 0)
		return -EPROTO;
	if (set_mem_table(c, MEM_SIZE) < 0)
		return -EPROTO;
	return 0;
}

/* Negotiate like QEMU and start @nq queues. @want: extra virtio features to ask for. */
static int client_start(struct client *c, unsigned nq, uint64_t want)
{
	int ret = client_negotiate(c, nq, want, 0);

	if (ret < 0)
		return ret;
	c->nq = 0;
	for (unsigned i = 0; i < nq; i++) {
		ret = setup_vq(c, i, QSIZE, true, 0);
		c->nq = i + 1;
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- requests ---- */

/* Per-slot areas (slot 0 for the synchronous requests). */
static uint64_t hdr_gpa(unsigned q, unsigned slot)
{
	return HDR_AREA + (q * 64u + slot) * 32u;
}

static uint64_t data_gpa(unsigned q, unsigned slot)
{
	return DATA_AREA + ((uint64_t)q * 32u + slot) * (1u << 20);
}

static void put_hdr(struct client *c, uint64_t gpa, uint32_t type, uint64_t sector)
{
	uint32_t t[2] = { type, 0 };

	memcpy(gp(c, gpa), t, 8);
	memcpy(gp(c, gpa + 8), &sector, 8);
	*gp(c, gpa + 16) = S_NONE;
}

/*
 * A standard request on queue @qi, synchronously: header, optional data, status.
 * Returns the status byte (S_NONE if untouched) and the used length in *@used.
 */
static int blk_req(struct client *c, unsigned qi, uint32_t type, uint64_t sector, uint64_t data,
		   uint32_t len, bool indirect, uint32_t *used)
{
	struct vq *q = &c->vq[qi];
	uint64_t h = hdr_gpa(qi, 0), table = q->desc;
	bool dev_writes = type == T_IN || type == T_GET_ID;
	unsigned n = 0;
	uint32_t id, ul;

	put_hdr(c, h, type, sector);
	if (indirect)
		table = INDIRECT_AREA + 0x1000ull * qi;
	put_desc(c, table, n, h, 16, D_NEXT, (uint16_t)(n + 1));
	n++;
	if (len) {
		put_desc(c, table, n, data, len, D_NEXT | (dev_writes ? D_WRITE : 0),
			 (uint16_t)(n + 1));
		n++;
	}
	put_desc(c, table, n, h + 16, 1, D_WRITE, 0);
	n++;
	if (indirect)
		put_desc(c, q->desc, 0, table, 16 * n, D_INDIRECT, 0);
	make_avail(c, q, 0);
	kick(q);
	if (wait_used(c, q, &id, &ul) < 0) {
		failf("request type %u sector %" PRIu64 ": no completion", type, sector);
		return -1;
	}
	if (id != 0)
		failf("used id %u, expected 0", id);
	if (used)
		*used = ul;
	return *gp(c, h + 16);
}

#define EXPECT(cond, ...)                   \
	do {                                \
		if (!(cond))                \
			failf(__VA_ARGS__); \
	} while (0)

static void fill(struct client *c, uint64_t gpa, uint32_t len, uint8_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		*gp(c, gpa + i) = (uint8_t)(seed + i * 7 + (i >> 9));
}

static bool check(struct client *c, uint64_t gpa, uint32_t len, uint8_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		if (*gp(c, gpa + i) != (uint8_t)(seed + i * 7 + (i >> 9)))
			return false;
	return true;
}

/*
 * Stop queue @qi (GET_VRING_BASE must report every chain taken) and start it
 * again on fresh ring memory from index 0, as after a guest reboot.
 */
static void restart_queue(struct client *c, unsigned qi, unsigned num)
{
	struct vq *q = &c->vq[qi];
	uint32_t p[2] = { qi, 0 };

	if (c->features & F_PROTOCOL_FEATURES)
		set_state(c, SET_VRING_ENABLE, qi, 0);
	if (send_msg(c, GET_VRING_BASE, 0, p, 8, NULL, 0) < 0 ||
	    recv_reply(c, GET_VRING_BASE, p, 8) != 8) {
		failf("GET_VRING_BASE %u: no reply", qi);
		return;
	}
	EXPECT(p[1] == q->avail_idx, "GET_VRING_BASE %u: %u, expected %u", qi, p[1], q->avail_idx);
	close(q->kick);
	close(q->call);
	if (setup_vq(c, qi, num, true, 0) < 0)
		failf("queue %u: restart refused", qi);
}

/*
 * @n reads in flight at once on queue @qi, restarted with 1024 entries, one
 * indirect descriptor each: more than a back end may take at once, so it
 * must hold the rest in the ring and still answer every one.
 */
static void burst(struct client *c, unsigned qi, unsigned n)
{
	struct vq *q = &c->vq[qi];
	static bool seen[1024];
	unsigned got = 0;

	restart_queue(c, qi, 1024);
	memset(seen, 0, sizeof(seen));
	for (unsigned i = 0; i < n; i++) {
		uint64_t table = INDIRECT_AREA + 48ull * i, h = HDR_AREA + 32ull * i;

		put_hdr(c, h, T_IN, 8ull * i);
		put_desc(c, table, 0, h, 16, D_NEXT, 1);
		put_desc(c, table, 1, DATA_AREA + 4096ull * i, 512, D_NEXT | D_WRITE, 2);
		put_desc(c, table, 2, h + 16, 1, D_WRITE, 0);
		put_desc(c, q->desc, i, table, 48, D_INDIRECT, 0);
		make_avail(c, q, (uint16_t)i);
	}
	kick(q);
	while (got < n) {
		uint32_t id, len;

		if (wait_used(c, q, &id, &len) < 0) {
			failf("burst: %u of %u completions", got, n);
			return;
		}
		if (id >= n || seen[id]) {
			failf("burst: bad or repeated id %u", id);
			return;
		}
		seen[id] = true;
		EXPECT(*gp(c, HDR_AREA + 32ull * id + 16) == S_OK && len == 513,
		       "burst: request %u status %d len %u", id, *gp(c, HDR_AREA + 32ull * id + 16),
		       len);
		got++;
	}
}

/* Requests every back end must answer the same way. */
static void conformance(struct client *c)
{
	uint64_t d = data_gpa(0, 0), d2 = data_gpa(0, 1);
	uint32_t used;
	int st;

	EXPECT(c->capacity >= 4096, "capacity %" PRIu64 " sectors, expected >= 2 MiB", c->capacity);
	for (unsigned qi = 0; qi < c->nq; qi++) {
		uint64_t sector = 2048 + 256 * qi; /* 1 MiB + 128 KiB per queue */

		fill(c, d, 65536, (uint8_t)(0x40 + qi));
		st = blk_req(c, qi, T_OUT, sector, d, 65536, false, &used);
		EXPECT(st == S_OK, "q%u write: status %d", qi, st);
		memset(gp(c, d2), 0, 65536);
		st = blk_req(c, qi, T_IN, sector, d2, 65536, false, &used);
		EXPECT(st == S_OK, "q%u read: status %d", qi, st);
		EXPECT(used >= 65537, "q%u read: used length %u, expected >= 65537", qi, used);
		EXPECT(check(c, d2, 65536, (uint8_t)(0x40 + qi)), "q%u read back differs", qi);
		/* The same through an indirect table, if offered. */
		if (c->features & F_INDIRECT) {
			memset(gp(c, d2), 0, 65536);
			st = blk_req(c, qi, T_IN, sector, d2, 65536, true, &used);
			EXPECT(st == S_OK && check(c, d2, 65536, (uint8_t)(0x40 + qi)),
			       "q%u indirect read: status %d", qi, st);
		}
	}
	if (c->features & F_BLK_FLUSH) {
		st = blk_req(c, 0, T_FLUSH, 0, 0, 0, false, NULL);
		EXPECT(st == S_OK, "flush: status %d", st);
	}
	memset(gp(c, d2), 0, 20);
	st = blk_req(c, 0, T_GET_ID, 0, d2, 20, false, &used);
	EXPECT(st == S_OK, "get-id: status %d", st);
	/* Out of range: at the end, across the end, far beyond. */
	st = blk_req(c, 0, T_IN, c->capacity, d, 512, false, NULL);
	EXPECT(st == S_IOERR, "read at the end: status %d, expected IOERR", st);
	st = blk_req(c, 0, T_IN, c->capacity - 1, d, 1024, false, NULL);
	EXPECT(st == S_IOERR, "read across the end: status %d, expected IOERR", st);
	st = blk_req(c, 0, T_OUT, c->capacity - 1, d, 1024, false, NULL);
	EXPECT(st == S_IOERR, "write across the end: status %d, expected IOERR", st);
	st = blk_req(c, 0, T_IN, UINT64_MAX / 256, d, 512, false, NULL);
	EXPECT(st == S_IOERR, "read at a huge sector: status %d, expected IOERR", st);
	/* Not a multiple of the sector size. */
	st = blk_req(c, 0, T_IN, 0, d, 700, false, NULL);
	EXPECT(st == S_IOERR, "700-byte read: status %d, expected IOERR", st);
	/* An unknown request type. */
	st = blk_req(c, 0, 99, 0, d, 512, false, NULL);
	EXPECT(st == S_UNSUPP, "type 99: status %d, expected UNSUPP", st);
	/* The header split over two descriptors is still one header. */
	{
		struct vq *q = &c->vq[0];
		uint64_t h = hdr_gpa(0, 0);
		uint32_t id, ul;

		fill(c, d, 4096, 0x21);
		put_hdr(c, h, T_OUT, 4096);
		put_desc(c, q->desc, 0, h, 8, D_NEXT, 1);
		put_desc(c, q->desc, 1, h + 8, 8, D_NEXT, 2);
		put_desc(c, q->desc, 2, d, 4096, D_NEXT, 3);
		put_desc(c, q->desc, 3, h + 16, 1, D_WRITE, 0);
		make_avail(c, q, 0);
		kick(q);
		EXPECT(wait_used(c, q, &id, &ul) == 0 && *gp(c, h + 16) == S_OK,
		       "split-header write failed (status %d)", *gp(c, h + 16));
		memset(gp(c, d2), 0, 4096);
		st = blk_req(c, 0, T_IN, 4096, d2, 4096, false, NULL);
		EXPECT(st == S_OK && check(c, d2, 4096, 0x21), "split-header write: bad read back");
	}
	/* Queue 0 restarted from index 0 (a guest reboot) serves again. */
	restart_queue(c, 0, QSIZE);
	memset(gp(c, d2), 0, 4096);
	st = blk_req(c, 0, T_IN, 4096, d2, 4096, false, NULL);
	EXPECT(st == S_OK && check(c, d2, 4096, 0x21), "read after a queue restart: status %d", st);
	/* More requests at once than a back end takes (1024-entry ring). */
	if (c->features & F_INDIRECT)
		burst(c, 0, 600);
	/* A marker the test reads back on the host: 64 KiB of 0xa5 at 4 MiB. */
	memset(gp(c, d), 0xa5, 65536);
	st = blk_req(c, 0, T_OUT, 8192, d, 65536, false, NULL);
	EXPECT(st == S_OK, "marker write: status %d", st);
	if (c->features & F_BLK_FLUSH) {
		st = blk_req(c, 0, T_FLUSH, 0, 0, 0, false, NULL);
		EXPECT(st == S_OK, "flush: status %d", st);
	}
}

/* A read-only device: reads work, writes fail, the RO feature is offered. */
static void readonly(struct client *c)
{
	uint64_t d = data_gpa(0, 0);
	int st;

	EXPECT(c->offered & F_BLK_RO, "VIRTIO_BLK_F_RO not offered");
	st = blk_req(c, 0, T_IN, 0, d, 4096, false, NULL);
	EXPECT(st == S_OK, "read: status %d", st);
	st = blk_req(c, 0, T_OUT, 0, d, 4096, false, NULL);
	EXPECT(st == S_IOERR, "write to a read-only device: status %d, expected IOERR", st);
}

/* One write of @len bytes of @byte from @sector (detect-zeroes tests). */
static void write_bytes(struct client *c, uint64_t sector, uint32_t len, uint8_t byte)
{
	uint64_t d = data_gpa(0, 0);
	int st;

	if (!len || len > (1u << 20) || len % 512)
		die("write: LEN a multiple of 512 up to 1M");
	memset(gp(c, d), byte, len);
	st = blk_req(c, 0, T_OUT, sector, d, len, false, NULL);
	EXPECT(st == S_OK, "write: status %d", st);
}

/* A raw chain in the queue's own table, head 0; returns the status byte, used length. */
static int raw_chain(struct client *c, unsigned qi, uint64_t hdr, uint32_t *used)
{
	struct vq *q = &c->vq[qi];
	uint32_t id;

	*used = UINT32_MAX;
	make_avail(c, q, 0);
	kick(q);
	if (wait_used(c, q, &id, used) < 0) {
		failf("raw chain: no completion");
		return -1;
	}
	return *gp(c, hdr + 16);
}

/* A fresh connection must still work after whatever came before. */
static void still_alive(const char *after)
{
	struct client c2 = { .sock = -1, .memfd = -1 };
	uint32_t used;
	int st;

	c2.memfd = memfd_create("vhost-client", MFD_CLOEXEC);
	if (c2.memfd < 0 || ftruncate(c2.memfd, MEM_SIZE) < 0)
		die("memfd: %s", strerror(errno));
	c2.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c2.memfd, 0);
	if (c2.mem == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (client_start(&c2, 1, 0) < 0) {
		failf("no new connection after %s", after);
	} else {
		st = blk_req(&c2, 0, T_IN, 0, data_gpa(0, 0), 4096, false, &used);
		EXPECT(st == S_OK, "read after %s: status %d", after, st);
	}
	client_close(&c2);
	munmap(c2.mem, MEM_SIZE);
	close(c2.memfd);
}

static void hostile(struct client *c)
{
	struct vq *q = &c->vq[0];
	uint64_t h = hdr_gpa(0, 0), d = data_gpa(0, 0), it = INDIRECT_AREA;
	uint32_t used;
	int st;

	/* Short header: 8 bytes, then the status. */
	put_hdr(c, h, T_IN, 0);
	put_desc(c, q->desc, 0, h, 8, D_NEXT, 1);
	put_desc(c, q->desc, 1, h + 16, 1, D_WRITE, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_IOERR, "short header: status %d, expected IOERR", st);

	/* No writable byte at all: nowhere to put a status. */
	put_hdr(c, h, T_IN, 0);
	put_desc(c, q->desc, 0, h, 16, 0, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "no status byte: status %d, used %u", st, used);

	/* A descriptor loop. */
	put_hdr(c, h, T_IN, 0);
	put_desc(c, q->desc, 0, h, 16, D_NEXT, 1);
	put_desc(c, q->desc, 1, d, 512, D_NEXT | D_WRITE, 2);
	put_desc(c, q->desc, 2, d + 512, 512, D_NEXT | D_WRITE, 1);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "descriptor loop: status %d, used %u", st, used);

	/* next out of range. */
	put_desc(c, q->desc, 0, h, 16, D_NEXT, 60000);
	st = raw_chain(c, 0, h, &used);
	EXPECT(used == 0, "next out of range: used %u", used);

	/* Data outside the memory table, and an address that wraps. */
	put_hdr(c, h, T_IN, 0);
	put_desc(c, q->desc, 0, h, 16, D_NEXT, 1);
	put_desc(c, q->desc, 1, MEM_SIZE + 4096, 4096, D_NEXT | D_WRITE, 2);
	put_desc(c, q->desc, 2, h + 16, 1, D_WRITE, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "buffer outside memory: status %d, used %u", st, used);
	put_desc(c, q->desc, 1, UINT64_MAX - 100, 512, D_NEXT | D_WRITE, 2);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "wrapping buffer: status %d, used %u", st, used);
	/* A buffer that runs past the end of memory. */
	put_desc(c, q->desc, 1, MEM_SIZE - 512, 4096, D_NEXT | D_WRITE, 2);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "buffer past the end: status %d, used %u", st, used);

	/* Readable after writable. */
	put_desc(c, q->desc, 0, h, 16, D_NEXT, 1);
	put_desc(c, q->desc, 1, d, 512, D_NEXT | D_WRITE, 2);
	put_desc(c, q->desc, 2, d + 512, 512, D_NEXT, 3);
	put_desc(c, q->desc, 3, h + 16, 1, D_WRITE, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "readable after writable: status %d, used %u", st, used);

	/* An oversize chain: every descriptor of the queue and an indirect table of 2000. */
	for (unsigned i = 0; i < q->num; i++)
		put_desc(c, q->desc, i, d, 512, D_NEXT | D_WRITE, (uint16_t)((i + 1) % q->num));
	put_desc(c, q->desc, 0, h, 16, D_NEXT, 1);
	st = raw_chain(c, 0, h, &used);
	EXPECT(used == 0, "chain through the whole queue: used %u", used);
	put_desc(c, q->desc, 0, it, 16 * 2000, D_INDIRECT, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(used == 0, "indirect table of 2000: used %u", used);

	/* Bad indirect tables: outside memory, odd length, nested, with NEXT. */
	put_hdr(c, h, T_IN, 0);
	put_desc(c, it, 0, h, 16, D_NEXT, 1);
	put_desc(c, it, 1, h + 16, 1, D_WRITE, 0);
	put_desc(c, q->desc, 0, MEM_SIZE - 16, 32, D_INDIRECT, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "indirect table outside memory: used %u", used);
	put_desc(c, q->desc, 0, it, 24, D_INDIRECT, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "indirect table of 24 bytes: used %u", used);
	put_desc(c, q->desc, 0, it, 0, D_INDIRECT, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "empty indirect table: used %u", used);
	put_desc(c, it, 0, it + 4096, 32, D_INDIRECT, 0);
	put_desc(c, q->desc, 0, it, 32, D_INDIRECT, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "nested indirect table: used %u", used);
	put_desc(c, it, 0, h, 16, D_NEXT, 1);
	put_desc(c, q->desc, 0, it, 32, D_INDIRECT | D_NEXT, 1);
	put_desc(c, q->desc, 1, h + 16, 1, D_WRITE, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "indirect with NEXT: used %u", used);
	/* A loop inside an indirect table. */
	put_desc(c, it, 0, h, 16, D_NEXT, 1);
	put_desc(c, it, 1, d, 512, D_NEXT | D_WRITE, 0);
	put_desc(c, q->desc, 0, it, 32, D_INDIRECT, 0);
	st = raw_chain(c, 0, h, &used);
	EXPECT(st == S_NONE && used == 0, "loop in an indirect table: used %u", used);

	/* Discard and write-zeroes with bad segments. */
	if (c->features & F_BLK_DISCARD) {
		uint64_t seg[2];

		seg[0] = 0;
		seg[1] = 8 | (1ull << 32); /* 8 sectors, the unmap flag (not for discard) */
		memcpy(gp(c, d), seg, 16);
		st = blk_req(c, 0, T_DISCARD, 0, d, 16, false, NULL);
		EXPECT(st == S_UNSUPP, "discard with unmap flag: status %d", st);
		seg[0] = c->capacity;
		seg[1] = 8;
		memcpy(gp(c, d), seg, 16);
		st = blk_req(c, 0, T_DISCARD, 0, d, 16, false, NULL);
		EXPECT(st == S_IOERR, "discard past the end: status %d", st);
		st = blk_req(c, 0, T_DISCARD, 0, d, 10, false, NULL);
		EXPECT(st == S_IOERR, "discard with a 10-byte segment: status %d", st);
	}
	if (c->features & F_BLK_WZ) {
		uint64_t seg[2] = { 0, 8 | (0x80ull << 32) }; /* an unknown flag */

		memcpy(gp(c, d), seg, 16);
		st = blk_req(c, 0, T_WZ, 0, d, 16, false, NULL);
		EXPECT(st == S_UNSUPP, "write-zeroes with an unknown flag: status %d", st);
		seg[0] = UINT64_MAX - 4;
		seg[1] = 8;
		memcpy(gp(c, d), seg, 16);
		st = blk_req(c, 0, T_WZ, 0, d, 16, false, NULL);
		EXPECT(st == S_IOERR, "write-zeroes at a huge sector: status %d", st);
	}

	/* The queue still works after all that. */
	st = blk_req(c, 0, T_IN, 0, d, 4096, false, &used);
	EXPECT(st == S_OK && used == 4097, "read after bad chains: status %d used %u", st, used);

	/* A head index out of range breaks the ring (only this queue). */
	if (c->nq > 1) {
		struct vq *q1 = &c->vq[1];
		uint16_t bad = (uint16_t)(q1->num + 3);
		uint8_t *avail = gp(c, q1->avail);

		memcpy(avail + 4 + 2 * (q1->avail_idx % q1->num), &bad, 2);
		q1->avail_idx++;
		__atomic_store_n((uint16_t *)(void *)(avail + 2), q1->avail_idx, __ATOMIC_RELEASE);
		kick(q1);
		st = blk_req(c, 0, T_IN, 0, d, 4096, false, &used);
		EXPECT(st == S_OK, "queue 0 after queue 1 broke: status %d", st);
	}
	client_close(c);
	still_alive("bad chains");

	/* Messages: each on a fresh connection, which may be dropped. */
	{
		uint32_t bad[3] = { SET_VRING_NUM, 1, 5000 }; /* claims 5000 payload bytes */

		if (client_connect(c) == 0) {
			if (write(c->sock, bad, 12) != 12) {
				/* dropped already */
			}
			client_close(c);
		}
		still_alive("an oversize message");
	}
	if (client_connect(c) == 0) {
		uint32_t garbage[3] = { GET_FEATURES, 0x7, 0 }; /* bad version bits */

		if (write(c->sock, garbage, 12) != 12) {
			/* dropped already */
		}
		client_close(c);
		still_alive("a bad version");
	}
	if (client_connect(c) == 0) {
		uint32_t trunc[4] = { SET_FEATURES, 1, 8, 0 }; /* 4 of 8 payload bytes, then EOF */

		if (write(c->sock, trunc, 16) != 16) {
			/* dropped already */
		}
		client_close(c);
		still_alive("a truncated message");
	}
	/* A bad memory table and bad ring parameters get REPLY_ACK failures. */
	if (client_connect(c) == 0) {
		uint64_t offered;
		uint64_t big[5] = { 1, 0, MEM_SIZE * 4ull, (uint64_t)(uintptr_t)c->mem, 0 };
		uint64_t many[2] = { 9, 0 };

		get_u64(c, GET_PROTOCOL_FEATURES, &offered);
		c->proto = 0;
		set_u64(c, SET_PROTOCOL_FEATURES, offered & (PF_MQ | PF_REPLY_ACK | PF_CONFIG));
		c->proto = offered & (PF_MQ | PF_REPLY_ACK | PF_CONFIG);
		if (c->proto & PF_REPLY_ACK) {
			EXPECT(set_msg(c, SET_MEM_TABLE, big, 40, &c->memfd, 1) < 0,
			       "a region larger than its memfd was accepted");
			EXPECT(set_msg(c, SET_MEM_TABLE, many, 16, NULL, 0) < 0,
			       "a table of 9 regions was accepted");
			EXPECT(set_msg(c, SET_MEM_TABLE, big, 40, NULL, 0) < 0,
			       "a region without an fd was accepted");
			EXPECT(set_state(c, SET_VRING_NUM, 0, 100) < 0,
			       "queue size 100 was accepted");
			EXPECT(set_state(c, SET_VRING_NUM, 200, 128) < 0,
			       "queue index 200 was accepted");
			EXPECT(set_u64(c, SET_FEATURES, 1ull << 60) < 0,
			       "feature bit 60 was accepted");
		}
		client_close(c);
		still_alive("bad tables");
	}
	/* Ring addresses outside the memory table: that ring stops, the back end goes on. */
	if (client_start(c, 1, 0) == 0) {
		struct vq *q0 = &c->vq[0];

		set_state(c, SET_VRING_ENABLE, 0, 0);
		/* GET_VRING_BASE stops the ring; then move it outside memory. */
		{
			uint32_t p[2] = { 0, 0 };

			send_msg(c, GET_VRING_BASE, 0, p, 8, NULL, 0);
			recv_reply(c, GET_VRING_BASE, p, 8);
		}
		set_vring_addr(c, q0, MEM_SIZE + 0x10000, MEM_SIZE + 0x20000, MEM_SIZE + 0x30000);
		set_msg(c, SET_VRING_KICK, &(uint64_t){ 0 }, 8, &q0->kick, 1);
		set_state(c, SET_VRING_ENABLE, 0, 1);
		client_close(c);
		still_alive("rings outside memory");
	} else {
		failf("cannot connect for the ring-address check");
	}
}

/* ---- inflight tracking (INFLIGHT_SHMFD) ---- */

/* GET_INFLIGHT_FD: the reply carries the area's fd. */
static int get_inflight(struct client *c, uint16_t qsize, uint64_t *size, int *fd)
{
	uint8_t p[24] = { 0 };
	uint32_t hdr[3];
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} cbuf;
	struct iovec iov = { hdr, 12 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf.b,
			     .msg_controllen = sizeof(cbuf.b) };
	struct cmsghdr *cm;
	struct pollfd pf = { c->sock, POLLIN, 0 };
	uint16_t nq = 1;

	memcpy(p + 16, &nq, 2);
	memcpy(p + 18, &qsize, 2);
	*fd = -1;
	if (send_msg(c, GET_INFLIGHT_FD, 0, p, 24, NULL, 0) < 0 || poll(&pf, 1, TIMEOUT_MS) <= 0 ||
	    recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC) != 12)
		return -EPROTO;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(cm), sizeof(int));
	if (hdr[0] != GET_INFLIGHT_FD || hdr[2] < 20 || hdr[2] > sizeof(p) ||
	    recv_full(c->sock, p, hdr[2]) < 0 || *fd < 0)
		return -EPROTO;
	memcpy(size, p, 8);
	return 0;
}

static int set_inflight(struct client *c, uint16_t qsize, uint64_t size, int fd)
{
	uint8_t p[24] = { 0 };
	uint16_t nq = 1;

	memcpy(p, &size, 8);
	memcpy(p + 16, &nq, 2);
	memcpy(p + 18, &qsize, 2);
	return set_msg(c, SET_INFLIGHT_FD, p, 24, &fd, 1);
}

/* Descriptor state @i of the split layout: inflight byte, counter. */
static uint8_t *ifl_desc(uint8_t *area, unsigned i)
{
	return area + 16 + 16 * (size_t)i;
}

/*
 * A back end dies with requests taken but not answered; the next one must
 * answer them. We play both the front end that keeps the inflight area and,
 * to make the state exact, the dead back end: after a clean first session
 * we put three requests in the ring and mark them in flight in the area, as
 * a back end killed while running them leaves it, then reconnect with the
 * ring's base at the used index (what QEMU sends when GET_VRING_BASE could
 * not reach the dead back end). The new session must run the three (a write
 * of 0x5b at 32 KiB, a read of the first write, a flush) and go on after them.
 */
static void inflight(struct client *c)
{
	struct vq *q = &c->vq[0];
	uint64_t size = 0, d = data_gpa(0, 0), d2 = data_gpa(0, 1), counter;
	uint8_t *area;
	uint16_t qs = QSIZE, v16;
	unsigned got = 0;
	bool seen[3] = { false };
	int fd, st;

	if (client_negotiate(c, 1, F_EVENT_IDX | F_INDIRECT, PF_INFLIGHT) < 0)
		die("cannot start the device");
	if (!(c->proto & PF_INFLIGHT)) {
		printf("inflight: INFLIGHT_SHMFD not offered\n");
		return;
	}
	if (get_inflight(c, qs, &size, &fd) < 0 || size < 16 + 16ull * qs) {
		failf("GET_INFLIGHT_FD failed");
		return;
	}
	area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (area == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	memcpy(&v16, area + 10, 2);
	EXPECT(v16 == qs, "inflight area: desc_num %u, expected %u", v16, qs);
	EXPECT(set_inflight(c, qs, size, fd) == 0, "SET_INFLIGHT_FD refused");
	if (setup_vq(c, 0, QSIZE, true, 0) < 0)
		die("cannot start the queue");
	c->nq = 1;
	/* A clean request: afterwards nothing is marked and the used index is 1. */
	memset(gp(c, d), 0xa1, 4096);
	st = blk_req(c, 0, T_OUT, 0, d, 4096, false, NULL);
	EXPECT(st == S_OK, "write: status %d", st);
	EXPECT(area[16] == 0, "head 0 still marked in flight after its completion");
	memcpy(&v16, area + 14, 2);
	EXPECT(v16 == 1, "inflight area: used_idx %u, expected 1", v16);
	/* The front end loses the back end (no GET_VRING_BASE). */
	client_close(c);

	/* What a back end killed mid-request leaves: three chains taken, unanswered. */
	memset(gp(c, d), 0x5b, 4096);
	put_hdr(c, hdr_gpa(0, 3), T_OUT, 64);
	put_desc(c, q->desc, 3, hdr_gpa(0, 3), 16, D_NEXT, 4);
	put_desc(c, q->desc, 4, d, 4096, D_NEXT, 5);
	put_desc(c, q->desc, 5, hdr_gpa(0, 3) + 16, 1, D_WRITE, 0);
	memset(gp(c, d2), 0, 4096);
	put_hdr(c, hdr_gpa(0, 6), T_IN, 0);
	put_desc(c, q->desc, 6, hdr_gpa(0, 6), 16, D_NEXT, 7);
	put_desc(c, q->desc, 7, d2, 4096, D_NEXT | D_WRITE, 8);
	put_desc(c, q->desc, 8, hdr_gpa(0, 6) + 16, 1, D_WRITE, 0);
	put_hdr(c, hdr_gpa(0, 9), T_FLUSH, 0);
	put_desc(c, q->desc, 9, hdr_gpa(0, 9), 16, D_NEXT, 10);
	put_desc(c, q->desc, 10, hdr_gpa(0, 9) + 16, 1, D_WRITE, 0);
	make_avail(c, q, 3);
	make_avail(c, q, 6);
	make_avail(c, q, 9);
	for (unsigned i = 0; i < 3; i++) {
		counter = 100 + i;
		memcpy(ifl_desc(area, 3 + 3 * i) + 8, &counter, 8);
		*ifl_desc(area, 3 + 3 * i) = 1;
	}
	/* The next back end: same memory, same inflight area, base = used index. */
	if (client_negotiate(c, 1, F_EVENT_IDX | F_INDIRECT, PF_INFLIGHT) < 0 ||
	    set_inflight(c, qs, size, fd) < 0 || setup_vq(c, 0, QSIZE, false, 1) < 0) {
		failf("reconnection refused");
		return;
	}
	c->nq = 1;
	while (got < 3) {
		uint32_t id, len;

		if (wait_used(c, q, &id, &len) < 0) {
			failf("resubmission: %u of 3 requests answered", got);
			break;
		}
		if (id != 3 && id != 6 && id != 9) {
			failf("resubmission: unexpected id %u", id);
			break;
		}
		seen[id / 3 - 1] = true;
		EXPECT(*gp(c, hdr_gpa(0, id) + 16) == S_OK, "resubmitted request %u: status %d", id,
		       *gp(c, hdr_gpa(0, id) + 16));
		got++;
	}
	EXPECT(seen[0] && seen[1] && seen[2], "not every request in flight was answered");
	for (unsigned i = 0; i < 4096; i++)
		if (*gp(c, d2 + i) != 0xa1) {
			failf("resubmitted read: byte %u is 0x%x, expected 0xa1", i,
			      *gp(c, d2 + i));
			break;
		}
	/* New requests go on after them. */
	memset(gp(c, d2), 0, 4096);
	st = blk_req(c, 0, T_IN, 64, d2, 4096, false, NULL);
	EXPECT(st == S_OK && *gp(c, d2) == 0x5b && *gp(c, d2 + 4095) == 0x5b,
	       "read after the resubmission: status %d, data 0x%x", st, *gp(c, d2));
	client_close(c);
	munmap(area, size);
	close(fd);
	printf("inflight: resubmission ok\n");
}

/* ---- bench ---- */

/* The capacity in the config space, in 512-byte sectors. */
static uint64_t get_capacity(struct client *c)
{
	uint8_t cfg[12 + 60] = { 0 };
	uint32_t ch[3] = { 0, 60, 0 };
	uint64_t cap;

	memcpy(cfg, ch, 12);
	if (send_msg(c, GET_CONFIG, 0, cfg, 12 + 60, NULL, 0) < 0 ||
	    recv_reply(c, GET_CONFIG, cfg, sizeof(cfg)) != 12 + 60)
		die("GET_CONFIG failed");
	memcpy(&cap, cfg + 12, 8);
	return cap;
}

/*
 * Take the back-end channel (PROTOCOL_F_BACKEND_REQ), print "capacity N"
 * and "ready", then wait (up to 60 s) for a config-change message on the
 * channel and print the capacity GET_CONFIG then reads; with @expect, it
 * must be that many sectors. As QEMU's vhost-user-blk on a resize.
 */
static void config_change(struct client *c, uint64_t expect)
{
	int sv[2], ret;
	uint8_t hdr[12];
	uint32_t req, flags, size;
	struct pollfd pfd;
	uint64_t cap;

	ret = client_negotiate(c, 1, 0, PF_BACKEND_REQ);
	if (ret < 0)
		die("cannot start the device: %s", strerror(-ret));
	if (!(c->proto & PF_BACKEND_REQ) || !(c->proto & PF_CONFIG))
		die("the back end offers no back-end channel with config");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	if (set_msg(c, SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1) < 0)
		die("SET_BACKEND_REQ_FD failed");
	close(sv[1]);
	printf("capacity %llu\nready\n", (unsigned long long)get_capacity(c));
	fflush(stdout);
	pfd = (struct pollfd){ .fd = sv[0], .events = POLLIN };
	if (poll(&pfd, 1, 60000) != 1)
		die("no message on the back-end channel in 60 s");
	if (recv_full(sv[0], hdr, sizeof(hdr)) < 0)
		die("the back-end channel closed");
	memcpy(&req, hdr, 4);
	memcpy(&flags, hdr + 4, 4);
	memcpy(&size, hdr + 8, 4);
	if (req != BACKEND_CONFIG_CHANGE_MSG || (flags & 0x3) != 1 || size)
		die("unexpected back-end message %u (flags %#x, %u bytes)", req, flags, size);
	cap = get_capacity(c);
	printf("config changed: capacity %llu\n", (unsigned long long)cap);
	if (expect && cap != expect)
		failf("capacity %llu after the change, expected %llu", (unsigned long long)cap,
		      (unsigned long long)expect);
	close(sv[0]);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void bench(struct client *c, const char *rw, uint32_t bs, unsigned qd, double secs)
{
	bool is_read = !strcmp(rw, "randread") || !strcmp(rw, "read");
	bool rand = !strncmp(rw, "rand", 4);
	uint64_t nblocks = c->capacity * 512 / bs, seq = 0, seed = 0x9e3779b97f4a7c15ull, done = 0;
	double t0, t;

	if (bs > (1u << 20) || bs % 512 || qd > 32 || !qd || !nblocks)
		die("bench: BS a multiple of 512 up to 1M, QD 1..32");
	/* Slot s of queue q uses descriptors 3s..3s+2. */
	for (unsigned qi = 0; qi < c->nq; qi++)
		for (unsigned s = 0; s < qd; s++)
			fill(c, data_gpa(qi, s), bs, (uint8_t)s);
	t0 = now();
	for (unsigned qi = 0; qi < c->nq; qi++) {
		struct vq *q = &c->vq[qi];

		for (unsigned s = 0; s < qd; s++) {
			uint64_t blk = rand ? rnd(&seed) % nblocks : seq++ % nblocks;
			uint64_t h = hdr_gpa(qi, s);

			put_hdr(c, h, is_read ? T_IN : T_OUT, blk * bs / 512);
			put_desc(c, q->desc, 3 * s, h, 16, D_NEXT, (uint16_t)(3 * s + 1));
			put_desc(c, q->desc, 3 * s + 1, data_gpa(qi, s), bs,
				 D_NEXT | (is_read ? D_WRITE : 0), (uint16_t)(3 * s + 2));
			put_desc(c, q->desc, 3 * s + 2, h + 16, 1, D_WRITE, 0);
			make_avail(c, q, (uint16_t)(3 * s));
		}
		kick(q);
	}
	for (;;) {
		bool any = false;

		t = now();
		if (t - t0 >= secs)
			break;
		for (unsigned qi = 0; qi < c->nq; qi++) {
			struct vq *q = &c->vq[qi];
			uint32_t id, len;
			bool more = false;

			while (take_used(c, q, &id, &len)) {
				unsigned s = id / 3;
				uint64_t blk = rand ? rnd(&seed) % nblocks : seq++ % nblocks;
				uint64_t h = hdr_gpa(qi, s);

				if (*gp(c, h + 16) != S_OK)
					die("bench: request failed with status %d", *gp(c, h + 16));
				done++;
				put_hdr(c, h, is_read ? T_IN : T_OUT, blk * bs / 512);
				make_avail(c, q, (uint16_t)id);
				more = any = true;
			}
			if (more)
				kick(q);
		}
		if (!any) {
			struct pollfd p[MAX_Q];

			for (unsigned qi = 0; qi < c->nq; qi++)
				p[qi] = (struct pollfd){ c->vq[qi].call, POLLIN, 0 };
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			if (poll(p, c->nq, 1000) < 0)
				die("poll: %s", strerror(errno));
			for (unsigned qi = 0; qi < c->nq; qi++) {
				uint64_t v;

				if (p[qi].revents && read(c->vq[qi].call, &v, 8) < 0 &&
				    errno != EAGAIN)
					die("read: %s", strerror(errno));
			}
		}
	}
	printf("iops %.0f mbps %.1f requests %" PRIu64 "\n", (double)done / (t - t0),
	       (double)done * bs / (t - t0) / 1048576.0, done);
}

/* 4096, 4k, 1M */
static uint32_t parse_size(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*end == 'k' || *end == 'K')
		v <<= 10;
	else if (*end == 'm' || *end == 'M')
		v <<= 20;
	return (uint32_t)v;
}

int main(int argc, char **argv)
{
	struct client c = { .sock = -1 };
	const char *mode;
	unsigned nq = 1;

	if (argc < 3)
		die("usage: vhost-client SOCKET conformance|hostile|config-change|bench ...");
	sock_path = argv[1];
	mode = argv[2];
	c.memfd = memfd_create("vhost-client", MFD_CLOEXEC);
	if (c.memfd < 0 || ftruncate(c.memfd, MEM_SIZE) < 0)
		die("memfd: %s", strerror(errno));
	c.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c.memfd, 0);
	if (c.mem == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (!strcmp(mode, "conformance")) {
		if (argc > 3)
			nq = (unsigned)atoi(argv[3]);
		if (nq < 1 || nq > MAX_Q)
			die("1 to %d queues", MAX_Q);
		/* Once with event idx and indirect descriptors, once without. */
		for (int pass = 0; pass < 2; pass++) {
			int ret = client_start(&c, nq, pass ? 0 : F_EVENT_IDX | F_INDIRECT);

			if (ret < 0)
				die("cannot start the device: %s", strerror(-ret));
			conformance(&c);
			client_close(&c);
		}
	} else if (!strcmp(mode, "inflight")) {
		inflight(&c);
	} else if (!strcmp(mode, "config-change")) {
		config_change(&c, argc > 3 ? strtoull(argv[3], NULL, 0) : 0);
		client_close(&c);
	} else if (!strcmp(mode, "readonly")) {
		int ret = client_start(&c, 1, 0);

		if (ret < 0)
			die("cannot start the device: %s", strerror(-ret));
		readonly(&c);
		client_close(&c);
	} else if (!strcmp(mode, "hostile")) {
		int ret = client_start(&c, 2, F_EVENT_IDX | F_INDIRECT);

		if (ret < 0)
			die("cannot start the device: %s", strerror(-ret));
		hostile(&c);
		client_close(&c);
	} else if (!strcmp(mode, "write") && argc == 6) {
		int ret = client_start(&c, 1, 0);

		if (ret < 0)
			die("cannot start the device: %s", strerror(-ret));
		write_bytes(&c, strtoull(argv[3], NULL, 0), parse_size(argv[4]),
			    (uint8_t)strtoul(argv[5], NULL, 0));
		client_close(&c);
	} else if (!strcmp(mode, "bench") && argc >= 7) {
		int ret;

		if (argc > 7)
			nq = (unsigned)atoi(argv[7]);
		if (nq < 1 || nq > MAX_Q)
			die("1 to %d queues", MAX_Q);
		ret = client_start(&c, nq, F_EVENT_IDX | F_INDIRECT);
		if (ret < 0)
			die("cannot start the device: %s", strerror(-ret));
		bench(&c, argv[3], parse_size(argv[4]), (unsigned)atoi(argv[5]), atof(argv[6]));
		client_close(&c);
	} else {
		die("unknown mode '%s'", mode);
	}
	if (failures)
		fprintf(stderr, "vhost-client: %d check(s) failed\n", failures);
	else if (strcmp(mode, "bench"))
		fprintf(stderr, "vhost-client: %s: all checks passed\n", mode);
	return failures ? 1 : 0;
}
