/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Mirroring a live node into a target: blockdev-mirror, drive-mirror, and
 * the active commit of block-commit (the target is a base of the active
 * node), with qemu-storage-daemon's arguments, messages and events.
 *
 * A dirty bitmap attached to the source (vstor/dirty-bitmap.h) records
 * what the guest writes. The job marks what the sync mode copies, then
 * copies dirty runs with up to MIRROR_MAX_OPS copies in flight and at most
 * buf-size bytes among them (adjacent dirty granules coalesced, up to
 * MIRROR_MAX_CHUNK per copy; zero areas written as zeroes, or skipped where
 * the target reads zeroes already). A copy clears its granules before it
 * reads them: a guest write that lands during the copy marks them again,
 * and the next pass copies them again. No two operations on one granule
 * are ever in flight at once (a copy skips the granules of another one),
 * so a later copy's data is never overwritten by an earlier one's.
 *
 * copy-mode write-blocking: the bitmap gets a write hook instead of being
 * marked by the source's writes. A guest write waits for the copies of its
 * granules, then, once it reached the source, goes to the target as well
 * before it completes (unless all its granules are dirty anyway): the
 * granules in sync stay in sync, and the dirty count only falls.
 *
 * Ready (BLOCK_JOB_READY) once a whole pass over the source is done and
 * what is dirty fits in one round of copies (buf-size); the job keeps
 * following the writes. After block-job-complete the job copies at full
 * speed until at most MIRROR_FINAL_BYTES are dirty (or MIRROR_FINAL_WAIT_NS
 * went by), then holds the source's exports, copies what is left, drains
 * the source, flushes the target and points the exports at it: no request
 * fails, none is lost (requests wait for the final copy instead).
 * A cancel after ready (not forced) ends the job the same way without the
 * switch: the target is a consistent copy of the moment it ended.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block.h"
#include "export.h"
#include "job.h"
#include "job-mirror.h"
#include "vstor/dirty-bitmap.h"
#include "vstor/reactor.h"

/* Idle wait of a ready job between looks at the bitmap. */
#define MIRROR_IDLE_NS 10000000ull
/* What is left to copy with the guest held when the job ends. */
#define MIRROR_FINAL_BYTES (16u << 20)
/* How long a completing job tries to get there before it holds the guest anyway. */
#define MIRROR_FINAL_WAIT_NS 1000000000ull
/* Copies in flight at most, and the largest one. */
#define MIRROR_MAX_OPS 16
#define MIRROR_MAX_CHUNK (1u << 20)
/* buf-size when not given: the bytes all copies in flight hold at most. */
#define MIRROR_DEFAULT_BUF_SIZE (16u << 20)
/* How much a background copy copies between two checks that it gains on the guest. */
#define MIRROR_WINDOW_BYTES (256u << 20)

struct mirror;

/* A copy, or a guest write of write-blocking mode, on whole granules. */
struct mirror_op {
	struct mirror_op *next;
	struct mirror *m;
	uint64_t off, len;	 /* the granules it holds */
	uint64_t woff, wlen;	 /* active: the write itself */
	bool active;		 /* a guest write, not a copy */
	struct vs_co *co;	 /* active: the writer */
	void *buf;		 /* copy: chunk bytes */
	struct vs_co_queue done; /* operations waiting for this one */
};

struct mirror {
	struct vd_job *job;
	struct vs_node *src, *dst;
	struct vs_dirty_bitmap *bm;
	enum vd_mirror_sync sync;
	enum vd_mirror_copy_mode copy_mode;
	unsigned base_depth; /* active commit: layers above the base */
	void *buf;	     /* the final copy's, chunk bytes */
	uint64_t granularity, buf_size, chunk;
	void *bufs[MIRROR_MAX_OPS]; /* copy buffers (chunk bytes) not in use */
	unsigned nbufs;
	struct mirror_op *ops;	    /* in flight */
	unsigned ncopies;	    /* copies in flight */
	uint64_t copy_bytes;	    /* their bytes */
	struct vs_co_queue changed; /* the job waits here for an operation to end */
	int err;		    /* the first failed copy's -errno, 0 */
	bool err_read;		    /* ... which failed to read */
	unsigned passes;	    /* times the copy went over the whole source */
	/* The convergence check's window (mirror_check_gain). */
	uint64_t win_left;    /* left to copy when it began */
	uint64_t win_copied;  /* bytes copied since */
	unsigned win_passes;  /* passes when it began */
	bool should_complete; /* block-job-complete */
	bool soft_cancel;     /* block-job-cancel of a ready job, not forced */
	bool drained;	      /* the source and its exports are held */
	bool exports_held;    /* the exports only */
};

