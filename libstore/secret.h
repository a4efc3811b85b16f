/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Secrets by id, inside libstore (the public half is in vstor/node.h). */
#ifndef VSTOR_SECRET_H
#define VSTOR_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "vstor/node.h"

/*
 * A copy of the secret @id in *@data (*@len bytes; wipe with gnutls_memset
 * and free() it), or -ENOENT.
 */
int vs_secret_get(const char *id, uint8_t **data, size_t *len);

#endif
