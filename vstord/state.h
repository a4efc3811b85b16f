/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's persistent configuration (--state-dir DIR): the objects, nodes,
 * NBD server and exports the monitor made, kept as the QMP arguments they
 * were given in DIR/vstord.json, rewritten atomically after every change and
 * restored at the next start. The command line's own --object/--blockdev/
 * --nbd-server/--export are not kept: the command line gives them again.
 * Control reactor only.
 */
#ifndef VSTORD_STATE_H
#define VSTORD_STATE_H

#include <json-c/json.h>
#include <stdbool.h>

#include "vstor/error.h"

enum vd_state_kind {
	VD_STATE_OBJECT,     /* object-add, by id */
	VD_STATE_NODE,	     /* blockdev-add, by node-name */
	VD_STATE_NBD_SERVER, /* nbd-server-start (one; key "") */
	VD_STATE_EXPORT,     /* block-export-add, by id */
};

/*
 * Use @dir (created mode 0700; group and other access is removed) and lock
 * it against a second daemon. Nothing is recorded yet.
 */
int vd_state_open(const char *dir, struct vs_error *err);

/*
 * Restore DIR/vstord.json, if present, in dependency order (objects, nodes,
 * the NBD server, exports), then record every later change. An entry that
 * cannot be restored is reported on stderr and skipped (the file as loaded
 * is kept as vstord.json.bak); a file that is not vstord's state is an error
 * (-EINVAL) and nothing is restored. Coroutine context.
 */
int vd_state_restore(struct vs_error *err);

/* Whether changes are being recorded (a state dir is in use and restored). */
bool vd_state_active(void);

/*
 * Record that the command of @kind made @key from @args (borrowed, copied;
 * replaces an earlier record of @key) or that it is gone, and save. No-op
 * when not active.
 */
void vd_state_add(enum vd_state_kind kind, const char *key, json_object *args);
void vd_state_remove(enum vd_state_kind kind, const char *key);

/*
 * Write the state file from the records and the graph as it is now (which
 * node each export serves, which named node each node has as backing). Call
 * after a command changes the graph (snapshots, pivots). Returns 0 or
 * -errno; a failure is reported on stderr (the change itself stays live).
 */
int vd_state_save(void);

/* Forget the records and release the directory (the daemon stops). */
void vd_state_close(void);

#endif
