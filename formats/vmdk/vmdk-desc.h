/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vmdk descriptor: the text that names a disk's extents and its
 * parent, either a file of its own (monolithicFlat, twoGbMaxExtent*) or
 * embedded in a sparse extent (monolithicSparse, streamOptimized). A pure
 * parser over untrusted text, fuzzed alone.
 */
#ifndef VSTOR_VMDK_DESC_H
#define VSTOR_VMDK_DESC_H

#include "vstor/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many extents and bytes of descriptor text. */
#define VMDK_DESC_MAX_EXTENTS 4096
#define VMDK_DESC_MAX_LEN (1u << 20)

enum vmdk_extent_type {
	VMDK_EXTENT_FLAT, /* FLAT, VMFS: the bytes in a file, from an offset */
	VMDK_EXTENT_SPARSE,
	VMDK_EXTENT_ZERO,
};

struct vmdk_desc_extent {
	enum vmdk_extent_type type;
	uint64_t sectors;
	uint64_t offset; /* FLAT: first sector in the file */
	char *filename;
};

struct vmdk_desc {
	int version;
	uint32_t cid;
	uint32_t parent_cid;
	char create_type[64];
	char *parent_hint; /* parentFileNameHint, or NULL */
	unsigned nb_extents;
	struct vmdk_desc_extent *extents;
};

/*
 * Parse @len bytes of @text (not NUL-terminated; stops at the first NUL).
 * Extent types vstor cannot read (VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW,
 * ...) fail with -ENOTSUP and a message naming them; other errors -EINVAL.
 * On success free @d with vmdk_desc_free().
 */
int vmdk_desc_parse(const char *text, size_t len, struct vmdk_desc *d, struct vs_error *err);
void vmdk_desc_free(struct vmdk_desc *d);

/* Whether @buf starts like a descriptor (the format probe): 100 or 0. */
int vmdk_desc_probe(const uint8_t *buf, size_t len);

#endif
