/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The crypto core of LUKS (libstore/crypto-cipher.c, crypto-luks.c) against
 * known vectors: PBKDF2 (RFC 6070 and its SHA-2 counterparts), XTS-AES
 * (IEEE 1619 vector 4), CBC-ESSIV (computed with Python's cryptography), and
 * the splitter, header and key slots by round trip.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto-luks.h"

static void unhex(const char *s, uint8_t *out)
{
	for (size_t i = 0; s[2 * i]; i++)
		sscanf(s + 2 * i, "%2hhx", &out[i]);
}

static void test_pbkdf2_vectors(void **state)
{
	uint8_t out[64], want[64];

	(void)state;
	assert_int_equal(vs_pbkdf2(VS_HASH_SHA1, "password", 8, (const uint8_t *)"salt", 4, 4096,
				   out, 20),
			 0);
	unhex("4b007901b765489abead49d926f721d065a429c1", want);
	assert_memory_equal(out, want, 20);
	assert_int_equal(vs_pbkdf2(VS_HASH_SHA256, "password", 8, (const uint8_t *)"salt", 4, 2,
				   out, 32),
			 0);
	unhex("ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43", want);
	assert_memory_equal(out, want, 32);
	assert_int_equal(vs_pbkdf2(VS_HASH_SHA512, "password", 8, (const uint8_t *)"salt", 4, 1,
				   out, 64),
			 0);
	unhex("867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252"
	      "c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce",
	      want);
	assert_memory_equal(out, want, 64);
	assert_int_not_equal(vs_pbkdf2(VS_HASH_SHA256, "p", 1, (const uint8_t *)"s", 1, 0, out, 32),
			     0);
}

static void fill_pattern(uint8_t *buf)
{
	for (int i = 0; i < 512; i++)
		buf[i] = (uint8_t)i;
}

static void test_xts_ieee1619(void **state)
{
	struct vs_cipher_spec spec = { VS_CIPHER_XTS, VS_IVGEN_PLAIN64, VS_HASH_NONE, 32 };
	struct vs_sector_cipher c;
	uint8_t key[32], buf[512], orig[512], want[32];

	(void)state;
	/* IEEE 1619-2007 XTS-AES-128 vector 4: data unit 0, 512 bytes 00..ff 00..ff. */
	unhex("2718281828459045235360287471352631415926535897932384626433832795", key);
	assert_int_equal(vs_sector_cipher_init(&c, &spec, key), 0);
	fill_pattern(buf);
	memcpy(orig, buf, sizeof(buf));
	assert_int_equal(vs_sector_encrypt(&c, 0, buf, sizeof(buf)), 0);
	unhex("27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c", want);
	assert_memory_equal(buf, want, 32);
	assert_int_equal(vs_sector_decrypt(&c, 0, buf, sizeof(buf)), 0);
	assert_memory_equal(buf, orig, sizeof(buf));
	/* Not a whole sector. */
	assert_int_not_equal(vs_sector_encrypt(&c, 0, buf, 100), 0);
	vs_sector_cipher_wipe(&c);
}

static void test_cbc_essiv_iov_split(void **state)
{
	struct vs_cipher_spec spec = { VS_CIPHER_CBC, VS_IVGEN_ESSIV, VS_HASH_SHA256, 32 };
	struct vs_sector_cipher c;
	uint8_t key[32], buf[1024], orig[1024], want[32];
	struct iovec iov[3];

	(void)state;
	unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", key);
	assert_int_equal(vs_sector_cipher_init(&c, &spec, key), 0);
	fill_pattern(buf);
	fill_pattern(buf + 512);
	memcpy(orig, buf, sizeof(buf));
	assert_int_equal(vs_sector_encrypt(&c, 5, buf, sizeof(buf)), 0);
	unhex("bf20df0df20571aa424b726336e909a20f0858aad6f05c247ffab81323cfd7a2", want);
	assert_memory_equal(buf, want, 32);
	/* Decrypt through an iovec whose elements split the sectors. */
	iov[0] = (struct iovec){ buf, 100 };
	iov[1] = (struct iovec){ buf + 100, 700 };
	iov[2] = (struct iovec){ buf + 800, 224 };
	assert_int_equal(vs_sector_decrypt_iov(&c, 5, iov, 3, sizeof(buf)), 0);
	assert_memory_equal(buf, orig, sizeof(buf));
	vs_sector_cipher_wipe(&c);
}

static void test_af_round_trip(void **state)
{
	uint8_t src[64], back[64];
	uint8_t *split = malloc(64 * VS_LUKS_STRIPES);

	(void)state;
	assert_non_null(split);
	for (int h = VS_HASH_SHA1; h <= VS_HASH_SHA512; h++) {
		for (size_t i = 0; i < sizeof(src); i++)
			src[i] = (uint8_t)(i * 7 + h);
		assert_int_equal(vs_luks_af_split(h, src, split, 64, VS_LUKS_STRIPES), 0);
		assert_int_equal(vs_luks_af_merge(h, split, back, 64, VS_LUKS_STRIPES), 0);
		assert_memory_equal(src, back, 64);
		/* One stripe is the key itself. */
		assert_int_equal(vs_luks_af_merge(h, src, back, 64, 1), 0);
		assert_memory_equal(src, back, 64);
		/* A changed stripe changes the key. */
		split[0] ^= 1;
		assert_int_equal(vs_luks_af_merge(h, split, back, 64, VS_LUKS_STRIPES), 0);
		assert_memory_not_equal(src, back, 64);
	}
	free(split);
}

static void test_luks_header_slots(void **state)
{
	struct vs_luks_header h, p;
	uint8_t mk[64], got[64], buf[VS_LUKS_HDR_SIZE];
	char msg[128];
	uint8_t *mat;

	(void)state;
	assert_int_equal(vs_luks_choose(&h, NULL, NULL, NULL, NULL, NULL, msg, sizeof(msg)), 0);
	assert_string_equal(h.cipher_mode, "xts-plain64");
	assert_int_equal(h.key_bytes, 64);
	for (size_t i = 0; i < sizeof(mk); i++)
		mk[i] = (uint8_t)(i * 13 + 1);
	assert_int_equal(vs_luks_init(&h, mk, 1000), 0);
	/* QEMU 7.2's layout for aes-256-xts: slots 504 sectors apart, payload at 4040. */
	assert_int_equal(h.slots[0].key_offset, 8);
	assert_int_equal(h.slots[1].key_offset, 512);
	assert_int_equal(h.payload_offset, 4040);
	mat = calloc(1, vs_luks_slot_bytes(&h));
	assert_non_null(mat);
	assert_int_equal(vs_luks_slot_set(&h, 0, mk, "secret", 6, 1000, mat), 0);
	vs_luks_encode(&h, buf);
	assert_int_equal(vs_luks_parse(&p, buf, sizeof(buf), 0, msg, sizeof(msg)), 0);
	assert_int_equal(p.slots[0].active, VS_LUKS_SLOT_ACTIVE);
	assert_int_equal(p.slots[1].active, VS_LUKS_SLOT_INACTIVE);
	assert_int_equal(vs_luks_slot_unlock(&p, 0, mat, "secret", 6, got), 0);
	assert_memory_equal(got, mk, 64);
	assert_int_equal(vs_luks_slot_unlock(&p, 0, mat, "Secret", 6, got), -EACCES);
	assert_int_equal(vs_luks_slot_unlock(&p, 1, mat, "secret", 6, got), -EINVAL);

	/* Damaged headers are refused with a reason. */
	buf[7] = 2;
	assert_int_equal(vs_luks_parse(&p, buf, sizeof(buf), 0, msg, sizeof(msg)), -ENOTSUP);
	buf[7] = 1;
	memcpy(buf + 40, "ecb", 4);
	assert_int_not_equal(vs_luks_parse(&p, buf, sizeof(buf), 0, msg, sizeof(msg)), 0);
	vs_luks_encode(&h, buf);
	buf[208 + 47] = 9; /* slot 0 stripes */
	assert_int_equal(vs_luks_parse(&p, buf, sizeof(buf), 0, msg, sizeof(msg)), -EINVAL);
	vs_luks_encode(&h, buf);
	assert_int_equal(vs_luks_parse(&p, buf, sizeof(buf), 4096, msg, sizeof(msg)), -EINVAL);
	/* Names QEMU refuses. */
	assert_int_not_equal(
		vs_luks_choose(&p, "twofish-256", NULL, NULL, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_not_equal(
		vs_luks_choose(&p, "aes-192", "xts", NULL, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_not_equal(
		vs_luks_choose(&p, "aes-192", "cbc", NULL, NULL, NULL, msg, sizeof(msg)), 0);
	free(mat);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pbkdf2_vectors),	    cmocka_unit_test(test_xts_ieee1619),
		cmocka_unit_test(test_cbc_essiv_iov_split), cmocka_unit_test(test_af_round_trip),
		cmocka_unit_test(test_luks_header_slots),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
