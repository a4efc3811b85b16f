/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic request layer: every I/O of every node passes here. It checks
 * ranges, flags and permissions once, so drivers stay small; splits requests
 * to the driver's max_transfer; bounces unaligned requests (O_DIRECT) through
 * aligned buffers, with read-modify-write for unaligned writes; and emulates
 * what a driver lacks (FUA as write + flush, write-zeroes as writes).
 */
#include "driver.h"
#include "direct.h"
#include "coroutine-int.h"
#include "iov.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZERO_BUF_SIZE (1u << 20)
#define MAX_SPLIT_IOV 64

static void *zero_buf; /* shared by every reactor thread, never written after allocation */
static pthread_once_t zero_buf_once = PTHREAD_ONCE_INIT;

static void zero_buf_init(void)
{
	zero_buf = vs_buf_zalloc(ZERO_BUF_SIZE);
}

/* NULL if it could not be allocated (zero_by_writes then fails with -ENOMEM). */
static const void *get_zero_buf(void)
{
	pthread_once(&zero_buf_once, zero_buf_init);
	return zero_buf;
}

/*
 * With less coroutine stack left than this, a request is handed to the
 * driver on a fresh coroutine: requests recurse down a backing chain
 * (a qcow2 read of an unallocated cluster reads the backing node), and the
 * image, not the code, decides how deep that goes.
 */
#define SUBMIT_STACK_RESERVE (64 * 1024)

struct deep_submit {
	struct vs_node *n;
	struct vs_req *req;
	struct vs_co *waiter;
	int ret;
	bool done;
};

static void deep_submit_run(void *arg)
{
	struct deep_submit *d = arg;

	d->ret = d->n->drv->submit(d->n, d->req);
	d->done = true;
	vs_co_wake(d->waiter);
}

/* Every request reaches a driver here. */
static int driver_submit(struct vs_node *n, struct vs_req *req)
{
	int ret;

	n->in_flight++;
	if (vs_co_stack_left() < SUBMIT_STACK_RESERVE) {
		struct deep_submit d = { .n = n, .req = req, .waiter = vs_co_self() };

		if (vs_co_spawn(vs_reactor_current(), deep_submit_run, &d)) {
			while (!d.done)
				vs_co_yield();
			ret = d.ret;
		} else {
			ret = -ENOMEM;
		}
	} else {
		ret = n->drv->submit(n, req);
	}
	n->in_flight--;
	return ret;
}

/*
 * Requests enter a node through the public functions below, which count
 * them (active) and hold them at the gate while the node is drained
 * (vs_node_drain_begin), except the drainer's own. Internal paths call the
 * node_* functions and do not pass the gate again.
 */
static void node_enter(struct vs_node *n)
{
	while (n->quiesced && n->drainer != vs_co_self())
		vs_co_queue_wait(&n->quiesce_wait);
	n->active++;
}

static int node_leave(struct vs_node *n, int ret)
{
	if (--n->active == 0 && n->quiesced)
		vs_co_queue_wake_all(&n->drain_wait);
	return ret;
}

void vs_node_drain_begin(struct vs_node *n)
{
	vs_co_mutex_lock(&n->drain_lock);
	n->quiesced = true;
	n->drainer = vs_co_self();
	vs_node_direct_change_begin(n);
	while (n->active)
		vs_co_queue_wait(&n->drain_wait);
}

void vs_node_drain_end(struct vs_node *n)
{
	vs_node_direct_change_end(n);
	n->quiesced = false;
	n->drainer = NULL;
	vs_co_queue_wake_all(&n->quiesce_wait);
	vs_co_mutex_unlock(&n->drain_lock);
}

static int submit_one(struct vs_node *n, enum vs_op op, uint64_t offset, uint64_t len,
		      struct iovec *iov, int niov, unsigned flags)
{
	struct vs_req req = {
		.op = op,
		.flags = flags,
		.offset = offset,
		.len = len,
		.iov = iov,
		.niov = niov,
	};

	return driver_submit(n, &req);
}

/* Aligned request: split to max_transfer and hand to the driver. */
static int rw_split(struct vs_node *n, enum vs_op op, uint64_t offset, uint64_t len,
		    struct iovec *iov, int niov, unsigned flags)
{
	uint64_t max = n->limits.max_transfer;
	struct iovec small[MAX_SPLIT_IOV];
	uint64_t done = 0;

