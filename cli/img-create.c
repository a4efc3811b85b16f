/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img create: create an image, with qemu-img create's options, its
 * "Formatting ..." line and its messages.
 */
#include "driver.h" /* vs_json_name_resolve */
#include "img.h"
#include "vstor/parse.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct create_args {
	const char *filename;
	const char *fmt;
	const char *size_str;
	struct img_kv_list opts;
	const struct vs_create_opt_desc *desc;
	uint64_t size;
	bool has_size;
	bool unsafe;
	bool quiet;
	int rc;
};

/* Options of the file protocol that qemu-img takes: accepted, shown, not used. */
static const struct vs_create_opt_desc file_opts[] = {
	{ "nocow", "bool", "Turn off copy-on-write (valid only on btrfs)" },
	{ "extent_size_hint", "size", "Extent size hint for the image file, 0 to disable" },
	/* Listed unless the format has its own (vmdk, vpc ... have none). */
	{ "preallocation", "string", "Preallocation mode (allowed values: off, falloc, full)" },
	{ NULL, NULL, NULL },
};

/* The order and defaults of qemu-img's "Formatting" line. */
struct fmt_field {
	const char *key;
	const char *def;
};

static const struct fmt_field qcow2_fields[] = {
	{ "encryption", NULL },
	{ "encrypt.format", NULL },
	{ "encrypt.key-secret", NULL },
	{ "encrypt.cipher-alg", NULL },
	{ "encrypt.cipher-mode", NULL },
	{ "encrypt.ivgen-alg", NULL },
	{ "encrypt.ivgen-hash-alg", NULL },
	{ "encrypt.hash-alg", NULL },
	{ "encrypt.iter-time", NULL },
	{ "cluster_size", "65536" },
	{ "extended_l2", "off" },
	{ "preallocation", NULL },
	{ "compression_type", "zlib" },
	{ "size", NULL },
	{ "compat", NULL },
	{ "backing_file", NULL },
	{ "backing_fmt", NULL },
	{ "data_file", NULL },
	{ "data_file_raw", NULL },
	{ "lazy_refcounts", "off" },
	{ "refcount_bits", "16" },
	{ "nocow", NULL },
	{ "extent_size_hint", NULL },
	{ NULL, NULL },
};

static const struct fmt_field raw_fields[] = {
	{ "size", NULL },
	{ "nocow", NULL },
	{ "preallocation", NULL },
	{ "extent_size_hint", NULL },
	{ NULL, NULL },
};

static const struct vs_create_opt_desc *desc_find(const struct vs_create_opt_desc *d,
						  const char *key)
{
	for (; d && d->name; d++)
		if (!strcmp(d->name, key))
			return d;
	for (d = file_opts; d->name; d++)
		if (!strcmp(d->name, key))
			return d;
	return NULL;
}

/* "-o help": the options of the format, sorted by name, as qemu-img lists them. */
static int create_help(const char *fmt, bool with_filename)
{
	const struct vs_create_opt_desc *d = vs_format_create_opts(fmt);
	struct vs_create_opt_desc list[128];
	size_t n = 0;

	if (!d) {
		img_error(-EINVAL, "Unknown file format '%s'", fmt);
		return 1;
	}
	for (; d->name && n < 126; d++) {
		/*
		 * The preallocation raw and luks hand down to the file is the
		 * protocol's option in qemu-img: listed with a target file only.
		 */
		if (!with_filename && !strcmp(d->name, "preallocation") &&
		    !strcmp(d->help, "Preallocation mode (allowed values: off, falloc, full)"))
			continue;
		list[n++] = *d;
	}
	if (with_filename) {
		size_t nfmt = n;

		for (d = file_opts; d->name; d++) {
			size_t i = 0;

			while (i < nfmt && strcmp(list[i].name, d->name))
				i++;
			if (i == nfmt)
				list[n++] = *d;
		}
	}
	if (with_filename)
		printf("Supported options:\n");
	else
		printf("Supported %s options:\n", fmt);
	img_print_opts(list, n);
	if (!with_filename)
		printf("\nThe protocol level may support further options.\n"
		       "Specify the target filename to include those options.\n");
	return 0;
}

static void create_error(const struct create_args *a, int code, const char *msg)
{
	img_error(code, "%s: %s", a->filename, msg);
}

