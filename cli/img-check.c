/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img check: consistency check and repair, with qemu-img check's
 * messages and exit codes (0 clean, 1 check failed, 2 corruptions, 3 leaks,
 * 63 the format cannot be checked).
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

#define CHECK_RC_NOT_SUPPORTED 63

struct check_args {
	const char *name; /* as given (an --image-opts string): JSON's "filename" */
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	enum img_output output;
	enum vs_cache_mode cache;
	unsigned fix;
	bool quiet;
	bool force_share;
	int rc;
};

static void check_human(const struct vs_check_result *r, bool quiet)
{
	if (!r->corruptions && !r->leaks && !r->check_errors) {
		img_printf(quiet, "No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			img_printf(
				quiet,
				"\n%" PRId64 " errors were found on the image.\n"
				"Data may be corrupted, or further writes to the image may corrupt it.\n",
				r->corruptions);
		if (r->leaks)
			img_printf(quiet,
				   "\n%" PRId64 " leaked clusters were found on the image.\n"
				   "This means waste of disk space, but no harm to data.\n",
				   r->leaks);
		if (r->check_errors)
			img_printf(quiet,
				   "\n%" PRId64
				   " internal errors have occurred during the check.\n",
				   r->check_errors);
	}
	if (r->has_cluster_stats && r->total_clusters && r->allocated_clusters)
		img_printf(quiet,
			   "%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, "
			   "%0.2f%% compressed clusters\n",
			   r->allocated_clusters, r->total_clusters,
			   r->allocated_clusters * 100.0 / r->total_clusters,
			   r->fragmented_clusters * 100.0 / r->allocated_clusters,
			   r->compressed_clusters * 100.0 / r->allocated_clusters);
	if (r->image_end_offset)
		img_printf(quiet, "Image end offset: %" PRId64 "\n", r->image_end_offset);
}

/* Members in qemu-img's order; optional ones only when non-zero, as qemu-img does. */
static void check_json(const struct check_args *a, const char *format,
		       const struct vs_check_result *r)
{
	struct json_writer w;
	bool st = r->has_cluster_stats;

	if (a->quiet)
		return;
	json_init(&w, stdout, true);
	json_obj_begin(&w, NULL);
	if (r->image_end_offset)
		json_int(&w, "image-end-offset", r->image_end_offset);
	if (st && r->compressed_clusters)
		json_int(&w, "compressed-clusters", r->compressed_clusters);
	if (st && r->total_clusters)
		json_int(&w, "total-clusters", r->total_clusters);
	if (r->corruptions)
		json_int(&w, "corruptions", r->corruptions);
	if (r->corruptions_fixed)
		json_int(&w, "corruptions-fixed", r->corruptions_fixed);
	json_int(&w, "check-errors", r->check_errors);
	if (r->leaks)
		json_int(&w, "leaks", r->leaks);
	if (r->leaks_fixed)
		json_int(&w, "leaks-fixed", r->leaks_fixed);
	if (st && r->allocated_clusters)
		json_int(&w, "allocated-clusters", r->allocated_clusters);
	json_str(&w, "filename", a->name);
	json_str(&w, "format", format);
	if (st && r->fragmented_clusters)
		json_int(&w, "fragmented-clusters", r->fragmented_clusters);
	json_obj_end(&w);
	printf("\n");
}

/* qemu-img prints each finding and repair on stderr as the check goes. */
static void check_report_line(const char *msg, void *opaque)
{
	(void)opaque;
	fprintf(stderr, "%s\n", msg);
}

/* Run the check (and the repair); returns 0 or -errno, the result in @r. */
static int check_run(struct check_args *a, struct vs_node *node, struct vs_check_result *r)
{
	int64_t leaks_fixed, corruptions_fixed;
	int ret;

	ret = vs_node_check_report(node, r, a->fix, check_report_line, NULL);
	if (ret < 0 || !(r->leaks_fixed || r->corruptions_fixed))
		return ret;
	leaks_fixed = r->leaks_fixed;
	corruptions_fixed = r->corruptions_fixed;
	if (a->output == IMG_OUTPUT_HUMAN)
		img_printf(a->quiet,
			   "The following inconsistencies were found and repaired:\n\n"
			   "    %" PRId64 " leaked clusters\n"
			   "    %" PRId64 " corruptions\n\n"
			   "Double checking the fixed image now...\n",
			   leaks_fixed, corruptions_fixed);
	fflush(stdout);
	ret = vs_node_check_report(node, r, 0, check_report_line, NULL);
	r->leaks_fixed = leaks_fixed;
	r->corruptions_fixed = corruptions_fixed;
	return ret;
}

static int check_exit_code(const struct vs_check_result *r)
{
	if (r->corruptions)
		return 2;
	if (r->leaks)
		return 3;
	return 0;
}

static void check_co(void *opaque)
{
	struct check_args *a = opaque;
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.key_secret = a->key_secret,
		.writable = a->fix != 0,
		.force_share = a->force_share,
		.no_backing = true,
		.no_repair = true,
		.for_check = true,
		.cache = a->cache,
	};
	struct vs_check_result r;
	struct vs_node *node;
	int ret;

	if (img_open(&node, &oa) < 0)
		return;
	ret = check_run(a, node, &r);
	if (ret == -ENOTSUP) {
		img_error(ret, "This image format does not support checks");
		a->rc = CHECK_RC_NOT_SUPPORTED;
		goto out_close;
	}
	if (ret == 0) {
		if (a->output == IMG_OUTPUT_HUMAN)
			check_human(&r, a->quiet);
		else
			check_json(a, vs_node_format(node), &r);
	}
	if (ret < 0 || r.check_errors) {
		if (ret < 0)
			img_error(ret, "Check failed: %s", strerror(-ret));
		else
			img_error(-EIO, "Check failed");
		a->rc = 1;
		goto out_close;
	}
	a->rc = check_exit_code(&r);
out_close:
	vs_node_close(node);
}

enum { OPT_OUTPUT = 256 };

int img_cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "repair", required_argument, NULL, 'r' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct check_args a = { .output = IMG_OUTPUT_HUMAN, .rc = 1 };
	struct img_image_cli ic = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, ":hf:r:T:qU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a.fmt = optarg;
			break;
		case 'r':
			if (!strcmp(optarg, "leaks")) {
				a.fix = VS_CHECK_FIX_LEAKS;
			} else if (!strcmp(optarg, "all")) {
				a.fix = VS_CHECK_FIX_LEAKS | VS_CHECK_FIX_ERRORS;
			} else {
				return img_usage_error("Unknown option value for -r "
						       "(expecting 'leaks' or 'all'): %s",
						       optarg);
			}
			break;
		case 'T':
			if (vs_cache_mode_parse(optarg, &a.cache) < 0) {
				img_error(-EINVAL, "Invalid source cache option: %s", optarg);
				return 1;
			}
			break;
		case 'q':
			a.quiet = true;
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
	a.name = a.filename = argv[optind];
	if (img_image_name(&ic, &a.filename, &a.fmt, &a.key_secret) < 0)
		return 1;
	if (a.fix && a.force_share) {
		img_error(-EINVAL,
			  "Could not open '%s': force-share=on can only be used with "
			  "read-only images",
			  a.filename);
		return 1;
	}
	img_set_json_errors(a.output == IMG_OUTPUT_JSON);
	if (img_run(check_co, &a) < 0)
		return 1;
	return a.rc;
}
