/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The DOMs of pool definitions: JSON (the state files, pool-define's JSON,
 * lvm's reports) read by json-c, XML (libvirt's pool, volume and secret
 * definitions) read by libxml2, both copied into the small trees below so
 * that callers need neither library. Both take untrusted text: every error is
 * a message ("line L: what"), never a crash; size and nesting are bounded; XML
 * entities declared in a DOCTYPE are refused, nothing external is ever read.
 */
#ifndef VSTOR_POOL_PARSE_H
#define VSTOR_POOL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pj_type { PJ_NULL, PJ_BOOL, PJ_INT, PJ_STR, PJ_ARR, PJ_OBJ };

struct pj_value {
	enum pj_type type;
	bool b;
	int64_t i;
	char *str;		 /* PJ_STR */
	struct pj_value **items; /* PJ_ARR and PJ_OBJ members */
	char **keys;		 /* PJ_OBJ */
	size_t n;
};

/* Parse @text; 0 or -EINVAL with "line L: what" in @msg. */
int pj_parse(const char *text, struct pj_value **out, char *msg, size_t msgsz);
void pj_free(struct pj_value *v);
/* Member @key of object @obj, or NULL (also when @obj is not an object). */
const struct pj_value *pj_get(const struct pj_value *obj, const char *key);

struct px_attr {
	char *name;
	char *value;
};

struct px_elem {
	char *name;
	struct px_attr *attrs;
	size_t nattrs;
	char *text; /* concatenated character data, trimmed */
	struct px_elem **children;
	size_t nchildren;
};

int px_parse(const char *text, struct px_elem **out, char *msg, size_t msgsz);
void px_free(struct px_elem *e);
/* First child element named @name, or NULL. */
const struct px_elem *px_child(const struct px_elem *e, const char *name);
/* Attribute @name, or NULL. */
const char *px_attr(const struct px_elem *e, const char *name);

#endif
