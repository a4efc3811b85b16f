/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The secret store: libvirt's secret objects (secret-define, secret-set-value,
 * secret-list, secret-undefine), which encrypted volumes name by uuid.
 *
 * As libvirt keeps them: a directory DIR/secrets (mode 0700) beside, not
 * in, the pool definitions, with one definition UUID.xml (uuid, description,
 * usage; never the value) and one value UUID.value (mode 0600, the bytes
 * themselves) per secret. A value file that other users may read or write,
 * or that another user owns, is refused, as CHAP secret files are. Values
 * are never printed, logged or written anywhere else: the state files and
 * the volume links (DIR/vol-secrets/POOL/VOLUME) hold uuids only.
 */
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include <gnutls/gnutls.h>

#include "pool-int.h"
#include "pool-parse.h"

#define SECRET_VALUE_MAX 4096 /* bytes of a passphrase */

/* DIR/secrets/@uuid@suffix (the directory itself when @uuid is NULL). */
static int secret_file(struct vs_pool_state *st, const char *uuid, const char *suffix, char *out,
		       size_t outsz)
{
	return pool_state_file(st, out, outsz, "secrets", uuid, uuid ? suffix : "");
}

/* Create DIR/secrets with mode 0700 (and tighten it if it exists). */
static int secret_dir(struct vs_pool_state *st, struct vs_error *err)
{
	char dir[VS_POOL_PATH_MAX];
	int ret = secret_file(st, NULL, NULL, dir, sizeof(dir));

	if (ret == 0)
		ret = pool_mkdir_p(dir, 0700);
	if (ret == 0 && chmod(dir, 0700) < 0)
		ret = -errno;
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot create the secret directory");
	return 0;
}

static bool uuid_valid(const char *s)
{
	uuid_t u;

	return strlen(s) == 36 && uuid_parse(s, u) == 0;
}

static int no_secret(struct vs_error *err, const char *uuid)
{
	return vs_error_set(err, -ENOENT, "secret not found: no secret with matching uuid '%s'",
			    uuid);
}

/* Write @len bytes of @data to @path (mode @mode) through a temporary file and a rename. */
static int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[VS_POOL_PATH_MAX + 8];
	int fd, ret = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) < 0)
		ret = errno ? -errno : -EIO;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		(void)unlink(tmp);
	return ret;
}

/* ---- Definitions --------------------------------------------------------------- */

void vs_pool_secret_def_format(FILE *f, const struct vs_pool_secret_def *d)
{
	fputs("<secret ephemeral='no' private='yes'>\n  <uuid>", f);
	vs_pool_xml_escape(f, d->uuid);
	fputs("</uuid>\n", f);
	if (d->description[0]) {
		fputs("  <description>", f);
		vs_pool_xml_escape(f, d->description);
		fputs("</description>\n", f);
	}
	if (d->usage_type[0]) {
		fputs("  <usage type='", f);
		vs_pool_xml_escape(f, d->usage_type);
		fputs("'>\n", f);
		fprintf(f, "    <%s>", strcmp(d->usage_type, "volume") ? "name" : "volume");
		vs_pool_xml_escape(f, d->usage_id);
		fprintf(f, "</%s>\n  </usage>\n",
			strcmp(d->usage_type, "volume") ? "name" : "volume");
	}
	fputs("</secret>\n", f);
}

static int copy_text(char *dst, size_t dstsz, const char *src, const char *what,
		     struct vs_error *err)
{
	if (vs_pool_strcpy(dst, dstsz, src) < 0)
		return vs_error_set(err, -EINVAL, "%s is too long", what);
	return 0;
}

/* Parse libvirt's secret XML into @d (uuid "" when not given). */
static int secret_def_parse(const char *text, const char *what, struct vs_pool_secret_def *d,
			    struct vs_error *err)
{
	const struct px_elem *e, *usage;
	struct px_elem *root = NULL;
	const char *v;
	char msg[256];
	int ret = 0;

