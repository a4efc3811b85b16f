/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small parsers for pool definitions: a JSON DOM (the state files and
 * pool-define's JSON) and an XML DOM for the subset of XML that libvirt's
 * pool definitions use (elements, attributes, text, comments, the XML
 * declaration, character and the five predefined entity references). Both
 * take untrusted text: every error is a message, never a crash; nesting is
 * bounded.
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