	if (!max || len <= max)
		return submit_one(n, op, offset, len, iov, niov, flags);
	/* Keep chunks aligned to the request alignment. */
	if (n->limits.request_align > 1)
		max &= ~(uint64_t)(n->limits.request_align - 1);
	while (done < len) {
		uint64_t c = len - done < max ? len - done : max;
		struct iovec *sub = small;
		int cnt = vs_iov_slice(small, MAX_SPLIT_IOV, iov, niov, done, c);
		int ret;

		if (cnt == -E2BIG) {
			sub = malloc(sizeof(*sub) * (size_t)niov);
			if (!sub)
				return -ENOMEM;
			cnt = vs_iov_slice(sub, niov, iov, niov, done, c);
		}
		ret = cnt < 0 ? cnt : submit_one(n, op, offset + done, c, sub, cnt, flags);
		if (sub != small)
			free(sub);
		if (ret < 0)
			return ret;
		done += c;
	}
	return 0;
}

/* Unaligned (offset, length or memory): go through an aligned bounce buffer. */
static int rw_bounce(struct vs_node *n, enum vs_op op, uint64_t offset, uint64_t len,
		     struct iovec *iov, int niov, unsigned flags)
{
	uint64_t a = n->limits.request_align > 1 ? n->limits.request_align : 1;
	uint64_t start = offset & ~(a - 1);
	uint64_t end = (offset + len + a - 1) & ~(a - 1);
	uint64_t blen = end - start;
	struct iovec biov;
	void *buf;
	int ret;

	buf = vs_buf_alloc(blen);
	if (!buf)
		return -ENOMEM;
	biov.iov_base = buf;
	biov.iov_len = blen;
	if (op == VS_OP_READ) {
		ret = rw_split(n, op, start, blen, &biov, 1, 0);
		if (ret == 0)
			vs_iov_from_buf(iov, niov, 0, (char *)buf + (offset - start), len);
		free(buf);
		return ret;
	}

	/* Writes: serialise read-modify-write cycles of this node. */
	vs_co_mutex_lock(&n->rmw_lock);
	ret = 0;
	if (start != offset || end != offset + len) {
		struct iovec head = { buf, a };
		struct iovec tail = { (char *)buf + blen - a, a };

		if (start != offset)
			ret = rw_split(n, VS_OP_READ, start, a, &head, 1, 0);
		if (ret == 0 && end != offset + len && (blen > a || start == offset))
			ret = rw_split(n, VS_OP_READ, end - a, a, &tail, 1, 0);
	}
	if (ret == 0) {
		vs_iov_to_buf((char *)buf + (offset - start), iov, niov, 0, len);
		ret = rw_split(n, op, start, blen, &biov, 1, flags);
	}
	vs_co_mutex_unlock(&n->rmw_lock);
	free(buf);
	return ret;
}

static bool rw_needs_bounce(const struct vs_node *n, uint64_t offset, uint64_t len,
			    const struct iovec *iov, int niov)
{
	uint64_t a = n->limits.request_align;

	if (a > 1 && ((offset | len) & (a - 1)))
		return true;
	return !vs_iov_aligned(iov, niov, n->limits.mem_align);
}

static int check_range(const struct vs_node *n, uint64_t offset, uint64_t len, bool write)
{
	if (offset + len < offset || offset > INT64_MAX || len > INT64_MAX)
		return -EINVAL;
	if (offset + len > n->size && !(write && (n->caps & VS_CAP_GROWABLE)))
		return -EINVAL;
	return 0;
}

static int node_flush(struct vs_node *n);

static int node_preadv(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov,
		       int niov, unsigned flags)
{
	if (flags)
		return -EINVAL; /* no read flags exist yet */
	if (!len)
		return 0;
	if (vs_iov_size(iov, niov) < len)
		return -EINVAL;
	if (offset + len > n->size && (n->caps & VS_CAP_GROWABLE) && offset + len >= offset) {
		/* Past the end of a growable file reads as zeroes. */
		if (offset >= n->size) {
			vs_iov_memset(iov, niov, 0, 0, len);
			return 0;
		}
		vs_iov_memset(iov, niov, n->size - offset, 0, offset + len - n->size);
		len = n->size - offset;
	}
	if (check_range(n, offset, len, false) < 0)
		return -EINVAL;
	if (rw_needs_bounce(n, offset, len, iov, niov))
		return rw_bounce(n, VS_OP_READ, offset, len, iov, niov, 0);
	return rw_split(n, VS_OP_READ, offset, len, iov, niov, 0);
}

