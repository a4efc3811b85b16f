/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pool definitions' DOMs, read by the field's libraries: JSON by json-c
 * (as vstord and libvirt read theirs), XML by libxml2 (libvirt's parser). The
 * small trees of pool-parse.h are copied out of theirs, so that the callers
 * stay independent of either library and keep their own, tighter bounds.
 */
#include "pool-parse.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#define PARSE_MAX_DEPTH 32
/* Pool and volume definitions are a few hundred bytes; lvm reports a few MiB at most. */
#define PARSE_MAX_SIZE (64u << 20)

__attribute__((format(printf, 4, 5))) static int parse_fail(char *msg, size_t msgsz, long line,
							    const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(msg, msgsz, "line %ld: %s", line, what);
	else
		snprintf(msg, msgsz, "%s", what);
	return -EINVAL;
}

/* The line of byte @off of @text, from 1. */
static long line_at(const char *text, size_t off)
{
	long line = 1;

	for (size_t i = 0; i < off && text[i]; i++)
		if (text[i] == '\n')
			line++;
	return line;
}

/* ---- JSON ------------------------------------------------------------------ */

void pj_free(struct pj_value *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++) {
		pj_free(v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->str);
	free(v);
}

const struct pj_value *pj_get(const struct pj_value *obj, const char *key)
{
	if (!obj || obj->type != PJ_OBJ)
		return NULL;
	for (size_t i = obj->n; i-- > 0;)
		if (!strcmp(obj->keys[i], key))
			return obj->items[i];
	return NULL;
}

/* Copy json-c's @jo into a new pj_value; 0 or -EINVAL with @msg filled. */
static int pj_copy(struct json_object *jo, struct pj_value **out, char *msg, size_t msgsz)
{
	struct pj_value *v = calloc(1, sizeof(*v));
	size_t n = 0;
	int ret = 0;

	if (!v)
		return parse_fail(msg, msgsz, 0, "out of memory");
	switch (json_object_get_type(jo)) {
	case json_type_null:
		v->type = PJ_NULL;
		break;
	case json_type_boolean:
		v->type = PJ_BOOL;
		v->b = json_object_get_boolean(jo);
		break;
	case json_type_double:
		ret = parse_fail(msg, msgsz, 0, "only integers are accepted here");
		break;
	case json_type_int:
		/*
		 * json-c saturates what does not fit: INT64_MIN, or a uint64 above
		 * INT64_MAX, stands for a number out of range.
		 */
		v->type = PJ_INT;
		v->i = json_object_get_int64(jo);
		if (v->i == INT64_MIN ||
		    (v->i == INT64_MAX && json_object_get_uint64(jo) > (uint64_t)INT64_MAX))
			ret = parse_fail(msg, msgsz, 0, "number out of range");
		break;
	case json_type_string:
		v->type = PJ_STR;
		if (strlen(json_object_get_string(jo)) != (size_t)json_object_get_string_len(jo)) {
			ret = parse_fail(msg, msgsz, 0, "NUL in string");
			break;
		}
		v->str = strdup(json_object_get_string(jo));
		if (!v->str)
			ret = parse_fail(msg, msgsz, 0, "out of memory");
		break;
	case json_type_array:
		v->type = PJ_ARR;
		n = json_object_array_length(jo);
		v->items = calloc(n ? n : 1, sizeof(*v->items));
		if (!v->items) {
			ret = parse_fail(msg, msgsz, 0, "out of memory");
			break;
		}
		for (size_t i = 0; i < n && ret == 0; i++) {
			ret = pj_copy(json_object_array_get_idx(jo, i), &v->items[i], msg, msgsz);
			if (ret == 0)
				v->n++;
		}
		break;
	case json_type_object:
		v->type = PJ_OBJ;
		n = (size_t)json_object_object_length(jo);
		v->items = calloc(n ? n : 1, sizeof(*v->items));
		v->keys = calloc(n ? n : 1, sizeof(*v->keys));
		if (!v->items || !v->keys) {
			ret = parse_fail(msg, msgsz, 0, "out of memory");
			break;
		}
		json_object_object_foreach(jo, key, val)
		{
			if (ret < 0 || v->n == n)
				break;
			v->keys[v->n] = strdup(key);
			if (!v->keys[v->n]) {
				ret = parse_fail(msg, msgsz, 0, "out of memory");
				break;
			}
			ret = pj_copy(val, &v->items[v->n], msg, msgsz);
			if (ret < 0) {
				free(v->keys[v->n]);
				v->keys[v->n] = NULL;
				break;
			}
			v->n++;
		}
		break;
	}
	if (ret < 0) {
		pj_free(v);
		return ret;
	}
	*out = v;
	return 0;
}

int pj_parse(const char *text, struct pj_value **out, char *msg, size_t msgsz)
{
	size_t len = strlen(text), end;
	struct json_tokener *tok;
	struct json_object *jo;
	enum json_tokener_error jerr;
	int ret;

	if (len >= PARSE_MAX_SIZE)
		return parse_fail(msg, msgsz, 0, "larger than %u bytes", PARSE_MAX_SIZE);
	/* json-c counts the depth from 1 at the top value; ours counted from 0. */
	tok = json_tokener_new_ex(PARSE_MAX_DEPTH + 1);
	if (!tok)
		return parse_fail(msg, msgsz, 0, "out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	/* The terminating NUL included: it ends a number at the very end. */
	jo = json_tokener_parse_ex(tok, text, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!jo || jerr != json_tokener_success) {
		json_object_put(jo);
		if (jerr == json_tokener_continue || jerr == json_tokener_success)
			jerr = json_tokener_error_parse_eof;
		if (jerr == json_tokener_error_depth)
			return parse_fail(msg, msgsz, line_at(text, end), "nested too deeply");
		return parse_fail(msg, msgsz, line_at(text, end), "%s",
				  json_tokener_error_desc(jerr));
	}
	/* The tokener stops at the end of the value: what follows must be blank. */
	for (size_t i = end; i < len; i++) {
		if (!strchr(" \t\r\n", text[i])) {
			json_object_put(jo);
			return parse_fail(msg, msgsz, line_at(text, i),
					  "trailing characters after the JSON value");
		}
	}
	ret = pj_copy(jo, out, msg, msgsz);
	json_object_put(jo);
	return ret;
}

/* ---- XML ------------------------------------------------------------------- */

void px_free(struct px_elem *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->nattrs; i++) {
		free(e->attrs[i].name);
		free(e->attrs[i].value);
	}
	for (size_t i = 0; i < e->nchildren; i++)
		px_free(e->children[i]);
	free(e->attrs);
	free(e->children);
	free(e->name);
	free(e->text);
	free(e);
}

const struct px_elem *px_child(const struct px_elem *e, const char *name)
{
	for (size_t i = 0; e && i < e->nchildren; i++)
		if (!strcmp(e->children[i]->name, name))
			return e->children[i];
	return NULL;
}

const char *px_attr(const struct px_elem *e, const char *name)
{
	for (size_t i = 0; e && i < e->nattrs; i++)
		if (!strcmp(e->attrs[i].name, name))
			return e->attrs[i].value;
	return NULL;
}

/* Prefixed names as written ("p:name"), as libvirt's definitions never use namespaces. */
static char *px_qname(const xmlChar *prefix, const xmlChar *name)
{
	char *s;

	if (!prefix)
		return strdup((const char *)name);
	if (asprintf(&s, "%s:%s", (const char *)prefix, (const char *)name) < 0)
		return NULL;
	return s;
}

static char *px_trimmed(const char *s)
{
	size_t len = strlen(s);

	while (*s && strchr(" \t\r\n", *s)) {
		s++;
		len--;
	}
	while (len && strchr(" \t\r\n", s[len - 1]))
		len--;
	return strndup(s, len);
}

static int px_copy(const xmlNode *node, struct px_elem **out, int depth, char *msg, size_t msgsz)
{
	struct px_elem *e;
	size_t nattrs = 0, nchildren = 0;
	xmlBuffer *text = NULL;

	if (depth > PARSE_MAX_DEPTH)
		return parse_fail(msg, msgsz, (long)xmlGetLineNo(node), "nested too deeply");
	e = calloc(1, sizeof(*e));
	if (!e)
		return parse_fail(msg, msgsz, 0, "out of memory");
	for (const xmlAttr *a = node->properties; a; a = a->next)
		nattrs++;
	for (const xmlNode *c = node->children; c; c = c->next)
		nchildren += c->type == XML_ELEMENT_NODE;
	e->name = px_qname(node->ns ? node->ns->prefix : NULL, node->name);
	e->attrs = calloc(nattrs ? nattrs : 1, sizeof(*e->attrs));
	e->children = calloc(nchildren ? nchildren : 1, sizeof(*e->children));
	text = xmlBufferCreate();
	if (!e->name || !e->attrs || !e->children || !text)
		goto oom;
	for (const xmlAttr *a = node->properties; a; a = a->next) {
		xmlChar *val = xmlNodeListGetString(node->doc, a->children, 1);

		e->attrs[e->nattrs].name = px_qname(a->ns ? a->ns->prefix : NULL, a->name);
		e->attrs[e->nattrs].value = strdup(val ? (const char *)val : "");
		xmlFree(val);
		e->nattrs++;
		if (!e->attrs[e->nattrs - 1].name || !e->attrs[e->nattrs - 1].value)
			goto oom;
	}
	for (const xmlNode *c = node->children; c; c = c->next) {
		switch (c->type) {
		case XML_ELEMENT_NODE:
			if (px_copy(c, &e->children[e->nchildren], depth + 1, msg, msgsz) < 0)
				goto fail;
			e->nchildren++;
			break;
		case XML_TEXT_NODE:
		case XML_CDATA_SECTION_NODE:
			if (xmlBufferCat(text, c->content) != 0)
				goto oom;
			break;
		case XML_ENTITY_REF_NODE:
			parse_fail(msg, msgsz, (long)xmlGetLineNo(c),
				   "entity references are not supported");
			goto fail;
		default: /* comments, processing instructions */
			break;
		}
	}
	e->text = px_trimmed((const char *)xmlBufferContent(text));
	if (!e->text)
		goto oom;
	xmlBufferFree(text);
	*out = e;
	return 0;
oom:
	parse_fail(msg, msgsz, 0, "out of memory");
fail:
	xmlBufferFree(text);
	px_free(e);
	return -EINVAL;
}

/*
 * Pool and volume XML comes from users and from files anyone may have written:
 * no declaration in a DOCTYPE is honoured. An entity declared there would be
 * the door to the billion laughs and to external entities (file://, http://), so the
 * first declaration stops the parser.
 */
static void px_no_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
			      const xmlChar *system_id, xmlChar *content)
{
	xmlParserCtxt *ctxt = ctx;

	(void)name, (void)type, (void)public_id, (void)system_id, (void)content;
	/* Mark the document broken for px_parse, which gives the message. */
	ctxt->wellFormed = 0;
	ctxt->_private = (void *)"DOCTYPE with an internal subset is not supported";
	xmlStopParser(ctxt);
}

