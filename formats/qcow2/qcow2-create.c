/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 image creation with the -o options qemu-img 7.2 takes, validated
 * with the same rules and messages.
 *
 * Layout of a new image: qemu-img's, byte for byte (header cluster with
 * the extensions and backing file name, refcount table, first refcount
 * block, L1 table, LUKS header area, and the refcount blocks these need
 * where qemu's allocator puts them), all zeroed except for the refcounts.
 * Preallocation then opens the image and allocates through the driver.
 */
#include "qcow2.h"
#include "secret.h"
#include "vstor/parse.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct vs_create_opt_desc qcow2_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "compat", "string", "Compatibility level (v2 [0.10] or v3 [1.1])" },
	{ "backing_file", "string", "File name of a base image" },
	{ "backing_fmt", "string", "Image format of the base image" },
	{ "cluster_size", "size", "qcow2 cluster size" },
	{ "preallocation", "string",
	  "Preallocation mode (allowed values: off, metadata, falloc, full)" },
	{ "lazy_refcounts", "bool", "Postpone refcount updates" },
	{ "refcount_bits", "number", "Width of a reference count entry in bits" },
	{ "extended_l2", "bool", "Extended L2 tables" },
	{ "compression_type", "string", "Compression method used for image cluster compression" },
	{ "encrypt.format", "string", "Encrypt the image, format choices: 'aes', 'luks'" },
	{ "encrypt.key-secret", "string",
	  "ID of secret providing qcow AES key or LUKS passphrase" },
	{ "encrypt.cipher-alg", "string", "Name of encryption cipher algorithm" },
	{ "encrypt.cipher-mode", "string", "Name of encryption cipher mode" },
	{ "encrypt.ivgen-alg", "string", "Name of IV generator algorithm" },
	{ "encrypt.ivgen-hash-alg", "string", "Name of IV generator hash algorithm" },
	{ "encrypt.hash-alg", "string", "Name of encryption hash algorithm" },
	{ "encrypt.iter-time", "number", "Time to spend in PBKDF in milliseconds" },
	{ "encryption", "bool",
	  "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
	{ "data_file", "string", "File name of an external data file" },
	{ "data_file_raw", "bool", "The external data file must stay valid as a raw image" },
	{ NULL, NULL, NULL },
};

struct create_params {
	uint64_t size;
	unsigned version;
	uint64_t cluster_size;
	unsigned refcount_bits;
	bool lazy_refcounts;
	bool extl2;
	enum vs_prealloc prealloc;
	const char *backing_file;
	const char *backing_fmt;
	uint8_t compression_type;
	/* External data file (data_file, data_file_raw): its name as recorded. */
	const char *data_file;
	bool data_file_raw;
	/* encrypt.format=luks (qcow2-crypto.c): the LUKS header's options and place. */
	bool luks;
	const char *key_secret;
	struct vs_luks_build_opts crypt;
	uint8_t *crypto_area; /* header and key material, crypto_len bytes */
	size_t crypto_len;
	uint64_t crypto_offset;
};

/* QEMU's default PBKDF2 time for a key slot, in milliseconds. */
#define QCOW2_LUKS_ITER_TIME 2000

/*
 * Parse and check the -o list. @measure: the checks and messages of qemu's
 * measure, which validates fewer combinations than create.
 */
static int parse_params(uint64_t size, const struct vs_kv *opts, size_t nopts,
			struct create_params *p, bool measure, struct vs_error *err)
{
	bool have_refcount_bits = false;

