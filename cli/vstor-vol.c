/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vstor: the vol-* commands. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"
#include "json.h"
#include "pool-parse.h"
#include "vstor.h"

#define COPY_CHUNK (1024 * 1024)
#define ZERO_BLOCK 4096

static bool is_zero(const uint8_t *b, size_t len)
{
	return len == 0 || (b[0] == 0 && !memcmp(b, b + 1, len - 1));
}

/* Volume of the command: --vol (positional) and --pool. */
static int get_vol(struct vstor_ctx *c, struct vs_pool **p, char *name)
{
	return vstor_vol_get(c, opt_get(c, "vol"), opt_get(c, "pool"), p, name);
}

/*
 * The command's volume and what the pool says of it. Returns 0, or 1 after
 * the error is printed (and the pool freed).
 */
static int get_vol_info(struct vstor_ctx *c, struct vs_pool **p, char *name, struct vs_vol_info *v)
{
	if (get_vol(c, p, name))
		return 1;
	if (vs_pool_vol_info(*p, name, v, &c->err) < 0) {
		vs_pool_free(*p);
		*p = NULL;
		return vstor_error_err(c, "failed to get vol '%s'", name);
	}
	return 0;
}

/* "mode" (octal, as a string), "owner", "group": what vol-create's JSON takes back. */
static void json_perms(struct json_writer *w, const struct vs_vol_info *v)
{
	char mode[8];

	if (!v->has_perms)
		return;
	snprintf(mode, sizeof(mode), "%04o", (unsigned)v->mode);
	json_str(w, "mode", mode);
	json_uint(w, "owner", v->owner);
	json_uint(w, "group", v->group);
}

static void json_vol(struct json_writer *w, const char *key, const struct vs_vol_info *v)
{
	json_obj_begin(w, key);
	json_str(w, "name", v->name);
	json_str(w, "path", v->path);
	json_str(w, "type", vs_vol_type_name(v->type));
	json_str(w, "format", v->format);
	json_uint(w, "capacity", v->capacity);
	json_uint(w, "allocation", v->allocation);
	if (v->physical)
		json_uint(w, "physical", v->physical);
	if (v->encryption[0])
		json_str(w, "encryption", v->encryption);
	if (v->backing[0]) {
		json_str(w, "backing", v->backing);
		if (v->backing_format[0])
			json_str(w, "backing-format", v->backing_format);
	}
	json_perms(w, v);
	json_obj_end(w);
}

/* --- vol-create-as, vol-create, vol-create-from, vol-clone ------------------ */

/*
 * Resolve --backing-vol: a volume of @p by name, or the path of a volume of
 * any active pool (virsh looks a volume up by path too); never a free host
 * path, which the volume could not open anyway (backing files of pool
 * volumes resolve through the pools).
 */
static int resolve_backing(struct vstor_ctx *c, struct vs_pool *p, const char *vol, const char *fmt,
			   struct vs_vol_create_args *a, struct vs_vol_info *bi)
{
	char pname[VS_POOL_NAME_MAX + 1], vname[VS_POOL_NAME_MAX + 1];
	struct vs_pool *bp = NULL;
	int ret;

	if (!strchr(vol, '/') && vs_pool_vol_info(p, vol, bi, NULL) == 0)
		goto found;
	if (vs_pool_find_vol_by_path(c->st, vol, pname, vname, NULL) == 0 &&
	    vs_pool_load(c->st, pname, &bp, NULL) == 0) {
		ret = vs_pool_vol_info(bp, vname, bi, NULL);
		vs_pool_free(bp);
		if (ret == 0)
			goto found;
	}
	return vstor_error(c, -ENOENT,
			   "Storage volume not found: no storage vol with matching name '%s'", vol);
found:
	a->backing_path = bi->path;
	a->backing_format = fmt ? fmt : bi->format;
	return 0;
}

static int create_vol(struct vstor_ctx *c, struct vs_pool *p, const struct vs_vol_create_args *a)
{
	vs_error_clear(&c->err);
	if (vs_pool_vol_create(p, a, &c->err) < 0)
		return vstor_error_err(c, "Failed to create vol %s", a->name);
	return 0;
}

static int cmd_vol_create_as(struct vstor_ctx *c)
{
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	struct vs_vol_info bi;
	const char *alloc = opt_get(c, "allocation"), *bv = opt_get(c, "backing-vol");
	struct vs_pool *p;
	int ret;

	if (vstor_parse_size(opt_get(c, "capacity"), &a.capacity) < 0)
		return vstor_error(c, -EINVAL, "Malformed size %s", opt_get(c, "capacity"));
	if (alloc && vstor_parse_size(alloc, &a.allocation) < 0)
		return vstor_error(c, -EINVAL, "Malformed size %s", alloc);
	a.name = opt_get(c, "name");
	a.format = opt_get(c, "format");
	a.prealloc_metadata = opt_bool(c, "prealloc-metadata");
	a.encrypt_secret = opt_get(c, "encryption-secret");
	a.encrypt_iter_time = opt_get(c, "encryption-iter-time");
	if (a.encrypt_iter_time && !a.encrypt_secret)
		return vstor_error(c, -EINVAL, "--encryption-iter-time needs --encryption-secret");
	p = vstor_pool_get(c, opt_get(c, "pool"));
	if (!p)
		return 1;
	ret = bv ? resolve_backing(c, p, bv, opt_get(c, "backing-vol-format"), &a, &bi) : 0;
	if (ret == 0 && a.backing_path && !a.format)
		a.format = "qcow2";
	if (ret == 0 && opt_bool(c, "print-xml")) {
		/* The volume XML as virsh prints it, which vol-create reads. */
		printf("<volume>\n  <name>");
		vs_pool_xml_escape(stdout, a.name);
		printf("</name>\n  <capacity>%llu</capacity>\n", (unsigned long long)a.capacity);
		if (a.allocation != UINT64_MAX)
			printf("  <allocation>%llu</allocation>\n",
			       (unsigned long long)a.allocation);
		printf("  <target>\n    <format type='");
		vs_pool_xml_escape(stdout, a.format ? a.format : p->backend->default_format);
		printf("'/>\n");
		if (a.encrypt_secret) {
			printf("    <encryption format='luks'>\n"
			       "      <secret type='passphrase' uuid='");
			vs_pool_xml_escape(stdout, a.encrypt_secret);
			printf("'/>\n    </encryption>\n");
		}
		printf("  </target>\n");
		if (a.backing_path) {
			printf("  <backingStore>\n    <path>");
			vs_pool_xml_escape(stdout, a.backing_path);
			printf("</path>\n");
			if (a.backing_format) {
				printf("    <format type='");
				vs_pool_xml_escape(stdout, a.backing_format);
				printf("'/>\n");
			}
			printf("  </backingStore>\n");
		}
		printf("</volume>\n");
	} else if (ret == 0 && (ret = create_vol(c, p, &a)) == 0) {
		vstor_msg(c, "Vol %s created\n\n", a.name);
	}
	vs_pool_free(p);
	return ret;
}

