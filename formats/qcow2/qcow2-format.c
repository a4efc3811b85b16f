/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 header decoding and encoding (docs/interop/qcow2.txt, "Header").
 *
 * The decoder is the first thing that touches an untrusted file, so it
 * validates every field it can judge on its own; what it cannot judge
 * (feature bits the caller may or may not support, offsets against the file
 * size) is left to the caller.
 */
#include "qcow2-format.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>

#include "driver.h"

/* Byte offsets of the header fields. */
enum {
	HDR_MAGIC = 0,
	HDR_VERSION = 4,
	HDR_BACKING_OFFSET = 8,
	HDR_BACKING_SIZE = 16,
	HDR_CLUSTER_BITS = 20,
	HDR_SIZE = 24,
	HDR_CRYPT_METHOD = 32,
	HDR_L1_SIZE = 36,
	HDR_L1_OFFSET = 40,
	HDR_REFT_OFFSET = 48,
	HDR_REFT_CLUSTERS = 56,
	HDR_NB_SNAPSHOTS = 60,
	HDR_SNAPSHOTS_OFFSET = 64,
	HDR_INCOMPAT = 72,
	HDR_COMPAT = 80,
	HDR_AUTOCLEAR = 88,
	HDR_REFCOUNT_ORDER = 96,
	HDR_HEADER_LENGTH = 100,
	HDR_COMPRESSION_TYPE = 104,
	HDR_END_COMPRESSION = 112, /* compression_type plus its 7 padding bytes */
};

/* A big-endian integer field of the header: where it is on disk and in the struct. */
struct hdr_field {
	uint8_t disk;
	uint8_t mem;
	uint8_t width; /* 4 or 8 */
};

#define HDR_FIELD(disk, member)                                             \
	{                                                                   \
		disk, (uint8_t)offsetof(struct qcow2_header, member),       \
			(uint8_t)sizeof(((struct qcow2_header *)0)->member) \
	}

/* After magic and version, every version. */
static const struct hdr_field hdr_fields_v2[] = {
	HDR_FIELD(HDR_BACKING_OFFSET, backing_file_offset),
	HDR_FIELD(HDR_BACKING_SIZE, backing_file_size),
	HDR_FIELD(HDR_CLUSTER_BITS, cluster_bits),
	HDR_FIELD(HDR_SIZE, size),
	HDR_FIELD(HDR_CRYPT_METHOD, crypt_method),
	HDR_FIELD(HDR_L1_SIZE, l1_size),
	HDR_FIELD(HDR_L1_OFFSET, l1_table_offset),
	HDR_FIELD(HDR_REFT_OFFSET, refcount_table_offset),
	HDR_FIELD(HDR_REFT_CLUSTERS, refcount_table_clusters),
	HDR_FIELD(HDR_NB_SNAPSHOTS, nb_snapshots),
	HDR_FIELD(HDR_SNAPSHOTS_OFFSET, snapshots_offset),
};

/* Version 3 only (compression_type, a byte, aside). */
static const struct hdr_field hdr_fields_v3[] = {
	HDR_FIELD(HDR_INCOMPAT, incompatible_features),
	HDR_FIELD(HDR_COMPAT, compatible_features),
	HDR_FIELD(HDR_AUTOCLEAR, autoclear_features),
	HDR_FIELD(HDR_REFCOUNT_ORDER, refcount_order),
	HDR_FIELD(HDR_HEADER_LENGTH, header_length),
};

#define HDR_NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static void hdr_fields_decode(const struct hdr_field *f, size_t n, const uint8_t *buf,
			      struct qcow2_header *h)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = (uint8_t *)h + f[i].mem;

		if (f[i].width == 8) {
			uint64_t v = vs_be64(buf + f[i].disk);

			memcpy(p, &v, 8);
		} else {
			uint32_t v = vs_be32(buf + f[i].disk);

			memcpy(p, &v, 4);
		}
	}
}

