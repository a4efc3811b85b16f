/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * LUKS1 headers (internal to libstore and formats/): parse and build the
 * on-disk header, unlock a key slot with a passphrase, make new key slots.
 * Where the header and key material live is the caller's business (the
 * start of a raw volume, or clusters of a qcow2 image): these functions
 * work on buffers.
 */
#ifndef VSTOR_CRYPTO_LUKS_H
#define VSTOR_CRYPTO_LUKS_H

#include "crypto-cipher.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VS_LUKS_HDR_SIZE 592
#define VS_LUKS_NUM_SLOTS 8
#define VS_LUKS_STRIPES 4000
#define VS_LUKS_SALT_LEN 32
#define VS_LUKS_DIGEST_LEN 20
#define VS_LUKS_SLOT_ACTIVE 0x00AC71F3u
#define VS_LUKS_SLOT_INACTIVE 0x0000DEADu
/* Key material and payload are aligned to 4096 bytes, as QEMU and cryptsetup lay them out. */
#define VS_LUKS_ALIGN_SECTORS 8

struct vs_luks_slot {
	uint32_t active;
	uint32_t iterations;
	uint8_t salt[VS_LUKS_SALT_LEN];
	uint32_t key_offset; /* sectors */
	uint32_t stripes;
};

struct vs_luks_header {
	uint16_t version;
	char cipher_name[33];
	char cipher_mode[33];
	char hash_spec[33];
	uint32_t payload_offset; /* sectors */
	uint32_t key_bytes;
	uint8_t mk_digest[VS_LUKS_DIGEST_LEN];
	uint8_t mk_digest_salt[VS_LUKS_SALT_LEN];
	uint32_t mk_digest_iter;
	char uuid[41];
	struct vs_luks_slot slots[VS_LUKS_NUM_SLOTS];
	/* Decoded from the names above by vs_luks_parse(): */
	struct vs_cipher_spec spec;
	enum vs_hash hash;
	unsigned cipher_bits; /* AES key size: 128, 192, 256 */
};

/* Whether @buf (@len bytes) starts with the LUKS magic. */
bool vs_luks_has_magic(const uint8_t *buf, size_t len);

/*
 * Parse and check the header in @buf (at least VS_LUKS_HDR_SIZE bytes) of a
 * volume of @file_size bytes (0: unknown). Returns 0, or -EINVAL / -ENOTSUP
 * with @msg (size @msglen) saying what is wrong.
 */
int vs_luks_parse(struct vs_luks_header *h, const uint8_t *buf, size_t len, uint64_t file_size,
		  char *msg, size_t msglen);

/* Encode @h into @buf (VS_LUKS_HDR_SIZE bytes). */
void vs_luks_encode(const struct vs_luks_header *h, uint8_t *buf);

/*
 * Map QEMU's option names (cipher-alg "aes-256", cipher-mode "xts", ivgen-alg
 * "plain64", ivgen-hash-alg, hash-alg) to a header's names and spec. NULL
 * arguments take QEMU's defaults. -EINVAL with @msg on a name vstor does not
 * know or a combination QEMU refuses.
 */
int vs_luks_choose(struct vs_luks_header *h, const char *cipher_alg, const char *cipher_mode,
		   const char *ivgen_alg, const char *ivgen_hash, const char *hash_alg, char *msg,
		   size_t msglen);

/* Bytes of a slot's key material (split key, rounded to whole 4096-byte units). */
uint64_t vs_luks_slot_bytes(const struct vs_luks_header *h);

/*
 * Fill a new header: layout (slot offsets, payload offset) for h->key_bytes,
 * uuid and the master key digest of @mk (h->key_bytes), with @mk_iters
 * rounds. The name fields and spec must be set (vs_luks_choose).
 */
int vs_luks_init(struct vs_luks_header *h, const uint8_t *mk, uint32_t mk_iters);

/*
 * Make slot @slot active for @pass: its key material (vs_luks_slot_bytes
 * bytes) is written to @material. @iters PBKDF2 rounds.
 */
int vs_luks_slot_set(struct vs_luks_header *h, unsigned slot, const uint8_t *mk, const void *pass,
		     size_t passlen, uint32_t iters, uint8_t *material);

/*
 * Try @pass on slot @slot whose key material is @material: 0 and the master
 * key in @mk, -EACCES if it is not this slot's passphrase.
 */
int vs_luks_slot_unlock(const struct vs_luks_header *h, unsigned slot, const uint8_t *material,
			const void *pass, size_t passlen, uint8_t *mk);

/* How a new header is made: QEMU's create options (NULL: QEMU's defaults). */
struct vs_luks_build_opts {
	const char *cipher_alg, *cipher_mode, *ivgen_alg, *ivgen_hash, *hash_alg;
	uint64_t iter_time; /* ms of PBKDF2 for the key slot (calibrated on this machine) */
};

/*
 * A new LUKS header area: header, and slot 0 keyed by @pass with a random
 * master key, in *@area (*@area_len bytes, the payload offset; 4096-aligned,
 * free() it). The slot's PBKDF2 rounds take @o->iter_time, the master key
 * digest's an eighth, at least 1000 each, as QEMU does. -errno with @msg.
 */
int vs_luks_build(const struct vs_luks_build_opts *o, const void *pass, size_t passlen,
		  uint8_t **area, size_t *area_len, char *msg, size_t msglen);
/* Bytes of the header area vs_luks_build() makes for @o (qemu-img measure). */
int vs_luks_area_size(const struct vs_luks_build_opts *o, uint64_t *len, char *msg, size_t msglen);

/*
 * qemu-img amend of key slots (crypto-luks-amend.c): @opts are state,
 * keyslot, new-secret, old-secret, iter-time (with or without "encrypt."),
 * and VS_LUKS_AMEND_FORCE for --force. The header @h lives at @base of
 * @file; @mk is the unlocked master key (NULL: not unlocked). On success @h
 * is the new header. Checks and messages as qemu-img 7.2.
 */
#define VS_LUKS_AMEND_FORCE "x-vstor-force"
struct vs_node;
struct vs_kv;
struct vs_error;
int vs_luks_amend(struct vs_node *file, uint64_t base, struct vs_luks_header *h, const uint8_t *mk,
		  const struct vs_kv *opts, size_t nopts, struct vs_error *err);

/* The LUKS anti-forensic splitter: @src (@blocksize) into @stripes blocks at @dst, and back. */
int vs_luks_af_split(enum vs_hash h, const uint8_t *src, uint8_t *dst, size_t blocksize,
		     unsigned stripes);
int vs_luks_af_merge(enum vs_hash h, const uint8_t *src, uint8_t *dst, size_t blocksize,
		     unsigned stripes);

#endif