/* A volume definition from a file: libvirt volume XML or JSON. */
struct vol_def {
	char name[VS_POOL_NAME_MAX + 1];
	char format[16];
	char backing[VS_POOL_PATH_MAX]; /* <backingStore><path>: a volume, by name or path */
	char backing_format[16];
	char compat[8];	       /* <target><compat> */
	char cluster_size[24]; /* <target><clusterSize>, in bytes */
	bool lazy_refcounts;   /* <target><features><lazy_refcounts/> */
	/* <target><encryption format='luks'><secret uuid=.../>, iter-time= (vstor's) */
	char encrypt_secret[37];
	char encrypt_iter_time[16];
	uint64_t capacity, allocation;
	bool has_capacity;
	uint32_t mode; /* 0: the default */
	bool set_owner, set_group;
	uint32_t owner, group;
};

/* <permissions> / "mode", "owner", "group" of a volume definition (strings). */
static int vol_def_perms(struct vstor_ctx *c, const char *file, struct vol_def *d, const char *mode,
			 const char *owner, const char *group)
{
	if (mode && vs_pool_parse_mode(mode, &d->mode) < 0)
		return vstor_error(c, -EINVAL, "%s: permission mode '%s' is not an octal mode",
				   file, mode);
	if (owner && vs_pool_parse_id(owner, &d->owner, &d->set_owner) < 0)
		return vstor_error(c, -EINVAL, "%s: owner '%s' is not a numeric id", file, owner);
	if (group && vs_pool_parse_id(group, &d->group, &d->set_group) < 0)
		return vstor_error(c, -EINVAL, "%s: group '%s' is not a numeric id", file, group);
	return 0;
}

/* A JSON member as a string ("mode": "0640", "owner": 107); NULL if missing. */
static const char *json_scalar(const struct pj_value *obj, const char *key, char *buf, size_t len)
{
	const struct pj_value *v = pj_get(obj, key);

	if (v && v->type == PJ_STR)
		return v->str;
	if (v && v->type == PJ_INT) {
		snprintf(buf, len, "%lld", (long long)v->i);
		return buf;
	}
	return v ? "?" : NULL;
}

/* <encryption format=F><secret uuid=U/> (iter-time: vstor's, in ms). */
static int vol_def_encryption(struct vstor_ctx *c, const char *file, struct vol_def *d,
			      const char *format, const char *uuid, const char *iter_time)
{
	char *end;

	if (!format || strcmp(format, "luks"))
		return vstor_error(c, -ENOTSUP,
				   "%s: unsupported volume encryption format '%s' (luks)", file,
				   format ? format : "");
	if (!uuid || !uuid[0] || strlen(uuid) >= sizeof(d->encrypt_secret))
		return vstor_error(c, -EINVAL,
				   "%s: <encryption format='luks'> needs <secret type='passphrase' "
				   "uuid='...'/>",
				   file);
	strcpy(d->encrypt_secret, uuid);
	if (iter_time) {
		if (!*iter_time || strtoul(iter_time, &end, 10) == 0 || *end ||
		    strlen(iter_time) >= sizeof(d->encrypt_iter_time))
			return vstor_error(c, -EINVAL, "%s: bad iter-time '%s'", file, iter_time);
		strcpy(d->encrypt_iter_time, iter_time);
	}
	return 0;
}

static int parse_scaled(const char *num, const char *unit, uint64_t *out)
{
	char buf[128];

	if (!unit || !strcmp(unit, "bytes"))
		unit = "";
	if ((size_t)snprintf(buf, sizeof(buf), "%s%s", num, unit) >= sizeof(buf))
		return -EINVAL;
	return vstor_parse_size(buf, out);
}

static int vol_def_parse(struct vstor_ctx *c, const char *file, struct vol_def *d)
{
	char msg[256], *text = NULL;
	const char *t;
	int ret = 1;

	memset(d, 0, sizeof(*d));
	d->allocation = UINT64_MAX;
	vs_error_clear(&c->err);
	if (vs_pool_read_file(file, &text, &c->err) < 0)
		return vstor_error_err(c, "Failed to read %s", file);
	for (t = text; *t == ' ' || *t == '\n' || *t == '\t' || *t == '\r'; t++)
		;
	if (*t == '<') {
		struct px_elem *root = NULL;
		const struct px_elem *e;

		if (px_parse(text, &root, msg, sizeof(msg)) < 0) {
			vstor_error(c, -EINVAL, "%s: invalid XML: %s", file, msg);
			goto out;
		}
		if (strcmp(root->name, "volume") || !(e = px_child(root, "name")) || !e->text[0] ||
		    strlen(e->text) > VS_POOL_NAME_MAX) {
			px_free(root);
			vstor_error(c, -EINVAL, "%s: expected <volume> with a <name>", file);
			goto out;
		}
		strcpy(d->name, e->text);
		if ((e = px_child(root, "capacity"))) {
			if (parse_scaled(e->text, px_attr(e, "unit"), &d->capacity) < 0) {
				px_free(root);
				vstor_error(c, -EINVAL, "%s: bad <capacity>", file);
				goto out;
			}
			d->has_capacity = true;
		}
		if ((e = px_child(root, "allocation")) &&
		    parse_scaled(e->text, px_attr(e, "unit"), &d->allocation) < 0) {
			px_free(root);
			vstor_error(c, -EINVAL, "%s: bad <allocation>", file);
			goto out;
		}
		e = px_child(px_child(root, "target"), "format");
		if (e && px_attr(e, "type") && strlen(px_attr(e, "type")) < sizeof(d->format))
			strcpy(d->format, px_attr(e, "type"));
		e = px_child(px_child(root, "target"), "compat");
		if (e) {
			if (strcmp(e->text, "0.10") && strcmp(e->text, "1.1")) {
				vstor_error(c, -EINVAL, "%s: unknown <compat> '%s' (0.10 or 1.1)",
					    file, e->text);
				px_free(root);
				goto out;
			}
			strcpy(d->compat, e->text);
		}
		e = px_child(px_child(root, "target"), "clusterSize");
		if (e) {
			uint64_t cs;

			if (parse_scaled(e->text, px_attr(e, "unit"), &cs) < 0) {
				px_free(root);
				vstor_error(c, -EINVAL, "%s: bad <clusterSize>", file);
				goto out;
			}
			snprintf(d->cluster_size, sizeof(d->cluster_size), "%llu",
				 (unsigned long long)cs);
		}
		d->lazy_refcounts =
			px_child(px_child(px_child(root, "target"), "features"), "lazy_refcounts");
		e = px_child(px_child(root, "target"), "encryption");
		if (!e)
			e = px_child(root, "encryption");
		if (e && vol_def_encryption(c, file, d, px_attr(e, "format"),
					    px_attr(px_child(e, "secret"), "uuid"),
					    px_attr(e, "iter-time"))) {
			px_free(root);
			goto out;
		}
		e = px_child(root, "backingStore");
		if (e) {
			const struct px_elem *bp = px_child(e, "path"), *bf = px_child(e, "format");

			if (!bp || !bp->text[0] || strlen(bp->text) >= sizeof(d->backing)) {
				px_free(root);
				vstor_error(c, -EINVAL, "%s: <backingStore> without a <path>",
					    file);
				goto out;
			}
			strcpy(d->backing, bp->text);
			if (bf && px_attr(bf, "type") &&
			    strlen(px_attr(bf, "type")) < sizeof(d->backing_format))
				strcpy(d->backing_format, px_attr(bf, "type"));
		}
		e = px_child(px_child(root, "target"), "permissions");
		if (e) {
			const struct px_elem *m = px_child(e, "mode"), *o = px_child(e, "owner"),
					     *g = px_child(e, "group");

			if (vol_def_perms(c, file, d, m ? m->text : NULL, o ? o->text : NULL,
					  g ? g->text : NULL)) {
				px_free(root);
				goto out;
			}
		}
		px_free(root);
	} else {
		struct pj_value *root = NULL;
		const struct pj_value *v;

		if (pj_parse(text, &root, msg, sizeof(msg)) < 0) {
			vstor_error(c, -EINVAL, "%s: invalid JSON: %s", file, msg);
			goto out;
		}
		v = pj_get(root, "name");
		if (!v || v->type != PJ_STR || strlen(v->str) > VS_POOL_NAME_MAX) {
			pj_free(root);
			vstor_error(c, -EINVAL, "%s: expected an object with a \"name\"", file);
			goto out;
		}
		strcpy(d->name, v->str);
		if ((v = pj_get(root, "capacity")) && v->type == PJ_INT && v->i >= 0) {
			d->capacity = (uint64_t)v->i;
			d->has_capacity = true;
		}
		if ((v = pj_get(root, "allocation")) && v->type == PJ_INT && v->i >= 0)
			d->allocation = (uint64_t)v->i;
		if ((v = pj_get(root, "format")) && v->type == PJ_STR &&
		    strlen(v->str) < sizeof(d->format))
			strcpy(d->format, v->str);
		if ((v = pj_get(root, "backing")) && v->type == PJ_STR &&
		    strlen(v->str) < sizeof(d->backing))
			strcpy(d->backing, v->str);
		if ((v = pj_get(root, "backing-format")) && v->type == PJ_STR &&
		    strlen(v->str) < sizeof(d->backing_format))
			strcpy(d->backing_format, v->str);
		if ((v = pj_get(root, "encryption"))) {
			char ib[24];
			const struct pj_value *sv = pj_get(root, "secret");

			if (vol_def_encryption(c, file, d, v->type == PJ_STR ? v->str : "?",
					       sv && sv->type == PJ_STR ? sv->str : NULL,
					       json_scalar(root, "iter-time", ib, sizeof(ib)))) {
				pj_free(root);
				goto out;
			}
		}
		{
			char ob[24], gb[24], mb[24];

			if (vol_def_perms(c, file, d, json_scalar(root, "mode", mb, sizeof(mb)),
					  json_scalar(root, "owner", ob, sizeof(ob)),
					  json_scalar(root, "group", gb, sizeof(gb)))) {
				pj_free(root);
				goto out;
			}
		}
		pj_free(root);
	}
	ret = 0;
out:
	free(text);
	return ret;
}

