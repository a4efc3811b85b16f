/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sector ciphers, hashes and PBKDF2 over GnuTLS (see crypto-cipher.h).
 *
 * A GnuTLS cipher handle carries the chaining state, so a request makes its
 * own handle from the key kept in struct vs_sector_cipher: requests running
 * on several worker threads never share one.
 */
#include "crypto-cipher.h"
#include "bytes.h"
#include "vstor/reactor.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <time.h>

#define IV_LEN 16

static const struct {
	const char *name;
	gnutls_digest_algorithm_t dig;
	gnutls_mac_algorithm_t mac;
	unsigned len;
} hashes[] = {
	[VS_HASH_SHA1] = { "sha1", GNUTLS_DIG_SHA1, GNUTLS_MAC_SHA1, 20 },
	[VS_HASH_SHA256] = { "sha256", GNUTLS_DIG_SHA256, GNUTLS_MAC_SHA256, 32 },
	[VS_HASH_SHA512] = { "sha512", GNUTLS_DIG_SHA512, GNUTLS_MAC_SHA512, 64 },
};

int vs_hash_parse(const char *name)
{
	for (int i = 0; i < VS_HASH_NONE; i++)
		if (!strcmp(name, hashes[i].name))
			return i;
	return -1;
}

const char *vs_hash_name(enum vs_hash h)
{
	return h < VS_HASH_NONE ? hashes[h].name : "none";
}

unsigned vs_hash_len(enum vs_hash h)
{
	return h < VS_HASH_NONE ? hashes[h].len : 0;
}

int vs_hash_buf(enum vs_hash h, const void *data, size_t len, uint8_t *out)
{
	if (h >= VS_HASH_NONE)
		return -EINVAL;
	return gnutls_hash_fast(hashes[h].dig, data, len, out) < 0 ? -EIO : 0;
}

