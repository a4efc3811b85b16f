/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img snapshot: list, create, apply and delete internal snapshots,
 * with qemu-img snapshot's options, output and messages.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

enum snapshot_action { SN_NONE, SN_LIST, SN_APPLY, SN_CREATE, SN_DELETE };

struct snapshot_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts encrypt.key-secret */
	const char *name;
	enum snapshot_action action;
	bool quiet;
	bool force_share;
	int rc;
};

static void snapshot_co(void *opaque)
{
	struct snapshot_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.writable = a->action != SN_LIST,
		.force_share = a->force_share,
		.no_backing = true,
		.key_secret = a->key_secret,
	};
	struct vs_error err = { 0 };
	struct vs_image_info info;
	struct vs_node *node;
	int ret = 0;

	if (img_open(&node, &oa) < 0)
		return;
	switch (a->action) {
	case SN_NONE:
		break;
	case SN_LIST:
		memset(&info, 0, sizeof(info));
		ret = vs_node_get_info(node, &info);
		if (ret < 0) {
			img_error(ret, "Could not get information of '%s': %s", a->filename,
				  strerror(-ret));
			break;
		}
		if (info.nb_snapshots)
			img_print_snapshots(&info);
		vs_image_info_free(&info);
		break;
	case SN_CREATE:
		ret = vs_node_snapshot_create(node, a->name,
					      &(struct vs_snapshot_opts){ .icount = 0 }, &err);
		if (ret < 0)
			img_error(ret, "Could not create snapshot '%s': %d (%s)", a->name, ret,
				  err.msg[0] ? err.msg : strerror(-ret));
		break;
	case SN_APPLY:
		ret = vs_node_snapshot_apply(node, a->name, &err);
		if (ret < 0)
			img_error(ret, "Could not apply snapshot '%s': %s", a->name,
				  err.msg[0] ? err.msg : strerror(-ret));
		break;
	case SN_DELETE:
		ret = vs_node_snapshot_delete(node, a->name, &err);
		if (ret < 0)
			img_error(ret, "Could not delete snapshot '%s': %s", a->name,
				  err.msg[0] ? err.msg : strerror(-ret));
		break;
	}
	if (ret == 0 && a->action != SN_LIST && a->action != SN_NONE) {
		ret = vs_node_flush(node);
		if (ret < 0)
			img_error(ret, "Could not flush '%s': %s", a->filename, strerror(-ret));
	}
	vs_node_close(node);
	if (ret == 0)
		a->rc = 0;
}

int img_cmd_snapshot(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct snapshot_args a = { .rc = 1 };
	struct img_image_cli ic = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, ":la:c:d:f:hqU", longopts, NULL)) != -1) {
		enum snapshot_action act = SN_NONE;

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
		case 'U':
			a.force_share = true;
			break;
		case 'l':
			act = SN_LIST;
			break;
		case 'a':
			act = SN_APPLY;
			break;
		case 'c':
			act = SN_CREATE;
			break;
		case 'd':
			act = SN_DELETE;
			break;
		case IMG_OPT_OBJECT:
		case IMG_OPT_IMAGE_OPTS:
			if (img_image_getopt(&ic, c, optarg) < 0)
				return 1;
			continue;
		default:
			return img_getopt_error(argv, c);
		}
		if (act == SN_NONE)
			continue;
		if (a.action != SN_NONE)
			return img_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
		a.action = act;
		if (act != SN_LIST)
			a.name = optarg;
	}
	if (optind != argc - 1)
		return img_usage_error("Expecting one image file name");
	a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (a.force_share && a.action != SN_LIST && a.action != SN_NONE) {
		img_error(-EINVAL,
			  "Could not open '%s': force-share=on can only be used with read-only "
			  "images",
			  a.filename);
		return 1;
	}
	return img_run(snapshot_co, &a) < 0 ? 1 : a.rc;
}
