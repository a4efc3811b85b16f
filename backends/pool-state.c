/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Pool definitions and where they live: the definition JSON (written with
 * json-c, read with pool-parse.c), the state directory with its
 * lock, and loading, defining and saving pools.
 */
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include <json-c/json.h>

#include "pool-int.h"
#include "pool-parse.h"

/* ---- Definition JSON ------------------------------------------------------ */

/*
 * Member @key of @obj: @val (taken; NULL when json-c ran out of memory). Returns
 * false when anything is missing, so that one check covers a whole definition.
 */
static bool obj_add(struct json_object *obj, const char *key, struct json_object *val)
{
	if (!obj || !val || json_object_object_add(obj, key, val) < 0) {
		json_object_put(val);
		return false;
	}
	return true;
}

/* String member @key unless @val is empty: the definition leaves out what is not set. */
static bool obj_add_str(struct json_object *obj, const char *key, const char *val)
{
	return !val[0] || obj_add(obj, key, json_object_new_string(val));
}

/*
 * The kernel's id of this boot ("" if unknown). A pool is active only in
 * the boot that started it: vstor has no daemon whose exit would stop it,
 * so "active" is stored with the boot id, and a pool of an earlier boot
 * reads as inactive (vstor autostart then starts the autostart ones).
 */
static const char *boot_id(void)
{
	static char id[40];
	static bool done;
	FILE *f;

	if (done)
		return id;
	done = true;
	f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (f) {
		if (!fgets(id, sizeof(id), f))
			id[0] = '\0';
		fclose(f);
	}
	id[strcspn(id, "\n")] = '\0';
	return id;
}

char *vs_pool_def_to_json(const struct vs_pool_def *def, bool active)
{
	bool has_source = def->source_host[0] || def->source_path[0] || def->nb_source_devs ||
			  def->source_name[0] || def->source_format[0] || def->initiator_iqn[0];
	struct json_object *root = json_object_new_object(), *o;
	bool ok = root != NULL;
	char *text = NULL;

	ok = ok && obj_add(root, "version", json_object_new_int64(VS_POOL_STATE_VERSION));
	ok = ok && obj_add_str(root, "name", def->name) && obj_add_str(root, "type", def->type) &&
	     obj_add_str(root, "uuid", def->uuid) &&
	     obj_add(root, "autostart", json_object_new_boolean(def->autostart)) &&
	     obj_add(root, "active", json_object_new_boolean(active)) &&
	     (!active || obj_add_str(root, "boot_id", boot_id())) &&
	     obj_add_str(root, "target", def->target);
	if (ok && has_source) {
		o = json_object_new_object();
		ok = obj_add(root, "source", o) && obj_add_str(o, "host", def->source_host) &&
		     (!def->source_port ||
		      obj_add(o, "port", json_object_new_int64(def->source_port))) &&
		     obj_add_str(o, "path", def->source_path);
		if (ok && def->nb_source_devs) {
			struct json_object *devs = json_object_new_array();

			ok = obj_add(o, "devices", devs);
			for (unsigned i = 0; ok && i < def->nb_source_devs; i++) {
				struct json_object *d = json_object_new_string(def->source_devs[i]);

				ok = d && json_object_array_add(devs, d) == 0;
				if (!ok)
					json_object_put(d);
			}
		}
		ok = ok && obj_add_str(o, "name", def->source_name) &&
		     obj_add_str(o, "format", def->source_format) &&
		     obj_add_str(o, "initiator", def->initiator_iqn);
	}
	if (ok && def->auth_type[0]) {
		o = json_object_new_object();
		ok = obj_add(root, "auth", o) && obj_add_str(o, "type", def->auth_type) &&
		     obj_add_str(o, "username", def->auth_username) &&
		     obj_add_str(o, "secret_file", def->auth_secret_file);
	}
	if (ok && (def->perm_mode[0] || def->perm_owner[0] || def->perm_group[0])) {
		o = json_object_new_object();
		ok = obj_add(root, "permissions", o) && obj_add_str(o, "mode", def->perm_mode) &&
		     obj_add_str(o, "owner", def->perm_owner) &&
		     obj_add_str(o, "group", def->perm_group);
	}
	if (ok && def->nb_extra) {
		o = json_object_new_object();
		ok = obj_add(root, "extra", o);
		for (unsigned i = 0; ok && i < def->nb_extra; i++)
			ok = obj_add_str(o, def->extra[i].key, def->extra[i].value);
	}
	/*
	 * json-c writes bytes >= 0x80 as they are: names and paths are bytes, not
	 * necessarily UTF-8, and come back unchanged.
	 */
	if (ok && asprintf(&text, "%s\n",
			   json_object_to_json_string_ext(
				   root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						 JSON_C_TO_STRING_NOSLASHESCAPE)) < 0)
		text = NULL;
	json_object_put(root);
	return text;
}

