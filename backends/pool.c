/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic pool layer: definitions and their JSON, the state directory
 * and its lock, the checks every operation makes before it calls a backend,
 * volume leases, and the vol:POOL/VOLUME resolver.
 */
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "driver.h"
#include "json.h"
#include "lock.h"
#include "pool-int.h"
#include "pool-parse.h"

struct vs_pool_state {
	char path[VS_POOL_PATH_MAX];
	int lock_fd; /* -1 without lock */
};

static void build_cleanup(struct vs_pool *p);

int vs_pool_strcpy(char *dst, size_t dstsz, const char *src)
{
	size_t len = strlen(src);

	if (len >= dstsz)
		return -ENAMETOOLONG;
	memcpy(dst, src, len + 1);
	return 0;
}

/* ---- Names, extras, lists ----------------------------------------------- */

int vs_pool_check_name(const char *name, const char *what, struct vs_error *err)
{
	size_t len = strlen(name);

	if (!len)
		return vs_error_set(err, -EINVAL, "%s name must not be empty", what);
	if (len > VS_POOL_NAME_MAX)
		return vs_error_set(err, -EINVAL, "%s name '%.32s...' is longer than %d bytes",
				    what, name, VS_POOL_NAME_MAX);
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return vs_error_set(err, -EINVAL, "%s name '%s' is not allowed", what, name);
	if (name[0] == '-')
		return vs_error_set(err, -EINVAL, "%s name '%s' must not start with '-'", what,
				    name);
	for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
		if (*c == '/')
			return vs_error_set(err, -EINVAL, "%s name '%s' must not contain '/'", what,
					    name);
		if (*c < 0x20 || *c == 0x7f)
			return vs_error_set(err, -EINVAL,
					    "%s name must not contain control characters", what);
	}
	return 0;
}

const char *vs_pool_def_extra(const struct vs_pool_def *def, const char *key)
{
	for (unsigned i = 0; i < def->nb_extra; i++)
		if (!strcmp(def->extra[i].key, key))
			return def->extra[i].value;
	return NULL;
}

int vs_pool_def_set_extra(struct vs_pool_def *def, const char *key, const char *value)
{
	unsigned i;

	for (i = 0; i < def->nb_extra; i++)
		if (!strcmp(def->extra[i].key, key))
			break;
	if (i == VS_POOL_MAX_EXTRA)
		return -ENOSPC;
	if (strlen(key) >= sizeof(def->extra[i].key) ||
	    strlen(value) >= sizeof(def->extra[i].value))
		return -ENAMETOOLONG;
	strcpy(def->extra[i].key, key);
	strcpy(def->extra[i].value, value);
	if (i == def->nb_extra)
		def->nb_extra++;
	return 0;
}

const char *vs_vol_type_name(enum vs_vol_type t)
{
	switch (t) {
	case VS_VOL_FILE:
		return "file";
	case VS_VOL_BLOCK:
		return "block";
	case VS_VOL_NETWORK:
		return "network";
	case VS_VOL_MAPPED:
		return "mapped";
	}
	return "unknown";
}

int vs_pool_parse_mode(const char *s, uint32_t *mode)
{
	char *end;
	unsigned long v;

	if (s[0] < '0' || s[0] > '7') /* no sign, no blank: strtoul would take them */
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno || *end || v > 07777)
		return -EINVAL;
	*mode = (uint32_t)v;
	return 0;
}

int vs_pool_parse_id(const char *s, uint32_t *id, bool *given)
{
	char *end;
	unsigned long long v;

	*given = false;
	if (!s[0] || !strcmp(s, "-1"))
		return 0;
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v >= UINT32_MAX)
		return -EINVAL;
	*id = (uint32_t)v;
	*given = true;
	return 0;
}

/* The pool's <permissions>, checked; "not given" as 0 / false. */
int vs_pool_def_perms(const struct vs_pool_def *def, uint32_t *mode, uint32_t *owner,
		      bool *set_owner, uint32_t *group, bool *set_group, struct vs_error *err)
{
	*mode = 0;
	if (def->perm_mode[0] && vs_pool_parse_mode(def->perm_mode, mode) < 0)
		return vs_error_set(err, -EINVAL,
				    "pool '%s': permission mode '%s' is not an octal mode",
				    def->name, def->perm_mode);
	if (vs_pool_parse_id(def->perm_owner, owner, set_owner) < 0)
		return vs_error_set(err, -EINVAL, "pool '%s': owner '%s' is not a numeric id",
				    def->name, def->perm_owner);
	if (vs_pool_parse_id(def->perm_group, group, set_group) < 0)
		return vs_error_set(err, -EINVAL, "pool '%s': group '%s' is not a numeric id",
				    def->name, def->perm_group);
	return 0;
}

struct vs_vol_info *vs_vol_list_add(struct vs_vol_list *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct vs_vol_info *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		l->v = v;
		l->cap = cap;
	}
	memset(&l->v[l->n], 0, sizeof(l->v[0]));
	return &l->v[l->n++];
}

static int vol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vs_vol_info *)a)->name, ((const struct vs_vol_info *)b)->name);
}

void vs_vol_list_sort(struct vs_vol_list *l)
{
	if (l->n)
		qsort(l->v, l->n, sizeof(l->v[0]), vol_cmp);
}

