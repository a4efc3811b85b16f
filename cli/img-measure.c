/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img measure: the size an image of the output format needs for a
 * given virtual size (--size) or for the content of an existing image, with
 * qemu-img measure's options, numbers, output and messages.
 *
 * For an input image, the data is counted as qemu-img counts it: every
 * target cluster (qcow2: -o cluster_size, default 64 KiB) that holds a byte
 * block status reports as data and not zero counts whole. With a backing
 * file in -o, every cluster counts (the new backing file may share nothing).
 */
#include "img.h"
#include "vstor/parse.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

struct measure_args {
	const char *filename;
	const char *fmt;
	const char *key_secret; /* --image-opts' key-secret */
	const char *out_fmt;
	const char *snapshot;
	const char *size_str;
	struct img_kv_list opts;
	struct img_kv_list
		json_opts; /* a json: name's options (the strings a->filename points into) */
	enum img_output output;
	bool force_share;
	int rc;
};

/* Data of @n counted in whole clusters of @g bytes, as qemu's qcow2 measure counts it. */
static int measure_data(struct vs_node *n, uint64_t g, uint64_t *out)
{
	uint64_t size = vs_node_size(n), off = 0, req = 0;

	while (off < size) {
		uint64_t pnum;
		unsigned st;
		int ret = vs_node_block_status_above(n, off, size - off, &pnum, &st, NULL, NULL,
						     NULL);

		if (ret < 0)
			return ret;
		if (!(st & VS_BS_ZERO) && (st & VS_BS_DATA)) {
			uint64_t end = (off + pnum + g - 1) / g * g;

			req += end - off / g * g;
			pnum = end - off;
		}
		off += pnum;
	}
	*out = req;
	return 0;
}

static bool is_number(const char *s)
{
	char *end;

	if (s[0] == '-')
		return false;
	(void)strtoull(s, &end, 0);
	return end != s && !*end;
}

/* The -o values by their type, with qemu-img's messages (as create checks them). */
static int measure_check_opts(const struct measure_args *a)
{
	const struct vs_create_opt_desc *d0 = vs_format_create_opts(a->out_fmt), *d;
	uint64_t v;

	for (size_t i = 0; d0 && i < a->opts.n; i++) {
		const struct vs_kv *kv = &a->opts.kv[i];

		for (d = d0; d->name && strcmp(d->name, kv->key); d++)
			;
		if (!d->name) {
			img_error(-EINVAL, "Invalid parameter '%s'", kv->key);
		} else if (!strcmp(d->type, "size") && vs_parse_size(kv->value, &v) < 0) {
			img_error(-EINVAL,
				  "Parameter '%s' expects a non-negative number below 2^64\n"
				  "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
				  "tera-, peta-\nand exabytes, respectively.",
				  kv->key);
		} else if (!strcmp(d->type, "number") && !is_number(kv->value)) {
			img_error(-EINVAL, "Parameter '%s' expects a number", kv->key);
		} else {
			continue;
		}
		img_error(-EINVAL, "Invalid options for file format '%s'", a->out_fmt);
		return -1;
	}
	return 0;
}

static void measure_print(const struct measure_args *a, const struct vs_measure_result *r,
			  bool has_bitmaps)
{
	struct json_writer w;

	if (a->output == IMG_OUTPUT_HUMAN) {
		printf("required size: %" PRIu64 "\n", r->required);
		printf("fully allocated size: %" PRIu64 "\n", r->fully_allocated);
		if (has_bitmaps)
			printf("bitmaps size: %" PRIu64 "\n", r->bitmaps);
		return;
	}
	json_init(&w, stdout, true);
	json_obj_begin(&w, NULL);
	if (has_bitmaps)
		json_uint(&w, "bitmaps", r->bitmaps);
	json_uint(&w, "required", r->required);
	json_uint(&w, "fully-allocated", r->fully_allocated);
	json_obj_end(&w);
	printf("\n");
}

/*
 * What qemu-img measure counts for the persistent bitmaps of @src in a
 * qcow2 target of @cluster_size clusters: every bitmap fully allocated,
 * its table, and the directory, each rounded up to whole clusters.
 */
static int measure_bitmaps(struct vs_node *src, uint64_t cluster_size, uint64_t *out)
{
	struct vs_image_info info;
	uint64_t size = vs_node_size(src), total = 0, dir = 0;
	int ret;

	memset(&info, 0, sizeof(info));
	ret = vs_node_get_info(src, &info);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < info.nb_bitmaps; i++) {
		uint64_t gran = info.bitmaps[i].granularity;
		uint64_t bits = size / gran + (size % gran != 0);
		uint64_t clusters = ((bits + 7) / 8 + cluster_size - 1) / cluster_size;

		total += clusters * cluster_size;
		total += (clusters * 8 + cluster_size - 1) / cluster_size * cluster_size;
		dir += (24 + strlen(info.bitmaps[i].name) + 7) & ~7ull;
	}
	total += (dir + cluster_size - 1) / cluster_size * cluster_size;
	vs_image_info_free(&info);
	*out = total;
	return 0;
}