/* Copy string member @key of @obj into @dst; missing is fine. */
static int json_take_str(const struct pj_value *obj, const char *key, char *dst, size_t dstsz,
			 const char *what, struct vs_error *err)
{
	const struct pj_value *v = pj_get(obj, key);

	if (!v)
		return 0;
	if (v->type != PJ_STR)
		return vs_error_set(err, -EINVAL, "%s: \"%s\" must be a string", what, key);
	if (vs_pool_strcpy(dst, dstsz, v->str) < 0)
		return vs_error_set(err, -EINVAL, "%s: \"%s\" is too long", what, key);
	return 0;
}

/* An owner or group id: a string ("107", "-1") or an integer (107, -1). */
static int json_take_id(const struct pj_value *obj, const char *key, char *dst, size_t dstsz,
			const char *what, struct vs_error *err)
{
	const struct pj_value *v = pj_get(obj, key);

	if (v && v->type == PJ_INT) {
		snprintf(dst, dstsz, "%lld", (long long)v->i);
		return 0;
	}
	return json_take_str(obj, key, dst, dstsz, what, err);
}

static int json_check_keys(const struct pj_value *obj, const char *const *known, const char *where,
			   const char *what, struct vs_error *err)
{
	if (obj->type != PJ_OBJ)
		return vs_error_set(err, -EINVAL, "%s: %s must be an object", what, where);
	for (size_t i = 0; i < obj->n; i++) {
		size_t k;

		for (k = 0; known[k]; k++)
			if (!strcmp(obj->keys[i], known[k]))
				break;
		if (!known[k])
			return vs_error_set(err, -EINVAL, "%s: unknown member \"%s\" in %s", what,
					    obj->keys[i], where);
	}
	return 0;
}

/* A string member of a definition: its key and where it goes in struct vs_pool_def. */
struct def_str {
	const char *key;
	size_t off, size;
	bool id; /* an owner or group id (json_take_id) */
};

#define DEF_STR(k, field, is_id)                                                   \
	{                                                                          \
		.key = (k), .off = offsetof(struct vs_pool_def, field),            \
		.size = sizeof(((struct vs_pool_def *)NULL)->field), .id = (is_id) \
	}

