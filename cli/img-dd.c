/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img dd: copy a range of an image into a new image, with qemu-img
 * dd's operands (if=, of=, bs=, count=, skip=), messages and exit codes.
 *
 * As qemu-img: the output is created anew with the size of what is copied;
 * count counts blocks from the start of the input (skip included), so the
 * copy is [skip*bs, min(count*bs, input size)); a skip past the end of the
 * input creates an empty image after a warning (exit 0). Every block is
 * written, zeroes included.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vstor/parse.h"

struct dd_args {
	const char *in_name, *out_name;
	const char *fmt, *out_fmt;
	const char *key_secret;
	bool force_share;
	uint64_t bs, count, skip;
	bool has_count, has_skip;
	int rc;
};

/* qemu's cvtnum_full(): a size between @min and @max, or its message. */
static int dd_number(const char *what, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	int ret = vs_parse_size(s, out);

	if (ret == 0 && *out >= min && *out <= max)
		return 0;
	if (ret == -EINVAL) {
		img_error(ret, "Invalid %s specified. You may use k, M, G, T, P or E suffixes for",
			  what);
		img_error(ret,
			  "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
	} else {
		img_error(-ERANGE,
			  "Invalid %s specified. Must be between %" PRIu64 " and %" PRIu64 ".",
			  what, min, max);
	}
	return -1;
}

/* One operand NAME=VALUE; the last of a name wins, as in qemu-img. */
static int dd_operand(struct dd_args *a, const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
	const char *v = eq ? eq + 1 : NULL;

	if (eq && n == 2 && !strncmp(arg, "if", 2)) {
		a->in_name = v;
		return 0;
	}
	if (eq && n == 2 && !strncmp(arg, "of", 2)) {
		a->out_name = v;
		return 0;
	}
	if (eq && n == 2 && !strncmp(arg, "bs", 2))
		return dd_number("bs", v, 1, INT_MAX, &a->bs);
	if (eq && n == 5 && !strncmp(arg, "count", 5)) {
		a->has_count = true;
		return dd_number("count", v, 0, INT64_MAX, &a->count);
	}
	if (eq && n == 4 && !strncmp(arg, "skip", 4)) {
		a->has_skip = true;
		return dd_number("skip", v, 0, INT64_MAX, &a->skip);
	}
	img_error(-EINVAL, "unrecognized operand %.*s", (int)n, arg);
	return -1;
}

static int dd_copy(struct dd_args *a, struct vs_node *in, struct vs_node *out, uint64_t pos,
		   uint64_t end)
{
	uint8_t *buf = malloc(a->bs);
	uint64_t out_pos = 0;
	int ret = 0;

	if (!buf) {
		img_error(-ENOMEM, "out of memory");
		return -ENOMEM;
	}
	while (pos < end) {
		size_t n = (size_t)(end - pos < a->bs ? end - pos : a->bs);

		ret = vs_node_pread(in, pos, buf, n);
		if (ret < 0) {
			img_error(ret, "error while reading from input image file: %s",
				  strerror(-ret));
			break;
		}
		ret = vs_node_pwrite(out, out_pos, buf, n, 0);
		if (ret < 0) {
			img_error(ret, "error while writing to output image file: %s",
				  strerror(-ret));
			break;
		}
		pos += n;
		out_pos += n;
	}
	free(buf);
	if (ret == 0)
		ret = vs_node_flush(out);
	return ret;
}

static void dd_co(void *opaque)
{
	struct dd_args *a = opaque;
	struct img_open_args ia = {
		.filename = a->in_name,
		.fmt = a->fmt,
		.force_share = a->force_share,
		.key_secret = a->key_secret,
	};
	struct img_open_args oa = {
		.filename = a->out_name,
		.fmt = a->out_fmt,
		.writable = true,
	};
	struct vs_node *in, *out;
	struct vs_error err = { 0 };
	uint64_t size, start;
	bool skip_past;
	int ret;

	if (img_open(&in, &ia) < 0)
		return;
	if (!vs_format_create_opts(a->out_fmt)) {
		img_error(-EINVAL, "Unknown file format");
		goto out_in;
	}
	size = vs_node_size(in);
	if (a->has_count && a->count <= INT64_MAX / a->bs && a->count * a->bs < size)
		size = a->count * a->bs;
	skip_past = a->has_skip && (a->skip > INT64_MAX / a->bs || size < a->skip * a->bs);
	start = skip_past ? size : a->skip * a->bs;

	ret = vs_image_create(a->out_name, a->out_fmt, size - start, NULL, 0, &err);
	if (ret < 0) {
		img_error(ret, "%s: error while creating output image: %s", a->out_name,
			  err.msg[0] ? err.msg : strerror(-ret));
		goto out_in;
	}
	if (img_open(&out, &oa) < 0)
		goto out_in;
	if (skip_past)
		img_error(-EINVAL, "%s: cannot skip to specified offset", a->in_name);
	if (dd_copy(a, in, out, start, size) == 0)
		a->rc = 0;
	vs_node_close(out);
out_in:
	vs_node_close(in);
}

int img_cmd_dd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct dd_args a = { .out_fmt = "raw", .bs = 512, .rc = 1 };
	struct img_image_cli ic = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, ":hf:O:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 'O':
			a.out_fmt = optarg;
			break;
		case 'U':
			a.force_share = true;
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
	for (int i = optind; i < argc; i++)
		if (dd_operand(&a, argv[i]) < 0)
			return 1;
	if (!a.in_name || !a.out_name) {
		img_error(-EINVAL, "Must specify both input and output files");
		return 1;
	}
	if (img_image_name(&ic, &a.in_name, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (img_run(dd_co, &a) < 0)
		a.rc = 1;
	return a.rc;
}