void vs_vol_list_free(struct vs_vol_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* ---- Definition JSON ------------------------------------------------------ */

/* Member @key unless @val is empty: the definition leaves out what is not set. */
static void json_str_set(struct json_writer *w, const char *key, const char *val)
{
	if (val[0])
		json_str(w, key, val);
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
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct json_writer w;
	bool has_source = def->source_host[0] || def->source_path[0] || def->nb_source_devs ||
			  def->source_name[0] || def->source_format[0] || def->initiator_iqn[0];

	if (!f)
		return NULL;
	json_init(&w, f, true);
	w.raw_bytes = true; /* names and paths are bytes: kept as they are */
	json_obj_begin(&w, NULL);
	json_int(&w, "version", VS_POOL_STATE_VERSION);
	json_str_set(&w, "name", def->name);
	json_str_set(&w, "type", def->type);
	json_str_set(&w, "uuid", def->uuid);
	json_bool(&w, "autostart", def->autostart);
	json_bool(&w, "active", active);
	if (active)
		json_str_set(&w, "boot_id", boot_id());
	json_str_set(&w, "target", def->target);
	if (has_source) {
		json_obj_begin(&w, "source");
		json_str_set(&w, "host", def->source_host);
		if (def->source_port)
			json_uint(&w, "port", def->source_port);
		json_str_set(&w, "path", def->source_path);
		if (def->nb_source_devs) {
			json_arr_begin(&w, "devices");
			for (unsigned i = 0; i < def->nb_source_devs; i++)
				json_str(&w, NULL, def->source_devs[i]);
			json_arr_end(&w);
		}
		json_str_set(&w, "name", def->source_name);
		json_str_set(&w, "format", def->source_format);
		json_str_set(&w, "initiator", def->initiator_iqn);
		json_obj_end(&w);
	}
	if (def->auth_type[0]) {
		json_obj_begin(&w, "auth");
		json_str_set(&w, "type", def->auth_type);
		json_str_set(&w, "username", def->auth_username);
		json_str_set(&w, "secret_file", def->auth_secret_file);
		json_obj_end(&w);
	}
	if (def->perm_mode[0] || def->perm_owner[0] || def->perm_group[0]) {
		json_obj_begin(&w, "permissions");
		json_str_set(&w, "mode", def->perm_mode);
		json_str_set(&w, "owner", def->perm_owner);
		json_str_set(&w, "group", def->perm_group);
		json_obj_end(&w);
	}
	if (def->nb_extra) {
		json_obj_begin(&w, "extra");
		for (unsigned i = 0; i < def->nb_extra; i++)
			json_str_set(&w, def->extra[i].key, def->extra[i].value);
		json_obj_end(&w);
	}
	json_obj_end(&w);
	fputc('\n', f);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
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

static int def_from_json(struct vs_pool_def *def, const char *text, const char *what, bool *active,
			 struct vs_error *err)
{
	static const char *const top_keys[] = { "version",   "name",   "type",	  "uuid",
						"autostart", "active", "target",  "source",
						"auth",	     "extra",  "boot_id", "permissions",
						NULL };
	static const char *const src_keys[] = { "host", "port",	  "path",      "devices",
						"name", "format", "initiator", NULL };
	static const char *const auth_keys[] = { "type", "username", "secret_file", NULL };
	static const char *const perm_keys[] = { "mode", "owner", "group", NULL };
	const struct pj_value *v, *src, *auth, *extra, *perms;
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
	if ((ret = json_take_str(root, "name", def->name, sizeof(def->name), what, err)) < 0 ||
	    (ret = json_take_str(root, "type", def->type, sizeof(def->type), what, err)) < 0 ||
	    (ret = json_take_str(root, "uuid", def->uuid, sizeof(def->uuid), what, err)) < 0 ||
	    (ret = json_take_str(root, "target", def->target, sizeof(def->target), what, err)) < 0)
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
	if (src) {
		ret = json_check_keys(src, src_keys, "\"source\"", what, err);
		if (ret < 0)
			goto out;
		if ((ret = json_take_str(src, "host", def->source_host, sizeof(def->source_host),
					 what, err)) < 0 ||
		    (ret = json_take_str(src, "path", def->source_path, sizeof(def->source_path),
					 what, err)) < 0 ||
		    (ret = json_take_str(src, "name", def->source_name, sizeof(def->source_name),
					 what, err)) < 0 ||
		    (ret = json_take_str(src, "format", def->source_format,
					 sizeof(def->source_format), what, err)) < 0 ||
		    (ret = json_take_str(src, "initiator", def->initiator_iqn,
					 sizeof(def->initiator_iqn), what, err)) < 0)
			goto out;
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
	auth = pj_get(root, "auth");
	if (auth) {
		ret = json_check_keys(auth, auth_keys, "\"auth\"", what, err);
		if (ret < 0)
			goto out;
		if ((ret = json_take_str(auth, "type", def->auth_type, sizeof(def->auth_type), what,
					 err)) < 0 ||
		    (ret = json_take_str(auth, "username", def->auth_username,
					 sizeof(def->auth_username), what, err)) < 0 ||
		    (ret = json_take_str(auth, "secret_file", def->auth_secret_file,
					 sizeof(def->auth_secret_file), what, err)) < 0)
			goto out;
	}
	perms = pj_get(root, "permissions");
	if (perms) {
		ret = json_check_keys(perms, perm_keys, "\"permissions\"", what, err);
		if (ret < 0)
			goto out;
		if ((ret = json_take_str(perms, "mode", def->perm_mode, sizeof(def->perm_mode),
					 what, err)) < 0 ||
		    (ret = json_take_id(perms, "owner", def->perm_owner, sizeof(def->perm_owner),
					what, err)) < 0 ||
		    (ret = json_take_id(perms, "group", def->perm_group, sizeof(def->perm_group),
					what, err)) < 0)
			goto out;
	}
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

static int mkdir_p(const char *path, mode_t mode)
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

static int state_file(const struct vs_pool_state *st, char *out, size_t outsz, const char *sub,
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
	ret = mkdir_p(dir, 0755);
	if (ret == 0 && state_file(st, path, sizeof(path), "pools", NULL, "") == 0)
		ret = mkdir_p(path, 0755);
	if (ret == 0 && state_file(st, path, sizeof(path), "leases", NULL, "") == 0)
		ret = mkdir_p(path, 0755);
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Cannot create the state directory '%s'", dir);
		goto fail;
	}
	state_file(st, path, sizeof(path), "lock", NULL, "");
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

	state_file(st, path, sizeof(path), "pools", NULL, "");
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

static void gen_uuid(char *out)
{
	FILE *f = fopen("/proc/sys/kernel/random/uuid", "re");

	out[0] = '\0';
	if (f) {
		if (!fgets(out, 37, f))
			out[0] = '\0';
		fclose(f);
	}
	out[strcspn(out, "\n")] = '\0';
}

static int pool_file(const struct vs_pool_state *st, const char *name, char *out, size_t outsz)
{
	return state_file(st, out, outsz, "pools", name, ".json");
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
	if (def->auth_type[0] && strcmp(def->auth_type, "chap"))
		return vs_error_set(err, -EINVAL, "unsupported auth type '%s' (only 'chap')",
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
		return vs_error_set(err, -EEXIST, "pool '%s' already exists", def->name);
	if (!def->uuid[0])
		gen_uuid(def->uuid);
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

int vs_pool_load(struct vs_pool_state *st, const char *name, struct vs_pool **out,
		 struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_pool *p;
	char *text = NULL;
	int ret;

	if (vs_pool_check_name(name, "Pool", NULL) < 0 ||
	    pool_file(st, name, path, sizeof(path)) < 0)
		return vs_error_set(err, -ENOENT,
				    "Storage pool not found: no storage pool with "
				    "matching name '%s'",
				    name);
	ret = read_text(path, &text, err);
	if (ret == -ENOENT)
		return vs_error_set(err, -ENOENT,
				    "Storage pool not found: no storage pool with "
				    "matching name '%s'",
				    name);
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

/* ---- Pool operations ------------------------------------------------------ */

static int pool_attach(struct vs_pool *p, struct vs_error *err)
{
	int ret;

	if (p->attached || !p->backend->attach)
		return 0;
	ret = p->backend->attach(p, err);
	if (ret < 0)
		return ret;
	p->attached = true;
	return 0;
}

static int need_active(struct vs_pool *p, struct vs_error *err)
{
	if (!p->active)
		return vs_error_set(err, -EINVAL,
				    "Requested operation is not valid: storage pool '%s' is not "
				    "active",
				    p->def.name);
	return pool_attach(p, err);
}

static int need_inactive(struct vs_pool *p, struct vs_error *err)
{
	if (p->active)
		return vs_error_set(err, -EBUSY,
				    "Requested operation is not valid: storage pool '%s' is still "
				    "active",
				    p->def.name);
	return 0;
}

int vs_pool_build(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	int ret;

	if ((flags & VS_POOL_BUILD_OVERWRITE) && (flags & VS_POOL_BUILD_NO_OVERWRITE))
		return vs_error_set(err, -EINVAL,
				    "--overwrite and --no-overwrite are mutually exclusive");
	ret = need_inactive(p, err);
	if (ret < 0)
		return ret;
	if (!p->backend->build)
		return 0;
	ret = pool_attach(p, err);
	return ret < 0 ? ret : p->backend->build(p, flags, err);
}

int vs_pool_start(struct vs_pool *p, struct vs_error *err)
{
	int ret;

	if (p->active)
		return vs_error_set(
			err, -EBUSY,
			"Requested operation is not valid: storage pool '%s' is already "
			"active",
			p->def.name);
	ret = pool_attach(p, err);
	if (ret == 0 && p->backend->start)
		ret = p->backend->start(p, err);
	if (ret < 0)
		return ret;
	p->active = true;
	ret = vs_pool_save(p, err);
	if (ret < 0) {
		if (p->backend->stop)
			p->backend->stop(p, NULL);
		p->active = false;
	}
	return ret;
}

static int pool_busy(struct vs_pool *p, const char *verb, const struct vs_vol_info *vol,
		     struct vs_error *err)
{
	struct vs_error e = { 0 };

	if (vs_pool_vol_check_closed(p, vol, &e) != -EBUSY)
		return 0;
	return vs_error_set(err, -EBUSY,
			    "Requested operation is not valid: cannot %s storage pool '%s': %s; "
			    "use --force to override",
			    verb, p->def.name, e.msg);
}

/*
 * -EBUSY when a volume of @p is open. Volumes that are not local files
 * carry their locks on a lease in the state directory: every lease of the
 * pool is checked there, without reaching the storage (a network pool's
 * server may be away, and pool-destroy must not wait on it). Local files
 * and block devices (dir; logical with device-mapper) carry them on the
 * volume: the backend lists those, if it can without a connection (an
 * inactive pool may still answer; storage that cannot be listed has
 * nothing open to protect).
 */
static int pool_check_closed(struct vs_pool *p, const char *verb, struct vs_error *err)
{
	struct vs_vol_list vols = { 0 };
	struct vs_pool_info info;
	char dir[VS_POOL_PATH_MAX];
	struct dirent *de;
	int ret = 0;
	DIR *d;

	if (state_file(p->state, dir, sizeof(dir), "leases", p->def.name, "") == 0 &&
	    (d = opendir(dir))) {
		while (ret == 0 && (de = readdir(d))) {
			struct vs_vol_info v = { .type = VS_VOL_NETWORK };
			size_t len = strlen(de->d_name);

			if (len <= 6 || len - 6 > VS_POOL_NAME_MAX ||
			    strcmp(de->d_name + len - 6, ".lease"))
				continue;
			memcpy(v.name, de->d_name, len - 6);
			ret = pool_busy(p, verb, &v, err);
		}
		closedir(d);
	}
	if (ret < 0 || p->backend->attach || p->backend->refresh(p, &info, &vols, NULL) < 0) {
		vs_vol_list_free(&vols);
		return ret;
	}
	for (size_t i = 0; i < vols.n && ret == 0; i++)
		if (vols.v[i].type == VS_VOL_FILE || vols.v[i].type == VS_VOL_BLOCK)
			ret = pool_busy(p, verb, &vols.v[i], err);
	vs_vol_list_free(&vols);
	return ret;
}

int vs_pool_stop(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	int ret;

	if (!p->active)
		return vs_error_set(err, -EINVAL,
				    "Requested operation is not valid: storage pool '%s' is not "
				    "active",
				    p->def.name);
	if (!(flags & VS_POOL_FORCE)) {
		ret = pool_check_closed(p, "destroy", err);
		if (ret < 0)
			return ret;
	}
	if (p->backend->stop) {
		ret = p->backend->stop(p, err);
		if (ret < 0)
			return ret;
	}
	p->active = false;
	ret = vs_pool_save(p, err);
	if (ret < 0)
		p->active = true;
	return ret;
}

int vs_pool_delete(struct vs_pool *p, unsigned flags, struct vs_error *err)
{
	int ret = need_inactive(p, err);

	if (ret < 0)
		return ret;
	if (!p->backend->delete)
		return vs_error_set(err, -ENOTSUP, "pool type '%s' cannot be deleted", p->def.type);
	if (!(flags & VS_POOL_FORCE)) {
		ret = pool_check_closed(p, "delete", err);
		if (ret < 0)
			return ret;
	}
	ret = pool_attach(p, err);
	return ret < 0 ? ret : p->backend->delete (p, flags & ~VS_POOL_FORCE, err);
}

int vs_pool_undefine(struct vs_pool *p, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	int ret = need_inactive(p, err);

	if (ret < 0)
		return ret;
	pool_file(p->state, p->def.name, path, sizeof(path));
	if (unlink(path) < 0)
		return vs_error_setf_errno(err, -errno, "Cannot remove '%s'", path);
	state_file(p->state, path, sizeof(path), "leases", p->def.name, "");
	(void)rmdir(path); /* leases of volumes: only if none is left */
	state_file(p->state, path, sizeof(path), "building", p->def.name, "");
	(void)rmdir(path); /* records of builds: likewise */
	return 0;
}

int vs_pool_set_autostart(struct vs_pool *p, bool on, struct vs_error *err)
{
	bool old = p->def.autostart;
	int ret;

	p->def.autostart = on;
	ret = vs_pool_save(p, err);
	if (ret < 0)
		p->def.autostart = old;
	return ret;
}

int vs_pool_refresh(struct vs_pool *p, struct vs_pool_info *info, struct vs_vol_list *vols,
		    struct vs_error *err)
{
	int ret = need_active(p, err);

	memset(info, 0, sizeof(*info));
	if (ret < 0)
		return ret;
	build_cleanup(p);
	ret = p->backend->refresh(p, info, vols, err);
	if (ret == 0 && vols)
		vs_vol_list_sort(vols);
	return ret;
}

/* ---- Volume operations ---------------------------------------------------- */

int vs_pool_vol_info(struct vs_pool *p, const char *name, struct vs_vol_info *out,
		     struct vs_error *err)
{
	int ret = need_active(p, err);

	memset(out, 0, sizeof(*out));
	if (ret < 0)
		return ret;
	ret = vs_pool_check_name(name, "Volume", err);
	if (ret < 0)
		return ret;
	return p->backend->vol_info(p, name, out, err);
}

/* The checks of a create; fills @args (format, allocation) from @a. */
static int vol_create_check(struct vs_pool *p, const struct vs_vol_create_args *a,
			    struct vs_vol_create_args *args, struct vs_error *err)
{
	struct vs_vol_info existing;
	int ret = need_active(p, err);

	*args = *a;
	if (ret < 0)
		return ret;
	ret = vs_pool_check_name(a->name, "Volume", err);
	if (ret < 0)
		return ret;
	if (!args->format || !args->format[0])
		args->format = p->backend->default_format ? p->backend->default_format : "raw";
	if (strcmp(args->format, "raw") && strcmp(args->format, "qcow2"))
		return vs_error_set(err, -EINVAL, "unsupported volume format '%s' (raw or qcow2)",
				    args->format);
	if (args->allocation != UINT64_MAX && args->allocation > args->capacity)
		args->allocation = args->capacity;
	if (args->mode > 07777)
		return vs_error_set(err, -EINVAL, "invalid permission mode %o", args->mode);
	if (!p->backend->vol_create)
		return vs_error_set(err, -ENOTSUP, "storage pool type '%s' cannot create volumes",
				    p->def.type);
	if (p->backend->vol_info(p, a->name, &existing, NULL) == 0)
		return vs_error_set(err, -EEXIST, "storage volume '%s' already exists in pool '%s'",
				    a->name, p->def.name);
	return 0;
}

int vs_pool_vol_create(struct vs_pool *p, const struct vs_vol_create_args *a, struct vs_error *err)
{
	struct vs_vol_build *b;
	int ret = vs_pool_vol_build_begin(p, a, &b, err);

	return ret < 0 ? ret : vs_pool_vol_build_commit(b, err);
}

/* ---- Building volumes under a temporary name ------------------------------------ */

#define BUILD_TAG ".vstor-tmp-"

struct vs_vol_build {
	struct vs_pool *p;
	char name[VS_POOL_NAME_MAX + 1]; /* the final name */
	char tmp[VS_POOL_NAME_MAX + 1];	 /* the name it is built under */
	char record[VS_POOL_PATH_MAX];	 /* DIR/building/POOL/TMP, "" without one */
	int record_fd;			 /* flock'ed while the build runs */
};

const char *vs_vol_build_name(const struct vs_vol_build *b)
{
	return b->tmp;
}

/* Is @name one of our temporary names (".NAME.vstor-tmp-XXXXXX")? */
static bool build_tmp_name(const char *name)
{
	const char *tag = strstr(name, BUILD_TAG);

	return name[0] == '.' && tag && strlen(tag) == strlen(BUILD_TAG) + 6 && !strchr(name, '/');
}

static void build_record_drop(struct vs_vol_build *b)
{
	if (b->record[0])
		(void)unlink(b->record);
	if (b->record_fd >= 0)
		close(b->record_fd); /* drops the flock */
	b->record_fd = -1;
}

/*
 * Record the build of b->tmp in the state directory and lock the record.
 * A refresh that finds a record nobody locks deletes the volume it names.
 * -EEXIST when the name is taken (the caller picks another).
 */
static int build_record(struct vs_vol_build *b, struct vs_error *err)
{
	struct stat st1, st2;
	int ret;

	ret = state_file(b->p->state, b->record, sizeof(b->record), "building", b->p->def.name, "");
	if (ret == 0)
		ret = mkdir_p(b->record, 0755);
	if (ret == 0) {
		size_t len = strlen(b->record);

		if (len + 1 + strlen(b->tmp) >= sizeof(b->record))
			ret = -ENAMETOOLONG;
		else
			snprintf(b->record + len, sizeof(b->record) - len, "/%s", b->tmp);
	}
	if (ret < 0) {
		b->record[0] = '\0';
		return vs_error_setf_errno(err, ret, "Cannot record the build of volume '%s'",
					   b->name);
	}
	b->record_fd = open(b->record, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (b->record_fd < 0) {
		ret = -errno;
		b->record[0] = '\0';
		return ret == -EEXIST ?
			       ret :
			       vs_error_setf_errno(err, ret, "Cannot record the build of '%s'",
						   b->name);
	}
	/* A refresh may have taken it for a dead build between the create and the lock. */
	if (flock(b->record_fd, LOCK_EX | LOCK_NB) < 0 || fstat(b->record_fd, &st1) < 0 ||
	    stat(b->record, &st2) < 0 || st1.st_ino != st2.st_ino || st1.st_dev != st2.st_dev) {
		close(b->record_fd);
		b->record_fd = -1;
		b->record[0] = '\0';
		return -EEXIST;
	}
	return 0;
}

static void build_free(struct vs_vol_build *b)
{
	build_record_drop(b);
	free(b);
}

int vs_pool_vol_build_begin(struct vs_pool *p, const struct vs_vol_create_args *a,
			    struct vs_vol_build **out, struct vs_error *err)
{
	struct vs_vol_create_args args;
	struct vs_vol_build *b;
	int ret = vol_create_check(p, a, &args, err);

	if (ret < 0)
		return ret;
	b = calloc(1, sizeof(*b));
	if (!b)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	b->p = p;
	b->record_fd = -1;
	strcpy(b->name, a->name);
	strcpy(b->tmp, a->name);
	if (p->backend->vol_rename) {
		for (int tries = 0;; tries++) {
			uint8_t rnd[3];

			if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
				rnd[0] = rnd[1] = rnd[2] = (uint8_t)(getpid() + tries);
			/* Short enough for VS_POOL_NAME_MAX; LVM's characters only. */
			snprintf(b->tmp, sizeof(b->tmp), ".%.100s" BUILD_TAG "%02x%02x%02x",
				 a->name, rnd[0], rnd[1], rnd[2]);
			ret = build_record(b, err);
			if (ret != -EEXIST)
				break;
			if (tries == 16) {
				ret = vs_error_set(err, -EEXIST,
						   "Cannot find a free temporary name for '%s'",
						   a->name);
				break;
			}
		}
		if (ret < 0) {
			build_free(b);
			return ret;
		}
		args.name = b->tmp;
	}
	ret = p->backend->vol_create(p, &args, err);
	if (ret < 0) {
		build_free(b);
		return ret;
	}
	*out = b;
	return 0;
}

/* Delete the volume @name of @p if it is there (a build that did not finish). */
static void build_delete_vol(struct vs_pool *p, const char *name)
{
	struct vs_vol_info vol;

	if (p->backend->vol_info(p, name, &vol, NULL) == 0 && p->backend->vol_delete)
		(void)p->backend->vol_delete(p, &vol, NULL);
	vs_vol_lease_remove(p->state, p->def.name, name);
}

int vs_pool_vol_build_commit(struct vs_vol_build *b, struct vs_error *err)
{
	struct vs_pool *p = b->p;
	struct vs_vol_info vol;
	int ret = 0;

	if (!strcmp(b->tmp, b->name)) {
		build_free(b);
		return 0;
	}
	ret = p->backend->vol_info(p, b->tmp, &vol, err);
	if (ret == 0)
		ret = p->backend->vol_rename(p, &vol, b->name, err);
	if (ret == -EEXIST)
		ret = vs_error_set(err, -EEXIST, "storage volume '%s' already exists in pool '%s'",
				   b->name, p->def.name);
	if (ret < 0) {
		vs_pool_vol_build_abort(b);
		return ret;
	}
	vs_vol_lease_remove(p->state, p->def.name, b->tmp);
	build_free(b);
	return 0;
}

void vs_pool_vol_build_abort(struct vs_vol_build *b)
{
	if (!b)
		return;
	build_delete_vol(b->p, b->tmp);
	build_free(b);
}

/*
 * Delete what builds that died left in @p: each record in
 * DIR/building/POOL that nobody holds locked names a volume to delete.
 */
static void build_cleanup(struct vs_pool *p)
{
	char dir[VS_POOL_PATH_MAX], path[VS_POOL_PATH_MAX];
	struct dirent *de;
	DIR *d;

	if (!p->backend->vol_rename ||
	    state_file(p->state, dir, sizeof(dir), "building", p->def.name, "") < 0)
		return;
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st1, st2;
		int fd, n;

		if (!build_tmp_name(de->d_name))
			continue;
		n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(path))
			continue;
		fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		/* Locked: the build runs. Gone meanwhile: another refresh took it. */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st1) == 0 &&
		    stat(path, &st2) == 0 && st1.st_ino == st2.st_ino && st1.st_dev == st2.st_dev) {
			build_delete_vol(p, de->d_name);
			(void)unlink(path);
		}
		close(fd);
	}
	closedir(d);
}

static int lock_check_fd(int fd, const char *name, struct vs_error *err)
{
	struct vs_error e = { 0 };
	int ret;

	/*
	 * Claim write and resize without sharing them: this conflicts with
	 * every writer (byte 101/103 held) and every user that does not let
	 * others write (201/203 held), as QEMU's own check would.
	 */
	ret = vs_lock_acquire(fd, VS_PERM_WRITE | VS_PERM_RESIZE,
			      VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED, name, &e);
	vs_lock_release(fd);
	if (ret == -EAGAIN)
		return vs_error_set(err, -EBUSY,
				    "storage volume '%s' is in use (opened by an export, a "
				    "convert or QEMU); use --force to override",
				    name);
	if (ret < 0)
		return vs_error_set(err, ret, "%s", e.msg);
	return 0;
}

static int lease_path(struct vs_pool_state *st, const char *pool, const char *vol, char *out,
		      size_t outsz, bool mkdirs)
{
	char dir[VS_POOL_PATH_MAX];
	int n;

	if (state_file(st, dir, sizeof(dir), "leases", pool, "") < 0)
		return -ENAMETOOLONG;
	if (mkdirs && mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	n = snprintf(out, outsz, "%s/%s.lease", dir, vol);
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/*
 * Open the file that carries @vol's locks into *@fd: the image itself, or
 * its lease (*@fd = -1 when the volume was never leased: nobody holds it).
 */
static int vol_lock_fd(struct vs_pool *p, const struct vs_vol_info *vol, int *fd,
		       struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];

	*fd = -1;
	if (vol->type == VS_VOL_FILE || vol->type == VS_VOL_BLOCK) {
		*fd = open(vol->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		return *fd >= 0 ? 0 :
				  vs_error_setf_errno(err, -errno, "Cannot open '%s'", vol->path);
	}
	if (lease_path(p->state, p->def.name, vol->name, path, sizeof(path), false) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "Volume name too long");
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0 && errno == ENOENT)
		return 0;
	return *fd >= 0 ? 0 : vs_error_setf_errno(err, -errno, "Cannot open '%s'", path);
}

int vs_pool_vol_check_unused(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	int fd, ret = vol_lock_fd(p, vol, &fd, err);

	if (ret < 0 || fd < 0)
		return ret;
	ret = lock_check_fd(fd, vol->name, err);
	close(fd);
	return ret;
}

int vs_pool_vol_check_closed(struct vs_pool *p, const struct vs_vol_info *vol, struct vs_error *err)
{
	struct vs_error e = { 0 };
	int fd, ret = vol_lock_fd(p, vol, &fd, err);

	if (ret < 0 || fd < 0)
		return ret;
	/*
	 * Claim every permission and share none: this conflicts with any
	 * user that holds a permission byte or refuses to share one, readers
	 * included. Users that opened with force-share hold nothing.
	 */
	ret = vs_lock_acquire(fd, VS_PERM_ALL, 0, vol->name, &e);
	vs_lock_release(fd);
	close(fd);
	if (ret == -EAGAIN)
		return vs_error_set(err, -EBUSY,
				    "storage volume '%s' is open (by an export, a convert or QEMU)",
				    vol->name);
	if (ret < 0)
		return vs_error_set(err, ret, "%s", e.msg);
	return 0;
}

/*
 * Does the backing file @backing, as recorded in a volume of pool @op whose
 * path is @path, name volume @vol of @p? Absolute paths and URLs compare
 * with the volume's path (paths through realpath, so that links and ".."
 * agree); a relative name resolves beside the overlay, as QEMU resolves it;
 * vol:POOL/VOLUME names compare by name.
 */
static bool backing_names(const char *backing, const struct vs_pool *op, const char *path,
			  const struct vs_pool *p, const struct vs_vol_info *vol)
{
	char a[PATH_MAX], b[PATH_MAX], rel[VS_POOL_PATH_MAX * 2];
	const char *slash;

	if (!strncmp(backing, "vol:", 4)) {
		size_t plen = strlen(p->def.name);

		return !strncmp(backing + 4, p->def.name, plen) && backing[4 + plen] == '/' &&
		       !strcmp(backing + 5 + plen, vol->name);
	}
	if (!strcmp(backing, vol->path))
		return true;
	if (backing[0] != '/' && !strstr(backing, "://")) {
		/* Relative: beside the overlay (same directory, or same export). */
		slash = strrchr(path, '/');
		if (!slash)
			return false;
		snprintf(rel, sizeof(rel), "%.*s/%s", (int)(slash - path), path, backing);
		if (!strcmp(rel, vol->path))
			return true;
		if (op == p && !strchr(backing, '/') && !strcmp(backing, vol->name))
			return true;
		backing = rel;
	}
	if (backing[0] != '/' || vol->path[0] != '/')
		return false;
	return realpath(backing, a) && realpath(vol->path, b) && !strcmp(a, b);
}

/* -EBUSY if a volume of @op has @vol of @p as its backing file. */
static int backing_users_in(struct vs_pool *op, struct vs_pool *p, const struct vs_vol_info *vol,
			    struct vs_error *err)
{
	struct vs_vol_list vols = { 0 };
	struct vs_pool_info info;
	int ret = 0;

	if (vs_pool_refresh(op, &info, &vols, NULL) < 0)
		return 0;
	for (size_t i = 0; i < vols.n && ret == 0; i++) {
		const struct vs_vol_info *v = &vols.v[i];

		if ((op == p && !strcmp(v->name, vol->name)) || !v->backing[0] ||
		    !backing_names(v->backing, op, v->path, p, vol))
			continue;
		ret = vs_error_set(
			err, -EBUSY,
			"Requested operation is not valid: storage volume '%s' is the "
			"backing file of volume '%s' in pool '%s'; use --force to delete "
			"it anyway",
			vol->name, v->name, op->def.name);
	}
	vs_vol_list_free(&vols);
	return ret;
}

/*
 * Refuse to delete a volume that another volume uses as its backing file:
 * in its own pool, and in the other active pools that need no connection
 * (dir, logical: a network pool's server may be away, and a delete must
 * not wait on it).
 */
static int vol_check_no_overlay(struct vs_pool *p, const struct vs_vol_info *vol,
				struct vs_error *err)
{
	char **names = NULL;
	size_t n = 0;
	int ret = backing_users_in(p, p, vol, err);

	if (ret < 0 || vs_pool_state_list(p->state, &names, &n, NULL) < 0)
		return ret;
	for (size_t i = 0; i < n && ret == 0; i++) {
		struct vs_pool *op = NULL;

		if (!strcmp(names[i], p->def.name) ||
		    vs_pool_load(p->state, names[i], &op, NULL) < 0)
			continue;
		if (op->active && !op->backend->attach)
			ret = backing_users_in(op, p, vol, err);
		vs_pool_free(op);
	}
	vs_pool_names_free(names, n);
	return ret;
}

int vs_pool_vol_delete(struct vs_pool *p, const char *name, unsigned flags, struct vs_error *err)
{
	struct vs_vol_info vol;
	int ret = vs_pool_vol_info(p, name, &vol, err);

	if (ret < 0)
		return ret;
	if (!p->backend->vol_delete)
		return vs_error_set(err, -ENOTSUP, "storage pool type '%s' cannot delete volumes",
				    p->def.type);
	if (!(flags & VS_VOL_FORCE)) {
		ret = vs_pool_vol_check_unused(p, &vol, err);
		if (ret < 0)
			return ret;
		ret = vol_check_no_overlay(p, &vol, err);
		if (ret < 0)
			return ret;
	}
	ret = p->backend->vol_delete(p, &vol, err);
	if (ret == 0)
		vs_vol_lease_remove(p->state, p->def.name, name);
	return ret;
}

int vs_pool_vol_resize(struct vs_pool *p, const char *name, uint64_t capacity, unsigned flags,
		       struct vs_error *err)
{
	struct vs_vol_info vol;
	int ret = vs_pool_vol_info(p, name, &vol, err);

	if (ret < 0)
		return ret;
	if (!p->backend->vol_resize)
		return vs_error_set(err, -ENOTSUP, "storage pool type '%s' cannot resize volumes",
				    p->def.type);
	if (capacity < vol.capacity) {
		if (!(flags & VS_VOL_RESIZE_SHRINK))
			return vs_error_set(err, -EINVAL,
					    "invalid argument: Can't shrink capacity below "
					    "current capacity unless shrink flag explicitly "
					    "specified");
		if (!(flags & VS_VOL_FORCE)) {
			ret = vs_pool_vol_check_unused(p, &vol, err);
			if (ret < 0)
				return ret;
		}
	}
	if (capacity == vol.capacity)
		return 0;
	return p->backend->vol_resize(p, &vol, capacity, flags, err);
}

/* ---- Leases ------------------------------------------------------------------ */

struct vs_vol_lease {
	int fd;
};

int vs_vol_lease_acquire(struct vs_pool_state *st, const char *pool, const char *vol, unsigned perm,
			 unsigned shared, struct vs_vol_lease **out, struct vs_error *err)
{
	char path[VS_POOL_PATH_MAX];
	struct vs_error e = { 0 };
	struct vs_vol_lease *l;
	int ret;

	ret = lease_path(st, pool, vol, path, sizeof(path), true);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Cannot make the lease of volume '%s'", vol);
	l = calloc(1, sizeof(*l));
	if (!l)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (l->fd < 0) {
		ret = vs_error_setf_errno(err, -errno, "Cannot open '%s'", path);
		free(l);
		return ret;
	}
	ret = vs_lock_acquire(l->fd, perm, shared, path, &e);
	if (ret < 0) {
		close(l->fd);
		free(l);
		if (ret == -EAGAIN)
			return vs_error_set(err, -EAGAIN,
					    "storage volume '%s' of pool '%s': another process "
					    "(an export, a convert) is using the volume",
					    vol, pool);
		return vs_error_set(err, ret, "%s", e.msg);
	}
	*out = l;
	return 0;
}

void vs_vol_lease_release(struct vs_vol_lease *l)
{
	if (!l)
		return;
	close(l->fd);
	free(l);
}

void vs_vol_lease_remove(struct vs_pool_state *st, const char *pool, const char *vol)
{
	char path[VS_POOL_PATH_MAX];

	if (lease_path(st, pool, vol, path, sizeof(path), false) == 0)
		(void)unlink(path);
}

/* ---- Opening volumes ------------------------------------------------------- */

/* What a node opened through a pool releases when it is closed. */
struct vol_hold {
	struct vs_vol_lease *lease;
	struct vs_pool *pool; /* owned when opened through vol: */
};

static void vol_hold_release(void *opaque)
{
	struct vol_hold *h = opaque;

	vs_vol_lease_release(h->lease);
	vs_pool_free(h->pool);
	free(h);
}

/*
 * Open the storage of @vol as a protocol node; on success the node owns
 * the lease and, if @own_pool, @p.
 */
static int vol_open_protocol(struct vs_pool *p, const struct vs_vol_info *vol,
			     const struct vs_open_opts *opts, bool own_pool, struct vs_node **out,
			     struct vs_error *err)
{
	struct vs_open_opts o = *opts;
	struct vol_hold *h = calloc(1, sizeof(*h));
	struct vs_node *n = NULL;
	int ret;

	if (!h)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	if (vol->type != VS_VOL_FILE && vol->type != VS_VOL_BLOCK && !opts->force_share) {
		unsigned perm = VS_PERM_CONSISTENT_READ;

		if (!opts->read_only)
			perm |= VS_PERM_WRITE | VS_PERM_RESIZE;
		ret = vs_vol_lease_acquire(
			p->state, p->def.name, vol->name, perm,
			opts->read_only ? VS_PERM_ALL & ~VS_PERM_WRITE & ~VS_PERM_RESIZE :
					  VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED,
			&h->lease, err);
		if (ret < 0) {
			free(h);
			return ret;
		}
	}
	o.filename = vol->path;
	if (p->backend->vol_open)
		ret = p->backend->vol_open(p, vol, &o, &n, err);
	else
		ret = vs_protocol_open(&n, vol->path, &o, err);
	if (ret < 0) {
		vs_vol_lease_release(h->lease);
		free(h);
		return ret;
	}
	if (own_pool)
		h->pool = p;
	n->close_hook = vol_hold_release;
	n->close_hook_opaque = h;
	*out = n;
	return 0;
}

static char resolver_dir[VS_POOL_PATH_MAX];
static struct vs_pool_state *resolver_state;

int vs_pool_vol_open(struct vs_pool *p, const char *name, const struct vs_open_opts *opts,
		     bool raw_bytes, struct vs_node **out, struct vs_error *err)
{
	struct vs_open_opts o = *opts;
	struct vs_vol_info vol;
	char vname[2 * VS_POOL_NAME_MAX + 8];
	int ret = vs_pool_vol_info(p, name, &vol, err);

	if (ret < 0)
		return ret;
	if (raw_bytes)
		return vol_open_protocol(p, &vol, opts, false, out, err);
	/* The image: through the vol: resolver, so image.c builds the format node. */
	if (strcmp(resolver_dir, p->state->path)) {
		ret = vs_pool_register_resolver(p->state->path);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Cannot register the vol: resolver");
	}
	snprintf(vname, sizeof(vname), "vol:%s/%s", p->def.name, name);
	o.filename = vname;
	return vs_image_open(out, &o, err);
}

/* Split "vol:POOL/VOLUME". */
static int parse_vol_name(const char *name, char *pool, char *vol, struct vs_error *err)
{
	const char *s = name + 4, *slash = strchr(s, '/');

	if (!slash || (size_t)(slash - s) > VS_POOL_NAME_MAX ||
	    strlen(slash + 1) > VS_POOL_NAME_MAX)
		return vs_error_set(err, -EINVAL, "'%s': expected vol:POOL/VOLUME", name);
	memcpy(pool, s, (size_t)(slash - s));
	pool[slash - s] = '\0';
	strcpy(vol, slash + 1);
	if (vs_pool_check_name(pool, "Pool", err) < 0 || vs_pool_check_name(vol, "Volume", err) < 0)
		return -EINVAL;
	return 0;
}

static int resolver_load(const char *name, struct vs_pool **pool, char *vol, struct vs_error *err)
{
	char pname[VS_POOL_NAME_MAX + 1];
	struct vs_pool *p;
	int ret;

	ret = parse_vol_name(name, pname, vol, err);
	if (ret < 0)
		return ret;
	if (!resolver_state) {
		resolver_state = calloc(1, sizeof(*resolver_state));
		if (!resolver_state)
			return vs_error_set(err, -ENOMEM, "Out of memory");
		resolver_state->lock_fd = -1;
		if (!resolver_dir[0] &&
		    vs_pool_state_dir(resolver_dir, sizeof(resolver_dir), NULL) < 0) {
			free(resolver_state);
			resolver_state = NULL;
			return vs_error_set(err, -ENOENT, "No state directory for pools");
		}
		strcpy(resolver_state->path, resolver_dir);
	}
	/* Definitions are replaced by rename: reading needs no lock. */
	ret = vs_pool_load(resolver_state, pname, &p, err);
	if (ret < 0)
		return ret;
	if (!p->active) {
		vs_pool_free(p);
		return vs_error_set(err, -EINVAL, "storage pool '%s' is not active", pname);
	}
	*pool = p;
	return 0;
}

static int resolver_open(const char *name, const struct vs_open_opts *opts, struct vs_node **out,
			 struct vs_error *err)
{
	char vol[VS_POOL_NAME_MAX + 1];
	struct vs_vol_info info;
	struct vs_pool *p;
	int ret;

	ret = resolver_load(name, &p, vol, err);
	if (ret < 0)
		return ret;
	ret = vs_pool_vol_info(p, vol, &info, err);
	if (ret == 0)
		ret = vol_open_protocol(p, &info, opts, true, out, err);
	if (ret < 0)
		vs_pool_free(p);
	return ret;
}

static int resolver_create(const char *name, const char *format, uint64_t size,
			   const struct vs_kv *opts, size_t nopts, unsigned flags,
			   struct vs_error *err)
{
	char vol[VS_POOL_NAME_MAX + 1];
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	struct vs_vol_info info;
	struct vs_pool *p;
	bool recreate = false;
	int ret;

	ret = resolver_load(name, &p, vol, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < nopts; i++) {
		if (!strcmp(opts[i].key, "backing_file"))
			a.backing_path = opts[i].value;
		else if (!strcmp(opts[i].key, "backing_fmt"))
			a.backing_format = opts[i].value;
		else
			recreate = true; /* options only the image layer knows */
	}
	ret = p->backend->vol_info(p, vol, &info, NULL);
	if (ret < 0 && recreate) {
		/* Options only the image layer knows: format it before it is listed. */
		struct vs_vol_build *b;

		a.name = vol;
		a.format = format ? format : "raw";
		a.capacity = size;
		ret = vs_pool_vol_build_begin(p, &a, &b, err);
		if (ret < 0)
			goto out;
		ret = vs_pool_vol_info(p, vs_vol_build_name(b), &info, err);
		if (ret == 0 && info.type != VS_VOL_FILE && info.type != VS_VOL_BLOCK)
			ret = vs_error_set(err, -ENOTSUP,
					   "'%s': image options (-o) are taken only in a dir pool",
					   name);
		if (ret == 0)
			ret = vs_image_create_ex(info.path, format, size, opts, nopts, flags, err);
		if (ret < 0)
			vs_pool_vol_build_abort(b);
		else
			ret = vs_pool_vol_build_commit(b, err);
		goto out;
	}
	if (ret < 0) {
		a.name = vol;
		a.format = format ? format : "raw";
		a.capacity = size;
		ret = vs_pool_vol_create(p, &a, err);
		goto out;
	}
	if (info.type != VS_VOL_FILE && info.type != VS_VOL_BLOCK) {
		ret = vs_error_set(err, -ENOTSUP,
				   "volume '%s' exists; an image can be created over an existing "
				   "volume only in a dir pool",
				   name);
		goto out;
	}
	ret = vs_image_create_ex(info.path, format, size, opts, nopts, flags, err);
out:
	vs_pool_free(p);
	return ret;
}

/* Whether @a and @b name one volume: the same string, or one local file. */
static bool same_vol_path(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!strcmp(a, b))
		return true;
	return a[0] == '/' && b[0] == '/' && stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int vs_pool_find_vol_by_path(struct vs_pool_state *st, const char *path, char *pool_out,
			     char *vol_out, struct vs_error *err)
{
	const char *base = strrchr(path, '/');
	struct vs_vol_info info;
	char **names = NULL;
	size_t n = 0;
	int ret;

	base = base ? base + 1 : path;
	if (vs_pool_check_name(base, "Volume", NULL) < 0)
		goto not_found;
	ret = vs_pool_state_list(st, &names, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		struct vs_pool *p;
		bool found;

		if (vs_pool_load(st, names[i], &p, NULL) < 0)
			continue;
		found = p->active && vs_pool_vol_info(p, base, &info, NULL) == 0 &&
			same_vol_path(info.path, path);
		if (found) {
			strcpy(pool_out, p->def.name);
			strcpy(vol_out, info.name);
		}
		vs_pool_free(p);
		if (found) {
			vs_pool_names_free(names, n);
			return 0;
		}
	}
	vs_pool_names_free(names, n);
not_found:
	return vs_error_set(err, -ENOENT, "'%s' is not a volume of an active storage pool", path);
}

/*
 * The backing file of a pool volume must be a volume of an active pool
 * (libvirt's rule): a name relative to the volume, a path that a pool's
 * volume has, or vol:POOL/VOLUME. Anything else (a host path such as
 * /etc/shadow, an nbd:// URI) is refused, for that volume alone.
 */
static int resolver_backing(const char *overlay, const char *backing, char *out, size_t outsz,
			    struct vs_error *err)
{
	char pname[VS_POOL_NAME_MAX + 1], vol[VS_POOL_NAME_MAX + 1];
	char path[VS_POOL_PATH_MAX];
	struct vs_vol_info info;
	struct vs_pool *p;
	int ret;

	if (!strncmp(backing, "vol:", 4)) {
		ret = parse_vol_name(backing, pname, vol, err);
		if (ret == 0 && snprintf(out, outsz, "%s", backing) >= (int)outsz)
			ret = vs_error_set(err, -ENAMETOOLONG, "'%s': name too long", backing);
		return ret;
	}
	ret = resolver_load(overlay, &p, vol, err);
	if (ret < 0)
		return ret;
	ret = vs_pool_vol_info(p, vol, &info, err);
	vs_pool_free(p);
	if (ret < 0)
		return ret;
	if (vs_path_combine(path, sizeof(path), info.path, backing) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "'%s': name too long", backing);
	ret = vs_pool_find_vol_by_path(resolver_state, path, pname, vol, NULL);
	if (ret < 0)
		return vs_error_set(err, -EPERM,
				    "'%s' is not a volume of an active storage pool (the backing "
				    "chain of volume '%s' may only name pool volumes)",
				    backing, overlay);
	snprintf(out, outsz, "vol:%s/%s", pname, vol);
	return 0;
}

static const struct vs_image_resolver vol_resolver = {
	.prefix = "vol:",
	.open = resolver_open,
	.create = resolver_create,
	.resolve_backing = resolver_backing,
};

int vs_pool_register_resolver(const char *state_dir)
{
	int ret;

	if (state_dir) {
		if (vs_pool_strcpy(resolver_dir, sizeof(resolver_dir), state_dir) < 0)
			return -ENAMETOOLONG;
	} else {
		ret = vs_pool_state_dir(resolver_dir, sizeof(resolver_dir), NULL);
		if (ret < 0)
			return ret;
	}
	if (resolver_state)
		strcpy(resolver_state->path, resolver_dir);
	return vs_image_register_resolver(&vol_resolver);
}

/* ---- Probing ----------------------------------------------------------------- */

int vs_pool_probe_volume(struct vs_pool *p, struct vs_vol_info *vol, struct vs_error *err)
{
	struct vs_open_opts o = { .read_only = true, .force_share = true };
	const size_t hdr_len = 65536;
	struct vs_node *n = NULL;
	uint8_t *buf;
	size_t len;
	int ret;

	o.filename = vol->path;
	if (p->backend->vol_open)
		ret = p->backend->vol_open(p, vol, &o, &n, err);
	else
		ret = vs_protocol_open(&n, vol->path, &o, err);
	if (ret < 0)
		return ret;
	strcpy(vol->format, "raw");
	vol->capacity = vs_node_size(n);
	vol->backing[0] = vol->backing_format[0] = '\0';
	len = vol->capacity < hdr_len ? (size_t)vol->capacity : hdr_len;
	buf = vs_buf_zalloc(hdr_len);
	if (!buf) {
		vs_node_close(n);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = len >= 72 ? vs_node_pread(n, 0, buf, (len + 511) & ~(size_t)511) : 0;
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Cannot read '%s'", vol->path);
		goto out;
	}
	if (len >= 72 && !memcmp(buf, "QFI\xfb", 4)) {
		uint32_t version = vs_be32(buf + 4);
		uint64_t boff = vs_be64(buf + 8);
		uint32_t blen = vs_be32(buf + 16);
		uint32_t hlen = version >= 3 && len >= 104 ? vs_be32(buf + 100) : 72;

		strcpy(vol->format, "qcow2");
		vol->capacity = vs_be64(buf + 24);
		if (boff && blen && blen < sizeof(vol->backing) && boff < len &&
		    blen <= len - boff) {
			memcpy(vol->backing, buf + boff, blen);
			vol->backing[blen] = '\0';
		}
		/* Header extensions: the backing format (0xe2792aca). */
		for (uint64_t off = hlen; off + 8 <= len;) {
			uint32_t type = vs_be32(buf + off), elen = vs_be32(buf + off + 4);

			if (type == 0 || off + 8 + elen > len)
				break;
			if (type == 0xe2792aca && elen < sizeof(vol->backing_format)) {
				memcpy(vol->backing_format, buf + off + 8, elen);
				vol->backing_format[elen] = '\0';
			}
			off += 8 + (((uint64_t)elen + 7) & ~7ull);
		}
	}
	ret = 0;
out:
	free(buf);
	vs_node_close(n);
	return ret;
}