static void hdr_fields_encode(const struct hdr_field *f, size_t n, const struct qcow2_header *h,
			      uint8_t *buf)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = (const uint8_t *)h + f[i].mem;

		if (f[i].width == 8) {
			uint64_t v;

			memcpy(&v, p, 8);
			vs_put_be64(buf + f[i].disk, v);
		} else {
			uint32_t v;

			memcpy(&v, p, 4);
			vs_put_be32(buf + f[i].disk, v);
		}
	}
}

int qcow2_check_virtual_size(uint64_t size, unsigned cluster_bits, bool extl2, struct vs_error *err)
{
	uint64_t span = (UINT64_C(1) << cluster_bits) / (extl2 ? 16 : 8) << cluster_bits;
	uint64_t l1_entries = size / span + (size % span != 0);

	/*
	 * qemu's two bounds, in its order of messages: the size a node may
	 * have ("File too large"), and an L1 index that fits an int ("Image is
	 * too big"). Computed without wrapping: 2^64 - 1 + span - 1 wraps to
	 * a tiny L1 index, which let such a size through.
	 */
	if (size > VS_NODE_MAX_SIZE)
		return vs_error_setf_errno(err, -EFBIG,
					   "qcow2: virtual size %" PRIu64
					   " is beyond the largest an image may have (%" PRIu64 ")",
					   size, VS_NODE_MAX_SIZE);
	if (l1_entries > INT32_MAX)
		return vs_error_set(err, -EFBIG,
				    "qcow2: Image is too big: a virtual size of %" PRIu64
				    " needs %" PRIu64 " L1 entries with %" PRIu64 "-byte clusters",
				    size, l1_entries, UINT64_C(1) << cluster_bits);
	return 0;
}

int qcow2_header_decode(const uint8_t *buf, size_t len, struct qcow2_header *h,
			struct vs_error *err)
{
	return qcow2_header_decode_flags(buf, len, h, 0, err);
}

