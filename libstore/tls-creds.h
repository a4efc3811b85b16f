/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The TLS credentials registered with vs_tls_creds_define() (vstor/node.h),
 * read by client drivers when a connection opens (internal to libstore).
 */
#ifndef VSTOR_TLS_CREDS_H
#define VSTOR_TLS_CREDS_H

#include <limits.h>
#include <stdbool.h>

#include "vstor/node.h"

struct vs_tls_creds_info {
	char dir[PATH_MAX];
	char username[256];
	bool psk; /* dir holds keys.psk; else x509 files (ca-cert.pem, client-*.pem) */
};

/*
 * Copy out the credentials of object @id; @id NULL: those of the only
 * object registered. 0, or -ENOENT (none, or several for NULL).
 */
int vs_tls_creds_lookup(const char *id, struct vs_tls_creds_info *out);

#endif
