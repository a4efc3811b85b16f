/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor-img: shared helpers of the commands (error reporting, size and
 * option parsing, opening images).
 */
#ifndef VSTOR_CLI_IMG_H
#define VSTOR_CLI_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vstor/cache.h"
#include "vstor/error.h"
#include "vstor/node.h"

#define IMG_PROGNAME "vstor-img"

enum img_output { IMG_OUTPUT_HUMAN, IMG_OUTPUT_JSON };

/*
 * Report an error on stderr, as qemu-img does ("vstor-img: MSG"), or as a
 * JSON error object once img_set_json_errors(true) was called. @code is a
 * negative errno (0 when there is none: the JSON code is then EINVAL's).
 */
void img_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * The same, for a message whose last line is a hint: qemu-img prints its
 * hints without a final newline, and so does this (not in JSON mode).
 */
void img_error_hint(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void img_set_json_errors(bool on);
/* Report a usage error and add qemu-img's "Try ... --help" line. Returns 1. */
int img_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report the getopt failure for the current option (optopt/optind). Returns 1. */
int img_getopt_error(char **argv, int c);
/* printf to stdout unless @quiet. */
void img_printf(bool quiet, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Parse a size as qemu-img does: decimal (with an optional fraction when a
 * unit follows) or 0x hex, optional unit b/k/M/G/T/P/E (any case, powers of
 * 1024). Returns 0, -EINVAL (malformed) or -ERANGE (above INT64_MAX).
 */
/*
 * Parse @s as a size named @what ("image size", "offset"), printing
 * qemu-img's message on failure. Returns 0 or -1.
 */
int img_cvtnum(const char *what, const char *s, uint64_t *out);
/* Strictly parse a non-negative decimal integer below or equal to @max. */
int img_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* "1 GiB", "324 KiB", "0.977 KiB", as qemu prints sizes for humans. */
void img_size_to_str(uint64_t v, char *buf, size_t len);

int img_parse_output(const char *s, enum img_output *out);
/* Parse a cache mode, printing qemu-img's message on failure. Returns 0 or -1. */
int img_parse_cache(const char *s, enum vs_cache_mode *out);

/* An -o list: key=value pairs split at ',' (",," is a literal comma). */
struct img_kv_list {
	struct vs_kv *kv;
	size_t n;
	bool help;
};
/* Append the options of @s; returns 0 or -ENOMEM. */
int img_kv_parse(struct img_kv_list *l, const char *s);
void img_kv_free(struct img_kv_list *l);
/* Value of @key or NULL; the last occurrence wins. */
const char *img_kv_get(const struct img_kv_list *l, const char *key);
/* Remove every occurrence of @key. */
void img_kv_remove(struct img_kv_list *l, const char *key);
/* Set @key to @value (copied), replacing earlier occurrences. Returns 0 or -ENOMEM. */
int img_kv_set(struct img_kv_list *l, const char *key, const char *value);

/* Options for img_open(). */
/* The deepest backing level --image-opts names a key-secret for. */
#define IMG_MAX_BACKING_SECRETS 16

struct img_open_args {
	const char *filename;
	const char *fmt;
	bool writable;
	bool force_share;
	bool no_backing;
	bool no_repair;
	bool for_check;	       /* opened by check: see vs_open_opts.for_check */
	bool no_io;	       /* opened by info: see vs_open_opts.no_io */
	const char *data_file; /* data-file.filename= of --image-opts or json: */
	enum vs_cache_mode cache;
	const char *key_secret; /* id of a --object secret: the image's passphrase */
	/* Ids of the backing levels' passphrases (backing.encrypt.key-secret, ...). */
	const char *backing_secret[IMG_MAX_BACKING_SECRETS];
};

/*
 * --object: QEMU's object definitions; only "secret,id=ID,data=..." or
 * "secret,id=ID,file=PATH" (format=raw|base64) are known. The secret is
 * handed to the engine (vs_secret_add). Prints the error; 0 or -errno.
 */
int img_object_add(const char *def);

/*
 * Put the secret @id (NULL: none) into @o's key_secret fields, printing the
 * error if there is no such secret; img_secret_wipe() wipes and frees it.
 */
int img_secret_fill(struct vs_open_opts *o, const char *id);
void img_secret_wipe(struct vs_open_opts *o);
/*
 * The backing levels' secrets @ids (IMG_MAX_BACKING_SECRETS of them, NULL
 * for none) into @o's backing_secrets, printing the error if one is
 * missing; img_secret_wipe() wipes and frees them too.
 */
int img_backing_secrets_fill(struct vs_open_opts *o, const char *const *ids);

/*
 * --image-opts: "driver=FMT,file.filename=PATH[,key-secret=ID]" (and
 * file.driver=file). Fills @a's filename, fmt and key_secret; the strings
 * are appended to @l (which may hold other images' options) and must outlive
 * @a. Prints the error; 0 or -errno.
 */
int img_image_opts(struct img_kv_list *l, const char *s, struct img_open_args *a);

/*
 * --object and --image-opts, the same on every command that opens images:
 * the command's long options map "object" to IMG_OPT_OBJECT and "image-opts"
 * to IMG_OPT_IMAGE_OPTS, these getopt results go to img_image_getopt(), and
 * each image argument (file name and -f format) through img_image_name()
 * before it is opened.
 */
enum { IMG_OPT_OBJECT = 0x1000, IMG_OPT_IMAGE_OPTS };
struct img_image_cli {
	bool image_opts; /* the image arguments are option strings */
};

/* Handle IMG_OPT_OBJECT or IMG_OPT_IMAGE_OPTS. Prints the error; 0 or -1. */
int img_image_getopt(struct img_image_cli *c, int opt, const char *arg);

/*
 * Read an image argument: with --image-opts, *@name is an option string
 * ("driver=qcow2,file.filename=x,encrypt.key-secret=sec0") and is replaced
 * by its file name, *@fmt by its driver (a -f format besides is an error, as
 * in qemu-img) and *@key_secret by its secret id. The strings
 * live until the process exits. Prints the error; 0 or -1.
 */
int img_image_name(const struct img_image_cli *c, const char **name, const char **fmt,
		   const char **key_secret);
/* The same, and the backing layers' secrets (backing.encrypt.key-secret=,
 * backing.backing...; IMG_MAX_BACKING_SECRETS entries, NULL for none). */
int img_image_name_chain(const struct img_image_cli *c, const char **name, const char **fmt,
			 const char **key_secret, const char **backing_secret);

/*
 * The name qemu-img shows for an --image-opts image with a secret: a
 * json:{...} of its options (key-secret, driver, file), in the order QEMU's
 * dictionaries list them. Without a secret, @filename. Into @buf.
 */
void img_image_display_name(char *buf, size_t len, const char *filename, const char *fmt,
			    const char *key_secret);

/*
 * Coroutine context: open an image, printing "Could not open 'F': ..." on
 * failure. Returns 0 or -errno.
 */
int img_open(struct vs_node **out, const struct img_open_args *a);
/*
 * Remember that @filename (this very pointer) came from the option string
 * @opts (errors name it) with the data file @data_file (or NULL), for when
 * it is opened by name.
 */
void img_image_origin_add(const char *filename, const char *opts, const char *data_file);
/* The option string @filename (this very pointer) came from, or @filename. */
const char *img_image_shown(const char *filename);
/* The data file remembered with @filename (this very pointer), or NULL. */
const char *img_image_data_file(const char *filename);
/* img_open() without json: names. */
int img_open_plain(struct vs_node **out, const struct img_open_args *a);
/*
 * A json:{...} file name @name read into @a (filename, fmt, key_secret), its
 * strings appended to @l (they must outlive @a). Prints the error; 0 or -errno.
 */
int img_json_filename(struct img_kv_list *l, const char *name, struct img_open_args *a);

/* Combine @name relative to the directory of @base into @out. */
int img_path_combine(char *out, size_t len, const char *base, const char *name);

/* Run @fn(@arg) in a coroutine of the engine, reporting a setup failure. */
int img_run(void (*fn)(void *), void *arg);

/*
 * qemu-img's -p progress on stdout ("    (12.34/100%)" and a carriage
 * return), printed when the tenth of a percent changes (*@last starts at -1).
 */
void img_progress(bool on, uint64_t done, uint64_t total, int *last);
/* End the progress line. */
void img_progress_end(bool on);

/* Whether the paths @a and @b name the same file (after resolving links). */
bool img_same_file(const char *a, const char *b);

/* Print @info's snapshot table as qemu-img does ("Snapshot list:" and rows). */
void img_print_snapshots(const struct vs_image_info *info);

/* Print the -o help lines of @list (sorted in place by name), as qemu-img does. */
void img_print_opts(struct vs_create_opt_desc *list, size_t n);

/* Print the general help (-h, --help). */
void img_help(void);

/* The commands. Each returns the process exit code. */
int img_cmd_create(int argc, char **argv);
int img_cmd_info(int argc, char **argv);
int img_cmd_check(int argc, char **argv);
int img_cmd_map(int argc, char **argv);
int img_cmd_compare(int argc, char **argv);
int img_cmd_convert(int argc, char **argv);
int img_cmd_bench(int argc, char **argv);
int img_cmd_snapshot(int argc, char **argv);
int img_cmd_bitmap(int argc, char **argv);
int img_cmd_resize(int argc, char **argv);
int img_cmd_rebase(int argc, char **argv);
int img_cmd_commit(int argc, char **argv);
int img_cmd_measure(int argc, char **argv);
int img_cmd_amend(int argc, char **argv);
int img_cmd_compact(int argc, char **argv);
int img_cmd_dd(int argc, char **argv);

#endif
