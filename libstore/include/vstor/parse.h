/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Option values as QEMU's tools take them, parsed in one place for every
 * program and driver (qemu-img sizes, on/off switches).
 */
#ifndef VSTOR_PARSE_H
#define VSTOR_PARSE_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A size as qemu-img takes it (qemu_strtosz): decimal or 0x-hex digits,
 * an optional decimal fraction, and an optional suffix b, k, M, G, T, P or E
 * (powers of 1024, case-insensitive). Returns 0, -EINVAL for a malformed
 * value, or -ERANGE above INT64_MAX.
 */
int vs_parse_size(const char *s, uint64_t *out);

/* on/off, yes/no, true/false, y/n as QEMU's options take them: 0 or -EINVAL. */
int vs_parse_bool(const char *s, bool *out);

#ifdef __cplusplus
}
#endif

#endif