static void vol_def_to_args(const struct vol_def *d, struct vs_vol_create_args *a)
{
	if (d->encrypt_secret[0]) {
		a->encrypt_secret = d->encrypt_secret;
		a->encrypt_iter_time = d->encrypt_iter_time[0] ? d->encrypt_iter_time : NULL;
	}
	a->mode = d->mode;
	a->set_owner = d->set_owner;
	a->owner = d->owner;
	a->set_group = d->set_group;
	a->group = d->group;
}

static int cmd_vol_create(struct vstor_ctx *c)
{
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	struct vs_vol_info bi;
	struct vol_def d;
	struct vs_pool *p;
	int ret = 0;

	/* As virsh: the schema first, then what the definition says. */
	if (opt_bool(c, "validate")) {
		char what[VS_POOL_PATH_MAX + 32];

		snprintf(what, sizeof(what), "Failed to create vol from %s", opt_get(c, "file"));
		if (vstor_validate_file(c, opt_get(c, "file"), "storagevol", what))
			return 1;
	}
	if (vol_def_parse(c, opt_get(c, "file"), &d))
		return 1;
	if (!d.has_capacity)
		return vstor_error(c, -EINVAL, "%s: the volume has no capacity",
				   opt_get(c, "file"));
	p = vstor_pool_get(c, opt_get(c, "pool"));
	if (!p)
		return 1;
	a.name = d.name;
	a.format = d.format[0] ? d.format : NULL;
	a.capacity = d.capacity;
	a.allocation = d.allocation;
	a.prealloc_metadata = opt_bool(c, "prealloc-metadata");
	vol_def_to_args(&d, &a);
	a.compat = d.compat[0] ? d.compat : NULL;
	a.cluster_size = d.cluster_size[0] ? d.cluster_size : NULL;
	/* As libvirt: lazy refcounts on when asked (and compat allows it). */
	a.lazy_refcounts = d.lazy_refcounts ? "on" : NULL;
	if (d.backing[0]) {
		ret = resolve_backing(c, p, d.backing,
				      d.backing_format[0] ? d.backing_format : NULL, &a, &bi);
		if (ret == 0 && !a.format)
			a.format = "qcow2";
	}
	if (ret == 0)
		ret = create_vol(c, p, &a);
	if (ret == 0)
		vstor_msg(c, "Vol %s created from %s\n\n", d.name, opt_get(c, "file"));
	vs_pool_free(p);
	return ret;
}

/*
 * Copy the image @src into the fresh image @dst. With @keep_backing (dst
 * has src's backing file), only what src's top layer allocates is copied.
 */
static int copy_image(struct vs_node *src, struct vs_node *dst, bool keep_backing)
{
	uint64_t size = vs_node_size(src), dsize = vs_node_size(dst);
	uint8_t *buf = vs_buf_alloc(COPY_CHUNK);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	if (dsize < size)
		size = dsize;
	for (uint64_t off = 0; off < size && ret == 0;) {
		uint64_t pnum = 0, len = size - off < COPY_CHUNK ? size - off : COPY_CHUNK;
		unsigned status = 0, depth = 0;

		ret = vs_node_block_status_above(src, off, len, &pnum, &status, NULL, NULL, &depth);
		if (ret < 0)
			break;
		if (pnum == 0 || pnum > len)
			pnum = len;
		if (keep_backing && depth > 0) {
			/* Not in the top layer: dst reads it from the same backing. */
		} else if (status & VS_BS_ZERO) {
			if (keep_backing)
				ret = vs_node_write_zeroes(dst, off, pnum, VS_REQ_MAY_UNMAP);
		} else {
			ret = vs_node_pread(src, off, buf, (size_t)pnum);
			if (ret == 0 && !(is_zero(buf, (size_t)pnum) && !keep_backing))
				ret = vs_node_pwrite(dst, off, buf, (size_t)pnum, 0);
		}
		off += pnum;
	}
	if (ret == 0)
		ret = vs_node_flush(dst);
	free(buf);
	return ret;
}