/* Check one -o value against its type; sizes and numbers become plain integers. */
static int create_check_value(struct create_args *a, struct vs_kv *kv,
			      const struct vs_create_opt_desc *d)
{
	char msg[512], num[32];
	uint64_t v;
	char *end;

	if (!strcmp(d->type, "size")) {
		if (vs_parse_size(kv->value, &v) < 0) {
			snprintf(msg, sizeof(msg),
				 "Parameter '%s' expects a non-negative number below 2^64\n"
				 "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
				 "tera-, peta-\nand exabytes, respectively.",
				 kv->key);
			create_error(a, -EINVAL, msg);
			return -EINVAL;
		}
	} else if (!strcmp(d->type, "number")) {
		errno = 0;
		v = strtoull(kv->value, &end, 0);
		if (errno || end == kv->value || *end || kv->value[0] == '-') {
			snprintf(msg, sizeof(msg), "Parameter '%s' expects a number", kv->key);
			create_error(a, -EINVAL, msg);
			return -EINVAL;
		}
	} else if (!strcmp(d->type, "bool")) {
		bool b;

		if (vs_parse_bool(kv->value, &b) < 0) {
			snprintf(msg, sizeof(msg), "Parameter '%s' expects 'on' or 'off'", kv->key);
			create_error(a, -EINVAL, msg);
			return -EINVAL;
		}
		return 0;
	} else {
		return 0;
	}
	snprintf(num, sizeof(num), "%" PRIu64, v);
	end = strdup(num);
	if (!end)
		return -ENOMEM;
	free((char *)kv->value);
	kv->value = end;
	return 0;
}

static int create_check_opts(struct create_args *a)
{
	for (size_t i = 0; i < a->opts.n; i++) {
		struct vs_kv *kv = &a->opts.kv[i];
		const struct vs_create_opt_desc *d = desc_find(a->desc, kv->key);
		char msg[512];

		if (!d && !strcmp(kv->key, "backing_file")) {
			snprintf(msg, sizeof(msg),
				 "Backing file not supported for file format '%s'", a->fmt);
			create_error(a, -ENOTSUP, msg);
			return -ENOTSUP;
		}
		if (!d) {
			snprintf(msg, sizeof(msg), "Invalid parameter '%s'", kv->key);
			create_error(a, -EINVAL, msg);
			return -EINVAL;
		}
		if (create_check_value(a, kv, d) < 0)
			return -EINVAL;
	}
	return 0;
}

static int create_take_size(struct create_args *a)
{
	const char *s = img_kv_get(&a->opts, "size");

	if (!s)
		return 0;
	if (a->has_size) {
		create_error(a, -EINVAL, "The image size must be specified only once");
		return -EINVAL;
	}
	a->size = strtoull(s, NULL, 10); /* normalised by create_check_opts() */
	a->has_size = true;
	img_kv_remove(&a->opts, "size");
	return 0;
}

/* Open the backing file as qemu-img does: it must exist, and its format be named. */
static int create_check_backing(struct create_args *a)
{
	const char *bf = img_kv_get(&a->opts, "backing_file");
	const char *bfmt = img_kv_get(&a->opts, "backing_fmt");
	struct vs_open_opts o = { .read_only = true, .force_share = true, .no_backing = true };
	struct vs_error err = { 0 };
	struct vs_node *b;
	char path[PATH_MAX], msg[VS_ERROR_MSG_MAX + 64], json_fmt[32] = "";
	bool json;
	int ret;

	if (!bf)
		return 0;
	json = !strncmp(bf, "json:", 5);
	if (!bf[0]) {
		create_error(a, -EINVAL, "Expected backing file name, got empty string");
		return -EINVAL;
	}
	if (a->unsafe) {
		/* Nothing is opened, so the format cannot be detected: it must be given. */
		if (!bfmt || !bfmt[0]) {
			create_error(a, -EINVAL, "Backing file specified without backing format");
			return -EINVAL;
		}
		return 0;
	}
	if (json) {
		/* The file it names, not relative to the new image; -F wins over its driver. */
		ret = vs_json_name_resolve(bf, path, sizeof(path), json_fmt, sizeof(json_fmt),
					   &err);
		if (ret < 0) {
			snprintf(msg, sizeof(msg), "%s\nCould not open backing image.", err.msg);
			create_error(a, ret, msg);
			return ret;
		}
	} else if (img_path_combine(path, sizeof(path), a->filename, bf) < 0) {
		create_error(a, -ENAMETOOLONG, "Backing file name too long");
		return -ENAMETOOLONG;
	}
	o.filename = path;
	o.format = bfmt && bfmt[0] ? bfmt : json_fmt[0] ? json_fmt : NULL;
	ret = vs_image_open(&b, &o, &err);
	if (ret < 0) {
		snprintf(msg, sizeof(msg), "%s\nCould not open backing image.",
			 err.msg[0] ? err.msg : strerror(-ret));
		create_error(a, ret, msg);
		return ret;
	}
	if (json && !(bfmt && bfmt[0]))
		o.format = NULL; /* detected from the name's driver: still not given */
	if (!o.format) {
		snprintf(msg, sizeof(msg),
			 "Backing file specified without backing format\nDetected format of %s.",
			 vs_node_format(b));
		img_error_hint(-EINVAL, "%s: %s", a->filename, msg);
		vs_node_close(b);
		return -EINVAL;
	}
	if (!a->has_size) {
		a->size = vs_node_size(b);
		a->has_size = true;
	}
	vs_node_close(b);
	return 0;
}

