/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A small QMP client for vstor's block verbs: it connects to the monitor
 * socket of vstord or qemu-storage-daemon, reads the greeting, negotiates
 * capabilities, runs commands with an id and keeps the events that arrive
 * while it waits for a reply. Every wait is bounded, so a daemon that died
 * or hangs gives an error instead of a stuck command.
 */
#ifndef VSTOR_CLI_VSTOR_QMP_H
#define VSTOR_CLI_VSTOR_QMP_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* How long one reply may take by default (VSTOR_QMP_TIMEOUT overrides, in seconds). */
#define VSTOR_QMP_TIMEOUT_MS 30000

struct vstor_qmp;

/* What went wrong: a QMP error (class and desc), or a transport failure (errno). */
struct vstor_qmp_error {
	int code;     /* -errno for transport errors; 0 for an error reply */
	char cls[64]; /* QMP error class, "" for transport errors */
	char desc[1024];
};

/*
 * Connect to the unix socket @path, read the greeting and negotiate.
 * Returns 0 with *@out set, or -errno with @err filled.
 */
int vstor_qmp_connect(const char *path, struct vstor_qmp **out, struct vstor_qmp_error *err);
void vstor_qmp_close(struct vstor_qmp *q);

/* Whether the daemon is vstord (its greeting's package names vstor). */
bool vstor_qmp_is_vstord(const struct vstor_qmp *q);

/*
 * Run @cmd with @args (taken; NULL for none) and wait for its reply.
 * Returns 0 with *@ret the reply's "return" value (caller puts it; @ret
 * may be NULL), 1 for an error reply, -errno for a transport failure or
 * a timeout; @err is filled on both failures.
 */
int vstor_qmp_execute(struct vstor_qmp *q, const char *cmd, json_object *args, json_object **ret,
		      struct vstor_qmp_error *err);

/*
 * The next event: one already received, else wait at most @timeout_ms.
 * Returns 1 with *@ev (caller puts it), 0 on timeout, -errno when the
 * connection failed (@err filled).
 */
int vstor_qmp_next_event(struct vstor_qmp *q, int timeout_ms, json_object **ev,
			 struct vstor_qmp_error *err);

/* Whether the daemon has command @name (query-commands; cached). */
bool vstor_qmp_has_command(struct vstor_qmp *q, const char *name);

/* Small json-c helpers for the verbs. */
const char *vstor_json_str(json_object *o, const char *key);
long long vstor_json_int(json_object *o, const char *key, long long dflt);

#endif
