/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor: the secret-* commands, as virsh's: the passphrases of encrypted
 * volumes live in the secret store (backends/pool-secret.c), and volumes
 * name them by uuid. A value is never printed (no secret-get-value).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "vstor.h"

#define SECRET_FILE_MAX 16384

static int cmd_secret_define(struct vstor_ctx *c)
{
	const char *file = opt_get(c, "file");
	struct vs_pool_secret_def d;
	char *text = NULL;
	int ret = 0;

	vs_error_clear(&c->err);
	if (vs_pool_read_file(file, &text, &c->err) < 0 ||
	    vs_pool_secret_define(c->st, text, file, &d, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to set attributes from %s", file);
	else
		vstor_msg(c, "Secret %s created\n\n", d.uuid);
	free(text);
	return ret;
}

static int cmd_secret_undefine(struct vstor_ctx *c)
{
	const char *uuid = opt_get(c, "secret");

	vs_error_clear(&c->err);
	if (vs_pool_secret_undefine(c->st, uuid, &c->err) < 0)
		return vstor_error_err(c, "Failed to delete secret %s", uuid);
	vstor_msg(c, "Secret %s deleted\n\n", uuid);
	return 0;
}

static int cmd_secret_dumpxml(struct vstor_ctx *c)
{
	struct vs_pool_secret_def d;

	vs_error_clear(&c->err);
	if (vs_pool_secret_load(c->st, opt_get(c, "secret"), &d, &c->err) < 0)
		return vstor_error_err(c, "failed to get secret '%s'", opt_get(c, "secret"));
	vs_pool_secret_def_format(stdout, &d);
	return 0;
}

static int cmd_secret_list(struct vstor_ctx *c)
{
	struct vstor_table t = { .ncols = 2, .head = { "UUID", "Usage" } };
	struct vs_pool_secret_def *list = NULL;
	size_t n = 0;

	vs_error_clear(&c->err);
	if (vs_pool_secret_list(c->st, &list, &n, &c->err) < 0)
		return vstor_error_err(c, "Failed to list secrets");
	for (size_t i = 0; i < n; i++) {
		char usage[VS_POOL_PATH_MAX + 32];
		const char *cells[2] = { list[i].uuid, usage };

		if (list[i].usage_type[0])
			snprintf(usage, sizeof(usage), "%s %s", list[i].usage_type,
				 list[i].usage_id);
		else
			snprintf(usage, sizeof(usage), "Unused");
		vstor_table_add(&t, cells);
	}
	vstor_table_print(&t);
	free(list);
	return 0;
}

/*
 * Read the value file @path: others may not read or write it (as CHAP
 * secret files). Returns a malloc'd buffer (*@len bytes) or NULL after
 * printing the error.
 */
static uint8_t *read_value_file(struct vstor_ctx *c, const char *path, size_t *len)
{
	struct stat sb;
	uint8_t *buf;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		vstor_error(c, -errno, "failed to open '%s': %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > SECRET_FILE_MAX) {
		close(fd);
		vstor_error(c, -EINVAL, "'%s' is not a secret file", path);
		return NULL;
	}
	if (sb.st_mode & 077) {
		close(fd);
		vstor_error(c, -EPERM,
			    "secret file '%s' may be read or written by other users (mode "
			    "%04o): refused (chmod 600 it)",
			    path, (unsigned)(sb.st_mode & 07777));
		return NULL;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		close(fd);
		vstor_error(c, -ENOMEM, "out of memory");
		return NULL;
	}
	r = read(fd, buf, (size_t)sb.st_size);
	close(fd);
	if (r != sb.st_size) {
		gnutls_memset(buf, 0, (size_t)sb.st_size);
		free(buf);
		vstor_error(c, -EIO, "failed to read '%s'", path);
		return NULL;
	}
	*len = (size_t)r;
	return buf;
}

/* Decode base64 @in (@len bytes, blanks at the end ignored) into a malloc'd buffer. */
static uint8_t *base64_value(struct vstor_ctx *c, const uint8_t *in, size_t len, size_t *outlen)
{
	gnutls_datum_t enc, dec = { 0 };
	uint8_t *out;

	while (len && (in[len - 1] == '\n' || in[len - 1] == '\r' || in[len - 1] == ' '))
		len--;
	enc.data = (unsigned char *)in;
	enc.size = (unsigned)len;
	if (gnutls_base64_decode2(&enc, &dec) < 0) {
		vstor_error(c, -EINVAL, "failed to decode base64 data");
		return NULL;
	}
	out = malloc(dec.size ? dec.size : 1);
	if (out) {
		memcpy(out, dec.data, dec.size);
		*outlen = dec.size;
	}
	gnutls_memset(dec.data, 0, dec.size);
	gnutls_free(dec.data);
	if (!out)
		vstor_error(c, -ENOMEM, "out of memory");
	return out;
}

static int cmd_secret_set_value(struct vstor_ctx *c)
{
	const char *uuid = opt_get(c, "secret"), *file = opt_get(c, "file");
	const char *b64 = opt_get(c, "base64");
	uint8_t *raw = NULL, *value = NULL;
	size_t rawlen = 0, len = 0;
	int ret = 1;

	if (!!file == !!b64)
		return vstor_error(c, -EINVAL,
				   "exactly one of --file and a base64 value is needed");
	if (opt_bool(c, "plain") && !file)
		return vstor_error(c, -EINVAL, "--plain needs --file");
	if (b64) {
		fprintf(stderr, "Passing secret value as command-line argument is insecure!\n");
		value = base64_value(c, (const uint8_t *)b64, strlen(b64), &len);
	} else {
		raw = read_value_file(c, file, &rawlen);
		if (raw && opt_bool(c, "plain")) {
			value = raw;
			len = rawlen;
			raw = NULL;
		} else if (raw) {
			value = base64_value(c, raw, rawlen, &len);
		}
	}
	if (value) {
		vs_error_clear(&c->err);
		if (vs_pool_secret_set_value(c->st, uuid, value, len, &c->err) < 0)
			ret = vstor_error_err(c, "Failed to set secret value");
		else
			ret = 0;
		if (ret == 0)
			vstor_msg(c, "Secret value set\n\n");
	}
	if (raw) {
		gnutls_memset(raw, 0, rawlen);
		free(raw);
	}
	if (value) {
		gnutls_memset(value, 0, len);
		free(value);
	}
	return ret;
}

static const struct opt_spec define_opts[] = {
	{ "file", OT_DATA, true, "file containing secret attributes in XML" },
	{ NULL },
};
static const struct opt_spec uuid_opts[] = {
	{ "secret", OT_DATA, true, "secret UUID" },
	{ NULL },
};
static const struct opt_spec set_value_opts[] = {
	{ "secret", OT_DATA, true, "secret UUID" },
	{ "base64", OT_DATA, false, "base64-encoded secret value (insecure: seen by ps)" },
	{ "file", OT_STR, false, "read the value from a file (mode 0600; base64 unless --plain)" },
	{ "plain", OT_BOOL, false, "the --file holds the value itself" },
	{ NULL },
};
static const struct opt_spec list_opts[] = { { NULL } };

const struct vstor_cmd vstor_secret_cmds[] = {
	{ "secret-define", cmd_secret_define, define_opts,
	  "define or modify a secret from an XML file", true },
	{ "secret-dumpxml", cmd_secret_dumpxml, uuid_opts, "secret attributes in XML", false },
	{ "secret-list", cmd_secret_list, list_opts, "list secrets", false },
	{ "secret-set-value", cmd_secret_set_value, set_value_opts, "set a secret value", true },
	{ "secret-undefine", cmd_secret_undefine, uuid_opts, "undefine a secret", true },
	{ NULL, NULL, NULL, NULL, false },
};
