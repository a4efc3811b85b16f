/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check and repair, as `qemu-img check [-r leaks|all]`.
 *
 * Works only through the protocol node (reads, writes, flush, truncate) and
 * builds its own view of the metadata from the file, so it is independent of
 * the qcow2 driver's in-memory state: the driver calls it after writing back
 * its caches, and on open of a dirty lazy-refcounts image before it loads
 * any metadata.
 */
#ifndef VSTOR_QCOW2_CHECK_H
#define VSTOR_QCOW2_CHECK_H

#include "vstor/error.h"
#include "vstor/node.h"

/* Receives one human line per finding or repair ("Leaked cluster 5 refcount=1 reference=0"). */
typedef void qcow2_check_report_fn(const char *msg, void *opaque);

/*
 * Coroutine context. Check the qcow2 image on protocol node @file (opened
 * read-write when @fix has VS_CHECK_FIX_* bits) and fill @res with what
 * `qemu-img check --output=json` reports for it.
 *
 * With VS_CHECK_FIX_LEAKS, leaked clusters are freed; with
 * VS_CHECK_FIX_ERRORS, refcounts that are too low are raised, the refcount
 * structures are rebuilt when they are themselves broken (new refblocks and
 * reftable in free clusters or past the end of the file), wrong COPIED flags
 * are corrected and the dirty bit is cleared; when no corruption remains
 * the corrupt bit is cleared too. After a repair the image is checked again
 * and @res reports what remains (corruptions, leaks) together with what was
 * fixed (corruptions_fixed, leaks_fixed): the caller must not re-run it.
 *
 * Returns 0 when the check ran (read @res), or -errno when it could not:
 * the header is unusable (as qemu-img failing to open the image), an I/O
 * error or a metadata layout that cannot be walked; @err says why and
 * @res holds the counts gathered so far (check_errors > 0 on I/O errors).
 */
int qcow2_check_image(struct vs_node *file, struct vs_check_result *res, unsigned fix,
		      struct vs_error *err);

/* As qcow2_check_image(), and report each finding to @report (may be NULL). */
int qcow2_check_image_report(struct vs_node *file, struct vs_check_result *res, unsigned fix,
			     qcow2_check_report_fn *report, void *opaque, struct vs_error *err);

#endif
