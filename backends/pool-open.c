/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Opening volumes: the protocol node of a volume (with its lease), the
 * vol:POOL/VOLUME resolver that libstore calls for prefixed names, and the
 * probing of a volume's format and sizes.
 */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bytes.h"
#include "driver.h"

#include "pool-int.h"

/* ---- Opening volumes ------------------------------------------------------- */

/* The protocol node of @vol: the backend's own open, or the driver of its path. */
static int vol_node_open(struct vs_pool *p, const struct vs_vol_info *vol,
			 const struct vs_open_opts *o, struct vs_node **n, struct vs_error *err)
{
	if (p->backend->vol_open)
		return p->backend->vol_open(p, vol, o, n, err);
	return vs_protocol_open(n, vol->path, o, err);
}

/* What a node opened through a pool releases when it is closed. */
struct vol_hold {
	struct vs_vol_lease *lease;
	struct pool_sanlock_lease *sanlock; /* writers of shared pools */
	struct vs_pool *pool;		    /* owned when opened through vol: */
};

static void vol_hold_release(void *opaque)
{
	struct vol_hold *h = opaque;

	vs_vol_lease_release(h->lease);
	pool_sanlock_release(h->sanlock);
	vs_pool_free(h->pool);
	free(h);
}

/*
 * Open the storage of @vol as a protocol node; on success the node owns
 * the lease and, if @own_pool, @p.
 */
static int vol_open_protocol(struct vs_pool *p, const struct vs_vol_info *vol,
			     const struct vs_open_opts *opts, bool own_pool, struct vs_node **out,
			     struct vs_error *err)
{
	struct vs_open_opts o = *opts;
	struct vol_hold *h = calloc(1, sizeof(*h));
	struct vs_node *n = NULL;
	int ret;

	if (!h)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	if (vol->type != VS_VOL_FILE && vol->type != VS_VOL_BLOCK && !opts->force_share) {
		unsigned perm = VS_PERM_CONSISTENT_READ;

		if (!opts->read_only)
			perm |= VS_PERM_WRITE | VS_PERM_RESIZE;
		ret = vs_vol_lease_acquire(
			p->state, p->def.name, vol->name, perm,
			opts->read_only ? VS_PERM_ALL & ~VS_PERM_WRITE & ~VS_PERM_RESIZE :
					  VS_PERM_CONSISTENT_READ | VS_PERM_WRITE_UNCHANGED,
			&h->lease, err);
		if (ret < 0) {
			free(h);
			return ret;
		}
	}
	/*
	 * Across hosts: the volume's sanlock lease, before the first write can
	 * happen. A build's hidden volume has a name no other host opens.
	 */
	if (pool_sanlock_dir(p) && !opts->read_only && !pool_build_tmp_name(vol->name)) {
		ret = pool_sanlock_acquire(p, vol->name, &h->sanlock, err);
		if (ret < 0) {
			vs_vol_lease_release(h->lease);
			free(h);
			return ret;
		}
	}
	o.filename = vol->path;
	ret = vol_node_open(p, vol, &o, &n, err);
	if (ret < 0) {
		pool_sanlock_release(h->sanlock);
		vs_vol_lease_release(h->lease);
		free(h);
		return ret;
	}
	if (h->sanlock)
		n->write_fence = pool_sanlock_lost_flag(h->sanlock);
	if (own_pool)
		h->pool = p;
	n->close_hook = vol_hold_release;
	n->close_hook_opaque = h;
	*out = n;
	return 0;
}

static char resolver_dir[VS_POOL_PATH_MAX];
static struct vs_pool_state *resolver_state;

int vs_pool_vol_open(struct vs_pool *p, const char *name, const struct vs_open_opts *opts,
		     bool raw_bytes, struct vs_node **out, struct vs_error *err)
{
	struct vs_open_opts o = *opts;
	struct vs_vol_info vol;
	char vname[2 * VS_POOL_NAME_MAX + 8];
	int ret = vs_pool_vol_info(p, name, &vol, err);

	if (ret < 0)
		return ret;
	if (raw_bytes)
		return vol_open_protocol(p, &vol, opts, false, out, err);
	/* The image: through the vol: resolver, so image.c builds the format node. */
	if (strcmp(resolver_dir, p->state->path)) {
		ret = vs_pool_register_resolver(p->state->path);
		if (ret < 0)
			return vs_error_setf_errno(err, ret, "Cannot register the vol: resolver");
	}
	snprintf(vname, sizeof(vname), "vol:%s/%s", p->def.name, name);
	o.filename = vname;
	return vs_image_open(out, &o, err);
}

