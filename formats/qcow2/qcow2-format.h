/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 on-disk layout (QEMU's docs/interop/qcow2.txt), shared by the qcow2
 * driver and its check/repair code. All on-disk integers are big-endian;
 * struct qcow2_header holds them decoded in host order.
 */
#ifndef VSTOR_QCOW2_FORMAT_H
#define VSTOR_QCOW2_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"

#include "vstor/error.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_REFCOUNT_ORDER 6
#define QCOW2_V2_HEADER_SIZE 72
#define QCOW2_V3_HEADER_SIZE 104	      /* up to and including compression_type + padding */
#define QCOW2_MAX_L1_SIZE (32u * 1024 * 1024) /* bytes, QEMU's limit */
#define QCOW2_MAX_REFTABLE_SIZE (8u * 1024 * 1024) /* bytes, QEMU's limit */
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_BACKING_NAME 1023
/* The longest external data file name (header extension) this driver opens. */
#define QCOW2_MAX_DATA_FILE_NAME 4095

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN                                                        \
	(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE | \
	 QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)
/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
#define QCOW2_AUTOCLEAR_KNOWN (QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_FILE_RAW)

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* Header extension types. */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* crypt_method values. */
#define QCOW2_CRYPT_AES 1
#define QCOW2_CRYPT_LUKS 2

/* L1 / L2 / refcount table entries. */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0) /* standard L2 entry, v3 */
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull
/* L1 entry reserved bits: 1-8 and 56-62 must be zero. */
#define QCOW2_L1E_RESERVED_MASK 0x7f000000000001feull
/* Standard L2 entry reserved bits: 1-8 and 56-61 must be zero. */
#define QCOW2_L2E_RESERVED_MASK 0x3f000000000001feull

/* Extended L2: 32 subclusters; bitmap word: low 32 bits allocated, high 32 zero. */
#define QCOW2_SUBCLUSTERS 32

/*
 * Compressed cluster descriptor (bits 0..61 of the L2 entry):
 *   x = 62 - (cluster_bits - 8)
 *   host offset = bits 0..x-1
 *   additional 512-byte sectors = bits x..61 (total size = (n + 1) * 512
 *   minus the offset within the first sector)
 */
static inline unsigned qcow2_csize_shift(unsigned cluster_bits)
{
	return 62 - (cluster_bits - 8);
}

/* Snapshot table entry fixed part (40 bytes) plus extra data. */
#define QCOW2_SNAPSHOT_FIXED_SIZE 40
#define QCOW2_SNAPSHOT_EXTRA_V3 16 /* vm_state_size_large + disk_size */
#define QCOW2_SNAPSHOT_EXTRA_ICOUNT 24

/* Bitmaps extension, directory entries and bitmap tables; QEMU's limits. */
#define QCOW2_MAX_BITMAPS 65535
#define QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1024u * QCOW2_MAX_BITMAPS)
#define QCOW2_BITMAPS_EXT_SIZE 24
#define QCOW2_BME_MAX_TABLE_SIZE 0x8000000u
#define QCOW2_BME_MAX_PHYS_SIZE 0x20000000u
#define QCOW2_BME_MIN_GRANULARITY_BITS 9
#define QCOW2_BME_MAX_GRANULARITY_BITS 31
#define QCOW2_BME_MAX_NAME_SIZE 1023
#define QCOW2_BME_FLAG_IN_USE (1u << 0)
#define QCOW2_BME_FLAG_AUTO (1u << 1)
#define QCOW2_BME_FLAG_EXTRA_DATA_COMPATIBLE (1u << 2)
#define QCOW2_BME_RESERVED_FLAGS (~7u)
#define QCOW2_BME_TYPE_DIRTY_TRACKING 1
#define QCOW2_BME_ENTRY_FIXED_SIZE 24
#define QCOW2_BME_TABLE_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_BME_TABLE_ALL_ONES 1ull
#define QCOW2_BME_TABLE_RESERVED_MASK 0xff000000000001feull

/* The decoded header. */
struct qcow2_header {
	uint32_t magic;
	uint32_t version; /* 2 or 3 */
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size; /* virtual disk size */
	uint32_t crypt_method;
	uint32_t l1_size; /* entries */
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	/* version 3 (defaults for v2: 0, 0, 0, 4, 72) */
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
};

/*
 * Decode and validate the fixed header in @buf (@len bytes read from offset
 * 0, at least the first cluster or the whole file if shorter). Checks magic,
 * version, cluster_bits, refcount_order, header_length, that the table
 * offsets are cluster aligned and that the virtual size is one qemu can
 * address (qcow2_check_virtual_size). Does not judge feature bits (the
 * caller decides what it can handle). Returns 0 or -EINVAL/-ENOTSUP/-EFBIG
 * with @err. Implemented in qcow2-format.c.
 */
int qcow2_header_decode(const uint8_t *buf, size_t len, struct qcow2_header *h,
			struct vs_error *err);

/*
 * As qcow2_header_decode(); with QCOW2_HDR_FOR_CHECK, a missing refcount
 * table (offset or size 0) is accepted, as QEMU accepts it when opening an
 * image to check it: the check then rebuilds the refcounts.
 */
#define QCOW2_HDR_FOR_CHECK 0x1
int qcow2_header_decode_flags(const uint8_t *buf, size_t len, struct qcow2_header *h,
			      unsigned flags, struct vs_error *err);

/*
 * Whether an image of @size bytes with 2^@cluster_bits-byte clusters (and
 * extended L2 entries when @extl2) is addressable, by qemu's rules: at most
 * VS_NODE_MAX_SIZE, and an L1 table index that fits an int. Returns 0 or
 * -EFBIG with @err. Implemented in qcow2-format.c.
 */
int qcow2_check_virtual_size(uint64_t size, unsigned cluster_bits, bool extl2,
			     struct vs_error *err);

/* Encode @h into @buf (header_length bytes; v2: 72). Implemented in qcow2-format.c. */
void qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf);

#endif
