/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The luks format: a LUKS1 header at the start of the protocol node, key
 * material after it, and the guest's data encrypted per 512-byte sector from
 * the payload offset on, as QEMU's "luks" driver and dm-crypt store it.
 * Reads decrypt into the caller's buffer; writes encrypt a copy. Large
 * requests are en/decrypted on the worker pool.
 */
#include "crypto-luks.h"
#include "driver.h"
#include "iov.h"
#include "secret.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest request (bounce buffer of a write). */
#define LUKS_MAX_TRANSFER (1024 * 1024)
/* QEMU's default PBKDF2 time for a key slot, in milliseconds. */
#define LUKS_DEFAULT_ITER_TIME 2000

struct luks_state {
	struct vs_luks_header hdr;
	struct vs_sector_cipher cipher;
	bool unlocked;
	uint64_t payload; /* bytes */
};

static int luks_probe(const uint8_t *buf, size_t len, const char *filename)
{
	(void)filename;
	return vs_luks_has_magic(buf, len) ? 100 : 0;
}

/* Key slots are tried on a worker thread: PBKDF2 takes its iter-time. */
struct unlock_job {
	const struct vs_luks_header *hdr;
	uint8_t *material[VS_LUKS_NUM_SLOTS]; /* each active slot's split key */
	const void *pass;
	size_t passlen;
	uint8_t mk[VS_CRYPTO_MAX_KEY];
	int ret;
};

static void unlock_fn(void *arg)
{
	struct unlock_job *j = arg;

	j->ret = -EACCES;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && j->ret == -EACCES; i++) {
		const struct vs_luks_slot *s = &j->hdr->slots[i];

		if (s->active != VS_LUKS_SLOT_ACTIVE)
			continue;
		j->ret = vs_luks_slot_unlock(j->hdr, i, j->material[i], j->pass, j->passlen, j->mk);
	}
}

static int luks_unlock(struct vs_node *node, struct luks_state *s, const void *pass, size_t passlen,
		       struct vs_error *err)
{
	/* Only the split keys are read: at most 8 x 256000 bytes, whatever the header says. */
	size_t split = (size_t)s->hdr.key_bytes * VS_LUKS_STRIPES;
	struct unlock_job j = { .hdr = &s->hdr, .pass = pass, .passlen = passlen };
	int ret = 0;

	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && ret == 0; i++) {
		if (s->hdr.slots[i].active != VS_LUKS_SLOT_ACTIVE)
			continue;
		j.material[i] = vs_buf_alloc(split);
		if (!j.material[i])
			ret = -ENOMEM;
		else
			ret = vs_node_pread(node->file,
					    (uint64_t)s->hdr.slots[i].key_offset * VS_CRYPTO_SECTOR,
					    j.material[i], split);
	}
	if (ret == 0)
		vs_co_run_in_worker(unlock_fn, &j);
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++)
		free(j.material[i]);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "Could not read LUKS key material");
	if (j.ret == -EACCES)
		return vs_error_set(err, -EACCES, "Invalid password, cannot unlock any keyslot");
	if (j.ret < 0)
		return vs_error_setf_errno(err, j.ret, "Could not unlock the LUKS key");
	ret = vs_sector_cipher_init(&s->cipher, &s->hdr.spec, j.mk);
	gnutls_memset(j.mk, 0, sizeof(j.mk));
	if (ret < 0)
		return vs_error_set(err, ret, "The LUKS master key is refused by the cipher");
	s->unlocked = true;
	return 0;
}

