/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstord's process-wide state that commands reach: the request to stop.
 */
#ifndef VSTORD_VSTORD_H
#define VSTORD_VSTORD_H

#include <stdbool.h>

/* Stop the daemon once the running command has answered (quit, signals). */
void vstord_request_stop(void);
bool vstord_stop_requested(void);
/* Coroutine context: returns once a stop was requested. */
void vstord_wait_stop(void);

#endif
