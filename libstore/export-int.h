/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Exports inside libstore: the state export.c and export-port.c share.
 */
#ifndef VSTOR_EXPORT_INT_H
#define VSTOR_EXPORT_INT_H

#include "vstor/export.h"
#include "vstor/reactor.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct vs_direct;

struct vs_export {
	char *name;
	struct vs_node *node;
	uint64_t size; /* what clients see: the node's size rounded down to block_size */
	uint32_t block_size;
	bool read_only;
	bool writethrough;
	enum vs_export_discard discard;
	enum vs_export_detect_zeroes detect_zeroes;
	struct vs_export_hooks hooks;
	struct vs_export_stats stats;
	struct vs_throttle_group *throttle; /* a reference, or NULL */
	unsigned throttle_epoch;	    /* changed: requests waiting in the group go */
	struct vs_export_error_policy policy;
	/*
	 * vs_export_drain_begin(): requests wait at the entry (@held) while
	 * @quiesced (drains nest: a count); an error under a stop policy holds them there while
	 * @stopped, the failed ones too (out of @active).
	 */
	unsigned active;
	unsigned quiesced;
	bool stopped;
	struct vs_co_queue held;
	struct vs_co_queue drained;
	/* The direct path of its ports (export-port.c): NULL until the first port. */
	struct vs_direct *direct;
	struct vs_export_port *ports;
};

static inline uint64_t vs_export_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Bucket i holds [2^i, 2^(i+1)) µs; below 1 µs is bucket 0, the last takes the rest. */
static inline unsigned vs_export_latency_bucket(uint64_t ns)
{
	uint64_t us = ns / 1000;
	unsigned b = us ? 63u - (unsigned)__builtin_clzll(us) : 0;

	return b < VS_EXPORT_LATENCY_BUCKETS ? b : VS_EXPORT_LATENCY_BUCKETS - 1;
}

/* export-port.c: what ports add to the export's statistics; revoke their windows. */
void vs_export_ports_add_stats(const struct vs_export *e, struct vs_export_stats *st);
void vs_export_direct_revoke(struct vs_export *e);

#endif