/* The string members @strs (ended by a NULL key) of @obj into @def. */
static int json_take_strs(const struct pj_value *obj, const struct def_str *strs,
			  struct vs_pool_def *def, const char *what, struct vs_error *err)
{
	for (const struct def_str *f = strs; f->key; f++) {
		char *dst = (char *)def + f->off;
		int ret = f->id ? json_take_id(obj, f->key, dst, f->size, what, err) :
				  json_take_str(obj, f->key, dst, f->size, what, err);

		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The object member @key (@obj, NULL when absent): only @known members, @strs into @def. */
static int json_take_obj(const struct pj_value *obj, const char *key, const char *const *known,
			 const struct def_str *strs, struct vs_pool_def *def, const char *what,
			 struct vs_error *err)
{
	char where[32];
	int ret;

	if (!obj)
		return 0;
	snprintf(where, sizeof(where), "\"%s\"", key);
	ret = json_check_keys(obj, known, where, what, err);
	return ret < 0 ? ret : json_take_strs(obj, strs, def, what, err);
}

static int def_from_json(struct vs_pool_def *def, const char *text, const char *what, bool *active,
			 struct vs_error *err)
{
	static const struct def_str top_strs[] = { DEF_STR("name", name, false),
						   DEF_STR("type", type, false),
						   DEF_STR("uuid", uuid, false),
						   DEF_STR("target", target, false),
						   { NULL } };
	static const struct def_str src_strs[] = {
		DEF_STR("host", source_host, false),	    DEF_STR("path", source_path, false),
		DEF_STR("name", source_name, false),	    DEF_STR("format", source_format, false),
		DEF_STR("initiator", initiator_iqn, false), { NULL }
	};
	static const struct def_str auth_strs[] = { DEF_STR("type", auth_type, false),
						    DEF_STR("username", auth_username, false),
						    DEF_STR("secret_file", auth_secret_file, false),
						    { NULL } };
	static const struct def_str perm_strs[] = { DEF_STR("mode", perm_mode, false),
						    DEF_STR("owner", perm_owner, true),
						    DEF_STR("group", perm_group, true),
						    { NULL } };
	static const char *const top_keys[] = { "version",   "name",   "type",	  "uuid",
						"autostart", "active", "target",  "source",
						"auth",	     "extra",  "boot_id", "permissions",
						NULL };
	static const char *const src_keys[] = { "host", "port",	  "path",      "devices",
						"name", "format", "initiator", NULL };
	static const char *const auth_keys[] = { "type", "username", "secret_file", NULL };
	static const char *const perm_keys[] = { "mode", "owner", "group", NULL };
	const struct pj_value *v, *src, *extra;
	struct pj_value *root = NULL;
	char msg[256];
	int ret;

	if (pj_parse(text, &root, msg, sizeof(msg)) < 0)
		return vs_error_set(err, -EINVAL, "%s: invalid JSON: %s", what, msg);
	ret = json_check_keys(root, top_keys, "the definition", what, err);
	if (ret < 0)
		goto out;
	v = pj_get(root, "version");
	if (!v || v->type != PJ_INT) {
		ret = vs_error_set(err, -EINVAL, "%s: \"version\" (an integer) is missing", what);
		goto out;
	}
	if (v->i != VS_POOL_STATE_VERSION) {
		ret = vs_error_set(
			err, -EINVAL,
			"%s: version %lld is not supported (this vstor reads version %d)", what,
			(long long)v->i, VS_POOL_STATE_VERSION);
		goto out;
	}
	ret = json_take_strs(root, top_strs, def, what, err);
	if (ret < 0)
		goto out;
	v = pj_get(root, "autostart");
	if (v && v->type != PJ_BOOL) {
		ret = vs_error_set(err, -EINVAL, "%s: \"autostart\" must be true or false", what);
		goto out;
	}
	def->autostart = v && v->b;
	v = pj_get(root, "active");
	if (v && v->type != PJ_BOOL) {
		ret = vs_error_set(err, -EINVAL, "%s: \"active\" must be true or false", what);
		goto out;
	}
	if (active) {
		const struct pj_value *b = pj_get(root, "boot_id");

		/* Started in an earlier boot: not active any more. */
		*active = v && v->b &&
			  (!b || b->type != PJ_STR || !boot_id()[0] || !strcmp(b->str, boot_id()));
	}
	src = pj_get(root, "source");
	ret = json_take_obj(src, "source", src_keys, src_strs, def, what, err);
	if (ret < 0)
		goto out;
	if (src) {
		v = pj_get(src, "port");
		if (v) {
			if (v->type != PJ_INT || v->i < 0 || v->i > 65535) {
				ret = vs_error_set(err, -EINVAL,
						   "%s: \"port\" must be an integer 0..65535",
						   what);
				goto out;
			}
			def->source_port = (unsigned)v->i;
		}
		v = pj_get(src, "devices");
		if (v) {
			if (v->type != PJ_ARR || v->n > VS_POOL_MAX_DEVS) {
				ret = vs_error_set(err, -EINVAL,
						   "%s: \"devices\" must be an array of at most %d "
						   "strings",
						   what, VS_POOL_MAX_DEVS);
				goto out;
			}
			for (size_t i = 0; i < v->n; i++) {
				if (v->items[i]->type != PJ_STR ||
				    vs_pool_strcpy(def->source_devs[i], sizeof(def->source_devs[i]),
						   v->items[i]->str) < 0) {
					ret = vs_error_set(err, -EINVAL,
							   "%s: bad entry in \"devices\"", what);
					goto out;
				}
			}
			def->nb_source_devs = (unsigned)v->n;
		}
	}
	ret = json_take_obj(pj_get(root, "auth"), "auth", auth_keys, auth_strs, def, what, err);
	if (ret == 0)
		ret = json_take_obj(pj_get(root, "permissions"), "permissions", perm_keys,
				    perm_strs, def, what, err);
	if (ret < 0)
		goto out;
	extra = pj_get(root, "extra");
	if (extra) {
		if (extra->type != PJ_OBJ) {
			ret = vs_error_set(err, -EINVAL, "%s: \"extra\" must be an object", what);
			goto out;
		}
		for (size_t i = 0; i < extra->n; i++) {
			if (extra->items[i]->type != PJ_STR ||
			    vs_pool_def_set_extra(def, extra->keys[i], extra->items[i]->str) < 0) {
				ret = vs_error_set(err, -EINVAL, "%s: bad \"extra\" member \"%s\"",
						   what, extra->keys[i]);
				goto out;
			}
		}
	}
	ret = 0;
out:
	pj_free(root);
	return ret;
}

int vs_pool_def_parse(struct vs_pool_def *def, const char *text, const char *what, bool *active,
		      struct vs_error *err)
{
	const char *c = text;

	memset(def, 0, sizeof(*def));
	if (active)
		*active = false;
	if (!strncmp(c, "\xef\xbb\xbf", 3))
		c += 3;
	while (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r')
		c++;
	if (*c == '{')
		return def_from_json(def, text, what, active, err);
	if (*c == '<')
		return vs_pool_def_from_xml(def, text, what, err);
	return vs_error_set(err, -EINVAL, "%s: neither a JSON nor an XML pool definition", what);
}

/* ---- The state directory -------------------------------------------------- */

int vs_pool_state_dir(char *out, size_t outsz, const char *override)
{
	const char *env = getenv("VSTOR_STATE_DIR");
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	int n;

	if (override && override[0])
		n = snprintf(out, outsz, "%s", override);
	else if (env && env[0])
		n = snprintf(out, outsz, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(out, outsz, "/var/lib/vstor");
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, outsz, "%s/vstor", xdg);
	else if (home && home[0])
		n = snprintf(out, outsz, "%s/.local/share/vstor", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

int pool_mkdir_p(const char *path, mode_t mode)
{
	char tmp[VS_POOL_PATH_MAX];

	if (vs_pool_strcpy(tmp, sizeof(tmp), path) < 0)
		return -ENAMETOOLONG;
	for (char *s = tmp + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int pool_state_file(const struct vs_pool_state *st, char *out, size_t outsz, const char *sub,
		    const char *name, const char *suffix)
{
	const char *parts[] = { st->path, "/", sub, name ? "/" : "", name ? name : "", suffix };
	size_t len = 0;

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		size_t l = strlen(parts[i]);

		if (len + l >= outsz)
			return -ENAMETOOLONG;
		memcpy(out + len, parts[i], l);
		len += l;
	}
	out[len] = '\0';
	return 0;
}

int vs_pool_state_open(struct vs_pool_state **out, const char *dir, bool exclusive,
		       struct vs_error *err)
{
	struct vs_pool_state *st = calloc(1, sizeof(*st));
	char path[VS_POOL_PATH_MAX];
	int ret;

	if (!st)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	st->lock_fd = -1;
	if (vs_pool_strcpy(st->path, sizeof(st->path), dir) < 0) {
		ret = vs_error_set(err, -ENAMETOOLONG, "State directory name too long");
		goto fail;
	}
	ret = pool_mkdir_p(dir, 0755);
	if (ret == 0 && pool_state_file(st, path, sizeof(path), "pools", NULL, "") == 0)
		ret = pool_mkdir_p(path, 0755);
	if (ret == 0 && pool_state_file(st, path, sizeof(path), "leases", NULL, "") == 0)
		ret = pool_mkdir_p(path, 0755);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Cannot create the state directory '%s'", dir);
		goto fail;
	}
	pool_state_file(st, path, sizeof(path), "lock", NULL, "");
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (st->lock_fd < 0) {
		ret = vs_error_setf_errno(err, -errno, "Cannot open '%s'", path);
		goto fail;
	}
	while (flock(st->lock_fd, exclusive ? LOCK_EX : LOCK_SH) < 0) {
		if (errno != EINTR) {
			ret = vs_error_setf_errno(err, -errno, "Cannot lock '%s'", path);
			goto fail;
		}
	}
	*out = st;
	return 0;
fail:
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st);
	return ret;
}

void vs_pool_state_close(struct vs_pool_state *st)
{
	if (!st)
		return;
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* drops the flock */
	free(st);
}

const char *vs_pool_state_path(const struct vs_pool_state *st)
{
	return st->path;
}

static int names_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void vs_pool_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int vs_pool_state_list(struct vs_pool_state *st, char ***names, size_t *n, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct dirent *de;
	char **v = NULL;
	size_t cnt = 0;
	DIR *d;

	pool_state_file(st, path, sizeof(path), "pools", NULL, "");
	d = opendir(path);
	if (!d)
		return vs_error_setf_errno(err, -errno, "Cannot read '%s'", path);
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char **nv;

		if (len <= 5 || strcmp(de->d_name + len - 5, ".json") || de->d_name[0] == '.')
			continue;
		nv = realloc(v, (cnt + 1) * sizeof(*v));
		if (!nv || !(nv[cnt] = strndup(de->d_name, len - 5))) {
			closedir(d);
			vs_pool_names_free(nv ? nv : v, cnt);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
		v = nv;
		cnt++;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), names_cmp);
	*names = v;
	*n = cnt;
	return 0;
}

static int read_text(const char *path, char **out, struct vs_error *err)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f)
		return -errno;
	for (;;) {
		size_t got;

		if (cap - len < 4097) {
			char *nb;

			cap = cap ? cap * 2 : 8192;
			if (cap > 16 << 20) {
				free(buf);
				fclose(f);
				return vs_error_set(err, -EFBIG, "'%s' is too large", path);
			}
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return vs_error_set(err, -ENOMEM, "Out of memory");
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return vs_error_setf_errno(err, -EIO, "Cannot read '%s'", path);
	}
	fclose(f);
	buf[len] = '\0';
	if (strlen(buf) != len) {
		free(buf);
		return vs_error_set(err, -EINVAL, "'%s' contains a NUL byte", path);
	}
	*out = buf;
	return 0;
}

int vs_pool_read_file(const char *path, char **out, struct vs_error *err)
{
	int ret = read_text(path, out, err);

	if (ret < 0 && !(err && err->code))
		vs_error_setf_errno(err, ret, "Cannot read '%s'", path);
	return ret;
}

int vs_pool_read_secret(const char *path, char *out, size_t outsz, struct vs_error *err)
{
	struct stat st;
	ssize_t n;
	size_t len;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot read the secret file '%s'", path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return vs_error_set(err, -EINVAL, "The secret file '%s' is not a regular file",
				    path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return vs_error_set(
			err, -EPERM,
			"The secret file '%s' is accessible to other users (mode %03o): "
			"chmod 600 it",
			path, (unsigned)(st.st_mode & 0777));
	}
	n = read(fd, out, outsz);
	close(fd);
	if (n < 0)
		return vs_error_setf_errno(err, -errno, "Cannot read the secret file '%s'", path);
	len = (size_t)n;
	if (len == outsz)
		return vs_error_set(err, -E2BIG, "The secret in '%s' is too long", path);
	if (len && out[len - 1] == '\n')
		len--;
	if (len && out[len - 1] == '\r')
		len--;
	out[len] = '\0';
	if (!len || strlen(out) != len || strchr(out, '\n'))
		return vs_error_set(err, -EINVAL,
				    "The secret file '%s' must hold the secret on one line", path);
	return 0;
}

static int write_atomic(const char *path, const char *text, struct vs_error *err)
{
	char tmp[VS_POOL_PATH_MAX + 8];
	size_t len = strlen(text);
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return vs_error_setf_errno(err, -errno, "Cannot write '%s'", tmp);
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)n;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0) {
		unlink(tmp);
		return vs_error_setf_errno(err, ret, "Cannot write '%s'", path);
	}
	return 0;
}

