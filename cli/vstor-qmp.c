/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client of vstor's block verbs (see vstor-qmp.h). The socket is
 * non-blocking and every read and write waits in poll() with a deadline:
 * a daemon that is gone answers ECONNREFUSED/ENOENT at connect or EOF
 * later, one that hangs runs into the deadline.
 */
#include "vstor-qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A daemon's message is one JSON line; anything larger is not QMP. */
#define QMP_CLIENT_MAX_LINE (64u << 20)

struct vstor_qmp {
	int fd;
	char *buf;
	size_t len, cap;
	json_object *events;   /* array, oldest first */
	json_object *commands; /* query-commands' names, once asked */
	long long next_id;
	int timeout_ms;
	bool vstord;
};

static void set_err(struct vstor_qmp_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(struct vstor_qmp_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->code = code;
	err->cls[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
	va_end(ap);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for @events on the socket until @deadline (ms, CLOCK_MONOTONIC). */
static int wait_fd(struct vstor_qmp *q, short events, long long deadline)
{
	for (;;) {
		struct pollfd p = { .fd = q->fd, .events = events };
		long long left = deadline - now_ms();
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return 0;
	}
}

static int send_all(struct vstor_qmp *q, const char *s, size_t len, struct vstor_qmp_error *err)
{
	long long deadline = now_ms() + q->timeout_ms;

	while (len) {
		ssize_t n = send(q->fd, s, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			int r = wait_fd(q, POLLOUT, deadline);

			if (r < 0) {
				set_err(err, r, "cannot send to the daemon: %s", strerror(-r));
				return r;
			}
			continue;
		}
		if (n < 0) {
			int e = errno;

			set_err(err, -e, "cannot send to the daemon: %s", strerror(e));
			return -e;
		}
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The next message from the daemon, waiting until @deadline. Returns 1
 * with *@msg, 0 on timeout, -errno on EOF (-ECONNRESET) or errors.
 */
static int read_message(struct vstor_qmp *q, long long deadline, json_object **msg,
			struct vstor_qmp_error *err)
{
	for (;;) {
		char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;

		if (nl) {
			size_t line = (size_t)(nl - q->buf) + 1;
			enum json_tokener_error jerr;
			json_object *o;

			*nl = '\0';
			o = json_tokener_parse_verbose(q->buf, &jerr);
			memmove(q->buf, q->buf + line, q->len - line);
			q->len -= line;
			if (!o && jerr == json_tokener_success)
				continue; /* an empty line */
			if (!o || !json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				set_err(err, -EPROTO, "the daemon sent a message that is not QMP");
				return -EPROTO;
			}
			*msg = o;
			return 1;
		}
		if (q->len >= QMP_CLIENT_MAX_LINE) {
			set_err(err, -EPROTO, "the daemon sent a message that is too large");
			return -EPROTO;
		}
		if (q->cap - q->len < 65536) {
			size_t cap = q->cap ? q->cap * 2 : 65536 * 2;
			char *b = realloc(q->buf, cap);

			if (!b) {
				set_err(err, -ENOMEM, "out of memory");
				return -ENOMEM;
			}
			q->buf = b;
			q->cap = cap;
		}
		ssize_t n = recv(q->fd, q->buf + q->len, q->cap - q->len - 1, 0);

		if (n > 0) {
			q->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			set_err(err, -ECONNRESET, "the daemon closed the connection");
			return -ECONNRESET;
		}
		if (errno != EAGAIN && errno != EINTR) {
			int e = errno;

			set_err(err, -e, "cannot read from the daemon: %s", strerror(e));
			return -e;
		}
		int r = wait_fd(q, POLLIN, deadline);

		if (r == -ETIMEDOUT)
			return 0;
		if (r < 0) {
			set_err(err, r, "cannot read from the daemon: %s", strerror(-r));
			return r;
		}
	}
}

static int timeout_from_env(void)
{
	const char *s = getenv("VSTOR_QMP_TIMEOUT");
	char *end;
	long v;

	if (!s || !*s)
		return VSTOR_QMP_TIMEOUT_MS;
	v = strtol(s, &end, 10);
	if (*end || v <= 0 || v > 86400)
		return VSTOR_QMP_TIMEOUT_MS;
	return (int)(v * 1000);
}

int vstor_qmp_connect(const char *path, struct vstor_qmp **out, struct vstor_qmp_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vstor_qmp *q;
	json_object *greeting = NULL, *v;
	long long deadline;
	int r;

	*out = NULL;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		set_err(err, -ENAMETOOLONG, "socket path '%s' is too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	q = calloc(1, sizeof(*q));
	if (!q) {
		set_err(err, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	q->timeout_ms = timeout_from_env();
	q->events = json_object_new_array();
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (q->fd < 0) {
		r = -errno;
		set_err(err, r, "socket: %s", strerror(-r));
		goto fail;
	}
	deadline = now_ms() + q->timeout_ms;
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (r == -EINPROGRESS || r == -EAGAIN) {
			int so = 0;
			socklen_t sl = sizeof(so);

			r = wait_fd(q, POLLOUT, deadline);
			if (r == 0 && getsockopt(q->fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0)
				r = -so;
		}
		if (r < 0) {
			set_err(err, r, "cannot connect to the daemon at '%s': %s", path,
				strerror(-r));
			goto fail;
		}
	}
	r = read_message(q, deadline, &greeting, err);
	if (r == 0) {
		r = -ETIMEDOUT;
		set_err(err, r, "no greeting from the daemon at '%s' within %d s", path,
			q->timeout_ms / 1000);
	}
	if (r < 0)
		goto fail;
	if (!json_object_object_get_ex(greeting, "QMP", &v)) {
		r = -EPROTO;
		set_err(err, r, "'%s' does not speak QMP", path);
		goto fail;
	}
	if (json_object_object_get_ex(v, "version", &v) &&
	    json_object_object_get_ex(v, "package", &v))
		q->vstord = !strncmp(json_object_get_string(v), "vstor", 5);
	json_object_put(greeting);
	greeting = NULL;
	r = vstor_qmp_execute(q, "qmp_capabilities", NULL, NULL, err);
	if (r) {
		r = r > 0 ? -EPROTO : r;
		goto fail;
	}
	*out = q;
	return 0;
fail:
	json_object_put(greeting);
	vstor_qmp_close(q);
	return r;
}

void vstor_qmp_close(struct vstor_qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	json_object_put(q->events);
	json_object_put(q->commands);
	free(q->buf);
	free(q);
}

bool vstor_qmp_is_vstord(const struct vstor_qmp *q)
{
	return q->vstord;
}

int vstor_qmp_execute(struct vstor_qmp *q, const char *cmd, json_object *args, json_object **ret,
		      struct vstor_qmp_error *err)
{
	json_object *msg = json_object_new_object(), *reply = NULL, *v;
	long long id = ++q->next_id, deadline;
	const char *s;
	size_t len;
	char *line;
	int r;

	if (ret)
		*ret = NULL;
	json_object_object_add(msg, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(msg, "arguments", args);
	json_object_object_add(msg, "id", json_object_new_int64(id));
	s = json_object_to_json_string_ext(msg,
					   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	line = malloc(len + 2);
	if (!line) {
		json_object_put(msg);
		set_err(err, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	memcpy(line, s, len);
	line[len++] = '\n';
	json_object_put(msg);
	r = send_all(q, line, len, err);
	free(line);
	if (r < 0)
		return r;
	deadline = now_ms() + q->timeout_ms;
	for (;;) {
		r = read_message(q, deadline, &reply, err);
		if (r == 0) {
			set_err(err, -ETIMEDOUT, "no reply from the daemon to '%s' within %d s",
				cmd, q->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		if (r < 0)
			return r;
		if (json_object_object_get_ex(reply, "event", NULL)) {
			json_object_array_add(q->events, reply);
			continue;
		}
		if (json_object_object_get_ex(reply, "id", &v) && json_object_get_int64(v) == id)
			break;
		json_object_put(reply); /* not ours (a stale reply) */
	}
	if (json_object_object_get_ex(reply, "error", &v)) {
		const char *cls = vstor_json_str(v, "class"), *desc = vstor_json_str(v, "desc");

		if (err) {
			err->code = 0;
			snprintf(err->cls, sizeof(err->cls), "%s", cls ? cls : "GenericError");
			snprintf(err->desc, sizeof(err->desc), "%s", desc ? desc : "unknown error");
		}
		json_object_put(reply);
		return 1;
	}
	if (ret && json_object_object_get_ex(reply, "return", &v))
		*ret = json_object_get(v);
	json_object_put(reply);
	return 0;
}

int vstor_qmp_next_event(struct vstor_qmp *q, int timeout_ms, json_object **ev,
			 struct vstor_qmp_error *err)
{
	long long deadline = now_ms() + timeout_ms;
	json_object *msg;
	int r;

	*ev = NULL;
	for (;;) {
		if (json_object_array_length(q->events)) {
			*ev = json_object_get(json_object_array_get_idx(q->events, 0));
			json_object_array_del_idx(q->events, 0, 1);
			return 1;
		}
		r = read_message(q, deadline, &msg, err);
		if (r <= 0)
			return r;
		if (json_object_object_get_ex(msg, "event", NULL))
			json_object_array_add(q->events, msg);
		else
			json_object_put(msg); /* a reply nobody waits for */
	}
}

bool vstor_qmp_has_command(struct vstor_qmp *q, const char *name)
{
	if (!q->commands) {
		json_object *ret = NULL;

		if (vstor_qmp_execute(q, "query-commands", NULL, &ret, NULL) != 0 ||
		    !json_object_is_type(ret, json_type_array)) {
			json_object_put(ret);
			return false;
		}
		q->commands = ret;
	}
	for (size_t i = 0; i < json_object_array_length(q->commands); i++) {
		const char *n = vstor_json_str(json_object_array_get_idx(q->commands, i), "name");

		if (n && !strcmp(n, name))
			return true;
	}
	return false;
}

const char *vstor_json_str(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

long long vstor_json_int(json_object *o, const char *key, long long dflt)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return dflt;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return dflt;
	return (long long)json_object_get_int64(v);
}