int vs_pbkdf2(enum vs_hash h, const void *pass, size_t passlen, const uint8_t *salt, size_t saltlen,
	      uint64_t iters, uint8_t *out, size_t outlen)
{
	gnutls_datum_t key = { (unsigned char *)pass, (unsigned)passlen };
	gnutls_datum_t s = { (unsigned char *)salt, (unsigned)saltlen };

	if (h >= VS_HASH_NONE || iters == 0 || iters > UINT32_MAX)
		return -EINVAL;
	return gnutls_pbkdf2(hashes[h].mac, &key, &s, (unsigned)iters, out, outlen) < 0 ? -EIO : 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t vs_pbkdf2_count_iters(enum vs_hash h, size_t keylen, unsigned ms)
{
	static const char pass[] = "calibration passphrase";
	uint8_t salt[32] = { 0 }, out[VS_CRYPTO_MAX_KEY];
	uint64_t iters = 1 << 12, ns = 0;

	if (keylen > sizeof(out))
		keylen = sizeof(out);
	/* Double the rounds until a run takes long enough to be measured. */
	for (;;) {
		uint64_t t0 = now_ns();

		if (vs_pbkdf2(h, pass, sizeof(pass) - 1, salt, sizeof(salt), iters, out, keylen) <
		    0)
			return 1;
		ns = now_ns() - t0;
		if (ns >= 50000000u || iters >= (UINT64_C(1) << 30))
			break;
		iters *= 2;
	}
	if (ns == 0)
		ns = 1;
	uint64_t r = (uint64_t)((double)iters * ms * 1e6 / (double)ns);
	return r ? r : 1;
}

static gnutls_cipher_algorithm_t gnutls_alg(const struct vs_cipher_spec *s, unsigned key_bytes)
{
	if (s->mode == VS_CIPHER_XTS)
		return key_bytes == 32 ? GNUTLS_CIPHER_AES_128_XTS :
		       key_bytes == 64 ? GNUTLS_CIPHER_AES_256_XTS :
					 GNUTLS_CIPHER_UNKNOWN;
	return key_bytes == 16 ? GNUTLS_CIPHER_AES_128_CBC :
	       key_bytes == 24 ? GNUTLS_CIPHER_AES_192_CBC :
	       key_bytes == 32 ? GNUTLS_CIPHER_AES_256_CBC :
				 GNUTLS_CIPHER_UNKNOWN;
}

static int cipher_open(gnutls_cipher_hd_t *h, gnutls_cipher_algorithm_t alg, const uint8_t *key,
		       unsigned key_bytes)
{
	uint8_t iv[IV_LEN] = { 0 };
	gnutls_datum_t k = { (unsigned char *)key, key_bytes };
	gnutls_datum_t v = { iv, IV_LEN };

	if (alg == GNUTLS_CIPHER_UNKNOWN)
		return -EINVAL;
	return gnutls_cipher_init(h, alg, &k, &v) < 0 ? -EINVAL : 0;
}

int vs_sector_cipher_init(struct vs_sector_cipher *c, const struct vs_cipher_spec *spec,
			  const uint8_t *key)
{
	gnutls_cipher_hd_t h;
	int ret;

	memset(c, 0, sizeof(*c));
	if (spec->key_bytes > VS_CRYPTO_MAX_KEY)
		return -EINVAL;
	if (spec->mode == VS_CIPHER_XTS && spec->ivgen == VS_IVGEN_ESSIV)
		return -EINVAL;
	c->spec = *spec;
	memcpy(c->key, key, spec->key_bytes);
	if (spec->ivgen == VS_IVGEN_ESSIV) {
		/* ESSIV: the IV is the sector number encrypted with the key's hash. */
		c->essiv_key_bytes = vs_hash_len(spec->ivgen_hash);
		ret = vs_hash_buf(spec->ivgen_hash, key, spec->key_bytes, c->essiv_key);
		if (ret < 0 || gnutls_alg(spec, c->essiv_key_bytes) == GNUTLS_CIPHER_UNKNOWN) {
			vs_sector_cipher_wipe(c);
			return -EINVAL;
		}
	}
	/* Let GnuTLS judge the key now rather than on the first request. */
	ret = cipher_open(&h, gnutls_alg(spec, spec->key_bytes), c->key, spec->key_bytes);
	if (ret < 0) {
		vs_sector_cipher_wipe(c);
		return ret;
	}
	gnutls_cipher_deinit(h);
	return 0;
}

void vs_sector_cipher_wipe(struct vs_sector_cipher *c)
{
	gnutls_memset(c, 0, sizeof(*c));
}

/* The handles of one run over sectors: the data cipher and ESSIV's. */
struct run {
	const struct vs_sector_cipher *c;
	gnutls_cipher_hd_t data, essiv;
	bool encrypt;
};

static int run_begin(struct run *r, const struct vs_sector_cipher *c, bool encrypt)
{
	int ret;

	r->c = c;
	r->encrypt = encrypt;
	r->essiv = NULL;
	ret = cipher_open(&r->data, gnutls_alg(&c->spec, c->spec.key_bytes), c->key,
			  c->spec.key_bytes);
	if (ret < 0)
		return ret;
	if (c->spec.ivgen == VS_IVGEN_ESSIV) {
		ret = cipher_open(&r->essiv, gnutls_alg(&c->spec, c->essiv_key_bytes), c->essiv_key,
				  c->essiv_key_bytes);
		if (ret < 0) {
			gnutls_cipher_deinit(r->data);
			return ret;
		}
	}
	return 0;
}

static void run_end(struct run *r)
{
	gnutls_cipher_deinit(r->data);
	if (r->essiv)
		gnutls_cipher_deinit(r->essiv);
}

static int run_sector(struct run *r, uint64_t sector, uint8_t *buf)
{
	uint8_t iv[IV_LEN] = { 0 };

	if (r->c->spec.ivgen == VS_IVGEN_PLAIN)
		vs_put_le32(iv, (uint32_t)sector);
	else
		vs_put_le64(iv, sector);
	if (r->essiv) {
		/* One block with a zero IV: CBC is ECB. */
		uint8_t zero[IV_LEN] = { 0 };

		gnutls_cipher_set_iv(r->essiv, zero, IV_LEN);
		if (gnutls_cipher_encrypt(r->essiv, iv, IV_LEN) < 0)
			return -EIO;
	}
	gnutls_cipher_set_iv(r->data, iv, IV_LEN);
	if (r->encrypt)
		return gnutls_cipher_encrypt(r->data, buf, VS_CRYPTO_SECTOR) < 0 ? -EIO : 0;
	return gnutls_cipher_decrypt(r->data, buf, VS_CRYPTO_SECTOR) < 0 ? -EIO : 0;
}

static int run_buf(const struct vs_sector_cipher *c, bool encrypt, uint64_t sector, uint8_t *buf,
		   size_t len)
{
	struct run r;
	int ret;

	if (len % VS_CRYPTO_SECTOR)
		return -EINVAL;
	ret = run_begin(&r, c, encrypt);
	if (ret < 0)
		return ret;
	for (size_t off = 0; off < len && ret == 0; off += VS_CRYPTO_SECTOR)
		ret = run_sector(&r, sector++, buf + off);
	run_end(&r);
	return ret;
}

int vs_sector_encrypt(const struct vs_sector_cipher *c, uint64_t sector, uint8_t *buf, size_t len)
{
	return run_buf(c, true, sector, buf, len);
}

int vs_sector_decrypt(const struct vs_sector_cipher *c, uint64_t sector, uint8_t *buf, size_t len)
{
	return run_buf(c, false, sector, buf, len);
}

int vs_sector_decrypt_iov(const struct vs_sector_cipher *c, uint64_t sector,
			  const struct iovec *iov, int niov, uint64_t len)
{
	uint8_t tmp[VS_CRYPTO_SECTOR];
	uint64_t done = 0;
	size_t in = 0; /* offset inside iov[i] */
	struct run r;
	int i = 0, ret;

	if (len % VS_CRYPTO_SECTOR)
		return -EINVAL;
	ret = run_begin(&r, c, false);
	if (ret < 0)
		return ret;
	while (done < len && ret == 0) {
		while (i < niov && in == iov[i].iov_len) {
			i++;
			in = 0;
		}
		if (i == niov) {
			ret = -EINVAL;
			break;
		}
		uint8_t *p = (uint8_t *)iov[i].iov_base + in;

		if (iov[i].iov_len - in >= VS_CRYPTO_SECTOR) {
			ret = run_sector(&r, sector++, p);
			in += VS_CRYPTO_SECTOR;
		} else {
			/* A sector across elements: through a copy. */
			size_t got = 0;

			for (int k = i; k < niov && got < VS_CRYPTO_SECTOR; k++) {
				size_t from = k == i ? in : 0;
				size_t n = iov[k].iov_len - from;

				if (n > VS_CRYPTO_SECTOR - got)
					n = VS_CRYPTO_SECTOR - got;
				memcpy(tmp + got, (uint8_t *)iov[k].iov_base + from, n);
				got += n;
			}
			if (got < VS_CRYPTO_SECTOR) {
				ret = -EINVAL;
				break;
			}
			ret = run_sector(&r, sector++, tmp);
			for (got = 0; got < VS_CRYPTO_SECTOR;) {
				size_t n = iov[i].iov_len - in;

				if (n > VS_CRYPTO_SECTOR - got)
					n = VS_CRYPTO_SECTOR - got;
				memcpy((uint8_t *)iov[i].iov_base + in, tmp + got, n);
				got += n;
				in += n;
				if (in == iov[i].iov_len && got < VS_CRYPTO_SECTOR) {
					i++;
					in = 0;
				}
			}
		}
		done += VS_CRYPTO_SECTOR;
	}
	run_end(&r);
	gnutls_memset(tmp, 0, sizeof(tmp));
	return ret;
}

int vs_crypto_random(void *buf, size_t len)
{
	return gnutls_rnd(GNUTLS_RND_KEY, buf, len) < 0 ? -EIO : 0;
}

/* One en/decryption, run inline or on a worker (vs_sector_*_co). */
struct crypt_job {
	const struct vs_sector_cipher *c;
	uint64_t sector;
	uint8_t *buf;		 /* encrypt */
	const struct iovec *iov; /* decrypt */
	int niov;
	uint64_t len;
	int ret;
};

static void crypt_fn(void *arg)
{
	struct crypt_job *j = arg;

	if (j->buf)
		j->ret = vs_sector_encrypt(j->c, j->sector, j->buf, j->len);
	else
		j->ret = vs_sector_decrypt_iov(j->c, j->sector, j->iov, j->niov, j->len);
}

static int crypt_run(struct crypt_job *j)
{
	if (j->len >= VS_CRYPTO_WORKER_MIN)
		vs_co_run_in_worker(crypt_fn, j);
	else
		crypt_fn(j);
	return j->ret < 0 ? -EIO : 0;
}

int vs_sector_encrypt_co(const struct vs_sector_cipher *c, uint64_t sector, uint8_t *buf,
			 uint64_t len)
{
	struct crypt_job j = { .c = c, .sector = sector, .buf = buf, .len = len };

	return crypt_run(&j);
}

int vs_sector_decrypt_iov_co(const struct vs_sector_cipher *c, uint64_t sector,
			     const struct iovec *iov, int niov, uint64_t len)
{
	struct crypt_job j = { .c = c, .sector = sector, .iov = iov, .niov = niov, .len = len };

	return crypt_run(&j);
}
