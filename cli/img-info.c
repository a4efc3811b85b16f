/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img info: what qemu-img info prints, in its layout and field order.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"

/* The image and every level of the deepest chain the engine opens. */
#define INFO_MAX_CHAIN (VS_MAX_BACKING_DEPTH + 1)

struct info_args {
	const char *filename;
	const char *name; /* as qemu-img shows it (json:{...} for --image-opts with a secret) */
	const char *fmt;
	enum img_output output;
	bool chain;
	bool force_share;
	const char *key_secret;				     /* --image-opts key-secret= */
	const char *data_file;				     /* json: data-file.filename= */
	const char *backing_secret[IMG_MAX_BACKING_SECRETS]; /* backing.encrypt.key-secret= */
	int rc;
};

/*
 * qemu-img prints the members of a dictionary in the iteration order of its
 * hash table; we reproduce that order for the keys qcow2 reports.
 */
static int specific_rank(const char *key)
{
	static const char *const order[] = {
		"compat",    "compression-type", "lazy-refcounts", "bitmaps", "refcount-bits",
		"data-file", "encrypt",		 "data-file-raw",  "corrupt", "extended-l2",
	};

	/* A nested block's entries ("encrypt.cipher-alg") go where the block goes. */
	size_t blen = strcspn(key, ".");

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (strlen(order[i]) == blen && !strncmp(order[i], key, blen))
			return (int)i;
	return 1000;
}

/* The entry's name inside its nested block ("encrypt.format" -> "format"). */
static const char *sub_key(const char *key)
{
	const char *dot = strchr(key, '.');

	return dot ? dot + 1 : key;
}

/* Whether @key is in a nested block (and which: the part before the dot, @blen bytes). */
static bool nested(const char *key, size_t *blen)
{
	const char *dot = strchr(key, '.');

	if (!dot)
		return false;
	*blen = (size_t)(dot - key);
	return true;
}

/* Indices of info->specific in qemu-img's print order (stable for unknown keys). */
static void specific_order(const struct vs_image_info *info, unsigned *idx)
{
	for (unsigned i = 0; i < info->nb_specific; i++)
		idx[i] = i;
	for (unsigned i = 1; i < info->nb_specific; i++) {
		unsigned v = idx[i], j = i;

		while (j > 0 && specific_rank(info->specific[idx[j - 1]].key) >
					specific_rank(info->specific[v].key)) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = v;
	}
}

static void json_snapshot(struct json_writer *w, const struct vs_snapshot_info *sn)
{
	json_obj_begin(w, NULL);
	if (sn->icount != UINT64_MAX)
		json_uint(w, "icount", sn->icount);
	json_uint(w, "vm-clock-nsec", sn->vm_clock_nsec % 1000000000ULL);
	json_str(w, "name", sn->name);
	json_uint(w, "date-sec", sn->date_sec);
	json_uint(w, "date-nsec", sn->date_nsec);
	json_uint(w, "vm-clock-sec", sn->vm_clock_nsec / 1000000000ULL);
	json_str(w, "id", sn->id);
	json_uint(w, "vm-state-size", sn->vm_state_size);
	json_obj_end(w);
}

/* The bitmaps go before the @i-th key in print order (or at the end: @i = nb_specific). */
static bool bitmaps_here(const struct vs_image_info *info, const unsigned *idx, unsigned i)
{
	int rank = specific_rank("bitmaps");

	if (!info->nb_bitmaps)
		return false;
	if (i < info->nb_specific && specific_rank(info->specific[idx[i]].key) < rank)
		return false;
	return i == 0 || specific_rank(info->specific[idx[i - 1]].key) < rank;
}

static void json_bitmaps(struct json_writer *w, const struct vs_image_info *info)
{
	json_arr_begin(w, "bitmaps");
	for (unsigned i = 0; i < info->nb_bitmaps; i++) {
		const struct vs_bitmap_info *bm = &info->bitmaps[i];

		json_obj_begin(w, NULL);
		json_arr_begin(w, "flags");
		if (bm->flags & VS_BITMAP_FLAG_IN_USE)
			json_str(w, NULL, "in-use");
		if (bm->flags & VS_BITMAP_FLAG_AUTO)
			json_str(w, NULL, "auto");
		json_arr_end(w);
		json_str(w, "name", bm->name);
		json_uint(w, "granularity", bm->granularity);
		json_obj_end(w);
	}
	json_arr_end(w);
}

