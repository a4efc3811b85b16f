/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * LUKS1 (the "LUKS On-Disk Format Specification", version 1.2): the
 * header, key slots and the anti-forensic splitter. See crypto-luks.h.
 */
#include "crypto-luks.h"
#include "bytes.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

/* Offsets of the on-disk header (big-endian fields). */
enum {
	OFF_VERSION = 6,
	OFF_CIPHER_NAME = 8,
	OFF_CIPHER_MODE = 40,
	OFF_HASH_SPEC = 72,
	OFF_PAYLOAD = 104,
	OFF_KEY_BYTES = 108,
	OFF_MK_DIGEST = 112,
	OFF_MK_SALT = 132,
	OFF_MK_ITER = 164,
	OFF_UUID = 168,
	OFF_SLOTS = 208,
	SLOT_SIZE = 48,
	NAME_LEN = 32,
	UUID_LEN = 40,
};

static int fail(char *msg, size_t msglen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *msg, size_t msglen, int code, const char *fmt, ...)
{
	va_list ap;

	if (msg && msglen) {
		va_start(ap, fmt);
		vsnprintf(msg, msglen, fmt, ap);
		va_end(ap);
	}
	return code;
}

bool vs_luks_has_magic(const uint8_t *buf, size_t len)
{
	return len >= sizeof(luks_magic) && !memcmp(buf, luks_magic, sizeof(luks_magic));
}

static void get_name(char *dst, const uint8_t *src, size_t len)
{
	memcpy(dst, src, len);
	dst[len] = 0;
}

/* "xts-plain64", "cbc-essiv:sha256", ... into @spec (key_bytes aside). */
static int parse_mode(const char *mode, struct vs_cipher_spec *spec)
{
	const char *dash = strchr(mode, '-');
	const char *iv;

	if (!dash)
		return -1;
	if (!strncmp(mode, "xts-", 4))
		spec->mode = VS_CIPHER_XTS;
	else if (!strncmp(mode, "cbc-", 4))
		spec->mode = VS_CIPHER_CBC;
	else
		return -1;
	iv = dash + 1;
	spec->ivgen_hash = VS_HASH_NONE;
	if (!strcmp(iv, "plain64")) {
		spec->ivgen = VS_IVGEN_PLAIN64;
	} else if (!strcmp(iv, "plain")) {
		spec->ivgen = VS_IVGEN_PLAIN;
	} else if (!strncmp(iv, "essiv:", 6)) {
		int h = vs_hash_parse(iv + 6);

		if (h < 0 || spec->mode != VS_CIPHER_CBC)
			return -1;
		spec->ivgen = VS_IVGEN_ESSIV;
		spec->ivgen_hash = (enum vs_hash)h;
	} else {
		return -1;
	}
	return 0;
}

/*
 * AES key bits for @key_bytes in @mode, or 0 when GnuTLS has no such cipher.
 * AES-192 (24-byte keys) is left out: its split key (96000 bytes) is not a
 * whole number of sectors, which QEMU 7.2 cannot encrypt either (it aborts).
 */
static unsigned aes_bits(enum vs_cipher_mode mode, unsigned key_bytes)
{
	if (mode == VS_CIPHER_XTS)
		return key_bytes == 32 || key_bytes == 64 ? key_bytes * 4 : 0;
	return key_bytes == 16 || key_bytes == 32 ? key_bytes * 8 : 0;
}

uint64_t vs_luks_slot_bytes(const struct vs_luks_header *h)
{
	uint64_t sectors = ((uint64_t)h->key_bytes * VS_LUKS_STRIPES + VS_CRYPTO_SECTOR - 1) /
			   VS_CRYPTO_SECTOR;

	sectors = (sectors + VS_LUKS_ALIGN_SECTORS - 1) & ~(uint64_t)(VS_LUKS_ALIGN_SECTORS - 1);
	return sectors * VS_CRYPTO_SECTOR;
}