static int luks_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct luks_state *s = node->opaque;
	uint8_t *buf;
	char msg[128];
	int ret;

	if (opts->snapshot)
		return vs_error_set(err, -ENOTSUP,
				    "The luks format has no internal snapshots (cannot open '%s')",
				    opts->snapshot);
	if (node->file->size < VS_LUKS_HDR_SIZE)
		return vs_error_set(err, -EINVAL, "Volume is not in LUKS format");
	buf = vs_buf_alloc(VS_LUKS_HDR_SIZE);
	if (!buf)
		return vs_error_set(err, -ENOMEM, "Out of memory");
	ret = vs_node_pread(node->file, 0, buf, VS_LUKS_HDR_SIZE);
	if (ret == 0)
		ret = vs_luks_parse(&s->hdr, buf, VS_LUKS_HDR_SIZE, node->file->size, msg,
				    sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "Could not read the LUKS header");
	free(buf);
	if (ret < 0)
		return vs_error_set(err, ret, "%s", msg);
	s->payload = (uint64_t)s->hdr.payload_offset * VS_CRYPTO_SECTOR;
	if (opts->key_secret_data) {
		ret = luks_unlock(node, s, opts->key_secret_data, opts->key_secret_len, err);
		if (ret < 0)
			return ret;
	} else if (!node->read_only) {
		return vs_error_set(err, -EINVAL, "Parameter 'key-secret' is required for cipher");
	}
	node->size = (node->file->size - s->payload) & ~(uint64_t)(VS_CRYPTO_SECTOR - 1);
	node->limits = node->file->limits;
	if (node->limits.request_align < VS_CRYPTO_SECTOR)
		node->limits.request_align = VS_CRYPTO_SECTOR;
	if (!node->limits.max_transfer || node->limits.max_transfer > LUKS_MAX_TRANSFER)
		node->limits.max_transfer = LUKS_MAX_TRANSFER;
	/* Zeroes and holes would read as garbage once decrypted: data is always written. */
	node->caps = node->file->caps & VS_CAP_FLUSH;
	return 0;
}

static void luks_close(struct vs_node *node)
{
	struct luks_state *s = node->opaque;

	vs_sector_cipher_wipe(&s->cipher);
	gnutls_memset(&s->hdr, 0, sizeof(s->hdr));
}

static int luks_submit(struct vs_node *node, struct vs_req *req)
{
	struct luks_state *s = node->opaque;
	uint64_t sector = req->offset / VS_CRYPTO_SECTOR;
	uint8_t *buf;
	int ret;

	switch (req->op) {
	case VS_OP_READ:
		if (!s->unlocked)
			return -EACCES;
		ret = vs_node_preadv(node->file, s->payload + req->offset, req->len, req->iov,
				     req->niov, 0);
		if (ret < 0)
			return ret;
		return vs_sector_decrypt_iov_co(&s->cipher, sector, req->iov, req->niov, req->len);
	case VS_OP_WRITE:
		if (!s->unlocked)
			return -EACCES;
		/* Encrypt a copy: the caller's buffer stays plaintext. */
		buf = vs_buf_alloc(req->len);
		if (!buf)
			return -ENOMEM;
		vs_iov_to_buf(buf, req->iov, req->niov, 0, req->len);
		ret = vs_sector_encrypt_co(&s->cipher, sector, buf, req->len);
		if (ret == 0)
			ret = vs_node_pwrite(node->file, s->payload + req->offset, buf, req->len,
					     req->flags);
		free(buf);
		return ret;
	case VS_OP_FLUSH:
		return vs_node_flush(node->file);
	default:
		return -ENOTSUP;
	}
}

static int luks_truncate(struct vs_node *node, uint64_t size, enum vs_prealloc prealloc, bool exact,
			 struct vs_error *err)
{
	struct luks_state *s = node->opaque;
	int ret;

	if (size % VS_CRYPTO_SECTOR)
		return vs_error_set(err, -EINVAL,
				    "The size of a luks image must be a multiple of 512 bytes");
	ret = vs_node_truncate(node->file, s->payload + size, prealloc, exact, err);
	if (ret == 0)
		node->size = size;
	return ret;
}

struct create_params {
	const char *secret;
	const char *cipher_alg, *cipher_mode, *ivgen_alg, *ivgen_hash, *hash_alg;
	uint64_t iter_time;
	enum vs_prealloc prealloc;
};

