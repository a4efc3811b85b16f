/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "img.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "secret.h"
#include "vstor/parse.h"
#include "vstor/reactor.h"

static bool json_errors;

void img_set_json_errors(bool on)
{
	json_errors = on;
}

static void __attribute__((format(printf, 3, 0)))
img_verror(int code, bool newline, const char *fmt, va_list ap)
{
	char msg[2048];
	struct json_writer w;
	int err = code ? -code : EINVAL;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (!json_errors) {
		fprintf(stderr, "%s: %s%s", IMG_PROGNAME, msg, newline ? "\n" : "");
		return;
	}
	json_init(&w, stderr, false);
	json_obj_begin(&w, NULL);
	json_obj_begin(&w, "error");
	json_int(&w, "code", err);
	json_str(&w, "errno", vs_errno_name(err));
	json_str(&w, "message", msg);
	json_obj_end(&w);
	json_obj_end(&w);
	fputc('\n', stderr);
}

void img_error(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	img_verror(code, true, fmt, ap);
	va_end(ap);
}

void img_error_hint(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	img_verror(code, false, fmt, ap);
	va_end(ap);
}

int img_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", IMG_PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information\n", IMG_PROGNAME);
	return 1;
}

int img_getopt_error(char **argv, int c)
{
	const char *opt = argv[optind - 1];

	if (c == ':')
		return img_usage_error("missing argument for option '%s'", opt);
	return img_usage_error("unrecognized option '%s'", opt);
}

void img_printf(bool quiet, const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

int img_cvtnum(const char *what, const char *s, uint64_t *out)
{
	int ret = vs_parse_size(s, out);

	if (ret == -ERANGE) {
		img_error(ret, "Invalid %s specified. Must be between 0 and %" PRId64 ".", what,
			  INT64_MAX);
		return -1;
	}
	if (ret < 0) {
		img_error(ret, "Invalid %s specified. You may use k, M, G, T, P or E suffixes for",
			  what);
		img_error(ret,
			  "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
		return -1;
	}
	return 0;
}

int img_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0); /* qemu-img's qemu_strtoul(..., 0): hex and octal too */
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

void img_size_to_str(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
	unsigned i = 0;

	/* Switch to the next unit once the number reaches 1000 of the current one. */
	while (i < 6 && (double)v >= 1000.0 * (double)(1ULL << (10 * i)))
		i++;
	snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ULL << (10 * i)), units[i]);
}

int img_parse_output(const char *s, enum img_output *out)
{
	if (!strcmp(s, "human"))
		*out = IMG_OUTPUT_HUMAN;
	else if (!strcmp(s, "json"))
		*out = IMG_OUTPUT_JSON;
	else
		return -EINVAL;
	return 0;
}

int img_parse_cache(const char *s, enum vs_cache_mode *out)
{
	if (vs_cache_mode_parse(s, out) < 0) {
		img_error(-EINVAL, "Invalid cache mode");
		return -1;
	}
	return 0;
}

/* ---- -o lists ---- */

static int kv_append(struct img_kv_list *l, char *key, char *value)
{
	struct vs_kv *kv = realloc(l->kv, (l->n + 1) * sizeof(*kv));

	if (!kv)
		return -ENOMEM;
	l->kv = kv;
	kv[l->n].key = key;
	kv[l->n].value = value;
	l->n++;
	return 0;
}

/* Copy one element of @s up to an unescaped ',' into a new string; advance *@s. */
static char *kv_next_element(const char **s)
{
	const char *p = *s;
	char *out = malloc(strlen(p) + 1), *q = out;

	if (!out)
		return NULL;
	while (*p) {
		if (*p == ',') {
			if (p[1] != ',')
				break;
			p++;
		}
		*q++ = *p++;
	}
	*q = 0;
	*s = *p ? p + 1 : p;
	return out;
}

