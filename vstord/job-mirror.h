/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The mirror job (job-mirror.c), which blockdev-mirror, drive-mirror and
 * the active commit of block-commit start. Control reactor only.
 */
#ifndef VSTORD_JOB_MIRROR_H
#define VSTORD_JOB_MIRROR_H

#include <stdint.h>

#include "job.h"

enum vd_mirror_sync {
	VD_MIRROR_SYNC_FULL,   /* everything the source reads */
	VD_MIRROR_SYNC_TOP,    /* what the source's own layer holds */
	VD_MIRROR_SYNC_NONE,   /* only what is written from now on */
	VD_MIRROR_SYNC_COMMIT, /* what the layers above the target (a base) hold */
};

/* MirrorCopyMode */
enum vd_mirror_copy_mode {
	VD_MIRROR_COPY_BACKGROUND,     /* copy dirty runs behind the guest's writes */
	VD_MIRROR_COPY_WRITE_BLOCKING, /* and guest writes go to the target before they complete */
};

struct vd_mirror_opts {
	struct vs_node *src, *dst; /* borrowed; the job references them */
	enum vd_mirror_sync sync;
	enum vd_mirror_copy_mode copy_mode;
	unsigned base_depth;  /* COMMIT: layers above the base, the source included */
	uint64_t granularity; /* of the dirty bitmap; 0: the target's cluster size */
	uint64_t buf_size;    /* bytes of the copies in flight at most; 0: 16 MiB */
};

/* Start the job; 0, or -1 after qmp_error(). The arguments are checked. */
int vd_mirror_start(struct qmp_call *call, const struct vd_mirror_opts *mo,
		    const struct vd_job_opts *opts);

#endif
