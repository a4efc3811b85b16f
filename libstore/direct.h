/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The direct data path (direct.c): reads and writes that reach the file
 * from another reactor than the node graph's home, without the drivers.
 *
 * A node graph has one home reactor: its drivers, caches and metadata keep
 * one thread. What another reactor may do on its own is plain data I/O on
 * bytes whose place in a file is fixed: a raw image's, a qcow2 image's
 * allocated clusters that are not shared with a snapshot (COPIED). The home
 * maps them (vs_direct_fill) into a window, a read-only table of where each
 * granule (a cluster, or 1 MiB of a raw image) of a range of the top node
 * lies; the other reactor keeps the window and does the I/O itself.
 *
 * A window is good while the domain's generation is the one it was made at.
 * Whatever could move a mapped byte or must see every write (a discard or
 * write-zeroes, a compressed write, a resize, a snapshot, amend, compact,
 * persistent or in-memory bitmaps, a before-write hook, a drain, closing a
 * node) runs inside vs_node_direct_change_begin/end on some node of the
 * mapped path: the change bumps the generation of every domain that maps
 * through the node and waits, through the domain's revoke callback, until
 * the other reactors have no direct I/O left that started under an older
 * one; no window maps through the node until the change ends. So a direct request never writes to a cluster that was
 * freed, zeroed or shared, and never misses a bitmap or a copy-before-write.
 */
#ifndef VSTOR_DIRECT_H
#define VSTOR_DIRECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "driver.h"

/* Granules of a window; nodes a domain may map through. */
#define VS_DIRECT_WIN_ENTRIES 4096
#define VS_DIRECT_MAX_NODES 8
#define VS_DIRECT_MAX_DEPTH 4
#define VS_DIRECT_MAX_PATHS 2	 /* a qcow2 image's file and its data file */
#define VS_DIRECT_MAX_DOMAINS 16 /* exports with ports of one node */

/* Where mapped bytes go: a file descriptor and what I/O on it must respect. */
struct vs_direct_path {
	int fd;
	uint32_t request_align; /* offsets and lengths (O_DIRECT) */
	uint32_t mem_align;	/* buffers */
	bool fua;	   /* FUA may be sent as RWF_DSYNC (every driver on the way takes FUA) */
	bool writethrough; /* a node on the way makes every write FUA */
	const atomic_bool *fence[VS_DIRECT_MAX_DEPTH]; /* write fences on the way */
};

struct vs_direct_entry {
	uint64_t host; /* file offset of the granule's first byte */
	uint32_t len;  /* mapped bytes from it (a granule, or less at the end); 0: not mapped */
	uint8_t path;
};

/* A window: made at home, read-only after, owned by the reactor that asked. */
struct vs_direct_win {
	uint64_t index; /* covers [index * span, (index + 1) * span) of the top node */
	unsigned gen;
	bool writable;
	unsigned granule_bits;
	unsigned npaths;
	struct vs_direct_path path[VS_DIRECT_MAX_PATHS];
	struct vs_direct_entry e[VS_DIRECT_WIN_ENTRIES];
};

/* A few granules mapped again for a window (vs_direct_patch), after a request went home. */
#define VS_DIRECT_PATCH_ENTRIES 16
struct vs_direct_patch {
	unsigned gen;
	unsigned granule_bits;
	uint64_t first; /* granule index in the top node */
	unsigned n;
	bool writable;
	unsigned npaths;
	struct vs_direct_path path[VS_DIRECT_MAX_PATHS];
	struct vs_direct_entry e[VS_DIRECT_PATCH_ENTRIES];
};

struct vs_direct;

/*
 * Called at home by the first change (coroutine context), after the
 * generation moved on: return once no direct I/O that began under the old
 * one is left (the export quiesces its ports).
 */
typedef void vs_direct_revoke_fn(void *opaque);

/* Home. A domain over @top; NULL on ENOMEM. */
struct vs_direct *vs_direct_new(struct vs_node *top, vs_direct_revoke_fn *revoke, void *opaque);
/* Home. Unregister from every node and drop it (no I/O may use its windows any more). */
void vs_direct_free(struct vs_direct *d);
/* Home, inside a change (a drain): map @top from now on (a pivot). */
void vs_direct_set_top(struct vs_direct *d, struct vs_node *top);

/* The current generation (any thread). */
unsigned vs_direct_gen(const struct vs_direct *d);

/* log2 of the bytes a window covers (any thread). */
unsigned vs_direct_win_bits(const struct vs_direct *d);

/*
 * Home, coroutine context. A window around @offset of the top node (malloc'd,
 * the caller's to free), or NULL when nothing could be mapped now (a change
 * is running, or the generation moved while mapping). @writable: the caller
 * may write; the window's writable says whether every node on the way does.
 */
struct vs_direct_win *vs_direct_fill(struct vs_direct *d, uint64_t offset, bool writable);

/*
 * Home, coroutine context. Map the granules of [offset, offset+len) again
 * into @p (at most VS_DIRECT_PATCH_ENTRIES, in one window): true, or false
 * when it cannot now. A request that went home for unmapped granules (an
 * allocating write) brings them back so, instead of a whole window.
 */
bool vs_direct_patch(struct vs_direct *d, uint64_t offset, uint64_t len, bool writable,
		     struct vs_direct_patch *p);
/* The port's reactor: apply @p to its window @w if both are of one generation. */
void vs_direct_win_patch(struct vs_direct_win *w, const struct vs_direct_patch *p);

/*
 * Home, coroutine context: around anything on @n that could move a mapped
 * byte or must see every write (see above). Nest; a no-op when no domain
 * maps through @n. vs_direct_change_begin/end do the same for one domain
 * (export-level changes: a drain, a stop, a throttle).
 */
void vs_node_direct_change_begin(struct vs_node *n);
void vs_node_direct_change_end(struct vs_node *n);
void vs_direct_change_begin(struct vs_direct *d);
void vs_direct_change_end(struct vs_direct *d);
/* vs_node_close(): forget @n (its domains are revoked first). */
void vs_node_direct_forget(struct vs_node *n);

#endif
