/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vstor: the pool-* commands and autostart. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "pool-parse.h"
#include "vstor.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static int set_field(struct vstor_ctx *c, char *dst, size_t dstsz, const char *opt)
{
	const char *v = opt_get(c, opt);

	if (!v)
		return 0;
	if (strlen(v) >= dstsz)
		return vstor_error(c, -EINVAL, "--%s is too long", opt);
	strcpy(dst, v);
	return 0;
}

/* The definition of pool-define-as / pool-create-as. */
static int def_from_opts(struct vstor_ctx *c, struct vs_pool_def *def)
{
	const char **devs, **extra;
	unsigned ndevs = opt_multi(c, "source-dev", &devs);
	unsigned nextra = opt_multi(c, "extra", &extra);
	const char *host = opt_get(c, "source-host");

	memset(def, 0, sizeof(*def));
	if (set_field(c, def->name, sizeof(def->name), "name") ||
	    set_field(c, def->type, sizeof(def->type), "type") ||
	    set_field(c, def->source_path, sizeof(def->source_path), "source-path") ||
	    set_field(c, def->source_name, sizeof(def->source_name), "source-name") ||
	    set_field(c, def->source_format, sizeof(def->source_format), "source-format") ||
	    set_field(c, def->initiator_iqn, sizeof(def->initiator_iqn), "source-initiator") ||
	    set_field(c, def->target, sizeof(def->target), "target") ||
	    set_field(c, def->auth_type, sizeof(def->auth_type), "auth-type") ||
	    set_field(c, def->auth_username, sizeof(def->auth_username), "auth-username") ||
	    set_field(c, def->auth_secret_file, sizeof(def->auth_secret_file), "auth-secret-file"))
		return 1;
	if (host) {
		/* host or host:port ([v6]:port) */
		const char *colon = strrchr(host, ':');
		size_t hlen = strlen(host);

		if (colon && (host[0] != '[' || colon[-1] == ']') && strchr(host, ':') == colon) {
			char *end;
			unsigned long port = strtoul(colon + 1, &end, 10);

			if (*end || colon[1] == '\0' || port > 65535)
				return vstor_error(c, -EINVAL, "invalid port in '%s'", host);
			def->source_port = (unsigned)port;
			hlen = (size_t)(colon - host);
		}
		if (hlen >= sizeof(def->source_host))
			return vstor_error(c, -EINVAL, "--source-host is too long");
		memcpy(def->source_host, host, hlen);
		def->source_host[hlen] = '\0';
	}
	if (opt_get(c, "source-port")) {
		char *end;
		unsigned long port = strtoul(opt_get(c, "source-port"), &end, 10);

		if (*end || port > 65535)
			return vstor_error(c, -EINVAL, "invalid --source-port");
		def->source_port = (unsigned)port;
	}
	for (unsigned i = 0; i < ndevs; i++) {
		if (strlen(devs[i]) >= sizeof(def->source_devs[0]))
			return vstor_error(c, -EINVAL, "--source-dev is too long");
		strcpy(def->source_devs[i], devs[i]);
	}
	def->nb_source_devs = ndevs;
	if (opt_get(c, "secret-usage") || opt_get(c, "secret-uuid"))
		return vstor_error(c, -ENOTSUP,
				   "vstor has no secret store: give the CHAP secret in a file "
				   "with --auth-secret-file");
	if (opt_get(c, "source-protocol-ver") &&
	    vs_pool_def_set_extra(def, "protocol_ver", opt_get(c, "source-protocol-ver")) < 0)
		return vstor_error(c, -EINVAL, "bad --source-protocol-ver");
	for (unsigned i = 0; i < nextra; i++) {
		char key[64];
		const char *eq = strchr(extra[i], '=');

		if (!eq || eq == extra[i] || (size_t)(eq - extra[i]) >= sizeof(key))
			return vstor_error(c, -EINVAL, "--extra takes KEY=VALUE, not '%s'",
					   extra[i]);
		memcpy(key, extra[i], (size_t)(eq - extra[i]));
		key[eq - extra[i]] = '\0';
		if (vs_pool_def_set_extra(def, key, eq + 1) < 0)
			return vstor_error(c, -EINVAL, "bad --extra '%s'", extra[i]);
	}
	return 0;
}

#define DEFINE_AS_OPTS                                                                           \
	{ "name", OT_DATA, true, "name of the pool" },                                           \
		{ "type", OT_DATA, true, "type of the pool" },                                   \
		{ "source-host", OT_DATA, false, "source host (host or host:port)" },            \
		{ "source-path", OT_DATA, false, "source path (NFS export)" },                   \
		{ "source-dev", OT_DATA_MULTI, false, "source device (PV, or the target IQN)" }, \
		{ "source-name", OT_DATA, false, "source name (volume group)" },                 \
		{ "target", OT_DATA, false, "target directory" },                                \
		{ "source-format", OT_STR, false, "format of the source (nfs, lvm2)" },          \
		{ "source-port", OT_STR, false, "port of the source host" },                     \
		{ "source-initiator", OT_STR, false, "iSCSI initiator IQN" },                    \
		{ "source-protocol-ver", OT_STR, false, "NFS protocol version" },                \
		{ "auth-type", OT_STR, false, "authentication type (chap)" },                    \
		{ "auth-username", OT_STR, false, "authentication user name" },                  \
		{ "auth-secret-file", OT_STR, false, "file holding the CHAP secret" },           \
		{ "secret-usage", OT_STR, false, "libvirt secret (not supported: use a file)" }, \
		{ "secret-uuid", OT_STR, false, "libvirt secret (not supported: use a file)" },  \
		{ "extra", OT_MULTI, false, "backend field KEY=VALUE (vstor extension)" },       \
	{                                                                                        \
		"print-xml", OT_BOOL, false, "print XML document, but don't define the pool"     \
	}