static uint64_t mirror_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Mark what the sync mode copies at the start. */
static int mirror_mark_initial(struct vd_job *job, struct mirror *m)
{
	uint64_t size = vs_node_size(m->src);

	if (m->sync == VD_MIRROR_SYNC_NONE)
		return 0;
	if (m->sync == VD_MIRROR_SYNC_FULL) {
		vs_dirty_bitmap_set(m->bm, 0, size);
		return 0;
	}
	for (uint64_t off = 0; off < size && !vd_job_cancelled(job);) {
		uint64_t pnum;
		unsigned status, depth;
		int ret = vs_node_block_status_above(m->src, off, size - off, &pnum, &status, NULL,
						     NULL, &depth);

		if (ret < 0)
			return ret;
		/* top: this layer's data; commit: every layer above the base. */
		if ((status & VS_BS_ALLOCATED) &&
		    (m->sync == VD_MIRROR_SYNC_TOP ? depth == 0 : depth < m->base_depth))
			vs_dirty_bitmap_set(m->bm, off, pnum);
		off += pnum;
	}
	return 0;
}

/*
 * Copy [off, off+len) from the source to the target through @buf (len
 * bytes): zeroes as zeroes (skipped when the target reads zeroes there
 * already). 0 or -errno; *@read says which side failed.
 */
static int mirror_copy(struct mirror *m, uint64_t off, uint64_t len, void *buf, bool *read)
{
	char *p = buf;

	while (len) {
		uint64_t pnum, tnum;
		unsigned status, tstatus;
		int ret;

		*read = true;
		ret = vs_node_block_status_above(m->src, off, len, &pnum, &status, NULL, NULL,
						 NULL);
		if (ret < 0)
			return ret;
		if (status & VS_BS_ZERO) {
			*read = false; /* the target's side from here */
			ret = vs_node_block_status_above(m->dst, off, pnum, &tnum, &tstatus, NULL,
							 NULL, NULL);
			if (ret < 0)
				return ret;
			pnum = tnum;
			if (!(tstatus & VS_BS_ZERO))
				ret = vs_node_write_zeroes(m->dst, off, pnum, 0);
		} else {
			ret = vs_node_pread(m->src, off, p, pnum);
			if (ret < 0)
				return ret;
			*read = false;
			ret = vs_node_pwrite(m->dst, off, p, pnum, 0);
		}
		if (ret < 0)
			return ret;
		off += pnum;
		p += pnum;
		len -= pnum;
	}
	return 0;
}

/*
 * The operation in flight that holds a granule of [off, off+len) at the
 * lowest offset, or NULL. The lowest: the part of the range before it is
 * free of every operation (the list is in no order of offsets).
 */
static struct mirror_op *mirror_conflict(const struct mirror *m, uint64_t off, uint64_t len)
{
	struct mirror_op *first = NULL;

	for (struct mirror_op *op = m->ops; op; op = op->next)
		if (op->off < off + len && off < op->off + op->len &&
		    (!first || op->off < first->off))
			first = op;
	return first;
}

