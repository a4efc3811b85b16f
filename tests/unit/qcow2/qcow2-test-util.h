/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the qcow2 unit tests: a private temp dir (cmocka group
 * setup/teardown), shell commands run in it (qemu-img, qemu-io as the
 * oracle), test bodies run in a coroutine, and image create/open by name.
 */
#ifndef VSTOR_QCOW2_TEST_UTIL_H
#define VSTOR_QCOW2_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vstor/node.h"

/* The test's temp dir, made by setup_tmp(). */
extern char tmpdir[64];

/* @name inside tmpdir, into @out. */
void path(char *out, size_t n, const char *name);

/* Run a shell command in tmpdir (output discarded); returns its exit status. */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run @fn(@arg) in a coroutine on a fresh reactor; asserts the engine ran it. */
void in_co(void (*fn)(void *), void *arg);

/* Coroutine context: open tmpdir/@name (format probed), NULL on error with @err. */
struct vs_node *open_img(const char *name, bool ro, struct vs_error *err);

/* Coroutine context: create qcow2 tmpdir/@name with "k=v,k=v" create options. */
int create_img(const char *name, uint64_t size, const char *opts, struct vs_error *err);

/* cmocka group setup/teardown: make and remove tmpdir (kept with VSTOR_KEEP_TMP). */
int setup_tmp(void **state);
int teardown_tmp(void **state);

#endif
