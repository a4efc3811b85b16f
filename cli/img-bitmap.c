/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img bitmap: add, remove, clear, enable, disable and merge the
 * persistent dirty bitmaps of an image, with qemu-img bitmap's options,
 * messages and exit codes. Several operations in one call are applied in
 * the order given.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vstor/parse.h"

struct bitmap_action {
	enum vs_bitmap_action act;
	const char *src; /* --merge SOURCE */
};

struct bitmap_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	const char *name;
	const char *src_filename; /* -b */
	const char *src_fmt;	  /* -F */
	uint64_t granularity;
	struct bitmap_action *acts;
	size_t nacts;
	int rc;
};

static const char *action_name(enum vs_bitmap_action act)
{
	static const char *const names[] = {
		[VS_BITMAP_ADD] = "add",	 [VS_BITMAP_REMOVE] = "remove",
		[VS_BITMAP_CLEAR] = "clear",	 [VS_BITMAP_ENABLE] = "enable",
		[VS_BITMAP_DISABLE] = "disable", [VS_BITMAP_MERGE] = "merge",
	};

	return names[act];
}

static void bitmap_co(void *opaque)
{
	struct bitmap_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.writable = true,
		.no_backing = true,
	};
	struct vs_node *node, *src = NULL;
	int ret = 0;

	if (img_open(&node, &oa) < 0)
		return;
	if (a->src_filename) {
		struct img_open_args sa = {
			.filename = a->src_filename,
			.fmt = a->src_fmt,
			.no_backing = true,
		};

		if (img_open(&src, &sa) < 0) {
			vs_node_close(node);
			return;
		}
	}
	for (size_t i = 0; i < a->nacts && ret == 0; i++) {
		struct vs_bitmap_op op = {
			.action = a->acts[i].act,
			.name = a->name,
			.granularity = a->granularity,
			.src = src ? src : node,
			.src_name = a->acts[i].src,
		};
		struct vs_error err = { 0 };

		ret = vs_node_bitmap(node, &op, &err);
		if (ret < 0)
			img_error(ret, "Operation %s on bitmap %s failed: %s",
				  action_name(a->acts[i].act), a->name,
				  err.msg[0] ? err.msg : strerror(-ret));
	}
	if (src)
		vs_node_close(src);
	/* Closing writes the bitmaps back (and says so if that fails). */
	vs_node_close(node);
	if (ret == 0)
		a->rc = 0;
}

/* qemu-img bitmap reports its usage errors without the --help hint. */
static int bitmap_usage(struct bitmap_action *acts, const char *msg)
{
	free(acts);
	img_error(-EINVAL, "%s", msg);
	return 1;
}

enum {
	OPT_ADD = 256,
	OPT_REMOVE,
	OPT_CLEAR,
	OPT_ENABLE,
	OPT_DISABLE,
	OPT_MERGE,
};

int img_cmd_bitmap(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "add", no_argument, NULL, OPT_ADD },
		{ "remove", no_argument, NULL, OPT_REMOVE },
		{ "clear", no_argument, NULL, OPT_CLEAR },
		{ "enable", no_argument, NULL, OPT_ENABLE },
		{ "disable", no_argument, NULL, OPT_DISABLE },
		{ "merge", required_argument, NULL, OPT_MERGE },
		{ "granularity", required_argument, NULL, 'g' },
		{ "source-file", required_argument, NULL, 'b' },
		{ "source-format", required_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	struct bitmap_args a = { .rc = 1 };
	struct img_image_cli ic = { 0 };
	bool add = false, merge = false;
	int c;

	a.acts = calloc((size_t)argc, sizeof(*a.acts));
	if (!a.acts)
		return 1;
	while ((c = getopt_long(argc, argv, ":b:f:F:g:h", longopts, NULL)) != -1) {
		struct bitmap_action *act = &a.acts[a.nacts];

		switch (c) {
		case 'h':
			img_help();
			free(a.acts);
			return 0;
		case 'b':
			a.src_filename = optarg;
			break;
		case 'f':
			a.fmt = optarg;
			break;
		case 'F':
			a.src_fmt = optarg;
			break;
		case 'g':
			if (vs_parse_size(optarg, &a.granularity) < 0 || !a.granularity) {
				img_error(-EINVAL, "Invalid granularity specified");
				free(a.acts);
				return 1;
			}
			break;
		case OPT_ADD:
			act->act = VS_BITMAP_ADD;
			a.nacts++;
			add = true;
			break;
		case OPT_REMOVE:
			act->act = VS_BITMAP_REMOVE;
			a.nacts++;
			break;
		case OPT_CLEAR:
			act->act = VS_BITMAP_CLEAR;
			a.nacts++;
			break;
		case OPT_ENABLE:
			act->act = VS_BITMAP_ENABLE;
			a.nacts++;
			break;
		case OPT_DISABLE:
			act->act = VS_BITMAP_DISABLE;
			a.nacts++;
			break;
		case OPT_MERGE:
			act->act = VS_BITMAP_MERGE;
			act->src = optarg;
			a.nacts++;
			merge = true;
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&ic, c, optarg) < 0) {
				free(a.acts);
				return 1;
			}
			break;
		default:
			free(a.acts);
			return img_getopt_error(argv, c);
		}
	}
	if (!a.nacts) {
		return bitmap_usage(a.acts,
				    "Need at least one of --add, --remove, --clear, --enable, "
				    "--disable, or --merge");
	}
	if (a.granularity && !add) {
		return bitmap_usage(a.acts, "granularity only supported with --add");
	}
	if (a.src_fmt && !a.src_filename) {
		return bitmap_usage(a.acts, "-F only supported with -b");
	}
	if (a.src_filename && !merge) {
		return bitmap_usage(a.acts, "Merge bitmap source file only supported with --merge");
	}
	if (optind != argc - 2) {
		return bitmap_usage(a.acts, "Expecting filename and bitmap name");
	}
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0) {
		free(a.acts);
		return 1;
	}
	a.name = argv[optind + 1];
	if (img_run(bitmap_co, &a) < 0)
		a.rc = 1;
	free(a.acts);
	return a.rc;
}