/* @op ended: out of the list, its waiters and the job woken, freed. */
static void mirror_op_end(struct mirror *m, struct mirror_op *op)
{
	struct mirror_op **pp;

	for (pp = &m->ops; *pp && *pp != op; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = op->next;
	if (!op->active) {
		m->ncopies--;
		m->copy_bytes -= op->len;
	}
	vs_co_queue_wake_all(&op->done);
	vs_co_queue_wake_all(&m->changed);
	/* Kept for the next copy: no fresh pages to fault in each time. */
	if (op->buf && m->nbufs < MIRROR_MAX_OPS)
		m->bufs[m->nbufs++] = op->buf;
	else
		free(op->buf);
	free(op);
}

/* A copy's coroutine. */
static void mirror_copy_co(void *arg)
{
	struct mirror_op *op = arg;
	struct mirror *m = op->m;
	bool read = false;
	int ret = mirror_copy(m, op->off, op->len, op->buf, &read);

	if (ret < 0) {
		vs_dirty_bitmap_set(m->bm, op->off, op->len); /* not copied */
		if (!m->err) {
			m->err = ret;
			m->err_read = read;
		}
	} else {
		vd_job_progress(m->job, op->len);
	}
	mirror_op_end(m, op);
}

/*
 * The next dirty run from *@cursor on (wrapping around, which counts a
 * pass) that no operation in flight holds, at most m->chunk bytes. False
 * when there is none now.
 */
static bool mirror_next(struct mirror *m, uint64_t *cursor, uint64_t *start, uint64_t *len)
{
	uint64_t size = vs_node_size(m->src);

	for (unsigned tries = 0; tries < 64; tries++) {
		struct mirror_op *op;

		if (!vs_dirty_bitmap_next_dirty(m->bm, *cursor, m->chunk, start, len)) {
			m->passes++;
			if (*cursor == 0)
				return false;
			*cursor = 0;
			continue;
		}
		op = mirror_conflict(m, *start, *len);
		if (!op)
			return true;
		if (op->off > *start) {
			*len = op->off - *start; /* the part before it */
			return true;
		}
		*cursor = op->off + op->len; /* past it */
		if (*cursor >= size) {
			m->passes++;
			*cursor = 0;
		}
	}
	return false;
}

/*
 * Start a copy of the next dirty run: 1 when one started, 0 when none can
 * now (nothing dirty that is free, or no room).
 */
static int mirror_issue(struct mirror *m, uint64_t *cursor, uint64_t *bytes)
{
	struct mirror_op *op;
	uint64_t start, len;

	if (m->ncopies >= MIRROR_MAX_OPS || (m->ncopies && m->copy_bytes + m->chunk > m->buf_size))
		return 0;
	if (!mirror_next(m, cursor, &start, &len))
		return 0;
	op = calloc(1, sizeof(*op));
	if (!op)
		return 0;
	if (m->nbufs) {
		op->buf = m->bufs[--m->nbufs];
	} else if (posix_memalign(&op->buf, 4096, m->chunk) != 0) {
		free(op);
		return 0;
	}
	op->m = m;
	op->off = start;
	op->len = len;
	/* Cleared before the read begins: a write from now on marks it again. */
	vs_dirty_bitmap_clear(m->bm, start, len);
	op->next = m->ops;
	m->ops = op;
	m->ncopies++;
	m->copy_bytes += len;
	*cursor = start + len;
	*bytes = len;
	if (!vs_co_spawn(vs_reactor_current(), mirror_copy_co, op)) {
		vs_dirty_bitmap_set(m->bm, start, len);
		mirror_op_end(m, op);
		return 0;
	}
	return 1;
}

/*
 * The copies run in the idle I/O class (job.c), so the guest goes first.
 * But a background copy must gain on the guest's writes or it never
 * converges: every MIRROR_WINDOW_BYTES copied, and when a pass ends, what
 * is left to copy (@left: dirty and in flight) must have fallen by half of
 * what was copied meanwhile at least; else the job takes its share of the
 * device back (the normal class, as QEMU's copies) for the rest of it.
 */
static void mirror_check_gain(struct vd_job *job, struct mirror *m, uint64_t left)
{
	if (m->copy_mode != VD_MIRROR_COPY_BACKGROUND || vd_job_is_ready(job) ||
	    vs_co_io_class() != VS_IO_CLASS_IDLE)
		return;
	if (m->win_copied < MIRROR_WINDOW_BYTES && m->passes == m->win_passes)
		return;
	if (left > m->win_left || m->win_left - left < m->win_copied / 2)
		vs_co_set_io_class(VS_IO_CLASS_NORMAL);
	m->win_left = left;
	m->win_copied = 0;
	m->win_passes = m->passes;
}

/* Wait for every copy in flight to end. */
static void mirror_wait_copies(struct mirror *m)
{
	while (m->ncopies)
		vs_co_queue_wait(&m->changed);
}

/*
 * The error of a copy that failed, if any: on-error decides. 0 to go on,
 * -errno when the job must fail.
 */
static int mirror_check_error(struct vd_job *job, struct mirror *m)
{
	int err, ret;

	if (!m->err)
		return 0;
	err = m->err;
	ret = vd_job_io_error(job, m->err_read, err);
	/* The copies in flight then fail alike: one decision for all of them. */
	mirror_wait_copies(m);
	m->err = 0;
	if (ret < 0)
		return ret;
	/* Stopped and resumed, or ignored: it stays dirty; not again at once. */
	vd_job_sleep(job, MIRROR_IDLE_NS);
	return 0;
}

/* ---- write-blocking: the guest's writes go to the target too ---- */

static void mirror_write_begin(void *opaque, uint64_t offset, uint64_t len)
{
	struct mirror *m = opaque;
	uint64_t g = m->granularity;
	uint64_t a = offset & ~(g - 1), e = (offset + len + g - 1) & ~(g - 1);
	struct mirror_op *op, *busy;

	if (!len)
		return;
	/* Wait for the copies and writes of these granules. */
	while ((busy = mirror_conflict(m, a, e - a)))
		vs_co_queue_wait(&busy->done);
	op = calloc(1, sizeof(*op));
	if (!op)
		return; /* then end marks the range dirty */
	op->m = m;
	op->off = a;
	op->len = e - a;
	op->woff = offset;
	op->wlen = len;
	op->active = true;
	op->co = vs_co_self();
	op->next = m->ops;
	m->ops = op;
}

/* Whether every granule of [off, off+len) is dirty. */
static bool mirror_all_dirty(const struct mirror *m, uint64_t off, uint64_t len)
{
	for (uint64_t o = off; o < off + len; o += m->granularity)
		if (!vs_dirty_bitmap_get(m->bm, o))
			return false;
	return true;
}

/* The write's data to the target; 0 or -errno. */
static int mirror_write_target(struct mirror *m, enum vs_dirty_write kind, uint64_t offset,
			       uint64_t len, const struct iovec *iov, int niov, unsigned flags)
{
	struct iovec *copy;
	int ret;

	switch (kind) {
	case VS_DIRTY_WRITE:
	case VS_DIRTY_WRITE_COMPRESSED:
		/* The node may advance the vector as it goes: give it a copy. */
		copy = malloc((size_t)(niov ? niov : 1) * sizeof(*copy));
		if (!copy)
			return -ENOMEM;
		memcpy(copy, iov, (size_t)niov * sizeof(*copy));
		ret = vs_node_pwritev(m->dst, offset, len, copy, niov, flags & VS_REQ_FUA);
		free(copy);
		return ret;
	case VS_DIRTY_WRITE_ZEROES:
		return vs_node_write_zeroes(m->dst, offset, len, flags & VS_REQ_MAY_UNMAP);
	case VS_DIRTY_DISCARD:
	default:
		return -ENOTSUP; /* what the source reads now is copied later */
	}
}

static void mirror_write_end(void *opaque, enum vs_dirty_write kind, uint64_t offset, uint64_t len,
			     const struct iovec *iov, int niov, unsigned flags, int ret)
{
	struct mirror *m = opaque;
	struct mirror_op *op;
	struct vs_co *self = vs_co_self();

	for (op = m->ops; op; op = op->next)
		if (op->active && op->co == self && op->woff == offset && op->wlen == len)
			break;
	if (!op) {
		/* Began before the hook (or without memory): copy it later. */
		vs_dirty_bitmap_set(m->bm, offset, len);
		return;
	}
	if (ret == 0 && !mirror_all_dirty(m, op->off, op->len))
		ret = mirror_write_target(m, kind, offset, len, iov, niov, flags);
	if (ret < 0) {
		vs_dirty_bitmap_set(m->bm, offset, len);
	} else {
		/* The granules it covers whole are in sync now. */
		uint64_t g = m->granularity;
		uint64_t a = (offset + g - 1) & ~(g - 1), e = (offset + len) & ~(g - 1);

		if (offset + len == vs_dirty_bitmap_size(m->bm))
			e = offset + len;
		if (e > a)
			vs_dirty_bitmap_clear(m->bm, a, e - a);
	}
	mirror_op_end(m, op);
}

static const struct vs_dirty_bitmap_write_hook mirror_write_hook = {
	.begin = mirror_write_begin,
	.end = mirror_write_end,
};

/* ---- the job ---- */

/* Hold the source's exports: the guest writes nothing any more. */
static void mirror_hold_exports(struct mirror *m)
{
	if (m->exports_held)
		return;
	vd_exports_drain_begin(m->src);
	m->exports_held = true;
}

static void mirror_undrain(struct mirror *m, struct vs_node *new_node)
{
	if (m->drained)
		vs_node_drain_end(m->src);
	if (m->exports_held)
		vd_exports_drain_end(m->src, new_node);
	m->drained = false;
	m->exports_held = false;
}

/*
 * The end of a completing (or soft-cancelled) job, with the exports held:
 * copy what is left, drain the source, flush the target. 0 when the target
 * is a complete copy (the source stays drained until prepare), 1 to go on
 * copying (an error was ignored), or -errno.
 */
static int mirror_finish(struct vd_job *job, struct mirror *m, uint64_t *cursor)
{
	int ret;

	mirror_hold_exports(m);
	while (!vd_job_cancelled(job)) {
		uint64_t bytes;

		while (mirror_issue(m, cursor, &bytes) > 0)
			;
		if (!m->ncopies && m->err) {
			ret = mirror_check_error(job, m);
			if (ret < 0)
				return ret;
			continue;
		}
		if (!m->ncopies && !vs_dirty_bitmap_count(m->bm))
			break;
		if (m->ncopies)
			vs_co_queue_wait(&m->changed);
	}
	mirror_wait_copies(m);
	if (vd_job_cancelled(job))
		return 0;
	/* Nothing writes the source now; whatever else did is copied here. */
	vs_node_drain_begin(m->src);
	m->drained = true;
	for (;;) {
		uint64_t start, len;
		bool read;

		if (!vs_dirty_bitmap_next_dirty(m->bm, 0, m->chunk, &start, &len))
			break;
		vs_dirty_bitmap_clear(m->bm, start, len);
		ret = mirror_copy(m, start, len, m->buf, &read);
		if (ret < 0) {
			vs_dirty_bitmap_set(m->bm, start, len);
			vs_node_drain_end(m->src);
			m->drained = false;
			ret = vd_job_io_error(job, read, ret);
			return ret < 0 ? ret : 1;
		}
		vd_job_progress(job, len);
	}
	ret = vs_node_flush(m->dst);
	if (ret < 0) {
		vs_node_drain_end(m->src);
		m->drained = false;
		ret = vd_job_io_error(job, false, ret);
		return ret < 0 ? ret : 1;
	}
	return 0;
}

static int mirror_run(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);
	uint64_t cursor = 0, end_by = 0;
	int ret;

	m->job = job;
	ret = mirror_mark_initial(job, m);
	if (ret < 0)
		return ret;
	m->passes = 0;
	m->win_left = vs_dirty_bitmap_count(m->bm);
	vd_job_set_remaining(job, m->win_left);
	while (!vd_job_cancelled(job)) {
		bool ending = m->should_complete || m->soft_cancel;
		uint64_t dirty, bytes;
		int issued = 0;

		ret = mirror_check_error(job, m);
		if (ret < 0)
			break;
		/*
		 * Ending (complete, soft cancel): once little is left (or after
		 * a while), hold the guest, copy the rest and flush; until then
		 * copy at full speed.
		 */
		if (ending && !end_by)
			end_by = mirror_now_ns() + MIRROR_FINAL_WAIT_NS;
		if (ending && (vs_dirty_bitmap_count(m->bm) <= MIRROR_FINAL_BYTES ||
			       mirror_now_ns() >= end_by)) {
			enum vs_io_class cls = vs_co_io_class();

			/* The guest is held from here: its wait is ours. */
			vs_co_set_io_class(VS_IO_CLASS_NORMAL);
			ret = mirror_finish(job, m, &cursor);
			vs_co_set_io_class(cls);
			if (ret <= 0)
				break; /* done: stays held until prepare/abort */
			mirror_undrain(m, NULL);
			end_by = 0;
			continue;
		}
		/*
		 * A round of copies at most: copies that end at once (zeroes
		 * skipped) must not keep the job from looking at errors,
		 * readiness and completion.
		 */
		while (issued < MIRROR_MAX_OPS && !vd_job_cancelled(job) && !m->err &&
		       mirror_issue(m, &cursor, &bytes) > 0) {
			issued++;
			m->win_copied += bytes;
			vd_job_yield_point(job, ending ? 0 : bytes);
		}
		dirty = vs_dirty_bitmap_count(m->bm);
		vd_job_set_remaining(job, dirty + m->copy_bytes);
		mirror_check_gain(job, m, dirty + m->copy_bytes);
		if (!vd_job_is_ready(job) && m->passes && !m->err &&
		    dirty + m->copy_bytes <= m->buf_size) {
			int fret = vs_node_flush(m->dst);

			if (fret < 0 && vd_job_io_error(job, false, fret) < 0) {
				ret = fret;
				break;
			}
			if (fret == 0)
				vd_job_set_ready(job);
		}
		if (m->ncopies || (dirty && !issued && m->ops)) {
			/* Full, or what is dirty is being written: wait for one to end. */
			vs_co_queue_wait(&m->changed);
			continue;
		}
		if (!dirty)
			vd_job_sleep(job, MIRROR_IDLE_NS);
		else if (!issued)
			vd_job_yield_point(job, 0);
	}
	mirror_wait_copies(m);
	return ret;
}