static int node_pwritev(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov,
			int niov, unsigned flags)
{
	bool emulate_fua;
	int ret;

	if (flags & ~(unsigned)VS_REQ_FUA)
		return -EINVAL;
	if (n->read_only)
		return -EPERM;
	if (check_range(n, offset, len, true) < 0 || vs_iov_size(iov, niov) < len)
		return -EINVAL;
	if (!len)
		return 0;
	if (n->writethrough)
		flags |= VS_REQ_FUA;
	emulate_fua = (flags & VS_REQ_FUA) && !(n->drv->supported_write_flags & VS_REQ_FUA);
	if (emulate_fua)
		flags &= ~(unsigned)VS_REQ_FUA;
	if (rw_needs_bounce(n, offset, len, iov, niov))
		ret = rw_bounce(n, VS_OP_WRITE, offset, len, iov, niov, flags);
	else
		ret = rw_split(n, VS_OP_WRITE, offset, len, iov, niov, flags);
	if (ret == 0 && emulate_fua)
		ret = node_flush(n);
	return ret;
}

int vs_node_pread(struct vs_node *n, uint64_t offset, void *buf, size_t len)
{
	struct iovec iov = { buf, len };

	return vs_node_preadv(n, offset, len, &iov, 1, 0);
}

int vs_node_set_before_write(struct vs_node *n, vs_node_before_write_fn *fn, void *opaque)
{
	if (fn && n->before_write)
		return -EBUSY;
	/* Writes that go straight to the file would miss the hook: revoke them. */
	vs_node_direct_change_begin(n);
	vs_node_direct_change_end(n);
	n->before_write = fn;
	n->before_write_opaque = opaque;
	return 0;
}

int vs_node_pread_held(struct vs_node *n, uint64_t offset, void *buf, size_t len)
{
	struct iovec iov = { buf, len };

	return node_preadv(n, offset, len, &iov, 1, 0);
}

/* A write is about to change [offset, offset+len) of @n (inside the gate). */
static void node_before_write(struct vs_node *n, uint64_t offset, uint64_t len)
{
	if (n->before_write && len)
		n->before_write(n->before_write_opaque, offset, len);
}

int vs_node_pwrite(struct vs_node *n, uint64_t offset, const void *buf, size_t len, unsigned flags)
{
	struct iovec iov = { (void *)buf, len };

	return vs_node_pwritev(n, offset, len, &iov, 1, flags);
}

static int node_flush(struct vs_node *n)
{
	if (n->read_only)
		return 0;
	return submit_one(n, VS_OP_FLUSH, 0, 0, NULL, 0, 0);
}

static int node_discard(struct vs_node *n, uint64_t offset, uint64_t len)
{
	uint64_t a = n->limits.request_align > 1 ? n->limits.request_align : 1;
	uint64_t start, end, max;

	if (n->read_only)
		return -EPERM;
	if (check_range(n, offset, len, false) < 0)
		return -EINVAL;
	if (!(n->caps & VS_CAP_DISCARD))
		return 0;
	/* Discard is advisory: only the aligned inside is passed on. */
	start = (offset + a - 1) & ~(a - 1);
	end = (offset + len) & ~(a - 1);
	max = n->limits.max_discard ? n->limits.max_discard & ~(a - 1) : 0;
	while (start < end) {
		uint64_t c = end - start;
		int ret;

		if (max && c > max)
			c = max;
		ret = submit_one(n, VS_OP_DISCARD, start, c, NULL, 0, 0);
		if (ret < 0 && ret != -ENOTSUP)
			return ret;
		start += c;
	}
	return 0;
}

