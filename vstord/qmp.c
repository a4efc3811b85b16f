/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP sessions: framing, the envelope, dispatch, replies (see qmp.h). The
 * messages are QEMU's, so that a client written against
 * qemu-storage-daemon reads the same errors from vstord.
 */
#include "config.h"

#include "qmp.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "export.h"
#include "reactors.h"

struct qmp_session {
	qmp_send_fn *send;
	void *opaque;
	json_tokener *tok;
	size_t pending; /* bytes of the message being parsed */
	bool negotiated;
};

/* ---- the command registry ---- */

static struct qmp_command *commands; /* sorted by name */

void qmp_register(struct qmp_command *cmd)
{
	struct qmp_command **p = &commands;

	while (*p && strcmp((*p)->name, cmd->name) < 0)
		p = &(*p)->next;
	cmd->next = *p;
	*p = cmd;
}

const struct qmp_command *qmp_find(const char *name)
{
	for (const struct qmp_command *c = commands; c; c = c->next)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

void qmp_for_each_command(void (*fn)(const struct qmp_command *cmd, void *opaque), void *opaque)
{
	for (const struct qmp_command *c = commands; c; c = c->next)
		fn(c, opaque);
}

/* ---- writing JSON as QEMU does: {"a": 1, "b": [2, 3]} ---- */

struct strbuf {
	char *p;
	size_t len, cap;
};

static void sb_add(struct strbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);

		if (!p)
			abort();
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void sb_puts(struct strbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void put_string(struct strbuf *b, const char *s)
{
	char esc[8];

	sb_add(b, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		switch (*c) {
		case '"':
			sb_add(b, "\\\"", 2);
			break;
		case '\\':
			sb_add(b, "\\\\", 2);
			break;
		case '\b':
			sb_add(b, "\\b", 2);
			break;
		case '\f':
			sb_add(b, "\\f", 2);
			break;
		case '\n':
			sb_add(b, "\\n", 2);
			break;
		case '\r':
			sb_add(b, "\\r", 2);
			break;
		case '\t':
			sb_add(b, "\\t", 2);
			break;
		default:
			if (*c < 0x20 || *c == 0x7f) {
				snprintf(esc, sizeof(esc), "\\u%04x", *c);
				sb_puts(b, esc);
			} else {
				sb_add(b, (const char *)c, 1);
			}
		}
	}
	sb_add(b, "\"", 1);
}

static void put_value(struct strbuf *b, json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_object: {
		bool first = true;

		sb_add(b, "{", 1);
		json_object_object_foreach(v, key, val)
		{
			if (!first)
				sb_add(b, ", ", 2);
			first = false;
			put_string(b, key);
			sb_add(b, ": ", 2);
			put_value(b, val);
		}
		sb_add(b, "}", 1);
		break;
	}
	case json_type_array: {
		size_t n = json_object_array_length(v);

		sb_add(b, "[", 1);
		for (size_t i = 0; i < n; i++) {
			if (i)
				sb_add(b, ", ", 2);
			put_value(b, json_object_array_get_idx(v, i));
		}
		sb_add(b, "]", 1);
		break;
	}
	case json_type_string:
		put_string(b, json_object_get_string(v));
		break;
	case json_type_null:
		sb_puts(b, "null");
		break;
	default: /* numbers and booleans */
		sb_puts(b, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	}
}

/* @v as one "\r\n"-terminated message; takes nothing from @v. */
static char *format_message(json_object *v, size_t *len)
{
	struct strbuf b = { 0 };

	put_value(&b, v);
	sb_add(&b, "\r\n", 2);
	*len = b.len;
	return b.p;
}

static void send_value(struct qmp_session *s, json_object *v)
{
	size_t len;
	char *msg = format_message(v, &len);

	s->send(s->opaque, msg, len);
	free(msg);
}

char *qmp_event_format(const char *name, json_object *data, size_t *len)
{
	json_object *ev = json_object_new_object();
	json_object *ts = json_object_new_object();
	struct timeval tv;
	char *msg;

	gettimeofday(&tv, NULL);
	json_object_object_add(ev, "event", json_object_new_string(name));
	if (data)
		json_object_object_add(ev, "data", json_object_get(data));
	json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
	json_object_object_add(ev, "timestamp", ts);
	msg = format_message(ev, len);
	json_object_put(ev);
	return msg;
}

/* ---- errors and arguments ---- */

static const char *const class_names[] = {
	[QMP_ERR_GENERIC] = "GenericError",
	[QMP_ERR_COMMAND_NOT_FOUND] = "CommandNotFound",
	[QMP_ERR_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
	[QMP_ERR_DEVICE_NOT_FOUND] = "DeviceNotFound",
};

int qmp_error(struct qmp_call *call, enum qmp_error_class cls, const char *fmt, ...)
{
	va_list ap;

	if (call->failed) /* the first error is the precise one */
		return -1;
	call->failed = true;
	call->cls = cls;
	va_start(ap, fmt);
	vsnprintf(call->desc, sizeof(call->desc), fmt, ap);
	va_end(ap);
	return -1;
}

static int get_arg(struct qmp_call *call, const char *name, bool required, json_type type,
		   const char *type_name, json_object **out)
{
	json_object *v;

	if (!json_object_object_get_ex(call->args, name, &v)) {
		if (required)
			return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' is missing", name);
		return 0;
	}
	if (!json_object_is_type(v, type))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Invalid parameter type for '%s', expected: %s", name, type_name);
	*out = v;
	return 1;
}

int qmp_arg_str(struct qmp_call *call, const char *name, bool required, const char **out)
{
	json_object *v = NULL;
	int ret = get_arg(call, name, required, json_type_string, "string", &v);

	if (ret > 0)
		*out = json_object_get_string(v);
	return ret;
}

/*
 * A keyval string (the command line's "size=1048576") as a number, as
 * QEMU's keyval input visitor reads it: 1 with *@v set, 0 when @v is no
 * string (the caller's type check answers), -1 after qmp_error().
 */
static int keyval_number(struct qmp_call *call, const char *name, json_object *v, bool is_signed,
			 const char *type_name, uint64_t *out)
{
	const char *s;
	char *end;

	if (!call->keyval || !json_object_is_type(v, json_type_string))
		return 0;
	s = json_object_get_string(v);
	errno = 0;
	if (is_signed)
		*out = (uint64_t)strtoll(s, &end, 10);
	else
		*out = strtoull(s, &end, 10);
	if (!*s || *end || errno || (!is_signed && strchr(s, '-')))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' expects %s", name,
				 type_name);
	return 1;
}

static int get_number(struct qmp_call *call, const char *name, bool required, bool is_signed,
		      json_object **v, uint64_t *kv)
{
	int ret;

	if (call->keyval && json_object_object_get_ex(call->args, name, v)) {
		ret = keyval_number(call, name, *v, is_signed, is_signed ? "int64" : "uint64", kv);
		if (ret)
			return ret < 0 ? -1 : 2;
	}
	return get_arg(call, name, required, json_type_int, "integer", v);
}

int qmp_arg_int(struct qmp_call *call, const char *name, bool required, int64_t *out)
{
	json_object *v = NULL;
	uint64_t kv;
	int ret = get_number(call, name, required, true, &v, &kv);

	if (ret == 2)
		*out = (int64_t)kv;
	else if (ret > 0)
		*out = json_object_get_int64(v);
	return ret > 0 ? 1 : ret;
}

int qmp_arg_uint(struct qmp_call *call, const char *name, bool required, uint64_t *out)
{
	json_object *v = NULL;
	uint64_t kv;
	int ret;

	/* QEMU's message for a uint64 of another type. */
	if (!call->keyval && json_object_object_get_ex(call->args, name, &v) &&
	    !json_object_is_type(v, json_type_int))
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' expects uint64", name);
	ret = get_number(call, name, required, false, &v, &kv);
	if (ret == 2) {
		*out = kv;
		return 1;
	}
	if (ret <= 0)
		return ret;
	/* json-c keeps integers above INT64_MAX as unsigned; a negative one is no size. */
	if (json_object_get_int64(v) < 0 && json_object_get_uint64(v) <= (uint64_t)INT64_MAX)
		return qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' expects uint64", name);
	*out = json_object_get_uint64(v);
	return 1;
}

int qmp_arg_bool(struct qmp_call *call, const char *name, bool required, bool *out)
{
	json_object *v = NULL;
	int ret;

	if (call->keyval && json_object_object_get_ex(call->args, name, &v) &&
	    json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);

		if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes")) {
			*out = true;
		} else if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no")) {
			*out = false;
		} else {
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Parameter '%s' expects 'on' or 'off'", name);
		}
		return 1;
	}
	ret = get_arg(call, name, required, json_type_boolean, "boolean", &v);
	if (ret > 0)
		*out = json_object_get_boolean(v);
	return ret;
}

