/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Mirroring a live node into a target: blockdev-mirror, drive-mirror, and
 * the active commit of block-commit (the target is a base of the active
 * node), with qemu-storage-daemon's arguments, messages and events.
 *
 * A dirty bitmap attached to the source (vstor/dirty-bitmap.h) records
 * what the guest writes. The job marks what the sync mode copies, then
 * copies dirty runs, clearing their bits before it reads them: a guest
 * write that lands during the copy marks its range again, so it is copied
 * again. Once nothing is dirty the job is ready (BLOCK_JOB_READY) and keeps
 * following the writes. After block-job-complete the job copies at full
 * speed until at most 16 MiB are dirty, then drains the exports of the
 * source and the source itself, copies what is left, flushes the target
 * and points the exports at the target: no request fails, none is lost
 * (requests wait for the final copy instead).
 * A cancel after ready (not forced) ends the job the same way without the
 * switch: the target is a consistent copy of the moment it ended.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "export.h"
#include "job.h"
#include "job-mirror.h"
#include "vstor/dirty-bitmap.h"

/* Idle wait of a ready job between looks at the bitmap. */
#define MIRROR_IDLE_NS 10000000ull
/* What is left to copy with the guest held when the job ends. */
#define MIRROR_FINAL_BYTES (16u << 20)

struct mirror {
	struct vs_node *src, *dst;
	struct vs_dirty_bitmap *bm;
	enum vd_mirror_sync sync;
	unsigned base_depth; /* active commit: layers above the base */
	void *buf;
	uint64_t buf_size;
	bool should_complete; /* block-job-complete */
	bool soft_cancel;     /* block-job-cancel of a ready job, not forced */
	bool drained;	      /* the source and its exports are held */
};

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
 * Copy [off, off+len) from the source to the target: zeroes as zeroes
 * (skipped when the target reads zeroes there already). 0 or -errno; *@read
 * says which side failed.
 */
static int mirror_copy(struct mirror *m, uint64_t off, uint64_t len, bool *read)
{
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
			ret = vs_node_block_status_above(m->dst, off, pnum, &tnum, &tstatus, NULL,
							 NULL, NULL);
			if (ret < 0)
				return ret;
			pnum = tnum;
			*read = false;
			if (!(tstatus & VS_BS_ZERO))
				ret = vs_node_write_zeroes(m->dst, off, pnum, 0);
		} else {
			ret = vs_node_pread(m->src, off, m->buf, pnum);
			if (ret < 0)
				return ret;
			*read = false;
			ret = vs_node_pwrite(m->dst, off, m->buf, pnum, 0);
		}
		if (ret < 0)
			return ret;
		off += pnum;
		len -= pnum;
	}
	return 0;
}

/*
 * Copy one dirty run from *@cursor on (wrapping around). Returns the bytes
 * copied, 0 when nothing is dirty, or -errno when the job must fail.
 */
static int64_t mirror_step(struct vd_job *job, struct mirror *m, uint64_t *cursor)
{
	uint64_t start, len;
	bool read;
	int ret;

	if (!vs_dirty_bitmap_next_dirty(m->bm, *cursor, m->buf_size, &start, &len) &&
	    !vs_dirty_bitmap_next_dirty(m->bm, 0, m->buf_size, &start, &len))
		return 0;
	vs_dirty_bitmap_clear(m->bm, start, len);
	ret = mirror_copy(m, start, len, &read);
	if (ret < 0) {
		vs_dirty_bitmap_set(m->bm, start, len); /* not copied */
		ret = vd_job_io_error(job, read, ret);
		if (ret < 0)
			return ret;
		return 0; /* stopped and resumed, or ignored: it stays dirty */
	}
	*cursor = start + len;
	vd_job_progress(job, len);
	return (int64_t)len;
}

/* Hold the source's exports and the source: nothing writes it any more. */
static void mirror_drain(struct mirror *m)
{
	vd_exports_drain_begin(m->src);
	vs_node_drain_begin(m->src);
	m->drained = true;
}

static void mirror_undrain(struct mirror *m, struct vs_node *new_node)
{
	if (!m->drained)
		return;
	vs_node_drain_end(m->src);
	vd_exports_drain_end(m->src, new_node);
	m->drained = false;
}