static int mirror_prepare(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);

	vs_node_dirty_bitmap_detach(m->bm);
	vs_dirty_bitmap_set_write_hook(m->bm, NULL, NULL);
	/* Complete: the exports go to the target. Soft cancel: they stay. */
	mirror_undrain(m, m->should_complete && !m->soft_cancel ? m->dst : NULL);
	return 0;
}

static void mirror_abort(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);

	/* No write of the source may be inside the write hook any more. */
	if (!m->drained)
		vs_node_drain_begin(m->src);
	vs_node_dirty_bitmap_detach(m->bm);
	vs_dirty_bitmap_set_write_hook(m->bm, NULL, NULL);
	if (!m->drained)
		vs_node_drain_end(m->src);
	mirror_undrain(m, NULL);
}

static void mirror_complete(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);

	m->should_complete = true;
}

static bool mirror_cancel(struct vd_job *job, bool force)
{
	struct mirror *m = vd_job_opaque(job);

	if (force || !vd_job_is_ready(job))
		return true;
	m->soft_cancel = true;
	return false;
}

static void mirror_clean(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);

	if (!m)
		return;
	vs_dirty_bitmap_free(m->bm);
	while (m->nbufs)
		free(m->bufs[--m->nbufs]);
	free(m->buf);
	free(m);
}