/* Write zeroes with plain writes, in chunks of the shared zero buffer. */
static int zero_by_writes(struct vs_node *n, uint64_t offset, uint64_t len, unsigned flags)
{
	const void *z = get_zero_buf();

	if (!z)
		return -ENOMEM;
	while (len) {
		uint64_t c = len < ZERO_BUF_SIZE ? len : ZERO_BUF_SIZE;
		struct iovec iov = { (void *)z, (size_t)c };
		int ret = node_pwritev(n, offset, c, &iov, 1, flags & VS_REQ_FUA);

		if (ret < 0)
			return ret;
		offset += c;
		len -= c;
	}
	return 0;
}

static int node_write_zeroes(struct vs_node *n, uint64_t offset, uint64_t len, unsigned flags)
{
	uint64_t a = n->limits.request_align > 1 ? n->limits.request_align : 1;
	uint64_t start, end;
	unsigned dflags;
	bool emulate_fua;
	int ret;

	if (flags & ~(unsigned)(VS_REQ_FUA | VS_REQ_MAY_UNMAP | VS_REQ_NO_FALLBACK))
		return -EINVAL;
	if (n->read_only)
		return -EPERM;
	if (check_range(n, offset, len, true) < 0)
		return -EINVAL;
	if (!len)
		return 0;
	if (n->writethrough)
		flags |= VS_REQ_FUA;
	if (!(n->caps & VS_CAP_WRITE_ZEROES)) {
		if (flags & VS_REQ_NO_FALLBACK)
			return -ENOTSUP;
		return zero_by_writes(n, offset, len, flags);
	}
	start = (offset + a - 1) & ~(a - 1);
	end = (offset + len) & ~(a - 1);
	if (start >= end) {
		if (flags & VS_REQ_NO_FALLBACK)
			return -ENOTSUP;
		return zero_by_writes(n, offset, len, flags);
	}
	dflags = flags & (VS_REQ_FUA | VS_REQ_MAY_UNMAP) & n->drv->supported_zero_flags;
	emulate_fua = (flags & VS_REQ_FUA) && !(dflags & VS_REQ_FUA);
	ret = submit_one(n, VS_OP_WRITE_ZEROES, start, end - start, NULL, 0, dflags);
	if (ret == -ENOTSUP) {
		if (flags & VS_REQ_NO_FALLBACK)
			return -ENOTSUP;
		ret = zero_by_writes(n, start, end - start, flags);
		emulate_fua = false;
	}
	if (ret == 0 && start > offset)
		ret = zero_by_writes(n, offset, start - offset, flags);
	if (ret == 0 && end < offset + len)
		ret = zero_by_writes(n, end, offset + len - end, flags);
	if (ret == 0 && emulate_fua)
		ret = node_flush(n);
	return ret;
}

/* The end of an operation that may move mapped bytes (direct.h): returns @ret. */
static int node_changing(struct vs_node *n, int ret)
{
	vs_node_direct_change_end(n);
	return ret;
}

/* Whether @n's owner fenced its writes (n->write_fence). */
static inline bool node_fenced(const struct vs_node *n)
{
	return n->write_fence && atomic_load_explicit(n->write_fence, memory_order_relaxed);
}

int vs_node_truncate(struct vs_node *n, uint64_t size, enum vs_prealloc prealloc, bool exact,
		     struct vs_error *err)
{
	if (node_fenced(n))
		return vs_error_set(err, -EIO, "Cannot resize '%s': its lease was lost",
				    n->filename);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "Cannot resize '%s': opened read-only",
				    n->filename);
	if (size > VS_NODE_MAX_SIZE)
		return vs_error_set(err, -EFBIG,
				    "Size too large: %" PRIu64 " exceeds the maximum of %" PRIu64
				    " bytes",
				    size, VS_NODE_MAX_SIZE);
	if (!n->drv->truncate)
		return vs_error_set(err, -ENOTSUP, "The %s driver cannot resize images",
				    n->drv->name);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->truncate(n, size, prealloc, exact, err));
}

