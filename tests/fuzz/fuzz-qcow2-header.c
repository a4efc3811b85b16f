/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the qcow2 header. The input is the first bytes of an image
 * file; it goes through the format probe and the header decoder, and a
 * header that decodes must encode and decode again to the same fields
 * (abort otherwise, so the fuzzer reports it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "qcow2-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_header h, h2;
	struct vs_error err = { 0 };
	uint8_t *buf;
	size_t len;

	(void)vs_driver_qcow2.probe(data, size, "fuzz.qcow2");
	if (qcow2_header_decode(data, size, &h, &err) < 0)
		return 0;
	/* Round trip: what we would write back is what we read. */
	len = h.header_length > size ? h.header_length : size;
	buf = calloc(1, len);
	if (!buf)
		abort();
	memcpy(buf, data, size);
	qcow2_header_encode(&h, buf);
	vs_error_clear(&err);
	if (qcow2_header_decode(buf, len, &h2, &err) < 0)
		abort();
	if (h2.version != h.version || h2.cluster_bits != h.cluster_bits || h2.size != h.size ||
	    h2.l1_size != h.l1_size || h2.l1_table_offset != h.l1_table_offset ||
	    h2.refcount_table_offset != h.refcount_table_offset ||
	    h2.refcount_table_clusters != h.refcount_table_clusters ||
	    h2.nb_snapshots != h.nb_snapshots || h2.snapshots_offset != h.snapshots_offset ||
	    h2.incompatible_features != h.incompatible_features ||
	    h2.compatible_features != h.compatible_features ||
	    h2.autoclear_features != h.autoclear_features ||
	    h2.refcount_order != h.refcount_order || h2.header_length != h.header_length ||
	    h2.backing_file_offset != h.backing_file_offset ||
	    h2.backing_file_size != h.backing_file_size)
		abort();
	free(buf);
	return 0;
}
