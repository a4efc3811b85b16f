/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Copy-before-write (cbw.h): the source's before-write hook, the backup
 * job's copies and the point-in-time view's reads; copies claim their range.
 */
#include "cbw.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vstor/dirty-bitmap.h"
#include "vstor/node.h"
#include "vstor/reactor.h"

/* Bytes a before-write copies per step at most. */
#define CBW_CHUNK (1u << 20)
/*
 * Old data held in memory on its way to the target, at most: past it, a
 * write waits for its own copy to reach the target (a slow target then
 * slows the guest instead of filling the memory).
 */
#define CBW_HELD_MAX (16u << 20)

/*
 * A copy in flight: its range [start, end) is claimed until it is done.
 * @held: @buf holds the old data of the range (read before the write that
 * made the copy changes the source); the write went on, the target gets
 * it in the background, and until then the view reads the todo granules
 * of the range from @buf.
 */
struct cbw_copy {
	struct cbw_copy *next;
	uint64_t start, end;
	struct vs_co_queue done; /* the writes waiting for it */
	struct vd_cbw *cbw;
	void *buf;
	bool held;
};

struct vd_cbw {
	struct vs_node *src, *dst;
	struct vs_dirty_bitmap *todo;
	struct cbw_copy *copies; /* in flight */
	uint64_t held;		 /* bytes of the held copies' buffers */
	int error;
	bool attached;
	struct vd_cbw *next; /* in @attached_list while attached */
	void (*progress)(void *opaque, uint64_t bytes);
	void *opaque;
	struct vd_cbw_stats stats;
};

int vd_cbw_new(struct vs_node *src, struct vs_node *dst, uint64_t granularity,
	       void (*progress)(void *opaque, uint64_t bytes), void *opaque, struct vd_cbw **out)
{
	struct vd_cbw *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	ret = vs_dirty_bitmap_new(vs_node_size(src), granularity, &c->todo);
	if (ret < 0) {
		free(c);
		return ret;
	}
	c->src = vs_node_ref(src);
	c->dst = vs_node_ref(dst);
	c->progress = progress;
	c->opaque = opaque;
	*out = c;
	return 0;
}

static struct vd_cbw *attached_list;

bool vd_cbw_attached(const struct vs_node *src)
{
	for (const struct vd_cbw *c = attached_list; c; c = c->next)
		if (c->src == src)
			return true;
	return false;
}

struct vs_dirty_bitmap *vd_cbw_todo(struct vd_cbw *cbw)
{
	return cbw->todo;
}

int vd_cbw_error(const struct vd_cbw *cbw)
{
	return cbw->error;
}

void vd_cbw_stats(const struct vd_cbw *cbw, struct vd_cbw_stats *out)
{
	*out = cbw->stats;
	out->unit = vs_dirty_bitmap_granularity(cbw->todo);
}

static void cbw_progress(struct vd_cbw *c, uint64_t bytes)
{
	if (c->progress)
		c->progress(c->opaque, bytes);
}

/* A copy in flight that overlaps [@start, @end), or NULL. */
static struct cbw_copy *cbw_overlap(struct vd_cbw *c, uint64_t start, uint64_t end)
{
	for (struct cbw_copy *p = c->copies; p; p = p->next)
		if (p->start < end && start < p->end)
			return p;
	return NULL;
}

/*
 * Claim [@start, @end) once no copy in flight overlaps its todo granules
 * (waiting for those): true with @cp in the list, false when nothing in
 * it is todo any more (or a copy failed: the view is broken anyway).
 */
static bool cbw_claim(struct vd_cbw *c, struct cbw_copy *cp, uint64_t start, uint64_t end)
{
	uint64_t s, n;

	for (;;) {
		struct cbw_copy *o;

		if (c->error || !vs_dirty_bitmap_next_dirty(c->todo, start, 0, &s, &n) || s >= end)
			return false;
		o = cbw_overlap(c, s, end);
		if (!o)
			break;
		c->stats.waits++;
		vs_co_queue_wait(&o->done);
	}
	*cp = (struct cbw_copy){ .next = c->copies, .start = s, .end = end };
	c->copies = cp;
	return true;
}

static void cbw_release(struct vd_cbw *c, struct cbw_copy *cp)
{
	for (struct cbw_copy **p = &c->copies; *p; p = &(*p)->next)
		if (*p == cp) {
			*p = cp->next;
			break;
		}
	vs_co_queue_wake_all(&cp->done);
}

/* Write the todo granules of [@start, @end) from @buf (at @start) to the target; clear them. */
static int cbw_write_back(struct vd_cbw *c, uint64_t start, uint64_t end, const void *buf)
{
	uint64_t off, s, n;
	int ret = 0;

	for (off = start; vs_dirty_bitmap_next_dirty(c->todo, off, end - off, &s, &n) && s < end;
	     off = s + n) {
		if (s + n > end)
			n = end - s;
		ret = vs_node_pwrite(c->dst, s, (const char *)buf + (s - start), n, 0);
		if (ret < 0)
			return ret;
		vs_dirty_bitmap_clear(c->todo, s, n);
		cbw_progress(c, n);
	}
	return 0;
}

