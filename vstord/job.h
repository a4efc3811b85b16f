/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block jobs: long operations on the block graph (stream, commit, ...) that
 * run as a coroutine on the control reactor while exports keep serving.
 * The life cycle, the verbs a monitor may apply in each state, the queries
 * and the events are qemu-storage-daemon's (QEMU's qapi/job.json and the
 * block-job part of qapi/block-core.json):
 *
 *   created -> running <-> paused            (block-job-pause/resume)
 *              running -> ready <-> standby   (jobs that wait for complete)
 *              running|ready -> waiting -> pending -> concluded -> null
 *              any live state -> aborting -> concluded -> null   (cancel, error)
 *
 * A job driver supplies the work (run), and the graph change made when the
 * job succeeds (prepare) or is abandoned (abort). The framework owns the
 * states, the events, pausing, cancelling, the speed limit and on-error.
 * Control reactor only.
 */
#ifndef VSTORD_JOB_H
#define VSTORD_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qmp.h"

struct vs_node;

enum vd_job_status {
	VD_JOB_CREATED,
	VD_JOB_RUNNING,
	VD_JOB_PAUSED,
	VD_JOB_READY,
	VD_JOB_STANDBY,
	VD_JOB_WAITING,
	VD_JOB_PENDING,
	VD_JOB_ABORTING,
	VD_JOB_CONCLUDED,
	VD_JOB_NULL,
};

/* BlockdevOnError: what an I/O error of the job does. */
enum vd_job_on_error {
	VD_ON_ERROR_REPORT, /* the job fails */
	VD_ON_ERROR_IGNORE, /* the job goes on (the range is retried later or skipped) */
	VD_ON_ERROR_ENOSPC, /* stop on ENOSPC, report anything else */
	VD_ON_ERROR_STOP,   /* the job pauses until block-job-resume, then retries */
};

struct vd_job;

struct vd_job_driver {
	const char *type; /* "stream", "commit", "mirror" */
	/*
	 * The job's work, in its coroutine: returns 0 when done, or -errno
	 * (the job fails; vd_job_set_error() may have given the message).
	 * It calls vd_job_yield_point() between steps and returns early when
	 * vd_job_cancelled().
	 */
	int (*run)(struct vd_job *job);
	/* block-job-complete on a ready job (NULL: the job cannot be completed). */
	void (*complete)(struct vd_job *job);
	/*
	 * block-job-cancel (may be NULL): false when the job ends on its own
	 * instead of being cancelled (a ready mirror's soft cancel: it
	 * completes without switching to the target).
	 */
	bool (*cancel)(struct vd_job *job, bool force);
	/* The job succeeded: change the graph. 0, or -errno with vd_job_set_error(). */
	int (*prepare)(struct vd_job *job);
	/* The job failed or was cancelled: undo what must be undone (may be NULL). */
	void (*abort)(struct vd_job *job);
	/* Free the driver's state (vd_job's opaque); may be NULL. */
	void (*clean)(struct vd_job *job);
};

/* What a job command gives to vd_job_new(). */
struct vd_job_opts {
	const char *id;
	int64_t speed; /* bytes per second; 0: no limit (negative: refused by vd_job_new) */
	enum vd_job_on_error on_error;
	bool auto_finalize, auto_dismiss;
};

/*
 * Parse the arguments every block job takes (job-id, speed, on-error,
 * auto-finalize, auto-dismiss) from @call into @opts, with qsd's messages.
 * 0, or -1 after qmp_error().
 */
int vd_job_parse_opts(struct qmp_call *call, struct vd_job_opts *opts);
/* A BlockdevOnError @value of argument @name (NULL: @out untouched); 0 or -1 after qmp_error(). */
int vd_job_parse_on_error(struct qmp_call *call, const char *name, const char *value,
			  enum vd_job_on_error *out);

/*
 * The message for a job that would use @node, which a job already uses
 * ("Node 'X' is busy: block device is in use by block job: TYPE"): -1
 * after qmp_error(), or 0 when @node is free. @name is the name shown.
 */
int vd_job_check_node_free(struct qmp_call *call, const struct vs_node *node, const char *name);

/* The job that uses @node, or NULL (blockdev-del refuses such a node). */
struct vd_job *vd_job_using(const struct vs_node *node);
/*
 * @job holds @node (a reference, until dismissed) without making it busy:
 * a mirror's target. blockdev-del of it then answers "Node N is in use".
 * At most VD_JOB_MAX_HELD nodes.
 */
