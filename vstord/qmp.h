/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP, the QEMU Machine Protocol, as vstord speaks it: a session turns the
 * bytes a monitor client sends into commands and the commands' results into
 * the JSON lines it sends back. Transport-free (monitor.c owns the sockets),
 * so the fuzz target drives the same code with plain buffers.
 *
 * The protocol (QEMU's docs/interop/qmp-spec): the server greets; the client
 * must send qmp_capabilities first; then {"execute": NAME, "arguments": {...},
 * "id": ANY} is answered by {"return": ...} or {"error": {"class", "desc"}},
 * with the same id, in order. Events {"event", "data", "timestamp"} come
 * between replies once capabilities are negotiated.
 *
 * Commands register themselves (QMP_COMMAND at file scope) with the names of
 * their arguments; the dispatcher checks the envelope and rejects unknown
 * arguments, the handler reads its arguments with qmp_arg_*() (which give
 * QEMU's messages for missing and mistyped ones) and answers with a return
 * value or qmp_error().
 */
#ifndef VSTORD_QMP_H
#define VSTORD_QMP_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* QMP's error classes (QEMU's qapi/error.json ErrorClass). */
enum qmp_error_class {
	QMP_ERR_GENERIC,
	QMP_ERR_COMMAND_NOT_FOUND,
	QMP_ERR_DEVICE_NOT_ACTIVE,
	QMP_ERR_DEVICE_NOT_FOUND,
};

/* The largest message a client may send, and the deepest nesting in it. */
#define QMP_MAX_MESSAGE (1u << 20)
#define QMP_MAX_DEPTH 64

struct qmp_session;

/* What a command handler gets: its arguments and where to put its answer. */
struct qmp_call {
	struct qmp_session *session;
	json_object *args; /* an object, never NULL (empty when none given) */
	json_object *ret;  /* the return value; NULL answers {} */
	/*
	 * The arguments came from the command line's keyval syntax: every
	 * value is a string, so qmp_arg_bool() also takes on/off/true/false
	 * and qmp_arg_int()/qmp_arg_uint() decimal strings (QEMU's keyval
	 * input visitor). Sub-calls on nested objects copy it.
	 */
	bool keyval;
	bool failed;
	enum qmp_error_class cls;
	char desc[512];
};

struct qmp_command {
	const char *name;
	/* 0 with call->ret set (or NULL), or -1 after qmp_error(). May yield. */
	int (*fn)(struct qmp_call *call);
	/*
	 * The argument names the command takes, NULL-terminated; NULL: the
	 * handler checks them itself (commands whose arguments depend on a
	 * discriminator, as blockdev-add's on "driver").
	 */
	const char *const *params;
	/* Allowed before capabilities negotiation (only qmp_capabilities). */
	bool before_negotiation;
	struct qmp_command *next;
};

void qmp_register(struct qmp_command *cmd);
const struct qmp_command *qmp_find(const char *name);
/* Calls @fn for every registered command, in name order. */
void qmp_for_each_command(void (*fn)(const struct qmp_command *cmd, void *opaque), void *opaque);

#define QMP_COMMAND(ident, cmd_name, handler, ...)                          \
	static struct qmp_command qmp_cmd_##ident = { .name = cmd_name,     \
						      .fn = handler,        \
						      __VA_ARGS__ };        \
	__attribute__((constructor)) static void qmp_register_##ident(void) \
	{                                                                   \
		qmp_register(&qmp_cmd_##ident);                             \
	}

#define QMP_PARAMS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* Fail @call with @cls and a message; returns -1 for `return qmp_error(...)`. */
int qmp_error(struct qmp_call *call, enum qmp_error_class cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Arguments, with QEMU's messages: a missing required one is "Parameter
 * 'NAME' is missing", a mistyped one "Invalid parameter type for 'NAME',
 * expected: TYPE". Return 1 when present (*out set), 0 when absent and
 * optional (*out untouched), -1 after qmp_error().
 */
int qmp_arg_str(struct qmp_call *call, const char *name, bool required, const char **out);
int qmp_arg_int(struct qmp_call *call, const char *name, bool required, int64_t *out);
int qmp_arg_uint(struct qmp_call *call, const char *name, bool required, uint64_t *out);
int qmp_arg_bool(struct qmp_call *call, const char *name, bool required, bool *out);
int qmp_arg_obj(struct qmp_call *call, const char *name, bool required, json_object **out);
int qmp_arg_array(struct qmp_call *call, const char *name, bool required, json_object **out);

/*
 * Main reactor, coroutine context: wait until no command runs, and keep
 * them from running until released (with --reactors N > 1, where a
 * command may run on another reactor; work posted to main that changes
 * vstord's tables takes it). A no-op with one reactor.
 */
void qmp_commands_hold(void);
void qmp_commands_release(void);
/*
 * Inside a command that waits for something that needs the hold (a job's
 * end): let go of it meanwhile, and take it again. With one reactor, or
 * in a command a command runs, nothing: pause says whether it let go, for
 * resume.
 */
bool qmp_commands_pause(void);
void qmp_commands_resume(bool paused);

/*
 * Run command @name with @args (an object, borrowed) outside any session,
 * as the command line's --blockdev/--export/... do at startup; @keyval as
 * in struct qmp_call. Returns 0, or -1 with the error's text in @desc.
 */
int qmp_run_command(const char *name, json_object *args, bool keyval, char *desc, size_t len);

/* Where a session's output goes: one complete message, "\r\n"-terminated. */
typedef void qmp_send_fn(void *opaque, const char *msg, size_t len);

struct qmp_session *qmp_session_new(qmp_send_fn *send, void *opaque);
void qmp_session_free(struct qmp_session *s);
/* Sends the greeting. */
void qmp_session_greet(struct qmp_session *s);
/*
 * Feeds @len bytes from the client: every complete message in them is
 * answered (commands run to completion, in order, before this returns).
 * Returns 0, or -1 when the client must be disconnected (a message larger
 * than QMP_MAX_MESSAGE; the error has been sent).
 */
int qmp_session_feed(struct qmp_session *s, const char *buf, size_t len);
/* Whether events go to this session (capabilities negotiated). */
bool qmp_session_negotiated(const struct qmp_session *s);

/* query-version's answer, also in the greeting (a new object). */
json_object *qmp_version_object(void);

/* Formats an event message ("\r\n"-terminated, caller frees); @data may be NULL. */
char *qmp_event_format(const char *name, json_object *data, size_t *len);

#endif
