/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Dirty bitmaps of vstord's nodes (bitmap.h): the format's own where it
 * keeps them (qcow2, in libstore: vs_node_bitmap, vs_node_dirty_bitmaps),
 * else in-memory ones kept here by name over libstore's generic node-level
 * bitmaps (vstor/dirty-bitmap.h), which the node's writes mark.
 */
#include "bitmap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vstor/dirty-bitmap.h"

/* A named in-memory bitmap of a node whose format keeps none. */
struct gen_bitmap {
	struct gen_bitmap *next;
	struct vs_node *node;
	char *name;
	struct vs_dirty_bitmap *bm; /* attached to the node while recording */
	bool recording;
};

static struct gen_bitmap *gens; /* newest first */

/* Bitmaps in use by an export (QEMU's "busy"): counted per node and name. */
struct busy_bitmap {
	struct busy_bitmap *next;
	struct vs_node *node;
	char *name;
	unsigned users;
};

static struct busy_bitmap *busy_list;

static struct busy_bitmap *busy_find(struct vs_node *node, const char *name)
{
	for (struct busy_bitmap *b = busy_list; b; b = b->next)
		if (b->node == node && !strcmp(b->name, name))
			return b;
	return NULL;
}

bool vd_bitmap_busy(struct vs_node *node, const char *name)
{
	return busy_find(node, name) != NULL;
}

int vd_bitmap_busy_get(struct vs_node *node, const char *name)
{
	struct busy_bitmap *b = busy_find(node, name);

	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b || !(b->name = strdup(name))) {
			free(b);
			return -ENOMEM;
		}
		b->node = node;
		b->next = busy_list;
		busy_list = b;
	}
	b->users++;
	return 0;
}

void vd_bitmap_busy_put(struct vs_node *node, const char *name)
{
	struct busy_bitmap *b = busy_find(node, name), **p;

	if (!b || --b->users)
		return;
	for (p = &busy_list; *p != b; p = &(*p)->next)
		;
	*p = b->next;
	free(b->name);
	free(b);
}

/* Whether @node's format keeps bitmaps itself. */
static bool format_keeps(struct vs_node *node)
{
	struct vs_dirty_bitmap_info *list = NULL;
	unsigned nb;
	int ret = vs_node_dirty_bitmaps(node, &list, &nb);

	free(list);
	return ret != -ENOTSUP;
}

static struct gen_bitmap *gen_find(struct vs_node *node, const char *name)
{
	for (struct gen_bitmap *g = gens; g; g = g->next)
		if (g->node == node && !strcmp(g->name, name))
			return g;
	return NULL;
}

static void gen_free(struct gen_bitmap *g)
{
	struct gen_bitmap **p;

	for (p = &gens; *p != g; p = &(*p)->next)
		;
	*p = g->next;
	vs_dirty_bitmap_free(g->bm); /* detaches it */
	free(g->name);
	free(g);
}

