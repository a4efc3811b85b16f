/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Control-plane errors: a negative errno plus a human message.
 *
 * Data-path functions return 0 (or a count) or -errno and never touch this.
 * Control-plane functions (open, create, check, pool operations) take an
 * optional struct vs_error * and fill it on failure, so the caller can print
 * "open: /path/img.qcow2: Permission denied" without guessing.
 */
#ifndef VSTOR_ERROR_H
#define VSTOR_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define VS_ERROR_MSG_MAX 512

struct vs_error {
	int code; /* negative errno, 0 when no error was set */
	char msg[VS_ERROR_MSG_MAX];
};

/*
 * Fill @err (may be NULL) with @code (a negative errno) and a printf-style
 * message. Only the first error set is kept, so the innermost, most precise
 * message wins. Returns @code so callers can write `return vs_error_set(...)`.
 */
int vs_error_set(struct vs_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Like vs_error_set() and appends ": strerror(-code)". */
int vs_error_setf_errno(struct vs_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Forget a previous error. @err may be NULL. */
void vs_error_clear(struct vs_error *err);

/*
 * Warnings that are not errors (an autoclear bit cleared, a repair done on
 * open). They go to the handler set with vs_set_warn_handler(), by default
 * to stderr as "vstor: warning: MESSAGE", or as it is when MESSAGE begins
 * with "WARNING: " (QEMU's own words for a raw image whose format was
 * probed, which qemu-img and qemu-nbd print so).
 */
void vs_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
typedef void vs_warn_handler(const char *msg, void *opaque);
void vs_set_warn_handler(vs_warn_handler *fn, void *opaque);

/* Symbolic name of an errno value ("ENOENT"); "EUNKNOWN" if not known. */
const char *vs_errno_name(int errnum);

#ifdef __cplusplus
}
#endif

#endif