int img_kv_parse(struct img_kv_list *l, const char *s)
{
	while (*s) {
		char *elem = kv_next_element(&s), *eq, *key, *value;

		if (!elem)
			return -ENOMEM;
		if (!elem[0]) {
			free(elem);
			continue;
		}
		if (!strcmp(elem, "help") || !strcmp(elem, "?")) {
			l->help = true;
			free(elem);
			continue;
		}
		eq = strchr(elem, '=');
		if (eq)
			*eq = 0;
		key = strdup(elem);
		value = strdup(eq ? eq + 1 : "on");
		free(elem);
		if (!key || !value || kv_append(l, key, value) < 0) {
			free(key);
			free(value);
			return -ENOMEM;
		}
	}
	return 0;
}

void img_kv_free(struct img_kv_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free((char *)l->kv[i].key);
		free((char *)l->kv[i].value);
	}
	free(l->kv);
	l->kv = NULL;
	l->n = 0;
}

const char *img_kv_get(const struct img_kv_list *l, const char *key)
{
	for (size_t i = l->n; i-- > 0;)
		if (!strcmp(l->kv[i].key, key))
			return l->kv[i].value;
	return NULL;
}

void img_kv_remove(struct img_kv_list *l, const char *key)
{
	size_t j = 0;

	for (size_t i = 0; i < l->n; i++) {
		if (!strcmp(l->kv[i].key, key)) {
			free((char *)l->kv[i].key);
			free((char *)l->kv[i].value);
			continue;
		}
		l->kv[j++] = l->kv[i];
	}
	l->n = j;
}

int img_kv_set(struct img_kv_list *l, const char *key, const char *value)
{
	char *k = strdup(key), *v = strdup(value);

	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	img_kv_remove(l, key);
	if (kv_append(l, k, v) < 0) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	return 0;
}

/* ---- secrets (--object secret) and --image-opts ---- */

/* Whether qemu-img knows @type as an --object (it lists them with --object help). */
static bool img_object_type_known(const char *type)
{
	static const char *const types[] = {
		"authz-list",	     "authz-list-file",	  "authz-simple",
		"main-loop",	     "pr-manager-helper", "secret",
		"secret_keyring",    "thread-context",	  "throttle-group",
		"tls-cipher-suites", "tls-creds-anon",	  "tls-creds-psk",
		"tls-creds-x509",    "iothread",
	};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (!strcmp(type, types[i]))
			return true;
	return false;
}

/*
 * A client's tls-creds-x509 or tls-creds-psk object: the credentials nbds://
 * names use (the only object, or the one their tls-creds=ID names).
 */
static int img_tls_object_add(const struct img_kv_list *l, const char *type)
{
	static const char *const keys[] = { "id",	"dir",	    "endpoint", "verify-peer",
					    "username", "priority", "loaded",	"sanity-check" };
	const char *endpoint = img_kv_get(l, "endpoint");
	struct vs_error err = { 0 };
	int ret;

	for (size_t i = 1; i < l->n; i++) {
		size_t k = 0;

		while (k < sizeof(keys) / sizeof(keys[0]) && strcmp(l->kv[i].key, keys[k]))
			k++;
		if (k == sizeof(keys) / sizeof(keys[0]) ||
		    (!strcmp(l->kv[i].key, "username") && strcmp(type, "tls-creds-psk"))) {
			img_error(-EINVAL, "Property '%s.%s' not found", type, l->kv[i].key);
			return -EINVAL;
		}
	}
	if (endpoint && strcmp(endpoint, "client")) {
		img_error(-EINVAL, "Parameter 'endpoint' does not accept value '%s'", endpoint);
		return -EINVAL;
	}
	ret = vs_tls_creds_define(img_kv_get(l, "id"), type, img_kv_get(l, "dir"),
				  img_kv_get(l, "username"), &err);
	if (ret < 0)
		img_error(ret, "%s", err.msg);
	return ret;
}

