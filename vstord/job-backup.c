/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The backup job: blockdev-backup and drive-backup, as commands and as
 * transaction actions, with qemu-storage-daemon's arguments, messages and
 * events (QEMU's BlockdevBackup, DriveBackup, MirrorSyncMode and
 * BitmapSyncMode).
 *
 * The target receives the source as it was when the job started, while
 * the guest keeps writing: copy-before-write (cbw.c) keeps a "todo" bitmap
 * of the granules still to copy (what the sync mode asks for) and copies
 * the old data of a todo granule to the target before a write changes it.
 * The job walks the rest: it reads outside cbw's mutex and writes what it
 * read only for the granules still todo (vd_cbw_put): a write to one of
 * them would have copied it (and cleared it) first, so what the job read
 * is the old data.
 *
 * Bitmaps (sync=bitmap/incremental, or a bitmap with full/top): the job
 * starts from the bitmap's bits; a transient successor bitmap records the
 * writes made during the job. On success with bitmap-mode on-success or
 * always the bitmap becomes the successor (what changed since the start),
 * with never it keeps everything; on failure it keeps everything (always:
 * QEMU would clear what was copied; keeping it is a superset, never wrong).
 * Control reactor only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "block.h"
#include "cbw.h"
#include "export.h"
#include "job.h"
#include "transaction.h"
#include "vstor/dirty-bitmap.h"

/* Bytes copied per step of the job, and per copy-before-write at most. */
#define BACKUP_CHUNK (1u << 20)
/* The granularity without a bitmap (QEMU's block-copy cluster, at least 64 KiB). */
#define BACKUP_GRANULARITY (64u << 10)
/* How often a sync=none job looks whether copy-before-write failed. */
#define BACKUP_IDLE_NS 100000000ull

enum backup_sync { SYNC_TOP, SYNC_FULL, SYNC_NONE, SYNC_INCREMENTAL, SYNC_BITMAP };
static const char *const sync_names[] = { "top", "full", "none", "incremental", "bitmap" };

enum bitmap_mode { BM_ON_SUCCESS, BM_NEVER, BM_ALWAYS };
static const char *const bitmap_mode_names[] = { "on-success", "never", "always" };

struct backup {
	struct backup *next; /* prepared, not yet committed (pending) */
	struct vs_node *src, *dst;
	struct vd_job *job;
	enum backup_sync sync;
	struct vd_cbw *cbw;	      /* the point in time: todo granules, the hook */
	struct vs_dirty_bitmap *todo; /* the cbw's */
	void *buf;		      /* the job's reads */
	/* A bitmap given: its name, its mode, the successor's name. */
	char *bitmap, *successor;
	enum bitmap_mode mode;
	bool busy, successor_added;
	/* What the job is made with in commit. */
	struct vd_job_opts opts;
	char *job_id;
	bool drive; /* drive-backup: the target node is ours */
};

static struct backup *pending;

static bool backup_pending_on(const struct vs_node *node)
{
	for (struct backup *b = pending; b; b = b->next)
		if (b->src == node || b->dst == node)
			return true;
	return false;
}

static void pending_remove(struct backup *b)
{
	for (struct backup **p = &pending; *p; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			return;
		}
}

/* A bitmap operation of the job's own (no message needed: it cannot be refused). */
static void backup_bitmap_op(struct backup *b, enum vs_bitmap_action action, const char *name,
			     const char *src_name)
{
	struct vs_bitmap_op op = {
		.action = action,
		.name = name,
		.src = b->src,
		.src_name = src_name,
	};
	struct vs_error err = { 0 };

	(void)vd_bitmap_apply(b->src, &op, &err);
}

/* The bitmap goes back to the monitor: as @success says and its mode asks. */
static void backup_release_bitmap(struct backup *b, bool success)
{
	if (b->successor_added) {
		if (success && b->mode != BM_NEVER) {
			backup_bitmap_op(b, VS_BITMAP_CLEAR, b->bitmap, NULL);
			backup_bitmap_op(b, VS_BITMAP_MERGE, b->bitmap, b->successor);
		}
		backup_bitmap_op(b, VS_BITMAP_REMOVE, b->successor, NULL);
		b->successor_added = false;
	}
	if (b->busy) {
		vd_bitmap_busy_put(b->src, b->bitmap);
		b->busy = false;
	}
}