	memset(p, 0, sizeof(*p));
	p->size = size;
	p->version = 3;
	p->cluster_size = 65536;
	p->refcount_bits = 16;
	p->crypt.iter_time = QCOW2_LUKS_ITER_TIME;
	for (size_t i = 0; i < nopts; i++) {
		const char *k = opts[i].key, *v = opts[i].value ? opts[i].value : "";

		if (!strcmp(k, "size")) {
			if (vs_parse_size(v, &p->size) < 0)
				return vs_error_set(err, -EINVAL,
						    "Parameter 'size' expects a size, got '%s'", v);
		} else if (!strcmp(k, "compat")) {
			if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
				p->version = 2;
			else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
				p->version = 3;
			else if (measure)
				return vs_error_set(err, -EINVAL,
						    "Invalid compatibility level: '%s'", v);
			else
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'version' does not accept value '%s'", v);
		} else if (!strcmp(k, "cluster_size")) {
			if (vs_parse_size(v, &p->cluster_size) < 0)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'cluster-size' expects a size, got '%s'", v);
		} else if (!strcmp(k, "refcount_bits")) {
			char *end;
			unsigned long n = strtoul(v, &end, 10);

			if (!v[0] || *end || n > UINT_MAX)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'refcount-bits' expects a number, got '%s'", v);
			p->refcount_bits = (unsigned)n;
			have_refcount_bits = true;
		} else if (!strcmp(k, "lazy_refcounts")) {
			if (vs_parse_bool(v, &p->lazy_refcounts) < 0 && measure)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'lazy_refcounts' expects 'on' or 'off'");
			if (vs_parse_bool(v, &p->lazy_refcounts) < 0)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'lazy-refcounts' expects 'on' or 'off'");
		} else if (!strcmp(k, "extended_l2")) {
			if (vs_parse_bool(v, &p->extl2) < 0)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'extended-l2' expects 'on' or 'off'");
		} else if (!strcmp(k, "preallocation")) {
			if (vs_prealloc_parse(v, &p->prealloc) < 0 && measure)
				return vs_error_set(err, -EINVAL, "invalid parameter value: %s", v);
			if (vs_prealloc_parse(v, &p->prealloc) < 0)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'preallocation' does not accept value '%s'", v);
		} else if (!strcmp(k, "backing_file")) {
			p->backing_file = v[0] ? v : NULL;
		} else if (!strcmp(k, "backing_fmt")) {
			p->backing_fmt = v[0] ? v : NULL;
		} else if (!strcmp(k, "compression_type")) {
			if (measure)
				continue; /* not looked at by measure */
			if (!strcmp(v, "zlib"))
				p->compression_type = QCOW2_COMPRESSION_ZLIB;
			else if (!strcmp(v, "zstd"))
				p->compression_type = QCOW2_COMPRESSION_ZSTD;
			else
				return vs_error_set(err, -EINVAL,
						    "Parameter 'compression-type' does not accept "
						    "value '%s'",
						    v);
		} else if (!strcmp(k, "encrypt.format")) {
			if (!strcmp(v, "luks"))
				p->luks = true;
			else if (!strcmp(v, "aes"))
				return vs_error_set(
					err, -ENOTSUP,
					"Creating AES encrypted qcow2 images is not "
					"supported (vstor reads them for conversion only); "
					"use encrypt.format=luks");
			else
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'encrypt.format' does not accept value '%s'", v);
		} else if (!strcmp(k, "encryption")) {
			bool on;

			if (vs_parse_bool(v, &on) < 0)
				return vs_error_set(err, -EINVAL,
						    "Parameter 'encryption' expects 'on' or 'off'");
			if (on)
				return vs_error_set(
					err, -ENOTSUP,
					"Creating AES encrypted qcow2 images is not "
					"supported (vstor reads them for conversion only); "
					"use encrypt.format=luks");
		} else if (!strcmp(k, "encrypt.key-secret")) {
			p->key_secret = v;
		} else if (!strcmp(k, "encrypt.cipher-alg")) {
			p->crypt.cipher_alg = v;
		} else if (!strcmp(k, "encrypt.cipher-mode")) {
			p->crypt.cipher_mode = v;
		} else if (!strcmp(k, "encrypt.ivgen-alg")) {
			p->crypt.ivgen_alg = v;
		} else if (!strcmp(k, "encrypt.ivgen-hash-alg")) {
			p->crypt.ivgen_hash = v;
		} else if (!strcmp(k, "encrypt.hash-alg")) {
			p->crypt.hash_alg = v;
		} else if (!strcmp(k, "encrypt.iter-time")) {
			char *endp;

			p->crypt.iter_time = strtoull(v, &endp, 10);
			if (!*v || *endp || p->crypt.iter_time == 0 || p->crypt.iter_time > 3600000)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'encrypt.iter-time' expects a number "
					"of milliseconds");
		} else if (!strcmp(k, "data_file")) {
			p->data_file = v;
		} else if (!strcmp(k, "data_file_raw")) {
			if (vs_parse_bool(v, &p->data_file_raw) < 0)
				return vs_error_set(
					err, -EINVAL,
					"Parameter 'data-file-raw' expects 'on' or 'off'");
		} else {
			return vs_error_set(err, -EINVAL, "Invalid parameter '%s'", k);
		}
	}

	if (p->cluster_size < 512 || p->cluster_size > (2u << 20) ||
	    (p->cluster_size & (p->cluster_size - 1)))
		return vs_error_set(err, -EINVAL,
				    "Cluster size must be a power of two between 512 and 2048k");
	if (!p->refcount_bits || p->refcount_bits > 64 ||
	    (p->refcount_bits & (p->refcount_bits - 1)))
		return vs_error_set(
			err, -EINVAL,
			"Refcount width must be a power of two and may not exceed 64 bits");
	if (p->version < 3 && measure && p->refcount_bits != 16)
		return vs_error_set(err, -EINVAL,
				    "Different refcount widths than 16 bits require compatibility "
				    "level 1.1 or above (use compat=1.1 or greater)");
	if (p->version < 3 && !measure) {
		if (have_refcount_bits && p->refcount_bits != 16)
			return vs_error_set(err, -EINVAL,
					    "Different refcount widths than 16 bits require "
					    "compatibility level 1.1 or above (use version=v3 or "
					    "greater)");
		if (p->lazy_refcounts)
			return vs_error_set(
				err, -EINVAL,
				"Lazy refcounts only supported with compatibility level "
				"1.1 and above (use version=v3 or greater)");
		if (p->extl2)
			return vs_error_set(err, -EINVAL,
					    "Extended L2 entries are only supported with "
					    "compatibility level 1.1 and above (use version=v3 or "
					    "greater)");
		if (p->compression_type != QCOW2_COMPRESSION_ZLIB)
			return vs_error_set(err, -EINVAL,
					    "Non-zlib compression type is only supported with "
					    "compatibility level 1.1 and above (use version=v3 or "
					    "greater)");
	}
	if (!p->luks && (p->key_secret || p->crypt.cipher_alg || p->crypt.cipher_mode ||
			 p->crypt.ivgen_alg || p->crypt.ivgen_hash || p->crypt.hash_alg))
		return vs_error_set(err, -EINVAL, "Encryption options require encrypt.format=luks");
	if (p->luks && !p->key_secret)
		return vs_error_set(err, -EINVAL,
				    "Parameter 'encrypt.key-secret' is required for cipher");
	if (p->extl2 && p->cluster_size < 16384)
		return vs_error_set(
			err, -EINVAL,
			"Extended L2 entries are only supported with cluster sizes of at "
			"least 16384 bytes");
	if (measure)
		return 0;
	if (p->data_file && !p->data_file[0])
		p->data_file = NULL;
	if (p->data_file && p->version < 3)
		return vs_error_set(err, -EINVAL,
				    "External data files are only supported with compatibility "
				    "level 1.1 and above (use version=v3 or greater)");
	if (p->data_file_raw && !p->data_file)
		return vs_error_set(err, -EINVAL, "data-file-raw requires data-file");
	if (p->data_file_raw && p->backing_file)
		return vs_error_set(
			err, -EINVAL,
			"Backing file and data-file-raw cannot be used at the same time");
	if (p->data_file && strlen(p->data_file) > QCOW2_MAX_DATA_FILE_NAME)
		return vs_error_set(err, -EINVAL, "Data file name too long");
	if (p->data_file && p->luks)
		return vs_error_set(err, -EINVAL,
				    "Encryption is not supported with an external data file");
	if (p->backing_fmt && !p->backing_file)
		return vs_error_set(err, -EINVAL,
				    "Backing format cannot be used without backing file");
	if (p->backing_file && p->prealloc != VS_PREALLOC_OFF && !p->extl2)
		return vs_error_set(err, -EINVAL,
				    "Backing file and preallocation can only be used at the same "
				    "time if extended_l2 is on");
	if (p->backing_file && strlen(p->backing_file) > QCOW2_MAX_BACKING_NAME)
		return vs_error_set(err, -EINVAL, "Backing file name too long");
	if (p->backing_fmt && strlen(p->backing_fmt) > 63)
		return vs_error_set(err, -EINVAL, "Backing format name too long");
	return 0;
}

