/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TLS credentials a client connection names (QEMU's tls-creds-x509 and
 * tls-creds-psk objects, --object or object-add): what the NBD client
 * (driver-nbd-libnbd.c) hands libnbd for nbds:// names. Registered from the
 * control side, read when a connection opens: a mutex guards the list.
 */
#include "tls-creds.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_creds {
	struct tls_creds *next;
	char *id;
	char *dir;
	char *username; /* PSK identity */
	bool psk;
};

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_creds *tls_list;

static void creds_free(struct tls_creds *c)
{
	if (!c)
		return;
	free(c->id);
	free(c->dir);
	free(c->username);
	free(c);
}

int vs_tls_creds_define(const char *id, const char *type, const char *dir, const char *username,
			struct vs_error *err)
{
	struct tls_creds *c, **pp;

	if (!id || !id[0])
		return vs_error_set(err, -EINVAL, "Parameter 'id' is missing");
	if (!type || (strcmp(type, "tls-creds-x509") && strcmp(type, "tls-creds-psk")))
		return vs_error_set(err, -EINVAL, "Parameter 'qom-type' does not accept value '%s'",
				    type ? type : "");
	if (!dir || !dir[0])
		return vs_error_set(err, -EINVAL, "Unable to access credentials: no dir");
	c = calloc(1, sizeof(*c));
	if (!c || !(c->id = strdup(id)) || !(c->dir = strdup(dir)) ||
	    !(c->username = strdup(username ? username : "qemu"))) {
		creds_free(c);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	c->psk = !strcmp(type, "tls-creds-psk");
	pthread_mutex_lock(&tls_lock);
	for (pp = &tls_list; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->id, id)) {
			struct tls_creds *old = *pp;

			c->next = old->next;
			*pp = c;
			pthread_mutex_unlock(&tls_lock);
			creds_free(old);
			return 0;
		}
	}
	c->next = tls_list;
	tls_list = c;
	pthread_mutex_unlock(&tls_lock);
	return 0;
}

int vs_tls_creds_remove(const char *id)
{
	struct tls_creds *gone = NULL;

	pthread_mutex_lock(&tls_lock);
	for (struct tls_creds **pp = &tls_list; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->id, id)) {
			gone = *pp;
			*pp = gone->next;
			break;
		}
	}
	pthread_mutex_unlock(&tls_lock);
	creds_free(gone);
	return gone ? 0 : -ENOENT;
}

int vs_tls_creds_lookup(const char *id, struct vs_tls_creds_info *out)
{
	const struct tls_creds *found = NULL;
	unsigned n = 0;
	int ret = -ENOENT;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&tls_lock);
	for (const struct tls_creds *c = tls_list; c; c = c->next) {
		n++;
		if (id ? !strcmp(c->id, id) : true)
			found = c;
	}
	/* Without an id: the one object there is, else none. */
	if (found && (id || n == 1)) {
		ret = 0;
		if (snprintf(out->dir, sizeof(out->dir), "%s", found->dir) >=
			    (int)sizeof(out->dir) ||
		    snprintf(out->username, sizeof(out->username), "%s", found->username) >=
			    (int)sizeof(out->username))
			ret = -ENAMETOOLONG;
		out->psk = found->psk;
	}
	pthread_mutex_unlock(&tls_lock);
	return ret;
}