int img_object_add(const char *def)
{
	struct img_kv_list l = { 0 };
	const char *id, *data, *file, *format;
	struct vs_error err = { 0 };
	int ret;

	/* The first element is the type ("secret" or qom-type=secret). */
	if (img_kv_parse(&l, def) < 0) {
		img_error(-ENOMEM, "Out of memory");
		return -ENOMEM;
	}
	const char *type = l.n ? l.kv[0].key : "";

	if (l.n && !strcmp(type, "qom-type"))
		type = l.kv[0].value;
	else if (l.n && strcmp(l.kv[0].value, "on"))
		type = "";
	if (l.n && !img_object_type_known(type)) {
		img_error(-EINVAL, "Parameter 'qom-type' does not accept value '%s'", type);
		img_kv_free(&l);
		return -EINVAL;
	}
	if (!strcmp(type, "tls-creds-x509") || !strcmp(type, "tls-creds-psk")) {
		ret = img_tls_object_add(&l, type);
		img_kv_free(&l);
		return ret;
	}
	if (strcmp(type, "secret")) {
		img_error(-ENOTSUP,
			  "--object '%s' is not supported (only secret and tls-creds objects are)",
			  l.n ? type : def);
		img_kv_free(&l);
		return -ENOTSUP;
	}
	for (size_t i = 1; i < l.n; i++) {
		const char *k = l.kv[i].key;

		if (strcmp(k, "id") && strcmp(k, "data") && strcmp(k, "file") &&
		    strcmp(k, "format")) {
			img_error(-EINVAL, "Property 'secret.%s' not found", k);
			img_kv_free(&l);
			return -EINVAL;
		}
	}
	id = img_kv_get(&l, "id");
	data = img_kv_get(&l, "data");
	file = img_kv_get(&l, "file");
	format = img_kv_get(&l, "format");
	ret = vs_secret_define(id, data, file, format, &err);
	if (ret < 0)
		img_error(ret, "%s", err.msg);
	/* data= values are wiped from our copy; argv itself stays as given. */
	for (size_t i = 0; i < l.n; i++)
		gnutls_memset((char *)l.kv[i].value, 0, strlen(l.kv[i].value));
	img_kv_free(&l);
	return ret;
}

/*
 * Whether @k is the key of a passphrase: the image's (luks's key-secret,
 * qcow2's encrypt.key-secret) or a backing level's (one "backing." per
 * level down, as QEMU takes them). Stores @v in @a; -EINVAL when the level
 * is deeper than vstor-img takes.
 */
static int img_secret_key(struct img_open_args *a, const char *k, const char *v)
{
	unsigned level = 0;

	while (!strncmp(k, "backing.", 8)) {
		k += 8;
		level++;
	}
	if (strcmp(k, "key-secret") && strcmp(k, "encrypt.key-secret"))
		return 0;
	if (level == 0) {
		a->key_secret = v;
		return 1;
	}
	if (level > IMG_MAX_BACKING_SECRETS) {
		img_error(-EINVAL, "A key-secret more than %d backing levels down is not supported",
			  IMG_MAX_BACKING_SECRETS);
		return -EINVAL;
	}
	a->backing_secret[level - 1] = v;
	return 1;
}

/*
 * data-file.filename= and data-file.driver=file (QEMU's names): the external
 * data file of a qcow2 to open instead of the one it records. 1 when @k is
 * one of them (stored in @a), 0 when not, -errno (printed) when refused.
 */
static int img_data_file_key(struct img_open_args *a, const char *k, const char *v)
{
	if (!strcmp(k, "data-file.filename")) {
		a->data_file = v;
		return 1;
	}
	if (strcmp(k, "data-file.driver"))
		return 0;
	if (strcmp(v, "file")) {
		img_error(-ENOTSUP, "data-file.driver=%s is not supported", v);
		return -ENOTSUP;
	}
	return 1;
}