/* Split "vol:POOL/VOLUME". */
static int parse_vol_name(const char *name, char *pool, char *vol, struct vs_error *err)
{
	const char *s = name + 4, *slash = strchr(s, '/');

	if (!slash || (size_t)(slash - s) > VS_POOL_NAME_MAX ||
	    strlen(slash + 1) > VS_POOL_NAME_MAX)
		return vs_error_set(err, -EINVAL, "'%s': expected vol:POOL/VOLUME", name);
	memcpy(pool, s, (size_t)(slash - s));
	pool[slash - s] = '\0';
	strcpy(vol, slash + 1);
	if (vs_pool_check_name(pool, "Pool", err) < 0 || vs_pool_check_name(vol, "Volume", err) < 0)
		return -EINVAL;
	return 0;
}

static int resolver_load(const char *name, struct vs_pool **pool, char *vol, struct vs_error *err)
{
	char pname[VS_POOL_NAME_MAX + 1];
	struct vs_pool *p;
	int ret;

	ret = parse_vol_name(name, pname, vol, err);
	if (ret < 0)
		return ret;
	if (!resolver_state) {
		resolver_state = calloc(1, sizeof(*resolver_state));
		if (!resolver_state)
			return vs_error_set(err, -ENOMEM, "Out of memory");
		resolver_state->lock_fd = -1;
		if (!resolver_dir[0] &&
		    vs_pool_state_dir(resolver_dir, sizeof(resolver_dir), NULL) < 0) {
			free(resolver_state);
			resolver_state = NULL;
			return vs_error_set(err, -ENOENT, "No state directory for pools");
		}
		strcpy(resolver_state->path, resolver_dir);
	}
	/* Definitions are replaced by rename: reading needs no lock. */
	ret = vs_pool_load(resolver_state, pname, &p, err);
	if (ret < 0)
		return ret;
	if (!p->active) {
		vs_pool_free(p);
		return vs_error_set(err, -EINVAL, "storage pool '%s' is not active", pname);
	}
	*pool = p;
	return 0;
}

static int resolver_open(const char *name, const struct vs_open_opts *opts, struct vs_node **out,
			 struct vs_error *err)
{
	char vol[VS_POOL_NAME_MAX + 1];
	struct vs_vol_info info;
	struct vs_pool *p;
	int ret;

	ret = resolver_load(name, &p, vol, err);
	if (ret < 0)
		return ret;
	ret = vs_pool_vol_info(p, vol, &info, err);
	if (ret == 0)
		ret = vol_open_protocol(p, &info, opts, true, out, err);
	if (ret < 0)
		vs_pool_free(p);
	return ret;
}

static int resolver_create(const char *name, const char *format, uint64_t size,
			   const struct vs_kv *opts, size_t nopts, unsigned flags,
			   struct vs_error *err)
{
	char vol[VS_POOL_NAME_MAX + 1];
	struct vs_vol_create_args a = { .allocation = UINT64_MAX };
	struct vs_vol_info info;
	struct vs_pool *p;
	bool recreate = false;
	int ret;

	ret = resolver_load(name, &p, vol, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < nopts; i++) {
		if (!strcmp(opts[i].key, "backing_file"))
			a.backing_path = opts[i].value;
		else if (!strcmp(opts[i].key, "backing_fmt"))
			a.backing_format = opts[i].value;
		else
			recreate = true; /* options only the image layer knows */
	}
	ret = p->backend->vol_info(p, vol, &info, NULL);
	if (ret < 0 && recreate) {
		/* Options only the image layer knows: format it before it is listed. */
		struct vs_vol_build *b;

		a.name = vol;
		a.format = format ? format : "raw";
		a.capacity = size;
		ret = vs_pool_vol_build_begin(p, &a, &b, err);
		if (ret < 0)
			goto out;
		ret = vs_pool_vol_info(p, vs_vol_build_name(b), &info, err);
		if (ret == 0 && info.type != VS_VOL_FILE && info.type != VS_VOL_BLOCK)
			ret = vs_error_set(err, -ENOTSUP,
					   "'%s': image options (-o) are taken only in a dir pool",
					   name);
		if (ret == 0)
			ret = vs_image_create_ex(info.path, format, size, opts, nopts, flags, err);
		if (ret < 0)
			vs_pool_vol_build_abort(b);
		else
			ret = vs_pool_vol_build_commit(b, err);
		goto out;
	}
	if (ret < 0) {
		a.name = vol;
		a.format = format ? format : "raw";
		a.capacity = size;
		ret = vs_pool_vol_create(p, &a, err);
		goto out;
	}
	if (info.type != VS_VOL_FILE && info.type != VS_VOL_BLOCK) {
		ret = vs_error_set(err, -ENOTSUP,
				   "volume '%s' exists; an image can be created over an existing "
				   "volume only in a dir pool",
				   name);
		goto out;
	}
	ret = vs_image_create_ex(info.path, format, size, opts, nopts, flags, err);
out:
	vs_pool_free(p);
	return ret;
}