static int mirror_run(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);
	uint64_t cursor = 0;
	int ret;

	ret = mirror_mark_initial(job, m);
	if (ret < 0)
		return ret;
	vd_job_set_remaining(job, vs_dirty_bitmap_count(m->bm));
	while (!vd_job_cancelled(job)) {
		bool ending = m->should_complete || m->soft_cancel;
		int64_t copied;

		/*
		 * Ending (complete, soft cancel): once little is left, hold the
		 * guest, copy the rest and flush; until then copy at full speed,
		 * so that a guest writing all the time cannot hold the job off.
		 */
		if (ending && vs_dirty_bitmap_count(m->bm) <= MIRROR_FINAL_BYTES) {
			mirror_drain(m);
			while ((copied = mirror_step(job, m, &cursor)) > 0)
				;
			ret = copied < 0 ? (int)copied : vs_node_flush(m->dst);
			if (ret == 0 && !vs_dirty_bitmap_count(m->bm))
				return 0; /* stays drained until prepare/abort */
			mirror_undrain(m, NULL);
			if (ret < 0)
				return ret;
			continue;
		}
		copied = mirror_step(job, m, &cursor);
		if (copied < 0)
			return (int)copied;
		vd_job_set_remaining(job, vs_dirty_bitmap_count(m->bm));
		if (copied == 0 && !vs_dirty_bitmap_count(m->bm)) {
			if (!vd_job_is_ready(job)) {
				ret = vs_node_flush(m->dst);
				if (ret < 0 && vd_job_io_error(job, false, ret) < 0)
					return ret;
				if (ret == 0)
					vd_job_set_ready(job);
			}
			vd_job_sleep(job, MIRROR_IDLE_NS);
			continue;
		}
		if (copied == 0) {
			/* An error was ignored, or stopped the job: not again at once. */
			vd_job_sleep(job, MIRROR_IDLE_NS);
			continue;
		}
		vd_job_yield_point(job, ending ? 0 : (uint64_t)copied);
	}
	return 0;
}

static int mirror_prepare(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);

	vs_node_dirty_bitmap_detach(m->bm);
	/* Complete: the exports go to the target. Soft cancel: they stay. */
	mirror_undrain(m, m->should_complete && !m->soft_cancel ? m->dst : NULL);
	return 0;
}

static void mirror_abort(struct vd_job *job)
{
	struct mirror *m = vd_job_opaque(job);

	vs_node_dirty_bitmap_detach(m->bm);
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
	m->base_depth = mo->base_depth;
	m->buf_size = mo->buf_size ? mo->buf_size : (1u << 20);
	if (m->buf_size < granularity)
		m->buf_size = granularity;
	ret = vs_dirty_bitmap_new(vs_node_size(mo->src), granularity, &m->bm);
	if (ret == 0 && posix_memalign(&m->buf, 4096, m->buf_size) != 0)
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
	const char *sync, *src_err = NULL, *dst_err = NULL;
	int64_t granularity = 0, buf_size = 0;
	unsigned i;

	if (qmp_arg_str(call, "sync", true, &sync) < 0 ||
	    qmp_arg_int(call, "granularity", false, &granularity) < 0 ||
	    qmp_arg_int(call, "buf-size", false, &buf_size) < 0 ||
	    qmp_arg_str(call, "on-source-error", false, &src_err) < 0 ||
	    qmp_arg_str(call, "on-target-error", false, &dst_err) < 0 ||
	    vd_job_parse_opts(call, opts) < 0)
		return -1;
	for (i = 0; i < 3 && strcmp(sync, sync_names[i]); i++)
		;
	if (i == 3)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'sync' does not accept value '%s'", sync);
	mo->sync = (enum vd_mirror_sync)i;
	if (granularity && (granularity < 512 || granularity > (64 << 20)))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'granularity' expects a value in range [512B, 64MB]");
	if (granularity & (granularity - 1))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'granularity' expects a power of 2");
	if (buf_size < 0 || buf_size > (1ll << 31) - 1)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'buf-size' expects a value in range [0, 2147483647]");
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
				 "auto-finalize", "auto-dismiss"))

/* drive-mirror's target: created (absolute-paths) or opened (existing), with its backing. */
static int drive_mirror_target(struct qmp_call *call, struct vs_node *src, enum vd_mirror_sync sync,
			       const char *file, const char *format, bool existing,
			       struct vs_node **out)
{
	/* top keeps the source's backing chain below the target, none the source. */
	struct vs_node *backing = sync == VD_MIRROR_SYNC_TOP  ? vs_node_backing(src) :
				  sync == VD_MIRROR_SYNC_NONE ? src :
								NULL;
	struct vs_error err = { 0 };
	struct vs_open_opts oo = {
		.filename = file,
		.format = format,
		.no_backing = true,
		.cache = vs_node_cache_mode(src),
	};

	if (!existing) {
		struct vs_kv kv[2] = { { "backing_file", NULL }, { "backing_fmt", NULL } };

		if (backing) {
			kv[0].value = vs_node_filename(backing);
			kv[1].value = vs_node_format(backing);
		}
		if (vs_image_create(file, format, vs_node_size(src), kv, backing ? 2 : 0, &err) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	if (vs_image_open(out, &oo, &err) < 0)
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	if (backing && vs_node_replace_backing(*out, backing, &err) < 0) {
		vs_node_close(*out);
		return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
	}
	return 0;
}

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
	if (drive_mirror_target(call, n->node, mo.sync, target, format, !strcmp(mode, "existing"),
				&dst) < 0)
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
				 "auto-dismiss"))