int qcow2_header_decode_flags(const uint8_t *buf, size_t len, struct qcow2_header *h,
			      unsigned flags, struct vs_error *err)
{
	uint64_t cluster_size;
	int ret;

	memset(h, 0, sizeof(*h));
	if (len < QCOW2_V2_HEADER_SIZE)
		return vs_error_set(err, -EINVAL, "qcow2: file too short for a header");

	h->magic = vs_be32(buf + HDR_MAGIC);
	if (h->magic != QCOW2_MAGIC)
		return vs_error_set(err, -EINVAL, "qcow2: bad magic (not a qcow2 image)");
	h->version = vs_be32(buf + HDR_VERSION);
	if (h->version != 2 && h->version != 3)
		return vs_error_set(err, -ENOTSUP, "qcow2: unsupported version %u", h->version);

	hdr_fields_decode(hdr_fields_v2, HDR_NFIELDS(hdr_fields_v2), buf, h);

	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return vs_error_set(err, -EINVAL,
				    "qcow2: unsupported cluster size: 2^%u (512 B to 2 MiB)",
				    h->cluster_bits);
	cluster_size = 1ull << h->cluster_bits;

	if (h->version == 2) {
		h->refcount_order = 4;
		h->header_length = QCOW2_V2_HEADER_SIZE;
		h->compression_type = QCOW2_COMPRESSION_ZLIB;
	} else {
		if (len < QCOW2_V3_HEADER_SIZE)
			return vs_error_set(err, -EINVAL, "qcow2: file too short for a v3 header");
		hdr_fields_decode(hdr_fields_v3, HDR_NFIELDS(hdr_fields_v3), buf, h);
		if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER)
			return vs_error_set(err, -EINVAL,
					    "qcow2: refcount width 2^%u exceeds 64 bits",
					    h->refcount_order);
		if (h->header_length < QCOW2_V3_HEADER_SIZE || (h->header_length & 7))
			return vs_error_set(err, -EINVAL, "qcow2: invalid header length %u",
					    h->header_length);
		if (h->header_length > cluster_size)
			return vs_error_set(err, -EINVAL,
					    "qcow2: header length %u exceeds the cluster size",
					    h->header_length);
		if (h->header_length > len)
			return vs_error_set(err, -EINVAL,
					    "qcow2: file too short for its header length %u",
					    h->header_length);
		h->compression_type = QCOW2_COMPRESSION_ZLIB;
		if (h->header_length > HDR_COMPRESSION_TYPE)
			h->compression_type = buf[HDR_COMPRESSION_TYPE];
		if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
		    h->compression_type != QCOW2_COMPRESSION_ZSTD)
			return vs_error_set(err, -ENOTSUP, "qcow2: unknown compression type %u",
					    h->compression_type);
		/*
		 * A reader that ignores the compression_type field would inflate
		 * zstd data as zlib; the spec forbids a non-zlib type without
		 * the incompatible bit that stops such readers, and (as QEMU
		 * enforces) the bit with zlib.
		 */
		if ((h->compression_type != QCOW2_COMPRESSION_ZLIB) !=
		    !!(h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION))
			return vs_error_set(
				err, -EINVAL,
				"qcow2: Compression type incompatible feature bit must %sbe set",
				h->compression_type == QCOW2_COMPRESSION_ZLIB ? "not " : "");
	}

	if (h->backing_file_offset) {
		if (h->backing_file_size > QCOW2_MAX_BACKING_NAME)
			return vs_error_set(err, -EINVAL,
					    "qcow2: backing file name too long (%u bytes)",
					    h->backing_file_size);
		if (h->backing_file_offset > cluster_size ||
		    h->backing_file_offset + h->backing_file_size > cluster_size)
			return vs_error_set(
				err, -EINVAL,
				"qcow2: backing file name lies outside the header cluster");
	}

	if (h->l1_table_offset & (cluster_size - 1))
		return vs_error_set(err, -EINVAL, "qcow2: L1 table offset is not cluster aligned");
	if (h->refcount_table_offset & (cluster_size - 1))
		return vs_error_set(err, -EINVAL,
				    "qcow2: refcount table offset is not cluster aligned");
	if (h->refcount_table_offset == 0 && !(flags & QCOW2_HDR_FOR_CHECK))
		return vs_error_set(err, -EINVAL, "qcow2: image has no refcount table");
	if (h->nb_snapshots && (h->snapshots_offset & (cluster_size - 1)))
		return vs_error_set(err, -EINVAL,
				    "qcow2: snapshot table offset is not cluster aligned");
	if (h->l1_size > QCOW2_MAX_L1_SIZE / 8)
		return vs_error_set(err, -EFBIG, "qcow2: active L1 table too large (%u entries)",
				    h->l1_size);
	ret = qcow2_check_virtual_size(h->size, h->cluster_bits,
				       (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) != 0, err);
	if (ret < 0)
		return ret;
	if ((h->refcount_table_clusters == 0 && !(flags & QCOW2_HDR_FOR_CHECK)) ||
	    (uint64_t)h->refcount_table_clusters > QCOW2_MAX_REFTABLE_SIZE / cluster_size)
		return vs_error_set(err, -EINVAL,
				    "qcow2: invalid refcount table size (%u clusters)",
				    h->refcount_table_clusters);
	if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return vs_error_set(err, -EINVAL, "qcow2: too many snapshots (%u)",
				    h->nb_snapshots);
	return 0;
}

/*
 * For v3, bytes beyond the fields we know (112 .. header_length) are left
 * untouched in @buf, so a caller that rewrites a header it read keeps
 * fields from a newer spec byte for byte.
 */
void qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf)
{
	vs_put_be32(buf + HDR_MAGIC, QCOW2_MAGIC);
	vs_put_be32(buf + HDR_VERSION, h->version);
	hdr_fields_encode(hdr_fields_v2, HDR_NFIELDS(hdr_fields_v2), h, buf);
	if (h->version < 3)
		return;

	hdr_fields_encode(hdr_fields_v3, HDR_NFIELDS(hdr_fields_v3), h, buf);
	if (h->header_length > HDR_COMPRESSION_TYPE) {
		size_t end = h->header_length < HDR_END_COMPRESSION ? h->header_length :
								      HDR_END_COMPRESSION;

		buf[HDR_COMPRESSION_TYPE] = h->compression_type;
		memset(buf + HDR_COMPRESSION_TYPE + 1, 0, end - HDR_COMPRESSION_TYPE - 1);
	}
}