/*
 * Create @a in @p with the content of volume @src_name of @sp. The copy is
 * made under a temporary name that no listing shows and renamed into place
 * when it is whole: a copy that fails or is killed never shows up as a
 * volume (a killed one is deleted by the next refresh).
 */
static int create_copy(struct vstor_ctx *c, struct vs_pool *p, struct vs_vol_create_args *a,
		       struct vs_pool *sp, const char *src_name, bool keep_backing)
{
	struct vs_open_opts ro = { .read_only = true };
	struct vs_open_opts rw = { 0 };
	struct vs_node *src = NULL, *dst = NULL;
	struct vs_vol_build *b = NULL;
	int ret;

	vs_error_clear(&c->err);
	if (vs_pool_vol_open(sp, src_name, &ro, false, &src, &c->err) < 0)
		return vstor_error_err(c, "Failed to open vol %s", src_name);
	if (vs_pool_vol_build_begin(p, a, &b, &c->err) < 0) {
		vs_node_close(src);
		return vstor_error_err(c, "Failed to create vol %s", a->name);
	}
	if (vs_pool_vol_open(p, vs_vol_build_name(b), &rw, false, &dst, &c->err) < 0) {
		ret = vstor_error_err(c, "Failed to open vol %s", a->name);
	} else {
		ret = copy_image(src, dst, keep_backing);
		if (ret < 0)
			ret = vstor_error(c, ret, "Failed to copy vol %s to %s: %s", src_name,
					  a->name, strerror(-ret));
	}
	vs_node_close(dst);
	vs_node_close(src);
	if (ret) {
		vs_pool_vol_build_abort(b);
		return ret;
	}
	if (vs_pool_vol_build_commit(b, &c->err) < 0)
		return vstor_error_err(c, "Failed to create vol %s", a->name);
	return 0;
}

/*
 * A copy of an encrypted volume is encrypted with the same secret (libvirt
 * clones from the original's XML, <encryption> included): its uuid into
 * @uuid and @a.
 */
static int vol_same_secret(struct vstor_ctx *c, struct vs_pool *p, const struct vs_vol_info *in,
			   struct vs_vol_create_args *a, char *uuid)
{
	vs_error_clear(&c->err);
	if (vs_pool_vol_secret(p, in, uuid, &c->err) < 0)
		return vstor_error_err(c, "volume '%s' is encrypted", in->name);
	a->encrypt_secret = uuid;
	return 0;
}

static int cmd_vol_create_from(struct vstor_ctx *c)
{
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	struct vs_pool *p = NULL, *ip = NULL;
	struct vs_vol_info in;
	char iname[VS_POOL_NAME_MAX + 1], secret[37];
	struct vol_def d;
	int ret;

	if (vol_def_parse(c, opt_get(c, "file"), &d))
		return 1;
	if (vstor_vol_get(c, opt_get(c, "vol"), opt_get(c, "inputpool"), &ip, iname))
		return 1;
	ret = vs_pool_vol_info(ip, iname, &in, &c->err) < 0 ?
		      vstor_error_err(c, "failed to get vol '%s'", iname) :
		      0;
	p = ret ? NULL : vstor_pool_get(c, opt_get(c, "pool"));
	if (!ret && !p)
		ret = 1;
	if (!ret) {
		a.name = d.name;
		a.format = d.format[0] ? d.format : in.format;
		a.capacity = d.has_capacity && d.capacity > in.capacity ? d.capacity : in.capacity;
		a.allocation = d.allocation;
		a.prealloc_metadata = opt_bool(c, "prealloc-metadata");
		vol_def_to_args(&d, &a);
		if (!a.encrypt_secret && in.encryption[0])
			ret = vol_same_secret(c, ip, &in, &a, secret);
		if (!ret)
			ret = create_copy(c, p, &a, ip, iname, false);
	}
	if (!ret)
		vstor_msg(c, "Vol %s created from input vol %s\n\n", d.name, iname);
	vs_pool_free(p);
	vs_pool_free(ip);
	return ret;
}

static int cmd_vol_clone(struct vstor_ctx *c)
{
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	char name[VS_POOL_NAME_MAX + 1], secret[37];
	struct vs_vol_info in;
	struct vs_pool *p;
	int ret;

	if (get_vol_info(c, &p, name, &in))
		return 1;
	if (in.encryption[0] && vol_same_secret(c, p, &in, &a, secret)) {
		vs_pool_free(p);
		return 1;
	}
	a.name = opt_get(c, "newname");
	a.format = in.format;
	a.capacity = in.capacity;
	a.prealloc_metadata = opt_bool(c, "prealloc-metadata");
	/* libvirt clones from the original's XML: same mode, owner and group. */
	if (in.has_perms) {
		a.mode = in.mode;
		a.set_owner = a.set_group = true;
		a.owner = in.owner;
		a.group = in.group;
	}
	/* A clone keeps the original's backing volume, as libvirt's does. */
	if (in.backing[0] && !strcmp(in.format, "qcow2")) {
		a.backing_path = in.backing;
		a.backing_format = in.backing_format[0] ? in.backing_format : NULL;
	}
	if (p->backend->cow_clone) {
		/* The storage clones (RBD: snapshot, protect, clone, as libvirt does). */
		a.clone_of = &in;
		vs_error_clear(&c->err);
		ret = vs_pool_vol_create(p, &a, &c->err) < 0 ?
			      vstor_error_err(c, "Failed to clone vol %s", name) :
			      0;
	} else {
		ret = create_copy(c, p, &a, p, name, a.backing_path != NULL);
	}
	if (!ret)
		vstor_msg(c, "Vol %s cloned from %s\n\n", a.name, name);
	vs_pool_free(p);
	return ret;
}

/* --- vol-delete, vol-wipe, vol-resize ---------------------------------------- */

