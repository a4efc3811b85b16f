/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * block-commit: merge the layers from a top down to a base into the base,
 * with qemu-storage-daemon's arguments, messages and events.
 *
 * Intermediate commit (the top is below the active node): the data the
 * top and the layers between it and the base hold is copied into the base,
 * flushed, and then the top's overlay names the base as its backing file
 * (header, then graph): the guest never writes those layers, and reads of
 * the base's ranges that the job writes are answered by the layers above
 * it, which hold the same data.
 *
 * Active commit (the top is the device's active node): a mirror from the
 * top into the base (job-mirror.c); block-job-complete moves the exports to
 * the base.
 *
 * vstord does not reopen nodes: the base must be writable (added with
 * blockdev-add read-write and named as a backing node).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "job-mirror.h"
#include "job.h"

#define COMMIT_CHUNK (512u * 1024)

struct commit {
	struct vs_node *top, *base, *overlay;
	unsigned base_depth; /* layers from the top down to the base, the top included */
	char *backing_file;  /* what the overlay's header names */
	void *buf;
};

static int commit_run(struct vd_job *job)
{
	struct commit *c = vd_job_opaque(job);

	return vd_job_copy_chain(job, &(struct vd_job_copy){ .top = c->top,
							     .dst = c->base,
							     .min_depth = 0,
							     .max_depth = c->base_depth,
							     .chunk = COMMIT_CHUNK,
							     .buf = c->buf });
}

static int commit_prepare(struct vd_job *job)
{
	struct commit *c = vd_job_opaque(job);
	struct vs_error err = { 0 };
	int ret;

	/* The base holds the data durably before the overlay stops reading the top. */
	ret = vs_node_flush(c->base);
	if (ret < 0) {
		vd_job_set_error(job, "%s", strerror(-ret));
		return ret;
	}
	vs_node_drain_begin(c->overlay);
	ret = vs_node_set_backing(c->overlay, c->backing_file, vs_node_format(c->base), &err);
	if (ret == 0)
		ret = vs_node_flush(c->overlay);
	if (ret == 0)
		ret = vs_node_replace_backing(c->overlay, c->base, &err);
	vs_node_drain_end(c->overlay);
	if (ret < 0)
		vd_job_set_error(job, "%s", err.msg[0] ? err.msg : strerror(-ret));
	return ret;
}

static void commit_clean(struct vd_job *job)
{
	struct commit *c = vd_job_opaque(job);

	if (!c)
		return;
	free(c->backing_file);
	free(c->buf);
	free(c);
}

static const struct vd_job_driver commit_driver = {
	.type = "commit",
	.run = commit_run,
	.prepare = commit_prepare,
	.clean = commit_clean,
};

/* The node whose backing node is @node, among the named nodes' chains; NULL if none. */
struct overlay_search {
	struct vs_node *node, *overlay;
};

static void find_overlay(struct vd_node *n, void *opaque)
{
	struct overlay_search *s = opaque;

	for (struct vs_node *l = n->node; l && !s->overlay; l = vs_node_backing(l))
		if (vs_node_backing(l) == s->node)
			s->overlay = l;
}

static struct vs_node *overlay_of(struct vs_node *node)
{
	struct overlay_search s = { node, NULL };

	vd_node_for_each(find_overlay, &s);
	return s.overlay;
}

/* The layer of @top's chain (@top included) named @filename, or NULL. */
static struct vs_node *chain_find_file(struct vs_node *top, const char *filename)
{
	for (struct vs_node *l = top; l; l = vs_node_backing(l))
		if (!strcmp(vs_node_filename(l), filename))
			return l;
	return NULL;
}

/* The layer of @top's chain (@top included) that the named node @name is, or NULL. */
static struct vs_node *chain_find_node(struct vs_node *top, struct vd_node *named)
{
	for (struct vs_node *l = top; l; l = vs_node_backing(l))
		if (l == named->node)
			return l;
	return NULL;
}

static int cmd_block_commit(struct qmp_call *call)
{
	const char *device, *top_name = NULL, *top_node = NULL, *base_name = NULL;
	const char *base_node = NULL, *backing_file = NULL;
	struct vs_node *busy[VS_MAX_BACKING_DEPTH + 1];
	struct vs_node *top, *base = NULL, *l;
	struct vd_job_opts opts;
	unsigned depth = 0;
	struct commit *c;
	struct vd_node *n;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "top", false, &top_name) < 0 ||
	    qmp_arg_str(call, "top-node", false, &top_node) < 0 ||
	    qmp_arg_str(call, "base", false, &base_name) < 0 ||
	    qmp_arg_str(call, "base-node", false, &base_node) < 0 ||
	    qmp_arg_str(call, "backing-file", false, &backing_file) < 0 ||
	    vd_job_parse_opts(call, &opts) < 0)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	if (overlay_of(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Need a root block node");
	if (top_name && top_node)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "'top-node' and 'top' are mutually exclusive");
	if (base_name && base_node)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "'base-node' and 'base' are mutually exclusive");
	top = n->node;
	if (top_node) {
		struct vd_node *t = vd_node_find(top_node);

		if (!t)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Cannot find device='' nor node-name='%s'", top_node);
		top = chain_find_node(n->node, t);
		if (!top)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "'%s' is not in this backing file chain", top_node);
	} else if (top_name) {
		top = chain_find_file(n->node, top_name);
		if (!top)
			return qmp_error(call, QMP_ERR_GENERIC, "Top image file %s not found",
					 top_name);
	}
	if (base_node) {
		struct vd_node *b = vd_node_find(base_node);

		if (!b)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Cannot find device='' nor node-name='%s'", base_node);
		base = chain_find_node(top, b);
		if (!base)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Node '%s' is not a backing image of '%s'", base_node,
					 top_node ? top_node : device);
	} else if (base_name) {
		base = chain_find_file(top, base_name);
		if (!base)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Can't find '%s' in the backing chain", base_name);
	} else {
		for (base = top; vs_node_backing(base);)
			base = vs_node_backing(base);
	}
	if (base == top)
		return qmp_error(call, QMP_ERR_GENERIC, "cannot commit an image into itself");
	for (l = top; l != base; l = vs_node_backing(l)) {
		if (vd_job_check_node_free(call, l, vd_node_name_of(l)) < 0)
			return -1;
		busy[depth++] = l;
	}
	if (vd_job_check_node_free(call, base, vd_node_name_of(base)) < 0)
		return -1;
	if (vs_node_is_read_only(base))
		return qmp_error(call, QMP_ERR_GENERIC,
				 "Base node '%s' is read-only: vstord does not reopen it (add it "
				 "read-write with blockdev-add and name it as a backing node)",
				 vd_node_name_of(base));
	if (top == n->node) {
		struct vd_mirror_opts mo = {
			.src = top,
			.dst = base,
			.sync = VD_MIRROR_SYNC_COMMIT,
			.base_depth = depth,
		};

		if (backing_file)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "'backing-file' specified, but 'top' is the active layer");
		return vd_mirror_start(call, &mo, &opts);
	}
	c = calloc(1, sizeof(*c));
	if (!c || posix_memalign(&c->buf, 4096, COMMIT_CHUNK) != 0 ||
	    !(c->backing_file = strdup(backing_file ? backing_file : vs_node_filename(base)))) {
		if (c)
			free(c->buf);
		free(c);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	c->top = top;
	c->base = base;
	c->overlay = overlay_of(top);
	c->base_depth = depth;
	if (!vd_job_new(call, &commit_driver, c, &opts, busy, depth, 0))
		return -1;
	return 0;
}
QMP_COMMAND(block_commit, "block-commit", cmd_block_commit,
	    .params = QMP_PARAMS("job-id", "device", "base-node", "base", "top-node", "top",
				 "backing-file", "speed", "on-error", "auto-finalize",
				 "auto-dismiss"))
