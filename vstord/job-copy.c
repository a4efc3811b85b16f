/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy loop that block-stream and block-commit share: walk a node's
 * backing chain in chunks and copy what some of its layers hold into a
 * destination node, with on-error, progress, pause and the speed limit of
 * the job framework (job.c).
 */
#include <errno.h>

#include "job.h"
#include "vstor/node.h"

/*
 * An I/O error, as on-error says: -EAGAIN to retry the chunk (stopped, then
 * resumed), 1 to go on past it (ignored), or -errno to fail.
 */
static int copy_io_error(struct vd_job *job, bool read, int ret)
{
	ret = vd_job_io_error(job, read, ret);
	return ret == 0 ? -EAGAIN : ret;
}

/* One chunk [off, off+len); returns as copy_io_error(), or 0. */
static int copy_chunk(struct vd_job *job, const struct vd_job_copy *cp, uint64_t off, uint64_t len,
		      uint64_t *copied)
{
	while (len) {
		uint64_t pnum;
		unsigned status, depth;
		int ret;

		ret = vs_node_block_status_above(cp->top, off, len, &pnum, &status, NULL, NULL,
						 &depth);
		if (ret < 0)
			return copy_io_error(job, true, ret);
		if (depth >= cp->min_depth && depth < cp->max_depth && (status & VS_BS_ALLOCATED)) {
			if (status & VS_BS_ZERO) {
				ret = vs_node_write_zeroes(cp->dst, off, pnum, 0);
			} else {
				ret = vs_node_pread(cp->top, off, cp->buf, pnum);
				if (ret < 0)
					return copy_io_error(job, true, ret);
				ret = vs_node_pwrite(cp->dst, off, cp->buf, pnum, 0);
			}
			if (ret < 0)
				return copy_io_error(job, false, ret);
			*copied += pnum;
		}
		off += pnum;
		len -= pnum;
	}
	return 0;
}

int vd_job_copy_chain(struct vd_job *job, const struct vd_job_copy *cp)
{
	uint64_t size = vs_node_size(cp->top);
	int failed = 0;

	vd_job_set_progress(job, 0, size);
	for (uint64_t off = 0; off < size && !vd_job_cancelled(job);) {
		uint64_t n = size - off < cp->chunk ? size - off : cp->chunk;
		uint64_t copied = 0;
		int ret;

		if (cp->drain)
			vs_node_drain_begin(cp->drain);
		ret = copy_chunk(job, cp, off, n, &copied);
		if (cp->drain)
			vs_node_drain_end(cp->drain);
		if (ret == -EAGAIN)
			continue; /* stopped on an error and resumed: again */
		if (ret < 0)
			return ret;
		if (ret > 0)
			failed = -EIO; /* ignored: the job fails at the end */
		off += n;
		vd_job_progress(job, n);
		vd_job_yield_point(job, copied);
	}
	return failed;
}
