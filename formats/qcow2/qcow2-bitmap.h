/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 persistent dirty bitmaps (QEMU's "Bitmaps extension"): the header
 * extension, the bitmap directory, the bitmap tables, and the in-memory
 * bitmaps that writes mark while the image is open read-write.
 */
#ifndef VSTOR_QCOW2_BITMAP_H
#define VSTOR_QCOW2_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "qcow2-format.h"

#include "vstor/error.h"
#include "vstor/node.h"

struct qcow2_bitmap {
	char name[QCOW2_BME_MAX_NAME_SIZE + 1];
	unsigned gran_bits;
	uint32_t flags;	       /* as the directory will be written (IN_USE, AUTO) */
	uint64_t table_offset; /* on disk now; 0 for a bitmap not written yet */
	uint32_t table_size;   /* entries */
	bool inconsistent;     /* in_use when found: never used as valid, kept as is */
	bool transient;	       /* in memory only (persistent=false): never written */
	uint8_t *data; /* the bits in disk order (bit i: byte i/8, bit i%8); NULL: not loaded */
	uint64_t nbits;
};

/* The bitmaps of an open image (a member of struct qcow2_state). */
struct qcow2_bitmaps {
	/* The extension as on disk (nb == 0: none). */
	uint32_t ext_nb;
	uint64_t ext_dir_size, ext_dir_offset;
	bool ext_ignored; /* present without the autoclear bit: stale, dropped on a rewrite */

	struct qcow2_bitmap *bm;
	unsigned nb;
	/* Bitmaps marked in_use on disk by this open: written back on close. */
	bool owned;
	/* Bitmaps that track writes (enabled and loaded): the hot path tests this first. */
	unsigned nb_tracking;
	/* Tables on disk when the bitmaps were owned, freed once the new ones are stored. */
	struct {
		uint64_t offset;
		uint32_t size;
	} * old;
	unsigned nb_old;
	uint64_t old_dir_offset, old_dir_size;
};

struct vs_node;

/* Decode the header extension's @len bytes at @data (open). */
int qcow2_bitmaps_parse_ext(struct vs_node *node, const uint8_t *data, uint32_t len,
			    struct vs_error *err);
/*
 * After the metadata is loaded: read the directory and, with @load, every
 * consistent bitmap (a broken table fails the open, as in QEMU; a check
 * opens without @load to report it); opened read-write (@own), also mark
 * all in_use on disk.
 */
int qcow2_bitmaps_load(struct vs_node *node, bool own, bool load, struct vs_error *err);
/* Lock held, close: write the bitmaps back with in_use cleared and free the old tables. */
int qcow2_bitmaps_store(struct vs_node *node);
/*
 * Lock held: take the bitmaps off the disk (extension, directory, tables
 * freed) and keep them in memory only, to be stored again on close. For
 * operations that rebuild the image's clusters (compact). A crash before
 * the close loses them, which no backup takes for a valid bitmap.
 */
int qcow2_bitmaps_release(struct vs_node *node);
void qcow2_bitmaps_free(struct qcow2_bitmaps *b);
/* The data path: set the bits of every enabled bitmap covering [@offset, @offset + @len). */
void qcow2_bitmaps_mark(struct qcow2_bitmaps *b, uint64_t offset, uint64_t len);
/* Resize the in-memory bitmaps to @size bytes of disk (truncate). */
int qcow2_bitmaps_resize(struct vs_node *node, uint64_t size);
/* The driver's bitmap operation (qemu-img bitmap). */
int qcow2_bitmap_op(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err);
/* The bitmaps of the image, persistent or not, newest first (vs_node_dirty_bitmaps). */
int qcow2_bitmaps_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb);
/* The state of bitmap @name at @offset and how long it lasts (vs_node_bitmap_status). */
int qcow2_bitmap_status(struct vs_node *node, const char *name, uint64_t offset, uint64_t len,
			bool *dirty, uint64_t *run);
/* Fill info->bitmaps (the persistent ones). */
int qcow2_bitmaps_info(struct vs_node *node, struct vs_image_info *info);
/* The extension to write in the header cluster: 0 = none, else its 24 data bytes in @out. */
unsigned qcow2_bitmaps_ext_encode(const struct qcow2_bitmaps *b, uint8_t *out);

#endif