static int node_block_status(struct vs_node *n, uint64_t offset, uint64_t len, uint64_t *pnum,
			     unsigned *status, uint64_t *map, struct vs_node **file)
{
	struct vs_req req = { .op = VS_OP_BLOCK_STATUS };
	int ret;

	*pnum = 0;
	*status = 0;
	if (offset > n->size)
		return -EINVAL;
	if (len > n->size - offset)
		len = n->size - offset;
	if (!len)
		return 0;
	req.offset = offset;
	req.len = len;
	if (!(n->caps & VS_CAP_BLOCK_STATUS)) {
		req.bs_pnum = len;
		req.bs_status = VS_BS_DATA | VS_BS_ALLOCATED;
		if (!n->drv->is_format) {
			req.bs_status |= VS_BS_OFFSET_VALID;
			req.bs_map = offset;
			req.bs_file = n;
		}
	} else {
		ret = driver_submit(n, &req);
		if (ret < 0)
			return ret;
		if (req.bs_pnum == 0 || req.bs_pnum > len)
			return -EIO; /* a driver bug; never loop forever on it */
	}
	*pnum = req.bs_pnum;
	*status = req.bs_status;
	if (map)
		*map = req.bs_map;
	if (file)
		*file = req.bs_file;
	return 0;
}

int vs_node_block_status(struct vs_node *n, uint64_t offset, uint64_t len, uint64_t *pnum,
			 unsigned *status, uint64_t *map, struct vs_node **file)
{
	node_enter(n);
	return node_leave(n, node_block_status(n, offset, len, pnum, status, map, file));
}

/*
 * A format layer that maps data to host offsets does not know whether the
 * host range is a hole; the protocol node does (a preallocated qcow2
 * cluster over a sparse file reads as zeroes). Ask it, as qemu-img map
 * does, and shorten the run to what the host answer covers.
 */
static void refine_zero_from_file(struct vs_node *n, uint64_t *pnum, unsigned *status,
				  uint64_t *map, struct vs_node **file)
{
	struct vs_node *f;
	uint64_t fmap, fpnum;
	unsigned fst;

	if (!n->drv->is_format || !map || !file || !*file || *file == n)
		return;
	if ((*status & (VS_BS_DATA | VS_BS_ZERO | VS_BS_OFFSET_VALID)) !=
	    (VS_BS_DATA | VS_BS_OFFSET_VALID))
		return;
	f = *file;
	fmap = *map;
	if (fmap >= f->size) {
		*status |= VS_BS_ZERO; /* past the end of the file reads as zeroes */
		return;
	}
	if (vs_node_block_status(f, fmap, *pnum, &fpnum, &fst, NULL, NULL) < 0 || !fpnum)
		return;
	if (fst & VS_BS_ZERO)
		*status |= VS_BS_ZERO;
	if (fpnum < *pnum)
		*pnum = fpnum;
}

int vs_node_block_status_above(struct vs_node *n, uint64_t offset, uint64_t len, uint64_t *pnum,
			       unsigned *status, uint64_t *map, struct vs_node **file,
			       unsigned *depth)
{
	struct vs_node *cur = n, *lfile = NULL;
	uint64_t lmap = 0;
	unsigned d = 0;
	int ret;

	/* The zero refinement needs the host mapping even if the caller does not. */
	if (!map)
		map = &lmap;
	if (!file)
		file = &lfile;

	if (offset > n->size)
		return -EINVAL;
	if (len > n->size - offset)
		len = n->size - offset;
	for (;;) {
		if (offset >= cur->size) {
			/*
			 * Past the end of a shorter backing file: zeroes that this
			 * layer decides (allocated here, as QEMU reports it), so
			 * that commit and convert -B write them.
			 */
			*pnum = len;
			*status = VS_BS_ZERO | VS_BS_ALLOCATED;
			break;
		}
		ret = vs_node_block_status(cur, offset, len, pnum, status, map, file);
		if (ret < 0)
			return ret;
		if (!*pnum) /* len was 0 */
			break;
		if ((*status & VS_BS_ALLOCATED) || !cur->backing) {
			if (!(*status & VS_BS_ALLOCATED) && !(*status & VS_BS_DATA))
				*status |= VS_BS_ZERO;
			refine_zero_from_file(cur, pnum, status, map, file);
			break;
		}
		len = *pnum;
		cur = cur->backing;
		d++;
	}
	if (depth)
		*depth = d;
	return 0;
}

uint64_t vs_node_size(const struct vs_node *n)
{
	return n->size;
}

const char *vs_node_format(const struct vs_node *n)
{
	return n->drv->name;
}