static const struct vd_job_driver mirror_driver = {
	.type = "mirror",
	.run = mirror_run,
	.complete = mirror_complete,
	.cancel = mirror_cancel,
	.prepare = mirror_prepare,
	.abort = mirror_abort,
	.clean = mirror_clean,
};

static const struct vd_job_driver active_commit_driver = {
	.type = "commit",
	.run = mirror_run,
	.complete = mirror_complete,
	.cancel = mirror_cancel,
	.prepare = mirror_prepare,
	.abort = mirror_abort,
	.clean = mirror_clean,
};

int vd_mirror_start(struct qmp_call *call, const struct vd_mirror_opts *mo,
		    const struct vd_job_opts *opts)
{
	struct vs_node *busy[VS_MAX_BACKING_DEPTH + 1];
	unsigned nbusy = 0;
	struct vd_job *job;
	struct mirror *m;
	uint64_t granularity = mo->granularity;
	int ret;

	if (!granularity) {
		granularity = vs_node_cluster_size(mo->dst);
		if (granularity < 4096 || granularity > (1u << 20))
			granularity = 65536;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	m->src = mo->src;
	m->dst = mo->dst;
	m->sync = mo->sync;
	m->copy_mode = mo->copy_mode;
	m->base_depth = mo->base_depth;
	m->granularity = granularity;
	m->buf_size = mo->buf_size ? mo->buf_size : MIRROR_DEFAULT_BUF_SIZE;
	if (m->buf_size < granularity)
		m->buf_size = granularity;
	/* One copy: whole granules, at most MIRROR_MAX_CHUNK (or one granule). */
	m->chunk = m->buf_size < MIRROR_MAX_CHUNK ? m->buf_size : MIRROR_MAX_CHUNK;
	m->chunk &= ~(granularity - 1);
	if (m->chunk < granularity)
		m->chunk = granularity;
	ret = vs_dirty_bitmap_new(vs_node_size(mo->src), granularity, &m->bm);
	if (ret == 0 && posix_memalign(&m->buf, 4096, m->chunk) != 0)
		ret = -ENOMEM;
	if (ret < 0) {
		vs_dirty_bitmap_free(m->bm);
		free(m);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	/* The source and, for a commit, the layers between it and the base. */
	busy[nbusy++] = mo->src;
	for (unsigned i = 1; i < mo->base_depth && nbusy < sizeof(busy) / sizeof(busy[0]); i++)
		busy[nbusy] = vs_node_backing(busy[nbusy - 1]), nbusy++;
	/* Writes from now on are followed (before the job's first step). */
	if (m->copy_mode == VD_MIRROR_COPY_WRITE_BLOCKING)
		vs_dirty_bitmap_set_write_hook(m->bm, &mirror_write_hook, m);
	vs_node_dirty_bitmap_attach(mo->src, m->bm);
	job = vd_job_new(call,
			 mo->sync == VD_MIRROR_SYNC_COMMIT ? &active_commit_driver : &mirror_driver,
			 m, opts, busy, nbusy, 0);
	if (!job)
		return -1;
	vd_job_hold(job, mo->dst);
	return 0;
}

/* ---- blockdev-mirror, drive-mirror ---- */

static const char *const sync_names[] = {
	[VD_MIRROR_SYNC_FULL] = "full",
	[VD_MIRROR_SYNC_TOP] = "top",
	[VD_MIRROR_SYNC_NONE] = "none",
};

/*
 * The arguments both mirror commands take besides the target: sync,
 * granularity, buf-size, the error policies, the job's. 0 or -1 after
 * qmp_error().
 */
static int mirror_args(struct qmp_call *call, struct vd_mirror_opts *mo, struct vd_job_opts *opts)
{
	const char *sync, *src_err = NULL, *dst_err = NULL, *copy_mode = "background";
	int64_t granularity = 0, buf_size = 0;
	unsigned i;

	if (qmp_arg_str(call, "sync", true, &sync) < 0 ||
	    qmp_arg_int(call, "granularity", false, &granularity) < 0 ||
	    qmp_arg_int(call, "buf-size", false, &buf_size) < 0 ||
	    qmp_arg_str(call, "on-source-error", false, &src_err) < 0 ||
	    qmp_arg_str(call, "on-target-error", false, &dst_err) < 0 ||
	    qmp_arg_str(call, "copy-mode", false, &copy_mode) < 0 ||
	    vd_job_parse_opts(call, opts) < 0)
		return -1;
	for (i = 0; i < 3 && strcmp(sync, sync_names[i]); i++)
		;
	if (i == 3)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'sync' does not accept value '%s'", sync);
	mo->sync = (enum vd_mirror_sync)i;
	if (!strcmp(copy_mode, "background"))
		mo->copy_mode = VD_MIRROR_COPY_BACKGROUND;
	else if (!strcmp(copy_mode, "write-blocking"))
		mo->copy_mode = VD_MIRROR_COPY_WRITE_BLOCKING;
	else
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'copy-mode' does not accept value '%s'", copy_mode);
	if (granularity && (granularity < 512 || granularity > (64 << 20)))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'granularity' expects a value in range [512B, 64MB]");
	if (granularity & (granularity - 1))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'granularity' expects a power of 2");
	/* Any size is taken: it bounds the copies in flight, each buffer is at most 1 MiB. */
	if (buf_size < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "Invalid parameter 'buf-size'");
	mo->granularity = (uint64_t)granularity;
	mo->buf_size = (uint64_t)buf_size;
	/* One policy for both sides: the source's if given, else the target's. */
	if (vd_job_parse_on_error(call, src_err ? "on-source-error" : "on-target-error",
				  src_err ? src_err : dst_err, &opts->on_error) < 0)
		return -1;
	return 0;
}

/* What both commands check of the source and the target. */
static int mirror_check(struct qmp_call *call, struct vd_node *n, struct vs_node *dst,
			const char *dst_name)
{
	const char *replaces = NULL;

	if (qmp_arg_str(call, "replaces", false, &replaces) < 0)
		return -1;
	if (replaces && strcmp(replaces, n->name))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "vstord replaces only the source node ('%s')", n->name);
	if (dst == n->node)
		return qmp_error(call, QMP_ERR_GENERIC, "Can't mirror node into itself");
	if (vd_job_check_node_free(call, n->node, n->name) < 0)
		return -1;
	if (dst_name && (vd_job_holds(dst) || vd_job_using(dst)))
		return qmp_error(call, QMP_ERR_GENERIC, "Need a root block node");
	if (dst_name && vd_export_uses(dst))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Cannot mirror to an attached block device");
	if (vs_node_is_read_only(dst))
		return qmp_error(call, QMP_ERR_GENERIC, "Block node is read-only");
	if (vs_node_size(dst) != vs_node_size(n->node))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Source and target image have different sizes");
	return 0;
}

static int cmd_blockdev_mirror(struct qmp_call *call)
{
	struct vd_mirror_opts mo = { 0 };
	struct vd_job_opts opts;
	const char *device, *target;
	struct vd_node *n, *t;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "target", true, &target) < 0 || mirror_args(call, &mo, &opts) < 0)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	t = vd_node_lookup(call, target);
	if (!t || mirror_check(call, n, t->node, target) < 0)
		return -1;
	mo.src = n->node;
	mo.dst = t->node;
	return vd_mirror_start(call, &mo, &opts);
}
QMP_COMMAND(blockdev_mirror, "blockdev-mirror", cmd_blockdev_mirror,
	    .params = QMP_PARAMS("job-id", "device", "target", "replaces", "sync", "speed",
				 "granularity", "buf-size", "on-source-error", "on-target-error",
				 "auto-finalize", "auto-dismiss", "copy-mode"))

