/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fleecing nodes for blockdev-add, as QEMU 7.2 takes them: a
 * copy-before-write filter (file = the source, target = a scratch image,
 * usually a qcow2 whose backing is the source) that freezes the source's
 * point in time, and a snapshot-access node (file = that filter) that
 * reads the frozen view, read-only, for an NBD export. Control reactor only.
 */
#ifndef VSTORD_FLEECE_H
#define VSTORD_FLEECE_H

#include <stdbool.h>

#include "qmp.h"

struct vs_node;
struct vd_cbw;

/*
 * A copy-before-write node over @file into @target (both borrowed; the node
 * references them). Freezes @file's content now: from here on every write
 * that reaches @file, through this node or any other path, first copies
 * the old data to @target. @drained: the caller holds @file and its
 * exports drained already (else they are drained around the switch).
 * 0 and *@out, or -1 after qmp_error().
 */
int vd_fleece_cbw_open(struct qmp_call *call, struct vs_node *file, struct vs_node *target,
		       bool drained, struct vs_node **out);

/* The copy-before-write state of a node that vd_fleece_cbw_open made, or NULL. */
struct vd_cbw *vd_fleece_cbw(struct vs_node *node);

/* A snapshot-access node over the copy-before-write node @file. 0 or -1 after qmp_error(). */
int vd_fleece_access_open(struct qmp_call *call, struct vs_node *file, struct vs_node **out);

#endif
