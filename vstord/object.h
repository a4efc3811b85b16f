/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's objects, as qemu-storage-daemon's --object makes them: TLS
 * credentials (tls-creds-x509, tls-creds-psk) that nbd-server-start names
 * with tls-creds. Control reactor only.
 */
#ifndef VSTORD_OBJECT_H
#define VSTORD_OBJECT_H

#include "qmp.h"

struct vs_nbd_tls;

/*
 * Add the object @call->args describe (qom-type, id and the type's
 * properties, QEMU's names and messages). 0, or -1 after qmp_error().
 */
int vd_object_add(struct qmp_call *call);

/* The credentials of the TLS object @id, or NULL after qmp_error() (QEMU's messages). */
struct vs_nbd_tls *vd_object_tls(struct qmp_call *call, const char *id);

/* Frees every object (the daemon stops; the NBD server is gone). */
void vd_object_close_all(void);

#endif
