/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the LUKS1 header. The input is the first bytes of a volume;
 * it goes through the format probe and the header parser (as a volume of
 * unknown size and of the input's size), and a header that parses must
 * encode and parse again to the same fields (abort otherwise, so the fuzzer
 * reports it). Key slots are not unlocked: PBKDF2 takes what the header's
 * iteration counts say, which is the parser's business to accept, not time.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto-luks.h"
#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vs_luks_header h, h2;
	uint8_t buf[VS_LUKS_HDR_SIZE];
	char msg[128];

	(void)vs_driver_luks.probe(data, size, "fuzz.luks");
	(void)vs_luks_parse(&h, data, size, size, msg, sizeof(msg));
	if (vs_luks_parse(&h, data, size, 0, msg, sizeof(msg)) < 0)
		return 0;
	vs_luks_encode(&h, buf);
	if (vs_luks_parse(&h2, buf, sizeof(buf), 0, msg, sizeof(msg)) < 0)
		abort();
	if (h2.payload_offset != h.payload_offset || h2.key_bytes != h.key_bytes ||
	    h2.mk_digest_iter != h.mk_digest_iter || strcmp(h2.cipher_mode, h.cipher_mode) ||
	    strcmp(h2.hash_spec, h.hash_spec) || strcmp(h2.uuid, h.uuid) ||
	    memcmp(h2.slots, h.slots, sizeof(h.slots)) || h2.spec.mode != h.spec.mode ||
	    h2.spec.ivgen != h.spec.ivgen || h2.cipher_bits != h.cipher_bits)
		abort();
	return 0;
}