/* The key whose entries are printed in the same nested block as @b's ("encrypt"), if any. */
static bool same_block(const char *a, const char *b)
{
	size_t la, lb;

	return a && nested(a, &la) && nested(b, &lb) && la == lb && !strncmp(a, b, la);
}

static void json_key_slots(struct json_writer *w, const struct vs_image_info *info)
{
	json_arr_begin(w, "slots");
	for (unsigned i = 0; i < info->nb_key_slots; i++) {
		const struct vs_info_key_slot *k = &info->key_slots[i];

		json_obj_begin(w, NULL);
		json_bool(w, "active", k->active);
		if (k->active)
			json_uint(w, "iters", k->iters);
		json_uint(w, "key-offset", k->key_offset);
		if (k->active)
			json_uint(w, "stripes", k->stripes);
		json_obj_end(w);
	}
	json_arr_end(w);
}

static void human_bitmaps(const struct vs_image_info *info)
{
	printf("    bitmaps:\n");
	for (unsigned i = 0; i < info->nb_bitmaps; i++) {
		const struct vs_bitmap_info *bm = &info->bitmaps[i];
		unsigned n = 0;

		printf("        [%u]:\n", i);
		printf("            flags:\n");
		if (bm->flags & VS_BITMAP_FLAG_IN_USE)
			printf("                [%u]: in-use\n", n++);
		if (bm->flags & VS_BITMAP_FLAG_AUTO)
			printf("                [%u]: auto\n", n++);
		printf("            name: %s\n", bm->name);
		printf("            granularity: %" PRIu64 "\n", bm->granularity);
	}
}

/*
 * vmdk's extents, each's members in the order qemu-img prints them (its
 * dictionary's: compressed, virtual-size, filename, cluster-size, format).
 */
static void json_extents(struct json_writer *w, const struct vs_image_info *info)
{
	json_arr_begin(w, "extents");
	for (unsigned i = 0; i < info->nb_extents; i++) {
		const struct vs_info_extent *x = &info->extents[i];

		json_obj_begin(w, NULL);
		if (x->compressed)
			json_bool(w, "compressed", true);
		json_uint(w, "virtual-size", x->virtual_size);
		json_str(w, "filename", x->filename);
		if (x->cluster_size)
			json_uint(w, "cluster-size", x->cluster_size);
		json_str(w, "format", x->format);
		json_obj_end(w);
	}
	json_arr_end(w);
}

static void human_extents(const struct vs_image_info *info)
{
	printf("    extents:\n");
	for (unsigned i = 0; i < info->nb_extents; i++) {
		const struct vs_info_extent *x = &info->extents[i];

		printf("        [%u]:\n", i);
		if (x->compressed)
			printf("            compressed: true\n");
		printf("            virtual size: %" PRIu64 "\n", x->virtual_size);
		printf("            filename: %s\n", x->filename);
		if (x->cluster_size)
			printf("            cluster size: %" PRIu64 "\n", x->cluster_size);
		printf("            format: %s\n", x->format);
	}
}

