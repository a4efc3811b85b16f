/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --validate of pool-define and vol-create, as virsh has it: the XML file is
 * checked against libvirt's RelaxNG schema (storagepool.rng, storagevol.rng,
 * shipped by Debian's libvirt0 under /usr/share/libvirt/schemas) with
 * libxml2's RelaxNG validator, and the validator's messages are printed the
 * way virsh prints them. vstor's extensions (<secret file='...'/>) are not in
 * libvirt's schema: a definition that uses them does not validate.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/relaxng.h>
#include <libxml/tree.h>

#include "pool-parse.h"
#include "vstor.h"

#define VSTOR_SCHEMA_DIR "/usr/share/libvirt/schemas"

/* libxml2's messages, one after the other (its generic error callback). */
static void collect(void *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(ctx, fmt, ap);
	va_end(ap);
}

int vstor_validate_file(struct vstor_ctx *c, const char *file, const char *schema, const char *what)
{
	xmlRelaxNGParserCtxt *pctxt = NULL;
	xmlRelaxNGValidCtxt *vctxt = NULL;
	xmlRelaxNG *rng = NULL;
	xmlDoc *doc = NULL;
	char path[256], *text = NULL, *msgs = NULL;
	size_t msgslen = 0;
	struct px_elem *root = NULL;
	char msg[256];
	FILE *errs = NULL;
	int ret = 1;

	snprintf(path, sizeof(path), "%s/%s.rng", VSTOR_SCHEMA_DIR, schema);
	vs_error_clear(&c->err);
	if (vs_pool_read_file(file, &text, &c->err) < 0)
		return vstor_error_err(c, "%s", what);
	errs = open_memstream(&msgs, &msgslen);
	if (!errs) {
		free(text);
		return vstor_error(c, -ENOMEM, "out of memory");
	}
	/*
	 * The file is the user's: px_parse() refuses what it refuses in a
	 * definition (entity declarations above all) before libxml2 reads it
	 * again into the tree the validator wants.
	 */
	if (px_parse(text, &root, msg, sizeof(msg)) < 0) {
		fclose(errs);
		errs = NULL;
		ret = vstor_error(c, -EINVAL, "%s\n%s: invalid XML: %s", what, file, msg);
		goto out;
	}
	px_free(root);
	doc = xmlReadMemory(text, (int)strlen(text), file, NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		const xmlError *xe = xmlGetLastError();

		fclose(errs);
		errs = NULL;
		ret = vstor_error(c, -EINVAL, "%s\n%s: not XML: line %d: %s", what, file,
				  xe ? xe->line : 0, xe && xe->message ? xe->message : "?");
		goto out;
	}
	pctxt = xmlRelaxNGNewParserCtxt(path);
	if (pctxt) {
		xmlRelaxNGSetParserErrors(pctxt, collect, collect, errs);
		rng = xmlRelaxNGParse(pctxt);
	}
	if (rng)
		vctxt = xmlRelaxNGNewValidCtxt(rng);
	if (!vctxt) {
		fclose(errs);
		errs = NULL;
		ret = vstor_error(c, -ENOENT, "%s\nUnable to load the schema %s (libvirt0)", what,
				  path);
		goto out;
	}
	xmlRelaxNGSetValidErrors(vctxt, collect, collect, errs);
	if (xmlRelaxNGValidateDoc(vctxt, doc) == 0) {
		ret = 0;
		goto out;
	}
	fclose(errs);
	errs = NULL;
	/* virsh: the context, the cause, then the validator's own lines. */
	if (c->json) {
		ret = vstor_error(c, -EINVAL,
				  "XML document failed to validate against schema: Unable to "
				  "validate doc against %s\n%s",
				  path, msgs ? msgs : "");
	} else {
		fprintf(stderr,
			"error: %s\nerror: XML document failed to validate against schema: "
			"Unable to validate doc against %s\n%s",
			what, path, msgs ? msgs : "");
		ret = 1;
	}
out:
	if (errs)
		fclose(errs);
	free(msgs);
	xmlRelaxNGFreeValidCtxt(vctxt);
	xmlRelaxNGFree(rng);
	xmlRelaxNGFreeParserCtxt(pctxt);
	xmlFreeDoc(doc);
	free(text);
	return ret;
}
