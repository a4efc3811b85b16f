/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bookkeeping of NFSv3 writes not yet known to be stable: see nfs-wlist.h. */
#include "nfs-wlist.h"

#include <stdlib.h>
#include <string.h>

/* Smaller buffers come from malloc's heap cheaply: not worth keeping. */
#define SPARE_MIN (64u << 10)

void vs_nfs_wlist_init(struct vs_nfs_wlist *l)
{
	memset(l, 0, sizeof(*l));
}

/* Drop the empty slots of spans, keeping the order. */
static void spans_compact(struct vs_nfs_wlist *l)
{
	unsigned j = 0;

	for (unsigned i = 0; i < l->nspans; i++) {
		if (!l->spans[i].wb)
			continue;
		l->spans[j] = l->spans[i];
		l->spans[j].wb->span = j;
		j++;
	}
	l->nspans = j;
	l->dead_spans = 0;
}

static void wb_free(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb)
{
	l->spans[wb->span] = (struct vs_nfs_wspan){ 0, 0, NULL };
	l->dead_spans++;
	if (wb->prev)
		wb->prev->next = wb->next;
	else
		l->head = wb->next;
	if (wb->next)
		wb->next->prev = wb->prev;
	else
		l->tail = wb->prev;
	if (wb->state != VS_NFS_WB_INFLIGHT)
		l->completed--;
	if (wb->state == VS_NFS_WB_UNSTABLE)
		l->unstable--;
	l->bytes -= wb->len;
	l->count--;
	if (!l->count) {
		l->lo = l->hi = 0;
		l->nspans = l->dead_spans = 0;
	} else if (l->dead_spans >= 64 && l->dead_spans * 2 >= l->nspans) {
		spans_compact(l);
	}
	if (wb->cap >= SPARE_MIN && l->spare_bytes + wb->cap <= l->spare_max) {
		wb->next = l->spare;
		l->spare = wb;
		l->spare_bytes += wb->cap;
	} else {
		free(wb);
	}
}

void vs_nfs_wlist_drop_spares(struct vs_nfs_wlist *l)
{
	while (l->spare) {
		struct vs_nfs_wb *wb = l->spare;

		l->spare = wb->next;
		free(wb);
	}
	l->spare_bytes = 0;
}

/* A buffer for @len bytes of data: a spare that fits, else a new one. */
static struct vs_nfs_wb *wb_alloc(struct vs_nfs_wlist *l, uint64_t len)
{
	struct vs_nfs_wb *wb;

	for (struct vs_nfs_wb **pp = &l->spare; *pp; pp = &(*pp)->next) {
		wb = *pp;
		if (wb->cap >= len && wb->cap / 2 <= len) {
			*pp = wb->next;
			l->spare_bytes -= wb->cap;
			return wb;
		}
	}
	wb = malloc(sizeof(*wb) + (len ? len : 1));
	if (wb)
		wb->cap = len;
	return wb;
}

void vs_nfs_wlist_clear(struct vs_nfs_wlist *l)
{
	while (l->head)
		wb_free(l, l->head);
	vs_nfs_wlist_drop_spares(l);
	free(l->spans);
	l->spans = NULL;
	l->nspans = l->spans_cap = l->dead_spans = 0;
}

struct vs_nfs_wb *vs_nfs_wlist_add(struct vs_nfs_wlist *l, uint64_t offset, const struct iovec *iov,
				   int niov, uint64_t len)
{
	struct vs_nfs_wb *wb = wb_alloc(l, len);
	uint64_t left = len, cap;
	uint8_t *p;

	if (!wb)
		return NULL;
	if (l->nspans == l->spans_cap) {
		unsigned n = l->spans_cap ? 2 * l->spans_cap : 64;
		struct vs_nfs_wspan *sp = realloc(l->spans, n * sizeof(*sp));

		if (!sp) {
			free(wb);
			return NULL;
		}
		l->spans = sp;
		l->spans_cap = n;
	}
	cap = wb->cap;
	memset(wb, 0, sizeof(*wb));
	wb->cap = cap;
	wb->span = l->nspans;
	l->spans[l->nspans++] = (struct vs_nfs_wspan){ offset, offset + len, wb };
	wb->offset = offset;
	wb->len = len;
	wb->state = VS_NFS_WB_INFLIGHT;
	p = wb->data;
	for (int i = 0; i < niov && left; i++) {
		size_t n = iov[i].iov_len < left ? iov[i].iov_len : (size_t)left;

		memcpy(p, iov[i].iov_base, n);
		p += n;
		left -= n;
	}
	wb->prev = l->tail;
	if (l->tail)
		l->tail->next = wb;
	else
		l->head = wb;
	l->tail = wb;
	if (!l->count || offset < l->lo)
		l->lo = offset;
	if (!l->count || offset + len > l->hi)
		l->hi = offset + len;
	l->count++;
	l->bytes += len;
	return wb;
}

