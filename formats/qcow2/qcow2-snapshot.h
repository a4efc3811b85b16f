/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshots: the snapshot table (docs/interop/qcow2.txt,
 * "Snapshots").
 *
 * The table is hostile input: every length is bounded, every entry is read
 * through the protocol node with its position checked, and nothing in it is
 * trusted before it has been validated. Each entry keeps its extra data byte
 * for byte so that a later rewrite of the table (snapshot create/delete,
 * repair) loses nothing written by a newer implementation.
 */
#ifndef VSTOR_QCOW2_SNAPSHOT_H
#define VSTOR_QCOW2_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vstor/error.h"
#include "vstor/node.h"

#include "qcow2-format.h"

/* QEMU's limits: extra data per entry, and the whole table in bytes. */
#define QCOW2_MAX_SNAPSHOT_EXTRA_DATA 1024
#define QCOW2_MAX_SNAPSHOTS_SIZE (1024u * QCOW2_MAX_SNAPSHOTS)

/* Known extra data fields (offsets inside the extra data). */
#define QCOW2_SN_EXTRA_VM_STATE_SIZE 0 /* u64, "vm_state_size_large" */
#define QCOW2_SN_EXTRA_DISK_SIZE 8     /* u64 */
#define QCOW2_SN_EXTRA_ICOUNT 16       /* u64 */
#define QCOW2_SN_EXTRA_KNOWN 24	       /* bytes of known extra data */

struct qcow2_snapshot {
	uint64_t l1_table_offset;
	uint32_t l1_size; /* entries */
	char *id;	  /* id_len bytes from the file, NUL-terminated */
	uint16_t id_len;
	char *name; /* name_len bytes from the file, NUL-terminated */
	uint16_t name_len;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint32_t vm_state_size32; /* the 32-bit field as stored */
	uint64_t vm_state_size; /* effective: 64-bit extra field if present, else the 32-bit one */
	uint64_t disk_size;	/* from the extra data, else the image's virtual size */
	uint64_t icount;	/* UINT64_MAX when absent */
	/*
	 * The extra data exactly as stored (known fields included), so a
	 * rewrite keeps what a newer writer put there; NULL when empty.
	 * Bytes from QCOW2_SN_EXTRA_KNOWN on are the unknown extra data.
	 */
	uint8_t *extra;
	uint32_t extra_size;
};

/* Bytes of unknown extra data in @sn (past the fields this code knows). */
static inline uint32_t qcow2_snapshot_unknown_extra_size(const struct qcow2_snapshot *sn)
{
	return sn->extra_size > QCOW2_SN_EXTRA_KNOWN ? sn->extra_size - QCOW2_SN_EXTRA_KNOWN : 0;
}

/* The snapshot table of an image as read from the file. */
struct qcow2_snapshot_table {
	struct qcow2_snapshot *sn; /* nb entries */
	unsigned nb;
	uint64_t size;		  /* bytes the table occupies from its offset */
	unsigned nb_dropped;	  /* repair mode: entries cut off the end (table too big) */
	unsigned extra_truncated; /* repair mode: entries whose extra data was cut to the limit */
};

/* Flags of qcow2_snapshot_table_read(). */
#define QCOW2_SN_READ_REPAIR 0x1 /* cut what is too big instead of failing */
#define QCOW2_SN_READ_PAST_EOF \
	0x2 /* read past the end of the file as zeroes (as QEMU
				    * check does) instead of failing */

/*
 * Coroutine context. Read and validate the snapshot table of the image on
 * protocol node @file described by @h (nb_snapshots entries at
 * snapshots_offset; the table must lie inside the file, be cluster aligned
 * and within QEMU's limits). Snapshots' L1 tables are not judged here (see
 * qcow2_snapshot_check_l1()): QEMU opens images with a bad snapshot L1 and
 * only refuses to use that snapshot. On success stores a malloc'd array in
 * *@out (NULL when there are none) and its length in *@n; free it with
 * qcow2_snapshots_free(). Returns 0 or -errno with @err filled.
 */
int qcow2_snapshots_read(struct vs_node *file, const struct qcow2_header *h,
			 struct qcow2_snapshot **out, unsigned *n, struct vs_error *err);

/*
 * Coroutine context. The general reader behind qcow2_snapshots_read():
 * @flags are QCOW2_SN_READ_*. Fills @t; free with qcow2_snapshot_table_free().
 */
int qcow2_snapshot_table_read(struct vs_node *file, const struct qcow2_header *h, unsigned flags,
			      struct qcow2_snapshot_table *t, struct vs_error *err);

void qcow2_snapshots_free(struct qcow2_snapshot *sn, unsigned n);
void qcow2_snapshot_table_free(struct qcow2_snapshot_table *t);

/*
 * Whether @sn's L1 table can be used: cluster aligned, at most QEMU's L1
 * limit, inside @file_size. Returns 0 or -EINVAL/-EFBIG with @err filled.
 */
int qcow2_snapshot_check_l1(const struct qcow2_header *h, const struct qcow2_snapshot *sn,
			    uint64_t file_size, struct vs_error *err);

/*
 * Writing back: the size in bytes of the table qcow2_snapshots_encode()
 * produces for @sn[0..@n). Every entry carries at least the 24 bytes of
 * known extra data (v3 requires 16); unknown extra data is copied unchanged.
 * The caller refuses a result above QCOW2_MAX_SNAPSHOTS_SIZE.
 */
uint64_t qcow2_snapshots_encoded_size(const struct qcow2_snapshot *sn, unsigned n);
/* Encode into @buf (qcow2_snapshots_encoded_size() bytes, zeroed by the caller). */
void qcow2_snapshots_encode(const struct qcow2_snapshot *sn, unsigned n, uint8_t *buf);

/* Fill @info (for "info") from @sn; id and name are cut to the info's limits. */
void qcow2_snapshot_to_info(const struct qcow2_snapshot *sn, struct vs_snapshot_info *info);

#endif