	memset(d, 0, sizeof(*d));
	if (px_parse(text, &root, msg, sizeof(msg)) < 0)
		return vs_error_set(err, -EINVAL, "%s: invalid XML: %s", what, msg);
	if (strcmp(root->name, "secret")) {
		ret = vs_error_set(err, -EINVAL, "%s: the root element is <%s>, expected <secret>",
				   what, root->name);
		goto out;
	}
	v = px_attr(root, "ephemeral");
	if (v && !strcmp(v, "yes")) {
		ret = vs_error_set(err, -ENOTSUP,
				   "%s: ephemeral secrets are not supported (vstor has no daemon "
				   "to keep them)",
				   what);
		goto out;
	}
	if ((e = px_child(root, "uuid"))) {
		if (!uuid_valid(e->text)) {
			ret = vs_error_set(err, -EINVAL, "%s: malformed uuid element", what);
			goto out;
		}
		strcpy(d->uuid, e->text);
	}
	if ((e = px_child(root, "description")) &&
	    (ret = copy_text(d->description, sizeof(d->description), e->text, "<description>",
			     err)) < 0)
		goto out;
	usage = px_child(root, "usage");
	if (usage) {
		const char *type = px_attr(usage, "type");

		if (!type || (strcmp(type, "volume") && strcmp(type, "ceph") &&
			      strcmp(type, "iscsi") && strcmp(type, "tls"))) {
			ret = vs_error_set(err, -EINVAL,
					   "%s: unknown secret usage type '%s' (volume, ceph, "
					   "iscsi, tls)",
					   what, type ? type : "");
			goto out;
		}
		strcpy(d->usage_type, type);
		e = px_child(usage, strcmp(type, "volume") ?
					    (strcmp(type, "iscsi") ? "name" : "target") :
					    "volume");
		if (!e || !e->text[0]) {
			ret = vs_error_set(err, -EINVAL, "%s: <usage type='%s'> needs its %s", what,
					   type, strcmp(type, "volume") ? "name" : "volume path");
			goto out;
		}
		ret = copy_text(d->usage_id, sizeof(d->usage_id), e->text, "<usage>", err);
	}
out:
	px_free(root);
	return ret;
}

int vs_pool_secret_load(struct vs_pool_state *st, const char *uuid, struct vs_pool_secret_def *d,
			struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX], *text = NULL;
	int ret;

	if (!uuid_valid(uuid))
		return no_secret(err, uuid);
	ret = secret_file(st, uuid, ".xml", path, sizeof(path));
	if (ret < 0 || access(path, F_OK) < 0)
		return no_secret(err, uuid);
	ret = vs_pool_read_file(path, &text, err);
	if (ret < 0)
		return ret;
	ret = secret_def_parse(text, path, d, err);
	free(text);
	if (ret == 0)
		strcpy(d->uuid, uuid);
	return ret;
}

int vs_pool_secret_define(struct vs_pool_state *st, const char *xml, const char *what,
			  struct vs_pool_secret_def *out, struct vs_error *err)
{
	struct vs_pool_secret_def d, *list = NULL;
	char path[VS_POOL_PATH_MAX], *buf = NULL;
	size_t n = 0, len = 0;
	FILE *f;
	int ret = secret_def_parse(xml, what, &d, err);

	if (ret < 0)
		return ret;
	if (!d.uuid[0]) {
		uuid_t u;

		uuid_generate_random(u);
		uuid_unparse_lower(u, d.uuid);
	}
	/* One secret per usage, as libvirt: a redefinition keeps its uuid. */
	ret = vs_pool_secret_list(st, &list, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n && ret == 0; i++)
		if (d.usage_type[0] && !strcmp(list[i].usage_type, d.usage_type) &&
		    !strcmp(list[i].usage_id, d.usage_id) && strcmp(list[i].uuid, d.uuid))
			ret = vs_error_set(err, -EEXIST,
					   "operation failed: a secret with UUID %s already "
					   "defined for use with %s",
					   list[i].uuid, d.usage_id);
	free(list);
	if (ret < 0)
		return ret;
	ret = secret_dir(st, err);
	if (ret < 0)
		return ret;
	f = open_memstream(&buf, &len);
	if (!f)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	vs_pool_secret_def_format(f, &d);
	fclose(f);
	ret = secret_file(st, d.uuid, ".xml", path, sizeof(path));
	if (ret == 0)
		ret = write_file_atomic(path, buf, len, 0600);
	free(buf);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot write the secret definition");
	if (out)
		*out = d;
	return 0;
}