int img_image_opts(struct img_kv_list *l, const char *s, struct img_open_args *a)
{
	size_t first = l->n; /* @l may hold earlier images' options */
	int r;

	size_t head = strcspn(s, ",=");
	const char *bad = NULL;

	if (s[head] != '=' && head) {
		/* A bare first element names a node, which only QEMU has. */
		img_error(-ENOENT,
			  "Could not open '%s': Cannot find device='%.*s' nor node-name='%.*s'", s,
			  (int)head, s, (int)head, s);
		return -ENOENT;
	}
	if (img_kv_parse(l, s) < 0) {
		img_error(-ENOMEM, "Out of memory");
		return -ENOMEM;
	}
	for (size_t i = first; i < l->n; i++) {
		const char *k = l->kv[i].key, *v = l->kv[i].value;

		if ((r = img_secret_key(a, k, v)) != 0 || (r = img_data_file_key(a, k, v)) != 0) {
			if (r < 0)
				return r;
		} else if (!strcmp(k, "driver")) {
			a->fmt = v;
		} else if (!strcmp(k, "file.filename") || !strcmp(k, "filename")) {
			a->filename = v;
		} else if (!strcmp(k, "file.driver")) {
			if (strcmp(v, "file")) {
				img_error(-ENOTSUP, "file.driver=%s is not supported", v);
				return -ENOTSUP;
			}
		} else if (!bad) {
			bad = k;
		}
	}
	if (bad && a->fmt) {
		img_error(-EINVAL,
			  "Could not open '%s': Block format '%s' does not support the option '%s'",
			  s, a->fmt, bad);
		return -EINVAL;
	}
	if (bad) {
		img_error(-EINVAL, "Invalid parameter '%s'", bad);
		return -EINVAL;
	}
	if (!a->filename) {
		img_error(-EINVAL, "Parameter 'file.filename' is missing");
		return -EINVAL;
	}
	return 0;
}

int img_backing_secrets_fill(struct vs_open_opts *o, const char *const *ids)
{
	struct vs_secret_buf *bufs;
	size_t n = 0;

	o->backing_secrets = NULL;
	o->nb_backing_secrets = 0;
	for (size_t i = 0; i < IMG_MAX_BACKING_SECRETS; i++)
		if (ids[i])
			n = i + 1;
	if (!n)
		return 0;
	bufs = calloc(n, sizeof(*bufs));
	if (!bufs) {
		img_error(-ENOMEM, "Out of memory");
		return -ENOMEM;
	}
	o->backing_secrets = bufs;
	o->nb_backing_secrets = n;
	for (size_t i = 0; i < n; i++) {
		uint8_t *pass;
		size_t len;
		int ret;

		if (!ids[i])
			continue;
		ret = vs_secret_get(ids[i], &pass, &len);
		if (ret < 0) {
			img_error(ret, "No secret with id '%s' found", ids[i]);
			img_secret_wipe(o);
			return ret;
		}
		bufs[i].data = pass;
		bufs[i].len = len;
	}
	return 0;
}

int img_image_getopt(struct img_image_cli *c, int opt, const char *arg)
{
	if (opt == IMG_OPT_OBJECT)
		return img_object_add(arg) < 0 ? -1 : 0;
	c->image_opts = true;
	return 0;
}

/* The strings of every --image-opts argument: commands keep pointers into them. */
static struct img_kv_list img_image_strings;
/*
 * Each such file name, the option string it came from (errors name the
 * latter) and the data file it gives, if any.
 */
static struct {
	const char *filename, *opts, *data_file;
} img_image_origins[8];

void img_image_origin_add(const char *filename, const char *opts, const char *data_file)
{
	for (size_t i = 0; i < sizeof(img_image_origins) / sizeof(img_image_origins[0]); i++) {
		if (!img_image_origins[i].filename) {
			img_image_origins[i].filename = filename;
			img_image_origins[i].opts = opts;
			img_image_origins[i].data_file = data_file;
			break;
		}
	}
}

const char *img_image_data_file(const char *filename)
{
	for (size_t i = 0; i < sizeof(img_image_origins) / sizeof(img_image_origins[0]); i++)
		if (img_image_origins[i].filename == filename)
			return img_image_origins[i].data_file;
	return NULL;
}

/* The option string @filename came from, or @filename. */
const char *img_image_shown(const char *filename)
{
	for (size_t i = 0; i < sizeof(img_image_origins) / sizeof(img_image_origins[0]); i++)
		if (img_image_origins[i].filename == filename)
			return img_image_origins[i].opts;
	return filename;
}