int vs_luks_parse(struct vs_luks_header *h, const uint8_t *buf, size_t len, uint64_t file_size,
		  char *msg, size_t msglen)
{
	const uint64_t hdr_sectors = (VS_LUKS_HDR_SIZE + VS_CRYPTO_SECTOR - 1) / VS_CRYPTO_SECTOR;
	int hash;

	memset(h, 0, sizeof(*h));
	if (len < VS_LUKS_HDR_SIZE || !vs_luks_has_magic(buf, len))
		return fail(msg, msglen, -EINVAL, "Volume is not in LUKS format");
	h->version = vs_be16(buf + OFF_VERSION);
	if (h->version != 1)
		return fail(msg, msglen, -ENOTSUP, "LUKS version %u is not supported", h->version);
	get_name(h->cipher_name, buf + OFF_CIPHER_NAME, NAME_LEN);
	get_name(h->cipher_mode, buf + OFF_CIPHER_MODE, NAME_LEN);
	get_name(h->hash_spec, buf + OFF_HASH_SPEC, NAME_LEN);
	h->payload_offset = vs_be32(buf + OFF_PAYLOAD);
	h->key_bytes = vs_be32(buf + OFF_KEY_BYTES);
	memcpy(h->mk_digest, buf + OFF_MK_DIGEST, VS_LUKS_DIGEST_LEN);
	memcpy(h->mk_digest_salt, buf + OFF_MK_SALT, VS_LUKS_SALT_LEN);
	h->mk_digest_iter = vs_be32(buf + OFF_MK_ITER);
	get_name(h->uuid, buf + OFF_UUID, UUID_LEN);

	if (strcmp(h->cipher_name, "aes"))
		return fail(msg, msglen, -ENOTSUP, "Cipher '%.32s' is not supported",
			    h->cipher_name);
	if (parse_mode(h->cipher_mode, &h->spec) < 0)
		return fail(msg, msglen, -ENOTSUP, "Cipher mode '%.32s' is not supported",
			    h->cipher_mode);
	hash = vs_hash_parse(h->hash_spec);
	if (hash < 0)
		return fail(msg, msglen, -ENOTSUP, "Hash '%.32s' is not supported", h->hash_spec);
	h->hash = (enum vs_hash)hash;
	h->cipher_bits = aes_bits(h->spec.mode, h->key_bytes);
	if (!h->cipher_bits)
		return fail(msg, msglen, -ENOTSUP, "Key size %u of %s-%s is not supported",
			    h->key_bytes, h->cipher_name, h->cipher_mode);
	h->spec.key_bytes = h->key_bytes;
	if (h->mk_digest_iter == 0)
		return fail(msg, msglen, -EINVAL, "LUKS master key digest iterations are zero");
	if (h->payload_offset < hdr_sectors)
		return fail(msg, msglen, -EINVAL, "LUKS payload offset %u overlaps the header",
			    h->payload_offset);
	if (file_size && (uint64_t)h->payload_offset * VS_CRYPTO_SECTOR > file_size)
		return fail(msg, msglen, -EINVAL, "LUKS payload offset %u is beyond the volume",
			    h->payload_offset);

	uint64_t material = (uint64_t)h->key_bytes * VS_LUKS_STRIPES;

	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++) {
		const uint8_t *p = buf + OFF_SLOTS + i * SLOT_SIZE;
		struct vs_luks_slot *s = &h->slots[i];

		s->active = vs_be32(p);
		s->iterations = vs_be32(p + 4);
		memcpy(s->salt, p + 8, VS_LUKS_SALT_LEN);
		s->key_offset = vs_be32(p + 40);
		s->stripes = vs_be32(p + 44);
		if (s->active != VS_LUKS_SLOT_ACTIVE && s->active != VS_LUKS_SLOT_INACTIVE)
			return fail(msg, msglen, -EINVAL, "LUKS key slot %u has a bad state 0x%08x",
				    i, s->active);
		if (s->active != VS_LUKS_SLOT_ACTIVE)
			continue;
		if (s->stripes != VS_LUKS_STRIPES)
			return fail(msg, msglen, -EINVAL,
				    "LUKS key slot %u has %u stripes (expected %u)", i, s->stripes,
				    VS_LUKS_STRIPES);
		if (s->iterations == 0)
			return fail(msg, msglen, -EINVAL, "LUKS key slot %u has zero iterations",
				    i);
		if (s->key_offset < hdr_sectors ||
		    (uint64_t)s->key_offset * VS_CRYPTO_SECTOR + material >
			    (uint64_t)h->payload_offset * VS_CRYPTO_SECTOR)
			return fail(msg, msglen, -EINVAL,
				    "LUKS key slot %u material is outside the header area", i);
	}
	return 0;
}