/* The background half of a held copy: its old data into the target. */
static void cbw_held_co(void *opaque)
{
	struct cbw_copy *cp = opaque;
	struct vd_cbw *c = cp->cbw;
	int ret = cbw_write_back(c, cp->start, cp->end, cp->buf);

	if (ret < 0 && !c->error)
		c->error = ret; /* the view is broken from here (vd_cbw_read) */
	c->held -= cp->end - cp->start;
	cbw_release(c, cp);
	free(cp->buf);
	free(cp);
}

/*
 * The source's before-write hook: the old data of the todo granules that
 * [@offset, @offset+@len) touches goes to the target first; nothing else.
 * A small copy is read into memory and the write goes on at once; the
 * target gets it in the background (cbw_held_co). A big one, or one past
 * CBW_HELD_MAX, reaches the target before the write goes on.
 */
static void cbw_before_write(void *opaque, uint64_t offset, uint64_t len)
{
	struct vd_cbw *c = opaque;
	uint64_t gran = vs_dirty_bitmap_granularity(c->todo), size = vs_node_size(c->src);
	uint64_t start = offset / gran * gran, end = (offset + len + gran - 1) / gran * gran, s, n;
	struct cbw_copy *cp;
	void *buf = NULL;
	size_t buf_len = 0;
	int ret = 0;

	c->stats.writes++;
	if (end > size)
		end = size;
	/* Most writes once the first ones went: nothing left to copy. */
	if (c->error || !vs_dirty_bitmap_next_dirty(c->todo, start, 0, &s, &n) || s >= end)
		return;
	cp = calloc(1, sizeof(*cp));
	if (!cp) {
		c->error = -ENOMEM;
		return;
	}
	if (!cbw_claim(c, cp, start, end)) {
		free(cp);
		return;
	}
	c->stats.copies++;
	cp->cbw = c;
	n = cp->end - cp->start;
	if (n <= CBW_CHUNK && c->held + n <= CBW_HELD_MAX && !posix_memalign(&cp->buf, 4096, n)) {
		for (start = cp->start;
		     vs_dirty_bitmap_next_dirty(c->todo, start, 0, &s, &n) && s < cp->end;
		     start = s + n)
			c->stats.copied_bytes += (s + n < cp->end ? s + n : cp->end) - s;
		n = cp->end - cp->start;
		/* Inside the source's own request: past its drain gate already. */
		ret = vs_node_pread_held(c->src, cp->start, cp->buf, n);
		if (ret == 0) {
			cp->held = true;
			c->held += n;
			if (vs_co_spawn(vs_reactor_current(), cbw_held_co, cp))
				return;
			cbw_held_co(cp); /* no coroutine: write it back here */
			return;
		}
		c->error = ret;
		free(cp->buf);
		cbw_release(c, cp);
		free(cp);
		return;
	}
	for (start = cp->start;
	     !c->error && vs_dirty_bitmap_next_dirty(c->todo, start, CBW_CHUNK, &s, &n) && s < end;
	     start = s + n) {
		if (s + n > end)
			n = end - s;
		if (n > buf_len) {
			free(buf);
			buf_len = n;
			if (posix_memalign(&buf, 4096, buf_len)) {
				buf = NULL;
				ret = -ENOMEM;
			}
		}
		if (ret == 0)
			ret = vs_node_pread_held(c->src, s, buf, n);
		if (ret == 0)
			ret = cbw_write_back(c, s, s + n, buf);
		if (ret < 0) {
			c->error = ret;
			break;
		}
		c->stats.copied_bytes += n;
	}
	free(buf);
	cbw_release(c, cp);
	free(cp);
}

int vd_cbw_attach(struct vd_cbw *cbw)
{
	int ret = vs_node_set_before_write(cbw->src, cbw_before_write, cbw);

	if (ret == 0) {
		cbw->attached = true;
		cbw->next = attached_list;
		attached_list = cbw;
	}
	return ret;
}

void vd_cbw_detach(struct vd_cbw *cbw)
{
	if (!cbw->attached)
		return;
	vs_node_drain_begin(cbw->src);
	vs_node_set_before_write(cbw->src, NULL, NULL);
	vs_node_drain_end(cbw->src);
	/* The held copies still on their way to the target. */
	while (cbw->copies)
		vs_co_queue_wait(&cbw->copies->done);
	cbw->attached = false;
	for (struct vd_cbw **p = &attached_list; *p; p = &(*p)->next)
		if (*p == cbw) {
			*p = cbw->next;
			break;
		}
}

void vd_cbw_free(struct vd_cbw *cbw)
{
	if (!cbw)
		return;
	vd_cbw_detach(cbw);
	vs_dirty_bitmap_free(cbw->todo);
	vs_node_close(cbw->src);
	vs_node_close(cbw->dst);
	free(cbw);
}