/* Open the backing file as qemu-img create does: it must exist and its format be given. */
static int check_backing(const char *filename, struct create_params *p, struct vs_error *err)
{
	char path[PATH_MAX];
	struct vs_open_opts o = { 0 };
	struct vs_node *b = NULL;
	struct vs_error inner = { 0 };
	int ret;

	char json_fmt[32] = "";

	if (vs_path_combine(path, sizeof(path), filename, p->backing_file) < 0)
		return vs_error_set(err, -ENAMETOOLONG, "Backing file name too long");
	if (!strncmp(p->backing_file, "json:", 5)) {
		ret = vs_json_name_resolve(p->backing_file, path, sizeof(path), json_fmt,
					   sizeof(json_fmt), &inner);
		if (ret < 0)
			return vs_error_set(err, ret, "%s", inner.msg);
	}
	o.filename = path;
	/* As QEMU: -F wins over the name's driver; the driver alone still needs -F. */
	o.format = p->backing_fmt ? p->backing_fmt : json_fmt[0] ? json_fmt : NULL;
	o.read_only = true;
	o.force_share = true;
	o.no_backing = true;
	o.no_repair = true;
	ret = vs_image_open(&b, &o, &inner);
	if (ret < 0)
		return vs_error_set(err, ret, "Could not open backing file: %s", inner.msg);
	if (!p->backing_fmt) {
		ret = vs_error_set(err, -EINVAL,
				   "Backing file specified without backing format (detected format "
				   "of %s: %s; use -F %s)",
				   p->backing_file, vs_node_format(b), vs_node_format(b));
		vs_node_close(b);
		return ret;
	}
	if (!p->size)
		p->size = vs_node_size(b);
	vs_node_close(b);
	return 0;
}

