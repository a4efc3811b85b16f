/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img resize: grow or (with --shrink) shrink an image, with qemu-img
 * resize's options, size syntax (+SIZE / -SIZE for relative changes) and
 * messages.
 */
#include "img.h"
#include "vstor/parse.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resize_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	const char *size_arg;
	enum vs_prealloc prealloc;
	bool shrink;
	bool quiet;
	int rc;
};

/*
 * The size as qemu-img's option parser takes it: 0, 1 for a size between
 * 2^63 and 2^64 (refused once the image is open, as qemu-img does), or -1
 * after its message.
 */
static int resize_parse_size(const char *s, uint64_t *out)
{
	int ret = vs_parse_size(s, out);
	long double v;
	char *end;

	if (ret == 0)
		return 0;
	if (ret != -ERANGE) {
		img_error(-EINVAL, "Parameter 'size' expects a non-negative number below 2^64\n"
				   "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
				   "tera-, peta-\nand exabytes, respectively.");
		return -1;
	}
	/* Well formed but above INT64_MAX: below 2^64 or not. */
	v = strtold(s, &end);
	if (*end) {
		const char *units = "bkmgtpe";
		const char *u = strchr(units, tolower((unsigned char)*end));

		for (long i = 0; u && i < u - units; i++)
			v *= 1024;
	}
	if (v >= 18446744073709551616.0L) {
		img_error(-ERANGE, "Value '%s' is out of range for parameter 'size'", s);
		return -1;
	}
	return 1;
}

static void resize_co(void *opaque)
{
	struct resize_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.writable = true,
	};
	struct vs_error err = { 0 };
	struct vs_node *node;
	const char *s = a->size_arg;
	uint64_t old, delta, size;
	int sign = 0, ret;

	if (*s == '+' || *s == '-')
		sign = *s++ == '+' ? 1 : -1;
	ret = resize_parse_size(s, &delta);
	if (ret < 0)
		return;
	if (img_open(&node, &oa) < 0)
		return;
	old = vs_node_size(node);
	if (ret > 0) {
		/* Above 2^63 - 1: as qemu-img's signed size, never a valid result. */
		img_error(-EINVAL, "New image size must be positive");
		goto out;
	}
	if (sign > 0) {
		size = old + delta;
		if (size < old) {
			img_error(-EINVAL, "Image size too large");
			goto out;
		}
	} else if (sign < 0) {
		if (delta > old) {
			img_error(-EINVAL, "New image size must be positive");
			goto out;
		}
		size = old - delta;
	} else {
		size = delta;
	}
	if (size < old) {
		if (!a->shrink) {
			/* As qemu-img: the refusal, then the warning; none with --shrink. */
			img_error(-EINVAL,
				  "Use the --shrink option to perform a shrink operation.");
			fprintf(stderr,
				"vstor-img: warning: Shrinking an image will delete all data "
				"beyond the shrunken image's end. Before performing such an "
				"operation, make sure there is no important data there.\n");
			goto out;
		}
		if (a->prealloc != VS_PREALLOC_OFF) {
			img_error(-EINVAL, "Preallocation can only be used for growing images");
			goto out;
		}
	}
	ret = vs_node_truncate(node, size, a->prealloc, false, &err);
	if (ret == 0)
		ret = vs_node_flush(node);
	if (ret < 0) {
		img_error(ret, "%s", err.msg[0] ? err.msg : strerror(-ret));
		goto out;
	}
	if (!a->quiet)
		printf("Image resized.\n");
	a->rc = 0;
out:
	vs_node_close(node);
}

enum { OPT_PREALLOCATION = 256, OPT_SHRINK };

int img_cmd_resize(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "preallocation", required_argument, NULL, OPT_PREALLOCATION },
		{ "shrink", no_argument, NULL, OPT_SHRINK },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ NULL, 0, NULL, 0 },
	};
	struct resize_args a = { .rc = 1 };
	struct img_image_cli ic = { 0 };
	int c;

	/*
	 * As qemu-img: the size is the last word, taken before the options are
	 * parsed (a leading '-' in "-SIZE" stays an operand); options may come
	 * anywhere before it ("FILE --shrink SIZE").
	 */
	if (argc < 3)
		return img_usage_error("Not enough arguments");
	a.size_arg = argv[--argc];
	while ((c = getopt_long(argc, argv, ":f:hq", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 'q':
			a.quiet = true;
			break;
		case OPT_PREALLOCATION:
			if (vs_prealloc_parse(optarg, &a.prealloc) < 0) {
				img_error(-EINVAL, "Invalid preallocation mode '%s'", optarg);
				return 1;
			}
			break;
		case OPT_SHRINK:
			a.shrink = true;
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
		return img_usage_error("Expecting image file name and size");
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (img_run(resize_co, &a) < 0)
		return 1;
	return a.rc;
}
