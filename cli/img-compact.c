/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img compact: offline compaction of a qcow2 image (qemu-img has no
 * such command). The image is opened read-write and exclusively (nobody
 * else may even read it meanwhile); the clusters are moved down into the
 * holes left by discarded and zeroed clusters and the file is truncated.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"

struct compact_args {
	const char *filename;
	const char *fmt;
	enum vs_cache_mode cache;
	enum img_output output;
	bool progress, quiet;
	int last;
	int rc;
};

static void compact_progress(uint64_t done, uint64_t total, void *opaque)
{
	struct compact_args *a = opaque;

	img_progress(a->progress, done, total, &a->last);
}

static int64_t file_bytes(const char *path, int64_t *alloc)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -1;
	*alloc = (int64_t)st.st_blocks * 512;
	return (int64_t)st.st_size;
}

static void compact_co(void *opaque)
{
	struct compact_args *a = opaque;
	struct vs_open_opts o = {
		.filename = a->filename,
		.format = a->fmt,
		.exclusive = true,
		.no_backing = true,
		.cache = a->cache,
	};
	struct vs_error err = { 0 };
	struct vs_node *node;
	int64_t before, after, abefore = 0, aafter = 0;
	struct json_writer w;
	int ret;

	before = file_bytes(a->filename, &abefore);
	ret = vs_image_open(&node, &o, &err);
	if (ret < 0) {
		img_error(ret, "Could not open '%s': %s", a->filename,
			  err.msg[0] ? err.msg : strerror(-ret));
		return;
	}
	if (strcmp(vs_node_format(node), "qcow2")) {
		img_error(-ENOTSUP, "Format '%s' does not support compaction (only qcow2)",
			  vs_node_format(node));
		vs_node_close(node);
		return;
	}
	/*
	 * Only files (and LVs mapped in user space) take the exclusive lock
	 * that keeps every other user out while clusters move.
	 */
	if (strcmp(vs_node_format(vs_node_file(node)), "file") &&
	    strcmp(vs_node_format(vs_node_file(node)), "lvmap")) {
		img_error(-ENOTSUP,
			  "'%s' is on a '%s' node, which cannot be locked against other "
			  "users: compaction needs an exclusive lock (copy it to a file first)",
			  a->filename, vs_node_format(vs_node_file(node)));
		vs_node_close(node);
		return;
	}
	img_progress(a->progress, 0, 1, &a->last);
	ret = vs_node_compact(node, compact_progress, a, &err);
	if (ret == 0)
		ret = vs_node_flush(node);
	vs_node_close(node);
	if (ret < 0) {
		img_error(ret, "Could not compact '%s': %s", a->filename,
			  err.msg[0] ? err.msg : strerror(-ret));
		return;
	}
	img_progress(a->progress, 1, 1, &a->last);
	img_progress_end(a->progress);
	after = file_bytes(a->filename, &aafter);
	if (a->output == IMG_OUTPUT_JSON) {
		json_init(&w, stdout, true);
		json_obj_begin(&w, NULL);
		json_int(&w, "old-size", before);
		json_int(&w, "new-size", after);
		json_int(&w, "old-allocated", abefore);
		json_int(&w, "new-allocated", aafter);
		json_obj_end(&w);
		printf("\n");
	} else if (!a->quiet) {
		printf("Image compacted: %" PRId64 " -> %" PRId64 " bytes.\n", before, after);
	}
	a->rc = 0;
}

enum { OPT_OUTPUT = 256 };

int img_cmd_compact(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ NULL, 0, NULL, 0 },
	};
	struct compact_args a = { .rc = 1, .cache = VS_CACHE_WRITEBACK, .last = -1 };
	int c;

	while ((c = getopt_long(argc, argv, ":hf:t:pq", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 't':
			if (img_parse_cache(optarg, &a.cache) < 0)
				return 1;
			/* Its crash safety rests on flushes between the steps. */
			if (a.cache == VS_CACHE_UNSAFE) {
				img_error(-EINVAL,
					  "compact needs flushes to be crash-safe: cache mode "
					  "'unsafe' is not allowed");
				return 1;
			}
			break;
		case 'p':
			a.progress = true;
			break;
		case 'q':
			a.quiet = true;
			break;
		case OPT_OUTPUT:
			if (img_parse_output(optarg, &a.output) < 0) {
				img_error(-EINVAL,
					  "--output must be used with human or json as argument.");
				return 1;
			}
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (a.quiet || a.output == IMG_OUTPUT_JSON)
		a.progress = false;
	if (optind != argc - 1)
		return img_usage_error("Expecting one image file name");
	a.filename = argv[optind];
	if (a.output == IMG_OUTPUT_JSON)
		img_set_json_errors(true);
	if (img_run(compact_co, &a) < 0)
		return 1;
	return a.rc;
}