static void put_name(uint8_t *dst, const char *src, size_t len)
{
	memset(dst, 0, len);
	memcpy(dst, src, strnlen(src, len));
}

void vs_luks_encode(const struct vs_luks_header *h, uint8_t *buf)
{
	memset(buf, 0, VS_LUKS_HDR_SIZE);
	memcpy(buf, luks_magic, sizeof(luks_magic));
	vs_put_be16(buf + OFF_VERSION, 1);
	put_name(buf + OFF_CIPHER_NAME, h->cipher_name, NAME_LEN);
	put_name(buf + OFF_CIPHER_MODE, h->cipher_mode, NAME_LEN);
	put_name(buf + OFF_HASH_SPEC, h->hash_spec, NAME_LEN);
	vs_put_be32(buf + OFF_PAYLOAD, h->payload_offset);
	vs_put_be32(buf + OFF_KEY_BYTES, h->key_bytes);
	memcpy(buf + OFF_MK_DIGEST, h->mk_digest, VS_LUKS_DIGEST_LEN);
	memcpy(buf + OFF_MK_SALT, h->mk_digest_salt, VS_LUKS_SALT_LEN);
	vs_put_be32(buf + OFF_MK_ITER, h->mk_digest_iter);
	put_name(buf + OFF_UUID, h->uuid, UUID_LEN);
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++) {
		uint8_t *p = buf + OFF_SLOTS + i * SLOT_SIZE;
		const struct vs_luks_slot *s = &h->slots[i];

		vs_put_be32(p, s->active);
		vs_put_be32(p + 4, s->iterations);
		memcpy(p + 8, s->salt, VS_LUKS_SALT_LEN);
		vs_put_be32(p + 40, s->key_offset);
		vs_put_be32(p + 44, s->stripes);
	}
}

int vs_luks_choose(struct vs_luks_header *h, const char *cipher_alg, const char *cipher_mode,
		   const char *ivgen_alg, const char *ivgen_hash, const char *hash_alg, char *msg,
		   size_t msglen)
{
	unsigned bits;
	int hash, ivh = VS_HASH_NONE;

	memset(h, 0, sizeof(*h));
	cipher_alg = cipher_alg ? cipher_alg : "aes-256";
	cipher_mode = cipher_mode ? cipher_mode : "xts";
	ivgen_alg = ivgen_alg ? ivgen_alg : "plain64";
	hash_alg = hash_alg ? hash_alg : "sha256";
	if (!strcmp(cipher_alg, "aes-128"))
		bits = 128;
	else if (!strcmp(cipher_alg, "aes-256"))
		bits = 256;
	else
		return fail(msg, msglen, -EINVAL, "Cipher algorithm '%s' is not supported",
			    cipher_alg);
	if (!strcmp(cipher_mode, "xts"))
		h->spec.mode = VS_CIPHER_XTS;
	else if (!strcmp(cipher_mode, "cbc"))
		h->spec.mode = VS_CIPHER_CBC;
	else
		return fail(msg, msglen, -EINVAL, "Cipher mode '%s' is not supported", cipher_mode);
	hash = vs_hash_parse(hash_alg);
	if (hash < 0)
		return fail(msg, msglen, -EINVAL, "Hash algorithm '%s' is not supported", hash_alg);
	if (!strcmp(ivgen_alg, "plain64")) {
		h->spec.ivgen = VS_IVGEN_PLAIN64;
	} else if (!strcmp(ivgen_alg, "plain")) {
		h->spec.ivgen = VS_IVGEN_PLAIN;
	} else if (!strcmp(ivgen_alg, "essiv")) {
		h->spec.ivgen = VS_IVGEN_ESSIV;
		/* QEMU's default ESSIV hash is sha256, whatever the PBKDF2 hash. */
		ivh = vs_hash_parse(ivgen_hash ? ivgen_hash : "sha256");
		if (ivh < 0)
			return fail(msg, msglen, -EINVAL, "Hash algorithm '%s' is not supported",
				    ivgen_hash);
	} else {
		return fail(msg, msglen, -EINVAL, "IV generator '%s' is not supported", ivgen_alg);
	}
	h->spec.ivgen_hash = (enum vs_hash)ivh;
	h->hash = (enum vs_hash)hash;
	h->key_bytes = bits / 8 * (h->spec.mode == VS_CIPHER_XTS ? 2 : 1);
	h->spec.key_bytes = h->key_bytes;
	h->cipher_bits = aes_bits(h->spec.mode, h->key_bytes);
	if (!h->cipher_bits)
		return fail(msg, msglen, -EINVAL, "Cipher %s in mode %s is not supported",
			    cipher_alg, cipher_mode);
	if (h->spec.ivgen == VS_IVGEN_ESSIV) {
		unsigned l = vs_hash_len(h->spec.ivgen_hash);

		if (h->spec.mode != VS_CIPHER_CBC || (l != 16 && l != 24 && l != 32))
			return fail(msg, msglen, -EINVAL,
				    "ESSIV with hash %s is not supported in mode %s",
				    vs_hash_name(h->spec.ivgen_hash), cipher_mode);
	}
	snprintf(h->cipher_name, sizeof(h->cipher_name), "aes");
	if (h->spec.ivgen == VS_IVGEN_ESSIV)
		snprintf(h->cipher_mode, sizeof(h->cipher_mode), "%s-essiv:%s", cipher_mode,
			 vs_hash_name(h->spec.ivgen_hash));
	else
		snprintf(h->cipher_mode, sizeof(h->cipher_mode), "%s-%s", cipher_mode, ivgen_alg);
	snprintf(h->hash_spec, sizeof(h->hash_spec), "%s", vs_hash_name(h->hash));
	return 0;
}