void vs_nfs_wlist_remove(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb)
{
	wb_free(l, wb);
}

static void wb_set(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb, bool stable, const uint8_t *verf)
{
	if (wb->state == VS_NFS_WB_UNSTABLE)
		l->unstable--;
	if (wb->state == VS_NFS_WB_INFLIGHT)
		l->completed++;
	if (stable) {
		wb->state = VS_NFS_WB_STABLE;
	} else {
		wb->state = VS_NFS_WB_UNSTABLE;
		memcpy(wb->verf, verf, VS_NFS_VERF_SIZE);
		l->unstable++;
	}
}

bool vs_nfs_wlist_complete(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb, bool stable,
			   const uint8_t *verf)
{
	/* Nothing completed before it is kept: nothing older can be written over it. */
	if (stable && l->completed == 0) {
		wb_free(l, wb);
		return true;
	}
	wb_set(l, wb, stable, verf);
	return false;
}

void vs_nfs_wlist_rewritten(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb, bool stable,
			    const uint8_t *verf)
{
	wb_set(l, wb, stable, verf);
}

unsigned vs_nfs_wlist_commit_begin(struct vs_nfs_wlist *l)
{
	unsigned unstable = 0;

	for (struct vs_nfs_wb *wb = l->head; wb; wb = wb->next) {
		wb->in_commit = wb->state != VS_NFS_WB_INFLIGHT;
		if (wb->state == VS_NFS_WB_UNSTABLE)
			unstable++;
	}
	if (!unstable) {
		static const uint8_t any[VS_NFS_VERF_SIZE];

		vs_nfs_wlist_commit_end(l, any); /* no verifier is compared */
	}
	return unstable;
}

unsigned vs_nfs_wlist_commit_end(struct vs_nfs_wlist *l, const uint8_t *verf)
{
	unsigned lost = 0;
	struct vs_nfs_wb *wb, *next;

	for (wb = l->head; wb && verf; wb = wb->next)
		if (wb->in_commit && wb->state == VS_NFS_WB_UNSTABLE &&
		    memcmp(wb->verf, verf, VS_NFS_VERF_SIZE))
			lost++;
	for (wb = l->head; wb; wb = next) {
		next = wb->next;
		if (wb->in_commit && verf && !lost)
			wb_free(l, wb);
		else
			wb->in_commit = false;
	}
	return lost;
}

void vs_nfs_wlist_overlay(const struct vs_nfs_wlist *l, uint64_t offset, uint64_t len,
			  const struct iovec *iov, int niov)
{
	uint64_t end = offset + len;

	if (!l->completed || end <= l->lo || offset >= l->hi)
		return;
	for (unsigned i = 0; i < l->nspans; i++) {
		const struct vs_nfs_wspan *sp = &l->spans[i];
		const struct vs_nfs_wb *wb = sp->wb;
		uint64_t from, to, skip;

		if (sp->offset >= end || sp->end <= offset || !wb ||
		    wb->state == VS_NFS_WB_INFLIGHT)
			continue;
		from = wb->offset > offset ? wb->offset : offset;
		to = wb->offset + wb->len < end ? wb->offset + wb->len : end;
		/* Copy wb->data[from - wb->offset, to - wb->offset) to @iov at from - offset. */
		skip = from - offset;
		for (int k = 0; k < niov && from < to; k++) {
			size_t il = iov[k].iov_len, n;

			if (skip >= il) {
				skip -= il;
				continue;
			}
			n = il - skip < to - from ? il - skip : (size_t)(to - from);
			memcpy((uint8_t *)iov[k].iov_base + skip, wb->data + (from - wb->offset),
			       n);
			from += n;
			skip = 0;
		}
	}
}