static int print_def(struct vstor_ctx *c, const struct vs_pool_def *def, bool active)
{
	char *json = vs_pool_def_to_json(def, active);

	if (!json)
		return vstor_error(c, -ENOMEM, "out of memory");
	fputs(json, stdout);
	free(json);
	return 0;
}

static void print_pool_xml(FILE *f, const struct vs_pool_def *d, const struct vs_pool_info *pi,
			   bool inactive);

static int define_def(struct vstor_ctx *c, struct vs_pool_def *def)
{
	vs_error_clear(&c->err);
	if (vs_pool_define(c->st, def, &c->err) < 0)
		return vstor_error_err(c, "Failed to define pool %s", def->name);
	return 0;
}

static int cmd_pool_define_as(struct vstor_ctx *c)
{
	struct vs_pool_def *def = calloc(1, sizeof(*def));
	int ret;

	if (!def)
		return vstor_error(c, -ENOMEM, "out of memory");
	ret = def_from_opts(c, def);
	if (ret == 0 && opt_bool(c, "print-xml"))
		print_pool_xml(stdout, def, NULL, true); /* as virsh: XML, pool-define reads it */
	else if (ret == 0 && (ret = define_def(c, def)) == 0)
		vstor_msg(c, "Pool %s defined\n\n", def->name);
	free(def);
	return ret;
}

static int start_pool(struct vstor_ctx *c, struct vs_pool *p, bool build, unsigned bflags)
{
	vs_error_clear(&c->err);
	if (build && vs_pool_build(p, bflags, &c->err) < 0)
		return vstor_error_err(c, "Failed to build pool %s", p->def.name);
	if (vs_pool_start(p, &c->err) < 0)
		return vstor_error_err(c, "Failed to start pool %s", p->def.name);
	return 0;
}

static unsigned build_flags(struct vstor_ctx *c)
{
	return (opt_bool(c, "overwrite") ? VS_POOL_BUILD_OVERWRITE : 0) |
	       (opt_bool(c, "no-overwrite") ? VS_POOL_BUILD_NO_OVERWRITE : 0);
}

/*
 * pool-create, pool-create-as: a transient pool. No daemon keeps transient
 * pools: it is defined, started (built first with --build), and undefined
 * at pool-destroy; a failed start leaves nothing defined. 0 or 1 (printed).
 */