int vs_pool_secret_list(struct vs_pool_state *st, struct vs_pool_secret_def **out, size_t *n,
			struct vs_error *err)
{
	char dir[VS_POOL_PATH_MAX];
	struct vs_pool_secret_def *v = NULL;
	size_t cap = 0;
	struct dirent *de;
	DIR *d;

	*out = NULL;
	*n = 0;
	if (secret_file(st, NULL, NULL, dir, sizeof(dir)) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "state directory path too long");
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 :
					 vs_error_setf_errno(err, -errno, "Cannot read '%s'", dir);
	while ((de = readdir(d))) {
		char uuid[37];
		size_t l = strlen(de->d_name);

		if (l != 36 + 4 || strcmp(de->d_name + 36, ".xml"))
			continue;
		memcpy(uuid, de->d_name, 36);
		uuid[36] = '\0';
		if (*n == cap) {
			struct vs_pool_secret_def *nv;

			cap = cap ? cap * 2 : 8;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				closedir(d);
				free(v);
				return vs_error_set(err, -ENOMEM, "Out of memory");
			}
			v = nv;
		}
		if (vs_pool_secret_load(st, uuid, &v[*n], NULL) == 0)
			(*n)++;
	}
	closedir(d);
	*out = v;
	return 0;
}

int vs_pool_secret_undefine(struct vs_pool_state *st, const char *uuid, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_pool_secret_def d;
	int ret = vs_pool_secret_load(st, uuid, &d, err);

	if (ret < 0)
		return ret;
	if (secret_file(st, uuid, ".value", path, sizeof(path)) == 0)
		(void)unlink(path);
	if (secret_file(st, uuid, ".xml", path, sizeof(path)) == 0 && unlink(path) < 0)
		return vs_error_setf_errno(err, -errno, "Cannot remove '%s'", path);
	return 0;
}

/* ---- Values ----------------------------------------------------------------------- */

int vs_pool_secret_set_value(struct vs_pool_state *st, const char *uuid, const void *data,
			     size_t len, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_pool_secret_def d;
	int ret = vs_pool_secret_load(st, uuid, &d, err);

	if (ret < 0)
		return ret;
	if (len == 0 || len > SECRET_VALUE_MAX)
		return vs_error_set(err, -EINVAL, "a secret value has 1 to %d bytes",
				    SECRET_VALUE_MAX);
	ret = secret_dir(st, err);
	if (ret < 0)
		return ret;
	ret = secret_file(st, uuid, ".value", path, sizeof(path));
	if (ret == 0)
		ret = write_file_atomic(path, data, len, 0600);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot store the value of secret %s", uuid);
	return 0;
}

int vs_pool_secret_get_value(struct vs_pool_state *st, const char *uuid, uint8_t **data,
			     size_t *len, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_pool_secret_def d;
	struct stat sb;
	uint8_t *buf;
	ssize_t r;
	int fd, ret = vs_pool_secret_load(st, uuid, &d, err);

	*data = NULL;
	*len = 0;
	if (ret < 0)
		return ret;
	ret = secret_file(st, uuid, ".value", path, sizeof(path));
	if (ret < 0)
		return vs_error_set(err, ret, "state directory path too long");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return vs_error_set(err, -ENOENT, "secret '%s' does not have a value", uuid);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot open the value of secret %s", uuid);
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return vs_error_set(err, -EINVAL, "the value of secret %s is not a file", uuid);
	}
	if ((sb.st_mode & 077) || sb.st_uid != geteuid()) {
		close(fd);
		return vs_error_set(err, -EPERM,
				    "the value file of secret %s may be read or written by other "
				    "users (mode %04o, owner %u): refused (chmod 600 it)",
				    uuid, (unsigned)(sb.st_mode & 07777), (unsigned)sb.st_uid);
	}
	if (sb.st_size <= 0 || sb.st_size > SECRET_VALUE_MAX) {
		close(fd);
		return vs_error_set(err, -EINVAL, "the value of secret %s has a bad size", uuid);
	}
	buf = malloc((size_t)sb.st_size);
	if (!buf) {
		close(fd);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	r = read(fd, buf, (size_t)sb.st_size);
	close(fd);
	if (r != sb.st_size) {
		gnutls_memset(buf, 0, (size_t)sb.st_size);
		free(buf);
		return vs_error_set(err, -EIO, "Cannot read the value of secret %s", uuid);
	}
	*data = buf;
	*len = (size_t)r;
	return 0;
}

