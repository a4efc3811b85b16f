/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Copy-before-write (cbw.h): the source's before-write hook, the backup
 * job's copies and the point-in-time view's reads, under one mutex.
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

struct vd_cbw {
	struct vs_node *src, *dst;
	struct vs_dirty_bitmap *todo;
	struct vs_co_mutex lock; /* the target's copies and the todo bits */
	void *buf;		 /* CBW_CHUNK bytes, under @lock */
	int error;
	bool attached;
	struct vd_cbw *next; /* in @attached_list while attached */
	void (*progress)(void *opaque, uint64_t bytes);
	void *opaque;
};

int vd_cbw_new(struct vs_node *src, struct vs_node *dst, uint64_t granularity,
	       void (*progress)(void *opaque, uint64_t bytes), void *opaque, struct vd_cbw **out)
{
	struct vd_cbw *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	ret = vs_dirty_bitmap_new(vs_node_size(src), granularity, &c->todo);
	if (ret == 0 && posix_memalign(&c->buf, 4096, CBW_CHUNK))
		ret = -ENOMEM;
	if (ret < 0) {
		vs_dirty_bitmap_free(c->todo);
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

static void cbw_progress(struct vd_cbw *c, uint64_t bytes)
{
	if (c->progress)
		c->progress(c->opaque, bytes);
}

/* The source's before-write hook: the old data of todo granules goes to the target first. */
static void cbw_before_write(void *opaque, uint64_t offset, uint64_t len)
{
	struct vd_cbw *c = opaque;
	uint64_t gran = vs_dirty_bitmap_granularity(c->todo), end, start, run;

	if (c->error || !vs_dirty_bitmap_next_dirty(c->todo, offset, 0, &start, &run) ||
	    start >= offset + len)
		return;
	end = (offset + len + gran - 1) / gran * gran;
	vs_co_mutex_lock(&c->lock);
	while (!c->error && vs_dirty_bitmap_next_dirty(c->todo, offset, CBW_CHUNK, &start, &run) &&
	       start < end) {
		int ret;

		if (start + run > end)
			run = end - start;
		/* Inside the source's own request: past its drain gate already. */
		ret = vs_node_pread_held(c->src, start, c->buf, run);
		if (ret == 0)
			ret = vs_node_pwrite(c->dst, start, c->buf, run, 0);
		if (ret < 0) {
			c->error = ret;
			break;
		}
		vs_dirty_bitmap_clear(c->todo, start, run);
		cbw_progress(c, run);
		offset = start + run;
	}
	vs_co_mutex_unlock(&c->lock);
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
	free(cbw->buf);
	vs_node_close(cbw->src);
	vs_node_close(cbw->dst);
	free(cbw);
}

int64_t vd_cbw_put(struct vd_cbw *cbw, uint64_t offset, uint64_t len, const void *buf, bool zero)
{
	uint64_t end = offset + len, off = offset, s, n;
	int64_t done = 0;
	int ret = 0;

	vs_co_mutex_lock(&cbw->lock);
	while (off < end && vs_dirty_bitmap_next_dirty(cbw->todo, off, end - off, &s, &n) &&
	       s < end) {
		if (s + n > end)
			n = end - s;
		ret = zero ? vs_node_write_zeroes(cbw->dst, s, n, 0) :
			     vs_node_pwrite(cbw->dst, s, (const char *)buf + (s - offset), n, 0);
		if (ret < 0)
			break;
		vs_dirty_bitmap_clear(cbw->todo, s, n);
		cbw_progress(cbw, n);
		done += (int64_t)n;
		off = s + n;
	}
	vs_co_mutex_unlock(&cbw->lock);
	return ret < 0 ? ret : done;
}

void vd_cbw_skip(struct vd_cbw *cbw, uint64_t offset, uint64_t len)
{
	vs_co_mutex_lock(&cbw->lock);
	vs_dirty_bitmap_clear(cbw->todo, offset, len);
	vs_co_mutex_unlock(&cbw->lock);
}

int vd_cbw_read(struct vd_cbw *cbw, uint64_t offset, uint64_t len, void *buf)
{
	uint64_t end = offset + len, off, s, n;
	int ret;

	/*
	 * The source first, outside the lock (it may wait at a drain); then,
	 * under the lock, the granules no longer todo come from the target. A
	 * granule still todo was not written meanwhile: a write copies it and
	 * clears it before it changes it, so what was read is the old data.
	 */
	ret = vs_node_pread(cbw->src, offset, buf, len);
	if (ret < 0)
		return ret;
	vs_co_mutex_lock(&cbw->lock);
	for (off = offset; off < end && ret == 0; off = s + n) {
		s = off;
		while (s < end && vs_dirty_bitmap_get(cbw->todo, s))
			s = (s / vs_dirty_bitmap_granularity(cbw->todo) + 1) *
			    vs_dirty_bitmap_granularity(cbw->todo);
		if (s >= end)
			break;
		n = 0;
		while (s + n < end && !vs_dirty_bitmap_get(cbw->todo, s + n))
			n = ((s + n) / vs_dirty_bitmap_granularity(cbw->todo) + 1) *
				    vs_dirty_bitmap_granularity(cbw->todo) -
			    s;
		if (s + n > end)
			n = end - s;
		ret = vs_node_pread(cbw->dst, s, (char *)buf + (s - offset), n);
	}
	vs_co_mutex_unlock(&cbw->lock);
	return ret;
}

int vd_cbw_block_status(struct vd_cbw *cbw, uint64_t offset, uint64_t len, uint64_t *pnum,
			bool *zero)
{
	uint64_t gran = vs_dirty_bitmap_granularity(cbw->todo), end, n, spnum = 0, dpnum = 0;
	unsigned sstatus = 0, dstatus = 0;
	bool todo;
	int ret;

	/*
	 * The source's status first, outside the lock (as vd_cbw_read): a
	 * granule still todo under the lock was not written since, so that
	 * status is the view's; one copied meanwhile is asked of the target.
	 */
	ret = vs_node_block_status_above(cbw->src, offset, len, &spnum, &sstatus, NULL, NULL, NULL);
	if (ret < 0)
		return ret;
	vs_co_mutex_lock(&cbw->lock);
	todo = vs_dirty_bitmap_get(cbw->todo, offset);
	end = todo ? offset + spnum : offset + len;
	for (n = (offset / gran + 1) * gran - offset;
	     offset + n < end && vs_dirty_bitmap_get(cbw->todo, offset + n) == todo; n += gran)
		;
	if (offset + n > end)
		n = end - offset;
	if (todo) {
		*zero = sstatus & VS_BS_ZERO;
	} else {
		ret = vs_node_block_status(cbw->dst, offset, n, &dpnum, &dstatus, NULL, NULL);
		if (ret == 0 && dpnum && dpnum < n)
			n = dpnum;
		*zero = ret == 0 && (dstatus & VS_BS_ALLOCATED) && (dstatus & VS_BS_ZERO);
	}
	vs_co_mutex_unlock(&cbw->lock);
	*pnum = n ? n : len;
	return ret;
}
