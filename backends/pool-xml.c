/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvirt's pool XML (https://libvirt.org/formatstorage.html), the part
 * that dir, netfs, logical and iscsi pools use:
 *
 *   <pool type='dir|netfs|logical|iscsi'>
 *     <name>N</name> <uuid>U</uuid>
 *     <source>
 *       <host name='H' port='P'/> <dir path='/export'/> <device path='/dev/sdb'/>
 *       <name>VG</name> <format type='nfs|lvm2'/>
 *       <initiator><iqn name='IQN'/></initiator>
 *       <auth type='chap' username='U'><secret usage='X'|uuid='Y'|file='F'/></auth>
 *     </source>
 *     <target><path>/dir</path>
 *       <permissions><mode>0711</mode><owner>N</owner><group>N</group></permissions>
 *     </target>
 *   </pool>
 *
 * Elements that only describe the current state (capacity, allocation,
 * available) or that vstor has no use for (<permissions><label>, adapter,
 * features) are ignored. libvirt secrets live in libvirtd; vstor has no secret store:
 * the secret is read from a file, named by the `file` attribute of <secret>
 * (a vstor extension) or given later with pool-define-as --auth-secret-file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pool-int.h"
#include "pool-parse.h"

static int copy_field(char *dst, size_t dstsz, const char *val, const char *what, const char *field,
		      struct vs_error *err)
{
	if (!val)
		return 0;
	if (vs_pool_strcpy(dst, dstsz, val) < 0)
		return vs_error_set(err, -EINVAL, "%s: %s is too long", what, field);
	return 0;
}

int vs_pool_def_from_xml(struct vs_pool_def *def, const char *text, const char *what,
			 struct vs_error *err)
{
	const struct px_elem *e, *src, *tgt;
	struct px_elem *root = NULL;
	char msg[256];
	int ret;

	if (px_parse(text, &root, msg, sizeof(msg)) < 0)
		return vs_error_set(err, -EINVAL, "%s: invalid XML: %s", what, msg);
	if (strcmp(root->name, "pool")) {
		ret = vs_error_set(err, -EINVAL, "%s: the root element is <%s>, expected <pool>",
				   what, root->name);
		goto out;
	}
	if ((ret = copy_field(def->type, sizeof(def->type), px_attr(root, "type"), what,
			      "the pool type", err)) < 0)
		goto out;
	if (!def->type[0]) {
		ret = vs_error_set(err, -EINVAL, "%s: <pool> has no type attribute", what);
		goto out;
	}
	e = px_child(root, "name");
	if (!e || !e->text[0]) {
		ret = vs_error_set(err, -EINVAL, "%s: the pool has no <name>", what);
		goto out;
	}
	if ((ret = copy_field(def->name, sizeof(def->name), e->text, what, "<name>", err)) < 0)
		goto out;
	e = px_child(root, "uuid");
	if (e && (ret = copy_field(def->uuid, sizeof(def->uuid), e->text, what, "<uuid>", err)) < 0)
		goto out;
	tgt = px_child(root, "target");
	e = px_child(tgt, "path");
	if (e &&
	    (ret = copy_field(def->target, sizeof(def->target), e->text, what, "<path>", err)) < 0)
		goto out;
	e = px_child(tgt, "permissions");
	if (e) {
		const struct px_elem *m = px_child(e, "mode"), *o = px_child(e, "owner"),
				     *g = px_child(e, "group");

		if ((m && (ret = copy_field(def->perm_mode, sizeof(def->perm_mode), m->text, what,
					    "<permissions><mode>", err)) < 0) ||
		    (o && (ret = copy_field(def->perm_owner, sizeof(def->perm_owner), o->text, what,
					    "<permissions><owner>", err)) < 0) ||
		    (g && (ret = copy_field(def->perm_group, sizeof(def->perm_group), g->text, what,
					    "<permissions><group>", err)) < 0))
			goto out;
	}
	src = px_child(root, "source");
	if (src) {
		for (size_t i = 0; i < src->nchildren; i++) {
			const struct px_elem *c = src->children[i];
			const char *port;

			if (!strcmp(c->name, "host")) {
				if (def->source_host[0]) {
					ret = vs_error_set(err, -ENOTSUP,
							   "%s: more than one <host> is not "
							   "supported",
							   what);
					goto out;
				}
				ret = copy_field(def->source_host, sizeof(def->source_host),
						 px_attr(c, "name"), what, "<host name>", err);
				port = px_attr(c, "port");
				if (ret == 0 && port) {
					char *end;
					unsigned long v = strtoul(port, &end, 10);

					if (*end || !*port || v > 65535) {
						ret = vs_error_set(err, -EINVAL,
								   "%s: bad port '%s'", what, port);
						goto out;
					}
					def->source_port = (unsigned)v;
				}
			} else if (!strcmp(c->name, "dir")) {
				ret = copy_field(def->source_path, sizeof(def->source_path),
						 px_attr(c, "path"), what, "<dir path>", err);
			} else if (!strcmp(c->name, "device")) {
				if (def->nb_source_devs == VS_POOL_MAX_DEVS) {
					ret = vs_error_set(err, -EINVAL,
							   "%s: more than %d <device> elements",
							   what, VS_POOL_MAX_DEVS);
					goto out;
				}
				ret = copy_field(def->source_devs[def->nb_source_devs],
						 sizeof(def->source_devs[0]), px_attr(c, "path"),
						 what, "<device path>", err);
				if (ret == 0 && px_attr(c, "path"))
					def->nb_source_devs++;
			} else if (!strcmp(c->name, "name")) {
				ret = copy_field(def->source_name, sizeof(def->source_name),
						 c->text, what, "<source><name>", err);
			} else if (!strcmp(c->name, "format")) {
				ret = copy_field(def->source_format, sizeof(def->source_format),
						 px_attr(c, "type"), what, "<format type>", err);
			} else if (!strcmp(c->name, "initiator")) {
				ret = copy_field(def->initiator_iqn, sizeof(def->initiator_iqn),
						 px_attr(px_child(c, "iqn"), "name"), what,
						 "<iqn name>", err);
			} else if (!strcmp(c->name, "auth")) {
				const struct px_elem *secret = px_child(c, "secret");
				const char *type = px_attr(c, "type");

				if ((ret = copy_field(def->auth_type, sizeof(def->auth_type), type,
						      what, "<auth type>", err)) < 0 ||
				    (ret = copy_field(def->auth_username,
						      sizeof(def->auth_username),
						      px_attr(c, "username"), what,
						      "<auth username>", err)) < 0 ||
				    (ret = copy_field(def->auth_secret_file,
						      sizeof(def->auth_secret_file),
						      px_attr(secret, "file"), what,
						      "<secret file>", err)) < 0)
					goto out;
				if (!def->auth_secret_file[0] && secret) {
					const char *ref = px_attr(secret, "usage");

					if (!ref)
						ref = px_attr(secret, "uuid");
					if (ref && vs_pool_def_set_extra(def, "auth_secret_ref",
									 ref) < 0) {
						ret = vs_error_set(err, -EINVAL, "%s: bad <secret>",
								   what);
						goto out;
					}
					vs_warn("%s: the libvirt secret '%s' cannot be read by "
						"vstor; give the secret in a file "
						"(<secret file='...'/>)",
						what, ref ? ref : "?");
				}
			}
			if (ret < 0)
				goto out;
		}
	}
	ret = 0;
out:
	px_free(root);
	return ret;
}

void vs_pool_xml_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '\'':
			fputs("&apos;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n')
				fprintf(f, "&#%d;", *s);
			else
				fputc(*s, f);
		}
	}
}