static int cmd_vol_delete(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_pool *p;
	int ret;

	if (get_vol(c, &p, name))
		return 1;
	ret = 0;
	if (vs_pool_vol_delete(p, name, opt_bool(c, "force") ? VS_VOL_FORCE : 0, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to delete vol %s", name);
	else
		vstor_msg(c, "Vol %s deleted\n\n", name);
	vs_pool_free(p);
	return ret;
}

static int cmd_vol_wipe(struct vstor_ctx *c)
{
	const char *alg_s = opt_get(c, "algorithm");
	enum vs_wipe_alg alg = VS_WIPE_ZERO;
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_pool *p;
	int ret = 0;

	if (alg_s && vs_wipe_alg_parse(alg_s, &alg) < 0)
		return vstor_error(c, -EINVAL, "Unsupported algorithm '%s'", alg_s);
	if (get_vol(c, &p, name))
		return 1;
	if (vs_pool_vol_wipe(p, name, alg, opt_bool(c, "force") ? VS_VOL_FORCE : 0, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to wipe vol %s", name);
	else
		vstor_msg(c, "Vol %s wiped\n", name);
	vs_pool_free(p);
	return ret;
}

static int cmd_vol_resize(struct vstor_ctx *c)
{
	const char *cap_s = opt_get(c, "capacity");
	bool delta = opt_bool(c, "delta"), neg = cap_s[0] == '-';
	char name[VS_POOL_NAME_MAX + 1];
	unsigned flags = 0;
	struct vs_vol_info info;
	struct vs_pool *p;
	uint64_t v, cap;
	int ret = 0;

	if (vstor_parse_size(cap_s + (neg || cap_s[0] == '+'), &v) < 0)
		return vstor_error(c, -EINVAL, "Malformed size %s", cap_s);
	if (neg && !delta)
		return vstor_error(c, -EINVAL, "negative size requires --delta");
	if (cap_s[0] == '+')
		delta = true; /* "+1G" can only mean a change (as for qemu-img resize) */
	if (opt_bool(c, "shrink"))
		flags |= VS_VOL_RESIZE_SHRINK;
	if (opt_bool(c, "allocate"))
		flags |= VS_VOL_RESIZE_ALLOCATE;
	if (opt_bool(c, "force"))
		flags |= VS_VOL_FORCE;
	if (get_vol_info(c, &p, name, &info))
		return 1;
	if (!delta)
		cap = v;
	else if (neg)
		cap = v > info.capacity ? 0 : info.capacity - v;
	else
		cap = info.capacity + v;
	if (neg && v > info.capacity) {
		ret = vstor_error(c, -EINVAL,
				  "Failed to change size of volume '%s' to %s\n"
				  "error: invalid argument: can't shrink capacity "
				  "below zero",
				  name, cap_s);
		goto out;
	}
	if (vs_pool_vol_resize(p, name, cap, flags, &c->err) < 0)
		ret = vstor_error_err(c, "Failed to change size of volume '%s' to %s", name, cap_s);
	else
		vstor_msg(c, "Size of volume '%s' successfully changed to %s\n\n", name, cap_s);
out:
	vs_pool_free(p);
	return ret;
}

/* --- vol-upload, vol-download ------------------------------------------------ */

static int parse_off_len(struct vstor_ctx *c, uint64_t *off, uint64_t *len)
{
	const char *o = opt_get(c, "offset"), *l = opt_get(c, "length");

	*off = 0;
	*len = UINT64_MAX;
	if (o && vstor_parse_size(o, off) < 0)
		return vstor_error(c, -EINVAL, "Unable to parse offset value");
	if (l && vstor_parse_size(l, len) < 0)
		return vstor_error(c, -EINVAL, "Unable to parse length value");
	if (l && *len == 0)
		*len = UINT64_MAX; /* virsh: 0 means to the end */
	return 0;
}

/* Write @len bytes of @buf at @off; with @sparse, zero blocks become holes. */
static int upload_chunk(struct vs_node *n, uint64_t off, const uint8_t *buf, size_t len,
			bool sparse)
{
	size_t i = 0;

	if (!sparse)
		return vs_node_pwrite(n, off, buf, len, 0);
	while (i < len) {
		size_t j = i;
		bool zero = is_zero(buf + i, len - i < ZERO_BLOCK ? len - i : ZERO_BLOCK);
		int ret;

		while (j < len &&
		       is_zero(buf + j, len - j < ZERO_BLOCK ? len - j : ZERO_BLOCK) == zero)
			j += len - j < ZERO_BLOCK ? len - j : ZERO_BLOCK;
		if (zero)
			ret = vs_node_write_zeroes(n, off + i, j - i, VS_REQ_MAY_UNMAP);
		else
			ret = vs_node_pwrite(n, off + i, buf + i, j - i, 0);
		if (ret < 0)
			return ret;
		i = j;
	}
	return 0;
}

static int upload_too_large(struct vstor_ctx *c, const char *name, uint64_t off, uint64_t len,
			    uint64_t end)
{
	return vstor_error(c, -ENOSPC,
			   "cannot upload to volume %s: %llu bytes at offset %llu do not fit in "
			   "its %llu bytes (vol-resize it first)",
			   name, (unsigned long long)len, (unsigned long long)off,
			   (unsigned long long)end);
}

static int cmd_vol_upload(struct vstor_ctx *c)
{
	struct vs_open_opts o = { 0 };
	char name[VS_POOL_NAME_MAX + 1];
	const char *file = opt_get(c, "file");
	bool sparse = opt_bool(c, "sparse");
	struct vs_vol_info info;
	struct vs_node *n = NULL;
	struct vs_pool *p;
	struct stat st;
	uint64_t off, len, done = 0, end;
	uint8_t *buf = NULL;
	int fd, ret = 0;

	if (parse_off_len(c, &off, &len))
		return 1;
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vstor_error(c, -errno, "cannot read %s: %s", file, strerror(errno));
	if (get_vol(c, &p, name)) {
		close(fd);
		return 1;
	}
	if (vs_pool_vol_info(p, name, &info, &c->err) < 0 ||
	    vs_pool_vol_open(p, name, &o, true, &n, &c->err) < 0) {
		ret = vstor_error_err(c, "cannot upload to volume %s", name);
		goto out;
	}
	/*
	 * Never write past the end of the volume: that would grow a file
	 * volume behind the pool's back (and whatever the bytes are, a qcow2
	 * volume with a raw file's bytes past its end). The end is the larger
	 * of the capacity and the stored bytes (a qcow2 file may be larger
	 * than its virtual size). A regular file is measured first, so
	 * nothing is written; a pipe is stopped at the end.
	 */
	end = vs_node_size(n) > info.capacity ? vs_node_size(n) : info.capacity;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		uint64_t want = (uint64_t)st.st_size < len ? (uint64_t)st.st_size : len;

		if (off > end || want > end - off) {
			ret = upload_too_large(c, name, off, want, end);
			goto out;
		}
	}
	buf = vs_buf_alloc(COPY_CHUNK);
	if (!buf) {
		ret = vstor_error(c, -ENOMEM, "out of memory");
		goto out;
	}
	while (done < len) {
		size_t want = len - done < COPY_CHUNK ? (size_t)(len - done) : COPY_CHUNK;
		ssize_t got = read(fd, buf, want);
		int r;

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			ret = vstor_error(c, -errno, "cannot read %s: %s", file, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		if (off + done > end || (uint64_t)got > end - off - done) {
			ret = upload_too_large(c, name, off, done + (uint64_t)got, end);
			goto out;
		}
		r = upload_chunk(n, off + done, buf, (size_t)got, sparse);
		if (r < 0) {
			ret = vstor_error(c, r, "cannot upload to volume %s: %s", name,
					  strerror(-r));
			goto out;
		}
		done += (uint64_t)got;
	}
	ret = vs_node_flush(n);
	if (ret < 0)
		ret = vstor_error(c, ret, "cannot upload to volume %s: %s", name, strerror(-ret));
out:
	free(buf);
	vs_node_close(n);
	vs_pool_free(p);
	close(fd);
	return ret;
}

static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int cmd_vol_download(struct vstor_ctx *c)
{
	struct vs_open_opts o = { .read_only = true };
	char name[VS_POOL_NAME_MAX + 1];
	const char *file = opt_get(c, "file");
	bool sparse = opt_bool(c, "sparse");
	struct vs_node *n = NULL;
	struct vs_pool *p;
	uint64_t off, len, size;
	uint8_t *buf = NULL;
	int fd = -1, ret = 0;

	if (parse_off_len(c, &off, &len))
		return 1;
	if (get_vol(c, &p, name))
		return 1;
	if (vs_pool_vol_open(p, name, &o, true, &n, &c->err) < 0) {
		ret = vstor_error_err(c, "cannot download from volume %s", name);
		goto out;
	}
	size = vs_node_size(n);
	if (off > size) {
		ret = vstor_error(c, -EINVAL, "offset %llu is beyond the end of volume %s",
				  (unsigned long long)off, name);
		goto out;
	}
	if (len > size - off)
		len = size - off;
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		ret = vstor_error(c, -errno, "cannot create %s: %s", file, strerror(errno));
		goto out;
	}
	buf = vs_buf_alloc(COPY_CHUNK);
	if (!buf) {
		ret = vstor_error(c, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t done = 0; done < len;) {
		uint64_t chunk = len - done < COPY_CHUNK ? len - done : COPY_CHUNK, pnum = chunk;
		unsigned status = VS_BS_DATA;
		int r = 0;

		if (sparse) {
			r = vs_node_block_status(n, off + done, chunk, &pnum, &status, NULL, NULL);
			if (r < 0 || pnum == 0 || pnum > chunk) {
				status = VS_BS_DATA;
				pnum = chunk;
				r = 0;
			}
		}
		if (!(status & VS_BS_ZERO)) {
			r = vs_node_pread(n, off + done, buf, (size_t)pnum);
			if (r == 0) {
				if (!sparse) {
					r = write_all(fd, buf, (size_t)pnum, done);
				} else {
					for (size_t i = 0; i < pnum && r == 0; i += ZERO_BLOCK) {
						size_t l = pnum - i < ZERO_BLOCK ?
								   (size_t)pnum - i :
								   ZERO_BLOCK;

						if (!is_zero(buf + i, l))
							r = write_all(fd, buf + i, l, done + i);
					}
				}
			}
		}
		if (r < 0) {
			ret = vstor_error(c, r, "cannot download from volume %s: %s", name,
					  strerror(-r));
			goto out;
		}
		done += pnum;
	}
	if (ftruncate(fd, (off_t)len) < 0 || fsync(fd) < 0)
		ret = vstor_error(c, -errno, "cannot write %s: %s", file, strerror(errno));
out:
	if (fd >= 0 && close(fd) < 0 && !ret)
		ret = vstor_error(c, -errno, "cannot write %s: %s", file, strerror(errno));
	free(buf);
	vs_node_close(n);
	vs_pool_free(p);
	return ret;
}

/* --- vol-list, vol-info, vol-path, vol-dump, vol-pool ------------------------- */

static int cmd_vol_list(struct vstor_ctx *c)
{
	bool details = opt_bool(c, "details");
	struct vs_vol_list vols = { 0 };
	struct vstor_table t = { 0 };
	struct vs_pool_info pi;
	struct vs_pool *p = vstor_pool_get(c, opt_get(c, "pool"));

	if (!p)
		return 1;
	if (vs_pool_refresh(p, &pi, &vols, &c->err) < 0) {
		vs_pool_free(p);
		return vstor_error_err(c, "Failed to list volumes");
	}
	if (c->json) {
		struct json_writer w;

		json_init(&w, stdout, true);
		json_arr_begin(&w, NULL);
		for (size_t i = 0; i < vols.n; i++)
			json_vol(&w, NULL, &vols.v[i]);
		json_arr_end(&w);
		putchar('\n');
	} else {
		static const char *const h[] = { "Name",     "Path",	   "Type",
						 "Capacity", "Allocation", "Encryption" };
		bool any_enc = false;

		/* An Encryption column when a volume is encrypted. */
		for (size_t i = 0; i < vols.n; i++)
			any_enc |= vols.v[i].encryption[0] != '\0';
		t.ncols = details ? (any_enc ? 6 : 5) : 2;
		memcpy(t.head, h, sizeof(h));
		for (size_t i = 0; i < vols.n; i++) {
			char cap[32], alloc[32];
			const char *cells[6] = { vols.v[i].name,
						 vols.v[i].path,
						 vs_vol_type_name(vols.v[i].type),
						 cap,
						 alloc,
						 vols.v[i].encryption[0] ? vols.v[i].encryption :
									   "-" };

			vstor_pretty_size(vols.v[i].capacity, cap, sizeof(cap));
			vstor_pretty_size(vols.v[i].allocation, alloc, sizeof(alloc));
			vstor_table_add(&t, cells);
		}
		vstor_table_print(&t);
	}
	vs_vol_list_free(&vols);
	vs_pool_free(p);
	return 0;
}

/* A size as vol-info shows it: "1.50 GiB", or "1610612736 bytes" with --bytes. */
static void info_size(struct vstor_ctx *c, char *buf, size_t len, uint64_t v)
{
	if (opt_bool(c, "bytes"))
		snprintf(buf, len, "%llu bytes", (unsigned long long)v);
	else
		vstor_pretty_size(v, buf, len);
}

static int cmd_vol_info(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1], buf[32];
	struct vs_vol_info v;
	struct vs_pool *p;

	if (get_vol_info(c, &p, name, &v))
		return 1;
	if (c->json) {
		struct json_writer w;

		json_init(&w, stdout, true);
		json_vol(&w, NULL, &v);
		putchar('\n');
	} else {
		printf("%-15s %s\n", "Name:", v.name);
		printf("%-15s %s\n", "Type:", vs_vol_type_name(v.type));
		info_size(c, buf, sizeof(buf), v.capacity);
		printf("%-15s %s\n", "Capacity:", buf);
		/* --physical: what the storage holds for it, in place of the allocation. */
		if (opt_bool(c, "physical")) {
			info_size(c, buf, sizeof(buf), v.physical);
			printf("%-15s %s\n", "Physical:", buf);
		} else {
			info_size(c, buf, sizeof(buf), v.allocation);
			printf("%-15s %s\n", "Allocation:", buf);
		}
		if (v.encryption[0])
			printf("%-15s %s\n", "Encryption:", v.encryption);
		putchar('\n');
	}
	vs_pool_free(p);
	return 0;
}

/* vol-lease (vstor extension): which host holds the volume's sanlock lease. */
static int cmd_vol_lease(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_vol_info v;
	struct vs_pool *p;
	uint64_t holder;
	int ret;

	if (get_vol_info(c, &p, name, &v))
		return 1;
	ret = vs_pool_vol_lease_holder(p, v.name, &holder, &c->err);
	vs_pool_free(p);
	if (ret < 0)
		return vstor_error_err(c, "failed to get the lease of vol '%s'", name);
	if (c->json) {
		struct json_writer w;

		json_init(&w, stdout, false);
		json_obj_begin(&w, NULL);
		json_uint(&w, "holder", holder); /* 0: none */
		json_obj_end(&w);
		putchar('\n');
	} else if (holder) {
		printf("%-15s host %llu\n", "Lease holder:", (unsigned long long)holder);
	} else {
		printf("%-15s none\n", "Lease holder:");
	}
	return 0;
}

static int cmd_vol_path(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_vol_info v;
	struct vs_pool *p;

	if (get_vol_info(c, &p, name, &v))
		return 1;
	if (c->json) {
		struct json_writer w;

		json_init(&w, stdout, false);
		json_obj_begin(&w, NULL);
		json_str(&w, "path", v.path);
		json_obj_end(&w);
		putchar('\n');
	} else
		printf("%s\n", v.path);
	vs_pool_free(p);
	return 0;
}

/* vol-key and vol-name: the key of a volume is its path, as for libvirt's dir pools. */
static int cmd_vol_key(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_vol_info v;
	struct vs_pool *p;

	if (get_vol_info(c, &p, name, &v))
		return 1;
	printf("%s\n", v.path);
	vs_pool_free(p);
	return 0;
}

static int cmd_vol_name(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_pool *p;

	if (vstor_vol_get(c, opt_get(c, "vol"), NULL, &p, name))
		return 1;
	printf("%s\n", name);
	vs_pool_free(p);
	return 0;
}

static int cmd_vol_dump(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct json_writer w;
	struct vs_vol_info v;
	struct vs_pool *p;

	if (get_vol_info(c, &p, name, &v))
		return 1;
	json_init(&w, stdout, true);
	json_obj_begin(&w, NULL);
	json_str(&w, "pool", p->def.name);
	json_str(&w, "name", v.name);
	json_str(&w, "path", v.path);
	json_str(&w, "type", vs_vol_type_name(v.type));
	json_str(&w, "format", v.format);
	json_uint(&w, "capacity", v.capacity);
	json_uint(&w, "allocation", v.allocation);
	if (v.backing[0]) {
		json_str(&w, "backing", v.backing);
		if (v.backing_format[0])
			json_str(&w, "backing-format", v.backing_format);
	}
	if (v.encryption[0]) {
		char uuid[37];

		json_str(&w, "encryption", v.encryption);
		if (vs_pool_vol_secret(p, &v, uuid, NULL) == 0)
			json_str(&w, "secret", uuid);
	}
	json_perms(&w, &v);
	json_obj_end(&w);
	putchar('\n');
	vs_pool_free(p);
	return 0;
}

/* libvirt's volume XML, as virsh vol-dumpxml writes it (vol-create reads it back). */
static int cmd_vol_dumpxml(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_vol_info v;
	struct vstor_xml xml;
	struct vs_pool *p;
	FILE *f;

	if (get_vol_info(c, &p, name, &v))
		return 1;
	f = vstor_xml_begin(c, &xml);
	if (!f) {
		vs_pool_free(p);
		return 1;
	}
	fprintf(f, "<volume type='%s'>\n  <name>", vs_vol_type_name(v.type));
	vs_pool_xml_escape(f, v.name);
	fprintf(f, "</name>\n  <key>");
	vs_pool_xml_escape(f, v.path);
	fprintf(f,
		"</key>\n  <capacity unit='bytes'>%llu</capacity>\n"
		"  <allocation unit='bytes'>%llu</allocation>\n",
		(unsigned long long)v.capacity, (unsigned long long)v.allocation);
	if (v.physical)
		fprintf(f, "  <physical unit='bytes'>%llu</physical>\n",
			(unsigned long long)v.physical);
	fprintf(f, "  <target>\n    <path>");
	vs_pool_xml_escape(f, v.path);
	fprintf(f, "</path>\n    <format type='%s'/>\n", v.format);
	if (v.encryption[0]) {
		/* The secret's uuid, never its value. */
		char uuid[37];

		fprintf(f, "    <encryption format='%s'>\n",
			!strcmp(v.encryption, "aes") ? "qcow" : v.encryption);
		if (vs_pool_vol_secret(p, &v, uuid, NULL) == 0)
			fprintf(f, "      <secret type='passphrase' uuid='%s'/>\n", uuid);
		fprintf(f, "    </encryption>\n");
	}
	if (v.has_perms)
		fprintf(f,
			"    <permissions>\n      <mode>%04o</mode>\n      <owner>%u</owner>\n"
			"      <group>%u</group>\n    </permissions>\n",
			(unsigned)v.mode, (unsigned)v.owner, (unsigned)v.group);
	if (v.has_times) {
		const struct timespec *ts[] = { &v.atime, &v.mtime, &v.ctime };
		const char *names[] = { "atime", "mtime", "ctime" };

		fprintf(f, "    <timestamps>\n");
		for (int i = 0; i < 3; i++)
			fprintf(f, "      <%s>%lld.%09ld</%s>\n", names[i],
				(long long)ts[i]->tv_sec, ts[i]->tv_nsec, names[i]);
		fprintf(f, "    </timestamps>\n");
	}
	if (v.compat[0])
		fprintf(f, "    <compat>%s</compat>\n", v.compat);
	if (v.cluster_size)
		fprintf(f, "    <clusterSize unit='B'>%u</clusterSize>\n", v.cluster_size);
	if (v.lazy_refcounts)
		fprintf(f, "    <features>\n      <lazy_refcounts/>\n    </features>\n");
	fprintf(f, "  </target>\n");
	if (v.backing[0]) {
		fprintf(f, "  <backingStore>\n    <path>");
		vs_pool_xml_escape(f, v.backing);
		fprintf(f, "</path>\n");
		if (v.backing_format[0]) {
			fprintf(f, "    <format type='");
			vs_pool_xml_escape(f, v.backing_format);
			fprintf(f, "'/>\n");
		}
		fprintf(f, "  </backingStore>\n");
	}
	fprintf(f, "</volume>\n");
	vs_pool_free(p);
	return vstor_xml_end(c, f, &xml);
}

static int cmd_vol_pool(struct vstor_ctx *c)
{
	char name[VS_POOL_NAME_MAX + 1];
	struct vs_pool *p;

	if (vstor_vol_get(c, opt_get(c, "vol"), NULL, &p, name))
		return 1;
	if (c->json) {
		struct json_writer w;

		json_init(&w, stdout, false);
		json_obj_begin(&w, NULL);
		json_str(&w, "pool", p->def.name);
		json_str(&w, "uuid", p->def.uuid);
		json_obj_end(&w);
		putchar('\n');
	} else
		printf("%s\n", opt_bool(c, "uuid") ? p->def.uuid : p->def.name);
	vs_pool_free(p);
	return 0;
}

#define VOL_OPT                                              \
	{                                                    \
		"vol", OT_DATA, true, "volume name, or path" \
	}
#define POOL_OPT                                   \
	{                                          \
		"pool", OT_STR, false, "pool name" \
	}

static const struct opt_spec create_as_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "name", OT_DATA, true, "name of the volume" },
	{ "capacity", OT_DATA, true, "size of the volume (scaled integer, default bytes)" },
	{ "allocation", OT_STR, false, "initial allocation (scaled integer)" },
	{ "format", OT_STR, false, "file format type raw or qcow2" },
	{ "backing-vol", OT_STR, false, "the backing volume (name in the pool, or path)" },
	{ "backing-vol-format", OT_STR, false, "format of the backing volume" },
	{ "prealloc-metadata", OT_BOOL, false, "preallocate metadata (qcow2)" },
	{ "print-xml", OT_BOOL, false, "print XML document, but don't create the volume" },
	{ "encryption-secret", OT_STR, false,
	  "encrypt with LUKS, the passphrase being this secret's value (its UUID)" },
	{ "encryption-iter-time", OT_STR, false, "PBKDF2 time of the key slot in ms (2000)" },
	{ NULL },
};
static const struct opt_spec create_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "file", OT_DATA, true, "file with a volume definition (libvirt XML or JSON)" },
	{ "prealloc-metadata", OT_BOOL, false, "preallocate metadata (qcow2)" },
	{ "validate", OT_BOOL, false, "validate the XML against libvirt's schema" },
	{ NULL },
};
static const struct opt_spec create_from_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "file", OT_DATA, true, "file with a volume definition (libvirt XML or JSON)" },
	VOL_OPT,
	{ "inputpool", OT_STR, false, "pool name or uuid of the input volume's pool" },
	{ "prealloc-metadata", OT_BOOL, false, "preallocate metadata (qcow2)" },
	{ "reflink", OT_BOOL, false, "accepted (a copy is made)" },
	{ NULL },
};
static const struct opt_spec clone_opts[] = {
	VOL_OPT,
	{ "newname", OT_DATA, true, "clone name" },
	POOL_OPT,
	{ "prealloc-metadata", OT_BOOL, false, "preallocate metadata (qcow2)" },
	{ "reflink", OT_BOOL, false, "accepted (a copy is made)" },
	{ NULL },
};
static const struct opt_spec delete_opts[] = {
	VOL_OPT,
	POOL_OPT,
	{ "delete-snapshots", OT_BOOL, false, "accepted (internal snapshots go with the file)" },
	{ "force", OT_BOOL, false, "delete even if the volume is in use or backs another volume" },
	{ NULL },
};
static const struct opt_spec wipe_opts[] = {
	VOL_OPT,
	POOL_OPT,
	{ "algorithm", OT_STR, false,
	  "zero, nnsa, dod, bsi, gutmann, schneier, pfitzner7, pfitzner33, random, trim" },
	{ "force", OT_BOOL, false, "wipe even if the volume is in use" },
	{ NULL },
};
static const struct opt_spec resize_opts[] = {
	VOL_OPT,
	{ "capacity", OT_DATA, true, "new capacity (scaled integer)" },
	POOL_OPT,
	{ "allocate", OT_BOOL, false, "allocate the new capacity" },
	{ "delta", OT_BOOL, false, "the capacity is a change" },
	{ "shrink", OT_BOOL, false, "allow shrinking" },
	{ "force", OT_BOOL, false, "shrink even if the volume is in use" },
	{ NULL },
};
static const struct opt_spec updown_opts[] = {
	VOL_OPT,
	{ "file", OT_DATA, true, "file" },
	POOL_OPT,
	{ "offset", OT_STR, false, "volume offset" },
	{ "length", OT_STR, false, "amount of data" },
	{ "sparse", OT_BOOL, false, "preserve sparseness" },
	{ NULL },
};
static const struct opt_spec list_opts[] = {
	{ "pool", OT_DATA, true, "pool name" },
	{ "details", OT_BOOL, false, "type, capacity and allocation too" },
	{ NULL },
};
static const struct opt_spec info_opts[] = {
	VOL_OPT,
	POOL_OPT,
	{ "bytes", OT_BOOL, false, "sizes in bytes" },
	{ "physical", OT_BOOL, false,
	  "return the physical size of the volume in allocation field" },
	{ NULL },
};
static const struct opt_spec vol_opts[] = { VOL_OPT, POOL_OPT, { NULL } };
static const struct opt_spec vol_dump_opts[] = { VOL_OPT,
						 POOL_OPT,
						 VSTOR_XPATH_OPT,
						 VSTOR_WRAP_OPT,
						 { NULL } };