int qmp_arg_obj(struct qmp_call *call, const char *name, bool required, json_object **out)
{
	return get_arg(call, name, required, json_type_object, "object", out);
}

int qmp_arg_array(struct qmp_call *call, const char *name, bool required, json_object **out)
{
	return get_arg(call, name, required, json_type_array, "array", out);
}

/* ---- sessions ---- */

struct qmp_session *qmp_session_new(qmp_send_fn *send, void *opaque)
{
	struct qmp_session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->tok = json_tokener_new_ex(QMP_MAX_DEPTH);
	if (!s->tok) {
		free(s);
		return NULL;
	}
	s->send = send;
	s->opaque = opaque;
	return s;
}

void qmp_session_free(struct qmp_session *s)
{
	if (!s)
		return;
	json_tokener_free(s->tok);
	free(s);
}

bool qmp_session_negotiated(const struct qmp_session *s)
{
	return s->negotiated;
}

json_object *qmp_version_object(void)
{
	json_object *ver = json_object_new_object();
	json_object *q = json_object_new_object();
	unsigned major = 0, minor = 0, micro = 0;

	sscanf(VSTOR_VERSION, "%u.%u.%u", &major, &minor, &micro);
	json_object_object_add(q, "micro", json_object_new_int(micro));
	json_object_object_add(q, "minor", json_object_new_int(minor));
	json_object_object_add(q, "major", json_object_new_int(major));
	json_object_object_add(ver, "qemu", q);
	json_object_object_add(ver, "package", json_object_new_string("vstor " VSTOR_VERSION));
	return ver;
}

