/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * I/O throttling: a throttle group is a budget of bytes and operations per
 * second that one or more exports share (vs_export_set_throttle()). Its
 * semantics are QEMU's throttle groups: six leaky buckets (bytes and
 * operations; total, read, write), each with an average rate, an optional
 * burst rate and the seconds the burst may last; without a burst rate a
 * tenth of a second of the average may pass at once.
 *
 * A request that the budget cannot take waits in a FIFO queue (one for
 * reads, one for writes) of its group; the head of each queue waits on a
 * reactor timer, the others behind it. Nothing sleeps on the thread and
 * nothing polls. A group belongs to one reactor (its exports' home).
 */
#ifndef VSTOR_THROTTLE_H
#define VSTOR_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

#include "vstor/error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum vs_throttle_bucket {
	VS_THROTTLE_BPS_TOTAL,
	VS_THROTTLE_BPS_READ,
	VS_THROTTLE_BPS_WRITE,
	VS_THROTTLE_IOPS_TOTAL,
	VS_THROTTLE_IOPS_READ,
	VS_THROTTLE_IOPS_WRITE,
	VS_THROTTLE_BUCKET_COUNT
};

/* The largest rate a limit may name (QEMU's bound). */
#define VS_THROTTLE_VALUE_MAX 1000000000000000ull

struct vs_throttle_limit {
	uint64_t avg;	       /* units per second; 0: no limit */
	uint64_t max;	       /* burst rate; 0: none */
	uint64_t burst_length; /* seconds the burst may last; at least 1 */
};

struct vs_throttle_config {
	struct vs_throttle_limit limit[VS_THROTTLE_BUCKET_COUNT];
	/* Operations larger than this count as size / iops_size operations; 0: off. */
	uint64_t iops_size;
};

/* No limits, burst lengths 1. */
void vs_throttle_config_init(struct vs_throttle_config *cfg);

/* Whether @cfg limits anything (some average rate is set). */
bool vs_throttle_config_enabled(const struct vs_throttle_config *cfg);

/*
 * Check @cfg with QEMU's rules and messages (total and read/write limits
 * not both, burst rate not below the average, ...). 0 or -EINVAL with @err.
 */
int vs_throttle_config_check(const struct vs_throttle_config *cfg, struct vs_error *err);

/*
 * The name of @b as QEMU's throttle-group "limits" spell it ("bps-total",
 * "iops-read", ...); NULL for an unknown bucket.
 */
const char *vs_throttle_bucket_name(enum vs_throttle_bucket b);

struct vs_throttle_group;

/* A group without limits, one reference held by the caller. 0 or -ENOMEM. */
int vs_throttle_group_new(struct vs_throttle_group **out);
struct vs_throttle_group *vs_throttle_group_ref(struct vs_throttle_group *g);
/* Drop a reference; the last one frees the group. NULL is a no-op. */
void vs_throttle_group_unref(struct vs_throttle_group *g);

/*
 * Replace the limits of @g (checked first: 0 or -EINVAL with @err, nothing
 * changed). The buckets start empty and requests waiting in the group
 * re-evaluate at once under the new limits.
 */
int vs_throttle_group_set_config(struct vs_throttle_group *g, const struct vs_throttle_config *cfg,
				 struct vs_error *err);
void vs_throttle_group_get_config(const struct vs_throttle_group *g,
				  struct vs_throttle_config *cfg);

/*
 * Coroutine context, on the group's reactor. Wait until the budget of @g
 * takes a read (@write false) or write of @bytes, in FIFO order with the
 * other requests of that direction, then account it. @epoch (may be NULL)
 * lets the owner release the request: once *@epoch differs from its value
 * at the call, vs_throttle_group_kick() ends the wait at once, without
 * accounting (a drain, an export leaving the group).
 */
void vs_throttle_group_wait(struct vs_throttle_group *g, bool write, uint64_t bytes,
			    const unsigned *epoch);

/* Release the requests waiting in @g whose epoch has changed (see above). */
void vs_throttle_group_kick(struct vs_throttle_group *g);

#ifdef __cplusplus
}
#endif

#endif