static void measure_co(void *opaque)
{
	struct measure_args *a = opaque;
	struct vs_measure_result res;
	struct vs_error err = { 0 };
	struct vs_node *src = NULL;
	uint64_t size = 0, data = 0, g = 1;
	bool qcow2 = !strcmp(a->out_fmt, "qcow2"), has_bitmaps = false;
	const char *v;
	int ret;

	if (measure_check_opts(a) < 0)
		return;
	if (a->size_str) {
		if (img_cvtnum("image size", a->size_str, &size) < 0)
			return;
	} else {
		struct vs_open_opts o = {
			.filename = a->filename,
			.format = a->fmt,
			.read_only = true,
			.force_share = a->force_share,
			.snapshot = a->snapshot,
			.data_file = img_image_data_file(a->filename),
		};

		if (img_secret_fill(&o, a->key_secret) < 0)
			return;
		ret = vs_image_open(&src, &o, &err);
		img_secret_wipe(&o);
		if (ret < 0) {
			img_error(ret, "Could not open '%s': %s", img_image_shown(a->filename),
				  err.msg[0] ? err.msg : strerror(-ret));
			return;
		}
		size = vs_node_size(src);
		if (qcow2) {
			g = 65536;
			v = img_kv_get(&a->opts, "cluster_size");
			if (v && (vs_parse_size(v, &g) < 0 || !g || g > (2u << 20)))
				g = 65536;
			v = img_kv_get(&a->opts, "compat");
			has_bitmaps = !strcmp(vs_node_format(src), "qcow2") &&
				      !(v && (!strcmp(v, "0.10") || !strcmp(v, "v2")));
		}
		if (img_kv_get(&a->opts, "backing_file")) {
			data = (size + g - 1) / g * g;
		} else {
			ret = measure_data(src, g, &data);
			if (ret < 0) {
				img_error(ret, "Unable to get block status: %s", strerror(-ret));
				goto out;
			}
		}
	}
	ret = vs_image_measure(a->out_fmt, size, data, a->opts.kv, a->opts.n, &res, &err);
	if (ret < 0) {
		if (ret == -ENOTSUP)
			img_error(ret, "Block driver '%s' does not support size measurement",
				  a->out_fmt);
		else
			img_error(ret, "%s", err.msg[0] ? err.msg : strerror(-ret));
		if (!strncmp(err.msg, "Invalid parameter '", 19) ||
		    !strncmp(err.msg, "Parameter '", 11))
			img_error(ret, "Invalid options for file format '%s'", a->out_fmt);
		goto out;
	}
	if (has_bitmaps) {
		ret = measure_bitmaps(src, g, &res.bitmaps);
		if (ret < 0) {
			img_error(ret, "Could not get information of '%s': %s", a->filename,
				  strerror(-ret));
			goto out;
		}
	}
	measure_print(a, &res, has_bitmaps);
	a->rc = 0;
out:
	vs_node_close(src);
}

enum { OPT_SIZE = 256, OPT_OUTPUT };

static int measure_main(struct measure_args *a, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct img_image_cli ic = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, ":hf:O:o:l:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'f':
			a->fmt = optarg;
			break;
		case 'O':
			a->out_fmt = optarg;
			break;
		case 'o':
			if (img_kv_parse(&a->opts, optarg) < 0) {
				img_error(-ENOMEM, "Out of memory");
				return 1;
			}
			break;
		case 'l':
			if (!strncmp(optarg, "snapshot.name=", 14))
				a->snapshot = optarg + 14;
			else if (!strncmp(optarg, "snapshot.id=", 12))
				a->snapshot = optarg + 12;
			else
				a->snapshot = optarg;
			if (!a->snapshot[0] || strchr(a->snapshot, ',')) {
				img_error(-EINVAL, "Failed in parsing snapshot param '%s'", optarg);
				return 1;
			}
			break;
		case 'U':
			a->force_share = true;
			break;
		case OPT_SIZE:
			a->size_str = optarg;
			break;
		case OPT_OUTPUT:
			if (img_parse_output(optarg, &a->output) < 0) {
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
	if (optind < argc)
		a->filename = argv[optind++];
	if (a->filename && !ic.image_opts && !strncmp(a->filename, "json:", 5)) {
		/* It opens the source itself, not through img_open(): the name here. */
		struct img_open_args oa = { .fmt = a->fmt };

		if (img_json_filename(&a->json_opts, a->filename, &oa) < 0)
			return 1;
		img_image_origin_add(oa.filename, a->filename, oa.data_file);
		a->filename = oa.filename;
		a->fmt = oa.fmt;
		a->key_secret = oa.key_secret;
	}
	if (a->filename && img_image_name(&ic, &a->filename, &a->fmt, &a->key_secret) < 0)
		return 1;
	if (optind < argc)
		return img_usage_error("Unexpected argument: %s", argv[optind]);
	if (a->filename && a->size_str) {
		img_error(-EINVAL, "--size N cannot be used together with a filename.");
		return 1;
	}
	if (!a->filename && !a->size_str) {
		img_error(-EINVAL, "Either --size N or one filename must be specified.");
		return 1;
	}
	if (a->size_str && a->snapshot) {
		img_error(-EINVAL, "--size N cannot be used together with -l.");
		return 1;
	}
	if (a->opts.help) {
		img_error(-ENOTSUP,
			  "-o help is not supported by measure; see 'create -f %s -o help'",
			  a->out_fmt);
		return 1;
	}
	if (img_kv_get(&a->opts, "size")) {
		img_error(-EINVAL, "Invalid parameter 'size'");
		img_error(-EINVAL, "Invalid options for file format '%s'", a->out_fmt);
		return 1;
	}
	if (a->output == IMG_OUTPUT_JSON)
		img_set_json_errors(true);
	if (img_run(measure_co, a) < 0)
		return 1;
	return a->rc;
}

int img_cmd_measure(int argc, char **argv)
{
	struct measure_args a = { .out_fmt = "raw", .rc = 1 };
	int rc = measure_main(&a, argc, argv);

	img_kv_free(&a.opts);
	img_kv_free(&a.json_opts);
	return rc;
}
