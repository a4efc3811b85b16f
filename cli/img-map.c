/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img map: the allocation map of an image through its backing chain,
 * in qemu-img map's formats, with the same merging of adjacent runs.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct map_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	enum img_output output;
	uint64_t start;
	uint64_t max_length;
	bool has_max_length;
	bool force_share;
	int rc;
};

struct map_entry {
	uint64_t start;
	uint64_t length;
	unsigned depth;
	bool present;
	bool zero;
	bool data;
	bool has_offset;
	uint64_t offset;
	struct vs_node *file;
};

/*
 * Status of the leading run at @offset: walk down the chain until a layer
 * says data or zero; an unallocated run of the whole chain is reported at the
 * bottom layer's depth.
 */
static int map_block_status(struct vs_node *top, uint64_t offset, uint64_t len, struct map_entry *e)
{
	struct vs_node *cur = top, *file = NULL, *backing;
	unsigned depth = 0, status = 0;
	uint64_t pnum = 0, map = 0;
	int ret;

	for (;;) {
		ret = vs_node_block_status(cur, offset, len, &pnum, &status, &map, &file);
		if (ret < 0)
			return ret;
		if (!pnum)
			return -EIO;
		if (status & (VS_BS_ZERO | VS_BS_DATA))
			break;
		backing = vs_node_backing(cur);
		if (!backing) {
			if (!(status & VS_BS_ALLOCATED))
				status |= VS_BS_ZERO;
			break;
		}
		if (offset >= vs_node_size(backing)) {
			/* Past the end of a shorter backing file: reads as zeroes here. */
			status |= VS_BS_ZERO;
			break;
		}
		len = pnum;
		if (len > vs_node_size(backing) - offset)
			len = vs_node_size(backing) - offset;
		cur = backing;
		depth++;
	}
	*e = (struct map_entry){
		.start = offset,
		.length = pnum,
		.depth = depth,
		.present = !!(status & VS_BS_ALLOCATED),
		.zero = !!(status & VS_BS_ZERO),
		.data = !!(status & VS_BS_DATA),
		.has_offset = !!(status & VS_BS_OFFSET_VALID),
		.offset = map,
		.file = (status & VS_BS_OFFSET_VALID) ? file : NULL,
	};
	return 0;
}

static bool map_mergeable(const struct map_entry *a, const struct map_entry *b)
{
	if (!a->length)
		return false;
	if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
	    a->present != b->present || a->has_offset != b->has_offset || a->file != b->file)
		return false;
	return !a->has_offset || a->offset + a->length == b->offset;
}

static int map_dump(enum img_output out, const struct map_entry *e, bool more)
{
	if (out == IMG_OUTPUT_JSON) {
		printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u, "
		       "\"present\": %s, \"zero\": %s, \"data\": %s",
		       e->start, e->length, e->depth, e->present ? "true" : "false",
		       e->zero ? "true" : "false", e->data ? "true" : "false");
		if (e->has_offset)
			printf(", \"offset\": %" PRIu64, e->offset);
		putchar('}');
		if (more)
			puts(",");
		return 0;
	}
	if (e->data && !e->has_offset) {
		img_error(-ENOTSUP, "File contains external, encrypted or compressed clusters.");
		return -ENOTSUP;
	}
	if (e->data && !e->zero)
		printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length,
		       e->has_offset ? e->offset : 0, e->file ? vs_node_filename(e->file) : "");
	return 0;
}

static int map_run(struct map_args *a, struct vs_node *node)
{
	uint64_t end = vs_node_size(node);
	struct map_entry cur = { .start = a->start }, next;
	int ret;

	if (a->has_max_length && a->max_length < end - (a->start < end ? a->start : end))
		end = a->start + a->max_length;
	if (a->output == IMG_OUTPUT_HUMAN)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	else
		printf("[");
	while (cur.start + cur.length < end) {
		uint64_t off = cur.start + cur.length;

		ret = map_block_status(node, off, end - off, &next);
		if (ret < 0) {
			img_error(ret, "Could not read file metadata: %s", strerror(-ret));
			return ret;
		}
		if (map_mergeable(&cur, &next)) {
			cur.length += next.length;
			continue;
		}
		if (cur.length) {
			ret = map_dump(a->output, &cur, true);
			if (ret < 0)
				return ret;
		}
		cur = next;
	}
	ret = map_dump(a->output, &cur, false);
	if (a->output == IMG_OUTPUT_JSON)
		printf("]\n");
	return ret;
}

static void map_co(void *opaque)
{
	struct map_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.force_share = a->force_share,
	};
	struct vs_node *node;

	if (img_open(&node, &oa) < 0)
		return;
	if (map_run(a, node) == 0)
		a->rc = 0;
	vs_node_close(node);
}

enum { OPT_OUTPUT = 256, OPT_START, OPT_MAX_LEN };

int img_cmd_map(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ "start-offset", required_argument, NULL, OPT_START },
		{ "max-length", required_argument, NULL, OPT_MAX_LEN },
		{ NULL, 0, NULL, 0 },
	};
	struct map_args a = { .output = IMG_OUTPUT_HUMAN, .rc = 1 };
	struct img_image_cli ic = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_OUTPUT:
			if (img_parse_output(optarg, &a.output) < 0) {
				img_error(-EINVAL,
					  "--output must be used with human or json as argument.");
				return 1;
			}
			break;
		case OPT_START:
			if (img_cvtnum("start offset", optarg, &a.start) < 0)
				return 1;
			break;
		case OPT_MAX_LEN:
			if (img_cvtnum("max length", optarg, &a.max_length) < 0)
				return 1;
			a.has_max_length = true;
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&ic, c, optarg) < 0)
				return 1;
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (optind != argc - 1)
		return img_usage_error("Expecting one image file name");
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	img_set_json_errors(a.output == IMG_OUTPUT_JSON);
	if (img_run(map_co, &a) < 0)
		return 1;
	return a.rc;
}