int64_t vd_cbw_put(struct vd_cbw *cbw, uint64_t offset, uint64_t len, const void *buf, bool zero)
{
	uint64_t end = offset + len, off, s, n;
	struct cbw_copy cp;
	int64_t done = 0;
	int ret = 0;

	/*
	 * What the job read is the old data of the granules still todo now: a
	 * write to one would have copied it and cleared it first. Copies in
	 * flight on the range are waited for (their granules are not todo
	 * after); nothing todo (or a broken view, see vd_cbw_error): 0.
	 */
	if (!cbw_claim(cbw, &cp, offset, end))
		return 0;
	for (off = cp.start;
	     vs_dirty_bitmap_next_dirty(cbw->todo, off, end - off, &s, &n) && s < end;
	     off = s + n) {
		if (s + n > end)
			n = end - s;
		ret = zero ? vs_node_write_zeroes(cbw->dst, s, n, 0) :
			     vs_node_pwrite(cbw->dst, s, (const char *)buf + (s - offset), n, 0);
		if (ret < 0)
			break;
		vs_dirty_bitmap_clear(cbw->todo, s, n);
		cbw_progress(cbw, n);
		done += (int64_t)n;
	}
	cbw_release(cbw, &cp);
	return ret < 0 ? ret : done;
}

void vd_cbw_skip(struct vd_cbw *cbw, uint64_t offset, uint64_t len)
{
	struct cbw_copy cp;

	/* Not under a copy in flight: that one clears what it copied. */
	if (cbw_claim(cbw, &cp, offset, offset + len)) {
		vs_dirty_bitmap_clear(cbw->todo, cp.start, offset + len - cp.start);
		cbw_release(cbw, &cp);
	}
}

/*
 * The end of the run from @off (below @end) whose granules are all todo
 * (@todo) or all not, clipped to @end.
 */
static uint64_t cbw_run_end(struct vd_cbw *c, uint64_t off, uint64_t end, bool todo)
{
	uint64_t s, n;

	if (!vs_dirty_bitmap_next_dirty(c->todo, off, 0, &s, &n))
		return end;
	if (todo)
		s += n;
	return s < end ? s : end;
}

int vd_cbw_read(struct vd_cbw *cbw, uint64_t offset, uint64_t len, void *buf)
{
	uint64_t end = offset + len, off, e;
	int ret;

	/*
	 * The source first; then the granules no longer todo come from the
	 * target. A granule still todo and not held was not written
	 * meanwhile: a write holds or copies it before it changes it, so what
	 * was read is the old data; a held one's old data is in its copy's
	 * buffer; one that is not todo has its old data in the target for
	 * good (nothing writes there any more).
	 */
	ret = vs_node_pread(cbw->src, offset, buf, len);
	for (off = offset; off < end && ret == 0; off = e) {
		bool todo = vs_dirty_bitmap_get(cbw->todo, off);

		e = cbw_run_end(cbw, off, end, todo);
		if (!todo) {
			ret = vs_node_pread(cbw->dst, off, (char *)buf + (off - offset), e - off);
			continue;
		}
		/* Todo but held: the source may have changed, the old data is in memory. */
		for (struct cbw_copy *p = cbw->copies; p; p = p->next) {
			uint64_t a = p->start > off ? p->start : off, b = p->end < e ? p->end : e;

			if (p->held && a < b)
				memcpy((char *)buf + (a - offset), (char *)p->buf + (a - p->start),
				       b - a);
		}
	}
	if (ret == 0 && cbw->error)
		ret = cbw->error;
	return ret;
}

int vd_cbw_block_status(struct vd_cbw *cbw, uint64_t offset, uint64_t len, uint64_t *pnum,
			bool *zero)
{
	uint64_t n, end, spnum = 0, dpnum = 0;
	unsigned sstatus = 0, dstatus = 0;
	bool todo;
	int ret;

	/*
	 * The source's status first (as vd_cbw_read): a granule still todo
	 * after it was not written since, so that status is the view's; one
	 * copied meanwhile is asked of the target.
	 */
	ret = vs_node_block_status_above(cbw->src, offset, len, &spnum, &sstatus, NULL, NULL, NULL);
	if (ret < 0)
		return ret;
	todo = vs_dirty_bitmap_get(cbw->todo, offset);
	end = todo ? offset + spnum : offset + len;
	n = cbw_run_end(cbw, offset, end, todo) - offset;
	if (todo) {
		*zero = sstatus & VS_BS_ZERO;
		/* A held copy's range may have changed in the source: data, as far as it goes. */
		for (struct cbw_copy *p = cbw->copies; p; p = p->next) {
			if (!p->held || p->end <= offset || p->start >= offset + n)
				continue;
			if (p->start <= offset) {
				*zero = false;
				if (p->end < offset + n)
					n = p->end - offset;
			} else {
				n = p->start - offset;
			}
		}
	} else {
		ret = vs_node_block_status(cbw->dst, offset, n, &dpnum, &dstatus, NULL, NULL);
		if (ret == 0 && dpnum && dpnum < n)
			n = dpnum;
		*zero = ret == 0 && (dstatus & VS_BS_ALLOCATED) && (dstatus & VS_BS_ZERO);
	}
	*pnum = n ? n : len;
	return ret;
}
