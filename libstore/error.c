/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "vstor/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static void error_vset(struct vs_error *err, int code, bool with_errno, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void error_vset(struct vs_error *err, int code, bool with_errno, const char *fmt, va_list ap)
{
	size_t n;

	if (!err || err->code)
		return;
	err->code = code ? code : -EIO;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (with_errno) {
		n = strlen(err->msg);
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(-err->code));
	}
}

int vs_error_set(struct vs_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_vset(err, code, false, fmt, ap);
	va_end(ap);
	return code;
}

int vs_error_setf_errno(struct vs_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_vset(err, code, true, fmt, ap);
	va_end(ap);
	return code;
}

void vs_error_clear(struct vs_error *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}

static void warn_stderr(const char *msg, void *opaque)
{
	(void)opaque;
	if (!strncmp(msg, "WARNING: ", 9))
		fprintf(stderr, "%s\n", msg);
	else
		fprintf(stderr, "vstor: warning: %s\n", msg);
}

static vs_warn_handler *warn_fn = warn_stderr;
static void *warn_opaque;

void vs_set_warn_handler(vs_warn_handler *fn, void *opaque)
{
	warn_fn = fn ? fn : warn_stderr;
	warn_opaque = opaque;
}

void vs_warn(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	warn_fn(buf, warn_opaque);
}

/* clang-format off */
#define E(x) { x, #x }
static const struct {
	int num;
	const char *name;
} errno_names[] = {
	E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(ENXIO), E(E2BIG), E(ENOEXEC),
	E(EBADF), E(ECHILD), E(EAGAIN), E(ENOMEM), E(EACCES), E(EFAULT), E(EBUSY), E(EEXIST),
	E(EXDEV), E(ENODEV), E(ENOTDIR), E(EISDIR), E(EINVAL), E(ENFILE), E(EMFILE), E(ENOTTY),
	E(EFBIG), E(ENOSPC), E(ESPIPE), E(EROFS), E(EMLINK), E(EPIPE), E(ERANGE), E(EDEADLK),
	E(ENAMETOOLONG), E(ENOSYS), E(ENOTEMPTY), E(ELOOP), E(ENODATA), E(EOVERFLOW),
	E(EPROTO), E(EBADMSG), E(ENOTSUP), E(ECONNREFUSED), E(ECONNRESET), E(ETIMEDOUT),
	E(ESHUTDOWN), E(ENOTCONN), E(ECANCELED), E(EMEDIUMTYPE), E(EUCLEAN), E(EDQUOT),
};
#undef E
/* clang-format on */

const char *vs_errno_name(int errnum)
{
	if (errnum < 0)
		errnum = -errnum;
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
		if (errno_names[i].num == errnum)
			return errno_names[i].name;
	return "EUNKNOWN";
}