static void json_specific(struct json_writer *w, const struct vs_image_info *info)
{
	unsigned idx[VS_INFO_MAX_SPECIFIC];

	specific_order(info, idx);
	json_obj_begin(w, "format-specific");
	json_str(w, "type", info->specific_type);
	json_obj_begin(w, "data");
	for (unsigned i = 0; i <= info->nb_specific; i++) {
		const struct vs_info_kv *kv;

		if (bitmaps_here(info, idx, i))
			json_bitmaps(w, info);
		if (i == info->nb_specific)
			break;
		kv = &info->specific[idx[i]];
		const char *prev = i ? info->specific[idx[i - 1]].key : NULL;
		const char *next = i + 1 < info->nb_specific ? info->specific[idx[i + 1]].key :
							       NULL;
		size_t blen;

		if (nested(kv->key, &blen) && !same_block(prev, kv->key)) {
			char block[40];

			snprintf(block, sizeof(block), "%.*s", (int)blen, kv->key);
			json_obj_begin(w, block);
		}
		if (kv->type == VS_KV_STR)
			json_str(w, sub_key(kv->key), kv->str);
		else if (kv->type == VS_KV_INT)
			json_int(w, sub_key(kv->key), kv->i);
		else
			json_bool(w, sub_key(kv->key), kv->b);
		if (info->nb_key_slots && !strcmp(sub_key(kv->key), "cipher-mode"))
			json_key_slots(w, info);
		if (nested(kv->key, &blen) && !same_block(next, kv->key))
			json_obj_end(w);
	}
	if (info->nb_extents)
		json_extents(w, info);
	json_obj_end(w);
	json_obj_end(w);
}

static void info_json(struct json_writer *w, const char *filename, const struct vs_image_info *info,
		      bool dirty_known)
{
	json_obj_begin(w, NULL);
	if (info->nb_snapshots) {
		json_arr_begin(w, "snapshots");
		for (unsigned i = 0; i < info->nb_snapshots; i++)
			json_snapshot(w, &info->snapshots[i]);
		json_arr_end(w);
	}
	if (info->backing_filename && info->backing_format[0])
		json_str(w, "backing-filename-format", info->backing_format);
	json_uint(w, "virtual-size", info->virtual_size);
	json_str(w, "filename", filename);
	if (info->cluster_size)
		json_uint(w, "cluster-size", info->cluster_size);
	json_str(w, "format", info->format);
	if (info->actual_size >= 0)
		json_int(w, "actual-size", info->actual_size);
	if (info->specific_type[0])
		json_specific(w, info);
	if (info->backing_filename && info->full_backing_filename)
		json_str(w, "full-backing-filename", info->full_backing_filename);
	if (info->encrypted)
		json_bool(w, "encrypted", true);
	if (info->backing_filename)
		json_str(w, "backing-filename", info->backing_filename);
	if (dirty_known)
		json_bool(w, "dirty-flag", info->dirty);
	json_obj_end(w);
}

void img_print_snapshots(const struct vs_image_info *info)
{
	printf("Snapshot list:\n");
	printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
	for (unsigned i = 0; i < info->nb_snapshots; i++) {
		const struct vs_snapshot_info *sn = &info->snapshots[i];
		time_t t = (time_t)sn->date_sec;
		uint64_t secs = sn->vm_clock_nsec / 1000000000ULL;
		char date[64] = "", clock[64], size[32], icount[32] = "";
		struct tm tm;

		if (localtime_r(&t, &tm))
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(clock, sizeof(clock), "%02" PRIu64 ":%02u:%02u.%03u", secs / 3600,
			 (unsigned)(secs / 60 % 60), (unsigned)(secs % 60),
			 (unsigned)(sn->vm_clock_nsec / 1000000 % 1000));
		img_size_to_str(sn->vm_state_size, size, sizeof(size));
		if (sn->icount != UINT64_MAX)
			snprintf(icount, sizeof(icount), "%" PRIu64, sn->icount);
		printf("%-9s %-16s %8s%20s%13s%11s\n", sn->id, sn->name, size, date, clock, icount);
	}
}

/* @in: the indentation of "slots:" (4 spaces at the top level, 8 in a nested block). */
static void human_key_slots(const struct vs_image_info *info, int in)
{
	printf("%*sslots:\n", in, "");
	for (unsigned i = 0; i < info->nb_key_slots; i++) {
		const struct vs_info_key_slot *k = &info->key_slots[i];

		printf("%*s[%u]:\n", in + 4, "", i);
		printf("%*sactive: %s\n", in + 8, "", k->active ? "true" : "false");
		if (k->active)
			printf("%*siters: %" PRIu32 "\n", in + 8, "", k->iters);
		printf("%*skey offset: %" PRIu64 "\n", in + 8, "", k->key_offset);
		if (k->active)
			printf("%*sstripes: %" PRIu32 "\n", in + 8, "", k->stripes);
	}
}