/* A fresh random UUID in @out (37 bytes), spelled as libvirt spells it. */
static void gen_uuid(char *out)
{
	uuid_t u;

	uuid_generate_random(u);
	uuid_unparse_lower(u, out);
}

/*
 * A UUID the user gave (a definition's <uuid>): 32 hex digits, dashes and
 * spaces anywhere as libvirt allows them; refused unless libuuid parses the
 * canonical form, then spelled in lower case, so that pool-name and the
 * duplicate check compare one spelling.
 */
static int check_uuid(char *uuid, struct vs_error *err)
{
	static const unsigned dash_after[] = { 8, 12, 16, 20 };
	char canon[37];
	unsigned nhex = 0, k = 0, d = 0;
	uuid_t u;

	for (const char *c = uuid; *c; c++) {
		if (*c == '-' || *c == ' ')
			continue;
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') ||
		      (*c >= 'A' && *c <= 'F')) ||
		    nhex == 32)
			goto bad;
		if (d < 4 && nhex == dash_after[d]) {
			canon[k++] = '-';
			d++;
		}
		canon[k++] = *c;
		nhex++;
	}
	canon[k] = '\0';
	if (nhex != 32 || uuid_parse(canon, u) < 0)
		goto bad;
	uuid_unparse_lower(u, uuid);
	return 0;
