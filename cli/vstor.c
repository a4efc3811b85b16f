/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vstor: storage pools and volumes with virsh's verbs, option names and
 * messages, without libvirt. Definitions live in the state directory
 * (backends/pool.h); each command runs inside the vstor engine.
 */
#include "vstor.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "vstor/reactor.h"

static struct vstor_ctx *err_ctx;

/* ---- Output ----------------------------------------------------------------- */

void vstor_msg(struct vstor_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->quiet || c->json)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

static int emit_error(struct vstor_ctx *c, int code, const char *msg)
{
	if (c && c->json) {
		struct json_writer w;
		int e = code < 0 ? -code : EINVAL;

		json_init(&w, stderr, false);
		json_obj_begin(&w, NULL);
		json_obj_begin(&w, "error");
		json_int(&w, "code", e);
		json_str(&w, "errno", vs_errno_name(e));
		json_str(&w, "message", msg);
		json_obj_end(&w);
		json_obj_end(&w);
		fputc('\n', stderr);
	} else {
		fprintf(stderr, "error: %s\n", msg);
	}
	return 1;
}

int vstor_error(struct vstor_ctx *c, int code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return emit_error(c, code, msg);
}

int vstor_error_err(struct vstor_ctx *c, const char *prefix, ...)
{
	char msg[2048];
	va_list ap;
	int n;

	va_start(ap, prefix);
	n = vsnprintf(msg, sizeof(msg), prefix, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, "%s%s", n ? "\n" : "",
			 c->err.msg[0] ? c->err.msg : strerror(c->err.code ? -c->err.code : EIO));
	if (c->json)
		return emit_error(c, c->err.code, c->err.msg[0] ? c->err.msg : msg);
	/* virsh prints the context line and the cause as two "error:" lines. */
	for (char *line = msg, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		fprintf(stderr, "error: %s\n", line);
	}
	return 1;
}

void vstor_pretty_size(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned i = 0;
	double d = (double)v;

	while (i < 6 && d >= 1024.0) {
		d /= 1024.0;
		i++;
	}
	snprintf(buf, len, "%.2f %s", d, units[i]);
}

int vstor_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "kmgtpe";
	uint64_t v = 0, mult = 1, base = 1024;
	const char *p = s, *u;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p && strcasecmp(p, "b") && strcasecmp(p, "byte") && strcasecmp(p, "bytes")) {
		char c = (char)(*p | 0x20);

		u = strchr(units, c);
		if (!u || !c)
			return -EINVAL;
		if (!p[1] || !strcasecmp(p + 1, "ib"))
			base = 1024;
		else if (!strcasecmp(p + 1, "b"))
			base = 1000;
		else
			return -EINVAL;
		for (long i = 0; i <= u - units; i++)
			mult *= base;
	}
	if (v && mult > UINT64_MAX / v)
		return -ERANGE;
	v *= mult;
	if (v > INT64_MAX)
		return -ERANGE;
	*out = v;
	return 0;
}

void vstor_table_add(struct vstor_table *t, const char *const *cells)
{
	char **nc = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*nc));

	if (!nc)
		return;
	t->cells = nc;
	for (unsigned i = 0; i < t->ncols; i++)
		nc[t->nrows * t->ncols + i] = strdup(cells[i] ? cells[i] : "");
	t->nrows++;
}