static void human_specific(const struct vs_image_info *info)
{
	unsigned idx[VS_INFO_MAX_SPECIFIC];

	specific_order(info, idx);
	printf("Format specific information:\n");
	for (unsigned i = 0; i <= info->nb_specific; i++) {
		const struct vs_info_kv *kv;
		char key[sizeof(info->specific[0].key)];

		if (bitmaps_here(info, idx, i))
			human_bitmaps(info);
		if (i == info->nb_specific)
			break;
		kv = &info->specific[idx[i]];
		const char *prev = i ? info->specific[idx[i - 1]].key : NULL;
		size_t blen;
		int in = 4;

		if (nested(kv->key, &blen)) {
			if (!same_block(prev, kv->key))
				printf("    %.*s:\n", (int)blen, kv->key);
			in = 8;
		}
		snprintf(key, sizeof(key), "%s", sub_key(kv->key));
		for (char *p = key; *p; p++)
			if (*p == '-')
				*p = ' ';
		if (kv->type == VS_KV_STR)
			printf("%*s%s: %s\n", in, "", key, kv->str);
		else if (kv->type == VS_KV_INT)
			printf("%*s%s: %" PRId64 "\n", in, "", key, kv->i);
		else
			printf("%*s%s: %s\n", in, "", key, kv->b ? "true" : "false");
		if (info->nb_key_slots && !strcmp(sub_key(kv->key), "cipher-mode"))
			human_key_slots(info, in);
	}
	if (info->nb_extents)
		human_extents(info);
}

static void info_human(const char *filename, const struct vs_image_info *info)
{
	char buf[32];

	img_size_to_str(info->virtual_size, buf, sizeof(buf));
	printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\n", filename,
	       info->format, buf, info->virtual_size);
	if (info->actual_size >= 0) {
		img_size_to_str((uint64_t)info->actual_size, buf, sizeof(buf));
		printf("disk size: %s\n", buf);
	} else {
		printf("disk size: unavailable\n");
	}
	if (info->encrypted)
		printf("encrypted: yes\n");
	if (info->cluster_size)
		printf("cluster_size: %" PRIu64 "\n", info->cluster_size);
	if (info->dirty)
		printf("cleanly shut down: no\n");
	if (info->backing_filename) {
		printf("backing file: %s", info->backing_filename);
		if (!info->full_backing_filename)
			printf(" (cannot determine actual path)");
		else if (strcmp(info->backing_filename, info->full_backing_filename))
			printf(" (actual path: %s)", info->full_backing_filename);
		printf("\n");
		if (info->backing_format[0])
			printf("backing file format: %s\n", info->backing_format);
	}
	if (info->nb_snapshots)
		img_print_snapshots(info);
	if (info->specific_type[0] && info->nb_specific)
		human_specific(info);
}

struct info_chain {
	struct vs_image_info info[INFO_MAX_CHAIN];
	char *names[INFO_MAX_CHAIN];
	/* qemu-img has no dirty flag for raw over NBD (neither layer reports one). */
	bool dirty_known[INFO_MAX_CHAIN];
	unsigned n;
};

/* @node's protocol node is an NBD client. */
static bool info_over_nbd(const struct vs_node *node)
{
	const struct vs_node *file = vs_node_file(node);

	return file && !strcmp(vs_node_format(file), "nbd");
}

static void info_chain_free(struct info_chain *c)
{
	for (unsigned i = 0; i < c->n; i++) {
		vs_image_info_free(&c->info[i]);
		free(c->names[i]);
	}
	free(c);
}

/*
 * Open the image once (with --backing-chain, its chain too, as the engine
 * resolves it: a pool volume's backing files only through the pools) and
 * fill one entry per image.
 */