void qmp_session_greet(struct qmp_session *s)
{
	json_object *g = json_object_new_object();
	json_object *qmp = json_object_new_object();

	json_object_object_add(qmp, "version", qmp_version_object());
	/* No out-of-band execution: commands run in order. */
	json_object_object_add(qmp, "capabilities", json_object_new_array());
	json_object_object_add(g, "QMP", qmp);
	send_value(s, g);
	json_object_put(g);
}

static void reply_error(struct qmp_session *s, json_object *id, enum qmp_error_class cls,
			const char *desc)
{
	json_object *r = json_object_new_object();
	json_object *e = json_object_new_object();

	json_object_object_add(e, "class", json_object_new_string(class_names[cls]));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(r, "error", e);
	if (id)
		json_object_object_add(r, "id", json_object_get(id));
	send_value(s, r);
	json_object_put(r);
}

static void reply_return(struct qmp_session *s, json_object *id, json_object *ret)
{
	json_object *r = json_object_new_object();

	json_object_object_add(r, "return", ret ? ret : json_object_new_object());
	if (id)
		json_object_object_add(r, "id", json_object_get(id));
	send_value(s, r);
	json_object_put(r);
}

static bool param_known(const struct qmp_command *cmd, const char *name)
{
	for (const char *const *p = cmd->params; *p; p++)
		if (!strcmp(*p, name))
			return true;
	return false;
}

