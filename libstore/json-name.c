/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * json:{...} image names, as QEMU records them as backing file names
 * (qemu-img create -b 'json:{"driver":"qcow2","file":{"driver":"file",
 * "filename":"base.qcow2"}}'). The object is read flat (nested objects as
 * dotted keys, QEMU's own flattening); what vstor opens from it is a local
 * file with a format: driver, file.driver=file, file.filename or filename.
 * As QEMU, the file name is not relative to the image that records it.
 */
#include "driver.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct json_name {
	const char *p;
	char *filename, *driver, *file_driver;
	char bad_key[128];
};

static void jn_ws(struct json_name *j)
{
	while (isspace((unsigned char)*j->p))
		j->p++;
}

/* A JSON string at j->p into a malloc'd C string (no NUL inside). */
static int jn_string(struct json_name *j, char **out)
{
	size_t cap = strlen(j->p) + 1, n = 0;
	char *s;

	if (*j->p != '"')
		return -EINVAL;
	s = malloc(cap);
	if (!s)
		return -ENOMEM;
	for (j->p++; *j->p != '"'; j->p++) {
		char c = *j->p;

		if (!c || (unsigned char)c < 0x20)
			goto bad;
		if (c == '\\') {
			unsigned v;

			switch (*++j->p) {
			case '"':
			case '\\':
			case '/':
				c = *j->p;
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case 'u':
				/*
				 * Only the ASCII escapes a file name needs. Exactly
				 * four hex digits, each checked before the next is
				 * read: the string may end anywhere.
				 */
				v = 0;
				for (int k = 1; k <= 4; k++) {
					int h = (unsigned char)j->p[k];

					if (!isxdigit(h))
						goto bad;
					v = v * 16 + (unsigned)(isdigit(h) ? h - '0' :
									     tolower(h) - 'a' + 10);
				}
				if (!v || v > 0x7f)
					goto bad;
				c = (char)v;
				j->p += 4;
				break;
			default:
				goto bad;
			}
		}
		s[n++] = c;
	}
	j->p++;
	s[n] = '\0';
	*out = s;
	return 0;
bad:
	free(s);
	return -EINVAL;
}

/* A scalar (number, true, false, null) is skipped: none of the keys read here takes one. */
static int jn_scalar(struct json_name *j)
{
	size_t n = strspn(j->p, "0123456789+-.eEtruefalsn");

	if (!n)
		return -EINVAL;
	j->p += n;
	return 0;
}

static int jn_member(struct json_name *j, const char *key, char *val)
{
	char **dst = !strcmp(key, "driver")				       ? &j->driver :
		     !strcmp(key, "file.filename") || !strcmp(key, "filename") ? &j->filename :
		     !strcmp(key, "file.driver")			       ? &j->file_driver :
										 NULL;

	if (!dst) {
		if (!j->bad_key[0])
			snprintf(j->bad_key, sizeof(j->bad_key), "%s", key);
		free(val);
		return 0;
	}
	free(*dst);
	*dst = val;
	return 0;
}

static int jn_object(struct json_name *j, const char *prefix, int depth)
{
	int ret;

	if (*j->p != '{' || depth > 8)
		return -EINVAL;
	j->p++;
	jn_ws(j);
	if (*j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		char *k = NULL, *key = NULL, *val = NULL;

		jn_ws(j);
		ret = jn_string(j, &k);
		if (ret < 0)
			return ret;
		jn_ws(j);
		if (*j->p != ':' || asprintf(&key, "%s%s", prefix, k) < 0) {
			free(k);
			return *j->p != ':' ? -EINVAL : -ENOMEM;
		}
		free(k);
		j->p++;
		jn_ws(j);
		if (*j->p == '{') {
			char *sub = NULL;

			ret = asprintf(&sub, "%s.", key) < 0 ? -ENOMEM :
							       jn_object(j, sub, depth + 1);
			free(sub);
		} else if (*j->p == '"') {
			ret = jn_string(j, &val);
			if (ret == 0)
				ret = jn_member(j, key, val);
		} else {
			ret = jn_scalar(j);
			if (ret == 0)
				ret = jn_member(j, key, NULL);
		}
		free(key);
		if (ret < 0)
			return ret;
		jn_ws(j);
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p != '}')
			return -EINVAL;
		j->p++;
		return 0;
	}
}

int vs_json_name_resolve(const char *name, char *path, size_t pathsz, char *fmt, size_t fmtsz,
			 struct vs_error *err)
{
	struct json_name j = { .p = name + 5 };
	int ret;

	jn_ws(&j);
	ret = jn_object(&j, "", 0);
	if (ret == 0) {
		jn_ws(&j);
		if (*j.p)
			ret = -EINVAL;
	}
	if (ret == -ENOMEM) {
		vs_error_set(err, ret, "Out of memory");
		goto out;
	}
	if (ret < 0) {
		vs_error_set(err, ret, "Could not parse the JSON options: JSON parse error");
		goto out;
	}
	if (j.bad_key[0]) {
		ret = vs_error_set(err, -EINVAL,
				   "Block format '%s' does not support the option '%s'",
				   j.driver ? j.driver : "raw", j.bad_key);
		goto out;
	}
	if (j.file_driver && strcmp(j.file_driver, "file")) {
		ret = vs_error_set(err, -ENOTSUP, "file.driver=%s is not supported", j.file_driver);
		goto out;
	}
	if (!j.filename) {
		ret = vs_error_set(err, -EINVAL, "Parameter 'filename' is missing");
		goto out;
	}
	if ((size_t)snprintf(path, pathsz, "%s", j.filename) >= pathsz ||
	    (size_t)snprintf(fmt, fmtsz, "%s", j.driver ? j.driver : "") >= fmtsz) {
		ret = vs_error_set(err, -ENAMETOOLONG, "File name too long");
		goto out;
	}
	ret = 0;
out:
	free(j.filename);
	free(j.driver);
	free(j.file_driver);
	return ret;
}
