/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --xpath EXPRESSION [--wrap] of pool-dumpxml and vol-dumpxml, as virsh 9.0
 * has them: the XML is written to memory, read back by libxml2 and the
 * expression evaluated on it with the root element as the context node. A
 * node set prints each node, each followed by a newline; --wrap puts
 * copies of the nodes under one <nodes> element instead. An expression whose
 * value is not a node set (string(), count() ...) is an error, as in virsh.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include "vstor.h"

FILE *vstor_xml_begin(struct vstor_ctx *c, struct vstor_xml *x)
{
	memset(x, 0, sizeof(*x));
	/* --wrap alone is ignored, as virsh ignores it. */
	if (!opt_get(c, "xpath"))
		return stdout;
	x->mem = open_memstream(&x->buf, &x->len);
	if (!x->mem)
		vstor_error(c, -ENOMEM, "out of memory");
	return x->mem;
}

/* The nodes of @set, serialised as virsh prints them, into @out. */
static int xpath_dump(xmlDoc *doc, const xmlNodeSet *set, bool wrap, xmlBuffer *out)
{
	int n = set ? set->nodeNr : 0;
	xmlDoc *wdoc;
	xmlNode *nodes;
	int ret = 0;

	if (!wrap) {
		for (int i = 0; i < n; i++) {
			if (xmlNodeDump(out, doc, set->nodeTab[i], 0, 1) < 0 ||
			    xmlBufferCCat(out, "\n") != 0)
				return -ENOMEM;
		}
		return 0;
	}
	wdoc = xmlNewDoc(BAD_CAST "1.0");
	nodes = xmlNewNode(NULL, BAD_CAST "nodes");
	if (!wdoc || !nodes) {
		xmlFreeNode(nodes);
		xmlFreeDoc(wdoc);
		return -ENOMEM;
	}
	xmlDocSetRootElement(wdoc, nodes);
	for (int i = 0; i < n && ret == 0; i++) {
		xmlNode *copy = xmlDocCopyNode(set->nodeTab[i], wdoc, 1);

		/* xmlAddChild merges adjacent text and frees @copy when it does. */
		if (!copy || !xmlAddChild(nodes, copy)) {
			xmlFreeNode(copy);
			ret = -ENOMEM;
		}
	}
	if (ret == 0 && (xmlNodeDump(out, wdoc, nodes, 0, 1) < 0 || xmlBufferCCat(out, "\n") != 0))
		ret = -ENOMEM;
	xmlFreeDoc(wdoc);
	return ret;
}

int vstor_xml_end(struct vstor_ctx *c, FILE *f, struct vstor_xml *x)
{
	const char *expr = opt_get(c, "xpath");
	xmlXPathContext *xctx = NULL;
	xmlXPathObject *obj = NULL;
	xmlBuffer *out = NULL;
	xmlDoc *doc = NULL;
	int ret = 1;

	if (!f)
		return 1;
	if (f == stdout)
		return 0;
	if (fclose(x->mem) != 0) {
		free(x->buf);
		return vstor_error(c, -ENOMEM, "out of memory");
	}
	/* Our own XML: well-formed, no DOCTYPE; blanks dropped so that nodes indent anew. */
	doc = xmlReadMemory(x->buf, (int)x->len, NULL, NULL,
			    XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
				    XML_PARSE_NOWARNING);
	if (!doc || !xmlDocGetRootElement(doc)) {
		vstor_error(c, -EINVAL, "internal error: the XML does not parse");
		goto out;
	}
	xctx = xmlXPathNewContext(doc);
	out = xmlBufferCreate();
	if (!xctx || !out) {
		vstor_error(c, -ENOMEM, "out of memory");
		goto out;
	}
	xctx->node = xmlDocGetRootElement(doc);
	/* libxml2 prints its own diagnostic on stderr (as under virsh); the error is ours. */
	obj = xmlXPathEval(BAD_CAST expr, xctx);
	if (!obj) {
		vstor_error(c, -EINVAL, "Invalid xpath '%s'", expr);
		goto out;
	}
	if (obj->type != XPATH_NODESET) {
		vstor_error(c, -EINVAL, "internal error: Incorrect xpath '%s'", expr);
		goto out;
	}
	if (xpath_dump(doc, obj->nodesetval, opt_bool(c, "wrap"), out) < 0) {
		vstor_error(c, -ENOMEM, "out of memory");
		goto out;
	}
	/* As `virsh -q` prints it (virsh alone adds an empty line after every command). */
	fwrite(xmlBufferContent(out), 1, (size_t)xmlBufferLength(out), stdout);
	ret = 0;
out:
	xmlBufferFree(out);
	xmlXPathFreeObject(obj);
	xmlXPathFreeContext(xctx);
	xmlFreeDoc(doc);
	free(x->buf);
	return ret;
}