static void backup_free(struct backup *b)
{
	if (!b)
		return;
	vd_cbw_free(b->cbw);
	free(b->buf);
	free(b->bitmap);
	free(b->successor);
	free(b->job_id);
	if (b->drive)
		vs_node_close(b->dst);
	free(b);
}

/* ---- copy-before-write and the job ---- */

/*
 * One step: the first todo run from *@cursor. Returns the bytes copied, 0
 * when there is nothing left (*@cursor at the end), or -errno (@read says
 * which side failed).
 */
static int64_t backup_step(struct backup *b, uint64_t *cursor, bool *read)
{
	uint64_t start, len, pnum;
	unsigned status;
	int ret;

	if (!vs_dirty_bitmap_next_dirty(b->todo, *cursor, BACKUP_CHUNK, &start, &len)) {
		*cursor = vs_node_size(b->src);
		return 0;
	}
	*read = true;
	ret = vs_node_block_status_above(b->src, start, len, &pnum, &status, NULL, NULL, NULL);
	if (ret < 0)
		return ret;
	if (!(status & VS_BS_ZERO)) {
		pnum = len;
		ret = vs_node_pread(b->src, start, b->buf, pnum);
		if (ret < 0)
			return ret;
	}
	*read = false;
	*cursor = start;
	return vd_cbw_put(b->cbw, start, pnum, b->buf, status & VS_BS_ZERO);
}

static int backup_run(struct vd_job *job)
{
	struct backup *b = vd_job_opaque(job);
	uint64_t cursor = 0, size = vs_node_size(b->src);
	int failed = 0, ret;

	while (b->sync != SYNC_NONE && !vd_job_cancelled(job) && !vd_cbw_error(b->cbw) &&
	       cursor < size) {
		uint64_t before = cursor;
		bool read = false;
		int64_t n = backup_step(b, &cursor, &read);

		if (n < 0) {
			ret = vd_job_io_error(job, read, (int)n);
			if (ret < 0)
				return ret;
			if (ret > 0) {
				/* ignored: skip this run, fail at the end */
				uint64_t s, l;

				failed = -EIO;
				if (vs_dirty_bitmap_next_dirty(b->todo, before, BACKUP_CHUNK, &s,
							       &l))
					vd_cbw_skip(b->cbw, s, l);
			}
			continue;
		}
		vd_job_yield_point(job, (uint64_t)n);
	}
	/* sync=none: the job copies only before writes, until cancelled. */
	while (b->sync == SYNC_NONE && !vd_job_cancelled(job) && !vd_cbw_error(b->cbw))
		vd_job_sleep(job, BACKUP_IDLE_NS);
	if (vd_cbw_error(b->cbw)) {
		vd_job_set_error(job, "%s", strerror(-vd_cbw_error(b->cbw)));
		return vd_cbw_error(b->cbw);
	}
	if (vd_job_cancelled(job))
		return 0;
	ret = vs_node_flush(b->dst);
	if (ret < 0)
		return ret;
	return failed;
}

/* The hook goes, with the source drained: no write is inside it any more. */
static void backup_unhook(struct backup *b)
{
	if (b->cbw)
		vd_cbw_detach(b->cbw);
}

/* The copies of copy-before-write count as the job's progress. */
static void backup_progress(void *opaque, uint64_t bytes)
{
	struct backup *b = opaque;

	if (b->job)
		vd_job_progress(b->job, bytes);
}

static int backup_prepare(struct vd_job *job)
{
	struct backup *b = vd_job_opaque(job);

	backup_unhook(b);
	backup_release_bitmap(b, true);
	return 0;
}

static void backup_abort(struct vd_job *job)
{
	struct backup *b = vd_job_opaque(job);

	backup_unhook(b);
	backup_release_bitmap(b, false);
}

static void backup_clean(struct vd_job *job)
{
	struct backup *b = vd_job_opaque(job);

	if (!b)
		return;
	backup_unhook(b);
	backup_release_bitmap(b, false);
	backup_free(b);
}

static const struct vd_job_driver backup_driver = {
	.type = "backup",
	.run = backup_run,
	.prepare = backup_prepare,
	.abort = backup_abort,
	.clean = backup_clean,
};

/* ---- the arguments ---- */

