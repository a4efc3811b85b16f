/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP monitors: a listening unix socket (mode 0600) and its clients, each a
 * QMP session (qmp.h) with a reader coroutine that runs its commands and a
 * writer coroutine that drains its bounded outbox. Events go to the outbox
 * of every negotiated client, so an event never waits for a slow reader;
 * a client whose outbox overflows is dropped. Coroutine context, on the
 * control reactor.
 */
#ifndef VSTORD_MONITOR_H
#define VSTORD_MONITOR_H

#include <json-c/json.h>

#include "vstor/error.h"

/* Monitor clients connected at once, per monitor; more are refused. */
#define MONITOR_MAX_CLIENTS 16
/* Replies and events queued for one client before it is dropped. */
#define MONITOR_MAX_OUTBOX (16u << 20)

struct monitor;

/* Listen on @path (replacing a dead server's socket) and serve QMP on it. */
int monitor_open(const char *path, struct monitor **out, struct vs_error *err);
/* Serve QMP on the listening socket @fd (socket activation). */
int monitor_open_fd(int fd, struct monitor **out, struct vs_error *err);
/*
 * Stop accepting, let each client's queued replies go out (for a bounded
 * time), disconnect the clients and free the monitor; the socket file is
 * removed if this monitor created it.
 */
void monitor_close(struct monitor *m);

/* Sends event @name with @data (may be NULL; not consumed) to every negotiated client. */
void monitor_emit_event(const char *name, json_object *data);

#endif
