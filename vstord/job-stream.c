/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * block-stream: copy into a node what its backing chain above a base holds
 * (all of it without a base), then drop those layers from the chain: the
 * node's header names the base (or no backing file), as qemu-img rebase -u
 * would write it. Arguments, messages and events are qemu-storage-daemon's.
 *
 * The node may be exported and written while the job runs. Each chunk is
 * copied with the node drained (vs_node_drain_begin), so a guest write to
 * the same range lands either before the job looks at the range (the job
 * then sees it allocated and skips it) or after the copy (and wins): a copy
 * never overwrites newer data. The header changes only once the copied
 * data is flushed, so a crash at any point leaves a consistent chain.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "job.h"

/* Bytes examined per step, as QEMU streams them. */
#define STREAM_CHUNK (512u * 1024)

struct stream {
	struct vs_node *top;
	struct vs_node *base; /* what stays below top; NULL: the whole chain goes */
	unsigned base_depth;  /* layers above base, top included (all layers without one) */
	char *backing_file;   /* the name the header records for base */
	void *buf;
};

static int stream_run(struct vd_job *job)
{
	struct stream *s = vd_job_opaque(job);

	if (s->base_depth <= 1)
		return 0; /* the base is the top's backing node: nothing to stream */
	return vd_job_copy_chain(job, &(struct vd_job_copy){ .top = s->top,
							     .dst = s->top,
							     .drain = s->top,
							     .min_depth = 1,
							     .max_depth = s->base_depth,
							     .chunk = STREAM_CHUNK,
							     .buf = s->buf });
}

static int stream_prepare(struct vd_job *job)
{
	struct stream *s = vd_job_opaque(job);
	struct vs_error err = { 0 };
	int ret;

	vs_node_drain_begin(s->top);
	/* The copied data is durable before the header stops pointing at it. */
	ret = vs_node_flush(s->top);
	if (ret < 0) {
		vd_job_set_error(job, "%s", strerror(-ret));
		goto out;
	}
	ret = vs_node_set_backing(s->top, s->base ? s->backing_file : NULL,
				  s->base ? vs_node_format(s->base) : NULL, &err);
	if (ret == 0)
		ret = vs_node_flush(s->top);
	if (ret == 0)
		ret = vs_node_replace_backing(s->top, s->base, &err);
	if (ret < 0)
		vd_job_set_error(job, "%s", err.msg[0] ? err.msg : strerror(-ret));
out:
	vs_node_drain_end(s->top);
	return ret;
}

static void stream_clean(struct vd_job *job)
{
	struct stream *s = vd_job_opaque(job);

	if (!s)
		return;
	free(s->backing_file);
	free(s->buf);
	free(s);
}

static const struct vd_job_driver stream_driver = {
	.type = "stream",
	.run = stream_run,
	.prepare = stream_prepare,
	.clean = stream_clean,
};

/* The node of @top's chain (below @top) whose file name is @filename, or NULL. */
static struct vs_node *chain_find_file(struct vs_node *top, const char *filename)
{
	for (struct vs_node *b = vs_node_backing(top); b; b = vs_node_backing(b))
		if (!strcmp(vs_node_filename(b), filename))
			return b;
	return NULL;
}

static int cmd_block_stream(struct qmp_call *call)
{
	const char *device, *base_name = NULL, *base_node = NULL, *backing_file = NULL;
	struct vs_node *nodes[VS_MAX_BACKING_DEPTH + 1];
	struct vs_node *base = NULL;
	struct vd_job_opts opts;
	struct stream *s;
	struct vd_node *n;
	unsigned nnodes = 0;

	if (qmp_arg_str(call, "device", true, &device) < 0 ||
	    qmp_arg_str(call, "base", false, &base_name) < 0 ||
	    qmp_arg_str(call, "base-node", false, &base_node) < 0 ||
	    qmp_arg_str(call, "backing-file", false, &backing_file) < 0 ||
	    vd_job_parse_opts(call, &opts) < 0)
		return -1;
	n = vd_node_lookup(call, device);
	if (!n)
		return -1;
	if (base_name && base_node)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "'base' and 'base-node' cannot be specified at the same time");
	if (backing_file && !base_name && !base_node)
		return qmp_error(call, QMP_ERR_GENERIC,
				 "backing file specified, but streaming the entire chain");
	if (base_name) {
		base = chain_find_file(n->node, base_name);
		if (!base)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Can't find '%s' in the backing chain", base_name);
	} else if (base_node) {
		struct vd_node *b = vd_node_find(base_node);

		if (!b)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Cannot find device='' nor node-name='%s'", base_node);
		for (base = vs_node_backing(n->node); base && base != b->node;)
			base = vs_node_backing(base);
		if (!base)
			return qmp_error(call, QMP_ERR_GENERIC,
					 "Node '%s' is not a backing image of '%s'", base_node,
					 device);
	}
	/* The top and the layers that go: no other job may hold them. */
	for (struct vs_node *l = n->node; l && l != base; l = vs_node_backing(l)) {
		if (vd_job_check_node_free(call, l, vd_node_name_of(l)) < 0)
			return -1;
		if (nnodes < sizeof(nodes) / sizeof(nodes[0]))
			nodes[nnodes++] = l;
	}
	if (vs_node_is_read_only(n->node))
		return qmp_error(call, QMP_ERR_GENERIC, "Block node is read-only");
	s = calloc(1, sizeof(*s));
	if (!s || posix_memalign(&s->buf, 4096, STREAM_CHUNK) != 0 ||
	    (base &&
	     !(s->backing_file = strdup(backing_file ? backing_file : vs_node_filename(base))))) {
		if (s)
			free(s->buf);
		free(s);
		return qmp_error(call, QMP_ERR_GENERIC, "Out of memory");
	}
	s->top = n->node;
	s->base = base;
	s->base_depth = nnodes;
	return vd_job_new(call, &stream_driver, s, &opts, nodes, nnodes, 0) ? 0 : -1;
}
QMP_COMMAND(block_stream, "block-stream", cmd_block_stream,
	    .params = QMP_PARAMS("job-id", "device", "base", "base-node", "backing-file", "speed",
				 "on-error", "auto-finalize", "auto-dismiss"))
