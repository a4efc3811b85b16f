/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Error policies of vstord's exports (vstor's block-export-add extensions
 * "werror" and "rerror", as QEMU's drive options): the BLOCK_IO_ERROR event
 * and `cont`, which resumes the exports an error stopped. Control reactor
 * only.
 */
#ifndef VSTORD_EXPORT_ERROR_H
#define VSTORD_EXPORT_ERROR_H

#include <stdbool.h>

#include "qmp.h"
#include "vstor/export.h"

/* The error-policy arguments of block-export-add. */
#define VD_EXPORT_ERROR_PARAMS "werror", "rerror"

/*
 * Read "werror" and "rerror" from @call into @p (the actions only).
 * Returns 1 when either was given, 0 when neither, -1 after qmp_error().
 */
int vd_export_error_args(struct qmp_call *call, struct vs_export_error_policy *p);

/*
 * Apply @p (from vd_export_error_args()) to @exp, the export @id (borrowed:
 * it must outlive the export), with BLOCK_IO_ERROR events.
 */
void vd_export_error_apply(struct vs_export *exp, const char *id,
			   const struct vs_export_error_policy *p);

/* Before an export goes: report from now on, and let its held requests go. */
void vd_export_error_release(struct vs_export *exp);

#endif
