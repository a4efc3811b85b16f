/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img amend: change format options of an existing image (qcow2:
 * compat, lazy_refcounts, refcount_bits, backing_file, backing_fmt, size),
 * with qemu-img amend's options and messages.
 */
#include "img.h"
#include "vstor/parse.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

/* The driver option that carries --force (libstore/crypto-luks.h's VS_LUKS_AMEND_FORCE). */
#define VS_LUKS_AMEND_FORCE_KEY "x-vstor-force"

struct amend_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts encrypt.key-secret / key-secret */
	struct img_image_cli image_cli;
	bool force;
	struct img_kv_list opts;
	enum vs_cache_mode cache;
	bool progress, quiet;
	int rc;
};

/* "-o help": the options the format's driver amends, as qemu-img lists them. */
static int amend_help(const char *fmt)
{
	const struct vs_create_opt_desc *d = vs_format_amend_opts(fmt);
	struct vs_create_opt_desc list[64];
	size_t n = 0;

	if (!d) {
		img_error(-EINVAL, "Unknown file format '%s'", fmt);
		return 1;
	}
	for (; d->name && n < sizeof(list) / sizeof(list[0]); d++)
		list[n++] = *d;
	if (!n) {
		img_error(-ENOTSUP, "Format driver '%s' does not support option amendment", fmt);
		return 1;
	}
	printf("Amend options for '%s':\n", fmt);
	img_print_opts(list, n);
	return 0;
}

static void amend_co(void *opaque)
{
	struct amend_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.writable = true,
		.cache = a->cache,
		.key_secret = a->key_secret,
	};
	struct vs_error err = { 0 };
	struct vs_node *node;
	int last = -1, ret;

	/* Sizes are plain byte counts for the driver. */
	for (size_t i = 0; i < a->opts.n; i++) {
		uint64_t v;
		char num[32];

		if (strcmp(a->opts.kv[i].key, "size"))
			continue;
		if (vs_parse_size(a->opts.kv[i].value, &v) < 0) {
			img_error(-EINVAL,
				  "Parameter 'size' expects a non-negative number below 2^64\n"
				  "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
				  "tera-, peta-\nand exabytes, respectively.");
			return;
		}
		snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
		if (img_kv_set(&a->opts, "size", num) < 0) {
			img_error(-ENOMEM, "Out of memory");
			return;
		}
		break;
	}
	if (img_open(&node, &oa) < 0)
		return;
	if (a->opts.help) { /* without -f: the options of the image's format */
		a->rc = amend_help(vs_node_format(node));
		goto out;
	}
	if (a->force && img_kv_set(&a->opts, VS_LUKS_AMEND_FORCE_KEY, "on") < 0) {
		img_error(-ENOMEM, "Out of memory");
		goto out;
	}
	if (strcmp(vs_node_format(node), "qcow2") && strcmp(vs_node_format(node), "luks")) {
		img_error(-ENOTSUP, "Format driver '%s' does not support option amendment",
			  vs_node_format(node));
		goto out;
	}
	img_progress(a->progress, 0, 1, &last);
	ret = vs_node_amend(node, a->opts.kv, a->opts.n, &err);
	if (ret == 0)
		ret = vs_node_flush(node);
	if (ret < 0) {
		img_error(ret, "%s", err.msg[0] ? err.msg : strerror(-ret));
		goto out;
	}
	img_progress(a->progress, 1, 1, &last);
	img_progress_end(a->progress);
	a->rc = 0;
out:
	vs_node_close(node);
}

enum { OPT_FORCE = 256 };

static int amend_main(struct amend_args *a, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ NULL, 0, NULL, 0 },
	};
	bool has_o = false;
	int c;

	while ((c = getopt_long(argc, argv, ":ho:f:t:pq", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'o':
			has_o = true;
			if (img_kv_parse(&a->opts, optarg) < 0) {
				img_error(-ENOMEM, "Out of memory");
				return 1;
			}
			break;
		case 'f':
			a->fmt = optarg;
			break;
		case 't':
			if (img_parse_cache(optarg, &a->cache) < 0)
				return 1;
			break;
		case 'p':
			a->progress = true;
			break;
		case 'q':
			a->quiet = true;
			break;
		case OPT_FORCE:
			a->force = true; /* erasing the last key slot(s) */
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&a->image_cli, c, optarg) < 0)
				return 1;
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (!has_o)
		return img_usage_error("Must specify options (-o)");
	if (a->quiet)
		a->progress = false;
	if (a->opts.help && a->fmt) /* as qemu-img: with or without a file name */
		return amend_help(a->fmt);
	if (optind != argc - 1) {
		img_error(-EINVAL, "Expecting one image file name");
		return 1;
	}
	a->filename = argv[optind];
	if (img_image_name(&a->image_cli, &a->filename, &a->fmt, &a->key_secret) < 0)
		return 1;
	if (a->opts.help && a->fmt)
		return amend_help(a->fmt);
	if (img_run(amend_co, a) < 0)
		return 1;
	return a->rc;
}

int img_cmd_amend(int argc, char **argv)
{
	struct amend_args a = { .rc = 1, .cache = VS_CACHE_WRITEBACK };
	int rc = amend_main(&a, argc, argv);

	img_kv_free(&a.opts);
	return rc;
}