void vstor_table_print(struct vstor_table *t)
{
	size_t w[8] = { 0 }, total = 0;

	for (unsigned i = 0; i < t->ncols; i++) {
		w[i] = strlen(t->head[i]);
		for (unsigned r = 0; r < t->nrows; r++) {
			const char *cell = t->cells[r * t->ncols + i];
			size_t l = cell ? strlen(cell) : 0;

			if (l > w[i])
				w[i] = l;
		}
		total += w[i] + 3;
	}
	for (unsigned i = 0; i < t->ncols; i++) {
		if (i + 1 < t->ncols)
			printf(" %-*s  ", (int)w[i], t->head[i]);
		else
			printf(" %s\n", t->head[i]);
	}
	for (size_t i = 0; i < total; i++)
		putchar('-');
	putchar('\n');
	for (unsigned r = 0; r < t->nrows; r++) {
		for (unsigned i = 0; i < t->ncols; i++) {
			const char *cell = t->cells[r * t->ncols + i];

			if (i + 1 < t->ncols)
				printf(" %-*s  ", (int)w[i], cell ? cell : "");
			else
				printf(" %s\n", cell ? cell : "");
		}
	}
	putchar('\n');
	for (unsigned i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->nrows = 0;
}

/* ---- Options -------------------------------------------------------------- */

static int opt_index(struct vstor_ctx *c, const char *name)
{
	for (int i = 0; c->cmd->opts && c->cmd->opts[i].name; i++)
		if (!strcmp(c->cmd->opts[i].name, name))
			return i;
	fprintf(stderr, "vstor: internal error: option --%s not in the table of %s\n", name,
		c->cmd->name);
	abort();
}

const char *opt_get(struct vstor_ctx *c, const char *name)
{
	return c->val[opt_index(c, name)];
}

bool opt_bool(struct vstor_ctx *c, const char *name)
{
	return c->val[opt_index(c, name)] != NULL;
}

unsigned opt_multi(struct vstor_ctx *c, const char *name, const char ***vals)
{
	int i = opt_index(c, name);

	*vals = c->multi[i];
	return c->nmulti[i];
}

static void cmd_help(const struct vstor_cmd *cmd)
{
	printf("  NAME\n    %s - %s\n\n  SYNOPSIS\n    %s", cmd->name, cmd->summary, cmd->name);
	for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
		const struct opt_spec *o = &cmd->opts[i];

		if (o->type == OT_BOOL)
			printf(" [--%s]", o->name);
		else if ((o->type == OT_DATA || o->type == OT_DATA_MULTI) && o->required)
			printf(" [--%s] <string>", o->name);
		else if (o->type == OT_DATA || o->type == OT_DATA_MULTI)
			printf(" [[--%s] <string>]", o->name);
		else
			printf(" [--%s <string>]", o->name);
	}
	printf("\n\n  OPTIONS\n");
	for (int i = 0; cmd->opts && cmd->opts[i].name; i++)
		printf("    --%-22s %s\n", cmd->opts[i].name,
		       cmd->opts[i].help ? cmd->opts[i].help : "");
	printf("    --output=json            machine-readable output and errors\n\n");
}