int vs_luks_init(struct vs_luks_header *h, const uint8_t *mk, uint32_t mk_iters)
{
	uint64_t stride = vs_luks_slot_bytes(h) / VS_CRYPTO_SECTOR;
	uint8_t u[16];
	int ret;

	h->version = 1;
	for (unsigned i = 0; i < VS_LUKS_NUM_SLOTS; i++) {
		h->slots[i].active = VS_LUKS_SLOT_INACTIVE;
		h->slots[i].key_offset = (uint32_t)(VS_LUKS_ALIGN_SECTORS + i * stride);
		h->slots[i].stripes = VS_LUKS_STRIPES;
	}
	h->payload_offset = (uint32_t)(VS_LUKS_ALIGN_SECTORS + VS_LUKS_NUM_SLOTS * stride);
	ret = vs_crypto_random(u, sizeof(u));
	if (ret < 0)
		return ret;
	u[6] = (u[6] & 0x0f) | 0x40; /* version 4 */
	u[8] = (u[8] & 0x3f) | 0x80; /* variant 1 */
	snprintf(h->uuid, sizeof(h->uuid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
		 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
		 u[15]);
	h->mk_digest_iter = mk_iters;
	ret = vs_crypto_random(h->mk_digest_salt, VS_LUKS_SALT_LEN);
	if (ret < 0)
		return ret;
	return vs_pbkdf2(h->hash, mk, h->key_bytes, h->mk_digest_salt, VS_LUKS_SALT_LEN, mk_iters,
			 h->mk_digest, VS_LUKS_DIGEST_LEN);
}

/* The splitter's diffusion: hash the block piecewise, each piece prefixed by its index. */
static int diffuse(enum vs_hash hash, uint8_t *block, size_t size)
{
	size_t ds = vs_hash_len(hash);
	uint8_t in[4 + 64], out[64];
	int ret = 0;

	for (size_t i = 0, off = 0; off < size && ret == 0; i++, off += ds) {
		size_t n = size - off < ds ? size - off : ds;

		vs_put_be32(in, (uint32_t)i);
		memcpy(in + 4, block + off, n);
		ret = vs_hash_buf(hash, in, 4 + n, out);
		memcpy(block + off, out, n);
	}
	gnutls_memset(in, 0, sizeof(in));
	gnutls_memset(out, 0, sizeof(out));
	return ret;
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
	for (size_t i = 0; i < len; i++)
		dst[i] ^= src[i];
}

int vs_luks_af_split(enum vs_hash h, const uint8_t *src, uint8_t *dst, size_t blocksize,
		     unsigned stripes)
{
	uint8_t block[VS_CRYPTO_MAX_KEY] = { 0 };
	int ret;

	if (blocksize > sizeof(block) || stripes == 0 || vs_hash_len(h) == 0)
		return -EINVAL;
	ret = vs_crypto_random(dst, blocksize * (stripes - 1));
	for (unsigned i = 0; i + 1 < stripes && ret == 0; i++) {
		xor_into(block, dst + i * blocksize, blocksize);
		ret = diffuse(h, block, blocksize);
	}
	xor_into(block, src, blocksize);
	memcpy(dst + (size_t)(stripes - 1) * blocksize, block, blocksize);
	gnutls_memset(block, 0, sizeof(block));
	return ret;
}

int vs_luks_af_merge(enum vs_hash h, const uint8_t *src, uint8_t *dst, size_t blocksize,
		     unsigned stripes)
{
	uint8_t block[VS_CRYPTO_MAX_KEY] = { 0 };
	int ret = 0;

	if (blocksize > sizeof(block) || stripes == 0 || vs_hash_len(h) == 0)
		return -EINVAL;
	for (unsigned i = 0; i + 1 < stripes && ret == 0; i++) {
		xor_into(block, src + i * blocksize, blocksize);
		ret = diffuse(h, block, blocksize);
	}
	xor_into(block, src + (size_t)(stripes - 1) * blocksize, blocksize);
	memcpy(dst, block, blocksize);
	gnutls_memset(block, 0, sizeof(block));
	return ret;
}

/* The cipher of a slot's key material: the volume's cipher, keyed by the passphrase. */
static int slot_cipher(const struct vs_luks_header *h, const struct vs_luks_slot *s,
		       const void *pass, size_t passlen, struct vs_sector_cipher *c)
{
	uint8_t key[VS_CRYPTO_MAX_KEY];
	int ret = vs_pbkdf2(h->hash, pass, passlen, s->salt, VS_LUKS_SALT_LEN, s->iterations, key,
			    h->key_bytes);

	if (ret == 0)
		ret = vs_sector_cipher_init(c, &h->spec, key);
	gnutls_memset(key, 0, sizeof(key));
	return ret;
}

int vs_luks_slot_set(struct vs_luks_header *h, unsigned slot, const uint8_t *mk, const void *pass,
		     size_t passlen, uint32_t iters, uint8_t *material)
{
	struct vs_luks_slot *s = &h->slots[slot];
	size_t split = (size_t)h->key_bytes * VS_LUKS_STRIPES;
	struct vs_sector_cipher c;
	int ret;

	if (slot >= VS_LUKS_NUM_SLOTS)
		return -EINVAL;
	s->iterations = iters;
	s->stripes = VS_LUKS_STRIPES;
	ret = vs_crypto_random(s->salt, VS_LUKS_SALT_LEN);
	if (ret < 0)
		return ret;
	memset(material, 0, vs_luks_slot_bytes(h));
	ret = vs_luks_af_split(h->hash, mk, material, h->key_bytes, VS_LUKS_STRIPES);
	if (ret < 0)
		return ret;
	ret = slot_cipher(h, s, pass, passlen, &c);
	if (ret < 0)
		return ret;
	ret = vs_sector_encrypt(&c, 0, material, split);
	vs_sector_cipher_wipe(&c);
	if (ret == 0)
		s->active = VS_LUKS_SLOT_ACTIVE;
	return ret;
}

int vs_luks_slot_unlock(const struct vs_luks_header *h, unsigned slot, const uint8_t *material,
			const void *pass, size_t passlen, uint8_t *mk)
{
	const struct vs_luks_slot *s = &h->slots[slot];
	size_t split = (size_t)h->key_bytes * VS_LUKS_STRIPES;
	uint8_t digest[VS_LUKS_DIGEST_LEN];
	struct vs_sector_cipher c;
	uint8_t *tmp;
	int ret;

	if (slot >= VS_LUKS_NUM_SLOTS || s->active != VS_LUKS_SLOT_ACTIVE)
		return -EINVAL;
	tmp = malloc(split);
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, material, split);
	ret = slot_cipher(h, s, pass, passlen, &c);
	if (ret == 0)
		ret = vs_sector_decrypt(&c, 0, tmp, split);
	vs_sector_cipher_wipe(&c);
	if (ret == 0)
		ret = vs_luks_af_merge(h->hash, tmp, mk, h->key_bytes, VS_LUKS_STRIPES);
	gnutls_memset(tmp, 0, split);
	free(tmp);
	if (ret == 0)
		ret = vs_pbkdf2(h->hash, mk, h->key_bytes, h->mk_digest_salt, VS_LUKS_SALT_LEN,
				h->mk_digest_iter, digest, sizeof(digest));
	if (ret == 0 && memcmp(digest, h->mk_digest, sizeof(digest)))
		ret = -EACCES;
	if (ret < 0)
		gnutls_memset(mk, 0, h->key_bytes);
	return ret;
}

