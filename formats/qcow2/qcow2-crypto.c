/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Encrypted qcow2 (docs/interop/qcow2.txt, crypt_method):
 *
 *  - 2, LUKS: a LUKS1 header and its key material in clusters of the image
 *    (the full disk encryption header extension gives their offset and
 *    length); every data cluster is encrypted per 512-byte sector, the IV
 *    being the sector number of the data's HOST offset in the image file,
 *    as QEMU does for qcow2 (its crypt_physical_offset).
 *  - 1, the legacy AES method: AES-128-CBC, plain64 IVs of the GUEST sector
 *    number, the key being the passphrase's first 16 bytes (zero padded).
 *    vstor reads it (for conversion) and refuses to write it.
 *
 * Metadata (header, tables, refcounts) is never encrypted; neither are the
 * zero flags, so zero clusters read as zeroes without decryption.
 */
#include "crypto-luks.h"
#include "iov.h"
#include "qcow2.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qcow2_crypto_parse_ext(struct vs_node *node, const uint8_t *data, uint32_t len,
			   struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);

	if (len != 16)
		return vs_error_set(err, -EINVAL, "qcow2: invalid crypto header extension");
	s->crypto_offset = vs_be64(data);
	s->crypto_length = vs_be64(data + 8);
	return 0;
}

/* Key slots are tried on a worker thread: PBKDF2 takes the slot's iteration time. */
struct unlock_job {
	const struct vs_luks_header *hdr;
	uint8_t *material[VS_LUKS_NUM_SLOTS];
	const void *pass;
	size_t passlen;
	uint8_t mk[VS_CRYPTO_MAX_KEY];
	int ret;
};

static void unlock_fn(void *arg)
{
	struct unlock_job *j = arg;

	j->ret = -EACCES;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && j->ret == -EACCES; i++)
		if (j->hdr->slots[i].active == VS_LUKS_SLOT_ACTIVE)
			j->ret = vs_luks_slot_unlock(j->hdr, i, j->material[i], j->pass, j->passlen,
						     j->mk);
}

static int luks_unlock(struct vs_node *node, const void *pass, size_t passlen, uint8_t *mk,
		       struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	size_t split = (size_t)s->luks->key_bytes * VS_LUKS_STRIPES;
	struct unlock_job j = { .hdr = s->luks, .pass = pass, .passlen = passlen };
	int ret = 0;

	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && ret == 0; i++) {
		if (s->luks->slots[i].active != VS_LUKS_SLOT_ACTIVE)
			continue;
		j.material[i] = vs_buf_alloc(split);
		if (!j.material[i])
			ret = -ENOMEM;
		else
			ret = vs_node_pread(node->file,
					    s->crypto_offset +
						    (uint64_t)s->luks->slots[i].key_offset *
							    VS_CRYPTO_SECTOR,
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
	memcpy(mk, j.mk, s->luks->key_bytes);
	gnutls_memset(j.mk, 0, sizeof(j.mk));
	return 0;
}

static int open_luks(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	uint64_t fsize = vs_node_size(node->file);
	uint8_t *buf, mk[VS_CRYPTO_MAX_KEY];
	char msg[128];
	int ret;

	if (!s->crypto_length)
		return vs_error_set(err, -EINVAL,
				    "qcow2: LUKS encryption without its header extension");
	if ((s->crypto_offset & (s->cluster_size - 1)) || s->crypto_offset < s->cluster_size ||
	    s->crypto_offset > fsize || s->crypto_length > fsize - s->crypto_offset ||
	    s->crypto_length < VS_LUKS_HDR_SIZE)
		return vs_error_set(err, -EINVAL, "qcow2: the LUKS header lies outside the image");
	s->luks = calloc(1, sizeof(*s->luks));
	buf = vs_buf_alloc(VS_LUKS_HDR_SIZE);
	if (!s->luks || !buf) {
		free(buf);
		return vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	}
	ret = vs_node_pread(node->file, s->crypto_offset, buf, VS_LUKS_HDR_SIZE);
	if (ret == 0)
		ret = vs_luks_parse(s->luks, buf, VS_LUKS_HDR_SIZE, 0, msg, sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "Could not read the LUKS header");
	free(buf);
	if (ret < 0)
		return vs_error_set(err, ret, "%s", msg);
	/* The key material must lie inside the area the extension names. */
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++)
		if (s->luks->slots[i].active == VS_LUKS_SLOT_ACTIVE &&
		    (uint64_t)s->luks->slots[i].key_offset * VS_CRYPTO_SECTOR +
				    (uint64_t)s->luks->key_bytes * VS_LUKS_STRIPES >
			    s->crypto_length)
			return vs_error_set(err, -EINVAL,
					    "LUKS key slot %u material is outside the header area",
					    i);
	if (!opts->key_secret_data) {
		if (node->read_only)
			return 0; /* header only: info works, data reads fail */
		return vs_error_set(err, -EINVAL,
				    "Parameter 'encrypt.key-secret' is required for cipher");
	}
	ret = luks_unlock(node, opts->key_secret_data, opts->key_secret_len, mk, err);
	if (ret < 0)
		return ret;
	s->cipher = calloc(1, sizeof(*s->cipher));
	if (!s->cipher)
		ret = vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	else if (vs_sector_cipher_init(s->cipher, &s->luks->spec, mk) < 0)
		ret = vs_error_set(err, -EINVAL, "The LUKS master key is refused by the cipher");
	gnutls_memset(mk, 0, sizeof(mk));
	return ret;
}

