/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iSCSI sessions through libiscsi on the reactor (internal to libstore and
 * the pool backends). The iscsi protocol driver (driver-iscsi.c) opens one
 * session per node; the iscsi pool backend lists a target's LUNs.
 *
 * URI (libiscsi's form plus options for secrets kept out of command lines):
 *   iscsi://[USER[%PASSWORD]@]HOST[:PORT]/IQN/LUN[?secret-file=PATH
 *           &target-user=NAME&target-secret-file=PATH&initiator=IQN]
 * secret-file holds the CHAP secret of USER (the first line); target-user
 * and target-secret-file enable mutual CHAP. Coroutine context throughout.
 */
#ifndef VSTOR_DRIVER_ISCSI_H
#define VSTOR_DRIVER_ISCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vstor/error.h"

struct vs_iscsi_lun {
	int lun;
	uint64_t size;	     /* bytes; 0 when READ CAPACITY failed */
	uint32_t block_size; /* bytes */
	int device_type;     /* SCSI peripheral device type (0 = disk) */
};

/*
 * List the LUNs of the target named by @url (iscsi://.../IQN[/LUN]: the LUN
 * part is ignored) with their sizes: REPORT LUNS, then READ CAPACITY(16) of
 * each. *@out is malloc'd (free it), *@n its length.
 */
int vs_iscsi_list_luns(const char *url, struct vs_iscsi_lun **out, size_t *n, struct vs_error *err);

/*
 * SendTargets discovery on the portal @host:@port (3260 when 0) as
 * initiator @initiator (NULL: vstor's default): the target IQNs it offers,
 * as virsh find-storage-pool-sources does for iscsi. Blocking; not on a
 * reactor. *@iqns is a malloc'd array of *@n malloc'd names (free both).
 */
int vs_iscsi_discover(const char *host, unsigned port, const char *initiator, char ***iqns,
		      size_t *n, struct vs_error *err);

#endif
