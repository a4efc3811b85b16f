/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy-before-write and snapshot-access nodes (fleece.h), as libstore
 * nodes of two small drivers that are never registered (only blockdev-add
 * makes them). The copy-before-write node passes its I/O to its file (the
 * source); the freezing itself is cbw.c's hook on the source, so writes
 * that reach the source by another path (an export added on it before)
 * are covered too, where QEMU covers only those through the filter. The
 * snapshot-access node reads through vd_cbw_read and refuses writes.
 */
#include "fleece.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "cbw.h"
#include "driver.h"
#include "export.h"
#include "iov.h"
#include "job.h"
#include "vstor/dirty-bitmap.h"

/*
 * The copy unit of the frozen view: the target's cluster, at least 4 KiB
 * (a guest's 4 KiB write copies 4 KiB, not a 64 KiB bitmap granule). Two
 * copies never share a target cluster, so they run side by side.
 */
#define FLEECE_MIN_UNIT 4096u

struct cbw_state {
	struct vd_cbw *cbw;
};

static void cbw_node_close(struct vs_node *node)
{
	struct cbw_state *s = node->opaque;

	/* Its hook leaves the source (drained, in the monitor's coroutine). */
	vd_cbw_free(s->cbw);
	s->cbw = NULL;
}

static const struct vs_driver cbw_driver = {
	.name = "copy-before-write",
	.state_size = sizeof(struct cbw_state),
	.close = cbw_node_close,
	.submit = vs_filter_submit,
	.supported_write_flags = VS_REQ_FUA,
	.supported_zero_flags = VS_REQ_MAY_UNMAP | VS_REQ_FUA,
};

static int access_submit(struct vs_node *node, struct vs_req *req)
{
	struct cbw_state *s = node->file->opaque;
	void *buf;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		if (req->niov == 1)
			return vd_cbw_read(s->cbw, req->offset, req->len, req->iov[0].iov_base);
		buf = malloc(req->len ? req->len : 1);
		if (!buf)
			return -ENOMEM;
		ret = vd_cbw_read(s->cbw, req->offset, req->len, buf);
		if (ret == 0)
			vs_iov_from_buf(req->iov, req->niov, 0, buf, req->len);
		free(buf);
		return ret;
	case VS_OP_FLUSH:
		return 0;
	case VS_OP_BLOCK_STATUS: {
		/* What reads as zeroes in the view, so that a backup skips it. */
		bool zero = false;

		ret = vd_cbw_block_status(s->cbw, req->offset, req->len, &req->bs_pnum, &zero);
		if (ret < 0)
			return ret;
		req->bs_status = VS_BS_ALLOCATED | (zero ? VS_BS_ZERO : VS_BS_DATA);
		req->bs_map = 0;
		req->bs_file = NULL;
		return 0;
	}
	default:
		return -EPERM;
	}
}

/*
 * The view shows the source's bitmaps (the source is the file of its
 * file), so that an export of the view can serve them (a checkpoint's
 * qemu:dirty-bitmap context). A disabled bitmap is the same in the view.
 */
static int access_bitmap_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb)
{
	return vs_node_dirty_bitmaps(node->file->file, out, nb);
}

static int access_bitmap_status(struct vs_node *node, const char *name, uint64_t offset,
				uint64_t len, bool *dirty, uint64_t *run)
{
	return vs_node_bitmap_status(node->file->file, name, offset, len, dirty, run);
}

static const struct vs_driver access_driver = {
	.name = "snapshot-access",
	.submit = access_submit,
	.bitmap_list = access_bitmap_list,
	.bitmap_status = access_bitmap_status,
};

int vd_fleece_cbw_open(struct qmp_call *call, struct vs_node *file, struct vs_node *target,
		       bool drained, struct vs_node **out)
{
	struct vs_open_opts oo = { .cache = vs_node_cache_mode(file) };
	uint64_t gran = vs_node_cluster_size(target);
	struct cbw_state *s;
	struct vs_node *n;
	int ret;

	if (file == target)
		return qmp_error(call, QMP_ERR_GENERIC, "Source and target cannot be the same");
	if (vs_node_size(target) != vs_node_size(file))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Source and target image have different sizes");
	if (vs_node_is_read_only(target))
		return qmp_error(call, QMP_ERR_GENERIC, "Block node is read-only");
	if (vd_cbw_attached(file) || vd_job_using(file))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Node '%s' is busy: copy-before-write is already attached",
				 vd_node_name_of(file));
	if (gran < FLEECE_MIN_UNIT)
		gran = FLEECE_MIN_UNIT;
	n = vs_node_new(&cbw_driver, vs_node_filename(file), &oo);
	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	s = n->opaque;
	if (vd_cbw_new(file, target, gran, NULL, NULL, &s->cbw) < 0) {
		vs_node_free(n);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	n->file = vs_node_ref(file);
	n->size = vs_node_size(file);
	n->limits = file->limits;
	n->caps = file->caps | VS_CAP_FLUSH;
	n->read_only = vs_node_is_read_only(file);
	vs_dirty_bitmap_set(vd_cbw_todo(s->cbw), 0, n->size);
	/* The point in time: nothing is in flight on the source when the hook goes on. */
	if (!drained) {
		vd_exports_drain_begin(file);
		vs_node_drain_begin(file);
	}
	ret = vd_cbw_attach(s->cbw);
	if (!drained) {
		vs_node_drain_end(file);
		vd_exports_drain_end(file, NULL);
	}
	if (ret < 0) {
		vs_node_close(n);
		return qmp_error(call, QMP_ERR_GENERIC, "Node '%s' is busy", vd_node_name_of(file));
	}
	*out = n;
	return 0;
}

struct vd_cbw *vd_fleece_cbw(struct vs_node *node)
{
	return node && node->drv == &cbw_driver ? ((struct cbw_state *)node->opaque)->cbw : NULL;
}

int vd_fleece_access_open(struct qmp_call *call, struct vs_node *file, struct vs_node **out)
{
	struct vs_open_opts oo = { .read_only = true, .cache = vs_node_cache_mode(file) };
	struct vs_node *n;

	if (file->drv != &cbw_driver)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "snapshot-access: '%s' is not a copy-before-write node",
				 vd_node_name_of(file));
	n = vs_node_new(&access_driver, vs_node_filename(file), &oo);
	if (!n)
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	n->file = vs_node_ref(file);
	n->size = vs_node_size(file);
	n->limits.request_align = 1;
	n->caps = VS_CAP_FLUSH | VS_CAP_BLOCK_STATUS;
	*out = n;
	return 0;
}