static int open_aes(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct vs_cipher_spec spec = {
		.mode = VS_CIPHER_CBC,
		.ivgen = VS_IVGEN_PLAIN64,
		.ivgen_hash = VS_HASH_NONE,
		.key_bytes = 16,
	};
	uint8_t key[16];
	int ret = 0;

	if (!node->read_only)
		return vs_error_set(err, -ENOTSUP,
				    "Use of AES-CBC encrypted qcow2 images is no longer supported "
				    "in system emulators; use 'vstor-img convert' to convert it "
				    "to an unencrypted qcow2 image, or to qcow2 or raw with LUKS "
				    "encryption");
	if (!opts->key_secret_data)
		return 0;
	memset(key, 0, sizeof(key));
	memcpy(key, opts->key_secret_data,
	       opts->key_secret_len < sizeof(key) ? opts->key_secret_len : sizeof(key));
	s->cipher = calloc(1, sizeof(*s->cipher));
	if (!s->cipher)
		ret = vs_error_set(err, -ENOMEM, "qcow2: out of memory");
	else if (vs_sector_cipher_init(s->cipher, &spec, key) < 0)
		ret = vs_error_set(err, -EINVAL, "qcow2: the AES key is refused by the cipher");
	gnutls_memset(key, 0, sizeof(key));
	return ret;
}

int qcow2_crypto_open(struct vs_node *node, const struct vs_open_opts *opts, struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);

	switch (s->hdr.crypt_method) {
	case 0:
		if (s->crypto_length)
			return vs_error_set(err, -EINVAL,
					    "qcow2: crypto header extension without LUKS");
		return 0;
	case QCOW2_CRYPT_AES:
		return open_aes(node, opts, err);
	case QCOW2_CRYPT_LUKS:
		return open_luks(node, opts, err);
	default:
		return vs_error_set(err, -EINVAL, "qcow2: unsupported encryption method %u",
				    s->hdr.crypt_method);
	}
}

void qcow2_crypto_close(struct qcow2_state *s)
{
	if (s->cipher) {
		vs_sector_cipher_wipe(s->cipher);
		free(s->cipher);
		s->cipher = NULL;
	}
	if (s->luks) {
		gnutls_memset(s->luks, 0, sizeof(*s->luks));
		free(s->luks);
		s->luks = NULL;
	}
}

/* The sector number of the IV: host offset for LUKS, guest offset for AES. */
static uint64_t iv_sector(const struct qcow2_state *s, uint64_t host, uint64_t guest)
{
	return (s->hdr.crypt_method == QCOW2_CRYPT_LUKS ? host : guest) / VS_CRYPTO_SECTOR;
}

int qcow2_decrypt_iov(struct qcow2_state *s, uint64_t host, uint64_t guest, struct iovec *iov,
		      int niov, uint64_t len)
{
	if (!s->cipher)
		return -EACCES;
	if ((host | guest | len) & (VS_CRYPTO_SECTOR - 1))
		return -EIO;
	return vs_sector_decrypt_iov_co(s->cipher, iv_sector(s, host, guest), iov, niov, len);
}