static int gen_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb)
{
	unsigned n = 0;

	*out = NULL;
	*nb = 0;
	for (struct gen_bitmap *g = gens; g; g = g->next)
		n += g->node == node;
	if (!n)
		return 0;
	*out = calloc(n, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (struct gen_bitmap *g = gens; g; g = g->next) {
		struct vs_dirty_bitmap_info *bi = &(*out)[(*nb)++];

		if (g->node != node) {
			(*nb)--;
			continue;
		}
		snprintf(bi->name, sizeof(bi->name), "%s", g->name);
		bi->granularity = vs_dirty_bitmap_granularity(g->bm);
		bi->count = vs_dirty_bitmap_count(g->bm);
		bi->recording = g->recording;
	}
	return 0;
}

/* Set in @dst every granule dirty in @src_name of @src (generic or the format's). */
static int gen_merge(struct gen_bitmap *dst, struct vs_node *src, const char *src_name,
		     struct vs_error *err)
{
	struct gen_bitmap *gs = gen_find(src, src_name);
	uint64_t size = vs_node_size(src), off = 0, start, len;

	if (gs) {
		while (vs_dirty_bitmap_next_dirty(gs->bm, off, 0, &start, &len)) {
			vs_dirty_bitmap_set(dst->bm, start, len);
			off = start + len;
		}
		return 0;
	}
	while (off < size) {
		bool dirty;
		int ret = vs_node_bitmap_status(src, src_name, off, size - off, &dirty, &len);

		if (ret < 0)
			return vs_error_set(err, ret, "Dirty bitmap '%s' not found", src_name);
		if (dirty)
			vs_dirty_bitmap_set(dst->bm, off, len);
		off += len;
	}
	return 0;
}

static int gen_apply(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err)
{
	struct gen_bitmap *g = gen_find(node, op->name);
	int ret;

	if (op->action == VS_BITMAP_ADD) {
		if (g)
			return vs_error_set(err, -EEXIST, "Bitmap already exists: %s", op->name);
		if (!op->transient)
			return vs_error_set(err, -ENOTSUP,
					    "Can't store persistent bitmaps to %s: Operation not "
					    "supported",
					    vs_node_format(node));
		g = calloc(1, sizeof(*g));
		if (!g || !(g->name = strdup(op->name))) {
			free(g);
			return vs_error_set(err, -ENOMEM, "Out of memory");
		}
		ret = vs_dirty_bitmap_new(vs_node_size(node),
					  op->granularity ? op->granularity : 65536, &g->bm);
		if (ret == 0 && !op->disabled)
			ret = vs_node_dirty_bitmap_attach(node, g->bm);
		if (ret < 0) {
			vs_dirty_bitmap_free(g->bm);
			free(g->name);
			free(g);
			return vs_error_set(err, ret, "Cannot create a bitmap of granularity %llu",
					    (unsigned long long)op->granularity);
		}
		g->node = node;
		g->recording = !op->disabled;
		g->next = gens;
		gens = g;
		return 0;
	}
	if (!g)
		return vs_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", op->name);
	switch (op->action) {
	case VS_BITMAP_REMOVE:
		gen_free(g);
		return 0;
	case VS_BITMAP_CLEAR:
		vs_dirty_bitmap_clear_all(g->bm);
		return 0;
	case VS_BITMAP_ENABLE:
		if (!g->recording) {
			ret = vs_node_dirty_bitmap_attach(node, g->bm);
			if (ret < 0)
				return vs_error_set(err, ret, "Cannot enable bitmap '%s'",
						    op->name);
			g->recording = true;
		}
		return 0;
	case VS_BITMAP_DISABLE:
		if (g->recording) {
			vs_node_dirty_bitmap_detach(g->bm);
			g->recording = false;
		}
		return 0;
	case VS_BITMAP_MERGE:
		return gen_merge(g, op->src, op->src_name, err);
	default:
		return vs_error_set(err, -EINVAL, "Invalid bitmap operation");
	}
}

int vd_bitmap_status(void *opaque, const char *name, uint64_t offset, uint64_t len, bool *dirty,
		     uint64_t *run)
{
	struct vs_node *node = opaque;
	/* Only nodes whose format keeps no bitmaps have generic ones: no need to ask. */
	struct gen_bitmap *g = gen_find(node, name);
	uint64_t start, l;

	if (!g)
		return vs_node_bitmap_status(node, name, offset, len, dirty, run);
	if (!vs_dirty_bitmap_next_dirty(g->bm, offset, 0, &start, &l)) {
		*dirty = false;
		*run = len;
	} else if (start <= offset) {
		*dirty = true;
		*run = start + l - offset;
	} else {
		*dirty = false;
		*run = start - offset;
	}
	if (*run > len)
		*run = len;
	return 0;
}

void vd_bitmap_node_gone(struct vs_node *node)
{
	struct gen_bitmap *g = gens, *next;

	for (; g; g = next) {
		next = g->next;
		if (g->node == node)
			gen_free(g);
	}
}

int vd_bitmap_list(struct vs_node *node, struct vs_dirty_bitmap_info **out, unsigned *nb)
{
	int ret = vs_node_dirty_bitmaps(node, out, nb);

	return ret == -ENOTSUP ? gen_list(node, out, nb) : ret;
}

bool vd_bitmap_find(struct vs_node *node, const char *name, struct vs_dirty_bitmap_info *info)
{
	struct vs_dirty_bitmap_info *list;
	bool found = false;
	unsigned nb;

	if (vd_bitmap_list(node, &list, &nb) < 0)
		return false;
	for (unsigned i = 0; i < nb && !found; i++) {
		if (!strcmp(list[i].name, name)) {
			found = true;
			if (info)
				*info = list[i];
		}
	}
	free(list);
	return found;
}

bool vd_bitmap_supported(struct vs_node *node, struct vs_error *err)
{
	(void)node;
	(void)err;
	return true; /* the format's bitmaps, or the generic in-memory ones */
}

bool vd_bitmap_can_persist(struct vs_node *node)
{
	return format_keeps(node);
}

int vd_bitmap_apply(struct vs_node *node, const struct vs_bitmap_op *op, struct vs_error *err)
{
	if (!format_keeps(node))
		return gen_apply(node, op, err);
	return vs_node_bitmap(node, op, err);
}
