/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The writes an NFSv3 client must be able to send again (RFC 1813 3.3.7 and
 * 3.3.21): data written UNSTABLE is only safe once a COMMIT returns the same
 * write verifier as the WRITE did. A different verifier means the server
 * restarted in between and may have lost the data, which the client then
 * has to write again, so it keeps a copy until then.
 *
 * The list holds one entry per write, in the order the writes were issued,
 * with a copy of the data. Pure bookkeeping (no RPC here): the nfs driver
 * sends the WRITEs and COMMITs; tests/unit/libstore/test-nfs-wlist.c checks
 * the rules below on their own.
 *
 * The rule that keeps a resend from undoing a newer write: an entry leaves
 * the list only when every entry that completed before it was issued has
 * left too, i.e. (a) a COMMIT with a matching verifier drops every entry
 * that had completed when it was sent, and (b) a write that completed stable
 * (FILE_SYNC, or a server that made an UNSTABLE write stable) is dropped at
 * once only when no completed entry is left in the list. So every entry in
 * the list is newer than, or concurrent with, anything that has left it,
 * and writing the whole list again in order (or laying it over the data a
 * READ returned) never puts older data over newer.
 */
#ifndef VS_NFS_WLIST_H
#define VS_NFS_WLIST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define VS_NFS_VERF_SIZE 8

enum vs_nfs_wb_state {
	VS_NFS_WB_INFLIGHT, /* WRITE sent, no reply yet */
	VS_NFS_WB_UNSTABLE, /* written UNSTABLE under verf, not committed */
	VS_NFS_WB_STABLE,   /* the server answered FILE_SYNC or DATA_SYNC */
};

struct vs_nfs_wb {
	struct vs_nfs_wb *prev, *next;
	uint64_t offset;
	uint64_t len;
	uint64_t cap; /* bytes data[] can hold (a reused buffer may be larger) */
	enum vs_nfs_wb_state state;
	bool in_commit; /* completed when the COMMIT in progress was sent */
	unsigned span;	/* its slot in vs_nfs_wlist.spans */
	uint8_t verf[VS_NFS_VERF_SIZE];
	uint8_t data[];
};

/*
 * The ranges of the entries, in list order, in one array: a READ looks for
 * overlaps there without touching every entry (each one sits in its own
 * allocation with its data). Slots of freed entries are emptied and the
 * array is compacted once they are half of it.
 */
struct vs_nfs_wspan {
	uint64_t offset, end;
	struct vs_nfs_wb *wb; /* NULL: a freed entry's slot */
};

struct vs_nfs_wlist {
	struct vs_nfs_wb *head, *tail;
	struct vs_nfs_wspan *spans;
	unsigned nspans, spans_cap, dead_spans;
	uint64_t bytes;	    /* data held by all entries */
	unsigned count;	    /* entries */
	unsigned completed; /* entries UNSTABLE or STABLE */
	unsigned unstable;  /* entries UNSTABLE */
	uint64_t lo, hi;    /* every entry lies within [lo, hi) */
	/*
	 * Large freed entries kept for reuse (up to spare_max bytes, 0: none):
	 * allocating and freeing a fresh mapping per 1 MiB write cost five
	 * times the copy itself.
	 */
	struct vs_nfs_wb *spare;
	uint64_t spare_bytes, spare_max;
};

/* An empty list (zero-initialised is one too). */
void vs_nfs_wlist_init(struct vs_nfs_wlist *l);

/* Drop every entry and free the list's memory (the node closes). */
void vs_nfs_wlist_clear(struct vs_nfs_wlist *l);

/* Free the buffers kept for reuse (after a flush: the writer may be idle now). */
void vs_nfs_wlist_drop_spares(struct vs_nfs_wlist *l);

/*
 * A write of @len bytes at @offset is about to be sent: append an INFLIGHT
 * entry with a copy of the first @len bytes of @iov. NULL if out of memory.
 */
struct vs_nfs_wb *vs_nfs_wlist_add(struct vs_nfs_wlist *l, uint64_t offset, const struct iovec *iov,
				   int niov, uint64_t len);

/* The WRITE of @wb failed: the entry goes (the caller reports the error). */
void vs_nfs_wlist_remove(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb);

/*
 * The WRITE of @wb (INFLIGHT) succeeded: @stable if the server made it
 * stable, else it is UNSTABLE under @verf. A stable entry is dropped at once
 * when no other completed entry is in the list. Returns true if @wb was
 * freed.
 */
bool vs_nfs_wlist_complete(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb, bool stable,
			   const uint8_t *verf);

/* @wb (completed) was written again: it is now @stable, or UNSTABLE under @verf. */
void vs_nfs_wlist_rewritten(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb, bool stable,
			    const uint8_t *verf);

/*
 * A COMMIT is about to be sent: mark every completed entry as covered by it.
 * Returns how many of them are UNSTABLE; when none is, the marked (stable)
 * entries are dropped at once and no COMMIT is needed.
 */
unsigned vs_nfs_wlist_commit_begin(struct vs_nfs_wlist *l);

/*
 * The COMMIT returned @verf (NULL: it failed; the marks are cleared and
 * nothing is dropped). If every marked UNSTABLE entry was written under
 * @verf, the marked entries are dropped and 0 is returned. Otherwise
 * nothing is dropped and the number of marked entries whose verifier
 * differs is returned: the server may have lost them, and the caller must
 * write the whole list again (in order) and COMMIT again.
 */
unsigned vs_nfs_wlist_commit_end(struct vs_nfs_wlist *l, const uint8_t *verf);

/*
 * Lay the data of the completed entries that overlap [offset, offset +
 * len) over @iov (which holds what a READ of that range returned), oldest
 * first: what the client wrote wins over what a restarted server may have
 * lost.
 */
void vs_nfs_wlist_overlay(const struct vs_nfs_wlist *l, uint64_t offset, uint64_t len,
			  const struct iovec *iov, int niov);

#endif