static int parse_enum(struct qmp_call *call, const char *name, const char *value,
		      const char *const *names, unsigned n, unsigned *out)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(value, names[i])) {
			*out = i;
			return 0;
		}
	return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' does not accept value '%s'", name,
			 value);
}

/* What the todo bitmap starts with: the sync mode's and the bitmap's. */
static int backup_mark(struct qmp_call *call, struct backup *b)
{
	uint64_t size = vs_node_size(b->src);

	if (b->sync == SYNC_BITMAP) {
		for (uint64_t off = 0; off < size;) {
			uint64_t run;
			bool dirty;

			if (vd_bitmap_status(b->src, b->bitmap, off, size - off, &dirty, &run) < 0)
				return qmp_error(call, QMP_ERR_GENERIC,
						 "Bitmap '%s' could not be read", b->bitmap);
			if (dirty)
				vs_dirty_bitmap_set(b->todo, off, run);
			off += run;
		}
		return 0;
	}
	if (b->sync != SYNC_TOP) {
		vs_dirty_bitmap_set(b->todo, 0, size);
		return 0;
	}
	for (uint64_t off = 0; off < size;) {
		uint64_t pnum;
		unsigned status, depth;
		int ret = vs_node_block_status_above(b->src, off, size - off, &pnum, &status, NULL,
						     NULL, &depth);

		if (ret < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "Could not read '%s': %s",
					 vd_node_name_of(b->src), strerror(-ret));
		if ((status & VS_BS_ALLOCATED) && depth == 0)
			vs_dirty_bitmap_set(b->todo, off, pnum);
		off += pnum;
	}
	return 0;
}

/*
 * What both actions share (QEMU's BackupCommon): the sync mode, the
 * bitmap and its mode, the job's options; their checks in QEMU's order.
 */
static int backup_common(struct qmp_call *call, struct backup *b, struct vd_node *n)
{
	const char *sync, *bitmap = NULL, *mode = NULL, *src_err = NULL, *dst_err = NULL;
	const char *filter = NULL;
	struct vs_dirty_bitmap_info info;
	unsigned sync_i = SYNC_FULL, mode_i = BM_ON_SUCCESS;
	bool compress = false;

	if (qmp_arg_str(call, "sync", true, &sync) < 0 ||
	    qmp_arg_str(call, "bitmap", false, &bitmap) < 0 ||
	    qmp_arg_str(call, "bitmap-mode", false, &mode) < 0 ||
	    qmp_arg_bool(call, "compress", false, &compress) < 0 ||
	    qmp_arg_str(call, "on-source-error", false, &src_err) < 0 ||
	    qmp_arg_str(call, "on-target-error", false, &dst_err) < 0 ||
	    qmp_arg_str(call, "filter-node-name", false, &filter) < 0 ||
	    vd_job_parse_opts(call, &b->opts) < 0)
		return -1;
	if (parse_enum(call, "sync", sync, sync_names, 5, &sync_i) < 0 ||
	    (mode && parse_enum(call, "bitmap-mode", mode, bitmap_mode_names, 3, &mode_i) < 0))
		return -1;
	if (vd_job_parse_on_error(call, src_err ? "on-source-error" : "on-target-error",
				  src_err ? src_err : dst_err, &b->opts.on_error) < 0)
		return -1;
	if (filter)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "filter-node-name is not supported by vstord yet");
	if ((sync_i == SYNC_BITMAP || sync_i == SYNC_INCREMENTAL) && !bitmap)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "must provide a valid bitmap name for '%s' sync mode",
				 sync_names[sync_i]);
	if (sync_i == SYNC_INCREMENTAL) {
		if (mode && mode_i != BM_ON_SUCCESS)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap sync mode must be 'on-success' when using sync "
					 "mode 'incremental'");
		sync_i = SYNC_BITMAP;
		mode = "on-success";
		mode_i = BM_ON_SUCCESS;
	}
	if (bitmap) {
		if (!vd_bitmap_find(n->node, bitmap, &info))
			return qmp_error(call, QMP_ERR_GENERIC, "Bitmap '%s' could not be found",
					 bitmap);
		if (!mode)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap sync mode must be given when providing a bitmap");
		if (vd_bitmap_busy(n->node, bitmap))
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap '%s' is currently in use by another operation "
					 "and cannot be used",
					 bitmap);
		if (info.inconsistent)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap '%s' is inconsistent and cannot be used\n"
					 "Try block-dirty-bitmap-remove to delete this bitmap from "
					 "disk",
					 bitmap);
		if (sync_i == SYNC_NONE)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "sync mode 'none' does not produce meaningful bitmap "
					 "outputs");
		if (mode_i == BM_NEVER && sync_i != SYNC_BITMAP)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Bitmap sync mode 'never' has no meaningful effect when "
					 "combined with sync mode '%s'",
					 sync_names[sync_i]);
	} else if (mode) {
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Cannot specify bitmap sync mode without a bitmap");
	}
	if (compress)
		return qmp_error(call, QMP_ERR_GENERIC, "compress is not supported by vstord yet");
	b->sync = (enum backup_sync)sync_i;
	b->mode = (enum bitmap_mode)mode_i;
	if (bitmap && !(b->bitmap = strdup(bitmap)))
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	return 0;
}