enum vs_cache_mode vs_node_cache_mode(const struct vs_node *n)
{
	return n->cache;
}

const char *vs_node_filename(const struct vs_node *n)
{
	return n->filename;
}

struct vs_node *vs_node_file(const struct vs_node *n)
{
	return n->file;
}

struct vs_node *vs_node_backing(const struct vs_node *n)
{
	return n->backing;
}

bool vs_node_is_read_only(const struct vs_node *n)
{
	return n->read_only;
}

int64_t vs_node_allocated_size(struct vs_node *n)
{
	if (n->drv->allocated_size)
		return n->drv->allocated_size(n);
	if (n->file)
		return vs_node_allocated_size(n->file);
	return -ENOTSUP;
}

/* Format-specific info entries, for the drivers' get_info (see driver.h). */
static struct vs_info_kv *info_add(struct vs_image_info *info, const char *key, int type)
{
	struct vs_info_kv *kv = &info->specific[info->nb_specific++];

	snprintf(kv->key, sizeof(kv->key), "%s", key);
	kv->type = type;
	return kv;
}

void vs_info_add_str(struct vs_image_info *info, const char *key, const char *v)
{
	snprintf(info_add(info, key, VS_KV_STR)->str, sizeof(info->specific[0].str), "%s", v);
}

void vs_info_add_int(struct vs_image_info *info, const char *key, int64_t v)
{
	info_add(info, key, VS_KV_INT)->i = v;
}

void vs_info_add_bool(struct vs_image_info *info, const char *key, bool v)
{
	info_add(info, key, VS_KV_BOOL)->b = v;
}

int vs_node_get_info(struct vs_node *n, struct vs_image_info *info)
{
	memset(info, 0, sizeof(*info));
	snprintf(info->format, sizeof(info->format), "%s", n->drv->name);
	info->virtual_size = n->size;
	info->actual_size = vs_node_allocated_size(n);
	if (info->actual_size < 0)
		info->actual_size = -1;
	if (n->drv->get_info) {
		int ret = n->drv->get_info(n, info);

		if (ret < 0)
			vs_image_info_free(info);
		return ret;
	}
	return 0;
}

void vs_image_info_free(struct vs_image_info *info)
{
	if (!info)
		return;
	free(info->backing_filename);
	info->backing_filename = NULL;
	free(info->full_backing_filename);
	info->full_backing_filename = NULL;
	free(info->snapshots);
	info->snapshots = NULL;
	info->nb_snapshots = 0;
	free(info->bitmaps);
	info->bitmaps = NULL;
	info->nb_bitmaps = 0;
	for (unsigned i = 0; i < info->nb_extents; i++)
		free(info->extents[i].filename);
	free(info->extents);
	info->extents = NULL;
	info->nb_extents = 0;
}

int vs_node_check(struct vs_node *n, struct vs_check_result *res, unsigned fix)
{
	memset(res, 0, sizeof(*res));
	if (!n->drv->check)
		return -ENOTSUP;
	if (fix && n->read_only)
		return -EPERM;
	return n->drv->check(n, res, fix);
}

int vs_node_check_report(struct vs_node *n, struct vs_check_result *res, unsigned fix,
			 vs_check_report_fn *report, void *opaque)
{
	int ret;

	n->check_report = report;
	n->check_report_opaque = opaque;
	ret = vs_node_check(n, res, fix);
	n->check_report = NULL;
	n->check_report_opaque = NULL;
	return ret;
}

uint64_t vs_node_cluster_size(const struct vs_node *n)
{
	return n->cluster_size;
}

static int node_pwritev_compressed(struct vs_node *n, uint64_t offset, uint64_t len,
				   struct iovec *iov, int niov)
{
	if (n->read_only)
		return -EPERM;
	if (!(n->drv->supported_write_flags & VS_REQ_COMPRESSED))
		return -ENOTSUP;
	if (check_range(n, offset, len, false) < 0 || vs_iov_size(iov, niov) < len)
		return -EINVAL;
	if (!n->cluster_size || offset % n->cluster_size ||
	    (len % n->cluster_size && offset + len != n->size))
		return -EINVAL;
	if (!len)
		return 0;
	return submit_one(n, VS_OP_WRITE, offset, len, iov, niov, VS_REQ_COMPRESSED);
}