/* Whether @a and @b name one volume: the same string, or one local file. */
static bool same_vol_path(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!strcmp(a, b))
		return true;
	return a[0] == '/' && b[0] == '/' && stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int vs_pool_find_vol_by_path(struct vs_pool_state *st, const char *path, char *pool_out,
			     char *vol_out, struct vs_error *err)
{
	const char *base = strrchr(path, '/');
	struct vs_vol_info info;
	char **names = NULL;
	size_t n = 0;
	int ret;

	base = base ? base + 1 : path;
	if (vs_pool_check_name(base, "Volume", NULL) < 0)
		goto not_found;
	ret = vs_pool_state_list(st, &names, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		struct vs_pool *p;
		bool found;

		if (vs_pool_load(st, names[i], &p, NULL) < 0)
			continue;
		found = p->active && vs_pool_vol_info(p, base, &info, NULL) == 0 &&
			same_vol_path(info.path, path);
		if (found) {
			strcpy(pool_out, p->def.name);
			strcpy(vol_out, info.name);
		}
		vs_pool_free(p);
		if (found) {
			vs_pool_names_free(names, n);
			return 0;
		}
	}
	vs_pool_names_free(names, n);
not_found:
	return vs_error_set(err, -ENOENT, "'%s' is not a volume of an active storage pool", path);
}

/*
 * The backing file of a pool volume must be a volume of an active pool
 * (libvirt's rule): a name relative to the volume, a path that a pool's
 * volume has, or vol:POOL/VOLUME. Anything else (a host path such as
 * /etc/shadow, an nbd:// URI) is refused, for that volume alone.
 */
static int resolver_backing(const char *overlay, const char *backing, char *out, size_t outsz,
			    struct vs_error *err)
{
	char pname[VS_POOL_NAME_MAX + 1], vol[VS_POOL_NAME_MAX + 1];
	char path[VS_POOL_PATH_MAX];
	struct vs_vol_info info;
	struct vs_pool *p;
	int ret;

	if (!strncmp(backing, "vol:", 4)) {
		ret = parse_vol_name(backing, pname, vol, err);
		if (ret == 0 && snprintf(out, outsz, "%s", backing) >= (int)outsz)
			ret = vs_error_set(err, -ENAMETOOLONG, "'%s': name too long", backing);
		return ret;
	}
	ret = resolver_load(overlay, &p, vol, err);
	if (ret < 0)
		return ret;
	ret = vs_pool_vol_info(p, vol, &info, err);
	vs_pool_free(p);
	if (ret < 0)
		return ret;
	if (vs_path_combine(path, sizeof(path), info.path, backing) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "'%s': name too long", backing);
	ret = vs_pool_find_vol_by_path(resolver_state, path, pname, vol, NULL);
	if (ret < 0)
		return vs_error_set(err, -EPERM,
				    "'%s' is not a volume of an active storage pool (the backing "
				    "chain of volume '%s' may only name pool volumes)",
				    backing, overlay);
	snprintf(out, outsz, "vol:%s/%s", pname, vol);
	return 0;
}

/*
 * The passphrase of an encrypted volume: the value of its secret in the
 * secret store. -ENOENT when the volume is clear or has no secret (a
 * caller's key-secret then applies).
 */
static int resolver_key_secret(const char *name, uint8_t **data, size_t *len, struct vs_error *err)
{
	char vol[VS_POOL_NAME_MAX + 1], uuid[37];
	struct vs_vol_info info;
	struct vs_pool *p;
	int ret;

	ret = resolver_load(name, &p, vol, err);
	if (ret < 0)
		return ret;
	ret = vs_pool_vol_info(p, vol, &info, err);
	if (ret == 0 && !info.encryption[0])
		ret = -ENOENT;
	if (ret == 0)
		ret = vs_pool_vol_secret(p, &info, uuid, NULL);
	if (ret == 0)
		ret = vs_pool_secret_get_value(p->state, uuid, data, len, err);
	vs_pool_free(p);
	return ret;
}