bad:
	return vs_error_set(err, -EINVAL, "XML error: malformed uuid element '%s'", uuid);
}

int pool_file(const struct vs_pool_state *st, const char *name, char *out, size_t outsz)
{
	return pool_state_file(st, out, outsz, "pools", name, ".json");
}

int pool_next_file(const struct vs_pool_state *st, const char *name, char *out, size_t outsz)
{
	return pool_state_file(st, out, outsz, "next", name, ".json");
}

int vs_pool_load_next(struct vs_pool_state *st, const char *name, struct vs_pool_def *def,
		      struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	char *text = NULL;
	int ret;

	if (pool_next_file(st, name, path, sizeof(path)) < 0)
		return -ENOENT;
	ret = read_text(path, &text, err);
	if (ret == -ENOENT)
		return ret;
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot read '%s'", path);
	ret = vs_pool_def_parse(def, text, path, NULL, err);
	free(text);
	return ret;
}

/*
 * Define @def over the pool of the same name, as libvirt redefines: only
 * with the same uuid, the autostart flag kept; an inactive pool
 * takes the definition now, an active one at its next stop (kept in
 * next/NAME.json until then; pool-dumpxml --inactive shows it).
 */
static int pool_redefine(struct vs_pool_state *st, struct vs_pool_def *def, const char *path,
			 struct vs_error *err)
{
	char next[VS_POOL_PATH_MAX];
	struct vs_pool *old;
	char *json;
	int ret = vs_pool_load(st, def->name, &old, err);