static int parse_opts(struct vstor_ctx *c, int argc, char **argv)
{
	const struct opt_spec *opts = c->cmd->opts;
	bool no_more_opts = false;

	for (int a = 0; a < argc; a++) {
		const char *arg = argv[a];

		if (!no_more_opts && !strcmp(arg, "--")) {
			no_more_opts = true;
			continue;
		}
		if (!no_more_opts && !strncmp(arg, "--", 2)) {
			const char *name = arg + 2, *eq = strchr(name, '=');
			size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
			int i;

			if (nlen == 6 && !strncmp(name, "output", 6)) {
				const char *v = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);

				if (!v || (strcmp(v, "json") && strcmp(v, "human")))
					return vstor_error(c, -EINVAL,
							   "command '%s': --output takes json or "
							   "human",
							   c->cmd->name);
				c->json = !strcmp(v, "json");
				continue;
			}
			if (nlen == 4 && !strncmp(name, "help", 4)) {
				cmd_help(c->cmd);
				c->ret = -1;
				return 0;
			}
			for (i = 0; opts && opts[i].name; i++)
				if (strlen(opts[i].name) == nlen &&
				    !strncmp(opts[i].name, name, nlen))
					break;
			if (!opts || !opts[i].name)
				return vstor_error(c, -EINVAL,
						   "command '%s' doesn't support option --%.*s",
						   c->cmd->name, (int)nlen, name);
			if (opts[i].type == OT_BOOL) {
				if (eq)
					return vstor_error(c, -EINVAL, "option --%s takes no value",
							   opts[i].name);
				c->val[i] = "1";
				continue;
			}
			const char *v = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);

			if (!v)
				return vstor_error(c, -EINVAL, "expected syntax: --%s <string>",
						   opts[i].name);
			if (opts[i].type == OT_MULTI || opts[i].type == OT_DATA_MULTI) {
				if (c->nmulti[i] == OPT_MULTI_MAX)
					return vstor_error(c, -EINVAL, "too many --%s options",
							   opts[i].name);
				c->multi[i][c->nmulti[i]++] = v;
			} else if (c->val[i]) {
				return vstor_error(c, -EINVAL, "option --%s already seen",
						   opts[i].name);
			}
			c->val[i] = v;
			continue;
		}
		/* A positional argument: the next data option not given yet. */
		int i;

		if (!no_more_opts && !strcmp(arg, "-p")) { /* -p: --verbose, where it exists */
			for (i = 0; opts && opts[i].name && strcmp(opts[i].name, "verbose"); i++)
				;
			if (opts && opts[i].name) {
				c->val[i] = "1";
				continue;
			}
		}

		for (i = 0; opts && opts[i].name; i++)
			if ((opts[i].type == OT_DATA || opts[i].type == OT_DATA_MULTI) &&
			    !c->val[i])
				break;
		if (!opts || !opts[i].name)
			return vstor_error(c, -EINVAL, "unexpected data '%s'", arg);
		c->val[i] = arg;
		if (opts[i].type == OT_DATA_MULTI)
			c->multi[i][c->nmulti[i]++] = arg;
	}
	for (int i = 0; opts && opts[i].name; i++) {
		if (opts[i].required && !c->val[i])
			return vstor_error(c, -EINVAL, "command '%s' requires <%s> option",
					   c->cmd->name, opts[i].name);
	}
	return 0;
}

/* ---- Lookups --------------------------------------------------------------- */

struct vs_pool *vstor_pool_get(struct vstor_ctx *c, const char *name)
{
	struct vs_pool *p = NULL;

	vs_error_clear(&c->err);
	if (vs_pool_load(c->st, name, &p, &c->err) < 0) {
		vstor_error_err(c, "failed to get pool '%s'", name);
		return NULL;
	}
	return p;
}

int vstor_vol_get(struct vstor_ctx *c, const char *vol, const char *pool, struct vs_pool **p,
		  char *name)
{
	char **names = NULL;
	size_t n = 0;

	*p = NULL;
	vs_error_clear(&c->err);
	if (pool) {
		struct vs_vol_info info;

		*p = vstor_pool_get(c, pool);
		if (!*p)
			return 1;
		if (vs_pool_vol_info(*p, vol, &info, &c->err) < 0) {
			vs_pool_free(*p);
			*p = NULL;
			return vstor_error_err(c, "failed to get vol '%s'", vol);
		}
		strcpy(name, info.name);
		return 0;
	}
	/* No --pool: a path of a volume of an active pool, as virsh looks up by key/path. */
	if (vs_pool_state_list(c->st, &names, &n, &c->err) < 0)
		return vstor_error_err(c, "failed to list pools");
	for (size_t i = 0; i < n; i++) {
		struct vs_vol_list vols = { 0 };
		struct vs_pool_info pi;
		struct vs_pool *cand = NULL;

		if (vs_pool_load(c->st, names[i], &cand, NULL) < 0 || !cand->active ||
		    vs_pool_refresh(cand, &pi, &vols, NULL) < 0) {
			vs_pool_free(cand);
			vs_vol_list_free(&vols);
			continue;
		}
		for (size_t v = 0; v < vols.n; v++) {
			if (!strcmp(vols.v[v].path, vol)) {
				strcpy(name, vols.v[v].name);
				*p = cand;
				break;
			}
		}
		vs_vol_list_free(&vols);
		if (*p)
			break;
		vs_pool_free(cand);
	}
	vs_pool_names_free(names, n);
	if (*p)
		return 0;
	return vstor_error(
		c, -ENOENT,
		"failed to get vol '%s', specifying --pool might help\n"
		"error: Storage volume not found: no storage vol with matching path '%s'",
		vol, vol);
}