int img_image_name(const struct img_image_cli *c, const char **name, const char **fmt,
		   const char **key_secret)
{
	return img_image_name_chain(c, name, fmt, key_secret, NULL);
}

int img_image_name_chain(const struct img_image_cli *c, const char **name, const char **fmt,
			 const char **key_secret, const char **backing_secret)
{
	struct img_open_args oa = { 0 };

	if (!c->image_opts)
		return 0;
	if (*fmt) {
		img_error(-EINVAL, "--image-opts and --format are mutually exclusive");
		return -1;
	}
	if (img_image_opts(&img_image_strings, *name, &oa) < 0)
		return -1;
	if (oa.key_secret) {
		uint8_t *pass;
		size_t len;

		if (vs_secret_get(oa.key_secret, &pass, &len) < 0) {
			img_error(-ENOENT, "Could not open '%s': No secret with id '%s'", *name,
				  oa.key_secret);
			return -1;
		}
		gnutls_memset(pass, 0, len);
		free(pass);
	}
	img_image_origin_add(oa.filename, *name, oa.data_file);
	*name = oa.filename;
	*fmt = oa.fmt;
	*key_secret = oa.key_secret;
	if (backing_secret)
		memcpy(backing_secret, oa.backing_secret, sizeof(oa.backing_secret));
	return 0;
}

/* The bucket of @key in QEMU's QDict (a tdb hash over 512 buckets), which it iterates in order. */
static unsigned qdict_bucket(const char *key)
{
	uint32_t v = 0x238F13AFu * (uint32_t)strlen(key);

	for (size_t i = 0; key[i]; i++)
		v += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
	return (1103515243u * v + 12345u) % 512;
}

void img_image_display_name(char *buf, size_t len, const char *filename, const char *fmt,
			    const char *key_secret)
{
	char secret[512], driver[512], file[4200];
	const char *m[3][2] = {
		{ fmt && !strcmp(fmt, "luks") ? "key-secret" : "encrypt.key-secret", secret },
		{ "driver", driver },
		{ "file", file },
	};

	if (!key_secret || !fmt) {
		snprintf(buf, len, "%s", filename);
		return;
	}
	snprintf(secret, sizeof(secret), "\"%s\"", key_secret);
	snprintf(driver, sizeof(driver), "\"%s\"", fmt);
	snprintf(file, sizeof(file), "{\"driver\": \"file\", \"filename\": \"%s\"}", filename);
	for (int i = 0; i < 3; i++) {
		for (int k = i + 1; k < 3; k++) {
			if (qdict_bucket(m[k][0]) < qdict_bucket(m[i][0])) {
				const char *t0 = m[i][0], *t1 = m[i][1];

				m[i][0] = m[k][0];
				m[i][1] = m[k][1];
				m[k][0] = t0;
				m[k][1] = t1;
			}
		}
	}
	snprintf(buf, len, "json:{\"%s\": %s, \"%s\": %s, \"%s\": %s}", m[0][0], m[0][1], m[1][0],
		 m[1][1], m[2][0], m[2][1]);
}

int img_secret_fill(struct vs_open_opts *o, const char *id)
{
	uint8_t *pass;
	size_t len;
	int ret;

	o->key_secret_data = NULL;
	o->key_secret_len = 0;
	if (!id)
		return 0;
	ret = vs_secret_get(id, &pass, &len);
	if (ret < 0) {
		img_error(ret, "No secret with id '%s' found", id);
		return ret;
	}
	o->key_secret_data = pass;
	o->key_secret_len = len;
	return 0;
}

void img_secret_wipe(struct vs_open_opts *o)
{
	for (size_t i = 0; i < o->nb_backing_secrets; i++) {
		const struct vs_secret_buf *b = &o->backing_secrets[i];

		if (b->data) {
			gnutls_memset((void *)b->data, 0, b->len);
			free((void *)b->data);
		}
	}
	free((void *)o->backing_secrets);
	o->backing_secrets = NULL;
	o->nb_backing_secrets = 0;
	if (!o->key_secret_data)
		return;
	gnutls_memset((void *)o->key_secret_data, 0, o->key_secret_len);
	free((void *)o->key_secret_data);
	o->key_secret_data = NULL;
	o->key_secret_len = 0;
}

