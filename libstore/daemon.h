/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Daemon plumbing shared by every server program (vstor-nbd, vstor-vhost,
 * and vstord next): listening sockets (with the stale-socket check), socket
 * activation and readiness through libsystemd, the pid file. Not part of
 * libvstor.so: the programs link it as the static library vstor_daemon.
 *
 * Every function returns 0 (or a count) or -errno and fills @err.
 */
#ifndef VSTOR_DAEMON_H
#define VSTOR_DAEMON_H

#include "vstor/error.h"

/* The listen backlog of every server socket. */
#define VS_DAEMON_BACKLOG 128

/*
 * Listen on the unix socket @path. A socket file left by a dead server (no
 * one accepts on it) is replaced; a live server's is not (-EADDRINUSE).
 * Returns the descriptor (close-on-exec).
 */
int vs_daemon_listen_unix(const char *path, struct vs_error *err);

/*
 * Listen on every address of @host (NULL: all) and @port, at most @max of
 * them, storing the descriptors in @fds. Returns their count (at least 1).
 */
int vs_daemon_listen_tcp(const char *host, const char *port, int *fds, unsigned max,
			 struct vs_error *err);

/*
 * Socket activation (systemd's LISTEN_PID/LISTEN_FDS): store up to @max
 * passed descriptors in @fds (made close-on-exec) and return their count,
 * or 0 when the process was not activated. The variables are unset.
 */
int vs_daemon_listen_fds(int *fds, unsigned max, struct vs_error *err);

/* Write the caller's pid to @path (atomically: a reader never sees it half written). */
int vs_daemon_write_pid(const char *path, struct vs_error *err);

/*
 * Tell the service manager that the daemon serves (READY=1) or stops
 * (STOPPING=1); a no-op outside systemd (NOTIFY_SOCKET unset).
 */
void vs_daemon_notify_ready(void);
void vs_daemon_notify_stopping(void);

#endif