/* QEMU's floors for the iteration counts. */
#define LUKS_MIN_SLOT_ITERS 1000
#define LUKS_MIN_MK_ITERS 1000

int vs_luks_build(const struct vs_luks_build_opts *o, const void *pass, size_t passlen,
		  uint8_t **area, size_t *area_len, char *msg, size_t msglen)
{
	struct vs_luks_header h;
	uint8_t mk[VS_CRYPTO_MAX_KEY];
	void *mem = NULL;
	uint64_t per;
	int ret;

	ret = vs_luks_choose(&h, o->cipher_alg, o->cipher_mode, o->ivgen_alg, o->ivgen_hash,
			     o->hash_alg, msg, msglen);
	if (ret < 0)
		return ret;
	/* Calibrate as QEMU does: the slot's rounds take iter-time, the digest's an eighth. */
	per = vs_pbkdf2_count_iters(h.hash, h.key_bytes, (unsigned)o->iter_time);
	if (per > UINT32_MAX)
		per = UINT32_MAX;
	ret = vs_crypto_random(mk, h.key_bytes);
	if (ret == 0)
		ret = vs_luks_init(&h, mk,
				   per / 8 > LUKS_MIN_MK_ITERS ? (uint32_t)(per / 8) :
								 LUKS_MIN_MK_ITERS);
	if (ret < 0)
		goto out;
	*area_len = (size_t)h.payload_offset * VS_CRYPTO_SECTOR;
	if (posix_memalign(&mem, 4096, *area_len)) {
		ret = -ENOMEM;
		goto out;
	}
	memset(mem, 0, *area_len);
	*area = mem;
	ret = vs_luks_slot_set(&h, 0, mk, pass, passlen,
			       per > LUKS_MIN_SLOT_ITERS ? (uint32_t)per : LUKS_MIN_SLOT_ITERS,
			       *area + (size_t)h.slots[0].key_offset * VS_CRYPTO_SECTOR);
	if (ret == 0) {
		vs_luks_encode(&h, *area);
	} else {
		free(*area);
		*area = NULL;
	}
out:
	gnutls_memset(mk, 0, sizeof(mk));
	gnutls_memset(&h, 0, sizeof(h));
	if (ret < 0 && msg && msglen)
		snprintf(msg, msglen, "Could not make the LUKS header: %s", strerror(-ret));
	return ret;
}

int vs_luks_area_size(const struct vs_luks_build_opts *o, uint64_t *len, char *msg, size_t msglen)
{
	struct vs_luks_header h;
	uint8_t mk[VS_CRYPTO_MAX_KEY];
	int ret;

	ret = vs_luks_choose(&h, o->cipher_alg, o->cipher_mode, o->ivgen_alg, o->ivgen_hash,
			     o->hash_alg, msg, msglen);
	if (ret < 0)
		return ret;
	memset(mk, 0, sizeof(mk));
	ret = vs_luks_init(&h, mk, 1); /* the layout only: one round for the digest */
	if (ret < 0) {
		snprintf(msg, msglen, "Could not lay out the LUKS header: %s", strerror(-ret));
		return ret;
	}
	*len = (uint64_t)h.payload_offset * VS_CRYPTO_SECTOR;
	return 0;
}
