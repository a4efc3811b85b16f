/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sector ciphers of encrypted images (internal to libstore and formats/):
 * a block cipher, a chaining mode and an IV generator, applied per 512-byte
 * sector as QEMU and dm-crypt do. The crypto itself is GnuTLS's. Nothing here
 * knows where a LUKS header lives, so raw LUKS and qcow2 share it.
 */
#ifndef VSTOR_CRYPTO_CIPHER_H
#define VSTOR_CRYPTO_CIPHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define VS_CRYPTO_SECTOR 512
#define VS_CRYPTO_MAX_KEY 64

enum vs_cipher_mode { VS_CIPHER_XTS, VS_CIPHER_CBC };
enum vs_ivgen { VS_IVGEN_PLAIN, VS_IVGEN_PLAIN64, VS_IVGEN_ESSIV };
enum vs_hash { VS_HASH_SHA1, VS_HASH_SHA256, VS_HASH_SHA512, VS_HASH_NONE };

/* What a sector cipher is made of; key_bytes is the whole key (XTS: both halves). */
struct vs_cipher_spec {
	enum vs_cipher_mode mode;
	enum vs_ivgen ivgen;
	enum vs_hash ivgen_hash; /* ESSIV only */
	unsigned key_bytes;	 /* 16, 24, 32 (CBC) or 32, 48, 64 (XTS) */
};

/* A keyed sector cipher. Stateless once made: one may be used by many threads. */
struct vs_sector_cipher {
	struct vs_cipher_spec spec;
	uint8_t key[VS_CRYPTO_MAX_KEY];
	uint8_t essiv_key[VS_CRYPTO_MAX_KEY]; /* hash of the key (ESSIV) */
	unsigned essiv_key_bytes;
};

/* Names as QEMU takes them ("sha256") and their digest sizes; -1 / 0 when unknown. */
int vs_hash_parse(const char *name);
const char *vs_hash_name(enum vs_hash h);
unsigned vs_hash_len(enum vs_hash h);

/* Hash @len bytes of @data into @out (vs_hash_len bytes). 0 or -errno. */
int vs_hash_buf(enum vs_hash h, const void *data, size_t len, uint8_t *out);

/* PBKDF2-HMAC of @pass with @salt, @iters rounds, into @out (@outlen bytes). */
int vs_pbkdf2(enum vs_hash h, const void *pass, size_t passlen, const uint8_t *salt, size_t saltlen,
	      uint64_t iters, uint8_t *out, size_t outlen);

/* PBKDF2 rounds of @h that take @ms milliseconds on this machine (at least 1). */
uint64_t vs_pbkdf2_count_iters(enum vs_hash h, size_t keylen, unsigned ms);

/* Key @c with @key (spec->key_bytes bytes). 0, or -EINVAL for a key the cipher refuses. */
int vs_sector_cipher_init(struct vs_sector_cipher *c, const struct vs_cipher_spec *spec,
			  const uint8_t *key);
/* Wipe the key material of @c. */
void vs_sector_cipher_wipe(struct vs_sector_cipher *c);

/*
 * En/decrypt @len bytes of @buf (a multiple of 512) in place; the first
 * sector is number @sector (the IV of each sector is derived from it).
 */
int vs_sector_encrypt(const struct vs_sector_cipher *c, uint64_t sector, uint8_t *buf, size_t len);
int vs_sector_decrypt(const struct vs_sector_cipher *c, uint64_t sector, uint8_t *buf, size_t len);
/* The same over an iovec (@len bytes from its start; sectors may straddle elements). */
int vs_sector_decrypt_iov(const struct vs_sector_cipher *c, uint64_t sector,
			  const struct iovec *iov, int niov, uint64_t len);

/*
 * Coroutine context. vs_sector_encrypt() / vs_sector_decrypt_iov() run on
 * the worker pool when @len is at least VS_CRYPTO_WORKER_MIN, so that
 * large requests use every core, inline otherwise. 0 or -EIO.
 */
#define VS_CRYPTO_WORKER_MIN (64 * 1024)
int vs_sector_encrypt_co(const struct vs_sector_cipher *c, uint64_t sector, uint8_t *buf,
			 uint64_t len);
int vs_sector_decrypt_iov_co(const struct vs_sector_cipher *c, uint64_t sector,
			     const struct iovec *iov, int niov, uint64_t len);

/* Fill @buf with @len random bytes (key material, salts): 0 or -EIO. */
int vs_crypto_random(void *buf, size_t len);

#endif