/* libxml2 2.9 sets itself up on first use, unsafely when two threads race. */
static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init(void)
{
	xmlInitParser();
}

int px_parse(const char *text, struct px_elem **out, char *msg, size_t msgsz)
{
	size_t len = strlen(text);
	xmlParserCtxt *ctxt;
	xmlDoc *doc;
	int ret;

	if (len >= PARSE_MAX_SIZE)
		return parse_fail(msg, msgsz, 0, "larger than %u bytes", PARSE_MAX_SIZE);
	pthread_once(&xml_once, xml_init);
	ctxt = xmlNewParserCtxt();
	if (!ctxt)
		return parse_fail(msg, msgsz, 0, "out of memory");
	ctxt->sax->entityDecl = px_no_entity_decl;
	/*
	 * No XML_PARSE_NOENT (entities stay unexpanded), no DTDLOAD/DTDATTR (no
	 * external DTD is read), NONET (nothing is fetched): the text is untrusted.
	 * Errors are returned in @msg, not printed.
	 */
	doc = xmlCtxtReadMemory(ctxt, text, (int)len, NULL, NULL,
				XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (ctxt->_private) {
		ret = parse_fail(msg, msgsz, ctxt->input ? ctxt->input->line : 0, "%s",
				 (const char *)ctxt->_private);
		goto out;
	}
	if (!doc || !ctxt->wellFormed || !xmlDocGetRootElement(doc)) {
		const xmlError *xe = xmlCtxtGetLastError(ctxt);
		char what[200];
		size_t n;

		snprintf(what, sizeof(what), "%s",
			 xe && xe->message ? xe->message : "not well-formed");
		n = strlen(what);
		while (n && what[n - 1] == '\n')
			what[--n] = '\0';
		ret = parse_fail(msg, msgsz, xe ? xe->line : 0, "%s", what);
		goto out;
	}
	ret = px_copy(xmlDocGetRootElement(doc), out, 0, msg, msgsz);
out:
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(ctxt);
	return ret;
}