int qcow2_encrypt_buf(struct qcow2_state *s, uint64_t host, uint64_t guest, uint8_t *buf,
		      uint64_t len)
{
	if (!s->cipher)
		return -EACCES;
	if ((host | guest | len) & (VS_CRYPTO_SECTOR - 1))
		return -EIO;
	return vs_sector_encrypt_co(s->cipher, iv_sector(s, host, guest), buf, len);
}

/* The "encrypt" block of qemu-img info, in its order (entries "encrypt.*", see img-info.c). */
int qcow2_crypto_info(struct vs_node *node, struct vs_image_info *info)
{
	struct qcow2_state *s = qcow2_state(node);
	const struct vs_luks_header *h = s->luks;
	char alg[48];

	if (s->hdr.crypt_method == QCOW2_CRYPT_AES) {
		vs_info_add_str(info, "encrypt.format", "aes");
		return 0;
	}
	if (s->hdr.crypt_method != QCOW2_CRYPT_LUKS || !h)
		return 0;
	snprintf(alg, sizeof(alg), "%s-%u", h->cipher_name, h->cipher_bits);
	vs_info_add_str(info, "encrypt.ivgen-alg",
			h->spec.ivgen == VS_IVGEN_ESSIV ? "essiv" :
			h->spec.ivgen == VS_IVGEN_PLAIN ? "plain" :
							  "plain64");
	vs_info_add_str(info, "encrypt.hash-alg", h->hash_spec);
	vs_info_add_str(info, "encrypt.cipher-alg", alg);
	vs_info_add_str(info, "encrypt.uuid", h->uuid);
	if (h->spec.ivgen == VS_IVGEN_ESSIV)
		vs_info_add_str(info, "encrypt.ivgen-hash-alg", vs_hash_name(h->spec.ivgen_hash));
	vs_info_add_str(info, "encrypt.format", "luks");
	vs_info_add_str(info, "encrypt.cipher-mode", h->spec.mode == VS_CIPHER_XTS ? "xts" : "cbc");
	info->nb_key_slots = 0;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS && i < VS_INFO_MAX_KEY_SLOTS; i++) {
		const struct vs_luks_slot *sl = &h->slots[i];
		struct vs_info_key_slot *k = &info->key_slots[info->nb_key_slots++];

		k->active = sl->active == VS_LUKS_SLOT_ACTIVE;
		k->iters = sl->iterations;
		k->stripes = sl->stripes;
		k->key_offset = (uint64_t)sl->key_offset * VS_CRYPTO_SECTOR;
	}
	vs_info_add_int(info, "encrypt.payload-offset",
			(int64_t)h->payload_offset * VS_CRYPTO_SECTOR);
	vs_info_add_int(info, "encrypt.master-key-iters", h->mk_digest_iter);
	return 0;
}

/*
 * qemu-img amend: the encrypt.* options (key slots of the LUKS header) go to
 * vs_luks_amend, the others to qcow2_amend; encryption changes come first.
 */
int qcow2_amend_all(struct vs_node *node, const struct vs_kv *opts, size_t nopts,
		    struct vs_error *err)
{
	struct qcow2_state *s = qcow2_state(node);
	struct vs_kv *crypt, *rest;
	size_t nc = 0, nr = 0;
	bool asked = false;
	int ret = 0;

	crypt = calloc(nopts + 1, sizeof(*crypt));
	rest = calloc(nopts + 1, sizeof(*rest));
	if (!crypt || !rest) {
		free(crypt);
		free(rest);
		return vs_error_set(err, -ENOMEM, "Out of memory");
	}
	for (size_t i = 0; i < nopts; i++) {
		if (!strncmp(opts[i].key, "encrypt.", 8)) {
			crypt[nc++] = opts[i];
			asked = true;
		} else if (!strcmp(opts[i].key, VS_LUKS_AMEND_FORCE)) {
			crypt[nc++] = opts[i];
		} else {
			rest[nr++] = opts[i];
		}
	}
	if (asked) {
		if (s->hdr.crypt_method != QCOW2_CRYPT_LUKS || !s->luks)
			ret = vs_error_set(err, -EINVAL,
					   "Amending encryption options is only supported for "
					   "qcow2 images with LUKS encryption");
		else
			ret = vs_luks_amend(node->file, s->crypto_offset, s->luks,
					    s->cipher ? s->cipher->key : NULL, crypt, nc, err);
	}
	if (ret == 0 && (nr || !asked))
		ret = qcow2_amend(node, rest, nr, err);
	free(crypt);
	free(rest);
	return ret;
}