#define VD_JOB_MAX_HELD 2
void vd_job_hold(struct vd_job *job, struct vs_node *node);
/* Whether a job holds @node (vd_job_hold). */
bool vd_job_holds(const struct vs_node *node);
/* The job's type ("stream", ...). */
const char *vd_job_type(const struct vd_job *job);

/*
 * Create job @opts->id of @drv with driver state @opaque (its clean hook
 * frees it) and start it. @nodes (@nnodes of them) are the nodes it uses:
 * they are referenced until the job is dismissed, and no other job nor
 * blockdev-del may take them. @len is the first progress total. Returns
 * the job, or NULL after qmp_error() (a bad or duplicate id; @opaque is
 * then cleaned).
 */
struct vd_job *vd_job_new(struct qmp_call *call, const struct vd_job_driver *drv, void *opaque,
			  const struct vd_job_opts *opts, struct vs_node *const *nodes,
			  unsigned nnodes, uint64_t len);

void *vd_job_opaque(const struct vd_job *job);

/*
 * What vd_job_new() would say of job id @id (malformed, or in use): -1
 * after qmp_error(), or 0. A transaction checks it in prepare and creates
 * the job in commit, where nothing may fail.
 */
int vd_job_check_id(struct qmp_call *call, const char *id);

/*
 * The target of drive-mirror / drive-backup: create @file (@format, the
 * size of @src, over @backing when not NULL) unless @existing, open it
 * without its backing chain and put @backing under it. 0 and the node in
 * *@out, or -1 after qmp_error() with nothing left open.
 */
int vd_job_open_drive_target(struct qmp_call *call, struct vs_node *src, struct vs_node *backing,
			     const char *file, const char *format, bool existing,
			     struct vs_node **out);

/* ---- for drivers, in the job's coroutine ---- */

/* Whether the job was cancelled: run() returns as soon as it can. */
bool vd_job_cancelled(const struct vd_job *job);
/* Progress (query-block-jobs' offset and len): set both, or advance the offset. */
void vd_job_set_progress(struct vd_job *job, uint64_t offset, uint64_t len);
void vd_job_progress(struct vd_job *job, uint64_t done);
/* The total is what is done plus @remaining (a mirror's dirty bytes). */
void vd_job_set_remaining(struct vd_job *job, uint64_t remaining);
/* Sleep up to @ns, not busy; returns early when cancelled, paused after a pause. */
void vd_job_sleep(struct vd_job *job, uint64_t ns);
/*
 * Let the job be paused (block-job-pause) here, and wait out the speed
 * limit for the @bytes the job copied since the last call. Returns at once
 * when the job was cancelled.
 */
void vd_job_yield_point(struct vd_job *job, uint64_t bytes);
/* Enter the ready state (BLOCK_JOB_READY). */
void vd_job_set_ready(struct vd_job *job);
bool vd_job_is_ready(const struct vd_job *job);
/* A message for the failure run() or prepare() is about to return. */
void vd_job_set_error(struct vd_job *job, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * An I/O error @ret of the job (@read: of a read): applies on-error and
 * emits BLOCK_JOB_ERROR. Returns 0 when the job should retry the failed
 * step (stop: once block-job-resume let it go on), 1 when it should go on
 * past it and fail with @ret at the end (ignore), or @ret when it must
 * fail now (report, or cancelled while stopped).
 */
int vd_job_io_error(struct vd_job *job, bool read, int ret);

/*
 * The copy of block-stream and block-commit (job-copy.c): in chunks of
 * @chunk bytes over @top's whole size, what layers @min_depth <= depth <
 * @max_depth of @top's chain hold (depth 0 is @top itself; zero extents as
 * write-zeroes) goes to @dst, with @drain (if any) drained around each chunk
 * so that guest writes to it never race a copy. Progress, pause, the speed
 * limit and on-error as the framework does them. Returns 0, -errno (failed
 * now), or -EIO after errors that on-error=ignore let pass.
 */
struct vd_job_copy {
	struct vs_node *top, *dst, *drain;
	unsigned min_depth, max_depth;
	uint64_t chunk;
	void *buf; /* @chunk bytes */
};
int vd_job_copy_chain(struct vd_job *job, const struct vd_job_copy *cp);

/* Cancel every job and wait for them to end (the daemon stops). Coroutine context. */
void vd_job_close_all(void);

#endif