/* The checks of the source and the target (QEMU's backup_job_create), then the start state. */
static int backup_setup(struct qmp_call *call, struct vd_action *a, struct backup *b,
			struct vd_node *n, const char *dst_name)
{
	struct vs_dirty_bitmap_info info;
	uint64_t gran = BACKUP_GRANULARITY;
	int ret;

	if (b->src == b->dst)
		return qmp_error(call, QMP_ERR_GENERIC, "Source and target cannot be the same");
	if (vd_job_check_node_free(call, b->src, n->name) < 0)
		return -1;
	if (backup_pending_on(b->src) || vd_cbw_attached(b->src))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Node '%s' is busy: block device is in use by block job: backup",
				 n->name);
	if (dst_name && (vd_job_holds(b->dst) || vd_job_using(b->dst) || backup_pending_on(b->dst)))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Node '%s' is busy: block device is in use by block job: backup",
				 dst_name);
	if (vs_node_is_read_only(b->dst))
		return qmp_error(call, QMP_ERR_GENERIC, "Block node is read-only");
	if (vs_node_size(b->dst) != vs_node_size(b->src))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Source and target image have different sizes");
	if (vd_job_check_id(call, b->opts.id) < 0)
		return -1;
	if (b->opts.speed < 0) {
		/* As qsd: the job exists for a moment, then fails with the message. */
		struct vs_node *src = b->src;

		vd_job_new(call, &backup_driver, NULL, &b->opts, &src, 1, 0);
		return -1;
	}
	if (!(b->job_id = strdup(b->opts.id)))
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	b->opts.id = b->job_id;
	if (b->bitmap && vd_bitmap_find(b->src, b->bitmap, &info))
		gran = info.granularity;
	if (vd_cbw_new(b->src, b->dst, gran, backup_progress, b, &b->cbw) < 0 ||
	    posix_memalign(&b->buf, 4096, BACKUP_CHUNK))
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	b->todo = vd_cbw_todo(b->cbw);
	/* The point in time: from here to the end of the transaction nothing writes. */
	vd_txn_quiesce(a->txn, b->src);
	ret = backup_mark(call, b);
	if (ret < 0)
		return ret;
	if (b->bitmap) {
		char name[64];

		if (vd_bitmap_busy_get(b->src, b->bitmap) < 0)
			return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		b->busy = true;
		if (b->mode != BM_NEVER) {
			struct vs_bitmap_op op = {
				.action = VS_BITMAP_ADD,
				.granularity = gran,
				.transient = true,
			};
			struct vs_error err = { 0 };

			snprintf(name, sizeof(name), "backup-%p", (void *)b);
			if (!(b->successor = strdup(name)))
				return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
			op.name = b->successor;
			if (vd_bitmap_apply(b->src, &op, &err) < 0)
				return qmp_error(call, QMP_ERR_GENERIC, "%s", err.msg);
			b->successor_added = true;
		}
	}
	b->next = pending;
	pending = b;
	return 0;
}

static void backup_action_abort(struct vd_action *a)
{
	struct backup *b = a->priv;

	a->priv = NULL;
	if (!b)
		return;
	pending_remove(b);
	backup_release_bitmap(b, false);
	backup_free(b);
}

