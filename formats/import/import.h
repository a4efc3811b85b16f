/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the read-only import formats (vpc, vdi, vmdk, vhdx, qcow) share: the
 * data path over a map of runs, clamped reads of tables from the file, a
 * small cache of second-level tables, the refusals of what vstor does not
 * write, and the backing file's name in info.
 *
 * Each driver answers one question, imp_lookup: what backs the guest bytes
 * at @offset, for how long. The shared submit turns the answers into reads
 * (from the file, zeroes, the backing node, or the driver's decompressor)
 * and block status.
 */
#ifndef VSTOR_FORMATS_IMPORT_H
#define VSTOR_FORMATS_IMPORT_H

#include "driver.h"

#include <stdbool.h>
#include <stdint.h>

enum imp_kind {
	IMP_DATA,	 /* stored at run.file_offset of run.file */
	IMP_ZERO,	 /* reads as zeroes; this layer decides */
	IMP_UNALLOCATED, /* the backing node decides (zeroes without one) */
	IMP_COMPRESSED,	 /* the driver's read_compressed */
};

struct imp_run {
	enum imp_kind kind;
	uint64_t len; /* > 0, no more than asked */
	struct vs_node *file;
	uint64_t file_offset;
	/* IMP_DATA: ask the file whether the bytes are a hole (preallocated images). */
	bool recurse;
};

struct imp_ops {
	/* Coroutine context: the run at @offset (< node size), at most @len bytes; *@run comes zeroed. */
	int (*lookup)(struct vs_node *node, uint64_t offset, uint64_t len, struct imp_run *run);
	/*
	 * Optional: copy the guest bytes [offset, offset+len) of an IMP_COMPRESSED
	 * run into @buf.
	 */
	int (*read_compressed)(struct vs_node *node, const struct imp_run *run, uint64_t offset,
			       uint64_t len, uint8_t *buf);
};

/* The data path of an import driver: reads and block status; -EROFS for the rest. */
int imp_submit(struct vs_node *node, struct vs_req *req, const struct imp_ops *ops);

/*
 * Open checks every import driver makes: -EROFS for a writable open (the
 * message says to convert), -ENOTSUP for an internal snapshot.
 */
int imp_open_check(struct vs_node *node, const struct vs_open_opts *opts, const char *format,
		   struct vs_error *err);

/* The create callback's refusal (vstor-img create -f FORMAT, convert -O FORMAT). */
int imp_refuse_create(const char *format, struct vs_error *err);

/* Limits and capabilities of a node that reads through @node->file. */
void imp_set_limits(struct vs_node *node, bool block_status);

/*
 * Coroutine context: read [off, off+len) of @file into @buf; what lies past
 * the end of the file reads as zeroes (a truncated image).
 */
int imp_pread(struct vs_node *file, uint64_t off, void *buf, size_t len);

/*
 * Read a table of @len bytes at @off that must lie inside @file (@what names
 * it in the error). *@out is malloc'd (vs_buf_alloc).
 */
int imp_read_table(struct vs_node *file, uint64_t off, uint64_t len, const char *what, void **out,
		   struct vs_error *err);

/* The backing file name and cluster size in info (get_info helpers). */
int imp_info_backing(struct vs_node *node, struct vs_image_info *info);

/*
 * A cache of second-level tables (vmdk grain tables, qcow L2 tables) of
 * @table_size bytes each, keyed by file offset.
 */
#define IMP_CACHE_SLOTS 16
struct imp_table_cache {
	size_t table_size;
	unsigned next;
	uint64_t key[IMP_CACHE_SLOTS];
	struct vs_node *file[IMP_CACHE_SLOTS];
	uint8_t *data[IMP_CACHE_SLOTS];
};
int imp_cache_init(struct imp_table_cache *c, size_t table_size);
void imp_cache_free(struct imp_table_cache *c);
/* Coroutine context: the table at @off of @file (borrowed until the next call). */
int imp_cache_get(struct imp_table_cache *c, struct vs_node *file, uint64_t off,
		  const uint8_t **out);

/* CRC-32C (Castagnoli), as VHDX checksums its headers and regions. */
uint32_t imp_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