int vs_node_preadv(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov, int niov,
		   unsigned flags)
{
	node_enter(n);
	return node_leave(n, node_preadv(n, offset, len, iov, niov, flags));
}

int vs_node_pwritev(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov, int niov,
		    unsigned flags)
{
	int ret;

	if (node_fenced(n))
		return -EIO;
	node_enter(n);
	node_before_write(n, offset, len);
	if (n->dirty_bitmaps)
		vs_node_dirty_write_begin(n, offset, len);
	ret = node_pwritev(n, offset, len, iov, niov, flags);
	/* Even a failed write may have changed part of the range. */
	if (n->dirty_bitmaps)
		vs_node_dirty_write_end(n, VS_DIRTY_WRITE, offset, len, iov, niov, flags, ret);
	return node_leave(n, ret);
}

int vs_node_pwritev_compressed(struct vs_node *n, uint64_t offset, uint64_t len, struct iovec *iov,
			       int niov)
{
	int ret;

	if (node_fenced(n))
		return -EIO;
	node_enter(n);
	node_before_write(n, offset, len);
	if (n->dirty_bitmaps)
		vs_node_dirty_write_begin(n, offset, len);
	vs_node_direct_change_begin(n);
	ret = node_pwritev_compressed(n, offset, len, iov, niov);
	vs_node_direct_change_end(n);
	/* Even a failed write may have changed part of the range. */
	if (n->dirty_bitmaps)
		vs_node_dirty_write_end(n, VS_DIRTY_WRITE_COMPRESSED, offset, len, iov, niov, 0,
					ret);
	return node_leave(n, ret);
}

int vs_node_flush(struct vs_node *n)
{
	if (node_fenced(n))
		return -EIO;
	node_enter(n);
	return node_leave(n, node_flush(n));
}

int vs_node_discard(struct vs_node *n, uint64_t offset, uint64_t len)
{
	int ret;

	if (node_fenced(n))
		return -EIO;
	node_enter(n);
	node_before_write(n, offset, len);
	if (n->dirty_bitmaps)
		vs_node_dirty_write_begin(n, offset, len);
	vs_node_direct_change_begin(n);
	ret = node_discard(n, offset, len);
	vs_node_direct_change_end(n);
	/* Even a failed write may have changed part of the range. */
	if (n->dirty_bitmaps)
		vs_node_dirty_write_end(n, VS_DIRTY_DISCARD, offset, len, NULL, 0, 0, ret);
	return node_leave(n, ret);
}

int vs_node_write_zeroes(struct vs_node *n, uint64_t offset, uint64_t len, unsigned flags)
{
	int ret;

	if (node_fenced(n))
		return -EIO;
	node_enter(n);
	node_before_write(n, offset, len);
	if (n->dirty_bitmaps)
		vs_node_dirty_write_begin(n, offset, len);
	vs_node_direct_change_begin(n);
	ret = node_write_zeroes(n, offset, len, flags);
	vs_node_direct_change_end(n);
	/* Even a failed write may have changed part of the range. */
	if (n->dirty_bitmaps)
		vs_node_dirty_write_end(n, VS_DIRTY_WRITE_ZEROES, offset, len, NULL, 0, flags, ret);
	return node_leave(n, ret);
}

/* The driver's entry or a clear "not supported" for the operation @what. */
#define NODE_OPTIONAL(n, member, what, err)                                                     \
	do {                                                                                    \
		if (!(n)->drv->member)                                                          \
			return vs_error_set(err, -ENOTSUP, "The %s format does not support %s", \
					    (n)->drv->name, what);                              \
	} while (0)

int vs_node_bitmap(struct vs_node *n, const struct vs_bitmap_op *op, struct vs_error *err)
{
	NODE_OPTIONAL(n, bitmap, "persistent dirty bitmaps", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->bitmap(n, op, err));
}

int vs_node_dirty_bitmaps(struct vs_node *n, struct vs_dirty_bitmap_info **out, unsigned *nb)
{
	*out = NULL;
	*nb = 0;
	if (!n->drv->bitmap_list)
		return -ENOTSUP;
	return n->drv->bitmap_list(n, out, nb);
}

