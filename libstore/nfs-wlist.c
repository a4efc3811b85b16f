/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bookkeeping of NFSv3 writes not yet known to be stable: see nfs-wlist.h. */
#include "nfs-wlist.h"

#include <stdlib.h>
#include <string.h>

void vs_nfs_wlist_init(struct vs_nfs_wlist *l)
{
	memset(l, 0, sizeof(*l));
}

static void wb_free(struct vs_nfs_wlist *l, struct vs_nfs_wb *wb)
{
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
	if (!l->count)
		l->lo = l->hi = 0;
	free(wb);
}

void vs_nfs_wlist_clear(struct vs_nfs_wlist *l)
{
	while (l->head)
		wb_free(l, l->head);
}

struct vs_nfs_wb *vs_nfs_wlist_add(struct vs_nfs_wlist *l, uint64_t offset, const struct iovec *iov,
				   int niov, uint64_t len)
{
	struct vs_nfs_wb *wb = malloc(sizeof(*wb) + (len ? len : 1));
	uint64_t left = len;
	uint8_t *p;

	if (!wb)
		return NULL;
	memset(wb, 0, sizeof(*wb));
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
	for (const struct vs_nfs_wb *wb = l->head; wb; wb = wb->next) {
		uint64_t from, to, skip;

		if (wb->state == VS_NFS_WB_INFLIGHT || wb->offset >= end ||
		    wb->offset + wb->len <= offset)
			continue;
		from = wb->offset > offset ? wb->offset : offset;
		to = wb->offset + wb->len < end ? wb->offset + wb->len : end;
		/* Copy wb->data[from - wb->offset, to - wb->offset) to @iov at from - offset. */
		skip = from - offset;
		for (int i = 0; i < niov && from < to; i++) {
			size_t il = iov[i].iov_len, n;

			if (skip >= il) {
				skip -= il;
				continue;
			}
			n = il - skip < to - from ? il - skip : (size_t)(to - from);
			memcpy((uint8_t *)iov[i].iov_base + skip, wb->data + (from - wb->offset),
			       n);
			from += n;
			skip = 0;
		}
	}
}