static int info_collect_chain(struct info_args *a, struct info_chain *c)
{
	struct img_open_args oa = {
		.filename = a->filename,
		.fmt = a->fmt,
		.force_share = a->force_share,
		.no_backing = !a->chain,
		.no_io = true,
		.key_secret = a->key_secret,
		.data_file = a->data_file,
	};
	struct vs_node *top, *node;
	int ret;

	memcpy(oa.backing_secret, a->backing_secret, sizeof(oa.backing_secret));
	ret = img_open(&top, &oa);
	if (ret < 0)
		return ret;
	for (node = top; node && c->n < INFO_MAX_CHAIN; node = vs_node_backing(node)) {
		const char *name = c->n ? vs_node_filename(node) : a->name;

		/* As qemu-img: an NBD image by the name the NBD layer gives it. */
		if (info_over_nbd(node) && (c->n || a->name == a->filename))
			name = vs_node_filename(vs_node_file(node));

		c->names[c->n] = strdup(name);
		if (!c->names[c->n]) {
			ret = -ENOMEM;
			img_error(ret, "Out of memory");
			break;
		}
		ret = vs_node_get_info(node, &c->info[c->n]);
		if (ret < 0) {
			free(c->names[c->n]);
			img_error(ret, "Could not get information of '%s': %s", name,
				  strerror(-ret));
			break;
		}
		c->dirty_known[c->n] =
			!(info_over_nbd(node) && !strcmp(vs_node_format(node), "raw"));
		c->n++;
	}
	vs_node_close(top);
	return ret;
}

static void info_print(const struct info_args *a, const struct info_chain *c)
{
	struct json_writer w;

	if (a->output == IMG_OUTPUT_HUMAN) {
		for (unsigned i = 0; i < c->n; i++) {
			if (i)
				printf("\n");
			info_human(c->names[i], &c->info[i]);
		}
		return;
	}
	json_init(&w, stdout, true);
	w.qemu_empty = true;
	if (a->chain)
		json_arr_begin(&w, NULL);
	for (unsigned i = 0; i < c->n; i++)
		info_json(&w, c->names[i], &c->info[i], c->dirty_known[i]);
	if (a->chain)
		json_arr_end(&w);
	printf("\n");
}

static void info_co(void *opaque)
{
	struct info_args *a = opaque;
	struct info_chain *c = calloc(1, sizeof(*c));

	if (!c) {
		img_error(-ENOMEM, "Out of memory");
		return;
	}
	if (info_collect_chain(a, c) == 0) {
		info_print(a, c);
		a->rc = 0;
	}
	info_chain_free(c);
}

enum { OPT_OUTPUT = 256, OPT_BACKING_CHAIN, OPT_FORCE_SHARE };

int img_cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
		{ "object", required_argument, NULL, IMG_OPT_OBJECT },
		{ "image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct info_args a = { .output = IMG_OUTPUT_HUMAN, .rc = 1 };
	struct img_kv_list io = { 0 };
	struct img_image_cli ic = { 0 };
	static char shown[8192];
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
		case OPT_BACKING_CHAIN:
			a.chain = true;
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
	img_set_json_errors(a.output == IMG_OUTPUT_JSON);
	if (!ic.image_opts && !strncmp(a.filename, "json:", 5)) {
		/* As qemu-img, "image:" names the file the JSON names. */
		struct img_open_args oa = { .fmt = a.fmt };

		if (img_json_filename(&io, a.filename, &oa) < 0) {
			img_kv_free(&io);
			return 1;
		}
		a.filename = oa.filename;
		a.fmt = oa.fmt;
		a.key_secret = oa.key_secret;
		a.data_file = oa.data_file;
		memcpy(a.backing_secret, oa.backing_secret, sizeof(a.backing_secret));
	}
	if (img_image_name_chain(&ic, &a.filename, &a.fmt, &a.key_secret, a.backing_secret) < 0) {
		img_kv_free(&io);
		return 1;
	}
	a.name = a.filename;
	if (ic.image_opts) {
		img_image_display_name(shown, sizeof(shown), a.filename, a.fmt, a.key_secret);
		a.name = shown;
	}
	if (img_run(info_co, &a) < 0)
		a.rc = 1;
	img_kv_free(&io);
	return a.rc;
}