/* The job starts at the point in time the transaction froze (its exports are still held). */
static void backup_action_commit(struct vd_action *a)
{
	struct backup *b = a->priv;
	struct qmp_call quiet = { 0 };
	struct vs_node *dst;
	struct vs_node *nodes[2];
	struct vd_job *job;
	uint64_t size, todo;
	bool drive;

	a->priv = NULL;
	pending_remove(b);
	dst = b->dst;
	drive = b->drive;
	/* top: what the source's layer does not hold counts as done (as QEMU skips it). */
	size = vs_node_size(b->src);
	todo = vs_dirty_bitmap_count(b->todo);
	/* Both are busy while it runs (qsd's message for either). */
	nodes[0] = b->src;
	nodes[1] = dst;
	job = vd_job_new(&quiet, &backup_driver, b, &b->opts, nodes, 2,
			 b->sync == SYNC_TOP ? size : todo);
	if (!job)
		return; /* out of memory: the job's clean freed it all */
	if (b->sync == SYNC_TOP)
		vd_job_progress(job, size - todo);
	b->job = job;
	if (drive) {
		b->drive = false; /* the job's reference keeps the target now */
		vs_node_close(dst);
	}
	vd_cbw_attach(b->cbw); /* cannot be refused: the source has no other backup */
}

/* The action's state; the monitor's error paths free it through abort. */
static struct backup *backup_new(struct vd_action *a, struct qmp_call *call)
{
	struct backup *b = calloc(1, sizeof(*b));

	if (!b) {
		qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
		return NULL;
	}
	a->priv = b;
	return b;
}

static int blockdev_backup_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *device, *target;
	struct vd_node *n, *t;
	struct backup *b;
	int ret;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "target", true, &target) < 0)
		return -1;
	b = backup_new(a, call);
	if (!b)
		return -1;
	n = vd_node_lookup(call, device);
	t = n ? vd_node_lookup(call, target) : NULL;
	if (!t || backup_common(call, b, n) < 0)
		goto fail;
	b->src = n->node;
	b->dst = t->node;
	ret = backup_setup(call, a, b, n, target);
	if (ret == 0)
		return 0;
fail:
	backup_action_abort(a);
	return -1;
}

static int drive_backup_prepare(struct vd_action *a, struct qmp_call *call)
{
	const char *device, *target, *format = NULL, *mode = "absolute-paths";
	struct vd_node *n;
	struct backup *b;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "target", true, &target) < 0 ||
	    qmp_arg_str(call, "format", false, &format) < 0 ||
	    qmp_arg_str(call, "mode", false, &mode) < 0)
		return -1;
	if (strcmp(mode, "absolute-paths") && strcmp(mode, "existing"))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Parameter 'mode' does not accept value '%s'", mode);
	b = backup_new(a, call);
	if (!b)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n || backup_common(call, b, n) < 0)
		goto fail;
	if (vd_job_check_node_free(call, n->node, n->name) < 0)
		goto fail;
	if (!format && strcmp(mode, "existing"))
		format = vs_node_format(n->node);
	b->src = n->node;
	/* top keeps the source's backing chain under the target, none the source. */
	if (vd_job_open_drive_target(call, n->node,
				     b->sync == SYNC_TOP  ? vs_node_backing(n->node) :
				     b->sync == SYNC_NONE ? n->node :
							    NULL,
				     target, format, !strcmp(mode, "existing"), &b->dst) < 0)
		goto fail;
	b->drive = true;
	if (backup_setup(call, a, b, n, NULL) == 0)
		return 0;
fail:
	backup_action_abort(a);
	return -1;
}

VD_ACTION_COMMAND(blockdev_backup, "blockdev-backup",
		  QMP_PARAMS("job-id", "device", "target", "sync", "speed", "bitmap", "bitmap-mode",
			     "compress", "on-source-error", "on-target-error", "auto-finalize",
			     "auto-dismiss", "filter-node-name", "x-perf"),
		  .prepare = blockdev_backup_prepare, .commit = backup_action_commit,
		  .abort = backup_action_abort)

VD_ACTION_COMMAND(drive_backup, "drive-backup",
		  QMP_PARAMS("job-id", "device", "target", "format", "sync", "mode", "speed",
			     "bitmap", "bitmap-mode", "compress", "on-source-error",
			     "on-target-error", "auto-finalize", "auto-dismiss", "filter-node-name",
			     "x-perf"),
		  .prepare = drive_backup_prepare, .commit = backup_action_commit,
		  .abort = backup_action_abort)