static void print_escaped(const char *s)
{
	for (; *s; s++) {
		if (*s == ',')
			putchar(',');
		putchar(*s);
	}
}

static void print_field(const struct create_args *a, const char *key, const char *def)
{
	const char *v = img_kv_get(&a->opts, key);
	const struct vs_create_opt_desc *d = desc_find(a->desc, key);

	if (!strcmp(key, "size")) {
		printf(" size=%" PRIu64, a->size);
		return;
	}
	if (!v)
		v = def;
	if (!v)
		return;
	printf(" %s=", key);
	if (d && !strcmp(d->type, "string"))
		print_escaped(v);
	else
		printf("%s", v);
}

static bool field_listed(const struct fmt_field *f, const char *key)
{
	for (; f && f->key; f++)
		if (!strcmp(f->key, key))
			return true;
	return false;
}

/* "Formatting 'F', fmt=qcow2 cluster_size=65536 ...", in qemu-img's order. */
static void create_print(const struct create_args *a)
{
	const struct fmt_field *fields = NULL;

	if (a->quiet)
		return;
	if (!strcmp(a->fmt, "qcow2"))
		fields = qcow2_fields;
	else if (!strcmp(a->fmt, "raw"))
		fields = raw_fields;
	printf("Formatting '%s', fmt=%s", a->filename, a->fmt);
	if (!fields)
		print_field(a, "size", NULL);
	for (const struct fmt_field *f = fields; f && f->key; f++)
		print_field(a, f->key, f->def);
	for (size_t i = 0; i < a->opts.n; i++)
		if (!field_listed(fields, a->opts.kv[i].key))
			print_field(a, a->opts.kv[i].key, NULL);
	printf("\n");
	fflush(stdout);
}

static void create_co(void *opaque)
{
	struct create_args *a = opaque;
	struct vs_error err = { 0 };
	int ret;

	if (create_check_opts(a) < 0 || create_take_size(a) < 0 || create_check_backing(a) < 0)
		return;
	if (!a->has_size) {
		create_error(a, -EINVAL, "Image creation needs a size parameter");
		return;
	}
	create_print(a);
	img_kv_remove(&a->opts, "nocow");
	img_kv_remove(&a->opts, "extent_size_hint");
	ret = vs_image_create_ex(a->filename, a->fmt, a->size, a->opts.kv, a->opts.n,
				 a->unsafe ? VS_CREATE_NO_BACKING_CHECK : 0, &err);
	if (ret < 0) {
		create_error(a, ret, err.msg[0] ? err.msg : strerror(-ret));
		return;
	}
	a->rc = 0;
}

static int create_parse_size(struct create_args *a)
{
	if (img_cvtnum("image size", a->size_str, &a->size) < 0) {
		return -1;
	}
	a->has_size = true;
	return 0;
}

static int create_main(struct create_args *a, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, 256 },
		{ NULL, 0, NULL, 0 },
	};
	const char *backing = NULL, *backing_fmt = NULL;
	int c;

	while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			img_help();
			return 0;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'f':
			a->fmt = optarg;
			break;
		case 'o':
			if (img_kv_parse(&a->opts, optarg) < 0) {
				img_error(-ENOMEM, "Out of memory");
				return 1;
			}
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'u':
			a->unsafe = true;
			break;
		case 256:
			if (img_object_add(optarg) < 0)
				return 1;
			break;
		default:
			return img_getopt_error(argv, c);
		}
	}
	if (a->opts.help)
		return create_help(a->fmt, optind < argc);
	if (optind >= argc)
		return img_usage_error("Expecting image file name");
	a->filename = argv[optind++];
	if (optind < argc)
		a->size_str = argv[optind++];
	if (optind != argc)
		return img_usage_error("Unexpected argument: %s", argv[optind]);
	a->desc = vs_format_create_opts(a->fmt);
	if (!a->desc) {
		img_error(-EINVAL, "%s: Unknown file format '%s'", a->filename, a->fmt);
		return 1;
	}
	if (a->size_str && create_parse_size(a) < 0)
		return 1;
	if ((backing && img_kv_set(&a->opts, "backing_file", backing) < 0) ||
	    (backing_fmt && img_kv_set(&a->opts, "backing_fmt", backing_fmt) < 0)) {
		img_error(-ENOMEM, "Out of memory");
		return 1;
	}
	if (img_run(create_co, a) < 0)
		return 1;
	return a->rc;
}

int img_cmd_create(int argc, char **argv)
{
	struct create_args a = { .fmt = "raw", .rc = 1 };
	int rc = create_main(&a, argc, argv);

	img_kv_free(&a.opts);
	return rc;
}
