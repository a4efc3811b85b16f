/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vol-wipe: overwrite the bytes a volume stores with the passes of an
 * algorithm (the ones virsh offers, after scrub(1)). A qcow2 volume is then
 * formatted again, empty, with its size and backing file, so that it stays
 * a usable volume; a raw volume keeps the last pass's bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "driver.h"
#include "pool-int.h"

#define WIPE_CHUNK (1024 * 1024)
#define RANDOM_PASS 0xffffffffu /* a pass of random bytes */

/* A pass: up to three bytes repeated, or RANDOM_PASS. */
static const uint32_t pass_zero[] = { 0x000000 };
static const uint32_t pass_nnsa[] = { RANDOM_PASS, RANDOM_PASS, 0x000000 };
static const uint32_t pass_dod[] = { 0x000000, 0xffffff, RANDOM_PASS };
static const uint32_t pass_bsi[] = { 0xffffff, 0xfefefe, 0xfdfdfd, 0xfbfbfb, 0xf7f7f7,
				     0xefefef, 0xdfdfdf, 0xbfbfbf, 0x7f7f7f };
static const uint32_t pass_gutmann[] = {
	RANDOM_PASS, RANDOM_PASS, RANDOM_PASS, RANDOM_PASS, 0x555555,	 0xaaaaaa,    0x924924,
	0x492492,    0x249249,	  0x000000,    0x111111,    0x222222,	 0x333333,    0x444444,
	0x555555,    0x666666,	  0x777777,    0x888888,    0x999999,	 0xaaaaaa,    0xbbbbbb,
	0xcccccc,    0xdddddd,	  0xeeeeee,    0xffffff,    0x924924,	 0x492492,    0x249249,
	0x6db6db,    0xb6db6d,	  0xdb6db6,    RANDOM_PASS, RANDOM_PASS, RANDOM_PASS, RANDOM_PASS,
};
static const uint32_t pass_schneier[] = { 0x000000,    0xffffff,    RANDOM_PASS, RANDOM_PASS,
					  RANDOM_PASS, RANDOM_PASS, RANDOM_PASS };
static const uint32_t pass_random[] = { RANDOM_PASS };

static const struct {
	const char *name;
	const uint32_t *passes;
	unsigned n; /* pfitzner: n random passes */
} algs[] = {
	[VS_WIPE_ZERO] = { "zero", pass_zero, 1 },
	[VS_WIPE_NNSA] = { "nnsa", pass_nnsa, 3 },
	[VS_WIPE_DOD] = { "dod", pass_dod, 3 },
	[VS_WIPE_BSI] = { "bsi", pass_bsi, 9 },
	[VS_WIPE_GUTMANN] = { "gutmann", pass_gutmann, 35 },
	[VS_WIPE_SCHNEIER] = { "schneier", pass_schneier, 7 },
	[VS_WIPE_PFITZNER7] = { "pfitzner7", pass_random, 7 },
	[VS_WIPE_PFITZNER33] = { "pfitzner33", pass_random, 33 },
	[VS_WIPE_RANDOM] = { "random", pass_random, 1 },
	[VS_WIPE_TRIM] = { "trim", NULL, 0 },
};