static int create_transient(struct vstor_ctx *c, struct vs_pool_def *def)
{
	struct vs_pool *p;
	int ret;

	if (vs_pool_def_set_extra(def, "transient", "yes") < 0)
		return vstor_error(c, -EINVAL, "too many --extra fields");
	ret = define_def(c, def);
	if (ret)
		return ret;
	p = vstor_pool_get(c, def->name);
	if (!p)
		return 1;
	ret = start_pool(c, p, opt_bool(c, "build"), build_flags(c));
	if (ret)
		vs_pool_undefine(p, NULL);
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_create_as(struct vstor_ctx *c)
{
	struct vs_pool_def *def = calloc(1, sizeof(*def));
	int ret;

	if (!def)
		return vstor_error(c, -ENOMEM, "out of memory");
	ret = def_from_opts(c, def);
	if (ret == 0 && opt_bool(c, "print-xml"))
		print_pool_xml(stdout, def, NULL, true);
	else if (ret == 0 && (ret = create_transient(c, def)) == 0)
		vstor_msg(c, "Pool %s created\n\n", def->name);
	free(def);
	return ret;
}

/*
 * The definition in the file of --file (validated with --validate) into
 * @def; errors say "Failed to @verb pool from FILE". 0 or 1 (printed).
 */
static int def_from_file(struct vstor_ctx *c, struct vs_pool_def *def, const char *verb)
{
	const char *file = opt_get(c, "file");
	char what[VS_POOL_PATH_MAX + 32];
	char *text = NULL;
	int ret = 0;

	snprintf(what, sizeof(what), "Failed to %s pool from %s", verb, file);
	vs_error_clear(&c->err);
	if (vs_pool_read_file(file, &text, &c->err) < 0 ||
	    vs_pool_def_parse(def, text, file, NULL, &c->err) < 0)
		ret = vstor_error_err(c, "%s", what);
	else if (opt_bool(c, "validate"))
		ret = vstor_validate_file(c, file, "storagepool", what);
	free(text);
	return ret;
}

static int cmd_pool_define(struct vstor_ctx *c)
{
	struct vs_pool_def *def = calloc(1, sizeof(*def));
	int ret;

	if (!def)
		return vstor_error(c, -ENOMEM, "out of memory");
	ret = def_from_file(c, def, "define");
	if (ret == 0 && (ret = define_def(c, def)) == 0)
		vstor_msg(c, "Pool %s defined from %s\n\n", def->name, opt_get(c, "file"));
	free(def);
	return ret;
}

static int cmd_pool_create(struct vstor_ctx *c)
{
	struct vs_pool_def *def = calloc(1, sizeof(*def));
	int ret;

	if (!def)
		return vstor_error(c, -ENOMEM, "out of memory");
	ret = def_from_file(c, def, "create");
	if (ret == 0 && (ret = create_transient(c, def)) == 0)
		vstor_msg(c, "Pool %s created from %s\n\n", def->name, opt_get(c, "file"));
	free(def);
	return ret;
}

/* Commands of the form VERB POOL. */
static int with_pool(struct vstor_ctx *c, struct vs_pool **p)
{
	*p = vstor_pool_get(c, opt_get(c, "pool"));
	return *p ? 0 : 1;
}

static int cmd_pool_build(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (vs_pool_build(p, build_flags(c), &c->err) < 0)
		ret = vstor_error_err(c, "Failed to build pool %s", p->def.name);
	else
		vstor_msg(c, "Pool %s built\n\n", p->def.name);
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_start(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	ret = start_pool(c, p, opt_bool(c, "build"), build_flags(c));
	if (ret == 0)
		vstor_msg(c, "Pool %s started\n\n", p->def.name);
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_destroy(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);
	const char *transient;

	if (ret)
		return ret;
	if (vs_pool_stop(p, opt_bool(c, "force") ? VS_POOL_FORCE : 0, &c->err) < 0) {
		ret = vstor_error_err(c, "Failed to destroy pool %s", p->def.name);
	} else {
		transient = vs_pool_def_extra(&p->def, "transient");
		if (transient && !strcmp(transient, "yes"))
			vs_pool_undefine(p, NULL);
		vstor_msg(c, "Pool %s destroyed\n\n", p->def.name);
	}
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_delete(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (vs_pool_delete(p, opt_bool(c, "force") ? VS_POOL_FORCE : 0, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to delete pool %s", p->def.name);
	else
		vstor_msg(c, "Pool %s deleted\n\n", p->def.name);
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_undefine(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (vs_pool_undefine(p, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to undefine pool %s", p->def.name);
	else
		vstor_msg(c, "Pool %s has been undefined\n\n", p->def.name);
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_autostart(struct vstor_ctx *c)
{
	bool on = !opt_bool(c, "disable");
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (vs_pool_set_autostart(p, on, &c->err) < 0)
		ret = vstor_error_err(c, "failed to %smark pool %s as autostarted", on ? "" : "un",
				      p->def.name);
	else
		vstor_msg(c, "Pool %s %s as autostarted\n\n", p->def.name,
			  on ? "marked" : "unmarked");
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_refresh(struct vstor_ctx *c)
{
	struct vs_pool_info info;
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (vs_pool_refresh(p, &info, NULL, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to refresh pool %s", p->def.name);
	else
		vstor_msg(c, "Pool %s refreshed\n\n", p->def.name);
	vs_pool_free(p);
	return ret;
}

static void size_cell(char *buf, size_t len, uint64_t v, bool bytes)
{
	if (bytes)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else
		vstor_pretty_size(v, buf, len);
}

static void json_pool(struct json_writer *w, const struct vs_pool *p, const struct vs_pool_info *pi,
		      bool have_info)
{
	const char *transient = vs_pool_def_extra(&p->def, "transient");

	json_obj_begin(w, NULL);
	json_str(w, "name", p->def.name);
	json_str(w, "uuid", p->def.uuid);
	json_str(w, "type", p->def.type);
	json_str(w, "state", p->active ? "active" : "inactive");
	json_bool(w, "autostart", p->def.autostart);
	json_bool(w, "persistent", !(transient && !strcmp(transient, "yes")));
	if (have_info) {
		json_uint(w, "capacity", pi->capacity);
		json_uint(w, "allocation", pi->allocation);
		json_uint(w, "available", pi->available);
	}
	json_obj_end(w);
}

static int cmd_pool_list(struct vstor_ctx *c)
{
	bool all = opt_bool(c, "all"), inactive = opt_bool(c, "inactive");
	bool details = opt_bool(c, "details"), names_only = opt_bool(c, "name");
	bool uuids = opt_bool(c, "uuid");
	const char *type = opt_get(c, "type");
	struct vstor_table t = { 0 };
	struct json_writer w;
	char **names = NULL;
	size_t n = 0;

	if (vs_pool_state_list(c->st, &names, &n, &c->err) < 0)
		return vstor_error_err(c, "Failed to list pools");
	if (details) {
		static const char *const h[] = { "Name",       "State",	   "Autostart",
						 "Persistent", "Capacity", "Allocation",
						 "Available" };

		t.ncols = 7;
		memcpy(t.head, h, sizeof(h));
	} else {
		static const char *const h[] = { "Name", "State", "Autostart" };

		t.ncols = 3;
		memcpy(t.head, h, sizeof(h));
	}
	if (c->json) {
		json_init(&w, stdout, true);
		json_arr_begin(&w, NULL);
	}
	for (size_t i = 0; i < n; i++) {
		struct vs_pool_info pi = { 0 };
		struct vs_pool *p = NULL;
		bool have_info = false;
		const char *transient;

		struct vs_error lerr = { 0 };

		if (vs_pool_load(c->st, names[i], &p, &lerr) < 0) {
			/* A damaged file must not hide the other pools. */
			if (!c->json)
				fprintf(stderr, "warning: pool '%s': %s\n", names[i], lerr.msg);
			continue;
		}
		if ((inactive && p->active) || (!all && !inactive && !p->active) ||
		    (type && strcmp(type, p->def.type)) ||
		    (opt_bool(c, "autostart") && !p->def.autostart) ||
		    (opt_bool(c, "no-autostart") && p->def.autostart)) {
			vs_pool_free(p);
			continue;
		}
		transient = vs_pool_def_extra(&p->def, "transient");
		if (p->active && (details || c->json))
			have_info = vs_pool_refresh(p, &pi, NULL, NULL) == 0;
		if (c->json) {
			json_pool(&w, p, &pi, have_info);
		} else if (names_only) {
			printf("%s\n", p->def.name);
		} else if (uuids) {
			printf("%s\n", p->def.uuid);
		} else {
			char cap[32] = "-", alloc[32] = "-", avail[32] = "-";
			const char *cells[7] = {
				p->def.name,
				p->active ? (details ? "running" : "active") : "inactive",
				p->def.autostart ? "yes" : "no",
				transient && !strcmp(transient, "yes") ? "no" : "yes",
				cap,
				alloc,
				avail,
			};

			if (have_info) {
				vstor_pretty_size(pi.capacity, cap, sizeof(cap));
				vstor_pretty_size(pi.allocation, alloc, sizeof(alloc));
				vstor_pretty_size(pi.available, avail, sizeof(avail));
			}
			vstor_table_add(&t, cells);
		}
		vs_pool_free(p);
	}
	vs_pool_names_free(names, n);
	if (c->json) {
		json_arr_end(&w);
		putchar('\n');
	} else if (!names_only && !uuids) {
		vstor_table_print(&t);
	}
	return 0;
}

static int cmd_pool_info(struct vstor_ctx *c)
{
	struct vs_pool_info pi = { 0 };
	bool bytes = opt_bool(c, "bytes"), have_info = false;
	const char *transient;
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (p->active) {
		if (vs_pool_refresh(p, &pi, NULL, &c->err) < 0) {
			ret = vstor_error_err(c, "Failed to get information of pool %s",
					      p->def.name);
			vs_pool_free(p);
			return ret;
		}
		have_info = true;
	}
	transient = vs_pool_def_extra(&p->def, "transient");
	if (c->json) {
		struct json_writer w;

		json_init(&w, stdout, true);
		json_pool(&w, p, &pi, have_info);
		putchar('\n');
	} else {
		char buf[32];

		printf("%-15s %s\n", "Name:", p->def.name);
		printf("%-15s %s\n", "UUID:", p->def.uuid);
		printf("%-15s %s\n", "State:", p->active ? "running" : "inactive");
		printf("%-15s %s\n",
		       "Persistent:", transient && !strcmp(transient, "yes") ? "no" : "yes");
		printf("%-15s %s\n", "Autostart:", p->def.autostart ? "yes" : "no");
		if (have_info) {
			size_cell(buf, sizeof(buf), pi.capacity, bytes);
			printf("%-15s %s\n", "Capacity:", buf);
			size_cell(buf, sizeof(buf), pi.allocation, bytes);
			printf("%-15s %s\n", "Allocation:", buf);
			size_cell(buf, sizeof(buf), pi.available, bytes);
			printf("%-15s %s\n", "Available:", buf);
		}
		putchar('\n');
	}
	vs_pool_free(p);
	return 0;
}

/* An element <@name>@text</@name>, or <@name @attr='@val'/> when @attr is set. */
static void xml_elem(FILE *f, const char *indent, const char *name, const char *attr,
		     const char *val)
{
	if (!val[0])
		return;
	fprintf(f, "%s<%s", indent, name);
	if (attr) {
		fprintf(f, " %s='", attr);
		vs_pool_xml_escape(f, val);
		fprintf(f, "'/>\n");
	} else {
		fputc('>', f);
		vs_pool_xml_escape(f, val);
		fprintf(f, "</%s>\n", name);
	}
}

/*
 * <permissions> of the target directory, as libvirt shows them: what the
 * directory has (active dir pools, unless @inactive: the definition only),
 * else what the definition asks for.
 */
static void target_permissions(FILE *f, const struct vs_pool_def *d, bool inactive)
{
	struct stat st;

	if (!inactive && !strcmp(d->type, "dir") && stat(d->target, &st) == 0) {
		fprintf(f,
			"    <permissions>\n      <mode>%04o</mode>\n      <owner>%u</owner>\n"
			"      <group>%u</group>\n    </permissions>\n",
			(unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid);
		return;
	}
	if (!d->perm_mode[0] && !d->perm_owner[0] && !d->perm_group[0])
		return;
	fprintf(f, "    <permissions>\n");
	xml_elem(f, "      ", "mode", NULL, d->perm_mode);
	xml_elem(f, "      ", "owner", NULL, d->perm_owner);
	xml_elem(f, "      ", "group", NULL, d->perm_group);
	fprintf(f, "    </permissions>\n");
}

/* The children of a pool's <source> element (indent 4), as libvirt writes them. */
static void print_source_xml(FILE *f, const struct vs_pool_def *d)
{
	if (d->source_host[0]) {
		fprintf(f, "    <host name='");
		vs_pool_xml_escape(f, d->source_host);
		if (d->source_port)
			fprintf(f, "' port='%u", d->source_port);
		fprintf(f, "'/>\n");
	}
	xml_elem(f, "    ", "dir", "path", d->source_path);
	for (unsigned i = 0; i < d->nb_source_devs; i++)
		xml_elem(f, "    ", "device", "path", d->source_devs[i]);
	xml_elem(f, "    ", "name", NULL, d->source_name);
	xml_elem(f, "    ", "format", "type", d->source_format);
	if (d->initiator_iqn[0]) {
		fprintf(f, "    <initiator>\n");
		xml_elem(f, "      ", "iqn", "name", d->initiator_iqn);
		fprintf(f, "    </initiator>\n");
	}
	if (d->auth_type[0]) {
		fprintf(f, "    <auth type='");
		vs_pool_xml_escape(f, d->auth_type);
		fprintf(f, "' username='");
		vs_pool_xml_escape(f, d->auth_username);
		fprintf(f, "'>\n");
		/* file= is vstor's: libvirt names a secret of libvirtd's store. */
		xml_elem(f, "      ", "secret", "file", d->auth_secret_file);
		fprintf(f, "    </auth>\n");
	}
}

/*
 * libvirt's pool XML of definition @d, as virsh writes it (pool-define reads
 * it back): with the sizes of @pi when not NULL, the uuid when there is one,
 * and the target's permissions as the directory has them unless @inactive.
 */
static void print_pool_xml(FILE *f, const struct vs_pool_def *d, const struct vs_pool_info *pi,
			   bool inactive)
{
	fprintf(f, "<pool type='");
	vs_pool_xml_escape(f, d->type);
	fprintf(f, "'>\n");
	xml_elem(f, "  ", "name", NULL, d->name);
	xml_elem(f, "  ", "uuid", NULL, d->uuid);
	if (pi) {
		fprintf(f, "  <capacity unit='bytes'>%llu</capacity>\n",
			(unsigned long long)pi->capacity);
		fprintf(f, "  <allocation unit='bytes'>%llu</allocation>\n",
			(unsigned long long)pi->allocation);
		fprintf(f, "  <available unit='bytes'>%llu</available>\n",
			(unsigned long long)pi->available);
	}
	fprintf(f, "  <source>\n");
	print_source_xml(f, d);
	fprintf(f, "  </source>\n");
	if (d->target[0]) {
		fprintf(f, "  <target>\n");
		xml_elem(f, "    ", "path", NULL, d->target);
		target_permissions(f, d, inactive);
		fprintf(f, "  </target>\n");
	}
	fprintf(f, "</pool>\n");
}

/* libvirt's pool XML, as virsh pool-dumpxml writes it (pool-define reads it back). */
static int cmd_pool_dumpxml(struct vstor_ctx *c)
{
	struct vstor_xml xml;
	struct vs_pool_info pi;
	FILE *f;
	struct vs_pool *p;
	bool live;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	live = p->active && !opt_bool(c, "inactive");
	f = vstor_xml_begin(c, &xml);
	if (f && !live) {
		/* The definition it takes when it stops, when it was redefined while running. */
		struct vs_pool_def *next = calloc(1, sizeof(*next));

		if (next && vs_pool_load_next(c->st, p->def.name, next, NULL) == 0)
			print_pool_xml(f, next, NULL, true);
		else
			print_pool_xml(f, &p->def, NULL, true);
		free(next);
	} else if (f) {
		print_pool_xml(f, &p->def, vs_pool_refresh(p, &pi, NULL, NULL) == 0 ? &pi : NULL,
			       false);
	}
	vs_pool_free(p);
	return vstor_xml_end(c, f, &xml);
}

/* Whether files @a and @b hold the same bytes (false if either cannot be read). */
static bool same_file_text(const char *a, const char *b)
{
	char *ta = NULL, *tb = NULL;
	bool same = vs_pool_read_file(a, &ta, NULL) == 0 && vs_pool_read_file(b, &tb, NULL) == 0 &&
		    !strcmp(ta, tb);

	free(ta);
	free(tb);
	return same;
}

/* Write @def's inactive XML into the new file @path (from mkstemps: @fd). 0 or -errno. */
static int write_pool_xml(int fd, const char *path, const struct vs_pool_def *def)
{
	FILE *f = fdopen(fd, "w");

	(void)path;
	if (!f) {
		int e = -errno;

		close(fd);
		return e;
	}
	print_pool_xml(f, def, NULL, true);
	return fclose(f) == 0 ? 0 : -errno;
}

/*
 * pool-edit, as virsh: the pool's XML (the definition it will run next) in
 * a temporary file, $VISUAL or $EDITOR (default vi) on it, and the edited
 * file defined over the pool, unless it did not change.
 */
static int cmd_pool_edit(struct vstor_ctx *c)
{
	const char *editor = getenv("VISUAL"), *tmp = getenv("TMPDIR");
	char orig[VS_POOL_PATH_MAX], edit[VS_POOL_PATH_MAX];
	char *cmd = NULL, *text = NULL;
	struct vs_pool_def *def = NULL, *next = NULL;
	const struct vs_pool_def *shown;
	bool made_orig = false, made_edit = false;
	struct vs_pool *p;
	int fd, st, ret = with_pool(c, &p);

	if (ret)
		return ret;
	if (!editor || !*editor)
		editor = getenv("EDITOR");
	if (!editor || !*editor)
		editor = "vi";
	if (!tmp || !*tmp)
		tmp = "/tmp";
	next = calloc(1, sizeof(*next));
	def = calloc(1, sizeof(*def));
	if (!next || !def) {
		ret = vstor_error(c, -ENOMEM, "out of memory");
		goto out;
	}
	shown = vs_pool_load_next(c->st, p->def.name, next, NULL) == 0 ? next : &p->def;
	/* The editor works on a copy: the original tells whether it changed. */
	snprintf(orig, sizeof(orig), "%s/vstor-pool-XXXXXX.xml", tmp);
	snprintf(edit, sizeof(edit), "%s/vstor-pool-XXXXXX.xml", tmp);
	fd = mkstemps(orig, 4);
	made_orig = fd >= 0;
	ret = fd < 0 ? -errno : write_pool_xml(fd, orig, shown);
	if (ret == 0) {
		fd = mkstemps(edit, 4);
		made_edit = fd >= 0;
		ret = fd < 0 ? -errno : write_pool_xml(fd, edit, shown);
	}
	if (ret < 0) {
		ret = vstor_error(c, ret, "cannot write a temporary file in %s", tmp);
		goto out;
	}
	if (asprintf(&cmd, "%s %s", editor, edit) < 0) {
		cmd = NULL;
		ret = vstor_error(c, -ENOMEM, "out of memory");
		goto out;
	}
	st = system(cmd);
	if (st != 0) {
		ret = vstor_error(
			c, -EIO,
			"internal error: Child process (sh -c '%s') unexpected exit status %d", cmd,
			st > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : 127);
		goto out;
	}
	if (same_file_text(orig, edit)) {
		vstor_msg(c, "Pool %s XML configuration not changed.\n\n", p->def.name);
		goto out;
	}
	vs_error_clear(&c->err);
	if (vs_pool_read_file(edit, &text, &c->err) < 0 ||
	    vs_pool_def_parse(def, text, edit, NULL, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to define pool from %s", edit);
	else if ((ret = define_def(c, def)) == 0)
		vstor_msg(c, "Pool %s XML configuration edited.\n\n", def->name);
out:
	if (made_orig)
		unlink(orig);
	if (made_edit)
		unlink(edit);
	free(text);
	free(cmd);
	free(def);
	free(next);
	vs_pool_free(p);
	return ret;
}

/* An <enum name=@name> of @values (NULL-terminated), as libvirt's capabilities list them. */
static void caps_enum(const char *name, const char *const *values)
{
	printf("      <enum name='%s'>\n", name);
	for (; *values; values++)
		printf("        <value>%s</value>\n", *values);
	printf("      </enum>\n");
}

/*
 * virsh pool-capabilities: every pool type libvirt knows, supported='yes'
 * for those registered in this build, with the source formats a definition
 * takes and the volume formats vol-create makes (the first is the default).
 */
static int cmd_pool_capabilities(struct vstor_ctx *c)
{
	static const char *const libvirt_types[] = {
		"dir",	 "fs",	"netfs",    "logical", "disk", "iscsi",	   "iscsi-direct", "scsi",
		"mpath", "rbd", "sheepdog", "gluster", "zfs",  "vstorage", NULL,
	};
	const char *const *ours = vs_pool_backend_types();

	(void)c;
	printf("<storagepoolCapabilities>\n");
	for (const char *const *t = libvirt_types; *t; t++) {
		const struct vs_pool_backend *be = vs_pool_backend_find(*t);

		if (!be) {
			printf("  <pool type='%s' supported='no'/>\n", *t);
			continue;
		}
		printf("  <pool type='%s' supported='yes'>\n", *t);
		if (be->source_formats) {
			printf("    <poolOptions>\n      <defaultFormat type='%s'/>\n",
			       be->source_formats[0]);
			caps_enum("sourceFormatType", be->source_formats);
			printf("    </poolOptions>\n");
		}
		if (be->vol_formats) {
			printf("    <volOptions>\n      <defaultFormat type='%s'/>\n",
			       be->default_format);
			caps_enum("targetFormatType", be->vol_formats);
			printf("    </volOptions>\n");
		}
		printf("  </pool>\n");
	}
	/* Types of vstor's own that libvirt does not have. */
	for (; *ours; ours++) {
		bool known = false;

		for (const char *const *t = libvirt_types; *t && !known; t++)
			known = !strcmp(*t, *ours);
		if (!known)
			printf("  <pool type='%s' supported='yes'/>\n", *ours);
	}
	printf("</storagepoolCapabilities>\n");
	return 0;
}

/* Print the sources @type finds from @spec, as virsh find-storage-pool-sources. */
static int find_sources(struct vstor_ctx *c, const char *type, const struct vs_pool_def *spec)
{
	const struct vs_pool_backend *be = vs_pool_backend_find(type);
	struct vs_pool_def *found = NULL;
	size_t n = 0;

	if (!be)
		return vstor_error(c, -EINVAL, "unknown storage pool type '%s'", type);
	if (!be->find_sources)
		return vstor_error(c, -ENOTSUP,
				   "this function is not supported by the connection driver: "
				   "pool type '%s' does not support source discovery",
				   type);
	vs_error_clear(&c->err);
	if (be->find_sources(spec, &found, &n, &c->err) < 0)
		return vstor_error_err(c, "Failed to find pool sources");
	printf("<sources>\n");
	for (size_t i = 0; i < n; i++) {
		printf("  <source>\n");
		print_source_xml(stdout, &found[i]);
		printf("  </source>\n");
	}
	printf("</sources>\n");
	free(found);
	return 0;
}

static int cmd_find_sources_as(struct vstor_ctx *c)
{
	struct vs_pool_def *spec = calloc(1, sizeof(*spec));
	const char *port = opt_get(c, "port");
	int ret = 1;

	if (!spec)
		return vstor_error(c, -ENOMEM, "out of memory");
	if (set_field(c, spec->source_host, sizeof(spec->source_host), "host") ||
	    set_field(c, spec->initiator_iqn, sizeof(spec->initiator_iqn), "initiator"))
		goto out;
	if (port) {
		char *end;
		unsigned long v = strtoul(port, &end, 10);

		if (*end || !port[0] || v == 0 || v > 65535) {
			ret = vstor_error(c, -EINVAL, "invalid port '%s'", port);
			goto out;
		}
		spec->source_port = (unsigned)v;
	}
	ret = find_sources(c, opt_get(c, "type"), spec);
out:
	free(spec);
	return ret;
}

/* find-storage-pool-sources TYPE [SRCSPEC]: the spec is libvirt's <source> XML. */
static int cmd_find_sources(struct vstor_ctx *c)
{
	struct vs_pool_def *spec = calloc(1, sizeof(*spec));
	const char *file = opt_get(c, "srcSpec");
	struct px_elem *root = NULL;
	char *text = NULL, msg[256];
	int ret = 1;

	if (!spec)
		return vstor_error(c, -ENOMEM, "out of memory");
	if (file) {
		const struct px_elem *h, *iqn;

		vs_error_clear(&c->err);
		if (vs_pool_read_file(file, &text, &c->err) < 0) {
			ret = vstor_error_err(c, "Failed to read %s", file);
			goto out;
		}
		if (px_parse(text, &root, msg, sizeof(msg)) < 0 || strcmp(root->name, "source")) {
			ret = vstor_error(c, -EINVAL, "%s: expected a <source> element%s%s", file,
					  root ? "" : ": ", root ? "" : msg);
			goto out;
		}
		h = px_child(root, "host");
		if (h && px_attr(h, "name")) {
			if (strlen(px_attr(h, "name")) >= sizeof(spec->source_host)) {
				ret = vstor_error(c, -EINVAL, "%s: host name too long", file);
				goto out;
			}
			strcpy(spec->source_host, px_attr(h, "name"));
			if (px_attr(h, "port"))
				spec->source_port = (unsigned)strtoul(px_attr(h, "port"), NULL, 10);
		}
		iqn = px_child(px_child(root, "initiator"), "iqn");
		if (iqn && px_attr(iqn, "name") &&
		    strlen(px_attr(iqn, "name")) < sizeof(spec->initiator_iqn))
			strcpy(spec->initiator_iqn, px_attr(iqn, "name"));
	}
	ret = find_sources(c, opt_get(c, "type"), spec);
out:
	px_free(root);
	free(text);
	free(spec);
	return ret;
}

static int cmd_pool_dump(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	ret = print_def(c, &p->def, p->active && !opt_bool(c, "inactive"));
	vs_pool_free(p);
	return ret;
}

static int cmd_pool_uuid(struct vstor_ctx *c)
{
	struct vs_pool *p;
	int ret = with_pool(c, &p);

	if (ret)
		return ret;
	printf("%s\n\n", p->def.uuid);
	vs_pool_free(p);
	return 0;
}

/* pool-name UUID: the pool with that uuid. */
static int cmd_pool_name(struct vstor_ctx *c)
{
	const char *uuid = opt_get(c, "pool");
	char **names = NULL;
	size_t n = 0;
	int ret = 1;

	if (vs_pool_state_list(c->st, &names, &n, &c->err) < 0)
		return vstor_error_err(c, "Failed to list pools");
	for (size_t i = 0; i < n && ret; i++) {
		struct vs_pool *p = NULL;

		if (vs_pool_load(c->st, names[i], &p, NULL) == 0 &&
		    !strcasecmp(p->def.uuid, uuid)) {
			printf("%s\n\n", p->def.name);
			ret = 0;
		}
		vs_pool_free(p);
	}
	vs_pool_names_free(names, n);
	if (ret)
		vstor_error(
			c, -ENOENT,
			"failed to get pool '%s'\nerror: Storage pool not found: no storage pool "
			"with matching uuid '%s'",
			uuid, uuid);
	return ret;
}

static int cmd_autostart(struct vstor_ctx *c)
{
	char **names = NULL;
	size_t n = 0;
	int ret = 0;

	if (vs_pool_state_list(c->st, &names, &n, &c->err) < 0)
		return vstor_error_err(c, "Failed to list pools");
	for (size_t i = 0; i < n; i++) {
		struct vs_pool *p = NULL;

		vs_error_clear(&c->err);
		if (vs_pool_load(c->st, names[i], &p, &c->err) < 0) {
			ret = vstor_error_err(c, "failed to get pool '%s'", names[i]);
			continue;
		}
		if (p->def.autostart && !p->active) {
			if (start_pool(c, p, false, 0))
				ret = 1;
			else
				vstor_msg(c, "Pool %s started\n", p->def.name);
		}
		vs_pool_free(p);
	}
	vs_pool_names_free(names, n);
	return ret;
}

static const struct opt_spec define_as_opts[] = { DEFINE_AS_OPTS, { NULL } };
static const struct opt_spec create_as_opts[] = {
	DEFINE_AS_OPTS,
	{ "build", OT_BOOL, false, "build the pool before starting it" },
	{ "overwrite", OT_BOOL, false, "with --build: overwrite what is there" },
	{ "no-overwrite", OT_BOOL, false, "with --build: refuse to overwrite" },
	{ NULL },
};
static const struct opt_spec file_opts[] = {
	{ "file", OT_DATA, true, "file holding the definition (JSON or libvirt pool XML)" },
	{ "validate", OT_BOOL, false, "validate the XML against libvirt's schema" },
	{ NULL },
};
static const struct opt_spec create_file_opts[] = {
	{ "file", OT_DATA, true, "file holding the definition (JSON or libvirt pool XML)" },
	{ "build", OT_BOOL, false, "build the pool before starting it" },
	{ "overwrite", OT_BOOL, false, "with --build: overwrite what is there" },
	{ "no-overwrite", OT_BOOL, false, "with --build: refuse to overwrite" },
	{ "validate", OT_BOOL, false, "validate the XML against libvirt's schema" },
	{ NULL },
};
static const struct opt_spec pool_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ NULL },
};
static const struct opt_spec force_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "force", OT_BOOL, false, "even while a volume of the pool is open (vstor extension)" },
	{ NULL },
};
static const struct opt_spec build_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "overwrite", OT_BOOL, false, "overwrite what is there" },
	{ "no-overwrite", OT_BOOL, false, "refuse to overwrite" },
	{ NULL },
};
static const struct opt_spec start_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "build", OT_BOOL, false, "build the pool first" },
	{ "overwrite", OT_BOOL, false, "with --build: overwrite what is there" },
	{ "no-overwrite", OT_BOOL, false, "with --build: refuse to overwrite" },
	{ NULL },
};
static const struct opt_spec autostart_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "disable", OT_BOOL, false, "disable autostarting" },
	{ NULL },
};
static const struct opt_spec info_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "bytes", OT_BOOL, false, "sizes in bytes" },
	{ NULL },
};
static const struct opt_spec dump_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "inactive", OT_BOOL, false, "the definition only (active: false)" },
	VSTOR_XPATH_OPT,
	VSTOR_WRAP_OPT,
	{ NULL },
};
static const struct opt_spec list_opts[] = {
	{ "all", OT_BOOL, false, "list inactive and active pools" },
	{ "inactive", OT_BOOL, false, "list inactive pools" },
	{ "details", OT_BOOL, false, "capacity, allocation and available too" },
	{ "autostart", OT_BOOL, false, "pools marked autostart" },
	{ "no-autostart", OT_BOOL, false, "pools not marked autostart" },
	{ "persistent", OT_BOOL, false, "accepted (pools are persistent)" },
	{ "transient", OT_BOOL, false, "accepted" },
	{ "type", OT_STR, false, "only pools of this type" },
	{ "name", OT_BOOL, false, "names only" },
	{ "uuid", OT_BOOL, false, "UUIDs only" },
	{ NULL },
};
static const struct opt_spec no_opts[] = { { NULL } };
static const struct opt_spec find_as_opts[] = {
	{ "type", OT_DATA, true, "type of storage pool sources to find" },
	{ "host", OT_DATA, false, "optional host to query" },
	{ "port", OT_DATA, false, "optional port to query" },
	{ "initiator", OT_STR, false, "optional initiator IQN to use for query" },
	{ NULL },
};
static const struct opt_spec find_opts[] = {
	{ "type", OT_DATA, true, "type of storage pool sources to discover" },
	{ "srcSpec", OT_DATA, false, "optional file of source xml to query for pools" },
	{ NULL },
};

const struct vstor_cmd vstor_pool_cmds[] = {
	{ "autostart", cmd_autostart, no_opts, "start every pool marked autostart", true },
	{ "find-storage-pool-sources", cmd_find_sources, find_opts,
	  "discover potential storage pool sources", false },
	{ "find-storage-pool-sources-as", cmd_find_sources_as, find_as_opts,
	  "find potential storage pool sources", false },
	{ "pool-autostart", cmd_pool_autostart, autostart_opts, "autostart a pool", true },
	{ "pool-build", cmd_pool_build, build_opts, "build a pool", false },
	{ "pool-capabilities", cmd_pool_capabilities, no_opts, "storage pool capabilities", false },
	{ "pool-create", cmd_pool_create, create_file_opts,
	  "create a pool from a JSON or libvirt XML file (defined, started, undefined at destroy)",
	  true },
	{ "pool-create-as", cmd_pool_create_as, create_as_opts,
	  "create a pool from a set of args (defined, started, undefined at destroy)", true },
	{ "pool-define", cmd_pool_define, file_opts,
	  "define an inactive pool from a JSON or libvirt XML file", true },
	{ "pool-define-as", cmd_pool_define_as, define_as_opts, "define a pool from a set of args",
	  true },
	{ "pool-delete", cmd_pool_delete, force_opts, "delete a pool", false },
	{ "pool-destroy", cmd_pool_destroy, force_opts, "destroy (stop) a pool", true },
	{ "pool-dump", cmd_pool_dump, dump_opts, "pool information in JSON", false },
	{ "pool-dumpxml", cmd_pool_dumpxml, dump_opts, "pool information in libvirt's XML", false },
	{ "pool-edit", cmd_pool_edit, pool_opts, "edit XML configuration for a storage pool",
	  true },
	{ "pool-info", cmd_pool_info, info_opts, "storage pool information", false },
	{ "pool-list", cmd_pool_list, list_opts, "list pools", false },
	{ "pool-name", cmd_pool_name, pool_opts, "convert a pool UUID to pool name", false },
	{ "pool-refresh", cmd_pool_refresh, pool_opts, "refresh a pool", false },
	{ "pool-start", cmd_pool_start, start_opts, "start a (previously defined) inactive pool",
	  true },
	{ "pool-undefine", cmd_pool_undefine, pool_opts, "undefine an inactive pool", true },
	{ "pool-uuid", cmd_pool_uuid, pool_opts, "convert a pool name to pool UUID", false },
	{ NULL, NULL, NULL, NULL, false },
};
