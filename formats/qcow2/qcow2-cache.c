/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Metadata cache for L2 tables and refcount blocks.
 *
 * Tables are kept in their on-disk (big-endian) form and written back
 * lazily: on eviction, on flush, or when another cache that depends on this
 * one is written back. Dependencies carry the crash-safety ordering: an L2
 * table that points to a newly allocated cluster must not reach the disk
 * before the refcount block that accounts for it, and a refcount decrement
 * must not reach the disk before the L2 entry that dropped the reference.
 *
 * Only the holder of the image lock touches a cache, so pins only protect
 * an entry against eviction by the holder's own nested lookups.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static unsigned cache_hash(const struct qcow2_cache *c, uint64_t offset)
{
	uint64_t h = (offset / c->table_size) * 0x9e3779b97f4a7c15ull;

	return (unsigned)(h >> 32) & (c->nbuckets - 1);
}

static void cache_unlink(struct qcow2_cache *c, int i)
{
	unsigned b = cache_hash(c, c->e[i].offset);
	int *pp = &c->bucket[b];

	while (*pp != -1) {
		if (*pp == i) {
			*pp = c->next[i];
			c->next[i] = -1;
			return;
		}
		pp = &c->next[*pp];
	}
}

static void cache_link(struct qcow2_cache *c, int i)
{
	unsigned b = cache_hash(c, c->e[i].offset);

	c->next[i] = c->bucket[b];
	c->bucket[b] = i;
}

static int cache_find(const struct qcow2_cache *c, uint64_t offset)
{
	int i = c->bucket[cache_hash(c, offset)];

	while (i != -1 && c->e[i].offset != offset)
		i = c->next[i];
	return i;
}

static inline void *cache_table(const struct qcow2_cache *c, int i)
{
	return c->mem + (size_t)i * c->table_size;
}

struct qcow2_cache *qcow2_cache_new(unsigned n, size_t table_size, enum qcow2_meta type)
{
	struct qcow2_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->type = type;
	c->n = n;
	c->table_size = table_size;
	c->nbuckets = 1;
	while (c->nbuckets < n * 2)
		c->nbuckets <<= 1;
	c->mem = vs_buf_alloc((size_t)n * table_size);
	c->e = calloc(n, sizeof(*c->e));
	c->bucket = malloc(sizeof(int) * c->nbuckets);
	c->next = malloc(sizeof(int) * n);
	if (!c->mem || !c->e || !c->bucket || !c->next) {
		qcow2_cache_free(c);
		return NULL;
	}
	for (unsigned i = 0; i < c->nbuckets; i++)
		c->bucket[i] = -1;
	for (unsigned i = 0; i < n; i++)
		c->next[i] = -1;
	return c;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
	if (!c)
		return;
	free(c->mem);
	free(c->e);
	free(c->bucket);
	free(c->next);
	free(c);
}

static int cache_entry_writeback(struct vs_node *node, struct qcow2_cache *c, int i)
{
	struct qcow2_cache_entry *e = &c->e[i];
	int ret;

	if (!e->dirty)
		return 0;
	if (c->depends) {
		ret = qcow2_cache_flush(node, c->depends);
		if (ret < 0)
			return ret;
		c->depends = NULL;
		c->flush_first = false; /* that flush covered the data too */
	}
	if (c->flush_first) {
		ret = vs_node_flush(qcow2_data_node(node));
		if (ret < 0)
			return ret;
		c->flush_first = false;
	}
	ret = qcow2_overlap_check(node, c->type, e->offset, c->table_size);
	if (ret < 0)
		return ret;
	ret = vs_node_pwrite(node->file, e->offset, cache_table(c, i), c->table_size, 0);
	if (ret < 0)
		return ret;
	e->dirty = false;
	return 0;
}