int pool_secret_register(struct vs_pool_state *st, const char *uuid, const char **id,
			 struct vs_error *err)
{
	static const char sid[] = "vstor-pool-volume-secret";
	uint8_t *pass;
	size_t len;
	int ret = vs_pool_secret_get_value(st, uuid, &pass, &len, err);

	if (ret < 0)
		return ret;
	ret = vs_secret_add(sid, pass, len);
	gnutls_memset(pass, 0, len);
	free(pass);
	if (ret < 0)
		return vs_error_set(err, ret, "Out of memory");
	*id = sid;
	return 0;
}

/* ---- Volume links ----------------------------------------------------------------- */

static int link_file(struct vs_pool_state *st, const char *pool, const char *vol, char *out,
		     size_t outsz)
{
	char dir[VS_POOL_PATH_MAX];
	int ret = pool_state_file(st, dir, sizeof(dir), "vol-secrets", pool, "");

	if (ret < 0)
		return ret;
	if ((size_t)snprintf(out, outsz, "%s/%s", dir, vol) >= outsz)
		return -ENAMETOOLONG;
	return 0;
}

int vs_pool_vol_secret(struct vs_pool *p, const struct vs_vol_info *vol, char *uuid,
		       struct vs_error *err)
{
	struct vs_pool_secret_def *list = NULL;
	char path[VS_POOL_PATH_MAX];
	size_t n = 0;
	FILE *f;
	int ret;

	uuid[0] = '\0';
	if (link_file(p->state, p->def.name, vol->name, path, sizeof(path)) == 0 &&
	    (f = fopen(path, "re"))) {
		if (!fgets(uuid, 37, f))
			uuid[0] = '\0';
		fclose(f);
		if (uuid_valid(uuid))
			return 0;
		uuid[0] = '\0';
	}
	/* libvirt's way: the secret whose usage is this volume's path. */
	ret = vs_pool_secret_list(p->state, &list, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i].usage_type, "volume") && !strcmp(list[i].usage_id, vol->path))
			strcpy(uuid, list[i].uuid);
	free(list);
	if (!uuid[0])
		return vs_error_set(err, -ENOENT, "no secret for volume '%s'", vol->name);
	return 0;
}

int vs_pool_vol_link_secret(struct vs_pool *p, const char *vol, const char *uuid,
			    struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX], dir[VS_POOL_PATH_MAX];
	int ret = link_file(p->state, p->def.name, vol, path, sizeof(path));

	if (ret == 0 && !uuid) {
		(void)unlink(path);
		return 0;
	}
	if (ret == 0)
		ret = pool_state_file(p->state, dir, sizeof(dir), "vol-secrets", p->def.name, "");
	if (ret == 0)
		ret = pool_mkdir_p(dir, 0755);
	if (ret == 0)
		ret = write_file_atomic(path, uuid, strlen(uuid), 0644);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot record the secret of volume '%s'",
					   vol);
	return 0;
}

void vs_pool_vol_rename_secret(struct vs_pool *p, const char *from, const char *to)
{
	char a[VS_POOL_PATH_MAX], b[VS_POOL_PATH_MAX];

	if (link_file(p->state, p->def.name, from, a, sizeof(a)) == 0 &&
	    link_file(p->state, p->def.name, to, b, sizeof(b)) == 0)
		(void)rename(a, b);
}