int vs_wipe_alg_parse(const char *s, enum vs_wipe_alg *out)
{
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		if (!strcmp(s, algs[i].name)) {
			*out = (enum vs_wipe_alg)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* xorshift64*: fast, seeded from getrandom; the point is to hide, not to be a key. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static void fill_pass(uint8_t *buf, size_t len, uint32_t pass, uint64_t *rng)
{
	if (pass == RANDOM_PASS) {
		for (size_t i = 0; i + 8 <= len; i += 8) {
			uint64_t v = rng_next(rng);

			memcpy(buf + i, &v, 8);
		}
		return;
	}
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(pass >> (8 * (2 - i % 3)));
}

static int wipe_pass(struct vs_node *n, uint64_t size, uint32_t pass, uint8_t *buf, uint64_t *rng)
{
	bool fixed = pass != RANDOM_PASS;
	int ret;

	/* A chunk of a repeated pattern must start at a multiple of 3 bytes. */
	if (fixed)
		fill_pass(buf, WIPE_CHUNK + 3, pass, rng);
	for (uint64_t off = 0; off < size;) {
		size_t len = size - off < WIPE_CHUNK ? (size_t)(size - off) : WIPE_CHUNK;
		size_t shift = fixed ? (size_t)(off % 3) : 0;

		if (!fixed)
			fill_pass(buf, WIPE_CHUNK, pass, rng);
		ret = vs_node_pwrite(n, off, buf + shift, len, 0);
		if (ret < 0)
			return ret;
		off += len;
	}
	return vs_node_flush(n);
}

int vs_pool_vol_wipe(struct vs_pool *p, const char *name, enum vs_wipe_alg alg, unsigned flags,
		     struct vs_error *err)
{
	struct vs_open_opts o = { .force_share = (flags & VS_VOL_FORCE) != 0 };
	struct vs_vol_info vol;
	struct vs_node *n = NULL;
	uint8_t *buf = NULL;
	uint64_t rng, size;
	int ret;

	if ((unsigned)alg >= sizeof(algs) / sizeof(algs[0]))
		return vs_error_set(err, -EINVAL, "unknown wipe algorithm");
	ret = vs_pool_vol_info(p, name, &vol, err);
	if (ret == 0)
		ret = pool_vol_check_unforced(p, &vol, flags, err);
	if (ret < 0)
		return ret;
	ret = vs_pool_vol_open(p, name, &o, true, &n, err);
	if (ret < 0)
		return ret;
	size = vs_node_size(n);
	if (alg == VS_WIPE_TRIM ||
	    (alg == VS_WIPE_ZERO && vol.type == VS_VOL_FILE && vol.allocation < size)) {
		/* Sparse file or trim: deallocate, which reads back as zeroes. */
		ret = vs_node_write_zeroes(n, 0, size, VS_REQ_MAY_UNMAP);
		if (ret == 0)
			ret = vs_node_flush(n);
	} else {
		if (getrandom(&rng, sizeof(rng), 0) != sizeof(rng) || !rng)
			rng = 0x9e3779b97f4a7c15ull;
		buf = vs_buf_alloc(WIPE_CHUNK + 8);
		if (!buf) {
			ret = -ENOMEM;
		} else {
			for (unsigned i = 0; i < algs[alg].n && ret == 0; i++) {
				uint32_t pass = algs[alg].passes == pass_random ?
							RANDOM_PASS :
							algs[alg].passes[i];

				ret = wipe_pass(n, size, pass, buf, &rng);
			}
		}
	}
	free(buf);
	vs_node_close(n);
	if (ret < 0)
		return vs_error_setf_errno(err, ret, "cannot wipe volume '%s'", name);
	if ((!strcmp(vol.format, "qcow2") || !strcmp(vol.encryption, "luks")) &&
	    (vol.type == VS_VOL_FILE || vol.type == VS_VOL_BLOCK)) {
		struct vs_vol_create_args a = { .format = vol.format };
		const char *format = vol.format;
		char uuid[37];
		struct vs_kv kv[6];
		size_t nkv = vs_pool_create_opts(kv, vol.backing[0] ? vol.backing : NULL,
						 vol.backing_format, NULL);

		/*
		 * Formatted again: an empty image, so no wiped byte is kept as
		 * data; an encrypted one encrypted again (a new master key) with
		 * its secret, so that it stays encrypted.
		 */
		if (!strcmp(vol.encryption, "luks")) {
			ret = vs_pool_vol_secret(p, &vol, uuid, err);
			if (ret == 0)
				ret = pool_secret_register(p->state, uuid, &a.encrypt_key_secret,
							   err);
			if (ret < 0)
				return ret;
			a.encrypt_secret = uuid;
			nkv += vs_pool_create_encrypt_opts(kv + nkv, &a, &format);
		}
		ret = vs_image_create_ex(vol.path, format, vol.capacity, kv, nkv,
					 VS_CREATE_NO_BACKING_CHECK, err);
		if (a.encrypt_key_secret)
			(void)vs_secret_remove(a.encrypt_key_secret);
	}
	return ret;
}
