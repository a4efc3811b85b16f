/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Secrets by id (QEMU's --object secret): what create options such as
 * key-secret=ID name. Copies, wiped when replaced or cleared; never logged.
 */
#include "secret.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SECRETS 16

static struct {
	char *id;
	uint8_t *data;
	size_t len;
} secrets[MAX_SECRETS];
static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;

static void drop(unsigned i)
{
	free(secrets[i].id);
	if (secrets[i].data)
		gnutls_memset(secrets[i].data, 0, secrets[i].len);
	free(secrets[i].data);
	memset(&secrets[i], 0, sizeof(secrets[i]));
}

int vs_secret_add(const char *id, const void *data, size_t len)
{
	int ret = -ENOSPC;

	pthread_mutex_lock(&secrets_lock);
	for (unsigned i = 0; i < MAX_SECRETS; i++)
		if (secrets[i].id && !strcmp(secrets[i].id, id))
			drop(i);
	for (unsigned i = 0; i < MAX_SECRETS; i++) {
		if (secrets[i].id)
			continue;
		secrets[i].id = strdup(id);
		secrets[i].data = malloc(len ? len : 1);
		if (!secrets[i].id || !secrets[i].data) {
			drop(i);
			ret = -ENOMEM;
			break;
		}
		memcpy(secrets[i].data, data, len);
		secrets[i].len = len;
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&secrets_lock);
	return ret;
}

void vs_secret_clear(void)
{
	pthread_mutex_lock(&secrets_lock);
	for (unsigned i = 0; i < MAX_SECRETS; i++)
		drop(i);
	pthread_mutex_unlock(&secrets_lock);
}

int vs_secret_get(const char *id, uint8_t **data, size_t *len)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&secrets_lock);
	for (unsigned i = 0; i < MAX_SECRETS; i++) {
		if (!secrets[i].id || strcmp(secrets[i].id, id))
			continue;
		*data = malloc(secrets[i].len ? secrets[i].len : 1);
		if (!*data) {
			ret = -ENOMEM;
			break;
		}
		memcpy(*data, secrets[i].data, secrets[i].len);
		*len = secrets[i].len;
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&secrets_lock);
	return ret;
}