static const struct vs_image_resolver vol_resolver = {
	.prefix = "vol:",
	.open = resolver_open,
	.create = resolver_create,
	.resolve_backing = resolver_backing,
	.key_secret = resolver_key_secret,
};

int vs_pool_register_resolver(const char *state_dir)
{
	int ret;

	if (state_dir) {
		if (vs_pool_strcpy(resolver_dir, sizeof(resolver_dir), state_dir) < 0)
			return -ENAMETOOLONG;
	} else {
		ret = vs_pool_state_dir(resolver_dir, sizeof(resolver_dir), NULL);
		if (ret < 0)
			return ret;
	}
	if (resolver_state)
		strcpy(resolver_state->path, resolver_dir);
	return vs_image_register_resolver(&vol_resolver);
}

/* ---- Probing ----------------------------------------------------------------- */

int vs_pool_probe_volume(struct vs_pool *p, struct vs_vol_info *vol, struct vs_error *err)
{
	struct vs_open_opts o = { .read_only = true, .force_share = true };
	const size_t hdr_len = 65536;
	struct vs_node *n = NULL;
	uint8_t *buf;
	size_t len;
	int ret;

	o.filename = vol->path;
	ret = vol_node_open(p, vol, &o, &n, err);
	if (ret < 0)
		return ret;
	strcpy(vol->format, "raw");
	vol->capacity = vs_node_size(n);
	if (!vol->physical)
		vol->physical = vol->capacity; /* what the storage holds: the node's size */
	vol->backing[0] = vol->backing_format[0] = '\0';
	len = vol->capacity < hdr_len ? (size_t)vol->capacity : hdr_len;
	buf = vs_buf_zalloc(hdr_len);
	if (!buf) {
		vs_node_close(n);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = len >= 72 ? vs_node_pread(n, 0, buf, (len + 511) & ~(size_t)511) : 0;
	if (ret < 0) {
		vs_error_setf_errno(err, ret, "Cannot read '%s'", vol->path);
		goto out;
	}
	if (len >= 72 && !memcmp(buf, "QFI\xfb", 4)) {
		uint32_t version = vs_be32(buf + 4);
		uint64_t boff = vs_be64(buf + 8);
		uint32_t blen = vs_be32(buf + 16);
		uint32_t hlen = version >= 3 && len >= 104 ? vs_be32(buf + 100) : 72;

		strcpy(vol->format, "qcow2");
		vol->capacity = vs_be64(buf + 24);
		/* crypt_method: 1 the legacy AES, 2 LUKS. */
		if (vs_be32(buf + 32) == 1)
			strcpy(vol->encryption, "aes");
		else if (vs_be32(buf + 32) == 2)
			strcpy(vol->encryption, "luks");
		strcpy(vol->compat, version >= 3 ? "1.1" : "0.10");
		if (vs_be32(buf + 20) >= 9 && vs_be32(buf + 20) <= 21)
			vol->cluster_size = 1u << vs_be32(buf + 20);
		vol->lazy_refcounts = version >= 3 && len >= 88 && (vs_be64(buf + 80) & 1);
		if (boff && blen && blen < sizeof(vol->backing) && boff < len &&
		    blen <= len - boff) {
			memcpy(vol->backing, buf + boff, blen);
			vol->backing[blen] = '\0';
		}
		/* Header extensions: the backing format (0xe2792aca). */
		for (uint64_t off = hlen; off + 8 <= len;) {
			uint32_t type = vs_be32(buf + off), elen = vs_be32(buf + off + 4);

			if (type == 0 || off + 8 + elen > len)
				break;
			if (type == 0xe2792aca && elen < sizeof(vol->backing_format)) {
				memcpy(vol->backing_format, buf + off + 8, elen);
				vol->backing_format[elen] = '\0';
			}
			off += 8 + (((uint64_t)elen + 7) & ~7ull);
		}
	}
	/*
	 * A raw LUKS volume: format raw and encryption luks, as libvirt says
	 * it; the capacity is the payload's (after the payload offset).
	 */
	if (len >= 112 && !memcmp(buf, "LUKS\xba\xbe", 6) && vs_be16(buf + 6) == 1) {
		uint64_t payload = (uint64_t)vs_be32(buf + 104) * 512;

		strcpy(vol->encryption, "luks");
		vol->capacity = vol->capacity > payload ? vol->capacity - payload : 0;
	}
	ret = 0;
out:
	free(buf);
	vs_node_close(n);
	return ret;
}