static int parse_create(const struct vs_kv *opts, size_t nopts, struct create_params *p,
			struct vs_error *err)
{
	memset(p, 0, sizeof(*p));
	p->iter_time = LUKS_DEFAULT_ITER_TIME;
	for (size_t i = 0; i < nopts; i++) {
		const char *k = opts[i].key, *v = opts[i].value;

		if (!strcmp(k, "size"))
			continue;
		if (!strcmp(k, "key-secret"))
			p->secret = v;
		else if (!strcmp(k, "cipher-alg"))
			p->cipher_alg = v;
		else if (!strcmp(k, "cipher-mode"))
			p->cipher_mode = v;
		else if (!strcmp(k, "ivgen-alg"))
			p->ivgen_alg = v;
		else if (!strcmp(k, "ivgen-hash-alg"))
			p->ivgen_hash = v;
		else if (!strcmp(k, "hash-alg"))
			p->hash_alg = v;
		else if (!strcmp(k, "iter-time")) {
			char *end;

			p->iter_time = strtoull(v, &end, 10);
			if (!*v || *end || p->iter_time == 0 || p->iter_time > 3600000)
				return vs_error_set(err, -EINVAL,
						    "Parameter 'iter-time' expects a number of "
						    "milliseconds");
		} else if (!strcmp(k, "preallocation")) {
			if (vs_prealloc_parse(v, &p->prealloc) < 0)
				return vs_error_set(err, -EINVAL,
						    "Invalid parameter '%s' for preallocation", v);
		} else {
			return vs_error_set(err, -EINVAL, "Invalid parameter '%s' for luks", k);
		}
	}
	if (!p->secret)
		return vs_error_set(err, -EINVAL, "Parameter 'key-secret' is required for cipher");
	return 0;
}

/* Header, key material of slot 0, in a buffer of the whole header area. */
static int build_header(const struct create_params *p, const uint8_t *pass, size_t passlen,
			uint8_t **area, size_t *area_len, struct vs_error *err)
{
	struct vs_luks_build_opts o = {
		.cipher_alg = p->cipher_alg,
		.cipher_mode = p->cipher_mode,
		.ivgen_alg = p->ivgen_alg,
		.ivgen_hash = p->ivgen_hash,
		.hash_alg = p->hash_alg,
		.iter_time = p->iter_time,
	};
	char msg[128];
	int ret = vs_luks_build(&o, pass, passlen, area, area_len, msg, sizeof(msg));

	if (ret < 0)
		return vs_error_set(err, ret, "%s", msg);
	return 0;
}

static int luks_create(const char *filename, uint64_t size, const struct vs_kv *opts, size_t nopts,
		       unsigned flags, struct vs_error *err)
{
	struct create_params p;
	struct vs_open_opts o = { .filename = filename };
	struct vs_node *file = NULL;
	uint8_t *pass = NULL, *area = NULL;
	size_t passlen = 0, area_len = 0;
	int ret;

	(void)flags;
	ret = parse_create(opts, nopts, &p, err);
	if (ret < 0)
		return ret;
	if (vs_secret_get(p.secret, &pass, &passlen) < 0)
		return vs_error_set(err, -ENOENT, "No secret with id '%s' found", p.secret);
	size = (size + VS_CRYPTO_SECTOR - 1) & ~(uint64_t)(VS_CRYPTO_SECTOR - 1);
	ret = build_header(&p, pass, passlen, &area, &area_len, err);
	gnutls_memset(pass, 0, passlen);
	free(pass);
	if (ret < 0)
		return ret;
	if (size > VS_NODE_MAX_SIZE - area_len) {
		free(area);
		return vs_error_set(err, -EINVAL, "Image size too large");
	}
	ret = vs_driver_file.create(filename, 0, NULL, 0, 0, err);
	if (ret == 0)
		ret = vs_protocol_open(&file, filename, &o, err);
	if (ret < 0) {
		free(area);
		return ret;
	}
	ret = vs_node_pwrite(file, 0, area, area_len, 0);
	free(area);
	if (ret < 0)
		vs_error_setf_errno(err, ret, "Could not write the LUKS header to '%s'", filename);
	else
		/* Not exact, as QEMU: an LV or a LUN may be larger than header and payload. */
		ret = vs_node_truncate(file, area_len + size, p.prealloc, false, err);
	if (ret == 0)
		ret = vs_node_flush(file);
	vs_node_close(file);
	return ret;
}

