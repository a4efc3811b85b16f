/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vmdk descriptor parser (see vmdk-desc.h). Lines are "key=value"
 * (values optionally quoted), comments start with '#', and extent lines
 * are: ACCESS SECTORS TYPE "FILENAME" [OFFSET].
 */
#include "vmdk-desc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vmdk_desc_free(struct vmdk_desc *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < d->nb_extents; i++)
		free(d->extents[i].filename);
	free(d->extents);
	free(d->parent_hint);
	memset(d, 0, sizeof(*d));
}

/* The next line of [*p, end): its start and length (without \r\n); advances *p. */
static const char *next_line(const char **p, const char *end, size_t *n)
{
	const char *s = *p, *e = s;

	while (e < end && *e != '\n')
		e++;
	*p = e < end ? e + 1 : end;
	while (e > s && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	while (s < e && (*s == ' ' || *s == '\t'))
		s++;
	*n = (size_t)(e - s);
	return s;
}

int vmdk_desc_probe(const uint8_t *buf, size_t len)
{
	const char *p = (const char *)buf, *end = p + len;

	while (p < end) {
		size_t n;
		const char *l = next_line(&p, end, &n);

		if (n == 0 || l[0] == '#')
			continue;
		if (p == end && l + n == end)
			return 0; /* the line may go on past what the probe sees */
		return n == 9 && !memcmp(l, "version=", 8) && l[8] >= '1' && l[8] <= '3' ? 100 : 0;
	}
	return 0;
}

/* A value of "key=value" or key = "value" into @out (size @outsz); false if too long. */
static bool copy_value(const char *v, size_t n, char *out, size_t outsz)
{
	while (n && (*v == ' ' || *v == '\t' || *v == '='))
		v++, n--;
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
		v++, n -= 2;
	if (n >= outsz)
		return false;
	memcpy(out, v, n);
	out[n] = '\0';
	return true;
}

static bool parse_u64(const char *s, int base, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* key=value lines: the ones the reader needs. */
static int parse_key(struct vmdk_desc *d, const char *l, size_t n, struct vs_error *err)
{
	const char *eq = memchr(l, '=', n);
	size_t klen;
	char val[1024];
	uint64_t v;

	if (!eq)
		return 0;
	klen = (size_t)(eq - l);
	while (klen && (l[klen - 1] == ' ' || l[klen - 1] == '\t'))
		klen--;
	if (!copy_value(eq, n - (size_t)(eq - l), val, sizeof(val)))
		return vs_error_set(err, -EINVAL, "Invalid VMDK descriptor: a value is too long");
#define KEY(k) (klen == strlen(k) && !strncmp(l, k, klen))
	if (KEY("version")) {
		if (!parse_u64(val, 10, &v) || v < 1 || v > 3)
			return vs_error_set(err, -ENOTSUP,
					    "Unsupported VMDK descriptor version '%s'", val);
		d->version = (int)v;
	} else if (KEY("CID")) {
		if (!parse_u64(val, 16, &v) || v > UINT32_MAX)
			return vs_error_set(err, -EINVAL, "Invalid VMDK CID '%s'", val);
		d->cid = (uint32_t)v;
	} else if (KEY("parentCID")) {
		if (!parse_u64(val, 16, &v) || v > UINT32_MAX)
			return vs_error_set(err, -EINVAL, "Invalid VMDK parentCID '%s'", val);
		d->parent_cid = (uint32_t)v;
	} else if (KEY("createType")) {
		if (strlen(val) >= sizeof(d->create_type))
			return vs_error_set(err, -EINVAL, "Invalid VMDK createType");
		memcpy(d->create_type, val, strlen(val) + 1);
	} else if (KEY("parentFileNameHint")) {
		free(d->parent_hint);
		d->parent_hint = val[0] ? strdup(val) : NULL;
		if (val[0] && !d->parent_hint)
			return vs_error_set(err, -ENOMEM, "Out of memory");
	}
#undef KEY
	return 0;
}

/* ACCESS SECTORS TYPE "FILENAME" [OFFSET] */
static int parse_extent(struct vmdk_desc *d, const char *l, size_t n, struct vs_error *err)
{
	char line[1200], access[16], type[16], sectors[32], offset[32] = "0";
	struct vmdk_desc_extent *e;
	char *q1, *q2;
	int got;

	if (n >= sizeof(line))
		return vs_error_set(err, -EINVAL,
				    "Invalid VMDK descriptor: an extent line is too long");
	memcpy(line, l, n);
	line[n] = '\0';
	q1 = strchr(line, '"');
	q2 = q1 ? strchr(q1 + 1, '"') : NULL;
	if (!q2)
		return vs_error_set(err, -EINVAL, "Invalid extent line: %s", line);
	*q1 = *q2 = '\0';
	got = sscanf(line, "%15s %31s %15s", access, sectors, type);
	if (got != 3)
		return vs_error_set(err, -EINVAL, "Invalid extent line: %s", line);
	if (sscanf(q2 + 1, "%31s", offset) != 1)
		snprintf(offset, sizeof(offset), "0");
	if (d->nb_extents >= VMDK_DESC_MAX_EXTENTS)
		return vs_error_set(err, -EINVAL, "Too many VMDK extents (more than %u)",
				    VMDK_DESC_MAX_EXTENTS);
	e = realloc(d->extents, sizeof(*e) * (d->nb_extents + 1));
	if (!e)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	d->extents = e;
	e = &d->extents[d->nb_extents];
	memset(e, 0, sizeof(*e));
	if (!parse_u64(sectors, 10, &e->sectors) || !parse_u64(offset, 10, &e->offset))
		return vs_error_set(err, -EINVAL, "Invalid extent line: %s", line);
	if (!strcmp(type, "FLAT") || !strcmp(type, "VMFS"))
		e->type = VMDK_EXTENT_FLAT;
	else if (!strcmp(type, "SPARSE"))
		e->type = VMDK_EXTENT_SPARSE;
	else if (!strcmp(type, "ZERO"))
		e->type = VMDK_EXTENT_ZERO;
	else
		return vs_error_set(err, -ENOTSUP,
				    "VMDK extents of type '%s' are not supported by vstor "
				    "(FLAT, VMFS, SPARSE and ZERO are)",
				    type);
	if (strcmp(access, "RW") && strcmp(access, "RDONLY") && strcmp(access, "NOACCESS"))
		return vs_error_set(err, -EINVAL, "Invalid extent access '%s'", access);
	e->filename = strdup(q1 + 1);
	if (!e->filename)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	d->nb_extents++;
	return 0;
}

int vmdk_desc_parse(const char *text, size_t len, struct vmdk_desc *d, struct vs_error *err)
{
	const char *nul = memchr(text, '\0', len), *p = text, *end;
	int ret = 0;

	memset(d, 0, sizeof(*d));
	d->parent_cid = UINT32_MAX;
	if (len > VMDK_DESC_MAX_LEN)
		return vs_error_set(err, -EINVAL, "VMDK descriptor too large");
	end = nul ? nul : text + len;
	while (p < end && ret == 0) {
		size_t n;
		const char *l = next_line(&p, end, &n);

		if (n == 0 || l[0] == '#')
			continue;
		if ((n > 3 && !strncmp(l, "RW ", 3)) || (n > 7 && !strncmp(l, "RDONLY ", 7)) ||
		    (n > 9 && !strncmp(l, "NOACCESS ", 9)))
			ret = parse_extent(d, l, n, err);
		else
			ret = parse_key(d, l, n, err);
	}
	if (ret == 0 && !d->version)
		ret = vs_error_set(err, -EINVAL, "Invalid VMDK descriptor: no version");
	if (ret < 0)
		vmdk_desc_free(d);
	return ret;
}