static size_t put_ext(uint8_t *buf, size_t off, uint32_t type, const void *data, uint32_t len)
{
	vs_put_be32(buf + off, type);
	vs_put_be32(buf + off + 4, len);
	memcpy(buf + off + 8, data, len);
	return off + 8 + ((len + 7u) & ~7u);
}

static const struct {
	uint8_t type, bit;
	const char *name;
} feature_table[] = {
	{ 0, 0, "dirty bit" },
	{ 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" },
	{ 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },
	{ 2, 1, "raw external data" },
};

/* Build the header cluster into @buf (cluster_size bytes, zeroed). */
static int build_header(const struct create_params *p, struct qcow2_header *h, uint8_t *buf,
			struct vs_error *err)
{
	size_t off = h->header_length;
	size_t cs = (size_t)p->cluster_size;
	size_t ft_len = sizeof(feature_table) / sizeof(feature_table[0]) * 48;
	size_t bf_len = p->backing_fmt ? strlen(p->backing_fmt) : 0;
	size_t bn_len = p->backing_file ? strlen(p->backing_file) : 0;
	size_t df_len = p->data_file ? strlen(p->data_file) : 0;
	size_t need = off + 8 /* end */ + bn_len;
	/* As qemu-img 7.2: no feature name table below 8 KiB clusters. */
	bool with_ft = p->version >= 3 && cs >= 8192;

	if (bf_len)
		need += 8 + ((bf_len + 7) & ~(size_t)7);
	if (df_len)
		need += 8 + ((df_len + 7) & ~(size_t)7);
	if (p->luks)
		need += 8 + 16;
	/* The feature name table is only informative: leave it out if the cluster is too small. */
	if (with_ft && need + 8 + ft_len > cs)
		with_ft = false;
	if (with_ft)
		need += 8 + ft_len;
	if (need > cs)
		return vs_error_set(err, -EINVAL,
				    "Backing file name too long for the cluster size");

	if (bf_len)
		off = put_ext(buf, off, QCOW2_EXT_BACKING_FORMAT, p->backing_fmt, (uint32_t)bf_len);
	if (df_len)
		off = put_ext(buf, off, QCOW2_EXT_DATA_FILE, p->data_file, (uint32_t)df_len);
	if (p->luks) {
		uint8_t ext[16];

		vs_put_be64(ext, p->crypto_offset);
		vs_put_be64(ext + 8, p->crypto_len);
		off = put_ext(buf, off, QCOW2_EXT_CRYPTO, ext, sizeof(ext));
	}
	if (with_ft) {
		uint8_t ft[sizeof(feature_table) / sizeof(feature_table[0]) * 48];

		memset(ft, 0, sizeof(ft));
		for (size_t i = 0; i < sizeof(feature_table) / sizeof(feature_table[0]); i++) {
			ft[48 * i] = feature_table[i].type;
			ft[48 * i + 1] = feature_table[i].bit;
			memcpy(ft + 48 * i + 2, feature_table[i].name,
			       strlen(feature_table[i].name));
		}
		off = put_ext(buf, off, QCOW2_EXT_FEATURE_TABLE, ft, (uint32_t)ft_len);
	}
	off += 8; /* end of extensions: type 0, length 0 */
	if (bn_len) {
		h->backing_file_offset = off;
		h->backing_file_size = (uint32_t)bn_len;
		memcpy(buf + off, p->backing_file, bn_len);
	}
	qcow2_header_encode(h, buf);
	return 0;
}

/*
 * Where each cluster of a new image goes. qemu-img writes the header, the
 * refcount table and the first refcount block (clusters 0 to 2), then
 * allocates the L1 table and the LUKS header area through its cluster
 * allocator, which adds the refcount blocks that are missing on the way;
 * only the L1 table's own bytes are written, so the file can end inside
 * its last cluster. The same image, byte for byte, is built here.
 */
struct layout {
	uint64_t reftable_clusters;
	uint64_t *refblocks; /* cluster of refcount block i, 0 for none; rt_entries of them */
	uint64_t rt_entries;
	uint8_t *used;	    /* a byte per cluster: in use */
	uint64_t nclusters; /* clusters in use lie below this */
	uint64_t l1_offset, crypto_offset;
	uint64_t file_len;
};

static void layout_free(struct layout *l)
{
	free(l->refblocks);
	free(l->used);
	l->refblocks = NULL;
	l->used = NULL;
}

/* qemu's allocator, replayed: the state of the image being laid out. */
struct layout_sim {
	struct layout *l;
	uint64_t cap;	   /* clusters @used can describe */
	uint64_t free_idx; /* where the next free cluster is searched from */
	unsigned rb_bits;
};

/* The next run of @n free clusters from free_idx, not yet counted (-EFBIG: out of room). */
static int64_t sim_find_free(struct layout_sim *s, uint64_t n)
{
	uint64_t run = 0;

	while (run < n) {
		if (s->free_idx >= s->cap)
			return -EFBIG;
		run = s->l->used[s->free_idx++] ? 0 : run + 1;
	}
	return (int64_t)(s->free_idx - n);
}

static int sim_count(struct layout_sim *s, uint64_t start, uint64_t n);

/* Add refcount block @b; -EAGAIN as qemu: the caller starts its search again. */
static int sim_add_refblock(struct layout_sim *s, uint64_t b)
{
	int64_t nb = sim_find_free(s, 1);
	int ret;

	if (nb < 0)
		return (int)nb;
	if (((uint64_t)nb >> s->rb_bits) == b) {
		s->l->used[nb] = 1; /* it counts itself */
	} else {
		ret = sim_count(s, (uint64_t)nb, 1);
		if (ret < 0)
			return ret;
	}
	s->l->refblocks[b] = (uint64_t)nb;
	return -EAGAIN;
}

/* Count @n clusters from @start as used; on failure, undo the part done. */
static int sim_count(struct layout_sim *s, uint64_t start, uint64_t n)
{
	for (uint64_t c = start; c < start + n; c++) {
		uint64_t b = c >> s->rb_bits;
		int ret = 0;

		if (b >= s->l->rt_entries)
			ret = -EFBIG; /* qemu would grow the refcount table: not replayed */
		else if (!s->l->refblocks[b])
			ret = sim_add_refblock(s, b);
		if (ret < 0) {
			if (c > start) {
				memset(s->l->used + start, 0, c - start);
				if (start < s->free_idx)
					s->free_idx = start;
			}
			return ret;
		}
		s->l->used[c] = 1;
	}
	return 0;
}

static int64_t sim_alloc(struct layout_sim *s, uint64_t n)
{
	for (;;) {
		int64_t start = sim_find_free(s, n);
		int ret;

		if (start < 0)
			return start;
		ret = sim_count(s, (uint64_t)start, n);
		if (ret == 0)
			return start;
		if (ret != -EAGAIN)
			return ret;
	}
}

/* qemu-img's layout; -EFBIG when it would need a bigger refcount table. */
static int layout_qemu(const struct create_params *p, uint64_t l1_size, struct layout *l)
{
	uint64_t cs = p->cluster_size;
	uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
	uint64_t crypto_clusters = (p->crypto_len + cs - 1) / cs;
	struct layout_sim s = { .l = l };
	int64_t at;

	while ((UINT64_C(1) << s.rb_bits) < cs * 8 / p->refcount_bits)
		s.rb_bits++;
	l->reftable_clusters = 1;
	l->rt_entries = cs / 8;
	s.cap = 3 + l1_clusters + crypto_clusters + l->rt_entries + 1;
	l->refblocks = calloc(l->rt_entries, sizeof(*l->refblocks));
	l->used = calloc(s.cap, 1);
	if (!l->refblocks || !l->used)
		return -ENOMEM;
	memset(l->used, 1, 3);
	l->refblocks[0] = 2;
	s.free_idx = 3;
	l->file_len = 3 * cs;
	if (l1_size) {
		at = sim_alloc(&s, l1_clusters);
		if (at < 0)
			return (int)at;
		l->l1_offset = (uint64_t)at * cs;
	}
	if (crypto_clusters) {
		at = sim_alloc(&s, crypto_clusters);
		if (at < 0)
			return (int)at;
		l->crypto_offset = (uint64_t)at * cs;
	}
	for (uint64_t c = 0; c < s.cap; c++) {
		uint64_t end = (c + 1) * cs;

		if (!l->used[c])
			continue;
		l->nclusters = c + 1;
		/* The L1 table's last cluster is written only as far as the table goes. */
		if (l1_size && c == (l->l1_offset + l1_size * 8 - 1) / cs)
			end = l->l1_offset + l1_size * 8;
		if (end > l->file_len)
			l->file_len = end;
	}
	return 0;
}

/* Beyond what layout_qemu replays: every metadata cluster packed in order. */
static int layout_packed(const struct create_params *p, uint64_t l1_size, struct layout *l)
{
	uint64_t cs = p->cluster_size;
	uint64_t rb_entries = cs * 8 / p->refcount_bits;
	uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
	uint64_t crypto_clusters = (p->crypto_len + cs - 1) / cs;
	uint64_t refblocks = 1, rt = 1, total;

	for (;;) {
		uint64_t rb, rtc;

		total = 1 + rt + refblocks + l1_clusters + crypto_clusters;
		rb = (total + rb_entries - 1) / rb_entries;
		rtc = (rb * 8 + cs - 1) / cs;
		if (rb <= refblocks && rtc <= rt)
			break;
		refblocks = rb > refblocks ? rb : refblocks;
		rt = rtc > rt ? rtc : rt;
	}
	if (rt * cs > QCOW2_MAX_REFTABLE_SIZE)
		return -EFBIG;
	l->reftable_clusters = rt;
	l->rt_entries = rt * cs / 8;
	l->refblocks = calloc(l->rt_entries, sizeof(*l->refblocks));
	l->used = malloc(total);
	if (!l->refblocks || !l->used)
		return -ENOMEM;
	memset(l->used, 1, total);
	for (uint64_t i = 0; i < refblocks; i++)
		l->refblocks[i] = 1 + rt + i;
	l->l1_offset = (1 + rt + refblocks) * cs;
	l->crypto_offset = l->l1_offset + l1_clusters * cs;
	l->nclusters = total;
	l->file_len = total * cs;
	return 0;
}

/* The geometry of the new image, as the driver's helpers take it. */
static void create_geometry(const struct create_params *p, struct qcow2_state *geo)
{
	memset(geo, 0, sizeof(*geo));
	while ((UINT64_C(1) << geo->cluster_bits) < p->cluster_size)
		geo->cluster_bits++;
	geo->l2_entries = p->cluster_size / (p->extl2 ? 16 : 8);
	while ((1u << geo->refcount_order) < p->refcount_bits)
		geo->refcount_order++;
	geo->refcount_bits = p->refcount_bits;
}

/* Checked before the file is created, as qemu-img does: nothing is left behind. */
static int check_l1_size(const struct create_params *p, struct vs_error *err)
{
	struct qcow2_state geo;

	create_geometry(p, &geo);
	if (qcow2_l1_size_for(&geo, p->size) > QCOW2_MAX_L1_SIZE / 8)
		return vs_error_set(
			err, -EFBIG,
			"The image size is too large for file format 'qcow2' (try using "
			"a larger cluster size)");
	return 0;
}

static int write_image(struct vs_node *file, struct create_params *p, struct vs_error *err)
{
	struct qcow2_header h;
	struct qcow2_state geo;
	struct layout l = { 0 };
	uint64_t cs = p->cluster_size, l1_size, rb_entries;
	uint8_t *buf = NULL;
	int ret;

	create_geometry(p, &geo);
	l1_size = qcow2_l1_size_for(&geo, p->size);
	ret = layout_qemu(p, l1_size, &l);
	if (ret == -EFBIG) {
		layout_free(&l);
		memset(&l, 0, sizeof(l));
		ret = layout_packed(p, l1_size, &l);
		if (ret == -EFBIG) {
			layout_free(&l);
			return vs_error_set(err, -EFBIG,
					    "Image size too large for this refcount width");
		}
	}
	if (ret < 0) {
		vs_error_set(err, ret, "Out of memory");
		goto out;
	}
	rb_entries = cs * 8 / p->refcount_bits;

	memset(&h, 0, sizeof(h));
	h.magic = QCOW2_MAGIC;
	h.version = p->version;
	h.cluster_bits = geo.cluster_bits;
	h.size = p->size;
	h.l1_size = (uint32_t)l1_size;
	h.refcount_table_offset = cs;
	h.refcount_table_clusters = (uint32_t)l.reftable_clusters;
	h.l1_table_offset = l1_size ? l.l1_offset : 0;
	h.refcount_order = geo.refcount_order;
	h.header_length = p->version >= 3 ? 112 : QCOW2_V2_HEADER_SIZE;
	if (p->luks) {
		h.crypt_method = QCOW2_CRYPT_LUKS;
		p->crypto_offset = l.crypto_offset;
	}
	if (p->version >= 3) {
		if (p->lazy_refcounts)
			h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
		if (p->extl2)
			h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
		if (p->compression_type != QCOW2_COMPRESSION_ZLIB)
			h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
		h.compression_type = p->compression_type;
		if (p->data_file)
			h.incompatible_features |= QCOW2_INCOMPAT_DATA_FILE;
		if (p->data_file_raw)
			h.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	}

	buf = vs_buf_zalloc(l.nclusters * cs);
	if (!buf) {
		ret = vs_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	ret = build_header(p, &h, buf, err);
	if (ret < 0)
		goto out_buf;
	if (p->luks)
		memcpy(buf + p->crypto_offset, p->crypto_area, p->crypto_len);
	/* Reftable entries point to the refblocks; refblocks count every cluster in use. */
	for (uint64_t b = 0; b < l.rt_entries; b++)
		if (l.refblocks[b])
			vs_put_be64(buf + cs + 8 * b, l.refblocks[b] * cs);
	for (uint64_t c = 0; c < l.nclusters; c++)
		if (l.used[c])
			qcow2_rb_entry_set(&geo, buf + l.refblocks[c / rb_entries] * cs,
					   c % rb_entries, 1);
	ret = vs_node_pwrite(file, 0, buf, l.file_len, 0);
	if (ret == 0)
		ret = vs_node_flush(file);
	if (ret < 0)
		vs_error_setf_errno(err, ret, "Could not write the qcow2 metadata");
out_buf:
	free(buf);
out:
	layout_free(&l);
	return ret;
}

static int preallocate(const char *filename, const struct create_params *p, struct vs_error *err)
{
	struct vs_open_opts o = { 0 };
	struct vs_node *node = NULL;
	struct qcow2_state *s;
	int ret;

	o.filename = filename;
	o.format = "qcow2";
	o.no_backing = true;
	o.no_repair = true;
	if (p->luks) {
		uint8_t *pass;
		size_t passlen;

		if (vs_secret_get(p->key_secret, &pass, &passlen) < 0)
			return vs_error_set(err, -ENOENT, "No secret with id '%s' found",
					    p->key_secret);
		o.key_secret_data = pass;
		o.key_secret_len = passlen;
	}
	ret = vs_image_open(&node, &o, err);
	if (o.key_secret_data) {
		gnutls_memset((void *)o.key_secret_data, 0, o.key_secret_len);
		free((void *)o.key_secret_data);
	}
	if (ret < 0)
		return ret;
	s = qcow2_state(node);
	vs_co_mutex_lock(&s->lock);
	if (p->prealloc != VS_PREALLOC_OFF)
		ret = qcow2_preallocate(node, 0, p->size, p->prealloc);
	else /* a data file without preallocation: sized as the image, as QEMU does */
		ret = vs_node_truncate(s->data_file, p->size, VS_PREALLOC_OFF, false, NULL);
	if (ret == 0)
		ret = qcow2_flush_metadata(node);
	vs_co_mutex_unlock(&s->lock);
	if (ret == 0)
		ret = vs_node_flush(node);
	vs_node_close(node);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not preallocate '%s'", filename);
	return 0;
}

int qcow2_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		 unsigned flags, struct vs_error *err)
{
	struct create_params p;
	struct vs_open_opts o = { 0 };
	struct vs_node *file = NULL;
	int ret;

	ret = parse_params(size, opts, nopts, &p, false, err);
	if (ret < 0)
		return ret;
	if (p.backing_file && (flags & VS_CREATE_NO_BACKING_CHECK)) {
		/* -u: the backing file is not opened, so nothing can be probed or measured. */
		if (!p.backing_fmt)
			return vs_error_set(err, -EINVAL,
					    "Backing file specified without backing format");
	} else if (p.backing_file) {
		ret = check_backing(filename, &p, err);
		if (ret < 0)
			return ret;
	}
	/* qemu-img rounds the virtual size up to whole sectors. */
	p.size = (p.size + 511) & ~511ull;
	if (p.size > INT64_MAX)
		return vs_error_set(err, -EINVAL, "Image size too large");
	ret = check_l1_size(&p, err);
	if (ret < 0)
		return ret;

	if (p.luks) {
		uint8_t *pass;
		size_t passlen;
		char msg[160];

		if (vs_secret_get(p.key_secret, &pass, &passlen) < 0)
			return vs_error_set(err, -ENOENT, "No secret with id '%s' found",
					    p.key_secret);
		ret = vs_luks_build(&p.crypt, pass, passlen, &p.crypto_area, &p.crypto_len, msg,
				    sizeof(msg));
		gnutls_memset(pass, 0, passlen);
		free(pass);
		if (ret < 0)
			return vs_error_set(err, ret, "%s", msg);
	}
	ret = vs_driver_file.create(filename, 0, NULL, 0, 0, err);
	if (ret == 0) {
		o.filename = filename;
		ret = vs_protocol_open(&file, filename, &o, err);
	}
	if (ret == 0) {
		ret = write_image(file, &p, err);
		vs_node_close(file);
	}
	free(p.crypto_area);
	if (ret < 0)
		return ret;
	if (p.data_file) {
		struct vs_error inner = { 0 };

		/* As QEMU: a raw data file has every cluster mapped from the start. */
		if (p.data_file_raw && p.prealloc == VS_PREALLOC_OFF)
			p.prealloc = VS_PREALLOC_METADATA;
		/* As qemu 7.2: the name as given, relative to the current directory. */
		ret = vs_driver_file.create(p.data_file, 0, NULL, 0, 0, &inner);
		if (ret < 0)
			return vs_error_set(err, ret, "Could not create '%s': %s", p.data_file,
					    strerror(-ret));
		return preallocate(filename, &p, err);
	}
	if (p.prealloc != VS_PREALLOC_OFF)
		return preallocate(filename, &p, err);
	return 0;
}

/*
 * Refcount blocks and table clusters that count @clusters clusters and
 * themselves: the fixed point of the recursion, as qemu computes it.
 */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cs, unsigned refcount_bits)
{
	uint64_t per_table = cs / 8, per_block = cs * 8 / refcount_bits;
	uint64_t table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = (clusters + table + blocks + per_block - 1) / per_block;
		table = (blocks + per_table - 1) / per_table;
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cs;
}