/* The entries in qemu-img's order (its dictionary's iteration order). */
static int luks_get_info(struct vs_node *node, struct vs_image_info *info)
{
	const struct luks_state *s = node->opaque;
	const struct vs_luks_header *h = &s->hdr;
	const char *iv = h->spec.ivgen == VS_IVGEN_ESSIV ? "essiv" :
			 h->spec.ivgen == VS_IVGEN_PLAIN ? "plain" :
							   "plain64";
	char alg[48];

	info->encrypted = true;
	snprintf(info->specific_type, sizeof(info->specific_type), "luks");
	snprintf(alg, sizeof(alg), "%s-%u", h->cipher_name, h->cipher_bits);
	vs_info_add_str(info, "ivgen-alg", iv);
	vs_info_add_str(info, "hash-alg", h->hash_spec);
	vs_info_add_str(info, "cipher-alg", alg);
	vs_info_add_str(info, "uuid", h->uuid);
	if (h->spec.ivgen == VS_IVGEN_ESSIV)
		vs_info_add_str(info, "ivgen-hash-alg", vs_hash_name(h->spec.ivgen_hash));
	vs_info_add_str(info, "cipher-mode", h->spec.mode == VS_CIPHER_XTS ? "xts" : "cbc");
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && i < VS_INFO_MAX_KEY_SLOTS; i++) {
		const struct vs_luks_slot *sl = &h->slots[i];
		struct vs_info_key_slot *k = &info->key_slots[info->nb_key_slots++];

		k->active = sl->active == VS_LUKS_SLOT_ACTIVE;
		k->iters = sl->iterations;
		k->stripes = sl->stripes;
		k->key_offset = (uint64_t)sl->key_offset * VS_CRYPTO_SECTOR;
	}
	vs_info_add_int(info, "payload-offset", (int64_t)s->payload);
	vs_info_add_int(info, "master-key-iters", h->mk_digest_iter);
	return 0;
}

/* qemu-img amend: key slots (state, keyslot, new-secret, old-secret, iter-time). */
static int luks_amend(struct vs_node *node, const struct vs_kv *opts, size_t nopts,
		      struct vs_error *err)
{
	struct luks_state *s = node->opaque;

	return vs_luks_amend(node->file, 0, &s->hdr, s->unlocked ? s->cipher.key : NULL, opts,
			     nopts, err);
}

static const struct vs_create_opt_desc luks_amend_opts[] = {
	{ "iter-time", "number", "Time to spend in PBKDF in milliseconds" },
	{ "keyslot", "number", "Select a single keyslot to modify explicitly" },
	{ "new-secret", "string",
	  "New secret to set in the matching keyslots. Empty string to erase" },
	{ "old-secret", "string", "Select all keyslots that match this password" },
	{ "state", "string", "Select new state of affected keyslots (active/inactive)" },
	{ NULL, NULL, NULL },
};

static const struct vs_create_opt_desc luks_create_opts[] = {
	{ "size", "size", "Virtual disk size" },
	{ "key-secret", "string", "ID of the secret that provides the keyslot passphrase" },
	{ "cipher-alg", "string", "Name of encryption cipher algorithm" },
	{ "cipher-mode", "string", "Name of encryption cipher mode" },
	{ "ivgen-alg", "string", "Name of IV generator algorithm" },
	{ "ivgen-hash-alg", "string", "Name of IV generator hash algorithm" },
	{ "hash-alg", "string", "Name of encryption hash algorithm" },
	{ "iter-time", "number", "Time to spend in PBKDF in milliseconds" },
	{ "preallocation", "string", "Preallocation mode (allowed values: off, falloc, full)" },
	{ NULL, NULL, NULL },
};

const struct vs_driver vs_driver_luks = {
	.name = "luks",
	.is_format = true,
	.state_size = sizeof(struct luks_state),
	.probe = luks_probe,
	.open = luks_open,
	.close = luks_close,
	.submit = luks_submit,
	.truncate = luks_truncate,
	.create = luks_create,
	.create_opts = luks_create_opts,
	.get_info = luks_get_info,
	.amend = luks_amend,
	.amend_opts = luks_amend_opts,
	.supported_write_flags = VS_REQ_FUA,
};

VS_DRIVER_REGISTER(vs_driver_luks)
