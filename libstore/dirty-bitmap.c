/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-memory dirty bitmaps (vstor/dirty-bitmap.h): a flat array of 64-bit
 * words, one bit per granule, with a count of the set bits kept up to date
 * so that "how much is left" costs nothing. The node's write path marks the
 * bitmaps attached to it (vs_node_dirty_write_end, node.c), or a
 * bitmap's write hook does.
 */
#include "vstor/dirty-bitmap.h"

#include <errno.h>
#include <stdlib.h>

#include "driver.h"
#include "direct.h"

struct vs_dirty_bitmap {
	struct vs_dirty_bitmap *next; /* in the node's list */
	struct vs_node *node;	      /* attached to, or NULL */
	uint64_t size, granularity;
	unsigned shift;				       /* log2(granularity) */
	uint64_t nbits;				       /* granules */
	uint64_t nset;				       /* dirty granules */
	uint64_t *words;			       /* nbits bits */
	const struct vs_dirty_bitmap_write_hook *hook; /* or NULL: writes mark it */
	void *hook_opaque;
};

int vs_dirty_bitmap_new(uint64_t size, uint64_t granularity, struct vs_dirty_bitmap **out)
{
	struct vs_dirty_bitmap *bm;
	unsigned shift = 0;

	if (granularity < 512 || granularity > (1ull << 30) || (granularity & (granularity - 1)))
		return -EINVAL;
	while ((1ull << shift) < granularity)
		shift++;
	bm = calloc(1, sizeof(*bm));
	if (!bm)
		return -ENOMEM;
	bm->size = size;
	bm->granularity = granularity;
	bm->shift = shift;
	bm->nbits = (size + granularity - 1) >> shift;
	bm->words = calloc(bm->nbits / 64 + 1, sizeof(uint64_t));
	if (!bm->words) {
		free(bm);
		return -ENOMEM;
	}
	*out = bm;
	return 0;
}

void vs_dirty_bitmap_free(struct vs_dirty_bitmap *bm)
{
	if (!bm)
		return;
	vs_node_dirty_bitmap_detach(bm);
	free(bm->words);
	free(bm);
}

uint64_t vs_dirty_bitmap_granularity(const struct vs_dirty_bitmap *bm)
{
	return bm->granularity;
}

uint64_t vs_dirty_bitmap_size(const struct vs_dirty_bitmap *bm)
{
	return bm->size;
}

/* The granules [*first, *end) that [offset, offset+len) touches; false if none. */
static bool granules(const struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t len,
		     uint64_t *first, uint64_t *end)
{
	if (!len || offset >= bm->size)
		return false;
	if (len > bm->size - offset)
		len = bm->size - offset;
	*first = offset >> bm->shift;
	*end = ((offset + len - 1) >> bm->shift) + 1;
	return true;
}

/* Set (@on) or clear bits [first, end), keeping the count. */
static void update(struct vs_dirty_bitmap *bm, uint64_t first, uint64_t end, bool on)
{
	while (first < end) {
		uint64_t w = first / 64, bit = first % 64;
		uint64_t n = end - first < 64 - bit ? end - first : 64 - bit;
		uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << bit;
		uint64_t changed = on ? mask & ~bm->words[w] : mask & bm->words[w];

		if (on)
			bm->words[w] |= mask;
		else
			bm->words[w] &= ~mask;
		if (on)
			bm->nset += (uint64_t)__builtin_popcountll(changed);
		else
			bm->nset -= (uint64_t)__builtin_popcountll(changed);
		first += n;
	}
}

void vs_dirty_bitmap_set(struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t len)
{
	uint64_t first, end;

	if (granules(bm, offset, len, &first, &end))
		update(bm, first, end, true);
}

void vs_dirty_bitmap_clear(struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t len)
{
	uint64_t first, end;

	if (granules(bm, offset, len, &first, &end))
		update(bm, first, end, false);
}

void vs_dirty_bitmap_clear_all(struct vs_dirty_bitmap *bm)
{
	for (uint64_t w = 0; w <= bm->nbits / 64; w++)
		bm->words[w] = 0;
	bm->nset = 0;
}