/* ---- main ------------------------------------------------------------------- */

/* The command groups, as virsh groups its commands (help KEYWORD lists one). */
static const struct vstor_group {
	const char *keyword;
	const char *title;
	const struct vstor_cmd *cmds;
} vstor_groups[] = {
	{ "pool", "Storage Pool", vstor_pool_cmds },
	{ "volume", "Storage Volume", vstor_vol_cmds },
	{ "secret", "Secret", vstor_secret_cmds },
	{ "block", "Block Device (of a running vstord or qemu-storage-daemon)", vstor_block_cmds },
#ifdef HAVE_LIBNBD
	{ "backup", "Backup (of a running vstord's disk, over NBD)", vstor_backup_cmds },
#endif
};

static const struct vstor_cmd *find_cmd(const char *name)
{
	for (size_t g = 0; g < sizeof(vstor_groups) / sizeof(vstor_groups[0]); g++)
		for (const struct vstor_cmd *t = vstor_groups[g].cmds; t->name; t++)
			if (!strcmp(t->name, name))
				return t;
	return NULL;
}

static const struct vstor_group *find_group(const char *keyword)
{
	for (size_t g = 0; g < sizeof(vstor_groups) / sizeof(vstor_groups[0]); g++)
		if (!strcmp(vstor_groups[g].keyword, keyword))
			return &vstor_groups[g];
	return NULL;
}

/* The block verbs drive a daemon: they need no state directory. */
static bool is_daemon_cmd(const struct vstor_cmd *cmd)
{
	for (const struct vstor_cmd *t = vstor_block_cmds; t->name; t++)
		if (t == cmd)
			return true;
#ifdef HAVE_LIBNBD
	/* backup needs none; restore only for a vol: target. */
	for (const struct vstor_cmd *t = vstor_backup_cmds; t->name; t++)
		if (t == cmd)
			return true;
#endif
	return false;
}

static void group_help(const struct vstor_group *g)
{
	printf(" %s (help keyword '%s'):\n", g->title, g->keyword);
	for (const struct vstor_cmd *t = g->cmds; t->name; t++)
		printf("    %-20s %s\n", t->name, t->summary);
	printf("\n");
}

static void usage(void)
{
	printf("%s [options]... <command> [args...]\n\n"
	       "  options:\n"
	       "    -c | --connect=URI      the daemon's QMP socket for the block verbs when\n"
	       "                            an absolute path; other URIs are ignored\n"
	       "    -q | --quiet            quiet mode\n"
	       "    -h | --help             this help\n"
	       "    -v | --version          program version\n"
	       "    --state-dir=DIR         state directory (also VSTOR_STATE_DIR)\n\n",
	       VSTOR_PROGNAME);
	for (size_t g = 0; g < sizeof(vstor_groups) / sizeof(vstor_groups[0]); g++)
		group_help(&vstor_groups[g]);
	printf("  (specify help <group> for details about the commands in the group)\n\n"
	       "  (specify help <command> for details about the command)\n\n");
}

static void run_cmd(void *arg)
{
	struct vstor_ctx *c = arg;

	c->ret = c->cmd->run(c);
}