/* Bytes of a fully allocated image of @size (cluster aligned): data and all metadata. */
static uint64_t fully_allocated_size(uint64_t size, const struct create_params *p)
{
	uint64_t cs = p->cluster_size, l2e = p->extl2 ? 16 : 8;
	uint64_t meta = cs; /* header */
	uint64_t nl2e, nl1e;

	nl2e = size / cs;
	nl2e = (nl2e + cs / l2e - 1) / (cs / l2e) * (cs / l2e);
	meta += nl2e * l2e;
	nl1e = nl2e * l2e / cs;
	nl1e = (nl1e + cs / 8 - 1) / (cs / 8) * (cs / 8);
	meta += nl1e * 8;
	meta += refcount_metadata_size((meta + size) / cs, cs, p->refcount_bits);
	return meta + size;
}

int qcow2_measure(uint64_t size, uint64_t allocated, const struct vs_kv *opts, size_t nopts,
		  struct vs_measure_result *res, struct vs_error *err)
{
	struct create_params p;
	uint64_t cs, vsize, l2_tables, required;
	int ret;

	ret = parse_params(size, opts, nopts, &p, true, err);
	if (ret < 0)
		return ret;
	cs = p.cluster_size;
	if (p.size > INT64_MAX - cs)
		return vs_error_set(
			err, -EFBIG,
			"The image size is too large (try using a larger cluster size)");
	vsize = (p.size + cs - 1) & ~(cs - 1);
	l2_tables = (vsize / cs + cs / (p.extl2 ? 16 : 8) - 1) / (cs / (p.extl2 ? 16 : 8));
	if (l2_tables * 8 > QCOW2_MAX_L1_SIZE)
		return vs_error_set(
			err, -EFBIG,
			"The image size is too large (try using a larger cluster size)");
	required = allocated < vsize ? allocated : vsize;
	if (p.prealloc == VS_PREALLOC_FULL || p.prealloc == VS_PREALLOC_FALLOC)
		required = vsize;
	res->fully_allocated = fully_allocated_size(vsize, &p);
	res->required = res->fully_allocated - vsize + required;
	if (p.luks) {
		/* The LUKS header area, in whole clusters, as qemu-img counts it. */
		uint64_t hlen;
		char msg[160];

		ret = vs_luks_area_size(&p.crypt, &hlen, msg, sizeof(msg));
		if (ret < 0)
			return vs_error_set(err, ret, "%s", msg);
		hlen = (hlen + cs - 1) & ~(cs - 1);
		res->fully_allocated += hlen;
		res->required += hlen;
	}
	res->bitmaps = 0;
	return 0;
}