/* Reject arguments @cmd does not take; false after qmp_error(). */
static bool check_params(const struct qmp_command *cmd, struct qmp_call *call)
{
	if (!cmd->params)
		return true;
	json_object_object_foreach(call->args, pkey, pval)
	{
		(void)pval;
		if (!param_known(cmd, pkey)) {
			qmp_error(call, QMP_ERR_GENERIC, "Parameter '%s' is unexpected", pkey);
			return false;
		}
	}
	return true;
}

/* ---- running a handler, on its nodes' reactor ---- */

struct handler_run {
	const struct qmp_command *cmd;
	struct qmp_call *call;
	int ret;
};

static void handler_there(void *arg)
{
	struct handler_run *h = arg;

	h->ret = h->cmd->fn(h->call);
}

/*
 * With several I/O reactors, commands run one at a time (the tables they
 * touch are main's, while one runs on a node's home reactor), and the
 * ones that work on homed nodes run there (reactors.h).
 */
static struct vs_co_mutex commands_lock;
/* Commands run inside the running one (checkpoint-add's block-export-add). */
static unsigned commands_depth;

void qmp_commands_hold(void)
{
	if (vd_reactor_count() > 1)
		vs_co_mutex_lock(&commands_lock);
}

void qmp_commands_release(void)
{
	if (vd_reactor_count() > 1)
		vs_co_mutex_unlock(&commands_lock);
}

bool qmp_commands_pause(void)
{
	if (vd_reactor_count() == 1 || commands_depth != 1)
		return false;
	commands_depth--;
	vs_co_mutex_unlock(&commands_lock);
	return true;
}

void qmp_commands_resume(bool paused)
{
	if (!paused)
		return;
	vs_co_mutex_lock(&commands_lock);
	commands_depth++;
}

static int run_handler(const struct qmp_command *cmd, struct qmp_call *call)
{
	struct handler_run h = { cmd, call, -1 };
	struct vs_reactor *home;
	char why[256];
	int where;

	/* A command a command runs (checkpoint-add's block-export-add) runs where it is. */
	if (vd_reactor_count() == 1 || commands_depth)
		return cmd->fn(call);
	vs_co_mutex_lock(&commands_lock);
	commands_depth++;
	where = vd_command_reactor(cmd->name, call->args, &home, why, sizeof(why));
	if (where < 0) {
		h.ret = qmp_error(call, QMP_ERR_GENERIC, "%s", why);
	} else if (where == 1) {
		/* Nodes of two reactors: here, while no export runs a request. */
		vd_exports_drain_all_begin();
		h.ret = cmd->fn(call);
		vd_exports_drain_all_end();
	} else if (!home)
		h.ret = cmd->fn(call);
	else if (vs_reactor_call(home, handler_there, &h) < 0)
		h.ret = qmp_error(call, QMP_ERR_GENERIC, "The reactor of '%s' is stopping",
				  cmd->name);
	commands_depth--;
	vs_co_mutex_unlock(&commands_lock);
	return h.ret;
}

int qmp_run_command(const char *name, json_object *args, bool keyval, char *desc, size_t len)
{
	struct qmp_call call = { .args = args, .keyval = keyval };
	const struct qmp_command *cmd = qmp_find(name);

	if (!cmd || cmd->before_negotiation) {
		snprintf(desc, len, "The command %s has not been found", name);
		return -1;
	}
	if (check_params(cmd, &call) && run_handler(cmd, &call) < 0 && !call.failed)
		qmp_error(&call, QMP_ERR_GENERIC, "%s failed", name);
	json_object_put(call.ret);
	if (call.failed) {
		snprintf(desc, len, "%s", call.desc);
		return -1;
	}
	return 0;
}