int main(int argc, char **argv)
{
	static struct vstor_ctx ctx;
	struct vstor_ctx *c = &ctx;
	const char *state_override = NULL;
	bool daemon;
	int a, ret;

	err_ctx = c;
	for (a = 1; a < argc && argv[a][0] == '-'; a++) {
		const char *o = argv[a];

		if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
			usage();
			return 0;
		} else if (!strcmp(o, "-v") || !strcmp(o, "--version") || !strcmp(o, "-V")) {
			printf("%s\n", VSTOR_VERSION);
			return 0;
		} else if (!strcmp(o, "-q") || !strcmp(o, "--quiet")) {
			c->quiet = true;
		} else if (!strcmp(o, "-c") || !strcmp(o, "--connect") ||
			   !strcmp(o, "--state-dir")) {
			if (a + 1 >= argc)
				return vstor_error(c, -EINVAL, "option '%s' requires an argument",
						   o);
			if (!strcmp(o, "--state-dir"))
				state_override = argv[a + 1];
			else if (argv[a + 1][0] == '/')
				c->connect = argv[a + 1];
			a++;
		} else if (!strncmp(o, "--connect=", 10)) {
			if (o[10] == '/')
				c->connect = o + 10;
			continue;
		} else if (!strncmp(o, "--state-dir=", 12)) {
			state_override = o + 12;
		} else if (!strcmp(o, "--output=json")) {
			c->json = true;
		} else {
			return vstor_error(c, -EINVAL, "unsupported option '%s'. See --help.", o);
		}
	}
	if (a >= argc) {
		usage();
		return 0;
	}
	if (!strcmp(argv[a], "help")) {
		const struct vstor_cmd *cmd = a + 1 < argc ? find_cmd(argv[a + 1]) : NULL;
		const struct vstor_group *group = a + 1 < argc ? find_group(argv[a + 1]) : NULL;

		if (a + 1 < argc && !cmd && !group)
			return vstor_error(c, -EINVAL,
					   "command or command group '%s' doesn't exist",
					   argv[a + 1]);
		if (cmd)
			cmd_help(cmd);
		else if (group)
			group_help(group);
		else
			usage();
		return 0;
	}
	c->cmd = find_cmd(argv[a]);
	if (!c->cmd)
		return vstor_error(c, -EINVAL, "unknown command: '%s'", argv[a]);
	if (parse_opts(c, argc - a - 1, argv + a + 1))
		return 1;
	if (c->ret == -1)
		return 0; /* --help */
	daemon = is_daemon_cmd(c->cmd);
	if (vs_pool_state_dir(c->state_dir, sizeof(c->state_dir), state_override) < 0) {
		if (!daemon)
			return vstor_error(c, -ENOENT,
					   "no state directory: set VSTOR_STATE_DIR or use "
					   "--state-dir");
		snprintf(c->state_dir, sizeof(c->state_dir), "/run/vstor");
	}
	/*
	 * The block verbs need the pools only for blockcopy --dest-vol: they
	 * run without a usable state directory (c->st NULL).
	 */
	if (vs_pool_state_open(&c->st, c->state_dir, c->cmd->exclusive, &c->err) < 0) {
		if (!daemon)
			return vstor_error_err(c, "cannot use the state directory");
		c->st = NULL;
		vs_error_clear(&c->err);
	} else if (vs_pool_register_resolver(c->state_dir) < 0) {
		vs_pool_state_close(c->st);
		return vstor_error(c, -EIO, "cannot register the vol: resolver");
	}
	ret = vs_run_in_coroutine(run_cmd, c);
	if (c->st)
		vs_pool_state_close(c->st);
	if (ret < 0)
		return vstor_error(c, ret, "cannot start the engine: %s", strerror(-ret));
	fflush(stdout);
	return c->ret;
}

/* The monitor socket: option @opt, the global -c PATH, VSTORD_SOCKET, the default. */
const char *vstor_daemon_socket(struct vstor_ctx *c, const char *opt, char *buf, size_t len)
{
	const char *s = opt_get(c, opt);

	if (s && *s)
		return s;
	if (c->connect && *c->connect)
		return c->connect;
	s = getenv("VSTORD_SOCKET");
	if (s && *s)
		return s;
	snprintf(buf, len, "%s/vstord.sock", c->state_dir);
	return buf;
}