static int cmd_drive_mirror(struct qmp_call *call)
{
	const char *device, *target, *format = NULL, *mode = "absolute-paths", *node_name = NULL;
	struct vd_mirror_opts mo = { 0 };
	struct vd_job_opts opts;
	struct vs_node *dst = NULL;
	struct vd_node *n;
	bool unmap = true;
	int ret;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "target", true, &target) < 0 ||
	    qmp_arg_str(call, "format", false, &format) < 0 ||
	    qmp_arg_str(call, "mode", false, &mode) < 0 ||
	    qmp_arg_str(call, "node-name", false, &node_name) < 0 ||
	    qmp_arg_bool(call, "unmap", false, &unmap) < 0 || mirror_args(call, &mo, &opts) < 0)
		return -1;
	if (strcmp(mode, "absolute-paths") && strcmp(mode, "existing"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'mode' does not accept value '%s'", mode);
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	if (node_name && vd_node_find(node_name))
		return qmp_error(call, QMP_ERR_GENERIC, "Duplicate nodes with node-name='%s'",
				 node_name);
	if (vd_job_check_node_free(call, n->node, n->name) < 0)
		return -1;
	if (!format && strcmp(mode, "existing"))
		format = vs_node_format(n->node);
	/* top keeps the source's backing chain below the target, none the source. */
	if (vd_job_open_drive_target(call, n->node,
				     mo.sync == VD_MIRROR_SYNC_TOP  ? vs_node_backing(n->node) :
				     mo.sync == VD_MIRROR_SYNC_NONE ? n->node :
								      NULL,
				     target, format, !strcmp(mode, "existing"), &dst) < 0)
		return -1;
	if (mirror_check(call, n, dst, NULL) < 0) {
		vs_node_close(dst);
		return -1;
	}
	mo.src = n->node;
	mo.dst = dst;
	ret = vd_mirror_start(call, &mo, &opts);
	/* The job holds the target now; a name keeps it in the graph as well. */
	if (ret == 0 && node_name && vd_node_add(node_name, dst))
		return 0;
	vs_node_close(dst);
	return ret;
}
QMP_COMMAND(drive_mirror, "drive-mirror", cmd_drive_mirror,
	    .params = QMP_PARAMS("job-id", "device", "target", "format", "node-name", "replaces",
				 "sync", "mode", "speed", "granularity", "buf-size",
				 "on-source-error", "on-target-error", "unmap", "auto-finalize",
				 "auto-dismiss", "copy-mode"))