int vs_node_bitmap_status(struct vs_node *n, const char *name, uint64_t offset, uint64_t len,
			  bool *dirty, uint64_t *run)
{
	if (!n->drv->bitmap_status)
		return -ENOTSUP;
	if (!len)
		return -EINVAL;
	return n->drv->bitmap_status(n, name, offset, len, dirty, run);
}

int vs_node_snapshot_create(struct vs_node *n, const char *name,
			    const struct vs_snapshot_opts *opts, struct vs_error *err)
{
	NODE_OPTIONAL(n, snapshot_create, "internal snapshots", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->snapshot_create(n, name, opts, err));
}

int vs_node_snapshot_apply(struct vs_node *n, const char *name, struct vs_error *err)
{
	NODE_OPTIONAL(n, snapshot_apply, "internal snapshots", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->snapshot_apply(n, name, err));
}

int vs_node_snapshot_delete(struct vs_node *n, const char *name, struct vs_error *err)
{
	NODE_OPTIONAL(n, snapshot_delete, "internal snapshots", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->snapshot_delete(n, name, err));
}

int vs_node_amend(struct vs_node *n, const struct vs_kv *opts, size_t nopts, struct vs_error *err)
{
	NODE_OPTIONAL(n, amend, "amend", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->amend(n, opts, nopts, err));
}

int vs_node_set_backing(struct vs_node *n, const char *backing, const char *backing_fmt,
			struct vs_error *err)
{
	NODE_OPTIONAL(n, set_backing, "backing files", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->set_backing(n, backing, backing_fmt, err));
}

int vs_node_compact(struct vs_node *n, vs_progress_fn *progress, void *opaque, struct vs_error *err)
{
	NODE_OPTIONAL(n, compact, "compaction", err);
	if (n->read_only)
		return vs_error_set(err, -EPERM, "'%s' is opened read-only", n->filename);
	vs_node_direct_change_begin(n);
	return node_changing(n, n->drv->compact(n, progress, opaque, err));
}

/* ---- node lifetime ---- */

struct vs_node *vs_node_new(const struct vs_driver *drv, const char *filename,
			    const struct vs_open_opts *opts)
{
	struct vs_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->drv = drv;
	n->refcnt = 1;
	n->filename = strdup(filename);
	if (drv->state_size)
		n->opaque = calloc(1, drv->state_size);
	if (!n->filename || (drv->state_size && !n->opaque)) {
		free(n->filename);
		free(n->opaque);
		free(n);
		return NULL;
	}
	n->reactor = vs_reactor_current();
	n->read_only = opts->read_only;
	n->force_share = opts->force_share;
	n->cache = opts->cache;
	n->knobs = vs_cache_mode_knobs(opts->cache);
	n->limits.request_align = 1;
	n->limits.mem_align = 1;
	return n;
}

void vs_node_free(struct vs_node *n)
{
	vs_node_dirty_bitmaps_orphan(n);
	free(n->filename);
	free(n->opaque);
	free(n);
}

/* Iterative down the backing chain: a deep chain needs no deep stack. */
void vs_node_close(struct vs_node *n)
{
	while (n && --n->refcnt == 0) {
		struct vs_node *backing = n->backing;

		if (n->direct) {
			/* Direct I/O through the node ends before its files close. */
			if (vs_co_self())
				vs_node_direct_change_begin(n);
			vs_node_direct_forget(n);
		}

		if (n->drv->close)
			n->drv->close(n);
		vs_node_close(n->file);
		if (n->close_hook)
			n->close_hook(n->close_hook_opaque);
		vs_node_free(n);
		n = backing;
	}
}

struct vs_node *vs_node_ref(struct vs_node *n)
{
	n->refcnt++;
	return n;
}

unsigned vs_node_refcount(const struct vs_node *n)
{
	return n->refcnt;
}

int vs_prealloc_parse(const char *s, enum vs_prealloc *out)
{
	static const char *const names[] = { "off", "metadata", "falloc", "full" };

	for (unsigned i = 0; i < 4; i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum vs_prealloc)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *vs_prealloc_name(enum vs_prealloc p)
{
	static const char *const names[] = { "off", "metadata", "falloc", "full" };

	return (unsigned)p < 4 ? names[p] : "unknown";
}