	if (ret < 0)
		return ret;
	/* libvirt gives a definition without a uuid a new one: that one differs too. */
	if (!def->uuid[0] || check_uuid(def->uuid, NULL) < 0 || strcmp(def->uuid, old->def.uuid)) {
		ret = vs_error_set(err, -EEXIST,
				   "operation failed: pool '%s' already exists with uuid %s",
				   def->name, old->def.uuid);
		vs_pool_free(old);
		return ret;
	}
	memcpy(def->uuid, old->def.uuid, sizeof(def->uuid));
	def->autostart = old->def.autostart;
	if (pool_next_file(st, def->name, next, sizeof(next)) < 0) {
		vs_pool_free(old);
		return vs_error_set(err, -ENAMETOOLONG, "Pool name too long");
	}
	json = vs_pool_def_to_json(def, false);
	if (!json) {
		vs_pool_free(old);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	if (old->active) {
		char dir[VS_POOL_PATH_MAX];

		pool_state_file(st, dir, sizeof(dir), "next", NULL, "");
		ret = pool_mkdir_p(dir, 0755);
		if (ret < 0)
			ret = vs_error_setf_errno(err, ret, "Cannot create '%s'", dir);
		else
			ret = write_atomic(next, json, err);
	} else {
		ret = write_atomic(path, json, err);
		if (ret == 0)
			(void)unlink(next);
	}
	free(json);
	vs_pool_free(old);
	return ret;
}

int vs_pool_apply_next(struct vs_pool *p, struct vs_error *err)
{
	char next[VS_POOL_PATH_MAX];
	struct vs_pool_def *def;
	struct vs_error e2 = { 0 };
	int ret;

	if (p->active || pool_next_file(p->state, p->def.name, next, sizeof(next)) < 0)
		return 0;
	def = calloc(1, sizeof(*def));
	if (!def)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = vs_pool_load_next(p->state, p->def.name, def, &e2);
	if (ret == -ENOENT) {
		free(def);
		return 0;
	}
	if (ret == 0 && !vs_pool_backend_find(def->type))
		ret = vs_error_set(&e2, -EINVAL, "unknown storage pool type '%s'", def->type);
	if (ret < 0) {
		free(def);
		return vs_error_set(err, ret, "%s: the next definition: %s", p->def.name, e2.msg);
	}
	def->autostart = p->def.autostart;
	memcpy(def->uuid, p->def.uuid, sizeof(def->uuid));
	if (p->backend->detach && p->attached) {
		p->backend->detach(p);
		p->attached = false;
	}
	p->def = *def;
	p->backend = vs_pool_backend_find(def->type);
	free(def);
	ret = vs_pool_save(p, err);
	if (ret == 0)
		(void)unlink(next);
	return ret;
}

int vs_pool_define(struct vs_pool_state *st, struct vs_pool_def *def, struct vs_error *err)
{
	const struct vs_pool_backend *be;
	char path[VS_POOL_PATH_MAX];
	char **names = NULL;
	size_t n = 0;
	char *json;
	int ret;

	ret = vs_pool_check_name(def->name, "Pool", err);
	if (ret < 0)
		return ret;
	/* One spelling of the target, so that volume paths compare equal. */
	for (size_t len = strlen(def->target); len > 1 && def->target[len - 1] == '/';)
		def->target[--len] = '\0';
	be = vs_pool_backend_find(def->type);
	if (!be) {
		const char *const *types = vs_pool_backend_types();
		char list[256] = "";

		for (size_t i = 0; types[i]; i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 i ? ", " : "", types[i]);
		return vs_error_set(err, -EINVAL, "unknown storage pool type '%s' (known: %s)",
				    def->type, list);
	}
	if (def->auth_type[0] && strcmp(def->auth_type, "chap") && strcmp(def->auth_type, "ceph"))
		return vs_error_set(err, -EINVAL,
				    "unsupported auth type '%s' (only 'chap', 'ceph')",
				    def->auth_type);
	if (be->check_def) {
		ret = be->check_def(def, err);
		if (ret < 0)
			return ret;
	}
	{
		uint32_t m, o, g;
		bool so, sg;

		ret = vs_pool_def_perms(def, &m, &o, &so, &g, &sg, err);
		if (ret < 0)
			return ret;
	}
	if (pool_file(st, def->name, path, sizeof(path)) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "Pool name too long");
	if (access(path, F_OK) == 0)
		return pool_redefine(st, def, path, err);
	if (!def->uuid[0])
		gen_uuid(def->uuid);
	else if (check_uuid(def->uuid, err) < 0)
		return err->code;
	ret = vs_pool_state_list(st, &names, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n && def->uuid[0]; i++) {
		struct vs_pool *other;
		struct vs_error e2 = { 0 };

		if (vs_pool_load(st, names[i], &other, &e2) < 0)
			continue;
		if (!strcmp(other->def.uuid, def->uuid))
			ret = vs_error_set(err, -EEXIST, "pool '%s' already has uuid %s",
					   other->def.name, def->uuid);
		vs_pool_free(other);
		if (ret < 0)
			break;
	}
	vs_pool_names_free(names, n);
	if (ret < 0)
		return ret;
	json = vs_pool_def_to_json(def, false);
	if (!json)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = write_atomic(path, json, err);
	free(json);
	return ret;
}

/* virsh's "Storage pool not found" error for @name; returns -ENOENT. */
static int pool_not_found(struct vs_error *err, const char *name)
{
	return vs_error_set(err, -ENOENT,
			    "Storage pool not found: no storage pool with matching name '%s'",
			    name);
}

int vs_pool_load(struct vs_pool_state *st, const char *name, struct vs_pool **out,
		 struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_pool *p;
	char *text = NULL;
	int ret;

	if (vs_pool_check_name(name, "Pool", NULL) < 0 ||
	    pool_file(st, name, path, sizeof(path)) < 0)
		return pool_not_found(err, name);
	ret = read_text(path, &text, err);
	if (ret == -ENOENT)
		return pool_not_found(err, name);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot read '%s'", path);
	p = calloc(1, sizeof(*p));
	if (!p) {
		free(text);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = vs_pool_def_parse(&p->def, text, path, &p->active, err);
	free(text);
	if (ret == 0 && strcmp(p->def.name, name))
		ret = vs_error_set(err, -EINVAL, "%s: names pool '%s'", path, p->def.name);
	if (ret == 0 && !(p->backend = vs_pool_backend_find(p->def.type)))
		ret = vs_error_set(err, -EINVAL,
				   "%s: storage pool type '%s' is not supported by this build",
				   path, p->def.type);
	if (ret < 0) {
		free(p);
		return ret;
	}
	p->state = st;
	*out = p;
	return 0;
}

void vs_pool_free(struct vs_pool *p)
{
	if (!p)
		return;
	if (p->attached && p->backend->detach)
		p->backend->detach(p);
	free(p);
}

int vs_pool_save(struct vs_pool *p, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	char *json;
	int ret;

	if (pool_file(p->state, p->def.name, path, sizeof(path)) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "Pool name too long");
	json = vs_pool_def_to_json(&p->def, p->active);
	if (!json)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = write_atomic(path, json, err);
	free(json);
	return ret;
}