int qcow2_cache_writeback(struct vs_node *node, struct qcow2_cache *c)
{
	int ret;

	/* Write dirty tables in offset order so the file sees sequential I/O. */
	for (;;) {
		int best = -1;

		for (unsigned i = 0; i < c->n; i++) {
			if (c->e[i].offset && c->e[i].dirty &&
			    (best < 0 || c->e[i].offset < c->e[best].offset))
				best = (int)i;
		}
		if (best < 0)
			break;
		ret = cache_entry_writeback(node, c, best);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int qcow2_cache_flush(struct vs_node *node, struct qcow2_cache *c)
{
	int ret = qcow2_cache_writeback(node, c);

	if (ret < 0)
		return ret;
	return vs_node_flush(node->file);
}

int qcow2_cache_set_dependency(struct vs_node *node, struct qcow2_cache *c, struct qcow2_cache *dep)
{
	int ret;

	if (c->depends == dep)
		return 0;
	/* The opposite order is pending: settle it first, or the two would wait for each other. */
	if (dep->depends == c) {
		ret = qcow2_cache_flush(node, c);
		if (ret < 0)
			return ret;
		dep->depends = NULL;
	}
	if (c->depends) {
		ret = qcow2_cache_flush(node, c->depends);
		if (ret < 0)
			return ret;
	}
	c->depends = dep;
	return 0;
}

/* Find a slot for @offset: a free one, else the least recently used unpinned one. */
static int cache_victim(struct vs_node *node, struct qcow2_cache *c, int *out)
{
	int best = -1;
	int ret;

	for (unsigned i = 0; i < c->n; i++) {
		if (!c->e[i].offset) {
			*out = (int)i;
			return 0;
		}
		if (c->e[i].ref)
			continue;
		if (best < 0 || c->e[i].lru < c->e[best].lru)
			best = (int)i;
	}
	if (best < 0)
		return -EBUSY; /* every table pinned: a bug in the caller's nesting */
	ret = cache_entry_writeback(node, c, best);
	if (ret < 0)
		return ret;
	cache_unlink(c, best);
	c->e[best].offset = 0;
	*out = best;
	return 0;
}

static int cache_do_get(struct vs_node *node, struct qcow2_cache *c, uint64_t offset, void **table,
			bool read)
{
	int i, ret;

	if (!offset || (offset & (c->table_size - 1)))
		return -EIO;
	i = cache_find(c, offset);
	if (i < 0) {
		ret = cache_victim(node, c, &i);
		if (ret < 0)
			return ret;
		if (read) {
			ret = vs_node_pread(node->file, offset, cache_table(c, i), c->table_size);
			if (ret < 0)
				return ret;
		} else {
			memset(cache_table(c, i), 0, c->table_size);
		}
		c->e[i].offset = offset;
		c->e[i].dirty = false;
		c->e[i].ref = 0;
		cache_link(c, i);
	} else if (!read) {
		memset(cache_table(c, i), 0, c->table_size);
	}
	c->e[i].ref++;
	c->e[i].lru = ++c->lru_clock;
	*table = cache_table(c, i);
	return 0;
}

int qcow2_cache_get(struct vs_node *node, struct qcow2_cache *c, uint64_t offset, void **table)
{
	return cache_do_get(node, c, offset, table, true);
}

int qcow2_cache_get_empty(struct vs_node *node, struct qcow2_cache *c, uint64_t offset,
			  void **table)
{
	return cache_do_get(node, c, offset, table, false);
}

static int cache_index_of(const struct qcow2_cache *c, const void *table)
{
	return (int)(((const uint8_t *)table - c->mem) / c->table_size);
}

void qcow2_cache_put(struct qcow2_cache *c, void **table)
{
	int i;

	if (!*table)
		return;
	i = cache_index_of(c, *table);
	if (c->e[i].ref)
		c->e[i].ref--;
	*table = NULL;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, void *table)
{
	c->e[cache_index_of(c, table)].dirty = true;
}

void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset)
{
	int i = cache_find(c, offset);

	if (i < 0)
		return;
	cache_unlink(c, i);
	c->e[i].offset = 0;
	c->e[i].dirty = false;
	c->e[i].ref = 0;
}

void qcow2_cache_drop_all(struct qcow2_cache *c)
{
	for (unsigned i = 0; i < c->n; i++) {
		if (c->e[i].offset)
			cache_unlink(c, (int)i);
		c->e[i].offset = 0;
		c->e[i].dirty = false;
		c->e[i].ref = 0;
	}
	c->depends = NULL;
}