/* ---- images ---- */

/*
 * json:{...} file names, as libvirt and OpenStack pass them: the object is
 * flattened to dotted keys ({"file": {"filename": "x"}} is file.filename=x)
 * and read as --image-opts. Strings, numbers and booleans as values.
 */
struct img_jp {
	const char *p;
	struct img_kv_list *l;
};

static void jp_ws(struct img_jp *j)
{
	while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
		j->p++;
}

/* A JSON string into @buf (escapes \" \\ \/ only). Returns 0 or -EINVAL. */
static int jp_string(struct img_jp *j, char *buf, size_t len)
{
	size_t n = 0;

	if (*j->p != '"')
		return -EINVAL;
	for (j->p++; *j->p != '"'; j->p++) {
		char c = *j->p;

		if (!c || n + 1 >= len)
			return -EINVAL;
		if (c == '\\') {
			c = *++j->p;
			if (c != '"' && c != '\\' && c != '/')
				return -EINVAL;
		}
		buf[n++] = c;
	}
	j->p++;
	buf[n] = 0;
	return 0;
}

static int jp_object(struct img_jp *j, const char *prefix, unsigned depth)
{
	char key[512], full[1024], val[4096];

	jp_ws(j);
	if (*j->p != '{' || depth > 16)
		return -EINVAL;
	j->p++;
	jp_ws(j);
	if (*j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		int ret;

		jp_ws(j);
		if (jp_string(j, key, sizeof(key)) < 0)
			return -EINVAL;
		snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", key);
		jp_ws(j);
		if (*j->p != ':')
			return -EINVAL;
		j->p++;
		jp_ws(j);
		if (*j->p == '{') {
			ret = jp_object(j, full, depth + 1);
		} else if (*j->p == '"') {
			ret = jp_string(j, val, sizeof(val));
			if (ret == 0)
				ret = img_kv_set(j->l, full, val);
		} else {
			size_t n = strspn(j->p, "0123456789-+.eEtruefals");

			if (!n || n >= sizeof(val))
				return -EINVAL;
			memcpy(val, j->p, n);
			val[n] = 0;
			j->p += n;
			ret = img_kv_set(j->l, full, val);
		}
		if (ret < 0)
			return ret;
		jp_ws(j);
		if (*j->p == '}') {
			j->p++;
			return 0;
		}
		if (*j->p != ',')
			return -EINVAL;
		j->p++;
	}
}

int img_json_filename(struct img_kv_list *l, const char *name, struct img_open_args *a)
{
	struct img_jp j = { .p = name + 5, .l = l };
	size_t first = l->n;
	int ret;

	ret = jp_object(&j, "", 0);
	jp_ws(&j);
	if (ret < 0 || *j.p) {
		img_error(-EINVAL, "Could not open '%s': Could not parse the JSON options: %s",
			  name, *j.p ? "JSON parse error" : "JSON parse error, premature EOI");
		return -EINVAL;
	}
	for (size_t i = first; i < l->n; i++) {
		const char *k = l->kv[i].key, *v = l->kv[i].value;

		if ((ret = img_secret_key(a, k, v)) != 0 ||
		    (ret = img_data_file_key(a, k, v)) != 0) {
			if (ret < 0)
				return ret;
		} else if (!strcmp(k, "driver")) {
			a->fmt = v;
		} else if (!strcmp(k, "file.filename") || !strcmp(k, "filename")) {
			a->filename = v;
		} else if (!strcmp(k, "file.driver")) {
			if (strcmp(v, "file")) {
				img_error(-ENOTSUP,
					  "Could not open '%s': file.driver=%s is not supported",
					  name, v);
				return -ENOTSUP;
			}
		} else {
			img_error(
				-EINVAL,
				"Could not open '%s': Block format '%s' does not support the option '%s'",
				name, a->fmt ? a->fmt : "raw", k);
			return -EINVAL;
		}
	}
	if (!a->filename) {
		img_error(-EINVAL, "Could not open '%s': Parameter 'filename' is missing", name);
		return -EINVAL;
	}
	return 0;
}

