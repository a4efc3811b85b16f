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

#include <stdbool.h>
#include <stddef.h>

#include "vstor/cache.h"
#include "vstor/error.h"
#include "vstor/export.h"

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
 * Replace @path with @len bytes of @data, crash-safe: written to PATH.tmp
 * (mode @mode), fsync'd, renamed over @path, and the directory fsync'd, so
 * after a crash @path holds either the old or the new contents in full.
 */
int vs_daemon_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
				struct vs_error *err);

/*
 * Go to the background (qemu-nbd --fork, qemu-storage-daemon --daemonize):
 * the parent waits until the child reports readiness with
 * vs_daemon_notify_ready() and exits 0, or exits 1 when the child exits
 * first. @new_session: the child also leaves the terminal's session (setsid
 * and a second fork) and changes to "/". Returns 0 in the child.
 */
int vs_daemon_fork(bool new_session, struct vs_error *err);

/*
 * Tell the service manager that the daemon serves (READY=1) or stops
 * (STOPPING=1); a no-op outside systemd (NOTIFY_SOCKET unset). Ready also
 * releases the parent of vs_daemon_fork().
 */
void vs_daemon_notify_ready(void);
void vs_daemon_notify_stopping(void);

/*
 * The stop signals: SIGTERM, SIGINT and SIGHUP are blocked and delivered to
 * the returned signalfd (close-on-exec); SIGPIPE is ignored (a peer that
 * goes away is an error return, not a death).
 */
int vs_daemon_signalfd(struct vs_error *err);

/*
 * Coroutine context: wait for a signal on @sigfd (through the reactor).
 * Returns the signal number, or -errno (-ECANCELED after vs_aio_cancel()).
 */
int vs_daemon_wait_signal(int sigfd);

/*
 * The servers' option values; a bad one is a vs_die(). A limit is a count or
 * a number of seconds (0 to 1000000), 0 meaning none: then @unlimited.
 * A switch is on/off (yes/no, true/false).
 */
unsigned vs_daemon_parse_limit(const char *v, const char *what, unsigned unlimited);
bool vs_daemon_parse_bool(const char *v, const char *what);

/*
 * The export options every server takes, spelled as qemu-nbd and
 * qemu-storage-daemon spell them: --cache, --aio (accepted; vstor always
 * uses io_uring), --discard and --detect-zeroes. A program puts
 * VS_DAEMON_EXPORT_LONGOPTS in its getopt_long table (it needs <getopt.h>)
 * and hands every option to vs_daemon_export_option() first.
 */
enum {
	VS_DAEMON_OPT_CACHE = 0x1000,
	VS_DAEMON_OPT_AIO,
	VS_DAEMON_OPT_DISCARD,
	VS_DAEMON_OPT_DETECT_ZEROES,
};
/* clang-format off */
#define VS_DAEMON_EXPORT_LONGOPTS \
	{ "cache", required_argument, NULL, VS_DAEMON_OPT_CACHE }, \
	{ "aio", required_argument, NULL, VS_DAEMON_OPT_AIO }, \
	{ "discard", required_argument, NULL, VS_DAEMON_OPT_DISCARD }, \
	{ "detect-zeroes", required_argument, NULL, VS_DAEMON_OPT_DETECT_ZEROES }
/* clang-format on */

struct vs_daemon_export_opts {
	enum vs_cache_mode cache;
	enum vs_export_discard discard;
	enum vs_export_detect_zeroes detect_zeroes;
};

/* Whether @opt is one of the export options (then stored in @o; a bad value dies). */
bool vs_daemon_export_option(int opt, const char *arg, struct vs_daemon_export_opts *o);

/*
 * --object secret,id=ID,data=STRING|file=PATH[,format=raw|base64] as QEMU's
 * tools take it (vs_secret_define); exits with a message on bad input.
 */
/*
 * The next "key=value" item of *@p (",," is a comma in a value), split in
 * place: false at the end; an item without '=' exits with "Invalid @what
 * item ..." (command-line parsing).
 */
bool vs_daemon_next_kv(char **p, char **key, char **val, const char *what);

void vs_daemon_object_secret(const char *arg);
/*
 * --image-opts: "driver=FMT,file.filename=PATH[,encrypt.key-secret=ID]"
 * (key-secret=ID for luks; file.driver=file). The strings stay allocated.
 */
void vs_daemon_image_opts(const char *arg, const char **file, const char **fmt,
			  const char **key_secret);

/* "PROGRAM: message" on stderr and exit 1: the programs' fatal command-line errors. */
void vs_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif
