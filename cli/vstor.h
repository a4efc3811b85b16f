/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor: pool and volume management with virsh's verbs. Shared pieces of
 * the command files: option parsing as virsh does it, output and errors.
 */
#ifndef VSTOR_CLI_VSTOR_H
#define VSTOR_CLI_VSTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "pool.h"

#define VSTOR_PROGNAME "vstor"

enum opt_type {
	OT_BOOL,       /* --flag */
	OT_STR,	       /* --name VALUE or --name=VALUE */
	OT_DATA,       /* like OT_STR, and may be given positionally (in table order) */
	OT_MULTI,      /* like OT_STR, may repeat */
	OT_DATA_MULTI, /* like OT_MULTI, the first one may be given positionally */
};

struct opt_spec {
	const char *name;
	enum opt_type type;
	bool required;
	const char *help;
};

#define OPT_MAX 40
#define OPT_MULTI_MAX VS_POOL_MAX_DEVS

struct vstor_ctx;

struct vstor_cmd {
	const char *name;
	int (*run)(struct vstor_ctx *c);
	const struct opt_spec *opts;
	const char *summary;
	bool exclusive; /* takes the state lock exclusively */
};

struct vstor_ctx {
	const struct vstor_cmd *cmd;
	const char *val[OPT_MAX]; /* by index into cmd->opts; NULL = not given */
	const char *multi[OPT_MAX][OPT_MULTI_MAX];
	unsigned nmulti[OPT_MAX];
	bool json;	     /* --output=json */
	bool quiet;	     /* -q */
	const char *connect; /* -c PATH: the daemon's QMP socket (an absolute path) */
	struct vs_pool_state *st;
	char state_dir[VS_POOL_PATH_MAX];
	struct vs_error err;
	int ret; /* exit code */
};

/* Option value by name (NULL when not given); name must be in the table. */
const char *opt_get(struct vstor_ctx *c, const char *name);
bool opt_bool(struct vstor_ctx *c, const char *name);
unsigned opt_multi(struct vstor_ctx *c, const char *name, const char ***vals);

/*
 * Report an error like virsh ("error: MESSAGE" on stderr), or as the JSON
 * error object with --output=json. Returns 1 (the exit code).
 */
int vstor_error(struct vstor_ctx *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Report c->err (its code and message), prefixed by a virsh-like line. */
int vstor_error_err(struct vstor_ctx *c, const char *prefix, ...)
	__attribute__((format(printf, 2, 3)));
/* printf to stdout unless -q. */
void vstor_msg(struct vstor_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Parse a virsh scaled integer: digits, then an optional unit: b/bytes,
 * k/KiB/M/MiB/... (powers of 1024), KB/MB/... (powers of 1000). Returns 0,
 * -EINVAL or -ERANGE.
 */
int vstor_parse_size(const char *s, uint64_t *out);
/* "12.50 GiB" as virsh prints capacities. */
void vstor_pretty_size(uint64_t v, char *buf, size_t len);

/* Load pool @name (an error message printed on failure: returns NULL). */
struct vs_pool *vstor_pool_get(struct vstor_ctx *c, const char *name);
/*
 * Find volume @vol: a name in pool @pool when given, else a path of a
 * volume of any active pool. On success *@p is the loaded pool (free it)
 * and @name the volume's name. Prints the error and returns 1 otherwise.
 */
int vstor_vol_get(struct vstor_ctx *c, const char *vol, const char *pool, struct vs_pool **p,
		  char *name);

/* Table printing as virsh: " Name   State" header, dashes, rows. */
struct vstor_table {
	unsigned ncols;
	const char *head[8];
	char **cells; /* rows * ncols */
	unsigned nrows;
};
void vstor_table_add(struct vstor_table *t, const char *const *cells);
void vstor_table_print(struct vstor_table *t);

/*
 * --xpath EXPRESSION [--wrap] of the dumpxml verbs (vstor-xpath.c), as virsh
 * has them: put VSTOR_XPATH_OPT and VSTOR_WRAP_OPT in the verb's options, write the XML to
 * vstor_xml_begin()'s stream (stdout without --xpath; NULL after an error
 * message), and return vstor_xml_end()'s exit code, which prints the result.
 */
#define VSTOR_XPATH_OPT                                                               \
	{                                                                             \
		"xpath", OT_STR, false, "xpath expression to filter the XML document" \
	}
#define VSTOR_WRAP_OPT                                                                \
	{                                                                             \
		"wrap", OT_BOOL, false, "wrap xpath results in a common root element" \
	}
struct vstor_xml {
	FILE *mem;
	char *buf;
	size_t len;
};
FILE *vstor_xml_begin(struct vstor_ctx *c, struct vstor_xml *x);
int vstor_xml_end(struct vstor_ctx *c, FILE *f, struct vstor_xml *x);

/*
 * --validate (vstor-validate.c): 0 when file @file holds XML that libvirt's
 * RelaxNG schema @schema ("storagepool", "storagevol") validates; else the
 * error is printed as virsh prints it, after the line @what, and 1 returned.
 */
int vstor_validate_file(struct vstor_ctx *c, const char *file, const char *schema,
			const char *what);

/* Commands (vstor-pool.c, vstor-vol.c, vstor-block.c). */
/*
 * The QMP socket of the daemon the block and backup verbs drive: the
 * command's option @opt, the global -c PATH, $VSTORD_SOCKET, else
 * STATE_DIR/vstord.sock (in @buf).
 */
const char *vstor_daemon_socket(struct vstor_ctx *c, const char *opt, char *buf, size_t len);

extern const struct vstor_cmd vstor_pool_cmds[];
extern const struct vstor_cmd vstor_vol_cmds[];
extern const struct vstor_cmd vstor_block_cmds[];
/* vstor-backup.c: backup and restore (libnbd). */
extern const struct vstor_cmd vstor_backup_cmds[];
extern const struct vstor_cmd vstor_secret_cmds[]; /* vstor-secret.c */

#endif