int img_open(struct vs_node **out, const struct img_open_args *a)
{
	if (!strncmp(a->filename, "json:", 5)) {
		struct img_kv_list l = { 0 };
		struct img_open_args b = *a;
		int ret = img_json_filename(&l, a->filename, &b);

		if (ret == 0)
			ret = img_open(out, &b);
		img_kv_free(&l);
		return ret;
	}
	return img_open_plain(out, a);
}

int img_open_plain(struct vs_node **out, const struct img_open_args *a)
{
	struct vs_open_opts o = {
		.filename = a->filename,
		.format = a->fmt,
		.read_only = !a->writable,
		.force_share = a->force_share,
		.no_backing = a->no_backing,
		.no_repair = a->no_repair,
		.for_check = a->for_check,
		.no_io = a->no_io && !a->writable,
		.data_file = a->data_file ? a->data_file : img_image_data_file(a->filename),
		.cache = a->cache,
	};
	struct vs_error err = { 0 };
	int ret = img_secret_fill(&o, a->key_secret);

	if (ret < 0)
		return ret;
	ret = img_backing_secrets_fill(&o, a->backing_secret);
	if (ret < 0) {
		img_secret_wipe(&o);
		return ret;
	}
	ret = vs_image_open(out, &o, &err);
	img_secret_wipe(&o);
	if (ret < 0) {
		const char *shown = img_image_shown(a->filename);

		if (err.msg[0])
			img_error(ret, "Could not open '%s': %s", shown, err.msg);
		else
			img_error(ret, "Could not open '%s': %s", shown, strerror(-ret));
	}
	return ret;
}

int img_path_combine(char *out, size_t len, const char *base, const char *name)
{
	const char *slash = strrchr(base, '/');
	int n;

	if (name[0] == '/' || !slash)
		n = snprintf(out, len, "%s", name);
	else
		n = snprintf(out, len, "%.*s%s", (int)(slash - base + 1), base, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int img_run(void (*fn)(void *), void *arg)
{
	int ret = vs_run_in_coroutine(fn, arg);

	if (ret < 0) {
		img_error(ret, "Could not start the I/O engine: %s", strerror(-ret));
		return -1;
	}
	return 0;
}

void img_progress(bool on, uint64_t done, uint64_t total, int *last)
{
	double pct = total ? 100.0 * (double)done / (double)total : 100.0;
	int tenths = (int)(pct * 10);

	if (!on || tenths == *last)
		return;
	*last = tenths;
	printf("    (%3.2f/100%%)\r", pct);
	fflush(stdout);
}

void img_progress_end(bool on)
{
	if (!on)
		return;
	printf("\n");
	fflush(stdout);
}

bool img_same_file(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];

	if (!realpath(a, ra) || !realpath(b, rb))
		return !strcmp(a, b);
	return !strcmp(ra, rb);
}

/* ---- -o help ---- */

static const char *opt_type_name(const char *type)
{
	if (!strcmp(type, "size"))
		return "size";
	if (!strcmp(type, "bool"))
		return "bool (on/off)";
	if (!strcmp(type, "number"))
		return "num";
	return "str";
}

static int opt_desc_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vs_create_opt_desc *)a)->name,
		      ((const struct vs_create_opt_desc *)b)->name);
}

void img_print_opts(struct vs_create_opt_desc *list, size_t n)
{
	qsort(list, n, sizeof(list[0]), opt_desc_cmp);
	for (size_t i = 0; i < n; i++) {
		char name[128];

		snprintf(name, sizeof(name), "%s=<%s>", list[i].name, opt_type_name(list[i].type));
		printf("  %-22s - %s\n", name, list[i].help);
	}
}