static const struct opt_spec vol_key_opts[] = { { "vol", OT_DATA, true, "volume key (path)" },
						{ NULL } };
static const struct opt_spec vol_pool_opts[] = {
	VOL_OPT,
	{ "uuid", OT_BOOL, false, "the pool's UUID" },
	{ NULL },
};

const struct vstor_cmd vstor_vol_cmds[] = {
	{ "vol-clone", cmd_vol_clone, clone_opts, "clone a volume", false },
	{ "vol-create", cmd_vol_create, create_opts, "create a vol from a definition file", false },
	{ "vol-create-as", cmd_vol_create_as, create_as_opts, "create a volume from a set of args",
	  false },
	{ "vol-create-from", cmd_vol_create_from, create_from_opts,
	  "create a vol, using another volume as input", false },
	{ "vol-delete", cmd_vol_delete, delete_opts, "delete a vol", false },
	{ "vol-download", cmd_vol_download, updown_opts, "download volume contents to a file",
	  false },
	{ "vol-dump", cmd_vol_dump, vol_opts, "vol information in JSON", false },
	{ "vol-dumpxml", cmd_vol_dumpxml, vol_dump_opts, "vol information in libvirt's XML",
	  false },
	{ "vol-info", cmd_vol_info, info_opts, "storage vol information", false },
	{ "vol-key", cmd_vol_key, vol_opts,
	  "returns the volume key for a given volume name or path", false },
	{ "vol-lease", cmd_vol_lease, vol_opts,
	  "the host holding the volume's sanlock lease (shared pools)", false },
	{ "vol-list", cmd_vol_list, list_opts, "list vols", false },
	{ "vol-name", cmd_vol_name, vol_key_opts, "returns the volume name for a given volume key",
	  false },
	{ "vol-path", cmd_vol_path, vol_opts, "returns the volume path for a given volume name",
	  false },
	{ "vol-pool", cmd_vol_pool, vol_pool_opts,
	  "returns the storage pool for a given volume path", false },
	{ "vol-resize", cmd_vol_resize, resize_opts, "resize a vol", false },
	{ "vol-upload", cmd_vol_upload, updown_opts, "upload file contents to a volume", false },
	{ "vol-wipe", cmd_vol_wipe, wipe_opts, "wipe a vol", false },
	{ NULL, NULL, NULL, NULL, false },
};