static bool test_bit(const struct vs_dirty_bitmap *bm, uint64_t b)
{
	return bm->words[b / 64] >> (b % 64) & 1;
}

bool vs_dirty_bitmap_get(const struct vs_dirty_bitmap *bm, uint64_t offset)
{
	return offset < bm->size && test_bit(bm, offset >> bm->shift);
}

/* The first bit at or after @b whose value is @on, or bm->nbits. */
static uint64_t find_bit(const struct vs_dirty_bitmap *bm, uint64_t b, bool on)
{
	while (b < bm->nbits) {
		uint64_t word = on ? bm->words[b / 64] : ~bm->words[b / 64];

		word &= ~0ull << (b % 64);
		if (word) {
			b = (b & ~63ull) + (uint64_t)__builtin_ctzll(word);
			return b < bm->nbits ? b : bm->nbits;
		}
		b = (b & ~63ull) + 64;
	}
	return bm->nbits;
}

bool vs_dirty_bitmap_next_dirty(const struct vs_dirty_bitmap *bm, uint64_t offset, uint64_t max_len,
				uint64_t *start, uint64_t *len)
{
	uint64_t b, e, s, l;

	if (offset >= bm->size || !bm->nset)
		return false;
	b = find_bit(bm, offset >> bm->shift, true);
	if (b == bm->nbits)
		return false;
	e = find_bit(bm, b, false);
	s = b << bm->shift;
	l = (e << bm->shift) - s;
	if (s + l > bm->size)
		l = bm->size - s;
	if (max_len && l > max_len) {
		/* Whole granules, at least one. */
		l = max_len >> bm->shift << bm->shift;
		if (!l)
			l = bm->granularity;
		if (s + l > bm->size)
			l = bm->size - s;
	}
	*start = s;
	*len = l;
	return true;
}

uint64_t vs_dirty_bitmap_count(const struct vs_dirty_bitmap *bm)
{
	uint64_t bytes = bm->nset << bm->shift;

	/* The last granule may be short. */
	if (bm->nbits && test_bit(bm, bm->nbits - 1))
		bytes -= (bm->nbits << bm->shift) - bm->size;
	return bytes;
}

int vs_node_dirty_bitmap_attach(struct vs_node *node, struct vs_dirty_bitmap *bm)
{
	if (bm->node)
		return -EBUSY;
	/* Writes that go straight to the file would not mark it: revoke them. */
	vs_node_direct_change_begin(node);
	vs_node_direct_change_end(node);
	bm->node = node;
	bm->next = node->dirty_bitmaps;
	node->dirty_bitmaps = bm;
	return 0;
}

void vs_node_dirty_bitmap_detach(struct vs_dirty_bitmap *bm)
{
	struct vs_dirty_bitmap **pp;

	if (!bm->node)
		return;
	for (pp = &bm->node->dirty_bitmaps; *pp && *pp != bm; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = bm->next;
	bm->node = NULL;
	bm->next = NULL;
}

void vs_dirty_bitmap_set_write_hook(struct vs_dirty_bitmap *bm,
				    const struct vs_dirty_bitmap_write_hook *hook, void *opaque)
{
	bm->hook = hook;
	bm->hook_opaque = opaque;
}

void vs_node_dirty_write_begin(struct vs_node *node, uint64_t offset, uint64_t len)
{
	for (struct vs_dirty_bitmap *bm = node->dirty_bitmaps; bm; bm = bm->next)
		if (bm->hook)
			bm->hook->begin(bm->hook_opaque, offset, len);
}

void vs_node_dirty_write_end(struct vs_node *node, enum vs_dirty_write kind, uint64_t offset,
			     uint64_t len, const struct iovec *iov, int niov, unsigned flags,
			     int ret)
{
	for (struct vs_dirty_bitmap *bm = node->dirty_bitmaps; bm; bm = bm->next) {
		if (bm->hook)
			bm->hook->end(bm->hook_opaque, kind, offset, len, iov, niov, flags, ret);
		else
			vs_dirty_bitmap_set(bm, offset, len);
	}
}

void vs_node_dirty_bitmaps_orphan(struct vs_node *node)
{
	while (node->dirty_bitmaps)
		vs_node_dirty_bitmap_detach(node->dirty_bitmaps);
}
