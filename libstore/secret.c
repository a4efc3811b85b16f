/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Secrets by id (QEMU's --object secret): what create options such as
 * key-secret=ID name. Copies, wiped when replaced or cleared; never logged.
 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int vs_secret_remove(const char *id)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&secrets_lock);
	for (unsigned i = 0; i < MAX_SECRETS; i++) {
		if (secrets[i].id && !strcmp(secrets[i].id, id)) {
			drop(i);
			ret = 0;
		}
	}
	pthread_mutex_unlock(&secrets_lock);
	return ret;
}

/* The bytes @in (@inlen) stands for in @format, in a new buffer. */
static int secret_decode(const char *format, const char *in, size_t inlen, uint8_t **out,
			 size_t *outlen)
{
	gnutls_datum_t enc = { (unsigned char *)in, (unsigned)inlen }, dec = { NULL, 0 };

	if (!format || !strcmp(format, "raw")) {
		*out = malloc(inlen ? inlen : 1);
		if (!*out)
			return -ENOMEM;
		memcpy(*out, in, inlen);
		*outlen = inlen;
		return 0;
	}
	if (gnutls_base64_decode2(&enc, &dec) < 0)
		return -EINVAL;
	*out = malloc(dec.size ? dec.size : 1);
	if (*out)
		memcpy(*out, dec.data, dec.size);
	*outlen = dec.size;
	gnutls_memset(dec.data, 0, dec.size);
	gnutls_free(dec.data);
	return *out ? 0 : -ENOMEM;
}

/* Read the secret file @path, refusing one that others may read. */
static int secret_read_file(const char *path, char **buf, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		ret = -EINVAL;
	else if (st.st_mode & 077)
		ret = -EPERM;
	else if (!(*buf = malloc((size_t)st.st_size + 1)))
		ret = -ENOMEM;
	if (ret == 0) {
		n = read(fd, *buf, (size_t)st.st_size);
		if (n < 0) {
			ret = -errno;
			free(*buf);
		} else {
			*len = (size_t)n;
		}
	}
	close(fd);
	return ret;
}

int vs_secret_define(const char *id, const char *data, const char *file, const char *format,
		     struct vs_error *err)
{
	char *fbuf = NULL;
	uint8_t *bytes = NULL;
	size_t flen = 0, blen = 0;
	int ret = -EINVAL;

	if (!id || !id[0])
		vs_error_set(err, ret, "Parameter 'id' is missing");
	else if (!!data == !!file)
		vs_error_set(err, ret, "Either 'data' or 'file' must be provided");
	else if (format && strcmp(format, "raw") && strcmp(format, "base64"))
		vs_error_set(err, ret, "Parameter 'format' does not accept value '%s'", format);
	else if (file && (ret = secret_read_file(file, &fbuf, &flen)) == -EPERM)
		vs_error_set(err, ret,
			     "Secret file '%s' may be read by other users (mode & 077): refused",
			     file);
	else if (file && ret < 0)
		vs_error_setf_errno(err, ret, "Unable to read %s", file);
	else if ((ret = secret_decode(format, data ? data : fbuf, data ? strlen(data) : flen,
				      &bytes, &blen)) < 0)
		vs_error_set(err, ret, "Secret '%s': %s", id,
			     ret == -ENOMEM ? "Out of memory" : "invalid base64 data");
	else if ((ret = vs_secret_add(id, bytes, blen)) < 0)
		vs_error_set(err, ret, "Could not keep secret '%s'", id);
	if (fbuf) {
		gnutls_memset(fbuf, 0, flen);
		free(fbuf);
	}
	if (bytes) {
		gnutls_memset(bytes, 0, blen);
		free(bytes);
	}
	return ret;
}