static void dispatch(struct qmp_session *s, json_object *msg)
{
	struct qmp_call call = { .session = s };
	const struct qmp_command *cmd;
	json_object *id = NULL, *exec = NULL, *args = NULL;
	char desc[512];

	if (!msg || !json_object_is_type(msg, json_type_object)) {
		reply_error(s, NULL, QMP_ERR_GENERIC, "QMP input must be a JSON object");
		return;
	}
	json_object_object_get_ex(msg, "id", &id);
	json_object_object_foreach(msg, key, val)
	{
		if (!strcmp(key, "execute")) {
			exec = val;
		} else if (!strcmp(key, "arguments")) {
			args = val;
		} else if (strcmp(key, "id")) {
			snprintf(desc, sizeof(desc), "QMP input member '%s' is unexpected", key);
			reply_error(s, id, QMP_ERR_GENERIC, desc);
			return;
		}
	}
	if (!exec) {
		reply_error(s, id, QMP_ERR_GENERIC, "QMP input lacks member 'execute'");
		return;
	}
	if (!json_object_is_type(exec, json_type_string)) {
		reply_error(s, id, QMP_ERR_GENERIC, "QMP input member 'execute' must be a string");
		return;
	}
	if (args && !json_object_is_type(args, json_type_object)) {
		reply_error(s, id, QMP_ERR_GENERIC,
			    "QMP input member 'arguments' must be an object");
		return;
	}
	const char *name = json_object_get_string(exec);

	cmd = qmp_find(name);
	if (!s->negotiated && (!cmd || !cmd->before_negotiation)) {
		reply_error(s, id, QMP_ERR_COMMAND_NOT_FOUND,
			    "Expecting capabilities negotiation with 'qmp_capabilities'");
		return;
	}
	if (s->negotiated && cmd && cmd->before_negotiation) {
		reply_error(s, id, QMP_ERR_COMMAND_NOT_FOUND,
			    "Capabilities negotiation is already complete, command ignored");
		return;
	}
	if (!cmd) {
		snprintf(desc, sizeof(desc), "The command %s has not been found", name);
		reply_error(s, id, QMP_ERR_COMMAND_NOT_FOUND, desc);
		return;
	}
	call.args = args ? json_object_get(args) : json_object_new_object();
	check_params(cmd, &call);
	/* Hold the id across the command: it may yield while the message is freed. */
	if (id)
		json_object_get(id);
	if (!call.failed && run_handler(cmd, &call) < 0 && !call.failed)
		qmp_error(&call, QMP_ERR_GENERIC, "%s failed", name);
	if (call.failed) {
		json_object_put(call.ret);
		reply_error(s, id, call.cls, call.desc);
	} else {
		if (cmd->before_negotiation)
			s->negotiated = true;
		reply_return(s, id, call.ret);
	}
	json_object_put(id);
	json_object_put(call.args);
}

int qmp_session_feed(struct qmp_session *s, const char *buf, size_t len)
{
	while (len) {
		json_object *msg = json_tokener_parse_ex(s->tok, buf, (int)len);
		enum json_tokener_error jerr = json_tokener_get_error(s->tok);
		size_t used = json_tokener_get_parse_end(s->tok);

		if (used > len)
			used = len;
		if (jerr == json_tokener_continue) {
			s->pending += len;
			if (s->pending > QMP_MAX_MESSAGE) {
				reply_error(s, NULL, QMP_ERR_GENERIC,
					    "JSON message too large (the limit is 1 MiB)");
				return -1;
			}
			return 0;
		}
		if (jerr != json_tokener_success) {
			char desc[256];

			snprintf(desc, sizeof(desc), "JSON parse error, %s",
				 json_tokener_error_desc(jerr));
			reply_error(s, NULL, QMP_ERR_GENERIC, desc);
			/* Start again after what was read: the rest of this chunk is lost. */
			json_tokener_reset(s->tok);
			s->pending = 0;
			return 0;
		}
		s->pending += used;
		if (s->pending > QMP_MAX_MESSAGE) {
			json_object_put(msg);
			reply_error(s, NULL, QMP_ERR_GENERIC,
				    "JSON message too large (the limit is 1 MiB)");
			return -1;
		}
		s->pending = 0;
		buf += used;
		len -= used;
		dispatch(s, msg); /* NULL is a JSON null: not an object */
		json_object_put(msg);
		json_tokener_reset(s->tok);
		if (!used)
			break;
	}
	return 0;
}
